"""torch's own optimizer test database (``optim_db``: every optimizer with every option set torch's CI
steps, and the calls it must refuse) and every lr_scheduler class, run through minilora.

Each OptimizerInput is stepped four times on the same parameters with the same gradients in torch and in
minilora: the weights must agree, ``state_dict()`` must have torch's layout, and a torch state dict must load
into minilora's optimizer and step on to torch's numbers. Each ErrorInput is a call torch refuses: minilora
must refuse it with the same exception type and torch's words.
"""
import math
import re
import warnings

import numpy as np
import pytest

from torch_db import to_minilora, torch  # (skips this file without torch)
from torch.testing._internal.common_optimizers import optim_db  # noqa: E402

import minilora as ml  # noqa: E402

INFOS = {info.optim_cls.__name__: info for info in optim_db}

# torch's float32 ``sqrt`` on x86 is MKL's vector sqrt, which is not correctly rounded (~17% of its results
# are one ulp from NumPy's correctly rounded root; float64: ~1%); MKL's code is closed, so minilora keeps
# the correctly rounded root (float32_math.py). Optimizers that divide by a root therefore agree to a few
# ulps, not bit for bit; the others must agree exactly.
WITHOUT_ROOTS = {"SGD", "Rprop", "ASGD", "Adamax"}
FLOAT32_ULPS = 4
FLOAT64_RTOL = 1e-13

# minilora has no sparse tensors: SparseAdam refuses to be built (checked below), as do sparse parameters
REFUSED = {"SparseAdam": "minilora has no sparse gradients"}


def optim_cases():
    for name, info in INFOS.items():
        if name in REFUSED:
            continue
        for number, optim_input in enumerate(info.optim_inputs_func(device="cpu")):
            yield pytest.param(name, optim_input.kwargs, id=f"{name}-{number}-{optim_input.desc}")


def error_cases():
    for name, info in INFOS.items():
        for number, error in enumerate(info.optim_error_inputs_func(device="cpu", dtype=torch.float32)):
            yield pytest.param(name, error, id=f"{name}-{number}-{error.optimizer_error_input.desc}")


def make_params(name, dtype):
    """Two parameters (Muon optimizes matrices only) in torch and the same values in minilora."""
    torch.manual_seed(0)
    shapes = [(3, 4), (2, 5)] if name == "Muon" else [(3, 4), (5,)]
    ours = [torch.randn(*shape, dtype=dtype, requires_grad=True) for shape in shapes]
    return ours, [ml.nn.Parameter(to_minilora(p.detach())) for p in ours]


def quadratic(lib, params):
    """A loss for LBFGS's closure: sum over parameters of sum(p^2 * weights) - sum(p)."""
    return sum(((p * p) * (1.0 + lib.arange(p.numel(), dtype=p.dtype).reshape(p.shape)) - p).sum()
               for p in params)


def step_both(name, torch_opt, ml_opt, torch_params, ml_params):
    """One step of each with the same random gradients (LBFGS: with a closure, the gradients its own)."""
    if name == "LBFGS":
        def closure(lib, opt, params):
            opt.zero_grad()
            loss = quadratic(lib, params)
            loss.backward()
            return loss
        torch_opt.step(lambda: closure(torch, torch_opt, torch_params))
        ml_opt.step(lambda: closure(ml, ml_opt, ml_params))
        return
    for p, q in zip(torch_params, ml_params):
        p.grad = torch.randn_like(p)
        q.grad = to_minilora(p.grad)
    torch_opt.step()
    ml_opt.step()


def assert_weights_agree(name, torch_params, ml_params, dtype):
    for p, q in zip(torch_params, ml_params):
        theirs, ours = p.detach().numpy(), q.detach().numpy()
        if name in WITHOUT_ROOTS:
            np.testing.assert_array_equal(ours, theirs)
        elif name == "LBFGS" and dtype == torch.float32:
            # LBFGS's direction is built from dot products over all parameters (torch's: MKL's sdot order),
            # and its two-loop recursion and line search amplify their last-bit differences
            np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)
        elif dtype == torch.float32:
            np.testing.assert_array_max_ulp(ours, theirs, maxulp=FLOAT32_ULPS)
        else:
            np.testing.assert_allclose(ours, theirs, rtol=FLOAT64_RTOL, atol=1e-300)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("name, kwargs", list(optim_cases()))
def test_optimizer_steps_as_torch(name, kwargs, dtype):
    torch_params, ml_params = make_params(name, dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (torch warns about e.g. Tensor lr with foreach; minilora as it does)
        torch_opt = INFOS[name].optim_cls(torch_params, **kwargs)
        ml_opt = getattr(ml.optim, name)(ml_params, **to_minilora(kwargs))
        for _ in range(4):
            step_both(name, torch_opt, ml_opt, torch_params, ml_params)
    assert_weights_agree(name, torch_params, ml_params, dtype)


def _comparable(value):
    if isinstance(value, (torch.Tensor, ml.Tensor)):
        return ("tensor", str(value.dtype).removeprefix("torch."), tuple(value.shape))
    if isinstance(value, float):  # (LBFGS's prev_loss: a float64 sum, whose last bit is the order's)
        return "nan" if math.isnan(value) else float(f"{value:.13g}")
    if isinstance(value, (list, tuple)):  # (LBFGS's history: lists of tensors)
        return type(value)(_comparable(item) for item in value)
    return value


@pytest.mark.parametrize("name, kwargs", list(optim_cases()))
def test_state_dict_is_torchs_and_torchs_loads(name, kwargs):
    """``state_dict()``: torch's keys, per-parameter state names, tensor dtypes/shapes and group values; a
    torch state dict loaded into minilora's optimizer steps on to torch's weights."""
    torch_params, ml_params = make_params(name, torch.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch_opt = INFOS[name].optim_cls(torch_params, **kwargs)
        ml_opt = getattr(ml.optim, name)(ml_params, **to_minilora(kwargs))
        for _ in range(2):
            step_both(name, torch_opt, ml_opt, torch_params, ml_params)
        theirs, ours = torch_opt.state_dict(), ml_opt.state_dict()
        assert ours.keys() == theirs.keys()
        for index, state in theirs["state"].items():
            assert {k: _comparable(v) for k, v in ours["state"][index].items()} == \
                   {k: _comparable(v) for k, v in state.items()}
        for mine, torchs in zip(ours["param_groups"], theirs["param_groups"]):
            assert {k: _comparable(v) for k, v in mine.items()} == {k: _comparable(v) for k, v in torchs.items()}

        # both load the state dict (torch's load casts state such as NAdam's mu_product to the parameter's dtype)
        torch_fresh = [p.detach().clone().requires_grad_(True) for p in torch_params]
        torch_loaded = INFOS[name].optim_cls(torch_fresh, **kwargs)
        torch_loaded.load_state_dict(theirs)
        fresh = [ml.nn.Parameter(to_minilora(p.detach())) for p in torch_params]
        loaded = getattr(ml.optim, name)(fresh, **to_minilora(kwargs))
        loaded.load_state_dict(to_minilora(theirs))
        step_both(name, torch_loaded, loaded, torch_fresh, fresh)
    assert_weights_agree(name, torch_fresh, fresh, torch.float64)


def _refusal(name, error):
    """What minilora does with the call torch refuses: the exception, or the warnings it gave."""
    call = error.optimizer_error_input
    params = to_minilora(call.params)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            optimizer = getattr(ml.optim, name)(params, **to_minilora(call.kwargs))
            if "STEP" in str(error.error_on):
                for group in optimizer.param_groups:
                    for p in group["params"]:
                        p.grad = ml.ones_like(p)
                optimizer.step()
        except Exception as exception:  # noqa: BLE001 (any exception is a refusal; the test checks which)
            return exception, caught
    return None, caught


@pytest.mark.parametrize("name, error", list(error_cases()))
def test_refuses_what_torch_refuses(name, error):
    params = error.optimizer_error_input.params
    if name in REFUSED or any(getattr(p, "is_sparse", False) for p in (params if isinstance(params, list) else [])):
        with pytest.raises((NotImplementedError, TypeError)):  # minilora refuses the optimizer / the sparse tensor
            getattr(ml.optim, name)(to_minilora(params) if name in REFUSED else None, lr=0.1)
        return
    exception, caught = _refusal(name, error)
    if issubclass(error.error_type, Warning):
        assert any(issubclass(w.category, error.error_type) and re.search(error.error_regex, str(w.message))
                   for w in caught), f"torch warns {error.error_regex!r}; minilora: {exception!r}"
        return
    assert exception is not None, f"torch refuses ({error.error_regex!r}); minilora took it"
    if "complex" in error.error_regex:  # minilora optimizes real parameters only, and says so
        assert "floating-point" in str(exception)
        return
    assert isinstance(exception, error.error_type), f"{exception!r}, torch's: {error.error_type.__name__}"
    assert re.search(error.error_regex, str(exception)), f"{exception}; torch's words: {error.error_regex}"


# ---- every learning-rate scheduler, 30 steps ------------------------------------------------------------------
SCHEDULES = {
    "LambdaLR": lambda L, o: L.LambdaLR(o, lambda epoch: 0.95 ** epoch),
    "MultiplicativeLR": lambda L, o: L.MultiplicativeLR(o, lambda epoch: 0.9),
    "StepLR": lambda L, o: L.StepLR(o, 3, gamma=0.5),
    "MultiStepLR": lambda L, o: L.MultiStepLR(o, milestones=[2, 5, 5, 9], gamma=0.3),
    "ConstantLR": lambda L, o: L.ConstantLR(o, factor=1 / 3, total_iters=4),
    "LinearLR": lambda L, o: L.LinearLR(o, start_factor=0.1, end_factor=0.7, total_iters=7),
    "ExponentialLR": lambda L, o: L.ExponentialLR(o, 0.87),
    "PolynomialLR": lambda L, o: L.PolynomialLR(o, total_iters=9, power=1.7),
    "CosineAnnealingLR": lambda L, o: L.CosineAnnealingLR(o, T_max=7, eta_min=0.003),
    "CosineAnnealingWarmRestarts": lambda L, o: L.CosineAnnealingWarmRestarts(o, T_0=3, T_mult=2, eta_min=1e-3),
    "CyclicLR": lambda L, o: L.CyclicLR(o, 0.01, 0.1, step_size_up=4),
    "CyclicLR-triangular2": lambda L, o: L.CyclicLR(o, 0.01, 0.1, step_size_up=3, step_size_down=5,
                                                    mode="triangular2"),
    "CyclicLR-exp_range": lambda L, o: L.CyclicLR(o, 0.01, 0.1, step_size_up=3, mode="exp_range", gamma=0.9),
    "CyclicLR-no-momentum": lambda L, o: L.CyclicLR(o, 0.01, 0.1, step_size_up=3, cycle_momentum=False),
    "OneCycleLR": lambda L, o: L.OneCycleLR(o, max_lr=0.5, total_steps=31),
    "OneCycleLR-three-phase-linear": lambda L, o: L.OneCycleLR(o, max_lr=0.5, epochs=3, steps_per_epoch=10,
                                                               three_phase=True, anneal_strategy="linear"),
    "ChainedScheduler": lambda L, o: L.ChainedScheduler([L.ConstantLR(o, factor=0.1, total_iters=2),
                                                         L.ExponentialLR(o, gamma=0.9)]),
    "SequentialLR": lambda L, o: L.SequentialLR(o, [L.ConstantLR(o, factor=0.1, total_iters=2),
                                                    L.ExponentialLR(o, gamma=0.9)], milestones=[3]),
}


def _schedule(lib, make, lr_dtype=None):
    """30 steps' learning rates (a Tensor lr: its value and dtype, as the scheduler filled it) and momenta."""
    lr = 0.1 if lr_dtype is None else lib.tensor(0.1, dtype=getattr(lib, lr_dtype))
    optimizer = lib.optim.SGD([lib.nn.Parameter(lib.zeros(2))], lr=lr, momentum=0.9)
    scheduler = make(lib.optim.lr_scheduler, optimizer)
    seen = []
    for _ in range(30):
        optimizer.step()
        scheduler.step()
        lrs = [(float(x), str(x.dtype)[-7:]) if hasattr(x, "dtype") else x for x in scheduler.get_last_lr()]
        group = optimizer.param_groups[0]
        seen.append((lrs, float(group["lr"]), group["momentum"]))
    return seen, sorted(scheduler.state_dict())


@pytest.mark.parametrize("lr_dtype", [None, "float32", "float64"])
@pytest.mark.parametrize("name", SCHEDULES)
def test_scheduler_as_torch(name, lr_dtype):
    """Learning rates and momenta step for step (exact: the same float formulas), state_dict's keys; an lr given
    as a 0-d Tensor is computed as torch's 0-d tensor arithmetic, in its dtype, and filled in place."""
    assert _schedule(ml, SCHEDULES[name], lr_dtype) == _schedule(torch, SCHEDULES[name], lr_dtype)


@pytest.mark.parametrize("kwargs", [{}, {"mode": "max"}, {"threshold_mode": "abs", "threshold": 0.1},
                                    {"patience": 2, "cooldown": 1, "min_lr": 0.01, "factor": 0.5},
                                    {"eps": 0.05, "factor": 0.1}])
def test_reduce_lr_on_plateau_as_torch(kwargs):
    def learning_rates(lib):
        optimizer = lib.optim.SGD([lib.nn.Parameter(lib.zeros(2))], lr=0.1)
        scheduler = lib.optim.lr_scheduler.ReduceLROnPlateau(optimizer, **kwargs)
        rates = []
        for i in range(30):
            optimizer.step()
            scheduler.step(1.0 / (1 + i % 5) + 0.001 * i)
            rates.append(optimizer.param_groups[0]["lr"])
        return rates
    assert learning_rates(ml) == learning_rates(torch)
