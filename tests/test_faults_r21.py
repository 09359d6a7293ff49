"""Faults, round 21: a killed run resumes to the same result, a file of another kind is named as what it is.

A run on torch's DataLoader whose dataset (or collate_fn) draws from Python's or NumPy's global generator -- a
random crop, a masking collator -- resumed to other batches: the resume replays the epoch's first batches to find
its place, and only minilora's generator was put back after the replay. Readers of binary formats (``minilora.load``,
safetensors, a training checkpoint) given a JSON, text or gzip file said "truncated" by the length its first bytes
spell, or NumPy's "pickled (object) data"; a torch.save zip with a damaged entry header raised zipfile's bare
NotImplementedError / RuntimeError. A CorDA / LoRA-GA cache computed for another model was a bare KeyError or a
broadcast error inside the initialisation.
"""
import gzip
import json
import os
import pickle
import random
import sys

import numpy as np
import pytest

import minilora as ml
from minilora.checkpoint import CheckpointError, load_file
from minilora.lora import LoraConfig, LoraGAConfig, get_peft_model, preprocess_loraga
from minilora.models import LlamaConfig, LlamaForCausalLM
from minilora.train import load_training_state, save_training_state, train
from minilora.utils.data import DataLoader, Dataset

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_faults_r8 import KW, ROWS, Stop, lora_model, same_weights, stop_at  # noqa: E402


class _Augmented(Dataset):
    """Each row with one token replaced at a position drawn from Python's or NumPy's global generator."""

    def __init__(self, generator):
        self.generator = generator

    def __len__(self):
        return len(ROWS)

    def __getitem__(self, i):
        row = ROWS[i].copy()
        k = random.randrange(8) if self.generator == "python" else int(np.random.randint(8))
        row[k] = 3 + row[k] % 5
        return ml.tensor(row)


def _augmented_loader(generator):
    random.seed(0)  # (as a script seeds them at its start: the run and its resumption begin alike)
    np.random.seed(0)
    return DataLoader(_Augmented(generator), batch_size=3, shuffle=True)


@pytest.mark.parametrize("generator", ["python", "numpy"])
def test_a_dataset_drawing_from_pythons_or_numpys_generator_resumes_bit_for_bit(tmp_path, generator):
    whole = lora_model()
    expected = train(whole, _augmented_loader(generator), **KW)
    with pytest.raises(Stop):  # stopped at step 5: the checkpoint of step 4 is mid-epoch (4 batches an epoch)
        train(lora_model(), _augmented_loader(generator), out_dir=tmp_path, save_every=2,
              after_optimizer_step=stop_at(5), **KW)
    resumed = lora_model()
    result = train(resumed, _augmented_loader(generator), out_dir=tmp_path, save_every=2, resume=True, **KW)
    assert result.losses == expected.losses
    assert same_weights(resumed, whole)


_OTHER_FILES = {
    "JSON": (json.dumps({"model_type": "llama"}).encode(), "a JSON text file"),
    "text": (b"step 1 loss 2.5\n", "a text file"),
    "gzip": (gzip.compress(b"weights"), "a gzip-compressed file"),
}


def _read_as_torch_file(path):
    return ml.load(path)


def _read_as_training_checkpoint(path):
    return load_training_state(path)


@pytest.mark.parametrize("reader", [_read_as_torch_file, load_file, _read_as_training_checkpoint])
@pytest.mark.parametrize("kind", sorted(_OTHER_FILES))
def test_a_file_of_another_kind_is_named_as_what_it_is(tmp_path, reader, kind):
    data, words = _OTHER_FILES[kind]
    path = tmp_path / "weights.bin"
    path.write_bytes(data)
    with pytest.raises((CheckpointError, ValueError)) as caught:
        reader(str(path))
    assert words in str(caught.value) and str(path) in str(caught.value)
    assert "truncated" not in str(caught.value) and "pickled" not in str(caught.value)


def test_binary_junk_given_as_a_training_checkpoint_is_not_blamed_on_pickled_data(tmp_path):
    path = tmp_path / "checkpoint.npz"
    path.write_bytes(bytes(range(256)))
    with pytest.raises(ValueError, match=r"is truncated or corrupted, or not a training checkpoint: .* writes a zip archive") as caught:
        load_training_state(str(path))
    assert "pickled" not in str(caught.value)
    save_training_state(str(path), {"step": 3, "w": np.arange(4.0)})  # (what save_training_state writes still reads)
    assert load_training_state(str(path))["step"] == 3


# A flipped bit in the central directory's entry for data.pkl: its "version needed to extract" (offset 6), its
# flags (8: bit 0 says encrypted), its compression method (10).
@pytest.mark.parametrize("field, value", [(6, 0xff), (8, 0x01), (10, 0x63)])
def test_a_torch_file_with_a_damaged_entry_header_is_named(tmp_path, field, value):
    path = tmp_path / "model.pt"
    ml.save({"w": ml.ones(2)}, str(path))
    data = bytearray(path.read_bytes())
    data[data.find(b"PK\x01\x02") + field] = value
    path.write_bytes(bytes(data))
    with pytest.raises(RuntimeError, match="PytorchStreamReader failed") as caught:
        ml.load(str(path))
    assert str(path) in str(caught.value)


def _tiny_model(hidden_size, layers):
    ml.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=16, hidden_size=hidden_size, intermediate_size=32,
                                        num_hidden_layers=layers, num_attention_heads=2, max_position_embeddings=32))


def _loraga_from_cache(model, cache_file):
    ids = ml.tensor([[3, 4, 5, 6, 7, 8]])
    config = LoraConfig(r=2, target_modules=["q_proj"], init_lora_weights="lora_ga", lora_ga_config=LoraGAConfig())
    preprocess_loraga(model, config, lambda: model(ids, labels=ids).loss.backward(), cache_file=cache_file)
    return get_peft_model(model, config)


@pytest.mark.filterwarnings("ignore:Full backward hook")
@pytest.mark.parametrize("hidden_size, layers, words", [
    (32, 1, r"has shape \(16, 16\), this model's layer needs \(32, 32\)"),
    (16, 2, r"has no entry 'model\.layers\.1\.self_attn\.q_proj\._peft_loraga_grad'")])
def test_a_lora_ga_cache_of_another_model_is_named(tmp_path, hidden_size, layers, words):
    cache = str(tmp_path / "loraga.pt")
    _loraga_from_cache(_tiny_model(16, 1), cache)
    with pytest.raises(ValueError, match=words) as caught:
        _loraga_from_cache(_tiny_model(hidden_size, layers), cache)
    assert cache in str(caught.value)


@pytest.mark.filterwarnings("ignore:Full backward hook")
def test_a_lora_ga_cache_given_a_bare_file_name_is_written_in_the_working_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _loraga_from_cache(_tiny_model(16, 1), "loraga.pt")
    assert os.path.getsize(tmp_path / "loraga.pt") > 0


def test_a_folder_given_as_a_safetensors_file_is_named_as_a_folder(tmp_path):
    with pytest.raises(IsADirectoryError, match=r"is a folder, not a safetensors file: pass the file in it"):
        load_file(str(tmp_path))  # (was "no such checkpoint file": the folder is there)


def _masking_tokenizer(folder):
    tokenizers = pytest.importorskip("tokenizers")
    from minilora.tokenizer import from_pretrained
    vocab = {"<unk>": 0, "<s>": 1, "<pad>": 2, **{f"w{i}": i for i in range(3, 15)}, "<mask>": 15}
    backend = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="<unk>"))
    backend.add_special_tokens(["<s>", "<pad>", "<mask>"])
    backend.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"bos_token": "<s>", "pad_token": "<pad>", "mask_token": "<mask>", "unk_token": "<unk>"}))
    return from_pretrained(str(folder))


@pytest.mark.parametrize("return_tensors", ["pt", "np"])
def test_a_seeded_masking_collator_resumed_in_a_later_epoch_masks_as_the_uninterrupted_run(tmp_path, return_tensors):
    from minilora.data import DataCollatorForLanguageModeling
    tokenizer = _masking_tokenizer(tmp_path)

    def loader():  # 4 batches an epoch; the collator's own generator (seed=7) goes on from epoch to epoch
        collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.5, seed=7,
                                                   return_tensors=return_tensors)
        return DataLoader([row.tolist() for row in ROWS], batch_size=3, shuffle=True, collate_fn=collator)

    options = {**KW, "steps": 10}
    whole = lora_model()
    expected = train(whole, loader(), **options)
    with pytest.raises(Stop):  # the last checkpoint (step 8) ends the second epoch: 8 batches masked so far
        train(lora_model(), loader(), out_dir=tmp_path / "run", save_every=2, after_optimizer_step=stop_at(9), **options)
    resumed = lora_model()
    result = train(resumed, loader(), out_dir=tmp_path / "run", save_every=2, resume=True, **options)
    assert result.losses == expected.losses
    assert same_weights(resumed, whole)


def _legacy_torch_file(obj_pickle):
    """torch < 1.6's stream, made without torch: its magic number, protocol and sys_info pickled, then the object."""
    head = [0x1950a86a20f9469cfc6c, 1001, {"protocol_version": 1001, "little_endian": True,
                                           "type_sizes": {"short": 2, "int": 4, "long": 4}}]
    return b"".join(pickle.dumps(value, protocol=2) for value in head) + obj_pickle + pickle.dumps([], protocol=2)


def _zip_torch_file(obj_pickle):
    import io
    import zipfile
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("archive/data.pkl", obj_pickle)
        archive.writestr("archive/byteorder", "little")
        archive.writestr("archive/version", "3\n")
    return buffer.getvalue()


@pytest.mark.parametrize("layout", [_legacy_torch_file, _zip_torch_file])
def test_a_torch_file_whose_pickle_is_cut_short_names_the_file(tmp_path, layout):
    path = tmp_path / "checkpoint.pt"
    whole = pickle.dumps({"epoch": 3, "loss": 0.25}, protocol=2)
    path.write_bytes(layout(whole))
    assert ml.load(str(path)) == {"epoch": 3, "loss": 0.25}
    path.write_bytes(layout(whole)[:-20] if layout is _legacy_torch_file else layout(whole[:-4]))
    with pytest.raises(pickle.UnpicklingError, match="the pickle is corrupted") as caught:
        ml.load(str(path))
    assert str(path) in str(caught.value)


def test_a_resume_onto_another_base_model_says_so(tmp_path):
    from minilora.lora import get_peft_model as peft
    from test_faults_r8 import tiny_model
    train(lora_model(), ROWS, out_dir=tmp_path, save_every=2, **{**KW, "steps": 2})
    other_base = peft(tiny_model(seed=1), LoraConfig(r=2, lora_alpha=4, lora_dropout=0.3,
                                                     target_modules=["q_proj", "v_proj"]))
    import warnings
    with warnings.catch_warnings():  # the run's own base: nothing to say
        warnings.simplefilter("error")
        train(lora_model(), ROWS, out_dir=tmp_path, resume=True, **{**KW, "steps": 3})
    with pytest.warns(UserWarning, match=r"the model's frozen weights are not the ones this run was trained on"):
        train(other_base, ROWS, out_dir=tmp_path, resume=True, **{**KW, "steps": 4})
