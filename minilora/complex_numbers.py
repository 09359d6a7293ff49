"""Complex tensors, as far as ``torch.linalg.eig`` / ``eigvals`` need them: a matrix with real entries can
have complex eigenvalues, so those return complex64 / complex128 tensors (NumPy's complex arrays), and
these ops turn them back into real ones, with torch's derivatives:

    L = ml.linalg.eigvals(A)           # complex128 for a float64 A
    L.abs().max()                      # spectral radius (abs of a complex tensor is real)
    L.real, L.imag, L.angle(), ml.view_as_real(L), L.conj()

torch's convention for the gradient of a real loss with respect to a complex ``z = x + iy`` is
``dL/dx + i dL/dy`` (its conjugate Wirtinger derivative, doubled); a real input's gradient is the real
part of what reaches it (the engine's ``_fit``).

minilora's other ops compute complex values in the forward pass (NumPy does), but their derivatives are
written for real numbers (``a * b``'s would need ``conj(b)``): a complex gradient reaching one of them
raises at ``backward()`` instead of returning a wrong gradient. The ops below, and the ones
``_linear_ops()`` names (their derivative is linear with real coefficients, so the same for complex
numbers), take complex gradients: each sets ``Function.complex_grad``.
"""
import numpy as np

from . import dtypes, ops
from .device import xp_of
from .tensor import Function, Tensor, name_node

complex64 = cfloat = np.dtype("complex64")
complex128 = cdouble = np.dtype("complex128")


class Real(Function):
    complex_grad = True

    @staticmethod
    def forward(ctx, z):
        ctx.dtype = z.dtype
        return xp_of(z).real(z).copy()

    @staticmethod
    def backward(ctx, grad):  # d/dx of Re(x + iy): 1, d/dy: 0
        return grad.astype(ctx.dtype)


class Imag(Function):
    complex_grad = True

    @staticmethod
    def forward(ctx, z):
        ctx.dtype = z.dtype
        return xp_of(z).imag(z).copy()

    @staticmethod
    def backward(ctx, grad):  # d/dx of Im(x + iy): 0, d/dy: 1
        return (grad * 1j).astype(ctx.dtype)


class Conj(Function):
    complex_grad = True

    @staticmethod
    def forward(ctx, z):
        return xp_of(z).conj(z)

    @staticmethod
    def backward(ctx, grad):
        return xp_of(grad).conj(grad)


class Angle(Function):
    complex_grad = True

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


class ViewAsReal(Function):
    complex_grad = True

    @staticmethod
    def forward(ctx, z):
        ctx.dtype = z.dtype
        return xp_of(z).stack([z.real, z.imag], axis=-1)

    @staticmethod
    def backward(ctx, grad):
        return (grad[..., 0] + 1j * grad[..., 1]).astype(ctx.dtype)


class ViewAsComplex(Function):
    complex_grad = True

    @staticmethod
    def forward(ctx, x):
        return (x[..., 0] + 1j * x[..., 1]).astype(np.complex64 if x.dtype == np.float32 else np.complex128)

    @staticmethod
    def backward(ctx, grad):
        return xp_of(grad).stack([grad.real, grad.imag], axis=-1)


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
    result = name_node(Angle.apply(input), "AngleBackward0", input)
    return result if out is None else ops._write_out(lambda: result, "angle", (), {}, out)


def view_as_real(input):
    """``torch.view_as_real``: a complex tensor as real pairs (..., 2). A copy here, not a view."""
    if not is_complex(input):
        raise RuntimeError("view_as_real is only supported for complex tensors")
    return name_node(ViewAsReal.apply(input), "ViewAsRealBackward0", input)


def _refuse_complex_half(name, dtype):
    """torch makes complex32 (ComplexHalf) of float16 pairs; NumPy has no such dtype."""
    if dtype == np.float16:
        raise NotImplementedError(f"{name} of float16 tensors (torch's complex32) is not implemented in minilora: "
                                  f"NumPy has no complex dtype of 16-bit halves; convert to float32 first")


def view_as_complex(input):
    """``torch.view_as_complex``: real pairs (..., 2) of float32 / float64 as complex numbers. A copy here."""
    _refuse_complex_half("view_as_complex", input.dtype)
    if input.dtype not in (np.float32, np.float64):
        raise RuntimeError(f"view_as_complex is only supported for half, float and double tensors, but got a tensor "
                           f"of scalar type: {dtypes.torch_name(input.dtype)}")
    if input.ndim == 0 or input.shape[-1] != 2:
        raise RuntimeError("Tensor must have a last dimension of size 2")
    return name_node(ViewAsComplex.apply(input), "ViewAsComplexBackward0", input)


def complex(real, imag, *, out=None):  # noqa: A001  (torch's name)
    """``torch.complex``: ``real + i imag`` from two float32 (complex64) or float64 (complex128) tensors."""
    if real.dtype == imag.dtype:
        _refuse_complex_half("complex", real.dtype)
    if real.dtype != imag.dtype or real.dtype not in (np.float32, np.float64):
        raise RuntimeError(f"Expected both inputs to be Half, Float or Double tensors but got "
                           f"{dtypes.torch_name(real.dtype)} and {dtypes.torch_name(imag.dtype)}")
    shape = tuple(np.broadcast_shapes(real.shape, imag.shape))
    result = view_as_complex(ops.stack([real.expand(shape), imag.expand(shape)], -1))
    return result if out is None else ops._write_out(lambda: result, "complex", (), {}, out)


def _linear_ops():
    """Ops whose derivative is linear with real coefficients (sums, copies, reshapes, selections): the same
    formula serves complex gradients."""
    from .ops import elementwise, reduce, shape
    return [shape.Reshape, shape.Permute, shape.GetItem, shape.Cat, shape.Expand, shape.Flip, shape.Roll,
            shape.Diagonal, shape.DiagEmbed, reduce.Sum, reduce.Mean, elementwise.Add, elementwise.Sub,
            elementwise.Neg, elementwise.Clone]


for _op in _linear_ops():
    _op.complex_grad = True

Tensor.real = property(real)
Tensor.imag = property(imag)
Tensor.conj = conj
Tensor.angle = angle
Tensor.is_complex = is_complex
