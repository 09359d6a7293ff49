"""Round 23's op sweep (tests/grad_bits_sweep.py, and the calls tutorials make beside op_db's samples): float32
values and gradients in torch's bits.

An einsum of one operand that sums labels away ("bij->bj", "ij->") is torch's ``sum`` over the operand permuted to
the output's labels, so it adds in the sum kernel's order (NumPy's einsum added in its own); one of several operands
is ATen's left-to-right contraction (``bmm`` per pair); the p-norm of a 0-d tensor along dim 0 runs torch's norm
kernel, pow(pow(|x|, p), 1/p), where without a dim it is |x|."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

import minilora as ml  # noqa: E402


def _bits(a):
    return np.ascontiguousarray(np.asarray(a)).view(np.int32 if np.asarray(a).dtype == np.float32 else np.int64)


def _value_and_grad(lib, f, array):
    leaf = lib.tensor(array, requires_grad=True)
    out = f(lib, leaf)
    weight = lib.tensor(np.random.default_rng(7).standard_normal(tuple(out.shape)).astype(array.dtype))
    grad, = lib.autograd.grad((out * weight).sum(), [leaf])
    return out, grad


def _same_bits(f, array):
    (theirs, their_grad), (ours, our_grad) = _value_and_grad(torch, f, array), _value_and_grad(ml, f, array)
    for name, a, b in (("value", theirs.detach().numpy(), ours.detach().numpy()),
                       ("grad", their_grad.numpy(), our_grad.numpy())):
        assert a.shape == b.shape, name
        off = int((_bits(a) != _bits(b)).sum())
        assert off == 0, f"{name}: {off} of {a.size} elements not torch's bits"
    return theirs, ours


@pytest.mark.parametrize("equation, shape", [
    ("bij->bj", (4, 37, 60)), ("bij->b", (4, 37, 60)), ("bij->i", (4, 37, 60)), ("bij->ji", (4, 37, 60)),
    ("iij->j", (24, 24, 9)), ("ij->", (37, 60)), ("...j->...", (37, 60)), ("Bij->iB", (4, 37, 60))])
def test_einsum_of_one_operand_sums_as_torch(equation, shape):
    """torch.einsum("bij->bj", x): torch permutes x to the output's labels and the summed ones, then ``sum``s
    those (865 of 1200 values were off: NumPy's einsum adds in another order); the graph is torch's, SumBackward1
    at the top."""
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    theirs, ours = _same_bits(lambda lib, t: lib.einsum(equation, t), x)
    assert ours.grad_fn.name() == theirs.grad_fn.name() == "SumBackward1"


def _same_bits_and_layout(equation, shapes):
    arrays = [np.random.default_rng(i).standard_normal(shape).astype(np.float32) for i, shape in enumerate(shapes)]
    results = []
    for lib in (torch, ml):
        leaves = [lib.tensor(a, requires_grad=True) for a in arrays]
        out = lib.einsum(equation, *leaves)
        weight = lib.tensor(np.random.default_rng(7).standard_normal(tuple(out.shape)).astype(np.float32))
        results.append((out, lib.autograd.grad((out * weight).sum(), leaves)))
    (theirs, their_grads), (ours, our_grads) = results
    assert tuple(ours.stride()) == tuple(theirs.stride())
    for name, a, b in [("value", theirs.detach(), ours.detach())] + [
            (f"grad {i}", x, y) for i, (x, y) in enumerate(zip(their_grads, our_grads))]:
        off = int((_bits(a.numpy()) != _bits(b.numpy())).sum())
        assert off == 0, f"{name}: {off} of {a.numel()} elements not torch's bits"


@pytest.mark.parametrize("equation, shapes", [
    ("bij,bij->bi", [(4, 7, 30), (4, 7, 30)]), ("bi,bi->b", [(5, 30), (5, 30)]), ("i,j->ij", [(5,), (7,)]),
    ("bhqk,bhkd->bqhd", [(2, 3, 4, 6), (2, 3, 6, 5)]), ("ij,jk->ki", [(5, 6), (6, 7)]),
    ("ij,jk,kl->il", [(3, 4), (4, 5), (5, 2)]), ("bi,bj,bk->bijk", [(2, 3), (2, 4), (2, 5)]),
    ("bn,anm,bm->ba", [(2, 3), (4, 3, 5), (2, 5)])])
def test_einsum_of_operands_contracts_as_torch(equation, shapes):
    """torch.einsum("bij,bij->bi", x, y): ATen contracts left to right, a label both operands hold and no later one
    by one ``bmm`` ([b i, 1, j] by [b i, j, 1]: its own loop, adding j in order), a label one holds summed first;
    NumPy's einsum added in its own order (114 of 148 values off), three operands multiplied once
    ("bi,bj,bk->bijk": torch rounds (bi * bj) before * bk, 45 of 120 off), and the product's broadcast gradients
    ("i,j->ij") are mul's, summed as torch sums them; the result laid out as torch's (``"ij,jk->ki"``: strides
    (5, 1), were (1, 7))."""
    _same_bits_and_layout(equation, shapes)


NUMBERS = np.random.default_rng(1).standard_normal(40)


def _norms(lib, dtype, p, call):
    return np.array([call(lib, lib.tensor(v.astype(dtype)), p).item() for v in NUMBERS], dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=lambda d: d.__name__)
@pytest.mark.parametrize("call", [
    lambda lib, x, p: x.norm(p, 0), lambda lib, x, p: lib.norm(x, p, -1),
    lambda lib, x, p: lib.linalg.vector_norm(x, p, dim=0), lambda lib, x, p: lib.linalg.vector_norm(x, ord=p, dim=[-1])],
    ids=["x.norm(p, 0)", "norm(x, p, -1)", "vector_norm(dim=0)", "vector_norm(dim=[-1])"])
def test_norm_of_a_number_along_its_dim_is_torchs_kernel(dtype, call):
    """torch.tensor(x).norm(3, 0): torch's norm kernel runs on the one element, pow(pow(|x|, 3), 1/3) in C's pow
    (|x| was returned: ~15-35% of values an ulp off); without a dim torch gives |x|, and so does minilora."""
    for p in (3.0, 0.9, -2.1, 6):
        assert np.array_equal(_bits(_norms(torch, dtype, p, call)), _bits(_norms(ml, dtype, p, call))), p
        without_dim = _norms(ml, dtype, p, lambda lib, x, p: lib.linalg.vector_norm(x, p))
        assert np.array_equal(without_dim, np.abs(NUMBERS.astype(dtype))), p


def test_gradient_of_a_number_norm_along_its_dim_is_torchs():
    """The gradient divides by the norm torch's kernel gave (the op_db samples 'norm(x, 3, 0)' of a 0-d x: value
    and gradient an ulp off)."""
    for v in NUMBERS[:10]:
        _same_bits(lambda lib, t: lib.linalg.vector_norm(t, 3, dim=0, keepdim=True), np.float32(v))


@pytest.mark.parametrize("kwargs", [{}, {"p": 2}, {"reduction": "none", "p": 2}, {"reduction": "sum", "margin": 0.5},
                                    {"weight": "w", "margin": -0.3}], ids=str)
def test_multi_margin_loss_is_atens_kernel(kwargs):
    """F.multi_margin_loss(x, y): ATen's kernel adds each row's hinge terms in class order and 'mean'/'sum' the rows
    in double; its backward writes g (or 2 g z) per term, x[y]'s gradient their running negative, then scales by the
    output's gradient (the composed ops' sums and scalings: 41-62 of 6400 gradients off, 'none' with p=2 49 of 64
    values and 1954 gradients)."""
    rng = np.random.default_rng(0)
    x, target, weight = rng.standard_normal((64, 100)).astype(np.float32), rng.integers(0, 100, 64), rng.random(100)
    results = []
    for lib in (torch, ml):
        leaf = lib.tensor(x, requires_grad=True)
        options = {k: lib.tensor(weight.astype(np.float32)) if v == "w" else v for k, v in kwargs.items()}
        out = lib.nn.functional.multi_margin_loss(leaf, lib.tensor(target), **options)
        scale = lib.tensor(np.arange(out.numel(), dtype=np.float32).reshape(tuple(out.shape)))
        grad, = lib.autograd.grad((out * scale).sum(), [leaf])
        results.append((out.detach().numpy(), grad.numpy(), out.grad_fn.name()))
    (value, grad, node), (our_value, our_grad, our_node) = results
    assert np.array_equal(_bits(value), _bits(our_value)) and node == our_node
    assert int((_bits(grad) != _bits(our_grad)).sum()) == 0


@pytest.fixture
def torchs_vml(monkeypatch):
    """torch's own float32 exp and log (MKL's VML, whose last bit minilora does not model) in minilora's place, so a
    test checks the order of everything else."""
    from minilora import float32_math
    own = float32_math.vml

    def vml(name, a):
        if type(a) is np.ndarray and a.dtype == np.float32 and name in ("exp", "log"):
            return getattr(torch, name)(torch.from_numpy(np.ascontiguousarray(a))).numpy()
        return own(name, a)
    monkeypatch.setattr(float32_math, "vml", vml)


@pytest.mark.parametrize("log_input", [False, True])
def test_poisson_nll_loss_target_gradients_add_in_torchs_order(torchs_vml, log_input):
    """F.poisson_nll_loss(x, y, full=True): ATen's ``y * log(y) - y + 0.5 * log(2 pi y)`` -- GCC evaluates the +'s
    right operand first, so its nodes are made first and run last, and y's five gradients add in that order (made
    left to right: 6-18 of 125 of y's gradients an ulp off)."""
    rng = np.random.default_rng(3)
    x, y = rng.uniform(0.1, 3, (5, 5, 5)).astype(np.float32), rng.uniform(0.2, 4, (5, 5, 5)).astype(np.float32)
    results = []
    for lib in (torch, ml):
        leaves = [lib.tensor(x, requires_grad=True), lib.tensor(y, requires_grad=True)]
        out = lib.nn.functional.poisson_nll_loss(*leaves, log_input=log_input, full=True, reduction="none")
        weight = lib.tensor(np.random.default_rng(7).standard_normal(x.shape).astype(np.float32))
        results.append([out.detach().numpy()] + [g.numpy() for g in lib.autograd.grad((out * weight).sum(), leaves)])
    for name, a, b in zip(("value", "grad x", "grad y"), *results):
        assert int((_bits(a) != _bits(b)).sum()) == 0, name


def test_norm_gradient_of_a_number_takes_torchs_pow():
    """linalg.vector_norm(x, -2.1) of a 0-d x: norm_backward's |x| ** (p - 1) of a 0-d array is a NumPy scalar, which
    the pow kernel's model passed to NumPy's ``**`` (3 ulps off torch's powf for x = -8.478374)."""
    for v in [np.float32(-8.478374)] + list(NUMBERS[:10].astype(np.float32)):
        for p in (-2.1, 0.5, 6):
            _same_bits(lambda lib, t: lib.linalg.vector_norm(t, p), v)


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_multilabel_margin_loss_values_are_atens_kernel(reduction):
    """F.multilabel_margin_loss: ATen adds each row's hinge terms in double and rounds the row's sum once; 'mean' and
    'sum' add the rows in double too (the composed float32 sums: ~60% of these losses an ulp off)."""
    rng = np.random.default_rng(0)
    x, target = rng.standard_normal((6, 25)).astype(np.float32) * 2, rng.integers(-1, 25, (6, 25))
    target[:, :2] = rng.integers(0, 25, (6, 1))  # (a class listed twice counts twice)
    values = [lib.nn.functional.multilabel_margin_loss(lib.tensor(x), lib.tensor(target), reduction=reduction)
              for lib in (torch, ml)]
    assert np.array_equal(_bits(values[0].numpy()), _bits(values[1].numpy()))


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
@pytest.mark.parametrize("equation, shapes", [("bi,bj,bk->bijk", [(2, 3), (2, 4), (2, 5)]), ("i,j->ij", [(5,), (7,)]),
                                              ("ij,jk,kl->il", [(3, 4), (4, 5), (5, 2)])])
def test_einsum_of_16bit_operands_rounds_each_pair_as_torch(dtype, equation, shapes):
    """torch.einsum("bi,bj,bk->bijk") of bfloat16 operands: ATen's pairs each give a 16-bit result, rounded before the
    next product (one NumPy einsum in float32 rounded once: 28 of 120 values off); "i,j->ij"'s gradients are mul's."""
    arrays = [np.random.default_rng(i).standard_normal(shape).astype(np.float32) for i, shape in enumerate(shapes)]
    results = []
    for lib in (torch, ml):
        leaves = [lib.tensor(a).to(getattr(lib, dtype)).requires_grad_() for a in arrays]
        out = lib.einsum(equation, *leaves)
        weight = lib.tensor(np.random.default_rng(7).standard_normal(tuple(out.shape)).astype(np.float32))
        grads = lib.autograd.grad((out * weight.to(out.dtype)).sum(), leaves)
        results.append([out.detach().float().numpy()] + [g.float().numpy() for g in grads])
    for name, a, b in zip(["value"] + [f"grad {i}" for i in range(len(arrays))], *results):
        assert int((_bits(a) != _bits(b)).sum()) == 0, name
