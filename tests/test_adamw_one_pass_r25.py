"""AdamW's float32 step in one compiled pass (float32_math.adamw_step, native/float32_kernels.c's ml_adamw) gives
the bits of optim/adam.py's NumPy update (exercise 6.1's adamw_update, ~14 calls a slice), and torch's."""
import numpy as np
import pytest

import minilora as ml
from minilora import float32_math, parallel
from minilora.optim import Adam, AdamW

pytestmark = pytest.mark.skipif(not float32_math.native_available(), reason="no C compiler: the NumPy update runs")
# Where torch's sqrt is MKL's own vsSqrt (MKL loaded on a CPU its sqrt was not modelled on: an AMD Zen 4) the one pass
# is declined -- its root is the correctly rounded one -- and the NumPy update, which calls vsSqrt, runs
_one_pass_taken = pytest.mark.skipif(
    not float32_math.MKL_SQRT_CPU and ml.mkl_vml.applies("sqrt", np.zeros(1, np.float32)),
    reason="the one pass is declined here: torch's sqrt is MKL's own vsSqrt on this CPU (the NumPy update calls it)")


def _weights(rng, shapes):
    return [rng.standard_normal(shape).astype(np.float32) for shape in shapes]


def _train(opt_class, weights, grads, steps=4, **options):
    params = [ml.nn.Parameter(ml.tensor(w.copy())) for w in weights]
    opt = opt_class(params, **options)
    for step in range(steps):
        for p, g in zip(params, grads[step]):
            p.grad = ml.tensor(g)
        opt.step()
    state = [opt.state[p] for p in params]
    return [p.numpy() for p in params] + [s["exp_avg"].numpy() for s in state] + [s["exp_avg_sq"].numpy() for s in state]


def _grads(rng, weights, steps=4):
    grads = []
    for _ in range(steps):
        step = [(rng.standard_normal(w.shape) * np.exp(rng.uniform(-20, 5, w.shape))).astype(np.float32) for w in weights]
        step[-1].reshape(-1)[:8] = [0, -0.0, 1e-45, -1e-45, 3e38, 1e-38, np.inf, np.nan]  # subnormals, overflow, inf, nan
        grads.append(step)
    return grads


SHAPES = [(300, 257), (1000,), (16, 8), (7, 9), (4096,)]  # big ones split among threads, small ones gathered


@pytest.fixture(params=[1, 2])
def threads(request):
    before = parallel.num_threads()
    parallel.set_num_threads(request.param)
    yield request.param
    parallel.set_num_threads(before)


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("opt_class,options", [
    (AdamW, dict(lr=1e-3, weight_decay=0.01)), (AdamW, dict(lr=3e-2, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.0)),
    (Adam, dict(lr=1e-3)), (Adam, dict(lr=1e-3, weight_decay=0.1)), (AdamW, dict(lr=1e-3, maximize=True)),
    (AdamW, dict(lr=1e-3, amsgrad=True))])
@_one_pass_taken
def test_one_pass_is_the_numpy_update_to_the_bit(threads, monkeypatch, fused, opt_class, options):
    monkeypatch.setattr(float32_math, "FUSED_MULTIPLY_ADD", fused)  # the roundings of both kinds of torch build
    rng = np.random.default_rng(0)
    weights = _weights(rng, SHAPES)
    grads = _grads(rng, weights)
    calls = []
    real = float32_math.adamw_step
    monkeypatch.setattr(float32_math, "adamw_step", lambda *a, **k: calls.append(real(*a, **k)) or calls[-1])
    compiled = _train(opt_class, weights, grads, **options)
    # the NumPy update with the one pass declined (not numpy_port(): its sqrt is MKL's compiled one too, round 27)
    monkeypatch.setattr(float32_math, "adamw_step", lambda *a, **k: False)
    numpy_way = _train(opt_class, weights, grads, **options)
    # AdamW's rule and Adam without decay go the one-pass way; Adam's L2 term, maximize, amsgrad the NumPy way
    one_pass_applies = not (options.get("maximize") or options.get("amsgrad")
                            or (opt_class is Adam and options.get("weight_decay")))
    assert any(calls) == one_pass_applies
    for a, b in zip(compiled, numpy_way):
        np.testing.assert_array_equal(a, b, strict=True)


def test_one_pass_is_torchs_adamw(threads):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    weights = _weights(rng, [(64, 48), (3000,)])
    grads = [[rng.standard_normal(w.shape).astype(np.float32) for w in weights] for _ in range(3)]
    ours = _train(AdamW, weights, grads, steps=3, lr=1e-3, weight_decay=0.01)
    params = [torch.nn.Parameter(torch.from_numpy(w.copy())) for w in weights]
    opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.01, foreach=False)
    for step in range(3):
        for p, g in zip(params, grads[step]):
            p.grad = torch.from_numpy(g)
        opt.step()
    theirs = [p.detach().numpy() for p in params]
    for a, b in zip(ours[:2], theirs):  # torch's sqrt is MKL's on some CPUs (optim/adam.py): within an ulp
        np.testing.assert_allclose(a, b, rtol=2e-7, atol=0)


def test_the_exercise_still_decides_float64_and_small_checks():
    """Exercise 6.1's tests train float64 weights: the NumPy update runs them (the one pass is float32 only)."""
    p = ml.nn.Parameter(ml.tensor(np.ones(5)))
    p.grad = ml.tensor(np.full(5, 0.5))
    calls = []
    real = float32_math.adamw_step
    float32_math.adamw_step = lambda *a, **k: calls.append(real(*a, **k)) or calls[-1]
    try:
        AdamW([p], lr=0.1).step()
    finally:
        float32_math.adamw_step = real
    assert calls == []


def test_shared_out_among_threads_the_one_pass_keeps_the_bits(monkeypatch):
    """1.3M elements: each thread's span of them in one pass (parallel.spans), whatever the thread count."""
    rng = np.random.default_rng(2)
    weights = _weights(rng, [(655360,), (300000,), (345000,), (1000,)])
    grads = _grads(rng, weights, steps=2)
    before = parallel.num_threads()
    try:
        with monkeypatch.context() as numpy_update:  # (the one pass declined: the NumPy update, MKL's sqrt and all)
            numpy_update.setattr(float32_math, "adamw_step", lambda *a, **k: False)
            expected = _train(AdamW, weights, grads, steps=2, lr=1e-3, weight_decay=0.01)
        for count in (1, 2, 3):
            parallel.set_num_threads(count)
            for a, b in zip(_train(AdamW, weights, grads, steps=2, lr=1e-3, weight_decay=0.01), expected):
                np.testing.assert_array_equal(a, b, strict=True)
    finally:
        parallel.set_num_threads(before)
