"""The built-in byte tokenizer and Hugging Face tokenizer.json files through `from_file`."""
import json
import os

import numpy as np
import pytest
from hypothesis import given, strategies as st

from minilora.tokenizer import ByteTokenizer, from_file, from_pretrained


@given(st.text())
def test_byte_tokenizer_round_trips_any_text(text):
    tok = ByteTokenizer()
    ids = tok.encode(text)
    assert ids[0] == tok.bos_token_id and all(0 <= i < 256 for i in ids[1:])
    assert tok.decode(ids, skip_special_tokens=True) == text


def test_byte_tokenizer_ids_are_utf8_bytes():
    tok = ByteTokenizer()
    assert tok.encode("hé", add_special_tokens=False) == [104, 0xC3, 0xA9]
    assert (tok.vocab_size, len(tok)) == (259, 259)
    assert len({tok.bos_token_id, tok.eos_token_id, tok.pad_token_id}) == 3
    assert max(tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == tok.vocab_size - 1


def test_byte_tokenizer_decode_special_tokens_and_broken_bytes():
    tok = ByteTokenizer()
    ids = [tok.bos_token_id, 104, 105, tok.eos_token_id, tok.pad_token_id]
    assert tok.decode(ids, skip_special_tokens=True) == "hi"
    assert tok.decode(ids) == "<bos>hi<eos><pad>"  # transformers' default: special tokens kept
    assert tok.decode(np.array([104, 0xC3])) == "h\ufffd"  # a cut-off character, not an exception
    with pytest.raises(ValueError, match="outside the byte tokenizer's vocabulary"):
        tok.decode([300])


@pytest.mark.parametrize("side", ["right", "left"])
def test_batch_call_pads_and_masks(side):
    tok = ByteTokenizer()
    out = tok(["ab", "abcd"], padding=True, padding_side=side, return_tensors="np")
    ids, mask = out["input_ids"], out["attention_mask"]
    assert ids.shape == mask.shape == (2, 5) and ids.dtype == np.int64
    assert mask.sum(axis=1).tolist() == [3, 5]
    short = ids[0, :3] if side == "right" else ids[0, 2:]
    assert short.tolist() == tok.encode("ab")
    assert (ids[0][mask[0] == 0] == tok.pad_token_id).all()


@pytest.fixture
def tokenizer_dir(tmp_path):
    """A small word-level tokenizer.json plus tokenizer_config.json, as transformers saves them."""
    tokenizers = pytest.importorskip("tokenizers")
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, "<pad>": 3, "hello": 4, "world": 5, "lora": 6}
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tok.decoder = tokenizers.decoders.WordPiece(prefix="##")  # joins words with spaces
    tok.add_special_tokens(["<s>", "</s>", "<pad>"])
    tok.post_processor = tokenizers.processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", 1)])
    tok.save(str(tmp_path / "tokenizer.json"))
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(
        {"bos_token": {"content": "<s>"}, "eos_token": "</s>", "pad_token": None}))
    return tmp_path


def test_from_file_has_the_same_interface(tokenizer_dir):
    tok = from_file(tokenizer_dir / "tokenizer.json")
    assert (tok.bos_token_id, tok.eos_token_id) == (1, 2)
    assert tok.pad_token_id is None  # tokenizer_config.json says there is none (as transformers reads it)
    assert from_file(tokenizer_dir / "tokenizer.json", pad_token="<pad>").pad_token_id == 3
    assert tok.vocab_size == 7
    assert tok.encode("hello lora") == [1, 4, 6]
    assert tok.encode("hello lora", add_special_tokens=False) == [4, 6]
    assert tok.decode([1, 4, 5, 2], skip_special_tokens=True) == "hello world"
    with pytest.raises(ValueError, match="does not have a padding token"):
        tok(["hello", "hello world"], padding=True)
    tok.pad_token = "<pad>"
    assert tok(["hello", "hello world"], padding=True)["input_ids"] == [[1, 4, 3], [1, 4, 5]]


def test_from_file_arguments_and_errors(tokenizer_dir, tmp_path):
    assert from_file(tokenizer_dir, eos_token="<pad>").eos_token_id == 3  # a folder works too
    with pytest.raises(ValueError, match="'<nope>' is not in the tokenizer's vocabulary"):
        from_file(tokenizer_dir, bos_token="<nope>")
    with pytest.raises(FileNotFoundError, match="no tokenizer file"):
        from_file(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(ValueError, match="not a valid tokenizer.json"):
        from_file(tmp_path / "bad.json")


# ==================================================================================================
# Called as transformers' tokenizers are, compared with transformers itself
# ==================================================================================================
CHAT_TEMPLATE = ("{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }}{{ eos_token }}"
                 "{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}")
CALLS = [dict(), dict(padding=True), dict(padding=True, padding_side="left", return_tensors="np"),
         dict(truncation=True, max_length=2), dict(padding="max_length", max_length=5, truncation=True),
         dict(padding=True, pad_to_multiple_of=4, return_tensors="np"), dict(add_special_tokens=False),
         dict(padding="longest", return_attention_mask=False)]


def test_byte_tokenizer_call_defaults_as_transformers():
    tok = ByteTokenizer()
    out = tok(["ab", "abcd"])  # no padding by default: lists of their own lengths
    assert out.input_ids == [[256, 97, 98], [256, 97, 98, 99, 100]] and out["attention_mask"][0] == [1, 1, 1]
    assert tok("ab")["input_ids"] == [256, 97, 98]  # one text: one row, not a batch
    assert tok("ab", return_tensors="np")["input_ids"].shape == (1, 3)
    ragged = tok(["ab", "abcd"], return_tensors="np")["input_ids"]  # transformers 5: an object array of rows
    assert ragged.dtype == object and [row.tolist() for row in ragged] == [[256, 97, 98], [256, 97, 98, 99, 100]]
    with pytest.raises(ValueError, match="padding=True"):
        tok(["ab", "abcd"], return_tensors="pt")
    assert tok("ab", return_tensors="pt")["input_ids"].tolist() == [[256, 97, 98]]  # minilora Tensors
    with pytest.raises(ValueError, match="not a valid TensorType"):
        tok("ab", return_tensors="tf")
    assert tok("ab", "cd")["input_ids"] == [256, 97, 98, 256, 99, 100]  # a text pair, as its saved template joins one
    assert tok("abcdef", max_length=3)["input_ids"] == [256, 97, 98]  # max_length alone truncates (no warning)
    tok.pad_token = tok.eos_token
    assert tok.pad_token_id == tok.eos_token_id == 257 and tok.pad_token == "<eos>"
    assert tok.batch_decode([[256, 104, 105, 257]], skip_special_tokens=True) == ["hi"]
    assert tok.decode(104) == "h"


def test_guessed_special_tokens_without_a_config(tokenizer_dir):
    (tokenizer_dir / "tokenizer_config.json").unlink()
    tok = from_file(tokenizer_dir)
    assert (tok.bos_token, tok.eos_token, tok.pad_token) == ("<s>", "</s>", "<pad>")


@pytest.fixture
def both(tokenizer_dir):
    """minilora's and transformers' tokenizer from the same folder (with a pad token and a chat template)."""
    transformers = pytest.importorskip("transformers")
    config = {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>", "chat_template": CHAT_TEMPLATE,
              "tokenizer_class": "PreTrainedTokenizerFast"}
    (tokenizer_dir / "tokenizer_config.json").write_text(json.dumps(config))
    return from_pretrained(tokenizer_dir), transformers.AutoTokenizer.from_pretrained(str(tokenizer_dir))


def _plain(encoding):
    return {k: (v.tolist() if hasattr(v, "tolist") else v) for k, v in dict(encoding).items()}


@pytest.mark.parametrize("kwargs", CALLS, ids=[",".join(c) or "defaults" for c in CALLS])
def test_call_matches_transformers(both, kwargs):
    ours, theirs = both
    for text in (["hello", "hello world lora", "lora"], "hello world"):
        assert _plain(ours(text, **kwargs)) == _plain(theirs(text, **kwargs)), text


def test_decode_and_chat_template_match_transformers(both):
    ours, theirs = both
    ids = [1, 4, 5, 2, 3]
    for skip in (False, True):
        assert ours.decode(ids, skip_special_tokens=skip) == theirs.decode(ids, skip_special_tokens=skip)
    assert ours.decode(ids) == theirs.decode(ids)  # the same default
    assert ours.batch_decode([ids, ids[:2]]) == theirs.batch_decode([ids, ids[:2]])
    assert (ours.bos_token, ours.eos_token, ours.pad_token) == (theirs.bos_token, theirs.eos_token, theirs.pad_token)
    chat = [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "world"}]
    for kwargs in (dict(tokenize=False), dict(tokenize=False, add_generation_prompt=True), dict()):
        assert _plain_chat(ours.apply_chat_template(chat, **kwargs)) == \
            _plain_chat(theirs.apply_chat_template(chat, **kwargs)), kwargs


def _plain_chat(out):
    return out if isinstance(out, (str, list)) else _plain(out)


def test_byte_tokenizer_saved_loads_in_transformers_with_the_same_ids(tmp_path):
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("tokenizers")
    tok = ByteTokenizer()
    written = tok.save_pretrained(str(tmp_path))
    assert sorted(os.path.basename(f) for f in written) == ["tokenizer.json", "tokenizer_config.json"]
    theirs = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
    ours_again = from_pretrained(tmp_path)
    texts = ["hello", "héllo wörld \U0001F642\n  tabs\tand spaces ", "", "<not special>"]
    for text in texts:
        assert theirs(text)["input_ids"] == ours_again(text)["input_ids"] == tok(text)["input_ids"], text
    ids = tok(texts, padding=True, return_tensors="np")["input_ids"]
    assert theirs.batch_decode(ids) == tok.batch_decode(ids)
    assert theirs.batch_decode(ids, skip_special_tokens=True) == tok.batch_decode(ids, skip_special_tokens=True)
    assert (theirs.pad_token_id, theirs.eos_token_id, theirs.bos_token_id) == (258, 257, 256)


def test_tokenizer_save_replaces_both_files_as_one_unit(tmp_path, monkeypatch):
    """A save that fails after tokenizer.json is written (a full disk on the config) leaves the old pair,
    never a new vocabulary beside an old config; files of others in the folder (the model's) stay."""
    pytest.importorskip("tokenizers")
    (tmp_path / "model.safetensors").write_bytes(b"weights")
    ByteTokenizer().save_pretrained(str(tmp_path))
    before = {name: (tmp_path / name).read_bytes() for name in ("tokenizer.json", "tokenizer_config.json")}
    changed = ByteTokenizer()
    changed.padding_side = "left"
    changed.chat_template = "{{ messages }}"

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(json, "dumps", full_disk)  # (tokenizer_config.json's text)
    with pytest.raises(OSError, match="No space"):
        changed.save_pretrained(str(tmp_path))
    monkeypatch.undo()
    assert {name: (tmp_path / name).read_bytes() for name in before} == before
    assert sorted(os.listdir(tmp_path)) == ["model.safetensors", "tokenizer.json", "tokenizer_config.json"]
    changed.save_pretrained(str(tmp_path))
    assert from_pretrained(tmp_path).padding_side == "left" and (tmp_path / "model.safetensors").read_bytes() == b"weights"
