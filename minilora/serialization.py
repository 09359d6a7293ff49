"""``minilora.save`` / ``minilora.load``: a dict of tensors to and from a safetensors file.

``torch.save`` pickles any Python object, and ``torch.load`` unpickles -- which can run arbitrary
code hidden in the file. minilora never does that: ``save`` writes only a ``{name: tensor}`` dict, in
the safetensors format (a JSON header and the raw bytes, see ``minilora/checkpoint.py``), and ``load``
reads only that format. Everything a state dict holds survives the trip: names, shapes, dtypes,
values, and -- in the file's metadata -- which tensors required grad and on which device they were.
"""
import json
import os

from .tensor import Tensor

__all__ = ["save", "load"]

_META_KEY = "minilora"  # metadata entry: {name: [device, requires_grad]} for tensors not plain cpu


# torch.save pickles a whole training checkpoint; minilora's no-pickle way to store one:
_CHECKPOINT_HINT = ("; for a training checkpoint (model, optimizer and scheduler state dicts, epoch, loss) use "
                    "minilora.train.save_training_state(path, checkpoint) and load_training_state(path)")


def _check_state(obj):
    if not isinstance(obj, dict):
        raise TypeError(f"minilora.save stores a dict of tensors (as safetensors, never pickle); "
                        f"got a {type(obj).__name__}. Wrap it: minilora.save({{'name': tensor}}, f)"
                        f"{_CHECKPOINT_HINT}")
    for name, value in obj.items():
        if not isinstance(name, str):
            raise TypeError(f"minilora.save: every key must be a str (a tensor name), got "
                            f"{name!r} ({type(name).__name__}){_CHECKPOINT_HINT}")
        if not isinstance(value, Tensor):
            raise TypeError(f"minilora.save: the value of {name!r} is a {type(value).__name__}, not a "
                            f"Tensor; safetensors files hold tensors only (minilora never pickles)"
                            f"{_CHECKPOINT_HINT}")


def _path(f, fn):
    if isinstance(f, (str, os.PathLike)):
        return os.fspath(f)
    raise TypeError(f"minilora.{fn} takes a file path (str or os.PathLike), got "
                    f"{type(f).__name__}")


def _check_destination(path):
    """As ``torch.save``: a missing parent folder is an error (a typo must not create folders), and
    a folder is not a file."""
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise FileNotFoundError(f"minilora.save: parent directory {parent} does not exist")
    if os.path.isdir(path):
        raise IsADirectoryError(f"minilora.save: {path} is a directory; pass a file path "
                                f"(e.g. {os.path.join(path, 'model.safetensors')})")


def save(obj, f):
    """Write ``obj``, a ``{name: Tensor}`` dict (a ``state_dict()``), to the path ``f`` as safetensors."""
    _check_state(obj)
    from . import checkpoint  # (imported on use: `import minilora` stays light)
    path = _path(f, "save")
    _check_destination(path)
    extra = {name: [t.device.name, bool(t.requires_grad)] for name, t in obj.items()
             if t.device.name != "cpu" or t.requires_grad}
    metadata = {"format": "pt"}
    if extra:
        metadata[_META_KEY] = json.dumps(extra)
    checkpoint.save_file({name: t.detach().numpy(force=True) for name, t in obj.items()}, path,
                         metadata=metadata)


def _refuse_pickle(path):
    from . import checkpoint
    with open(path, "rb") as file:
        magic = file.read(9)
    if _is_safetensors(magic, os.path.getsize(path)):
        return
    if magic.startswith(b"PK\x03\x04") and _is_npz(path):
        raise checkpoint.CheckpointError(
            f"{path} is a NumPy .npz archive, not a safetensors file: a training checkpoint "
            f"(minilora.train.save_training_state writes these) is read by minilora.train.load_training_state, "
            f"other .npz files by numpy.load")
    if magic.startswith(b"PK\x03\x04") or magic[:1] == b"\x80":
        kind = "a zip of pickles" if magic.startswith(b"PK") else "a pickle"
        raise checkpoint.CheckpointError(
            f"{path} looks like a torch.save file ({kind}). minilora.load reads only safetensors "
            f"files and never unpickles: unpickling can run any code the file contains. Convert it "
            f"where torch is installed: safetensors.torch.save_file(torch.load(path), "
            f"'weights.safetensors')")


def _is_safetensors(start, size):
    """A safetensors file starts with its header's length (8 bytes, little-endian) and the header's "{". Its
    first byte is 0x80, as a pickle's, whenever that length is 128 more than a multiple of 256."""
    return len(start) == 9 and start[8:9] == b"{" and int.from_bytes(start[:8], "little") <= size - 8


def _is_npz(path):
    """A zip whose every entry is a ``.npy`` array (``numpy.savez``), not torch's zip of pickles."""
    import zipfile
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return False
    return bool(names) and all(name.endswith(".npy") for name in names)


def _placements(path, text):
    """The metadata entry ``save`` wrote: ``{name: [device name, requires_grad]}``, checked."""
    from . import checkpoint
    try:
        extra = json.loads(text)
    except json.JSONDecodeError as exc:
        raise checkpoint.CheckpointError(f"{path}: metadata {_META_KEY!r} is not valid JSON ({exc})") from None
    if not isinstance(extra, dict) or not all(
            isinstance(v, list) and len(v) == 2 and isinstance(v[0], str) and isinstance(v[1], bool)
            for v in extra.values()):
        raise checkpoint.CheckpointError(f"{path}: metadata {_META_KEY!r} must map tensor names to "
                                         f"[device, requires_grad], got {text[:80]!r}")
    return extra


def _check_saved_devices(path, extra, map_location):
    """As torch.load: a tensor saved from a device this machine cannot use asks for ``map_location``."""
    from .device import device
    for name in sorted({d for d, _ in extra.values()}):
        if isinstance(map_location, dict) and _mapped(map_location, name) is not None:
            continue
        try:
            device(name)
        except (ValueError, RuntimeError) as exc:
            raise RuntimeError(f"minilora.load: {path} holds tensors saved on device {name!r}, which cannot be "
                               f"used here ({exc}); pass map_location='cpu' to load them onto the CPU") from None


def _mapped(locations, saved):
    """torch.load's dict ``map_location`` ({"cuda:0": "cpu"}): the entry for the saved device, by its name or
    (``"cuda:0"`` for minilora's ``"cuda"``) by its type; None when no entry names it."""
    for key, target in locations.items():
        if str(key) == saved or str(key).split(":")[0] == saved:
            return target
    return None


def _placed(tensor, saved, map_location):
    """Where ``map_location`` puts a tensor saved on device ``saved`` (loaded onto the CPU): a device or its
    name, a dict from saved device to device, or torch's callable ``fn(storage, location)`` -- called with
    the CPU tensor, which it returns as it is (``lambda storage, loc: storage``) or moved (``.cuda()``)."""
    if map_location is None:
        return tensor.to(saved)
    if callable(map_location) and not isinstance(map_location, str) and not hasattr(map_location, "type"):
        moved = map_location(tensor, saved)
        if not isinstance(moved, Tensor):
            raise TypeError(f"minilora.load: map_location returned a {type(moved).__name__}, not a Tensor (it is "
                            f"called as map_location(tensor, location) and must return the tensor, moved or not)")
        return moved
    if isinstance(map_location, dict):
        target = _mapped(map_location, saved)
        return tensor.to(saved if target is None else target)
    return tensor.to(map_location)


def load(f, map_location=None, pickle_module=None, *, weights_only=None, mmap=None):
    """``{name: Tensor}`` from a safetensors file, as ``save`` wrote it (or any safetensors file).

    ``map_location`` (a device or its name) puts every tensor there; torch's other forms work too: a dict from
    saved device to device (``{"cuda:0": "cpu"}``) and a callable ``fn(storage, location)`` (``lambda storage,
    loc: storage`` keeps everything on the CPU). By default each tensor goes back to the device it was saved
    from (cpu for files written by others). torch.load's other arguments: loading
    is always weights-only (``weights_only=True`` or None is what happens anyway); ``weights_only=False``,
    a ``pickle_module`` and ``mmap=True`` ask for what minilora does not do, and are refused."""
    from . import checkpoint
    if weights_only is False or pickle_module is not None:
        raise ValueError("minilora.load(weights_only=False / pickle_module=...): minilora never unpickles (it "
                         "reads safetensors files only), so loading is always weights-only")
    if mmap:
        raise NotImplementedError("minilora.load(mmap=True): minilora reads the tensors into memory; it does not "
                                  "memory-map files")
    path = _path(f, "load")
    _refuse_pickle(path)
    header, _ = checkpoint.read_header(path)
    extra = _placements(path, header.get("__metadata__", {}).get(_META_KEY, "{}"))
    if map_location is None or isinstance(map_location, dict):
        _check_saved_devices(path, extra, map_location)
    arrays = checkpoint.load_file(path)
    checkpoint.warn_non_finite(arrays, f"minilora.load({path!r})")  # torch.load says nothing
    out = {}
    for name, array in arrays.items():
        saved, requires_grad = extra.get(name, ["cpu", False])
        loaded = _placed(Tensor(array.copy(), dtype=array.dtype, device="cpu"), saved, map_location)
        out[name] = loaded.requires_grad_(requires_grad) if requires_grad else loaded
    return out
