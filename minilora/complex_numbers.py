"""Complex tensors: complex64 / complex128 (NumPy's complex arrays), as torch has them. Meta's Llama
rotary embedding is the classic use -- each pair of features is one complex number, turned by a unit
complex number per position:

    freqs_cis = ml.polar(ml.ones_like(freqs), freqs)             # e^{i m theta}, complex64
    xq_ = ml.view_as_complex(xq.float().reshape(*xq.shape[:-1], -1, 2))
    xq_out = ml.view_as_real(xq_ * freqs_cis).flatten(3)          # back to real pairs

Dtypes and promotion follow torch: a float tensor with a complex one or a Python complex number is complex
of the wider width (float64 * 1j is complex128; float32 * a complex128 0-d tensor stays complex64), a Python
complex alone is the default float dtype's complex type. ``.real``, ``.imag``, ``view_as_real`` and
``view_as_complex`` are views, as in torch: writing into one changes the other (NumPy reads complex memory
as (real, imag) pairs, which is exactly torch's layout; ``view_as_complex`` needs what a view needs: a last
axis of 2 with stride 1, even strides and offset). ``conj()`` computes the conjugate (torch's lazy
conjugate bit is not modelled). ``linalg.eig`` / ``eigvals`` of real matrices return complex tensors too.

Gradients, as torch: for a real loss ``L`` and a complex ``z = x + iy``, ``z.grad`` is ``dL/dx + i dL/dy``
(the conjugate Wirtinger derivative, doubled); a real input gets the real part of what reaches it (the
engine's ``_fit``). Each op says, by ``Function.complex_grad``, how its backward takes a complex gradient:

* ``True``: its derivative is linear with real coefficients (sums, reshapes, indexing, casts) or written
  for complex numbers here (``real``, ``angle``, ``polar``, the FFTs) -- the gradient goes through as is;
* ``"holomorphic"``: an analytic op (mul, div, exp, log, matmul, sin ...) whose real backward computes
  ``f'(z) * g``; for complex numbers torch wants ``conj(f'(z)) * g``, which is that same formula run on
  ``conj(g)`` and conjugated (tensor.py's ``_complex_node_backward`` does it);
* ``False`` (the default): a complex gradient reaching the op raises NotImplementedError naming it, rather
  than returning a wrong gradient.

Ops that have no meaning for complex numbers (``<``, max, sort, clamp/relu, floor, %, sign -- use ``sgn``)
refuse a complex input, naming the op, where NumPy would order complex numbers lexicographically or round
each part. This file also has ``torch.fft`` (``minilora.fft``), whose transforms are complex-valued.
"""
import types

import numpy as np

from . import dtypes, factories, ops
from .ops import meta as _meta_ops
from .device import holds_no_values, xp_of
from .tensor import Function, Tensor, _storage, name_node

complex64 = cfloat = np.dtype("complex64")
complex128 = cdouble = np.dtype("complex128")


class Real(Function):
    complex_grad = True

    @staticmethod
    def forward(ctx, z):  # a view: writing into x.real changes x (as in torch)
        ctx.dtype = z.dtype
        return z.real

    @staticmethod
    def backward(ctx, grad):  # d/dx of Re(x + iy): 1, d/dy: 0
        return grad.astype(ctx.dtype)

    @staticmethod
    def write_back(parent, child):  # ``z.real[...] = v`` inside the graph: z becomes v + i Im(z)
        return complex(child, imag(parent))


class Imag(Function):
    complex_grad = True

    @staticmethod
    def forward(ctx, z):  # a view, as .real
        ctx.dtype = z.dtype
        return z.imag

    @staticmethod
    def backward(ctx, grad):  # d/dx of Im(x + iy): 0, d/dy: 1
        return (grad * 1j).astype(ctx.dtype)

    @staticmethod
    def write_back(parent, child):
        return complex(real(parent), child)


class Conj(Function):
    complex_grad = True
    torch_layout = "elementwise"  # (torch's conj is a view, conj_physical an iterator's copy: the input's strides)

    @staticmethod
    def forward(ctx, z):
        return xp_of(z).conj(z)

    @staticmethod
    def backward(ctx, grad):
        return xp_of(grad).conj(grad)


class Angle(Function):
    complex_grad = True
    torch_layout = "elementwise"  # (a TensorIterator kernel: Function.torch_layout)

    @staticmethod
    def forward(ctx, z):
        ctx.z = z
        xp = xp_of(z)
        if z.dtype.kind == "c":
            return xp.angle(z)
        # torch.angle of a real number: pi for a negative one, 0 otherwise, nan stays nan
        return xp.where(z < 0, np.pi, xp.where(xp.isnan(z), z, 0)).astype(z.dtype)

    @staticmethod
    def backward(ctx, grad):  # torch's angle_backward: i z / |z|^2 (0 at z = 0); a real input: 0
        z = ctx.z
        xp = xp_of(z)
        if z.dtype.kind != "c":
            return xp.zeros_like(z)
        with np.errstate(all="ignore"):
            return xp.where(z == 0, 0, grad * z / (z.real ** 2 + z.imag ** 2) * 1j).astype(z.dtype)


class ComplexAngle(Angle):
    """angle of a complex tensor: torch's kernel writes a contiguous result (its real one follows the input)."""
    torch_layout = "contiguous"
    meta_shape = staticmethod(lambda z: z.shape)  # (ops/meta.py's rules are given before this class exists)

    @staticmethod
    def forward(ctx, z):
        return xp_of(z).ascontiguousarray(Angle.forward(ctx, z))  # (NumPy's angle keeps z's order)


class ViewAsReal(Function):
    complex_grad = True

    @staticmethod
    def forward(ctx, z):
        ctx.dtype = z.dtype
        return _real_pairs(z)

    @staticmethod
    def backward(ctx, grad):
        return (grad[..., 0] + 1j * grad[..., 1]).astype(ctx.dtype)

    @staticmethod
    def write_back(parent, child):
        return view_as_complex(child.contiguous())


def _real_pairs(z):
    """``z``'s memory read as (real, imag) pairs: a view (NumPy lets a size-1 last axis change its dtype
    whatever the strides), a copy where the array library cannot make one."""
    real_dtype = z.real.dtype
    try:
        return z[..., None].view(real_dtype)
    except (ValueError, TypeError):
        return xp_of(z).stack([z.real, z.imag], axis=-1)


class ViewAsComplex(Function):
    complex_grad = True

    @staticmethod
    def forward(ctx, x):  # a view (view_as_complex checked the strides torch needs for one)
        return x.view(np.complex64 if x.dtype == np.float32 else np.complex128)[..., 0]

    @staticmethod
    def backward(ctx, grad):
        return xp_of(grad).stack([grad.real, grad.imag], axis=-1)

    @staticmethod
    def write_back(parent, child):
        return view_as_real(child)


class Polar(Function):
    torch_layout = "elementwise"  # (a TensorIterator kernel: Function.torch_layout)
    """``abs * (cos(angle) + i sin(angle))``. Gradients, for torch's complex ``g``, torch's polar_backward:
    ``Re(g conj(sgn(out)))`` to abs, ``Re(g conj(i out))`` to angle. sgn(out) is e^{i angle} where abs > 0, but
    0 where abs = 0 and -e^{i angle} where abs < 0 (torch's formula, not the derivative there: matched)."""
    complex_grad = True

    @staticmethod
    def forward(ctx, r, theta):
        xp = xp_of(r)
        # torch's CPU kernel takes cosf/sinf of each float32 angle; cos and sin in float64 rounded to float32
        # agree with those far more often than NumPy's float32 ones (its vectorised cos differs in the last bit)
        wide = theta.astype(np.float64) if theta.dtype == np.float32 else theta
        cos, sin = xp.cos(wide).astype(theta.dtype), xp.sin(wide).astype(theta.dtype)
        ctx.unit = cos + 1j * sin  # (complex64 for float32 inputs: NumPy keeps the width)
        ctx.out = (r * cos) + 1j * (r * sin)  # (each part a real product, as torch's abs * cos(angle))
        ctx.shapes = r.shape, theta.shape  # (either may be broadcast against the other)
        ctx.abs_sign = xp.sign(r)  # (sgn(out) = sign(abs) e^{i angle})
        return ctx.out

    @staticmethod
    def backward(ctx, grad):
        xp = xp_of(grad)
        return (ops.elementwise.unbroadcast(xp.real(grad * xp.conj(ctx.unit)) * ctx.abs_sign, ctx.shapes[0])
                if ctx.needs_input_grad[0] else None,
                ops.elementwise.unbroadcast(xp.real(grad * xp.conj(1j * ctx.out)), ctx.shapes[1])
                if ctx.needs_input_grad[1] else None)


def is_complex(input):
    """``torch.is_complex``: a complex64 / complex128 tensor?"""
    return input.dtype.kind == "c"


def real(input):
    """``torch.real`` / ``x.real``: the real part (a real tensor is returned as it is, as torch)."""
    if not is_complex(input):
        return input
    return name_node(Real.apply(input), "RealBackward0", input)


def imag(input):
    """``torch.imag`` / ``x.imag``: the imaginary part; torch refuses a real tensor."""
    if not is_complex(input):
        raise RuntimeError("imag is not implemented for tensors with non-complex dtypes.")
    return name_node(Imag.apply(input), "ImagBackward0", input)


def conj(input):
    """``torch.conj`` / ``x.conj()``: the complex conjugate (a real tensor as it is)."""
    if not is_complex(input):
        return input
    return name_node(Conj.apply(input), "ConjBackward0", input)


def angle(input, *, out=None):
    """``torch.angle``: the argument of each element, in radians (0 or pi for real numbers)."""
    if not dtypes.is_floating(input.dtype) and not is_complex(input):
        input = input.to(dtypes.get_default_dtype())  # (torch: integers give the default float dtype)
    result = name_node((ComplexAngle if is_complex(input) else Angle).apply(input), "AngleBackward0", input)
    return result if out is None else ops._write_out(lambda *_: result, "angle", (input,), {}, out)


def view_as_real(input):
    """``torch.view_as_real``: a complex tensor's memory read as real pairs (..., 2): a view, as in torch
    (writing into it changes ``input``)."""
    if not is_complex(input):
        raise RuntimeError("view_as_real is only supported for complex tensors")
    return name_node(ViewAsReal.apply(input), "ViewAsRealBackward0", input)


def _refuse_complex_half(name, dtype):
    """torch makes complex32 (ComplexHalf) of float16 pairs; NumPy has no such dtype."""
    if dtype == np.float16:
        raise NotImplementedError(f"{name} of float16 tensors (torch's complex32) is not implemented in minilora: "
                                  f"NumPy has no complex dtype of 16-bit halves; convert to float32 first")


def view_as_complex(input):
    """``torch.view_as_complex``: real pairs (..., 2) of float32 / float64 read as complex numbers: a view,
    so torch's rules for one (last axis of size 2 and stride 1, even strides and storage offset)."""
    _refuse_complex_half("view_as_complex", input.dtype)
    if input.dtype not in (np.float32, np.float64):
        raise RuntimeError(f"view_as_complex is only supported for half, float and double tensors, but got a tensor "
                           f"of scalar type: {dtypes.torch_name(input.dtype)}")
    if input.ndim == 0:
        raise RuntimeError("Input tensor must have one or more dimensions")
    if input.shape[-1] != 2:
        raise RuntimeError("Tensor must have a last dimension of size 2")
    _check_pair_strides(input._array)
    return name_node(ViewAsComplex.apply(input), "ViewAsComplexBackward0", input)


def _check_pair_strides(array):
    """torch's view_as_complex checks, in its order and words (strides counted in elements)."""
    itemsize = array.itemsize
    if array.strides[-1] != itemsize:
        raise RuntimeError("Tensor must have a last dimension with stride 1")
    if any(stride % (2 * itemsize) for stride, size in zip(array.strides[:-1], array.shape[:-1]) if size > 1):
        raise RuntimeError("Tensor must have a stride divisible by 2 for all but last dimension")
    if _storage_offset(array) % 2:
        raise RuntimeError("Tensor must have a storage_offset divisible by 2")


def _storage_offset(array):
    """How many elements into its storage ``array`` starts (torch's ``storage_offset()``)."""
    if xp_of(array) is not np:
        storage, start = _storage(array), array.data.ptr
        return (start - storage.data.ptr) // array.itemsize
    storage = _storage(array)
    return (array.__array_interface__["data"][0] - storage.__array_interface__["data"][0]) // array.itemsize


def _check_float_pair(name, a, b):
    """torch.complex / torch.polar: two tensors of one float dtype, checked in torch's order and words."""
    if a.dtype == b.dtype:
        _refuse_complex_half(name, a.dtype)
    floats = (np.float16, np.float32, np.float64)
    if a.dtype not in floats or b.dtype not in floats:
        raise RuntimeError(f"Expected both inputs to be Half, Float or Double tensors but got "
                           f"{dtypes.torch_name(a.dtype)} and {dtypes.torch_name(b.dtype)}")
    if a.dtype != b.dtype:
        raise RuntimeError(f"Expected object of scalar type {dtypes.torch_name(a.dtype)} but got scalar type "
                           f"{dtypes.torch_name(b.dtype)} for second argument")


def complex(real, imag, *, out=None):  # noqa: A001  (torch's name)
    """``torch.complex``: ``real + i imag`` from two float32 (complex64) or float64 (complex128) tensors."""
    _check_float_pair("complex", real, imag)
    shape = tuple(np.broadcast_shapes(real.shape, imag.shape))
    pairs = ops.stack([real.expand(shape), imag.expand(shape)], -1).contiguous()  # (a transposed input too)
    result = ViewAsComplex.apply(pairs)
    result = name_node(result, "ComplexBackward0", real, imag, graph=(real, imag))
    return _written_exactly(_in_iterator_layout(result, real, imag), out, "complex")


def _in_iterator_layout(result, *inputs):
    """``result`` (a new tensor this module composed, handed to no one yet) laid out as torch's TensorIterator lays
    out an elementwise result of ``inputs`` (torch.complex's kernel is one: a channels_last or transposed pair keeps
    its order; the composed pairs above are C order)."""
    array = result._array
    order = factories.iterator_order_of(array.shape, [x._array for x in inputs])
    if order != tuple(range(array.ndim)) and array.size > 1:
        if holds_no_values(array):  # (meta: the layout, no values to copy)
            laid_out = _meta_ops.unwritten(array.shape, array.dtype, order)
        else:
            laid_out = factories.in_iterator_layout(array, [x._array for x in inputs])
        result._array = factories.known_layout(laid_out, order)
    return result


def _written_exactly(result, out, name):
    """``result``, or written into ``out`` of exactly its dtype (torch.complex and torch.polar cast nothing)."""
    if out is None:
        return result
    if isinstance(out, Tensor) and out.dtype != result.dtype:
        raise RuntimeError(f"Expected object of scalar type {dtypes.torch_name(result.dtype)} but got scalar type "
                           f"{dtypes.torch_name(out.dtype)} for argument 'out'")
    return ops._write_out(lambda: result, name, (), {}, out)


def polar(abs, angle, *, out=None):  # noqa: A002  (torch's names)
    """``torch.polar``: ``abs * (cos(angle) + i sin(angle))`` -- Llama's rotary frequencies
    ``polar(ones_like(freqs), freqs)`` are the unit complex numbers ``e^{i m theta}``."""
    _check_float_pair("polar", abs, angle)
    result = name_node(Polar.apply(abs, angle), "PolarBackward0", abs, angle)
    return _written_exactly(result, out, "polar")


def conj_physical(input, *, out=None):
    """``torch.conj_physical``: the conjugate, computed (minilora's ``conj`` computes it too: torch's lazy
    conjugate bit is not modelled, so ``conj()`` and ``conj_physical()`` give the same values)."""
    result = name_node(Conj.apply(input), "ConjPhysicalBackward0", input) if is_complex(input) else input
    return result if out is None else ops._write_out(lambda *_: result, "conj_physical", (input,), {}, out)


def conj_physical_(input):
    """``torch.conj_physical_`` / ``x.conj_physical_()``: conjugated in place (a real tensor stays as it is)."""
    return input._inplace(conj_physical)


def resolve_conj(input):
    """``torch.resolve_conj``: ``input`` with its conjugation materialised -- minilora's conj() always
    computes it, so the tensor itself (as torch returns one whose conjugate bit is not set)."""
    return input


def resolve_neg(input):
    """``torch.resolve_neg``: the tensor itself, for the same reason (minilora has no lazy negation)."""
    return input


def adjoint(input):
    """``torch.adjoint`` / ``x.mH``: the conjugate transpose of the last two axes."""
    return conj(input.mT)


def _conjugated_H(self):
    """``x.H``: the conjugate transpose of a matrix."""
    return conj(_transpose_H(self))


def _tensor_to(dtype):
    def method(self, memory_format=None):
        return self.to(dtype, memory_format=memory_format)
    return method


def _linear_ops():
    """Ops whose derivative is linear with real coefficients (sums, copies, reshapes, selections, casts):
    the same formula serves complex gradients."""
    from . import autograd
    from .ops import conv, elementwise, index, nn, reduce, shape
    return [autograd._UserOutput, autograd._UserCall,  # (a custom Function's backward gets the gradient as is)
            shape.Reshape, shape.Permute, shape.GetItem, shape.Cat, shape.Expand, shape.Flip, shape.Roll,
            shape.Diagonal, shape.DiagEmbed, shape.IndexPut, shape.Unfold, reduce.Sum,
            reduce.Mean, elementwise.Add, elementwise.Sub, elementwise.Neg, elementwise.Clone, elementwise.AsType,
            elementwise.PromotionCast, elementwise.Where, index.Gather, index.CumSum, index.IndexSelect, index.IndexAdd, index.Scatter,
            index.Repeat, index.IndexCopy, index.IndexFill, index.MaskedScatter, elementwise.AddScaled,
            elementwise.ToDevice, elementwise.ZeroGradientTo, nn.Pad, nn.Dropout, shape.AsStrided,
            shape.AsStridedScatter, conv.Unfold, conv.Fold]


def _holomorphic_ops():
    """Analytic ops (``f(z)`` with a complex derivative ``f'(z)``): their backward, written ``f'(z) * g`` for
    real numbers, serves complex ones through conjugation (the engine's ``_complex_node_backward``)."""
    import importlib
    from .ops import elementwise
    products = importlib.import_module("minilora.ops.matmul")  # (ops.matmul names the function)
    from .ops import conv, index, reduce
    return [elementwise.Mul, elementwise.Div, elementwise.Exp, elementwise.Log, elementwise.Sqrt,
            elementwise.Rsqrt, elementwise.Tanh, elementwise.Sigmoid, elementwise.Sin, elementwise.Cos,
            elementwise.Pow, elementwise.Pointwise, elementwise.Log1p, elementwise.Expm1, elementwise.LogBase,
            elementwise.FusedMulAdd, elementwise.Lerp, products.MatMul, products.Linear, products.Einsum, conv.Conv2d, conv.ConvTranspose2d,
            reduce.Prod, index.CumProd]


for _op in _linear_ops():
    _op.complex_grad = True
for _op in _holomorphic_ops():
    _op.complex_grad = "holomorphic"

# ---- torch.fft (minilora/fft.py names these): FNet's token mixing, Hyena's long convolutions ------------
# Each transform is linear: ``y = A x``. torch's gradient of a real loss through it is ``A^H g``, and the
# adjoint of a DFT is the opposite transform with the "dual" scaling (fft unscaled <-> ifft unscaled, which
# is norm="forward" for ifft; 1/n <-> 1/n; ortho <-> ortho). A real input takes the real part (engine).
_DUAL_NORM = {"backward": "forward", "forward": "backward", "ortho": "ortho"}


def _resized(array, axes, sizes):
    """``array`` cut or zero-padded along ``axes`` to ``sizes`` (torch.fft's ``n``/``s``, and their adjoint)."""
    xp = xp_of(array)
    array = array[tuple(slice(0, sizes[axes.index(a)]) if a in axes else slice(None) for a in range(array.ndim))]
    pad = [(0, max(0, sizes[axes.index(a)] - n)) if a in axes else (0, 0) for a, n in enumerate(array.shape)]
    return xp.pad(array, pad) if any(after for _, after in pad) else array


class FFT(Function):
    """One torch.fft transform over ``axes``: ``kind`` "c2c" (fftn, or ifftn when ``inverse``), "r2c" (rfftn:
    the non-negative frequencies of the last axis) or "c2r" (irfftn: a real signal from its half spectrum)."""
    complex_grad = True

    @staticmethod
    def forward(ctx, x, kind, inverse, axes, sizes, norm):
        ctx.options, ctx.in_sizes = (kind, inverse, axes, sizes, norm), [x.shape[a] for a in axes]
        fft = xp_of(x).fft
        if kind == "c2c":
            return (fft.ifftn if inverse else fft.fftn)(x, s=sizes, axes=axes, norm=norm)
        return (fft.rfftn if kind == "r2c" else fft.irfftn)(x, s=sizes, axes=axes, norm=norm)

    @staticmethod
    def backward(ctx, grad):
        kind, inverse, axes, sizes, norm = ctx.options
        fft, dual = xp_of(grad).fft, _DUAL_NORM[norm]
        if kind == "c2c":
            g = (fft.fftn if inverse else fft.ifftn)(grad, axes=axes, norm=dual)
        elif kind == "r2c":  # the half spectrum's adjoint: zeros for the negative frequencies, then ifft
            g = fft.ifftn(_resized(grad, list(axes), sizes), axes=axes, norm=dual).real
        else:  # torch's fft_c2r_backward: rfft, each frequency that stands for two (k and n - k) doubled
            g = fft.rfftn(grad, axes=axes, norm=dual)
            doubled = sizes[-1] - g.shape[axes[-1]]
            if doubled > 0:
                index = [slice(None)] * g.ndim
                index[axes[-1]] = slice(1, 1 + doubled)
                g[tuple(index)] *= 2
        return _resized(g, list(axes), ctx.in_sizes)


FFT.meta_shape, FFT.meta_dtype = staticmethod(_meta_ops.fft_shape), staticmethod(_meta_ops.fft_dtype)
FFT.meta_order = staticmethod(_meta_ops.fft_order)
# (this module comes after ops/meta.py, whose _attach gave the elementwise ops before it their rule)
Angle.meta_shape = Polar.meta_shape = staticmethod(_meta_ops.broadcast_shape)
Conj.meta_shape, Conj.meta_order = staticmethod(_meta_ops.first_shape), staticmethod(_meta_ops.empty_like_order)


def _transform(name, kind, inverse, input, s, dim, norm):
    """torch.fft's checks and defaults, then one FFT node (named as torch's)."""
    norm = "backward" if norm is None else norm
    if norm not in _DUAL_NORM:
        raise RuntimeError(f'Invalid normalization mode: "{norm}"')
    if kind == "r2c" and is_complex(input):
        raise RuntimeError(f"{name} expects a real input tensor, but got {dtypes.torch_name(input.dtype)}")
    if input.dtype.itemsize == 2 and dtypes.is_floating(input.dtype):  # (torch's CPU transforms: no 16-bit)
        raise RuntimeError(f"Unsupported dtype {dtypes.torch_name(input.dtype)}")
    real_input = not is_complex(input)
    if not dtypes.is_floating(input.dtype) and real_input:
        input = input.to(dtypes.get_default_dtype())  # integers: the default float dtype, as torch
    axes = _fft_axes(input.ndim, s, dim)
    sizes = [input.shape[a] if s is None or s[i] == -1 else s[i] for i, a in enumerate(axes)]
    if kind == "c2r" and (s is None or s[-1] == -1):
        sizes[-1] = 2 * (input.shape[axes[-1]] - 1)  # irfft's default: the even length the half spectrum has
    for n in sizes:
        if n < 1:
            raise RuntimeError(f"Invalid number of data points ({n}) specified")
    if kind != "r2c" and real_input:  # (fft of a real input is torch's R2C node of it: the cast is no node there)
        complex_dtype = dtypes.promote_types(input.dtype, complex64)
        input = ops.elementwise.promotion_cast(input, complex_dtype) if kind == "c2c" else input.to(complex_dtype)
    result = FFT.apply(input, kind=kind, inverse=inverse, axes=tuple(axes), sizes=tuple(sizes), norm=norm)
    node = "FftC2RBackward0" if kind == "c2r" else "FftR2CBackward0" if real_input else "FftC2CBackward0"
    return name_node(result, node, input)


def _fft_axes(ndim, s, dim):
    """The transformed axes (non-negative): ``dim``, or the last ``len(s)`` ones, or all; torch's errors."""
    if s is not None and dim is None:
        if len(s) > ndim:
            raise RuntimeError(f"Got shape with {len(s)} values but input tensor only has {ndim} dimensions.")
        dim = list(range(ndim - len(s), ndim))
    dims = list(range(ndim)) if dim is None else [dim] if isinstance(dim, int) else list(dim)
    if ndim == 0 and dims:
        raise IndexError(f"Dimension specified as {dims[0]} but tensor has no dimensions")
    for d in dims:
        if not -ndim <= d < ndim:
            raise IndexError(f"Dimension out of range (expected to be in range of [{-ndim}, {ndim - 1}], but got {d})")
    axes = [d % ndim for d in dims]
    if len(set(axes)) != len(axes):
        raise RuntimeError("FFT dims must be unique")
    if s is not None and len(s) != len(axes):
        raise RuntimeError("When given, dim and shape arguments must have the same length")
    return axes


def _one_dim(name, kind, inverse):
    def transform(input, n=None, dim=-1, norm=None, *, out=None):
        result = _transform(name, kind, inverse, input, None if n is None else [n], [dim], norm)
        return result if out is None else ops._write_out(lambda: result, name, (), {}, out)
    transform.__name__ = name
    transform.__doc__ = f"``torch.fft.{name}`` over one ``dim`` (``n``: the signal cut or zero-padded to it)."
    return transform


def _many_dims(name, kind, inverse, default_dim):
    def transform(input, s=None, dim=default_dim, norm=None, *, out=None):
        result = _transform(name, kind, inverse, input, None if s is None else list(s), dim, norm)
        return result if out is None else ops._write_out(lambda: result, name, (), {}, out)
    transform.__name__ = name
    transform.__doc__ = f"``torch.fft.{name}`` over ``dim`` (``s``: the signal sizes)."
    return transform


fft, ifft, rfft, irfft = (_one_dim(n, k, i) for n, k, i in (("fft", "c2c", False), ("ifft", "c2c", True),
                                                              ("rfft", "r2c", False), ("irfft", "c2r", True)))
fft2, ifft2, rfft2, irfft2 = (_many_dims(n, k, i, (-2, -1)) for n, k, i in (
    ("fft2", "c2c", False), ("ifft2", "c2c", True), ("rfft2", "r2c", False), ("irfft2", "c2r", True)))
fftn, ifftn, rfftn, irfftn = (_many_dims(n, k, i, None) for n, k, i in (
    ("fftn", "c2c", False), ("ifftn", "c2c", True), ("rfftn", "r2c", False), ("irfftn", "c2r", True)))


def fftfreq(n, d=1.0, *, dtype=None, device=None, requires_grad=False):
    """``torch.fft.fftfreq``: the sample frequencies ``[0, 1, ..., -2, -1] / (d n)``."""
    dtype = _float_dtype_argument("fft_fftfreq", dtype)
    return _frequencies(np.fft.fftfreq(n) * n, n, d, dtype, device, requires_grad)


def rfftfreq(n, d=1.0, *, dtype=None, device=None, requires_grad=False):
    """``torch.fft.rfftfreq``: the non-negative sample frequencies ``[0, 1, ..., n // 2] / (d n)``."""
    dtype = _float_dtype_argument("fft_rfftfreq", dtype)
    return _frequencies(np.arange(n // 2 + 1), n, d, dtype, device, requires_grad)


def _float_dtype_argument(fn, dtype):
    """fftfreq's ``dtype=`` (its out='s dtype): floating or complex, as torch refuses the others (an integer
    frequency would be rounded to 0)."""
    dtype = dtypes.get_default_dtype() if dtype is None else dtypes.dtype_argument(fn, dtype)
    if not (dtypes.is_floating(dtype) or dtype.kind == "c"):
        raise RuntimeError(f"{fn.removeprefix('fft_')} requires a floating point or complex dtype")
    return dtype


def _frequencies(steps, n, d, dtype, device, requires_grad):
    # torch: arange in the dtype, then times 1 / (n d) rounded to the dtype (a float32 product for float32)
    values = steps.astype(dtype) * np.asarray(1.0 / (n * d), dtype=dtype)
    return Tensor(values, dtype=dtype, device=device, requires_grad=requires_grad)


def fftshift(input, dim=None):
    """``torch.fft.fftshift``: the zero frequency moved to the centre (a roll by half of each ``dim``)."""
    dims = list(range(input.ndim)) if dim is None else [dim] if isinstance(dim, int) else list(dim)
    return ops.roll(input, [input.shape[d] // 2 for d in dims], dims)


def ifftshift(input, dim=None):
    """``torch.fft.ifftshift``: ``fftshift`` undone."""
    dims = list(range(input.ndim)) if dim is None else [dim] if isinstance(dim, int) else list(dim)
    return ops.roll(input, [-(input.shape[d] // 2) for d in dims], dims)


# ---- ops torch refuses for complex numbers (no order, no rounding) -----------------------------------
# NumPy would answer them (it orders complex numbers lexicographically, rounds each part): each refuses a
# complex input in its forward instead, in torch's words and exception type. (<, clamp, sign: at their
# wrappers in tensor.py / ops/elementwise.py.)
def _refusing_complex(fn, message_of, error):
    raw = fn.__dict__["forward"]  # a staticmethod, or a classmethod (Remainder's, which Fmod inherits)
    forward = raw.__func__

    def refusal(op, options, dtype):
        return error(message_of(op, options, dtypes.torch_name(dtype)))

    # (the check inline, no call: it runs on every relu / max / maximum of real tensors too)
    if isinstance(raw, classmethod):
        def checked_forward(cls, ctx, *arrays, **options):
            for a in arrays:
                if getattr(a, "dtype", _REAL).kind == "c":
                    raise refusal(cls, options, a.dtype)
            return forward(cls, ctx, *arrays, **options)
        fn.forward = classmethod(checked_forward)
    else:
        def checked_forward(ctx, *arrays, **options):
            for a in arrays:
                if getattr(a, "dtype", _REAL).kind == "c":
                    raise refusal(fn, options, a.dtype)
            return forward(ctx, *arrays, **options)
        fn.forward = staticmethod(checked_forward)


_REAL = np.dtype("float32")  # (what a Python number counts as here: not complex)


def _kernel(name):
    """torch's message for a CPU kernel that has no complex version."""
    return lambda op, options, dtype: f'"{name}" not implemented for \'{dtype}\''


def _refused_ops():
    """(op class, torch's message from (the op's class, the call's options, the dtype's torch name), its
    exception type)."""
    import importlib
    from .ops import elementwise as e
    index, reduce = importlib.import_module("minilora.ops.index"), importlib.import_module("minilora.ops.reduce")
    smallest = {True: "min", False: "max"}
    rounded = {"round": _kernel("round_vml_cpu")}  # (floor, ceil and trunc: torch's own sentence)
    return [(e.Relu, lambda op, o, d: "clamp is not supported for complex types", NotImplementedError),
            (e.LeakyRelu, _kernel("leaky_relu_cpu"), NotImplementedError),
            (e.Gelu, _kernel("GeluKernelImpl"), NotImplementedError),
            (e.Erf, _kernel("erf_vml_cpu"), NotImplementedError),
            (e.XLogY, _kernel("xlogy_cpu"), NotImplementedError),
            (e.Logit, _kernel("logit_cpu"), NotImplementedError),
            (e.Atan2, _kernel("atan2_cpu"), NotImplementedError),
            (e.Maximum, lambda op, o, d: f"{smallest[bool(o.get('smallest'))]}imum not implemented for complex "
                                         f"tensors.", RuntimeError),
            (e._Rounding, lambda op, o, d: rounded.get(o["how"], lambda *_: f"{o['how']} is not supported for "
                                                       f"complex inputs")(op, o, d), NotImplementedError),
            (e.Remainder, lambda op, o, d: _kernel(f"{op.__name__.lower()}_cpu")(op, o, d), NotImplementedError),
            (e.RoundedDiv, lambda op, o, d: _kernel(f"div_{o.get('mode')}_cpu")(op, o, d), NotImplementedError),
            (reduce.AMax, lambda op, o, d: f"{smallest[bool(o.get('smallest'))]} is not supported for complex "
                                           f"tensors, as in torch: take .real, .imag or .abs() first",
             NotImplementedError),  # (torch's kernel, max_all / max_values_cpu / aminmax_cpu, is the caller's)
            (reduce.ArgMax, lambda op, o, d: f"arg{smallest[bool(o.get('smallest'))]}(): does not support complex "
                                             f"input", RuntimeError),
            (index.ArgSort, lambda op, o, d: " Sort does not support complex dtypes on CPU", RuntimeError),
            (index.MedianAll, _kernel("median_cpu"), NotImplementedError)]


for _op, _name_of, _error in _refused_ops():
    _refusing_complex(_op, _name_of, _error)

_transpose_H = Tensor.H.fget  # (tensor.py's H: the transpose, with torch's checks)

Tensor.real = property(real)
Tensor.imag = property(imag)
Tensor.conj = conj
Tensor.conj_physical = conj_physical
Tensor.resolve_conj = resolve_conj
Tensor.resolve_neg = resolve_neg
Tensor.angle = angle
Tensor.is_complex = is_complex
Tensor.H = property(_conjugated_H)
Tensor.mH = property(adjoint)
Tensor.adjoint = adjoint
Tensor.cfloat = _tensor_to(complex64)
Tensor.cdouble = _tensor_to(complex128)
Tensor.conj_physical_ = conj_physical_


# ---- create_graph=True: each op's backward on ops (minilora/ops/higher_order.py's recorded pass) ----------
def _zeros_beside(g):
    return Tensor._make(xp_of(g._array).zeros_like(g._array), g._device, False, None)


def _angle_graph(ctx, g):
    """A real input's angle is piecewise constant: a zero gradient. A complex z's: torch's angle_backward on ops,
    ``where(z == 0, 0, g z / |z|^2 i)`` (so its derivative at z = 0 is torch's nan: 0 through where times inf)."""
    if ctx.z.dtype.kind != "c":
        return _zeros_beside(g)
    from .ops.higher_order import _constant
    z = ctx.inputs[0]
    return ops.where(_constant(ctx.z == 0, g), 0.0, g * z / z.abs() ** 2 * 1j)


def _sgn_graph(ctx, g):
    """sgn of a complex z: torch's sgn_backward on ops, ``(g - Re(g conj(s)) s) / |z|`` with s = sgn(z), filled with
    0 at z = 0 (its derivative there torch's nan); a real input's sign is piecewise constant: zeros, a constant."""
    from .ops.higher_order import _constant
    if ctx.magnitude is None:
        return _constant(xp_of(g._array).zeros(g.shape, g._array.dtype), g)
    z = ctx.inputs[0]
    s = z.sgn()
    return ops.where(_constant(ctx.magnitude == 0, g), 0.0, (g - real(g * conj(s)) * s) / z.abs())


def _fft_graph(ctx, g):
    """A transform is linear over the reals, so its recorded backward is a LinearPair of FFT.backward (torch's
    fft_r2c/c2r/c2c_backward) and that map's adjoint, the transform itself: it differentiates to every order."""
    from .ops import higher_order
    return higher_order._linear_in_each(_fft_again)(ctx, g)


def _fft_again(ctx, d):
    """The node's transform (sizes, axes, norm) of ``d``: the adjoint of its backward."""
    return FFT.forward(types.SimpleNamespace(), d, *ctx.options)


def _polar_graph(ctx, g):
    """torch's polar_backward on ops: ``Re(g conj(sgn(out)))`` with sgn(out) = sign(abs) e^{i angle} (the sign a
    constant, as sgn's derivative along out is 0) and ``Re(g conj(i out))``, out recomputed: both differentiate
    again as torch's."""
    from .ops.higher_order import _constant, sum_to
    r, theta = ctx.inputs
    unit = complex(theta.cos(), theta.sin())
    need_r, need_theta = ctx.needs_input_grad
    grad_r = sum_to(real(g * conj(unit)) * _constant(ctx.abs_sign, g), ctx.shapes[0]) if need_r else None
    grad_theta = sum_to(real(g * conj(polar(r, theta) * 1j)), ctx.shapes[1]) if need_theta else None
    return grad_r, grad_theta


Angle.backward_graph = staticmethod(_angle_graph)
ops.elementwise.Sign.backward_graph = staticmethod(_sgn_graph)
Polar.backward_graph = staticmethod(_polar_graph)
FFT.backward_graph = staticmethod(_fft_graph)
Real.backward_graph = staticmethod(lambda ctx, g: complex(g, _zeros_beside(g)))
Imag.backward_graph = staticmethod(lambda ctx, g: complex(_zeros_beside(g), g))
Conj.backward_graph = staticmethod(lambda ctx, g: conj(g))
ViewAsReal.backward_graph = staticmethod(lambda ctx, g: view_as_complex(g.contiguous()))
ViewAsComplex.backward_graph = staticmethod(lambda ctx, g: view_as_real(g))
