"""`minilora serve` checks each request field's type as vLLM 0.24's pydantic request models do (FastAPI validates
them in pydantic's lax mode): every field of /v1/completions, /v1/chat/completions, /tokenize, /detokenize and
the LoRA routes, sent with a right value, a coercible one ("1" or 1.0 for an int, "yes" for a bool), a wrongly
typed one and null, is taken exactly when pydantic takes it for vLLM's declared type (the oracle: pydantic's
TypeAdapter over the types transcribed below from vllm/entrypoints/openai/{completion,chat_completion}/protocol.py
and vllm/entrypoints/serve/tokenize/protocol.py); a refusal is a 400 naming the field, with pydantic's message.

| what a user sends                                 | before (r14)                   | now (vLLM's)                   |
|---------------------------------------------------|--------------------------------|--------------------------------|
| vllm_xargs {"k": {"x": 1}} / {"k": null}           | 200 (any dict)                 | 400 vllm_xargs.k               |
| documents [{"title": 1}] / [["a"]]                 | 200 / 400 (param null)         | 400 documents (list[dict[str,  |
|                                                   |                                |  str]])                        |
| prompt ["D", [97]] (texts and ids mixed)          | 200                            | 400 prompt                     |
| prompt [68.0], stop_token_ids [5.0]               | 400 / 200                      | 200 (lax int), as vLLM         |
| cache_salt 5                                      | pydantic's "valid string"      | vLLM's own check: "Parameter   |
|                                                   |                                |  'cache_salt' must be a non-   |
|                                                   |                                |  empty string if provided."    |
| load_lora_adapter lora_name 5, unload lora_name 5 | "Both ... must be provided",   | 400 lora_name: pydantic's      |
|                                                   |  param lora_path               |  "Input should be a valid      |
|                                                   |                                |  string"                       |
| tools [{"function": {"name": "f", "description":  | 200 (with tool_choice "none")  | 400 tools                      |
|  5}}] / "abc"                                     | / 400 transformers' words, no  |                                |
|                                                   |  param                         |                                |
| response_format json_schema strict "maybe";       | 200                            | 400 response_format            |
|  a legacy structural tag's end 5                  |                                |                                |
| messages [{"role": "user", "content": "Hi",       | 200                            | 400 messages.0.name            |
|  "name": 5}]                                      |                                |                                |
| stream "false" with stream_options                | 400                            | 200: vLLM's check reads the    |
|                                                   |                                |  raw body ("false" is true)    |
Not swept (their own checks, in vLLM's words, run in app.py / structured.py): a message's content parts,
tool_choice, logits_processors, prompt_embeds. Text for logprobs/top_logprobs/prompt_logprobs is checked apart:
vLLM's check_logprobs compares the value as sent, so "1" is its 400 "`logprobs` must be an integer." (was 200).
"""
from typing import Annotated, Any, Literal

import pytest

pydantic = pytest.importorskip("pydantic")
pytest.importorskip("starlette")
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter  # noqa: E402
from starlette.testclient import TestClient  # noqa: E402

from minilora.serve import Engine  # noqa: E402
from minilora.serve.app import create_app  # noqa: E402
from minilora.tokenizer import ByteTokenizer  # noqa: E402
from test_serve import CHAT_TEMPLATE, two_adapters  # noqa: E402
from test_serve_r17 import endpoint_of, field_errors, vllm_answer  # noqa: E402

MESSAGES = [{"role": "user", "content": "Hi"}]
LONG = 2**63 - 1


class StreamOptions(BaseModel):  # vLLM's (an OpenAIBaseModel: extra names allowed)
    model_config = ConfigDict(extra="allow")
    include_usage: bool | None = True
    continuous_usage_stats: bool | None = False


INT, FLOAT, BOOL, STR = int | None, float | None, bool | None, str | None  # (vLLM's Optional scalars)
XARGS = dict[str, str | int | float | list[str | int | float]] | None
# (field, vLLM's type, values sent): each value is taken or refused as pydantic takes it for the type. The values
# taken are in the ranges vLLM's own checks allow, so each such request answers 200.
SHARED = [
    ("model", STR, ["a", None, 5, ["a"]]),
    ("frequency_penalty", FLOAT, [0.5, "0.5", 1, None, "x", [0.5]]),
    ("logit_bias", dict[str, float] | None, [{"65": 1}, {"65": "1.5"}, None, {"65": "x"}, [1], "x"]),
    ("presence_penalty", FLOAT, [-0.5, "1e-1", None, "x", {}]),
    ("seed", Annotated[int, Field(ge=-LONG - 1, le=LONG)] | None, [1, "1", 1.0, None, 2**64, 1.5, "x"]),
    ("stop", str | list[str] | None, ["zz", ["zz"], None, 5, [5], {"a": 1}]),
    ("stream", BOOL, [False, "false", 0, None, "maybe", [False]]),
    ("temperature", FLOAT, [0, "0", "0.0", None, "x", [0]]),
    ("top_p", FLOAT, [1, "1", 0.5, None, "x", [1]]),
    ("user", STR, ["u", None, 5, ["u"]]),
    ("use_beam_search", bool, [False, "no", 0, True, None, "x"]),
    ("top_k", INT, [1, "1", 1.0, None, 1.5, "x"]),
    ("min_p", FLOAT, [0.0, "0.1", None, "x"]),
    ("repetition_penalty", FLOAT, [1, "1.1", None, "x"]),
    ("length_penalty", float, [1.0, "2", None, "x"]),
    ("stop_token_ids", list[int] | None, [[5], ["5"], [5.0], None, "5", [5.5], 5]),
    ("include_stop_str_in_output", bool, [True, "t", None, "x"]),
    ("ignore_eos", bool, [True, "on", 1, None, 2]),
    ("min_tokens", int, [0, "0", 0.0, None, "x"]),
    ("skip_special_tokens", bool, [False, "off", None, "x"]),
    ("spaces_between_special_tokens", bool, [True, "1", None, "x"]),
    ("truncate_prompt_tokens", Annotated[int, Field(ge=-1, le=LONG)] | None, [2, "2", None, -2, "x"]),
    ("allowed_token_ids", list[int] | None, [[97], ["97"], None, "97", [97.5]]),
    # (text and lists: vLLM's own check, below; None second: beside stream "false", which vLLM's check_logprobs
    # reads as sent, a true value, prompt_logprobs is refused, r17)
    ("prompt_logprobs", INT, [1, None, 1.0, 1.5]),
    ("bad_words", list[str], [["zz"], None, "zz", [5]]),
    ("priority", int, [0, "0", 0.0, None, 0.5]),
    ("request_id", str, ["r1", None, 5]),
    ("return_tokens_as_token_ids", BOOL, [True, "yes", None, "x"]),
    ("return_token_ids", BOOL, [True, "no", None, "x"]),
    ("kv_transfer_params", dict[str, Any] | None, [{}, {"a": 1}, None, "x", [1]]),
    ("vllm_xargs", XARGS, [{"k": 1}, {"k": "v"}, {"k": [1, "a"]}, {"k": True}, None, {"k": {"x": 1}}, {"k": None},
                           "x", [1]]),
    ("max_repetition_pattern_size", int, [0, "0", None, "x"]),
    ("min_repetition_pattern_size", int, [0, 0.0, None, "x"]),
    ("repetition_min_count", int, [0, "0", None, [0]]),
]
COMPLETION = SHARED + [
    ("prompt", list[int] | list[list[int]] | str | list[str] | None,
     ["Dan", [68, 97], [[68], [97]], ["D", "a"], [68.0], 5, {"x": 1}, ["D", [97]], [68.5]]),
    ("echo", BOOL, [True, "yes", 1, None, "maybe", 2]),
    ("logprobs", INT, [1, 1.0, None, 1.5]),
    ("max_tokens", INT, [1, "1", 1.0, True, 1.5, "x"]),
    ("n", int, [1, "1", 1.0, None, 1.5, "x"]),
    ("suffix", STR, [None, 5]),  # (any suffix is refused by vLLM's serving code)
    ("add_special_tokens", bool, [False, "false", None, "x"]),
]
CHAT = SHARED + [
    ("logprobs", BOOL, [True, "true", None, "x"]),
    ("top_logprobs", INT, [0, None]),  # (1.5 without logprobs: check_logprobs refuses it first, tests/..._r17.py)
    ("max_tokens", INT, [1, "1", "x", 1.5]),
    ("max_completion_tokens", INT, [1, "1", None, 1.5]),
    ("n", INT, [1, "1", None, "x"]),
    ("reasoning_effort", Literal["low", "medium", "high"] | None, ["low", None, "x", 5]),
    ("include_reasoning", bool, [False, "no", None, "x"]),
    ("parallel_tool_calls", BOOL, [False, None, "x"]),
    ("echo", bool, [False, "true", None, "x"]),
    ("add_generation_prompt", bool, [True, False, "yes", None, "x"]),  # (with "no" beside it: false)
    ("continue_final_message", bool, [False, "no", None, "x"]),
    ("add_special_tokens", bool, [False, None, "x"]),
    ("documents", list[dict[str, str]] | None, [[{"title": "t", "text": "x"}], None, "abc", [{"title": 1}], [["a"]]]),
    ("chat_template", STR, [None, 5]),
    ("chat_template_kwargs", dict[str, Any] | None, [{}, None, "x", [1]]),
    ("mm_processor_kwargs", dict[str, Any] | None, [{}, None, "x", [1]]),
]
TOKENIZE = [
    ("model", STR, ["a", None, 5]),
    ("prompt", str, ["Dan", 5, ["D"], None]),
    ("add_special_tokens", bool, [False, "no", None, "x"]),
    ("return_token_strs", BOOL, [True, "yes", None, "x"]),
]
TOKENIZE_CHAT = [
    ("add_generation_prompt", bool, [True, False, "1", None, "x"]),
    ("return_token_strs", BOOL, [True, None, "x"]),
    ("continue_final_message", bool, [False, "f", None, "x"]),
    ("add_special_tokens", bool, [False, None, "x"]),
    ("chat_template", STR, [None, 5]),
    ("chat_template_kwargs", dict[str, Any] | None, [{}, None, "x"]),
    ("mm_processor_kwargs", dict[str, Any] | None, [{}, None, [1]]),
    ("media_io_kwargs", dict[str, Any] | None, [{}, None, "x"]),
]
DETOKENIZE = [
    ("model", STR, ["a", None, 5]),
    ("tokens", list[int], [[65], ["65"], [65.0], None, "65", [65.5]]),
]
BASES = {  # each route's smallest request; a field's values replace its own
    "/v1/completions": {"model": "a", "prompt": "Dan", "max_tokens": 1, "temperature": 0},
    "/v1/chat/completions": {"model": "a", "messages": MESSAGES, "max_tokens": 1, "temperature": 0},
    "/tokenize": {"model": "a", "prompt": "Dan"},
    "/tokenize chat": {"model": "a", "messages": MESSAGES},
    "/detokenize": {"model": "a", "tokens": [65]},
}


@pytest.fixture(scope="module")
def client():
    tok = ByteTokenizer()
    tok.chat_template = CHAT_TEMPLATE
    engine = Engine(two_adapters(), tok, max_batch_size=4, max_queue=64)
    engine.eos = set()
    with TestClient(create_app(engine, "tiny")) as served:
        yield served


def pydantic_says(kind, value):
    """None where vLLM's type takes ``value``, else pydantic's first message."""
    try:
        TypeAdapter(kind).validate_python(value)
    except pydantic.ValidationError as exc:
        return exc.errors()[0]["msg"]
    return None


def sweep(client, route, fields):
    """Each value of each field over the route's base request: (field, value, status, answer) where minilora
    differs from pydantic over vLLM's type. A refused value is sent alone; the values taken go together, each
    field's k-th in request k (a request that is not a 200 is then sent apart, value by value, to name them)."""
    wrong, taken = [], {}
    for name, kind, values in fields:
        for value in values:
            refusal = pydantic_says(kind, value)
            if refusal is None:
                taken.setdefault(name, []).append(value)
                continue
            response = client.post(route.split()[0], json={**BASES[route], name: value})
            error = response.json().get("error", {}) if response.status_code == 400 else {}
            if route.startswith("/tokenize"):  # (a union: each member's errors, its label in their loc)
                right = error.get("type") == "Bad Request" and f"'msg': {refusal!r}" in error.get("message", "")
            else:  # vLLM 0.24's answer to FastAPI's RequestValidationError of pydantic's errors for the field (r17)
                right = error == vllm_answer(field_errors(name, kind, value), endpoint_of(client.app, route))
            if not right:
                wrong.append((name, value, response.status_code, response.text[:200]))
    for k in range(max(map(len, taken.values()))):
        together = {name: values[k] for name, values in taken.items() if k < len(values)}
        response = client.post(route.split()[0], json={**BASES[route], **together})
        if response.status_code == 200:
            continue
        for name, value in together.items():
            alone = client.post(route.split()[0], json={**BASES[route], name: value})
            if alone.status_code != 200:
                wrong.append((name, value, alone.status_code, alone.text[:200]))
        assert wrong, f"each value of {together} is taken alone, not all together: {response.text}"
    return wrong


def test_completion_fields_take_and_refuse_what_vllms_pydantic_types_do(client):
    assert sweep(client, "/v1/completions", COMPLETION) == []


def test_chat_fields_take_and_refuse_what_vllms_pydantic_types_do(client):
    assert sweep(client, "/v1/chat/completions", CHAT) == []


def test_tokenize_detokenize_and_lora_route_fields_are_vllms_types(client):
    assert sweep(client, "/tokenize", TOKENIZE) + sweep(client, "/tokenize chat", TOKENIZE_CHAT) + \
        sweep(client, "/detokenize", DETOKENIZE) == []
    for route, body, param in [("/v1/load_lora_adapter", {"lora_name": 5, "lora_path": "/x"}, "lora_name"),
                               ("/v1/load_lora_adapter", {"lora_name": "c", "lora_path": ["/x"]}, "lora_path"),
                               ("/v1/load_lora_adapter", {"lora_name": "c", "lora_path": "/x", "load_inplace": "x"},
                                "load_inplace"),
                               ("/v1/unload_lora_adapter", {"lora_name": 5}, "lora_name")]:
        error = client.post(route, json=body).json()["error"]
        assert (error["param"], error["type"]) == (f"body.{param}", "Bad Request"), (route, body, error)
        assert f"'loc': ('body', '{param}'), 'msg': 'Input should be a valid " in error["message"], error


def test_required_fields_left_out_and_vllms_own_checks_keep_their_words(client):
    for route, name in [("/v1/chat/completions", "messages"), ("/detokenize", "tokens")]:
        body = {key: value for key, value in BASES[route].items() if key != name}
        error = client.post(route, json=body).json()["error"]
        assert f"'type': 'missing', 'loc': ('body', '{name}'), 'msg': 'Field required'" in error["message"]
        assert error["param"] == f"body.{name}"
    error = client.post("/tokenize", json={"model": "a"}).json()["error"]  # (vLLM's union: neither member takes it)
    assert error["message"].startswith("2 validation errors:\n  {'type': 'missing', 'loc': ('body', "
                                       "'function-wrap[__log_extra_fields__()]', 'prompt'), 'msg': 'Field required'")
    assert error["param"] == "body.prompt"
    for salt in (5, "", ["s"]):  # vLLM's check_cache_salt_support runs before the fields' types
        error = client.post("/v1/completions", json={**BASES["/v1/completions"], "cache_salt": salt}).json()["error"]
        assert "'msg': \"Value error, Parameter 'cache_salt' must be a non-empty string if provided.\"" in \
            error["message"] and error["param"] == "body"
    for route, name in [("/v1/completions", "logprobs"), ("/v1/completions", "prompt_logprobs"),
                        ("/v1/chat/completions", "top_logprobs"), ("/v1/chat/completions", "prompt_logprobs")]:
        error = client.post(route, json={**BASES[route], name: "1"}).json()["error"]  # (vLLM's check_logprobs)
        assert f"'msg': 'Value error, `{name}` must be an integer. (parameter={name}, value=1)'" in error["message"]
        assert error["param"] == name
    mixed = client.post("/v1/completions", json={**BASES["/v1/completions"], "prompt": ["D", [97]]}).json()["error"]
    assert "'loc': ('body', 'prompt', 'list[int]', 0), 'msg': 'Input should be a valid integer" in mixed["message"]
    nested = client.post("/v1/completions", json={**BASES["/v1/completions"], "vllm_xargs": {"k": {"x": 1}}})
    assert "'loc': ('body', 'vllm_xargs', 'k', 'str'), 'msg': 'Input should be a valid string'" in \
        nested.json()["error"]["message"]


SCHEMA = {"type": "object"}
NESTED = [  # (route, field, value, whether vLLM's nested models take it): response_format (ResponseFormat |
    # StructuralTagResponseFormat | LegacyStructuralTagResponseFormat), structured_outputs (StructuredOutputsParams),
    # tools (list[ChatCompletionToolsParam]), sent with tool_choice "none" (no tool call asked), messages (its
    # message union: CustomChatCompletionMessageParam's keys are the widest)
    ("/v1/completions", "response_format", {"type": "text", "other": 1}, True),
    ("/v1/completions", "response_format", "json", False),
    ("/v1/completions", "response_format", {"type": "json_schema", "json_schema": {"name": 5}}, False),
    ("/v1/completions", "response_format", {"type": "json_schema", "json_schema": {
        "name": "n", "schema": SCHEMA, "strict": "maybe"}}, False),
    ("/v1/completions", "response_format", {"type": "json_schema", "json_schema": {"name": "n", "schema": "x"}}, False),
    ("/v1/completions", "response_format", {"type": "structural_tag"}, False),
    ("/v1/completions", "response_format", {"type": "structural_tag", "structures": [
        {"begin": "<a>", "schema": SCHEMA, "end": 5}], "triggers": ["<a>"]}, False),
    ("/v1/completions", "structured_outputs", {"choice": ["a", "b"], "disable_any_whitespace": "yes"}, True),
    ("/v1/completions", "structured_outputs", "x", False),
    ("/v1/completions", "structured_outputs", {"choice": "ab"}, False),
    ("/v1/completions", "structured_outputs", {"choice": ["a", 5]}, False),
    ("/v1/completions", "structured_outputs", {"json": 5}, False),
    ("/v1/completions", "structured_outputs", {"json_object": "maybe"}, False),
    ("/v1/chat/completions", "tools", [{"function": {"name": "f", "parameters": SCHEMA, "x": 1}}], True),
    ("/v1/chat/completions", "tools", "abc", False),
    ("/v1/chat/completions", "tools", [{"function": {"name": 5}}], False),
    ("/v1/chat/completions", "tools", [{"function": {"name": "f", "description": 5}}], False),
    ("/v1/chat/completions", "tools", [{"function": {"name": "f", "parameters": "x"}}], False),
    ("/v1/chat/completions", "tools", [{"type": "other", "function": {"name": "f"}}], False),
    ("/v1/chat/completions", "messages", [{"role": "user", "content": [{"type": "text", "text": "Hi"}], "x": 1}],
     True),
    ("/v1/chat/completions", "messages", [{"role": "user", "content": "Hi", "name": 5}], False),
    ("/v1/chat/completions", "messages", [{"role": "tool", "content": "Hi", "tool_call_id": 5}], False),
    ("/v1/chat/completions", "messages", [{"role": "user", "content": "Hi", "reasoning": ["r"]}], False),
    ("/tokenize", "messages", [{"role": "user", "content": "Hi", "name": "u"}], True),
    ("/tokenize", "messages", [{"role": "user", "content": "Hi", "name": ["u"]}], False),
    ("/tokenize", "tools", [{"function": {"name": "f", "strict": 1}}], True),
    ("/tokenize", "tools", [{"function": {}}], False),
]


def test_nested_fields_are_checked_as_vllms_nested_models(client):
    wrong = []
    for route, name, value, taken in NESTED:
        base = {**BASES["/tokenize chat" if route == "/tokenize" else route], "tool_choice": "none"}
        response = client.post(route, json={**base, name: value})
        error = response.json().get("error", {}) if response.status_code == 400 else {}
        if response.status_code != 200 if taken else not (
                f"'{name}'" in error["message"] if route == "/tokenize" else  # (a union: a member's label in loc)
                error.get("param", "").startswith(f"body.{name}") and f"'loc': ('body', '{name}'" in error["message"]):
            wrong.append((route, name, value, response.status_code, response.text[:200]))
    assert wrong == []


def test_vllms_own_checks_read_the_body_as_sent_before_the_types(client):
    """vLLM's models' mode="before" validators see the raw body: "false" and "no" are true to them. So a stream
    "false" (a non-streamed answer) may carry stream_options, and both generation flags sent as "no" are refused."""
    body = {**BASES["/v1/completions"], "stream": "false", "stream_options": {"include_usage": True}}
    answer = client.post("/v1/completions", json=body)
    assert answer.status_code == 200 and answer.json()["object"] == "text_completion", answer.text
    error = client.post("/v1/completions", json={**body, "stream": 0}).json()["error"]
    assert "'msg': 'Value error, Stream options can only be defined when `stream=True`. (parameter=stream_options)'" \
        in error["message"] and error["param"] == "stream_options"
    for route in ("/v1/chat/completions", "/tokenize chat"):
        flags = {**BASES[route], "continue_final_message": "no", "add_generation_prompt": "no"}
        error = client.post(route.split()[0], json=flags).json()["error"]
        assert "'msg': 'Value error, Cannot set both `continue_final_message` and `add_generation_prompt` to True.'" \
            in error["message"], route
