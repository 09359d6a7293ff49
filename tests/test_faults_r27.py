"""Round 27's fault pass: flush-to-zero outside minilora's parallel regions, the OpenAI-compatible server, the
CLI and the distributed path (each test names what it found)."""
import os
import sys

import numpy as np
import pytest

import minilora
from minilora import blas
from background_runs import run_process
from test_faults import run_cli  # (minilora's main in this process: exit code, output)


@pytest.fixture
def openblas_threaded():
    """OpenBLAS on 2 of its own threads, as a plain script has it (minilora's ops outside a module's forward
    run their products there); the count and this thread's flushing put back afterwards."""
    if blas.get_num_threads() is None:
        pytest.skip("NumPy's BLAS here is not OpenBLAS")
    before, threads = blas.get_num_threads(), minilora.get_num_threads()
    blas.set_num_threads(2)
    minilora.set_num_threads(1)  # (a product run inline: minilora's own helpers follow the register already)
    yield
    minilora.set_flush_denormal(False)
    minilora.set_num_threads(threads)
    blas.set_num_threads(before)


_FLUSH_SCRIPT = """
import numpy as np, torch, minilora
from minilora import blas
blas.set_num_threads(2)
minilora.set_num_threads(1)  # (a product run inline: minilora's own helpers follow the register already)
a = np.full((256, 256), 1e-20, np.float32)
assert minilora.set_flush_denormal(True)
for out in (minilora.tensor(a) @ minilora.tensor(a), minilora.bmm(minilora.tensor(a[None]), minilora.tensor(a[None])),
            minilora.nn.functional.linear(minilora.tensor(a), minilora.tensor(a))):
    assert not out.numpy().any()
assert torch.set_flush_denormal(True)
assert not (torch.tensor(a) @ torch.tensor(a)).any()
torch.set_flush_denormal(False)
assert minilora.set_flush_denormal(False)
assert blas.get_num_threads() == 2  # (OpenBLAS's count back once nothing flushes)
assert np.all((minilora.tensor(a) @ minilora.tensor(a)).numpy() > 0)  # subnormal terms kept again
print("ok")
"""


def test_flush_denormal_flushes_products_on_openblas_threads():
    """OpenBLAS's worker threads keep the register they started with: after set_flush_denormal(True) a 256^3
    product of 1e-20s (each term 1e-40, subnormal) came out half 0 (the caller's rows) and half 2.56e-38 (the
    workers'), where torch's is 0 throughout. In a fresh process: a worker OpenBLAS started while an earlier test
    flushed keeps flushing for the rest of that process (its register is its own), which the last check would see."""
    pytest.importorskip("torch")
    if blas.get_num_threads() is None:
        pytest.skip("NumPy's BLAS here is not OpenBLAS")
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "2"}
    done = run_process([sys.executable, "-c", _FLUSH_SCRIPT], env=env, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


def test_thread_count_set_while_flushing_waits_for_the_end(openblas_threaded):
    """A count set while flushing (parallel.computing's restore at the end of a forward) takes effect after."""
    minilora.set_flush_denormal(True)
    assert blas.get_num_threads() == 1
    blas.set_num_threads(2)
    assert blas.get_num_threads() == 1
    minilora.set_flush_denormal(False)
    assert blas.get_num_threads() == 2


# A LoRA rank whose matrices no 64-bit address space holds (582 TiB for a hidden size of 16): the allocation fails
# at once however the system overcommits memory (a rank of 10**9, 60 GiB, could be granted and then touched)
HUGE_RANK = 10**13


# --- the OpenAI-compatible server: values nested past Python's stack, an adapter too big to allocate -------------
DEPTH = 100_000  # (json's C scanner recurses once per level: Python's limit, ~1000, stops it long before)


try:  # test_serve_r16's served tiny model (two adapters, a chat template): a module-scoped fixture
    from test_serve_r16 import client  # noqa: F401
except pytest.skip.Exception:  # (no pydantic or starlette: the server's tests skip, the rest run)
    @pytest.fixture
    def client():
        pytest.skip("minilora serve needs pydantic and starlette")


@pytest.fixture
def served(client):
    return client


def post(served, path, body):
    return served.post(path, content=body.encode(), headers={"Content-Type": "application/json"})


def test_a_body_nested_past_pythons_stack_is_fastapis_400(served):
    """json.loads' RecursionError escaped as a 500 "the server failed"; FastAPI answers any failure to read a
    body other than a JSON syntax error with 400 "There was an error parsing the body" (vLLM's too)."""
    response = post(served, "/v1/completions", '{"model": "a", "prompt": "Hi", "x": ' + "[" * DEPTH + "]" * DEPTH + "}")
    assert response.status_code == 400, response.text
    assert response.json()["error"] == {"message": "There was an error parsing the body", "type": "Bad Request",
                                        "param": None, "code": 400}


def test_tool_call_arguments_nested_past_pythons_stack_are_a_400_naming_messages(served):
    """An assistant message's tool call sent back with arguments nested 100,000 deep: a 500 before."""
    import json
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "[" * DEPTH + "]" * DEPTH}}
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": None, "tool_calls": [call]},
                {"role": "tool", "tool_call_id": "c1", "content": "ok"}]
    response = post(served, "/v1/chat/completions", json.dumps({"model": "a", "messages": messages, "max_tokens": 1}))
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == "messages" and "arguments are not JSON" in error["message"]


def test_a_models_answer_nested_past_pythons_stack_is_no_tool_call():
    """A "required" tool choice reads the model's answer as a JSON list of calls: nested past the stack (a long
    answer of '['s), json's RecursionError escaped from the reading, where any other non-list is no call."""
    pytest.importorskip("starlette")
    from minilora.serve import app
    assert app._tool_calls("required", "[" * DEPTH) is None
    assert app._calls_so_far("[" + "[" * DEPTH) == [(None, None, False)]


def test_a_recursion_error_in_a_route_is_a_400_not_a_server_fault():
    """Whatever else reads a request's values recursively (a schema, a template's arguments): too deep is the
    request's fault, a 400 in OpenAI's error JSON."""
    pytest.importorskip("starlette")
    import asyncio
    import json
    from minilora.serve import app

    async def nested(request):
        raise RecursionError("maximum recursion depth exceeded")
    response = asyncio.run(app._guarded(nested)(None))
    assert response.status_code == 400
    assert "nests its values too deeply" in json.loads(response.body)["error"]["message"]


def test_an_adapter_whose_rank_cannot_be_allocated_is_a_400_and_changes_nothing(served, tmp_path):
    """adapter_config.json with r = 10**13 (a lora_A of 582 TiB): the MemoryError was a 500 "the server failed"."""
    import json
    from minilora.lora import get_peft_model
    from test_serve import adapter_config, base_model
    get_peft_model(base_model(), adapter_config(3)).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    (tmp_path / "adapter_config.json").write_text(json.dumps({**config, "r": HUGE_RANK}))
    before = served.get("/v1/models").json()
    response = served.post("/v1/load_lora_adapter", json={"lora_name": "huge", "lora_path": str(tmp_path)})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == "lora_path" and "Unable to allocate" in error["message"]
    assert served.get("/v1/models").json()["data"] == before["data"]
    assert served.post("/v1/completions", json={"model": "a", "prompt": "Hi", "max_tokens": 2}).status_code == 200


# --- the CLI: a folder it cannot write in, a port no socket has -----------------------------------------------------
@pytest.mark.parametrize("command", [["train", "--steps", "1"], ["demo", "--steps", "1"], ["experiment", "ranks"]])
def test_an_out_folder_that_cannot_be_made_is_a_usage_error_before_any_work(command, tmp_path, capsys, monkeypatch):
    """--out under a file (or on /proc, read-only, forbidden): train and demo ended in os.makedirs' traceback, and
    the experiment found it only when writing its table, after every run."""
    from minilora import demo, train
    (tmp_path / "a_file").write_text("")

    def no_work(*args, **kwargs):
        raise AssertionError("the command started its work")
    monkeypatch.setattr(demo, "run_rank_experiment", no_work)
    monkeypatch.setattr(demo, "run_demo", no_work)
    monkeypatch.setattr(train, "_load_model", no_work)
    code, text = run_cli([*command, "--out", str(tmp_path / "a_file" / "run")], capsys)
    assert code == 2 and "Traceback" not in text, text
    assert f"--out {tmp_path / 'a_file' / 'run'}: cannot make this folder or write in it (Not a directory)" in text


def test_exercises_build_names_a_folder_it_cannot_use_in_one_line(tmp_path, capsys):
    """A DIR under a file, or one that is there and not empty: tracebacks of FileExistsError before."""
    (tmp_path / "a_file").write_text("")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    for where, words in ((tmp_path / "a_file" / "copy", "its folder"), (tmp_path / "full", "is not empty")):
        code, text = run_cli(["exercises", "build", str(where)], capsys)
        assert code == 2 and "Traceback" not in text and words in text, text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file", "full"]


def test_a_port_past_65535_is_refused_by_its_option():
    """`minilora serve --port 99999` loaded the model, then died in the socket's bind with an OverflowError."""
    from minilora.cli import build_parser
    with pytest.raises(SystemExit):
        build_parser("serve").parse_args(["serve", "--port", "99999"])
    assert build_parser("serve").parse_args(["serve", "--port", "65535"]).port == 65535


def test_an_allocation_the_machine_cannot_hold_is_one_line_not_a_traceback(tmp_path, capsys):
    """`minilora train --r 10000000000000` (or demo's --rank, generate's --adapter of that rank) ended in NumPy's
    _ArrayMemoryError traceback: the machine's state and the user's numbers, as a full disk is, not a bug."""
    code, text = run_cli(["train", "--steps", "1", "--r", str(HUGE_RANK), "--out", str(tmp_path / "run")], capsys)
    assert code == 1 and "Traceback" not in text, text
    assert "minilora train: out of memory: Unable to allocate" in text



@pytest.mark.parametrize("trusted", [False, True])
def test_a_requests_own_chat_template_is_refused_unless_the_server_trusts_them(trusted):
    """A template is a program the server runs on its event loop: '{% for i in range(100000) %}{% for j in
    range(100000) %}{% endfor %}{% endfor %}' sent as a request's chat_template held every client and /health for
    hours. vLLM refuses a request's template (chat_template, or
    chat_template_kwargs' chat_template) without --trust-request-chat-template, in these words; minilora ran it."""
    pytest.importorskip("pydantic")
    pytest.importorskip("starlette")
    from starlette.testclient import TestClient
    from minilora.serve import Engine
    from minilora.serve.app import create_app
    from minilora.tokenizer import ByteTokenizer
    from test_serve import CHAT_TEMPLATE, two_adapters
    tokenizer = ByteTokenizer()
    tokenizer.chat_template = CHAT_TEMPLATE
    app = create_app(Engine(two_adapters(), tokenizer), "tiny", trust_request_chat_template=trusted)
    own = "{{ messages[0]['content'] }}"  # (a quick one: the trusting server renders it, and so did START's)
    chat = {"model": "a", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1}
    with TestClient(app) as served:
        for path, body in (("/v1/chat/completions", {**chat, "chat_template": own}),
                           ("/v1/chat/completions", {**chat, "chat_template_kwargs": {"chat_template": own}}),
                           ("/tokenize", {"model": "a", "messages": chat["messages"], "chat_template": own})):
            response = served.post(path, json=body)
            if trusted:
                assert response.status_code == 200, response.text
                continue
            assert response.status_code == 400, response.text
            assert response.json()["error"]["message"] == (
                "Chat template is passed with request, but --trust-request-chat-template is not set. Refused request "
                "with untrusted chat template.")
        assert served.post("/v1/chat/completions", json=chat).status_code == 200  # (the model's own template)


def test_minilora_serve_takes_vllms_trust_request_chat_template_flag():
    from minilora.cli import build_parser
    parse = build_parser("serve").parse_args
    assert parse(["serve", "--trust-request-chat-template"]).trust_request_chat_template
    assert not parse(["serve"]).trust_request_chat_template
