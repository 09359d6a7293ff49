"""``torch.signal.windows``: SciPy's window functions as torch computes them -- the same compositions of
``linspace``, ``cos``, ``exp``, ``i0`` ..., in the same order, so float32 windows are torch's bits. Only float32
and float64 (torch's rule); a window of length 0 is empty, of length 1 a one."""
import math
from collections.abc import Iterable

import numpy as np

from .. import ops
from ..dtypes import float32, float64, get_default_dtype, is_dtype_object, to_dtype
from .. import arange, empty, linspace, ones, tensor  # (loaded on first use, after the package itself)

__all__ = ["bartlett", "blackman", "cosine", "exponential", "gaussian", "general_cosine", "general_hamming", "hamming",
           "hann", "kaiser", "nuttall"]


def _checks(function_name, M, dtype, layout):
    """torch's ``_window_function_checks``: the default dtype resolved, then checked."""
    dtype = get_default_dtype() if dtype is None else dtype
    if is_dtype_object(dtype) and not isinstance(dtype, type):  # (torch.float64 too; a name or a type is not one)
        dtype = to_dtype(dtype)
    if M < 0:
        raise ValueError(f"{function_name} requires non-negative window length, got M={M}")
    if layout is not None and str(layout) != "torch.strided":
        raise ValueError(f"{function_name} is implemented for strided tensors only, got: {layout}")
    if not (isinstance(dtype, np.dtype) and dtype in (float32, float64)):  # ('float32' == float32 in NumPy)
        got = f"torch.{dtype}" if isinstance(dtype, np.dtype) else dtype
        raise ValueError(f"{function_name} expects float32 or float64 dtypes, got: {got}")
    return dtype


def _short(M, dtype, device, requires_grad, *, one_point=True):
    if M == 0:
        return empty((0,), dtype=dtype, device=device, requires_grad=requires_grad)
    if M == 1 and one_point:
        return ones((1,), dtype=dtype, device=device, requires_grad=requires_grad)
    return None


def exponential(M, *, center=None, tau=1.0, sym=True, dtype=None, layout=None, device=None, requires_grad=False):
    dtype = _checks("exponential", M, dtype, layout)
    if tau <= 0:
        raise ValueError(f"Tau must be positive, got: {tau} instead.")
    if sym and center is not None:
        raise ValueError("Center must be None for symmetric windows")
    if (short := _short(M, dtype, device, requires_grad, one_point=False)) is not None:
        return short
    if center is None:
        center = (M if not sym and M > 1 else M - 1) / 2.0
    constant = 1 / tau
    k = linspace(-center * constant, (-center + (M - 1)) * constant, M, dtype=dtype, device=device,
                 requires_grad=requires_grad)
    return ops.exp(-ops.abs(k))


def cosine(M, *, sym=True, dtype=None, layout=None, device=None, requires_grad=False):
    dtype = _checks("cosine", M, dtype, layout)
    if (short := _short(M, dtype, device, requires_grad, one_point=False)) is not None:
        return short
    start = 0.5
    constant = math.pi / (M + 1 if not sym and M > 1 else M)
    k = linspace(start * constant, (start + (M - 1)) * constant, M, dtype=dtype, device=device,
                 requires_grad=requires_grad)
    return ops.sin(k)


def gaussian(M, *, std=1.0, sym=True, dtype=None, layout=None, device=None, requires_grad=False):
    dtype = _checks("gaussian", M, dtype, layout)
    if std <= 0:
        raise ValueError(f"Standard deviation must be positive, got: {std} instead.")
    if (short := _short(M, dtype, device, requires_grad, one_point=False)) is not None:
        return short
    start = -(M if not sym and M > 1 else M - 1) / 2.0
    constant = 1 / (std * math.sqrt(2))
    k = linspace(start * constant, (start + (M - 1)) * constant, M, dtype=dtype, device=device,
                 requires_grad=requires_grad)
    return ops.exp(-k ** 2)


def kaiser(M, *, beta=12.0, sym=True, dtype=None, layout=None, device=None, requires_grad=False):
    dtype = _checks("kaiser", M, dtype, layout)
    if beta < 0:
        raise ValueError(f"beta must be non-negative, got: {beta} instead.")
    if (short := _short(M, dtype, device, requires_grad)) is not None:
        return short
    beta = tensor(beta, dtype=dtype, device=device)  # (torch computes the ends as tensors of the window's dtype)
    start = -beta
    constant = 2.0 * beta / (M if not sym else M - 1)
    end = ops.minimum(beta, start + (M - 1) * constant)
    k = linspace(start, end, M, dtype=dtype, device=device, requires_grad=requires_grad)
    return ops.special.i0(ops.sqrt(beta * beta - ops.pow(k, 2))) / ops.special.i0(beta)


def hamming(M, *, sym=True, dtype=None, layout=None, device=None, requires_grad=False):
    return general_hamming(M, sym=sym, dtype=dtype, layout=layout, device=device, requires_grad=requires_grad)


def hann(M, *, sym=True, dtype=None, layout=None, device=None, requires_grad=False):
    return general_hamming(M, alpha=0.5, sym=sym, dtype=dtype, layout=layout, device=device,
                           requires_grad=requires_grad)


def blackman(M, *, sym=True, dtype=None, layout=None, device=None, requires_grad=False):
    dtype = _checks("blackman", M, dtype, layout)
    return general_cosine(M, a=[0.42, 0.5, 0.08], sym=sym, dtype=dtype, layout=layout, device=device,
                          requires_grad=requires_grad)


def bartlett(M, *, sym=True, dtype=None, layout=None, device=None, requires_grad=False):
    dtype = _checks("bartlett", M, dtype, layout)
    if (short := _short(M, dtype, device, requires_grad)) is not None:
        return short
    start = -1
    constant = 2 / (M if not sym else M - 1)
    k = linspace(start, start + (M - 1) * constant, M, dtype=dtype, device=device, requires_grad=requires_grad)
    return 1 - ops.abs(k)


def general_cosine(M, *, a, sym=True, dtype=None, layout=None, device=None, requires_grad=False):
    dtype = _checks("general_cosine", M, dtype, layout)
    if (short := _short(M, dtype, device, requires_grad)) is not None:
        return short
    if not isinstance(a, Iterable):
        raise TypeError("Coefficients must be a list/tuple")
    if not a:
        raise ValueError("Coefficients cannot be empty")
    constant = 2 * math.pi / (M if not sym else M - 1)
    k = linspace(0, (M - 1) * constant, M, dtype=dtype, device=device, requires_grad=requires_grad)
    a_i = tensor([(-1) ** i * w for i, w in enumerate(a)], device=device, dtype=dtype, requires_grad=requires_grad)
    i = arange(a_i.shape[0], dtype=a_i.dtype, device=device, requires_grad=a_i.requires_grad)
    return (a_i.unsqueeze(-1) * ops.cos(i.unsqueeze(-1) * k)).sum(0)


def general_hamming(M, *, alpha=0.54, sym=True, dtype=None, layout=None, device=None, requires_grad=False):
    return general_cosine(M, a=[alpha, 1.0 - alpha], sym=sym, dtype=dtype, layout=layout, device=device,
                          requires_grad=requires_grad)


def nuttall(M, *, sym=True, dtype=None, layout=None, device=None, requires_grad=False):
    return general_cosine(M, a=[0.3635819, 0.4891775, 0.1365995, 0.0106411], sym=sym, dtype=dtype, layout=layout,
                          device=device, requires_grad=requires_grad)
