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
(tests/test_bf16_bits_r21.py). The sums run compiled where a C compiler is found (``native/float32_kernels.c``,
``ml_bf16_pair_products``: 4 x 32 outputs in AVX-512 registers, ~64 GFLOP/s a core, a third of OpenBLAS's float32
GEMM; a bfloat16 Llama training step, d=256, 4 layers, 8 x 128 tokens, 0.49 -> 0.63 s on 2 cores); the NumPy loop
below is the same order, and what runs without a compiler.

Where the CPU has AMX (Sapphire Rapids and later: oneDNN's ``brg_matmul:avx10_1_512_amx``) the products are
``tdpbf16ps`` tile instructions, and the order is another one, found through torch with planted operands (two
products of +-2^40 among ones: which ones survive says where the two partial sums met), on an Intel Xeon
(Sapphire Rapids class, KVM guest), torch 2.13:

    k in tiles of 32:   in each tile the even k summed in order from zero, the odd k likewise, apart;
                        the tile's sum is even + odd, added to the running sum (from zero): no blocks of k
    k not a multiple    ceil(k / 32) equal tiles where they can be equal and even, up to 4 (``tile_k``:
    of 32:              48 = 24 + 24, 90 = 3 x 30), more below 96 columns (130 = 5 x 26), else 32s and a
                        shorter last tile (34, 62, 88, 100)

and the tile unit flushes: a bfloat16 input below 2^-126 counts as zero, and every sum (each step of a chain, the
tile's even + odd, the running sum) that falls below 2^-126 becomes a zero of its sign. Bit for bit on 1-33 rows,
k = 8..4096 and every layout linear, matmul, bmm and their gradients call (``tests/test_intel_bits_r24.py``), with
two exceptions measured and not modelled: a k past 128 that splits into 5 or more equal even tiles, on some shapes
(k = 130 as 5 x 26, 196 as 7 x 28: oneDNN takes those below 96 columns or with a transposed B, modelled since
round 26, and from 96 columns of a row-major B for some shapes of more than 32 rows, by its blocking; round 24 saw it
as [33, 130] @ [130, n] and [8, 130] @ [130, 16] off), and a product of one column (torch's matrix-vector kernel,
not oneDNN: the float32 sum stands there, ~40% of planted operands off; random ones round to the same bfloat16); a bmm of small matrices (k = 12,
4 x 12 x 8 each) is neither the tile order nor ATen's loop (9% of planted outputs off with the tiles). A product of at most 16^3 multiply-adds is
ATen's own loops there (torch's cpublas hands only larger ones to oneDNN): ``half_products.aten_loop``. It runs
compiled where a C compiler is found (``native/float32_kernels.c``'s ``ml_amx_tile_products``, the same order), else
as the NumPy loop ``_tiles_in_numpy``. Without AVX512-BF16 oneDNN emulates the instruction: not modelled, the plain float32 sum stays
(``applies`` is False).
"""
import numpy as np

from . import dtypes, float32_math, native, parallel

__all__ = ["applies", "matmul", "k_blocks", "tile_k", "ORDER"]


def cpu_has_amx_bf16():
    """Whether the CPU has AMX's bfloat16 tiles, which oneDNN prefers (Linux's cpuinfo flags: NumPy does not list
    AMX)."""
    try:
        with open("/proc/cpuinfo") as info:
            flags = next((line for line in info if line.startswith("flags")), "").split()
    except OSError:
        return False
    return "amx_bf16" in flags and "amx_tile" in flags


def _onednn_order():
    """``"tiles"`` where oneDNN multiplies AMX tiles, ``"pairs"`` where vdpbf16ps (AVX512-BF16 without the Sapphire
    Rapids feature set), None where neither order is modelled (an AVX512_SPR CPU without AMX, AVX512-BF16 missing)."""
    features = float32_math.cpu_features()
    if not features.get("AVX512BF16"):
        return None
    if cpu_has_amx_bf16():
        return "tiles"
    return None if features.get("AVX512_SPR") else "pairs"


ORDER = _onednn_order()
PAIRS = ORDER == "pairs"


def applies(dtype):
    """Whether a product of ``dtype`` arrays sums in one of oneDNN's modelled orders here: bfloat16 on such a CPU."""
    return ORDER is not None and dtypes.is_bfloat16(dtype)


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
    count = int(np.prod(batch))
    for index in np.ndindex(*batch):
        out[index] = _matrix(a[index], b[index], count)
    return out


def _matrix(a, b, batch=1):
    """One 2-D product ``[M, K] @ [K, N]`` (of ``batch``) of float32 arrays, in this CPU's order; rows split over
    threads. A sum of -0 products is +0, as oneDNN's accumulators start from +0 (a frozen zero state's gradient)."""
    out = _tiles_matrix(a, b, batch) if ORDER == "tiles" else _pairs_matrix(a, b)
    out += np.float32(0)
    return out


def _pairs_matrix(a, b):
    """``_matrix`` where the CPU adds vdpbf16ps pairs (no AMX tiles)."""
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


def _tiles_matrix(a, b, batch=1):
    """One 2-D product (of ``batch``) as torch sums it on an AMX CPU: ATen's loops (by the operands' layout) at most
    16^3 multiply-adds in all, the float32 sum for one column, AMX's tile order otherwise."""
    from . import half_products  # (a sibling that imports this module: read when called)
    m, k, n = a.shape[0], a.shape[1], b.shape[1]
    if n == 1:  # (one column: torch's matrix-vector kernel, not oneDNN's tiles; its order is not modelled)
        return np.matmul(a, b)
    if batch * m * k * n <= half_products.ONEDNN_ABOVE:  # torch's cpublas keeps small products in ATen's loops
        return half_products.aten_loop(a, b)
    tile = tile_k(k, (m, n), (_k_major(a), _k_major(b)))
    a, b = np.ascontiguousarray(_flushed(a)), np.ascontiguousarray(_flushed(b))
    out = np.empty((m, n), np.float32)
    library = float32_math._native_library()
    if library is None:
        parallel.rows(lambda rows, out_rows: _tiles_in_numpy(rows, b, out_rows, tile), a, out, work_per_row=k * n)
        return out

    def compiled(rows, out_rows):
        chains = np.empty(2 * n, np.float32)
        library.ml_amx_tile_products(*map(native.address, (rows, b, out_rows, chains)), rows.shape[0], k, n, tile)
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


_TILE_K = 32  # bfloat16 k a tdpbf16ps takes (64 bytes of a tile row: 16 pairs)


def tile_k(k, shape=None, transposed=(False, False)):
    """The k of each of oneDNN's AMX tiles for a product over ``k`` of ``shape`` (rows, columns), its operands
    ``transposed`` or not (A [rows, k] stored k-major, B [k, columns] columns-major): 32, but where k is no multiple
    of 32 and its ceil(k / 32) tiles can be equal and even, those: up to 4 of them (k <= 128) for any product --
    k = 48 runs 24 + 24, 40 runs 20 + 20, 90 runs 30 + 30 + 30 --, 5 to 15 (k = 130 as 5 x 26, 196 as 7 x 28, 450
    as 15 x 30) for 2 or more rows of a row-major A, where B is transposed (a Linear's x W^T) or has fewer than
    ``_EQUAL_TILES_BELOW`` columns (without ``shape``: 32s); k = 34, 62, 88 or 100 (odd or unequal shares) run 32s
    and a tail. Found with planted operands, [1-512 rows, k, 16-512 columns] in each layout, torch 2.13 on the Intel
    Xeon. (Not modelled: from 96 columns of a row-major B oneDNN picks the equal tiles or the 32s by its blocking
    of rows and columns -- [40, 130] @ [130, 256] equal, [64, 130] @ [130, 256] and [50, 130] @ [130, 200] 32s, no
    rule found --, and a transposed B with 128 rows and 96 or 128 columns runs the 32s.)"""
    if k % _TILE_K == 0:
        return _TILE_K
    tiles = -(-k // _TILE_K)
    share = k // tiles
    if share * tiles != k or share % 2:
        return _TILE_K
    if tiles <= 4:
        return share
    rows_ok = shape is not None and shape[0] >= 2 and not transposed[0]
    return share if rows_ok and (transposed[1] or shape[1] < _EQUAL_TILES_BELOW) else _TILE_K


_EQUAL_TILES_BELOW = 96  # columns of a row-major B below which a k of 5 or more equal tiles runs them


def _k_major(matrix):
    """Whether a 2-D operand is stored with its first axis innermost (a transposed view of a row-major array)."""
    return matrix.strides[0] == matrix.itemsize and matrix.strides[1] != matrix.itemsize and matrix.shape[0] > 1
_SMALLEST_NORMAL = np.float32(np.finfo(np.float32).tiny)


def _flushed(x):
    """``x`` with its subnormal values made zeros of their sign, as AMX's tile unit does (not MXCSR's FTZ)."""
    tiny = np.abs(x) < _SMALLEST_NORMAL
    if tiny.any():
        x = np.where(tiny, x * np.float32(0), x)
    return x


def _tiles_in_numpy(a, b, out, tile=_TILE_K):
    """The sums of ``a @ b`` into ``out`` in AMX's tile order: per ``tile`` k (``tile_k``), the even k and the odd k
    in two chains from zero, their sum added to the running one; every sum flushed below 2^-126, subnormal inputs
    read as zeros."""
    a, b = _flushed(a), _flushed(b)
    out[...] = 0
    for start in range(0, a.shape[1], tile):
        chains = [np.zeros_like(out), np.zeros_like(out)]
        for k in range(start, min(a.shape[1], start + tile)):
            chains[k % 2] = _flushed(chains[k % 2] + a[:, k, None] * b[k])
        out[...] = _flushed(out + _flushed(chains[0] + chains[1]))
