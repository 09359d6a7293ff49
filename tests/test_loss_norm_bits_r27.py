"""Losses and normalisations as users call them, against torch 2.13 bit for bit, round 27 (tests/loss_norm_bits_sweep.py
found them: 288 of 2944 (form, dtype, layout) cases differed at the round's start).

float64 softmax, log_softmax and F.cross_entropy along the last dim: torch runs the float32 kernels' template on
``Vectorized<double>`` (8 lanes with AVX-512, added left to right at the end: only float's ``vec_reduce_all`` folds in
halves) with SLEEF's ``expd8_u10`` (``float32_math.sleef_exp64``), where minilora summed and exponentiated with NumPy
(~40% of a cross-entropy's float64 gradients an ulp or more off). float64 layer_norm's backward: the same left-to-right
lanes. F.binary_cross_entropy with a broadcast weight (torch expands it to the target for its kernel); 16-bit mse_loss
and binary_cross_entropy as torch's kernels (a mean divides the gradient last); bfloat16 huber_loss of an empty batch;
float32 batch norm of a sliced input (torch's non-contiguous loops) and instance norm of one (torch's
input.contiguous()); 16-bit vector norms' gradients (torch's norm_backward in 16-bit ops: triplet_margin_loss's).
"""
import numpy as np
import pytest

import minilora as ml
from minilora import float32_math

torch = pytest.importorskip("torch")

needs_torch_kernels = pytest.mark.skipif(
    float32_math.CPU_CAPABILITY == "default" or not float32_math.FUSED_MULTIPLY_ADD,
    reason="the orders, SLEEF functions and fused multiply-adds of torch's vectorized kernels")


def _both(array, dtype, grad=True):
    """The same values as (minilora, torch) tensors of ``dtype`` (leaves that require grad)."""
    pair = ml.tensor(array).to(getattr(ml, dtype)), torch.from_numpy(array).to(getattr(torch, dtype))
    return tuple(t.requires_grad_() for t in pair) if grad else pair


def _off(mine, theirs):
    if mine is None or theirs is None:  # (an input the function does not use: no gradient on either side)
        return 0 if mine is None and theirs is None else -1
    a, b = mine.detach().double().numpy(), theirs.detach().double().numpy()  # (float64 bits: not through float32)
    return int((~((a == b) | (np.isnan(a) & np.isnan(b)))).sum())


def _value_and_grads(fn, inputs, lib_index, weight):
    """fn's value and the gradients of sum(value * weight) with respect to the leaves of ``inputs``."""
    lib = (ml, torch)[lib_index]
    args = [pair[lib_index] for pair in inputs]
    out = fn(lib, *args)
    (out * lib.tensor(weight).to(out.dtype)).sum().backward()
    return [out] + [a.grad for a in args if getattr(a, "requires_grad", False)]


def _assert_torchs(fn, inputs, out_shape=()):
    weight = np.random.default_rng(7).standard_normal(out_shape)
    mine, theirs = (_value_and_grads(fn, inputs, i, weight) for i in (0, 1))
    assert [_off(m, t) for m, t in zip(mine, theirs)] == [0] * len(theirs)


# ---- float64 softmax family -------------------------------------------------------------------------------------
@needs_torch_kernels
def test_sleef_exp64_is_torchs_vectorized_double_exp():
    # softmax of [x, 0] is e / (e + 1) in torch's kernel, e its Vectorized<double>::exp(x): NumPy's exp (correctly
    # rounded) differs in ~7% of these
    x = -np.abs(np.random.default_rng(0).standard_normal(20000) * 5)
    theirs = torch.softmax(torch.from_numpy(np.stack([x, np.zeros_like(x)], 1)), -1)[:, 0].numpy()
    e = float32_math.sleef_exp64(x)
    assert ((e * (1 / (e + 1))) != theirs).sum() == 0


@needs_torch_kernels
@pytest.mark.parametrize("width", [3, 8, 13, 40])
def test_float64_softmax_and_its_gradients_are_torchs(width, two_threads):
    # (two_threads: torch's positions along a dim other than the last split between threads as minilora's)
    # (before: 36 of 192 outputs off at width 3, ~60% at 40; the gradients alike)
    x = np.random.default_rng(width).standard_normal((24, width)) * 3
    _assert_torchs(lambda lib, t: lib.nn.functional.softmax(t, -1), [_both(x, "float64")], x.shape)
    _assert_torchs(lambda lib, t: lib.softmax(t.t(), 0), [_both(x, "float64")], x.shape[::-1])  # (a view: rows)


@needs_torch_kernels
@pytest.mark.parametrize("kwargs", [{}, {"label_smoothing": 0.1}, {"ignore_index": 1, "reduction": "sum"},
                                    {"reduction": "none"}], ids=["mean", "smooth", "ignore", "none"])
def test_float64_cross_entropy_gradients_are_torchs(kwargs):
    # the fused cross entropy and log_softmax's backward (before: 10-12 of 30 logits' gradients off)
    rng = np.random.default_rng(0)
    logits, labels = rng.standard_normal((6, 5)) * 2, rng.integers(0, 5, 6)
    targets = ml.tensor(labels), torch.from_numpy(labels)
    _assert_torchs(lambda lib, x, y: lib.nn.functional.cross_entropy(x, y, **kwargs),
                   [_both(logits, "float64"), targets], (6,) if kwargs.get("reduction") == "none" else ())


@needs_torch_kernels
@pytest.mark.parametrize("width", [4, 7, 17])
def test_float64_layer_norm_gradients_are_torchs(width, two_threads):
    # (two_threads: dgamma and dbeta add a buffer a thread)
    # LayerNormBackwardKernel's sums of 4 doubles: lanes added left to right (before: ~20-35% of dx off)
    rng = np.random.default_rng(width)
    x, w, b = rng.standard_normal((5, 3, width)) * 2, rng.uniform(0.1, 2, width), rng.standard_normal(width)
    _assert_torchs(lambda lib, t: lib.nn.functional.layer_norm(t, (width,)), [_both(x, "float64")], x.shape)
    _assert_torchs(lambda lib, t, tw, tb: lib.nn.functional.layer_norm(t, (width,), tw, tb),
                   [_both(x, "float64"), _both(w, "float64"), _both(b, "float64")], x.shape)


# ---- binary cross entropy ---------------------------------------------------------------------------------------
@needs_torch_kernels
@pytest.mark.parametrize("dtype", ["float32", "float64", "bfloat16", "float16"])
@pytest.mark.parametrize("reduction", ["none", "mean"])
def test_binary_cross_entropy_with_a_broadcast_weight_is_torchs(dtype, reduction):
    # torch expands a [C] weight to the target for its one kernel; minilora multiplied a composed loss (float32:
    # 14-19 of 30 input gradients an ulp off)
    rng = np.random.default_rng(1)
    x, y, w = rng.uniform(0.02, 0.98, (6, 5)), np.clip(rng.uniform(-0.2, 1.2, (6, 5)), 0, 1), rng.uniform(0.1, 2, 5)
    targets, weights = _both(y, dtype, grad=False), _both(w, dtype, grad=False)
    _assert_torchs(lambda lib, p, t, wt: lib.nn.functional.binary_cross_entropy(p, t, weight=wt, reduction=reduction),
                   [_both(x, dtype), targets, weights], (6, 5) if reduction == "none" else ())


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_16bit_binary_cross_entropy_mean_divides_the_gradient_last(dtype):
    # torch's kernel: (g (x - y)) / max((1 - x) x, eps), then / n; composed, g / n came first (15-22 of 30 off); the
    # target's gradient -logit(x) g / n in 16-bit steps
    rng = np.random.default_rng(2)
    x, y = rng.uniform(0.02, 0.98, (6, 5)), rng.uniform(0, 1, (6, 5))
    _assert_torchs(lambda lib, p, t: lib.nn.functional.binary_cross_entropy(p, t), [_both(x, dtype), _both(y, dtype)])


# ---- mse and huber ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_16bit_mse_loss_mean_gradient_is_torchs(dtype):
    # torch's mse_loss_backward: norm (x - t) g with norm = 2/n in the dtype, each step rounded (before: 12-16 of 30
    # gradients of both inputs a step off); a broadcast target's gradient summed as torch's
    rng = np.random.default_rng(3)
    x, t = rng.standard_normal((6, 5)) * 2, rng.standard_normal((6, 5)) * 2
    _assert_torchs(lambda lib, a, b: lib.nn.functional.mse_loss(a, b), [_both(x, dtype), _both(t, dtype)])
    _assert_torchs(lambda lib, a, b: lib.nn.functional.mse_loss(a, b, reduction="sum"),
                   [_both(x, dtype), _both(t, dtype)])


def test_bfloat16_huber_loss_of_an_empty_batch_is_nan():
    # (ZeroDivisionError in the backward's 1 / n, and NumPy's "Mean of empty slice" warning in the forward)
    for lib in (ml, torch):
        x = lib.zeros(0, 5, dtype=lib.bfloat16).requires_grad_()
        loss = lib.nn.functional.huber_loss(x, lib.zeros(0, 5, dtype=lib.bfloat16))
        loss.backward()
        assert loss.isnan().item() and tuple(x.grad.shape) == (0, 5)


# ---- float32 batch and instance norm of a sliced input ----------------------------------------------------------
def _strided_batch(shape, seed=0):
    """[N, C, H, 2W] values, to be read as [..., ::2]: a layout for neither of torch's batch-norm kernels."""
    return np.random.default_rng(seed).standard_normal(shape[:-1] + (2 * shape[-1],)) * 2


@needs_torch_kernels
@pytest.mark.parametrize("training", [True, False], ids=["training", "eval"])
def test_sliced_float32_batch_norm_gradients_and_running_statistics_are_torchs(training, two_threads):
    # torch's own loops for such a layout (batch_norm_cpu_update_stats_template's and batch_norm_backward_cpu_
    # template's non-contiguous paths: var_sum and the running statistics in double, the serial backward); minilora
    # composed float32 ops (before: 241 of 720 input gradients off, up to 41 ulps; 1 in 3 running statistics an ulp)
    base = _strided_batch((6, 4, 3, 5))
    rng = np.random.default_rng(1)
    w, b = rng.uniform(0.1, 2, 4), rng.standard_normal(4)
    answers = []
    for lib, make in ((ml, ml.tensor), (torch, torch.from_numpy)):
        leaf = make(base).float().requires_grad_()
        weight, bias = make(w).float().requires_grad_(), make(b).float().requires_grad_()
        mean, var = make(np.linspace(-0.5, 0.5, 4)).float(), make(np.linspace(0.5, 1.5, 4)).float()
        out = lib.nn.functional.batch_norm(leaf[..., ::2], mean, var, weight, bias, training=training)
        out.backward(make(np.random.default_rng(2).standard_normal(out.shape)).float())
        answers.append([out, mean, var, leaf.grad, weight.grad, bias.grad])
    assert [_off(m, t) for m, t in zip(*answers)] == [0] * 6


@needs_torch_kernels
def test_sliced_float32_instance_norm_is_torchs(two_threads):
    # torch's instance_norm runs batch norm on input.contiguous(); minilora's reshape kept the slice (before: 226 of
    # 360 outputs off, up to 55 ulps)
    base = _strided_batch((6, 4, 3, 5))
    _assert_torchs(lambda lib, t: lib.nn.functional.instance_norm(t[..., ::2]), [_both(base, "float32")],
                   (6, 4, 3, 5))


# ---- 16-bit norms' gradients ------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
@pytest.mark.parametrize("form", ["vector_norm2", "vector_norm3", "Tensor.norm", "triplet_margin_loss"])
def test_16bit_norm_gradients_are_torchs(dtype, form):
    # torch's norm_backward runs on the 16-bit input and norm, each op rounded (g * (x / norm)); minilora
    # differentiated the float32 norm and rounded once (before: ~1 in 3 gradients a step off, every 16-bit
    # triplet_margin_loss form's)
    rng = np.random.default_rng(4)
    a, p, n = (rng.standard_normal((6, 7)) * 2 for _ in range(3))
    a[0, :3], a[1] = 0, 0  # (zero elements, and a zero vector: its gradient masked to 0)
    calls = {"vector_norm2": lambda lib, x, y, z: lib.linalg.vector_norm(x, 2, -1),
             "vector_norm3": lambda lib, x, y, z: lib.linalg.vector_norm(x, 3, -1),
             "Tensor.norm": lambda lib, x, y, z: x.norm(dim=-1),
             "triplet_margin_loss": lambda lib, x, y, z: lib.nn.functional.triplet_margin_loss(x, y, z, reduction="none")}
    _assert_torchs(calls[form], [_both(a, dtype), _both(p, dtype), _both(n, dtype)], (6,))
