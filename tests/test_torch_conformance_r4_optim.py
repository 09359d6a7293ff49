"""Optimizers, clipping and schedulers as torch users call them, side by side with torch 2.x (round 4):
``state_dict()`` hands out the live state (as torch's), a parameter listed twice, clipping with any norm
order, constructor errors, and schedulers' state round trips."""
import copy as copy_module
import math
import warnings

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
    return [rng.standard_normal(tuple(p.shape)) for p in params]


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


def test_load_state_dict_copies_the_state():
    """A deliberate difference: torch's ``load_state_dict`` keeps the given state tensors when dtype and device
    match, so ``opt2.load_state_dict(opt.state_dict())`` makes two optimizers share (and both step) one
    ``exp_avg``; minilora's loads copies, so each optimizer keeps its own moments."""
    params, _ = _twins()
    opt = optim.Adam(params, lr=0.01)
    _step(ml, params, opt, seed=0)
    opt2 = optim.Adam(params, lr=0.01)
    sd = opt.state_dict()
    opt2.load_state_dict(sd)
    assert opt2.state[params[0]]["exp_avg"] is not sd["state"][0]["exp_avg"]
    assert opt2.state[params[0]]["step"] is not sd["state"][0]["step"]
    np.testing.assert_array_equal(opt2.state[params[0]]["exp_avg"], sd["state"][0]["exp_avg"])
