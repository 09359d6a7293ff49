"""Second derivatives (create_graph=True) through what round 9 left refusing: the factorizations (svd,
svdvals, the spectral and nuclear norms, eigh, eigvalsh, qr, lu, lu_factor, pinv, lstsq, matrix_exp,
triangular_solve, det at a singular matrix, empty matrices), checkpointing (both variants, a Module or a
closure, leaf or non-leaf input), max_unpool1d/2d/3d, and a recorded pass that stops at a non-leaf input --
each against torch in float64, on batched and non-square ("ragged") shapes; and what torch itself cannot
differentiate twice (ldl, the CTC loss) or minilora cannot (eig's complex outputs) refusing in clear words.

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
    "svd_full_matrices_wide": ((3, 5), lambda lib, A: _svd_parts(lib, A, full_matrices=True) + [
        lib.linalg.svd(A)[2][..., 3:, :].mT @ lib.linalg.svd(A)[2][..., 3:, :]]),  # (Vh's rows past k)
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


def _segment_results(lib, closure, nonleaf, via_backward):
    """A gradient penalty through a non-reentrant checkpoint: a Module segment, or a lambda closing over one
    (with dropout: the recomputation replays the masks), on a leaf or a non-leaf input."""
    lib.manual_seed(0)
    block = lib.nn.Sequential(lib.nn.Linear(3, 4), lib.nn.Tanh(), lib.nn.Dropout(0.3), lib.nn.Linear(4, 3)).double()
    x0 = lib.tensor(np.linspace(-1, 1, 6).reshape(2, 3), requires_grad=True)
    x = x0.sin() * 2 if nonleaf else x0
    segment = (lambda h: block(h) * h) if closure else block
    lib.manual_seed(1)
    y = lib.utils.checkpoint.checkpoint(segment, x, use_reentrant=False)
    loss = (y ** 2).sum()
    params = list(block.parameters())
    if via_backward:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # (the create_graph reference-cycle warning)
            loss.backward(create_graph=True)
        first = [x0.grad] + [p.grad for p in params]
        assert all(g.requires_grad for g in first)
    else:
        first = list(lib.autograd.grad(loss, [x] + params, create_graph=True))
    penalty = sum((g ** 2).sum() for g in first)
    return first + list(lib.autograd.grad(penalty, [x0] + params))


@pytest.mark.parametrize("closure", [False, True], ids=["module", "closure"])
@pytest.mark.parametrize("nonleaf", [False, True], ids=["leaf", "non-leaf"])
@pytest.mark.parametrize("via_backward", [False, True], ids=["grad", "backward"])
def test_second_derivatives_through_a_checkpoint(closure, nonleaf, via_backward):
    for mine, theirs in zip(*(_segment_results(lib, closure, nonleaf, via_backward) for lib in (ml, torch))):
        close(mine, theirs)


def test_reentrant_checkpoint_under_grad_and_create_graph_as_torch():
    """torch's reentrant checkpoint refuses autograd.grad and backward(inputs=...) (first order too), and under
    backward(create_graph=True) gives the segment's gradients as its inner backward left them, unrecorded."""
    for lib in (ml, torch):
        lin = lib.nn.Linear(3, 2).double()
        x = lib.tensor(np.ones((2, 3)), requires_grad=True)
        for run in (lambda y: lib.autograd.grad(y.sum(), x), lambda y: y.sum().backward(inputs=[x]),
                    lambda y: lib.autograd.grad(y.sum(), x, create_graph=True)):
            with pytest.raises(RuntimeError, match="When use_reentrant=True, torch.utils.checkpoint is incompatible "
                                                   "with .grad"):
                run(lib.utils.checkpoint.checkpoint(lin, x * 2, use_reentrant=True))
    results = []
    for lib in (ml, torch):
        lin = lib.nn.Linear(3, 2).double()
        lin.load_state_dict({"weight": lib.tensor(np.arange(6.0).reshape(2, 3)), "bias": lib.tensor([0.5, -1.0])})
        x = lib.tensor(np.linspace(0, 1, 6).reshape(2, 3), requires_grad=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            (lib.utils.checkpoint.checkpoint(lin, x * x, use_reentrant=True).tanh() ** 2).sum().backward(
                create_graph=True)
        assert not lin.weight.grad.requires_grad and x.grad.requires_grad  # (x's through x * x's recorded backward)
        results.append([lin.weight.grad, lin.bias.grad, x.grad])
    for mine, theirs in zip(*results):
        close(mine, theirs)


def test_max_unpool_second_derivatives():
    """max_unpool1d/2d/3d are linear in their input: the recorded backward is the gradient read back at the
    indices, and its own backward the unpooling again."""
    x0, y0 = RNG.standard_normal((2, 5, 5)), RNG.standard_normal((2, 2, 2))

    def results(lib):
        F = lib.nn.functional
        x, y = lib.tensor(x0, requires_grad=True), lib.tensor(y0, requires_grad=True)
        pooled, where = F.max_pool2d(x, 2, return_indices=True)
        out = F.max_unpool2d(pooled * y, where, 2, output_size=x.shape[-2:])
        pooled1, where1 = F.max_pool1d(x[0], 2, return_indices=True)
        volume = x[..., :4, :4].reshape(1, 2, 4, 4).expand(2, 2, 4, 4).reshape(1, 4, 4, 4) * 1.5
        pooled3, where3 = F.max_pool3d(volume, 2, return_indices=True)
        loss = (out ** 3).sum() + (F.max_unpool1d(pooled1.tanh(), where1, 2) ** 3).sum() + (
            F.max_unpool3d(pooled3 * pooled3, where3, 2) * volume).sum()
        first = lib.autograd.grad(loss, (x, y), create_graph=True)
        return list(first) + list(lib.autograd.grad(sum((g ** 2).sum() for g in first), (x, y)))
    for mine, theirs in zip(results(ml), results(torch)):
        close(mine, theirs)


def test_det_of_a_singular_matrix_under_create_graph():
    """det's recorded backward at an exactly singular matrix: torch's cofactors from the SVD (minilora refused);
    a batch mixing singular and invertible matrices. (The loss is linear in det: torch's plain first-order det
    gradient at a singular matrix is zeros, which a loss like det ** 2 would carry into its second derivative.)"""
    a = np.stack([[[1.0, 2, 3], [2, 4, 6], [1, 0, 1]], RNG.standard_normal((3, 3))])
    w, v = RNG.standard_normal(2), RNG.standard_normal((2, 3, 3))
    results = []
    for lib in (ml, torch):
        A = lib.tensor(a, requires_grad=True)
        g, = lib.autograd.grad((lib.linalg.det(A) * lib.tensor(w)).sum(), A, create_graph=True)
        hv, = lib.autograd.grad((g * lib.tensor(v)).sum(), A)
        results.append([g, hv])
    for mine, theirs in zip(*results):
        close(mine, theirs)


def test_what_torch_cannot_differentiate_twice_refuses_in_torchs_words():
    """ldl_factor (no derivative in torch at all) and the CTC loss (no derivative of its backward)."""
    for lib in (ml, torch):
        A = lib.tensor([[4.0, 1, 0], [1, 3, 1], [0, 1, 2]], requires_grad=True)
        with pytest.raises(RuntimeError, match="derivative for aten::linalg_ldl_factor_ex is not implemented"):
            lib.autograd.grad(lib.linalg.ldl_factor(A)[0].sum(), A, create_graph=True)
        x = lib.tensor(np.linspace(-1, 1, 24).reshape(3, 2, 4), requires_grad=True)
        loss = lib.nn.functional.ctc_loss(x.log_softmax(-1), lib.tensor([[1, 2], [3, 3]]), lib.tensor([3, 3]),
                                          lib.tensor([2, 1]))
        g, = lib.autograd.grad(loss, x, create_graph=True)
        with pytest.raises(RuntimeError, match="derivative for aten::_ctc_loss_backward is not implemented"):
            lib.autograd.grad(g.sum(), x)


def _eig_parts(lib, A):
    """Losses that do not depend on the eigenvectors' phases (torch's check), nor on LAPACK's order."""
    L, V = lib.linalg.eig(A)
    return [(L.real ** 2).sum() + L.abs().sum() + (L * L).imag.abs().sum(),
            ((V.abs() ** 2) * L.abs().unsqueeze(-2)).sum(), lib.linalg.eigvals(A * 0.5).abs()]


def _complex_pipeline(lib, x, w, angles):
    """Meta's rotary style: pairs read as complex numbers, turned, multiplied and read back as pairs."""
    h = (x @ w).tanh()
    z = lib.view_as_complex(h.reshape(2, 3, 2, 2)) * lib.polar(lib.ones(3, 2, dtype=lib.float64), angles)
    z = z * z.conj() * 0.3 + z.exp() * 0.1
    return (lib.view_as_real(z).flatten(2) ** 2).sum() + z.abs().sum() + (z.real * z.imag).sum()


def test_eig_and_complex_tensors_under_create_graph():
    """linalg.eig / eigvals (complex outputs: torch's linalg_eig_backward on complex ops, the complex solve as
    a real block system) and a complex pipeline between real tensors: the recorded pass takes complex
    gradients as the plain engine does (a holomorphic op's formula on conj(g), conjugated). minilora refused."""
    a, v = RNG.standard_normal((2, 4, 4)), RNG.standard_normal((2, 4, 4))
    x0, w0, f0 = RNG.standard_normal((2, 3, 4)), RNG.standard_normal((4, 4)), RNG.standard_normal((3, 2))
    results = []
    for lib in (ml, torch):
        A = lib.tensor(a, requires_grad=True)
        g, = lib.autograd.grad(sum(p.sum() for p in _eig_parts(lib, A)), A, create_graph=True)
        hv, = lib.autograd.grad((g * lib.tensor(v)).sum(), A)
        x, w = lib.tensor(x0, requires_grad=True), lib.tensor(w0, requires_grad=True)
        first = lib.autograd.grad(_complex_pipeline(lib, x, w, lib.tensor(f0)), (x, w), create_graph=True)
        results.append([g, hv, *first, *lib.autograd.grad(sum((t ** 2).sum() for t in first), (x, w))])
    for mine, theirs in zip(*results):
        close(mine, theirs)


def test_eig_phase_dependent_loss_refused_as_torch():
    for lib in (ml, torch):
        A = lib.tensor([[2.0, 1, 0], [-1, 3, 1], [0, 1, 1]], dtype=lib.float64, requires_grad=True)
        with pytest.raises(RuntimeError, match="The eigenvectors in the complex case are specified up to"):
            lib.autograd.grad(lib.linalg.eig(A)[1].real.sum(), A, create_graph=True)


EMPTY = {  # an empty matrix or batch: torch's empty gradients, recorded where torch's are
    "svd": ((0, 3), lambda lib, A: list(lib.linalg.svd(A, full_matrices=False))),
    "qr_no_columns": ((3, 0), lambda lib, A: list(lib.linalg.qr(A))),
    "lu": ((0, 0), lambda lib, A: list(lib.linalg.lu(A))[1:]),
    "eigh_batch": ((2, 0, 0), lambda lib, A: list(lib.linalg.eigh(A))),
    "det": ((0, 0), lambda lib, A: [lib.linalg.det(A)]),
}


@pytest.mark.parametrize("name", sorted(EMPTY))
def test_empty_matrices_under_create_graph(name):
    shape, f = EMPTY[name]
    results = []
    for lib in (ml, torch):
        A = lib.zeros(shape, dtype=lib.float64, requires_grad=True)
        g, = lib.autograd.grad(sum((o ** 2).sum() for o in f(lib, A) if o.requires_grad), A, create_graph=True)
        results.append((tuple(g.shape), g.requires_grad))
    assert results[0] == results[1]


def test_slogdet_sign_is_in_the_graph_without_a_gradient():
    """torch's slogdet records its sign output too (requires_grad, a grad_fn) but passes no gradient through it,
    first order or recorded; minilora's sign was a constant."""
    results = []
    for lib in (ml, torch):
        A = lib.tensor([[1.0, 2], [3, 1]], dtype=lib.float64, requires_grad=True)
        sign, logabsdet = lib.linalg.slogdet(A)
        assert sign.requires_grad and sign.grad_fn is not None
        assert lib.autograd.grad(sign * 3, A, allow_unused=True, retain_graph=True)[0] is None
        g, = lib.autograd.grad(sign * logabsdet ** 2, A, create_graph=True)
        results.append([g, lib.autograd.grad(g.sum() + sign, A)[0]])
    for mine, theirs in zip(*results):
        close(mine, theirs)


def test_copysign_gives_other_zeros_first_order_and_recorded():
    """torch's copysign gives ``other`` a gradient of zeros (derivatives.yaml: zeros_like(other)), and a result
    whose sign alone comes from a tensor that requires grad requires grad too; minilora left ``other`` out."""
    results = []
    for lib in (ml, torch):
        x = lib.tensor([1.0, -2.0, 3.0], dtype=lib.float64, requires_grad=True)
        y = lib.tensor([-1.0, 1.0, -0.0], dtype=lib.float64, requires_grad=True)
        assert lib.copysign(x.detach(), y).requires_grad
        g = lib.autograd.grad((lib.copysign(x, y) ** 3).sum(), (x, y), create_graph=True)
        results.append(list(g) + list(lib.autograd.grad(g[0].sum(), (x, y))))
    for mine, theirs in zip(*results):
        close(mine, theirs)


def test_complex_of_transposed_parts():
    """torch.complex(real, imag) of tensors not laid out in rows (a transpose, LAPACK's column-major results,
    as eig's recorded complex solve makes): minilora's pairs view refused them."""
    results = []
    for lib in (ml, torch):
        x = lib.tensor(np.arange(32.0).reshape(2, 4, 4), requires_grad=True)
        z = lib.complex(x.mT, (x * 2).mT)
        results.append([lib.view_as_real(z), lib.autograd.grad((z * z).real.sum(), x)[0]])
    for mine, theirs in zip(*results):
        close(mine, theirs)
