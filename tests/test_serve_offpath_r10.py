"""`minilora serve` as a vLLM / OpenAI-client user drives it, round 10: the requests of vLLM's OpenAI-compatible
server and LoRA pages and of OpenAI's API reference, sent by the official `openai` client and curl-style
(Starlette's TestClient) to the app in process, over a tiny Llama saved to a folder with two PEFT adapters; the
served greedy text is compared with transformers + PEFT's generate() on the same folders.

| what a user sends                              | before                             | now (vLLM's)                           |
|------------------------------------------------|------------------------------------|----------------------------------------|
| POST /v1/load_lora_adapter (unload), success   | JSON {"status": "ok", ...}         | the text its docs show curl printing:  |
|                                                |                                    |  Success: LoRA adapter 'x' added ...   |
| load_lora_adapter of a folder with no adapter  | 400 BadRequestError                | 404 NotFoundError ("No adapter found") |
| unload_lora_adapter without a lora_name        | 404 (adapter None is not loaded)   | 400                                    |
| "stream": null                                 | 400 "stream must be true or false" | not streamed (Optional[bool] = False)  |
| chat, the tokenizer without a chat template    | 404, even with a chat_template in  | the request's template; none: 400      |
|                                                |  the request                       |                                        |
| a chat template raising TypeError              | 500, plain-text body               | 400 (vLLM's TypeError/RuntimeError)    |
| any other server fault in a route              | 500 "Internal Server Error" text   | 500 with OpenAI's error JSON           |
| prompt + max_tokens past the context           | "this model's ... but the prompt   | OpenAI's sentence, which clients parse:|
|                                                |  (6) plus max_tokens (100) is 106" |  "... However, you requested 106 tokens|
|                                                |                                    |  (6 in the messages, 100 in the ...)"  |
|                                                |                                    |  (round 13: vLLM 0.24's sentence)      |
| an X-Request-Id header (a gateway's trace id)  | ignored: a fresh cmpl-<uuid>       | the answer's id is cmpl-<that id>, and |
|  or vLLM's request_id extra                    |  (request_id: 400 unknown)         |  the header comes back as sent         |
| --lora-modules / load_lora_adapter of a name   | 400 "letters, digits, '_' or '-'   | served under that name (the model keys |
|  with a dot or a slash ("org/sql-lora.v2")     |  (no dots)"                        |  it under another, no request sees it) |
| a non-streaming client gone mid-generation     | unseen while tokens kept coming    | seen within 0.25 s: the slot is freed  |
|  (its timeout: OpenAI's client then retries)   |  (checked only after a 0.25 s lull)|  (vLLM aborts it on the disconnect)    |
"""
import asyncio
import json
import re
import shutil
import time

import pytest

openai = pytest.importorskip("openai")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")
pytest.importorskip("starlette")
from starlette.testclient import TestClient  # noqa: E402

from minilora.lora import get_peft_model  # noqa: E402
from minilora.serve import Engine  # noqa: E402
from minilora.serve.app import create_app  # noqa: E402
from minilora.serve.cli import load_engine  # noqa: E402
from minilora.serve.engine import wait_until  # noqa: E402
from minilora.tokenizer import ByteTokenizer  # noqa: E402
from test_serve import CHAT_TEMPLATE, adapter_config, base_model, served_text  # noqa: E402

EOS, PAST_THE_TOKENIZER = 257, 259  # the ByteTokenizer's <eos>; the tiny model's last id has no text
MESSAGES = [{"role": "user", "content": "Where does Dan live?"}]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """A float32 tiny Llama saved as `vllm serve` takes a model (config, safetensors, tokenizer with its chat
    template), and two PEFT adapter folders of different ranks."""
    root = tmp_path_factory.mktemp("served")
    base_model("float32").save_pretrained(str(root / "tiny"))
    tok = ByteTokenizer()
    tok.chat_template = CHAT_TEMPLATE
    tok.save_pretrained(str(root / "tiny"))
    get_peft_model(base_model("float32"), adapter_config(4)).save_pretrained(str(root / "a"))
    get_peft_model(base_model("float32", seed=1), adapter_config(2)).save_pretrained(str(root / "b"))
    return root


@pytest.fixture(scope="module")
def served(folders):
    """`minilora serve tiny --lora-modules a=... b=...` in process: (TestClient, engine)."""
    engine, name = load_engine(str(folders / "tiny"), [("a", str(folders / "a")), ("b", str(folders / "b"))],
                               max_batch_size=4, max_queue=8)
    # (requests send chat templates of their own: vLLM's --trust-request-chat-template)
    with TestClient(create_app(engine, name, trust_request_chat_template=True)) as client:
        yield client, engine


@pytest.fixture(scope="module")
def reference(folders):
    """transformers' LlamaForCausalLM from the same folder with PEFT's adapters: greedy ids after a prompt."""
    model = transformers.LlamaForCausalLM.from_pretrained(str(folders / "tiny"), dtype=torch.float32).eval()
    model = peft.PeftModel.from_pretrained(model, str(folders / "a"), adapter_name="a")
    model.load_adapter(str(folders / "b"), adapter_name="b")

    def greedy(adapter, ids, n):
        settings = dict(max_new_tokens=n, do_sample=False, eos_token_id=EOS, pad_token_id=0,
                        suppress_tokens=[PAST_THE_TOKENIZER])  # (the server never picks an id with no text)
        with torch.no_grad():
            if adapter is None:
                with model.disable_adapter():
                    out = model.generate(input_ids=torch.tensor([ids]), **settings)
            else:
                model.set_adapter(adapter)
                out = model.generate(input_ids=torch.tensor([ids]), **settings)
        return out[0, len(ids):].tolist()

    def logprobs(adapter, ids, generated):
        """log_softmax (float64, of the float32 logits) of each generated token, given the ones before it."""
        model.set_adapter(adapter)
        with torch.no_grad():
            rows = torch.log_softmax(model(torch.tensor([ids + generated])).logits[0].double(), -1)
        return [rows[len(ids) - 1 + i, token].item() for i, token in enumerate(generated)]
    greedy.logprobs = logprobs
    return greedy


def openai_client(client):
    return openai.OpenAI(base_url="http://testserver/v1", api_key="EMPTY", max_retries=0, http_client=client)


# ---------------------------------------------------------------------------------------------------
# a session: the OpenAI client's calls and curl's, then vLLM's dynamic LoRA routes as its docs show them
# ---------------------------------------------------------------------------------------------------
def test_a_vllm_users_session_gets_generates_text_and_vllms_documented_lora_route_bodies(served, reference, folders):
    client, engine = served
    api, tok = openai_client(client), engine.tokenizer
    models = api.models.list().data
    assert [(m.id, m.parent) for m in models] == [("tiny", None), ("a", "tiny"), ("b", "tiny")]
    prompt = "San Francisco is a"
    ids = tok.encode(prompt)
    greedy = {}
    for model, adapter in [("tiny", None), ("a", "a"), ("b", "b")]:  # model=<adapter name>, as vLLM's docs
        got = api.completions.create(model=model, prompt=prompt, max_tokens=7, temperature=0)
        expected = reference(adapter, ids, 7)
        greedy[model] = expected
        assert got.model == model and got.object == "text_completion"
        assert got.choices[0].text == served_text(tok, expected)  # transformers + PEFT's generate()
        assert got.choices[0].finish_reason == ("stop" if EOS in expected else "length")
        assert (got.usage.prompt_tokens, got.usage.completion_tokens) == (len(ids), len(expected))
    # a prompt as a list of strings, token ids, or a list of token-id lists: one choice each, in order
    several = api.completions.create(model="a", prompt=[prompt, "x"], max_tokens=7, temperature=0)
    by_ids = api.completions.create(model="a", prompt=[ids, tok.encode("x")], max_tokens=7, temperature=0)
    one = api.completions.create(model="a", prompt=ids, max_tokens=7, temperature=0)
    assert [c.index for c in several.choices] == [0, 1]
    assert [c.text for c in several.choices] == [c.text for c in by_ids.choices]
    assert one.choices[0].text == several.choices[0].text == served_text(tok, greedy["a"])
    # logprobs: the model's log_softmax, as transformers computes it from the same float32 weights (the
    # server decodes with a KV cache, transformers in one forward: logits ~10-30 differ by a few float32 ulps,
    # 2e-6 each; 5e-6 was the largest difference seen)
    scored = api.completions.create(model="b", prompt=prompt, max_tokens=7, temperature=0, logprobs=2)
    assert scored.choices[0].logprobs.token_logprobs == pytest.approx(reference.logprobs("b", ids, greedy["b"]),
                                                                      abs=5e-5)
    assert all(len(top) in (2, 3) for top in scored.choices[0].logprobs.top_logprobs)  # 2 likeliest + the chosen
    # stop (a string or a list; the stop text is not in the output)
    text = served_text(tok, greedy["tiny"])
    stop = text[3:5]
    stopped = api.completions.create(model="tiny", prompt=prompt, max_tokens=7, temperature=0, stop=[stop, "zzz"])
    assert stopped.choices[0].text == text[:text.index(stop)] and stopped.choices[0].finish_reason == "stop"
    # stream: SSE chunks that join to the text, usage in the last chunk, then [DONE]
    chunks = list(api.completions.create(model="b", prompt=prompt, max_tokens=7, temperature=0, stream=True,
                                         stream_options={"include_usage": True}))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == served_text(tok, greedy["b"])
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == len(greedy["b"])
    # seed: the same sampled text again, streamed or not; n choices sample with seed + i
    sampled = dict(model="a", prompt=prompt, max_tokens=6, temperature=0.9, top_p=0.9, seed=3, n=2,
                   extra_body={"top_k": 40, "min_p": 0.01, "repetition_penalty": 1.1})
    first, again = (api.completions.create(**sampled) for _ in range(2))
    streamed = ["", ""]
    for chunk in api.completions.create(**sampled, stream=True):
        for choice in chunk.choices:
            streamed[choice.index] += choice.text
    assert [c.text for c in first.choices] == [c.text for c in again.choices] == streamed
    # chat: the tokenizer's template, then the same greedy text as generate()
    chat = api.chat.completions.create(model="a", messages=MESSAGES, max_tokens=5, temperature=0)
    chat_ids = tok.apply_chat_template(MESSAGES, add_generation_prompt=True, return_dict=False)
    assert chat.choices[0].message.content == served_text(tok, reference("a", list(chat_ids), 5))
    # errors as OpenAI's client raises them: 400 past the context, 404 an unknown model
    with pytest.raises(openai.BadRequestError, match="maximum context length is 64"):
        api.completions.create(model="a", prompt=prompt, max_tokens=60)
    with pytest.raises(openai.NotFoundError):
        api.completions.create(model="sql-lora", prompt=prompt, max_tokens=2)
    # vLLM's dynamic LoRA routes, as its docs' curl: the body is the text they show
    shutil.copytree(folders / "b", folders / "sql_adapter", dirs_exist_ok=True)
    loaded = client.post("/v1/load_lora_adapter", json={"lora_name": "sql_adapter",
                                                        "lora_path": str(folders / "sql_adapter")})
    assert (loaded.status_code, loaded.text) == (200, "Success: LoRA adapter 'sql_adapter' added successfully.")
    as_sql = api.completions.create(model="sql_adapter", prompt=prompt, max_tokens=7, temperature=0)
    assert as_sql.choices[0].text == served_text(tok, greedy["b"])
    unloaded = client.post("/v1/unload_lora_adapter", json={"lora_name": "sql_adapter"})
    assert (unloaded.status_code, unloaded.text) == (200, "Success: LoRA adapter 'sql_adapter' removed successfully.")
    assert [m.id for m in api.models.list().data] == ["tiny", "a", "b"]


# ---------------------------------------------------------------------------------------------------
# the divergences, one test each
# ---------------------------------------------------------------------------------------------------
def test_an_adapter_folder_with_no_adapter_is_a_404_a_corrupt_one_a_400_and_the_others_keep_serving(served, folders):
    client, _ = served
    before = {m: client.post("/v1/completions", json={"model": m, "prompt": "hi", "max_tokens": 6,
                                                      "temperature": 0}).json()["choices"][0]["text"]
              for m in ("tiny", "a", "b")}
    missing = client.post("/v1/load_lora_adapter", json={"lora_name": "c", "lora_path": str(folders / "nowhere")})
    error = missing.json()["error"]  # vLLM: a FileNotFoundError -> "No adapter found for ..." -> NotFoundError
    assert missing.status_code == 404 and error["type"] == "NotFoundError" and "No adapter found" in error["message"]
    corrupt = folders / "corrupt"
    corrupt.mkdir(exist_ok=True)
    shutil.copy(folders / "a" / "adapter_config.json", corrupt)
    (corrupt / "adapter_model.safetensors").write_bytes(b"not a safetensors file")
    broken = client.post("/v1/load_lora_adapter", json={"lora_name": "c", "lora_path": str(corrupt)})
    assert broken.status_code == 400 and broken.json()["error"]["type"] == "BadRequestError"
    assert [m["id"] for m in client.get("/v1/models").json()["data"]] == ["tiny", "a", "b"]
    after = {m: client.post("/v1/completions", json={"model": m, "prompt": "hi", "max_tokens": 6,
                                                     "temperature": 0}).json()["choices"][0]["text"]
             for m in ("tiny", "a", "b")}
    assert after == before


@pytest.mark.parametrize("body", [{}, {"lora_name": ""}, {"lora_name": 5}])
def test_unloading_without_a_name_is_a_bad_request(served, body):
    client, _ = served
    r = client.post("/v1/unload_lora_adapter", json=body)
    # ("": vLLM's own check names lora_name; left out or 5: pydantic's refusal, param its loc, r17)
    assert r.status_code == 400 and r.json()["error"]["param"] in ("lora_name", "body.lora_name")
    assert client.post("/v1/unload_lora_adapter", json={"lora_name": "never"}).status_code == 404


@pytest.mark.parametrize("route, body", [("/v1/completions", {"prompt": "hi"}),
                                         ("/v1/chat/completions", {"messages": MESSAGES})])
def test_stream_null_is_an_answer_not_a_stream(served, route, body):
    """JSON clients send every field, null where unset: vLLM's ``stream: Optional[bool] = False``."""
    client, _ = served
    r = client.post(route, json={"model": "a", "max_tokens": 3, "stream": None, "stream_options": None, **body})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/json") and r.json()["usage"]["completion_tokens"] <= 3


def test_chat_with_no_template_in_the_tokenizer_takes_the_requests_or_is_a_bad_request():
    engine = Engine(base_model(), ByteTokenizer(), max_batch_size=2, max_queue=2)  # its tokenizer has no template
    body = {"model": "tiny", "messages": MESSAGES, "max_tokens": 3, "temperature": 0}
    # (requests send chat templates of their own: vLLM's --trust-request-chat-template)
    with TestClient(create_app(engine, "tiny", trust_request_chat_template=True)) as client:
        own = client.post("/v1/chat/completions", json={**body, "chat_template": CHAT_TEMPLATE})
        neither = client.post("/v1/chat/completions", json=body)
    assert own.status_code == 200, own.text
    ids = ByteTokenizer().apply_chat_template(MESSAGES, chat_template=CHAT_TEMPLATE, add_generation_prompt=True,
                                              return_dict=False)
    assert own.json()["usage"]["prompt_tokens"] == len(ids)
    assert neither.status_code == 400 and neither.json()["error"]["type"] == "BadRequestError"  # vLLM's ValueError


def test_a_chat_template_raising_a_type_error_is_a_bad_request(served):
    client, _ = served
    body = {"model": "tiny", "messages": MESSAGES, "max_tokens": 3, "chat_template": "{{ 'a' + 1 }}"}
    r = client.post("/v1/chat/completions", json=body)  # str + int: a TypeError, which vLLM answers with 400
    assert r.status_code == 400 and r.json()["error"]["param"] is None  # (vLLM's ValueError/TypeError answer)
    assert "can only concatenate" in r.json()["error"]["message"]


def test_a_fault_of_the_server_is_a_500_in_openais_error_json_not_plain_text(served, monkeypatch):
    client, engine = served

    def broken(*args, **kwargs):
        raise RuntimeError("the tokenizer broke")
    monkeypatch.setattr(engine.tokenizer, "encode", broken)
    r = client.post("/v1/completions", json={"model": "tiny", "prompt": "hi", "max_tokens": 3})
    assert r.status_code == 500 and r.headers["content-type"] == "application/json"
    error = r.json()["error"]
    assert error["code"] == 500 and "the tokenizer broke" in error["message"]  # (its type: test_serve_offpath_r13)
    assert client.get("/health").status_code == 200  # a route's fault, not the engine's
    assert client.get("/v1/models").json()["data"][0]["id"] == "tiny"
    monkeypatch.undo()
    assert client.post("/v1/completions", json={"model": "tiny", "prompt": "hi", "max_tokens": 3}).status_code == 200


def test_a_request_past_the_context_is_worded_as_openai_and_vllm_word_it(served):
    """Clients parse this sentence to retry with a smaller max_tokens (the limit, the output tokens asked for, the
    prompt's): vLLM 0.24's words (round 13 moved them on from OpenAI's older sentence: test_serve_offpath_r13.py)."""
    client, engine = served
    ids = engine.tokenizer.encode("hello")
    r = client.post("/v1/completions", json={"model": "a", "prompt": ids, "max_tokens": 60})
    assert r.status_code == 400 and r.json()["error"]["param"] == "input_tokens"
    overflow = re.search(r"This model's maximum context length is (\d+) tokens\. However, you requested (\d+) output "
                         r"tokens and your prompt contains (\d+) input tokens, for a total of (\d+) tokens\.",
                         r.json()["error"]["message"])
    assert overflow and [int(n) for n in overflow.groups()] == [64, 60, len(ids), len(ids) + 60]
    r = client.post("/v1/chat/completions", json={"model": "a", "messages": [{"role": "user", "content": "x" * 80}]})
    assert r.status_code == 400 and r.json()["error"]["param"] == "input_tokens"
    assert re.match(r"This model's maximum context length is 64 tokens\. However, you requested 0 output tokens and "
                    r"your prompt contains at least 65 input tokens", r.json()["error"]["message"])


def test_a_gateways_x_request_id_names_the_answer_as_vllm_names_it(served):
    """vLLM takes the request id from the client's X-Request-Id header (else its request_id extra): the answer
    is cmpl-ID / chatcmpl-ID, every chunk of a stream too, and the header comes back as sent."""
    client, _ = served
    traced = {"x-request-id": "trace-42"}
    r = client.post("/v1/completions", json={"model": "a", "prompt": "hi", "max_tokens": 2}, headers=traced)
    assert (r.json()["id"], r.headers["x-request-id"]) == ("cmpl-trace-42", "trace-42")
    r = client.post("/v1/chat/completions", json={"model": "a", "messages": MESSAGES, "max_tokens": 2}, headers=traced)
    assert (r.json()["id"], r.headers["x-request-id"]) == ("chatcmpl-trace-42", "trace-42")
    with client.stream("POST", "/v1/completions", headers=traced,
                       json={"model": "a", "prompt": "hi", "max_tokens": 2, "stream": True}) as response:
        ids = {json.loads(line[6:])["id"] for line in response.iter_lines()
               if line.startswith("data: ") and line != "data: [DONE]"}
    assert ids == {"cmpl-trace-42"}
    r = client.post("/v1/completions", json={"model": "a", "prompt": "hi", "max_tokens": 2, "request_id": "mine"})
    assert (r.json()["id"], r.headers["x-request-id"]) == ("cmpl-mine", "mine")
    r = client.post("/v1/completions", json={"model": "a", "prompt": "hi", "max_tokens": 2})
    assert r.json()["id"].startswith("cmpl-") and r.headers["x-request-id"] == r.json()["id"]  # a fresh one


def test_an_adapter_is_served_under_any_name_vllm_takes(served, folders, reference):
    """vLLM serves a LoRA under any name (`--lora-modules org/sql-lora.v2=DIR`); a PEFT module key cannot hold a
    dot, so the model keeps it under another key, which no request sees."""
    client, engine = served
    names = ["org/sql-lora.v2", "org_sql-lora_v2_1"]  # the second: the key the model keeps the first under
    for name in names:
        r = client.post("/v1/load_lora_adapter", json={"lora_name": name, "lora_path": str(folders / "b")})
        assert r.status_code == 200, r.text
    try:
        assert [m["id"] for m in client.get("/v1/models").json()["data"]] == ["tiny", "a", "b", *names]
        assert len(set(engine.model.peft_config)) == 4 and "org_sql-lora_v2_1" in engine.model.peft_config
        assert client.get("/v1/models/org/sql-lora.v2").json()["parent"] == "tiny"
        expected = served_text(engine.tokenizer, reference("b", engine.tokenizer.encode("hi"), 5))
        for name in names:
            r = client.post("/v1/completions", json={"model": name, "prompt": "hi", "max_tokens": 5, "temperature": 0})
            assert (r.json()["model"], r.json()["choices"][0]["text"]) == (name, expected)
    finally:
        for name in names:
            assert client.post("/v1/unload_lora_adapter", json={"lora_name": name}).status_code == 200
    assert [m["id"] for m in client.get("/v1/models").json()["data"]] == ["tiny", "a", "b"]


def test_a_non_streaming_client_gone_mid_generation_frees_its_slot(served):
    """A client that times out while its completion decodes (tokens coming every step): the request stops within
    the poll interval, as vLLM aborts a request whose client disconnected -- not at its max_tokens."""
    client, engine = served
    body = json.dumps({"model": "a", "prompt": "go", "max_tokens": 60, "temperature": 0}).encode()
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": "/v1/completions", "raw_path": b"/v1/completions", "query_string": b"", "root_path": "",
             "headers": [(b"content-type", b"application/json")], "client": ("test", 1), "server": ("test", 80)}
    sent, asked = [], []

    async def receive():  # the body, then (0.3 s later) the client is gone
        if not asked:
            asked.append(time.monotonic())
            return {"type": "http.request", "body": body, "more_body": False}
        if time.monotonic() < asked[0] + 0.3:  # (a cancelled wait: Starlette's is_disconnected asks without one)
            await asyncio.sleep(asked[0] + 0.3 - time.monotonic())
        return {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)
    step, generated = engine._step, engine.tokens_generated
    engine._step = lambda: (time.sleep(0.02), step())  # 60 tokens: over a second
    try:
        asyncio.run(client.app(scope, receive, send))
    finally:
        engine._step = step
    assert sent[0]["status"] == 499  # what the gone client would have been answered
    assert wait_until(lambda: not engine.rows, timeout=5)  # the slot, at the next step
    assert engine.tokens_generated - generated < 40
