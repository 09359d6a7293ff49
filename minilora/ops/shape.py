"""Shape ops: they move numbers around without changing them, so backward moves the gradient back."""
import itertools
import math
import warnings

import numpy as np

from .. import amp as _amp, dtypes
from ..device import xp_of
from ..dtypes import float32, int_argument, int_arguments, is_floating, result_type, torch_name
from ..tensor import Function, Tensor, ShapeError, is_grad_enabled, name_node, no_grad, no_meta_kernel, share_node
from ..tensor import mark_multi_output_views
from ..tensor import torch_cat_message, torch_expand_message, _legacy_type
from ..tensor import _data_address, _is_strided_wrapper, _without_leading_ones  # (where an array's memory lies; as_strided's views)
from ..factories import share_strides, shared_strides, strides_answer
from ..factories import (channels_last, contiguous_format, contiguous_strides, in_layout_of, int_sizes, known_strides,
                         laid_out_copy, like_view_strides,
                         layout_is_known, layout_is_unknown, layout_order)

NO_DIM = object()  # the default dim of max/min/prod/median/squeeze: torch tells x.max() from x.max(dim=None)


def dim_given(name, dim):
    """``dim`` of torch's max/min/prod/median/squeeze, which take no dim or an int: an explicit
    ``dim=None`` is torch's TypeError there (sum and mean take it and reduce everything).
    Returns None for "no dim"."""
    if dim is None:
        raise TypeError(f"{name}() received an invalid combination of arguments - got (dim=NoneType), "
                        f"but expected no dim, or an int dim")
    return None if dim is NO_DIM else dim

__all__ = ["reshape", "transpose", "permute", "getitem", "index_put", "cat", "stack", "split", "chunk",
           "expand", "squeeze", "unsqueeze", "flatten", "flip", "unbind", "roll", "narrow", "diagonal",
           "diag", "movedim", "swapaxes", "tile", "unflatten", "select", "broadcast_to", "hstack",
           "vstack", "meshgrid", "trace", "diff", "tensor_split", "unfold", "stride", "ravel", "fliplr", "flipud", "rot90", "hsplit",
           "vsplit", "dsplit", "atleast_1d", "atleast_2d", "atleast_3d", "column_stack", "dstack",
           "narrow_copy", "split_with_sizes", "diag_embed", "as_strided", "as_strided_scatter"]


def _check_inferred_sizes(shape):
    """torch's refusals of a shape's negative sizes, which NumPy would all read as -1 (inferred)."""
    inferred = False
    for i, n in enumerate(shape):
        if n == -1 and inferred:
            raise RuntimeError("only one dimension can be inferred")
        if n < -1:
            raise RuntimeError(f"invalid shape dimension {n} at index {i} of shape {list(shape)}")
        inferred = inferred or n == -1


class Reshape(Function):
    """view, reshape, flatten, unflatten, unsqueeze and squeeze: one NumPy reshape. ``torch_op`` records which
    torch op the view is, whose rule gives its strides (_reshaped_strides): "view" (ATen's computeStride),
    ("unsqueeze", dim) or ("squeeze", dropped dims); None from minilora's own uses."""

    @staticmethod
    def forward(ctx, a, shape, torch_op=None):
        ctx.shape = a.shape
        try:
            out = a.reshape(shape)
        except ValueError:
            _check_inferred_sizes(shape)
            raise ShapeError(f"shape '{list(shape)}' is invalid for input of size {a.size}") from None
        if out.shape != shape:  # an inferred size (NumPy reads any negative one so): torch's checks
            _check_inferred_sizes(shape)
        return out

    @staticmethod
    def backward(ctx, g):
        return g.reshape(ctx.shape)


class Permute(Function):
    @staticmethod
    def forward(ctx, a, axes):
        if sorted(ax % a.ndim for ax in axes) != list(range(a.ndim)):
            raise ShapeError(f"permute: {tuple(axes)} is not a permutation of the "
                             f"{a.ndim} axes of a tensor of shape {a.shape}")
        ctx.axes = axes = tuple(ax % a.ndim for ax in axes)  # argsort in backward needs them non-negative
        return a.transpose(axes)

    @staticmethod
    def backward(ctx, g):
        return g.transpose(tuple(np.argsort(ctx.axes).tolist()))  # a tuple: CuPy wants no host array


class GetItem(Function):
    """Basic slicing and integer-array indexing; repeated indices add up their gradients."""

    @staticmethod
    def forward(ctx, a, index):
        index = _without_empty_ellipsis(index, a.ndim)
        ctx.shape, ctx.dtype, ctx.index = a.shape, a.dtype, index
        out = take_indexed(a, index)
        # torch lays out an integer-array index's result of a contiguous tensor contiguously; NumPy
        # may not (x[:, i] keeps i's dimension outermost in memory), and dropout's mask follows memory
        if a.flags.c_contiguous and not out.flags.c_contiguous and _has_array(index):
            out = out.copy()
        return out

    @staticmethod
    def backward(ctx, g):
        xp = xp_of(g)
        out = xp.zeros(ctx.shape, dtype=g.dtype)
        if _has_array(ctx.index):
            _add_indexed(out, ctx.index, g)  # repeated indices add up (bfloat16 on CuPy too)
        else:
            out[ctx.index] = g
        return out


# NumPy and torch agree on every index but one kind: integers mixed with index arrays (lists, tensors,
# masks). torch selects with the integers first and then indexes the rest, so ``x[0, :, [1, 2]]`` of a
# [2, 3, 4] tensor is [3, 2]; NumPy counts the integer as an index array, and when a slice separates the
# index arrays it puts their dimension first: [2, 3]. Such an index is applied here in torch's two steps:
# ``a[basic][rest]``, where ``basic`` keeps the integers (a view) and ``rest`` the index arrays.
def _ints_first(index):
    """``(basic, rest)`` for an index tuple that mixes integers with index arrays, else None.
    (Every ``x[...]`` calls this: slices, the common case, are skipped first.)"""
    if type(index) is not tuple:
        return None
    kinds = 0  # 1: an integer seen, 2: an index array seen
    for part in index:
        kind = type(part)
        if kind is slice or part is None or part is Ellipsis:
            continue
        if kind is int or isinstance(part, np.integer):
            kinds |= 1
        elif kind is list:
            kinds |= 2
        else:
            ndim = getattr(part, "ndim", None)
            if ndim:
                kinds |= 2
            elif ndim == 0 and part.dtype.kind in "iu":  # a 0-d index tensor: an integer
                kinds |= 1
    return _split_ints_first(index) if kinds == 3 else None


def _split_ints_first(index):
    basic, rest = [], []
    for part in index:
        if part is None:  # a new dimension: made by the first step, kept whole by the second
            basic.append(None)
            rest.append(slice(None))
        elif isinstance(part, (int, np.integer)) or getattr(part, "ndim", None) == 0:
            basic.append(int(part))  # selected (and removed) by the first step
        elif type(part) is list or getattr(part, "ndim", 0) > 0:
            dims = part.ndim if getattr(part, "dtype", None) == np.bool_ else 1  # a mask spans its ndim
            basic.extend([slice(None)] * dims)
            rest.append(part)
        else:  # a slice or Ellipsis
            basic.append(part)
            rest.append(slice(None) if part is not Ellipsis else part)
    return tuple(basic), tuple(rest)


def take_indexed(array, index):
    """``array[index]`` in torch's order (see _ints_first)."""
    split = _ints_first(index)
    out = array[index] if split is None else array[split[0]][split[1]]
    if isinstance(out, np.generic):  # every dimension taken by an integer: NumPy answers a scalar, a copy;
        # torch a 0-d view (x[2].fill_(7) writes into x), which NumPy gives with an Ellipsis after them
        out = array[(index if type(index) is tuple else (index,)) + (Ellipsis,)]
    return out


def _add_indexed(array, index, values):
    """``add_at(array, index, values)`` in torch's order (see _ints_first)."""
    split = _ints_first(index)
    if split is None:
        add_at(array, index, values)
    else:
        add_at(array[split[0]], split[1], values)


def _without_empty_ellipsis(index, ndim):
    """A raw index without a ``...`` that stands for no dimension: torch drops it, so index arrays on
    both sides of it are adjacent and their dims stay in place (``x[None, i, ..., j]`` of a matrix is
    [1, n]); NumPy counts them apart and puts their dims first ([n, 1])."""
    if type(index) is not tuple or not any(i is Ellipsis for i in index):
        return index
    used = sum(getattr(i, "ndim", 1) if getattr(i, "dtype", None) == np.bool_ else 1
               for i in index if i is not None and i is not Ellipsis)
    return tuple(i for i in index if i is not Ellipsis) if used == ndim else index


def put_indexed(array, index, values):
    """``array[index] = values`` in torch's order (the first step is a view, so this writes into
    ``array``)."""
    index = _without_empty_ellipsis(index, array.ndim)
    split = _ints_first(index)
    if split is None:
        array[index] = values
    else:
        array[split[0]][split[1]] = values


def put_into_copy(array, index, values, keep_layout=False):
    """A copy of ``array`` with ``values`` written at ``index`` (``put_indexed``): the forward of the
    ops that overwrite part of their input (index_put, scatter, index_fill, index_copy, ...). The copy is
    contiguous, or laid out as ``array`` where ``keep_layout`` (torch's clone: index_put, index_fill)."""
    out = laid_out_copy(array) if keep_layout else array.copy()
    put_indexed(out, index, values)
    return out


def zeroed_at(g, index):
    """The gradient such an op passes to the input it overwrote: ``g`` with the overwritten positions
    zeroed (their old values no longer reach the output)."""
    return put_into_copy(g, index, 0)


# CuPy's add.at is an atomicAdd kernel, for these dtypes only
_CUPY_ADD_AT = tuple(np.dtype(t) for t in ("float16", "float32", "float64", "int32", "uint32", "uint64"))


def add_at(out, index, values):
    """``out[index] += values`` in place, repeated indices adding up (``np.add.at``). On CuPy an
    int64 ``out`` adds through a uint64 view (two's complement: the same bits, the same wraparound)
    and the other small integer and bool dtypes through int32, then cast back as torch wraps."""
    xp = xp_of(out)
    if xp is np or out.dtype in _CUPY_ADD_AT:
        xp.add.at(out, index, values)
    elif is_floating(out.dtype):  # bfloat16 on CuPy: through float32, rounded once (torch's CUDA kernel
        wide = out.astype(float32)  # adds in bfloat16 atomically, in no fixed order: it varies anyway)
        xp.add.at(wide, index, xp.asarray(values).astype(float32))
        out[...] = wide
    elif out.dtype == np.int64:
        values = xp.asarray(values).astype(np.int64)
        xp.add.at(out.view(np.uint64), index, values.view(np.uint64))
    else:
        wide = out.astype(np.int32)
        xp.add.at(wide, index, xp.asarray(values).astype(np.int32))
        out[...] = wide if out.dtype != np.bool_ else wide != 0


class IndexPut(Function):
    """torch's ``index_put``, what ``a[index] = values`` runs: a copy of ``a`` with ``values`` written
    (or, ``accumulate=True``, added) at ``index``. The gradient reaches ``values`` from the written
    positions (summed over its broadcast) and ``a`` everywhere else -- an overwritten element's old
    value no longer matters, so its gradient is zero."""

    @staticmethod
    def forward(ctx, a, values, index, accumulate):
        ctx.index, ctx.accumulate, ctx.values_shape = index, accumulate, getattr(values, "shape", ())
        if not accumulate:
            return put_into_copy(a, index, values, keep_layout=True)
        out = laid_out_copy(a)
        _add_indexed(out, index, values)
        return out

    @staticmethod
    def backward(ctx, g):
        from .elementwise import unbroadcast
        needs_a, needs_values = ctx.needs_input_grad
        grad_a = grad_values = None
        if needs_a:
            grad_a = g if ctx.accumulate else zeroed_at(g, ctx.index)
        if needs_values:
            grad_values = unbroadcast(take_indexed(g, ctx.index), ctx.values_shape)
        return grad_a, grad_values


def _has_array(index):
    parts = index if isinstance(index, tuple) else (index,)
    return any(hasattr(p, "shape") or isinstance(p, list) for p in parts)


class Cat(Function):
    @staticmethod
    def forward(ctx, *arrays, axis=0):
        ctx.axis = axis
        try:
            out = xp_of(arrays[0]).concatenate(arrays, axis=axis)
        except (ValueError, IndexError):  # (NumPy's AxisError is both)
            shapes = ", ".join(str(a.shape) for a in arrays)
            raise ShapeError(torch_cat_message([a.shape for a in arrays], axis)
                             or f"cat: shapes {shapes} must match except along axis {axis}") from None
        ctx.sizes = [a.shape[axis] for a in arrays]
        # torch's cat is contiguous (NumPy's kept transposed inputs' layout), channels-last for such inputs
        if out.ndim == 4 and all(a.ndim == 4 and not a.flags.c_contiguous and layout_order(a) == (0, 2, 3, 1)
                                 for a in arrays):
            return laid_out_copy(out, channels_last)
        return xp_of(out).asarray(out, order="C")

    @staticmethod
    def backward(ctx, g):
        bounds = np.cumsum(ctx.sizes)[:-1]
        return tuple(xp_of(g).split(g, bounds, axis=ctx.axis))


class Expand(Function):
    @staticmethod
    def forward(ctx, a, shape):
        sizes, shape = shape, _expanded_shape(a, shape)
        ctx.shape = a.shape
        try:
            out = xp_of(a).broadcast_to(a, shape)
        except ValueError:
            raise ShapeError(torch_expand_message(a.shape, sizes)
                             or f"expand: cannot expand shape {a.shape} to {shape}") from None
        return out if _overlaps(out) else _writable(a, out)

    @staticmethod
    def backward(ctx, g):
        from .elementwise import unbroadcast
        return unbroadcast(g, ctx.shape)


def _overlaps(view):
    """Does a (broadcast) view show one element in several places? torch refuses in-place writes
    into such a tensor only; expanding size-1 dims to size 1, or an empty tensor, overlaps nothing."""
    return view.size > 1 and any(stride == 0 and size > 1 for stride, size in zip(view.strides, view.shape))


def _writable(a, view):
    """The same view, writable where ``a`` is (NumPy's broadcast_to is always read-only)."""
    if not isinstance(view, np.ndarray) or not a.flags.writeable:
        return view
    if view.size == a.size:  # nothing repeated (only 1s added): a reshape, which NumPy shows as a view
        return a.reshape(view.shape)  # of ``a`` (``.base``), so it shares ``a``'s version counter
    return np.lib.stride_tricks.as_strided(a, view.shape, view.strides)


def _expanded_shape(a, sizes):
    """The shape ``expand(*sizes)`` of array ``a`` asks for, ``-1`` replaced by the size it keeps; torch's errors
    for fewer sizes than dimensions and for ``-1`` in a new leading dimension (which has no size to
    keep: indexing from the end would pick some other dimension's size)."""
    shape = a.shape
    new = len(sizes) - len(shape)  # leading dimensions that expand adds
    if new < 0:
        raise ShapeError(f"expand({_legacy_type(a)}{{{list(shape)}}}, size={list(sizes)}): the number of sizes "
                         f"provided ({len(sizes)}) must be greater or equal to the number of dimensions in the tensor "
                         f"({len(shape)})")
    out = []
    for i, n in enumerate(sizes):
        if n == -1 and i >= new:
            n = shape[i - new]
        elif n < 0 and i < new:
            raise ShapeError(f"The expanded size of the tensor ({n}) isn't allowed in a leading, non-existing "
                             f"dimension {i}")
        elif n < 0 and shape[i - new] != 1:
            raise ShapeError(f"The expanded size of the tensor ({n}) must match the existing size ({shape[i - new]}) "
                             f"at non-singleton dimension {i}.  Target sizes: {list(sizes)}.  Tensor sizes: "
                             f"{list(shape)}")
        elif n < 0:  # (torch takes the size for a dimension of 1, then fails counting the elements)
            raise ShapeError("numel: integer multiplication overflow")
        out.append(int(n))
    return tuple(out)


def _shape_arg(shape):
    return tuple(shape[0]) if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape


def one_by_one(fn, given, by_name, name):
    """The sizes or dims of torch's functions that take them one by one (``x.view(3, 2)``), as one sequence
    (``x.view((3, 2))``) or by their name (``x.view(size=(3, 2))``), as torch's do: ``given``, or the named one."""
    if not by_name:
        return given
    unexpected = sorted(set(by_name) - {name})
    if unexpected:
        raise TypeError(f"{fn}() got an unexpected keyword argument '{unexpected[0]}'")
    if given:
        raise TypeError(f"{fn}() got multiple values for argument '{name}'")
    return (by_name[name],)


def reshape(input, *shape, **by_name):
    """``torch.reshape(input, shape)`` and ``x.reshape(*shape)``: a view when the layout allows."""
    return _reshape(input, one_by_one("reshape", shape, by_name, "shape") if by_name else shape, fn="reshape")


def _refused_shape(fn, value):
    """torch's TypeError for what neither of view's signatures (a dtype, a size) nor reshape's (a size) takes."""
    kind = dtypes._argument_type_name(value)
    if fn == "reshape":
        return TypeError(f"reshape(): argument 'shape' (position 1) must be tuple of ints, not {kind}")
    return TypeError(f"view() received an invalid combination of arguments - got ({kind}), but expected one of:\n"
                     " * (torch.dtype dtype)\n * (tuple of ints size)\n")


def _reshape(input, shape, torch_op="view", fn="view"):
    if len(shape) == 1 and not isinstance(shape[0], (int, tuple, list, np.integer, Tensor)):
        int_arguments(fn, "size", shape)  # (x.view(5.0): torch's TypeError)
        if fn == "reshape" or not dtypes.is_dtype_object(shape[0]) or isinstance(shape[0], type) and issubclass(
                shape[0], np.generic):  # x.view('float32'), x.reshape(torch.int32): no overload takes them
            raise _refused_shape(fn, shape[0])
        # x.view(torch.int32) reinterprets the bytes in torch; minilora does not do that
        raise NotImplementedError(f"view/reshape to a dtype ({shape[0]}) reinterprets bits in torch "
                                  f"and is not supported by minilora; x.to(dtype) converts the values")
    return Reshape.apply(input, shape=_shape_arg(shape), torch_op=torch_op)


def view(input, *shape, **by_name):
    """``x.view(*shape)``: ``reshape`` that must give a view. torch refuses when the tensor's strides
    do not allow one (``x.t().view(-1)``) rather than copy, since writing into the copy would not
    change ``x``; so does minilora (NumPy's reshape copies in exactly those cases)."""
    out = _reshape(input, one_by_one("view", shape, by_name, "size") if by_name else shape)
    if out._base is None and out._array is not input._array and out._array.size:
        raise RuntimeError("view size is not compatible with input tensor's size and stride (at least "
                           "one dimension spans across two contiguous subspaces). Use .reshape(...) "
                           "instead.")
    return out


def flatten(input, start_dim=0, end_dim=-1):
    """Dimensions ``start_dim`` to ``end_dim`` (inclusive, negatives allowed) merged into one."""
    start, end = _dims((int_argument("flatten", "start_dim", start_dim), int_argument("flatten", "end_dim", end_dim)),
                       input.ndim)  # (a 0-d tensor's too: torch checks them, -1 or 0)
    if input.ndim == 0:  # torch: a 0-d tensor flattens to one element
        return reshape(input, (1,))
    if start > end:
        raise RuntimeError("flatten() has invalid args: start_dim cannot come after end_dim")
    if start == end:  # (torch hands the tensor itself back: nothing to merge)
        return input
    merged = math.prod(input.shape[start:end + 1])  # (not -1: NumPy cannot infer it when a size is 0)
    return reshape(input, input.shape[:start] + (merged,) + input.shape[end + 1:])


def _dims(dims, ndim):
    """Each of ``dims`` as a non-negative int, or torch's IndexError (0-d tensors take 0 and -1)."""
    rank = max(ndim, 1)
    for d in dims:
        if not -rank <= d < rank:
            raise IndexError(f"Dimension out of range (expected to be in range of [{-rank}, "
                             f"{rank - 1}], but got {d})")
    return tuple(d % rank for d in dims)


def _distinct_dims(dims, ndim):
    """``_dims``, and torch's RuntimeError when two of them name the same dimension."""
    normalised = _dims(dims, ndim)
    for i, d in enumerate(normalised):
        if d in normalised[:i]:
            raise RuntimeError(f"dim {d} appears multiple times in the list of dims")
    return normalised


def permute(input, *dims, **by_name):
    """``torch.permute(input, dims)`` and ``x.permute(*dims)``: a view with the axes reordered."""
    dims = one_by_one("permute", dims, by_name, "dims")
    if not dims:
        raise TypeError("permute() missing 1 required positional argument: 'dims'")
    dims = _shape_arg(dims)
    if len(dims) != input.ndim:
        raise RuntimeError(f"permute(sparse_coo): number of dimensions in the tensor input does not match the "
                           f"length of the desired ordering of dimensions i.e. input.dim() = {input.ndim} is not "
                           f"equal to len(dims) = {len(dims)}")
    if len(set(_dims(dims, input.ndim))) != len(dims):
        raise RuntimeError("permute(): duplicate dims are not allowed.")
    return Permute.apply(input, axes=dims)


def transpose(input, dim0, dim1):
    """``torch.transpose(input, dim0, dim1)``: a view with two axes swapped."""
    dim0, dim1 = int_argument("transpose", "dim0", dim0), int_argument("transpose", "dim1", dim1)
    if input.ndim == 0:  # torch: dims 0 and -1 name the 0-d tensor's one place; nothing to swap
        _dims((dim0, dim1), 0)
        return reshape(input, ())
    axes = list(range(input.ndim))
    try:
        axes[dim0], axes[dim1] = axes[dim1], axes[dim0]
    except IndexError:  # (a dim out of range: torch's words, checked on this path only)
        _dims((dim0, dim1), input.ndim)
        raise
    return name_node(Permute.apply(input, axes=tuple(axes)), "TransposeBackward0")


_SEQUENCE_AS_TUPLE = ("Using a non-tuple sequence for multidimensional indexing is deprecated and will be changed in "
                      "pytorch 2.9; use x[tuple(seq)] instead of x[seq]. In pytorch 2.9 this will be interpreted as "
                      "tensor index, x[torch.tensor(seq)], which will result either in an error or a different "
                      "result")


def sequence_as_tuple(index):
    """A list index as torch reads it (python_variable_indexing.cpp's treatSequenceAsTuple, NumPy's old rule): a
    list of fewer than 32 entries that holds a sequence, a slice, a tensor, ``...`` or None is the tuple of its
    entries, with torch's deprecation warning -- ``x[[[1], [2]]]`` is ``x[[1], [2]]``, one element, where NumPy
    reads one [2, 1] integer array --; any other list is one integer array."""
    if type(index) is not list or len(index) >= 32:
        return index
    for entry in index:
        if isinstance(entry, (list, tuple, range, slice, Tensor, np.ndarray)) or entry is Ellipsis or entry is None:
            warnings.warn(_SEQUENCE_AS_TUPLE, UserWarning, stacklevel=3)
            return tuple(index)
    return index


def getitem(input, index):
    index = sequence_as_tuple(index)
    try:
        out = GetItem.apply(input, index=_raw_index(index, input.device))
    except IndexError as error:
        raise torch_index_error(error, input, index) from None
    if not isinstance(index, tuple):  # (one entry: one op of torch's, or none)
        return name_node(out, _indexing_node(index), input)
    names = _indexing_ops(index, input.shape)
    if len(names) < 2:
        return name_node(out, names[0] if names else "AliasBackward0", input)
    chain = input  # (torch's ops before the last one: nodes of its graph that minilora's one GetItem has not)
    for name in names[:-1]:
        chain = (name, chain)
    return name_node(out, names[-1], graph=(chain,))


def torch_index_error(error, input, index):
    """NumPy's 'too many indices for array' in torch's words: ``loss[0]`` (old code's loss.data[0]) on a
    0-d tensor points at ``item()``; its 'out of bounds for axis' as torch's 'for dimension'."""
    message = str(error)
    if " is out of bounds for axis " in message:  # (NumPy's axis is torch's dimension, the words otherwise torch's)
        return IndexError(message.replace(" for axis ", " for dimension "))
    if message.startswith("boolean index did not match indexed array along axis "):
        return _mask_shape_error(message, input, index) or error
    if not message.startswith("too many indices for array"):
        return error
    if input.ndim == 0 and isinstance(index, (int, np.integer)) and not isinstance(index, bool):
        return IndexError("invalid index of a 0-dim tensor. Use `tensor.item()` in Python or `tensor.item<T>()` "
                          "in C++ to convert a 0-dim tensor to a number")
    return IndexError(f"too many indices for tensor of dimension {input.ndim}")


def _mask_shape_error(message, input, index):
    """torch's words for a boolean mask whose shape is not the indexed dimensions' (NumPy names the tensor's axis);
    None where the mask is not found simply (after an Ellipsis)."""
    axis = int(message.split("along axis ")[1].split(";")[0])
    start = 0
    for part in index if isinstance(index, tuple) else (index,):
        shape = getattr(part, "shape", None)
        if shape is not None and getattr(part, "dtype", None) in (bool, np.bool_):
            if start <= axis < start + len(shape):
                return IndexError(f"The shape of the mask {list(shape)} at index {axis - start} does not match the "
                                  f"shape of the indexed tensor {list(input.shape)} at index {axis}")
            start += len(shape)
        elif part is Ellipsis:
            return None
        elif part is not None:
            start += max(len(shape), 1) if shape is not None else 1
    return None


def _indexing_node(index):
    """torch's node for ``x[index]``: its indexing runs one op per entry, left to right, advanced indices
    (lists, arrays, tensors, bools) last, and the result's node is the last op's. A lone ``:`` slices;
    in a tuple, ``:`` and ``...`` are no op, and no op at all is an alias."""
    if isinstance(index, slice):
        return "SliceBackward0"
    name = "AliasBackward0"
    for item in index if isinstance(index, tuple) else (index,):
        if item is None:
            name = "UnsqueezeBackward0"
        elif isinstance(item, slice):
            name = name if item == slice(None) else "SliceBackward0"
        elif _is_one_position(item):
            name = "SelectBackward0"
        elif item is not Ellipsis:
            return "IndexBackward0"
    return name


def _indexing_ops(index, shape):
    """torch's nodes for ``x[index]``, ``index`` a tuple, in the order its indexing runs them
    (TensorIndexing.h applySlicing): each int a SelectBackward0, each None an UnsqueezeBackward0, each slice
    not covering its whole dimension a SliceBackward0, a bool an UnsqueezeBackward0 made advanced; then one
    IndexBackward0 if any entry is advanced (lists, arrays, tensors, bools). ``...`` and ``:`` are no op."""
    names, dim, advanced = [], 0, False
    spans = [_dims_taken(item) for item in index]
    for item, span in zip(index, spans):
        if item is Ellipsis:
            dim += len(shape) - sum(s for s in spans if s is not None)
        elif item is None:
            names.append("UnsqueezeBackward0")
        elif isinstance(item, slice):
            if dim >= len(shape) or not _covers(item, shape[dim]):
                names.append("SliceBackward0")
        elif _is_one_position(item):
            names.append("SelectBackward0")
        elif _is_bool_scalar(item):
            names.append("UnsqueezeBackward0")
            advanced = True
        else:
            advanced = True
        dim += span or 0
    return names + ["IndexBackward0"] if advanced else names


def _covers(item, length):
    """Is the slice torch's no-op (applySlice: start 0, stop past the end, step 1, as written: ``-3:`` is a
    SliceBackward0 even where it takes every element)?"""
    start, stop, step = item.start, item.stop, item.step
    return ((start is None or type(start) is int and start == 0) and (step is None or type(step) is int and step == 1)
            and (stop is None or type(stop) is int and stop >= length))


def _dims_taken(item):
    """How many of the input's dimensions an index entry consumes (None: ``...``, which takes the rest)."""
    if item is Ellipsis:
        return None
    if item is None or _is_bool_scalar(item):
        return 0
    ndim = getattr(item, "ndim", None)
    if _is_mask(item):
        return 1 if ndim is None else ndim
    return 1


def _is_bool_scalar(item):
    return isinstance(item, bool) or (getattr(item, "ndim", None) == 0 and getattr(item, "dtype", None) == np.bool_)


def _is_one_position(item):
    """An integer (or 0-d integer tensor) index: it selects, not advanced indexing (bool is advanced)."""
    if isinstance(item, Tensor):
        return item.ndim == 0 and item.dtype.kind == "i"  # torch: uint8 indexes as a mask
    return isinstance(item, (int, np.integer)) and not isinstance(item, bool)


@_amp.autocasts
def index_put(input, indices, values, accumulate=False):
    """``torch.index_put``: ``input`` with ``values`` put (or added) at ``indices``, out of place;
    ``x[idx] = v`` is its in-place form (``Tensor.__setitem__``)."""
    if isinstance(values, Tensor) and values.dtype != input.dtype:  # torch's rule (minilora cast silently)
        raise RuntimeError(_index_put_dtype_message(input.dtype, values.dtype))
    index = _raw_index(indices, input.device)
    try:
        if isinstance(values, Tensor) and values.ndim:
            _check_values_fit(input, index, values.shape)
        return IndexPut.apply(input, values, index=index, accumulate=bool(accumulate))
    except IndexError as error:  # (NumPy's words for a position out of bounds: torch's)
        raise torch_index_error(error, input, indices) from None


def _check_values_fit(input, index, values_shape):
    """torch broadcasts ``values`` to ``input[index]``'s shape and no further: NumPy's assignment also
    drops a value's extra leading 1s (x.index_put_((i,), <[[v]]>) of a vector wrote v; torch refuses)."""
    xp = xp_of(input._array)
    shape = take_indexed(xp.broadcast_to(xp.zeros((), np.uint8), input.shape),  # (no copy of input)
                         _without_empty_ellipsis(index, input.ndim)).shape
    trailing = shape[len(shape) - len(values_shape):] if len(values_shape) <= len(shape) else None
    if trailing is None or any(v not in (1, r) for v, r in zip(values_shape, trailing)):
        raise RuntimeError(f"shape mismatch: value tensor of shape {list(values_shape)} cannot be broadcast "
                           f"to indexing result of shape {list(shape)}")


def _index_put_dtype_message(destination, source):
    return (f"Index put requires the source and destination dtypes match, got {torch_name(destination)} for "
            f"the destination and {torch_name(source)} for the source.")


def _is_advanced(part):
    return isinstance(part, (list, np.ndarray)) or (isinstance(part, Tensor) and part.ndim > 0)


def _is_mask(part):
    dtype = getattr(part, "dtype", None)
    return dtype == np.bool_ or (isinstance(part, list) and len(part) > 0 and all(type(v) is bool for v in part))


def setitem_node(index, shape, value, target_shape):
    """torch's node and value edge for ``x[index] = value`` on a tensor in the graph, as its Python indexing
    runs it (python_variable_indexing.cpp, TensorIndexing.h): ints, 0-d and bool indices, None and slices not
    covering their dimension are applied as views first; the write into that view is torch's CopySlices, and
    into the tensor itself (``x[...]``, ``x[:]``, an index of arrays only) the op's own node:
    IndexPutBackward0 for arrays, else copy_to's FillBackward3 (a number or 0-d value) or CopyBackwards.
    The value's edge is copy_to's: the value itself where it has the target's shape or none, else a view of it
    without leading 1s, expanded to the target's shape where it still differs (index_put_ takes the
    stripped value as minilora does). Returns (name, value edge), the edge None where minilora's node has
    torch's already."""
    parts = index if isinstance(index, tuple) else (index,)
    advanced = any(_is_advanced(p) for p in parts)
    spans = [_dims_spanned(p) for p in parts]
    ellipsis = len(shape) - sum(spans)
    viewed, dim = False, 0
    for part, span in zip(parts, spans):
        if part is Ellipsis:
            dim += ellipsis
        elif isinstance(part, slice):
            viewed = viewed or part.indices(shape[dim]) != (0, shape[dim], 1)
        elif not _is_advanced(part):  # an int, a 0-d index, None, True: a view
            viewed = True
        dim += span if part is not Ellipsis else 0
    if advanced:
        return ("torch::autograd::CopySlices" if viewed else "IndexPutBackward0"), None
    name = "torch::autograd::CopySlices" if viewed else \
        "FillBackward3" if not isinstance(value, Tensor) or value.ndim == 0 else "torch::autograd::CopyBackwards"
    if not isinstance(value, Tensor):
        return name, None  # (a number: its edge is None, as minilora's node has it)
    if value.ndim == 0 or value.shape == tuple(target_shape):
        return name, value
    stripped = ("ViewBackward0", value)  # (copy_to views the value even when it has no leading 1s)
    if _without_leading_ones(value.shape) != tuple(target_shape):
        return name, ("ExpandBackward0", stripped)
    return name, stripped


def _dims_spanned(part):
    """How many of the indexed tensor's dimensions one part of an index takes (a mask: its ndim)."""
    if part is None or part is Ellipsis or type(part) is bool:
        return 0
    if getattr(part, "dtype", None) in (np.bool_, bool) or (isinstance(part, Tensor) and part.dtype == np.bool_):
        return getattr(part, "ndim", 1)
    return 1


def setitem_value(index, value, dtype):
    """``value`` ready for ``x[index] = value`` into a ``dtype`` tensor, as torch: basic indexing (ints,
    slices, a 0-d index) copies and casts; advanced indexing is ``index_put_``, which refuses another
    dtype -- unless the one index tensor is a boolean mask and the value has one element (torch fills;
    two masks are index_put_ again)."""
    parts = [p for p in (index if isinstance(index, tuple) else (index,)) if _is_advanced(p)]
    fills = len(parts) == 1 and _is_mask(parts[0]) and value.numel() == 1
    if parts and not fills:
        raise RuntimeError(_index_put_dtype_message(dtype, value.dtype))
    if fills:  # torch's masked_fill_ with value.item(): checked as a number (uint8 refuses -0.25 and 300)
        dtypes.checked_number(value.item(), dtype)
    return value.to(dtype)


_INDEX_DTYPES = (np.dtype(np.int64), np.dtype(np.int32), np.dtype(np.bool_))  # (and uint8, a mask: below)


def _raw_index(index, device=None):
    """Tensors inside an index become their arrays (indices never carry gradients). As torch, an
    index tensor lives on cpu or on the indexed tensor's ``device`` (NumPy cannot read a CuPy one)."""
    if isinstance(index, tuple):
        return tuple(_raw_index(i, device) for i in index)
    if isinstance(index, Tensor):
        if device is not None and index.device.type not in ("cpu", device.type):
            raise RuntimeError(f"indices should be either on cpu or on the same device as the indexed "
                               f"tensor ({device.type})")
        if index.dtype in (np.bool_, np.uint8) and index.is_meta:  # (a mask's count of True is its values)
            no_meta_kernel("nonzero", index)
        if index.dtype == np.uint8:  # torch still reads a uint8 index as a mask (deprecated), not
            warnings.warn("indexing with dtype torch.uint8 is now deprecated, please use a dtype "
                          "torch.bool instead.", UserWarning, stacklevel=3)  # as NumPy's integers
            return index._array.astype(bool)
        if index.ndim and index.dtype not in _INDEX_DTYPES:  # NumPy would take int8/int16 positions (a 0-d one
            # is one position, as torch: its __index__)
            raise IndexError("tensors used as indices must be long, int, byte or bool tensors")
        return index._array
    if isinstance(index, slice) and index.step is not None and index.step <= 0:
        # NumPy would reverse (x[::-1]); torch refuses, and so do we (x.flip(0) is torch's way)
        raise ValueError("step must be greater than zero")
    return index


def _tensor_list(tensors, fn):
    """The tensors of cat/stack/hstack/... as a list. One Tensor is torch's TypeError: iterating it would
    join its rows, a silently different answer from the list of tensors the user meant."""
    if isinstance(tensors, Tensor):
        raise TypeError(f"{fn}(): argument 'tensors' (position 1) must be tuple of Tensors, not Tensor")
    return list(tensors)


@_amp.autocasts
def cat(tensors, dim=0, *, axis=None):
    """``torch.cat``: the tensors joined along ``dim`` (``axis=``: NumPy's name, as torch accepts).
    Mixed dtypes join in torch's result type (int64 with float32 is float32, not NumPy's float64)."""
    tensors = _tensor_list(tensors, "cat")
    if not tensors:
        raise ValueError("torch.cat(): expected a non-empty list of Tensors")
    if any(t.dtype != tensors[0].dtype for t in tensors):
        dtype = result_type(*tensors)
        from .elementwise import promotion_cast  # (elementwise imports shape; only mixed dtypes get here)
        tensors = [t if t.dtype == dtype else promotion_cast(t, dtype) for t in tensors]  # (no node in torch's graph)
    # torch's legacy rule: 1-D empty tensors (shape (0,)) are skipped when joined to others, so
    # `out = cat([out, new])` can start from `out = tensor([])` whatever the shape of `new`
    for i, t in enumerate(tensors):
        if t.ndim == 0:
            raise RuntimeError(f"zero-dimensional tensor (at position {i}) cannot be concatenated")
    dim = int_argument("cat", "dim", dim if axis is None else axis)
    kept = [t for t in tensors if t.shape != (0,)]
    if not kept:  # (all skipped: torch wraps no dim and returns an empty tensor, whatever dim says)
        return Cat.apply(*tensors, axis=0)
    tensors = kept
    (dim,) = _dims((dim,), tensors[0].ndim)  # (torch's legacy_cat_wrap_dim: against the first tensor kept)
    return Cat.apply(*tensors, axis=dim)


@_amp.autocasts
def stack(tensors, dim=0, *, axis=None):
    """``torch.stack``: the tensors joined along a new dimension ``dim``."""
    dim = int_argument("stack", "dim", dim if axis is None else axis)
    tensors = _tensor_list(tensors, "stack")
    if not tensors:
        raise RuntimeError("stack expects a non-empty TensorList")
    for i, t in enumerate(tensors[1:], 1):
        if t.shape != tensors[0].shape:
            raise ShapeError(f"stack expects each tensor to be equal size, but got "
                             f"{list(tensors[0].shape)} at entry 0 and {list(t.shape)} at entry {i}")
    return name_node(cat([unsqueeze(t, dim) for t in tensors], dim), "StackBackward0", *tensors,
                     graph=tuple(tensors))


def split(tensor, split_size_or_sections, dim=0, *, axis=None):
    """A tuple of pieces along ``dim`` of ``split_size_or_sections`` elements each (an int: the last
    may be smaller) or of the listed sizes. Each is a slice with its own small backward."""
    axis = dim if axis is None else axis  # (NumPy's name, accepted as torch does)
    if tensor.ndim == 0:
        raise RuntimeError("split expects at least a 1-dimensional tensor")
    (axis,) = _dims((axis,), tensor.ndim)
    n = tensor.shape[axis]
    if isinstance(split_size_or_sections, int):
        sizes = _split_sizes(n, split_size_or_sections)
    else:
        sizes = list(split_size_or_sections)
        if sum(sizes) != n:
            raise RuntimeError(f"split_with_sizes expects split_sizes to sum exactly to {n} (input "
                               f"tensor's size at dimension {axis}), but got split_sizes={sizes}")
    pieces, start = [], 0
    prefix = (slice(None),) * (axis % tensor.ndim)
    node = "SplitBackward0" if isinstance(split_size_or_sections, int) else "SplitWithSizesBackward0"
    for size in sizes:
        pieces.append(name_node(getitem(tensor, prefix + (slice(start, start + size),)), node, tensor))
        start += size
    return _several_views(pieces)


def _several_views(pieces):
    """Number the pieces' nodes (torch's output_nr), shown as torch's one node of the call (share_node): views
    that one call returned several of may not be changed in place in the graph (tensor.mark_multi_output_views)."""
    return share_node(mark_multi_output_views(tuple(pieces)))


def _split_sizes(n, size):
    """The pieces ``split(size)`` cuts ``n`` elements into: ``size`` each, the last smaller (torch
    takes ``size=0`` only for an empty dimension: one empty piece)."""
    if size < 0:
        raise RuntimeError(f"split expects split_size be non-negative, but got split_size={size}")
    if size == 0 and n:
        raise RuntimeError(f"split_size can only be 0 if dimension size is 0, but got dimension "
                           f"size of {n}")
    if n == 0:  # an empty dimension: one empty piece
        return [0]
    return [min(size, n - s) for s in range(0, n, size)]


def chunk(input, chunks, dim=0, *, axis=None):
    """``torch.chunk``: ``chunks`` pieces of ``ceil(n / chunks)`` along ``dim`` (the last smaller;
    an empty dimension gives ``chunks`` empty pieces, as torch)."""
    dim = dim if axis is None else axis
    if input.ndim == 0:
        raise RuntimeError("chunk expects at least a 1-dimensional tensor")
    if chunks <= 0:
        raise RuntimeError(f"chunk expects `chunks` to be greater than 0, got: {chunks}")
    (axis_,) = _dims((dim,), input.ndim)
    n = input.shape[axis_]
    return split(input, -(-n // chunks) if n else [0] * chunks, dim)


def expand(input, *sizes, implicit=False, **by_name):
    """``x.expand(*sizes)``: a read-only view broadcast to ``sizes`` (``-1`` keeps a size). (``implicit``: torch's
    flag for an expand autograd made itself; it changes nothing here.)"""
    sizes = int_arguments("expand", "size", _shape_arg(one_by_one("expand", sizes, by_name, "size")))
    return Expand.apply(input, shape=sizes)


def unsqueeze(input, dim):
    """A size-1 dimension inserted at ``dim`` (``-1``: after the last)."""
    (dim,) = _dims((int_argument("unsqueeze", "dim", dim),), input.ndim + 1)
    return name_node(_reshape(input, input.shape[:dim] + (1,) + input.shape[dim:], ("unsqueeze", dim)),
                     "UnsqueezeBackward0", input)


def squeeze(input, dim=NO_DIM):
    """Size-1 dimensions removed: all of them, or those of ``dim`` (an int or a tuple) that have size
    1 (others are kept, as in torch)."""
    dim = dim_given("squeeze", dim)
    if dim is None:
        drop = tuple(i for i, n in enumerate(input.shape) if n == 1)
        return name_node(_reshape(input, tuple(n for n in input.shape if n != 1), ("squeeze", drop)),
                         "SqueezeBackward0", input)
    several = isinstance(dim, (tuple, list))  # torch: SqueezeBackward2 for a tuple of dims, 1 for one dim
    dims = _distinct_dims(int_arguments("squeeze", "dim", tuple(dim)) if several
                          else (int_argument("squeeze", "dim", dim),), input.ndim)
    drop = tuple(sorted({d for d in dims if input.ndim and input.shape[d] == 1}))
    return name_node(_reshape(input, tuple(n for i, n in enumerate(input.shape) if i not in drop), ("squeeze", drop)),
                     f"SqueezeBackward{2 if several else 1}", input)


class Flip(Function):
    """The order of elements reversed along ``dims`` (a copy, as torch's flip); its gradient is the
    output gradient flipped back."""

    @staticmethod
    def forward(ctx, a, dims):
        ctx.dims = dims
        flipped = xp_of(a).flip(a, axis=dims)  # (a view of a)
        out = in_layout_of(flipped, a)  # (torch's: empty_like(a), a's layout)
        return flipped.copy() if out is flipped else out  # (flipped along sizes 1 only: NumPy's view is "contiguous")

    @staticmethod
    def backward(ctx, g):
        return xp_of(g).flip(g, axis=ctx.dims).copy()


def flip(input, dims):
    """``torch.flip(x, dims)`` / ``x.flip(0)``: reversed along each of ``dims`` (torch's way to write
    NumPy's ``x[::-1]``, which torch and minilora refuse)."""
    dims = (dims,) if isinstance(dims, int) else tuple(dims)
    if input.ndim == 0:  # (torch: one element, nothing to reverse; a copy, as flip always is)
        _dims(dims, 0)
        return input.clone()
    if len(set(_dims(dims, input.ndim))) != len(dims):
        raise RuntimeError(f"flip: dims {dims} has a repeated dimension")
    return like_view_strides(Flip.apply(input, dims=_dims(dims, input.ndim)), input)  # (empty_like(input)'s strides)


def unbind(input, dim=0):
    """``torch.unbind``: the slices along ``dim``, that dimension removed (views, as torch's)."""
    (axis,) = _dims((dim,), input.ndim)
    prefix = (slice(None),) * axis
    return _several_views([name_node(getitem(input, prefix + (i,)), "UnbindBackward0", input)  # (torch's node)
                           for i in range(input.shape[axis])])


# ---- roll, narrow, diagonal, diag, movedim, swapaxes, tile -----------------------------------------
class Roll(Function):
    """Elements shifted along ``axes`` by ``shifts``, wrapping around (``axes=None``: the flattened
    tensor, shape kept); the gradient is rolled back by ``-shifts``. torch's roll is a cat of two narrows of the
    input, in its suggested memory format (Function.torch_layout); the flattened roll is contiguous."""
    torch_layout = "suggested"

    @staticmethod
    def forward(ctx, a, shifts, axes, contiguous=False):
        ctx.shifts, ctx.axes = shifts, axes
        return xp_of(a).asarray(xp_of(a).roll(a, shifts, axis=axes), order="C")  # (contiguous, as torch's)

    @staticmethod
    def backward(ctx, g):
        back = tuple(-s for s in ctx.shifts) if isinstance(ctx.shifts, tuple) else -ctx.shifts
        return xp_of(g).roll(g, back, axis=ctx.axes)


def roll(input, shifts, dims=None):
    """``torch.roll``: ``input`` shifted by ``shifts`` along ``dims`` (ints or tuples of the same
    length), elements leaving one end coming back at the other; ``dims=None`` rolls the flattened
    tensor and keeps its shape."""
    int_arguments("roll", "shifts", shifts if isinstance(shifts, (tuple, list)) else (shifts,))
    if dims is None or (isinstance(dims, (tuple, list)) and len(dims) == 0):
        if isinstance(shifts, (tuple, list)):
            if len(shifts) != 1:
                raise RuntimeError(f"roll: shifts and dimensions must align. shifts: {len(shifts)}, "
                                   f"dims: 0")
            shifts = shifts[0]
        return Roll.apply(input, shifts=int(shifts), axes=None, contiguous=True)
    shifts = tuple(shifts) if isinstance(shifts, (tuple, list)) else (shifts,)
    dims = tuple(dims) if isinstance(dims, (tuple, list)) else (dims,)
    if len(shifts) != len(dims):
        raise RuntimeError(f"roll: shifts and dimensions must align. shifts: {len(shifts)}, dims: "
                           f"{len(dims)}")
    int_arguments("roll", "dims", dims)
    if input.numel() == 0:  # (torch's roll returns a copy of an empty tensor before it wraps dims)
        return Roll.apply(input, shifts=0, axes=None, contiguous=True)
    axes = _dims(dims, input.ndim)
    # torch rolls dim by dim, each a cat of two narrows: a shift by a multiple of the size cats an empty narrow,
    # whose suggested memory format is contiguous, and so is the result
    whole_turn = any(input.shape[axis] and int(s) % input.shape[axis] == 0 for s, axis in zip(shifts, axes))
    return Roll.apply(input, shifts=tuple(int(s) for s in shifts), axes=axes, contiguous=whole_turn)


def narrow(input, dim, start, length):
    """``torch.narrow``: the ``length`` elements from ``start`` along ``dim`` -- a view, as
    ``x[:, start:start + length]`` is. ``start`` may be negative or a 0-d tensor."""
    if input.ndim == 0:
        raise RuntimeError("narrow() cannot be applied to a 0-dim tensor.")
    if isinstance(start, Tensor) and (start.ndim or start.dtype.kind not in "iu"):  # (a bool one too)
        raise RuntimeError("start must be an 0-dim integral Tensor.")
    int_argument("narrow", "start", start), int_argument("narrow", "length", length)
    (axis,) = _dims((dim,), input.ndim)
    start = int(start.item()) if isinstance(start, Tensor) else int(start)
    size = input.shape[axis]
    if not -size <= start <= size:
        raise IndexError(f"start out of range (expected to be in range of [{-size}, {size}], but "
                         f"got {start})")
    if start < 0:  # (not start % size: start == size is allowed, with length 0)
        start += size
    if length < 0 or start + length > size:
        raise RuntimeError(f"start ({start}) + length ({length}) exceeds dimension size ({size}).")
    return getitem(input, (slice(None),) * axis + (slice(start, start + length),))


def _diagonal_positions(shape, offset):
    """Rows and columns of the diagonal ``offset`` (> 0: above the main one) of a rows x cols matrix."""
    rows, cols = shape
    count = max(0, min(rows + min(offset, 0), cols - max(offset, 0)))
    steps = np.arange(count)
    return steps - min(offset, 0), steps + max(offset, 0)


class Diagonal(Function):
    """A diagonal of the matrices spanned by ``axis1`` and ``axis2``, as the last dimension. The
    forward is NumPy's diagonal view, made writable where the input is: it shares the input's
    storage, as torch's view does (``y.diagonal().mul_(2)`` changes ``y``)."""

    @staticmethod
    def forward(ctx, a, offset, axis1, axis2):
        ctx.shape, ctx.offset, ctx.axes = a.shape, offset, (axis1, axis2)
        out = xp_of(a).diagonal(a, offset, axis1, axis2)
        if isinstance(out, np.ndarray) and a.flags.writeable:  # (NumPy's is read-only; CuPy's writable)
            out.flags.writeable = True
        return out

    @staticmethod
    def backward(ctx, g):
        xp = xp_of(g)
        out = xp.zeros(ctx.shape, dtype=g.dtype)
        matrices = xp.moveaxis(out, ctx.axes, (-2, -1))  # a view: writing it writes out
        rows, cols = map(xp.asarray, _diagonal_positions(matrices.shape[-2:], ctx.offset))
        matrices[..., rows, cols] = g
        return out


def diagonal(input, offset=0, dim1=0, dim2=1):
    """``torch.diagonal``: the ``offset`` diagonal of the matrices in ``dim1`` x ``dim2`` (a view),
    those two dimensions replaced by one at the end."""
    axis1, axis2 = _dims((dim1, dim2), input.ndim)  # (a 1-D input fails here: IndexError, as torch)
    if input.ndim < 2:
        raise RuntimeError(f"diagonal dimensions requires ndim larger than 1, got {input.ndim}")
    if axis1 == axis2:
        raise RuntimeError(f"diagonal dimensions cannot be identical {dim1}, {dim2}")
    return Diagonal.apply(input, offset=int(int_argument("diagonal", "offset", offset)), axis1=axis1, axis2=axis2)


class DiagEmbed(Function):
    """Square matrices with the vectors along ``a``'s last dimension on their ``offset`` diagonal
    and zeros elsewhere (a vector gives one matrix)."""
    torch_layout = "contiguous"  # (torch's CPU kernel writes a contiguous result: Function.torch_layout)

    @staticmethod
    def forward(ctx, a, offset):
        n = a.shape[-1] + abs(offset)
        ctx.offset = offset
        xp = xp_of(a)
        out = xp.zeros(a.shape[:-1] + (n, n), dtype=a.dtype)
        rows, cols = map(xp.asarray, _diagonal_positions((n, n), offset))
        out[..., rows, cols] = a
        return out

    @staticmethod
    def backward(ctx, g):
        return xp_of(g).diagonal(g, ctx.offset, -2, -1).copy()


def diag(input, diagonal=0):
    """``torch.diag``: a 1-D input becomes the ``diagonal``-th diagonal of a square matrix; a 2-D
    input gives that diagonal back (a copy, unlike ``torch.diagonal``)."""
    int_argument("diag", "diagonal", diagonal)
    if input.ndim == 1:
        return DiagEmbed.apply(input, offset=int(diagonal))
    if input.ndim == 2:
        copy = Diagonal.apply(input, offset=int(diagonal), axis1=0, axis2=1).clone(memory_format=contiguous_format)
        return name_node(copy, "DiagonalBackward0_copy", input, graph=(input,))  # (torch's: diagonal_copy)
    raise RuntimeError(f"diag(): Supports 1D or 2D tensors. Got {input.ndim}D")


def diag_embed(input, offset=0, dim1=-2, dim2=-1):
    """``torch.diag_embed`` (see _embedded_diagonals), one node as torch's."""
    return name_node(_embedded_diagonals(input, offset, dim1, dim2), "DiagEmbedBackward0", input, graph=(input,))


def _embedded_diagonals(input, offset, dim1, dim2):
    """``torch.diag_embed``: each vector along ``input``'s last dimension put on the ``offset``
    diagonal of a matrix spanning output dimensions ``dim1`` and ``dim2`` (zeros elsewhere)."""
    first, second = _dims((dim1, dim2), input.ndim + 1)
    if first == second:
        raise RuntimeError(f"diagonal dimensions cannot be identical {dim1}, {dim2}")
    offset = int(int_argument("diag_embed", "offset", offset))
    matrices = DiagEmbed.apply(input.reshape(1) if input.ndim == 0 else input, offset=offset)
    return movedim(matrices, (-2, -1), (first, second)).contiguous()  # (torch fills zeros of the result's shape)


def _int_dims(fn, name, dims):
    """One dim or a sequence of them, as a tuple of ints: a float is torch's TypeError (permute's in other words)."""
    dims = tuple(dims) if isinstance(dims, (tuple, list)) else (dims,)
    return tuple(int_argument(fn, name, d) for d in dims)


def movedim(input, source, destination):
    """``torch.movedim``: dimension(s) ``source`` moved to ``destination``, the others keeping their
    order (a permute)."""
    source, destination = (_dims(_int_dims("movedim", name, dims), input.ndim)
                           for name, dims in (("source", source), ("destination", destination)))
    if len(source) != len(destination):
        raise RuntimeError(f"movedim: Invalid source or destination dims: source ({list(source)} "
                           f"dims) should contain the same number of dims as destination "
                           f"({list(destination)} dims)")
    if len(set(source)) != len(source) or len(set(destination)) != len(destination):
        raise RuntimeError("movedim: repeated dim in source or destination")
    if input.ndim == 0:
        return reshape(input, ())
    order = [d for d in range(input.ndim) if d not in source]
    for dest, src in sorted(zip(destination, source)):
        order.insert(dest, src)
    return permute(input, tuple(order))


def swapaxes(input, axis0, axis1):
    """``torch.swapaxes``: NumPy's name for ``transpose(dim0, dim1)``."""
    return transpose(input, axis0, axis1)


def tile(input, dims):
    """``torch.tile``: like ``repeat``, but ``dims`` shorter than the tensor's rank is padded with
    leading 1s (``x.tile((2,))`` of a matrix repeats its columns), as NumPy's ``tile``."""
    from .index import repeat
    dims = int_arguments("tile", "dims", tuple(dims) if isinstance(dims, (tuple, list)) else (dims,))
    return repeat(input, (1,) * (input.ndim - len(dims)) + dims)


# ---- unflatten, select, broadcast_to, hstack/vstack, meshgrid, trace, diff ---------------------------
def unflatten(input, dim, sizes):
    """``torch.unflatten``: dimension ``dim`` split into ``sizes`` (one may be -1): a view."""
    (axis,) = _dims((dim,), input.ndim)  # (a 0-d tensor's dim too: -1 or 0, else torch's IndexError)
    if input.ndim == 0:  # (torch's own words: its check inside a try, the C++ trace left out)
        raise RuntimeError("unflatten got an unexpected error:\nDimension specified as 0 but tensor has no dimensions")
    sizes = asked = tuple(int(n) for n in int_arguments("unflatten", "sizes", sizes))
    n, known = input.shape[axis], math.prod(k for k in sizes if k != -1)
    if sizes.count(-1) > 1:
        raise RuntimeError("unflatten: only one dimension can be inferred")
    if -1 in sizes:
        if known == 0:
            raise RuntimeError(f"unflatten: cannot reshape tensor of 0 elements into shape "
                               f"{list(sizes)} because the unspecified dimension size -1 can be any "
                               f"value and is ambiguous")
        sizes = tuple(n // known if k == -1 else k for k in sizes)  # (resolved here: NumPy cannot
    if math.prod(sizes) != n:                                       # when the tensor is empty)
        raise RuntimeError(f"unflatten: Provided sizes {list(asked)} don't multiply up to the size of "
                           f"dim {dim} ({n}) in the input tensor")
    return reshape(input, input.shape[:axis] + sizes + input.shape[axis + 1:])


def select(input, dim, index):
    """``torch.select``: the slice at ``index`` along ``dim``, that dimension removed (a view, as
    ``x[:, index]``)."""
    if input.ndim == 0:
        raise IndexError("select() cannot be applied to a 0-dim tensor.")
    int_argument("select", "index", index)
    (axis,) = _dims((dim,), input.ndim)
    size = input.shape[axis]
    if not -size <= index < size:
        raise IndexError(f"select(): index {index} out of range for tensor of size "
                         f"{list(input.shape)} at dimension {dim}")
    return getitem(input, (slice(None),) * axis + (int(index),))


def broadcast_to(input, size):
    """``torch.broadcast_to``: ``input.expand(size)`` (an int: one size, as torch takes it)."""
    return expand(input, size)


def hstack(tensors):
    """``torch.hstack``: joined along dim 1 (dim 0 for 1-D tensors), as NumPy's ``hstack``."""
    tensors = [t.reshape(1) if t.ndim == 0 else t for t in _tensor_list(tensors, "hstack")]
    return cat(tensors, 0 if tensors[0].ndim == 1 else 1)


def vstack(tensors):
    """``torch.vstack``: joined along dim 0, 0-D and 1-D tensors first made rows."""
    return cat(list(atleast_2d(_tensor_list(tensors, "vstack"))), 0)  # (torch's: a vector's UnsqueezeBackward0)


def meshgrid(*tensors, indexing=None):
    """``torch.meshgrid``: coordinate grids of 1-D tensors. ``indexing='ij'`` (the default, with
    torch's warning when it is not given) or ``'xy'`` (the first two dimensions swapped, as
    NumPy's default)."""
    if len(tensors) == 1 and isinstance(tensors[0], (list, tuple)):
        tensors = tuple(tensors[0])
    if indexing is None:
        warnings.warn("torch.meshgrid: in an upcoming release, it will be required to pass the "
                      "indexing argument.", UserWarning, stacklevel=2)
        indexing = "ij"
    if not tensors:
        raise RuntimeError("meshgrid expects a non-empty TensorList")
    if indexing not in ("ij", "xy"):
        raise RuntimeError(f"torch.meshgrid: indexing must be one of \"xy\" or \"ij\", but received: "
                           f"{indexing}")
    if any(t.ndim > 1 for t in tensors):
        raise RuntimeError("torch.meshgrid: Expected 0D or 1D tensor in the tensor list")
    if len({t.dtype for t in tensors}) > 1:
        raise RuntimeError("meshgrid expects all tensors to have the same dtype")
    swap = indexing == "xy" and len(tensors) >= 2
    order = [1, 0] + list(range(2, len(tensors))) if swap else list(range(len(tensors)))
    shape = tuple(tensors[i].numel() for i in order)
    grids = []
    for i, t in enumerate(tensors):
        position = order.index(i)
        view = [1] * len(tensors)
        view[position] = t.numel()
        grids.append(expand(reshape(t, tuple(view)), *shape))
    return tuple(grids)


@_amp.autocasts
def trace(input):
    """``torch.trace``: the sum of a matrix's main diagonal (integers sum as int64)."""
    if input.ndim != 2:
        raise RuntimeError(f"trace: expected a matrix, but got tensor with dim {input.ndim}")
    if input.dtype == np.bool_:  # (a sum would count the Trues; torch has no bool kernel)
        raise NotImplementedError('"trace" not implemented for \'Bool\'')
    total = input.diagonal().sum()
    # torch's own loop's value (the composed graph stays for create_graph; a meta input has none)
    if type(input._array) is np.ndarray and input.dtype.kind in "fcV" and not input.is_meta:
        from .nn import KernelGradients
        total = KernelGradients.apply(total, input, None, None, values=_trace_as_torch(input._array),
                                      gradients=_trace_gradients(input._array))
    return name_node(total, "TraceBackward0", input, graph=(input,))  # (torch: one node)


def _trace_as_torch(a):
    """ATen's trace_cpu: the diagonal added in order into its accumulate type (float32's and float64's a double,
    a 16-bit float's a float32, complex64's a complex128), rounded once to a's dtype."""
    accumulate = {"f": np.float64, "c": np.complex128}.get(a.dtype.kind, np.float32)
    diagonal = np.diagonal(a).astype(accumulate)
    total = np.add.accumulate(diagonal)[-1] if diagonal.size else accumulate(0)  # (accumulate: one by one)
    return np.asarray(total).astype(a.dtype)


def _trace_gradients(a):
    """trace's gradient: the incoming gradient on the diagonal, zeros elsewhere (for ``KernelGradients``)."""
    def gradients(g, needs):
        out = np.zeros(a.shape, g.dtype)
        np.fill_diagonal(out, g)
        return (out if needs[0] else None), None, None
    return gradients


def diff(input, n=1, dim=-1, prepend=None, append=None):
    """``torch.diff``: ``out[i] = x[i + 1] - x[i]`` along ``dim`` (``n`` times), after joining
    ``prepend`` / ``append`` to ``input`` along ``dim``. Bool tensors give their XOR, as torch."""
    if input.ndim == 0:
        raise RuntimeError("diff expects input to be at least one-dimensional")
    if n < 0:  # (torch.diff(x, -1) is n=-1, not dim=-1)
        raise RuntimeError(f"order must be non-negative but got {n}")
    (axis,) = _dims((dim,), input.ndim)
    if n == 0:  # (ATen: a copy of input, prepend and append left out; never input itself, which would alias it)
        from .elementwise import clone
        return name_node(clone(input), "torch::autograd::CopyBackwards", input, graph=(None, input))
    pieces = [t for t in (prepend, input, append) if t is not None]
    x = cat(pieces, axis) if len(pieces) > 1 else input
    before = (slice(None),) * axis
    for _ in range(n):
        later, earlier = getitem(x, before + (slice(1, None),)), getitem(x, before + (slice(0, -1),))
        x = (later != earlier) if x.dtype == np.bool_ else later - earlier
    return x


# ---- tensor_split, unfold, stride ---------------------------------------------------------------------
def tensor_split(input, indices_or_sections=None, /, dim=0, *, sections=None, indices=None,
                 tensor_indices_or_sections=None):
    """``torch.tensor_split``: views of ``input`` along ``dim``. An int ``n`` (``sections=``) makes
    ``n`` pieces, the first ``size % n`` one longer (NumPy's ``array_split``); a list of indices
    (``indices=``) cuts before each, as Python slices do (``x[:i0]``, ``x[i0:i1]``, ..., ``x[ik:]``:
    negative indices count from the end, an index past the end gives empty pieces). A 0-d int64
    tensor counts as sections, a 1-D one as indices. (The second argument has no keyword of its
    own in torch's binding: ``sections=``, ``indices=`` or ``tensor_indices_or_sections=``.)"""
    given = [v for v in (indices_or_sections, sections, indices, tensor_indices_or_sections)
             if v is not None]
    if len(given) != 1:
        raise TypeError("tensor_split() takes one of sections, indices or tensor_indices_or_sections")
    how = given[0]
    if input.ndim == 0:
        raise RuntimeError("tensor_split expected at least a 1-dimensional tensor, but got a tensor "
                           "with 0 dims")
    (axis,) = _dims((dim,), input.ndim)
    if isinstance(how, Tensor):
        how = _split_points_of_tensor(how)
    if isinstance(how, bool) or not isinstance(how, (int, np.integer, tuple, list)):
        raise TypeError(f"tensor_split(): indices_or_sections must be an int, a tuple of ints or an "
                        f"int64 tensor, not {type(how).__name__}")
    if isinstance(how, (int, np.integer)):
        how = _section_starts(input.shape[axis], int(how))
    starts, ends = [None, *how], [*how, None]
    prefix = (slice(None),) * axis
    return tuple(getitem(input, prefix + (slice(start, end),)) for start, end in zip(starts, ends))


def _split_points_of_tensor(t):
    """torch's reading of a tensor argument: 0-d is a number of sections, 1-D a list of indices."""
    if t.dtype != np.int64:
        raise RuntimeError(f"tensor_split expected tensor_indices_or_sections to have dtype of long, "
                           f"but got {t.dtype}")
    if t.ndim > 1:
        raise RuntimeError(f"tensor_split expected tensor_indices_or_sections to be a "
                           f"zero-dimensional or one-dimensional tensor, but got a tensor with "
                           f"{t.ndim} dims")
    return int(t.item()) if t.ndim == 0 else [int(i) for i in t.tolist()]


def _section_starts(size, sections):
    """Where each of ``sections`` pieces after the first begins: the first ``size % sections`` pieces
    hold one element more."""
    if sections <= 0:
        raise RuntimeError(f"number of sections must be larger than 0, got {sections}")
    small, extra = divmod(size, sections)
    return [k * small + min(k, extra) for k in range(1, sections)]


class Unfold(Function):
    """Every window of ``size`` elements along ``axis``, ``step`` apart, as a new last dimension: a
    strided view of the input, as torch's (writable where the input is; where windows overlap, a
    write through them leaves the last window's values). Each input element's gradient is the sum
    over the windows that hold it."""

    @staticmethod
    def forward(ctx, a, axis, size, step):
        ctx.shape, ctx.axis, ctx.size, ctx.step = a.shape, axis, size, step
        count = (a.shape[axis] - size) // step + 1
        shape = a.shape[:axis] + (count,) + a.shape[axis + 1:] + (size,)
        strides = a.strides[:axis] + (a.strides[axis] * step,) + a.strides[axis + 1:] + (a.strides[axis],)
        return xp_of(a).lib.stride_tricks.as_strided(a, shape, strides)

    @staticmethod
    def backward(ctx, g):
        xp, axis, step = xp_of(g), ctx.axis, ctx.step
        out = xp.zeros(ctx.shape, dtype=g.dtype)
        count = g.shape[axis]
        prefix = (slice(None),) * axis
        # element k of every window: positions k, k + step, ...; k from the last, so that each position adds its
        # windows first to last from 0, as ATen's unfold_backward kernel
        for k in reversed(range(ctx.size)):
            out[prefix + (slice(k, k + step * (count - 1) + 1, step),)] += g[..., k]
        return out


def unfold(input, dimension, size, step):
    """``x.unfold(dimension, size, step)``: the windows of ``size`` elements along ``dimension``,
    ``step`` apart, as a new last dimension (a 0-d tensor counts as one element)."""
    int_argument("unfold", "size", size), int_argument("unfold", "step", step)
    if input.ndim == 0:  # (torch's one UnfoldBackward0 of the 0-d input)
        return name_node(unfold(input.reshape(1), 0, size, step).reshape(-1), "UnfoldBackward0", input)
    (axis,) = _dims((dimension,), input.ndim)
    if size < 0:
        raise RuntimeError(f"size is {size} but must be >= 0")
    if size > input.shape[axis]:
        raise RuntimeError(f"maximum size for tensor at dimension {axis} is {input.shape[axis]} but "
                           f"size is {size}")
    if step <= 0:
        raise RuntimeError(f"step is {step} but must be > 0")
    return Unfold.apply(input, axis=axis, size=int(size), step=int(step))  # (a view: see tensor._share_storage)


def stride(input, dim=None):
    """``x.stride()``: how many elements apart consecutive entries of each dimension lie.

    minilora keeps no strides of its own: NumPy lays out each array. Its layout is torch's for a
    contiguous tensor (torch's contiguous strides are reported, also for dimensions of size 0 or 1)
    and for a view made by transpose/permute, slicing, expand, narrow, select, diagonal or unfold;
    also for the results minilora lays out as torch does and marks so (factories.known_layout):
    ``clone()`` and the ``*_like`` factories of a transposed tensor (torch's preserve_format), linalg's
    batches of column-major matrices (``linalg.inv``, ``solve``, ``qr``...), flip, sort, silu, gelu.
    A view with a dimension of size 1 (or 0) answers that dimension's stride by its view op's rule
    (_view_strides: NumPy's is not torch's after ``x[None]`` or a reshape), or refuses where minilora
    cannot tell the rule (``x.t().unsqueeze(1)`` of a [1, 5] x, which might be ``unsqueeze(2)``).
    Elsewhere NumPy may lay out what torch would not (``cat`` of transposed
    inputs; an elementwise op of a transposed tensor, whose layout NumPy and torch usually but not
    always agree on), so ``stride()`` refuses rather than report strides torch would not; so it does for
    a result made from a channels_last input by an op without torch's rule (tensor._torch_layout)."""
    array = input._array
    strides = shared_strides(input)
    if strides is not None:  # (detach() of a view, x.t_(): factories.share_strides)
        return strides if dim is None else strides[_dims((dim,), input.ndim)[0]]
    if input._base is not None and not all(n > 1 for n in array.shape) and layout_is_followed(input):
        strides = _view_strides(input)  # (a size-1 or size-0 dimension's stride is the view op's own)
        return strides if dim is None else strides[_dims((dim,), input.ndim)[0]]
    known = known_strides(array) if input._base is None else None
    if isinstance(known, str):  # (a result of inputs whose strides minilora does not know: factories.iterator_result)
        raise NotImplementedError(known)
    if known is not None and layout_is_followed(input):  # (torch's, dimensions of size 1 included)
        strides = known
    elif layout_is_followed(input) and array.flags.c_contiguous:
        strides = contiguous_strides(array.shape)
    elif layout_is_followed(input) and (_is_strided_wrapper(array.base) or (
            (input._base is not None or layout_is_known(array)) and all(n > 1 for n in array.shape))):
        strides = tuple(s // array.itemsize for s in array.strides)  # (as_strided's: the strides it was given)
    else:
        raise NotImplementedError(f"stride(): minilora keeps no strides of its own, and NumPy's "
                                  f"layout of this tensor (shape {tuple(array.shape)}) may not be "
                                  f"torch's; call .contiguous() first")
    if dim is None:
        return strides
    (axis,) = _dims((dim,), input.ndim)
    return strides[axis]


# ---- a view's strides where NumPy's cannot tell them: dimensions of size 1 (or 0) ------------------
# NumPy's stride of a dimension of size 1 is not torch's after every op (``x[None]`` gives 0, reshape
# picks its own), so a view with such a dimension answers torch's strides worked out as torch's view
# op does, from the strides of the tensor it views (tensor._share_storage records which op made it).
def _view_strides(view):
    """torch's strides of ``view`` (a view of another tensor), by each view op's rule along the chain
    of views down to its base; NotImplementedError where minilora cannot tell which rule torch used."""
    made = view._view
    if made is None:
        raise _strides_unknown(view)
    fn, inputs, options, i, *_ = made
    parent = inputs[i]
    rule = _VIEW_STRIDE_RULES.get(fn)
    strides = None
    if rule is not None:
        parent_strides = stride(parent)
        strides = rule(tuple(parent.shape), parent_strides, tuple(view.shape), options)
    array = view._array  # (a dimension longer than 1 has one stride in any layout: NumPy's is a check,
    # where there are elements: an empty array's strides are anything)
    if strides is None or len(strides) != array.ndim or array.size and any(
            n > 1 and s != a // array.itemsize for n, s, a in zip(array.shape, strides, array.strides)):
        raise _strides_unknown(view)
    return strides


def _strides_unknown(view):
    return NotImplementedError(f"stride(): minilora keeps no strides of its own and cannot tell which "
                               f"strides torch gives the dimensions of size 1 of this view (shape "
                               f"{tuple(view.shape)}); call .contiguous() first")


def _permuted_strides(shape, strides, new_shape, options):
    return tuple(strides[axis] for axis in options["axes"])


def _indexed_strides(shape, strides, new_shape, options):
    """torch's basic indexing, one index after another: an integer selects (drops the dimension), a
    slice keeps the stride times its step, None unsqueezes (see _unsqueezed_stride)."""
    index = options["index"]
    index = index if type(index) is tuple else (index,)
    if any(part is not None and part is not Ellipsis and type(part) not in (int, slice) for part in index):
        return None  # (an index array: a copy in torch, not a view)
    sizes, out, axis = list(shape), [], 0
    given = sum(part is not None and part is not Ellipsis for part in index)
    for part in index:
        if part is None:
            out.append(_unsqueezed_stride(sizes, strides, axis))
        elif part is Ellipsis:
            for _ in range(len(shape) - given):
                out.append(strides[axis])
                axis += 1
        elif type(part) is int:
            axis += 1
        else:
            out.append(strides[axis] * (part.step or 1))
            axis += 1
    return tuple(out) + tuple(strides[axis:])


def _unsqueezed_stride(sizes, strides, axis):
    """torch's stride of a new dimension inserted before ``axis``: sizes[axis] * strides[axis], or 1
    at the end."""
    return sizes[axis] * strides[axis] if axis < len(sizes) else 1


def _reshaped_strides(shape, strides, new_shape, options):
    """view/reshape/flatten/unflatten (torch's computeStride), unsqueeze and squeeze each have their
    own rule, and minilora's Reshape serves them all: the rule of the torch op the view records
    (Reshape's ``torch_op``); for one of minilora's own reshapes, where the rules that could have made this
    shape disagree, None."""
    torch_op = options.get("torch_op")
    if torch_op == "view":
        return _computed_strides(shape, strides, new_shape)
    if torch_op is not None and torch_op[0] == "unsqueeze":
        d = torch_op[1]
        return strides[:d] + (_unsqueezed_stride(shape, strides, d),) + strides[d:]
    if torch_op is not None:  # (squeeze: the dimensions it dropped)
        return tuple(s for k, s in enumerate(strides) if k not in torch_op[1])
    candidates = {_computed_strides(shape, strides, new_shape)}
    if len(new_shape) == len(shape) + 1:  # unsqueeze(d)?
        candidates |= {strides[:d] + (_unsqueezed_stride(shape, strides, d),) + strides[d:]
                       for d in range(len(new_shape)) if new_shape[d] == 1
                       and new_shape[:d] + new_shape[d + 1:] == shape}
    if len(new_shape) <= len(shape):  # squeeze(dims)? (a squeeze of no dimension of size 1 keeps the strides)
        candidates |= {tuple(s for k, s in enumerate(strides) if k not in dropped)
                       for dropped in itertools.combinations(range(len(shape)), len(shape) - len(new_shape))
                       if all(shape[k] == 1 for k in dropped)
                       and tuple(n for k, n in enumerate(shape) if k not in dropped) == new_shape}
    return candidates.pop() if len(candidates) == 1 else None


def _computed_strides(shape, strides, new_shape):
    """ATen's computeStride for a view of a tensor with elements: the new shape is split into chunks
    each laid over a run of old dimensions that are contiguous with each other (None: not a view). Without
    elements any strides would do: ATen keeps the old ones for the same shape, else gives contiguous ones."""
    if math.prod(shape) == 0:
        return tuple(strides) if tuple(shape) == tuple(new_shape) else contiguous_strides(new_shape)
    new_strides = [0] * len(new_shape)
    view_d = len(new_shape) - 1
    chunk_stride, tensor_numel, view_numel = (strides[-1] if strides else 1), 1, 1
    for d in range(len(shape) - 1, -1, -1):
        tensor_numel *= shape[d]
        if d == 0 or (shape[d - 1] != 1 and strides[d - 1] != tensor_numel * chunk_stride):
            while view_d >= 0 and (view_numel < tensor_numel or new_shape[view_d] == 1):
                new_strides[view_d] = view_numel * chunk_stride
                view_numel *= new_shape[view_d]
                view_d -= 1
            if view_numel != tensor_numel:
                return None
            if d > 0:
                chunk_stride, tensor_numel, view_numel = strides[d - 1], 1, 1
    if not shape:  # (a 0-d tensor: every new dimension has size 1)
        while view_d >= 0:
            new_strides[view_d] = 1
            view_d -= 1
    return tuple(new_strides) if view_d == -1 else None


def _expanded_strides(shape, strides, new_shape, options):
    """ATen's inferExpandGeometry: an expanded dimension 0, a kept one its stride, a new one of size 1
    the size times the stride of the dimension after it (1 at the end); every one 0 from a 0-d tensor."""
    out = [0] * len(new_shape)
    if not shape:
        return tuple(out)
    lead = len(new_shape) - len(shape)
    for i in range(len(new_shape) - 1, -1, -1):
        d = i - lead
        if d >= 0:
            out[i] = strides[d] if shape[d] == new_shape[i] else 0
        elif new_shape[i] != 1:
            out[i] = 0
        else:
            out[i] = new_shape[i + 1] * out[i + 1] if i + 1 < len(new_shape) else 1
    return tuple(out)


def _diagonal_strides(shape, strides, new_shape, options):
    first, second = options["axis1"] % len(shape), options["axis2"] % len(shape)
    kept = tuple(s for k, s in enumerate(strides) if k not in (first, second))
    return kept + (strides[first] + strides[second],)


def _unfolded_strides(shape, strides, new_shape, options):
    axis = options["axis"]
    return strides[:axis] + (strides[axis] * options["step"],) + strides[axis + 1:] + (strides[axis],)


def _given_strides(shape, strides, new_shape, options):
    return tuple(options["stride"])


def layout_is_followed(input):
    """Does minilora know ``input``'s layout to be torch's, as far as NumPy's flags tell? Not for a result
    factories.unknown_layout marked (made from a channels_last input by an op without torch's rule), nor
    for a view of a tensor whose layout NumPy chose (neither C-contiguous nor marked by known_layout)."""
    if layout_is_unknown(input._array):
        return False
    base = input._base
    if base is None:
        return True
    storage = base._array
    known = known_strides(storage)  # (where NumPy's strides of size-1 dimensions are not torch's, a view's are not)
    if known is not None and known != tuple(s // storage.itemsize for s in storage.strides):
        return False
    return not layout_is_unknown(storage) and (storage.flags.c_contiguous or layout_is_known(storage)
                                               or _is_strided_wrapper(storage.base))


# ---- as_strided: any view of a tensor's storage, by sizes, strides and storage offset -------------
def storage_offset(input):
    """``x.storage_offset()``: how many elements into its storage the tensor's first element lies
    (0 for a tensor that owns its memory; ``x[1:]``'s is 1)."""
    return _geometry(input._array)[2]


def _owner(array):
    """The array that owns ``array``'s memory: its storage (NumPy's as_strided hides the array it
    viewed behind a wrapper's ``base``)."""
    while True:
        base = getattr(array, "base", None)
        if _is_strided_wrapper(base):
            base = base.base  # (as_strided's wrapper: the array it viewed)
        if base is None or not hasattr(base, "flags"):  # (not an array: a buffer, a meta array's memoryview)
            return array
        array = base


def _flat_storage(array):
    """All of ``array``'s storage as a 1-D array of its dtype, from the storage's first element."""
    owner = _owner(array)
    if not _dense(owner):
        raise NotImplementedError("as_strided: this tensor's storage is not one block minilora can "
                                  "address; call .contiguous() first")
    if owner.flags.c_contiguous:
        memory = owner.reshape(-1)
    else:  # (a transposed copy: its memory in order)
        memory = _strided(owner, (owner.size,), (1,), 0, writeable(owner))
    count = owner.nbytes // array.itemsize
    return memory.view(np.uint8)[:count * array.itemsize].view(array.dtype)


def writeable(array):
    """May ``array`` be written? (CuPy's arrays always may: their flags have no ``writeable``.)"""
    return getattr(array.flags, "writeable", True)


def _dense(array):
    """Does ``array`` fill one block of memory, in some order of its dimensions, from its first element?"""
    expected = array.itemsize
    for stride, size in sorted((s, n) for s, n in zip(array.strides, array.shape) if n > 1):
        if stride != expected:
            return False
        expected *= size
    return True


def _strided(flat, size, stride, offset, writeable=True):
    """The view of the 1-D ``flat`` with ``size``/``stride`` (in elements) from element ``offset``."""
    xp = xp_of(flat)
    strides = tuple(s * flat.itemsize for s in stride)
    if xp is np:
        if flat.dtype.char == "E":  # bfloat16 (ml_dtypes): as_strided's buffer protocol refuses it; same bits
            bits = np.lib.stride_tricks.as_strided(flat[offset:].view(np.uint16), size, strides, writeable=writeable)
            return bits.view(flat.dtype)
        return np.lib.stride_tricks.as_strided(flat[offset:], size, strides, writeable=writeable)
    return xp.lib.stride_tricks.as_strided(flat[offset:], size, strides)


def _geometry(array):
    """``(sizes, strides, storage offset)`` of an array, in elements, as torch's."""
    return (array.shape, tuple(s // array.itemsize for s in array.strides),
            (_data_address(array) - _data_address(_owner(array))) // array.itemsize)


def _check_geometry(size, stride, offset, storage_size, itemsize):
    """torch's errors for as_strided's arguments; the view must lie inside the storage."""
    if len(size) != len(stride):
        raise RuntimeError("mismatch in length of strides and shape")
    if any(s < 0 for s in stride):
        raise RuntimeError(f"as_strided: Negative strides are not supported at the moment, got strides: "
                           f"{list(stride)}")
    if any(n < 0 for n in size):
        raise RuntimeError(f"Storage size calculation overflowed with sizes={list(size)} and "
                           f"strides={list(stride)}")
    if offset < 0:
        raise RuntimeError(f"Tensor: invalid storage offset {offset}")
    needed = 0 if 0 in size else offset + 1 + sum((n - 1) * s for n, s in zip(size, stride))
    if needed > storage_size:
        raise RuntimeError(f"setStorage: sizes {list(size)}, strides {list(stride)}, storage offset {offset}, "
                           f"and itemsize {itemsize} requiring a storage size of {needed * itemsize} are out "
                           f"of bounds for storage of size {storage_size * itemsize}")


def _positions(storage_size, geometry, xp):
    """Which storage element each element of a view with ``geometry`` shows."""
    size, stride, offset = geometry
    return _strided(xp.arange(storage_size), size, stride, offset, writeable=False)


class AsStrided(Function):
    """A view of the input's storage with any sizes, strides (in elements) and storage offset. The
    gradient is torch's AsStridedBackward: the output's gradient summed into storage order (windows
    that overlap add up), read back through the input's own geometry (where the input shows one
    element several times, as an expand()ed tensor, that element's share is divided among them)."""

    @staticmethod
    def forward(ctx, a, size, stride, offset):
        flat = _flat_storage(a)
        ctx.storage_size, ctx.input_geometry = flat.size, _geometry(a)
        ctx.geometry = (size, stride, offset)
        return _strided(flat, size, stride, offset, writeable(a))

    @staticmethod
    def backward(ctx, g):
        xp, n = xp_of(g), ctx.storage_size
        taken = _positions(n, ctx.geometry, xp).reshape(-1)
        storage = summed_in_storage(taken, g.reshape(-1), n, xp)
        shown = _positions(n, ctx.input_geometry, xp)
        if _self_overlapping(shown):
            storage /= xp.maximum(xp.bincount(shown.reshape(-1), minlength=n), 1)
        return storage[shown].astype(g.dtype)


def summed_in_storage(positions, values, n, xp):
    """``values`` added up at their storage ``positions`` (0..n-1), in float64 (bincount), a complex array's parts
    each on its own."""
    if values.dtype.kind == "c":
        return summed_in_storage(positions, values.real, n, xp) + 1j * summed_in_storage(positions, values.imag, n, xp)
    return xp.bincount(positions, weights=values.astype(np.float64), minlength=n)


# (stride()'s rule for each view op: _view_strides)
_VIEW_STRIDE_RULES = {Permute: _permuted_strides, GetItem: _indexed_strides, Reshape: _reshaped_strides,
                      Expand: _expanded_strides, Diagonal: _diagonal_strides, Unfold: _unfolded_strides,
                      AsStrided: _given_strides}


def _self_overlapping(positions):
    """Does a view show some storage element more than once?"""
    flat = positions.reshape(-1)
    return flat.size > 1 and xp_of(flat).unique(flat).size < flat.size


def as_strided(input, size, stride, storage_offset=None):
    """``torch.as_strided(x, size, stride, storage_offset=None)``: a view of ``x``'s storage (not of
    ``x`` itself) whose element ``i`` lies at ``storage_offset + sum(i[k] * stride[k])``; the offset
    defaults to ``x.storage_offset()``. Writes through it reach ``x`` (sharing its version counter).
    minilora's storage is NumPy's: the same as torch's for tensors made by torch's views (slicing,
    transpose, expand, unfold...), but an op whose result minilora builds as a view of some
    intermediate shows that intermediate as its storage where torch's result has its own."""
    size, stride = _int_tuple(size), _int_tuple(stride)
    array = input._array
    offset = _geometry(array)[2] if storage_offset is None else int(storage_offset)
    _check_geometry(size, stride, offset, _flat_storage(array).size, array.itemsize)
    return AsStrided.apply(input, size=size, stride=stride, offset=offset)  # (a view: tensor._share_storage)


def as_strided_(self, size, stride, storage_offset=None):
    """``x.as_strided_(size, stride, storage_offset=None)``: ``x`` itself becomes that view of its storage."""
    return name_node(_reshaped_in_place(self, as_strided, size, stride, storage_offset), "AsStridedBackward1")


def _int_tuple(values):
    if isinstance(values, int):
        return (values,)
    return tuple(int(v) for v in values)


class AsStridedScatter(Function):
    """``input`` copied, with the view ``as_strided(size, stride, offset)`` of the copy's storage
    replaced by ``src``. The copy keeps the input's layout (a transposed input gives a transposed
    copy, as torch's clone), from storage offset 0."""

    @staticmethod
    def forward(ctx, a, src, size, stride, offset):
        out = a.copy(order="K")
        slot = _strided(_flat_storage(out), size, stride, offset)
        if slot.shape != src.shape:
            raise RuntimeError(f"expected src to have a size equal to the slice of self. src size = "
                               f"{list(src.shape)}, slice size = {list(slot.shape)}")
        slot[...] = src  # (where the slice overlaps itself, the last element written wins, as torch's)
        xp = xp_of(out)  # each slice element's index among out's elements (in out's own order)
        index = xp.empty_like(out, dtype=np.int64, order="K")
        index[...] = xp.arange(out.size).reshape(out.shape)
        ctx.taken = _strided(_flat_storage(index), size, stride, offset).reshape(-1)
        return out

    @staticmethod
    def backward(ctx, g):
        g = g.reshape(-1)
        grad_input = None
        if ctx.needs_input_grad[0]:
            grad_input = g.copy()
            grad_input[ctx.taken] = 0
            grad_input = grad_input.reshape(ctx.inputs[0].shape)
        grad_src = g[ctx.taken].reshape(ctx.inputs[1].shape) if ctx.needs_input_grad[1] else None
        return grad_input, grad_src


def as_strided_scatter(input, src, size, stride, storage_offset=None):
    """``torch.as_strided_scatter(input, src, size, stride, storage_offset=None)``: a copy of ``input``
    whose ``as_strided(size, stride, storage_offset)`` view holds ``src`` (cast to input's dtype).

    The gradient differs from torch 2.13's on purpose: torch's AsStridedScatterBackward gives
    ``input`` the gradient *inside* the slice and zero outside (its as_strided_scatter_backward
    copies ``grad``'s slice into zeros), where the values say the opposite: elements outside the
    slice are input's, elements inside are src's. minilora returns the true gradient (zero inside
    the slice, ``grad`` outside), which is also what torch gives for the same computation written
    as ``out = input.clone(); out.as_strided(...).copy_(src)``."""
    size, stride = _int_tuple(size), _int_tuple(stride)
    offset = 0 if storage_offset is None else int(storage_offset)
    array = input._array
    _check_geometry(size, stride, offset, array.size, array.itemsize)
    if src.dtype != input.dtype:
        src = src.to(input.dtype)
    return AsStridedScatter.apply(input, src, size=size, stride=stride, offset=offset)


# ---- in-place shape methods: x.t_(), x.transpose_(0, 1), x.squeeze_(), x.unsqueeze_(0) -------------
def _reshaped_in_place(tensor, view_op, *args):
    """``tensor`` becomes ``view_op(tensor, *args)``: a view of its own storage with a new shape, as
    torch's in-place view methods change a tensor's sizes and strides. torch's rules come with it: a
    leaf that requires grad refuses (outside ``no_grad``); the storage's version goes up (so an op
    that saved this tensor for backward raises there); in the graph the tensor takes the view op's
    node, whose input stands for the tensor as it was."""
    tensor._check_inplace()
    graph = tensor.requires_grad and tensor._ctx is not None and is_grad_enabled()
    if graph:
        before = Tensor._make(tensor._array, tensor._device, True, tensor._ctx)  # (no cycle: the node's
        before._counter = tensor._version_counter()  # input is this stand-in, not the tensor itself)
        result = view_op(before, *args)
    else:
        with no_grad():
            result = view_op(tensor, *args)
    strides = strides_answer(result.stride)  # (torch's: the view's, which NumPy's flags may not tell)
    tensor._array = result._array
    share_strides(tensor, strides)
    tensor._bump_version()
    if graph:
        tensor._ctx, tensor._view = result._ctx, None  # (a later in-place change through it: refused)
        tensor._ctx.watch_output(tensor)
    return tensor


def t_(self):
    """``x.t_()``: ``x`` transposed in place (see ``_reshaped_in_place``)."""
    return _reshaped_in_place(self, Tensor.t)


def transpose_(self, dim0, dim1):
    return _reshaped_in_place(self, transpose, dim0, dim1)


def squeeze_(self, dim=NO_DIM):
    return _reshaped_in_place(self, squeeze, dim)


def unsqueeze_(self, dim):
    return _reshaped_in_place(self, unsqueeze, dim)


# ---- x.resize_(sizes), x.resize_as_(other), x.sum_to_size(sizes) -------------------------------------------------
def _size_arguments(fn, sizes):
    """``x.fn(2, 3)`` or ``x.fn((2, 3))`` (a Size, list or tuple) as one tuple of ints, refused in the words of
    torch's argument parser (``factories.int_sizes``)."""
    return tuple(int(v) for v in int_sizes(sizes, fn))


def resize_(self, *sizes, memory_format=None):
    """``x.resize_(2, 3)``: ``x`` takes the shape in place, its elements kept in storage order (the first ones when
    it shrinks, as a view of the same memory; torch's new elements past the old ones are uninitialised memory,
    zeros here), contiguous. torch refuses it for a tensor that requires grad (no gradient passes a resize)."""
    size = _size_arguments("resize_", sizes)
    if any(d < 0 for d in size):
        raise RuntimeError(f"Trying to create tensor with negative dimension {min(size)}: {list(size)}")
    if self.requires_grad and is_grad_enabled():
        raise RuntimeError("cannot resize variables that require grad")
    self._check_inplace()
    array, count = self._array, math.prod(size)
    flat = array.reshape(-1) if array.flags.c_contiguous else array.ravel(order="K")  # (storage order)
    if count <= flat.size:
        resized = flat[:count].reshape(size)
    else:
        resized = xp_of(array).zeros(size, array.dtype)
        resized.reshape(-1)[:flat.size] = flat
    self._array, self._view = resized, None
    self._bump_version()
    return self


def resize_as_(self, the_template, memory_format=None):
    """``x.resize_as_(y)``: ``x.resize_(y.shape)``."""
    return resize_(self, tuple(the_template.shape), memory_format=memory_format)


def sum_to_size(self, *sizes):
    """``x.sum_to_size(1, 3)``: ``x`` summed down to a shape it broadcasts from (the gradient's reduction of a
    broadcast operand): over its leading dimensions and where ``sizes`` has a 1; ``x`` itself at its own shape."""
    if not sizes:  # (torch's parser: x.sum_to_size(()) sums everything, x.sum_to_size() is refused)
        raise TypeError('sum_to_size() missing 1 required positional arguments: "size"')
    size = _size_arguments("sum_to_size", sizes)
    lead = self.ndim - len(size)
    if lead < 0 or any(s != 1 and s != d for s, d in zip(size, self.shape[lead:])):
        raise RuntimeError(f"size {{{list(size)}}} is not expandable to size {{{list(self.shape)}}}.")
    if not size:  # ATen's sum_to: the size () is a full sum (so a 0-d bool or int tensor comes back int64)
        return self.sum()
    if tuple(self.shape) == size:
        return self
    dims = tuple(range(lead)) + tuple(lead + i for i, s in enumerate(size) if s == 1 and self.shape[lead + i] != 1)
    summed = self.sum(dim=dims, keepdim=True)  # (ATen's sum_to views it only to drop leading dims: its graph)
    return summed.reshape(size) if lead else summed


# ---- NumPy-named neighbours torch has: ravel, fliplr/flipud, rot90, hsplit/vsplit/dsplit, ... ---------
def ravel(input):
    """``torch.ravel``: the elements in one dimension, row by row: ``contiguous().view(-1)`` as torch's (a view
    of a contiguous input only; reshape would also view ``x[:, ::2]``)."""
    return reshape(input.contiguous(), (-1,))


def fliplr(input):
    """``torch.fliplr``: the columns (dim 1) reversed."""
    if input.ndim < 2:
        raise RuntimeError("Input must be >= 2-d.")
    return flip(input, 1)


def flipud(input):
    """``torch.flipud``: the rows (dim 0) reversed."""
    if input.ndim < 1:
        raise RuntimeError("Input must be >= 1-d.")
    return flip(input, 0)


class RecordedCopy(Function):
    """A copy of ``a`` where torch's op is one whose backward is another op on the gradient: rot90 by no turn
    (rot90(grad, 0)), a selection along a dim of a 0-d tensor (max, sort, median, cummax, ...: the gradient
    scattered into zeros). A clone's backward hands the gradient on as it is; under create_graph=True torch's
    gradient has a node of its own (requires grad, grad_fn), and so has this one's (its recorded backward is
    a RecordedCopy of the gradient)."""
    torch_layout = "contiguous"
    complex_grad = True  # (the identity)

    @staticmethod
    def forward(ctx, a):
        return a.copy()  # (C order: torch's rot90 copies contiguous)

    @staticmethod
    def backward(ctx, g):
        return g


def rot90(input, k=1, dims=(0, 1)):
    """``torch.rot90`` (see _rotated90), one node as torch's."""
    return name_node(_rotated90(input, k, dims), "Rot90Backward0", input, graph=(input,))


def _rotated90(input, k, dims):
    """``torch.rot90``: rotated ``k`` quarter turns in the plane of ``dims``, from the first
    towards the second (k < 0: the other way), as a flip and a transpose."""
    int_argument("rot90", "k", k)
    dims = tuple(dims)
    if len(dims) != 2:
        raise RuntimeError(f"expected total rotation dims == 2, but got dims = {len(dims)}")
    if input.ndim < 2:
        raise RuntimeError(f"expected total dims >= 2, but got total dims = {input.ndim}")
    first, second = _dims(dims, input.ndim)
    if first == second:
        raise RuntimeError(f"expected rotation dims to be different, but got dim0 = {dims[0]} and "
                           f"dim1 = {dims[1]}")
    turns = k % 4
    if turns == 1:
        return transpose(flip(input, second), first, second)
    if turns == 2:
        return flip(input, (first, second))
    if turns == 3:
        return transpose(flip(input, first), first, second)
    return RecordedCopy.apply(input)  # (torch returns a copy for no rotation, its gradient rot90(grad, 0))


def _split_named(name, input, indices_or_sections, dim, least_ndim):
    """hsplit / vsplit / dsplit: ``tensor_split`` along ``dim``, where a number of sections must
    divide the dimension evenly (NumPy's rule, torch's error)."""
    if input.ndim < least_ndim:
        raise RuntimeError(f"torch.{name} requires a tensor with at least {least_ndim} dimension, but "
                           f"got a tensor with {input.ndim} dimensions!")
    if isinstance(indices_or_sections, (int, np.integer)):
        size = input.shape[dim]
        if indices_or_sections == 0 or size % indices_or_sections:
            raise RuntimeError(f"torch.{name} attempted to split along dimension {dim}, but the size "
                               f"of the dimension {size} is not divisible by the split_size "
                               f"{indices_or_sections}!")
    return tensor_split(input, indices_or_sections, dim)


def hsplit(input, indices_or_sections):
    """``torch.hsplit``: split along dim 1 (dim 0 of a 1-D tensor)."""
    return _split_named("hsplit", input, indices_or_sections, 1 if input.ndim > 1 else 0, 1)


def vsplit(input, indices_or_sections):
    """``torch.vsplit``: split along dim 0 of a tensor of at least 2 dimensions."""
    return _split_named("vsplit", input, indices_or_sections, 0, 2)


def dsplit(input, indices_or_sections):
    """``torch.dsplit``: split along dim 2 of a tensor of at least 3 dimensions."""
    return _split_named("dsplit", input, indices_or_sections, 2, 3)


def _at_least(ndim, tensors):
    """atleast_1d/2d/3d: each tensor with leading (and for 3-D, trailing) size-1 dimensions added,
    as NumPy's: a vector becomes [1, n] and [1, n, 1], a matrix [m, n, 1]."""
    many = len(tensors) != 1 or isinstance(tensors[0], (list, tuple))
    flat = tuple(tensors[0]) if len(tensors) == 1 and isinstance(tensors[0], (list, tuple)) else tensors
    grown = []
    for t in flat:
        shape = t.shape
        if len(shape) >= ndim:  # (torch hands the tensor itself back)
            grown.append(t)
            continue
        if not shape:
            grown.append(reshape(t, (1,) * ndim))
            continue
        # (torch's ATen: unsqueeze(0) in front of a vector, unsqueeze(-1) behind for 3-D: their nodes and strides)
        grown.append(unsqueeze(unsqueeze(t, 0), -1) if len(shape) == 1 and ndim == 3
                     else unsqueeze(t, 0) if len(shape) == 1 else unsqueeze(t, -1))
    return tuple(grown) if many else grown[0]


def atleast_1d(*tensors):
    return _at_least(1, tensors)


def atleast_2d(*tensors):
    return _at_least(2, tensors)


def atleast_3d(*tensors):
    return _at_least(3, tensors)


def column_stack(tensors):
    """``torch.column_stack``: 0-D and 1-D tensors as columns, joined along dim 1."""
    return cat([reshape(t, (t.numel(), 1)) if t.ndim < 2 else t for t in _tensor_list(tensors, "column_stack")], 1)


def dstack(tensors):
    """``torch.dstack``: joined along dim 2, each first made at least 3-D."""
    return cat(list(atleast_3d(_tensor_list(tensors, "dstack"))), 2)


def narrow_copy(input, dim, start, length):
    """``torch.narrow_copy``: ``narrow``, as a new tensor."""
    return name_node(narrow(input, dim, start, length).clone(), "NarrowCopyBackward0", input, graph=(input,))


def split_with_sizes(input, split_sizes, dim=0):
    """``x.split_with_sizes(sizes, dim)``: ``split`` with a list of sizes."""
    return split(input, list(split_sizes), dim)
