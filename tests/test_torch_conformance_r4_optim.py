"""Optimizers, clipping and schedulers as torch users call them, side by side with torch 2.x (round 4):
``state_dict()`` hands out the live state (as torch's), a parameter listed twice, clipping with any norm
order, constructor errors, and schedulers' state round trips."""
import copy as copy_module
import math

import numpy as np
import pytest

import minilora as ml
from minilora import nn, optim
from minilora.optim import lr_scheduler as L

torch = pytest.importorskip("torch")
TL = torch.optim.lr_scheduler

OPTIMIZERS = ["SGD", "Adam", "AdamW", "RMSprop", "Adagrad", "Adadelta", "Adamax", "NAdam", "RAdam"]
# Hyperparameters that give each optimizer state worth checking (SGD: a momentum buffer).
KWARGS = {"SGD": dict(momentum=0.9)}


def _twins(seed=0, shapes=((3, 4), (5,)), dtype=np.float64):
    """The same parameters in minilora and in torch."""
    rng = np.random.default_rng(seed)
    values = [rng.standard_normal(s).astype(dtype) for s in shapes]
    return [nn.Parameter(v.copy()) for v in values], [torch.nn.Parameter(torch.tensor(v.copy())) for v in values]


def _module(lib):
    return optim if lib is ml else torch.optim


def _grads(params, seed):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(tuple(p.shape)).astype(str(p.dtype).replace("torch.", "")) for p in params]


def _step(lib, params, opt, seed):
    for p, g in zip(params, _grads(params, seed)):
        p.grad = lib.tensor(g)
    opt.step()


def _values(params):
    return [np.array(p.detach().numpy(force=True)) for p in params]


def _as_numpy(value):
    return value.detach().numpy() if hasattr(value, "detach") else np.asarray(value)


# --- state_dict(): the live state, as torch's ------------------------------------------------------------
@pytest.mark.parametrize("name", OPTIMIZERS)
def test_state_dict_is_the_live_state(name):
    """torch's ``state_dict()["state"][i]`` is the parameter's state dict itself: a state_dict taken before
    more steps shows the new values (a user saving it later saves them); the group dicts are copies."""
    for lib, params in zip((ml, torch), _twins()):
        opt = getattr(_module(lib), name)(params, lr=0.01, **KWARGS.get(name, {}))
        _step(lib, params, opt, seed=1)
        sd = opt.state_dict()
        _step(lib, params, opt, seed=2)
        assert sd["state"][0] is opt.state[params[0]], lib.__name__
        assert sd["param_groups"][0] is not opt.param_groups[0]
        sd["param_groups"][0]["lr"] = 5.0
        assert opt.param_groups[0]["lr"] == 0.01
        if "step" in sd["state"][0]:
            step = _as_numpy(sd["state"][0]["step"])
            assert step.shape == () and step.dtype == np.float32 and float(step) == 2.0, lib.__name__


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_state_dict_loaded_into_a_fresh_optimizer_continues_as_torch(name):
    """save (a deep copy, as torch.save/torch.load make one) -> load into a fresh optimizer -> step: the
    same weights as torch's resumed run, and as never stopping. (torch's NAdam is the exception: its load casts
    the float32 ``mu_product`` to the parameters' dtype, float64 here, so its resumed run differs slightly.)"""
    results = []
    for lib, params in zip((ml, torch), _twins()):
        make = getattr(_module(lib), name)
        opt = make(params, lr=0.01, **KWARGS.get(name, {}))
        for seed in range(3):
            _step(lib, params, opt, seed)
        copy = [nn.Parameter(v) if lib is ml else torch.nn.Parameter(torch.tensor(v)) for v in _values(params)]
        opt2 = make(copy, lr=0.01, **KWARGS.get(name, {}))
        opt2.load_state_dict(copy_module.deepcopy(opt.state_dict()))
        for seed in range(3, 6):
            _step(lib, params, opt, seed)
            _step(lib, copy, opt2, seed)
        if name != "NAdam":
            for a, b in zip(_values(params), _values(copy)):
                np.testing.assert_array_equal(a, b)
        results.append(_values(copy))
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)


def test_load_state_dict_shares_the_state_as_torch():
    """torch's ``load_state_dict`` keeps the given state tensors when dtype and device match, so
    ``opt2.load_state_dict(opt.state_dict())`` makes two optimizers share (and both step) one ``exp_avg`` and
    one ``step``; minilora's too (it copied them). A tensor of another dtype is cast: a copy."""
    params, _ = _twins()
    opt = optim.Adam(params, lr=0.01)
    _step(ml, params, opt, seed=0)
    opt2 = optim.Adam(params, lr=0.01)
    sd = opt.state_dict()
    opt2.load_state_dict(sd)
    assert opt2.state[params[0]]["exp_avg"] is sd["state"][0]["exp_avg"] is opt.state[params[0]]["exp_avg"]
    assert opt2.state[params[0]]["step"] is sd["state"][0]["step"]
    _step(ml, params, opt2, seed=1)
    assert float(opt.state[params[0]]["step"]) == 2.0  # (stepped through opt2)
    floats = [nn.Parameter(p.detach().float()) for p in params]
    other = optim.Adam(floats, lr=0.01)
    other.load_state_dict(sd)
    assert other.state[floats[0]]["exp_avg"] is not sd["state"][0]["exp_avg"]
    assert other.state[floats[0]]["exp_avg"].dtype == ml.float32


# --- clip_grad_norm_ / clip_grad_value_ -----------------------------------------------------------------
CLIP_GRADS = [[0.0, 2.0, -3.0, 0.1003, 0.09998, -0.1002], np.linspace(-3, 3, 300), [0.0, 0.0]]


def _clip_twins(grads, dtype):
    ours, theirs = [], []
    for g in grads:
        p, t = nn.Parameter(ml.zeros(len(g), dtype=getattr(ml, dtype))), torch.nn.Parameter(torch.zeros(len(g), dtype=getattr(torch, dtype)))
        p.grad, t.grad = ml.tensor(np.asarray(g), dtype=getattr(ml, dtype)), torch.tensor(np.asarray(g)).to(getattr(torch, dtype))
        ours.append(p)
        theirs.append(t)
    return ours, theirs


def _same_clip(call, grads, dtype, **kwargs):
    """``call(params, **kwargs)`` in both libraries: the same returned norm (value and dtype) and gradients,
    or the same exception type."""
    ours, theirs = _clip_twins(grads, dtype)
    try:
        expected = call(torch.nn.utils, theirs, **kwargs)
    except Exception as exc:
        with pytest.raises(type(exc)):
            call(optim, ours, **kwargs)
        return
    got = call(optim, ours, **kwargs)
    if expected is None:
        assert got is None
    else:
        assert str(got.dtype) == str(expected.dtype).replace("torch.", "")
        _close(got.float().item(), expected.float().item(), dtype)
    for p, t in zip(ours, theirs):
        if t.grad is None:
            assert p.grad is None
            continue
        assert str(p.grad.dtype) == dtype
        _close(p.grad.float().numpy(), t.grad.float().numpy(), dtype)


def _close(got, expected, dtype):
    """Bit-equal, but in float32: torch's vectorized sums add in another order (an ulp apart)."""
    np.testing.assert_allclose(got, expected, rtol=1e-6 if dtype == "float32" else 0, atol=0)


@pytest.mark.parametrize("dtype", ["float32", "float64", "bfloat16", "float16"])
@pytest.mark.parametrize("norm_type", [0, 0.5, 1, 2, 3, -1, -0.5, math.inf, -math.inf, "inf", 2.0])
def test_clip_grad_norm_any_order_as_torch(norm_type, dtype):
    """torch's clip_grad_norm_ takes any order of vector_norm: 0 counts the non-zero norms, a negative one or
    -inf is small when one gradient is; minilora refused norm_type <= 0."""
    def clip(lib, params, **kw):
        return lib.clip_grad_norm_(params, 1.0, norm_type=norm_type, **kw)
    _same_clip(clip, CLIP_GRADS, dtype)
    _same_clip(clip, CLIP_GRADS[1:2], dtype, foreach=True)
    _same_clip(clip, [[]] + CLIP_GRADS[:1], dtype)  # an empty gradient: no max/min of nothing (RuntimeError)


@pytest.mark.parametrize("spelling", ["generator", "single tensor", "grad None", "no grads", "keywords",
                                      "negative max_norm", "nonfinite", "nonfinite raises", "tensor max_norm"])
def test_clip_grad_norm_spellings_as_torch(spelling):
    def clip(lib, params):
        if spelling == "generator":
            return lib.clip_grad_norm_((p for p in params), 1.0)
        if spelling == "single tensor":
            return lib.clip_grad_norm_(params[1], 1.0)
        if spelling in ("grad None", "no grads"):
            for p in params[:1] if spelling == "grad None" else params:
                p.grad = None
            return lib.clip_grad_norm_(params, 1.0)
        if spelling == "keywords":
            return lib.clip_grad_norm_(parameters=params, max_norm=2.0, norm_type=1.0, error_if_nonfinite=False,
                                       foreach=None)
        if spelling == "negative max_norm":
            return lib.clip_grad_norm_(params, -1.0)
        if spelling == "tensor max_norm":
            return lib.clip_grad_norm_(params, (ml if lib is optim else torch).tensor(0.5))
        params[0].grad[0] = float("nan")
        return lib.clip_grad_norm_(params, 1.0, error_if_nonfinite=spelling == "nonfinite raises")
    _same_clip(clip, CLIP_GRADS, "float32")


@pytest.mark.parametrize("clip_value", [0.5, 2, -0.5, 0.0, 0.1])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16", "float64"])
def test_clip_grad_value_as_torch(clip_value, dtype):
    _same_clip(lambda lib, params: lib.clip_grad_value_(params, clip_value), CLIP_GRADS, dtype)
    _same_clip(lambda lib, params: lib.clip_grad_value_(params[1], clip_value=clip_value), CLIP_GRADS, dtype)
    _same_clip(lambda lib, params: lib.clip_grad_value_((p for p in params), clip_value, foreach=True), CLIP_GRADS,
               dtype)


# --- a parameter listed twice: torch warns, and steps it once per listing ----------------------------------------
DUPLICATE_KWARGS = [dict(lr=0.1), dict(lr=0.1, weight_decay=0.1)]
MORE_KWARGS = {"SGD": [dict(lr=0.1, momentum=0.9), dict(lr=0.1, momentum=0.5, weight_decay=0.1, nesterov=True)],
               "Adam": [dict(lr=0.1, amsgrad=True), dict(lr=0.1, maximize=True)],
               "RMSprop": [dict(lr=0.01, momentum=0.5, centered=True)]}


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name,kwargs", [(n, k) for n in OPTIMIZERS for k in DUPLICATE_KWARGS + MORE_KWARGS.get(n, [])])
def test_parameter_listed_twice_is_stepped_twice_as_torch(name, kwargs, dtype):
    results, states = [], []
    for lib, (p, q) in zip((ml, torch), _twins(dtype=dtype)):
        with pytest.warns(UserWarning, match="optimizer contains a parameter group with duplicate parameters"):
            opt = getattr(_module(lib), name)([p, q, p], **kwargs)
        for seed in range(3):
            _step(lib, [p, q], opt, seed)
        results.append(_values([p, q]))
        sd = opt.state_dict()
        assert sd["param_groups"][0]["params"] == [2, 1, 2]  # (torch numbers a parameter by its last listing)
        states.append({k: {n: float(_as_numpy(v).sum()) for n, v in st.items() if n != "mu_product"}
                       for k, st in sd["state"].items()})
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-12 if dtype == np.float64 else 1e-5, atol=0)
    assert states[0].keys() == states[1].keys()
    for k in states[0]:
        assert states[0][k].keys() == states[1][k].keys()
        np.testing.assert_allclose(list(states[0][k].values()), list(states[1][k].values()), rtol=1e-5)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16", "float32"])
def test_nadam_resumed_in_16_bits_as_torch(dtype):
    """torch's load_state_dict casts NAdam's float32 ``mu_product`` to the parameters' dtype (bfloat16 here),
    then ``mu_product *= mu`` rounds in that dtype: a resumed run, through a saved copy, matches torch's."""
    rng = np.random.default_rng(3)
    start, grads = rng.standard_normal(64), [rng.standard_normal(64) for _ in range(6)]
    finals = []
    for lib in (ml, torch):
        def param(values):
            return (nn.Parameter(ml.tensor(values, dtype=getattr(ml, dtype))) if lib is ml else
                    torch.nn.Parameter(torch.tensor(values).to(getattr(torch, dtype))))

        def grad(values):
            return ml.tensor(values, dtype=getattr(ml, dtype)) if lib is ml else torch.tensor(values).to(getattr(torch, dtype))
        p = param(start)
        opt = _module(lib).NAdam([p], lr=0.01)
        for g in grads[:3]:
            p.grad = grad(g)
            opt.step()
        p2 = param(p.detach().float().numpy())
        opt2 = _module(lib).NAdam([p2], lr=0.01)
        opt2.load_state_dict(copy_module.deepcopy(opt.state_dict()))
        assert str(opt2.state[p2]["mu_product"].dtype).replace("torch.", "") == dtype
        for g in grads[3:]:
            p2.grad = grad(g)
            opt2.step()
        finals.append(p2.detach().float().numpy())
    np.testing.assert_allclose(*finals, rtol=1e-6 if dtype == "float32" else 0)  # (float32: an ulp, op order)


# --- constructor arguments: the same error type as torch, or the same steps --------------------------------------
CONSTRUCTOR_KWARGS = [
    dict(lr=-0.1), dict(lr=0.0), dict(lr=float("inf")), dict(eps=-1e-8), dict(eps=0.0), dict(eps=float("inf")),
    dict(weight_decay=-0.1), dict(weight_decay=float("inf")), dict(betas=(1.0, 0.9)), dict(betas=(0.9, 1.0)),
    dict(betas=(-0.1, 0.9)), dict(betas=[0.9, 0.99]), dict(momentum=-0.5), dict(momentum=1.5), dict(nesterov=True),
    dict(momentum=0.9, nesterov=True, dampening=0.1), dict(momentum=0.9, dampening=1.5), dict(alpha=-0.1),
    dict(alpha=1.5), dict(rho=1.5), dict(rho=-0.1), dict(lr_decay=-1), dict(initial_accumulator_value=-1),
    dict(momentum_decay=-1), dict(lr="0.1"), dict(lr=None), dict(weight_decay=None), dict(eps=None),
    dict(lr=0.1, amsgrad=True), dict(foreach=True), dict(fused=True), dict(maximize=True), dict(centered=True),
    dict(decoupled_weight_decay=True), dict(lr=0.05, momentum=0.9, dampening=0.5, weight_decay=0.1),
    dict(lr=0.05, momentum=0.9, nesterov=True, maximize=True), dict(lr=0.01, momentum=0.5, centered=True),
    dict(lr=0.1, lr_decay=0.1, initial_accumulator_value=0.5), "tensor betas: one", "tensor lr", "unknown kwarg",
]


def _constructor_call(lib, name, kwargs, params):
    """The optimizer built with ``kwargs`` and stepped 3 times: ``("ok", weights)`` or the exception type."""
    T = ml if lib is ml else torch
    if kwargs == "tensor betas: one":
        kwargs = dict(betas=(T.tensor(0.9), 0.999))
    elif kwargs == "tensor lr":
        kwargs = dict(lr=T.tensor(0.01, dtype=T.float64))
    elif kwargs == "unknown kwarg":
        kwargs = dict(learning_rate=0.1)
    try:
        opt = getattr(_module(lib), name)(params, **kwargs)
        for seed in range(3):
            _step(lib, params, opt, seed)
    except Exception as exc:  # noqa: BLE001 (the type is what is compared)
        return type(exc)
    return "ok", _values(params)


@pytest.mark.parametrize("kwargs", CONSTRUCTOR_KWARGS, ids=str)
@pytest.mark.parametrize("name", OPTIMIZERS)
def test_constructor_arguments_as_torch(name, kwargs):
    ours, theirs = (_constructor_call(lib, name, kwargs, params) for lib, params in zip((ml, torch), _twins()))
    if isinstance(theirs, tuple):
        assert isinstance(ours, tuple), ours
        for a, b in zip(ours[1], theirs[1]):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15)
    else:
        assert ours == theirs


# --- schedulers: state_dict round trips, torch's state loading into minilora -------------------------------------
def _sgd(lib):
    params = _twins()[0 if lib is ml else 1]
    return _module(lib).SGD([{"params": params[:1]}, {"params": params[1:], "lr": 0.05}], lr=0.1, momentum=0.9)


SCHEDULES = {
    "StepLR": lambda M, o: M.StepLR(o, 3, gamma=0.5),
    "MultiStepLR": lambda M, o: M.MultiStepLR(o, [2, 5], 0.1),
    "CosineAnnealingLR": lambda M, o: M.CosineAnnealingLR(o, T_max=5, eta_min=0.001),
    "CosineAnnealingWarmRestarts": lambda M, o: M.CosineAnnealingWarmRestarts(o, T_0=3, T_mult=2, eta_min=0.001),
    "OneCycleLR": lambda M, o: M.OneCycleLR(o, max_lr=[0.5, 0.2], total_steps=20),
    "OneCycleLR-linear-3": lambda M, o: M.OneCycleLR(o, 0.5, epochs=2, steps_per_epoch=10, anneal_strategy="linear",
                                                     three_phase=True),
    "SequentialLR": lambda M, o: M.SequentialLR(o, [M.LinearLR(o, 0.1, total_iters=3), M.ExponentialLR(o, 0.9)],
                                                milestones=[3]),
    "ChainedScheduler": lambda M, o: M.ChainedScheduler([M.ConstantLR(o, 0.5, total_iters=4), M.ExponentialLR(o, 0.9)],
                                                        optimizer=o),
    "PolynomialLR": lambda M, o: M.PolynomialLR(o, total_iters=6, power=2.0),
    "CyclicLR": lambda M, o: M.CyclicLR(o, 0.01, 0.1, step_size_up=3),
    "LambdaLR": lambda M, o: M.LambdaLR(o, [lambda e: 0.9 ** e, lambda e: 1 / (e + 1)]),
}


def _schedule_run(lib, name, steps, resume_at=None, other_state=None, other_name=None):
    """``steps`` optimizer+scheduler steps; at ``resume_at``: a fresh optimizer and scheduler (``other_name``'s
    when given) load the state_dicts (deep copies; the scheduler's ``other_state`` when given) and go on. Every
    step's (get_last_lr(), the groups' lr and momentum)."""
    M = L if lib is ml else TL
    opt = _sgd(lib)
    sched = SCHEDULES[name](M, opt)
    seen = []
    for step in range(steps):
        opt.step()
        sched.step()
        seen.append((sched.get_last_lr(), [(g["lr"], g["momentum"]) for g in opt.param_groups]))
        if step == resume_at:
            saved = copy_module.deepcopy((opt.state_dict(), other_state or sched.state_dict()))
            opt = _sgd(lib)
            sched = SCHEDULES[other_name or name](M, opt)
            opt.load_state_dict(saved[0])
            sched.load_state_dict(saved[1])
            seen.append((sched.get_last_lr(), [(g["lr"], g["momentum"]) for g in opt.param_groups]))
    return seen


@pytest.mark.parametrize("name", list(SCHEDULES))
def test_scheduler_resumed_from_its_state_dict_as_torch(name):
    ours, theirs = _schedule_run(ml, name, 12, resume_at=4), _schedule_run(torch, name, 12, resume_at=4)
    np.testing.assert_allclose(np.array([s[0] for s in ours]), np.array([s[0] for s in theirs]), rtol=1e-12)
    np.testing.assert_allclose(np.array([s[1] for s in ours]), np.array([s[1] for s in theirs]), rtol=1e-12)


@pytest.mark.parametrize("name,other_name", [("OneCycleLR", "OneCycleLR-linear-3"), ("OneCycleLR-linear-3", "OneCycleLR"),
                                             ("CosineAnnealingWarmRestarts", None), ("StepLR", None)])
def test_torchs_scheduler_state_dict_loads_into_minilora(name, other_name):
    """A torch scheduler's state_dict (an HF Trainer's scheduler.pt) loaded into minilora's scheduler goes on as
    torch's: OneCycleLR keeps its phases under torch's names (``_schedule_phases``, ``_anneal_func_type``)."""
    theirs = _schedule_run(torch, name, 12)
    opt = _sgd(torch)
    sched = SCHEDULES[name](TL, opt)
    for _ in range(5):
        opt.step()
        sched.step()
    ours = _schedule_run(ml, name, 12, resume_at=4, other_state=sched.state_dict(), other_name=other_name)
    np.testing.assert_allclose(np.array([s[0] for s in ours[6:]]), np.array([s[0] for s in theirs[5:]]), rtol=1e-12)


@pytest.mark.parametrize("name", list(SCHEDULES) + ["ReduceLROnPlateau"])
def test_scheduler_state_dict_has_torchs_entries(name):
    """The same keys with the same plain values (and the same value types) as torch's scheduler state_dict."""
    entries = []
    for lib in (ml, torch):
        M = L if lib is ml else TL
        opt = _sgd(lib)
        sched = M.ReduceLROnPlateau(opt, patience=1) if name == "ReduceLROnPlateau" else SCHEDULES[name](M, opt)
        for _ in range(3):
            opt.step()
            sched.step(1.0) if name == "ReduceLROnPlateau" else sched.step()
        entries.append({k: (type(v).__name__, v if isinstance(v, (int, float, str, bool)) else None)
                        for k, v in sched.state_dict().items() if k not in ("lr_lambdas", "_schedulers")})
    assert entries[0] == entries[1]


# --- gradients changed in place, as torch's zero_()/mul_()/clamp_() ----------------------------------------------
GRAD_CHANGES = {
    "clip_grad_norm_": lambda lib, ps, opt: (torch.nn.utils if lib is torch else optim).clip_grad_norm_(ps, 1.0),
    "clip_grad_norm_ inf": lambda lib, ps, opt: (torch.nn.utils if lib is torch else optim).clip_grad_norm_(
        ps, 0.5, norm_type="inf"),
    "clip_grad_value_": lambda lib, ps, opt: (torch.nn.utils if lib is torch else optim).clip_grad_value_(ps, 0.3),
    "zero_grad(set_to_none=False)": lambda lib, ps, opt: opt.zero_grad(set_to_none=False),
    "zero_grad(False)": lambda lib, ps, opt: opt.zero_grad(False),
}


@pytest.mark.parametrize("shared", [False, True], ids=["own grads", "one grad for two params"])
@pytest.mark.parametrize("change", list(GRAD_CHANGES))
def test_gradients_change_in_place_as_torch(change, shared):
    """``held = [p.grad for p in params]`` before clipping or zero_grad(set_to_none=False): torch changes those
    very Tensors (minilora made new ones, so held gradients kept the old values); a Tensor set as two
    parameters' .grad is changed once per parameter, as torch's."""
    seen = []
    for lib, params in zip((ml, torch), _twins(shapes=((4,), (4,)))):
        for p, g in zip(params, _grads(params, seed=0)):
            p.grad = lib.tensor(g * 3)
        if shared:
            params[1].grad = params[0].grad
        opt = _module(lib).SGD(params, lr=0.1)
        held = [p.grad for p in params]
        GRAD_CHANGES[change](lib, params, opt)
        assert all(p.grad is h for p, h in zip(params, held)), lib.__name__
        seen.append([_as_numpy(h).copy() for h in held])
    for a, b in zip(*seen):
        np.testing.assert_allclose(a, b, rtol=1e-12)


def test_clipping_a_read_only_gradient():
    """A gradient set to an expand()ed tensor (a read-only array here) is clipped all the same, in its Tensor."""
    p = nn.Parameter(ml.zeros(2, 4, dtype=ml.float64))
    p.grad = ml.ones(1, 4, dtype=ml.float64).expand(2, 4)
    held = p.grad
    total = optim.clip_grad_norm_([p], 1.0)
    assert p.grad is held and float(total) == pytest.approx(8 ** 0.5)
    np.testing.assert_allclose(held.numpy(), np.full((2, 4), 8 ** -0.5), rtol=1e-6)
    optim.SGD([p]).zero_grad(set_to_none=False)
    assert p.grad is held and not held.numpy().any()


# --- closures, maximize, add_param_group -----------------------------------------------------------------------
@pytest.mark.parametrize("name", OPTIMIZERS)
def test_closure_maximize_and_add_param_group_as_torch(name):
    seen = []
    for lib, (p, q) in zip((ml, torch), _twins()):
        opt = getattr(_module(lib), name)([p], lr=0.1)

        def closure():
            opt.zero_grad()
            loss = (p * p).sum()
            loss.backward()
            return loss
        loss = opt.step(closure)
        row = [type(loss).__name__, loss.requires_grad, opt.step(lambda: 3.5), opt.step()]
        climber = nn.Parameter(np.ones(3)) if lib is ml else torch.nn.Parameter(torch.ones(3, dtype=torch.float64))
        up = getattr(_module(lib), name)([climber], lr=0.1, maximize=True)
        for _ in range(3):
            climber.grad = lib.tensor(np.arange(3.0) - 1)
            up.step()
        row.append(_values([climber])[0])
        for group in ({"params": [p]}, {"lr": 0.1}, [q], {"params": {q}}):
            with pytest.raises(Exception) as info:
                opt.add_param_group(group)
            row.append(info.type)
        opt.add_param_group({"params": q, "lr": 0.5})  # a single Tensor is a group of one
        # (the same entries and values; minilora keeps a number given as 0 as 0.0, torch as 0)
        row.append(sorted((k, v if isinstance(v, (bool, type(None), tuple)) else float(v))
                          for k, v in opt.param_groups[-1].items() if k != "params"))
        seen.append(row)
    ours, theirs = seen
    np.testing.assert_allclose(ours.pop(4), theirs.pop(4), rtol=1e-13)
    assert ours == theirs


def test_parameter_listed_twice_on_emu_follows_torch():
    """On ``emu`` AdamW runs the fused kernel: a parameter listed twice is one more launch (its second listing),
    stepped after the first, as torch's loop: the weights follow torch's."""
    rng = np.random.default_rng(5)
    values = [rng.standard_normal(s).astype(np.float32) for s in [(5, 3), (7,)]]
    grads = [[rng.standard_normal(v.shape).astype(np.float32) for v in values] for _ in range(3)]
    finals = []
    for lib in (ml, torch):
        if lib is ml:
            ps = [ml.tensor(v, device="emu", requires_grad=True) for v in values]
        else:
            ps = [torch.tensor(v, requires_grad=True) for v in values]
        with pytest.warns(UserWarning, match="duplicate parameters"):
            opt = _module(lib).AdamW([ps[0], ps[1], ps[0]], lr=1e-2)
        for step_grads in grads:
            for p, g in zip(ps, step_grads):
                p.grad = ml.tensor(g, device="emu") if lib is ml else torch.tensor(g)
            opt.step()
        finals.append(_values(ps))
    for a, b in zip(*finals):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_a_users_own_optimizer_as_torch():
    """The tutorial's own optimizer (state: a Python int step and a Tensor buffer): state_dict is live, and
    load_state_dict keeps the int an int (torch casts only tensors), the buffer on the parameter's dtype."""
    results = []
    for lib, params in zip((ml, torch), _twins()):
        class MomentumSGD(_module(lib).Optimizer):
            def __init__(self, params, lr=0.1, momentum=0.9):
                super().__init__(params, dict(lr=lr, momentum=momentum))

            @lib.no_grad()
            def step(self, closure=None):
                for group in self.param_groups:
                    for p in group["params"]:
                        if p.grad is None:
                            continue
                        state = self.state[p]
                        if len(state) == 0:
                            state["step"] = 0
                            state["buf"] = lib.zeros_like(p)
                        state["step"] += 1
                        state["buf"].mul_(group["momentum"]).add_(p.grad)
                        p.add_(state["buf"], alpha=-group["lr"])

        opt = MomentumSGD(params)
        for seed in range(2):
            _step(lib, params, opt, seed)
        saved = copy_module.deepcopy(opt.state_dict())
        opt2 = MomentumSGD(params)
        opt2.load_state_dict(saved)
        assert type(opt2.state[params[0]]["step"]) is int and opt2.state[params[0]]["step"] == 2
        for seed in range(2, 4):
            _step(lib, params, opt2, seed)
        results.append(_values(params))
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-12)


@pytest.mark.parametrize("dtype", ["float32", "float64", "bfloat16"])
@pytest.mark.parametrize("norm_type", [2.0, 1, math.inf, 0.5, 0])
def test_get_total_norm_and_clip_grads_with_norm_as_torch(norm_type, dtype):
    """torch 2.6's two halves of clip_grad_norm_, under torch.nn.utils' names (minilora had neither): the
    total norm of some tensors, then the clipping with a given total (e.g. one all-reduced across ranks)."""
    def two_steps(lib, params):
        utils = ml.nn.utils if lib is optim else torch.nn.utils
        total = utils.get_total_norm([p.grad for p in params], norm_type=norm_type)
        assert utils.clip_grads_with_norm_(params, 1.0, total) is None
        return total
    _same_clip(two_steps, CLIP_GRADS, dtype)
    _same_clip(lambda lib, params: (ml.nn.utils if lib is optim else torch.nn.utils).get_total_norm(params[1].grad),
               CLIP_GRADS, dtype)
    _same_clip(lambda lib, params: (ml.nn.utils if lib is optim else torch.nn.utils).get_total_norm([]), CLIP_GRADS,
               dtype)


# --- hooks ---------------------------------------------------------------------------------------------------------
def test_optimizer_hooks_as_torch():
    """register_step_pre/post_hook (a pre-hook may replace step's arguments), the state_dict and load_state_dict
    hooks (a returned dict replaces), handles that remove: the same calls, in the same order, as torch's."""
    traces = []
    for lib, params in zip((ml, torch), _twins()):
        trace = []
        opt = _module(lib).SGD(params, lr=0.1)
        for p in params:
            p.grad = lib.ones(p.shape, dtype=lib.float64)
        handle = opt.register_step_pre_hook(
            lambda o, args, kwargs: trace.append(("pre", o is opt, len(args), args[0] is opt, sorted(kwargs))))
        opt.register_step_post_hook(lambda o, args, kwargs: trace.append(("post", len(args), sorted(kwargs))))
        opt.step()
        opt.step(closure=lambda: 1.0)
        handle.remove()
        opt.step()
        opt.register_state_dict_pre_hook(lambda o: trace.append("state_dict pre"))
        opt.register_state_dict_post_hook(lambda o, sd: {**sd, "extra": 1})
        opt.register_state_dict_post_hook(lambda o, sd: trace.append(("first", sorted(sd))), prepend=True)
        trace.append(sorted(opt.state_dict()))
        opt.register_load_state_dict_pre_hook(
            lambda o, sd: trace.append(("load pre", sorted(sd))) or {k: v for k, v in sd.items() if k != "extra"})
        opt.register_load_state_dict_post_hook(lambda o: trace.append("load post"))
        opt.load_state_dict(copy_module.deepcopy(opt.state_dict()))
        opt.register_step_pre_hook(lambda o, args, kwargs: (args, {"closure": lambda: 7.0}))
        trace.append(opt.step())
        opt.register_step_pre_hook(lambda o, args, kwargs: 5)
        with pytest.raises(RuntimeError, match="must return None or a tuple of"):
            opt.step()
        traces.append(trace)
    assert traces[0] == traces[1]


@pytest.mark.parametrize("kwargs", [{}, dict(lr=1), dict(lr=0.5, weight_decay=0)], ids=str)
@pytest.mark.parametrize("name", OPTIMIZERS)
def test_print_optimizer_as_torch(name, kwargs):
    """print(optimizer) as torch's: a hyperparameter given (or defaulting) as the int 0 shows as 0, not 0.0."""
    (p,), (t,) = _twins(shapes=((2,),))
    assert repr(getattr(optim, name)([p], **kwargs)) == repr(getattr(torch.optim, name)([t], **kwargs))


@pytest.mark.parametrize("betas", [[0.9, 0.99], (0, 0.9), (0.9, 0.999), [0.5, 0]], ids=str)
@pytest.mark.parametrize("name", ["Adam", "AdamW", "Adamax", "NAdam", "RAdam"])
def test_betas_spellings_as_torch(name, betas):
    """Adam/AdamW want two floats (an int is torch's ValueError) and keep a tuple; Adamax/NAdam/RAdam keep the
    list or tuple and the numbers as given: the same error or the same print(optimizer) as torch's."""
    (p,), (t,) = _twins(shapes=((2,),))
    try:
        expected = repr(getattr(torch.optim, name)([t], betas=betas))
    except ValueError:
        with pytest.raises(ValueError, match="betas must be either both floats or both Tensors"):
            getattr(optim, name)([p], betas=betas)
        return
    assert repr(getattr(optim, name)([p], betas=betas)) == expected
