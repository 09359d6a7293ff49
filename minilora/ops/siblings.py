"""Small torch functions next to minilora's existing ops: ``row_stack`` (vstack's other name), the
``*_scatter`` ops (a copy of the input with one view of it replaced), ``renorm``, ``frexp``,
``nextafter``, ``gradient``, ``empty_strided`` and the deprecated ``range``.

The scatter ops, renorm and gradient are compositions of differentiable ops (a clone written through
a view, a norm and a product, slices and differences), so their gradients are the chain rule's, as
torch's formulas give; the result's node carries torch's name.
"""
import collections
import math
import warnings

import numpy as np

from .. import amp as _amp, dtypes, float32_sums
from ..device import xp_of
from ..factories import check_layout, check_range, empty, like_view_strides
from ..tensor import Function, Tensor, name_node, no_grad, no_complex_autograd, saved_for, saves_as_torch
from . import elementwise as E, reduce as R, shape as S

row_stack = S.vstack


# ---- a copy with one view replaced ----------------------------------------------------------------
def _scatter_into_view(input, src, view_of, node):
    """``input`` cloned, with ``view_of(clone)`` overwritten by ``src`` (torch's check: the same shape)."""
    out = E.clone(input)
    view = view_of(out)
    if tuple(src.shape) != tuple(view.shape):
        raise RuntimeError(f"expected src to have a size equal to the slice of self. src size = {list(src.shape)}, "
                           f"slice size = {list(view.shape)}")
    view.copy_(src)
    return name_node(out, node, input, src)


def diagonal_scatter(input, src, offset=0, dim1=0, dim2=1):
    """``torch.diagonal_scatter``: ``input`` with its diagonal (as ``input.diagonal(offset, dim1, dim2)``)
    replaced by ``src``."""
    return _scatter_into_view(input, src, lambda out: S.diagonal(out, offset, dim1, dim2), "DiagonalScatterBackward0")


def select_scatter(input, src, dim, index):
    """``torch.select_scatter``: ``input`` with ``input.select(dim, index)`` replaced by ``src``."""
    no_complex_autograd("select_scatter", input.dtype, input, src)
    return _scatter_into_view(input, src, lambda out: S.select(out, dim, index), "SelectScatterBackward0")


def slice_scatter(input, src, dim=0, start=None, end=None, step=1):
    """``torch.slice_scatter``: ``input`` with ``input[..., start:end:step, ...]`` (along ``dim``)
    replaced by ``src``."""
    no_complex_autograd("slice_scatter", input.dtype, input, src)
    if step is not None and step <= 0:  # (torch's check and words; indexing's own is a ValueError)
        raise RuntimeError("slice step must be positive")
    dim = dim + input.ndim if dim < 0 else dim
    index = (slice(None),) * dim + (slice(start, end, step),)
    return _scatter_into_view(input, src, lambda out: out[index], "SliceScatterBackward0")


# ---- renorm -------------------------------------------------------------------------------------------
@_amp.autocasts  # (on torch's CUDA float32 list)
def renorm(input, p, dim, maxnorm):
    """``torch.renorm``: each slice along ``dim`` whose ``p``-norm exceeds ``maxnorm`` scaled down to
    norm ``maxnorm`` (torch's factor ``maxnorm / (norm + 1e-7)``); the others unchanged."""
    if p <= 0:
        raise RuntimeError("renorm: non-positive-norm not supported")
    if maxnorm < 0:
        raise RuntimeError(f"renorm: expected maxnorm to be >= 0 but got {maxnorm}")
    if input.ndim <= 1:
        raise RuntimeError(f"renorm: input needs at least 2 dimensions, got {input.ndim} dimensions")
    if not dtypes.is_floating(input.dtype) and input.dtype.kind != "c":  # (complex: real norms, as torch)
        raise RuntimeError(f"renorm: input must be floating point, got {dtypes.torch_name(input.dtype)}")
    (dim,) = S._dims((dtypes.int_argument("renorm", "dim", dim),), input.ndim)
    others = tuple(d for d in range(input.ndim) if d != dim)
    # ATen: the norms and the factor in the accumulate type (float32 for a 16-bit input), the factor then
    # stored in the input's dtype before the product
    wide = dtypes.float32 if input.dtype.itemsize == 2 else None
    norms = R.norm(input, p, dim=others, keepdim=True, dtype=wide)
    factor = E.where(norms > maxnorm, E.div(maxnorm, E.add(norms, 1e-7)), 1)  # (1 for a NaN norm too: norms * 0 + 1
    # was NaN there, where torch leaves the slice as it is)
    factor = factor.to(input.dtype)
    out = E.mul(input, factor).contiguous()  # (torch's renorm writes a contiguous result, whatever the input's layout)
    x = input._array
    if type(x) is np.ndarray and x.dtype in (np.float32, np.float64):  # torch's renorm_backward, op by op (the
        from .nn import KernelGradients  # composed graph stays for create_graph)
        out = KernelGradients.apply(out, input, None, None, values=out._array.copy(order="K"),  # (its own memory)
                                    gradients=_renorm_gradients(x, float(p), others, maxnorm))
        return saves_as_torch(name_node(out, "RenormBackward0", input), input)  # (torch's node keeps self alone)
    return name_node(out, "RenormBackward0", input)


def _renorm_gradients(x, p, others, maxnorm):
    """ATen's ``renorm_backward`` on a float32/float64 array as a function of (g, needs) for ``KernelGradients``:
    ``where(norm > maxnorm, (maxnorm * invnorm * (g - invnorm * norm_backward(sum(x * g), x, p, norm))).to(g's
    dtype), g)`` with ``invnorm = 1 / (norm + 1e-7)``. The norm and the sum are taken in CPU's accumulate type,
    float64 for float32 too, so from there on every step is float64 (``x``'s own powers float32, as its in-place
    ``pow_``), rounded once at the end: composing the forward's float32 ops instead was an ulp or more off in
    half the elements."""
    wide = np.float64
    with no_grad():
        norms = R.norm(Tensor(x.astype(wide), dtype=wide, device="cpu"), p, dim=others, keepdim=True)._array

    def gradients(g, needs):
        if not needs[0]:
            return None, None, None
        with np.errstate(all="ignore"):
            products = np.multiply(x, g, out=np.empty_like(x))  # (laid out as self, TensorIterator's first input)
            along = float32_sums.sum_like_torch(products.astype(wide), others)  # (sum(dtype=double): a double copy,
            # preserving its layout)
            invnorm = 1.0 / (norms + 1e-7)
            shrunk = (float(maxnorm) * invnorm) * (g - invnorm * R.vector_norm_backward(x, norms, p, along, others))
            return np.where(norms > float(maxnorm), shrunk.astype(g.dtype), g), None, None
    return gradients


# ---- frexp, nextafter ---------------------------------------------------------------------------------
frexp_result = collections.namedtuple("frexp", ["mantissa", "exponent"])  # (torch.return_types.frexp)


def frexp(input):
    """``torch.frexp``: ``(mantissa, exponent)`` with ``input = mantissa * 2 ** exponent``, the mantissa
    in [0.5, 1) in magnitude and the exponent int32; the mantissa's gradient is ``grad / 2 ** exponent``."""
    if not dtypes.is_floating(input.dtype):
        raise RuntimeError("torch.frexp() only supports floating-point dtypes")
    if input.is_meta:  # (no values: the exponents' shape, unwritten)
        exponent = input.device.xp.zeros(input.shape, np.int32)
    else:
        host = input._array.get() if hasattr(input._array, "get") else input._array
        _, exponent = np.frexp(np.asarray(dtypes.upcast(host)))
        exponent = input.device.xp.asarray(np.asarray(exponent).astype(np.int32))  # (a 0-d one: NumPy's scalar)
    exponent = E.computed(exponent, input, like=True)  # (empty_like(input))
    scale = E.exp2(exponent.to(input.dtype))  # (a power of two: the division is exact, but for the top binade)
    mantissa = E.div(input, scale)
    x = input._array
    if type(x) is np.ndarray and not input.is_meta:  # the values C's frexp gives, 2^128 (2^1024) overflowing no scale;
        from .nn import KernelGradients  # torch's gradient, grad / exponent.exp2(): an int's exp2 is float32 there
        values = np.frexp(np.asarray(dtypes.upcast(x)))[0].astype(x.dtype)
        powers = np.exp2(exponent._array.astype(np.float32))

        def gradients(g, needs):
            return ((g / powers).astype(g.dtype) if needs[0] else None), None, None

        mantissa = KernelGradients.apply(mantissa, input, None, None, values=values, gradients=gradients)
    mantissa = name_node(mantissa, "FrexpBackward0", input)
    mantissa = like_view_strides(mantissa, input)  # (torch's is empty_like(input): its strides of size-1 dims too)
    return frexp_result(mantissa, exponent)


class Nextafter(Function):
    torch_layout = "elementwise"  # (a TensorIterator kernel: Function.torch_layout)
    """The next representable value after ``a`` towards ``b``: torch's derivative is 1 for ``a`` (the
    step is one ulp) where ``a != b``, 0 where they are equal (the result is ``b`` then), and 0 for ``b``."""

    @staticmethod
    def forward(ctx, a, b):
        ctx.shapes, ctx.moves = (a.shape, b.shape), a != b
        xp = xp_of(a)  # (where a == b, C's nextafter answers b: nextafter(-0.0, 0.0) is 0.0, as torch's; NumPy's
        return xp.where(ctx.moves, xp.nextafter(a, b), b).astype(a.dtype)  # float16 loop keeps a's -0.0)

    @staticmethod
    def backward(ctx, g):
        return E.unbroadcast(g * ctx.moves, ctx.shapes[0]), xp_of(g).zeros(ctx.shapes[1], g.dtype)


def nextafter(input, other):
    """``torch.nextafter``: elementwise, floating tensors of one dtype (bfloat16 and float16 through
    their own spacing: NumPy's nextafter on the 16-bit type itself)."""
    for position, (arg, value) in enumerate((("input", input), ("other", other)), start=1):
        if not isinstance(value, Tensor):
            raise TypeError(f"nextafter(): argument '{arg}' (position {position}) must be Tensor, not "
                            f"{type(value).__name__}")
    a, b = E._promoted(input, other)
    if not dtypes.is_floating(a.dtype):
        raise NotImplementedError(f"\"nextafter_cpu\" not implemented for '{dtypes.torch_name(a.dtype)}'")
    result = name_node(Nextafter.apply(a, b), "NextafterBackward0", input, other)
    # torch's node keeps both operands, for input's gradient only (other's is zeros)
    return saves_as_torch(result, saved_for(input, input), saved_for(other, input))


# ---- gradient -----------------------------------------------------------------------------------------
def gradient(input, *, spacing=None, dim=None, edge_order=1):
    """``torch.gradient``: the derivative of ``input`` along each dimension in ``dim`` (all by
    default) by central differences inside and one-sided ones of ``edge_order`` (1 or 2) at the edges,
    as NumPy's ``gradient``; ``spacing`` a number, one number per dimension, or one tensor of
    coordinates per dimension. Returns a tuple, one tensor per dimension."""
    dims = list(range(input.ndim)) if dim is None else [dim] if isinstance(dim, int) else list(dim)
    dims = list(S._distinct_dims(dims, input.ndim))
    if dtypes.int_argument("gradient", "edge_order", edge_order) not in (1, 2):  # (a float or a string: TypeError)
        raise RuntimeError("torch.gradient only supports edge_order=1 and edge_order=2.")
    spacing = 1 if spacing is None else spacing
    spacings = list(spacing) if isinstance(spacing, (list, tuple)) else [spacing] * len(dims)
    if len(spacings) != len(dims):
        raise RuntimeError(f"torch.gradient expected spacing to be unspecified, a scalar or it's spacing and dim "
                           f"arguments to have the same length, but got a spacing argument of length "
                           f"{len(spacings)} and a dim argument of length {len(dims)}.")
    for d in dims:
        if input.shape[d] < edge_order + 1:
            raise RuntimeError("torch.gradient expected each dimension size to be at least edge_order+1")
    if not any(isinstance(step, Tensor) for step in spacings):  # (numbers: ATen's other formula, in input's dtype)
        return tuple(_gradient_by_step(input, d, step, edge_order) for d, step in zip(dims, spacings))
    x = E._floating(input)
    return tuple(_gradient_along(x, d, s, edge_order) for d, s in zip(dims, spacings))


def _gradient_by_step(x, d, step, edge_order):
    """ATen's gradient for a number ``step``: differences divided by it, in its operation order and with torch's
    promotion (an integer input divided by the step gives the default float dtype; no cast first)."""
    def part(start, length):
        return S.narrow(x, d, start if start >= 0 else x.shape[d] + start, length)
    def scaled(op, t, number):  # (ATen's Tensor-Scalar node: DivBackward1, MulBackward1)
        return E.aten_scalar(op(t, number), t)
    n = x.shape[d]
    center = scaled(E.div, scaled(E.div, E.sub(part(2, n - 2), part(0, n - 2)), step), 2)
    if edge_order == 1:
        first = scaled(E.div, E.sub(part(1, 1), part(0, 1)), step)
        last = scaled(E.div, E.sub(part(-1, 1), part(-2, 1)), step)
    else:
        first = scaled(E.div, E.sub(E.add(scaled(E.mul, part(0, 1), -1.5), scaled(E.mul, part(1, 1), 2)),
                                    scaled(E.mul, part(2, 1), 0.5)), step)
        last = scaled(E.div, E.add(E.sub(scaled(E.mul, part(-3, 1), 0.5), scaled(E.mul, part(-2, 1), 2)),
                                   scaled(E.mul, part(-1, 1), 1.5)), step)
    return S.cat([first, center, last], d)


def _gradient_along(x, d, spacing, edge_order):
    n = x.shape[d]
    # torch computes the weights in the coordinates' dtype (float32 coordinates: float32 weights)
    coords = (spacing._array.get() if hasattr(spacing._array, "get") else spacing._array) \
        if isinstance(spacing, Tensor) else np.arange(n, dtype=np.float64) * float(spacing)
    if coords.dtype.kind in "iub":  # (integer coordinates: torch's true divisions make default-float weights)
        coords = coords.astype(dtypes.get_default_dtype())
    weight_dtype = coords.dtype if isinstance(spacing, Tensor) else x.dtype  # (a number: x's own dtype)
    h = np.diff(coords)
    h1, h2 = h[:-1], h[1:]
    # weights of f[i-1], f[i], f[i+1] inside (second-order accurate on uneven grids, as NumPy's)
    inner = _weighted([-h2 / (h1 * (h1 + h2)), (h2 - h1) / (h1 * h2), h1 / (h2 * (h1 + h2))],
                      [S.narrow(x, d, k, n - 2) for k in range(3)], x, d, weight_dtype)
    if edge_order == 1:  # (a difference over the step, divided as torch's: 1/h would round)
        first, last = (E.div(E.sub(S.narrow(x, d, i + 1, 1), S.narrow(x, d, i, 1)),
                             Tensor(dtypes.cast(np.array(step), weight_dtype), dtype=weight_dtype, device=x.device))
                       for i, step in ((0, h[0]), (n - 2, h[-1])))
    else:
        a, b = h[0], h[1]
        first = _weighted([np.array([w]) for w in (-(2 * a + b) / (a * (a + b)), (a + b) / (a * b),
                                                   -a / (b * (a + b)))],
                          [S.narrow(x, d, k, 1) for k in range(3)], x, d, weight_dtype)
        a, b = h[-2], h[-1]
        last = _weighted([np.array([w]) for w in (b / (a * (a + b)), -(a + b) / (a * b), (a + 2 * b) / (b * (a + b)))],
                         [S.narrow(x, d, n - 3 + k, 1) for k in range(3)], x, d, weight_dtype)
    return S.cat([first, inner, last], d)


def _weighted(weights, parts, x, d, weight_dtype):
    """sum of weight_k * part_k, each weight a vector along dimension ``d`` (in x's dtype)."""
    shape = [1] * x.ndim
    total = None
    for weight, part in zip(weights, parts):
        shape[d] = len(weight)
        w = Tensor(dtypes.cast(weight.reshape(shape), weight_dtype), dtype=weight_dtype, device=x.device)
        term = E.mul(part, w)
        total = term if total is None else E.add(total, term)
    return total


# ---- factories ----------------------------------------------------------------------------------------
def empty_strided(size, stride, *, dtype=None, layout=None, device=None, requires_grad=False, pin_memory=False):
    """``torch.empty_strided``: an uninitialised tensor of ``size`` laid out with ``stride`` (in
    elements), over a storage just large enough: a view of a new 1-D tensor, as torch's."""
    if layout is not None or pin_memory is not False:
        check_layout("empty_strided", layout, pin_memory, device)
    dtype = dtype if dtype is None else dtypes.dtype_argument("empty_strided", dtype)
    size, stride = tuple(size), tuple(stride)
    if len(size) != len(stride):
        raise RuntimeError(f"dimensionality of sizes ({len(size)}) must match dimensionality of strides "
                           f"({len(stride)})")
    for n in size:
        if n < 0:
            raise RuntimeError(f"Trying to create tensor with negative dimension {n}: {list(size)}")
    if any(s < 0 for s in stride):
        raise RuntimeError(f"Storage size calculation overflowed with sizes={list(size)} and strides={list(stride)}")
    storage = 0 if 0 in size else 1 + sum((n - 1) * s for n, s in zip(size, stride))
    base = empty(storage, dtype=dtype, device=device)
    out = S.as_strided(base, size, stride).detach()
    return out.requires_grad_() if requires_grad else out


def new_empty_strided(self, size, stride, *, dtype=None, layout=None, device=None, requires_grad=False,
                      pin_memory=False):
    """``x.new_empty_strided(size, stride)``: ``empty_strided`` in ``x``'s dtype and device unless given."""
    dtype = self.dtype if dtype is None else dtypes.dtype_argument("new_empty_strided", dtype)
    return empty_strided(size, stride, dtype=dtype, layout=layout,
                         device=self.device if device is None else device, pin_memory=pin_memory,
                         requires_grad=requires_grad)


def empty_permuted(size, physical_layout, *, dtype=None, layout=None, device=None, requires_grad=False,
                   pin_memory=False):
    """``torch.empty_permuted``: an uninitialised tensor of ``size`` whose dimensions lie in memory in the order
    ``physical_layout`` (outermost first): a permuted view of a new contiguous tensor, as torch's."""
    if layout is not None or pin_memory is not False:
        check_layout("empty_permuted", layout, pin_memory, device)
    dtype = dtype if dtype is None else dtypes.dtype_argument("empty_permuted", dtype)
    size, physical_layout = tuple(size), tuple(physical_layout)
    if len(size) != len(physical_layout):
        raise RuntimeError("Number of dimensions in size does not match the length of the physical_layout")
    order = S._dims(physical_layout, len(size))
    if len(set(order)) != len(order):
        raise RuntimeError("Duplicate dim not allowed")
    out = empty(tuple(size[d] for d in order), dtype=dtype, device=device)
    out = out.permute(*np.argsort(order).tolist()) if order else out
    return out.requires_grad_() if requires_grad else out


def range_(start, end, step=1, *, dtype=None, layout=None, device=None, requires_grad=False):
    """``torch.range`` (deprecated, with torch's warning): ``start`` to ``end`` *inclusive* by ``step``,
    in the default float dtype unless ``dtype`` says otherwise (``arange`` stops before ``end``). (torch's
    takes ``layout=`` but no ``pin_memory=``.)"""
    if layout is not None:
        check_layout("range", layout, False)
    warnings.warn("torch.range is deprecated and will be removed in a future release because its behavior is "
                  "inconsistent with Python's range builtin. Instead, use torch.arange, which produces values in "
                  "[start, end).", UserWarning, stacklevel=2)
    dtype = dtypes.get_default_dtype() if dtype is None else dtypes.dtype_argument("range", dtype)
    if dtype == dtypes.bool or dtype.kind == "c":  # (torch's kernel has no bool or complex: its dispatch refuses
        raise NotImplementedError(f"\"range_cpu\" not implemented for '{dtypes.torch_name(dtype)}'")  # first)
    check_range(start, end, step)
    count = int(math.floor((end - start) / step)) + 1
    values = start + np.arange(count, dtype=np.float64) * step
    return Tensor(dtypes.cast(values, dtype), dtype=dtype, device=device, requires_grad=requires_grad)


# torch.range is this (named range_ here: the builtin range is used in this module); Python's errors name it
# by __qualname__, so a wrong keyword reads torch's "range() got an unexpected keyword argument 'pin_memory'"
range_.__name__ = range_.__qualname__ = "range"


def _attach_methods():
    """torch's Tensor methods among these: x.diagonal_scatter(src), x.renorm(2, 0, 1.0), x.frexp() ..."""
    def renorm_(self, p, dim, maxnorm):
        return self._inplace(renorm, p, dim, maxnorm)

    def nextafter_(self, other):
        self._check_elementwise_inplace(other)  # (torch's cast error first: bool.nextafter_(uint8))
        return self._inplace(nextafter, other)
    for name, fn in {"diagonal_scatter": diagonal_scatter, "select_scatter": select_scatter,
                     "slice_scatter": slice_scatter, "renorm": renorm, "renorm_": renorm_, "frexp": frexp,
                     "nextafter": nextafter, "nextafter_": nextafter_, "new_empty_strided": new_empty_strided}.items():
        setattr(Tensor, name, fn)


_attach_methods()
