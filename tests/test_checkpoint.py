"""safetensors files and checkpoint folders: round trips, bfloat16, shards, atomic writes, and clear
errors for files that are truncated, corrupted or missing."""
import json
import struct

import numpy as np
import pytest

import minilora as ml
from minilora import checkpoint
from minilora.checkpoint import CheckpointError, atomic_write, load_checkpoint, load_file, save_file

pytest.importorskip("safetensors")


def tensors():
    rng = np.random.default_rng(0)
    return {"a.weight": rng.standard_normal((3, 4)).astype(np.float32),
            "b.bias": rng.standard_normal(5),
            "c.half": rng.standard_normal((2, 2)).astype(np.float16),
            "ids": np.arange(6, dtype=np.int64).reshape(2, 3)}


def test_round_trip_keeps_values_and_dtypes(tmp_path):
    path = tmp_path / "w.safetensors"
    save_file(tensors(), path)
    loaded = load_file(path)
    assert set(loaded) == set(tensors())
    for name, value in tensors().items():
        assert loaded[name].dtype == value.dtype
        np.testing.assert_array_equal(loaded[name], value)
    header, _ = checkpoint.read_header(path)
    assert header["__metadata__"] == {"format": "pt"}  # transformers requires it


def test_reading_from_the_header_matches_safetensors(tmp_path):
    """The header-based reader (used for bfloat16 or without the package) reads the same arrays."""
    path = tmp_path / "w.safetensors"
    save_file(tensors(), path)
    header, start = checkpoint.read_header(path)
    raw = checkpoint._load_from_header(path, header, start)
    for name, value in tensors().items():
        assert raw[name].dtype == value.dtype
        np.testing.assert_array_equal(raw[name], value)


def test_bfloat16_stays_bfloat16(tmp_path):
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_file as torch_save
    values = torch.randn(4, 3).to(torch.bfloat16)
    torch_save({"w": values, "x": torch.ones(2)}, str(tmp_path / "bf16.safetensors"))
    loaded = load_file(tmp_path / "bf16.safetensors")
    assert loaded["w"].dtype == ml.bfloat16
    np.testing.assert_array_equal(loaded["w"].astype(np.float32), values.float().numpy())
    np.testing.assert_array_equal(loaded["x"], np.ones(2, dtype=np.float32))


def test_bfloat16_becomes_float32_without_ml_dtypes(tmp_path, monkeypatch):
    """Without ml_dtypes NumPy has no bfloat16: the reader widens BF16 to float32 (exactly)."""
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_file as torch_save
    values = torch.randn(4, 3).to(torch.bfloat16)
    torch_save({"w": values}, str(tmp_path / "bf16.safetensors"))
    monkeypatch.setattr(checkpoint, "HAS_BFLOAT16", False)
    loaded = load_file(tmp_path / "bf16.safetensors")
    assert loaded["w"].dtype == np.float32
    np.testing.assert_array_equal(loaded["w"], values.float().numpy())


def write_header(path, header, data=b""):
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)


@pytest.mark.parametrize("make, message", [
    (lambda p: p.write_bytes(b"abc"), "truncated or not a safetensors file .3 bytes"),
    (lambda p: p.write_bytes(struct.pack("<Q", 10**6) + b"{}"), "header claims 1000000 bytes"),
    (lambda p: p.write_bytes(struct.pack("<Q", 4) + b"\xff{x}"), "corrupted safetensors header"),
    (lambda p: write_header(p, {"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}}, b"\0" * 8),
     "truncated file: tensor 'w' needs data bytes up to 16 but only 8"),
    (lambda p: write_header(p, {"w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, b"\0" * 8),
     "should span 12 bytes"),
    (lambda p: write_header(p, {"w": {"dtype": "F8_E4M3", "shape": [1], "data_offsets": [0, 1]}}, b"\0"),
     "dtype F8_E4M3"),
    (lambda p: write_header(p, {"w": {"shape": [1]}}), "bad entry for 'w'"),
])
def test_broken_files_give_errors_that_name_them(tmp_path, make, message):
    path = tmp_path / "broken.safetensors"
    make(path)
    with pytest.raises(CheckpointError, match=message) as info:
        load_file(path)
    assert str(path) in str(info.value)


def test_truncating_a_real_file_is_caught(tmp_path):
    path = tmp_path / "w.safetensors"
    save_file(tensors(), path)
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(CheckpointError, match="truncated"):
        load_file(path)


def test_sharded_folder_and_its_errors(tmp_path):
    parts = tensors()
    names = sorted(parts)
    save_file({n: parts[n] for n in names[:2]}, tmp_path / "model-00001-of-00002.safetensors")
    save_file({n: parts[n] for n in names[2:]}, tmp_path / "model-00002-of-00002.safetensors")
    weight_map = {n: f"model-0000{1 + (i >= 2)}-of-00002.safetensors" for i, n in enumerate(names)}
    index = tmp_path / "model.safetensors.index.json"
    index.write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    loaded = load_checkpoint(tmp_path)
    for name in names:
        np.testing.assert_array_equal(loaded[name], parts[name])

    (tmp_path / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(CheckpointError, match="lists shard 'model-00002-of-00002.safetensors'"):
        load_checkpoint(tmp_path)
    index.write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_checkpoint(tmp_path)


def test_folder_without_weights_says_what_it_holds(tmp_path):
    (tmp_path / "notes.txt").write_text("no weights here")
    with pytest.raises(FileNotFoundError, match="no model.safetensors.*pytorch_model.bin.*it holds: notes.txt"):
        load_checkpoint(tmp_path)
    (tmp_path / "pytorch_model.bin").write_bytes(b"pickle")  # read as torch.save's (tests/test_torch_files_r13.py)
    with pytest.raises(CheckpointError, match="pytorch_model.bin"):
        load_checkpoint(tmp_path)


def test_atomic_write_keeps_the_old_file_when_interrupted(tmp_path):
    path = tmp_path / "state.bin"
    path.write_bytes(b"old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_write(path) as f:
            f.write(b"half of the new")
            raise KeyboardInterrupt
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["state.bin"]  # no temporary file left behind
    with atomic_write(path) as f:
        f.write(b"new")
    assert path.read_bytes() == b"new"


def test_save_file_needs_only_numpy_and_matches_the_safetensors_writer_byte_for_byte(tmp_path):
    st = pytest.importorskip("safetensors.numpy")
    rng = np.random.default_rng(0)
    tensors = {"w": rng.standard_normal((3, 4)).astype(np.float32), "ids": np.arange(5),
               "half": np.ones((2, 2), np.float16), "scalar": np.array(3.0),
               "strided": rng.standard_normal((4, 3)).T}
    path = tmp_path / "x.safetensors"
    checkpoint.save_file(tensors, path)
    contiguous = {k: np.ascontiguousarray(v) if v.ndim else v for k, v in tensors.items()}
    assert path.read_bytes() == st.save(contiguous, metadata={"format": "pt"})
    back = st.load_file(str(path))
    for name, array in tensors.items():
        assert back[name].dtype == array.dtype and back[name].shape == array.shape
        np.testing.assert_array_equal(back[name], array)
