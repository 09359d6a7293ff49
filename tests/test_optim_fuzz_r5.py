"""A seeded differential fuzzer for ``minilora.optim`` and ``optim.lr_scheduler`` against torch 2.x (CPU, float64).

Each case (one seed) draws an optimizer with random hyperparameters (``foreach``/``fused`` flags included: torch
accepts or refuses them on the CPU, and minilora must do the same), two parameter groups with options of their own,
a third group added mid-run with ``add_param_group``, and maybe a scheduler with random arguments. Then it runs
``STEPS`` steps in both libraries on the same float64 parameters and gradients: some parameters get no gradient
on some steps, ``zero_grad(set_to_none=True/False)`` is drawn, and at a random step both optimizers (and
schedulers) are saved and loaded into fresh ones -- minilora's fresh optimizer loading torch's own state_dict every
other time. After every call it compares the parameters (1e-12), each group's lr (and momentum/betas when a
scheduler cycles them), ``get_last_lr()``, every optimizer state value, and the errors: when torch raises,
minilora must raise the same type, and when torch does not, minilora must not.

Run ``python tests/test_optim_fuzz_r5.py SEED`` to print a case's recipe. The REGRESSIONS below are divergences
the fuzzer found, minimized to the call a user writes.
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
    return dict(lr=_u(rng, 1e-3, 0.2), momentum=momentum, dampening=0.0 if nesterov else _pick(rng, 0.0, _u(rng, 0, 0.5)),
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
                line_search_fn=_pick(rng, None, "strong_wolfe"))


OPTIMIZERS = {"SGD": _sgd, "Adam": _adam, "AdamW": _adamw, "Adamax": _adamax, "NAdam": _nadam, "RAdam": _radam,
              "RMSprop": _rmsprop, "Adagrad": _adagrad, "Adadelta": _adadelta, "Rprop": _rprop, "ASGD": _asgd,
              "LBFGS": _lbfgs}

# one argument made invalid now and then: (name, bad value); torch refuses most with ValueError
_INVALID = {"lr": -0.01, "eps": -1e-8, "weight_decay": -0.1, "momentum": -0.5, "betas": (0.9, 1.0), "alpha": -0.1,
            "rho": 1.5, "lr_decay": -0.1, "etas": (1.2, 0.5), "momentum_decay": -1.0,
            "initial_accumulator_value": -1.0, "dampening": 0.5}


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
                 ("MultiStepLR", dict(milestones=sorted(int(m) for m in rng.integers(1, 8, 2)), gamma=_u(rng, 0.1, 0.9))),
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
        return "CyclicLR", dict(base_lr=_pick(rng, 1e-3, [1e-3, 2e-3]), max_lr=_u(rng, 0.01, 0.1),
                                step_size_up=int(rng.integers(1, 4)), step_size_down=_pick(rng, None, 2), mode=mode,
                                gamma=_u(rng, 0.8, 1.0), cycle_momentum=bool(rng.random() < 0.5),
                                base_momentum=0.8, max_momentum=0.9)
    if kind == 6:
        return "OneCycleLR", dict(max_lr=_pick(rng, _u(rng, 0.01, 0.1), [0.05, 0.02, 0.03]),
                                  total_steps=int(rng.integers(STEPS, STEPS + 4)), pct_start=_u(rng, 0.1, 0.6),
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


def draw_case(seed):
    """The recipe of one case: everything random, drawn up front so it can be printed."""
    rng = np.random.default_rng(seed)
    name = _pick(rng, *OPTIMIZERS)
    kwargs = OPTIMIZERS[name](rng)
    _invalidate(rng, kwargs)
    group_options = {}
    if name != "LBFGS":  # torch's LBFGS takes one group
        extra = OPTIMIZERS[name](rng)
        keys = [k for k in extra if k not in ("foreach", "fused") and rng.random() < 0.3]
        group_options = {k: extra[k] for k in ["lr"] + keys}
    return dict(optimizer=name, kwargs=kwargs, group_options=group_options,
                scheduler=_draw_scheduler(rng) if name != "LBFGS" else None,
                add_group_at=int(rng.integers(1, STEPS + 2)) if name != "LBFGS" else STEPS + 9,
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
        if self.case["optimizer"] == "LBFGS":
            return self.params[:3]
        return [{"params": self.params[:2]}, dict({"params": self.params[2:3]}, **self.case["group_options"])]

    def make_optimizer(self, groups):
        return getattr(self.optim, self.case["optimizer"])(groups, **self.case["kwargs"])

    def make_scheduler(self, opt):
        if self.case["scheduler"] is None:
            return None
        name, kwargs = self.case["scheduler"]
        kwargs = dict(kwargs)
        if kwargs.get("schedulers", ("",))[0] == "sub":
            kwargs["schedulers"] = [self._scheduler(opt, *sub) for sub in kwargs["schedulers"][1:]]
        if name == "ChainedScheduler":
            return self.optim.lr_scheduler.ChainedScheduler(kwargs["schedulers"], optimizer=opt)
        return self._scheduler(opt, name, kwargs)

    def _scheduler(self, opt, name, kwargs):
        return getattr(self.optim.lr_scheduler, name)(opt, **kwargs)

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
        self.set_grads(step)
        return self.opt.step()

    def step_scheduler(self, step):
        if self.sched is None:
            return None
        if type(self.sched).__name__ == "ReduceLROnPlateau":
            return self.sched.step(float(self.case["metrics"][step]))
        return self.sched.step()

    def add_group(self):
        options = {k: v for k, v in self.case["group_options"].items() if k != "lr"}
        self.opt.add_param_group(dict({"params": self.params[3:], "lr": 0.015}, **options))

    def reload(self, other_state=None):
        """Save optimizer and scheduler, build fresh ones over the same parameters, load (``other_state``: the
        other library's optimizer state_dict, loaded instead of this one's own)."""
        opt_state = copy.deepcopy(self.opt.state_dict()) if other_state is None else other_state
        sched_state = copy.deepcopy(self.sched.state_dict()) if self.sched is not None else None
        fresh = self.make_optimizer([{"params": list(g["params"])} for g in self.opt.param_groups])
        self.sched = self.make_scheduler(fresh)
        fresh.load_state_dict(opt_state)
        if self.sched is not None:
            self.sched.load_state_dict(sched_state)
        self.opt = fresh

    # what is compared
    def values(self):
        return [np.array(p.detach().numpy(force=True)) if self.lib is torch else np.array(p.numpy()) for p in self.params]

    def groups(self):
        keys = ("lr", "momentum", "betas", "initial_lr")
        return [{k: _plain(g[k]) for k in keys if k in g} for g in self.opt.param_groups]

    def last_lr(self):
        return None if self.sched is None else [_plain(v) for v in self.sched.get_last_lr()]

    def state(self):
        out = []
        for p in self.params:
            st = self.opt.state.get(p, {})
            out.append({k: _plain(v) for k, v in st.items() if k not in LBFGS_LISTS})
        return out


LBFGS_LISTS = ("old_dirs", "old_stps", "ro", "al", "d", "t", "prev_flat_grad", "prev_loss", "H_diag")


def _plain(value):
    """A number, a tuple or an array, whichever library made it."""
    if isinstance(value, (tuple, list)):
        return tuple(_plain(v) for v in value)
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
    assert theirs is not None, f"{where}: torch runs, minilora raises {type(ours).__name__}: {ours}"
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
            if step == case["add_group_at"] and not _both(lambda s: s.add_group(), sides, f"step {step}: add_param_group"):
                return
            if step == case["reload_at"]:
                torch_state = copy.deepcopy(sides[0].opt.state_dict()) if case["load_torch_state"] else None
                if not _both(lambda s: s.reload(torch_state if s.lib is ml else None), sides, f"step {step}: reload"):
                    return
                _compare(sides, f"step {step}: after reload")
            if not _both(lambda s: s.step(step), sides, f"step {step}: optimizer.step()"):
                return
            if not _both(lambda s: s.step_scheduler(step), sides, f"step {step}: scheduler.step()"):
                return
            _compare(sides, f"step {step}")


@pytest.mark.parametrize("seed", range(CASES))
def test_fuzz_case(seed):
    run_case(seed)


if __name__ == "__main__":
    import pprint
    for arg in sys.argv[1:]:
        recipe = draw_case(int(arg))
        pprint.pprint({k: v for k, v in recipe.items() if not isinstance(v, np.ndarray)})
        run_case(int(arg))
