"""transformers' ``Adafactor`` (``transformers.optimization.Adafactor``, fairseq's algorithm): what the Trainer's
``optim="adafactor"`` builds, with ``scale_parameter=False, relative_step=False`` and the learning rate. It is
not torch's ``optim.Adafactor`` (``adafactor.py``): its second moment decays as ``1 - step ** decay_rate``, its
update is clipped by its RMS, ``beta1`` keeps a first moment, and the learning rate may be relative to the step
and scaled by the parameter's RMS. Written with Tensor operations in transformers' order, so the float32 bits
follow its."""
import math

from ..tensor import Tensor, no_grad
from .optimizer import Optimizer

__all__ = ["Adafactor"]


class Adafactor(Optimizer):
    def __init__(self, params, lr=None, eps=(1e-30, 1e-3), clip_threshold=1.0, decay_rate=-0.8, beta1=None,
                 weight_decay=0.0, scale_parameter=True, relative_step=True, warmup_init=False):
        if lr is not None and relative_step:
            raise ValueError("Cannot combine manual `lr` and `relative_step=True` options")
        if warmup_init and not relative_step:
            raise ValueError("`warmup_init=True` requires `relative_step=True`")
        super().__init__(params, dict(lr=lr, eps=eps, clip_threshold=clip_threshold, decay_rate=decay_rate,
                                      beta1=beta1, weight_decay=weight_decay, scale_parameter=scale_parameter,
                                      relative_step=relative_step, warmup_init=warmup_init))

    def _check_group(self, group, index):
        """transformers' Adafactor checks nothing else (its lr may be None: relative steps)."""

    @staticmethod
    def _get_lr(group, state):
        step_size = group["lr"]
        if group["relative_step"]:
            min_step = 1e-6 * state["step"] if group["warmup_init"] else 1e-2
            step_size = min(min_step, 1.0 / math.sqrt(state["step"]))
        scale = max(group["eps"][1], state["RMS"]) if group["scale_parameter"] else 1.0
        return scale * step_size

    @staticmethod
    def _rms(tensor):
        return tensor.norm(2) / (tensor.numel() ** 0.5)

    @staticmethod
    def _approx_sq_grad(row, col):
        r_factor = (row / row.mean(dim=-1, keepdim=True)).rsqrt_().unsqueeze(-1)
        return r_factor * col.unsqueeze(-2).rsqrt()

    def _init_state(self, state, grad, factored, use_first_moment):
        from ..factories import zeros, zeros_like
        state["step"] = 0
        if use_first_moment:
            state["exp_avg"] = zeros_like(grad)
        if factored:
            state["exp_avg_sq_row"] = zeros(grad.shape[:-1], dtype=grad.dtype)
            state["exp_avg_sq_col"] = zeros(grad.shape[:-2] + grad.shape[-1:], dtype=grad.dtype)
        else:
            state["exp_avg_sq"] = zeros_like(grad)
        state["RMS"] = 0

    def _update(self, group, state, grad, factored):
        """The step's update before the learning rate: the gradient over the root of the second moment's
        estimate (factored into rows and columns for a matrix), clipped to RMS ``clip_threshold``."""
        beta2t = 1.0 - math.pow(state["step"], group["decay_rate"])
        update = grad ** 2 + group["eps"][0]
        if factored:
            row, col = state["exp_avg_sq_row"], state["exp_avg_sq_col"]
            row.mul_(beta2t).add_(update.mean(dim=-1), alpha=1.0 - beta2t)
            col.mul_(beta2t).add_(update.mean(dim=-2), alpha=1.0 - beta2t)
            update = self._approx_sq_grad(row, col).mul_(grad)
        else:
            state["exp_avg_sq"].mul_(beta2t).add_(update, alpha=1.0 - beta2t)
            update = state["exp_avg_sq"].rsqrt().mul_(grad)
        return update.div_((self._rms(update) / group["clip_threshold"]).clamp_(min=1.0))

    def step(self, closure=None):
        loss = self._evaluate(closure)
        with no_grad():
            for group in self.param_groups:
                for p in group["params"]:
                    if p.grad is None:
                        continue
                    self._step_one(p, group)
        return loss

    def _step_one(self, p, group):
        grad = p.grad.float() if p.grad.dtype.itemsize < 4 else p.grad
        state, factored, use_first_moment = self.state[p], len(grad.shape) >= 2, group["beta1"] is not None
        if len(state) == 0:
            self._init_state(state, grad, factored, use_first_moment)
        weights = p.float() if p.dtype.itemsize < 4 else p
        state["step"] += 1
        state["RMS"] = self._rms(weights)
        lr = self._get_lr(group, state)
        lr = lr.item() if isinstance(lr, Tensor) else lr
        update = self._update(group, state, grad, factored).mul_(lr)
        if use_first_moment:
            update = state["exp_avg"].mul_(group["beta1"]).add_(update, alpha=1 - group["beta1"])
        if group["weight_decay"] != 0:
            weights.add_(weights, alpha=-group["weight_decay"] * lr)
        weights.add_(-update)
        if weights is not p:
            p.copy_(weights)
