"""``minilora.linalg`` side by side with ``torch.linalg`` 2.13 (round 6).

LoRA tutorials measure a weight update's "intrinsic rank" with ``torch.linalg.svd`` / ``matrix_rank`` /
``svdvals``, initialize PiSSA from ``svd(W, full_matrices=False)`` and take norms with ``linalg.norm``.
Each function is compared on values, dtypes, shapes, named-tuple fields, errors and gradients (float64,
against torch's backward and against central differences). Where torch's result is only defined up to a
sign per column (svd, eigh, qr), what torch guarantees is compared: reconstructions, singular values and
eigenvalues, ``|U^T U_torch| = I``, and losses that do not depend on the signs.
"""
import math
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import minilora as ml  # noqa: E402
from minilora import linalg as LA  # noqa: E402

RNG = np.random.default_rng(6)


def _pair(*shape, dtype=np.float64, spd=False, requires_grad=True):
    a = RNG.standard_normal(shape)
    if spd:
        a = a @ np.swapaxes(a, -1, -2) + shape[-1] * np.eye(shape[-1])
    a = a.astype(dtype)
    return ml.tensor(a, requires_grad=requires_grad), torch.tensor(a, requires_grad=requires_grad)


def _np(t):
    return t.detach().numpy() if isinstance(t, torch.Tensor) else t.detach().numpy()


def _close(mine, theirs, tol=1e-10):
    assert tuple(mine.shape) == tuple(theirs.shape)
    assert str(mine.dtype) == str(theirs.dtype).replace("torch.", "")
    np.testing.assert_allclose(_np(mine), _np(theirs), rtol=tol, atol=tol)


def _grads_agree(ml_inputs, torch_inputs, ml_loss, torch_loss, tol=1e-8):
    ml_loss.backward()
    torch_loss.backward()
    for a, t in zip(ml_inputs, torch_inputs):
        np.testing.assert_allclose(a.grad.numpy(), t.grad.numpy(), rtol=tol, atol=tol)


def _weights(shape):
    w = RNG.standard_normal(shape)
    return ml.tensor(w), torch.tensor(w)


# ---- decompositions: what torch guarantees, and the gradients of sign-free losses --------------------
@pytest.mark.parametrize("shape", [(5, 3), (3, 5), (2, 4, 4)])
def test_svd_values_reconstruction_and_gradient(shape):
    a, t = _pair(*shape)
    U, S, Vh = LA.svd(a, full_matrices=False)
    Ut, St, Vht = torch.linalg.svd(t, full_matrices=False)
    assert type(LA.svd(a)).__name__ == "linalg_svd" and LA.svd(a).U.shape == torch.linalg.svd(t).U.shape
    _close(S, St)
    np.testing.assert_allclose(_np((U * S.unsqueeze(-2)) @ Vh), _np(t), atol=1e-12)
    np.testing.assert_allclose(np.abs(np.swapaxes(_np(U), -1, -2) @ _np(Ut)), np.eye(min(shape[-2:])) +
                               np.zeros(shape[:-2] + (1, 1)), atol=1e-8)
    w, wt = _weights(shape)
    # sign-free: the rank-1 projector of the top singular pair, the singular values, the reconstruction
    loss = ((U[..., :1] @ Vh[..., :1, :]) * w).sum() + S.pow(3).sum() + ((U @ U.mT) * (U @ U.mT)).sum()
    loss_t = ((Ut[..., :1] @ Vht[..., :1, :]) * wt).sum() + St.pow(3).sum() + ((Ut @ Ut.mT) * (Ut @ Ut.mT)).sum()
    _grads_agree([a], [t], loss, loss_t)
    assert U.grad_fn.name() == Ut.grad_fn.name() == "LinalgSvdBackward0"


def test_svd_full_matrices_and_svdvals_and_old_svd():
    a, t = _pair(4, 2)
    for full in (True, False):
        U, S, Vh = LA.svd(a, full)
        Ut, St, Vht = torch.linalg.svd(t, full)
        assert U.shape == Ut.shape and Vh.shape == Vht.shape
        np.testing.assert_allclose(np.abs(_np(U).T @ _np(Ut)), np.eye(U.shape[-1]), atol=1e-8)
    U, S, Vh = LA.svd(a, full_matrices=True)  # (the gradient ignores the vectors past min(m, n), as torch's)
    Ut, St, Vht = torch.linalg.svd(t, full_matrices=True)
    _grads_agree([a], [t], (U[:, :2] @ Vh).pow(2).sum() + S.sum() + U[:, 2:].sum(),
                 (Ut[:, :2] @ Vht).pow(2).sum() + St.sum() + Ut[:, 2:].sum())
    a.grad, t.grad = None, None
    s, st = LA.svdvals(a), torch.linalg.svdvals(t)
    _close(s, st)
    _grads_agree([a], [t], s.sum() + s.max(), st.sum() + st.max())
    # torch.svd: V (not Vh), some=True reduced, compute_uv=False zero-filled U and V (m x m, n x n)
    for kwargs in ({}, {"some": False}, {"compute_uv": False}):
        mine, theirs = ml.svd(a, **kwargs), torch.svd(t, **kwargs)
        assert type(mine).__name__ == "svd" and [x.shape for x in mine] == [tuple(x.shape) for x in theirs]
        _close(mine.S, theirs.S)
    U, S, V = a.svd()
    np.testing.assert_allclose(_np((U * S) @ V.mT), _np(t), atol=1e-12)


def test_svd_float32_is_computed_in_float32():
    a, t = _pair(6, 4, dtype=np.float32, requires_grad=False)
    S, St = LA.svdvals(a), torch.linalg.svdvals(t)
    assert S.dtype == ml.float32
    np.testing.assert_allclose(S.numpy(), St.numpy(), rtol=1e-5, atol=1e-5)
    assert LA.matrix_rank(a).item() == torch.linalg.matrix_rank(t).item() == 4


@pytest.mark.parametrize("shape,mode", [((5, 3), "reduced"), ((3, 5), "reduced"), ((4, 4), "complete"),
                                        ((3, 5), "complete"), ((2, 4, 3), "reduced")])
def test_qr_values_and_gradient(shape, mode):
    a, t = _pair(*shape)
    Q, R = LA.qr(a, mode)
    Qt, Rt = torch.linalg.qr(t, mode)
    assert Q.shape == Qt.shape and R.shape == Rt.shape
    np.testing.assert_allclose(_np(Q @ R), _np(t), atol=1e-12)
    np.testing.assert_allclose(np.abs(_np(Q)), np.abs(_np(Qt)), atol=1e-10)  # (same Householder signs up to +-)
    w1, w1t = _weights(Q.shape)
    w2, w2t = _weights(R.shape)
    signs = np.sign(np.diagonal(_np(R), 0, -2, -1) * np.diagonal(_np(Rt), 0, -2, -1))
    if np.all(signs == 1):  # the same factors: any loss
        _grads_agree([a], [t], (Q * w1).sum() + (R * w2).sum(), (Qt * w1t).sum() + (Rt * w2t).sum())
    else:  # a sign-free loss
        _grads_agree([a], [t], (R * R * w2).sum(), (Rt * Rt * w2t).sum())
    assert LA.qr(a, mode="r").Q.shape == torch.linalg.qr(t, mode="r").Q.shape == (0,)


@pytest.mark.parametrize("UPLO", ["L", "U"])
def test_eigh_values_vectors_and_gradient(UPLO):
    a, t = _pair(2, 4, 4)
    w, V = LA.eigh(a, UPLO)  # (only the UPLO triangle is read: a non-symmetric input, as torch)
    wt, Vt = torch.linalg.eigh(t, UPLO)
    _close(w, wt)
    np.testing.assert_allclose(np.abs(np.swapaxes(_np(V), -1, -2) @ _np(Vt)), np.eye(4) + np.zeros((2, 1, 1)),
                               atol=1e-8)
    s, st = a + a.mT, t + t.mT
    w, V = LA.eigh(s, UPLO=UPLO)
    wt, Vt = torch.linalg.eigh(st, UPLO=UPLO)
    weights, weights_t = _weights((4, 4))
    loss = w.pow(2).sum() + ((V[..., :1] @ V[..., :1].mT) * weights).sum()
    loss_t = wt.pow(2).sum() + ((Vt[..., :1] @ Vt[..., :1].mT) * weights_t).sum()
    _grads_agree([a], [t], loss, loss_t)
    assert w.grad_fn.name() == wt.grad_fn.name() and type(LA.eigh(s)).__name__ == "linalg_eigh"
    a, t = _pair(3, 3)
    _close(LA.eigvalsh(a + a.mT), torch.linalg.eigvalsh(t + t.mT))
    _grads_agree([a], [t], LA.eigvalsh(a + a.mT).pow(3).sum(), torch.linalg.eigvalsh(t + t.mT).pow(3).sum())


# ---- the functions with one answer: values and gradients ---------------------------------------------
def _spd(lib, a):
    return a @ a.mT + 4 * lib.eye(a.shape[-1], dtype=a.dtype)


CASES = {  # name: (call(lib, *tensors), shapes)
    "det": (lambda L, a: L.linalg.det(a), [(2, 3, 3)]),
    "torch.det": (lambda L, a: L.det(a), [(3, 3)]),
    "logdet": (lambda L, a: L.logdet(_spd(L, a)), [(3, 3)]),
    "slogdet": (lambda L, a: L.linalg.slogdet(a).logabsdet, [(2, 3, 3)]),
    "inv": (lambda L, a: L.linalg.inv(a), [(2, 3, 3)]),
    "inverse": (lambda L, a: L.inverse(a), [(3, 3)]),
    "inv_ex": (lambda L, a: L.linalg.inv_ex(a).inverse, [(3, 3)]),
    "solve": (lambda L, a, b: L.linalg.solve(a, b), [(2, 3, 3), (2, 3, 2)]),
    "solve_vec": (lambda L, a, b: L.linalg.solve(a, b), [(3, 3), (3,)]),
    "solve_bcast": (lambda L, a, b: L.linalg.solve(a, b), [(2, 3, 3), (3, 4)]),
    "solve_right": (lambda L, a, b: L.linalg.solve(a, b, left=False), [(3, 3), (2, 3)]),
    "solve_tri_upper": (lambda L, a, b: L.linalg.solve_triangular(a + 3 * L.eye(3, dtype=a.dtype), b, upper=True),
                        [(3, 3), (3, 2)]),
    "solve_tri_lower_right_unit": (lambda L, a, b: L.linalg.solve_triangular(a, b, upper=False, left=False,
                                                                             unitriangular=True), [(3, 3), (2, 3)]),
    "cholesky": (lambda L, a: L.linalg.cholesky(_spd(L, a)), [(2, 3, 3)]),
    "cholesky_upper": (lambda L, a: L.linalg.cholesky(_spd(L, a), upper=True), [(3, 3)]),
    "cholesky_ex": (lambda L, a: L.linalg.cholesky_ex(_spd(L, a)).L, [(3, 3)]),
    "pinv_tall": (lambda L, a: L.linalg.pinv(a), [(4, 2)]),
    "pinv_wide": (lambda L, a: L.linalg.pinv(a), [(2, 2, 4)]),
    "pinv_hermitian": (lambda L, a: L.linalg.pinv(_spd(L, a), hermitian=True), [(3, 3)]),
    "pinverse": (lambda L, a: L.pinverse(a), [(3, 2)]),
    "lstsq": (lambda L, a, b: L.linalg.lstsq(a, b).solution, [(5, 3), (5, 2)]),
    "matrix_power_3": (lambda L, a: L.linalg.matrix_power(a, 3), [(2, 3, 3)]),
    "matrix_power_-2": (lambda L, a: L.matrix_power(a, -2), [(3, 3)]),
    "matrix_exp": (lambda L, a: L.linalg.matrix_exp(a), [(2, 3, 3)]),
    "matrix_exp_big": (lambda L, a: L.matrix_exp(4 * a), [(3, 3)]),
    "multi_dot": (lambda L, a, b, c: L.linalg.multi_dot([a, b, c]), [(4,), (4, 6), (6, 2)]),
    "cross": (lambda L, a, b: L.linalg.cross(a, b), [(2, 3), (1, 3)]),
    "vecdot": (lambda L, a, b: L.linalg.vecdot(a, b), [(2, 4), (4,)]),
    "diagonal": (lambda L, a: L.linalg.diagonal(a, offset=1), [(2, 3, 4)]),
    "vander": (lambda L, a: L.linalg.vander(a, N=4), [(2, 3)]),
    "matmul": (lambda L, a, b: L.linalg.matmul(a, b), [(2, 3), (3, 2)]),
    "norm": (lambda L, a: L.linalg.norm(a), [(3, 4)]),
    "norm_dim": (lambda L, a: L.linalg.norm(a, 3, dim=1, keepdim=True), [(3, 4)]),
    "vector_norm_inf": (lambda L, a: L.linalg.vector_norm(a, math.inf, dim=(0, 2)), [(2, 3, 4)]),
    "vector_norm_0.5": (lambda L, a: L.linalg.vector_norm(a, 0.5), [(3, 4)]),
    "vector_norm_-1": (lambda L, a: L.linalg.vector_norm(a, -1, dim=-1), [(3, 4)]),
    "vector_norm_1": (lambda L, a: L.linalg.vector_norm(a, 1), [(3, 4)]),
    **{f"matrix_norm_{o}": (lambda L, a, o=o: L.linalg.matrix_norm(a, o), [(2, 3, 4)])
       for o in ("fro", "nuc", 1, -1, 2, -2, math.inf, -math.inf)},
    "matrix_norm_dims": (lambda L, a: L.linalg.matrix_norm(a, "nuc", dim=(0, 2), keepdim=True), [(3, 2, 4)]),
    "norm_2d_ord": (lambda L, a: L.linalg.norm(a, -math.inf), [(3, 4)]),
    "norm_fro_dims": (lambda L, a: L.linalg.norm(a, "fro", dim=(1, 2)), [(2, 3, 4)]),
}


@pytest.mark.parametrize("name", list(CASES))
def test_against_torch_values_and_gradients(name):
    call, shapes = CASES[name]
    pairs = [_pair(*s) for s in shapes]
    mine = call(ml, *(p[0] for p in pairs))
    theirs = call(torch, *(p[1] for p in pairs))
    _close(mine, theirs, tol=1e-9)
    w, wt = _weights(tuple(mine.shape))
    _grads_agree([p[0] for p in pairs], [p[1] for p in pairs], (mine * w).sum(), (theirs * wt).sum(), tol=1e-7)


GRADCHECKED = ["det", "slogdet", "inv", "solve", "solve_tri_lower_right_unit", "cholesky", "pinv_wide", "lstsq",
               "matrix_power_-2", "matrix_exp", "norm_dim", "vector_norm_0.5", "matrix_norm_nuc", "logdet"]


@pytest.mark.parametrize("name", GRADCHECKED)
def test_gradients_against_finite_differences(name):
    call, shapes = CASES[name]
    inputs = [_pair(*s)[0] for s in shapes]
    assert ml.autograd.gradcheck(lambda *xs: call(ml, *xs), inputs)


def test_decomposition_gradients_against_finite_differences():
    a = _pair(4, 3)[0]
    assert ml.autograd.gradcheck(lambda x: LA.svdvals(x), [a])
    assert ml.autograd.gradcheck(lambda x: (lambda U, S, Vh: (U[:, :2] @ Vh[:2] * S[:2].sum()))(*LA.svd(x, False)), [a])
    assert ml.autograd.gradcheck(lambda x: (lambda Q, R: (Q * Q.sum(0)).sum(1) + R.diagonal().abs().sum())(
        *LA.qr(x)), [a])
    s = _pair(3, 3)[0]
    assert ml.autograd.gradcheck(lambda x: (lambda w, V: w.sum() + (V[:, :1] @ V[:, :1].T).sum())(
        *LA.eigh(x + x.T)), [s])


def test_old_top_level_spellings_and_methods():
    a, t = _pair(4, 4, spd=True, requires_grad=False)
    _close(ml.det(a), torch.det(t))
    _close(a.det(), t.det())
    _close(a.inverse(), t.inverse())
    _close(a.logdet(), t.logdet())
    _close(a.pinverse(), t.pinverse())
    _close(a.matrix_power(2), t.matrix_power(2))
    _close(a.matrix_exp(), t.matrix_exp(), tol=1e-8)
    _close(ml.slogdet(a).logabsdet, torch.slogdet(t).logabsdet)
    assert type(ml.slogdet(a)).__name__ == type(torch.slogdet(t)).__name__ == "slogdet"
    with pytest.warns(UserWarning, match="deprecated"):
        L = ml.cholesky(a, upper=True)
    with warnings.catch_warnings():  # (torch warns once per process: TORCH_WARN_ONCE; an earlier test may have)
        warnings.simplefilter("ignore")
        _close(L, t.cholesky(upper=True))
    with pytest.warns(UserWarning, match="deprecated"):
        Q, R = ml.qr(a, some=False)
    with warnings.catch_warnings():  # (the same: torch's warning is once per process)
        warnings.simplefilter("ignore")
        Qt, Rt = torch.qr(t, some=False)
    np.testing.assert_allclose(np.abs(_np(R)), np.abs(_np(Rt)), atol=1e-10)
    with pytest.warns(UserWarning):
        Q, R = a.qr()
    np.testing.assert_allclose(_np(Q @ R), _np(t), atol=1e-12)
    v, vt = _pair(3)
    w, wt = _pair(2)
    _close(ml.ger(v, w), torch.ger(vt, wt))
    _close(v.ger(w), vt.ger(wt))
    assert ml.linalg.LinAlgError is LA.LinAlgError and issubclass(LA.LinAlgError, RuntimeError)
    import pickle  # (the named tuples pickle, as torch.return_types do)
    assert type(pickle.loads(pickle.dumps(LA.qr(a)))).__name__ == "linalg_qr"


def test_rank_tolerances_and_lstsq_fields():
    u = RNG.standard_normal((6, 2))
    low = u @ RNG.standard_normal((2, 5))  # rank 2
    a, t = ml.tensor(low), torch.tensor(low)
    for kwargs in ({}, {"hermitian": False}, {"atol": 1.0}, {"rtol": 0.5}, {"atol": 1e-3, "rtol": 0.1}, {"tol": 2.0}):
        mine, theirs = LA.matrix_rank(a, **kwargs), torch.linalg.matrix_rank(t, **kwargs)
        assert mine.dtype == ml.int64 and mine.item() == theirs.item(), kwargs
    sym = low @ low.T
    assert LA.matrix_rank(ml.tensor(sym), hermitian=True).item() == torch.linalg.matrix_rank(
        torch.tensor(sym), hermitian=True).item() == 2
    batch = RNG.standard_normal((3, 4, 4))
    batch[1, :, 0] = batch[1, :, 1]
    assert LA.matrix_rank(ml.tensor(batch)).tolist() == torch.linalg.matrix_rank(torch.tensor(batch)).tolist()
    _close(LA.pinv(ml.tensor(low), rtol=0.3), torch.linalg.pinv(torch.tensor(low), rtol=0.3))
    A, B = RNG.standard_normal((5, 3)), RNG.standard_normal((5, 2))
    for driver in (None, "gelsd", "gelss", "gels"):
        mine = LA.lstsq(ml.tensor(A), ml.tensor(B), driver=driver)
        theirs = torch.linalg.lstsq(torch.tensor(A), torch.tensor(B), driver=driver)
        assert type(mine).__name__ == "linalg_lstsq"
        for field in ("solution", "residuals", "rank", "singular_values"):
            m, th = getattr(mine, field), getattr(theirs, field)
            assert tuple(m.shape) == tuple(th.shape), (driver, field)
            np.testing.assert_allclose(m.numpy(), th.numpy(), atol=1e-10)


def test_ex_variants_info_and_dtypes():
    sing = np.array([[1.0, 2.0], [2.0, 4.0]])
    mine, theirs = LA.inv_ex(ml.tensor(sing)), torch.linalg.inv_ex(torch.tensor(sing))
    assert mine.info.dtype == ml.int32 and mine.info.item() == theirs.info.item() == 2
    not_pd = -np.eye(3)
    mine, theirs = LA.cholesky_ex(ml.tensor(not_pd)), torch.linalg.cholesky_ex(torch.tensor(not_pd))
    assert type(mine).__name__ == "linalg_cholesky_ex" and mine.info.item() == theirs.info.item() == 1
    batch = np.stack([np.eye(3), np.diag([1.0, 1.0, -1.0])])
    assert LA.cholesky_ex(ml.tensor(batch)).info.tolist() == torch.linalg.cholesky_ex(torch.tensor(batch)).info.tolist()
    s, l = LA.slogdet(ml.tensor(-np.eye(3)))
    st, lt = torch.linalg.slogdet(torch.tensor(-np.eye(3)))
    assert s.item() == st.item() == -1 and l.item() == lt.item() == 0
    assert math.isnan(ml.logdet(ml.tensor(-np.eye(3))).item()) and math.isnan(torch.logdet(-torch.eye(3)).item())
    assert LA.det(ml.tensor(sing)).item() == torch.linalg.det(torch.tensor(sing)).item() == 0


ERRORS = {  # call(lib): torch raises; minilora must raise the same type (and its message where noted)
    "svd int": lambda L: L.linalg.svd(L.ones(3, 3, dtype=L.long)),
    "svd 1d": lambda L: L.linalg.svd(L.ones(3)),
    "qr mode": lambda L: L.linalg.qr(L.ones(3, 3), mode="x"),
    "eigh non-square": lambda L: L.linalg.eigh(L.ones(2, 3)),
    "eigh UPLO": lambda L: L.linalg.eigh(L.eye(3), UPLO="X"),
    "inv singular": lambda L: L.linalg.inv(L.tensor([[1.0, 2.0], [2.0, 4.0]])),
    "inv non-square": lambda L: L.linalg.inv(L.ones(2, 3)),
    "inv int": lambda L: L.linalg.inv(L.ones(2, 2, dtype=L.long)),
    "det non-square": lambda L: L.linalg.det(L.ones(2, 3)),
    "cholesky not pd": lambda L: L.linalg.cholesky(-L.eye(3)),
    "solve shapes": lambda L: L.linalg.solve(L.eye(3), L.ones(4)),
    "solve singular": lambda L: L.linalg.solve(L.zeros(2, 2), L.ones(2)),
    "solve_triangular no upper": lambda L: L.linalg.solve_triangular(L.eye(3), L.eye(3)),
    "vector_norm int": lambda L: L.linalg.vector_norm(L.ones(3, dtype=L.long)),
    "matrix_norm ord": lambda L: L.linalg.matrix_norm(L.ones(3, 3), ord=3),
    "matrix_norm 1d": lambda L: L.linalg.matrix_norm(L.ones(3)),
    "norm 3d with ord": lambda L: L.linalg.norm(L.ones(2, 2, 2), 2),
    "matrix_rank int": lambda L: L.linalg.matrix_rank(L.ones(2, 2, dtype=L.long)),
    "matrix_power non-square": lambda L: L.linalg.matrix_power(L.ones(2, 3), 2),
    "multi_dot one": lambda L: L.linalg.multi_dot([L.ones(2, 2)]),
    "multi_dot 3d": lambda L: L.linalg.multi_dot([L.ones(2, 2), L.ones(2, 2, 2)]),
    "cross length": lambda L: L.linalg.cross(L.ones(4), L.ones(4)),
    "lstsq rows": lambda L: L.linalg.lstsq(L.ones(3, 3), L.ones(4, 2)),
    "pinv int": lambda L: L.linalg.pinv(L.ones(2, 2, dtype=L.long)),
    "vander N=1": lambda L: L.linalg.vander(L.ones(3), N=1),
    "qr r backward": lambda L: L.linalg.qr(L.ones(3, 3, requires_grad=True), mode="r").R.sum().backward(),
}


@pytest.mark.parametrize("name", list(ERRORS))
def test_errors_as_torch(name):
    with pytest.raises(Exception) as theirs:
        ERRORS[name](torch)
    with pytest.raises(Exception) as mine:
        ERRORS[name](ml)
    assert isinstance(mine.value, type(theirs.value).__mro__[0] if type(theirs.value).__module__ == "builtins"
                      else RuntimeError), (mine.value, theirs.value)
    first_words = str(theirs.value).split(":")[0]
    assert str(mine.value).startswith(first_words) or name in ("solve_triangular no upper", "qr r backward"), \
        (str(mine.value), str(theirs.value))


def test_low_precision_and_complex_refused():
    with pytest.raises(RuntimeError, match="Low precision"):
        LA.inv(ml.ones(2, 2, dtype=ml.float16))
    with pytest.raises(NotImplementedError, match="complex"):
        LA.svd(ml.tensor(np.ones((2, 2), dtype=np.complex64)))


def test_out_arguments_and_integer_vander():
    A = np.eye(3) * 2
    for lib in (ml, torch):
        out = lib.empty(0, dtype=lib.float64)
        assert lib.linalg.inv(lib.tensor(A), out=out) is out and out.tolist() == (np.eye(3) / 2).tolist()
        U, S, Vh = (lib.empty(0, dtype=lib.float64) for _ in range(3))
        result = lib.linalg.svd(lib.tensor(A), out=(U, S, Vh))
        assert result.S is S and S.tolist() == [2.0, 2.0, 2.0]
    mine, theirs = LA.vander(ml.tensor([1, 2, 3])), torch.linalg.vander(torch.tensor([1, 2, 3]))
    assert mine.dtype == ml.int64 and mine.tolist() == theirs.tolist()


FLOAT32_LOSSES = {
    "svd": lambda L, x: (lambda U, S, Vh: (U[..., :1] @ Vh[..., :1, :]).sum() + S.sum())(
        *L.linalg.svd(x, full_matrices=False)),
    "eigh": lambda L, x: (lambda w, V: w.sum() + (V[..., :1] @ V[..., :1].mT).pow(2).sum())(*L.linalg.eigh(x @ x.mT)),
    "qr": lambda L, x: L.linalg.qr(x).R.abs().sum(),
    "pinv": lambda L, x: L.linalg.pinv(x).sum(),
    "norms": lambda L, x: L.linalg.matrix_norm(x, "nuc").sum() + L.linalg.vector_norm(x, 3, dim=-1).sum(),
    "cholesky": lambda L, x: L.linalg.cholesky(x.mT @ x + L.eye(4)).sum(),
}


@pytest.mark.parametrize("name", list(FLOAT32_LOSSES))
def test_float32_values_and_gradients_to_float32_tolerance(name):
    """torch runs LAPACK in float32 for float32 inputs; so does minilora: agreement to float32's precision."""
    a = RNG.standard_normal((3, 5, 4)).astype(np.float32)
    found = []
    for lib in (ml, torch):
        x = lib.tensor(a, requires_grad=True)
        loss = FLOAT32_LOSSES[name](lib, x)
        loss.backward()
        assert x.grad.dtype == lib.float32
        found.append((loss.item(), x.grad.numpy()))
    (mine, mine_grad), (theirs, their_grad) = found
    assert abs(mine - theirs) <= 2e-5 * max(1.0, abs(theirs))
    np.testing.assert_allclose(mine_grad, their_grad, rtol=1e-4, atol=2e-5 * max(1.0, np.abs(their_grad).max()))
