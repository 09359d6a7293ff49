"""torch's float32 exp, log, log10, log2, tanh and erf are MKL's: matched bit for bit on Intel AVX-512 CPUs.

torch's CPU build sends them to MKL's vector math ("HA" accuracy), whose results are not correctly rounded:
~0.1-1% of elements were an ulp off the correctly rounded value minilora computed. MKL's AVX-512 kernels
(mkl_vml_kernel_s{Exp,Ln,Log10,Log2,Tanh,Erf}_Z0HAynn in torch's libtorch_cpu.so) run compiled in
native/float32_kernels.c (ml_mkl_exp, ml_mkl_log, ml_mkl_log10, ...), the same instructions in the
same order, where MKL's sqrt was matched (float32_math.MKL_SQRT_CPU); elsewhere the correctly rounded values.
"""
import numpy as np
import pytest

import minilora
from minilora import float32_math

torch = pytest.importorskip("torch")
matched = pytest.mark.skipif(not (float32_math.MKL_SQRT_CPU and float32_math.native_available()),
                             reason="MKL's code is matched on Intel AVX-512 CPUs, with the compiled kernels")

FUNCTIONS = ["exp", "log", "log10", "log2", "tanh", "erf"]
# Where each kernel changes path: exp's scalar under/overflow code (|x| >= 87.33654, results subnormal from
# -87.34, 0 below -103.97, inf above 88.72), erf's saturation (x^2 >= 14.688109), tanh's last interval (8)
# and its +-1 above 2^127, log's second path (subnormal x, x above 2^126).
EDGES = [88.72283, 88.72284, 87.33654, 87.33653, -87.33654, -87.33655, -103.97207, -103.97208, -103.97209,
         3.8324, 3.8325, 3.8326, 8.0, 7.999999, 0.046875, 1.7014118e38, 1.7014120e38, 8.5070592e37, 1.0, 2.0]


def _bits(a):
    return np.asarray(a).view(np.uint32)


def _values(seed=0):
    rng = np.random.default_rng(seed)
    magnitude = (2.0 ** rng.uniform(-149, 128, 200_000)).astype(np.float32)  # every exponent, subnormals too
    spread = magnitude * rng.choice(np.array([-1, 1], np.float32), magnitude.size)
    common = (rng.random(100_000) * 20 - 10).astype(np.float32)
    near_range = (rng.random(20_000) * 30 - 120).astype(np.float32)  # (exp's subnormal results)
    payloads = np.array([0x7fc00000, 0xffc00000, 0x7fa00001, 0xffa00001, 0x7fc00123, 1, 0x80000001,
                         0x7f7fffff, 0xff7fffff, 0x00800000], np.uint32).view(np.float32)
    special = np.array([0.0, -0.0, np.inf, -np.inf] + EDGES + [-e for e in EDGES], np.float32)
    return np.concatenate([spread, common, near_range, payloads, special])


def _torch(name, x):
    return getattr(torch, name)(torch.from_numpy(x)).numpy()


def _minilora(name, x):
    return getattr(minilora, name)(minilora.tensor(x)).numpy()


@matched
@pytest.mark.parametrize("name", FUNCTIONS)
def test_functions_are_torchs_to_the_bit(name):
    x = _values()
    np.testing.assert_array_equal(_bits(_minilora(name, x)), _bits(_torch(name, x)))


def _mkl_only(name, count, seed=0):
    """``count`` float32 values whose MKL value is not the correctly rounded one (what minilora gave before)."""
    x = (np.random.default_rng(seed).random(1_000_000) * 8 - 4).astype(np.float32)
    x = np.abs(x) if name.startswith("log") else x
    exact = getattr(torch, name)(torch.from_numpy(x).double()).float().numpy()
    return x[_bits(_torch(name, x)) != _bits(exact)][:count].copy()


@matched
@pytest.mark.parametrize("name", FUNCTIONS)
@pytest.mark.parametrize("n", [1, 7, 15, 16, 17, 33])
def test_short_arrays_and_tails(name, n):
    x = _mkl_only(name, n, seed=n)
    assert x.size == n
    np.testing.assert_array_equal(_bits(_minilora(name, x)), _bits(_torch(name, x)))


@matched
@pytest.mark.parametrize("name", FUNCTIONS)
@pytest.mark.parametrize("layout", ["strided", "transposed", "scalar"])
def test_views_and_zero_dim(name, layout):
    odd = _mkl_only(name, 200, seed=5)
    x = np.concatenate([odd, _values(seed=5)[:60_000 - odd.size]]).reshape(200, 300)
    x[7, 11] = x[0, 0]  # (the zero-dim tensor's value: one whose MKL value is not correctly rounded)

    def run(lib, f):
        t = lib.tensor(x.copy()) if lib is minilora else torch.from_numpy(x.copy())
        view = {"strided": t[::3, 1::2], "transposed": t.t(), "scalar": t[7, 11]}[layout]
        return f(view).numpy()
    ours, theirs = run(minilora, getattr(minilora, name)), run(torch, getattr(torch, name))
    np.testing.assert_array_equal(_bits(ours), _bits(theirs))


@matched
@pytest.mark.parametrize("name", ["exp", "tanh", "erf"])  # (the logs' gradients, g / (x ln b), take no log)
def test_gradients_are_torchs(name):
    x = np.abs((np.random.default_rng(2).random(5000) * 6 - 3).astype(np.float32)) + np.float32(0.01)
    g = np.random.default_rng(3).standard_normal(5000).astype(np.float32)

    def grad(lib):
        t = (lib.tensor(x.copy()) if lib is minilora else torch.from_numpy(x.copy())).requires_grad_(True)
        getattr(lib, name)(t).backward(lib.tensor(g.copy()) if lib is minilora else torch.from_numpy(g.copy()))
        return t.grad.numpy()
    np.testing.assert_array_equal(_bits(grad(minilora)), _bits(grad(torch)))


@pytest.mark.parametrize("name", FUNCTIONS)
def test_elsewhere_correctly_rounded(monkeypatch, name):
    """Where MKL's code was not matched (an AMD CPU, AVX2, no compiler): the correctly rounded value, as before."""
    monkeypatch.setattr(float32_math, "MKL_SQRT_CPU", False)
    x = np.abs((np.random.default_rng(4).random(20_000) * 8 - 4).astype(np.float32)) + np.float32(1e-3)
    assert float32_math.mkl_matched(name, x) is None
    exact = getattr(torch, name)(torch.from_numpy(x).double()).float().numpy()
    np.testing.assert_array_equal(_bits(_minilora(name, x)), _bits(exact))


def test_16_bit_kernels_are_not_mkls():
    """torch's bfloat16/float16 exp, log and tanh are not MKL's: their values stay the correctly rounded float32
    ones, rounded."""
    x = np.linspace(0.01, 4, 4000, dtype=np.float32).astype(np.float16)
    for name in ("exp", "log", "tanh"):
        assert float32_math.mkl_matched(name, x) is None
        expected = getattr(np, name)(x.astype(np.float64)).astype(np.float32).astype(np.float16)
        np.testing.assert_array_equal(float32_math.vml(name, x), expected)


@pytest.mark.parametrize("setting", ["MKL_ENABLE_INSTRUCTIONS=AVX2", "MKL_CBWR=COMPATIBLE", "MKL_CBWR=AVX512",
                                     "MKL_ENABLE_INSTRUCTIONS=avx512_e1"])
def test_mkls_environment_picks_its_kernels(monkeypatch, setting):
    """MKL_ENABLE_INSTRUCTIONS=AVX2 or MKL_CBWR=COMPATIBLE send MKL to older kernels, with other bits (~1-5% of
    exp's and log's elements, measured): there the correctly rounded values; an AVX-512 setting keeps MKL's."""
    variable, value = setting.split("=")
    monkeypatch.setenv(variable, value)
    assert float32_math._mkl_settings_keep_avx512() == value.upper().startswith("AVX512")
