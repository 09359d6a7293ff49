"""torch's other names and small functions built from minilora's ops: ``arccos`` (acos), ``greater``
(gt), ``fix`` (trunc), ``frac``, ``sinc``, ``float_power``, ``gcd``, ``isin``, ``cartesian_prod``,
``block_diag``, ``cov``, ``trapezoid``, ``addmv``/``addr``/``addbmm`` ...

Each is a composition of differentiable ops, so its gradient is the chain rule's (torch's derivatives for
these are the same formulas); where torch's graph shows one node (``AddmvBackward0``) the result's node
carries torch's name. Integer and bool inputs follow torch's dtype rules (``sinc`` of an int is float32,
``float_power`` is always float64, ``gcd`` takes integers only).
"""
import builtins
import itertools
import math
import numbers

import numpy as np

from .. import amp as _amp, dtypes, float32_math, mkl_dot
from ..tensor import Function, Tensor, name_node, no_forward_formula, no_meta_kernel, tensor
from . import elementwise as E, index as I, reduce as R, shape as S
from .nn import _broadcast_or_raise
from .matmul import (_in_float32, _inner_sizes_check, _is_16bit_float, _one_node, _products_check, _rounded_to,
                     _scaled_sum, _with_torchs_gradients, addmm, bmm, matrix_vector_gradients, mm, mv, outer,
                     outer_product_gradients, product_gradients, refuse_mixed_addmm)

# ---- other names: the same op under torch's second spelling --------------------------------------
arccos, arcsin, arctan = E.acos, E.asin, E.atan
arccosh, arcsinh, arctanh = E.acosh, E.asinh, E.atanh
fix = E.trunc
absolute = E.abs


def greater(input, other): return input > other
def greater_equal(input, other): return input >= other
def less(input, other): return input < other
def less_equal(input, other): return input <= other
def not_equal(input, other): return input != other


def positive(input):
    """``torch.positive``: the input itself (bool refused, as torch)."""
    if input.dtype == np.bool_:
        raise RuntimeError("The `+` operator, on a bool tensor is not supported.")
    return input


# ---- small pointwise functions ------------------------------------------------------------------
def _no_integers(name, input):
    if input.dtype.kind in "biu":
        raise NotImplementedError(f"\"{name}\" not implemented for '{dtypes.torch_name(input.dtype)}'")


def _no_complex(name, input):
    if input.dtype.kind == "c":
        raise RuntimeError(f"{name} is not supported for complex tensors.")


def frac(input):
    """``torch.frac``: ``x - trunc(x)`` (floating inputs only, as torch's kernel)."""
    _no_integers("frac_cpu", input)
    return name_node(E.sub(input, E.trunc(input).detach()), "FracBackward0", input)


def deg2rad(input):
    """``torch.deg2rad``: ``x * pi / 180`` (integers and bools give the default float dtype)."""
    _no_complex("deg2rad", input)
    return name_node(E.mul(E._floating(input), math.pi / 180), "Deg2RadBackward0", input)


def rad2deg(input):
    _no_complex("rad2deg", input)
    return name_node(E.mul(E._floating(input), 180 / math.pi), "Rad2DegBackward0", input)


def logaddexp2(input, other):
    """``torch.logaddexp2``: ``log2(2^x + 2^y)``, computed stably."""
    for position, (name, t) in enumerate((("input", input), ("other", other)), 1):
        if not isinstance(t, Tensor):
            raise TypeError(f"logaddexp2(): argument '{name}' (position {position}) must be Tensor, not "
                            f"{type(t).__name__}")
    dtype = dtypes.result_type(input, other)  # (torch's promotion: a 0-d tensor's dtype yields to a dimensioned one's)
    if not dtypes.is_floating(dtype):
        raise NotImplementedError(f"\"logaddexp2_cpu\" not implemented for '{dtypes.torch_name(dtype)}'")
    # (16-bit: the forward in float32, rounded once; the gradient is torch's 16-bit ops, LogAddExp2's _step)
    out = E.LogAddExp2.apply(*E._promoted(input, other))
    return name_node(out, "Logaddexp2Backward0", input, other)


def _float_power_dtype(input, exponent):
    """float64, or complex128 where either side is complex."""
    complex_ = any(isinstance(x, complex) or isinstance(x, Tensor) and x.dtype.kind == "c" for x in (input, exponent))
    return dtypes.to_dtype("complex128" if complex_ else "float64")


def float_power(input, exponent):
    """``torch.float_power``: ``pow`` computed in float64 (the result is float64 for every real input;
    complex128 where either side is complex)."""
    wide = _float_power_dtype(input, exponent)
    cast = lambda x: x.to(wide) if isinstance(x, Tensor) else (complex if wide.kind == "c" else float)(x)  # noqa: E731
    return E.pow(cast(input), cast(exponent))


@E.shapes_not_values
def heaviside(input, values):
    """``torch.heaviside``: 0 where x < 0, ``values`` where x == 0, 1 where x > 0 (no gradient, as torch)."""
    if input.dtype.kind == "c" or values.dtype.kind == "c":
        raise RuntimeError("heaviside is not yet implemented for complex tensors.")
    if input.dtype != values.dtype:
        raise RuntimeError("heaviside is not yet implemented for tensors with different dtypes")
    _broadcast_or_raise("heaviside", input.shape, values.shape)
    x, v = input._array, values._array
    xp = input.device.xp
    result = xp.where(x == 0, v, (x > 0).astype(x.dtype)).astype(x.dtype)
    if any(t.requires_grad for t in (input, values)):
        return _no_grad(result, input, values, name="heaviside")
    return E.computed(result, input, values)


def _no_grad(array, input, *others, name):
    """A result torch does not differentiate: requires grad if an input does, backward raises."""
    if any(isinstance(t, Tensor) and t.requires_grad for t in (input,) + others) and dtypes.is_floating(array.dtype):
        return I._NoDerivative.apply(input, values=array, name=name)
    return Tensor(array, dtype=array.dtype, device=input.device)


def _integer_pair(name, input, other):
    for position, (arg, t) in enumerate((("input", input), ("other", other)), 1):
        if not isinstance(t, Tensor):
            raise TypeError(f"{name}(): argument '{arg}' (position {position}) must be Tensor, not {type(t).__name__}")
    dtype = dtypes.result_type(input, other)
    if dtype.kind not in "iu":  # (bool with an integer promotes to the integer: allowed)
        raise NotImplementedError(f"\"{name}_cpu\" not implemented for '{dtypes.torch_name(dtype)}'")
    _broadcast_or_raise(name, input.shape, other.shape)  # (torch's RuntimeError, not NumPy's ValueError alone)
    return input._array.astype(dtype), other._array.astype(dtype), dtype


def gcd(input, other):
    """``torch.gcd`` of integer tensors (non-negative, as torch's)."""
    a, b, dtype = _integer_pair("gcd", input, other)
    xp = input.device.xp  # (a ufunc of 0-d arrays returns a NumPy scalar, which Tensor() takes for a size)
    return Tensor(xp.asarray(xp.gcd(a, b), dtype=dtype), dtype=dtype, device=input.device)


def lcm(input, other):
    """``torch.lcm``: ATen's ``abs(a / gcd(a, b) * b)`` in C's int arithmetic, so a product past its range wraps and
    then loses its sign (int32 lcm(2**31 - 1, 100) is 100 where NumPy's lcm says -100; int8's product is an int,
    narrowed after abs: lcm(-4, 31) is -124)."""
    a, b, dtype = _integer_pair("lcm", input, other)
    xp = input.device.xp
    if dtype.itemsize < 4:  # (C computes a 8- or 16-bit product in int, so it takes its sign before narrowing)
        a, b = a.astype(np.int32), b.astype(np.int32)
    g = xp.gcd(a, b)
    with np.errstate(over="ignore"):
        values = xp.abs(xp.where(g == 0, 0, a // xp.where(g == 0, 1, g) * b))
    return Tensor(xp.asarray(values, dtype=dtype), dtype=dtype, device=input.device)


def ldexp(input, other):
    """``torch.ldexp``: ``input * 2 ** other`` (floating: integers give the default float dtype)."""
    for position, (arg, t) in enumerate((("input", input), ("other", other))):
        if not isinstance(t, Tensor):
            raise TypeError(f"ldexp(): argument '{arg}' (position {position}) must be Tensor, not {type(t).__name__}")
    # 2^other in other's floating dtype (else input's, else the default), then the product promotes: what
    # torch's mul(self, pow(2, other)) gives (float64 x and float32 exponents: 2^e rounded to float32)
    if dtypes.is_floating(input.dtype) and other.dtype == np.bool_:  # (torch's exp2 of a bool, in input's dtype)
        raise NotImplementedError("\"ldexp_cpu_exp\" not implemented for 'Bool'")
    power_dtype = next((t.dtype for t in (other, input) if dtypes.is_floating(t.dtype) or t.dtype.kind == "c"),
                       dtypes.get_default_dtype())
    if input.dtype.kind == "c":  # a complex input's power is complex too (2^inf is nan+nanj there, not inf)
        power_dtype = dtypes.result_type(input, other)
    keeps_input = dtypes.is_floating(input.dtype) or input.dtype.kind == "c"  # (a complex input stays complex)
    base = input if keeps_input else input.to(power_dtype)
    composed = E.mul(base, E.exp2(other.to(power_dtype)))
    values = composed._array
    if other.dtype.kind in "iu" and dtypes.is_floating(input.dtype):  # torch's kernel scales a float by an integer
        values = _scaled_by_power_of_two(base, other, composed.dtype)  # exponent exactly (std::ldexp)
    if composed.requires_grad and E.is_grad_enabled() and composed.dtype.kind != "c":  # derivatives.yaml's formulas
        from .nn import KernelGradients
        composed = KernelGradients.apply(composed, input, other, None, values=values,
                                         gradients=_ldexp_gradients(input, other, values))
    elif values is not composed._array:
        composed = Tensor(values, dtype=composed.dtype, device=composed.device)
    return name_node(composed, "LdexpBackward0", graph=(input, other))


def _scaled_by_power_of_two(x, exponent, dtype):
    """``x * 2**exponent`` rounded once into ``dtype``, without the power itself overflowing or flushing to
    zero first: ldexp(-0.0, 200) is -0.0 and ldexp(2**-10, 130) 2**120 in float32, where 2**200 as a float32 is inf
    (-0.0 * inf nan). 16-bit floats scale in float32 (exact there) and round once, as torch's kernel."""
    xp = x.device.xp
    wide = dtypes.upcast(x._array.astype(dtype))
    exponent = xp.clip(exponent._array.astype(np.int64), -4000, 4000).astype(np.int32)  # (past these: 0 or inf)
    return dtypes.cast(xp.asarray(xp.ldexp(wide, exponent)), dtype)


def _ldexp_gradients(input, other, result):
    """derivatives.yaml's ldexp gradients as a function of (g, needs) for ``KernelGradients``: ``grad * pow(2, other)``
    for input, its power in other's own dtype -- an integer ``other`` makes it integer pow, 0 for a negative exponent,
    so torch's gradient there is 0, not 2^-k (reproduced: the same numbers) -- and ``grad * result * M_LN2`` for
    other (the product rounded in a 16-bit dtype; M_LN2 a float32 number for float32 and 16-bit, as torch's
    Scalar multiply takes it)."""
    e = other._array

    def gradients(g, needs):
        gx = go = None
        if needs[0]:
            if e.dtype.kind in "iu":
                power = np.where(e < 0, 0, np.power(e.dtype.type(2), np.maximum(e, 0))).astype(e.dtype)
            else:
                power = E._power_kernel(2, e)
            with np.errstate(over="ignore", invalid="ignore"):
                gx = g * power.astype(g.dtype) if power.dtype.kind in "iu" else g * power
        if needs[1]:
            product = g * result.astype(g.dtype, copy=False)
            wide = product.astype(np.float64 if product.dtype == np.float64 else np.float32)
            go = (wide * wide.dtype.type(math.log(2))).astype(product.dtype)
        return (None if gx is None else E.unbroadcast(gx.astype(input.dtype, copy=False), input.shape),
                None if go is None else E.unbroadcast(go.astype(e.dtype, copy=False), other.shape), None)
    return gradients


def sinc(input):
    """``torch.sinc``: ``sin(pi x) / (pi x)``, 1 at 0 (gradient 0 there)."""
    x = E._floating(input)
    if x.dtype.itemsize == 2 and x.dtype.kind in "fV":  # (bfloat16, float16: torch's kernel computes in
        return sinc(x.float()).to(x.dtype)  # float32, its opmath type, and rounds once)
    if type(x._array) is np.ndarray and x.dtype in (np.float32, np.float64):
        return name_node(Sinc.apply(x), "SincBackward0", input)
    zero = x == 0
    safe = E.where(zero, E.add(E.mul(x, 0), 1), x)  # (no 0/0 in the graph: its gradient would be nan)
    px = E.mul(safe, math.pi)
    return name_node(E.where(zero, E.add(E.mul(x, 0), 1), E.div(E.sin(px), px)), "SincBackward0", input)


@E.iterator_layout
class Sinc(Function):
    """float32/float64 sinc on the CPU with torch's bits: its scalar kernel, ``sin(pi x) / (pi x)`` with C's
    ``sinf`` (``sin``) and 1 at 0; its backward ATen's ``sinc_backward``, op by op on tensors: ``g * (((pi x)
    cos(pi x) - sin(pi x)) / (x x pi))``, 0 where ``x x pi`` is 0 (sin and cos its MKL ones: ``vml``, so their
    elements that MKL does not round correctly, ~5%, differ)."""

    @staticmethod
    def forward(ctx, a):
        ctx.a = a
        pi = a.dtype.type(math.pi)
        product = a * pi
        sine = float32_math.c_function("sinf", product) if a.dtype == np.float32 else \
            float32_math.c_function64("sin", product)
        with np.errstate(all="ignore"):
            return np.where(a == 0, a.dtype.type(1), sine / product)

    @staticmethod
    def backward(ctx, g):
        a = ctx.a
        pi = a.dtype.type(math.pi)
        product, squared = a * pi, a * a * pi
        numerator = product * float32_math.vml("cos", product) - float32_math.vml("sin", product)
        with np.errstate(all="ignore"):
            return np.where(squared == 0, g.dtype.type(0), g * (numerator / squared))


def fill(input, value):
    """``torch.fill``: ``fill_`` on a copy (input's shape and dtype; ``value`` a number or a 0-d tensor, which gets
    the gradient's sum; input a zero gradient, as torch's FillBackward)."""
    out = input.detach().clone().fill_(value)  # (input's gradient: zeros_like(grad), a constant, as torch's)
    if input.requires_grad:
        out = E.ZeroGradientTo.apply(out, input)
    return name_node(out, "FillBackward1" if isinstance(value, Tensor) else "FillBackward0", input)


def isneginf(input):
    """``torch.isneginf``: bool, False everywhere for integer and bool tensors."""
    _no_complex_infinity_sign("isneginf", input)
    return E.logical_and(E.isinf(input), input < 0)


def isposinf(input):
    _no_complex_infinity_sign("isposinf", input)
    return E.logical_and(E.isinf(input), input > 0)


def _no_complex_infinity_sign(name, input):
    if input.dtype.kind == "c":  # (a complex infinity has no sign)
        raise RuntimeError(f"{name} does not support complex inputs.")


@E.shapes_not_values
def isreal(input):
    """``torch.isreal``: True everywhere for a real dtype (minilora's complex tensors: imag == 0)."""
    a = input._array
    if a.dtype.kind == "c":
        return E.computed(a.imag == 0, input)
    return E.computed(input.device.xp.ones(a.shape, bool), input, like=True)  # (torch's ones_like(input, bool))


def isin(elements, test_elements, *, assume_unique=False, invert=False):
    """``torch.isin``: whether each of ``elements`` is in ``test_elements`` (tensors or numbers)."""
    as_array = lambda x: x._array if isinstance(x, Tensor) else np.asarray(x)  # noqa: E731
    if not isinstance(elements, Tensor) and not isinstance(test_elements, Tensor):
        raise TypeError("isin() received an invalid combination of arguments: at least one tensor is required")
    for x in (elements, test_elements):  # torch's isin has no bool kernel (its sort-based one needs an order)
        if isinstance(x, bool) or (isinstance(x, Tensor) and x.dtype == np.bool_):
            raise RuntimeError("Unsupported input type encountered for isin(): Bool")
    dtype = dtypes.result_type(elements, test_elements)  # (torch's kernel has no complex version either;
    if isinstance(elements, complex):                    # its number-elements overload wraps 1j as complex128)
        dtype = np.dtype(np.complex128)
    if dtype.kind == "c":
        raise RuntimeError(f"Unsupported input type encountered for isin(): {dtypes.torch_name(dtype)}")
    like = elements if isinstance(elements, Tensor) else test_elements
    xp = like.device.xp
    if like.is_meta:  # (no values to look for: one answer per element, unwritten)
        return Tensor(xp.zeros(np.shape(as_array(elements)), np.bool_), dtype=np.bool_, device=like.device)
    result = xp.isin(as_array(elements), as_array(test_elements).reshape(-1), invert=invert)
    return Tensor(xp.asarray(result), dtype=np.bool_, device=like.device)


# ---- shapes and constructions --------------------------------------------------------------------
def broadcast_shapes(*shapes):
    """``torch.broadcast_shapes``: the shape the ``shapes`` (tuples or ints) broadcast to."""
    as_tuple = lambda s: (s,) if isinstance(s, int) else tuple(s)  # noqa: E731
    from ..tensor import Tensor
    for shape in shapes:  # (a tensor iterates as its elements: torch refuses it rather than read them as a shape)
        if isinstance(shape, Tensor):
            raise RuntimeError(f"Input shapes should be of type ints, a tuple of ints, or a list of ints, got {shape}")
    try:
        from ..tensor import Size
        return Size(np.broadcast_shapes(*(as_tuple(s) for s in shapes)))
    except ValueError:
        raise RuntimeError(f"Shape mismatch: objects cannot be broadcast to a single shape: "
                           f"{', '.join(str(list(as_tuple(s))) for s in shapes)}") from None


def broadcast_tensors(*tensors):
    """``torch.broadcast_tensors``: each tensor expanded (a view) to the shapes' broadcast."""
    if len(tensors) == 1 and isinstance(tensors[0], (list, tuple)):
        tensors = tuple(tensors[0])
    try:
        shape = tuple(np.broadcast_shapes(*(tuple(t.shape) for t in tensors)))
    except ValueError:
        raise RuntimeError("shape mismatch: objects cannot be broadcast to a single shape") from None
    return tuple(S.expand(t, shape) for t in tensors)


def cartesian_prod(*tensors):
    """``torch.cartesian_prod``: every combination of the 1-D tensors' elements, one per row."""
    for t in tensors:
        if t.ndim != 1:
            raise RuntimeError(f"Expect a 1D vector, but got shape {list(t.shape)}")
    if len(tensors) == 1:
        return tensors[0]
    grids = S.meshgrid(*tensors, indexing="ij")
    return S.stack([g.reshape(-1) for g in grids], 1)


def combinations(input, r=2, with_replacement=False):
    """``torch.combinations``: the length-``r`` combinations of a 1-D tensor's elements, as rows."""
    if input.ndim != 1:
        raise RuntimeError(f"Expect a 1D vector, but got shape {list(input.shape)}")
    if r < 0:
        raise RuntimeError(f"Expect a non-negative number, but got {r}")
    if r == 0:
        return Tensor(input.device.xp.zeros((0,), input._array.dtype), dtype=input.dtype, device=input.device)
    chooser = itertools.combinations_with_replacement if with_replacement else itertools.combinations
    rows = list(chooser(range(input.shape[0]), r))  # (none: an empty result, still in the graph as torch's)
    index = tensor(np.array(rows, dtype=np.int64).reshape(len(rows), r), device=input.device)
    return I.index_select(input, 0, index.reshape(-1)).reshape(len(rows), r)


def block_diag(*tensors):
    """``torch.block_diag`` (see _block_diagonal), one node as torch's."""
    return name_node(_block_diagonal(*tensors), "BlockDiagBackward0", *tensors, graph=tensors)


def _block_diagonal(*tensors):
    """``torch.block_diag``: the tensors (0-D, 1-D as a row, 2-D) along a block diagonal, zeros elsewhere."""
    mats = []
    for i, t in enumerate(tensors):
        if t.ndim > 2:
            raise RuntimeError(f"torch.block_diag: Input tensors must have 2 or fewer dimensions. Input {i} has "
                               f"{t.ndim} dimensions")
        mats.append(t.reshape(1, -1) if t.ndim == 1 else t.reshape(1, 1) if t.ndim == 0 else t)
    if not mats:
        return Tensor(np.zeros((1, 0), np.float32))
    dtype = mats[0].dtype
    for m in mats[1:]:
        dtype = dtypes.promote_types(dtype, m.dtype)
    cols = builtins.sum(m.shape[1] for m in mats)
    rows, col = [], 0
    for m in mats:
        m = m.to(dtype)
        rows.append(_pad_columns(m, col, cols - col - m.shape[1]))
        col += m.shape[1]
    return S.cat(rows, 0)


def _pad_columns(m, left, right):
    xp = m.device.xp
    zeros = lambda n: Tensor(xp.zeros((m.shape[0], n), m._array.dtype), dtype=m.dtype, device=m.device)  # noqa: E731
    return S.cat([zeros(left), m, zeros(right)], 1)


def diagflat(input, offset=0):
    """``torch.diagflat``: the flattened input on the ``offset`` diagonal of a square matrix."""
    return S.diag(input.reshape(-1), offset)


def vander(x, N=None, increasing=False):
    """``torch.vander``: columns x^(N-1) ... x^0 (increasing=True: x^0 ... x^(N-1)); 1-D x."""
    if x.ndim != 1:
        raise RuntimeError("x must be a one-dimensional tensor.")
    N = x.shape[0] if N is None else N
    if N < 0:
        raise RuntimeError("N must be non-negative.")
    dtype = dtypes.int64 if x.dtype.kind in "biu" else x.dtype  # (torch: integers and bool as int64)
    if N == 0:
        return Tensor(x.device.xp.zeros((x.shape[0], 0), dtype), dtype=dtype, device=x.device)
    result = running_powers(x.to(dtype), N)
    return result if increasing else S.flip(result, (1,))


def running_powers(x, N):
    """x^0, x^1, ..., x^(N-1) along a new last dimension, as torch's vanders compute them: ones, then
    ``cumprod`` of x repeated N - 1 times (its running product in the CPU accumulate type, float64 for float32,
    so each power is rounded once, as torch's)."""
    repeated = x.unsqueeze(-1).expand(*x.shape, N - 1)
    return S.cat([E.add(E.mul(x.unsqueeze(-1), 0), 1), I.cumprod(repeated, -1)], -1)


def trapezoid(y, x=None, *, dx=None, dim=-1):
    """``torch.trapezoid``: the trapezoidal rule along ``dim``, with sample points ``x`` or spacing ``dx``."""
    if isinstance(x, (int, float)) and dx is None:
        x, dx = None, x
    n = _trapezoid_samples("trapezoid", y, x, dim)
    if n == 0:
        return R.sum(E.mul(y, 0), dim)
    if x is None:  # ATen's do_trapezoid: (sum(y) - (first + last) * 0.5) * dx, in this order
        ends = E.add(S.select(y, dim, 0), S.select(y, dim, -1))
        difference = E.sub(R.sum(y, dim), E.aten_scalar(E.mul(ends, 0.5), ends))
        return E.aten_scalar(E.mul(difference, 1.0 if dx is None else dx), difference)
    left, right = S.narrow(y, dim, 0, n - 1), S.narrow(y, dim, 1, n - 1)
    pair = E.add(left, right)
    if x.ndim == 1:
        spacing = E.sub(S.narrow(x, 0, 1, n - 1), S.narrow(x, 0, 0, n - 1))
        shape = [1] * y.ndim
        shape[dim] = n - 1
        spacing = spacing.reshape(shape)
    else:
        d = dim if dim >= 0 else y.ndim + dim
        xd = d - (y.ndim - x.ndim)
        spacing = E.sub(S.narrow(x, xd, 1, n - 1), S.narrow(x, xd, 0, n - 1))
    summed = R.sum(E.mul(pair, spacing), dim)  # (ATen's ((left + right) * dx).sum(dim) / 2.)
    return E.aten_scalar(E.div(summed, 2), summed)


def trapz(y, x=None, *, dx=None, dim=-1):
    """``torch.trapz``: trapezoid's older name (``trapz(y, x)`` or ``trapz(y, dx=1)``)."""
    return trapezoid(y, x, dx=dx, dim=dim)


def _trapezoid_samples(fn, y, x, dim):
    """The number of samples along ``dim``, after torch's checks of ``y`` and 1-D sample points ``x``."""
    if y.dtype == np.bool_:
        raise RuntimeError(f"{fn}: received a bool input for `y`, but bool is not supported")
    (d,) = S._dims((dim,), y.ndim)
    n = y.shape[d]
    if x is not None and x.ndim == 1 and x.shape[0] != n:
        raise RuntimeError(f"{fn}: There must be one `x` value for each sample point")
    return n


def cumulative_trapezoid(y, x=None, *, dx=None, dim=-1):
    n = _trapezoid_samples("cumulative_trapezoid", y, x, dim)
    if n == 0:  # no samples: torch's empty result (in a floating dtype), as for one sample
        return I.cumsum(E.mul(y, 0.5), dim)
    pair = E.add(S.narrow(y, dim, 0, n - 1), S.narrow(y, dim, 1, n - 1))
    if x is None:
        return I.cumsum(E.aten_scalar(E.mul(pair, (1.0 if dx is None else dx) / 2), pair), dim)
    x_dim = -1 if x.ndim == 1 else dim
    spacing = E.sub(S.narrow(x, x_dim, 1, n - 1), S.narrow(x, x_dim, 0, n - 1))
    if x.ndim == 1:
        shape = [1] * y.ndim
        shape[dim] = n - 1
        spacing = spacing.reshape(shape)
    summed = I.cumsum(E.mul(pair, spacing), dim)  # (ATen's ((left + right) * dx).cumsum(dim) / 2.: halved last)
    return E.aten_scalar(E.div(summed, 2), summed)


def cov(input, *, correction=1, fweights=None, aweights=None):
    """``torch.cov``: the covariance of the variables in ``input``'s rows (observations in columns).

    ATen's steps in its order and dtypes: the weights keep theirs (float32 aweights with a float64 input make a
    float32 normalization factor; a bf16 input with float32 aweights gives a float32 answer), one observation
    with one kind of weights is exactly zero, and the answer is squeezed (one variable: a 0-d tensor)."""
    if input.ndim > 2:
        raise RuntimeError(f"cov(): expected input to have two or fewer dimensions but got an input with "
                           f"{input.ndim} dimensions")
    if input.dtype == np.bool_:
        raise RuntimeError("cov(): bool dtype is not supported for input")
    x = input.reshape(1, -1) if input.ndim < 2 else input
    n = x.shape[1]
    w = None
    if fweights is not None:
        _check_cov_weights("fweights", fweights, n, fweights.dtype.kind in "iu", "integral")
        w = fweights
    if aweights is not None:
        _check_cov_weights("aweights", aweights, n, dtypes.is_floating(aweights.dtype), "floating point")
        w = aweights if w is None else E.mul(w, aweights)
    if w is None:
        total = tensor(n, dtype=dtypes.int64)
    else:
        total = R.sum(w)
        if not bool((total != 0).item()):
            raise RuntimeError("cov(): weights sum to zero, can't be normalized")
    avg = E.div(R.sum(x if w is None else E.mul(x, w), 1), total)
    norm = _cov_normalization(n, total, w, correction, fweights, aweights)
    if bool((norm <= 0).item()):
        import warnings
        warnings.warn("cov(): degrees of freedom is <= 0. Correction should be strictly less than the number of "
                      "observations.")
        norm = E.mul(norm, 0)
    if n == 1 and (fweights is None) != (aweights is None):  # ATen's corner case: x - avg is exactly zero
        centered = E.mul(x, 0) if x.dtype.kind in "fc" else x.new_zeros(x.shape, dtype=dtypes.float32)
    else:
        centered = E.sub(x, S.unsqueeze(avg, 1))
    result = mm(centered, (centered if w is None else E.mul(centered, w)).t().conj())  # x x^H for complex ones
    return S.squeeze(E.div(result, norm))


def _check_cov_weights(name, weights, observations, dtype_ok, kind):
    if weights.ndim > 1:
        raise RuntimeError(f"cov(): expected {name} to have one or fewer dimensions but got {name} with "
                           f"{weights.ndim} dimensions")
    if not dtype_ok:
        raise RuntimeError(f"cov(): expected {name} to have {kind} dtype but got {name} with "
                           f"{dtypes.torch_name(weights.dtype)} dtype")
    if weights.numel() != observations:
        raise RuntimeError(f"cov(): expected {name} to have the same numel as there are observations in the input "
                           f"but got {weights.numel()} != {observations}")
    if observations and bool((R.amin(weights) < 0).item()):
        raise RuntimeError(f"cov(): {name} cannot be negative")


def _cov_normalization(observations, total, w, correction, fweights, aweights):
    """ATen's normalization factor, a 0-d tensor of its dtype (int64 without weights, the weights' otherwise)."""
    if w is None:
        return tensor(observations - correction, dtype=dtypes.int64)
    if correction == 0:
        return total
    if aweights is None:
        return E.sub(total, correction)
    if fweights is None and observations == 1 and correction == 1:
        return tensor(0, dtype=dtypes.int64)
    return E.sub(total, E.div(E.mul(R.sum(E.mul(w, aweights)), correction), total))


def corrcoef(input):
    """``torch.corrcoef``: Pearson's correlation coefficients of the rows, clipped to [-1, 1]."""
    c = cov(input)
    if c.ndim == 0:
        return E.div(c, c)
    d = S.diagonal(c, 0, 0, 1)
    std = E.sqrt(d)
    c = E.div(E.div(c, std.reshape(-1, 1)), std.reshape(1, -1))
    if c.dtype.kind == "c":  # torch clips the real and imaginary parts each (complex numbers have no order)
        return E.add(E.clamp(c.real, -1, 1), E.mul(E.clamp(c.imag, -1, 1), 1j))
    return E.clamp(c, -1, 1)


def argwhere(input):
    """``torch.argwhere``: ``nonzero(input)``, the indices of the non-zero elements, one row each."""
    return I.nonzero(input)


def msort(input):
    """``torch.msort``: sorted along the first dimension (values)."""
    return I.sort(input, 0)[0]


def unique_consecutive(input, return_inverse=False, return_counts=False, dim=None):
    """``torch.unique_consecutive``: each run of equal consecutive elements (or slices along ``dim``)
    kept once, with the inverse indices and run lengths on request."""
    for name, flag in (("return_inverse", return_inverse), ("return_counts", return_counts)):
        dtypes.bool_argument("unique_consecutive", name, flag)  # (x.unique_consecutive(1): a dim taken as a flag)
    if input.dtype.kind == "c":
        raise NotImplementedError(f'"unique" not implemented for \'{dtypes.torch_name(input.dtype)}\'')
    no_forward_formula("unique_consecutive", input)
    no_meta_kernel("unique_consecutive", input)
    xp = input.device.xp
    a = input._array
    if dim is None:
        flat = a.reshape(-1)
        starts = xp.ones(flat.shape[0], bool)
        if flat.shape[0]:
            starts[1:] = flat[1:] != flat[:-1]
        values = flat[starts]
        inverse = (xp.cumsum(starts) - 1).reshape(a.shape)
    else:
        d = I.unique_dim(input, dim)
        if a.shape[d] == 0:
            return I._empty_unique(input, return_inverse, return_counts, "unique_consecutive")
        moved = xp.moveaxis(a, d, 0).reshape(a.shape[d], -1)
        starts = xp.ones(moved.shape[0], bool)
        if moved.shape[0]:
            starts[1:] = (moved[1:] != moved[:-1]).any(axis=1)
        values = xp.compress(starts, a, axis=d)
        inverse = xp.cumsum(starts) - 1
    positions = xp.flatnonzero(starts)
    counts = xp.diff(xp.append(positions, starts.shape[0]))
    out = I._NoDerivative.apply(input, values=values, name="unique_consecutive", error=NotImplementedError)
    extras = [Tensor(part.astype(np.int64), dtype=np.int64, device=input.device)
              for part, wanted in ((inverse, return_inverse), (counts, return_counts)) if wanted]
    return (out, *extras) if extras else out


def unravel_index(indices, shape):
    """``torch.unravel_index``: the coordinates of flat ``indices`` in a tensor of ``shape`` (a tuple
    of int64 tensors)."""
    if not isinstance(indices, Tensor):
        indices = tensor(indices)
    if indices.dtype.kind not in "iu":
        raise TypeError(f"expected 'indices' to be integer dtype, but got {dtypes.torch_name(indices.dtype)}")
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    if any(s < 0 for s in shape):
        raise RuntimeError("'shape' cannot have negative values, but got " + str(tuple(shape)))
    size = math.prod(shape)
    a = indices._array.astype(np.int64)
    a = a % size if size else a  # (torch wraps every index around the size, negative or past the end)
    coords = []
    for s in reversed(shape):
        coords.append(a % s)
        a = a // s
    xp = indices.device.xp
    return tuple(Tensor(xp.asarray(c), dtype=np.int64, device=indices.device) for c in reversed(coords))


# ---- the addmm family: torch's one node per call ------------------------------------------------
@_amp.autocasts
def addmv(input, mat, vec, *, beta=1, alpha=1):
    """``torch.addmv``: ``beta * input + alpha * (mat @ vec)``."""
    _products_check("addmv", (2, 1), mat, vec)
    if not (input.dtype == mat.dtype == vec.dtype):
        a, b, c = (dtypes.torch_name(t.dtype) for t in (input, mat, vec))
        raise RuntimeError(f"addmv input tensors must have the same dtype, but got {a}, {b}, and {c}")
    if mat.dtype == np.bool_ and mat.numel():  # (an empty product runs no kernel: torch has no refusal then)
        raise NotImplementedError("\"addmv_impl_cpu\" not implemented for 'Bool'")
    if input.ndim > 1:
        raise RuntimeError(f"vector + matrix @ vector expected, got {input.ndim}, {mat.ndim}, {vec.ndim}")
    if mat.shape[1] != vec.shape[0] or input.shape not in ((), (1,), (mat.shape[0],)):  # (torch's one check)
        raise RuntimeError(f"size mismatch, got input ({input.shape[0] if input.ndim else 1}), mat "
                           f"({mat.shape[0]}x{mat.shape[1]}), vec ({vec.shape[0]})")
    if _is_16bit_float(mat):  # torch's 16-bit gemv: beta and alpha cast to the dtype, beta * y + alpha * dot in
        beta, alpha = (_rounded_to(number, mat.dtype) for number in (beta, alpha))  # float32, rounded once
        return _one_node(_in_float32(addmv, input, mat, vec, beta, alpha), "AddmvBackward0", input, mat, vec)
    if _fused_by_gemv(input, mat, vec, beta, alpha):
        result = _gemv_scaled_sum(input, mat, vec, beta, alpha)
    elif _one_column_of_gemv(mat, vec) and alpha != 1:  # (beta 0 here: y ignored; A[:, 0] * (alpha * v[0]) rounded once)
        result = _scaled_sum("addmv", input, mv(mat, vec * alpha), beta, 1)
    else:
        result = _scaled_sum("addmv", input, mv(mat, vec), beta, alpha)
    result = _with_torchs_gradients(result, input, mat, vec, beta, alpha, matrix_vector_gradients(mat, vec),
                                    values=_gemv_of_columns(input, mat, vec, beta, alpha))
    return _one_node(result, "AddmvBackward0", input, mat, vec)


def _gemv_of_columns(input, mat, vec, beta, alpha):
    """MKL's plain gemv of a float64 matrix laid out by columns (``addmv(y, A.t(), x)``), where ``mkl_dot`` claims
    it: the columns fused one by one into ``beta * y`` (0 for beta 0), ``alpha * x[j]`` rounded first (NumPy
    values); where ``mkl_dot.direct()``, MKL's gemv itself for any layout, called as ATen's addmv; else None."""
    if not (isinstance(alpha, (int, float)) and isinstance(beta, (int, float)) and type(input._array) is np.ndarray
            and input.dtype == mat.dtype):
        return None
    if mkl_dot.direct() and type(mat._array) is type(vec._array) is np.ndarray and mat.dtype == vec.dtype and \
            mat.dtype in (np.float32, np.float64):
        return mkl_dot.addmv(input._array, mat._array, vec._array, beta, alpha)
    if not (mat.shape[0] > 1 and mkl_dot.by_columns(mat._array)):
        return None
    start = None if beta == 0 else np.broadcast_to(input._array * np.float64(beta) if beta != 1 else input._array,
                                                    mat.shape[:1])
    return mkl_dot.columns_times_vector(mat._array, vec._array, alpha, start)


def _one_column_of_gemv(mat, vec):
    """A matrix of one column that ``mkl_dot`` claims: MKL's plain gemv runs it, ``alpha * v[0]`` first."""
    return mat.shape[1] == 1 and mkl_dot.rows_claimed(mat._array, vec._array)


def _fused_by_gemv(input, mat, vec, beta, alpha):
    """Whether MKL's gemv (float64, float32) ends with one fused multiply-add where minilora's two roundings would
    differ (``_gemv_scaled_sum``): ``beta != 0`` (beta 0 ignores y), a matrix ``mkl_dot`` claims, and ``alpha != 1``
    or one column."""
    return (beta != 0 and isinstance(alpha, (int, float))
            and (alpha != 1 or mat.shape[1] == 1) and type(input._array) is np.ndarray
            and mkl_dot.rows_claimed(mat._array, vec._array))


def _gemv_scaled_sum(input, mat, vec, beta, alpha):
    """MKL's ``beta * y + alpha * (mat @ vec)`` (float64, float32: measured bit for bit): ``fma(alpha, sum, beta *
    y)``; with one column (its plain gemv) ``fma(mat[:, 0], alpha * v[0], beta * y)``. ``addcmul`` fuses as that FMA."""
    start = input if beta == 1 else input * beta
    if mat.shape[1] == 1:
        return E.addcmul(start, mat[:, 0], vec * alpha)
    from ..factories import full_like
    product = mv(mat, vec)
    return E.addcmul(start, full_like(product, alpha), product)


@_amp.autocasts
def addr(input, vec1, vec2, *, beta=1, alpha=1):
    """``torch.addr``: ``beta * input + alpha * outer(vec1, vec2)``."""
    dtype = dtypes.result_type(input, vec1, vec2)
    if not dtypes.is_floating(dtype):
        for arg, number in (("beta", beta), ("alpha", alpha)):
            if isinstance(number, float):
                raise RuntimeError(f"For integral input tensors, argument {arg} must not be a floating point number.")
    input, vec1, vec2 = input.to(dtype), vec1.to(dtype), vec2.to(dtype)
    if vec1.ndim != 1 or vec2.ndim != 1:
        raise RuntimeError(f"addr: Expected 1-D argument vec1, but got {vec1.ndim}-D" if vec1.ndim != 1 else
                           f"addr: Expected 1-D argument vec2, but got {vec2.ndim}-D")
    if dtype == np.bool_:
        return _one_node(_scaled_sum("addr", input, outer(vec1, vec2), beta, alpha), "AddrBackward0", input, vec1,
                         vec2)
    # ATen's addr kernel: beta and alpha cast to the dtype first, then beta * input + (alpha * vec1) * vec2, each
    # operation rounded to the dtype (a bf16 addr rounds four times; alpha * outer(vec1, vec2) would differ)
    if dtypes.is_floating(dtype) or dtype.kind == "c":
        beta, alpha = (_rounded_to(number, dtype) for number in (beta, alpha))
    product = E.mul(E.mul(S.unsqueeze(vec1, 1), alpha), S.unsqueeze(vec2, 0)) if alpha != 1 else outer(vec1, vec2)
    result = _scaled_sum("addr", input, product, beta, 1)
    if dtype in (np.float32, np.float64) and float32_math.FUSED_MULTIPLY_ADD and beta != 0 and result.numel():
        if beta == 1 and tuple(input.shape) == tuple(result.shape):  # (torch's self: grad, handed on as it is)
            result = E.gradient_passes_to(input, lambda x: _addr_fused(x, vec1, vec2, beta, alpha, product,
                                                                        result.shape))
        else:
            result = _addr_fused(input, vec1, vec2, beta, alpha, product, result.shape)
    result = _with_torchs_gradients(result, input, vec1, vec2, beta, alpha, outer_product_gradients(vec1, vec2))
    return _one_node(result, "AddrBackward0", input, vec1, vec2)


def _addr_fused(input, vec1, vec2, beta, alpha, product, shape):
    """ATen's addr kernel as GCC compiles it where the build targets FMA: its vector lambda is
    fma(alpha * vec1, vec2, beta * input), its scalar lambda (the last ``m % step`` columns of each row)
    fma(beta, input, (alpha * vec1) * vec2)."""
    dtype = product.dtype
    body = E._fused_multiply_add(E.mul(input, beta).expand(*shape), E.mul(S.unsqueeze(vec1, 1), alpha).expand(*shape),
                                 S.unsqueeze(vec2, 0).expand(*shape), dtype)
    tail = E._fused_multiply_add(product, input.expand(*shape), tensor(beta, dtype=dtype).expand(*shape), dtype)
    step = 16 // (dtype.itemsize // 4)  # (two 32-byte vectors a loop step: the kernel has no AVX-512 build)
    columns = shape[1]
    in_tail = np.arange(columns) >= columns - columns % step
    return E.where(tensor(in_tail), tail, body)


@_amp.autocasts
def addbmm(input, batch1, batch2, *, beta=1, alpha=1):
    """``torch.addbmm``: ``beta * input + alpha * sum_b(batch1[b] @ batch2[b])``."""
    for t in (batch1, batch2):
        if t.ndim < 3:  # (torch reads size(2) first)
            raise IndexError(f"Dimension out of range (expected to be in range of [{-builtins.max(t.ndim, 1)}, "
                             f"{builtins.max(t.ndim, 1) - 1}], but got 2)")
    _products_check("addbmm", (3, 3), batch1, batch2)
    refuse_mixed_addmm("addbmm", input, batch1, batch2)
    if batch1.shape[0] != batch2.shape[0]:  # (the loop below would stop at the shorter one)
        raise RuntimeError(f"batch1 and batch2 must have same number of batches, got {batch1.shape[0]} and "
                           f"{batch2.shape[0]}")
    _inner_sizes_check("addbmm", batch1, batch2)
    if batch1.shape[0] == 0:
        product = R.sum(bmm(batch1, batch2), 0)
        return _one_node(_scaled_sum("addbmm", input, product, beta, alpha), "AddbmmBackward0", input, batch1, batch2)
    _scaled_sum("addbmm", input, batch1[0] @ batch2[0], beta, alpha)  # (input's shape checked in addbmm's words)
    result = input
    for index in range(batch1.shape[0]):  # ATen: one addmm per batch into the result (a 16-bit one rounds each)
        result = addmm(result, batch1[index], batch2[index], beta=beta if index == 0 else 1, alpha=alpha)
    result = _with_torchs_gradients(result, input, batch1, batch2, beta, alpha,
                                    product_gradients(batch1, batch2, summed=True))
    return _one_node(result, "AddbmmBackward0", input, batch1, batch2)


# ---- Tensor methods torch has for these ---------------------------------------------------------
def _addmv_(self, mat, vec, *, beta=1, alpha=1):
    return self._inplace(addmv, mat, vec, beta=beta, alpha=alpha)


def _addr_(self, vec1, vec2, *, beta=1, alpha=1):
    return self._inplace(addr, vec1, vec2, beta=beta, alpha=alpha)


def _addbmm_(self, batch1, batch2, *, beta=1, alpha=1):
    return self._inplace(addbmm, batch1, batch2, beta=beta, alpha=alpha)


def _float_power_(self, exponent):
    """``x.float_power_(y)``: only a float64 ``x`` (complex128 where either side is complex) can hold the
    result (torch's check)."""
    wide = _float_power_dtype(self, exponent)
    if self.dtype != wide:
        raise RuntimeError(f"the base given to float_power_ has dtype {dtypes.torch_name(self.dtype)} but the "
                           f"operation's result requires dtype {dtypes.torch_name(wide)}")
    return self._inplace(float_power, exponent)


def _in_place(op):
    def method(self, *args, **kwargs):
        return self._inplace(op, *args, **kwargs)
    return method


METHODS = {
    "arccos": arccos, "arcsin": arcsin, "arctan": arctan, "arccosh": arccosh, "arcsinh": arcsinh,
    "arctanh": arctanh, "greater": greater, "greater_equal": greater_equal, "less": less,
    "less_equal": less_equal, "not_equal": not_equal, "positive": positive, "__pos__": positive, "fix": fix,
    "frac": frac,
    "deg2rad": deg2rad, "rad2deg": rad2deg, "logaddexp2": logaddexp2, "float_power": float_power,
    "heaviside": heaviside, "gcd": gcd, "lcm": lcm, "ldexp": ldexp, "sinc": sinc, "isneginf": isneginf,
    "isposinf": isposinf, "isreal": isreal, "diagflat": diagflat, "cov": cov, "corrcoef": corrcoef,
    "argwhere": argwhere, "msort": msort, "unique_consecutive": unique_consecutive, "addmv": addmv,
    "addr": addr, "addbmm": addbmm, "addmv_": _addmv_, "addr_": _addr_, "addbmm_": _addbmm_,
    "absolute": absolute,
    "arccos_": _in_place(arccos), "arcsin_": _in_place(arcsin), "arctan_": _in_place(arctan),
    "arccosh_": _in_place(arccosh), "arcsinh_": _in_place(arcsinh), "arctanh_": _in_place(arctanh),
    "fix_": _in_place(fix), "frac_": _in_place(frac), "deg2rad_": _in_place(deg2rad),
    "rad2deg_": _in_place(rad2deg), "sinc_": _in_place(sinc), "gcd_": _in_place(gcd), "lcm_": _in_place(lcm),
    "ldexp_": _in_place(ldexp), "absolute_": Tensor.abs_, "heaviside_": _in_place(heaviside),
    "greater_": _in_place(greater), "greater_equal_": _in_place(greater_equal), "less_": _in_place(less),
    "less_equal_": _in_place(less_equal), "not_equal_": _in_place(not_equal), "float_power_": _float_power_,
}
for _name, _fn in METHODS.items():
    setattr(Tensor, _name, _fn)


# ---- top-level spellings of Tensor methods and of ops torch keeps for old code -------------------
def detach(input):
    """``torch.detach(x)``: ``x.detach()``, the same storage outside the graph."""
    return input.detach()


def is_nonzero(input):
    """``torch.is_nonzero(x)``: the truth of a one-element tensor (any shape), torch's error otherwise."""
    if input.numel() == 0:
        raise RuntimeError("Boolean value of Tensor with no values is ambiguous")
    if input.numel() > 1:
        raise RuntimeError("Boolean value of Tensor with more than one value is ambiguous")
    return bool(input.item())  # (NaN is nonzero, as C's `x != 0`)


def is_same_size(input, other):
    return tuple(input.shape) == tuple(other.shape)


def is_signed(input):
    return input.is_signed()


def is_conj(input):
    """False: minilora conjugates eagerly (``conj()`` copies), so no tensor carries torch's lazy conj bit."""
    return False


def is_neg(input):
    """False: no tensor carries torch's lazy negation bit (``conj()`` of a real view sets none either)."""
    return False


def is_inference(input):
    return input.is_inference()


def get_device(input):
    """``torch.get_device(x)`` / ``x.get_device()``: the GPU's ordinal, -1 for a tensor on the CPU (or meta).
    minilora has one GPU, 0; ``emu`` stands for it (its tensors run its CUDA kernels)."""
    device = input.device
    return -1 if device.type in ("cpu", "meta") else (device.index or 0)


_warned_once = set()


def _warn_once(key, message):
    """ATen's TORCH_WARN_ONCE: the first call in the process warns."""
    if key not in _warned_once:
        _warned_once.add(key)
        import warnings
        warnings.warn(message, UserWarning, stacklevel=3)


@_amp.autocasts
def chain_matmul(*matrices, out=None):
    """``torch.chain_matmul(a, b, c)``: ``linalg.multi_dot`` of the matrices (ATen's: one is cloned, two
    multiplied, more in multi_dot's order), with torch's deprecation warning."""
    from .. import linalg
    _warn_once("chain_matmul", "torch.chain_matmul is deprecated and will be removed in a future PyTorch release. "
               "Use torch.linalg.multi_dot instead, which accepts a list of two or more tensors rather than "
               "multiple parameters.")
    if not matrices:
        raise RuntimeError("chain_matmul(): Expected one or more matrices")
    for m in matrices:
        if m.ndim != 2:
            raise RuntimeError(f"Tensor dimension is {m.ndim}, expected 2 instead.")
    if len(matrices) == 1:
        result = matrices[0].clone()
    elif len(matrices) == 2:
        result = mm(*matrices)
    else:
        result = linalg.multi_dot(list(matrices))
    if out is None:
        return result
    from . import _write_out  # (torch's out= rules: resized with its warning, through a view, no overlap)
    return _write_out(lambda *_: result, "chain_matmul", matrices, {}, out)


@_amp.autocasts
def nuclear_norm(input, dim=None, keepdim=False):
    """``torch.nuclear_norm(A)`` (the last two dimensions) or ``(A, dim)``: ``linalg.matrix_norm(A, 'nuc')``,
    with ATen's deprecation warning. ``nuclear_norm(A, True)`` is torch's keepdim overload."""
    from .. import linalg
    _warn_once("nuclear_norm", "at::nuclear_norm is deprecated and it is just left for JIT compatibility. It will "
               "be removed in a future PyTorch release. Please use `linalg.matrix_norm(A, 'nuc', dim, keepdim)` "
               "instead")
    if isinstance(dim, bool):  # (the overload nuclear_norm(input, keepdim))
        dim, keepdim = None, dim
    if isinstance(dim, numbers.Integral):  # (torch's parser repeats one int to fill an int[2]: (d, d))
        dim = (dim, dim)
    return linalg.matrix_norm(input, "nuc", dim=(-2, -1) if dim is None else tuple(dim), keepdim=keepdim)


@_amp.autocasts
def frobenius_norm(input, dim, keepdim=False):
    """``torch.frobenius_norm(A, dim)``: ``linalg.vector_norm(A, 2, dim)`` over at most two dimensions, with
    ATen's deprecation warning."""
    from .. import linalg
    _warn_once("frobenius_norm", "at::frobenius_norm is deprecated and it is just left for JIT compatibility. It "
               "will be removed in a future PyTorch release. Please use `linalg.vector_norm(A, 2., dim, keepdim)` "
               "instead")
    dim = (dim,) if isinstance(dim, int) else tuple(dim)
    if len(dim) > 2:
        raise RuntimeError(f"Expected at most 2 dimensions, but got {len(dim)} dimensions instead.")
    return linalg.vector_norm(input, 2, dim=dim or None, keepdim=keepdim)


def _attach_methods():
    """torch's Tensor methods of the same names: ``x.is_nonzero()``, ``x.is_same_size(y)``, ``x.is_conj()``,
    ``x.is_neg()``, ``x.get_device()``."""
    Tensor.is_nonzero, Tensor.is_same_size, Tensor.is_conj, Tensor.is_neg = is_nonzero, is_same_size, is_conj, is_neg
    Tensor.get_device = get_device


_attach_methods()
