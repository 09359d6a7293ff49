"""torch.special.log_ndtr below -1 and torch.special.erfcx on torch's float32 and float64 bits (round 21): ATen's
calc_log_ndtr takes log(erfcx(-t) / 2) - t^2 there (t = x / sqrt 2), erfcx being Johnson's Faddeeva table and
continued fraction (minilora/ops/faddeeva.py). Values and gradients, element by element, called as torch users do."""
import numpy as np
import pytest

import minilora as ml

torch = pytest.importorskip("torch")


def _same_bits(theirs, ours):
    theirs, ours = np.asarray(theirs), np.asarray(ours)
    same = (theirs == ours) | (np.isnan(theirs) & np.isnan(ours))
    assert same.all(), f"{(~same).sum()} of {same.size} off, e.g. {theirs[~same][:3]} vs {ours[~same][:3]}"


def _value_and_grad(name, x):
    """special.<name>(x)'s value and gradient (of sum(out * w)) in torch and minilora."""
    w = np.random.default_rng(2).standard_normal(x.shape).astype(x.dtype)
    results = []
    for lib in (torch, ml):
        t = lib.tensor(x, requires_grad=True)
        out = getattr(lib.special, name)(t)
        (out * lib.tensor(w)).sum().backward()
        results.append((out.detach().numpy(), t.grad.numpy()))
    return results


def _where_torch_exp_is_ours(exponent):
    """The elements whose exp torch (MKL's VML) and minilora agree on: the gradient is built on an exp."""
    from minilora.ops.special import _torch_exp
    return torch.exp(torch.tensor(exponent)).numpy() == _torch_exp(exponent)


_LOG_NDTR_POINTS = np.concatenate([np.linspace(-40, 10, 2001), np.linspace(-1.2, -0.8, 201),
                                   [-1.0, np.nextafter(-1.0, -2), -100.0, -1e4, -1e20, -np.inf, np.inf, np.nan]])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_log_ndtr_values_and_gradient(dtype):
    x = _LOG_NDTR_POINTS.astype(dtype)
    (value_t, grad_t), (value_m, grad_m) = _value_and_grad("log_ndtr", x)
    _same_bits(value_t, value_m)
    with np.errstate(all="ignore"):  # (the infinite x)
        kept = _where_torch_exp_is_ours(-(value_t + x * x / dtype(2))) | ~np.isfinite(x)
    assert kept.sum() > 2000
    _same_bits(grad_t[kept], grad_m[kept])


def test_log_ndtr_keyword_call():
    x = np.linspace(-30, -1.5, 58).astype(np.float32)
    _same_bits(torch.special.log_ndtr(input=torch.tensor(x)).numpy(), ml.special.log_ndtr(input=ml.tensor(x)).numpy())


# both tails of erfcx: the table for |x| <= 50, the continued fraction beyond (and its first term past 5e7),
# 2 exp(x^2) - erfcx(-x) below 0 (inf under -26.7, the double literal: -26.7 as float32 lies above it)
_ERFCX_POINTS = np.concatenate([np.linspace(-27, 60, 1741), np.logspace(-8, 9, 171), -np.logspace(-8, 1.4, 95),
                                [0.0, -0.0, 50.0, 5e7, -6.1, -26.7, np.inf, -np.inf, np.nan]])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_erfcx_values_and_gradient(dtype):
    x = _ERFCX_POINTS.astype(dtype)
    (value_t, grad_t), (value_m, grad_m) = _value_and_grad("erfcx", x)
    _same_bits(value_t, value_m)
    _same_bits(grad_t, grad_m)


def test_erfcx_grad_fn_integers_and_refusals():
    assert type(ml.special.erfcx(ml.tensor([0.5], requires_grad=True)).grad_fn).__name__ == "SpecialErfcxBackward0"
    _same_bits(torch.special.erfcx(torch.tensor([1, -2])).numpy(), ml.special.erfcx(ml.tensor([1, -2])).numpy())
    with pytest.raises(NotImplementedError) as theirs:  # (float16: minilora's bfloat16 takes a second to load)
        torch.special.erfcx(torch.ones(2, dtype=torch.float16))
    with pytest.raises(NotImplementedError) as ours:
        ml.special.erfcx(ml.ones(2, dtype=ml.float16))
    assert str(ours.value) == str(theirs.value)
    out = ml.empty(2)
    ml.special.erfcx(ml.tensor([0.25, 3.0]), out=out)
    _same_bits(torch.special.erfcx(torch.tensor([0.25, 3.0])).numpy(), out.numpy())


def test_erfcx_second_derivative():
    # create_graph: SpecialErfcxBackward0's formula differentiated again (2 erfcx + 2 x erfcx' ...)
    x = np.array([-3.0, -0.5, 0.25, 2.0, 30.0, 80.0])
    results = []
    for lib in (torch, ml):
        t = lib.tensor(x, requires_grad=True)
        first, = lib.autograd.grad(lib.special.erfcx(t).sum(), t, create_graph=True)
        second, = lib.autograd.grad(first.sum(), t)
        results.append((first.detach().numpy(), second.numpy()))
    _same_bits(results[0][0], results[1][0])
    _same_bits(results[0][1], results[1][1])
