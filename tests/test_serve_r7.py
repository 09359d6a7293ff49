"""`minilora serve`'s logprobs, round 7 (with the official `openai` client, in process):

| what                                          | before                               | now                           |
|-----------------------------------------------|--------------------------------------|-------------------------------|
| text_offset of a completion with logprobs     | every prefix decoded again: O(n^2)   | windows after the settled     |
|                                               |  (0.18 s at 1,024 tokens)            |  text (vLLM's incremental     |
|                                               |                                      |  detokenizing): linear        |
| a tokenizer.json token that is a piece of a   | named "\\ufffd" (every such token:   | named by its own bytes,       |
|  character (byte-level BPE, <0xNN> byte       |  top_logprobs keys collide, entries  |  bytes:\\xNN...; chat's bytes |
|  fallback)                                    |  vanish); chat's bytes [239,191,189] |  field holds them             |
| a SentencePiece word "▁a"                     | "a", as the byte "a" (one key)       | " a", as vLLM                 |

vLLM (v1 engine) decodes each candidate alone and repairs a trailing U+FFFD from the sampled tokens before it,
so its completions ``top_logprobs`` (a dict keyed by the decoded text) can still merge candidates (its issue
#44319); OpenAI names such a token by its bytes, "\\xe2\\x80", with the bytes in ``bytes``. minilora keeps the
name it gives the byte tokenizer's byte pieces since round 3, bytes:\\xNN, for every tokenizer: one key per token.
"""
import asyncio
import os
import random

import numpy as np
import pytest

openai = pytest.importorskip("openai")
tokenizers = pytest.importorskip("tokenizers")
pytest.importorskip("starlette")

import minilora as ml  # noqa: E402
from minilora.serve import Engine  # noqa: E402
from minilora.serve.app import _decoded, _OffsetReader, _token_bytes, _token_text, create_app  # noqa: E402
from minilora.tokenizer import ByteTokenizer, HFTokenizer, token_bytes  # noqa: E402
from test_serve import CHAT_TEMPLATE, base_model  # noqa: E402
from test_serve_openai_r6 import HTTP, log_softmax  # noqa: E402

Tokenizer, models, decoders = tokenizers.Tokenizer, tokenizers.models, tokenizers.decoders


def _text_offsets(tokenizer, before, ids, start, skip_special_tokens, text_vocab=None):
    """Where the text of each of ``ids`` starts in a choice's text: ``start``, plus the characters decoded
    from ``before`` and the ids before it that the text keeps (the server's _OffsetReader, in one call)."""
    before = list(before)
    offsets = _OffsetReader(tokenizer, skip_special_tokens, text_vocab).add([*before, *ids])
    return [start + at for at in offsets[len(before):]]


def byte_level_tokenizer():
    """A byte-level BPE tokenizer.json tokenizer (GPT-2's byte characters, no merges): the byte tokenizer saved
    and loaded back -- every non-ASCII byte is a token that decodes alone to U+FFFD."""
    return HFTokenizer(ByteTokenizer()._backend(), "<bos>", "<eos>", "<pad>")


def byte_fallback_tokenizer():
    """A Llama-2 style tokenizer: a few word pieces, <0xNN> byte fallback, the Metaspace decoder chain."""
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, **{f"<0x{b:02X}>": 3 + b for b in range(256)},
             "▁a": 259, "▁b": 260, "c": 261, "▁": 262}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], byte_fallback=True, unk_token="<unk>"))
    backend.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                         decoders.Strip(" ", 1, 0)])
    backend.add_special_tokens(["<s>", "</s>"])
    return HFTokenizer(backend, "<s>", "</s>")


def word_level_tokenizer():
    backend = Tokenizer(models.WordLevel(vocab={"[UNK]": 0, "hello": 1, "world": 2}, unk_token="[UNK]"))
    return HFTokenizer(backend)


def test_token_bytes_reads_each_kind_of_byte_token():
    byte = ByteTokenizer()
    byte.add_tokens(["<think>"])
    assert [token_bytes(byte, i) for i in (0xE2, 97, 257, 259)] == [b"\xe2", b"a", b"<eos>", b"<think>"]
    level = byte_level_tokenizer()
    assert level.decode([0xE2]) == "\ufffd" and token_bytes(level, 0xE2) == b"\xe2"
    assert token_bytes(level, 32) == b" " and token_bytes(level, 257) == b"<eos>"
    fallback = byte_fallback_tokenizer()
    assert fallback.decode([3 + 0xE2]) == "\ufffd" and token_bytes(fallback, 3 + 0xE2) == b"\xe2"
    assert token_bytes(fallback, 2) == b"</s>"
    assert fallback.decode([259]) == "a" and token_bytes(fallback, 259) == b" a"  # "▁a": decode drops the space
    assert [token_bytes(fallback, i) for i in (261, 262)] == [b"c", b" "]
    assert token_bytes(word_level_tokenizer(), 1) is None  # no rule: its decoded text is all there is


def test_a_sentencepiece_word_keeps_its_space_in_logprobs():
    """"▁a" and the byte "a" both decoded alone to "a": one top_logprobs key for two tokens. As vLLM (which
    restores the spaces decode drops), "▁a" is " a"; its bytes are those of " a"."""
    tok = byte_fallback_tokenizer()
    assert [_token_text(tok, i) for i in (259, 3 + ord("a"), 3 + 0xE2)] == [" a", "a", "bytes:\\xe2"]
    assert [_token_bytes(tok, i) for i in (259, 3 + ord("a"))] == [b" a", b"a"]
    assert _token_text(word_level_tokenizer(), 1) == "hello"


def quadratic_offsets(tok, before, ids, start, skip, vocab):
    """The rule, as it was computed until round 7: each prefix decoded whole, its common beginning with the text
    (never less than an earlier prefix's: a byte-fallback decoder turns a whole cut run of bytes into U+FFFDs)."""
    def decode(part):
        return _decoded(tok, part, skip, vocab)
    every = before + ids
    text = decode(every)
    reached = [len(os.path.commonprefix([decode(every[:i]), text])) for i in range(len(every))]
    return [start + max(reached[:i + 1]) for i in range(len(before), len(every))]


def random_ids(rng, kind, size):
    if kind == "fallback":  # characters whole in its byte runs (an invalid run turns each of its bytes into U+FFFD)
        pieces = [[3 + b for b in char.encode()] for char in ("€", "é", "a", " ", "3", "日", "\n")]
        pieces += [[259], [260], [261], [262], [1], [2]]
        return [i for _ in range(size) for i in rng.choice(pieces)][:size]
    pool = [0xE2, 0x82, 0xAC, 0xC3, 0xA9, 0x80, 97, 32, 256, 257, 258] + ([259] if kind == "byte" else [])
    return [rng.choice(pool) if rng.random() < 0.8 else rng.randrange(256) for _ in range(size)]


@pytest.mark.parametrize("kind", ["byte", "level", "fallback"])
def test_text_offsets_follow_the_rule(kind):
    """Prefixes that cut characters (U+FFFD), invalid bytes, skipped special tokens, ids past the tokenizer,
    tokens already reported (``before``, as streaming asks): the offsets the whole-prefix rule gives."""
    tok = {"byte": ByteTokenizer, "level": byte_level_tokenizer, "fallback": byte_fallback_tokenizer}[kind]()
    if kind == "byte":
        tok.add_tokens(["<think>"])  # 259
    rng = random.Random(7)
    for _ in range(150):
        ids = random_ids(rng, kind, rng.randint(0, 18))
        cut, skip = rng.randint(0, len(ids)), rng.random() < 0.5
        vocab = len(tok) - 1 if rng.random() < 0.3 else None
        expected = quadratic_offsets(tok, ids[:cut], ids[cut:], 5, skip, vocab)
        assert _text_offsets(tok, ids[:cut], ids[cut:], 5, skip, vocab) == expected, (ids, cut, skip, vocab)


class CountingTokenizer(ByteTokenizer):
    decoded = 0

    def decode(self, token_ids, **kwargs):
        CountingTokenizer.decoded += len(token_ids)
        return super().decode(token_ids, **kwargs)


def test_text_offsets_decode_a_linear_number_of_ids():
    """Counted, not timed: four times the tokens decode about four times the ids (sixteen before), in one
    piece or chunk by chunk (a stream's: each chunk decoded every earlier token again before; the engine sends
    a chunk when its text ends no character cut short)."""
    tok, rng, work = CountingTokenizer(), np.random.default_rng(0), []
    for n in (256, 1024):
        ids = [256] + rng.integers(0, 256, n).tolist()
        CountingTokenizer.decoded = 0
        assert _text_offsets(tok, [], ids, 0, True) == quadratic_offsets(ByteTokenizer(), [], ids, 0, True, None)
        work.append(CountingTokenizer.decoded)
        cuts = [i for i in range(3, len(ids), 3) if not ByteTokenizer().decode(ids[:i]).endswith("\ufffd")]
        reader, CountingTokenizer.decoded = _OffsetReader(tok), 0
        chunked = [at for i, j in zip([0, *cuts], [*cuts, len(ids)]) for at in reader.add(ids[i:j], j == len(ids))]
        work.append(CountingTokenizer.decoded)
        assert chunked == _text_offsets(ByteTokenizer(), [], ids, 0, True)
    assert work[2] < 5 * work[0] and work[2] < 20 * 1024
    assert work[3] < 5 * work[1] and work[3] < 20 * 1024


def name_of(tok, token):
    """What the logprobs call a token of the byte-level tokenizer.json tokenizer (one id per byte)."""
    if token >= len(tok):
        return f"token_id:{token}"
    return tok.decode([token]) if token >= 256 or token < 128 else f"bytes:\\x{token:02x}"


def test_top_logprobs_have_one_key_per_token_with_a_tokenizer_json(monkeypatch):
    """Served with a byte-level BPE tokenizer.json: each non-ASCII byte is its own token. Every position's
    top_logprobs has the k likeliest tokens (and the chosen one) under distinct names, with the model's values;
    chat's ``bytes`` are each token's own bytes."""
    tok = byte_level_tokenizer()
    tok.chat_template = CHAT_TEMPLATE
    model = base_model()
    engine = Engine(model, tok).start()
    app = create_app(engine, "tiny")
    prompt = "€é a"

    async def ask():
        async with openai.AsyncOpenAI(base_url="http://minilora/v1", api_key="-", max_retries=0, http_client=
                                      HTTP.AsyncClient(transport=HTTP.ASGITransport(app=app))) as client:
            completion = await client.completions.create(model="tiny", prompt=prompt, max_tokens=8, temperature=0,
                                                         echo=True, logprobs=5)
            chat = await client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": prompt}],
                                                        max_tokens=8, temperature=0, logprobs=True, top_logprobs=5)
            streamed = [chunk async for chunk in await client.completions.create(
                model="tiny", prompt=prompt, max_tokens=8, temperature=0, echo=True, logprobs=5, stream=True)]
            return completion, chat, streamed
    try:
        completion, chat, streamed = asyncio.run(ask())
    finally:
        engine.shutdown()
    lp = completion.choices[0].logprobs
    prompt_ids = tok.encode(prompt)
    assert lp.tokens[:4] == ["<bos>", "bytes:\\xe2", "bytes:\\x82", "bytes:\\xac"]
    names = {name_of(tok, i): i for i in range(len(tok) + 1)}
    assert len(names) == len(tok) + 1  # one name per id: the names can be read back
    ids = [names[t] for t in lp.tokens]
    assert ids[:len(prompt_ids)] == prompt_ids
    with ml.no_grad():
        rows = model(np.array([ids])).logits.numpy()[0].astype(np.float64)
    for position in range(1, len(ids)):
        row = log_softmax(rows[position - 1])
        wanted = [int(i) for i in np.argsort(-row, kind="stable")[:5]] + [ids[position]]
        top = lp.top_logprobs[position]
        assert top == pytest.approx({name_of(tok, i): row[i] for i in wanted}, abs=1e-6)
        assert len(top) == len(set(wanted))  # nothing merged away
    assert lp.text_offset == quadratic_offsets(tok, [], ids, 0, True, len(tok))
    assert [at for chunk in streamed for at in chunk.choices[0].logprobs.text_offset] == lp.text_offset
    assert [t for chunk in streamed for t in chunk.choices[0].logprobs.tokens] == lp.tokens
    for entry in chat.choices[0].logprobs.content:
        for candidate in [entry, *entry.top_logprobs]:
            token = names[candidate.token]
            assert candidate.bytes == (None if token >= len(tok) else list(token_bytes(tok, token) or b""))
        assert len({c.token for c in entry.top_logprobs}) == len(entry.top_logprobs) == 5
