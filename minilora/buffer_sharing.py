"""Tensors over memory someone else owns: ``torch.frombuffer`` (any Python buffer: bytes, bytearray,
array.array, mmap) and DLPack (``torch.from_dlpack`` / ``torch.utils.dlpack.to_dlpack``), the protocol
through which NumPy, torch and CuPy hand each other arrays without copying.

Both share memory as torch's do: a write through the tensor shows in the buffer and the other way. One
difference: torch writes into a read-only buffer (``bytes``) after its warning; NumPy keeps such memory
read-only, so here the warning is given and an in-place change then fails with NumPy's error, never writes.
"""
import warnings

import numpy as np

from . import dtypes
from .tensor import Tensor

_warned = set()


def _warn_not_writable():
    if "frombuffer" not in _warned:  # (torch's TORCH_WARN_ONCE)
        _warned.add("frombuffer")
        warnings.warn("The given buffer is not writable, and PyTorch does not support non-writable tensors. This "
                      "means you can write to the underlying (supposedly non-writable) buffer using the tensor. "
                      "You may want to copy the buffer to protect its data or make it writable before converting "
                      "it to a tensor. This type of warning will be suppressed for the rest of this program.",
                      UserWarning, stacklevel=3)


def frombuffer(buffer, *, dtype, count=-1, offset=0, requires_grad=False):
    """``torch.frombuffer``: a 1-D CPU tensor of ``count`` elements (all, by default) of ``dtype`` read from
    ``buffer`` after ``offset`` bytes, sharing its memory; torch's checks in torch's order and words."""
    try:
        view = memoryview(buffer)
    except TypeError:
        raise ValueError("object does not implement Python buffer protocol.") from None
    dtype = dtypes.dtype_argument("frombuffer", dtype)
    length, itemsize = view.nbytes, dtype.itemsize
    if not (length > 0 and count != 0):
        raise ValueError(f"both buffer length ({length}) and count ({count}) must not be 0")
    if not 0 <= offset < length:
        raise ValueError(f"offset ({offset} bytes) must be non-negative and no greater than buffer length "
                         f"({length} bytes) minus 1")
    if count <= 0 and (length - offset) % itemsize:
        raise ValueError(f"buffer length ({length - offset} bytes) after offset ({offset} bytes) must be a "
                         f"multiple of element size ({itemsize})")
    count = (length - offset) // itemsize if count < 0 else count
    if offset + count * itemsize > length:
        raise ValueError(f"requested buffer length ({count} * {itemsize} bytes) after offset ({offset} bytes) "
                         f"must not be greater than actual buffer length ({length} bytes)")
    if view.readonly:
        _warn_not_writable()
    array = np.frombuffer(view.cast("B"), dtype=dtypes.canonical(np.empty(0, dtype)).dtype, count=count,
                          offset=offset)
    return Tensor(array, dtype=array.dtype, device="cpu", requires_grad=requires_grad)


class _Capsule:
    """A DLPack capsule (what ``to_dlpack`` returns) behind the protocol NumPy's importer asks for."""

    def __init__(self, capsule):
        self.capsule = capsule

    def __dlpack__(self, **kwargs):
        return self.capsule

    def __dlpack_device__(self):
        return (1, 0)  # (kDLCPU: a bare capsule does not say; minilora's own capsules are CPU arrays' here)


def from_dlpack(ext_tensor):
    """``torch.from_dlpack``: a tensor sharing the memory of any object with ``__dlpack__`` (a NumPy array,
    a torch or CuPy tensor) or of a capsule from ``to_dlpack``; GPU memory becomes a ``cuda`` tensor."""
    if isinstance(ext_tensor, Tensor):
        return ext_tensor
    if not hasattr(ext_tensor, "__dlpack__"):
        ext_tensor = _Capsule(ext_tensor)
    device_type = ext_tensor.__dlpack_device__()[0]
    if int(device_type) == 2:  # kDLCUDA
        import cupy
        array = cupy.from_dlpack(ext_tensor)
        return Tensor(array, dtype=array.dtype, device="cuda")
    array = np.from_dlpack(ext_tensor)
    return Tensor(array, dtype=array.dtype, device="cpu")


def to_dlpack(tensor):
    """``torch.utils.dlpack.to_dlpack``: the tensor's DLPack capsule (its memory, not a copy)."""
    return tensor.__dlpack__()
