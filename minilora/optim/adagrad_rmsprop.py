"""RMSprop, Adagrad, Adadelta: per-weight step sizes from running sums of squares, as ``torch.optim``.

Both divide the gradient by the root of what its square has been so far, so a weight whose gradients are
large takes small steps and a rarely-moved weight larger ones:

* ``Adagrad`` sums every squared gradient (``sum += g * g``): steps only shrink, which suits sparse
  features and short runs. ``lr_decay`` shrinks the lr too: ``lr / (1 + (step - 1) * lr_decay)``.
* ``RMSprop`` keeps a running mean instead (``square_avg = alpha * square_avg + (1 - alpha) * g * g``), so
  old gradients are forgotten; ``centered`` subtracts the squared mean gradient (a variance), and
  ``momentum`` adds a velocity buffer (started at zero, unlike SGD's).
* ``Adadelta`` keeps RMSprop's mean of squared gradients and a second one of its own squared steps
  (``acc_delta``): each step is ``sqrt(acc_delta + eps) / sqrt(square_avg + eps) * g``, so the units of the
  step are those of the weights and ``lr`` (default 1.0) is only a scale.

The updates follow torch's single-tensor code op for op. A float16/bfloat16 parameter keeps its state in its
dtype, and every op computes in float32 and rounds once, as torch's CPU kernels do (``_Arithmetic``).
"""
import numpy as np

from .. import dtypes, float32_math
from ..device import xp_of
from ..ops.elementwise import STEPS_ROUNDED_TO_16_BITS, _in_16_bit_steps_at_tail
from .adam import _fused_multiply_add
from .optimizer import (Optimizer, _check_range, add_scaled, add_scaled_16bit_rounded, alpha_16bit, keep_arrays,
                        learning_rate, mul_scalar_16bit, new_step_count, rounds_each_op, state_arrays,
                        state_tensors)

__all__ = ["RMSprop", "Adagrad", "Adadelta"]


class _Arithmetic:
    """torch's in-place ops on one parameter's arrays: in the array's own dtype (float32/float64), or, for a
    16-bit parameter, in float32 with each op's result rounded to the 16-bit dtype (``rounded``). ``foreach``: the
    ops are torch's multi-tensor ones (``foreach=True``), whose ``_foreach_mul_`` takes its scalar otherwise."""

    def __init__(self, dtype, foreach=False):
        self.dtype, self.low_precision, self.foreach = dtype, rounds_each_op(dtype), bool(foreach)

    def load(self, array):
        return dtypes.upcast(array) if self.low_precision else array

    def sqrt(self, array):
        """``array.sqrt()``: MKL's for a float32/float64 parameter (``float32_math.mkl_sqrt``, torch's CPU kernel), the
        correctly rounded root for a 16-bit one (computed in float32) and on CuPy."""
        if self.low_precision or type(array) is not np.ndarray:
            return xp_of(array).sqrt(array)
        return float32_math.mkl_sqrt(array)

    def rsqrt(self, array):
        """``array.rsqrt()``: ``1 / sqrt`` rounded once, or (16-bit) each step rounded where torch's kernel runs
        its scalar lambda: every element in its "default" build, else the tail of each thread's chunk (as the
        op's, ``ops.elementwise.Rsqrt``). (Its root is correctly rounded: not MKL's.)"""
        root = xp_of(array).sqrt(array)
        if not self.low_precision or STEPS_ROUNDED_TO_16_BITS:
            return self.rounded(1 / (self.rounded(root) if STEPS_ROUNDED_TO_16_BITS else root))
        out = self.rounded(1 / root)
        _in_16_bit_steps_at_tail(out, lambda part: 1 / np.sqrt(part), array.astype(self.dtype))
        return out

    def rounded(self, value):
        return value.astype(self.dtype).astype(np.float32) if self.low_precision else value

    def times(self, array, number):
        """``array.mul(number)``: the number in the array's compute dtype first, as torch's CPU kernels take a
        scalar (a Python float, or a 0-d tensor such as a float64 ``lr``), then one product in that dtype
        (NumPy would widen a float32 array by a float64 scalar and round the product once more). 16-bit
        ``_foreach_mul_`` rounds the number to the 16-bit dtype first (``mul_scalar_16bit``)."""
        if self.low_precision:
            return self.rounded(array * mul_scalar_16bit(number, self.dtype, self.foreach))
        return array * array.dtype.type(number)

    def divided(self, array, number):
        """``array / number`` (``div`` by a Python number) as torch's CPU kernel: a true division in the array's
        dtype (16-bit: in float32 by the number rounded to float32, then rounded once, as ATen's ``div_true_kernel``
        for reduced floats; a multiplication by the reciprocal put 8 of 28000 float16 quotients one ulp off)."""
        return self.rounded(array / array.dtype.type(number))

    def plus(self, array, number):
        """``array.add(number)``: torch rounds a plain number added to a 16-bit tensor to its dtype first
        (``sqrt(v).add_(eps)`` adds bfloat16's 0.010009765625 for eps=0.01), as it does ``alpha=``."""
        return self.rounded(array + self.alpha(number))

    def alpha(self, value):
        """An ``alpha=`` scalar: torch rounds it to a 16-bit tensor's dtype first."""
        return alpha_16bit(value, self.dtype) if self.low_precision else value

    def add(self, start, value, array):
        """``start.add(array, alpha=value)``: one fused multiply-add where torch's build fuses float32's
        (``add_scaled``; 16-bit: ``add_scaled_16bit_rounded``)."""
        if self.low_precision:
            return add_scaled_16bit_rounded(start, value, array, self.dtype)
        return add_scaled(start, value, array)

    def addcmul(self, start, a, b, value):
        """``start + value * a * b`` as torch's CPU kernel: ``fmadd(value * a, b, start)``, fused where its
        build fuses (in float32 for 16-bit, rounded once)."""
        scalar = np.float32(value) if self.low_precision else start.dtype.type(value)
        return self.rounded(_fused_multiply_add(scalar * a, b, start))

    def lerp(self, start, end, weight):
        """``start.lerp_(end, weight)`` with torch's two formulas (the one that stays exact near each end),
        each a fused multiply-add where its build fuses; the weight and ``1 - weight`` in the compute dtype
        (float32 for float16: 1 - 0.95 is 0.050000012)."""
        weight = np.float32(weight) if self.low_precision else start.dtype.type(weight)
        if weight < 0.5:
            return self.rounded(_fused_multiply_add(weight, end - start, start))
        return self.rounded(_fused_multiply_add(-(1 - weight), end - start, end))

    def addcdiv(self, start, a, b, value):
        """``start.addcdiv(a, b, value=value)`` as torch's CPU kernel: ``start + (value * a) / b`` (16-bit: in
        float32, rounded once)."""
        scalar = np.float32(value) if self.low_precision else start.dtype.type(value)
        return self.rounded(start + scalar * a / b)


def _gradient(p, group, ops):
    """The gradient the update uses: negated for ``maximize``, plus ``weight_decay * p`` (L2)."""
    grad = ops.load(p.grad._array)
    if group["maximize"]:
        grad = -grad
    if group["weight_decay"]:
        grad = ops.add(grad, group["weight_decay"], ops.load(p._array))
    return grad


class _StepEach(Optimizer):
    """The step of RMSprop, Adagrad, Adadelta (and adam_variants' Adamax, NAdam, RAdam): each trainable
    parameter with a gradient gets its state on its first step (``_new_state(p)``), then its own update,
    one parameter at a time (``_update(p, arrays, group)``, on the arrays of its state's Tensors)."""
    _state_shaped_as_params = True
    _steps_are_tensors = True

    def step(self, closure=None):
        """Update every trainable parameter that has a gradient; returns ``closure()``'s loss."""
        loss = self._evaluate(closure)
        for group in self.param_groups:
            for p in self._params_to_update(group):
                state = self.state[p]
                if not state:
                    state.update(state_tensors(self._new_state(p, group), p.device))
                arrays = state_arrays(state, p.device)
                if "step" in arrays:  # (Muon keeps no step count)
                    arrays["step"] += 1
                self._update(p, arrays, group)
                keep_arrays(state, arrays, p.device)
        return loss


class RMSprop(_StepEach):
    """``RMSprop(params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0, momentum=0, centered=False,
    capturable=False, foreach=None, maximize=False, differentiable=False)``, as in PyTorch. State per
    trained parameter: ``step``, ``square_avg``, and ``momentum_buffer`` (momentum > 0), ``grad_avg``
    (centered). ``differentiable=True`` is not implemented and raises.

    Fed torch's gradients, it steps torch's weights bit for bit but where torch's float32 ``sqrt`` (MKL's, not
    correctly rounded) differs: with torch's sqrt standing in, 0 of 4400 weights differ after 3 Trainer steps,
    float32 and float64. A Trainer run (``optim="rmsprop"``) still parts from transformers' by ~3e-5 after 3
    steps at lr 1e-2: its first step's gradients differ in their last bits (float32 sums in another order), and
    RMSprop's first step, ``lr * g / (0.1 |g| + eps)``, is ~0.1 for any gradient much larger than eps, so the
    model moves far and the next gradients differ more; torch's own run given minilora's step-1 gradients parts
    from itself by the same ~2e-5."""

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0, momentum=0, centered=False,
                 capturable=False, foreach=None, maximize=False, differentiable=False):
        super().__init__(params, dict(lr=lr, momentum=momentum, alpha=alpha, eps=eps, centered=centered,
                                      weight_decay=weight_decay, capturable=capturable, foreach=foreach,
                                      maximize=maximize, differentiable=differentiable))

    def _check_group(self, group, index):
        super()._check_group(group, index)
        for name in ("eps", "momentum", "weight_decay", "alpha"):
            _check_range(group, index, name, low=0.0)

    @staticmethod
    def _new_state(p, group):
        zeros = p.device.xp.zeros_like
        state = dict(step=new_step_count(), square_avg=zeros(p._array))
        if group["momentum"] > 0:
            state["momentum_buffer"] = zeros(p._array)
        if group["centered"]:
            state["grad_avg"] = zeros(p._array)
        return state

    @staticmethod
    def _update(p, state, group):
        ops = _Arithmetic(p.dtype, group["foreach"])
        alpha, lr = group["alpha"], learning_rate(group)
        grad = _gradient(p, group, ops)
        square_avg = ops.addcmul(ops.times(ops.load(state["square_avg"]), alpha), grad, grad, 1 - alpha)
        state["square_avg"][...] = square_avg
        if group["centered"]:  # the variance: mean of squares minus the squared mean
            grad_avg = ops.lerp(ops.load(state["grad_avg"]), grad, 1 - alpha)
            state["grad_avg"][...] = grad_avg
            avg = ops.rounded(ops.sqrt(ops.addcmul(square_avg, grad_avg, grad_avg, -1)))
        else:
            avg = ops.rounded(ops.sqrt(square_avg))
        avg = ops.plus(avg, group["eps"])
        param = ops.load(p._array)
        if group["momentum"] > 0:  # buf = momentum * buf + grad / avg; p -= lr * buf
            buf = ops.rounded(ops.times(ops.load(state["momentum_buffer"]), group["momentum"]) + grad / avg)
            state["momentum_buffer"][...] = buf
            p._array[...] = ops.add(param, -lr, buf)
        else:
            p._array[...] = ops.addcdiv(param, grad, avg, -lr)


class Adagrad(_StepEach):
    """``Adagrad(params, lr=1e-2, lr_decay=0, weight_decay=0, initial_accumulator_value=0, eps=1e-10,
    foreach=None, *, maximize=False, differentiable=False, fused=None)``, as in PyTorch. As torch, every
    parameter gets its state (``step`` 0, ``sum`` filled with ``initial_accumulator_value``) when the
    optimizer is built; a group added later starts from the constructor's value. ``differentiable=True``
    is not implemented and raises."""

    def __init__(self, params, lr=1e-2, lr_decay=0, weight_decay=0, initial_accumulator_value=0, eps=1e-10,
                 foreach=None, *, maximize=False, differentiable=False, fused=None):
        super().__init__(params, dict(lr=lr, lr_decay=lr_decay, eps=eps, weight_decay=weight_decay,
                                      initial_accumulator_value=initial_accumulator_value, foreach=foreach,
                                      maximize=maximize, differentiable=differentiable, fused=fused))
        for p in self._all_params():
            self.state[p].update(state_tensors(self._new_state(p, None), p.device))

    def _check_group(self, group, index):
        super()._check_group(group, index)
        for name in ("lr_decay", "weight_decay", "initial_accumulator_value", "eps"):
            _check_range(group, index, name, low=0.0)

    def _new_state(self, p, group):
        """``step`` 0 and ``sum`` full of the constructor's ``initial_accumulator_value`` (torch reads it
        from ``defaults``, never from the group: also for a group added after construction)."""
        start = self.defaults["initial_accumulator_value"]
        return dict(step=new_step_count(), sum=p.device.xp.full(p.shape, start, dtype=p.dtype))


    @staticmethod
    def _update(p, state, group):
        ops = _Arithmetic(p.dtype, group["foreach"])
        grad = _gradient(p, group, ops)
        lr = learning_rate(group) / (1 + (float(state["step"]) - 1) * group["lr_decay"])
        total = ops.addcmul(ops.load(state["sum"]), grad, grad, 1)
        state["sum"][...] = total
        std = ops.plus(ops.rounded(ops.sqrt(total)), group["eps"])
        if ops.foreach:  # torch's multi-tensor Adagrad: grads times minus_clr (a 16-bit product), then addcdiv_
            # (value=1); in place (_foreach_mul_, its scalar rounded) where grads is its own copy already, else
            # _foreach_mul, whose scalar stays float32
            in_place = group["weight_decay"] != 0 or group["maximize"]
            numerator = (ops if in_place else _Arithmetic(p.dtype)).times(grad, -lr)
            p._array[...] = ops.addcdiv(ops.load(p._array), numerator, std, 1)
        else:
            p._array[...] = ops.addcdiv(ops.load(p._array), grad, std, -lr)


class Adadelta(_StepEach):
    """``Adadelta(params, lr=1.0, rho=0.9, eps=1e-6, weight_decay=0, foreach=None, *, capturable=False,
    maximize=False, differentiable=False)``, as in PyTorch. State per trained parameter: ``step``,
    ``square_avg`` and ``acc_delta``. ``differentiable=True`` is not implemented and raises."""

    def __init__(self, params, lr=1.0, rho=0.9, eps=1e-6, weight_decay=0, foreach=None, *, capturable=False,
                 maximize=False, differentiable=False):
        super().__init__(params, dict(lr=lr, rho=rho, eps=eps, weight_decay=weight_decay, maximize=maximize,
                                      capturable=capturable, foreach=foreach, differentiable=differentiable))

    def _check_group(self, group, index):
        super()._check_group(group, index)
        _check_range(group, index, "rho", low=0.0, high=1.0)
        _check_range(group, index, "eps", low=0.0)
        _check_range(group, index, "weight_decay", low=0.0)

    @staticmethod
    def _new_state(p, group):
        zeros = p.device.xp.zeros_like
        return dict(step=new_step_count(), square_avg=zeros(p._array), acc_delta=zeros(p._array))

    @staticmethod
    def _update(p, state, group):
        ops = _Arithmetic(p.dtype, group["foreach"])
        rho, eps = group["rho"], group["eps"]
        grad = _gradient(p, group, ops)
        square_avg = ops.addcmul(ops.times(ops.load(state["square_avg"]), rho), grad, grad, 1 - rho)
        std = ops.rounded(ops.sqrt(ops.plus(square_avg, eps)))
        delta = ops.rounded(ops.sqrt(ops.plus(ops.load(state["acc_delta"]), eps)))
        delta = ops.rounded(ops.rounded(delta / std) * grad)  # the step, in the weights' units
        acc_delta = ops.addcmul(ops.times(ops.load(state["acc_delta"]), rho), delta, delta, 1 - rho)
        state["square_avg"][...], state["acc_delta"][...] = square_avg, acc_delta
        p._array[...] = ops.add(ops.load(p._array), -learning_rate(group), delta)
