"""The built-in byte tokenizer and Hugging Face tokenizer.json files through `from_file`."""
import json

import numpy as np
import pytest
from hypothesis import given, strategies as st

from minilora.tokenizer import ByteTokenizer, from_file


@given(st.text())
def test_byte_tokenizer_round_trips_any_text(text):
    tok = ByteTokenizer()
    ids = tok.encode(text)
    assert ids[0] == tok.bos_token_id and all(0 <= i < 256 for i in ids[1:])
    assert tok.decode(ids) == text


def test_byte_tokenizer_ids_are_utf8_bytes():
    tok = ByteTokenizer()
    assert tok.encode("hé", add_special_tokens=False) == [104, 0xC3, 0xA9]
    assert (tok.vocab_size, len(tok)) == (259, 259)
    assert len({tok.bos_token_id, tok.eos_token_id, tok.pad_token_id}) == 3
    assert max(tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == tok.vocab_size - 1


def test_byte_tokenizer_decode_special_tokens_and_broken_bytes():
    tok = ByteTokenizer()
    ids = [tok.bos_token_id, 104, 105, tok.eos_token_id, tok.pad_token_id]
    assert tok.decode(ids) == "hi"
    assert tok.decode(ids, skip_special_tokens=False) == "<bos>hi<eos><pad>"
    assert tok.decode(np.array([104, 0xC3])) == "h\ufffd"  # a cut-off character, not an exception
    with pytest.raises(ValueError, match="outside the byte tokenizer's vocabulary"):
        tok.decode([300])


@pytest.mark.parametrize("side", ["right", "left"])
def test_batch_call_pads_and_masks(side):
    tok = ByteTokenizer()
    out = tok(["ab", "abcd"], padding_side=side)
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
    assert tok.pad_token_id == 3  # not in tokenizer_config.json: found under its usual name
    assert tok.vocab_size == 7
    assert tok.encode("hello lora") == [1, 4, 6]
    assert tok.encode("hello lora", add_special_tokens=False) == [4, 6]
    assert tok.decode([1, 4, 5, 2]) == "hello world"
    assert tok(["hello", "hello world"])["input_ids"].tolist() == [[1, 4, 3], [1, 4, 5]]


def test_from_file_arguments_and_errors(tokenizer_dir, tmp_path):
    assert from_file(tokenizer_dir, eos_token="<pad>").eos_token_id == 3  # a folder works too
    with pytest.raises(ValueError, match="'<nope>' is not in the tokenizer's vocabulary"):
        from_file(tokenizer_dir, bos_token="<nope>")
    with pytest.raises(FileNotFoundError, match="no tokenizer file"):
        from_file(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(ValueError, match="not a valid tokenizer.json"):
        from_file(tmp_path / "bad.json")
