"""A seeded differential fuzzer for ``minilora.optim`` and ``optim.lr_scheduler`` against torch 2.x (CPU, float64).

Each case (one seed) draws, up front (``draw_case``):

* an optimizer (SGD, Adam, AdamW, Adamax, NAdam, RAdam, RMSprop, Adagrad, Adadelta, Rprop, ASGD, LBFGS with a
  closure) with random hyperparameters, ``foreach``/``fused``/``capturable``/``maximize`` flags (torch accepts or
  refuses them on the CPU, and minilora must do the same), now and then an lr as a 0-d tensor or a whole number as
  an int, and now and then one invalid argument;
* two parameter groups, the second with options of its own, spelled as lists, ``(name, parameter)`` pairs, a bare
  tensor, or with a parameter listed twice (in a group, or in both); a third group added mid-run;
* maybe a scheduler with its own random arguments (StepLR, MultiStepLR, ExponentialLR, CosineAnnealingLR,
  CosineAnnealingWarmRestarts, CyclicLR, OneCycleLR, LinearLR, ConstantLR, PolynomialLR, LambdaLR,
  MultiplicativeLR, SequentialLR, ChainedScheduler, ReduceLROnPlateau), now and then with an invalid argument.

Then it runs ``STEPS`` steps in both libraries on the same float64 parameters and gradients: some parameters get no
gradient on some steps, ``zero_grad(set_to_none=True/False)`` is drawn, ``step(closure)`` sometimes, a parameter
is frozen mid-run, an lr is set by hand, the scheduler steps (sometimes ``step(epoch)``; ReduceLROnPlateau on a
metric, a number or a 0-d tensor) and makes ``state_dict()`` round trips, and at a random step both optimizers and
schedulers are saved and loaded into fresh ones -- minilora's loading torch's own state_dicts every other time, or
the scheduler resumed with ``last_epoch=``. After every call it compares the parameters (1e-12), each group's lr
(and momentum/betas), ``get_last_lr()``, every optimizer state value, both ``state_dict()``s, the loss ``step``
returns, and the errors: when torch raises, minilora must raise the same type, and when torch does not, minilora
must not (but for TORCH_BUGS).

Run ``python tests/test_optim_fuzz_r5.py SEED`` to print a case's recipe and run it. The REGRESSIONS below are
divergences the fuzzer found, minimized to the call a user writes.
"""
import copy
import math
import sys
import warnings

import numpy as np
import pytest

import minilora as ml
from minilora import nn, optim

torch = pytest.importorskip("torch")

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # (scheduler order, deprecated step(epoch))

CASES = 400
STEPS = 7
SHAPES = ((3, 2), (4,), (2, 2))


# --- drawing ----------------------------------------------------------------------------------------------------
def _u(rng, low, high):
    return float(rng.uniform(low, high))


def _pick(rng, *choices):
    return choices[int(rng.integers(len(choices)))]


def _flags(rng, fused):
    """``foreach``/``fused`` as a user passes them (``fused`` also to optimizers that have no such argument)."""
    kwargs = {}
    if rng.random() < 0.3:
        kwargs["foreach"] = _pick(rng, True, False, None)
    if rng.random() < (0.3 if fused else 0.04):
        kwargs["fused"] = _pick(rng, True, False, None)
    if rng.random() < 0.1:
        kwargs["maximize"] = True
    return kwargs


def _betas(rng):
    return (_u(rng, 0.0, 0.95), _u(rng, 0.5, 0.999))


def _sgd(rng):
    momentum = _pick(rng, 0.0, _u(rng, 0.1, 0.95))
    nesterov = bool(momentum and rng.random() < 0.4)
    dampening = 0.0 if nesterov else _pick(rng, 0.0, _u(rng, 0, 0.5))
    return dict(lr=_u(rng, 1e-3, 0.2), momentum=momentum, dampening=dampening,
                weight_decay=_pick(rng, 0.0, _u(rng, 0, 0.1)), nesterov=nesterov, **_flags(rng, True))


def _adam(rng):
    kwargs = dict(lr=_u(rng, 1e-3, 0.1), betas=_betas(rng), eps=_pick(rng, 1e-8, _u(rng, 1e-6, 1e-2)),
                  weight_decay=_pick(rng, 0.0, _u(rng, 0, 0.1)), amsgrad=bool(rng.random() < 0.3), **_flags(rng, True))
    if rng.random() < 0.3:
        kwargs["decoupled_weight_decay"] = True
    return kwargs


def _adamw(rng):
    kwargs = _adam(rng)
    kwargs.pop("decoupled_weight_decay", None)
    return kwargs


def _adamax(rng):
    return dict(lr=_u(rng, 1e-3, 0.1), betas=_betas(rng), eps=_pick(rng, 1e-8, 1e-3),
                weight_decay=_pick(rng, 0.0, _u(rng, 0, 0.1)), **_flags(rng, False))


def _nadam(rng):
    return dict(lr=_u(rng, 1e-3, 0.1), betas=_betas(rng), weight_decay=_pick(rng, 0.0, _u(rng, 0, 0.1)),
                momentum_decay=_pick(rng, 4e-3, _u(rng, 0, 0.05)), decoupled_weight_decay=bool(rng.random() < 0.4),
                **_flags(rng, False))


def _radam(rng):
    return dict(lr=_u(rng, 1e-3, 0.1), betas=(_u(rng, 0.0, 0.95), _pick(rng, 0.6, 0.999)),
                weight_decay=_pick(rng, 0.0, _u(rng, 0, 0.1)), decoupled_weight_decay=bool(rng.random() < 0.4),
                **_flags(rng, False))


def _rmsprop(rng):
    return dict(lr=_u(rng, 1e-3, 0.05), alpha=_u(rng, 0.5, 0.99), eps=_pick(rng, 1e-8, 1e-3),
                weight_decay=_pick(rng, 0.0, _u(rng, 0, 0.1)), momentum=_pick(rng, 0.0, _u(rng, 0.1, 0.9)),
                centered=bool(rng.random() < 0.4), **_flags(rng, False))


def _adagrad(rng):
    return dict(lr=_u(rng, 1e-3, 0.2), lr_decay=_pick(rng, 0.0, _u(rng, 0, 0.2)),
                weight_decay=_pick(rng, 0.0, _u(rng, 0, 0.1)), initial_accumulator_value=_pick(rng, 0.0, _u(rng, 0, 1)),
                eps=_pick(rng, 1e-10, 1e-4), **_flags(rng, True))


def _adadelta(rng):
    return dict(lr=_u(rng, 0.1, 1.0), rho=_u(rng, 0.5, 0.99), eps=_pick(rng, 1e-6, 1e-3),
                weight_decay=_pick(rng, 0.0, _u(rng, 0, 0.1)), **_flags(rng, False))


def _rprop(rng):
    return dict(lr=_u(rng, 1e-3, 0.1), etas=(_u(rng, 0.2, 0.9), _u(rng, 1.05, 1.5)),
                step_sizes=(_u(rng, 1e-6, 1e-3), _u(rng, 0.05, 1.0)), **_flags(rng, False))


def _asgd(rng):
    return dict(lr=_u(rng, 1e-3, 0.1), lambd=_pick(rng, 1e-4, _u(rng, 0, 0.1)), alpha=_u(rng, 0.5, 1.0),
                t0=_pick(rng, 1e6, float(rng.integers(0, 4))), weight_decay=_pick(rng, 0.0, _u(rng, 0, 0.1)),
                **_flags(rng, False))


def _lbfgs(rng):
    return dict(lr=_u(rng, 0.1, 1.0), max_iter=int(rng.integers(1, 5)), history_size=int(rng.integers(1, 6)),
                line_search_fn=_pick(rng, None, "strong_wolfe"), max_eval=_pick(rng, None, int(rng.integers(1, 8))),
                tolerance_grad=_pick(rng, 1e-7, 1e-2), tolerance_change=_pick(rng, 1e-9, 1e-3))


OPTIMIZERS = {"SGD": _sgd, "Adam": _adam, "AdamW": _adamw, "Adamax": _adamax, "NAdam": _nadam, "RAdam": _radam,
              "RMSprop": _rmsprop, "Adagrad": _adagrad, "Adadelta": _adadelta, "Rprop": _rprop, "ASGD": _asgd,
              "LBFGS": _lbfgs}

# one argument made invalid now and then: (name, bad value); torch refuses most with ValueError
_INVALID = {"lr": -0.01, "eps": -1e-8, "weight_decay": -0.1, "momentum": -0.5, "betas": (0.9, 1.0), "alpha": -0.1,
            "rho": 1.5, "lr_decay": -0.1, "etas": (1.2, 0.5), "momentum_decay": -1.0,
            "initial_accumulator_value": -1.0, "dampening": 0.5}


class AsTensor(float):
    """A hyperparameter the user passes as a 0-d tensor (``lr=torch.tensor(0.01)``): each side makes its own."""


def _spell(rng, kwargs):
    """Now and then an lr (or Adam's betas) as 0-d tensors, or a whole number as a Python int (``lr=1``)."""
    # (not ASGD's, nor tensor betas: torch then computes eta and NAdam's mu_product in float64 tensor ops, minilora
    # in floats: a float32 rounding apart; left alone)
    if "lr" in kwargs and "lambd" not in kwargs and rng.random() < 0.12:
        kwargs["lr"] = AsTensor(kwargs["lr"])
    for key in ("momentum", "weight_decay", "dampening", "lr_decay", "initial_accumulator_value"):
        if kwargs.get(key) == 0.0 and rng.random() < 0.3:
            kwargs[key] = 0
    if rng.random() < 0.05:
        kwargs["capturable"] = True


def _as_lib(value, lib):
    if isinstance(value, AsTensor):
        # float64: torch computes with a float32 lr tensor in float32 (its schedulers fill the tensor, its steps
        # multiply by it), minilora takes the tensor's number and computes in Python floats (left alone)
        if lib is torch:
            return torch.tensor(float(value), dtype=torch.float64)
        return ml.tensor(float(value), dtype=ml.float64)
    if isinstance(value, tuple):
        return tuple(_as_lib(v, lib) for v in value)
    return value


def _invalidate(rng, kwargs):
    bad = [name for name in _INVALID if name in kwargs]
    if bad and rng.random() < 0.12:
        name = _pick(rng, *bad)
        kwargs[name] = _INVALID[name]
        if name == "dampening":  # nesterov with dampening: torch's ValueError
            kwargs.update(nesterov=True, momentum=0.9)


def _lambda_factor(epoch):
    return 0.9 ** epoch


def _lambda_warmup(epoch):
    return min(1.0, (epoch + 1) / 3)


def _lambda_multiplier(epoch):
    return 0.95


def _simple_scheduler(rng):
    """A scheduler that SequentialLR/ChainedScheduler can hold: (name, kwargs)."""
    return _pick(rng, ("StepLR", dict(step_size=int(rng.integers(1, 4)), gamma=_u(rng, 0.1, 0.9))),
                 ("ExponentialLR", dict(gamma=_u(rng, 0.5, 0.99))),
                 ("ConstantLR", dict(factor=_u(rng, 0.1, 1.0), total_iters=int(rng.integers(1, 5)))),
                 ("LinearLR", dict(start_factor=_u(rng, 0.1, 1.0), end_factor=_u(rng, 0.1, 1.0),
                                   total_iters=int(rng.integers(1, 5)))),
                 ("MultiStepLR", dict(milestones=sorted(int(m) for m in rng.integers(1, 8, 2)),
                                      gamma=_u(rng, 0.1, 0.9))),
                 ("PolynomialLR", dict(total_iters=int(rng.integers(1, 8)), power=_u(rng, 0.5, 3.0))),
                 ("CosineAnnealingLR", dict(T_max=int(rng.integers(1, 10)), eta_min=_pick(rng, 0.0, 1e-4))))


def _draw_scheduler(rng):
    """(name, kwargs) or None; a kwargs value ("sub", ...) stands for schedulers built on the same optimizer."""
    kind = int(rng.integers(12))
    if kind == 0:
        return None
    if kind <= 3:
        return _simple_scheduler(rng)
    if kind == 4:
        return "CosineAnnealingWarmRestarts", dict(T_0=int(rng.integers(1, 5)), T_mult=int(rng.integers(1, 3)),
                                                   eta_min=_pick(rng, 0.0, 1e-4))
    if kind == 5:
        mode = _pick(rng, "triangular", "triangular2", "exp_range")
        kwargs = dict(base_lr=_pick(rng, 1e-3, [1e-3, 2e-3]), max_lr=_u(rng, 0.01, 0.1),
                      step_size_up=int(rng.integers(1, 4)), step_size_down=_pick(rng, None, 2), mode=mode,
                      gamma=_u(rng, 0.8, 1.0), cycle_momentum=bool(rng.random() < 0.5),
                      base_momentum=_pick(rng, 0.8, [0.7, 0.85]), max_momentum=0.9)
        if rng.random() < 0.2:
            kwargs.update(scale_fn=_lambda_factor, scale_mode=_pick(rng, "cycle", "iterations"))
        return "CyclicLR", kwargs
    if kind == 6:
        length = _pick(rng, dict(total_steps=int(rng.integers(STEPS - 2, STEPS + 4))),
                       dict(epochs=int(rng.integers(1, 4)), steps_per_epoch=int(rng.integers(2, 5))))
        return "OneCycleLR", dict(max_lr=_pick(rng, _u(rng, 0.01, 0.1), [0.05, 0.02]), **length,
                                  pct_start=_u(rng, 0.1, 0.6), base_momentum=_pick(rng, 0.85, [0.8, 0.7]),
                                  anneal_strategy=_pick(rng, "cos", "linear"), three_phase=bool(rng.random() < 0.4),
                                  cycle_momentum=bool(rng.random() < 0.5), div_factor=_u(rng, 2, 30),
                                  final_div_factor=_u(rng, 10, 1e4))
    if kind == 7:
        return "LambdaLR", dict(lr_lambda=_pick(rng, _lambda_factor, _lambda_warmup, [_lambda_factor, _lambda_warmup]))
    if kind == 8:
        return "MultiplicativeLR", dict(lr_lambda=_lambda_multiplier)
    if kind == 9:
        return "SequentialLR", dict(schedulers=("sub", _simple_scheduler(rng), _simple_scheduler(rng)),
                                    milestones=[int(rng.integers(1, STEPS))])
    if kind == 10:
        return "ChainedScheduler", dict(schedulers=("sub", _simple_scheduler(rng), _simple_scheduler(rng)))
    return "ReduceLROnPlateau", dict(mode=_pick(rng, "min", "max"), factor=_u(rng, 0.1, 0.9),
                                     patience=int(rng.integers(0, 3)), threshold=_pick(rng, 1e-4, 0.1),
                                     threshold_mode=_pick(rng, "rel", "abs"), cooldown=int(rng.integers(0, 3)),
                                     min_lr=_pick(rng, 0.0, 1e-3, [1e-3, 2e-3]), eps=1e-8)


# one scheduler argument made invalid now and then (torch's ValueError, mostly)
_INVALID_SCHEDULER = {"StepLR": ("step_size", 0), "ConstantLR": ("factor", 1.5), "LinearLR": ("start_factor", 0.0),
                      "CosineAnnealingWarmRestarts": ("T_0", 0), "CyclicLR": ("mode", "triangle"),
                      "OneCycleLR": ("pct_start", 1.5), "ReduceLROnPlateau": ("factor", 1.0),
                      "SequentialLR": ("milestones", [1, 2]), "PolynomialLR": ("power", -1.0),
                      "LambdaLR": ("lr_lambda", [_lambda_factor] * 3), "MultiStepLR": ("milestones", [3, 1])}


def _invalidate_scheduler(rng, scheduler):
    if scheduler is None or scheduler[0] not in _INVALID_SCHEDULER or rng.random() > 0.12:
        return scheduler
    name, kwargs = scheduler
    key, value = _INVALID_SCHEDULER[name]
    return name, dict(kwargs, **{key: value})


def draw_case(seed):
    """The recipe of one case: everything random, drawn up front so it can be printed."""
    rng = np.random.default_rng(seed)
    name = _pick(rng, *OPTIMIZERS)
    kwargs = OPTIMIZERS[name](rng)
    _spell(rng, kwargs)
    _invalidate(rng, kwargs)
    group_options = {}
    if name != "LBFGS":  # torch's LBFGS takes one group
        extra = OPTIMIZERS[name](rng)
        keys = [k for k in extra if k not in ("foreach", "fused") and rng.random() < 0.3]
        group_options = {k: extra[k] for k in ["lr"] + keys}
    scheduler = _invalidate_scheduler(rng, _draw_scheduler(rng)) if name != "LBFGS" else None
    # a group added mid-run ends most scheduled cases (torch's schedulers refuse it): only now and then with one
    add_group = name != "LBFGS" and rng.random() < (0.3 if scheduler else 0.8)
    return dict(optimizer=name, kwargs=kwargs, group_options=group_options, scheduler=scheduler,
                scheduler_round_trip=rng.random(STEPS) < 0.2, with_closure=rng.random(STEPS) < 0.2,
                epoch_steps=rng.random(STEPS) < 0.1,
                # (not with a tensor lr: torch's resumed initial_lr then follows the lr tensor's later values; left
                # alone)
                resume_by_last_epoch=bool(rng.random() < 0.3) and not isinstance(kwargs.get("lr"), AsTensor),
                freeze_at=int(rng.integers(0, 3 * STEPS)), hand_lr_at=int(rng.integers(0, 3 * STEPS)),
                hand_lr=_pick(rng, 0.01, AsTensor(0.02)),
                spelling=_pick(rng, *["lists"] * 12, "named", "a bare tensor", "listed twice in a group",
                               "in two groups"),
                add_group_at=int(rng.integers(1, STEPS + 1)) if add_group else STEPS + 9,
                reload_at=int(rng.integers(1, STEPS + 2)), load_torch_state=bool(rng.random() < 0.5),
                values=rng.standard_normal(sum(int(np.prod(s)) for s in SHAPES) + 2),
                grads=rng.standard_normal((STEPS, sum(int(np.prod(s)) for s in SHAPES) + 2)),
                no_grad=rng.random((STEPS, len(SHAPES) + 1)) < 0.2, set_to_none=rng.random(STEPS) < 0.5,
                metrics=rng.standard_normal(STEPS).cumsum())


# --- one library's side ------------------------------------------------------------------------------------------
class Side:
    """One library's run of a case: ``torch`` or minilora (``ml``), driven by the same recipe."""

    def __init__(self, lib, case):
        self.lib, self.case = lib, case
        self.optim = torch.optim if lib is torch else optim
        flat = case["values"]
        self.params, offset = [], 0
        for shape in SHAPES + ((2,),):  # the last one joins in the group added mid-run
            n = int(np.prod(shape))
            value = flat[offset:offset + n].reshape(shape).copy()
            self.params.append(torch.nn.Parameter(torch.tensor(value)) if lib is torch else nn.Parameter(value))
            offset += n
        self.opt = self.make_optimizer(self.initial_groups())
        self.sched = self.make_scheduler(self.opt)

    def initial_groups(self):
        """The groups as a user writes them: lists, a bare tensor, (name, parameter) pairs, or (refused or warned
        about) a parameter listed twice."""
        first, second = self.params[:2], self.params[2]
        spelling = self.case["spelling"]
        if spelling == "named":
            first, second = [(f"p{i}", p) for i, p in enumerate(first)], [("p2", second)]
        elif spelling == "listed twice in a group" and not (self.case["kwargs"].get("foreach")
                                                            or self.case["kwargs"].get("fused")):
            # (torch warns, and steps it once per listing; its foreach/fused kernels step the twice-listed tensor
            # in one go, each their own way: not followed, left alone)
            first = first + first[:1]
        elif spelling == "in two groups":
            second = [second, first[0]]
        elif spelling != "a bare tensor":
            second = [second]
        if self.case["optimizer"] == "LBFGS":
            return first + (second if isinstance(second, list) else [second])
        return [{"params": first}, dict({"params": second}, **self.case["group_options"])]

    def make_optimizer(self, groups):
        kwargs = {k: _as_lib(v, self.lib) for k, v in self.case["kwargs"].items()}
        return getattr(self.optim, self.case["optimizer"])(groups, **kwargs)

    def make_scheduler(self, opt, last_epoch=None):
        if self.case["scheduler"] is None:
            return None
        name, kwargs = self.case["scheduler"]
        kwargs = dict(kwargs)
        if last_epoch is not None and name not in ("ChainedScheduler", "ReduceLROnPlateau"):
            kwargs["last_epoch"] = last_epoch  # resumed by its step count (the closed form, where there is one)
        if kwargs.get("schedulers", ("",))[0] == "sub":
            kwargs["schedulers"] = [self._scheduler(opt, *sub) for sub in kwargs["schedulers"][1:]]
        if name == "ChainedScheduler":
            return self.optim.lr_scheduler.ChainedScheduler(kwargs["schedulers"], optimizer=opt)
        return self._scheduler(opt, name, kwargs)

    def _scheduler(self, opt, name, kwargs):
        return getattr(self.optim.lr_scheduler, name)(opt, **kwargs)

    def freeze(self, step):
        """``requires_grad_(False)`` on the second parameter from ``freeze_at`` on (its gradient stays drawn: torch
        steps a parameter that has one, whatever its requires_grad)."""
        if step == self.case["freeze_at"]:
            self.params[1].requires_grad_(False)

    def set_grads(self, step):
        if self.case["set_to_none"][step] or self.opt is None:
            self.opt.zero_grad(set_to_none=True)
        else:
            self.opt.zero_grad(set_to_none=False)
        offset = 0
        for i, p in enumerate(self.params):
            n = p.numel()
            if not self.case["no_grad"][step][i]:
                g = self.case["grads"][step][offset:offset + n].reshape(tuple(p.shape)).copy()
                p.grad = torch.tensor(g) if self.lib is torch else ml.tensor(g)
            offset += n

    def closure(self):
        """LBFGS's closure: a smooth loss of the first three parameters (the fourth gets no gradient)."""
        self.opt.zero_grad()
        loss = None
        for i, p in enumerate(self.params[:3]):
            term = (((p - 0.3 * (i + 1)) ** 2) * (1.0 + i) + (p ** 4) * 0.05).sum()
            loss = term if loss is None else loss + term
        loss.backward()
        return loss

    def step(self, step):
        if self.case["optimizer"] == "LBFGS":
            return float(self.opt.step(self.closure))
        self.freeze(step)
        if step == self.case["hand_lr_at"]:  # the user sets an lr by hand (chainable schedulers go on from it)
            hand_lr = self.case["hand_lr"]
            if self.case["optimizer"] == "ASGD":  # (a tensor lr: see _spell)
                hand_lr = float(hand_lr)
            self.opt.param_groups[0]["lr"] = _as_lib(hand_lr, self.lib)
        self.set_grads(step)
        if self.case["with_closure"][step]:  # step(closure) returns what the closure returns
            return self.opt.step(lambda: 2.5)
        return self.opt.step()

    def step_scheduler(self, step):
        if self.sched is None:
            return None
        if type(self.sched).__name__ == "ReduceLROnPlateau":
            metric = float(self.case["metrics"][step])
            return self.sched.step(self.lib.tensor(metric) if step % 2 else metric)
        if self.case["epoch_steps"][step]:  # the deprecated step(epoch): the closed form, where there is one
            return self.sched.step(step + 1)
        return self.sched.step()

    def scheduler_round_trip(self):
        if self.sched is not None:
            self.sched.load_state_dict(copy.deepcopy(self.sched.state_dict()))

    def add_group(self):
        options = {k: v for k, v in self.case["group_options"].items() if k != "lr"}
        params = [("p3", self.params[3])] if self.case["spelling"] == "named" else self.params[3:]
        self.opt.add_param_group(dict({"params": params, "lr": 0.015}, **options))

    def reload(self, other_state=None, other_sched_state=None):
        """Save optimizer and scheduler, build fresh ones over the same parameters, load (``other_state``,
        ``other_sched_state``: the other library's state_dicts, loaded instead of this one's own)."""
        opt_state = copy.deepcopy(self.opt.state_dict()) if other_state is None else other_state
        sched_state = other_sched_state
        if sched_state is None and self.sched is not None:
            sched_state = copy.deepcopy(self.sched.state_dict())
        fresh = self.make_optimizer([{"params": list(g["params"])} for g in self.opt.param_groups])
        if self.case["resume_by_last_epoch"] and self.sched is not None:
            # the other way to resume: load the optimizer, then build the scheduler with last_epoch= (it reads
            # each group's initial_lr)
            last_epoch = self.sched.last_epoch
            fresh.load_state_dict(opt_state)
            self.sched = self.make_scheduler(fresh, last_epoch)
        else:
            self.sched = self.make_scheduler(fresh)
            fresh.load_state_dict(opt_state)
            if self.sched is not None:
                self.sched.load_state_dict(sched_state)
        self.opt = fresh

    # what is compared
    def values(self):
        return [_array(p) for p in self.params]

    def groups(self):
        keys = ("lr", "momentum", "betas", "initial_lr")
        return [{k: _plain(g[k]) for k in keys if k in g} for g in self.opt.param_groups]

    def last_lr(self):
        return None if self.sched is None else [_plain(v) for v in self.sched.get_last_lr()]

    def saved_groups(self):
        """``optimizer.state_dict()["param_groups"]``: every option, as saved."""
        return [_plain(g) for g in self.opt.state_dict()["param_groups"]]

    def saved_schedule(self):
        return None if self.sched is None else _plain(self.sched.state_dict())

    def state(self):
        out = []
        for p in self.params:
            st = self.opt.state.get(p, {})
            out.append({k: _plain(v) for k, v in st.items() if k not in LBFGS_LISTS})
        return out


def _array(p):
    """A parameter's values as a NumPy array, whichever library's."""
    return np.array(p.numpy()) if isinstance(p, ml.Tensor) else np.array(p.detach().numpy(force=True))


LBFGS_LISTS = ("old_dirs", "old_stps", "ro", "al", "d", "t", "prev_flat_grad", "prev_loss", "H_diag")


def _plain(value):
    """A number, a tuple, a dict or an array, whichever library made it (a function: its name)."""
    if isinstance(value, (tuple, list)):
        return tuple(_plain(v) for v in value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if callable(value) and not hasattr(value, "detach"):
        return getattr(value, "__name__", type(value).__name__)
    if hasattr(value, "detach"):
        value = value.detach().numpy(force=True)
    if isinstance(value, ml.Tensor):
        value = value.numpy()
    if isinstance(value, np.ndarray) or isinstance(value, np.generic):
        return float(value) if np.ndim(value) == 0 else np.array(value, dtype=np.float64)
    return value


def _close(a, b, where):
    if isinstance(a, tuple) and isinstance(b, tuple):
        assert len(a) == len(b), f"{where}: {a} != {b}"
        for i, (x, y) in enumerate(zip(a, b)):
            _close(x, y, f"{where}[{i}]")
    elif isinstance(a, dict):
        assert sorted(a) == sorted(b), f"{where}: keys {sorted(a)} (torch) != {sorted(b)} (minilora)"
        for k in a:
            _close(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (float, int, np.ndarray)) and not isinstance(a, bool):
        np.testing.assert_allclose(np.asarray(b, dtype=np.float64), np.asarray(a, dtype=np.float64), rtol=1e-12,
                                   atol=1e-12, err_msg=where)
    else:
        assert a == b, f"{where}: {a!r} (torch) != {b!r} (minilora)"


# torch's own bugs, where minilora runs on: (exception type, words of its message)
TORCH_BUGS = [
    # fused SGD with momentum: a parameter whose first gradient comes after other parameters' first step has no
    # momentum buffer yet, and torch's fused kernel is handed None for it (single-tensor and foreach SGD run)
    (TypeError, "expected Tensor as element"),
]


def _torch_bug(error):
    return any(isinstance(error, kind) and words in str(error) for kind, words in TORCH_BUGS)


def _raised_at(error):
    """file:line of the innermost frame of ``error``'s traceback (where minilora raised)."""
    tb = error.__traceback__
    while tb.tb_next is not None:
        tb = tb.tb_next
    return f"{tb.tb_frame.f_code.co_filename}:{tb.tb_lineno}"


def _both(action, sides, where):
    """``action(side)`` on each side; returns False when both raised the same type (the case ends there)."""
    results = []
    for side in sides:
        try:
            action(side)
            results.append(None)
        except Exception as error:  # noqa: BLE001 -- any error is compared with the other side's
            results.append(error)
    theirs, ours = results
    if theirs is None and ours is None:
        return True
    if ours is None and _torch_bug(theirs):
        return False
    assert theirs is not None, (f"{where}: torch runs, minilora raises {type(ours).__name__}: {ours} (at "
                                f"{_raised_at(ours)})")
    assert ours is not None, f"{where}: torch raises {type(theirs).__name__}: {theirs}; minilora runs"
    assert isinstance(ours, type(theirs)), (f"{where}: torch raises {type(theirs).__name__}: {theirs}; minilora "
                                            f"raises {type(ours).__name__}: {ours}")
    return False


def _compare(sides, where):
    theirs, ours = sides
    for i, (a, b) in enumerate(zip(theirs.values(), ours.values())):
        _close(a, b, f"{where}: parameter {i}")
    assert len(theirs.groups()) == len(ours.groups()), where
    for i, (a, b) in enumerate(zip(theirs.groups(), ours.groups())):
        _close(a, b, f"{where}: group {i}")
    _close(theirs.last_lr(), ours.last_lr(), f"{where}: get_last_lr()")
    _close(tuple(theirs.saved_groups()), tuple(ours.saved_groups()), f"{where}: optimizer.state_dict() param_groups")
    _close(theirs.saved_schedule(), ours.saved_schedule(), f"{where}: scheduler.state_dict()")
    for i, (a, b) in enumerate(zip(theirs.state(), ours.state())):
        _close(a, b, f"{where}: state of parameter {i}")


def run_case(seed):
    case = draw_case(seed)
    sides = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if not _both(lambda lib: sides.append(Side(lib, case)), [torch, ml], "construction"):
            return
        _compare(sides, "after construction")
        for step in range(STEPS):
            if step == case["add_group_at"] and not _both(lambda s: s.add_group(), sides,
                                                          f"step {step}: add_param_group"):
                return
            if step == case["reload_at"]:
                torch_state, torch_sched_state = None, None
                if case["load_torch_state"]:
                    torch_state = copy.deepcopy(sides[0].opt.state_dict())
                    if sides[0].sched is not None:
                        torch_sched_state = copy.deepcopy(sides[0].sched.state_dict())
                if not _both(lambda s: s.reload(*((torch_state, torch_sched_state) if s.lib is ml else ())), sides,
                             f"step {step}: reload"):
                    return
                _compare(sides, f"step {step}: after reload")
            losses = []
            if not _both(lambda s: losses.append(s.step(step)), sides, f"step {step}: optimizer.step()"):
                return
            _close(_plain(losses[0]), _plain(losses[1]), f"step {step}: the loss step() returns")
            if not _both(lambda s: s.step_scheduler(step), sides, f"step {step}: scheduler.step()"):
                return
            _compare(sides, f"step {step}")
            if case["scheduler_round_trip"][step]:
                if not _both(lambda s: s.scheduler_round_trip(), sides,
                             f"step {step}: scheduler state_dict round trip"):
                    return


@pytest.mark.parametrize("seed", range(CASES))
def test_fuzz_case(seed):
    run_case(seed)


if __name__ == "__main__":
    import pprint
    for arg in sys.argv[1:]:
        recipe = draw_case(int(arg))
        pprint.pprint({k: v for k, v in recipe.items() if not isinstance(v, np.ndarray)})
        run_case(int(arg))


# --- REGRESSIONS: what the fuzzer found, minimized -------------------------------------------------------------
# call -> torch's result; minilora's before (each has a test below)
# * fresh.load_state_dict(sd) after a scheduler built on fresh wrote initial_lr (a resume with a group added
#   mid-run) -> the group IS the saved group (no initial_lr); minilora kept the group's own extra entries
# * CosineAnnealingWarmRestarts/CyclicLR/...(opt); opt.add_param_group(g); sched.step() -> ValueError (strict
#   zip); minilora ran on, g's lr unscheduled
# * SGD([{...}, {..., "momentum": 0}], momentum=0.9, nesterov=True) (or a group's dampening) -> runs (torch
#   checks the constructor's arguments only); minilora: ValueError
# * SGD/Adam/AdamW/Adagrad(..., fused=True, foreach=True) -> RuntimeError; minilora ran
# * ASGD(..., foreach=True): state["eta"] -> float32 tensor ops; minilora: Python floats (2e-8 apart)
# * sched.load_state_dict(torch_sched.state_dict()) with lr given as a tensor -> (tensors in base_lrs);
#   minilora wrote torch tensors into the lrs: TypeError in step()
# * Adam/RMSprop/...(..., capturable=True) on the CPU, step() with gradients -> AssertionError; minilora ran
# * Adam(params, lr=torch.tensor(0.01), foreach=True) -> ValueError; minilora ran
# * opt.load_state_dict(sd) with an lr below 0 (OneCycleLR's three phases took it there) -> loads (torch checks
#   nothing on load); minilora: ValueError
# * OneCycleLR(opt, max_lr=[a, b], last_epoch=k) with 3 groups -> ValueError (max_lr's length, checked first);
#   minilora: KeyError (initial_lr)
# * opt.load_state_dict(torch_opt.state_dict()) with lr a tensor, then Scheduler(opt, ..., last_epoch=k) -> runs;
#   minilora kept initial_lr a torch tensor: TypeError in step()
# * group["lr"] = ml.tensor(0.02) set by hand, then step() -> runs (Adam with foreach=True: RuntimeError);
#   minilora: TypeError inside the update
# * p.requires_grad_(False) while p.grad holds zeros (zero_grad(set_to_none=False)); step() -> p is stepped
#   (momentum, weight decay go on); minilora skipped p
# torch's own bug, where minilora runs on: fused SGD with momentum when a parameter's first gradient comes after
# the first step (TORCH_BUGS).
# Left alone: an lr or betas given as float32 tensors (torch computes in the tensor's dtype, minilora with its
# number); ASGD with a tensor lr (eta a float32 rounding apart); a scheduler resumed by last_epoch over a tensor lr
# (torch's initial_lr then follows the lr tensor); a parameter listed twice with foreach/fused (torch's kernels step
# it in one go); load_state_dict still checks a loaded group's types (torch checks nothing).


def _params(lib, n=2):
    values = [np.linspace(-1, 1, 4).reshape(2, 2) + i for i in range(n)]
    if lib is torch:
        return [torch.nn.Parameter(torch.tensor(v)) for v in values]
    return [nn.Parameter(v.copy()) for v in values]


def _grads(lib, params, scale=1.0):
    for i, p in enumerate(params):
        g = np.full(tuple(p.shape), scale * (i + 1.0))
        p.grad = torch.tensor(g) if lib is torch else ml.tensor(g)


def _outcome(call):
    """``call()``'s result, or the type of the error it raised."""
    try:
        return call()
    except Exception as error:  # noqa: BLE001 -- the error type is what is compared
        return type(error)


def _in_both(make):
    """``make(lib, lib_optim)`` for torch and minilora: (torch's outcome, minilora's)."""
    return _outcome(lambda: make(torch, torch.optim)), _outcome(lambda: make(ml, optim))


def test_load_state_dict_replaces_each_group_with_the_saved_one():
    def resume(lib, O):
        params = _params(lib)
        opt = O.SGD([{"params": params[:1]}], lr=0.1)
        opt.add_param_group({"params": params[1:], "lr": 0.05})  # saved without an initial_lr ...
        saved = copy.deepcopy(opt.state_dict())
        fresh = O.SGD([{"params": params[:1]}, {"params": params[1:]}], lr=0.1)
        O.lr_scheduler.ExponentialLR(fresh, gamma=0.5)  # ... where the fresh scheduler wrote one
        fresh.load_state_dict(saved)
        return [sorted(k for k in g if k != "params") for g in fresh.param_groups]
    theirs, ours = _in_both(resume)
    assert ours == theirs and "initial_lr" not in ours[1]


def test_load_state_dict_fills_an_option_the_saved_group_lacks_with_its_default():
    def older(lib, O):
        params = _params(lib)
        saved = copy.deepcopy(O.Adam(params, lr=0.1).state_dict())
        del saved["param_groups"][0]["amsgrad"]  # a checkpoint from before the option existed
        fresh = O.Adam(params, lr=0.2)
        fresh.load_state_dict(saved)
        return fresh.param_groups[0]["amsgrad"], fresh.param_groups[0]["lr"]
    theirs, ours = _in_both(older)
    assert ours == theirs == (False, 0.1)


@pytest.mark.parametrize("name, kwargs", [("StepLR", dict(step_size=1)), ("LambdaLR", dict(lr_lambda=_lambda_factor)),
                                          ("CosineAnnealingWarmRestarts", dict(T_0=2)),
                                          ("CyclicLR", dict(base_lr=0.01, max_lr=0.1, step_size_up=1)),
                                          ("ExponentialLR", dict(gamma=0.5))])
def test_a_scheduler_refuses_a_group_added_after_it_as_torch(name, kwargs):
    def add_then_step(lib, O):
        params = _params(lib)
        opt = O.SGD(params[:1], lr=0.1, momentum=0.9)
        sched = getattr(O.lr_scheduler, name)(opt, **kwargs)
        opt.add_param_group({"params": params[1:], "lr": 0.05})
        sched.step()
        return [_plain(g["lr"]) for g in opt.param_groups]  # ExponentialLR scales every group's current lr
    theirs, ours = _in_both(add_then_step)
    assert ours == theirs if isinstance(theirs, type) else np.allclose(ours, theirs, rtol=1e-15)


def test_the_refusal_says_why():
    params = _params(ml)
    opt = optim.SGD(params[:1], lr=0.1)
    sched = optim.lr_scheduler.CosineAnnealingWarmRestarts(opt, T_0=2)
    opt.add_param_group({"params": params[1:]})
    with pytest.raises(ValueError, match="added with add_param_group after it"):
        sched.step()


@pytest.mark.parametrize("group", [{"momentum": 0}, {"dampening": 0.5}, {"momentum": 0.5, "dampening": 0.1}])
def test_sgd_checks_nesterov_on_the_constructor_arguments_only(group):
    def run(lib, O):
        params = _params(lib)
        opt = O.SGD([{"params": params[:1]}, dict({"params": params[1:]}, **group)], lr=0.1, momentum=0.9,
                    nesterov=True)
        for scale in (1.0, -0.5, 2.0):
            _grads(lib, params, scale)
            opt.step()
        return [_array(p) for p in params]
    theirs, ours = _in_both(run)
    np.testing.assert_allclose(ours, theirs, rtol=1e-14)


def test_sgd_still_refuses_nesterov_without_momentum_in_its_arguments():
    theirs, ours = _in_both(lambda lib, O: O.SGD(_params(lib), lr=0.1, nesterov=True))
    assert theirs is ours is ValueError


@pytest.mark.parametrize("name", ["SGD", "Adam", "AdamW", "Adagrad"])
def test_fused_and_foreach_together_are_refused(name):
    theirs, ours = _in_both(lambda lib, O: getattr(O, name)(_params(lib), lr=0.1, fused=True, foreach=True))
    assert theirs is ours is RuntimeError


def test_asgd_foreach_computes_eta_in_float32_as_torch():
    def run(lib, O):
        params = _params(lib)
        opt = O.ASGD(params, lr=0.0305, lambd=0.05, alpha=0.55, t0=1.0, foreach=True)
        etas = []
        for step in range(5):
            _grads(lib, params, 1.0 - step)
            opt.step()
            etas.append(float(opt.state[params[0]]["eta"]))
        return etas, _array(params[0])
    (their_etas, theirs), (our_etas, ours) = _in_both(run)
    assert our_etas == their_etas  # bit for bit
    np.testing.assert_allclose(ours, theirs, rtol=1e-13)


def test_a_torch_scheduler_state_with_tensor_lrs_loads_into_a_working_schedule():
    torch_params = _params(torch)
    torch_opt = torch.optim.Adamax(torch_params, lr=torch.tensor(0.03, dtype=torch.float64))
    torch_sched = torch.optim.lr_scheduler.LambdaLR(torch_opt, _lambda_warmup)
    params = _params(ml)
    opt = optim.Adamax(params, lr=0.03)
    sched = optim.lr_scheduler.LambdaLR(opt, _lambda_warmup)
    opt.load_state_dict(copy.deepcopy(torch_opt.state_dict()))
    sched.load_state_dict(copy.deepcopy(torch_sched.state_dict()))
    for lib, o, s, ps in ((torch, torch_opt, torch_sched, torch_params), (ml, opt, sched, params)):
        for _ in range(3):
            _grads(lib, ps)
            o.step()
            s.step()
    assert all(isinstance(lr, float) for lr in sched.base_lrs + sched.get_last_lr())
    np.testing.assert_allclose([g["lr"] for g in opt.param_groups], [float(g["lr"]) for g in torch_opt.param_groups],
                               rtol=1e-15)
    np.testing.assert_allclose(params[0].numpy(), torch_params[0].detach().numpy(), rtol=1e-13)


@pytest.mark.parametrize("name", ["Adam", "AdamW", "Adamax", "NAdam", "RAdam", "RMSprop", "Rprop", "Adadelta", "ASGD"])
def test_capturable_on_the_cpu_is_refused_at_step_as_torch(name):
    def run(lib, O):
        params = _params(lib)
        opt = getattr(O, name)(params, lr=0.01, capturable=True)
        opt.step()  # no gradients yet: nothing to refuse
        _grads(lib, params)
        opt.step()
    theirs, ours = _in_both(run)
    assert theirs is ours is AssertionError


def test_capturable_with_fused_runs_on_the_cpu_as_torch():
    def run(lib, O):
        params = _params(lib)
        _grads(lib, params)
        return O.Adam(params, capturable=True, fused=True).step()
    theirs, ours = _in_both(run)
    assert theirs is None and ours is None


def test_a_tensor_lr_with_foreach_is_refused_by_adam():
    def make(lib, O):
        return O.Adam(_params(lib), lr=lib.tensor(0.01), foreach=True)
    theirs, ours = _in_both(make)
    assert theirs is ours is ValueError


def test_load_state_dict_takes_a_group_whose_lr_a_schedule_took_below_zero():
    def run(lib, O):
        params = _params(lib)
        saved = copy.deepcopy(O.SGD(params, lr=0.1).state_dict())
        saved["param_groups"][0]["lr"] = -0.0008  # (OneCycleLR(three_phase=True, anneal_strategy="linear") did it)
        fresh = O.SGD(params, lr=0.1)
        fresh.load_state_dict(saved)
        _grads(lib, params)
        fresh.step()
        return fresh.param_groups[0]["lr"], _array(params[0])
    (their_lr, theirs), (our_lr, ours) = _in_both(run)
    assert our_lr == their_lr == -0.0008
    np.testing.assert_allclose(ours, theirs, rtol=1e-15)


def test_sgd_fused_first_gradient_late_runs_where_torch_fails():
    """torch's fused SGD hands its kernel None for a parameter without a momentum buffer yet (a torch bug, listed
    in TORCH_BUGS); minilora steps it as torch's single-tensor SGD does."""
    def run(lib, O, fused):
        params = _params(lib)
        opt = O.SGD(params, lr=0.1, momentum=0.9, fused=fused)
        _grads(lib, params[:1])
        opt.step()
        _grads(lib, params)
        opt.step()
        return [_array(p) for p in params]
    assert _outcome(lambda: run(torch, torch.optim, True)) is TypeError
    np.testing.assert_allclose(run(ml, optim, True), run(torch, torch.optim, None), rtol=1e-15)


def test_one_cycle_checks_max_lr_per_group_before_resuming():
    def resume(lib, O):
        params = _params(lib, 3)
        opt = O.SGD([{"params": [p]} for p in params], lr=0.1, momentum=0.9)
        O.lr_scheduler.OneCycleLR(opt, max_lr=[0.1, 0.2], total_steps=5, last_epoch=2)
    theirs, ours = _in_both(resume)
    assert theirs is ours is ValueError


def test_a_torch_optimizer_state_with_tensor_lrs_resumes_a_scheduler_by_last_epoch():
    torch_params = _params(torch)
    torch_opt = torch.optim.Adam(torch_params, lr=torch.tensor(0.02, dtype=torch.float64))
    torch.optim.lr_scheduler.CosineAnnealingLR(torch_opt, T_max=6)
    params = _params(ml)
    opt = optim.Adam(params, lr=0.5)
    opt.load_state_dict(copy.deepcopy(torch_opt.state_dict()))
    assert isinstance(opt.param_groups[0]["initial_lr"], float) and isinstance(opt.param_groups[0]["lr"], float)
    torch_sched = torch.optim.lr_scheduler.CosineAnnealingLR(torch_opt, T_max=6, last_epoch=2)
    sched = optim.lr_scheduler.CosineAnnealingLR(opt, T_max=6, last_epoch=2)
    for lib, o, sc, ps in ((torch, torch_opt, torch_sched, torch_params), (ml, opt, sched, params)):
        _grads(lib, ps)
        o.step()
        sc.step()
    np.testing.assert_allclose(sched.get_last_lr(), [float(v) for v in torch_sched.get_last_lr()], rtol=1e-15)
    np.testing.assert_allclose(params[0].numpy(), torch_params[0].detach().numpy(), rtol=1e-13)


@pytest.mark.parametrize("name, kwargs", [("SGD", dict(momentum=0.9, weight_decay=0.1)), ("AdamW", {}),
                                          ("RMSprop", dict(momentum=0.5)), ("Adagrad", {})])
def test_a_parameter_frozen_with_a_gradient_is_still_stepped_as_torch(name, kwargs):
    def run(lib, O):
        params = _params(lib)
        opt = getattr(O, name)(params, lr=0.1, **kwargs)
        _grads(lib, params)
        opt.step()
        params[1].requires_grad_(False)  # frozen mid-run, its gradient zeroed but kept
        opt.zero_grad(set_to_none=False)
        opt.step()
        return [_array(p) for p in params]
    theirs, ours = _in_both(run)
    np.testing.assert_allclose(ours, theirs, rtol=1e-14)


@pytest.mark.parametrize("name, kwargs", [("SGD", dict(momentum=0.9)), ("Adam", {}), ("RMSprop", {}), ("Rprop", {}),
                                          ("Adam", dict(foreach=True)), ("NAdam", {})])
def test_an_lr_tensor_set_by_hand_steps_as_a_number(name, kwargs):
    def run(lib, O):
        params = _params(lib)
        opt = getattr(O, name)(params, lr=0.01, **kwargs)
        _grads(lib, params)
        opt.step()
        opt.param_groups[0]["lr"] = lib.tensor(0.02, dtype=lib.float64)
        _grads(lib, params, -1.0)
        opt.step()
        return [_array(p) for p in params]
    theirs, ours = _in_both(run)
    if isinstance(theirs, type):
        assert ours is theirs
    else:
        np.testing.assert_allclose(ours, theirs, rtol=1e-14)
