"""torch's sqrt is MKL's, not the correctly rounded one: matched bit for bit on Intel AVX-512 CPUs (round 27).

torch's CPU build sends float32 and float64 ``sqrt`` to MKL's vector math, which is an ulp off the exact root in
~1 element in 150 (float32) -- so a float32 AdamW run drifted from torch's from its third step (2 of 3072 weights,
then more), and so did RMSprop, Adagrad, Adadelta, NAdam, RAdam and float64 Adam. On an Intel CPU with AVX-512,
MKL's code is an rsqrt14 estimate refined (native/float32_kernels.c's ml_mkl_sqrt, ml_mkl_sqrt64), which
float32_math.mkl_sqrt runs there; elsewhere it is the correctly rounded root, as before.
"""
import numpy as np
import pytest

import minilora
from minilora import float32_math

torch = pytest.importorskip("torch")
matched = pytest.mark.skipif(not (float32_math.MKL_SQRT_CPU and float32_math.native_available()),
                             reason="MKL's sqrt is matched on Intel AVX-512 CPUs, with the compiled kernels")


def _values(dtype, seed=0):
    rng = np.random.default_rng(seed)
    lowest, highest = (-149, 128) if dtype == np.float32 else (-1074, 1024)
    spread = (2.0 ** rng.uniform(lowest, highest, 200_000)).astype(dtype)  # every exponent, subnormals too
    common = (rng.random(100_000) * 4).astype(dtype)
    special = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, -1.0, -np.finfo(dtype).smallest_subnormal,
                        np.finfo(dtype).smallest_subnormal, np.finfo(dtype).max, np.finfo(dtype).tiny], dtype)
    return np.concatenate([spread, common, special])


def _bits(a):
    a = np.asarray(a)
    return a.view(np.uint32 if a.dtype == np.float32 else np.uint64)


@matched
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sqrt_is_torchs_to_the_bit(dtype):
    x = _values(dtype)
    np.testing.assert_array_equal(_bits(minilora.sqrt(minilora.tensor(x)).numpy()),
                                  _bits(torch.from_numpy(x).sqrt().numpy()))


@matched
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [1, 7, 15, 16, 17, 33])
def test_short_arrays_and_tails(dtype, n):
    x = _values(dtype, seed=n)[-n - 100:-100].copy()
    np.testing.assert_array_equal(_bits(minilora.sqrt(minilora.tensor(x)).numpy()),
                                  _bits(torch.from_numpy(x).sqrt().numpy()))


@matched
@pytest.mark.parametrize("spelling", ["x[::3].sqrt()", "x ** 0.5", "torch.pow(x, 0.5)", "x.clone().sqrt_()",
                                      "torch.sqrt(x, out=torch.empty(x.shape))", "x ** -0.5", "x.rsqrt()"])
def test_the_spellings_that_take_mkls_root(spelling):
    x = np.abs(_values(np.float32, seed=3)[:50_000])

    def run(lib):
        return eval(spelling, {"torch": lib, "x": lib.tensor(x.copy()) if lib is minilora else torch.from_numpy(x.copy())})
    np.testing.assert_array_equal(_bits(run(minilora).numpy()), _bits(run(torch).numpy()))


OPTIMIZERS = [
    ("AdamW", dict(lr=1e-2)), ("AdamW", dict(lr=1e-2, amsgrad=True)), ("AdamW", dict(lr=1e-2, maximize=True)),
    ("AdamW", dict(lr=1e-2, foreach=True)), ("AdamW", dict(lr=1e-2, fused=True)),  # (fused: a correctly rounded root)
    ("Adam", dict(lr=1e-2, weight_decay=0.1)), ("RMSprop", dict(lr=1e-2, centered=True, momentum=0.5)),
    ("Adagrad", dict(lr=0.1, lr_decay=0.01)), ("Adadelta", dict(lr=1.0, rho=0.8)), ("NAdam", dict(lr=1e-2)),
    ("RAdam", dict(lr=1e-2, decoupled_weight_decay=True, weight_decay=0.1))]


@matched
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name,options", OPTIMIZERS, ids=lambda v: v if isinstance(v, str) else None)
def test_optimizers_step_torchs_weights(name, options, dtype):
    rng = np.random.default_rng(4)
    start, grads = rng.standard_normal((64, 48)), [rng.standard_normal((64, 48)) for _ in range(6)]

    def train(lib):
        p = lib.nn.Parameter(lib.tensor(start.copy(), dtype=getattr(lib, dtype)))
        opt = getattr(lib.optim, name)([p], **options)
        for g in grads:
            p.grad = lib.tensor(g, dtype=getattr(lib, dtype))
            opt.step()
        return p.detach().numpy()
    np.testing.assert_array_equal(_bits(train(minilora)), _bits(train(torch)))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_elsewhere_mkls_own_root_or_the_correctly_rounded_one(monkeypatch, dtype):
    """Where MKL's code was not matched (an AMD CPU, AVX2, no compiler) mkl_sqrt is MKL's own vsSqrt where MKL is
    loaded (torch's sqrt: every bit on an AMD Zen 4), else NumPy's correctly rounded root."""
    from minilora import mkl_vml
    measured_here = float32_math.MKL_SQRT_CPU
    monkeypatch.setattr(float32_math, "MKL_SQRT_CPU", False)
    x = np.abs(_values(dtype, seed=5))
    expected = mkl_vml.compute("sqrt", x) if mkl_vml.applies("sqrt", x) else np.sqrt(x)
    np.testing.assert_array_equal(_bits(float32_math.mkl_sqrt(x)), _bits(expected))
    if mkl_vml.applies("sqrt", x) and not measured_here:
        np.testing.assert_array_equal(_bits(float32_math.mkl_sqrt(x)), _bits(torch.sqrt(torch.from_numpy(x)).numpy()))
    out = np.empty_like(x)
    assert float32_math.mkl_sqrt(x, out=out) is out
