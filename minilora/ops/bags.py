"""``F.embedding_bag``'s gradient in 'sum' and 'mean' mode, as torch's CPU kernel accumulates it.

``nn.functional.embedding_bag`` computes the bags' values from ops (rows, a 0/1 matrix product or fused
weighted sums, a division), which give torch's forward numbers; differentiating those ops adds each weight row's
gradient up in another order than torch. torch's ``_embedding_bag_dense_backward_cpu_sum_mean`` sorts the ids
(``indices.sort()``: unstable, ties in ``std::sort``'s order, ``std_sort.sort_order``) and, for each occurrence in
that order, adds ``scale * grad[bag]`` to the id's row with ATen's ``axpy`` kernel (a fused multiply-add per
element where its build fuses, ``fastmath.multiply_add``), ``scale`` being 1, the sample's weight, or
``1 / bag_size`` computed in double and rounded to the dtype (16-bit: through float; the product rounded to 16 bits
before it is added, and the sum again: the 16-bit ``+=`` takes a 16-bit number). ``DenseBagGradient`` carries the forward's values
and runs that loop as its backward: torch's bits in float32 and float64 (differentiating the ops left up to a
quarter of the elements 1 ulp off). A ``per_sample_weights`` gradient is each sample's dot product of its bag's
gradient and its row (torch's BLAS ``dot``: MKL's order, ``mkl_dot``, where it is known; else a float64 sum, rounded).
"""
import numpy as np

from .. import blas, fastmath, mkl_dot, std_sort
from ..tensor import Function

__all__ = ["DenseBagGradient"]


class DenseBagGradient(Function):
    """``apply(weight[, per_sample_weights], value=, ids=, bag_of=, bag_sizes=, mean=, reached=)``: the forward
    returns ``value`` (the bags, computed by the caller from the same inputs); the backward is torch's, and gives
    the ids that ``reached`` (a mask) leaves out (padding_idx; after the last offset, where torch's 'sum' stops)
    no gradient."""

    @staticmethod
    def forward(ctx, weight, *per_sample_weights, value, ids, bag_of, bag_sizes, mean, reached):
        ctx.weight, ctx.weights = weight, per_sample_weights[0] if per_sample_weights else None
        ctx.ids, ctx.bag_of, ctx.bag_sizes, ctx.mean, ctx.reached = ids, bag_of, bag_sizes, mean, reached
        return value

    @staticmethod
    def backward(ctx, g):
        g = np.ascontiguousarray(g, dtype=ctx.weight.dtype)
        kept = ctx.reached
        grad_weight = _accumulated_rows(ctx, g, kept) if ctx.needs_input_grad[0] else None
        if ctx.weights is None:
            return (grad_weight,)
        grad_weights = None
        if ctx.needs_input_grad[1]:  # each sample's <grad of its bag, its row>, 0 where not reached
            grad_weights = np.where(kept, _sample_dots(g, ctx.bag_of, ctx.weight, ctx.ids), 0)
            grad_weights = grad_weights.astype(ctx.weights.dtype).reshape(ctx.weights.shape)
        return grad_weight, grad_weights


def _sample_dots(g, bag_of, weight, ids):
    """Each sample's dot product of its bag's gradient (a row of ``g``) and its row of ``weight``, as torch's
    ``dot_impl`` (BLAS ``dot``): MKL's order where ``mkl_dot`` knows it, MKL's own dot where it calls that (its
    kernels there read a row by where it lies, mod 64 bytes: the rows at torch's places, in 64-byte aligned copies),
    else a float64 sum, rounded."""
    if mkl_dot.direct() and g.dtype == weight.dtype and g.dtype in (np.float32, np.float64) and g.ndim == 2:
        g, weight = blas.torch_aligned(g), blas.torch_aligned(weight)
        return np.array([blas.dot(g[b], weight[i]) for b, i in zip(bag_of, ids)], g.dtype)
    bag_grads, rows = g[bag_of], weight[ids]
    products = bag_grads.astype(np.float64) * rows.astype(np.float64)
    dots = products.sum(axis=1)
    for sample, (x, y) in enumerate(zip(bag_grads, rows)):
        in_mkl_order = mkl_dot.dot(np.ascontiguousarray(x), np.ascontiguousarray(y))
        if in_mkl_order is not None:
            dots[sample] = in_mkl_order
    return dots


def _accumulated_rows(ctx, g, kept):
    """torch's loop: the occurrences of each id in ``indices.sort()``'s order, ``row += scale * g[bag]`` fused. The
    k-th occurrences of all ids are added together (one vectorized step per k: the rows of one step differ)."""
    order = std_sort.sort_order(ctx.ids.reshape(1, -1), descending=False)[0]
    order = order[kept[order]]
    ids = ctx.ids[order]
    scale = np.ones(order.size)
    if ctx.weights is not None:
        scale = ctx.weights.reshape(-1)[order].astype(np.float64)
    if ctx.mean:
        sizes = ctx.bag_sizes[ctx.bag_of[order]]
        scale = np.where(sizes != 0, scale / np.maximum(sizes, 1), scale)
    if g.dtype.itemsize == 2:  # (16-bit: ``(scalar_t)scale`` goes through float)
        scale = scale.astype(np.float32)
    scale = scale.astype(g.dtype)[:, None]
    first = np.r_[True, ids[1:] != ids[:-1]] if ids.size else np.zeros(0, bool)
    rank = np.arange(ids.size) - np.maximum.accumulate(np.where(first, np.arange(ids.size), 0))  # k of each
    grad_weight = np.zeros(ctx.weight.shape, g.dtype)
    for k in range(int(rank.max()) + 1 if rank.size else 0):
        step = rank == k
        rows = ids[step]
        grad_weight[rows] = _axpy(scale[step], g[ctx.bag_of[order[step]]], grad_weight[rows])
    return grad_weight


def _axpy(a, x, y):
    """ATen's ``y[i] += a * x[i]``: fused where its build fuses; on 16-bit numbers the product is float32 (``a`` the
    opmath float) rounded to the 16-bit type before the addition (``+=`` takes a ``BFloat16``/``Half``), and the
    sum rounded again."""
    if x.dtype.itemsize != 2:
        return fastmath.multiply_add(a, x, y)
    product = (a.astype(np.float32) * x.astype(np.float32)).astype(x.dtype)
    return (y.astype(np.float32) + product.astype(np.float32)).astype(x.dtype)
