"""xgrammar's structural tag, the ``"format"`` form that vLLM 0.24 takes in ``response_format`` (``{"type":
"structural_tag", "format": {...}}``, its StructuralTagResponseFormat, compiled by its default xgrammar backend),
written as one llguidance Lark grammar, so it runs on the same matcher as every other constraint (structured.py).

A format is a tree of chunks of text (xgrammar's docs, "Structural Tag Usage")::

    const_string {value}            json_schema {json_schema, style: "json"}   grammar {grammar: EBNF / Lark}
    regex {pattern}                 any_text {excludes}                        sequence / or {elements}
    optional / plus / star {content}, repeat {min, max (-1: no bound), content}
    tag {begin, content, end: a string or a list of them}
    triggered_tags {triggers, tags, at_least_one, stop_after_first, excludes}: free text until a trigger, then the
        tag whose begin it starts; free text again after the tag's end
    tags_with_separator {tags, separator, at_least_one, stop_after_first}: only tags, separated

xgrammar's end detection: an unlimited chunk (``any_text``, ``triggered_tags``) inside a tag stops at the tag's end
(its free text may not contain it), so here such a chunk takes the end itself: a lazy lexeme that ends at the
first end string. Token-level formats, ``dispatch``, XML styles of ``json_schema`` and ``any_text``'s budgets are
refused by name, as is an unlimited chunk that something other than an enclosing end would have to follow.
"""
import json

__all__ = ["StructuralTagError", "format_grammar"]

_UNLIMITED = ("any_text", "triggered_tags")  # run to the end of the text, or to their enclosing tag's end
_TAKE_END = _UNLIMITED + ("tags_with_separator", "sequence", "or", "tag")  # (their methods place the end)
_NOT_HERE = ("token", "exclude_token", "any_tokens", "token_triggered_tags", "token_dispatch", "dispatch")


class StructuralTagError(ValueError):
    """A structural tag this server cannot compile (malformed, or a kind it does not implement)."""


def format_grammar(form, schema_grammar, gbnf_to_lark):
    """llguidance's grammar text for ``form`` (the response_format's ``format`` object). ``schema_grammar(s)``:
    a JSON schema with the request's options (whitespace, closed objects); ``gbnf_to_lark(text)``: an EBNF
    grammar as Lark (llguidance's any_to_lark)."""
    compiler = _Compiler(schema_grammar, gbnf_to_lark)
    lark = "%llguidance {}\nstart: " + compiler.chunk(form, "format") + "\n" + "".join(compiler.rules)
    if not compiler.side_grammars:
        return lark
    return json.dumps({"grammars": [{"name": "structural_tag", "lark_grammar": lark}, *compiler.side_grammars]})


def _literal(text):
    """A Lark string literal (llguidance reads JSON's escapes); "" matches nothing, so it is no symbol at all."""
    return json.dumps(text) if text else ""


def _alternatives(texts):
    return "(" + " | ".join(_literal(t) or '""' for t in texts) + ")" if len(texts) > 1 else _literal(texts[0])


def _strings(value, where):
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return value
    raise StructuralTagError(f"{where} must be a string or a non-empty list of strings, got {value!r}")


def _field(node, name, kind, where, default=None):
    """``node[name]`` checked to be a ``kind`` (required where ``default`` is None)."""
    if name not in node:
        if default is None:
            raise StructuralTagError(f"{where}: field {name!r} is required")
        return default
    value = node[name]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise StructuralTagError(f"{where}.{name} must be {getattr(kind, '__name__', 'of the right type')}, "
                                 f"got {value!r}")
    return value


class _Compiler:
    """Writes each chunk as a Lark expression, with the rules and terminals it needs (numbered) in ``rules``."""

    def __init__(self, schema_grammar, gbnf_to_lark):
        self.schema_grammar, self.gbnf_to_lark = schema_grammar, gbnf_to_lark
        self.rules, self.side_grammars = [], []

    def _name(self, stem):
        return f"{stem}_{len(self.rules) + len(self.side_grammars)}"

    def _rule(self, body, stem="s", options=""):
        name = self._name(stem)
        self.rules.append(f"{name}{options}: {body}\n")
        return name

    def _text(self, excludes):
        """A terminal of any text (valid UTF-8) that contains none of ``excludes``."""
        if not all(isinstance(x, str) for x in excludes):
            raise StructuralTagError(f"excludes must be a list of strings, got {excludes!r}"[:300])
        excludes = [x for x in excludes if x]  # ("" is in every text: an empty end excludes nothing)
        name = self._name("TEXT")
        body = "/(?s:.*)/"
        if excludes:
            body += " & ~/(?s:.*)(" + "|".join(_regex_escape(x) for x in excludes) + ")(?s:.*)/"
        self.rules.append(f"{name}: {body}\n")
        return name

    def chunk(self, node, where, end=None):
        """The expression of format ``node``; with ``end`` (the enclosing tag's end strings), the end after it."""
        if not isinstance(node, dict) or not isinstance(node.get("type"), str):
            raise StructuralTagError(f"{where} must be a format object with a string 'type', got {node!r}"[:300])
        kind = node["type"]
        if kind in _NOT_HERE:
            raise StructuralTagError(f"{where}: format type {kind!r} is not supported by this server's structural "
                                     f"tags (string-level formats only)")
        method = getattr(self, "_" + kind, None)
        if method is None:
            raise StructuralTagError(f"{where}: unknown format type {kind!r}")
        if kind in _TAKE_END:
            return method(node, where, end)
        body = method(node, where)
        return body if end is None else f"{body} {_alternatives(end)}".strip()

    def _bounded(self, node, where):
        """A chunk that something follows: one that ends in an unlimited chunk would never end."""
        unlimited = _last_unlimited(node)
        if unlimited is not None:
            raise StructuralTagError(f"{where}: {unlimited} runs to the end of the text or of its enclosing tag; "
                                     "it cannot be followed by more format here")
        return self.chunk(node, where)

    # --- primitive formats -----------------------------------------------------------------------
    def _const_string(self, node, where):
        return _literal(_field(node, "value", str, where)) or '""'

    def _json_schema(self, node, where):
        schema = _field(node, "json_schema", (dict, bool), where)
        style = node.get("style", "json")
        if style != "json":
            raise StructuralTagError(f"{where}: json_schema style {style!r} is not supported (only 'json')")
        return self._rule("%json " + json.dumps(self.schema_grammar(schema)))

    def _grammar(self, node, where):
        """An EBNF (GBNF) or Lark grammar, as a grammar of its own beside the tag's (llguidance's ``@name``)."""
        text = _field(node, "grammar", str, where)
        try:
            lark = self.gbnf_to_lark(text)
        except Exception as exc:  # (llguidance's converter raises what its parser meets)
            raise StructuralTagError(f"{where}: the grammar is neither EBNF nor Lark: {exc}") from None
        name = self._name("grammar")
        self.side_grammars.append({"name": name, "lark_grammar": lark})
        return "@" + name

    def _regex(self, node, where):
        pattern = _field(node, "pattern", str, where)
        return self._rule("/" + pattern.replace("/", "\\/") + "/", "regex")

    def _any_text(self, node, where, end):
        for budget in ("max_tokens", "max_chars"):
            if node.get(budget) is not None:
                raise StructuralTagError(f"{where}: any_text's {budget} is not supported")
        excludes = _field(node, "excludes", list, where, [])
        if end is None or not any(end):  # (an empty end: the text runs on, as at the top level)
            return self._text(excludes)
        return self._rule(f"{self._text(excludes + end)} {_alternatives(end)}", options="[lazy]")

    # --- composition -------------------------------------------------------------------------------
    def _sequence(self, node, where, end):
        elements = _field(node, "elements", list, where)
        if not elements:
            raise StructuralTagError(f"{where}.elements must not be empty")
        head = [self._bounded(e, f"{where}.elements[{i}]") for i, e in enumerate(elements[:-1])]
        last = self.chunk(elements[-1], f"{where}.elements[{len(elements) - 1}]", end)  # (it may run to the end)
        return " ".join(part for part in head + [last] if part) or '""'

    def _or(self, node, where, end):
        elements = _field(node, "elements", list, where)
        if not elements:
            raise StructuralTagError(f"{where}.elements must not be empty")
        return "(" + " | ".join(self.chunk(e, f"{where}.elements[{i}]", end) or '""'
                                for i, e in enumerate(elements)) + ")"

    def _optional(self, node, where):
        return f"({self._bounded(_field(node, 'content', dict, where), where + '.content')})?"

    def _plus(self, node, where):
        return f"({self._bounded(_field(node, 'content', dict, where), where + '.content')})+"

    def _star(self, node, where):
        return f"({self._bounded(_field(node, 'content', dict, where), where + '.content')})*"

    def _repeat(self, node, where):
        low, high = _field(node, "min", int, where), _field(node, "max", int, where)
        if low < 0 or (high != -1 and high < low):
            raise StructuralTagError(f"{where}: repeat needs 0 <= min <= max (max -1: no bound), got {low}, {high}")
        content = self._bounded(_field(node, "content", dict, where), where + ".content")
        return f"({content}){{{low},{'' if high == -1 else high}}}"

    # --- tags ----------------------------------------------------------------------------------
    def _tag(self, node, where, end):
        begin = node.get("begin")
        if not isinstance(begin, str):
            raise StructuralTagError(f"{where}.begin must be a string (token begins are not supported), "
                                     f"got {begin!r}"[:300])
        own_end = _strings(node.get("end"), f"{where}.end")
        body = self.chunk(_field(node, "content", dict, where), where + ".content", own_end)
        after = "" if end is None else " " + _alternatives(end)
        return (f"{_literal(begin)} {body}{after}").strip()

    def _tag_list(self, node, where):
        tags = _field(node, "tags", list, where)
        if not tags:
            raise StructuralTagError(f"{where}.tags must not be empty")
        for i, tag in enumerate(tags):
            if not isinstance(tag, dict) or tag.get("type", "tag") != "tag":
                raise StructuralTagError(f"{where}.tags[{i}] must be a tag")
        return tags

    def _triggered_tags(self, node, where, end):
        tags, triggers = self._tag_list(node, where), _field(node, "triggers", list, where)
        if not triggers or not all(isinstance(t, str) and t for t in triggers):
            raise StructuralTagError(f"{where}.triggers must be a non-empty list of non-empty strings")
        text = self._text(_field(node, "excludes", list, where, []) + (end or []))
        triggered = []
        for i, tag in enumerate(tags):  # each tag behind the one trigger its begin starts with (xgrammar's rule)
            begin = tag.get("begin")
            trigger = [t for t in triggers if isinstance(begin, str) and begin.startswith(t)]
            if len(trigger) != 1:
                raise StructuralTagError(f"{where}.tags[{i}]: its begin {begin!r} must start with exactly one of the "
                                         f"triggers {triggers}")
            head = self._rule(f"{text} {_literal(trigger[0])}", "trigger", "[lazy]")  # text up to the trigger
            rest = self.chunk({**tag, "type": "tag", "begin": begin[len(trigger[0]):]}, f"{where}.tags[{i}]")
            triggered.append(f"{head} {rest}".strip())
        after_text = " | ".join(triggered)
        if node.get("at_least_one"):  # a tag first, with no text before it
            first = " | ".join(self.chunk({**t, "type": "tag"}, f"{where}.tags[{i}]") for i, t in enumerate(tags))
        closing = (self._rule(f"{text} {_alternatives(end)}", "close", "[lazy]") if end and any(end) else text)
        bare_end = "" if end is None else " " + _alternatives(end)
        if node.get("at_least_one") and node.get("stop_after_first"):
            return f"({first}){bare_end}"
        if node.get("at_least_one"):
            return f"({first}) ({after_text})* {closing}"
        if node.get("stop_after_first"):  # text and no tag, or text, one tag and nothing after it
            return f"({closing} | ({after_text}){bare_end})"
        return f"({after_text})* {closing}"

    def _tags_with_separator(self, node, where, end):
        tags, separator = self._tag_list(node, where), _field(node, "separator", str, where)
        one = "(" + " | ".join(self.chunk({**t, "type": "tag"}, f"{where}.tags[{i}]") for i, t in enumerate(tags)) + ")"
        listed = one if node.get("stop_after_first") else f"{one} ({_literal(separator)} {one})*"
        body = listed if node.get("at_least_one") else f"({listed})?"
        return body if end is None else f"{body} {_alternatives(end)}"


def _last_unlimited(node):
    """The type of the unlimited chunk ``node`` ends in (any_text, triggered_tags), or None: a tag's own end
    bounds what it holds."""
    if not isinstance(node, dict):
        return None
    if node.get("type") in _UNLIMITED:
        return node["type"]
    elements = node.get("elements") if node.get("type") in ("sequence", "or") else None
    if not isinstance(elements, list) or not elements:
        return None
    ends = [_last_unlimited(e) for e in (elements[-1:] if node["type"] == "sequence" else elements)]
    return next((e for e in ends if e is not None), None)


def _regex_escape(text):
    """``text`` as a regex matching itself (the Rust regex crate's escape: its meta characters, and the slash
    that closes a Lark regex)."""
    return "".join("\\" + c if c in "\\.+*?()|[]{}^$#&-~/" else c for c in text)
