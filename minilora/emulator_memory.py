"""CuPy's ``MemoryPointer`` for the emulator's ``__constant__`` and ``__device__`` symbols (``RawModule.get_global``).

CuPy's ``get_global(name)`` answers a ``cupy.cuda.MemoryPointer`` to the symbol, and code fills it in one of two
ways::

    memptr = mod.get_global("c_coeffs")
    memptr.copy_from_host(host.ctypes.data_as(ctypes.c_void_p), host.nbytes)   # or copy_from_device(d.data, n)
    cupy.ndarray((8,), cupy.float32, memptr)[...] = values                      # a device array over it

Here ``get_global`` answers a ``GlobalSymbol``: a 1-D NumPy array of the symbol's elements (filled with
``[:] = ...``, as minilora's tests do) that also has MemoryPointer's copy methods, so both CuPy forms run unedited
(``emulator.ndarray(shape, dtype, memptr)`` stands for ``cupy.ndarray``).  A device array is a NumPy array here, so
``d.data`` (its memoryview) is a device pointer.  Unlike CuPy, which does not know a symbol's size, a copy or a view
that runs past the symbol's end is refused, naming it: on a GPU it would write the module's next symbol.  A copy
"async" on a stream has finished when it returns, as every launch has (``emulator_streams``).
"""
from __future__ import annotations

import ctypes
import numbers

import numpy as np

__all__ = ["GlobalSymbol", "ndarray"]


class GlobalSymbol(np.ndarray):
    """A file-scope ``__constant__`` / ``__device__`` variable: its elements, and CuPy's MemoryPointer methods."""

    symbol: str = "?"

    def __array_finalize__(self, obj) -> None:
        self.symbol = getattr(obj, "symbol", "?")

    @classmethod
    def of(cls, elements: np.ndarray, name: str) -> "GlobalSymbol":
        view = elements.view(cls)
        view.symbol = name
        return view

    # -- MemoryPointer's attributes ------------------------------------------------------------------------------
    @property
    def ptr(self) -> int:
        """The symbol's address, as ``MemoryPointer.ptr`` (an int)."""
        return self.ctypes.data

    device_id = 0

    # -- copies --------------------------------------------------------------------------------------------------
    def copy_from_host(self, mem, size) -> None:
        """Copy `size` bytes from the host address `mem` (an int or a ``ctypes.c_void_p``) into the symbol."""
        size = self._checked_size(size, "copy_from_host")
        self._check_writable("copy_from_host")
        if size:
            ctypes.memmove(self.ptr, _host_address(mem), size)

    def copy_from_device(self, src, size) -> None:
        """Copy `size` bytes from device memory (an array, its ``.data``, or another symbol) into the symbol."""
        size = self._checked_size(size, "copy_from_device")
        self._check_writable("copy_from_device")
        if size:
            source = _device_bytes(src, "copy_from_device")
            _check_source(source, size, "copy_from_device")
            self.view(np.ndarray).view(np.uint8)[:size] = source[:size]

    def copy_from(self, mem, size) -> None:
        """CuPy's copy_from: from device memory when `mem` is device memory, else from the host address `mem`."""
        if _is_device_memory(mem):
            self.copy_from_device(mem, size)
        else:
            self.copy_from_host(mem, size)

    def copy_to_host(self, mem, size) -> None:
        """Copy the symbol's first `size` bytes to the host address `mem`."""
        size = self._checked_size(size, "copy_to_host")
        if size:
            ctypes.memmove(_host_address(mem), self.ptr, size)

    def memset(self, value, size) -> None:
        """Set the symbol's first `size` bytes to `value` (its low byte, as cudaMemset)."""
        size = self._checked_size(size, "memset")
        self._check_writable("memset")
        if size:
            ctypes.memset(self.ptr, int(value) & 0xFF, size)

    def _async(name):  # the *_async forms: the copy is done when the call returns, whatever the stream
        def copy(self, mem, size, stream=None):
            return getattr(self, name)(mem, size)
        copy.__name__ = copy.__qualname__ = name + "_async"
        copy.__doc__ = f"As {name}: done when it returns, on any stream."
        return copy

    copy_from_host_async = _async("copy_from_host")
    copy_from_device_async = _async("copy_from_device")
    copy_from_async = _async("copy_from")
    copy_to_host_async = _async("copy_to_host")
    memset_async = _async("memset")
    del _async

    def _check_writable(self, what: str) -> None:
        # a const / constexpr variable lies in the library's read-only pages: writing there would crash Python
        if not self.flags.writeable:
            raise ValueError(f"{what}: '{self.symbol}' is declared const (or constexpr), so the emulator keeps it "
                             "read-only (nvcc may fold its values into the code, so a write need not reach the "
                             "kernel on a GPU either); drop the const to fill it from the host")

    def _checked_size(self, size, what: str) -> int:
        if isinstance(size, bool) or not isinstance(size, numbers.Integral) or size < 0:
            raise TypeError(f"{what}: size must be a non-negative int of bytes, got {size!r}")
        if size > self.nbytes:
            raise ValueError(f"{what} of {size} bytes runs past the end of '{self.symbol}' ({self.nbytes} bytes): "
                             "on a GPU it would overwrite the module's next symbol")
        return int(size)


def _host_address(mem) -> int:
    """A host pointer as CuPy takes one: an int or a ctypes pointer (``x.ctypes.data_as(ctypes.c_void_p)``)."""
    if isinstance(mem, numbers.Integral) and not isinstance(mem, bool):
        return int(mem)
    if isinstance(mem, (ctypes.c_void_p, ctypes._Pointer)):
        return ctypes.cast(mem, ctypes.c_void_p).value or 0
    raise TypeError(f"a host pointer is an int or a ctypes pointer (x.ctypes.data_as(ctypes.c_void_p)), got "
                    f"{type(mem).__name__}: for an array use copy_from_device(x.data, size) or [:] = x")


def _is_device_memory(mem) -> bool:
    return isinstance(mem, (np.ndarray, memoryview))


def _device_bytes(src, what: str) -> np.ndarray:
    if isinstance(src, np.ndarray):
        if not src.flags.c_contiguous:
            raise ValueError(f"{what}: the source array is not contiguous")
        return src.reshape(-1).view(np.uint8)
    if isinstance(src, memoryview):
        return np.frombuffer(src.cast("B") if src.c_contiguous else src.tobytes(), np.uint8)
    raise TypeError(f"{what}: the source is device memory (an array or its .data), got {type(src).__name__}")


def _check_source(source: np.ndarray, size: int, what: str) -> None:
    if size > source.size:
        raise ValueError(f"{what} of {size} bytes reads past the end of its {source.size}-byte source")


def ndarray(shape, dtype=float, memptr=None, strides=None, order="C") -> np.ndarray:
    """``cupy.ndarray(shape, dtype, memptr)``: with `memptr` a symbol from ``get_global``, an array over its bytes
    (writing it fills the symbol); without one, a new uninitialised array as CuPy's."""
    if memptr is None:
        if strides is not None:
            raise ValueError("strides= needs a memptr= here (a new array is C- or F-ordered)")
        return np.empty(shape, dtype, order=order)
    if not isinstance(memptr, GlobalSymbol):
        raise TypeError(f"memptr must be what RawModule.get_global answers, got {type(memptr).__name__}")
    dtype = np.dtype(dtype)
    need = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if need > memptr.nbytes:
        raise ValueError(f"an array of shape {tuple(np.atleast_1d(shape))} and dtype {dtype} needs {need} bytes, "
                         f"past the end of '{memptr.symbol}' ({memptr.nbytes} bytes)")
    return np.ndarray(shape, dtype, buffer=memptr.view(np.ndarray), strides=strides, order=order)
