"""CuPy's ``cupy.cuda.runtime`` limits for the CPU emulator: ``deviceSetLimit`` / ``deviceGetLimit``.

Code that allocates in device code raises the device heap first, as CUDA needs::

    from minilora.emulator import cuda             # in place of cupy.cuda
    cuda.runtime.deviceSetLimit(cuda.runtime.cudaLimitMallocHeapSize, 64 << 20)

The heap's limit (8 MiB by default, as CUDA's) is the emulator's too: a device ``malloc`` or ``new`` past it answers
NULL, as on a GPU (runtime.cpp's device-heap books).  The stack and printf limits are kept and read back, but change
nothing: the emulator sizes each thread's stack from the compiler's report and keeps up to 16 MiB of printf output.
"""
from __future__ import annotations

import numbers

__all__ = ["cudaLimitStackSize", "cudaLimitPrintfFifoSize", "cudaLimitMallocHeapSize", "deviceSetLimit",
           "deviceGetLimit"]

# cudaLimit's values (driver_types.h)
cudaLimitStackSize, cudaLimitPrintfFifoSize, cudaLimitMallocHeapSize = 0x00, 0x01, 0x02
_limits = {cudaLimitStackSize: 1024, cudaLimitPrintfFifoSize: 1 << 20, cudaLimitMallocHeapSize: 8 << 20}


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
    _limits[limit] = int(value)


def deviceGetLimit(limit: int) -> int:
    """``cudaDeviceGetLimit(limit)``."""
    return _limits[_check_limit(limit)]


def heap_limit() -> int:
    """The device heap's size in bytes, which each launch hands the kernel's runtime."""
    return _limits[cudaLimitMallocHeapSize]
