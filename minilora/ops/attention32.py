"""Scaled-dot-product attention on float32/float64 as torch's CPU flash-attention kernel computes it, with MKL.

torch 2.13 runs ``F.scaled_dot_product_attention`` on 4-D CPU inputs (transformers' default "sdpa" Llama attention)
in ``cpu_flash_attention`` (aten/src/ATen/native/cpu/FlashAttentionKernel.cpp), not as a plain softmax: for each
block of queries (32, 64 or 256 rows by the query length) and of 512 keys it computes, in the input's own dtype,

    S = q k^T                                       MKL's gemm on that block (the same call here: ``blas.gemm``)
    S = fma(S, scale, mask)  or  S * scale          one rounding with a mask, the scaling alone without
    top = max(top, rowmax(S))                       a row whose every key is masked so far: left as it is; without
                                                    a mask a NaN in a block's last len % lanes is skipped
                                                    (attention16.block_row_max)
    E = exp_u20(S - top)                            ATen's own vector exp (float32; float64: SLEEF's) on
                                                    whole vectors, C's exp on the last len % lanes
    sum = fma(exp(top_before - top), sum, lane_sum(E))
    dst = dst * exp(top_before - top)               (from the second block of keys on)
    dst = E v + dst                                 MKL's gemm with beta = 1 (beta = 0 for the first block)

and at the end ``out = dst * (1 / sum)`` and the logsumexp ``top + log(sum)`` it saves for the backward
(``flash_backward``: the weights recomputed from it per block, the gradients added up block by block with MKL's
products; training, a checkpoint's two runs and inference all take these steps). Both run compiled where
native/float32_kernels.c builds (the same steps in C, calling MKL's ?gemm itself: NumPy's cost per block of queries
made a training step's attention ~3x torch's) and as the NumPy steps below elsewhere. Their price in training:
benchmarks/lora_step.py's step took ~7% more CPU time than with the fused ``ops.nn.Attention`` (median 239 vs 223 ms,
three alternated rounds on a loaded 2-core machine; wall time too noisy there to tell). Round 30 won part of it back
with the same bits: the compiled loops over a row in vector lanes (the max had scanned one element after the other, the
lane sums ran over a run-time lane count) and no exp for a causal row's future keys (weight 0 either way):
[8, 4, 128, 64] causal, one thread, CPU time with round 29's library in the same process, forward 0.59-0.63x
(3.0-3.3 -> 1.9 ms; torch's 1.6 ms), backward 0.89-0.94x (MKL's products are most of it); the LoRA step's CPU time
0.98x (benchmarks/flash_loops.py times ``scalar_loops()``, the old loops, against them). The lane sums: float32's 16
lanes (AVX-512) folded pairwise (i + i^8, ^4, ^2, ^1), float64's 8 lanes added in order, then the tail elements in
order. Every step was found by comparing
with torch's outputs (the products are MKL's own calls, so they need no model: only the kernel's block shapes).
Only with MKL as minilora's BLAS (``blas.library() == "mkl"``): with another BLAS the products differ anyway, and the
plain ``ops.nn.Attention`` runs (as it does in training where exercise 2.4's backward is the learner's). A NaN or
infinity in q, k, v or the mask gives torch's NaNs and values too (84 planted cases, forward and backward): the
causal keys are filled in place of their products and the blocks the causal kernel skips are not read (before, as a
-inf bias added to them, 14 of 80 such cases differed).
"""
import contextlib

import numpy as np

from .. import blas, float32_math, parallel
from ..device import xp_of
from ..tensor import Function
from .attention16 import (_KV_BLOCK, _LANES, _bits, _expf, _fill_future_keys, _first_query_block, _q_block,
                          block_row_max)

_F32 = np.float32

# Vectorized<float>::exp_u20 (ATen's vec512_float.h / vec256_float.h): exp(x) = 2^n exp(r), n = floor(x log2 e + 1/2),
# r = x - n ln 2, exp(r) by a degree-5 polynomial in fused multiply-adds, the result scaled by 2^(n-1), then by 2
_LOG2E, _LN2 = _bits(0x3FB8AA3B), _bits(0x3F317218)
_LN_FLT_MIN, _LN_FLT_MAX = _bits(0xC2AEAC50), _bits(0x42B17218)
_EXP_U20 = [_F32(c) for c in ("0.00828929059", "0.0418978221", "0.166676521", "0.499991506", "0.999999701", "1")]


def exp_u20(x):
    """ATen's ``Vectorized<float>::exp_u20`` of a float32 array (within ~20 ulps of exp): its steps in order."""
    fma = float32_math.fused_multiply_add
    clipped = np.where(x < _LN_FLT_MAX, x, _LN_FLT_MAX)  # (the vector min and max: a NaN becomes the bound)
    clipped = np.where(clipped > _LN_FLT_MIN, clipped, _LN_FLT_MIN)
    whole = np.floor(fma(_LOG2E, clipped, _F32(0.5)))  # (the array in the middle: float32_math's compiled fma)
    r = fma(_LN2, -whole, clipped)
    poly = fma(_EXP_U20[0], r, _EXP_U20[1])
    for c in _EXP_U20[2:]:
        poly = fma(r, poly, c)
    with np.errstate(invalid="ignore"):  # (NaN lanes: any integer; the product stays NaN)
        exponent = (whole - 1).astype(np.int32)
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
    compiled = _exp_and_lane_sum_natively(x, lanes)
    if compiled is not None:
        return compiled
    n = x.shape[-1]
    whole = n - n % lanes
    e = np.empty_like(x)
    e[..., :whole] = _vector_exp(x[..., :whole])
    e[..., whole:] = _scalar_exp(x[..., whole:])
    acc = np.zeros(x.shape[:-1] + (lanes,), x.dtype)
    for start in range(0, whole, lanes):
        acc += e[..., start:start + lanes]
    total = _reduce_lanes(acc)
    for i in range(whole, n):
        total = total + e[..., i]
    return e, total


def _reduce_lanes(acc):
    """``vec_reduce_all`` with ``+`` of a vector of lanes (the last axis): float32's folded pairwise (AVX-512:
    i + i^8, then ^4, ^2, ^1), float64's (ATen's generic one) added in order."""
    lanes = acc.shape[-1]
    if acc.dtype == _F32:
        for shift in (8, 4, 2, 1)[16 // lanes - 1:]:
            acc = acc + acc[..., np.arange(lanes) ^ shift]
        return acc[..., 0]
    total = acc[..., 0]
    for lane in range(1, lanes):
        total = total + acc[..., lane]
    return total


def _rows_dot(a, b):
    """``vec::map2_reduce_all(x * y, x + y)`` along the last axis (the backward's ``rowsum(dO * out)``): products
    of whole vectors added lane by lane (a product and a sum: the compiler does not fuse them here, measured), the
    last ``n % lanes`` added into the first lanes, then ``_reduce_lanes``; a row shorter than a vector: its
    products added in order."""
    lanes = _LANES if a.dtype == _F32 else _LANES // 2
    n = a.shape[-1]
    if n < lanes:
        products = a * b
        total = products[..., 0]
        for i in range(1, n):
            total = total + products[..., i]
        return total
    acc = a[..., :lanes] * b[..., :lanes]
    for start in range(lanes, n - lanes + 1, lanes):
        acc += a[..., start:start + lanes] * b[..., start:start + lanes]
    tail = n % lanes
    if tail:
        acc[..., :tail] += a[..., n - tail:] * b[..., n - tail:]
    return _reduce_lanes(acc)


def _per_query_head(q_like, kv_like, group):
    """[B, Hq, ...] and [B, Hkv, ...] arrays as stacks of one leading shape, each query head against its key/value
    head: [B, Hkv, group, ...] and the key/value heads repeated as a view (``blas.gemm_batch`` stacks the group)."""
    if group == 1:
        return q_like, kv_like
    b, kv_heads = kv_like.shape[:2]
    stacked = q_like.reshape(b, kv_heads, group, *q_like.shape[2:])
    return stacked, np.broadcast_to(kv_like[:, :, None], (b, kv_heads, group, *kv_like.shape[2:]))


def _exp_and_lane_sum_natively(x, lanes):
    """``_exp_and_lane_sum`` by its compiled twin (native/float32_kernels.c: the same steps), the rows split between
    minilora's threads; None where it is not built (or torch's "default" build: C's exp throughout)."""
    library = float32_math._native_library()
    if library is None or float32_math.CPU_CAPABILITY == "default":
        return None
    kernel = library.ml_flash_exp_sum if x.dtype == _F32 else library.ml_flash_exp_sum64
    flat = np.ascontiguousarray(x).reshape(-1, x.shape[-1])
    e, total = np.empty_like(flat), np.empty(flat.shape[0], x.dtype)

    def call(rows, out, sums):
        kernel(rows.ctypes.data, out.ctypes.data, sums.ctypes.data, rows.shape[0], rows.shape[1], lanes)
    parallel.rows(call, flat, e, total, work_per_row=16 * flat.shape[1])
    return e.reshape(x.shape), total.reshape(x.shape[:-1])


def _block_scores(q, k, group, step):
    """``q k^T`` for every query and one block of keys: MKL's gemm per (batch, query head, block of ``step`` queries),
    as the kernel calls it (MKL's sums depend on the product's shape)."""
    s = np.empty(q.shape[:-1] + (k.shape[2],), q.dtype)
    for m in range(0, q.shape[2], step):
        rows = slice(m, m + step)
        queries, keys = _per_query_head(q[:, :, rows], k.swapaxes(-1, -2), group)
        blas.gemm_batch(queries, keys, _per_query_head(s[:, :, rows], k, group)[0])
    return s


def _accumulate_values(weights, v, dst, group, step, first):
    """``dst = weights v (+ dst)`` per (batch, query head, block of queries): beta = 0 on the first block of keys,
    else 1."""
    for m in range(0, dst.shape[2], step):
        rows = slice(m, m + step)
        stacked, values = _per_query_head(weights[:, :, rows], v, group)
        blas.gemm_batch(stacked, values, _per_query_head(dst[:, :, rows], v, group)[0], beta=0.0 if first else 1.0)


def flash_forward(q, k, v, bias, scale, causal=False, out=None, lse=None):
    """``cpu_flash_attention``'s output and logsumexp for [B, Hq, Tq, D] ``q`` and [B, Hkv, Tk, D] ``k``, ``v`` (Hq a
    multiple of Hkv), ``bias`` (an attention mask, -inf where a key takes no part) broadcastable to the scores, and
    ``causal`` (top-left: query i sees keys up to i).

    Each block of keys for all query blocks at once (the rows are independent but for the products' shapes), from
    the first query block that sees one of its keys (``_first_query_block``). Causal: the keys after a query's
    position get -inf in place of their products (before the scaling and mask, as the kernel fills them), so a
    NaN or infinite q k^T there leaves no trace. ``out`` and ``lse`` (optional): arrays to write the results into;
    by default ``out`` is laid out as ``q`` (torch's too: a Llama's [B, T, H, D] projections viewed as [B, H, T, D]
    give an output that turns back into [B, T, H*D] without a copy)."""
    out = np.empty_like(q) if out is None else out
    lse = np.empty(q.shape[:-1], q.dtype) if lse is None else lse
    rows, tk, group = q.shape[:-1], k.shape[2], q.shape[1] // k.shape[1]
    step = min(_q_block(q.shape[2]), q.shape[2])
    if bias is not None:
        bias = np.broadcast_to(bias, (*rows, tk)).astype(q.dtype, copy=False)
    if _forward_natively(q, k, v, bias, scale, causal, step, out, lse):
        return out, lse
    top = np.full(rows, -np.inf, q.dtype)
    total = np.zeros(rows, q.dtype)
    dst = np.empty((*rows, v.shape[-1]), q.dtype)
    with np.errstate(invalid="ignore", over="ignore"):
        for n in range(0, tk, _KV_BLOCK):
            keys, first = slice(n, n + _KV_BLOCK), _first_query_block(n, step, causal)
            if first >= q.shape[2]:
                break
            part = (slice(None), slice(None), slice(first, None))  # the query rows that take this block
            s = _block_scores(q[part], k[:, :, keys], group, step)
            if causal:
                s = _fill_future_keys(s, first, n, -np.inf)
            s = s * scale if bias is None else _fma(scale, s, np.ascontiguousarray(bias[part][..., keys]))
            lanes = _LANES if q.dtype == _F32 else _LANES // 2
            new_top = np.maximum(top[part], block_row_max(s, lanes, bias is not None))
            live = new_top != -np.inf  # a row with no key yet: its weights 0, its max and sum as they were
            e, block_total = _exp_and_lane_sum(s - np.where(live, new_top, 0)[..., None])
            e[~live] = 0
            rescale = _scalar_exp(np.where(live, top[part] - new_top, 0))
            total[part] = np.where(live, _fma(rescale, total[part], block_total), total[part])
            top[part] = new_top
            if n:
                dst[part] *= rescale[..., None]
            _accumulate_values(e, v[:, :, keys], dst[part], group, step, first=n == 0)
    total[total == 0] = 1  # a row that saw no key: output 0, as torch
    top[top == -np.inf] = 0  # (and its logsumexp 0 + log(1))
    np.multiply(dst, (q.dtype.type(1) / total)[..., None], out=out)
    np.add(top, _scalar_log(total), out=lse)
    return out, lse


def _scalar_log(x):
    """The kernel's ``std::log`` (the logsumexp it saves for backward): C's ``logf`` / ``log``."""
    return float32_math.c_function("logf", x) if x.dtype == _F32 else float32_math.c_function64("log", x)


def _backward_exp(x):
    """The backward's exp (``Vectorized::exp``, the whole row in vectors, a partial one at its end): SLEEF's
    ``expf16_u10`` / ``expd8_u10`` -- not the forward's exp_u20; in torch's "default" build, C's exp."""
    if float32_math.CPU_CAPABILITY == "default":
        return _scalar_exp(x)
    return float32_math.sleef_exp(x) if x.dtype == _F32 else float32_math.sleef_exp64(x)


def flash_backward(g, q, k, v, out, lse, bias, scale, causal=False, grads=None):
    """``cpu_flash_attention_backward``'s dq, dk, dv for the output gradient ``g``, from the forward's ``out`` and
    logsumexp ``lse`` ([B, Hq, Tq]); the other arguments as ``flash_forward``'s.

    Per block of queries (the forward's sizes) and of 512 keys, torch recomputes the weights from ``lse`` rather than
    keeping them, and adds each block's products into the gradients (MKL's gemm with beta = 1, the scale as alpha):

        D = rowsum(dO * out)                       once per query row (``_rows_dot``)
        A = exp(scale * q k^T + mask - lse)        SLEEF's exp; the mask added (a fused a * 1 + b: one rounding)
        dv += A^T dO;  dA = dO v^T;  dS = A * (dA - D)
        dq += scale * dS k;  dk += scale * dS^T q

    torch loops over (batch, query head), then query blocks, then key blocks: grouped-query heads add their dk, dv
    one query head after the other, so here each query head of a group takes its turn (the batch and key/value heads
    in one ``gemm_batch``). Causal: the blocks of keys a query block cannot see are skipped, and the weights of the
    keys after a query's position set to 0 after the exp, as the kernel does."""
    tq, tk, group = q.shape[2], k.shape[2], q.shape[1] // k.shape[1]
    step = min(_q_block(tq), tq)
    if bias is not None:
        bias = np.broadcast_to(bias, (*q.shape[:-1], tk)).astype(q.dtype, copy=False)
    grads = tuple(np.zeros_like(a) for a in (q, k, v)) if grads is None else grads  # (zeros: the products add)
    if _backward_natively(g, q, k, v, out, lse, bias, scale, causal, step, *grads):
        return grads
    dq, dk, dv = np.zeros(q.shape, q.dtype), np.zeros(k.shape, q.dtype), np.zeros(v.shape, q.dtype)  # (C order:
    row_dots = _rows_dot(g, out)
    with np.errstate(invalid="ignore", over="ignore"):
        for head in range(group):
            heads = slice(head, None, group)
            for m in range(0, tq, step):
                rows = (slice(None), heads, slice(m, m + step))
                for n in range(0, min(m + step, tq, tk) if causal else tk, _KV_BLOCK):
                    keys = (slice(None), slice(None), slice(n, n + _KV_BLOCK))
                    _block_backward(g[rows], q[rows], k[keys], v[keys], lse[rows], row_dots[rows],
                                    None if bias is None else bias[rows][..., keys[-1]], scale,
                                    dq[rows], dk[keys], dv[keys], (m, n) if causal else None)
    for grad, computed in zip(grads, (dq, dk, dv)):  # gemm_batch writes rows of C-contiguous matrices)
        grad[...] = computed
    return grads


def _backward_natively(g, q, k, v, out, lse, bias, scale, causal, step, dq, dk, dv):
    """``flash_backward``'s loops by their compiled twin (native/float32_kernels.c: the same steps, MKL's ?gemm
    called from C, SLEEF's exp, without NumPy's cost per block); False where it cannot run (``_native_kernel``)."""
    native = _native_kernel("ml_flash_backward", q, k, v, g, out)
    if native is None:
        return False
    kernel, gemm = native
    dims, strides, scale = _native_shapes(q, k, step, causal, (q, k, v, g, out, lse), bias, (dq, dk, dv), scale)
    kernel(gemm, dims.ctypes.data, strides.ctypes.data, scale.ctypes.data,
           *(a.ctypes.data for a in (q, k, v, g, out, lse)), None if bias is None else bias.ctypes.data,
           dq.ctypes.data, dk.ctypes.data, dv.ctypes.data)
    return True


def _forward_natively(q, k, v, bias, scale, causal, step, out, lse):
    """``flash_forward`` into ``out`` and ``lse`` by its compiled twin (as ``_backward_natively``); False where it
    cannot run (values of another head size too)."""
    native = _native_kernel("ml_flash_forward", q, k, v, out) if v.shape[-1] == q.shape[-1] else None
    if native is None or not lse.flags.c_contiguous:
        return False
    kernel, gemm = native
    dims, strides, scale = _native_shapes(q, k, step, causal, (q, k, v), bias, (out,), scale,
                                          float32_math.FUSED_MULTIPLY_ADD)
    kernel(gemm, dims.ctypes.data, strides.ctypes.data, scale.ctypes.data, q.ctypes.data, k.ctypes.data,
           v.ctypes.data, None if bias is None else bias.ctypes.data, out.ctypes.data, lse.ctypes.data)
    return True


@contextlib.contextmanager
def scalar_loops():
    """Within the block the compiled flash kernels (forward, backward and the exp sums) take their elementwise loops
    one element at a time -- round 29's loops -- instead of in vector lanes: the same operations in the same order,
    so the same bits. The tests compare the two, and a benchmark times both in one process. Process-wide (every
    thread); nothing changes where the kernels are not built."""
    library = float32_math._native_library()
    if library is None:
        yield
        return
    library.ml_flash_scalar_loops(1)
    try:
        yield
    finally:
        library.ml_flash_scalar_loops(0)


def _native_kernel(name, q, *operands):
    """(the compiled kernel ``name`` for q's dtype, MKL's ?gemm address), or None where it is not built, in torch's
    "default" build (its exp is C's), with no head size, or where an operand's rows are not dense (NumPy runs)."""
    library, gemm = float32_math._native_library(), blas.gemm_address(q.dtype)
    if (library is None or gemm is None or float32_math.CPU_CAPABILITY == "default" or q.shape[-1] == 0
            or any(a.strides[-1] != a.itemsize for a in (q, *operands))):
        return None
    return getattr(library, name if q.dtype == _F32 else name + "64"), gemm


def _native_shapes(q, k, step, causal, operands, bias, outputs, scale, *flags):
    """The compiled kernels' ``dims`` (sizes, the query block, causal, lanes, ``flags``), ``strides`` ([batch, head,
    row] of each operand, the bias's four, [batch, head, row] of each output) and the scale, as arrays."""
    lanes = _LANES if q.dtype == _F32 else _LANES // 2
    dims = np.array([*q.shape[:2], k.shape[1], q.shape[2], k.shape[2], q.shape[3], step, causal, lanes, *flags],
                    np.int64)
    bias_strides = (0,) * 4 if bias is None else bias.strides
    strides = np.array([s // q.itemsize for a in operands for s in a.strides[:3]]
                       + [s // q.itemsize for s in bias_strides]
                       + [s // q.itemsize for a in outputs for s in a.strides[:3]], np.int64)
    return dims, strides, np.array(scale, q.dtype)


def _block_backward(g, q, k, v, lse, row_dots, bias, scale, dq, dk, dv, causal_origin):
    """One block of queries (one query head of each group) against one block of keys: its share added into
    ``dq``, ``dk``, ``dv`` (views of the gradients), each product as torch's kernel calls MKL. ``causal_origin``:
    the block's first query and key (causal), else None."""
    scores = np.empty(q.shape[:-1] + (k.shape[2],), q.dtype)
    blas.gemm_batch(q, k.swapaxes(-1, -2), scores, alpha=scale)
    if bias is not None:
        scores += bias
    weights = _backward_exp(scores - lse[..., None])
    if causal_origin is not None:
        weights = _fill_future_keys(weights, *causal_origin, 0)
    blas.gemm_batch(weights.swapaxes(-1, -2), g, dv, beta=1.0)
    score_grads = blas.gemm_batch(g, v.swapaxes(-1, -2), scores)
    score_grads = weights * (score_grads - row_dots[..., None])
    blas.gemm_batch(score_grads, k, dq, alpha=scale, beta=1.0)
    blas.gemm_batch(score_grads.swapaxes(-1, -2), q, dk, alpha=scale, beta=1.0)


class FlashAttention32(Function):
    """``softmax(q k^T * scale + bias) v`` of float32/float64 [B, H, T, D] arrays as torch's CPU flash-attention
    kernel computes it, forward and backward (module docstring; ``takes`` says where it runs). Saved-tensor hooks
    see torch's node's packs: q, k, v, the logsumexp [B, H, Tq], the output."""

    torch_saves = staticmethod(lambda ctx: (0, 1, 2, "lse", "out"))

    @staticmethod
    def forward(ctx, q, k, v, bias=None, scale=None, causal=False):
        scale = q.dtype.type(1 / np.sqrt(q.shape[-1]) if scale is None else scale)
        out, lse = np.empty_like(q), np.empty(q.shape[:-1], q.dtype)  # (one head size: the flash kernel's rule)

        def batch_rows(q, k, v, bias, out, lse):
            flash_forward(q, k, v, bias, scale, causal, out, lse)
        _by_batch_rows(batch_rows, q, k, v, _batch_bias(bias, q, k), out, lse)
        ctx.q, ctx.k, ctx.v, ctx.bias, ctx.scale, ctx.causal, ctx.out, ctx.lse = q, k, v, bias, scale, causal, out, lse
        return out

    @staticmethod
    def backward(ctx, g):
        q, k, v, g = ctx.q, ctx.k, ctx.v, np.ascontiguousarray(g)  # (torch's too: a broadcast dO has no rows BLAS reads)
        dq, dk, dv = (_torch_zeros_like(a) for a in (q, k, v))  # (laid out as the inputs, as the fused node's)

        def batch_rows(q, k, g, v, out, lse, bias, dq, dk, dv):
            flash_backward(g, q, k, v, out, lse, bias, ctx.scale, ctx.causal, (dq, dk, dv))
        _by_batch_rows(batch_rows, q, k, g, v, ctx.out, ctx.lse, _batch_bias(ctx.bias, q, k), dq, dk, dv)
        return dq, dk, dv, None

    @staticmethod
    def scores_bias(ctx):
        """What the node's scores had added (the mask's bias, -inf after a query's position where causal): for
        the recorded backward of ``create_graph`` (ops/higher_order.py), or None."""
        bias = ctx.bias
        if ctx.causal:
            tq, tk = ctx.q.shape[2], ctx.k.shape[2]
            causal = _fill_future_keys(np.zeros((tq, tk), ctx.q.dtype), 0, 0, -np.inf)
            bias = causal if bias is None else bias + causal
        return bias


def _torch_zeros_like(a):
    """``np.zeros_like(a)`` (its layout) starting at a multiple of 64 bytes, as torch's ``zeros_like``: the gradients
    MKL's products add into (beta = 1), whose sums may depend on where they lie (measured on an AMD Zen 4)."""
    dense = np.zeros_like(a)
    if dense.ctypes.data % 64 == 0 or dense.size == 0:
        return dense
    block = blas._aligned_empty(dense.size, a.dtype)
    block[...] = 0
    return np.lib.stride_tricks.as_strided(block, dense.shape, dense.strides)


def _by_batch_rows(fn, q, k, *arrays):
    """``fn(q, k, *arrays)`` on blocks of the batch, split between minilora's threads: each batch element is
    independent, its products and sums the same wherever it runs (torch splits its (batch, head) items between its
    threads too). A bias among ``arrays`` comes broadcast to the scores (``_batch_bias``), so that it splits alike."""
    work = 8 * q.shape[1] * q.shape[2] * k.shape[2] * q.shape[3]  # (~8 passes over the products, per batch row)
    parallel.rows(fn, q, k, *arrays, work_per_row=work)


def _batch_bias(bias, q, k):
    """``bias`` (None, or broadcastable to the scores) as a [B, Hq, Tq, Tk] view."""
    return None if bias is None else np.broadcast_to(bias, (*q.shape[:-1], k.shape[2]))


def takes(query, key, value):
    """Does this kernel give torch's bits here (where torch's dispatcher picks its flash kernel, ``ops.nn``)?
    float32/float64 NumPy inputs of one head size and batch size (not meta: no values, ``ops.nn.Attention``'s shape
    rule) and MKL minilora's BLAS; with or without grad mode (training, a checkpoint's two runs and a frozen copy
    of a model all take the same steps)."""
    return (query.dtype in (np.float32, np.float64) and query.ndim == key.ndim == value.ndim == 4
            and xp_of(query._array) is np and not query.is_meta and blas.library() == "mkl" and blas.has_direct_gemm(query.dtype)
            and query.shape[-1] == key.shape[-1] == value.shape[-1] and query.shape[0] == key.shape[0] == value.shape[0])
