"""Reductions over dimensions: sum, mean, prod, max/min, var/std, norm, all/any, and the softmax family.

Every reduction takes PyTorch's arguments in PyTorch's order -- ``x.sum(dim, keepdim)``,
``x.var(dim, unbiased, keepdim)``, ``x.norm(p, dim, keepdim)`` -- with ``dim`` an int, a tuple of
ints, or None (all dimensions). Like torch, NumPy's spellings ``axis=`` and ``keepdims=`` are
accepted as aliases.

float16 and bfloat16 tensors reduce as torch's do: the sum (mean, variance, norm, softmax's sums ...)
accumulates in float32 and is rounded to the 16-bit dtype once, at the end. NumPy alone would accumulate in
bfloat16: ``np.ones(4096, bfloat16).sum()`` is 256, where torch says 4096.

Backward of a reduction broadcasts the gradient back over the reduced axes; ``_expand_reduced``
re-inserts those axes (size 1) so NumPy broadcasting does the rest.

Two kinds of max, as in torch:

* ``x.max()`` over everything (and ``x.amax(dim)``) shares the gradient equally between tied maxima;
* ``x.max(dim)`` returns ``(values, indices)`` and the gradient goes only to the returned index
  (the first maximum), because the values are *gathered* at those indices (``ops/index.py``).
"""
import builtins  # this module's `sum`, `max`, `min`, `all`, `any` are ops; the builtins live here
import functools
import inspect
import math
import operator
import warnings

import numpy as np

from .. import amp as _amp, float32_math, float32_sums, parallel, return_types, std_sort
from ..device import META as _META, xp_of
from ..factories import in_iterator_layout
from ..fastmath import lane_sum, multiply_add
from ..dtypes import bool_argument, compute_dtype, get_default_dtype, int_argument, is_floating, promote_types, to_dtype
from ..dtypes import upcast
from ..dtypes import dtype_argument, torch_name
from ..tensor import Function, Tensor, name_node, no_grad, saves_as_torch, share_node, shows_values
from .elementwise import (AsType, _is_16bit_float, _power_kernel, _step, _torch_sign, backward_in_float32, complex_logaddexp,
                          computes_in_float32)
from .index import _gather, cast_to_dtype_argument, cumulative, quiet_float_errors, return_type
from .shape import NO_DIM, RecordedCopy, _dense, dim_given


def contiguous_result(cls):
    """A reduction whose result is contiguous, as torch allocates it (NumPy keeps the input's order of
    the dimensions left: ``x.permute(1, 0, 2).sum(-1)`` came out transposed)."""
    forward = cls.forward

    def laid_out(ctx, *args, **kwargs):
        out = forward(ctx, *args, **kwargs)
        return out if out.flags.c_contiguous else xp_of(out).asarray(out, order="C")
    cls.forward = staticmethod(laid_out)
    return cls

__all__ = ["sum", "mean", "prod", "max", "min", "amax", "amin", "argmax", "argmin", "var", "std",
           "norm", "all", "any", "softmax", "log_softmax", "logsumexp", "var_mean", "std_mean", "aminmax",
           "nansum", "nanmean"]


def _numpy_aliases(fn):
    """Accept NumPy's ``axis=`` / ``keepdims=`` for torch's ``dim=`` / ``keepdim=``, as torch does, and check
    ``keepdim`` as torch's parser does: a bool (``keepdim="no"`` kept the dimension, a truthy string).

    ``functools.wraps`` keeps ``fn``'s own signature visible to ``inspect.signature``."""
    position = _position_of(fn, "keepdim")

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        for alias, name in (("axis", "dim"), ("keepdims", "keepdim")):
            if alias in kwargs:
                if name in kwargs:
                    raise TypeError(f"{fn.__name__}() got both '{name}' and its alias '{alias}'")
                kwargs[name] = kwargs.pop(alias)
        keepdim = args[position] if position is not None and len(args) > position else kwargs.get("keepdim", False)
        if keepdim is not False and keepdim is not True:
            bool_argument(fn.__name__, "keepdim", keepdim)
        return fn(*args, **kwargs)
    return wrapper


def _position_of(fn, name):
    """The index of ``fn``'s parameter ``name`` among its positional ones (None: keyword-only, or none)."""
    parameters = list(inspect.signature(fn).parameters.values())
    for i, parameter in enumerate(parameters):
        if parameter.name == name:
            return i if parameter.kind is parameter.POSITIONAL_OR_KEYWORD else None
    return None


def _axes(axis, ndim):
    """Normalise ``axis`` (None, int or tuple, negatives allowed; ``()`` means all, as in torch) to a
    sorted tuple. A 0-d tensor accepts dims 0 and -1, as in torch."""
    if axis is None or (isinstance(axis, (tuple, list)) and len(axis) == 0):
        return tuple(range(ndim))
    axes = tuple(axis) if isinstance(axis, (tuple, list)) else (axis,)
    rank = builtins.max(ndim, 1)
    for ax in axes:
        if isinstance(ax, bool) or not hasattr(ax, "__index__"):  # ints, NumPy ints
            raise TypeError(f"dim must be an int or a tuple of ints, got {axis!r}")
    axes = tuple(operator.index(ax) for ax in axes)
    for ax in axes:
        if not -rank <= ax < rank:
            raise IndexError(f"Dimension out of range (expected to be in range of [{-rank}, "
                             f"{rank - 1}], but got {ax})")
    if ndim == 0:
        return ()
    normalised = tuple(sorted(ax % rank for ax in axes))
    if len(set(normalised)) != len(normalised):
        repeated = next(d for d in normalised if normalised.count(d) > 1)
        raise RuntimeError(f"dim {repeated} appears multiple times in the list of dims")
    return normalised


def _expand_reduced(g, axes, keepdims):
    """Give ``g`` back the reduced axes as size-1 axes, so it broadcasts over the input (one reshape: NumPy's
    expand_dims costs 1.7 us an axis, a tiny sum's backward twice over)."""
    if keepdims or not axes:
        return g
    ndim = g.ndim + len(axes)
    axes = {ax % ndim for ax in axes}
    kept = iter(g.shape)
    return g.reshape(tuple(1 if i in axes else next(kept) for i in range(ndim)))


def _spread(g, shape):
    """``g`` (the reduced axes back as size 1) broadcast over the input's ``shape``: a read-only view, as
    ``broadcast_to`` makes it (torch's expand); a one-element ``g`` (a whole-tensor sum's) through the
    ndarray constructor, stride 0 (0.6 us against broadcast_to's 2.3: the tiny-op path)."""
    if isinstance(g, np.generic):  # (mean's g / count of a 0-d g is a NumPy scalar)
        g = np.asarray(g)
    if type(g) is np.ndarray and g.size == 1 and not g.dtype.hasobject:
        view = np.ndarray(shape, g.dtype, g, 0, (0,) * len(shape))
        view.flags.writeable = False
        return view
    return xp_of(g).broadcast_to(g, shape)


def _count(shape, axes):
    return math.prod(shape[ax] for ax in axes)


@quiet_float_errors
@contiguous_result
class Sum(Function):
    @staticmethod
    def forward(ctx, a, axis=None, keepdims=False):
        ctx.axes, ctx.keepdims, ctx.shape = _axes(axis, a.ndim), keepdims, a.shape
        return _sum_as_torch(a, ctx.axes, keepdims)

    @staticmethod
    def backward(ctx, g):
        return _spread(_expand_reduced(g, ctx.axes, ctx.keepdims), ctx.shape)


_CASCADE_SUMMED = (np.float32, np.float64)  # the dtypes whose sums take torch's order (float32_sums)


def _sum_as_torch(a, axes, keepdims):
    """``a.sum(axes)``: float32, float64 and 16-bit floats in torch's order of additions where ``float32_sums``
    models it (their last bits are torch's: 16-bit accumulated in float32, rounded at each store into the
    output), otherwise NumPy's (16-bit: accumulated in float32, rounded once)."""
    total = float32_sums.torch_order_sum(a, axes)
    if total is None:
        total = a.sum(axis=axes, keepdims=keepdims, dtype=compute_dtype(a.dtype))
    elif keepdims:
        total = total.reshape(tuple(1 if i in axes else n for i, n in enumerate(a.shape)))
    return total.astype(a.dtype, copy=False)


def _mean(a, axes, keepdims, dtype=None):
    """``a.mean(axes)``; the mean of nothing is NaN, quietly, as in torch (NumPy warns "Mean of empty
    slice")."""
    if _count(a.shape, axes) == 0:
        total = a.sum(axis=axes, keepdims=keepdims, dtype=dtype)  # (only for its shape and dtype)
        return xp_of(a).full_like(total, np.nan)
    return a.mean(axis=axes, keepdims=keepdims, dtype=dtype)


@quiet_float_errors
@backward_in_float32  # (g / count, with count not rounded to 16 bits first)
@contiguous_result
class Mean(Function):
    @staticmethod
    def forward(ctx, a, axis=None, keepdims=False):
        ctx.axes, ctx.keepdims, ctx.shape = _axes(axis, a.ndim), keepdims, a.shape
        ctx.count = _count(a.shape, ctx.axes)
        return _mean_as_torch(a, ctx.axes, keepdims)

    @staticmethod
    def backward(ctx, g):
        g = _expand_reduced(g, ctx.axes, ctx.keepdims)
        if ctx.count:  # torch divides by the count (times 1/count is another number in 1 element of 5)
            wide = np.dtype(compute_dtype(g.dtype))
            g = (g.astype(wide, copy=False) / wide.type(ctx.count)).astype(g.dtype, copy=False)
        else:
            g = g * np.nan
        spread = _spread(g, ctx.shape)
        # torch divides the expanded gradient: a new tensor in its iterator's layout, not a broadcast view (an
        # expanded input's gradient then sums that tensor, in its order: x.expand(3, 4).mean(1))
        return in_iterator_layout(spread, [spread]) if type(spread) is np.ndarray else spread


def _mean_as_torch(a, axes, keepdims):
    """torch's CPU ``a.mean(axes)``: its sum divided by the count (16-bit: a float32 copy's, rounded once)."""
    count = _count(a.shape, axes)
    if a.dtype in _CASCADE_SUMMED and count:
        return _sum_as_torch(a, axes, keepdims) / a.dtype.type(count)
    if _is_16bit_float(a) and count and type(a) is np.ndarray:
        wide = _converted_as_torch(a, np.float32)
        return (_sum_as_torch(wide, axes, keepdims) / np.float32(count)).astype(a.dtype)
    mean = _mean(a, axes, keepdims, dtype=compute_dtype(a.dtype))  # 16-bit: in float32
    return mean.astype(a.dtype, copy=False)


def _converted_as_torch(a, dtype):
    """``a.to(dtype)`` laid out as torch's copy (preserve_format): the same strides where ``a`` is non-overlapping
    and dense, else C-contiguous."""
    return a.astype(dtype, order="K" if _dense(a) else "C")


def _row_products_as_torch(rows):
    """The product of each row of C-contiguous float32 or float64 [rows, width] as torch's ``prod`` multiplies it
    (``binary_kernel_reduce_vec``'s ``vectorized_inner_reduction``, its AVX2 build on AVX-512 CPUs too):
    four running 256-bit vectors (8 floats, 4 doubles) over the whole blocks of 32 (16), combined as
    ``(a0 a1)(a2 a3)``, their lanes left to right, then the elements after the last block one by one. A 1-D
    product of 32768+ elements on several threads: one chunk per thread (``float32_sums.thread_chunk``),
    multiplied in order."""
    if len(rows) == 1 and float32_sums.thread_chunk(rows.shape[1]) < rows.shape[1]:
        chunk, out = float32_sums.thread_chunk(rows.shape[1]), np.ones(1, rows.dtype)
        for start in range(0, rows.shape[1], chunk):
            out *= _vectorized_row_products(rows[:, start:start + chunk])
        return out
    return _vectorized_row_products(rows)


def _vectorized_row_products(rows):
    """``vectorized_inner_reduction``'s products of each row (see ``_row_products_as_torch``)."""
    lanes_per_vector = 32 // rows.itemsize
    block = 4 * lanes_per_vector
    count, width = rows.shape[1] // block, rows.shape[1]
    out = np.ones(len(rows), rows.dtype)
    if count:
        blocks = rows[:, :count * block].reshape(len(rows), count, 4, lanes_per_vector)
        running = blocks[:, 0].copy()
        for i in range(1, count):
            running *= blocks[:, i]
        lanes = (running[:, 0] * running[:, 1]) * (running[:, 2] * running[:, 3])
        for j in range(lanes_per_vector):
            out *= lanes[:, j]
    for k in range(count * block, width):
        out *= rows[:, k]
    return out


@quiet_float_errors
@contiguous_result
class Prod(Function):
    """Product along one axis, and its gradient as torch computes it: with no zero in the input,
    ``g * (result / input)``; otherwise the product of all the *other* elements, as (product of
    those before it) * (product of those after it), which stays right where dividing by a zero
    would give 0/0 (the running products accumulated as torch's cumprod, see ``cumulative``).

    torch multiplies 16-bit floats one at a time, each product rounded to 16 bits (unlike its sums);
    NumPy's float16 product runs in float32, so for 16-bit floats the loop is written out. The
    backward's steps are separate 16-bit ops in torch, each rounded: NumPy's 16-bit arithmetic
    rounds the same way."""

    @staticmethod
    def forward(ctx, a, axis, keepdims=False, whole=False):
        ctx.a, ctx.axis, ctx.keepdims, ctx.whole = a, axis, keepdims, whole
        if a.dtype in (np.float32, np.float64) and type(a) is np.ndarray and a.size and a.strides[axis] == a.itemsize:
            # (the product runs along contiguous memory: a row's, a transpose's column, an expanded row's)
            rows = np.moveaxis(a, axis, -1)
            out = _row_products_as_torch(rows.reshape(-1, a.shape[axis])).reshape(rows.shape[:-1] + (1,))
            out = np.moveaxis(out, -1, axis)
        elif a.itemsize != 2 or not is_floating(a.dtype) or a.shape[axis] == 0:
            out = a.prod(axis=axis, keepdims=True, dtype=a.dtype)  # (NumPy: int8 -> int64, bool -> int64)
        else:
            out = a.take([0], axis=axis)
            for k in range(1, a.shape[axis]):
                out = out * a.take([k], axis=axis)  # (one ufunc: rounded once per step)
        ctx.out = out
        return out if keepdims else out.squeeze(axis)

    @staticmethod
    def backward(ctx, g):
        xp, a, axis = xp_of(g), ctx.a, ctx.axis
        if a.shape[axis] == 0:  # an empty product (1) has no factors to send a gradient to
            return xp.zeros(a.shape, dtype=g.dtype)
        g = _expand_reduced(g, (axis,), ctx.keepdims)
        zeros = xp.count_nonzero(a == 0)
        if not zeros:
            return g * (ctx.out / a)
        if ctx.whole and zeros > 1:  # (torch's whole-tensor prod_backward, grad mode off: zeros_like, +0 where
            return xp.zeros(a.shape, dtype=g.dtype)  # g * 0 would be -0 for a negative g)
        ones = xp.ones_like(a.take([0], axis=axis))
        before = cumulative(xp.cumprod, xp.concatenate([ones, a.take(range(a.shape[axis] - 1), axis=axis)], axis), axis)
        flipped = xp.flip(a, axis=axis)
        after = xp.flip(cumulative(xp.cumprod, xp.concatenate(
            [ones, flipped.take(range(a.shape[axis] - 1), axis=axis)], axis), axis), axis=axis)
        return g * (before * after)


@contiguous_result
class AMax(Function):
    """Max over axes. Ties share the gradient equally (``torch.amax``, and ``torch.max`` without a
    dim). ``smallest=True`` is the min. A NaN max: ``amax``'s gradient is NaN everywhere, as
    torch's; with ``nan_shares=True`` (``max()`` without a dim) the NaNs share it, as torch's."""

    @staticmethod
    def forward(ctx, a, axis=None, keepdims=False, smallest=False, nan_shares=False):
        ctx.axes, ctx.keepdims, ctx.nan_shares = _axes(axis, a.ndim), keepdims, nan_shares
        if a.size == 0:  # (reducing other dims of an empty tensor is fine: an empty result)
            _refuse_empty_reduction("amin" if smallest else "amax", a.shape, axis, ctx.axes)
        out = (a.min if smallest else a.max)(axis=ctx.axes, keepdims=True)
        ctx.is_max = a == out
        if nan_shares and is_floating(a.dtype):
            ctx.is_max = ctx.is_max | (xp_of(a).isnan(a) & xp_of(a).isnan(out))
        return out if keepdims else out.squeeze(axis=ctx.axes)

    @staticmethod
    def backward(ctx, g):
        g = _expand_reduced(g, ctx.axes, ctx.keepdims)
        ties = ctx.is_max.sum(axis=ctx.axes, keepdims=True)
        if ctx.nan_shares:  # max()/min(): torch's evenly_distribute_backward fills zeros where picked: +0 elsewhere
            return xp_of(g).where(ctx.is_max, g / ties, g.dtype.type(0))
        return ctx.is_max * (g / ties)  # amax/amin: torch's scale_grad_by_count multiplies (-0, NaN as its)


def _refuse_empty_reduction(name, shape, axis, axes):
    """torch's errors for a max/min over nothing: over all of an empty tensor (RuntimeError), or
    along a dimension of size 0 (IndexError)."""
    if axis is None or axis == ():
        raise RuntimeError(f"{name}(): Expected reduction dim to be specified for input.numel() == 0. "
                           f"Specify the reduction dim with the 'dim' argument.")
    for ax in axes:
        if shape[ax] == 0:
            raise IndexError(f"{name}(): Expected reduction dim {ax} to have non-zero size.")


class ArgMax(Function):
    """Index of the first maximum (``smallest=True``: minimum) along one axis, or of the flattened
    tensor when ``axis`` is None. An index has no gradient: always run under ``no_grad``."""

    @staticmethod
    def forward(ctx, a, axis=None, keepdims=False, smallest=False):
        if a.size == 0 and (axis is None or a.shape[axis] == 0):
            if axis is None:
                raise IndexError(f"{'argmin' if smallest else 'argmax'}(): Expected reduction dim "
                                 f"to be specified for input.numel() == 0.")
            raise IndexError(f"{'argmin' if smallest else 'argmax'}(): Expected reduction dim "
                             f"{axis} to have non-zero size.")
        pick = a.argmin if smallest else a.argmax
        if axis is None:
            flat = pick()
            return xp_of(a).asarray(flat).reshape((1,) * a.ndim if keepdims else ())
        return pick(axis=axis, keepdims=keepdims)


def _whole_variance_as_torch(a, axes, correction):
    """The variance of a whole float32 or float64 array (one output) as torch's ``std_var_all_cpu`` computes it: the
    mean is torch's ``mean()`` (the cascade sum in the array's dtype, divided by the count), then the squared
    deviations added in float64 (``float32_sums.squared_deviation_sum``: its iterator's order, its loops' and
    threads' partial sums), divided by ``max(0, count - correction)`` -> float64, shaped as the reduction with
    kept dims; None for other arrays or layouts (the caller's Welford or NumPy formula)."""
    if type(a) is not np.ndarray or a.dtype not in _CASCADE_SUMMED or not a.size or _count(a.shape, axes) != a.size:
        return None
    total = float32_sums.cascade_sum(a, tuple(range(a.ndim)))
    squares = None if total is None else float32_sums.squared_deviation_sum(a, float(total / a.dtype.type(a.size)))
    if squares is None:
        return None
    return np.full([1] * a.ndim, np.float64(squares) / builtins.max(0, a.size - correction))


def _welford_variance(a, axes, correction):
    """The variance (float64, kept dims) as torch's WelfordOps projects it: M2 over ``count - correction``, or
    over 0 where the count is not above the correction; None where ``float32_sums.welford_moments`` is."""
    moments = float32_sums.welford_moments(a, axes)
    if moments is None:
        return None
    _, m2, count = moments
    divisor = count - correction if count > correction else 0
    shape = tuple(1 if axis in axes else n for axis, n in enumerate(a.shape))
    return (m2 / np.float64(divisor)).reshape(shape)


@quiet_float_errors
@computes_in_float32
@contiguous_result
class Var(Function):
    """Variance with Bessel's ``correction`` (PyTorch's default 1: the unbiased estimate); with
    ``root=True`` its square root, the standard deviation, taken before any rounding (torch's std is
    one kernel too: in bfloat16, ``sqrt`` of a rounded variance would round twice). d std = d var / (2 std),
    0 where std is 0 (torch's choice)."""

    @staticmethod
    def forward(ctx, a, axis=None, keepdims=False, correction=1, root=False, welford=False):
        xp = xp_of(a)
        ctx.axes, ctx.keepdims = _axes(axis, a.ndim), keepdims
        ctx.denom = builtins.max(_count(a.shape, ctx.axes) - correction, 0)
        # what backward uses, as torch's var_backward: self - self.mean(dim, keepdim=True), in a's dtype (16-bit:
        # the mean and the difference each rounded to it)
        half = getattr(ctx, "sixteen_bit_input", None)
        ctx.centered = a - _mean_as_torch(a, ctx.axes, keepdims=True) if half is None else \
            upcast(half - _mean_as_torch(half, ctx.axes, keepdims=True))
        # torch's CPU kernel accumulates float32 in float64 and rounds the result once
        with np.errstate(divide="ignore", invalid="ignore"):  # one sample: NaN, as torch (CuPy never warns)
            out = None if welford else _whole_variance_as_torch(a, ctx.axes, correction)
            if out is None:
                out = _welford_variance(a, ctx.axes, correction)
            if out is None:
                wide = a.astype(np.float64) if a.dtype == np.float32 else a
                centered = ctx.centered if wide is a else wide - _mean(wide, ctx.axes, keepdims=True)
                out = (centered ** 2).sum(axis=ctx.axes, keepdims=True) / ctx.denom
        out = (xp.sqrt(out) if root else out).astype(a.dtype, copy=False)
        ctx.std = out if root else None
        return out if keepdims else out.squeeze(axis=ctx.axes)

    @staticmethod
    def backward(ctx, g):
        xp = xp_of(g)
        g = _expand_reduced(g, ctx.axes, ctx.keepdims)
        with np.errstate(divide="ignore", invalid="ignore"):
            if ctx.std is not None:  # (std_backward: grad / (result * 2), a 16-bit tensor under a 16-bit input)
                std = _step(ctx, ctx.std)  # (the result torch saved: 16-bit; forward kept it unsqueezed, in float32)
                g = _step(ctx, xp.where(std == 0, 0, g / (2 * std)).astype(g.dtype, copy=False))
            # torch's var_backward: (2.0 / dof) * grad * (self - self.mean(dim, keepdim=True)), in that order, each
            # product one tensor op (16-bit: computed in float32, the number as float32, rounded)
            scale = 2.0 / ctx.denom if ctx.denom else float("nan")
            scaled = (np.float32(scale) * g.astype(np.float32)).astype(g.dtype) if _is_16bit_float(g) else scale * g
            return _step(ctx, scaled) * ctx.centered


def _norm_in_kernel_order(a, p, axes):
    """torch's norm kernel off its vectorized path: |a|^p by C's pow in the dtype (a square for p=2), added one
    by one (float32_sums.serial_sums), then pow(sum, 1/p) (sqrt for p=2)."""
    if p == 2:
        return np.sqrt(float32_sums.serial_sums(a, axes, squares=True))
    one, p = a.dtype.type(1), a.dtype.type(p)
    if a.dtype == np.float32:  # (C's powf, in float32 as NormOps' opmath type: not correctly rounded everywhere)
        power = float32_math.c_function2
        return power("powf", float32_sums.serial_sums(power("powf", np.abs(a), p), axes), one / p)
    power = float32_math.power64  # (C's pow, as float32's: NumPy's float64 power is not it in 1 element of 20)
    return power(float32_sums.serial_sums(power(np.abs(a), p), axes), one / p)


def p_norm(a, p, axes):
    """``(sum |a|^p)^(1/p)`` over ``axes`` (kept as size 1) for a finite ``p`` other than 0, as torch's
    norm_kernel_tensor_iterator_impl computes it for float32/float64: p=2 along contiguous memory vectorized
    (``float32_sums.two_norms``), else its reduce ops' order (``_norm_in_kernel_order``); NumPy's sums for other
    arrays. torch.norm, Tensor.norm and linalg.vector_norm all run this one kernel. Over dims of size 1 only (one
    element an output) torch's result is ``|a|`` (not ``pow(pow(|a|, p), 1/p)``: 539 of 3000 float64 off for p=3)."""
    if _count(a.shape, axes) == 1:
        return xp_of(a).abs(a)
    out = float32_sums.two_norms(a, axes, keepdims=True) if p == 2 else None  # (float32: torch's order)
    if out is None and type(a) is np.ndarray and a.size and a.dtype in _CASCADE_SUMMED:
        out = _norm_in_kernel_order(a, p, axes)
    if out is None:
        out = (xp_of(a).abs(a) ** p).sum(axis=axes, keepdims=True) ** (1.0 / p)
    return out


def _names_dims(axis):
    """Was a reduction given dims (``dim=0``, ``dim=[-1]``), not all of them (None, ``()``)?"""
    return axis is not None and not (isinstance(axis, (tuple, list)) and len(axis) == 0)


def number_norm_along_its_dim(a, p):
    """torch's p-norm of a 0-d float32/float64 tensor along dim 0 (or -1): its kernel's reduce ops run on the one
    element, ``pow(pow(|a|, p), 1 / p)`` in C's pow, where without a dim (and over a dim of size 1) torch gives
    ``|a|`` (``torch.tensor(x).norm(3, 0)``: 47 of 300 float32 values were |a|, an ulp off)."""
    if p in (1, 2) or type(a) is not np.ndarray or a.dtype not in (np.float32, np.float64):
        return xp_of(a).abs(a)  # (p = 1, 2: pow(pow(|a|, p), 1 / p) is |a| itself)
    if a.dtype == np.float32:
        power, p = float32_math.c_function2, np.float32(p)
        return power("powf", power("powf", np.abs(a), p), np.float32(1) / p).reshape(())
    return float32_math.power64(float32_math.power64(np.abs(a), p), 1.0 / p).reshape(())


def mean_as_torch(a, axes):
    """``a.mean(axes, keepdim=True)`` of a float32 or float64 array as torch's CPU mean: its sum (in torch's
    order), divided by the count."""
    count = _count(a.shape, axes)
    return _sum_as_torch(a, axes, True) / a.dtype.type(count) if count else _mean(a, axes, True)


@quiet_float_errors
@computes_in_float32
@contiguous_result
class PNorm(Function):
    """``(sum |a|^p)^(1/p)`` over axes for a finite ``p`` other than 0 and 1.

    d/da = sign(a) |a|^(p-1) / norm^(p-1); where the norm is 0 the gradient is 0, and for p < 1 where
    the element is 0 (torch's choice of subgradient, where the formula would give 0/0 or 0 * inf)."""

    @staticmethod
    def forward(ctx, a, p, axis=None, keepdims=False):
        ctx.a, ctx.p = a, p
        ctx.axes, ctx.keepdims = _axes(axis, a.ndim), keepdims
        out = number_norm_along_its_dim(a, p) if a.ndim == 0 and _names_dims(axis) else p_norm(a, p, ctx.axes)
        ctx.out = out
        return out if keepdims else out.squeeze(axis=ctx.axes)

    @staticmethod
    def backward(ctx, g):
        return norm_backward(ctx.a, ctx.out, ctx.p, _expand_reduced(g, ctx.axes, ctx.keepdims))


def vector_norm_backward(a, norm, p, g, axes):
    """torch's whole ``norm_backward`` (``norm`` and ``g`` with the reduced ``axes`` kept), its p = 1 and p = inf
    branches too: ``sgn(self) * grad``; ``sgn(self) * ((grad / mask.sum(dims)) * mask)``, ``mask`` the elements
    whose magnitude is the norm (or NaN), so a zero of the others keeps the sign of ``grad``'s."""
    xp = xp_of(g)
    if p == 1:
        return _torch_sign(a) * g
    if math.isinf(p):
        magnitude = xp.abs(a)
        mask = ((magnitude == norm) | xp.isnan(magnitude)).astype(a.dtype)
        with np.errstate(all="ignore"):
            return _torch_sign(a) * ((g / mask.sum(axis=axes, keepdims=True)) * mask)
    return norm_backward(a, norm, p, g)


def norm_backward(a, norm, p, g):
    """torch's norm_backward for a finite ``p`` other than 0 and 1 (``norm`` and ``g`` with the reduced dims kept),
    each branch in its order of tensor ops, the powers torch's pow kernel (``_power_kernel``): p = 2
    ``grad * (self / norm)``; p < 1 ``(sgn(self) |self|^(p-1) * grad) * norm^(1-p)`` (0 where self is 0, where
    the power would be inf); 1 < p < 2 ``sgn(self) |self|^(p-1) * (grad / norm^(p-1))``; p > 2 ``self
    |self|^(p-2) * (grad / norm^(p-1))``; 0 where the norm is 0."""
    xp = xp_of(g)
    with np.errstate(all="ignore"):
        safe = xp.where(norm == 0, 1, norm)
        if p == 2:
            return g * xp.where(norm == 0, 0, a / safe)
        if p < 1:
            scaled = _torch_sign(a) * xp.where(a == 0, 0, _power_kernel(xp.abs(a), p - 1))
            return (scaled * g) * _power_kernel(norm, 1 - p)
        scaled = _torch_sign(a) * _power_kernel(xp.abs(a), p - 1) if p < 2 else a * _power_kernel(xp.abs(a), p - 2)
        return scaled * xp.where(norm == 0, 0, g / _power_kernel(safe, p - 1))


@contiguous_result
class Logical(Function):
    """``all`` / ``any``: a bool result, no gradient (run under ``no_grad``)."""

    @staticmethod
    def forward(ctx, a, kind, axis=None, keepdims=False):
        axes = _axes(axis, a.ndim)
        return (a.all if kind == "all" else a.any)(axis=axes, keepdims=keepdims)


def _max_for_shift(a, axis):
    """``a.max(axis, keepdims=True)``: what softmax and logsumexp subtract before ``exp`` so that it
    cannot overflow. An empty ``axis`` has no max; its rows shift by 0 instead (what is shifted is
    empty anyway: torch's softmax of [] is [], its logsumexp is -inf)."""
    axes = _axes(axis, a.ndim)
    if a.size == 0 and _count(a.shape, axes) == 0:
        kept = tuple(1 if i in axes else n for i, n in enumerate(a.shape))
        return xp_of(a).zeros(kept, dtype=a.dtype)
    if axes == (a.ndim - 1,):  # (the last axis, contiguous rows: compiled for float32, the same bits)
        return float32_math.row_max(a)
    return a.max(axis=axes, keepdims=True)


def _row_sum_as_torch(a, axis, times=None):
    """``(a * times).sum(axis, keepdims=True)`` (``a``'s sum without ``times``), for float32 along the last
    axis in the order torch's softmax backward adds (``fastmath.lane_sum``: 16 running sums, folded in
    halves; the partial block's products fused on one thread, as torch's), so its gradients are torch's
    to the last bit."""
    products = a if times is None else a * times
    axis = axis % a.ndim if a.ndim else axis
    if _vectorized_along(a, axis) and axis != a.ndim - 1 and (times is None or times.dtype == a.dtype):
        return _sum_along_in_order(a, axis, times)
    if not _along_last_vectorized(a, axis) or (times is not None and times.dtype != a.dtype):
        return products.sum(axis=axis, keepdims=True)
    rows = [None if x is None else np.ascontiguousarray(x).reshape(-1, a.shape[-1]) for x in (a, times)]
    total = lane_sum(*rows, fuse_tail=parallel.num_threads() == 1, lanes=_torch_lanes(a.dtype))
    return total.reshape(a.shape[:-1] + (1,))


def _sum_along_in_order(a, axis, times=None):
    """``(a * times).sum(axis, keepdims=True)`` along an axis other than the last as torch's softmax backward kernels
    (``_vec_softmax_backward``) add it: each inner position's terms one after another from 0, a product fused into
    its running sum (GCC's multiply-add)."""
    blocks = _blocks_along(np.ascontiguousarray(a), axis)
    factors = None if times is None else _blocks_along(np.ascontiguousarray(times), axis)
    total = np.zeros((blocks.shape[0], 1, blocks.shape[2]), a.dtype)
    for d in range(blocks.shape[1]):
        if factors is None:
            total += blocks[:, d:d + 1]
        else:
            total = multiply_add(blocks[:, d:d + 1], factors[:, d:d + 1], total)
    return total.reshape(a.shape[:axis] + (1,) + a.shape[axis + 1:])


def _exp_as_torch(out, axis):
    """``exp(out)`` as log_softmax's backward computes it: SLEEF's (``_exp_as_vectorized``), but C's ``expf`` at the
    positions of its scalar loop along an axis other than the last (``_scalar_along``)."""
    e = _exp_as_vectorized(out)
    if _vectorized_along(out, axis) and axis % out.ndim != out.ndim - 1:
        blocks = _blocks_along(np.ascontiguousarray(out), axis % out.ndim)
        where = np.broadcast_to(_scalar_along(blocks), blocks.shape)
        if where.any():
            e = e.reshape(blocks.shape).copy()
            e[where] = _c_exp(blocks[where])
            e = e.reshape(out.shape)
    return e


def _scalar_along(blocks):
    """Which inner positions of [outer, size, inner] torch's kernels along a dim other than the last run in their
    scalar loop ([1, 1, inner]): inner positions in chunks of ``max(128 KiB / (itemsize size), lanes)`` rounded down
    to whole vectors, the last ``len % lanes`` of each chunk."""
    lanes, inner = _torch_lanes(blocks.dtype), blocks.shape[2]
    chunk = builtins.max(131072 // blocks.shape[1] // blocks.itemsize, lanes) // lanes * lanes
    position = np.arange(inner)
    start = position // chunk * chunk
    length = np.minimum(chunk, inner - start)
    return (position - start >= length - length % lanes).reshape(1, 1, inner)


def _exp_as_vectorized(a):
    """``exp`` as torch's vectorized loops compute it (``Vectorized<float>::exp`` and ``Vectorized<double>::exp``:
    SLEEF's; softmax's and log_softmax's), NumPy's for other dtypes."""
    if a.dtype == np.float32 and xp_of(a) is np:
        return float32_math.vectorized("exp", a)
    if a.dtype == np.float64 and type(a) is np.ndarray:
        return float32_math.vectorized64("exp", a)
    return xp_of(a).exp(a)


def _vectorized_along(a, axis):
    """Does torch run one of its float32 or float64 softmax kernels along ``axis`` here (a NumPy array with
    elements)? (One template each: ``Vectorized<double>`` for float64, half as many lanes, ``_torch_lanes``.)"""
    return a.dtype in (np.float32, np.float64) and type(a) is np.ndarray and a.size and a.ndim and isinstance(axis, int)


def _along_last_vectorized(a, axis):
    """Does torch run its float32 or float64 last-dimension softmax kernel here (``_vec_softmax_lastdim``,
    ``_vec_log_softmax_lastdim`` and their backward)?"""
    return _vectorized_along(a, axis) and axis % a.ndim == a.ndim - 1


def _torch_lanes(dtype):
    """The lanes of torch's vectors of ``dtype`` (float32's ``FLOAT_LANES``; a double is twice as wide)."""
    return float32_math.FLOAT_LANES // (np.dtype(dtype).itemsize // 4)


def _softmax_rows_as_torch(rows):
    """Softmax along each row of C-contiguous float32 [rows, width], as torch 2.13's
    ``_vec_softmax_lastdim``: SLEEF's ``exp(x - max)`` (``Vectorized<float>::exp``), summed as
    ``vec::reduce_all`` (``fastmath.lane_sum``), times the sum's reciprocal (dividing instead gives
    other last bits in a quarter of the elements)."""
    e = _exp_as_vectorized(rows - float32_math.row_max(rows))
    e *= (rows.dtype.type(1) / lane_sum(e, lanes=_torch_lanes(rows.dtype)))[:, None]
    return e


def _vector_positions(count, inner, grain, lanes=None):
    """Which of ``count`` softmax positions (flattened (outer, inner) pairs) torch's ``_vec_softmax`` runs
    in vectors of ``lanes`` (``FLOAT_LANES``; the rest: its scalar loop): each thread's range
    (``at::parallel_for`` with ``grain``; ``parallel.num_threads()`` taken as torch's) is cut at every row of
    ``inner`` positions, and each piece runs whole vectors from its start, its last ``len % lanes`` scalar."""
    lanes, chunk = lanes or float32_math.FLOAT_LANES, float32_sums.thread_chunk(count, grain)
    p = np.arange(count)
    row_start = p // inner * inner
    start = np.maximum(p // chunk * chunk, row_start)
    stop = np.minimum(np.minimum(p // chunk * chunk + chunk, count), row_start + inner)
    return p - start < (stop - start) // lanes * lanes


def _blocks_along(a, axis):
    """``a`` as [outer, size, inner] around ``axis`` (a view of a C-contiguous array)."""
    return a.reshape(math.prod(a.shape[:axis]), a.shape[axis], -1)


def _exps_and_sums(shifted, scalar):
    """SLEEF's exp of [outer, size, inner] ``shifted`` (C's ``expf`` where ``scalar`` [outer or 1, 1, inner] is set:
    torch's scalar loop; glibc's, which is not correctly rounded everywhere), and each (outer, inner) position's
    exps added in order from 0, as torch's kernels along a dim other than the last add them."""
    e = _exp_as_vectorized(shifted)
    if scalar.any():
        where = np.broadcast_to(scalar, e.shape)
        e[where] = _c_exp(shifted[where])
    total = e[:, 0].copy()
    for d in range(1, e.shape[1]):  # (in order: NumPy's reduction would add pairwise where inner is 1)
        total += e[:, d]
    return e, total


def _c_exp(x):
    """C's ``std::exp`` (glibc's) of a float32 or float64 array: torch's scalar loops."""
    return float32_math.c_function("expf", x) if x.dtype == np.float32 else float32_math.c_function64("exp", x)


def masked_softmax_rows_as_torch(rows, masked):
    """Softmax along each row of [rows, width] ``rows`` leaving out the keys where bool ``masked`` is set (their
    weight 0; a row with none left: NaN), as torch's ``_masked_softmax`` on the CPU (``host_softmax``, which
    nn.MultiheadAttention's inference kernel calls with a mask): one scalar loop per row -- the max of the kept
    keys, C's ``exp(x - max)``, the exps summed in order in the accumulate type (double for float32), their
    reciprocal, each exp times it. A 16-bit row rounds to its dtype after every step: the difference, the exp,
    the reciprocal and the product (c10's 16-bit operators)."""
    dtype = rows.dtype
    sixteen = dtype.itemsize == 2
    work, accumulate = (np.float32, np.float32) if sixteen else (dtype.type, np.float64)
    stored = (lambda v: v.astype(dtype).astype(np.float32)) if sixteen else (lambda v: v)  # noqa: E731
    x = rows.astype(work)
    kept_max = np.where(masked, -np.inf, x).max(axis=1, keepdims=True) if x.size else x[:, :1]
    shifted = stored(np.where(masked, work(0), x - kept_max))
    exps = np.where(masked, work(0), stored(_c_exp(shifted)))
    total = np.zeros(len(rows), accumulate)
    for column in exps.T.astype(accumulate):  # (in order along the row)
        total += column
    with np.errstate(divide="ignore", invalid="ignore"):  # (a row with every key masked: 0 * (1 / 0) = NaN)
        reciprocal = stored(accumulate(1) / total)
        return (exps.astype(accumulate) * reciprocal[:, None]).astype(dtype)


def _softmax_along_as_torch(a, axis, round_to=None):
    """Softmax of C-contiguous float32 ``a`` along an ``axis`` other than the last, as torch's
    ``_vec_softmax``: for each (outer, inner) position the max over the axis, ``_exps_and_sums`` (its
    scalar loop's positions: ``_vector_positions``), and each exp divided by the sum. ``round_to`` (a 16-bit
    input, widened): torch's 16-bit kernel, vectors of twice ``FLOAT_LANES`` 16-bit values, whose scalar loop
    stores each exp in the 16-bit output before dividing it by the (float32) sum."""
    blocks = _blocks_along(a, axis)
    outer, size, inner = blocks.shape
    # (grain 1: an even share a thread, whatever the size; ATen's float kernel asks std::min(GRAIN_SIZE / size, 1),
    # its 16-bit one 0: measured, a [37, 70] softmax(0) on 2 threads runs two ranges of 35 positions)
    lanes = _torch_lanes(a.dtype) if round_to is None else 2 * float32_math.FLOAT_LANES
    scalar = ~_vector_positions(outer * inner, inner, 1, lanes=lanes)
    scalar = scalar.reshape(outer, 1, inner)
    e, total = _exps_and_sums(blocks - blocks.max(axis=1, keepdims=True), scalar)
    if round_to is not None and scalar.any():
        where = np.broadcast_to(scalar, e.shape)
        e[where] = e[where].astype(round_to).astype(np.float32)
    e /= total[:, None]
    return e.reshape(a.shape)


def _log_softmax_sums_along_as_torch(shifted, axis):
    """The sums of ``exp(shifted)`` along an ``axis`` other than the last (keeping it, size 1), as torch's
    ``_vec_logsoftmax``: inner positions in chunks of ``max(128 KiB / 4 size, lanes)`` rounded down to
    whole vectors, the last ``len % lanes`` of each chunk in its scalar loop (``_exps_and_sums``)."""
    blocks = _blocks_along(shifted, axis)
    total = _exps_and_sums(blocks, _scalar_along(blocks))[1]
    return total.reshape(shifted.shape[:axis] + (1,) + shifted.shape[axis + 1:])


@quiet_float_errors
@computes_in_float32
class Softmax(Function):
    torch_layout = "contiguous"  # (from a channels_last input too: Function.torch_layout)

    @staticmethod
    def forward(ctx, a, axis=-1, round_to=None):
        xp = xp_of(a)
        a = xp.asarray(a, order="C")  # (torch's softmax runs on input.contiguous(): its result is contiguous)
        if _along_last_vectorized(a, axis):
            e = _softmax_rows_as_torch(a.reshape(-1, a.shape[-1])).reshape(a.shape)
        elif _vectorized_along(a, axis):
            e = _softmax_along_as_torch(a, axis % a.ndim, round_to)
        else:
            e = xp.exp(a - _max_for_shift(a, axis))  # shift by the max: no overflow
            e /= e.sum(axis=axis, keepdims=True)
        ctx.out, ctx.axis = e, axis
        return e

    @staticmethod
    def backward(ctx, g):  # J^T g = p * (g - <g, p>)
        # EXERCISE 1.6: the gradient of softmax along ctx.axis for the output gradient g (ctx.out: the output)
        # BEGIN SOLUTION
        p = ctx.out
        return (g - _row_sum_as_torch(g, ctx.axis, times=p)) * p
        # END SOLUTION


class SafeSoftmax(Softmax):
    """torch's ``_safe_softmax`` (what its math attention runs): softmax, with a row whose every input is -inf
    zeros instead of NaN. One node, as torch's: its backward is softmax's on the zeroed result, so such a row's
    gradient is ``0 * g``, a signed zero, as torch's ``_softmax_backward_data``."""

    @staticmethod
    def forward(ctx, a, axis=-1, round_to=None):
        out = Softmax.forward(ctx, a, axis, round_to)
        masked_rows = (a == -np.inf).all(axis=axis, keepdims=True)
        if masked_rows.any():
            out[np.broadcast_to(masked_rows, out.shape)] = 0
        return out


def _safe_softmax(input, dim):
    """``torch._safe_softmax(input, dim)`` of a floating tensor (see SafeSoftmax)."""
    return SafeSoftmax.apply(input, axis=_one_axis("_safe_softmax", dim, input.ndim))


@quiet_float_errors
@computes_in_float32
class LogSoftmax(Function):
    """``a - max - log(sum(exp(a - max)))``. ``round_to``: torch's 16-bit kernel along the last axis
    rounds the sum, then its log, to the 16-bit dtype before subtracting (bit for bit torch's)."""
    torch_layout = "contiguous"  # (from a channels_last input too: Function.torch_layout)

    @staticmethod
    def forward(ctx, a, axis=-1, round_to=None):
        xp = xp_of(a)
        a = xp.asarray(a, order="C")  # (a contiguous result, as Softmax's)
        shifted = a - _max_for_shift(a, axis)
        if round_to is None and _vectorized_along(a, axis):  # torch's float32 (and float64) kernels' sums
            if axis % a.ndim == a.ndim - 1:  # _vec_log_softmax_lastdim
                total = lane_sum(_exp_as_vectorized(shifted).reshape(-1, a.shape[-1]), lanes=_torch_lanes(a.dtype))
                total = total.reshape(a.shape[:-1] + (1,))
            else:
                total = _log_softmax_sums_along_as_torch(shifted, axis % a.ndim)
            # (the sums' logs by vec::map: SLEEF's, a partial vector last; float64's log: NumPy's, see vectorized64)
            total = (float32_math.vectorized if a.dtype == np.float32 else float32_math.vectorized64)("log", total)
            ctx.out, ctx.axis = shifted - total, axis
            return ctx.out
        total = xp.exp(shifted).sum(axis=axis, keepdims=True)
        with np.errstate(divide="ignore"):  # (an empty row sums to 0: its log is -inf, as torch's)
            out = shifted - (xp.log(total) if round_to is None else xp.log(total.astype(round_to)).astype(round_to))
        ctx.out, ctx.axis = out, axis
        return out

    @staticmethod
    def backward(ctx, g):  # g - softmax * sum(g)
        # EXERCISE 1.7: the gradient of log_softmax along ctx.axis for g (ctx.out: the output)
        # BEGIN SOLUTION
        return multiply_add(-_exp_as_torch(ctx.out, ctx.axis), _row_sum_as_torch(g, ctx.axis), g)
        # END SOLUTION


@quiet_float_errors
@contiguous_result
class LogSumExp(Function):
    """``m + log(sum(exp(a - m)))`` with ``m`` the max. For 16-bit floats torch runs these as separate
    ops, each rounding, with the sum accumulated in float32, and its backward ``g * exp(a - lse)`` as
    16-bit ops too; so do forward and backward here."""

    @staticmethod
    def forward(ctx, a, axis=-1, keepdims=False):
        xp = xp_of(a)
        ctx.axes, ctx.keepdims = _axes(axis, a.ndim), keepdims
        m = _max_for_shift(a, ctx.axes)
        m = xp.where(xp.isinf(m), m.dtype.type(0), m)  # torch's: an infinite max shifts by nothing, so
        # the result is +inf (or -inf when all are -inf) rather than nan from inf - inf
        if a.dtype in _CASCADE_SUMMED and xp is np:  # torch's composite: exp_ (MKL's), sum, log_ (MKL's), + max
            total = _sum_as_torch(float32_math.vml("exp", a - m), ctx.axes, True)  # (float64: NumPy's exp and
            with np.errstate(divide="ignore"):  # log, which gave MKL's in every element probed)
                lse = m + float32_math.vml("log", total)
        else:
            total = xp.exp(a - m).sum(axis=ctx.axes, keepdims=True, dtype=compute_dtype(a.dtype))
            with np.errstate(divide="ignore"):  # (nothing to sum: log(0) = -inf, torch's logsumexp of [])
                lse = m + xp.log(total.astype(a.dtype, copy=False))
        ctx.a, ctx.lse = a, lse
        return lse if keepdims else lse.squeeze(axis=ctx.axes)

    @staticmethod
    def backward(ctx, g):  # d lse / d a = softmax(a)
        g = _expand_reduced(g, ctx.axes, ctx.keepdims)
        return g * float32_math.vml("exp", ctx.a - ctx.lse)  # (torch's exp: MKL's for float32)


# ---- wrappers: torch's signatures ----------------------------------------------------------------
def _cast(input, dtype, fn, dim=None):
    """``dtype=``: convert before reducing, as torch does (so the sum itself runs in that dtype), inside the op:
    torch's graph has no node for it. With a ``dim``, one of sum's (mean's, prod's) signatures is left, so torch's
    parser names the argument that does not fit instead of the combination."""
    if dtype is None:
        return input
    return cast_to_dtype_argument(input, dtype_argument(fn, dtype, overloaded=None if dim is None else False))


def _no_grad_apply(op, *args, **options):
    with no_grad():  # an index or a bool never carries a gradient
        return op.apply(*args, **options)


def _squeeze_axes(t, axes):
    return t.reshape(tuple(n for i, n in enumerate(t.shape) if i not in axes))


@_numpy_aliases
def sum(input, dim=None, keepdim=False, *, dtype=None):  # noqa: A001  (torch.sum)
    """Sum over ``dim`` (int, tuple, or None for all). Integer and bool tensors sum as int64 (torch)."""
    if _amp.used and _amp.state.active:  # in an autocast region: torch's cast for this op (minilora/amp.py)
        return _amp.autocast_op("sum", sum, input, dim, keepdim, dtype=dtype)
    input = _cast(input, dtype, "sum", dim)
    if dtype is None and input.dtype.kind in "biu":
        input = input.to(dtype=np.dtype("int64"))
    if dim is None:  # (Sum's own name, SumBackward0: unnamed, free() keeps its sizes by Function.kept_when_freed)
        return Sum.apply(input, axis=dim, keepdims=keepdim)
    return shows_values(name_node(Sum.apply(input, axis=dim, keepdims=keepdim), "SumBackward1"), dim=dim,
                        keepdim=keepdim)


@_numpy_aliases
def nansum(input, dim=None, keepdim=False, *, dtype=None):
    """``torch.nansum``: ``sum`` with every NaN counted as zero (and given no gradient)."""
    dtype = dtype_argument("nansum", dtype)
    if input.dtype.kind == "c":  # (torch's CPU kernel has none for complex numbers)
        raise RuntimeError("nansum on CPU does not support complex inputs")
    from .elementwise import isnan, where
    # (torch's nansum is sum's loop with each NaN read as 0, on the input as laid out: without a NaN, sum of the input
    # itself is that order; the zeroed copy where(...) is C-contiguous, which summed a sliced input in another order)
    zeroed = where(isnan(input), 0, input) if is_floating(input.dtype) and _holds_nan(input) else input
    return name_node(sum(zeroed, dim, keepdim, dtype=dtype), "NansumBackward0", input, graph=(input,))


def _holds_nan(input):
    """Whether a floating tensor may hold a NaN (a meta tensor, without values, may)."""
    array = input._array
    return type(array) is not np.ndarray or bool(np.isnan(array).any())


@_numpy_aliases
def nanmean(input, dim=None, keepdim=False, *, dtype=None):
    """``torch.nanmean``: the mean of the elements that are not NaN, as torch composes it:
    ``nansum / count of non-NaN``."""
    from .elementwise import isnan, logical_not
    dtype = dtype_argument("nanmean", dtype)
    if dtype is not None and not is_floating(to_dtype(dtype)):
        raise RuntimeError(f"nanmean(): could not infer output dtype. Optional dtype must be either a "
                           f"floating point or complex dtype. Got: {torch_name(to_dtype(dtype))}")
    if input.dtype.kind == "c":  # (torch's nanmean is nansum's, which has no complex kernel)
        raise RuntimeError("nansum on CPU does not support complex inputs")
    if not is_floating(input.dtype):
        raise RuntimeError(f"nanmean(): expected input to have floating point or complex dtype but "
                           f"got {input.dtype}")
    return nansum(input, dim, keepdim, dtype=dtype) / sum(logical_not(isnan(input)), dim, keepdim)


@_numpy_aliases
def mean(input, dim=None, keepdim=False, *, dtype=None):
    input = _cast(input, dtype, "mean", dim)
    if not is_floating(input.dtype) and input.dtype.kind != "c":  # (complex: linalg.eig's results)
        raise RuntimeError(f"mean(): could not infer output dtype. Input dtype must be either a "
                           f"floating point or complex dtype. Got: {input.dtype}")
    if dim is None:
        return name_node(Mean.apply(input, axis=dim, keepdims=keepdim), "MeanBackward0")
    return shows_values(name_node(Mean.apply(input, axis=dim, keepdims=keepdim), "MeanBackward1"), dim=dim,
                        keepdim=keepdim)


@_amp.autocasts
@_numpy_aliases
def prod(input, dim=NO_DIM, keepdim=False, *, dtype=None):
    """Product of all elements, or along one ``dim`` (an int, as in torch)."""
    dim = dim_given("prod", dim)
    input = _cast(input, dtype, "prod", dim)
    if dtype is None and input.dtype.kind in "biu":
        input = input.to(dtype=np.dtype("int64"))
    if dim is None and input.ndim == 0:  # (torch's prod_backward hands a 0-d input the gradient itself)
        return name_node(input.clone(), "ProdBackward0", input)
    if dim is None:  # (torch: one ProdBackward0 on the input, no views around it)
        return name_node(Prod.apply(input.reshape(-1), axis=0, whole=True).reshape(()), "ProdBackward0", input,
                         graph=(input,))
    if isinstance(dim, (tuple, list)):
        raise TypeError("prod(): dim must be a single int (torch.prod reduces one dimension)")
    axis = _axes(dim, input.ndim)
    if not axis:  # a 0-d tensor: its product is itself
        return name_node(input.clone(), "ProdBackward1", input)
    return name_node(Prod.apply(input, axis=axis[0], keepdims=keepdim), "ProdBackward1", input)  # (prod.dim_int)


def _extreme(name, input, dim, keepdim, smallest, other=None):
    """``max``/``min`` with torch's three forms: everything, ``(values, indices)`` along a dim, or
    elementwise against another tensor (positional, or torch's keyword ``other=``)."""
    if other is not None:
        if dim is not None or keepdim or not isinstance(other, Tensor):
            raise TypeError(f"{name}() received an invalid combination of arguments: other= takes a "
                            f"tensor, without dim or keepdim")
        dim = other
    if isinstance(dim, Tensor):  # x.max(other): the elementwise maximum
        from .elementwise import maximum, minimum
        return (minimum if smallest else maximum)(input, dim)
    if input.dtype.kind == "c":  # (no order of complex numbers: torch's words for each form)
        if dim is None:
            raise NotImplementedError(f"\"{name}_all\" not implemented for '{torch_name(input.dtype)}'")
        raise RuntimeError(f"{name}(): does not support complex input")
    if dim is None:
        if keepdim:
            raise TypeError(f"{name}(): keepdim=True needs a dim (torch has no {name}(keepdim=True))")
        result = _all_ones_nan(AMax.apply(input, axis=None, keepdims=False, smallest=smallest, nan_shares=True), input)
        saves_as_torch(result, input, result)  # (AMax keeps a mask; torch the input and the result)
        return name_node(result, f"{name.capitalize()}Backward1")  # torch's node: MaxBackward1, MinBackward1
    if isinstance(dim, (tuple, list)):
        raise TypeError(f"{name}(): dim must be an int; for several dims use amax/amin "
                        f"(which return values only)")
    axes = _axes(dim, input.ndim)
    if input.ndim == 0:
        index = _no_grad_apply(ArgMax, input.reshape(1), axis=0, smallest=smallest).reshape(())
        return return_type(name)(name_node(RecordedCopy.apply(input), f"{name.capitalize()}Backward0", input), index)
    indices = _no_grad_apply(ArgMax, input, axis=axes[0], keepdims=True, smallest=smallest)
    values = _gather(input, axes[0], indices)  # (torch's node keeps the indices only)
    if not keepdim:
        values, indices = _squeeze_axes(values, axes), _squeeze_axes(indices, axes)
    return return_type(name)(name_node(values, f"{name.capitalize()}Backward0", input, graph=(input,)), indices)


@_numpy_aliases
def max(input, dim=NO_DIM, keepdim=False, *, other=None):  # noqa: A001  (torch.max)
    """``x.max()``: the largest element (ties share the gradient, as torch); ``x.max(dim)``:
    ``(values, indices)`` with the gradient at the returned index; ``x.max(other)`` or
    ``x.max(other=t)``: ``maximum``."""
    return _extreme("max", input, dim_given("max", dim), keepdim, smallest=False, other=other)


@_numpy_aliases
def min(input, dim=NO_DIM, keepdim=False, *, other=None):  # noqa: A001  (torch.min)
    """As ``max``, for the smallest."""
    return _extreme("min", input, dim_given("min", dim), keepdim, smallest=True, other=other)


@_numpy_aliases
def amax(input, dim=(), keepdim=False):
    """Max over ``dim`` (int or tuple; ``()`` all), values only; ties share the gradient equally."""
    return _amax(input, dim, keepdim, smallest=False)


@_numpy_aliases
def amin(input, dim=(), keepdim=False):
    return _amax(input, dim, keepdim, smallest=True)


def _amax(input, dim, keepdim, smallest):
    if input.dtype.kind == "c":
        raise NotImplementedError(f"\"{'min' if smallest else 'max'}_values_cpu\" not implemented for "
                                  f"'{torch_name(input.dtype)}'")
    result = AMax.apply(input, axis=dim, keepdims=keepdim, smallest=smallest)
    saves_as_torch(result, input, result)  # (AMax keeps a mask; torch the input and the result)
    return name_node(result, "AminBackward0", input) if smallest else result


def _arg_extreme(input, dim, keepdim, smallest):
    if input.dtype == np.bool_:  # (NumPy would answer; torch refuses)
        raise RuntimeError(f"{'argmin' if smallest else 'argmax'}(): does not support bool input")
    if dim is None:
        return _no_grad_apply(ArgMax, input, axis=None, keepdims=keepdim, smallest=smallest)
    if isinstance(dim, (tuple, list)):
        raise TypeError("argmax()/argmin(): dim must be an int")
    axes = _axes(dim, input.ndim)
    if input.ndim == 0:
        return _no_grad_apply(ArgMax, input, axis=None, smallest=smallest)
    return _no_grad_apply(ArgMax, input, axis=axes[0], keepdims=keepdim, smallest=smallest)


@_numpy_aliases
def argmax(input, dim=None, keepdim=False):
    """Index (int64) of the first maximum, in the flattened tensor when ``dim`` is None."""
    return _arg_extreme(input, dim, keepdim, smallest=False)


@_numpy_aliases
def argmin(input, dim=None, keepdim=False):
    return _arg_extreme(input, dim, keepdim, smallest=True)


def _correction(fn, dim, unbiased, correction):
    """torch's overloads: ``var(unbiased)``, ``var(dim, unbiased, keepdim)``, ``var(dim, *, correction)``.

    A bool in the first place is ``unbiased`` (``x.var(False)``), never a dim."""
    if isinstance(dim, bool):
        if unbiased is not None:
            raise TypeError(f"{fn}(): unbiased given twice")
        dim, unbiased = None, dim
    if unbiased is not None and correction is not None:
        raise TypeError(f"{fn}(): give either unbiased or correction, not both (as torch)")
    if correction is None:
        correction = 1 if unbiased is None else int(bool(unbiased))
    return dim, correction


@_numpy_aliases
def var(input, dim=None, unbiased=None, keepdim=False, *, correction=None):
    """Variance over ``dim``; ``unbiased=False`` or ``correction=0`` divides by N instead of N - 1."""
    return _variance("var", input, dim, unbiased, keepdim, correction, root=False)


def _variance(fn, input, dim, unbiased, keepdim, correction, root, welford=False):
    """var/std (``root``) through ``Var``; ``welford``: torch's Welford kernel even for one output (var_mean and
    std_mean take it always, as does any 16-bit variance: std_var_all_cpu is float32/float64's)."""
    if input.dtype.kind == "c":  # torch: the variances of the real and imaginary parts, summed (real)
        total = (_variance(fn, input.real, dim, unbiased, keepdim, correction, False, welford)
                 + _variance(fn, input.imag, dim, unbiased, keepdim, correction, False, welford))
        return total.sqrt() if root else total
    dim, correction = _correction(fn, dim, unbiased, correction)
    if not is_floating(input.dtype):  # NumPy would compute a float64 variance of integers; torch refuses
        raise RuntimeError("std and var only support floating point and complex dtypes")
    if _count(input.shape, _axes(dim, input.ndim)) - correction <= 0:  # (the result is inf or NaN)
        warnings.warn(f"{fn}(): degrees of freedom is <= 0. Correction should be strictly less than "
                      f"the reduction factor (input numel divided by output numel).", UserWarning,
                      stacklevel=3)
    welford = welford or input.dtype not in _CASCADE_SUMMED
    result = Var.apply(input, axis=dim, keepdims=keepdim, correction=correction, root=root, welford=welford)
    return saves_as_torch(result, input, result) if root else saves_as_torch(result, input)  # as torch


@_numpy_aliases
def std(input, dim=None, unbiased=None, keepdim=False, *, correction=None):
    """Standard deviation: the square root of ``var`` with the same arguments (in one op, as torch)."""
    return name_node(_variance("std", input, dim, unbiased, keepdim, correction, root=True), "StdBackward0", input)


@_numpy_aliases
@_amp.autocasts
def norm(input, p="fro", dim=None, keepdim=False, dtype=None):
    """``torch.norm`` / ``Tensor.norm``: the vector p-norm over ``dim`` (all elements when None).

    ``p`` is a number (2, 1, 3.5 ...), ``float('inf')`` / ``-inf`` (largest / smallest magnitude, ties
    share the gradient as in torch), 0 (the count of non-zeros), or ``'fro'`` (the 2-norm over at
    most two dims)."""
    dtype = None if dtype is None else dtype_argument("linalg_vector_norm", dtype)  # (torch.norm calls it)
    if isinstance(p, str) and p == "nuc":  # linalg.matrix_norm's nuclear norm, over a matrix's two dims by default
        from .. import linalg
        dims = tuple(range(input.ndim)) if dim is None else dim
        return linalg.matrix_norm(input, "nuc", dims, keepdim, dtype=dtype)
    if input.dtype.kind == "c":  # a complex tensor's norm is its magnitudes' (real, as torch's)
        input = input.abs()
    if not is_floating(input.dtype):
        raise RuntimeError(f"norm(): input dtype should be floating point, but got {input.dtype}")
    if dtype is not None and promote_types(input.dtype, to_dtype(dtype)) != to_dtype(dtype):
        raise RuntimeError(f"linalg.vector_norm: the dtype of the input ({torch_name(input.dtype)}) "
                           f"should be convertible without narrowing to the specified dtype "
                           f"({torch_name(to_dtype(dtype))})")
    input = _cast(input, dtype, "norm")
    if isinstance(p, str):
        if p != "fro":
            raise RuntimeError(f"linalg.matrix_norm: Order {p} not supported.")
        if isinstance(dim, (tuple, list)) and len(dim) > 2:
            raise RuntimeError(f"norm(): 'fro' norm takes at most 2 dims, got {tuple(dim)}")
        p = 2
    if p is None:  # torch: the default, the 2-norm
        p = 2
    if p == math.inf or p < 0:
        _refuse_empty_inf_norm(p, input.shape, dim)
    result = _vector_norm(input, p, dim, keepdim)
    if result is not input:  # torch's linalg_vector_norm keeps the input and the result, whatever p
        saves_as_torch(result, input, result)
    return name_node(result, "LinalgVectorNormBackward0", input, graph=(input,))  # torch's node


def _vector_norm(input, p, dim, keepdim):
    from .elementwise import abs as abs_
    if p == 0 or math.isinf(p) or (input.dtype.itemsize == 2 and p != 1):  # linalg.vector_norm's node (a 16-bit
        # input's backward in 16-bit steps: VectorNorm), torch's norm_backward: p=0 the count of non-zeros
        from ..linalg import VectorNorm, _as_dims, _norm_dims  # (NaN too) with no gradient at all (x.grad stays
        dims = _norm_dims(input, _as_dims(dim))  # None); +-inf shared among the extremes (and NaNs), sgn(x) *
        return VectorNorm.apply(input, ord=float(p), dims=dims, keepdim=keepdim)  # ((g / count) * mask): a zero
        # of the others keeps g's sign (abs's backward of amax's +0 gave sgn(x)'s)
    if p == 1 and input.dtype not in (np.float32, np.float64):  # (float32/64: PNorm adds in torch's order)
        return sum(abs_(input), dim, keepdim)
    return PNorm.apply(input, p=float(p), axis=dim, keepdims=keepdim)


def _refuse_empty_inf_norm(p, shape, dim):
    """torch's error for the largest (or smallest) magnitude among nothing, and for a negative p
    (no identity either: 0 ** (1/p) is inf): a RuntimeError, where amax/amin raise an IndexError
    for an empty dim."""
    name = {math.inf: "inf", -math.inf: "-inf"}.get(p, f"{p:g}")
    if math.prod(shape):
        return
    if dim is None or dim == ():
        raise RuntimeError(f"linalg.vector_norm cannot compute the {name} norm on an empty tensor "
                           f"because the operation does not have an identity")
    for ax in _axes(dim, len(shape)):
        if shape[ax] == 0:
            raise RuntimeError(f"linalg.vector_norm cannot compute the {name} norm on the dimension "
                               f"{ax} because this dimension is empty and the operation does not "
                               f"have an identity")


def _logical(kind, input, dim, keepdim):
    out = _no_grad_apply(Logical, input, kind=kind, axis=dim, keepdims=keepdim)
    if input.dtype == np.uint8:  # torch keeps uint8 for all/any of uint8 (a legacy rule); others: bool
        out = _no_grad_apply(AsType, out, dtype=np.dtype(np.uint8))
    return out


@_numpy_aliases
def all(input, dim=None, keepdim=False):  # noqa: A001  (torch.all)
    """True where every element (along ``dim``) is non-zero; a bool tensor."""
    return _logical("all", input, dim, keepdim)


@_numpy_aliases
def any(input, dim=None, keepdim=False):  # noqa: A001  (torch.any)
    return _logical("any", input, dim, keepdim)


def _one_axis(fn, dim, ndim):
    """``dim`` checked as one int in range (the common case costs one comparison)."""
    if type(dim) is int and -ndim <= dim < ndim:
        return dim
    if dim is None or isinstance(dim, (tuple, list)):
        raise TypeError(f"{fn}() missing 1 required positional argument: 'dim' (an int)")
    axes = _axes(dim, ndim)  # raises torch's IndexError when out of range
    return axes[0] if axes else None  # (a 0-d tensor: over its one element)


@_numpy_aliases
def softmax(input, dim, dtype=None):
    """Softmax along ``dim`` (required, as ``Tensor.softmax``)."""
    if _amp.used and _amp.state.active:  # in an autocast region: torch's cast for this op (minilora/amp.py)
        return _amp.autocast_op("softmax", softmax, input, dim, dtype)
    input = _float_input("softmax", input, dtype, dim)
    axis = _one_axis("softmax", dim, input.ndim)
    if not is_floating(input.dtype):
        return input.clone()
    if input.dtype.itemsize == 2 and axis is not None and axis % input.ndim != input.ndim - 1:
        return Softmax.apply(input, axis=axis, round_to=input.dtype)  # (16-bit, not the last dim; 0-d: no axis)
    return Softmax.apply(input, axis=axis)


@_numpy_aliases
def log_softmax(input, dim, dtype=None):
    if _amp.used and _amp.state.active:  # in an autocast region: torch's cast for this op (minilora/amp.py)
        return _amp.autocast_op("log_softmax", log_softmax, input, dim, dtype)
    input = _float_input("log_softmax", input, dtype, dim)
    axis = _one_axis("log_softmax", dim, input.ndim)
    if not is_floating(input.dtype):  # (empty: see _float_input)
        return input.clone()
    last = axis in (-1, input.ndim - 1) and input.dtype.itemsize == 2  # 16-bit, along the last axis
    return LogSoftmax.apply(input, axis=axis, round_to=input.dtype if last else None)


def _float_input(name, input, dtype, dim):
    """``input`` cast to ``dtype``; an integer tensor without a float ``dtype`` is refused, as in
    torch (``x.softmax(0, dtype=torch.float32)`` is its way), not computed in NumPy's float64.
    An empty one is returned as it is: torch's kernel never runs on no element (an empty int64 result)."""
    if dtype is not None:  # (torch's .to)
        input = cast_to_dtype_argument(input, dtype_argument(name, dtype), inside=False)
    if input.dtype.kind == "c" and input.numel():  # (torch's kernel over the last dim, or its general one)
        last = not isinstance(dim, int) or input.ndim <= 1 or dim % input.ndim == input.ndim - 1
        kernel = f"{name}_lastdim_kernel_impl" if last else f"{name}_kernel_impl"
        raise NotImplementedError(f"\"{kernel}\" not implemented for '{torch_name(input.dtype)}'")
    if not is_floating(input.dtype) and input.numel():
        raise NotImplementedError(f'"{name}" not implemented for {input.dtype} tensors: pass a '
                                  f'floating dtype= or call .float() first')
    return input


@_numpy_aliases
@_amp.autocasts
def logsumexp(input, dim, keepdim=False):
    """``log(sum(exp(x)))`` over ``dim`` (required, as in torch), computed without overflow.
    Integer input computes in the default float dtype, as torch's (not NumPy's float64)."""
    if dim is None:  # (LogSumExp would reduce everything; torch refuses)
        raise TypeError("logsumexp(): argument 'dim' must be tuple of ints, not NoneType")
    if input.dtype.kind == "c":
        return _complex_logsumexp(input, dim, keepdim)
    if not is_floating(input.dtype):
        input = input.to(get_default_dtype())
    return name_node(LogSumExp.apply(input, axis=dim, keepdims=keepdim), "LogsumexpBackward0", input)


def logsumexp_summed_in(input, dim, keepdim=False, *, dtype):
    """``torch.logsumexp(input, dim, out=out)`` into a wider floating ``out`` (``dtype``), in torch's steps
    (ATen's logsumexp_out_impl): the shifted exponentials in the input's dtype, their sum, log and shift in the
    out's -- neither the input's logsumexp widened nor the widened input's logsumexp."""
    if input.dtype.kind == "c":  # (a complex logsumexp: out= casts its complex result, or refuses to)
        return logsumexp(input, dim, keepdim)
    if not is_floating(input.dtype):
        input = input.to(get_default_dtype())
    if input.numel() == 0 or np.dtype(dtype).itemsize <= np.dtype(input.dtype).itemsize:
        return logsumexp(input, dim, keepdim)
    shift = input.amax(dim, keepdim=True)
    shift = shift.masked_fill(shift.abs() == float("inf"), 0)  # (all -inf, or an inf: no shift, in both steps)
    return sum((input - shift).exp(), dim, keepdim=keepdim, dtype=dtype).log() + (
        shift if keepdim else shift.squeeze(dim))


def _complex_logsumexp(z, dim, keepdim):
    """A complex logsumexp (torch's result is complex): ``m + log(sum(exp(z - m)))``, ``m`` the largest real
    part (only the real parts can overflow exp); its gradient flows through exp, sum and log."""
    shift = z.real.detach().amax(dim, keepdim=True)
    out = (z - shift).exp().sum(dim, keepdim=True).log() + shift
    return out if keepdim else out.squeeze(dim)


@_numpy_aliases
def var_mean(input, dim=None, unbiased=None, keepdim=False, *, correction=None):
    """``torch.var_mean``: the tuple ``(var, mean)`` over ``dim``, with ``var``'s arguments."""
    return _one_node("VarMeanBackward0", input,
                     _variance("var_mean", input, dim, unbiased, keepdim, correction, False, welford=True),
                     _welford_mean(input, dim if not isinstance(dim, bool) else None, keepdim))


@_numpy_aliases
def std_mean(input, dim=None, unbiased=None, keepdim=False, *, correction=None):
    """``torch.std_mean``: the tuple ``(std, mean)`` over ``dim``, with ``std``'s arguments."""
    return _one_node("StdMeanBackward0", input,
                     _variance("std_mean", input, dim, unbiased, keepdim, correction, True, welford=True),
                     _welford_mean(input, dim if not isinstance(dim, bool) else None, keepdim))


def _one_node(name, input, *results):
    """torch computes var_mean/std_mean (aminmax) in one node that both results share (on the input alone)."""
    return share_node(tuple(name_node(r, name, input, graph=(input,)) for r in results))


def _welford_mean(input, dim, keepdim):
    """The mean var_mean/std_mean return (``WelfordMean``); torch's one node saves ``self`` for both results, so
    changing the input in place before a backward through the mean alone is its error too."""
    return saves_as_torch(WelfordMean.apply(input, axis=dim, keepdims=keepdim), input)


@quiet_float_errors
@contiguous_result
class WelfordMean(Mean):
    """var_mean's and std_mean's mean: torch finds it in the variance's WelfordOps pass, a running mean in double
    moved by ``(x - mean) / n`` and cast to the dtype (a 16-bit one through float32, as c10's Half(double) and
    BFloat16(double) convert), which is not ``mean()``'s sum / count in the last bits: var_mean of 3 float64
    numbers differs from mean() in 1 row of 5. An infinity followed by any other element gives NaN
    (``inf - inf``), where ``mean()`` gives the infinity: ``var_mean([-inf, -inf])`` has mean NaN,
    ``var_mean([1, -inf])`` -inf. Its gradient is mean's."""

    @staticmethod
    def forward(ctx, a, axis=None, keepdims=False):
        ctx.axes, ctx.keepdims, ctx.shape = _axes(axis, a.ndim), keepdims, a.shape
        ctx.count = _count(a.shape, ctx.axes)
        moments = float32_sums.welford_moments(a, ctx.axes)
        if moments is None:
            return _mean_as_welford(a, ctx.axes, keepdims)
        mean = moments[0].astype(np.float32 if a.itemsize == 2 else a.dtype).astype(a.dtype, copy=False)
        return mean.reshape([1 if axis in ctx.axes else n for axis, n in enumerate(a.shape)]) if keepdims else mean


def _mean_as_welford(a, axes, keepdims):
    """WelfordMean's values off ``welford_moments`` (a CuPy array, nothing to reduce): the mean in float64 for
    float32 (rounded once), NaN where an infinity is not the only non-finite element or not the last."""
    xp = xp_of(a)
    wide = a.astype(np.float64) if a.dtype == np.float32 else a
    out = _mean(wide, axes, keepdims, dtype=compute_dtype(a.dtype)).astype(a.dtype, copy=False)
    non_finite = ~xp.isfinite(a)
    if not non_finite.any():
        return out
    count = non_finite.sum(axis=axes, keepdims=keepdims)
    last = non_finite[tuple(-1 if i in axes else slice(None) for i in range(a.ndim))]
    last_only = (count == 1) & (xp.expand_dims(last, axes) if keepdims else last)  # (an inf last: kept)
    return xp.where((count > 0) & ~last_only, xp.asarray(np.nan, a.dtype), out)


_AminMax = return_types.make("aminmax", ["min", "max"])  # torch.return_types.aminmax


@_numpy_aliases
def aminmax(input, *, dim=None, keepdim=False):
    """``torch.aminmax``: the named tuple ``(min, max)`` over ``dim`` (all elements when None);
    ties share the gradient, as ``amin``/``amax``."""
    if input.dtype.kind == "c":
        raise NotImplementedError(f"\"aminmax_cpu\" not implemented for '{torch_name(input.dtype)}'")
    if dim is not None:  # (one dim: amin/amax below would take a list and reduce over all of it)
        int_argument("aminmax", "dim", dim)
    if input.numel() == 0 and dim is None:
        raise RuntimeError("aminmax(): cannot compute aminmax over an empty dimension as the "
                           "operation has no identity.")
    pair = _one_node("AminmaxBackward0", input, amin(input, dim, keepdim), amax(input, dim, keepdim))
    return _AminMax(*(pair if dim is not None else (_all_ones_nan(t, input) for t in pair)))


_ALL_ONES_NAN = {np.dtype(np.float32): np.uint32(0xFFFFFFFF), np.dtype(np.float64): np.uint64(0xFFFFFFFFFFFFFFFF),
                 np.dtype(np.float16): np.uint16(0xFE00)}  # (float16's: the float32 one converted)


def _all_ones_nan(result, input):
    """A NaN from torch's vectorized max / min / aminmax over all elements (of two or more) has every bit set: its
    maximum ORs the unordered compare's all-ones mask in (measured: float32 0xffffffff, float64 likewise, float16
    0xfe00; bfloat16 and amax / amin / a dim's reduction keep the canonical NaN). ``result``'s array set in place."""
    array = result._array
    bits = _ALL_ONES_NAN.get(getattr(array, "dtype", None))
    if bits is not None and type(array) is np.ndarray and input.numel() >= 2:
        nan = np.isnan(array)
        if nan.any():
            array.view(bits.dtype)[nan] = bits
    return result


# ---- logcumsumexp, nanmedian -----------------------------------------------------------------------
@quiet_float_errors
class LogCumSumExp(Function):
    """``log(cumsum(exp(a)))`` along ``axis`` without overflow (NumPy's ``logaddexp.accumulate``).

    d out_j / d a_i = exp(a_i - out_j) for i <= j, so a_i's gradient is ``sum_{j >= i} g_j
    exp(a_i - out_j)``: summed in log space, the positive and the negative g apart (as torch's formula),
    so that no ``exp`` overflows. 16-bit floats: torch's formula is 16-bit tensor ops, each rounding its result,
    and so are NumPy's ufuncs on 16-bit arrays (the scans run in float32, as torch's). Complex: torch's scan of its complex logaddexp, and its gradient
    ``conj(exp(a + reversed_logcumsumexp(log(conj(g)) - out)))`` (no sign split needed)."""
    torch_layout = "contiguous"  # (torch's CPU kernel writes a contiguous result: Function.torch_layout)
    complex_grad = True  # (the backward below takes a complex g itself)

    @staticmethod
    def forward(ctx, a, axis):
        ctx.a, ctx.axis = a, axis
        a = xp_of(a).asarray(a, order="C")  # (a contiguous result, as torch's)
        if a.dtype.kind == "c":
            ctx.out = _complex_log_cumsum_exp(a, axis)
            return ctx.out
        ctx.out = _log_cumsum_exp_scan(a, axis)
        return ctx.out

    @staticmethod
    def backward(ctx, g):
        xp, axis = xp_of(g), ctx.axis
        if not g.size:
            return g

        if g.dtype.kind == "c":
            reversed_sums = xp.flip(_complex_log_cumsum_exp(xp.flip(xp.log(xp.conj(g)) - ctx.out, axis), axis), axis)
            return xp.conj(xp.exp(reversed_sums + ctx.a))

        def reversed_logcumsumexp(x):  # log(sum_{j >= i} exp(x_j)), along axis: torch's scan, reversed
            return xp.flip(_log_cumsum_exp_scan(xp.flip(x, axis), axis), axis)
        # torch's logcumsumexp_backward, op by op: log|g| where g has that sign, else the dtype's lowest number
        lowest = g.dtype.type(np.finfo(g.dtype).min)
        with np.errstate(divide="ignore"):
            log_abs = float32_math.vml("log", xp.abs(g))
        positive = reversed_logcumsumexp(xp.where(g > 0, log_abs, lowest) - ctx.out)
        negative = reversed_logcumsumexp(xp.where(g < 0, log_abs, lowest) - ctx.out)
        with np.errstate(over="ignore"):
            return float32_math.vml("exp", positive + ctx.a) - float32_math.vml("exp", negative + ctx.a)


def _log_cumsum_exp_scan(a, axis):
    """torch's real logcumsumexp scan along ``axis``: the running value carried in its acc_type (double for float32,
    float for 16-bit floats), each output rounded (NumPy's ``logaddexp.accumulate``); a contiguous result."""
    a = xp_of(a).asarray(a, order="C")
    wide = a.astype(np.float64) if a.dtype == np.float32 else a.astype(np.float32) if a.itemsize == 2 else a
    return xp_of(a).logaddexp.accumulate(wide, axis=axis).astype(a.dtype) if a.size else a.copy()


def _complex_log_cumsum_exp(a, axis):
    """torch's complex scan: out_0 = a_0, out_i = logaddexp(out_(i-1), a_i) (its complex helper)."""
    xp = xp_of(a)
    steps = xp.moveaxis(a, axis, 0)
    out = xp.empty_like(steps)
    if steps.shape[0]:
        out[0] = steps[0]
    for i in range(1, steps.shape[0]):
        out[i] = complex_logaddexp(xp, out[i - 1], steps[i])
    return xp.ascontiguousarray(xp.moveaxis(out, 0, axis))


def logcumsumexp(input, dim):
    """``torch.logcumsumexp``: ``log(cumsum(exp(input)))`` along ``dim``, computed without overflow
    (floating dtypes only, as torch's kernel)."""
    if not is_floating(input.dtype) and input.dtype.kind != "c":
        raise NotImplementedError(f'"logcumsumexp_out_cpu" not implemented for '
                                  f'\'{torch_name(input.dtype)}\'')
    axis = _one_axis("logcumsumexp", dim, input.ndim)
    if input.ndim == 0:
        return name_node(input.clone(), "LogcumsumexpBackward0", input)
    return LogCumSumExp.apply(input, axis=axis)


@_numpy_aliases
def nanmedian(input, dim=NO_DIM, keepdim=False):
    """``torch.nanmedian``: ``median`` of the elements that are not NaN (NaN where all are).
    Without ``dim`` the lower median of all elements (ties share the gradient, as ``median``);
    with ``dim`` the named tuple ``(values, indices)``, each value's gradient to its index.
    Shown as torch's one node of the input (NanmedianBackward0, 1 with ``dim``), whichever ops computed it."""
    dim = dim_given("nanmedian", dim)
    if dim is not None:  # (one dim: a list was read as its first)
        int_argument("nanmedian", "dim", dim)
    result = _nanmedian(input, dim, keepdim)
    values = result if dim is None else result[0]
    if isinstance(input, Tensor) and is_floating(input.dtype):  # (an integer input: median's own node)
        name_node(values, f"NanmedianBackward{int(dim is not None)}", input, graph=(input,))
    return result


def _nanmedian(input, dim, keepdim):
    from .index import _sort_order, median
    if not is_floating(input.dtype):  # (no NaN to leave out: torch's median, under its own name)
        out = median(input) if dim is None else median(input, dim, keepdim)
        return out if dim is None else return_type("nanmedian")(*out)
    if dim is None:
        nan = input.isnan()
        if bool(nan.any()) and not bool(nan.all()):  # (all NaN: median's NaN, as torch)
            return median(input[~nan])
        return median(input)
    if input.ndim == 0 or input.shape[_axes(dim, input.ndim)[0]] == 0:
        return return_type("nanmedian")(*median(input, dim, keepdim))
    axis = _axes(dim, input.ndim)[0]
    xp = xp_of(input._array)
    order = _sort_order(input, axis)._array  # NaN sorts last (stable)
    counts = (~xp.isnan(input._array)).sum(axis=axis, keepdims=True)
    middle = xp.take_along_axis(order, xp.maximum(counts - 1, 0) // 2, axis=axis)
    # a row all NaN: torch's std::nth_element orders none of them, and leaves this one first
    middle = xp.where(counts == 0, std_sort.nth_among_equals(input.shape[axis], 0), middle)
    indices = Tensor(xp.ascontiguousarray(middle, dtype=np.int64), dtype=np.int64, device=input.device)  # (torch's:
    values = _gather(input, axis, indices)  # contiguous, whatever the input's layout)
    if not keepdim:
        values, indices = values.squeeze(axis), indices.squeeze(axis)
    return return_type("nanmedian")(values, indices)


# ---- quantile / nanquantile ----------------------------------------------------------------------
_INTERPOLATIONS = ("linear", "lower", "higher", "midpoint", "nearest")


@_amp.autocasts
@_numpy_aliases
def quantile(input, q, dim=None, keepdim=False, *, interpolation="linear"):  # noqa: A002
    """``torch.quantile``: the ``q``-th quantiles along ``dim`` (all elements when None), as torch
    computes them: sort, take the values at ranks ``q * (n - 1)`` and interpolate between the two
    around it. A row with a NaN gives NaN. ``q`` is a number or a 1-D tensor (then the result has a
    leading dimension of its length). The gradient reaches the (at most two) elements used."""
    return _quantile("quantile", input, q, dim, keepdim, interpolation, ignore_nan=False)


@_amp.autocasts
@_numpy_aliases
def nanquantile(input, q, dim=None, keepdim=False, *, interpolation="linear"):  # noqa: A002
    """``torch.nanquantile``: ``quantile`` of the elements that are not NaN (NaN where all are)."""
    return _quantile("nanquantile", input, q, dim, keepdim, interpolation, ignore_nan=True)


def _quantile_q(name, input, q):
    """``q`` as a float64 NumPy vector, and whether it was a scalar (no leading dimension)."""
    if isinstance(q, Tensor):
        if q.ndim > 1:
            raise RuntimeError(f"{name}() q must be a scalar or 1D tensor")
        if q.dtype != input.dtype:
            raise RuntimeError(f"{name}() q tensor must be same dtype as the input tensor")
        if q.is_meta:  # (no values to check: as many quantiles, as torch's meta kernel)
            return np.zeros(q.numel()), q.ndim == 0
        values, scalar = np.asarray(q.detach().cpu().numpy(), dtype=np.float64), q.ndim == 0
    else:
        values, scalar = np.asarray(float(q)), True
    if ((values < 0) | (values > 1)).any():
        raise RuntimeError(f"{name}() q values must be in the range [0, 1]")
    return values.reshape(-1), scalar


def _quantile(name, input, q, dim, keepdim, interpolation, ignore_nan):
    from .elementwise import lerp
    from .index import sort
    from .shape import movedim
    if input.dtype not in (np.float32, np.float64):
        raise RuntimeError(f"{name}() input tensor must be either float or double dtype")
    if interpolation not in _INTERPOLATIONS:
        raise RuntimeError(f"{name}() interpolation must be one of linear, lower, higher, midpoint or "
                           f"nearest. Got {interpolation}")
    qs, scalar_q = _quantile_q(name, input, q)
    if input.numel() == 0:
        raise RuntimeError(f"{name}() input tensor must be non-empty")
    if input.ndim == 0:  # (its one element is every quantile; dim 0 / -1 names it)
        _axes(dim, 1)
        dim = None
    axis = None if dim is None else _axes(dim, input.ndim)[0]
    rows = input.reshape(-1) if axis is None else movedim(input, axis, -1)
    ordered = sort(rows, dim=-1).values  # (NaN sorts last)
    if input.is_meta:  # (no values to rank: the places and weights of the ranks' shape, unwritten)
        shape = tuple(ordered.shape[:-1]) + (len(qs),)
        below = above = _META.xp.zeros(shape, np.int64)
        weights = _META.xp.zeros(shape, input.dtype)
    else:
        ranks = _quantile_ranks(ordered, qs.astype(input.dtype), ignore_nan)  # (..., len(q)), in input's
        # dtype as torch's (q * (n - 1) and the weights rounded to float32 for float32), outside the graph
        below, above = np.floor(ranks), np.ceil(ranks)
        if interpolation == "nearest":
            below = above = np.round(ranks)  # (half to even, as torch's round)
        weights = {"lower": 0.0 * ranks, "higher": 1.0 + 0.0 * ranks, "midpoint": 0.5 + 0.0 * ranks
                   }.get(interpolation, ranks - below)
    take = lambda idx: _gather(ordered, -1, Tensor(idx.astype(np.int64, copy=False), dtype=np.int64,  # noqa: E731
                                                  device=input.device))
    weight = Tensor(xp_of(weights).ascontiguousarray(weights, dtype=input.dtype), dtype=input.dtype,  # (torch's: a new
                    device=input.device)  # tensor, where NumPy's ranks kept the sorted rows' order)
    if interpolation in ("lower", "higher", "nearest"):  # one element, taken as it is (torch: no lerp,
        out = take(above if interpolation == "higher" else below)  # so an inf there is no inf - inf)
    else:
        out = lerp(take(below), take(above), weight)  # (..., len(q))
    out = movedim(out, -1, 0)
    if keepdim:
        keep_axes = range(input.ndim) if axis is None else (axis,)
        for a in keep_axes:
            out = out.unsqueeze(a + 1)
    return out[0] if scalar_q else out


def _quantile_ranks(ordered, qs, ignore_nan):
    """torch's ranks: ``q * (count - 1)``, with the last index (a NaN) for a row torch answers NaN."""
    values = ordered.detach().cpu().numpy()
    last = values.shape[-1] - 1
    nan = np.isnan(values)
    if ignore_nan:
        ranks = qs * (np.sum(~nan, axis=-1, keepdims=True) - 1).astype(qs.dtype)
        return np.where(ranks < 0, last, ranks).astype(qs.dtype)
    ranks = np.broadcast_to(qs * qs.dtype.type(last), values.shape[:-1] + qs.shape)
    return np.where(nan.any(axis=-1, keepdims=True), last, ranks).astype(qs.dtype)


# torch's layout of a reduction's result from a channels_last input (Function.torch_layout): ATen's reductions
# (resize_reduction, make_reduction) allocate a contiguous output, keepdim or not
for _op in (Sum, Mean, Prod, AMax, ArgMax, Var, PNorm, Logical, LogSumExp):
    _op.torch_layout = "contiguous"
