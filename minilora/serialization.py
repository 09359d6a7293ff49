"""``minilora.save`` / ``minilora.load``: what torch.save / torch.load store, in torch.save's own format.

``torch.save`` pickles any Python object, and ``torch.load`` unpickles -- which can run arbitrary
code hidden in the file (torch 2.6+ refuses all but plain data by default: ``weights_only=True``).
minilora never runs a pickle it did not write. What torch's weights-only loader accepts (a ``state_dict()``,
the tutorial checkpoint ``{"epoch": 3, "model_state_dict": ..., "optimizer_state_dict": ..., "loss": 0.1}``)
is written in torch.save's zip format and read back, from torch's files too, by ``minilora/torch_format.py``
(a port of torch's weights-only unpickler: nothing in the file runs); torch.load reads minilora's files.

Written to a ``.safetensors`` name, or holding NumPy arrays, the object goes to a safetensors file (a JSON
header and the raw bytes, see ``minilora/checkpoint.py``): a ``{name: tensor}`` dict as a plain one that any
safetensors reader takes, anything else -- nested dicts (any str/int/float/bool/None keys), lists, tuples,
numbers, strings, None, tensors and NumPy arrays -- as its tensors and arrays (one entry each: a tensor that
appears twice, like tied weights, is stored once and loads as ONE tensor, as torch keeps it shared) plus a
JSON description of the structure in the file's metadata. Names, shapes, dtypes, values, and which tensors
required grad and on which device they were survive the trip. An object that only pickle can store
(``torch.save(model)``: a whole module) is pickled, as torch.save pickles it, and loads only with
``weights_only=False`` (minilora/pickled.py).
"""
import contextlib
import errno
import json
import os
import pickle

from . import dtypes, pickled, torch_format
from .device import Device, device
from .size import Size
from .tensor import Tensor

__all__ = ["save", "load", "add_safe_globals", "get_safe_globals", "clear_safe_globals", "safe_globals",
           "get_unsafe_globals_in_checkpoint"]

# torch.serialization's allowlist for the weights-only load (torch's error message points users to it)
add_safe_globals, get_safe_globals = torch_format.add_safe_globals, torch_format.get_safe_globals
clear_safe_globals, safe_globals = torch_format.clear_safe_globals, torch_format.safe_globals


def get_unsafe_globals_in_checkpoint(f):
    """``torch.serialization.get_unsafe_globals_in_checkpoint``: the globals of a torch.save zip file that the
    weights-only load would refuse, found without running its pickle."""
    return torch_format.unsafe_globals_in(_path(f, "serialization.get_unsafe_globals_in_checkpoint"))

_META_KEY = "minilora"  # metadata entry: {name: [device, requires_grad]} for tensors not plain cpu
_TREE_KEY = "minilora.structure"  # metadata entry: the saved object as JSON, tensors and arrays by entry name
_SHARED_KEY = "minilora.shared"  # metadata entry: {name: name of the same tensor} in a state dict
_ORDER_KEY = "minilora.order"  # metadata entry: a state dict's names in its order (safetensors sorts them)


def _is_state_dict(obj):
    """A ``{str: Tensor}`` dict: written as a plain safetensors file."""
    return isinstance(obj, dict) and all(isinstance(k, str) and isinstance(v, Tensor) for k, v in obj.items())


def _aliases(state):
    """``{name: the first name of the same tensor}`` for a tensor under several names (tied weights): every
    name is written, for safetensors readers, and on load they are one tensor again, as torch.load's."""
    first = {}
    return {name: first.setdefault(id(t), name) for name, t in state.items() if first.setdefault(id(t), name) != name}


_KEY_TYPES = (str, int, float, bool, type(None))


class _Tree:
    """An object as JSON, its tensors and arrays pulled out into ``entries`` (``{name: Tensor | ndarray}``).

    Tensors become ``{"tensor": name}``, arrays ``{"array": name}`` (one name per object: shared stays
    shared), dicts ``{"dict": [[key, value], ...]}`` (keys may be ints: an optimizer's state dict), tuples
    ``{"tuple": [...]}``; lists, numbers, strings and None are themselves (NaN and inf too: Python's json)."""

    def __init__(self):
        self.entries, self.names = {}, {}

    def encode(self, obj, where="obj"):
        import numpy as np
        if type(obj).__module__.startswith("cupy") and hasattr(obj, "get"):  # a device array (a cuda optimizer's
            obj = obj.get()  # live state): stored as its host copy; load_state_dict puts it back on the device
        if isinstance(obj, (Tensor, np.ndarray)):
            kind = "tensor" if isinstance(obj, Tensor) else "array"
            name = self.names.setdefault(id(obj), str(len(self.names)))
            self.entries[name] = obj
            return {kind: name}
        if isinstance(obj, np.generic):  # a NumPy scalar (an optimizer's step count): a 0-d array
            return self.encode(np.asarray(obj), where)
        if obj is None or isinstance(obj, (bool, int, float, str)):
            return obj
        if isinstance(obj, (list, tuple)):
            items = [self.encode(v, f"{where}[{i}]") for i, v in enumerate(obj)]
            return {"tuple": items} if isinstance(obj, tuple) else items
        if isinstance(obj, dict):
            for key in obj:
                if not isinstance(key, _KEY_TYPES):
                    raise TypeError(f"minilora.save: {where} has a key of type {type(key).__name__} ({key!r}); "
                                    f"keys must be str, int, float, bool or None")
            return {"dict": [[k, self.encode(v, f"{where}[{k!r}]")] for k, v in obj.items()]}
        raise _NeedsPickle(f"{where} is a {type(obj).__name__}")


class _NeedsPickle(TypeError):
    """An object only pickle can store (a whole Module, an object of the user's class): ``save`` pickles it."""


def _decode(node, loaded):
    if isinstance(node, list):
        return [_decode(v, loaded) for v in node]
    if not isinstance(node, dict):
        return node
    (kind, value), = node.items()
    if kind in ("tensor", "array"):
        return loaded[value] if kind == "tensor" else loaded[value].numpy(force=True)
    if kind == "tuple":
        return tuple(_decode(v, loaded) for v in value)
    if kind != "dict":
        raise ValueError(f"unknown node kind {kind!r}")
    return {k: _decode(v, loaded) for k, v in value}


def _path(f, fn):
    if isinstance(f, (str, os.PathLike)):
        return os.fspath(f)
    raise TypeError(f"minilora.{fn} takes a file path (str or os.PathLike) or a binary file object, got "
                    f"{type(f).__name__}")


def _is_file_object(f, method):
    return not isinstance(f, (str, bytes, os.PathLike)) and callable(getattr(f, method, None))


def _leave_after_the_object(stream, path, read):
    """A stream of torch < 1.6's objects, one after another (torch.save's legacy format appends): the stream is left
    where the object read ends, as torch.load leaves it, so the next load reads the next object (it was at the end:
    the next load found nothing)."""
    if torch_format.kind(path) == "legacy" and callable(getattr(stream, "seekable", None)) and stream.seekable():
        stream.seek(torch_format.legacy_end(path) - read, os.SEEK_CUR)


def _name_the_stream(exc, path, stream):
    """An error about the temporary file a stream was read into names the stream instead (its file's name, or
    "the BytesIO object"): the user never saw that file."""
    name = getattr(stream, "name", None)
    name = name if isinstance(name, str) else f"the {type(stream).__name__} object"
    exc.args = tuple(arg.replace(path, name) if isinstance(arg, str) else arg for arg in exc.args)
    if isinstance(exc, OSError):  # (an OSError's message is built from these, not from args)
        if exc.filename == path:
            exc.filename = name
        if isinstance(exc.strerror, str):
            exc.strerror = exc.strerror.replace(path, name)


# A file system that cannot take the temporary file: full, over quota, read-only, not ours
_TEMPORARY_FOLDER_ERRORS = {getattr(errno, name) for name in ("ENOSPC", "EDQUOT", "EROFS", "EACCES", "EPERM")
                            if hasattr(errno, name)}


@contextlib.contextmanager
def _through_a_temporary_file(stream, data=None, suffix=".tmp"):
    """A path in the temporary folder standing for the file object ``stream`` (holding ``data`` if given),
    removed afterwards whatever happens (a full folder kept the part written of a load's data, on the disk that
    was full). An error about the file names the stream; one of the folder's says which folder it is."""
    import tempfile
    path = None
    try:
        fd, path = tempfile.mkstemp(suffix=suffix)
        with os.fdopen(fd, "wb") as file:
            if data is not None:
                file.write(data)
        yield path
    except Exception as exc:
        if isinstance(exc, OSError) and exc.errno in _TEMPORARY_FOLDER_ERRORS:
            exc.strerror = (f"{os.strerror(exc.errno)} in the temporary folder {tempfile.gettempdir()}, which "
                            f"minilora passes a file object's bytes through (free space there, or set TMPDIR)")
        if path is not None:
            _name_the_stream(exc, path, stream)
        raise
    finally:
        if path is not None:
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)


def _check_destination(path):
    """As ``torch.save``: a missing parent folder is an error (a typo must not create folders), and
    a folder is not a file."""
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise FileNotFoundError(f"minilora.save: parent directory {parent} does not exist")
    if os.path.isdir(path):
        raise IsADirectoryError(f"minilora.save: {path} is a directory; pass a file path "
                                f"(e.g. {os.path.join(path, 'model.safetensors')})")


def save(obj, f, pickle_module=None, pickle_protocol=2, _use_new_zipfile_serialization=True,
         _disable_byteorder_record=False):
    """Write ``obj`` to ``f`` (a path, or a binary file object as torch.save takes): what torch's weights-only
    loader takes (tensors, Parameters, dicts, lists, tuples, numbers, strings, dtypes, torch.Size ...) in
    torch.save's own zip format, which torch.load reads (``minilora/torch_format.py``; tensors sharing memory
    share a storage); to a path ending in ``.safetensors``, in that format (module docstring). An object
    holding NumPy arrays goes to safetensors with its structure in the metadata, and anything else
    (``torch.save(model)``: a whole module) is pickled, as torch pickles it (``minilora/pickled.py``). Written
    atomically: a crash leaves the old file."""
    if pickle_module is not None and pickle_module is not pickle:
        raise ValueError(f"minilora.save(pickle_module={getattr(pickle_module, '__name__', pickle_module)}): "
                         "minilora pickles with Python's pickle module only")
    if not _use_new_zipfile_serialization:
        raise NotImplementedError("minilora.save(_use_new_zipfile_serialization=False): minilora writes torch's zip "
                                  "format (torch >= 1.6 reads it); torch < 1.6's format is read, not written")
    byteorder = not _disable_byteorder_record
    if _is_file_object(f, "write"):
        with _through_a_temporary_file(f, suffix=".pt") as path:
            _save(obj, path, pickle_protocol, "archive", byteorder)  # (torch's name for a file object's archive)
            with open(path, "rb") as file:
                f.write(file.read())
        return
    path = _path(f, "save")
    archive_name = None if path.endswith(".safetensors") else _archive_name(path)  # (a zip archive's only)
    _save(obj, path, pickle_protocol, archive_name, byteorder)


def _archive_name(path):
    """The folder torch.save's zip archive holds its records in: the file's name without its last extension
    (``model.v2.pt``: ``model.v2``, PyTorchStreamWriter's basename; "/" and "\\" both end a folder). A path that is
    not ASCII (``données.pt``, a name with undecodable bytes) torch writes through a Python stream, which names it
    "archive". An ASCII name with nothing before its last dot (``.pt``, ``.hidden``, ``dir/.x``) leaves no name, and
    torch refuses it before writing anything (its RuntimeError: minilora wrote the archive as "archive/")."""
    if not path.isascii():
        return "archive"
    name = path.replace("\\", "/").rsplit("/", 1)[-1]
    stem = name.rsplit(".", 1)[0] if "." in name else name
    if not stem:
        raise RuntimeError(f"invalid file name: {path} (torch.save names the archive inside after the file's name "
                           "without its extension, and this name has none before its last dot)")
    return stem


def _save(obj, path, pickle_protocol, archive_name, byteorder=True):
    from . import checkpoint  # (imported on use: `import minilora` stays light)
    if not path.endswith(".safetensors"):
        _check_destination(path)
        try:
            with checkpoint.atomic_write(path, "wb") as file:
                torch_format.write_zip(obj, file, archive_name, _tensor_parts, Size, Device, byteorder)
            return
        except torch_format.NotTorchData:
            pass  # (nothing was written) a NumPy array or a module: safetensors with a structure, or a pickle
    metadata = {"format": "pt"}
    if _is_state_dict(obj):
        entries = obj
        metadata[_ORDER_KEY] = json.dumps(list(obj))
        if _aliases(obj):
            metadata[_SHARED_KEY] = json.dumps(_aliases(obj))
    else:
        tree = _Tree()
        try:
            metadata[_TREE_KEY] = json.dumps(tree.encode(obj))
        except _NeedsPickle:
            _check_destination(path)
            return pickled.save(obj, path, pickle_protocol)
        entries = tree.entries
    _check_destination(path)
    tensors = {name: t for name, t in entries.items() if isinstance(t, Tensor)}
    extra = {name: [t.device.name, bool(t.requires_grad)] for name, t in tensors.items()
             if t.device.name != "cpu" or t.requires_grad}
    if extra:
        metadata[_META_KEY] = json.dumps(extra)
    checkpoint.save_file({name: t.detach().numpy(force=True) if isinstance(t, Tensor) else t
                          for name, t in entries.items()}, path, metadata=metadata)


def _tensor_parts(obj):
    """What torch_format writes of a tensor (None for anything else): its values (the array itself on the CPU,
    so tensors viewing one array share a storage), requires_grad, torch's location and whether it is a
    Parameter."""
    if not isinstance(obj, Tensor):
        return None
    from .nn.module import Parameter
    values = obj._array if obj.is_meta else obj.detach().numpy(force=True)  # (meta: its shape and dtype only)
    return torch_format.TensorParts(values, bool(obj.requires_grad), obj.device.name, isinstance(obj, Parameter))


class _TensorBuilders(torch_format.Builders):
    """A torch file's tensors as minilora Tensors (views of their storage's array: shared storages share
    memory) placed where ``map_location`` says, Parameters as nn.Parameter."""

    size, device = Size, staticmethod(device)

    def __init__(self, path, map_location):
        self.path, self.map_location, self.checked = path, map_location, set()

    def tensor(self, array, requires_grad, location):
        if location not in self.checked and (self.map_location is None or isinstance(self.map_location, dict)):
            _check_saved_devices(self.path, {"": [location, False]}, self.map_location)
            self.checked.add(location)
        array = dtypes.canonical(array)
        tensor = _placed(Tensor(array, dtype=array.dtype, device="cpu"), location, self.map_location)
        return tensor.requires_grad_(True) if requires_grad else tensor

    def parameter(self, tensor, requires_grad):
        from .nn.module import Parameter
        if not isinstance(tensor, Tensor):
            raise pickle.UnpicklingError(f"_rebuild_parameter got a {type(tensor).__name__}, not a tensor")
        return Parameter(tensor.detach(), requires_grad=requires_grad)


def _load_torch_file(path, map_location, weights_only, mmap):
    """A file torch.save wrote (or minilora.save): rebuilt by the weights-only reader, never unpickled."""
    try:
        return torch_format.read(path, _TensorBuilders(path, map_location), mmap=bool(mmap))
    except torch_format.NotRebuilt as exc:
        raise torch_format.NotRebuilt(f"minilora.load({path!r}): {exc}") from None
    except pickle.UnpicklingError as exc:
        if weights_only is not False:
            raise
        raise pickle.UnpicklingError(
            f"minilora.load({path!r}, weights_only=False): the file holds objects only an unrestricted unpickler "
            f"rebuilds, and minilora never runs a torch.save file's pickle (it can run any code, and rebuilds "
            f"torch's own classes). Save the state_dict() instead of the object. The weights-only reader "
            f"said:\n{exc}") from None


def _refuse_pickle(path):
    """A file that is no torch.save zip and no safetensors file: a pickle minilora did not write, or another kind
    of file (JSON, text, a Git LFS pointer: ``checkpoint.read_header`` names those), refused by what it is."""
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
    kind = checkpoint.other_format(magic)
    if kind is not None and "pickle" in kind:  # (other kinds: read_header names them)
        raise checkpoint.CheckpointError(
            f"{path} is {kind}, but not in torch.save's format: minilora.load reads torch.save's files (as "
            f"torch.load(weights_only=True) does), safetensors files and its own pickles (minilora.save(model)), "
            f"and never runs another pickle: unpickling can run any code the file contains")


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
    except (zipfile.BadZipFile, OSError, NotImplementedError):
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
    """What ``save`` or ``torch.save`` wrote (a path or a binary file object): ``{name: Tensor}`` from a plain
    safetensors file (any safetensors file), the saved object itself otherwise.

    ``map_location`` (a device or its name) puts every tensor there; torch's other forms work too: a dict from
    saved device to device (``{"cuda:0": "cpu"}``) and a callable ``fn(storage, location)`` (``lambda storage,
    loc: storage`` keeps everything on the CPU). By default each tensor goes back to the device it was saved
    from (cpu for files written by others). A file torch.save wrote (zip, or torch < 1.6's format) is read as
    torch.load(weights_only=True) reads it, never unpickled (``minilora/torch_format.py``): anything but tensors
    and plain data is refused in torch's words, with ``weights_only=False`` too. ``mmap=True`` maps a zip
    file's storages (copy-on-write). Loading is weights-only by default, as torch 2.6+'s: a pickled object
    (``save``'s whole module) loads only with ``weights_only=False`` (torch's UnpicklingError and words
    otherwise). A ``pickle_module`` other than Python's is refused."""
    from . import checkpoint
    if pickle_module is not None and pickle_module is not pickle:
        raise ValueError("minilora.load(pickle_module=...): minilora unpickles its own files with Python's pickle "
                         "module only")
    if _is_file_object(f, "read"):
        if mmap:
            raise ValueError("f must be a file path in order to use the mmap argument")
        data = f.read()
        with _through_a_temporary_file(f, data) as path:
            loaded = load(path, map_location, weights_only=weights_only)
            _leave_after_the_object(f, path, len(data))
            return loaded
    path = _path(f, "load")
    if pickled.is_pickled(path):
        return pickled.load(path, weights_only is False, lambda t, saved: _placed(t, saved, map_location))
    if torch_format.kind(path) is not None:
        return _load_torch_file(path, map_location, weights_only, mmap)
    if mmap:
        raise NotImplementedError("minilora.load(mmap=True): memory-maps torch.save's zip files only; this one "
                                  "is read into memory")
    _refuse_pickle(path)
    header, _ = checkpoint.read_header(path)
    extra = _placements(path, header.get("__metadata__", {}).get(_META_KEY, "{}"))
    structure = header.get("__metadata__", {}).get(_TREE_KEY)
    if map_location is None or isinstance(map_location, dict):
        _check_saved_devices(path, extra, map_location)
    arrays = checkpoint.load_file(path)
    checkpoint.warn_non_finite(arrays, f"minilora.load({path!r})")  # torch.load says nothing
    shared, order = _shared_and_order(path, header, arrays)
    out = {}
    for name, array in arrays.items():
        saved, requires_grad = extra.get(name, ["cpu", False])
        loaded = _placed(Tensor(array.copy(), dtype=array.dtype, device="cpu"), saved, map_location)
        if requires_grad and not (loaded.is_floating_point() or array.dtype.kind == "c"):
            raise checkpoint.CheckpointError(f"{path}: corrupted: tensor {name!r} was saved requiring grad, which "
                                             f"only floating-point tensors can, but the file holds it as {array.dtype}")
        out[name] = loaded.requires_grad_(requires_grad) if requires_grad else loaded
    for name, first in shared.items():
        out[name] = out[first]  # tied when saved: one tensor again
    if order is not None:  # the state dict's own order, as torch.load gives it back
        out = {name: out[name] for name in order}
    return out if structure is None else _decoded(path, structure, out)


def _metadata_json(path, header, key, default):
    """A metadata entry ``save`` wrote as JSON text, parsed; one that does not parse names the file."""
    from . import checkpoint
    text = header.get("__metadata__", {}).get(key)
    if text is None:
        return default
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise checkpoint.CheckpointError(f"{path}: metadata {key!r} is not valid JSON ({exc})") from None


def _shared_and_order(path, header, arrays):
    """The tied names (``{name: first name}``) and the state dict's order ``save`` recorded, checked against
    the tensors the file holds: a file whose tensors are not the ones its own metadata lists (a name
    changed, a tensor added or dropped) has been altered or corrupted since ``save`` wrote it."""
    from . import checkpoint
    shared = _metadata_json(path, header, _SHARED_KEY, {})
    order = _metadata_json(path, header, _ORDER_KEY, _ABSENT)
    if not isinstance(shared, dict) or not all(isinstance(n, str) and isinstance(f, str) and f in arrays
                                               for n, f in shared.items()):
        raise checkpoint.CheckpointError(f"{path}: metadata {_SHARED_KEY!r} must map names to names of tensors "
                                         f"in the file, got {str(shared)[:120]}")
    if order is not _ABSENT and (not isinstance(order, list) or sorted(map(str, order)) != sorted({*arrays, *shared})
                              or len(set(map(str, order))) != len(order)):
        held = sorted({*arrays, *shared})
        raise checkpoint.CheckpointError(f"{path}: corrupted: metadata {_ORDER_KEY!r} lists {str(order)[:200]}, "
                                         f"but the file holds {str(held)[:200]}")
    return shared, None if order is _ABSENT else order


_ABSENT = object()


def _decoded(path, structure, loaded):
    """The saved object from its JSON description; one that does not fit the file's tensors names the file."""
    from . import checkpoint
    try:
        return _decode(json.loads(structure), loaded)
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
        raise checkpoint.CheckpointError(f"{path}: corrupted: metadata {_TREE_KEY!r} does not describe the "
                                         f"file's tensors ({type(exc).__name__}: {exc})") from None
