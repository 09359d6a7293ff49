"""MKL's 16-bit-in, float32-out GEMM (``cblas_gemm_bf16bf16f32`` / ``cblas_gemm_f16f16f32``) for one row of queries.

torch's CPU flash-attention kernel (``ops/attention16.py``) hands its two products per block of queries and keys to
``cpublas::gemm`` with 16-bit operands and a float32 result, which is MKL's ``gemm_bf16bf16f32`` (bfloat16) or
``gemm_f16f16f32`` (float16). Every product of two 16-bit numbers is exact in float32, so all a GEMM chooses is the
order of its float32 additions. Decoding over a KV cache -- one query row, torch's ``qBlockSize == 1`` -- calls it
with ``n == 1``, and there MKL 2024.2 on an AMD EPYC (AVX-512) adds, found with crafted operands (two products of
+-2^40 among tiny ones: what survives says where the two met):

* the scores ``q k^T`` (``k`` transposed: one dot product of length ``head_size`` per key), ``lanes_of_4``: 4 float32
  lanes take k = 4 j + l, each from zero; lanes folded (l0 + l2) + (l1 + l3); the last ``head_size % 4`` products
  after, one by one. float16 only: the last ``keys % 4`` keys of a block are a 16-lane dot product instead
  (``lanes_of_16``: lanes folded l + l^8, ^4, ^2, ^1, then the tail);
* the weighted values ``E v`` (one sum over the block's keys per output), from the running ``dst`` (beta = 1 after
  the first block: the old value is where the sum starts): bfloat16 ``quads_in_order``: each 4 keys added
  (p0 + p2) + (p1 + p3), quad after quad, then the last ``keys % 4`` from the last one back; float16 one key after
  another.

These reproduce MKL's float32 sums bit for bit on every shape tried (head sizes 16-128, 1-512 keys); rows of several
queries (``n > 1``, a prompt's blocks of 32) take other kernels by shape, not modelled (a float32 BLAS sum stands).
The sums run compiled where a C compiler is found (``native/float32_kernels.c``'s ``ml_lanes4_products``,
``ml_one_row_values``: the same orders; a decoded token over 2048 cached keys, 32 heads: 0.5-1.0 s in NumPy, 0.09 s
compiled, torch's 0.03-0.06 s). Where torch's CPU is not this one (MKL picks its kernel by CPU maker and features: AVX512-BF16/AMX on Intel) the
order is not claimed: ``applies`` is False and the float32 BLAS sum stands. Not modelled on an Intel Xeon with AMX
(Sapphire Rapids class, round 24): there the float32 BLAS sum stands; a decoded token over 96 keys (head size 32,
random operands, tests/cpu_bits_audit.py) gave torch's bits in 128 of 128 outputs in both dtypes, and planted operands
were not tried.
"""
import numpy as np

from . import dtypes, float32_math, native, parallel

_F32 = np.float32


def _measured_cpu():
    """An AMD CPU with AVX-512 (torch's capability) and without Sapphire Rapids' features: where this was measured."""
    return (float32_math.cpu_vendor() == "AuthenticAMD" and float32_math.CPU_CAPABILITY == "avx512"
            and not float32_math.cpu_features().get("AVX512_SPR"))


APPLIES = _measured_cpu()


def _in_order(start, terms):
    """``start`` [...] plus ``terms`` [..., n] one after another (NumPy's float32 cumsum adds in order)."""
    return np.cumsum(np.concatenate([start[..., None], terms], axis=-1), axis=-1, dtype=_F32)[..., -1]


def lanes_of_4(p):
    """The sums of products ``p`` [..., K] along K: 4 lanes of k = 4 j + l, folded (0 + 2) + (1 + 3), then the tail."""
    k = p.shape[-1]
    whole = k - k % 4
    lanes = np.cumsum(p[..., :whole].reshape(p.shape[:-1] + (whole // 4, 4)), axis=-2, dtype=_F32)[..., -1, :] if whole \
        else np.zeros(p.shape[:-1] + (4,), _F32)
    total = (lanes[..., 0] + lanes[..., 2]) + (lanes[..., 1] + lanes[..., 3])
    return _in_order(total, p[..., whole:])


def lanes_of_16(p):
    """The sums of ``p`` [..., K] along K: 16 lanes of k = 16 j + l, folded l + l^8, ^4, ^2, ^1, then the tail."""
    k = p.shape[-1]
    whole = k - k % 16
    lanes = np.cumsum(p[..., :whole].reshape(p.shape[:-1] + (whole // 16, 16)), axis=-2, dtype=_F32)[..., -1, :] if whole \
        else np.zeros(p.shape[:-1] + (16,), _F32)
    for shift in (8, 4, 2, 1):
        lanes = lanes + lanes[..., np.arange(16) ^ shift]
    return _in_order(lanes[..., 0], p[..., whole:])


def quads_in_order(start, p):
    """``start`` plus the products ``p`` [..., K]: (p0 + p2) + (p1 + p3) for each 4, in order, then the last
    ``K % 4`` from the last one back."""
    k = p.shape[-1]
    whole = k - k % 4
    quads = p[..., :whole].reshape(p.shape[:-1] + (whole // 4, 4))
    quads = (quads[..., 0] + quads[..., 2]) + (quads[..., 1] + quads[..., 3])
    return _in_order(start, np.concatenate([quads, p[..., whole:][..., ::-1]], axis=-1))


def halves_of_8(start, p):
    """``start`` plus ``p`` [..., K] as MKL's float16 kernel sums an output before its first 16-byte-aligned one: each
    8 products the first 4 added in order, the other 4 summed apart and then added; the last ``K % 8`` in order."""
    k = p.shape[-1]
    whole = k - k % 8
    eights = p[..., :whole].reshape(p.shape[:-1] + (whole // 8, 8))
    apart = np.cumsum(eights[..., 4:], axis=-1, dtype=_F32)[..., -1:]  # each 8's second half summed on its own
    terms = np.concatenate([eights[..., :4], apart], axis=-1).reshape(p.shape[:-1] + (whole // 8 * 5,))
    return _in_order(start, np.concatenate([terms, p[..., whole:]], axis=-1))


def one_query_scores(q_row, keys, dtype):
    """``q_row @ keys^T`` for one query row (float32 [..., 1, D] and [..., B, D], 16-bit values): [..., 1, B]."""
    library = float32_math._native_library()
    if library is None:
        products = keys * q_row  # [..., B, D], exact
        scores = lanes_of_4(products)
    else:  # (compiled, the same order: one call a head)
        scores = np.empty(keys.shape[:-1], _F32)
        for head in np.ndindex(*keys.shape[:-2]):
            k, q = np.ascontiguousarray(keys[head], _F32), np.ascontiguousarray(q_row[head], _F32)
            library.ml_lanes4_products(*map(native.address, (k, q, scores[head])), k.shape[0], k.shape[1], 1)
    if not dtypes.is_bfloat16(dtype):
        last = keys.shape[-2] - keys.shape[-2] % 4
        scores[..., last:] = lanes_of_16(keys[..., last:, :] * q_row)
    return scores[..., None, :]


def one_query_values(dst, weights, values, dtype, unaligned=0):
    """``dst + weights @ values`` for one query row (float32 [..., 1, D], [..., 1, B], [..., B, D]): [..., 1, D].
    float16: the first ``unaligned`` outputs (before ``dst``'s first 16-byte boundary; an int, or an int array over
    the leading axes) are summed as ``halves_of_8``."""
    library = float32_math._native_library()
    if library is not None:  # (compiled, the same order: one call a head)
        out = np.array(dst, _F32, order="C")
        unaligned = np.broadcast_to(np.asarray(unaligned), dst.shape[:-2])
        for head in np.ndindex(*dst.shape[:-2]):
            w, v = np.ascontiguousarray(weights[head], _F32), np.ascontiguousarray(values[head], _F32)
            library.ml_one_row_values(*map(native.address, (w, v, out[head])), v.shape[0], v.shape[1],
                                      int(dtypes.is_bfloat16(dtype)), int(unaligned[head]))
        return out
    products = np.swapaxes(values * np.swapaxes(weights, -1, -2), -1, -2)  # [..., D, B], exact
    start = dst[..., 0, :]
    if dtypes.is_bfloat16(dtype):
        return quads_in_order(start, products)[..., None, :]
    total = _in_order(start, products)
    if np.any(unaligned):
        peeled = np.arange(products.shape[-2]) < np.asarray(unaligned)[..., None]  # [..., D]
        total = np.where(peeled, halves_of_8(start, products), total)
    return total[..., None, :]


def narrow_sgemm_applies(rows, k, outputs):
    """Whether MKL's float32 ``x @ a.T`` (``F.linear`` of a float32 ``x`` [rows, k] and ``a`` [outputs, k]) sums as
    ``lanes_of_4`` here: measured for 4 and 8 outputs a row (LoRA's ``lora_A`` at r = 4, 8), more than one row and
    ``k % 4 == 0`` (other shapes take other kernels: one row, 16 or more outputs, a tail of k)."""
    return APPLIES and outputs in (4, 8) and rows > 1 and k % 4 == 0


def narrow_sgemm(x, a):
    """``x @ a.T`` (float32 [M, K] and [R, K]) in MKL's order where ``narrow_sgemm_applies``: 4 lanes over k
    (compiled where a C compiler is found, ``native/float32_kernels.c``'s ``ml_lanes4_products``: the same order)."""
    out = np.empty((x.shape[0], a.shape[0]), _F32)
    library = float32_math._native_library()
    if library is not None:
        x, a = np.ascontiguousarray(x, _F32), np.ascontiguousarray(a, _F32)
        parallel.rows(lambda rows, out_rows: library.ml_lanes4_products(
            *map(native.address, (rows, a, out_rows)), rows.shape[0], x.shape[1], a.shape[0]),
            x, out, work_per_row=a.size)
        return out
    step = max(1, (1 << 22) // max(1, a.size))  # (rows of products at once: ~16 MB)
    for start in range(0, x.shape[0], step):
        out[start:start + step] = lanes_of_4(x[start:start + step, None, :] * a[None, :, :])
    return out
