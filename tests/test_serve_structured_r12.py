"""`minilora serve` against vLLM 0.24's OpenAI server, round 12: structured outputs, tool calls and the rest of the
request surface that round 11 refused or ignored, sent curl-style (Starlette's TestClient) and by the official
`openai` client to the app in process over the shipped tiny base (greedy, short outputs). vLLM's references:
vllm/entrypoints/openai/chat_completion/protocol.py (check_tool_usage, check_structured_outputs_count,
validate_response_format), entrypoints/generate/base/protocol.py (structured_outputs_from_response_format),
sampling_params.py (StructuredOutputsParams, bad_words), v1/structured_output/backend_guidance.py (llguidance),
beam_search.py and OpenAIServing.beam_search.

| what a user sends                              | before                    | now (vLLM 0.24's)                       |
|------------------------------------------------|---------------------------|-----------------------------------------|
| response_format json_object / json_schema      | 400 "not supported"       | the output held to the schema (guidance)|
| openai's chat.completions.parse(response_format| 400                       | a Weather object; a pydantic_function_  |
|  =Weather / tools=[pydantic_function_tool])    |                           |  tool's parsed_arguments                |
| structured_outputs json, regex, choice, grammar| 400 "not supported"       | held to it; streamed too                |
| tools + tool_choice {"function": {"name"}}     | 400 "not supported"       | tool_calls, arguments held to the       |
|                                                |                           |  function's parameters schema           |
| tools + tool_choice "required"                 | 400 "not supported"       | a JSON list of calls, as tool_calls;    |
|                                                |                           |  streamed: headers, then arguments      |
| tools (tool_choice left out: "auto")           | 400 "not supported"       | vLLM's 400 without a tool parser:       |
|                                                |                           |  '"auto" tool choice requires ...'      |
| guided_json, guided_regex (gone in vLLM 0.12)  | ignored, generic warning  | ignored (as vLLM 0.24), a warning that  |
|                                                |                           |  names them and structured_outputs      |
| bad_words                                      | 400 "not supported"       | the words' last tokens masked           |
| suffix: "" / prompt_embeds                     | "" taken; other words     | vLLM's 400s ("suffix is not currently   |
|                                                |                           |  supported", "--enable-prompt-embeds")  |
| response_format structural_tag (triggers,      | 400                       | free text, JSON of the schema after a   |
|  structures: begin, schema, end)               |                           |  trigger's begin (as vLLM's xgrammar)   |
| structured outputs without llguidance          | -                         | 400 naming the backend, never free text |
| use_beam_search: true, n, length_penalty       | 400 "not supported"       | vLLM's n best beams (engine/serving.py  |
|  (logprobs too)                                |                           |  beam_search), whole or streamed        |
| an assistant's tool_calls sent back (content   | 400 (content must be str);| taken; the template reads each call's   |
|  null), tools, a tool message                  |  tools not in the template|  arguments as a dict, and the tools     |
| echo: true, max_tokens: 0                      | nothing generated, 0 in   | one token generated, not shown: counted |
|                                                |  usage, always "length"   |  in usage, its finish_reason            |
"""
import json
import logging
import re

import pytest

pytest.importorskip("starlette")
from starlette.testclient import TestClient  # noqa: E402

from minilora.serve import structured  # noqa: E402
from minilora.serve.app import create_app  # noqa: E402
from minilora.serve.cli import load_engine  # noqa: E402

needs_guidance = pytest.mark.skipif(structured.llguidance is None, reason="llguidance (minilora[serve]) not installed")
TEMPLATE = "{% for m in messages %}{{ m['content'] }}\n{% endfor %}"
# the tiny base likes spaces, which vLLM's default JSON grammar allows between tokens: a client biases them away
NO_WHITESPACE = {str(ord(c)): -100 for c in " \n\t\r"}
WEATHER = {"type": "function", "function": {"name": "weather", "parameters": {
    "type": "object", "properties": {"unit": {"enum": ["c", "f"]}, "days": {"type": "integer", "minimum": 1,
                                                                            "maximum": 9}},
    "required": ["unit", "days"], "additionalProperties": False}}}
CLOCK = {"type": "function", "function": {"name": "clock", "parameters": {
    "type": "object", "properties": {"zone": {"enum": ["utc", "cet"]}}, "required": ["zone"],
    "additionalProperties": False}}}


@pytest.fixture(scope="module")
def served():
    """`minilora serve` of the shipped base, in process: (TestClient, engine)."""
    engine, name = load_engine(None, [], max_batch_size=4, max_queue=8)
    # (requests send chat templates of their own: vLLM's --trust-request-chat-template)
    with TestClient(create_app(engine, name, trust_request_chat_template=True)) as test_client:
        yield test_client, engine


@pytest.fixture
def client(served):
    return served[0]


def complete(client, **body):
    return client.post("/v1/completions", json={"prompt": "Dan lives in", "max_tokens": 24, "temperature": 0, **body})


def chat(client, **body):
    return client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "weather?"}],
                                                      "chat_template": TEMPLATE, "max_tokens": 40, "temperature": 0,
                                                      **body})


def ok(response):
    assert response.status_code == 200, response.text
    return response.json()


def error_of(response, status=400):
    assert response.status_code == status, response.text
    return response.json()["error"]["message"]


def streamed(response):
    assert response.status_code == 200, response.text
    return [json.loads(line[6:]) for line in response.text.splitlines()
            if line.startswith("data: ") and line != "data: [DONE]"]


# ---------------------------------------------------------------------------------------------------
# structured outputs: JSON schemas, json_object, choice, regex, grammar; greedy, sampled and streamed
# ---------------------------------------------------------------------------------------------------
@needs_guidance
def test_json_schema_output_parses_and_matches_the_schema(client):
    jsonschema = pytest.importorskip("jsonschema")
    schema = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 6}, "ok": {"type": "boolean"}},
              "required": ["city", "ok"], "additionalProperties": False}
    free = ok(complete(client))["choices"][0]["text"]
    held = ok(complete(client, max_tokens=40, structured_outputs={"json": schema, "disable_any_whitespace": True}))
    asked = ok(complete(client, max_tokens=40, logit_bias=NO_WHITESPACE, response_format={
        "type": "json_schema", "json_schema": {"name": "place", "schema": schema}}))
    assert not free.startswith("{")  # (the tiny base left alone writes prose)
    for answer in (held, asked):
        choice = answer["choices"][0]
        jsonschema.validate(json.loads(choice["text"]), schema)
        assert choice["finish_reason"] == "stop" and choice["stop_reason"] is None  # ended by the EOS the grammar
        assert answer["usage"]["completion_tokens"] == len(choice["text"]) + 1  # left: counted, as vLLM counts it


@needs_guidance
def test_json_object_choice_regex_and_grammar_hold_greedy_sampled_and_streamed_text(client):
    choices = ["Paris", "Rome", "Oslo"]
    for body in ({"temperature": 0}, {"temperature": 1.0, "seed": 3, "n": 2}):
        answer = ok(complete(client, structured_outputs={"choice": choices}, **body))
        assert all(c["text"] in choices and c["finish_reason"] == "stop" for c in answer["choices"])
    pattern = "[A-Z][a-z]{2,5}-[0-9]{2}"
    text = ok(complete(client, structured_outputs={"regex": pattern}))["choices"][0]["text"]
    assert re.fullmatch(pattern, text)
    grammar = 'start: "yes" | "no" | "maybe " NUMBER\nNUMBER: /[0-9]/'
    assert re.fullmatch("yes|no|maybe [0-9]", ok(complete(client, structured_outputs={"grammar": grammar}))
                        ["choices"][0]["text"])
    text = ok(complete(client, max_tokens=30, logit_bias=NO_WHITESPACE, response_format={"type": "json_object"}))
    assert text["choices"][0]["text"].startswith("{")  # (an object that may go on past max_tokens, as vLLM's)
    whole = ok(complete(client, structured_outputs={"regex": pattern}))["choices"][0]["text"]
    chunks = streamed(complete(client, structured_outputs={"regex": pattern}, stream=True))
    assert "".join(c["choices"][0]["text"] for c in chunks) == whole
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


@needs_guidance
def test_the_openai_clients_parse_helpers_get_pydantic_objects(client):
    """OpenAI's ``chat.completions.parse`` (a Pydantic model as response_format, sent as a strict json_schema with
    $defs; a pydantic_function_tool as a named tool) reads the answers back into the models."""
    openai = pytest.importorskip("openai")
    import enum

    import pydantic

    class Unit(str, enum.Enum):
        c, f = "c", "f"

    class Weather(pydantic.BaseModel):
        unit: Unit
        ok: bool
    api = openai.OpenAI(base_url="http://testserver/v1", api_key="EMPTY", max_retries=0, http_client=client)
    ask = dict(model="minilora/base", messages=[{"role": "user", "content": "weather?"}], max_tokens=30, temperature=0,
               logit_bias=NO_WHITESPACE, extra_body={"chat_template": TEMPLATE})
    parsed = api.chat.completions.parse(response_format=Weather, **ask).choices[0].message.parsed
    assert isinstance(parsed, Weather) and parsed.unit in Unit
    call = api.chat.completions.parse(tools=[openai.pydantic_function_tool(Weather)], tool_choice={
        "type": "function", "function": {"name": "Weather"}}, **ask).choices[0].message.tool_calls[0]
    assert call.function.name == "Weather" and isinstance(call.function.parsed_arguments, Weather)
    extra = {"chat_template": TEMPLATE, "structured_outputs": {"choice": ["Oslo", "Rome"]}}
    answer = api.chat.completions.create(**{**ask, "extra_body": extra})
    assert answer.choices[0].message.content in ("Oslo", "Rome")


# ---------------------------------------------------------------------------------------------------
# tools: a named function, "required", "auto" refused without a parser, vLLM's validation words
# ---------------------------------------------------------------------------------------------------
@needs_guidance
def test_a_named_tool_choice_answers_tool_calls_with_arguments_held_to_the_parameters(client):
    jsonschema = pytest.importorskip("jsonschema")
    named = {"type": "function", "function": {"name": "weather"}}
    answer = ok(chat(client, tools=[WEATHER, CLOCK], tool_choice=named, logit_bias=NO_WHITESPACE))
    choice = answer["choices"][0]
    (call,) = choice["message"]["tool_calls"]
    assert choice["message"]["content"] == "" and call["type"] == "function" and call["id"].startswith("chatcmpl-tool-")
    assert call["function"]["name"] == "weather" and choice["finish_reason"] == "stop"
    jsonschema.validate(json.loads(call["function"]["arguments"]), WEATHER["function"]["parameters"])
    chunks = streamed(chat(client, tools=[WEATHER, CLOCK], tool_choice=named, logit_bias=NO_WHITESPACE, stream=True))
    deltas = [c["choices"][0]["delta"].get("tool_calls") for c in chunks]
    pieces = [d[0] for d in deltas if d]
    assert pieces[0]["function"]["name"] == "weather" and pieces[0]["id"].startswith("chatcmpl-tool-")
    assert all("id" not in p and "name" not in p["function"] for p in pieces[1:])
    assert "".join(p["function"]["arguments"] for p in pieces) == call["function"]["arguments"]


@needs_guidance
def test_tool_choice_required_answers_a_list_of_calls(client):
    bias = {**NO_WHITESPACE, str(ord(",")): -100}  # one call of a one-argument tool: no comma needed
    for stream in (False, True):
        response = chat(client, tools=[WEATHER, CLOCK], tool_choice="required", logit_bias=bias, max_tokens=60,
                        stream=stream)
        if stream:  # each call's header (id, name, arguments ""), then its arguments: vLLM's stream, accumulated
            chunks = streamed(response)
            deltas = [d for c in chunks for d in c["choices"][0]["delta"].get("tool_calls", [])]
            assert deltas[0]["function"]["arguments"] == "" and deltas[0]["id"].startswith("chatcmpl-tool-")
            calls = [{**d, "function": {**d["function"], "arguments": "".join(
                e["function"]["arguments"] for e in deltas if e["index"] == d["index"])}} for d in deltas if "id" in d]
            finish = chunks[-1]["choices"][0]["finish_reason"]
        else:
            choice = ok(response)["choices"][0]
            calls, finish = choice["message"]["tool_calls"], choice["finish_reason"]
        assert finish == "tool_calls"  # (vLLM's, as OpenAI's: a named function's call ends with "stop")
        assert [c["function"]["name"] for c in calls] == ["clock"], calls
        assert json.loads(calls[0]["function"]["arguments"])["zone"] in ("utc", "cet")


def test_tool_choice_auto_and_bad_tool_requests_get_vllms_400s(client):
    auto = '"auto" tool choice requires --enable-auto-tool-choice and --tool-call-parser to be set'
    assert error_of(chat(client, tools=[WEATHER])) == auto  # (tool_choice left out with tools: "auto")
    assert error_of(chat(client, tools=[WEATHER], tool_choice="auto")) == auto
    # (check_tool_usage's ValueErrors: refusals of the request's model, in pydantic's error list, r17)
    assert "'msg': 'Value error, `tools` must not be an empty array." in error_of(chat(client, tools=[]))
    assert "'msg': 'Value error, When using `tool_choice`, `tools` must be set.'" in \
        error_of(chat(client, tool_choice="required"))
    assert "'msg': 'Value error, The tool specified in `tool_choice` does not match any of the specified `tools`'" \
        in error_of(chat(client, tools=[WEATHER], tool_choice={"type": "function", "function": {"name": "x"}}))
    assert "'msg': 'Value error, Invalid value for `tool_choice`: any!" in \
        error_of(chat(client, tools=[WEATHER], tool_choice="any"))
    answer = ok(chat(client, tools=[WEATHER], tool_choice="none", max_tokens=4))  # none: plain text, no calls
    assert "tool_calls" not in answer["choices"][0]["message"]


def test_structured_output_requests_refused_in_vllms_words(client, monkeypatch):
    # (StructuredOutputsParams.__post_init__ and the chat's check_structured_outputs_count run as pydantic validates
    # the body: refusals of the request's model, in pydantic's error list, r17)
    two = error_of(complete(client, structured_outputs={"regex": "a", "choice": ["a"]}))
    assert "'loc': ('body', 'structured_outputs'), 'msg': 'Value error, You can only use one kind of structured " \
        "outputs constraint but multiple are specified: {" in two.replace('"', "'")
    assert "'msg': \"Value error, You can only use one kind of constraints for structured outputs ('json', 'regex' " \
        "or 'choice').\"" in error_of(chat(client, structured_outputs={"regex": "a", "choice": ["a"]}))
    assert error_of(complete(client, response_format={"type": "json_schema"})) == \
        "When response_format type is 'json_schema', the 'json_schema' field must be provided."
    if structured.llguidance is not None:
        assert error_of(complete(client, structured_outputs={"regex": "a["})).startswith("Grammar error:")
    monkeypatch.setattr(structured, "llguidance", None)  # not installed: refused, never answered unconstrained
    assert "llguidance" in error_of(complete(client, response_format={"type": "json_object"}))


# ---------------------------------------------------------------------------------------------------
# the rest: guided_* (removed in vLLM 0.12), bad_words, suffix, prompt_embeds
# ---------------------------------------------------------------------------------------------------
def test_removed_guided_fields_are_ignored_as_vllm_024_with_a_warning_naming_structured_outputs(client, caplog):
    with caplog.at_level(logging.WARNING, logger="minilora.serve"):
        text = ok(complete(client, max_tokens=6, guided_choice=["yes", "no"]))["choices"][0]["text"]
    assert text == ok(complete(client, max_tokens=6))["choices"][0]["text"]  # unconstrained, as vLLM 0.24's
    assert any("guided_choice" in r.message and "structured_outputs" in r.message and "NOT constrained" in r.message
               for r in caplog.records)


def test_bad_words_mask_the_words_last_token_as_vllm(client):
    free = ok(chat(client, max_tokens=8))["choices"][0]["message"]["content"]
    word = free.split()[0].strip(".,")
    assert word in free and len(word) > 1
    held = ok(chat(client, max_tokens=8, bad_words=[word]))["choices"][0]["message"]["content"]
    assert word not in held and held.startswith(free[:free.index(word) + len(word) - 1])  # only its last token


def test_suffix_and_prompt_embeds_get_vllms_400s(client):
    assert error_of(complete(client, suffix="")) == "suffix is not currently supported"  # (vLLM: any suffix)
    assert error_of(complete(client, suffix="end")) == "suffix is not currently supported"
    assert error_of(complete(client, prompt_embeds="AAAA")) == \
        "You must set `--enable-prompt-embeds` to input `prompt_embeds`."


@needs_guidance
@pytest.mark.parametrize("tokenizer", ["byte_level_tokenizer", "byte_fallback_tokenizer"])
def test_the_mask_reads_a_tokenizer_json_vocabulary_byte_by_byte(tokenizer):
    """The bitmask of a tokenizer.json tokenizer (GPT-2's byte characters; Llama-2's <0xNN> byte fallback and ▁
    pieces), over a model vocabulary padded past it: random logits walked under the mask always spell a choice,
    multi-byte characters included, and never pick a padded id."""
    np = pytest.importorskip("numpy")
    pytest.importorskip("tokenizers")
    import test_serve_r7
    tok = getattr(test_serve_r7, tokenizer)()
    grammars, rng = structured.Grammars(tok, len(tok) + 3, len(tok)), np.random.default_rng(0)
    choices = ["a b", "ab c", "é€"]
    for _ in range(6):
        grammar, ids = grammars.compile(structured.Constraint("choice", choices, True, False)), []
        while not ids or ids[-1] != tok.eos_token_id:
            x = rng.standard_normal(len(tok) + 3).astype(np.float32)
            grammar.mask(x)
            assert np.isinf(x[len(tok):]).all()
            ids.append(int(np.argmax(x)))
            grammar.accept(ids[-1])
        assert tok.decode(ids[:-1]) in choices


# ---------------------------------------------------------------------------------------------------
# use_beam_search: vLLM's beam search over the engine, one token a step
# ---------------------------------------------------------------------------------------------------
def vllm_beams(model, prompt_ids, width, steps, eos, length_penalty=1.0):
    """vLLM's OpenAIServing.beam_search on the model's own forward (float64 log_softmax of the last logits):
    each live beam's 2 * width likeliest tokens, scored by summed logprob / length ** length_penalty."""
    import numpy as np

    import minilora as ml
    score = lambda b: b[1] / ((len(b[0]) - (b[0][-1] == eos)) ** length_penalty)  # noqa: E731
    live, done = [(list(prompt_ids), 0.0, [])], []
    for _ in range(steps):
        grown = []
        for tokens, total, logprobs in live:
            with ml.no_grad():
                row = model(np.array([tokens])).logits.numpy()[0, -1].astype(np.float64)
            row = row - row.max() - np.log(np.exp(row - row.max()).sum())
            for token in np.argsort(-row, kind="stable")[:2 * width].tolist():
                (done if token == eos else grown).append((tokens + [token] * (token != eos), total + row[token],
                                                          logprobs + [row[token]]))
        live = sorted(grown, key=score, reverse=True)[:width]
    return [(tokens[len(prompt_ids):], logprobs) for tokens, _, logprobs in sorted(done + live, key=score,
                                                                                  reverse=True)[:width]]


def test_use_beam_search_answers_vllms_n_best_beams_whole_and_streamed(served):
    client, engine = served
    body = dict(max_tokens=6, temperature=0, use_beam_search=True, n=3, length_penalty=0.5)
    answer = ok(complete(client, **body))
    chunks = streamed(complete(client, **body, stream=True, stream_options={"include_usage": True}))
    scored = ok(complete(client, **body, logprobs=1))
    refused = complete(client, **body, logprobs=1, echo=True)  # (vLLM's beam output has no prompt logprobs)
    eos = engine.tokenizer.eos_token_id
    expected = vllm_beams(engine.model, engine.tokenizer.encode("Dan lives in"), 3, 6, eos, 0.5)
    texts = [engine.tokenizer.decode(ids) for ids, _ in expected]
    assert [c["text"] for c in answer["choices"]] == texts and len(set(texts)) == 3  # (greedy n=3: a 400 without)
    assert [c["choices"][0]["text"] for c in chunks[:3]] == texts
    assert chunks[-1]["usage"] == answer["usage"] and answer["usage"]["completion_tokens"] == 18
    for choice, (_, logprobs) in zip(scored["choices"], expected):  # each step's logprob of the beam's token, and
        assert choice["logprobs"]["token_logprobs"] == pytest.approx(logprobs, abs=1e-5)  # 2 top entries (k + 1)
        assert all(len(top) == 2 for top in choice["logprobs"]["top_logprobs"])
    assert error_of(refused) == "echo is not supported with use_beam_search and logprobs"  # (not a 500)
    import asyncio

    from minilora.serve.beam import beam_search

    async def gone():  # a client that left: the search stops before its next step, as vLLM aborts it
        return True
    assert asyncio.run(beam_search(engine, [1, 2], None, 2, 4, client_gone=gone)) is None


def test_echo_with_max_tokens_0_runs_one_unshown_token_as_vllm(client):
    first = ok(complete(client, max_tokens=1))["choices"][0]["text"]  # the greedy first token: " "
    echoed = ok(complete(client, echo=True, max_tokens=0, stop_token_ids=[ord(first)]))
    choice = echoed["choices"][0]
    assert choice["text"] == "Dan lives in" and echoed["usage"]["completion_tokens"] == 1  # counted, not shown
    assert (choice["finish_reason"], choice["stop_reason"]) == ("stop", ord(first))  # that token's end
    assert error_of(complete(client, max_tokens=0)) == \
        "max_tokens must be at least 1, got 0. (parameter=max_tokens, value=0)"


def test_tool_calls_sent_back_reach_the_template_with_their_arguments_as_dicts(client):
    """A conversation's assistant tool call (content null) and the tool's answer, as OpenAI's clients send them back:
    the template sees the tools and each call's arguments parsed into a dict (vLLM's _postprocess_messages), so
    ``tojson`` writes them as JSON, not as a quoted string."""
    template = ("{% for m in messages %}{{ m.role }}:{{ m.content or '' }}{% for c in m.tool_calls or [] %}"
                "{{ c.function.name }}{{ c.function.arguments | tojson }}{% endfor %};{% endfor %}"
                "{{ tools | length }} tools")
    messages = [{"role": "user", "content": "weather?"},
                {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function", "function": {
                    "name": "weather", "arguments": '{"unit": "c"}'}}]},
                {"role": "tool", "tool_call_id": "c1", "content": "20C"}]
    answer = ok(chat(client, messages=messages, chat_template=template, tools=[WEATHER], tool_choice="none",
                     max_tokens=1, return_token_ids=True))
    assert bytes(answer["prompt_token_ids"]).decode() == 'user:weather?;assistant:weather{"unit": "c"};tool:20C;1 tools'
    messages[1]["tool_calls"][0]["function"]["arguments"] = "{not json"
    assert "arguments are not JSON" in error_of(chat(client, messages=messages, chat_template=template))


@needs_guidance
def test_a_structural_tag_holds_the_text_after_its_trigger_to_the_schema(client):
    """vLLM's structural tag (response_format {"type": "structural_tag"}): free text, and after each begin that a
    trigger starts, JSON of that structure's schema, then its end."""
    import numpy as np

    schema = {"type": "object", "properties": {"u": {"enum": ["c", "f"]}}, "required": ["u"],
              "additionalProperties": False}
    form = {"type": "structural_tag", "triggers": ["call:"],
            "structures": [{"begin": "call:weather(", "schema": schema, "end": ")"}]}
    assert ok(complete(client, max_tokens=4, response_format=form))["choices"][0]["finish_reason"] == "length"
    from minilora.tokenizer import ByteTokenizer
    constraint = structured.constraint_of({"response_format": form}, chat=False)
    grammar = structured.Grammars(ByteTokenizer(), 259, 259).compile(constraint)
    allowed = lambda: set(chr(i) for i in np.nonzero(grammar.allowed()[:256])[0]) - set(" \n\t\r")  # noqa: E731
    assert len(allowed()) > 100  # free text
    for byte in b"hi call:weather(":
        grammar.accept(byte)
    assert allowed() == {"{"}  # the schema's object (whitespace aside: vLLM's default allows it)
    for byte in b'{"u":"':
        grammar.accept(byte)
    assert allowed() == {"c", "f"}
    bad = dict(form, structures=[{"begin": "use:x(", "schema": schema, "end": ")"}])
    assert error_of(complete(client, response_format=bad)).startswith("Invalid grammar specification: Trigger use:x(")


def test_min_tokens_and_stop_refusals_in_vllms_words(client):
    assert error_of(complete(client, max_tokens=3, min_tokens=5)) == \
        "min_tokens must be less than or equal to max_tokens=3, got 5."  # SamplingParams._verify_args
    assert error_of(complete(client, stop=["x", ""])) == "stop cannot contain an empty string."
    free = ok(complete(client, max_tokens=8))["choices"][0]["text"]
    stop = free[len(free.split(".")[0])]  # (the greedy text has a "." early)
    held = ok(complete(client, max_tokens=8, stop=[stop], min_tokens=6))["choices"][0]
    assert ok(complete(client, max_tokens=8, stop=[stop]))["choices"][0]["text"] == free.split(".")[0]
    assert held["text"].startswith(free.split(".")[0] + ".")  # not looked for within min_tokens, as vLLM's


@needs_guidance
def test_required_tools_with_defs_have_them_at_the_root_of_the_list_schema():
    """vLLM's get_json_schema_from_tools moves each tool's $defs to the root, where "#/$defs/..." refs point."""
    import numpy as np

    from minilora.tokenizer import ByteTokenizer
    tool = {"type": "function", "function": {"name": "a", "parameters": {
        "type": "object", "properties": {"p": {"$ref": "#/$defs/P"}}, "required": ["p"],
        "$defs": {"P": {"enum": ["x", "y"]}}}}}
    schema = structured.tool_call_schema([tool], "required")
    assert schema["$defs"] == {"P": {"enum": ["x", "y"]}} and "$defs" in tool["function"]["parameters"]  # (a copy)
    grammar = structured.Grammars(ByteTokenizer(), 259, 259).compile(structured.Constraint("json", schema, False,
                                                                                            False))
    for byte in b'[{"name":"a","parameters":{"p":"':
        grammar.accept(byte)
    assert [chr(i) for i in np.nonzero(grammar.allowed()[:256])[0]] == ["x", "y"]
    other = {"type": "function", "function": {"name": "b", "parameters": {"$defs": {"P": {"type": "integer"}}}}}
    with pytest.raises(Exception, match="Tool definition 'P' has multiple schemas"):
        structured.tool_call_schema([tool, other], "required")
