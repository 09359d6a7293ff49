"""torch.save's file format, read as ``torch.load(weights_only=True)`` reads it (no torch, no code run), and written.

torch >= 1.6 writes a zip archive: ``<name>/data.pkl`` (a protocol-2 pickle of the object, each tensor a call of
``torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks)``, each storage a
persistent id ``('storage', torch.FloatStorage, key, location, numel)``), ``<name>/data/<key>`` (each storage's
raw bytes), ``<name>/byteorder`` and ``<name>/version``. Older torch wrote one stream ("legacy"): a magic number,
a protocol number, system info, the object's pickle, the list of storage keys, then each storage (its element
count as an int64, then its bytes).

The pickle is never run by Python's unpickler. ``_WeightsOnlyUnpickler`` is a port of torch's
``torch/_weights_only_unpickler.py``: the same opcodes, the same allowed globals (tensor and parameter rebuilds,
storages of each dtype, OrderedDict, Counter, torch.Size, torch.device, dtypes, set, complex, bytes and
bytearray), each resolved to minilora's own stand-in, and anything else refused in torch's words ("Unsupported
global: GLOBAL x.y was not an allowed global by default"). What a rebuilt tensor becomes is up to the caller
(``Builders``): NumPy arrays here (checkpoint folders' ``pytorch_model.bin``), minilora Tensors and Parameters in
``minilora.serialization``. Tensors that share a storage come back as views of one buffer (they share memory).

``write_zip`` writes the same archive, so torch.load reads what ``minilora.save`` wrote (shared storages kept).
"""
import _compat_pickle
import codecs
import io
import mmap
import os
import pickle
import pickletools
import re
import struct
import zipfile
from collections import Counter, OrderedDict

import numpy as np

from . import dtypes
from .device import unwritten_zeros

__all__ = ["Builders", "kind", "read", "write_zip", "weights_only_message", "unsupported_global", "NotTorchData",
           "NotRebuilt", "TensorParts"]

_LEGACY_MAGIC = 0x1950a86a20f9469cfc6c
_LEGACY_PROTOCOL = 1001
_LEGACY_START = b"\x80\x02\x8a\nl\xfc\x9cF\xf9 j\xa8P\x19."  # the magic number, pickled: a legacy file's first bytes
_ALIGNMENT = 64  # torch aligns each storage's bytes in the zip to 64 (``.storage_alignment``'s default)

UNSAFE_MESSAGE = ("In PyTorch 2.6, we changed the default value of the `weights_only` argument in `torch.load` from "
                  "`False` to `True`. Re-running `torch.load` with `weights_only` set to `False` will likely succeed, "
                  "but it can result in arbitrary code execution. Do it only if you got the file from a trusted "
                  "source.")
_DOCS_MESSAGE = ("\n\nCheck the documentation of torch.load to learn more about types accepted by default with "
                 "weights_only https://pytorch.org/docs/stable/generated/torch.load.html.")


def weights_only_message(message):
    """torch.load's wording around its weights-only unpickler's ``message`` (torch.serialization's
    ``_get_wo_message``)."""
    if re.search(r"GLOBAL (\S+) was not an allowed global by default.", message):
        return ("Weights only load failed. This file can still be loaded, to do so you have two options, "
                "\033[1mdo those steps only if you trust the source of the checkpoint\033[0m. "
                f"\n\t(1) {UNSAFE_MESSAGE}\n\t(2) Alternatively, to load with `weights_only=True` please check "
                "the recommended steps in the following error message.\n\tWeightsUnpickler error: "
                + message + _DOCS_MESSAGE)
    updated = f"Weights only load failed. {UNSAFE_MESSAGE}\n"
    if not re.search(r"whose module (\S+) is blocked", message):
        updated += ("Please file an issue with the following so that we can make `weights_only=True` compatible "
                    "with your use case: WeightsUnpickler error: ")
    return updated + "\n\n" + message + _DOCS_MESSAGE


def unsupported_global(shown):
    """The weights-only unpickler's words for a global it does not allow (``shown``: builtins without a module)."""
    return (f"Unsupported global: GLOBAL {shown} was not an allowed global by default. Please use "
            f"`torch.serialization.add_safe_globals([{shown}])` or the `torch.serialization.safe_globals([{shown}])` "
            "context manager to allowlist this global if you trust this class/function.")


# --------------------------------------------------------------------------------------------------
# What the allowed globals become
# --------------------------------------------------------------------------------------------------
class Builders:
    """What a rebuilt tensor, Parameter, torch.Size and torch.device are: by default a NumPy array (a view of its
    storage), the array, a tuple and the location string. ``serialization`` makes them minilora's objects."""

    def tensor(self, array, requires_grad, location):
        return array

    def parameter(self, tensor, requires_grad):
        return tensor

    size = staticmethod(tuple)
    device = staticmethod(str)


class _Storage:
    """One storage: its raw bytes (a 1-d uint8 array: read, or memory-mapped) and where it was saved."""

    def __init__(self, data, dtype, location, big_endian):
        self.data, self.dtype, self.location, self.big_endian = data, dtype, location, big_endian
        self._typed = {}

    def typed(self, dtype):
        """The bytes as a 1-d array of ``dtype``: one array per dtype, so views of it share memory."""
        if dtype not in self._typed:
            if len(self.data) % dtype.itemsize:
                raise pickle.UnpicklingError(f"storage of {len(self.data)} bytes does not hold whole {dtype} values")
            view = self.data.view(dtype)
            self._typed[dtype] = view.view(dtype.newbyteorder(">")).astype(dtype) if self.big_endian else view
        return self._typed[dtype]


class _StorageType:
    """``torch.FloatStorage`` and its kin (a typed storage: numel counts elements) or ``torch.storage.UntypedStorage``
    (numel counts bytes; ``_rebuild_tensor_v3`` names the dtype)."""

    def __init__(self, dtype):
        self.dtype = dtype


class NotRebuilt(pickle.UnpicklingError):
    """What torch's weights-only loader takes but minilora does not rebuild (a sparse or quantized tensor): said
    so, not in torch's words for a refused global."""


class _Marker:
    """An allowed global minilora rebuilds itself: ``torch.Tensor``, ``torch.nn.Parameter``."""

    def __init__(self, name):
        self.name = name

    def __repr__(self):
        return self.name


_TENSOR, _PARAMETER = _Marker("torch.Tensor"), _Marker("torch.nn.parameter.Parameter")

# torch's dtype names minilora holds (``torch.float32`` in a pickle is a dtype value)
_DTYPE_NAMES = ["float16", "bfloat16", "float32", "float64", "complex64", "complex128", "bool", "uint8", "int8",
                "int16", "int32", "int64", "uint16", "uint32", "uint64"]
# globals torch's weights-only loader allows that minilora does not rebuild (sparse, quantized, nested, meta and
# subclass tensors, legacy tensor classes, dtypes NumPy has not): refused, saying so
_ALLOWED_NOT_REBUILT = re.compile(
    r"torch\.(_utils\._rebuild_\w+|per_(tensor|channel)_\w+|float8_\w+|float4_\w+|complex32|q?u?int\d+(x\d+)?|"
    r"bits\w+|(cuda\.)?\w*Tensor|(cuda\.)?\w*Storage|storage\.TypedStorage|serialization\._get_layout)")


class _Lazy:
    """An allowed global made when a pickle names it: bfloat16's dtype imports ml_dtypes (~0.7 s, dtypes.py),
    which reading a float32 file should not pay."""

    def __init__(self, make):
        self.make = make


class _AllowedGlobals(dict):
    """``{name: value}`` of the allowed globals, a ``_Lazy`` value made on its first lookup."""

    def __getitem__(self, name):
        value = super().__getitem__(name)
        if type(value) is _Lazy:
            value = self[name] = value.make()
        return value


def _dtype_value(dtype_name, make=lambda dtype: dtype):
    """``make(dtype)`` for the dtype named ``dtype_name``; for bfloat16 a ``_Lazy`` making it on first use."""
    if dtype_name == "bfloat16":
        return _Lazy(lambda: make(dtypes.to_dtype(dtype_name)))
    return make(dtypes.to_dtype(dtype_name))


def _storage_types():
    """torch's typed storage classes (``torch.FloatStorage`` ...) for the dtypes that have one."""
    types = {f"torch.{dtypes._TORCH_NAMES[n]}Storage": _dtype_value(n, _StorageType)
             for n in _DTYPE_NAMES if n in dtypes._TORCH_NAMES and _has(n)}
    types["torch.storage.UntypedStorage"] = _StorageType(np.dtype(np.uint8))
    return types


def _has(dtype_name):
    if dtype_name == "bfloat16":
        return dtypes.HAS_BFLOAT16  # (whether ml_dtypes is installed, asked without importing it)
    try:
        dtypes.to_dtype(dtype_name)
    except Exception:
        return False
    return True


def _allowed_globals(builders):
    allowed = {"collections.OrderedDict": OrderedDict, "collections.Counter": Counter,
               "torch.nn.parameter.Parameter": _PARAMETER, "torch.Tensor": _TENSOR,
               "torch.Size": builders.size, "torch.device": builders.device,
               "_codecs.encode": codecs.encode, "builtins.bytearray": bytearray, "builtins.set": set,
               "builtins.complex": complex}
    allowed.update({f"torch.{name}": _dtype_value(name) for name in _DTYPE_NAMES if _has(name)})
    allowed.update(_storage_types())
    rebuild = _Rebuilds(builders)
    allowed.update({"torch._utils._rebuild_tensor": rebuild.tensor,
                    "torch._utils._rebuild_tensor_v2": rebuild.tensor_v2,
                    "torch._utils._rebuild_tensor_v3": rebuild.tensor_v3,
                    "torch._utils._rebuild_parameter": rebuild.parameter,
                    "torch._utils._rebuild_parameter_with_state": rebuild.parameter_with_state,
                    "torch._utils._rebuild_meta_tensor_no_storage": rebuild.meta_tensor,
                    "torch._tensor._rebuild_from_type_v2": rebuild.from_type_v2})
    return _AllowedGlobals(allowed)


def _strided(flat, offset, size, stride):
    """torch's ``tensor.set_(storage, offset, size, stride)``: a view of the 1-d ``flat``, bounds checked."""
    if not (isinstance(offset, int) and all(isinstance(n, int) for n in (*size, *stride)) and len(size) == len(stride)):
        raise pickle.UnpicklingError(f"tensor rebuild with offset {offset!r}, size {size!r}, stride {stride!r}")
    if offset < 0 or any(n < 0 for n in size) or any(s < 0 for s in stride):
        raise RuntimeError(f"setStorage: negative offset, size or stride (offset {offset}, sizes {list(size)}, "
                           f"strides {list(stride)})")
    needed = 0 if 0 in size else offset + 1 + sum((n - 1) * s for n, s in zip(size, stride))
    itemsize = flat.dtype.itemsize
    if needed > len(flat):
        raise RuntimeError(f"setStorage: sizes {list(size)}, strides {list(stride)}, storage offset {offset}, and "
                           f"itemsize {itemsize} requiring a storage size of {needed * itemsize} are out of bounds "
                           f"for storage of size {len(flat) * itemsize}")
    base = flat[min(offset, len(flat)):]
    return np.lib.stride_tricks.as_strided(base, shape=tuple(size), strides=tuple(s * itemsize for s in stride))


class _Rebuilds:
    """torch._utils' rebuild functions, building what ``builders`` says."""

    def __init__(self, builders):
        self.builders = builders

    def _tensor(self, storage, dtype, offset, size, stride, requires_grad):
        if not isinstance(storage, _Storage):
            raise pickle.UnpicklingError(f"a tensor rebuild got {type(storage).__name__} where a storage belongs")
        array = _strided(storage.typed(dtype), offset, tuple(size), tuple(stride))
        return self.builders.tensor(array, bool(requires_grad), storage.location)

    def tensor(self, storage, offset, size, stride):
        return self._tensor(storage, storage.dtype, offset, size, stride, False)

    def tensor_v2(self, storage, offset, size, stride, requires_grad, backward_hooks, metadata=None):
        return self._tensor(storage, storage.dtype, offset, size, stride, requires_grad)

    def tensor_v3(self, storage, offset, size, stride, requires_grad, backward_hooks, dtype, metadata=None):
        if not isinstance(dtype, np.dtype):
            raise pickle.UnpicklingError(f"_rebuild_tensor_v3 got dtype {dtype!r}")
        return self._tensor(storage, dtype, offset, size, stride, requires_grad)

    def meta_tensor(self, dtype, size, stride, requires_grad):
        """A meta tensor: torch saves its dtype, size and strides, and no storage (there are no values)."""
        if not isinstance(dtype, np.dtype) or not all(isinstance(n, int) and n >= 0 for n in size):
            raise pickle.UnpicklingError(f"_rebuild_meta_tensor_no_storage got dtype {dtype!r}, size {size!r}")
        return self.builders.tensor(unwritten_zeros(tuple(size), dtype), bool(requires_grad), "meta")

    def parameter(self, data, requires_grad, backward_hooks):
        return self.builders.parameter(data, bool(requires_grad))

    def parameter_with_state(self, data, requires_grad, backward_hooks, state):
        return _with_state(self.builders.parameter(data, bool(requires_grad)), state)

    def from_type_v2(self, func, new_type, args, state):
        """A tensor pickled with Python attributes or as a subclass: ``func(*args)``, as ``new_type``."""
        if new_type not in (_TENSOR, _PARAMETER) or not callable(func):
            raise NotRebuilt(f"_rebuild_from_type_v2 of {new_type!r}: minilora rebuilds plain tensors and "
                             "Parameters only")
        result = func(*args)
        if new_type is _PARAMETER and func is not self.parameter and func is not self.parameter_with_state:
            result = self.builders.parameter(result, True)
        return _with_state(result, state)


def _with_state(tensor, state):
    """A rebuilt tensor given the Python attributes it was saved with (torch's ``_set_obj_state``): minilora's
    tensors hold none (their class has slots only), so a tensor saved with some is refused by name."""
    names = [*(state[0] or {}), *(state[1] or {})] if isinstance(state, tuple) and len(state) == 2 else \
        list(state or {})
    if names:
        raise NotRebuilt(f"a tensor saved with Python attributes {names}: minilora's tensors hold no attributes of "
                         "their own (save the tensor without them)")
    return tensor


# --------------------------------------------------------------------------------------------------
# The weights-only unpickler: torch/_weights_only_unpickler.py's opcodes, minilora's globals
# --------------------------------------------------------------------------------------------------
_BLOCKLISTED_MODULES = ("sys", "os", "posix", "nt")
_OP = {name: getattr(pickle, name)[0] for name in (
    "GLOBAL", "NEWOBJ", "REDUCE", "BUILD", "APPEND", "APPENDS", "SETITEM", "SETITEMS", "MARK", "TUPLE", "TUPLE1",
    "TUPLE2", "TUPLE3", "NONE", "NEWFALSE", "NEWTRUE", "EMPTY_TUPLE", "EMPTY_LIST", "EMPTY_DICT", "EMPTY_SET",
    "BININT", "BININT1", "BININT2", "BINFLOAT", "BINUNICODE", "SHORT_BINSTRING", "BINPERSID", "BINGET",
    "LONG_BINGET", "BINPUT", "LONG_BINPUT", "LONG1", "PROTO", "STOP")}


_USER_GLOBALS = []  # torch.serialization.add_safe_globals' list: objects, or (object, "module.name") pairs


def add_safe_globals(safe_globals):
    """``torch.serialization.add_safe_globals``: let the weights-only load rebuild these classes and call these
    functions (the user's, who trusts them), as torch's error message suggests."""
    _USER_GLOBALS.extend(safe_globals)


def get_safe_globals():
    return list(_USER_GLOBALS)


def clear_safe_globals():
    _USER_GLOBALS.clear()


class safe_globals:  # noqa: N801 (torch's name)
    """``with torch.serialization.safe_globals([Config]):`` -- ``add_safe_globals`` for the block only."""

    def __init__(self, safe_globals):
        self.safe_globals = list(safe_globals)

    def __enter__(self):
        self.before = list(_USER_GLOBALS)
        add_safe_globals(self.safe_globals)

    def __exit__(self, *exc):
        _USER_GLOBALS[:] = self.before


def user_globals():
    """``{"module.qualname": object}`` of add_safe_globals' entries (a pair names its object itself)."""
    named = {}
    for entry in _USER_GLOBALS:
        obj, name = entry if isinstance(entry, tuple) else (entry, f"{entry.__module__}.{entry.__qualname__}")
        named[name] = obj
    return named


def _set_state(inst, state):
    """pickle's BUILD for an allowlisted class: ``__setstate__``, else the instance dict and slots."""
    setstate = getattr(inst, "__setstate__", None)
    if setstate is not None:
        setstate(state)
        return
    slotstate = None
    if isinstance(state, tuple) and len(state) == 2:
        state, slotstate = state
    if state:
        inst.__dict__.update(state)
    for key, value in (slotstate or {}).items():
        setattr(inst, key, value)


def unsafe_globals_in(path):
    """``torch.serialization.get_unsafe_globals_in_checkpoint``: the globals a zip file's pickle names that the
    weights-only load would refuse (neither allowed by default nor by add_safe_globals), read without running
    anything."""
    if kind(path) != "zip":
        raise ValueError(f"{path}: get_unsafe_globals_in_checkpoint reads torch.save's zip format only")
    archive = _Archive(path, False)
    with archive.zip:
        ops = pickletools.genops(io.BytesIO(archive.record("data.pkl")))
        names = {".".join(_global_name(*arg.split(" ", 1))) for op, arg, _ in ops if op.name == "GLOBAL"}
    return sorted(names - set(_allowed_globals(Builders())) - set(user_globals()))


def _global_name(module, name):
    """A pickle GLOBAL's module and name, Python 2's mapped as Python 3's unpickler maps them (torch.save's
    protocol 2 spells builtins __builtin__)."""
    if (module, name) in _compat_pickle.NAME_MAPPING:
        return _compat_pickle.NAME_MAPPING[(module, name)]
    return _compat_pickle.IMPORT_MAPPING.get(module, module), name


class _WeightsOnlyUnpickler:
    """torch's ``_weights_only_unpickler.Unpickler``: runs only the opcodes and calls only the functions that
    rebuild tensors and plain containers. ``persistent_load(pid)`` gives a storage."""

    def __init__(self, file, allowed, persistent_load):
        self.read, self.readline = file.read, file.readline
        self.allowed, self.persistent_load = allowed, persistent_load
        self.user = user_globals()  # (add_safe_globals': the user's own classes and functions)
        self._callables = [v for v in (*allowed.values(), *self.user.values())
                           if callable(v) and not isinstance(v, np.dtype)]
        self.memo = {}

    def load(self):
        self.metastack, self.stack = [], []
        while True:
            key = self.read(1)
            if not key:
                raise EOFError("the pickle ends before its STOP opcode (a truncated file?)")
            if key[0] == _OP["STOP"]:
                return self.stack.pop()
            self._step(key[0])

    def _global(self):
        module, name = _global_name(self.readline()[:-1].decode("utf-8"), self.readline()[:-1].decode("utf-8"))
        full = f"{module}.{name}"
        if module in _BLOCKLISTED_MODULES:
            raise pickle.UnpicklingError(f"Trying to load unsupported GLOBAL {full} whose module {module} is blocked.")
        if full in self.allowed:
            return self.allowed[full]
        if full in self.user:
            return self.user[full]
        if _ALLOWED_NOT_REBUILT.fullmatch(full):
            raise NotRebuilt(f"GLOBAL {full}: torch's weights-only loader allows it, but minilora does not rebuild "
                             "it (minilora reads dense tensors of NumPy's dtypes and bfloat16: no sparse, quantized, "
                             "nested, meta or float8 tensors)")
        raise pickle.UnpicklingError(unsupported_global(full[len("builtins."):] if full.startswith("builtins.")
                                                        else full))

    def _call(self, func, args):
        if func is _PARAMETER:  # nn.Parameter(data, requires_grad=True)
            data, requires_grad = (tuple(args) + (True,))[:2]
            return self._call(self.allowed["torch._utils._rebuild_parameter"], (data, requires_grad, OrderedDict()))
        if not any(func is allowed for allowed in self._callables):
            raise pickle.UnpicklingError(f"Trying to call reduce for unrecognized function {func}")
        return func(*args)

    def _build(self, state):
        inst = self.stack[-1]
        if type(inst) is OrderedDict:  # a state_dict's ``_metadata``
            if not isinstance(state, dict):
                raise pickle.UnpicklingError(f"BUILD of an OrderedDict with {type(state).__name__} state")
            inst.__dict__.update(state)
        elif any(type(inst) is allowed for allowed in self.user.values()):
            _set_state(inst, state)
        else:
            raise pickle.UnpicklingError(f"Can only build Tensor, Parameter, OrderedDict or types allowlisted via "
                                         f"`add_safe_globals`, but got {type(inst)}")

    def _pop_mark(self):
        items, self.stack = self.stack, self.metastack.pop()
        return items

    def _target(self, opcode):
        if type(self.stack[-1]) not in (dict, OrderedDict, Counter):
            raise pickle.UnpicklingError(f"Can only {opcode} for dict, collections.OrderedDict, collections.Counter, "
                                         f"but got {type(self.stack[-1])}")
        return self.stack[-1]

    def _step(self, op):  # noqa: C901 (one branch per opcode, as torch's)
        stack, read = self.stack, self.read
        if op == _OP["GLOBAL"]:
            stack.append(self._global())
        elif op == _OP["NEWOBJ"]:
            args, cls = stack.pop(), stack.pop()
            if isinstance(cls, type) and any(cls is allowed for allowed in self.user.values()):
                stack.append(cls.__new__(cls, *args))
            elif cls is not _PARAMETER:
                raise pickle.UnpicklingError(f"Can only create new object for nn.Parameter or classes allowlisted "
                                             f"via `add_safe_globals` but got {cls}")
            else:
                stack.append(self._call(cls, args))
        elif op == _OP["REDUCE"]:
            args = stack.pop()
            stack[-1] = self._call(stack[-1], args)
        elif op == _OP["BUILD"]:
            self._build(stack.pop())
        elif op == _OP["APPEND"]:
            item = stack.pop()
            self._list("append").append(item)
        elif op == _OP["APPENDS"]:
            items = self._pop_mark()
            self._list("extend").extend(items)
        elif op == _OP["SETITEM"]:
            value, key = stack.pop(), stack.pop()
            self._target("SETITEM")[key] = value
        elif op == _OP["SETITEMS"]:
            items = self._pop_mark()
            target = self._target("SETITEMS")
            for i in range(0, len(items) - 1, 2):
                target[items[i]] = items[i + 1]
        elif op == _OP["MARK"]:
            self.metastack.append(self.stack)
            self.stack = []
        elif op == _OP["TUPLE"]:
            items = self._pop_mark()  # (before self.stack is looked up: it is the list below the mark)
            self.stack.append(tuple(items))
        elif op in (_OP["TUPLE1"], _OP["TUPLE2"], _OP["TUPLE3"]):
            n = {_OP["TUPLE1"]: 1, _OP["TUPLE2"]: 2, _OP["TUPLE3"]: 3}[op]
            if len(stack) < n:
                raise pickle.UnpicklingError("tuple of more items than the stack holds (a corrupted pickle)")
            stack[-n:] = [tuple(stack[-n:])]
        elif op in _CONSTANTS:
            stack.append(_CONSTANTS[op]())
        elif op == _OP["BININT"]:
            stack.append(struct.unpack("<i", self._exactly(4))[0])
        elif op == _OP["BININT1"]:
            stack.append(self._exactly(1)[0])
        elif op == _OP["BININT2"]:
            stack.append(struct.unpack("<H", self._exactly(2))[0])
        elif op == _OP["BINFLOAT"]:
            stack.append(struct.unpack(">d", self._exactly(8))[0])
        elif op == _OP["BINUNICODE"]:
            stack.append(str(self._exactly(struct.unpack("<I", self._exactly(4))[0]), "utf-8", "surrogatepass"))
        elif op == _OP["SHORT_BINSTRING"]:  # (Python 2's str: decoded, as torch.load's encoding="utf-8")
            stack.append(self._exactly(self._exactly(1)[0]).decode("utf-8"))
        elif op == _OP["BINPERSID"]:
            stack.append(self._persistent(stack.pop()))
        elif op in (_OP["BINGET"], _OP["LONG_BINGET"]):
            index = self._exactly(1)[0] if op == _OP["BINGET"] else struct.unpack("<I", self._exactly(4))[0]
            if index not in self.memo:
                raise pickle.UnpicklingError(f"memo entry {index} read before it was written (a corrupted pickle)")
            stack.append(self.memo[index])
        elif op in (_OP["BINPUT"], _OP["LONG_BINPUT"]):
            index = self._exactly(1)[0] if op == _OP["BINPUT"] else struct.unpack("<I", self._exactly(4))[0]
            self.memo[index] = stack[-1]
        elif op == _OP["LONG1"]:
            stack.append(pickle.decode_long(self._exactly(self._exactly(1)[0])))
        elif op == _OP["PROTO"]:
            self._exactly(1)
        else:
            raise pickle.UnpicklingError(f"Unsupported operand {op}")

    def _list(self, what):
        if type(self.stack[-1]) is not list:
            raise pickle.UnpicklingError(f"Can only {what} lists, but got {type(self.stack[-1])}")
        return self.stack[-1]

    def _exactly(self, n):
        data = self.read(n)
        if len(data) != n:
            raise EOFError("the pickle ends in the middle of an opcode (a truncated file?)")
        return data

    def _persistent(self, pid):
        if type(pid) is not tuple or not pid or pid[0] not in ("storage", b"storage"):
            raise pickle.UnpicklingError(f"Only persistent_load of storage is allowed, but got {pid!r:.80}")
        return self.persistent_load(pid)


_CONSTANTS = {_OP["NONE"]: lambda: None, _OP["NEWFALSE"]: lambda: False, _OP["NEWTRUE"]: lambda: True,
              _OP["EMPTY_TUPLE"]: tuple, _OP["EMPTY_LIST"]: list, _OP["EMPTY_DICT"]: dict, _OP["EMPTY_SET"]: set}


def _unpickle(file, builders, persistent_load):
    """Run the pickle at ``file``'s position with the weights-only unpickler; errors in torch's words."""
    unpickler = _WeightsOnlyUnpickler(file, _allowed_globals(builders), persistent_load)
    try:
        return unpickler.load()
    except NotRebuilt:
        raise
    except pickle.UnpicklingError as exc:
        raise pickle.UnpicklingError(weights_only_message(str(exc))) from None
    except (IndexError, KeyError, TypeError, ValueError, AttributeError, struct.error, EOFError) as exc:
        raise CorruptedPickle(f"the pickle is corrupted ({type(exc).__name__}: {exc})") from None


class CorruptedPickle(pickle.UnpicklingError):
    """A pickle that does not parse (a truncated or damaged file), not one torch's weights-only rules refuse:
    ``read`` names the file (a refusal keeps torch's own words, which name none)."""


# --------------------------------------------------------------------------------------------------
# Reading files
# --------------------------------------------------------------------------------------------------
def kind(path):
    """"zip" for torch's zip archive, "torchscript" for torch.jit.save's, "legacy" for torch < 1.6's stream, or
    None."""
    with open(path, "rb") as file:
        start = file.read(len(_LEGACY_START))
    if start.startswith(_LEGACY_START):
        return "legacy"
    if not start.startswith(b"PK\x03\x04"):
        return None
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError, NotImplementedError):
        return "zip"  # (a truncated archive: read() names the problem)
    if any(name.endswith("/data.pkl") or name == "data.pkl" for name in names):
        return "zip"
    return "torchscript" if any(name.endswith("/constants.pkl") for name in names) else None


def read(path, builders=None, mmap=False, values=True):
    """The object torch.save wrote to ``path`` (zip or legacy), rebuilt by ``builders`` (``Builders()``: NumPy
    arrays). ``mmap=True`` (zip only) maps each storage's bytes from the file (copy-on-write) instead of reading.
    ``values=False`` reads only the pickle (zip only): each storage is zeros (never touched: no memory), for a
    tensor's dtype and shape."""
    builders = builders or Builders()
    found = kind(path)
    if found == "legacy" and mmap:
        raise RuntimeError("mmap can only be used with files saved with `torch.save(_use_new_zipfile_serialization"
                           f"=True), please torch.save your checkpoint with this option in order to use mmap. "
                           f"({path} was written by torch < 1.6's format)")
    if found == "torchscript":
        raise RuntimeError(f"{path} is a TorchScript archive (torch.jit.save): it holds a program, not data; "
                           "torch.jit.load reads it, minilora does not")
    try:
        return _read_legacy(path, builders) if found == "legacy" else _read_zip(path, builders, mmap, values)
    except (CorruptedPickle, RuntimeError) as exc:  # (a damaged pickle, a view past its storage: torch's setStorage)
        if str(path) in str(exc):
            raise
        raise type(exc)(f"{path}: {exc}") from None


class _Archive:
    """torch's zip archive (its ``PyTorchStreamReader``): records under the first entry's folder."""

    def __init__(self, path, mmap, values=True):
        self.path, self.values = path, values
        try:
            self.zip = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError, NotImplementedError) as exc:
            raise RuntimeError(f"{path}: PytorchStreamReader failed reading zip archive: failed finding central "
                               f"directory ({exc}: the file is truncated or is not torch.save's)") from None
        start = min((info.header_offset for info in self.zip.infolist()), default=0)
        if start:  # (zipfile reads the archive that the file's END describes, wherever it starts)
            raise RuntimeError(f"{path}: PytorchStreamReader failed reading zip archive: invalid header or archive is "
                               f"corrupted (the archive the file ends with starts at byte {start}, after other data: "
                               f"two torch.save archives written one after the other into one file? Each is read "
                               f"from its own file, or from a stream at its start)")
        names = self.zip.namelist()
        self.prefix = names[0].split("/")[0] + "/" if names and "/" in names[0] else ""
        self.map = _mapped(path) if mmap else None

    def has(self, name):
        return self.prefix + name in self.zip.NameToInfo

    def record(self, name):
        try:
            return self.zip.read(self.prefix + name)
        except KeyError:
            raise RuntimeError(f"{self.path}: PytorchStreamReader failed locating file {name}: file not found "
                               "(the archive is incomplete)") from None
        except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError, RuntimeError) as exc:
            # (a flipped bit in an entry's header reads as an unknown zip version or compression, or encryption)
            raise RuntimeError(f"{self.path}: PytorchStreamReader failed reading file {name}: {exc} (the file is "
                               "truncated or corrupted)") from None

    def storage_bytes(self, name, nbytes):
        """A storage's bytes as a writable 1-d uint8 array (mapped from the file with ``mmap``)."""
        info = self.zip.NameToInfo.get(self.prefix + name)
        if info is None:
            raise RuntimeError(f"{self.path}: PytorchStreamReader failed locating file {name}: file not found "
                               "(the archive is incomplete)")
        if info.file_size != nbytes:
            raise RuntimeError(f"{self.path}: record {name} holds {info.file_size} bytes, but its storage needs "
                               f"{nbytes} (the file is corrupted)")
        if not self.values:
            return np.zeros(nbytes, dtype=np.uint8)
        if self.map is not None and info.compress_type == zipfile.ZIP_STORED:
            start = self._data_offset(info)
            if start + nbytes > len(self.map):
                raise RuntimeError(f"{self.path}: record {name} runs past the end of the file (truncated)")
            return np.frombuffer(self.map, dtype=np.uint8, count=nbytes, offset=start)
        return np.frombuffer(bytearray(self.record(name)), dtype=np.uint8)

    def _data_offset(self, info):
        header = self.map[info.header_offset:info.header_offset + 30]
        if len(header) != 30 or header[:4] != b"PK\x03\x04":
            raise RuntimeError(f"{self.path}: record {info.filename} has no local header (the file is corrupted)")
        name_length, extra_length = struct.unpack("<HH", header[26:30])
        return info.header_offset + 30 + name_length + extra_length


def _mapped(path):
    """The whole file mapped copy-on-write (torch's mmap=True maps it MAP_PRIVATE: writes stay in memory)."""
    with open(path, "rb") as file:
        return mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_COPY)


def _storage_loader(load_bytes, big_endian):
    """``persistent_load`` for ``('storage', type, key, location, numel)``: each key's storage loaded once."""
    loaded = {}

    def persistent_load(pid):
        if len(pid) < 5 or not isinstance(pid[1], _StorageType) or not isinstance(pid[4], int) or pid[4] < 0:
            raise pickle.UnpicklingError(f"storage id {pid!r:.120} is not ('storage', type, key, location, numel)")
        _, storage_type, key, location, numel = pid[:5]
        key, location = _text(key), _text(location)
        if key not in loaded:
            nbytes = numel * storage_type.dtype.itemsize
            loaded[key] = _Storage(load_bytes(key, nbytes), storage_type.dtype, location, big_endian)
        storage = loaded[key]
        if len(pid) > 5 and pid[5] is not None:  # legacy: a view of another storage
            view_key, offset, view_numel = pid[5]
            flat = storage.typed(storage.dtype)[offset:offset + view_numel]
            storage = _Storage(flat.view(np.uint8), storage.dtype, location, False)
        return storage

    return persistent_load


def _text(value):
    return value.decode("ascii") if isinstance(value, bytes) else str(value)


def _read_zip(path, builders, mmap, values=True):
    archive = _Archive(path, mmap, values)
    with archive.zip:
        byteorder = archive.record("byteorder") if archive.has("byteorder") else b"little"
        if byteorder not in (b"little", b"big"):
            raise ValueError("Unknown endianness type: " + byteorder.decode(errors="replace"))
        pickled = archive.record("data.pkl")
        load_bytes = lambda key, nbytes: archive.storage_bytes(f"data/{key}", nbytes)  # noqa: E731
        return _unpickle(io.BytesIO(pickled), builders, _storage_loader(load_bytes, byteorder == b"big"))


def _read_legacy(path, builders):
    """torch < 1.6's stream. The object's pickle comes before the storages it refers to: a first pass rebuilds it
    as NumPy views of zero-filled storages (never touched: no memory) to learn each storage's size, then the
    storages are read, then the object is rebuilt from them."""
    with open(path, "rb") as file:
        object_start, sizes, keys = _legacy_layout(path, file, builders)
        data = {_text(key): _legacy_storage(path, file, _text(key), sizes[_text(key)]) for key in keys}
        file.seek(object_start)
        return _unpickle(file, builders, _storage_loader(lambda key, nbytes: data[key], False))


def legacy_end(path):
    """The byte where the object a torch < 1.6 file starts with ends: a stream may hold several, one after another,
    and torch.load leaves a file object after the one it read."""
    with open(path, "rb") as file:
        _start, sizes, keys = _legacy_layout(path, file, Builders())
        return file.tell() + sum(8 + sizes[_text(key)] for key in keys)


def _legacy_layout(path, file, builders):
    """A legacy file's header checked, read up to its storages: where the object's pickle starts, each storage's
    size in bytes and the storage keys in the order their bytes follow."""
    if _unpickle(file, builders, _no_storage) != _LEGACY_MAGIC:
        raise RuntimeError(f"{path}: Invalid magic number; corrupt file?")
    protocol = _unpickle(file, builders, _no_storage)
    if protocol != _LEGACY_PROTOCOL:
        raise RuntimeError(f"{path}: Invalid protocol version: {protocol}")
    sys_info = _unpickle(file, builders, _no_storage)
    if not isinstance(sys_info, dict) or sys_info.get("little_endian") is not True:
        raise RuntimeError(f"{path}: written on a big-endian machine (sys_info {sys_info!r:.80}); minilora "
                           "reads little-endian legacy files only")
    object_start, file_size = file.tell(), os.fstat(file.fileno()).st_size
    sizes = {}

    def placeholder(key, nbytes):
        if nbytes > file_size:
            raise RuntimeError(f"{path}: storage {key} claims {nbytes} bytes, more than the whole file "
                               "(truncated or corrupted)")
        sizes[key] = nbytes
        return np.zeros(nbytes, dtype=np.uint8)

    _unpickle(file, Builders(), _storage_loader(placeholder, False))
    keys = _unpickle(file, builders, _no_storage)
    if not isinstance(keys, list) or sorted(map(_text, keys)) != sorted(sizes):
        raise pickle.UnpicklingError(f"{path}: the storage key list {keys!r:.80} is not the object's storages "
                                     f"({sorted(sizes)!r:.80}): a corrupted file")
    return object_start, sizes, keys


def _no_storage(pid):
    raise pickle.UnpicklingError("a storage in the file's header pickles (a corrupted file)")


def _legacy_storage(path, file, key, nbytes):
    """One storage's bytes: an int64 element count, then the elements."""
    head = file.read(8)
    if len(head) != 8 or struct.unpack("<q", head)[0] < 0:
        raise RuntimeError(f"{path}: the file ends before storage {key} (truncated or corrupted)")
    data = file.read(nbytes)
    if len(data) != nbytes:
        raise RuntimeError(f"{path}: storage {key} holds {len(data)} of its {nbytes} bytes (the file is truncated)")
    return np.frombuffer(bytearray(data), dtype=np.uint8)


# --------------------------------------------------------------------------------------------------
# Writing the zip archive
# --------------------------------------------------------------------------------------------------
class NotTorchData(TypeError):
    """An object torch's weights-only loader would not rebuild (a NumPy array, an object of the user's class)."""


class _Global:
    """A global to write as ``GLOBAL module name`` (torch's own, which minilora cannot import)."""
    _made = {}

    def __new__(cls, module, name):
        key = (module, name)
        if key not in cls._made:
            made = super().__new__(cls)
            made.module, made.name = module, name
            cls._made[key] = made
        return cls._made[key]

    def __call__(self, *args):  # (pickle's save_reduce asks for a callable; it is only ever written)
        raise TypeError(f"{self.module}.{self.name} is torch's; minilora only writes its name")


class _SavedStorage:
    def __init__(self, key, root, location):
        self.key, self.root, self.location = key, root, location


class TensorParts:
    """What ``write_zip``'s ``describe`` says of a tensor: its values (a NumPy array, a view of its storage's
    array where it is one), requires_grad, torch's location ("cpu", "cuda:0") and whether it is a Parameter."""

    def __init__(self, array, requires_grad, location, parameter):
        self.array, self.requires_grad, self.location, self.parameter = array, requires_grad, location, parameter


_PLAIN = (dict, list, tuple, str, int, float, bool, type(None), complex, bytes, bytearray, set, OrderedDict, Counter)
_PLAIN_GLOBALS = (OrderedDict, Counter, set, complex, bytearray, codecs.encode)  # (the globals pickle writes for them)


def _root(array):
    """The array owning ``array``'s memory (following ``.base``): the storage shared by its views."""
    root = array
    while isinstance(root.base, np.ndarray):
        root = root.base
    return root


class _TorchPickler(pickle._Pickler):
    """Python's own pickler (the pure-Python one: it lets ``save`` and the dispatch table be extended) writing
    torch's globals for tensors, dtypes, torch.Size and torch.device, and storages as persistent ids."""

    dispatch = pickle._Pickler.dispatch.copy()

    def __init__(self, file, describe, size_type, device_type):
        super().__init__(file, protocol=2)
        self.describe, self.size_type, self.device_type = describe, size_type, device_type
        self.storages, self._by_root = [], {}

    def _save_global(self, obj):
        self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode("utf-8"))
        self.memoize(obj)

    dispatch[_Global] = _save_global

    def save(self, obj, save_persistent_id=True):
        if isinstance(obj, np.dtype):
            obj = _Global("torch", "bfloat16" if dtypes.is_bfloat16(obj) else obj.name)
        super().save(obj, save_persistent_id)

    def persistent_id(self, obj):
        if isinstance(obj, _SavedStorage):
            if not _has_typed_storage(obj.root.dtype):  # (uint16/32/64: torch's untyped storage counts bytes)
                return ("storage", _Global("torch.storage", "UntypedStorage"), obj.key, obj.location, obj.root.nbytes)
            name = dtypes.torch_name(obj.root.dtype) + "Storage"
            return ("storage", _Global("torch", name), obj.key, obj.location, obj.root.size)
        return None

    def reducer_override(self, obj):
        if isinstance(obj, (_Global, _SavedStorage, _Unparameter)):
            return self._tensor(obj.parts, False) if isinstance(obj, _Unparameter) else NotImplemented
        parts = self.describe(obj)
        if parts is not None:
            if parts.parameter:
                return (_Global("torch._utils", "_rebuild_parameter"),
                        (_Unparameter(parts), parts.requires_grad, OrderedDict()))
            return self._tensor(parts, parts.requires_grad)
        if isinstance(obj, self.size_type):
            return _Global("torch", "Size"), (tuple(obj),)
        if isinstance(obj, self.device_type):
            return _Global("torch", "device"), (_location(str(obj)),)
        if type(obj) not in _PLAIN and not any(obj is allowed for allowed in _PLAIN_GLOBALS):
            raise NotTorchData(f"a {type(obj).__module__}.{type(obj).__name__}")
        return NotImplemented

    def _tensor(self, parts, requires_grad):
        if parts.location == "meta":  # (torch's reduction of a meta tensor: no storage, as it has no values)
            return _Global("torch._utils", "_rebuild_meta_tensor_no_storage"), (
                parts.array.dtype, tuple(parts.array.shape), _contiguous_strides(parts.array.shape), bool(requires_grad))
        storage, offset, stride = self._storage(parts.array, parts.location)
        args = (storage, offset, tuple(parts.array.shape), stride, bool(requires_grad), OrderedDict())
        if not _has_typed_storage(parts.array.dtype):  # torch's _rebuild_tensor_v3 names the dtype
            return _Global("torch._utils", "_rebuild_tensor_v3"), args + (parts.array.dtype,)
        return _Global("torch._utils", "_rebuild_tensor_v2"), args

    def _storage(self, array, location):
        """The storage ``array`` views (shared with every other tensor viewing the same memory, as torch keeps
        it), its offset and strides in elements; a copy of its own where it views memory oddly."""
        root, itemsize = _root(array), array.dtype.itemsize
        offset = (array.__array_interface__["data"][0] - root.__array_interface__["data"][0]) if root is not array \
            else 0
        shares = (root.dtype == array.dtype and root.flags.c_contiguous and root.dtype.isnative
                  and offset % itemsize == 0 and all(s >= 0 and s % itemsize == 0 for s in array.strides))
        if not shares:
            root, offset = np.ascontiguousarray(array).reshape(-1), 0
            if not root.dtype.isnative:
                root = root.astype(root.dtype.newbyteorder("="))
            strides = _contiguous_strides(array.shape)
        else:
            strides = tuple(s // itemsize for s in array.strides)
        found = self._by_root.get((id(root), location))
        if found is None:
            found = _SavedStorage(str(len(self.storages)), root, location)
            self.storages.append(found)
            self._by_root[(id(root), location)] = found
        return found, offset // itemsize, strides


def _has_typed_storage(dtype):
    """torch has a typed storage class (torch.FloatStorage ...) for the dtypes it had before 2.3."""
    return dtype.name in dtypes._TORCH_NAMES or dtypes.is_bfloat16(dtype)


class _Unparameter:
    """A Parameter's data, pickled as the plain tensor ``_rebuild_parameter`` takes."""

    def __init__(self, parts):
        self.parts = parts


def _contiguous_strides(shape):
    strides, step = [], 1
    for n in reversed(shape):
        strides.append(step)
        step *= max(n, 1)
    return tuple(reversed(strides))


def _location(device_name):
    """torch's location tag for a minilora device name: "cpu", "cuda:0" (minilora's "cuda" is device 0)."""
    return "cuda:0" if device_name == "cuda" else device_name


def write_zip(obj, file, archive_name, describe, size_type=tuple, device_type=type(None), byteorder=True):
    """Write ``obj`` to the binary ``file`` as torch.save's zip archive named ``archive_name``. ``describe(x)``
    gives a tensor's ``TensorParts`` (None for anything else). Raises NotTorchData (before writing anything) for
    an object torch's weights-only loader would not rebuild. ``byteorder=False`` leaves out the byteorder record
    (torch.save's ``_disable_byteorder_record``: readers then assume little-endian)."""
    pickled = io.BytesIO()
    pickler = _TorchPickler(pickled, describe, size_type, device_type)
    pickler.dump(obj)
    with zipfile.ZipFile(file, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
        _add(archive, f"{archive_name}/data.pkl", pickled.getvalue())
        if byteorder:
            _add(archive, f"{archive_name}/byteorder", b"little")
        for storage in pickler.storages:
            _add(archive, f"{archive_name}/data/{storage.key}", storage.root.tobytes())
        _add(archive, f"{archive_name}/version", b"3\n")


def _add(archive, name, data):
    """One stored record whose bytes start at a multiple of 64 in the file (padding in the local header's extra
    field, as torch's writer pads): torch.load(mmap=True) maps them in place."""
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_STORED
    start = archive.fp.tell() + 30 + len(name.encode("utf-8"))
    pad = (-(start + 4)) % _ALIGNMENT
    info.extra = b"FB" + struct.pack("<H", pad) + b"Z" * pad
    archive.writestr(info, data)
