"""Reductions over axes: sum, mean, max, var, and the softmax family.

Backward of a reduction broadcasts the gradient back over the reduced axes; ``_expand_reduced``
re-inserts those axes (size 1) so NumPy broadcasting does the rest.
"""
import builtins  # this module's `sum` and `max` are ops; the builtins are reached through here

from ..device import xp_of
from ..tensor import Function

__all__ = ["sum", "mean", "max", "var", "softmax", "log_softmax", "logsumexp"]


def _axes(axis, ndim):
    """Normalise ``axis`` (None, int or tuple, negatives allowed) to a sorted tuple."""
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    for ax in axes:
        if not -ndim <= ax < builtins.max(ndim, 1):
            raise IndexError(f"axis {ax} is out of range for a tensor with {ndim} dimensions")
    return tuple(sorted(ax % builtins.max(ndim, 1) for ax in axes))


def _expand_reduced(g, axes, keepdims):
    """Give ``g`` back the reduced axes as size-1 axes, so it broadcasts over the input."""
    if keepdims:
        return g
    for ax in axes:
        g = xp_of(g).expand_dims(g, ax)
    return g


class Sum(Function):
    @staticmethod
    def forward(ctx, a, axis=None, keepdims=False):
        ctx.axes, ctx.keepdims, ctx.shape = _axes(axis, a.ndim), keepdims, a.shape
        return a.sum(axis=ctx.axes, keepdims=keepdims)

    @staticmethod
    def backward(ctx, g):
        g = _expand_reduced(g, ctx.axes, ctx.keepdims)
        return xp_of(g).broadcast_to(g, ctx.shape)


class Mean(Function):
    @staticmethod
    def forward(ctx, a, axis=None, keepdims=False):
        ctx.axes, ctx.keepdims, ctx.shape = _axes(axis, a.ndim), keepdims, a.shape
        ctx.count = 1
        for ax in ctx.axes:
            ctx.count *= a.shape[ax] if a.ndim else 1
        return a.mean(axis=ctx.axes, keepdims=keepdims)

    @staticmethod
    def backward(ctx, g):
        g = _expand_reduced(g, ctx.axes, ctx.keepdims) * (1.0 / ctx.count)
        return xp_of(g).broadcast_to(g, ctx.shape).astype(g.dtype, copy=False)


class Max(Function):
    """Max over axes. Ties share the gradient equally (like ``torch.amax``)."""

    @staticmethod
    def forward(ctx, a, axis=None, keepdims=False):
        ctx.axes, ctx.keepdims = _axes(axis, a.ndim), keepdims
        out = a.max(axis=ctx.axes, keepdims=True)
        ctx.is_max = a == out
        return out if keepdims else out.squeeze(axis=ctx.axes)

    @staticmethod
    def backward(ctx, g):
        g = _expand_reduced(g, ctx.axes, ctx.keepdims)
        ties = ctx.is_max.sum(axis=ctx.axes, keepdims=True)
        return ctx.is_max * (g / ties)


class Var(Function):
    """Variance with Bessel's ``correction`` (PyTorch's default 1: the unbiased estimate)."""

    @staticmethod
    def forward(ctx, a, axis=None, keepdims=False, correction=1):
        ctx.axes, ctx.keepdims = _axes(axis, a.ndim), keepdims
        count = 1
        for ax in ctx.axes:
            count *= a.shape[ax]
        ctx.denom = builtins.max(count - correction, 0)
        ctx.centered = a - a.mean(axis=ctx.axes, keepdims=True)
        return (ctx.centered ** 2).sum(axis=ctx.axes, keepdims=keepdims) / ctx.denom

    @staticmethod
    def backward(ctx, g):
        g = _expand_reduced(g, ctx.axes, ctx.keepdims)
        return g * ctx.centered * (2.0 / ctx.denom)


class Softmax(Function):
    @staticmethod
    def forward(ctx, a, axis=-1):
        xp = xp_of(a)
        e = xp.exp(a - a.max(axis=axis, keepdims=True))  # shift by the max: no overflow
        e /= e.sum(axis=axis, keepdims=True)
        ctx.out, ctx.axis = e, axis
        return e

    @staticmethod
    def backward(ctx, g):  # J^T g = p * (g - <g, p>)
        # EXERCISE 1.6: the gradient of softmax along ctx.axis for the output gradient g (ctx.out: the output)
        # BEGIN SOLUTION
        p = ctx.out
        return p * (g - (g * p).sum(axis=ctx.axis, keepdims=True))
        # END SOLUTION


class LogSoftmax(Function):
    @staticmethod
    def forward(ctx, a, axis=-1):
        xp = xp_of(a)
        shifted = a - a.max(axis=axis, keepdims=True)
        out = shifted - xp.log(xp.exp(shifted).sum(axis=axis, keepdims=True))
        ctx.out, ctx.axis = out, axis
        return out

    @staticmethod
    def backward(ctx, g):  # g - softmax * sum(g)
        # EXERCISE 1.7: the gradient of log_softmax along ctx.axis for g (ctx.out: the output)
        # BEGIN SOLUTION
        return g - xp_of(g).exp(ctx.out) * g.sum(axis=ctx.axis, keepdims=True)
        # END SOLUTION


class LogSumExp(Function):
    @staticmethod
    def forward(ctx, a, axis=-1, keepdims=False):
        xp = xp_of(a)
        ctx.axes, ctx.keepdims = _axes(axis, a.ndim), keepdims
        m = a.max(axis=ctx.axes, keepdims=True)
        lse = m + xp.log(xp.exp(a - m).sum(axis=ctx.axes, keepdims=True))
        ctx.a, ctx.lse = a, lse
        return lse if keepdims else lse.squeeze(axis=ctx.axes)

    @staticmethod
    def backward(ctx, g):  # d lse / d a = softmax(a)
        g = _expand_reduced(g, ctx.axes, ctx.keepdims)
        return g * xp_of(g).exp(ctx.a - ctx.lse)


def sum(a, axis=None, keepdims=False, dim=None):  # noqa: A001  (mirrors torch.sum)
    return Sum.apply(a, axis=dim if dim is not None else axis, keepdims=keepdims)


def mean(a, axis=None, keepdims=False, dim=None):
    return Mean.apply(a, axis=dim if dim is not None else axis, keepdims=keepdims)


def max(a, axis=None, keepdims=False, dim=None):  # noqa: A001
    return Max.apply(a, axis=dim if dim is not None else axis, keepdims=keepdims)


def var(a, axis=None, keepdims=False, correction=1, dim=None, unbiased=None):
    if unbiased is not None:
        correction = int(unbiased)
    return Var.apply(a, axis=dim if dim is not None else axis, keepdims=keepdims,
                     correction=correction)


def softmax(a, axis=-1, dim=None):
    return Softmax.apply(a, axis=dim if dim is not None else axis)


def log_softmax(a, axis=-1, dim=None):
    return LogSoftmax.apply(a, axis=dim if dim is not None else axis)


def logsumexp(a, axis=-1, keepdims=False, dim=None):
    return LogSumExp.apply(a, axis=dim if dim is not None else axis, keepdims=keepdims)
