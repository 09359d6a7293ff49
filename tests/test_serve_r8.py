"""`minilora serve` against vLLM's own algorithms, round 8 (each written here as vLLM's source has it, with
transformers' tokenizer and torch as the oracles; the server in process, with the official `openai` client):

| what                                        | before                                  | now (vLLM's)                          |
|---------------------------------------------|-----------------------------------------|---------------------------------------|
| the text of each step                       | the whole output decoded again: O(n^2)  | detokenize_incrementally's window     |
|                                             |  (2,048 tokens: 2.1M ids decoded)       |  (prefix_offset/read_offset): O(n)    |
| a completion's first word                   | decoded alone: "there"                  | after the prompt's last tokens:       |
|                                             |                                         |  " there" (a decoder's space)         |
| bytes that end the output, no character     | sent as U+FFFD                          | never sent                            |
| two stop strings found in one step          | the one that starts first               | the one that ends first               |
| include_stop_str_in_output                  | text held back; the EOS text never sent | nothing held back; the stop token's   |
|                                             |                                         |  text sent                            |
| stop strings with min_tokens                | searched from token min_tokens on       | in the text after min_tokens tokens   |
| the generation_config's eos_token_id list   | ignored                                 | stop tokens (stop_reason: the id)     |
| a seeded request                            | NumPy's stream, transformers' top-k/p   | torch.Generator(seed) per choice      |
|                                             |                                         |  (seed + i), the exponential race,    |
|                                             |                                         |  float32 penalties / min_p / top-k/p  |
| a choice's stop_reason                      | absent                                  | the stop string or stop token id      |
| logit_bias past [-100, 100]; seed -1;       | 400; seeded with -1; divided by it      | clamped; no seed; 0.01                |
|  a temperature below 0.01                   |                                         |  (vLLM's SamplingParams)              |
| stop: ""; allowed_token_ids                 | ignored; refused as unknown             | 400; only those ids sampled           |
| n > 1 at temperature 0                      | n equal greedy choices                  | 400 (_verify_greedy_sampling)         |
| a stream's chunks                           | one per piece of text; the echo alone;  | one per token; the echo with the      |
|                                             |  the finish_reason in an empty chunk    |  first; the last text with the finish |
"""
import asyncio
import os
import time

import numpy as np
import pytest

openai = pytest.importorskip("openai")
torch = pytest.importorskip("torch")
tokenizers = pytest.importorskip("tokenizers")
transformers = pytest.importorskip("transformers")
pytest.importorskip("starlette")

import minilora as ml  # noqa: E402
from minilora.serve import Engine, Request  # noqa: E402
from minilora.serve.app import _token_text, create_app  # noqa: E402
from minilora.serve.detokenizer import IncrementalDetokenizer, check_stop_strings  # noqa: E402
from minilora.tokenizer import ByteTokenizer  # noqa: E402
from test_serve import CHAT_TEMPLATE, Collector, base_model, served_text  # noqa: E402
from test_serve_openai_r6 import HTTP  # noqa: E402
from test_serve_r7 import byte_fallback_tokenizer, byte_level_tokenizer  # noqa: E402

EOS = 257  # the ByteTokenizer's <eos>
TEXT_VOCAB = 259  # its ids; the tiny model has 260 (the last is no text: never picked)


# ---------------------------------------------------------------------------------------------------
# vLLM's detokenize_incrementally (vllm/tokenizers/detokenizer_utils.py), on transformers' tokenizer
# ---------------------------------------------------------------------------------------------------
def vllm_deltas(fast, prompt_ids, ids, skip):
    """The text each of ``ids`` adds, as vLLM's SlowIncrementalDetokenizer computes it on token strings."""
    tokens = fast.convert_ids_to_tokens(prompt_ids[-7:], skip_special_tokens=skip)  # convert_prompt_ids_to_tokens
    read = len(tokens)
    prefix = max(read - 5, 0)
    deltas = []
    for token in ids:
        tokens = tokens + fast.convert_ids_to_tokens([token], skip_special_tokens=skip)
        prefix_text = fast.convert_tokens_to_string(tokens[prefix:read])
        new_text = fast.convert_tokens_to_string(tokens[prefix:])
        if len(new_text) <= len(prefix_text) or new_text.endswith("\ufffd"):
            deltas.append("")
            continue
        deltas.append(new_text[len(prefix_text):])
        prefix, read = read, len(tokens)
    return deltas


def fast_twin(tok):
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok.tokenizer, bos_token=tok.bos_token,
                                                eos_token=tok.eos_token)


@pytest.mark.parametrize("make", [byte_fallback_tokenizer, byte_level_tokenizer])
@pytest.mark.parametrize("skip", [True, False])
def test_each_tokens_text_is_vllms_detokenize_incrementally(make, skip):
    tok = make()
    fast = fast_twin(tok)
    rng = np.random.default_rng(3)
    for _ in range(6):
        if make is byte_fallback_tokenizer:  # bytes (pieces of characters), words "▁a" "▁b" "c" "▁", <s> </s>
            pool = [3 + b for b in b"ab \xc3\xa9\xe2\x82\xac\xf0\x9f\x99\x82\xff"] + [259, 260, 261, 262, 1, 2]
        else:
            pool = list(b"ab \xc3\xa9\xe2\x82\xac\xff") + [256, 257]
        prompt, ids = rng.choice(pool, 6).tolist(), rng.choice(pool, 40).tolist()
        detok = IncrementalDetokenizer(tok, prompt, skip_special_tokens=skip)
        assert [detok.decode_next(t) for t in ids] == vllm_deltas(fast, prompt, ids, skip)


class CountingTokenizer(ByteTokenizer):
    """The byte tokenizer, counting the ids it decodes."""
    decoded = 0

    def decode(self, token_ids, **kwargs):
        self.decoded += len(token_ids)
        return super().decode(token_ids, **kwargs)


def forced(engine, request, tokens):
    """``request`` through the engine's token handling, ``tokens`` chosen one by one (one-hot logits)."""
    engine.rows.append(request)
    for token in tokens:
        if request.finished:
            break
        logits = np.full(260, -10.0)
        logits[token] = 10.0
        engine._take(0, logits, leave=False)
    engine.rows.clear()


def test_a_long_streamed_text_decodes_a_constant_number_of_ids_per_token():
    """2,048 tokens (multi-byte characters among them): the text streamed is the text, and every token costs
    a few ids decoded, wherever it comes (the whole text decoded each step was 2.1M ids)."""
    tok = CountingTokenizer()
    engine = Engine(base_model(), tok)
    engine.eos = set()
    text = ("naïve café — 3€ 🙂 " * 200)
    ids = list(text.encode())[:2048]
    chunks = []
    request = Request([104, 105], None, max_tokens=len(ids), temperature=0,
                      emit=lambda kind, value: chunks.append(value) if kind == "text" else None)
    halves = []
    for half in (ids[:1024], ids[1024:]):
        before = tok.decoded
        forced(engine, request, half)
        halves.append(tok.decoded - before)
    assert "".join(chunks) == bytes(ids).decode("utf-8", "ignore") and request.finished
    assert max(halves) <= 8 * 1024 and halves[1] <= 1.2 * halves[0]  # linear: the second half costs the first's


# ---------------------------------------------------------------------------------------------------
# stop strings, include_stop_str_in_output, min_tokens, stop_reason (vllm/v1/engine/detokenizer.py)
# ---------------------------------------------------------------------------------------------------
def test_check_stop_strings_picks_the_stop_that_ends_first():
    assert check_stop_strings("xhello world", 11, ["hello world", "llo"], False) == ("llo", 3)
    assert check_stop_strings("xhello world", 11, ["hello world", "llo"], True) == ("llo", 6)
    assert check_stop_strings("abcd", 1, ["bc"], False) is None  # ended in text searched before
    assert check_stop_strings("abcd", 2, ["bc", "cd"], True) == ("bc", 3)
    assert check_stop_strings("abcd", 2, ["cd"], True) == ("cd", -1)  # ends the text: nothing cut


def added_token_engine():
    tok = ByteTokenizer()
    tok.add_tokens(["hello world"])  # id 259: one token, several characters
    engine = Engine(base_model(), tok)
    return engine, tok


def test_one_token_completing_two_stop_strings_stops_at_the_one_that_ends_first():
    engine, tok = added_token_engine()
    sink = Collector()
    request = Request([104], None, max_tokens=5, temperature=0, stop=["hello world", "llo"], emit=sink)
    forced(engine, request, [259, 33])
    assert (sink.text, sink.done, request.stop_reason) == ("he", "stop", "llo")


def test_include_stop_str_in_output_holds_nothing_back_and_keeps_the_stop_tokens_text():
    engine, tok = added_token_engine()
    chunks = []
    request = Request([104], None, max_tokens=9, temperature=0, stop=["xyz"], include_stop_str_in_output=True,
                      emit=lambda kind, value: chunks.append((kind, value)))
    forced(engine, request, list(b"abxyzq"))
    assert chunks == [("text", c) for c in "abxyz"] + [("done", "stop")]  # each character as it comes
    sink = Collector()
    request = Request([104], None, max_tokens=9, temperature=0, include_stop_str_in_output=True,
                      skip_special_tokens=False, emit=sink)
    forced(engine, request, [97, EOS])
    assert (sink.text, sink.done, request.stop_reason) == ("a<eos>", "stop", None)
    sink = Collector()
    request = Request([104], None, max_tokens=9, temperature=0, skip_special_tokens=False, stop_token_ids=[98],
                      emit=sink)
    forced(engine, request, [97, 98])
    assert (sink.text, sink.done, request.stop_reason) == ("a", "stop", 98)  # excluded, by default
    request = Request([104], None, max_tokens=9, temperature=0, stop_token_ids=[EOS], emit=Collector())
    forced(engine, request, [97, EOS])
    assert request.stop_reason is None  # check_stop: the EOS before the stop_token_ids


def test_min_tokens_masks_the_eos_even_with_ignore_eos_and_every_stop_token_id():
    """vLLM's MinTokensLogitsProcessor masks all_stop_token_ids: the stop_token_ids and the EOS, which
    update_from_generation_config adds whatever ignore_eos says."""
    logits = np.zeros(260)
    logits[EOS], logits[97] = 6.0, 5.0
    for ignore_eos in (False, True):
        request = Request([104], None, max_tokens=9, temperature=0, min_tokens=3, ignore_eos=ignore_eos,
                          stop_token_ids=[97])
        assert request.sample(logits, {EOS}, TEXT_VOCAB) not in (EOS, 97)
        request.generated = [1, 2, 3]  # min_tokens reached: nothing masked
        assert request.sample(logits, {EOS}, TEXT_VOCAB) == EOS


def test_the_generation_configs_eos_ids_stop_a_request_as_stop_token_ids():
    """A chat model's generation_config.json lists its end-of-turn ids: vLLM adds them to stop_token_ids."""
    model = base_model()
    model.generation_config.eos_token_id = [EOS, 33]
    engine = Engine(model, ByteTokenizer())
    assert engine.generation_eos == {33}
    sink = Collector()
    request = Request([104], None, max_tokens=9, temperature=0, emit=sink)
    forced(engine, request, [97, 33, 98])
    assert (sink.text, sink.done, request.stop_reason, request.generated) == ("a", "stop", 33, [97, 33])
    sink = Collector()
    request = Request([104], None, max_tokens=3, temperature=0, ignore_eos=True, emit=sink)
    forced(engine, request, [97, 33, 98])
    assert (sink.text, sink.done, request.stop_reason) == ("a!b", "length", None)


# ---------------------------------------------------------------------------------------------------
# the v1 sampler (vllm/v1/sample/sampler.py, ops/topk_topp_sampler.py, ops/penalties.py), in torch
# ---------------------------------------------------------------------------------------------------
def vllm_apply_top_k_top_p(logits, k, p):
    if p is None:
        if k is None:
            return logits
        threshold = logits.topk(k, dim=1).values[:, -1:]  # apply_top_k_only (k < vocab)
        return logits.masked_fill(logits < threshold, -float("inf"))
    logits_sort, logits_idx = logits.sort(dim=-1, descending=False)
    if k is not None:
        top_k_mask = logits_sort.gather(1, torch.tensor([[logits_sort.size(1) - k]]))
        logits_sort.masked_fill_(logits_sort < top_k_mask, -float("inf"))
    probs_sum = torch.cumsum(logits_sort.softmax(dim=-1), dim=-1)
    top_p_mask = probs_sum <= 1 - torch.tensor([p], dtype=torch.float32).unsqueeze(dim=1)
    top_p_mask[:, -1] = False
    logits_sort.masked_fill_(top_p_mask, -float("inf"))
    return logits_sort.scatter(dim=-1, index=logits_idx, src=logits_sort)


def vllm_sample(logits64, generator, options, prompt, output):
    """One row through vLLM's v1 Sampler (CPU), with minilora's mask of the ids past the tokenizer."""
    logits = torch.tensor(logits64).to(torch.float32)[None, :]
    logits[:, TEXT_VOCAB:] = -float("inf")
    for token, bias in options.get("logit_bias", {}).items():  # LogitBiasLogitsProcessor
        logits[0, token] += torch.tensor(bias, dtype=torch.float32)
    rep, freq, pres = (options.get(k, d) for k, d in [("repetition_penalty", 1.0), ("frequency_penalty", 0.0),
                                                       ("presence_penalty", 0.0)])
    if (rep, freq, pres) != (1.0, 0.0, 0.0):  # apply_penalties, apply_repetition_penalties_torch
        vocab = logits.shape[1]
        counts = torch.zeros((1, vocab + 1), dtype=torch.long)
        counts.scatter_add_(1, torch.tensor([output or [vocab]]), torch.ones((1, len(output) or 1), dtype=torch.long))
        counts = counts[:, :vocab] if output else torch.zeros((1, vocab), dtype=torch.long)
        prompt_mask = torch.zeros((1, vocab), dtype=torch.bool)
        prompt_mask[0, prompt] = True
        penalties = torch.where(prompt_mask | (counts > 0), torch.tensor([[rep]], dtype=torch.float32), 1.0)
        logits *= torch.where(logits > 0, 1.0 / penalties, penalties)
        logits -= torch.tensor([freq], dtype=torch.float32).unsqueeze(1) * counts
        logits -= torch.tensor([pres], dtype=torch.float32).unsqueeze(1) * (counts > 0)
    temperature = options.get("temperature", 1.0)
    if temperature < 1e-5:
        return int(logits.argmax(dim=-1))
    logits.div_(torch.tensor([temperature], dtype=torch.float32).unsqueeze(1))
    if options.get("min_p"):  # MinPLogitsProcessor
        probs = torch.nn.functional.softmax(logits, dim=-1)
        logits[probs < probs.amax(dim=-1, keepdim=True) * torch.tensor([[options["min_p"]]])] = -float("inf")
    top_p = options.get("top_p", 1.0)
    logits = vllm_apply_top_k_top_p(logits, options.get("top_k"), top_p if top_p < 1 else None)
    probs = logits.softmax(dim=-1, dtype=torch.float32)
    q = torch.empty_like(probs)
    q[0].exponential_(generator=generator)  # random_sample: the request's own generator
    return int(probs.div_(q).argmax(dim=-1))


@pytest.mark.parametrize("options", [
    dict(temperature=1.0), dict(temperature=0.7, top_k=5), dict(temperature=1.3, top_p=0.8),
    dict(temperature=0.9, top_k=20, top_p=0.6), dict(temperature=1.0, min_p=0.1),
    dict(temperature=0.8, repetition_penalty=1.3, frequency_penalty=0.5, presence_penalty=-0.4,
         logit_bias={65: 2.5, 66: -1.0}),
    dict(temperature=0.0, repetition_penalty=0.7, logit_bias={65: 1.5})])
@pytest.mark.parametrize("seed", [0, -5])
def test_a_seeded_request_samples_what_vllms_sampler_draws_from_torch_generator(options, seed):
    rng = np.random.default_rng(abs(seed) + 11)
    prompt = [104, 101, 108, 108, 111]
    request = Request(prompt, None, max_tokens=40, seed=seed, **options)
    generator = torch.Generator().manual_seed(seed)
    ours, theirs = [], []
    for _ in range(40):
        logits = rng.standard_normal(260) * 2.5
        logits[rng.integers(0, 260, 30)] += 1.5  # some tokens repeated: the penalties have something to do
        theirs.append(vllm_sample(logits, generator, options, prompt, list(theirs)))
        ours.append(request.sample(logits, set(), TEXT_VOCAB))
        request.generated.append(ours[-1])
    assert ours == theirs


def test_n_choices_of_a_seeded_request_draw_from_generators_seeded_seed_plus_i():
    """vLLM's parallel sampling: child i is the request with seed + i (ParentRequest), its own generator."""
    model = base_model()
    engine = Engine(base_model(), ByteTokenizer())
    engine.eos = set()
    app = create_app(engine.start(), "tiny")

    async def ask():
        async with openai.AsyncOpenAI(base_url="http://minilora/v1", api_key="-", max_retries=0, http_client=
                                      HTTP.AsyncClient(transport=HTTP.ASGITransport(app=app))) as client:
            return await client.completions.create(model="tiny", prompt="Dan", max_tokens=6, n=2, seed=42,
                                                   temperature=0.9, top_p=0.95, logprobs=0)
    try:
        got = asyncio.run(ask())
    finally:
        engine.shutdown()
    tok = ByteTokenizer()
    names = {_token_text(tok, i, TEXT_VOCAB): i for i in range(TEXT_VOCAB)}
    prompt = tok.encode("Dan")
    texts = set()
    for i, choice in enumerate(got.choices):
        generator, ids = torch.Generator().manual_seed(42 + i), list(prompt)
        for _ in range(6):
            with ml.no_grad():
                logits = model(np.array([ids])).logits.numpy()[0, -1].astype(np.float64)
            ids.append(vllm_sample(logits, generator, dict(temperature=0.9, top_p=0.95), prompt, []))
        assert [names[t] for t in choice.logprobs.tokens] == ids[len(prompt):], i
        assert choice.text == tok.decode(ids[len(prompt):], skip_special_tokens=True).rstrip("\ufffd")
        texts.add(choice.text)
    assert len(texts) == 2


# ---------------------------------------------------------------------------------------------------
# vLLM's parameters through the official client (the app in process, the client's ASGI transport)
# ---------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def app():
    tok = ByteTokenizer()
    tok.chat_template = CHAT_TEMPLATE
    engine = Engine(base_model(), tok, max_batch_size=4, max_queue=8).start()
    yield create_app(engine, "tiny")
    engine.shutdown()


def call(app, make):
    """``make(client)``'s answer: an awaitable made with an AsyncOpenAI client speaking to ``app``."""
    async def run():
        async with openai.AsyncOpenAI(base_url="http://minilora/v1", api_key="-", max_retries=0, http_client=
                                      HTTP.AsyncClient(transport=HTTP.ASGITransport(app=app))) as client:
            answer = await make(client)
            if hasattr(answer, "__aiter__"):
                return [chunk async for chunk in answer]
            return answer
    return asyncio.run(run())


def complete(app, **options):
    return call(app, lambda client: client.completions.create(model="tiny", prompt="Dan", **options))


def test_stop_reason_names_the_stop_string_or_token_that_ended_a_choice(app):
    tok = ByteTokenizer()
    names = {_token_text(tok, i, TEXT_VOCAB): i for i in range(TEXT_VOCAB)}
    greedy = complete(app, max_tokens=8, temperature=0, logprobs=0).choices[0]
    assert greedy.finish_reason == "length" and greedy.stop_reason is None
    ids = [names[t] for t in greedy.logprobs.tokens]
    at, token = next((k, t) for k, t in enumerate(ids) if k and t not in ids[:k] and t < 128)
    by_token = complete(app, max_tokens=8, temperature=0, extra_body={"stop_token_ids": [token]}).choices[0]
    assert (by_token.finish_reason, by_token.stop_reason) == ("stop", token)
    assert by_token.text == served_text(tok, ids[:at])
    stop = chr(token)
    by_text = complete(app, max_tokens=8, temperature=0, stop=[stop, "never"]).choices[0]
    # the text before the stop string: complete now (a stop token's own text is never decoded)
    assert (by_text.finish_reason, by_text.stop_reason) == ("stop", stop)
    assert by_text.text == tok.decode(ids[:at + 1], skip_special_tokens=True)[:-1]
    chunks = complete(app, max_tokens=8, temperature=0, stop=stop, stream=True)
    assert [c.choices[0].stop_reason for c in chunks] == [None] * (len(chunks) - 1) + [stop]
    chat = call(app, lambda client: client.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=3, temperature=0))
    assert chat.choices[0].stop_reason is None and chat.choices[0].finish_reason == "length"


def test_min_tokens_ignore_eos_skip_special_tokens_and_include_stop_str_through_the_client(app):
    eos_first = {"logit_bias": {str(EOS): 100}}
    got = complete(app, max_tokens=5, temperature=0, extra_body={"min_tokens": 3}, **eos_first)
    assert (got.choices[0].finish_reason, got.usage.completion_tokens) == ("stop", 4)  # EOS from the 4th on
    got = complete(app, max_tokens=5, temperature=0, logprobs=0, extra_body={"min_tokens": 3, "ignore_eos": True},
                   **eos_first)
    assert (got.choices[0].finish_reason, got.usage.completion_tokens) == ("length", 5)
    assert [t == "<eos>" for t in got.choices[0].logprobs.tokens] == [False] * 3 + [True] * 2
    got = complete(app, max_tokens=3, temperature=0, extra_body={"ignore_eos": True, "skip_special_tokens": False},
                   **eos_first)
    assert got.choices[0].text == "<eos>" * 3
    got = complete(app, max_tokens=3, temperature=0, extra_body={"skip_special_tokens": False,
                                                                  "include_stop_str_in_output": True}, **eos_first)
    assert (got.choices[0].text, got.choices[0].finish_reason, got.usage.completion_tokens) == ("<eos>", "stop", 1)


def test_logit_bias_is_clamped_seed_minus_one_is_no_seed_and_tiny_temperatures_are_001(app):
    def tokens(**options):
        return complete(app, max_tokens=6, logprobs=0, **options).choices[0].logprobs.tokens
    assert tokens(temperature=0, logit_bias={"65": 250}) == tokens(temperature=0, logit_bias={"65": 100}) == ["A"] * 6
    assert tokens(temperature=2.0, seed=-2) == tokens(temperature=2.0, seed=-2)
    assert tokens(temperature=2.0, seed=-1) != tokens(temperature=2.0, seed=-1)  # vLLM: -1 is "no seed"
    assert tokens(temperature=0.001, seed=3) == tokens(temperature=0.01, seed=3)
    for top_k in (-1, 0):  # vLLM's "every token"
        assert tokens(temperature=1.0, seed=5, extra_body={"top_k": top_k}) == tokens(temperature=1.0, seed=5)


def test_allowed_token_ids_keep_only_those_ids(app):
    for seed in range(3):
        got = complete(app, max_tokens=8, seed=seed, temperature=1.5, extra_body={
            "allowed_token_ids": [65, 66, 67], "spaces_between_special_tokens": True})
        assert set(got.choices[0].text) <= set("ABC") and len(got.choices[0].text) == 8


@pytest.mark.parametrize("options, param", [({"stop": ""}, "stop"), ({"stop": ["a", ""]}, "stop"),
                                            ({"logit_bias": {"65": "high"}}, "body.logit_bias.65"),  # (r17)
                                            ({"extra_body": {"top_k": -2}}, None),  # (vLLM's checks
                                            ({"n": 2, "temperature": 0}, None),  # name no param: r14)
                                            ({"extra_body": {"allowed_token_ids": []}}, "allowed_token_ids"),
                                            ({"extra_body": {"allowed_token_ids": [9999]}}, "allowed_token_ids"),
                                            ({"extra_body": {"bad_words": ["  "]}}, "bad_words")])
def test_bad_values_are_vllms_400_error_object(app, options, param):
    with pytest.raises(openai.BadRequestError) as err:
        complete(app, max_tokens=2, **options)
    assert err.value.status_code == 400
    assert err.value.body["param"] == param and err.value.body["code"] == 400
    kind = "Bad Request" if str(param).startswith("body") else "BadRequestError"  # (pydantic's refusal: vLLM's handler)
    assert err.value.body["type"] == kind and err.value.body["message"]


def test_a_stream_is_one_chunk_per_token_the_echo_in_the_first_and_the_finish_in_the_last(app):
    """vLLM's completion_stream_generator: a chunk for each engine step (its text "" while a character is
    incomplete), the prompt echoed with the first token's text, the last token's text with finish_reason."""
    whole = complete(app, max_tokens=6, temperature=0, echo=True, logprobs=1).choices[0]
    chunks = complete(app, max_tokens=6, temperature=0, echo=True, logprobs=1, stream=True)
    choices = [c.choices[0] for c in chunks]
    assert len(choices) == 6 and [c.finish_reason for c in choices] == [None] * 5 + ["length"]
    assert choices[0].text.startswith("Dan") and "".join(c.text for c in choices) == whole.text
    assert [len(c.logprobs.tokens) for c in choices] == [len("Dan") + 2] + [1] * 5  # (<bos>, D, a, n) + a token
    assert [t for c in choices for t in c.logprobs.tokens] == whole.logprobs.tokens
    assert [at for c in choices for at in c.logprobs.text_offset] == whole.logprobs.text_offset
