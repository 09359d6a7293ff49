"""CuPy's ``cupy.cuda.runtime`` limits for the CPU emulator: ``deviceSetLimit`` / ``deviceGetLimit``.

Code that allocates in device code raises the device heap first, as CUDA needs::

    from minilora.emulator import cuda             # in place of cupy.cuda
    cuda.runtime.deviceSetLimit(cuda.runtime.cudaLimitMallocHeapSize, 64 << 20)

The heap's limit (8 MiB by default, as CUDA's) is the emulator's too: a device ``malloc`` or ``new`` past it answers
NULL, as on a GPU (runtime.cpp's device-heap books).  The heap is the context's, as CUDA's: every module's kernels
draw on the same one, and what a kernel allocates and never frees stays taken for all of them, launch after launch,
until ``deviceReset()`` (``deviceHeapInUse()``, the emulator's own, says how many bytes device code holds: a leak
shows there).  As CUDA's, the limit is fixed once a kernel has used the heap (the printf FIFO's once a kernel has
printed): setting it then is ``CUDARuntimeError: cudaErrorInvalidValue``, where code that raised it late ran on the
emulator and failed on a GPU.  The stack and printf limits' values are kept and read back, but change nothing: the
emulator sizes each thread's stack from the compiler's report and keeps up to 16 MiB of printf output.
"""
from __future__ import annotations

import numbers

__all__ = ["cudaLimitStackSize", "cudaLimitPrintfFifoSize", "cudaLimitMallocHeapSize", "deviceSetLimit",
           "deviceGetLimit", "deviceReset", "deviceHeapInUse", "CUDARuntimeError"]


class CUDARuntimeError(RuntimeError):
    """``cupy.cuda.runtime.CUDARuntimeError``: the message starts with the runtime's error name."""

# cudaLimit's values (driver_types.h)
cudaLimitStackSize, cudaLimitPrintfFifoSize, cudaLimitMallocHeapSize = 0x00, 0x01, 0x02
_DEFAULT_LIMITS = {cudaLimitStackSize: 1024, cudaLimitPrintfFifoSize: 1 << 20, cudaLimitMallocHeapSize: 8 << 20}
_limits = dict(_DEFAULT_LIMITS)
# The context's device heap: its books live in the first module loaded (runtime.cpp's DeviceHeap), and every module
# loaded after it keeps its books there too (join_context); whether a kernel has used the heap yet (then its size is
# fixed).
_context_library = None
_heap_fixed = False
_printf_fixed = False  # a kernel has printed: the printf FIFO's size is fixed too
# What sanitize=True launches left allocated: each runs in a child process, handed the limit and the bytes held
# (its books start there), which reports what its kernel left live; counted here, as their memory died with it.
_sanitizer_live = 0


def _check_limit(limit) -> int:
    if isinstance(limit, bool) or not isinstance(limit, numbers.Integral) or int(limit) not in _limits:
        raise ValueError(f"cudaErrorUnsupportedLimit: unsupported limit {limit!r} (the emulator keeps "
                         "cudaLimitStackSize, cudaLimitPrintfFifoSize and cudaLimitMallocHeapSize)")
    return int(limit)


def deviceSetLimit(limit: int, value: int) -> None:
    """``cudaDeviceSetLimit(limit, value)``."""
    limit = _check_limit(limit)
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise OverflowError(f"can't convert {value!r} to size_t")
    # CUDA: "Setting cudaLimitMallocHeapSize must be performed before launching any kernel that uses the malloc()
    # or free() device system calls, otherwise cudaErrorInvalidValue will be returned" (cudaLimitPrintfFifoSize the
    # same, for printf)
    fixed = {cudaLimitMallocHeapSize: (_heap_fixed, "used the device heap", "allocates"),
             cudaLimitPrintfFifoSize: (_printf_fixed, "called printf", "prints")}
    if fixed.get(limit, (False,))[0]:
        _, used, does = fixed[limit]
        name = "cudaLimitMallocHeapSize" if limit == cudaLimitMallocHeapSize else "cudaLimitPrintfFifoSize"
        raise CUDARuntimeError(f"cudaErrorInvalidValue: invalid argument ({name} is fixed once a kernel has {used}: "
                               f"set it before the first launch that {does}, or after deviceReset())")
    _limits[limit] = int(value)


def deviceGetLimit(limit: int) -> int:
    """``cudaDeviceGetLimit(limit)``."""
    return _limits[_check_limit(limit)]


def heap_limit() -> int:
    """The device heap's size in bytes, which each launch hands the kernel's runtime."""
    return _limits[cudaLimitMallocHeapSize]


def deviceReset() -> None:
    """``cudaDeviceReset()``: a new context -- default limits, an empty device heap (what device code held is gone:
    freeing it later is an invalid free), its size settable again."""
    global _heap_fixed, _printf_fixed, _sanitizer_live
    if _context_library is not None:
        _context_library.emu_heap_reset()
    _limits.update(_DEFAULT_LIMITS)
    _heap_fixed = _printf_fixed = False
    _sanitizer_live = 0


def deviceHeapInUse() -> int:
    """The emulator's own: bytes of the device heap that device code has allocated and not freed, over every
    module's kernels -- a kernel that leaks shows here, launch after launch."""
    return _sanitizer_live + (0 if _context_library is None else int(_context_library.emu_heap_live()))


def sanitizer_launch_holds(leaked: int) -> None:
    """After a sanitize=True launch: the bytes its kernel allocated and did not free (its child's books)."""
    global _sanitizer_live
    _sanitizer_live += max(leaked, 0)


def join_context(library) -> None:
    """A module's library, just loaded: the first one's device heap is the context's, the others keep theirs in it
    (so kernels of different modules share the limit and may free each other's allocations, as on a GPU)."""
    global _context_library
    if _context_library is None:
        _context_library = library
    else:
        library.emu_share_heap(_context_library.emu_heap_books())


def printed() -> None:
    """After a launch that printed: the printf FIFO's size is fixed."""
    global _printf_fixed
    _printf_fixed = True


def heap_launched(used: bool) -> None:
    """After a launch: a kernel that has allocated fixes the heap's size."""
    global _heap_fixed
    _heap_fixed = _heap_fixed or used
