"""torch's CPU switches that scripts set at their top: ``torch.set_num_interop_threads`` /
``get_num_interop_threads`` and ``torch.set_flush_denormal``.

Inter-op threads run independent ops side by side (``torch.jit.fork``). minilora has no such pool, so the
number is only stored and read back, with torch's rules: a positive int, set at most once per process.

``set_flush_denormal(True)`` makes the CPU treat numbers below the normal range (float32 under ~1.2e-38) as
zero, on input (DAZ) and on output (FTZ): torch sets the two bits of the SSE control register MXCSR, and so
do we, through the C library's ``fegetenv``/``fesetenv`` (x86-64 glibc keeps MXCSR in the last four bytes of
its 32-byte ``fenv_t``). NumPy's loops run under that register, so ``tensor([1e-39])`` is 0 afterwards, as
in torch. MXCSR is per thread: the blocks of a big op that ``parallel.py`` hands to its helper threads
carry the caller's ``flushing()``, and a helper sets its own register to match before computing. Where the CPU or C library is another (not x86-64 Linux) it
changes nothing and returns False, torch's answer on a CPU without the bits.
"""
import ctypes
import numbers
import os
import platform
import sys
import threading

_NOT_SET = None
_thread = threading.local()  # .flushing: what set_flush_denormal last set in this thread
_interop = {"threads": _NOT_SET}
_FTZ_DAZ = 0x8000 | 0x0040  # MXCSR's flush-to-zero and denormals-are-zero bits
_FENV_BYTES, _MXCSR_OFFSET = 32, 28


def get_num_interop_threads():
    """The number set, else torch's default: the cores this process may use."""
    if _interop["threads"] is not _NOT_SET:
        return _interop["threads"]
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def set_num_interop_threads(nthreads):
    if isinstance(nthreads, bool) or not isinstance(nthreads, numbers.Integral):
        raise RuntimeError(f"set_num_interop_threads expects an int, but got {type(nthreads).__name__}")
    if nthreads <= 0:
        raise RuntimeError("set_num_interop_threads expects a positive integer")
    if _interop["threads"] is not _NOT_SET:
        raise RuntimeError("Error: cannot set number of interop threads after parallel work has started or "
                           "set_num_interop_threads called")
    _interop["threads"] = int(nthreads)


def _libm():
    if sys.platform != "linux" or platform.machine() not in ("x86_64", "AMD64"):
        return None
    try:
        return ctypes.CDLL("libm.so.6")
    except OSError:
        return None


def set_flush_denormal(mode):
    """Flush denormal numbers to zero in this thread (``mode=True``) or stop (``False``); True where done."""
    if not isinstance(mode, bool):
        raise RuntimeError(f"flush_denormal expects a bool, but got {type(mode).__name__}")
    libm = _libm()
    if libm is None:
        return False
    environment = (ctypes.c_ubyte * _FENV_BYTES)()
    if libm.fegetenv(environment) != 0:
        return False
    mxcsr = int.from_bytes(bytes(environment[_MXCSR_OFFSET:]), "little")
    mxcsr = mxcsr | _FTZ_DAZ if mode else mxcsr & ~_FTZ_DAZ
    environment[_MXCSR_OFFSET:] = list(mxcsr.to_bytes(4, "little"))
    if libm.fesetenv(environment) != 0:
        return False
    _thread.flushing = mode
    return True


def flushing():
    """Does this thread flush denormals (``set_flush_denormal(True)`` called here)?"""
    return getattr(_thread, "flushing", False)
