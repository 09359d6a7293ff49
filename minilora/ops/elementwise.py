"""Elementwise ops: arithmetic with NumPy broadcasting, and the pointwise functions of deep learning.

Broadcasting rule for backward: an input that was broadcast up to the output's shape receives the
output gradient summed back down over the broadcast axes (``unbroadcast``).
"""
import functools
import inspect
import math
import warnings

import sys

import numpy as np

from .. import amp as _amp, backends, fastmath, float32_math, mkl_vml, parallel
from ..float32_sums import sixteen_bit_backward, sum_like_torch
from ..factories import in_iterator_layout, known_layout, laid_out_copy, layout_order, like_view_strides
from ..device import META as _META, NO_DATA, xp_of
from ..dtypes import (cast, checked_number, float32, get_default_dtype, int64, is_bfloat16, is_floating,
                      python_number, result_type, to_dtype, torch_name, upcast, wrap_around, wrap_int)
from ..tensor import (Function, Tensor, ShapeError, _is_broadcast_error, torch_broadcast_message, backward_reads, is_grad_enabled, name_node,
                      no_complex_autograd, no_meta_kernel, saved_for, saves_as_torch)

__all__ = ["add", "sub", "mul", "div", "floor_divide", "neg", "pow", "exp", "log", "sqrt", "rsqrt", "abs", "tanh",
           "sigmoid", "relu", "gelu", "silu", "where", "masked_fill", "clone", "astype",
           "to_device", "unbroadcast", "erf", "lerp", "xlogy", "log1p", "expm1", "softplus",
           "leaky_relu", "clamp_min", "clamp_max", "square", "reciprocal", "log2", "log10", "fmod",
           "logical_xor", "addcmul", "addcdiv", "elu", "selu", "celu", "hardtanh", "hardswish",
           "hardsigmoid", "logsigmoid", "mish", "softsign", "tan", "asin", "acos", "atan", "sinh",
           "cosh", "asinh", "acosh", "atanh", "exp2", "atan2", "arctan2", "logaddexp", "nan_to_num"]


def unbroadcast(grad, shape):
    """Sum ``grad`` over the axes along which an input of ``shape`` was broadcast."""
    # EXERCISE 1.1: sum grad over the axes along which an input of this shape was broadcast; return that shape
    # BEGIN SOLUTION
    if grad.shape == shape:
        return grad
    extra = grad.ndim - len(shape)
    axes = tuple(range(extra)) + tuple(i + extra for i, n in enumerate(shape)
                                       if n == 1 and grad.shape[i + extra] != 1)
    # grad.sum(axis=axes, keepdims=True), added in torch's order (NumPy's pairwise order differs in the last bit)
    out = sum_like_torch(grad, axes) if axes else grad
    return out.reshape(shape)
    # END SOLUTION


def _shape(x):
    return getattr(x, "shape", ())


# ---- 16-bit floats: compute in float32, round once ------------------------------------------------
# torch computes an op on float16/bfloat16 tensors in float32 and rounds its result to the 16-bit dtype
# once. A single NumPy ufunc on a bfloat16 (ml_dtypes) or float16 array does exactly that, so exp, +, *
# need nothing. An op written as several NumPy steps would round after every step: these two class
# decorators run such an op in float32 instead. float32 and float64 pass through after one dtype check.
def _is_16bit_float(x):
    """True for a float16 or bfloat16 array (Python numbers and other dtypes: False)."""
    return getattr(x, "itemsize", 0) == 2 and (x.dtype.kind == "f" or is_bfloat16(x.dtype))


def _upcast_saved(ctx):
    """What forward saved on ``ctx``, its 16-bit float arrays widened to float32 (backward then
    computes in float32; the saved arrays stay 16-bit until backward, as torch keeps them)."""
    wide = {name: upcast(value) for name, value in vars(ctx).items() if _is_16bit_float(value)}
    vars(ctx).update(wide)


def backward_in_float32(op):
    """Class decorator for an op whose forward is one NumPy ufunc (already right for 16-bit floats)
    and whose backward formula takes several steps: for a float16/bfloat16 gradient, the backward
    runs on float32 copies of the gradient and of what forward saved, and each input's gradient is
    rounded once to the 16-bit dtype -- and where torch's formula is several tensor ops, each rounding a
    16-bit result, the formula marks those results with ``_step(ctx, ...)``."""
    backward = op.backward

    def backward_in_float32(ctx, g):
        if g.itemsize != 2 or not _is_16bit_float(g):  # (itemsize first: the float32 path's only cost)
            return backward(ctx, g)
        _upcast_saved(ctx)
        ctx.step_dtype = g.dtype
        with sixteen_bit_backward(g.dtype):  # (its sums: of what torch's formula has as 16-bit tensors)
            grads = backward(ctx, g.astype(float32))
        if type(grads) is not tuple:
            return grads.astype(g.dtype)
        return tuple(None if grad is None else grad.astype(g.dtype) for grad in grads)

    op.backward = staticmethod(backward_in_float32)
    return op


def _step(ctx, value):
    """One of torch's tensor ops inside a backward formula: under a 16-bit gradient (``backward_in_float32``
    sets ``ctx.step_dtype``) its float32 result rounded to 16 bits, as torch's 16-bit op returns it (and
    widened again for the next op); else ``value`` itself."""
    dtype = getattr(ctx, "step_dtype", None)
    return value if dtype is None else value.astype(dtype).astype(float32)


def computes_in_float32(op):
    """Class decorator for an op whose forward takes several NumPy steps (sigmoid, gelu, lerp ...):
    float16/bfloat16 inputs are widened to float32, forward runs on them, and its result is rounded
    once to their dtype; backward as ``backward_in_float32``. Where forward saved its own result for
    backward (sigmoid's ``out``), it keeps the rounded one, as torch saves the 16-bit output tensor.
    (Python numbers taking part stay numbers: NumPy holds them in float32, as torch's kernels do.)"""
    forward = op.forward

    def forward_in_float32(ctx, *args, **options):
        for x in args:
            if getattr(x, "itemsize", 0) == 2 and _is_16bit_float(x):
                dtype = x.dtype
                break
        else:  # float32, float64, integers: unchanged
            return forward(ctx, *args, **options)
        ctx.sixteen_bit_input = x  # (for a forward that picks torch's kernel by the 16-bit input's layout: Gelu)
        out = forward(ctx, *(upcast(x) if hasattr(x, "dtype") else x for x in args), **options)
        rounded = out.astype(dtype)
        saved = vars(ctx)
        for name, value in saved.items():
            if value is out:
                saved[name] = rounded
        return rounded

    op.forward = staticmethod(forward_in_float32)
    return backward_in_float32(op)


# torch's "default" build (a CPU without AVX2, ATEN_CPU_CAPABILITY=default) runs its elementwise kernels'
# scalar lambdas on every element: for float16/bfloat16 some of those (add's ``alpha * b``, rsqrt's
# sqrt) round each step to 16 bits, c10's Half/BFloat16 arithmetic, where the AVX builds' vectorized
# lambdas compute in float32 and round once (``computes_in_float32``).
STEPS_ROUNDED_TO_16_BITS = float32_math.CPU_CAPABILITY == "default"

_NUMBERS = (float, int)


def _in_16_bit_steps_at_tail(out, steps, *inputs, step=None):
    """``out``'s elements in torch's scalar tail (``float32_math.scalar_tail``) recomputed by ``steps`` on
    the inputs' 16-bit values, each NumPy step rounding as c10's Half/BFloat16 arithmetic does: torch's scalar
    lambda for the last ``n % 32`` elements of a thread's chunk (``HALF_STEP``, AVX2 and AVX-512 alike).
    Contiguous NumPy arrays of ``out``'s shape only (other layouts keep the vectorized numbers)."""
    if not all(xp_of(a) is np and a.flags.c_contiguous and a.shape == out.shape for a in (out, *inputs)):
        return
    flats, flat_out = [a.reshape(-1) for a in inputs], out.reshape(-1)
    for start, stop in float32_math.scalar_tail(flat_out.size, step=step or float32_math.HALF_STEP):
        flat_out[start:stop] = steps(*(f[start:stop] for f in flats))


def _number_as_float32(x, other):
    """A Python number multiplying or dividing a 16-bit float array, as a float32 scalar: torch's
    kernels hold such a number in float32 (``x * 0.1`` rounds ``x * 0.1f`` once), where NumPy
    would round it to bfloat16 first (``x * bfloat16(0.1)``: another number in 1 element of 5).
    Anything else comes back unchanged."""
    if type(x) in (float, int) and _is_16bit_float(other):
        return np.float32(x)
    return x


def _broadcast_error(name, a, b):
    """torch's infer_size error: the last dimension (from the right, numbered in the broadcast result) where
    neither size is 1 and they differ."""
    shape_a, shape_b = tuple(_shape(a)), tuple(_shape(b))
    return ShapeError(torch_broadcast_message([shape_a, shape_b])
                      or f"{name}: shapes {shape_a} and {shape_b} cannot be broadcast together")


# ---- arithmetic ----------------------------------------------------------------------------------
def iterator_layout(cls):
    """An elementwise op whose result is laid out as torch's TensorIterator lays it out when an input is
    not contiguous (see factories.in_iterator_layout: ``x.t() * y`` takes x's layout; NumPy's took y's)."""
    forward = cls.forward

    def laid_out(ctx, *args, **kwargs):
        out = forward(ctx, *args, **kwargs)
        if kwargs and kwargs.get("contiguous"):  # (the op's own rule: a C-ordered result)
            return xp_of(out).asarray(out, order="C") if getattr(out, "ndim", 0) else out
        return out if getattr(out, "ndim", 0) < 2 else _iterator_laid_out(out, args)

    def laid_out_binary(ctx, a, b):  # (add, sub, mul, div: run per op, so no argument packing)
        out = forward(ctx, a, b)
        return out if getattr(out, "ndim", 0) < 2 else _iterator_laid_out(out, (a, b))

    binary = list(inspect.signature(forward).parameters) == ["ctx", "a", "b"]
    cls.forward = staticmethod(laid_out_binary if binary else laid_out)
    cls.torch_layout = "elementwise"  # (from a channels_last input too: Function.torch_layout)
    cls.torch_number_operands = (0, 1, 2)  # (x + 1: torch wraps the number into a 0-d tensor operand)
    return cls


def _iterator_laid_out(out, args):
    arrays = [a for a in args if getattr(a, "ndim", 0)]
    return out if all(a.flags.c_contiguous for a in arrays) else in_iterator_layout(out, arrays)


@iterator_layout
class Add(Function):
    @staticmethod
    def forward(ctx, a, b):
        ctx.shapes = (getattr(a, "shape", ()), getattr(b, "shape", ()))  # a scalar: ()
        b = _times_complex_one(b, 1)
        try:
            return parallel.add(a, b)  # a + b; large arrays of one shape split across threads
        except ValueError:
            raise _broadcast_error("add", a, b) from None

    @staticmethod
    def backward(ctx, g):
        na, nb = ctx.needs_input_grad
        return (unbroadcast(g, ctx.shapes[0]) if na else None,
                unbroadcast(g, ctx.shapes[1]) if nb else None)

    @staticmethod
    def flops(ctx, arrays, out):
        return out.size


def _is_complex(value):
    return isinstance(value, complex) or getattr(getattr(value, "dtype", None), "kind", "") == "c"


def _times_complex_one(b, sign):
    """``b`` as ATen's complex add kernel takes it: ``a + alpha * b`` with alpha a complex number (1, or -1 for
    sub), multiplied as complex numbers, so an infinite part makes a NaN: (inf+100j) * (1+0j) is inf+nanj, and
    torch's 1 + (inf+100j) tensor is inf+nanj where NumPy's sum is inf+100j. A real ``b`` is returned as is."""
    if not _is_complex(b):
        return b
    with np.errstate(invalid="ignore"):
        return b * complex(sign, 0)


@iterator_layout
class Sub(Function):
    @staticmethod
    def forward(ctx, a, b):
        ctx.shapes = (getattr(a, "shape", ()), getattr(b, "shape", ()))  # a scalar: ()
        try:
            if _is_complex(b):
                return a + _times_complex_one(b, -1)
            return a - b
        except ValueError:
            raise _broadcast_error("sub", a, b) from None
        except TypeError:  # NumPy refuses bool - bool (other bool operands: see sub())
            raise RuntimeError(_BOOL_SUB_BOTH) from None

    @staticmethod
    def backward(ctx, g):
        na, nb = ctx.needs_input_grad
        return (unbroadcast(g, ctx.shapes[0]) if na else None,
                unbroadcast(-g, ctx.shapes[1]) if nb else None)

    flops = Add.flops


@iterator_layout
class Mul(Function):
    @staticmethod
    def forward(ctx, a, b):
        # Keep only what backward reads, as torch does: b for a's gradient, a for b's. An operand
        # nobody saved may then change in place before backward (see tensor.py, version counters).
        na, nb = ctx.needs_input_grad
        dtype = None  # set when a Python number meets a 16-bit float array (then kept as float32)
        if type(b) in _NUMBERS and _is_16bit_float(a) or type(a) in _NUMBERS and _is_16bit_float(b):
            dtype = a.dtype if hasattr(a, "dtype") else b.dtype
            a, b = _number_as_float32(a, b), _number_as_float32(b, a)  # (backward's g * b: float32 too)
        ctx.a, ctx.b = a if nb else None, b if na else None
        if not (na and nb):  # (when both are kept, backward reads their shapes from them)
            ctx.shapes = (_shape(a), _shape(b))
        try:
            return a * b if dtype is None else (a * b).astype(dtype)
        except ValueError:
            raise _broadcast_error("mul", a, b) from None

    @staticmethod
    def backward(ctx, g):
        na, nb = ctx.needs_input_grad
        # EXERCISE 1.2: gradients of a * b for a and b (None where not needed), unbroadcast to their shapes
        # BEGIN SOLUTION
        a, b = ctx.a, ctx.b
        a_shape, b_shape = (_shape(a), _shape(b)) if na and nb else ctx.shapes
        return (unbroadcast(g * b, a_shape) if na else None,
                unbroadcast(g * a, b_shape) if nb else None)
        # END SOLUTION

    flops = Add.flops


@iterator_layout
@backward_in_float32
class Div(Function):
    @staticmethod
    def forward(ctx, a, b):
        na, nb = ctx.needs_input_grad  # keep only what backward reads (a only for b's gradient)
        dtype = None  # as in Mul: x / 3 on 16-bit floats divides by 3.0f and rounds once
        if type(b) in _NUMBERS and _is_16bit_float(a) or type(a) in _NUMBERS and _is_16bit_float(b):
            dtype = a.dtype if hasattr(a, "dtype") else b.dtype
            a, b = _number_as_float32(a, b), _number_as_float32(b, a)
        ctx.a, ctx.b, ctx.shapes = a if nb else None, b, (_shape(a), _shape(b))
        try:
            return a / b if dtype is None else (a / b).astype(dtype)
        except ValueError:
            raise _broadcast_error("div", a, b) from None

    @staticmethod
    def backward(ctx, g):
        na, nb = ctx.needs_input_grad
        if nb and getattr(ctx, "step_dtype", None) is not None:  # (16 bits: torch's ops each rounded, below)
            return _div_grads_in_16_bit_steps(ctx, g)
        # EXERCISE 1.3: gradients of a / b for a and b (None where not needed), unbroadcast to their shapes
        # BEGIN SOLUTION
        a, b = ctx.a, ctx.b
        a_shape, b_shape = ctx.shapes
        return (unbroadcast(g / b, a_shape) if na else None,
                unbroadcast(-g * ((a / b) / b), b_shape) if nb else None)
        # END SOLUTION

    flops = Add.flops


def _div_grads_in_16_bit_steps(ctx, g):
    """Div's gradients under a 16-bit gradient (float32 arrays here, ``backward_in_float32``) as torch's ops
    round them: ``grad / b`` once, and the divisor's ``-grad * ((a / b) / b)`` with each quotient rounded."""
    (na, _), (a, b), (a_shape, b_shape) = ctx.needs_input_grad, (ctx.a, ctx.b), ctx.shapes
    return (unbroadcast(g / b, a_shape) if na else None,
            unbroadcast(-g * _step(ctx, _step(ctx, a / b) / b), b_shape))


class Neg(Function):
    @staticmethod
    def forward(ctx, a):
        try:
            return -a
        except TypeError:  # NumPy refuses -bool, with its own words
            raise RuntimeError("Negation, the `-` operator, on a bool tensor is not supported. If you "
                               "are trying to invert a mask, use the `~` or `logical_not()` operator "
                               "instead.") from None

    @staticmethod
    def backward(ctx, g):
        return -g


@iterator_layout
class Pow(Function):
    """``a ** b`` where either side may be a tensor (or a Python number); ``contiguous``: a C-ordered
    result (torch's number ** tensor), else TensorIterator's layout (iterator_layout). (A 16-bit exponent
    is rounded to bfloat16 / float16 first, in torch and NumPy alike.)"""

    @staticmethod
    def forward(ctx, a, b, contiguous=False):
        out = _power_kernel(a, b)
        ctx.a, ctx.b = a, b
        ctx.out = out if ctx.needs_input_grad[1] else None  # only the exponent's gradient reads it
        return out

    @staticmethod
    def backward(ctx, g):
        na, nb = ctx.needs_input_grad
        a, b, out = ctx.a, ctx.b, ctx.out
        xp, zero = xp_of(g), g.dtype.type(0)
        # torch's pow_backward is three tensor ops, each rounding a 16-bit result: grad * (b * a.pow(b - 1))
        # and grad * (out * a.log()); a.pow(b - 1) is the forward's kernel in a's dtype (x * x * x for b = 4)
        rounded, wide = _rounding_steps(g)
        ga = gb = None
        # no gradient through a zero exponent (0 ** 0 would say nan), and none to the exponent where the
        # base is 0 and the exponent >= 0 (0 * log 0 would say nan)
        if na:
            with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
                power = _power_kernel(a, _minus_one(b))
                ga = rounded(wide(g) * rounded(_wide_exponent(b) * wide(power)))
            ga = xp.where(xp.asarray(b) == 0, zero, ga)
            ga = unbroadcast(ga, _shape(a))
        if nb:
            with np.errstate(divide="ignore", invalid="ignore"):
                log_a = wide(float32_math.vml("log", a))  # (torch's a.log(): in a's dtype, float32's MKL kernel)
            gb = xp.where((xp.asarray(a) == 0) & (xp.asarray(b) >= 0), zero,
                          rounded(wide(g) * rounded(wide(out) * log_a)))
            gb = unbroadcast(gb, _shape(b))
        return ga, gb


def _power_kernel(a, b):
    """``a ** b`` (arrays or a Python number on either side) as torch's pow kernel for their dtype."""
    if isinstance(a, np.generic):  # (NumPy's 0-d results are scalars: a 0-d tensor's power, not NumPy's ``**``;
        a = np.asarray(a)  # norm_backward's |x| ** (p - 1) of a 0-d x was off)
    if _is_16bit_float(a) and type(b) in _NUMBERS and b == 0:
        return xp_of(a).ones(a.shape, dtype=a.dtype)  # (torch fills: pow(signaling NaN, 0) is 1, NumPy's NaN)
    try:
        out = _half_powers(a, b)
        if out is None:
            out = _float32_power(a, b)
        if out is None:
            out = _multiplied_power(a, b)
        if out is None:
            out = _float64_power(a, b)
        if out is None:
            out = _float16_zero_powers(a, b, a ** b)
    except ValueError:  # NumPy refuses integers to negative integer powers
        out = _integer_power(a, b)
    return out


def _float16_zero_powers(a, b, out):
    """``out`` (NumPy's ``a ** b``) with 1 where a float16 tensor is raised to a float16 tensor's 0: torch computes
    in float32, and widening float16 quiets a signaling NaN, so its pow(NaN, 0) is 1 as in C where NumPy's is NaN
    (bfloat16 widens bit for bit and stays NaN, in torch too)."""
    if getattr(a, "dtype", None) != np.float16 or getattr(b, "dtype", None) != np.float16:
        return out
    return xp_of(out).where(b == 0, out.dtype.type(1), out)


def _multiplied_power(a, b):
    """float64 and bfloat16 to the powers 2, 3, -1, -2 (a Python number) as torch's kernel: by
    multiplication and division, ``a * a * a`` and ``1 / (a * a)`` (bfloat16 rounding each product, as
    torch's bfloat16 vectors do; NumPy's power would round once); None otherwise."""
    if type(b) not in _NUMBERS or b not in (2, 3, -1, -2) or not hasattr(a, "dtype"):
        return None
    if a.dtype == np.float64 or is_bfloat16(a.dtype):
        return _power_as_torch(a, b)
    return None


def _minus_one(b):
    """``b - 1``: a number stays a number, an array stays an array (torch's ``exponent - 1`` keeps a 0-d
    tensor a tensor, which its pow kernel takes as one: NumPy's 0-d arithmetic would give a scalar)."""
    if not hasattr(b, "dtype"):  # (a Python number, complex ones included)
        return b - 1
    xp = xp_of(b)
    return xp.asarray(xp.subtract(b, xp.asarray(1, dtype=b.dtype)))  # (NumPy's ufunc of 0-d arrays: a scalar)


def _wide_exponent(b):
    """The exponent in a 16-bit gradient's compute dtype: a 16-bit array as float32, anything else as it is."""
    return upcast(b) if _is_16bit_float(b) else b


def _rounding_steps(g):
    """``(rounded, wide)`` for a backward formula written as torch's sequence of tensor ops: with a 16-bit
    gradient each op computes in float32 (``wide``) and rounds its result to g's dtype (``rounded``), as
    torch's 16-bit kernels do; for other dtypes both leave arrays as they are."""
    if not _is_16bit_float(g):
        return _unchanged, _unchanged
    dtype = g.dtype
    return (lambda v: v.astype(dtype)), (lambda v: upcast(v) if _is_16bit_float(v) else v)


def _unchanged(v):
    return v


def _mkl_sqrt_array(a):
    """A float32 or float64 NumPy array, whose sqrt torch's CPU build sends to MKL (``float32_math.mkl_sqrt``)."""
    return type(a) is np.ndarray and a.dtype in (float32, np.float64)


def _power_as_torch(a, exponent):
    """``a ** exponent`` as torch's kernel for a number exponent computes it in floating point: 1 and 2, 3,
    -1, -2 by multiplication and division (``1 / (a * a)``, not C's pow), +-0.5 as sqrt and 1 / sqrt;
    other exponents (and tensors of them) by NumPy's power."""
    if type(exponent) not in _NUMBERS or not (hasattr(a, "dtype") and (a.dtype.kind == "f" or is_bfloat16(a.dtype))):
        return a ** exponent
    xp = xp_of(a)
    by_multiplication = {1: lambda: a.copy(order="K"), 2: lambda: a * a, 3: lambda: a * a * a, -1: lambda: 1 / a,
                         -2: lambda: 1 / (a * a), 0.5: lambda: xp.sqrt(a), -0.5: lambda: 1 / xp.sqrt(a)}
    return by_multiplication.get(exponent, lambda: a ** exponent)()


def _float32_power(a, b):
    """A float32 tensor (or a number) to a number or float32 tensor power as torch's kernel: 2, 3, -1, -2 by
    multiplication and division (``_power_as_torch``), a tensor exponent SLEEF's pow in vectors and C's powf in
    the loop's scalar tail (``float32_math.pow_loop``), a number one SLEEF's pow in vectors and C's double pow in the
    tail (``float32_math.pow_scalar_loop``); None for other dtypes."""
    if type(a) in _NUMBERS and isinstance(b, np.ndarray) and b.dtype == float32:  # (number ** tensor)
        return float32_math.pow_loop(a, b)
    if not (isinstance(a, np.ndarray) and a.dtype == float32):
        return None
    if type(b) in _NUMBERS:
        return _power_as_torch(a, b) if b in (1, 2, 3, -1, -2) else float32_math.pow_scalar_loop(a, b)
    if isinstance(b, np.ndarray) and b.dtype == float32:
        return float32_math.pow_loop(a, b)
    return None


def _float64_power(a, b):
    """float64 tensors (or a number on one side) to a power as torch's double pow kernels: SLEEF's pow in vectors,
    C's in the loop's scalar lambda (``float32_math.pow_loop64``); None for other dtypes and for the exponents 0
    and 1 (a number: torch copies or fills)."""
    def double(v):
        return isinstance(v, np.ndarray) and v.dtype == np.float64
    if (double(a) and (double(b) or (type(b) in _NUMBERS and b not in (0, 1)))) or (type(a) in _NUMBERS and double(b)):
        return float32_math.pow_loop64(a, b)
    return None


_POW_RSQRT_STEP = 64  # pow(x, -0.5)'s bfloat16 loop: the last n % 64 elements scalar (torch 2.13, measured;
# torch.rsqrt's own loop: n % 32)


def _half_powers(a, b):
    """``a ** 0.5`` and ``a ** -0.5`` where torch and NumPy part at -inf and -0.0, else None. torch
    runs a number exponent 0.5 / -0.5 as sqrt / rsqrt (-inf: nan; -0.0: -0.0 / -inf), but for float16,
    and a tensor exponent as C's pow (-inf ** 0.5 is inf, -0.0 ** 0.5 is 0.0); NumPy takes its sqrt
    path for a 0-d exponent 0.5 and C's pow for a number -0.5."""
    if not (hasattr(a, "dtype") and (a.dtype.kind == "f" or is_bfloat16(a.dtype))):
        return None
    number = type(b) is float
    if not (number or getattr(b, "ndim", 1) == 0) or b not in (0.5, -0.5):
        return None
    xp = xp_of(a)
    if number and a.dtype != np.float16:
        if b < 0 and is_bfloat16(a.dtype):  # torch's bfloat16 rsqrt: 1 / sqrt in float32, rounded once, but
            out = (1 / xp.sqrt(upcast(a))).astype(a.dtype)  # sqrt and 1 / it each rounded in the scalar tail,
            _in_16_bit_steps_at_tail(out, lambda part: 1 / xp.sqrt(part), a, step=_POW_RSQRT_STEP)  # pow's: 64
            return out
        if b > 0:  # (torch's sqrt: MKL's for float32 and float64, float32_math.mkl_sqrt)
            return float32_math.mkl_sqrt(a) if _mkl_sqrt_array(a) else xp.sqrt(a)
        return (1 / xp.sqrt(a)).astype(a.dtype, copy=False)  # (rsqrt's: 1 / a correctly rounded root)
    with np.errstate(divide="ignore"):
        out = xp.sqrt(xp.where(a == 0, 0, a)) if b > 0 else xp.power(a, xp.full(a.shape, b, dtype=a.dtype))
    return xp.where(a == -xp.inf, xp.inf if b > 0 else 0, out).astype(a.dtype, copy=False)


def _integer_power(a, b):
    """``a ** b`` in integers with negative exponents, as torch: a Python number as exponent is
    refused; a tensor of exponents gives ``1 / a**|b|`` truncated -- 0, except 1 for a == 1 and
    +-1 for a == -1 (and 0 for 0 ** -n, where NumPy would raise)."""
    if not hasattr(b, "dtype"):
        raise RuntimeError("Integers to negative integer powers are not allowed.")
    xp = xp_of(b)
    dtype = xp.result_type(a, b)  # (a Python number base takes the tensor's dtype: int16 stays int16)
    a, b = xp.asarray(a, dtype=dtype), xp.asarray(b)
    negative = b < 0
    power = a ** xp.where(negative, 0, b)  # the non-negative exponents as NumPy computes them
    odd = (b % 2) != 0
    reciprocal = xp.where(a == 1, 1, xp.where(a == -1, xp.where(odd, -1, 1), 0)).astype(power.dtype)
    return xp.where(negative, reciprocal, power)


# ---- pointwise functions -------------------------------------------------------------------------
class Exp(Function):
    @staticmethod
    def forward(ctx, a):
        ctx.out = float32_math.vml("exp", a)  # (float32: torch's MKL kernel, see float32_math)
        return ctx.out

    @staticmethod
    def backward(ctx, g):
        return g * ctx.out


class Log(Function):
    @staticmethod
    def forward(ctx, a):
        ctx.a = a
        return float32_math.vml("log", a)

    @staticmethod
    def backward(ctx, g):
        return g / ctx.a


class Sqrt(Function):
    @staticmethod
    def forward(ctx, a):  # (float32, float64: torch's MKL kernel, not correctly rounded, where matched: float32_math)
        ctx.out = float32_math.mkl_sqrt(a) if _mkl_sqrt_array(a) else xp_of(a).sqrt(a)
        return ctx.out

    @staticmethod
    def backward(ctx, g):
        return g / (2 * ctx.out)


@backward_in_float32
class Rsqrt(Function):
    """``1 / sqrt(a)``; float16/bfloat16: in float32, rounded once, as torch's vectorized kernel, or each
    step rounded to 16 bits, as its scalar one (NumPy's 16-bit steps): on every element with
    ``STEPS_ROUNDED_TO_16_BITS``, else on the scalar tail of each thread's chunk (``_in_16_bit_steps_at_tail``)."""
    @staticmethod
    def forward(ctx, a):
        xp = xp_of(a)
        if _is_16bit_float(a) and not STEPS_ROUNDED_TO_16_BITS:
            ctx.out = (1 / xp.sqrt(upcast(a))).astype(a.dtype)
            _in_16_bit_steps_at_tail(ctx.out, lambda part: 1 / xp.sqrt(part), a)
        else:
            ctx.out = 1 / xp.sqrt(a)
        return ctx.out

    @staticmethod
    def backward(ctx, g):  # d/da a^(-1/2) = -1/2 a^(-3/2), in torch's order: (-0.5 g) (y.pow(3))
        out = ctx.out
        dtype = getattr(ctx, "step_dtype", None)
        cube = out * out * out if dtype is None else upcast(_power_kernel(out.astype(dtype), 3))
        return _step(ctx, -0.5 * g) * cube


def _magnitude(a):
    """|a|: for a complex NumPy array as torch's CPU kernel computes it, C's hypot of the real and imaginary parts
    (NumPy's own complex abs is an ulp off it in ~13% of complex64 elements; torch's complex128 one, MKL's, in
    ~0.05% still); else the array library's abs."""
    if type(a) is np.ndarray and a.dtype.kind == "c":
        return np.hypot(a.real, a.imag)
    return xp_of(a).abs(a)


class Abs(Function):
    @staticmethod
    def forward(ctx, a):
        ctx.a = a
        return _magnitude(a)

    @staticmethod
    def backward(ctx, g):  # sign(0) = 0, and sign(NaN) = 0, as PyTorch
        return g * _torch_sign(ctx.a)


def _complex_sign(a):
    """torch.sgn of complex numbers, ``z / |z|`` (0 at 0), as its CPU kernel rounds it: each part divided by |z| (C's
    hypot) in the vectorized loop; in its scalar lambda -- the loop's tail, a strided input (``float32_math.
    scalar_positions``, two vectors of complex numbers a step) -- c10's complex division by ``|z| + 0i``, which
    multiplies by ``1 / |z|`` (and makes NaN of an infinite part). NumPy's complex division rounds otherwise."""
    xp = xp_of(a)
    a = xp.ascontiguousarray(a) if type(a) is not np.ndarray else a
    magnitude = _magnitude(a)
    safe = xp.where(magnitude == 0, 1, magnitude)
    out = xp.empty(a.shape, a.dtype)
    out.real, out.imag = a.real / safe, a.imag / safe
    if type(a) is np.ndarray and a.size:
        step = 2 * (float32_math.FLOAT_LANES * 4) // a.itemsize  # (two vectors of complex numbers)
        flat_out, flat_a, flat_safe = out.reshape(-1), np.ascontiguousarray(a).reshape(-1), safe.reshape(-1)
        for where in float32_math.scalar_positions(a, step=step):  # (c10's z / (|z| + 0i): Smith's division)
            scale, re, im = 1 / flat_safe[where], flat_a.real[where], flat_a.imag[where]
            flat_out.real[where], flat_out.imag[where] = (re + im * 0) * scale, (im - re * 0) * scale
    return xp.where(magnitude == 0, 0, out).astype(a.dtype)


def _torch_sign(a):
    """torch.sign: -1, 0 or 1, and +0 for NaN and -0 (NumPy's sign of NaN is NaN; bfloat16's of -0 -0)."""
    xp = xp_of(a)
    if a.dtype.kind == "c":  # torch.sgn: z / |z|, 0 at 0 (abs's derivative for complex numbers)
        return _complex_sign(a)
    out = xp.asarray(xp.sign(a))
    if not is_floating(out.dtype):
        return out
    return xp.where(xp.abs(out) == 1, out, xp.zeros((), out.dtype))


@backward_in_float32
class Tanh(Function):
    @staticmethod
    def forward(ctx, a):
        ctx.out = float32_math.vml("tanh", a)
        return ctx.out

    @staticmethod
    def backward(ctx, g):
        return float32_math.in_cache_slices(lambda g, y: g * _one_minus_square(y), g, ctx.out)


def _one_minus_square(y):
    """``1 - y * y`` rounded once, as torch's tanh_backward kernel computes it (a fused multiply-add):
    for float32 the exact product in float64, then one rounding (two separate roundings made ~30% of
    Karpathy's hand-derived tanh gradients 'exact' where torch's are not)."""
    return fastmath.multiply_add(-y, y, 1)


def _kernel_exp(a, loop=None):
    """``exp`` inside a torch kernel's formula (elu's and softplus's backward): for float32 the SLEEF exp
    of its vectorized loop and C's in the scalar tail (float32_math.loop_exp), not the MKL exp of
    ``torch.exp``; float64 likewise (``exp_of_negative64``); other dtypes NumPy's."""
    if _numpy_float64(a):  # (SLEEF's double exp in vectors, C's in the tail of ``loop``, its kernel's operands)
        return float32_math.loop64("exp", a, loop)
    return float32_math.loop_exp(a) if _numpy_float32(a) else xp_of(a).exp(a)


def _numpy_float32(a):
    """A float32 NumPy array: where float32_math reproduces torch's CPU kernel."""
    return a.dtype == float32 and isinstance(a, np.ndarray)


def _numpy_float64(a):
    return a.dtype == np.float64 and isinstance(a, np.ndarray)


def _vector_functions(a):
    """float32_math's ``vectorized`` (``vectorized64``) for a float32 (float64) NumPy array: torch's
    ``Vectorized<T>::exp``, ``::log1p``... as its kernels apply them to every element; else None."""
    return float32_math.vectorized if _numpy_float32(a) else float32_math.vectorized64 if _numpy_float64(a) else None


def _sigmoid(xp, a):
    """torch's ``1 / (1 + e^-a)`` (``e^-a = inf`` gives 0, as torch; ``(1 + tanh(a/2)) / 2`` gave 0 for
    a float64 -100 where torch gives 3.7e-44)."""
    with np.errstate(over="ignore"):
        return 1 / (1 + xp.exp(-a))


@computes_in_float32
class Sigmoid(Function):
    @staticmethod
    def forward(ctx, a):
        if _numpy_float32(a):  # torch's kernel, step by step (float32_math)
            ctx.out = float32_math.sigmoid(a)
        elif _numpy_float64(a):  # its float64 kernel: SLEEF's exp in vectors, C's in the loop's tail
            ctx.out = 1 / (1 + float32_math.exp_of_negative64(a))
        else:
            ctx.out = _sigmoid(xp_of(a), a)
        return ctx.out

    @staticmethod
    def backward(ctx, g):
        out = ctx.out
        if getattr(ctx, "step_dtype", None) == np.float16:  # torch's sigmoid_backward has a float path for
            return _step(ctx, g * _step(ctx, 1 - out)) * out  # bfloat16 only: float16 runs c10::Half, each op rounded
        return g * (1 - out) * out  # (torch's kernel's order: each product rounds)


class Relu(Function):
    """torch's ``clamp_min(x, 0)``: a negative becomes +0 (``a * mask`` made it -0.0, which prints as
    ``-0.``), while -0.0 and NaN pass through; the gradient flows where not ``a <= 0`` (NaN too, as
    torch's threshold_backward). Like torch's, backward reads the result (``out <= 0`` where ``a <= 0``),
    so changing the result in place before backward is torch's version-counter error."""

    @staticmethod
    def forward(ctx, a):
        ctx.out = xp_of(a).where(a < 0, a.dtype.type(0), a)
        return ctx.out

    @staticmethod
    def backward(ctx, g):  # (a where, as torch's: +0 where masked, even for a negative, inf or NaN gradient)
        return xp_of(g).where(ctx.out <= 0, g.dtype.type(0), g)


def _in_memory_order(a):
    """``a`` with its dimensions in the memory order torch gives a result made from it (its layout
    kept: factories.layout_order), and the function that puts such a result back in index order."""
    order = layout_order(a)
    if order == tuple(range(a.ndim)):
        return a, lambda result: result
    back = tuple(np.argsort(order))
    return a.transpose(order), lambda result: known_layout(result.transpose(back))


@computes_in_float32
class Silu(Function):
    """SiLU (swish), Llama's MLP activation: ``silu(x) = x * sigmoid(x)``, with the derivative
    ``s * (1 + x * (1 - s))`` where ``s = sigmoid(x)``. Flat blocks run in parallel."""

    @staticmethod
    def forward(ctx, a):
        xp = xp_of(a)
        a_, back = _in_memory_order(a)
        # C order in a_'s dimensions, so reshape(-1) below is a view the loop writes into (it wrote into a
        # copy, and the result was uninitialised memory); seen back in index order: torch's layout
        out, s = xp.empty(a_.shape, a.dtype), xp.empty(a_.shape, a.dtype)
        if _numpy_float32(a):  # torch's kernel: out = a / (1 + exp(-a)), s = 1 / (1 + exp(-a))
            float32_math.silu_and_sigmoid(a_, s, out)
        elif _numpy_float64(a):  # the same formulas, SLEEF's double exp in vectors, C's in the loop's tail
            one_plus = 1 + float32_math.exp_of_negative64(a_)
            np.divide(a_, one_plus, out=out)
            np.divide(1, one_plus, out=s)
        else:  # s = sigmoid(a), out = a * s
            parallel.rows(fastmath.sigmoid_and_silu, a_.reshape(-1), s.reshape(-1), out.reshape(-1), work_per_row=1)
        ctx.a, ctx.s = a, back(s)
        return back(out)

    @staticmethod
    def backward(ctx, g):
        gx = xp_of(g).empty(g.shape, g.dtype)  # C order, as in forward
        s = ctx.s  # gx = g * s * (1 + a * (1 - s)); torch's kernel recomputes s, in its own loop over (g, a)
        if _numpy_float32(g):
            s = float32_math.relooped(s, ctx.a, (ctx.a,), (g, ctx.a), float32_math.SIGMOID)
        elif _numpy_float64(g) and _numpy_float64(ctx.a):
            s = 1 / (1 + float32_math.exp_of_negative64(ctx.a, loop=(g, ctx.a)))
        parallel.rows(fastmath.silu_backward, g.reshape(-1), ctx.a.reshape(-1), s.reshape(-1),
                      gx.reshape(-1), work_per_row=1)
        return gx


# ---- GELU and the normal distribution ------------------------------------------------------------
@backward_in_float32  # (its forward widens a 16-bit input itself)
class Erf(Function):
    """``erf(x) = 2/sqrt(pi) * integral from 0 to x of exp(-t^2) dt``; gradient
    ``2/sqrt(pi) exp(-x^2)``. Computed with ``fastmath.erf`` in float64 and rounded to the input's
    dtype (fastmath's own float32 erf is an approximation, fine inside GELU, not for ``torch.erf``), where torch
    calls MKL's VML (float32, float64); a 16-bit erf on the CPU is ATen's own ``vml::verf``: Vectorized<float>'s
    Abramowitz-Stegun erf on every element, the tail too (``float32_math.aten_erf``), rounded: near 0 it
    cancels (erf of a float16 6e-8 is 0, of 2.4e-7 is 4.2e-7: 6584 float16 and 28690 bfloat16 numbers differ
    from the correctly rounded erf)."""

    @staticmethod
    def forward(ctx, a):
        ctx.a = a
        if _is_16bit_float(a) and type(a) is np.ndarray:
            wide = a.astype(np.float32)
            with np.errstate(invalid="ignore"):
                erf = float32_math.c_function("erff", wide) if float32_math.CPU_CAPABILITY == "default" \
                    else float32_math.aten_erf(wide)
            return erf.astype(a.dtype)
        in_mkl = mkl_vml.compute("erf", a)  # (float32/float64: torch's MKL erf, where MKL is loaded)
        if in_mkl is not None:
            return in_mkl
        host = fastmath.erf(_host_array(a).astype(np.float64))  # (16-bit off the CPU: through float32, as
        if _is_16bit_float(a):  # torch's CUDA kernel computes in float)
            host = host.astype(np.float32)
        return xp_of(a).asarray(host.astype(a.dtype, copy=False))

    @staticmethod
    def backward(ctx, g):  # torch's 2.0 / sqrt(M_PI) * exp(-(self.pow(2))) * grad, in that order
        gaussian = _step(ctx, float32_math.vml("exp", _step(ctx, -ctx.a * ctx.a)))  # (float32: MKL's exp)
        return _step(ctx, (2 / math.sqrt(math.pi)) * gaussian) * g


def _host_array(a):
    """``a`` as a NumPy array (fastmath's loops run on the host)."""
    return a.get() if hasattr(a, "get") else a


def erf(input):
    """``torch.erf``, elementwise (integers compute in the default float dtype)."""
    return Erf.apply(_floating(input))


_SQRT_2_OVER_PI = math.sqrt(2 / math.pi)


@computes_in_float32
class Gelu(Function):
    """GELU, ``gelu(x) = x * Phi(x)`` with ``Phi`` the standard normal CDF; ``approximate='tanh'``
    uses the tanh form (as PyTorch's option).

    The exact form's derivative is ``Phi(x) + x * phi(x)`` (``phi`` the normal density). Forward
    saves it while it has Phi and phi at hand (only when a gradient is needed), so backward is a
    single multiply.
    """

    @staticmethod
    def forward(ctx, a, approximate="none"):
        xp = xp_of(a)
        ctx.approximate = approximate
        if approximate == "tanh":
            ctx.a = a
            if _numpy_float32(a):  # torch's kernel: SLEEF's tanh, a fused multiply-add (float32_math)
                a_, back = _in_memory_order(a)  # (in a_'s C order: the loop's tail by memory position, and
                out, t = float32_math.gelu_tanh(a_)  # the result in a's layout, as torch's)
                ctx.t = back(t)
                return back(out)
            if _numpy_float64(a):  # its double kernel: SLEEF's tanh in vectors, C's in the tail (float32_math)
                ctx.t = _gelu_tanh64(a, (a,))
            else:
                ctx.t = xp.tanh(_SQRT_2_OVER_PI * (a + 0.044715 * a * a * a))
            return 0.5 * a * (1 + ctx.t)
        if approximate != "none":
            raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
        a_, back = _in_memory_order(a)  # (C order in a_'s dimensions: see Silu)
        out = xp.empty(a_.shape, a.dtype)
        deriv = xp.empty(a_.shape, a.dtype) if ctx.needs_input_grad[0] else None
        # out = a * Phi(a), deriv = Phi(a) + a * phi(a)
        onednn = backends.mkldnn.enabled and a.flags.c_contiguous  # (torch's use_mkldnn: is_contiguous(), the
        exact = float32_math.gelu_erf(a_, onednn=onednn) if _numpy_float32(a) else None  # memory format's order aside)
        sixteen = getattr(ctx, "sixteen_bit_input", None)
        if exact is not None and sixteen is not None and not float32_math.onednn_runs_gelu_erf(sixteen, onednn):
            # (a 16-bit input oneDNN does not take, a strided one or a single number, runs ATen's loop, its scalar
            # lambda where the 16-bit input's layout puts it: the float32 copy's contiguity is not torch's)
            exact = float32_math.gelu_erf(a_, onednn=False, positions=float32_math.scalar_positions(
                np.asarray(sixteen).transpose(layout_order(sixteen)), step=float32_math.HALF_VECTOR_STEP))
        elif exact is not None and sixteen is not None and is_bfloat16(sixteen.dtype):  # (oneDNN's bfloat16 store,
            tiny = np.abs(exact) < np.float32(2.0 ** -126)  # vcvtneps2bf16, flushes a float32 subnormal to zero)
            exact = np.where(tiny, np.copysign(np.float32(0), exact), exact)
        if _numpy_float64(a):  # (its double kernel: ATen's loop, C's erf in the tail; the backward's loop its own)
            exact, deriv, ctx.aten_input = float32_math.gelu_erf64(a_), None, a
        if exact is None:
            parallel.rows(fastmath.gelu_and_derivative, a_.reshape(-1), out.reshape(-1),
                          None if deriv is None else deriv.reshape(-1), work_per_row=1)
        else:  # (float32: torch's kernel, oneDNN's or ATen's, step by step; its backward's factor the same kernel's:
            out = exact  # gelu_backward_out_cpu asks the same use_mkldnn as the forward)
            if deriv is not None and not float32_math.onednn_runs_gelu_erf(a_, onednn):
                deriv, ctx.aten_input = None, a  # (ATen's loop: its scalar tail depends on the gradient's layout too)
            elif deriv is not None:
                deriv = float32_math.onednn_gelu_erf_derivative(a_)
        ctx.deriv = None if deriv is None else back(deriv)
        return back(out)

    @staticmethod
    def backward(ctx, g):
        if ctx.approximate == "tanh":
            t = ctx.t  # (torch's kernel recomputes the tanh, in its own loop over (g, a))
            if _numpy_float32(g):
                t = float32_math.relooped(t, ctx.a, (ctx.a,), (g, ctx.a), float32_math.GELU_TANH)
            elif _numpy_float64(g) and _numpy_float64(ctx.a):
                t = _gelu_tanh64(ctx.a, (g, ctx.a))
            compiled = float32_math.gelu_tanh_backward(g, ctx.a, t) if _numpy_float32(g) else None
            if compiled is not None:  # (float32: the formula below, compiled, one pass)
                return compiled
            return float32_math.in_cache_slices(lambda g, a, t: g * _gelu_tanh_derivative(a, t), g, ctx.a, t)
        if ctx.deriv is None:  # (torch's GeluBackwardKernelImpl over (grad, input): see aten_gelu_erf_derivative)
            derivative = float32_math.gelu_erf_derivative64 if _numpy_float64(g) and _numpy_float64(ctx.aten_input) \
                else float32_math.aten_gelu_erf_derivative
            return parallel.multiply(g, derivative(ctx.aten_input, g))
        return parallel.multiply(g, ctx.deriv)


def _gelu_tanh64(a, loop):
    """gelu's ``tanh(sqrt(2/pi) (a + 0.044715 a^3))`` as torch's float64 kernels take it (the inner sum one fused
    multiply-add where the build fuses; SLEEF's tanh in vectors, C's in the scalar lambda of the loop over ``loop``)."""
    inner = _SQRT_2_OVER_PI * fastmath.multiply_add(0.044715, a * a * a, a)
    return float32_math.loop64("tanh", inner, loop)


def _gelu_tanh_derivative(a, t):
    """``0.5 (1 + t) + 0.5 a (1 - t^2) sqrt(2/pi) (1 + 3 * 0.044715 a^2)``, ``t`` the forward's tanh, as
    torch's gelu_backward kernel rounds it: constants in the input's dtype, ``1 - t^2`` and the inner
    ``1 + (3 * 0.044715) a^2`` fused multiply-adds."""
    number = a.dtype.type
    beta, kappa3 = number(_SQRT_2_OVER_PI), number(3) * number(0.044715)
    inner_grad = beta * fastmath.multiply_add(kappa3, a * a, 1)
    return number(0.5) * (1 + t) + (number(0.5) * a) * fastmath.multiply_add(-t, t, 1) * inner_grad


# ---- selection -----------------------------------------------------------------------------------
@iterator_layout
class Where(Function):
    """``where(cond, a, b)``: ``a`` where cond is true, else ``b``; cond carries no gradient.
    ``contiguous``: a C-ordered result (masked_fill, tril: torch fills a contiguous clone), else the
    inputs' layout (torch's where; ``laid_out_from=(2,)``: ``b``'s alone, as threshold's and hardshrink's
    kernels see only their input: Function.torch_number_operands). ``selected``: ``a`` is masked_fill's 0-d value,
    whose gradient torch sums as ``grad.masked_select(mask).sum()``, only the selected elements, in its order."""

    @staticmethod
    def forward(ctx, cond, a, b, contiguous=False, laid_out_from=None, selected=False):
        ctx.cond, ctx.shapes, ctx.selected = cond, (_shape(a), _shape(b)), selected
        out = xp_of(cond).where(cond, a, b)
        return xp_of(out).asarray(out, order="C") if contiguous else out

    @staticmethod
    def backward(ctx, g):
        _, na, nb = ctx.needs_input_grad
        xp, zero = xp_of(g), g.dtype.type(0)
        if na and ctx.selected:  # (masked_select's result: the selected elements in order, one contiguous row)
            ga = sum_like_torch(g[xp.broadcast_to(ctx.cond, g.shape)], (0,)).reshape(ctx.shapes[0])
        else:
            ga = unbroadcast(_where_laid_out(xp, ctx.cond, g, zero), ctx.shapes[0]) if na else None
        return None, ga, unbroadcast(_where_laid_out(xp, ctx.cond, zero, g), ctx.shapes[1]) if nb else None


def _where_laid_out(xp, cond, a, b):
    """``where(cond, a, b)`` laid out as torch's where lays it out (its iterator: the condition's strides first),
    so that a broadcast input's gradient sums it in torch's order (NumPy's where takes C order where they differ)."""
    out = xp.where(cond, a, b)
    return out if getattr(out, "ndim", 0) < 2 else _iterator_laid_out(out, (cond, a, b))


class Clone(Function):
    torch_layout = "own"  # (laid_out_copy: torch's layout for the memory_format asked)

    @staticmethod
    def forward(ctx, a, memory_format=None):
        return laid_out_copy(a, memory_format)

    @staticmethod
    def backward(ctx, g):
        return g


@iterator_layout  # (a copy in the input's layout, as torch's to(dtype): marked so stride() reports it)
class AsType(Function):
    @staticmethod
    def forward(ctx, a, dtype):
        ctx.dtype = a.dtype
        return cast(a, dtype)  # float64 -> bfloat16 through float32, as torch rounds (dtypes.cast)

    @staticmethod
    def backward(ctx, g):
        if g.dtype.kind == "c" and ctx.dtype.kind != "c":  # a real input gets the real part (torch's handle_r_to_c)
            g = g.real
        return cast(g, ctx.dtype)


class PromotionCast(AsType):
    """A cast torch makes inside the op that reads it (``x * t.double()`` promotes x in mul's TensorIterator,
    ``x.sum(dtype=torch.float64)`` converts in sum's kernel): no node of torch's graph, so the op's node shows
    the cast's input as its edge (``(x * t.double()).grad_fn.next_functions`` is x's AccumulateGrad)."""
    shown_as_its_input = True


class ToDevice(Function):
    """Move between devices; the gradient moves back."""

    @staticmethod
    def forward(ctx, a, device):
        if ctx.device.type == "meta":  # (a meta tensor's zeros are no values: torch refuses, in these words)
            raise NotImplementedError(NO_DATA)
        ctx.source = ctx.device
        ctx.device = device
        return _move(a, device)

    @staticmethod
    def backward(ctx, g):
        if ctx.device.type == "meta":  # (the gradient of a move to meta is meta: no values to move back)
            raise NotImplementedError(NO_DATA)
        return _move(g, ctx.source)


def _move(array, device):
    xp = device.xp
    if xp is np:
        return array.copy() if isinstance(array, np.ndarray) else array.get()
    device.check_dtype(array.dtype)  # a clear error for bfloat16 on a CuPy without it (< 14)
    return xp.asarray(array)


# ---- wrappers ------------------------------------------------------------------------------------
def add(input, other, *, alpha=1):
    """``input + alpha * other``, as torch.add (dtypes promoted as torch does: see dtypes.py)."""
    input, other = _promoted(input, other)
    if alpha == 1 and type(alpha) is int:
        return Add.apply(input, other)
    given, alpha = alpha, _check_alpha(input, other, alpha)
    if _scaled_in_one_kernel(input, other):
        return _with_alpha(AddScaled.apply(input, other, alpha=alpha), given, "AddBackward0")
    return _with_alpha(Add.apply(input, _scaled(other, alpha, input)), given)


_BOOL_SUB_BOTH = ("Subtraction, the `-` operator, with two bool tensors is not supported. Use the `^` "
                  "or `logical_xor()` operator instead.")


def rsub(input, other, *, alpha=1):
    """``torch.rsub``: ``other - alpha * input`` (sub with its operands swapped; torch's node is RsubBackward1
    for a number ``other``, RsubBackward0 for a tensor, with ``input`` first)."""
    return name_node(sub(other, input, alpha=alpha), f"RsubBackward{int(not isinstance(other, Tensor))}",
                     input, graph=(input, other) if isinstance(other, Tensor) else (input,))


def sub(input, other, *, alpha=1):
    """``input - alpha * other``, as torch.sub (torch refuses bool tensors: see _refuse_bool)."""
    a, b = _promoted(input, other)
    if a is not input or b is not other or alpha != 1 or bool in (type(input), type(other)):  # a cast,
        _refuse_bool(input, other)  # a scaled other, a Python bool: look (bool - bool of one dtype
    if alpha == 1 and type(alpha) is int:  # raises in Sub.forward, at no cost here)
        return Sub.apply(a, b)
    given, alpha = alpha, _check_alpha(a, b, alpha)
    if _scaled_in_one_kernel(a, b):
        return _with_alpha(AddScaled.apply(a, b, alpha=-alpha), given, "SubBackward0")
    return _with_alpha(Sub.apply(a, _scaled(b, alpha, a)), given)


def _with_alpha(result, alpha, name=None):
    """torch's AddBackward0 / SubBackward0 keep ``alpha`` as given (``grad_fn._saved_alpha``); minilora's node
    may have folded it into the other operand, or be the fused AddScaled (named ``name``, torch's node)."""
    node = result._ctx
    if node is not None:
        node.torch_alpha = alpha  # (not ctx.alpha: AddScaled's backward reads its own)
        name_node(result, name if name is not None else node.name())  # (named: free() keeps alpha)
    return result


def _refuse_bool(input, other):
    """torch refuses subtraction with a bool tensor (or a Python bool) on either side, whatever the
    other operand."""
    bools = [_is_bool(x) for x in (input, other)]
    if all(bools):
        raise RuntimeError(_BOOL_SUB_BOTH)
    if any(bools):
        raise RuntimeError("Subtraction, the `-` operator, with a bool tensor is not supported. If "
                           "you are trying to invert a mask, use the `~` or `logical_not()` operator "
                           "instead.")


def _check_alpha(input, other, alpha):
    """torch's rules for ``alpha``: no float alpha for an integer result, no bool alpha but for a
    bool result (both would silently change the result's dtype or meaning here), and an alpha that
    fits the result's dtype (uint8 takes -1 as 255, refuses 300). Returns alpha as the op uses it."""
    alpha = python_number(alpha)
    dtypes = [x.dtype for x in (input, other) if hasattr(x, "dtype")]
    dtype = dtypes[0] if dtypes else float32
    if isinstance(alpha, bool) and dtype.kind != "b":
        raise RuntimeError("Boolean alpha only supported for Boolean results.")
    if isinstance(alpha, float) and dtype.kind in "biu":
        raise RuntimeError("For integral input tensors, argument alpha must not be a floating point "
                           "number.")
    return bool(alpha) if dtype.kind == "b" else checked_number(alpha, dtype)


def _scaled(x, alpha, like):
    """``alpha * x`` in the dtype of the op (``like``'s): a Python number times alpha wraps around in
    an integer dtype, as torch's does (NumPy would raise OverflowError), and stays a bool in a bool one."""
    if hasattr(x, "_array"):
        return Mul.apply(x, alpha)
    dtype = getattr(like, "dtype", None)
    if dtype is not None and dtype.kind in "iu" and type(x) is int:
        return wrap_around(x * alpha, dtype)  # (x and alpha fit: the product wraps, as torch's)
    if dtype is not None and dtype.kind == "b":
        return bool(x) and alpha
    return x * alpha


def _scaled_in_one_kernel(a, b):
    """Two tensors (of one dtype, promoted) whose ``a + alpha * b`` torch's add kernel computes as one
    formula that NumPy's two steps do not round alike: float16/bfloat16, and float32 and float64 where torch's
    build fuses the multiply-add (all but its "default" one)."""
    if not (isinstance(a, Tensor) and isinstance(b, Tensor)):
        return False
    return _is_16bit_float(a._array) or (a._array.dtype in _FUSED_FLOATS and float32_math.FUSED_MULTIPLY_ADD)


_FUSED_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))  # the dtypes whose add/addcmul/lerp torch fuses


class AddScaled(Function):
    """``a + alpha * b`` on two float16/bfloat16, float32 or float64 arrays, as torch's CPU add kernel computes
    it. float32 (float64): ``fmadd(b, alpha, a)``, alpha taken as a float (double), rounded once
    (``_scaled_in_one_kernel``).
    16-bit: alpha rounded to their dtype, then product (exact) and sum in float32, rounded once; but
    where torch runs the kernel's scalar lambda, c10's 16-bit arithmetic rounds ``alpha * b`` to 16 bits
    before adding: on every element in its "default" build (``STEPS_ROUNDED_TO_16_BITS``), and in its
    AVX builds on the last n % 32 of each thread's share (``_in_16_bit_steps_at_tail``). Backward as torch's: ``g * alpha`` with alpha unrounded, in float32 and
    rounded once, then summed over broadcast axes."""

    @staticmethod
    def forward(ctx, a, b, alpha):
        ctx.shapes, ctx.alpha = (a.shape, b.shape), alpha
        try:
            if a.dtype in _FUSED_FLOATS:
                return fastmath.multiply_add(a.dtype.type(alpha), b, a)
            rounded = float(a.dtype.type(alpha))
            product = rounded * upcast(b)
            if STEPS_ROUNDED_TO_16_BITS:
                product = upcast(product.astype(a.dtype))
            out = (upcast(a) + product).astype(a.dtype)
            if not STEPS_ROUNDED_TO_16_BITS and a.dtype == b.dtype:
                _in_16_bit_steps_at_tail(out, lambda a16, b16: a16 + a.dtype.type(alpha) * b16, a, b)
            return out
        except ValueError:
            raise _broadcast_error("add", a, b) from None

    @staticmethod
    def backward(ctx, g):
        na, nb = ctx.needs_input_grad
        return (unbroadcast(g, ctx.shapes[0]) if na else None,
                unbroadcast((g * _scalar_of(g, ctx.alpha)).astype(g.dtype), ctx.shapes[1]) if nb else None)

    flops = Add.flops


def _scalar_of(g, alpha):
    """``alpha`` as torch's backward multiplies ``g`` by it: a double for float64, else a float (16-bit
    gradients compute in float32)."""
    return np.float64(alpha) if g.dtype == np.float64 else np.float32(alpha)


def mul(input, other):
    a, b = _promoted(input, other)
    if b is not other and _holds_in_float32(input, other, b):  # (`b is other`: the common case)
        return MulByScalarTensor.apply(a, astype(other, float32))
    return Mul.apply(a, b)


def _holds_in_float32(input, other, promoted):
    """``x * s`` or ``x / s`` with a 16-bit tensor ``x`` and a float 0-d tensor ``s`` (of another
    dtype, which _promoted rounded to x's): torch's CPU kernels take such an ``s`` as a scalar, held
    in float32 like a Python number (``s * x`` and ``x + s`` round it to 16 bits: so do we)."""
    return (isinstance(other, Tensor) and other._array.ndim == 0 and isinstance(input, Tensor)
            and promoted.dtype is input._array.dtype and _is_16bit_float(input._array)
            and is_floating(other._array.dtype))


class MulByScalarTensor(Mul):
    """``x * s`` as in ``_holds_in_float32``: the product in float32, rounded once to x's dtype."""

    @staticmethod
    def forward(ctx, a, b):
        return Mul.forward(ctx, a, b).astype(a.dtype)


@backward_in_float32
class Reciprocal(Div):
    """``1 / b`` (``a`` is the number 1): Div's forward, torch's reciprocal gradient ``-grad * (y * y)``
    from the result ``y`` (Div's ``(1 / b) / b`` differs from it in the last bit, in 1 element of 2)."""

    @staticmethod
    def forward(ctx, a, b):
        ctx.out = Div.forward(ctx, a, b)
        return ctx.out

    @staticmethod
    def backward(ctx, g):
        out = ctx.out
        return None, -g * _step(ctx, out * out)


class DivByScalarTensor(Div):
    """``x / s`` as in ``_holds_in_float32``: the quotient in float32, rounded once to x's dtype."""

    @staticmethod
    def forward(ctx, a, b):
        return Div.forward(ctx, a, b).astype(a.dtype)


def div(input, other, *, rounding_mode=None):
    """``input / other``: true division -- integers give the default float dtype, as torch -- or,
    with ``rounding_mode='trunc'`` / ``'floor'``, rounded (integers stay integers; the gradient of
    a rounded quotient is zero, as in torch)."""
    if rounding_mode is None:
        a, b = _promoted(input, other, true_divide=True)
        if b is not other and _holds_in_float32(input, other, b):
            return DivByScalarTensor.apply(a, astype(other, float32))
        return Div.apply(a, b)
    if rounding_mode not in ("trunc", "floor"):
        raise RuntimeError(f"div expected rounding_mode to be one of None, 'trunc', or 'floor' but "
                         f"found '{rounding_mode}'")
    _refuse_bools(f"div_{rounding_mode}", input, other)
    other = int(other) if type(other) is bool else other  # (a Python bool divides as 1 or 0)
    input, other = _promoted(input, other)
    return RoundedDiv.apply(input, other, mode=rounding_mode)


def floor_divide(input, other):
    return div(input, other, rounding_mode="floor")


def _is_bool(x):
    return type(x) is bool or getattr(getattr(x, "_array", None), "dtype", None) == np.bool_


def _no_bool_kernel(kernel, input):
    """``input``, unless it is a bool tensor: torch has no ``kernel`` for bools (abs, floor, round...)
    and raises its NotImplementedError, where NumPy would hand the bools back."""
    if input.dtype == np.bool_:
        raise NotImplementedError(f'"{kernel}" not implemented for \'Bool\'')
    return input


def _refuse_bools(name, input, other):
    """torch has no kernel for ``//``, ``%``, fmod and ``**`` of two bools (NumPy would compute them
    in int8 or float64): the same NotImplementedError as torch."""
    if _is_bool(input) and _is_bool(other):
        raise NotImplementedError(f'"{name}_cpu" not implemented for \'Bool\'')


def pow(input, exponent):  # noqa: A001  (mirrors torch.pow)
    input, exponent = python_number(input), python_number(exponent)
    if type(exponent) is bool and _is_bool(input):  # torch: x ** True is x, x ** False all True
        return input.clone() if exponent else input.new_ones(input.shape, dtype=np.dtype("bool"))
    if _amp.used and _amp.state.active:  # in an autocast region: torch's cast for this op (minilora/amp.py)
        return _amp.autocast_op("pow", pow, input, exponent)
    _refuse_bools("pow", input, exponent)
    if type(exponent) in (int, float) and isinstance(input, Tensor):
        _check_exponent(input.dtype, exponent)
    # torch's node: PowBackward0 for tensor ** number, 1 for tensor ** tensor, 2 for number ** tensor
    node = f"PowBackward{0 if not isinstance(exponent, Tensor) else 2 if not isinstance(input, Tensor) else 1}"
    contiguous = not isinstance(input, Tensor)  # (torch's number ** tensor is contiguous)
    return name_node(Pow.apply(*_promoted(input, exponent), contiguous=contiguous), node, input, exponent)


def _check_exponent(dtype, exponent):
    """torch checks a number raising an integer or 16-bit float tensor as a number to store: it must
    fit the dtype (no wrap-around: uint8 ** 300 and float16 ** 70000 raise), and an integer one must
    not be negative. (float32 and float64 take any exponent.)"""
    if dtype.kind in "biu" and type(exponent) is int and exponent < 0:  # (bool ** -3 too: int64)
        raise RuntimeError("Integers to negative integer powers are not allowed.")
    if dtype.kind in "iu" and type(exponent) is int or _is_16bit_dtype(dtype):
        checked_number(exponent, dtype)
    elif type(exponent) is int:
        wrap_int(exponent, int64)  # (torch's OverflowError for an int neither int64 nor uint64 holds)


def _is_16bit_dtype(dtype):
    return dtype.itemsize == 2 and is_floating(dtype)


def neg(input): return Neg.apply(input)
def _floating(input):
    """Functions such as exp and sqrt of an integer or bool tensor compute in the default float
    dtype, as torch's do (``torch.tensor([4]).sqrt()`` is float32, not NumPy's float64)."""
    array = input._array if isinstance(input, Tensor) else input
    if getattr(getattr(array, "dtype", None), "kind", "f") in "biu":
        return astype(input, get_default_dtype())
    return input


def exp(input):
    if _amp.used and _amp.state.active:  # in an autocast region: torch's cast for this op (minilora/amp.py)
        return _amp.autocast_op("exp", exp, input)
    return Exp.apply(_floating(input))


def log(input):
    if _amp.used and _amp.state.active:  # in an autocast region: torch's cast for this op (minilora/amp.py)
        return _amp.autocast_op("log", log, input)
    return Log.apply(_floating(input))


def sqrt(input): return Sqrt.apply(_floating(input))
def rsqrt(input):
    if _amp.used and _amp.state.active:  # in an autocast region: torch's cast for this op (minilora/amp.py)
        return _amp.autocast_op("rsqrt", rsqrt, input)
    return Rsqrt.apply(_floating(input))


def abs(input): return Abs.apply(_no_bool_kernel("abs_cpu", input))  # noqa: A001
def tanh(input): return Tanh.apply(_floating(input))
def sigmoid(input): return Sigmoid.apply(_floating(input))
def relu(input):
    if input.dtype == np.bool_:
        raise RuntimeError("Boolean inputs not supported for relu")
    return Relu.apply(input)
def silu(input): return Silu.apply(_floating(input))
def gelu(input, approximate="none"):
    input = _floating(input)
    return saves_as_torch(Gelu.apply(input, approximate=approximate), input)  # (Gelu keeps a derivative)
def clone(input, *, memory_format=None):
    """``torch.clone``: a copy laid out as torch's (its strides' order kept by default; see laid_out_copy)."""
    return like_view_strides(Clone.apply(input, memory_format=memory_format), input, memory_format)
def astype(input, dtype): return AsType.apply(input, dtype=to_dtype(dtype))
def promotion_cast(input, dtype): return PromotionCast.apply(input, dtype=to_dtype(dtype))


def aten_scalar(result, tensor):
    """``result`` of ``tensor`` and a Python number in an op torch composes in C++ (trapezoid, ndtr, the margin
    losses): ATen's Tensor-Scalar overload's node (AddBackward1, MulBackward1, DivBackward1) with one edge, where
    Python's arithmetic wraps the number as a tensor (AddBackward0 and the number's None edge)."""
    node = result._ctx
    if node is not None:
        name_node(result, node.name()[:-1] + "1", tensor)
    return result


def _promoted(a, b, true_divide=False):
    """``a`` and ``b`` cast to torch's result dtype (tensors through ``astype``, so gradients flow
    back in each input's own dtype). The common cases -- two tensors of one dtype, a float tensor
    and a Python number -- cost a couple of checks and no cast: NumPy computes them in that dtype."""
    if isinstance(a, Tensor):  # the fast path for every `x * y` and `x - 0.5` (`is`: dtypes are singletons)
        a_dtype = a._array.dtype
        if isinstance(b, Tensor):
            if a_dtype is b._array.dtype and (not true_divide or a_dtype.kind == "f" or is_bfloat16(a_dtype)):
                return a, b
        elif type(b) is float and (a_dtype.kind == "f" or is_bfloat16(a_dtype)):
            return a, b
    a, b = python_number(a), python_number(b)  # (NumPy scalars take part as Python numbers, as in torch)
    a_array, b_array = getattr(a, "_array", a), getattr(b, "_array", b)
    a_dtype, b_dtype = getattr(a_array, "dtype", None), getattr(b_array, "dtype", None)
    if a_dtype is not None and b_dtype is not None:
        if a_dtype == b_dtype and (not true_divide or is_floating(a_dtype)):
            return a, b
    elif type(b) in (float, int) and a_dtype is not None and is_floating(a_dtype):
        return a, _float_operand(b)
    elif type(a) in (float, int) and b_dtype is not None and is_floating(b_dtype):
        return _float_operand(a), b
    dtype = result_type(a_array, b_array)
    if true_divide and dtype.kind in "biu":
        dtype = get_default_dtype()  # int / int is a float in torch, of the default dtype
    return _cast(a, a_array, dtype), _cast(b, b_array, dtype)


def _float_operand(x):
    """A Python number beside a float tensor: NumPy converts it; an int past uint64 (or below int64)
    raises torch's OverflowError first (NumPy would compute with it)."""
    if type(x) is int and not -2**63 <= x < 2**64:
        wrap_int(x, int64)
    return x


def _cast(x, array, dtype):
    if type(x) is int and dtype.kind in "iu":  # as torch: wrapped around into the op's dtype
        return wrap_int(x, dtype)  # (uint8 + 300 adds 44; NumPy would raise OverflowError)
    if not hasattr(array, "dtype") or array.dtype == dtype:  # Python numbers: NumPy casts them
        return x
    if hasattr(x, "_array"):
        return promotion_cast(x, dtype)
    return array.astype(dtype)


def _refuse_integer_zero_division(xp, dividend, divisor):
    """Integer ``x // 0`` and ``x % 0``: NumPy warns and gives 0, torch raises; we raise as torch
    (not for an empty result: no element is divided, as in torch)."""
    if 0 in np.broadcast_shapes(_shape(dividend), _shape(divisor)):
        return
    if bool(xp.any(xp.asarray(divisor) == 0)):
        raise RuntimeError("ZeroDivisionError")


class RoundedDiv(Function):
    """``div(a, b, rounding_mode='trunc' | 'floor')``; the quotient is piecewise constant, so its
    gradient is zero (torch's choice)."""
    torch_node_name = staticmethod(lambda ctx: "DivBackward2")  # (torch's div.Tensor_mode, numbers wrapped)

    @staticmethod
    def forward(ctx, a, b, mode):
        ctx.shapes = (_shape(a), _shape(b))
        xp = xp_of(a) if hasattr(a, "shape") else xp_of(b)
        if xp.result_type(a, b).kind in "iu":
            _refuse_integer_zero_division(xp, a, b)
            quotient = xp.floor_divide(a, b)
            if mode == "trunc":  # floor and trunc differ where the signs differ and it is not exact
                quotient = quotient + ((quotient < 0) & (quotient * b != a))
            return quotient
        if _is_16bit_float(a) and (type(b) in _NUMBERS or b.ndim == 0):  # torch's scalar path:
            b = np.float32(b) if type(b) in _NUMBERS else upcast(b)  # float32, a number unrounded
            a32 = upcast(a)  # (NumPy's float floor_divide is torch's algorithm: Python's, see below)
            quotient = xp.trunc(a32 / b) if mode == "trunc" else xp.floor_divide(a32, b)
            return quotient.astype(a.dtype)
        if _is_16bit_float(a) or _is_16bit_float(b):
            return _rounded_quotient_in_16_bits(xp, a, b, mode)
        if mode == "floor":  # NumPy's float floor_divide is Python's algorithm, torch's too: 1.0 // 0.1
            return xp.floor_divide(a, b)  # is 9 (floor(1.0 / 0.1) would say 10)
        return xp.trunc(xp.true_divide(a, b))

    @staticmethod
    def backward(ctx, g):
        xp = xp_of(g)
        na, nb = ctx.needs_input_grad
        return (xp.zeros(ctx.shapes[0], g.dtype) if na else None,
                xp.zeros(ctx.shapes[1], g.dtype) if nb else None)


def _rounded_quotient_in_16_bits(xp, a, b, mode):
    """torch's CPU kernels divide 16-bit floats with rounding step by step in their dtype (each
    NumPy ufunc below rounds once, as each of torch's steps): ``trunc`` is ``trunc(a / b)``, the
    quotient rounded first; ``floor`` is Python's algorithm (torch's div_floor_floating), whose
    ``(a - fmod(a, b)) / b`` keeps a quotient near a tie on the side that 16-bit steps give."""
    dtype = (a if _is_16bit_float(a) else b).dtype
    a, b = xp.asarray(a, dtype), xp.asarray(b, dtype)  # a number: rounded to the dtype, as torch
    if mode == "trunc":
        return xp.trunc(a / b)
    mod = xp.fmod(a, b)
    quotient = (a - mod) / b
    quotient = xp.where((mod != 0) & ((b < 0) != (mod < 0)), quotient - 1, quotient)
    floor = xp.floor(quotient)
    floor = xp.where(quotient - floor > 0.5, floor + 1, floor)
    floor = xp.where(quotient == 0, xp.copysign(xp.zeros((), dtype), a / b), floor)  # -0.0 as torch
    return xp.where(b == 0, a / b, floor)  # x // 0: inf or nan


def where(condition, input=None, other=None):
    """``torch.where``: ``input`` where ``condition`` holds, else ``other`` (tensors or numbers).
    ``where(condition)`` alone is ``nonzero(condition, as_tuple=True)``, as in torch."""
    if input is None and other is None:
        from .index import nonzero
        return nonzero(condition, as_tuple=True)
    if input is None or other is None:
        raise TypeError("where() takes a condition alone, or a condition, input and other")
    cond = _raw(condition)
    if cond.dtype != np.bool_:  # NumPy would take any truthy value; torch refuses
        raise RuntimeError(f"where expected condition to be a boolean tensor, but got a tensor with "
                           f"dtype {cond.dtype}")
    input, other = python_number(input), python_number(other)
    dtype = result_type(input, other)
    if not hasattr(input, "_array") and not hasattr(other, "_array"):  # two numbers: one a tensor
        input = condition.new_tensor(checked_number(input, dtype), dtype=dtype)  # on condition's device
    input, other = (_number_in(dtype, x, xp_of(cond)) for x in (input, other))
    # (the condition as a tensor: its strides take part in torch's layout of the result, Function.torch_layout)
    return Where.apply(condition if isinstance(condition, Tensor) else cond, *_promoted(input, other))


def _number_in(dtype, value, xp):
    """A Python number ``where`` stores, as a 0-d array of the result's ``dtype`` (NumPy's where
    would give float32 for a number beside a bfloat16 array): an integer must fit the dtype (torch
    refuses one that does not, rather than wrap it around); a float is rounded as torch rounds it,
    inf past a 16-bit float's range."""
    if type(value) not in (int, float, bool):
        return value
    value = checked_number(value, dtype, check_16bit_floats=False)
    return xp.asarray(cast(np.asarray(value), dtype))


def _stored_numbers(dtype, *values):
    """``values`` with each Python number checked to fit ``dtype``: where torch stores a number
    (clamp, masked_fill) it refuses one that does not fit, rather than wrap it around."""
    return tuple(checked_number(v, dtype) if type(v) in (int, float) else v for v in values)


def masked_fill(a, mask, value):
    """``a`` with ``value`` wherever ``mask`` is true (mask broadcasts to ``a``); ``value`` a number
    or a 0-d tensor, as torch. Contiguous, as torch's (it fills a contiguous clone of ``a``)."""
    return fill_where(a, mask, value, contiguous=True)


def fill_where(a, mask, value, *, contiguous):
    """masked_fill; ``contiguous=False``: laid out as ``a`` (torch's threshold and hardshrink, which
    run on its TensorIterator)."""
    cond = _raw(mask)
    # torch's node: MaskedFillBackward0 of the input for a number, 1 of (input, value) for a tensor
    node, graph = ("MaskedFillBackward1", (a, value)) if isinstance(value, Tensor) else ("MaskedFillBackward0", None)
    if cond.dtype != np.bool_:
        from . import _c_name  # (torch names the C type: 'unsigned char' for uint8)
        raise RuntimeError(f"masked_fill_ only supports boolean masks, but got mask with dtype {_c_name(cond.dtype)}")
    if isinstance(value, Tensor):
        if value.ndim != 0:
            raise RuntimeError(f"masked_fill_ only supports a 0-dimensional value tensor, but got "
                               f"tensor with {value.ndim} dimension(s).")
        if value.requires_grad:  # the gradient flows to the value too (summed over the mask)
            return name_node(Where.apply(cond, astype(value, a.dtype), a, contiguous=contiguous, selected=True), node, a,
                             graph=graph)
        value = value.item()
    value = a.dtype.type(checked_number(python_number(value), a.dtype))
    only_a = {} if contiguous else {"laid_out_from": (2,)}  # (threshold's kernel sees only its input)
    return name_node(Where.apply(cond, value, a, contiguous=contiguous, **only_a), node, a, graph=graph)


def to_device(a, device):
    ctx_device = a.device
    if device is ctx_device:
        return a
    out = ToDevice.apply(a, device=device)
    out._device = device
    return out


def _raw(x):
    return x._array if hasattr(x, "_array") else x


# ---- more pointwise math (sin/cos, maximum/minimum, clamp, isnan ...): torch's names and gradients --
@backward_in_float32
class Sin(Function):
    @staticmethod
    def forward(ctx, a):
        ctx.a = a
        return float32_math.vml("sin", a)

    @staticmethod
    def backward(ctx, g):
        return g * _step(ctx, float32_math.vml("cos", ctx.a))  # (torch's self.cos(): the forward's cos)


@backward_in_float32
class Cos(Function):
    @staticmethod
    def forward(ctx, a):
        ctx.a = a
        return float32_math.vml("cos", a)

    @staticmethod
    def backward(ctx, g):
        return -g * _step(ctx, float32_math.vml("sin", ctx.a))


@iterator_layout
class Maximum(Function):
    """Elementwise max (``smallest=True``: min). Where the two are equal each gets half the
    gradient, as in torch (the max is not differentiable there; half/half is its convention)."""

    @staticmethod
    def forward(ctx, a, b, smallest=False):
        xp = xp_of(a if hasattr(a, "shape") else b)
        ctx.shapes = (_shape(a), _shape(b))
        ctx.a_wins, ctx.b_wins = (a < b, b < a) if smallest else (a > b, b > a)
        ctx.tie = a == b  # (neither wins nor ties where either is NaN: both get all of g, as torch's)
        if getattr(ctx.tie, "ndim", 0) > 1:  # (torch's self == other: laid out by its iterator, as where's result)
            ctx.tie = _iterator_laid_out(ctx.tie, (a, b))
        out = (xp.minimum if smallest else xp.maximum)(a, b)
        return _zero_ties_as_torch(a, b, out) if xp is np else out

    @staticmethod
    def backward(ctx, g):
        # torch's formula, where(a == b, g / 2, g).masked_fill_(other wins, 0): the loser's gradient is +0, even
        # for a negative, inf or NaN g (g * share gave -0 and NaN there)
        na, nb = ctx.needs_input_grad
        xp, zero = xp_of(g), g.dtype.type(0)
        # (where's result laid out by the condition's strides, masked_fill_ writing into it: a broadcast input's
        # gradient sums that layout)
        shared = _where_laid_out(xp, ctx.tie, g / 2, g)
        return (unbroadcast(_where_laid_out(xp, ctx.b_wins, zero, shared), ctx.shapes[0]) if na else None,
                unbroadcast(_where_laid_out(xp, ctx.a_wins, zero, shared), ctx.shapes[1]) if nb else None)


def _zero_ties_as_torch(a, b, out):
    """``out`` where a == b: only -0.0 and 0.0 tie with other bits. torch's float32 and 16-bit max/min answer b there
    in their vectorized body (``vmaxps`` gives its second operand) and a in the scalar tail (``std::max``): its loop
    positions (``float32_math.scalar_positions``)."""
    dtype = np.result_type(out)
    if not (dtype == float32 or _is_16bit_dtype(dtype)) or not np.ndim(out):
        return out
    a, b = np.broadcast_arrays(np.asarray(a, dtype), np.asarray(b, dtype))
    signs_differ = (a == b) & (np.signbit(a) != np.signbit(b))
    if not signs_differ.any():
        return out
    step = float32_math.HALF_STEP if _is_16bit_dtype(dtype) else float32_math._VECTOR_STEP
    picked = np.ascontiguousarray(b).reshape(-1).copy()
    for where in float32_math.scalar_positions(a, b, step=step):
        picked[where] = np.ascontiguousarray(a).reshape(-1)[where]
    out = np.array(out, copy=True)
    out[signs_differ] = picked.reshape(out.shape)[signs_differ]
    return out


def maximum(input, other):
    """``torch.maximum``: the larger of two tensors, elementwise (ties split the gradient)."""
    return _maximum(input, other, smallest=False)


def minimum(input, other):
    return name_node(_maximum(input, other, smallest=True), "MinimumBackward0", input, other)


def _maximum(input, other, smallest):
    a, b = _promoted(input, other)  # int with float: float32
    return saves_as_torch(Maximum.apply(a, b, smallest=smallest), a, b)  # (Maximum keeps masks; torch both)


@computes_in_float32
@iterator_layout
class Hypot(Function):
    """``sqrt(a^2 + b^2)`` without overflow (NumPy's hypot); the gradients ``g a / out``, ``g b / out``."""

    @staticmethod
    def forward(ctx, a, b):
        ctx.a, ctx.b = a, b
        if all(type(v) is np.ndarray and v.dtype == np.float64 for v in (a, b)):  # (torch's double kernel: SLEEF's
            ctx.out = float32_math.hypot64(a, b)  # hypot in vectors, C's in the tail)
        else:
            ctx.out = xp_of(a).hypot(a, b)
        return ctx.out

    @staticmethod
    def backward(ctx, g):
        # torch's `grad * self / result`: two ops, each 16-bit product rounded before the division (_step)
        with np.errstate(divide="ignore", invalid="ignore"):  # (0 / 0 where both are 0: NaN, as torch)
            return tuple(unbroadcast(_step(ctx, g * x) / ctx.out, x.shape) for x in (ctx.a, ctx.b))


def hypot(input, other):
    """``torch.hypot``: the length ``sqrt(input^2 + other^2)`` of two tensors (floating dtypes only)."""
    if not isinstance(other, Tensor):
        raise TypeError(f"hypot(): argument 'other' (position 2) must be Tensor, not {type(other).__name__}")
    a, b = _promoted(input, other)
    if not is_floating(a.dtype):
        raise NotImplementedError(f'"hypot_cpu" not implemented for \'{torch_name(a.dtype)}\'')
    return Hypot.apply(a, b)


class ZeroGradientTo(Function):
    """``result`` passed through, with ``other`` joined to the graph at a zero derivative: torch's formula
    for copysign's ``other`` is zeros_like(other), so a tensor that decides only signs gets a gradient of
    zeros (not None), and a result computed from it alone requires grad, as torch's."""

    @staticmethod
    def forward(ctx, result, other):
        ctx.other_shape = other.shape
        return result.copy()  # (its own storage: an output sharing its input's would be taken for a view)

    @staticmethod
    def backward(ctx, g):
        return g, xp_of(g).zeros(ctx.other_shape, g.dtype)


class GradientPassesTo(Function):
    """``result``, which minilora computed from ``input.detach()`` and other tensors, passed through with ``input``
    joined to the graph at derivative 1 (the incoming gradient, summed over broadcast dims). For ops whose result
    is ``input`` plus terms in the others -- put with accumulate, index_add / scatter_add of a 0-d tensor, addr
    with beta = 1 -- where torch's formula is derivatives.yaml's ``self: grad``: under create_graph=True the
    input's gradient is the incoming one itself (no node), where minilora's composition (reshapes around a 0-d
    tensor, a fused multiply-add's two paths) would record one."""
    complex_grad = True  # (the identity)

    @staticmethod
    def forward(ctx, result, input):
        ctx.shape = input.shape
        return result.copy()  # (its own storage: an output sharing its input's would be taken for a view)

    @staticmethod
    def backward(ctx, g):
        return g, unbroadcast(g, ctx.shape)


def gradient_passes_to(input, compute):
    """``compute(input)``, its derivative in ``input`` the identity as torch's ``self: grad`` (GradientPassesTo):
    ``compute`` runs on ``input.detach()`` where ``input`` requires grad."""
    if not input.requires_grad or not is_grad_enabled():
        return compute(input)
    return GradientPassesTo.apply(compute(input.detach()), input)


def copysign(input, other):
    """``torch.copysign``: ``|input|`` with ``other``'s sign (its sign bit: -0.0 counts as negative).
    Integers compute in the default float dtype. The gradient goes to ``input`` (0 where it is 0); ``other``
    gets zeros, as torch's."""
    if input.dtype.kind == "c" or isinstance(other, complex) or isinstance(other, Tensor) and other.dtype.kind == "c":
        raise NotImplementedError(f"\"copysign_cpu\" not implemented for "
                                  f"'{torch_name(result_type(input, other))}'")
    if not isinstance(other, Tensor):  # a number: one sign for all
        magnitude = abs(input := _floating(input))
        out = -magnitude if math.copysign(1.0, other) < 0 else magnitude
    else:
        a, b = _promoted(input, other, true_divide=True)  # (int with float16: float16, as torch)
        # |a| times b's sign (+-1, a constant): one product, so a's gradient over broadcast dims is one sum of
        # grad * sign, torch's copysign_tensor_self_backward (grad * result / self) summed, where two branches
        # of a `where` were two sums added
        out = abs(a) * (1 - 2 * signbit(b).to(a.dtype))
        if b.requires_grad:
            out = ZeroGradientTo.apply(out, b)
    if not isinstance(other, Tensor):  # (torch's copysign.Scalar: its own node, one edge)
        return name_node(saves_as_torch(out, input, out), "CopysignBackward1", input, graph=(input,))
    return name_node(saves_as_torch(out, input, out), "CopysignBackward0", input, graph=(input, other))


def fmax(input, other):
    """``torch.fmax``: ``maximum`` that ignores a NaN (NaN only where both are). As torch's gradient,
    all of it goes to ``input`` where ``input >= other`` or ``other`` is NaN (ties too), else to ``other``."""
    return _nan_ignoring("fmax", input, other, larger=True)


def fmin(input, other):
    """``torch.fmin``: ``minimum`` that ignores a NaN (see ``fmax``)."""
    return _nan_ignoring("fmin", input, other, larger=False)


def _nan_ignoring(name, input, other, larger):
    if any(isinstance(x, Tensor) and x.dtype.kind == "c" for x in (input, other)):  # (no order of complex numbers)
        raise RuntimeError(f"{name} not implemented for complex tensors.")
    if not isinstance(other, Tensor):
        raise TypeError(f"{name}(): argument 'other' (position 2) must be Tensor, not "
                        f"{type(other).__name__}")
    a, b = _promoted(input, other)
    keeps_input = (a >= b if larger else a <= b) | isnan(b)
    out = saves_as_torch(where(keeps_input, a, b), a, b)  # torch's fmax/fmin keep both
    signaling = _signaling_nan(a._array) | _signaling_nan(b._array)
    if signaling is not False and signaling.any():
        out._array[np.broadcast_to(signaling, out.shape)] = np.nan
    return name_node(out, f"{name.capitalize()}Backward0", graph=(input, other))


_QUIET_BIT = {np.dtype(np.float32): (np.uint32, 0x7F800000, 0x00400000),
              np.dtype(np.float64): (np.uint64, 0x7FF0000000000000, 0x0008000000000000)}


def _signaling_nan(array):
    """Where ``array`` holds a signaling NaN (exponent all ones, quiet bit clear, some payload), or False: C's
    fmax/fmin, which torch's kernels call on float32, float64 and bfloat16 (widened by a shift, which keeps the
    NaN signaling), answer NaN for one, not the other operand (IEEE 754-2008's maxNum). float16's conversion
    (F16C) quiets it: there fmax(sNaN, y) is y. (Measured against torch 2.13, every bfloat16 NaN pattern.)"""
    if type(array) is not np.ndarray or not array.size:
        return False
    if is_bfloat16(array.dtype):
        bits, exponent, quiet = array.view(np.uint16), 0x7F80, 0x0040
    elif array.dtype in _QUIET_BIT:
        kind, exponent, quiet = _QUIET_BIT[array.dtype]
        bits = array.view(kind)
    else:
        return False
    word = bits.dtype.type
    return ((bits & word(exponent)) == exponent) & ((bits & word(quiet)) == 0) & ((bits & word(quiet - 1)) != 0)


class Clamp(Function):
    """``min(max(a, low), high)``; ``low``/``high`` are numbers, arrays or None.

    Gradient as torch's: to ``a`` where ``low <= a <= high`` (the bounds count as inside), to
    ``low`` where ``a < low < high``, to ``high`` where ``a > high`` or ``low > high`` (then the
    output is ``high`` everywhere). Where ``a < low == high`` no input gets one (torch's rule)."""

    @staticmethod
    def forward(ctx, a, low, high):
        xp = xp_of(a)
        ctx.shapes = (a.shape, _shape(low), _shape(high))
        ctx.inside = xp.logical_and(True if low is None else a >= low,
                                    True if high is None else a <= high)
        ctx.low_wins = None if low is None else xp.logical_and(
            a < low, True if high is None else low < high)
        ctx.high_wins = None if high is None else xp.logical_or(
            a > high, False if low is None else low > high)
        out = a
        if low is not None:
            out = _keeping_signed_zeros(xp.maximum(out, low), a, low)
        if high is not None:
            out = _keeping_signed_zeros(xp.minimum(out, high), a, high)
        return out

    @staticmethod
    def backward(ctx, g):
        xp, (na, nl, nh) = xp_of(g), ctx.needs_input_grad
        zero = g.dtype.type(0)
        return (unbroadcast(xp.where(ctx.inside, g, zero), ctx.shapes[0]) if na else None,
                unbroadcast(xp.where(ctx.low_wins, g, zero), ctx.shapes[1]) if nl else None,
                unbroadcast(xp.where(ctx.high_wins, g, zero), ctx.shapes[2]) if nh else None)


def _keeping_signed_zeros(out, a, bound):
    """torch's clamp by a number is ``std::min(std::max(a, low), high)`` (its vector code alike): a tie keeps ``a``,
    so -0.0 clamped at 0.0 stays -0.0 (relu6, hardtanh), where NumPy's maximum gives the bound's zero. Only a zero
    bound can tie with another zero; a tensor bound is torch's maximum/minimum, NumPy's here."""
    if np.ndim(bound) or bound != 0 or not is_floating(out.dtype):
        return out
    return xp_of(out).where(out == a, a, out)


def clamp(input, min=None, max=None):  # noqa: A002  (torch's argument names)
    """``torch.clamp``: every element into ``[min, max]`` (numbers or tensors; either may be None)."""
    if min is None and max is None:
        raise RuntimeError("torch.clamp: At least one of 'min' or 'max' must not be None")
    if input.dtype.kind == "c":  # (complex numbers have no order; NumPy's is lexicographic)
        raise NotImplementedError("clamp is not supported for complex types")
    min, max = _real_bounds(input, *_clamp_bounds(python_number(min), python_number(max)))
    dtype = result_type(*(x for x in (input, min, max) if x is not None))
    if dtype != input.dtype:  # clamp(int tensor, 0.5) is float32 in torch (its result_type)
        input = promotion_cast(input, dtype)
    tensor_bounds = sum(isinstance(b, Tensor) for b in (min, max))
    if dtype.kind == "b" and input.numel() and tensor_bounds != 1:  # NumPy would clamp bools; torch
        # has no kernel for them but its maximum / minimum, which one tensor bound runs
        kernel = "clamp" if tensor_bounds else f'clamp_{"min" if min is not None else "max"}_scalar'
        raise NotImplementedError(f'"{kernel}_cpu" not implemented for \'Bool\'')
    min, max = _stored_numbers(dtype, min, max)
    # bound tensors too (NumPy would widen float32 by a 0-d int64 bound to float64; torch does not)
    min, max = (promotion_cast(b, dtype) if hasattr(b, "_array") and b.dtype != dtype else b for b in (min, max))
    numbers = not any(isinstance(b, Tensor) for b in (min, max))  # torch: ClampBackward1, tensors 0
    out = saves_as_torch(Clamp.apply(input, min, max), input, min, max)  # (Clamp keeps masks)
    # (a tensor bound's node has torch's three edges, None for a bound not given)
    return name_node(out, f"ClampBackward{int(numbers)}", input, graph=None if numbers else (input, min, max))


clip = clamp  # torch.clip is an alias of clamp


def _real_bounds(input, min, max):  # noqa: A002
    """clamp's bounds, refused where complex as torch refuses them (NumPy would order complex numbers
    lexicographically: clamp(x, min=complex tensor) was a complex answer). A complex tensor bound makes a
    complex result type, which ATen's kernel (maximum, minimum or clamp) has no loop for; a Python complex
    number is read as a double for a floating input (1+0j is 1.0) and refused by an integer or bool one."""
    tensors = [b for b in (min, max) if isinstance(b, Tensor)]
    if any(b.dtype.kind == "c" for b in tensors):
        kernel = "clamp" if len(tensors) == 2 else "maximum" if isinstance(min, Tensor) else "minimum"
        name = torch_name(result_type(input, *tensors))
        raise NotImplementedError(f"\"{kernel}_cpu\" not implemented for '{name}'")
    if not any(isinstance(b, complex) for b in (min, max)):
        return min, max
    if not is_floating(input.dtype):
        raise NotImplementedError("clamp is not supported for complex types")
    if any(isinstance(b, complex) and b.imag for b in (min, max)):
        raise RuntimeError("value cannot be converted to type double without overflow")
    return tuple(b.real if isinstance(b, complex) else b for b in (min, max))


def _clamp_bounds(min, max):  # noqa: A002
    """torch.clamp has two overloads, two tensor bounds or two number bounds: a tensor with a number
    is its TypeError, except a 0-d tensor, which torch's argument parser takes as a number."""
    bounds = (min, max)
    if not any(isinstance(b, Tensor) for b in bounds) or not any(type(b) in (int, float, bool) for b in bounds):
        return bounds
    if any(isinstance(b, Tensor) and b.ndim for b in bounds):
        raise TypeError("clamp() received an invalid combination of arguments: min and max must be both "
                        "tensors or both numbers (a 0-d tensor may stand for a number), not a tensor and "
                        "a number")
    return tuple(b.item() if isinstance(b, Tensor) else b for b in bounds)


class Sign(Function):
    complex_grad = True  # (sgn of complex numbers: z / |z|, differentiable away from 0)

    @staticmethod
    def forward(ctx, a):
        out = _torch_sign(a)
        ctx.magnitude = None  # (real numbers: nothing kept, as torch)
        if a.dtype.kind == "c":
            ctx.out, ctx.magnitude = out, xp_of(a).abs(a)
        return out

    @staticmethod
    def backward(ctx, g):  # piecewise constant: zero gradient, as torch
        if ctx.magnitude is None:
            return xp_of(g).zeros_like(g)  # (torch's zeros_like: +0, whatever g is; g * 0 gave -0 and NaN)
        # sgn(z) only turns with z's angle: torch's gradient (g - Re(g conj(s)) s) / |z|, 0 at z = 0
        xp, s, magnitude = xp_of(g), ctx.out, ctx.magnitude
        turn = g - (g * xp.conj(s)).real * s
        return xp.where(magnitude == 0, 0, turn / xp.where(magnitude == 0, 1, magnitude)).astype(g.dtype)


def sin(input): return Sin.apply(_floating(input))
def cos(input): return Cos.apply(_floating(input))
def sign(input):
    if input.dtype.kind == "c":
        raise NotImplementedError("Unlike NumPy, torch.sign is not intended to support complex numbers. Please use "
                                  "torch.sgn instead.")
    return clone(input) if input.dtype == np.bool_ else Sign.apply(input)  # bool: itself (torch)


def sgn(input):
    """``torch.sgn``: ``sign``, extended to complex numbers (``z / |z|``, 0 at 0)."""
    return name_node(Sign.apply(input) if input.dtype.kind == "c" else sign(input), "SgnBackward0", input)


def signbit(input):
    """``torch.signbit``: True where the sign bit is set (-0.0 and -NaN too); no gradient."""
    if input.dtype.kind == "c":
        raise NotImplementedError("signbit is not implemented for complex tensors.")
    return _elementwise_test(input, "signbit")


class _Test(Function):
    """An elementwise test (isnan, isinf, isfinite): a bool result, never a gradient."""

    @staticmethod
    def forward(ctx, a, test):
        return getattr(xp_of(a), test)(a)


class Computed(Function):
    """A result computed outside the ops (a test, a composition on raw arrays): ``Computed.apply(*inputs,
    result=array)`` gives it laid out as torch's TensorIterator lays out the result of ``inputs`` (tensors and
    numbers; Function.torch_layout), where NumPy's layout may not be torch's. No gradient: apply it in no_grad."""
    torch_layout, torch_number_operands = "elementwise", (0, 1, 2)

    @staticmethod
    def forward(ctx, *arrays, result):
        return result


class ComputedLike(Computed):
    """Computed, laid out as a preserve_format copy of the first input (torch's ``empty_like(input)``)."""
    torch_layout = "preserve"


def computed(result, *inputs, like=False):
    """``result`` (an array computed from ``inputs``' arrays) as a tensor without gradient, laid out as
    torch lays out that elementwise result (``like``: as ``empty_like(inputs[0])``)."""
    T = sys.modules[Tensor.__module__]  # (minilora.tensor: the package's name "tensor" is the function)
    if result.ndim < 4 and not T._layouts_remembered and all(getattr(x, "_base", None) is None for x in inputs):
        tensor = next(x for x in inputs if isinstance(x, Tensor))  # (Function.apply's quick case: NumPy's is torch's)
        return tensor._make(result, tensor._device, False, None)
    with T.no_grad():
        return (ComputedLike if like else Computed).apply(*inputs, result=result)


def shapes_not_values(op):
    """An elementwise op that computes its result outside Function.apply (then ``computed``), as a meta tensor
    needs it: on meta tensors it runs on one element of each (its dtype, its own errors) and gives unwritten
    zeros of the broadcast shape, laid out as torch's TensorIterator (ops/meta.py's elementwise_result);
    operands that do not broadcast run as they are, for the op's own error."""
    def run(*operands, **options):
        for x in operands:  # (a loop, not any(): the CPU call pays one attribute read per operand)
            if getattr(x, "_device", None) is _META:
                return _on_stand_ins(op, operands, options)
        return op(*operands, **options)
    return functools.wraps(op)(run)  # (its name, docstring and signature: inspect.signature follows __wrapped__)


def _on_stand_ins(op, operands, options):
    tensors = [x for x in operands if isinstance(x, Tensor)]
    try:
        shape = np.broadcast_shapes(*(x._array.shape for x in tensors))
    except ValueError:
        return op(*operands, **options)
    probe = op(*(x[(slice(0, 1),) * x.ndim] if isinstance(x, Tensor) else x for x in operands), **options)
    meta = sys.modules[__package__ + ".meta"]
    out = meta.elementwise_result(shape, probe.dtype, [getattr(x, "_array", x) for x in operands])
    return computed(out, *operands)


def _elementwise_test(input, test):
    from ..tensor import no_grad
    with no_grad():
        return _Test.apply(input, test=test)


def isnan(input): return _elementwise_test(input, "isnan")
def isinf(input): return _elementwise_test(input, "isinf")
def isfinite(input): return _elementwise_test(input, "isfinite")


# ---- remainder and the logical (bitwise) operators ------------------------------------------------
class Remainder(Function):
    """``a % b`` with Python's sign rule (the result takes the divisor's sign), as torch.remainder.
    ``a - floor(a / b) * b``: its gradient is 1 to ``a`` and ``-floor(a / b)`` to ``b``. (``Fmod``
    below is the same with ``trunc`` for ``floor``: the names of the two NumPy functions differ.)"""
    remainder, rounding = "mod", "floor"
    # torch's nodes: RemainderBackward0 for a number divisor (its Scalar overload), RemainderBackward1 for a tensor
    torch_node_name = classmethod(lambda cls, ctx: f"{cls.__name__}Backward{int(_is_array(ctx.b))}")

    @classmethod
    def forward(cls, ctx, a, b):
        xp = xp_of(a) if hasattr(a, "shape") else xp_of(b)
        ctx.a, ctx.b, ctx.shapes = a, b, (_shape(a), _shape(b))
        if xp.result_type(a, b).kind in "iu":
            _refuse_integer_zero_division(xp, a, b)
        else:  # (16-bit floats: in float32, rounded once, as torch's kernels)
            dtype = xp.result_type(*(v for v in (a, b) if hasattr(v, "dtype")))  # (_promoted: the tensor's dtype)
            a, b = (upcast(xp.asarray(v, dtype)) for v in (a, b))  # (a number: in the dtype first, as torch's)
            mod = _float_fmod(xp, a, b, sixteen_bit=_is_16bit_dtype(dtype))
            if cls.remainder == "mod":  # torch's rule: fmod moved to the divisor's side; a zero keeps a's sign
                # (NumPy's remainder gives it b's: -0.0 % 1 is 0.0)
                mod = xp.where((mod != 0) & ((xp.asarray(b) < 0) != (mod < 0)), mod + b, mod)
            return mod.astype(dtype)
        return getattr(xp, cls.remainder)(a, b)

    @classmethod
    def backward(cls, ctx, g):
        na, nb = ctx.needs_input_grad
        xp = xp_of(g)
        quotient = None
        if nb:  # (16-bit floats: the quotient in float32, the gradient rounded once by the engine)
            a, b = (upcast(x) if hasattr(x, "dtype") else x for x in (ctx.a, ctx.b))
            with np.errstate(all="ignore"):  # (floor: torch's div(rounding_mode='floor'), which is NumPy's
                quotient = xp.floor_divide(a, b) if cls.rounding == "floor" else \
                    getattr(xp, cls.rounding)(xp.true_divide(a, b))  # floor_divide: -4 // inf is -1)
            if _is_16bit_dtype(g.dtype):  # torch's 16-bit div(rounding_mode=...): its own 16-bit steps
                quotient = _rounded_quotient_16bit(xp, a, b, cls.rounding, g.dtype)
        return (unbroadcast(g, ctx.shapes[0]) if na else None,
                unbroadcast((-g * quotient).astype(g.dtype), ctx.shapes[1]) if nb else None)  # (torch sums
    # its 16-bit product over broadcast dims, as a 16-bit gradient is summed)


def _float_fmod(xp, a, b, sixteen_bit=False):
    """``fmod(a, b)`` of floating arrays (16-bit ones given as float32: ``sixteen_bit``) as torch's CPU kernel:
    float32 by ``float32_math.fmod`` (SLEEF's in the vectorized body: NaN where its first quotient overflows,
    ``HALF_STEP`` elements a step for a 16-bit kernel), float64 and other devices exactly."""
    with np.errstate(all="ignore"):
        if xp is not np or xp.result_type(a, b) != float32:
            return xp.fmod(a, b)
        step = float32_math.HALF_STEP if sixteen_bit else float32_math._FMOD_STEP
        return float32_math.fmod(a, b, step=step)


def _rounded_quotient_16bit(xp, a, b, rounding, dtype):
    """torch's ``a.div(b, rounding_mode=rounding)`` of 16-bit ``a``, ``b`` (given widened to float32): c10's
    scalar formula in ``dtype``'s arithmetic, each step rounded to 16 bits (trunc: ``trunc(a / b)`` of the
    rounded quotient, 2.996 -> 3.0 in bfloat16 -> 3; floor: c10's ``div_floor_floating``, whose ``a - fmod(a, b)``
    and ``/ b`` round too). Measured equal to torch's on 10^5 random pairs of each 16-bit dtype."""
    def rounded(x):
        return xp.asarray(x, float32).astype(dtype).astype(float32)
    a, b = xp.asarray(a, float32), xp.asarray(b, float32)
    with np.errstate(all="ignore"):
        if rounding == "trunc":
            return rounded(xp.trunc(rounded(a / b)))
        mod = rounded(xp.fmod(a, b))
        div = rounded(rounded(a - mod) / b)
        div = xp.where((mod != 0) & ((b < 0) != (mod < 0)), rounded(div - 1), div)
        floor = xp.floor(div)
        floor = xp.where(rounded(div - floor) > 0.5, rounded(floor + 1), floor)
        floor = xp.where(div == 0, xp.copysign(0.0, a / b), floor)  # (c10: the sign of a / b's zero)
        return rounded(xp.where(b == 0, a / b, floor))  # (c10: a / b by a zero divisor, inf or NaN)


def remainder(input, other):
    """``torch.remainder`` (``x % y``): dtypes promoted as for ``+``."""
    _refuse_bools("remainder", input, other)
    return _saved_for_the_divisor(Remainder.apply(*_promoted(input, other)), input, other)


def _logical(name):
    """``&``, ``|``, ``^`` of bool or integer tensors (torch's bitwise ops; no gradient). Floats
    raise as in torch, rather than NumPy's silent cast."""
    def op(input, other):
        input, other = python_number(input), python_number(other)
        dtype = result_type(input, other)
        if dtype.kind not in "biu":
            raise NotImplementedError(f"{name} is only implemented for integer and boolean tensors, "
                                      f"not {dtype}")
        a, b = _raw(input), _raw(other)
        a, b = _cast(a, a, dtype), _cast(b, b, dtype)  # (a Python int wraps around, as in torch)
        template = input if hasattr(input, "_array") else other
        try:
            out = getattr(xp_of(template._array), name)(a, b)
        except ValueError as exc:
            if not _is_broadcast_error(exc):
                raise
            raise ShapeError(f"{name}: {exc}") from None
        return computed(out, input, other)
    op.__name__ = op.__qualname__ = name
    return shapes_not_values(op)


bitwise_and = _logical("bitwise_and")
bitwise_or = _logical("bitwise_or")
bitwise_xor = _logical("bitwise_xor")


def _shift(name, left):
    """``<<`` and ``>>`` of integer tensors as torch's kernels shift: by a negative amount or by the
    bit width or more, ``<<`` gives 0 and ``>>`` the sign (-1 or 0), where C and NumPy leave it
    undefined; bits shifted past the top are dropped. A Python int wraps into the dtype first, as for
    ``+`` (``uint8 >> 300`` shifts by 44: 0)."""
    def op(input, other):
        input, other = python_number(input), python_number(other)
        dtype = result_type(input, other)
        if dtype.kind not in "iu":
            kernel = "lshift" if left else "rshift"
            raise NotImplementedError(f'"{kernel}_cpu" not implemented for \'{torch_name(dtype)}\'')
        template = input if hasattr(input, "_array") else other
        xp = xp_of(template._array)
        a, b = (xp.asarray(_cast(x, x, dtype), dtype) for x in (_raw(input), _raw(other)))
        bits = dtype.itemsize * 8
        outside = (b < 0) | (b >= bits)
        try:
            shifted = (xp.left_shift if left else xp.right_shift)(a, xp.where(outside, 0, b).astype(dtype))
        except ValueError as exc:
            if not _is_broadcast_error(exc):
                raise
            raise ShapeError(f"{name}: {exc}") from None
        signed_right = not left and dtype.kind == "i"
        beyond = xp.right_shift(a, dtype.type(bits - 1)) if signed_right else xp.zeros_like(shifted)
        return computed(xp.where(outside, beyond, shifted), input, other)
    op.__name__ = op.__qualname__ = name
    return shapes_not_values(op)


bitwise_left_shift = _shift("bitwise_left_shift", left=True)
bitwise_right_shift = _shift("bitwise_right_shift", left=False)


@shapes_not_values
def bitwise_not(input):
    """``~mask``: logical not of a bool tensor, bitwise not of an integer one (as torch)."""
    if input.dtype.kind not in "biu":
        raise NotImplementedError(f'"bitwise_not_cpu" not implemented for \'{torch_name(input.dtype)}\' '
                                  f'(~ is for integer and boolean tensors)')
    return computed(xp_of(input._array).invert(input._array), input)


@shapes_not_values
def logical_not(input):
    return computed(xp_of(input._array).logical_not(input._array), input)


def _tensor_operand(name, input, other):
    """torch's logical_and/or/xor take a tensor, not a number (NumPy would take 1 as True), and run in the
    operands' common dtype: float16 with a 0-d complex tensor is complex32, which the kernel refuses."""
    if not isinstance(other, Tensor):
        raise TypeError(f"{name}(): argument 'other' (position 2) must be Tensor, not {type(other).__name__}")
    try:
        result_type(input, other)
    except NotImplementedError:  # (minilora's words for complex32: torch's kernel names its own)
        raise NotImplementedError(f"\"{name}_cpu\" not implemented for 'ComplexHalf'") from None
    return other


def logical_and(input, other):
    return bitwise_and(input != 0, _tensor_operand("logical_and", input, other) != 0)


def logical_or(input, other):
    return bitwise_or(input != 0, _tensor_operand("logical_or", input, other) != 0)


# ---- rounding (piecewise constant: zero gradient, as torch) and closeness tests -------------------
@computes_in_float32
class _Rounding(Function):
    # torch's nodes: FloorBackward0, ..., RoundBackward0; RoundBackward1 for its overload with decimals (even 0)
    torch_node_name = staticmethod(lambda ctx: f"{ctx.how.capitalize()}Backward{int(ctx.decimals is not None)}")

    @staticmethod
    def forward(ctx, a, how, decimals=None):
        ctx.shape, ctx.how, ctx.decimals = a.shape, how, decimals
        xp = xp_of(a)
        if how == "round":  # NumPy's round is torch's: halves to even (round(2.5) == 2)
            return xp.round(a, decimals or 0)
        return getattr(xp, how)(a)

    @staticmethod
    def backward(ctx, g):
        return xp_of(g).zeros(ctx.shape, g.dtype)


def _rounding(how):
    def op(input):
        if _no_bool_kernel(f"{how}_vml_cpu", input).dtype.kind in "iu":  # integers: a copy (torch)
            return clone(input)
        return _Rounding.apply(input, how=how)
    op.__name__ = how
    return op


floor, ceil, trunc = _rounding("floor"), _rounding("ceil"), _rounding("trunc")


def round(input, *, decimals=None):  # noqa: A001  (torch.round)
    """Round half to even, as torch (``round(0.5) == 0``, ``round(1.5) == 2``); ``decimals`` too
    (torch's overload with ``decimals``, even 0, has float kernels only)."""
    if _no_bool_kernel("round_vml_cpu", input).dtype.kind in "iu":
        if decimals is not None:
            raise NotImplementedError(f'"round_vml_cpu" not implemented for \'{torch_name(input.dtype)}\'')
        return clone(input)
    return _Rounding.apply(input, how="round", decimals=decimals)


@shapes_not_values
def isclose(input, other, rtol=1e-05, atol=1e-08, equal_nan=False):
    """``|input - other| <= atol + rtol * |other|`` elementwise (torch.isclose; no gradient). Two
    tensors must share a dtype, as in torch (which raises rather than promote here)."""
    if hasattr(other, "_array") and other.dtype != input.dtype:
        raise RuntimeError(f"isclose: {input.dtype} did not match {other.dtype}")
    for name, tolerance in (("rtol", rtol), ("atol", atol)):
        if not tolerance >= 0:  # (NaN too: NumPy would warn and answer)
            raise RuntimeError(f"{name} must be greater than or equal to zero, but got {tolerance}")
    a, b = _raw(input), _raw(other)
    with warnings.catch_warnings():  # an infinite tolerance: NumPy warns ("not valid"), torch answers
        warnings.simplefilter("ignore", RuntimeWarning)
        try:
            close = xp_of(a).isclose(a, b, rtol=rtol, atol=atol, equal_nan=equal_nan)
        except ValueError as exc:
            if not _is_broadcast_error(exc):
                raise
            raise ShapeError(f"isclose: {exc}") from None
    return computed(close, input, other)


def allclose(input, other, rtol=1e-05, atol=1e-08, equal_nan=False):
    """A Python bool: every element close (torch.allclose, same tolerances and defaults)."""
    close = isclose(input, other, rtol, atol, equal_nan)
    if close.is_meta:  # (torch's all().item(): a meta tensor has no value to answer with)
        raise RuntimeError("Tensor.item() cannot be called on meta tensors")
    return bool(close._array.all())


def equal(input, other):
    """A Python bool: same shape and the same values (torch.equal)."""
    no_meta_kernel("equal", input, other)
    a, b = _raw(input), _raw(other)
    return a.shape == b.shape and bool((a == b).all())


# ---- lerp, xlogy, log1p/expm1, softplus, leaky_relu, clamp_min/max, square, reciprocal -----------
@computes_in_float32
@iterator_layout
class Lerp(Function):
    """``start + weight * (end - start)``, computed as torch does: from ``end`` backwards when
    ``weight >= 0.5`` (``end - (end - start) * (1 - weight)``), so weight 1 gives ``end`` exactly."""

    @staticmethod
    def forward(ctx, start, end, weight):
        xp = xp_of(start)
        ctx.shapes = (start.shape, end.shape, _shape(weight))
        ctx.diff, ctx.weight = end - start, weight
        if start.dtype in _FUSED_FLOATS and xp is np:
            return _lerp_fused(start, end, weight, ctx.diff)
        small = -0.5 < weight < 0.5 if isinstance(weight, (int, float)) else xp.abs(weight) < 0.5
        return xp.where(small, start + weight * ctx.diff, end - ctx.diff * (1 - weight))

    @staticmethod
    def backward(ctx, g):
        ns, ne, nw = ctx.needs_input_grad
        w = ctx.weight
        # torch's grad * (1 - weight) and grad * (end - self): on 16-bit tensors 1 - weight and end - self are
        # tensor ops of their own, each rounded (_step); a number weight's 1 - weight is one double
        kept = 1 - w if isinstance(w, (int, float)) else _step(ctx, 1 - w)
        return (unbroadcast(g * kept, ctx.shapes[0]) if ns else None,
                unbroadcast(g * w, ctx.shapes[1]) if ne else None,
                unbroadcast(g * _step(ctx, ctx.diff), ctx.shapes[2]) if nw else None)


def _lerp_fused(start, end, weight, diff):
    """torch's float32 (float64) lerp kernel (``lerp_vec``): the weight as a float (double), ``fmadd(w, diff,
    start)`` where ``|w| < 0.5``, else ``fmadd(w - 1, diff, end)``, each one rounding (``fastmath.multiply_add``:
    two in torch's "default" build); NumPy's ``start + w * diff`` rounded twice (820 of 4099 float32 elements
    differed, 257 of 1000 float64 ones)."""
    number = start.dtype.type
    w = number(weight) if isinstance(weight, (int, float)) else weight
    small = np.abs(w) < 0.5
    return fastmath.multiply_add(np.where(small, w, w - number(1)), diff, np.where(small, start, end))


def lerp(input, end, weight):
    """``torch.lerp``: ``input + weight * (end - input)``; ``weight`` is a number or a tensor.
    ``input`` and ``end`` must share a dtype (torch refuses to promote here)."""
    if hasattr(weight, "_array") and weight.ndim == 0 and weight.dtype != input.dtype and is_floating(
            weight.dtype):  # torch takes a 0-d weight of another float dtype as a scalar
        weight = astype(weight, input.dtype)
    for name, other in (("end", end), ("weight", weight)):
        if hasattr(other, "_array") and other.dtype != input.dtype:
            from . import _c_name  # (torch names the C types: 'long int', 'c10::BFloat16')
            raise RuntimeError(f"expected dtype {_c_name(input.dtype)} for `{name}` but got dtype "
                               f"{_c_name(other.dtype)}")
    weight = python_number(weight)
    if type(weight) in (int, float, complex) and is_floating(input.dtype):  # a number must fit the compute
        weight = checked_number(weight, float32 if _is_16bit_dtype(input.dtype) else input.dtype)  # dtype
    elif type(weight) is int:
        wrap_int(weight, int64)  # (torch's OverflowError for an int past uint64 comes first)
    if not is_floating(input.dtype) and input.dtype.kind != "c":  # (torch's error type for a dtype it has no
        raise NotImplementedError(f"lerp is only implemented for floating tensors, got {input.dtype}")  # kernel for)
    out = Lerp.apply(input, end, weight)
    if not isinstance(weight, Tensor):
        return saves_as_torch(out)
    # torch keeps weight, and input and end for weight's gradient
    return saves_as_torch(out, saved_for(input, weight), saved_for(end, weight), weight)


@backward_in_float32
class XLogY(Function):
    """``x * log(y)``, 0 where ``x == 0`` (even for ``y == 0``), NaN where ``y`` is NaN; torch's
    gradients: ``log(y)`` for ``x`` (also at ``x == 0``, but 0 there where ``y <= 0``) and
    ``x / y`` for ``y``. On 16-bit floats torch's kernel rounds ``log(y)`` to 16 bits before the
    product, as NumPy's two ufuncs do here (forward: not in float32 throughout)."""

    @staticmethod
    def forward(ctx, x, y):
        xp = xp_of(x if hasattr(x, "shape") else y)
        dtype = result_type(x, y)  # torch's (NumPy's: float32 for 0.5 and a bfloat16 y)
        if type(y) in _NUMBERS and hasattr(x, "dtype"):  # torch rounds the number to x's dtype, and
            y = x.dtype.type(y)  # its log too, as for a tensor y (NumPy: log(300) in float64)
        ctx.x, ctx.y, ctx.shapes = x, y, (_shape(x), _shape(y))
        return _xlogy_as_torch(xp, x, y).astype(dtype, copy=False)

    @staticmethod
    def backward(ctx, g):
        # derivatives.yaml: self: at::xlogy(grad, other).masked_fill((self == 0.) & (other <= 0.), 0.),
        # other: grad * self / other (under a 16-bit gradient, the product rounded before the division)
        xp, (nx, ny) = xp_of(g), ctx.needs_input_grad
        x, y = ctx.x, ctx.y
        with np.errstate(divide="ignore", invalid="ignore"):
            undefined = (x == 0) & (y <= 0)
            gx = unbroadcast(xp.where(undefined, 0, _xlogy_as_torch(xp, g, y, ctx)), ctx.shapes[0]) if nx else None
            gy = unbroadcast(_step(ctx, g * x) / y, ctx.shapes[1]) if ny else None
        return gx, gy


def _xlogy_as_torch(xp, x, y, ctx=None, log1p=False):
    """torch's xlogy kernel (a scalar lambda on every element): NaN where ``y`` is, 0 where ``x`` is 0, else
    ``x * std::log(y)``: C's ``log`` (glibc's ``logf`` for float32, not NumPy's own SIMD log), a 16-bit ``y``'s
    log rounded to its dtype before the product (c10's ``std::log`` of a Half/BFloat16 returns one; in a
    backward ``ctx``'s ``_step`` rounds it, its saved ``y`` widened to float32). ``log1p``: special.xlog1py's
    kernel, the same with ``std::log1p``."""
    log_y = _c_log(xp, y, log1p) if ctx is None else _step(ctx, _c_log(xp, y, log1p))
    with np.errstate(divide="ignore", invalid="ignore"):
        out = xp.where(x == 0, 0, x * log_y)
    return xp.where(xp.isnan(xp.asarray(y)), xp.nan, out)


def _c_log(xp, y, log1p=False):
    """C's ``log`` (``log1p``) of ``y``'s elements, as torch's scalar lambdas call ``std::log`` (NumPy arrays;
    CuPy's own)."""
    y, name = xp.asarray(y), "log1p" if log1p else "log"
    if xp is not np or y.dtype.kind not in "fV" and not is_bfloat16(y.dtype):
        with np.errstate(divide="ignore", invalid="ignore"):
            return getattr(xp, name)(y)
    if y.dtype == np.float64:  # (reshaped: a 0-d y comes back 1-d)
        return float32_math.c_function64(name, y).reshape(y.shape)
    if y.dtype == np.float32:
        return float32_math.c_function(name + "f", y).reshape(y.shape)
    return float32_math.c_function(name + "f", y.astype(float32)).reshape(y.shape).astype(y.dtype)  # (16-bit)


def xlogy(input, other):
    """``torch.xlogy``: ``input * log(other)``, with 0 where ``input`` is 0 (the convention that
    makes ``p log p`` terms vanish at p = 0, as entropies and ``kl_div`` need)."""
    result_type(input, other)  # (torch's promotion errors first: a bool tensor and 2**63)
    return XLogY.apply(*_promoted(input, other, true_divide=True))  # int with float16: float16


@backward_in_float32
class Log1p(Function):
    @staticmethod
    def forward(ctx, a):
        ctx.a = a  # (float32, float64: torch's kernel is its vectorized (SLEEF's) log1p on every element, float32_math)
        vector = _vector_functions(a)
        return vector("log1p", a) if vector else xp_of(a).log1p(a)

    @staticmethod
    def backward(ctx, g):
        return g / _step(ctx, 1 + ctx.a)


@computes_in_float32
class Expm1(Function):
    @staticmethod
    def forward(ctx, a):
        # (float32: torch's kernel is its vectorized (SLEEF's) expm1 on every element, float32_math; 16-bit: the
        # same float32 kernel rounded once -- NumPy's float16 expm1 answered expm1(0.0343) a step off)
        vector = _vector_functions(a)  # (float64: SLEEF's double expm1)
        ctx.out = vector("expm1", a) if vector else xp_of(a).expm1(a)
        return ctx.out

    @staticmethod
    def backward(ctx, g):
        return g * _step(ctx, ctx.out + 1)


@_amp.autocasts
def log1p(input):
    """``log(1 + x)``, accurate for small ``x`` (where ``1 + x`` would round)."""
    return Log1p.apply(_floating(input))


@_amp.autocasts
def expm1(input):
    """``exp(x) - 1``, accurate for small ``x``."""
    return Expm1.apply(_floating(input))


@computes_in_float32
class Softplus(Function):
    """``log(1 + exp(beta x)) / beta``, and ``x`` itself where ``beta x > threshold`` (where the two
    agree to rounding and the exponential could overflow), as torch; gradient ``sigmoid(beta x)``
    there and 1 past the threshold."""

    @staticmethod
    def forward(ctx, a, beta, threshold):
        xp = xp_of(a)
        ctx.a, ctx.beta, ctx.threshold = a, beta, threshold
        if _numpy_float32(a):  # torch's kernel: SLEEF's exp and log1p (float32_math)
            return float32_math.softplus(a, beta, threshold)
        if _numpy_float64(a):  # its double kernel: the same formula in SLEEF's double functions, C's in the tail
            return float32_math.softplus64(a, beta, threshold)
        with np.errstate(over="ignore"):
            return xp.where(a * beta > threshold, a, xp.log1p(xp.exp(a * beta)) / beta)

    @staticmethod
    def backward(ctx, g):
        xp = xp_of(g)
        beta, threshold = ctx.beta, ctx.threshold
        if _numpy_float32(g) and _numpy_float32(ctx.a):  # torch's kernel: SLEEF's exp (float32_math)
            return float32_math.softplus_backward(g, ctx.a, beta, threshold)
        with np.errstate(over="ignore", invalid="ignore"):
            z = _kernel_exp(ctx.a * beta, loop=(g, ctx.a))
            return float32_math.in_cache_slices(
                lambda g, a, z: xp.where(a * beta > threshold, g, g * z / (z + 1)), g, ctx.a, z)


def _checked_parameters(input, *values):
    """An activation's numbers (leaky_relu's slope, elu's alpha, softplus's beta and threshold) as
    torch takes them: in the op's compute type -- float32 for 16-bit floats -- and refused
    (RuntimeError) past its range, where NumPy would compute with inf."""
    dtype = float32 if _is_16bit_dtype(input.dtype) else input.dtype
    return tuple(checked_number(python_number(v), dtype) if type(python_number(v)) in (int, float) else v
                 for v in values)


@_amp.autocasts
def softplus(input, beta=1.0, threshold=20.0):
    input = _floating(input)
    beta, threshold = _checked_parameters(input, beta, threshold)
    return Softplus.apply(input, beta=beta, threshold=threshold)


@computes_in_float32
class LeakyRelu(Function):
    """``x`` where ``x > 0``, else ``slope * x``; the gradient at 0 is ``slope`` (torch's)."""

    @staticmethod
    def forward(ctx, a, slope):
        ctx.positive, ctx.slope = a > 0, slope
        return xp_of(a).where(ctx.positive, a, a * slope).astype(a.dtype, copy=False)

    @staticmethod
    def backward(ctx, g):
        return xp_of(g).where(ctx.positive, g, g * ctx.slope).astype(g.dtype, copy=False)


def leaky_relu(input, negative_slope=0.01):
    negative_slope, = _checked_parameters(input, negative_slope)
    return saves_as_torch(LeakyRelu.apply(input, slope=negative_slope), input)  # (it keeps a mask)


def clamp_min(input, min):  # noqa: A002  (torch's argument name)
    """``torch.clamp_min``: ``clamp(input, min=min)``."""
    tensor = isinstance(min, Tensor)  # (torch's Tensor overload: ClampMinBackward1, edges to both)
    return name_node(clamp(input, min=min), f"ClampMinBackward{int(tensor)}", input, graph=(input, min) if tensor else None)


def clamp_max(input, max):  # noqa: A002
    """``torch.clamp_max``: ``clamp(input, max=max)``."""
    tensor = isinstance(max, Tensor)
    return name_node(clamp(input, max=max), f"ClampMaxBackward{int(tensor)}", input, graph=(input, max) if tensor else None)


def square(input):
    """``input * input`` (integers stay integers, as torch's ``square``; bool becomes int64)."""
    if input.dtype == np.bool_:
        input = astype(input, np.int64)
    return name_node(mul(input, input), "PowBackward0", input, graph=(input,))  # (torch: pow(x, 2))


@_amp.autocasts
def reciprocal(input):
    """``1 / input``, in the default float dtype for integer inputs (torch)."""
    a, b = _promoted(1, _floating(input), true_divide=True)
    out = Reciprocal.apply(a, b)
    return saves_as_torch(out, out)  # torch keeps 1 / x, not x


@backward_in_float32
class Logit(Function):
    """``log(z / (1 - z))`` with ``z`` the input clamped to ``[eps, 1 - eps]`` (not clamped when eps is
    None), as torch's kernel: for 16-bit floats each step rounded to the dtype, as torch's CPU kernel. Gradient ``g / (x (1 - x))`` inside the range; outside it 0 with an eps
    (the clamp cut it) and NaN without (no logit there), as torch's logit_backward."""

    @staticmethod
    def forward(ctx, a, eps):
        xp = xp_of(a)
        ctx.a, ctx.eps = a, eps
        # (maximum/minimum, not clip: NumPy's clip of bfloat16 gives float32; the kernel's hi is 1 - eps in the dtype)
        z = a if eps is None else xp.minimum(xp.maximum(a, a.dtype.type(eps)), a.dtype.type(1) - a.dtype.type(eps))
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = z / (1 - z)
            if _is_16bit_float(ratio) and type(ratio) is np.ndarray:  # (Vectorized<Half>::log: float32's SLEEF log,
                return float32_math.vectorized("log", upcast(ratio)).astype(a.dtype)  # rounded to 16 bits)
            return xp.log(ratio.astype(xp.float64)).astype(a.dtype, copy=False)  # (torch.log's, MKL's: rounded once)

    @staticmethod
    def backward(ctx, g):
        a, eps = ctx.a, ctx.eps
        low, high, outside = (0, 1, np.nan) if eps is None else (eps, 1 - eps, 0)
        xp = xp_of(g)
        with np.errstate(divide="ignore", invalid="ignore"):
            inside = g / (a * (1 - a))
            out = xp.where((a < low) | (a > high), g.dtype.type(outside), inside)
            # torch's scalar lambda: g * inf at 0 and 1 (+inf at -0 too); its vectorized one blends g / (x (1 - x))
            # in where low <= x <= high, else ``outside``: -inf at -0, and 0 at a NaN when there is an eps
            negative_zero = (a == 0) & xp.signbit(a)
            out = xp.where(negative_zero & (a >= low), g * g.dtype.type(np.inf), out)
            vectorized = xp.where((a >= low) & (a <= high), inside, g.dtype.type(outside))
        return _where_vectorized(out, xp.isnan(a) | negative_zero, vectorized, g, a)


def logit(input, eps=None):
    """``torch.logit``: the log-odds ``log(p / (1 - p))``; with ``eps`` the input is first clamped to
    ``[eps, 1 - eps]``. Integers compute in the default float dtype."""
    return Logit.apply(_floating(input), eps=None if eps is None else float(eps))


# ---- log2/log10, fmod, logical_xor, addcmul/addcdiv ----------------------------------------------
@backward_in_float32
class LogBase(Function):
    """``log2`` / ``log10`` with NumPy's own functions (exact powers of the base give exact
    integers, which ``log(x) / log(base)`` would not always); gradient ``1 / (x ln base)``."""
    torch_node_name = staticmethod(lambda ctx: f"Log{ctx.base}Backward0")

    @staticmethod
    def forward(ctx, a, base):
        ctx.a, ctx.base = a, base
        return float32_math.vml("log2" if base == 2 else "log10", a)

    @staticmethod
    def backward(ctx, g):
        return g / _step(ctx, ctx.a * _LN_OF_BASE[ctx.base])


_LN_OF_BASE = {2: 0.6931471805599453, 10: 2.3025850929940456}  # derivatives.yaml's literals: its ln 10 is an ulp
# below math.log(10) (94% of float64 log10 gradients were an ulp off)


@_amp.autocasts
def log2(input): return LogBase.apply(_floating(input), base=2)


@_amp.autocasts
def log10(input): return LogBase.apply(_floating(input), base=10)


class Fmod(Remainder):
    """C's ``fmod``: the remainder with the sign of the dividend (``remainder``/``%`` take the
    divisor's sign). ``a - trunc(a / b) * b``, so the gradients are 1 and ``-trunc(a / b)``."""
    remainder, rounding = "fmod", "trunc"


def fmod(input, other):
    """``torch.fmod``: the remainder of ``input / other`` with ``input``'s sign."""
    _refuse_bools("fmod", input, other)
    return _saved_for_the_divisor(Fmod.apply(*_promoted(input, other)), input, other)


def _is_array(value):
    """A tensor's array (not a number, nor a NumPy scalar that a number became)?"""
    return hasattr(value, "shape") and not isinstance(value, np.generic)


def _saved_for_the_divisor(out, input, other):
    """fmod/remainder: torch keeps both operands, for the divisor's gradient only (the input's is g)."""
    return saves_as_torch(out, saved_for(input, other), saved_for(other, other))


def logical_xor(input, other):
    return bitwise_xor(input != 0, _tensor_operand("logical_xor", input, other) != 0)


def _in_float32(op, input, tensor1, tensor2, value):
    """``op`` (addcmul, addcdiv) on 16-bit floats as torch's one kernel computes it: in float32,
    rounded once; None for other dtypes. Three tensors of one 16-bit dtype take ``SixteenBitAddc``, whose
    gradients are torch's formulas in 16-bit ops; mixed operands go through casts (each gradient rounded once)."""
    dtype = result_type(input, tensor1, tensor2)
    if not (dtype.itemsize == 2 and is_floating(dtype)):
        return None
    if all(isinstance(x, Tensor) and x.dtype == dtype for x in (input, tensor1, tensor2)):
        return SixteenBitAddc.apply(input, tensor1, tensor2, value=value, divide=op is addcdiv)
    wide = [astype(x, float32) if isinstance(x, Tensor) else x for x in (input, tensor1, tensor2)]
    return astype(op(*wide, value=value), dtype)


class SixteenBitAddc(Function):
    """``c + value * a * b`` (``divide``: ``c + value * a / b``) of 16-bit tensors of one dtype: the float32
    kernel's value rounded once (a fused multiply-add for addcmul), and derivatives.yaml's gradients as torch runs
    them, 16-bit tensor ops each rounding: ``g * (b * value)``; addcdiv's ``g * (value / b)`` (``value / b`` is
    ``full_like(b, value).div_(b)``: value rounded to 16 bits first) and ``-g * ((a * value) / (b * b))``."""

    @staticmethod
    def forward(ctx, c, a, b, value=1, divide=False):
        ctx.a, ctx.b, ctx.c_shape, ctx.value, ctx.divide = a, b, c.shape, value, divide
        c32, a32, b32 = (upcast(v) for v in (c, a, b))
        scaled = a32 * np.float32(value) if value != 1 else a32
        with np.errstate(all="ignore"):
            out = c32 + scaled / b32 if divide else fastmath.multiply_add(scaled, b32, c32)
        return out.astype(c.dtype)

    @staticmethod
    def backward(ctx, g):
        nc, na, nb = ctx.needs_input_grad
        a, b, value = ctx.a, ctx.b, ctx.value
        with np.errstate(all="ignore"):
            if ctx.divide:
                ga = g * (xp_of(b).full_like(b, value) / b) if na else None
                gb = -g * (times_number(a, value) / (b * b)) if nb else None
            else:
                ga = g * times_number(b, value) if na else None
                gb = g * times_number(a, value) if nb else None
        return (unbroadcast(g, ctx.c_shape) if nc else None, None if ga is None else unbroadcast(ga, a.shape),
                None if gb is None else unbroadcast(gb, b.shape), None, None)


def times_number(a, number):
    """``a * number`` as torch's kernel multiplies a tensor by a Python number: a 16-bit array in float32 with the
    number as a float32, rounded once (NumPy's 16-bit ufunc would round the number to 16 bits first)."""
    if number == 1:
        return a
    if _is_16bit_float(a):
        return (upcast(a) * np.float32(number)).astype(a.dtype)
    return a * number


def _checked_value(name, input, tensor1, tensor2, value):
    """addcmul's and addcdiv's ``value``, as torch takes it: the tensors alone decide the dtype (no
    kernel for bools), and the number must fit it (float32 for 16-bit floats, torch's compute type);
    an integer one wraps around like any number stored there (uint8 takes -1 as 255)."""
    dtype, value = result_type(input, tensor1, tensor2), python_number(value)
    if type(value) in (int, float):  # (into an integer dtype a float value is truncated, as torch's)
        value = checked_number(value, float32 if _is_16bit_dtype(dtype) else dtype)
    if dtype.kind == "b":
        raise NotImplementedError(f'"{name}_cpu_out" not implemented for \'Bool\'')
    return value


def _one_node(name):
    """torch runs addcmul/addcdiv as one node on (input, tensor1, tensor2) (minilora: a product, then a
    sum): the public function's result carries torch's name and graph."""
    def decorate(fn):
        def op(input, tensor1, tensor2, *, value=1):
            inputs = (input, tensor1, tensor2)
            return name_node(fn(input, tensor1, tensor2, value=value), name, *inputs, graph=inputs)
        op.__name__, op.__qualname__, op.__doc__ = fn.__name__, fn.__qualname__, fn.__doc__
        return op
    return decorate


@_amp.autocasts
@_one_node("AddcmulBackward0")
def addcmul(input, tensor1, tensor2, *, value=1):
    """``torch.addcmul``: ``input + value * tensor1 * tensor2`` (products in torch's order)."""
    value = _checked_value("addcmul", input, tensor1, tensor2, value)
    out = _in_float32(addcmul, input, tensor1, tensor2, value)
    if out is not None:
        return out
    saved = saved_for(tensor1, tensor2), saved_for(tensor2, tensor1)  # what torch's addcmul keeps: each for the other
    input, tensor1, tensor2 = _to_common_dtype(input, tensor1, tensor2)
    dtype = result_type(input, tensor1, tensor2)
    if dtype in _FUSED_FLOATS:
        return saves_as_torch(_fused_multiply_add(input, tensor1, tensor2, dtype, value), *saved)
    scaled = mul(tensor1, value) if value != 1 else tensor1
    return saves_as_torch(add(input, mul(scaled, tensor2)), *saved)


def _fused_multiply_add(input, a, b, dtype, value=1):
    """``input + value * a * b`` in float32 (float64) rounded once: torch's addcmul kernel is a fused multiply-add,
    ``fmadd(value * tensor1, tensor2, input)`` (``-60000 + 2.5 * -60000 * -60000`` is 8999940096 in float32,
    where rounding the product first gives 8999939072)."""
    operands = [x if x.dtype == dtype else promotion_cast(x, dtype) for x in (input, a, b)]
    return FusedMulAdd.apply(*operands, value=value)


class FusedMulAdd(Function):
    """``c + (value a) b`` of float32 (float64) arrays, the product and sum rounded once, as an FMA instruction
    (``fastmath.multiply_add``). The gradients are torch's addcmul's: g, ``g * (b * value)`` and ``g * (a * value)``."""

    @staticmethod
    def forward(ctx, c, a, b, value=1):
        ctx.a, ctx.b, ctx.c_shape, ctx.value = a, b, c.shape, value
        try:
            return fastmath.multiply_add(a * a.dtype.type(value) if value != 1 else a, b, c)  # (torch's "default"
        except ValueError:  # build: two roundings)
            raise ShapeError(torch_broadcast_message([c.shape, a.shape, b.shape]) or f"addcmul: shapes {c.shape}, "
                             f"{a.shape} and {b.shape} cannot be broadcast together") from None

    @staticmethod
    def backward(ctx, g):
        nc, na, nb = ctx.needs_input_grad
        a, b = ctx.a, ctx.b
        if ctx.value != 1:
            a, b = a * a.dtype.type(ctx.value), b * b.dtype.type(ctx.value)
        return (unbroadcast(g, ctx.c_shape) if nc else None,
                unbroadcast(g * b, ctx.a.shape) if na else None,
                unbroadcast(g * a, ctx.b.shape) if nb else None, None)


@_amp.autocasts
@_one_node("AddcdivBackward0")
def addcdiv(input, tensor1, tensor2, *, value=1):
    """``torch.addcdiv``: ``input + value * tensor1 / tensor2`` (Adam's update, written out), in
    torch's order: ``(value * tensor1) / tensor2``."""
    if all(getattr(t, "dtype", np.dtype(float)).kind in "biu" for t in (tensor1, tensor2)):
        raise RuntimeError("Integer division with addcdiv is no longer supported, and in a future "
                           "release addcdiv will perform a true division of tensor1 and tensor2.")
    value = _checked_value("addcdiv", input, tensor1, tensor2, value)
    out = _in_float32(addcdiv, input, tensor1, tensor2, value)
    if out is not None:
        return out
    saved = saved_for(tensor1, tensor2), saved_for(tensor2, tensor1, tensor2)  # torch's addcdiv keeps (as its formulas)
    input, tensor1, tensor2 = _to_common_dtype(input, tensor1, tensor2)
    dtype = result_type(input, tensor1, tensor2)
    if dtype in _FUSED_FLOATS and all(isinstance(t, Tensor) and t.dtype == dtype for t in (input, tensor1, tensor2)):
        return saves_as_torch(AddcDiv.apply(input, tensor1, tensor2, value=value), *saved)
    out = add(input, div(mul(tensor1, value), tensor2) if value != 1 else div(tensor1, tensor2))
    return saves_as_torch(out, *saved)


class AddcDiv(Function):
    """``c + (value a) / b`` of float32 (float64) arrays, each step rounded, as torch's kernel; its gradients
    derivatives.yaml's: g, ``g * (value / b)`` and ``-g * ((value a) / (b b))``."""
    torch_layout, torch_number_operands = "elementwise", (0, 1, 2)

    @staticmethod
    def forward(ctx, c, a, b, value=1):
        ctx.a, ctx.b, ctx.c_shape, ctx.value = a, b, c.shape, a.dtype.type(value)
        with np.errstate(all="ignore"):
            return c + (ctx.value * a) / b

    @staticmethod
    def backward(ctx, g):
        nc, na, nb = ctx.needs_input_grad
        a, b, value = ctx.a, ctx.b, ctx.value
        with np.errstate(all="ignore"):
            return (unbroadcast(g, ctx.c_shape) if nc else None,
                    unbroadcast(g * (value / b), a.shape) if na else None,
                    unbroadcast(-g * ((value * a) / (b * b)), b.shape) if nb else None, None)


def _to_common_dtype(*tensors):
    """The operands of one fused kernel (addcmul, addcdiv) cast to their result dtype first, as torch's
    TensorIterator does: a float16 ``tensor1 / tensor2`` beside a bfloat16 ``input`` divides in float32."""
    dtype = result_type(*tensors)
    return tuple(promotion_cast(t, dtype) if isinstance(t, Tensor) and t.dtype != dtype else t for t in tensors)


# ---- more activations: elu family, hardtanh family, logsigmoid, mish, softsign ------------------------
@computes_in_float32
class Elu(Function):
    """torch's one ELU kernel: ``scale x`` for ``x > 0``, else ``alpha scale (exp(input_scale x) -
    1)`` (with expm1; the constants multiplied as torch does). ``elu``, ``selu`` and ``celu`` are
    its three settings. The gradient ``alpha scale input_scale exp(input_scale x)`` on the negative
    side comes from the input, not from the rounded output (torch's ``is_result=False``); at ``x = 0``
    it is the negative side's, as torch's."""

    @staticmethod
    def forward(ctx, a, alpha, scale, input_scale):
        xp = xp_of(a)
        ctx.a, ctx.constants = a, (alpha, scale, input_scale)
        if _numpy_float32(a):  # torch's kernel: float32 constants, SLEEF's expm1 (float32_math)
            return float32_math.elu(a, alpha, scale, input_scale)
        with np.errstate(over="ignore"):
            if _numpy_float64(a):  # (its double kernel: expm1 in vectors, C's in the loop's tail)
                negative = float32_math.loop64("expm1", a * input_scale, (a,)) * (alpha * scale)
            else:
                negative = xp.expm1(a * input_scale) * (alpha * scale)
        return xp.where(a > 0, a * scale, negative).astype(a.dtype, copy=False)

    @staticmethod
    def backward(ctx, g):
        xp, a = xp_of(g), ctx.a
        alpha, scale, input_scale = ctx.constants
        if _numpy_float32(g) and _numpy_float32(a):  # torch's kernel: SLEEF's exp (float32_math)
            return float32_math.elu_backward(g, a, alpha, scale, input_scale)
        # torch's elu_backward: (g * input_scale) * (alpha * scale) * exp(x * input_scale), its
        # constants in the gradient's dtype (alpha * scale rounded there)
        number = g.dtype.type
        negative_scale = number(alpha) * number(scale)
        with np.errstate(over="ignore"):
            e = _kernel_exp(xp.minimum(a, 0) * number(input_scale), loop=(g, a))

        def gradient(g, a, e):
            negative = g * number(input_scale) * negative_scale * e
            return xp.where(a > 0, g * number(scale), negative).astype(g.dtype, copy=False)
        return float32_math.in_cache_slices(gradient, g, a, e)


def _elu(input, alpha, scale, input_scale):
    if not is_floating(input.dtype):  # (torch.celu / torch.selu too, not only F.*: no integer kernel)
        raise NotImplementedError(f'"elu_cpu" not implemented for \'{torch_name(input.dtype)}\'')
    input = _floating(input)
    alpha, = _checked_parameters(input, alpha)
    return Elu.apply(input, alpha=alpha, scale=scale, input_scale=input_scale)


_SELU_ALPHA, _SELU_SCALE = 1.6732632423543772848170429916717, 1.0507009873554804934193349852946


def elu(input, alpha=1.0): return _elu(input, alpha, 1.0, 1.0)
def selu(input): return _elu(input, _SELU_ALPHA, _SELU_SCALE, 1.0)
def celu(input, alpha=1.0): return name_node(_elu(input, alpha, 1.0, 1.0 / alpha), "CeluBackward0", input)


def hardtanh(input, min_val=-1.0, max_val=1.0):
    """``clamp(x, min_val, max_val)`` with torch's gradient: 1 strictly inside, 0 at and beyond
    the bounds (``clamp``'s counts the bounds as inside; hardtanh's does not)."""
    if min_val > max_val:
        raise ValueError("min_val cannot be greater than max_val")
    if input.dtype.kind == "c":  # (torch's hardtanh is a clamp)
        raise NotImplementedError("clamp is not supported for complex types")
    if input.dtype == np.bool_:
        raise RuntimeError("Bool inputs not supported for hardtanh")
    if not is_floating(input.dtype):  # torch's integer kernel: the bounds cut to integers, the result stays
        min_val, max_val = int(min_val), int(max_val)  # integer (relu6(int64 x) is int64, as x.relu_())
        if input.dtype.kind == "u" and min(min_val, max_val) < 0:
            raise RuntimeError("cannot do hardtanh on an unsigned type with negative limits")
    inside = (input > min_val) & (input < max_val)
    out = saves_as_torch(where(inside, input, clamp(input, min_val, max_val).detach()), input)
    return name_node(backward_reads(out, input), "HardtanhBackward0", input, graph=(input,))


@computes_in_float32
class Hardswish(Function):
    """``x relu6(x + 3) / 6`` with torch's piecewise gradient: 0 up to -3, ``x / 3 + 0.5``
    strictly between -3 and 3, 1 from 3 on (at 3 the chain rule through relu6 would give 1.5)."""

    @staticmethod
    def forward(ctx, a):
        ctx.a = a
        return a * xp_of(a).clip(a + 3, 0, 6) / 6

    @staticmethod
    def backward(ctx, g):
        a, xp = ctx.a, xp_of(g)
        out = xp.where(a <= -3, 0, xp.where(a < 3, g * (a / 3 + 0.5), g)).astype(g.dtype, copy=False)
        return _nan_where_vectorized(out, a, g)


def _nan_where_vectorized(out, a, g):
    """hardswish_backward at a NaN: torch's vectorized lambda blends ``g (a / 3 + 1/2)`` (NaN) in, its scalar one
    (a row's tail, ``float32_math.scalar_positions``) falls through to ``g``, as ``out`` has it."""
    return _where_vectorized(out, np.isnan(a), np.nan, g, a)


def _where_vectorized(out, differ, vectorized_value, g, a):
    """``out`` (a backward kernel's scalar lambda on every element) with ``vectorized_value`` where ``differ`` and
    torch's ``cpu_kernel_vec`` runs its vectorized lambda there: all but a row's tail (``float32_math.
    scalar_positions``; float32 and float64 arrays)."""
    if type(out) is not np.ndarray or out.dtype not in (np.float32, np.float64) or not np.any(differ):
        return out
    vectorized = np.broadcast_to(differ, out.shape).reshape(-1).copy()
    step = float32_math._VECTOR_STEP if out.dtype == np.float32 else float32_math.FLOAT_LANES  # (two vectors)
    for where in float32_math.scalar_positions(*np.broadcast_arrays(g, a), step=step):
        vectorized[where] = False
    out = np.array(out, copy=True, order="C")  # (positions are in the result's C order)
    values = np.broadcast_to(vectorized_value, out.shape).reshape(-1)
    out.reshape(-1)[vectorized] = values[vectorized]
    return out


def hardswish(input): return Hardswish.apply(_floating(input))


@computes_in_float32
class Hardsigmoid(Function):
    """``relu6(x + 3) / 6``; gradient 1/6 strictly inside (-3, 3), 0 elsewhere. torch's kernel
    multiplies by ``1.0f / 6.0f``, the float32 sixth, in every dtype: its float64 gradient is off
    by 3e-8 relative, and so is ours, on purpose (torch's number, not a third one)."""

    @staticmethod
    def forward(ctx, a):
        ctx.inside = (a > -3) & (a < 3)
        return xp_of(a).clip(a + 3, 0, 6) / 6

    @staticmethod
    def backward(ctx, g):
        sixth = g.dtype.type(np.float32(1) / np.float32(6))
        return xp_of(g).where(ctx.inside, g * sixth, 0).astype(g.dtype, copy=False)


def hardsigmoid(input):
    input = _floating(input)
    out = saves_as_torch(Hardsigmoid.apply(input), input)  # (Hardsigmoid keeps a mask)
    return backward_reads(out, input)  # (torch's hardsigmoid_backward(grad, self))


@computes_in_float32
class LogSigmoid(Function):
    """``log(sigmoid(x)) = min(x, 0) - log1p(exp(-|x|))``, stable for large ``|x|``; gradient
    ``sigmoid(-x)`` (0.5 at x = 0, where the min's kink would mislead a composition)."""

    @staticmethod
    def forward(ctx, a):
        xp = xp_of(a)
        vector = _vector_functions(a)
        if vector:  # torch's kernel: every element in vectors (a row's end a partial one), SLEEF's exp and log1p
            ctx.a, ctx.z = a, vector("exp", -np.abs(a))
            with np.errstate(invalid="ignore"):
                return np.asarray(np.minimum(a, 0) - vector("log1p", ctx.z), order="C")
        ctx.a, ctx.z = a, xp.exp(-xp.abs(a))
        return xp.asarray(xp.minimum(a, 0) - xp.log1p(ctx.z), order="C")  # (contiguous, as torch's)

    @staticmethod
    def backward(ctx, g):
        xp, z = xp_of(g), ctx.z  # torch's kernel: (max' - sign * z / (1 + z)) * g
        share = z / (1 + z)
        return xp.where(ctx.a < 0, 1 - share, share) * g


def logsigmoid(input): return LogSigmoid.apply(_floating(input))


@computes_in_float32
class Mish(Function):
    """``x tanh(softplus(x))``, one op as torch's kernel (softplus past 20 is ``x``, where tanh is 1
    already); gradient ``t + x sigmoid(x) (1 - t^2)`` with ``t = tanh(softplus(x))``."""

    @staticmethod
    def forward(ctx, a):
        xp = xp_of(a)
        if _numpy_float32(a):  # torch's kernel: SLEEF's exp, log1p and tanh (float32_math)
            out, ctx.t = float32_math.mish(a)
            ctx.a = a
            return out
        if _numpy_float64(a):  # its double kernel: the same three functions, SLEEF's in vectors, C's in the tail
            ctx.a, ctx.t = a, float32_math.loop64(_MISH_TANH, a)
            return a * ctx.t
        with np.errstate(over="ignore"):
            ctx.a, ctx.t = a, xp.tanh(xp.where(a > 20, a, xp.log1p(xp.exp(a))))
        return a * ctx.t

    @staticmethod
    def backward(ctx, g):
        a, t = ctx.a, ctx.t  # torch's mish_backward: g * (t + (a * sigmoid(a)) * (1 - t * t)), two FMAs
        if _numpy_float32(g):  # (torch's kernel recomputes t, in its own loop over (g, a))
            t = float32_math.relooped(t, a, (a,), (g, a), float32_math.MISH_TANH)
        compiled = float32_math.mish_backward(g, a, t) if _numpy_float32(g) else None
        if compiled is not None:  # (float32: the formula below, compiled, one pass)
            return compiled
        if _numpy_float32(a):  # (torch's kernel's, in its loop over (g, a))
            sigmoid = float32_math.relooped(float32_math.sigmoid(a), a, (a,), (g, a), float32_math.SIGMOID)
        elif _numpy_float64(g) and _numpy_float64(a):
            t = float32_math.loop64(_MISH_TANH, a, (g, a))
            sigmoid = 1 / (1 + float32_math.exp_of_negative64(a, loop=(g, a)))
        else:
            sigmoid = _sigmoid(xp_of(g), a)
        return float32_math.in_cache_slices(
            lambda g, a, s, t: g * fastmath.multiply_add(a * s, fastmath.multiply_add(-t, t, 1), t), g, a, sigmoid, t)


_MISH_TANH = ("exp", "log1p", "tanh")  # mish's t = tanh(log1p(exp(x))), a chain of torch's vector functions


def mish(input):
    """``x tanh(softplus(x))``: smooth, non-monotonic, unbounded above."""
    return Mish.apply(_floating(input))


def softsign(input):
    """``x / (1 + |x|)``."""
    input = _floating(input)
    return div(input, add(abs(input), 1))


# ---- trigonometric and hyperbolic functions, atan2, logaddexp, nan_to_num -----------------------------
# name -> (what torch saves for backward, the gradient from it and g, written as torch's derivative
# formulas are: a the input, out the result). The result where the derivative is
# cheapest from it (tan, exp2), else the input: what torch's derivatives.yaml saves, so that changing the
# other one in place before backward is no error, as in torch.
_DERIVATIVES = {  # (in torch's order: each step one op, rounded by r under a 16-bit gradient, as torch's autograd runs them)
    "tan": ("result", lambda xp, g, out, r: g * r(1 + r(out * out))),
    "arcsin": ("input", lambda xp, g, a, r: g * r(1 / xp.sqrt(r(1 - r(a * a))))),
    "arccos": ("input", lambda xp, g, a, r: g * -r(1 / xp.sqrt(r(1 - r(a * a))))),
    "arctan": ("input", lambda xp, g, a, r: g / r(r(a * a) + 1)),
    "sinh": ("input", lambda xp, g, a, r: g * r(float32_math.pointwise("cosh", a))),  # (self.cosh(): torch's kernel,
    "cosh": ("input", lambda xp, g, a, r: g * r(float32_math.pointwise("sinh", a))),  # C's function in its tail)
    "arcsinh": ("input", lambda xp, g, a, r: g * r(1 / xp.sqrt(r(r(a * a) + 1)))),
    "arccosh": ("input", lambda xp, g, a, r: g * _acosh_derivative(xp, a, r)),
    "arctanh": ("input", lambda xp, g, a, r: g / r(1 - r(a * a))),
    "exp2": ("result", lambda xp, g, out, r: r(g * out) * math.log(2)),
}


def _acosh_derivative(xp, a, r):
    """torch's: (x^2 - 1)^(-1/2) for real x; for complex z 1 / (sqrt(z - 1) sqrt(z + 1)), the derivative of the
    principal acosh (sqrt(z^2 - 1) takes the other sign where Re z < 0: minilora's gradient had it)."""
    if a.dtype.kind != "c":
        return r(1 / xp.sqrt(r(r(a * a) - 1)))
    return (1 / xp.sqrt(a - 1)) * (1 / xp.sqrt(a + 1))


@backward_in_float32
class Pointwise(Function):
    """One NumPy function of one tensor (``name``), with its derivative from ``_DERIVATIVES``."""
    torch_node_name = staticmethod(lambda ctx: _TORCH_NODES[ctx.op_name])  # (acos's node: AcosBackward0)

    @staticmethod
    def forward(ctx, a, name):
        with np.errstate(invalid="ignore", divide="ignore"):  # NaN/inf outside the domain, as torch
            # (float32: torch's MKL tan/asin/acos/atan correctly rounded, 82-99% of elements; its loops of
            # C's asinhf/acoshf and of SLEEF's sinh, cosh, atanh, exp2 (C's in the tail): float32_math.pointwise)
            out = float32_math.pointwise(name, a)
        ctx.op_name = name
        ctx.saved = out if _DERIVATIVES[name][0] == "result" else a
        return out

    @staticmethod
    def backward(ctx, g):
        with np.errstate(invalid="ignore", divide="ignore"):
            return _DERIVATIVES[ctx.op_name][1](xp_of(g), g, ctx.saved, lambda value: _step(ctx, value))


# torch's node names for the functions Pointwise computes, by their NumPy names
_TORCH_NODES = {"tan": "TanBackward0", "arcsin": "AsinBackward0", "arccos": "AcosBackward0", "arctan": "AtanBackward0",
                "sinh": "SinhBackward0", "cosh": "CoshBackward0", "arcsinh": "AsinhBackward0",
                "arccosh": "AcoshBackward0", "arctanh": "AtanhBackward0", "exp2": "Exp2Backward0"}


def _pointwise(name, numpy_name):
    def op(input):
        return Pointwise.apply(_floating(input), name=numpy_name)
    op.__name__ = name
    op.__doc__ = f"``torch.{name}``, elementwise (integers compute in the default float dtype)."
    return op


tan, asin, acos, atan = (_pointwise(n, m) for n, m in (("tan", "tan"), ("asin", "arcsin"),
                                                        ("acos", "arccos"), ("atan", "arctan")))
sinh, cosh, asinh, acosh, atanh = (_pointwise(n, m) for n, m in (
    ("sinh", "sinh"), ("cosh", "cosh"), ("asinh", "arcsinh"), ("acosh", "arccosh"), ("atanh", "arctanh")))
exp2 = _pointwise("exp2", "exp2")
tan, asin, acos, sinh, cosh = map(_amp.autocasts, (tan, asin, acos, sinh, cosh))  # (torch's CUDA float32 list)


@backward_in_float32
@iterator_layout
class Atan2(Function):
    """The angle of the point (``b``, ``a``): ``atan(a / b)`` in the right quadrant; gradients
    ``b / (a^2 + b^2)`` and ``-a / (a^2 + b^2)``."""

    @staticmethod
    def forward(ctx, a, b):
        ctx.a, ctx.b, ctx.shapes = a, b, (_shape(a), _shape(b))
        if _numpy_float32(a) and _numpy_float32(b):  # (torch's loop: SLEEF's in vectors, C's atan2f otherwise)
            return float32_math.atan2(a, b)
        if all(type(v) is np.ndarray and _is_16bit_dtype(v.dtype) for v in (a, b)) and a.dtype == b.dtype:
            return float32_math.atan2(upcast(a), upcast(b), step=float32_math.HALF_STEP).astype(a.dtype)  # (in
        if all(type(v) is np.ndarray and v.dtype == np.float64 for v in (a, b)):  # (float32, as its 16-bit kernel,
            return float32_math.atan2_64(a, b)  # rounded once; float64: SLEEF's double atan2, C's in the tail)
        return xp_of(a if hasattr(a, "shape") else b).arctan2(a, b)

    @staticmethod
    def backward(ctx, g):
        na, nb = ctx.needs_input_grad
        a, b = ctx.a, ctx.b
        xp, zero = xp_of(g), g.dtype.type(0)
        # torch's atan2_backward: recip = (a * a + b * b).reciprocal(), then grad * b * recip, grad * -a * recip
        denominator = _step(ctx, _step(ctx, a * a) + _step(ctx, b * b))
        origin = denominator == 0  # torch: no gradient at (0, 0), where the angle jumps
        with np.errstate(divide="ignore"):
            recip = _step(ctx, 1 / denominator)
        return (unbroadcast(xp.where(origin, zero, _step(ctx, g * b) * recip), ctx.shapes[0]) if na else None,
                unbroadcast(xp.where(origin, zero, _step(ctx, g * -a) * recip), ctx.shapes[1]) if nb else None)


@_amp.autocasts
def atan2(input, other):
    """``torch.atan2``: the angle of (``other``, ``input``), in (-pi, pi]."""
    for name, value in (("input", input), ("other", other)):
        if not isinstance(value, Tensor):  # torch has no number overload for atan2
            raise TypeError(f"atan2(): argument '{name}' must be Tensor, not {type(value).__name__}")
    a, b = _promoted(input, other, true_divide=True)
    return Atan2.apply(a, b)


arctan2 = atan2


@backward_in_float32
class LogAddExp(Function):
    """``log(exp(a) + exp(b))`` as ``max + log1p(exp(-|a - b|))`` (no overflow; equal infinities give
    themselves, as torch); gradients ``1 / (1 + exp(b - a))`` and ``1 / (1 + exp(a - b))`` (complex: the
    same formula, conjugated, as torch's)."""
    complex_grad = "holomorphic"

    @staticmethod
    def forward(ctx, a, b):
        xp = xp_of(a if hasattr(a, "shape") else b)
        ctx.a, ctx.b, ctx.shapes = a, b, (_shape(a), _shape(b))
        if a.dtype.kind == "c":  # (_promoted: both complex)
            return complex_logaddexp(xp, a, b)
        if xp is np and a.dtype == float32 and b.dtype == float32:  # (any layout: float32_math's loop model)
            return float32_math.logaddexp(a, b)  # (torch's SLEEF formula, bit for bit)
        if xp is np and _is_16bit_dtype(a.dtype) and a.dtype == b.dtype:  # (its 16-bit kernel: the float32
            return float32_math.logaddexp(upcast(a), upcast(b)).astype(a.dtype)  # formula, rounded once)
        if xp is np and a.dtype == np.float64 and b.dtype == np.float64:  # (C's functions where torch's loop
            return float32_math.logaddexp64(a, b)  # calls them)
        return xp.logaddexp(a, b)

    @staticmethod
    def backward(ctx, g):
        return _log_add_exp_grads(ctx, g, lambda v: float32_math.vml("exp", v))  # (float32: torch's MKL exp)


def complex_logaddexp(xp, a, b):
    """torch's complex ``_log_add_exp_helper``: ``log1p(exp(low - high)) + high``, ``high`` the operand of the
    larger real part (a tie: the first); two equal infinite real parts: -inf's operand, or log(e^a + e^b) for
    +inf; a NaN in either part of either operand: NaN + NaN j."""
    a, b = xp.broadcast_arrays(a, b)
    first_lower = a.real < b.real
    low, high = xp.where(first_lower, a, b), xp.where(first_lower, b, a)
    with np.errstate(all="ignore"):
        out = xp.log1p(xp.exp(low - high)) + high
        both_infinite = xp.isinf(low.real) & (low.real == high.real)
        out = xp.where(both_infinite & (low.real < 0), low, out)
        out = xp.where(both_infinite & (low.real > 0), xp.log(xp.exp(low) + xp.exp(high)), out)
    out = xp.where(xp.isnan(a) | xp.isnan(b), a.dtype.type(complex(np.nan, np.nan)), out)
    return out.astype(a.dtype, copy=False)


def _log_add_exp_grads(ctx, g, power):
    """logaddexp's (``power``: exp) and logaddexp2's (exp2) gradients, torch's: ``g / (1 + power(b - a))`` for
    ``a``, ``g / (1 + power(a - b))`` for ``b``, each summed to its input's shape."""
    na, nb = ctx.needs_input_grad

    def one_plus_power(difference):  # (each of torch's ops rounded under a 16-bit gradient)
        return _step(ctx, 1 + _step(ctx, power(_step(ctx, difference))))
    with np.errstate(over="ignore", invalid="ignore"):
        return (unbroadcast(g / one_plus_power(ctx.b - ctx.a), ctx.shapes[0]) if na else None,
                unbroadcast(g / one_plus_power(ctx.a - ctx.b), ctx.shapes[1]) if nb else None)


@computes_in_float32  # (16-bit: the forward in float32 rounded once; the backward's ops rounded as torch's)
class LogAddExp2(Function):
    """``log2(2^a + 2^b)`` as torch's kernel: ``max + log1p(2^-|a - b|) * (1 / ln 2)``, the last product and sum
    fused where its build fuses (float32: ``float32_math.logaddexp2``, SLEEF's exp2 and log1p, bit for bit);
    equal infinities give themselves. Gradients ``g / (1 + 2^(b - a))`` and ``g / (1 + 2^(a - b))``, torch's."""

    @staticmethod
    def forward(ctx, a, b):
        xp = xp_of(a if hasattr(a, "shape") else b)
        ctx.a, ctx.b, ctx.shapes = a, b, (_shape(a), _shape(b))
        if xp is np and a.dtype == float32 and b.dtype == float32:  # (any layout: float32_math's loop model)
            return float32_math.logaddexp2(a, b)
        if xp is np and a.dtype == np.float64 and b.dtype == np.float64:
            return float32_math.logaddexp64(a, b, base2=True)
        with np.errstate(invalid="ignore", over="ignore"):  # (inf - inf: nan, replaced below)
            scaled = xp.log1p(xp.exp2(-xp.abs(a - b)))
            inv_ln2 = xp.full_like(scaled, 1 / math.log(2))
            if xp is np and a.dtype == np.float64 and float32_math.FUSED_MULTIPLY_ADD:
                out = float32_math.fused_multiply_add64(scaled, inv_ln2, xp.maximum(a, b))
            else:
                out = xp.maximum(a, b) + scaled * inv_ln2
        return xp.where(xp.isinf(a) & (a == b), a, out)

    @staticmethod
    def backward(ctx, g):
        return _log_add_exp_grads(ctx, g, lambda v: _power_kernel(2, v))  # (torch's pow(2, other - self))


def logaddexp(input, other):
    """``torch.logaddexp``: ``log(exp(input) + exp(other))`` without overflow (floats only, as in
    torch: no kernel for integers or bools)."""
    dtype = result_type(input, other)
    if not is_floating(dtype) and dtype.kind != "c":
        raise NotImplementedError(f'"logaddexp_cpu" not implemented for \'{torch_name(dtype)}\'')
    return LogAddExp.apply(*_promoted(input, other))


@computes_in_float32  # (NumPy's nan_to_num leaves a bfloat16 array as it is: not an 'inexact' type to it)
class NanToNum(Function):
    """NaN, +inf and -inf replaced by numbers (complex: in each part); the gradient flows only where the input
    was finite (a real mask: a complex gradient passes as is, for the in-place nan_to_num_ torch differentiates)."""
    complex_grad = True

    @staticmethod
    def forward(ctx, a, nan, posinf, neginf):
        xp = xp_of(a)
        ctx.finite = xp.isfinite(a)
        with np.errstate(over="ignore"):  # a replacement too large for the dtype is inf, silently (torch)
            return xp.nan_to_num(a, nan=nan, posinf=posinf, neginf=neginf)

    @staticmethod
    def backward(ctx, g):
        return g * ctx.finite


def nan_to_num(input, nan=0.0, posinf=None, neginf=None):
    """``torch.nan_to_num``: NaN -> ``nan``, +inf -> ``posinf`` (default: the dtype's largest
    value), -inf -> ``neginf`` (default: its lowest). Integers are returned unchanged. Complex: each part
    replaced (the real dtype's limits); no derivative, as torch's out-of-place nan_to_num."""
    no_complex_autograd("nan_to_num", input.dtype, input)
    return _nan_to_num(input, nan, posinf, neginf)


def _nan_to_num(input, nan, posinf, neginf):
    """nan_to_num's values (``x.nan_to_num_()``: torch differentiates the in-place form for complex too)."""
    if not is_floating(input.dtype) and input.dtype.kind != "c":
        return clone(input)
    largest = float(np.finfo(input.dtype).max)  # (of the input's dtype, not of the float32 it computes in)
    out = NanToNum.apply(input, nan=nan, posinf=largest if posinf is None else posinf,
                         neginf=-largest if neginf is None else neginf)
    return saves_as_torch(out, input)  # (NanToNum keeps a mask)


# torch's layout of a result from a channels_last input (Function.torch_layout): these unary ops are
# TensorIterator kernels, their result in the input's order of strides (the binary ones: iterator_layout)
for _op in (Tanh, Sigmoid, Relu, Elu, Hardswish, Hardsigmoid, LeakyRelu, Softplus, Mish, Gelu, Silu, Abs, Exp,
            Neg, Clamp, Log, Sqrt, Rsqrt, Erf, Sin, Cos, Sign, Log1p, Expm1, Logit, LogBase, Pointwise, Pow, _Rounding,
            _Test, LogAddExp2):
    _op.torch_layout = "elementwise"
# binary TensorIterator ops whose forward NumPy lays out itself: a Python number is a 0-d tensor operand
for _op in (Div, AddScaled, RoundedDiv, Remainder, XLogY, LogAddExp, FusedMulAdd):
    _op.torch_layout, _op.torch_number_operands = "elementwise", (0, 1, 2)
Lerp.torch_number_operands = (0, 1)  # (lerp's number weight is no operand: lerp.Scalar)
Pow.torch_number_operands = ()  # (pow.Tensor_Scalar is a unary iterator; number ** tensor is contiguous)
LogSigmoid.torch_layout = "contiguous"  # (torch's log_sigmoid_forward writes a contiguous result and buffer)
Reciprocal.torch_number_operands = ()  # (torch's reciprocal is unary: Div's number 1 is no operand of it)
# .to(dtype) and nan_to_num copy into empty_like(input) (preserve_format: the input's strides where dense)
AsType.torch_layout = PromotionCast.torch_layout = NanToNum.torch_layout = "preserve"
