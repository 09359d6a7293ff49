"""Round 30: the extremes sweep's leftovers (tests/extremes_sweep.py) and the float64 gradients whose exp was glibc's
where torch's exp op is MKL's (igamma / igammac, erfc, erfinv, ndtri, log_ndtr).
"""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
import minilora as ml  # noqa: E402
from minilora import blas  # noqa: E402


def differing(ours, theirs):
    ours, theirs = np.asarray(ours), np.asarray(theirs)
    return int(((ours != theirs) & ~(np.isnan(ours) & np.isnan(theirs))).sum())


def gradients(name, *values, wrt=-1):
    """(ours, torch's) gradient of sum(name(*values)) with respect to values[wrt]"""
    grads = []
    for library in (ml, torch):
        function = library
        for part in name.split("."):
            function = getattr(function, part)
        tensors = [library.tensor(v) for v in values]
        tensors[wrt].requires_grad_(True)
        function(*tensors).sum().backward()
        grads.append(tensors[wrt].grad.numpy())
    return grads


@pytest.mark.skipif(blas.library() != "mkl", reason="torch's exp op is MKL's VML")
@pytest.mark.parametrize("name", ["igamma", "igammac", "special.gammainc", "erfc", "erfinv", "special.ndtri",
                                  "special.log_ndtr"])
def test_float64_gradient_formulas_take_torchs_exp(name):
    rng = np.random.default_rng(3)
    a = np.abs(rng.standard_normal(20000)) * 5 + 0.1
    x = np.abs(rng.standard_normal(20000)) * 3
    values = {"erfinv": (rng.uniform(-0.999, 0.999, 20000),), "special.ndtri": (rng.uniform(0.001, 0.999, 20000),),
              "erfc": (x - 1.5,), "special.log_ndtr": (x - 1.5,)}.get(name, (a, x))
    assert differing(*gradients(name, *values)) == 0


# ---- F.bilinear: ATen's _trilinear, one node, its order ----------------------------------------------------------
BILINEAR_SHAPES = [((4, 3), (4, 5), (6, 3, 5)), ((2, 7, 30), (2, 7, 40), (9, 30, 40)), ((5, 1), (5, 4), (3, 1, 4)),
                   ((64, 20), (64, 30), (3, 20, 30))]


def extreme_values(shape, dtype, rng):
    """normal values with +-inf, NaN, +-0 and huge ones planted (an infinity meeting a zero: NaN in torch's order)"""
    values = rng.standard_normal(shape).astype(dtype)
    flat = values.reshape(-1)
    plant = rng.choice(flat.size, min(2, flat.size), replace=False)  # (a few: an infinite weight spreads)
    flat[plant] = rng.choice(np.array([np.inf, -np.inf, np.nan, 0.0, -0.0, np.finfo(dtype).max], dtype), plant.size)
    return values


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("shapes", BILINEAR_SHAPES)
@pytest.mark.parametrize("extreme", [False, True])
def test_bilinear_values_and_gradients_are_torchs_bits(dtype, shapes, extreme):
    rng = np.random.default_rng(5)
    draw = (lambda s: extreme_values(s, dtype, rng)) if extreme else (lambda s: rng.standard_normal(s).astype(dtype))
    arrays = [draw(s) for s in shapes] + [rng.standard_normal(shapes[2][0]).astype(dtype)]
    g = rng.standard_normal(shapes[0][:-1] + shapes[2][:1]).astype(dtype)
    results = []
    for library in (ml, torch):
        tensors = [library.tensor(a, requires_grad=True) for a in arrays]
        out = library.nn.functional.bilinear(*tensors)
        out.backward(library.tensor(g))
        results.append([out.detach().numpy()] + [t.grad.numpy() for t in tensors])
    for ours, theirs in zip(*results):
        assert differing(ours, theirs) == 0


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("autocast", [False, True])
def test_bilinear_in_16_bits_and_under_autocast_is_torchs(dtype, autocast):
    """torch's bilinear is on no CPU autocast list, but _trilinear's inner bmm calls are: bfloat16 products"""
    arrays = [np.random.default_rng(7).standard_normal(s).astype(np.float32) for s in ((3, 8, 30), (3, 8, 20),
                                                                                        (7, 30, 20), (7,))]
    results = []
    for library in (ml, torch):
        tensors = [library.tensor(a).to(getattr(library, dtype)).requires_grad_() for a in arrays]
        with library.autocast("cpu", enabled=autocast):
            out = library.nn.functional.bilinear(*tensors)
        out.float().sum().backward()
        results.append([out.detach().float().numpy()] + [t.grad.float().numpy() for t in tensors])
        assert str(out.dtype).endswith(dtype)
    for ours, theirs in zip(*results):
        assert differing(ours, theirs) == 0


def test_bilinear_graph_and_second_derivatives_are_torchs():
    rng = np.random.default_rng(8)
    arrays = [rng.standard_normal(s) for s in ((4, 3), (4, 5), (6, 3, 5), (6,))]
    results = []
    for library in (ml, torch):
        tensors = [library.tensor(a, requires_grad=True) for a in arrays]
        out = library.nn.functional.bilinear(*tensors)
        node = out.grad_fn.next_functions[0][0]
        assert (type(out.grad_fn).__name__, type(node).__name__, type(node.next_functions[0][0]).__name__) == (
            "AddBackward0", "ViewBackward0", "TrilinearBackward0")
        grads = library.autograd.grad((out ** 2).sum(), tensors[:3], create_graph=True)
        results.append([g.detach().numpy() for g in library.autograd.grad(sum((g ** 2).sum() for g in grads),
                                                                          tensors[:3])])
    for ours, theirs in zip(*results):
        np.testing.assert_allclose(ours, theirs, rtol=1e-12)
