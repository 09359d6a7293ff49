"""float16 matrix products as torch computes them on the CPU: ATen's own loops, or oneDNN's where the CPU has AVX512-FP16.

torch hands a float16 product to oneDNN only where the CPU multiplies float16 itself (AVX512-FP16, Sapphire
Rapids on); elsewhere ``at::native::cpublas::gemm`` runs ATen's loops (``cpu/BlasKernel.cpp``), each output a sum
of products in float32 (a product of two float16 numbers is exact in float32), rounded to float16 once (after the
bias, addmm's ``beta * c + alpha * dot``). The order of the float32 additions depends on the operands' layout, as
torch's column-major call sees them (the result is computed transposed: ``a`` is the right operand, ``b`` the left):

* the right operand a transposed view of a row-major matrix, the left one row-major -- ``F.linear``'s ``x @ W.T``,
  a decoded token's too -- ``gemm_transa_``: one dot product per output, ``fp16_dot_with_fp32_arith``: 8 float32
  registers of 8 lanes take k in blocks of 64 (register r, lane l: k = 64 j + 8 r + l), folded register by register
  (r + r^4, ^2, ^1) and then lane by lane (l + l^4, ^2, ^1); then whole 16-element pieces into one more 8-lane
  register, folded so; then the last ``k % 16`` products one by one (``dot_products``);
* the left operand a transposed view, the right one row-major -- ``dY.T @ X``, linear's weight gradient --
  ``gemm_transb_``: a float32 buffer adds the products k after k (``sequential_products``);
* anything else -- ``x @ B`` with B row-major (linear's input gradient ``dY @ W``) -- ``gemm_notrans_`` (and
  ``gemm_transab_``): ATen's ``sum`` with 4 partial sums, k = 4 j + p into sum p, the last ``k % 4`` into sum 0,
  then sum 0 + 1, + 2, + 3 (``ilp4_products``).

The sums of OpenBLAS's float32 GEMM on float32 copies (what minilora did before) round to other float16 results
where a sum cancels: 1 in ~2000 outputs of tests/test_half_bits_r22.py's products, most of a float16 Llama's
logits' last bits once they pass through a few layers. Measured on torch 2.13, an AMD EPYC (AVX-512, no
AVX512-FP16). Written for clarity on NumPy: the products of a block of outputs are formed whole (exact), then added
in the kernel's order, so the cost is k times the outputs' in memory traffic (blocks of ~4M products). The dot products
(``F.linear``'s, every forward layer's) run compiled where a C compiler is found (``native/float32_kernels.c``'s
``ml_half_dot_products``, the same order: a float16 Llama's forward was 49x torch's time, now under it).

Where the CPU has AVX512-FP16 (Sapphire Rapids on: ``_ONEDNN``) torch hands the product to oneDNN
(``brg_matmul:avx10_1_512``, float16 converted to float32 and multiplied-added there). Found through torch with planted
operands (two products of +-2^26 among small ones) on an Intel Xeon (Sapphire Rapids class), torch 2.13: whatever the
layout, each output adds its products k after k from zero, in oneDNN's blocks of k (``bf16_products.k_blocks``: one
block to 512, blocks of 512 to 1024, of 1024 above; the blocks' sums added in order) -- ``onednn_blocks``, bit for bit
on 2-33 rows, k = 8..3000. Not modelled there (the float32 BLAS sum stands): one row (a decoded token's ``x @ W.T``:
oneDNN's one-row kernel sums k in lanes of 32 folded pairwise, and more, by no rule found in the time: ~45% of planted
operands off at k = 2048) and one column (torch's matrix-vector kernel).
"""
import numpy as np

from . import bf16_products, dtypes, float32_math, native, parallel

__all__ = ["applies", "matmul", "dot_products", "ilp4_products", "sequential_products", "onednn_blocks",
           "linear_gradient_orders"]

_LANES = 8  # Vectorized<float>::size() of the kernel torch dispatches to here (8 lanes, also on AVX-512 CPUs)
_REGISTERS = 8
_BLOCK = _LANES * _REGISTERS
_PRODUCTS_AT_ONCE = 1 << 22


def _cpu_has_fp16_arithmetic():
    """AVX512-FP16 (NumPy's AVX512_SPR feature group), where torch's float16 GEMM is oneDNN's instead."""
    return bool(float32_math.cpu_features().get("AVX512_SPR"))


_ONEDNN = _cpu_has_fp16_arithmetic()


def applies(*arrays):
    """Whether a product of these NumPy float16 arrays (matrices, or batches of them) sums in torch's order here:
    ATen's loops, or oneDNN's blocks on an AVX512-FP16 CPU (there one row or one column keeps the float32 sum).
    (An empty operand has no sums to order: NumPy's product gives its zeros or its empty result.)"""
    return all(type(a) is np.ndarray and a.ndim >= 2 and a.size for a in arrays) and arrays[0].dtype == np.float16


def matmul(a, b):
    """``a @ b`` of float16 arrays (``[..., M, K] @ [K, N]``, or batches of matrices) as a float32 array of sums in
    ATen's order, not yet rounded: a batch of rows times one matrix is one product (torch's matmul folds it); the
    operands' layout picks the loop (module docstring). Batches are torch's bmm: one product a matrix, ATen's own
    loop (k after k) below 400 multiply-adds a matrix."""
    if b.ndim == 2:
        return _matrix(a.reshape(-1, a.shape[-1]), b).reshape(a.shape[:-1] + (b.shape[1],))
    batch = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    a, b = np.broadcast_to(a, batch + a.shape[-2:]), np.broadcast_to(b, batch + b.shape[-2:])
    out = np.empty(batch + (a.shape[-2], b.shape[-1]), np.float32)
    small = a.shape[-2] * a.shape[-1] * b.shape[-1] < _BMM_LOOP_BELOW  # (before oneDNN too: ATen's check comes first)
    count = int(np.prod(batch))
    for index in np.ndindex(*batch):
        out[index] = sequential_products(a[index], b[index]) if small else _matrix(a[index], b[index], count)
    return out


_BMM_LOOP_BELOW = 400  # (ops/matmul.py's: torch's bmm runs baddbmm_cpu_kernel below this many multiply-adds)


# torch hands a 16-bit GEMM to oneDNN only above this many multiply-adds (cpublas' mkldnn_bf16_gemm and
# mkldnn_fp16_gemm refuse m * n * k <= 16 * 16 * 16; bmm's checksize counts the whole batch): smaller ones are ATen's
# loops on every CPU
ONEDNN_ABOVE = 16 * 16 * 16


def _onednn_runs(a, b, batch=1):
    """Whether torch hands this product (one of ``batch`` matrices: bmm counts them all) to oneDNN here."""
    return _ONEDNN and batch * a.shape[0] * a.shape[1] * b.shape[1] > ONEDNN_ABOVE


def _matrix(rows, b, batch=1):
    """One product ``rows @ b`` (of ``batch``) by ATen's loop for these layouts (oneDNN's blocks on an AVX512-FP16
    CPU)."""
    if _onednn_runs(rows, b, batch):
        return onednn_blocks(rows, b)
    return aten_loop(rows, b)


def aten_loop(rows, b):
    """``rows @ b`` by the ATen loop torch's cpublas picks for the operands' layouts (module docstring)."""
    if _transposed(b) and not _transposed(rows):
        return dot_products(rows, b.T)
    if _transposed(rows) and not _transposed(b):
        return sequential_products(rows, b)
    return ilp4_products(rows, b)


def _transposed(matrix):
    """Whether a [R, C] matrix is the transposed view of a row-major [C, R] one (its columns contiguous)."""
    return matrix.shape[0] > 1 and matrix.strides[0] == matrix.itemsize


def _blocks_of_rows(a, n, k):
    rows = max(1, _PRODUCTS_AT_ONCE // max(1, n * k))
    return range(0, a.shape[0], rows), rows


def dot_products(a, b_rows):
    """``a @ b_rows.T`` (a [M, K], b_rows [N, K]), each output ATen's ``fp16_dot_with_fp32_arith`` of two rows."""
    m, k, n = a.shape[0], a.shape[1], b_rows.shape[0]
    a32, b32 = dtypes.upcast(a), dtypes.upcast(b_rows)
    out = np.empty((m, n), np.float32)
    library = float32_math._native_library()
    if library is not None:  # (compiled: the same order, ~50x faster than the blocks of products below)
        b32 = np.ascontiguousarray(b32)

        def compiled(rows, out_rows):
            library.ml_half_dot_products(*map(native.address, (rows, b32, out_rows)), rows.shape[0], k, n)
        parallel.rows(compiled, np.ascontiguousarray(a32), out, work_per_row=k * n)
        return out
    starts, rows = _blocks_of_rows(a, n, k)
    for start in starts:
        products = a32[start:start + rows, None, :] * b32[None, :, :]  # exact in float32
        out[start:start + rows] = _dot_in_order(products)
    return out


def _dot_in_order(p):
    """The sums of ``p`` [..., K] along K in the dot kernel's order (module docstring)."""
    k = p.shape[-1]
    whole = k - k % _BLOCK
    registers = _running_sum(p[..., :whole], _BLOCK).reshape(p.shape[:-1] + (_REGISTERS, _LANES))
    for half in (4, 2, 1):
        registers = registers[..., :half, :] + registers[..., half:2 * half, :]
    total = _fold_lanes(registers[..., 0, :])
    pieces = k - k % (2 * _LANES)
    total = total + _fold_lanes(_running_sum(p[..., whole:pieces], _LANES))
    for j in range(pieces, k):
        total = total + p[..., j]
    return total


def _running_sum(p, width):
    """``p`` [..., n * width] cut into n pieces of ``width``, added piece after piece from zero: [..., width]."""
    if p.shape[-1] == 0:
        return np.zeros(p.shape[:-1] + (width,), np.float32)
    pieces = p.reshape(p.shape[:-1] + (-1, width))
    return np.cumsum(pieces, axis=-2, dtype=np.float32)[..., -1, :]  # (cumsum adds in order; sum pairs)


def _fold_lanes(lanes):
    """A register's lanes added as ``vec_reduce_all``: lane l + lane l^4, then ^2, then ^1."""
    for shift in (4, 2, 1):
        lanes = lanes + lanes[..., np.arange(_LANES) ^ shift]
    return lanes[..., 0]


def ilp4_products(a, b):
    """``a @ b`` (a [M, K], b [K, N]), each output ATen's ``sum`` with 4 partial sums."""
    m, k, n = a.shape[0], a.shape[1], b.shape[1]
    a32, b32 = dtypes.upcast(a), dtypes.upcast(b).T
    out = np.empty((m, n), np.float32)
    starts, rows = _blocks_of_rows(a, n, k)
    whole = k - k % 4
    for start in starts:
        products = a32[start:start + rows, None, :] * b32[None, :, :]
        partial = _running_sum(products[..., :whole], 4)
        first = partial[..., 0]
        for j in range(whole, k):
            first = first + products[..., j]
        out[start:start + rows] = ((first + partial[..., 1]) + partial[..., 2]) + partial[..., 3]
    return out


def sequential_products(a, b):
    """``a @ b`` (a [M, K], b [K, N]), each output's products added k after k from zero (``gemm_transb_``)."""
    m, k, n = a.shape[0], a.shape[1], b.shape[1]
    a32, b32 = dtypes.upcast(a), dtypes.upcast(b).T
    out = np.empty((m, n), np.float32)
    starts, rows = _blocks_of_rows(a, n, k)
    for start in starts:
        out[start:start + rows] = _running_sum(a32[start:start + rows, None, :] * b32[None, :, :], 1)[..., 0]
    return out


def onednn_blocks(a, b):
    """``a @ b`` (a [M, K], b [K, N]) as oneDNN sums it on an AVX512-FP16 CPU: k after k from zero in ``k_blocks``,
    the blocks' sums added in order. One row or one column: not modelled, the float32 BLAS sum (module docstring)."""
    a32, b32 = dtypes.upcast(a), dtypes.upcast(b)
    if a.shape[0] == 1 or b.shape[1] == 1:
        return np.matmul(a32, b32)
    blocks = bf16_products.k_blocks(a.shape[1], a.shape[0])
    library = float32_math._native_library()
    if library is not None:  # (compiled: the same order, vectorized along each row of b)
        a32, b32 = np.ascontiguousarray(a32), np.ascontiguousarray(b32)
        n, k, size = b.shape[1], a.shape[1], blocks[0][1]
        out = np.empty((a.shape[0], n), np.float32)

        def compiled(rows, out_rows):
            part = np.empty(n, np.float32)
            library.ml_sequential_products(*map(native.address, (rows, b32, out_rows, part)), rows.shape[0], k, n,
                                           size)
        parallel.rows(compiled, a32, out, work_per_row=k * n)
        return out
    out = None
    for start, stop in blocks:
        block = sequential_products(a32[:, start:stop], b32[start:stop])
        out = block if out is None else out + block
    return out


def linear_gradient_orders():
    """The orders of linear's float16 gradients here: (dX = dY W, dW = dY^T X) -- ATen's 4 partial sums and k after
    k, or oneDNN's blocks on an AVX512-FP16 CPU."""
    return _above_threshold_onednn(ilp4_products), _above_threshold_onednn(sequential_products)


def _above_threshold_onednn(aten_order):
    """``aten_order``, or oneDNN's blocks where torch hands the product to oneDNN here."""
    def order(a, b):
        return onednn_blocks(a, b) if _onednn_runs(a, b) else aten_order(a, b)
    return order
