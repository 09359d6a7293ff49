"""``Optimizer``: what every optimizer shares -- parameter groups, per-parameter state, checkpoints.

As in PyTorch, an optimizer holds ``param_groups`` (a list of dicts: ``{"params": [...], "lr": ...,
...}``), so different parameters can use different hyperparameters::

    AdamW([{"params": model.lora_parameters(), "lr": 1e-3},
           {"params": model.head.parameters(), "lr": 1e-4, "weight_decay": 0.0}], lr=5e-4)

and ``state``, a dict from each parameter to its own Tensors (Adam's moments, SGD's momentum buffer; each
wraps the array the update computes on: ``state_arrays``).
State is created lazily on the first step a parameter has a gradient, so a frozen parameter
(``requires_grad=False``) never costs a byte of optimizer memory -- which is why LoRA training needs
so little of it (``state_bytes()``).

Updates change ``p._array`` (the raw array) in place with the arrays' own methods, so they work on NumPy and CuPy arrays
alike and the Parameter objects a Module holds stay the ones being trained. A step only reads the
gradients; ``zero_grad(set_to_none=False)`` and the clipping functions change them in place, as torch's
``zero_()``/``mul_()``/``clamp_()`` do (``write_in_place``): code holding ``g = p.grad`` sees the change.
"""
import contextlib
import functools
import math
import warnings
from collections import defaultdict

import numpy as np

from .. import dtypes, fastmath
from ..ops.elementwise import STEPS_ROUNDED_TO_16_BITS, _in_16_bit_steps_at_tail
from ..device import device_errors_as_torch
from ..interrupts import held_ctrl_c
from ..tensor import Tensor, enable_grad

__all__ = ["Optimizer"]


class Optimizer:
    """Base class. Subclasses pass their ``defaults``, check a group in ``_check_group`` and
    define ``step()``."""
    _tensors_kept = ("lr", "initial_lr")  # the group entries kept as Tensors when given Tensors (_TENSOR_KEPT)
    # Whether every state Tensor of a parameter (but 0-d counters: step, ASGD's eta) has the parameter's shape,
    # as in SGD's momentum and Adam's moments: load_state_dict then checks each (not Adafactor's row/col factors,
    # LBFGS's flat vectors or a user's own optimizer, whose state may be shaped otherwise)
    _state_shaped_as_params = False

    def __init_subclass__(cls, **kwargs):
        """Every optimizer's ``step`` notes that it ran (``_opt_called``), as torch's does: a learning-rate
        scheduler stepped before any optimizer step warns that the schedule's first lr is skipped."""
        super().__init_subclass__(**kwargs)
        if "step" in cls.__dict__:
            cls.step = _noting_that_it_ran(cls.__dict__["step"])

    def __init__(self, params, defaults):
        self.defaults = dict(defaults)
        # torch's optimizers check their hyperparameters before they look at the parameters:
        # ``SGD(params, momentum=-0.5)`` names the momentum whatever ``params`` holds
        self._check_group({**self.defaults, "params": []}, 0)
        # Parameter -> dict of its state (arrays and the step count), a defaultdict as in torch:
        # ``optimizer.state[p]`` of a parameter not yet stepped is an empty dict.
        self.state = defaultdict(dict)
        self.param_groups = []
        for group in _as_groups(params):
            self.add_param_group(group)
        if self.defaults.get("fused") and self.defaults.get("foreach"):  # torch's words and type, for SGD, Adam, ...
            raise RuntimeError("`fused` and `foreach` cannot be `True` together.")

    # --- parameter groups -----------------------------------------------------------------------
    def add_param_group(self, param_group):
        """Add a group (``{"params": [...], <hyperparameter>: value, ...}``); missing
        hyperparameters come from ``defaults``."""
        if not isinstance(param_group, dict):
            raise TypeError(f"param_group must be a dict, but got {_torch_class_repr(param_group)}")
        group = dict(param_group)
        if "params" not in group:  # (torch: a KeyError, from param_group["params"])
            raise KeyError("params: a parameter group needs a 'params' entry")
        index = len(self.param_groups)
        group["params"] = _check_params(_split_names(group), index)
        if self.param_groups and ("param_names" in group) != ("param_names" in self.param_groups[0]):
            kind = "with" if "param_names" in group else "without"
            raise ValueError(f"all optimizer param groups should be with/without names. cannot add param group "
                             f"{kind} names to the optimizer")
        for key, default in self.defaults.items():
            group.setdefault(key, default)
        with _ranges_unchecked():  # (torch checks the constructor's defaults only: a group's own weight_decay=-1
            self._check_group(group, index)  # or lr=-0.1 is taken, as transformers' decay groups rely on)
        taken = {id(p) for g in self.param_groups for p in g["params"]}
        if any(id(p) in taken for p in group["params"]):
            raise ValueError(f"some parameters appear in more than one parameter group: parameter group "
                             f"{index} contains parameters that are already in another group")
        self.param_groups.append(group)

    def _check_group(self, group, index):
        """Raise ``ValueError`` on a bad hyperparameter (each optimizer checks its own; an optimizer written by
        a user may have no ``lr`` at all, as torch allows)."""
        if "lr" in group:
            check_one_element(group, "lr")
            _check_range(group, index, "lr", low=0.0)
        if group.get("differentiable"):  # torch's flag for optimizer steps inside autograd graphs
            raise NotImplementedError(f"{type(self).__name__}: differentiable=True is not implemented in minilora "
                                      f"(parameter group {index})")

    # --- gradients and steps --------------------------------------------------------------------
    def zero_grad(self, set_to_none=True):
        """Forget the gradients before the next backward (``set_to_none=False``: zero them in place, as
        torch's ``p.grad.zero_()``: the same gradient Tensor, now all zeros)."""
        for p in self._all_params():
            grad = p.grad
            if set_to_none or grad is None:
                p.grad = None
            elif grad.requires_grad:  # a gradient with a graph (create_graph=True): torch detaches it, then zeros
                p.grad = Tensor._make(p.device.xp.zeros_like(grad._array), p.device, False, None)
            else:
                write_in_place(grad, 0)

    def step(self, closure=None):
        raise NotImplementedError(f"{type(self).__name__} must define step()")  # abstract

    def _evaluate(self, closure):
        """``step(closure)`` re-computes the loss first, as in PyTorch."""
        if closure is None:
            return None
        with enable_grad():
            return closure()

    def _params_to_update(self, group):
        """The group's parameters that get an update now: those with a gradient. As torch, ``requires_grad`` is not
        asked: a parameter frozen (``requires_grad_(False)``) while it still holds a gradient (``zero_grad(
        set_to_none=False)`` leaves zeros) keeps being stepped -- momentum and weight decay go on moving it."""
        params = [p for p in group["params"] if p.grad is not None]
        for p in params:
            if p.grad.shape != p.shape:  # (.data reshaped after .grad was set: torch's step fails in a RuntimeError)
                raise RuntimeError(f"a parameter of shape {p.shape} has a gradient of shape "
                                   f"{p.grad.shape}")
        if group.get("capturable") and not group.get("fused") and any(p.device.type == "cpu" for p in params):
            # (CUDA-graph capture: torch's capturable steps refuse CPU parameters, with an AssertionError)
            raise AssertionError(f"If capturable=True, params and state_steps must be on supported devices: "
                                 f"['cuda', 'xpu', 'hpu', 'privateuseone', 'xla'] ({type(self).__name__}: a "
                                 f"parameter is on the cpu; capturable=True is for CUDA graphs, leave it False on "
                                 f"the CPU)")
        for p in params:  # each is about to change in place: as torch's p.add_(...), bump its version,
            p._bump_version()  # so a graph made before step() refuses a backward with the new weights
        return params

    def _all_params(self):
        return [p for group in self.param_groups for p in group["params"]]

    def _check_tensor_hyperparameters(self, group):
        """Refuse a tensor hyperparameter set into ``group`` by hand where torch's step refuses it (Adam's)."""

    # --- hooks, as torch's ------------------------------------------------------------------------
    def register_step_pre_hook(self, hook):
        """``hook(optimizer, args, kwargs)`` before each ``step()``; it may return ``(new_args, new_kwargs)``."""
        return _register(self._hooks("step_pre"), hook)

    def register_step_post_hook(self, hook):
        """``hook(optimizer, args, kwargs)`` after each ``step()``."""
        return _register(self._hooks("step_post"), hook)

    def register_state_dict_pre_hook(self, hook, prepend=False):
        """``hook(optimizer)`` before ``state_dict()`` builds its result."""
        return _register(self._hooks("state_dict_pre"), hook, prepend)

    def register_state_dict_post_hook(self, hook, prepend=False):
        """``hook(optimizer, state_dict)`` after ``state_dict()``; a returned dict replaces the result."""
        return _register(self._hooks("state_dict_post"), hook, prepend)

    def register_load_state_dict_pre_hook(self, hook, prepend=False):
        """``hook(optimizer, state_dict)`` before ``load_state_dict()``; a returned dict is loaded instead."""
        return _register(self._hooks("load_state_dict_pre"), hook, prepend)

    def register_load_state_dict_post_hook(self, hook, prepend=False):
        """``hook(optimizer)`` after ``load_state_dict()``."""
        return _register(self._hooks("load_state_dict_post"), hook, prepend)

    def _hooks(self, kind):
        """The ordered ``{handle id: hook}`` of one kind (made on first use: a subclass may skip __init__)."""
        return self.__dict__.setdefault("_optimizer_hooks", {}).setdefault(kind, {})

    def _through_hooks(self, kind, state_dict):
        """``state_dict`` passed through the hooks of ``kind`` in turn: a hook's non-None result replaces it."""
        for hook in list(self._hooks(kind).values()):
            result = hook(self, state_dict)
            state_dict = state_dict if result is None else result
        return state_dict

    # --- memory and checkpoints -----------------------------------------------------------------
    def state_bytes(self):
        """Bytes held in optimizer state arrays (Adam: two per trained parameter)."""
        return sum(int(v.nbytes) for st in self.state.values() for k, v in st.items()
                   if hasattr(v, "nbytes") and k != "step")

    def state_dict(self):
        """``{"state": {index: {...}}, "param_groups": [{..., "params": [indices]}]}``, as torch's.

        PyTorch's layout: parameters numbered in group order (so the state loads into an optimizer
        built the same way over another model instance), the same state names, Tensors, and ``step`` a
        0-d float32 Tensor, as torch's. As torch's, it is not a snapshot: each
        ``state[index]`` IS the parameter's live state dict (its Tensors change with every step, and
        changing them changes the optimizer); only the group dicts are copies. Save it at once, or
        ``copy.deepcopy`` it to keep the values of now.
        """
        for hook in list(self._hooks("state_dict_pre").values()):
            hook(self)
        index = {}  # id -> number; a parameter listed twice gets its last number, as torch's
        for i, p in enumerate(self._all_params()):
            index[id(p)] = i
        groups = []
        for group in self.param_groups:
            saved = {k: v for k, v in group.items() if k != "params"}
            saved["params"] = [index[id(p)] for p in group["params"]]
            groups.append(saved)
        state_dict = {"state": {index[id(p)]: st for p, st in self.state.items() if id(p) in index},
                      "param_groups": groups}
        return self._through_hooks("state_dict_post", state_dict)

    def load_state_dict(self, state_dict):
        """Restore a ``state_dict()`` snapshot: hyperparameters and state (onto each parameter's
        device and dtype). Checks everything before changing anything.

        Also takes torch's own ``optimizer.state_dict()`` (tensors, or the same converted to NumPy
        arrays, as older minilora checkpoints hold them): ``step`` may be a 0-d tensor/array, and torch's
        extra group entries (``foreach``, ``fused``, ...) are kept; one minilora cannot honour
        (``differentiable=True``) raises. The loaded state is Tensors: the state dict's own where torch's ``.to``
        keeps them (same device, a floating one in the parameter's dtype: shared, as torch's), else copies."""
        state_dict = self._through_hooks("load_state_dict_pre", state_dict)
        groups = state_dict["param_groups"]
        if len(groups) != len(self.param_groups):
            raise ValueError(f"loaded state dict has a different number of parameter groups: "
                             f"{len(groups)} parameter groups, but the optimizer has {len(self.param_groups)}")
        for i, (saved, own) in enumerate(zip(groups, self.param_groups)):
            _check_same_kind(saved, own, self.defaults, i, type(self).__name__)
            if len(saved["params"]) != len(own["params"]):
                raise ValueError(f"loaded state dict contains a parameter group that doesn't match the size "
                                 f"of optimizer's group (parameter group {i}: loaded state dict has "
                                 f"{len(saved['params'])} parameters, the optimizer has {len(own['params'])})")
        # As torch: the saved groups' parameter numbers, in order, name this optimizer's parameters in order
        by_number = {int(number): p for saved, own in zip(groups, self.param_groups)
                     for number, p in zip(saved["params"], own["params"])}
        new_state = defaultdict(dict)
        for key, st in state_dict["state"].items():
            i = int(key)
            if i not in by_number:
                raise ValueError(f"loaded state refers to parameter {i}, which no parameter group of the loaded "
                                 f"state dict lists (they list {sorted(by_number)})")
            param = by_number[i]
            new_state[param] = state_tensors({name: self._restore_value(value, param, i, name)
                                              for name, value in st.items()}, param.device)
            if self._state_shaped_as_params:
                _check_state_shapes(new_state[param], param, i)
        merged = [_loaded_group(saved, own, self.defaults, self._tensors_kept)
                  for saved, own in zip(groups, self.param_groups)]
        with _ranges_unchecked():  # as torch's load: a schedule may have taken an lr below 0 (OneCycleLR's third phase)
            for i, group in enumerate(merged):
                self._check_group(group, i)
        for group, own in zip(merged, self.param_groups):  # (the same dict objects, now holding the loaded group)
            own.clear()
            own.update(group)
        self.state = new_state
        for hook in list(self._hooks("load_state_dict_post").values()):
            hook(self)

    # torch's Adam, RMSprop, ... (each class's __setstate__, which its load_state_dict runs) make a loaded plain-number
    # ``step`` a 0-d float32 tensor; its base class, a user's own optimizer, keeps the number
    _steps_are_tensors = False

    def _restore_value(self, value, param, index, name):
        """One loaded state value on ``param``'s device and dtype (an optimizer with other state overrides it)."""
        plain_number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if name == "step" and self._steps_are_tensors and plain_number:
            value = np.float32(value)
        return _restore(value, param, index, name)

    def __repr__(self):
        lines = [f"{type(self).__name__} ("]
        for i, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            lines += [f"    {k}: {v}" for k, v in sorted(group.items()) if k != "params"]
        return "\n".join(lines + [")"])


# --- helpers ----------------------------------------------------------------------------------
def _check_state_shapes(state, param, index):
    """A loaded moment of another shape than its parameter is a state dict saved for another model (another
    rank, another layer order). torch raises at the first step(), or -- where the shapes broadcast, (4, 3) into
    (1, 3) -- silently updated with the wrong moments in minilora: refused here, in torch's size-mismatch words."""
    for name, value in state.items():
        shape = getattr(value, "shape", ())
        if len(shape) and param.ndim and tuple(shape) != tuple(param.shape):
            raise RuntimeError(f"size mismatch for state {name!r} of parameter {index}: copying a state with shape "
                               f"{list(shape)} from checkpoint, the shape in current optimizer is "
                               f"{list(param.shape)}")


def _check_same_kind(saved, own, defaults, index, name):
    """A saved group of another kind of optimizer (AdamW's loaded into SGD) is refused by name. torch fails at the
    first step (KeyError: 'momentum'); here the options it lacked took their defaults, and the run went on with
    another optimizer's learning rate and hyperparameters. A group that lacks some of this optimizer's settings
    (not its flags: an older torch's) but holds none of another's is an older save of this one, and loads."""
    def setting(value):
        return not isinstance(value, (bool, type(None)))
    missing = [key for key, value in defaults.items() if key not in saved and setting(value)]
    foreign = [key for key, value in saved.items() if key not in own and key not in defaults and setting(value)
               and key not in ("params", "param_names", "initial_lr")]
    if missing and foreign:
        raise ValueError(f"loaded state dict's parameter group {index} was saved by another kind of optimizer: it "
                         f"has no {', '.join(map(repr, missing))} ({name}'s settings) but holds "
                         f"{', '.join(map(repr, foreign))}; load it into the kind of optimizer that saved it")


def _loaded_group(saved, own, defaults, kept=None):
    """The group ``load_state_dict`` makes, as torch's: the saved group's entries replace the group's (an entry
    the saved group lacks, such as the ``initial_lr`` a scheduler built after the save wrote, is gone), with the
    group's own ``params`` (and ``param_names`` if the saved group has none); an option an older state_dict lacks
    takes its default (torch's ``__setstate__``)."""
    # (torch's 0-d tensors: numbers, as here -- but a Tensor lr stays a Tensor, as in torch: see learning_rate)
    kept = _TENSOR_KEPT if kept is None else kept
    group = {k: v if k in kept and _holds_tensor(v) else _numbers(v) for k, v in saved.items() if k != "params"}
    if "param_names" in own and "param_names" not in group:
        group["param_names"] = own["param_names"]
    for key, default in defaults.items():
        group.setdefault(key, default)
    group["params"] = own["params"]
    return group


def write_in_place(tensor, values):
    """Write ``values`` (an array of its shape, or a number) into ``tensor`` itself, as a torch in-place op
    (``g.zero_()``, ``g.mul_(c)``) changes a gradient: whoever holds the Tensor sees the new values. A
    read-only array (a gradient set to an ``expand()``ed tensor) is replaced inside the same Tensor."""
    try:
        tensor._array[...] = values
    except ValueError:
        xp = tensor.device.xp
        tensor._array = xp.broadcast_to(xp.asarray(values, dtype=tensor.dtype), tensor.shape).copy()
    tensor._bump_version()


def _noting_that_it_ran(step):
    """``step`` with what torch's wrapper adds: the step pre-hooks (which may replace its arguments), the
    mark that it ran, and the post-hooks."""
    @functools.wraps(step)
    def noted_step(*args, **kwargs):
        self = args[0]
        if self.__dict__.get("_in_step"):  # a subclass's step calling super().step(): the hooks ran already
            return step(*args, **kwargs)
        self._in_step = True
        try:
            return _step_with_hooks(self, step, args, kwargs)
        finally:
            self._in_step = False
    return noted_step


def _step_with_hooks(self, step, args, kwargs):
    """Run ``step(*args, **kwargs)`` between the optimizer's step pre- and post-hooks. A Ctrl-C during the step
    lands after it (``interrupts.held_ctrl_c``), as during torch's fused step, one C++ call: every parameter and its
    state moved, or none (minilora's update goes slice by slice, on threads). torch's for-loop step (its default
    on the CPU) can stop between two parameters. A step given a closure is left to Python's handling: the closure
    is the user's forward and backward, which Ctrl-C must be able to stop (L-BFGS calls it many times)."""
    for hook in list(self._hooks("step_pre").values()):
        result = hook(self, args, kwargs)  # (args start with the optimizer itself, as torch's)
        if result is not None:
            if not (isinstance(result, tuple) and len(result) == 2):
                raise RuntimeError(f"{step} must return None or a tuple of (new_args, new_kwargs), but got "
                                   f"{result}.")
            args, kwargs = result
    self._opt_called = True
    _hyperparameters_as_numbers(self)
    closure = args[1] if len(args) > 1 else kwargs.get("closure")
    with held_ctrl_c() if closure is None else contextlib.nullcontext(), device_errors_as_torch():
        out = step(*args, **kwargs)
    for hook in list(self._hooks("step_post").values()):
        hook(self, args, kwargs)
    return out


_TENSOR_KEPT = Optimizer._tensors_kept  # group entries torch keeps as Tensors when given Tensors (learning_rate)


def _holds_tensor(value):
    """A Tensor, or a pair (betas) with one in it."""
    return isinstance(value, Tensor) or (isinstance(value, (tuple, list)) and any(isinstance(v, Tensor) for v in value))


def _hyperparameters_as_numbers(optimizer):
    """A 0-d tensor set into a group by hand (``group["lr"] = ml.tensor(0.01)``, which torch takes) as its number,
    as the constructor and ``load_state_dict`` keep every hyperparameter: the updates compute with numbers (but
    the entries ``_tensors_kept`` names, which the optimizer computes with as torch does with its Tensors)."""
    kept = optimizer._tensors_kept
    for group in optimizer.param_groups:
        optimizer._check_tensor_hyperparameters(group)
        for key, value in group.items():
            if key not in ("params", "param_names") and not (key in kept and _holds_tensor(value)):
                group[key] = _numbers(value)


def _register(hooks, hook, prepend=False):
    """Add ``hook`` to ``hooks`` (first if ``prepend``); the handle's ``remove()`` takes it out."""
    from ..nn.module import RemovableHandle  # (nn sits below optim; imported here to keep import order light)
    handle = RemovableHandle(hooks)
    hooks[handle.id] = hook
    if prepend:
        for key in [k for k in hooks if k != handle.id]:
            hooks[key] = hooks.pop(key)  # (move every other hook behind the new one)
    return handle


def _as_groups(params):
    """Turn what the user passed into a list of group dicts, with PyTorch's errors."""
    if isinstance(params, Tensor):
        raise TypeError(f"params argument given to the optimizer should be an iterable of Tensors or dicts, but "
                        f"got {params.type()} (a single Tensor: wrap it in a list)")
    if hasattr(params, "named_parameters"):
        raise TypeError(f"'{type(params).__name__}' object is not iterable (the optimizer was given the "
                        f"Module; pass model.parameters())")
    _check_ordered(params)
    params = list(params)
    if not params:
        raise ValueError("optimizer got an empty parameter list")
    if all(isinstance(p, dict) for p in params):
        return params
    if any(isinstance(p, dict) for p in params):
        odd = next(p for p in params if not isinstance(p, dict))
        raise TypeError(f"param_group must be a dict, but got {_torch_class_repr(odd)} (params mixes "
                        f"parameter-group dicts and Tensors; use one or the other)")
    return [{"params": params}]


def _torch_class_repr(value):
    """``<class 'torch.Tensor'>`` for a Tensor, as torch's messages print it; ``<class 'list'>`` otherwise."""
    return "<class 'torch.Tensor'>" if isinstance(value, Tensor) else repr(type(value))


def _split_names(group):
    """``model.named_parameters()`` (``(name, parameter)`` pairs, which torch takes too): the parameters,
    with their names kept in ``group["param_names"]`` (saved in ``state_dict()``, as torch's)."""
    params = group["params"]
    if isinstance(params, Tensor):
        return params
    _check_ordered(params)
    params = list(params)
    named = [isinstance(p, tuple) and len(p) == 2 and isinstance(p[0], str) for p in params]
    if not any(named):
        return params
    if not all(named):
        raise ValueError("all optimizer params should be with/without names. Some param names are missing "
                         "(a parameter group mixes (name, parameter) pairs and bare parameters)")
    group["param_names"] = [name for name, _ in params]
    return [p for _, p in params]


def _check_params(params, group_index):
    if isinstance(params, Tensor):
        params = [params]
    _check_ordered(params)
    params = list(params)
    for j, p in enumerate(params):
        where = f"parameter {j} of group {group_index}"
        if not isinstance(p, Tensor):
            raise TypeError(f"optimizer can only optimize Tensors (nn.Parameter), but {where} is "
                            f"a {type(p).__module__}.{type(p).__name__}")
        if not p.is_leaf:
            raise ValueError(f"can't optimize a non-leaf Tensor ({where} was computed by "
                             f"{p.grad_fn.fn.__name__}); optimize the tensor it came from")
        if not dtypes.is_floating(p.dtype):  # (bfloat16 is kind 'V' to NumPy, not 'f')
            raise TypeError(f"optimizer can only optimize floating-point tensors, but {where} "
                            f"is {p.dtype}")
    if len({id(p) for p in params}) != len(params):  # torch warns and steps such a parameter once per listing
        warnings.warn("optimizer contains a parameter group with duplicate parameters; in future, this will cause "
                      "an error; see github.com/pytorch/pytorch/issues/40967 for more information", UserWarning,
                      stacklevel=4)
    return params


def occurrence_passes(todo, param_of=lambda entry: entry[0]):
    """``todo`` (entries of parameters to update) cut into passes: the first listing of each parameter, then
    the second listing of those listed twice, ... A parameter listed twice in a group (torch warns, and allows
    it) is stepped once per listing, one step after the other, as torch's loop over the list does. Without
    duplicates: ``[todo]``."""
    passes, seen = [], {}
    for entry in todo:
        k = seen[id(param_of(entry))] = seen.get(id(param_of(entry)), -1) + 1
        if k == len(passes):
            passes.append([])
        passes[k].append(entry)
    return passes


def _check_ordered(params):
    if isinstance(params, (set, frozenset)):
        raise TypeError("parameters must be given in an ordered collection (a list), not a set: "
                        "their order numbers them in state_dict()")


# torch's names for its hyperparameters in "Invalid ...: value" errors
_TORCH_LABELS = {"lr": "learning rate", "eps": "epsilon value", "weight_decay": "weight_decay value",
                 "momentum": "momentum value", "betas[0]": "beta parameter at index 0",
                 "betas[1]": "beta parameter at index 1"}


_range_checks = {"on": True}  # off while load_state_dict takes saved groups


@contextlib.contextmanager
def _ranges_unchecked():
    """Inside: ``_check_range`` still turns numbers into floats and refuses non-numbers, but takes any value (torch's
    ``load_state_dict`` checks no hyperparameter; a checkpoint holds what the run's schedule made of the lr)."""
    _range_checks["on"] = False
    try:
        yield
    finally:
        _range_checks["on"] = True


def check_one_element(group, name):
    """A Tensor hyperparameter must hold one number (torch's words)."""
    value = group[name]
    if hasattr(value, "item") and math.prod(getattr(value, "shape", ())) != 1:
        raise ValueError(f"Tensor {name} must be 1-element")


def _check_range(group, index, name, low=None, high=None, high_open=False):
    """``low <= group[name]`` and ``group[name] <= high`` (``< high`` if ``high_open``), refused in torch's
    words ("Invalid learning rate: -0.1"). A 0-d tensor (``lr=torch.tensor(1e-3)``, which torch takes) counts
    as its number, as does a 1-element one; a longer tensor is torch's ValueError."""
    check_one_element(group, name)
    value = group[name]
    if hasattr(value, "item") and getattr(value, "shape", ()) != ():
        value = value.reshape(())
    value = _as_number(value)
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise TypeError(f"{name} must be a number, got {value!r} (parameter group {index})")
    too_high = high is not None and (value >= high if high_open else value > high)
    out_of_range = (low is not None and value < low) or too_high or value != value  # value != value: NaN
    if out_of_range and _range_checks["on"]:
        bound = f"[{low}, {high}{')' if high_open else ']'}" if high is not None else f">= {low}"
        raise ValueError(f"Invalid {_TORCH_LABELS.get(name, name + ' value')}: {value}; invalid {name}: {value} "
                         f"(must be {bound}; parameter group {index})")
    if name == "lr" and isinstance(group[name], Tensor):  # torch keeps a Tensor lr, the same object (see learning_rate)
        return
    # Python numbers keep float32 updates in float32 (NumPy 2 rules); an int stays an int, as torch keeps it
    # (print(optimizer) says "momentum: 0", as torch's)
    group[name] = value if type(value) is int else float(value)


def learning_rate(group):
    """``group["lr"]`` as an update computes with it. A number as it is. An lr given as a Tensor stays one in the
    group, as in torch (``state_dict()``, ``print(optimizer)`` and a scheduler's ``fill_`` see the Tensor), and
    torch's step computes ``1 - lr * weight_decay`` and ``lr / bias_correction`` as 0-d tensor arithmetic, in
    the tensor's dtype: a float32 lr rounds them to float32 (AdamW's weights moved by 1e-7 otherwise). A NumPy
    scalar of that dtype follows the same rules (NumPy 2: a Python number never widens it)."""
    lr = group["lr"]
    if isinstance(lr, Tensor):
        return lr.dtype.type(lr.detach().reshape(()).item())
    return lr


def _check_adam_hyperparameters(group, index):
    """eps, weight_decay and the pair betas of the Adam family (Adam, AdamW, Adamax, NAdam, RAdam), in
    torch's words."""
    _check_range(group, index, "eps", low=0.0)
    _check_range(group, index, "weight_decay", low=0.0)
    betas = group["betas"]
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise ValueError(f"betas must be a pair (beta1, beta2), got {betas!r} (parameter group {index})")
    for i, beta in enumerate(betas):
        _check_range({f"betas[{i}]": beta}, index, f"betas[{i}]", low=0.0, high=1.0, high_open=True)
    # numbers as _check_range keeps them, in the container given (a list stays a list, as in torch)
    group["betas"] = type(betas)(beta if type(beta) is int else float(_as_number(beta)) for beta in betas)


def _as_number(value):
    """A one-element 0-d tensor or array (minilora's, torch's, NumPy's) as its Python number; anything else
    as it is."""
    if hasattr(value, "item") and getattr(value, "shape", None) == () and not isinstance(value, bool):
        return value.item()
    return value


def _numbers(value):
    """``value`` with every 0-d tensor in it (also inside a list or tuple) as its number."""
    if isinstance(value, (list, tuple)):
        return type(value)(_numbers(v) for v in value)
    return _as_number(value)


def new_step_count():
    """A parameter's ``step`` in its state, as torch keeps it: a 0-d float32 array (a 0-d float32 Tensor in
    ``state``), counted in place (``arrays["step"] += 1``), so a ``state_dict()`` taken earlier shows the current
    count, as torch's. Read it as ``float(arrays["step"])`` (torch's ``step_t.item()``): a float32 power would
    round the bias corrections."""
    return np.zeros((), dtype=np.float32)


# --- state values: Tensors outside, arrays inside the updates ------------------------------------------------
# torch's ``optimizer.state[p]`` holds tensors (``exp_avg``, ``step`` as a 0-d float32 tensor, ...), and user code
# reads and moves them (``state["exp_avg"].norm()``, ``if torch.is_tensor(v): s[k] = v.to(device)``). minilora's
# state holds Tensors too, each wrapping the array the update computes on (no copy): an update takes the arrays
# at its start (``state_arrays``) and writes back only the values it replaced (``keep_arrays``).
def state_tensors(values, device):
    """``values`` (a dict of state values) with every array in it (in lists too) a Tensor on ``device`` sharing
    its memory; numbers, None and Tensors as they are."""
    return {name: _as_state_value(value, device) for name, value in values.items()}


def _as_state_value(value, device):
    if isinstance(value, (np.ndarray, np.generic)) or isinstance(value, device.xp.ndarray):
        return Tensor._make(value, device, False, None)  # (a NumPy scalar becomes a 0-d array)
    if isinstance(value, list):  # (LBFGS's history)
        return [_as_state_value(v, device) for v in value]
    return value


def state_arrays(state, device):
    """``{name: array}`` of one parameter's ``state`` for an update to compute on: each Tensor's own array, so
    writing into it in place writes the state. A value the user put there (``s[k] = v.to(device)``, a new Tensor,
    a NumPy array) is what the update uses; an array is first made the state's Tensor."""
    arrays = {}
    for name, value in state.items():
        if not isinstance(value, Tensor):
            value = state[name] = _as_state_value(value, device)  # (same key: the dict keeps its size)
        arrays[name] = value._array if isinstance(value, Tensor) else value
    return arrays


def keep_arrays(state, arrays, device):
    """Write back into ``state`` the values an update replaced in ``arrays`` (not changed in place): a 0-d value
    into the state's 0-d Tensor of its dtype (torch's ``mu_product *= mu``, ``eta.copy_(...)`` keep the tensor),
    anything else as a new Tensor (a first momentum buffer)."""
    for name, value in arrays.items():
        old = state.get(name)
        if value is old or (isinstance(old, Tensor) and old._array is value):
            continue
        if isinstance(old, Tensor) and old._array.shape == () == np.shape(value) and \
                getattr(value, "dtype", None) == old._array.dtype:
            old._array[...] = value
        else:
            state[name] = _as_state_value(value, device)


def rounds_each_op(dtype):
    """float16/bfloat16: torch updates such a parameter (and its state, kept in the same dtype) with ops
    that each compute in float32 and round once; NumPy would round a Python scalar like ``lr`` to the
    16-bit dtype before multiplying (``1 - lr * wd`` in bfloat16 is 1.0), so the updates spell them out."""
    return dtype.itemsize == 2 and dtypes.is_floating(dtype)


def add_scaled(x, alpha, y):
    """``x.add(y, alpha=alpha)`` of float32/float64 arrays as torch's add kernel: alpha in x's dtype, one
    fused multiply-add where torch's build fuses float32's (``fastmath.multiply_add``), else two roundings."""
    return fastmath.multiply_add(x.dtype.type(alpha), y, x)


def add_scaled_16bit(x, value, y, dtype):
    """torch's ``x.add(y, alpha=value)`` on float16/bfloat16 tensors, given as float32 arrays, in float32
    for the caller to round once: alpha rounded to the dtype (``alpha_16bit``), the product exact in
    float32, but rounded to the dtype first where torch's "default" build rounds each 16-bit step
    (``ops.elementwise.STEPS_ROUNDED_TO_16_BITS``, as ``torch.add`` there)."""
    product = alpha_16bit(value, dtype) * y
    if STEPS_ROUNDED_TO_16_BITS:
        product = product.astype(dtype).astype(np.float32)
    return x + product


def add_scaled_16bit_rounded(x, value, y, dtype):
    """``x.add(y, alpha=value)`` on float16/bfloat16 tensors (float32 arrays of their values), rounded to the dtype
    as torch's add kernel rounds it: once (``add_scaled_16bit``), but each step where it runs its scalar lambda,
    the tail of each thread's chunk (as the op's, ``ops.elementwise.Add``; a 5 x 7 bfloat16 SGD step moved its
    last 3 weights)."""
    out = add_scaled_16bit(x, value, y, dtype).astype(dtype).astype(np.float32)
    if not STEPS_ROUNDED_TO_16_BITS and np.shape(x) == np.shape(y):
        alpha = dtype.type(value) if hasattr(dtype, "type") else np.dtype(dtype).type(value)
        _in_16_bit_steps_at_tail(out, lambda x16, y16: x16 + alpha * y16, x.astype(dtype), y.astype(dtype))
    return out


def alpha_16bit(value, dtype):
    """The float32 value of an ``alpha=`` scalar in torch's ``add(other, alpha=...)`` on a 16-bit tensor: torch
    rounds alpha to the tensor's dtype first (``add_(g, alpha=-0.1)`` in bfloat16 steps by -0.10009765625),
    while ``mul_(0.9)``'s scalar stays float32."""
    return np.float32(np.asarray(value, np.float32).astype(dtype))


def mul_scalar_16bit(value, dtype, foreach):
    """The float32 value of ``s`` in torch's ``t.mul_(s)`` on a float16/bfloat16 tensor: float32 as it is, but rounded
    to the dtype first in its CPU ``_foreach_mul_(tensors, s)`` (the ``foreach=True`` optimizers' ``mul_``; their
    other foreach ops, out-of-place ``_foreach_mul(tensors, s)`` too, take their scalars as the single-tensor ops). A 16-bit value times a 16-bit value is exact
    in float32: rounding the product to the dtype once is then the kernel's result."""
    return alpha_16bit(value, dtype) if foreach else np.float32(value)


def _kept_as_torch_keeps(value, param, name):
    """torch's load_state_dict casts each state tensor with ``value.to(param's device[, dtype])``, which returns
    the tensor itself when nothing changes: the loaded state then IS the state dict's tensor (shared, as the
    optimizer's own state_dict() hands out its live tensors), and a ``step`` tensor is kept as it is."""
    if not isinstance(value, Tensor) or value.requires_grad or value.device != param.device:
        return False
    if name == "step":
        return True
    floating = dtypes.is_floating(value.dtype)
    return tuple(value.shape) == tuple(param.shape) and (not floating or value.dtype == param.dtype)


def _restore(value, param, index, name):
    if _kept_as_torch_keeps(value, param, name):
        return value
    if isinstance(value, Tensor):  # a minilora Tensor: a copy on the parameter's device, a floating one in its dtype
        if value.shape not in ((), param.shape) and name != "step":  # (a user's own optimizer's state of any shape)
            dtype = param.dtype if dtypes.is_floating(value.dtype) else value.dtype  # (torch's rule)
            return value.detach().to(param.device, dtype, copy=True)
        value = value.detach().numpy(force=True)  # the array rules below: step, 0-d numbers, moments
    if hasattr(value, "detach"):  # a torch tensor (torch's own state_dict)
        value = value.detach().cpu()
        value = (value.float() if str(value.dtype) == "torch.bfloat16" else value).numpy()
    if name == "step" and hasattr(value, "shape"):  # torch's 0-d float32 tensor: a fresh 0-d float32 array
        return np.array(float(value), dtype=np.float32)  # (a plain number stays itself, as in torch's load)
    if not hasattr(value, "shape"):  # other numbers (and None: torch's empty momentum buffer)
        return value
    if tuple(value.shape) == () != param.shape:  # a per-parameter number (NAdam's mu_product): torch casts
        value = np.asarray(value)  # a floating one to the parameter's dtype, as every floating state
        return (value.astype(param.dtype) if dtypes.is_floating(value.dtype) else value)[()]
    if tuple(value.shape) != param.shape:
        raise ValueError(f"loaded state '{name}' of parameter {index} has shape "
                         f"{tuple(value.shape)}, but the parameter has shape {tuple(param.shape)}")
    dtype = param.dtype if dtypes.is_floating(value.dtype) else value.dtype
    return param.device.xp.array(value, dtype=dtype)  # a copy: the snapshot stays untouched
