"""Matrix products: ``matmul`` (batched, broadcasting, like ``torch.matmul``) and ``linear``.

``linear(x, W, b)`` computes ``x W^T + b`` as ONE 2-D GEMM over all leading dims, and its backward
skips the weight-gradient GEMM when ``W`` is frozen (``ctx.needs_input_grad``) -- the saving LoRA
is built on: a frozen ``W0`` costs a forward GEMM and the ``dX`` GEMM, never a ``dW0`` GEMM.

16-bit floats (bfloat16, float16) multiply as torch's CPU kernels do: the products are accumulated
in float32 and the result is rounded once (``_product``); bfloat16 matrices in oneDNN's order of those
additions (``_sums16``, ``minilora/bf16_products.py``). NumPy alone gets this wrong twice: ``A @ B``
on two bfloat16 arrays returns float32, and NumPy's float16 product accumulates in float16.
"""
import math
import warnings

import numpy as np

from .. import amp as _amp, bf16_products, blas, dtypes, float32_sums, gemm_pool, half_products, mkl_dot, parallel, solutions
from ..blas import matmul as array_matmul
from ..device import xp_of
from ..dtypes import is_floating, torch_name, upcast
from ..factories import known_layout
from ..tensor import Function, ShapeError, Tensor, inputs_not_torchs, name_node, saved_for, saves_as_torch
from ..tensor import torch_broadcast_message as _torch_broadcast_message, torch_expand_message as _torch_expand_message
from ..tensor import with_note
from .elementwise import unbroadcast
from .shape import _dims as wrapped_dims, stack

__all__ = ["matmul", "linear", "einsum", "mm", "bmm", "dot", "outer", "addmm", "baddbmm", "cross", "mv",
           "inner", "vdot", "tensordot", "kron"]


class DTypeMismatchError(RuntimeError, TypeError):
    """Operands of a product with different dtypes, refused in torch's words. torch raises RuntimeError; minilora
    once raised TypeError: this is both, so either ``except`` works."""


def _check_dtypes(name, a, b):
    if a.dtype != b.dtype:
        raise DTypeMismatchError(f"{name}: expected both operands to have the same dtype, got {a.dtype} "
                                 f"and {b.dtype} (torch: 'expected mat1 and mat2 to have the same dtype')")


_CPP_NAMES = {"float32": "float", "float64": "double", "float16": "c10::Half", "bfloat16": "c10::BFloat16",
              "int64": "long int", "int32": "int", "int16": "short int", "int8": "signed char",
              "uint8": "unsigned char", "bool": "bool", "complex64": "c10::complex<float>",
              "complex128": "c10::complex<double>"}  # (the C++ type names torch's mm check prints)


def cpp_type_name(dtype):
    """The C++ type name torch's dtype checks print (``long int`` for int64)."""
    return _CPP_NAMES.get(str(dtype), str(dtype))


def _mm_dtype_message(a, b):
    return f"expected m1 and m2 to have the same dtype, but got: {cpp_type_name(a.dtype)} != {cpp_type_name(b.dtype)}"


def _refuse_mixed_product(a, b):
    """torch's refusal of a product of two dtypes, in the words of the kernel matmul picks by the operands' ranks:
    dot (1-D by 1-D), addmv (a matrix or batch by a vector), mm (by a matrix: a batch folded into one), bmm."""
    if a.dtype == b.dtype:
        return
    name_a, name_b = torch_name(a.dtype), torch_name(b.dtype)
    if a.ndim == 1 and b.ndim == 1:
        raise DTypeMismatchError(f"dot : expected both vectors to have same dtype, but found {name_a} and {name_b}")
    if b.ndim == 1:
        raise DTypeMismatchError(f"addmv input tensors must have the same dtype, but got {name_b}, {name_a}, and {name_b}")
    if b.ndim == 2:
        raise DTypeMismatchError(_mm_dtype_message(a, b))
    raise DTypeMismatchError(f"expected scalar type {name_a} but found {name_b}")


def _bool_kernel_name(a_ndim, b_ndim):
    """The torch CPU kernel a product of these ranks runs (named in its error for bool operands)."""
    if a_ndim == 1 and b_ndim == 1:
        return "dot"
    if b_ndim == 1:
        return "addmv_impl_cpu"
    return "addmm_impl_cpu_" if b_ndim == 2 else "bmm"


def _is_16bit_float(a):
    return a.dtype.itemsize == 2 and is_floating(a.dtype)


def _on_cublas(*arrays, products):
    """Whether a 16-bit product of these arrays goes to the GPU as it is: on ``cuda``, two-dimensional
    operands only, and no product (``products``: their shapes) of one element. cuBLAS accumulates a 16-bit
    GEMM in float32 itself (no copies needed), but CuPy 14.0 multiplies bfloat16 only as two 2-D arrays
    (batched operands fail, cupy/cupy#10317), and a one-element product is no GEMM there: CuPy's ``dot``
    sums it with a reduction kernel in the 16-bit dtype."""
    return (xp_of(arrays[0]) is not np and all(a.ndim == 2 for a in arrays)
            and all(rows * cols > 1 for rows, cols in products))


def _product(a, b, matmul=blas.matmul):
    """``a @ b`` as torch computes it. float32/float64: ``matmul`` itself. bfloat16/float16:
    ``matmul`` of float32 copies, rounded back once -- torch's CPU kernels accumulate in float32
    (its bf16 results equal this bit for bit) -- except two 2-D arrays on ``cuda``, which go to
    cuBLAS directly (``_on_cublas``; checked only by benchmarks/gpu_check.sh: there is no GPU in
    the test run)."""
    if not _is_16bit_float(a) or _on_cublas(a, b, products=[(a.shape[0], b.shape[-1])]):
        return matmul(a, b)
    return _sums16(a, b, matmul).astype(a.dtype)


def _sums16(a, b, matmul=blas.matmul):
    """The float32 sums of ``a @ b`` for 16-bit values (16-bit arrays or float32 copies of them), before the
    rounding: bfloat16 matrices as oneDNN adds them where torch runs it (``bf16_products``), otherwise
    ``matmul`` of float32 copies (float16; vectors, which torch's dot and mv kernels sum)."""
    if a.ndim >= 2 and b.ndim >= 2 and isinstance(a, np.ndarray) and bf16_products.applies(a.dtype):
        return bf16_products.matmul(a, b)
    if half_products.applies(a, b) and b.dtype == a.dtype:  # float16 matrices: ATen's loops
        return half_products.matmul(a, b)
    return matmul(upcast(a), upcast(b))


def _bf16_pairs(*arrays):
    """Whether products of these (16-bit, or their float32 copies) sum in oneDNN's bfloat16 order."""
    return all(isinstance(a, np.ndarray) for a in arrays) and bf16_products.applies(arrays[0].dtype)


# torch's CPU bmm below this many multiply-adds a matrix (contraction * rows * columns) runs ATen's own loop
_BMM_LOOP_BELOW = 400


def _torch_products(a, b):
    """``a @ b`` as torch's CPU kernels compute it. Two batches (torch's bmm, also what its matmul runs for
    them) of float32/float64 with fewer than 400 multiply-adds a matrix: ATen's ``baddbmm_cpu_kernel``,
    which adds the products one after another in the dtype, each product rounded (no fused multiply-add);
    otherwise BLAS (``parallel.matmul``; torch's MKL may round otherwise)."""
    if a.ndim >= 3 and b.ndim >= 3 and isinstance(a, np.ndarray) and a.dtype == b.dtype and \
            a.dtype in (np.float32, np.float64) and a.shape[-1] * a.shape[-2] * b.shape[-1] < _BMM_LOOP_BELOW:
        return _bmm_loop(a, b)
    if a.ndim >= 3 and b.ndim == 2 and isinstance(a, np.ndarray):  # (folded: one mm of the batch's rows)
        return _torch_products(_as_rows(a), b).reshape(a.shape[:-1] + b.shape[-1:])
    in_mkl_order = _mkl_dot(a, b)
    return parallel.matmul(a, b) if in_mkl_order is None else in_mkl_order


def _as_rows(a):
    """[..., M, K] as the [prod(...) M, K] matrix of its rows (an empty one too)."""
    return a.reshape(math.prod(a.shape[:-1]), a.shape[-1])


def _mkl_dot(a, b):
    """A vector times a vector (torch's dot), a matrix times a vector (torch's mv), a row times a column (an mm of
    one output: MKL's gemm then adds as its dot, measured) or a row times a C-contiguous matrix (``v @ A``: MKL's gemm
    then runs as its plain gemv of ``A``'s columns, measured), in MKL's order where ``mkl_dot`` claims it; else None.
    Where ``mkl_dot.direct()`` (MKL's own routines called), the products of matrices are left to its gemm.
    NumPy arrays only (CuPy's products are cuBLAS's; and copies below must not move them to the host)."""
    if type(a) is not np.ndarray or type(b) is not np.ndarray:
        return None
    if a.ndim == b.ndim == 1:
        return mkl_dot.dot(a, b)
    if mkl_dot.direct():  # MKL's own routines (its dot above): torch's gemv, and its gemm for products of matrices
        if a.ndim == 2 and b.ndim == 1:
            return mkl_dot.addmv(None, a, b, 0, 1)
        return parallel.matmul(a[None], b)[0] if a.ndim == 1 and b.ndim == 2 else None
    if a.ndim == 1 and b.ndim == 2:  # (ATen's matmul: the vector as a row, one mm)
        row = _mkl_dot(a[None], b)
        return None if row is None else row[0]
    if a.ndim == 2 and b.ndim == 1:  # (ATen's mv: gemv of the columns as they lie, else of a C-contiguous copy)
        if mkl_dot.by_columns(a) and a.shape[0] > 1:
            return mkl_dot.columns_times_vector(a, b)
        return mkl_dot.rows_times_vector(np.ascontiguousarray(a), np.ascontiguousarray(b))
    if a.ndim == b.ndim == 2 and a.shape[0] == b.shape[1] == 1:
        total = mkl_dot.dot(a[0], b[:, 0])  # (a column of a C-contiguous [k, 1]: contiguous too)
        return None if total is None else np.full((1, 1), total)
    if a.ndim == b.ndim == 2 and len(a) == 1 and b.shape[1] > 1 and mkl_dot.by_columns(b.T):
        row = mkl_dot.columns_times_vector(b.T, np.ascontiguousarray(a[0]))
        return None if row is None else row[None]
    if a.ndim == b.ndim == 2:
        return one_row_times_weight(a, b.T)
    return None


def _bias_first(x, w, b):
    """Whether ``x @ w.T + b`` starts its sums from ``b`` (BLAS's beta = 1, as torch's addmm calls MKL) rather than
    adding ``b`` to the finished product: float32/float64 NumPy arrays of one dtype where MKL is minilora's BLAS
    (torch's bits; with K past one of MKL's blocks the two differ: 33-53% of outputs at K = 688-2000)."""
    return (b is not None and blas.library() == "mkl" and type(x) is np.ndarray and type(b) is np.ndarray
            and x.dtype == w.dtype == b.dtype and x.dtype in (np.float32, np.float64) and b.ndim == 1 and x.size > 0)


def one_row_times_weight(x, w):
    """``x @ w.T`` for ``x`` of one row ([1, K]; ``w`` [N, K]) as torch computes it: ATen hands a one-row mm to
    MKL's gemm, which sums it as its gemv -- ``torch.mv(w, x[0])``'s bits (measured: ``F.linear`` of one row equals
    ``mv``), ``mkl_dot.rows_times_vector`` where it models this CPU (``w`` C-contiguous); else None. A decoded
    token's linear layers run this: one row each (batch 1)."""
    if x.ndim != 2 or len(x) != 1 or mkl_dot.direct():  # (direct: MKL's gemm itself, as torch's mm)
        return None
    row = mkl_dot.rows_times_vector(w, x[0])
    return None if row is None else row[None]


def _bmm_loop(a, b):
    """ATen's small-bmm loop, ``acc += a[.., i, k] * b[.., k, j]`` for k in order from zero, in two NumPy
    calls: every product (rounded), then a running sum along k (``cumsum`` adds in order; ``sum`` pairs). The
    loop's sum starts at +0, so products that are all -0 (a masked attention weight times a negative number) sum
    to +0 there: adding +0 last does that and changes no other sum."""
    if a.shape[-1] == 0:
        return np.zeros(np.broadcast_shapes(a.shape[:-2], b.shape[:-2]) + (a.shape[-2], b.shape[-1]), a.dtype)
    products = a[..., :, None, :] * np.swapaxes(b, -1, -2)[..., None, :, :]  # [..., n, m, k]
    sums = np.cumsum(products, axis=-1)[..., -1]
    return np.add(sums, a.dtype.type(0), order="C")  # (torch's bmm writes a contiguous result)


def _matmul_grads(g, a, b, need_a, need_b, matmul=blas.matmul):
    """Gradients of ``a @ b`` (``a`` [..., M, K], ``b`` [..., K, N], batch axes broadcasting) for the
    output gradient ``g`` [..., M, N]: ``(ga, gb)`` in the shapes of ``a`` and ``b``, None where not needed.

    ``matmul`` computes the products: ``np.matmul`` through minilora's BLAS (``blas.matmul``) by default; ``MatMul.backward`` passes
    ``minilora.parallel.matmul``, the same product with its rows split across threads."""
    # EXERCISE 1.4: gradients of a @ b for a and b (broadcast batch axes summed back), None if not needed
    # BEGIN SOLUTION
    ga = unbroadcast(matmul(g, b.swapaxes(-1, -2)), a.shape) if need_a else None
    gb = unbroadcast(matmul(a.swapaxes(-1, -2), g), b.shape) if need_b else None
    # END SOLUTION
    return ga, gb


def _column_major(x):
    """torch's test in ``mm_mat1_backward``/``mm_mat2_backward``: an operand laid out by columns (``W.t()``)."""
    return x.strides[0] == x.itemsize and x.strides[1] == x.shape[0] * x.itemsize


def _mkl_matrices(*arrays):
    """Whether these are 2-D float32/float64 NumPy arrays of one dtype whose products MKL's own gemm computes on a
    CPU its orders were not measured on (``mkl_dot.direct``)."""
    return (mkl_dot.direct() and all(type(x) is np.ndarray and x.ndim == 2 and x.dtype == arrays[0].dtype
                                     for x in arrays) and arrays[0].dtype in (np.float32, np.float64))


def _mm_grads_as_torch(g, a, b, need_a, need_b):
    """The gradients of an mm ``a @ b`` (2-D float32/float64 NumPy arrays) as torch's autograd forms them where MKL's
    own gemm is called (``mkl_dot.direct``): an operand laid out by columns gets its gradient as the transpose of the
    transposed product -- ``(g^T @ a)^T`` for ``b``, ``(b @ g^T)^T`` for ``a`` -- a gemm of the other shape, which
    MKL on a CPU the orders were not measured on (an AMD Zen 4) sums otherwise than ``a^T @ g`` (up to half of an
    MHA's or a batch-first GRU's input-projection weight gradient an ulp off). Else None."""
    if not _mkl_matrices(g, a, b):
        return None
    ga = gb = None
    if need_a:
        ga = _torch_products(b, g.T).T if _column_major(a) else _torch_products(g, b.T)
    if need_b:
        gb = _torch_products(g.T, a).T if _column_major(b) else _torch_products(a.T, g)
    return ga, gb


def _linear_backward_rows(g, x, gx, w, need_w, need_b):
    """The gradients of ``x W^T + b`` for rows of ``g`` [rows, out]: fills ``gx`` [rows, in] (None: not
    needed) and returns these rows' terms ``(gw, gb)`` of the sums over rows (None where not needed).

    Called on the whole arrays it is the whole backward; ``Linear.backward`` calls it through
    ``minilora.parallel.input_and_weight_grads``, which computes the ``dX`` and ``dW`` products side by
    side on threads (``dX`` on blocks of rows, ``dW`` on blocks of output features)."""
    # EXERCISE 1.5: gradients of x W^T + b from g [rows, out]; no weight GEMM for a frozen weight (not need_w)
    # BEGIN SOLUTION
    if gx is not None:
        array_matmul(g, w, out=gx)  # dX = dY W (array_matmul: np.matmul through minilora's BLAS)
    gw = array_matmul(g.T, x) if need_w else None  # dW = dY^T X: skipped for a frozen weight
    gb = _sum_over_rows(g) if need_b else None
    # END SOLUTION
    return gw, gb


_linear_backward_is_the_solution = solutions.solution_check(_linear_backward_rows)  # (exercise 1.5 as shipped)


def _linear_backward_products(g, x, gx, w, gw):
    """``_linear_backward_rows``' products (dX = dY W into ``gx``, dW = dY^T X into ``gw``; None: not wanted) as
    ``gemm_pool.Product``s: ``parallel.input_and_weight_grads`` runs them side by side in C threads, the same
    CBLAS calls as the NumPy code's, so the same bits (tests/test_gemm_pool_r25.py)."""
    return ([gemm_pool.Product(g, w, gx)] if gx is not None else []) + (
        [gemm_pool.Product(g.T, x, gw)] if gw is not None else [])


def _sum_over_rows(g):
    """``g.sum(axis=0)``; for float32 and float64 NumPy arrays in torch's order of additions (its addmm's
    ``sum_to_size``: ATen's cascade sum, ``float32_sums.cascade_sum``), so a bias's gradient is torch's bits."""
    if type(g) is np.ndarray and g.dtype in (np.float32, np.float64):
        summed = float32_sums.cascade_sum(g, (0,))
        if summed is not None:
            return summed
    return g.sum(axis=0)


def _each_for_the_other(ctx):
    """torch's mm/addmm save each operand only for the other's gradient (see Function.torch_saves)."""
    return [i for i, other in ((0, 1), (1, 0)) if ctx.needs_input_grad[other]]


def _batches_differ(a, b):
    try:
        np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
        return False
    except ValueError:
        return True


def _mm_message(a_shape, b_shape):
    return f"mat1 and mat2 shapes cannot be multiplied ({a_shape[0]}x{a_shape[1]} and {b_shape[0]}x{b_shape[1]})"


def _mv_message(rows, columns, vector):
    return f"size mismatch, got input ({rows}), mat ({rows}x{columns}), vec ({vector})"


def _bmm_message(a_shape, b_shape):
    return (f"Expected size for first two dimensions of batch2 tensor to be: [{a_shape[0]}, {a_shape[2]}] but got: "
            f"[{b_shape[0]}, {b_shape[1]}].")


def _torch_matmul_message(a, b, needs):
    """torch's words for operands ``matmul`` cannot multiply: ATen's matmul picks dot, mv, mm, a folded mm/mv (the
    larger operand's batch folded into its rows, where that needs no copy or the other needs a gradient) or a
    broadcast bmm, and the error is that kernel's. ``needs``: which operand requires grad."""
    if a.ndim == b.ndim == 1:
        return (f"inconsistent tensor size, expected tensor [{a.shape[0]}] and src [{b.shape[0]}] to have the same "
                f"number of elements, but got {a.shape[0]} and {b.shape[0]} elements respectively")
    if a.ndim <= 2 and b.ndim <= 2:
        if b.ndim == 1:
            return _mv_message(a.shape[0], a.shape[1], b.shape[0])
        return _mm_message(a.shape if a.ndim == 2 else (1,) + a.shape, b.shape)
    if _folds(a, b, needs):
        if a.ndim >= b.ndim:  # (a's batch and rows as one dimension)
            rows = int(np.prod(a.shape[:-1]))
            return _mv_message(rows, a.shape[-1], b.shape[0]) if b.ndim == 1 else _mm_message((rows, a.shape[-1]), b.shape)
        bt = b.swapaxes(-1, -2)  # (a @ b as (b^T @ a^T)^T: b^T's batch and rows folded)
        rows = int(np.prod(bt.shape[:-1]))
        return (_mv_message(rows, bt.shape[-1], a.shape[0]) if a.ndim == 1
                else _mm_message((rows, bt.shape[-1]), a.shape[::-1]))
    batch_a, batch_b = a.shape[:-2], b.shape[:-2]
    try:
        batch = np.broadcast_shapes(batch_a, batch_b)
    except ValueError:
        return _torch_broadcast_message([batch_a, batch_b])
    count = int(np.prod(batch))
    rows, inner = (a.shape[-2] if a.ndim > 1 else 1), a.shape[-1]
    return _bmm_message((count, rows, inner), (count,) + (b.shape[-2:] if b.ndim > 1 else (b.shape[0], 1)))


def _folds(a, b, needs):
    """ATen's should_fold: the operand of 3 or more dimensions folded into a matrix when the other has 1 or 2."""
    larger, other, other_needs = (a, b, needs[1]) if a.ndim >= b.ndim else (b.swapaxes(-1, -2), a, needs[0])
    if not (larger.ndim >= 3 and other.ndim <= 2):
        return False
    if other_needs:
        return True
    if a.ndim == 2:
        return False
    if larger.size == 0:
        return True
    shape, strides = larger.shape, larger.strides
    return all(strides[i] == strides[i + 1] * shape[i + 1] for i in range(larger.ndim - 2))


class MatMul(Function):
    torch_saves = staticmethod(_each_for_the_other)
    torch_layout = "contiguous"  # (ATen's mm/bmm write a new contiguous result, from channels_last operands too)

    @staticmethod
    def forward(ctx, a, b, folds=True):
        if a.ndim == 0 or b.ndim == 0:
            raise RuntimeError(f"both arguments to matmul need to be at least 1D, but they are "
                               f"{a.ndim}D and {b.ndim}D (use mul for scalars)")
        _refuse_mixed_product(a, b)
        if a.dtype == np.bool_ and (a.size and b.size or a.ndim == b.ndim == 1):  # NumPy multiplies bools
            # (and/or); torch has no product kernel for them (an empty operand runs none, but for dot)
            raise NotImplementedError(f'"{_bool_kernel_name(a.ndim, b.ndim)}" not implemented for \'Bool\'')
        if a.shape[-1] != b.shape[-2 if b.ndim > 1 else 0]:
            raise ShapeError(_torch_matmul_message(a, b, ctx.needs_input_grad))
        ctx.a, ctx.b, ctx.folds = a, b, folds
        try:
            if not folds and not _is_16bit_float(a):  # (torch's bmm of the batch and the expanded matrix)
                return _torch_products(a, np.broadcast_to(b, a.shape[:-2] + b.shape))
            return _product(a, b, _torch_products)
        except ValueError:  # (batches that do not broadcast: NumPy's words, on the error path only)
            if not _batches_differ(a, b):
                raise
            raise ShapeError(_torch_matmul_message(a, b, ctx.needs_input_grad)) from None

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.a, ctx.b
        # A 1-D operand is a matrix with a size-1 axis that matmul drops; put it back for backward.
        a2 = a[None, :] if a.ndim == 1 else a
        b2 = b[:, None] if b.ndim == 1 else b
        if b.ndim == 1:  # this order also turns the 0-d gradient of vector @ vector into [1, 1]
            g = g[..., None]
        if a.ndim == 1:
            g = g[..., None, :]
        na, nb = ctx.needs_input_grad
        dtype = g.dtype
        if ctx.folds and b2.ndim == 2 and a2.ndim > 2:  # torch's backward of the one mm of the batch's rows
            a2, g = _as_rows(a2), _as_rows(g)
        elif b2.ndim == 2 and a2.ndim > 2 and not _is_16bit_float(g):  # of its bmm (b frozen: only a's gradient)
            b2 = np.broadcast_to(b2, a2.shape[:-2] + b2.shape)
        products = _torch_products  # each product split over threads
        if _is_16bit_float(g) and not _on_cublas(g, a2, b2, products=[a2.shape, b2.shape]):
            if _bf16_pairs(g, a2, b2):  # oneDNN's order, on torch's operands: a batch times a matrix is one mm
                products = bf16_products.matmul
                if b2.ndim == 2 and a2.ndim > 2:
                    a2, g = a2.reshape(-1, a2.shape[-1]), g.reshape(-1, g.shape[-1])
            elif half_products.applies(a2, b2) and g.dtype == b2.dtype and (b2.ndim == 2 or a2.shape[:-2] == b2.shape[
                    :-2]):  # float16: ATen's loops, by the operands' layouts (on the 16-bit arrays themselves)
                products = half_products.matmul
                if b2.ndim == 2:  # (torch's matmul folds a batch times a matrix into one mm)
                    a2, g = a2.reshape(-1, a2.shape[-1]), g.reshape(-1, g.shape[-1])
                ga, gb = _matmul_grads(g, a2, b2, na, nb, matmul=products)
                return tuple(None if grad is None else grad.reshape(shape).astype(dtype, copy=False)
                             for grad, shape in ((ga, a.shape), (gb, b.shape)))
            g, a2, b2 = upcast(g), upcast(a2), upcast(b2)  # as torch: in float32, each gradient rounded once
        ga, gb = _matmul_grads(g, a2, b2, na, nb, matmul=products)  # (exercise 1.4's region runs, always)
        by_columns = None if products is not _torch_products else _mm_grads_as_torch(  # (not oneDNN's bf16 products)
            g, a2, b2, na and _column_major(a2), nb and _column_major(b2))
        if by_columns is not None:  # (an operand laid out by columns, where MKL is called directly: torch's form)
            ga, gb = (ours if theirs is None else theirs for ours, theirs in zip((ga, gb), by_columns))
        return tuple(None if grad is None else grad.reshape(shape).astype(dtype, copy=False)
                     for grad, shape in ((ga, a.shape), (gb, b.shape)))

    @staticmethod
    def flops(ctx, arrays, out):
        a = arrays[0]
        return 2 * out.size * a.shape[-1]

    @staticmethod
    def backward_flops(ctx):
        a, b = ctx.a, ctx.b
        gemm = 2 * (a.size // a.shape[-1]) * a.shape[-1] * (b.shape[-1] if b.ndim > 1 else 1)
        return gemm * sum(ctx.needs_input_grad)


def _linear_saves(ctx):
    """What torch's linear saves, in its order (so saved-tensor hooks see torch's tensors): the input's
    rows and ``weight.t()``, each for the other's gradient; addmm (with a bias) saves the input first,
    mm (without one) the weight first."""
    with_bias = len(ctx.inputs) > 2 and ctx.inputs[2] is not None
    return linear_saves(*ctx.needs_input_grad[:2], 0, 1, with_bias)


def linear_saves(need_x, need_w, x, w, with_bias):
    """torch_saves entries of one linear ``x @ w.t()`` inside an op (inputs ``x`` and ``w`` by position
    or ctx name): ``x`` for ``w``'s gradient, ``w.t()`` for ``x``'s, in torch's order."""
    saves = [x] * need_w, [("t", w)] * need_x
    return saves[0] + saves[1] if with_bias else saves[1] + saves[0]


def refuse_as_linear(x, w, b=None):
    """torch's refusals of ``F.linear(x, w, b)`` (anything with shape and dtype: a Tensor or an array): with a
    bias ATen runs ``addmm(b, x, w.t())`` (its dtype checks, bias first), without one ``matmul`` (mm's words);
    then the sizes, in mm's words either way."""
    if b is not None:
        refuse_mixed_addmm("addmm", b, x, w.T)
    elif x.dtype != w.dtype:
        raise DTypeMismatchError(_mm_dtype_message(x, w))
    if x.shape[-1] != w.shape[1]:  # (torch's addmm of the input's rows and the weight's transpose)
        raise ShapeError(f"mat1 and mat2 shapes cannot be multiplied ({_rows(x.shape)}x{x.shape[-1]} and "
                         f"{w.shape[1]}x{w.shape[0]})")


def refuse_mixed_addmm(name, input, first, second):
    """torch's dtype refusals of ``addmm``/``addbmm``/``baddbmm(input, first, second)``, in ATen's order: addmm
    and addbmm compare ``input`` ("self") with ``second`` ("mat2"), then the two factors; baddbmm compares
    ``input`` with ``first``, then leaves the factors to bmm (its words)."""
    if name == "baddbmm":
        if input.dtype != first.dtype:
            i, b1, b2 = (_CPP_NAMES.get(str(t.dtype), str(t.dtype)) for t in (input, first, second))
            raise DTypeMismatchError(f"Input dtypes must be the same, got: input {i}, batch1: {b1}, batch2: {b2}")
        _refuse_mixed_product(first, second)
        return
    for label, operand in (("self", input), ("mat1", first)):
        if operand.dtype != second.dtype:
            raise DTypeMismatchError(f"{label} and mat2 must have the same dtype, but got "
                                     f"{torch_name(operand.dtype)} and {torch_name(second.dtype)}")


class Linear(Function):
    torch_saves = staticmethod(_linear_saves)  # (it keeps the weight anyway, for its shape)

    @staticmethod
    def forward(ctx, x, w, b=None):
        refuse_as_linear(x, w, b)
        x2 = x.reshape(_rows(x.shape), x.shape[-1])
        if _is_16bit_float(x) and not (_on_cublas(x2, w, products=[(x2.shape[0], w.shape[0])]) and b is None):
            out = _linear_in_float32(x2, w, b)  # (cuda: a 16-bit product rounded before the bias would round twice)
        else:
            out = one_row_times_weight(x2, w)  # (a decoded token: torch's mv order)
            if out is None and _bias_first(x2, w, b):  # torch's addmm: the sums start from the bias
                out = parallel.matmul_into(np.broadcast_to(b, (len(x2), len(w))).copy(), x2, w.T)
            elif out is None:
                out = parallel.matmul(x2, w.T)  # cuda 16-bit: cuBLAS accumulates in float32 (see _product)
                if b is not None:
                    out += b
            elif b is not None:
                out += b
        # The input is kept only for the weight gradient: a frozen weight does not hold it alive.
        ctx.x2 = x2 if ctx.needs_input_grad[1] else None
        ctx.w, ctx.x_shape, ctx.rows = w, x.shape, x2.shape[0]
        ctx.x_by_columns = x.ndim == 2 and x2.size > 0 and _column_major(x2)  # (x.t(): mm_mat1_backward's form)
        return out.reshape(x.shape[:-1] + (w.shape[0],))

    @staticmethod
    def backward(ctx, g):
        nx, nw, nb = ctx.needs_input_grad
        g2, x2, w = g.reshape(ctx.rows, g.shape[-1]), ctx.x2, ctx.w
        dtype = g2.dtype
        sum_bias_in_float32 = False
        if _is_16bit_float(g2) and _bf16_pairs(g2, w):  # oneDNN's bfloat16 products
            return _linear_backward_bf16(ctx, g2, x2, w)
        if half_products.applies(g2, w):  # float16: ATen's loops (dY @ W and dY^T X: 4 partial sums)
            return _linear_backward_half(ctx, g2, x2, w)
        if _is_16bit_float(g2) and not _on_cublas(g2, w, products=[(g2.shape[0], w.shape[1]), w.shape]):
            g2, x2, w = upcast(g2), None if x2 is None else upcast(x2), upcast(w)  # torch's CPU way: float32
        elif _is_16bit_float(g2):  # cuda: the GEMMs on cuBLAS in 16 bits, but CuPy may sum bf16 in bf16
            sum_bias_in_float32, nb = nb, False
        by_columns = nx and ctx.x_by_columns and g2.dtype == dtype and _mkl_matrices(g2, w)
        gx = xp_of(g2).empty((g2.shape[0], w.shape[1]), g2.dtype) if nx and not by_columns else None
        # dX = dY W and dW = dY^T X side by side on threads, each through _linear_backward_rows
        gw, _ = parallel.input_and_weight_grads(_linear_backward_rows, g2, x2, gx, w, nw, False,
                                                as_products=_linear_backward_products
                                                if _linear_backward_is_the_solution() else None)
        if by_columns:  # an input laid out by columns (x.t()): torch's (W^T dY^T)^T, see _mm_grads_as_torch
            gx = _torch_products(w.T, g2.T).T
        gb = None
        if nb or sum_bias_in_float32:  # the region again, on all of dY: its sum's order is torch's over the whole
            _, gb = _linear_backward_rows(upcast(g2) if sum_bias_in_float32 else g2, None, None, w, False, True)
        gx = None if gx is None else gx.reshape(ctx.x_shape)
        return tuple(None if grad is None else grad.astype(dtype, copy=False) for grad in (gx, gw, gb))

    @staticmethod
    def flops(ctx, arrays, out):
        return 2 * out.size * arrays[1].shape[1]

    @staticmethod
    def backward_flops(ctx):
        nx, nw, _ = ctx.needs_input_grad
        return 2 * ctx.rows * ctx.w.size * (int(nx) + int(nw))


def _rows(shape):
    """The rows of ``[..., features]`` flattened to 2-D, counted: ``reshape(-1, 0)`` is ambiguous to
    NumPy, and ``nn.Linear(0, n)`` / ``nn.Linear(k, 0)`` are valid layers in torch."""
    rows = 1
    for size in shape[:-1]:
        rows *= size
    return rows


def _linear_backward_bf16(ctx, g2, x2, w):
    """Linear's gradients in bfloat16 as torch's CPU computes them: dX = dY W and dW = dY^T X, each summed in
    oneDNN's order (``bf16_products``) and rounded once; the bias's, dY summed over rows in float32."""
    nx, nw, nb = ctx.needs_input_grad
    gx = bf16_products.matmul(g2, w).reshape(ctx.x_shape) if nx else None
    gw = bf16_products.matmul(g2.T, x2) if nw else None
    gb = upcast(g2).sum(axis=0) if nb else None
    return tuple(None if grad is None else grad.astype(g2.dtype) for grad in (gx, gw, gb))


def _linear_backward_half(ctx, g2, x2, w):
    """Linear's gradients in float16 as torch's CPU computes them (``half_products``): dX = dY W (4 partial sums) and
    dW = dY^T X (added row after row), each rounded once; the bias's as the float32 path sums it."""
    nx, nw, nb = ctx.needs_input_grad
    input_order, weight_order = half_products.linear_gradient_orders()
    gx = input_order(g2, w).reshape(ctx.x_shape) if nx else None
    gw = weight_order(g2.T, x2) if nw else None
    gb = _linear_backward_rows(upcast(g2), None, None, w, False, True)[1] if nb else None
    return tuple(None if grad is None else grad.astype(g2.dtype) for grad in (gx, gw, gb))


def _linear_in_float32(x2, w, b):
    """``x2 W^T + b`` of 16-bit NumPy arrays as torch's CPU ``addmm``: product and bias added in
    float32, rounded to the 16-bit dtype once (rounding the product before the bias differs from
    torch in about one element in four)."""
    out = _sums16(x2, w.T, parallel.matmul)
    if b is not None:
        out += upcast(b)
    return out.astype(x2.dtype)


# torch's node for matmul by the operands' ranks: the ATen op it dispatches to (3-D and up: a view of bmm)
_MATMUL_NODES = {(1, 1): "DotBackward0", (2, 2): "MmBackward0", (2, 1): "MvBackward0", (1, 2): "SqueezeBackward4"}


def matmul(input, other):
    """``torch.matmul(input, other)``: ``input @ other`` (keywords as torch names them)."""
    if _amp.used and _amp.state.active:  # in an autocast region: torch's cast for this op (minilora/amp.py)
        return _amp.autocast_op("matmul", matmul, input, other)
    return _matmul(input, other)


def _matmul(input, other):
    """matmul past its autocast step (F.linear's own casts come first), as torch's: a batch times a matrix is one mm
    of the batch's rows, or -- a frozen matrix (one that does not require grad; a view of a weight that does, made
    under no_grad, does) times a batch that does not view as rows, a transposed batch-first input -- a bmm with the
    matrix expanded (other sums, other bits)."""
    ranks = (getattr(input, "ndim", 0), getattr(other, "ndim", 0))
    arrays = (getattr(input, "_array", input), getattr(other, "_array", other))
    folds = not (ranks[0] >= 3 and ranks[1] == 2 and all(type(a) is np.ndarray for a in arrays)) or _folds(
        *arrays, (getattr(input, "requires_grad", False), getattr(other, "requires_grad", False)))
    unfolded = {} if folds else {"folds": False}  # (meta tensors' shape rule takes the operands only: they fold)
    out = saves_as_torch(MatMul.apply(input, other, **unfolded), saved_for(input, other), saved_for(other, input))
    return name_node(out, _MATMUL_NODES.get(ranks, "UnsafeViewBackward0"),
                     graph=_matmul_graph(ranks, input, other))


def _matmul_graph(ranks, input, other):
    """torch's graph where its matmul is a view of mm or bmm (see name_node); None where it is one node."""
    if ranks == (1, 2):  # squeeze(mm(unsqueeze(input), other))
        return (("MmBackward0", ("UnsqueezeBackward0", input), other),)
    if ranks[0] >= 3 and ranks[1] == 2:  # a view of mm(input.view(-1, k), other)
        return (("MmBackward0", ("ViewBackward0", input), other),)
    return None


def linear(x, weight, bias=None):
    """``x @ weight.T + bias`` with ``weight`` stored ``[out_features, in_features]`` as in PyTorch."""
    if _amp.used and _amp.state.active:  # in an autocast region: torch's cast for this op (minilora/amp.py)
        return _amp.autocast_op("linear", linear, x, weight, bias)
    ndim = getattr(x, "ndim", 2)
    if ndim != 2 and (ndim == 0 or weight.ndim == 0):
        raise RuntimeError(f"both arguments to linear need to be at least 1D, but they are {x.ndim}D and "
                           f"{weight.ndim}D")
    if bias is not None and ndim >= 3 and isinstance(x, Tensor) and not x.is_contiguous():
        return _linear_then_bias(x, weight, bias)
    name, *graph = linear_node(x, weight, bias, ndim)
    return name_node(_linear(x, weight, bias), name, graph=tuple(graph))


def _linear_then_bias(x, weight, bias):
    """torch's F.linear of a non-contiguous input of 3-D and up (a batch-first RNN's [T, N, features] view, a
    transpose): not its fused addmm but ``matmul(x, weight.t())``, the bias added to the finished product -- a 16-bit
    product rounded before the bias, a float32 one summed without it -- and its bias gradient a sum over the
    batch dims (AddBackward0)."""
    refuse_as_linear(x, weight, bias)
    return _matmul(x, weight.t()) + bias


def linear_node(x, weight, bias, ndim):
    """torch's node for ``F.linear(x, weight, bias)`` of an ``ndim``-D x, as a name_node graph entry
    ``(name, *inputs)`` (x may be such an entry itself: PEFT's lora_B(lora_A(x)), lora/layers.py): addmm(bias,
    x, weight.t()) or mm(x, weight.t()) of a matrix, a view of that product of x as a matrix otherwise (a view,
    or a 1-D x unsqueezed without a bias)."""
    transposed = ("TBackward0", weight)
    if ndim == 2:
        return ("AddmmBackward0", bias, x, transposed) if bias is not None else ("MmBackward0", x, transposed)
    rows = ("UnsqueezeBackward0" if ndim == 1 and bias is None else "ViewBackward0", x)
    if bias is not None:
        return "ViewBackward0", ("AddmmBackward0", bias, rows, transposed)
    return ("SqueezeBackward4" if ndim == 1 else "UnsafeViewBackward0"), ("MmBackward0", rows, transposed)


def _linear(x, weight, bias):
    """Linear, saving what torch's addmm saves: each of x and weight only for the other's gradient."""
    return saves_as_torch(Linear.apply(x, weight, bias), saved_for(x, weight), saved_for(weight, x))


# ---- einsum --------------------------------------------------------------------------------------
def _einsum_subscripts(equation, ndims):
    """``"bij,bjk->bik"`` as a list of input label strings and the output labels. ``...`` becomes
    fresh labels (right-aligned, as broadcasting aligns dims); no ``->`` means torch's implicit
    output: the labels that appear once, in alphabetical order, after the ellipsis dims."""
    equation = equation.replace(" ", "")
    inputs, arrow, output = equation.partition("->")
    subs = inputs.split(",")
    if len(subs) != len(ndims):
        many = "fewer" if len(ndims) < len(subs) else "more"
        raise with_note(RuntimeError(f"einsum(): {many} operands were provided than specified in the equation"),
                        f"einsum(): {len(subs)} operands in the equation, {len(ndims)} given")
    free = [c for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz" if c not in equation]
    n_ellipsis = max((n - len(s.replace("...", "")) for s, n in zip(subs, ndims) if "..." in s),
                     default=0)
    ellipsis = "".join(free[:n_ellipsis])
    subs = [s.replace("...", ellipsis[n_ellipsis - (n - len(s.replace("...", ""))):])
            for s, n in zip(subs, ndims)]
    for s, n in zip(subs, ndims):
        if len(s) != n:
            raise RuntimeError(f"einsum(): the subscript {s!r} has {len(s)} labels for a {n}-D operand")
    if arrow:
        output = output.replace("...", ellipsis)
        repeated = next((c for c in output if output.count(c) > 1), None)
        if repeated is not None:
            raise RuntimeError(f"einsum(): output subscript {repeated} appears more than once in the "
                               f"output")
        missing = next((c for c in output if not any(c in s for s in subs)), None)
        if missing is not None:
            raise RuntimeError(f"einsum(): output subscript {missing} does not appear in the equation for any input "
                               f"operand")
    else:
        labels = "".join(subs)
        output = ellipsis + "".join(sorted(c for c in set(labels) if labels.count(c) == 1
                                           and c not in ellipsis))
    return subs, output


class Einsum(Function):
    """``einsum(equation, *operands)``. The gradient of operand i is itself an einsum: the output
    gradient contracted with every other operand, onto operand i's labels (labels only operand i
    has were summed away, so the gradient is broadcast back along them)."""

    @staticmethod
    def forward(ctx, *arrays, subs, output):
        ctx.arrays, ctx.subs, ctx.output = arrays, subs, output
        # 16-bit floats: contracted in float32, rounded once (torch rounds after each pairwise
        # product of a 3-operand einsum; for two operands the numbers are the same)
        layout = _torch_einsum_layout(subs, output)
        equation = ",".join(subs) + "->" + (layout or output)
        out = xp_of(arrays[0]).einsum(equation, *map(upcast, arrays), optimize=True).astype(arrays[0].dtype, copy=False)
        if layout is None:
            return out
        out = out if out.flags.c_contiguous else out.copy()  # (np.ascontiguousarray makes a 0-d array 1-d)
        # (marked as torch's layout: stride() reports the bmm's permuted strides, as torch's)
        return known_layout(out.transpose([layout.index(c) for c in output]), [output.index(c) for c in layout])

    @staticmethod
    def backward(ctx, g):
        xp, grads = xp_of(g), []
        g, arrays = upcast(g), [upcast(a) for a in ctx.arrays]  # 16-bit: in float32 (as forward)
        for i, (array, sub) in enumerate(zip(ctx.arrays, ctx.subs)):
            if not ctx.needs_input_grad[i]:
                grads.append(None)
                continue
            others = [j for j in range(len(ctx.arrays)) if j != i]
            present = set(ctx.output).union(*(ctx.subs[j] for j in others))
            target = "".join(c for c in sub if c in present)
            equation = ",".join([ctx.output] + [ctx.subs[j] for j in others]) + "->" + target
            grad = xp.einsum(equation, g, *(arrays[j] for j in others), optimize=True)
            # labels summed only here: every element along them got the same gradient
            grad = grad.reshape([grad.shape[target.index(c)] if c in present else 1 for c in sub])
            grad = grad.sum(axis=tuple(k for k in range(array.ndim)
                                       if array.shape[k] == 1 and grad.shape[k] != 1), keepdims=True)
            grads.append(xp.broadcast_to(grad, array.shape).astype(array.dtype, copy=True))
        return tuple(grads)


# ---- _trilinear: F.bilinear's product and its gradients, as ATen's loops ----------------------------------------
class Trilinear(Function):
    """torch's ``_trilinear(i1, i2, i3, expand1, expand2, expand3, sumdim)``: the three operands unsqueezed at their
    ``expand`` dims, multiplied, summed over ``sumdim`` (``trilinear_of_arrays``: ATen's order). Each gradient is
    ``_trilinear`` again, the output gradient in that operand's place and its ``expand`` and ``sumdim`` swapped
    (ATen's ``_trilinear_backward``)."""

    @staticmethod
    def forward(ctx, i1, i2, i3, expand1, expand2, expand3, sumdim, products_dtype=None):
        ctx.arrays, ctx.dims = (i1, i2, i3), (expand1, expand2, expand3, sumdim)
        return trilinear_of_arrays(i1, i2, i3, expand1, expand2, expand3, sumdim, products_dtype)

    @staticmethod
    def backward(ctx, g):
        return tuple(trilinear_of_arrays(*operands, *dims) if need else None
                     for need, operands, dims in zip(ctx.needs_input_grad, *trilinear_gradients(ctx.arrays, ctx.dims, g)))


def trilinear_gradients(operands, dims, g):
    """The operands and dims of ATen's three ``_trilinear`` calls for the gradients: g in operand i's place, operand
    i's ``expand`` and ``sumdim`` trading places."""
    (expand1, expand2, expand3, sumdim), calls = dims, ([], [])
    for i, expand in enumerate((expand1, expand2, expand3)):
        calls[0].append(operands[:i] + (g,) + operands[i + 1:])
        calls[1].append(tuple(sumdim if j == i else e for j, e in enumerate((expand1, expand2, expand3))) + (expand,))
    return calls


def trilinear_of_arrays(i1, i2, i3, expand1, expand2, expand3, sumdim, products_dtype=None, unroll_dim=1):
    """ATen's ``_trilinear`` of arrays: each operand unsqueezed at its ``expand`` dims, then for each index k of
    ``unroll_dim`` (an output dim: its own slice; a summed dim: all into the output in turn) the k-th slices' pair
    ``i1 i2`` summed over the dims i3 lacks, then that times i3 summed over the rest (``_sumproduct_pair_of_arrays``:
    torch's bmm, its operands in ``products_dtype`` where given: autocast's), added into an output of zeros (a -0
    sum comes out +0, as torch's)."""
    operands = [np.expand_dims(x, tuple(expand)) if expand else x for x, expand in zip((i1, i2, i3), (expand1, expand2,
                                                                                                      expand3))]
    total = operands[0].ndim
    summed_12 = [d for d in sumdim if d != unroll_dim and d in expand3]
    summed_23 = [d for d in sumdim if d != unroll_dim and d not in expand3]
    sizes = _trilinear_sizes([x.shape for x in operands], (expand1, expand2, expand3))
    output = np.zeros([1 if d in sumdim else sizes[d] for d in range(total)], i1.dtype)
    if all(x.size for x in operands):
        for k in range(sizes[unroll_dim]):
            part = [x.take([k if x.shape[unroll_dim] != 1 else 0], axis=unroll_dim) for x in operands]
            pair = _sumproduct_pair_of_arrays(part[0], part[1], summed_12, products_dtype)
            product = _sumproduct_pair_of_arrays(pair, part[2], summed_23, products_dtype)
            into = (slice(None),) * unroll_dim + ((slice(None) if unroll_dim in sumdim else slice(k, k + 1)),)
            output[into] = output[into] + product
    return output.reshape([s for d, s in enumerate(output.shape) if d not in sumdim])


def _trilinear_sizes(shapes, expands):
    """Each dim's size in _trilinear (its operands' ``shapes`` unsqueezed): the last operand's that has the dim
    (ATen's; an operand with zero rows gives zero rows, not a broadcast size)."""
    return [next(shape[d] for shape, expand in reversed(list(zip(shapes, expands))) if d not in expand)
            for d in range(len(shapes[0]))]


def _sumproduct_pair_of_arrays(left, right, summed, products_dtype=None):
    """ATen's ``sumproduct_pair`` (keepdim) of two arrays of one rank: a summed dim only one of them has is summed
    first (torch's sum), the rest one bmm (torch's kernels) of [shared, left's own, summed] by [shared, summed, right's
    own] (the two swapped where all of right's own dims come before left's), laid back in place; nothing summed: the
    product. (``_sumproduct_pair`` below is the same on tensors, for einsum's graph.)"""
    if not summed:
        return left * right
    for d in summed:
        if (left.shape[d] == 1) != (right.shape[d] == 1):
            left, right = (_torch_sum(x, d) if x.shape[d] != 1 else x for x in (left, right))
    own = lambda x, y: [d for d in range(x.ndim) if d not in summed and x.shape[d] != 1 and y.shape[d] == 1]  # noqa
    shared = [d for d in range(left.ndim) if d not in summed and left.shape[d] != 1 and right.shape[d] != 1]
    left_own = own(left, right)
    right_own = [d for d in range(left.ndim) if d not in summed + shared + left_own]
    if left_own and right_own and right_own[-1] < left_own[0]:
        left, right, left_own, right_own = right, left, right_own, left_own
    size = lambda x, dims: math.prod(x.shape[d] for d in dims)  # noqa: E731
    a = left.transpose(shared + left_own + summed + right_own).reshape(
        size(left, shared), size(left, left_own), size(left, summed))
    b = right.transpose(shared + summed + right_own + left_own).reshape(
        size(left, shared), size(left, summed), size(right, right_own))
    placed = shared + left_own + summed + right_own
    if products_dtype is not None:
        a, b = a.astype(products_dtype), b.astype(products_dtype)
    out = _product(a, b, _torch_products).reshape([left.shape[d] for d in shared + left_own] + [1] * len(summed)
                                                  + [right.shape[d] for d in right_own])
    return out.transpose([placed.index(d) for d in range(left.ndim)])


def _torch_sum(x, axis):
    from .reduce import sum as sum_  # (reduce imports this module)
    from ..tensor import Tensor
    return sum_(Tensor(x), axis, keepdim=True)._array


def trilinear(i1, i2, i3, expand1, expand2, expand3, sumdim):
    """``torch._trilinear`` (unroll_dim 1): one node, saving each operand where another needs its gradient. In an
    autocast region its inner bmm calls are autocast ops (ATen's kernel calls at::bmm): their operands cast."""
    products_dtype = None
    if _amp.used and _amp.state.active:
        products_dtype = _amp.cast_args("bmm", i1)[0].dtype
        products_dtype = None if products_dtype == i1.dtype else products_dtype
    out = Trilinear.apply(i1, i2, i3, expand1=list(expand1), expand2=list(expand2), expand3=list(expand3),
                          sumdim=list(sumdim), products_dtype=products_dtype)
    return name_node(_saving_products(out, (i1, i2, i3)), "TrilinearBackward0", i1, i2, i3)


def _torch_einsum_layout(subs, output):
    """The order in which torch's einsum lays out the result's labels in memory (None: NumPy's
    layout is kept, as for one operand, where both return views). For two operands that share a
    summed label, torch computes one ``bmm``: its result holds the batch labels (in both operands
    and the output), then the free labels of the operand whose free label comes first in the
    output, then the other's, each group in output order, and is returned as a permuted view of
    that (``"bhqk,bhkd->bqhd"``: memory b, h, q, d). The layout matters beyond ``stride()``:
    dropout draws its mask in memory order."""
    if len(subs) != 2:
        return None
    left, right = subs
    if not any(c in right and c not in output for c in left):
        return None  # no contraction: torch multiplies, as NumPy's einsum does
    batch = [c for c in output if c in left and c in right]
    free_left = [c for c in output if c in left and c not in right]
    free_right = [c for c in output if c in right and c not in left]
    first_free = next((c for c in output if c not in batch), None)
    groups = (free_right, free_left) if first_free in free_right else (free_left, free_right)
    return "".join(batch + groups[0] + groups[1])


def einsum(equation, *operands):
    """``torch.einsum("bij,bjk->bik", a, b)`` (operands also as one list, as torch accepts), or in
    the sublist format ``einsum(a, [0, 1], b, [1, 2], [0, 2])`` (integers for letters). Floating operands are summed
    and contracted as torch's einsum does it (``_one_operand_summed``, ``_contracted_as_torch``)."""
    if not isinstance(equation, str):  # the sublist format: operand, sublist, operand, sublist, [out]
        equation, operands = _sublists_to_equation((equation,) + operands)
    if len(operands) == 1 and isinstance(operands[0], (list, tuple)):
        operands = tuple(operands[0])
    if _amp.used and _amp.state.active:  # torch's einsum is on CUDA's list; on the CPU's its contractions go through bmm (amp.py)
        name = "einsum" if _contracts(equation, operands) else "einsum_no_contraction"
        return _amp.autocast_op(name, einsum, equation, *operands)
    dtypes = {str(x.dtype) for x in operands}
    if len(dtypes) > 1:
        raise RuntimeError(f"einsum(): operands must have the same dtype, got {sorted(dtypes)}")
    subs, output = _einsum_subscripts(equation, [x.ndim for x in operands])
    _check_label_sizes(operands, subs)
    if operands and not is_floating(operands[0].dtype) and operands[0].dtype.kind != "c":  # (complex: as floats)
        operands = _integer_einsum_operands(operands, subs, output)
    operands, subs = zip(*(_diagonals(x, sub) for x, sub in zip(operands, subs)))
    if len(operands) == 1 and is_floating(operands[0].dtype) and set(subs[0]) - set(output):
        return _one_operand_summed(operands[0], subs[0], output)
    if _contracts_as_torch(operands):
        return _contracted_as_torch(operands, subs, output)
    return _saving_products(Einsum.apply(*operands, subs=list(subs), output=output), operands)


def _saving_products(out, operands):
    """``out`` of a product of ``operands`` (einsum, _trilinear), its node saving each operand where another needs a
    gradient (torch keeps an operand for the others' gradients only)."""
    return saves_as_torch(out, *(saved_for(x, *operands[:i], *operands[i + 1:]) for i, x in enumerate(operands)))


def _one_operand_summed(operand, sub, output):
    """torch's einsum of one operand with labels to sum (``"bij->bj"``, ``"ij->"``): the operand permuted to the
    output's labels, then the summed ones, and ``sum`` over those, so it adds in torch's sum order (NumPy's einsum
    adds in its own: 865 of 1200 float32 values of ``"bij->bj"`` were off torch's bits)."""
    from .reduce import sum as sum_
    summed = sorted(set(sub) - set(output), key=_torch_label_order)
    permuted = operand.permute([sub.index(label) for label in output + "".join(summed)])
    return sum_(permuted, list(range(len(output), len(sub))))


def _contracts_as_torch(operands):
    """Does ``_contracted_as_torch`` follow torch's einsum of these operands (two or more floating ones, 16-bit too:
    its ``bmm`` rounds after each pair, where one NumPy einsum in float32 rounded once; none empty)?"""
    return len(operands) > 1 and is_floating(operands[0].dtype) and all(x.numel() for x in operands)


def _contracted_as_torch(operands, subs, output):
    """torch's einsum of two or more operands (ATen's ``einsum``): each operand given every label as a dim (size 1
    where it lacks one) in one order, the output's labels then the summed ones; then, left to right, the first two
    contracted (a label only one of them still has, and no later operand, summed first; one both have, and no later
    operand, multiplied out by ``_sumproduct_pair``'s ``bmm``) into one that takes their place. So the products add
    in torch's order: ATen's own loop for a small ``bmm``, where NumPy's einsum has its own (``"bij,bij->bi"``)."""
    from .reduce import sum as sum_
    from .shape import reshape
    labels = output + "".join(sorted(set("".join(subs)) - set(output), key=_torch_label_order))
    aligned, shapes = [], [tuple(x.shape) for x in operands]  # (a Tensor's shape is a new Size each time: read once)
    for x, shape, sub in zip(operands, shapes, subs):
        order = sorted(sub, key=labels.index)
        aligned.append(_arranged(x, [sub.index(label) for label in order],
                                 [shape[sub.index(label)] if label in sub else 1 for label in labels]))
    holders = {label: sum(1 for shape, sub in zip(shapes, subs) if label in sub and shape[sub.index(label)] != 1)
               for label in labels}
    while len(aligned) > 1:
        a, b = aligned.pop(0), aligned.pop(0)
        summed, a_alone, b_alone = [], [], []
        a_shape, b_shape = tuple(a.shape), tuple(b.shape)
        for d in range(len(output), len(labels)):
            label = labels[d]
            if a_shape[d] != 1 and b_shape[d] != 1:
                holders[label] -= 1
                if holders[label] == 1:
                    summed.append(d)
                    holders[label] = 0
            elif holders[label] == 1:
                if a_shape[d] != 1:
                    a_alone.append(d)
                    holders[label] = 0
                elif b_shape[d] != 1:
                    b_alone.append(d)
                    holders[label] = 0
        a = sum_(a, a_alone, keepdim=True) if a_alone else a
        b = sum_(b, b_alone, keepdim=True) if b_alone else b
        aligned.insert(0, _sumproduct_pair(a, b, summed))
    result = aligned[0]
    return _arranged(result, range(result.ndim), tuple(result.shape)[:len(output)])


def _sumproduct_pair(left, right, summed):
    """ATen's ``sumproduct_pair`` (keepdim): ``(left * right).sum(summed)`` of two operands with the same number of
    dims, as one ``bmm`` of [shared, left's own, summed] by [shared, summed, right's own] (the two swapped where all
    of right's own dims come before left's), its result's dims put back in place (no ``summed``: the product)."""
    from .elementwise import mul
    from .shape import reshape
    if not summed:
        return mul(left, right)
    shared, left_own, right_own = [], [], []
    left_shape, right_shape = tuple(left.shape), tuple(right.shape)
    for d in range(len(left_shape)):
        if d in summed:
            continue
        if left_shape[d] != 1 and right_shape[d] != 1:
            shared.append(d)
        elif left_shape[d] != 1:
            left_own.append(d)
        else:
            right_own.append(d)
    if left_own and right_own and right_own[-1] < left_own[0]:  # (ATen's swap_lo_ro: the same products, laid out
        left, right, left_own, right_own = right, left, right_own, left_own  # as the output's labels come)
        left_shape, right_shape = right_shape, left_shape
    size = lambda dims, shape: math.prod(shape[d] for d in dims)  # noqa: E731
    left_matrices = _arranged(left, shared + left_own + summed + right_own,
                              [size(shared, left_shape), size(left_own, left_shape), size(summed, left_shape)])
    right_matrices = _arranged(right, shared + summed + right_own + left_own,
                               [size(shared, left_shape), size(summed, left_shape), size(right_own, right_shape)])
    out_shape = [left_shape[d] for d in shared + left_own] + [1] * len(summed) + [right_shape[d] for d in right_own]
    placed = shared + left_own + summed + right_own
    return _arranged(reshape(bmm(left_matrices, right_matrices), out_shape), [placed.index(d) for d in range(len(left_shape))])


def _arranged(x, order, shape=None):
    """``x.permute(order).reshape(shape)``, leaving out a step that changes nothing (each op costs ~10 us here)."""
    from .shape import permute, reshape
    order = list(order)
    if order != list(range(len(order))):
        x = permute(x, order)
    return x if shape is None or tuple(shape) == tuple(x.shape) else reshape(x, shape)


def _torch_label_order(label):
    """torch's einsum numbers its labels upper case first, then lower case (``subscript_to_label``)."""
    return (label.islower(), label)


def _check_label_sizes(operands, subs):
    """torch's RuntimeError where a label's sizes disagree: within one operand (a diagonal of a
    non-square block), or across operands, where a size 1 broadcasts (NumPy would say ValueError)."""
    seen = {}
    for i, (x, sub) in enumerate(zip(operands, subs)):
        own = {}
        for label, n in zip(sub, x.shape):
            if own.setdefault(label, n) != n:
                raise RuntimeError(f"einsum(): subscript {label} is repeated for operand {i} but the sizes "
                                   f"don't match, {n} != {own[label]}")
        for label, n in own.items():
            before = seen.setdefault(label, n)
            if n != before and 1 not in (n, before):
                raise RuntimeError(f"einsum(): subscript {label} has size {n} for operand {i} which does not "
                                   f"broadcast with previously seen size {before}")
            seen[label] = max(n, before)


def _integer_einsum_operands(operands, subs, output):
    """torch's einsum of integers and bools: an operand with a label found nowhere else is summed
    first (``sum``: int64, so ``einsum('ij->', bools)`` counts them), and a label shared by operands
    and summed away goes through ``bmm`` (no bool kernel). The operands, cast to the result's dtype."""
    from ..dtypes import int64, promote_types
    results = []
    for i, (x, sub) in enumerate(zip(operands, subs)):
        elsewhere = set(output).union(*(s for j, s in enumerate(subs) if j != i))
        results.append(int64 if set(sub) - elsewhere else x.dtype)
    dtype = results[0]
    for other in results[1:]:
        dtype = promote_types(dtype, other)
    shared = [label for label in set("".join(subs)) - set(output) if sum(label in s for s in subs) > 1]
    if shared and dtype == np.bool_:
        raise NotImplementedError('"bmm" not implemented for \'Bool\'')
    return tuple(x if x.dtype == dtype else x.to(dtype) for x in operands)


def _contracts(equation, operands):
    """Does ``einsum`` multiply two or more operands and sum a label away (a product torch computes
    with ``bmm``)? ``"i,i->i"`` only multiplies: torch keeps it out of autocast."""
    subs, output = _einsum_subscripts(equation, [x.ndim for x in operands])
    return len(subs) > 1 and bool(set("".join(subs)) - set(output))


def _sublists_to_equation(args):
    """``(a, [0, 1], b, [1, 2], [0, 2])`` -> ``("ab,bc->ac", (a, b))``; Ellipsis stays ``...``."""
    def letters(sublist):
        return "".join("..." if s is Ellipsis else "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"[s]
                       for s in sublist)
    operands, inputs = args[0::2][:len(args) // 2], args[1::2][:len(args) // 2]
    equation = ",".join(letters(sub) for sub in inputs)
    if len(args) % 2:  # an output sublist at the end
        equation += "->" + letters(args[-1])
    return equation, tuple(operands)


def _diagonals(operand, sub):
    """A label repeated within one operand (``"ii->i"``, ``"bii->b"``) reads a diagonal: take it
    with the differentiable ``diagonal`` op (which puts it last), until every label is single."""
    from .shape import diagonal
    while len(set(sub)) != len(sub):
        label = next(c for c in sub if sub.count(c) > 1)
        first = sub.index(label)
        second = sub.index(label, first + 1)  # (of the same size: _check_label_sizes)
        operand = diagonal(operand, 0, first, second)
        sub = sub[:first] + sub[first + 1:second] + sub[second + 1:] + label
    return operand, sub


# ---- torch's fixed-rank products: matmul with the ranks checked (no broadcasting) ---------------
def _products_check(name, ranks, *tensors):
    """Each operand of the product ``name`` of its rank, or torch's RuntimeError in that op's words."""
    for position, (t, rank) in enumerate(zip(tensors, ranks)):
        if t.ndim != rank:
            raise RuntimeError(_rank_message(name, position, tensors))


def _rank_message(name, position, tensors):
    """torch's words for operand ``position`` of ``name`` of the wrong rank (each op checks its own way)."""
    ranks = [t.ndim for t in tensors]
    if name == "mm":
        return f"{('self', 'mat2')[position]} must be a matrix"
    if name == "addmm":
        return f"{('mat1', 'mat2')[position]} must be a matrix, got {ranks[position]}-D tensor"
    if name == "bmm":
        return f"batch{position + 1} must be a 3D tensor"
    if name in ("dot", "vdot"):
        return f"1D tensors expected, but got {ranks[0]}D and {ranks[1]}D tensors"
    if name in ("mv", "addmv"):
        return f"vector + matrix @ vector expected, got 1, {ranks[0]}, {ranks[1]}"
    if name == "outer":
        return f"outer: Expected 1-D argument {('self', 'vec2')[position]}, but got {ranks[position]}-D"
    expected = (3, 3) if name in ("addbmm", "baddbmm") else (2, 2)
    return f"{name}: expected a {expected[position]}-D tensor, got {ranks[position]}-D"


def mm(input, mat2):
    """``torch.mm``: a 2-D matrix product (``matmul`` would broadcast; mm refuses other ranks)."""
    if _amp.used and _amp.state.active:  # in an autocast region: torch's cast for this op (minilora/amp.py)
        return _amp.autocast_op("mm", mm, input, mat2)
    _products_check("mm", (2, 2), input, mat2)
    return matmul(input, mat2)


def bmm(input, mat2):
    """``torch.bmm``: a batch of matrix products, both 3-D with the same batch size."""
    if _amp.used and _amp.state.active:  # in an autocast region: torch's cast for this op (minilora/amp.py)
        return _amp.autocast_op("bmm", bmm, input, mat2)
    _products_check("bmm", (3, 3), input, mat2)
    if input.shape[0] != mat2.shape[0]:  # (other sizes: MatMul's check, in the same words)
        raise ShapeError(_bmm_message(input.shape, mat2.shape))
    return name_node(matmul(input, mat2), "BmmBackward0", input, mat2)


def dot(input, tensor):
    """``torch.dot``: the inner product of two 1-D tensors of the same length."""
    if _amp.used and _amp.state.active:  # torch does not autocast dot on the CPU: nor may the matmul inside (amp.py)
        return _amp.autocast_op("dot", dot, input, tensor)
    _products_check("dot", (1, 1), input, tensor)
    return matmul(input, tensor)


def mv(input, vec):
    """``torch.mv``: matrix times vector, ``[n, m] @ [m] -> [n]``."""
    if _amp.used and _amp.state.active:  # torch does not autocast mv on the CPU: nor may the matmul inside (amp.py)
        return _amp.autocast_op("mv", mv, input, vec)
    _products_check("mv", (2, 1), input, vec)
    return matmul(input, vec)


def outer(input, vec2):
    """``torch.outer``: ``input[:, None] * vec2[None, :]`` of two 1-D tensors."""
    _products_check("outer", (1, 1), input, vec2)
    from .elementwise import mul  # (an elementwise product, as torch's: mixed dtypes promote)
    return mul(input.reshape(-1, 1), vec2)  # (as torch's: its node's second edge is vec2's own)


def _scaled_sum(name, input, product, beta, alpha):
    """``beta * input + alpha * product``, torch's ``addmm`` family. With ``beta == 0`` ``input`` is
    ignored (NaN in it does not propagate), as torch documents; ``input`` must broadcast to the
    product's shape."""
    try:
        shape = np.broadcast_shapes(tuple(input.shape), tuple(product.shape))
    except ValueError:
        shape = None
    if shape != tuple(product.shape):  # (torch expands input to the product's shape: its words)
        hint = f"{name}: input of shape {tuple(input.shape)} does not broadcast to the product's shape {tuple(product.shape)}"
        raise with_note(RuntimeError(_torch_expand_message(tuple(input.shape), tuple(product.shape)) or hint), hint)
    _check_dtypes(name, input, product)
    if product.dtype == np.bool_:  # (torch casts the scalars to the product's dtype first)
        alpha, beta = bool(alpha), bool(beta)
    elif not is_floating(product.dtype) and product.dtype.kind != "c":  # (complex: complex alpha, beta as they are)
        alpha, beta = int(alpha), int(beta)  # (alpha=0.5 is 0)
    if alpha != 1:
        product = product * alpha
    if beta == 0:
        if input.requires_grad:  # torch's gradient for input is then zeros (beta * g), not None
            from .elementwise import where
            return where(xp_of(product._array).zeros((), bool), input, product)
        return product
    return (input if beta == 1 else input * beta) + product


def _inner_sizes_check(name, a, b):
    """torch's RuntimeError for matrices that cannot be multiplied: addmm's are mm's words, baddbmm's bmm's, addbmm's
    its own."""
    if name == "baddbmm":
        return _bmm_sizes_check(a, b)
    if a.shape[-1] != b.shape[-2]:
        if name == "addbmm":
            raise ShapeError(f"Incompatible matrix sizes for bmm ({a.shape[-2]}x{a.shape[-1]} and "
                             f"{b.shape[-2]}x{b.shape[-1]})")
        raise ShapeError(_mm_message(a.shape[-2:], b.shape[-2:]))


def _bmm_sizes_check(batch1, batch2):
    """torch's bmm check: batch2's first two sizes are batch1's batch and columns."""
    if (batch2.shape[0], batch2.shape[1]) != (batch1.shape[0], batch1.shape[2]):
        raise ShapeError(_bmm_message(batch1.shape, batch2.shape))


def addmm(input, mat1, mat2, *, beta=1, alpha=1):
    """``torch.addmm``: ``beta * input + alpha * (mat1 @ mat2)`` for 2-D ``mat1``, ``mat2``
    (``nn.Linear`` written out: ``addmm(bias, x, W.T)``)."""
    if _amp.used and _amp.state.active:  # in an autocast region: torch's cast for this op (minilora/amp.py)
        return _amp.autocast_op("addmm", addmm, input, mat1, mat2, beta=beta, alpha=alpha)
    _products_check("addmm", (2, 2), mat1, mat2)
    refuse_mixed_addmm("addmm", input, mat1, mat2)
    _inner_sizes_check("addmm", mat1, mat2)
    if _is_16bit_float(mat1) and mat1.dtype == mat2.dtype == input.dtype:
        result = _in_float32(addmm, input, mat1, mat2, beta, alpha)
    else:
        result = _scaled_sum("addmm", input, mm(mat1, mat2), beta, alpha)
        result = _with_torchs_gradients(result, input, mat1, mat2, beta, alpha, product_gradients(mat1, mat2))
        _as_mkls_gemm(result, input, mat1, mat2, beta, alpha)
    return _one_node(result, "AddmmBackward0", input, mat1, mat2)


def _as_mkls_gemm(result, input, first, second, beta, alpha):
    """Put torch's values into ``result`` (addmm's or baddbmm's, composed of a product and a scaled sum: its graph
    and gradients stay), where MKL is the BLAS: torch fills the result with ``input`` and hands MKL's gemm ``alpha``
    and ``beta``, which scales and adds them inside its blocks of K -- not the composed roundings (most outputs from
    K of a few hundred on, or with alpha != 1). float32/float64 NumPy arrays of one dtype, each product a gemm."""
    arrays = [t._array for t in (result, input, first, second)]
    if not (blas.library() == "mkl" and all(type(a) is np.ndarray and a.dtype == arrays[0].dtype for a in arrays)
            and arrays[0].dtype in (np.float32, np.float64) and arrays[0].size and first.shape[-1]):
        return
    if first.ndim == 3 and first.shape[-1] * first.shape[-2] * second.shape[-1] < _BMM_LOOP_BELOW:
        return  # (torch's baddbmm of small matrices: its own loop, which the composed values follow)
    values = np.zeros(arrays[0].shape, arrays[0].dtype) if beta == 0 else np.broadcast_to(arrays[1], arrays[0].shape).copy()
    for out, a, b in zip(values.reshape((-1,) + values.shape[-2:]), arrays[2].reshape((-1,) + arrays[2].shape[-2:]),
                         arrays[3].reshape((-1,) + arrays[3].shape[-2:])):
        blas.gemm(a, b, out, alpha=float(alpha), beta=float(beta))
    arrays[0][...] = values


def _one_node(result, name, *inputs):
    """torch computes the addmm family in one node on its three inputs (minilora: a product, then a
    scaled sum): the result's node carries torch's name and graph."""
    return name_node(result, name, *inputs, graph=inputs)


def baddbmm(input, batch1, batch2, *, beta=1, alpha=1):
    """``torch.baddbmm``: ``beta * input + alpha * (batch1 @ batch2)`` for 3-D batches (attention
    scores with a bias: ``baddbmm(mask, q, k.transpose(1, 2), alpha=scale)``)."""
    if _amp.used and _amp.state.active:  # in an autocast region: torch's cast for this op (minilora/amp.py)
        return _amp.autocast_op("baddbmm", baddbmm, input, batch1, batch2, beta=beta, alpha=alpha)
    _products_check("baddbmm", (3, 3), batch1, batch2)
    refuse_mixed_addmm("baddbmm", input, batch1, batch2)
    _inner_sizes_check("baddbmm", batch1, batch2)
    if _is_16bit_float(batch1) and batch1.dtype == batch2.dtype == input.dtype:
        result = _in_float32(baddbmm, input, batch1, batch2, beta, alpha)
    else:
        result = _scaled_sum("baddbmm", input, bmm(batch1, batch2), beta, alpha)
        result = _with_torchs_gradients(result, input, batch1, batch2, beta, alpha,
                                        product_gradients(batch1, batch2))
        _as_mkls_gemm(result, input, batch1, batch2, beta, alpha)
    return _one_node(result, "BaddbmmBackward0", input, batch1, batch2)


def _with_torchs_gradients(result, input, first, second, beta, alpha, products, values=None):
    """``result`` (``beta * input + alpha * product``: addmm's, addmv's, addr's, baddbmm's, addbmm's, composed of
    minilora's ops, its values torch's) given torch's gradients, derivatives.yaml's formulas in their order:
    ``input`` gets ``maybe_multiply(g, beta)`` summed to its shape, ``first`` and ``second`` the product's own
    gradients (``products(g, need_first, need_second)``: g times the other operand, as torch's product ops), then
    times ``alpha`` (the composed graph scales ``g`` before the product: another rounding, seen in most gradients
    once alpha != 1). float32/float64 NumPy arrays; others keep the composed gradients. ``values``: torch's values
    where the composition's are not (a NumPy array of the result's shape and dtype), else None."""
    if values is not None and not result.requires_grad:
        return Tensor(values, dtype=result.dtype, device=result.device)
    if not (result.requires_grad and result.dtype in (np.float32, np.float64) and type(result._array) is np.ndarray):
        return result
    from .nn import KernelGradients  # (ops.nn imports this module: at call time)
    real = result.dtype.type
    shape = tuple(input.shape)

    def gradients(g, needs):
        grad_input = None
        if needs[0]:
            grad_input = g if beta == 1 else g * real(beta)
            grad_input = unbroadcast(grad_input, shape) if grad_input.shape != shape else grad_input
        grads = products(g, needs[1], needs[2])
        return (grad_input,) + tuple(x if x is None or alpha == 1 else x * real(alpha) for x in grads)
    # (values: a copy, not the composed result's array -- an output sharing it would be taken for a view of it)
    values = result._array.copy() if values is None else values
    out = KernelGradients.apply(result, input, first, second, values=values, gradients=gradients)
    return _saving_products(out, (first, second))  # (torch keeps each operand for the other's gradient)


def product_gradients(first, second, summed=False):
    """``products`` for ``_with_torchs_gradients`` of a matrix product (addmm's mm, baddbmm's bmm; addbmm's with
    ``summed``, g the same for each batch): g @ second^T and first^T @ g, as mm's and bmm's backward"""
    def products(g, need_first, need_second):
        as_torch = None if summed else _mm_grads_as_torch(g, first._array, second._array, need_first, need_second)
        if as_torch is not None:  # (mm's backward: an operand laid out by columns gets the transposed product)
            return as_torch
        expanded = np.broadcast_to(g, (first.shape[0], *g.shape)) if summed else g
        return (_torch_products(expanded, second._array.swapaxes(-1, -2)) if need_first else None,
                _torch_products(first._array.swapaxes(-1, -2), expanded) if need_second else None)
    return products


def matrix_vector_gradients(mat, vec):
    """addmv's ``products``: ``g.ger(vec)`` (each element one product) and ``mat.t().mv(g)``"""
    return lambda g, need_mat, need_vec: (np.multiply.outer(g, vec._array) if need_mat else None,
                                          _torch_products(mat._array.T, g) if need_vec else None)


def outer_product_gradients(vec1, vec2):
    """addr's ``products``: ``g.mv(vec2)`` and ``g.t().mv(vec1)``"""
    return lambda g, need1, need2: (_torch_products(g, vec2._array) if need1 else None,
                                    _torch_products(g.T, vec1._array) if need2 else None)


def _in_float32(fn, input, m1, m2, beta, alpha):
    """``fn`` (addmm, baddbmm) of 16-bit tensors as torch computes it: ``beta * input + alpha * m1 @ m2``
    all in float32, rounded once (rounding the product first differs from torch in most elements).
    The casts are differentiable: the gradients come back in the 16-bit dtype."""
    dtype = m1.dtype
    if m1.shape[-1] == 0:  # (no products: ATen scales input by beta cast to the 16-bit dtype, result.mul_(beta))
        beta = _rounded_to(beta, dtype)
    return fn(input.float(), m1.float(), m2.float(), beta=beta, alpha=alpha).to(dtype)


def _rounded_to(number, dtype):
    """A Python number cast to ``dtype`` and back (ATen's ``scalar.to<scalar_t>()`` before a kernel)."""
    return dtypes.python_number(dtypes.cast(np.array(number), dtype)[()])


@_amp.autocasts  # (not on torch's list: its inner stack must not promote either)
def cross(input, other, dim=None):
    """``torch.cross``: the 3-D cross product along ``dim`` (the tensors broadcast, with the same
    number of dimensions, as torch requires). Without ``dim``
    torch takes the first dimension of size 3, with a deprecation warning; so do we."""
    if input.ndim != other.ndim:
        raise RuntimeError("linalg.cross: inputs must have the same number of dimensions.")
    if input.dtype != other.dtype:  # torch's kernel takes one dtype (minilora promoted silently)
        raise RuntimeError(f"expected scalar type {torch_name(input.dtype)} but found {torch_name(other.dtype)}")
    from .nn import _broadcast_or_raise
    shape = _broadcast_or_raise("linalg.cross", tuple(input.shape), tuple(other.shape))  # (torch: RuntimeError)
    if dim is None:
        warnings.warn("Using torch.cross without specifying the dim arg is deprecated. Please either "
                      "pass the dim explicitly or simply use torch.linalg.cross.", UserWarning,
                      stacklevel=2)
        dim = next((d for d, n in enumerate(shape) if n == 3), None)
        if dim is None:
            raise RuntimeError(f"no dimension of size 3 in input (shape {shape})")
    if not -len(shape) <= dim < len(shape):
        raise IndexError(f"Dimension out of range (expected to be in range of [{-len(shape)}, "
                         f"{len(shape) - 1}], but got {dim})")
    if input.shape[dim] != 3 or other.shape[dim] != 3:
        raise RuntimeError(f"linalg.cross: inputs dimension {dim} must have length 3. Got "
                           f"{input.shape[dim]} and {other.shape[dim]}")
    if input.dtype in (np.float32, np.float64) and type(input._array) is np.ndarray:  # torch's kernel, its backward too
        out = Cross.apply(input, other, dim=dim % len(shape))  # (torch keeps each input for the other's gradient)
        out = saves_as_torch(out, saved_for(input, other), saved_for(other, input))
        return name_node(out, "LinalgCrossBackward0", graph=(input, other))
    a0, a1, a2 = input.expand(*shape).unbind(dim)
    b0, b1, b2 = other.expand(*shape).unbind(dim)
    if input.dtype in (np.float32, np.float64):  # ATen's kernel: x * y - z * w compiled to fma(x, y, -(z * w))
        from .elementwise import _fused_multiply_add
        def difference(x, y, z, w):
            return _fused_multiply_add(-(z * w), x, y, input.dtype)
    else:
        def difference(x, y, z, w):
            return x * y - z * w
    product = stack([difference(a1, b2, a2, b1), difference(a2, b0, a0, b2), difference(a0, b1, a1, b0)], dim)
    return name_node(product, "LinalgCrossBackward0", graph=(input, other))  # (torch's one node)


def _cross_kernel(a, b, axis):
    """ATen's cross kernel on (broadcast) float arrays along ``axis``: each component ``x * y - z * w``, which GCC
    compiles to ``fma(x, y, -(z * w))`` (``fastmath.multiply_add``)."""
    from .. import fastmath
    a, b = np.broadcast_arrays(a, b)
    a0, a1, a2 = (np.take(a, i, axis=axis) for i in range(3))
    b0, b1, b2 = (np.take(b, i, axis=axis) for i in range(3))
    parts = [fastmath.multiply_add(x, y, -(z * w)) for x, y, z, w in
             ((a1, b2, a2, b1), (a2, b0, a0, b2), (a0, b1, a1, b0))]
    return np.stack(parts, axis=axis)


class Cross(Function):
    """float32/float64 ``linalg.cross`` as torch's one node: the kernel (``_cross_kernel``) forward, and backward
    derivatives.yaml's ``cross(other, g)`` and ``cross(g, input)`` by the same kernel, summed back where broadcast."""
    torch_layout = "contiguous"

    @staticmethod
    def forward(ctx, a, b, *, dim):
        ctx.a, ctx.b, ctx.dim = a, b, dim
        return _cross_kernel(a, b, dim)

    @staticmethod
    def backward(ctx, g):
        na, nb = ctx.needs_input_grad
        a, b, dim = ctx.a, ctx.b, ctx.dim
        return (unbroadcast(_cross_kernel(b, g, dim), a.shape) if na else None,
                unbroadcast(_cross_kernel(g, a, dim), b.shape) if nb else None)


# ---- products composed of the ones above (their gradients come from matmul, mul and reshape) -------
def inner(input, other):  # noqa: A002
    """``torch.inner``: sums over the last dimension of both, ``[..., n] x [..., n] -> a.shape[:-1] +
    b.shape[:-1]``; a 0-d operand multiplies."""
    if input.ndim == 0 or getattr(other, "ndim", 0) == 0:
        return input * other
    n = input.shape[-1]
    if other.shape[-1] != n:
        raise RuntimeError(f"inner() the last dimension must match on both input tensors but got "
                           f"shapes {list(input.shape)} and {list(other.shape)}.")
    rows = matmul(input.reshape(math.prod(input.shape[:-1]), n),  # (not -1: a size-0 tensor has no -1)
                  other.reshape(math.prod(other.shape[:-1]), n).transpose(0, 1))
    return inputs_not_torchs(rows.reshape(tuple(input.shape[:-1]) + tuple(other.shape[:-1])))  # (torch: mm's
    # rows of other shapes)


def vdot(input, other):  # noqa: A002
    """``torch.vdot``: ``dot`` with the first operand conjugated (``sum(conj(a) * b)``)."""
    if _amp.used and _amp.state.active:  # torch does not autocast vdot on the CPU: nor may the matmul inside (amp.py)
        return _amp.autocast_op("vdot", vdot, input, other)
    _products_check("vdot", (1, 1), input, other)
    return name_node(matmul(input.conj(), other), "VdotBackward0", graph=(input, other))  # (conj of a real
    # tensor: the tensor itself)


@_amp.autocasts
def tensordot(a, b, dims=2):
    """``torch.tensordot``: contracts ``dims`` (an int: a's last ``dims`` dimensions with b's first
    ones; or two lists of dimensions) by moving them together and calling ``matmul``."""
    if isinstance(dims, int):
        if dims < 0:
            raise RuntimeError(f"tensordot expects dims >= 0, but got dims={dims}")
        given_a, given_b = list(range(-dims, 0)), list(range(dims))  # (torch's: a's dims counted from the end)
    elif isinstance(dims, (list, tuple)):  # (of another length: Python's ValueError unpacking it, as torch's)
        given_a, given_b = ([d] if isinstance(d, int) else list(d) for d in dims)
    else:  # (a float or a string was iterated here)
        raise RuntimeError(f"tensordot expects dims to be int or tuple[list[int], list[int]] or list[list[int]] "
                           f"containing two lists, but got dims={dims}")
    dims_a, dims_b = list(wrapped_dims(given_a, a.ndim)), list(wrapped_dims(given_b, b.ndim))  # (a modulo alone
    # contracted dim 4 of a matrix as its dim 0)
    if len(dims_a) != len(dims_b):
        raise RuntimeError("both dimension lists should have same length")
    for da, db, named_a, named_b in zip(dims_a, dims_b, given_a, given_b):  # (a size-1 side broadcasts: ATen
        if b.shape[db] == 1 and a.shape[da] != 1:                           # sums the other side's dim first)
            a = a.sum(da, keepdim=True, dtype=a.dtype)
        elif a.shape[da] == 1 and b.shape[db] != 1:
            b = b.sum(db, keepdim=True, dtype=b.dtype)
        elif a.shape[da] != b.shape[db]:
            raise RuntimeError(f"contracted dimensions need to match, but first has size "
                               f"{a.shape[da]} in dim {named_a} and second has size {b.shape[db]} in dim {named_b}")
    free_a = [d for d in range(a.ndim) if d not in dims_a]
    free_b = [d for d in range(b.ndim) if d not in dims_b]
    k = 1
    for d in dims_a:
        k *= a.shape[d]
    rows = math.prod(a.shape[d] for d in free_a)  # (not -1: a size-0 tensor has no -1)
    left = a.permute(*free_a, *dims_a).reshape(rows, k)
    right = b.permute(*dims_b, *free_b).reshape(k, math.prod(b.shape[d] for d in free_b))
    shape = tuple(a.shape[d] for d in free_a) + tuple(b.shape[d] for d in free_b)
    return inputs_not_torchs(matmul(left, right).reshape(shape))  # (torch: mm's rows of other shapes)


def kron(input, other):  # noqa: A002
    """``torch.kron``: the Kronecker product. Both are given the same number of dims (leading 1s),
    then every element of ``input`` scales a whole copy of ``other``: shape ``a_i * b_i``."""
    ndim = max(input.ndim, other.ndim)
    a_shape = (1,) * (ndim - input.ndim) + tuple(input.shape)
    b_shape = (1,) * (ndim - other.ndim) + tuple(other.shape)
    interleaved_a = [s for n in a_shape for s in (n, 1)]  # a's dims at even places
    interleaved_b = [s for n in b_shape for s in (1, n)]  # b's at odd places
    # (torch's graph: an _unsafe_view of each operand, their product, an _unsafe_view of it)
    product = _unsafe_view(input, interleaved_a) * _unsafe_view(other, interleaved_b)
    return _unsafe_view(product, tuple(p * q for p, q in zip(a_shape, b_shape)))


def _unsafe_view(input, shape):
    return name_node(input.reshape(shape), "UnsafeViewBackward0", input)
