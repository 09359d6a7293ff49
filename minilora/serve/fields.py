"""A request body's fields, read as vLLM's OpenAI server reads them: its pydantic request models (vLLM 0.24:
``CompletionRequest`` and ``ChatCompletionRequest`` of vllm/entrypoints/openai/{completion,chat_completion}/
protocol.py, ``TokenizeCompletionRequest``, ``TokenizeChatRequest``, ``DetokenizeRequest``, the LoRA routes'),
declared here with vLLM's field types and validated by pydantic itself in its lax Python mode, as FastAPI
validates vLLM's: an int field takes ``5``, ``5.0``, ``"5"``, ``true``, not ``5.5``; a list field takes no string;
``null`` only where vLLM's field is Optional; a Literal only its values; a dict's values their declared types.

* A name vLLM's model does not have is ignored, with vLLM's warning in the log ("The following fields were
  present in the request but ignored: {...}"), written by its OpenAIBaseModel's wrap validator
  ``__log_extra_fields__`` once the model has taken the body: its models allow extra fields, as OpenAI's API does.
* A body the model refuses raises FastAPI's ``RequestValidationError``: pydantic's errors, each located under
  ``"body"`` (a union member's name in the loc as pydantic names it: ``function-wrap[__log_extra_fields__()]`` for
  each of vLLM's models, a TypedDict's class name), which app.py answers as vLLM 0.24's handler does.
* Nested models are vLLM's too (``stream_options``, ``response_format``'s three, ``structured_outputs``, ``tools``,
  ``tool_choice``, ``messages``: the keys of a message and its content parts, vLLM's part union); the fields app.py
  refuses unless "off" (``logits_processors``, ``prompt_embeds``) are taken as sent. vLLM's own mode="before"
  validators (cache_salt, stream_options without stream, both generation flags, check_logprobs,
  check_tool_usage, a prompt left out) are the models' too: they read the body as sent, before the types, and raise
  what vLLM's raise (a ValueError, or its VLLMValidationError naming the parameter): pydantic reports it as a
  value_error, and a union tries its next member.

``read_fields(body, Model)`` returns the body's fields of ``Model`` as pydantic made them (nested models as dicts
of what was sent, by their JSON names: ``"schema"``) and drops every other name; the ranges and the meaning of each
value are app.py's. ``read_union(body, Union)`` does the same for a union of models (/tokenize's), with the member
pydantic picked.
"""
import dataclasses
import functools
import logging
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator
from typing_extensions import Required, TypedDict  # (pydantic reads typing's TypedDict from Python 3.12 on only)

from .engine import VLLMValidationError

__all__ = ["read_fields", "read_union", "log_ignored", "RequestValidationError", "CompletionRequest",
           "ChatCompletionRequest", "TokenizeCompletionRequest", "TokenizeChatRequest", "TokenizeRequest",
           "DetokenizeRequest", "LoadLoRAAdapterRequest", "UnloadLoRAAdapterRequest"]

_LOG = logging.getLogger("minilora.serve")
_INT64 = dict(ge=-2**63, le=2**63 - 1)  # vLLM's torch.iinfo(torch.long) bounds (seed, truncate_prompt_tokens)


class RequestValidationError(Exception):
    """FastAPI's RequestValidationError, as vLLM's routes raise it for a body their pydantic model refuses: pydantic's
    errors (``include_url=False``), each located under ``"body"``, as FastAPI lists them. app.py answers it as vLLM's
    validation_exception_handler does (a 400 of type "Bad Request")."""

    def __init__(self, errors):
        super().__init__(errors)
        self.errors = errors


def _vllm_check(check):
    """One of vLLM's mode="before" validators: ``check(data)`` reads the body as sent and raises what vLLM's raises
    (a ValueError, or its VLLMValidationError naming the parameter), which pydantic reports as a value_error."""
    def validator(cls, data):
        return check(data) if isinstance(data, dict) else data
    validator.__name__ = check.__name__
    return model_validator(mode="before")(classmethod(validator))


class _Model(BaseModel):
    """vLLM's OpenAIBaseModel: names it does not declare are allowed, and logged once the model has taken the body
    (its wrap validator, whose name pydantic shows as a union member's in an error's loc:
    ``function-wrap[__log_extra_fields__()]``)."""
    model_config = ConfigDict(extra="allow")

    @model_validator(mode="wrap")
    @classmethod
    def __log_extra_fields__(cls, data, handler):
        result = handler(data)
        if isinstance(data, dict):
            names = set(cls.model_fields) | {field.alias for field in cls.model_fields.values() if field.alias}
            log_ignored(data.keys() - names)
        return result


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
    """vLLM's dataclass (sampling_params.py). Its __post_init__ wants one kind of constraint: pydantic runs it as it
    validates a request's ``structured_outputs``, so a refusal is the request's validation error, as vLLM's; and
    structured.py makes one again where response_format sets the kind (vLLM's dataclasses.replace)."""
    json: str | dict | None = None
    regex: str | None = None
    choice: list[str] | None = None
    grammar: str | None = None
    json_object: bool | None = None
    disable_any_whitespace: bool = False
    disable_additional_properties: bool = False
    whitespace_pattern: str | None = None
    structural_tag: str | None = None

    def __post_init__(self):
        count = sum(getattr(self, kind) is not None for kind in _CONSTRAINT_KINDS)
        if count != 1:  # (shown with the two fields vLLM's backend selection sets later, at their defaults)
            shown = {**self.__dict__, "_backend": None, "_backend_was_auto": False}
            raise ValueError(f"You {'can only' if count else 'must'} use one kind of structured outputs constraint "
                             f"but {'multiple are' if count else 'none are'} specified: {shown}")


_CONSTRAINT_KINDS = ("json", "regex", "choice", "grammar", "json_object", "structural_tag")


class _URL(TypedDict, total=False):
    url: Required[str]


class _ImageURL(_URL, total=False):
    detail: Literal["auto", "low", "high"]


class _InputAudio(TypedDict, total=False):
    data: Required[str]
    format: Required[Literal["wav", "mp3"]]


class _FileFile(TypedDict, total=False):
    file_data: str
    file_id: str
    filename: str


def _part(name, type_name, payload, **optional):
    """A content part of vLLM's union (a TypedDict, as OpenAI's and vLLM's are: other keys are ignored): ``payload``
    the key that holds its content, ``type_name`` its required "type" (None: a part without one, vLLM's simple
    forms ``{"image_url": "..."}``)."""
    keys = {**{key: Required[kind] for key, kind in payload.items()}, **optional}
    if type_name is not None:
        keys["type"] = Required[Literal[type_name]]
    return TypedDict(name, keys, total=False)


_Embeds = str | dict[str, str] | None
# vLLM's ChatCompletionContentPartParam (vllm/entrypoints/chat_utils.py): OpenAI's parts (text, image_url,
# input_audio, file), then vLLM's (audio_url, video_url, refusal, the simple URL forms, embeddings, thinking), or a
# bare string. app.py reads the text ones; the others need a multimodal model.
ContentPart = (_part("ChatCompletionContentPartTextParam", "text", {"text": str})
               | _part("ChatCompletionContentPartImageParam", "image_url", {"image_url": _ImageURL})
               | _part("ChatCompletionContentPartInputAudioParam", "input_audio", {"input_audio": _InputAudio})
               | _part("File", "file", {"file": _FileFile})
               | _part("ChatCompletionContentPartAudioParam", "audio_url", {"audio_url": _URL})
               | _part("ChatCompletionContentPartVideoParam", "video_url", {"video_url": _URL})
               | _part("ChatCompletionContentPartRefusalParam", "refusal", {"refusal": str})
               | _part("CustomChatCompletionContentSimpleImageParam", None, {"image_url": str})
               | _part("ChatCompletionContentPartImageEmbedsParam", "image_embeds", {}, image_embeds=_Embeds,
                       uuid=str | None)
               | _part("ChatCompletionContentPartAudioEmbedsParam", "audio_embeds", {}, audio_embeds=_Embeds,
                       uuid=str | None)
               | _part("CustomChatCompletionContentSimpleAudioParam", None, {"audio_url": str})
               | _part("CustomChatCompletionContentSimpleVideoParam", None, {"video_url": str})
               | _part("CustomThinkCompletionContentParam", "thinking", {"thinking": str}, closed=bool)
               | str)


class _CalledFunction(TypedDict, total=False):
    arguments: Required[str]  # (JSON text: app.py parses it for the template, as vLLM's _postprocess_messages)
    name: Required[str]


class ToolCall(TypedDict, total=False):
    """An assistant's tool call sent back (OpenAI's ChatCompletionMessageFunctionToolCallParam)."""
    id: Required[str]
    function: Required[_CalledFunction]
    type: Required[Literal["function"]]


class _CustomInput(TypedDict, total=False):
    input: Required[str]
    name: Required[str]


class CustomToolCall(TypedDict, total=False):
    """OpenAI's ChatCompletionMessageCustomToolCallParam: only an assistant message's (OpenAI's member) may hold it."""
    id: Required[str]
    custom: Required[_CustomInput]
    type: Required[Literal["custom"]]


class CustomChatCompletionMessageParam(TypedDict, total=False):
    """vLLM's CustomChatCompletionMessageParam, the widest member of its message union: a role of any name, content
    text or vLLM's parts (left out: no text; not null)."""
    __pydantic_config__ = ConfigDict(extra="allow")  # (the keys a chat template reads beside these)
    role: Required[str]
    content: str | list[ContentPart]
    name: str
    tool_call_id: str | None
    tool_calls: list[ToolCall] | None
    reasoning: str | None


class ChatCompletionAssistantMessageParam(TypedDict, total=False):
    """OpenAI's ChatCompletionAssistantMessageParam, the member of vLLM's union that takes an assistant's content
    null (beside its tool calls) and custom tool calls; other keys kept for the template, as the custom member's."""
    __pydantic_config__ = ConfigDict(extra="allow")
    role: Required[Literal["assistant"]]
    content: str | list[ContentPart] | None
    name: str
    refusal: str | None
    tool_calls: list[ToolCall | CustomToolCall]
    reasoning: str | None


# vLLM's ChatCompletionMessageParam (chat_utils.py), of the members an OpenAI-style message can be: OpenAI's assistant
# message, else vLLM's custom one (OpenAI's other roles' messages take what the custom one takes, and less)
ChatMessage = ChatCompletionAssistantMessageParam | CustomChatCompletionMessageParam


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


def _check_cache_salt(data):
    salt = data.get("cache_salt")
    if salt is not None and (not isinstance(salt, str) or not salt):
        raise ValueError("Parameter 'cache_salt' must be a non-empty string if provided.")
    return data


def _check_stream_options(data):
    if data.get("stream_options") and not data.get("stream"):  # (an empty one is let through)
        raise VLLMValidationError("Stream options can only be defined when `stream=True`.", parameter="stream_options")
    return data


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
    # types coerce it ("stream": "false" is true to them), and answer in vLLM's words
    check_cache_salt_support = _vllm_check(_check_cache_salt)
    validate_stream_options = _vllm_check(_check_stream_options)


def _check_logprobs(count):
    """vLLM's check_logprobs (a mode="before" validator) of a request whose count of top tokens is ``count`` (a
    completion's logprobs, a chat's top_logprobs): the counts are compared as sent, so a text one (even "2") is
    refused, never coerced; prompt_logprobs is not for a stream and at least -1; the count not negative; and a
    chat's top_logprobs needs logprobs true. Each a VLLMValidationError naming the count."""
    def check_logprobs(data):
        for name in ("prompt_logprobs", count):
            value = data.get(name)
            if value is not None and not isinstance(value, (int, float)):
                raise VLLMValidationError(f"`{name}` must be an integer.", parameter=name, value=value)
        prompt = data.get("prompt_logprobs")
        if prompt is not None and data.get("stream") and (prompt > 0 or prompt == -1):
            raise VLLMValidationError("`prompt_logprobs` are not available when `stream=True`.",
                                      parameter="prompt_logprobs")
        if prompt is not None and prompt < 0 and prompt != -1:
            raise VLLMValidationError("`prompt_logprobs` must be a positive value or -1.", parameter="prompt_logprobs",
                                      value=prompt)
        top = data.get(count)
        if top is not None and top < 0:
            raise VLLMValidationError(f"`{count}` must be a positive value.", parameter=count, value=top)
        if count == "top_logprobs" and top and not data.get("logprobs"):
            raise VLLMValidationError("when using `top_logprobs`, `logprobs` must be set to true.",
                                      parameter="top_logprobs")
        return data
    return _vllm_check(check_logprobs)


def _check_structured_outputs_count(data):
    """vLLM's ChatCompletionRequest.check_structured_outputs_count: at most one of json, regex and choice."""
    kinds = data.get("structured_outputs")
    if isinstance(kinds, dict) and sum(kinds.get(kind) is not None for kind in ("json", "regex", "choice")) > 1:
        raise ValueError("You can only use one kind of constraints for structured outputs ('json', 'regex' or "
                         "'choice').")
    return data


def _check_generation_prompt(data):
    if data.get("continue_final_message") and data.get("add_generation_prompt"):
        raise ValueError("Cannot set both `continue_final_message` and `add_generation_prompt` to True.")
    return data


_CORRECT_TOOL_CHOICE = 'Correct usage: `{"type": "function", "function": {"name": "my_function"}}`'


def _check_tool_usage(data):
    """vLLM's ChatCompletionRequest.check_tool_usage, in its order and words: tool_choice left out with tools given is
    "auto" (set in the body, as vLLM's sets it); a named function must be one of the tools'. The type of
    ``tool_choice`` is checked after (``ToolChoice``)."""
    tools = data.get("tools")
    if tools == []:
        raise ValueError("`tools` must not be an empty array. Either provide at least one tool or omit the field "
                         "entirely.")
    if "tool_choice" not in data and tools:
        data = {**data, "tool_choice": "auto"}
    choice = data.get("tool_choice")
    if choice is None or choice == "none":
        return data
    if tools is None:
        raise ValueError("When using `tool_choice`, `tools` must be set.")
    if choice not in ("auto", "required") and not isinstance(choice, dict):
        raise ValueError(f"Invalid value for `tool_choice`: {choice}! Only named tools, \"none\", \"auto\" or "
                         "\"required\" are supported.")
    if isinstance(choice, dict):
        _check_named_tool(choice, tools)
    return data


def _check_named_tool(choice, tools):
    function = choice.get("function")
    if not isinstance(function, dict):
        raise ValueError(f"Invalid value for `function`: `{function}` in `tool_choice`! {_CORRECT_TOOL_CHOICE}")
    if "name" not in function:
        raise ValueError(f"Expected field `name` in `function` in `tool_choice`! {_CORRECT_TOOL_CHOICE}")
    name = function["name"]
    if not isinstance(name, str) or not name:
        raise ValueError(f"Invalid `name` in `function`: `{name}` in `tool_choice`! {_CORRECT_TOOL_CHOICE}")
    # (vLLM indexes each tool's function name here, a 500 for tools of another shape: their own type refuses them
    # after this check, a 400)
    readable = isinstance(tools, list) and all(isinstance(tool, dict) and isinstance(tool.get("function"), dict)
                                               for tool in tools)
    if readable and name not in [tool["function"].get("name") for tool in tools]:
        raise ValueError("The tool specified in `tool_choice` does not match any of the specified `tools`")


class ChatCompletionNamedFunction(_Model):
    name: str


class ChatCompletionNamedToolChoiceParam(_Model):
    function: ChatCompletionNamedFunction
    type: Literal["function"] = "function"


ToolChoice = Literal["none", "auto", "required"] | ChatCompletionNamedToolChoiceParam | None


def _check_prompt_and_prompt_embeds(data):
    """vLLM's CompletionRequest.validate_prompt_and_prompt_embeds: a prompt left out, null or "" (a list of prompts
    may hold "": its BOS) with no prompt_embeds is refused."""
    prompt, embeds = data.get("prompt"), data.get("prompt_embeds")
    if (prompt is None or prompt == "") and (embeds is None or embeds == []):
        raise VLLMValidationError("Either prompt or prompt_embeds must be provided and non-empty.", parameter="prompt")
    return data


def _normalize_null_max_tokens(data):
    """vLLM's CompletionRequest.normalize_null_max_tokens (vllm#45491): a completion's max_tokens null is taken as
    left out (OpenAI's SDK may send the null of a parameter it was given as None); a chat's null stays the rest of
    the context."""
    return {key: value for key, value in data.items() if key != "max_tokens"} if data.get("max_tokens") is None \
        else data


class CompletionRequest(_Generate):
    prompt: list[int] | list[list[int]] | str | list[str] | None = None
    echo: bool | None = False
    logprobs: int | None = None
    max_tokens: int | None = 16
    n: int = 1
    suffix: str | None = None
    prompt_embeds: Any = None  # (app.py: refused unless null, as vLLM without --enable-prompt-embeds)
    add_special_tokens: bool = True
    check_logprobs = _check_logprobs("logprobs")
    validate_prompt_and_prompt_embeds = _vllm_check(_check_prompt_and_prompt_embeds)
    normalize_null_max_tokens = _vllm_check(_normalize_null_max_tokens)


class ChatCompletionRequest(_Generate):
    messages: list[ChatMessage]
    logprobs: bool | None = False
    top_logprobs: int | None = 0
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    n: int | None = 1
    tools: _Tools = None
    tool_choice: ToolChoice = "none"
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
    check_structured_outputs_count = _vllm_check(_check_structured_outputs_count)
    check_tool_usage = _vllm_check(_check_tool_usage)
    check_generation_prompt = _vllm_check(_check_generation_prompt)
    check_logprobs = _check_logprobs("top_logprobs")


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
    check_generation_prompt = _vllm_check(_check_generation_prompt)


TokenizeRequest = TokenizeCompletionRequest | TokenizeChatRequest  # (vLLM's union: pydantic picks the member)


class DetokenizeRequest(_Model):
    model: str | None = None
    tokens: list[Annotated[int, Field(ge=0, le=2**63 - 1)]]


class LoadLoRAAdapterRequest(BaseModel):
    """vLLM's (a plain BaseModel: other names are ignored without a warning). A name or path left out is pydantic's
    "Field required"; an empty one app.py refuses in vLLM's words."""
    lora_name: str
    lora_path: str
    load_inplace: bool = False


class UnloadLoRAAdapterRequest(BaseModel):
    lora_name: str
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


@functools.cache
def _adapter(kind):
    return TypeAdapter(kind)


def _validated(kind, body):
    """``body`` validated as FastAPI validates a route's body parameter of type ``kind`` (a model or a union of
    them): pydantic in lax Python mode, ``from_attributes=True``; a refusal is FastAPI's RequestValidationError."""
    try:
        return _adapter(kind).validate_python(body, from_attributes=True)
    except ValidationError as exc:
        raise RequestValidationError([{**error, "loc": ("body", *error["loc"])}
                                      for error in exc.errors(include_url=False)]) from None


def read_fields(body, model):
    """``body`` (a JSON object) validated as vLLM's pydantic ``model`` validates it: the fields it gives, as
    pydantic made them (a nested model as a dict of what was sent), every other name dropped (and logged, as
    vLLM logs it). A body the model refuses raises RequestValidationError."""
    return _fields_of(_validated(model, body), body)


def read_union(body, union):
    """(the member model, its fields) of ``body`` validated against a union of vLLM's request models, as FastAPI
    validates vLLM's /tokenize body: pydantic's smart union picks the member (a body with both "prompt" and
    "messages" is a chat); no member takes it: RequestValidationError with each member's errors."""
    request = _validated(union, body)
    return type(request), _fields_of(request, body)


def _fields_of(request, body):
    model = type(request)
    return request.model_dump(include=request.model_fields_set & set(model.model_fields), exclude_unset=True,
                              by_alias=True)
