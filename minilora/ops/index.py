"""Ops that pick or reorder elements by position: gather, sort, topk, cumsum, repeat, tril/triu.

One idea carries most of them: find the *indices* first (outside the graph: an index has no
gradient), then take the values with ``gather``. ``gather``'s backward adds the gradient back at
exactly those indices, so ``x.sort()``, ``x.topk(k)`` and ``x.max(dim)`` all send each output's
gradient to the element it came from, the one whose index they return -- as PyTorch does.

Ops that return values *and* indices return a named tuple, as ``torch.return_types`` does:
``values, indices = x.topk(2)`` and ``x.topk(2).indices`` both work.
"""
import collections

import numpy as np

from ..device import xp_of
from ..tensor import Function, Tensor, no_grad

__all__ = ["gather", "sort", "argsort", "topk", "cumsum", "repeat", "tril", "triu", "nonzero",
           "return_type"]

_RETURN_TYPES = {}


def return_type(name):
    """The named tuple ``(values, indices)`` that ``x.<name>(...)`` returns (``torch.return_types.<name>``)."""
    if name not in _RETURN_TYPES:
        cls = collections.namedtuple(name, ["values", "indices"])
        cls.__module__ = "minilora.return_types"
        _RETURN_TYPES[name] = cls
    return _RETURN_TYPES[name]


def _dim(dim, ndim, fn):
    """``dim`` as a non-negative int, or torch's IndexError naming the allowed range."""
    if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)):
        raise TypeError(f"{fn}(): dim must be an int, got {type(dim).__name__}")
    rank = max(ndim, 1)  # a 0-d tensor accepts dim 0 and -1, as in torch
    if not -rank <= dim < rank:
        raise IndexError(f"{fn}(): Dimension out of range (expected to be in range of "
                         f"[{-rank}, {rank - 1}], but got {dim})")
    return int(dim) % rank


def _no_grad_apply(op, *args, **options):
    """Run an op whose result is an index or a mask: it never carries a gradient."""
    with no_grad():
        return op.apply(*args, **options)


# ---- gather --------------------------------------------------------------------------------------
def _full_index(index, axis):
    """The NumPy fancy index that reads ``a[..., index[...], ...]`` along ``axis`` for every position
    of ``index`` (the other axes count 0, 1, 2, ... as ``np.indices`` does)."""
    grid = list(np.indices(index.shape, sparse=True))
    grid[axis] = index
    return tuple(grid)


class Gather(Function):
    """``out[i][j][k] = a[i][index[i][j][k]][k]`` for ``axis=1`` (torch.gather)."""

    @staticmethod
    def forward(ctx, a, index, axis):
        ctx.shape, ctx.axis = a.shape, axis
        ctx.index = _full_index(index, axis)
        return a[ctx.index]

    @staticmethod
    def backward(ctx, g):
        out = xp_of(g).zeros(ctx.shape, dtype=g.dtype)
        xp_of(g).add.at(out, ctx.index, g)  # an index taken twice gets both gradients
        return out, None


def _check_index(input, dim, index, fn):
    if index.dtype not in (np.int32, np.int64):
        raise RuntimeError(f"{fn}(): Expected dtype int32/int64 for index, got {index.dtype}")
    if index.ndim != max(input.ndim, 1) and not (index.ndim <= 1 and input.ndim <= 1):
        raise RuntimeError(f"{fn}(): Index tensor must have the same number of dimensions as "
                           f"input tensor ({index.ndim} vs {input.ndim})")
    for d, (n, m) in enumerate(zip(index.shape, input.shape)):
        if d != dim and n > m:
            raise RuntimeError(f"{fn}(): Size does not match at dimension {d}: index has size {n} "
                               f"but input has size {m} (index may only be smaller away from dim "
                               f"{dim})")
    if index.numel():
        low, high = int(index.min()), int(index.max())
        size = input.shape[dim] if input.ndim else 1
        if low < -size or high >= size:
            bad = high if high >= size else low
            raise RuntimeError(f"{fn}(): index {bad} is out of bounds for dimension {dim} with "
                               f"size {size}")


def gather(input, dim, index, *, sparse_grad=False):
    """``torch.gather``: along ``dim``, take ``input``'s elements at ``index`` (an int64 or int32
    tensor of the same number of dimensions, no larger than ``input`` away from ``dim``)."""
    if sparse_grad:
        raise NotImplementedError("gather(sparse_grad=True): minilora has no sparse tensors")
    dim = _dim(dim, input.ndim, "gather")
    _check_index(input, dim, index, "gather")
    if input.ndim == 0:  # torch treats a 0-d tensor as one element along dim 0
        return Gather.apply(input.reshape(1), index.reshape(1), axis=0).reshape(index.shape)
    return Gather.apply(input, index, axis=dim)


# ---- sort and topk -------------------------------------------------------------------------------
class ArgSort(Function):
    """The order that sorts ``a`` along ``axis`` (stable: equal elements keep their order)."""

    @staticmethod
    def forward(ctx, a, axis, descending):
        xp = xp_of(a)
        if descending:  # stable descending order: sort the reversed axis, then map the indices back
            flipped = xp.flip(a, axis=axis)
            order = xp.flip(xp.argsort(flipped, axis=axis, kind="stable"), axis=axis)
            return a.shape[axis] - 1 - order
        return xp.argsort(a, axis=axis, kind="stable")


def argsort(input, dim=-1, descending=False, stable=False):
    """``torch.argsort``: the int64 indices that sort ``input`` along ``dim``."""
    if input.ndim == 0:
        return _no_grad_apply(ArgSort, input.reshape(1), axis=0, descending=descending).reshape(())
    dim = _dim(dim, input.ndim, "argsort")
    return _no_grad_apply(ArgSort, input, axis=dim, descending=descending)


def sort(input, dim=-1, descending=False, *, stable=False):
    """``torch.sort``: ``(values, indices)`` along ``dim``; each value's gradient goes back to where
    it came from. minilora's sort is always stable (torch's ``stable=False`` allows any tie order)."""
    indices = argsort(input, dim, descending)
    if input.ndim == 0:
        return return_type("sort")(input.clone(), indices)
    return return_type("sort")(gather(input, dim, indices), indices)


def topk(input, k, dim=-1, largest=True, sorted=True):  # noqa: A002  (torch's name)
    """``torch.topk``: the ``k`` largest (``largest=False``: smallest) elements along ``dim``, as
    ``(values, indices)``, in sorted order."""
    dim_ = _dim(dim, input.ndim, "topk")
    size = input.shape[dim_] if input.ndim else 1
    if not 0 <= k <= size:
        raise RuntimeError(f"topk(): selected index k out of range (k={k}, dimension {dim} has "
                           f"size {size})")
    order = argsort(input, dim_, descending=largest)
    if input.ndim == 0:
        return return_type("topk")(input.clone(), order)
    indices = order[(slice(None),) * dim_ + (slice(0, k),)]
    return return_type("topk")(gather(input, dim_, indices), indices)


# ---- nonzero -------------------------------------------------------------------------------------
class NonZero(Function):
    """The int64 coordinates of the non-zero elements, one row each (``[n, ndim]``); no gradient."""

    @staticmethod
    def forward(ctx, a):
        xp = xp_of(a)
        return xp.stack(xp.nonzero(a), axis=-1).reshape(-1, a.ndim).astype(np.int64)


def nonzero(input, *, as_tuple=False):
    """``torch.nonzero``: ``[n, ndim]`` coordinates; ``as_tuple=True``: one index tensor per dim."""
    if input.ndim == 0:  # torch: ``[n, 0]`` coordinates, or as a tuple one index along one dim
        coords = _no_grad_apply(NonZero, input.reshape(1))
        return (coords[:, 0],) if as_tuple else coords[:, :0]
    coords = _no_grad_apply(NonZero, input)
    if not as_tuple:
        return coords
    return tuple(coords[:, d] for d in range(input.ndim))


# ---- cumsum --------------------------------------------------------------------------------------
class CumSum(Function):
    @staticmethod
    def forward(ctx, a, axis):
        ctx.axis = axis
        return xp_of(a).cumsum(a, axis=axis)

    @staticmethod
    def backward(ctx, g):  # each input feeds every later output: a reversed cumulative sum
        xp = xp_of(g)
        return xp.flip(xp.cumsum(xp.flip(g, axis=ctx.axis), axis=ctx.axis), axis=ctx.axis)


def cumsum(input, dim, *, dtype=None):
    """``torch.cumsum``: running sums along ``dim``. Integer and bool inputs sum as int64 (torch)."""
    if dtype is not None:
        input = input.to(dtype=dtype)
    elif input.dtype.kind in "biu":
        input = input.long()
    if input.ndim == 0:
        _dim(dim, 0, "cumsum")
        return input.clone()
    return CumSum.apply(input, axis=_dim(dim, input.ndim, "cumsum"))


# ---- repeat --------------------------------------------------------------------------------------
class Repeat(Function):
    """``np.tile`` with torch's rule: ``sizes`` may add leading dimensions, never drop one."""

    @staticmethod
    def forward(ctx, a, sizes):
        ctx.original = a.shape
        a = a.reshape((1,) * (len(sizes) - a.ndim) + a.shape)
        ctx.shape, ctx.sizes = a.shape, sizes
        return xp_of(a).tile(a, sizes)

    @staticmethod
    def backward(ctx, g):
        # Split every axis of length r*n into (r, n) and sum over the r copies.
        split = []
        for r, n in zip(ctx.sizes, ctx.shape):
            split += [r, n]
        copies = tuple(range(0, 2 * len(ctx.shape), 2))
        return g.reshape(split).sum(axis=copies).reshape(ctx.original)


def repeat(input, *repeats):
    """``x.repeat(2, 1)``: ``input`` tiled ``repeats[d]`` times along each dimension ``d``."""
    sizes = tuple(repeats[0]) if len(repeats) == 1 and isinstance(repeats[0], (tuple, list)) else repeats
    if len(sizes) < input.ndim:
        raise RuntimeError(f"repeat(): Number of dimensions of repeat dims ({len(sizes)}) can not be "
                           f"smaller than number of dimensions of tensor ({input.ndim})")
    if any(int(s) < 0 for s in sizes):
        raise RuntimeError(f"repeat(): repeats must be non-negative, got {tuple(sizes)}")
    return Repeat.apply(input, sizes=tuple(int(s) for s in sizes))


# ---- triangles -----------------------------------------------------------------------------------
def _triangle(input, diagonal, lower):
    from .elementwise import where
    if input.ndim < 2:
        raise RuntimeError(f"{'tril' if lower else 'triu'}: input tensor must have at least 2 "
                           f"dimensions")
    rows, cols = input.shape[-2:]
    keep = (np.tril if lower else np.triu)(np.ones((rows, cols), dtype=bool), diagonal)
    return where(Tensor(keep, dtype=keep.dtype, device=input.device), input, input.new_zeros(()))


def tril(input, diagonal=0):
    """The lower triangle (on and below ``diagonal``) of the last two dims, the rest 0; differentiable."""
    return _triangle(input, diagonal, lower=True)


def triu(input, diagonal=0):
    """The upper triangle (on and above ``diagonal``) of the last two dims, the rest 0."""
    return _triangle(input, diagonal, lower=False)
