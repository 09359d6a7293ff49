"""`minilora serve` refuses a body its pydantic model refuses as vLLM 0.24 does: FastAPI raises RequestValidationError
and vLLM's validation_exception_handler (vllm/entrypoints/serve/utils/server_utils.py) answers it. Before (r16),
minilora answered with its own digest of pydantic's errors, as another error type:

| what a user sends                      | before (r16)                     | now (vLLM 0.24's)                        |
|----------------------------------------|----------------------------------|------------------------------------------|
| {"max_tokens": "x"}                    | BadRequestError "max_tokens:     | "Bad Request", "1 validation error:\n    |
|                                        |  Input should be a valid         |  {'type': 'int_parsing', 'loc': ('body', |
|                                        |  integer, ... got 'x'", param    |  'max_tokens'), ...}" + the endpoint +   |
|                                        |  max_tokens                      |  the errors list, param body.max_tokens  |
| stream_options without stream (a model | BadRequestError, vLLM's words    | "Bad Request": pydantic's value_error,   |
|  validator's VLLMValidationError)      |                                  |  param stream_options                    |
| cache_salt "" (its ValueError)         | param cache_salt                 | param "body" (the error's loc)           |
| /tokenize {} (no member takes it)      | minilora's "prompt: Field        | both members' errors, each member named  |
|                                        |  required (TokenizeCompletion... |  'function-wrap[__log_extra_fields__()]' |
|                                        |  Request) or ..."                |  (vLLM's wrap validator)                 |

The oracle: pydantic's own errors for vLLM's declared type of the field (transcribed as in test_serve_types_r15),
located as FastAPI locates them, and vLLM 0.24's handler and FastAPI's ValidationException.__str__ transcribed below
(FastAPI prints the endpoint that refused the body: here minilora's route function, as FastAPI finds it). The
official openai client raises openai.BadRequestError for each, as against vLLM.
"""
import dataclasses
import inspect
import json
import re
from typing import Annotated, Literal

import pytest

pydantic = pytest.importorskip("pydantic")
pytest.importorskip("starlette")
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, model_validator  # noqa: E402
from test_serve_r16 import client  # noqa: E402,F401  (the served tiny model, a module-scoped fixture)

MESSAGES = [{"role": "user", "content": "Hi"}]
COMPLETION = {"model": "a", "prompt": "Dan", "max_tokens": 1}
CHAT = {"model": "a", "messages": MESSAGES, "max_tokens": 1}


class VLLMValidationError(ValueError):  # vllm/exceptions.py's, as its models' checks raise it
    def __init__(self, message, *, parameter=None, value=None):
        super().__init__(message)
        self.parameter, self.value = parameter, value

    def __str__(self):
        extras = [f"{k}={v}" for k, v in (("parameter", self.parameter), ("value", self.value)) if v is not None]
        return f"{super().__str__()} ({', '.join(extras)})" if extras else super().__str__()


# --- vLLM 0.24's validation_exception_handler over FastAPI's RequestValidationError, transcribed ------------------
INTERNAL = {"function-wrap", "function-after", "function-before", "function-plain", "json-or-python", "lax-or-strict",
            "chain", "default", "nullable", "tagged-union", "union", "call", "arguments", "is-instance",
            "is-subclass", "callable", "str", "int", "float", "bool", "bytes", "bytearray", "list", "tuple", "dict",
            "set", "frozenset", "complex", "none", "nonetype"}


def clean_loc_for_param(loc):
    parts = [str(p) for p in loc if not re.search(r"[\[\]{}()]", str(p)) and str(p).lower() not in INTERNAL]
    return ".".join(parts) if parts else ".".join(str(p) for p in loc)


def fastapi_str(errors, endpoint):
    message = f"{len(errors)} validation error{'s' if len(errors) != 1 else ''}:\n"
    for err in errors:
        message += f"  {err}\n"
    message += f'\n  File "{endpoint["file"]}", line {endpoint["line"]}, in {endpoint["function"]}'
    message += f'\n    {endpoint["path"]}'
    return message.rstrip()


def vllm_answer(errors, endpoint):
    param = None
    for error in errors:
        if "ctx" in error and "error" in error["ctx"] and isinstance(error["ctx"]["error"], VLLMValidationError):
            param = error["ctx"]["error"].parameter
            break
    if param is None and errors:
        param = clean_loc_for_param(errors[0]["loc"])
    exc_str, errors_str = fastapi_str(errors, endpoint), str(errors)
    message = f"{exc_str} {errors_str}" if errors and errors_str and errors_str != exc_str else exc_str
    return {"message": re.sub(r" at 0x[0-9a-f]+>", ">", message), "type": "Bad Request", "param": param, "code": 400}


def endpoint_of(app, path):
    """FastAPI's endpoint context of the route serving ``path`` (_extract_endpoint_context of its function)."""
    function = next(route.endpoint for route in app.routes if route.path == path).__closure__
    handler = next(cell.cell_contents for cell in function if inspect.ismethod(cell.cell_contents))
    return {"file": inspect.getsourcefile(handler), "line": inspect.getsourcelines(handler)[1],
            "function": handler.__name__, "path": f"POST {path}"}


def field_errors(name, kind, value):
    """FastAPI's errors for a body whose one bad field is ``name``: pydantic's, located under ("body", name)."""
    with pytest.raises(pydantic.ValidationError) as refused:
        TypeAdapter(kind).validate_python(value, from_attributes=True)
    return [{**e, "loc": ("body", name, *e["loc"])} for e in refused.value.errors(include_url=False)]


def check_errors(body, check):
    """``check`` raised by one of vLLM's model validators on ``body``, as FastAPI lists it."""
    return [{"type": "value_error", "loc": ("body",), "msg": f"Value error, {check}", "input": body,
             "ctx": {"error": check}}]


def refusal(client, route, body):
    response = client.post(route, json=body)
    assert response.status_code == 400, response.text
    return response.json()["error"]


INT, FLOAT, BOOL, STR = int | None, float | None, bool | None, str | None
BAD_FIELDS = [  # (route, field, vLLM 0.24's type, a value it refuses)
    ("/v1/completions", "max_tokens", INT, "x"),
    ("/v1/completions", "stop", str | list[str] | None, 5),
    ("/v1/completions", "stop", str | list[str] | None, ["a", 5]),
    ("/v1/completions", "n", int, 5.5),
    ("/v1/completions", "temperature", FLOAT, [0]),
    ("/v1/completions", "logit_bias", dict[str, float] | None, {"65": "x"}),
    ("/v1/completions", "seed", Annotated[int, Field(ge=-2**63, le=2**63 - 1)] | None, 2**64),
    ("/v1/completions", "echo", BOOL, "maybe"),
    ("/v1/completions", "prompt", list[int] | list[list[int]] | str | list[str] | None, ["D", [97]]),
    ("/v1/completions", "model", STR, 5),
    ("/v1/chat/completions", "logprobs", BOOL, "sometimes"),
    ("/v1/chat/completions", "reasoning_effort", Literal["low", "medium", "high"] | None, "minimal"),
    ("/v1/chat/completions", "documents", list[dict[str, str]] | None, [{"title": 1}]),
    ("/v1/chat/completions", "add_generation_prompt", bool, None),
]


@pytest.mark.parametrize("route, name, kind, value", BAD_FIELDS,
                         ids=[f"{r.split('/')[-1]}-{n}={v!r}" for r, n, _, v in BAD_FIELDS])
def test_a_field_its_type_refuses_is_vllms_request_validation_answer(client, route, name, kind, value):
    base = COMPLETION if route == "/v1/completions" else CHAT
    error = refusal(client, route, {**base, name: value})
    assert error == vllm_answer(field_errors(name, kind, value), endpoint_of(client.app, route))


@pytest.mark.parametrize("route, extra, check", [
    ("/v1/completions", {"stream_options": {"include_usage": True}},
     VLLMValidationError("Stream options can only be defined when `stream=True`.", parameter="stream_options")),
    ("/v1/completions", {"logprobs": "2"},
     VLLMValidationError("`logprobs` must be an integer.", parameter="logprobs", value="2")),
    ("/v1/chat/completions", {"top_logprobs": "1"},
     VLLMValidationError("`top_logprobs` must be an integer.", parameter="top_logprobs", value="1")),
    ("/v1/completions", {"prompt": None},
     VLLMValidationError("Either prompt or prompt_embeds must be provided and non-empty.", parameter="prompt")),
    ("/v1/completions", {"cache_salt": ""},
     ValueError("Parameter 'cache_salt' must be a non-empty string if provided.")),
    ("/v1/chat/completions", {"continue_final_message": True, "add_generation_prompt": True},
     ValueError("Cannot set both `continue_final_message` and `add_generation_prompt` to True.")),
    ("/v1/chat/completions", {"tool_choice": "required"},
     ValueError("When using `tool_choice`, `tools` must be set.")),
    # (the rest of check_logprobs: minilora's app.py checked these after validation, as BadRequestErrors, r16)
    ("/v1/completions", {"logprobs": -1},
     VLLMValidationError("`logprobs` must be a positive value.", parameter="logprobs", value=-1)),
    ("/v1/completions", {"prompt_logprobs": -2},
     VLLMValidationError("`prompt_logprobs` must be a positive value or -1.", parameter="prompt_logprobs", value=-2)),
    ("/v1/completions", {"prompt_logprobs": 1, "stream": True},
     VLLMValidationError("`prompt_logprobs` are not available when `stream=True`.", parameter="prompt_logprobs")),
    ("/v1/chat/completions", {"top_logprobs": 1.5},  # (before its type refuses 1.5: the validator runs first)
     VLLMValidationError("when using `top_logprobs`, `logprobs` must be set to true.", parameter="top_logprobs")),
    ("/v1/chat/completions", {"top_logprobs": -3, "logprobs": True},
     VLLMValidationError("`top_logprobs` must be a positive value.", parameter="top_logprobs", value=-3)),
], ids=["stream_options", "logprobs", "top_logprobs", "prompt", "cache_salt", "both_flags", "tool_choice",
        "logprobs_negative", "prompt_logprobs_negative", "prompt_logprobs_stream", "top_logprobs_alone",
        "top_logprobs_negative"])
def test_a_model_validators_refusal_is_vllms_request_validation_answer(client, route, extra, check):
    body = {**(COMPLETION if route == "/v1/completions" else CHAT), **extra}
    if "prompt" in extra:
        body = {key: value for key, value in body.items() if key != "prompt"}
    error = refusal(client, route, body)
    assert error == vllm_answer(check_errors(body, check), endpoint_of(client.app, route))


class OpenAIBaseModel(BaseModel):  # vLLM's: its wrap validator names each member of a union of its models
    model_config = ConfigDict(extra="allow")

    @model_validator(mode="wrap")
    @classmethod
    def __log_extra_fields__(cls, data, handler):
        return handler(data)


class TokenizeCompletionRequest(OpenAIBaseModel):
    model: str | None = None
    prompt: str
    add_special_tokens: bool = True
    return_token_strs: bool | None = False


class TokenizeChatRequest(OpenAIBaseModel):
    model: str | None = None
    messages: list
    add_generation_prompt: bool = True
    return_token_strs: bool | None = False


@pytest.mark.parametrize("body", [{}, {"model": "a"}, {"prompt": 5}, {"messages": MESSAGES, "return_token_strs": "x"}])
def test_tokenize_that_no_member_takes_lists_each_members_errors_as_vllm(client, body):
    with pytest.raises(pydantic.ValidationError) as refused:
        TypeAdapter(TokenizeCompletionRequest | TokenizeChatRequest).validate_python(body, from_attributes=True)
    errors = [{**e, "loc": ("body", *e["loc"])} for e in refused.value.errors(include_url=False)]
    # (messages' items: vLLM's message union, whose errors the transcription leaves out; none here)
    assert refusal(client, "/tokenize", body) == vllm_answer(errors, endpoint_of(client.app, "/tokenize"))


@pytest.mark.parametrize("route, body", [("/detokenize", {"tokens": [72, -1]}),
                                         ("/v1/load_lora_adapter", {"lora_name": "c"}),
                                         ("/v1/unload_lora_adapter", {"lora_name": 5})])
def test_the_other_routes_bodies_are_refused_as_vllms(client, route, body):
    name, kind, value = {"/detokenize": ("tokens", list[Annotated[int, Field(ge=0, le=2**63 - 1)]], [72, -1]),
                         "/v1/unload_lora_adapter": ("lora_name", str, 5)}.get(route, (None, None, None))
    errors = field_errors(name, kind, value) if name else [
        {"type": "missing", "loc": ("body", "lora_path"), "msg": "Field required", "input": body}]
    assert refusal(client, route, body) == vllm_answer(errors, endpoint_of(client.app, route))


def test_the_openai_client_raises_bad_request_error_with_vllms_type_and_param(client):
    openai = pytest.importorskip("openai")
    api = openai.OpenAI(base_url="http://testserver/v1", api_key="x", http_client=client, max_retries=0)
    with pytest.raises(openai.BadRequestError) as err:
        api.completions.create(model="a", prompt="Dan", max_tokens=1, extra_body={"top_k": "many"})
    assert (err.value.status_code, err.value.type, err.value.param, err.value.code) == (
        400, "Bad Request", "body.top_k", "400")
    assert err.value.body["message"].startswith("1 validation error:\n  {'type': 'int_parsing', 'loc': ('body', "
                                                "'top_k'), 'msg': 'Input should be a valid integer, unable to parse")
    with pytest.raises(openai.BadRequestError) as err:
        api.chat.completions.create(model="a", messages=MESSAGES, max_tokens=1, stream_options={"include_usage": True})
    assert (err.value.type, err.value.param) == ("Bad Request", "stream_options")
    with pytest.raises(openai.BadRequestError) as err:  # (the engine's own check: vLLM's serving code, not FastAPI)
        api.chat.completions.create(model="a", messages=MESSAGES, max_tokens=1, temperature=3)
    assert (err.value.type, err.value.param) == ("BadRequestError", "temperature")


@dataclasses.dataclass
class StructuredOutputsParams:  # vLLM 0.24's (sampling_params.py), as pydantic validates a request's field of it
    json: str | dict | None = None
    regex: str | None = None
    choice: list[str] | None = None
    grammar: str | None = None
    json_object: bool | None = None
    disable_any_whitespace: bool = False
    disable_additional_properties: bool = False
    whitespace_pattern: str | None = None
    structural_tag: str | None = None
    _backend: str | None = dataclasses.field(default=None, init=False)
    _backend_was_auto: bool = dataclasses.field(default=False, init=False)

    def __post_init__(self):
        count = sum(getattr(self, k) is not None for k in ("json", "regex", "choice", "grammar", "json_object",
                                                           "structural_tag"))
        if count > 1:
            raise ValueError(f"You can only use one kind of structured outputs constraint but multiple are specified: "
                             f"{self.__dict__}")
        if count < 1:
            raise ValueError(f"You must use one kind of structured outputs constraint but none are specified: "
                             f"{self.__dict__}")


@pytest.mark.parametrize("kinds", [{"regex": "a", "choice": ["a"]}, {}, {"disable_any_whitespace": True}])
def test_structured_outputs_of_not_one_kind_are_refused_as_vllms_dataclass_refuses_them(client, kinds):
    body = {**COMPLETION, "structured_outputs": kinds}
    errors = field_errors("structured_outputs", StructuredOutputsParams | None, kinds)
    assert refusal(client, "/v1/completions", body) == vllm_answer(errors, endpoint_of(client.app, "/v1/completions"))
    body = {**CHAT, "structured_outputs": kinds}  # (a chat's own check_structured_outputs_count comes first)
    check = ValueError("You can only use one kind of constraints for structured outputs ('json', 'regex' or 'choice').")
    errors = check_errors(body, check) if len(kinds) > 1 else field_errors("structured_outputs",
                                                                           StructuredOutputsParams | None, kinds)
    assert refusal(client, "/v1/chat/completions", body) == vllm_answer(errors, endpoint_of(client.app,
                                                                                          "/v1/chat/completions"))


class CompletionRequest(OpenAIBaseModel):  # (enough of vLLM's for what pydantic says of a body that is no object)
    prompt: str | None = None


@pytest.mark.parametrize("raw", [b'{"prompt": "Dan",', b"{bad json", b"", b"[1, 2]", b"5", b"\xff\xfe{"])
def test_a_body_that_is_no_json_object_is_refused_as_fastapi_and_vllm_refuse_it(client, raw):
    """FastAPI parses the body before validating it: a JSON decode error and a body left out are its
    RequestValidationError (vLLM's handler answers it), JSON that is no object the model's refusal, and bytes that
    are no text its HTTPException 'There was an error parsing the body' (vLLM: type "Bad Request", param null)."""
    response = client.post("/v1/completions", content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 400, response.text
    endpoint = endpoint_of(client.app, "/v1/completions")
    if raw == b"\xff\xfe{":
        want = {"message": "There was an error parsing the body", "type": "Bad Request", "param": None, "code": 400}
    elif not raw:
        want = vllm_answer([{"type": "missing", "loc": ("body",), "msg": "Field required", "input": None}], endpoint)
    else:
        try:
            body = json.loads(raw)
        except json.JSONDecodeError as exc:
            want = vllm_answer([{"type": "json_invalid", "loc": ("body", exc.pos), "msg": "JSON decode error",
                                 "input": {}, "ctx": {"error": exc.msg}}], endpoint)
        else:
            with pytest.raises(pydantic.ValidationError) as refused:
                TypeAdapter(CompletionRequest).validate_python(body, from_attributes=True)
            want = vllm_answer([{**e, "loc": ("body", *e["loc"])} for e in refused.value.errors(include_url=False)],
                               endpoint)
    assert response.json()["error"] == want


@pytest.mark.parametrize("route", ["/v1/completions", "/v1/chat/completions"])
@pytest.mark.parametrize("echo", [False, True])
def test_a_beam_search_of_max_tokens_0_answers_its_one_beam_as_vllms(client, route, echo):
    """vLLM's BeamSearchParams checks nothing (no SamplingParams' 'max_tokens must be at least 1'), and its
    beam_search runs range(max_tokens) steps: none, so its answer is the one beam it started with, the prompt,
    whatever n: one choice of no tokens, finish_reason "length" (minilora refused it, r16)."""
    base = COMPLETION if route == "/v1/completions" else CHAT
    body = {**base, "use_beam_search": True, "n": 2, "max_tokens": 0, "return_token_ids": True}
    if echo and route == "/v1/completions":
        body["echo"] = True  # (the prompt's text is left out with return_token_ids, as vLLM's)
    response = client.post(route, json=body)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert len(answer["choices"]) == 1 and answer["choices"][0]["finish_reason"] == "length"
    assert answer["usage"]["completion_tokens"] == 0
    choice = answer["choices"][0]
    assert (choice["text"] if route == "/v1/completions" else choice["message"]["content"]) == ""
