"""NumPy's own BLAS, called directly for the one thing ``np.matmul`` cannot say: accumulate.

BLAS's matrix product is ``C = alpha * A @ B + beta * C``. NumPy always calls it with beta = 0, so
``Y += U @ B.T`` costs a temporary the size of Y and a second pass over Y to add it. LoRA's forward
does exactly that (the rank-r term ``s U B^T`` added to the base product ``X W0^T``), and so does
its backward (``dX = dY W0 + V A``). With beta = 1 the product lands in Y directly: for a
[512, 688] block of a LoRA layer, 0.10 ms instead of 0.25 ms.

    blas.gemm(U, B.T, out=Y, alpha=s, beta=1.0)     # Y = s U B^T + Y, no temporary

The BLAS here is the OpenBLAS that NumPy's wheels ship (Linux, Windows), found in the process's
loaded libraries and called through ctypes; ctypes releases the GIL, so ``minilora.parallel``'s
threads run their products side by side. Where it is missing (macOS's Accelerate, CuPy arrays,
integer or mixed dtypes, strided views) ``gemm`` computes the same thing with NumPy/CuPy operators;
bfloat16 and float16 in float32, rounded once, as torch's CPU kernels.
``get_num_threads()`` / ``set_num_threads(n)`` are the other direct calls: minilora runs BLAS on one
thread while it computes, and puts the caller's count back afterwards (``minilora.parallel`` says why).
"""
import ctypes
import functools
import threading

import numpy as np

from .dtypes import is_floating, upcast

__all__ = ["gemm", "addmm_", "has_direct_gemm", "gemm_address", "operand_form", "get_num_threads", "set_num_threads"]

_ROW_MAJOR, _NO_TRANS, _TRANS = 101, 111, 112


def _openblas_libraries():
    """The OpenBLAS libraries this process has loaded (NumPy's wheels bundle one)."""
    try:
        with open("/proc/self/maps") as maps:  # Linux: the shared libraries this process loaded
            paths = {line.split()[-1] for line in maps if "openblas" in line.lower()}
    except OSError:
        return []
    libraries = []
    for path in sorted(paths):
        try:
            libraries.append(ctypes.CDLL(path))
        except OSError:
            pass
    return libraries


def _openblas_function(verb):
    """OpenBLAS's ``openblas_<verb>_num_threads`` under whichever name this build exports, or None."""
    for lib in _openblas_libraries():
        for name in (f"scipy_openblas_{verb}_num_threads64_", f"scipy_openblas_{verb}_num_threads",
                     f"openblas_{verb}_num_threads64_", f"openblas_{verb}_num_threads"):
            fn = getattr(lib, name, None)
            if fn is not None:
                fn.restype = ctypes.c_int if verb == "get" else None
                return fn
    return None


@functools.lru_cache(maxsize=None)
def _thread_setter():
    return _openblas_function("set")


@functools.lru_cache(maxsize=None)
def _thread_getter():
    return _openblas_function("get")


def get_num_threads():
    """OpenBLAS's own thread count (NumPy's BLAS on Linux and Windows), or None where there is none."""
    getter = _thread_getter()
    return None if getter is None else int(getter())


def set_num_threads(n):
    """Set OpenBLAS's own thread count (NumPy's BLAS on Linux and Windows); False where there is
    none (other BLAS libraries are left alone). While a thread flushes denormals (``hold_one_thread``)
    the count is kept for later and OpenBLAS stays on one thread."""
    global _count_after_hold
    setter = _thread_setter()
    if setter is None:
        return False
    with _hold_lock:
        if _holders:
            _count_after_hold = int(n)
        else:
            setter(int(n))
    return True


# OpenBLAS's own threads keep the MXCSR they started with: NumPy's wheels are built without OpenBLAS's
# CONSISTENT_FPCSR, which would hand them the caller's. So after set_flush_denormal(True), a product big enough
# for OpenBLAS to thread came out half flushed (the caller's rows flushed, the workers' not), where torch's is
# flushed throughout. While any thread has turned flushing on, OpenBLAS runs on the calling thread alone; the
# count set meanwhile (parallel.computing saves and restores it) takes effect when the last one turns it off.
# (A thread that ends while flushing keeps holding: only speed is lost.)
_hold_lock = threading.RLock()  # (reentrant: a signal handler may call set_flush_denormal inside it)
_holders = set()  # the threads (idents) that turned flushing on
_count_after_hold = None


def hold_one_thread(holder, hold):
    """``hold=True``: ``holder`` (a thread ident) needs OpenBLAS on one thread until it calls this with False."""
    global _count_after_hold
    setter = _thread_setter()
    if setter is None:
        return
    with _hold_lock:
        was_held = bool(_holders)
        if hold:
            _holders.add(holder)
        else:
            _holders.discard(holder)
        if _holders and not was_held:
            _count_after_hold = get_num_threads()
            setter(1)
        elif was_held and not _holders:
            setter(_count_after_hold)
            _count_after_hold = None


@functools.lru_cache(maxsize=None)
def _cblas_gemm(dtype):
    """The CBLAS ``?gemm`` for float32 ('s') or float64 ('d') with its argument types, or None.

    Only the ILP64 names (suffix ``64_``, 64-bit integer arguments) are used: NumPy's wheels ship
    those, and an unsuffixed name does not say how wide its integers are -- guessing wrong would
    corrupt memory, so there the NumPy fallback runs instead."""
    letter = {np.dtype(np.float32): "s", np.dtype(np.float64): "d"}.get(np.dtype(dtype))
    if letter is None:
        return None
    scalar = ctypes.c_float if letter == "s" else ctypes.c_double
    for lib in _openblas_libraries():
        for name in (f"scipy_cblas_{letter}gemm64_", f"cblas_{letter}gemm64_"):
            fn = getattr(lib, name, None)
            if fn is not None:
                i64, ptr = ctypes.c_int64, ctypes.c_void_p
                fn.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int, i64, i64, i64, scalar, ptr, i64,
                               ptr, i64, scalar, ptr, i64]
                fn.restype = None
                return fn
    return None


def gemm_address(dtype):
    """The address of the CBLAS ``?gemm`` for float32/float64 (for C code that calls it: native/gemm_pool.c),
    or None."""
    fn = _cblas_gemm(dtype)
    return None if fn is None else ctypes.cast(fn, ctypes.c_void_p).value


def has_direct_gemm(dtype=np.float32):
    """Whether ``gemm`` calls BLAS directly for this dtype (else it falls back to NumPy)."""
    return _cblas_gemm(dtype) is not None


def operand_form(a):
    """``(transpose flag, leading dimension)`` of a 2-D operand as CBLAS row-major sees it, or None
    when its memory is neither rows nor columns of a dense matrix (a strided view)."""
    rows_stride, cols_stride = (s // a.itemsize for s in a.strides)
    if cols_stride == 1 and rows_stride >= max(1, a.shape[1]):
        return _NO_TRANS, rows_stride
    if rows_stride == 1 and cols_stride >= max(1, a.shape[0]):  # a transposed view, e.g. W.T
        return _TRANS, cols_stride
    return None


def gemm(a, b, out, alpha=1.0, beta=0.0):
    """``out[...] = alpha * (a @ b) + beta * out``, in place; returns ``out``.

    ``a`` [M, K], ``b`` [K, N], ``out`` [M, N]: 2-D arrays of one dtype. With beta = 0, ``out``'s old
    values are ignored (even NaN), as in BLAS."""
    M, K = a.shape
    N = b.shape[1]
    if b.shape[0] != K or out.shape != (M, N):
        raise ValueError(f"gemm: shapes {a.shape} @ {b.shape} -> {out.shape} do not match")
    if not _direct_gemm_applies(a, b, out):
        return _gemm_with_operators(a, b, out, alpha, beta)
    ops = operand_form(a), operand_form(b)
    if None in ops:
        return _gemm_with_operators(a, b, out, alpha, beta)
    fn = _cblas_gemm(out.dtype)
    (trans_a, lda), (trans_b, ldb) = ops
    fn(_ROW_MAJOR, trans_a, trans_b, M, N, K, alpha, a.ctypes.data, lda, b.ctypes.data, ldb, beta,
       out.ctypes.data, N)
    return out


def addmm_(out, a, b, *, beta=1.0, alpha=1.0):
    """PyTorch's ``out.addmm_(a, b, beta=beta, alpha=alpha)`` on arrays: ``out = beta * out + alpha * (a @ b)``,
    in place and, where BLAS is at hand, without a temporary for the product. This is the name the
    teaching code uses (``addmm_(Y, U, B.T, alpha=s)`` reads ``Y += s U B^T``); ``gemm`` is the call."""
    return gemm(a, b, out, alpha=alpha, beta=beta)


def _direct_gemm_applies(a, b, out):
    """NumPy arrays of one float dtype that BLAS has, aligned, ``out`` C-contiguous and not
    overlapping an input (BLAS would read values it has already overwritten), nothing empty."""
    return (isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and isinstance(out, np.ndarray)
            and a.dtype == b.dtype == out.dtype and _cblas_gemm(out.dtype) is not None
            and out.flags.c_contiguous and a.flags.aligned and b.flags.aligned and out.flags.aligned
            and min(a.size, b.size, out.size) > 0
            and not np.may_share_memory(out, a) and not np.may_share_memory(out, b))


def _gemm_with_operators(a, b, out, alpha, beta):
    """The same as ``gemm`` with array operators (a temporary for the product)."""
    if out.dtype.itemsize == 2 and is_floating(out.dtype):
        return _gemm_16bit(a, b, out, alpha, beta)
    product = a @ b
    if alpha != 1.0:
        product *= alpha
    if beta == 0.0:
        out[...] = product
    else:
        if beta != 1.0:
            out *= beta
        out += product
    return out


def _gemm_16bit(a, b, out, alpha, beta):
    """``gemm`` for bfloat16/float16 ``out``, as torch's CPU ``addmm_``: ``alpha * a @ b + beta * out``
    all in float32 and rounded once. (NumPy's ``a @ b`` of two bfloat16 arrays is float32 with the
    products summed in bfloat16, and the usual ``out += product`` would round twice.)"""
    result = upcast(a) @ upcast(b)
    if alpha != 1.0:
        result *= alpha
    if beta != 0.0:
        result += upcast(out) if beta == 1.0 else beta * upcast(out)
    out[...] = result.astype(out.dtype)
    return out
