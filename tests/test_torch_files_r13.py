"""Round 13: torch.save's files, as torch users meet them, read by ``minilora.load`` (``import minilora as torch``)
the way ``torch.load(weights_only=True)`` reads them, and minilora.save's files read by real ``torch.load``.

Before: ``minilora.load`` refused every file torch.save wrote ("never unpickles torch's"), so a tutorial's
``torch.load("model.pt")``, an optimizer checkpoint, a Hugging Face folder with ``pytorch_model.bin`` (or its
sharded index) and an older PEFT ``adapter_model.bin`` all stopped with an error; and ``minilora.save`` wrote
safetensors, which ``torch.load`` cannot read. Now minilora/torch_format.py reads torch's zip (and legacy)
format with a port of torch's weights-only unpickler (nothing in the file runs) and writes the zip format.
Skipped without torch."""
import io
import json
import os
import pickle
import zipfile
from collections import OrderedDict

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import minilora as ml  # noqa: E402


def _same(ours, theirs):
    """A minilora tensor and a torch tensor: same class name, dtype, shape, values, requires_grad."""
    assert type(ours).__name__ == type(theirs).__name__
    assert str(ours.dtype).removeprefix("torch.") == str(theirs.dtype).removeprefix("torch.")
    assert tuple(ours.shape) == tuple(theirs.shape) and ours.requires_grad == theirs.requires_grad
    np.testing.assert_array_equal(np.asarray(ours.detach().float().tolist()), theirs.detach().float().numpy())


def _tutorial_checkpoint(lib, path):
    """The save-and-load tutorial's checkpoint, plus what torch's weights-only loader also takes."""
    lib.manual_seed(0)
    model = lib.nn.Sequential(lib.nn.Linear(4, 3), lib.nn.ReLU(), lib.nn.Linear(3, 2))
    optimizer = lib.optim.Adam(model.parameters(), lr=0.01)
    model(lib.randn(5, 4)).sum().backward()
    optimizer.step()
    table = lib.arange(12.0).reshape(3, 4)
    lib.save({"epoch": 3, "model_state_dict": model.state_dict(), "optimizer_state_dict": optimizer.state_dict(),
              "loss": 0.25, "table": table, "rows": table[1:], "columns": table[:, 1::2], "param": lib.nn.Parameter(
                  lib.ones(2)), "half": lib.ones(2, dtype=lib.float16) / 3, "bf16": lib.ones(3, dtype=lib.bfloat16) / 3,
              "mask": lib.tensor([True, False]), "ids": lib.tensor([1, 2**40]), "bytes": lib.tensor([1, 255],
                                                                                                   dtype=lib.uint8),
              "size": lib.Size([2, 3]), "dtype": lib.float16, "z": 1 + 2j, "tags": {"a"}, "blob": b"\x00\xff",
              "nested": [(1, None), {"k": lib.zeros(1, requires_grad=True)}]}, path)


def _compare(ours, theirs, where="obj"):
    if hasattr(theirs, "untyped_storage"):
        return _same(ours, theirs)
    assert type(ours).__name__ == type(theirs).__name__ or isinstance(theirs, torch.dtype), where
    if isinstance(theirs, dict):
        assert list(ours) == list(theirs), where
        for key in theirs:
            _compare(ours[key], theirs[key], f"{where}[{key!r}]")
    elif isinstance(theirs, (list, tuple)):
        assert len(ours) == len(theirs), where
        for i, (a, b) in enumerate(zip(ours, theirs)):
            _compare(a, b, f"{where}[{i}]")
    elif isinstance(theirs, torch.dtype):
        assert str(ours) == str(theirs).removeprefix("torch."), where
    else:
        assert ours == theirs, where


def test_a_torch_checkpoint_loads_in_minilora_as_torch_load_gives_it(tmp_path):
    """Before: CheckpointError "looks like a torch.save file ... never unpickles torch's"."""
    path = tmp_path / "checkpoint.pt"
    _tutorial_checkpoint(torch, path)
    theirs, ours = torch.load(path), ml.load(path)
    _compare(ours, theirs)
    assert isinstance(ours["model_state_dict"], OrderedDict) and ours["model_state_dict"]._metadata == \
        theirs["model_state_dict"]._metadata
    # views of one storage share memory, as torch's: a write through one shows in the others
    ours["rows"][0, 1] = 100.0
    theirs["rows"][0, 1] = 100.0
    _same(ours["table"], theirs["table"])
    assert ours["columns"][1, 0].item() == theirs["columns"][1, 0].item() == 100.0
    # and it restores the model and the optimizer the tutorial's way
    ml.manual_seed(0)
    model = ml.nn.Sequential(ml.nn.Linear(4, 3), ml.nn.ReLU(), ml.nn.Linear(3, 2))
    optimizer = ml.optim.Adam(model.parameters(), lr=0.01)
    model.load_state_dict(ours["model_state_dict"])
    optimizer.load_state_dict(ours["optimizer_state_dict"])
    assert optimizer.state_dict()["state"][0]["step"].item() == 1


def test_minilora_save_writes_what_torch_load_reads(tmp_path):
    """Before: minilora.save wrote safetensors, and torch.load said "Weights only load failed ... Unsupported
    operand 123"."""
    _tutorial_checkpoint(ml, tmp_path / "ours.pt")
    _tutorial_checkpoint(torch, tmp_path / "theirs.pt")
    ours, theirs = torch.load(tmp_path / "ours.pt"), torch.load(tmp_path / "theirs.pt")
    for name in ("model_state_dict", "param", "half", "bf16", "mask", "ids", "bytes", "size", "dtype", "tags",
                 "nested", "epoch", "z", "blob"):
        assert repr(ours[name]) == repr(theirs[name]), name
    torch.testing.assert_close(ours["optimizer_state_dict"], theirs["optimizer_state_dict"], rtol=0, atol=1e-7)
    # one storage for the table and its views (torch keeps them shared), offsets and strides as torch's
    assert {ours[k].untyped_storage().data_ptr() for k in ("table", "rows", "columns")} == \
        {ours["table"].untyped_storage().data_ptr()}
    assert [(ours[k].storage_offset(), ours[k].stride()) for k in ("rows", "columns")] == \
        [(theirs[k].storage_offset(), theirs[k].stride()) for k in ("rows", "columns")]
    # uint16/32/64 (no typed storage in torch: an UntypedStorage and _rebuild_tensor_v3, as torch writes them)
    ml.save({"u16": ml.from_numpy(np.array([1, 65535], np.uint16))}, tmp_path / "u.pt")
    assert repr(torch.load(tmp_path / "u.pt")["u16"]) == repr(torch.tensor([1, 65535]).to(torch.uint16))
    # torch maps it (its records are 64-byte aligned, as torch's), and minilora reads its own files back
    assert torch.load(tmp_path / "ours.pt", mmap=True)["rows"].tolist() == theirs["rows"].tolist()
    _compare(ml.load(tmp_path / "ours.pt"), theirs)
    assert ml.load(tmp_path / "ours.pt", mmap=True)["rows"].tolist() == theirs["rows"].tolist()
    # the files minilora.save wrote before still load: safetensors with the structure in its metadata (under
    # any name; a .safetensors name still gets it), and a whole module pickled
    ml.save({"epoch": 2, "state": {"w": ml.ones(2)}}, tmp_path / "old.safetensors")
    os.replace(tmp_path / "old.safetensors", tmp_path / "old.pt")
    assert ml.load(tmp_path / "old.pt")["state"]["w"].tolist() == [1.0, 1.0]
    ml.save(ml.nn.Linear(2, 2), tmp_path / "module.pt")
    assert isinstance(ml.load(tmp_path / "module.pt", weights_only=False), ml.nn.Linear)


def test_tied_weights_and_file_objects_as_torch(tmp_path):
    """A state dict with tied weights (one Parameter under two names) saved to a BytesIO, as torch users do."""
    ml.manual_seed(0)
    embed = ml.nn.Embedding(5, 3)
    head = ml.nn.Linear(3, 5, bias=False)
    head.weight = embed.weight
    buffer = io.BytesIO()
    ml.save({"embed.weight": embed.weight, "head.weight": head.weight}, buffer)
    buffer.seek(0)
    theirs = torch.load(buffer)
    assert theirs["embed.weight"] is theirs["head.weight"] and isinstance(theirs["head.weight"], torch.nn.Parameter)
    buffer.seek(0)
    ours = ml.load(buffer)
    assert ours["embed.weight"] is ours["head.weight"] and isinstance(ours["head.weight"], ml.nn.Parameter)
    np.testing.assert_array_equal(ours["head.weight"].detach().numpy(), theirs["head.weight"].detach().numpy())
    # torch.save's private keywords: no byteorder record (read as little-endian), and the legacy writer refused
    ml.save({"w": embed.weight}, tmp_path / "w.pt", _disable_byteorder_record=True)
    assert "w/byteorder" not in zipfile.ZipFile(tmp_path / "w.pt").namelist()
    assert torch.load(tmp_path / "w.pt")["w"].tolist() == embed.weight.tolist()
    with pytest.raises(NotImplementedError, match="_use_new_zipfile_serialization=False"):
        ml.save({"w": embed.weight}, tmp_path / "w.pt", _use_new_zipfile_serialization=False)


def test_the_legacy_format_loads(tmp_path):
    """torch < 1.6's format (``_use_new_zipfile_serialization=False``): before, refused as a pickle."""
    torch.manual_seed(0)
    w = torch.randn(3, 4, dtype=torch.float64)
    torch.save({"w": w, "t": w.t(), "b": torch.ones(2, dtype=torch.bfloat16)}, tmp_path / "old.pt",
               _use_new_zipfile_serialization=False)
    ours, theirs = ml.load(tmp_path / "old.pt"), torch.load(tmp_path / "old.pt")
    _compare(ours, theirs)
    assert np.shares_memory(ours["w"].numpy(), ours["t"].numpy())


class _Payload:
    """What a malicious checkpoint pickles: unpickling it calls os.system, creating a file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _malicious_zip(path, marker):
    torch.save({"w": torch.ones(2), "payload": _Payload(marker)}, path)


@pytest.mark.parametrize("weights_only", [None, True, False])
def test_a_malicious_pickle_is_refused_and_its_code_never_runs(tmp_path, weights_only):
    """Before: refused as any torch file. Now: torch's weights-only words (the same text torch.load gives), and
    with weights_only=False too (minilora never runs a torch file's pickle)."""
    marker = tmp_path / "pwned"
    _malicious_zip(tmp_path / "evil.pt", marker)
    with pytest.raises(pickle.UnpicklingError) as theirs:
        torch.load(tmp_path / "evil.pt")
    with pytest.raises(pickle.UnpicklingError) as ours:
        ml.load(tmp_path / "evil.pt", weights_only=weights_only)
    if weights_only is False:
        assert "never runs a torch.save file's pickle" in str(ours.value) and str(theirs.value) in str(ours.value)
    else:
        assert str(ours.value) == str(theirs.value)  # "... Trying to load unsupported GLOBAL posix.system whose
    assert not marker.exists()  # module posix is blocked."


def test_an_unsupported_global_is_named_in_torchs_words(tmp_path):
    """A whole module (``torch.save(model)``): torch's "Unsupported global: GLOBAL torch.nn.modules..."."""
    torch.save(torch.nn.Linear(2, 2), tmp_path / "model.pt")
    with pytest.raises(pickle.UnpicklingError) as theirs:
        torch.load(tmp_path / "model.pt")
    with pytest.raises(pickle.UnpicklingError) as ours:
        ml.load(tmp_path / "model.pt")
    assert str(ours.value) == str(theirs.value) and "GLOBAL torch.nn.modules.linear.Linear" in str(ours.value)
    # what torch allows but minilora cannot hold is refused saying so: a tensor's Python attributes, float8
    tagged = torch.ones(2)
    tagged.note = "hi"
    torch.save({"t": tagged}, tmp_path / "tagged.pt")
    with pytest.raises(pickle.UnpicklingError, match=r"Python attributes \['note'\]"):
        ml.load(tmp_path / "tagged.pt")
    torch.save({"f8": torch.zeros(2, dtype=torch.float8_e4m3fn)}, tmp_path / "f8.pt")
    with pytest.raises(pickle.UnpicklingError, match="torch.float8_e4m3fn: torch's weights-only loader allows it, "
                                                     "but minilora does not rebuild it"):
        ml.load(tmp_path / "f8.pt")


@pytest.mark.parametrize("damage", ["truncated", "flipped byte", "missing storage"])
def test_a_damaged_file_is_a_clear_error(tmp_path, damage):
    path = tmp_path / "model.pt"
    torch.save({"w": torch.arange(64.0)}, path)
    data = bytearray(path.read_bytes())
    if damage == "truncated":
        data = data[:len(data) - 100]
        words = "failed finding central directory.*truncated"
    elif damage == "flipped byte":
        info = zipfile.ZipFile(path).getinfo("model/data/0")
        data[info.header_offset + 200] ^= 0xFF  # a byte of the tensor's values: the record's CRC no longer matches
        words = "failed reading file data/0.*Bad CRC-32"
    else:
        with zipfile.ZipFile(path) as old, zipfile.ZipFile(tmp_path / "cut.pt", "w") as new:
            for info in old.infolist():
                if not info.filename.endswith("data/0"):
                    new.writestr(info, old.read(info))
        data = (tmp_path / "cut.pt").read_bytes()
        words = "failed locating file data/0"
    path.write_bytes(bytes(data))
    if damage == "flipped byte":  # torch reads the damaged values without a word (it checks no CRC); minilora
        assert not torch.equal(torch.load(path)["w"], torch.arange(64.0))  # refuses them
    else:
        with pytest.raises(RuntimeError):
            torch.load(path)
    with pytest.raises(RuntimeError, match=f"{path}.*{words}"):
        ml.load(path)


def test_map_location_and_mmap_as_torch(tmp_path):
    torch.save({"w": torch.arange(6.0).reshape(2, 3)}, tmp_path / "w.pt")
    seen = []
    loaded = ml.load(tmp_path / "w.pt", map_location=lambda storage, location: seen.append(location) or storage)
    assert seen == ["cpu"] and loaded["w"].tolist() == [[0, 1, 2], [3, 4, 5]]
    assert ml.load(tmp_path / "w.pt", map_location={"cuda:0": "cpu"})["w"].device.type == "cpu"
    mapped = ml.load(tmp_path / "w.pt", mmap=True)["w"]
    mapped[0, 0] = 9.0  # copy-on-write, as torch's MAP_PRIVATE mapping: the file keeps its values
    assert torch.load(tmp_path / "w.pt")["w"][0, 0].item() == 0.0
    with pytest.raises(ValueError, match="f must be a file path in order to use the mmap argument"):
        ml.load(io.BytesIO((tmp_path / "w.pt").read_bytes()), mmap=True)


def _hf_llama(folder, sharded):
    """A Llama saved as transformers 4 did with save_safetensors=False: pytorch_model.bin (torch.save of the
    state dict), or shards and pytorch_model.bin.index.json. (transformers 5 reads them, writes safetensors.)"""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=32)
    model = transformers.LlamaForCausalLM(config)
    config.save_pretrained(folder)
    state = model.state_dict()
    if not sharded:
        torch.save(state, os.path.join(folder, "pytorch_model.bin"))
        return model
    names = list(state)
    shards = {"pytorch_model-00001-of-00002.bin": names[:len(names) // 2],
              "pytorch_model-00002-of-00002.bin": names[len(names) // 2:]}
    for shard, keys in shards.items():
        torch.save({k: state[k] for k in keys}, os.path.join(folder, shard))
    index = {"metadata": {"total_size": sum(t.numel() * t.element_size() for t in state.values())},
             "weight_map": {k: shard for shard, keys in shards.items() for k in keys}}
    with open(os.path.join(folder, "pytorch_model.bin.index.json"), "w") as file:
        json.dump(index, file)
    return model


@pytest.mark.parametrize("sharded", [False, True])
def test_from_pretrained_reads_pytorch_model_bin(tmp_path, sharded):
    """Before: FileNotFoundError "no model.safetensors ... (PyTorch .bin files are pickles, which minilora never
    loads)"."""
    hf = _hf_llama(tmp_path, sharded)
    ours = ml.models.LlamaForCausalLM.from_pretrained(tmp_path)
    theirs = hf.state_dict()
    for name, value in ours.state_dict().items():
        np.testing.assert_array_equal(value.numpy(), theirs[name].numpy(), err_msg=name)
    ids = [[1, 5, 9, 3]]
    with torch.no_grad():
        expected = hf(torch.tensor(ids)).logits.numpy()
    # float32 logits through two layers: BLAS blocking may differ in the last bits (a few ulps of values ~0.1)
    np.testing.assert_allclose(ours(ml.tensor(ids)).logits.detach().numpy(), expected, rtol=0, atol=1e-6)


def test_a_truncated_pytorch_model_bin_loads_nothing(tmp_path):
    _hf_llama(tmp_path, sharded=False)
    path = tmp_path / "pytorch_model.bin"
    path.write_bytes(path.read_bytes()[:-300])
    with pytest.raises(ValueError, match="pytorch_model.bin.*failed finding central directory"):
        ml.models.LlamaForCausalLM.from_pretrained(tmp_path)


def test_an_older_peft_adapter_model_bin_loads(tmp_path):
    """Older PEFT wrote ``adapter_model.bin`` (torch.save of the adapter's state dict); PEFT still loads it.
    Before: AdapterFileNotFoundError "it has adapter_model.bin, a pickle (torch.save), which minilora never
    loads"."""
    from minilora.lora import LoraConfig, PeftModel, get_peft_model
    from minilora.models import LlamaConfig, LlamaForCausalLM

    def base():
        ml.manual_seed(0)
        return LlamaForCausalLM(LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                            num_attention_heads=2, max_position_embeddings=32))
    model = get_peft_model(base(), LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    model.save_pretrained(tmp_path)
    saved = ml.load(tmp_path / "adapter_model.safetensors")
    torch.save({k: torch.from_numpy(v.numpy()) for k, v in saved.items()}, tmp_path / "adapter_model.bin")
    os.remove(tmp_path / "adapter_model.safetensors")
    loaded = PeftModel.from_pretrained(base(), tmp_path)
    ids = ml.tensor([[1, 5, 9]])
    np.testing.assert_array_equal(loaded(ids).logits.detach().numpy(), model(ids).logits.detach().numpy())


class _RunConfig:
    """A user's object in a checkpoint: the weights-only load refuses it until the user allowlists it."""

    def __init__(self, lr):
        self.lr = lr


def test_safe_globals_as_torchs_error_message_advises(tmp_path):
    """torch's refusal says to use torch.serialization.add_safe_globals / safe_globals; before, minilora had
    neither (AttributeError), nor get_unsafe_globals_in_checkpoint."""
    torch.save({"config": _RunConfig(0.5), "w": torch.ones(2)}, tmp_path / "run.pt")
    assert ml.serialization.get_unsafe_globals_in_checkpoint(tmp_path / "run.pt") == \
        torch.serialization.get_unsafe_globals_in_checkpoint(tmp_path / "run.pt") == [f"{__name__}._RunConfig"]
    with pytest.raises(pickle.UnpicklingError, match=f"safe_globals\\(\\[{__name__}._RunConfig\\]\\)"):
        ml.load(tmp_path / "run.pt")
    with ml.serialization.safe_globals([_RunConfig]):
        assert ml.serialization.get_safe_globals() == [_RunConfig]
        loaded = ml.load(tmp_path / "run.pt")
    assert isinstance(loaded["config"], _RunConfig) and loaded["config"].lr == 0.5
    assert ml.serialization.get_safe_globals() == []  # (the block's allowlist ends with it, as torch's)
