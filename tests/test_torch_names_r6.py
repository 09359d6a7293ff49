"""torch's top-level names minilora lacked, side by side with torch 2.13 (round 6).

The second spellings (``torch.arccos``, ``torch.greater``, ``torch.fix`` ...), the small functions
(``frac``, ``sinc``, ``float_power``, ``gcd``, ``isin``, ``cov``, ``trapezoid``, ``block_diag`` ...), the
addmm family's one-node products (``addmv``/``addr``/``addbmm``: AddmvBackward0 ...), and the top-level
functional spellings, whose arguments are ATen's, not ``F.*``'s (``torch.embedding(weight, indices)``,
``torch.batch_norm``'s nine, the losses' int reduction). Each is compared on values, dtypes, shapes,
errors and float64 gradients, for float, integer and bool inputs, as functions and as Tensor methods.
"""
import math
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import minilora as ml  # noqa: E402

RNG = np.random.default_rng(61)
FLOAT = RNG.standard_normal((3, 4)).round(2)
FLOAT[0, 0], FLOAT[1, 1] = 0.0, -1.5  # (a zero for sinc/heaviside, a negative half for fix/frac)
INT = np.array([[0, 3, -4, 6], [12, -9, 5, 2], [7, 0, 8, -10]], dtype=np.int64)
BOOL = INT > 2


def _inputs(lib, kind, requires_grad=False):
    data = {"float": FLOAT, "int": INT, "bool": BOOL, "unit": np.tanh(FLOAT) * 0.9, "big": np.abs(FLOAT) + 1.5}[kind]
    t = lib.tensor(data)
    if requires_grad:
        t.requires_grad_(True)
    return t


def _outcome(fn):
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return fn()
    except Exception as exc:  # noqa: BLE001  (the exception's type is what is compared)
        return exc


def _flat(result):
    return list(result) if isinstance(result, (tuple, list)) else [result]


def _same(mine, theirs, tol=1e-6):
    if isinstance(theirs, Exception):
        assert isinstance(mine, Exception), f"torch raised {theirs!r}, minilora returned {mine!r}"
        torch_type = type(theirs) if type(theirs).__module__ == "builtins" else RuntimeError
        assert isinstance(mine, torch_type), (mine, theirs)
        return
    assert not isinstance(mine, Exception), f"minilora raised {mine!r}, torch returned {theirs}"
    if isinstance(theirs, torch.Size):
        assert tuple(mine) == tuple(theirs)
        return
    for m, t in zip(_flat(mine), _flat(theirs), strict=True):
        assert str(m.dtype) == str(t.dtype).replace("torch.", ""), (m.dtype, t.dtype)
        assert tuple(m.shape) == tuple(t.shape)
        np.testing.assert_allclose(m.detach().numpy().astype(np.float64), t.detach().numpy().astype(np.float64),
                                   rtol=tol, atol=tol, equal_nan=True)


UNARY = ["arccos", "arcsin", "arctan", "arcsinh", "arctanh", "negative", "positive", "fix", "frac", "deg2rad",
         "rad2deg", "sinc", "isneginf", "isposinf", "isreal", "msort", "argwhere", "diagflat", "absolute"]
BINARY = ["greater", "greater_equal", "less", "less_equal", "not_equal", "logaddexp2", "float_power", "ldexp",
          "gcd", "lcm"]


@pytest.mark.parametrize("kind", ["float", "int", "bool", "unit"])
@pytest.mark.parametrize("name", UNARY + ["arccosh"])
def test_unary_functions_and_methods(name, kind):
    kind = "big" if name == "arccosh" and kind == "float" else kind
    theirs = _outcome(lambda: getattr(torch, name)(_inputs(torch, kind)))
    _same(_outcome(lambda: getattr(ml, name)(_inputs(ml, kind))), theirs)
    if hasattr(torch.Tensor, name):
        _same(_outcome(lambda: getattr(_inputs(ml, kind), name)()), theirs)


@pytest.mark.parametrize("kinds", [("float", "float"), ("int", "int"), ("int", "float"), ("bool", "int"),
                                   ("float", "scalar")])
@pytest.mark.parametrize("name", BINARY)
def test_binary_functions_and_methods(name, kinds):
    def call(lib, method=False):
        a = _inputs(lib, kinds[0])
        b = 2 if kinds[1] == "scalar" else _inputs(lib, kinds[1]).flip(0)
        if name in ("gcd", "lcm", "ldexp") and kinds[1] == "scalar":
            b = lib.tensor(2)
        return getattr(a, name)(b) if method else getattr(lib, name)(a, b)
    theirs = _outcome(lambda: call(torch))
    _same(_outcome(lambda: call(ml)), theirs)
    _same(_outcome(lambda: call(ml, True)), _outcome(lambda: call(torch, True)))


@pytest.mark.parametrize("name", ["arccos", "arcsin", "arctan", "arcsinh", "arctanh", "frac", "deg2rad", "rad2deg",
                                  "sinc", "logaddexp2", "float_power", "ldexp", "fix", "absolute"])
def test_gradients_float64(name):
    def run(lib):
        a = lib.tensor(np.tanh(FLOAT) * 0.9, dtype=lib.float64, requires_grad=True)
        b = lib.tensor(FLOAT[::-1].copy(), dtype=lib.float64, requires_grad=True)
        out = getattr(lib, name)(a, b) if name in BINARY else getattr(lib, name)(a)
        (out * lib.tensor(FLOAT, dtype=lib.float64)).sum().backward()
        return a.grad, (b.grad if b.grad is not None else lib.zeros(3, 4, dtype=lib.float64))
    for m, t in zip(run(ml), run(torch)):
        np.testing.assert_allclose(m.numpy(), t.numpy(), rtol=1e-10, atol=1e-12)


def test_heaviside_isin_and_constructions():
    for lib_call in (
        lambda L: L.heaviside(L.tensor(FLOAT), L.tensor([0.5])),
        lambda L: L.heaviside(L.tensor(INT), L.tensor([7])),
        lambda L: L.heaviside(L.tensor(FLOAT), L.tensor([7])),  # (dtypes differ: torch refuses)
        lambda L: L.tensor(FLOAT).heaviside(L.tensor(2.0, dtype=L.float64).float()),
        lambda L: L.isin(L.tensor(INT), L.tensor([3, 5, 0])),
        lambda L: L.isin(L.tensor(INT), L.tensor([3, 5, 0]), invert=True),
        lambda L: L.isin(L.tensor(FLOAT), 0.0),
        lambda L: L.broadcast_tensors(L.ones(3, 1), L.zeros(4)),
        lambda L: L.broadcast_tensors(L.ones(3, 2), L.zeros(4)),
        lambda L: L.cartesian_prod(L.tensor([1, 2]), L.tensor([3, 4, 5])),
        lambda L: L.cartesian_prod(L.tensor([1.0, 2.0])),
        lambda L: L.combinations(L.tensor([1, 2, 3, 4])),
        lambda L: L.combinations(L.tensor([1.0, 2.0, 3.0]), r=3, with_replacement=True),
        lambda L: L.combinations(L.tensor([1, 2]), r=3),
        lambda L: L.block_diag(L.ones(2, 2), L.tensor([1.0, 2.0, 3.0]), L.tensor(5.0)),
        lambda L: L.block_diag(L.ones(2, 2, dtype=L.int32), L.tensor([[1.5]])),
        lambda L: L.diagflat(L.tensor([[1, 2], [3, 4]]), 1),
        lambda L: L.tensor([1.0, 2.0]).diagflat(-1),
        lambda L: L.vander(L.tensor([1, 2, 3])),
        lambda L: L.vander(L.tensor([1.0, 2.0, 3.0]), N=4, increasing=True),
        lambda L: L.vander(L.tensor([True, False])),
        lambda L: L.trapezoid(L.tensor(FLOAT)),
        lambda L: L.trapezoid(L.tensor(FLOAT), dx=0.5, dim=0),
        lambda L: L.trapezoid(L.tensor(FLOAT), L.tensor([0.0, 1.0, 3.0, 4.5])),
        lambda L: L.trapz(L.tensor(FLOAT), L.tensor([0.0, 1.0, 3.0, 4.5])),
        lambda L: L.trapz(L.tensor(INT)),
        lambda L: L.cumulative_trapezoid(L.tensor(FLOAT), dx=2.0),
        lambda L: L.cov(L.tensor(FLOAT)),
        lambda L: L.cov(L.tensor(INT), correction=0),
        lambda L: L.cov(L.tensor(FLOAT), fweights=L.tensor([1, 2, 1, 3]), aweights=L.tensor([0.5, 1.0, 2.0, 1.0])),
        lambda L: L.cov(L.tensor([1.0, 2.0, 4.0])),
        lambda L: L.tensor(FLOAT).cov(),
        lambda L: L.corrcoef(L.tensor(FLOAT)),
        lambda L: L.tensor(INT).corrcoef(),
        lambda L: L.argwhere(L.tensor(INT)),
        lambda L: L.tensor(BOOL).argwhere(),
        lambda L: L.msort(L.tensor(INT)),
        lambda L: L.unique_consecutive(L.tensor([1, 1, 2, 2, 3, 1, 1, 2])),
        lambda L: L.unique_consecutive(L.tensor([1, 1, 2, 2, 3, 1]), return_inverse=True, return_counts=True),
        lambda L: L.unique_consecutive(L.tensor([[1, 1], [1, 1], [2, 3]]), return_counts=True, dim=0),
        lambda L: L.tensor([2.0, 2.0, 1.0]).unique_consecutive(return_counts=True),
        lambda L: L.unravel_index(L.tensor([4, 1, 11]), (3, 4)),
        lambda L: L.unravel_index(L.tensor(7), (2, 2, 2)),
        lambda L: L.unravel_index(L.tensor([12]), (3, 4)),
        lambda L: L.unravel_index(L.tensor([1.0]), (3, 4)),
        lambda L: L.split_with_sizes(L.arange(6), [2, 4]),
        lambda L: L.arange(6).split_with_sizes([1, 5]),
        lambda L: L.split_with_sizes(L.arange(6), [2, 3]),
        lambda L: L.gcd(L.tensor([1.0]), L.tensor([2.0])),
    ):
        theirs = _outcome(lambda: lib_call(torch))
        _same(_outcome(lambda: lib_call(ml)), theirs)
    assert tuple(ml.broadcast_shapes((2, 1), (3,), 1)) == tuple(torch.broadcast_shapes((2, 1), (3,), 1))
    with pytest.raises(RuntimeError):
        ml.broadcast_shapes((2,), (3,))


def test_construction_gradients():
    def run(lib):
        a = lib.tensor(FLOAT, dtype=lib.float64, requires_grad=True)
        v = lib.tensor(FLOAT[0], dtype=lib.float64, requires_grad=True)
        outs = [lib.cov(a, aweights=lib.tensor([0.5, 1.0, 2.0, 1.0], dtype=lib.float64)), lib.corrcoef(a),
                lib.trapezoid(a, v), lib.block_diag(a, v), lib.diagflat(v),
                lib.cartesian_prod(v, v), lib.combinations(v), lib.msort(a), *lib.broadcast_tensors(a, v)]
        # (not vander: torch 2.13 computes it with an in-place cumprod, and its backward raises)
        sum(((o * o).sum() if o.dtype == lib.float64 else 0) for o in outs).backward()
        return a.grad, v.grad
    for m, t in zip(run(ml), run(torch)):
        np.testing.assert_allclose(m.numpy(), t.numpy(), rtol=1e-9, atol=1e-10)


# ---- the addmm family: values, gradients, grad_fn names and graphs -------------------------------------
def _graph(t):
    node = t.grad_fn
    return node.name(), [None if n is None else n.name().replace("torch::autograd::", "") for n, _ in
                         node.next_functions]


PRODUCTS = {
    "addmv": lambda L, A: L.addmv(A(3), A(3, 4), A(4), beta=0.5, alpha=2),
    "addr": lambda L, A: L.addr(A(3, 4), A(3), A(4), alpha=3),
    "addbmm": lambda L, A: L.addbmm(A(3, 5), A(2, 3, 4), A(2, 4, 5)),
    "addmm": lambda L, A: L.addmm(A(3, 5), A(3, 4), A(4, 5)),
    "baddbmm": lambda L, A: L.baddbmm(A(2, 3, 5), A(2, 3, 4), A(2, 4, 5), beta=2),
    "addcmul": lambda L, A: L.addcmul(A(3, 4), A(3, 4), A(3, 4), value=2),
    "addcdiv": lambda L, A: L.addcdiv(A(3, 4), A(3, 4), A(3, 4) + 5),
    "addmv_method": lambda L, A: A(3).addmv(A(3, 4), A(4)),
    "addr_method": lambda L, A: A(3, 4).addr(A(3), A(4)),
    "addbmm_method": lambda L, A: A(3, 5).addbmm(A(2, 3, 4), A(2, 4, 5), beta=0),
}


@pytest.mark.parametrize("name", list(PRODUCTS))
def test_product_family_values_grads_and_nodes(name):
    def run(lib):
        rng = np.random.default_rng(3)
        made = []

        def A(*shape):
            t = lib.tensor(rng.standard_normal(shape), requires_grad=True)
            made.append(t)
            return t
        out = PRODUCTS[name](lib, A)
        graph = _graph(out)
        out.sum().backward()
        return out, graph, [t.grad for t in made]
    mine, theirs = run(ml), run(torch)
    _same(mine[0], theirs[0], tol=1e-12)
    assert mine[1] == theirs[1]
    for m, t in zip(mine[2], theirs[2]):
        np.testing.assert_allclose(m.numpy(), t.numpy(), rtol=1e-10, atol=1e-12)


def test_product_family_errors_and_in_place():
    for call in (lambda L: L.addmv(L.ones(3), L.ones(3, 4), L.ones(5)),
                 lambda L: L.addmv(L.ones(2), L.ones(3, 4), L.ones(4)),
                 lambda L: L.addr(L.ones(3, 4), L.ones(3, 1), L.ones(4)),
                 lambda L: L.addbmm(L.ones(3, 5), L.ones(2, 3, 4), L.ones(3, 4, 5)),
                 lambda L: L.addbmm(L.ones(3, 5), L.ones(3, 4), L.ones(4, 5)),
                 lambda L: L.addmv(L.ones(3, dtype=L.long), L.ones(3, 4, dtype=L.long), L.ones(4, dtype=L.long),
                                   alpha=2),
                 lambda L: L.ones(3).addmv_(L.ones(3, 4), L.ones(4), beta=2),
                 lambda L: L.ones(3, 4).addr_(L.ones(3), L.ones(4)),
                 lambda L: L.ones(3, 5).addbmm_(L.ones(2, 3, 4), L.ones(2, 4, 5), alpha=0.5)):
        _same(_outcome(lambda: call(ml)), _outcome(lambda: call(torch)))


# ---- the top-level functional spellings: ATen's argument orders ---------------------------------------
def _functional_cases():
    x4 = RNG.standard_normal((2, 4, 5, 5))
    x3 = RNG.standard_normal((2, 4, 6))
    w2 = RNG.standard_normal((3, 4, 3, 3))
    w1 = RNG.standard_normal((3, 4, 2))
    emb = RNG.standard_normal((10, 3))
    bilinear_weight = RNG.standard_normal((5, 2, 3))
    return {
        "conv2d": lambda L, T: L.conv2d(T(x4), T(w2), None, 1, 1),
        "conv2d_kw": lambda L, T: L.conv2d(T(x4), T(w2), stride=2, groups=1),
        "conv1d": lambda L, T: L.conv1d(T(x3), T(w1), T(w1[:, 0, 0]), 2),
        "conv_transpose1d": lambda L, T: L.conv_transpose1d(T(x3), T(np.swapaxes(w1, 0, 1)), None, 2),
        "conv_transpose2d": lambda L, T: L.conv_transpose2d(T(x4), T(np.swapaxes(w2, 0, 1)), None, 1, 1),
        "layer_norm": lambda L, T: L.layer_norm(T(x3), [6], T(x3[0, 0]), None, 1e-3),
        "group_norm": lambda L, T: L.group_norm(T(x3), 2, T(x3[0, :, 0]), T(x3[1, :, 0])),
        "rms_norm": lambda L, T: L.rms_norm(T(x3), (6,), None, 1e-5),
        "batch_norm": lambda L, T: L.batch_norm(T(x3), T(x3[0, :, 0]), None, None, None, True, 0.1, 1e-5, False),
        "batch_norm_eval": lambda L, T: L.batch_norm(T(x3), None, None, T(x3[0, :, 0]), T(np.abs(x3[1, :, 0])),
                                                     False, 0.1, 1e-5, False),
        "instance_norm": lambda L, T: L.instance_norm(T(x3), None, None, None, None, True, 0.1, 1e-5, False),
        "embedding": lambda L, T: L.embedding(T(emb), L.tensor([[1, 2], [3, 9]])),
        "embedding_pad": lambda L, T: L.embedding(T(emb), L.tensor([1, 0, 4]), 0),
        "dropout_eval": lambda L, T: L.dropout(T(x3), 0.5, False),
        "cosine_similarity": lambda L, T: L.cosine_similarity(T(x3), T(x3[::-1].copy()), 2),
        "pairwise_distance": lambda L, T: L.pairwise_distance(T(x3[0]), T(x3[1]), 3.0),
        "cdist": lambda L, T: L.cdist(T(x3), T(x3[:, :3]), 2.0),
        "cdist_p1": lambda L, T: L.cdist(T(x3[0]), T(x3[1]), p=1.0),
        "bce_logits": lambda L, T: L.binary_cross_entropy_with_logits(T(x3), T(1 / (1 + np.exp(-x3[::-1])))),
        "bce_logits_sum": lambda L, T: L.binary_cross_entropy_with_logits(T(x3), T(1 / (1 + np.exp(-x3))), None,
                                                                          None, 2),
        "kl_div": lambda L, T: L.kl_div(T(x3), T(np.abs(x3)), 1),
        "kl_div_none_log": lambda L, T: L.kl_div(T(x3), T(x3[::-1].copy()), 0, log_target=True),
        "hinge": lambda L, T: L.hinge_embedding_loss(T(x3), T(np.sign(x3[::-1])), 0.5, 2),
        "margin_ranking": lambda L, T: L.margin_ranking_loss(T(x3[0, 0]), T(x3[1, 0]), T(np.sign(x3[0, 1])), 0.1),
        "cosine_embedding": lambda L, T: L.cosine_embedding_loss(T(x3[0]), T(x3[1]), T(np.sign(x3[0, :, 0]))),
        "triplet": lambda L, T: L.triplet_margin_loss(T(x3[0]), T(x3[1]), T(x3[0, ::-1].copy())),
        "poisson_nll": lambda L, T: L.poisson_nll_loss(T(x3), T(np.abs(x3)), True, False, 1e-8, 1),
        "pixel_shuffle": lambda L, T: L.pixel_shuffle(T(x4), 2),
        "pixel_unshuffle": lambda L, T: L.pixel_unshuffle(T(x4[:, :, :4, :4]), 2),
        "channel_shuffle": lambda L, T: L.channel_shuffle(T(x4), 2),
        "max_pool2d": lambda L, T: L.max_pool2d(T(x4), 2),
        "max_pool2d_args": lambda L, T: L.max_pool2d(T(x4), (3, 2), (1, 2), 1, 1, True),
        "max_pool1d": lambda L, T: L.max_pool1d(T(x3), 2, 1),
        "avg_pool1d": lambda L, T: L.avg_pool1d(T(x3), 3, 2, 1, False, False),
        "adaptive_avg_pool1d": lambda L, T: L.adaptive_avg_pool1d(T(x3), 4),
        "adaptive_max_pool1d": lambda L, T: L.adaptive_max_pool1d(T(x3), 3),
        "hardshrink": lambda L, T: L.hardshrink(T(x3), 0.7),
        "prelu": lambda L, T: L.prelu(T(x3), T(np.array([0.1, 0.2, 0.3, 0.4]))),
        "bilinear": lambda L, T: L.bilinear(T(x3[0, :, :2]), T(x3[1, :, :3]), T(bilinear_weight)),
        "softmax": lambda L, T: L.softmax(T(x3), 1),
    }


FUNCTIONAL = _functional_cases()


@pytest.mark.parametrize("name", list(FUNCTIONAL))
def test_top_level_functional_spellings(name):
    def run(lib):
        made = []

        def T(a):
            t = lib.tensor(np.asarray(a, dtype=np.float64), requires_grad=True)
            made.append(t)
            return t
        out = _outcome(lambda: FUNCTIONAL[name](lib, T))
        if isinstance(out, Exception):
            return out, []
        first = out[0] if isinstance(out, tuple) else out
        (first * first).sum().backward()
        return out, [t.grad for t in made]
    (mine, mine_grads), (theirs, their_grads) = run(ml), run(torch)
    _same(mine, theirs, tol=1e-9)
    for m, t in zip(mine_grads, their_grads, strict=True):
        assert (m is None) == (t is None)
        if t is not None:
            np.testing.assert_allclose(m.numpy(), t.numpy(), rtol=1e-8, atol=1e-10)


def test_top_level_functional_refusals_as_torch():
    for call in (lambda L: L.batch_norm(L.ones(2, 3), None, None, None, None, True, 0.1, 1e-5),  # (8 of 9)
                 lambda L: L.embedding(L.tensor([1, 2]), L.ones(5, 3)),  # F's order: indices as the weight
                 lambda L: L.kl_div(L.ones(3), L.ones(3), "mean"),
                 lambda L: L.layer_norm(L.ones(2, 3), [4]),
                 lambda L: L.poisson_nll_loss(L.ones(3), L.ones(3)),
                 lambda L: L.channel_shuffle(L.ones(1, 3, 2), 2),
                 lambda L: L.cdist(L.ones(3), L.ones(3))):
        _same(_outcome(lambda: call(ml)), _outcome(lambda: call(torch)))


def test_methods_exist_where_torch_has_them():
    names = UNARY + BINARY + ["arccosh", "heaviside", "cov", "corrcoef", "unique_consecutive", "addmv", "addr",
                              "addbmm", "addmv_", "addr_", "addbmm_", "arccos_", "fix_", "frac_", "hardshrink",
                              "prelu", "det", "inverse", "pinverse", "matrix_power", "slogdet", "logdet", "svd",
                              "qr", "cholesky", "ger", "matrix_exp", "split_with_sizes"]
    assert [n for n in names if hasattr(torch.Tensor, n) and not hasattr(ml.Tensor, n)] == []
    top = names + ["broadcast_tensors", "broadcast_shapes", "cartesian_prod", "combinations", "block_diag",
                   "vander", "trapezoid", "trapz", "isin", "unravel_index", "split_with_sizes"] + list(FUNCTIONAL)
    assert [n for n in top if hasattr(torch, n) and not hasattr(ml, n)] == []
    assert math.isclose(ml.tensor([4.0]).hardshrink(1.0).item(), 4.0)


# ---- grad_fn names and graphs where torch runs one node and minilora several ---------------------------
NODES = {
    "trace": lambda L, F, A: A(4, 4).trace(),
    "prod": lambda L, F, A: A(3, 4).prod(),
    "logsumexp": lambda L, F, A: A(3, 4).logsumexp(1),
    "minimum": lambda L, F, A: L.minimum(A(3, 4), A(3, 4)),
    "square": lambda L, F, A: A(3, 4).square(),
    "hardtanh": lambda L, F, A: F.hardtanh(A(3, 4)),
    "relu6": lambda L, F, A: F.relu6(A(3, 4)),
    "std_mean": lambda L, F, A: L.std_mean(A(3, 4), 1)[0],
    "std_mean[1]": lambda L, F, A: L.std_mean(A(3, 4))[1],
    "var_mean": lambda L, F, A: L.var_mean(A(3, 4), 0)[1],
    "unbind": lambda L, F, A: A(3, 4).unbind(1)[2],
    "layer_norm": lambda L, F, A: F.layer_norm(A(3, 4), (4,)),
    "layer_norm_affine": lambda L, F, A: F.layer_norm(A(3, 4), (4,), A(4), A(4)),
    "group_norm": lambda L, F, A: F.group_norm(A(2, 4, 3), 2, A(4)),
    "batch_norm": lambda L, F, A: F.batch_norm(A(3, 4), None, None, training=True),
    "smooth_l1": lambda L, F, A: F.smooth_l1_loss(A(3, 4), A(3, 4), reduction="sum"),
    "pad_constant": lambda L, F, A: F.pad(A(3, 4), (1, 2)),
    "pad_reflect": lambda L, F, A: F.pad(A(1, 3, 4), (1, 2), mode="reflect"),
    "pad_replicate": lambda L, F, A: F.pad(A(1, 2, 3, 4), (1, 1, 2, 0), mode="replicate"),
    "linalg.svd": lambda L, F, A: L.linalg.svd(A(3, 4), full_matrices=False).S,
    "linalg.vector_norm": lambda L, F, A: L.linalg.vector_norm(A(3, 4)),
}


@pytest.mark.parametrize("name", list(NODES))
def test_grad_fn_names_and_graphs_as_torch(name):
    def run(lib):
        rng = np.random.default_rng(5)
        out = NODES[name](lib, lib.nn.functional,
                          lambda *shape: lib.tensor(rng.standard_normal(shape), requires_grad=True))
        return _graph(out)
    assert run(ml) == run(torch)


def test_in_place_forms_as_torch():
    for call in (lambda L: L.tensor(np.tanh(FLOAT)).arccos_(),
                 lambda L: L.arcsinh_(L.tensor(FLOAT)),
                 lambda L: L.tensor(FLOAT).fix_(),
                 lambda L: L.frac_(L.tensor(FLOAT)),
                 lambda L: L.tensor(FLOAT).deg2rad_(),
                 lambda L: L.tensor(INT).deg2rad_(),  # (a float result into an int64 tensor: refused)
                 lambda L: L.tensor(FLOAT).sinc_(),
                 lambda L: L.tensor(INT).gcd_(L.tensor([4])),
                 lambda L: L.tensor(FLOAT).greater_(0.5),
                 lambda L: L.tensor(INT).less_equal_(L.tensor(3)),
                 lambda L: L.tensor(FLOAT, dtype=L.float64).float_power_(2),
                 lambda L: L.tensor(FLOAT).float_power_(2),
                 lambda L: L.tensor(FLOAT).addr_(L.ones(3), L.ones(4), alpha=2),
                 lambda L: L.tensor(FLOAT[0]).addmv_(L.ones(4, 3), L.ones(3), beta=0.5)):
        _same(_outcome(lambda: call(ml)), _outcome(lambda: call(torch)))
