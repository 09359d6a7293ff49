"""`minilora serve` used the way a vLLM / OpenAI-client user uses it, and `minilora train` interrupted.

Every request here is one an OpenAI or vLLM client sends: n > 1 with seeds, several prompts at once,
max_tokens null, penalties, logit_bias, vLLM's stop_token_ids / ignore_eos, logprobs, echo,
stream_options.include_usage, chat content given as parts, and the parameters clients send at their
"off" value. References: the model run directly (greedy), OpenAI's documented penalty formula and
transformers' RepetitionPenaltyLogitsProcessor (vLLM's repetition_penalty is the same rule), and
torch's log_softmax for the reported log-probabilities.
"""
import json
import os
import signal

import numpy as np
import pytest

import minilora as ml
from minilora.serve import Engine
from minilora.tokenizer import ByteTokenizer
from test_serve import CHAT_TEMPLATE, TINY, alone, events, model_dirs, served_text, serve_command, two_adapters  # noqa: F401 -- fixtures

pytest.importorskip("starlette")
pytest.importorskip("httpx")


@pytest.fixture
def served():
    from starlette.testclient import TestClient
    from minilora.serve.app import create_app
    model, tok = two_adapters(), ByteTokenizer()
    tok.chat_template = CHAT_TEMPLATE
    engine = Engine(model, tok, max_batch_size=4, max_queue=8)
    engine.eos = set()  # random weights: run to max_tokens, so lengths are known
    # (requests send chat templates of their own: vLLM's --trust-request-chat-template)
    with TestClient(create_app(engine, model_name="tiny", trust_request_chat_template=True)) as client:
        yield client, model, tok


def complete(client, **body):
    r = client.post("/v1/completions", json={"model": "a", "prompt": "hi", **body})
    assert r.status_code == 200, r.text
    return r.json()


def logits_after(model, ids, adapter="a"):
    """The model's next-token logits after ``ids`` (float64), with ``adapter`` on that row."""
    with ml.no_grad():
        out = model(np.array(ids)[None, :], adapter_names=[adapter])
    return out.logits.numpy()[0, -1].astype(np.float64)


def greedy_with(model, prompt, n, adjust):
    """Greedy tokens where ``adjust(logits, prompt + generated so far, generated)`` changes the logits first."""
    generated = []
    for _ in range(n):
        logits = logits_after(model, prompt + generated)[:259]  # the tokenizer's 259 tokens (the model has 260)
        generated.append(int(np.argmax(adjust(logits, prompt + generated, generated))))
    return generated


# ---------------------------------------------------------------------------------------------------
# lengths, n, several prompts, seeds
# ---------------------------------------------------------------------------------------------------
def test_max_tokens_null_runs_to_the_end_of_the_context_as_vllm(served):
    client, model, tok = served
    # (r16: a completion's null is taken as left out, vLLM's normalize_null_max_tokens, vllm#45491; a chat's null, or
    # a chat's max_tokens left out, runs to the end of the context)
    assert complete(client, max_tokens=None, temperature=0)["usage"]["completion_tokens"] == 16
    assert complete(client, temperature=0)["usage"]["completion_tokens"] == 16  # left out: OpenAI's 16
    r = client.post("/v1/chat/completions", json={"model": "a", "messages": [{"role": "user", "content": "hi"}],
                                                  "max_tokens": None, "temperature": 0})
    assert r.json()["usage"]["total_tokens"] == TINY["max_position_embeddings"]


def test_n_choices_sample_with_vllms_seeds_and_count_the_prompt_once(served):
    client, model, tok = served
    body = complete(client, n=3, seed=7, temperature=0.9, max_tokens=6)  # was: 400 "only n=1"
    assert [c["index"] for c in body["choices"]] == [0, 1, 2]
    for i, choice in enumerate(body["choices"]):  # choice i samples with seed + i, as vLLM's n samples
        alone_choice = complete(client, seed=7 + i, temperature=0.9, max_tokens=6)["choices"][0]
        assert choice["text"] == alone_choice["text"]
    assert len({c["text"] for c in body["choices"]}) > 1
    prompt_tokens = len(tok.encode("hi"))
    assert body["usage"] == {"prompt_tokens": prompt_tokens, "completion_tokens": 18, "total_tokens": prompt_tokens + 18}
    r = client.post("/v1/completions", json={"model": "a", "prompt": "hi", "n": 2, "temperature": 0})
    assert r.status_code == 400 and r.json()["error"]["param"] is None  # vLLM: n must be 1 when greedy (no param)


def test_a_list_of_prompts_answers_each_in_order(served):
    client, model, tok = served
    # a list of texts, and a list of token-id lists (vLLM's prompt types: one kind per list, never mixed)
    for prompts, ids in ((["hi", "hello there"], [tok.encode("hi"), tok.encode("hello there")]),
                         ([[104, 105], [104]], [[104, 105], [104]])):
        body = complete(client, prompt=prompts, temperature=0, max_tokens=4)
        assert [c["index"] for c in body["choices"]] == list(range(2))
        for p, prompt in enumerate(ids):
            assert body["choices"][p]["text"] == served_text(tok, alone(model, prompt, "a", 4))
        assert body["usage"]["prompt_tokens"] == sum(map(len, ids))


# ---------------------------------------------------------------------------------------------------
# penalties, logit_bias, vLLM's stop_token_ids and ignore_eos
# ---------------------------------------------------------------------------------------------------
def test_presence_and_frequency_penalties_follow_openais_formula(served):
    client, model, tok = served
    plain = complete(client, temperature=0, max_tokens=12)["choices"][0]["text"]
    assert complete(client, temperature=0, max_tokens=12, presence_penalty=0, frequency_penalty=0.0)[
        "choices"][0]["text"] == plain  # the "off" values clients send on every request (were refused)

    def penalized(logits, seen, generated):  # mu[j] - c[j] * frequency - (c[j] > 0) * presence
        counts = np.bincount(generated, minlength=len(logits))
        return logits - 1.5 * counts - 0.75 * (counts > 0)
    expected = served_text(tok, greedy_with(model, tok.encode("hi"), 12, penalized))
    got = complete(client, temperature=0, max_tokens=12, frequency_penalty=1.5, presence_penalty=0.75)
    assert got["choices"][0]["text"] == expected != plain


def test_repetition_penalty_is_transformers_rule_on_prompt_and_output(served):
    torch = pytest.importorskip("torch")
    from transformers import RepetitionPenaltyLogitsProcessor
    client, model, tok = served
    processor = RepetitionPenaltyLogitsProcessor(penalty=1.8)

    def penalized(logits, seen, generated):
        return processor(torch.tensor([seen]), torch.tensor(logits)[None, :])[0].numpy()
    expected = served_text(tok, greedy_with(model, tok.encode("hi"), 12, penalized))
    assert complete(client, temperature=0, max_tokens=12, repetition_penalty=1.8)["choices"][0]["text"] == expected


def test_logit_bias_stop_token_ids_and_ignore_eos(served):
    client, model, tok = served
    a = tok.encode("A", add_special_tokens=False)[0]
    assert complete(client, temperature=0, max_tokens=5, logit_bias={str(a): 100})["choices"][0]["text"] == "AAAAA"
    greedy = alone(model, tok.encode("hi"), "a", 8)
    third = greedy[2]
    first_at = greedy.index(third)
    body = complete(client, temperature=0, max_tokens=8, stop_token_ids=[third])
    assert body["choices"][0]["finish_reason"] == "stop"  # the stop token's text is not in the output
    assert body["choices"][0]["text"] == tok.decode(greedy[:first_at], skip_special_tokens=True)
    assert body["usage"]["completion_tokens"] == first_at + 1
    assert complete(client, temperature=0, max_tokens=8, ignore_eos=True)["choices"][0]["finish_reason"] == "length"


# ---------------------------------------------------------------------------------------------------
# logprobs, echo, streams with usage
# ---------------------------------------------------------------------------------------------------
def token_name(tok, token):
    """OpenAI's name for a token in logprobs: its text, or ``bytes:\\xNN`` for a piece of a character."""
    if token >= 128:
        return f"bytes:\\x{token:02x}" if token < 256 else tok.decode([token])
    return chr(token)


def test_completion_logprobs_are_the_models_log_softmax(served):
    torch = pytest.importorskip("torch")
    client, model, tok = served
    body = complete(client, temperature=0, max_tokens=4, logprobs=2)  # was: 400 unsupported
    logprobs = body["choices"][0]["logprobs"]
    prompt, generated = tok.encode("hi"), alone(model, tok.encode("hi"), "a", 4)
    assert logprobs["tokens"] == [token_name(tok, t) for t in generated]
    for i, token in enumerate(generated):
        logits = logits_after(model, prompt + generated[:i])  # the model's whole vocabulary (260), as vLLM
        reference = torch.log_softmax(torch.tensor(logits), dim=-1)
        assert logprobs["token_logprobs"][i] == pytest.approx(float(reference[token]), abs=1e-9)
        top = torch.topk(reference, 2).indices.tolist()
        assert logprobs["top_logprobs"][i] == pytest.approx(
            {token_name(tok, t): float(reference[t]) for t in top})  # the chosen one is the likeliest
    text = body["choices"][0]["text"]  # each token's text starts at its offset (a byte piece: where its character does)
    assert logprobs["text_offset"] == sorted(logprobs["text_offset"]) and logprobs["text_offset"][0] == 0
    assert all(text.startswith(t, at) for t, at in zip(logprobs["tokens"], logprobs["text_offset"]) if "bytes:" not in t)
    with client.stream("POST", "/v1/completions", json={"model": "a", "prompt": "hi", "max_tokens": 4,
                                                        "temperature": 0, "logprobs": 2, "stream": True}) as r:
        chunks = events(r)
    streamed = [lp for c in chunks for lp in (c["choices"][0]["logprobs"] or {}).get("token_logprobs", [])]
    assert streamed == pytest.approx(logprobs["token_logprobs"])


def test_chat_logprobs_shape(served):
    client, model, tok = served
    r = client.post("/v1/chat/completions", json={"model": "a", "messages": [{"role": "user", "content": "hi"}],
                                                  "max_tokens": 3, "temperature": 0, "logprobs": True,
                                                  "top_logprobs": 2})
    content = r.json()["choices"][0]["logprobs"]["content"]
    assert len(content) == 3 and {"token", "logprob", "bytes", "top_logprobs"} <= set(content[0])
    assert len(content[0]["top_logprobs"]) == 2 and content[0]["top_logprobs"][0]["logprob"] == content[0]["logprob"]
    assert client.post("/v1/chat/completions", json={"model": "a", "messages": [{"role": "user", "content": "hi"}],
                                                     "top_logprobs": 2}).status_code == 400  # needs logprobs: true


def test_echo_puts_the_prompt_before_the_completion(served):
    client, model, tok = served
    plain = complete(client, temperature=0, max_tokens=4)["choices"][0]["text"]
    assert complete(client, temperature=0, max_tokens=4, echo=True)["choices"][0]["text"] == "hi" + plain
    with client.stream("POST", "/v1/completions", json={"model": "a", "prompt": "hi", "max_tokens": 4,
                                                        "temperature": 0, "echo": True, "stream": True}) as r:
        chunks = events(r)
    assert chunks[0]["choices"][0]["text"] == "hi"
    assert "".join(c["choices"][0]["text"] for c in chunks) == "hi" + plain


def test_stream_options_include_usage_sends_a_last_chunk_with_usage(served):
    client, model, tok = served
    with client.stream("POST", "/v1/completions", json={"model": "a", "prompt": "hi", "max_tokens": 3, "n": 2,
                                                        "stream": True, "stream_options": {"include_usage": True}}) as r:
        chunks = events(r)
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 6
    assert all(c["usage"] is None for c in chunks[:-1])  # OpenAI's: null until the last chunk
    assert sorted(c["choices"][0]["index"] for c in chunks[:-1] if c["choices"][0]["finish_reason"]) == [0, 1]
    with client.stream("POST", "/v1/chat/completions", json={"model": "a", "messages": [{"role": "user", "content": "hi"}],
                                                             "max_tokens": 3, "n": 2, "stream": True}) as r:
        chunks = events(r)
    roles = [c["choices"][0]["index"] for c in chunks if c["choices"][0]["delta"].get("role") == "assistant"]
    assert roles == [0, 1] and all("usage" not in c for c in chunks)  # not asked for: no usage chunk
    r = client.post("/v1/completions", json={"model": "a", "prompt": "hi", "stream_options": {"include_usage": True}})
    assert r.status_code == 400 and r.json()["error"]["param"] == "stream_options"  # only with stream, as vLLM


# ---------------------------------------------------------------------------------------------------
# what clients send, and what they get for mistakes
# ---------------------------------------------------------------------------------------------------
def test_chat_content_as_a_list_of_text_parts(served):
    client, model, tok = served
    ask = lambda content: client.post("/v1/chat/completions", json={  # noqa: E731
        "model": "a", "messages": [{"role": "user", "content": content}], "max_tokens": 4, "temperature": 0})
    parts = ask([{"type": "text", "text": "hi"}, {"type": "text", "text": "you"}])
    assert parts.status_code == 200, parts.text
    assert parts.json()["choices"][0]["message"] == ask("hi\nyou").json()["choices"][0]["message"]
    assert ask([{"type": "image_url", "image_url": {"url": "x"}}]).status_code == 400


@pytest.mark.parametrize("extra", [{"suffix": None}, {"response_format": None}, {"response_format": {"type": "text"}},
                                   {"best_of": 1}, {"logprobs": None, "echo": False}, {"logit_bias": {}},
                                   {"user": "me", "stream_options": None}])
def test_parameters_clients_send_at_their_off_value_are_accepted(served, extra):
    assert complete(served[0], max_tokens=2, **extra)["choices"][0]["finish_reason"] == "length"


@pytest.mark.parametrize("extra, param", [
    ({"suffix": "end"}, "suffix"), ({"n": 0}, "n"), ({"max_tokens": -1}, "max_tokens"),
    ({"temperature": -0.1}, "temperature"), ({"top_p": 1.5}, "top_p"), ({"presence_penalty": 3}, None),
    ({"repetition_penalty": 0}, None), ({"logit_bias": {"99999": 1}}, "logit_bias"),
    ({"logit_bias": {"5": "x"}}, "body.logit_bias.5"), ({"stop_token_ids": [-1]}, "stop_token_ids"),
    # (a value its pydantic type refuses: param the error's loc, as vLLM 0.24's handler writes it, r17)
    ({"logprobs": 21}, "logprobs"), ({"echo": 2}, "body.echo"), ({"ignore_eos": "maybe"}, "body.ignore_eos"),
    ({"stream": True, "stream_options": {"include_usage": "sometimes"}}, "body.stream_options.include_usage"),
    # (best_of, "yes", 1: taken as vLLM's pydantic models take them, tests/test_serve_fields_r11.py)
    ({"frequency_penalty": "high"}, "body.frequency_penalty")])
def test_bad_values_are_a_400_naming_the_parameter(served, extra, param):
    r = served[0].post("/v1/completions", json={"model": "a", "prompt": "hi", **extra})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == param and error["code"] == 400 and error["message"]


def test_unknown_routes_and_methods_answer_openais_error_json(served):
    client = served[0]
    r = client.get("/v1/nothing")
    assert r.status_code == 404 and r.json()["error"]["code"] == 404  # was plain text "Not Found"
    r = client.get("/v1/completions")
    assert r.status_code == 405 and "GET" in r.json()["error"]["message"]


# ---------------------------------------------------------------------------------------------------
# `minilora train` interrupted by Ctrl-C: exit 130, the checkpoint holds every finished step, resume continues
# ---------------------------------------------------------------------------------------------------
def test_ctrl_c_during_train_keeps_the_finished_steps_and_resume_continues(tmp_path, monkeypatch, capsys):
    from test_cli import FAST, run_cli
    import minilora.train as train_module
    model_dir = str(tmp_path / "tiny")
    tok = ByteTokenizer()
    ml.manual_seed(0)
    config = ml.models.LlamaConfig(vocab_size=tok.vocab_size, hidden_size=16, intermediate_size=32,
                                   num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=128)
    ml.models.LlamaForCausalLM(config).save_pretrained(model_dir)
    update = train_module._Progress.update

    def ctrl_c_at_step_2(self, step, loss, lr):
        update(self, step, loss, lr)
        if step == 2:
            signal.raise_signal(signal.SIGINT)  # as the terminal sends it, mid-run
    monkeypatch.setattr(train_module._Progress, "update", ctrl_c_at_step_2)
    out = str(tmp_path / "run")
    args = ["train", "--task", "reverse", "--r", "2", "--model", model_dir, "--out", out, "--steps", "4", *FAST]
    code, text = run_cli(args, capsys)
    assert code == 130 and "--resume" in text, text
    monkeypatch.setattr(train_module._Progress, "update", update)
    code, text = run_cli(args + ["--resume"], capsys)
    assert code == 0, text
    steps = [json.loads(line)["step"] for line in open(os.path.join(out, "metrics.jsonl"))
             if json.loads(line).get("kind") == "train"]
    assert steps == [1, 2, 3, 4]  # nothing lost, nothing trained twice


def test_a_prompt_longer_than_the_context_names_the_prompt(served):
    client = served[0]  # (vLLM 0.24 names the prompt's tokens "input_tokens": tests/test_serve_offpath_r13.py)
    r = client.post("/v1/completions", json={"model": "a", "prompt": "x" * 80, "max_tokens": 1})
    assert r.status_code == 400 and r.json()["error"]["param"] == "input_tokens"
    assert "maximum context length is 64" in r.json()["error"]["message"] and "requested 1 output token" in r.text
    r = client.post("/v1/chat/completions", json={"model": "a", "messages": [{"role": "user", "content": "x" * 80}]})
    assert r.status_code == 400 and "requested 0 output tokens" in r.text  # no max_tokens was given


def test_more_choices_than_the_server_holds_at_once_wait_for_free_rows_as_vllm(served):
    client = served[0]  # 4 running + 8 queued: 14 choices of one request queue whole (tests/test_serve_batch_r10.py)
    assert complete(client, n=7, prompt=["hi", "yo"], max_tokens=2)["usage"]["completion_tokens"] == 28


@pytest.mark.parametrize("argv", [["memory", "--bogus"], ["train", "--steps", "2", "--bogus", "x"],
                                  ["generate", "hi", "there", "--model", "m"]])
def test_an_unknown_argument_is_named_by_its_subcommand_with_its_usage(argv, capsys):
    from test_cli import run_cli
    code, text = run_cli(argv, capsys)
    assert code == 2  # argparse's status for a usage error
    assert f"usage: minilora {argv[0]}" in text and f"minilora {argv[0]}: error: unrecognized arguments" in text


# ---------------------------------------------------------------------------------------------------
# vLLM's extra sampling parameters
# ---------------------------------------------------------------------------------------------------
def test_min_p_keeps_tokens_within_min_p_of_the_likeliest_as_vllm(served):
    client, model, tok = served
    logits = logits_after(model, tok.encode("hi"))[:259]
    probs = np.exp((logits - logits.max()) / 0.7)
    allowed = {served_text(tok, [t]) for t in np.flatnonzero(probs >= 0.5)}  # relative to the likeliest, at temperature 0.7
    texts = [complete(client, temperature=0.7, min_p=0.5, max_tokens=1, seed=s)["choices"][0]["text"] for s in range(12)]
    assert set(texts) <= allowed and len(allowed) < 259
    assert complete(client, temperature=0.7, min_p=0, max_tokens=4, seed=1)["choices"] == \
        complete(client, temperature=0.7, max_tokens=4, seed=1)["choices"]  # 0: off


def test_min_tokens_holds_off_eos_and_stop_tokens_and_include_stop_str_in_output(served):
    client, model, tok = served
    greedy = alone(model, tok.encode("hi"), "a", 8)
    body = complete(client, temperature=0, max_tokens=8, stop_token_ids=[greedy[0]], min_tokens=1)
    assert body["usage"]["completion_tokens"] >= 2  # greedy's first token is a stop token: masked for one token
    text = tok.decode(greedy, skip_special_tokens=True)
    stop = text[2:4]
    body = complete(client, temperature=0, max_tokens=8, stop=stop, include_stop_str_in_output=True)
    assert body["choices"][0]["text"] == text[:text.find(stop) + len(stop)]
    assert body["choices"][0]["finish_reason"] == "stop"


def test_negative_seeds_are_taken_as_vllm_takes_them(served):
    client = served[0]
    first, second = (complete(client, seed=-5, temperature=1, max_tokens=4)["choices"][0]["text"] for _ in range(2))
    assert first == second


def test_stream_with_include_usage_sends_usage_null_on_every_other_chunk(served):
    client = served[0]
    with client.stream("POST", "/v1/completions", json={"model": "a", "prompt": "hi", "max_tokens": 3, "stream": True,
                                                        "stream_options": {"include_usage": True}}) as r:
        chunks = events(r)
    assert all(c["usage"] is None for c in chunks[:-1]) and chunks[-1]["usage"]["completion_tokens"] == 3


def test_a_stop_string_inside_min_tokens_is_not_cut_later(served):
    """vLLM looks for stop strings in the new text only, from min_tokens on: one that appeared earlier was
    already sent, and the text must not be cut back before it."""
    client, model, tok = served
    greedy = alone(model, tok.encode("abd"), "a", 12)
    assert greedy[:8] == [52, 201, 122, 201, 188, 158, 222, 52]  # "4" first, and again as the 8th token
    ask = lambda **kw: complete(client, prompt="abd", temperature=0, max_tokens=12, stop="4", **kw)["choices"][0]  # noqa: E731
    assert ask()["text"] == "" and ask()["finish_reason"] == "stop"
    held = ask(min_tokens=4)
    assert held["text"] == tok.decode(greedy[:7], skip_special_tokens=True) and held["finish_reason"] == "stop"
    r = client.post("/v1/completions", json={"model": "a", "prompt": "hi", "max_tokens": 3, "min_tokens": 4})
    assert r.status_code == 400 and r.json()["error"]["param"] is None  # (SamplingParams' check names none)


def forced(engine, request, tokens):
    """Run ``request`` through the engine's token handling with ``tokens`` chosen one by one (greedy on
    one-hot logits): the stop-string logic on a text written byte by byte."""
    engine.rows.append(request)
    for token in tokens:
        if request.finished:
            break
        logits = np.full(260, -10.0)
        logits[token] = 10.0
        engine._take(0, logits, leave=False)
    engine.rows.clear()


@pytest.mark.parametrize("stop, min_tokens, expected", [
    ("é", 0, "ab"), ("é", 3, "ab"),  # the 4th token completes the first 'é': past min_tokens, found
    ("é", 4, "abé!"), ("b", 3, "abé!éx")])  # vLLM looks only in the text of the tokens after the first min_tokens
def test_stop_strings_on_text_that_arrives_byte_by_byte(stop, min_tokens, expected):
    """'é' is two bytes: the first alone decodes to U+FFFD, so the text shrinks when the second arrives."""
    from test_serve import Collector
    from minilora.serve import Request
    engine = Engine(two_adapters(), ByteTokenizer())
    engine.eos = set()
    sink = Collector()
    request = Request([1], None, max_tokens=20, temperature=0, stop=[stop], min_tokens=min_tokens, emit=sink)
    forced(engine, request, list(b"ab\xc3\xa9!\xc3\xa9xbz"))
    assert (sink.text, sink.done) == (expected, "stop")


# ---------------------------------------------------------------------------------------------------
# tokenizer.json with added tokens: vocab_size as transformers counts it, and the server samples them
# ---------------------------------------------------------------------------------------------------
def _tokenizer_with_added_tokens(folder):
    tokenizers = pytest.importorskip("tokenizers")
    vocab = {w: i for i, w in enumerate(["a", "b", "c", "hi", "there", "[UNK]"])}
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tok.add_special_tokens(["<s>", "</s>", "<|eot|>"])  # ids 6, 7, 8: added past the base vocabulary
    os.makedirs(folder, exist_ok=True)
    tok.save(os.path.join(folder, "tokenizer.json"))
    return os.path.join(folder, "tokenizer.json")


def test_vocab_size_excludes_added_tokens_and_len_counts_them_as_transformers(tmp_path):
    from transformers import PreTrainedTokenizerFast
    from minilora import tokenizer as tokenizers
    path = _tokenizer_with_added_tokens(str(tmp_path))
    theirs, ours = PreTrainedTokenizerFast(tokenizer_file=path), tokenizers.from_file(path)
    assert (ours.vocab_size, len(ours)) == (theirs.vocab_size, len(theirs)) == (6, 9)


def test_the_server_can_emit_an_added_token(tmp_path):
    """A chat model's end-of-turn token is usually an added token: the server must be able to sample it."""
    from minilora import tokenizer as tokenizers
    tok = tokenizers.from_file(_tokenizer_with_added_tokens(str(tmp_path)), eos_token="<|eot|>")
    model = two_adapters()  # 260 rows: more than the tokenizer's 9 tokens
    engine = Engine(model, tok)
    from test_serve import Collector
    from minilora.serve import Request
    sink = Collector()
    request = Request([3], None, max_tokens=5, temperature=0, emit=sink)
    forced(engine, request, [4, 8, 0])
    # " there": decoded after the prompt's "hi", as vLLM's detokenizer decodes it (a word-level decoder's space)
    assert request.generated == [4, 8] and sink.done == "stop" and sink.text == " there"


def test_ctrl_c_in_any_command_is_exit_130_without_a_traceback(monkeypatch, capsys):
    from test_cli import run_cli
    import minilora.models

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(minilora.models.LlamaForCausalLM, "from_pretrained", interrupted)
    monkeypatch.setattr(minilora.models, "load_base", interrupted)
    code, text = run_cli(["generate", "hi"], capsys)  # was: the KeyboardInterrupt's traceback
    assert code == 130 and "minilora generate: interrupted" in text


# ---------------------------------------------------------------------------------------------------
# echo + logprobs (+ max_tokens 0): the prompt's log-likelihood, as lm-evaluation-harness asks vLLM for it
# ---------------------------------------------------------------------------------------------------
def test_echo_with_logprobs_scores_the_prompt(served):
    torch = pytest.importorskip("torch")
    client, model, tok = served
    prompt = tok.encode("hello")
    body = complete(client, prompt="hello", echo=True, max_tokens=0, logprobs=1, temperature=0)
    choice = body["choices"][0]
    assert choice["text"] == "hello" and choice["finish_reason"] == "length"
    # (vLLM generates one token it does not show, and counts it: r12)
    assert body["usage"] == {"prompt_tokens": len(prompt), "completion_tokens": 1, "total_tokens": len(prompt) + 1}
    logprobs = choice["logprobs"]
    assert logprobs["tokens"] == [tok.decode([t]) for t in prompt]
    assert logprobs["token_logprobs"][0] is None and logprobs["top_logprobs"][0] is None  # nothing before it
    with ml.no_grad():
        logits = torch.tensor(model(np.array(prompt)[None, :], adapter_names=["a"]).logits.numpy()[0])
    reference = torch.log_softmax(logits.double(), dim=-1)
    for i in range(1, len(prompt)):
        assert logprobs["token_logprobs"][i] == pytest.approx(float(reference[i - 1, prompt[i]]), abs=1e-9)
    generated = complete(client, prompt="hello", echo=True, max_tokens=3, logprobs=1, temperature=0)["choices"][0]
    alone_lp = complete(client, prompt="hello", max_tokens=3, logprobs=1, temperature=0)["choices"][0]["logprobs"]
    assert generated["logprobs"]["token_logprobs"] == logprobs["token_logprobs"] + alone_lp["token_logprobs"]
    with client.stream("POST", "/v1/completions", json={"model": "a", "prompt": "hello", "max_tokens": 0,
                                                        "echo": True, "logprobs": 1, "stream": True}) as r:
        chunks = events(r)
    assert "".join(c["choices"][0]["text"] for c in chunks) == "hello"
    assert [lp for c in chunks for lp in (c["choices"][0]["logprobs"] or {}).get("token_logprobs", [])] == \
        logprobs["token_logprobs"]
    r = client.post("/v1/completions", json={"model": "a", "prompt": "hi", "max_tokens": 0})
    assert r.status_code == 400 and r.json()["error"]["param"] == "max_tokens"  # 0 only with echo, as vLLM


def test_streamed_logprobs_equal_the_whole_answers(served):
    """The same request streamed and not: the logprobs chunks put together are the whole answer's."""
    client = served[0]
    body = {"model": "a", "prompt": "hello", "max_tokens": 5, "echo": True, "logprobs": 2, "temperature": 0}
    whole = client.post("/v1/completions", json=body).json()["choices"][0]["logprobs"]
    with client.stream("POST", "/v1/completions", json={**body, "stream": True}) as r:
        parts = [c["choices"][0]["logprobs"] for c in events(r) if c["choices"][0]["logprobs"]]
    for key in ("tokens", "token_logprobs", "top_logprobs", "text_offset"):
        assert [x for part in parts for x in part[key]] == whole[key], key


def test_health_fails_once_the_engine_has_stopped(monkeypatch):
    """A load balancer polls /health: after the model failed, every request gets 500/503, so /health must
    not keep answering 200 (vLLM's answers 500 once its engine is dead)."""
    from starlette.testclient import TestClient
    from minilora.serve.app import create_app
    from minilora.serve.engine import wait_until
    engine = Engine(two_adapters(), ByteTokenizer())

    def broken(tokens):
        raise RuntimeError("out of memory")
    monkeypatch.setattr(engine.batch, "step", broken)
    # (requests send chat templates of their own: vLLM's --trust-request-chat-template)
    with TestClient(create_app(engine, model_name="tiny", trust_request_chat_template=True)) as client:
        assert client.get("/health").status_code == 200
        r = client.post("/v1/completions", json={"model": "a", "prompt": "x", "max_tokens": 3})
        assert r.status_code == 500 and "out of memory" in r.json()["error"]["message"]
        assert wait_until(lambda: not engine._thread.is_alive(), timeout=10)
        r = client.get("/health")
        assert r.status_code == 503 and "out of memory" in r.json()["error"]["message"]


def test_models_list_an_adapters_folder_as_its_root_as_vllm(served, tmp_path):
    from minilora.lora import get_peft_model
    from test_serve import adapter_config, base_model
    client = served[0]
    get_peft_model(base_model(), adapter_config(3)).save_pretrained(str(tmp_path / "c"))
    assert client.post("/v1/load_lora_adapter", json={"lora_name": "c", "lora_path": str(tmp_path / "c")}).status_code == 200
    cards = {m["id"]: m for m in client.get("/v1/models").json()["data"]}
    assert cards["c"]["root"] == str(tmp_path / "c") and cards["c"]["parent"] == "tiny"
    assert cards["tiny"]["parent"] is None and cards["tiny"]["max_model_len"] == 64
    client.post("/v1/unload_lora_adapter", json={"lora_name": "c"})
    assert "c" not in {m["id"] for m in client.get("/v1/models").json()["data"]}


def test_serve_takes_a_vllm_lora_command_line(serve_command, model_dirs, capsys):
    """`vllm serve MODEL --enable-lora --lora-modules '{"name": ..., "path": ...}' NAME=DIR --max-lora-rank R`,
    pasted as it is: --enable-lora is a no-op (LoRA is always on), the JSON form is read, the rank bound held."""
    tiny, ad, ad2 = (str(model_dirs / n) for n in ("tiny", "ad", "ad2"))  # ranks 2 and 3
    module = json.dumps({"name": "x", "path": ad, "base_model_name": "tiny"})
    code, err, engine, _ = serve_command([tiny, "--enable-lora", "--lora-modules", module, f"y={ad2}",
                                          "--max-lora-rank", "8"], capsys)
    assert code == 0, err
    assert engine.adapters() == ["x", "y"] and engine.adapter_paths == {"x": ad, "y": ad2}
    code, err, _, _ = serve_command([tiny, "--lora-modules", f"x={ad}", f"y={ad2}", "--max-lora-rank", "2"], capsys)
    assert code == 2 and "rank 3" in err and "--max-lora-rank 2" in err
    code, err, _, _ = serve_command([tiny, "--lora-modules", '{"name": "x"}'], capsys)
    assert code == 2 and "path" in err


@pytest.mark.parametrize("kind", ["byte", "tokenizer.json"])
def test_token_lookups_as_transformers(tmp_path, kind):
    """convert_ids_to_tokens / convert_tokens_to_ids / tokenize / get_vocab, which transformers users
    call to look inside a tokenizer (they raised AttributeError), against PreTrainedTokenizerFast on
    the same tokenizer.json."""
    from transformers import PreTrainedTokenizerFast
    from minilora import tokenizer as tokenizers
    if kind == "byte":
        ours = ByteTokenizer()
        ours.save_pretrained(str(tmp_path))
        text, ids = "hé there", [104, 195, 169, 32, 256, 257]
    else:
        ours = tokenizers.from_file(_tokenizer_with_added_tokens(str(tmp_path)))
        text, ids = "hi there zzz", [3, 4, 6, 8]
    theirs = PreTrainedTokenizerFast(tokenizer_file=str(tmp_path / "tokenizer.json"))
    assert ours.convert_ids_to_tokens(ids) == theirs.convert_ids_to_tokens(ids)
    assert ours.convert_ids_to_tokens(ids[0]) == theirs.convert_ids_to_tokens(ids[0])
    tokens = theirs.convert_ids_to_tokens(ids)
    assert ours.convert_tokens_to_ids(tokens) == theirs.convert_tokens_to_ids(tokens) == ids
    assert ours.convert_tokens_to_ids(tokens[0]) == ids[0]
    assert ours.tokenize(text) == theirs.tokenize(text)
    assert ours.get_vocab() == theirs.get_vocab()


def test_chat_continues_the_final_message_as_vllm(served):
    """vLLM's chat extras: add_generation_prompt (default true) and continue_final_message (the reply
    goes on from a partial assistant message), and a request's own chat_template."""
    client, model, tok = served
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "The answer is"}]
    ids = tok.apply_chat_template(messages, add_generation_prompt=False, continue_final_message=True, return_dict=False)
    expected = tok.decode(alone(model, list(ids), "a", 4), skip_special_tokens=True)
    ask = lambda **kw: client.post("/v1/chat/completions", json={  # noqa: E731
        "model": "a", "messages": messages, "max_tokens": 4, "temperature": 0, **kw})
    r = ask(add_generation_prompt=False, continue_final_message=True)
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"] == expected
    assert r.json()["usage"]["prompt_tokens"] == len(ids)
    r = ask(continue_final_message=True)  # with the default add_generation_prompt=true: transformers' refusal
    assert r.status_code == 400 and r.json()["error"]["message"].startswith(
        "continue_final_message and add_generation_prompt are not compatible.")  # (vLLM's: the template's words, r14)
    own = "{% for m in messages %}{{ m['content'] }}|{% endfor %}"
    r = ask(chat_template=own)
    assert r.json()["usage"]["prompt_tokens"] == len(tok.encode("hi|The answer is|", add_special_tokens=False))


def test_a_chat_template_that_refuses_the_messages_is_a_400_not_a_500(served):
    client, model, tok = served
    tok.chat_template = ("{% for m in messages %}{% if m['role'] == 'user' and loop.index0 % 2 == 1 %}"
                         "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant') }}"
                         "{% endif %}{{ m['content'] }}{% endfor %}")
    r = client.post("/v1/chat/completions", json={"model": "a", "messages": [{"role": "user", "content": "a"},
                                                                            {"role": "user", "content": "b"}]})
    assert r.status_code == 400, r.text  # was a 500 "Internal Server Error"
    assert r.json()["error"]["message"] == "Conversation roles must alternate user/assistant/user/assistant"
    assert r.json()["error"]["param"] is None  # (vLLM's create_error_response of a TemplateError: r14)
    r = client.post("/v1/chat/completions", json={"model": "a", "messages": [{"role": "user", "content": "a"}],
                                                  "chat_template": "{% for m in messages %}{{ m.content }"})
    assert r.status_code == 400  # a request's own template that does not parse
