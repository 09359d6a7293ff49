"""bfloat16 matrix products as torch computes them on the CPU: oneDNN's order of float32 additions.

torch hands a bfloat16 product -- linear, mm, bmm, matmul and their backward, in a Llama and in PEFT's
adapters -- to oneDNN. On a CPU with AVX512-BF16 its kernels multiply with ``vdpbf16ps``: each float32 lane
of the result adds two products, the odd k first, then the even one, each addition rounded. A product of
two bfloat16 numbers is exact in float32, so this order of additions is all there is to reproduce:

    k <= 512:           one block          sum = (((0 + p1) + p0) + p3) + p2 ...
    512 < k <= 1024:    blocks of 512      each block summed so, the blocks' sums added in order
    k > 1024:           blocks of 1024     (a product of one row, a decoded token's: of 512)

and the caller rounds the float32 sum to bfloat16 once (after the bias, as torch's addmm does).

A float32 sum in another order (BLAS on float32 copies, what minilora did before) rounds to the same
bfloat16 in almost every output; where a sum cancels, as a weight gradient dY^T X over the tokens does,
the float32 difference reaches a rounding boundary now and then (1 of 6144 gate_proj gradient elements of
tests/test_bf16_llama.py's tiny Llama; 5-25% of the outputs of a product built to cancel).

Measured on torch 2.13 (oneDNN 3.12), an AMD EPYC with AVX512-BF16: bit for bit for every shape tried
(tests/test_bf16_bits_r21.py). Where the CPU lacks AVX512-BF16 oneDNN emulates the instruction, and where
it has AMX (Sapphire Rapids and later) it multiplies tiles: neither order is modelled, and there the plain
float32 sum stays (``applies``). The sums run compiled where a C compiler is found
(``native/float32_kernels.c``, ``ml_bf16_pair_products``: 4 x 32 outputs in AVX-512 registers, ~64 GFLOP/s
a core, a third of OpenBLAS's float32 GEMM; a bfloat16 Llama training step, d=256, 4 layers, 8 x 128 tokens,
0.49 -> 0.63 s on 2 cores); the NumPy loop below is the same order, and what runs without a compiler.
"""
import numpy as np

from . import dtypes, float32_math, native, parallel

__all__ = ["applies", "matmul", "k_blocks"]


def _cpu_multiplies_bf16_pairs():
    """Whether this CPU has vdpbf16ps (AVX512-BF16) and no AMX tiles oneDNN would use instead (NumPy's feature
    table: AVX512_SPR stands for Sapphire Rapids' feature set, AMX's generation)."""
    try:
        from numpy._core._multiarray_umath import __cpu_features__ as features
    except ImportError:  # (NumPy 1.x)
        from numpy.core._multiarray_umath import __cpu_features__ as features
    return bool(features.get("AVX512BF16")) and not features.get("AVX512_SPR")


PAIRS = _cpu_multiplies_bf16_pairs()


def applies(dtype):
    """Whether a product of ``dtype`` arrays sums in oneDNN's pair order here: bfloat16 on such a CPU."""
    return PAIRS and dtypes.is_bfloat16(dtype)


def k_blocks(k, rows=2):
    """oneDNN's blocks of the contraction axis for a product of ``rows`` rows: ``[(start, stop), ...]``
    (one row, one decoded token's, runs blocks of 512 whatever k)."""
    if k <= 512:
        return [(0, k)]
    size = 512 if k <= 1024 or rows == 1 else 1024
    return [(start, min(k, start + size)) for start in range(0, k, size)]


def matmul(a, b):
    """``a @ b`` (``[..., M, K] @ [..., K, N]``, batch axes broadcasting; bfloat16 values, as bfloat16 or float32
    arrays) as a float32 array: each sum in oneDNN's order, not yet rounded to bfloat16."""
    a, b = dtypes.upcast(a), dtypes.upcast(b)
    if not (isinstance(a, np.ndarray) and isinstance(b, np.ndarray)):  # (CuPy: cuBLAS's own order)
        return a @ b
    if a.size == 0 or b.size == 0:  # (nothing to sum, or no result: no order; a [0, 0] @ [0, 0] cannot fold rows)
        return a @ b
    if b.ndim == 2:  # (torch's matmul folds a batch of a into rows of one product: rows decide the blocks)
        return _matrix(a.reshape(-1, a.shape[-1]), b).reshape(a.shape[:-1] + (b.shape[1],))
    batch = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    a = np.broadcast_to(a, batch + a.shape[-2:])
    b = np.broadcast_to(b, batch + b.shape[-2:])
    out = np.empty(batch + (a.shape[-2], b.shape[-1]), np.float32)
    for index in np.ndindex(*batch):
        out[index] = _matrix(a[index], b[index])
    return out


def _matrix(a, b):
    """One 2-D product ``[M, K] @ [K, N]`` of float32 arrays, in the pair order; rows split over threads."""
    m, k, n = a.shape[0], a.shape[1], b.shape[1]
    a, b = np.ascontiguousarray(a), np.ascontiguousarray(b)
    out = np.empty((m, n), np.float32)
    library = float32_math._native_library()
    if library is None or k == 0:
        parallel.rows(lambda rows, out_rows: _pairs_in_numpy(rows, b, out_rows, m), a, out, work_per_row=k * n)
        return out
    block = k_blocks(k, m)[0][1]

    def compiled(rows, out_rows):
        part = np.empty(4 * 256, np.float32)  # (a later block's sums before they are added: the C loop's tile)
        library.ml_bf16_pair_products(*map(native.address, (rows, b, out_rows, part)), rows.shape[0], k, n, block)
    parallel.rows(compiled, a, out, work_per_row=k * n)
    return out


def _pairs_in_numpy(a, b, out, rows):
    """The sums of ``a @ b`` into ``out`` (some of the product's ``rows``), block by block, in each block a pair
    of k at a time: odd, then even."""
    out[...] = 0
    for start, stop in k_blocks(a.shape[1], rows):
        acc = out if start == 0 else np.zeros_like(out)
        for k in range(start, stop, 2):
            if k + 1 < stop:
                acc += a[:, k + 1, None] * b[k + 1]
            acc += a[:, k, None] * b[k]
        if start:
            out += acc
