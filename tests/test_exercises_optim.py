"""Exercises 5.2 (05_cuda_kernels) and 6.x (06_finetune): the AdamW update -- in NumPy and as a CUDA
kernel -- gradient clipping and the cosine schedule.

Run one exercise:  python -m pytest -m ex6_1 tests
"""

import numpy as np
import pytest

from minilora import kernels
from minilora import float64, tensor
from minilora.nn import Parameter
from minilora.optim import SGD, Adam, AdamW, clip_grad_norm_, get_cosine_schedule_with_warmup
from minilora.optim.adam import adamw_update
from minilora.testing import assert_close

HYPER = dict(lr=0.01, betas=(0.8, 0.95), eps=1e-3, weight_decay=0.1)  # eps large: eps in or out of the root shows


def _adamw_reference(p, grads, lr, betas, eps, weight_decay, l2=0.0):
    """The AdamW paper's update, written the textbook way in float64, one step per gradient."""
    beta1, beta2 = betas
    p, m, v = p.astype(np.float64), np.zeros(p.shape), np.zeros(p.shape)
    for t, g in enumerate(grads, start=1):
        g = g + l2 * p
        p = p * (1 - lr * weight_decay)
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        p = p - lr * (m / (1 - beta1 ** t)) / (np.sqrt(v / (1 - beta2 ** t)) + eps)
    return p


def _amsgrad_reference(p, grads, lr, betas, eps, weight_decay):
    """AdamW with amsgrad: the denominator is the root of the running maximum of v, in float64."""
    beta1, beta2 = betas
    p, m, v, v_max = p.astype(np.float64), np.zeros(p.shape), np.zeros(p.shape), np.zeros(p.shape)
    for t, g in enumerate(grads, start=1):
        p = p * (1 - lr * weight_decay)
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        v_max = np.maximum(v_max, v)
        p = p - lr * (m / (1 - beta1 ** t)) / (np.sqrt(v_max / (1 - beta2 ** t)) + eps)
    return p


def _run(optimizer_class, p0, grads, **hyper):
    p = Parameter(p0.copy())
    opt = optimizer_class([p], **hyper)
    for g in grads:
        p.grad = tensor(g)
        opt.step()
    return p


# ---- 6.1 the AdamW update in NumPy --------------------------------------------------------------------
@pytest.mark.ex6_1
def test_adamw_update_matches_the_reference(rng):
    """The exercise's function on raw arrays, and AdamW.step, which runs it on every float32/float64 parameter."""
    p0, grads = rng.standard_normal((3, 5)), [rng.standard_normal((3, 5)) for _ in range(3)]
    param, exp_avg, exp_avg_sq = p0.copy(), np.zeros_like(p0), np.zeros_like(p0)
    beta1, beta2 = HYPER["betas"]
    for step, g in enumerate(grads, start=1):
        adamw_update(param, g, exp_avg, exp_avg_sq, np.empty_like(p0), step=step, lr=HYPER["lr"], beta1=beta1,
                     beta2=beta2, eps=HYPER["eps"], weight_decay=HYPER["weight_decay"])
    expected = _adamw_reference(p0, grads, **HYPER)
    assert_close(param, expected, rtol=1e-12, atol=1e-12, name="adamw_update's parameter")
    assert_close(_run(AdamW, p0, grads, **HYPER), expected, rtol=1e-12, atol=1e-12, name="AdamW parameter")


@pytest.mark.ex6_1
def test_adamw_update_without_decay_on_an_l2_gradient_is_adams_update(rng):
    """weight_decay=0 is Adam's update: with the L2 term folded into the gradient first, Adam(weight_decay=)."""
    p0, grads = rng.standard_normal(7), [rng.standard_normal(7) for _ in range(2)]
    param, exp_avg, exp_avg_sq = p0.copy(), np.zeros_like(p0), np.zeros_like(p0)
    beta1, beta2 = HYPER["betas"]
    for step, g in enumerate(grads, start=1):
        adamw_update(param, g + HYPER["weight_decay"] * param, exp_avg, exp_avg_sq, np.empty_like(p0), step=step,
                     lr=HYPER["lr"], beta1=beta1, beta2=beta2, eps=HYPER["eps"], weight_decay=0.0)
    expected = _adamw_reference(p0, grads, **dict(HYPER, weight_decay=0.0), l2=HYPER["weight_decay"])
    assert_close(param, expected, rtol=1e-12, atol=1e-12, name="adamw_update's parameter")


@pytest.mark.ex6_1
def test_adamw_amsgrad_takes_the_root_of_the_running_maximum(rng):
    """AdamW(amsgrad=True) hands the update a fourth array, max_exp_avg_sq: kept as the running maximum of v, its
    root is the denominator (gradients that shrink, so v falls below its maximum)."""
    p0 = rng.standard_normal((2, 3))
    grads = [scale * rng.standard_normal((2, 3)) for scale in (3.0, 0.1, 0.1)]
    expected = _amsgrad_reference(p0, grads, **HYPER)
    assert_close(_run(AdamW, p0, grads, amsgrad=True, **HYPER), expected, rtol=1e-12, atol=1e-12,
                 name="AdamW(amsgrad=True) parameter")


def test_adam_l2_weight_decay_is_not_decoupled(rng):
    """(Adam.step runs the exercise's function on the gradient plus the L2 term: the test above checks that.)"""
    p0, grads = rng.standard_normal(7), [rng.standard_normal(7) for _ in range(2)]
    p = _run(Adam, p0, grads, **HYPER)
    expected = _adamw_reference(p0, grads, **dict(HYPER, weight_decay=0.0), l2=HYPER["weight_decay"])
    assert_close(p, expected, rtol=1e-12, atol=1e-12, name="Adam parameter")


# ---- 5.2 the AdamW kernel -------------------------------------------------------------------------------
@pytest.mark.ex5_2
def test_adamw_kernel_matches_the_reference(rng, kernel_device):
    xp = kernel_device.xp
    shapes = [(5, 3), (4099,)]  # ragged; the second spans two 4096-element chunks
    p0 = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    grads = [[rng.standard_normal(s).astype(np.float32) for s in shapes] for _ in range(2)]
    params = [xp.array(p) for p in p0]  # copies: the kernel updates in place
    m, v = [xp.zeros(s, np.float32) for s in shapes], [xp.zeros(s, np.float32) for s in shapes]
    beta1, beta2 = HYPER["betas"]
    for step, g in enumerate(grads, start=1):
        kernels.adamw_step(params, [xp.asarray(a) for a in g], m, v, lr=HYPER["lr"], beta1=beta1, beta2=beta2,
                           eps=HYPER["eps"], weight_decay=HYPER["weight_decay"], step=step,
                           device=kernel_device)
    for t in range(len(shapes)):
        expected = _adamw_reference(p0[t], [g[t].astype(np.float64) for g in grads], **HYPER)
        got = params[t] if isinstance(params[t], np.ndarray) else params[t].get()
        assert_close(got, expected, rtol=1e-5, atol=1e-6, name=f"params[{t}]")


# ---- 6.2 clipping ---------------------------------------------------------------------------------------
@pytest.mark.ex6_2
def test_clip_grad_norm_scales_to_max_norm(rng):
    a, b = Parameter(np.zeros(3)), Parameter(np.zeros((2, 2)))
    a.grad, b.grad = tensor([3.0, 0.0, 0.0], dtype=float64), tensor([[0.0, 4.0], [0.0, 0.0]], dtype=float64)  # total norm 5
    total = clip_grad_norm_([a, b], max_norm=1.0)
    assert float(total.numpy(force=True)) == pytest.approx(5.0)
    assert_close(a.grad, [0.6, 0.0, 0.0], rtol=1e-5, atol=0, name="a.grad")
    assert_close(b.grad, [[0.0, 0.8], [0.0, 0.0]], rtol=1e-5, atol=0, name="b.grad")


@pytest.mark.ex6_2
def test_clip_grad_norm_leaves_small_and_shared_gradients_right():
    a = Parameter(np.zeros(2))
    a.grad = tensor([0.3, 0.4], dtype=float64)
    clip_grad_norm_([a], max_norm=1.0)
    assert_close(a.grad, [0.3, 0.4], rtol=1e-5, atol=0, name="a gradient under max_norm")
    held = tensor([3.0, 4.0], dtype=float64)
    a.grad = held
    clip_grad_norm_([a], max_norm=1.0)  # in place, as torch's g.mul_(coef): the Tensor held is clipped
    assert_close(held, [0.6, 0.8], rtol=1e-5, atol=0, name="the gradient Tensor held before clipping")
    shared = tensor([3.0, 4.0], dtype=float64)
    p, q = Parameter(np.zeros(2)), Parameter(np.zeros(2))
    p.grad = q.grad = shared  # one Tensor, two parameters: torch's norm counts it twice, and scales it twice
    clip_grad_norm_([p, q], max_norm=1.0)
    expected = np.array([3.0, 4.0]) / 50
    assert_close(p.grad, expected, rtol=1e-5, atol=0, name="p.grad")
    assert_close(q.grad, expected, rtol=1e-5, atol=0, name="q.grad")


@pytest.mark.ex6_2
def test_clip_coefficient_is_torchs_exactly(rng):
    """torch scales by max_norm / (total + 1e-6), capped at 1: the 1e-6 shows at float64 precision, and
    all-zero gradients (total 0) stay zero without a division by zero."""
    grads = [rng.standard_normal((3, 4)), rng.standard_normal(5)]
    params = [Parameter(np.zeros(g.shape)) for g in grads]
    for p, g in zip(params, grads):
        p.grad = tensor(g.copy(), dtype=float64)
    total = float(clip_grad_norm_(params, max_norm=0.5).numpy(force=True))
    assert total == pytest.approx(np.sqrt(sum((g ** 2).sum() for g in grads)), rel=1e-12)
    for i, (p, g) in enumerate(zip(params, grads)):
        assert_close(p.grad, g * (0.5 / (total + 1e-6)), rtol=1e-13, atol=0, name=f"params[{i}].grad")
    zero = Parameter(np.zeros(3))
    zero.grad = tensor(np.zeros(3), dtype=float64)
    clip_grad_norm_([zero], max_norm=1.0)
    assert_close(zero.grad, np.zeros(3), rtol=0, atol=0, name="an all-zero gradient")


# ---- 6.3 the cosine schedule -------------------------------------------------------------------------------
@pytest.mark.ex6_3
@pytest.mark.parametrize("num_cycles, expected", [
    (0.5, {0: 0.0, 5: 0.5, 10: 1.0, 60: 0.5, 110: 0.0}),
    (1.0, {10: 1.0, 35: 0.5, 60: 0.0, 85: 0.5})])
def test_cosine_schedule_with_warmup(num_cycles, expected):
    opt = SGD([Parameter(np.zeros(1))], lr=2.0)
    schedule = get_cosine_schedule_with_warmup(opt, num_warmup_steps=10, num_training_steps=110,
                                               num_cycles=num_cycles)
    lrs = {}
    for step in range(111):
        lrs[step] = schedule.get_last_lr()[0]
        schedule.step()
    for step, factor in expected.items():
        assert lrs[step] == pytest.approx(2.0 * factor, abs=1e-12), \
            (f"step {step}: lr factor {lrs[step] / 2.0} != {factor} (warmup: step / 10 for steps 0..9; then "
             f"0.5 (1 + cos(2 pi num_cycles progress)), progress = (step - 10) / 100)")
