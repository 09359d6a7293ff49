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
from ..device import xp_of
from ..tensor import Function

__all__ = ["bgmv", "Bgmv"]


def _rows(ctx, A, ranks, index):
    """(clipped index, row-has-adapter mask [M, 1], rank mask [M, R]) for gathering one adapter per row."""
    xp = xp_of(A)
    used = index >= 0
    a = xp.where(used, index, 0)
    rank_mask = xp.arange(A.shape[1])[None, :] < ranks[a][:, None]
    return a, used[:, None], rank_mask & used[:, None]


class Bgmv(Function):
    """Inputs ``base [M, N], x [M, K], A [L, R, K], B [L, N, R]``; options ``ranks, scales, index``."""

    @staticmethod
    def forward(ctx, base, x, A, B, ranks=None, scales=None, index=None):
        a, used, keep = _rows(ctx, A, ranks, index)
        xp = xp_of(x)
        U = xp.einsum("mrk,mk->mr", A[a], x) * keep                   # shrink, padded ranks masked
        delta = xp.einsum("mnr,mr->mn", B[a], U) * scales[a][:, None]  # expand
        ctx.saved = (x, A, B, a, used, keep, scales)
        return base + delta * used

    @staticmethod
    def kernel_forward(ctx, base, x, A, B, ranks=None, scales=None, index=None):
        a, used, keep = _rows(ctx, A, ranks, index)
        ctx.saved = (x, A, B, a, used, keep, scales)
        Y = base.copy()  # the kernel adds into Y in place
        x, A, B = kernels.contiguous(x, A, B)
        xp = xp_of(x)
        return kernels.bgmv(Y, x, A, B, xp.asarray(ranks, dtype=np.int32), xp.asarray(scales, dtype=np.float32),
                             xp.asarray(index, dtype=np.int32), device=ctx.device)

    @staticmethod
    def backward(ctx, g):
        x, A, B, a, used, keep, scales = ctx.saved
        xp = xp_of(g)
        s = (scales[a][:, None] * used).astype(g.dtype)                # 0 for rows without adapter
        U = xp.einsum("mrk,mk->mr", A[a], x) * keep
        V = xp.einsum("mnr,mn->mr", B[a], g * s) * keep                # gradient reaching U
        dx = xp.einsum("mrk,mr->mk", A[a], V)
        dA, dB = xp.zeros_like(A), xp.zeros_like(B)
        xp.add.at(dA, a, V[:, :, None] * x[:, None, :])
        xp.add.at(dB, a, (g * s)[:, :, None] * U[:, None, :])
        return g, dx, dA, dB

    kernel_backward = backward


def bgmv(base, x, A, B, ranks, scales, index):
    """``base + s[a] * x A[a]^T B[a]^T`` per row ``a = index[m]`` (-1: no adapter); see the module docstring.

    ``base`` [M, N] and ``x`` [M, K] Tensors, ``A`` [L, R, K] and ``B`` [L, N, R] Tensors (zero-padded
    ranks), ``ranks`` [L] ints, ``scales`` [L] floats, ``index`` [M] ints: plain arrays.
    """
    xp = base.device.xp
    ranks, index = xp.asarray(ranks, dtype=np.int64), xp.asarray(index, dtype=np.int64)
    scales = xp.asarray(scales, dtype=x.dtype)
    if index.shape != (x.shape[0],):
        raise ValueError(f"bgmv: index needs one adapter per row of x ({x.shape[0]}), got shape {index.shape}")
    if ranks.shape != (A.shape[0],) or scales.shape != (A.shape[0],):
        raise ValueError(f"bgmv: ranks and scales need one entry per adapter ({A.shape[0]})")
    return Bgmv.apply(base, x, A, B, ranks=ranks, scales=scales, index=index)
