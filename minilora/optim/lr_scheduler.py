"""Learning-rate schedules: torch's schedulers and the Hugging Face schedule functions.

A scheduler rewrites ``group["lr"]`` of each parameter group. Call ``scheduler.step()`` once after
every ``optimizer.step()``::

    scheduler = get_cosine_schedule_with_warmup(optimizer, num_warmup_steps=10, num_training_steps=100)
    for batch in data:
        loss.backward(); optimizer.step(); scheduler.step(); optimizer.zero_grad()

The torch schedulers (``StepLR``, ``MultiStepLR``, ``ConstantLR``, ``LinearLR``, ``ExponentialLR``,
``CosineAnnealingLR``, ``OneCycleLR``, ``SequentialLR``, ``LambdaLR``) give torch's sequence to the
last bit: most of them update the current lr step by step ("chainable" formulas, so that two
schedulers on one optimizer compose), and the float rounding of those products is torch's only if
the same products are taken in the same order -- so each ``get_lr`` below follows torch's formula,
not the closed form (which ``step(epoch)`` and ``SequentialLR``'s restarts use, as in torch).

The transformers factor functions (``get_*_schedule*``) are the ones ``transformers`` uses, step
for step: warmup goes linearly from 0 to 1 over ``num_warmup_steps``, then linear decay reaches 0
at ``num_training_steps`` and cosine follows half a cosine wave (``num_cycles=0.5``) down to 0.
"""
import contextlib
import functools
import math
import types
import warnings
from bisect import bisect_right
from collections import Counter

from ..tensor import Tensor
from .greedy_lr import GreedyLR, get_greedy_schedule
from .optimizer import Optimizer, _numbers

__all__ = ["LRScheduler", "LambdaLR", "MultiplicativeLR", "StepLR", "MultiStepLR", "ConstantLR", "LinearLR", "ExponentialLR",
           "CosineAnnealingLR", "OneCycleLR", "SequentialLR", "ChainedScheduler", "CyclicLR", "ReduceLROnPlateau",
           "CosineAnnealingWarmRestarts", "PolynomialLR", "get_constant_schedule",
           "get_constant_schedule_with_warmup", "get_linear_schedule_with_warmup",
           "get_cosine_schedule_with_warmup", "get_cosine_with_hard_restarts_schedule_with_warmup",
           "get_polynomial_decay_schedule_with_warmup", "get_inverse_sqrt_schedule", "get_reduce_on_plateau_schedule",
           "get_cosine_with_min_lr_schedule_with_warmup", "get_cosine_with_min_lr_schedule_with_warmup_lr_rate",
           "get_wsd_schedule", "GreedyLR", "get_greedy_schedule", "get_scheduler"]

# torch's warning for scheduler.step(epoch), word for word
EPOCH_DEPRECATION_WARNING = (
    "The epoch parameter in `scheduler.step()` was not necessary and is being "
    "deprecated where possible. Please use `scheduler.step()` to step the "
    "scheduler. During the deprecation, if epoch is different from None, the "
    "closed form is used instead of the new chainable form, where available. "
    "Please open an issue if you are unable to replicate your use case: "
    "https://github.com/pytorch/pytorch/issues/new/choose."
)


class LRScheduler:
    """Base class (``torch.optim.lr_scheduler.LRScheduler``): subclasses define ``get_lr()`` -- the
    new learning rates from the current ones -- and may define ``_get_closed_form_lr()``.

    Creating a scheduler records each group's ``initial_lr`` and already takes step 0 (so a warmup
    starts at its first value), as in PyTorch. ``last_epoch`` counts the steps taken.
    """

    _is_initial = False  # True during the step taken by __init__ (some formulas treat it apart)
    _get_lr_called_within_step = False  # True while step() asks get_lr() for the next lrs

    def __init_subclass__(cls, **kwargs):
        """A ``get_lr()`` called by the user, outside ``step()``, warns as torch's: it computes the *next*
        step's lrs from the current ones (a chainable formula applied once more), not the current lr."""
        super().__init_subclass__(**kwargs)
        if "get_lr" in cls.__dict__:
            cls.get_lr = _warning_outside_step(cls.__dict__["get_lr"])

    def __init__(self, optimizer, last_epoch=-1):
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"{type(optimizer).__name__} is not an Optimizer")
        self.optimizer = optimizer
        for i, group in enumerate(optimizer.param_groups):
            if last_epoch == -1:
                lr = group["lr"]  # (a Tensor lr: a copy, as torch's clone(); the lr itself is filled in place)
                group.setdefault("initial_lr", lr.clone() if isinstance(lr, Tensor) else lr)
            elif "initial_lr" not in group:
                raise KeyError(f"param 'initial_lr' is not specified in param_groups[{i}] when resuming "
                               f"scheduler with last_epoch >= 0 (last_epoch={last_epoch}): load the optimizer's "
                               f"state_dict first, or start a fresh run with last_epoch=-1")
        self.base_lrs = group_values(optimizer, "initial_lr")
        self.last_epoch = last_epoch
        self._initial_step()

    def _initial_step(self):
        self._step_count = 0
        self._is_initial = True
        try:
            self.step()
        finally:
            self._is_initial = False

    def get_lr(self):
        raise NotImplementedError(f"{type(self).__name__} must define get_lr()")  # abstract

    def step(self, epoch=None):
        """Advance one step and write the new learning rates into the optimizer's groups.
        ``epoch`` (deprecated in torch, kept for its behaviour): jump to that step (closed form)."""
        _warn_if_before_the_optimizer(self)
        self._step_count += 1
        if epoch is not None:
            warnings.warn(EPOCH_DEPRECATION_WARNING, UserWarning, stacklevel=2)
        self._update_lr(epoch)

    def _update_lr(self, epoch=None):
        with _within_step(self):
            if epoch is None:
                self.last_epoch += 1
                values = self.get_lr()
            else:
                self.last_epoch = epoch
                values = self._get_closed_form_lr() if hasattr(self, "_get_closed_form_lr") else self.get_lr()
        for group, lr in _one_per_group(self, values, "lr"):
            set_lr(group, lr)
        self._last_lr = group_values(self.optimizer, "lr")

    def get_last_lr(self):
        """The learning rates the last ``step()`` set, one per group."""
        return list(self._last_lr)

    def _current_lrs(self):
        return group_values(self.optimizer, "lr")

    def state_dict(self):
        """Where the schedule stands: every attribute but the optimizer (torch's layout)."""
        return {key: value for key, value in self.__dict__.items() if key != "optimizer"}

    def load_state_dict(self, state_dict):
        _take_state(self, state_dict)


def _take_state(scheduler, state):
    """``scheduler.__dict__.update(state)``, as torch's ``load_state_dict``, with 0-d tensors as their numbers: torch
    keeps an lr given as a tensor (``lr=torch.tensor(0.01)``) a tensor in ``base_lrs`` and ``_last_lr``, minilora
    keeps every lr a number (as its optimizers do), so a torch-made state_dict loads into a working schedule."""
    scheduler.__dict__.update({key: _numbers(value) for key, value in state.items()})


@contextlib.contextmanager
def _within_step(scheduler):
    scheduler._get_lr_called_within_step = True
    try:
        yield
    finally:
        scheduler._get_lr_called_within_step = False


def _warning_outside_step(get_lr):
    @functools.wraps(get_lr)
    def get_lr_that_warns(self):
        if not self._get_lr_called_within_step:
            warnings.warn("To get the last learning rate computed by the scheduler, please use `get_last_lr()`.",
                          UserWarning, stacklevel=2)
        return get_lr(self)
    return get_lr_that_warns


class _LRScheduler(LRScheduler):
    """torch's old name for ``LRScheduler``, which custom schedulers in older tutorials subclass."""


def _warn_if_before_the_optimizer(scheduler):
    """torch's warning for the pre-1.1 order ``scheduler.step(); optimizer.step()``, which skips the
    schedule's first lr: the scheduler's first own ``step()`` comes before any ``optimizer.step()``
    (``Optimizer`` notes its steps in ``_opt_called``)."""
    if scheduler._step_count == 1 and not getattr(scheduler.optimizer, "_opt_called", False):
        warnings.warn("Detected call of `lr_scheduler.step()` before `optimizer.step()`. In PyTorch 1.1.0 and "
                      "later, you should call them in the opposite order: `optimizer.step()` before "
                      "`lr_scheduler.step()`.  Failure to do this will result in PyTorch skipping the first "
                      "value of the learning rate schedule.", UserWarning, stacklevel=3)


def group_values(optimizer, key):
    """``group[key]`` of every group; a Tensor lr copied (torch's clone), so the list keeps this step's values
    when the Tensor is filled again."""
    return [group[key].clone() if isinstance(group[key], Tensor) else group[key] for group in optimizer.param_groups]


def set_lr(group, lr):
    """``group["lr"] = lr``; an lr the optimizer was given as a Tensor is filled in place instead, as torch's
    schedulers ``fill_`` it: the Tensor the user holds (and a compiled step reads) follows the schedule."""
    if isinstance(group["lr"], Tensor):
        group["lr"].detach().fill_(lr.item() if isinstance(lr, Tensor) else lr)
    else:
        group["lr"] = lr


def _one_per_group(scheduler, values, what):
    """``zip(param_groups, values)``, refused as torch's ``zip(..., strict=True)`` refuses it (a ValueError) when a
    group was added with ``add_param_group`` after the scheduler took the groups' lrs: a silent zip would leave
    that group's lr unscheduled."""
    groups, values = scheduler.optimizer.param_groups, list(values)
    if len(values) != len(groups):
        relation = "shorter" if len(values) < len(groups) else "longer"
        raise ValueError(f"zip() argument 2 is {relation} than argument 1: the optimizer has {len(groups)} parameter "
                         f"groups, but {type(scheduler).__name__} computed {len(values)} {what} values (it was built "
                         f"for {len(values)} groups; a group added with add_param_group after it is not scheduled); "
                         f"build the scheduler after adding every group")
    return zip(groups, values)


def _one_function_per_group(optimizer, lr_lambda):
    """``lr_lambda`` (one function, or a list with one per parameter group) as a list, with torch's errors."""
    groups = optimizer.param_groups
    if isinstance(lr_lambda, (list, tuple)):
        if len(lr_lambda) != len(groups):
            raise ValueError(f"Expected {len(groups)} lr_lambdas, but got {len(lr_lambda)} (expected "
                             f"{len(groups)} lr_lambdas: one per parameter group)")
        functions = list(lr_lambda)
    else:
        functions = [lr_lambda] * len(groups)
    for fn in functions:
        if not callable(fn):
            raise TypeError(f"lr_lambda should be a function, but got {type(fn).__name__}")
    return functions


def _one_function_per_group_still(scheduler):
    """A group added to the optimizer after the scheduler was built has no lr_lambda: torch fails on it (a bare
    "zip() argument 2 is shorter than argument 1"); minilora says why instead of leaving its lr unscheduled."""
    groups = len(scheduler.optimizer.param_groups)
    if groups != len(scheduler.lr_lambdas):
        raise ValueError(f"zip() argument 2 is shorter than argument 1: the optimizer has {groups} parameter "
                         f"groups, but {type(scheduler).__name__} was built for {len(scheduler.lr_lambdas)} (a group "
                         f"added with add_param_group after it has no lr_lambda); build the scheduler after "
                         f"adding every group")


def _functions_state(functions):
    """As torch saves them: a plain function is code (rebuilt by the script, saved as None); a callable
    object's attributes are state."""
    return [None if isinstance(fn, types.FunctionType) else fn.__dict__.copy() for fn in functions]


class LambdaLR(LRScheduler):
    """``lr = initial_lr * lr_lambda(last_epoch)`` for each group (``torch.optim.lr_scheduler.LambdaLR``).

    ``lr_lambda`` is one function or a list with one per parameter group. Creating the scheduler
    already applies step 0 (so a warmup starts at lr 0), as in PyTorch.
    """

    def __init__(self, optimizer, lr_lambda, last_epoch=-1):
        self.lr_lambdas = _one_function_per_group(optimizer, lr_lambda)
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        _one_function_per_group_still(self)
        return [base * fn(self.last_epoch) for base, fn in zip(self.base_lrs, self.lr_lambdas)]

    def state_dict(self):
        """As torch: the functions are rebuilt by the code, not saved (a callable object's
        attributes are)."""
        state = {k: v for k, v in self.__dict__.items() if k not in ("optimizer", "lr_lambdas")}
        state["lr_lambdas"] = _functions_state(self.lr_lambdas)
        return state

    def load_state_dict(self, state_dict):
        state = dict(state_dict)
        lambdas = state.pop("lr_lambdas", [None] * len(self.lr_lambdas))
        _take_state(self, state)
        for fn, saved in zip(self.lr_lambdas, lambdas):
            if saved is not None:
                fn.__dict__.update(saved)


class MultiplicativeLR(LambdaLR):
    """Multiply each group's current lr by ``lr_lambda(last_epoch)`` every step
    (``torch.optim.lr_scheduler.MultiplicativeLR``): a factor per step, where ``LambdaLR``'s is the whole
    factor on the initial lr. A hand-changed lr is therefore kept and scaled on."""

    def get_lr(self):
        if self._is_initial:
            return self._current_lrs()
        _one_function_per_group_still(self)
        return [lr * fn(self.last_epoch) for lr, fn in zip(self._current_lrs(), self.lr_lambdas)]


class StepLR(LRScheduler):
    """Multiply the lr by ``gamma`` every ``step_size`` steps."""

    def __init__(self, optimizer, step_size, gamma=0.1, last_epoch=-1):
        self.step_size, self.gamma = step_size, gamma
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        if self.last_epoch == 0 or self.last_epoch % self.step_size != 0:
            return self._current_lrs()
        return [lr * self.gamma for lr in self._current_lrs()]

    def _get_closed_form_lr(self):
        return [base * self.gamma ** (self.last_epoch // self.step_size) for base in self.base_lrs]


class MultiStepLR(LRScheduler):
    """Multiply the lr by ``gamma`` at each step listed in ``milestones`` (a repeated milestone
    multiplies once per repetition, as torch)."""

    def __init__(self, optimizer, milestones, gamma=0.1, last_epoch=-1):
        self.milestones, self.gamma = Counter(milestones), gamma
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        if self.last_epoch not in self.milestones:
            return self._current_lrs()
        return [lr * self.gamma ** self.milestones[self.last_epoch] for lr in self._current_lrs()]

    def load_state_dict(self, state_dict):
        """The milestones come back as a ``Counter`` even from a checkpoint that stored them as a plain
        dict (``minilora.train.save_training_state`` writes JSON)."""
        super().load_state_dict(state_dict)
        self.milestones = Counter(self.milestones)

    def _get_closed_form_lr(self):
        milestones = sorted(self.milestones.elements())
        return [base * self.gamma ** bisect_right(milestones, self.last_epoch) for base in self.base_lrs]


class ConstantLR(LRScheduler):
    """The lr times ``factor`` for the first ``total_iters`` steps, then the lr itself."""

    def __init__(self, optimizer, factor=1.0 / 3, total_iters=5, last_epoch=-1):
        if factor > 1.0 or factor < 0:
            raise ValueError("Constant multiplicative factor expected to be between 0 and 1.")
        self.factor, self.total_iters = factor, total_iters
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        if self.last_epoch == 0:
            return [lr * self.factor for lr in self._current_lrs()]
        if self.last_epoch != self.total_iters:
            return self._current_lrs()
        return [lr * (1.0 / self.factor) for lr in self._current_lrs()]

    def _get_closed_form_lr(self):
        return [base * (self.factor + (self.last_epoch >= self.total_iters) * (1 - self.factor))
                for base in self.base_lrs]


class LinearLR(LRScheduler):
    """The factor on the lr goes linearly from ``start_factor`` to ``end_factor`` over
    ``total_iters`` steps, then stays."""

    def __init__(self, optimizer, start_factor=1.0 / 3, end_factor=1.0, total_iters=5, last_epoch=-1):
        if start_factor > 1.0 or start_factor <= 0:
            raise ValueError("Starting multiplicative factor expected to be greater than 0 and less "
                             "or equal to 1.")
        if end_factor > 1.0 or end_factor < 0:
            raise ValueError("Ending multiplicative factor expected to be between 0 and 1.")
        self.start_factor, self.end_factor, self.total_iters = start_factor, end_factor, total_iters
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        if self.last_epoch == 0:
            return [lr * self.start_factor for lr in self._current_lrs()]
        if self._is_initial or self.last_epoch > self.total_iters:
            return self._current_lrs()
        # factor(t) / factor(t - 1), so that the products chain to factor(t) * initial lr
        change = self.end_factor - self.start_factor
        ratio = 1.0 + change / (self.total_iters * self.start_factor + (self.last_epoch - 1) * change)
        return [lr * ratio for lr in self._current_lrs()]

    def _get_closed_form_lr(self):
        change = self.end_factor - self.start_factor
        return [base * (self.start_factor + change * min(self.total_iters, self.last_epoch) / self.total_iters)
                for base in self.base_lrs]


class ExponentialLR(LRScheduler):
    """Multiply the lr by ``gamma`` every step."""

    def __init__(self, optimizer, gamma, last_epoch=-1):
        self.gamma = gamma
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        if self._is_initial:
            return self._current_lrs()
        return [lr * self.gamma for lr in self._current_lrs()]

    def _get_closed_form_lr(self):
        return [base * self.gamma ** self.last_epoch for base in self.base_lrs]


class CosineAnnealingLR(LRScheduler):
    """``eta_min + (initial_lr - eta_min) * (1 + cos(pi * t / T_max)) / 2``, reached step by step
    as torch computes it (past ``T_max`` the cosine goes back up)."""

    def __init__(self, optimizer, T_max, eta_min=0.0, last_epoch=-1):
        self.T_max, self.eta_min = T_max, eta_min
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        t, t_max, low = self.last_epoch, self.T_max, self.eta_min
        if self._is_initial:
            return self._current_lrs()
        if self._step_count == 1 and t > 0:
            return [low + (base - low) * (1 + math.cos(t * math.pi / t_max)) / 2 for base in self.base_lrs]
        if (t - 1 - t_max) % (2 * t_max) == 0:  # the bottom of the wave: turn upwards
            return [lr + (base - low) * (1 - math.cos(math.pi / t_max)) / 2
                    for base, lr in zip(self.base_lrs, self._current_lrs())]
        return [(1 + math.cos(math.pi * t / t_max)) / (1 + math.cos(math.pi * (t - 1) / t_max)) * (lr - low) + low
                for lr in self._current_lrs()]

    def _get_closed_form_lr(self):
        return [self.eta_min + (base - self.eta_min) * (1 + math.cos(math.pi * self.last_epoch / self.T_max)) / 2
                for base in self.base_lrs]


class CosineAnnealingWarmRestarts(LRScheduler):
    """SGDR: ``eta_min + (initial_lr - eta_min) * (1 + cos(pi * T_cur / T_i)) / 2``, where
    ``T_cur`` counts the steps since the last restart and the period ``T_i`` starts at ``T_0`` and
    is multiplied by ``T_mult`` at each restart (``torch.optim.lr_scheduler.CosineAnnealingWarmRestarts``).
    ``step(epoch)`` may take a fractional epoch (``epoch + i / iters`` inside an epoch), as torch."""

    def __init__(self, optimizer, T_0, T_mult=1, eta_min=0.0, last_epoch=-1):
        if T_0 <= 0 or not isinstance(T_0, int):
            raise ValueError(f"Expected positive integer T_0, but got {T_0}")
        if T_mult < 1 or not isinstance(T_mult, int):
            raise ValueError(f"Expected integer T_mult >= 1, but got {T_mult}")
        if not isinstance(eta_min, (float, int)):
            raise ValueError(f"Expected float or int eta_min, but got {eta_min} of type {type(eta_min)}")
        self.T_0, self.T_i, self.T_mult, self.eta_min = T_0, T_0, T_mult, eta_min
        self.T_cur = last_epoch
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        return [self.eta_min + (base - self.eta_min) * (1 + math.cos(math.pi * self.T_cur / self.T_i)) / 2
                for base in self.base_lrs]

    def step(self, epoch=None):
        # (no self._step_count += 1: torch's override counts nothing, so its state_dict says 0, as this one's)
        if epoch is None and self.last_epoch < 0:
            epoch = 0
        if epoch is None:  # one more step: restart when the period is over
            epoch = self.last_epoch + 1
            self.T_cur += 1
            if self.T_cur >= self.T_i:
                self.T_cur, self.T_i = self.T_cur % self.T_i, self.T_i * self.T_mult
        else:  # jump to ``epoch``: which period it falls in, and where in it
            if epoch < 0:
                raise ValueError(f"Expected non-negative epoch, but got {epoch}")
            if epoch < self.T_0:
                self.T_i, self.T_cur = self.T_0, epoch
            elif self.T_mult == 1:
                self.T_cur = epoch % self.T_0
            else:
                n = int(math.log((epoch / self.T_0 * (self.T_mult - 1) + 1), self.T_mult))
                self.T_cur = epoch - self.T_0 * (self.T_mult ** n - 1) / (self.T_mult - 1)
                self.T_i = self.T_0 * self.T_mult ** n
        self.last_epoch = math.floor(epoch)
        with _within_step(self):
            lrs = self.get_lr()
        for group, lr in _one_per_group(self, lrs, "lr"):
            set_lr(group, lr)
        self._last_lr = self._current_lrs()


class PolynomialLR(LRScheduler):
    """``initial_lr * (1 - t / total_iters) ** power`` for ``t <= total_iters``, then constant
    (``torch.optim.lr_scheduler.PolynomialLR``), step by step as torch: each step multiplies the
    current lr by the ratio of two consecutive factors."""

    def __init__(self, optimizer, total_iters=5, power=1.0, last_epoch=-1):
        self.total_iters, self.power = total_iters, power
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        if self._is_initial or self.last_epoch > self.total_iters:
            return self._current_lrs()
        t, n = self.last_epoch, self.total_iters
        factor = ((1.0 - t / n) / (1.0 - (t - 1) / n)) ** self.power
        return [lr * factor for lr in self._current_lrs()]

    def _get_closed_form_lr(self):
        return [base * (1.0 - min(self.total_iters, self.last_epoch) / self.total_iters) ** self.power
                for base in self.base_lrs]


class OneCycleLR(LRScheduler):
    """The 1cycle policy: lr from ``max_lr / div_factor`` up to ``max_lr`` over ``pct_start`` of
    the steps, then down to ``initial_lr / final_div_factor`` (``three_phase``: back to the initial
    lr first). With ``cycle_momentum`` the momentum (SGD's ``momentum``, Adam's beta1) moves the
    opposite way between ``max_momentum`` and ``base_momentum``, as torch."""

    def __init__(self, optimizer, max_lr, total_steps=None, epochs=None, steps_per_epoch=None,
                 pct_start=0.3, anneal_strategy="cos", cycle_momentum=True, base_momentum=0.85,
                 max_momentum=0.95, div_factor=25.0, final_div_factor=1e4, three_phase=False,
                 last_epoch=-1):
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"{type(optimizer).__name__} is not an Optimizer")
        self.total_steps = _total_steps(total_steps, epochs, steps_per_epoch)
        if pct_start < 0 or pct_start > 1 or not isinstance(pct_start, float):
            raise ValueError(f"Expected float between 0 and 1 pct_start, but got {pct_start}")
        if anneal_strategy not in ("cos", "linear"):
            raise ValueError(f"anneal_strategy must be one of 'cos' or 'linear', instead got {anneal_strategy}")
        warmup_end = float(pct_start * self.total_steps) - 1
        # each phase: its last step, and the names of the group entries its lr and momentum go from and to
        if three_phase:
            phases = [(warmup_end, "initial_lr", "max_lr", "max_momentum", "base_momentum"),
                      (float(2 * pct_start * self.total_steps) - 2, "max_lr", "initial_lr",
                       "base_momentum", "max_momentum"),
                      (self.total_steps - 1, "initial_lr", "min_lr", "max_momentum", "max_momentum")]
        else:
            phases = [(warmup_end, "initial_lr", "max_lr", "max_momentum", "base_momentum"),
                      (self.total_steps - 1, "max_lr", "min_lr", "base_momentum", "max_momentum")]
        self._schedule_phases = [dict(zip(("end_step", "start_lr", "end_lr", "start_momentum", "end_momentum"), phase))
                                 for phase in phases]
        # (torch's attribute names, in its order: its state_dict loads here, and prints keys in the same order)
        self._anneal_func_type = anneal_strategy
        groups = optimizer.param_groups
        peaks = _per_group("max_lr", groups, max_lr)  # (checked on a resume too, as torch: before its initial_lr check)
        if last_epoch == -1:
            for group, peak in zip(groups, peaks):
                group["initial_lr"] = peak / div_factor
                group["max_lr"] = peak
                group["min_lr"] = group["initial_lr"] / final_div_factor
        self.cycle_momentum = cycle_momentum
        if cycle_momentum:
            if "momentum" not in optimizer.defaults and "betas" not in optimizer.defaults:
                raise ValueError("optimizer must support momentum or beta1 with `cycle_momentum` option enabled")
            self.use_beta1 = "betas" in optimizer.defaults
            tops, bottoms = _per_group("max_momentum", groups, max_momentum), _per_group("base_momentum", groups,
                                                                                         base_momentum)
            if last_epoch == -1:
                for group, top, bottom in zip(groups, tops, bottoms):
                    self._set_momentum(group, top)
                    group["max_momentum"], group["base_momentum"] = top, bottom
        super().__init__(optimizer, last_epoch)

    def _set_momentum(self, group, value):
        if self.use_beta1:
            group["betas"] = (value, *group["betas"][1:])
        else:
            group["momentum"] = value

    def _anneal(self, start, end, pct):
        if self._anneal_func_type == "cos":
            return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)
        return (end - start) * pct + start

    def get_lr(self):
        step = self.last_epoch
        if step > self.total_steps:
            raise ValueError(f"Tried to step {step} times. The specified number of total steps is "
                             f"{self.total_steps}")
        lrs = []
        for group in self.optimizer.param_groups:
            start = 0.0
            for i, phase in enumerate(self._schedule_phases):
                end = phase["end_step"]
                if step <= end or i == len(self._schedule_phases) - 1:
                    pct = (step - start) / (end - start)
                    lrs.append(self._anneal(group[phase["start_lr"]], group[phase["end_lr"]], pct))
                    if self.cycle_momentum:
                        momentum = self._anneal(group[phase["start_momentum"]], group[phase["end_momentum"]], pct)
                        self._set_momentum(group, momentum)
                    break
                start = end
        return lrs


def _total_steps(total_steps, epochs, steps_per_epoch):
    if total_steps is not None:
        if not isinstance(total_steps, int) or total_steps <= 0:
            raise ValueError(f"Expected positive integer total_steps, but got {total_steps}")
        return total_steps
    if epochs is not None and steps_per_epoch is not None:
        if not isinstance(epochs, int) or epochs <= 0:
            raise ValueError(f"Expected positive integer epochs, but got {epochs}")
        if not isinstance(steps_per_epoch, int) or steps_per_epoch <= 0:
            raise ValueError(f"Expected positive integer steps_per_epoch, but got {steps_per_epoch}")
        return epochs * steps_per_epoch
    raise ValueError("You must define either total_steps OR (epochs AND steps_per_epoch)")


def _per_group(name, groups, value):
    """One value per parameter group: a list of them, or one value for all (torch's words when the list
    does not fit)."""
    if isinstance(value, (list, tuple)):
        if len(value) != len(groups):
            raise ValueError(f"{name} must have the same length as optimizer.param_groups. {name} has "
                             f"{len(value)} values, param_groups has {len(groups)}.")
        return list(value)
    return [value] * len(groups)


class _OfSchedulers(LRScheduler):
    """A scheduler made of schedulers (SequentialLR, ChainedScheduler): its state holds each one's own."""

    def state_dict(self):
        state = {k: v for k, v in self.__dict__.items() if k not in ("optimizer", "_schedulers")}
        state["_schedulers"] = [s.state_dict() for s in self._schedulers]
        return state

    def load_state_dict(self, state_dict):
        state = dict(state_dict)
        saved = state.pop("_schedulers")
        _take_state(self, state)
        for scheduler, sub in zip(self._schedulers, saved):
            scheduler.load_state_dict(sub)


class SequentialLR(_OfSchedulers):
    """``schedulers[0]`` until ``milestones[0]``, then ``schedulers[1]`` (restarted at its step 0),
    and so on, as ``torch.optim.lr_scheduler.SequentialLR``."""

    def __init__(self, optimizer, schedulers, milestones, last_epoch=-1):
        if len(schedulers) < 1:
            raise ValueError("SequentialLR expects at least one scheduler, but got no scheduler.")
        for i, scheduler in enumerate(schedulers):
            if getattr(scheduler, "optimizer", None) is not optimizer:
                raise ValueError(f"SequentialLR expects all schedulers to belong to the same optimizer, "
                                 f"but scheduler {i} ({type(scheduler).__name__}) has another one")
        if len(milestones) != len(schedulers) - 1:
            raise ValueError(f"Sequential Schedulers expects number of schedulers provided to be one more "
                             f"than the number of milestone points, but got number of schedulers "
                             f"{len(schedulers)} and the number of milestones to be equal to {len(milestones)}")
        self._schedulers, self._milestones = list(schedulers), list(milestones)
        self.last_epoch = last_epoch + 1
        self.optimizer = optimizer
        # Each scheduler already took its step 0 when it was built: undo those, start the first.
        for group in optimizer.param_groups:
            set_lr(group, group["initial_lr"])
        for scheduler in self._schedulers:
            scheduler.last_epoch -= 1
        first = self._schedulers[bisect_right(self._milestones, 0)]
        first._initial_step()
        self._last_lr = first.get_last_lr()

    def step(self):
        self.last_epoch += 1
        index = bisect_right(self._milestones, self.last_epoch)
        scheduler = self._schedulers[index]
        if index > 0 and self._milestones[index - 1] == self.last_epoch:
            scheduler._update_lr(0)  # this scheduler starts now, at its step 0 (closed form)
        else:
            scheduler.step()
        self._last_lr = scheduler.get_last_lr()


class ChainedScheduler(_OfSchedulers):
    """Step every scheduler of ``schedulers`` at each ``step()``, in order, so their factors multiply
    (``torch.optim.lr_scheduler.ChainedScheduler``): ``ChainedScheduler([ConstantLR(opt, 0.1, 5),
    ExponentialLR(opt, 0.9)])``. The chainable formulas of those schedulers are what makes this work."""

    def __init__(self, schedulers, optimizer=None):
        if len(schedulers) < 1:
            raise ValueError("ChainedScheduler expects at least one scheduler to be chained, but got no scheduler.")
        optimizer = optimizer or schedulers[0].optimizer
        for i, scheduler in enumerate(schedulers):
            if not hasattr(scheduler, "optimizer"):
                raise TypeError(f"ChainedScheduler at index {i} should have `optimizer` as its attribute.")
            if isinstance(scheduler, ReduceLROnPlateau):
                raise ValueError(f"ChainedScheduler does not support `ReduceLROnPlateau` scheduler as it requires "
                                 f"additional kwargs to be specified when calling `step`, but got one at index "
                                 f"{i} in the given schedulers sequence.")
            if scheduler.optimizer is not optimizer:
                raise ValueError(f"ChainedScheduler expects all schedulers to belong to the same optimizer, but "
                                 f"got scheduler {type(scheduler).__name__} at index {i} with another one.")
        self._schedulers, self.optimizer = list(schedulers), optimizer
        self._last_lr = self._current_lrs()

    def step(self):
        for scheduler in self._schedulers:
            scheduler.step()
        self._last_lr = self._current_lrs()


class CyclicLR(LRScheduler):
    """The lr goes back and forth between ``base_lr`` and ``max_lr`` (``torch.optim.lr_scheduler.CyclicLR``,
    Smith's cyclical learning rates): up over ``step_size_up`` steps, down over ``step_size_down`` (default:
    the same), the swing scaled by ``mode``: ``"triangular"`` (always full), ``"triangular2"`` (halved each
    cycle), ``"exp_range"`` (times ``gamma ** step``), or by your ``scale_fn`` of the cycle number or of the
    step (``scale_mode``). It sets the lr from scratch each step (a hand-changed lr is overwritten). With
    ``cycle_momentum`` the momentum (SGD's ``momentum``, Adam's beta1) swings the opposite way, between
    ``max_momentum`` and ``base_momentum``."""

    def __init__(self, optimizer, base_lr, max_lr, step_size_up=2000, step_size_down=None, mode="triangular",
                 gamma=1.0, scale_fn=None, scale_mode="cycle", cycle_momentum=True, base_momentum=0.8,
                 max_momentum=0.9, last_epoch=-1):
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"{type(optimizer).__name__} is not an Optimizer")
        self.optimizer = optimizer
        groups = optimizer.param_groups
        base_lrs = _per_group("base_lr", groups, base_lr)
        if last_epoch == -1:
            for group, lr in zip(groups, base_lrs):
                set_lr(group, lr)
        self.max_lrs = _per_group("max_lr", groups, max_lr)
        up = float(step_size_up)
        down = float(step_size_down) if step_size_down is not None else up
        self.total_size = up + down
        self.step_ratio = up / self.total_size  # the share of a cycle spent going up
        if mode not in ("triangular", "triangular2", "exp_range") and scale_fn is None:
            raise ValueError("mode is invalid and scale_fn is None")
        self.mode, self.gamma, self.scale_mode = mode, gamma, scale_mode
        self._scale_fn_custom = scale_fn
        self._init_scale_mode()
        self.cycle_momentum = cycle_momentum
        if cycle_momentum:
            if "momentum" not in optimizer.defaults and "betas" not in optimizer.defaults:
                raise ValueError("optimizer must support momentum or beta1 with `cycle_momentum` option enabled")
            self.use_beta1 = "betas" in optimizer.defaults
            self.base_momentums = _per_group("base_momentum", groups, base_momentum)
            self.max_momentums = _per_group("max_momentum", groups, max_momentum)
            if last_epoch == -1:
                for group, top, bottom in zip(groups, self.max_momentums, self.base_momentums):
                    self._set_momentum(group, top)
                    group["max_momentum"], group["base_momentum"] = top, bottom
        super().__init__(optimizer, last_epoch)
        self.base_lrs = base_lrs

    _set_momentum = OneCycleLR._set_momentum

    def _init_scale_mode(self):
        """The built-in modes fix what the scale is a function of: the cycle, or (exp_range) the step."""
        if self._scale_fn_custom is None:
            self.scale_mode = "iterations" if self.mode == "exp_range" else "cycle"

    def scale_fn(self, x):
        """The swing's scale at ``x`` (the cycle number, or the step for ``scale_mode='iterations'``)."""
        if self._scale_fn_custom is not None:
            return self._scale_fn_custom(x)
        if self.mode == "triangular":
            return 1.0
        if self.mode == "triangular2":
            return 1 / (2.0 ** (x - 1))
        return self.gamma ** x

    def get_lr(self):
        cycle = math.floor(1 + self.last_epoch / self.total_size)
        x = 1.0 + self.last_epoch / self.total_size - cycle  # where in the cycle, 0..1
        height = x / self.step_ratio if x <= self.step_ratio else (x - 1) / (self.step_ratio - 1)
        scale = self.scale_fn(cycle if self.scale_mode == "cycle" else self.last_epoch)
        lrs = [low + (high - low) * height * scale for low, high in zip(self.base_lrs, self.max_lrs)]
        if self.cycle_momentum:
            momentums = [high - (high - low) * height * scale
                         for low, high in zip(self.base_momentums, self.max_momentums)]
            for group, momentum in _one_per_group(self, momentums, "momentum"):
                self._set_momentum(group, momentum)
        return lrs

    def state_dict(self):
        state = {k: v for k, v in self.__dict__.items() if k not in ("optimizer", "_scale_fn_custom")}
        fn = self._scale_fn_custom
        state["_scale_fn_custom"] = None if fn is None else _functions_state([fn])[0]
        return state

    def load_state_dict(self, state_dict):
        state = dict(state_dict)
        saved = state.pop("_scale_fn_custom", None)
        _take_state(self, state)
        if saved is not None:
            self._scale_fn_custom.__dict__.update(saved)
        self._init_scale_mode()


# --- the factor functions (module level, so a scheduler can be pickled) ----------------------------
def _constant(_step):
    return 1.0


def _warmup(step, num_warmup_steps):
    return float(step) / float(max(1, num_warmup_steps))


def _constant_with_warmup(step, *, num_warmup_steps):
    return _warmup(step, num_warmup_steps) if step < num_warmup_steps else 1.0


def _linear_with_warmup(step, *, num_warmup_steps, num_training_steps):
    if step < num_warmup_steps:
        return _warmup(step, num_warmup_steps)
    return max(0.0, float(num_training_steps - step) / float(max(1, num_training_steps - num_warmup_steps)))


def _cosine_with_warmup(step, *, num_warmup_steps, num_training_steps, num_cycles):
    # EXERCISE 6.3: the cosine factor: linear warmup to 1, then num_cycles cosine waves (0.5: from 1 down to 0)
    # BEGIN SOLUTION
    if step < num_warmup_steps:
        return _warmup(step, num_warmup_steps)
    progress = float(step - num_warmup_steps) / float(max(1, num_training_steps - num_warmup_steps))
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * float(num_cycles) * 2.0 * progress)))
    # END SOLUTION


# --- the transformers names ------------------------------------------------------------------------
class ReduceLROnPlateau(LRScheduler):
    """Multiply each group's lr by ``factor`` once the metric given to ``step(metric)`` has not
    improved for more than ``patience`` steps (``torch.optim.lr_scheduler.ReduceLROnPlateau``).

    "Improved" means better than the best so far by more than ``threshold``: relative
    (``threshold_mode='rel'``: below ``best * (1 - threshold)`` in ``mode='min'``) or absolute
    (``'abs'``: below ``best - threshold``); ``mode='max'`` mirrors it. After a reduction
    ``cooldown`` steps pass before bad steps count again. No lr goes below ``min_lr`` (one number,
    or one per group), and a change smaller than ``eps`` is not made. Unlike the other schedulers
    it takes no step at creation and its ``step`` needs the metric.
    """

    def __init__(self, optimizer, mode="min", factor=0.1, patience=10, threshold=1e-4,
                 threshold_mode="rel", cooldown=0, min_lr=0, eps=1e-8):
        if factor >= 1.0:
            raise ValueError("Factor should be < 1.0.")
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"{type(optimizer).__name__} is not an Optimizer")
        self.factor, self.optimizer = factor, optimizer
        groups = optimizer.param_groups
        if isinstance(min_lr, (list, tuple)):
            if len(min_lr) != len(groups):
                raise ValueError(f"expected {len(groups)} min_lrs, got {len(min_lr)}")
            self.default_min_lr, self.min_lrs = None, list(min_lr)
        else:
            self.default_min_lr, self.min_lrs = min_lr, [min_lr] * len(groups)
        self.patience, self.cooldown, self.eps = patience, cooldown, eps
        self.last_epoch = 0
        self._last_lr = self._current_lrs()
        self._init_is_better(mode, threshold, threshold_mode)
        self._reset()

    def _init_is_better(self, mode, threshold, threshold_mode):
        if mode not in ("min", "max"):
            raise ValueError(f"mode {mode} is unknown!")
        if threshold_mode not in ("rel", "abs"):
            raise ValueError(f"threshold mode {threshold_mode} is unknown!")
        self.mode_worse = math.inf if mode == "min" else -math.inf
        self.mode, self.threshold, self.threshold_mode = mode, threshold, threshold_mode

    def _reset(self):
        self.best, self.cooldown_counter, self.num_bad_epochs = self.mode_worse, 0, 0

    @property
    def in_cooldown(self):
        return self.cooldown_counter > 0

    def _is_better(self, a, best):
        relative = self.threshold_mode == "rel"
        if self.mode == "min":
            return a < best * (1.0 - self.threshold) if relative else a < best - self.threshold
        return a > best * (self.threshold + 1.0) if relative else a > best + self.threshold

    def step(self, metrics, epoch=None):
        """Record this step's metric (a number or a 0-d tensor) and reduce the lrs if it is time."""
        current = float(metrics)
        if epoch is not None:
            warnings.warn(EPOCH_DEPRECATION_WARNING, UserWarning, stacklevel=2)
        self.last_epoch = self.last_epoch + 1 if epoch is None else epoch
        if self._is_better(current, self.best):
            self.best, self.num_bad_epochs = current, 0
        else:
            self.num_bad_epochs += 1
        if self.in_cooldown:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0  # bad steps during the cooldown do not count
        if self.num_bad_epochs > self.patience:
            self._reduce_lr()
            self.cooldown_counter, self.num_bad_epochs = self.cooldown, 0
        self._last_lr = self._current_lrs()

    def _reduce_lr(self):
        groups = self.optimizer.param_groups
        if len(groups) != len(self.min_lrs):  # a group added since: torch's rule
            if self.default_min_lr is None:
                raise RuntimeError(f"The number of param groups in the `optimizer` ({len(groups)}) "
                                   f"differs from when `ReduceLROnPlateau` was initialized "
                                   f"({len(self.min_lrs)}); set `min_lrs` to match.")
            self.min_lrs = [self.default_min_lr] * len(groups)
        for group, min_lr in zip(groups, self.min_lrs):
            old = float(group["lr"])
            new = max(old * self.factor, min_lr)
            if old - new > self.eps:
                set_lr(group, new)

    def load_state_dict(self, state_dict):
        _take_state(self, state_dict)
        self._init_is_better(self.mode, self.threshold, self.threshold_mode)


def get_constant_schedule(optimizer, last_epoch=-1):
    """The learning rate stays as set in the optimizer."""
    return LambdaLR(optimizer, _constant, last_epoch)


def get_constant_schedule_with_warmup(optimizer, num_warmup_steps, last_epoch=-1):
    """Linear warmup from 0, then constant."""
    return LambdaLR(optimizer, functools.partial(_constant_with_warmup, num_warmup_steps=num_warmup_steps),
                    last_epoch)


def get_linear_schedule_with_warmup(optimizer, num_warmup_steps, num_training_steps, last_epoch=-1):
    """Linear warmup from 0, then linear decay to 0 at ``num_training_steps``."""
    fn = functools.partial(_linear_with_warmup, num_warmup_steps=num_warmup_steps,
                 num_training_steps=num_training_steps)
    return LambdaLR(optimizer, fn, last_epoch)


def get_cosine_schedule_with_warmup(optimizer, num_warmup_steps, num_training_steps, num_cycles=0.5,
                                    last_epoch=-1):
    """Linear warmup from 0, then a cosine from the initial lr down to 0 (``num_cycles`` waves)."""
    fn = functools.partial(_cosine_with_warmup, num_warmup_steps=num_warmup_steps,
                 num_training_steps=num_training_steps, num_cycles=num_cycles)
    return LambdaLR(optimizer, fn, last_epoch)


def _cosine_with_hard_restarts(step, *, num_warmup_steps, num_training_steps, num_cycles):
    if step < num_warmup_steps:
        return _warmup(step, num_warmup_steps)
    progress = float(step - num_warmup_steps) / float(max(1, num_training_steps - num_warmup_steps))
    if progress >= 1.0:
        return 0.0
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * ((float(num_cycles) * progress) % 1.0))))


def _polynomial_with_warmup(step, *, num_warmup_steps, num_training_steps, lr_end, power, lr_init):
    if step < num_warmup_steps:
        return _warmup(step, num_warmup_steps)
    if step > num_training_steps:
        return lr_end / lr_init  # (LambdaLR multiplies by the initial lr)
    remaining = 1 - (step - num_warmup_steps) / (num_training_steps - num_warmup_steps)
    return ((lr_init - lr_end) * remaining ** power + lr_end) / lr_init


def _inverse_sqrt(step, *, num_warmup_steps, timescale):
    if step < num_warmup_steps:
        return _warmup(step, num_warmup_steps)
    return 1.0 / math.sqrt((step + timescale - num_warmup_steps) / timescale)


def _cosine_with_min_lr(step, *, num_warmup_steps, num_training_steps, num_cycles, min_lr_rate):
    if step < num_warmup_steps:
        return _warmup(step, num_warmup_steps)
    progress = float(step - num_warmup_steps) / float(max(1, num_training_steps - num_warmup_steps))
    factor = 0.5 * (1.0 + math.cos(math.pi * float(num_cycles) * 2.0 * progress))
    return max(0, factor * (1 - min_lr_rate) + min_lr_rate)


def get_cosine_with_hard_restarts_schedule_with_warmup(optimizer, num_warmup_steps, num_training_steps, num_cycles=1,
                                                       last_epoch=-1):
    """Linear warmup from 0, then ``num_cycles`` cosine waves from the initial lr down to 0, each restarting
    at the top (hard restarts)."""
    fn = functools.partial(_cosine_with_hard_restarts, num_warmup_steps=num_warmup_steps,
                           num_training_steps=num_training_steps, num_cycles=num_cycles)
    return LambdaLR(optimizer, fn, last_epoch)


def get_polynomial_decay_schedule_with_warmup(optimizer, num_warmup_steps, num_training_steps, lr_end=1e-7, power=1.0,
                                              last_epoch=-1):
    """Linear warmup from 0, then ``(lr - lr_end) * remaining ** power + lr_end`` down to ``lr_end`` at
    ``num_training_steps``. As transformers, the lr it decays from is the optimizer's default ``lr``."""
    lr_init = optimizer.defaults["lr"]
    if not lr_init > lr_end:
        raise ValueError(f"lr_end ({lr_end}) must be smaller than initial lr ({lr_init})")
    fn = functools.partial(_polynomial_with_warmup, num_warmup_steps=num_warmup_steps,
                           num_training_steps=num_training_steps, lr_end=lr_end, power=power, lr_init=lr_init)
    return LambdaLR(optimizer, fn, last_epoch)


def get_inverse_sqrt_schedule(optimizer, num_warmup_steps, timescale=None, last_epoch=-1):
    """Linear warmup from 0, then ``1 / sqrt((step + timescale - num_warmup_steps) / timescale)``
    (``timescale`` defaults to ``num_warmup_steps``, or 10000 without warmup)."""
    if timescale is None:
        timescale = num_warmup_steps or 10_000
    fn = functools.partial(_inverse_sqrt, num_warmup_steps=num_warmup_steps, timescale=timescale)
    return LambdaLR(optimizer, fn, last_epoch=last_epoch)


def get_reduce_on_plateau_schedule(optimizer, **kwargs):
    """``ReduceLROnPlateau(optimizer, **kwargs)`` under its transformers name (``step(metric)`` each evaluation)."""
    return ReduceLROnPlateau(optimizer, **kwargs)


def _min_lr_rate(optimizer, min_lr, min_lr_rate):
    """The floor of a min-lr cosine as a share of the optimizer's lr: ``min_lr_rate``, or ``min_lr`` over the lr."""
    if min_lr is not None and min_lr_rate is not None:
        raise ValueError("Only one of min_lr or min_lr_rate should be set")
    if min_lr is not None:
        return min_lr / optimizer.defaults["lr"]
    if min_lr_rate is None:
        raise ValueError("One of min_lr or min_lr_rate should be set through the `lr_scheduler_kwargs`")
    return min_lr_rate


def get_cosine_with_min_lr_schedule_with_warmup(optimizer, num_warmup_steps, num_training_steps, num_cycles=0.5,
                                                last_epoch=-1, min_lr=None, min_lr_rate=None):
    """``get_cosine_schedule_with_warmup`` whose wave ends at ``min_lr`` (or ``min_lr_rate`` times the
    optimizer's default lr) instead of 0."""
    min_lr_rate = _min_lr_rate(optimizer, min_lr, min_lr_rate)
    fn = functools.partial(_cosine_with_min_lr, num_warmup_steps=num_warmup_steps,
                           num_training_steps=num_training_steps, num_cycles=num_cycles, min_lr_rate=min_lr_rate)
    return LambdaLR(optimizer, fn, last_epoch)


def _cosine_with_min_lr_rate(step, *, num_warmup_steps, num_training_steps, num_cycles, min_lr_rate,
                             warmup_lr_rate):
    """transformers' cosine_warmup_with_min_lr: the warmup starts at ``warmup_lr_rate`` (else 1/warmup) and
    the wave counts the step just taken (``+ 1``), so it reaches ``min_lr_rate`` on the last step."""
    step, num_warmup_steps, num_training_steps = float(step), float(num_warmup_steps), float(num_training_steps)
    if step < num_warmup_steps:
        if warmup_lr_rate is None:
            return (step + 1.0) / max(1.0, num_warmup_steps)
        warmup_lr_rate = float(warmup_lr_rate)
        return warmup_lr_rate + (1.0 - warmup_lr_rate) * step / max(1, num_warmup_steps - 1)
    progress = (step - num_warmup_steps + 1.0) / max(1.0, num_training_steps - num_warmup_steps)
    factor = 0.5 * (1.0 + math.cos(math.pi * num_cycles * 2.0 * progress))
    return max(0, factor * (1 - min_lr_rate) + min_lr_rate)


def get_cosine_with_min_lr_schedule_with_warmup_lr_rate(optimizer, num_warmup_steps, num_training_steps,
                                                        num_cycles=0.5, last_epoch=-1, min_lr=None, min_lr_rate=None,
                                                        warmup_lr_rate=None):
    """transformers' ``cosine_warmup_with_min_lr``: ``get_cosine_with_min_lr_schedule_with_warmup`` whose warmup
    starts at ``warmup_lr_rate`` and whose wave is one step ahead."""
    min_lr_rate = _min_lr_rate(optimizer, min_lr, min_lr_rate)
    fn = functools.partial(_cosine_with_min_lr_rate, num_warmup_steps=num_warmup_steps,
                           num_training_steps=num_training_steps, num_cycles=num_cycles, min_lr_rate=min_lr_rate,
                           warmup_lr_rate=warmup_lr_rate)
    return LambdaLR(optimizer, fn, last_epoch)


_WSD_SHAPES = ("linear", "cosine", "1-sqrt")


def _wsd_rise(progress, shape):
    """The warmup's factor at ``progress`` in [0, 1) for a ``warmup_type``."""
    if shape == "linear":
        return progress
    if shape == "cosine":
        return 0.5 * (1.0 - math.cos(math.pi * progress))
    return 1.0 - math.sqrt(1.0 - progress)


def _wsd_fall(progress, shape, num_cycles):
    """The decay's factor at ``progress`` in [0, 1) for a ``decay_type``."""
    if shape == "linear":
        return 1.0 - progress
    if shape == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * float(num_cycles) * 2.0 * progress))
    return 1.0 - math.sqrt(progress)


def _wsd(step, *, num_warmup_steps, num_stable_steps, num_decay_steps, warmup_type, decay_type, min_lr_ratio,
         num_cycles):
    if step < num_warmup_steps:
        factor = _wsd_rise(float(step) / float(max(1, num_warmup_steps)), warmup_type)
        return max(0.0, factor * (1.0 - min_lr_ratio) + min_lr_ratio)
    if step < num_warmup_steps + num_stable_steps:
        return 1.0
    if step < num_warmup_steps + num_stable_steps + num_decay_steps:
        progress = float(step - num_warmup_steps - num_stable_steps) / float(max(1, num_decay_steps))
        return max(0.0, _wsd_fall(progress, decay_type, num_cycles) * (1.0 - min_lr_ratio) + min_lr_ratio)
    return min_lr_ratio


def get_wsd_schedule(optimizer, num_warmup_steps, num_decay_steps, num_training_steps=None, num_stable_steps=None,
                     warmup_type="linear", decay_type="cosine", min_lr_ratio=0, num_cycles=0.5, last_epoch=-1):
    """transformers' ``warmup_stable_decay``: a warmup from ``min_lr_ratio`` to 1, a stable stretch, then a decay
    back to ``min_lr_ratio`` over ``num_decay_steps`` (each phase's shape: linear, cosine or 1-sqrt)."""
    if num_training_steps is None and num_stable_steps is None:
        raise ValueError("Either num_training_steps or num_stable_steps must be specified.")
    if num_training_steps is not None and num_stable_steps is not None:
        warnings.warn("Both num_training_steps and num_stable_steps are specified. num_stable_steps will be used.")
    if warmup_type not in _WSD_SHAPES:
        raise ValueError(f"Unknown warmup type: {warmup_type}, expected 'linear', 'cosine' or '1-sqrt'")
    if decay_type not in _WSD_SHAPES:
        raise ValueError(f"Unknown decay type: {decay_type}, expected 'linear', 'cosine' or '1-sqrt'")
    if num_stable_steps is None:
        num_stable_steps = num_training_steps - num_warmup_steps - num_decay_steps
    fn = functools.partial(_wsd, num_warmup_steps=num_warmup_steps, num_stable_steps=num_stable_steps,
                           num_decay_steps=num_decay_steps, warmup_type=warmup_type, decay_type=decay_type,
                           min_lr_ratio=min_lr_ratio, num_cycles=num_cycles)
    return LambdaLR(optimizer, fn, last_epoch)


# transformers' lr_scheduler_type names; each entry says what get_scheduler passes besides the optimizer
_SCHEDULES = {"linear": (get_linear_schedule_with_warmup, "warmup+training"),
              "cosine": (get_cosine_schedule_with_warmup, "warmup+training"),
              "cosine_with_restarts": (get_cosine_with_hard_restarts_schedule_with_warmup, "warmup+training"),
              "polynomial": (get_polynomial_decay_schedule_with_warmup, "warmup+training"),
              "constant": (get_constant_schedule, "nothing"),
              "constant_with_warmup": (get_constant_schedule_with_warmup, "warmup only"),
              "inverse_sqrt": (get_inverse_sqrt_schedule, "warmup"),
              "reduce_lr_on_plateau": (get_reduce_on_plateau_schedule, "kwargs"),
              "cosine_with_min_lr": (get_cosine_with_min_lr_schedule_with_warmup, "warmup+training"),
              "cosine_warmup_with_min_lr": (get_cosine_with_min_lr_schedule_with_warmup_lr_rate, "warmup+training"),
              "warmup_stable_decay": (get_wsd_schedule, "warmup+maybe training"),
              "greedy": (get_greedy_schedule, "kwargs")}
# transformers' SchedulerType, in its order (an unknown name is refused with this list, as there)
SCHEDULER_TYPES = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup",
                   "inverse_sqrt", "reduce_lr_on_plateau", "cosine_with_min_lr", "cosine_warmup_with_min_lr",
                   "warmup_stable_decay", "greedy")


def get_scheduler(name, optimizer, num_warmup_steps=None, num_training_steps=None, scheduler_specific_kwargs=None):
    """A schedule by its ``transformers`` name (``lr_scheduler_type``, a str or transformers' ``SchedulerType``),
    with transformers' rules: every schedule but constant, reduce_lr_on_plateau and greedy needs
    ``num_warmup_steps``, the decaying ones ``num_training_steps`` too; ``scheduler_specific_kwargs`` go to
    the schedule function (``{"num_cycles": 2}``, ``{"min_lr": 1e-6}``, ``{"patience": 3}``)."""
    key = getattr(name, "value", name)  # SchedulerType.COSINE -> "cosine"
    if key not in _SCHEDULES:
        raise ValueError(f"unknown schedule {key!r}: {key!r} is not a valid SchedulerType, please select one of "
                         f"{list(SCHEDULER_TYPES)}")
    function, needs = _SCHEDULES[key]
    kwargs = dict(scheduler_specific_kwargs or {})
    if needs == "nothing":
        return function(optimizer)
    if needs == "kwargs":
        return function(optimizer, **kwargs)
    label = f"SchedulerType.{key.upper()}"
    if num_warmup_steps is None:
        raise ValueError(f"{label} requires `num_warmup_steps`, please provide that argument.")
    if needs == "warmup only":
        return function(optimizer, num_warmup_steps=num_warmup_steps)
    if needs == "warmup":
        return function(optimizer, num_warmup_steps=num_warmup_steps, **kwargs)
    if needs == "warmup+maybe training":  # (warmup_stable_decay: num_stable_steps may stand for the count)
        return function(optimizer, num_warmup_steps=num_warmup_steps, num_training_steps=num_training_steps, **kwargs)
    if num_training_steps is None:
        raise ValueError(f"{label} requires `num_training_steps`, please provide that argument. (The {key!r} "
                         f"schedule needs num_training_steps: it ends there.)")
    return function(optimizer, num_warmup_steps=num_warmup_steps, num_training_steps=num_training_steps, **kwargs)
