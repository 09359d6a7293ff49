"""``minilora.linalg`` side by side with ``torch.linalg`` 2.13, round 7: the rest of it.

eig / eigvals (complex results, and the complex tensors they need: real, imag, abs, angle, conj,
view_as_real), the LU family (lu_factor, lu_factor_ex, lu, lu_solve, torch.lu_unpack, torch.lu), ldl_factor /
ldl_solve, cholesky_solve / cholesky_inverse, torch.triangular_solve, cond, geqrf / householder_product / ormqr,
tensorinv / tensorsolve, and the CuPy path of the decompositions (tests/fake_cupy.py as ``cuda``).
Values, dtypes, shapes, named-tuple fields, errors (types) and float64 gradients are compared with torch; each
differentiable function is also gradchecked against central differences.
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
    return [f for f in ("eigenvalues", "eigenvectors", "LU", "pivots", "info", "P", "L", "U", "LD", "solution",
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
    A = _pair(3, 3)[0]
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
    assert ml.real(r) is r and ml.conj(r) is r and ml.angle(r).tolist() == torch.angle(torch.tensor([-1.0, 2.0])).tolist()
    assert ml.complex64 == np.complex64 and ml.cdouble == np.complex128
    for call in (lambda L: L.imag(L.ones(2)), lambda L: L.view_as_real(L.ones(2)),
                 lambda L: L.view_as_complex(L.ones(3)), lambda L: L.complex(L.ones(2), L.ones(2, dtype=L.float64))):
        with pytest.raises(RuntimeError):
            call(torch)
        with pytest.raises(RuntimeError):
            call(ml)


def test_complex_gradient_through_an_op_without_a_complex_rule_is_refused():
    """minilora's mul/matmul derivatives are written for real numbers: a complex gradient reaching one raises
    (NotImplementedError naming the op) instead of returning a wrong gradient; sums, reshapes and indexing
    take complex gradients (their derivative has real coefficients)."""
    A = ml.tensor(RNG.standard_normal((3, 3)), requires_grad=True)
    L = LA.eigvals(A)
    with pytest.raises(NotImplementedError, match="no complex derivative for Mul"):
        (L * L).real.sum().backward()
    At = torch.tensor(A.detach().numpy(), requires_grad=True)
    (L[1:].reshape(2, 1).sum() + L[0]).real.backward()
    (torch.linalg.eigvals(At)[1:].reshape(2, 1).sum() + torch.linalg.eigvals(At)[0]).real.backward()
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
