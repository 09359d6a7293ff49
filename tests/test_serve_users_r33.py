"""`minilora serve` called with the official `openai` client as its users write the calls: the logprobs of a
structured-output request (``response_format`` json_object / json_schema, vLLM's ``structured_outputs``).

vLLM's model runner applies the grammar's bitmask to the logits in place before its sampler runs, and the sampler's
default logprobs ("raw_logprobs") are the log_softmax of the logits it is handed: so a token the grammar rules out
has logprob -inf -- shown as -9999.0, the number vLLM's serving code writes for it -- and the allowed tokens share
the whole probability (a token the grammar forces has logprob 0.0).

| what a user sends                                  | before (START)                     | now (vLLM's)              |
|----------------------------------------------------|------------------------------------|---------------------------|
| response_format json_object, logprobs              | log_softmax of the unmasked logits | of the grammar-masked     |
|                                                    |  (-5.09 for a forced "{")          |  ones (0.0 for it)        |
| a json_schema whose next token is forced,          | the model's likeliest tokens,      | the forced one at 0.0,    |
|  top_logprobs=3                                    |  which the grammar rules out       |  then -9999.0, -9999.0    |

The reference: a full forward of the served model's twin, its float32 logits masked with the ids the grammar takes
(the grammar's own bitmask, which tests/test_serve_structured_r12.py checks against vLLM's backend), log_softmax.
"""
import numpy as np
import pytest

openai = pytest.importorskip("openai")
pytest.importorskip("starlette")
pytest.importorskip("llguidance")

import minilora as ml  # noqa: E402
from starlette.testclient import TestClient  # noqa: E402
from minilora.serve import Engine  # noqa: E402
from minilora.serve.app import create_app  # noqa: E402
from minilora.serve.structured import Grammars, constraint_of  # noqa: E402
from minilora.tokenizer import ByteTokenizer  # noqa: E402
from test_serve import CHAT_TEMPLATE, two_adapters  # noqa: E402

MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Where does Dan live?"}]
SCHEMA = {"type": "json_schema", "json_schema": {"name": "k", "schema": {
    "type": "object", "properties": {"k": {"type": "integer"}}, "required": ["k"], "additionalProperties": False}}}


@pytest.fixture(scope="module")
def served():
    tok = ByteTokenizer()
    tok.chat_template = CHAT_TEMPLATE
    engine = Engine(two_adapters(), tok, max_batch_size=4, max_queue=8)
    with TestClient(create_app(engine, model_name="tiny"), base_url="http://testserver") as http:
        client = openai.OpenAI(base_url="http://testserver/v1", api_key="EMPTY", max_retries=0, http_client=http)
        yield client, engine, tok, two_adapters()


def masked_logprobs(reference, engine, prompt, tokens, response_format, adapter=None):
    """Per generated token, the log_softmax row vLLM reports: the twin's float32 logits with the grammar's bitmask
    applied (the grammar moved on by the tokens before)."""
    grammar = Grammars(engine.tokenizer, engine.vocab_size, engine.text_vocab).compile(
        constraint_of({"response_format": response_format}, chat=None))
    rows = []
    for i, token in enumerate(tokens):
        with ml.no_grad():
            logits = reference(np.array([list(prompt) + tokens[:i]]), adapter_names=[adapter or "__base__"]).logits
        x = logits.numpy()[0, -1].astype(np.float32).astype(np.float64)
        x[~grammar.allowed()[:len(x)]] = -np.inf
        shifted = x - x.max()
        rows.append(shifted - np.log(np.exp(shifted).sum()))
        grammar.accept(token)
    return rows


@pytest.mark.parametrize("model,adapter", [("tiny", None), ("a", "a")])
def test_completion_json_object_logprobs_are_over_the_tokens_the_grammar_allows(served, model, adapter):
    client, engine, tok, reference = served
    fmt = {"type": "json_object"}
    answer = client.completions.create(model=model, prompt="The cat sat", temperature=0, max_tokens=6, logprobs=2,
                                       extra_body={"response_format": fmt, "return_token_ids": True})
    choice = answer.choices[0]
    rows = masked_logprobs(reference, engine, tok.encode("The cat sat"), choice.token_ids, fmt, adapter)
    want = [row[t] for row, t in zip(rows, choice.token_ids, strict=True)]
    assert choice.logprobs.token_logprobs == pytest.approx(want, abs=2e-6)
    assert choice.logprobs.token_logprobs[0] == 0.0  # "{" is the only token a JSON object can start with here
    for top, row in zip(choice.logprobs.top_logprobs, rows):
        assert sorted(top.values(), reverse=True)[:2] == pytest.approx(np.maximum(np.sort(row)[::-1][:2], -9999.0),
                                                                     abs=2e-6)


def test_chat_json_schema_forced_token_shows_the_others_as_minus_9999(served):
    client, engine, tok, reference = served
    answer = client.chat.completions.create(messages=MESSAGES, model="tiny", response_format=SCHEMA, temperature=0,
                                            max_completion_tokens=3, logprobs=True, top_logprobs=3)
    first = answer.choices[0].logprobs.content[0]
    assert (first.token, first.logprob) == ("{", 0.0)
    assert [t.logprob for t in first.top_logprobs] == [0.0, -9999.0, -9999.0]
    ids = tok.apply_chat_template(MESSAGES, add_generation_prompt=True, return_dict=False)
    tokens = [ord(entry.token) for entry in answer.choices[0].logprobs.content]  # (ASCII: one byte per token)
    rows = masked_logprobs(reference, engine, ids, tokens, SCHEMA)
    got = [entry.logprob for entry in answer.choices[0].logprobs.content]
    assert got == pytest.approx([max(row[t], -9999.0) for row, t in zip(rows, tokens)], abs=2e-6)


def test_seeded_structured_stream_logprobs_match_the_whole_answer_and_the_mask(served):
    client, engine, tok, reference = served
    fmt = {"type": "json_object"}
    kwargs = dict(model="tiny", prompt="Dan", seed=5, max_tokens=5, logprobs=1,
                  extra_body={"structured_outputs": {"json_object": True}})
    whole = client.completions.create(**kwargs).choices[0]
    chunks = list(client.completions.create(stream=True, **kwargs))
    streamed = [lp for chunk in chunks for lp in (chunk.choices[0].logprobs.token_logprobs
                                                  if chunk.choices and chunk.choices[0].logprobs else [])]
    assert streamed == whole.logprobs.token_logprobs
    tokens = tok.encode(whole.text, add_special_tokens=False)  # (ASCII JSON text: a token per character)
    rows = masked_logprobs(reference, engine, tok.encode("Dan"), tokens, fmt)
    assert whole.logprobs.token_logprobs == pytest.approx([row[t] for row, t in zip(rows, tokens)], abs=2e-6)
