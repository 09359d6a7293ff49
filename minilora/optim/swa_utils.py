"""``torch.optim.swa_utils``: Stochastic Weight Averaging and exponential moving averages of a model.

``AveragedModel(model)`` keeps a deep copy of ``model`` whose parameters are the running average of
the ones ``update_parameters(model)`` is handed (SWA: the equal-weight mean, ``p + (q - p) / (n + 1)``,
as torch's CPU path computes it; ``multi_avg_fn=get_ema_multi_avg_fn(decay)``: an EMA, ``lerp`` with
weight ``1 - decay``; or the user's ``avg_fn``), the first call copying the model. Buffers are copied
from the model (``use_buffers=True``: averaged with the parameters). ``update_bn(loader, model)``
recomputes the batch-norm statistics of the averaged weights (one pass, cumulative averages), and
``SWALR`` anneals each group's lr to its ``swa_lr`` over ``anneal_epochs`` steps (cosine or linear).
The roundings are torch's: the same float32 updates give the same bits.
"""
import copy
import itertools
import math

from .. import dtypes
from ..nn.layers import _BatchNorm
from ..nn.module import Module
from ..tensor import Tensor, no_grad, tensor
from .lr_scheduler import LRScheduler, _per_group

__all__ = ["AveragedModel", "update_bn", "SWALR", "get_ema_multi_avg_fn", "get_swa_multi_avg_fn",
           "get_ema_avg_fn", "get_swa_avg_fn"]


def _is_float(t):
    return t.is_floating_point() or t.is_complex()


def _check_decay(decay):
    if decay < 0.0 or decay > 1.0:
        raise ValueError(f"Invalid decay value {decay} provided. Please provide a value in [0,1] range.")


def get_ema_multi_avg_fn(decay=0.999):
    """An EMA over lists of tensors: ``ema.lerp_(current, 1 - decay)`` (integers: ``ema * decay +
    current * (1 - decay)``)."""
    _check_decay(decay)

    @no_grad()
    def ema_update(ema_param_list, current_param_list, _):
        if _is_float(ema_param_list[0]):
            for ema, current in zip(ema_param_list, current_param_list):
                ema.lerp_(current, 1 - decay)
        else:
            for ema, current in zip(ema_param_list, current_param_list):
                ema.copy_(ema * decay + current * (1 - decay))
    return ema_update


def get_swa_multi_avg_fn():
    """The equal-weight running mean over lists of tensors: ``avg.lerp_(current, 1 / (n + 1))`` (what
    torch's foreach path computes; its CPU default is ``get_swa_avg_fn``'s formula)."""
    @no_grad()
    def swa_update(averaged_param_list, current_param_list, num_averaged):
        if _is_float(averaged_param_list[0]):
            weight = 1 / (num_averaged + 1)
            weight = weight.item() if isinstance(weight, Tensor) else weight
            for averaged, current in zip(averaged_param_list, current_param_list):
                averaged.lerp_(current, weight)
            return
        for averaged, current in zip(averaged_param_list, current_param_list):
            difference = current - averaged
            if isinstance(num_averaged, Tensor):
                averaged.addcdiv_(difference, num_averaged + 1)
            else:
                averaged.add_(difference, alpha=1.0 / (num_averaged + 1))
    return swa_update


def get_ema_avg_fn(decay=0.999):
    """An EMA of one tensor: ``decay * ema + (1 - decay) * current``."""
    _check_decay(decay)

    @no_grad()
    def ema_update(ema_param, current_param, num_averaged):
        return decay * ema_param + (1 - decay) * current_param
    return ema_update


def get_swa_avg_fn():
    """The running mean of one tensor: ``averaged + (current - averaged) / (n + 1)``."""
    @no_grad()
    def swa_update(averaged_param, current_param, num_averaged):
        return averaged_param + (current_param - averaged_param) / (num_averaged + 1)
    return swa_update


class AveragedModel(Module):
    """A copy of ``model`` holding the average of the weights it is updated with; calling it runs the copy."""

    def __init__(self, model, device=None, avg_fn=None, multi_avg_fn=None, use_buffers=False):
        super().__init__()
        if avg_fn is not None and multi_avg_fn is not None:
            raise AssertionError("Only one of avg_fn and multi_avg_fn should be provided")
        self.module = copy.deepcopy(model)
        if device is not None:
            self.module = self.module.to(device)
        self.register_buffer("n_averaged", tensor(0, dtype=dtypes.int64, device=device))
        self.avg_fn, self.multi_avg_fn, self.use_buffers = avg_fn, multi_avg_fn, use_buffers

    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)

    def _averaged_tensors(self, model):
        if self.use_buffers:
            return itertools.chain(model.parameters(), model.buffers())
        return model.parameters()

    def update_parameters(self, model):
        """Average ``model``'s parameters (and buffers, with ``use_buffers``) into this copy's."""
        ours = [p.detach() for p in self._averaged_tensors(self.module)]
        theirs = [p.detach().to(mine.device) for mine, p in zip(ours, self._averaged_tensors(model))]
        if int(self.n_averaged) == 0:
            for mine, p in zip(ours, theirs):
                mine.copy_(p)
        else:
            self._average(ours, theirs)
        if not self.use_buffers:
            with no_grad():
                for mine, b in zip(self.module.buffers(), model.buffers(), strict=True):
                    mine.detach().copy_(b.detach().to(mine.device))
        self.n_averaged += 1

    def _average(self, ours, theirs):
        if self.avg_fn is not None:
            for mine, p in zip(ours, theirs):
                mine.copy_(self.avg_fn(mine, p, self.n_averaged))
            return
        for dtype in dict.fromkeys(str(t.dtype) for t in ours):  # torch groups the tensors by dtype
            group = [(mine, p) for mine, p in zip(ours, theirs) if str(mine.dtype) == dtype]
            mine, p = [m for m, _ in group], [q for _, q in group]
            if self.multi_avg_fn is not None:
                self.multi_avg_fn(mine, p, self.n_averaged)
            else:  # torch's CPU path (no foreach kernels there): get_swa_avg_fn, tensor by tensor
                average = get_swa_avg_fn()
                for a, b in zip(mine, p):
                    a.copy_(average(a, b, self.n_averaged))


@no_grad()
def update_bn(loader, model, device=None):
    """Recompute every batch norm's running statistics over one pass of ``loader`` (a batch's first item
    when it is a list or tuple), as a cumulative average: what SWA's averaged weights need."""
    momenta = {}
    for module in model.modules():
        if isinstance(module, _BatchNorm):
            module.reset_running_stats()
            momenta[module] = module.momentum
    if not momenta:
        return
    was_training = model.training
    model.train()
    for module in momenta:
        module.momentum = None
    for input in loader:
        if isinstance(input, (list, tuple)):
            input = input[0]
        if device is not None:
            input = input.to(device)
        model(input)
    for module, momentum in momenta.items():
        module.momentum = momentum
    model.train(was_training)


class SWALR(LRScheduler):
    """Anneals each group's lr from its current value to ``swa_lr`` over ``anneal_epochs`` steps
    (``anneal_strategy`` 'cos' or 'linear'), then holds it there."""

    def __init__(self, optimizer, swa_lr, anneal_epochs=10, anneal_strategy="cos", last_epoch=-1):
        for value, group in zip(_per_group("swa_lr", optimizer.param_groups, swa_lr), optimizer.param_groups):
            group["swa_lr"] = value
        if anneal_strategy not in ("cos", "linear"):
            raise ValueError(f"anneal_strategy must be one of 'cos' or 'linear', instead got {anneal_strategy}")
        self._set_anneal_func(anneal_strategy)
        if not isinstance(anneal_epochs, int) or anneal_epochs < 0:
            raise ValueError(f"anneal_epochs must be equal or greater than 0, got {anneal_epochs}")
        self.anneal_epochs = anneal_epochs
        super().__init__(optimizer, last_epoch)

    @staticmethod
    def _linear_anneal(t):
        return t

    @staticmethod
    def _cosine_anneal(t):
        return (1 - math.cos(math.pi * t)) / 2

    @staticmethod
    def _get_initial_lr(lr, swa_lr, alpha):
        return swa_lr if alpha == 1 else (lr - alpha * swa_lr) / (1 - alpha)

    def get_lr(self):
        step = self._step_count - 1
        if self.anneal_epochs == 0:
            step = max(1, step)
        groups = self.optimizer.param_groups
        previous_alpha = self.anneal_func(max(0, min(1, (step - 1) / max(1, self.anneal_epochs))))
        previous = [self._get_initial_lr(group["lr"], group["swa_lr"], previous_alpha) for group in groups]
        alpha = self.anneal_func(max(0, min(1, step / max(1, self.anneal_epochs))))
        return [group["swa_lr"] * alpha + lr * (1 - alpha) for group, lr in zip(groups, previous)]

    def _set_anneal_func(self, anneal_strategy):
        self._anneal_strategy = anneal_strategy
        self.anneal_func = self._cosine_anneal if anneal_strategy == "cos" else self._linear_anneal

    def state_dict(self):
        return {key: value for key, value in self.__dict__.items() if key not in ("optimizer", "anneal_func")}

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        self._set_anneal_func(self._anneal_strategy)
