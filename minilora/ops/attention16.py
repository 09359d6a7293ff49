"""Scaled-dot-product attention on bfloat16/float16 as torch's CPU flash-attention kernel computes it.

torch 2.13 runs ``F.scaled_dot_product_attention`` on 16-bit 4-D CPU inputs (transformers' default "sdpa"
Llama attention) in ``cpu_flash_attention`` (aten/src/ATen/native/cpu/FlashAttentionKernel.cpp), which
does not compute in float32 and round once: it rounds at its own points, and those roundings show in
most outputs (one 16-bit step in about a quarter of a Llama layer's attention outputs; a bf16 LoRA
step's loss moved in the fourth digit). The forward, per query row and block of 512 keys:

    S = (q k^T) * scale + mask                   float32 (the products of 16-bit numbers are exact); causal: the
                                                 keys after a query -inf in place of their products
    E = fexp_u20(S - max)                        ATen's fast exp (below); C's exp on the last len % 16
    sum = lane_sum(E)                            16 float32 lanes, folded pairwise, then the tail in order
    dst = round16(E) @ v                         E rounded to 16 bits before the product
    out = round16(dst * (1 / sum)),  lse = max + log(sum)

and the backward recomputes the weights from ``lse`` with SLEEF's exp, rounds them and the score
gradient to 16 bits before its products, and accumulates ``dk``/``dv`` in the 16-bit gradient itself,
one rounding per block of queries (32, 64 or 256 by the query length, as torch's kernel picks them):

    A = exp(S - lse);  dv += round16(A)^T dO;  dS = round16(A * (dO v^T - rowsum(dO * out)))
    dq += scale * dS k;  dk += scale * dS^T q

The products are MKL's 16-bit GEMMs with float32 results; for a query block of one row (decoding over a KV
cache) their order of additions is MKL's (``minilora/mkl_half_gemm.py``, on the CPU it was measured on). What is
not reproduced: the order of a block of several rows (MKL picks other kernels by shape; a product lands on a
16-bit rounding boundary in about one output in 10^4), the backward's products, and the fused multiply-add a
compiler may make of the running sum's rescaling past 512 keys.
"""
import numpy as np

from .. import float32_math, mkl_half_gemm, parallel
from ..device import xp_of
from ..tensor import Function

_F32 = np.float32
_KV_BLOCK = 512  # the kernel's kv_split_size
_LANES = float32_math.FLOAT_LANES  # Vectorized<float>::size(): 16 with AVX-512, 8 with AVX2 (and "default")


def _bits(value):
    return np.array(value, np.uint32).view(_F32)


# Vectorized<float>::fexp_u20: 2^(x log2 e) built from its exponent bits, the fraction's 2^f by a cubic
_LOG2E, _LN_FLT_MIN, _LN_FLT_MAX = _bits(0x3FB8AA3B), _bits(0xC2AEAC50), _bits(0x42B17218)
_FEXP = [_F32(c) for c in (0.00010703434948458272, 0.30354260500649682, -0.22433836478672356,
                           -0.079204240219773236)]


def fexp_u20(x):
    """ATen's ``fexp_u20`` of a float32 array (relative error ~1e-4: "for outputs rounded to 16 bits"),
    its steps in order, each fused multiply-add rounded once."""
    fma = float32_math.fused_multiply_add
    src = np.multiply(x, _LOG2E, dtype=_F32)
    with np.errstate(invalid="ignore"):  # (-inf: inf - inf; those lanes are set to 0 below)
        fraction = src - np.floor(src)
        poly = fma(fraction, _FEXP[3], _FEXP[2])
        poly = fma(fraction, poly, _FEXP[1])
        poly = fma(fraction, poly, _FEXP[0])
        biased = fma(_F32(2.0 ** 23), src - poly, _F32(2.0 ** 23 * 127))
        out = np.trunc(np.nan_to_num(biased)).astype(np.int32).view(_F32)  # cvttps: the float's bits
    out[x < _LN_FLT_MIN] = 0
    out[x > _LN_FLT_MAX] = np.inf
    return out


def _expf(x):
    """C's ``expf`` (the kernel's scalar tail), taken as correctly rounded."""
    with np.errstate(over="ignore"):
        return np.exp(x.astype(np.float64)).astype(_F32)


def _exp_and_lane_sum(x):
    """``_exp_reduce_sum_fusion_kernel`` on rows of ``x`` (float32, [..., n]): the exponentials and each
    row's sum: whole vectors through fexp_u20 summed lane by lane, the lanes folded pairwise (AVX-512: i + i^8,
    then ^4, ^2, ^1), then the last ``n % 16`` through expf added in order. (torch's "default" build: its
    fexp_u20 is C's exp, element by element.)"""
    n = x.shape[-1]
    whole = n - n % _LANES
    e = np.empty_like(x)
    fast = _expf if float32_math.CPU_CAPABILITY == "default" else fexp_u20
    e[..., :whole] = fast(x[..., :whole])
    e[..., whole:] = _expf(x[..., whole:])
    lanes = np.zeros(x.shape[:-1] + (_LANES,), _F32)
    for start in range(0, whole, _LANES):
        lanes += e[..., start:start + _LANES]
    for shift in (8, 4, 2, 1)[16 // _LANES - 1:]:
        lanes = lanes + lanes[..., np.arange(_LANES) ^ shift]
    total = lanes[..., 0]
    for i in range(whole, n):
        total = total + e[..., i]
    return e, total


def _q_block(tq):
    """The query block torch's kernel picks by the query length."""
    return 256 if tq >= 768 else 64 if tq >= 192 else 32


def _one_row_block(tq):
    """The query row torch's kernel computes as a block of its own (its GEMMs with ``n == 1``, a decoded token's),
    where MKL's order of additions is modelled (``mkl_half_gemm``); else None."""
    return tq - 1 if mkl_half_gemm.APPLIES and tq % _q_block(tq) == 1 else None


def _unaligned_outputs(batch, heads, tq, tk, head_size):
    """How many of the one-row block's outputs lie before its ``dst`` row's first 16-byte boundary, per (batch, head):
    MKL's float16 kernel sums those otherwise (``mkl_half_gemm.halves_of_8``). ``dst`` sits in a 64-byte-aligned
    buffer of ``qSplitSize * (kvSplitSize + 2 + head_size)`` floats a thread, after the scores, max and sum;
    ``at::parallel_for`` hands the (batch, head, query block) items to torch's threads in equal runs."""
    step, kv = min(_q_block(tq), tq), min(_KV_BLOCK, tk)
    q_blocks = -(-tq // step)
    items = batch * heads * q_blocks
    threads = max(1, min(parallel.num_threads(), items))
    item = np.arange(batch * heads) * q_blocks + q_blocks - 1  # each (batch, head)'s last query block
    thread = item // -(-items // threads)
    offset = thread * step * (kv + 2 + head_size) + step * kv + 2 * step  # floats from the buffer's start
    return ((-offset) % 4).reshape(batch, heads)


def _scores(q, k, scale, bias, dtype=None, row=None, causal_origin=None):
    """``(q k^T) * scale + bias`` in float32 (as the kernel: scaled after the product); query ``row``'s products
    summed in MKL's order. ``causal_origin`` (the first query and key of the block, causal): the keys after a
    query's position -inf in place of their products, before the scaling, as the kernel fills them."""
    s = np.matmul(q, k.swapaxes(-1, -2))
    if row is not None:
        s[..., row:row + 1, :] = mkl_half_gemm.one_query_scores(q[..., row:row + 1, :], k, dtype)
    if causal_origin is not None:
        _fill_future_keys(s, *causal_origin, -np.inf)
    s *= scale
    if bias is not None:
        s += bias
    return s


def block_row_max(scores, lanes, masked):
    """The kernel's largest score of each row of a block of keys ([..., keys]). With a mask, ``reduce_all``'s vector
    maxima over the row: a NaN wins. Without one, ``_mul_reduce_max_fusion_kernel``: whole vectors by
    ``vec::maximum`` (a NaN wins), the last ``keys % lanes`` by ``std::max(max, x)``, which keeps ``max`` at a NaN
    ``x``: a row whose NaNs all sit in that tail gets the others' max (-inf if none: its weights are then 0)."""
    if masked:
        return scores.max(-1)
    whole = scores.shape[-1] - scores.shape[-1] % lanes
    tail = np.fmax.reduce(scores[..., whole:], axis=-1, initial=-np.inf)  # (fmax: a NaN skipped)
    return np.maximum(scores[..., :whole].max(-1, initial=-np.inf), tail)


def _first_query_block(first_key, step, causal):
    """The first query row of the blocks that take the block of keys from ``first_key``: the causal kernel skips
    a block of keys that none of a query block's rows sees (it never reads those keys and values)."""
    return first_key // step * step if causal else 0


def _fill_future_keys(scores, first_query, first_key, value):
    """``scores`` [..., queries, keys] (query rows from ``first_query``, keys from ``first_key``) with ``value``
    where a key comes after the query's position: the causal kernel's fill."""
    queries, keys = scores.shape[-2:]
    future = np.arange(first_key, first_key + keys) > np.arange(first_query, first_query + queries)[:, None]
    np.copyto(scores, scores.dtype.type(value), where=future)  # (in place: the callers' own arrays)
    return scores


def _repeat_kv(a, group):
    """Key/value heads repeated for each query head of their group (torch's enable_gqa reads them so)."""
    return a if group == 1 else np.repeat(a, group, axis=1)


class FlashAttention16(Function):
    """``softmax(q k^T * scale + bias) v`` for 16-bit [B, H, T, D] arrays, rounded as torch's CPU
    flash-attention kernel (module docstring). ``bias``: float32, broadcastable to the scores."""

    @staticmethod
    def forward(ctx, q, k, v, bias=None, scale=None, causal=False):
        dtype, group = q.dtype, q.shape[1] // max(k.shape[1], 1)
        scale = _F32(1 / np.sqrt(q.shape[-1]) if scale is None else scale)
        q32 = q.astype(_F32)
        k32, v32 = (_repeat_kv(a.astype(_F32), group) for a in (k, v))
        if bias is not None:
            bias = np.broadcast_to(bias, (*q.shape[:-1], k.shape[2])).astype(_F32)
        with np.errstate(invalid="ignore", over="ignore"):
            out, lse = _flash_forward(q32, k32, v32, bias, scale, dtype, causal)
        ctx.flash = (q, k, v, bias, scale, out, lse, group, causal)
        return out

    @staticmethod
    def backward(ctx, g):
        q, k, v, bias, scale, out, lse, group, causal = ctx.flash
        with np.errstate(invalid="ignore", over="ignore"):
            dq, dk, dv = _flash_backward(g, *(a.astype(_F32) for a in (q, k, v)), bias, scale, out, lse, q.dtype,
                                         group, causal)
        return dq, dk, dv, None


def _flash_forward(q, k, v, bias, scale, dtype, causal=False):
    """``cpu_flash_attention`` over blocks of 512 keys (the running max and sum rescale ``dst``). ``causal``: the
    keys after a query's position filled (``_scores``), and the query blocks that see none of a block's keys leave
    it unread (their state is kept across it: its values, even 0 * inf, never reach them)."""
    rows = q.shape[:-1]
    top = np.full(rows, -np.inf, _F32)
    total = np.zeros(rows, _F32)
    dst = np.zeros((*rows, v.shape[-1]), _F32)
    row = _one_row_block(q.shape[2])
    unaligned = None if row is None else _unaligned_outputs(*q.shape[:3], k.shape[2], q.shape[3])
    step = min(_q_block(q.shape[2]), q.shape[2])
    for n in range(0, k.shape[2], _KV_BLOCK):
        block, first = slice(n, n + _KV_BLOCK), _first_query_block(n, step, causal)
        if first >= q.shape[2]:
            break
        unread = (top[..., :first].copy(), total[..., :first].copy(), dst[..., :first, :].copy())
        s = _scores(q, k[:, :, block], scale, None if bias is None else bias[..., block], dtype, row,
                    (0, n) if causal else None)
        new_top = np.maximum(top, block_row_max(s, _LANES, bias is not None))
        live = new_top != -np.inf  # a row with no key yet: its weights stay 0, its max and sum as they were
        e, block_total = _exp_and_lane_sum(s - np.where(live, new_top, 0)[..., None])
        e[~live] = 0
        rescale = _expf(top - new_top)
        total = np.where(live, block_total + rescale * total, total)
        top = new_top
        if n:
            dst *= np.where(live, rescale, 1)[..., None]
        weights = e.astype(dtype).astype(_F32)
        dst_before = dst[..., row:row + 1, :].copy() if row is not None else None
        dst += np.matmul(weights, v[:, :, block])
        if row is not None:
            dst[..., row:row + 1, :] = mkl_half_gemm.one_query_values(dst_before, weights[..., row:row + 1, :],
                                                                       v[:, :, block], dtype, unaligned)
        top[..., :first], total[..., :first], dst[..., :first, :] = unread
    top[top == -np.inf] = 0
    total[total == 0] = 1  # a row that saw no key: output 0, as torch
    out = (dst * (_F32(1) / total)[..., None]).astype(dtype)
    lse = top + np.log(total.astype(np.float64)).astype(_F32)
    return out, lse


def _flash_backward(g, q, k, v, bias, scale, out, lse, dtype, group, causal=False):
    """``cpu_flash_attention_backward``: weights recomputed from ``lse``; dq, dk, dv accumulated in ``dtype``,
    the query heads sharing a key/value head one after another (query head ``j * group + r``: ``r`` outer).
    ``causal``: a query block reads the blocks of keys up to its last query only, the weights after a query's
    position set to 0 after the exp (as the kernel: not -inf before it)."""
    g32 = g.astype(_F32)
    dq, dk, dv = np.zeros(q.shape, dtype), np.zeros(k.shape, dtype), np.zeros(v.shape, dtype)
    row_dots = np.einsum("bhtd,bhtd->bht", g32.astype(np.float64), out.astype(np.float64)).astype(_F32)
    tq, step = q.shape[2], _q_block(q.shape[2])
    for r in range(group):
        heads = slice(r, None, group)
        for m in range(0, tq, step):
            rows = slice(m, m + step)
            qh, gh = q[:, heads, rows], g32[:, heads, rows]
            for n in range(0, min(m + step, k.shape[2]) if causal else k.shape[2], _KV_BLOCK):
                keys = slice(n, n + _KV_BLOCK)
                s = _scores(qh, k[:, :, keys], scale, None if bias is None else bias[:, heads, rows, keys])
                a = float32_math.sleef_exp((s - lse[:, heads, rows, None]).reshape(-1)).reshape(s.shape)
                if causal:
                    _fill_future_keys(a, m, n, 0)
                dv[:, :, keys] = _accumulate(dv[:, :, keys], np.matmul(
                    a.astype(dtype).astype(_F32).swapaxes(-1, -2), gh), dtype)
                da = np.matmul(gh, v[:, :, keys].swapaxes(-1, -2))
                ds = (a * (da - row_dots[:, heads, rows, None])).astype(dtype).astype(_F32)
                dq[:, heads, rows] = _accumulate(dq[:, heads, rows], np.matmul(ds, k[:, :, keys]) * scale, dtype)
                dk[:, :, keys] = _accumulate(dk[:, :, keys], np.matmul(ds.swapaxes(-1, -2), qh) * scale, dtype)
    return dq, dk, dv


def _accumulate(into, product, dtype):
    """A product added to a 16-bit gradient (the kernel's gemm with beta = 1): in float32, rounded once."""
    return (into.astype(_F32) + product).astype(dtype)


def takes(query, key, value):
    """Where torch's CPU dispatcher picks the flash kernel (``ops.nn._cpu_flash_takes``), does this kernel
    compute it? 16-bit NumPy inputs of one head size and one batch size."""
    return (query.dtype.itemsize == 2 and query.ndim == key.ndim == value.ndim == 4 and xp_of(query._array) is np
            and query.shape[-1] == key.shape[-1] == value.shape[-1]
            and query.shape[0] == key.shape[0] == value.shape[0])
