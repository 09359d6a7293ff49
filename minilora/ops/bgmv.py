"""Per-row LoRA adapters as one differentiable op (BGMV: batched gather matrix-vector products).

``y[m] = base[m] + s[a] * B[a] (A[a] x[m])`` with ``a = index[m]`` (``-1``: row ``m`` keeps ``base``).
The adapters come stacked: ``A [L, R, K]``, ``B [L, N, R]``, each padded with zeros to the largest
rank ``R``; ``ranks [L]`` says how much of each is real (the kernel stops there, the NumPy math
masks the rest). This is how a multi-adapter server runs requests for different adapters in ONE
forward pass: the base GEMM is shared, only the rank-r branch differs per row.

Backward, per row with adapter ``a`` (``u = A_a x``, ``v = s B_a^T g``)::

    d base = g          dx = A_a^T v          dA_a += v x^T          dB_a += s g u^T

``forward`` / ``backward`` are the NumPy math; on ``emu`` / ``cuda`` for float32 the forward runs
kernels/bgmv.cu (``kernel_forward``) and the backward stays this NumPy math (serving needs no
gradient; it is here so the op is an op like the others and gradient-checked).
"""
import numpy as np

from .. import kernels
from .. import dtypes
from ..blas import matmul  # (np.matmul through minilora's BLAS: the products LoraLinear's rows get)
from ..device import xp_of
from ..tensor import Function

__all__ = ["bgmv", "Bgmv"]


def _groups(ranks, index):
    """(adapter, its rows, its rank) for each adapter some row uses: the NumPy math works adapter by
    adapter on the rows that use it (two small GEMMs each, as SGMV does), never copying an adapter per row."""
    host = index.get() if hasattr(index, "get") else index  # CuPy: the grouping is decided on the host
    return [(int(a), (host == a).nonzero()[0], int(ranks[int(a)])) for a in sorted(set(host.tolist()) - {-1})]


def _is_16_bit(dtype):
    return dtype.itemsize == 2 and dtypes.is_floating(dtype)


def _rounder(dtype):
    """One op in ``dtype``: its float32 result rounded to ``dtype`` (nothing for float32 adapters)."""
    return (lambda a: a) if dtype == np.float32 else (lambda a: a.astype(dtype).astype(np.float32))


def _forward_16bit(base, x, A, B, groups, scales):
    """A float16/bfloat16 base (adapters float32 or the same dtype), as PEFT's ``_mixed_batch_forward``: each
    sub-batch's ``lora_B(lora_A(x.to(A.dtype))) * scaling`` (float32, or rounded per op for 16-bit adapters)
    is rounded to the base dtype and added, ``result[rows] += ...``, rounding once more. The products are
    ``blas.matmul``'s (MKL's, torch's: NumPy's ``@`` put 92 of a float16 row's 384 logits a step off PEFT's)."""
    rnd, out = _rounder(A.dtype), base.copy()
    for a, rows, r in groups:
        U = rnd(matmul(dtypes.upcast(x[rows]), dtypes.upcast(A[a, :r]).T))
        # scales is float32 already (and np.float32() of a CuPy 0-d array would fail: no implicit conversion)
        lora = rnd(rnd(matmul(U, dtypes.upcast(B[a, :, :r]).T)) * scales[a])
        out[rows] = (dtypes.upcast(out[rows]) + lora.astype(base.dtype).astype(np.float32)).astype(base.dtype)
    return out


def _backward_16bit(g, x, A, B, groups, scales):
    """The gradients torch's autograd takes through ``_forward_16bit``: dx in x's dtype, dA and dB in the
    adapters' (float32 products, or rounded per op for 16-bit adapters)."""
    rnd, xp = _rounder(A.dtype), xp_of(g)
    dx, dA, dB = xp.zeros_like(x), xp.zeros_like(A), xp.zeros_like(B)
    for a, rows, r in groups:
        xs, Aa, Ba = dtypes.upcast(x[rows]), dtypes.upcast(A[a, :r]), dtypes.upcast(B[a, :, :r])
        U = rnd(matmul(xs, Aa.T))
        gs = rnd(dtypes.upcast(g[rows]) * scales[a])  # (scales: float32, as in _forward_16bit)
        V = rnd(matmul(gs, Ba))
        dx[rows] = rnd(matmul(V, Aa)).astype(x.dtype)
        dA[a, :r] = rnd(matmul(V.T, xs)).astype(A.dtype)
        dB[a, :, :r] = rnd(matmul(gs.T, U)).astype(B.dtype)
    return dx, dA, dB


class Bgmv(Function):
    """Inputs ``base [M, N], x [M, K], A [L, R, K], B [L, N, R]``; options ``ranks, scales, index``."""

    @staticmethod
    def forward(ctx, base, x, A, B, ranks=None, scales=None, index=None):
        ctx.saved = (x, A, B, _groups(ranks, index), scales)
        if _is_16_bit(base.dtype):
            return _forward_16bit(base, x, A, B, ctx.saved[3], scales)
        out = base.copy()
        for a, rows, r in ctx.saved[3]:
            U = matmul(x[rows], A[a, :r].T)                            # shrink [rows, r]
            out[rows] += scales[a] * matmul(U, B[a, :, :r].T)          # expand [rows, N]
        return out

    @staticmethod
    def kernel_forward(ctx, base, x, A, B, ranks=None, scales=None, index=None):
        ctx.saved = (x, A, B, _groups(ranks, index), scales)
        Y = base.copy()  # the kernel adds into Y in place
        x, A, B = kernels.contiguous(x, A, B)
        xp = xp_of(x)
        return kernels.bgmv(Y, x, A, B, xp.asarray(ranks, dtype=np.int32), xp.asarray(scales, dtype=np.float32),
                             xp.asarray(index, dtype=np.int32), device=ctx.device)

    @staticmethod
    def backward(ctx, g):
        x, A, B, groups, scales = ctx.saved
        if _is_16_bit(g.dtype):
            return (g,) + _backward_16bit(g, x, A, B, groups, scales)
        xp = xp_of(g)
        dx, dA, dB = xp.zeros_like(x), xp.zeros_like(A), xp.zeros_like(B)
        for a, rows, r in groups:
            U = matmul(x[rows], A[a, :r].T)
            gs = scales[a] * g[rows]
            V = matmul(gs, B[a, :, :r])                                # gradient reaching U [rows, r]
            dx[rows] = matmul(V, A[a, :r])
            dA[a, :r] = matmul(V.T, x[rows])
            dB[a, :, :r] = matmul(gs.T, U)
        return g, dx, dA, dB

    kernel_backward = backward


def bgmv(base, x, A, B, ranks, scales, index):
    """``base + s[a] * x A[a]^T B[a]^T`` per row ``a = index[m]`` (-1: no adapter); see the module docstring.

    ``base`` [M, N] and ``x`` [M, K] Tensors, ``A`` [L, R, K] and ``B`` [L, N, R] Tensors (zero-padded
    ranks), ``ranks`` [L] ints, ``scales`` [L] floats, ``index`` [M] ints: plain arrays.
    """
    xp = base.device.xp
    ranks, index = xp.asarray(ranks, dtype=np.int64), xp.asarray(index, dtype=np.int64)
    scales = xp.asarray(scales, dtype=dtypes.compute_dtype(x.dtype))  # 16-bit: float32 (torch's scalar math)
    if index.shape != (x.shape[0],):
        raise ValueError(f"bgmv: index needs one adapter per row of x ({x.shape[0]}), got shape {index.shape}")
    if ranks.shape != (A.shape[0],) or scales.shape != (A.shape[0],):
        raise ValueError(f"bgmv: ranks and scales need one entry per adapter ({A.shape[0]})")
    return Bgmv.apply(base, x, A, B, ranks=ranks, scales=scales, index=index)
