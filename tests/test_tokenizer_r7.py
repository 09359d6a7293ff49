"""New tokens on the shipped model's byte tokenizer, as transformers' tokenizers take them:

    tok = ByteTokenizer()                                    # the shipped base's tokenizer
    tok.add_tokens(["<think>", AddedToken("cat", single_word=True)])
    tok.add_special_tokens({"additional_special_tokens": ["<tool>"]})
    model.resize_token_embeddings(len(tok)); get_peft_model(model, LoraConfig(trainable_token_indices=...))
    ... train ...; tok.save_pretrained(folder); model.save_pretrained(folder)   # and reload both

Until round 7 the byte tokenizer refused add_tokens (NotImplementedError: "save it and reload the folder").
The oracle: transformers' tokenizer of the byte tokenizer's own saved folder (a byte-level BPE
tokenizer.json), given the same add_* calls -- ids, counts, ``len``, the added vocabulary, the special tokens,
``decode`` with and without ``skip_special_tokens``, ``tokenize``, and a seeded differential run over AddedToken's
flags (``single_word``, ``lstrip``, ``rstrip``, ``normalized``, ``special``). ``tokenize`` was also off for every
tokenizer: transformers gives the Encoding's tokens, where an lstrip/rstrip token is the text it took ("  <sep>  ");
minilora gave convert_ids_to_tokens' "<sep>". Texts never spell ``<bos>`` / ``<eos>`` /
``<pad>``: the byte tokenizer reads those as bytes (the shipped model was trained so), the saved folder as tokens.
Skipped without transformers / tokenizers; the plain path itself needs neither (tested with tokenizers hidden).
"""
import json
import random
import sys

import numpy as np
import pytest

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

import minilora as ml  # noqa: E402
import minilora.lora as ml_peft  # noqa: E402
from minilora.models import load_base  # noqa: E402
from minilora.tokenizer import ByteTokenizer, from_pretrained, model_tokenizer, vocab_mismatch  # noqa: E402

AddedToken = tokenizers.AddedToken
TEXTS = ["Hi<think>the fox</think> <tool>x<x>", "<think> hello world </think>", "hello<tool><tool>world",
         "  <think>  ", "the cat sat on the mat", "concat cat. cats", "a  <sep>  b<sep>c", "é<think>日本</think>",
         "THINK <THINK> think", "", "<tool"]


@pytest.fixture
def pair(tmp_path):
    """(transformers' tokenizer of the byte tokenizer's saved folder, a fresh ByteTokenizer)."""
    ByteTokenizer().save_pretrained(tmp_path / "byte")
    return transformers.AutoTokenizer.from_pretrained(str(tmp_path / "byte")), ByteTokenizer()


def add_new_tokens(tok):
    """The recipe's calls with the AddedToken flags a user may pass; what each call returned."""
    return (tok.add_tokens(["<think>", "</think>", "fox"]),
            tok.add_tokens([AddedToken("<sep>", lstrip=True, rstrip=True), AddedToken("cat", single_word=True)]),
            tok.add_special_tokens({"additional_special_tokens": ["<tool>"]}),
            tok.add_tokens("<think>"),  # already there, same flags: 0
            tok.add_tokens(["<x>"], special_tokens=True),  # special (kept whole, skipped by decode), not named
            tok.add_special_tokens({"pad_token": "<pad>"}),  # the byte tokenizer's own pad: nothing new
            tok.add_tokens([]), tok.add_special_tokens({}))


def same_tokenizers(theirs, ours, texts=TEXTS):
    assert len(ours) == len(theirs)  # (vocab_size: 259 for the byte tokenizer, 256 + 3 added in the saved file)
    assert ours.get_added_vocab() == theirs.get_added_vocab() == ours.added_tokens_encoder == theirs.added_tokens_encoder
    assert ours.added_tokens_decoder == theirs.added_tokens_decoder  # tokenizers.AddedToken: content and flags
    assert ours.all_special_tokens == theirs.all_special_tokens
    assert ours.all_special_ids == theirs.all_special_ids
    assert list(ours.extra_special_tokens) == list(theirs.extra_special_tokens)
    assert ours(texts).input_ids == theirs(texts).input_ids
    assert ours(texts, add_special_tokens=False).input_ids == theirs(texts, add_special_tokens=False).input_ids
    for text in texts:
        ids = theirs(text).input_ids
        assert ours.encode(text) == ids
        assert ours.convert_ids_to_tokens(ids) == theirs.convert_ids_to_tokens(ids)
        for special in (False, True):  # the text an lstrip/rstrip token took, spaces included ("  <sep>  ")
            assert ours.tokenize(text, add_special_tokens=special) == theirs.tokenize(text, add_special_tokens=special)
        for skip in (False, True):
            assert ours.decode(ids, skip_special_tokens=skip) == theirs.decode(ids, skip_special_tokens=skip)


def test_add_tokens_as_transformers(pair):
    theirs, ours = pair
    assert add_new_tokens(ours) == add_new_tokens(theirs) == (3, 2, 1, 0, 1, 0, 0, 0)
    same_tokenizers(theirs, ours)
    names = ["<think>", "<tool>", "<pad>", "nope", "fox", "<x>"]
    assert ours.convert_tokens_to_ids(names) == theirs.convert_tokens_to_ids(names)
    assert ours.convert_ids_to_tokens(list(range(250, len(ours)))) == theirs.convert_ids_to_tokens(
        list(range(250, len(theirs))))
    assert ours.get_vocab() == theirs.get_vocab()
    np.testing.assert_array_equal(ours(TEXTS, padding=True, return_tensors="np")["input_ids"],
                                  theirs(TEXTS, padding=True, return_tensors="np")["input_ids"])
    assert "added=7" in repr(ours)


def test_calls_that_need_alignment_read_added_tokens_too(pair):
    """Offsets, pairs and overflow go through the tokenizers backend: the same ids as the plain path, and
    the offsets transformers gives; <eos> spelt out stays five bytes there too."""
    theirs, ours = pair
    add_new_tokens(ours), add_new_tokens(theirs)
    got = ours(TEXTS, return_offsets_mapping=True, return_special_tokens_mask=True)
    expected = theirs(TEXTS, return_offsets_mapping=True, return_special_tokens_mask=True)
    assert got.input_ids == ours(TEXTS).input_ids == expected.input_ids
    assert got["offset_mapping"] == expected["offset_mapping"]
    assert got["special_tokens_mask"] == expected["special_tokens_mask"]
    assert ours("<tool><eos>", return_offsets_mapping=True).input_ids == ours.encode("<tool><eos>") == \
        [256, 264, 60, 101, 111, 115, 62]
    assert ours("a<tool>b", split_special_tokens=True).input_ids == \
        theirs("a<tool>b", split_special_tokens=True).input_ids == [256, 97, *b"<tool>", 98]
    for args in ((["a<think>", "<tool> b"], ["c</think>", "d"]), ("<sep> x", "y <think>")):
        assert ours(*args, truncation=True, max_length=5).input_ids == \
            theirs(*args, truncation=True, max_length=5).input_ids


FLAGS = ("single_word", "lstrip", "rstrip", "normalized", "special")
CONTENTS = ["<a>", "<ab>", "ab", "b c", "cat", "x", "é!", "<a", "a>"]
PIECES = [" ", "  ", "\t", "\n", "a", "b", "c", "x", "cat", ".", "é", "!", "<", ">", "z9"]


def random_tokens(rng):
    tokens = []
    for content in rng.sample(CONTENTS, rng.randint(1, len(CONTENTS))):
        flags = {name: rng.random() < 0.4 for name in FLAGS}
        tokens.append(AddedToken(content, **flags) if rng.random() < 0.8 else content)
    return tokens


@pytest.mark.parametrize("seed", range(12))
def test_added_token_flags_differential(pair, seed):
    """Random AddedTokens (every flag, overlapping contents, a byte's own character "x") and texts made of
    their contents, spaces and word characters: the plain path gives transformers' ids, and decodes back."""
    theirs, ours = pair
    rng = random.Random(seed)
    tokens = random_tokens(rng)
    special = rng.random() < 0.3
    assert ours.add_tokens(tokens, special_tokens=special) == theirs.add_tokens(tokens, special_tokens=special)
    assert len(ours) == len(theirs) and ours.get_added_vocab() == theirs.get_added_vocab()
    assert ours.added_tokens_decoder == theirs.added_tokens_decoder
    for _ in range(40):
        text = "".join(rng.choice(PIECES + CONTENTS) for _ in range(rng.randint(0, 12)))
        ids = theirs.encode(text, add_special_tokens=False)
        assert ours.encode(text, add_special_tokens=False) == ids, (text, tokens)
        assert ours(text, return_offsets_mapping=True).input_ids == theirs(text).input_ids
        assert ours.tokenize(text) == theirs.tokenize(text)
        if not {120, ours.convert_tokens_to_ids("é!")} & set(ids):  # see test_decode_of_non_ascii_tokens
            for skip in (False, True):
                assert ours.decode(ids, skip_special_tokens=skip) == theirs.decode(ids, skip_special_tokens=skip)


def test_decode_of_non_ascii_tokens(pair):
    """A left-alone difference, minilora right: transformers' byte-level decoder reads an added token's
    characters as the bytes they stand for ("é" is byte 0xE9 there: "\\ufffd"); the byte tokenizer gives back the
    text. (And a byte's own character added as a token -- "x" -- is that byte's id, as in tokenizers.)"""
    theirs, ours = pair
    for tok in pair:
        tok.add_tokens(["é!", "日本", "x"])
    ids = theirs.encode("é!日本x", add_special_tokens=False)
    assert ours.encode("é!日本x", add_special_tokens=False) == ids == [259, 260, 120]
    assert ours.decode(ids) == "é!日本x" != theirs.decode(ids)


def test_saved_folder_keeps_the_tokens(pair, tmp_path):
    """Saved, the folder holds the tokens and their flags; transformers and minilora read them back the same."""
    theirs, ours = pair
    add_new_tokens(ours), add_new_tokens(theirs)
    ours.save_pretrained(tmp_path / "ours")
    theirs.save_pretrained(tmp_path / "theirs")
    added = [json.loads((tmp_path / who / "tokenizer.json").read_text())["added_tokens"] for who in ("ours", "theirs")]
    assert added[0] == added[1]
    config = json.loads((tmp_path / "ours" / "tokenizer_config.json").read_text())
    assert config["extra_special_tokens"] == ["<tool>"]
    same_tokenizers(transformers.AutoTokenizer.from_pretrained(str(tmp_path / "ours")), ours)
    reloaded = model_tokenizer(tmp_path / "ours")  # what `minilora generate` / `serve` load from a model folder
    same_tokenizers(theirs, reloaded)
    same_tokenizers(theirs, from_pretrained(tmp_path / "theirs"))


def test_added_tokens_without_the_tokenizers_package(monkeypatch):
    """The plain path needs no tokenizers package: strings as tokens, encode, decode, len."""
    monkeypatch.setitem(sys.modules, "tokenizers", None)
    tok = ByteTokenizer()
    assert tok.add_tokens(["<think>"]) == 1 and tok.add_special_tokens({"additional_special_tokens": ["<tool>"]}) == 1
    ids = tok("a<think>b<tool>").input_ids
    assert ids == [256, 97, 259, 98, 260] and len(tok) == 261
    assert tok.decode(ids) == "<bos>a<think>b<tool>" and tok.decode(ids, skip_special_tokens=True) == "a<think>b"
    assert tok.all_special_tokens == ["<bos>", "<eos>", "<pad>", "<tool>"]
    assert tok.tokenize("a <think>", add_special_tokens=True) == ["<bos>", "a", "Ġ", "<think>"]
    with pytest.raises(ImportError, match="tokenizers"):
        tok.save_pretrained("never")


def test_decode_refuses_ids_past_the_added_ones():
    tok = ByteTokenizer()
    tok.add_tokens(["<think>"])
    assert tok.decode([259, 97]) == "<think>a"
    with pytest.raises(ValueError, match=r"outside the byte tokenizer's vocabulary \(0\.\.259\)"):
        tok.decode([260])


def test_recipe_on_the_shipped_model(tmp_path):
    """The shipped base, its byte tokenizer and new tokens: resize, LoRA with trainable_token_indices, two
    AdamW steps, save; reloaded (the folder's tokenizer, a fresh base resized to it, the adapter) it gives the
    same ids and logits."""
    tok = ByteTokenizer()
    tok.add_tokens(["<think>", "</think>"])
    tok.add_special_tokens({"additional_special_tokens": ["<tool>"]})
    new_ids = tok.convert_tokens_to_ids(["<think>", "</think>", "<tool>"])
    assert new_ids == [259, 260, 261]
    model = load_base()
    assert vocab_mismatch(tok, model.config.vocab_size) is not None  # the base has no rows for them yet
    model.resize_token_embeddings(len(tok))
    assert model.config.vocab_size == 262 and vocab_mismatch(tok, model.config.vocab_size) is None
    config = ml_peft.LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"], trainable_token_indices=new_ids)
    peft_model = ml_peft.get_peft_model(model, config)
    texts = ["<think> the cat </think><tool> yes", "<tool> hi <think>"]
    batch = tok(texts, padding=True, return_tensors="pt")
    assert (batch["input_ids"].numpy() >= 259).sum() == 5
    optimizer = ml.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=0.05)
    for _ in range(2):
        peft_model(**batch, labels=batch["input_ids"]).loss.backward()
        optimizer.step(), optimizer.zero_grad()
    expected = peft_model(**batch).logits.numpy()
    tok.save_pretrained(tmp_path)
    peft_model.save_pretrained(tmp_path)
    reloaded_tok = model_tokenizer(tmp_path)
    again = reloaded_tok(texts, padding=True, return_tensors="pt")
    np.testing.assert_array_equal(again["input_ids"].numpy(), batch["input_ids"].numpy())
    fresh = load_base()
    fresh.resize_token_embeddings(len(reloaded_tok))
    reloaded = ml_peft.PeftModel.from_pretrained(fresh, tmp_path)
    np.testing.assert_allclose(reloaded(**again).logits.numpy(), expected, rtol=1e-5, atol=1e-5)
    prompts = reloaded_tok(texts, padding=True, padding_side="left", return_tensors="pt")
    out = reloaded.generate(**prompts, max_new_tokens=2, do_sample=False)
    assert out.shape == (2, prompts["input_ids"].shape[1] + 2)
    assert reloaded_tok.decode(out[0], skip_special_tokens=True) == tok.decode(out[0], skip_special_tokens=True)
    assert tok.decode(out[0], skip_special_tokens=True).startswith("<think> the cat </think> yes")  # <tool> dropped


def test_chat_tokens_added_to_the_byte_tokenizer_are_read_whole(pair):
    """The usual reason to add tokens: a chat format's markers. The template writes them; the call reads each as
    one id, as transformers does (the byte tokenizer's own <bos>/<eos> written there stay bytes)."""
    theirs, ours = pair
    template = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    messages = [{"role": "user", "content": "Hi é"}, {"role": "assistant", "content": "Yo"}]
    for tok in pair:
        tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
        tok.chat_template = template
    ids = ours.apply_chat_template(messages, add_generation_prompt=True, return_dict=False)
    assert ids == theirs.apply_chat_template(messages, add_generation_prompt=True, return_dict=True)["input_ids"]
    assert ids.count(259) == 3 and ids.count(260) == 2
    assert ours.decode(ids, skip_special_tokens=True) == "user\nHi é\nassistant\nYo\nassistant\n"
