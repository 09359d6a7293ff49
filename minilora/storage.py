"""torch's storages: the memory under a tensor, as bytes (``x.untyped_storage()``, ``torch.UntypedStorage``) or as
elements of one dtype (``x.storage()``, the deprecated ``torch.TypedStorage`` and its legacy classes,
``torch.FloatStorage`` ...), and the tensor methods that work on storages: ``set_``, ``is_set_to``,
``share_memory_`` / ``is_shared``.

A minilora tensor's values are a NumPy (CuPy) array that is a view of the array owning the memory
(``ops.shape._owner``: slicing, transposing, ``view`` and ``detach`` keep the owner; ``clone`` makes a new
one). That owner's bytes are the tensor's storage: an ``UntypedStorage`` holds a 1-D uint8 view of them, so a
write through the storage shows in every tensor over that memory, as torch's. The question the lesson on
views asks, "is ``y`` a view of ``x`` or a copy?", is answered as in torch::

    x.untyped_storage().data_ptr() == y.untyped_storage().data_ptr()

Asked twice, a tensor gives the same ``UntypedStorage`` object, as torch's (one per owner, kept while in use).

What NumPy cannot do: move memory under the arrays that view it. torch swaps a storage's memory in place
(``storage.resize_``, ``share_memory_``), and every tensor on that storage follows; here only a storage (or a
tensor) that nothing else views may be resized or moved into shared memory, and the rest is refused by name.
An op whose result minilora builds as a view of an intermediate array shows that intermediate as its storage
where torch's result owns a fresh one (``ops.shape.as_strided`` says the same): the bytes a storage reports
are the owner's.
"""
import mmap
import numbers
import sys
import warnings
import weakref

import numpy as np

from . import dtypes
from .device import META, device as _get_device
from .ops import shape as _shape
from .tensor import Function, Tensor, is_grad_enabled, name_node, tensor

# ---- the deprecation warning, once a process as torch's (torch/storage.py's _warn_typed_storage_removal) ------
_TYPED_STORAGE_WARNING = ("TypedStorage is deprecated. It will be removed in the future and UntypedStorage will be "
                          "the only storage class. This should only matter to you if you are using storages "
                          "directly.  To access UntypedStorage directly, use tensor.untyped_storage() instead of "
                          "tensor.storage()")
_warned = False


def _warn_typed_storage_removal(stacklevel=2):
    global _warned
    if not _warned:
        warnings.warn(_TYPED_STORAGE_WARNING, UserWarning, stacklevel=stacklevel + 1)
        _warned = True


def _reset_warn_typed_storage_removal():
    """Warn again at the next TypedStorage (torch.storage's function of the same name)."""
    global _warned
    _warned = False


# ---- memory: an owner array's bytes ---------------------------------------------------------------------------
class _SharedMemory(mmap.mmap):
    """An anonymous MAP_SHARED mapping (Python's ``mmap(-1, n)``): memory a forked child process writes into
    for its parent too, which is what torch's ``share_memory_`` gives a storage."""


def _owner_bytes(owner):
    """All of the owner array's memory as a 1-D uint8 array, from its first byte."""
    if not _shape._dense(owner):
        raise NotImplementedError("untyped_storage(): this tensor's memory is not one block minilora can address; "
                                  "call .contiguous() first")
    memory = owner.reshape(-1) if owner.flags.c_contiguous else _shape._strided(
        owner, (owner.size,), (1,), 0, _shape.writeable(owner))  # (a transposed copy: its memory in order)
    if dtypes.is_bfloat16(memory.dtype):
        memory = memory.view(np.uint16)  # (ml_dtypes' bfloat16 views as uint8 through its bits)
    return memory.view(np.uint8)


def _address(array):
    """Where ``array``'s first byte lies (0 for an empty one, as torch's data_ptr)."""
    if not array.size:
        return 0
    if isinstance(array, np.ndarray):
        return int(array.__array_interface__["data"][0])
    return int(array.data.ptr)


class _StorageBase:
    """What both storage classes answer from the bytes (``_bytes``) and the device (``_device``)."""

    __slots__ = ()

    @property
    def device(self):
        return self._device

    @property
    def is_cuda(self):
        return self._device.type == "cuda"

    def get_device(self):
        """torch's device index: None on the CPU (and minilora's emulator), 0 on the one GPU."""
        return 0 if self._device.type == "cuda" else None

    def data_ptr(self):
        """The address of the first byte (0 for meta memory or none at all, as torch's)."""
        return 0 if self._device is META else _address(self._raw())

    def nbytes(self):
        return int(self._raw().size)

    def is_pinned(self, device=None):
        return False

    def is_shared(self):
        """In shared memory (share_memory_); always, for CUDA memory, as torch says."""
        return self._device.type == "cuda" or _is_shared(self._raw())

    def resizable(self):
        return self._untyped()._resizable

    def _refuse_meta(self):
        if self._device is META:
            raise NotImplementedError("Not available for 'meta' device type")

    def __iter__(self):
        return iter(self[i] for i in range(len(self)))

    def __str__(self):
        info = self._info()
        if self._device is META:
            return "...\n" + info
        return " " + "\n ".join(str(self[i]) for i in range(len(self))) + "\n" + info

    def __repr__(self):
        return str(self)

    def __copy__(self):
        return self.clone()

    def __deepcopy__(self, memo):
        """A copy of the bytes (torch's: a storage deep-copied once per memo, so tensors sharing it still do)."""
        copied = memo.get(id(self))
        if copied is None:
            copied = memo[id(self)] = self.clone()
        return copied

    def __reduce__(self):
        """Pickled as its bytes and device (and dtype), rebuilt as a storage of its own, as torch's."""
        return _rebuild_storage, (self._untyped()._host_bytes(), str(self._device), getattr(self, "dtype", None))

    def cpu(self):
        return self if self._device.type == "cpu" else self.to(device="cpu")

    def copy_(self, source, non_blocking=None):
        """The source storage's bytes copied in (torch compares byte counts, whatever the element types)."""
        mine, theirs = self._raw(), _untyped_of(source)._bytes
        if mine.size != theirs.size:
            raise RuntimeError(f"size does not match, self was {mine.size} bytes but src was {theirs.size} bytes")
        self._refuse_meta()
        mine[...] = _shape.xp_of(mine).asarray(theirs)
        return self

    # torch's conversions: the values (bytes, for an UntypedStorage) as another dtype, in a new TypedStorage
    def double(self):
        return self._to(np.float64)

    def float(self):
        return self._to(np.float32)

    def half(self):
        return self._to(np.float16)

    def bfloat16(self):
        return self._to(dtypes.bfloat16)

    def long(self):
        return self._to(np.int64)

    def int(self):
        return self._to(np.int32)

    def short(self):
        return self._to(np.int16)

    def char(self):
        return self._to(np.int8)

    def byte(self):
        return self._to(np.uint8)

    def bool(self):
        return self._to(np.bool_)

    def complex_float(self):
        return self._to(np.complex64)

    def complex_double(self):
        return self._to(np.complex128)

    def _to(self, dtype):
        _warn_typed_storage_removal(stacklevel=3)  # (the result is a TypedStorage)
        dtype = np.dtype(dtype)
        if getattr(self, "dtype", None) == dtype:
            return self
        values = self._as_tensor().to(dtype)
        return TypedStorage(wrap_storage=values.untyped_storage(), dtype=dtype, _internal=True)


def _rebuild_storage(data, device, dtype):
    untyped = UntypedStorage(data, device=device)
    return untyped if dtype is None else TypedStorage(wrap_storage=untyped, dtype=dtype, _internal=True)


def _untyped_of(storage):
    if isinstance(storage, TypedStorage):
        return storage._untyped_storage
    if isinstance(storage, UntypedStorage):
        return storage
    raise TypeError(f"expected a storage, got {type(storage).__name__}")


class UntypedStorage(_StorageBase):
    """``torch.UntypedStorage``: bytes, on a device. ``UntypedStorage(n)`` is n bytes (zeros; torch leaves them
    uninitialised), ``UntypedStorage([1, 2])`` or ``UntypedStorage(b"ab")`` holds those bytes; a tensor's
    (``x.untyped_storage()``) is a view of the tensor's memory."""

    __slots__ = ("_bytes", "_device", "_resizable", "__weakref__")
    _of_owner = weakref.WeakValueDictionary()  # id(owner array) -> its storage (which keeps the owner alive)

    def __init__(self, *args, device=None):
        dev = _get_device("cpu" if device is None else device)
        if len(args) > 1:
            raise TypeError(f"UntypedStorage() takes at most 1 argument ({len(args)} given)")
        data = args[0] if args else 0
        if isinstance(data, (bytes, bytearray)):
            data = list(data)
        if isinstance(data, numbers.Integral) and not isinstance(data, bool):
            if data < 0:
                raise RuntimeError(f"Trying to create a storage of negative size {data}")
            memory = dev.xp.zeros(int(data), np.uint8)
        else:
            memory = dev.xp.asarray(np.array([int(v) % 256 for v in _byte_values(data)], np.uint8))
        self._bytes, self._device, self._resizable = memory, dev, True

    @classmethod
    def _over(cls, memory, dev, resizable=False):
        """A storage over ``memory`` (1-D uint8), not a copy."""
        storage = object.__new__(cls)
        storage._bytes, storage._device, storage._resizable = memory, dev, resizable
        return storage

    @classmethod
    def _of_tensor(cls, tensor):
        """``tensor``'s storage: its owner array's bytes, one storage object per owner."""
        owner = _shape._owner(tensor._array)
        storage = cls._of_owner.get(id(owner))
        if storage is None or _shape._owner(storage._bytes) is not owner:  # (none, or one resize_ moved away)
            storage = cls._over(_owner_bytes(owner), tensor._device)
            cls._of_owner[id(owner)] = storage
        return storage

    def _raw(self):
        return self._bytes

    def _untyped(self):
        return self

    def _info(self):
        return f"[torch.storage.UntypedStorage(device={self._device}) of size {len(self)}]"

    def _as_tensor(self):
        return Tensor._make(self._bytes, self._device, False, None)

    def size(self):
        return int(self._bytes.size)

    def __len__(self):
        return int(self._bytes.size)

    def element_size(self):
        return 1

    def type(self, dtype=None, non_blocking=False):
        return "torch.storage.UntypedStorage" if dtype is None else TypedStorage(
            wrap_storage=self, dtype=_legacy_dtype(dtype), _internal=True)

    def untyped(self):
        return self

    def __getitem__(self, index):
        """A byte (an int, 0..255), or for a slice the storage of those bytes (a view, as torch's)."""
        self._refuse_meta()
        if isinstance(index, slice):
            return UntypedStorage._over(self._bytes[_unit_step(index)], self._device)
        position = self._position(index)
        if position is None:
            raise IndexError(f"index {index + self._bytes.size if index < 0 else index} out of range for storage "
                             f"of size {self._bytes.size}")
        return int(self._bytes[position])

    def __setitem__(self, index, value):
        self._refuse_meta()
        if isinstance(value, (Tensor, UntypedStorage, TypedStorage)) or not isinstance(value, numbers.Integral):
            raise RuntimeError(f"can only set storage content with a int types, but got {type(value).__name__} "
                               f"instead")
        if isinstance(index, slice):
            self._bytes[_unit_step(index)] = int(value) % 256
            return
        position = self._position(index)
        if position is None:
            raise RuntimeError("out of bounds")
        self._bytes[position] = int(value) % 256

    def _position(self, index):
        """The byte ``index`` (negative: from the end) names, or None past either end."""
        if isinstance(index, bool) or not isinstance(index, numbers.Integral):
            raise TypeError(f"can't index a torch.UntypedStorage with {type(index).__name__}")
        size = self._bytes.size
        position = int(index) + size if index < 0 else int(index)
        return position if 0 <= position < size else None

    def tolist(self):
        self._refuse_meta()
        return [int(v) for v in self._bytes.tolist()]

    def _host_bytes(self):
        return bytes(len(self)) if self._device is META else self._as_tensor().cpu().numpy().tobytes()

    def fill_(self, value):
        self[:] = value
        return self

    def clone(self):
        copy = UntypedStorage(self.nbytes(), device=self._device)
        return copy.copy_(self) if self._device is not META else copy

    def to(self, *, device, non_blocking=False):
        dev = _get_device(device)
        if dev is self._device:
            return self
        return UntypedStorage._over(self._as_tensor().to(dev)._array, dev, resizable=True)

    def resize_(self, size):
        """A new size in bytes, the first bytes kept (new ones zeros). Only a storage nothing else views: NumPy's
        memory cannot change under the arrays that view it, where torch's tensors follow their storage."""
        size = int(size)
        if size < 0:
            raise RuntimeError(f"Trying to resize storage to negative size {size}")
        if self.is_shared():
            raise RuntimeError("Trying to resize storage that is not resizable")  # (torch's, for shared memory)
        if not self._resizable:
            raise NotImplementedError("resize_(): minilora cannot resize a tensor's storage: its tensors are NumPy "
                                      "arrays over that memory, which cannot follow it to a new size as torch's "
                                      "tensors follow their storage")
        _refuse_if_viewed(self, "_bytes", "resize_")
        resized = self._device.xp.zeros(size, np.uint8)
        kept = min(size, self._bytes.size)
        resized[:kept] = self._bytes[:kept]
        self._bytes = resized
        return self

    def share_memory_(self):
        """Moves the bytes into shared memory (a forked process sees the same pages), as torch's; a no-op for
        storages there already. A tensor's storage refuses: its tensors would keep the old memory."""
        if self.is_shared() or self._device.type != "cpu":
            return self
        if not self._resizable:
            raise NotImplementedError("share_memory_(): minilora cannot move a tensor's storage into shared memory "
                                      "under the tensors viewing it; call the tensor's share_memory_() before "
                                      "making views of it")
        _refuse_if_viewed(self, "_bytes", "share_memory_")
        self._bytes = _shared_copy(self._bytes)
        return self

    @classmethod
    def from_buffer(cls, buffer, byte_order="native", count=-1, offset=0, dtype=None):
        """``UntypedStorage.from_buffer(b"...")``: a copy of a buffer's bytes (as torch's)."""
        data = np.frombuffer(buffer, np.uint8, count=count, offset=offset)
        return cls._over(data.copy(), _get_device("cpu"), resizable=True)


def _unit_step(index):
    """A storage slice steps by one byte (torch's rule)."""
    if index.step is not None and index.step != 1:
        raise RuntimeError(f"Trying to slice with a step of {index.step}, but only a step of 1 is supported")
    return index


def _byte_values(data):
    """``UntypedStorage(data)``'s items, ints only (torch's words for anything else)."""
    if not isinstance(data, (list, tuple)):
        raise RuntimeError(f"torch.UntypedStorage(): Expected a sequence type, but got {type(data).__name__}")
    for value in data:
        if not isinstance(value, numbers.Integral):
            raise RuntimeError(f"torch.UntypedStorage(): tried to construct a storage from a sequence "
                               f"({type(data).__name__}), but one of the items was of type {type(value).__name__} "
                               f"instead of int")
    return data


def _is_shared(memory):
    """Does ``memory`` lie in a mapping share_memory_ made (NumPy's base of it: a memoryview of the mapping)?"""
    base = getattr(_shape._owner(memory), "base", None)
    return isinstance(getattr(base, "obj", base), _SharedMemory)


def _shared_copy(array):
    """``array`` copied into a new anonymous shared mapping, laid out as ``array`` (C order)."""
    mapping = _SharedMemory(-1, max(array.nbytes, 1))
    fresh = np.frombuffer(mapping, np.uint8, count=array.nbytes).view(array.dtype).reshape(array.shape)
    fresh[...] = array
    return fresh


def _refuse_if_viewed(holder, slot, what):
    """Refuse to move the memory of ``holder.<slot>`` (an array) where anything else holds that array, its
    owner or another view of it (another tensor, a storage, a value saved for backward): NumPy arrays cannot be
    re-pointed, so they would stay on the old memory and silently stop sharing it. Counted by references."""
    array = getattr(holder, slot)
    owner = _shape._owner(array)
    # (this frame's names and getrefcount's argument: 3 for the owner; the array's slot too where it is the owner)
    if sys.getrefcount(owner) > (4 if owner is array else 3) or owner is not array and sys.getrefcount(array) > 3:
        raise NotImplementedError(f"{what}(): minilora cannot move memory that other tensors or storages view "
                                  f"(NumPy's arrays cannot follow it, where torch's tensors follow their "
                                  f"storage); call {what}() before making views of it")


# ---- TypedStorage: the same bytes as elements of a dtype ------------------------------------------------------
_TORCH_CLASS = "<class 'torch.storage.TypedStorage'>"  # (as torch's messages print it)


class TypedStorage(_StorageBase):
    """``torch.TypedStorage`` (deprecated, as torch warns once): an UntypedStorage read as elements of ``dtype``.
    ``x.storage()`` is ``x``'s; ``TypedStorage(n, dtype=...)``, ``TypedStorage([1, 2])`` and
    ``TypedStorage(wrap_storage=s, dtype=...)`` are torch's constructors."""

    __slots__ = ("_untyped_storage", "dtype")
    is_sparse = False

    def __init__(self, *args, device=None, dtype=None, wrap_storage=None, _internal=False):
        if not _internal:
            _warn_typed_storage_removal()
        if dtype is not None and (isinstance(dtype, type) or not dtypes.is_dtype_object(dtype)):
            raise RuntimeError(f"expected torch.dtype, but got {type(dtype)}")  # (float and 'float32' too)
        dtype = np.dtype(dtypes.to_dtype(dtype) if dtype is not None else dtypes.get_default_dtype())
        if wrap_storage is not None:
            if args or device is not None:
                raise RuntimeError("Keyword argument 'wrap_storage' must be given alone with 'dtype'")
            if not isinstance(wrap_storage, UntypedStorage):
                raise TypeError(f"expected a torch.UntypedStorage for 'wrap_storage', got "
                                f"{type(wrap_storage).__name__}")
            self._untyped_storage, self.dtype = wrap_storage, dtype
            return
        if len(args) > 1 or args and isinstance(args[0], (UntypedStorage, TypedStorage)):
            raise TypeError("TypedStorage.__init__ received an invalid combination of arguments. Expected one of:\n"
                            " * (*, torch.device device, torch.dtype dtype)\n"
                            " * (int size, *, torch.device device, torch.dtype dtype)\n"
                            " * (Sequence data, *, torch.device device, torch.dtype dtype)\n"
                            " * (*, UntypedStorage wrap_storage, torch.dtype dtype)")
        data = args[0] if args else 0
        dev = _get_device("cpu" if device is None else device)
        if isinstance(data, numbers.Integral) and not isinstance(data, bool):
            values = Tensor._make(dev.xp.zeros(int(data), dtype), dev, False, None)
        else:
            values = tensor(list(data), dtype=dtype, device=dev)
        self._untyped_storage, self.dtype = UntypedStorage._of_tensor(values), dtype
        self._untyped_storage._resizable = True

    @property
    def _device(self):
        return self._untyped_storage._device

    def _raw(self):
        return self._untyped_storage._bytes

    def _untyped(self):
        return self._untyped_storage

    def _elements(self):
        memory = self._raw()
        count = memory.size // self.dtype.itemsize
        elements = memory[:count * self.dtype.itemsize]
        if dtypes.is_bfloat16(self.dtype):
            return elements.view(np.uint16).view(self.dtype)
        return elements.view(self.dtype)

    def _as_tensor(self):
        return Tensor._make(self._elements(), self._device, False, None)

    def _info(self):
        return f"[torch.storage.TypedStorage(dtype=torch.{self.dtype.name}, device={self._device}) of size {len(self)}]"

    def untyped(self):
        return self._untyped_storage

    def size(self):
        return self._raw().size // self.dtype.itemsize

    def __len__(self):
        return self.size()

    def element_size(self):
        return self.dtype.itemsize

    def type(self, dtype=None, non_blocking=False):
        if dtype is None:
            return f"torch.{_legacy_class_name(self.dtype)}"
        return self._to(_legacy_dtype(dtype))

    def pickle_storage_type(self):
        return _legacy_class_name(self.dtype)

    def __getitem__(self, index):
        self._refuse_meta()
        if isinstance(index, slice):
            raise RuntimeError("slices are only supported in UntypedStorage.__getitem__")
        if isinstance(index, bool):
            raise TypeError(f"can't index a {_TORCH_CLASS} with {type(index)}")
        if not isinstance(index, numbers.Integral):
            raise RuntimeError(f"can't index a {_TORCH_CLASS} with {type(index)}")
        size = self.size()
        position = int(index) + size if index < 0 else int(index)
        if not 0 <= position < size:
            raise IndexError(f"index {index} out of range for storage of size {size}")
        return self._as_tensor()[position].item()

    def __setitem__(self, index, value):
        if not isinstance(index, (numbers.Integral, slice)):
            raise RuntimeError(f"can't index a {_TORCH_CLASS} with {type(index)}")
        if isinstance(value, (UntypedStorage, TypedStorage)):
            raise RuntimeError(f"cannot set item with value type {type(value)}")
        if not isinstance(value, (numbers.Number, Tensor)):
            raise TypeError(f"can't assign a {type(value).__name__} to a torch.{dtypes.torch_name(self.dtype)}Tensor")
        self._refuse_meta()
        self._as_tensor()[index] = value

    def tolist(self):
        self._refuse_meta()
        return self._as_tensor().tolist()

    def fill_(self, value):
        self[:] = value
        return self

    def clone(self):
        return TypedStorage(wrap_storage=self._untyped_storage.clone(), dtype=self.dtype, _internal=True)

    def to(self, *, device, non_blocking=False):
        moved = self._untyped_storage.to(device=device)
        return self if moved is self._untyped_storage else TypedStorage(wrap_storage=moved, dtype=self.dtype,
                                                                        _internal=True)

    def resize_(self, size):
        self._untyped_storage.resize_(int(size) * self.dtype.itemsize)

    def share_memory_(self):
        self._untyped_storage.share_memory_()
        return self


# ---- torch's legacy classes: FloatStorage, LongStorage, ... (TypedStorage of one dtype) ------------------------
class _LegacyStorageMeta(type):
    """``isinstance(x.storage(), torch.FloatStorage)`` asks for a TypedStorage of float32 on the CPU."""

    def __instancecheck__(cls, instance):
        return (type(instance) is TypedStorage and instance.dtype == cls.dtype
                and instance.device.type != "cuda")


class _LegacyStorage(TypedStorage, metaclass=_LegacyStorageMeta):
    """``torch.FloatStorage(3)``, ``torch.LongStorage([1, 2])``: a TypedStorage of the class's dtype."""

    def __new__(cls, *args, device=None, wrap_storage=None):
        return TypedStorage(*args, device=device, wrap_storage=wrap_storage, dtype=cls.dtype)


_LEGACY_DTYPES = ("float32", "float64", "float16", "bfloat16", "int64", "int32", "int16", "int8", "uint8", "bool",
                  "complex64", "complex128")


def _legacy_class_name(dtype):
    return f"{dtypes.torch_name(np.dtype(dtype))}Storage"


def _legacy_dtype(name):
    """The dtype of a legacy type name (``"torch.FloatStorage"``) or of a dtype given as it is."""
    if isinstance(name, str):
        for dtype in _LEGACY_DTYPES:
            if name.rsplit(".", 1)[-1] == _legacy_class_name(dtypes.to_dtype(dtype)):
                return dtypes.to_dtype(dtype)
        raise RuntimeError(f"invalid type: '{name}'")
    return getattr(name, "dtype", name)


def _legacy_class(dtype):
    class_name = _legacy_class_name(dtype)
    return _LegacyStorageMeta(class_name, (_LegacyStorage,), {
        "dtype": dtype, "__module__": "torch", "__qualname__": class_name, "__slots__": ()})


# (minilora/__init__.py exports them under their names). BFloat16Storage is made on first use, as bfloat16 itself:
# building it would import ml_dtypes (~0.7 s) in every `import minilora`.
LEGACY_CLASSES = {_legacy_class_name(np.dtype(name)): _legacy_class(np.dtype(name))
                  for name in _LEGACY_DTYPES if name != "bfloat16"}


def __getattr__(name):
    if name == "BFloat16Storage" and dtypes.bfloat16_if_installed() is not None:
        return LEGACY_CLASSES.setdefault(name, _legacy_class(np.dtype(dtypes.bfloat16)))
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def is_storage(obj):
    """``torch.is_storage``: an UntypedStorage or a TypedStorage."""
    return isinstance(obj, (UntypedStorage, TypedStorage))


# ---- the tensor methods ----------------------------------------------------------------------------------------
def untyped_storage(self):
    """``x.untyped_storage()``: the bytes of ``x``'s memory, shared with every view of it."""
    return UntypedStorage._of_tensor(self)


def storage(self):
    """``x.storage()``: ``x``'s memory as elements of its dtype (deprecated: torch's warning, once)."""
    _warn_typed_storage_removal()
    return TypedStorage(wrap_storage=UntypedStorage._of_tensor(self), dtype=self.dtype, _internal=True)


def storage_type(self):
    """``x.storage_type()``: the legacy storage class of ``x``'s dtype (``torch.FloatStorage``)."""
    _warn_typed_storage_removal()
    name = _legacy_class_name(self.dtype)
    return LEGACY_CLASSES[name] if name in LEGACY_CLASSES else __getattr__(name)


def is_shared(self):
    """``x.is_shared()``: is ``x``'s memory in shared memory (``share_memory_()``)? Always for a CUDA tensor,
    as torch's."""
    return self._device.type == "cuda" or self._device.type == "cpu" and _is_shared(self._array)


def share_memory_(self):
    """``x.share_memory_()``: ``x``'s memory moved into a shared mapping, so a process forked afterwards writes
    into the same pages, as torch's. minilora refuses where other tensors view that memory (they would keep the
    old one: NumPy arrays cannot be re-pointed); a CUDA tensor is left as it is, as torch's."""
    if self._device.type != "cpu" or is_shared(self):
        return self
    if self._base is not None:
        _let_go_of_base(self)
    _refuse_if_viewed(self, "_array", "share_memory_")
    sizes, strides, offset = _shape._geometry(self._array)  # (kept: a transposed tensor stays transposed)
    memory = _shared_copy(_owner_bytes(_shape._owner(self._array)))
    elements = memory.view(np.uint16).view(self.dtype) if dtypes.is_bfloat16(self.dtype) else memory.view(self.dtype)
    self._array = _shape._strided(elements, sizes, strides, offset)
    return self


def _let_go_of_base(self):
    """``Parameter(t)`` and ``Tensor(t)`` keep ``t`` as their base, only to share its memory: where nothing else
    holds ``t`` (and ``self`` is no view op's result), ``self`` lets go of it and owns the memory alone. A real
    view is refused: the tensor it views would keep the old memory, where torch moves their one storage."""
    base = self._base
    # (references to base: self's slot, this frame's name, getrefcount's argument)
    if self._view is not None or base._array is not self._array or sys.getrefcount(base) > 3:
        raise NotImplementedError("share_memory_(): minilora cannot move a view's memory into shared memory (the "
                                  "tensor it views would keep the old memory, where torch moves their one storage); "
                                  "call share_memory_() on the tensor it views, before making views of it")
    self._base = None


def set_(self, source=None, storage_offset=0, size=None, stride=None):
    """``x.set_(source, storage_offset=0, size=None, stride=None)``: ``x`` becomes a tensor over ``source``'s
    memory (a Tensor: its very sizes, strides and offset; a storage: from ``storage_offset`` elements in, ``size``
    (the whole storage by default) and ``stride`` (contiguous by default)); ``x.set_()`` empties it. Not a view
    for autograd, as torch's."""
    self._check_inplace()
    if source is None:
        memory = self._device.xp.zeros(0, self.dtype)
    elif isinstance(source, Tensor):
        if source.dtype != self.dtype:
            from .ops import _c_name
            raise RuntimeError(f"Could not set tensor of type {_c_name(source.dtype)} to a tensor of type "
                               f"{_c_name(self.dtype)}")
        memory = source._array
    elif is_storage(source):
        memory = _over_storage(self, _untyped_of(source), storage_offset, size, stride)
    else:
        raise TypeError(f"set_(): argument 'source' must be Tensor or Storage, not {type(source).__name__}")
    recorded = is_grad_enabled() and (self._requires_grad or isinstance(source, Tensor) and source._requires_grad)
    if recorded:  # (torch records set_ with a node whose backward is not implemented)
        before = Tensor._make(self._array, self._device, self._requires_grad, self._ctx)
        sources = (source,) if isinstance(source, Tensor) else ()
        node = name_node(_SetInGraph.apply(before, *sources, memory=memory), "NotImplemented")
        self._ctx, self._requires_grad = node._ctx, True
    self._array, self._base, self._view = memory, None, None
    self._bump_version()
    return self


class _SetInGraph(Function):
    """``set_`` of a tensor in the graph (or from one): the new memory, with a node whose backward raises, as
    torch's (it has no derivative for set_)."""

    @staticmethod
    def forward(ctx, a, *sources, memory):
        return memory

    @staticmethod
    def backward(ctx, g):
        raise RuntimeError("derivative for set_ is not implemented")


def _over_storage(self, storage, offset, size, stride):
    """An array of ``self``'s dtype over ``storage``'s bytes with torch's geometry (checked as as_strided's)."""
    itemsize = self.dtype.itemsize
    raw = storage._bytes
    count = raw.size // itemsize
    elements = raw[:count * itemsize]
    elements = elements.view(np.uint16).view(self.dtype) if dtypes.is_bfloat16(self.dtype) else \
        elements.view(self.dtype)
    offset = int(offset)
    size = (count - offset,) if size is None else tuple(int(n) for n in size)
    if stride is None:
        stride, step = [], 1
        for n in reversed(size):
            stride.insert(0, step)
            step *= max(n, 1)
    stride = tuple(int(s) for s in stride)
    if any(s < 0 for s in stride):
        raise RuntimeError(f"Storage size calculation overflowed with sizes={list(size)} and strides={list(stride)}")
    needed = 0 if 0 in size else offset + 1 + sum((n - 1) * s for n, s in zip(size, stride))
    if needed > count:
        raise NotImplementedError(f"set_(): sizes {list(size)}, strides {list(stride)} and storage offset {offset} "
                                  f"need {needed * itemsize} bytes of a storage of {raw.size}; torch grows the "
                                  f"storage, minilora cannot move memory under the tensors viewing it")
    _shape._check_geometry(size, stride, offset, count, itemsize)
    return _shape._strided(elements, size, stride, offset, _shape.writeable(raw))


def is_set_to(self, tensor):
    """``x.is_set_to(y)``: the same memory, sizes and strides (``x[:]`` is set to ``x``; ``x.view(3, 2)`` is not)."""
    a, b = self._array, tensor._array
    if _shape._owner(a) is not _shape._owner(b) or a.shape != b.shape:
        return False
    if not a.size:
        return True
    return _address(a) == _address(b) and self.stride() == tensor.stride()


TENSOR_METHODS = {"untyped_storage": untyped_storage, "storage": storage, "storage_type": storage_type,
                  "is_shared": is_shared, "share_memory_": share_memory_, "set_": set_, "is_set_to": is_set_to}
for _name, _method in TENSOR_METHODS.items():
    setattr(Tensor, _name, _method)
