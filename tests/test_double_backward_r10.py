"""Second derivatives (create_graph=True) through what round 9 left refusing: the factorizations (svd,
svdvals, the spectral and nuclear norms, eigh, eigvalsh, qr, lu, lu_factor, pinv, lstsq, matrix_exp,
triangular_solve), checkpointing, max_unpool2d, and a recorded pass that stops at a non-leaf input -- each
against torch in float64, on batched and non-square ("ragged") shapes.

The losses are functions torch and minilora agree on whatever signs LAPACK gives the singular vectors and
eigenvectors (U diag(f(S)) Vh, V diag(f(L)) V^T, Q Q^T, R^T R, Q's columns times R's diagonal, projectors):
torch's LAPACK and NumPy's may choose other signs, and torch's second derivatives do not depend on them."""
import warnings

import numpy as np
import pytest

import minilora as ml

torch = pytest.importorskip("torch")

from test_double_backward_r8 import close  # noqa: E402  (float64, 1e-10 relative)

RNG = np.random.default_rng(10)


def _svd_parts(lib, A, full_matrices=False):
    U, S, Vh = lib.linalg.svd(A, full_matrices=full_matrices)
    k = S.shape[-1]
    Uk, Vhk = U[..., :k], Vh[..., :k, :]
    parts = [(Uk * S.exp().unsqueeze(-2)) @ Vhk, Uk @ Uk.mT, Vhk.mT @ Vhk]
    if full_matrices:  # (the vectors past k: torch gives them no gradient; the projector on them is sign-free)
        parts.append(U[..., k:] @ U[..., k:].mT * 0.5)
    return parts


def _eigh_parts(lib, A):
    L, V = lib.linalg.eigh(A + A.mT)
    return [(V * L.sin().unsqueeze(-2)) @ V.mT, L * L]


def _qr_parts(lib, A, mode="reduced"):
    Q, R = lib.linalg.qr(A, mode=mode)
    k = min(A.shape[-2:])
    return [Q @ Q.mT, R.mT @ R, Q[..., :k] * R.diagonal(0, -2, -1).unsqueeze(-2), R * R]


def _lu_parts(lib, A):
    P, L, U = lib.linalg.lu(A)
    return [L @ L.mT, U * U, P @ L @ U]


def _shifted(lib, A):
    return A + 3 * lib.eye(A.shape[-1], dtype=lib.float64)


# name -> (the shape of A, the function of A whose parts' squares are summed)
CASES = {
    "svd_batched_tall": ((2, 4, 3), _svd_parts),
    "svd_wide": ((3, 5), _svd_parts),
    "svd_full_matrices": ((2, 5, 3), lambda lib, A: _svd_parts(lib, A, full_matrices=True)),
    "svdvals_and_matrix_norms": ((2, 3, 5), lambda lib, A: [
        lib.linalg.svdvals(A).sqrt(), lib.linalg.matrix_norm(A, 2), lib.linalg.matrix_norm(A, "nuc"),
        lib.linalg.norm(A, -2, dim=(-2, -1)), lib.linalg.cond(A)]),
    "eigh_batched": ((2, 4, 4), _eigh_parts),
    "eigvalsh_upper_triangle": ((3, 3), lambda lib, A: [lib.linalg.eigvalsh(A, UPLO="U") ** 2]),
    "qr_batched_tall": ((2, 5, 3), _qr_parts),
    "qr_wide": ((3, 5), _qr_parts),
    "qr_complete_wide": ((2, 3, 4), lambda lib, A: _qr_parts(lib, A, "complete")),
    "lu_batched_square": ((2, 4, 4), _lu_parts),
    "lu_tall": ((5, 3), _lu_parts),
    "lu_wide": ((2, 3, 5), _lu_parts),
    "lu_factor": ((2, 3, 4), lambda lib, A: [lib.linalg.lu_factor(A)[0] ** 2]),
    "lu_factor_solve": ((3, 3), lambda lib, A: [lib.linalg.lu_solve(*lib.linalg.lu_factor(_shifted(lib, A)), A.mT)]),
    "pinv_tall_wide_hermitian": ((2, 4, 3), lambda lib, A: [
        lib.linalg.pinv(A), lib.linalg.pinv(A.mT) * 2, lib.linalg.pinv(A.mT @ A + 1, hermitian=True)]),
    "lstsq": ((2, 5, 3), lambda lib, A: [lib.linalg.lstsq(A, A[..., :2] * A[..., 1:] + 1).solution]),
    "matrix_exp_and_power": ((2, 3, 3), lambda lib, A: [
        lib.linalg.matrix_exp(A * 0.7), lib.matrix_exp(A.mT) * A, lib.linalg.matrix_power(_shifted(lib, A), -2)]),
    "triangular_solve": ((4, 4), lambda lib, A: [
        lib.triangular_solve(A[:, :3] * A[:, 1:], _shifted(lib, A), upper=False)[0],
        lib.triangular_solve(A[:, :2], _shifted(lib, A), transpose=True, unitriangular=True)[0]]),
}


def _gradients(lib, name, a, v):
    """The loss's gradient (recorded), a Hessian-vector product from it, and a third derivative."""
    A = lib.tensor(a, dtype=lib.float64, requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (triangular_solve's deprecation)
        loss = sum((part ** 2).sum() for part in CASES[name][1](lib, A))
    g, = lib.autograd.grad(loss, A, create_graph=True)
    hv, = lib.autograd.grad((g * lib.tensor(v)).sum(), A, create_graph=True)
    third, = lib.autograd.grad((hv * hv).sum(), A)
    return g, hv, third


@pytest.mark.parametrize("name", sorted(CASES))
def test_second_and_third_derivatives_match_torch(name):
    a = RNG.standard_normal(CASES[name][0])
    v = RNG.standard_normal(a.shape)
    for mine, theirs in zip(_gradients(ml, name, a, v), _gradients(torch, name, a, v)):
        close(mine, theirs, rtol=1e-9, atol=1e-10)


def test_gradgradcheck_and_hvp_through_the_factorizations():
    """The recorded gradient is the plain pass's, minilora's gradgradcheck (finite differences of the recorded
    gradient) passes where torch's does, and autograd.functional.hvp gives torch's product."""
    a = RNG.standard_normal((2, 4, 3))
    for f in (lambda lib, A: _svd_parts(lib, A)[0], lambda lib, A: _qr_parts(lib, A)[2],
              lambda lib, A: _lu_parts(lib, A.mT @ A)[1], lambda lib, A: lib.linalg.pinv(A)):
        A = ml.tensor(a, requires_grad=True)
        recorded, plain = (ml.autograd.grad((f(ml, A) ** 3).sum(), A, create_graph=graph)[0] for graph in (True, False))
        close(recorded, plain, rtol=1e-13)
        for lib in (ml, torch):
            assert lib.autograd.gradgradcheck(lambda A: f(lib, A), (lib.tensor(a, requires_grad=True),))
    v = RNG.standard_normal((3, 3))
    results = [lib.autograd.functional.hvp(lambda A: (_eigh_parts(lib, A)[0] ** 2).sum() + lib.linalg.svdvals(A).sum(),
                                           lib.tensor(a[0, :3]), lib.tensor(v)) for lib in (ml, torch)]
    for mine, theirs in zip(*results):
        close(mine, theirs)


def test_qr_refusals_under_create_graph_are_torchs():
    for lib in (ml, torch):
        A = lib.tensor(RNG.standard_normal((4, 3)), requires_grad=True)
        with pytest.raises(RuntimeError, match="depends on Q, which is not computed when mode='r'"):
            lib.autograd.grad(lib.linalg.qr(A, mode="r")[1].sum(), A, create_graph=True)
        with pytest.raises(RuntimeError, match="not differentiable when mode='complete' and nrows > ncols"):
            lib.autograd.grad(lib.linalg.qr(A, mode="complete")[0].sum(), A, create_graph=True)


def _after_eigenvalues(lib, a):
    """A non-leaf x computed from complex eigenvalues (minilora's recorded pass has no complex ops)."""
    A = lib.tensor(a, requires_grad=True)
    x = lib.linalg.eigvals(A).real * 1.5
    return A, x, (x.sin() * x * x).sum()


def test_the_recorded_pass_stops_at_a_non_leaf_input():
    """grad(y, x, create_graph=True) with x computed from A: torch runs only the nodes between y and x, so
    nothing before x is differentiated (minilora went on to A and refused at the complex eigenvalues); the
    graph before x is left for a later backward; backward(inputs=[x]) likewise."""
    a = np.array([[2.0, 1, 0], [0.5, 3, 1], [0, 1, 4]])
    results = []
    for lib in (ml, torch):
        A, x, y = _after_eigenvalues(lib, a)
        g, = lib.autograd.grad(y, x, create_graph=True)
        h, = lib.autograd.grad((g ** 2).sum(), x)  # (a plain pass: it stops at x too, freeing nothing before it)
        x.sum().backward()
        A2, x2, y2 = _after_eigenvalues(lib, a)
        y2.backward(create_graph=True, inputs=[x2])
        results.append([g, h, A.grad, x2.grad, A2.grad])
    for mine, theirs in zip(*results):
        close(mine, theirs)
