"""Adamax, NAdam and RAdam: three variations on Adam's update, as ``torch.optim`` computes them.

All three keep Adam's running mean of the gradient (``exp_avg``); they differ in what divides it:

* ``Adamax`` replaces the root of the mean squared gradient by a running *maximum* of ``|g|``
  (``exp_inf = max(beta2 * exp_inf, |g| + eps)``): the infinity norm instead of the 2-norm.
* ``NAdam`` adds Nesterov momentum: the step looks ahead with the *next* momentum coefficient ``mu_next``,
  which warms up over the first steps (``momentum_decay``); their running product is ``mu_product``.
* ``RAdam`` (rectified Adam) takes plain momentum steps while the variance estimate is still unreliable
  (the first few steps, until ``rho_t > 5``), then Adam steps scaled by a rectification term.

The updates follow torch's single-tensor code op for op (float16/bfloat16: each op in float32, rounded once,
through ``adagrad_rmsprop._Arithmetic``). ``decoupled_weight_decay=True`` (NAdam, RAdam) shrinks the weights
as AdamW does instead of adding ``weight_decay * p`` to the gradient.
"""
import math

import numpy as np

from ..device import xp_of
from ..tensor import Tensor
from .adagrad_rmsprop import _Arithmetic, _gradient, _StepEach
from .optimizer import _check_adam_hyperparameters, _check_range, learning_rate, new_step_count

__all__ = ["Adamax", "NAdam", "RAdam"]


class _AdamFamily(_StepEach):
    """What the three share: Adam's hyperparameter checks and ``exp_avg``."""
    _tensors_kept = _StepEach._tensors_kept + ("betas",)  # (a Tensor beta computed with as a Tensor, as torch)

    def _check_group(self, group, index):
        given = group["betas"]
        super()._check_group(group, index)
        _check_adam_hyperparameters(group, index)
        if isinstance(given, (tuple, list)) and any(isinstance(beta, Tensor) for beta in given):
            # torch keeps a Tensor beta and computes with it: 1 - beta1, beta1 ** step and the step sizes made
            # of them are float32 0-d tensors, so a float32 beta's rounding reaches the float64 weights
            group["betas"] = type(given)(beta if isinstance(beta, Tensor) else number
                                         for beta, number in zip(given, group["betas"]))

    @staticmethod
    def _decay_weights(p, group, ops):
        """``decoupled_weight_decay``: ``p *= 1 - lr * weight_decay`` before the step, as AdamW."""
        if group["weight_decay"] and group.get("decoupled_weight_decay"):
            p._array[...] = ops.times(ops.load(p._array), 1 - learning_rate(group) * group["weight_decay"])

    @staticmethod
    def _l2_group(group):
        """The group as ``_gradient`` should see it: no L2 term when the decay is decoupled."""
        return dict(group, weight_decay=0.0) if group.get("decoupled_weight_decay") else group


class Adamax(_AdamFamily):
    """``Adamax(params, lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, foreach=None, *,
    maximize=False, differentiable=False, capturable=False)``, as in PyTorch."""

    def __init__(self, params, lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, foreach=None, *,
                 maximize=False, differentiable=False, capturable=False):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, foreach=foreach,
                                      maximize=maximize, differentiable=differentiable, capturable=capturable))

    @staticmethod
    def _new_state(p, group):
        xp = p.device.xp
        return dict(step=new_step_count(), exp_avg=xp.zeros_like(p._array), exp_inf=xp.zeros_like(p._array))

    def _update(self, p, state, group):
        ops = _Arithmetic(p.dtype, group["foreach"])
        beta1, beta2 = group["betas"]
        grad = _gradient(p, group, ops)
        exp_avg = ops.lerp(ops.load(state["exp_avg"]), grad, 1 - beta1)
        decayed = ops.times(ops.load(state["exp_inf"]), beta2)
        exp_inf = xp_of(decayed).maximum(decayed, ops.plus(ops.rounded(abs(grad)), group["eps"]))
        state["exp_avg"][...], state["exp_inf"][...] = exp_avg, exp_inf
        step_size = learning_rate(group) / (1 - beta1 ** float(state["step"]))
        p._array[...] = ops.addcdiv(ops.load(p._array), exp_avg, exp_inf, -step_size)


class NAdam(_AdamFamily):
    """``NAdam(params, lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, momentum_decay=4e-3,
    decoupled_weight_decay=False, *, foreach=None, maximize=False, capturable=False, differentiable=False)``,
    as in PyTorch. ``mu_product`` is kept as torch keeps it: a float32 number."""

    def __init__(self, params, lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, momentum_decay=4e-3,
                 decoupled_weight_decay=False, *, foreach=None, maximize=False, capturable=False,
                 differentiable=False):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                      momentum_decay=momentum_decay, decoupled_weight_decay=decoupled_weight_decay,
                                      maximize=maximize, foreach=foreach, capturable=capturable,
                                      differentiable=differentiable))

    def _check_group(self, group, index):
        super()._check_group(group, index)
        _check_range(group, index, "momentum_decay", low=0.0)

    @staticmethod
    def _new_state(p, group):
        xp = p.device.xp
        return dict(step=new_step_count(), mu_product=np.float32(1.0), exp_avg=xp.zeros_like(p._array),
                    exp_avg_sq=xp.zeros_like(p._array))

    def _update(self, p, state, group):
        ops = _Arithmetic(p.dtype, group["foreach"])
        beta1, beta2 = group["betas"]
        lr, step, decay = learning_rate(group), float(state["step"]), group["momentum_decay"]
        grad = _gradient(p, self._l2_group(group), ops)
        self._decay_weights(p, group, ops)
        # the momentum coefficient of this step and of the next (Nesterov's look-ahead), warming up
        mu = beta1 * (1.0 - 0.5 * (0.96 ** (step * decay)))
        mu_next = beta1 * (1.0 - 0.5 * (0.96 ** ((step + 1) * decay)))
        mu_product = _times_in_own_dtype(state["mu_product"], mu)  # torch: mu_product *= mu, a 0-d tensor
        state["mu_product"] = mu_product
        exp_avg = ops.lerp(ops.load(state["exp_avg"]), grad, 1 - beta1)
        exp_avg_sq = ops.addcmul(ops.times(ops.load(state["exp_avg_sq"]), beta2), grad, grad, 1 - beta2)
        state["exp_avg"][...], state["exp_avg_sq"][...] = exp_avg, exp_avg_sq
        if ops.foreach:  # torch's multi-tensor NAdam: sqrt(v) / sqrt(1 - beta2 ** step)
            denom = ops.divided(ops.rounded(ops.sqrt(exp_avg_sq)), (1 - beta2 ** step) ** 0.5)
        else:  # its single-tensor one: sqrt(v / (1 - beta2 ** step))
            denom = ops.rounded(ops.sqrt(ops.divided(exp_avg_sq, 1 - beta2 ** step)))
        denom = ops.plus(denom, group["eps"])
        param = ops.addcdiv(ops.load(p._array), grad, denom, -lr * (1.0 - mu) / (1.0 - float(mu_product)))
        next_product = float(mu_product) * mu_next
        p._array[...] = ops.addcdiv(param, exp_avg, denom, (-lr * mu_next) / (1.0 - next_product))


def _number(value):
    """A 0-d Tensor (a hyperparameter computed from a Tensor beta) as the NumPy scalar of its dtype, for the arrays'
    arithmetic (a float32 scalar leaves a float64 array float64, as torch's 0-d operand); anything else as it is."""
    return value._array[()] if isinstance(value, Tensor) else value


def _times_in_own_dtype(number, factor):
    """``number * factor`` as torch's in-place product of a 0-d tensor and a Python number: in the number's
    dtype (float32 from the start; the parameter's dtype after a ``load_state_dict``, which casts it, as
    torch's), a 16-bit one computed in float32 and rounded once."""
    dtype = np.asarray(number).dtype
    compute = np.dtype(np.float32) if dtype.itemsize == 2 else dtype
    return (np.asarray(number).astype(compute) * compute.type(factor)).astype(dtype)[()]


class RAdam(_AdamFamily):
    """``RAdam(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, decoupled_weight_decay=False, *,
    foreach=None, maximize=False, capturable=False, differentiable=False)``, as in PyTorch."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, decoupled_weight_decay=False,
                 *, foreach=None, maximize=False, capturable=False, differentiable=False):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, foreach=foreach,
                                      maximize=maximize, capturable=capturable,
                                      decoupled_weight_decay=decoupled_weight_decay, differentiable=differentiable))

    @staticmethod
    def _new_state(p, group):
        xp = p.device.xp
        return dict(step=new_step_count(), exp_avg=xp.zeros_like(p._array), exp_avg_sq=xp.zeros_like(p._array))

    def _update(self, p, state, group):
        ops = _Arithmetic(p.dtype, group["foreach"])
        beta1, beta2 = group["betas"]
        lr, step = learning_rate(group), float(state["step"])
        grad = _gradient(p, self._l2_group(group), ops)
        self._decay_weights(p, group, ops)
        exp_avg = ops.lerp(ops.load(state["exp_avg"]), grad, 1 - beta1)
        exp_avg_sq = ops.addcmul(ops.times(ops.load(state["exp_avg_sq"]), beta2), grad, grad, 1 - beta2)
        state["exp_avg"][...], state["exp_avg_sq"][...] = exp_avg, exp_avg_sq
        bias_correction1, bias_correction2 = 1 - beta1 ** step, 1 - beta2 ** step
        rho_inf = 2 / (1 - beta2) - 1  # the longest the variance estimate's moving average gets
        rho_t = rho_inf - 2 * step * (beta2 ** step) / bias_correction2
        rect = ((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t)) ** 0.5 \
            if rho_t > 5.0 else 0
        # (Tensor betas: these are float32 0-d Tensors, computed as torch's; the arrays take their values)
        tensor_bias_correction2 = isinstance(bias_correction2, Tensor)
        root_bias_correction2 = _number(bias_correction2 ** 0.5)
        bias_correction1, bias_correction2, rect = map(_number, (bias_correction1, bias_correction2, rect))
        if ops.foreach:
            p._array[...] = self._foreach_step(ops, ops.load(p._array), exp_avg, exp_avg_sq, group, rect,
                                                     -lr / bias_correction1, bias_correction2)
            return
        corrected = ops.divided(exp_avg, bias_correction1)
        if rect:  # the variance is trustworthy: Adam's step, rectified
            root = ops.plus(ops.rounded(ops.sqrt(exp_avg_sq)), group["eps"])
            if tensor_bias_correction2:  # (a 0-d tensor / tensor: torch's true division)
                adaptive = ops.rounded(root_bias_correction2 / root)
            else:  # number / tensor: reciprocal, times
                adaptive = ops.rounded(ops.rounded(1 / root) * root_bias_correction2)
            update = ops.rounded(ops.rounded(ops.times(corrected, lr) * adaptive) * rect)
        else:  # too early: a plain momentum step
            update = ops.times(corrected, lr)  # (a 0-d float64 lr: rounded to float32 first, as torch)
        p._array[...] = ops.add(ops.load(p._array), -1.0, update)

    @staticmethod
    def _foreach_step(ops, param, exp_avg, exp_avg_sq, group, rect, step_size, bias_correction2):
        """torch's multi-tensor RAdam's last ops (16-bit: each rounded): ``buffer = 1 / ((sqrt(v) + eps) / (sqrt(bc2)
        * rect * step_size)) + unrect_step_size``, then ``param.addcmul_(exp_avg, buffer)``. Before
        the variance is trusted (``rect`` 0) the division is by -0: the buffer is the plain momentum step size
        (NaN where ``sqrt(v) + eps`` is 0, as float16's eps 1e-8 is, as torch's)."""
        root = ops.plus(ops.rounded(ops.sqrt(exp_avg_sq)), group["eps"])
        divisor = bias_correction2 ** 0.5 * rect * step_size
        with np.errstate(invalid="ignore", divide="ignore"):
            if divisor == 0:  # x / -0: -inf, or NaN for x = 0 (a Python division would raise)
                quotient = ops.rounded(root * np.float32(math.copysign(math.inf, divisor)))
            else:
                quotient = ops.divided(root, divisor)
            buffer = ops.plus(ops.rounded(1 / quotient), -0.0 if rect else step_size)
        return ops.addcmul(param, exp_avg, buffer, 1)
