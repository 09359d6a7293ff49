"""Scaled-dot-product attention on float32/float64 as torch's CPU flash-attention kernel computes it, with MKL.

torch 2.13 runs ``F.scaled_dot_product_attention`` on 4-D CPU inputs (transformers' default "sdpa" Llama attention)
in ``cpu_flash_attention`` (aten/src/ATen/native/cpu/FlashAttentionKernel.cpp), not as a plain softmax: for each
block of queries (32, 64 or 256 rows by the query length) and of 512 keys it computes, in the input's own dtype,

    S = q k^T                                       MKL's gemm on that block (the same call here: ``blas.gemm``)
    S = fma(S, scale, mask)  or  S * scale          one rounding with a mask, the scaling alone without
    top = max(top, rowmax(S))                       a row whose every key is masked so far: left as it is
    E = exp_u20(S - top)                            ATen's own vector exp (float32; float64: SLEEF's) on
                                                    whole vectors, C's exp on the last len % lanes
    sum = fma(exp(top_before - top), sum, lane_sum(E))
    dst = dst * exp(top_before - top)               (from the second block of keys on)
    dst = E v + dst                                 MKL's gemm with beta = 1 (beta = 0 for the first block)

and at the end ``out = dst * (1 / sum)``. The lane sums: float32's 16 lanes (AVX-512) folded pairwise (i + i^8,
^4, ^2, ^1), float64's 8 lanes added in order, then the tail elements in order. Every step was found by comparing
with torch's outputs (the products are MKL's own calls, so they need no model: only the kernel's block shapes).
Only with MKL as minilora's BLAS (``blas.library() == "mkl"``): with another BLAS the products differ anyway, and the
plain ``ops.nn.Attention`` runs. The forward only (inference, ``generate``): where a gradient is wanted
``ops.nn.Attention`` runs too (the fast fused path; its values may differ from torch's in the last bits).
"""
import numpy as np

from .. import blas, float32_math
from ..device import xp_of
from ..tensor import Function, is_grad_enabled
from .attention16 import _KV_BLOCK, _LANES, _bits, _expf, _q_block

_F32 = np.float32

# Vectorized<float>::exp_u20 (ATen's vec512_float.h / vec256_float.h): exp(x) = 2^n exp(r), n = floor(x log2 e + 1/2),
# r = x - n ln 2, exp(r) by a degree-5 polynomial in fused multiply-adds, the result scaled by 2^(n-1), then by 2
_LOG2E, _LN2 = _bits(0x3FB8AA3B), _bits(0x3F317218)
_LN_FLT_MIN, _LN_FLT_MAX = _bits(0xC2AEAC50), _bits(0x42B17218)
_EXP_U20 = [_F32(c) for c in ("0.00828929059", "0.0418978221", "0.166676521", "0.499991506", "0.999999701", "1")]


def exp_u20(x):
    """ATen's ``Vectorized<float>::exp_u20`` of a float32 array (within ~20 ulps of exp): its steps in order."""
    fma = float32_math.fused_multiply_add
    clipped = np.clip(x, _LN_FLT_MIN, _LN_FLT_MAX)
    whole = np.floor(fma(clipped, _LOG2E, _F32(0.5)))
    r = fma(-whole, _LN2, clipped)
    poly = np.full_like(r, _EXP_U20[0])
    for c in _EXP_U20[1:]:
        poly = fma(r, poly, c)
    with np.errstate(invalid="ignore"):  # (NaN lanes: any integer; the product stays NaN)
        exponent = np.nan_to_num(whole - 1).astype(np.int32)
    two_to_n_minus_1 = ((exponent + 127) << 23).view(_F32)
    two_to_n_minus_1[x < _LN_FLT_MIN] = 0
    return poly * two_to_n_minus_1 * _F32(2)


def _vector_exp(x):
    """The kernel's exp on whole vectors: float32's exp_u20, float64's SLEEF exp (``Vectorized<double>::exp_u20``
    is its ``exp``); in torch's "default" build, C's exp element by element."""
    if float32_math.CPU_CAPABILITY == "default":
        return _scalar_exp(x)
    return exp_u20(x) if x.dtype == _F32 else float32_math.sleef_exp64(x)


def _scalar_exp(x):
    """The kernel's scalar ``std::exp`` (the tail of a row, the running max's rescaling): float32's correctly rounded
    (measured: glibc's ``expf`` here, ``float32_math.c_function``, is not torch's in some 0.04% of elements), float64's
    C's ``exp``."""
    x = np.asarray(x)
    return _expf(x) if x.dtype == _F32 else float32_math.c_function64("exp", x)


def _fma(a, b, c):
    """``a * b + c`` as the kernel's C++ computes it: one rounding where the build fuses it (FMA targets), else two."""
    if not float32_math.FUSED_MULTIPLY_ADD:
        return a * b + c
    if np.result_type(a, b, c) == _F32:
        return float32_math.fused_multiply_add(a, b, c)
    return float32_math.fused_multiply_add64(a, b, c)


def _exp_and_lane_sum(x):
    """``_exp_reduce_sum_fusion_kernel`` on rows of ``x`` ([..., n]): the exponentials, and each row's sum --
    whole vectors added lane by lane, the lanes reduced (float32: folded pairwise; float64: in order, ATen's
    generic ``vec_reduce_all``), then the last ``n % lanes`` added in order."""
    lanes = _LANES if x.dtype == _F32 else _LANES // 2
    n = x.shape[-1]
    whole = n - n % lanes
    e = np.empty_like(x)
    e[..., :whole] = _vector_exp(x[..., :whole])
    e[..., whole:] = _scalar_exp(x[..., whole:])
    acc = np.zeros(x.shape[:-1] + (lanes,), x.dtype)
    for start in range(0, whole, lanes):
        acc += e[..., start:start + lanes]
    if x.dtype == _F32:
        for shift in (8, 4, 2, 1)[16 // lanes - 1:]:
            acc = acc + acc[..., np.arange(lanes) ^ shift]
        total = acc[..., 0]
    else:
        total = acc[..., 0]
        for lane in range(1, lanes):
            total = total + acc[..., lane]
    for i in range(whole, n):
        total = total + e[..., i]
    return e, total


def _block_scores(q, k, group):
    """``q k^T`` of one block of queries and keys, MKL's gemm per (batch, query head) as the kernel calls it."""
    s = np.empty(q.shape[:-1] + (k.shape[2],), q.dtype)
    for b in range(q.shape[0]):
        for h in range(q.shape[1]):
            blas.gemm(q[b, h], k[b, h // group].T, s[b, h])
    return s


def _accumulate_values(weights, v, dst, group, first):
    """``dst = weights v (+ dst)``: MKL's gemm per (batch, query head), beta = 0 on the first block of keys, else 1."""
    beta = 0.0 if first else 1.0
    for b in range(dst.shape[0]):
        for h in range(dst.shape[1]):
            blas.gemm(weights[b, h], v[b, h // group], dst[b, h], beta=beta)


def _query_block(q, k, v, bias, scale, group):
    """One block of query rows (all batches and heads) through every block of keys (the module docstring)."""
    rows = q.shape[:-1]
    top = np.full(rows, -np.inf, q.dtype)
    total = np.zeros(rows, q.dtype)
    dst = np.empty((*rows, v.shape[-1]), q.dtype)
    for n in range(0, k.shape[2], _KV_BLOCK):
        keys = slice(n, n + _KV_BLOCK)
        s = _block_scores(q, k[:, :, keys], group)
        s = s * scale if bias is None else _fma(s, scale, bias[..., keys])
        new_top = np.maximum(top, s.max(-1))
        live = new_top != -np.inf  # a row with no key yet: its weights 0, its max and sum as they were
        e, block_total = _exp_and_lane_sum(s - np.where(live, new_top, 0)[..., None])
        e[~live] = 0
        rescale = _scalar_exp(np.where(live, top - new_top, 0))
        total = np.where(live, _fma(rescale, total, block_total), total)
        top = new_top
        if n:
            dst *= rescale[..., None]
        _accumulate_values(e, v[:, :, keys], dst, group, first=n == 0)
    total[total == 0] = 1  # a row that saw no key: output 0, as torch
    return dst * (q.dtype.type(1) / total)[..., None]


def flash_forward(q, k, v, bias, scale):
    """``cpu_flash_attention``'s output for [B, Hq, Tq, D] ``q`` and [B, Hkv, Tk, D] ``k``, ``v`` (Hq a multiple of
    Hkv), ``bias`` (causal and attention masks, -inf where a key takes no part) broadcastable to the scores."""
    tq, group = q.shape[2], q.shape[1] // k.shape[1]
    step = min(_q_block(tq), tq)
    if bias is not None:
        bias = np.broadcast_to(bias, (*q.shape[:-1], k.shape[2])).astype(q.dtype, copy=False)
    out = np.empty((*q.shape[:-1], v.shape[-1]), q.dtype)
    with np.errstate(invalid="ignore", over="ignore"):
        for m in range(0, tq, step):
            rows = slice(m, m + step)
            out[:, :, rows] = _query_block(q[:, :, rows], k, v, None if bias is None else bias[:, :, rows], scale,
                                           group)
    return out


class FlashAttention32(Function):
    """``softmax(q k^T * scale + bias) v`` of float32/float64 [B, H, T, D] arrays as torch's CPU flash-attention
    kernel computes it (module docstring); forward only (``takes`` says where it runs)."""

    @staticmethod
    def forward(ctx, q, k, v, bias=None, scale=None):
        scale = q.dtype.type(1 / np.sqrt(q.shape[-1]) if scale is None else scale)
        return flash_forward(q, k, v, bias, scale)


def takes(query, key, value):
    """Does this kernel give torch's bits here (where torch's dispatcher picks its flash kernel, ``ops.nn``)?
    float32/float64 NumPy inputs of one head size and batch size (not meta: no values, ``ops.nn.Attention``'s shape
    rule), MKL minilora's BLAS, and no gradient wanted."""
    return (query.dtype in (np.float32, np.float64) and query.ndim == key.ndim == value.ndim == 4
            and xp_of(query._array) is np and not query.is_meta and blas.library() == "mkl" and blas.has_direct_gemm(query.dtype)
            and query.shape[-1] == key.shape[-1] == value.shape[-1] and query.shape[0] == key.shape[0] == value.shape[0]
            and not (is_grad_enabled() and any(t.requires_grad for t in (query, key, value))))
