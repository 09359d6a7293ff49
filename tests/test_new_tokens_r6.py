"""PEFT's "add new tokens" recipe end to end, side by side with transformers 5 + PEFT on the same files:

    tokenizer.add_tokens(["<think>", "</think>"])
    tokenizer.add_special_tokens({"pad_token": "<pad>", "additional_special_tokens": ["<tool>"]})
    model.resize_token_embeddings(len(tokenizer))
    model = get_peft_model(model, LoraConfig(..., trainable_token_indices=new_ids))
    ... train ...; tokenizer.save_pretrained(folder); model.save_pretrained(folder)   # and reload both

and the adapter_config.json loader's errors (LoraConfig.from_pretrained reads the file itself): they name it.
Skipped when torch / transformers / peft / tokenizers are not installed."""
import dataclasses
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")
tokenizers = pytest.importorskip("tokenizers")

import minilora as ml  # noqa: E402
import minilora.lora as ml_peft  # noqa: E402
from minilora.checkpoint import InvalidJSONError  # noqa: E402
from minilora.tokenizer import ByteTokenizer, from_pretrained  # noqa: E402

import test_peft_fuzz_r5 as fuzz  # noqa: E402
from test_llama import float64_causal_loss, hf  # noqa: E402,F401  (transformers in float64 throughout)
from test_tokenizer_r5 import tokenizer_folder  # noqa: E402,F401  (a word-level tokenizer of TINY's 37 ids)
from test_tokenizer_generate_r6 import bpe_folder  # noqa: E402,F401  (a byte-level BPE tokenizer.json)

AddedToken = tokenizers.AddedToken
TEXTS = ["Hi<think>the fox</think> <tool>x<pad><x>", "<think> hello world </think>", "hello<tool><tool>world",
         "  <think>  ", "the cat sat on the mat", "THINK <THINK> think"]


def add_new_tokens(tok):
    """The recipe's two calls, with the AddedToken flags a user may pass; returns what each call returned."""
    return (tok.add_tokens(["<think>", "</think>", "fox"]),
            tok.add_tokens([AddedToken("<sep>", lstrip=True, rstrip=True), AddedToken("cat", single_word=True)]),
            tok.add_special_tokens({"pad_token": "<pad>", "additional_special_tokens": ["<tool>"]}),
            tok.add_tokens("<think>"),  # already there: 0
            tok.add_tokens(["<x>"], special_tokens=True))  # special (kept whole), yet not named


@pytest.fixture(params=["bpe", "word"])
def toks(request, bpe_folder, tokenizer_folder):
    folder = str(bpe_folder if request.param == "bpe" else tokenizer_folder)
    return transformers.AutoTokenizer.from_pretrained(folder), from_pretrained(folder)


def same_tokenizers(theirs, ours, texts=TEXTS):
    assert len(ours) == len(theirs)
    assert ours.get_added_vocab() == theirs.get_added_vocab()
    assert ours.all_special_tokens == theirs.all_special_tokens
    assert ours.all_special_ids == theirs.all_special_ids
    assert list(ours.extra_special_tokens) == list(theirs.extra_special_tokens)
    assert (ours.pad_token, ours.pad_token_id) == (theirs.pad_token, theirs.pad_token_id)
    assert ours(texts).input_ids == theirs(texts).input_ids
    for text in texts:
        ids = theirs(text).input_ids
        assert ours.tokenize(text) == theirs.tokenize(text)
        for skip in (False, True):
            assert ours.decode(ids, skip_special_tokens=skip) == theirs.decode(ids, skip_special_tokens=skip)


def test_add_tokens_as_transformers(toks):
    theirs, ours = toks
    assert add_new_tokens(ours) == add_new_tokens(theirs)
    same_tokenizers(theirs, ours)
    names = ["<think>", "<tool>", "<pad>", "nope", "fox"]
    assert ours.convert_tokens_to_ids(names) == theirs.convert_tokens_to_ids(names)
    assert ours.convert_ids_to_tokens(list(range(len(theirs) - 6, len(theirs)))) == \
        theirs.convert_ids_to_tokens(list(range(len(theirs) - 6, len(theirs))))
    batch = ours(TEXTS, padding=True, return_tensors="np")  # the new pad token pads
    np.testing.assert_array_equal(batch["input_ids"], theirs(TEXTS, padding=True, return_tensors="np")["input_ids"])


def test_saved_files_cross_load(toks, tmp_path):
    """minilora's folder loads in transformers and back, and transformers' in minilora: the same tokenizer."""
    theirs, ours = toks
    add_new_tokens(theirs), add_new_tokens(ours)
    ours.save_pretrained(tmp_path / "ours")
    theirs.save_pretrained(tmp_path / "theirs")
    added = [json.loads((tmp_path / who / "tokenizer.json").read_text())["added_tokens"] for who in ("ours", "theirs")]
    assert added[0] == added[1]  # ids, content and the special / normalized / lstrip / rstrip / single_word flags
    same_tokenizers(transformers.AutoTokenizer.from_pretrained(str(tmp_path / "ours")), ours)
    same_tokenizers(theirs, from_pretrained(tmp_path / "theirs"))
    same_tokenizers(theirs, from_pretrained(tmp_path / "ours"))


def test_add_special_tokens_refusals_as_transformers(toks):
    theirs, ours = toks
    for bad in ({"foo_token": "<x>"}, {"pad_token": 3}, {"additional_special_tokens": "<x>"}):
        with pytest.raises(ValueError) as expected:
            theirs.add_special_tokens(bad)
        with pytest.raises(ValueError) as got:
            ours.add_special_tokens(bad)
        assert str(got.value).split(" ")[:2] == str(expected.value).split(" ")[:2], (got.value, expected.value)
    assert ours.add_special_tokens({}) == theirs.add_special_tokens({}) == 0
    assert ours.add_tokens([]) == theirs.add_tokens([]) == 0
    # replace_extra_special_tokens=False keeps the earlier ones
    for tok in toks:
        tok.add_special_tokens({"additional_special_tokens": ["<a>"]})
        tok.add_special_tokens({"additional_special_tokens": ["<b>"]}, replace_extra_special_tokens=False)
    assert list(ours.extra_special_tokens) == list(theirs.extra_special_tokens) == ["<a>", "<b>"]


def test_byte_tokenizer_and_its_saved_folder_take_new_tokens(tmp_path):
    """(The byte tokenizer takes add_tokens itself since round 7: tests/test_tokenizer_r7.py.)"""
    tok = ByteTokenizer()
    assert tok.add_tokens(["<think>"]) == 1 and tok.encode("a<think>", add_special_tokens=False) == [97, 259]
    ByteTokenizer().save_pretrained(tmp_path)
    loaded = from_pretrained(tmp_path)
    assert loaded.add_tokens(["<think>"]) == 1 and loaded.encode("a<think>", add_special_tokens=False) == [97, 259]


# ==================================================================================================
# resize_token_embeddings(len(tokenizer))
# ==================================================================================================
@pytest.mark.parametrize("pad_to_multiple_of", [None, 8])
def test_resize_rows_as_transformers(pad_to_multiple_of, monkeypatch):
    """New rows: transformers samples N(mean, 1e-9 * covariance) of the old rows (float32 statistics) with
    torch's generator; minilora draws the same numbers from the same seed (tests/test_transformers_r8.py
    checks them bit for bit; here to the float32 rounding of the BLAS steps)."""
    monkeypatch.setattr(fuzz, "TINY", dataclasses.replace(fuzz.TINY))  # resizing sets the config's vocab_size
    reference, model = fuzz.base_pair()
    vocab = fuzz.TINY.vocab_size
    old = reference.get_input_embeddings().weight.detach().clone()
    torch.manual_seed(0)
    theirs = reference.resize_token_embeddings(vocab + 5, pad_to_multiple_of=pad_to_multiple_of)
    ml.manual_seed(0)
    ours = model.resize_token_embeddings(vocab + 5, pad_to_multiple_of=pad_to_multiple_of)
    assert ours.weight.shape == tuple(theirs.weight.shape) and ours.weight.dtype == ml.float64
    size = -(-(vocab + 5) // 8) * 8 if pad_to_multiple_of else vocab + 5
    assert model.config.vocab_size == reference.config.vocab_size == model.lm_head.out_features == size
    new = ours.weight.numpy(force=True)[vocab:]
    np.testing.assert_array_equal(ours.weight.numpy(force=True)[:vocab], old.numpy())
    np.testing.assert_allclose(new, theirs.weight.detach().numpy()[vocab:], rtol=3e-7, atol=0)
    np.testing.assert_allclose(model.lm_head.weight.numpy(force=True), reference.lm_head.weight.detach().numpy(),
                               rtol=3e-7, atol=0)


def test_resize_without_mean_resizing_draws_the_init_std(monkeypatch):
    monkeypatch.setattr(fuzz, "TINY", dataclasses.replace(fuzz.TINY))
    reference, model = fuzz.base_pair()
    vocab = fuzz.TINY.vocab_size
    reference.resize_token_embeddings(vocab + 400, mean_resizing=False)
    model.resize_token_embeddings(vocab + 400, mean_resizing=False)
    for module in (model.get_input_embeddings(), model.lm_head):
        new = module.weight.numpy(force=True)[vocab:]
        assert abs(new.std() - fuzz.TINY.initializer_range) < 0.1 * fuzz.TINY.initializer_range
    expected = reference.get_input_embeddings().weight.detach().numpy()[vocab:].std()
    assert abs(expected - fuzz.TINY.initializer_range) < 0.1 * fuzz.TINY.initializer_range


# ==================================================================================================
# the whole recipe: tokenizer -> resize -> trainable_token_indices -> 3 AdamW steps -> save -> reload
# ==================================================================================================
def test_new_token_recipe_end_to_end(hf, tokenizer_folder, tmp_path, monkeypatch):
    # the tokenizer's 37 ids (resizing sets the config's vocab_size: a copy)
    monkeypatch.setattr(fuzz, "TINY", dataclasses.replace(fuzz.TINY, vocab_size=37))
    theirs_tok = transformers.AutoTokenizer.from_pretrained(str(tokenizer_folder))
    ours_tok = from_pretrained(tokenizer_folder)
    for tok in (theirs_tok, ours_tok):
        tok.add_tokens(["<think>", "</think>"])
        tok.add_special_tokens({"additional_special_tokens": ["<tool>"]})
    new_ids = ours_tok.convert_tokens_to_ids(["<think>", "</think>", "<tool>"])
    assert new_ids == theirs_tok.convert_tokens_to_ids(["<think>", "</think>", "<tool>"]) == [37, 38, 39]
    reference, model = fuzz.base_pair()
    reference.resize_token_embeddings(len(theirs_tok))
    model.resize_token_embeddings(len(ours_tok))
    model.load_state_dict(reference.state_dict())  # transformers' new rows are a torch draw: take them
    base_state = {k: v.numpy(force=True).copy() for k, v in model.state_dict().items()}
    config = dict(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"], trainable_token_indices=new_ids)
    theirs = peft.get_peft_model(reference, peft.LoraConfig(**config))
    ours = ml_peft.get_peft_model(model, ml_peft.LoraConfig(**config))
    fuzz.copy_state(theirs, ours)  # the same lora_A draw
    text = ["hello <think> the cat sat </think> <tool> yes", "<tool> we said hi <think> no"]
    ids = np.array(theirs_tok(text, padding=True).input_ids)
    assert ours_tok(text, padding=True).input_ids == ids.tolist()
    theirs_opt = torch.optim.AdamW([p for p in theirs.parameters() if p.requires_grad], lr=0.05)
    ours_opt = ml.optim.AdamW([p for p in ours.parameters() if p.requires_grad], lr=0.05)
    for _ in range(3):
        float64_causal_loss(theirs(input_ids=torch.as_tensor(ids)).logits, ids).backward()
        ours(input_ids=ml.tensor(ids), labels=ml.tensor(ids)).loss.backward()
        theirs_opt.step(), ours_opt.step()
        theirs_opt.zero_grad(), ours_opt.zero_grad()
    expected = fuzz.logits(theirs, ids)
    np.testing.assert_allclose(fuzz.logits(ours, ids), expected, rtol=1e-12, atol=1e-12)

    folder = tmp_path / "run"
    ours_tok.save_pretrained(folder)
    ours.save_pretrained(folder)
    # reloaded by each library: the same ids and the same logits
    reloaded_tok = from_pretrained(folder)
    assert reloaded_tok(text, padding=True).input_ids == ids.tolist()
    assert transformers.AutoTokenizer.from_pretrained(str(folder))(text, padding=True).input_ids == ids.tolist()
    fresh = ml.models.LlamaForCausalLM(fuzz.TINY, dtype=ml.float64)  # vocab_size: the resized one
    assert fresh.config.vocab_size == len(reloaded_tok)
    fresh.load_state_dict(base_state)
    np.testing.assert_allclose(fuzz.logits(ml_peft.PeftModel.from_pretrained(fresh, folder), ids), expected,
                               rtol=1e-12, atol=1e-12)
    # and PEFT loads minilora's folder onto transformers' resized base
    fresh_reference, _ = fuzz.base_pair()
    fresh_reference.resize_token_embeddings(len(reloaded_tok))
    fresh_reference.load_state_dict({k: torch.from_numpy(v) for k, v in base_state.items()})
    np.testing.assert_allclose(fuzz.logits(peft.PeftModel.from_pretrained(fresh_reference, str(folder)), ids),
                               expected, rtol=1e-12, atol=1e-12)


# ==================================================================================================
# LoraConfig.from_pretrained reads adapter_config.json itself: its errors name the file
# ==================================================================================================
def write_config(folder, **fields):
    folder.mkdir(parents=True, exist_ok=True)
    config = ml_peft.LoraConfig(target_modules=["q_proj"]).to_dict()
    config.update(fields)
    (folder / "adapter_config.json").write_text(json.dumps(config))
    return str(folder / "adapter_config.json")


@pytest.mark.parametrize("fields, error, words", [
    (dict(r=-16), ValueError, "r "),
    (dict(fan_in_fan_out=0), TypeError, "fan_in_fan_out must be True or False"),
    (dict(fan_in_fan_out=[]), TypeError, "fan_in_fan_out must be True or False"),
    (dict(use_dora="yes"), TypeError, "use_dora must be True or False"),
    (dict(trainable_token_indices=[]), ValueError, "trainable_token_indices is empty"),
    (dict(peft_type="IA3"), NotImplementedError, "'IA3' is not supported"),
])
def test_lora_config_from_pretrained_names_the_file(tmp_path, fields, error, words):
    path = write_config(tmp_path / "adapter", **fields)
    for load in (ml_peft.LoraConfig.from_pretrained, ml_peft.PeftConfig.from_pretrained):
        with pytest.raises(error) as got:
            load(tmp_path / "adapter")
        assert str(got.value).startswith(f"{path}: ") and words in str(got.value), str(got.value)


def test_lora_config_from_pretrained_unreadable_files(tmp_path):
    path = write_config(tmp_path / "a")
    with open(path, "ab") as f:
        f.write(b"\xff")
    with pytest.raises(InvalidJSONError, match="not UTF-8") as got:
        ml_peft.LoraConfig.from_pretrained(tmp_path / "a")
    assert path in str(got.value)
    (tmp_path / "a" / "adapter_config.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="must be a JSON object") as got:
        ml_peft.LoraConfig.from_pretrained(tmp_path / "a")
    assert path in str(got.value)
    sub = write_config(tmp_path / "b" / "second", r=0)
    with pytest.raises(ValueError) as got:
        ml_peft.LoraConfig.from_pretrained(tmp_path / "b", subfolder="second")
    assert str(got.value).startswith(f"{sub}: ")
    with pytest.raises(FileNotFoundError, match="not an adapter directory"):
        ml_peft.LoraConfig.from_pretrained(tmp_path / "nothing")


@pytest.mark.parametrize("cls, field", [(ml_peft.LoraConfig, "fan_in_fan_out"), (ml_peft.VeraConfig, "fan_in_fan_out"),
                                        (ml_peft.LoraConfig, "use_rslora")])
def test_bool_fields_refuse_non_bools(cls, field):
    assert getattr(cls(**{field: True}), field) is True
    for value in (0, [], None, "False"):
        with pytest.raises(TypeError, match=f"{field} must be True or False"):
            cls(**{field: value})


def test_from_json_file_names_the_file(tmp_path):
    path = write_config(tmp_path / "a")
    assert ml_peft.LoraConfig.from_json_file(path) == json.loads(open(path).read())
    with open(path, "ab") as f:
        f.write(b"\xff")
    with pytest.raises(InvalidJSONError, match="not UTF-8") as got:
        ml_peft.LoraConfig.from_json_file(path)
    assert path in str(got.value)
