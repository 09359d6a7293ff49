"""Reading and writing weights in the safetensors format, the one Hugging Face checkpoints use.

A ``.safetensors`` file is deliberately simple (and, unlike pickle, cannot run code when loaded)::

    8 bytes   N, the header length (little-endian unsigned 64-bit integer)
    N bytes   a JSON header: {"name": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]}, ...,
              "__metadata__": {"format": "pt"}}
    the rest  the raw tensor bytes, each tensor at its [begin, end) offsets

The ``safetensors`` package does the reading and writing (its NumPy API). Before handing a file to it
we check the header ourselves, so a truncated download or a corrupted file gives an error that names
the file and says what is wrong, instead of a bare "MetadataIncompleteBuffer". The header also lets us
read what NumPy has no dtype for: bfloat16 tensors (most released Llama weights) become float32.

Large checkpoints come in shards: ``model.safetensors.index.json`` maps each tensor name to the shard
file holding it. ``load_checkpoint(directory)`` reads either layout.

Every write is atomic (``atomic_write``): the bytes go to a temporary file in the same folder, which
then replaces the target in one ``os.replace``. A crash mid-save leaves the previous file untouched.
"""
import contextlib
import json
import os
import struct
import tempfile

import numpy as np

__all__ = ["CheckpointError", "atomic_write", "save_json", "load_json", "read_header", "save_file",
           "load_file", "load_checkpoint", "SAFE_WEIGHTS_NAME", "SAFE_WEIGHTS_INDEX_NAME"]

SAFE_WEIGHTS_NAME = "model.safetensors"
SAFE_WEIGHTS_INDEX_NAME = "model.safetensors.index.json"

# safetensors dtype names -> NumPy dtypes. BF16 has no NumPy dtype: it is read as uint16 and widened.
_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64,
           "U64": np.uint64, "I32": np.int32, "U32": np.uint32, "I16": np.int16, "U16": np.uint16,
           "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_}
_ITEMSIZE = {name: np.dtype(dt).itemsize for name, dt in _DTYPES.items()} | {"BF16": 2}


class CheckpointError(ValueError):
    """A checkpoint file is missing, truncated, corrupted or holds something we cannot read."""


# --------------------------------------------------------------------------------------------------
# Atomic writes
# --------------------------------------------------------------------------------------------------
def _current_umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


@contextlib.contextmanager
def atomic_write(path, mode="wb"):
    """``with atomic_write(path) as f: f.write(...)`` -- ``path`` changes only if the block finishes.

    The data goes to a temporary file next to ``path`` (same filesystem, so the rename is atomic),
    is flushed to disk, and then ``os.replace`` swaps it in. On any error the temporary file is
    removed and the old ``path`` is left as it was.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


def save_json(obj, path):
    """Write ``obj`` as indented JSON, atomically."""
    with atomic_write(path, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")


def load_json(path):
    """Read a JSON file; a syntax error names the file."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: not valid JSON ({exc})") from None


# --------------------------------------------------------------------------------------------------
# Single safetensors files
# --------------------------------------------------------------------------------------------------
def read_header(path):
    """The parsed JSON header of a safetensors file and the byte offset where tensor data starts.

    Checks everything that can be checked without reading the data: the file is long enough for its
    header and for every tensor's byte range, dtypes are known, and each byte range fits its shape.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no such checkpoint file: {path}")
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        prefix = f.read(8)
        if len(prefix) < 8:
            raise CheckpointError(f"{path}: truncated or not a safetensors file ({size} bytes, "
                                  "shorter than the 8-byte header length)")
        (header_len,) = struct.unpack("<Q", prefix)
        if header_len > size - 8:
            raise CheckpointError(f"{path}: truncated or not a safetensors file (the header claims "
                                  f"{header_len} bytes but the file has only {size})")
        raw = f.read(header_len)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: corrupted safetensors header ({exc})") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: corrupted safetensors header (not a JSON object)")
    data_start, data_len = 8 + header_len, size - 8 - header_len
    for name, info in header.items():
        if name != "__metadata__":
            _check_entry(path, name, info, data_len)
    return header, data_start


def _check_entry(path, name, info, data_len):
    try:
        dtype, shape, (begin, end) = info["dtype"], info["shape"], info["data_offsets"]
    except (KeyError, TypeError, ValueError):
        raise CheckpointError(f"{path}: corrupted safetensors header (bad entry for '{name}': "
                              f"{info!r})") from None
    if dtype not in _ITEMSIZE:
        raise CheckpointError(f"{path}: tensor '{name}' has dtype {dtype}, which minilora cannot "
                              f"read (supported: {', '.join(sorted(_ITEMSIZE))})")
    if end > data_len:
        raise CheckpointError(f"{path}: truncated file: tensor '{name}' needs data bytes up to "
                              f"{end} but only {data_len} are present")
    expected = int(np.prod(shape, dtype=np.int64)) * _ITEMSIZE[dtype]
    if not 0 <= begin <= end or end - begin != expected:
        raise CheckpointError(f"{path}: corrupted header: tensor '{name}' ({dtype}, shape {shape}) "
                              f"should span {expected} bytes, its offsets [{begin}, {end}) do not")


def load_file(path):
    """``{name: numpy array}`` of a safetensors file. bfloat16 tensors come back as float32."""
    header, data_start = read_header(path)
    dtypes = {info["dtype"] for name, info in header.items() if name != "__metadata__"}
    try:
        from safetensors.numpy import load_file as _st_load
    except ImportError:
        _st_load = None
    if _st_load is not None and "BF16" not in dtypes:
        try:
            return _st_load(path)
        except Exception as exc:  # the header passed our checks, so this is a deeper corruption
            raise CheckpointError(f"{path}: could not be read by safetensors ({exc})") from None
    return _load_from_header(path, header, data_start)


def _load_from_header(path, header, data_start):
    """Read every tensor straight from its byte range (used for bfloat16, or without safetensors)."""
    with open(path, "rb") as f:
        f.seek(data_start)
        blob = f.read()
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        if info["dtype"] == "BF16":
            # bfloat16 is the top half of a float32: widen the 16 bits and shift them into place.
            bits = np.frombuffer(blob, np.uint16, (end - begin) // 2, begin).astype(np.uint32)
            array = (bits << 16).view(np.float32)
        else:
            dtype = np.dtype(_DTYPES[info["dtype"]]).newbyteorder("<")
            array = np.frombuffer(blob, dtype, (end - begin) // dtype.itemsize, begin)
            array = array.astype(dtype.newbyteorder("="))  # a writable native-endian copy
        out[name] = array.reshape(info["shape"])
    return out


def save_file(tensors, path, metadata=None):
    """Write ``{name: array}`` to ``path`` as safetensors, atomically, with NumPy alone.

    The format is small enough to write by hand: an 8-byte little-endian header length, a JSON
    header ``{name: {"dtype", "shape", "data_offsets"}, "__metadata__": {...}}`` (padded with spaces
    to a multiple of 8 bytes), then every tensor's little-endian bytes back to back. Metadata
    defaults to ``{"format": "pt"}`` (transformers refuses safetensors files without it).
    """
    names = {np.dtype(dt): name for name, dt in _DTYPES.items()}
    meta = {"format": "pt"} if metadata is None else {str(k): str(v) for k, v in metadata.items()}
    arrays = {name: np.asarray(_host(t), order="C") for name, t in tensors.items()}
    header, chunks, offset = {"__metadata__": meta}, [], 0
    # The order of safetensors' own writer (widest dtype first, then by name): identical bytes.
    for name in sorted(arrays, key=lambda n: (-arrays[n].dtype.itemsize, n)):
        array = arrays[name]
        if array.dtype not in names:
            raise TypeError(f"save_file: tensor '{name}' has dtype {array.dtype}, which safetensors "
                            f"cannot store (supported: {', '.join(sorted(map(str, names)))})")
        data = array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
        header[name] = {"dtype": names[array.dtype], "shape": list(array.shape),
                        "data_offsets": [offset, offset + len(data)]}
        chunks.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)  # keep the tensor data 8-byte aligned
    with atomic_write(path) as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for data in chunks:
            f.write(data)


def _host(t):
    """A NumPy array from a minilora Tensor, a CuPy array or a NumPy array."""
    if hasattr(t, "numpy") and not isinstance(t, np.ndarray):
        return t.numpy()
    return t if isinstance(t, (np.ndarray, np.generic)) else t.get()


# --------------------------------------------------------------------------------------------------
# Checkpoint folders (single file or sharded)
# --------------------------------------------------------------------------------------------------
def load_checkpoint(directory):
    """All tensors of a Hugging Face-style folder: ``model.safetensors``, or the shards listed in
    ``model.safetensors.index.json``."""
    directory = os.fspath(directory)
    single = os.path.join(directory, SAFE_WEIGHTS_NAME)
    index = os.path.join(directory, SAFE_WEIGHTS_INDEX_NAME)
    if os.path.isfile(single):
        return load_file(single)
    if os.path.isfile(index):
        weight_map = load_json(index).get("weight_map")
        if not isinstance(weight_map, dict):
            raise CheckpointError(f"{index}: has no 'weight_map' object")
        tensors = {}
        for shard in sorted(set(weight_map.values())):
            shard_path = os.path.join(directory, shard)
            if not os.path.isfile(shard_path):
                raise CheckpointError(f"{index} lists shard '{shard}', but {shard_path} does not exist")
            tensors.update(load_file(shard_path))
        missing = sorted(set(weight_map) - set(tensors))
        if missing:
            raise CheckpointError(f"{index}: {len(missing)} tensors listed in the index are in no "
                                  f"shard: {', '.join(missing[:8])}")
        return tensors
    found = sorted(os.listdir(directory)) if os.path.isdir(directory) else None
    if found is None:
        raise FileNotFoundError(f"checkpoint folder not found: {directory}")
    hint = " (PyTorch .bin files are pickles, which minilora never loads)" \
        if any(name.endswith(".bin") for name in found) else ""
    raise FileNotFoundError(f"no {SAFE_WEIGHTS_NAME} or {SAFE_WEIGHTS_INDEX_NAME} in {directory}"
                            f"{hint}; it holds: {', '.join(found) or 'nothing'}")
