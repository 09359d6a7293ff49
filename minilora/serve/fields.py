"""A request body's fields, read as vLLM's OpenAI server reads them (vLLM 0.24: the pydantic models
``CompletionRequest`` and ``ChatCompletionRequest`` of vllm/entrypoints/openai/{completion,chat_completion}/
protocol.py, validated by FastAPI in pydantic's lax Python mode).

* A name vLLM's model does not have is ignored, with vLLM's warning in the log ("The following fields were
  present in the request but ignored: {...}"): its models allow extra fields, as OpenAI's API does.
* A field of a scalar type is coerced as pydantic's lax mode coerces it: an int field takes ``5``, ``5.0``,
  ``"5"``, ``" 5 "``, ``"5.00"``, ``"1_000"`` and ``true`` (1), not ``5.5`` or ``"5.5"`` or ``"1e3"``; a float
  field takes numbers and number text (``"0.5"``, ``"1e-3"``, ``"inf"``); a bool field takes ``true``/``false``,
  0 and 1, and the words ``"true" "false" "yes" "no" "on" "off" "t" "f" "y" "n" "1" "0"`` in any case; a string
  field takes only strings. Lists of ints (``stop_token_ids``) and the numbers of ``logit_bias`` likewise.
* ``null`` is refused where vLLM's field is not Optional (``ignore_eos: bool = False``; completions' ``n``).

``read_fields(body, chat)`` returns the body with its known fields coerced and the unknown ones dropped;
the ranges and the meaning of each value are app.py's.
"""
import logging
import math
import re

from .engine import EngineError

__all__ = ["read_fields", "log_ignored", "lax_int", "lax_float", "lax_bool"]

_LOG = logging.getLogger("minilora.serve")

# pydantic-core trims with Rust's str::trim: the characters of Unicode's White_Space property
_WHITESPACE = "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a" \
              "\u2028\u2029\u202f\u205f\u3000"
_INT_TEXT = re.compile(r"[+-]?[0-9]+")  # Rust's i64 / BigInt parse: ASCII digits, one sign
# Rust's f64 parse: inf, infinity, nan (any case, a sign), or digits with a point and an exponent
_FLOAT_TEXT = re.compile(r"[+-]?(inf|infinity|nan|([0-9]+\.?[0-9]*|\.[0-9]+)(e[+-]?[0-9]+)?)", re.IGNORECASE)
_TRUE, _FALSE = {"1", "on", "t", "true", "y", "yes"}, {"0", "off", "f", "false", "n", "no"}
_INT_TEXT_LONGEST = 4300  # Python's int-from-text limit, which pydantic keeps


class _Invalid(ValueError):
    """pydantic's message for a value its type refuses."""


def _without_underscores(text):
    """pydantic's strip_underscores: "1_000" is 1000; a leading, trailing or doubled underscore is no number."""
    if "_" not in text or text.startswith("_") or text.endswith("_") or "__" in text:
        return None
    return text.replace("_", "")


def _int_digits(text):
    if _INT_TEXT.fullmatch(text):
        return int(text)
    plain = _without_underscores(text)
    return int(plain) if plain is not None and _INT_TEXT.fullmatch(plain) else None


def _int_from_text(text):
    """pydantic-core's str_as_int: trimmed; "5.000" (only zeros after the point) is 5."""
    text = text.strip(_WHITESPACE)
    if len(text) > _INT_TEXT_LONGEST:
        raise _Invalid("Unable to parse input string as an integer, exceeded maximum size")
    value = _int_digits(text)
    head, point, tail = text.partition(".")
    if value is None and point and tail and set(tail) == {"0"}:
        value = _int_digits(head)
    if value is None:
        raise _Invalid("Input should be a valid integer, unable to parse string as an integer")
    return value


def lax_int(value):
    """An int field's value from JSON, as pydantic's lax mode reads it."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _Invalid("Input should be a finite number")
        if not value.is_integer():
            raise _Invalid("Input should be a valid integer, got a number with a fractional part")
        if not -2.0**63 < value < 2.0**63:  # (pydantic-core: strictly inside i64's range)
            raise _Invalid("Unable to parse input string as an integer, exceeded maximum size")
        return int(value)
    if isinstance(value, str):
        return _int_from_text(value)
    raise _Invalid("Input should be a valid integer")


def lax_float(value):
    """A float field's value from JSON, as pydantic's lax mode reads it (text: trimmed, then Rust's f64 parse;
    failing that, without its underscores and untrimmed, as pydantic-core's str_as_float)."""
    if isinstance(value, (bool, int, float)):
        return float(value)
    if isinstance(value, str):
        for text in (value.strip(_WHITESPACE), _without_underscores(value)):
            if text is not None and _FLOAT_TEXT.fullmatch(text):
                return float(text)
        raise _Invalid("Input should be a valid number, unable to parse string as a number")
    raise _Invalid("Input should be a valid number")


def lax_bool(value):
    """A bool field's value from JSON, as pydantic's lax mode reads it."""
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.lower() in _TRUE | _FALSE:
        return value.lower() in _TRUE
    if isinstance(value, (int, float)) and -2.0**63 < value < 2.0**63 and float(value).is_integer() \
            or isinstance(value, str):
        raise _Invalid("Input should be a valid boolean, unable to interpret input")
    raise _Invalid("Input should be a valid boolean")


def _string(value):
    if not isinstance(value, str):
        raise _Invalid("Input should be a valid string")
    return value


def _int_list(value):
    if not isinstance(value, list):
        raise _Invalid("Input should be a valid list")
    return [lax_int(item) for item in value]


def _str_list(value):
    if not isinstance(value, list):
        raise _Invalid("Input should be a valid list")
    return [_string(item) for item in value]


def _float_values(value):
    """``dict[str, float]`` (logit_bias): the keys as sent (JSON's are strings), the values lax floats."""
    if not isinstance(value, dict):
        raise _Invalid("Input should be a valid dictionary")
    return {key: lax_float(number) for key, number in value.items()}


def _dictionary(value):
    if not isinstance(value, dict):
        raise _Invalid("Input should be a valid dictionary")
    return value


def _effort(value):
    """``Literal["low", "medium", "high"]`` (chat's reasoning_effort): a Literal takes its values only."""
    if value not in ("low", "medium", "high") or not isinstance(value, str):
        raise _Invalid("Input should be 'low', 'medium' or 'high'")
    return value


def _as_sent(value):
    """A field whose shape app.py checks itself (a prompt, messages, stop, response_format, tools, ...)."""
    return value


_READERS = {"int": lax_int, "float": lax_float, "bool": lax_bool, "str": _string, "ints": _int_list,
            "strs": _str_list, "float dict": _float_values, "dict": _dictionary, "effort": _effort, "any": _as_sent}
_NOUN = {"int": "integer", "float": "number", "bool": "boolean", "str": "string", "ints": "list", "strs": "list",
         "float dict": "dictionary", "dict": "dictionary"}

# name: (type, whether null is taken). The fields both of vLLM's request models declare ...
_SHARED = {
    "model": ("str", True), "frequency_penalty": ("float", True), "logit_bias": ("float dict", True),
    "max_tokens": ("int", True), "presence_penalty": ("float", True), "response_format": ("any", True),
    "seed": ("int", True), "stop": ("any", True), "stream": ("bool", True), "stream_options": ("any", True),
    "temperature": ("float", True), "top_p": ("float", True), "user": ("str", True),
    "use_beam_search": ("bool", False), "top_k": ("int", True), "min_p": ("float", True),
    "repetition_penalty": ("float", True), "length_penalty": ("float", False), "stop_token_ids": ("ints", True),
    "include_stop_str_in_output": ("bool", False), "ignore_eos": ("bool", False), "min_tokens": ("int", False),
    "skip_special_tokens": ("bool", False), "spaces_between_special_tokens": ("bool", False),
    "truncate_prompt_tokens": ("int", True), "prompt_logprobs": ("int", True), "allowed_token_ids": ("ints", True),
    "add_special_tokens": ("bool", False), "structured_outputs": ("any", True), "priority": ("int", False),
    "request_id": ("str", False), "logits_processors": ("any", True), "return_tokens_as_token_ids": ("bool", True),
    "return_token_ids": ("bool", True), "cache_salt": ("str", True), "kv_transfer_params": ("dict", True),
    "vllm_xargs": ("dict", True), "max_repetition_pattern_size": ("int", False),
    "min_repetition_pattern_size": ("int", False), "repetition_min_count": ("int", False),
    "bad_words": ("strs", False)}
# ... and each one's own
COMPLETION_FIELDS = {**_SHARED, "prompt": ("any", True), "echo": ("bool", True), "logprobs": ("int", True),
                     "n": ("int", False), "suffix": ("str", True), "prompt_embeds": ("any", True)}
CHAT_FIELDS = {**_SHARED, "messages": ("any", False), "logprobs": ("bool", True), "top_logprobs": ("int", True),
               "max_completion_tokens": ("int", True), "n": ("int", True), "tools": ("any", True),
               "tool_choice": ("any", True), "reasoning_effort": ("effort", True), "include_reasoning": ("bool", False),
               "parallel_tool_calls": ("bool", True), "echo": ("bool", False),
               "add_generation_prompt": ("bool", False), "continue_final_message": ("bool", False),
               "documents": ("any", True), "chat_template": ("str", True), "chat_template_kwargs": ("dict", True),
               "mm_processor_kwargs": ("dict", True)}
# vLLM's /tokenize models (a completion's prompt, or a chat's messages) and /detokenize's
# (vllm/entrypoints/serve/tokenize/protocol.py)
TOKENIZE_FIELDS = {"model": ("str", True), "prompt": ("str", False), "add_special_tokens": ("bool", False),
                   "return_token_strs": ("bool", True)}
TOKENIZE_CHAT_FIELDS = {"model": ("str", True), "messages": ("any", False), "add_generation_prompt": ("bool", False),
                        "return_token_strs": ("bool", True), "continue_final_message": ("bool", False),
                        "add_special_tokens": ("bool", False), "chat_template": ("str", True),
                        "chat_template_kwargs": ("dict", True), "tools": ("any", True),
                        "media_io_kwargs": ("dict", True), "mm_processor_kwargs": ("dict", True)}
DETOKENIZE_FIELDS = {"model": ("str", True), "tokens": ("ints", False)}


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


def read_fields(body, chat, fields=None):
    """``body`` (a JSON object) with vLLM's fields coerced as its pydantic model coerces them and every other
    name dropped, logged as vLLM logs it; a value the field's type refuses is a 400 naming the field.
    ``fields``: another of vLLM's models (default: its chat or completion request's)."""
    fields = fields or (CHAT_FIELDS if chat else COMPLETION_FIELDS)
    log_ignored(set(body) - set(fields))
    read = {}
    for name, value in body.items():
        if name not in fields:
            continue
        kind, nullable = fields[name]
        try:
            if value is None and not nullable:
                raise _Invalid(f"Input should be a valid {_NOUN.get(kind, 'value')}")
            read[name] = None if value is None else _READERS[kind](value)
        except _Invalid as exc:
            raise EngineError(400, f"{name}: {exc}, got {value!r}"[:300], name) from None
    return read
