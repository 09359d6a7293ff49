"""`minilora serve` driven by the official `openai` client, as its docs write the calls (sync and async),
with vLLM's documented requests. Every field the client parses is checked against values computed from
the model directly: log_softmax of its logits, greedy tokens with the penalties applied by hand, token
counts. One real uvicorn server on loopback for the module (the client speaks HTTP to it); the --api-key
and served-name tests run an app in process, through the ASGI transport of the client's HTTP library."""
import asyncio
import threading
import time

import numpy as np
import pytest

openai = pytest.importorskip("openai")
pytest.importorskip("uvicorn")

import minilora as ml  # noqa: E402
from minilora.lora import get_peft_model  # noqa: E402
from minilora.serve import Engine, Request  # noqa: E402
from minilora.serve.engine import wait_until  # noqa: E402
from minilora.tokenizer import ByteTokenizer  # noqa: E402
from test_serve import CHAT_TEMPLATE, adapter_config, base_model, served_text, two_adapters  # noqa: E402

HTTP = getattr(openai._base_client, "httpx2", None) or openai._base_client.httpx  # the client's HTTP library
TEXT_VOCAB = 259  # the ByteTokenizer's ids; the tiny model's vocabulary has 260 (one id is no text)
MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Where does Dan live?"}]


@pytest.fixture(scope="module")
def server():
    from minilora.serve.cli import make_server, serve_in_thread
    tok = ByteTokenizer()
    tok.chat_template = CHAT_TEMPLATE
    engine = Engine(two_adapters(), tok, max_batch_size=2, max_queue=2)
    engine.eos = set()  # random weights: run to max_tokens, so lengths are known
    uvicorn_server = make_server(engine, "tiny", "127.0.0.1", 0, log_level="warning")
    thread = serve_in_thread(uvicorn_server, timeout=20)
    port = uvicorn_server.servers[0].sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}/v1", engine, tok
    uvicorn_server.should_exit = True
    thread.join(10)


@pytest.fixture(scope="module")
def reference():
    """The served model's twin (built from the same seed): the test's own forward passes."""
    return two_adapters()


def client_for(server, **kwargs):
    """An OpenAI client of the test server; it gives up after 60 s (the client's default is 600 s: a server
    that never answered would hold the run for ten minutes before anything failed)."""
    return openai.OpenAI(base_url=server[0], api_key="not-needed", **{"max_retries": 0, "timeout": 60, **kwargs})


def log_softmax(x):
    x = x - x.max()
    return x - np.log(np.exp(x).sum())


def greedy(model, ids, adapter, n, logit_bias=None, presence_penalty=0.0, frequency_penalty=0.0):
    """(tokens, log_softmax rows over the model's whole vocabulary): greedy decoding done by hand, one full
    forward per token; OpenAI's penalties applied as its docs define them, to text ids only."""
    ids, out, rows = list(ids), [], []
    for _ in range(n):
        with ml.no_grad():
            logits = model(np.array([ids]), adapter_names=[adapter or "__base__"]).logits.numpy()[0, -1]
        rows.append(log_softmax(logits.astype(np.float64)))
        scores = logits[:TEXT_VOCAB].astype(np.float64)
        for token, bias in (logit_bias or {}).items():
            scores[int(token)] += bias
        counts = np.bincount(out, minlength=TEXT_VOCAB)[:TEXT_VOCAB]
        scores -= frequency_penalty * counts + presence_penalty * (counts > 0)
        out.append(int(np.argmax(scores)))
        ids.append(out[-1])
    return out, rows


def name_and_bytes(tok, token):
    """A token as OpenAI's logprobs name it, and its bytes: a byte piece of a character is bytes:\\xNN,
    an id past the tokenizer (the model's vocabulary is larger) token_id:N with no bytes."""
    if token >= TEXT_VOCAB:
        return f"token_id:{token}", None
    if token >= 256:
        name = tok.decode([token], skip_special_tokens=False)
        return name, list(name.encode())
    return (chr(token) if token < 128 else f"bytes:\\x{token:02x}"), [token]


def chat_ids(tok, messages=MESSAGES):
    return tok.apply_chat_template(messages, add_generation_prompt=True, return_dict=False)


def assert_error_object(exc, status, param, kind=None):
    """OpenAI's error object, as the client parses it (the body is the "error" member), with vLLM's
    values: the type names the error class (a body its pydantic model refuses: the HTTP phrase, "Bad Request"),
    the code is the status (the client reads it as a string)."""
    kind = kind or {400: "BadRequestError", 404: "NotFoundError", 429: "RateLimitError"}[status]
    assert exc.status_code == status and exc.body["code"] == status and exc.code == str(status)
    assert set(exc.body) == {"message", "type", "param", "code"} and exc.body["message"] in str(exc)
    assert exc.param == param and exc.type == kind


# ---------------------------------------------------------------------------------------------------
# chat.completions
# ---------------------------------------------------------------------------------------------------
def test_chat_fields_and_logprobs_are_the_models_log_softmax(server, reference):
    _, engine, tok = server
    before = time.time()
    completion = client_for(server).chat.completions.create(
        model="a", messages=MESSAGES, temperature=0, max_completion_tokens=5, logprobs=True, top_logprobs=3,
        user="user-1", seed=7)
    tokens, rows = greedy(reference, chat_ids(tok), "a", 5)
    assert completion.id.startswith("chatcmpl-") and completion.object == "chat.completion"
    assert completion._request_id == completion.id  # the x-request-id header
    assert int(before) <= completion.created <= time.time() and isinstance(completion.created, int)
    assert completion.model == "a" and completion.system_fingerprint.startswith("fp_")
    choice, = completion.choices
    assert choice.index == 0 and choice.finish_reason == "length"
    assert choice.message.role == "assistant" and choice.message.content == served_text(tok, tokens)
    assert completion.usage.prompt_tokens == len(chat_ids(tok)) and completion.usage.completion_tokens == 5
    assert completion.usage.total_tokens == len(chat_ids(tok)) + 5
    for entry, token, row in zip(choice.logprobs.content, tokens, rows, strict=True):
        assert entry.logprob == pytest.approx(row[token], abs=1e-9)  # over all 260 ids, as vLLM
        assert (entry.token, entry.bytes) == name_and_bytes(tok, token)
        top = np.argsort(-row, kind="stable")[:3]
        assert [t.logprob for t in entry.top_logprobs] == pytest.approx(row[top].tolist(), abs=1e-9)
        assert [(t.token, t.bytes) for t in entry.top_logprobs] == [name_and_bytes(tok, int(t)) for t in top]
    again = client_for(server).chat.completions.create(model="a", messages=MESSAGES, temperature=0, max_tokens=5)
    assert again.choices[0].message.content == choice.message.content  # max_tokens: the older name


def test_chat_stream_with_usage_and_n_joins_to_the_seeded_answer(server):
    _, engine, tok = server
    client = client_for(server)
    whole = client.chat.completions.create(model="b", messages=MESSAGES, n=2, seed=11, max_tokens=4)
    chunks = list(client.chat.completions.create(model="b", messages=MESSAGES, n=2, seed=11, max_tokens=4,
                                                 stream=True, stream_options={"include_usage": True}))
    assert len({c.id for c in chunks}) == 1 and chunks[0].id.startswith("chatcmpl-")
    assert all(c.object == "chat.completion.chunk" and c.model == "b" and c.system_fingerprint for c in chunks)
    *pieces, last = chunks
    assert last.choices == [] and last.usage.completion_tokens == 8 == whole.usage.completion_tokens
    assert last.usage.prompt_tokens == len(chat_ids(tok)) == whole.usage.prompt_tokens  # the prompt once
    assert all(c.usage is None for c in pieces)
    for index in range(2):
        mine = [c.choices[0] for c in pieces if c.choices[0].index == index]
        assert mine[0].delta.role == "assistant" and all(c.delta.role is None for c in mine[1:])
        assert [c.finish_reason for c in mine] == [None] * (len(mine) - 1) + ["length"]
        assert "".join(c.delta.content or "" for c in mine) == whole.choices[index].message.content
    assert [c.index for c in whole.choices] == [0, 1]


def test_the_same_seed_gives_the_same_text_and_choice_i_samples_with_seed_plus_i(server):
    client = client_for(server)

    def ask(**options):
        return [c.text for c in client.completions.create(model="tiny", prompt="Dan", max_tokens=8, **options).choices]
    assert ask(seed=3) == ask(seed=3) != ask(seed=4)
    assert ask(seed=3, n=2) == ask(seed=3) + ask(seed=4)  # vLLM's seeds for the n samples
    assert ask(seed=3, temperature=0) == ask(seed=9, temperature=0)


def test_penalties_and_logit_bias_pick_the_tokens_computed_by_hand(server, reference):
    _, _, tok = server
    client = client_for(server)
    plain, _ = greedy(reference, tok.encode("Dan"), None, 10)
    bias = {str(plain[0]): -100, "65": 3.5}  # the first greedy token banned; "A" pushed up
    for options in [dict(presence_penalty=1.0), dict(frequency_penalty=2.0), dict(presence_penalty=-2.0),
                    dict(frequency_penalty=-1.5), dict(logit_bias=bias),
                    dict(presence_penalty=-0.5, frequency_penalty=1.2, logit_bias=bias)]:
        expected, _ = greedy(reference, tok.encode("Dan"), None, 10, **options)
        assert expected != plain, options  # else the test could not tell an ignored option
        got = client.completions.create(model="tiny", prompt="Dan", max_tokens=10, temperature=0, **options)
        assert got.choices[0].text == served_text(tok, expected), options
    with pytest.raises(openai.BadRequestError) as err:
        client.completions.create(model="tiny", prompt="Dan", logit_bias={"x": 1})
    assert_error_object(err.value, 400, "logit_bias")


def test_stop_as_a_string_or_a_list_and_the_tokens_counted(server, reference):
    _, _, tok = server
    client = client_for(server)
    chat_prompt = [{"role": "user", "content": "x"}]
    for ids, ask in [(tok.encode("Dan"), lambda **kw: client.completions.create(model="b", prompt="Dan", **kw)),
                     (chat_ids(tok, chat_prompt), lambda **kw: client.chat.completions.create(
                         model="b", messages=chat_prompt, **kw))]:
        tokens, _ = greedy(reference, ids, "b", 12)
        text = tok.decode(tokens)
        stop = next(text[i] for i in range(2, len(text)) if text[i] != "\ufffd")
        used = next(k for k in range(1, 13) if stop in tok.decode(tokens[:k]))  # the token that completed it
        for given in (stop, [stop, "never seen"], ["never seen", stop]):
            got = ask(max_tokens=12, temperature=0, stop=given)
            choice = got.choices[0]
            assert (choice.text if hasattr(choice, "text") else choice.message.content) == text[:text.index(stop)]
            assert choice.finish_reason == "stop" and got.usage.completion_tokens == used, given


# ---------------------------------------------------------------------------------------------------
# completions: echo, logprobs=int, several prompts, suffix, best_of
# ---------------------------------------------------------------------------------------------------
def test_echo_with_logprobs_scores_the_prompt_and_offsets_point_into_the_text(server, reference):
    _, _, tok = server
    client = client_for(server)
    prompt = "héllo"  # é is two byte tokens: both start where the character does
    ids = tok.encode(prompt)
    tokens, rows = greedy(reference, ids, None, 3)
    got = client.completions.create(model="tiny", prompt=prompt, max_tokens=3, temperature=0, echo=True,
                                    logprobs=2)
    choice = got.choices[0]
    assert got.id.startswith("cmpl-") and got.object == "text_completion" and choice.finish_reason == "length"
    assert choice.text == prompt + served_text(tok, tokens)
    lp = choice.logprobs
    assert lp.tokens[:5] == ["<bos>", "h", "bytes:\\xc3", "bytes:\\xa9", "l"]
    assert lp.text_offset[:7] == [0, 0, 1, 1, 2, 3, 4]  # <bos> is not in the text
    assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None
    with ml.no_grad():
        prompt_rows = [log_softmax(r) for r in reference(np.array([ids]), adapter_names=["__base__"]).logits.numpy()[0]]
    expected = [prompt_rows[i - 1][ids[i]] for i in range(1, len(ids))] + [row[t] for t, row in zip(tokens, rows)]
    assert lp.token_logprobs[1:] == pytest.approx(expected, abs=1e-9)
    assert all(len(top) in (2, 3) for top in lp.top_logprobs[1:])  # the 2 likeliest and the chosen one
    assert got.usage.prompt_tokens == len(ids) and got.usage.completion_tokens == 3
    streamed = list(client.completions.create(model="tiny", prompt=prompt, max_tokens=3, temperature=0, echo=True,
                                              logprobs=2, stream=True))
    assert "".join(c.choices[0].text for c in streamed) == choice.text
    assert [o for c in streamed for o in c.choices[0].logprobs.text_offset] == lp.text_offset
    assert [t for c in streamed for t in c.choices[0].logprobs.tokens] == lp.tokens


def test_an_id_past_the_tokenizer_is_named_token_id_not_a_server_error(server, reference):
    _, _, tok = server
    ids = [256, 104, 259, 105]  # 259: the model's, no text (the echo with logprobs used to answer 500)
    got = client_for(server).completions.create(model="tiny", prompt=ids, max_tokens=1, temperature=0, echo=True,
                                                logprobs=1)
    lp = got.choices[0].logprobs
    # (a prompt of ids is echoed decoded whole, its <bos> too, as vLLM's: tests/test_serve_offpath_r13.py)
    assert lp.tokens[:4] == ["<bos>", "h", "token_id:259", "i"] and got.choices[0].text.startswith("<bos>hi")
    assert lp.text_offset[:4] == [0, 5, 6, 6]  # no text: it takes no room
    with ml.no_grad():
        rows = reference(np.array([ids]), adapter_names=["__base__"]).logits.numpy()[0]
    assert lp.token_logprobs[2] == pytest.approx(log_softmax(rows[1])[259], abs=1e-9)


def test_several_prompts_with_n_number_the_choices_and_count_each_prompt_once(server):
    _, _, tok = server
    got = client_for(server).completions.create(model="a", prompt=["Dan", "Where"], n=2, max_tokens=3, seed=1)
    assert [c.index for c in got.choices] == [0, 1, 2, 3]
    assert got.usage.prompt_tokens == len(tok.encode("Dan")) + len(tok.encode("Where"))
    assert got.usage.completion_tokens == 12 and got.usage.total_tokens == got.usage.prompt_tokens + 12


@pytest.mark.parametrize("options,param", [(dict(suffix="!"), "suffix")])  # (best_of: vLLM 0.24 ignores it, r11)
def test_suffix_is_refused_as_vllm_refuses_it(server, options, param):
    client = client_for(server)
    with pytest.raises(openai.BadRequestError) as err:
        client.completions.create(model="tiny", prompt="Dan", max_tokens=2, **options)
    assert_error_object(err.value, 400, param)
    with pytest.raises(openai.BadRequestError):  # (vLLM refuses any suffix that is not null, "" too: r12)
        client.completions.create(model="tiny", prompt="Dan", max_tokens=2, suffix="")
    assert client.completions.create(model="tiny", prompt="Dan", max_tokens=2, suffix=None, best_of=1).choices


# ---------------------------------------------------------------------------------------------------
# errors, as the client raises them
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("form", [{"type": "xml"}])  # (json_object, json_schema: tests/test_serve_structured_r12.py)
def test_response_formats_other_than_text_are_refused(server, form):
    client = client_for(server)
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="a", messages=MESSAGES, max_tokens=1, response_format=form)
    assert_error_object(err.value, 400, "body.response_format.type", "Bad Request")  # (pydantic's first error)
    assert form["type"] in err.value.body["message"]
    text = client.chat.completions.create(model="a", messages=MESSAGES, max_tokens=1, response_format={"type": "text"})
    assert text.choices[0].finish_reason == "length"


@pytest.mark.parametrize("options,param,kind", [
    (dict(temperature=3), "temperature", None), (dict(n=0), "n", None),
    (dict(top_logprobs=2), "top_logprobs", "Bad Request"),  # (vLLM's check_logprobs, a model validator: r17)
    (dict(top_logprobs=21, logprobs=True), "top_logprobs", None),
    (dict(max_completion_tokens=-1), "max_tokens", None),  # (SamplingParams' check names max_tokens: r14)
    # (a refusal of the request's pydantic model: vLLM's RequestValidationError handler, r17)
    (dict(stream_options={"include_usage": True}), "stream_options", "Bad Request"),
    (dict(presence_penalty=2.5), None, None),  # (vLLM's range check names no parameter: r14)
    (dict(stream=True, stream_options={"include_usage": "sometimes"}), "body.stream_options.include_usage",
     "Bad Request")])
def test_bad_parameters_are_bad_request_errors_naming_the_parameter(server, options, param, kind):
    with pytest.raises(openai.BadRequestError) as err:
        client_for(server).chat.completions.create(model="a", messages=MESSAGES, max_tokens=1, **options)
    assert_error_object(err.value, 400, param, kind)


def test_unknown_models_are_not_found_errors_and_models_list_and_retrieve(server):
    client = client_for(server)
    for call in (lambda: client.chat.completions.create(model="nope", messages=MESSAGES),
                 lambda: client.completions.create(model="nope", prompt="x"), lambda: client.models.retrieve("nope")):
        with pytest.raises(openai.NotFoundError) as err:
            call()
        assert_error_object(err.value, 404, "model")
    models = client.models.list()
    assert [m.id for m in models] == ["tiny", "a", "b"] and all(m.object == "model" for m in models)
    assert client.models.retrieve("a").model_dump() == models.data[1].model_dump()  # was: 404 for every model
    assert client.models.retrieve("tiny").parent is None and client.models.retrieve("b").parent == "tiny"


def test_a_lora_adapter_loaded_at_run_time_is_a_model_name(server, tmp_path):
    _, engine, tok = server
    adapter = get_peft_model(base_model(), adapter_config(3)).eval()
    adapter.save_pretrained(str(tmp_path / "c"))
    client = client_for(server)
    loaded = client.post("/load_lora_adapter", body={"lora_name": "c", "lora_path": str(tmp_path / "c")},
                         cast_to=HTTP.Response)
    assert loaded.status_code == 200
    try:
        assert client.models.retrieve("c").root == str(tmp_path / "c")
        expected, _ = greedy(adapter, chat_ids(tok), "default", 4)
        got = client.chat.completions.create(model="c", messages=MESSAGES, temperature=0, max_tokens=4)
        assert got.model == "c" and got.choices[0].message.content == served_text(tok, expected)
        with pytest.raises(openai.BadRequestError) as err:  # vLLM: loading a name twice is a 400
            client.post("/load_lora_adapter", body={"lora_name": "c", "lora_path": str(tmp_path / "c")},
                        cast_to=HTTP.Response)
        assert err.value.status_code == 400 and err.value.param == "lora_name"
        assert err.value.type == "InvalidUserInput"  # vLLM's type for its adapter routes' own checks (r11)
    finally:
        client.post("/unload_lora_adapter", body={"lora_name": "c"}, cast_to=HTTP.Response)
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("c")


# ---------------------------------------------------------------------------------------------------
# overload and the client's retries
# ---------------------------------------------------------------------------------------------------
def paced(engine, seconds=0.01):
    """Slow each decode step, so that requests stay in flight while the test looks."""
    step = engine._step
    engine._step = lambda: (time.sleep(seconds), step())
    return lambda: engine.__dict__.pop("_step")


def test_a_429_is_a_rate_limit_error_and_leaves_nothing_queued_for_the_retry_to_double(server):
    _, engine, tok = server
    assert wait_until(lambda: not engine.rows and not engine.waiting, timeout=5)
    restore = paced(engine, 0.02)
    blockers = [Request(tok.encode("x"), max_tokens=60) for _ in range(4)]  # all 4 places (2 running + 2 queued)
    idle = engine.tokens_generated
    try:
        for blocker in blockers:
            engine.submit(blocker)
        scored = []
        score = engine.prompt_logprobs
        engine.prompt_logprobs = lambda *args: scored.append(args) or score(*args)
        with pytest.raises(openai.RateLimitError) as err:  # the backlog is full: neither choice is queued
            client_for(server).completions.create(model="tiny", prompt="Dan", n=2, max_tokens=5, echo=True, logprobs=1)
        assert_error_object(err.value, 429, None)
        assert all(r in blockers for r in engine.rows + list(engine.waiting))  # nothing of it queued, or run
        assert not scored  # not even the echoed prompt's forward pass
        threading.Timer(0.2, lambda: [b.cancel() for b in blockers]).start()  # room before the client retries
        got = client_for(server, max_retries=3).completions.create(model="tiny", prompt="Dan", n=2, max_tokens=5)
        assert got.usage.completion_tokens == 10
        assert wait_until(lambda: not engine.rows and not engine.waiting, timeout=5)
        # every token the engine made since is the blockers' or the one answer's: no attempt ran twice
        assert engine.tokens_generated - idle == 10 + sum(len(b.generated) for b in blockers)
    finally:
        restore()
        engine.__dict__.pop("prompt_logprobs", None)
        for b in blockers:
            b.cancel()


def test_a_client_that_times_out_and_retries_leaves_no_generation_behind(server):
    _, engine, _ = server
    restore = paced(engine, 0.03)
    try:
        client = client_for(server, max_retries=1, timeout=0.3)
        with pytest.raises(openai.APITimeoutError):
            client.completions.create(model="tiny", prompt="Dan", max_tokens=50)
        assert wait_until(lambda: not engine.rows and not engine.waiting, timeout=3)  # both attempts cancelled
        generated = engine.tokens_generated
        time.sleep(0.1)
        assert engine.tokens_generated == generated
    finally:
        restore()


# ---------------------------------------------------------------------------------------------------
# the async client
# ---------------------------------------------------------------------------------------------------
def test_the_async_client_gets_what_the_sync_one_gets(server):
    client = client_for(server)
    expected = client.chat.completions.create(model="a", messages=MESSAGES, seed=5, max_tokens=4)
    plain = client.completions.create(model="b", prompt="Dan", temperature=0, max_tokens=4, logprobs=1)

    async def main():
        async with openai.AsyncOpenAI(base_url=server[0], api_key="not-needed", max_retries=0, timeout=60) as aclient:
            got = await aclient.chat.completions.create(model="a", messages=MESSAGES, seed=5, max_tokens=4)
            stream = await aclient.chat.completions.create(model="a", messages=MESSAGES, seed=5, max_tokens=4,
                                                           stream=True)
            pieces = [c.choices[0].delta.content or "" async for c in stream if c.choices]
            several = await asyncio.gather(*[aclient.completions.create(model="b", prompt="Dan", temperature=0,
                                                                        max_tokens=4, logprobs=1) for _ in range(3)])
            with pytest.raises(openai.NotFoundError):
                await aclient.models.retrieve("nope")
            return got, "".join(pieces), several
    got, streamed, several = asyncio.run(main())
    assert got.choices[0].message.content == streamed == expected.choices[0].message.content
    for other in several:  # batched together, each equals the request alone
        assert other.choices[0].text == plain.choices[0].text
        assert other.choices[0].logprobs.token_logprobs == pytest.approx(plain.choices[0].logprobs.token_logprobs,
                                                                         abs=1e-9)


# ---------------------------------------------------------------------------------------------------
# vLLM's --api-key, in process (the ASGI transport of the client's own HTTP library: no socket)
# ---------------------------------------------------------------------------------------------------
def test_api_key_as_vllms_the_client_without_it_gets_an_authentication_error(monkeypatch, tmp_path):
    from minilora.cli import main
    from minilora.serve import cli as serve_cli
    from minilora.serve.app import create_app
    engine = Engine(base_model(), ByteTokenizer()).start()
    app = create_app(engine, "tiny", api_key="token-abc123")

    async def main_async():
        def client(key):
            return openai.AsyncOpenAI(base_url="http://minilora/v1", api_key=key, max_retries=0,
                                      http_client=HTTP.AsyncClient(transport=HTTP.ASGITransport(app=app)))
        with pytest.raises(openai.AuthenticationError) as err:
            await client("wrong").completions.create(model="tiny", prompt="Dan", max_tokens=2)
        assert err.value.status_code == 401 and "--api-key" in err.value.body["message"]
        with pytest.raises(openai.AuthenticationError):
            await client("wrong").models.list()
        got = await client("token-abc123").completions.create(model="tiny", prompt="Dan", max_tokens=2)
        async with HTTP.AsyncClient(transport=HTTP.ASGITransport(app=app)) as plain:
            health = await plain.get("http://minilora/health")  # open, as vLLM's
        return got, health
    try:
        got, health = asyncio.run(main_async())
    finally:
        engine.shutdown()
    assert got.usage.completion_tokens == 2 and health.status_code == 200
    # `vllm serve MODEL --api-key KEY`, the command of vLLM's OpenAI-compatible server docs, as minilora serve
    base_model("float32").save_pretrained(str(tmp_path / "tiny"))
    started = {}
    monkeypatch.setattr(serve_cli, "make_server", lambda *args, **kwargs: started.update(kwargs) or
                        type("NoServer", (), {"run": lambda self: None})())
    assert main(["serve", str(tmp_path / "tiny"), "--dtype", "auto", "--api-key", "token-abc123"]) == 0
    assert started["api_key"] == "token-abc123"


def test_the_model_is_served_under_the_name_vllm_gives_it_too(monkeypatch, tmp_path):
    """`vllm serve org/name` answers model="org/name"; minilora serve names the base by its folder's name,
    and takes MODEL as given too, or every --served-model-name (vLLM's: several names)."""
    from minilora.cli import main
    from minilora.serve import cli as serve_cli
    from minilora.serve.app import create_app
    base_model("float32").save_pretrained(str(tmp_path / "org" / "tiny"))
    monkeypatch.chdir(tmp_path)
    started = []
    monkeypatch.setattr(serve_cli, "make_server", lambda *args, **kwargs: started.append((args, kwargs)) or
                        type("NoServer", (), {"run": lambda self: None})())
    assert main(["serve", "org/tiny"]) == 0
    assert main(["serve", "org/tiny", "--served-model-name", "first", "second"]) == 0
    (engine, name), kwargs = started[0][0][:2], started[0][1]
    assert (name, kwargs["aliases"]) == ("tiny", ["org/tiny"])
    assert (started[1][0][1], started[1][1]["aliases"]) == ("first", ["second"])
    engine.start()
    app = create_app(engine, name, aliases=kwargs["aliases"])

    async def ask():
        async with openai.AsyncOpenAI(base_url="http://minilora/v1", api_key="-", max_retries=0, http_client=
                                      HTTP.AsyncClient(transport=HTTP.ASGITransport(app=app))) as client:
            models = [m.id async for m in client.models.list()]
            answers = [await client.completions.create(model=m, prompt="Dan", max_tokens=2, temperature=0)
                       for m in ("org/tiny", "tiny")]
            with pytest.raises(openai.NotFoundError):
                await client.completions.create(model="org", prompt="Dan", max_tokens=2)
            return models, answers
    try:
        models, (by_path, by_name) = asyncio.run(ask())
    finally:
        engine.shutdown()
    assert models == ["tiny", "org/tiny"]
    assert (by_path.model, by_name.model) == ("org/tiny", "tiny")  # vLLM answers with the name asked for
    assert by_path.choices[0].text == by_name.choices[0].text
