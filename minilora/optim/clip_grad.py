"""``clip_grad_norm_``: rescale all gradients together so their joint norm is at most ``max_norm``.

The total norm is the norm of the vector of all gradient elements of all parameters (computed as
the norm of the per-parameter norms). Clipping multiplies every gradient by
``min(1, max_norm / (total + 1e-6))``: the direction of the update is kept, only its length shrinks.
"""
import math

import numpy as np

from .. import dtypes, linalg
from ..interrupts import held_ctrl_c
from ..tensor import Tensor, no_grad, tensor
from .optimizer import write_in_place

__all__ = ["clip_grad_norm_", "clip_grad_value_", "clip_grads_with_norm_", "get_total_norm"]


def _norm(t, norm_type):
    """``linalg.vector_norm(t, norm_type)`` of a whole tensor, unrecorded: what torch's ``_foreach_norm`` runs for
    each tensor on the CPU, so the squares are added in its kernel's order (a dot product's BLAS order is not it:
    the total norm an ulp off, and every clipped gradient with it)."""
    with no_grad():
        return linalg.vector_norm(t, norm_type)


def clip_grad_norm_(parameters, max_norm, norm_type=2.0, error_if_nonfinite=False, foreach=None):
    """Scale the gradients of ``parameters`` (a Tensor or an iterable of them) so their total
    ``norm_type``-norm is at most ``max_norm``. Returns the total norm *before* clipping, as a
    0-d Tensor (``.item()`` for a float), like ``torch.nn.utils.clip_grad_norm_`` (also reachable
    as ``minilora.nn.utils.clip_grad_norm_``). As torch's, it is ``get_total_norm`` of the gradients,
    then ``clip_grads_with_norm_``. ``foreach`` is accepted and changes nothing: it picks one of
    torch's implementations, and minilora has one.
    """
    parameters = [parameters] if isinstance(parameters, Tensor) else list(parameters)  # (a generator: read once)
    grads = [p.grad for p in parameters if p.grad is not None]
    total = get_total_norm(grads, norm_type, error_if_nonfinite, foreach)
    with held_ctrl_c():  # (torch's one _foreach_mul_: a Ctrl-C lands after every gradient is scaled, or before)
        clip_grads_with_norm_(parameters, max_norm, total, foreach)
    return total


def get_total_norm(tensors, norm_type=2.0, error_if_nonfinite=False, foreach=None):
    """The ``norm_type``-norm of all elements of ``tensors`` (a Tensor or an iterable of them, usually the
    gradients) together, a 0-d Tensor, as ``torch.nn.utils.get_total_norm``: the norm of the per-tensor norms
    (in the promoted dtype: bfloat16 with float32 gives float32)."""
    tensors = [tensors] if isinstance(tensors, Tensor) else list(tensors)
    norm_type = float(norm_type)  # any order, as torch's vector_norm: 0 counts, -inf is the smallest |g|
    if not tensors:
        return tensor(0.0)
    xp = tensors[0].device.xp
    norms = [_norm(t, norm_type)._array for t in tensors]
    dtype = dtypes.result_type(*(n.reshape(1) for n in norms))  # torch.stack promotes: bf16 with fp32 is fp32
    stacked = Tensor._make(xp.stack([n.astype(dtype) for n in norms]), tensors[0].device, False, None)
    total = _norm(stacked, norm_type)._array
    if error_if_nonfinite and not math.isfinite(float(total)):
        raise RuntimeError(f"The total norm of order {float(norm_type)} for gradients from `parameters` is "
                           f"non-finite, so it cannot be clipped. To disable this error and scale the gradients "
                           f"by the non-finite norm anyway, set `error_if_nonfinite=False`")
    return Tensor._make(xp.asarray(total), tensors[0].device, False, None)


def clip_grads_with_norm_(parameters, max_norm, total_norm, foreach=None):
    """Scale the gradients of ``parameters`` by ``min(1, max_norm / (total_norm + 1e-6))``, in place, as
    ``torch.nn.utils.clip_grads_with_norm_`` (``total_norm``: a 0-d Tensor, e.g. from ``get_total_norm``)."""
    params = [p for p in ([parameters] if isinstance(parameters, Tensor) else parameters) if p.grad is not None]
    if not params:
        return
    total = total_norm._array if isinstance(total_norm, Tensor) else np.asarray(total_norm)
    # EXERCISE 6.2: scale every gradient so the total norm is at most max_norm
    # BEGIN SOLUTION
    coef = _clip_coef(max_norm, total)  # min(max_norm / (total + 1e-6), 1); NaN stays NaN, as in torch
    for p in params:
        # In place, as torch's g.mul_(coef): code holding g = p.grad sees the clipped values. (So a
        # tensor set as two parameters' .grad, p.grad = q.grad = g, is scaled twice, as in torch.)
        write_in_place(p.grad, _scaled(p.grad._array, coef))
    # END SOLUTION


def _clip_coef(max_norm, total):
    """``clamp(max_norm / (total + 1e-6), max=1.0)`` as torch computes it, with tensor ops in the total norm's
    dtype: ``number / tensor`` is Tensor.__rdiv__, ``tensor.reciprocal() * number``, so the reciprocal is rounded
    before the product (``max_norm / (total + 1e-6)`` in one float64 division was an ulp off torch's float32
    coefficient for one total in five). A 16-bit total adds and multiplies in float32, its scalars unrounded,
    each result rounded to its dtype."""
    kind = total.dtype
    compute = np.float32 if kind.itemsize == 2 else kind.type
    denominator = np.asarray(compute(float(total)) + compute(1e-6)).astype(kind)
    with np.errstate(divide="ignore"):  # (a zero denominator: inf, as torch's reciprocal)
        reciprocal = np.asarray(compute(1) / compute(float(denominator))).astype(kind)
    coef = np.asarray(compute(float(reciprocal)) * compute(float(max_norm))).astype(kind)
    return min(float(coef), 1.0)  # (min keeps a NaN first argument: NaN stays NaN)


def _scaled(grad, coef):
    """``grad * coef`` (a new array): a 16-bit gradient is multiplied in float32 and rounded once, as
    torch's ``g.mul_(clip_coef)`` (NumPy would round ``coef`` to bfloat16 first)."""
    if coef == 0.0:  # the norm was infinite: an infinite element times 0 is NaN, as torch's (which says nothing)
        with np.errstate(invalid="ignore"):
            return _times(grad, coef)
    return _times(grad, coef)


def _times(grad, coef):
    if grad.dtype.itemsize == 2 and dtypes.is_floating(grad.dtype):
        return (dtypes.upcast(grad) * np.float32(coef)).astype(grad.dtype)
    return grad * coef


def clip_grad_value_(parameters, clip_value, foreach=None):
    """Clamp every gradient element of ``parameters`` into ``[-clip_value, clip_value]``, in place, as
    ``torch.nn.utils.clip_grad_value_`` (returns None)."""
    if isinstance(parameters, Tensor):
        parameters = [parameters]
    clip_value = float(clip_value)
    with held_ctrl_c():  # (torch's foreach clamps: a Ctrl-C lands after every gradient is clamped, or before)
        for p in parameters:
            if p.grad is not None:
                write_in_place(p.grad, _clamped(p.grad._array, clip_value))


def _clamped(grad, clip_value):
    """``grad.clamp_(-clip_value, clip_value)`` as torch's: the bounds rounded to the gradient's dtype first (a
    bfloat16 gradient is clamped to bfloat16(0.1) = 0.10009765625), the result in that dtype. (With
    ``clip_value < 0`` every element becomes ``clip_value``, as torch's clamp with min > max.)"""
    low, high = (grad.dtype.type(bound) for bound in (-clip_value, clip_value))
    return grad.clip(low, high).astype(grad.dtype, copy=False)
