"""`minilora serve` as clients of vLLM 0.24's OpenAI-compatible server call it, round 13: the official `openai` client
and curl-style requests (Starlette's TestClient) to the app in process, over the tiny two-adapter Llama of test_serve.

| what a client sends                             | before                          | now (vLLM 0.24's)               |
|-------------------------------------------------|---------------------------------|---------------------------------|
| POST /tokenize {"prompt"} or {"messages"}       | 404 Not Found (no such route)   | {count, max_model_len, tokens,  |
|  (token counting before a request: agents'      |                                 |  token_strs}: the ids a request |
|  context budgets, LangChain's)                  |                                 |  would run                      |
| POST /detokenize {"tokens"}                     | 404 Not Found                   | {"prompt": the decoded text}    |
| "model": an adapter never loaded, or unloaded   | "the model 'x' does not exist;  | "The model `x` does not exist." |
|                                                 |  models: [...]"                 |  (NotFoundError, param "model") |
| max_tokens larger than the whole context        | OpenAI's older sentence: "you   | "max_tokens=1000 cannot be      |
|                                                 |  requested 1002 tokens (2 in    |  greater than max_model_len=..."|
|                                                 |  the messages, 1000 in the      |  (max_completion_tokens when a  |
|                                                 |  completion)"                   |  chat sent that)                |
| prompt + max_tokens past the context            | the same older sentence, param  | "you requested 10 output tokens |
|                                                 |  max_tokens / prompt / messages |  and your prompt contains [at   |
|                                                 |                                 |  least] 55 input tokens, ..."   |
|                                                 |                                 |  param input_tokens             |
| a text prompt longer than the room left holds   | the token sentence              | "... your prompt contains 300   |
|  at the longest vocabulary entry                |                                 |  characters (more than 270 ...)"|
|                                                 |                                 |  param input_text               |
| max_tokens null, the prompt filling the context | the context sentence            | "max_tokens must be at least 1, |
|                                                 |                                 |  got 0."                        |
| truncate_prompt_tokens past the room left       | "truncate_prompt_tokens value   | "truncate_prompt_tokens=60      |
|                                                 |  (60) is greater than ..."      |  cannot be greater than ..."    |
| a server's fault (500), or the engine failing   | type "server_error"             | type "InternalServerError"      |
|  mid-stream                                     |                                 |                                 |
| GET /v1/models: an adapter's card               | max_model_len 64                | max_model_len null (the base's  |
|                                                 |                                 |  card alone carries it)         |
| echo of a text prompt the tokenizer normalizes  | the ids decoded: "hello world"  | the text as sent: "Hello World" |
|  (lowercase, NFKC)                              |                                 |                                 |
| echo of a prompt sent as ids, the BOS first     | "Hi..." (special tokens dropped)| "<bos>Hi...": decode(ids), the  |
|                                                 |                                 |  offsets following that text    |
| echo with return_token_ids                      | the prompt's text, then the     | the generated text alone (the   |
|                                                 |  generated text                 |  prompt comes as its ids)       |
| "prompt": "" (lm-evaluation-harness's empty     | 400 "prompt must be a non-empty | its BOS is the prompt; no ids at|
|  context)                                       |  string ..."                    |  all: "The decoder prompt cannot|
|                                                 |                                 |  be empty" (r16: "" alone is    |
|                                                 |                                 |  vLLM's validator's 400; [""]   |
|                                                 |                                 |  is its BOS)                    |
| a prompt id past the model's vocabulary         | "prompt token ids must be in    | "Token id 999 is out of         |
|                                                 |  [0, 260)"                      |  vocabulary"                    |
| a sampled token that is not the likeliest, chat | the k likeliest                 | the sampled token, then the k-1 |
|  top_logprobs: k                                |                                 |  likeliest (_get_top_logprobs)  |
| ... a completion's top_logprobs dict            | the k likeliest, then the token | the token first, then the k     |
|                                                 |                                 |  likeliest                      |

Checked and already vLLM's (no change): prompt_logprobs, n > 1 with a seed (choice i samples with
seed + i; same seed, same choices), stop strings across tokens with include_stop_str_in_output, min_tokens,
logit_bias, stream_options include_usage / continuous_usage_stats, adapters and seeds batched together giving what
each gives alone, a client gone mid-stream freeing its slot (ASGI spec 2.3 and 2.4).
"""
import re

import numpy as np
import pytest

openai = pytest.importorskip("openai")
pytest.importorskip("starlette")
from starlette.testclient import TestClient  # noqa: E402

from minilora.serve import Engine  # noqa: E402
from minilora.serve.app import create_app  # noqa: E402
from minilora.tokenizer import ByteTokenizer, HFTokenizer  # noqa: E402
from test_serve import CHAT_TEMPLATE, base_model, two_adapters  # noqa: E402

MESSAGES = [{"role": "user", "content": "Where does Dan live?"}]
CONTEXT = 64  # the tiny model's max_position_embeddings: the served max_model_len


@pytest.fixture(scope="module")
def served():
    tok = ByteTokenizer()
    tok.chat_template = CHAT_TEMPLATE
    engine = Engine(two_adapters(), tok, max_batch_size=4, max_queue=8)
    engine.eos = set()  # random weights: run to max_tokens
    with TestClient(create_app(engine, "tiny", api_key="sk-test")) as client:
        client.headers["authorization"] = "Bearer sk-test"
        yield client, engine, tok


def api(client):
    return openai.OpenAI(base_url="http://testserver/v1", api_key="sk-test", max_retries=0, http_client=client)


def error_of(response):
    assert response.status_code == 400, response.text
    return response.json()["error"]


# ---------------------------------------------------------------------------------------------------
# /tokenize, /detokenize
# ---------------------------------------------------------------------------------------------------
def test_tokenize_counts_the_ids_a_request_runs_and_detokenize_reads_them_back(served):
    client, engine, tok = served
    prompt = "Where does Dan live?"
    r = client.post("/tokenize", json={"model": "a", "prompt": prompt})
    assert r.json() == {"count": len(tok.encode(prompt)), "max_model_len": CONTEXT, "tokens": tok.encode(prompt),
                        "token_strs": None}
    # the count is the prompt_tokens a completion of the same text is billed
    done = api(client).completions.create(model="a", prompt=prompt, max_tokens=1)
    assert done.usage.prompt_tokens == r.json()["count"]
    bare = client.post("/tokenize", json={"prompt": prompt, "add_special_tokens": False, "return_token_strs": True})
    assert bare.json()["tokens"] == tok.encode(prompt, add_special_tokens=False)
    assert bare.json()["token_strs"] == tok.convert_ids_to_tokens(tok.encode(prompt, add_special_tokens=False))
    # a chat's messages: rendered by the chat template (no BOS added on top, as vLLM's add_special_tokens false)
    chat = client.post("/tokenize", json={"model": "b", "messages": MESSAGES}).json()
    assert chat["tokens"] == tok.encode(tok.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=False),
                                        add_special_tokens=False)
    asked = api(client).chat.completions.create(model="b", messages=MESSAGES, max_tokens=1)
    assert asked.usage.prompt_tokens == chat["count"]
    # /detokenize: the tokenizer's decode, special tokens kept; an id past the tokenizer has no text
    ids = tok.encode(prompt) + [len(tok)]
    assert client.post("/detokenize", json={"model": "a", "tokens": ids}).json() == {"prompt": "<bos>" + prompt}


def test_tokenize_routes_are_outside_v1_as_vllms_and_refuse_what_vllm_refuses(served):
    client, _, _ = served
    open_client = TestClient(client.app)  # no Authorization header: vLLM's --api-key guards /v1 only
    assert open_client.post("/tokenize", json={"prompt": "hi"}).status_code == 200
    assert open_client.post("/v1/completions", json={"prompt": "hi"}).status_code == 401
    missing = client.post("/tokenize", json={"model": "sql-lora", "prompt": "hi"})
    assert missing.status_code == 404 and missing.json()["error"]["message"] == "The model `sql-lora` does not exist."
    assert error_of(client.post("/detokenize", json={"tokens": [72, -1]}))["param"] == "body.tokens.1"  # (r17)
    assert error_of(client.post("/tokenize", json={"prompt": "hi", "add_special_tokens": "maybe"}))["param"] == \
        "body.add_special_tokens"


# ---------------------------------------------------------------------------------------------------
# an unknown model: vLLM's 404
# ---------------------------------------------------------------------------------------------------
def test_a_model_that_is_not_loaded_is_vllms_404(served):
    client, engine, _ = served
    for call in (lambda c: c.completions.create(model="sql-lora", prompt="hi", max_tokens=1),
                 lambda c: c.chat.completions.create(model="sql-lora", messages=MESSAGES, max_tokens=1),
                 lambda c: c.models.retrieve("sql-lora")):
        with pytest.raises(openai.NotFoundError) as raised:
            call(api(client))
        error = raised.value.body
        assert (error["message"], error["type"], error["param"]) == ("The model `sql-lora` does not exist.",
                                                                     "NotFoundError", "model")


def test_a_servers_fault_is_vllms_internal_server_error(served, monkeypatch):
    client, engine, _ = served

    def broken(*args, **kwargs):
        raise RuntimeError("the tokenizer broke")
    monkeypatch.setattr(engine.tokenizer, "encode", broken)
    r = client.post("/v1/completions", json={"model": "a", "prompt": "hi", "max_tokens": 1})
    assert r.status_code == 500 and r.json()["error"]["type"] == "InternalServerError"


def test_an_adapters_model_card_has_no_max_model_len_as_vllms(served):
    client, _, _ = served
    cards = {card.id: card for card in api(client).models.list().data}
    assert (cards["tiny"].max_model_len, cards["tiny"].parent) == (CONTEXT, None)
    assert (cards["a"].max_model_len, cards["a"].parent) == (None, "tiny")


# ---------------------------------------------------------------------------------------------------
# past the context: vLLM 0.24's words (vllm/renderers/params.py), which clients parse to retry
# ---------------------------------------------------------------------------------------------------
def test_max_tokens_larger_than_the_context_is_refused_in_vllms_words(served):
    client, _, _ = served
    error = error_of(client.post("/v1/completions", json={"model": "a", "prompt": "hi", "max_tokens": 1000}))
    assert (error["message"], error["param"]) == (
        "max_tokens=1000 cannot be greater than max_model_len=max_total_tokens=64. Please request fewer output "
        "tokens. (parameter=max_tokens, value=1000)", "max_tokens")
    chat = error_of(client.post("/v1/chat/completions", json={"model": "a", "messages": MESSAGES,
                                                               "max_completion_tokens": 65}))
    assert chat["param"] == "max_completion_tokens" and chat["message"].startswith("max_completion_tokens=65 cannot")


OVERFLOW = re.compile(r"This model's maximum context length is (\d+) tokens\. However, you requested (\d+) output "
                      r"tokens and your prompt contains (at least )?(\d+) input tokens, for a total of (at least )?"
                      r"(\d+) tokens\. Please reduce the length of the input prompt or the number of requested output "
                      r"tokens\. \(parameter=input_tokens, value=(\d+)\)")


def test_a_prompt_past_the_room_left_is_refused_in_vllms_words_and_a_client_retries_from_them(served):
    client, _, tok = served
    ids = tok.encode("x" * 40)  # 41 ids (the BOS first) + 30 asked > 64
    error = error_of(client.post("/v1/completions", json={"model": "a", "prompt": ids, "max_tokens": 30}))
    assert error["param"] == "input_tokens"
    limit, asked, at_least, prompt, _, total, value = OVERFLOW.fullmatch(error["message"]).groups()
    assert (int(limit), int(asked), at_least, int(prompt), int(total), int(value)) == (64, 30, None, 41, 71, 41)
    # what OpenAI-client retry loops do with it: ask for what the context leaves
    retried = api(client).completions.create(model="a", prompt=ids, max_tokens=int(limit) - int(prompt))
    assert retried.usage.completion_tokens == 64 - 41
    # a text prompt: vLLM tokenizes it cut one token past the room, so it reports "at least" that many
    error = error_of(client.post("/v1/completions", json={"model": "a", "prompt": "x" * 80, "max_tokens": 10}))
    assert OVERFLOW.fullmatch(error["message"]).groups() == ("64", "10", "at least ", "55", "at least ", "65", "55")
    # a chat without max_tokens asked for no output tokens: its prompt alone is measured
    chat = error_of(client.post("/v1/chat/completions", json={"model": "a", "messages": [
        {"role": "user", "content": "x" * 80}]}))
    assert OVERFLOW.fullmatch(chat["message"]).groups() == ("64", "0", "at least ", "65", "at least ", "65", "65")


def test_a_text_longer_than_the_room_could_hold_is_refused_by_its_characters_as_vllms(served):
    """vLLM 0.24 measures an uncut text prompt in characters first: the room left (64 - 10 tokens) times the
    tokenizer's longest vocabulary entry ("<bos>": 5 characters) is the most it could hold."""
    client, engine, tok = served
    longest = max(map(len, tok.get_vocab()))
    error = error_of(client.post("/v1/completions", json={"model": "a", "prompt": "x" * 300, "max_tokens": 10}))
    assert (error["message"], error["param"]) == (
        "This model's maximum context length is 64 tokens. However, you requested 10 output tokens and your prompt "
        f"contains 300 characters (more than {54 * longest} characters, which is the upper bound for 54 input tokens). "
        "Please reduce the length of the input prompt or the number of requested output tokens. (parameter=input_text, "
        "value=300)", "input_text")
    cut = client.post("/v1/completions", json={"model": "a", "prompt": "x" * 300, "max_tokens": 10,
                                                "truncate_prompt_tokens": 20})
    assert cut.status_code == 200 and cut.json()["usage"]["prompt_tokens"] == 20  # (a cut text is not measured)
    chat = error_of(client.post("/v1/chat/completions", json={"model": "a", "max_tokens": 4, "messages": [
        {"role": "user", "content": "x" * 320}]}))
    assert chat["param"] == "input_text" and "your prompt contains 338 characters" in chat["message"]


def test_the_rest_of_an_already_full_context_and_a_truncation_past_it_are_vllms_refusals(served):
    client, _, _ = served
    # (r16: a completion's max_tokens null is its 16, vLLM's normalize_null_max_tokens: a chat's null is the rest)
    messages = [{"role": "user", "content": "x" * 46}]
    assert client.post("/tokenize", json={"model": "a", "messages": messages}).json()["count"] == 64
    full = error_of(client.post("/v1/chat/completions", json={"model": "a", "messages": messages, "max_tokens": None}))
    assert (full["message"], full["param"]) == (
        "max_tokens must be at least 1, got 0. (parameter=max_tokens, value=0)", "max_tokens")
    cut = error_of(client.post("/v1/completions", json={"model": "a", "prompt": "hi", "max_tokens": 10,
                                                         "truncate_prompt_tokens": 60}))
    assert (cut["message"], cut["param"]) == (
        "truncate_prompt_tokens=60 cannot be greater than max_model_len - max_tokens = 54. Please request a smaller "
        "truncation size. (parameter=truncate_prompt_tokens, value=60)", "truncate_prompt_tokens")


# ---------------------------------------------------------------------------------------------------
# echo: vLLM's prompt text (the text as sent; a prompt of ids decoded whole)
# ---------------------------------------------------------------------------------------------------
def test_an_echoed_prompt_of_ids_is_decoded_whole_and_its_offsets_follow_that_text(served):
    client, _, tok = served
    ids = tok.encode("Hi")  # the BOS first
    plain = api(client).completions.create(model="a", prompt=ids, max_tokens=3, temperature=0)
    choice = api(client).completions.create(model="a", prompt=ids, max_tokens=3, temperature=0, echo=True,
                                            logprobs=0).choices[0]
    assert choice.text == "<bos>Hi" + plain.choices[0].text and choice.logprobs.tokens[:3] == ["<bos>", "H", "i"]
    assert choice.logprobs.text_offset[:4] == [0, 5, 6, 7]  # each token where its text starts in choice.text
    # return_token_ids: the prompt comes back as its ids, and the text is the generated text alone
    both = client.post("/v1/completions", json={"model": "a", "prompt": ids, "max_tokens": 3, "temperature": 0,
                                                 "echo": True, "return_token_ids": True}).json()["choices"][0]
    assert (both["text"], both["prompt_token_ids"]) == (plain.choices[0].text, ids)


def test_an_echoed_text_prompt_is_the_text_as_sent_not_its_ids_decoded():
    tokenizers = pytest.importorskip("tokenizers")
    backend = ByteTokenizer()._backend()
    backend.normalizer = tokenizers.normalizers.Lowercase()  # a tokenizer that does not give its text back
    tok = HFTokenizer(backend, "<bos>", "<eos>", "<pad>")
    engine = Engine(base_model(), tok, max_batch_size=2, max_queue=2)
    engine.eos = set()
    with TestClient(create_app(engine, "tiny")) as client:
        body = {"prompt": "Hello World", "max_tokens": 2, "temperature": 0, "echo": True, "logprobs": 0}
        choice = client.post("/v1/completions", json=body).json()["choices"][0]
        again = client.post("/v1/completions", json={**body, "echo": False}).json()["choices"][0]
    assert choice["text"] == "Hello World" + again["text"]
    assert choice["logprobs"]["tokens"][:3] == ["<bos>", "h", "e"]  # (the tokens are the ids the model ran)
    np.testing.assert_allclose(choice["logprobs"]["token_logprobs"][-2:], again["logprobs"]["token_logprobs"])


def test_an_empty_text_prompt_is_its_bos_and_no_ids_at_all_is_vllms_refusal(served):
    client, _, tok = served
    # (r16: a prompt of "" alone is vLLM's CompletionRequest.validate_prompt_and_prompt_embeds refusal; "" in a list
    # of prompts is its BOS)
    several = api(client).completions.create(model="a", prompt=["", "Dan"], max_tokens=1, temperature=0)
    assert several.usage.prompt_tokens == 1 + len(tok.encode("Dan"))
    bare = error_of(client.post("/v1/completions", json={"model": "a", "prompt": [""], "add_special_tokens": False}))
    assert (bare["message"], bare["param"]) == ("The decoder prompt cannot be empty", "prompt")
    past = error_of(client.post("/v1/completions", json={"model": "a", "prompt": [72, 999]}))
    assert (past["message"], past["param"]) == ("Token id 999 is out of vocabulary", "prompt")


def test_top_logprobs_list_the_sampled_token_first_as_vllms(served):
    """vLLM's logprobs of a step are {the sampled token, then the k likeliest}: a chat's top_logprobs are the first k
    of them, a completion's dict all of them in that order. Read against the same seeded request with k = 5 (the
    logprobs asked for do not change what is sampled)."""
    client, _, _ = served
    ask = dict(model="a", messages=MESSAGES, max_tokens=12, temperature=2.0, seed=3, logprobs=True)
    narrow = api(client).chat.completions.create(**ask, top_logprobs=2).choices[0].logprobs.content
    wide = api(client).chat.completions.create(**ask, top_logprobs=5).choices[0].logprobs.content
    assert [step.token for step in narrow] == [step.token for step in wide]
    off_top = 0
    for step, ranked in zip(narrow, wide):
        likeliest = [t.token for t in ranked.top_logprobs if t.token != step.token]
        assert [t.token for t in step.top_logprobs] == ([step.token] + likeliest)[:2]
        off_top += step.logprob < max(t.logprob for t in ranked.top_logprobs)
    assert off_top  # (temperature 2: some sampled token is not the likeliest)
    plain = api(client).completions.create(model="a", prompt="Dan", max_tokens=12, temperature=2.0, seed=3,
                                           logprobs=1).choices[0].logprobs
    assert all(list(top)[0] == token for token, top in zip(plain.tokens, plain.top_logprobs))
