"""``torch.segment_reduce``: a reduction of each run of consecutive slices along an axis.

    torch.segment_reduce(data, "sum", lengths=torch.tensor([2, 0, 3]))   # [d0+d1, 0, d2+d3+d4]

The segments are given by their ``lengths`` (or ``offsets``, lengths' running sum); an empty segment gives
``initial`` (else the reduction's identity: 0, nan for a mean, -inf / inf for max / min, 1). As ATen's CPU kernel,
each segment is reduced element after element from ``initial`` (a float32 sum is added in order, not pairwise),
a mean is that sum divided by the length; the gradient is its backward kernel's: spread for a sum, divided by the
length for a mean, shared equally by the ties that equal a max or min, ``grad * output / x`` for a product (the
product of the others where ``x`` is 0).
"""
import numpy as np

from ..device import xp_of
from ..dtypes import is_floating, torch_name
from ..tensor import Function, Tensor, name_node

_REDUCTIONS = ("sum", "prod", "mean", "max", "min")
_IDENTITY = {"sum": 0.0, "mean": 0.0, "prod": 1.0, "max": -np.inf, "min": np.inf}
_STEP = {"sum": np.add, "mean": np.add, "prod": np.multiply, "max": np.maximum, "min": np.minimum}


def segment_reduce(data, reduce, *, lengths=None, indices=None, offsets=None, axis=0, unsafe=False, initial=None):
    reduce = {"amax": "max", "amin": "min"}.get(reduce, reduce)
    if reduce not in _REDUCTIONS:
        raise RuntimeError(f"reduce argument must be either sum, prod, mean, amax or amin, got {reduce}")
    if indices is not None:
        raise RuntimeError("segment_reduce(): indices based reduction is not supported yet.")
    if lengths is None and offsets is None:
        raise RuntimeError("segment_reduce(): Either lengths or offsets must be defined.")
    if not is_floating(data.dtype):
        raise NotImplementedError(f"\"_segment_reduce_cpu\" not implemented for '{torch_name(data.dtype)}'")
    axis = axis % data.ndim if data.ndim else 0
    counts = np.asarray((lengths if lengths is not None else offsets).numpy()).astype(np.int64)
    if lengths is None:
        counts = np.diff(counts, axis=-1)
    if counts.ndim - 1 != axis:
        raise RuntimeError(f"segment_reduce(): Expected axis to be the last dimension of lengths but got {axis}.")
    if not unsafe and (counts < 0).any():
        raise RuntimeError("segment_reduce(): lengths contains negative value!")
    if not unsafe and (counts.sum(axis=-1) != data.shape[axis]).any():
        raise RuntimeError("segment_reduce(): Expected all rows of lengths along axis to sum to "
                           "data.size(lengths.dim()-1) when !unsafe.")
    out = SegmentReduce.apply(data, reduce=reduce, counts=counts, axis=axis, initial=initial)
    return name_node(out, "SegmentReduceBackward0", data, graph=(data,))


def _segments(counts):
    """(start, stop) of each segment of a row of lengths."""
    stops = np.cumsum(counts)
    return list(zip(stops - counts, stops))


def _rows_of(x, counts, axis):
    """Each row of ``counts`` (one per index of the leading dims of a [*B, segments] lengths) with the slice of
    ``x`` along ``axis`` it segments, moved to the front: [length, *inner]."""
    for index in np.ndindex(counts.shape[:-1]):
        yield index, counts[index], np.moveaxis(x[index], axis - len(index), 0)


class SegmentReduce(Function):

    @staticmethod
    def forward(ctx, x, reduce, counts, axis, initial):
        xp = xp_of(x)
        start = x.dtype.type(_IDENTITY[reduce] if initial is None else initial)
        shape = list(x.shape)
        shape[axis] = counts.shape[-1]
        out = xp.empty(shape, x.dtype)
        for index, row, slices in _rows_of(x, counts, axis):
            target = np.moveaxis(out[index], axis - len(index), 0)
            for k, (a, b) in enumerate(_segments(row)):
                target[k] = _reduced(slices[a:b], reduce, start, x.dtype, initial)
        ctx.x, ctx.out, ctx.reduce, ctx.counts, ctx.axis, ctx.start = x, out, reduce, counts, axis, start
        return out

    @staticmethod
    def backward(ctx, g):
        x, out, reduce, start = ctx.x, ctx.out, ctx.reduce, ctx.start
        gx = xp_of(x).zeros_like(x)
        for index, row, slices in _rows_of(x, ctx.counts, ctx.axis):
            grads = np.moveaxis(gx[index], ctx.axis - len(index), 0)
            g_rows = np.moveaxis(g[index], ctx.axis - len(index), 0)
            o_rows = np.moveaxis(out[index], ctx.axis - len(index), 0)
            for k, (a, b) in enumerate(_segments(row)):
                if b > a:
                    grads[a:b] = _segment_gradient(slices[a:b], g_rows[k], o_rows[k], reduce, start)
        return (gx,)


def _reduced(segment, reduce, start, dtype, initial):
    """One segment [length, *inner] reduced element after element from ``start`` (ATen's loop)."""
    if len(segment) == 0:
        return start if reduce != "mean" or initial is not None else dtype.type(np.nan)
    steps = np.concatenate([np.broadcast_to(start, (1,) + segment.shape[1:]).astype(dtype), segment])
    total = _STEP[reduce].accumulate(steps, axis=0, dtype=dtype)[-1]
    return total / dtype.type(len(segment)) if reduce == "mean" else total


def _segment_gradient(x, g, out, reduce, start):
    """ATen's backward kernel for one non-empty segment ``x`` [length, *inner]."""
    if reduce == "sum":
        return np.broadcast_to(g, x.shape)
    if reduce == "mean":
        return np.broadcast_to(g / x.dtype.type(len(x)), x.shape)
    if reduce in ("max", "min"):
        ties = x == out
        return np.where(ties, g / np.maximum(ties.sum(axis=0), 1).astype(x.dtype), x.dtype.type(0))
    with np.errstate(divide="ignore", invalid="ignore"):  # (prod: a zero's gradient is the others' product)
        quotient = g * out / x
    others = np.empty_like(x)
    for j in range(len(x)):
        rest = np.concatenate([np.broadcast_to(start, (1,) + x.shape[1:]).astype(x.dtype), x[:j], x[j + 1:]])
        others[j] = np.multiply.accumulate(rest, axis=0, dtype=x.dtype)[-1]
    return np.where(x == 0, g * others, quotient)
