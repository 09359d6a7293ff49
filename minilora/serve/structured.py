"""Structured outputs: a request's tokens held to a JSON schema, a regex, a list of choices or a grammar, as vLLM's
"guidance" backend holds them (vllm/v1/structured_output/backend_guidance.py, over the llguidance library:
``pip install minilora[serve]``).

What a request asks for (vLLM 0.24's fields, read by ``constraint_of``)::

    structured_outputs   {"json": schema} | {"regex": r} | {"choice": [...]} | {"grammar": lark/EBNF} |
                         {"json_object": true} | {"structural_tag": JSON text}, exactly one (plus
                         disable_any_whitespace, disable_additional_properties)
    response_format      {"type": "json_object"} / {"type": "json_schema", "json_schema": {"name", "schema"}}:
                         OpenAI's, turned into the above (it overrides structured_outputs' kind, as vLLM's);
                         vLLM's {"type": "structural_tag", "triggers", "structures": [{"begin", "schema",
                         "end"}]}: free text, with JSON of a schema after each begin a trigger starts;
                         xgrammar's {"type": "structural_tag", "format": {...}} (structural_tag.py)
    tools + tool_choice  (chat) a named function: its parameters' schema; "required": a JSON list of
                         {"name", "parameters"} calls of the given tools (vLLM's get_json_schema_from_tools)

How it decodes: the grammar's matcher gives, before each token, the set of tokens that keep the text on the
grammar (a bitmask over the model's vocabulary, from each token's bytes: ``vocabulary``); the sampler puts -inf on
every other logit before anything else (vLLM applies the bitmask to the logits before its sampler: greedy and
sampled alike), and the token picked moves the matcher on. Once the grammar can take nothing more, the mask
leaves only EOS, so the request ends there, as vLLM's ("stop", the EOS counted in usage). The legacy top-level
``guided_json`` / ``guided_regex`` / ``guided_choice`` / ``guided_grammar`` were removed in vLLM 0.12: vLLM 0.24
ignores them (fields.py logs which, naming ``structured_outputs``).
"""
import collections
import copy
import json

import numpy as np

from .detokenizer import token_bytes_or_text
from .engine import EngineError
from .fields import StructuredOutputsParams
from .structural_tag import StructuralTagError, format_grammar

try:
    import llguidance
    from llguidance.gbnf_to_lark import any_to_lark as gbnf_to_lark
except ImportError:  # the [serve] extra installs it; without it a constrained request is refused, never unconstrained
    llguidance = None

__all__ = ["Constraint", "Grammars", "constraint_of", "tool_call_schema"]

_KINDS = ("json", "regex", "choice", "grammar", "json_object", "structural_tag")
_OPTIONS = {"disable_any_whitespace": bool, "disable_additional_properties": bool, "whitespace_pattern": str}


class Constraint(collections.namedtuple("Constraint", "kind spec any_whitespace closed_objects")):
    """One request's constraint: ``kind`` one of json, json_object, regex, choice, grammar; ``spec`` its schema,
    pattern, choices or grammar text; vLLM's options (whitespace between JSON tokens; objects without extra
    properties)."""


def _structured_outputs(value):
    """The constraint kinds and options of a request's ``structured_outputs`` (vLLM's StructuredOutputsParams, its
    fields' types checked by fields.py)."""
    return {name: value.get(name) for name in _KINDS + tuple(_OPTIONS)}


def _check_count(fields):
    """StructuredOutputsParams.__post_init__ on the constraint response_format made (vLLM's dataclasses.replace in
    its serving code): one kind, neither none nor several; its ValueError is vLLM's 400 with no param."""
    try:
        StructuredOutputsParams(**fields)
    except ValueError as exc:
        raise EngineError(400, str(exc)) from None


def _response_format(form):
    """OpenAI's ``response_format`` as vLLM's structured_outputs_from_response_format reads it: the kind it sets
    (None: plain text)."""
    kind = form["type"]  # (one of vLLM's response format models: fields.py)
    if kind == "text":
        return None
    if kind == "structural_tag":  # vLLM's two models of it: xgrammar's "format" tree, or its legacy triggers
        return {"structural_tag": json.dumps(form)}
    if kind == "json_object":
        return {"json_object": True}
    schema = form.get("json_schema")
    if schema is None:
        raise EngineError(400, "When response_format type is 'json_schema', the 'json_schema' field must be "
                               "provided.", "response_format")
    return {"json": schema.get("schema")}


def tool_choice_of(body):
    """(tools, tool_choice) of a chat request, checked by fields.py (vLLM's check_tool_usage and the type of its
    tool_choice; left out with tools given: "auto"). Returns the tools (a list of ``{"type": "function",
    "function": {...}}``, or None) and "none", "required" or the named function ``{"name": ...}``; "auto" needs a
    tool parser this server does not have: vLLM's 400 without --enable-auto-tool-choice."""
    tools, choice = body.get("tools"), body.get("tool_choice")
    if choice is None or choice == "none":
        return tools, "none"
    if choice == "auto":
        raise EngineError(400, "\"auto\" tool choice requires --enable-auto-tool-choice and --tool-call-parser to be "
                               "set", "tool_choice")
    return tools, choice if choice == "required" else {"name": choice["function"]["name"]}


def tool_call_schema(tools, choice):
    """The JSON schema a tool choice holds the answer to (vLLM's get_json_schema_from_tools): a named function's
    parameters; "required": a non-empty list of calls, each ``{"name": one tool's, "parameters": its schema}``."""
    if isinstance(choice, dict):
        return next(t["function"].get("parameters") for t in tools if t["function"]["name"] == choice["name"])
    calls, defs = [], {}
    for tool in tools:  # each tool's $defs move to the list schema's root, where their "#/$defs/..." refs point
        parameters = dict(tool["function"].get("parameters") or {"type": "object", "properties": {}})
        for name, schema in parameters.pop("$defs", {}).items():
            if defs.setdefault(name, schema) != schema:
                raise EngineError(400, f"Tool definition '{name}' has multiple schemas, which is not supported.",
                                  "tools")
        calls.append({"properties": {"name": {"type": "string", "enum": [tool["function"]["name"]]},
                                     "parameters": parameters}, "required": ["name", "parameters"]})
    schema = {"type": "array", "minItems": 1, "items": {"type": "object", "anyOf": calls}}
    return {**schema, "$defs": defs} if defs else schema


def constraint_of(body, chat):
    """The request's Constraint (None: free text), from ``structured_outputs``, ``response_format`` and (chat) the
    tool choice, refused in vLLM's words where its models refuse them."""
    fields = None if body.get("structured_outputs") is None else _structured_outputs(body["structured_outputs"])
    # (one kind of constraint: StructuredOutputsParams' own check, and a chat's check_structured_outputs_count, ran
    # as fields.py validated the body)
    if fields is not None and chat and isinstance(body.get("tool_choice", "none"), dict) and any(
            fields[k] is not None for k in ("json", "regex", "choice")):
        raise EngineError(400, "You can only either use constraints for structured outputs or tools, not both.")
    form = None if body.get("response_format") is None else _response_format(body["response_format"])
    if form is not None:  # OpenAI's response_format overrides the kind (dataclasses.replace keeps the options)
        fields = {**(fields or dict.fromkeys(_KINDS + tuple(_OPTIONS))), **form}
        _check_count(fields)
    if chat:
        tools, choice = tool_choice_of(body)
        if choice != "none":
            schema = tool_call_schema(tools, choice)
            if schema is not None:  # (vLLM: a named function without parameters is unconstrained)
                fields = {**(fields or dict.fromkeys(_KINDS + tuple(_OPTIONS))), **dict.fromkeys(_KINDS),
                          "json": schema}
    if fields is None:
        return None
    # (whitespace_pattern: vLLM's guidance backend reads it not, nor does this one)
    kind = next(k for k in _KINDS if fields[k] is not None)
    return Constraint(kind, fields[kind], not fields["disable_any_whitespace"],
                      bool(fields["disable_additional_properties"]))


def _closed_objects(schema):
    """vLLM's disable_additional_properties: every object schema with properties and no word on
    additionalProperties gets ``"additionalProperties": false`` (the schema copied)."""
    schema = copy.deepcopy(schema)

    def close(node):
        if isinstance(node, list):
            for item in node:
                close(item)
        elif isinstance(node, dict):
            for value in node.values():
                close(value)
            if isinstance(node.get("properties"), dict) and "additionalProperties" not in node:
                node["additionalProperties"] = False
    close(schema)
    return schema


def _schema(schema, constraint):
    """A JSON schema with the Constraint's options: objects closed (vLLM's disable_additional_properties) and
    llguidance's whitespace option in its ``x-guidance`` (vLLM's defaults={"whitespace_flexible": ...})."""
    if isinstance(schema, str):
        schema = json.loads(schema)
    if constraint.closed_objects:
        schema = _closed_objects(schema)
    if not isinstance(schema, dict):  # (true/false schemas: no options to carry)
        return schema
    return {**schema, "x-guidance": {"whitespace_flexible": constraint.any_whitespace, **schema.get("x-guidance", {})}}


def _structural_tags(constraint):
    """vLLM's structural tag: xgrammar's ``{"type": "structural_tag", "format": {...}}`` (structural_tag.py), or
    the legacy ``{"triggers": [...], "structures": [{"begin", "schema", "end"}]}``, free text in which each
    structure's begin (which starts with one of the triggers) is followed by JSON of its schema and its end."""
    spec = json.loads(constraint.spec) if isinstance(constraint.spec, str) else constraint.spec
    if not isinstance(spec, dict) or not ("format" in spec or "structures" in spec):
        raise EngineError(400, "Invalid structural tag specification: it needs 'format' (xgrammar's structural tag) "
                               "or 'structures' and 'triggers' (the legacy form)")
    if "structures" not in spec:  # (xgrammar's test of the form, as vLLM's)
        try:
            return format_grammar(spec["format"], lambda schema: _schema(schema, constraint), gbnf_to_lark)
        except StructuralTagError as exc:  # (vLLM's validate_xgrammar_grammar words, then what is wrong)
            raise EngineError(400, f"Invalid structural tag specification: {exc}") from None
    triggers, tags = spec["triggers"], []
    for structure in spec["structures"]:
        begin = structure["begin"]
        trigger = next((t for t in triggers if begin.startswith(t)), None)
        if trigger is None:
            raise ValueError(f"Trigger {begin} not found in triggers {triggers}")
        # (the schema itself: vLLM's guidance backend hands StructTag a serialized grammar, which it reads as a
        # schema of unknown keywords -- any JSON; its default xgrammar backend holds the tag to the schema, as here)
        tags.append(llguidance.StructTag(trigger=trigger, begin=begin, end=structure["end"],
                                         grammar=_schema(structure["schema"], constraint)))
    if not tags:
        raise ValueError("No structural tags found in the grammar spec.")
    return llguidance.StructTag.to_grammar(tags)


def _grammar_text(constraint):
    """llguidance's grammar for a Constraint (vLLM's serialize_guidance_grammar)."""
    if constraint.kind in ("json", "json_object"):
        schema = _schema({"type": "object"} if constraint.kind == "json_object" else constraint.spec, constraint)
        return llguidance.LLMatcher.grammar_from_json_schema(schema)
    if constraint.kind == "structural_tag":
        return _structural_tags(constraint)
    return llguidance.grammar_from(constraint.kind, constraint.spec)


class _Vocabulary:
    """What llguidance's LLTokenizer reads of a tokenizer (its TokenizerWrapper's fields): each id's bytes, the
    special ids (never text of a grammar's), EOS and BOS, and how a text encodes. Ids past the tokenizer (a padded
    vocabulary) are special tokens that stand for nothing, so no grammar takes them."""

    def __init__(self, tokenizer, size, text_vocab):
        self.tokenizer = tokenizer
        self.eos_token_id = tokenizer.eos_token_id
        self.bos_token_id = getattr(tokenizer, "bos_token_id", None)
        self.tokens = [token_bytes_or_text(tokenizer, i, text_vocab) or b"<[%d]>" % i for i in range(size)]
        padded = range(text_vocab, size) if text_vocab is not None else ()
        self.special_token_ids = sorted({*(getattr(tokenizer, "all_special_ids", ()) or ()), *padded})

    def __call__(self, text):
        if isinstance(text, bytes):
            text = text.decode("utf-8", errors="replace")
        return self.tokenizer.encode(text, add_special_tokens=False)


class Grammars:
    """Compiles a request's Constraint into a Grammar over one engine's tokenizer (its vocabulary read once, at the
    first constrained request)."""

    def __init__(self, tokenizer, vocab_size, text_vocab):
        self.tokenizer, self.vocab_size, self.text_vocab = tokenizer, vocab_size, text_vocab
        self._ll_tokenizer = None

    def _vocabulary(self):
        if self._ll_tokenizer is None:
            size = max(v for v in (self.vocab_size, self.text_vocab) if v is not None)
            wrapper = llguidance.TokenizerWrapper(_Vocabulary(self.tokenizer, size, self.text_vocab))
            self._ll_tokenizer = llguidance.LLTokenizer(wrapper, n_vocab=size)
        return self._ll_tokenizer

    def compile(self, constraint):
        """A Grammar at the start of ``constraint`` (each choice moves on with its own ``copy``); a grammar
        llguidance refuses is a 400 in vLLM's words."""
        if llguidance is None:
            raise EngineError(400, f"Structured outputs ({constraint.kind}) need the 'guidance' backend, whose "
                                   "llguidance package is not installed: pip install 'minilora[serve]'",
                              "structured_outputs")
        if self.tokenizer.eos_token_id is None:
            raise EngineError(400, "Structured outputs need a tokenizer with an EOS token (the grammar ends there)",
                              "structured_outputs")
        try:
            text = _grammar_text(constraint)
        except (ValueError, KeyError, TypeError, AssertionError) as exc:  # (llguidance checks tags with assert)
            raise EngineError(400, f"Invalid grammar specification: {exc}") from None
        error = llguidance.LLMatcher.validate_grammar(text, self._vocabulary())
        if error:
            raise EngineError(400, f"Grammar error: {error}")
        return Grammar(llguidance.LLMatcher(self._vocabulary(), text, log_level=0), self.vocab_size)


class Grammar:
    """One choice's matcher: ``mask(x)`` puts -inf on the logits of tokens the grammar does not take next (only EOS
    once it is complete), ``accept(token)`` moves it on."""

    def __init__(self, matcher, size):
        self.matcher, self.size = matcher, size

    def allowed(self):
        """A bool per id of the logits: may it come next?"""
        bits = np.unpackbits(np.frombuffer(self.matcher.compute_bitmask(), np.uint8), bitorder="little")
        allowed = np.zeros(self.size, bool)
        allowed[:min(len(bits), self.size)] = bits[:self.size].astype(bool)
        return allowed

    def mask(self, x):
        x[~self.allowed()[:len(x)]] = -np.inf

    def copy(self):
        """Another matcher in the same state (llguidance's deep_copy), for another choice of the request."""
        return Grammar(self.matcher.deep_copy(), self.size)

    def accept(self, token):
        if not self.matcher.is_stopped():  # (a complete grammar takes its EOS without moving: vLLM's accept_tokens)
            self.matcher.consume_token(token)
