"""`minilora serve` round 13: response_format {"type": "structural_tag"} in both of the forms vLLM 0.24 takes, and beam
search that reuses its keys and values. vLLM's references: entrypoints/openai/protocol.py (StructuralTagResponseFormat
{"type", "format"}, LegacyStructuralTagResponseFormat {"structures", "triggers"}), v1/structured_output/
backend_xgrammar.py (both forms compiled; validate_xgrammar_grammar's "Invalid structural tag specification."),
xgrammar's docs/structural_tag (the format objects and their end detection), OpenAIServing.beam_search.

| what a user sends                                 | before                          | now                            |
|---------------------------------------------------|---------------------------------|--------------------------------|
| response_format {"type": "structural_tag",        | 400 "Invalid grammar            | free text, then the schema     |
|  "format": {"type": "triggered_tags", ...}}       |  specification: 'triggers'"     |  after a trigger (llguidance)  |
| format: sequence / or / tag / any_text / regex /  | 400 (same)                      | held to the tree; an unlimited |
|  grammar / repeat / tags_with_separator           |                                 |  chunk ends at its tag's end   |
| format: token-level formats, dispatch, XML styles | 400 'triggers'                  | 400 "Invalid structural tag    |
|                                                   |                                 |  specification: ..." naming it |
| use_beam_search n=3, max_tokens=6 (13-id prompt)  | every beam prefilled again each | the prompt once, then a token  |
|                                                   |  step: 253 forward tokens       |  per live beam: 28; same beams |
"""
import asyncio
import json

import numpy as np
import pytest

pytest.importorskip("starlette")
from starlette.testclient import TestClient  # noqa: E402

from minilora.serve import structured  # noqa: E402
from minilora.serve.app import create_app  # noqa: E402
from minilora.serve.beam import beam_search  # noqa: E402
from minilora.serve.cli import load_engine  # noqa: E402
from minilora.tokenizer import ByteTokenizer  # noqa: E402

needs_guidance = pytest.mark.skipif(structured.llguidance is None, reason="llguidance (minilora[serve]) not installed")
SCHEMA = {"type": "object", "properties": {"u": {"enum": ["c", "f"]}, "d": {"type": "integer", "minimum": 1,
                                                                           "maximum": 9}},
          "required": ["u", "d"], "additionalProperties": False}
CALL = {"type": "tag", "begin": "<f=w>", "content": {"type": "json_schema", "json_schema": SCHEMA}, "end": "</f>"}
TOOLS = {"type": "triggered_tags", "triggers": ["<f="], "tags": [CALL]}


@pytest.fixture(scope="module")
def served():
    """`minilora serve` of the shipped base, in process: (TestClient, engine)."""
    engine, name = load_engine(None, [], max_batch_size=4, max_queue=8)
    with TestClient(create_app(engine, name)) as test_client:
        yield test_client, engine


def complete(client, **body):
    return client.post("/v1/completions", json={"prompt": "Dan lives in", "max_tokens": 40, "temperature": 0, **body})


def ok(response):
    assert response.status_code == 200, response.text
    return response.json()


def error_of(response):
    assert response.status_code == 400, response.text
    return response.json()["error"]["message"]


def walk(form, text):
    """How far the byte-level grammar of ``form`` takes ``text``: len(text) and whether it may end there, or the
    index of the first byte it refuses."""
    constraint = structured.constraint_of({"response_format": {"type": "structural_tag", "format": form}}, chat=False)
    grammar = structured.Grammars(ByteTokenizer(), 259, 259).compile(constraint)
    for i, byte in enumerate(text.encode()):
        if not grammar.allowed()[byte]:
            return i
        grammar.accept(byte)
    return len(text), grammar.matcher.is_accepting()


# ---------------------------------------------------------------------------------------------------
# structural tags: xgrammar's "format" form
# ---------------------------------------------------------------------------------------------------
@needs_guidance
def test_the_models_text_is_free_until_the_trigger_then_parses_as_the_schema(served):
    """A triggered tag whose trigger the tiny base writes on its own ("."): its text up to there is its free text
    (the unconstrained answer's), then JSON of the schema and the end, then the EOS the grammar leaves."""
    client, _ = served
    jsonschema = pytest.importorskip("jsonschema")
    stop_at_dot = {"type": "triggered_tags", "triggers": ["."], "stop_after_first": True,
                   "tags": [{"type": "tag", "begin": ".", "content": {"type": "json_schema", "json_schema": SCHEMA},
                             "end": ";"}]}
    tag = {"type": "structural_tag", "format": stop_at_dot}
    free = ok(complete(client))["choices"][0]["text"]
    held = ok(complete(client, structured_outputs={"structural_tag": json.dumps(tag), "disable_any_whitespace": 1}))
    choice = held["choices"][0]
    before, _, after = choice["text"].partition(".")
    assert free.startswith(before + ".") and len(before) > 2  # the model's own words, up to its first "."
    assert after.endswith(";")
    jsonschema.validate(json.loads(after[:-1]), SCHEMA)
    assert choice["finish_reason"] == "stop" and held["usage"]["completion_tokens"] == len(choice["text"]) + 1
    assert ok(complete(client, max_tokens=4, response_format=tag))["choices"][0]["finish_reason"] == "length"


@needs_guidance
def test_a_format_tree_is_held_as_xgrammar_reads_it():
    think = {"type": "tag", "begin": "<think>", "content": {"type": "any_text"}, "end": "</think>"}
    assert walk(TOOLS, 'hi <f=w>{"u":"c","d":3}</f> and <f=w>{"u":"f","d":9}</f> bye') == (60, True)
    assert walk(TOOLS, 'hi <f=x') == 6  # after the trigger: the tag's begin
    assert walk(TOOLS, 'hi <f=w>{"u":"x"') == 14  # then its schema
    assert walk(dict(TOOLS, at_least_one=True), "hi") == 0  # a tag first, no text
    assert walk(dict(TOOLS, stop_after_first=True), 'a<f=w>{"u":"c","d":1}</f>b') == 25  # nothing after it
    sequence = {"type": "sequence", "elements": [think, TOOLS]}  # any_text ends at its tag's end
    assert walk(sequence, '<think>a </thin</think>b <f=w>{"u":"f","d":2}</f>') == (49, True)
    assert walk({"type": "tag", "begin": "<t>", "content": TOOLS, "end": "</t>"},
                '<t>a <f=w>{"u":"c","d":5}</f> b</t>') == (35, True)
    listed = {"type": "tags_with_separator", "tags": [CALL], "separator": ",", "at_least_one": True}
    assert walk(listed, '<f=w>{"u":"c","d":1}</f>,<f=w>{"u":"c","d":2}</f>') == (49, True)
    assert walk(listed, "x") == 0
    assert walk({"type": "any_text", "excludes": ["bad"]}, "a ba bad") == 7
    choice = {"type": "or", "elements": [{"type": "const_string", "value": "yes"},
                                         {"type": "regex", "pattern": "n/o+"},
                                         {"type": "grammar", "grammar": 'root ::= "m" "a"+'}]}
    assert [walk(choice, t) for t in ("yes", "n/oo", "maa", "mo")] == [(3, True), (4, True), (3, True), 1]
    twice = {"type": "repeat", "min": 2, "max": 3, "content": {"type": "const_string", "value": "ab"}}
    assert [walk(twice, t) for t in ("ab", "abab", "abababab")] == [(2, False), (4, True), 6]


@needs_guidance
def test_structural_tags_this_server_cannot_hold_are_refused_in_vllms_words(served):
    client, _ = served

    def refused(form):
        return error_of(complete(client, response_format={"type": "structural_tag", "format": form}))
    prefix = "Invalid structural tag specification: "
    assert refused({"type": "token", "token": 5}) == prefix + "format: format type 'token' is not supported by " \
        "this server's structural tags (string-level formats only)"
    assert refused({**CALL, "content": {**CALL["content"], "style": "qwen_xml"}}) == \
        prefix + "format.content: json_schema style 'qwen_xml' is not supported (only 'json')"
    assert refused({"type": "nope"}) == prefix + "format: unknown format type 'nope'"
    assert refused({"type": "sequence", "elements": [{"type": "any_text"}, {"type": "const_string", "value": "x"}]}) \
        .startswith(prefix + "format.elements[0]: any_text runs to the end")
    assert refused(dict(TOOLS, triggers=["<g="])).startswith(prefix + "format.tags[0]: its begin '<f=w>' must start")
    assert "'function-wrap[__log_extra_fields__()]', 'format'), 'msg': 'Field required'" in error_of(  # (r17)
        complete(client, response_format={"type": "structural_tag"}))  # (vLLM's models: pydantic's error list)
    assert error_of(complete(client, structured_outputs={"structural_tag": "{}"})) == prefix + \
        "it needs 'format' (xgrammar's structural tag) or 'structures' and 'triggers' (the legacy form)"
    legacy = {"type": "structural_tag", "triggers": ["<f="], "structures": [{"begin": "<f=w>", "schema": SCHEMA,
                                                                             "end": "</f>"}]}
    assert ok(complete(client, max_tokens=2, response_format=legacy))["choices"][0]["finish_reason"] == "length"


# ---------------------------------------------------------------------------------------------------
# beam search: the prompt prefilled once, each step one position per live beam over its parent's cache
# ---------------------------------------------------------------------------------------------------
def test_beam_search_computes_each_position_once_and_finds_the_same_beams(served):
    from test_serve_structured_r12 import vllm_beams  # the model's own full forward per beam, each step

    client, engine = served
    embed = engine.model.get_input_embeddings()
    fed = []
    hook = embed.register_forward_pre_hook(lambda module, args: fed.append(int(np.asarray(args[0]).size)))
    prompt = engine.tokenizer.encode("Dan lives in")
    try:
        beams = asyncio.run(beam_search(engine, prompt, None, 3, 6, temperature=0, length_penalty=0.5))
        answer = ok(complete(client, max_tokens=6, use_beam_search=True, n=3, length_penalty=0.5, logprobs=1))
    finally:
        hook.remove()
    expected = vllm_beams(engine.model, prompt, 3, 6, engine.tokenizer.eos_token_id, 0.5)
    assert [beam.tokens[len(prompt):] for beam in beams] == [ids for ids, _ in expected]
    for beam, (ids, logprobs) in zip(beams, expected):  # (float32 logits of a cached step, not a full forward)
        assert [step[token] for step, token in zip(beam.logprobs, ids)] == pytest.approx(logprobs, abs=1e-5)
    assert [c["text"] for c in answer["choices"]] == [engine.tokenizer.decode(ids) for ids, _ in expected]
    # each search: its prompt once, then one position for each of the 3 live beams in each of 5 steps; before,
    # each step prefilled every beam whole: 13 + 3 * (14 + 15 + 16 + 17 + 18) = 253 positions
    assert fed == [len(prompt)] + [3] * 5 + [len(prompt)] + [3] * 5 and len(prompt) == 13
