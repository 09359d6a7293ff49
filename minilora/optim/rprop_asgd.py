"""Rprop and ASGD, as ``torch.optim`` computes them.

* ``Rprop`` (resilient backpropagation) ignores the gradient's size and keeps only its sign: each weight has
  its own step size, grown by ``etas[1]`` while the gradient keeps its sign and shrunk by ``etas[0]`` when
  it flips (the last step jumped over a minimum; that step's gradient then counts as zero), clamped to
  ``step_sizes``. Made for full-batch training: mini-batch noise flips signs at random.
* ``ASGD`` (averaged SGD) takes plain SGD steps with a slowly decaying learning rate ``eta`` and keeps a
  running average of the weights in ``ax`` (from step ``t0`` on; before it ``ax`` is the weights). The
  average, not the weights, is the answer it converges to (Polyak & Juditsky).

Both follow torch's single-tensor code op for op (float16/bfloat16: each op in float32, rounded once, through
``adagrad_rmsprop._Arithmetic``).
"""
import numpy as np

from ..device import xp_of
from ..ops.elementwise import _torch_sign
from .adagrad_rmsprop import _Arithmetic, _gradient, _StepEach
from .optimizer import _as_number, _check_range, learning_rate, new_step_count

__all__ = ["Rprop", "ASGD"]


class Rprop(_StepEach):
    """``Rprop(params, lr=1e-2, etas=(0.5, 1.2), step_sizes=(1e-6, 50), *, capturable=False, foreach=None,
    maximize=False, differentiable=False)``, as in PyTorch. State per trained parameter: ``step``, ``prev``
    (the last gradient used) and ``step_size`` (each weight's own, starting at ``lr``)."""

    def __init__(self, params, lr=1e-2, etas=(0.5, 1.2), step_sizes=(1e-6, 50), *, capturable=False, foreach=None,
                 maximize=False, differentiable=False):
        super().__init__(params, dict(lr=lr, etas=etas, step_sizes=step_sizes, foreach=foreach, maximize=maximize,
                                      differentiable=differentiable, capturable=capturable))

    def _check_group(self, group, index):
        super()._check_group(group, index)
        etaminus, etaplus = group["etas"]
        if not 0.0 < etaminus < 1.0 < etaplus:
            raise ValueError(f"Invalid eta values: {etaminus}, {etaplus} (need 0 < etas[0] < 1 < etas[1]; "
                             f"parameter group {index})")

    @staticmethod
    def _new_state(p, group):
        xp = p.device.xp
        return dict(step=new_step_count(), prev=xp.zeros_like(p._array),
                    step_size=xp.full(p.shape, float(_as_number(group["lr"])), dtype=p.grad.dtype))

    @staticmethod
    def _update(p, state, group):
        ops, dtype = _Arithmetic(p.dtype), p.dtype
        xp = p.device.xp
        etaminus, etaplus = group["etas"]
        grad = ops.load(p.grad._array)
        if group["maximize"]:
            grad = -grad
        sign = _torch_sign(ops.rounded(grad * ops.load(state["prev"])))  # (0 at a NaN: NumPy's sign is NaN there)
        # torch writes etaplus / etaminus / 1 into the sign tensor (so they are rounded to its dtype)
        factor = xp.where(sign > 0, etaplus, xp.where(sign < 0, etaminus, 1.0)).astype(dtype)
        low, high = group["step_sizes"]
        step_size = ops.rounded(xp.clip(ops.rounded(ops.load(state["step_size"]) * ops.load(factor)), low, high))
        state["step_size"][...] = step_size
        # where the sign flipped, this step's gradient counts as zero (no step, and no flip next time)
        grad = xp.where(factor == xp.asarray(etaminus).astype(dtype), 0, grad).astype(grad.dtype)
        p._array[...] = ops.addcmul(ops.load(p._array), _torch_sign(grad), step_size, -1)
        state["prev"][...] = grad



class ASGD(_StepEach):
    """``ASGD(params, lr=1e-2, lambd=1e-4, alpha=0.75, t0=1e6, weight_decay=0, foreach=None, maximize=False,
    differentiable=False, capturable=False)``, as in PyTorch. State per trained parameter: ``step``, ``eta``
    (the current learning rate), ``mu`` (the averaging weight) -- both 0-d float32, as torch's -- and ``ax``
    (the averaged weights)."""

    def __init__(self, params, lr=1e-2, lambd=1e-4, alpha=0.75, t0=1e6, weight_decay=0, foreach=None, maximize=False,
                 differentiable=False, capturable=False):
        super().__init__(params, dict(lr=lr, lambd=lambd, alpha=alpha, t0=t0, weight_decay=weight_decay,
                                      foreach=foreach, maximize=maximize, differentiable=differentiable,
                                      capturable=capturable))

    def _check_group(self, group, index):
        super()._check_group(group, index)
        _check_range(group, index, "weight_decay", low=0.0)

    @staticmethod
    def _new_state(p, group):
        return dict(step=new_step_count(), eta=np.array(learning_rate(group), dtype=np.float32),
                    mu=np.ones((), dtype=np.float32), ax=p.device.xp.zeros_like(p._array))

    @staticmethod
    def _update(p, state, group):
        ops = _Arithmetic(p.dtype)
        lr, lambd, alpha = learning_rate(group), group["lambd"], group["alpha"]
        grad = _gradient(p, group, ops)
        eta, mu = float(state["eta"]), state["mu"]
        if group["foreach"]:
            _foreach_update(p, state, ops, grad, lambd, eta, float(mu))
        else:
            _single_tensor_update(p, state, ops, grad, lambd, eta, mu)
        step = float(state["step"])
        # torch makes each new value a float32 tensor (torch.as_tensor of a Python float), then copies it into
        # the state's 0-d tensor (float32; the parameter's dtype after a load_state_dict): float32 precision
        eta = _eta_in_float32(lr, lambd, alpha, step) if group["foreach"] else lr / ((1 + lambd * lr * step) ** alpha)
        state["eta"] = _as_float32_into(eta, state["eta"])
        state["mu"] = _as_float32_into(1 / max(1, step - group["t0"]), mu)


def _single_tensor_update(p, state, ops, grad, lambd, eta, mu):
    """torch's single-tensor ASGD: ``param.mul_(1 - lambd * eta)``, ``param.add_(grad, alpha=-eta)``, then the
    average ``ax``."""
    param = ops.rounded(ops.load(p._array) * (1 - lambd * eta))  # the decay term
    param = ops.add(param, -eta, grad)
    p._array[...] = param
    if float(mu) != 1:  # averaging: ax += (p - ax) * mu
        ax = ops.load(state["ax"])
        state["ax"][...] = ops.rounded(ax + ops.rounded(ops.rounded(param - ax) * mu))
    else:  # (before t0: ax is the weights)
        state["ax"][...] = p._array


def _foreach_update(p, state, ops, grad, lambd, eta, mu):
    """torch's multi-tensor ASGD: ``param.addcmul_(grad + lambd * param, eta, value=-1)`` and, whatever mu,
    ``ax.addcmul_(param - ax, mu)``; eta and mu are 0-d float32 tensors, so they take the parameter's dtype (a
    16-bit one rounds them) and each ``addcmul_`` is one fused multiply-add where torch's build fuses."""
    param = ops.load(p._array)
    intermediate = ops.add(grad, lambd, param)
    param = ops.addcmul(param, intermediate, _filled(intermediate, ops.alpha(eta)), -1)
    p._array[...] = param
    ax = ops.load(state["ax"])
    difference = ops.rounded(param - ax)
    state["ax"][...] = ops.addcmul(ax, difference, _filled(difference, ops.alpha(mu)), 1)


def _filled(like, number):
    """An array of ``like``'s shape and dtype full of ``number``: a 0-d tensor's value as ATen's kernels see it
    (an array operand, so the multiply-add is fused as theirs)."""
    return xp_of(like).full_like(like, number)


def _eta_in_float32(lr, lambd, alpha, step):
    """The next eta as torch's ``foreach=True`` ASGD computes it: ``lr / ((1 + lambd * lr * step) ** alpha)`` with
    ``step`` its float32 step tensor, so every op after ``lambd * lr`` is a float32 tensor op (``pow`` computes in
    double and rounds; ``number / tensor`` is ``tensor.reciprocal() * number``). The single-tensor code (the default
    on the CPU) computes it in Python floats instead."""
    f32 = np.float32
    base = f32(1) + f32(lambd * lr) * f32(step)
    return (f32(1) / f32(np.float64(base) ** alpha)) * f32(lr)


def _as_float32_into(number, old):
    """``old.copy_(torch.as_tensor(number))``: ``number`` rounded to float32, then to ``old``'s dtype."""
    return np.asarray(np.float32(number)).astype(np.asarray(old).dtype)
