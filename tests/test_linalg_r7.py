"""``minilora.linalg`` side by side with ``torch.linalg`` 2.13, round 7: the rest of it.

* eig / eigvals (complex results) and the complex tensors they need: real, imag, abs, angle, conj, mean,
  view_as_real / view_as_complex / complex, their derivatives and repr; an op without a complex derivative
  refuses a complex gradient instead of computing a wrong one;
* the LU family (lu_factor, lu_factor_ex, lu, lu_solve, torch.lu_unpack, torch.lu / lu_solve), ldl_factor /
  ldl_solve (LAPACK's Bunch-Kaufman pivots), cholesky_solve / cholesky_inverse, torch.triangular_solve, cond,
  geqrf / householder_product (orgqr) / ormqr, tensorinv / tensorsolve;
* round 6's functions at their edges: empty and thin matrices, singular ones (info, check_errors, LAPACK's
  inf/nan), dtype=, 16-bit norms, UPLO, argument errors;
* the CuPy path of every decomposition, through tests/fake_cupy.py as ``cuda``.

Values, dtypes, shapes, named-tuple fields, errors (types, first words) and float64 gradients are compared with
torch; each differentiable function is also gradchecked against central differences. Where torch 2.13 itself
fails (cond's backward for the norm orders, ldl_solve with broadcast batches, ldl_factor of a singular matrix),
the test says so and checks minilora alone.
"""
import math
import sys
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import minilora as ml  # noqa: E402
from minilora import linalg as LA  # noqa: E402

RNG = np.random.default_rng(7)


def _pair(*shape, dtype=np.float64, requires_grad=True, values=None):
    a = (RNG.standard_normal(shape) if values is None else np.asarray(values, dtype=np.float64)).astype(dtype)
    return ml.tensor(a, requires_grad=requires_grad), torch.tensor(a, requires_grad=requires_grad)


def _np(t):
    return t.detach().numpy()


def _close(mine, theirs, tol=1e-10):
    assert tuple(mine.shape) == tuple(theirs.shape), (mine.shape, theirs.shape)
    assert str(mine.dtype) == str(theirs.dtype).replace("torch.", ""), (mine.dtype, theirs.dtype)
    np.testing.assert_allclose(_np(mine), _np(theirs), rtol=tol, atol=tol)


def _fields(result):
    """A named tuple's field names, in order (torch.return_types have no ``_fields``)."""
    return [f for f in ("eigenvalues", "eigenvectors", "LU", "LD", "pivots", "info", "P", "L", "U", "solution",
                        "cloned_coefficient", "a", "tau") if hasattr(result, f)]


# ---- eig / eigvals and the complex tensors they return -------------------------------------------------------
def test_eig_values_vectors_dtypes_and_fields():
    for dtype, ctype in ((np.float64, "complex128"), (np.float32, "complex64")):
        a, t = _pair(2, 4, 4, dtype=dtype, requires_grad=False)
        mine, theirs = LA.eig(a), torch.linalg.eig(t)
        assert type(mine).__name__ == type(theirs).__name__ == "linalg_eig"
        assert _fields(mine) == ["eigenvalues", "eigenvectors"] and mine.eigenvalues is mine[0]
        assert str(mine.eigenvalues.dtype) == str(mine.eigenvectors.dtype) == ctype
        tol = 1e-10 if dtype == np.float64 else 1e-4
        # (both call LAPACK's geev: the same order; each vector of norm 1, fixed up to a sign/phase)
        _close(mine.eigenvalues, theirs.eigenvalues, tol)
        overlap = np.abs(np.sum(_np(mine.eigenvectors).conj() * _np(theirs.eigenvectors), axis=-2))
        np.testing.assert_allclose(overlap, 1, atol=50 * tol)
        _close(LA.eigvals(a), torch.linalg.eigvals(t), tol)
        V, L = _np(mine.eigenvectors), _np(mine.eigenvalues)  # A V = V diag(L)
        np.testing.assert_allclose(_np(a).astype(complex) @ V, V * L[..., None, :], atol=50 * tol)
    a, t = _pair(3, 3, values=[[0, -1, 0], [1, 0, 0], [0, 0, 2]], requires_grad=False)  # a rotation: +-i
    _close(LA.eigvals(a), torch.linalg.eigvals(t))
    assert LA.eig(ml.ones(2, 0, 0)).eigenvectors.shape == torch.linalg.eig(torch.ones(2, 0, 0)).eigenvectors.shape


def _eig_losses(lib, A, w):
    """Losses that do not depend on the eigenvectors' phases (torch's rule), through each complex op."""
    L, V = lib.linalg.eig(A)
    return [(L.abs() * w[0]).sum(), L.real.pow(2).sum() + L.imag.sum(), (L.angle() * w[0]).sum(),
            (V.abs().pow(2) * w[1]).sum(), (lib.view_as_real(L) * w[2]).sum(), lib.linalg.eigvals(A).abs().sum(),
            ((V.conj().real.pow(2) + V.conj().imag.pow(2)) * w[1]).sum()]


@pytest.mark.parametrize("index", range(7))
def test_eig_gradients_against_torch(index):
    a = RNG.standard_normal((2, 4, 4))
    ws = [RNG.standard_normal((2, 4)), RNG.standard_normal((2, 4, 4)), RNG.standard_normal((2, 4, 2))]
    grads = []
    for lib in (ml, torch):
        A = lib.tensor(a, requires_grad=True)
        loss = _eig_losses(lib, A, [lib.tensor(w) for w in ws])[index]
        loss.backward()
        assert A.grad.dtype == lib.float64
        grads.append(A.grad.numpy())
    np.testing.assert_allclose(grads[0], grads[1], rtol=1e-8, atol=1e-10)


def test_eig_gradcheck_and_gauge_error():
    A = _pair(3, 3, values=[[0.1, -1, 0.3], [1, 0.2, 0], [0.5, 0, 2]])[0]  # (two complex eigenvalues)
    assert ml.autograd.gradcheck(lambda x: ml.view_as_real(LA.eigvals(x)), [A])
    assert ml.autograd.gradcheck(lambda x: LA.eig(x).eigenvectors.abs(), [A])
    assert LA.eig(A).eigenvalues.grad_fn.name() == "LinalgEigBackward0"
    for lib, x in ((ml, A), (torch, torch.tensor(_np(A), requires_grad=True))):
        with pytest.raises(RuntimeError, match="specified up to multiplication by e\\^{i phi}"):
            lib.linalg.eig(x).eigenvectors.sum().abs().backward()  # depends on the phases


def test_complex_ops_values_and_gradients():
    z = RNG.standard_normal(5) + 1j * RNG.standard_normal(5)
    z[0] = 0
    found = []
    for lib in (ml, torch):
        x = lib.tensor(z, requires_grad=True)
        assert lib.is_complex(x) and x.is_complex() and not lib.ones(2).is_complex()
        parts = [x.real, x.imag, x.abs(), x.angle(), lib.real(x), lib.imag(x), lib.angle(x), lib.view_as_real(x),
                 lib.conj(x).imag, lib.view_as_real(lib.complex(x.real, x.imag * 2)),
                 lib.view_as_real(lib.view_as_complex(lib.view_as_real(x) * 3))]
        loss = sum((p * (i + 1)).sum() for i, p in enumerate(parts))
        loss.backward()
        found.append(([np.array(p.detach().tolist()) for p in parts], x.grad.numpy(), [str(p.dtype) for p in parts]))
    for m, t in zip(found[0][0], found[1][0]):
        np.testing.assert_allclose(m, t, atol=1e-12)
    np.testing.assert_allclose(found[0][1], found[1][1], atol=1e-12)
    assert [d.replace("torch.", "") for d in found[0][2]] == [d.replace("torch.", "") for d in found[1][2]]
    r = ml.tensor([-1.0, 2.0])  # real tensors: real/conj are the tensor, angle is 0 or pi, imag refused
    assert ml.real(r) is r and ml.conj(r) is r
    assert ml.angle(r).tolist() == torch.angle(torch.tensor([-1.0, 2.0])).tolist()
    assert ml.complex64 == np.complex64 and ml.cdouble == np.complex128
    for call in (lambda L: L.imag(L.ones(2)), lambda L: L.view_as_real(L.ones(2)),
                 lambda L: L.view_as_complex(L.ones(3)), lambda L: L.complex(L.ones(2), L.ones(2, dtype=L.float64))):
        with pytest.raises(RuntimeError):
            call(torch)
        with pytest.raises(RuntimeError):
            call(ml)



@pytest.mark.parametrize("dtype", ["bfloat16", "int64", "bool"])
def test_complex_makers_name_a_wrong_dtype_as_torch(dtype):
    """view_as_complex / complex of a dtype torch refuses: torch's whole message (BFloat16 was 'Bfloat16')."""
    for call in (lambda L, d: L.view_as_complex(L.ones(3, 2, dtype=d)),
                 lambda L, d: L.complex(L.ones(2, dtype=d), L.ones(2, dtype=d))):
        with pytest.raises(RuntimeError) as mine:
            call(ml, getattr(ml, dtype))
        with pytest.raises(RuntimeError) as theirs:
            call(torch, getattr(torch, dtype))
        assert str(mine.value) == str(theirs.value)


def test_complex_halves_are_refused_by_name():
    """torch makes complex32 of float16 pairs; NumPy has no such dtype, so minilora says so (it said 'Expected
    both inputs to be Half, Float or Double tensors but got Half and Half')."""
    with pytest.raises(NotImplementedError, match="complex32"):
        ml.view_as_complex(ml.ones(3, 2, dtype=ml.float16))
    with pytest.raises(NotImplementedError, match="complex32"):
        ml.complex(ml.ones(2, dtype=ml.float16), ml.ones(2, dtype=ml.float16))

def test_complex_gradient_through_an_op_without_a_complex_rule_is_refused():
    """An op with no complex derivative (here one written for real numbers only) raises when a complex
    gradient reaches it (NotImplementedError naming the op) instead of returning a wrong gradient; sums,
    reshapes, indexing and products take complex gradients (tests/test_complex_r8.py checks the others)."""
    from minilora.tensor import Function

    class RealSquare(Function):
        @staticmethod
        def forward(ctx, a):
            ctx.a = a
            return a * a

        @staticmethod
        def backward(ctx, g):
            return 2 * g * ctx.a

    A = ml.tensor(RNG.standard_normal((3, 3)), requires_grad=True)
    L = LA.eigvals(A)
    with pytest.raises(NotImplementedError, match="no complex derivative for RealSquare"):
        RealSquare.apply(L).real.sum().backward()
    At = torch.tensor(A.detach().numpy(), requires_grad=True)
    (L[1:].reshape(2, 1).sum() + L[0] * L[1] - L.mean()).real.backward()
    Lt = torch.linalg.eigvals(At)
    (Lt[1:].reshape(2, 1).sum() + Lt[0] * Lt[1] - Lt.mean()).real.backward()
    np.testing.assert_allclose(A.grad.numpy(), At.grad.numpy(), atol=1e-12)


def test_eig_errors_as_torch():
    calls = [lambda L: L.linalg.eig(L.ones(2, 3)), lambda L: L.linalg.eigvals(L.ones(2)),
             lambda L: L.linalg.eig(L.tensor([[float("nan"), 1.0], [0.0, 1.0]])),
             lambda L: L.linalg.eig(L.ones(2, 2, dtype=L.long))]
    for call in calls:
        with pytest.raises(RuntimeError) as theirs:
            call(torch)
        with pytest.raises(RuntimeError) as mine:
            call(ml)
        assert str(mine.value).split(":")[0] == str(theirs.value).split(":")[0] or "Complex" in str(theirs.value)


# ---- the functions with one answer: values and gradients against torch -----------------------------------------
def _spd(lib, a):
    return a @ a.mT + 4 * lib.eye(a.shape[-1], dtype=a.dtype)


def _chol(lib, a, upper=False):
    return lib.linalg.cholesky(_spd(lib, a), upper=upper)


def _well(lib, a):  # well conditioned: LU's pivots are unambiguous
    return a + 3 * lib.eye(a.shape[-1], dtype=a.dtype)


CASES = {  # name: (call(lib, *tensors), shapes); a tuple result: each field compared, the loss sums them all
    "lu_factor": (lambda L, a: L.linalg.lu_factor(a), [(3, 3)]),
    "lu_factor_batch": (lambda L, a: L.linalg.lu_factor(a), [(2, 4, 4)]),
    "lu_factor_wide": (lambda L, a: L.linalg.lu_factor(a), [(3, 5)]),
    "lu_factor_tall": (lambda L, a: L.linalg.lu_factor(a), [(2, 5, 3)]),
    "lu_factor_ex": (lambda L, a: L.linalg.lu_factor_ex(a), [(2, 3, 3)]),
    "lu": (lambda L, a: L.linalg.lu(a), [(2, 4, 4)]),
    "lu_wide": (lambda L, a: L.linalg.lu(a), [(3, 5)]),
    "lu_tall": (lambda L, a: L.linalg.lu(a), [(5, 2)]),
    "lu_only_U": (lambda L, a: L.linalg.lu(a).U, [(5, 3)]),
    "lu_only_L": (lambda L, a: L.linalg.lu(a).L, [(3, 5)]),
    "lu_unpack": (lambda L, a: L.lu_unpack(*L.linalg.lu_factor(a)), [(2, 3, 4)]),
    "lu_unpack_tall": (lambda L, a: L.lu_unpack(*L.linalg.lu_factor(a)), [(4, 3)]),
    "lu_solve": (lambda L, a, b: L.linalg.lu_solve(*L.linalg.lu_factor(_well(L, a)), b), [(3, 3), (3, 2)]),
    "lu_solve_bcast": (lambda L, a, b: L.linalg.lu_solve(*L.linalg.lu_factor(_well(L, a)), b), [(3, 3), (2, 3, 2)]),
    "lu_solve_adjoint": (lambda L, a, b: L.linalg.lu_solve(*L.linalg.lu_factor(_well(L, a)), b, adjoint=True),
                         [(2, 3, 3), (2, 3, 1)]),
    "lu_solve_right": (lambda L, a, b: L.linalg.lu_solve(*L.linalg.lu_factor(_well(L, a)), b, left=False),
                       [(3, 3), (2, 3)]),
    "lu_solve_right_adjoint": (lambda L, a, b: L.linalg.lu_solve(*L.linalg.lu_factor(_well(L, a)), b, left=False,
                                                                 adjoint=True), [(3, 3), (4, 3)]),
    "torch.lu_solve": (lambda L, a, b: L.lu_solve(b, *L.lu(_well(L, a))), [(3, 3), (3, 2)]),
    "Tensor.lu_solve": (lambda L, a, b: b.lu_solve(*_well(L, a).lu()), [(3, 3), (3, 2)]),
    "cholesky_solve": (lambda L, b, a: L.cholesky_solve(b, _chol(L, a)), [(3, 2), (3, 3)]),
    "cholesky_solve_upper_bcast": (lambda L, b, a: L.cholesky_solve(b, _chol(L, a, True), upper=True),
                                   [(2, 3, 2), (3, 3)]),
    "cholesky_solve_raw_factor": (lambda L, b, a: L.cholesky_solve(b, _well(L, a)), [(3, 2), (3, 3)]),
    "Tensor.cholesky_solve": (lambda L, b, a: b.cholesky_solve(_chol(L, a)), [(3, 1), (3, 3)]),
    "cholesky_inverse": (lambda L, a: L.cholesky_inverse(_chol(L, a)), [(2, 3, 3)]),
    "cholesky_inverse_upper": (lambda L, a: L.cholesky_inverse(_well(L, a).triu(), upper=True), [(3, 3)]),
    "cholesky_inverse_raw": (lambda L, a: _well(L, a).cholesky_inverse(), [(3, 3)]),
    "triangular_solve": (lambda L, b, a: L.triangular_solve(b, _well(L, a)), [(3, 2), (3, 3)]),
    "triangular_solve_lower_T_unit": (lambda L, b, a: L.triangular_solve(b, a, upper=False, transpose=True,
                                                                         unitriangular=True), [(2, 3, 2), (3, 3)]),
    "Tensor.triangular_solve": (lambda L, b, a: b.triangular_solve(_well(L, a), False), [(3, 4), (2, 3, 3)]),
    "cond": (lambda L, a: L.linalg.cond(a), [(2, 3, 3)]),
    "cond_wide": (lambda L, a: L.linalg.cond(a), [(3, 5)]),
    **{f"cond_{p}": (lambda L, a, p=p: L.linalg.cond(a, p), [(2, 3, 3)])
       for p in ("fro", "nuc", 1, -1, 2, -2, math.inf, -math.inf)},
    "tensorinv": (lambda L, a: L.linalg.tensorinv(_well(L, a.reshape(6, 6)).reshape(6, 2, 3), ind=1), [(6, 6)]),
    "tensorinv_2": (lambda L, a: L.linalg.tensorinv(_well(L, a.reshape(4, 4)).reshape(2, 2, 2, 2)), [(4, 4)]),
    "tensorsolve": (lambda L, a, b: L.linalg.tensorsolve(_well(L, a).reshape(2, 3, 6), b), [(6, 6), (2, 3)]),
    "tensorsolve_dims": (lambda L, a, b: L.linalg.tensorsolve(_well(L, a).reshape(6, 2, 3), b, dims=(0,)),
                         [(6, 6), (2, 3)]),
    "householder_product": (lambda L, a: L.linalg.householder_product(*L.geqrf(a.detach()).__iter__()), [(4, 3)]),
    "householder_product_grad": (lambda L, a, t: L.linalg.householder_product(a, t), [(2, 5, 3), (2, 2)]),
    "orgqr": (lambda L, a, t: L.orgqr(a, t), [(4, 4), (3,)]),
    "Tensor.orgqr": (lambda L, a, t: a.orgqr(t), [(4, 2), (2,)]),
    **{f"ormqr_{left}_{transpose}": (lambda L, a, t, c, left=left, transpose=transpose: L.ormqr(
        a, t, c if left else c.mT, left, transpose), [(4, 3), (3,), (4, 2)])
       for left in (True, False) for transpose in (True, False)},
    "Tensor.ormqr": (lambda L, a, t, c: a.ormqr(t, c, transpose=True), [(2, 3, 2), (2, 2), (2, 3, 1)]),
    "geqrf": (lambda L, a: L.geqrf(a.detach()), [(2, 4, 3)]),
    "geqrf_wide": (lambda L, a: a.detach().geqrf(), [(2, 4)]),
}


# torch's own backward of cond for these orders fails ("modified by an inplace operation": its
# _linalg_cond_helper writes inf into inv_ex's saved result); minilora's is gradchecked instead
TORCH_BACKWARD_FAILS = {f"cond_{p}" for p in ("fro", "nuc", 1, -1, math.inf, -math.inf)}


def _outputs_of(result):
    return list(result) if isinstance(result, tuple) else [result]


@pytest.mark.parametrize("name", list(CASES))
def test_against_torch_values_and_gradients(name):
    call, shapes = CASES[name]
    pairs = [_pair(*s) for s in shapes]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (the deprecated spellings warn: test_deprecated_spellings_warn)
        mine, theirs = call(ml, *(p[0] for p in pairs)), call(torch, *(p[1] for p in pairs))
    assert type(mine).__name__ == type(theirs).__name__
    assert _fields(mine) == _fields(theirs)
    losses = []
    for m, t in zip(_outputs_of(mine), _outputs_of(theirs)):
        if str(t.dtype) == "torch.int32":
            assert m.dtype == ml.int32 and m.tolist() == t.tolist()
            continue
        _close(m, t, tol=1e-9)
        w = RNG.standard_normal(tuple(t.shape))
        if t.requires_grad:
            losses.append(((m * ml.tensor(w)).sum(), (t * torch.tensor(w)).sum()))
    if not losses or name in TORCH_BACKWARD_FAILS:
        return
    sum(loss for loss, _ in losses).backward()
    sum(loss for _, loss in losses).backward()
    for (a, _), (_, t) in zip(pairs, pairs):
        assert (a.grad is None) == (t.grad is None), name
        if t.grad is not None:
            np.testing.assert_allclose(a.grad.numpy(), t.grad.numpy(), rtol=1e-7, atol=1e-9)


GRADCHECKED = ["lu_factor_wide", "lu_factor_tall", "lu", "lu_wide", "lu_tall", "lu_unpack", "lu_solve_bcast",
               "lu_solve_right_adjoint", "cholesky_solve_upper_bcast", "cholesky_inverse",
               "triangular_solve_lower_T_unit", "cond", "cond_wide", "cond_nuc", "cond_-1",
               "tensorinv", "tensorsolve_dims", "householder_product_grad", "ormqr_False_True", "ormqr_True_False"]


@pytest.mark.parametrize("name", GRADCHECKED)
def test_gradients_against_finite_differences(name):
    call, shapes = CASES[name]
    inputs = [_pair(*s)[0] for s in shapes]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        keep = [i for i, o in enumerate(_outputs_of(call(ml, *inputs))) if o.requires_grad]  # (not P, pivots)
        assert ml.autograd.gradcheck(lambda *xs: tuple(_outputs_of(call(ml, *xs))[i] for i in keep), inputs)


# ---- singular and non-square inputs, info and check_errors, errors ---------------------------------------------
SINGULAR = np.array([[1.0, 2.0], [2.0, 4.0]])


def test_singular_matrices_info_and_check_errors():
    for lib in (ml, torch):
        LU, pivots, info = lib.linalg.lu_factor_ex(lib.tensor(SINGULAR))
        assert info.item() == 2 and pivots.tolist() == [2, 2] and info.dtype == lib.int32
    batch = np.stack([np.eye(2), SINGULAR, SINGULAR * 0])
    mine, theirs = LA.lu_factor_ex(ml.tensor(batch)), torch.linalg.lu_factor_ex(torch.tensor(batch))
    assert mine.info.tolist() == theirs.info.tolist() and mine.pivots.tolist() == theirs.pivots.tolist()
    _close(mine.LU, theirs.LU)
    P, L, U = LA.lu(ml.tensor(SINGULAR))  # (linalg.lu takes singular matrices)
    _close(U, torch.linalg.lu(torch.tensor(SINGULAR)).U)
    for call in (lambda L: L.linalg.lu_factor(L.tensor(batch)),
                 lambda L: L.linalg.lu_factor_ex(L.tensor(SINGULAR), check_errors=True)):
        with pytest.raises(RuntimeError) as theirs:
            call(torch)
        with pytest.raises(LA.LinAlgError) as mine:
            call(ml)
        assert str(mine.value).split(" If you")[0] == str(theirs.value).split(" If you")[0]
    # triangular solves with a zero on the diagonal: inf / nan as torch's trsm, no error
    zeros, ones = np.zeros((3, 3)), np.ones((3, 1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for call in (lambda L: L.linalg.solve_triangular(L.tensor(zeros), L.tensor(ones), upper=True),
                     lambda L: L.triangular_solve(L.tensor(ones), L.tensor(zeros)).solution):
            assert str(call(ml).tolist()) == str(call(torch).tolist())
    for p in (None, 1, "fro", -math.inf):  # the condition number of a singular matrix: inf (or huge)
        mine, theirs = LA.cond(ml.tensor(SINGULAR), p), torch.linalg.cond(torch.tensor(SINGULAR), p)
        assert (math.isinf(mine.item()) and math.isinf(theirs.item())) or mine.item() > 1e15 < theirs.item()
    assert LA.cond(ml.ones(0, 0)).shape == torch.linalg.cond(torch.ones(0, 0)).shape == ()


ERRORS = {  # call(lib): torch raises; minilora must raise the same type with the same first words
    "lu_factor 1d": lambda L: L.linalg.lu_factor(L.ones(3)),
    "lu_factor no pivot": lambda L: L.linalg.lu_factor(L.eye(2), pivot=False),
    "lu no pivot": lambda L: L.linalg.lu(L.eye(2), pivot=False),
    "lu_solve vector": lambda L: L.linalg.lu_solve(*L.linalg.lu_factor(L.eye(3)), L.ones(3)),
    "lu_solve shapes": lambda L: L.linalg.lu_solve(*L.linalg.lu_factor(L.eye(3)), L.ones(4, 2)),
    "lu_solve pivots dtype": lambda L: L.linalg.lu_solve(L.eye(3), L.ones(3, dtype=L.long), L.ones(3, 2)),
    "lu_solve wide": lambda L: L.linalg.lu_solve(L.ones(2, 3), L.ones(2, dtype=L.int32), L.ones(2, 2)),
    "lu_unpack pivots dtype": lambda L: L.lu_unpack(L.eye(3), L.ones(3, dtype=L.long)),
    "cholesky_solve 1d": lambda L: L.cholesky_solve(L.ones(3), L.eye(3)),
    "cholesky_solve shapes": lambda L: L.cholesky_solve(L.ones(4, 2), L.eye(3)),
    "cholesky_solve dtypes": lambda L: L.cholesky_solve(L.ones(3, 2), L.eye(3, dtype=L.float64)),
    "cholesky_inverse 1d": lambda L: L.cholesky_inverse(L.ones(3)),
    "cholesky_inverse non-square": lambda L: L.cholesky_inverse(L.ones(2, 3)),
    "cholesky_inverse singular": lambda L: L.cholesky_inverse(L.zeros(2, 2)),
    "triangular_solve 1d": lambda L: L.triangular_solve(L.ones(3), L.eye(3)),
    "triangular_solve shapes": lambda L: L.triangular_solve(L.ones(4, 2), L.eye(3)),
    "cond 1d": lambda L: L.linalg.cond(L.ones(3)),
    "cond order": lambda L: L.linalg.cond(L.eye(3), 3),
    "cond fro wide": lambda L: L.linalg.cond(L.ones(2, 3), "fro"),
    "cond int": lambda L: L.linalg.cond(L.ones(2, 2, dtype=L.long)),
    "tensorinv shapes": lambda L: L.linalg.tensorinv(L.ones(2, 3, 4), ind=1),
    "tensorinv ind": lambda L: L.linalg.tensorinv(L.eye(2), ind=0),
    "tensorinv singular": lambda L: L.linalg.tensorinv(L.zeros(2, 2, 4), ind=2),
    "tensorsolve shapes": lambda L: L.linalg.tensorsolve(L.ones(2, 3, 5), L.ones(2, 3)),
    "geqrf 1d": lambda L: L.geqrf(L.ones(3)),
    "geqrf backward": lambda L: L.geqrf(L.eye(3, requires_grad=True)).a.sum().backward(),
    "householder wide": lambda L: L.linalg.householder_product(L.ones(2, 3), L.ones(2)),
    "householder tau": lambda L: L.linalg.householder_product(L.ones(4, 3), L.ones(4)),
    "householder batch": lambda L: L.linalg.householder_product(L.ones(2, 4, 3), L.ones(3, 3)),
    "householder dtype": lambda L: L.linalg.householder_product(L.ones(4, 3, dtype=L.float64), L.ones(3)),
    "ormqr ndim": lambda L: L.ormqr(L.ones(2, 4, 3), L.ones(2, 3), L.ones(4, 2)),
    "ormqr rows": lambda L: L.ormqr(L.ones(4, 3), L.ones(3), L.ones(3, 2)),
    "ormqr tau": lambda L: L.ormqr(L.ones(4, 3), L.ones(2), L.ones(4, 2)),
    "ormqr right": lambda L: L.ormqr(L.ones(4, 3), L.ones(3), L.ones(4, 2), left=False),
}


@pytest.mark.parametrize("name", list(ERRORS))
def test_errors_as_torch(name):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(Exception) as theirs:
            ERRORS[name](torch)
        with pytest.raises(Exception) as mine:
            ERRORS[name](ml)
    expected = type(theirs.value) if type(theirs.value).__module__ == "builtins" else RuntimeError
    assert isinstance(mine.value, expected), (mine.value, theirs.value)
    if isinstance(theirs.value, torch.linalg.LinAlgError):
        assert isinstance(mine.value, LA.LinAlgError)
    first_words = str(theirs.value).split(":")[0]
    assert str(mine.value).startswith(first_words) or name in ("tensorinv singular", "cond int"), \
        (str(mine.value), str(theirs.value))


def test_deprecated_spellings_warn_and_return_torchs_types():
    """minilora warns as torch does (torch only once per process: TORCH_WARN_ONCE, so its side is not checked)."""
    a, t = _pair(3, 3, requires_grad=False)
    with pytest.warns(UserWarning, match="torch.lu is deprecated"):
        assert len(ml.lu(a)) == 2 and len(a.lu(get_infos=True)) == 3 and type(ml.lu(a)) is tuple
    with pytest.warns(UserWarning, match="torch.triangular_solve is deprecated"):
        ml.triangular_solve(a[:, :1], a)
    with pytest.warns(UserWarning, match="torch.lu_solve is deprecated"):
        ml.lu_solve(a[:, :1], *LA.lu_factor(a))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert len(torch.lu(t)) == 2 and len(t.lu(get_infos=True)) == 3 and type(torch.lu(t)) is tuple


def test_out_arguments():
    a = np.eye(3) * 2 + np.triu(np.ones((3, 3)), 1)
    for lib in (ml, torch):
        A = lib.tensor(a)
        LU, piv = lib.empty(0, dtype=lib.float64), lib.empty(0, dtype=lib.int32)
        result = lib.linalg.lu_factor(A, out=(LU, piv))
        assert result.LU is LU and LU.tolist() == a.tolist() and piv.tolist() == [1, 2, 3]
        x = lib.empty(0, dtype=lib.float64)
        assert lib.linalg.lu_solve(LU, piv, lib.ones(3, 1, dtype=lib.float64), out=x) is x and x.shape == (3, 1)
        L, V = lib.empty(0, dtype=lib.complex128), lib.empty(0, dtype=lib.complex128)
        assert lib.linalg.eig(A, out=(L, V)).eigenvalues is L and L.real.tolist() == [2.0, 2.0, 2.0]
        c = lib.empty(0, dtype=lib.float64)
        assert lib.linalg.cond(A, out=c) is c and c.shape == ()
        y = lib.empty(0, dtype=lib.float64)
        assert lib.cholesky_solve(lib.ones(3, 1, dtype=lib.float64), A.mT, out=y) is y


@pytest.mark.parametrize("name", ["lu_factor_batch", "lu", "lu_solve_adjoint", "cholesky_solve", "cond_nuc",
                                  "householder_product_grad", "ormqr_True_True"])
def test_float32_in_float32(name):
    """float32 stays float32 (torch's LAPACK call in single precision): agreement to float32's precision."""
    call, shapes = CASES[name]
    found = []
    arrays = [RNG.standard_normal(s).astype(np.float32) for s in shapes]
    for lib in (ml, torch):
        xs = [lib.tensor(a, requires_grad=True) for a in arrays]
        outs = [o for o in _outputs_of(call(lib, *xs)) if o.requires_grad]
        assert all(o.dtype == lib.float32 for o in outs)
        sum(o.sum() for o in outs).backward()
        found.append(([o.detach().numpy() for o in outs], [x.grad.numpy() for x in xs]))
    for m, t in zip(found[0][0] + found[0][1], found[1][0] + found[1][1]):
        np.testing.assert_allclose(m, t, rtol=2e-4, atol=2e-4 * max(1.0, np.abs(t).max()))


# ---- the CuPy path (tests/fake_cupy.py as ``cuda``): what no GPU-less run would otherwise execute ---------------
CUDA_CALLS = {
    "svd": lambda L, a, s: (lambda U, S, Vh: (U[..., :1] @ Vh[..., :1, :]).sum() + S.sum())(
        *L.svd(a, full_matrices=False)),
    "svdvals": lambda L, a, s: L.svdvals(a).sum(),
    "qr": lambda L, a, s: (lambda Q, R: R.abs().sum() + (Q @ Q.mT).sum())(*L.qr(a)),
    "eigh": lambda L, a, s: (lambda w, V: w.sum() + (V[..., :1] @ V[..., :1].mT).sum())(*L.eigh(s @ s.mT)),
    "eigvalsh": lambda L, a, s: L.eigvalsh(s @ s.mT, UPLO="U").sum(),
    "solve": lambda L, a, s: L.solve(s, a[..., :3, :]).sum(),
    "solve_ex": lambda L, a, s: L.solve_ex(s, a[..., :3, :]).result.sum(),
    "cholesky": lambda L, a, s: L.cholesky(s @ s.mT + 3 * _eye_like(s)).sum(),
    "cholesky_ex": lambda L, a, s: L.cholesky_ex(s @ s.mT + 3 * _eye_like(s), upper=True).L.sum(),
    "inv": lambda L, a, s: L.inv(s).sum(),
    "inv_ex": lambda L, a, s: L.inv_ex(s).inverse.sum(),
    "det": lambda L, a, s: L.det(s).sum(),
    "slogdet": lambda L, a, s: L.slogdet(s).logabsdet.sum(),
    "pinv": lambda L, a, s: L.pinv(a).sum(),
    "lstsq": lambda L, a, s: L.lstsq(a, a[..., :1]).solution.sum(),
    "matrix_exp": lambda L, a, s: L.matrix_exp(s).sum(),
    "solve_triangular": lambda L, a, s: L.solve_triangular(s, a[..., :3, :], upper=True).sum(),
    "matrix_norm nuc": lambda L, a, s: L.matrix_norm(a, "nuc").sum(),
    "lu_factor": lambda L, a, s: L.lu_factor(s).LU.sum(),
    "lu": lambda L, a, s: (lambda P, L_, U: L_.sum() + U.sum())(*L.lu(a)),
    "lu_solve": lambda L, a, s: L.lu_solve(*L.lu_factor(s), a[..., :3, :], adjoint=True).sum(),
    "cond": lambda L, a, s: L.cond(s, 1).sum() + L.cond(a).sum(),
    "householder_product": lambda L, a, s: L.householder_product(a, s[..., 0]).sum(),
}


def _eye_like(x):
    return ml.eye(x.shape[-1], dtype=x.dtype, device=x.device)


@pytest.mark.parametrize("name", list(CUDA_CALLS))
def test_cupy_path_through_the_stand_in(name, monkeypatch):
    """Each function on ``cuda`` (CuPy 13.3's names and keywords, device arrays that refuse implicit host
    conversion) gives cpu's value and gradient."""
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
    import fake_cupy
    arrays = RNG.standard_normal((2, 4, 3)), RNG.standard_normal((2, 3, 3))
    found = []
    for device in ("cpu", "cuda"):
        if device == "cuda":
            fake_cupy.install(monkeypatch)
        a, s = (ml.tensor(x, device=device, requires_grad=True) for x in arrays)
        loss = CUDA_CALLS[name](LA, a, s)
        loss.backward()
        found.append([loss.item()] + [x.grad.cpu().numpy() if x.grad is not None else None for x in (a, s)])
    assert found[0][0] == pytest.approx(found[1][0], rel=1e-10, abs=1e-10)
    for m, c in zip(found[0][1:], found[1][1:]):
        assert (m is None) == (c is None)
        if m is not None:
            np.testing.assert_allclose(c, m, rtol=1e-9, atol=1e-10)


def test_eig_on_cupy_is_refused_with_a_clear_message(monkeypatch):
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
    import fake_cupy
    fake_cupy.install(monkeypatch)
    with pytest.raises(NotImplementedError, match="CuPy has no general"):
        LA.eigvals(ml.eye(3, device="cuda"))


# ---- the round-6 functions, at their edges (each was a divergence) -------------------------------------------
SQUARE = RNG.standard_normal((3, 3))
EDGES = {  # call(lib): torch's value (dtype, shape, values with nan/inf) or torch's error type and first words
    "vecdot of integers": lambda L: L.linalg.vecdot(L.tensor([1, 2]), L.tensor([3, 4])),
    "vecdot of two dtypes": lambda L: L.linalg.vecdot(L.tensor([1.0, 2.0]), L.tensor([3, 4])),
    "vander of a 0-d tensor": lambda L: L.linalg.vander(L.tensor(2.0)),
    "vander of bools": lambda L: L.linalg.vander(L.tensor([True, False]), N=3),
    "vector_norm dtype narrowing": lambda L: L.linalg.vector_norm(L.ones(3, dtype=L.float64), dtype=L.float32),
    "vector_norm dtype widening": lambda L: L.linalg.vector_norm(L.ones(3, dtype=L.float16), dtype=L.float32),
    "vector_norm integer dtype": lambda L: L.linalg.vector_norm(L.ones(3), dtype=L.long),
    "vector_norm string ord": lambda L: L.linalg.vector_norm(L.ones(3), "fro"),
    "vector_norm empty, -1": lambda L: L.linalg.vector_norm(L.ones(0), -1),
    "vector_norm empty dim, inf": lambda L: L.linalg.vector_norm(L.ones(2, 0), math.inf, dim=1),
    "vector_norm non-empty dim of an empty tensor": lambda L: L.linalg.vector_norm(L.ones(2, 0), math.inf, dim=0),
    "vector_norm 0-d, dim=0": lambda L: L.linalg.vector_norm(L.tensor(-3.0), 1, dim=0),
    "vector_norm 0-d, dim=(-1,) keepdim": lambda L: L.linalg.vector_norm(L.tensor(-3.0), 2, dim=(-1,), keepdim=True),
    "vector_norm 0-d, dim=1": lambda L: L.linalg.vector_norm(L.tensor(-3.0), 2, dim=1),
    "vector_norm repeated dim": lambda L: L.linalg.vector_norm(L.ones(2, 3), 2, dim=(0, 0)),
    "matrix_norm dtype narrowing": lambda L: L.linalg.matrix_norm(L.ones(2, 2, dtype=L.float64), "nuc",
                                                                 dtype=L.float32),
    "matrix_norm integer dtype": lambda L: L.linalg.matrix_norm(L.ones(2, 2), dtype=L.long),
    "matrix_norm dtype=": lambda L: L.linalg.matrix_norm(L.tensor(SQUARE).float(), 1, dtype=L.float64),
    "norm dtype narrowing": lambda L: L.linalg.norm(L.ones(2, 2, dtype=L.float64), dtype=L.float32),
    "eigvalsh UPLO='u'": lambda L: L.linalg.eigvalsh(L.tensor(np.triu(SQUARE)), "u"),
    "eigh UPLO='l'": lambda L: L.linalg.eigh(L.tensor(np.tril(SQUARE)), UPLO="l").eigenvalues,
    "solve_ex, one singular matrix in the batch": lambda L: L.linalg.solve_ex(
        L.stack([L.eye(2), L.zeros(2, 2)]), L.ones(2)),
    "solve_ex singular": lambda L: L.linalg.solve_ex(L.tensor(SINGULAR), L.ones(2, 1, dtype=L.float64)),
    "inv_ex singular": lambda L: L.linalg.inv_ex(L.stack([L.tensor(SINGULAR), L.eye(2, dtype=L.float64)])),
    "matrix_exp 0x0": lambda L: L.linalg.matrix_exp(L.ones(0, 0)),
    "cross of a matrix and a vector along dim 1": lambda L: L.linalg.cross(L.ones(2, 3, 3), L.ones(3), dim=1),
    # empty and thin matrices (ragged sizes)
    **{f"lu {shape}": (lambda L, shape=shape: L.linalg.lu(L.ones(shape))) for shape in [(0, 3), (3, 0), (2, 0, 0)]},
    **{f"lu_unpack {shape}": (lambda L, shape=shape: L.lu_unpack(*L.linalg.lu_factor_ex(L.ones(shape))[:2]))
       for shape in [(0, 3), (3, 0), (2, 1, 1), (1, 4)]},
    "lu_solve 0x0": lambda L: L.linalg.lu_solve(*L.linalg.lu_factor(L.ones(2, 0, 0)), L.ones(2, 0, 2)),
    "cholesky_inverse 0x0": lambda L: L.cholesky_inverse(L.ones(2, 0, 0)),
    "cholesky_solve non-square factor": lambda L: L.cholesky_solve(L.ones(4, 2), L.ones(4, 1)),
    "matrix_norm 2 of empty": lambda L: L.linalg.matrix_norm(L.ones(2, 0, 3), 2),
    "matrix_norm -2 of empty": lambda L: L.linalg.matrix_norm(L.ones(2, 0, 3), -2),
    "matrix_norm inf of empty": lambda L: L.linalg.matrix_norm(L.ones(2, 0, 3), math.inf),
    "matrix_norm -1 of empty": lambda L: L.linalg.matrix_norm(L.ones(3, 0), -1),
    "cond 1 of empty non-square": lambda L: L.linalg.cond(L.ones(0, 3), 1),
    "cond fro of empty non-square": lambda L: L.linalg.cond(L.ones(0, 3), "fro"),
    "geqrf of 1x4": lambda L: L.geqrf(L.tensor([[1.0, 2.0, 3.0, 4.0]])),
    # cholesky_ex of a matrix that is not positive-definite: L is what LAPACK's potrf left
    **{f"cholesky_ex not positive-definite {i}": (lambda L, m=np.array(m), i=i: L.linalg.cholesky_ex(L.tensor(m),
                                                                                                   upper=i == 1))
       for i, m in enumerate([[[4.0, 2, 1], [2, -3, 1], [1, 1, 5]], [[-1.0, 5], [5, 2]],
                              [[[4.0, 2, 1, 0], [2, 5, 1, 1], [1, 1, -5, 2], [0, 1, 2, 3]], np.eye(4).tolist()]])},
    "cholesky_ex check_errors": lambda L: L.linalg.cholesky_ex(L.stack([L.eye(2), -L.eye(2)]), check_errors=True),
    "cholesky_ex non-square": lambda L: L.linalg.cholesky_ex(L.ones(2, 3)),
    "inv_ex non-square": lambda L: L.linalg.inv_ex(L.ones(2, 3)),
    "solve_ex shapes": lambda L: L.linalg.solve_ex(L.eye(2), L.ones(3)),
    "solve_ex dtypes": lambda L: L.linalg.solve_ex(L.eye(2), L.ones(2, dtype=L.float64)),
    "pinv hermitian non-square": lambda L: L.linalg.pinv(L.ones(2, 3), hermitian=True),
    "pinv hermitian empty non-square": lambda L: L.linalg.pinv(L.ones(0, 3), hermitian=True),
    "matrix_rank hermitian empty": lambda L: L.linalg.matrix_rank(L.ones(3, 0), hermitian=True),
    "eigvals 1x1": lambda L: L.linalg.eigvals(L.tensor([[-2.0]])),
    "vector_norm float16": lambda L: L.linalg.vector_norm(L.tensor([[3.0, 4.0], [1.0, 2.0]], dtype=L.float16)),
    "vector_norm bfloat16, ord 3": lambda L: L.linalg.vector_norm(L.tensor([3.0, 4.0, 1.0], dtype=L.bfloat16), 3),
    "matrix_norm float16, 1": lambda L: L.linalg.matrix_norm(L.tensor([[3.0, 4.0], [1.0, 2.0]], dtype=L.float16), 1),
    "matrix_norm bfloat16, fro": lambda L: L.linalg.norm(L.tensor([[3.0, 4.0], [1.0, 2.0]], dtype=L.bfloat16)),
    "matrix_norm float16, nuc": lambda L: L.linalg.matrix_norm(L.ones(2, 2, dtype=L.float16), "nuc"),
    "matrix_exp batch of 0x0": lambda L: L.matrix_exp(L.ones(2, 0, 0)),
}


def _outcome(lib, call):
    try:
        result = call(lib)
    except Exception as error:  # noqa: BLE001
        kind = type(error) if type(error).__module__ == "builtins" else RuntimeError
        return ("error", kind, str(error).split(":")[0])
    return [(str(r.dtype).replace("torch.", ""), tuple(r.shape), np.array(r.tolist(), dtype=complex))
            for r in _outputs_of(result)]


@pytest.mark.parametrize("name", list(EDGES))
def test_round6_functions_at_their_edges(name):
    mine, theirs = _outcome(ml, EDGES[name]), _outcome(torch, EDGES[name])
    if theirs[0] == "error":
        assert mine[0] == "error" and issubclass(mine[1], theirs[1]) and mine[2] == theirs[2], (mine, theirs)
    else:
        assert [m[:2] for m in mine] == [t[:2] for t in theirs]
        for m, t in zip(mine, theirs):  # (nan and inf where torch has them)
            np.testing.assert_allclose(m[2], t[2], rtol=1e-12 if m[0] in ("float64", "complex128") else 1e-6)



@pytest.mark.parametrize("dtype", ["uint8", "int8", "int16", "int32", "bool"])
@pytest.mark.parametrize("call", [
    lambda L, d: L.linalg.vecdot(L.ones(2, dtype=d), L.ones(2, dtype=d)),
    lambda L, d: L.linalg.vector_norm(L.ones(2), dtype=d),
    lambda L, d: L.linalg.solve(L.eye(2), L.ones(2, 1, dtype=d)),
], ids=["vecdot", "vector_norm dtype=", "solve"])
def test_dtype_errors_name_the_dtype_as_torch(call, dtype):
    """The whole message, with torch's name of the dtype (Byte, Char, Short ...; minilora said uint8)."""
    with pytest.raises(RuntimeError) as mine:
        call(ml, getattr(ml, dtype))
    with pytest.raises(RuntimeError) as theirs:
        call(torch, getattr(torch, dtype))
    assert str(mine.value) == str(theirs.value)

# ---- LDL^T (Bunch-Kaufman, LAPACK's sytrf / sytrs) ---------------------------------------------------------------
def _symmetric(n, zero_diagonal=False, rounded=False):
    a = RNG.standard_normal((n, n))
    a = a + a.T
    if zero_diagonal:  # (2x2 pivots)
        a[np.diag_indices(n)] = 0
    return np.round(a) if rounded else a


def test_ldl_factor_and_solve_match_lapack():
    """The same pivots, blocks and multipliers as torch's LAPACK (1x1 and 2x2 pivots, ties among rounded entries)."""
    for trial in range(40):
        a = _symmetric(1 + trial % 6, zero_diagonal=trial % 3 == 0, rounded=trial % 4 == 0)
        mine, theirs = LA.ldl_factor_ex(ml.tensor(a)), torch.linalg.ldl_factor_ex(torch.tensor(a))
        assert _fields(mine) == _fields(theirs) == ["LD", "pivots", "info"]
        assert mine.pivots.tolist() == theirs.pivots.tolist() and mine.info.tolist() == theirs.info.tolist()
        _close(mine.LD, theirs.LD, tol=1e-10)
        if theirs.info.item() == 0:
            b = RNG.standard_normal((a.shape[0], 2))
            _close(LA.ldl_solve(mine.LD, mine.pivots, ml.tensor(b)),
                   torch.linalg.ldl_solve(theirs.LD, theirs.pivots, torch.tensor(b)), tol=1e-8)
    batch = np.stack([_symmetric(4, zero_diagonal=True), _symmetric(4)]).astype(np.float32)
    mine, theirs = LA.ldl_factor(ml.tensor(batch), hermitian=True), torch.linalg.ldl_factor(torch.tensor(batch))
    assert type(mine).__name__ == "linalg_ldl_factor" and mine.pivots.tolist() == theirs.pivots.tolist()
    _close(mine.LD, theirs.LD, tol=1e-5)
    b = RNG.standard_normal((3, 2, 4, 1)).astype(np.float32)  # broadcast (torch 2.13 crashes on it: expanded there)
    _close(LA.ldl_solve(*mine, ml.tensor(b)),
           torch.linalg.ldl_solve(theirs.LD.expand(3, 2, 4, 4), theirs.pivots.expand(3, 2, 4), torch.tensor(b)), 1e-4)
    x = ml.tensor(batch[0].astype(np.float64), requires_grad=True)
    with pytest.raises(RuntimeError, match="derivative for aten::linalg_ldl_factor_ex is not implemented"):
        LA.ldl_factor(x).LD.sum().backward()
    LD, pivots, info = LA.ldl_factor_ex(ml.zeros(2, 3, 3))  # singular: info, and an error where asked
    assert info.tolist() == torch.linalg.ldl_factor_ex(torch.zeros(2, 3, 3)).info.tolist() == [1, 1]
    for call in (lambda: LA.ldl_factor(ml.zeros(3, 3)), lambda: LA.ldl_factor_ex(ml.zeros(3, 3), check_errors=True)):
        with pytest.raises(LA.LinAlgError, match="singular"):
            call()


LDL_ERRORS = {
    "ldl non-square": lambda L: L.linalg.ldl_factor(L.ones(2, 3)),
    "ldl 1d": lambda L: L.linalg.ldl_factor(L.ones(3)),
    "ldl int": lambda L: L.linalg.ldl_factor(L.ones(2, 2, dtype=L.long)),
    "ldl_solve vector": lambda L: L.linalg.ldl_solve(*L.linalg.ldl_factor(L.eye(3)), L.ones(3)),
    "ldl_solve shapes": lambda L: L.linalg.ldl_solve(*L.linalg.ldl_factor(L.eye(3)), L.ones(4, 1)),
    "ldl_solve dtypes": lambda L: L.linalg.ldl_solve(*L.linalg.ldl_factor(L.eye(3)), L.ones(3, 1, dtype=L.float64)),
}


@pytest.mark.parametrize("name", list(LDL_ERRORS))
def test_ldl_errors_as_torch(name):
    with pytest.raises(Exception) as theirs:
        LDL_ERRORS[name](torch)
    with pytest.raises(Exception) as mine:
        LDL_ERRORS[name](ml)
    assert isinstance(mine.value, type(theirs.value) if type(theirs.value).__module__ == "builtins" else RuntimeError)
    assert str(mine.value).split(":")[0] == str(theirs.value).split(":")[0]


def test_complex_tensors_print_as_torchs():
    values = [np.array([1 + 2j, 3 - 1j, 0j]), np.array([[0.5 - 1.25j, 100 + 0.001j], [-3j, 2]]),
              np.array([1e-5 + 1j, 2 + 3e6j]), np.array(2.5 - 1j), np.array([1j] * 20),
              np.array([np.nan + 1j, -np.inf])]
    for v in values:
        for dtype in (np.complex128, np.complex64):  # (complex64 is the default complex dtype: not named)
            assert repr(ml.tensor(v.astype(dtype))) == repr(torch.tensor(v.astype(dtype)))
    a = RNG.standard_normal((3, 3))
    assert repr(LA.eigvals(ml.tensor(a, requires_grad=True))) == repr(torch.linalg.eigvals(torch.tensor(
        a, requires_grad=True)))


CUDA_SINGULAR = {  # the error and info paths (NumPy-like raising in the stand-in; see the report on real CuPy)
    "inv_ex": lambda L, s: L.inv_ex(s),
    "solve_ex": lambda L, s: L.solve_ex(s, s[..., :1]),
    "cholesky_ex": lambda L, s: L.cholesky_ex(s - 2 * _eye_like(s)),
    "lu_factor_ex": lambda L, s: L.lu_factor_ex(s),
    "ldl_factor_ex": lambda L, s: L.ldl_factor_ex(s),
    "ldl_solve": lambda L, s: L.ldl_solve(*L.ldl_factor(s + _eye_like(s)), s[..., :2]),
    "cond fro": lambda L, s: L.cond(s, "fro"),
    "solve_triangular": lambda L, s: L.solve_triangular(s, s[..., :1], upper=True),
}


@pytest.mark.parametrize("name", list(CUDA_SINGULAR))
def test_cupy_path_of_singular_matrices(name, monkeypatch):
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
    import fake_cupy
    s = np.stack([np.eye(3), np.diag([1.0, 0.0, 1.0])])  # the second matrix singular, its D / pivot zero
    s[:, 0, 2] = s[:, 2, 0] = 0.5
    found = []
    for device in ("cpu", "cuda"):
        if device == "cuda":
            fake_cupy.install(monkeypatch)
        with np.errstate(all="ignore"):
            found.append([o.cpu().numpy() for o in _outputs_of(CUDA_SINGULAR[name](LA, ml.tensor(s, device=device)))])
    for cpu, cuda in zip(*found):  # (the CPU's norms add in torch's CPU order, the GPU's in NumPy's: last bits)
        np.testing.assert_allclose(cpu, cuda, rtol=1e-14)
    with pytest.raises(LA.LinAlgError, match="Batch element 1"):
        LA.cholesky(ml.tensor(s, device="cuda") - 0.5 * _eye_like(ml.tensor(s)).to("cuda"))
