"""``torch.linalg`` on NumPy (CuPy on ``cuda``): decompositions, solvers, norms, with torch's names,
arguments, named-tuple results, errors and derivatives.

    import minilora as ml
    U, S, Vh = ml.linalg.svd(delta_W, full_matrices=False)   # LoRA's "intrinsic rank" of an update
    ml.linalg.matrix_rank(delta_W), ml.linalg.norm(delta_W, "fro")

Each factorization is computed once by LAPACK (``numpy.linalg``, in the input's own precision: float32
stays float32, as torch's LAPACK call), and each of its outputs is a node whose backward is torch's
formula for that output (torch's FunctionsManual: ``svd_backward``, ``linalg_eig_backward``,
``linalg_qr_backward``, ``cholesky_backward`` ...). Those formulas are linear in the output gradients, so
a loss using ``U`` and ``S`` gets the sum of the two nodes' contributions: the joint gradient.

Sign and order conventions: singular vectors, eigenvectors and QR's factors are only defined up to a
sign per column (LAPACK picks one; torch and NumPy call the same routines, but nothing guarantees the
same choice). What torch guarantees, and what the tests compare, is the reconstruction ``U S Vh == A``,
the singular values / eigenvalues (ascending for ``eigh``, descending for ``svd``), orthonormality, and
``|U^T U_torch| == I``; losses that should be differentiated are the gauge-invariant ones (torch
documents the same caveat). minilora has no complex linear algebra: complex inputs are refused; ``eig`` and
``eigvals`` of a real matrix return complex tensors (minilora/complex_numbers.py says what they support).
"""
import math
import warnings

import numpy as np

from . import amp as _amp, blas as _blas, dtypes, float32_math as _float32_math, ops, return_types
from .device import holds_no_values as _holds_no_values, unwritten_zeros as _unwritten_zeros, xp_of
from .factories import contiguous_format, known_layout
from .tensor import Function, Tensor, name_node, no_forward_formula, share_node
from .tensor import no_meta_kernel as _no_meta_kernel

__all__ = ["LinAlgError", "svd", "svdvals", "qr", "eig", "eigvals", "eigh", "eigvalsh", "norm", "vector_norm",
           "matrix_norm", "matrix_rank", "det", "slogdet", "inv", "inv_ex", "solve", "solve_ex", "solve_triangular",
           "cholesky", "cholesky_ex", "lstsq", "pinv", "matrix_power", "matrix_exp", "cross", "multi_dot",
           "diagonal", "vecdot", "vander", "matmul", "lu_factor", "lu_factor_ex", "lu", "lu_solve", "cond",
           "tensorinv", "tensorsolve", "householder_product", "ldl_factor", "ldl_factor_ex", "ldl_solve"]


class LinAlgError(RuntimeError):
    """``torch.linalg.LinAlgError``: a singular or not positive-definite matrix (a RuntimeError, as torch's)."""


def _result(name, fields, qualname):
    """torch's named tuples (``torch.return_types.linalg_svd``): fields by name, and a tuple too. Pickle finds
    the class under ``qualname``, this module's name for it."""
    return return_types.make(name, fields.split(), module=__name__, qualname=qualname)


SVD = _result("linalg_svd", "U S Vh", "SVD")
QR = _result("linalg_qr", "Q R", "QR")
Eigh = _result("linalg_eigh", "eigenvalues eigenvectors", "Eigh")
Eig = _result("linalg_eig", "eigenvalues eigenvectors", "Eig")
SlogDet = _result("linalg_slogdet", "sign logabsdet", "SlogDet")
InvEx = _result("linalg_inv_ex", "inverse info", "InvEx")
CholeskyEx = _result("linalg_cholesky_ex", "L info", "CholeskyEx")
SolveEx = _result("linalg_solve_ex", "result info", "SolveEx")
Lstsq = _result("linalg_lstsq", "solution residuals rank singular_values", "Lstsq")
LUFactor = _result("linalg_lu_factor", "LU pivots", "LUFactor")
LUFactorEx = _result("linalg_lu_factor_ex", "LU pivots info", "LUFactorEx")
LUResult = _result("linalg_lu", "P L U", "LUResult")
LUUnpack = _result("lu_unpack", "P L U", "LUUnpack")
TriangularSolve = _result("triangular_solve", "solution cloned_coefficient", "TriangularSolve")
Geqrf = _result("geqrf", "a tau", "Geqrf")
LDLFactor = _result("linalg_ldl_factor", "LD pivots", "LDLFactor")
LDLFactorEx = _result("linalg_ldl_factor_ex", "LD pivots info", "LDLFactorEx")
OldSVD = _result("svd", "U S V", "OldSVD")  # torch.svd: V, not Vh
OldQR = _result("qr", "Q R", "OldQR")
OldSlogDet = _result("slogdet", "sign logabsdet", "OldSlogDet")


# ---- argument checks: torch's messages -----------------------------------------------------------
def _check(name, A, *, square=False, arg="A"):
    """``A`` must be a (batch of) floating matrix (matrices), square where ``square``."""
    if not isinstance(A, Tensor):
        raise TypeError(f"{name}(): argument '{arg}' (position 1) must be Tensor, not {type(A).__name__}")
    _check_dtype(name, A)
    if A.ndim < 2:
        raise RuntimeError(f"{name}: The input tensor {arg} must have at least 2 dimensions.")
    if square:
        _check_square(A, name)


def _check_dtype(name, A, *, low_precision=False):
    """A floating dtype; float16/bfloat16 only where ``low_precision`` (the norms: torch computes those)."""
    if A.dtype.kind == "c":
        raise NotImplementedError(f"{name}: minilora has no complex linear algebra (got {A.dtype}); "
                                  f"split real and imaginary parts, or use torch")
    if not dtypes.is_floating(A.dtype):
        raise RuntimeError(f"{name}: Expected a floating point or complex tensor as input. Got "
                           f"{dtypes.torch_name(A.dtype)}")
    if A.dtype.itemsize == 2 and not low_precision:
        raise RuntimeError(f"{name}: Low precision dtypes not supported. Got {dtypes.torch_name(A.dtype)}")


def _check_square(A, name=None):
    """torch's error for matrices that are not square (some of its checks name the function, some do not)."""
    if A.shape[-1] != A.shape[-2]:
        prefix = f"{name}: " if name else ""
        raise RuntimeError(f"{prefix}A must be batches of square matrices, but they are {A.shape[-2]} by "
                           f"{A.shape[-1]} matrices")


def _check_same_dtype(A, B):
    """A solve from a factor A: B has A's dtype (torch's message)."""
    if B.dtype != A.dtype:
        raise RuntimeError(f"Expected b and A to have the same dtype, but found b of type {dtypes.torch_name(B.dtype)} "
                           f"and A of type {dtypes.torch_name(A.dtype)} instead.")


def _check_rows(name, A, B):
    """``A X = B``: B has as many rows as A has columns (torch's message)."""
    if B.shape[-2] != A.shape[-1]:
        raise RuntimeError(f"Incompatible matrix sizes for {name}: each A matrix is {A.shape[-2]} by "
                           f"{A.shape[-1]} but each b matrix is {B.shape[-2]} by {B.shape[-1]}")


def _lapack(function, *arrays):
    """``function(*arrays)`` (an ``xp.linalg`` one) raising NumPy's LinAlgError for a singular or not
    positive-definite matrix, on both devices: CuPy raises only inside ``cupyx.errstate(linalg="raise")``
    (by default it returns whatever cuSOLVER left, and minilora would miss the error)."""
    if isinstance(arrays[0], np.ndarray):
        return function(*arrays)
    import cupyx
    with cupyx.errstate(linalg="raise"):
        return function(*arrays)


def _mT(a):
    return a.swapaxes(-1, -2)


def _plain(array, like):
    """A tensor holding ``array`` with no graph (ranks, infos, signs), on ``like``'s device."""
    array = xp_of(like._array).asarray(array)  # (a NumPy scalar would read as Tensor(size))
    return Tensor(array, dtype=array.dtype, device=like.device)


# ---- meta: the results' shapes, never a factorization -------------------------------------------------
# A meta matrix's zeros stand for values nobody has, and LAPACK would read every page of them: each factorization
# below asks ``_meta`` first and makes its results as unwritten zeros of torch's meta kernels' shapes and dtypes
# (``_outputs`` then lays them out as torch's, without a copy). The check walks an array's bases, nothing beside
# an O(n^3) factorization; Function.apply never sees these computations, so Device.dispatches cannot route them.
def _meta(*arrays):
    return any(_holds_no_values(a) for a in arrays)


def _unwritten(*shapes, dtype):
    """Unwritten zeros (meta storage) of each shape."""
    made = tuple(_unwritten_zeros(tuple(shape), np.dtype(dtype)) for shape in shapes)
    return made if len(made) > 1 else made[0]


def _batch(*arrays):
    """The broadcast batch shape of (batches of) matrices."""
    return tuple(np.broadcast_shapes(*(a.shape[:-2] for a in arrays)))


# ---- the nodes: one per output, torch's derivative of that output ------------------------------
class LinalgOutput(Function):
    """One output of a factorization computed beforehand (``outputs``): the node returns
    ``outputs[index]``, and its backward is ``derivative(arrays, outputs, grads)`` with this output's
    gradient in ``grads`` and None for the others (the derivatives are linear in the grads). ``formula``:
    torch's node name for the op (create_graph=True's formula is looked up by it, even where a composite
    op renames the node: lu_solve's last triangular solve)."""
    complex_grad = True  # (eig's outputs are complex: its derivative takes their complex gradients)
    torch_inputs = ()  # (torch's factorization nodes save their outputs, L, Q, U..., not the input: tensor._SAVED_AS)

    @staticmethod
    def forward(ctx, *arrays, outputs, index, derivative, formula):
        ctx.arrays, ctx.outputs, ctx.index, ctx.derivative, ctx.formula = arrays, outputs, index, derivative, formula
        return outputs[index]

    @staticmethod
    def backward(ctx, grad):
        grads = [None] * len(ctx.outputs)
        grads[ctx.index] = grad
        result = ctx.derivative(ctx.arrays, ctx.outputs, grads)
        return result if isinstance(result, tuple) else (result,)


def _outputs(name, inputs, outputs, derivative, differentiable=None, column_major=(), first=0):
    """Tensors for ``outputs`` (arrays), each with a node named ``name`` (torch's, e.g. LinalgSvdBackward0)
    that differentiates through ``derivative``; ``differentiable[i]`` False: a plain tensor. The outputs
    numbered in ``column_major`` are laid out as torch lays them (LAPACK's batches of column-major
    matrices), the others contiguously. Output i is torch's node's output ``first + i`` (its output_nr: svdvals'
    S is _linalg_svd's second), as a ``next_functions`` entry shows it."""
    outputs = tuple(_column_major(o, inputs[0]._array) if i in column_major else _contiguous(o, inputs[0]._array)
                    for i, o in enumerate(outputs))
    results, numbers = [], []
    for i, out in enumerate(outputs):
        if differentiable is not None and not differentiable[i]:
            results.append(_plain(out, inputs[0]))
            continue
        t = name_node(LinalgOutput.apply(*inputs, outputs=outputs, index=i, derivative=derivative, formula=name),
                      name, *inputs)
        if t._ctx is not None:
            numbers.append(first + len(numbers))  # (torch numbers the differentiable outputs only: lu's L is 0)
        results.append(t)
    return list(share_node(results, numbers))


def _contiguous(array, like):
    """A fresh C-ordered array (LAPACK hands back Fortran-ordered views; NumPy 0-d results are scalars)."""
    array = xp_of(like).asarray(array)
    if array.flags.c_contiguous and (array.base is None or _holds_no_values(array)):
        return array
    return array.copy()


def _column_major(array, like, rows=None):
    """A fresh copy of ``array`` laid out as torch's LAPACK results are: a C-ordered batch of column-major
    matrices (a 1-D result stays contiguous). torch draws dropout masks and random fills in memory order,
    and its ``stride()``/``view()`` read this layout. ``rows``: the matrices are the top rows of taller
    column-major ones (lstsq's solution, a view of its max(m, n)-row buffer)."""
    array = xp_of(like).asarray(array)
    if array.ndim < 2:
        return _contiguous(array, like)
    m = array.shape[-2]
    shape = array.shape[:-2] + (array.shape[-1], max(m, rows or m))
    if _holds_no_values(array):  # (meta: the layout, no values to copy into it)
        return known_layout(_unwritten(shape, dtype=array.dtype).swapaxes(-1, -2)[..., :m, :])
    buffer = xp_of(like).empty(shape, array.dtype)
    laid_out = buffer.swapaxes(-1, -2)[..., :m, :]
    laid_out[...] = array
    return known_layout(laid_out)


def _relaid(result, rows=None):
    """``result`` (a tensor this module composed from other ops and handed to no one yet) in torch's
    column-major layout, as ``_column_major``: the same values and graph, other memory order."""
    result._array = _column_major(result._array, result._array, rows)
    return result


# ---- SVD -----------------------------------------------------------------------------------------
def _svd_backward(A, U, S, Vh, gU, gS, gVh):
    """torch's ``svd_backward`` (real case), for the reduced decomposition (k = min(m, n))."""
    xp = xp_of(A)
    m, n = A.shape[-2:]
    k = S.shape[-1]
    if gU is None and gVh is None:
        return (U * gS[..., None, :]) @ Vh
    V = _mT(Vh)
    gV = None if gVh is None else _mT(gVh)
    skew = lambda X: X - _mT(X)  # noqa: E731
    S2 = S * S
    E = S2[..., None, :] - S2[..., :, None]
    idx = xp.arange(k)
    E[..., idx, idx] = 1
    inner = 0
    if gU is not None:
        inner = skew(_mT(U) @ gU) * S[..., None, :]
    if gV is not None:
        inner = inner + S[..., :, None] * skew(_mT(V) @ gV)
    gA = inner / E
    if gS is not None:
        gA[..., idx, idx] += gS
    if m > k and gU is not None:  # (I - U U^T) gU S^-1 V^T
        gA = U @ gA
        gUSinv = gU / S[..., None, :]
        gA = (gA + gUSinv - U @ (_mT(U) @ gUSinv)) @ Vh
    elif n > k and gV is not None:  # U S^-1 gV^T (I - V V^T)
        gA = gA @ Vh
        SinvgVh = _mT(gV) / S[..., :, None]
        gA = U @ (gA + SinvgVh - (SinvgVh @ V) @ Vh)
    else:
        gA = U @ (gA @ Vh)
    return gA


def _svd_arrays(a, full_matrices):
    xp = xp_of(a)
    if _meta(a):
        batch, (m, n) = a.shape[:-2], a.shape[-2:]
        k = min(m, n)
        return _unwritten(batch + (m, m if full_matrices else k), batch + (k,),
                          batch + (n if full_matrices else k, n), dtype=a.dtype)
    if a.size == 0:  # LAPACK refuses empty matrices; torch returns empty factors
        m, n = a.shape[-2:]
        k = min(m, n)
        batch = a.shape[:-2]
        U = xp.zeros(batch + (m, m if full_matrices else k), a.dtype)
        Vh = xp.zeros(batch + (n if full_matrices else k, n), a.dtype)
        if full_matrices:
            U[...] = xp.eye(m, dtype=a.dtype)
            Vh[...] = xp.eye(n, dtype=a.dtype)
        return U, xp.zeros(batch + (k,), a.dtype), Vh
    by_mkl = _each_matrix_by_mkl(a, lambda matrix: _blas.gesdd(matrix, full_matrices))
    if by_mkl is not None:
        return by_mkl
    try:
        return _lapack(xp.linalg.svd, a, full_matrices)
    except np.linalg.LinAlgError:  # (NumPy: "SVD did not converge"; a batch gets nan factors, as torch's)
        raise LinAlgError("linalg.svd: The algorithm failed to converge because the input matrix contained "
                          "non-finite values.") from None


def svd_of_array(a, full_matrices=True):
    """``torch.linalg.svd``'s ``(U, S, Vh)`` of an array, signs included where MKL is minilora's BLAS (NumPy's
    LAPACK flips some of them): for the LoRA initialisations and merges that factor a weight as PEFT does."""
    return _svd_arrays(a, full_matrices)


def _each_matrix_by_mkl(a, factorise):
    """``factorise`` (``blas.gesdd`` / ``blas.geqrf_orgqr``: MKL's LAPACK, torch's) of each matrix of a finite host
    batch, its factors stacked; None where MKL does not take it (NumPy's LAPACK then: other bits, other signs)."""
    if not isinstance(a, np.ndarray) or not a.size or not np.isfinite(a).all():
        return None
    matrices = a.reshape((-1,) + a.shape[-2:])
    factors = [factorise(matrix) for matrix in matrices]
    if any(f is None for f in factors):
        return None
    return tuple(np.stack(parts).reshape(a.shape[:-2] + parts[0].shape) for parts in zip(*factors))


def svd(A, full_matrices=True, *, driver=None, out=None):
    """``torch.linalg.svd``: ``(U, S, Vh)`` with ``A = U diag(S) Vh``, S descending. Differentiable with
    torch's formula (with ``full_matrices=True`` the vectors past min(m, n) are not differentiated, as torch);
    the columns' signs are LAPACK's choice, as torch's (compare reconstructions, not U itself)."""
    _check("linalg.svd", A)
    if driver is not None:
        raise RuntimeError("torch.linalg.svd: keyword argument `driver=` is only supported on CUDA inputs "
                           "with cuSOLVER backend.")
    U, S, Vh = _svd_arrays(A._array, full_matrices)
    m, n = A.shape[-2:]

    def derivative(arrays, outputs, grads):
        k = min(m, n)  # (full_matrices: the vectors past k get no gradient, as torch narrows them away)
        Ur, Vhr = outputs[0][..., :k], outputs[2][..., :k, :]
        gU = None if grads[0] is None else grads[0][..., :k]
        gVh = None if grads[2] is None else grads[2][..., :k, :]
        return _svd_backward(arrays[0], Ur, outputs[1], Vhr, gU, grads[1], gVh)
    laid_out = (0,) if A.is_meta else (0, 2)  # (torch's meta kernel makes Vh row-major, its LAPACK column-major)
    result = SVD(*_outputs("LinalgSvdBackward0", (A,), (U, S, Vh), derivative, column_major=laid_out))
    return _with_out(result, out, "_linalg_svd")


def svdvals(A, *, driver=None, out=None):
    """``torch.linalg.svdvals``: the singular values, descending (gradient ``U diag(gS) Vh``)."""
    _check("linalg.svd", A)
    U, S, Vh = _svd_arrays(A._array, False)

    def derivative(arrays, outputs, grads):
        return _svd_backward(arrays[0], U, outputs[0], Vh, None, grads[0], None)
    return _with_out(_outputs("LinalgSvdBackward0", (A,), (S,), derivative, first=1)[0], out, "_linalg_svd")


# ---- QR ------------------------------------------------------------------------------------------
def _qr_square_backward(Q, R, gQ, gR):
    """torch's ``linalg_qr_backward`` for m >= n (Q m x n, R n x n)."""
    xp = xp_of(R)
    gA = 0
    if gR is not None:
        gA = gR @ _mT(R)
    if gQ is not None:
        gA = gA - _mT(Q) @ gQ
    gA = xp.triu(gA)
    sym = gA + _mT(gA)
    n = sym.shape[-1]
    sym[..., xp.arange(n), xp.arange(n)] *= 0.5
    gA = Q @ sym
    if gQ is not None:
        gA = gA + gQ
    # gA R^{-T}: solve X R^T = gA, i.e. R X^T = gA^T
    return _mT(xp.linalg.solve(R, _mT(gA)))


def _qr_backward(A, Q, R, gQ, gR):
    m, n = A.shape[-2:]
    if m >= n:
        return _qr_square_backward(Q, R, gQ, gR)
    # m < n: A = [X_A | Y_A] with X_A = Q X (a square QR) and Y = Q^T Y_A
    xp = xp_of(A)
    X, Y = R[..., :, :m], R[..., :, m:]
    gX = None if gR is None else gR[..., :, :m]
    gY = None if gR is None else gR[..., :, m:]
    if gY is not None:
        YA = Q @ Y
        gQ = (0 if gQ is None else gQ) + YA @ _mT(gY)
    gXA = _qr_square_backward(Q, X, gQ, gX)
    gYA = xp.zeros(Y.shape, A.dtype) if gY is None else Q @ gY
    return xp.concatenate([gXA, gYA], axis=-1)


def qr(A, mode="reduced", *, out=None):
    """``torch.linalg.qr``: ``(Q, R)``, mode ``'reduced'``, ``'complete'`` or ``'r'`` (Q empty). Each
    column of Q and row of R is fixed up to a sign (LAPACK's Householder choice, torch's too)."""
    _check("linalg.qr", A)
    if mode not in ("reduced", "complete", "r"):
        raise RuntimeError(f"qr received unrecognized mode '{mode}' but expected one of 'reduced' (default), "
                           f"'r', or 'complete'")
    xp = xp_of(A._array)
    m, n = A.shape[-2:]
    Q, R = _qr_arrays(A._array, "complete" if mode == "complete" else "reduced")
    if mode == "r":
        Q = xp.zeros((0,), A._array.dtype)

    def derivative(arrays, outputs, grads):
        _check_qr_differentiable(mode == "r", mode == "complete" and m > n)
        return _qr_backward(arrays[0], outputs[0], outputs[1], grads[0], grads[1])
    derivative.mode = mode  # (create_graph=True's refusals read it)
    result = QR(*_outputs("LinalgQrBackward0", (A,), (Q, R), derivative, (mode != "r", True), (0, 1)))
    return _with_out(result, out, "linalg_qr")


def _qr_arrays(a, mode):
    if _meta(a):
        batch, (m, n) = a.shape[:-2], a.shape[-2:]
        rows = m if mode == "complete" else min(m, n)
        return _unwritten(batch + (m, rows), batch + (rows, n), dtype=a.dtype)
    by_mkl = _each_matrix_by_mkl(a, lambda matrix: _blas.geqrf_orgqr(matrix, mode == "complete"))
    return by_mkl if by_mkl is not None else xp_of(a).linalg.qr(a, mode=mode)


def qr_of_array(a, mode="reduced"):
    """``torch.linalg.qr``'s ``(Q, R)`` of an array (MKL's Householder QR where it is minilora's BLAS): for the
    LoRA initialisations that factor a weight or a random matrix as PEFT does."""
    return _qr_arrays(a, mode)


def _check_qr_differentiable(without_q, complete_and_tall):
    """torch's refusals to differentiate linalg.qr (first order and create_graph=True)."""
    if without_q:
        raise RuntimeError("The derivative of linalg.qr depends on Q, which is not computed when mode='r'. "
                           "Please use linalg.qr(A, mode='reduced') if you are going to differentiate "
                           "through linalg.qr.")
    if complete_and_tall:
        raise RuntimeError("The QR decomposition is not differentiable when mode='complete' and nrows > ncols.")


# ---- symmetric eigendecomposition -----------------------------------------------------------------
def _check_uplo(UPLO):
    """torch takes 'L' / 'U' in either case; the triangle's letter for LAPACK."""
    if not isinstance(UPLO, str) or UPLO.upper() not in ("L", "U"):
        raise RuntimeError(f"Expected UPLO argument to be 'L' or 'U', but got {UPLO}")
    return UPLO.upper()


def _eigh_backward(L, V, gL, gV):
    """torch's ``linalg_eig_backward`` with ``is_hermitian`` (real case)."""
    xp = xp_of(L)
    n = L.shape[-1]
    idx = xp.arange(n)
    if gV is None:
        return (V * gL[..., None, :]) @ _mT(V)
    VhgV = _mT(V) @ gV
    VhgV = 0.5 * (VhgV - _mT(VhgV))
    E = L[..., None, :] - L[..., :, None]
    E[..., idx, idx] = 1
    inner = VhgV / E
    inner[..., idx, idx] = 0 if gL is None else gL
    return V @ (inner @ _mT(V))


def _eigh_arrays(a, UPLO):
    if _meta(a):
        return _unwritten(a.shape[:-1], a.shape, dtype=a.dtype)
    return xp_of(a).linalg.eigh(a, UPLO=UPLO)


def eigh(A, UPLO="L", *, out=None):
    """``torch.linalg.eigh``: ``(eigenvalues, eigenvectors)`` of a symmetric matrix (ascending values),
    reading its ``UPLO`` triangle only. Each eigenvector's sign is LAPACK's choice (as torch's)."""
    _check("linalg.eigh", A, square=True)
    UPLO = _check_uplo(UPLO)
    values, vectors = _eigh_arrays(A._array, UPLO)

    def derivative(arrays, outputs, grads):
        return _eigh_backward(outputs[0], outputs[1], grads[0], grads[1])
    return _with_out(Eigh(*_outputs("LinalgEighBackward0", (A,), (values, vectors), derivative,
                                    column_major=(1,))), out, "_linalg_eigh")


def eigvalsh(A, UPLO="L", *, out=None):
    """``torch.linalg.eigvalsh``: the eigenvalues of a symmetric matrix, ascending."""
    _check("linalg.eigh", A, square=True)
    UPLO = _check_uplo(UPLO)
    values, vectors = _eigh_arrays(A._array, UPLO)

    def derivative(arrays, outputs, grads):
        return _eigh_backward(outputs[0], vectors, grads[0], None)
    derivative.uplo = UPLO  # (create_graph=True recomputes the vectors with it)
    return _with_out(_outputs("LinalgEighBackward0", (A,), (values,), derivative)[0], out, "_linalg_eigh")


# ---- general eigendecomposition (complex results) --------------------------------------------------
def _eig_arrays(name, A):
    """(eigenvalues, eigenvectors) of a real square matrix, complex64/complex128 as torch (LAPACK's geev:
    each eigenvector of norm 1, its largest component real; the order is LAPACK's)."""
    _check(name, A, square=True)
    a = A._array
    xp = xp_of(a)
    ctype = np.complex64 if a.dtype == np.float32 else np.complex128
    if getattr(xp.linalg, "eig", None) is None:
        raise NotImplementedError(f"{name}: CuPy has no general (non-symmetric) eigensolver; move the matrix to "
                                  f"the cpu (A.cpu()), or use linalg.eigh for a symmetric one")
    if a.size == 0:
        return xp.zeros(a.shape[:-1], ctype), xp.zeros(a.shape, ctype)
    if _meta(a):
        return _unwritten(a.shape[:-1], a.shape, dtype=ctype)
    if not bool(xp.isfinite(a).all()):
        raise RuntimeError(f"torch.{name}: input tensor should not contain infs or NaNs.")
    values, vectors = xp.linalg.eig(a)  # (NumPy returns real arrays when every eigenvalue is real)
    return values.astype(ctype), vectors.astype(ctype)


def _eig_backward(L, V, gL, gV):
    """torch's ``linalg_eig_backward`` (not hermitian): ``V^-H (diag(gL) + P(V^H gV) / conj(E)) V^H``, with
    P projecting out what the unit-norm eigenvectors cannot change; a complex result (the engine keeps its
    real part for a real A)."""
    xp = xp_of(V)
    VH = xp.conj(_mT(V))
    if gV is None:
        return xp.linalg.solve(VH, gL.astype(V.dtype)[..., :, None] * VH)
    VhgV = VH @ gV.astype(V.dtype)
    n = L.shape[-1]
    idx = xp.arange(n)
    diag = VhgV[..., idx, idx]
    _refuse_phase_dependent(diag)
    VhgV = VhgV - VH @ (V * diag.real[..., None, :])
    Lconj = xp.conj(L)
    E = Lconj[..., None, :] - Lconj[..., :, None]
    E[..., idx, idx] = 1
    gA = VhgV / E
    if gL is not None:
        gA[..., idx, idx] = gL
    return xp.linalg.solve(VH, gA @ VH)


def _refuse_phase_dependent(diagonal):
    """torch's check in linalg_eig_backward: diag(V^H gV) real, else the loss depends on the eigenvectors'
    free phases (first order and create_graph=True)."""
    if not bool(xp_of(diagonal).allclose(diagonal.imag, 0, rtol=1e-2, atol=1e-2)):
        raise RuntimeError("linalg_eig_backward: The eigenvectors in the complex case are specified up to "
                           "multiplication by e^{i phi}. The specified loss function depends on this quantity, so "
                           "it is ill-defined.")


def eig(A, *, out=None):
    """``torch.linalg.eig``: ``(eigenvalues, eigenvectors)`` of a square real matrix, complex (minilora's
    complex tensors: take ``.real`` / ``.imag`` / ``.abs()`` / ``view_as_real`` of them to go on). Each
    eigenvector is fixed up to a complex phase: differentiate losses that do not depend on it (torch checks
    and raises, so does minilora)."""
    values, vectors = _eig_arrays("linalg.eig", A)

    def derivative(arrays, outputs, grads):
        return _eig_backward(outputs[0], outputs[1], grads[0], grads[1])
    laid_out = () if A.is_meta else (1,)  # (torch's meta kernel makes the vectors row-major, its LAPACK column-major)
    return _with_out(Eig(*_outputs("LinalgEigBackward0", (A,), (values, vectors), derivative, column_major=laid_out)),
                     out, "linalg_eig")


def eigvals(A, *, out=None):
    """``torch.linalg.eigvals``: the eigenvalues of a square real matrix, complex, in LAPACK's order."""
    values, vectors = _eig_arrays("linalg.eigvals", A)

    def derivative(arrays, outputs, grads):
        return _eig_backward(outputs[0], vectors, grads[0], None)
    return _with_out(_outputs("LinalgEigBackward0", (A,), (values,), derivative)[0], out, "linalg_eigvals")


# ---- inverse, determinant, solve -----------------------------------------------------------------
def _first_failure(info):
    """LAPACK's ``info`` (one per matrix) -> torch's ``"(Batch element k): "`` prefix (empty for one
    matrix) and the first failing matrix's info, as torch's linalg errors name them."""
    flat = _host(xp_of(info).asarray(info)).reshape(-1)
    first = int(np.flatnonzero(flat)[0])
    return (f"(Batch element {first}): " if np.ndim(info) else ""), int(flat[first])


def _singular(name, a):
    """torch's error for an inverse of a singular matrix: getrf's first zero pivot (1-based), and which matrix."""
    batch, pivot = _first_failure(_lu_arrays(a)[2])
    return LinAlgError(f"{name}: {batch}The diagonal element {pivot} is zero, the inversion could not be completed "
                       f"because the input matrix is singular.")


def _inv_array(a, name="linalg.inv"):
    xp = xp_of(a)
    if _meta(a):
        return _unwritten(a.shape, dtype=a.dtype)
    try:
        inverse = _lapack(xp.linalg.inv, a)
    except np.linalg.LinAlgError:
        raise _singular(name, a) from None
    if not xp.all(xp.isfinite(inverse)) and xp.all(xp.isfinite(a)):  # (CuPy reports singular as inf/nan)
        raise _singular(name, a)
    return inverse


def _inv_derivative(arrays, outputs, grads):
    Ainv_T = _mT(outputs[0])
    return -(Ainv_T @ grads[0] @ Ainv_T)


def inv(A, *, out=None):
    """``torch.linalg.inv``; a singular matrix raises LinAlgError (a RuntimeError), as torch."""
    _check("linalg.inv", A, square=True)
    inverse = _inv_array(A._array)
    result = _outputs("LinalgInvExBackward0", (A,), (inverse,), _inv_derivative, column_major=(0,))[0]
    return _with_out(result, out, "linalg_inv_ex")


def inv_ex(A, *, check_errors=False, out=None):
    """``torch.linalg.inv_ex``: ``(inverse, info)``; info > 0 marks a singular matrix (no error unless
    ``check_errors``)."""
    _check("linalg.inv", A, square=True)  # (torch's checks name linalg.inv)
    xp = xp_of(A._array)
    info = _unwritten(A.shape[:-2], dtype=np.int32) if A.is_meta else xp.zeros(A.shape[:-2], xp.int32)
    try:
        inverse = _inv_array(A._array) if A.is_meta else _lapack(xp.linalg.inv, A._array)
    except np.linalg.LinAlgError:
        if check_errors:
            raise _singular("linalg.inv_ex", A._array) from None
        eye = xp.broadcast_to(xp.eye(A.shape[-1], dtype=A._array.dtype), A.shape)
        inverse, info = _lu_solve_arrays(A._array, eye)  # (inf/nan where singular, as torch's getri)
    inverse_t, = _outputs("LinalgInvExBackward0", (A,), (inverse,), _inv_derivative, column_major=(0,))
    return _with_out(InvEx(inverse_t, _plain(info, A)), out, "linalg_inv_ex")


def _lu_solve_arrays(a, b):
    """``(A^-1 B, info)`` by LAPACK's getrf + getrs: a singular matrix gives inf/nan and its info (the first
    zero pivot), as torch's solve_ex / inv_ex, where NumPy's solve refuses the whole batch."""
    LU, pivots, info = _lu_arrays(a)
    P, L, U = _unpack_arrays(LU, pivots)
    with np.errstate(all="ignore"):
        y = _tri_solve(L, _mT(P) @ b, upper=False, unit=True)
        return _tri_solve(U, y, upper=True), info


def _det_derivative(arrays, outputs, grads):
    a, det = arrays[0], outputs[0]
    xp = xp_of(a)
    g = grads[0][..., None, None]
    try:
        return g * det[..., None, None] * _mT(_lapack(xp.linalg.inv, a))
    except np.linalg.LinAlgError:  # a singular matrix: d det = adj(A)^T, from the SVD (torch does the same)
        U, S, Vh = xp.linalg.svd(a)
        n = S.shape[-1]
        others = xp.stack([xp.prod(xp.delete(S, i, axis=-1), axis=-1) for i in range(n)], axis=-1)
        sign = xp.linalg.det(U) * xp.linalg.det(Vh)
        return g * sign[..., None, None] * ((U * others[..., None, :]) @ Vh)


def det(A, *, out=None):
    """``torch.linalg.det`` (``torch.det``, ``x.det()``); differentiable at singular matrices too."""
    _check("linalg.det", A, square=True)
    a = A._array
    value = _unwritten(a.shape[:-2], dtype=a.dtype) if _meta(a) else _det_as_torch(a)
    return _with_out(_outputs("LinalgDetBackward0", (A,), (value,), _det_derivative)[0], out, "_linalg_det")


def _logdet_derivative(arrays, outputs, grads):
    """``g A^{-T}``; at a singular matrix log|det| has no derivative: nan (torch returns LU's round-off).
    slogdet's sign (a step function of A) passes none: its node gives no gradient, as torch's."""
    xp = xp_of(arrays[0])
    if grads[-1] is None:
        return None
    try:
        inverse = _lapack(xp.linalg.inv, arrays[0])
    except np.linalg.LinAlgError:
        inverse = xp.stack([_inv_or_nan(m) for m in arrays[0].reshape((-1,) + arrays[0].shape[-2:])])
        inverse = inverse.reshape(arrays[0].shape)
    return grads[-1][..., None, None] * _mT(inverse)


def _logdet_of_positive_derivative(negative):
    """torch.logdet is ``where(sign == -1, nan, logabsdet)``: no gradient reaches a matrix with a negative
    determinant (``negative``), ``g A^{-T}`` elsewhere (a NaN of a matrix with inf or NaN in it keeps its NaN
    gradient). The mask rides on the derivative (``.negative``) for the recorded formula (ops/higher_order.py)."""
    def derivative(arrays, outputs, grads):
        grad = _logdet_derivative(arrays, outputs, grads)
        return xp_of(grad).where(negative[..., None, None], 0, grad)
    derivative.negative = negative
    return derivative


def _inv_or_nan(matrix):
    try:
        return _lapack(xp_of(matrix).linalg.inv, matrix)
    except np.linalg.LinAlgError:
        return xp_of(matrix).full(matrix.shape, np.nan, matrix.dtype)


def _lu_of_det(a):
    """The LU torch's det and slogdet read, where ``_lu_arrays`` gives MKL's bits: of ``A^T`` for a contiguous ``A``
    (``det(A^T) = det(A)``, and ATen factors it without a copy), of ``A`` otherwise; None elsewhere."""
    if not _in_getrf_order(a, *a.shape[-2:]) or not a.size:
        return None
    lu, pivots, _ = _lu_arrays(_mT(a) if a.flags.c_contiguous else a)
    odd = (pivots != np.arange(1, pivots.shape[-1] + 1, dtype=pivots.dtype)).sum(-1) % 2 == 1
    return np.diagonal(lu, axis1=-2, axis2=-1), odd


def _det_as_torch(a):
    """ATen's det: ``det_P * prod(diag(LU))``, the diagonal multiplied in order; NumPy's det where not modelled."""
    factored = _lu_of_det(a)
    if factored is None:
        return xp_of(a).linalg.det(a)
    diagonal, odd = factored
    with np.errstate(over="ignore", invalid="ignore", under="ignore"):
        product = np.cumprod(diagonal, axis=-1)[..., -1]  # (cumprod: in order, as ATen's loop on a strided diagonal)
        return np.where(odd, -product, product).astype(a.dtype)


def _slogdet_as_torch(a):
    """ATen's slogdet: ``sign = det_P * prod(sgn(d))``, ``logabsdet = sum(log |d|)`` (torch's log, then its sum of
    the new contiguous logs: minilora's own ops); None where ``_lu_of_det`` does not model the LU."""
    factored = _lu_of_det(a)
    if factored is None:
        return None
    diagonal, odd = factored
    with np.errstate(divide="ignore", invalid="ignore"):
        sign = np.nan_to_num(np.sign(diagonal), nan=0.0).prod(-1) * np.where(odd, -1, 1)
        logabsdet = ops.sum(ops.log(Tensor(np.abs(diagonal), dtype=a.dtype)), -1)._array
    return sign.astype(a.dtype), logabsdet.astype(a.dtype)


def _slogdet_arrays(a):
    """(sign, logabsdet) as torch's: LU's diagonal d, ``prod(sign(d))`` times the pivots' sign and ``sum(log |d|)``.
    NumPy's slogdet where the matrix is finite and not singular; else that formula on ``_lu_arrays``' LU (NumPy
    says sign 0, logabsdet -inf for any zero pivot: torch's sum is NaN where an infinite pivot meets it)."""
    if _meta(a):
        return _unwritten(a.shape[:-2], a.shape[:-2], dtype=a.dtype)
    as_torch = _slogdet_as_torch(a)
    if as_torch is not None:
        return as_torch
    xp = xp_of(a)
    with np.errstate(invalid="ignore"):
        sign, logabsdet = xp.linalg.slogdet(a)
    odd = (sign == 0) | ~xp.isfinite(a).all(axis=(-2, -1))
    if xp is not np or not odd.any():
        return sign, logabsdet
    sign, logabsdet = np.array(sign), np.array(logabsdet)  # (one matrix's: NumPy scalars)
    lu, pivots, _ = _lu_arrays(a[odd])
    diagonal = xp.diagonal(lu, axis1=-2, axis2=-1)
    swaps = (pivots != xp.arange(1, pivots.shape[-1] + 1, dtype=pivots.dtype)).sum(-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        sign[odd] = xp.nan_to_num(xp.sign(diagonal), nan=0.0).prod(-1) * xp.where(swaps % 2, -1, 1)
        logabsdet[odd] = xp.log(xp.abs(diagonal)).sum(-1)
    return sign, logabsdet


def slogdet(A, *, out=None):
    """``torch.linalg.slogdet``: ``(sign, logabsdet)``; the gradient flows through logabsdet (sign is in the
    graph too, as torch's, but passes no gradient)."""
    _check("linalg.slogdet", A, square=True)
    sign, logabsdet = _slogdet_arrays(A._array)
    result = SlogDet(*_outputs("LinalgSlogdetBackward0", (A,), (sign, logabsdet), _logdet_derivative))
    return _with_out(result, out, "_linalg_slogdet")


def logdet(input):
    """``torch.logdet``: log(det), nan for a negative determinant, -inf for a singular matrix."""
    _check("logdet", input, square=True, arg="input")
    xp = xp_of(input._array)
    sign, logabsdet = _slogdet_arrays(input._array)
    if _meta(sign):
        return _outputs("LogdetBackward0", (input,), (logabsdet,), _logdet_derivative)[0]
    value = xp.where(sign < 0, xp.nan, logabsdet).astype(input._array.dtype)
    return _outputs("LogdetBackward0", (input,), (value,), _logdet_of_positive_derivative(sign < 0))[0]


def _vector_rhs(A, B):
    """torch's rule: B is a (batch of) vector(s) when 1-D, or when its shape is A's batch x n."""
    return B.ndim == 1 or (B.ndim == A.ndim - 1 and B.shape == A.shape[:-1])


def solve(A, B, *, left=True, out=None):
    """``torch.linalg.solve``: X with ``A X = B`` (``X A = B`` when ``left=False``); B may be a vector or
    a batch of vectors (torch's rule), batches broadcast."""
    return _with_out(_solve("linalg.solve", A, B, left=left, check_errors=True)[0], out, "_linalg_solve_ex")


def solve_ex(A, B, *, left=True, check_errors=False, out=None):
    """``torch.linalg.solve_ex``: ``(result, info)``."""
    X, info = _solve("linalg.solve_ex", A, B, left=left, check_errors=check_errors)
    return _with_out(SolveEx(X, info), out, "_linalg_solve_ex")


def _solve(name, A, B, *, left, check_errors):
    _check("linalg.solve", A, square=True)  # (torch's checks name linalg.solve for solve_ex too)
    if A.dtype != B.dtype:  # (so B's dtype is A's, which _check took: an integer B is a mismatch, as torch says)
        raise RuntimeError(f"linalg.solve: Expected A and B to have the same dtype, but found A of type "
                           f"{dtypes.torch_name(A.dtype)} and B of type {dtypes.torch_name(B.dtype)} instead")
    if not left:  # X A = B  <=>  A^T X^T = B^T
        X, info = _solve(name, A.mT, B.mT, left=True, check_errors=check_errors)
        return X.mT, info
    vector = _vector_rhs(A, B)
    n = A.shape[-1]
    rows = B.shape[-1] if vector else B.shape[-2] if B.ndim >= 2 else None
    if rows != n:
        shape = f"{B.shape[-1]}x1" if vector else f"{B.shape[-2]}x{B.shape[-1]}" if B.ndim >= 2 else f"{B.shape}"
        raise RuntimeError(f"linalg.solve: Incompatible shapes of A and B for the equation AX = B ({A.shape[-2]}x{n} "
                           f"and {shape})")
    xp = xp_of(A._array)
    b = B._array[..., None] if vector else B._array
    batch = np.broadcast_shapes(A.shape[:-2], b.shape[:-2])
    a = xp.broadcast_to(A._array, batch + A.shape[-2:])
    b = xp.broadcast_to(b, batch + b.shape[-2:])
    info = xp.zeros(batch, xp.int32)
    try:
        x = _unwritten(b.shape, dtype=b.dtype) if _meta(a, b) else _lapack(xp.linalg.solve, a, b)
    except np.linalg.LinAlgError:
        x, info = _lu_solve_arrays(a, b)  # (per matrix: inf/nan and info where singular, as torch)
        if check_errors:
            raise LinAlgError(f"torch.{name}: {_first_failure(info)[0]}The solver failed because the input matrix "
                              f"is singular.") from None
    if vector:
        x = x[..., 0]

    def derivative(arrays, outputs, grads):
        a_, b_ = arrays
        X, g = outputs[0], grads[0]
        if vector:
            X, g = X[..., None], g[..., None]
        gB = xp.linalg.solve(_mT(xp.broadcast_to(a_, batch + a_.shape[-2:])), g)
        gA = -(gB @ _mT(X))
        if vector:
            gB = gB[..., 0]
        from .ops.elementwise import unbroadcast
        return unbroadcast(gA, a_.shape), unbroadcast(gB, b_.shape)
    result, = _outputs("LinalgSolveExBackward0", (A, B), (x,), derivative, column_major=(0,))
    return result, _plain(info, A)


def solve_triangular(A, B, *, upper, left=True, unitriangular=False, out=None):
    """``torch.linalg.solve_triangular``: X with ``A X = B`` (``X A = B`` if not ``left``), A triangular
    (only its ``upper`` or lower triangle is read; a unit diagonal assumed where ``unitriangular``)."""
    _check("linalg.solve_triangular", A)
    _check_dtype("linalg.solve_triangular", B)
    if B.ndim < 2:
        raise RuntimeError("linalg.solve_triangular: The input tensor B must have at least 2 dimensions.")
    if A.dtype != B.dtype:
        raise RuntimeError(f"linalg.solve_triangular: Expected A and B to have the same dtype, but found A of type "
                           f"{dtypes.torch_name(A.dtype)} and B of type {dtypes.torch_name(B.dtype)} instead")
    xp = xp_of(A._array)
    x = _tri_solve(A._array, B._array, upper=upper, left=left, unit=unitriangular)

    def derivative(arrays, outputs, grads):  # torch's linalg_solve_triangular_backward
        from .ops.elementwise import unbroadcast
        X, g = outputs[0], grads[0]
        gB = _tri_solve(_mT(arrays[0]), g, upper=not upper, left=left, unit=unitriangular)
        gA = -(gB @ _mT(X)) if left else -(_mT(X) @ gB)
        gA = xp.triu(gA, 1 if unitriangular else 0) if upper else xp.tril(gA, -1 if unitriangular else 0)
        return unbroadcast(gA, A.shape), unbroadcast(gB, B.shape)
    derivative.options = dict(upper=upper, left=left, unitriangular=unitriangular)  # (for create_graph=True)
    result = _outputs("LinalgSolveTriangularBackward0", (A, B), (x,), derivative, column_major=(0,))[0]
    return _with_out(result, out, "linalg_solve_triangular")


# ---- Cholesky ------------------------------------------------------------------------------------
def _cholesky_derivative(upper):
    def derivative(arrays, outputs, grads):
        xp = xp_of(outputs[0])
        L, gL = outputs[0], grads[0]
        if upper:
            L, gL = _mT(L), _mT(gL)
        phi = xp.tril(_mT(L) @ gL)  # torch's cholesky_backward (Murray 2016): tril(L^T gL), diagonal halved
        n = phi.shape[-1]
        phi[..., xp.arange(n), xp.arange(n)] *= 0.5
        gA = xp.linalg.solve(_mT(L), phi)  # L^{-T} phi
        gA = _mT(xp.linalg.solve(_mT(L), _mT(gA)))  # ... L^{-1}
        return 0.5 * (gA + _mT(gA))  # symmetrized, as torch's
    derivative.upper = upper  # (what create_graph=True's formula reads)
    return derivative


def _cholesky_arrays(a):
    """(L, info): LAPACK's potrf per matrix; info is the order of the first minor that is not positive
    definite (0: all are), and that matrix's L is what LAPACK leaves: the columns before it factored, the
    failing pivot's value on the diagonal, the rest of A's lower triangle as it was (torch returns it)."""
    xp = xp_of(a)
    if _meta(a):
        return _unwritten(a.shape, dtype=a.dtype), _unwritten(a.shape[:-2], dtype=np.int32)
    try:
        return _lapack(xp.linalg.cholesky, a), xp.zeros(a.shape[:-2], xp.int32)
    except np.linalg.LinAlgError:
        pass
    n = a.shape[-1]
    flat = _host(a).reshape((math.prod(a.shape[:-2]), n, n))
    L, info = np.zeros(flat.shape, a.dtype), np.zeros(flat.shape[0], np.int32)
    for i, matrix in enumerate(flat):
        L[i], info[i] = _potf2(matrix)
    return xp.asarray(L.reshape(a.shape)), xp.asarray(info.reshape(a.shape[:-2]))


def _potf2(a):
    """LAPACK's unblocked Cholesky (potf2, lower, left-looking) of one host matrix: (L, info)."""
    L = np.tril(a).copy()
    for j in range(L.shape[-1]):
        pivot = L[j, j] - L[j, :j] @ L[j, :j]
        if not pivot > 0:  # (nan too)
            L[j, j] = pivot
            return L, j + 1
        L[j, j] = np.sqrt(pivot)
        L[j + 1:, j] = (L[j + 1:, j] - L[j + 1:, :j] @ L[j, :j]) / L[j, j]
    return L, 0


def cholesky(A, *, upper=False, out=None):
    """``torch.linalg.cholesky``: lower L with ``A = L L^T`` (upper ``U = L^T`` if ``upper``), from A's lower
    triangle; a matrix that is not positive-definite raises LinAlgError naming the failing minor, as torch."""
    L, info = _cholesky(A, upper)
    _raise_not_positive_definite("linalg.cholesky", info)
    return _with_out(L, out, "linalg_cholesky_ex")


def cholesky_ex(A, *, upper=False, check_errors=False, out=None):
    """``torch.linalg.cholesky_ex``: ``(L, info)``, no error for a matrix that is not positive-definite
    (info > 0: its L is what LAPACK left) unless ``check_errors``."""
    L, info = _cholesky(A, upper)
    if check_errors:
        _raise_not_positive_definite("linalg.cholesky_ex", info)
    return _with_out(CholeskyEx(L, info), out, "linalg_cholesky_ex")


def _raise_not_positive_definite(name, info):
    if not info.is_meta and _host(info._array).any():  # (meta: no values to check, as torch's meta kernel)
        batch, order = _first_failure(info._array)
        raise LinAlgError(f"{name}: {batch}The factorization could not be completed because the input is not "
                          f"positive-definite (the leading minor of order {order} is not positive-definite).")


def _cholesky(A, upper):
    _check("linalg.cholesky", A, square=True)  # (torch's checks name linalg.cholesky for cholesky_ex too)
    L, info = _cholesky_arrays(A._array)
    if upper:
        L = _mT(L)
    result, = _outputs("LinalgCholeskyExBackward0", (A,), (L,), _cholesky_derivative(upper), column_major=(0,))
    return result, _plain(info, A)


# ---- triangular solves (LAPACK's trsm: no singularity check) ------------------------------------------
def _tri_solve(a, b, *, upper, left=True, unit=False):
    """X with ``T X = B`` (``X T = B`` if not ``left``) for the ``upper`` / lower triangle T of ``a`` (its
    diagonal taken as 1 where ``unit``); batches broadcast. A zero on T's diagonal gives inf/nan, as torch's
    trsm (NumPy's solve would refuse the singular matrix)."""
    xp = xp_of(a)
    if _meta(a, b):
        return _unwritten(_batch(a, b) + b.shape[-2:], dtype=np.result_type(a.dtype, b.dtype))
    t = xp.triu(a) if upper else xp.tril(a)
    if unit:
        n = t.shape[-1]
        t = t.copy()
        t[..., xp.arange(n), xp.arange(n)] = 1
    if not left:  # X T = B  <=>  T^T X^T = B^T
        return _mT(_tri_solve(_mT(t), _mT(b), upper=not upper))
    batch = np.broadcast_shapes(t.shape[:-2], b.shape[:-2])
    t = xp.broadcast_to(t, batch + t.shape[-2:])
    b = xp.broadcast_to(b, batch + b.shape[-2:])
    try:
        return _lapack(xp.linalg.solve, t, b)
    except np.linalg.LinAlgError:
        return _substitute(t, b, upper)


def _substitute(t, b, upper):
    """Back (upper) or forward (lower) substitution, row by row: what trsm does, zeros on the diagonal too."""
    xp = xp_of(t)
    n = t.shape[-1]
    x = xp.zeros(b.shape, np.result_type(t.dtype, b.dtype))
    with np.errstate(all="ignore"):
        for i in (range(n - 1, -1, -1) if upper else range(n)):
            done = slice(i + 1, n) if upper else slice(0, i)
            x[..., i, :] = (b[..., i, :] - (t[..., i, None, done] @ x[..., done, :])[..., 0, :]) / t[..., i, i, None]
    return x


# ---- LU ------------------------------------------------------------------------------------------------
def _lu_arrays(a):
    """LAPACK's getrf on each matrix (partial pivoting: the first largest |entry| of the column, as idamax):
    (LU, pivots: 1-based int32, info: the first zero pivot's 1-based index, 0 if none)."""
    xp = xp_of(a)
    m, n = a.shape[-2:]
    k = min(m, n)
    batch = a.shape[:-2]
    if _meta(a):
        return _unwritten(a.shape, dtype=a.dtype), *_unwritten(batch + (k,), batch, dtype=np.int32)
    count = math.prod(batch)
    work = a.reshape((count, m, n)).copy()
    if _getrf_by_mkl(work):
        factored = [_blas.getrf(matrix) for matrix in work]
        return (np.stack([lu for lu, _, _ in factored]).reshape(a.shape),
                np.stack([p for _, p, _ in factored]).reshape(batch + (k,)),
                np.array([i for _, _, i in factored], np.int32).reshape(batch))
    rows = xp.arange(count)
    pivots = xp.zeros((count, k), np.int32)
    info = xp.zeros(count, np.int32)
    for j in range(k):
        p = j + xp.argmax(xp.abs(work[:, j:, j]), axis=1)
        pivots[:, j] = p + 1
        top = work[rows, j].copy()
        work[rows, j] = work[rows, p]
        work[rows, p] = top
        pivot = work[:, j, j]
        zero = pivot == 0
        info = xp.where((info == 0) & zero, j + 1, info).astype(np.int32)
        if _in_getrf_order(work, m, n):
            _getrf_step(work, j, xp.where(zero, 1, pivot))
            continue
        work[:, j + 1:, j] /= xp.where(zero, 1, pivot)[:, None]  # (a zero pivot: its column is zero already)
        work[:, j + 1:, j + 1:] -= work[:, j + 1:, j, None] * work[:, j, None, j + 1:]
    return work.reshape(a.shape), pivots.reshape(batch + (k,)), info.reshape(batch)


_GETRF_UNBLOCKED_UP_TO = 16  # MKL's getrf factors square matrices up to this order column by column (measured)


def _in_getrf_order(work, m, n):
    """Whether the LU here is MKL's (torch's) bit for bit: by ``_getrf_step`` (square float32 / float64 host matrices
    of order up to 16 on the CPU it was measured on, an Intel with AVX-512: every element equal on random ones; from
    17 MKL blocks the update, not modelled), or by MKL's own getrf elsewhere (``_getrf_by_mkl``)."""
    return _getrf_by_mkl(work) or (type(work) is np.ndarray and work.dtype in (np.float32, np.float64) and m == n
                                   and n <= _GETRF_UNBLOCKED_UP_TO and _blas.library() == "mkl")


def _getrf_by_mkl(work):
    """Whether MKL's own getrf factors these matrices (``blas.getrf``, called as ATen's lapackLu): MKL is the library,
    on a CPU other than the one ``_getrf_step`` was measured on (MKL's kernels there differ: an AMD Zen 4's LU of
    order 2-16 was off torch's in most matrices), float32/float64 host matrices."""
    return (type(work) is np.ndarray and work.dtype in (np.float32, np.float64) and _blas.library() == "mkl"
            and not _float32_math.MKL_SQRT_CPU and work.size > 0)


def _getrf_step(work, j, pivot):
    """Step ``j`` of MKL's unblocked getrf: the column below the pivot times the pivot's reciprocal (divided by it
    where one element is left in a matrix of order 4 or less), then the trailing block updated by fused
    multiply-adds, ``a - l * u`` rounded once (measured against torch.linalg.lu_factor)."""
    from .float32_math import fused_multiply_add, fused_multiply_add64
    n, t = work.shape[-1], work.dtype.type
    below = n - j - 1
    if below == 0:
        return
    if below == 1 and n <= 4:
        work[:, j + 1:, j] /= pivot[:, None]
    else:
        work[:, j + 1:, j] *= (t(1) / pivot)[:, None]
    fma = fused_multiply_add64 if work.dtype == np.float64 else fused_multiply_add
    column = np.broadcast_to(-work[:, j + 1:, j, None], work[:, j + 1:, j + 1:].shape)
    row = np.broadcast_to(work[:, j, None, j + 1:], column.shape)
    work[:, j + 1:, j + 1:] = fma(np.ascontiguousarray(column), np.ascontiguousarray(row),
                                  np.ascontiguousarray(work[:, j + 1:, j + 1:]))


def _permutation(pivots, m, dtype):
    """P with ``A = P L U`` from LAPACK's row interchanges (row i swapped with row pivots[i] - 1, in order)."""
    xp = xp_of(pivots)
    batch, k = pivots.shape[:-1], pivots.shape[-1]
    count = math.prod(batch)
    perm = xp.broadcast_to(xp.arange(m), batch + (m,)).reshape((count, m)).copy()
    flat = pivots.reshape((count, k)).astype(np.int64) - 1
    rows = xp.arange(perm.shape[0])
    for i in range(k):
        other = flat[:, i]
        here = perm[:, i].copy()
        perm[:, i] = perm[rows, other]
        perm[rows, other] = here
    perm = perm.reshape(batch + (m,))
    return (perm[..., None, :] == xp.arange(m)[:, None]).astype(dtype)  # P[r, c] = 1 where perm[c] == r


def _unpack_arrays(LU, pivots):
    xp = xp_of(LU)
    m, n = LU.shape[-2:]
    k = min(m, n)
    if _meta(LU):
        batch = _batch(LU)
        return _unwritten(batch + (m, m), batch + (m, k), batch + (k, n), dtype=LU.dtype)
    L = xp.tril(LU[..., :, :k], -1) + xp.eye(m, k, dtype=LU.dtype)
    return _permutation(pivots, m, LU.dtype), L, xp.triu(LU[..., :k, :])


def _lu_backward(P, L, U, gL, gU):
    """torch's ``linalg_lu_backward`` (real case) for ``A = P L U``: square, wide (m < n) and tall (m > n)."""
    xp = xp_of(L)
    m, k = L.shape[-2:]
    n = U.shape[-1]
    if m == n:
        gA = xp.tril(_mT(L) @ gL, -1) if gL is not None else 0
        if gU is not None:
            gA = gA + xp.triu(gU @ _mT(U))
        gA = _tri_solve(_mT(U), gA, upper=False, left=False)
        return P @ _tri_solve(_mT(L), gA, upper=True, unit=True)
    if m < n:
        gA = _mT(L) @ gL if gL is not None else 0
        if gU is not None:
            gA = gA - xp.triu(gU) @ _mT(U)
        gA = _tri_solve(_mT(U[..., :, :k]), xp.tril(gA, -1), upper=False, left=False)
        if gU is not None:
            gA = xp.concatenate([gA + xp.triu(gU[..., :, :k]), gU[..., :, k:]], axis=-1)
        gA = _tri_solve(_mT(L), gA, upper=True, unit=True)
        if gU is None:
            gA = xp.concatenate([gA, xp.zeros(gA.shape[:-1] + (n - k,), gA.dtype)], axis=-1)
        return P @ gA
    gA = gU @ _mT(U) if gU is not None else 0
    if gL is not None:
        gA = gA - _mT(L) @ xp.tril(gL, -1)
    gA = _tri_solve(_mT(L[..., :k, :]), xp.triu(gA), upper=True, unit=True)
    if gL is not None:
        gA = xp.concatenate([gA + xp.tril(gL[..., :k, :], -1), gL[..., k:, :]], axis=-2)
    gA = _tri_solve(_mT(U), gA, upper=False, left=False)
    if gL is None:
        gA = xp.concatenate([gA, xp.zeros((gA.shape[:-2] + (m - k, n)), gA.dtype)], axis=-2)
    return P @ gA


def _lu_checked(name, A, pivot):
    if not isinstance(A, Tensor):
        raise TypeError(f"{name}(): argument 'A' (position 1) must be Tensor, not {type(A).__name__}")
    if A.ndim < 2:
        raise RuntimeError(f"torch.lu_factor: Expected tensor with 2 or more dimensions. Got size: {list(A.shape)} "
                           f"instead")
    _check_dtype(name, A)
    if not pivot:
        raise RuntimeError("linalg.lu_factor: LU without pivoting is not implemented on the CPU")
    return _lu_arrays(A._array)


def _raise_zero_pivot(name, info):
    """torch's lu_factor error for the first matrix with a zero pivot (U[i,i] == 0)."""
    batch, pivot = _first_failure(info)
    raise LinAlgError(f"torch.{name}: {batch}U[{pivot},{pivot}] is zero and using it on lu_solve would "
                      f"result in a division by zero. If you still want to perform the factorization, consider calling "
                      f"linalg.lu(A, pivot) or linalg.lu_factor_ex(A, pivot)")


def _lu_factor_node(A, LU, pivots):
    def derivative(arrays, outputs, grads):  # torch's lu_factor_ex_backward: L's and U's parts of LU's gradient
        k = min(LU.shape[-2:])
        P, L, U = _unpack_arrays(outputs[0], pivots)
        return _lu_backward(P, L, U, grads[0][..., :, :k], grads[0][..., :k, :])
    derivative.pivots = pivots  # (create_graph=True unpacks LU with them)
    return _outputs("LinalgLuFactorExBackward0", (A,), (LU,), derivative, column_major=(0,))[0]


def lu_factor_ex(A, *, pivot=True, check_errors=False, out=None):
    """``torch.linalg.lu_factor_ex``: ``(LU, pivots, info)``, L (unit diagonal, not stored) and U packed in one
    matrix, LAPACK's 1-based int32 row interchanges, info > 0 where U has a zero on its diagonal (no error
    unless ``check_errors``)."""
    LU, pivots, info = _lu_checked("linalg.lu_factor_ex", A, pivot)
    if check_errors and bool((info > 0).any()):
        _raise_zero_pivot("linalg.lu_factor_ex", info)
    result = LUFactorEx(_lu_factor_node(A, LU, pivots), _plain(pivots, A), _plain(info, A))
    return _with_out(result, out, "linalg_lu_factor_ex")


def lu_factor(A, *, pivot=True, out=None):
    """``torch.linalg.lu_factor``: ``(LU, pivots)``; a zero pivot raises (torch's message), as torch."""
    LU, pivots, info = _lu_checked("linalg.lu_factor", A, pivot)
    if bool((info > 0).any()):
        _raise_zero_pivot("linalg.lu_factor", info)
    return _with_out(LUFactor(_lu_factor_node(A, LU, pivots), _plain(pivots, A)), out, "linalg_lu_factor_ex")


def lu(A, *, pivot=True, out=None):
    """``torch.linalg.lu``: ``(P, L, U)`` with ``A = P L U``, L (m x k) unit lower, U (k x n) upper; a singular
    matrix is fine. L and U are differentiable (torch's linalg_lu_backward)."""
    LU, pivots, _ = _lu_checked("linalg.lu", A, pivot)
    P, L, U = _unpack_arrays(LU, pivots)

    def derivative(arrays, outputs, grads):
        return _lu_backward(outputs[0], outputs[1], outputs[2], grads[1], grads[2])
    result = LUResult(*_outputs("LinalgLuBackward0", (A,), (P, L, U), derivative, (False, True, True)))
    return _with_out(result, out, "linalg_lu")


def lu_unpack(LU_data, LU_pivots, unpack_data=True, unpack_pivots=True, *, out=None):
    """``torch.lu_unpack``: ``(P, L, U)`` from ``lu_factor``'s result (an empty tensor for what is not unpacked);
    L and U differentiate through LU_data (torch's lu_unpack_backward: their triangles)."""
    if LU_pivots.dtype != np.int32:
        raise RuntimeError("torch.lu_unpack: LU_pivots is expected to be a contiguous tensor of torch.int32 dtype. "
                           "Note: this function is intended to be used with the output produced by "
                           "torch.linalg.lu_factor")
    m, n = LU_data.shape[-2:]
    k = min(m, n)
    xp = xp_of(LU_data._array)
    empty = _plain(xp.zeros((0,), LU_data._array.dtype), LU_data)
    L = U = P = empty
    if unpack_data:
        eye = Tensor(xp.eye(m, k, dtype=LU_data._array.dtype), dtype=LU_data.dtype, device=LU_data.device)
        L = name_node(ops.add(ops.tril(LU_data[..., :, :k], -1), eye), "LuUnpackBackward0", LU_data)
        U = name_node(ops.triu(LU_data[..., :k, :]), "LuUnpackBackward0", LU_data)
        L, U = share_node((L, U))  # (torch's one node: L its output 0, U 1)
    if unpack_pivots:
        P = _plain(_permutation(LU_pivots._array, m, LU_data._array.dtype), LU_data)
    return _with_out(LUUnpack(P, L, U), out, "lu_unpack")


def lu_solve(LU, pivots, B, *, left=True, adjoint=False, out=None):
    """``torch.linalg.lu_solve``: X with ``A X = B`` from ``A``'s ``lu_factor`` (``A^T X = B`` if ``adjoint``,
    ``X A = B`` if not ``left``); batches broadcast. Differentiable in LU and B: triangular solves of the
    unpacked factors, whose chain rule is torch's linalg_lu_solve_LU."""
    _check("linalg.lu_solve", LU)
    _check_square(LU, "torch.linalg.lu_solve")
    if B.ndim < 2:
        raise RuntimeError("linalg.lu_solve: The input tensor B must have at least 2 dimensions.")
    if pivots.dtype != np.int32:
        raise RuntimeError("linalg.lu_solve: pivots should be a Tensor of scalar type torch.int32")
    n = LU.shape[-1]
    if (B.shape[-2] if left else B.shape[-1]) != n:
        equation, shape = "AX = B" if left else "XA = B", f"{B.shape[-2]}x{B.shape[-1]}"
        raise RuntimeError(f"linalg.lu_solve: Incompatible shapes of A and B for the equation {equation} ({n}x{n} "
                           f"and {shape})")
    if not left:  # X A = B  <=>  A^T X^T = B^T
        return _with_out(lu_solve(LU, pivots, B.mT, adjoint=not adjoint).mT, out, "linalg_lu_solve")
    P, L, U = lu_unpack(LU, pivots)
    if adjoint:  # A^T = U^T L^T P^T:  X = P L^-T U^-T B
        Y = solve_triangular(U.mT, B, upper=False)
        X = _relaid(ops.matmul(P, solve_triangular(L.mT, Y, upper=True, unitriangular=True)))
    else:  # X = U^-1 L^-1 P^T B
        Y = solve_triangular(L, ops.matmul(P.mT, B), upper=False, unitriangular=True)
        X = solve_triangular(U, Y, upper=True)
    return _with_out(name_node(X, "LinalgLuSolveBackward0", LU, B), out, "linalg_lu_solve")


# ---- LDL^T (Bunch-Kaufman) ---------------------------------------------------------------------------------
_BUNCH_KAUFMAN_ALPHA = (1 + math.sqrt(17)) / 8


def _ldl_one(a):
    """LAPACK's sytf2 on the lower triangle of one symmetric matrix (host arrays): (LD, pivots, info), pivots
    1-based, negative (twice) for a 2x2 block of D."""
    A = np.tril(np.array(a, dtype=a.dtype))
    n = A.shape[-1]
    pivots = np.zeros(n, np.int32)
    info, k = 0, 0
    while k < n:
        kstep, kp = 1, k
        absakk = abs(A[k, k])
        imax = k + 1 + int(np.argmax(np.abs(A[k + 1:, k]))) if k < n - 1 else k
        colmax = abs(A[imax, k]) if k < n - 1 else 0.0
        if max(absakk, colmax) == 0 or np.isnan(absakk):
            info = info or k + 1
        elif absakk < _BUNCH_KAUFMAN_ALPHA * colmax:
            row = np.abs(np.concatenate([A[imax, k:imax], A[imax + 1:, imax]]))  # row imax off the diagonal
            rowmax = row.max()
            if absakk >= _BUNCH_KAUFMAN_ALPHA * colmax * (colmax / rowmax):
                kp = k
            elif abs(A[imax, imax]) >= _BUNCH_KAUFMAN_ALPHA * rowmax:
                kp = imax
            else:
                kp, kstep = imax, 2
        kk = k + kstep - 1
        if kp != kk and not (max(absakk, colmax) == 0):  # swap rows and columns kk and kp of the trailing block
            A[kp + 1:, [kk, kp]] = A[kp + 1:, [kp, kk]]
            between = np.arange(kk + 1, kp)
            A[between, kk], A[kp, between] = A[kp, between].copy(), A[between, kk].copy()
            A[kk, kk], A[kp, kp] = A[kp, kp], A[kk, kk]
            if kstep == 2:
                A[k + 1, k], A[kp, k] = A[kp, k], A[k + 1, k]
        if max(absakk, colmax) != 0 and not np.isnan(absakk):
            if kstep == 1 and k < n - 1:
                column = A[k + 1:, k] / A[k, k]
                A[k + 1:, k + 1:] -= np.tril(np.outer(A[k + 1:, k], column))
                A[k + 1:, k] = column
            elif kstep == 2 and k < n - 2:
                d21 = A[k + 1, k]
                d11, d22 = A[k + 1, k + 1] / d21, A[k, k] / d21
                d21 = (1 / (d11 * d22 - 1)) / d21
                wk = d21 * (d11 * A[k + 2:, k] - A[k + 2:, k + 1])
                wkp1 = d21 * (d22 * A[k + 2:, k + 1] - A[k + 2:, k])
                A[k + 2:, k + 2:] -= np.tril(np.outer(A[k + 2:, k], wk) + np.outer(A[k + 2:, k + 1], wkp1))
                A[k + 2:, k], A[k + 2:, k + 1] = wk, wkp1
        pivots[k:k + kstep] = kp + 1 if kstep == 1 else -(kp + 1)
        k += kstep
    return A, pivots, info


def _ldl_solve_one(LD, pivots, B):
    """LAPACK's sytrs (lower): X with ``A X = B`` from sytf2's factorization (host arrays)."""
    B = np.array(B, dtype=np.result_type(LD.dtype, B.dtype))
    n = LD.shape[-1]
    k = 0
    while k < n:  # L D Y = P B
        if pivots[k] > 0:
            kp = pivots[k] - 1
            B[[k, kp]] = B[[kp, k]]
            B[k + 1:] -= np.outer(LD[k + 1:, k], B[k])
            B[k] /= LD[k, k]
            k += 1
        else:
            kp = -pivots[k] - 1
            B[[k + 1, kp]] = B[[kp, k + 1]]
            B[k + 2:] -= np.outer(LD[k + 2:, k], B[k]) + np.outer(LD[k + 2:, k + 1], B[k + 1])
            akm1k = LD[k + 1, k]
            akm1, ak = LD[k, k] / akm1k, LD[k + 1, k + 1] / akm1k
            denom = akm1 * ak - 1
            bkm1, bk = B[k] / akm1k, B[k + 1] / akm1k
            B[k], B[k + 1] = (ak * bkm1 - bk) / denom, (akm1 * bk - bkm1) / denom
            k += 2
    k = n - 1
    while k >= 0:  # L^T P^T X = Y
        B[k] -= LD[k + 1:, k] @ B[k + 1:]
        if pivots[k] > 0:
            kp = pivots[k] - 1
            k_next = k - 1
        else:
            B[k - 1] -= LD[k + 1:, k - 1] @ B[k + 1:]
            kp = -pivots[k] - 1
            k_next = k - 2
        B[[k, kp]] = B[[kp, k]]
        k = k_next
    return B


def _host(array):
    """A NumPy copy of a (NumPy or CuPy) array: the LDL loops run on the host (as torch's CPU kernel)."""
    return array.get() if hasattr(array, "get") else np.asarray(array)


def _not_differentiable(op):
    """The backward of an op torch has no derivative for: its error. The node is torch's ``NotImplemented``
    (``print(LD.grad_fn)``: ``<NotImplemented object at ...>``), which raises only when backward reaches it."""
    def derivative(arrays, outputs, grads):
        raise RuntimeError(f"derivative for aten::{op} is not implemented")
    derivative.torch_refuses = True  # (create_graph=True raises the same)
    return derivative


def ldl_factor_ex(A, *, hermitian=False, check_errors=False, out=None):
    """``torch.linalg.ldl_factor_ex``: ``(LD, pivots, info)``, LAPACK's Bunch-Kaufman ``A = P L D L^T P^T`` of a
    symmetric matrix (its lower triangle read): L's multipliers below LD's diagonal, D's 1x1 / 2x2 blocks on it,
    pivots 1-based (negative for a 2x2 block), info > 0 where D is singular. Not differentiable (torch's neither).
    ``hermitian`` changes nothing for real matrices."""
    LD, pivots, info = _ldl("linalg.ldl_factor_ex", A)
    if check_errors and bool((info._array > 0).any()):
        _raise_singular_ldl("linalg.ldl_factor_ex", info)
    return _with_out(LDLFactorEx(LD, pivots, info), out, "linalg_ldl_factor_ex")


def ldl_factor(A, *, hermitian=False, out=None):
    """``torch.linalg.ldl_factor``: ``(LD, pivots)``; a singular D raises LinAlgError (torch 2.13 raises an
    internal assert, 'Unknown error code')."""
    LD, pivots, info = _ldl("linalg.ldl_factor", A)
    if bool((info._array > 0).any()):
        _raise_singular_ldl("linalg.ldl_factor", info)
    return _with_out(LDLFactor(LD, pivots), out, "linalg_ldl_factor")


def _raise_singular_ldl(name, info):
    flat = _host(info._array).reshape(-1)
    first = int(np.flatnonzero(flat)[0])
    batch = f"(Batch element {first}): " if info.ndim else ""
    raise LinAlgError(f"torch.{name}: {batch}The factorization could not be completed because D's diagonal element "
                      f"{flat[first]} is zero: the matrix is singular")


def _ldl_arrays(a):
    """LAPACK's sytrf on each (host) matrix: (LD, pivots, info)."""
    n = a.shape[-1]
    flat = a.reshape((math.prod(a.shape[:-2]), n, n))
    LD, pivots, info = np.zeros(flat.shape, a.dtype), np.zeros(flat.shape[:-1], np.int32), np.zeros(len(flat), np.int32)
    for i, matrix in enumerate(flat):
        LD[i], pivots[i], info[i] = _ldl_one(matrix)
    return LD.reshape(a.shape), pivots.reshape(a.shape[:-1]), info.reshape(a.shape[:-2])


def _ldl(name, A):
    _check("torch.linalg.ldl_factor_ex", A, square=True)  # (torch names the _ex function for both)
    a = _host(A._array)
    if _meta(a):
        LD, (pivots, info) = _unwritten(a.shape, dtype=a.dtype), _unwritten(a.shape[:-1], a.shape[:-2], dtype=np.int32)
    else:
        LD, pivots, info = _ldl_arrays(a)
        xp = xp_of(A._array)
        LD, pivots, info = (xp.asarray(x) for x in (LD, pivots, info))
    LD_t, = _outputs("torch::autograd::NotImplemented", (A,), (LD,), _not_differentiable("linalg_ldl_factor_ex"),
                     column_major=(0,))
    return LD_t, _plain(pivots, A), _plain(info, A)


def ldl_solve(LD, pivots, B, *, hermitian=False, out=None):
    """``torch.linalg.ldl_solve``: X with ``A X = B`` from ``ldl_factor``'s ``(LD, pivots)`` (LAPACK's sytrs);
    batches broadcast. Not differentiable (torch's neither)."""
    if B.ndim < 2:
        raise IndexError("Dimension out of range (expected to be in range of [-1, 0], but got -2)")
    _check("torch.linalg.ldl_solve", LD, square=True)
    _check_rows("torch.linalg.ldl_solve", LD, B)
    _check_same_dtype(LD, B)
    n = LD.shape[-1]
    batch = tuple(np.broadcast_shapes(LD.shape[:-2], pivots.shape[:-1], B.shape[:-2]))
    if _meta(LD._array, B._array):
        x = _unwritten(batch + B.shape[-2:], dtype=B._array.dtype)
        result = _outputs("torch::autograd::NotImplemented", (LD, B), (x,), _not_differentiable("linalg_ldl_solve"),
                          column_major=(0,))[0]
        return _with_out(result, out, "linalg_ldl_solve")
    count = math.prod(batch)
    ld = np.broadcast_to(_host(LD._array), batch + (n, n)).reshape((count, n, n))
    piv = np.broadcast_to(_host(pivots._array), batch + (n,)).reshape((count, n))
    b = np.broadcast_to(_host(B._array), batch + B.shape[-2:]).reshape((count,) + B.shape[-2:])
    x = np.stack([_ldl_solve_one(ld[i], piv[i], b[i]) for i in range(len(b))]) if len(b) else b.copy()
    x = xp_of(B._array).asarray(x.reshape(batch + B.shape[-2:]))
    result, = _outputs("torch::autograd::NotImplemented", (LD, B), (x,), _not_differentiable("linalg_ldl_solve"),
                       column_major=(0,))
    return _with_out(result, out, "linalg_ldl_solve")


# ---- Cholesky solves -------------------------------------------------------------------------------------
def _cholesky_solve_arrays(b, L, upper):
    """``(L L^T)^-1 b`` (``(U^T U)^-1 b``), reading L's lower (U's upper) triangle only."""
    if upper:
        return _tri_solve(L, _tri_solve(_mT(L), b, upper=False), upper=True)
    return _tri_solve(_mT(L), _tri_solve(L, b, upper=False), upper=True)


def cholesky_solve(B, L, upper=False, *, out=None):
    """``torch.cholesky_solve``: X with ``A X = B`` for ``A = L L^T`` given its Cholesky factor L (upper: U with
    ``A = U^T U``); batches broadcast; torch's derivative (in L, the full matrix: not only its triangle)."""
    if B.ndim < 2:
        raise RuntimeError(f"b should have at least 2 dimensions, but has {B.ndim} dimensions instead")
    if L.ndim < 2:
        raise RuntimeError(f"u should have at least 2 dimensions, but has {L.ndim} dimensions instead")
    _check_dtype("cholesky_solve", B)
    _check_same_dtype(L, B)
    _check_square(L)
    _check_rows("cholesky_solve", L, B)
    x = _cholesky_solve_arrays(B._array, L._array, upper)

    def derivative(arrays, outputs, grads):  # torch's cholesky_solve_backward
        from .ops.elementwise import unbroadcast
        b, l = arrays
        X = outputs[0]
        gB = _cholesky_solve_arrays(grads[0], l, upper)
        common = gB @ _mT(X)
        common = common + _mT(common)
        gL = -(l @ common) if upper else -(common @ l)
        return unbroadcast(gB, b.shape), unbroadcast(gL, l.shape)
    derivative.upper = upper  # (what create_graph=True's formula reads)
    result = _outputs("CholeskySolveBackward0", (B, L), (x,), derivative, column_major=(0,))[0]
    return _with_out(result, out, "cholesky_solve")


def _refuse_zero_diagonal(L):
    xp = xp_of(L._array)
    n = L.shape[-1]
    zero = (L._array[..., xp.arange(n), xp.arange(n)] == 0).reshape(math.prod(L.shape[:-2]), n)
    if bool(zero.any()):
        first = int(xp.argmax(zero[xp.argmax(zero.any(1))])) + 1
        raise LinAlgError(f"cholesky_inverse: The diagonal element {first} is zero, the inversion could not be "
                          f"completed because the input matrix is singular.")


def cholesky_inverse(L, upper=False, *, out=None):
    """``torch.cholesky_inverse``: ``(L L^T)^-1`` from the Cholesky factor L (``(U^T U)^-1`` if ``upper``); a zero
    on L's diagonal raises LinAlgError, as torch."""
    _check("cholesky_inverse", L, square=True)
    xp = xp_of(L._array)
    n = L.shape[-1]
    if not L.is_meta:  # (meta: no values to check, as torch's meta kernel)
        _refuse_zero_diagonal(L)
    eye = xp.broadcast_to(xp.eye(n, dtype=L._array.dtype), L.shape)
    inverse = _cholesky_solve_arrays(eye, L._array, upper)

    def derivative(arrays, outputs, grads):  # torch's cholesky_inverse_backward
        l, inv_ = arrays[0], outputs[0]
        common = inv_ @ ((grads[0] + _mT(grads[0])) @ inv_)
        return -(l @ common) if upper else -(common @ l)
    derivative.upper = upper
    result = _outputs("CholeskyInverseBackward0", (L,), (inverse,), derivative, column_major=(0,))[0]
    return _with_out(result, out, "cholesky_inverse")


def triangular_solve(b, A, upper=True, transpose=False, unitriangular=False):
    """``torch.triangular_solve`` (deprecated in torch, with its warning): ``(solution, cloned_coefficient)``
    with ``A X = b`` (``A^T X = b`` if ``transpose``), A's ``upper`` / lower triangle read; batches broadcast."""
    _warn_deprecated("torch.triangular_solve", "torch.linalg.solve_triangular")
    if b.ndim < 2:
        raise RuntimeError(f"torch.triangular_solve: Expected b to have at least 2 dimensions, but it has {b.ndim} "
                           f"dimensions instead")
    if A.ndim < 2:
        raise RuntimeError(f"torch.triangular_solve: Expected A to have at least 2 dimensions, but it has {A.ndim} "
                           f"dimensions instead")
    _check_square(A)
    _check_rows("triangular_solve", A, b)
    X = solve_triangular(A.mT if transpose else A, b, upper=upper != transpose, unitriangular=unitriangular)
    batch = tuple(np.broadcast_shapes(A.shape[:-2], b.shape[:-2]))
    return TriangularSolve(*share_node((name_node(X, "TriangularSolveBackward0", b, A),  # (torch's one node)
                                        name_node(_relaid(ops.clone(A.expand(batch + A.shape[-2:]))),
                                                  "TriangularSolveBackward0", A))))


# ---- condition number, tensor inverse / solve ---------------------------------------------------------------
def cond(A, p=None, *, out=None):
    """``torch.linalg.cond``: ``sigma_max / sigma_min`` (p None or 2; -2 the inverse), or
    ``norm(A, p) * norm(A^-1, p)`` for 'fro', 'nuc', 1, -1, inf, -inf (square matrices; inf where A is
    singular), composed of differentiable ops as torch's."""
    if not isinstance(A, Tensor):
        raise TypeError(f"linalg_cond(): argument 'input' (position 1) must be Tensor, not {type(A).__name__}")
    if A.ndim < 2:
        raise RuntimeError("linalg.cond: The input tensor must have at least 2 dimensions.")
    if p is None or (not isinstance(p, str) and p in (2, -2)):
        S = svdvals(A)
        if S.shape[-1] == 0:
            return _with_out(ops.sum(S, -1), out, "linalg_cond")
        s_max, s_min = S[..., 0], S[..., -1]
        return _with_out(ops.div(s_min, s_max) if p == -2 else ops.div(s_max, s_min), out, "linalg_cond")
    if p not in ("fro", "nuc", 1, -1, math.inf, -math.inf) or isinstance(p, bool):
        raise RuntimeError(f"linalg.cond got an invalid norm type: {p}")
    label = p if isinstance(p, str) else ("inf" if p == math.inf else "-inf" if p == -math.inf else int(p))
    if not isinstance(p, str) and A.numel() == 0:  # (torch: 0 for an empty input, square or not)
        return _with_out(ops.sum(ops.sum(ops.abs(A), -1), -1), out, "linalg_cond")
    _check(f"linalg.cond(ord={label})", A, square=True)
    if A.numel() == 0:
        return _with_out(ops.sum(ops.sum(A, -1), -1), out, "linalg_cond")
    inverse, info = inv_ex(A)
    inverse = ops.where((info > 0).unsqueeze(-1).unsqueeze(-1), math.inf, inverse)
    result = ops.mul(matrix_norm(A, p), matrix_norm(inverse, p))
    return _with_out(ops.nan_to_num(result, math.inf, math.inf, -math.inf), out, "linalg_cond")


def tensorinv(A, ind=2, *, out=None):
    """``torch.linalg.tensorinv``: the tensor X with ``tensordot(X, A, ind) = I``, through ``inv`` of A seen as a
    prod(shape[:ind]) x prod(shape[ind:]) matrix."""
    if ind <= 0:
        raise RuntimeError(f"Expected a strictly positive integer for 'ind', but got {ind}")
    rows, cols = math.prod(A.shape[:ind]), math.prod(A.shape[ind:])
    if rows != cols:
        raise RuntimeError(f"Expected self to satisfy the requirement prod(self.shape[ind:]) == "
                           f"prod(self.shape[:ind]), but got {cols} != {rows}")
    result = inv(A.reshape(rows, cols)).reshape(tuple(A.shape[ind:]) + tuple(A.shape[:ind]))
    return _with_out(result, out, "linalg_tensorinv")


def tensorsolve(A, B, dims=None, *, out=None):
    """``torch.linalg.tensorsolve``: X with ``tensordot(A, X, X.ndim) = B``; ``dims``: A's dimensions moved to
    the end first."""
    if dims is not None:
        dims = _in_range(dims, A.ndim)  # (a modulo alone moved a dim out of range: torch's IndexError)
        A = ops.movedim(A, dims, list(range(A.ndim - len(dims), A.ndim)))
    rest = tuple(A.shape[B.ndim:])
    rows, cols = math.prod(A.shape[:B.ndim]), math.prod(rest)
    if rows != cols:
        raise RuntimeError(f"Expected self to satisfy the requirement prod(self.shape[other.ndim:]) == "
                           f"prod(self.shape[:other.ndim]), but got {cols} != {rows}")
    return _with_out(solve(A.reshape(rows, cols), B.reshape(rows)).reshape(rest), out, "linalg_tensorsolve")


# ---- Householder reflectors: geqrf, householder_product (orgqr), ormqr ---------------------------------------
def geqrf(input, *, out=None):
    """``torch.geqrf``: LAPACK's QR in reflector form ``(a, tau)``: R above a's diagonal, the Householder vectors
    below it (their leading 1 not stored); ``householder_product(a, tau)`` is Q. Not differentiable (torch's
    backward raises too)."""
    if input.ndim < 2:
        raise RuntimeError("torch.geqrf: input must have at least 2 dimensions.")
    _no_meta_kernel("geqrf", input)
    _check_dtype("geqrf", input)
    xp = xp_of(input._array)
    m, n = input.shape[-2:]
    if input.numel() == 0:
        dtype = input._array.dtype
        h, tau = xp.zeros(input.shape, dtype), xp.zeros(input.shape[:-2] + (min(m, n),), dtype)
    else:
        h, tau = xp.linalg.qr(input._array, mode="raw")  # (h is a's transpose: LAPACK's column-major storage)
        h = _mT(h)

    def derivative(arrays, outputs, grads):
        raise NotImplementedError("the derivative for 'geqrf' is not implemented.")
    result = Geqrf(*_outputs("GeqrfBackward0", (input,), (h, tau), derivative, column_major=(0,)))
    return _with_out(result, out, "geqrf")


def _reflectors(A, k):
    """The first ``k`` Householder vectors stored in A's columns below its diagonal (leading 1s)."""
    m, n = A.shape[-2:]
    eye = Tensor(xp_of(A._array).eye(m, n, dtype=A._array.dtype), dtype=A.dtype, device=A.device)
    return ops.add(ops.tril(A, -1), eye)[..., :, :k]


def _reflect(C, v, tau_i, left):
    """``H C`` (``C H`` if not left) for ``H = I - tau v v^T``."""
    if left:
        return ops.sub(C, ops.matmul(ops.mul(tau_i, v), ops.matmul(v.mT, C)))
    return ops.sub(C, ops.matmul(ops.matmul(C, v), ops.mul(tau_i, v.mT)))


class NoReflectors(Function):
    """The identity's first columns when there are no reflectors (tau empty): still a node of A and tau, as
    torch's, whose backward gives them no gradient (None: ``autograd.grad(..., allow_unused=True)``)."""

    @staticmethod
    def forward(ctx, Q, A, tau):
        return Q

    @staticmethod
    def backward(ctx, g):
        return None, None, None


def householder_product(A, tau, *, out=None):
    """``torch.linalg.householder_product`` (``torch.orgqr``): the first n columns of ``H_1 ... H_k``,
    ``H_i = I - tau_i v_i v_i^T`` with v_i in A's columns (geqrf's storage); differentiable (composed of
    products, so its chain rule is torch's householder_product_backward)."""
    name = "torch.linalg.householder_product"
    if A.ndim < 2:
        raise RuntimeError(f"{name}: input must have at least 2 dimensions.")
    m, n = A.shape[-2:]
    k = tau.shape[-1] if tau.ndim else 0
    if m < n:
        raise RuntimeError(f"{name}: input.shape[-2] must be greater than or equal to input.shape[-1]")
    if n < k:
        raise RuntimeError(f"{name}: input.shape[-1] must be greater than or equal to tau.shape[-1]")
    if tau.ndim != A.ndim - 1:
        raise RuntimeError(f"{name}: Expected tau to have one dimension less than input, but got tau.ndim equal to "
                           f"{tau.ndim} and input.ndim is equal to {A.ndim}")
    if tau.shape[:-1] != A.shape[:-2]:
        raise RuntimeError(f"{name}: Expected batch dimensions of tau to be equal to input.shape[:-2], but got "
                           f"{list(tau.shape[:-1])}")
    _check_dtype(name, A)
    if tau.dtype != A.dtype:
        raise RuntimeError(f"{name}: tau dtype {dtypes.torch_name(tau.dtype)} does not match input dtype "
                           f"{dtypes.torch_name(A.dtype)}")
    V = _reflectors(A, k)
    eye = xp_of(A._array).eye(m, n, dtype=A._array.dtype)
    Q = Tensor(xp_of(eye).broadcast_to(eye, A.shape).copy(), dtype=A.dtype, device=A.device)
    for i in reversed(range(k)):  # H_1 (H_2 (... (H_k I)))
        Q = _reflect(Q, V[..., :, i:i + 1], tau[..., i, None, None], left=True)
    if k == 0 and (A.requires_grad or tau.requires_grad):
        Q = NoReflectors.apply(Q, A, tau)
    result = name_node(_relaid(Q), "LinalgHouseholderProductBackward0", A, tau)
    return _with_out(result, out, "linalg_householder_product")


def ormqr(input, tau, other, left=True, transpose=False, *, out=None):
    """``torch.ormqr``: ``Q other`` (``other Q`` if not ``left``; Q^T if ``transpose``) for Q = H_1 ... H_k in
    geqrf's reflector form, without forming Q; differentiable (composed of products, as above)."""
    no_forward_formula("ormqr", input, tau, other)
    for label, t in (("input", input), ("other", other)):
        if t.ndim < 2:
            raise RuntimeError(f"torch.ormqr: {label} must have at least 2 dimensions.")
    if tau.ndim != input.ndim - 1:  # (one tau per matrix of the batch: a matrix of them is no reflector list)
        raise RuntimeError(f"torch.ormqr: Expected tau to have one dimension less than input, but got tau.ndim equal "
                           f"to {tau.ndim} and input.ndim is equal to {input.ndim}")
    if other.ndim != input.ndim:
        raise RuntimeError(f"torch.ormqr: Expected other to have the same number of dimensions as input, but got "
                           f"other.ndim equal to {other.ndim} and input.ndim is equal to {input.ndim}")
    k = tau.shape[-1]
    side = -2 if left else -1
    if other.shape[side] != input.shape[-2]:
        raise RuntimeError(f"torch.ormqr: other.shape[{side}] must be equal to input.shape[-2]")
    if k != min(other.shape[side], input.shape[-1]):
        raise RuntimeError(f"torch.ormqr: tau.shape[-1] must be equal to min(other.shape[{side}], input.shape[-1])")
    if input.dtype.kind not in "fc":
        raise NotImplementedError(f"\"ormqr_cpu\" not implemented for '{dtypes.torch_name(input.dtype)}'")
    _check_dtype("torch.ormqr", input)  # (complex: Q's reflectors would need conjugates; refused as elsewhere)
    for label, t in (("tau", tau), ("other", other)):
        if t.dtype != input.dtype:
            raise RuntimeError(f"torch.ormqr: Expected input and {label} to have the same dtype, but input has dtype"
                               f"{dtypes.torch_name(input.dtype)} and {label} has dtype {dtypes.torch_name(t.dtype)}")
    V = _reflectors(input, k)
    order = range(k) if left == transpose else reversed(range(k))  # Q C = H_1 (... (H_k C)): the last first
    C = other
    for i in order:
        C = _reflect(C, V[..., :, i:i + 1], tau[..., i, None, None], left)
    C = ops.clone(other) if C is other else C  # (k == 0: torch's result is a copy, not other)
    return _with_out(name_node(_relaid(C), "OrmqrBackward0", input, tau, other), out, "ormqr")


# ---- pseudo-inverse, rank, least squares ----------------------------------------------------------
def _tolerances(S_max, shape, dtype, atol, rtol, xp):
    """torch's threshold ``max(atol, rtol * sigma_max)``: rtol defaults to eps * max(m, n) when neither is
    given, to 0 when only atol is."""
    as_array = lambda v: v._array if isinstance(v, Tensor) else v  # noqa: E731
    atol, rtol = as_array(atol), as_array(rtol)
    if rtol is None:
        rtol = np.finfo(dtype).eps * max(shape[-2:]) if atol is None or (np.ndim(atol) == 0 and atol == 0) else 0.0
    atol = 0.0 if atol is None else atol
    return xp.maximum(xp.asarray(atol, dtype=dtype), xp.asarray(rtol, dtype=dtype) * S_max)


def _largest(S):
    """The largest value of each row of ``S`` (0 for an empty row), kept as a column: ``max(initial=0)``,
    which CuPy's ``max`` does not take."""
    if S.shape[-1] == 0:
        return xp_of(S).zeros(S.shape[:-1] + (1,), S.dtype)
    return S.max(-1)[..., None]


def _pinv_derivative(arrays, outputs, grads):
    """torch's ``pinv_backward``."""
    A, pinvA, grad = arrays[0], outputs[0], grads[0]
    m, n = A.shape[-2:]
    pinvAh, gradh = _mT(pinvA), _mT(grad)
    if m <= n:
        K = gradh @ pinvA
        KpinvAh = K @ pinvAh
        return -_mT(pinvA @ K) + KpinvAh - (A @ pinvA) @ KpinvAh + (pinvAh @ pinvA) @ (gradh - K @ A)
    K = pinvA @ gradh
    pinvAhK = pinvAh @ K
    return -_mT(K @ pinvA) + (gradh - A @ K) @ pinvA @ pinvAh + pinvAhK - pinvAhK @ pinvA @ A


def pinv(A, rcond=None, hermitian=False, *, atol=None, rtol=None, out=None):
    """``torch.linalg.pinv``: the Moore-Penrose inverse from the SVD (eigh if ``hermitian``), singular values
    at or below ``max(atol, rtol * sigma_max)`` dropped; ``rcond`` is torch's older name for rtol."""
    if not isinstance(A, Tensor) or not dtypes.is_floating(A.dtype) or A.ndim < 2 or A.dtype.itemsize == 2:
        if isinstance(A, Tensor) and A.dtype.kind == "c":
            _check_dtype("linalg.pinv", A)
        raise RuntimeError(f"linalg.pinv({dtypes.torch_name(A.dtype)}{{{list(A.shape)}}}): expected a tensor with 2 "
                           f"or more dimensions of float, double, cfloat or cdouble types")
    if rcond is not None:
        rtol = rcond
    a = A._array
    xp = xp_of(a)
    if _meta(a):
        p = _unwritten(a.shape[:-2] + a.shape[-2:][::-1], dtype=a.dtype)
    elif _eigh_applies(A, hermitian):
        L, V = xp.linalg.eigh(a)
        absL = xp.abs(L)
        tol = _tolerances(_largest(absL), A.shape, a.dtype, atol, rtol, xp)
        keep = absL > tol
        inv_L = xp.where(keep, 1 / xp.where(keep, L, 1), 0).astype(a.dtype)
        p = (V * inv_L[..., None, :]) @ _mT(V)
    else:
        U, S, Vh = _svd_arrays(a, False)
        tol = _tolerances(_largest(S), A.shape, a.dtype, atol, rtol, xp)
        keep = S > tol
        inv_S = xp.where(keep, 1 / xp.where(keep, S, 1), 0).astype(a.dtype)
        p = (_mT(Vh) * inv_S[..., None, :]) @ _mT(U)
    p = p if p.dtype == a.dtype else p.astype(a.dtype)
    return _with_out(_outputs("LinalgPinvBackward0", (A,), (p,), _pinv_derivative)[0], out, "linalg_pinv")


def _eigh_applies(A, hermitian):
    """``hermitian=True`` goes through eigh, which wants square matrices (torch's error), except an empty input,
    which torch answers as the SVD path does."""
    if not hermitian or A.numel() == 0:
        return False
    _check_square(A, "linalg.eigh")
    return True


def matrix_rank(A, tol=None, hermitian=False, *, atol=None, rtol=None, out=None):
    """``torch.linalg.matrix_rank``: how many singular values (|eigenvalues| if ``hermitian``) exceed
    ``max(atol, rtol * sigma_max)`` (int64); ``tol`` is torch's older name for atol (rtol then 0)."""
    if not isinstance(A, Tensor) or A.dtype.kind not in "f":
        if isinstance(A, Tensor) and A.dtype.kind == "c":
            _check_dtype("linalg.matrix_rank", A)
        raise RuntimeError("This function doesn't handle types other than float and double")
    if A.ndim < 2:
        raise RuntimeError("torch.linalg.matrix_rank: The input tensor input must have at least 2 dimensions.")
    if tol is not None:
        atol, rtol = tol, 0.0
    a = A._array
    xp = xp_of(a)
    if _eigh_applies(A, hermitian):
        S = xp.abs(_eigh_arrays(a, "L")[0])
    else:
        S = _svd_arrays(a, False)[1]
    tol_ = _tolerances(_largest(S), A.shape, a.dtype, atol, rtol, xp)
    return _with_out(_plain((S > tol_).sum(-1).astype(np.int64), A), out, "linalg_matrix_rank")


def lstsq(A, B, rcond=None, *, driver=None, out=None):
    """``torch.linalg.lstsq``: ``(solution, residuals, rank, singular_values)`` minimizing ``|A X - B|``.
    On the CPU torch's default driver is ``'gelsy'``: rank computed, singular_values empty; residuals
    (squared, per column) only where m > n, every matrix full rank and the driver is not ``'gelsy'``.
    The solution is ``pinv(A) @ B`` (torch's derivative: the pseudo-inverse's)."""
    for name, t in (("A", A), ("B", B)):
        if not isinstance(t, Tensor):
            raise TypeError(f"linalg_lstsq(): argument '{name.lower() if name == 'B' else 'self'}' must be Tensor, "
                            f"not {type(t).__name__}")
        if t.dtype.kind not in "f":
            if t.dtype.kind == "c":
                _check_dtype("linalg.lstsq", t)
            raise RuntimeError("This function doesn't handle types other than float and double")
    _no_meta_kernel("linalg_lstsq.out", A, B)  # (torch has none: its solution's rank is the values')
    if A.ndim < 2:
        raise RuntimeError("torch.linalg.lstsq: input must have at least 2 dimensions.")
    driver = "gelsy" if driver is None else driver
    if driver not in ("gels", "gelsy", "gelsd", "gelss"):
        raise RuntimeError(f"parameter `driver` should be one of (gels, gelsy, gelsd, gelss); got {driver}")
    vector = B.ndim == A.ndim - 1
    if A.shape[-2] != (B.shape[-1] if vector else B.shape[-2]):
        raise RuntimeError("torch.linalg.lstsq: input.size(-2) should match other.size(-2)")
    a = A._array
    xp = xp_of(a)
    m, n = A.shape[-2:]
    X = ops.matmul(pinv(A, rtol=rcond) if rcond is not None else pinv(A), B.unsqueeze(-1) if vector else B)
    X = _relaid(X, rows=max(m, n))  # (torch's solution: the top n rows of LAPACK's max(m, n)-row buffer)
    if vector:
        X = X.squeeze(-1)
    S = _svd_arrays(a, False)[1]
    tol = _tolerances(_largest(S), A.shape, a.dtype, None, rcond, xp)
    rank = (S > tol).sum(-1).astype(np.int64)
    empty = lambda dtype: xp.zeros((0,), dtype)  # noqa: E731
    residuals = empty(a.dtype)
    if m > n and driver != "gelsy" and bool((rank == n).all()):
        with_vectors = B.unsqueeze(-1) if vector else B
        residuals = ((ops.matmul(A, X.unsqueeze(-1) if vector else X) - with_vectors) ** 2).sum(-2)
        residuals = residuals.squeeze(-1) if vector else residuals
    if not isinstance(residuals, Tensor):  # (empty, but an output of torch's node all the same: in the graph)
        residuals = X.reshape(-1)[:0]
    X, residuals = share_node(tuple(name_node(t, "LinalgLstsqBackward0", A, B, graph=(A, B))
                                    for t in (X, residuals)))  # torch's one node, its outputs 0 and 1
    rank_t = _plain(rank, A) if driver != "gels" else _plain(empty(np.int64), A)
    svals = _plain(S, A) if driver in ("gelsd", "gelss") else _plain(empty(a.dtype), A)
    return _with_out(Lstsq(X, residuals, rank_t, svals), out, "linalg_lstsq")


# ---- norms ---------------------------------------------------------------------------------------
class VectorNorm(Function):
    """``linalg.vector_norm`` with torch's ``norm_backward``: p=2 ``g * (x / |x|)`` (0 at |x| = 0), p=inf the
    gradient shared among the maxima, p=0 none (``ops.reduce.norm_backward``, as torch.norm's). float16/bfloat16: the
    norm computed in float32 and rounded once, as torch's kernel; the backward's ops on the 16-bit input and norm,
    each rounded, as torch's autograd formula runs them (from the float32 norm, rounded once at the end, ~1 in 3
    gradients were a step off)."""

    @staticmethod
    def forward(ctx, x16, *, ord, dims, keepdim, number_along_dim=False):
        xp = xp_of(x16)
        x = x16.astype(np.float32) if x16.dtype.itemsize == 2 else x16
        a = xp.abs(x)
        if x.size == 0 and (dims is None or any(x.shape[d] == 0 for d in dims)):  # (the empty sum: 0)
            out = xp.zeros(_reduced_shape(x.shape, dims, keepdim), x.dtype)
        elif ord == math.inf:
            out = a.max(axis=dims, keepdims=keepdim)
        elif ord == -math.inf:
            out = a.min(axis=dims, keepdims=keepdim)
        elif ord == 0:
            out = (a != 0).sum(axis=dims, keepdims=keepdim).astype(x.dtype)
        elif number_along_dim:  # (a 0-d x given dim=0: torch's kernel runs, not |x|)
            out = ops.reduce.number_norm_along_its_dim(x, ord)
        else:  # (torch's norm kernel, as torch.norm's: its order of additions)
            axes = tuple(range(x.ndim)) if dims is None else tuple(sorted(d % x.ndim for d in dims))
            with np.errstate(divide="ignore"):
                out = ops.reduce.p_norm(x, ord, axes)
            if not keepdim:
                out = out.squeeze(axis=axes)
        out = out.astype(x16.dtype)
        ctx.x, ctx.out, ctx.ord, ctx.dims, ctx.keepdim = x16, out, ord, dims, keepdim
        return out

    @staticmethod
    def backward(ctx, grad):
        x, norm, p, dims = ctx.x, ctx.out, ctx.ord, ctx.dims
        xp = xp_of(x)
        if not ctx.keepdim:
            axes = tuple(sorted(d % x.ndim for d in dims)) if dims is not None else tuple(range(x.ndim))
            grad, norm = xp.expand_dims(grad, axes), xp.expand_dims(norm, axes)
        with np.errstate(all="ignore"):
            if p == 0:  # (torch's norm_backward: no gradient at all; x.grad stays None, as torch's)
                return None
            if p == 1 or math.isinf(p):  # (torch's sgn: 0 at NaN, where NumPy's sign is NaN; a zero of the
                return ops.reduce.vector_norm_backward(x, norm, p, grad, dims)  # others keeps grad's sign)
            return ops.reduce.norm_backward(x, norm, p, grad).astype(x.dtype, copy=False)  # (torch.norm's too)


def _refuse_empty_norm(x, ord, dims):
    """torch's error for a norm without an identity (negative or inf order) over an empty set."""
    order = ord if math.isinf(ord) or ord != int(ord) else int(ord)  # (torch prints -1, -1.5, inf)
    if dims is None:
        raise RuntimeError(f"linalg.vector_norm cannot compute the {order} norm on an empty tensor because the "
                           f"operation does not have an identity")
    empty = [d for d in dims if x.shape[d] == 0]
    if empty:  # (torch's message has no space before "because")
        raise RuntimeError(f"linalg.vector_norm cannot compute the {order} norm on the dimension {empty[0]}because "
                           f"this dimension is empty and the operation does not have an identity")


def _norm_dtype(name, x, dtype, *, inside=False):
    """torch's ``dtype=`` of the norms: a floating dtype the input converts to without narrowing. ``inside``:
    torch's kernel converts (vector_norm: no node of torch's graph), else torch's op calls ``.to`` first."""
    if dtype is None:
        return x
    dtype = dtypes.to_dtype(dtype)
    if not dtypes.is_floating(dtype):
        raise RuntimeError(f"{name}: dtype should be floating point or complex, but got {dtypes.torch_name(dtype)}")
    if dtypes.promote_types(x.dtype, dtype) != dtype:
        raise RuntimeError(f"{name}: the dtype of the input ({dtypes.torch_name(x.dtype)}) should be convertible "
                           f"without narrowing to the specified dtype ({dtypes.torch_name(dtype)})")
    return ops.elementwise.promotion_cast(x, dtype) if inside and x.dtype != dtype else x.to(dtype)


def _in_range(dims, rank):
    """``dims`` wrapped to [0, rank), or torch's IndexError for one outside [-rank, rank)."""
    for d in dims:
        if not -rank <= d < rank:
            raise IndexError(f"Dimension out of range (expected to be in range of [{-rank}, {rank - 1}], but got {d})")
    return [d % rank for d in dims]


def _norm_dims(x, dims):
    """The reduced dimensions, wrapped (None: all); a 0-d tensor takes dim 0 / -1, as torch; repeats refused."""
    if dims is None or len(dims) == 0:
        return None  # (torch: dim=() reduces all)
    rank = max(x.ndim, 1)
    wrapped = _in_range(dims, rank)
    for d in wrapped:
        if wrapped.count(d) > 1:
            raise RuntimeError(f"dim {d} appears multiple times in the list of dims")
    return None if x.ndim == 0 else tuple(wrapped)


def _reduced_shape(shape, dims, keepdim):
    axes = set(range(len(shape))) if dims is None else {d % len(shape) for d in dims}
    return tuple(1 if i in axes else s for i, s in enumerate(shape) if keepdim or i not in axes)


def _as_dims(dim):
    return None if dim is None else (dim,) if isinstance(dim, int) else tuple(dim)


@_amp.autocasts
def vector_norm(x, ord=2, dim=None, keepdim=False, *, dtype=None, out=None):
    """``torch.linalg.vector_norm``: ``sum(|x|^ord)^(1/ord)`` over ``dim`` (all if None; inf, -inf, 0 too)."""
    dtype = None if dtype is None else dtypes.dtype_argument("linalg_vector_norm", dtype)
    if not isinstance(x, Tensor):
        raise TypeError(f"linalg_vector_norm(): argument 'input' (position 1) must be Tensor, not {type(x).__name__}")
    if isinstance(ord, (str, bool)) or not isinstance(ord, (int, float)):
        raise TypeError(f"linalg_vector_norm(): argument 'ord' (position 2) must be Number, not {type(ord).__name__}")
    if x.dtype.kind == "c" and dtype is None:  # a complex vector's norm is its magnitudes' (real, as torch's)
        x = x.abs()
    _check_dtype("linalg.vector_norm", x, low_precision=True)
    x = _norm_dtype("linalg.vector_norm", x, dtype, inside=True)
    ord = float(ord)
    dims = _norm_dims(x, _as_dims(dim))
    along = x.ndim == 0 and bool(_as_dims(dim))  # (torch.linalg.vector_norm(tensor(3.), 3, dim=0))
    if x.numel() == 0 and (ord < 0 or ord == math.inf):
        _refuse_empty_norm(x, ord, dims)
    result = VectorNorm.apply(x, ord=ord, dims=dims, keepdim=keepdim, number_along_dim=along)
    return _with_out(name_node(result, "LinalgVectorNormBackward0", x), out, "linalg_vector_norm")


@_amp.autocasts
def matrix_norm(A, ord="fro", dim=(-2, -1), keepdim=False, *, dtype=None, out=None):
    """``torch.linalg.matrix_norm``: 'fro', 'nuc', inf, -inf, 1, -1, 2, -2 over the two ``dim``."""
    dtype = None if dtype is None else dtypes.dtype_argument("linalg_matrix_norm", dtype)
    if not isinstance(A, Tensor):
        raise TypeError(f"linalg_matrix_norm(): argument 'input' (position 1) must be Tensor, not {type(A).__name__}")
    _check_dtype("linalg.matrix_norm", A, low_precision=True)
    if A.ndim < 2:
        raise RuntimeError("linalg.matrix_norm: The input tensor A must have at least 2 dimensions.")
    # (torch's 'fro', 1 and inf pass dtype= to vector_norm, whose kernel converts; 'nuc' and 2 call A.to(dtype))
    A = _norm_dtype("linalg.matrix_norm", A, dtype, inside=ord not in ("nuc", 2, -2))
    dim = tuple(dim)
    if len(dim) != 2:
        raise RuntimeError(f"linalg.matrix_norm: dim must be a 2-tuple. Got {' '.join(map(str, dim))}")
    d0, d1 = _in_range(dim, A.ndim)  # (a modulo alone took dim=(0, 4) of a 3-d A as (0, 1))
    if d0 == d1:
        raise RuntimeError(f"linalg.matrix_norm: dims must be different. Got ({d0}, {d1})")
    if isinstance(ord, str):
        if ord not in ("fro", "nuc"):
            raise RuntimeError(f"linalg.matrix_norm: Order {ord} not supported.")
        if ord == "fro":
            return _with_out(vector_norm(A, 2, (d0, d1), keepdim), out, "linalg_matrix_norm")
        _check_dtype("linalg.matrix_norm", A)  # (the singular values: no 16-bit SVD, as torch)
        return _with_out(_singular_norm(A, d0, d1, keepdim, ops.sum), out, "linalg_matrix_norm")
    if ord not in (1, -1, 2, -2, math.inf, -math.inf):
        raise RuntimeError(f"linalg.matrix_norm: Order {ord} not supported.")
    if abs(ord) == 2:
        _check_dtype("linalg.matrix_norm", A)
        result = _singular_norm(A, d0, d1, keepdim, ops.amax if ord > 0 else ops.amin)
        return _with_out(result, out, "linalg_matrix_norm")
    # 1: the largest column sum of |A|; inf: the largest row sum (torch's amax(sum(abs(A), d0), d1))
    if A.numel() == 0 and ord > 0:  # (torch: 0 for an empty matrix, where amax over an empty dim would refuse)
        return _with_out(vector_norm(A, 1, (d0, d1), keepdim), out, "linalg_matrix_norm")
    summed, over = (d0, d1) if abs(ord) == 1 else (d1, d0)
    if not keepdim and summed < over:  # (torch's order: the first reduction removed a dim before ``over``)
        over -= 1
    sums = vector_norm(A, 1, summed, keepdim=keepdim)
    return _with_out((ops.amax if ord > 0 else ops.amin)(sums, over, keepdim=keepdim), out, "linalg_matrix_norm")


def _singular_norm(A, d0, d1, keepdim, reduce):
    """'nuc' (sum) and 2/-2 (amax/amin) of the singular values of the matrices spanning d0, d1."""
    moved = ops.movedim(A, (d0, d1), (-2, -1))
    S = svdvals(moved)
    # no singular values (an empty matrix): torch's 2-norm is 0 (its -2 norm: amin's error)
    result = ops.sum(S, -1) if S.shape[-1] == 0 and reduce is ops.amax else reduce(S, -1)
    if keepdim:
        for d in sorted((d0, d1)):
            result = result.unsqueeze(d)
    return result


def norm(A, ord=None, dim=None, keepdim=False, *, dtype=None, out=None):
    """``torch.linalg.norm``: a vector norm or a matrix norm, chosen as torch does (a string ord or two
    dims: matrix; one dim: vector; neither ord nor dim: the 2-norm of the flattened tensor)."""
    dtype = None if dtype is None else dtypes.dtype_argument("linalg_norm", dtype)
    if not isinstance(A, Tensor):
        raise TypeError(f"linalg_norm(): argument 'input' (position 1) must be Tensor, not {type(A).__name__}")
    dims = _as_dims(dim)
    if dims is not None and len(dims) not in (1, 2):
        raise RuntimeError(f"linalg.norm: If dim is specified, it must be of length 1 or 2. Got {list(dims)}")
    if dims is None and ord is not None:
        if A.ndim not in (1, 2):
            raise RuntimeError(f"linalg.norm: If dim is not specified but ord is, the input must be 1D or 2D. "
                               f"Got {A.ndim}D.")
        dims = tuple(range(A.ndim))
    if isinstance(ord, str) or (dims is not None and len(dims) == 2):
        return matrix_norm(A, "fro" if ord is None else ord, (-2, -1) if dims is None else dims, keepdim,
                           dtype=dtype, out=out)
    return vector_norm(A, 2 if ord is None else ord, dims, keepdim, dtype=dtype, out=out)


# ---- products and small helpers --------------------------------------------------------------------
def matrix_power(A, n, *, out=None):
    """``torch.linalg.matrix_power``: A multiplied by itself ``n`` times (by squaring, as torch), the
    inverse's power for n < 0, the identity for n = 0."""
    _check_square_any_dtype("linalg.matrix_power", A)
    if not isinstance(n, int):
        raise TypeError(f"linalg_matrix_power(): argument 'n' (position 2) must be int, not {type(n).__name__}")
    if n == 0:  # the identity, still a function of A: torch copies I into A's contiguous clone (a zero gradient)
        eye = Tensor(xp_of(A._array).eye(A.shape[-1], dtype=A._array.dtype), dtype=A.dtype, device=A.device)
        result = ops.clone(A, memory_format=contiguous_format).copy_(eye.expand(A.shape))
        return _with_out(result, out, "linalg_matrix_power")
    if n < 0:
        A, n = inv(A), -n
    if n == 1:
        return _with_out(A.clone(), out, "linalg_matrix_power")
    result, power = None, A
    while n:  # torch's binary decomposition: z = z @ a^(2^i) for the set bits
        if n & 1:
            result = power if result is None else ops.matmul(result, power)
        n >>= 1
        if n:
            power = ops.matmul(power, power)
    return _with_out(result, out, "linalg_matrix_power")


def _check_square_any_dtype(name, A):
    if not isinstance(A, Tensor):
        raise TypeError(f"{name}(): argument 'A' (position 1) must be Tensor, not {type(A).__name__}")
    if A.ndim < 2:
        raise RuntimeError(f"{name}: The input tensor A must have at least 2 dimensions.")
    _check_square(A, name)


def _expm(a):
    """exp(a) by scaling and squaring with a degree-13 Pade approximant (Higham 2005, as torch's CPU
    kernel for large norms): accurate to the dtype's precision."""
    xp = xp_of(a)
    if a.size == 0:
        return a.copy()
    if _meta(a):
        return _unwritten(a.shape, dtype=a.dtype)
    b = (64764752532480000., 32382376266240000., 7771770303897600., 1187353796428800., 129060195264000.,
         10559470521600., 670442572800., 33522128640., 1323241920., 40840800., 960960., 16380., 182., 1.)
    norm1 = xp.abs(a).sum(-2).max(-1) if a.size else xp.zeros(a.shape[:-2])
    s = xp.maximum(0, xp.ceil(xp.log2(xp.maximum(norm1, 1e-300) / 5.371920351148152))).astype(np.int64)
    s = xp.where(norm1 == 0, 0, s)
    work = a.astype(np.float64) / (2.0 ** s)[..., None, None]
    n = a.shape[-1]
    eye = xp.broadcast_to(xp.eye(n), work.shape)
    A2 = work @ work
    A4 = A2 @ A2
    A6 = A4 @ A2
    U = work @ (A6 @ (b[13] * A6 + b[11] * A4 + b[9] * A2) + b[7] * A6 + b[5] * A4 + b[3] * A2 + b[1] * eye)
    V = A6 @ (b[12] * A6 + b[10] * A4 + b[8] * A2) + b[6] * A6 + b[4] * A4 + b[2] * A2 + b[0] * eye
    R = xp.linalg.solve(V - U, V + U)
    flat_R, flat_s = R.reshape((-1, n, n)), s.reshape(-1)
    for i in range(flat_R.shape[0]):
        for _ in range(int(flat_s[i])):
            flat_R[i] = flat_R[i] @ flat_R[i]
    return flat_R.reshape(a.shape).astype(a.dtype)


def _matrix_exp_derivative(arrays, outputs, grads):
    """torch's ``matrix_exp_backward``: the upper-right block of exp([[A^T, G], [0, A^T]])."""
    xp = xp_of(arrays[0])
    a, g = arrays[0], grads[0]
    n = a.shape[-1]
    big = xp.zeros(a.shape[:-2] + (2 * n, 2 * n), a.dtype)
    big[..., :n, :n] = _mT(a)
    big[..., n:, n:] = _mT(a)
    big[..., :n, n:] = g
    return _expm(big)[..., :n, n:]


def matrix_exp(A):
    """``torch.linalg.matrix_exp`` (``torch.matrix_exp``, ``x.matrix_exp()``)."""
    _check("linalg.matrix_exp", A, square=True)
    return _outputs("LinalgMatrixExpBackward0", (A,), (_expm(A._array),), _matrix_exp_derivative)[0]


def cross(input, other, *, dim=-1, out=None):
    """``torch.linalg.cross``: the cross product along ``dim`` (default the last), inputs broadcast."""
    if input.ndim != other.ndim:  # (torch checks this first)
        raise RuntimeError("linalg.cross: inputs must have the same number of dimensions.")
    if input.ndim == 0:  # (torch wraps dim with no scalar allowance)
        raise IndexError(f"Dimension specified as {dim} but tensor has no dimensions")
    ops.shape._dims((dim,), input.ndim)  # (torch's IndexError for a dim out of range)
    for t in (input, other):
        if t.ndim == 0 or t.shape[dim] != 3:
            raise RuntimeError(f"linalg.cross: inputs dimension {dim} must have length 3. Got "
                               f"{input.shape[dim] if input.ndim else 0} and {other.shape[dim] if other.ndim else 0}")
    return ops.cross(input, other, dim, out=out)  # (which broadcasts them: torch's node is of the inputs; its out=
    # refuses an out sharing the inputs' memory)


@_amp.autocasts
def multi_dot(tensors, *, out=None):
    """``torch.linalg.multi_dot``: the chain product, the first tensor may be a row vector and the last a
    column vector (1-D), multiplied in the cheapest order (torch's dynamic programme)."""
    if isinstance(tensors, Tensor):  # (a Tensor iterates over its rows: torch's parser refuses it)
        raise TypeError("linalg_multi_dot(): argument 'tensors' (position 1) must be tuple of Tensors, not Tensor")
    tensors = list(tensors)
    if len(tensors) < 2:
        raise RuntimeError(f"multi_dot(): expected at least 2 tensors but got {len(tensors)}")
    first, last = tensors[0], tensors[-1]
    if first.ndim not in (1, 2):
        raise RuntimeError(f"multi_dot(): the first tensor must be 1D or 2D but got {first.ndim}D")
    if last.ndim not in (1, 2):
        raise RuntimeError(f"multi_dot(): the last tensor must be 1D or 2D but got {last.ndim}D")
    for i, t in enumerate(tensors[1:-1], 1):
        if t.ndim != 2:
            raise RuntimeError(f"multi_dot(): tensor {i} must be 2D but got {t.ndim}D")
    mats = [first.unsqueeze(0) if first.ndim == 1 else first] + tensors[1:-1] + \
           [last.unsqueeze(1) if last.ndim == 1 else last]
    for i in range(len(mats) - 1):
        if mats[i].shape[1] != mats[i + 1].shape[0]:
            raise RuntimeError(f"multi_dot(): tensors {i} and {i + 1} with shapes {tuple(tensors[i].shape)} and "
                               f"{tuple(tensors[i + 1].shape)} cannot be multiplied")
    result = _chain(mats, _chain_order(mats), 0, len(mats) - 1)
    if first.ndim == 1:
        result = result.squeeze(0)
    if last.ndim == 1:
        result = result.squeeze(-1)
    return _with_out(result, out, "linalg_multi_dot")


def _chain_order(mats):
    """The classic matrix-chain dynamic programme: split[i][j], where the product i..j splits."""
    dims = [m.shape[0] for m in mats] + [mats[-1].shape[1]]
    n = len(mats)
    cost = [[0] * n for _ in range(n)]
    split = [[0] * n for _ in range(n)]
    for length in range(1, n):
        for i in range(n - length):
            j = i + length
            cost[i][j] = math.inf
            for k in range(i, j):
                c = cost[i][k] + cost[k + 1][j] + dims[i] * dims[k + 1] * dims[j + 1]
                if c < cost[i][j]:
                    cost[i][j], split[i][j] = c, k
    return split


def _chain(mats, split, i, j):
    if i == j:
        return mats[i]
    k = split[i][j]
    return ops.mm(_chain(mats, split, i, k), _chain(mats, split, k + 1, j))


def diagonal(A, *, offset=0, dim1=-2, dim2=-1):
    """``torch.linalg.diagonal``: ``torch.diagonal`` with the last two dimensions as default."""
    return ops.diagonal(A, offset, dim1, dim2)


@_amp.autocasts
def vecdot(x, y, *, dim=-1, out=None):
    """``torch.linalg.vecdot``: the dot product along ``dim`` (x conjugated where complex), other dimensions
    broadcast; floating or complex inputs of one dtype, as torch."""
    if not (dtypes.is_floating(x.dtype) or x.dtype.kind == "c"):
        raise RuntimeError(f"linalg.vecdot: Expected a floating point or complex tensor as input. Got "
                           f"{dtypes.torch_name(x.dtype)}")
    if x.dtype != y.dtype:
        raise RuntimeError(f"linalg.vecdot: Expected x and y to have the same dtype, but found x of type "
                           f"{dtypes.torch_name(x.dtype)} and y of type {dtypes.torch_name(y.dtype)} instead")
    if x.dtype.kind == "c":
        x = x.conj()
    return _with_out(ops.sum(ops.mul(x, y), dim), out, "linalg_vecdot")


def vander(x, *, N=None):
    """``torch.linalg.vander``: columns x^0, x^1, ..., x^(N-1) along a new last dimension (increasing powers,
    unlike ``torch.vander``), as torch's running products; integers as int64 (bools refused, as torch)."""
    if x.dtype == np.bool_:
        raise RuntimeError("linalg.vander supports floating point, complex, and integer tensors, but got Bool")
    x = x.reshape(1) if x.ndim == 0 else x  # (a number is one point: a 1 x N result, as torch's)
    N = x.shape[-1] if N is None else N
    if N <= 1:
        raise RuntimeError("N must be greater than 1.")
    if x.dtype.kind in "iu":
        x = x.to(dtypes.int64)
    return ops.extra.running_powers(x, N)


matmul = ops.matmul  # (torch.linalg.matmul: torch.matmul's other name)


def _with_out(result, out, name):
    """torch's ``out=``: the result (a tensor or a named tuple) written into ``out``, under the rules (and in the
    words) of ``name``, the kernel torch runs (_linalg_svd for svd and svdvals, linalg_inv_ex for inv, ...)."""
    if out is None:
        return result
    from .ops import _write_out
    return _write_out(lambda: result, name, (), {}, out)


def _warn_deprecated(old, new):
    warnings.warn(f"{old} is deprecated in favor of {new} and will be removed in a future PyTorch release.",
                  UserWarning, stacklevel=3)


# ---- randomised low-rank SVD and PCA (torch._lowrank: Halko et al. 2009, algorithms 4.4 and 5.1) -------
def _approximate_basis(A, q, niter, M=None):
    """Q with orthonormal columns spanning A's (or A - M's) range approximately: torch's
    ``get_approximate_basis``, its random start ``randn(n, q)`` drawn from the global generator as torch's."""
    from .factories import randn
    dtype = A.dtype if dtypes.is_floating(A.dtype) else dtypes.float32
    R = randn(A.shape[-1], q, dtype=dtype, device=A.device)
    def product(X):  # (A - M) X without forming A - M, as torch
        return ops.matmul(A, X) if M is None else ops.sub(ops.matmul(A, X), ops.matmul(M, X))
    Q = qr(product(R)).Q
    for _ in range(niter):  # power iterations sharpen the basis towards the top singular vectors
        X = ops.matmul(A.mH, Q) if M is None else ops.sub(ops.matmul(A.mH, Q), ops.matmul(M.mH, Q))
        Q = qr(product(qr(X).Q)).Q
    return Q


def _svd_lowrank(A, q, niter, M):
    q = 6 if q is None else q
    niter = 2 if niter is None else niter
    m, n = A.shape[-2:]
    if M is not None:
        M = M.broadcast_to(A.shape)
    if m < n:  # torch works on the tall orientation
        A, M = A.mH, (None if M is None else M.mH)
    Q = _approximate_basis(A, q, niter, M)
    B = ops.matmul(Q.mH, A) if M is None else ops.sub(ops.matmul(Q.mH, A), ops.matmul(Q.mH, M))
    U, S, Vh = svd(B, full_matrices=False)
    U, V = ops.matmul(Q, U), Vh.mH
    return (V, S, U) if m < n else (U, S, V)


def svd_lowrank(A, q=6, niter=2, M=None):
    """``torch.svd_lowrank``: ``(U, S, V)`` with ``A - M ~ U diag(S) V^H`` of rank q, randomised as torch's
    (the same draws from the global generator, so a seeded call picks torch's subspace; the factors' signs
    are LAPACK's, as ``svd``'s). Differentiable through its QRs and SVD."""
    _check_dtype("svd_lowrank", A)
    return _svd_lowrank(A, q, niter, M)


def pca_lowrank(A, q=None, center=True, niter=2):
    """``torch.pca_lowrank``: ``svd_lowrank`` of A with its column means subtracted (``center``); q defaults to
    min(6, m, n)."""
    _check_dtype("pca_lowrank", A)
    m, n = A.shape[-2:]
    if q is None:
        q = min(6, m, n)
    elif not 0 <= q <= min(m, n):
        raise ValueError(f"q(={q}) must be non-negative integer and not greater than min(m, n)={min(m, n)}")
    if not niter >= 0:
        raise ValueError(f"niter(={niter}) must be non-negative integer")
    if not center:
        return _svd_lowrank(A, q, niter, None)
    return _svd_lowrank(ops.sub(A, A.mean(dim=(-2,), keepdim=True)), q, niter, None)


# ---- torch's top-level spellings (torch.svd, torch.det, torch.inverse ...) and their Tensor methods ---
def old_svd(input, some=True, compute_uv=True):
    """``torch.svd`` (the older API): ``(U, S, V)`` with V, not Vh; ``some=False`` gives the full U and V;
    ``compute_uv=False``: U and V zero-filled, of shape (m, m) and (n, n), as torch."""
    _check("linalg.svd", input)
    if not compute_uv:
        m, n = input.shape[-2:]
        xp = xp_of(input._array)
        zeros = lambda k: _plain(xp.zeros(input.shape[:-2] + (k, k), input._array.dtype), input)  # noqa: E731
        return OldSVD(zeros(m), svdvals(input), zeros(n))
    U, S, Vh = svd(input, full_matrices=not some)
    return OldSVD(U, S, Vh.mT)


def old_qr(input, some=True):
    """``torch.qr`` (deprecated in torch, with its warning): ``linalg.qr`` with ``some=True`` for mode
    'reduced', False for 'complete'."""
    _warn_deprecated("torch.qr", "torch.linalg.qr")
    return OldQR(*qr(input, "reduced" if some else "complete"))


def old_cholesky(input, upper=False):
    """``torch.cholesky`` (deprecated in torch, with its warning): the lower (or upper) factor."""
    _warn_deprecated("torch.cholesky", "torch.linalg.cholesky")
    no_forward_formula("cholesky", input)  # (torch.linalg.cholesky has one)
    L, info = _cholesky(input, upper)
    _raise_not_positive_definite("cholesky", info)  # (torch's message names the old function)
    return L


def old_slogdet(input):
    return OldSlogDet(*slogdet(input))


def old_lu(A, pivot=True, get_infos=False, out=None):
    """``torch.lu`` (deprecated in torch, with its warning): ``(LU, pivots)``, ``(LU, pivots, infos)`` with
    ``get_infos`` (a plain tuple, as torch's)."""
    warnings.warn("torch.lu is deprecated in favor of torch.linalg.lu_factor / torch.linalg.lu_factor_ex and will be "
                  "removed in a future PyTorch release.", UserWarning, stacklevel=2)
    LU, pivots, info = lu_factor_ex(A, pivot=pivot)
    result = (LU, pivots, info) if get_infos else (LU, pivots)
    return result if out is None else _with_out(result, out, "lu")


def old_lu_solve(b, LU_data, LU_pivots, *, out=None):
    """``torch.lu_solve`` (deprecated in torch, with its warning): ``linalg.lu_solve`` with b first."""
    _warn_deprecated("torch.lu_solve", "torch.linalg.lu_solve")
    return lu_solve(LU_data, LU_pivots, b, out=out)


def pinverse(input, rcond=1e-15):
    """``torch.pinverse``: ``linalg.pinv`` with rtol ``rcond`` (default 1e-15)."""
    return pinv(input, rtol=rcond)


def ger(input, vec2):
    """``torch.ger``: torch's older name for ``outer``."""
    return ops.outer(input, vec2)


def _det_method(self):
    return det(self)


TOP_LEVEL = {"svd": old_svd, "qr": old_qr, "cholesky": old_cholesky, "slogdet": old_slogdet,
             "logdet": logdet, "det": _det_method, "inverse": lambda input: inv(input),
             "pinverse": pinverse, "matrix_power": lambda input, n: matrix_power(input, n),
             "matrix_exp": matrix_exp, "ger": ger, "lu": old_lu, "lu_solve": old_lu_solve,
             "triangular_solve": triangular_solve, "cholesky_solve": cholesky_solve,
             "cholesky_inverse": cholesky_inverse, "geqrf": geqrf, "orgqr": householder_product, "ormqr": ormqr}
for _name, _fn in TOP_LEVEL.items():
    setattr(Tensor, _name, _fn)
