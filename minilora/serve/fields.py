"""A request body's fields, read as vLLM's OpenAI server reads them: its pydantic request models (vLLM 0.24:
``CompletionRequest`` and ``ChatCompletionRequest`` of vllm/entrypoints/openai/{completion,chat_completion}/
protocol.py, ``TokenizeCompletionRequest``, ``TokenizeChatRequest``, ``DetokenizeRequest``, the LoRA routes'),
declared here with vLLM's field types and validated by pydantic itself in its lax Python mode, as FastAPI
validates vLLM's: an int field takes ``5``, ``5.0``, ``"5"``, ``true``, not ``5.5``; a list field takes no string;
``null`` only where vLLM's field is Optional; a Literal only its values; a dict's values their declared types.

* A name vLLM's model does not have is ignored, with vLLM's warning in the log ("The following fields were
  present in the request but ignored: {...}"): its models allow extra fields, as OpenAI's API does.
* A value its field's type refuses is a 400 naming the field (``param``): ``"NAME: <pydantic's message>, got
  VALUE"`` (a list item's or a dict value's path is dotted: ``stop_token_ids.1``); a field left out that vLLM
  requires is ``"NAME: Field required"``.
* Nested models are vLLM's too (``stream_options``, ``response_format``'s three, ``structured_outputs``, ``tools``,
  ``messages``: the keys of a message); the fields whose shape app.py / structured.py check in vLLM's own words
  (``tool_choice``: its check_tool_usage reads it first) or refuse unless "off" (``logits_processors``,
  ``prompt_embeds``) are taken as sent. vLLM's own mode="before" validators (cache_salt, stream_options without
  stream, both generation flags, a logprobs count sent as text) are the models' too: they read the body as sent,
  before the types.

``read_fields(body, Model)`` returns the body's fields of ``Model`` as pydantic made them (nested models as dicts
of what was sent, by their JSON names: ``"schema"``) and drops every other name; the ranges and the meaning of each
value are app.py's.
"""
import dataclasses
import logging
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from typing_extensions import Required, TypedDict  # (pydantic reads typing's TypedDict from Python 3.12 on only)

from .engine import EngineError, validation_error

__all__ = ["read_fields", "log_ignored", "CompletionRequest", "ChatCompletionRequest", "TokenizeCompletionRequest",
           "TokenizeChatRequest", "DetokenizeRequest", "LoadLoRAAdapterRequest", "UnloadLoRAAdapterRequest"]

_LOG = logging.getLogger("minilora.serve")
_INT64 = dict(ge=-2**63, le=2**63 - 1)  # vLLM's torch.iinfo(torch.long) bounds (seed, truncate_prompt_tokens)


class _Model(BaseModel):
    """vLLM's OpenAIBaseModel: names it does not declare are allowed (and logged by read_fields)."""
    model_config = ConfigDict(extra="allow")


class StreamOptions(_Model):
    include_usage: bool | None = True
    continuous_usage_stats: bool | None = False


class JsonSchemaResponseFormat(_Model):
    name: str
    description: str | None = None
    json_schema: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None


class ResponseFormat(_Model):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaResponseFormat | None = None


class LegacyStructuralTag(_Model):
    begin: str
    structural_tag_schema: dict[str, Any] | None = Field(default=None, alias="schema")
    end: str


class LegacyStructuralTagResponseFormat(_Model):
    type: Literal["structural_tag"]
    structures: list[LegacyStructuralTag]
    triggers: list[str]


class StructuralTagResponseFormat(_Model):
    type: Literal["structural_tag"]
    format: Any  # (structural_tag.py reads the tree)


@dataclasses.dataclass
class StructuredOutputsParams:
    """vLLM's dataclass (sampling_params.py; its __post_init__'s one-constraint check is structured.py's)."""
    json: str | dict | None = None
    regex: str | None = None
    choice: list[str] | None = None
    grammar: str | None = None
    json_object: bool | None = None
    disable_any_whitespace: bool = False
    disable_additional_properties: bool = False
    whitespace_pattern: str | None = None
    structural_tag: str | None = None


class ChatMessage(TypedDict, total=False):
    """A chat message as vLLM's message union takes it: the widest of its members, CustomChatCompletionMessageParam
    (a role of any name; OpenAI's assistant message adds content null). Its content parts are app.py's to read."""
    __pydantic_config__ = ConfigDict(extra="allow")  # (the keys a chat template reads beside these)
    role: Required[str]
    content: str | list[Any] | None
    name: str
    tool_call_id: str | None
    tool_calls: list[dict[str, Any]] | None
    reasoning: str | None


class FunctionDefinition(_Model):
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None


class ChatCompletionToolsParam(_Model):
    type: Literal["function"] = "function"
    function: FunctionDefinition


_ResponseFormat = ResponseFormat | StructuralTagResponseFormat | LegacyStructuralTagResponseFormat | None
_Tools = list[ChatCompletionToolsParam] | None
_Stop = str | list[str] | None
_XArgs = dict[str, str | int | float | list[str | int | float]] | None


class _Generate(_Model):
    """The fields vLLM's completion and chat request models both declare, with their types."""
    model: str | None = None
    frequency_penalty: float | None = 0.0
    logit_bias: dict[str, float] | None = None
    presence_penalty: float | None = 0.0
    response_format: _ResponseFormat = None
    seed: Annotated[int, Field(**_INT64)] | None = None
    stop: _Stop = []
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    temperature: float | None = None
    top_p: float | None = None
    user: str | None = None
    use_beam_search: bool = False
    top_k: int | None = None
    min_p: float | None = None
    repetition_penalty: float | None = None
    length_penalty: float = 1.0
    stop_token_ids: list[int] | None = []
    include_stop_str_in_output: bool = False
    ignore_eos: bool = False
    min_tokens: int = 0
    skip_special_tokens: bool = True
    spaces_between_special_tokens: bool = True
    truncate_prompt_tokens: Annotated[int, Field(ge=-1, le=2**63 - 1)] | None = None
    prompt_logprobs: int | None = None
    allowed_token_ids: list[int] | None = None
    bad_words: list[str] = []
    structured_outputs: StructuredOutputsParams | None = None
    priority: int = 0
    request_id: str = ""  # (vLLM's: a random id; read_fields returns only the fields a body gives)
    logits_processors: Any = None  # (app.py: only its "off" values)
    return_tokens_as_token_ids: bool | None = None
    return_token_ids: bool | None = None
    cache_salt: str | None = None
    kv_transfer_params: dict[str, Any] | None = None
    vllm_xargs: _XArgs = None
    max_repetition_pattern_size: int = 0
    min_repetition_pattern_size: int = 0
    repetition_min_count: int = 0

    # vLLM's own checks (its models' mode="before" validators): they read the body as sent, before the fields'
    # types coerce it ("stream": "false" is true to them), and answer in vLLM's words (EngineError: pydantic lets
    # it through as raised)
    @model_validator(mode="before")
    @classmethod
    def check_cache_salt_support(cls, data):
        salt = data.get("cache_salt")
        if salt is not None and (not isinstance(salt, str) or not salt):
            raise EngineError(400, "Parameter 'cache_salt' must be a non-empty string if provided.", "cache_salt")
        return data

    @model_validator(mode="before")
    @classmethod
    def validate_stream_options(cls, data):
        if data.get("stream_options") and not data.get("stream"):  # (an empty one is let through)
            raise validation_error("Stream options can only be defined when `stream=True`.", "stream_options")
        return data


def _counts_are_numbers(*names):
    """vLLM's check_logprobs' first check: it compares these counts as sent, so a text one (even "2") is its 400,
    never coerced."""
    def check(data):
        for name in names:
            value = data.get(name)
            if value is not None and not isinstance(value, (int, float)):
                raise validation_error(f"`{name}` must be an integer.", name, value)
        return data
    return model_validator(mode="before")(check)


def _check_generation_prompt(data):
    if data.get("continue_final_message") and data.get("add_generation_prompt"):
        raise validation_error("Cannot set both `continue_final_message` and `add_generation_prompt` to True.")
    return data


class CompletionRequest(_Generate):
    prompt: list[int] | list[list[int]] | str | list[str] | None = None
    echo: bool | None = False
    logprobs: int | None = None
    max_tokens: int | None = 16
    n: int = 1
    suffix: str | None = None
    prompt_embeds: Any = None  # (app.py: refused unless null, as vLLM without --enable-prompt-embeds)
    add_special_tokens: bool = True
    check_logprobs = _counts_are_numbers("prompt_logprobs", "logprobs")


class ChatCompletionRequest(_Generate):
    messages: list[ChatMessage]
    logprobs: bool | None = False
    top_logprobs: int | None = 0
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    n: int | None = 1
    tools: _Tools = None
    tool_choice: Any = "none"  # (structured.py: vLLM's check_tool_usage reads it before its type)
    reasoning_effort: Literal["low", "medium", "high"] | None = None
    include_reasoning: bool = True
    parallel_tool_calls: bool | None = True
    echo: bool = False
    add_generation_prompt: bool = True
    continue_final_message: bool = False
    add_special_tokens: bool = False
    documents: list[dict[str, str]] | None = None
    chat_template: str | None = None
    chat_template_kwargs: dict[str, Any] | None = None
    mm_processor_kwargs: dict[str, Any] | None = None
    check_generation_prompt = model_validator(mode="before")(_check_generation_prompt)
    check_logprobs = _counts_are_numbers("prompt_logprobs", "top_logprobs")


class TokenizeCompletionRequest(_Model):
    model: str | None = None
    prompt: str
    add_special_tokens: bool = True
    return_token_strs: bool | None = False


class TokenizeChatRequest(_Model):
    model: str | None = None
    messages: list[ChatMessage]
    add_generation_prompt: bool = True
    return_token_strs: bool | None = False
    continue_final_message: bool = False
    add_special_tokens: bool = False
    chat_template: str | None = None
    chat_template_kwargs: dict[str, Any] | None = None
    mm_processor_kwargs: dict[str, Any] | None = None
    tools: _Tools = None
    media_io_kwargs: dict[str, Any] | None = None
    check_generation_prompt = model_validator(mode="before")(_check_generation_prompt)


class DetokenizeRequest(_Model):
    model: str | None = None
    tokens: list[int]


class LoadLoRAAdapterRequest(BaseModel):
    """vLLM's (a plain BaseModel: other names are ignored without a warning). A name or path left out is taken
    as empty, which app.py refuses in vLLM's words for an empty one."""
    lora_name: str = ""
    lora_path: str = ""
    load_inplace: bool = False


class UnloadLoRAAdapterRequest(BaseModel):
    lora_name: str = ""
    lora_int_id: int | None = None


# vLLM <= 0.11's structured-output fields, removed in 0.12: vLLM 0.24 ignores them as any unknown name (its output
# is then unconstrained), and names them in a warning of their own (vllm#54285); `structured_outputs` replaces them
_REMOVED_GUIDED = {"guided_json": "json", "guided_regex": "regex", "guided_choice": "choice",
                   "guided_grammar": "grammar", "guided_decoding_backend": None, "guided_whitespace_pattern":
                   "whitespace_pattern"}


def log_ignored(names):
    """vLLM's warning for the names of a request (or of its stream_options) that its model does not have."""
    if names:
        _LOG.warning("The following fields were present in the request but ignored: %s", set(names))
    removed = sorted(set(names) & set(_REMOVED_GUIDED))
    if removed:
        _LOG.warning("The request uses %s, removed in vLLM 0.12: ignored, so the output is NOT constrained; send "
                     "\"structured_outputs\": {%s} (or OpenAI's response_format) instead", ", ".join(removed),
                     ", ".join(f'"{_REMOVED_GUIDED[name]}": ...' for name in removed if _REMOVED_GUIDED[name]))


def _refusal(exc, body):
    """A ValidationError as the 400 of its first field: pydantic's message, the value, the field as param. A
    union's refusal (one error per member type) names each member's path and message after the shared path."""
    errors = exc.errors(include_url=False)
    name = errors[0]["loc"][0]
    if errors[0]["type"] == "missing" and len(errors[0]["loc"]) == 1:
        return EngineError(400, f"{name}: Field required", name)
    own = [error for error in errors if error["loc"][0] == name]
    path = _common_path([error["loc"] for error in own])
    if len(own) == 1:
        message, value = own[0]["msg"], own[0]["input"]
    else:
        message, value = " or ".join(dict.fromkeys(
            ".".join(map(str, error["loc"][len(path):])) + ": " + error["msg"] for error in own)), body
        for key in path:
            value = value[key]
    return EngineError(400, f"{'.'.join(map(str, path))}: {message}, got {value!r}"[:500], name)


def _common_path(paths):
    """The longest path that begins each of ``paths`` (a union's member errors: the member's name comes after)."""
    common = paths[0]
    for path in paths[1:]:
        common = next((common[:i] for i, (a, b) in enumerate(zip(common, path)) if a != b), common[:len(path)])
    return common


def read_fields(body, model):
    """``body`` (a JSON object) validated as vLLM's pydantic ``model`` validates it: the fields it gives, as
    pydantic made them (a nested model as a dict of what was sent), every other name dropped and logged as
    vLLM logs it. A value the field's type refuses is a 400 naming the field."""
    if model.model_config.get("extra") == "allow":  # (vLLM's OpenAIBaseModel logs them; a plain BaseModel not)
        log_ignored(set(body) - set(model.model_fields))
    try:
        request = model.model_validate(body)
    except ValidationError as exc:
        raise _refusal(exc, body) from None
    return request.model_dump(include=request.model_fields_set & set(model.model_fields), exclude_unset=True,
                              by_alias=True)
