"""Round 30: the extremes sweep's leftovers (tests/extremes_sweep.py) and the float64 gradients whose exp was glibc's
where torch's exp op is MKL's (igamma / igammac, erfc, erfinv, ndtri, log_ndtr).
"""
from fractions import Fraction

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


# ---- batch norm of [N, C] at extreme values (float64's channels-last kernel), one value a channel ----------------
EXTREMES = [0.0, -0.0, 5e-324, 1.0, -1.0, 1.7976931348623157e308, -1.7976931348623157e308, np.inf, -np.inf, np.nan,
            -2.0, 0.5, 1e4]


def native_batch_norms(x, w, b, mean, var, training):
    """(out, save_mean, save_invstd, running_mean, running_var) of both libraries"""
    results = []
    for library in (ml, torch):
        stats = [library.tensor(v.copy()) for v in (mean, var)]
        out = library.native_batch_norm(*(library.tensor(v) for v in (x, w, b)), *stats, training, 0.1, 1e-5)
        results.append([np.asarray(t.numpy()) for t in (*out, *stats)])
    return results


@pytest.mark.usefixtures("two_threads")  # (the rows are cut into one chunk a thread, as torch's)
@pytest.mark.parametrize("training", [False, True])
def test_native_batch_norm_of_rows_at_extreme_values_is_torchs(training):
    """float64 [N, C] (eval: fma(x, alpha, beta), where the product overflowed into an infinite beta; training: the
    channels-last kernel's statistics), float32 kept; one value a channel included"""
    for dtype in ("float64", "float32"):
        batch_norms_at_extreme_values(dtype, training)


def batch_norms_at_extreme_values(dtype, training):
    rng = np.random.default_rng(9)
    with np.errstate(over="ignore"):
        values = np.array(EXTREMES, dtype)
    for _ in range(100):
        n, c = int(rng.integers(1, 6)), int(rng.integers(1, 4))
        shape = (n, c) if rng.random() < 0.7 else (n, c, 1)
        x, w, b, mean = (rng.choice(values, s) for s in (shape, c, c, c))
        ours, theirs = native_batch_norms(x, w, b, mean, np.abs(rng.choice(values, c)), training)
        for a, t in zip(ours, theirs):
            assert differing(a, t) == 0, (x, w, b)


@pytest.mark.usefixtures("two_threads")  # (the rows are cut into one chunk a thread, as torch's)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_one_channel_batch_statistics_add_rows_in_order(dtype):
    """[N, 1]: the channels-last kernel adds each thread's rows in order (NumPy's add.reduce paired them)"""
    rng = np.random.default_rng(10)
    for n in (15, 33, 47, 64):
        x = (rng.standard_normal((n, 1)) * 10).astype(dtype)
        ours, theirs = native_batch_norms(x, np.ones(1, dtype), np.zeros(1, dtype), np.zeros(1, dtype),
                                          np.ones(1, dtype), True)
        for a, t in zip(ours, theirs):
            assert differing(a, t) == 0


def test_one_value_a_channel_is_refused_by_F_batch_norm_only():
    """torch's F.batch_norm checks the batch size in Python; torch.batch_norm and native_batch_norm normalise a
    single value (variance 0, the running variance's unbiased update 0 / 0: NaN)"""
    x = np.array([[3.0, 4.0]])
    for library in (ml, torch):
        with pytest.raises(ValueError, match="Expected more than 1 value per channel when training"):
            library.nn.functional.batch_norm(library.tensor(x), None, None, training=True)
    ours, theirs = native_batch_norms(x, np.ones(2), np.zeros(2), np.zeros(2), np.ones(2), True)
    for a, t in zip(ours, theirs):
        assert differing(a, t) == 0
    assert np.isnan(ours[4]).all()
    results = []
    for library in (ml, torch):
        mean, var = library.zeros(2, dtype=library.float64), library.ones(2, dtype=library.float64)
        out = library.batch_norm(library.tensor(x), None, None, mean, var, True, 0.1, 1e-5, False)
        results.append([out.numpy(), mean.numpy(), var.numpy()])
    for a, t in zip(*results):
        assert differing(a, t) == 0


def test_numpy_fma64_past_the_range_is_the_exact_sum_rounded():
    """fma64's NumPy path (no compiler, or operands the compiled one does not take): a product that overflows meets
    an infinite or a finite addend as C's fma, and a factor at the top of the range keeps its product's error"""
    from minilora.float32_math import _fma64_by_parts
    huge = np.finfo(np.float64).max
    a = np.array([1e4, 1e300, huge, huge, -huge, 2.0 ** 600, huge])
    b = np.array([-3.6e304, 1e300, huge, huge, huge, 2.0 ** 424, -1 / np.sqrt(1 + 1e-5)])
    c = np.array([np.inf, -np.inf, -np.inf, 1.0, 5.0, -huge, huge / np.sqrt(1 + 1e-5)])
    expected = [np.inf, -np.inf, -np.inf, np.inf, -np.inf, 2.0 ** 971, None]
    expected[-1] = float(Fraction(a[-1]) * Fraction(b[-1]) + Fraction(c[-1]))
    assert differing(_fma64_by_parts(a, b, c), np.array(expected)) == 0


# ---- addmm / addmv / addr gradients: the product's gradient first, then times alpha (derivatives.yaml) -----------
SCALED_PRODUCTS = {"addmv": ((5,), (5, 7), (7,)), "addmm": ((5, 3), (5, 7), (7, 3)), "addr": ((5, 7), (5,), (7,))}


def scaled_product_gradients(name, arrays, g, beta, alpha):
    results = []
    for library in (ml, torch):
        tensors = [library.tensor(a, requires_grad=True) for a in arrays]
        out = getattr(library, name)(*tensors, beta=beta, alpha=alpha)
        results.append([x.numpy() for x in library.autograd.grad(out, tensors, library.tensor(g))])
    return results


@pytest.mark.parametrize("name", sorted(SCALED_PRODUCTS))
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_scaled_product_gradients_multiply_by_alpha_last(name, dtype):
    """all three (float64 addmv's vec and addr's vec2 gradients, mv's of a transposed matrix: MKL's plain dgemv,
    mkl_dot.columns_times_vector since round 31)"""
    rng = np.random.default_rng(11)
    shapes = SCALED_PRODUCTS[name]
    for _ in range(10):
        arrays = [rng.standard_normal(s).astype(dtype) for s in shapes]
        out_shape = shapes[0] if name != "addmv" else (shapes[1][0],)
        ours, theirs = scaled_product_gradients(name, arrays, rng.standard_normal(out_shape).astype(dtype), 0.7, 0.3)
        for a, t in zip(ours, theirs):
            assert differing(a, t) == 0


def test_addmv_gradients_at_extreme_values_are_torchs():
    """the extremes sweep's addmv (grad): vec's gradient mat.t().mv(g), then times alpha (small sizes: MKL's
    transposed dgemv adds the rows in order there, fused)"""
    rng = np.random.default_rng(12)
    for _ in range(200):
        n, m = int(rng.integers(1, 5)), int(rng.integers(1, 5))
        arrays = [rng.choice(np.array(EXTREMES), s) for s in ((n,), (n, m), (m,))]
        beta, alpha = rng.choice([1.0, 0.2, 0.0]), rng.choice([1.0, 0.6])
        ours, theirs = scaled_product_gradients("addmv", arrays, np.ones(n), beta, alpha)
        for a, t in zip(ours, theirs):
            assert differing(a, t) == 0, arrays


# ---- logdet at extreme values: torch's slogdet is LU's sum(log |d|), its logdet where(sign == -1, nan, ...) ----
# (a singular matrix's gradient is torch's LU solve's inf/NaN propagation, not modelled: left out)
LOGDET_MATRICES = [[[0.0, 0.0], [-np.inf, -1.7976931348623157e308]],  # (an infinite pivot meets a zero one: NaN)
                   [[np.inf, 1.0], [np.inf, 0.0]], [[-2.0, 1.0], [1.0, 3.0]], [[1.0, 2.0], [np.nan, 1.0]],
                   [[3.0, 1.0], [1.0, 2.0]]]


def test_logdet_values_and_gradients_at_extreme_values_are_torchs():
    """values: NumPy's slogdet called a matrix with a zero pivot singular (-inf) where torch's sum is NaN;
    gradients: none where the determinant is negative (torch's where on the sign), not wherever the value is NaN
    (a matrix with NaN in it: NaN gradients)"""
    kind = lambda a: np.where(np.isnan(a), 3, np.where(np.isinf(a), np.sign(a) + 1, 0))  # noqa: E731
    for matrix in LOGDET_MATRICES:
        results = []
        for library in (ml, torch):
            x = library.tensor(np.array(matrix), requires_grad=True)
            out = library.logdet(x)
            results.append([out.detach().numpy(), library.autograd.grad(out, [x])[0].numpy()])
        for ours, theirs in zip(*results):
            assert (kind(ours) == kind(theirs)).all(), matrix
            np.testing.assert_allclose(ours, theirs, rtol=1e-15)
