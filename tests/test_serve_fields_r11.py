"""`minilora serve` against vLLM 0.24's OpenAI server, round 11: the request fields and behaviours that still
differed after round 10, sent by the official `openai` client (and curl-style, Starlette's TestClient) to the app
in process, over round 10's tiny Llama folder with two PEFT adapters (tests/test_serve_offpath_r10.py's fixtures).
vLLM's references: vllm/entrypoints/openai/{completion,chat_completion,engine}/protocol.py (pydantic models with
extra="allow", validated by FastAPI in pydantic's lax mode), sampling_params.py, models/serving.py (unload).

| what a user sends                           | before            | now (vLLM 0.24's)                      |
|---------------------------------------------|-------------------|----------------------------------------|
| a field vLLM does not know (extra_body),    | 400 unsupported   | ignored, logged: "The following fields |
|  best_of (vLLM 0.24 dropped it)             |  parameter(s)     |  were present ... but ignored: {...}"  |
| "max_tokens": "5", "ignore_eos": "yes", 2.0 | 400               | 5, true, 2 (pydantic's lax coercion)   |
| "ignore_eos": null (bool, not Optional)     | taken as false    | 400                                    |
| n: 130 (vLLM: up to VLLM_MAX_N_SEQUENCES)   | 400 (128 at most) | 130 choices; past 16384 vLLM's 400     |
| temperature 2.5 / "nan"                     | 400, other words  | "temperature must be in [0, 2], got    |
|                                             |                   |  2.5." / "must be a finite number"     |
| prompt_logprobs: k (completion, chat)       | 400 unsupported   | {id: {logprob, rank, decoded_token}}   |
|                                             |                   |  per prompt token; null when not asked |
| stream_options.continuous_usage_stats;      | 400; {}: no usage | usage on every chunk; include_usage    |
|  stream_options: {}                         |                   |  true once stream_options is given     |
| unload_lora_adapter of an adapter in use    | 409               | 200: the name goes, its requests in    |
|                                             |                   |  flight finish with it                 |
| load_lora_adapter of a loaded name, with    | 400 "unload it    | vLLM's 400 (InvalidUserInput); with    |
|  or without load_inplace                    |  first"           |  load_inplace: the new weights serve   |
| length_penalty, cache_salt, vllm_xargs, ... | 400 unsupported   | taken (no effect here, nor in vLLM     |
|                                             |                   |  without beam search / prefix cache)   |
| truncate_prompt_tokens, add_special_tokens, | 400 unsupported   | as vLLM: the prompt's last k tokens,   |
|  chat_template_kwargs, a chat's echo,       |                   |  no BOS, template variables, the last  |
|  return_token_ids, ..._as_token_ids         |                   |  message's text first, token ids       |
"""
import logging

import numpy as np
import pytest

openai = pytest.importorskip("openai")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")
pytest.importorskip("starlette")

from test_serve_offpath_r10 import MESSAGES, folders, openai_client, served  # noqa: E402,F401


def completion(client, **body):
    return client.post("/v1/completions", json={"model": "a", "prompt": "Dan", "max_tokens": 4, **body})


def error_of(response, status=400):
    assert response.status_code == status, response.text
    return response.json()["error"]


# ---------------------------------------------------------------------------------------------------
# fields: unknown ones ignored, scalars coerced as pydantic's lax mode, null where vLLM's field is not Optional
# ---------------------------------------------------------------------------------------------------
def test_fields_vllm_does_not_know_are_ignored_and_logged_as_vllm_logs_them(served, caplog):
    api = openai_client(served[0])
    plain = api.completions.create(model="a", prompt="Dan", max_tokens=5, temperature=0)
    with caplog.at_level(logging.WARNING, logger="minilora.serve"):
        extra = api.completions.create(model="a", prompt="Dan", max_tokens=5, temperature=0,
                                       extra_body={"best_of": 3, "frobnicate": {"x": 1}})
        chat = api.chat.completions.create(model="a", messages=MESSAGES, max_tokens=3, temperature=0,
                                           extra_body={"metadata_x": 1})
    assert extra.choices[0].text == plain.choices[0].text and len(extra.choices) == 1  # best_of: no ranking
    assert chat.choices[0].finish_reason == "length"
    logged = [r.getMessage() for r in caplog.records if "were present in the request but ignored" in r.getMessage()]
    assert "'best_of'" in logged[0] and "'frobnicate'" in logged[0] and "'metadata_x'" in logged[1]


LAX_CASES = [5, 5.0, 5.5, True, False, 0, 1, 2, -1, 1.5, 2.0**62, 2.0**80, -2.0**63, float("inf"), float("nan"), [5],
             "5", " 5 ", "\u00a05\u2003", "5.0", "5.00", "5.", ".0", "5.5", "+5", "-0", "+-5", "1e3", "1E5", "1_000",
             "1__0", "_1", "1_", "1_0.0", "5.0_0", "1_e5", "0x10", "inf", "-Infinity", "NaN", "infinit", "1.", ".5",
             ".",
             "", "abc", "١٢", "99999999999999999999999", "true", "False", "YES", "no", "On", "off", "t", "F", "y",
             "N", "1", "0", " true", "maybe"]


@pytest.mark.parametrize("kind", [int, float, bool])
def test_scalar_fields_are_coerced_exactly_as_pydantics_lax_mode(kind):
    pydantic = pytest.importorskip("pydantic")
    from minilora.serve.fields import CompletionRequest, RequestValidationError, read_fields
    field = {int: "n", float: "length_penalty", bool: "ignore_eos"}[kind]  # (vLLM's: int, float, bool, not Optional)
    adapter = pydantic.TypeAdapter(kind)
    for value in LAX_CASES:
        try:
            want = ("ok", adapter.validate_python(value))
        except pydantic.ValidationError as exc:
            want = ("refused", [{**error, "loc": ("body", field)} for error in exc.errors(include_url=False)])
        try:
            got = ("ok", read_fields({"prompt": "Dan", field: value}, CompletionRequest)[field])  # (a prompt: r16)
        except RequestValidationError as exc:  # (FastAPI's errors: located under "body", r17)
            got = ("refused", exc.errors)
        assert type(got[1]) is type(want[1]) and (got == want or np.isnan(got[1]) and np.isnan(want[1])), value


def test_numbers_sent_as_text_are_taken_and_null_is_refused_where_vllms_field_is_not_optional(served):
    client = served[0]
    as_numbers = completion(client, max_tokens=5, temperature=0, top_k=1, logprobs=2, ignore_eos=True).json()
    # (logprobs: vLLM's check_logprobs compares it as sent, so it takes numbers only: 2.0, not " 2 ")
    as_text = completion(client, max_tokens="5", temperature="0", top_k="1.0", logprobs=2.0, ignore_eos="yes")
    assert as_text.status_code == 200, as_text.text
    assert as_text.json()["choices"][0]["text"] == as_numbers["choices"][0]["text"]
    assert as_text.json()["choices"][0]["logprobs"] == as_numbers["choices"][0]["logprobs"]
    assert "unable to parse string as an integer" in error_of(completion(client, max_tokens="5.5"))["message"]
    assert error_of(completion(client, ignore_eos=None))["param"] == "body.ignore_eos"  # bool = False: not Optional
    assert error_of(completion(client, n=None))["param"] == "body.n"  # a completion's n: int = 1
    # logit_bias as vLLM's SamplingParams reads it: keys through int(), values lax floats clamped to [-100, 100]
    greedy = completion(client, temperature=0).json()["choices"][0]["text"]
    banned = completion(client, temperature=0, logit_bias={f" {ord(greedy[0])} ": "-1e9"}).json()
    assert banned["choices"][0]["text"][0] != greedy[0]
    assert error_of(completion(client, logit_bias={"260": 1}))["message"] == \
        "token_id(s) [260] in logit_bias contain out-of-vocab token ids. Vocabulary size: 260"
    # allowed_token_ids: bounded by len(tokenizer) (259), as vLLM's processor; 259 was taken and every id masked
    assert error_of(completion(client, allowed_token_ids=[259]))["message"] == \
        "allowed_token_ids contains out-of-vocab token id!"
    assert completion(client, allowed_token_ids=["97"], max_tokens=2).json()["choices"][0]["text"] == "aa"
    assert error_of(completion(client, stop_token_ids=[5, -1]))["message"] == \
        "token_id(s) [-1] in stop_token_ids contain out-of-vocab token ids. Vocabulary size: 260"
    chat = client.post("/v1/chat/completions", json={"model": "a", "messages": MESSAGES, "max_tokens": 2, "n": None})
    assert chat.status_code == 200, chat.text  # a chat's n: Optional[int] = 1


def test_temperature_and_n_are_checked_as_vllm_024_checks_them(served):
    client = served[0]
    many = completion(client, n=130, max_tokens=1, temperature=1, seed=0)  # past minilora's old bound of 128
    assert many.status_code == 200 and len(many.json()["choices"]) == 130
    assert error_of(completion(client, n=0))["message"] == "n must be at least 1, got 0."
    assert error_of(completion(client, n=16385))["message"] == "n must be at most 16384, got 16385."
    assert completion(client, temperature=2, seed=1).status_code == 200
    suffix = " (parameter=temperature, value={})"  # (VLLMValidationError's text: r14)
    assert error_of(completion(client, temperature=2.5))["message"] == \
        "temperature must be in [0, 2], got 2.5." + suffix.format(2.5)
    assert error_of(completion(client, temperature="nan"))["message"] == \
        "temperature must be a finite number, got nan." + suffix.format("nan")
    assert error_of(completion(client, temperature=-1))["message"] == \
        "temperature must be non-negative, got -1.0." + suffix.format(-1.0)


# ---------------------------------------------------------------------------------------------------
# prompt_logprobs, as transformers + PEFT score the prompt
# ---------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def scored(folders):  # noqa: F811
    """transformers' log_softmax (float64 of the float32 logits) over a prompt, through PEFT's adapter "a"."""
    model = transformers.LlamaForCausalLM.from_pretrained(str(folders / "tiny"), dtype=torch.float32).eval()
    model = peft.PeftModel.from_pretrained(model, str(folders / "a"), adapter_name="a")

    def logprobs(ids):
        with torch.no_grad():
            return torch.log_softmax(model(torch.tensor([ids])).logits[0].double(), -1).numpy()
    return logprobs


def test_prompt_logprobs_are_vllms_ranked_entries(served, scored):
    client, engine = served
    api, tok = openai_client(client), engine.tokenizer
    prompt = "San Francisco is a"
    ids = tok.encode(prompt)
    rows = scored(ids)
    got = api.completions.create(model="a", prompt=prompt, max_tokens=2, temperature=0,
                                 extra_body={"prompt_logprobs": 2}).choices[0].model_extra["prompt_logprobs"]
    assert got[0] is None and len(got) == len(ids)
    for i, entry in enumerate(got[1:], 1):
        row, token = rows[i - 1], ids[i]
        top = np.argsort(-row, kind="stable")[:2]
        assert list(entry)[0] == str(token)  # the prompt's token first, then the 2 likeliest
        assert set(entry) == {str(token), *map(str, top)}
        for key, value in entry.items():
            t = int(key)
            rank = int((row >= row[t]).sum()) if t == token else 1 + list(top).index(t)
            # one float32 forward each, summed in other orders (minilora's matmuls are not torch's): through the
            # tiny model's large activations (weights 0.5 * randn) 1.3e-5 apart at most here, ~30 ulps of the
            # largest logit (7.8); a wrong formula (no rank, other token, other adapter) is off by 0.1 or more
            assert value["logprob"] == pytest.approx(row[t], abs=5e-5)
            assert value["rank"] == rank and value["decoded_token"] == tok.decode([t])
    plain = api.completions.create(model="a", prompt=prompt, max_tokens=2, temperature=0)
    assert plain.choices[0].model_extra["prompt_logprobs"] is None  # vLLM's choice has the field, null
    chat = api.chat.completions.create(model="a", messages=MESSAGES, max_tokens=2, temperature=0,
                                       extra_body={"prompt_logprobs": 0})
    assert chat.model_extra["prompt_logprobs"][0] is None
    assert all(len(entry) == 1 for entry in chat.model_extra["prompt_logprobs"][1:])  # k=0: the token alone
    assert len(chat.model_extra["prompt_logprobs"]) == chat.usage.prompt_tokens


@pytest.mark.parametrize("body, message", [
    # (vLLM's check_logprobs, a validator of the request's model: its VLLMValidationError in pydantic's list, r17)
    ({"prompt_logprobs": 1, "stream": True}, "'msg': 'Value error, `prompt_logprobs` are not available when "
                                             "`stream=True`. (parameter=prompt_logprobs)'"),
    ({"prompt_logprobs": 21}, "Requested prompt logprobs of 21, which is greater than max allowed: 20"),
    ({"prompt_logprobs": -1}, "Requested prompt logprobs of 260, which is greater than max allowed: 20"),
    ({"prompt_logprobs": -2}, "'msg': 'Value error, `prompt_logprobs` must be a positive value or -1. "
                              "(parameter=prompt_logprobs, value=-2)'")])
def test_prompt_logprobs_refused_in_vllms_words(served, body, message):
    error = error_of(completion(served[0], **body))
    assert (message in error["message"] if message.startswith("'msg'") else error["message"] == message)
    assert error["param"] == "prompt_logprobs"


# ---------------------------------------------------------------------------------------------------
# stream_options: include_usage true by default, continuous_usage_stats
# ---------------------------------------------------------------------------------------------------
def test_continuous_usage_stats_put_each_choices_usage_on_every_chunk(served):
    api, tok = openai_client(served[0]), served[1].tokenizer
    chunks = list(api.completions.create(model="a", prompt=["Dan", "Where"], n=2, max_tokens=4, temperature=0.8,
                                         seed=1, stream=True, stream_options={"continuous_usage_stats": True}))
    made = [0] * 4
    for chunk in chunks[:-1]:
        (choice,) = chunk.choices
        made[choice.index] += 1  # one token a chunk
        prompt = len(tok.encode(["Dan", "Where"][choice.index // 2]))
        assert (chunk.usage.prompt_tokens, chunk.usage.completion_tokens) == (prompt, made[choice.index])
    assert made == [4] * 4 and not chunks[-1].choices  # include_usage: true by default, as vLLM's StreamOptions
    assert chunks[-1].usage.completion_tokens == 16
    assert chunks[-1].usage.prompt_tokens == len(tok.encode("Dan")) + len(tok.encode("Where"))
    chat = list(api.chat.completions.create(model="a", messages=MESSAGES, max_tokens=3, temperature=0, stream=True,
                                            stream_options={"continuous_usage_stats": True}))
    assert [c.usage.completion_tokens for c in chat] == [0, 1, 2, 3, 3]  # the role chunk first, then the total
    usage_only = list(api.completions.create(model="a", prompt="Dan", max_tokens=2, stream=True, stream_options={}))
    assert usage_only[-1].usage.completion_tokens == 2 and usage_only[0].usage is None
    assert completion(served[0], stream_options={}).status_code == 200  # empty without stream: let through


# ---------------------------------------------------------------------------------------------------
# unloading an adapter that requests in flight use
# ---------------------------------------------------------------------------------------------------
def test_unloading_an_adapter_in_use_lets_its_requests_finish_with_it(served, folders, monkeypatch):  # noqa: F811
    import threading
    import time
    client, engine = served
    api = openai_client(client)
    body = dict(model="b", prompt="busy", max_tokens=30, temperature=0, extra_body={"ignore_eos": True})
    expected = api.completions.create(**body).choices[0].text
    step, reloaded = engine._step, threading.Event()

    def step_after_the_reload():
        """The first token comes from the prefill; no decode step runs until the test has unloaded and reloaded
        "b", so both surely come while the request runs (a 10 ms pause a step let a loaded machine finish it first,
        now and then). Meanwhile the engine's loop only runs the queued load/unload commands."""
        while not reloaded.is_set():  # (no deadline: a loaded machine took a minute for the test's calls; the
            if engine.commands:  # test sets it however it ends)
                return  # (the loop runs the command, then asks for a step again)
            time.sleep(0.001)
        return step()
    monkeypatch.setattr(engine, "_step", step_after_the_reload)
    try:
        stream = api.completions.create(**body, stream=True)
        text = next(iter(stream)).choices[0].text
        r = client.post("/v1/unload_lora_adapter", json={"lora_name": "b"})
        assert r.status_code == 200 and r.text == "Success: LoRA adapter 'b' removed successfully."
        assert "b" not in engine.adapters() and engine._draining == {"b"}  # the request in flight holds it
        assert completion(client, model="b").status_code == 404  # a new request: vLLM's "does not exist"
        r = client.post("/v1/load_lora_adapter", json={"lora_name": "b", "lora_path": str(folders / "b")})
        assert r.status_code == 200, r.text  # the name is free again: loaded under another key meanwhile
    finally:
        reloaded.set()
    text += "".join(chunk.choices[0].text for chunk in stream if chunk.choices)
    assert text == expected
    while engine._draining and engine._thread.is_alive():  # (the stream's last chunk may reach the client before the
        time.sleep(0.001)  # engine's loop, on its thread, finishes the request and lets go of "b"; no deadline)
    assert not engine._draining  # the old adapter left the model with its last request
    monkeypatch.undo()
    assert api.completions.create(**body).choices[0].text == expected


def test_a_loaded_name_loads_again_only_in_place_and_the_route_errors_are_vllms(served, folders):  # noqa: F811
    client = served[0]
    api = openai_client(client)
    greedy = lambda model: api.completions.create(  # noqa: E731
        model=model, prompt="Dan", max_tokens=6, temperature=0).choices[0].text
    texts = {name: greedy(name) for name in ("a", "b")}
    load = lambda **body: client.post("/v1/load_lora_adapter", json=body)  # noqa: E731
    again = error_of(load(lora_name="a", lora_path=str(folders / "b")))
    assert again["type"] == "InvalidUserInput" and again["message"] == (
        "The lora adapter 'a' has already been loaded. If you want to load the adapter in place, set 'load_inplace' "
        "to True.")
    assert load(lora_name="a", lora_path=str(folders / "b"), load_inplace=True).status_code == 200
    assert greedy("a") == texts["b"]  # "a" serves b's weights now
    assert load(lora_name="a", lora_path=str(folders / "a"), load_inplace="true").status_code == 200
    assert greedy("a") == texts["a"] and not served[1]._draining
    # a field left out is pydantic's refusal of vLLM's required field (r16); an empty one vLLM's own check's
    assert "'loc': ('body', 'lora_path'), 'msg': 'Field required'" in error_of(load(lora_name="c"))["message"]
    assert error_of(load(lora_name="c", lora_path=""))["message"] == \
        "Both 'lora_name' and 'lora_path' must be provided."
    unload = lambda **body: client.post("/v1/unload_lora_adapter", json=body)  # noqa: E731
    assert "'loc': ('body', 'lora_name'), 'msg': 'Field required'" in error_of(unload())["message"]
    assert error_of(unload(lora_name=""))["type"] == "InvalidUserInput"
    assert error_of(unload(lora_name="zzz"), 404)["message"] == "The lora adapter 'zzz' cannot be found."


# ---------------------------------------------------------------------------------------------------
# vLLM's other fields: taken where they change nothing here, done, or refused by name
# ---------------------------------------------------------------------------------------------------
def test_vllm_fields_without_effect_here_are_taken_and_the_unimplemented_refused_by_name(served):
    client = served[0]
    plain = completion(client, temperature=0).json()["choices"][0]["text"]
    no_ops = dict(length_penalty=2.0, cache_salt="salt", vllm_xargs={"x": 1}, kv_transfer_params=None,
                  spaces_between_special_tokens=True, use_beam_search=False, priority=0)
    assert completion(client, temperature=0, **no_ops).json()["choices"][0]["text"] == plain
    chat = client.post("/v1/chat/completions", json={"model": "a", "messages": MESSAGES, "max_tokens": 2,
                                                     "include_reasoning": False, "parallel_tool_calls": False})
    assert chat.status_code == 200, chat.text
    # (structured_outputs, use_beam_search: taken since r12; cache_salt "": vLLM's ValueError, param "body": r17)
    assert error_of(completion(client, logits_processors=["m.P"]))["param"] == "logits_processors"
    # (priority 1: vLLM's engine refuses it without priority scheduling, its param null: r14's test)


def test_truncate_prompt_tokens_and_add_special_tokens_shape_the_prompt_as_vllm(served):
    api, tok = openai_client(served[0]), served[1].tokenizer
    prompt = "San Francisco is a"
    ids = tok.encode(prompt)
    ask = lambda prompt, **extra: api.completions.create(  # noqa: E731
        model="a", prompt=prompt, max_tokens=3, temperature=0, extra_body=extra)
    cut = ask(prompt, truncate_prompt_tokens=5)
    assert cut.usage.prompt_tokens == 5 and cut.choices[0].text == ask(ids[-5:]).choices[0].text
    assert ask(prompt, truncate_prompt_tokens=-1).usage.prompt_tokens == len(ids)  # room for all of it
    no_bos = ask(prompt, add_special_tokens=False)
    assert no_bos.usage.prompt_tokens == len(ids) - 1
    assert no_bos.choices[0].text == ask(tok.encode(prompt, add_special_tokens=False)).choices[0].text
    with pytest.raises(openai.BadRequestError):
        ask(prompt, truncate_prompt_tokens=62)  # past max_model_len 64 - max_tokens 3


def test_return_token_ids_and_tokens_as_token_ids_are_vllms(served):
    api, tok = openai_client(served[0]), served[1].tokenizer
    ask = dict(model="a", max_tokens=5, temperature=0, extra_body={"return_token_ids": True})
    whole = api.completions.create(prompt="Dan", **ask).choices[0].model_extra
    assert whole["prompt_token_ids"] == tok.encode("Dan") and len(whole["token_ids"]) == 5
    chunks = [c.choices[0].model_extra for c in api.completions.create(prompt="Dan", stream=True, **ask)]
    assert chunks[0]["prompt_token_ids"] == tok.encode("Dan") and "prompt_token_ids" not in chunks[1]
    assert sum((c["token_ids"] for c in chunks), []) == whole["token_ids"]  # each chunk: its own token's id
    chat = api.chat.completions.create(messages=MESSAGES, **ask)
    assert len(chat.model_extra["prompt_token_ids"]) == chat.usage.prompt_tokens
    assert len(chat.choices[0].model_extra["token_ids"]) == chat.usage.completion_tokens
    named = api.completions.create(prompt="Dan", logprobs=2, echo=True, model="a", max_tokens=3, temperature=0,
                                   extra_body={"return_tokens_as_token_ids": True}).choices[0].logprobs
    ids = tok.encode("Dan")
    assert named.tokens[:len(ids)] == [f"token_id:{t}" for t in ids]  # vLLM's names, the echoed prompt's too
    assert all(key.startswith("token_id:") for top in named.top_logprobs[1:] for key in top)


def test_a_chats_echo_and_template_variables_are_vllms(served):
    api, tok = openai_client(served[0]), served[1].tokenizer
    partial = MESSAGES + [{"role": "assistant", "content": "He lives"}]
    going_on = dict(model="a", messages=partial, max_tokens=4, temperature=0,
                    extra_body={"add_generation_prompt": False, "continue_final_message": True})
    plain = api.chat.completions.create(**going_on).choices[0].message
    echoed = api.chat.completions.create(**{**going_on, "extra_body": {**going_on["extra_body"], "echo": True}})
    assert echoed.choices[0].message.content == "He lives" + plain.content and plain.role == "assistant"
    assert len(echoed.model_extra["prompt_logprobs"]) == echoed.usage.prompt_tokens  # echo: top_logprobs' count
    streamed = list(api.chat.completions.create(**{**going_on, "extra_body": {**going_on["extra_body"], "echo": True}},
                                                stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in streamed) == echoed.choices[0].message.content
    template = "{% for m in messages %}{{ shout }}{{ m['content'] }}{% endfor %}"
    shouted = api.chat.completions.create(model="a", messages=MESSAGES, max_tokens=1, extra_body={
        "chat_template": template, "chat_template_kwargs": {"shout": "HEY ", "tokenize": True}})
    assert shouted.usage.prompt_tokens == len(tok.encode("HEY " + MESSAGES[0]["content"], add_special_tokens=False))
    effort = "{{ reasoning_effort }}{% for m in messages %}{{ m['content'] }}{% endfor %}"
    high = api.chat.completions.create(model="a", messages=MESSAGES, max_tokens=1, reasoning_effort="high",
                                       extra_body={"chat_template": effort})
    assert high.usage.prompt_tokens == len(("high" + MESSAGES[0]["content"]).encode())
    with pytest.raises(openai.BadRequestError) as err:  # vLLM's Literal["low", "medium", "high"]
        api.chat.completions.create(model="a", messages=MESSAGES, max_tokens=1, reasoning_effort="minimal")
    assert err.value.param == "body.reasoning_effort"
