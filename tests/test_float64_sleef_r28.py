"""SLEEF's double functions compiled, and the last two ported (round 28).

Round 27 ported torch's ``Vectorized<double>`` functions to NumPy (float32_math's sleef_exp2_64, sleef_log1p64,
sleef_expm1_64, sleef_hyperbolic64, sleef_atan2_64, sleef_hypot64, sleef_pow64): torch's bits, but 50-300 ms a
million elements. float32_kernels.c's ml_sleef64 / ml_sleef64_2 run the same steps in C; these tests hold both to
the same bits (and to torch's), so either may run (no compiler, MINILORA_NATIVE=0: the NumPy port). SLEEF's double
atanh and erf (torch.atanh's vectors, float64 F.gelu's) are new: 0.19% of atanh's and 0.6% of gelu's elements
were an ulp off with NumPy's arctanh and C's erf standing in.
"""
import functools
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
sys.path.insert(0, __file__.rsplit("/", 1)[0])
from float64_bits_sweep import LAYOUTS, UNARY, draw, evaluate  # noqa: E402

import minilora  # noqa: E402
from minilora import float32_math  # noqa: E402

N = 4005  # (not a multiple of 16: every row has a scalar tail)
SPECIAL = [0.0, -0.0, np.inf, -np.inf, np.nan, 1.0, -1.0, 5e-324, -5e-324, 2.2e-308, 1e-300, -1e-300, 1e-10, 1e-8,
           0.5, -0.5, 2.5, -2.5, 2.5000000000000004, 6.0, -6.0, 5.9999999999999991, 0.9999999999999999, -0.99999999,
           1.0000000000000002, 18.72, 36.8, -36.8, 709.78, 710.0, -745.2, 1023.9, 1024.0, -2000.0, 1e300, 1e308]


def _same(ours, theirs):
    return (ours == theirs) | (np.isnan(ours) & np.isnan(theirs))


def _sample(scale, n=6000, seed=0):
    """The special values, then uniform over (-scale, scale) and magnitudes from 1e-12 to 1e2 times that."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-scale, scale, n)
    x[n // 2:] *= 10.0 ** rng.integers(-12, 3, n - n // 2)
    return np.concatenate([SPECIAL, x])


@pytest.mark.parametrize("name", ["atanh", "gelu"])
def test_atanh_and_gelu_values_and_gradients_are_torchs_in_every_layout(name):
    fn, scale = UNARY[name]
    g = np.random.default_rng(1).standard_normal(N)
    for layout in LAYOUTS:
        x = draw(N, scale, seed=7)
        ours, theirs = evaluate(minilora, fn, [x], layout, g), evaluate(torch, fn, [x], layout, g)
        for k, (o, t) in enumerate(zip(ours, theirs)):
            np.testing.assert_array_equal(o, t, err_msg=f"{name} {layout} {'value' if k == 0 else 'gradient'}")


@pytest.mark.parametrize("name, torch_function, scale", [("atanh", torch.atanh, 1.1), ("erf", None, 8.0)])
def test_sleef_atanh_and_erf_are_torchs_vectors(name, torch_function, scale):
    """Every element in the vectorized loop (a multiple of 16 elements): torch.atanh is SLEEF's atanhd8; torch.erf
    is MKL's, so erf is checked through float64 gelu's ``(x 0.5) (1 + erf(x / sqrt 2))``."""
    x = _sample(scale)[:6016]
    ours = getattr(float32_math, f"sleef_{name}64")(x)
    if torch_function is not None:
        np.testing.assert_array_equal(ours, torch_function(torch.from_numpy(x)).numpy())
        return
    with np.errstate(invalid="ignore"):
        gelu = (x * 0.5) * (1 + float32_math.sleef_erf64(x * np.sqrt(0.5)))
    np.testing.assert_array_equal(gelu, torch.nn.functional.gelu(torch.from_numpy(x)).numpy())
    assert np.signbit(ours[1]) and ours[2] == 1 and ours[3] == -1


UNARY_PORTS = {"exp2": ("sleef_exp2_64", 1100), "log1p": ("sleef_log1p64", 5), "expm1": ("sleef_expm1_64", 50),
               "atanh": ("sleef_atanh64", 1.1), "erf": ("sleef_erf64", 8),
               **{name: ("sleef_hyperbolic64", 720) for name in ("sinh", "cosh", "tanh")}}


def _compiled_and_port(name, function, *arrays):
    """The compiled kernel's answer (float32_math._sleef64_natively: ml_sleef64, ml_sleef64_2) and the NumPy
    port's."""
    if not float32_math.native_available():
        pytest.skip("no compiled kernels here (the NumPy port runs everywhere)")
    compiled = float32_math._sleef64_natively(name, *arrays)
    with float32_math.numpy_port():
        return compiled, function(*arrays)


@pytest.mark.parametrize("name", list(UNARY_PORTS))
def test_compiled_unary_kernel_gives_the_ports_bits(name):
    function_name, scale = UNARY_PORTS[name]
    function = getattr(float32_math, function_name)
    if function_name == "sleef_hyperbolic64":
        function = functools.partial(function, name)
    compiled, port = _compiled_and_port(name, function, _sample(scale))
    assert _same(compiled, port).all(), f"{name}: {np.count_nonzero(~_same(compiled, port))} elements differ"


@pytest.mark.parametrize("name", ["atan2", "hypot", "pow"])
def test_compiled_binary_kernel_gives_the_ports_bits(name):
    """Normal results: the port's fused multiply-add without a compiler (``_fma64_by_parts``) is exact but for
    subnormal parts, where C's fma is right (torch's atan2 of 3e-310 and 2.5 is the compiled kernel's)."""
    function = {"atan2": float32_math.sleef_atan2_64, "hypot": float32_math.sleef_hypot64,
                "pow": float32_math.sleef_pow64}[name]
    a, b = np.meshgrid(_sample(10, n=60), _sample(10, n=60, seed=1))
    a, b = a.ravel(), b.ravel()
    if name == "pow":
        b = np.where(np.abs(b) < 50, b, np.rint(b))
    keep = ~((np.abs(a) < 1e-290) | (np.abs(b) > 1e290)) if name == "atan2" else slice(None)
    compiled, port = _compiled_and_port(name, function, a[keep], b[keep])
    assert _same(compiled, port).all(), f"{name}: {np.count_nonzero(~_same(compiled, port))} elements differ"
    theirs = getattr(torch, name)(torch.from_numpy(a[keep]), torch.from_numpy(b[keep])).numpy()
    assert _same(compiled, theirs).sum() >= compiled.size - compiled.size % 16  # (the tail: C's function)


def test_the_compiled_kernels_keep_shapes_and_split_between_threads():
    x = np.random.default_rng(3).uniform(-1, 1, (300, 200))  # (60000 elements: parallel's threads)
    out = float32_math.sleef_atanh64(x)
    assert out.shape == x.shape
    with float32_math.numpy_port():
        np.testing.assert_array_equal(out, float32_math.sleef_atanh64(x))
    assert float32_math.sleef_erf64(np.array(0.5)).shape == ()
