"""Adafactor, as ``torch.optim.Adafactor`` computes it (Shazeer & Stern, 2018, with torch's choices).

Adam keeps a second moment per weight; for a matrix of R x C weights Adafactor keeps only R + C numbers: a
running mean of the squared gradient over each row (``row_var``) and over each column (``col_var``), and
estimates the full second moment as their outer product divided by the mean of ``row_var``. A vector keeps a
full ``variance``. There is no first moment at all, so the state is tiny.

The rest, as torch:

* the running means' weight is ``step ** beta2_decay`` (1 at step 1: the first mean is the gradient's);
* the step is relative to the weights' size: ``alpha = max(eps2, rms(p)) * min(lr, 1 / sqrt(step))``;
* the update ``g / sqrt(v)`` is scaled down when its root mean square is above ``d`` (update clipping);
* ``weight_decay`` is decoupled, as AdamW's.

Order of operations as torch's single-tensor code (its CPU default); the norms and the mean add in torch's
kernels' order (``ops.reduce.p_norm``, ``mean_as_torch``), so float32 and float64 steps are torch's bit
for bit (tests/test_live_settings_r16.py). ``foreach=True`` is torch's multi-tensor path (not its CPU default): the
same ops, but the step is scaled and then added (two roundings) where the single-tensor path's ``add_(alpha=)``
fuses them (tests/test_live_settings_r17.py).
"""
from types import SimpleNamespace

from .. import dtypes
from ..device import xp_of
from ..ops.reduce import mean_as_torch, p_norm
from .adagrad_rmsprop import _Arithmetic, _StepEach
from .optimizer import _as_number, check_one_element, learning_rate, new_step_count

__all__ = ["Adafactor"]


class Adafactor(_StepEach):
    """``Adafactor(params, lr=1e-2, beta2_decay=-0.8, eps=(None, 1e-3), d=1.0, weight_decay=0.0, *,
    foreach=None, maximize=False)``, as in PyTorch. State per trained parameter: ``step``, and ``row_var`` and
    ``col_var`` (2 or more dimensions: shapes ``(..., R, 1)`` and ``(..., 1, C)``) or ``variance`` (a vector).
    ``eps[0]=None`` means the machine epsilon of the parameters' dtype (torch takes the first updated
    parameter's of each group, for the whole group)."""
    _state_shaped_as_params = False  # (row_var/col_var: factors of the parameter's shape)

    def __init__(self, params, lr=1e-2, beta2_decay=-0.8, eps=(None, 1e-3), d=1.0, weight_decay=0.0, *,
                 foreach=None, maximize=False):
        super().__init__(params, dict(lr=lr, beta2_decay=beta2_decay, eps=eps, d=d, weight_decay=weight_decay,
                                      foreach=foreach, maximize=maximize))

    def _check_group(self, group, index):
        """torch's checks, in its words (which differ from the other optimizers')."""
        eps1, eps2 = group["eps"]
        check_one_element(group, "lr")
        checks = [(0.0 <= _as_number(group["lr"]), "Learning rate should be >= 0 but is", group["lr"]),
                  (0.0 >= group["beta2_decay"], "beta2_decay should be <= 0 but is", group["beta2_decay"]),
                  (eps1 is None or 0.0 <= eps1, "epsilon1 should be >= 0 but is", eps1),
                  (0.0 <= eps2, "epsilon2 should be >= 0 but is", eps2),
                  (1.0 <= group["d"], "Clipping threshold d should be >= 1 but is", group["d"]),
                  (0.0 <= group["weight_decay"], "weight_decay should be >= 0 but is", group["weight_decay"])]
        for ok, words, value in checks:
            if not ok:
                raise ValueError(f"{words}: {value} (parameter group {index})")
        super()._check_group(group, index)

    @staticmethod
    def _group_eps1(group):
        """``eps[0]``, or when it is None, torch's choice for the whole group: the machine epsilon of the dtype
        of the group's first parameter with a gradient (read after the closure has made the gradients)."""
        if group["eps"][0] is not None:
            return group["eps"][0]
        first = next(p for p in group["params"] if p.grad is not None)
        return float(dtypes.finfo(first.dtype).eps)

    @staticmethod
    def _new_state(p, group):
        xp, shape = p.device.xp, p.grad.shape
        if len(shape) > 1:
            return dict(step=new_step_count(), **{name: xp.zeros(factored_shape, p.grad.dtype)
                                                  for name, factored_shape in _factored_shapes(shape).items()})
        return dict(step=new_step_count(), variance=xp.zeros(shape, p.grad.dtype))

    def _restore_value(self, value, param, index, name):
        """A loaded ``row_var`` / ``col_var`` is checked against its own shape, not the parameter's."""
        if name in ("row_var", "col_var"):  # (a stand-in parameter of that shape, for the shared conversion)
            param = SimpleNamespace(shape=_factored_shapes(param.shape)[name], dtype=param.dtype, device=param.device)
        return super()._restore_value(value, param, index, name)

    def _update(self, p, state, group):
        ops = _Arithmetic(p.dtype)
        lr, eps2 = learning_rate(group), group["eps"][1]
        eps1 = self._group_eps1(group)
        grad = ops.load(p.grad._array)
        if group["maximize"]:
            grad = -grad
        step = float(state["step"])
        weight = step ** group["beta2_decay"]  # the running means' weight: 1 - beta2 at this step
        rho = min(lr, 1 / step ** 0.5)
        param = ops.load(p._array)
        alpha = max(eps2, float(ops.rounded(_norm(param))) / (param.size ** 0.5)) * rho
        if group["weight_decay"] != 0:
            param = ops.times(param, 1 - lr * group["weight_decay"])
        if grad.ndim > 1:
            var_estimate = self._factored_estimate(grad, state, weight, eps1, ops)
        else:
            variance = ops.lerp(ops.load(state["variance"]), ops.rounded(grad * grad), weight)
            state["variance"][...] = variance
            var_estimate = variance
        xp = xp_of(grad)
        update = ops.rsqrt(xp.maximum(var_estimate, eps1 * eps1))  # clamp_(min=eps1 ** 2).rsqrt_()
        update = ops.rounded(update * grad)
        denom = max(1.0, float(ops.rounded(_norm(update))) / ((update.size ** 0.5) * group["d"]))
        if group["foreach"]:  # torch's multi-tensor path: _foreach_mul_(updates, scales), then _foreach_add_
            # (a scalar list is taken in the tensors' dtype: a 16-bit one's scale is rounded to 16 bits first)
            p._array[...] = ops.rounded(param + ops.times(update, ops.alpha(-alpha / denom)))
        else:  # param.add_(update, alpha=scale): one fused multiply-add where torch's build fuses
            p._array[...] = ops.add(param, -alpha / denom, update)

    @staticmethod
    def _factored_estimate(grad, state, weight, eps1, ops):
        """The second moment from the row and column means of ``g * g`` (``row_var @ col_var``, normalized by
        the mean of ``row_var``); updates both running means."""
        xp = xp_of(grad)
        row_var = ops.lerp(ops.load(state["row_var"]), _mean_square(grad, -1, ops), weight)
        col_var = ops.lerp(ops.load(state["col_var"]), _mean_square(grad, -2, ops), weight)
        state["row_var"][...], state["col_var"][...] = row_var, col_var
        var_estimate = ops.rounded(row_var * col_var)  # (R, 1) @ (1, C): an outer product
        row_mean = ops.rounded(xp.maximum(ops.rounded(mean_as_torch(row_var, (row_var.ndim - 2,))), eps1))
        return ops.rounded(var_estimate / row_mean)


def _factored_shapes(shape):
    """The shapes of a matrix's (or a stack of matrices') running means: ``(..., R, 1)`` and ``(..., 1, C)``."""
    return {"row_var": tuple(shape[:-1]) + (1,), "col_var": tuple(shape[:-2]) + (1,) + tuple(shape[-1:])}


def _norm(array, axis=None):
    """torch's 2-norm (``torch.norm``): the root of the sum of squares, in the array's dtype, its squares added in
    the order of torch's norm kernel (``ops.reduce.p_norm``)."""
    axes = tuple(range(array.ndim)) if axis is None else (axis % array.ndim,)
    norm = p_norm(array, 2, axes)
    return norm if axis is not None else norm.reshape(())


def _mean_square(grad, axis, ops):
    """``torch.norm(grad, dim=axis, keepdim=True).square_().div_(n)``: torch's spelling of ``mean(g * g)``."""
    norm = ops.rounded(_norm(grad, axis))
    return ops.rounded(ops.rounded(norm * norm) / grad.shape[axis])
