"""torch.lgamma compiled (round 30): SLEEF's lgamma (``minilora/sleef_lgamma.py``) as C in native/float32_kernels.c,
the same bits as the NumPy steps and as torch, and what the comparison found on the way: SLEEF 3.6's order of
``logk2f``'s last additions (the float32 port's older order was an ulp off torch near lgamma's zeros), and fma64's
NumPy path past 2^995 (its Veltkamp split overflowed: an ulp off in a third of float64 lgammas past 1e300).
"""
import contextlib
import math
from fractions import Fraction

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from minilora import float32_math  # noqa: E402
from minilora.sleef_lgamma import sleef_lgamma  # noqa: E402

pytestmark = pytest.mark.skipif(float32_math.CPU_CAPABILITY == "default",
                                reason="torch's default build computes lgamma by C's scalar lgamma")
UNSIGNED = {"float32": np.uint32, "float64": np.uint64}


def differing(ours, theirs):
    return int(((ours != theirs) & ~(np.isnan(ours) & np.isnan(theirs))).sum())


def samples(dtype, n=1 << 15, seed=30):
    """random bit patterns, randn * 5, uniform on [-40, 40], and every float near lgamma's negative zeros
    -2.4570... and -2.7476... (where the old order of logk2f's sums showed: -2.456007, -2.7476828)"""
    rng = np.random.default_rng(seed)
    bits = rng.integers(0, np.iinfo(UNSIGNED[dtype]).max, n, dtype=UNSIGNED[dtype], endpoint=True).view(dtype)
    near_zeros = [np.linspace(centre - 2e-3, centre + 2e-3, n // 4, dtype=dtype) for centre in (-2.456, -2.7477)]
    huge = np.geomspace(1e300, 1.7e308, n // 4).astype(dtype) if dtype == "float64" else np.zeros(0, dtype)
    return np.concatenate([bits, (rng.standard_normal(n) * 5).astype(dtype), rng.uniform(-40, 40, n).astype(dtype),
                           np.array([-2.456007, -2.7476828], dtype), *near_zeros, huge])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_lgamma_compiled_numpy_and_torch_agree_bit_for_bit(dtype):
    x = samples(dtype)
    theirs = torch.lgamma(torch.from_numpy(x)).numpy()
    with float32_math.numpy_port():
        numpy_steps = sleef_lgamma(x)
    assert differing(numpy_steps, theirs) == 0
    assert differing(sleef_lgamma(x), theirs) == 0


@pytest.mark.skipif(not float32_math.native_available(), reason="no C compiler: the NumPy steps run")
def test_lgamma_runs_compiled():
    library = float32_math._native_library()
    assert hasattr(library, "ml_lgamma") and "lgamma" in float32_math._SLEEF64_UNARY
    x = np.array([[0.5, -2.5], [1e-40, 3e38]], np.float32)  # (shape kept; a 0-d array stays 0-d)
    assert sleef_lgamma(x).shape == (2, 2) and sleef_lgamma(np.float64(3.0)).shape == ()
    assert differing(sleef_lgamma(x), torch.lgamma(torch.from_numpy(x)).numpy()) == 0


def test_sleef_36s_logk2f_in_lgamma_and_atanh():
    """logk2f's e ln 2 + 2x, then + x^3 t (SLEEF 3.6), not e ln 2 + (2x + x^3 t): lgamma near its zeros shows it;
    atanh, its other caller, keeps torch's bits"""
    zeros = np.array([-2.456007, -2.7476828], np.float32)
    x = np.random.default_rng(31).uniform(-1, 1, 1 << 16).astype(np.float32)
    lgamma, atanh = (f(torch.from_numpy(v)).numpy() for f, v in ((torch.lgamma, zeros), (torch.atanh, x)))
    for port in (float32_math.numpy_port, contextlib.nullcontext):
        with port():
            assert differing(sleef_lgamma(zeros), lgamma) == 0
            assert differing(float32_math.sleef_atanh(x), atanh) == 0


def test_numpy_fma64_is_exact_near_the_top_of_the_range():
    rng = np.random.default_rng(32)
    a = np.ldexp(rng.uniform(1, 2, 300), rng.integers(990, 1023, 300))
    b = rng.uniform(-2, 2, 300)
    c = -(a * b) * rng.uniform(0.5, 1.5, 300)
    ours = float32_math._fma64_by_parts(a, b, c)
    exact = [float(Fraction(x) * Fraction(y) + Fraction(z)) if math.isfinite(x * y) else math.nan
             for x, y, z in zip(a.tolist(), b.tolist(), c.tolist())]
    assert differing(ours, np.array(exact)) == 0
