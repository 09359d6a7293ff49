"""transformers' ``GreedyLR`` (``lr_scheduler_type="greedy"``): a learning rate that follows the metric.

Like ``ReduceLROnPlateau`` it is stepped on a metric (the Trainer's ``metric_for_best_model`` after each
evaluation), but it moves both ways: more than ``patience`` better steps in a row divide the lr by ``factor``
(up to ``max_lr``), more than ``patience`` steps without a new best multiply it by ``factor`` (down to
``min_lr``); after a rise ``warmup`` steps, after a cut ``cooldown`` steps, are not counted. ``reset_start``
cuts at the floor bring back the first lrs and forget the best. ``smooth=True`` steps on the mean of the last
``window_size`` metrics (``StreamingAverage``). Its arithmetic is transformers' own, on Python floats (an lr
given as a Tensor is replaced by a float when it changes, as there), and so are ``state_dict`` and
``load_state_dict`` (which puts the saved lrs back into the optimizer).
"""
from .optimizer import Optimizer

__all__ = ["GreedyLR", "StreamingAverage", "get_greedy_schedule"]


class StreamingAverage:
    """The mean of the last ``window_size`` values, kept as a running sum (transformers' float order)."""

    def __init__(self, window_size):
        self.window_size, self.values, self.sum = window_size, [], 0.0

    def streamavg(self, value):
        """Add ``value``; the mean of the window now."""
        self.values.append(value)
        self.sum += value
        if len(self.values) > self.window_size:
            self.sum -= self.values.pop(0)
        return self.sum / len(self.values)

    def state_dict(self):
        return {"window_size": self.window_size, "values": self.values.copy(), "sum": self.sum}

    def load_state_dict(self, state_dict):
        self.window_size = state_dict.get("window_size", self.window_size)
        self.values = state_dict.get("values", []).copy()
        self.sum = state_dict.get("sum", 0.0)


def _per_group(name, value, groups):
    """One bound per parameter group: a list/tuple as given (its length checked), a number repeated."""
    if isinstance(value, (list, tuple)):
        if len(value) != len(groups):
            raise ValueError(f"expected {len(groups)} {name}s, got {len(value)}")
        return list(value)
    return [value] * len(groups)


# the attributes state_dict saves, in transformers' order (_streaming_avg apart)
_STATE = ("factor", "min_lrs", "max_lrs", "patience", "verbose", "cooldown", "warmup", "cooldown_counter",
          "warmup_counter", "mode", "threshold", "threshold_mode", "best", "num_bad_epochs", "num_good_epochs", "eps",
          "last_epoch", "smooth", "window_size", "reset_start", "reset_start_original", "_last_lr", "_init_lrs")


class GreedyLR:
    """``GreedyLR(optimizer, mode="min", factor=0.95, patience=10, threshold=1e-6, threshold_mode="abs",
    cooldown=0, warmup=0, min_lr=1e-3, max_lr=1.0, eps=1e-8, verbose=False, smooth=False, window_size=50,
    reset_start=500)``, as ``transformers.optimization.GreedyLR``; ``step(metric)`` once per evaluation."""

    def __init__(self, optimizer, mode="min", factor=0.95, patience=10, threshold=1e-6, threshold_mode="abs",
                 cooldown=0, warmup=0, min_lr=1e-3, max_lr=1.0, eps=1e-8, verbose=False, smooth=False, window_size=50,
                 reset_start=500):
        if factor >= 1.0:
            raise ValueError("Factor should be < 1.0.")
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"{type(optimizer).__name__} is not an Optimizer")
        self.optimizer, self.factor, self.patience, self.verbose = optimizer, factor, patience, verbose
        self.cooldown, self.warmup, self.cooldown_counter, self.warmup_counter = cooldown, warmup, 0, 0
        self.mode, self.threshold, self.threshold_mode, self.eps = mode, threshold, threshold_mode, eps
        self.smooth, self.window_size = smooth, window_size
        self.reset_start = self.reset_start_original = reset_start
        self.last_epoch = 0
        self.min_lrs = _per_group("min_lr", min_lr, optimizer.param_groups)
        self.max_lrs = _per_group("max_lr", max_lr, optimizer.param_groups)
        self._init_lrs = [group["lr"] for group in optimizer.param_groups]
        self._last_lr = self._init_lrs.copy()
        self.best = float("inf") if mode == "min" else float("-inf")
        self.num_bad_epochs = self.num_good_epochs = 0
        if mode not in ("min", "max"):
            raise ValueError(f"mode {mode} is unknown!")
        if threshold_mode not in ("rel", "abs"):
            raise ValueError(f"threshold mode {threshold_mode} is unknown!")
        self._streaming_avg = StreamingAverage(window_size) if smooth else None

    def step(self, metrics, epoch=None):
        """Count this metric as better or not (none counted during a warmup or cooldown), then raise or cut."""
        current = float(metrics)
        if self.smooth and self._streaming_avg is not None:
            current = self._streaming_avg.streamavg(current)
        self.last_epoch = epoch = self.last_epoch + 1 if epoch is None else epoch
        if self.cooldown_counter > 0 or self.warmup_counter > 0:
            if self.cooldown_counter > 0:
                self.cooldown_counter -= 1
            else:
                self.warmup_counter -= 1
            self.num_bad_epochs = self.num_good_epochs = 0
        else:
            if self.is_better(current, self.best):
                self.best, self.num_bad_epochs = current, 0
                self.num_good_epochs += 1
            else:
                self.num_bad_epochs += 1
                self.num_good_epochs = 0
            if self.num_good_epochs > self.patience:
                self._increase_lr(epoch)
                self.warmup_counter, self.num_good_epochs = self.warmup, 0
            elif self.num_bad_epochs > self.patience:
                self._reduce_lr(epoch)
                self.cooldown_counter, self.num_bad_epochs = self.cooldown, 0
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    def is_better(self, current, best):
        if self.mode == "min":
            return current < (best * (1.0 - self.threshold) if self.threshold_mode == "rel" else best - self.threshold)
        return current > (best * (1.0 + self.threshold) if self.threshold_mode == "rel" else best + self.threshold)

    def _reduce_lr(self, epoch):
        all_at_min = True
        for i, group in enumerate(self.optimizer.param_groups):
            old_lr = float(group["lr"])
            new_lr = max(old_lr * self.factor, self.min_lrs[i])
            if old_lr - new_lr > self.eps:
                group["lr"] = new_lr
                if self.verbose:
                    print(f"Epoch {epoch}: reducing learning rate of group {i} to {new_lr:.4e}.")
            if group["lr"] > self.min_lrs[i]:
                all_at_min = False
        if all_at_min:
            self.reset_start -= 1
            if self.reset_start <= 0:
                self._reset()

    def _increase_lr(self, epoch):
        for i, group in enumerate(self.optimizer.param_groups):
            old_lr = float(group["lr"])
            new_lr = min(old_lr / self.factor, self.max_lrs[i])
            if new_lr - old_lr > self.eps:
                group["lr"] = new_lr
                if self.verbose:
                    print(f"Epoch {epoch}: increasing learning rate of group {i} to {new_lr:.4e}.")
        self.reset_start = self.reset_start_original

    def _reset(self):
        """Back to the first lrs, the best forgotten, every counter at zero."""
        for group, lr in zip(self.optimizer.param_groups, self._init_lrs):
            group["lr"] = lr
        self.best = float("inf") if self.mode == "min" else float("-inf")
        self.num_bad_epochs = self.num_good_epochs = self.cooldown_counter = self.warmup_counter = 0
        self.reset_start = self.reset_start_original
        if self.smooth and self._streaming_avg is not None:
            self._streaming_avg = StreamingAverage(self.window_size)
        if self.verbose:
            print("Scheduler reset to initial state.")

    def get_last_lr(self):
        """The learning rates after the last step (the optimizer's first ones before any)."""
        return self._last_lr

    def state_dict(self):
        state = {name: getattr(self, name) for name in _STATE}
        if self.smooth and self._streaming_avg is not None:
            state["_streaming_avg"] = self._streaming_avg.state_dict()
        return state

    def load_state_dict(self, state_dict):
        """Each saved attribute (a missing one kept), and the saved lrs put back into the optimizer's groups."""
        for name in _STATE:
            setattr(self, name, state_dict.get(name, getattr(self, name)))
        if "_streaming_avg" in state_dict:
            if self._streaming_avg is None:
                self._streaming_avg = StreamingAverage(self.window_size)
            self._streaming_avg.load_state_dict(state_dict["_streaming_avg"])
        if "_last_lr" in state_dict:
            for group, lr in zip(self.optimizer.param_groups, self._last_lr):
                group["lr"] = lr


def get_greedy_schedule(optimizer, **kwargs):
    """``GreedyLR(optimizer, **kwargs)`` under its transformers name (``step(metric)`` each evaluation)."""
    return GreedyLR(optimizer, **kwargs)
