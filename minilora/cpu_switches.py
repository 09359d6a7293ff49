"""torch's CPU switches that scripts set at their top: ``torch.set_num_interop_threads`` /
``get_num_interop_threads`` and ``torch.set_flush_denormal``.

Inter-op threads run independent ops side by side (``torch.jit.fork``). minilora has no such pool, so the
number is only stored and read back, with torch's rules: a positive int, set at most once per process.

``set_flush_denormal(True)`` makes the CPU treat numbers below the normal range (float32 under ~1.2e-38) as
zero, on input (DAZ) and on output (FTZ): torch sets the two bits of the SSE control register MXCSR, and so
do we, through the C library's ``fegetenv``/``fesetenv`` (x86-64 glibc keeps MXCSR in the last four bytes of
its 32-byte ``fenv_t``). NumPy's loops run under that register, so ``tensor([1e-39])`` is 0 afterwards, as
in torch. MXCSR is per thread, and whoever set the caller's -- this function, ``torch.set_flush_denormal``,
a library built with ``-ffast-math`` -- the blocks of a big op run under the caller's: ``parallel.py``'s
helper threads read the caller's ``control()`` with each block and ``follow`` it, and gemm_pool.c's C
threads do the same in C. (A thread keeps the register it had when it started, so without this a helper
started before the switch computed its rows unflushed: an op's rows half flushed, half not.) OpenBLAS's own
threads cannot follow (NumPy's build does not pass them the caller's register), so while this function has
flushing on in any thread, OpenBLAS runs on one thread (``blas.hold_one_thread``). Where the CPU
or C library is another (not x86-64 Linux) it changes nothing and returns False, torch's answer on a CPU
without the bits.
"""
import ctypes
import functools
import numbers
import os
import platform
import sys
import threading

from . import blas

_NOT_SET = None
_interop = {"threads": _NOT_SET}
_FTZ_DAZ = 0x8000 | 0x0040  # MXCSR's flush-to-zero and denormals-are-zero bits
# The MXCSR bits that change an op's numbers: FTZ, DAZ and the rounding mode (0x6000). Not the exception
# masks (an unmasked one would turn a helper's overflow into a SIGFPE that kills the process) nor the flags.
CONTROL_BITS = _FTZ_DAZ | 0x6000  # (gemm_pool.c's CSR_CONTROL: the same bits)
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


@functools.lru_cache(maxsize=None)
def _libm():
    if sys.platform != "linux" or platform.machine() not in ("x86_64", "AMD64"):
        return None
    try:
        return ctypes.CDLL("libm.so.6")
    except OSError:
        return None


def _environment():
    """This thread's floating-point environment (``fenv_t``'s bytes), or None where it cannot be read."""
    libm = _libm()
    environment = (ctypes.c_ubyte * _FENV_BYTES)()
    if libm is None or libm.fegetenv(environment) != 0:
        return None
    return environment


def _mxcsr(environment):
    return int.from_bytes(bytes(environment[_MXCSR_OFFSET:]), "little")


def _set_control(environment, bits):
    """Put ``bits`` (``CONTROL_BITS`` of MXCSR) into this thread's register; True where done."""
    mxcsr = _mxcsr(environment) & ~CONTROL_BITS | bits & CONTROL_BITS
    environment[_MXCSR_OFFSET:] = list(mxcsr.to_bytes(4, "little"))
    return _libm().fesetenv(environment) == 0


def set_flush_denormal(mode):
    """Flush denormal numbers to zero in this thread (``mode=True``) or stop (``False``); True where done."""
    if not isinstance(mode, bool):
        raise RuntimeError(f"flush_denormal expects a bool, but got {type(mode).__name__}")
    environment = _environment()
    if environment is None:
        return False
    bits = _mxcsr(environment) & CONTROL_BITS
    done = _set_control(environment, bits | _FTZ_DAZ if mode else bits & ~_FTZ_DAZ)
    if done:  # OpenBLAS's own threads would not follow this thread's register (blas.hold_one_thread)
        blas.hold_one_thread(threading.get_ident(), mode)
    return done


def control():
    """This thread's MXCSR ``CONTROL_BITS`` (flush-to-zero, denormals-are-zero, rounding), whoever set them;
    None where they cannot be read (not x86-64 Linux)."""
    environment = _environment()
    return None if environment is None else _mxcsr(environment) & CONTROL_BITS


def follow(bits):
    """Make this thread's MXCSR control bits ``bits`` (another thread's ``control()``), where they differ."""
    environment = _environment()
    if bits is not None and environment is not None and _mxcsr(environment) & CONTROL_BITS != bits:
        _set_control(environment, bits)


def flushing():
    """Does this thread flush denormals (FTZ or DAZ set: ``set_flush_denormal(True)``, torch's, or another's)?"""
    return bool((control() or 0) & _FTZ_DAZ)
