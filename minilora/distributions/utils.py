"""torch.distributions.utils: parameter broadcasting, probs <-> logits, lazy properties, and the
standard-normal draw every reparameterized sampler starts from."""
import math

import numpy as np

from .. import broadcast_tensors, dtypes, empty, enable_grad, ops, tensor
from ..device import xp_of
from ..tensor import Function, Tensor

euler_constant = 0.57721566490153286060  # Euler-Mascheroni constant

__all__ = ["broadcast_all", "logits_to_probs", "clamp_probs", "probs_to_logits", "lazy_property",
           "euler_constant"]

_Number = (bool, int, float)


def broadcast_all(*values):
    """The values as tensors of one broadcast shape; Python numbers take the first tensor's dtype
    and device (or the default dtype), as torch's."""
    if not all(isinstance(v, (Tensor, *_Number)) for v in values):
        raise ValueError("Input arguments must all be instances of Number, torch.Tensor or objects "
                         "implementing __torch_function__.")
    if not all(isinstance(v, Tensor) for v in values):
        like = next((v for v in values if isinstance(v, Tensor)), None)
        options = (dict(dtype=dtypes.get_default_dtype()) if like is None
                   else dict(dtype=like.dtype, device=like.device))
        values = [v if isinstance(v, Tensor) else tensor(v, **options) for v in values]
    return broadcast_tensors(*values)


def _standard_normal(shape, dtype, device):
    # torch fills an empty tensor with normal_(): the generator's stream in memory order.
    return empty(tuple(shape), dtype=dtype, device=device).normal_()


def _sum_rightmost(value, dim):
    """Sums the ``dim`` rightmost dims (an event's log-density terms)."""
    if dim == 0:
        return value
    return value.reshape(tuple(value.shape[:-dim]) + (-1,)).sum(-1)


def logits_to_probs(logits, is_binary=False):
    if is_binary:
        return ops.sigmoid(logits)
    return ops.softmax(logits, dim=-1)


def clamp_probs(probs):
    eps = dtypes.finfo(probs.dtype).eps
    return probs.clamp(min=eps, max=1 - eps)


def probs_to_logits(probs, is_binary=False):
    ps_clamped = clamp_probs(probs)
    if is_binary:
        return ops.log(ps_clamped) - ops.log1p(-ps_clamped)
    return ops.log(ps_clamped)


class lazy_property:
    """Computed on first read (with gradients on, as torch's), then stored on the instance, so
    ``Categorical(logits=...)`` builds ``probs`` only when asked -- and validation skips it."""

    def __init__(self, wrapped):
        self.wrapped = wrapped
        self.__name__ = wrapped.__name__
        self.__doc__ = wrapped.__doc__

    def __get__(self, instance, owner=None):
        if instance is None:
            return self
        with enable_grad():
            value = self.wrapped(instance)
        setattr(instance, self.wrapped.__name__, value)
        return value


# ---- the inverse error function (Normal.icdf) ----------------------------------------------------
_erf, _erfc = np.frompyfunc(math.erf, 1, 1), np.frompyfunc(math.erfc, 1, 1)


def _erfinv_array(y):
    """``erfinv`` in float64: Giles' single-precision approximation, then Newton steps -- on
    ``erf(x) = |y|`` near 0, on ``log erfc(x) = log(1 - |y|)`` towards +-1, where ``erf(x) - y``
    would cancel and plain Newton crawls."""
    shape = np.shape(y)
    y = np.asarray(y, dtype=np.float64).reshape(-1)  # (frompyfunc gives a bare float for a 0-d array)
    a = np.abs(y)
    central = a < 0.5
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        w = -np.log((1 - a) * (1 + a))
        x = np.where(w < 5, np.polyval(_GILES_CENTRAL, w - 2.5), np.polyval(_GILES_TAIL, np.sqrt(w) - 3)) * a
        log_tail = np.log1p(-a)
        for _ in range(6):
            density = 2 / math.sqrt(math.pi) * np.exp(-x * x)
            tail = _erfc(x).astype(np.float64)
            x = np.where(central, x - (_erf(x).astype(np.float64) - a) / density,
                         x + (np.log(tail) - log_tail) * tail / density)
        x = np.where(a == 1, np.inf, np.where(a > 1, np.nan, x))
    return np.copysign(x, y).reshape(shape)


# M. Giles, "Approximating the erfinv function" (GPU Computing Gems, 2011), highest power first
_GILES_CENTRAL = [2.81022636e-08, 3.43273939e-07, -3.5233877e-06, -4.39150654e-06, 0.00021858087,
                  -0.00125372503, -0.00417768164, 0.246640727, 1.50140941]
_GILES_TAIL = [-0.000200214257, 0.000100950558, 0.00134934322, -0.00367342844, 0.00573950773,
               -0.0076224613, 0.00943887047, 1.00167406, 2.83297682]


class _Erfinv(Function):
    """``torch.erfinv``; gradient ``sqrt(pi)/2 * exp(erfinv(y)^2)``."""

    @staticmethod
    def forward(ctx, y):
        host = y.get() if hasattr(y, "get") else y
        out = _erfinv_array(host).astype(y.dtype, copy=False)
        ctx.out = xp_of(y).asarray(out)
        return ctx.out

    @staticmethod
    def backward(ctx, g):
        return g * (math.sqrt(math.pi) / 2) * xp_of(g).exp(ctx.out * ctx.out)


def erfinv(input):
    """``torch.erfinv`` (used by ``Normal.icdf``), computed in float64 and rounded to the input's dtype."""
    return _Erfinv.apply(input)
