"""The OpenAI-compatible HTTP API over an ``Engine`` (Starlette; ``pip install minilora[serve]``).

Routes (vLLM's names for the adapter routes)::

    GET  /v1/models                  the base model and every loaded adapter
    GET  /v1/models/{model}          one of them (OpenAI's ``client.models.retrieve``)
    POST /v1/completions             {"model", "prompt", ...}; "model" names an adapter or the base (left
                                     out or null: the base, as vLLM)
    POST /v1/chat/completions        {"model", "messages", ...} (the tokenizer's chat template, or the request's
                                     ``chat_template``; neither: a 400, as vLLM's)
    POST /v1/load_lora_adapter       {"lora_name", "lora_path", "load_inplace"} -> vLLM's plain text "Success:
                                     LoRA adapter 'NAME' added successfully." (a folder without an adapter: 404)
    POST /v1/unload_lora_adapter     {"lora_name"} -> "Success: LoRA adapter 'NAME' removed successfully."
    POST /tokenize                   {"prompt"} or {"messages"} -> {"count", "max_model_len", "tokens", "token_strs"}
    POST /detokenize                 {"tokens"} -> {"prompt"}   (vLLM's paths: no /v1, no API key)
    GET  /health

With ``api_key`` (vLLM's ``--api-key``), every ``/v1`` request needs ``Authorization: Bearer KEY``; else 401.

The request parameters are OpenAI's, read as vLLM's (0.24) server reads them (fields.py: its pydantic models'
fields, coerced in pydantic's lax mode -- ``"5"`` is 5, ``"true"`` is true --, and a name they do not have ignored
with vLLM's warning in the log): ``max_tokens`` (left out: 16 for a completion, the rest of the context for a chat;
``null``: a completion's as left out, vLLM's normalize_null_max_tokens, a chat's the rest of the context),
``temperature`` (0: greedy; at most 2), ``top_p``, ``n`` (choice i samples with ``seed + i``; above 1 only when
sampling, as vLLM), ``seed``, ``stop`` (the stop text is not in the output),
``presence_penalty``, ``frequency_penalty``, ``logit_bias``, ``logprobs`` (the model's own log-probabilities; chat:
``logprobs``/``top_logprobs``), ``echo``, ``stream`` and ``stream_options`` (``include_usage``, true when
stream_options is given; vLLM's ``continuous_usage_stats``: every chunk with its choice's usage so far); a
completion's ``prompt`` may be a list of prompts. vLLM's extras: ``top_k``, ``min_p``, ``repetition_penalty``,
``stop_token_ids``, ``ignore_eos``, ``min_tokens``, ``include_stop_str_in_output``, ``skip_special_tokens``,
``allowed_token_ids``, ``bad_words``, ``prompt_logprobs`` (each prompt token's, ranked: a completion choice's
``prompt_logprobs``, a chat answer's), ``truncate_prompt_tokens``, ``add_special_tokens``, ``return_token_ids``
(``prompt_token_ids`` and each choice's ``token_ids`` beside the text), ``return_tokens_as_token_ids``; chat:
``add_generation_prompt``, ``continue_final_message``, ``chat_template``, ``chat_template_kwargs``, ``documents``,
``echo`` (the answer starts with the last message's text). ``echo`` with ``logprobs`` (and ``max_tokens: 0``) scores
the prompt;
a completion's echo is its prompt's text as sent (a prompt of ids: decoded whole, special tokens too; none
with ``return_token_ids``), as vLLM's.
Structured outputs (structured.py, vLLM's "guidance" backend): ``response_format`` (``json_object``, ``json_schema``),
``structured_outputs`` (``json``, ``regex``, ``choice``, ``grammar``, ``json_object``) and a chat's ``tools`` with a
named ``tool_choice`` or "required" (the answer's ``tool_calls``); ``tool_choice: "auto"`` (the default with tools) is
vLLM's 400 without a tool parser. ``use_beam_search`` (``n`` beams, ``length_penalty``) runs vLLM's beam search over
the engine (beam.py). ``suffix`` and ``prompt_embeds`` get vLLM's 400s. vLLM's fields this server does not implement
(``logits_processors``, ...) are taken only at their "off" value, refused by name otherwise (``priority``:
vLLM's refusal without priority scheduling; ``spaces_between_special_tokens``: taken, as vLLM's fast detokenizer
ignores it); a bad value is refused in vLLM's words (SamplingParams' checks: ``validation_error``);
``best_of``, which vLLM 0.24 dropped, is ignored as vLLM ignores it, and so are the ``guided_*`` fields vLLM 0.12
removed (a warning names them: the output is not constrained).
``GET /health`` answers 503 once the engine has stopped.

Sampling defaults are OpenAI's and vLLM's, not transformers' ``generate``: ``temperature`` 1, ``top_p`` 1
and no top-k filter (vLLM's extra ``top_k``: 0 or -1 keeps every token, as vLLM; ``minilora generate``
and ``generate()`` keep transformers' top-k 50) -- unless the model folder's generation_config.json sets
them, or ``min_p`` and ``repetition_penalty`` (and ``max_new_tokens``, the default ``max_tokens``), which
vLLM applies too. ``stream: true`` answers with server-sent events (``data: {chunk}`` lines, then
``data: [DONE]``). Errors are vLLM's JSON, ``{"error": {"message", "type", "param", "code"}}``, with a 4xx
status that says whose fault it is: 400 bad parameters (type ``BadRequestError``; a body the route's pydantic
model refuses -- a field's type, a required field left out, one of vLLM's model validators -- is vLLM 0.24's answer
to FastAPI's RequestValidationError: type ``Bad Request``, pydantic's error list as the message, param the
parameter a VLLMValidationError names or the first error's loc, ``body.max_tokens``; a body that is not a
JSON object, or whose Content-Type is not application/json: ``Bad Request``), 404 unknown model, 429 busy (the
backlog across requests is full; one request's prompts x n are taken whole however many, and wait for free rows
as vLLM's). A refused request leaves nothing queued (its n choices are taken all or none), so the retries
OpenAI's clients make after a 429 or a 5xx generate nothing twice. A client that disconnects (or times out,
before it retries) cancels its request: the engine frees its batch slot, or its place in the queue, at the next step.
Each choice carries vLLM's ``stop_reason`` (the stop string or stop token id that ended it, else null).
A choice's text is made and sampled as vLLM's v1 engine makes it (detokenizer.py, sampler.py): a seeded
request draws torch's numbers from its own generator, ``seed + i`` for choice i.
Every answer carries OpenAI's ``system_fingerprint`` and its id also as the ``x-request-id`` header (a client's own
``X-Request-Id``, or vLLM's ``request_id`` extra, names the answer ``cmpl-ID`` and comes back as that header);
logprobs are a log_softmax over the model's whole vocabulary (ids past the tokenizer's: ``token_id:N``); a structured
output's over its grammar-masked logits, as vLLM's sampler reads them (a ruled-out token's -inf shown as -9999.0).
"""
import asyncio
import collections
import contextlib
import functools
import hashlib
import inspect
import json
import logging
import math
import os
import re
import secrets
import sys
import time
import uuid
from http import HTTPStatus

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse, PlainTextResponse, StreamingResponse
from starlette.routing import Route

from .beam import beam_search
from .detokenizer import token_bytes_or_text as _token_bytes
from .engine import (EngineError, Request, VLLMValidationError, check_characters, check_context, model_not_found,
                     validation_error)
from .fields import (ChatCompletionRequest, CompletionRequest, DetokenizeRequest, LoadLoRAAdapterRequest,
                     RequestValidationError, TokenizeChatRequest, TokenizeRequest, UnloadLoRAAdapterRequest,
                     read_fields, read_union)
from .sampler import SAMPLING_EPS
from .structured import Grammars, constraint_of, tool_choice_of

__all__ = ["create_app"]

# vLLM's fields this server does not implement, taken only at the value that means "off" (the first: the
# default; clients and frameworks send them with those values). Names vLLM does not know are ignored (fields.py).
_OFF = {"logits_processors": (None, []),
        "max_repetition_pattern_size": (0,), "min_repetition_pattern_size": (0,), "repetition_min_count": (0,)}
_MAX_LOGPROBS = 20  # vLLM's default --max-logprobs
_MAX_N = 16384  # vLLM's default VLLM_MAX_N_SEQUENCES
_POLL_SECONDS = 0.25  # how often a non-streaming request checks whether its client is still there


class _BadBody(ValueError):
    """A body not said to be JSON, or bytes that are no text: FastAPI's and vLLM's HTTPException (400, type "Bad
    Request") before any parameter is read."""


def _error(status, message, param=None, kind=None):
    """vLLM's error JSON. ``kind`` is its error type: by default the one vLLM's serving code names for the
    status (``BadRequestError`` for a 400, ``InternalServerError`` for a server's fault, as its
    create_error_response); vLLM's request-validation handler (a body that is not a JSON object) and its
    unknown-route handler use the HTTP phrase instead ("Bad Request", "Not Found")."""
    if kind is None:
        kind = {400: "BadRequestError", 404: "NotFoundError", 409: "ConflictError", 429: "RateLimitError",
                501: "NotImplementedError"}.get(status, "InternalServerError" if status >= 500 else "BadRequestError")
    return JSONResponse({"error": {"message": message, "type": kind, "param": param, "code": status}},
                        status_code=status)


def _flag(body, name):
    """A bool field of the request (read by fields.py: true, false or null) as true or false."""
    return bool(body.get(name))


def _max_tokens_field(body):
    """The name the request gave its output budget (a chat's max_completion_tokens, its newer name, first)."""
    return "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"


def _rest_of_context(max_model_len, prompt_tokens):
    """``max_tokens: null``: every position the prompt leaves (vLLM's get_max_tokens); none left is its
    SamplingParams' refusal of 0."""
    rest = (max_model_len or prompt_tokens + 16) - prompt_tokens
    if rest < 1:
        raise validation_error(f"max_tokens must be at least 1, got {rest}.", "max_tokens", rest)
    return rest


def _max_tokens(body, default):
    """The request's max_tokens (chat: max_completion_tokens, its newer name). Left out: ``default``;
    an explicit null (a chat's: fields.py takes a completion's as left out): None, "the rest of the context", as
    vLLM reads it."""
    name = _max_tokens_field(body)
    if name in body and body[name] is None:
        return None
    return _given(body, name, default)  # (an int: fields.py; below 1 is _verify_sampling's refusal)


def _choice_count(body):
    """vLLM's ``n``: at least 1, at most its VLLM_MAX_N_SEQUENCES (16384 by default); the choices queue for free
    rows as any request's sequences do."""
    n = body.get("n")
    n = 1 if n is None else n
    if not 1 <= n <= _MAX_N:
        raise EngineError(400, f"n must be at {'least 1' if n < 1 else f'most {_MAX_N}'}, got {n}.", "n")
    return n


def _stop_token_ids(body, vocab_size):
    """vLLM's ``stop_token_ids`` (a list of ints: fields.py): ids of the model's vocabulary, as vLLM's
    SamplingParams checks them (since vllm#54196: they index the logits), refused in its words."""
    ids = body.get("stop_token_ids") or []
    outside = [token for token in ids if not 0 <= token < vocab_size]
    if outside:
        raise EngineError(400, f"token_id(s) {outside} in stop_token_ids contain out-of-vocab token ids. Vocabulary "
                               f"size: {vocab_size}", "stop_token_ids")
    return ids


def _allowed_token_ids(body, text_vocab):
    """vLLM's ``allowed_token_ids``: only these ids may be sampled (None: every id); an empty list, or an id past
    the tokenizer (``len(tokenizer)``, as vLLM's processor checks: a padded vocabulary's last ids are no text,
    never sampled), is refused in vLLM's words."""
    ids = body.get("allowed_token_ids")  # (a list of ints: fields.py)
    if ids is None:
        return None
    if not ids:
        raise EngineError(400, "allowed_token_ids is not None and empty!", "allowed_token_ids")
    if not all(0 <= token < text_vocab for token in ids):
        raise EngineError(400, "allowed_token_ids contains out-of-vocab token id!", "allowed_token_ids")
    return ids


def _logit_bias(body, vocab_size):
    """OpenAI's ``{"token id": bias}`` read as vLLM's SamplingParams.from_optional reads it: a key is whatever
    Python's int() takes (" 5 ", "5_0"), a bias is clamped to [-100, 100] (NaN falls to -100, as min/max
    leave it; OpenAI's own API refuses both), and an id outside the vocabulary is refused in vLLM's words."""
    bias = body.get("logit_bias") or {}  # (a dict of numbers: fields.py)
    parsed, invalid = {}, []
    for key, value in bias.items():
        try:
            parsed[int(key)] = min(100.0, max(-100.0, value))
        except ValueError:
            invalid.append(key)
    if invalid:
        raise EngineError(400, f"logit_bias contains key(s) that cannot be converted to integer token IDs: "
                               f"{invalid!r}", "logit_bias")
    outside = [token for token in parsed if not 0 <= token < vocab_size]
    if outside:
        raise EngineError(400, f"token_id(s) {outside} in logit_bias contain out-of-vocab token ids. Vocabulary "
                               f"size: {vocab_size}", "logit_bias")
    return parsed


def _truncated(ids, k, budget):
    """vLLM's ``truncate_prompt_tokens``: the prompt's last ``k`` tokens (-1: as many as the context leaves
    room for beside max_tokens, ``budget``; None: the whole prompt)."""
    if k is None:  # (at least -1: fields.py)
        return ids
    if budget is not None and k > budget:  # (vLLM's TokenizeParams words)
        raise validation_error(f"truncate_prompt_tokens={k} cannot be greater than max_model_len - max_tokens = "
                               f"{budget}. Please request a smaller truncation size.", "truncate_prompt_tokens", k)
    keep = budget if k == -1 else k
    return ids if keep is None or len(ids) <= keep else ids[len(ids) - keep:]


def _logprob_count(body, name, vocab_size, kind="sample"):
    """A count of likeliest tokens to report (None: none; -1, where fields.py's check_logprobs lets it through: the
    whole vocabulary), refused as vLLM's engine refuses more than its --max-logprobs (20)."""
    k = body.get(name)
    if k is None:
        return None
    asked = vocab_size if k == -1 else k
    if asked > _MAX_LOGPROBS:
        raise EngineError(400, f"Requested {kind} logprobs of {asked}, which is greater than max allowed: "
                               f"{_MAX_LOGPROBS}", name)
    return k


def _logprobs(body, chat, vocab_size):
    """How many likeliest tokens to report beside each chosen one (None: no logprobs). Completions take
    ``logprobs: k``; chat takes ``logprobs: true`` and ``top_logprobs: k``, as OpenAI's API."""
    if not chat:
        return _logprob_count(body, "logprobs", vocab_size)
    top = _logprob_count(body, "top_logprobs", vocab_size)  # (with logprobs true: fields.py's check_logprobs)
    return (top or 0) if _flag(body, "logprobs") else None


def _prompt_logprob_count(body, chat, vocab_size):
    """vLLM's ``prompt_logprobs``: how many likeliest tokens to report beside each prompt token (None: none);
    with ``echo`` and none asked, the count the request's logprobs ask for (chat: ``top_logprobs``, 0 by
    default, so a chat's echo reports its prompt's own logprobs). Not with ``stream`` (its chunks have no room:
    vLLM's check_logprobs, fields.py)."""
    k = _logprob_count(body, "prompt_logprobs", vocab_size, "prompt")
    if k is None and _flag(body, "echo"):
        return body.get("top_logprobs", 0) if chat else body.get("logprobs")
    return k


def _stop(body):
    """A string or a list of strings (fields.py): any number of them, as vLLM takes them (OpenAI's own API allows
    4); an empty one is refused, as vLLM's ("stop cannot contain an empty string")."""
    stop = body.get("stop")
    stop = [] if stop is None else [stop] if isinstance(stop, str) else stop
    if not all(stop):
        raise EngineError(400, "stop cannot contain an empty string.", "stop")
    return stop


def _given(body, name, default):
    """The request's value of ``name`` (read by fields.py), or ``default`` where it is left out or null."""
    value = body.get(name)
    return default if value is None else value


def _verify_sampling(options, n, beam=False):
    """vLLM's SamplingParams._verify_args on a request's options, in its order and words (validation_error: the
    parameter and value appended where vLLM's check names them, and the error's param; else param null). A beam
    search (``beam``) makes no SamplingParams of the request (vLLM's BeamSearchParams checks nothing): only its
    temperature reaches one, each step's one-token request's."""
    o = options
    if beam:
        _verify_temperature(o["temperature"])
        if o["max_tokens"] != 0:  # (0: vLLM's search runs no step and answers its one beam, the prompt: beam.py)
            _verify_max_tokens(o["max_tokens"])
        return
    for name in ("presence_penalty", "frequency_penalty"):
        if not -2.0 <= o[name] <= 2.0:
            raise validation_error(f"{name} must be in [-2, 2], got {o[name]}.")
    if not math.isfinite(o["repetition_penalty"]):
        raise validation_error(f"repetition_penalty must be a finite number, got {o['repetition_penalty']}.")
    if o["repetition_penalty"] <= 0.0:
        raise validation_error(f"repetition_penalty must be greater than zero, got {o['repetition_penalty']}.")
    _verify_temperature(o["temperature"])
    if not 0.0 < o["top_p"] <= 1.0:
        raise validation_error(f"top_p must be in (0, 1], got {o['top_p']}.", "top_p", o["top_p"])
    if o["top_k"] < -1:  # (-1 quietly taken as 0: no top-k)
        raise validation_error(f"top_k must be 0 (disable), or at least 1, got {o['top_k']}.")
    if not 0.0 <= o["min_p"] <= 1.0:
        raise validation_error(f"min_p must be in [0, 1], got {o['min_p']}.")
    _verify_max_tokens(o["max_tokens"])
    _verify_min_tokens(o["min_tokens"], o["max_tokens"])
    if n > 1 and o["temperature"] < SAMPLING_EPS:  # _verify_greedy_sampling
        raise validation_error(f"n must be 1 when using greedy sampling, got {n}.")


def _verify_temperature(t):
    problem = ("must be a finite number" if not math.isfinite(t) else
               "must be non-negative" if t < 0 else "must be in [0, 2]" if t > 2 else None)
    if problem:
        raise validation_error(f"temperature {problem}, got {t}.", "temperature", t)


def _verify_max_tokens(max_tokens):
    if max_tokens is not None and max_tokens < 1:
        raise validation_error(f"max_tokens must be at least 1, got {max_tokens}.", "max_tokens", max_tokens)


def _verify_min_tokens(min_tokens, max_tokens):
    """SamplingParams' min_tokens checks (also run per choice once a null max_tokens is the rest of its context)."""
    if min_tokens < 0:
        raise validation_error(f"min_tokens must be greater than or equal to 0, got {min_tokens}.")
    if max_tokens is not None and min_tokens > max_tokens:
        raise validation_error(f"min_tokens must be less than or equal to max_tokens={max_tokens}, got {min_tokens}.")


def _seed(body):
    """The request's seed (within 64 bits: fields.py); -1 is no seed (SamplingParams turns it into None); other
    negatives wrap to 64 bits."""
    seed = body.get("seed")
    return None if seed == -1 else seed


def _bad_words_ids(tokenizer, words, text_vocab):
    """vLLM's bad_words as token ids (SamplingParams.update_from_tokenizer), completions' and chats' alike: each
    word's tokens as a text's first word and, where a leading space makes it another word of as many tokens, after
    a space; an empty word, one of spaces only, or an id past the vocabulary refused in vLLM's words."""
    words = list(dict.fromkeys(words))  # (SamplingParams keeps each word once)
    if not all(words):
        raise validation_error(f"bad_words cannot contain an empty string. Got bad_words={words}")
    ids = []
    for word in (word.lstrip() for word in words):
        alone = tokenizer.encode(word, add_special_tokens=False)
        if not alone:  # (a word of spaces: nothing to ban)
            raise validation_error("bad_words entries must tokenize to at least one token.", "bad_words", words)
        spaced = tokenizer.encode(" " + word, add_special_tokens=False)
        ids += [alone] + ([spaced] if spaced and spaced[0] != alone[0] and len(spaced) == len(alone) else [])
    largest = (text_vocab or 0) - 1
    invalid = [token for word in ids for token in word if not 0 <= token <= largest]
    if text_vocab is not None and invalid:
        raise EngineError(400, f"The model vocabulary size is {largest + 1}, but the following tokens were specified "
                               f"as bad: {invalid}. All token id values should be integers satisfying: 0 <= token_id "
                               f"<= {largest}.", "bad_words")
    return ids


def _usage_options(body):
    """(include_usage, continuous_usage_stats) of vLLM's ``stream_options`` (``{"include_usage": bool = true,
    "continuous_usage_stats": bool = false}``): given at all, a stream ends with a chunk of the usage, and with
    continuous_usage_stats every chunk carries its choice's usage so far. Other keys are ignored, as vLLM's."""
    options = body.get("stream_options")
    if options is None:
        return False, False
    include, continuous = options.get("include_usage", True), options.get("continuous_usage_stats", False)
    return bool(include), bool(include and continuous)


def _options(body, chat, vocab_size, defaults, text_vocab=None):
    """(options for every ``Request``, n, stream, (include_usage, continuous_usage_stats), echo, prompt_logprobs):
    the request's fields (read by fields.py) checked as vLLM checks them. What the request leaves out comes
    from ``defaults`` (the engine's: OpenAI's, or the model's generation_config). ``max_tokens`` None: the rest
    of the context. ``text_vocab``: the ids the tokenizer has (None: the model's ``vocab_size``)."""
    for name, off in _OFF.items():
        if body.get(name, off[0]) not in off:
            raise EngineError(400, f"{name} is not supported (only {off[-1]!r})", name)
    if body.get("priority", 0) != 0:  # vLLM's engine without --scheduling-policy priority (this one's is first come,
        # first served): its ValueError
        raise validation_error(f"Got priority {body['priority']} but Priority scheduling is not enabled.")
    if not chat and body.get("suffix") is not None:  # (vLLM refuses any suffix, "" too)
        raise EngineError(400, "suffix is not currently supported", "suffix")
    if not chat and body.get("prompt_embeds") is not None:  # vLLM's, unless started with --enable-prompt-embeds
        raise EngineError(400, "You must set `--enable-prompt-embeds` to input `prompt_embeds`.", "prompt_embeds")
    n = _choice_count(body)  # (best_of: vLLM 0.24's models dropped it, so it is ignored)
    stream = _flag(body, "stream")  # null: false, as vLLM's Optional[bool] = False reads it
    echo = not chat and _flag(body, "echo")  # (a chat's echo is its last message's text: ChatReply)
    logprobs = _logprobs(body, chat, vocab_size)
    default_max = defaults["max_tokens"] or (None if chat else 16)  # OpenAI's: 16 for a completion; chat: the rest
    max_tokens = _max_tokens(body, default_max)
    options = dict(max_tokens=None if max_tokens == 0 and echo else max_tokens,  # (0 with echo: the prompt scored)
                   temperature=_given(body, "temperature", defaults["temperature"]),
                   top_p=_given(body, "top_p", defaults["top_p"]),
                   top_k=_given(body, "top_k", defaults["top_k"] or 0),  # vLLM's: 0 or -1 = every token
                   seed=_seed(body), stop=_stop(body),
                   presence_penalty=_given(body, "presence_penalty", 0.0),
                   frequency_penalty=_given(body, "frequency_penalty", 0.0),
                   repetition_penalty=_given(body, "repetition_penalty", defaults["repetition_penalty"]),
                   logit_bias=_logit_bias(body, vocab_size), logprobs=logprobs,
                   stop_token_ids=_stop_token_ids(body, vocab_size), ignore_eos=_flag(body, "ignore_eos"),
                   allowed_token_ids=_allowed_token_ids(body, text_vocab or vocab_size),
                   min_p=_given(body, "min_p", defaults["min_p"]),
                   min_tokens=_given(body, "min_tokens", 0),
                   include_stop_str_in_output=_flag(body, "include_stop_str_in_output"),
                   skip_special_tokens=body.get("skip_special_tokens") is None or _flag(body, "skip_special_tokens"))
    _verify_sampling(options, n, beam=_flag(body, "use_beam_search"))
    temperature, top_k = options["temperature"], options["top_k"]
    # above 0 but below 0.01 a temperature is 0.01, as vLLM raises it (smaller ones overflow in float32)
    options.update(max_tokens=max_tokens, temperature=max(temperature, 0.01) if temperature > 0 else temperature,
                   top_k=top_k if top_k > 0 else None)
    return options, n, stream, _usage_options(body), echo, _prompt_logprob_count(body, chat, vocab_size)


class _Echo(collections.namedtuple("_Echo", "text entries specials")):
    """What a choice starts with: its echoed ``text`` (a completion's prompt, a chat's last message; "" without
    echo), its prompt tokens' logprob ``entries`` (None: not asked) and whether that text shows the special
    tokens (``specials``: a prompt sent as ids, decoded whole as vLLM decodes it), which its offsets follow."""


_NO_ECHO = _Echo("", None, False)


class _Reply(collections.namedtuple("_Reply", "chat usage echoes prompt_info n_prompt prompt_ids token_ids as_ids")):
    """How one request's answer is written, beside its choices' text: ``chat`` (None: a completion; else its
    ChatReply), ``usage`` (include_usage, continuous_usage_stats), ``echoes`` (the _Echo each choice starts
    with), ``prompt_info`` (each choice's vLLM prompt_logprobs, or None), ``n_prompt`` (the
    prompts' tokens, each counted once), ``prompt_ids`` (each choice's prompt), ``token_ids`` (vLLM's
    ``return_token_ids``: the prompt's and the choice's token ids beside the text) and ``as_ids`` (vLLM's
    ``return_tokens_as_token_ids``: logprobs name each token ``token_id:N``, not by its text)."""

    def prompt_token_ids(self, index):
        return {"prompt_token_ids": self.prompt_ids[index]} if self.token_ids else {}

    def token_ids_of(self, ids):
        return {"token_ids": list(ids)} if self.token_ids else {}

    def whole_choice(self, index, generated):
        """vLLM's own fields of a whole (not streamed) choice: its token ids, and a completion's prompt_logprobs
        (null when not asked) and prompt ids (a chat answer has them once)."""
        if self.chat:
            return self.token_ids_of(generated)
        return {**self.token_ids_of(generated), "prompt_logprobs": self.prompt_info[index],
                **self.prompt_token_ids(index)}


class _Server:
    def __init__(self, engine, model_name, aliases=(), trust_request_chat_template=False):
        self.engine, self.model_name = engine, model_name
        self.trust_request_chat_template = trust_request_chat_template
        self.base_names = [model_name] + [name for name in aliases if name != model_name]
        self.created = int(time.time())
        self.fingerprint = _fingerprint(engine, model_name)
        self.grammars = Grammars(engine.tokenizer, engine.vocab_size, engine.text_vocab)  # structured outputs

    # --- helpers -------------------------------------------------------------------------------
    async def _json(self, request):
        """The body of a POST, parsed as JSON. As vLLM's validate_json_request (every POST route's dependency), the
        request must say it is JSON: a Content-Type other than application/json (curl -d without -H sends a form's)
        is refused before the body is read."""
        media_type = request.headers.get("content-type", "").lower().split(";", 1)[0]
        if media_type != "application/json":
            raise _BadBody("Unsupported Media Type: Only 'application/json' is allowed")
        raw = await request.body()
        if not raw:  # FastAPI's answer for a required body left out, its JSON decode error, and bytes that are no text
            raise RequestValidationError([{"type": "missing", "loc": ("body",), "msg": "Field required",
                                           "input": None}])
        try:
            return json.loads(raw)  # (not an object: the route's model refuses it, as pydantic refuses it for vLLM's)
        except json.JSONDecodeError as exc:
            raise RequestValidationError([{"type": "json_invalid", "loc": ("body", exc.pos), "msg": "JSON decode error",
                                           "input": {}, "ctx": {"error": exc.msg}}]) from None
        except (ValueError, RecursionError):  # (bytes no text, 4300+ digits, arrays nested past Python's stack:
            raise _BadBody("There was an error parsing the body") from None  # FastAPI's 400 for any other failure)

    def _template_allowed(self, body):
        """vLLM's refusal of a chat template sent with the request (``chat_template``, or ``chat_template_kwargs``'
        ``chat_template``) unless the server runs with ``--trust-request-chat-template``: the server renders it, and
        a template is a program -- ``{% for i in range(100000) %}{% for j in range(100000) %}`` held the event loop,
        every client's request and /health with it, for hours."""
        sent = body.get("chat_template") is not None or (body.get("chat_template_kwargs") or {}).get(
            "chat_template") is not None
        if sent and not self.trust_request_chat_template:
            raise EngineError(400, "Chat template is passed with request, but --trust-request-chat-template is not "
                                   "set. Refused request with untrusted chat template.")

    def _adapter_of(self, body):
        """The adapter a request's ``model`` names; None for the base. As vLLM's protocol, ``model`` is
        optional (a string: fields.py): left out, null or "" means the served base model."""
        model = body.get("model")
        if not model or model in self.base_names:
            return None
        if model not in self.engine.adapters():
            raise EngineError(404, model_not_found(model), "model")
        return model

    async def _run(self, http_request, body, prompts, chat, texts):
        """Submit one request per prompt and choice (``n`` each), then answer as one JSON object or as a
        stream of server-sent events. Choice ``i`` of prompt ``p`` is choice ``p * n + i``, as vLLM numbers
        them; with a ``seed`` it samples with ``seed + i`` (vLLM's seeds for the n samples). ``chat``: None
        for a completion, else its ChatReply; ``texts``: each prompt's text as sent (None: sent as token ids)."""
        adapter = self._adapter_of(body)
        constraint = constraint_of(body, chat is not None)
        options, n, stream, usage, echo, prompt_k = _options(body, chat, self.engine.vocab_size,
                                                             self.engine.sampling_defaults, self.engine.text_vocab)
        prompts = self._fitted(body, prompts, options["max_tokens"] or 0, texts)
        echo_texts = (["" if body.get("return_token_ids") else text for text in texts] if echo  # (vLLM's: the
                      else None)  # prompt text is left out when the ids are returned)
        scored = [k for k in (options["logprobs"] if echo else None, None if stream else prompt_k) if k is not None]
        given = _client_request_id(http_request, body)
        meta = {"id": f"{'chatcmpl' if chat else 'cmpl'}-{given or uuid.uuid4().hex}", "created": int(time.time()),
                "model": body.get("model") or self.model_name, "system_fingerprint": self.fingerprint}  # as asked
        tag = given or meta["id"]  # the x-request-id header: the client's own, as vLLM's echoes it
        n_prompt = sum(len(ids) for ids in prompts)
        reply = functools.partial(_Reply, chat, usage, n_prompt=n_prompt, token_ids=bool(body.get("return_token_ids")),
                                  prompt_ids=[ids for ids in prompts for _ in range(n)],
                                  as_ids=bool(body.get("return_tokens_as_token_ids")))
        if _flag(body, "use_beam_search"):
            beams = await self._beams(body, prompts, adapter, options, n, constraint, http_request.is_disconnected,
                                      chat)
            if beams is None:
                return _error(499, "the client disconnected")
            echoes = self._echoes(prompts, n, echo_texts, [None] * len(prompts), None)
            return _with_id(self._beam_answer(beams, meta, stream, reply(echoes, [None] * len(prompts) * n)), tag)
        echo_only = options["max_tokens"] == 0  # vLLM's echo without generation: it runs one token (counted in
        options = dict(options, max_tokens=1) if echo_only else options  # the usage, its finish_reason), shown not
        loop, events = asyncio.get_running_loop(), asyncio.Queue()
        bad_words = _bad_words_ids(self.engine.tokenizer, body.get("bad_words") or [], self.engine.text_vocab)
        if constraint is not None:  # compiled once, off the event loop (a tokenizer's vocabulary is read at first)
            grammar_at_start = await asyncio.to_thread(self.grammars.compile, constraint)
        jobs = []
        for ids in prompts:
            for i in range(n):
                own = dict(options, seed=None if options["seed"] is None else options["seed"] + i)
                if own["max_tokens"] is None:  # the rest of the context (none left: vLLM's SamplingParams refusal)
                    own["max_tokens"] = _rest_of_context(self.engine.max_model_len, len(ids))
                _verify_min_tokens(own["min_tokens"], own["max_tokens"])
                grammar = None if constraint is None else grammar_at_start.copy()  # (each choice moves its own)
                job = Request(ids, adapter, **own, grammar=grammar, bad_words_ids=bad_words)
                job.emit = self._emitter(loop, events, len(jobs), job)
                jobs.append(job)
        try:
            self.engine.submit_all(jobs)  # all choices or none: a refused request left nothing running
        except EngineError as exc:
            if chat and exc.param == "prompt":  # a chat's prompt is its messages
                exc.param = "messages"
            raise
        try:  # scored once queued: a refused request (a 429 the client retries) ran no forward pass at all
            scores = await self._prompt_scores(prompts, adapter, scored, held_by=jobs[0])
        except BaseException:
            for job in jobs:
                job.cancel()
            raise
        echoes = ([_Echo(chat.echo, None, False)] * len(jobs) if chat else
                  self._echoes(prompts, n, echo_texts, scores, options["logprobs"]))
        reply = reply(echoes, self._prompt_info(prompts, n, scores, None if stream else prompt_k))
        if echo_only:
            return _with_id(await self._echo_only(jobs, events, meta, stream, reply), tag)
        if stream:
            return _with_id(StreamingResponse(self._stream(jobs, events, meta, reply), media_type="text/event-stream"),
                            tag)
        return _with_id(await self._collect(http_request, jobs, events, meta, reply), tag)

    def _fitted(self, body, prompts, max_tokens, texts):
        """The prompts, cut by ``truncate_prompt_tokens``, checked against the context as vLLM's TokenizeParams
        checks them: ``max_tokens`` (0: none asked) past the context first, then each prompt beside it (``texts``:
        the text each was tokenized from, None for ids: an uncut text is measured in characters first)."""
        limit, field, cut = self.engine.max_model_len, _max_tokens_field(body), body.get("truncate_prompt_tokens")
        check_context(limit, 0, max_tokens, field)
        budget = None if limit is None else limit - max_tokens
        prompts = [_truncated(ids, cut, budget) for ids in prompts]
        for ids, text in zip(prompts, texts):
            if text is not None and cut is None:
                check_characters(limit, len(text), max_tokens, self.max_chars_per_token)
            check_context(limit, len(ids), max_tokens, field, text is not None)
        return prompts

    @functools.cached_property
    def max_chars_per_token(self):
        """The tokenizer's longest vocabulary entry, in characters (vLLM's max_chars_per_token; 0: unknown)."""
        vocab = getattr(self.engine.tokenizer, "get_vocab", None)
        return max(map(len, vocab()), default=0) if vocab is not None else 0

    async def _beams(self, body, prompts, adapter, options, n, constraint, client_gone, chat):
        """vLLM's ``use_beam_search``: per prompt, its ``n`` best beams (beam.py) as ``(generated ids, text,
        finish_reason, stop_reason, logprob entries or None)``; None if the client left meanwhile (``client_gone``).
        What beam search does not read (a constraint; a completion's echoed prompt's logprobs, which vLLM's beam
        output lacks) is refused by name rather than dropped."""
        echo_scored = not chat and _flag(body, "echo") and options["logprobs"] is not None
        for name, asked in (("structured_outputs", constraint), ("echo", echo_scored)):
            if asked:
                raise EngineError(400, f"{name} is not supported with use_beam_search"
                                       f"{' and logprobs' if name == 'echo' else ''}", name)
        eos, ignore_eos = self.engine.tokenizer.eos_token_id, options["ignore_eos"]
        answers = []
        for ids in prompts:
            max_tokens = options["max_tokens"]
            if max_tokens is None:  # the rest of the context
                max_tokens = _rest_of_context(self.engine.max_model_len, len(ids))
            self.engine._check(Request(ids, adapter, max_tokens=max_tokens))  # (the context's limits, as submit's)
            beams = await beam_search(self.engine, ids, adapter, n, max_tokens, options["temperature"],
                                      body.get("length_penalty", 1.0), ignore_eos,
                                      options["include_stop_str_in_output"], client_gone)
            if beams is None:
                return None
            for beam in beams:
                generated = beam.tokens[len(ids):]
                shown = generated[:-1] if generated and generated[-1] == eos and not ignore_eos else generated
                answers.append((generated, self.engine.tokenizer.decode(shown), beam.finish_reason, beam.stop_reason,
                                _beam_logprobs(beam, generated, options["logprobs"], chat)))
        return answers

    def _beam_answer(self, beams, meta, stream, reply):
        """The answer of a beam search: whole, or streamed as vLLM streams its one final output (a chat's role
        chunks, then one chunk per choice with all its text)."""
        chat = reply.chat
        choices = [self._choice(i, chat, echo + text, reason,
                                self._logprobs(chat, entries is not None, entries or [], start=len(echo),
                                               as_ids=reply.as_ids),
                                final=not stream, stop_reason=stop_reason,
                                extra=reply.token_ids_of(generated) if stream else reply.whole_choice(i, generated))
                   for i, ((generated, text, reason, stop_reason, entries), (echo, *_))
                   in enumerate(zip(beams, reply.echoes))]
        n_out = sum(len(generated) for generated, *_ in beams)
        usage = {"prompt_tokens": reply.n_prompt, "completion_tokens": n_out, "total_tokens": reply.n_prompt + n_out}
        if not stream:
            return JSONResponse(self._answer(meta, reply, choices, usage))
        obj = "chat.completion.chunk" if chat else "text_completion"
        include_usage = reply.usage[0]

        async def events():
            extra = {"usage": None} if include_usage else {}
            for index in range(len(choices) if chat else 0):
                yield _sse({**meta, "object": obj, **extra, "choices": [{
                    "index": index, "delta": {"role": chat.role, "content": ""}, "logprobs": None,
                    "finish_reason": None, "stop_reason": None}]})
            for choice in choices:
                yield _sse({**meta, "object": obj, "choices": [choice], **extra})
            if include_usage:
                yield _sse({**meta, "object": obj, "choices": [], "usage": usage})
            yield "data: [DONE]\n\n"
        return StreamingResponse(events(), media_type="text/event-stream")

    async def _prompt_scores(self, prompts, adapter, counts, held_by=None):
        """Per prompt, ``ranked_logprob_entry`` of each token after the first with the largest of ``counts``
        likeliest tokens (one forward over it); no counts: None."""
        if not counts:
            return [None] * len(prompts)
        return [await asyncio.to_thread(self.engine.prompt_logprobs, ids, adapter, max(counts), held_by)
                for ids in prompts]

    def _echoes(self, prompts, n, texts, scores, logprobs):
        """The _Echo each choice starts with: its prompt's text as vLLM echoes it (``texts``: the text as sent, ""
        when the choice returns token ids, None for a prompt sent as ids: those decoded, special tokens and all)
        and, with logprobs, its prompt tokens' (the first has none: nothing comes before it), as
        vLLM answers lm-evaluation-harness's scoring calls. ``texts`` None: no echo."""
        if texts is None:
            return [_NO_ECHO] * (len(prompts) * n)
        echoes = []
        for ids, score, text in zip(prompts, scores, texts):
            specials = text is None
            text = _decoded(self.engine.tokenizer, ids, False, self.engine.text_vocab) if specials else text
            entries = None
            if logprobs is not None:
                entries = [(ids[0], None, None)] + [(token, logprob, top[:logprobs])
                                                    for token, logprob, top, _ in score]
            echoes += [_Echo(text, entries, specials)] * n
        return echoes

    def _echo_logprobs(self, chat, echo, as_ids):
        """An echoed prompt's logprobs (None: not asked), its text offsets read in its echoed text."""
        reader = _OffsetReader(self.engine.tokenizer, not echo.specials, self.engine.text_vocab)
        return self._logprobs(chat, echo.entries is not None, echo.entries or [], offsets=reader, as_ids=as_ids)

    def _prompt_info(self, prompts, n, scores, k):
        """vLLM's ``prompt_logprobs`` of each choice (its prompt's; None when not asked): None for the first
        token, then per token ``{id: {"logprob", "rank", "decoded_token"}}``, the prompt's own token (ranked
        in the whole vocabulary) first, then the k likeliest (ranks 1..k), each decoded alone, as vLLM."""
        if k is None:
            return [None] * (len(prompts) * n)
        tok, vocab = self.engine.tokenizer, self.engine.text_vocab

        def entry(token, logprob, rank):
            return {"logprob": _shown(logprob), "rank": rank, "decoded_token": _decoded(tok, [token], False, vocab)}
        info = []
        for score in scores:
            rows = [None]
            for token, logprob, top, rank in score:
                row = {str(token): entry(token, logprob, rank)}
                row.update((str(t), entry(t, lp, r)) for r, (t, lp) in enumerate(top[:k], 1))  # (the token: in place)
                rows.append(row)
            info += [rows] * n
        return info

    @staticmethod
    def _emitter(loop, events, index, job):
        """``Request.emit`` for choice ``index``: called on the engine thread, right after the token that
        made the text, so how many tokens the text covers is read there (for its logprobs). The last
        token's text comes with the "done" event, as ``(finish_reason, text)``: vLLM's last chunk holds both."""
        last_text = []

        def emit(kind, value):
            if kind == "text" and job.finished:
                last_text.append(value)
                return
            if kind == "done":
                value = (value, "".join(last_text))
            try:
                loop.call_soon_threadsafe(events.put_nowait, (index, kind, value, len(job.token_logprobs)))
            except RuntimeError:  # the event loop is gone: nobody is listening any more
                job.cancel()
        return emit

    async def _collect(self, http_request, jobs, events, meta, reply):
        chat = reply.chat
        texts, reasons = [echo.text for echo in reply.echoes], [None] * len(jobs)
        clock = asyncio.get_running_loop().time
        check_at = clock() + _POLL_SECONDS
        try:
            while None in reasons:
                try:  # waits no longer than the next check: tokens that keep coming must not hide a disconnect
                    index, kind, value, _ = await asyncio.wait_for(events.get(), max(check_at - clock(), 0))
                except asyncio.TimeoutError:
                    kind = None
                if clock() >= check_at:
                    if await http_request.is_disconnected():
                        return _error(499, "the client disconnected")
                    check_at = clock() + _POLL_SECONDS
                if kind is None:
                    continue
                if kind == "text":
                    texts[index] += value
                elif kind == "error":
                    return _error(*value)
                else:
                    reasons[index], tail = value
                    texts[index] += tail
            choices = [self._choice(i, chat, texts[i], reasons[i], self._choice_logprobs(reply, job, reply.echoes[i]),
                                    True, job.stop_reason, reply.whole_choice(i, job.generated))
                       for i, job in enumerate(jobs)]
            return JSONResponse(self._answer(meta, reply, choices, self._usage(jobs, reply.n_prompt)))
        finally:
            for job in jobs:  # a no-op once finished; frees the slots if the client went away
                job.cancel()

    @staticmethod
    def _answer(meta, reply, choices, usage):
        """The JSON of a whole answer; vLLM's prompt_logprobs (null when not asked) and prompt_token_ids are a
        completion choice's, a chat's (one prompt) are the answer's."""
        if reply.chat:
            return {**meta, "object": "chat.completion", "choices": choices, "usage": usage,
                    "prompt_logprobs": reply.prompt_info[0], **reply.prompt_token_ids(0)}
        return {**meta, "object": "text_completion", "choices": choices, "usage": usage}

    async def _stream(self, jobs, events, meta, reply):
        chat, echoes = reply.chat, reply.echoes
        obj = "chat.completion.chunk" if chat else "text_completion"
        include_usage, continuous = reply.usage
        made = [0] * len(jobs)  # each choice's tokens so far (every "text" event is one; "done" is the last)

        def chunk(choices, index, top=None):
            """With include_usage, OpenAI's chunks carry "usage": null until the last one; with vLLM's
            continuous_usage_stats, each its choice's usage so far (its prompt's tokens and its own). ``top``:
            more fields of the chunk (a chat's prompt_token_ids)."""
            if continuous:
                prompt = len(jobs[index].prompt_ids)
                extra = {"usage": {"prompt_tokens": prompt, "completion_tokens": made[index],
                                   "total_tokens": prompt + made[index]}}
            else:
                extra = {"usage": None} if include_usage else {}
            return _sse({**meta, "object": obj, "choices": choices, **extra, **(top or {})})
        try:
            for index in range(len(jobs) if chat else 0):  # chat: the role first (its prompt ids), then vLLM's echo
                yield chunk([{"index": index, "delta": {"role": chat.role, "content": ""}, "logprobs": None,
                              "finish_reason": None, "stop_reason": None}], index, reply.prompt_token_ids(index))
            for index in range(len(jobs) if chat and chat.echo else 0):
                yield chunk([{"index": index, "delta": {"content": chat.echo}, "logprobs": None,
                              "finish_reason": None, "stop_reason": None}], index)
            unechoed = [not chat] * len(jobs)  # a completion's echo comes with its first token, as vLLM's
            reported, pending, failed = [0] * len(jobs), len(jobs), False
            offsets = [None] * len(jobs)  # each choice's _OffsetReader, chunk by chunk (made at its first token)
            tool_states = [{"text": "", "called": False} for _ in jobs]  # a tool choice's text so far (ChatReply.delta)
            while pending:
                index, kind, value, count = await events.get()
                if kind == "error":
                    yield _sse({"error": {"message": value[1], "type": "InternalServerError", "param": None,
                                          "code": value[0]}})
                    failed = True
                    break
                job = jobs[index]
                before, made[index] = made[index], made[index] + 1 if kind == "text" else len(job.generated)
                reason, text = value if kind == "done" else (None, value)
                stop_reason = job.stop_reason if kind == "done" else None
                count = count if kind == "text" else len(job.token_logprobs)  # the last chunk reports the rest
                offsets[index] = offsets[index] or self._offset_reader(job)
                logprobs = self._logprobs(chat, job.logprobs is not None, job.token_logprobs[reported[index]:count],
                                          start=len(echoes[index][0]), offsets=offsets[index], final=kind != "text",
                                          as_ids=reply.as_ids)
                reported[index] = count
                extra = reply.token_ids_of(job.generated[before:made[index]])
                if unechoed[index]:
                    text, logprobs = self._with_echo(text, logprobs, echoes[index], as_ids=reply.as_ids)
                    unechoed[index] = False
                    extra = {**reply.prompt_token_ids(index), **extra}  # a completion's first chunk: its prompt's ids
                delta = chat.delta(text, tool_states[index], kind == "done", index) if chat else None
                yield chunk([self._choice(index, chat, text, reason, logprobs, stop_reason=stop_reason, extra=extra,
                                          delta=delta)], index)
                pending -= kind == "done"
            if include_usage and not failed:  # OpenAI's last chunk: no choices, the request's usage
                yield _sse({**meta, "object": obj, "choices": [], "usage": self._usage(jobs, reply.n_prompt)})
            yield "data: [DONE]\n\n"
        finally:  # also when the client disconnects (Starlette cancels this generator)
            for job in jobs:
                job.cancel()

    def _with_echo(self, text, logprobs, echo, as_ids=False):
        """A completion's first chunk: its echoed prompt's text and logprobs (an _Echo) before its first token's."""
        echoed = self._echo_logprobs(False, echo, as_ids)
        if echoed is not None and logprobs is not None:
            logprobs = {key: echoed[key] + logprobs[key] for key in logprobs}
        return echo.text + text, logprobs

    async def _echo_only(self, jobs, events, meta, stream, reply):
        """``max_tokens: 0`` with echo: the prompts (and their logprobs) as the choices. As vLLM's, each choice
        generated one token (``jobs``), which the usage counts and whose end is the choice's finish_reason (and
        stop_reason), but which the answer does not show."""
        ends = {}
        while len(ends) < len(jobs):
            index, kind, value, _ = await events.get()
            if kind == "error":
                return _error(*value)
            if kind == "done":
                ends[index] = (value[0], jobs[index].stop_reason)
        choices = [self._choice(i, False, echo.text, ends[i][0], self._echo_logprobs(False, echo, reply.as_ids),
                                stop_reason=ends[i][1],
                                extra=reply.prompt_token_ids(i) if stream else reply.whole_choice(i, []))
                   for i, echo in enumerate(reply.echoes)]
        usage = self._usage(jobs, reply.n_prompt)
        include_usage, continuous = reply.usage
        if not stream:
            return JSONResponse(self._answer(meta, reply, choices, usage))

        async def events():
            for choice, prompt in zip(choices, map(len, reply.prompt_ids)):
                extra = {"usage": {"prompt_tokens": prompt, "completion_tokens": 1, "total_tokens": prompt + 1}
                         if continuous else None} if include_usage else {}
                yield _sse({**meta, "object": "text_completion", "choices": [choice], **extra})
            if include_usage:
                yield _sse({**meta, "object": "text_completion", "choices": [], "usage": usage})
            yield "data: [DONE]\n\n"
        return StreamingResponse(events(), media_type="text/event-stream")

    @staticmethod
    def _choice(index, chat, text, finish_reason, logprobs, final=False, stop_reason=None, extra=None, delta=None):
        """One choice (a stream's chunk of one: ``final`` False; ``delta``: a chat chunk's, made by ChatReply.delta).
        vLLM's ``stop_reason``: the stop string or the stop_token_id that ended it; None for an EOS, max_tokens, or
        a chunk before the last; ``extra``: vLLM's fields of its own (``_Reply.whole_choice``)."""
        if chat and chat.tool == "required" and finish_reason == "stop":  # (vLLM's since vllm#25054, as OpenAI's;
            finish_reason = "tool_calls"  # a named function's call ends with "stop")
        if chat and final:
            piece = {"message": chat.message(text)}
        elif chat:
            piece = {"delta": delta if delta is not None else {"content": text} if text else {}}
        else:
            piece = {"text": text}
        return {"index": index, **piece, "logprobs": logprobs, "finish_reason": finish_reason,
                "stop_reason": stop_reason, **(extra or {})}

    @staticmethod
    def _usage(jobs, n_prompt):
        """``n_prompt``: each prompt counted once (its n choices share it); then every choice's tokens, as vLLM."""
        n_out = sum(len(job.generated) for job in jobs)
        return {"prompt_tokens": n_prompt, "completion_tokens": n_out, "total_tokens": n_prompt + n_out}

    def _choice_logprobs(self, reply, job, echo):
        """A whole choice's logprobs: its echoed prompt's (a completion's _Echo), then its generated tokens'."""
        if job.logprobs is None:
            return None
        echoed = self._echo_logprobs(reply.chat, echo, reply.as_ids)
        generated = self._logprobs(reply.chat, True, job.token_logprobs, start=len(echo.text),
                                   offsets=self._offset_reader(job), as_ids=reply.as_ids)
        return generated if echoed is None else {key: echoed[key] + generated[key] for key in generated}

    def _offset_reader(self, job=None):
        """An _OffsetReader for a prompt (no ``job``) or for ``job``'s generated tokens: read after the prompt
        tokens its detokenizer took as context (a word's leading space is part of a completion's text, as
        vLLM decodes it), counted from the end of their text."""
        if job is None:
            return _OffsetReader(self.engine.tokenizer, True, self.engine.text_vocab)
        context = job.detokenizer.context_ids if job.detokenizer is not None else []
        return _OffsetReader(self.engine.tokenizer, job.skip_special_tokens, self.engine.text_vocab, context)

    def _logprobs(self, chat, wanted, entries, start=0, offsets=None, final=True, as_ids=False):
        """OpenAI's logprobs object for ``entries`` ((token, logprob, top) per token; a prompt's first token
        has None for both), or None if not ``wanted``. A completion's ``text_offset``: where each token's
        text starts in the choice's text, which holds ``start`` characters before these tokens' (the
        echoed prompt) and the text of the tokens ``offsets`` (an _OffsetReader: a stream's earlier chunks;
        None: a prompt's) has read; ``final``: no chunk follows. ``as_ids``: tokens named ``token_id:N``
        (a chat's ``bytes`` stay the token's own), as vLLM's return_tokens_as_token_ids."""
        if not wanted:
            return None
        tok, vocab = self.engine.tokenizer, self.engine.text_vocab
        text = (lambda token: f"token_id:{token}") if as_ids else (lambda token: _token_text(tok, token, vocab))
        if chat:
            def entry(token, logprob):
                raw = _token_bytes(tok, token, vocab)
                return {"token": text(token), "logprob": _shown(logprob), "bytes": None if raw is None else list(raw)}
            return {"content": [{**entry(token, logprob), "top_logprobs": [
                entry(t, lp) for t, lp in _chosen_first(token, logprob, top)[:len(top)]]}
                for token, logprob, top in entries]}
        ids = [token for token, _, _ in entries]
        return {"tokens": [text(token) for token in ids], "token_logprobs": [_shown(lp) for _, lp, _ in entries],
                "top_logprobs": [None if top is None else {text(t): _shown(lp) for t, lp in
                                                           _chosen_first(token, logprob, top)}
                                 for token, logprob, top in entries],
                "text_offset": [start + at for at in (offsets or self._offset_reader()).add(ids, final)]}

    # --- routes --------------------------------------------------------------------------------
    def _card(self, name):
        """vLLM's model card; an adapter's parent is the base and its root the folder it was loaded from. As
        vLLM's, only the base's card carries max_model_len (an adapter's card leaves it null)."""
        parent = None if name in self.base_names else self.model_name
        return {"id": name, "object": "model", "created": self.created, "owned_by": "minilora",
                "root": self.engine.adapter_paths.get(name, name) if parent else name, "parent": parent,
                "max_model_len": None if parent else self.engine.max_model_len}

    async def models(self, request):
        return JSONResponse({"object": "list", "data": [self._card(name) for name in self._names()]})

    def _names(self):
        """Every name a request may use: the base model's (vLLM's served names), then each adapter's."""
        return self.base_names + self.engine.adapters()

    async def model(self, request):
        """``GET /v1/models/{model}``: one card (OpenAI's ``client.models.retrieve``), 404 for an unknown name."""
        name = request.path_params["model"]
        if name not in self._names():
            raise EngineError(404, model_not_found(name), "model")
        return JSONResponse(self._card(name))

    async def completions(self, request):
        body = read_fields(await self._json(request), CompletionRequest)
        prompt = body.get("prompt")
        # OpenAI's four shapes: a string, a list of token ids, or a list of either (several prompts)
        several = isinstance(prompt, list) and bool(prompt) and all(isinstance(p, (str, list)) for p in prompt)
        special = body.get("add_special_tokens", True)  # vLLM's extra: the tokenizer's BOS (default) or not
        given = prompt if several else [prompt]
        prompts = [self._prompt_ids(p, special) for p in given]
        texts = [p if isinstance(p, str) else None for p in given]
        return await self._run(request, body, prompts, chat=None, texts=texts)

    def _prompt_ids(self, prompt, add_special_tokens=True):
        """A prompt's ids, as vLLM's renderer makes them: text encoded ("" in a list too: its BOS; a prompt of ""
        alone is fields.py's refusal), or token ids of the model's vocabulary (an id past it is vLLM's "out of
        vocabulary"); no ids at all is vLLM's empty-prompt refusal."""
        if isinstance(prompt, str):
            ids = _encoded(lambda: self.engine.tokenizer.encode(prompt, add_special_tokens=add_special_tokens),
                           "prompt")
        elif isinstance(prompt, list) and prompt and all(isinstance(t, int) and not isinstance(t, bool)
                                                          for t in prompt):
            if min(prompt) < 0:
                raise EngineError(400, f"prompt token ids must be at least 0, got {min(prompt)}", "prompt")
            if max(prompt) >= self.engine.vocab_size:
                raise EngineError(400, f"Token id {max(prompt)} is out of vocabulary", "prompt")
            ids = prompt  # token ids, as OpenAI's API allows
        else:
            raise EngineError(400, "prompt must be a string, a non-empty list of token ids, or a list of those",
                              "prompt")
        if not ids:
            raise EngineError(400, "The decoder prompt cannot be empty", "prompt")
        return list(ids)

    async def chat_completions(self, request):
        tok = self.engine.tokenizer
        body = read_fields(await self._json(request), ChatCompletionRequest)
        self._template_allowed(body)
        # (no messages at all: transformers' apply_chat_template refuses them, as vLLM's answer does)
        text, ids = _encoded(lambda: _chat_prompt(tok, body["messages"], body), "messages")
        messages = [_text_message(m) for m in body["messages"]]
        return await self._run(request, body, [list(ids)], chat=_chat_reply(messages, body), texts=[text])

    async def tokenize(self, request):
        """vLLM's ``POST /tokenize``: a completion's ``prompt`` (text, with the tokenizer's BOS unless
        ``add_special_tokens`` is false) or a chat's ``messages`` (rendered as a chat request renders them:
        ``add_generation_prompt``, ``continue_final_message``, ``chat_template``, ``tools``, ...) as the ids a
        request would run, ``{count, max_model_len, tokens, token_strs}`` (``return_token_strs``: each id's
        vocabulary entry, else null). Not checked against the context, as vLLM's; an unknown model is its 404."""
        model, body = read_union(await self._json(request), TokenizeRequest)
        self._adapter_of(body)
        tok = self.engine.tokenizer
        if model is TokenizeChatRequest:
            self._template_allowed(body)
            _, ids = _encoded(lambda: _chat_prompt(tok, body["messages"], body), "messages")
        else:  # (a text: the completion member's prompt is required)
            ids = _encoded(lambda: tok.encode(body["prompt"], add_special_tokens=body.get("add_special_tokens", True)),
                           "prompt")
        ids = list(ids)
        return JSONResponse({"count": len(ids), "max_model_len": self.engine.max_model_len, "tokens": ids,
                             "token_strs": tok.convert_ids_to_tokens(ids) if body.get("return_token_strs") else None})

    async def detokenize(self, request):
        """vLLM's ``POST /detokenize``: ``tokens`` (ids, each at least 0) as ``{"prompt": text}``, decoded as the
        tokenizer decodes them (special tokens kept; an id past the tokenizer has no text)."""
        body = read_fields(await self._json(request), DetokenizeRequest)
        self._adapter_of(body)
        ids = body["tokens"]  # (required, each in [0, 2**63 - 1]: fields.py)
        return JSONResponse({"prompt": _decoded(self.engine.tokenizer, ids, False, self.engine.text_vocab)})

    async def load_adapter(self, request):
        """vLLM's route: 200 with its plain-text body (what its docs show curl printing); a folder that holds
        no adapter is a 404, an adapter that does not load a 400; a loaded name again is a 400 unless
        ``load_inplace`` (then its new weights serve the name's requests from now on, those in flight too)."""
        body = read_fields(await self._json(request), LoadLoRAAdapterRequest)
        name, path = body["lora_name"], body["lora_path"]  # (both required: fields.py)
        if not (name and path):
            raise EngineError(400, "Both 'lora_name' and 'lora_path' must be provided.",
                              "lora_path" if name else "lora_name", kind="InvalidUserInput")
        if name in self.base_names:
            raise EngineError(400, f"{name!r} is the base model's name", "lora_name")
        replace = body.get("load_inplace", False)
        await asyncio.to_thread(self.engine.load_adapter, name, path, replace)
        return PlainTextResponse(f"Success: LoRA adapter '{name}' added successfully.")

    async def unload_adapter(self, request):
        name = read_fields(await self._json(request), UnloadLoRAAdapterRequest)["lora_name"]  # (required: fields.py)
        if not name:  # a bad request, as vLLM's; an unknown name is the 404
            raise EngineError(400, "'lora_name' needs to be provided to unload a LoRA adapter.", "lora_name",
                              kind="InvalidUserInput")
        await asyncio.to_thread(self.engine.unload_adapter, name)
        return PlainTextResponse(f"Success: LoRA adapter '{name}' removed successfully.")

    async def health(self, request):
        problem = self.engine.health()
        if problem is not None:  # every request would fail: a load balancer must see it here too
            raise EngineError(503, problem)
        return JSONResponse({"status": "ok", "running": len(self.engine.rows), "queued": len(self.engine.waiting)})


# a content part's type -> the key of its text (vLLM's MM_PARSER_MAP: these parts are text; the rest are media)
_TEXT_PART_KEYS = {"text": "text", "refusal": "refusal", "thinking": "thinking"}
_MEDIA_KEYS = ("image_url", "image_embeds", "audio_embeds", "audio_url", "input_audio", "video_url")


def _text_message(message, as_parts=False):
    """A message (its shape checked by fields.py's ChatMessage, vLLM's) as vLLM's _parse_chat_message_content hands
    it to the chat template: its role; its content's texts (null or left out: none; a list of parts: its strings and
    its text / refusal / thinking parts; a media part (an image, audio, video) needs a multimodal model: vLLM's
    ValueError, a 400), joined with newlines, or ``as_parts`` (a template that loops over a message's content:
    vLLM's "openai" content format) each as a ``{"type": "text", "text": ...}`` part; and of its other keys only
    those vLLM passes on: an assistant's tool calls (their arguments parsed, as vLLM's _postprocess_messages) and
    reasoning (sent as ``reasoning`` or ``reasoning_content``, passed on as both), a tool's ``tool_call_id``, a
    ``name``."""
    content = message.get("content")
    parts = [] if content is None else [content] if isinstance(content, str) else content
    texts = [text for text in map(_part_text, parts) if text is not None]
    role = message["role"]
    passed = {"role": role, "content": [{"type": "text", "text": text} for text in texts] if as_parts
              else "\n".join(texts)}
    if role == "assistant":
        if message.get("tool_calls") is not None:
            passed["tool_calls"] = [_parsed_arguments(call) for call in message["tool_calls"]]
        reasoning = message.get("reasoning") or message.get("reasoning_content")
        if reasoning is not None:
            passed["reasoning"] = passed["reasoning_content"] = reasoning
    elif role == "tool" and "tool_call_id" in message:
        passed["tool_call_id"] = message["tool_call_id"]
    if isinstance(message.get("name"), str):
        passed["name"] = message["name"]
    return passed


def _part_text(part):
    """A content part's text (None: a text part without one, which vLLM skips)."""
    if isinstance(part, str):
        return part
    kind = part.get("type")
    if kind in _TEXT_PART_KEYS:
        return part.get(_TEXT_PART_KEYS[kind])
    if kind in _MEDIA_KEYS or (kind is None and any(key in part for key in _MEDIA_KEYS)):
        raise validation_error("The model is not multimodal.")  # vLLM's ModelConfig.get_multimodal_config
    raise validation_error(f"Unknown part type: {kind}")  # (a "file" part: vLLM's parser has none)


def _parsed_arguments(call):
    """A tool call sent back in an assistant message (fields.py: a function call's ``arguments`` is JSON text), its
    arguments read into a dict as vLLM's _postprocess_messages does (tool-use chat templates write them with
    ``tojson``; "": {}). A custom tool call (OpenAI's) has none: it reaches the template as sent."""
    if "function" not in call:
        return call
    function = call["function"]
    try:
        arguments = json.loads(function["arguments"]) if function["arguments"] else {}
    except (ValueError, RecursionError) as exc:  # (nested past Python's stack: no JSON minilora can read)
        raise EngineError(400, f"messages: a tool call's arguments are not JSON: {exc}", "messages") from None
    return {**call, "function": {**function, "arguments": arguments}}


def _decoded(tokenizer, ids, skip_special_tokens, text_vocab):
    """The text of ``ids``; an id past the tokenizer (a prompt may hold any of the model's ids) has none."""
    ids = ids if text_vocab is None else [i for i in ids if i < text_vocab]
    return tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)


_LONGEST_UNSETTLED = 16  # tokens read by windows without the text settling: past it, prefixes are decoded whole


class _OffsetReader:
    """Where the text of each token starts in a choice's text, read as the tokens come (a stream's chunks too).

    Decoded, not the lengths of the token names added up: a skipped special token (``<bos>``) takes no room in
    the text, and the pieces of one character start where the character does (a prefix that ends in the
    middle of a character decodes to U+FFFD there, which the whole text does not have; a byte-fallback
    decoder turns a whole cut run of byte tokens into U+FFFDs: offsets never go back).

    Linear in the tokens, as vLLM's incremental detokenizer: a prefix's text is the settled text (a prefix whose
    text begins the whole text, no character cut short) and a window decoded from the settled point before it
    (the decoder's context: a word's leading space), not the whole prefix again.

    ``context``: tokens read first whose text is not part of the choice's (a completion's prompt tokens, which
    vLLM's detokenizer decodes the first new tokens after): offsets count from the end of their text."""

    def __init__(self, tokenizer, skip_special_tokens=True, text_vocab=None, context=()):
        self.tokenizer, self.skip_special_tokens, self.text_vocab = tokenizer, skip_special_tokens, text_vocab
        self.every = []  # the tokens read
        self.anchor = self.settled = 0  # the settled point (every[:settled] gives text[:length]) and its context's
        self.length = self.reached = 0  # the settled text's length; the furthest offset given
        self.final = True  # no tokens to come after those read (see add)
        self.shift = 0
        if context:
            self.add(list(context), final=False)
            self.shift = len(self._decode(list(context)))

    def _decode(self, ids):
        return _decoded(self.tokenizer, ids, self.skip_special_tokens, self.text_vocab)

    def add(self, ids, final=True):
        """The offsets of ``ids``, the next tokens, counted from the start of the text. Not ``final`` (more
        tokens to come: a stream's chunk), a U+FFFD that ends the text so far is a character that may still
        be completed: no token starts after it yet."""
        first = len(self.every)
        self.every += ids
        self.final = final
        rest = None  # the text from the settled length on, decoded from the anchor (made when needed)
        offsets = []
        for end in range(first, len(self.every)):
            if end > self.settled:
                rest = self._rest() if rest is None else rest
                prefix_length, settles, windowed = self._prefix_text_length(end, rest)
                self.reached = max(self.reached, prefix_length)
                if settles:  # the text after the new settled point: the same window's, or decoded again
                    rest = rest[prefix_length - self.length:] if windowed else None
                    self._settle(end, prefix_length)
            offsets.append(max(self.reached - self.shift, 0))
        return offsets

    def _rest(self):
        known, window = self._decode(self.every[self.anchor:self.settled]), self._text(self.every[self.anchor:])
        return window[len(known):] if window.startswith(known) else False  # False: windows cannot read it

    def _text(self, ids):
        """The text of ``ids`` (to the end of the tokens read), less a character not yet complete."""
        text = self._decode(ids)
        return text[:-1] if not self.final and text.endswith("\ufffd") else text

    def _prefix_text_length(self, end, rest):
        """How much of the text the prefix ``every[:end]`` gives (the common beginning); whether it settles the
        text: its whole text is that beginning and does not end in U+FFFD (a character that later bytes may
        complete, or not); and whether a window read it (else the whole prefix was decoded)."""
        known, piece = self._decode(self.every[self.anchor:self.settled]), self._decode(self.every[self.anchor:end])
        if rest is False or end - self.settled > _LONGEST_UNSETTLED or not piece.startswith(known):
            prefix = self._decode(self.every[:end])  # what windows cannot read: the whole prefix
            common = len(os.path.commonprefix([prefix, self._text(self.every)]))
            return common, common == len(prefix) and not prefix.endswith("\ufffd"), False
        tail = piece[len(known):]
        common = len(os.path.commonprefix([tail, rest[:len(tail)]]))
        return self.length + common, common == len(tail) and not tail.endswith("\ufffd"), True

    def _settle(self, end, length):
        if self._decode(self.every[self.settled:end]):  # context that decodes to nothing is none: a decoder
            self.anchor = self.settled  # strips a window's first space, a skipped special token gives no text
        self.settled, self.length = end, length


def _beam_logprobs(beam, generated, k, chat):
    """A beam's logprob entries ``(token, logprob, top)`` for its generated tokens, read as vLLM reads a beam's
    logprobs: each step's candidates in their order (the token that step's request sampled, then the likeliest),
    their first k + 1 as a completion's top_logprobs (_create_completion_logprobs), their first k as a chat's
    (_get_top_logprobs). None without logprobs."""
    if k is None:
        return None
    keep = k if chat else k + 1
    return [(token, step[token], list(step.items())[:keep]) for token, step in zip(generated, beam.logprobs)]


def _shown(logprob):
    """A logprob as vLLM's answers show it: at least -9999.0, "the JSON-serializable float that OpenAI uses" for
    -inf (a token a structured output's grammar rules out has logprob -inf: its logit is masked before the sampler
    reads it; vLLM's clamp_prompt_logprobs does the same to prompt_logprobs); a prompt's first token has none
    (None)."""
    return None if logprob is None else max(logprob, -9999.0)


def _chosen_first(token, logprob, top):
    """A step's candidates as vLLM lists them (its _make_logprob_dict): the token chosen (sampled, or the prompt's)
    first, then the ``top`` likeliest, each id once. A completion reports them all (k + 1 at most, OpenAI's
    rule); a chat's top_logprobs are the first k of them, as vLLM's _get_top_logprobs takes them -- so a sampled
    token that is not the likeliest comes first there, and the k-th likeliest drops out."""
    return [(token, logprob)] + [(t, lp) for t, lp in top if t != token]


def _token_text(tokenizer, token, text_vocab=None):
    """A token as logprobs name it: its text, or OpenAI's ``bytes:\\xNN`` for a piece of a character
    (decoded alone, every such byte would read as the same U+FFFD and the top_logprobs keys collide);
    an id the tokenizer has no text for is ``token_id:N``, as vLLM's --return-tokens-as-token-ids."""
    raw = _token_bytes(tokenizer, token, text_vocab)
    if raw is None:
        return f"token_id:{token}"
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return "bytes:" + "".join(f"\\x{b:02x}" for b in raw)


class ChatReply(collections.namedtuple("ChatReply", "role echo tool")):
    """How a chat's answer is written, as vLLM writes it: the ``role`` it speaks in (the assistant's, or with
    ``add_generation_prompt: false`` the last message's: it goes on with that message), the text its
    content starts with (vLLM's ``echo``: the last message's, when its role is the answer's; else "") and the
    ``tool`` its text calls (None: plain content; a named function ``{"name"}``, whose arguments the text is;
    "required": the text is a JSON list of ``{"name", "parameters"}`` calls)."""

    def message(self, text):
        """A whole answer's message: vLLM's for a tool choice is ``content: ""`` and the calls."""
        if self.tool is None:
            return {"role": self.role, "content": text}
        calls = _tool_calls(self.tool, text)
        if calls is None:  # (a "required" list cut short by max_tokens: no calls to read, the text as it is)
            return {"role": self.role, "content": text}
        return {"role": self.role, "content": "", "tool_calls": calls}

    def delta(self, text, state, done, index=0):
        """A stream chunk's delta. A named function's arguments stream as vLLM's: the first piece with the call's
        id, type and name, then ``{"index", "function": {"arguments"}}`` (the index: the choice's, as vLLM numbers
        a named call); "required" calls as _required_call_deltas writes them (``state``: this choice's text so far
        and what of its calls went out)."""
        if self.tool is None:
            return {"content": text} if text else {}
        state["text"] += text
        if self.tool == "required":
            return _required_call_deltas(state, done)
        if not text:
            return {}
        call = {"index": index, "function": {"arguments": text}}
        if not state["called"]:
            state["called"] = True
            call = {"index": index, "id": _tool_call_id(), "type": "function",
                    "function": {"name": self.tool["name"], "arguments": text}}
        return {"tool_calls": [call]}


def _required_call_deltas(state, done):
    """A "required" answer's stream delta, as vLLM's extract_tool_call_required_streaming writes one: each call's
    header (``index``, ``id``, ``type``, its name and ``arguments: ""``) once its name is in the text, then its
    arguments whole (the parameters as JSON) once a later call begins or the answer ends."""
    calls, deltas = _calls_so_far(state["text"]), []
    for index, (name, parameters, complete) in enumerate(calls):
        if index == state.setdefault("headers", 0) and name is not None:
            deltas.append({"index": index, "id": _tool_call_id(), "type": "function",
                           "function": {"name": name, "arguments": ""}})
            state["headers"] += 1
        if index == state.setdefault("flushed", 0) < state["headers"] and complete and (
                done or index < len(calls) - 1):
            deltas.append({"index": index, "function": {"arguments": json.dumps(parameters, ensure_ascii=False)}})
            state["flushed"] += 1
    return {"tool_calls": deltas} if deltas else {}


_CALL_NAME = re.compile(r'\{\s*"name"\s*:\s*("(?:[^"\\]|\\.)*")')


def _calls_so_far(text):
    """The calls of a "required" answer's JSON list so far: ``(name, parameters, complete)`` each, the last one
    perhaps cut short (its name read once its string is closed; no parameters yet)."""
    start = text.find("[")
    calls, at, decoder = [], start + 1, json.JSONDecoder()
    while start >= 0:
        at = len(text) - len(text[at:].lstrip())
        if at >= len(text) or text[at] == "]":
            break
        try:
            call, at = decoder.raw_decode(text, at)
        except (ValueError, RecursionError):  # (a model's [[[[... past Python's stack is no call either)
            named = _CALL_NAME.match(text, at)
            calls.append((json.loads(named.group(1)) if named else None, None, False))
            break
        call = call if isinstance(call, dict) else {}
        calls.append((call.get("name"), call.get("parameters"), True))
        at = len(text) - len(text[at:].lstrip())
        at += text.startswith(",", at)
    return calls


def _tool_call_id():
    return f"chatcmpl-tool-{uuid.uuid4().hex}"  # vLLM's make_tool_call_id ("random")


def _tool_calls(tool, text):
    """OpenAI's ``tool_calls`` of a constrained answer: the named function with the text as its arguments, or
    (``tool == "required"``) each ``{"name", "parameters"}`` of the text's JSON list (None: not such a list)."""
    if tool != "required":
        return [{"id": _tool_call_id(), "type": "function", "function": {"name": tool["name"], "arguments": text}}]
    try:
        calls = json.loads(text)
    except (ValueError, RecursionError):  # (the model's text nested past Python's stack: no list of calls)
        return None
    if not isinstance(calls, list) or not all(isinstance(c, dict) and isinstance(c.get("name"), str) for c in calls):
        return None
    return [{"id": _tool_call_id(), "type": "function",
             "function": {"name": c["name"], "arguments": json.dumps(c.get("parameters"), ensure_ascii=False)}}
            for c in calls]


def _chat_reply(messages, body):
    add_generation_prompt = body.get("add_generation_prompt", True)
    role = "assistant" if add_generation_prompt else messages[-1]["role"]
    last = messages[-1]
    _, choice = tool_choice_of(body)
    return ChatReply(role, last["content"] if _flag(body, "echo") and last["role"] == role else "",
                     None if choice == "none" else choice)


def _template_variables(tokenizer, template, body):
    """The chat template's variables a request sets, as vLLM passes them: its ``chat_template_kwargs``, only
    those the template reads (a name such as ``tokenize`` is no template's business), then ``documents``
    and ``reasoning_effort``."""
    import jinja2
    from jinja2 import meta
    kwargs = body.get("chat_template_kwargs") or {}
    source = tokenizer.get_chat_template(template, body.get("tools"))
    read = meta.find_undeclared_variables(jinja2.Environment().parse(source)) if kwargs else set()
    variables = {name: value for name, value in kwargs.items() if name in read}
    variables.update({name: body[name] for name in ("documents", "reasoning_effort") if body.get(name) is not None})
    return variables


def _chat_prompt(tokenizer, messages, body):
    """The prompt of a chat (its ``messages`` as the request sent them: _text_message makes them the template's;
    its text, its ids), with vLLM's extras: ``add_generation_prompt`` (default true),
    ``continue_final_message`` (the reply goes on from a partial last message) and a request's own
    ``chat_template``. Refusals are vLLM's: both flags sent true is its request validator's (fields.py); a
    template that refuses the conversation (``raise_exception``, e.g. roles that do not alternate, or
    continue_final_message with the default add_generation_prompt, transformers' refusal) is the client's mistake,
    a 400 with the template's (transformers') words alone and no param, as vLLM's create_error_response writes a
    ValueError."""
    from jinja2.exceptions import TemplateError
    add_generation_prompt = body.get("add_generation_prompt") is None or _flag(body, "add_generation_prompt")
    continue_final = _flag(body, "continue_final_message")
    template = body.get("chat_template")  # (a string: fields.py)
    if template is None and getattr(tokenizer, "chat_template", None) is None:  # vLLM's ChatTemplateResolutionError
        raise validation_error("As of transformers v4.44, default chat template is no longer allowed, so you must "
                               "provide a chat template if the tokenizer does not define one.")
    as_parts = _loops_over_content(tokenizer.get_chat_template(template, body.get("tools")))
    messages = [_text_message(message, as_parts) for message in messages]
    try:
        variables = _template_variables(tokenizer, template, body)
        text = tokenizer.apply_chat_template(messages, chat_template=template,
                                             add_generation_prompt=add_generation_prompt,
                                             continue_final_message=continue_final, tokenize=False,
                                             tools=body.get("tools"), **variables)
        # vLLM's add_special_tokens (default false): the template wrote the special tokens; true adds the BOS again
        return text, tokenizer.encode(text, add_special_tokens=body.get("add_special_tokens", False))
    except UnicodeEncodeError:
        raise  # a lone surrogate in the text: _encoded names it
    except (TemplateError, ValueError, TypeError, RuntimeError) as exc:  # what vLLM answers with a 400
        raise validation_error(str(exc)) from None


@functools.lru_cache(maxsize=32)  # (a model's template is the same every request: parsed once)
def _loops_over_content(source):
    """Whether a chat template loops over a message's content (``{% for part in message['content'] %}``): vLLM's
    _detect_content_format, "openai" (the content as a list of parts) where it does, else "string". The messages
    are the loop variables over ``messages`` or a name set from it (``{% set loop_messages = messages[1:] %}``),
    the content ``message['content']``, ``message.content`` or a name set from one of those."""
    import jinja2
    from jinja2 import nodes
    try:
        tree = jinja2.Environment(extensions=["jinja2.ext.loopcontrols"]).parse(source)
    except (jinja2.TemplateSyntaxError, TypeError):  # (a template jinja cannot read: rendering it will say so)
        return False

    def names_set_from(is_source):
        """The names assigned (``set``) a value that ``is_source`` accepts, to a fixpoint."""
        found, grown = set(), True
        while grown:
            grown = False
            for assign in tree.find_all(nodes.Assign):
                if isinstance(assign.target, nodes.Name) and assign.target.name not in found \
                        and is_source(assign.node, found):
                    found.add(assign.target.name)
                    grown = True
        return found

    def is_messages(node, aliases):
        node = node.node if isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Slice) else node
        return isinstance(node, nodes.Name) and (node.name == "messages" or node.name in aliases)

    message_lists = names_set_from(is_messages) | {"messages"}
    message_names = {loop.target.name for loop in tree.find_all(nodes.For)
                     if isinstance(loop.target, nodes.Name) and isinstance(loop.iter, nodes.Name)
                     and loop.iter.name in message_lists}

    def is_content(node, aliases=()):
        if isinstance(node, nodes.Name):
            return node.name in aliases
        key = node.arg.value if isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const) else \
            node.attr if isinstance(node, nodes.Getattr) else None
        return key == "content" and isinstance(node.node, nodes.Name) and node.node.name in message_names

    contents = names_set_from(is_content)
    return any(is_content(loop.iter, contents) for loop in tree.find_all(nodes.For))


def _encoded(encode, param):
    """Tokenize; JSON may carry a lone surrogate ("\\udcff"), which is no text any tokenizer encodes: a 400."""
    try:
        return encode()
    except UnicodeEncodeError as exc:
        bad = exc.object[exc.start:exc.end].encode("unicode_escape").decode()
        raise EngineError(400, f"{param} is not valid Unicode text: it holds {bad} (a lone surrogate)", param) from None


def _fingerprint(engine, model_name):
    """OpenAI's ``system_fingerprint``: names what, besides the request and its seed, decides the output
    (minilora's version, the model, its dtype and device); the same seeded request under the same
    fingerprint gives the same text."""
    from .. import __version__
    parameter = next(iter(engine.model.parameters()), None)
    where = (str(parameter.dtype), str(parameter.device)) if parameter is not None else ()
    key = "|".join([__version__, model_name, *where])
    return "fp_" + hashlib.sha256(key.encode()).hexdigest()[:10]


def _client_request_id(http_request, body):
    """vLLM's request id: the client's ``X-Request-Id`` header (a gateway's, to follow one request through its
    logs), else the body's ``request_id`` (vLLM's extra), else None; the answer's id is ``cmpl-`` + it."""
    return http_request.headers.get("x-request-id") or body.get("request_id") or None


def _with_id(response, request_id):
    """``request_id`` as the ``x-request-id`` header (OpenAI's clients read it: ``._request_id``)."""
    response.headers["x-request-id"] = request_id
    return response


def _sse(obj):
    return f"data: {json.dumps(obj)}\n\n"


def _authorized(request, api_key):
    """vLLM's ``--api-key``: every ``/v1`` request must carry ``Authorization: Bearer KEY`` (what OpenAI's
    clients send for their ``api_key``); ``/health`` stays open, as vLLM's."""
    if api_key is None or not request.url.path.startswith("/v1"):
        return True
    given = request.headers.get("authorization", "")
    return secrets.compare_digest(given.encode(), f"Bearer {api_key}".encode())


def _guarded(handler, api_key=None, path=None):
    """An engine refusal becomes OpenAI's error JSON with its status; a request without the API key
    (when the server has one) is a 401, which OpenAI's clients raise as AuthenticationError; a body the route's
    pydantic model refuses is vLLM's answer to FastAPI's RequestValidationError (``_invalid_body``)."""
    async def route(request):
        if not _authorized(request, api_key):
            return _error(401, "a valid API key is required: this server runs with --api-key; send "
                               "'Authorization: Bearer KEY' (OpenAI's clients: api_key=KEY)", kind="Unauthorized")
        try:
            return await handler(request)
        except EngineError as exc:
            return _error(exc.status, exc.message, exc.param, exc.kind)
        except RequestValidationError as exc:
            where = f"{request.method} {request.scope.get('root_path', '').rstrip('/')}{path}"
            return _invalid_body(exc.errors, {**_endpoint_of(handler), "path": where})
        except _BadBody as exc:
            return _error(400, str(exc), kind="Bad Request")
        except RecursionError:  # a request's values nested deeper than the code reading them can recurse
            return _error(400, "the request nests its values too deeply to be read (Python's recursion limit: "
                               f"{sys.getrecursionlimit()})")
        except Exception as exc:  # a fault of the server's: still OpenAI's error JSON (Starlette's is plain text)
            logging.getLogger("minilora.serve").exception("%s %s failed", request.method, request.url.path)
            return _error(500, f"the server failed: {type(exc).__name__}: {exc}")
    return route


@functools.cache
def _endpoint_of(handler):
    """FastAPI's endpoint context of a route's function (_extract_endpoint_context): its file, first line and name,
    which its RequestValidationError prints."""
    try:
        return {"file": inspect.getsourcefile(handler), "line": inspect.getsourcelines(handler)[1],
                "function": handler.__name__}
    except (TypeError, OSError):
        return {}


def _invalid_body(errors, endpoint):
    """vLLM 0.24's validation_exception_handler on FastAPI's RequestValidationError: a 400 of type "Bad Request";
    param the parameter of the first VLLMValidationError among the errors (a model's own check), else the first
    error's loc as clean_loc_for_param writes it; the message ``f"{exc_str} {errors_str}"``: FastAPI's str(exc)
    (the count, each error, the endpoint that refused the body), then the errors list, with object addresses
    masked (sanitize_message)."""
    checks = [error["ctx"]["error"] for error in errors if isinstance(error.get("ctx", {}).get("error"), ValueError)]
    param = next((check.parameter for check in checks if isinstance(check, VLLMValidationError)), None)
    if param is None and errors:
        param = _clean_loc(errors[0]["loc"])
    exc_str = f"{len(errors)} validation error{'s' if len(errors) != 1 else ''}:\n"
    exc_str = (exc_str + "".join(f"  {error}\n" for error in errors) + _endpoint_shown(endpoint)).rstrip()
    message = re.sub(r" at 0x[0-9a-f]+>", ">", f"{exc_str} {errors}")
    return _error(400, message, param, kind=HTTPStatus.BAD_REQUEST.phrase)


def _endpoint_shown(endpoint):
    """FastAPI's ValidationException._format_endpoint_context."""
    if not all(endpoint.get(key) for key in ("file", "line", "function")):
        return f"\n  Endpoint: {endpoint['path']}" if endpoint.get("path") else ""
    shown = f'\n  File "{endpoint["file"]}", line {endpoint["line"]}, in {endpoint["function"]}'
    return shown + (f"\n    {endpoint['path']}" if endpoint.get("path") else "")


# pydantic-core's names of the schemas that wrap a field (a union member's, a validator's), which are no field of
# the request: vLLM's clean_loc_for_param leaves them (and any bracketed name) out of an error's param
_SCHEMA_NAMES = frozenset({"function-wrap", "function-after", "function-before", "function-plain", "json-or-python",
                           "lax-or-strict", "chain", "default", "nullable", "tagged-union", "union", "call",
                           "arguments", "is-instance", "is-subclass", "callable", "str", "int", "float", "bool",
                           "bytes", "bytearray", "list", "tuple", "dict", "set", "frozenset", "complex", "none",
                           "nonetype"})


def _clean_loc(loc):
    names = [str(key) for key in loc]
    fields = [name for name in names if not re.search(r"[\[\]{}()]", name) and name.lower() not in _SCHEMA_NAMES]
    return ".".join(fields or names)


def create_app(engine, model_name="base", api_key=None, aliases=(), trust_request_chat_template=False):
    """A Starlette app serving ``engine``; the engine thread starts with the app and stops with it.
    ``api_key``: required of every /v1 request, as vLLM's ``--api-key`` (None: no key); ``aliases``:
    more names for the base model (vLLM's further ``--served-model-name`` names); ``trust_request_chat_template``:
    vLLM's flag, without which a request's own chat template is refused."""
    server = _Server(engine, model_name, aliases, trust_request_chat_template)
    routes = [Route(path, _guarded(handler, api_key, path), methods=[method]) for path, handler, method in [
        ("/v1/models", server.models, "GET"), ("/v1/models/{model:path}", server.model, "GET"),
        ("/v1/completions", server.completions, "POST"), ("/v1/chat/completions", server.chat_completions, "POST"),
        ("/tokenize", server.tokenize, "POST"), ("/detokenize", server.detokenize, "POST"),
        ("/v1/load_lora_adapter", server.load_adapter, "POST"),
        ("/v1/unload_lora_adapter", server.unload_adapter, "POST"), ("/health", server.health, "GET")]]

    @contextlib.asynccontextmanager
    async def lifespan(app):
        if not engine.started:
            engine.start()
        yield
        await asyncio.to_thread(engine.shutdown)

    async def http_error(request, exc):  # an unknown route or method: OpenAI's error JSON too, not plain text
        return _error(exc.status_code, f"{exc.detail}: {request.method} {request.url.path}",
                      kind=HTTPStatus(exc.status_code).phrase)

    return Starlette(routes=routes, lifespan=lifespan, exception_handlers={HTTPException: http_error})
