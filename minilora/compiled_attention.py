"""A Llama layer's float32 attention in gemm_pool's C threads (``native/attention.c``): the NumPy code of
``ops/nn.py``'s ``_attention_forward`` and of exercise 2.4's solution (``_attention_backward``), step for step, on
blocks of (batch, head) pairs.

Why: the NumPy code makes ~10 calls per block of the batch; two Python threads running blocks side by side meet
at the GIL after each call, so a LoRA step's attention ran ~1.5x faster on 2 threads than on 1, not 2x. In C the
blocks run apart, and the numbers are the NumPy code's: the same CBLAS calls (NumPy's own BLAS), the same
elementwise operations in order, torch's SLEEF exp as ``float32_math.sleef_exp`` (which the NumPy code calls for
float32), NumPy's pairwise sum where it calls ``.sum()`` (tests/test_compiled_attention_r26.py compares the bits).

``forward`` and ``backward`` return False (nothing done) where the NumPy code must run: not float32 NumPy arrays,
a last axis with a step, grouped-query heads, a product NumPy would not hand to BLAS's gemm (one row or column),
no compiler or no CBLAS, or a scratch allocation that failed.
"""
import ctypes
from pathlib import Path

import numpy as np

from . import blas, float32_math, gemm_pool, native, parallel

__all__ = ["forward", "backward"]

_SOURCE = Path(__file__).with_name("native") / "attention.c"


class _View(ctypes.Structure):  # attention.c's view: an array's first element and its steps along B, H, T
    _fields_ = [("at", ctypes.c_void_p), ("batch", ctypes.c_int64), ("head", ctypes.c_int64), ("row", ctypes.c_int64)]


_ARRAYS = ("q", "k", "v", "out", "probs", "bias", "g", "dq", "dk", "dv")


class _Args(ctypes.Structure):  # attention.c's attention_args
    _fields_ = ([(name, ctypes.c_void_p) for name in ("sgemm", "exp", "row_max")] + [(name, _View) for name in _ARRAYS]
                + [(name, ctypes.c_int64) for name in ("heads", "tq", "tk", "d", "dv_width", "bias_column")]
                + [("scale", ctypes.c_float), ("failed", ctypes.c_int64)])


_library = {}


def _kernels():
    """attention.c compiled and loaded (its two block kernels' argument types set), or None."""
    if "loaded" not in _library:
        library = native.load(_SOURCE)
        if library is not None:
            for kernel in (library.ml_attention_forward_blocks, library.ml_attention_backward_blocks):
                kernel.argtypes, kernel.restype = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64], None
        _library["loaded"] = library
    return _library["loaded"]


def _view(a):
    """An array's ``_View`` (steps in floats), or None where NumPy's matmul would not hand its [T, X] matrices to
    BLAS as they are: a last axis with a step, or rows closer than their width (a broadcast)."""
    steps = [step // 4 for step in a.strides]
    if steps[3] != 1 and a.shape[3] > 1 or steps[2] < a.shape[3]:
        return None
    return _View(native.address(a), *steps[:3])


def _arguments(q, k, v, out, probs, scale, bias=None, **gradients):
    """``_Args`` for these arrays, or None where the compiled attention does not take them."""
    library, exp = _kernels(), float32_math._native_library()
    arrays = dict(q=q, k=k, v=v, out=out, probs=probs, **gradients)
    b, heads, tq, d = q.shape
    tk = k.shape[2]
    if (library is None or exp is None or not blas.has_direct_gemm(np.float32)
            or any(type(a) is not np.ndarray or a.dtype != np.float32 or a.ndim != 4 or any(s % 4 for s in a.strides)
                   for a in [*arrays.values()] + ([] if bias is None else [bias]))
            or k.shape[1] != heads or min(tq, tk, d, v.shape[3]) < 2 or not probs.flags.c_contiguous):
        return None
    views = {name: _view(a) for name, a in arrays.items()}
    if None in views.values():
        return None
    args = _Args(sgemm=blas.gemm_address(np.float32), exp=_address(exp.ml_exp), row_max=_address(exp.ml_row_max),
                 heads=heads, tq=tq, tk=tk, d=d, dv_width=v.shape[3], scale=float(scale), **views)
    if bias is not None:  # (broadcast: steps of 0 along any axis, its keys' too)
        bias = np.broadcast_to(bias, (b, heads, tq, tk))
        args.bias = _View(native.address(bias), *(step // 4 for step in bias.strides[:3]))
        args.bias_column = bias.strides[3] // 4
    return args


def _address(function):
    return ctypes.cast(function, ctypes.c_void_p).value


def _run(kernel, args, pairs, work_per_pair):
    parallel.kernel_rows(pairs, gemm_pool.RowKernel(kernel, args, calls_blas=True), work_per_row=work_per_pair)
    return not args.failed


def forward(q, k, v, bias, out, probs, scale):
    """``_attention_forward(q, k, v, bias, out, probs, scale)`` for the whole batch, compiled; False where the
    NumPy code must run (module docstring). ``bias`` broadcast to [B, H, Tq, Tk] (steps of 0) or None."""
    args = _arguments(q, k, v, out, probs, scale, bias)
    return args is not None and _run(_kernels().ml_attention_forward_blocks, args, q.shape[0] * q.shape[1],
                                     8 * q.shape[2] * k.shape[2])


def backward(g, q, k, v, probs, out, dq, dk, dv, scale):
    """Exercise 2.4's solution (``_attention_backward``) for the whole batch, compiled; False where the NumPy code
    must run (module docstring)."""
    args = _arguments(q, k, v, out, probs, scale, g=g, dq=dq, dk=dk, dv=dv)
    return args is not None and _run(_kernels().ml_attention_backward_blocks, args, q.shape[0] * q.shape[1],
                                     8 * q.shape[2] * k.shape[2])
