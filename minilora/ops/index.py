"""Ops that pick or reorder elements by position: gather, sort, topk, cumsum, repeat, tril/triu.

One idea carries most of them: find the *indices* first (outside the graph: an index has no
gradient), then take the values with ``gather``. ``gather``'s backward adds the gradient back at
exactly those indices, so ``x.sort()``, ``x.topk(k)`` and ``x.max(dim)`` all send each output's
gradient to the element it came from, the one whose index they return -- as PyTorch does.

Ops that return values *and* indices return a named tuple, as ``torch.return_types`` does:
``values, indices = x.topk(2)`` and ``x.topk(2).indices`` both work.
"""
import numpy as np

from .. import amp as _amp, dtypes, float32_math, return_types, std_sort
from ..float32_sums import sum_like_torch
from ..device import META, holds_no_values, xp_of
from ..dtypes import (checked_number, compute_dtype, int_argument, int_arguments, is_floating, python_number, to_dtype,
                      torch_name, upcast)
from ..tensor import with_note
from ..tensor import (Function, Tensor, is_grad_enabled, name_node, no_complex_autograd, no_forward_formula, no_grad,
                      no_meta_kernel, no_meta_positions,
                      saves_as_torch)
from ..factories import _NoDerivative, _broadcast, in_layout_of, known_layout, like_view_strides
from .elementwise import backward_in_float32, gradient_passes_to, promotion_cast, times_number
from .shape import NO_DIM, RecordedCopy, add_at, dim_given, one_by_one, put_into_copy, zeroed_at

__all__ = ["gather", "sort", "argsort", "topk", "cumsum", "repeat", "tril", "triu", "nonzero",
           "return_type", "index_select", "index_add", "scatter", "scatter_add", "take_along_dim",
           "masked_select", "count_nonzero", "cumprod", "unique", "bincount", "repeat_interleave",
           "median", "kthvalue", "cummax", "cummin", "searchsorted", "bucketize", "mode", "index_fill", "index_copy", "masked_scatter", "take", "put", "scatter_reduce",
           "index_reduce", "nonzero_static"]

def return_type(name):
    """The named tuple ``(values, indices)`` that ``x.<name>(...)`` returns (``torch.return_types.<name>``)."""
    return return_types.make(name, ["values", "indices"])


def _dim(dim, ndim, fn):
    """``dim`` as a non-negative int, or torch's IndexError naming the allowed range."""
    if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)):
        raise TypeError(f"{fn}(): dim must be an int, got {type(dim).__name__}")
    rank = max(ndim, 1)  # a 0-d tensor accepts dim 0 and -1, as in torch
    if not -rank <= dim < rank:
        raise IndexError(f"Dimension out of range (expected to be in range of "  # (torch's maybe_wrap_dim: no
                         f"[{-rank}, {rank - 1}], but got {dim})")  # op's name before it)
    return int(dim) % rank


def quiet_float_errors(op):
    """Class decorator: NumPy's floating-point warnings (``inf - inf`` in a sum, an overflowing
    product) silenced in ``op``'s forward and backward, as torch prints none. minilora's filter (in
    tensor.py) cannot catch these: NumPy issues them from its own modules for reductions
    (``arr.sum()``, ``np.cumsum``), not from minilora's."""
    for name in ("forward", "backward"):
        method = getattr(op, name)

        def quiet(*args, _method=method, **kwargs):
            with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
                return _method(*args, **kwargs)
        setattr(op, name, staticmethod(quiet))
    return op


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
    """``out[i][j][k] = a[i][index[i][j][k]][k]`` for ``axis=1`` (torch.gather), contiguous as torch's whatever
    the layouts (Function.torch_layout); ``like_index``: laid out as ``index`` (sort's values: torch's sort
    writes them into empty_like(input), as their indices)."""
    torch_layout = "contiguous"

    @staticmethod
    def forward(ctx, a, index, axis, like_index=False):
        ctx.shape, ctx.axis = a.shape, axis
        ctx.index = _full_index(index, axis)
        out = a[ctx.index]
        return in_layout_of(out, index) if like_index else xp_of(out).ascontiguousarray(out)

    @staticmethod
    def backward(ctx, g):  # an index taken twice gets both gradients, summed in float32 for 16-bit g (torch)
        out = xp_of(g).zeros(ctx.shape, dtype=compute_dtype(g.dtype))
        xp_of(g).add.at(out, ctx.index, upcast(g))
        return out.astype(g.dtype, copy=False), None


def _empty_index(index, ndim):
    """An empty index of ``ndim`` dimensions (ATen takes an empty index of any rank, shape and dtype)."""
    return Tensor(xp_of(index._array).zeros((0,) * max(ndim, 1), dtype=np.int64), dtype=np.int64,
                  device=index.device)


def _empty_src(src, index):
    """``src`` (a tensor, or a number) cut to ``index``'s empty shape, in the graph."""
    return src.reshape(-1)[:0].reshape(index.shape) if isinstance(src, Tensor) else src


def _check_index(input, dim, index, fn):
    if not index.numel():  # ATen checks a non-empty index only (its dtype and shape too)
        return
    if index.dtype not in (np.int32, np.int64):
        raise RuntimeError(f"{fn}(): Expected dtype int32/int64 for index")
    if index.ndim != max(input.ndim, 1) and not (index.ndim <= 1 and input.ndim <= 1):
        named = "input" if fn == "gather" else "self"  # (torch's gather and scatter name it so)
        raise RuntimeError(f"Index tensor must have the same number of dimensions as {named} tensor")
    for d, (n, m) in enumerate(zip(index.shape, input.shape)):
        if d != dim and n > m:
            raise RuntimeError(f"Size does not match at dimension {d} expected index {list(index.shape)} to be no "
                               f"larger than self {list(input.shape)} apart from dimension {dim}")
    if index.numel():
        size = input.shape[dim] if input.ndim else 1
        bad = first_out_of_bounds(index._array, 0, size)  # (torch takes no negative index here: -1 is out)
        if bad is not None:
            raise RuntimeError(f"index {bad} is out of bounds for dimension {dim} with size {size}")


def first_out_of_bounds(positions, low, size):
    """The first of ``positions`` (in C order, as torch's kernels meet them) outside ``[low, size)``, or None
    (always for a meta index: no values to check, as torch's meta kernels check none)."""
    if holds_no_values(positions):
        return None
    flat = positions.reshape(-1)
    outside = (flat < low) | (flat >= size)
    if not bool(outside.any()):
        return None
    return int(flat[int(outside.argmax())])


def gather(input, dim, index, *, sparse_grad=False):
    """``torch.gather``: along ``dim``, take ``input``'s elements at ``index`` (an int64 or int32
    tensor of the same number of dimensions, no larger than ``input`` away from ``dim``)."""
    if sparse_grad:
        raise NotImplementedError("gather(sparse_grad=True): minilora has no sparse tensors")
    return saves_as_torch(_gather(input, dim, index), input, index)  # (Gather itself keeps only index)


def _gather(input, dim, index, like_index=False):
    """gather, for the ops that gather their values at indices they found (sort, topk, max(dim), ...):
    torch's nodes for those keep the indices, not the input. ``like_index``: laid out as ``index``."""
    dim = _dim(dim, input.ndim, "gather")
    _check_index(input, dim, index, "gather")
    if not index.numel() and index.ndim != input.ndim:  # (an empty index of any rank: torch's empty result)
        return _gather(input, dim, _empty_index(index, input.ndim)).reshape(index.shape)
    if input.ndim == 0 or index.ndim == 0:  # torch reads a 0-d tensor as one element along dim 0
        return Gather.apply(input.reshape(-1), index.reshape(1), axis=0).reshape(index.shape)
    return Gather.apply(input, index, axis=dim, like_index=like_index)


# ---- sort and topk -------------------------------------------------------------------------------
class ArgSort(Function):
    """The order that sorts ``a`` along ``axis``: stable (equal elements keep their order), or, for
    ``torch_ties``, the order torch's CPU sort leaves among equal elements (``std_sort.py``)."""

    @staticmethod
    def forward(ctx, a, axis, descending, laid_out=False, torch_ties=False):
        xp, a_ = xp_of(a), _sortable(a)
        if descending:  # stable descending order: sort the reversed axis, then map the indices back
            flipped = xp.flip(a_, axis=axis)
            order = a.shape[axis] - 1 - xp.flip(xp.argsort(flipped, axis=axis, kind="stable"), axis=axis)
        else:
            order = xp.argsort(a_, axis=axis, kind="stable")
        if torch_ties and xp is np and _torch_sort_unstable(a, axis, descending) and _has_ties(a, order, axis):
            order = _along_last(lambda rows: std_sort.sort_order(rows, descending), a, axis)
        return in_layout_of(order, a) if laid_out else order  # (torch's sort keeps a's layout)


def _torch_sort_unstable(a, axis, descending):
    """Whether torch's CPU sort(stable=False) may reorder equal elements of ``a`` along ``axis``: it runs
    std::sort, whose runs of up to 16 end in a (stable) insertion sort, except along a broadcast (stride 0)
    axis, which it does not sort, and for fbgemm's (stable) radix sort: 1-D integers, ascending, >= 32768."""
    n = a.shape[axis]
    if n <= 16 or a.strides[axis] == 0:
        return False
    radix = a.ndim == 1 and not descending and a.dtype.kind in "iu" and n >= 32768
    return not radix


def _has_ties(a, order, axis):
    """Whether some row of ``a`` along ``axis`` holds equal values (NaNs count as equal: no order between
    them), seen in its stably sorted values ``order`` gives (adjacent equals)."""
    ranked = np.take_along_axis(a, order, axis=axis)
    first, second = np.delete(ranked, -1, axis=axis), np.delete(ranked, 0, axis=axis)
    with np.errstate(invalid="ignore"):
        return bool(np.any((first == second) | ((first != first) & (second != second))))


def _along_last(compute, a, axis):
    """``compute`` on the rows of ``a`` along ``axis`` (as a C-ordered (rows, n) array), its (rows, m)
    result put back with ``axis`` in its place."""
    moved = np.moveaxis(a, axis, -1)
    result = compute(moved.reshape(-1, moved.shape[-1]))
    return np.moveaxis(result.reshape(moved.shape[:-1] + result.shape[-1:]), -1, axis)


def _sortable(a):
    """``a`` as the array module can sort it: on the GPU, 16-bit floats as float32 copies (exact: the same
    order, ties kept), since CuPy's sorts run Thrust through a type dispatcher with no bfloat16."""
    if a.dtype.itemsize == 2 and is_floating(a.dtype) and xp_of(a) is not np:
        return a.astype(np.float32)
    return a


def _flags(fn, **flags):
    """torch's bool parameters of ``fn``: True or False, not a truthy "no" (``sort(descending="no")`` sorted
    descending without a word)."""
    for name, value in flags.items():
        if value is not True and value is not False:
            dtypes.bool_argument(fn, name, value)


def argsort(input, dim=-1, descending=False, *, stable=False):
    """``torch.argsort``: the int64 indices that sort ``input`` along ``dim``, laid out as ``input`` (as
    torch's, whose sort writes into empty_like(input)). ``stable=False``: equal elements in the order
    torch's CPU sort leaves them (std::sort's), not their original order."""
    _flags("argsort", descending=descending, stable=stable)
    return like_view_strides(_sort_order(input, dim, descending, laid_out=True, torch_ties=not stable), input)


def _sort_order(input, dim=-1, descending=False, laid_out=False, torch_ties=False):
    """argsort's indices, C-ordered unless ``laid_out``: for the ops built on them (median ...), whose
    results torch lays out contiguously. Stable unless ``torch_ties``."""
    dim = _dim(dim, input.ndim, "argsort")  # (a 0-d tensor too: torch checks its dim, -1 or 0)
    if input.ndim == 0:
        return _no_grad_apply(ArgSort, input.reshape(1), axis=0, descending=descending).reshape(())
    return _no_grad_apply(ArgSort, input, axis=dim, descending=descending, laid_out=laid_out, torch_ties=torch_ties)


def sort(input, dim=-1, descending=False, *, stable=None):
    """``torch.sort``: ``(values, indices)`` along ``dim``; each value's gradient goes back to where
    it came from. ``stable=False`` (torch's default) leaves equal elements as torch's CPU sort does
    (``std_sort.py``); ``stable=True`` keeps their original order."""
    _flags("sort", descending=descending, stable=False if stable is None else stable)
    indices = argsort(input, dim, descending, stable=bool(stable))
    node = "SortBackward0" if stable is None else "SortBackward1"  # (torch's sort.stable overload: stable given)
    if input.ndim == 0:
        return return_type("sort")(name_node(RecordedCopy.apply(input), node, input), indices)
    values = like_view_strides(name_node(_gather(input, dim, indices, like_index=True), node), input)
    return return_type("sort")(values, indices)


def topk(input, k, dim=-1, largest=True, sorted=True):  # noqa: A002  (torch's name)
    """``torch.topk``: the ``k`` largest (``largest=False``: smallest) elements along ``dim``, as
    ``(values, indices)``: sorted, or (``sorted=False``) in the order torch's selection leaves them."""
    _flags("topk", largest=largest, sorted=sorted)
    if input.dtype == np.bool_ or np.dtype(input.dtype).kind == "c":
        if input.dtype == np.bool_:
            raise RuntimeError("topk does not support bool dtypes on CPU")
        raise RuntimeError(" topk does not support complex dtypes on CPU")  # (torch's words begin with a space)
    k = int_argument("topk", "k", k)
    dim_ = _dim(dim, input.ndim, "topk")
    size = input.shape[dim_] if input.ndim else 1
    if not 0 <= k <= size:
        raise RuntimeError("selected index k out of range")
    if input.ndim == 0:
        return return_type("topk")(name_node(RecordedCopy.apply(input), "TopkBackward0", input),
                                   _sort_order(input, dim_, descending=largest))
    indices = _topk_order(input, k, dim_, largest, sorted)
    return return_type("topk")(name_node(_gather(input, dim_, indices), "TopkBackward0"), indices)


def _topk_order(input, k, dim, largest, sorted):  # noqa: A002  (torch's name)
    """topk's int64 indices, in their own C-ordered memory as torch's."""
    return _no_grad_apply(TopKOrder, input, k=k, axis=dim, largest=largest, sorted=sorted)


class TopKOrder(Function):
    """Where topk's ``k`` elements are along ``axis``: on NumPy in the order torch's CPU topk leaves them
    (partial_sort, or nth_element then sort: ``std_sort.py``; with ``sorted=False`` not sorted, and ties
    its own way); on CuPy the first ``k`` of the stable sort. Contiguous, as torch's (Function.torch_layout)."""
    torch_layout = "contiguous"

    @staticmethod
    def forward(ctx, a, k, axis, largest, sorted):  # noqa: A002  (torch's name)
        if k > 0 and xp_of(a) is np:
            order = _along_last(lambda rows: std_sort.topk_order(rows, k, largest, sorted), a, axis)
            return np.ascontiguousarray(order)
        order = ArgSort.forward(ctx, a, axis, largest)
        return order[(slice(None),) * axis + (slice(0, k),)].copy()


# ---- nonzero -------------------------------------------------------------------------------------
class NonZero(Function):
    """The int64 coordinates of the non-zero elements, one row each (``[n, ndim]``); no gradient. Laid out
    as torch's CPU kernel writes them, one coordinate after another: strides (1, n), not contiguous."""

    @staticmethod
    def forward(ctx, a):
        xp = xp_of(a)
        by_dimension = xp.stack(xp.nonzero(a)).reshape(a.ndim, -1).astype(np.int64)  # ([ndim, n], C order)
        return known_layout(by_dimension.T, strides=(1, by_dimension.shape[1]))


def nonzero(input, *, as_tuple=False):
    """``torch.nonzero``: ``[n, ndim]`` coordinates; ``as_tuple=True``: one index tensor per dim."""
    no_meta_kernel("nonzero", input)  # (so argwhere, where(condition) and a mask index too)
    if input.ndim == 0:  # torch: ``[n, 0]`` coordinates, or as a tuple one index along one dim
        coords = _no_grad_apply(NonZero, input.reshape(1))
        return (coords[:, 0],) if as_tuple else coords[:, :0]
    coords = _no_grad_apply(NonZero, input)
    if not as_tuple:
        return coords
    return tuple(coords[:, d] for d in range(input.ndim))


def nonzero_static(input, *, size, fill_value=-1):
    """``torch.nonzero_static``: ``nonzero``'s coordinates in exactly ``size`` rows, cut there or filled
    on with rows of ``fill_value``."""
    size = int_argument("nonzero_static", "size", size)
    if size < 0:
        raise RuntimeError("nonzero_static: 'size' must be an non-negative integer")
    coords = nonzero(input)
    found = coords.shape[0]
    if found >= size:
        return coords[:size]
    filler = coords.new_full((size - found, coords.shape[1]), fill_value)
    return Tensor(xp_of(coords._array).concatenate([coords._array, filler._array]), dtype=coords.dtype,
                  device=input.device)


# ---- cumsum --------------------------------------------------------------------------------------
def cumulative(running, a, axis):
    """``running`` (``cumsum`` or ``cumprod``) as torch's CPU kernel runs it: the running value kept
    in a wider type -- float64 for float32 (torch's CPU accumulate type), complex128 for complex64, float32
    for 16-bit floats -- and each output rounded once to ``a``'s dtype. NumPy alone would accumulate float32
    in float32 and differ from torch in the last bits of almost every long cumsum."""
    wide = {"float32": np.float64, "complex64": np.complex128, "float16": np.float32,
            "bfloat16": np.float32}.get(a.dtype.name)
    work = a if wide is None else a.astype(wide)
    if running is xp_of(a).cumsum and work.dtype.kind in "fc" and work.size:
        work = work.copy() if work is a else work
        first = [slice(None)] * work.ndim
        first[axis] = 0
        work[tuple(first)] += 0  # torch's running sum starts from 0: a leading -0 becomes +0 (NumPy's kept it)
    out = running(work, axis=axis)
    return out.astype(a.dtype, order="C", copy=False)  # (contiguous, as torch's, whatever a's layout)


@quiet_float_errors
class CumSum(Function):
    torch_layout = "contiguous"  # (from a channels_last input too: Function.torch_layout)

    @staticmethod
    def forward(ctx, a, axis):
        ctx.axis = axis
        return cumulative(xp_of(a).cumsum, a, axis)

    @staticmethod
    def backward(ctx, g):  # each input feeds every later output: a reversed cumulative sum
        xp = xp_of(g)
        return xp.flip(cumulative(xp.cumsum, xp.flip(g, axis=ctx.axis), ctx.axis), axis=ctx.axis)


@_amp.autocasts
def cumsum(input, dim, *, dtype=None):
    """``torch.cumsum``: running sums along ``dim``. Integer and bool inputs sum as int64 (torch)."""
    return _running(CumSum, "cumsum", input, dim, dtype)


def cast_to_dtype_argument(input, dtype, *, inside=True):
    """``input`` converted for an op's ``dtype=`` (sum, prod, cumsum ...). Where ``input`` needs a
    gradient, an integer or bool ``dtype`` is torch's error: the result could carry none. ``inside``: torch's
    kernel converts (sum, cumsum: no node of torch's graph), else torch's op calls ``.to`` first (softmax's
    ToCopyBackward0)."""
    dtype = to_dtype(dtype)
    if not is_floating(dtype) and dtype.kind != "c" and input.requires_grad and is_grad_enabled():
        raise RuntimeError(f"Autograd not support dtype: {torch_name(dtype)}")
    if inside and input.dtype != dtype:
        return promotion_cast(input, dtype)
    return input.to(dtype=dtype)


def _running(op, name, input, dim, dtype):
    """cumsum / cumprod: ``dtype`` first if given, integers and bools as int64 (torch), a 0-d input
    returned as a copy."""
    if dtype is not None:
        input = cast_to_dtype_argument(input, dtypes.dtype_argument(name, dtype))
        if input.dtype == np.bool_:  # (NumPy would run it as logical or/and; torch has no bool kernel)
            raise NotImplementedError(f'"{name}_out_cpu" not implemented for \'Bool\'')
    elif input.dtype.kind in "biu":
        input = input.long()
    if input.ndim == 0:
        _dim(dim, 0, name)
        return name_node(input.clone(), f"{name.capitalize()}Backward0", input)
    return op.apply(input, axis=_dim(dim, input.ndim, name))


# ---- repeat --------------------------------------------------------------------------------------
class Repeat(Function):
    """``np.tile`` with torch's rule: ``sizes`` may add leading dimensions, never drop one."""
    torch_layout = "contiguous"  # (torch's CPU kernel writes a contiguous result: Function.torch_layout)

    @staticmethod
    def forward(ctx, a, sizes):
        ctx.original = a.shape
        a = a.reshape((1,) * (len(sizes) - a.ndim) + a.shape)
        ctx.shape, ctx.sizes = a.shape, sizes
        out = xp_of(a).tile(a, sizes)
        return out if out.base is None else out.copy()  # (np.tile reshapes an empty input: a new tensor, as torch's)

    @staticmethod
    def backward(ctx, g):
        # torch's repeat_backward, each sum in torch's order (sum_like_torch): the added leading axes summed
        # away one by one, then every repeated axis of length r*n split into (r, n) and the r copies summed
        if 0 in ctx.sizes:
            return xp_of(g).zeros(ctx.original, g.dtype)
        added = len(ctx.sizes) - len(ctx.original)
        for _ in range(added):
            g = sum_like_torch(g, (0,))[0]
        split, copies = [], []
        for r, n in zip(ctx.sizes[added:], ctx.original):
            if r != 1:
                copies.append(len(split))
                split.append(r)
            split.append(n)
        g = g.reshape(split)
        return (sum_like_torch(g, tuple(copies)) if copies else g).reshape(ctx.original)


def repeat(input, *repeats, **by_name):
    """``x.repeat(2, 1)``: ``input`` tiled ``repeats[d]`` times along each dimension ``d``."""
    repeats = one_by_one("repeat", repeats, by_name, "repeats")
    sizes = tuple(repeats[0]) if len(repeats) == 1 and isinstance(repeats[0], (tuple, list)) else repeats
    int_arguments("repeat", "repeats", sizes)
    if not repeats:
        raise TypeError("repeat() missing 1 required positional argument: 'repeats'")
    if len(sizes) < input.ndim:
        raise RuntimeError("Number of dimensions of repeat dims can not be smaller than number of dimensions of "
                           "tensor")
    sizes = tuple(int(s) for s in sizes)
    if any(s < 0 for s in sizes):  # (torch makes the result's sizes first: a negative one is its factory's error, and
        # a negative repeat of an empty dimension an empty one)
        shape = (1,) * (len(sizes) - input.ndim) + tuple(input.shape)
        result = [r * n for r, n in zip(sizes, shape)]
        if min(result) < 0:
            raise RuntimeError(f"Trying to create tensor with negative dimension {min(result)}: {result}")
        sizes = tuple(max(r, 0) for r in sizes)
    return Repeat.apply(input, sizes=sizes)


# ---- triangles -----------------------------------------------------------------------------------
def _triangle(input, diagonal, lower):
    from .elementwise import Where
    int_argument("tril" if lower else "triu", "diagonal", diagonal)
    if input.ndim < 2:
        raise RuntimeError(f"{'tril' if lower else 'triu'}: input tensor must have at least 2 "
                           f"dimensions")
    rows, cols = input.shape[-2:]
    keep = (np.tril if lower else np.triu)(np.ones((rows, cols), dtype=bool), diagonal)
    keep = Tensor(keep, dtype=keep.dtype, device=input.device)._array
    return Where.apply(keep, input, input._array.dtype.type(0), contiguous=True)  # (contiguous, as torch's)


def tril(input, diagonal=0):
    """The lower triangle (on and below ``diagonal``) of the last two dims, the rest 0; differentiable."""
    return name_node(_triangle(input, diagonal, lower=True), "TrilBackward0", input, graph=(input,))


def triu(input, diagonal=0):
    """The upper triangle (on and above ``diagonal``) of the last two dims, the rest 0."""
    return name_node(_triangle(input, diagonal, lower=False), "TriuBackward0", input, graph=(input,))


# ---- index_select, index_add, scatter, take_along_dim, masked_select -----------------------------
def _along(axis, index):
    """The NumPy index that picks positions ``index`` along ``axis`` (all of every other axis)."""
    return (slice(None),) * axis + (index,)


def _index_vector(index, fn, input):
    """``index`` as a 1-D integer array (torch also takes a 0-d index, as one element), positions in ``input``."""
    if not isinstance(index, Tensor) or index.dtype not in (np.int32, np.int64):
        raise RuntimeError(f"{fn}(): Expected dtype int32/int64 for index")
    no_meta_positions(input, index)
    if index.ndim > 1:
        raise IndexError(f"{fn}(): Index is supposed to be a vector")
    return index._array.reshape(-1)


def _check_bounds(index, size, dim, fn, error=IndexError, negative=False):
    """Every position within ``size`` (torch raises IndexError for index_fill and RuntimeError for index_add:
    ``error`` says which), in torch's words, naming the first one outside; a negative one counts from the end only
    where ``negative`` (index_fill; index_add refuses -1, as torch)."""
    bad = first_out_of_bounds(index, -size if negative else 0, size) if index.size else None
    if bad is not None:
        raise error(f"index {bad} is out of bounds for dimension {dim} with size {size}")


def _check_selected(positions, input, dim):
    """index_select's bounds in torch's words, by the kernel that runs: along dim 1 of a tensor of 2 or more dims
    its dim-1 kernel (RuntimeError naming the first index outside), else index_select_out's check (IndexError)."""
    size = input.shape[dim]
    bad = first_out_of_bounds(positions, 0, size) if positions.size else None
    if bad is None:
        return
    if dim == 1 and input.ndim > 1:
        raise RuntimeError(f"INDICES element is out of DATA bounds, id={bad} axis_dim={size}")
    raise IndexError("index out of range in self")


class IndexSelect(Function):
    """``a`` at positions ``index`` along ``axis``; an index taken twice gets both gradients. Contiguous, as
    torch's whatever ``a``'s layout (Function.torch_layout)."""
    torch_layout = "contiguous"

    @staticmethod
    def forward(ctx, a, index, axis):
        ctx.shape, ctx.where, ctx.index, ctx.axis = a.shape, _along(axis, index), index, axis
        out = a[ctx.where]  # (NumPy keeps the selected dimension outermost in memory; torch's result is contiguous)
        return xp_of(out).ascontiguousarray(out)

    @staticmethod
    def backward(ctx, g):  # (torch's: zeros(...).index_add_(dim, index, grad), its 16-bit sums as IndexAdd's)
        out = xp_of(g).zeros(ctx.shape, dtype=g.dtype)
        if _sums_16_bits_in_float32(out, ctx.index, ctx.axis, 1):
            return _added_in_float32(out, ctx.where, g)
        add_at(out, ctx.where, g)  # (CuPy's add.at has no bfloat16: add_at goes through float32)
        return out


def index_select(input, dim, index):
    """``torch.index_select``: the slices of ``input`` at the positions of the 1-D ``index``
    along ``dim`` (a new tensor, in ``index``'s order, repeats allowed)."""
    if input.ndim == 0:  # torch: a 0-d tensor has one element along dim 0
        _dim(dim, 0, "index_select")
        if index.numel() != 1:
            raise RuntimeError(f"index_select(): Index to scalar can have only 1 value, got {index.numel()} value(s)")
        selected = index_select(input.reshape(1), dim, index).reshape(())
        return name_node(selected, "IndexSelectBackward0", input, graph=(input,))  # (torch's one node)
    dim = _dim(dim, input.ndim, "index_select")
    positions = _index_vector(index, "index_select", input)
    if input.shape[dim] == 0 and positions.size and input.ndim > 1:  # (1-D: the IndexError below)
        raise RuntimeError("index_select(): self indexing axis dim should be positive")
    _check_selected(positions, input, dim)
    return IndexSelect.apply(input, index=positions, axis=dim)


class IndexAdd(Function):
    """``a`` with ``alpha * source`` added at positions ``index`` along ``axis`` (repeats add up)."""
    torch_layout = "contiguous"  # (torch's out-of-place form writes a contiguous copy, from channels_last too)

    @staticmethod
    def forward(ctx, a, source, index, axis, alpha):
        ctx.where, ctx.alpha = _along(axis, index), alpha
        if _sums_16_bits_in_float32(a, index, axis, alpha):
            return _added_in_float32(a, ctx.where, source)
        if alpha != 1 and a.ndim > 1 and type(a) is np.ndarray and a.dtype in (np.float32, np.float64):
            return _fused_slice_by_slice(a, source, index, axis, alpha)
        out = a.copy()
        add_at(out, ctx.where, source * alpha if alpha != 1 else source)  # (16-bit: alpha and each sum rounded)
        return out

    @staticmethod
    def backward(ctx, g):
        na, ns = ctx.needs_input_grad
        return (g if na else None), (times_number(g[ctx.where], ctx.alpha) if ns else None)


def _sums_16_bits_in_float32(a, index, axis, alpha):
    """Whether torch's CPU index_add adds 16-bit slices in float32, rounding each sum once (measured, torch 2.13):
    alpha 1, an int64 index, along the first or the last of 2+ dimensions (its scatter_add path); else it adds one
    slice at a time in the 16-bit dtype, ``self += source * alpha``, each step rounded (NumPy's ``add.at``)."""
    return (a.itemsize == 2 and is_floating(a.dtype) and alpha == 1 and index.dtype == np.int64 and a.ndim > 1
            and axis in (0, a.ndim - 1))


def _added_in_float32(a, where, source):
    wide = a.astype(np.float32)
    add_at(wide, where, source.astype(np.float32))
    return wide.astype(a.dtype)


def _fused_slice_by_slice(a, source, index, axis, alpha):
    """torch's float32/float64 index_add with an alpha along a dimension of 2+: slice by slice in index order,
    ``self[index[i]] = fma(alpha, source[i], self[index[i]])`` (its vectorized add; a 1-D input's scalar loop
    rounds ``source * alpha`` first). Repeated positions wait for a later round: each round updates distinct
    slices, the k-th occurrence of each position in round k."""
    out = a.copy()
    order = np.argsort(index, kind="stable")
    rank = np.empty(index.size, np.int64)  # (how many earlier entries name the same position)
    ordered = index[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    rank[order] = np.arange(index.size) - np.repeat(starts, np.diff(np.r_[starts, index.size]))
    fused = float32_math.fused_multiply_add if a.dtype == np.float32 else float32_math.fused_multiply_add64
    for r in range(int(rank.max()) + 1 if index.size else 0):
        picked = np.flatnonzero(rank == r)
        where = _along(axis, index[picked])
        out[where] = fused(a.dtype.type(alpha), np.take(source, picked, axis=axis), out[where])
    return out


def _check_index_add_shapes(input, dim, count, source):
    """torch's index_add meta checks, in its order: the dtypes, dim within the source, one index per source slice
    along dim (a 0-d source: one index; torch's message then asks the 0-d source its size: an IndexError), and
    the same shape but along dim (a 0-d input takes a 0-d source only)."""
    if source.dtype != input.dtype:
        raise RuntimeError(f"index_add_(): self ({torch_name(input.dtype)}) and source ({torch_name(source.dtype)}) "
                           "must have the same scalar type")
    if dim != 0 and dim >= source.ndim:
        raise RuntimeError(f"index_add_(): Indexing dim {dim} is out of bounds of the source tensor with dim "
                           f"{source.ndim}")
    if source.ndim == 0 and count != 1:
        raise IndexError(f"Dimension specified as {dim} but tensor has no dimensions")
    if source.ndim and count != source.shape[dim]:
        raise RuntimeError(f"index_add_(): Number of indices ({count}) should be equal to source.size(dim): "
                           f"({source.shape[dim]}), for dim: {dim}")
    if source.ndim != input.ndim or any(a != b for k, (a, b) in enumerate(zip(input.shape, source.shape)) if k != dim):
        raise RuntimeError("source tensor shape must match self tensor shape, excluding the specified dimension. "
                           f"Got self.shape = {list(input.shape)} source.shape = {list(source.shape)}")


def index_add(input, dim, index, source, *, alpha=1):
    """``torch.index_add``: a copy of ``input`` with ``alpha * source[i]`` added to slice
    ``index[i]`` along ``dim``. ``x.index_add_(...)`` is the in-place form."""
    dim = _dim(dim, input.ndim, "index_add")
    positions = _index_vector(index, "index_add", input)
    _check_index_add_shapes(input, dim, positions.size, source)
    _check_bounds(positions, input.shape[dim] if input.ndim else 1, dim, "index_add", RuntimeError)
    alpha = checked_number(python_number(alpha), input.dtype)  # stored as torch stores it: truncated
    # into an integer dtype (alpha=0.5 adds nothing to int32), wrapped into uint8 (-3 is 253), refused
    # where it does not fit (1e6 into float16)
    if input.ndim == 0:  # (torch's self: grad, handed on as it is: not through minilora's reshapes)
        added = gradient_passes_to(input, lambda x: IndexAdd.apply(x.reshape(1), source.reshape(1), index=positions,
                                                                   axis=0, alpha=alpha).reshape(()))
        return name_node(added, "IndexAddBackward0", input, source, graph=(input, source))
    return saves_as_torch(IndexAdd.apply(input, source, index=positions, axis=dim, alpha=alpha), index, source)


class IndexFill(Function):
    """``a`` with ``value`` written into the slices at positions ``index`` along ``axis``. The
    gradient reaches ``a`` everywhere else, and ``value`` from every filled position once (a
    repeated index fills its slice once: torch's formula sums over the unique indices)."""
    # torch's nodes: IndexFillBackward0 for a number value, IndexFillBackward1 for a 0-d tensor
    torch_node_name = staticmethod(lambda ctx: f"IndexFillBackward{int(ctx.value_dtype is not None)}")

    @staticmethod
    def forward(ctx, a, value, index, axis):
        ctx.where = _along(axis, xp_of(a).unique(index))
        ctx.value_dtype = getattr(value, "dtype", None)
        return put_into_copy(a, ctx.where, value, keep_layout=True)  # (torch: a clone, a's layout)

    @staticmethod
    def backward(ctx, g):
        needs_a, needs_value = ctx.needs_input_grad
        grad_a = zeroed_at(g, ctx.where) if needs_a else None
        grad_value = None
        if needs_value:
            # torch's grad.index_select(dim, unique(index)).sum(): the selected slices summed in torch's order
            selected = xp_of(g).ascontiguousarray(g[ctx.where])  # (index_select's result is contiguous, NumPy's not)
            grad_value = sum_like_torch(selected, tuple(range(selected.ndim))).reshape(()).astype(ctx.value_dtype)
        return grad_a, grad_value


def index_fill(input, dim, index, value):
    """``torch.index_fill``: a copy of ``input`` with ``value`` (a number or a 0-d tensor, which then
    gets a gradient) in every slice along ``dim`` at the positions of the int64 ``index``.
    ``x.index_fill_(...)`` is the in-place form."""
    dim = _dim(dim, input.ndim, "index_fill")
    if not isinstance(index, Tensor) or index.dtype != np.int64:
        raise IndexError("index_fill_(): Expected dtype int64 for index.")
    if index.ndim > 1:
        raise RuntimeError("Index has to be a vector/scalar")
    if isinstance(value, Tensor) and value.ndim:
        raise RuntimeError(f"index_fill_ only supports a 0-dimensional value tensor, but got tensor "
                           f"with {value.ndim} dimension(s).")
    if not isinstance(value, Tensor):  # a number must fit, as torch checks (uint8: 300 raises, -1 is 255)
        value = checked_number(python_number(value), input.dtype)
    elif input.dtype != np.bool_:  # (a 0-d tensor's too: torch reads it with .item(), even for no position)
        checked_number(value.item(), input.dtype)
    positions = index._array.reshape(-1)
    _check_bounds(positions, input.shape[dim] if input.ndim else 1, dim, "index_fill", negative=True)
    if input.ndim == 0:  # torch: a 0-d tensor is one element along dim 0
        filled = IndexFill.apply(input.reshape(1), value, index=positions, axis=0).reshape(())
        tensor = isinstance(value, Tensor)  # (torch's IndexFillBackward1: a 0-d tensor value, an edge of its own)
        return name_node(filled, f"IndexFillBackward{int(tensor)}", input, graph=(input, value) if tensor else (input,))
    return IndexFill.apply(input, value, index=positions, axis=dim)


class Scatter(Function):
    """``a`` with ``src``'s leading block written (``add``: added) at ``index`` along ``axis``:
    ``out[i][index[i][j]] = src[i][j]`` for ``axis=1``. Where an index repeats, plain scatter keeps
    one of the writes (torch: unspecified which); gradient-wise ``src`` gets ``g`` gathered back
    at its index and ``a`` gets ``g`` except where it was overwritten (torch's formulas)."""
    torch_layout = "contiguous"  # (torch's out-of-place form writes a contiguous copy, from channels_last too)

    @staticmethod
    def forward(ctx, a, src, index, axis, add):
        ctx.where, ctx.add = _full_index(index, axis), add
        ctx.src_shape, ctx.block = getattr(src, "shape", ()), tuple(slice(0, n) for n in index.shape)
        values = src[ctx.block] if getattr(src, "ndim", 0) else src
        if add:  # scatter_add sums 16-bit floats in float32 and rounds once (index_add does not: torch)
            out = a.astype(compute_dtype(a.dtype), order="C")  # a copy (16-bit floats: widened), as torch's: C
            add_at(out, ctx.where, upcast(values) if hasattr(values, "dtype") else values)
            return out.astype(a.dtype, copy=False)
        return put_into_copy(a, ctx.where, values)

    @staticmethod
    def backward(ctx, g):
        na, ns = ctx.needs_input_grad
        ga = gs = None
        if na:
            ga = g if ctx.add else zeroed_at(g, ctx.where)
        if ns:
            _refuse_src_larger_than_index(ctx, ctx.src_shape)
            gs = g[ctx.where]
        return ga, gs


def _index_shape(ctx):
    return tuple(s.stop for s in ctx.block)


def _refuse_src_larger_than_index(ctx, src_shape):
    """torch's src gradient is ``grad.gather(dim, index)``, of the index's shape; where ``src`` is larger its engine
    refuses that gradient (validate_outputs), in these words."""
    if tuple(src_shape) != _index_shape(ctx):
        raise RuntimeError(f"Function {ctx.name()} returned an invalid gradient at index 1 - got "
                           f"{list(_index_shape(ctx))} but expected shape compatible with {list(src_shape)}")


def _check_scatter_src(input, dim, index, src):
    """ATen's scatter_shape_check on a Tensor ``src``, in its order: the index no larger than ``src`` along each of
    self's dimensions (reading one ``src`` lacks is torch's IndexError: a 1-D src of a 2-D scatter), then ``src`` of
    the index's rank (a larger ``src`` was taken by its leading block here)."""
    if index.numel():
        src_dims = max(src.ndim, 1)
        for d in range(max(input.ndim, 1)):
            if d >= src_dims:
                raise IndexError(f"Dimension out of range (expected to be in range of [{-src_dims}, {src_dims - 1}], "
                                 f"but got {d})")
            if (index.shape[d] if index.ndim else 1) > (src.shape[d] if src.ndim else 1):
                raise RuntimeError(f"Expected index {list(index.shape)} to be no larger than self "
                                   f"{list(input.shape)} apart from dimension {dim} and to be no larger size than src "
                                   f"{list(src.shape)}")
    if max(src.ndim, 1) != max(index.ndim, 1):
        raise RuntimeError("Index tensor must have the same number of dimensions as src tensor")


def _scatter(fn, input, dim, index, src, add):
    dim = _dim(dim, input.ndim, fn)
    if not index.numel() and index.ndim != max(input.ndim, 1):  # (ATen takes an empty index of any rank)
        index = _empty_index(index, input.ndim)
        src = _empty_src(src, index)
    if input.ndim == 1:  # torch reads a 0-d index or src as one position (the one-hot of a label)
        index = index.reshape(1) if index.ndim == 0 else index
        src = src.reshape(1) if isinstance(src, Tensor) and src.ndim == 0 else src
    if isinstance(src, Tensor) and src.dtype != input.dtype:  # (ATen's dtype checks come before its shape checks)
        raise RuntimeError("scatter(): Expected self.dtype to be equal to src.dtype")  # (scatter_add's too)
    _check_index(input, dim, index, fn)
    if isinstance(src, Tensor):
        _check_scatter_src(input, dim, index, src)
    else:  # a number must fit, as torch checks (uint8: 300 raises, -1 is 255)
        src = checked_number(python_number(src), input.dtype)
    if input.ndim == 0:
        src = src.reshape(1) if isinstance(src, Tensor) else src

        def scattered(x):
            return Scatter.apply(x.reshape(1), src, index=index._array.reshape(1), axis=0, add=add).reshape(())
        return gradient_passes_to(input, scattered) if add else scattered(input)  # (scatter_add's self: grad)
    return Scatter.apply(input, src, index=index._array, axis=dim, add=add)


def scatter(input, dim, index, src=None, *, value=None, reduce=None):
    """``torch.scatter``: a copy of ``input`` with ``src[i][j]`` written to
    ``out[i][index[i][j]]`` (for ``dim=1``); ``src`` may be a number (``value=``, torch's other
    spelling). ``x.scatter_(...)`` is the in-place form."""
    if (src is None) == (value is None):
        raise TypeError("scatter() needs exactly one of src (a tensor or number) and value")
    if reduce is not None:  # torch's older spelling of scatter_reduce
        if reduce not in ("add", "multiply"):
            raise RuntimeError(f"reduce argument must be either add or multiply, got {reduce}")
        src = value if src is None else src
        if not isinstance(src, Tensor):
            src = input.new_full(tuple(index.shape), src)
        with no_grad():
            out = scatter_reduce(input, dim, index, src, "sum" if reduce == "add" else "prod")
        return _NoDerivative.apply(input, values=out._array, name="scatter")  # (torch has none either)
    return _scatter("scatter", input, dim, index, value if src is None else src, add=False)


@_amp.autocasts
def scatter_add(input, dim, index, src):
    """``torch.scatter_add``: a copy of ``input`` with ``src[i][j]`` added to
    ``out[i][index[i][j]]`` (for ``dim=1``); repeated indices add up."""
    if not isinstance(src, Tensor):
        raise TypeError(f"scatter_add(): argument 'src' must be Tensor, not {type(src).__name__}")
    return name_node(_scatter("scatter_add", input, dim, index, src, add=True), "ScatterAddBackward0", input, src,
                     graph=(input, src))


class IndexCopy(Function):
    """``a`` with the slices at positions ``index`` along ``axis`` replaced by ``source``'s; the
    gradient reaches ``a`` everywhere else and ``source`` from where it was written."""

    @staticmethod
    def forward(ctx, a, source, index, axis):
        ctx.where = _along(axis, index)
        return put_into_copy(a, ctx.where, source)

    @staticmethod
    def backward(ctx, g):
        needs_a, needs_source = ctx.needs_input_grad
        return (zeroed_at(g, ctx.where) if needs_a else None), (g[ctx.where] if needs_source else None)


@_amp.autocasts
def index_copy(input, dim, index, source):
    """``torch.index_copy``: a copy of ``input`` whose slices at the int64 positions ``index`` along
    ``dim`` are ``source``'s, in order (a repeated index: one of the writes, as torch leaves it open).
    ``x.index_copy_(...)`` is the in-place form."""
    dim = _dim(dim, input.ndim, "index_copy_")
    _long_index("index_copy_", index)
    if source.dtype != input.dtype:
        raise RuntimeError(f"index_copy_(): self and source expected to have the same dtype, but got "
                           f"(self) {input.dtype} and (source) {source.dtype}")
    if source.ndim != input.ndim and input.ndim and source.ndim:
        raise IndexError(f"index_copy_(): When source and destination are not scalars, their "
                         f"dimensionality must match. Source dimensionality ({source.ndim}), "
                         f"destination dimensionality ({input.ndim})")
    positions = index._array.reshape(-1)
    if source.ndim == 0 and positions.size != 1:  # (torch checks it before the dimensionality)
        raise IndexError(f"index_copy_(): When source is scalar, index should have one element (got {positions.size})")
    size = input.shape[dim] if input.ndim else 1
    bad = first_out_of_bounds(positions, 0, size) if positions.size else None
    if bad is not None:  # (torch's index_copy names itself, and the first index outside)
        raise IndexError(f"index_copy_(): index {bad} is out of bounds for dimension {dim} with size {size}")
    if source.ndim and source.shape[dim] != positions.size:
        raise IndexError(f"index_copy_(): Number of indices ({positions.size}) should be equal to "
                         f"source.size(dim) ({source.shape[dim]})")
    if input.ndim == 0:  # (a source of n elements along dim 0: each index writes the one element in turn)
        copied = IndexCopy.apply(input.reshape(1), source.reshape(-1), index=positions, axis=0).reshape(())
        return name_node(copied, "IndexCopyBackward0", input, source, graph=(input, source))
    return saves_as_torch(IndexCopy.apply(input, source, index=positions, axis=dim), index, source)  # as torch


class MaskedScatter(Function):
    """``a`` with the positions where ``mask`` is True filled, in row-major order, by ``source``'s
    first elements; the gradient reaches ``a`` where the mask is False and those first elements of
    ``source`` from the positions they filled."""
    torch_layout = "contiguous"  # (torch's out-of-place form writes a contiguous copy, from channels_last too)

    @staticmethod
    def forward(ctx, a, source, mask):
        ctx.mask, ctx.source_shape = mask, source.shape
        ctx.count = int(mask.sum())
        return put_into_copy(a, mask, source.reshape(-1)[:ctx.count])

    @staticmethod
    def backward(ctx, g):
        needs_a, needs_source = ctx.needs_input_grad
        grad_a = zeroed_at(g, ctx.mask) if needs_a else None
        grad_source = None
        if needs_source:
            flat = xp_of(g).zeros(int(np.prod(ctx.source_shape)), dtype=g.dtype)
            flat[:ctx.count] = g[ctx.mask]
            grad_source = flat.reshape(ctx.source_shape)
        return grad_a, grad_source


def masked_scatter(input, mask, source):
    """``torch.masked_scatter``: a copy of ``input`` whose positions where the bool ``mask``
    (broadcast to ``input``) is True take ``source``'s elements one after another, row by row."""
    if mask.dtype != np.bool_:
        raise RuntimeError(f"masked_scatter_ only supports boolean masks, but got mask with dtype "
                           f"{torch_name(mask.dtype)}")  # (torch's name here: Byte, Long, Float)
    if source.dtype != input.dtype:
        raise RuntimeError(f"masked_scatter: expected self and source to have same dtypes but got "
                           f"{input.dtype} and {source.dtype}")
    from .nn import _broadcast_or_raise
    shape = _broadcast_or_raise("masked_scatter", input.shape, mask.shape)  # (torch: RuntimeError)
    full_mask = xp_of(mask._array).broadcast_to(mask._array, shape)
    if int(full_mask.sum()) > source.numel():
        raise RuntimeError("Number of elements of source < number of ones in mask")
    out = MaskedScatter.apply(input.expand(shape), source, mask=full_mask)
    return name_node(out, "MaskedScatterBackward0", input, source)  # (torch's node: of input, not its broadcast)


_REDUCERS = {"sum": np.add, "mean": np.add, "prod": np.multiply, "amax": np.maximum, "amin": np.minimum}


class ScatterReduce(Function):
    """``torch.scatter_reduce``: ``src[i][j]`` reduced into ``out[i][index[i][j]]`` (``axis=1``) with
    ``reduce`` (sum, prod, mean, amax, amin), ``a``'s own value taking part where
    ``include_self``. The gradients are torch's formulas (FunctionsManual's scatter_reduce_backward):
    prod's leaves out a zero factor where there is exactly one, amax/amin's is split evenly among the
    values equal to the result (``a``'s own counted even without ``include_self``)."""

    @staticmethod
    def forward(ctx, a, src, index, axis, reduce, include_self, stepwise=False):
        xp = xp_of(a)
        where = _full_index(index, axis)
        values = src[tuple(slice(0, n) for n in index.shape)]
        values = values if stepwise else upcast(values)
        hit = xp.zeros(a.shape, dtype=np.int64)
        xp.add.at(hit, where, 1)  # how many values each position receives
        out = _reduced_into(a, where, values, reduce, include_self, hit, stepwise)
        if reduce == "mean":
            out = _rounded_to(a.dtype, out)  # (torch's sum is a 16-bit tensor before it divides: rounded twice)
            count = xp.maximum(hit + include_self, 1)
            out = out // count if out.dtype.kind in "iu" else out / count
        ctx.where, ctx.hit, ctx.reduce, ctx.include_self = where, hit, reduce, include_self
        ctx.src_shape, ctx.block = src.shape, tuple(slice(0, n) for n in index.shape)
        ctx.count = count if reduce == "mean" else None
        if reduce not in ("sum", "mean"):  # (what their gradients read; prod's recorded one reduces again)
            ctx.a, ctx.values, ctx.out = a, values, out
            ctx.index, ctx.axis, ctx.stepwise = index, axis, stepwise
        return out.astype(a.dtype, copy=False)

    @staticmethod
    def backward(ctx, g):
        needs_a, needs_src = ctx.needs_input_grad
        if needs_src:
            _refuse_src_larger_than_index_for(ctx)
        if ctx.reduce in ("sum", "mean"):
            share = g / ctx.count if ctx.reduce == "mean" else g  # each contribution's part of g
            grad_a, grad_src = share, share[ctx.where]
        else:
            with np.errstate(divide="ignore", invalid="ignore"):  # (torch's nan/inf where its formula has them)
                if ctx.reduce == "prod":
                    grad_a, grad_src = _prod_gradients(ctx, upcast(g), lambda v: _rounded_to(g.dtype, v))
                else:
                    grad_a, grad_src = _extreme_gradients(ctx, upcast(g))
        if not ctx.include_self:  # a position's old value is gone where something came
            grad_a = xp_of(g).where(ctx.hit > 0, 0, grad_a)
        grad_a = grad_a.astype(g.dtype, copy=False) if needs_a else None
        return grad_a, (grad_src.astype(g.dtype, copy=False) if needs_src else None)


def _refuse_src_larger_than_index_for(ctx):
    """sum/mean: torch's engine refuses the index-shaped src gradient (_refuse_src_larger_than_index). prod,
    amax, amin: torch's formula compares src with index-shaped values first (``src == value``), its broadcasting
    error where they do not broadcast; where they do (a dim where the index has size 1) it spreads the gradient over
    src elements never scattered, which minilora does not reproduce: refused by name."""
    if ctx.reduce in ("sum", "mean"):
        return _refuse_src_larger_than_index(ctx, ctx.src_shape)
    index_shape = _index_shape(ctx)
    if tuple(ctx.src_shape) != index_shape:
        _broadcast(tuple(ctx.src_shape), index_shape)  # (torch's RuntimeError where they do not broadcast)
        raise NotImplementedError(f"scatter_reduce(reduce='{ctx.reduce}'): the gradient of a src of shape "
                                  f"{tuple(ctx.src_shape)} larger than the index {index_shape}: torch's formula "
                                  "broadcasts it over src elements that were never scattered; minilora computes it "
                                  "only for a src of the index's shape (pass src[:index's sizes])")


def _reduced_into(a, where, values, reduce, include_self, hit, stepwise=False):
    """A copy of ``a`` (contiguous, 16-bit floats in float32 unless ``stepwise``: then each step is rounded
    to a's dtype) with ``values`` reduced into it at ``where``; without ``include_self`` the positions that
    receive something start from the reduction's identity."""
    out = a.astype(a.dtype if stepwise else compute_dtype(a.dtype), order="C")
    if not include_self:
        out[hit > 0] = _identity(reduce, out.dtype)
    _REDUCERS[reduce].at(out, where, values)
    return out


def _rounded_to(dtype, v):
    """A float32 array that stands for one of torch's 16-bit tensors: rounded to ``dtype`` (and widened back);
    for other dtypes ``v`` as it is."""
    return v.astype(dtype).astype(np.float32) if v.dtype == np.float32 and dtype.itemsize == 2 else v


def _prod_gradients(ctx, g, step):
    """torch's prod gradients: a factor's is the product of the others, computed again without a zero
    where a position has exactly one (so that zero's gradient is not 0 / 0). ``step`` rounds what torch's
    formula has as a 16-bit tensor (its products, quotients and the reductions it runs again)."""
    xp, a, src, where = xp_of(g), ctx.a, ctx.values, ctx.where

    def reduced(base, values):  # (the forward's reduction again: index_reduce's step by step)
        return step(_reduced_into(base, where, values, "prod", ctx.include_self, ctx.hit, ctx.stepwise))
    masked_self = xp.where(a == 0, a.dtype.type(1), a)
    grad_a = step(g * reduced(masked_self, src)) / masked_self
    src_zero = src == 0
    zeros_there = xp.zeros(a.shape, dtype=g.dtype)
    xp.add.at(zeros_there, where, src_zero)
    single_zero = src_zero & (zeros_there[where] == 1)
    without_it = reduced(a, xp.where(single_zero, src.dtype.type(1), src))
    grad_src = xp.where(single_zero, step(g * without_it)[where],
                        step(g * step(ctx.out))[where] / xp.where(src_zero, src.dtype.type(1), src))
    return grad_a, grad_src


def _extreme_gradients(ctx, g):
    """torch's amax/amin gradients: ``g`` split evenly among ``a``'s value and the values reduced into a
    position that equal its result."""
    xp, where = xp_of(g), ctx.where
    self_is_result = ctx.a == ctx.out
    src_is_result = ctx.values == ctx.out[where]
    ties = self_is_result.astype(g.dtype)
    xp.add.at(ties, where, src_is_result)
    distributed = g / ties
    return self_is_result * distributed, src_is_result * distributed[where]


def _identity(reduce, dtype):
    """The value that leaves ``reduce`` unchanged, in ``dtype``."""
    if reduce in ("sum", "mean"):
        return 0
    if reduce == "prod":
        return 1
    if is_floating(dtype):  # (bfloat16 too: NumPy's finfo/iinfo know neither it nor bool)
        return -np.inf if reduce == "amax" else np.inf
    if dtype == np.bool_:
        return reduce == "amin"
    limits = np.iinfo(dtype)
    return limits.min if reduce == "amax" else limits.max


def scatter_reduce(input, dim, index, src, reduce, *, include_self=True):
    """``torch.scatter_reduce``: a copy of ``input`` with each ``src[i][j]`` reduced into
    ``out[i][index[i][j]]`` (for ``dim=1``) by ``reduce``: ``'sum'``, ``'prod'``, ``'mean'``
    (integers: floor division), ``'amax'`` or ``'amin'``; with ``include_self=False`` a position's
    old value does not take part where something is scattered to it."""
    if reduce not in _REDUCERS:
        raise RuntimeError(f"reduce argument must be either sum, prod, mean, amax or amin, got {reduce}")
    no_complex_autograd("scatter_reduce", input.dtype, input, src)
    dim = _dim(dim, input.ndim, "scatter_reduce")
    if not index.numel() and index.ndim != max(input.ndim, 1):  # (ATen takes an empty index of any rank)
        index = _empty_index(index, input.ndim)
        src = _empty_src(src, index)
    if not isinstance(src, Tensor) or src.dtype != input.dtype:
        raise RuntimeError("scatter(): Expected self.dtype to be equal to src.dtype")  # (ATen's words for all three)
    _check_index(input, dim, index, "scatter_reduce")
    _check_scatter_src(input, dim, index, src)
    if reduce == "mean" and input.dtype == np.bool_:  # (torch has no bool kernel for the division)
        raise NotImplementedError('"scatter_gather_tensor_cpu_reduce_mean" not implemented for \'Bool\'')
    if reduce in ("amax", "amin"):  # (no order of complex numbers: torch has no such kernel)
        dtypes.refuse_complex(f"scatter_gather_tensor_cpu_reduce_{reduce}", input)
    if input.ndim == 0:
        out = ScatterReduce.apply(input.reshape(1), src.reshape(1), index=index._array.reshape(1), axis=0,
                                  reduce=reduce, include_self=bool(include_self)).reshape(())
    else:
        out = ScatterReduce.apply(input, src, index=index._array, axis=dim, reduce=reduce,
                                  include_self=bool(include_self))
    return saves_as_torch(out, input, index, src, out)  # torch keeps all of them, whatever the reduction


_INDEX_REDUCTIONS = ("prod", "mean", "amax", "amin")


def index_reduce(input, dim, index, source, reduce, *, include_self=True):
    """``torch.index_reduce``: a copy of ``input`` whose slice ``index[i]`` along ``dim`` has ``source``'s
    slice ``i`` reduced into it by ``reduce`` (``'prod'``, ``'mean'``, ``'amax'``, ``'amin'``); it is
    ``scatter_reduce`` with ``index`` spread over ``source``'s shape, and takes its gradients (torch's
    index_reduce_backward is the same formula). torch's CPU kernel reduces one slice after another in the
    tensor's dtype, so a 16-bit result is rounded at each step (scatter_reduce's once, from float32).
    ``x.index_reduce_(...)`` is the in-place form."""
    if reduce not in _INDEX_REDUCTIONS:
        raise RuntimeError(f"index_reduce(): Expected reduce to be one of prod, mean, amax or amin but got {reduce}.")
    no_complex_autograd("index_reduce", input.dtype, input, source)
    if reduce in ("amax", "amin"):  # (torch reduces by its maximum / minimum kernels: none for complex)
        dtypes.refuse_complex({"amax": "maximum_cpu", "amin": "minimum_cpu"}[reduce], input)
    dim = _dim(dim, input.ndim, "index_reduce_")
    if not isinstance(index, Tensor) or index.dtype not in (np.int32, np.int64):
        raise RuntimeError("index_reduce_(): Expected dtype int32/int64 for index")
    if index.ndim > 1:
        raise IndexError(f"index_reduce_(): Index is supposed to be a vector, but got dim: {index.ndim} with type: "
                         f"{torch_name(index.dtype)} and size: {list(index.shape)}")
    if source.dtype != input.dtype:
        raise RuntimeError(f"index_reduce_(): self ({torch_name(input.dtype)}) and source "
                           f"({torch_name(source.dtype)}) must have the same scalar type")
    if input.dtype == np.bool_:
        raise NotImplementedError('"index_func_" not implemented for \'Bool\'')
    self_shape, source_shape = tuple(input.shape) or (1,), tuple(source.shape) or (1,)
    positions = index._array.reshape(-1)
    if source_shape[dim] != positions.size:
        raise RuntimeError(f"index_reduce_(): Number of indices ({positions.size}) should be equal to "
                           f"source.size(dim): ({source_shape[dim]}), for dim: {dim}")
    if len(self_shape) != len(source_shape) or any(
            n != m for d, (n, m) in enumerate(zip(self_shape, source_shape)) if d != dim):
        raise RuntimeError(f"source tensor shape must match self tensor shape, excluding the specified "
                           f"dimension. Got self.shape = {list(input.shape)} source.shape = {list(source.shape)}")
    if first_out_of_bounds(positions, 0, self_shape[dim]) is not None:
        raise IndexError("index out of range in self")
    along = [1] * len(source_shape)
    along[dim] = positions.size
    spread = xp_of(positions).broadcast_to(positions.astype(np.int64).reshape(along), source_shape)
    if input.ndim == 0:
        reduced = ScatterReduce.apply(input.reshape(1), source.reshape(1), index=spread, axis=0, reduce=reduce,
                                      include_self=bool(include_self)).reshape(())
        return name_node(reduced, "IndexReduceBackward0", input, source, graph=(input, source))
    out = ScatterReduce.apply(input, source, index=spread, axis=dim, reduce=reduce, include_self=bool(include_self),
                              stepwise=input.dtype.itemsize == 2)
    return name_node(out, "IndexReduceBackward0", input, source)


def _long_index(fn, index):
    """torch's RuntimeError for an index of ``fn`` that is not an int64 tensor (NumPy would take int32s and
    read bools as a mask)."""
    if not isinstance(index, Tensor) or index.dtype != np.int64:
        got = torch_name(index.dtype) if isinstance(index, Tensor) else type(index).__name__
        raise RuntimeError(f"{fn}(): Expected a long tensor for index, but got {got}")


def take(input, index):
    """``torch.take``: the elements of the flattened ``input`` at ``index`` (negative counts from the
    end), in ``index``'s shape."""
    _long_index("take", index)
    flat, positions = input.reshape(-1), index._array
    n = flat.shape[0]
    if positions.size and not holds_no_values(positions) and (int(positions.min()) < -n or int(positions.max()) >= n):
        bad = int(positions.max()) if int(positions.max()) >= n else int(positions.min())
        raise IndexError(f"out of range: tried to access index {bad} on a tensor of {n} elements.")
    return name_node(flat[index], "TakeBackward0", input, graph=(input,))


def put(input, index, source, accumulate=False):
    """``torch.put``: a copy of ``input`` with the flattened positions ``index`` set to (or, with
    ``accumulate``, increased by) ``source``'s elements. ``x.put_(...)`` is the in-place form."""
    from .shape import index_put
    _long_index("put_", index)
    if source.dtype != input.dtype:
        raise RuntimeError(f"put_(): self and source expected to have the same dtype, but got "
                           f"self.dtype = {input.dtype} and source.dtype = {source.dtype}")
    if index.numel() != source.numel():
        raise IndexError(f"put_(): Expected source and index to have the same number of elements, but "
                         f"got source.numel() = {source.numel()}, index.numel() = {index.numel()}")
    take(input, index)  # (the same bounds check)

    def put_into(x):
        return index_put(x.reshape(-1), (index.reshape(-1),), source.reshape(-1), accumulate).reshape(x.shape)
    result = gradient_passes_to(input, put_into) if accumulate else put_into(input)  # (accumulate: self: grad)
    return saves_as_torch(name_node(result, "PutBackward0", input, source), index, source)  # (torch's saved)


def take_along_dim(input, indices, dim=None):
    """``torch.take_along_dim``: ``gather`` where ``input`` and ``indices`` broadcast against each
    other away from ``dim``; with ``dim=None`` both are flattened first."""
    if dim is None:
        return gather(input.reshape(-1), 0, indices.reshape(-1))
    if input.ndim != indices.ndim:
        raise RuntimeError(f"take_along_dim(): input and indices should have the same number of "
                           f"dimensions, but got {input.ndim} and {indices.ndim} dimensions")
    dim = _dim(dim, input.ndim, "take_along_dim")
    try:
        others = np.broadcast_shapes(*(t.shape[:dim] + (1,) + t.shape[dim + 1:] for t in (input, indices)))
    except ValueError:
        raise RuntimeError(f"take_along_dim(): input {tuple(input.shape)} and indices "
                           f"{tuple(indices.shape)} do not broadcast away from dim {dim}") from None
    def grown(t):
        return t.expand(others[:dim] + (t.shape[dim],) + others[dim + 1:])
    if indices.numel() and not indices.is_meta and int(indices.min()) < 0:  # torch's counts -1 from the end
        # (a meta index has no values to count from: torch's meta kernel gathers as they are)
        indices = indices + (indices < 0).to(indices.dtype) * input.shape[dim]  # (gather would refuse it)
    return gather(grown(input), dim, grown(indices))


def masked_select(input, mask):
    """``torch.masked_select``: the elements where the bool ``mask`` (broadcast with ``input``) is
    True, as a 1-D tensor in row-major order."""
    if mask.dtype != np.bool_:
        raise RuntimeError(f"masked_select: expected BoolTensor for mask, got {mask.dtype}")
    no_meta_kernel("masked_select", input, mask)
    from .nn import _broadcast_or_raise
    shape = _broadcast_or_raise("masked_select", mask.shape, input.shape)  # (torch's: the mask is its tensor a)
    selected = saves_as_torch(input.expand(shape)[mask.expand(shape)._array], input, mask)  # (torch keeps both)
    return name_node(selected, "MaskedSelectBackward0", input, graph=(input,))


def count_nonzero(input, dim=None):
    """``torch.count_nonzero``: the number of non-zero elements (over ``dim``), int64."""
    return (input != 0).sum(dim)


# ---- cumprod -------------------------------------------------------------------------------------
@quiet_float_errors
@backward_in_float32
class CumProd(Function):
    """Running products along ``axis``. Input ``k``'s gradient is ``sum_{j>=k} g_j * prod_{i<=j,
    i!=k} a_i``: without a zero in the input, torch's ``reversed_cumsum(out * g) / a`` (its bits: the running
    sum in float64, as its cumsum); with one, computed as it reads (products *without* ``a_k``, not ``out_j /
    a_k``), so a zero gives torch's finite gradient rather than 0/0 (float32/float64 on the CPU: torch's own masked
    formula, ``_cumprod_backward_with_zeros``; elsewhere O(n^2) along the axis). 16-bit floats: torch's formula is
    16-bit tensor ops, each rounding its result, and so are NumPy's ufuncs on 16-bit arrays."""
    torch_layout = "contiguous"  # (torch's CPU kernel writes a contiguous result: Function.torch_layout)

    @staticmethod
    def forward(ctx, a, axis):
        ctx.a, ctx.axis = a, axis
        ctx.out = cumulative(xp_of(a).cumprod, a, axis)
        return ctx.out

    @staticmethod
    def backward(ctx, g):
        xp, a, out = xp_of(g), ctx.a, ctx.out
        if a.size <= 1 or a.shape[ctx.axis] == 1:  # (torch's cumprod_backward hands g on as it is)
            return g
        half = getattr(ctx, "step_dtype", None)
        if half is not None:  # torch's formula is 16-bit tensor ops, each rounding its result: so are NumPy's
            a, g, out = (v.astype(half) for v in (a, g, out))  # ufuncs on 16-bit arrays (cumulative: a float32 sum)
        if not (a == 0).any():  # torch's cumprod_backward without a zero: reversed_cumsum(out * g) / a
            w = out * g
            return xp.flip(cumulative(xp.cumsum, xp.flip(w, axis=ctx.axis), ctx.axis), axis=ctx.axis) / a
        if type(g) is np.ndarray and is_floating(g.dtype) and g.dtype == a.dtype:
            return _cumprod_backward_with_zeros(a, g, out, ctx.axis)
        a, g = xp.moveaxis(a, ctx.axis, -1), xp.moveaxis(g, ctx.axis, -1)
        n = a.shape[-1]
        before = xp.cumprod(xp.concatenate([xp.ones_like(a[..., :1]), a[..., :-1]], -1), -1)
        grad = xp.empty_like(g)
        for k in range(n):  # products of a[k+1..j] for every j >= k, then the weighted sum
            after = xp.cumprod(xp.concatenate([xp.ones_like(a[..., :1]), a[..., k + 1:]], -1), -1)
            grad[..., k] = before[..., k] * (g[..., k:] * after).sum(-1)
        return xp.moveaxis(grad, -1, ctx.axis)


def _cumprod_backward_with_zeros(a, g, out, axis):
    """torch's cumprod_backward where the input has zeros (its O(n) masked formula, as autograd runs it): before the
    first zero ``reversed_cumsum(out * g) / a``; at the first zero ``sum((cumprod of a between the first and second
    zeros, 1 elsewhere) * g there) * out[z1 - 1]`` (1 when z1 is 0); 0 from there on."""
    real = a.dtype.type
    count = np.cumsum(a == 0, axis=axis)
    grad = np.zeros_like(a)
    before = count == 0
    with np.errstate(all="ignore"):
        part = np.flip(cumulative(np.cumsum, np.flip(np.where(before, out * g, real(0)), axis), axis), axis) / a
    grad[before] = part[before]
    between = count == 1
    first = np.expand_dims(np.argmax(between, axis=axis), axis)  # (torch's max(dim).indices of the mask)
    first_zero = np.zeros_like(between)
    np.put_along_axis(first_zero, first, True, axis=axis)
    first_zero &= between
    after = between & ~first_zero
    terms = cumulative(np.cumprod, np.where(after, a, real(1)), axis) * np.where(count != 1, real(0), g)
    total = sum_like_torch(np.ascontiguousarray(terms), (axis,))
    previous = np.where(first == 0, real(1), np.take_along_axis(out, np.maximum(first - 1, 0), axis=axis))
    grad[first_zero] = np.broadcast_to(total * previous, a.shape)[first_zero]
    return grad


@_amp.autocasts
def cumprod(input, dim, *, dtype=None):
    """``torch.cumprod``: running products along ``dim``; integer and bool inputs as int64."""
    result = _running(CumProd, "cumprod", input, dim, dtype)
    return saves_as_torch(result, input, result)  # torch keeps both (CumProd needs the input only)


# ---- unique, bincount, repeat_interleave, median -------------------------------------------------
def unique_dim(input, dim):
    """unique's and unique_consecutive's ``dim`` as torch's unique_dim checks it: no 0-d tensor (torch's words),
    and no empty dimension other than the one named."""
    dim = int_argument("unique_dim", "dim", dim)
    if input.ndim == 0:
        raise IndexError(f"Dimension specified as {dim} but tensor has no dimensions")
    dim = _dim(dim, input.ndim, "unique")
    zero_sized = input.shape.count(0)
    if input.shape[dim] == 0 and zero_sized > 1:
        raise RuntimeError("Number of zero sized dimensions is more than one, so unique cannot be applied ")
    if input.shape[dim] != 0 and zero_sized:
        raise RuntimeError("There are 0 sized dimensions, and they aren't selected, so unique cannot be applied")
    return dim


def _empty_unique(input, return_inverse, return_counts, name):
    """unique along an empty ``dim``: torch's empty result of the input's shape, empty inverse and counts."""
    out = _NoDerivative.apply(input, values=input.device.xp.empty(input.shape, input.dtype), name=name,
                              error=NotImplementedError)
    extras = [input.new_zeros((0,), dtype=dtypes.int64) for wanted in (return_inverse, return_counts) if wanted]
    return (out, *extras) if extras else out


def unique(input, sorted=True, return_inverse=False, return_counts=False, dim=None):  # noqa: A002
    """``torch.unique``: the distinct elements (``dim``: distinct slices along ``dim``), sorted, as
    torch's CPU kernel returns them also for ``sorted=False``; with ``return_inverse`` the position
    of each input element in that list, with ``return_counts`` how often each occurs (int64)."""
    _flags("_unique2", sorted=sorted, return_inverse=return_inverse, return_counts=return_counts)
    if input.dtype.kind == "c":  # (torch sorts to find them; complex numbers have no order)
        raise NotImplementedError(f'"unique" not implemented for \'{torch_name(input.dtype)}\'')
    no_forward_formula("_unique2" if dim is None else "unique_dim", input)
    no_meta_kernel("_unique2" if dim is None else "unique_dim", input)
    array = input.detach().cpu().numpy()  # (on the host: a sort; the result's size depends on the values)
    if dim is None:
        values, inverse, counts = _unique_elements(array.reshape(-1))
        inverse = inverse.reshape(input.shape)
    else:
        dim = unique_dim(input, dim)
        if input.shape[dim] == 0:
            return _empty_unique(input, return_inverse, return_counts, "unique_dim")
        values, inverse, counts = np.unique(array, return_inverse=True, return_counts=True, axis=dim)
        inverse = inverse.reshape(-1)
    out = _NoDerivative.apply(input, values=input.device.xp.asarray(values), name="_unique2" if dim is None else
                              "unique_dim", error=NotImplementedError)
    extras = [Tensor(part.astype(np.int64), dtype=np.int64, device=input.device)
              for part, wanted in ((inverse, return_inverse), (counts, return_counts)) if wanted]
    return (out, *extras) if extras else out


def _unique_elements(flat):
    """``(values, inverse, counts)`` of a 1-D array as torch's unique: every NaN a value of its own, and the NaNs
    numbered in the order torch's unstable sort leaves them (``std_sort.sort_order``: NumPy's sort numbered a
    16-bit tensor's NaNs in another order)."""
    if not (is_floating(flat.dtype) and np.isnan(flat).any()):
        return np.unique(flat, return_inverse=True, return_counts=True)
    order = std_sort.sort_order(flat.reshape(1, -1), False)[0]
    ordered = flat[order]
    starts = np.ones(flat.size, bool)
    starts[1:] = ordered[1:] != ordered[:-1]  # (NaN != NaN: each NaN starts a value)
    inverse = np.empty(flat.size, np.int64)
    inverse[order] = np.cumsum(starts) - 1
    first = np.flatnonzero(starts)
    return ordered[first], inverse, np.diff(np.append(first, flat.size))


def bincount(input, weights=None, minlength=0):
    """``torch.bincount``: how often each value 0, 1, ... occurs in the 1-D non-negative integer
    ``input`` (with ``weights``: the sum of their weights -- float32 for float32 weights, added one by
    one in float32 as torch's CPU kernel does; float64 for any other weights, bfloat16 included, as torch)."""
    if input.dtype.kind not in "iu":  # (a bool input too: torch has no kernel, where NumPy counts False and True)
        raise NotImplementedError(f'"bincount_cpu" not implemented for \'{dtypes.torch_name(input.dtype)}\'')
    no_meta_kernel("bincount", input, weights)
    values = input.detach().cpu().numpy()
    if input.ndim != 1 or (input.numel() and int(values.min()) < 0):
        raise RuntimeError("bincount only supports 1-d non-negative integral inputs.")
    if minlength < 0:
        raise RuntimeError("bincount: minlength should be >= 0")
    if weights is not None and tuple(weights.shape) != tuple(input.shape):
        raise RuntimeError("bincount: weights should be 1-d and have the same length as input")
    no_forward_formula("aten::bincount", weights)
    if weights is None or not values.size:  # (empty input: int64 zeros even with weights, as torch)
        counts = np.bincount(values, minlength=minlength).astype(np.int64)
        return Tensor(counts, dtype=np.int64, device=input.device)
    if weights.dtype == np.float32:
        sums = np.zeros(max(minlength, int(values.max()) + 1), np.float32)
        np.add.at(sums, values, weights.detach().cpu().numpy())  # (in order, in float32: np.bincount
    else:  # sums in float64)
        host_weights = weights.detach().cpu().numpy().astype(np.float64)
        sums = np.bincount(values, weights=host_weights, minlength=minlength)
    return _NoDerivative.apply(weights, values=weights.device.xp.asarray(sums), name="bincount")


def repeat_interleave(input, repeats=None, dim=None, *, output_size=None):
    """``torch.repeat_interleave``: each element (``dim``: each slice along ``dim``) repeated
    ``repeats`` times in place (``[1, 2] -> [1, 1, 2, 2]``), unlike ``repeat``, which tiles.
    ``repeats`` is an int or a tensor with one count per element; with ``dim=None`` the input is
    flattened first. ``repeat_interleave(counts)`` alone gives ``0`` counts[0] times, ``1`` ...
    """
    if repeats is None:  # torch.repeat_interleave(repeats): the indices, repeated
        counts = input
        input, dim = Tensor(np.arange(counts.numel()), dtype=np.int64, device=counts.device), 0
    else:
        counts = repeats
        if not isinstance(repeats, (Tensor, int, np.integer)):  # (a list or tuple was read as counts: torch has
            # a Tensor overload and an int one only)
            raise TypeError(f"repeat_interleave() received an invalid combination of arguments - got repeats of type "
                            f"{type(repeats).__name__}, but expected a Tensor or an int")
    if dim is None:
        input, dim = input.reshape(-1), 0
    elif input.ndim == 0:  # (torch: a 0-d tensor has no dim to repeat along; dim=None flattens it)
        raise IndexError(f"repeat_interleave(): Dimension out of range (expected to be in range of "
                         f"[-1, 0], but got {dim})")
    dim = _dim(dim, input.ndim, "repeat_interleave")
    size = input.shape[dim] if input.ndim else 1
    if isinstance(counts, Tensor) and counts.is_meta:  # (no counts to read: torch takes the length it is told)
        if output_size is None:
            raise RuntimeError("cannot repeat_interleave a meta tensor without output_size")
        return index_select(input, dim, Tensor(np.zeros(output_size, np.int64), dtype=np.int64, device=counts.device))
    counts = counts.detach().cpu().numpy() if isinstance(counts, Tensor) else np.asarray(counts)
    if counts.dtype.kind == "f":
        raise NotImplementedError(f'"repeat_interleave_cpu" not implemented for \'{counts.dtype}\'')
    if counts.dtype.kind not in "iu" or counts.ndim > 1 or counts.size not in (1, size):
        words = (f"repeats must have the same size as input along dim, but got repeats.size(0) = {counts.size} and "
                 f"input.size(0) = {size}" if counts.ndim == 1 and counts.dtype.kind in "iu"
                 else "repeats must be 0-dim or 1-dim tensor")
        raise with_note(RuntimeError(words), f"repeat_interleave: repeats must be an int or a 1-D integer tensor of "
                                             f"{size} counts (or one), got shape {tuple(counts.shape)}")
    if counts.size and int(counts.min()) < 0:
        raise RuntimeError("repeat_interleave: repeats can not be negative")
    positions = np.repeat(np.arange(size), np.broadcast_to(counts.reshape(-1), (size,)))
    if output_size is not None and output_size != len(positions):
        raise RuntimeError(f"repeat_interleave: output_size={output_size}, but the repeats add up "
                           f"to {len(positions)}")
    if isinstance(repeats, (int, np.integer)) and not isinstance(repeats, bool):
        return _repeated_by_expanding(input, dim, int(repeats))
    index = Tensor(positions.astype(np.int64), dtype=np.int64, device=input.device)
    return index_select(input, dim, index)


def _repeated_by_expanding(input, dim, repeats):
    """torch's repeat_interleave by a Python int: ``input.unsqueeze(dim + 1).expand(..., repeats, ...)`` copied and
    flattened into ``dim`` -- its gradient the expand's, a sum over the copies in torch's sum order (a tensor of
    counts goes through index_select, whose gradient adds the copies one by one)."""
    shape = tuple(input.shape)
    expanded = input.unsqueeze(dim + 1).expand(*shape[:dim + 1], repeats, *shape[dim + 1:])
    return expanded.contiguous().reshape(*shape[:dim], shape[dim] * repeats, *shape[dim + 1:])


def _refuse_bool(name, dtype):
    """torch's CPU median and kthvalue have no bool kernel (NumPy would sort False before True)."""
    if dtype == np.bool_:
        raise NotImplementedError(f'"{name}_cpu" not implemented for \'Bool\'')


class MedianAll(Function):
    """The lower median of all elements (torch's: the smaller of the two middle ones for an even
    count; NaN if any element is NaN). Ties share the gradient equally, as ``max()`` does."""

    @staticmethod
    def forward(ctx, a):
        xp = xp_of(a)
        if a.size == 0:  # torch: NaN, cast to the dtype as C casts it (int64: its smallest value)
            ctx.picked = xp.zeros(a.shape, dtype=bool)
            with np.errstate(invalid="ignore"):
                return xp.asarray(np.nan).astype(a.dtype)
        _refuse_bool("median", a.dtype)
        flat = xp.sort(_sortable(a.reshape(-1))).astype(a.dtype, copy=False)  # NaN sorts last
        nan = is_floating(a.dtype) and bool(xp.isnan(flat[-1]))
        out = flat[-1] if nan else flat[(flat.size - 1) // 2]
        ctx.picked = xp.isnan(a) if nan else a == out
        return xp.asarray(out)

    @staticmethod
    def backward(ctx, g):
        with np.errstate(divide="ignore", invalid="ignore"):  # (nothing picked: an empty input)
            # torch's evenly_distribute_backward: zeros filled where picked (+0 elsewhere, whatever g is)
            return xp_of(g).where(ctx.picked, g / ctx.picked.sum(), g.dtype.type(0))


def median(input, dim=NO_DIM, keepdim=False):
    """``torch.median``: without ``dim`` the lower median of all elements; with ``dim`` a named tuple
    ``(values, indices)`` along it, each value's gradient to the returned index, as torch."""
    _flags("median", keepdim=keepdim)
    dim = dim_given("median", dim)
    if dim is None:
        result = MedianAll.apply(input)
        return saves_as_torch(result, input, result)  # (MedianAll keeps the picked mask)
    dim_ = _dim(dim, input.ndim, "median")
    if input.ndim == 0:
        return _picked_of_0d("median", input)
    if input.shape[dim_] == 0:
        raise IndexError(f"median(): Expected reduction dim {dim} to have non-zero size.")
    _refuse_bool("median", input.dtype)
    dtypes.refuse_complex("median_out", input)  # (torch's kernel along a dim)
    xp = xp_of(input._array)
    if input.is_meta:  # (no values: the middle's place, unwritten)
        middle = META.xp.zeros(input.shape[:dim_] + (1,) + input.shape[dim_ + 1:], np.int64)
    else:
        middle = xp.take(_sort_order(input, dim_)._array, xp.asarray([(input.shape[dim_] - 1) // 2]), axis=dim_)
    if is_floating(input.dtype) and not input.is_meta:  # a row holding NaN has median NaN, at its first NaN (torch)
        nan = xp.isnan(input._array)
        middle = xp.where(nan.any(axis=dim_, keepdims=True),
                          nan.argmax(axis=dim_, keepdims=True), middle)
    indices = Tensor(middle.astype(np.int64), dtype=np.int64, device=input.device)
    values = _gather(input, dim_, indices)
    if not keepdim:
        values, indices = values.squeeze(dim_), indices.squeeze(dim_)
    return _picked("median", input, values, indices)


# torch's node for the values of the (values, indices) ops minilora computes by a gather (and a squeeze)
_PICKED_NODES = {"median": "MedianBackward1", "mode": "ModeBackward0", "kthvalue": "KthvalueBackward0",
                 "cummax": "CummaxBackward0", "cummin": "CumminBackward0"}


def _picked_of_0d(name, input):
    """A selection along a dim of a 0-d tensor: the value itself (a RecordedCopy: torch scatters its gradient
    into zeros) and index 0."""
    return _picked(name, input, RecordedCopy.apply(input), input.new_zeros((), dtype=dtypes.int64))


def _picked(name, input, values, indices):
    """``(values, indices)`` as torch's named tuple, the values' node shown as torch's one node of ``input``."""
    return return_type(name)(name_node(values, _PICKED_NODES[name], input, graph=(input,)), indices)


def mode(input, dim=-1, keepdim=False):
    """``torch.mode``: the most frequent value along ``dim`` and an index of it, as a named tuple.
    As torch's kernel: among equally frequent values the smallest wins, and the index is the last of that
    value's run in ``std::sort``'s (unstable) order, a NaN a run of its own (``std_sort.mode_index``); the
    gradient goes to that index. Counted on the host, row by row."""
    _flags("mode", keepdim=keepdim)
    dim_ = _dim(dim, input.ndim, "mode")
    if input.dtype.kind == "c":  # (complex numbers have no order to break ties by)
        raise NotImplementedError(f'"mode_cpu" not implemented for \'{torch_name(input.dtype)}\'')
    if input.ndim == 0:
        return _picked_of_0d("mode", input)
    if input.shape[dim_] == 0:
        raise IndexError(f"mode(): Expected reduction dim {dim_} to have non-zero size.")
    indices = _picked_index(input, dim_, std_sort.mode_index)
    values = _gather(input, dim_, indices)
    if not keepdim:
        values, indices = values.squeeze(dim_), indices.squeeze(dim_)
    return _picked("mode", input, values, indices)


def _picked_index(input, dim_, pick):
    """The index ``pick`` (a ``std_sort`` function: (rows, n) keys -> (rows,) indices) chooses along ``dim_``, as
    an int64 Tensor keeping ``dim_`` (size 1): torch's CPU algorithms, run on the host."""
    if input.is_meta:  # (no values to pick from: zeros nobody writes, of the index's shape, as torch's meta kernel)
        return input.new_zeros(input.shape[:dim_] + (1,) + input.shape[dim_ + 1:], dtype=dtypes.int64)
    index = _along_last(lambda rows: pick(rows)[:, None], input.detach().cpu().numpy(), dim_)
    return Tensor(np.ascontiguousarray(index), dtype=np.int64, device=input.device)


# ---- kthvalue, cummax, cummin ----------------------------------------------------------------------
def kthvalue(input, k, dim=-1, keepdim=False):
    """``torch.kthvalue``: the ``k``-th smallest element along ``dim`` (``k`` from 1) and its index,
    as a named tuple; the gradient goes to that index. NaN counts as the largest value. Among equal values the
    index is the one ATen's quickselect leaves at position k (``std_sort.kthvalue_index``), as torch's CPU."""
    _flags("kthvalue", keepdim=keepdim)
    int_argument("kthvalue", "k", k)  # (a float k was compared, then truncated)
    dim_ = _dim(dim, input.ndim, "kthvalue")
    size = input.shape[dim_] if input.ndim else 1
    if size == 0:
        raise IndexError(f"kthvalue(): Expected reduction dim {dim_} to have non-zero size.")
    _refuse_bool("kthvalue", input.dtype)
    dtypes.refuse_complex("kthvalue_cpu", input)  # (NumPy would order complex numbers lexicographically)
    if not 1 <= k <= size:
        raise RuntimeError(f"kthvalue(): selected number k out of range for dimension {dim_}")
    if input.ndim == 0:
        return _picked_of_0d("kthvalue", input)
    indices = _picked_index(input, dim_, lambda rows: std_sort.kthvalue_index(rows, k))
    values = _gather(input, dim_, indices)
    if not keepdim:
        values, indices = values.squeeze(dim_), indices.squeeze(dim_)
    return _picked("kthvalue", input, values, indices)


def _accumulate(xp, ufunc, a):
    """``ufunc.accumulate(a, axis=-1)`` for a binary ``maximum``/``minimum``. CuPy 13 has
    ``accumulate`` for add and multiply only, so there it is a log-step scan: after the pass with
    shift s, each element holds the extreme of the 2s elements that end at it."""
    if xp is np:
        return ufunc.accumulate(a, axis=-1)
    out, shift = a.copy(), 1
    while shift < a.shape[-1]:
        out[..., shift:] = ufunc(out[..., shift:], out[..., :-shift])  # right side is a new array
        shift *= 2
    return out


def _running_dim(name, input, dim):
    """cummax's/cummin's dim as torch checks it: a 0-d tensor takes -1 or 0 (its own words), an empty tensor any
    int (torch's cummax_out skips the wrap when there is nothing to scan), any other the usual range."""
    if input.ndim == 0:
        dim = int_argument(name, "dim", dim)
        if dim not in (-1, 0):
            raise IndexError(f"{name}(): Expected reduction dim -1 or 0 for scalar but got {dim}")
        return 0
    if input.numel() == 0:
        return int_argument(name, "dim", dim)
    return _dim(dim, input.ndim, name)


def _running_extreme(name, input, dim, smallest):
    """``cummax``/``cummin``: the running extreme along ``dim`` and, as torch, the index of its
    *latest* occurrence (a tie moves the index on; a NaN is kept from where it first appears)."""
    dim_ = _running_dim(name, input, dim)
    if input.dtype.kind == "c":  # (complex numbers have no order; NumPy's is lexicographic)
        raise NotImplementedError(f'"{name}_cpu" not implemented for \'{torch_name(input.dtype)}\'')
    if input.ndim == 0:
        return _picked_of_0d(name, input)
    if input.numel() == 0:  # (torch's cummax_out returns its empty results before it reads dim)
        return _picked(name, input, RecordedCopy.apply(input), input.new_zeros(input.shape, dtype=dtypes.int64))
    if input.is_meta:  # (no values: the latest places' shape, unwritten)
        indices = Tensor(META.xp.zeros(input.shape, np.int64), dtype=np.int64, device=input.device)
        return _picked(name, input, saves_as_torch(_gather(input, dim_, indices), input, indices), indices)
    xp = xp_of(input._array)
    a = xp.moveaxis(input._array, dim_, -1)
    running = _accumulate(xp, xp.minimum if smallest else xp.maximum, a)  # NaN propagates
    steps = xp.arange(a.shape[-1])
    takes_over = a == running
    if is_floating(a.dtype):
        takes_over |= xp.isnan(a)
    latest = _accumulate(xp, xp.maximum, xp.where(takes_over, steps, 0))
    indices = Tensor(xp.asarray(xp.moveaxis(latest, -1, dim_), dtype=np.int64, order="C"),  # (as torch's)
                     dtype=np.int64, device=input.device)
    return _picked(name, input, saves_as_torch(_gather(input, dim_, indices), input, indices), indices)  # torch: input


def cummax(input, dim):
    """``torch.cummax``: ``(values, indices)`` of the running maximum along ``dim``."""
    return _running_extreme("cummax", input, dim, smallest=False)


def cummin(input, dim):
    """``torch.cummin``: ``(values, indices)`` of the running minimum along ``dim``."""
    return _running_extreme("cummin", input, dim, smallest=True)


# ---- searchsorted, bucketize ---------------------------------------------------------------------
def _side(right, side):
    if side is not None and side not in ("left", "right"):
        raise RuntimeError(f"torch.searchsorted(): side can only be 'left' or 'right' but got {side}")
    if side is not None and right and side == "left":
        raise RuntimeError("torch.searchsorted(): side and right can't be set to opposites, got "
                           "side of left while right was True")
    return side or ("right" if right else "left")


def searchsorted(sorted_sequence, input, *, out_int32=False, right=False, side=None, sorter=None):  # noqa: A002
    """``torch.searchsorted``: where each of ``values`` would be inserted into the sorted
    innermost dimension of ``sorted_sequence`` to keep it sorted (``side='right'`` / ``right=True``:
    after equal values). An N-D sequence searches row by row (its leading dims match ``values``').
    ``sorter`` gives the order that sorts an unsorted sequence. An index: no gradient.
    (The values' keyword is ``input=``, as torch's.)"""
    values = input
    side = _side(right, side)
    if sorted_sequence.dtype == np.bool_ and isinstance(values, Tensor) and values.dtype == np.bool_ \
            and values.numel():  # (NumPy would search bools; torch has no kernel for them)
        raise NotImplementedError('"searchsorted_out_cpu" not implemented for \'Bool\'')
    if isinstance(values, Tensor):  # (torch's kernel has no complex version: NumPy's would order lexicographically)
        dtypes.refuse_complex("searchsorted_out_cpu", np.result_type(sorted_sequence.dtype, values.dtype))
    dtypes.refuse_complex("searchsorted_out_cpu", sorted_sequence)
    dtype = np.dtype(np.int32 if out_int32 else np.int64)
    if sorted_sequence.is_meta and (not isinstance(values, Tensor) or values.is_meta):  # (shapes, not a search)
        _check_searched_rows(sorted_sequence.shape, None if isinstance(values, Tensor) else (), values)
        return Tensor(META.xp.zeros(np.shape(values), dtype), dtype=dtype, device=sorted_sequence.device)
    common = dtypes.result_type(sorted_sequence, values)  # (torch compares in the two's common dtype)
    sequence = sorted_sequence.detach().cpu().numpy().astype(common, copy=False)
    if sorter is not None:
        sequence = np.take_along_axis(sequence, sorter.detach().cpu().numpy(), axis=-1)
    scalar = not isinstance(values, Tensor)
    values = (np.asarray(values) if scalar else values.detach().cpu().numpy()).astype(common, copy=False)
    _check_searched_rows(sequence.shape, () if scalar else None, values)
    if sequence.ndim == 1:
        found = _binary_search(sequence.reshape(1, -1), values.reshape(1, -1), side).reshape(values.shape)
    else:
        leading = int(np.prod(sequence.shape[:-1]))  # (not -1: NumPy cannot infer it from 0 elements)
        rows, wanted = sequence.reshape(leading, sequence.shape[-1]), values.reshape(leading, values.shape[-1])
        found = _binary_search(rows, wanted, side).reshape(values.shape)
    return Tensor(np.asarray(found, dtype=dtype), dtype=dtype, device=sorted_sequence.device)


def _binary_search(rows, values, side):
    """Each row's insertion points of its values, (rows, n) and (rows, m) -> (rows, m), as torch's CPU kernel
    searches: halve [start, end) and go right unless ``row[mid] >= v`` (``side='right'``: ``row[mid] > v``). A NaN
    compares false either way, so a NaN value lands at the end and a NaN in the row sends every value right of
    it; NumPy's searchsorted orders NaN last instead (a NaN value before the row's NaNs: off by their count)."""
    n = rows.shape[-1]
    start = np.zeros(values.shape, np.int64)
    end = np.full(values.shape, n, np.int64)
    searching = start < end
    while searching.any():
        middle = start + ((end - start) >> 1)
        at_middle = np.take_along_axis(rows, np.minimum(middle, n - 1), axis=-1)
        with np.errstate(invalid="ignore"):
            left_of = at_middle > values if side == "right" else at_middle >= values
        start = np.where(searching & ~left_of, middle + 1, start)
        end = np.where(searching & left_of, middle, end)
        searching = start < end
    return start


def _check_searched_rows(sequence_shape, scalar, values):
    """An N-D sequence is searched row by row: the values' leading dimensions are its (a number has none)."""
    if len(sequence_shape) > 1 and (scalar is not None or tuple(sequence_shape[:-1]) != tuple(values.shape[:-1])):
        raise RuntimeError(f"torch.searchsorted(): boundaries tensor should be 1 dimension or the "
                           f"first N-1 dimensions of boundaries tensor and input value tensor must "
                           f"match, but we got boundaries tensor {list(sequence_shape)} and input "
                           f"value tensor {list(np.shape(values))}")


def bucketize(input, boundaries, *, out_int32=False, right=False):
    """``torch.bucketize``: the bucket of each value among the sorted 1-D ``boundaries``:
    ``boundaries[i - 1] < x <= boundaries[i]`` (``right=True``: ``boundaries[i - 1] <= x <
    boundaries[i]``)."""
    if boundaries.ndim != 1:
        raise RuntimeError(f"boundaries tensor must be 1 dimension, but got dim({boundaries.ndim})")
    return searchsorted(boundaries, input, out_int32=out_int32, right=right)
