"""Weight initialisers, in place, with PyTorch's formulas and minilora's seeded generator.

Why the scale matters: a layer's output variance is ``fan_in * Var(w) * Var(x)``, so ``Var(w)``
of about ``1/fan_in`` keeps activations from growing or vanishing layer after layer (``gain``
corrects for what the nonlinearity does to the variance). ``Linear`` uses
``kaiming_uniform_(w, a=sqrt(5))``, i.e. ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``; LoRA initialises
``A`` the same way and ``B`` with zeros, so an adapter starts as an exact no-op.
"""
import math

import numpy as np

from .. import dtypes
from ..random import generator
from ..tensor import no_grad

__all__ = ["calculate_gain", "uniform_", "normal_", "trunc_normal_", "zeros_", "ones_", "constant_",
           "kaiming_uniform_", "kaiming_normal_", "xavier_uniform_", "xavier_normal_",
           "fan_in_and_fan_out"]


def fan_in_and_fan_out(tensor):
    """``(fan_in, fan_out)`` of a weight ``[out, in, *kernel]`` (PyTorch's convention)."""
    if tensor.ndim < 2:
        raise ValueError(f"fan in/out needs at least 2 dimensions, got shape {tensor.shape}")
    receptive = int(np.prod(tensor.shape[2:])) if tensor.ndim > 2 else 1
    return tensor.shape[1] * receptive, tensor.shape[0] * receptive


def calculate_gain(nonlinearity, param=None):
    """How much a nonlinearity shrinks the standard deviation, undone by the init (PyTorch's table)."""
    if nonlinearity in ("linear", "identity", "sigmoid", "conv1d", "conv2d", "conv3d"):
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        slope = 0.01 if param is None else param
        return math.sqrt(2.0 / (1 + slope ** 2))
    if nonlinearity == "selu":
        return 3.0 / 4
    raise ValueError(f"unsupported nonlinearity {nonlinearity!r}")


def _fill(tensor, values):
    with no_grad():
        tensor._array[...] = tensor.device.xp.asarray(dtypes.cast(np.asarray(values), tensor.dtype))
    tensor._bump_version()  # an in-place change, as torch's tensor.normal_() and friends
    return tensor


def _fan(tensor, mode):
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"mode must be 'fan_in' or 'fan_out', got {mode!r}")
    fan_in, fan_out = fan_in_and_fan_out(tensor)
    fan = fan_in if mode == "fan_in" else fan_out
    if fan == 0:
        raise ValueError(f"cannot initialise a tensor with a zero {mode} (shape {tensor.shape})")
    return fan


def _rng(gen):
    """The generator to draw from: ``generator=`` (a ``numpy.random.Generator``) or the global one."""
    if gen is None:
        return generator()
    if not isinstance(gen, np.random.Generator):
        raise TypeError(f"generator must be a numpy.random.Generator (minilora draws with NumPy), "
                        f"got {type(gen).__module__}.{type(gen).__name__}")
    return gen


def uniform_(tensor, a=0.0, b=1.0, generator=None):
    return _fill(tensor, _rng(generator).uniform(a, b, tensor.shape))


def normal_(tensor, mean=0.0, std=1.0, generator=None):
    return _fill(tensor, _rng(generator).normal(mean, std, tensor.shape))


def trunc_normal_(tensor, mean=0.0, std=1.0, a=-2.0, b=2.0, generator=None):
    """N(mean, std) restricted to ``[a, b]`` (absolute bounds, as in PyTorch): redraw what falls outside."""
    if not a < b:
        raise ValueError(f"trunc_normal_ needs a < b, got a={a}, b={b}")
    rng = _rng(generator)
    values = rng.normal(mean, std, tensor.shape)
    outside = (values < a) | (values > b)
    while outside.any():
        values[outside] = rng.normal(mean, std, int(outside.sum()))
        outside = (values < a) | (values > b)
    return _fill(tensor, values)


def constant_(tensor, val):
    return _fill(tensor, np.full(tensor.shape, val))


def zeros_(tensor):
    return constant_(tensor, 0.0)


def ones_(tensor):
    return constant_(tensor, 1.0)


def kaiming_uniform_(tensor, a=0, mode="fan_in", nonlinearity="leaky_relu", generator=None):
    """PyTorch's ``kaiming_uniform_``: U(-bound, bound), bound = gain * sqrt(3 / fan)."""
    bound = calculate_gain(nonlinearity, a) * math.sqrt(3.0 / _fan(tensor, mode))
    return uniform_(tensor, -bound, bound, generator)


def kaiming_normal_(tensor, a=0, mode="fan_in", nonlinearity="leaky_relu", generator=None):
    """PyTorch's ``kaiming_normal_``: N(0, std), std = gain / sqrt(fan)."""
    return normal_(tensor, 0.0, calculate_gain(nonlinearity, a) / math.sqrt(_fan(tensor, mode)), generator)


def xavier_uniform_(tensor, gain=1.0, generator=None):
    """U(-bound, bound), bound = gain * sqrt(6 / (fan_in + fan_out)) (Glorot & Bengio)."""
    fan_in, fan_out = fan_in_and_fan_out(tensor)
    bound = gain * math.sqrt(6.0 / (fan_in + fan_out))
    return uniform_(tensor, -bound, bound, generator)


def xavier_normal_(tensor, gain=1.0, generator=None):
    """N(0, std), std = gain * sqrt(2 / (fan_in + fan_out))."""
    fan_in, fan_out = fan_in_and_fan_out(tensor)
    return normal_(tensor, 0.0, gain * math.sqrt(2.0 / (fan_in + fan_out)), generator)
