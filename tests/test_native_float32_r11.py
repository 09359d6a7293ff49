"""The compiled float32 kernels (minilora/native/float32_kernels.c) give the NumPy port's bits.

float32_math's SLEEF ports (exp, expm1, tanh, log1p) and the torch formulas over them (sigmoid, silu,
elu, softplus, mish, gelu's tanh form, silu's backward, the fused multiply-add of backward formulas)
run compiled where a C compiler builds them, and as the NumPy port otherwise. Each is compared here
with the port (``float32_math.numpy_port()``) on the hard values (signed zeros, infinities, NaN,
subnormals, each function's thresholds and their neighbours) and ~1.3 million floats drawn over the
whole exponent range, at lengths that leave torch's scalar tail, and with torch itself where installed.
Without a compiler, with a failing one, or under MINILORA_NATIVE=0 the NumPy port runs, same bits.
Offline, every float32 input of exp and sigmoid was compared (2^32 each; see the round-11 report).
"""
import contextlib
import os
import subprocess
import sys
from fractions import Fraction

import numpy as np
import pytest

import minilora as ml
from minilora import fastmath, float32_math, native

needs_native = pytest.mark.skipif(not float32_math.native_available(),
                                  reason=f"no compiled kernels here: {native.why_unavailable}")

THRESHOLDS = [0.0, 1e-45, 1.1754942e-38, 1.1754944e-38, 2 ** -8, 2 ** -90, 0.34657359, 1.0, -1.0, 8.664339742,
              16.635532333438687, 16.5, 20.0, 87.0, 88.0, 88.72283172607421875, 100.0, 103.97208, 104.0, 3e38,
              0.99, 0.995, 2.0, 1e30, 1.5, 9.0]


def _hard_values():
    """Each threshold with both signs and its neighbours one ulp away, the infinities and NaNs."""
    t = np.array(THRESHOLDS, np.float32)
    t = np.concatenate([t, -t])
    near = np.concatenate([t, np.nextafter(t, np.float32(np.inf)), np.nextafter(t, np.float32(-np.inf))])
    return np.concatenate([near, np.array([np.inf, -np.inf, np.nan, -np.nan], np.float32)])


def _inputs(n, seed=0):
    """n floats: bit patterns drawn over all floats, randn * 4, and the hard values spread through."""
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(n) * 4).astype(np.float32)
    x[::2] = rng.integers(0, 1 << 32, x[::2].size, dtype=np.uint64).astype(np.uint32).view(np.float32)
    hard = _hard_values()
    for start in range(0, n - hard.size, max(n // 7, hard.size)):
        x[start:start + hard.size] = hard
    return x


X = _inputs(1_300_003)  # (past 2^20 and odd: thread chunks and a scalar tail)

FUNCTIONS = {
    "exp": float32_math.sleef_exp,
    "exp(-x) in a loop": lambda x: float32_math.loop_exp(x, negate=True),
    "expm1": float32_math.sleef_expm1,
    "tanh": float32_math.sleef_tanh,
    "log1p": float32_math.sleef_log1p,
    "log": float32_math.sleef_log,
    "sigmoid": float32_math.sigmoid,
    "silu": lambda x: _silu(x),
    "elu": lambda x: float32_math.elu(x, 1.0, 1.0, 1.0),
    "selu": lambda x: float32_math.elu(x, 1.6732632423543772, 1.0507009873554805, 1.0),
    "celu(alpha=0.3)": lambda x: float32_math.elu(x, 0.3, 1.0, 1 / 0.3),
    "softplus": lambda x: float32_math.softplus(x, 1.0, 20.0),
    "softplus(beta=2, threshold=5)": lambda x: float32_math.softplus(x, 2.0, 5.0),
    "mish": lambda x: np.stack(float32_math.mish(x)),
    "gelu_tanh": lambda x: np.stack(float32_math.gelu_tanh(x)),
    "elu backward": lambda x: float32_math.elu_backward(_gradient(x), x, 1.0, 1.0, 1.0),
    "celu backward": lambda x: float32_math.elu_backward(_gradient(x), x, 0.3, 1.0, 1 / 0.3),
    "softplus backward": lambda x: float32_math.softplus_backward(_gradient(x), x, 1.0, 20.0),
    "elu backward of y.sum()": lambda x: float32_math.elu_backward(np.broadcast_to(np.float32(1), x.shape), x, 1, 1, 1),
    "softplus(beta=1.7, threshold=5.3) backward": lambda x: float32_math.softplus_backward(_gradient(x), x, 1.7, 5.3),
}


def _gradient(x):
    """An incoming gradient of x's shape: randn, the same for the compiled kernels and the port."""
    return np.random.default_rng(x.size).standard_normal(x.shape).astype(np.float32)


def _silu(x):
    s, out = np.empty_like(x), np.empty_like(x)
    float32_math.silu_and_sigmoid(x, s, out)
    return np.stack([s, out])


def _assert_same_bits(compiled, port):
    assert compiled.shape == port.shape
    differ = compiled.view(np.uint32) != port.view(np.uint32)
    assert not differ.any(), f"{differ.sum()} differ, e.g. at {np.flatnonzero(differ)[:5]}"


def _compiled_and_port(fn, x):
    """fn(x) as it runs (the compiled kernel where there is one), then under the NumPy port."""
    with np.errstate(all="ignore"):
        compiled = fn(x)
        with float32_math.numpy_port():
            return compiled, fn(x)


@needs_native
@pytest.mark.parametrize("name", FUNCTIONS)
def test_compiled_kernels_give_the_ports_bits(name):
    _assert_same_bits(*_compiled_and_port(FUNCTIONS[name], X))


@needs_native
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("n", [0, 1, 31, 33, 4097, 40_001, 70_001])
def test_short_arrays_and_scalar_tails(n, threads):
    """The scalar tail's positions (torch's per-thread chunks: minilora's thread count) are redone in NumPy."""
    x = _inputs(n + 5, seed=n)[:n]
    before = ml.get_num_threads()
    ml.set_num_threads(threads)
    try:
        for fn in FUNCTIONS.values():
            _assert_same_bits(*_compiled_and_port(fn, x))
    finally:
        ml.set_num_threads(before)


@needs_native
def test_zero_d_views_and_layouts():
    """A 0-d array, a transposed view and a strided one: the port's shapes and layouts."""
    base = _inputs(64 * 33, seed=3).reshape(64, 33)
    for x in (base[0, 0].reshape(()), base.T, base[::2, ::3]):
        for fn in FUNCTIONS.values():
            compiled, port = _compiled_and_port(fn, x)
            _assert_same_bits(compiled, port)
            assert compiled.flags.c_contiguous == port.flags.c_contiguous


@needs_native
def test_backward_formulas():
    """silu's backward and the fused multiply-adds of tanh's, gelu's and mish's backward formulas."""
    rng = np.random.default_rng(1)
    x = X[1::2].copy()  # (randn and the hard values)
    g = rng.standard_normal(x.size).astype(np.float32)
    t = float32_math.sleef_tanh(x)
    s = float32_math.sigmoid(x)
    cases = {"1 - t^2": lambda: fastmath.multiply_add(-t, t, 1),
             "1 + k x^2": lambda: fastmath.multiply_add(np.float32(3) * np.float32(0.044715), x * x, 1),
             "a s + (1 - t^2) t": lambda: fastmath.multiply_add(x * s, fastmath.multiply_add(-t, t, 1), t),
             "silu backward": lambda: _silu_backward(g, x, s)}
    for name, case in cases.items():
        compiled, port = _compiled_and_port(lambda _: case(), None)
        same = (compiled.view(np.uint32) == port.view(np.uint32)) | (np.isnan(compiled) & np.isnan(port))
        assert same.all(), name  # (a NaN's sign and payload: the FMA instruction's, float64's in the port)


def _silu_backward(g, x, s):
    out = np.empty_like(g)
    fastmath.silu_backward(g, x, s, out)
    return out


@needs_native
def test_fused_multiply_add_is_rounded_once():
    """C's fmaf rounds a * b + c once, as torch's FMA. The port's float64 sum rounded twice where the product
    lies on a float32 rounding midpoint and c is below float64's ulp of it (found comparing the two); the
    port now settles such ties by the sum's exact error (float32_math._settle_ties)."""
    a, b = np.array([0.14107437, -0.046875], np.float32), np.array([-2.83342e22, -1.1809796e19], np.float32)
    compiled = float32_math.fused_multiply_add(a, b, 1)
    exact = [Fraction(float(p)) * Fraction(float(q)) + 1 for p, q in zip(a, b)]
    nearest = [np.float32(float(e)) for e in exact]  # (float() of a Fraction: correctly rounded to float64)
    for value, e, n in zip(compiled, exact, nearest):
        candidates = [n, np.nextafter(n, np.float32(np.inf)), np.nextafter(n, np.float32(-np.inf))]
        best = min(candidates, key=lambda c: abs(Fraction(float(c)) - e))
        assert value == best
    with float32_math.numpy_port():
        _assert_same_bits(float32_math.fused_multiply_add(a, b, 1), compiled)


@needs_native
@pytest.mark.parametrize("scale", [1.0, 2.0 ** -140, 2.0 ** 100])
def test_small_arrays_settle_ties_of_ties_as_fmaf(scale):
    """Products of a 12-bit and a 13-bit odd integer need 25 bits: many lie on a float32 midpoint, and a c far
    below their ulp decides the rounding. The NumPy path (``_whole_array_fma``, which runs without a compiler)
    must give fmaf's bits -- in float32's normal range, its subnormal range (2^-140) and near its top."""
    rng = np.random.default_rng(5)
    a = ((rng.integers(2 ** 11, 2 ** 12, 1500) | 1) * scale).astype(np.float32)
    b = (rng.integers(2 ** 12, 2 ** 13, 1500) | 1).astype(np.float32)
    c = (rng.standard_normal(1500) * scale * 1e-9).astype(np.float32)
    twice = np.add(np.multiply(a, b, dtype=np.float64), c, dtype=np.float64).astype(np.float32)
    small = float32_math._whole_array_fma(a, b, c)
    compiled = float32_math._fma_natively(a, b, c)
    assert compiled is not None
    _assert_same_bits(small, compiled)
    if scale == 1.0:
        assert (twice != compiled).sum() > 100  # (the ties are there: the double rounding misses them)


@needs_native
def test_against_torch():
    """Every element in the vectorized body (2^20 elements: no scalar tail on 1 or 2 threads) is torch's."""
    torch = pytest.importorskip("torch")
    if float32_math.CPU_CAPABILITY == "default":
        pytest.skip("torch's default build: C's functions on every element, not reproduced")
    x = _inputs(1 << 20, seed=5)
    x[np.isnan(x)] = 1  # (a NaN's payload through torch's formula is not modelled)
    F = torch.nn.functional
    calls = {"sigmoid": (float32_math.sigmoid, torch.sigmoid), "silu": (lambda v: _silu(v)[1], F.silu),
             "expm1": (lambda v: float32_math.vectorized("expm1", v), torch.expm1),
             "log1p": (lambda v: float32_math.vectorized("log1p", v), torch.log1p),
             "elu": (lambda v: float32_math.elu(v, 1.0, 1.0, 1.0), F.elu),
             "softplus": (lambda v: float32_math.softplus(v, 1.0, 20.0), F.softplus),
             "mish": (lambda v: float32_math.mish(v)[0], F.mish),
             "gelu_tanh": (lambda v: float32_math.gelu_tanh(v)[0], lambda v: F.gelu(v, approximate="tanh"))}
    for name, (ours, theirs) in calls.items():
        with np.errstate(all="ignore"):
            mine = ours(x)
        expected = theirs(torch.from_numpy(x)).numpy()
        same = (mine.view(np.uint32) == expected.view(np.uint32)) | (np.isnan(mine) & np.isnan(expected))
        assert same.all(), f"{name}: {(~same).sum()} differ from torch"


@needs_native
def test_compiled_once_into_the_cache(tmp_path, monkeypatch):
    """A fresh cache compiles once; the next load finds the library (no compiler run)."""
    monkeypatch.setenv("MINILORA_CACHE_DIR", str(tmp_path))
    assert native.load() is not None
    built = sorted(tmp_path.glob("float32_kernels-*.so"))
    assert len(built) == 1
    stamp = built[0].stat().st_mtime_ns

    def no_compiler(*args, **kwargs):
        raise AssertionError("compiled again")
    monkeypatch.setattr(native, "compile_atomically", no_compiler)
    assert native.load() is not None
    assert sorted(tmp_path.glob("float32_kernels-*.so")) == built and built[0].stat().st_mtime_ns == stamp


def test_no_compiler_or_switched_off(tmp_path, monkeypatch):
    """A CC that is not there, or one that fails, or MINILORA_NATIVE=0: load() says why and returns None."""
    monkeypatch.setenv("MINILORA_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("MINILORA_NATIVE", raising=False)
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    assert native.load() is None and "no C compiler" in native.why_unavailable["float32_kernels.c"]
    failing = tmp_path / "failing-cc"
    failing.write_text("#!/bin/sh\necho 'cc: internal error' >&2\nexit 1\n")
    failing.chmod(0o755)
    monkeypatch.setenv("CC", str(failing))
    assert native.load() is None and "internal error" in native.why_unavailable["float32_kernels.c"]
    monkeypatch.delenv("CC")
    monkeypatch.setenv("MINILORA_NATIVE", "0")
    assert native.load() is None and native.why_unavailable["float32_kernels.c"] == "MINILORA_NATIVE=0"
    assert not list(tmp_path.glob("*.so"))


@needs_native
def test_a_process_without_them_computes_the_same_bits(tmp_path):
    """A whole process with MINILORA_NATIVE=0 and a bogus CC runs the NumPy port: the same numbers."""
    script = ("import numpy as np, minilora as ml, minilora.nn.functional as F\n"
              "from minilora import float32_math\n"
              "x = ml.tensor(np.linspace(-30, 30, 4099, dtype=np.float32), requires_grad=True)\n"
              "y = ml.sigmoid(x) + F.silu(x) + F.mish(x) + F.elu(x) + F.softplus(x) + F.gelu(x, approximate='tanh')\n"
              "y.sum().backward()\n"
              "print(float32_math.native_available(), np.concatenate([y.detach().numpy(), x.grad.numpy()]).tobytes().hex())\n")
    env = dict(os.environ, MINILORA_NATIVE="0", CC=str(tmp_path / "bogus-cc"), MINILORA_CACHE_DIR=str(tmp_path))
    without = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
    off, bits = without.stdout.split()
    assert off == "False"
    namespace = {}
    exec(script.replace("print(", "result = ("), namespace)
    on, expected = namespace["result"]
    assert on is True and bits == expected


@needs_native
@pytest.mark.parametrize("name", ["sigmoid", "silu", "elu", "selu", "softplus", "mish", "gelu_tanh", "tanh", "expm1",
                                  "log1p"])
def test_ops_forward_and_backward(name):
    """Through the ops (the Tensor API), forward and backward: the compiled kernels' gradients are the port's."""
    F = ml.nn.functional
    op = {"sigmoid": ml.sigmoid, "silu": F.silu, "elu": F.elu, "selu": F.selu, "softplus": F.softplus,
          "mish": F.mish, "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"), "tanh": ml.tanh, "expm1": ml.expm1,
          "log1p": ml.log1p}[name]
    x = X[1:200_001].copy()  # (odd length: a scalar tail; randn and hard values)
    g = ml.tensor(_gradient(x))
    results = []
    for port in (False, True):
        t = ml.tensor(x, requires_grad=True)
        with np.errstate(all="ignore"), (float32_math.numpy_port() if port else contextlib.nullcontext()):
            y = op(t)
            y.backward(g)
        results.append(np.stack([y.detach().numpy(), t.grad.numpy()]))
    same = (results[0].view(np.uint32) == results[1].view(np.uint32)) | (np.isnan(results[0]) & np.isnan(results[1]))
    assert same.all(), f"{(~same).sum()} differ"



def test_address_is_the_data_pointer_of_every_kind_of_array():
    """native.address takes a writable array's buffer through ctypes and falls back to __array_interface__:
    both must name the first element's byte, for views, read-only, strided, 0-d and empty arrays."""
    base = np.arange(24, dtype=np.float32).reshape(4, 6)
    frozen = base.copy()
    frozen.flags.writeable = False
    for a in (base, base[1:], base[:, 2:], base.T, base[::2, ::3], base[2, 3].reshape(()), frozen,
              np.zeros(0, np.float32), np.ones(3)):
        assert native.address(a) == a.__array_interface__["data"][0]
