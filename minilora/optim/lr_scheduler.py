"""Learning-rate schedules: ``LambdaLR`` and the Hugging Face schedule functions built on it.

A schedule multiplies each group's initial learning rate by ``lr_lambda(step)``. Call
``scheduler.step()`` once after every ``optimizer.step()``::

    scheduler = get_cosine_schedule_with_warmup(optimizer, num_warmup_steps=10, num_training_steps=100)
    for batch in data:
        loss.backward(); optimizer.step(); scheduler.step(); optimizer.zero_grad()

The factor functions are the ones ``transformers.get_*_schedule*`` use, step for step: warmup goes
linearly from 0 to 1 over ``num_warmup_steps``, then linear decay reaches 0 at
``num_training_steps`` and cosine follows half a cosine wave (``num_cycles=0.5``) down to 0.
"""
import math
from functools import partial

__all__ = ["LambdaLR", "get_constant_schedule", "get_constant_schedule_with_warmup",
           "get_linear_schedule_with_warmup", "get_cosine_schedule_with_warmup", "get_scheduler"]


class LambdaLR:
    """``lr = initial_lr * lr_lambda(last_epoch)`` for each group (``torch.optim.lr_scheduler.LambdaLR``).

    ``lr_lambda`` is one function or a list with one per parameter group. Creating the scheduler
    already applies step 0 (so a warmup starts at lr 0), as in PyTorch.
    """

    def __init__(self, optimizer, lr_lambda, last_epoch=-1):
        self.optimizer = optimizer
        groups = optimizer.param_groups
        for i, group in enumerate(groups):
            if last_epoch == -1:
                group.setdefault("initial_lr", group["lr"])
            elif "initial_lr" not in group:
                raise KeyError(f"param_groups[{i}] has no 'initial_lr': resuming a schedule "
                               f"(last_epoch={last_epoch}) needs the optimizer's state_dict loaded")
        self.base_lrs = [group["initial_lr"] for group in groups]
        if isinstance(lr_lambda, (list, tuple)):
            if len(lr_lambda) != len(groups):
                raise ValueError(f"expected {len(groups)} lr_lambdas (one per parameter group), "
                                 f"got {len(lr_lambda)}")
            self.lr_lambdas = list(lr_lambda)
        else:
            self.lr_lambdas = [lr_lambda] * len(groups)
        self.last_epoch = last_epoch
        self.step()

    def get_lr(self):
        return [base * fn(self.last_epoch) for base, fn in zip(self.base_lrs, self.lr_lambdas)]

    def step(self):
        """Advance one step and write the new learning rates into the optimizer's groups."""
        self.last_epoch += 1
        for group, lr in zip(self.optimizer.param_groups, self.get_lr()):
            group["lr"] = lr
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    def get_last_lr(self):
        """The learning rates the last ``step()`` set, one per group."""
        return list(self._last_lr)

    def state_dict(self):
        """Where the schedule stands (the functions are rebuilt by the code, not saved)."""
        return {"last_epoch": self.last_epoch, "base_lrs": list(self.base_lrs),
                "_last_lr": list(self._last_lr)}

    def load_state_dict(self, state_dict):
        self.last_epoch = state_dict["last_epoch"]
        self.base_lrs = list(state_dict["base_lrs"])
        self._last_lr = list(state_dict["_last_lr"])


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
def get_constant_schedule(optimizer, last_epoch=-1):
    """The learning rate stays as set in the optimizer."""
    return LambdaLR(optimizer, _constant, last_epoch)


def get_constant_schedule_with_warmup(optimizer, num_warmup_steps, last_epoch=-1):
    """Linear warmup from 0, then constant."""
    return LambdaLR(optimizer, partial(_constant_with_warmup, num_warmup_steps=num_warmup_steps),
                    last_epoch)


def get_linear_schedule_with_warmup(optimizer, num_warmup_steps, num_training_steps, last_epoch=-1):
    """Linear warmup from 0, then linear decay to 0 at ``num_training_steps``."""
    fn = partial(_linear_with_warmup, num_warmup_steps=num_warmup_steps,
                 num_training_steps=num_training_steps)
    return LambdaLR(optimizer, fn, last_epoch)


def get_cosine_schedule_with_warmup(optimizer, num_warmup_steps, num_training_steps, num_cycles=0.5,
                                    last_epoch=-1):
    """Linear warmup from 0, then a cosine from the initial lr down to 0 (``num_cycles`` waves)."""
    fn = partial(_cosine_with_warmup, num_warmup_steps=num_warmup_steps,
                 num_training_steps=num_training_steps, num_cycles=num_cycles)
    return LambdaLR(optimizer, fn, last_epoch)


_SCHEDULES = {"constant": get_constant_schedule,
              "constant_with_warmup": get_constant_schedule_with_warmup,
              "linear": get_linear_schedule_with_warmup,
              "cosine": get_cosine_schedule_with_warmup}


def get_scheduler(name, optimizer, num_warmup_steps=0, num_training_steps=None):
    """A schedule by its ``transformers`` name (``lr_scheduler_type``): constant,
    constant_with_warmup, linear or cosine."""
    if name not in _SCHEDULES:
        raise ValueError(f"unknown schedule {name!r}: choose one of {sorted(_SCHEDULES)}")
    if name == "constant":
        return get_constant_schedule(optimizer)
    if name == "constant_with_warmup":
        return get_constant_schedule_with_warmup(optimizer, num_warmup_steps)
    if num_training_steps is None:
        raise ValueError(f"the {name!r} schedule needs num_training_steps")
    return _SCHEDULES[name](optimizer, num_warmup_steps, num_training_steps)
