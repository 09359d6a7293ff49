"""Training-loop code as torch tutorials write it, run in torch and in minilora side by side (float64, the same
initial weights and gradients): optimizer trajectories and errors, learning-rate schedules read through
``get_last_lr()`` and ``param_groups``, gradient clipping and checkpoints of the whole training state."""
import math
import warnings

import numpy as np
import pytest

import minilora as ml
from minilora import nn, optim
from minilora.optim import lr_scheduler as L

torch = pytest.importorskip("torch")
TL = torch.optim.lr_scheduler


def _twins(seed=0, shapes=((3, 4), (5,))):
    """The same float64 parameters in minilora and in torch."""
    rng = np.random.default_rng(seed)
    values = [rng.standard_normal(s) for s in shapes]
    return [nn.Parameter(v.copy()) for v in values], [torch.nn.Parameter(torch.tensor(v.copy())) for v in values]


def _lib(ml_or_torch):
    """``(optim module, scheduler module)`` of one library."""
    return (optim, L) if ml_or_torch is ml else (torch.optim, TL)


def _set_grads(params, grads, lib):
    for p, g in zip(params, grads):
        p.grad = None if g is None else lib.tensor(g)


def _train(lib, params, opt, steps, seed=1, skip=None, every_step=None):
    """``steps`` optimizer steps on the same random gradients; ``skip[i]``: parameter i has no gradient
    in the first ``skip[i]`` steps. Returns the parameters' values."""
    rng = np.random.default_rng(seed)
    for step in range(steps):
        grads = [rng.standard_normal(tuple(p.shape)) for p in params]
        grads = [None if skip and step < skip.get(i, 0) else g for i, g in enumerate(grads)]
        _set_grads(params, grads, lib)
        opt.step()
        if every_step:
            every_step(step, opt)
    return [np.array(p.detach().numpy(force=True)) for p in params]


def _same_trajectory(make, steps=8, groups=True, **train_options):
    """``make(optim_module, params_or_groups)`` in both libraries, trained alike: the same weights
    (to float64 rounding) and the same state names; returns the two optimizers."""
    ours, theirs = _twins()
    results, optimizers = [], []
    for lib, params in ((ml, ours), (torch, theirs)):
        module, _ = _lib(lib)
        arg = [{"params": params[:1]}, {"params": params[1:], "lr": 0.03, "weight_decay": 0.2}] if groups else params
        opt = make(module, arg)
        results.append(_train(lib, params, opt, steps, **train_options))
        optimizers.append(opt)
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)
    opt, topt = optimizers
    for p, t in zip(ours, theirs):
        assert set(opt.state[p]) == set(topt.state[t])
    return opt, topt


def _error(call):
    with pytest.raises(Exception) as info:
        call()
    return info.value


def _same_error(ml_call, torch_call, words=None):
    """Both raise the same exception type; minilora's message contains torch's (or ``words``)."""
    theirs, ours = _error(torch_call), _error(ml_call)
    assert type(ours) is type(theirs), (ours, theirs)
    assert (words or str(theirs)) in str(ours), (str(ours), str(theirs))


# ---- optimizers: hyperparameters refused with torch's words ---------------------------------------
BAD_HYPERPARAMETERS = [
    ("SGD", (-0.1,), {}), ("SGD", (), {"lr": -1e-3}), ("SGD", (0.1, -0.5), {}), ("SGD", (0.1,), {"weight_decay": -1}),
    ("SGD", (0.1, 0.0), {"nesterov": True}), ("SGD", (0.1, 0.9, 0.1, 0, True), {}),
    ("Adam", (-0.1,), {}), ("Adam", (1e-3, (1.0, 0.9)), {}), ("Adam", (), {"betas": (0.9, 1.0)}),
    ("Adam", (), {"betas": (-0.1, 0.9)}), ("Adam", (1e-3, (0.9, 0.99), -1e-8), {}), ("Adam", (), {"weight_decay": -0.1}),
    ("AdamW", (), {"lr": -2.0}), ("AdamW", (), {"eps": -1.0}), ("AdamW", (), {"betas": (0.9, 2.0)}),
]


@pytest.mark.parametrize("name,args,kwargs", BAD_HYPERPARAMETERS)
def test_bad_hyperparameters_are_refused_in_torchs_words(name, args, kwargs):
    ours, theirs = _twins()
    _same_error(lambda: getattr(optim, name)(ours, *args, **kwargs),
                lambda: getattr(torch.optim, name)(theirs, *args, **kwargs))


def test_negative_dampening_is_accepted_as_torch():
    """torch does not check ``dampening``: (1 - dampening) > 1 is an odd but valid choice."""
    _same_trajectory(lambda O, p: O.SGD(p, 0.1, 0.9, -0.5))


def test_zero_dim_tensors_as_hyperparameters():
    """``lr=torch.tensor(0.01)`` (and betas as tensors) is accepted by torch: minilora takes 0-d tensors too."""
    ours, theirs = _twins()
    runs = []
    for lib, params in ((ml, ours), (torch, theirs)):
        def t(value):  # float64: torch computes bias corrections in the tensors' dtype
            return lib.tensor(value, dtype=lib.float64)
        opt = _lib(lib)[0].Adam(params, lr=t(0.1), betas=(t(0.8), t(0.99)))
        runs.append(_train(lib, params, opt, 4))
    for a, b in zip(*runs):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)
    with pytest.raises(ValueError, match="Tensor lr must be 1-element"):  # torch's ValueError
        optim.SGD(ours, lr=ml.tensor([0.1, 0.2]))


# ---- optimizers: amsgrad ------------------------------------------------------------------------------
@pytest.mark.parametrize("make", [
    lambda O, p: O.Adam(p, 0.1, amsgrad=True),
    lambda O, p: O.Adam(p, 0.1, (0.8, 0.9), 1e-6, 0.1, True),
    lambda O, p: O.Adam(p, lr=0.05, amsgrad=True, maximize=True, weight_decay=0.1, decoupled_weight_decay=True),
    lambda O, p: O.AdamW(p, lr=0.1, amsgrad=True),
    lambda O, p: O.AdamW(p, 0.1, (0.5, 0.7), 1e-8, 0.3, True, maximize=True),
], ids=["Adam", "Adam positional L2", "Adam decoupled maximize", "AdamW", "AdamW positional maximize"])
def test_amsgrad_matches_torch(make):
    opt, topt = _same_trajectory(make, steps=10, skip={1: 3})
    assert set(opt.state[opt.param_groups[0]["params"][0]]) == {"step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"}


def test_amsgrad_state_dict_loads_from_torch_and_continues_alike():
    ours, theirs = _twins()
    topt = torch.optim.AdamW(theirs, lr=0.1, amsgrad=True)
    _train(torch, theirs, topt, 3)
    fresh = [nn.Parameter(t.detach().numpy(force=True).copy()) for t in theirs]
    opt = optim.AdamW(fresh, lr=0.5)  # built with other hyperparameters: the saved ones win, as in torch
    opt.load_state_dict(topt.state_dict())
    assert opt.param_groups[0]["amsgrad"] is True and opt.param_groups[0]["lr"] == 0.1
    a, b = _train(ml, fresh, opt, 3, seed=5), _train(torch, theirs, topt, 3, seed=5)
    for x, y in zip(a, b):
        np.testing.assert_allclose(x, y, rtol=1e-12, atol=1e-14)
    assert set(opt.state_dict()["state"][0]) == set(topt.state_dict()["state"][0])


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_amsgrad_in_16_bits_matches_torch(dtype):
    """torch keeps a 16-bit parameter's state (max_exp_avg_sq too) in its dtype, every op rounded once."""
    rng = np.random.default_rng(4)
    start, grads = rng.standard_normal(64), [rng.standard_normal(64) for _ in range(6)]
    p, t = nn.Parameter(ml.tensor(start, dtype=getattr(ml, dtype))), torch.nn.Parameter(torch.tensor(start).to(getattr(torch, dtype)))
    opt, topt = optim.AdamW([p], lr=0.01, eps=1e-4, amsgrad=True), torch.optim.AdamW([t], lr=0.01, eps=1e-4, amsgrad=True)
    for g in grads:
        p.grad, t.grad = ml.tensor(g, dtype=getattr(ml, dtype)), torch.tensor(g).to(getattr(torch, dtype))
        opt.step()
        topt.step()
    np.testing.assert_array_equal(p.float().numpy(force=True), t.detach().float().numpy(force=True))
    np.testing.assert_array_equal(ml.tensor(opt.state[p]["max_exp_avg_sq"]).float().numpy(force=True),
                                  topt.state[t]["max_exp_avg_sq"].float().numpy(force=True))


def test_switching_amsgrad_on_mid_run_is_refused_before_any_change():
    ours, theirs = _twins()
    for lib, params in ((torch, theirs), (ml, ours)):
        opt = _lib(lib)[0].Adam(params, lr=0.1)
        _train(lib, params, opt, 1)
        opt.param_groups[0]["amsgrad"] = True
        with pytest.raises(KeyError, match="max_exp_avg_sq"):
            _train(lib, params, opt, 1)
    assert opt.state[ours[0]]["step"] == 1


# ---- learning-rate schedulers: the ones a tutorial uses, 40 steps, every lr to the last bit -----------------
def _scheduled(lib, make, opt_name="SGD", steps=40, hand=None, opt_kwargs=None):
    """A two-group optimizer under ``make(scheduler module, optimizer)``; every step records
    ``get_last_lr()``, the groups' lrs and their momentum (SGD's or Adam's beta1). ``hand``: the step
    after which the lrs are halved by hand (``param_groups[i]['lr'] = ...``), as users do."""
    ours, theirs = _twins()
    params = ours if lib is ml else theirs
    module, schedulers = _lib(lib)
    kwargs = opt_kwargs or ({"lr": 0.1, "momentum": 0.9} if opt_name == "SGD" else {"lr": 0.1})
    opt = getattr(module, opt_name)([{"params": params[:1]}, {"params": params[1:], "lr": 0.3}], **kwargs)
    sched = make(schedulers, opt)
    momentum = "betas" if "betas" in opt.defaults else "momentum"

    def seen():
        return sched.get_last_lr() + [g["lr"] for g in opt.param_groups] + [g.get(momentum) for g in opt.param_groups]
    history = [seen()]
    rng = np.random.default_rng(2)
    for step in range(steps):
        _set_grads(params, [rng.standard_normal(tuple(p.shape)) for p in params], lib)
        opt.step()
        sched.step()
        if step == hand:
            for g in opt.param_groups:
                g["lr"] = g["lr"] * 0.5
        history.append(seen())
    return history, sched, [np.array(p.detach().numpy(force=True)) for p in params]


def _same_schedule(make, **options):
    (ours, sched, weights), (theirs, _, tweights) = (_scheduled(lib, make, **options) for lib in (ml, torch))
    assert ours == theirs  # float for float
    for a, b in zip(weights, tweights):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)
    return sched


NEW_SCHEDULES = {
    "MultiplicativeLR": lambda S, o: S.MultiplicativeLR(o, lambda epoch: 0.95),
    "MultiplicativeLR(list)": lambda S, o: S.MultiplicativeLR(o, [lambda e: 0.9, lambda e: 1.0 - 0.01 * e]),
    "ChainedScheduler": lambda S, o: S.ChainedScheduler([S.ConstantLR(o, 0.1, 5), S.ExponentialLR(o, 0.9)]),
    "ChainedScheduler(optimizer=)": lambda S, o: S.ChainedScheduler(
        [S.LinearLR(o, 0.2, total_iters=6), S.CosineAnnealingLR(o, 12, 0.001)], optimizer=o),
    "CyclicLR": lambda S, o: S.CyclicLR(o, 0.01, 0.1, step_size_up=4),
    "CyclicLR(triangular2,down)": lambda S, o: S.CyclicLR(o, [0.01, 0.02], [0.1, 0.5], 3, 5, "triangular2"),
    "CyclicLR(exp_range)": lambda S, o: S.CyclicLR(o, base_lr=0.01, max_lr=0.1, step_size_up=5, mode="exp_range",
                                                   gamma=0.97, base_momentum=0.7, max_momentum=0.95),
    "CyclicLR(scale_fn)": lambda S, o: S.CyclicLR(o, 0.01, 0.1, 4, scale_fn=lambda x: 0.5 ** x,
                                                  scale_mode="iterations", cycle_momentum=False),
}


@pytest.mark.parametrize("opt_name", ["SGD", "Adam"])
@pytest.mark.parametrize("name", list(NEW_SCHEDULES))
def test_more_schedulers_match_torch(name, opt_name):
    _same_schedule(NEW_SCHEDULES[name], opt_name=opt_name)


@pytest.mark.parametrize("name", ["MultiplicativeLR", "ChainedScheduler", "CyclicLR(exp_range)", "CyclicLR(scale_fn)"])
def test_more_schedulers_after_a_hand_changed_lr(name):
    _same_schedule(NEW_SCHEDULES[name], hand=6)


@pytest.mark.parametrize("name", ["MultiplicativeLR", "ChainedScheduler", "CyclicLR(triangular2,down)"])
def test_more_schedulers_resume_from_their_state_dict(name):
    """Save optimizer and scheduler after 12 steps, build both anew, load, continue: the same lrs."""
    _, sched, _ = _scheduled(ml, NEW_SCHEDULES[name], steps=12)
    saved_opt, saved = sched.optimizer.state_dict(), sched.state_dict()
    expected = []
    for _ in range(10):
        sched.optimizer.step()
        sched.step()
        expected.append(sched.get_last_lr())
    _, again, _ = _scheduled(ml, NEW_SCHEDULES[name], steps=0)
    again.optimizer.load_state_dict(saved_opt)
    again.load_state_dict(saved)
    resumed = []
    for _ in range(10):
        again.optimizer.step()
        again.step()
        resumed.append(again.get_last_lr())
    assert resumed == expected


def test_new_schedulers_refuse_what_torch_refuses():
    ours, theirs = _twins()
    opt, topt = optim.SGD(ours, lr=0.1), torch.optim.SGD(theirs, lr=0.1)
    _same_error(lambda: L.MultiplicativeLR(opt, [lambda e: 1.0, lambda e: 1.0]),
                lambda: TL.MultiplicativeLR(topt, [lambda e: 1.0, lambda e: 1.0]))
    _same_error(lambda: L.MultiplicativeLR(opt, 0.9), lambda: TL.MultiplicativeLR(topt, 0.9))
    _same_error(lambda: L.LambdaLR(opt, [lambda e: 1.0] * 2), lambda: TL.LambdaLR(topt, [lambda e: 1.0] * 2))
    _same_error(lambda: L.LambdaLR(opt, 0.9), lambda: TL.LambdaLR(topt, 0.9),  # torch: 'float' not callable
                words="lr_lambda should be a function, but got float")
    _same_error(lambda: L.ChainedScheduler([]), lambda: TL.ChainedScheduler([]))
    other, tother = optim.SGD(ours, lr=0.1), torch.optim.SGD(theirs, lr=0.1)
    _same_error(lambda: L.ChainedScheduler([L.StepLR(opt, 2), L.StepLR(other, 2)]),
                lambda: TL.ChainedScheduler([TL.StepLR(topt, 2), TL.StepLR(tother, 2)]),
                words="expects all schedulers to belong to the same optimizer")
    _same_error(lambda: L.ChainedScheduler([L.ReduceLROnPlateau(opt)]),
                lambda: TL.ChainedScheduler([TL.ReduceLROnPlateau(topt)]))
    _same_error(lambda: L.CyclicLR(opt, 0.01, 0.1, mode="sine"), lambda: TL.CyclicLR(topt, 0.01, 0.1, mode="sine"))
    _same_error(lambda: L.CyclicLR(opt, [0.01] * 3, 0.1), lambda: TL.CyclicLR(topt, [0.01] * 3, 0.1))
    fresh, tfresh = optim.SGD(ours, lr=0.1), torch.optim.SGD(theirs, lr=0.1)  # no scheduler set initial_lr yet
    _same_error(lambda: L.CyclicLR(fresh, 0.01, 0.1, last_epoch=3), lambda: TL.CyclicLR(tfresh, 0.01, 0.1, last_epoch=3),
                words="param 'initial_lr' is not specified in param_groups[0]")


def test_scheduler_stepped_before_the_optimizer_warns_as_torch():
    """torch's warning for the pre-1.1 order (the first lr of the schedule is skipped): only when
    ``scheduler.step()`` comes before any ``optimizer.step()``."""
    for lib in (torch, ml):
        module, schedulers = _lib(lib)
        params = [lib.zeros(2, requires_grad=True)]
        for first_the_optimizer in (True, False):
            opt = module.SGD(params, lr=0.1)
            sched = schedulers.StepLR(opt, 2)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                if first_the_optimizer:
                    opt.step()
                sched.step()
                opt.step()
                sched.step()
            messages = [str(w.message) for w in caught]
            expected = [] if first_the_optimizer else ["Detected call of `lr_scheduler.step()` before `optimizer.step()`"]
            assert [m[:len(expected[0])] for m in messages] == expected if expected else messages == [], (lib, messages)


# ---- checkpoints of the whole training state ----------------------------------------------------------------
TUTORIAL_SCHEDULES = {
    "MultiStepLR": lambda o: L.MultiStepLR(o, [3, 3, 7, 20], 0.5),
    "OneCycleLR": lambda o: L.OneCycleLR(o, 0.5, total_steps=30),
    "CyclicLR": lambda o: L.CyclicLR(o, 0.01, 0.1, 3, mode="exp_range", gamma=0.9),
    "ReduceLROnPlateau": lambda o: L.ReduceLROnPlateau(o, patience=1),
    "SequentialLR": lambda o: L.SequentialLR(o, [L.LinearLR(o, 0.1, total_iters=5), L.CosineAnnealingLR(o, 20, 0.01)], [5]),
    "ChainedScheduler": lambda o: L.ChainedScheduler([L.StepLR(o, 5, 0.5), L.CosineAnnealingLR(o, 10)]),
    "CosineAnnealingWarmRestarts": lambda o: L.CosineAnnealingWarmRestarts(o, 4, 2, 0.001),
}


def _tutorial_run(make, seed=0):
    ml.manual_seed(seed)
    model = nn.Linear(3, 2, dtype=ml.float64)
    opt = optim.AdamW(model.parameters(), lr=0.1, amsgrad=True)
    return model, opt, make(opt)


def _epochs(model, opt, sched, first, last, epoch_argument=False):
    seen = []
    for epoch in range(first, last):
        x = ml.tensor(np.random.default_rng(epoch).standard_normal((4, 3)))
        loss = (model(x) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if isinstance(sched, L.ReduceLROnPlateau):
            sched.step(loss.item())
        elif epoch_argument:
            sched.step(epoch + 1)
        else:
            sched.step()
        seen.append((loss.item(), sched.get_last_lr()))
    return seen


@pytest.mark.parametrize("epoch_argument", [False, True], ids=["step()", "step(epoch)"])
@pytest.mark.parametrize("name", list(TUTORIAL_SCHEDULES))
def test_a_tutorial_checkpoint_resumes_every_scheduler_exactly(tmp_path, name, epoch_argument):
    """The checkpoint dict of torch's tutorial (epoch, model, optimizer and scheduler state dicts, loss),
    written with minilora.train.save_training_state (no pickle), read back in a new process's objects."""
    from minilora.train import load_training_state, save_training_state
    if epoch_argument and name in ("ReduceLROnPlateau", "SequentialLR", "ChainedScheduler"):
        pytest.skip("their step() takes no epoch")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's deprecation of step(epoch)
        make = TUTORIAL_SCHEDULES[name]
        full = _epochs(*_tutorial_run(make), 0, 16, epoch_argument)
        model, opt, sched = _tutorial_run(make)
        first = _epochs(model, opt, sched, 0, 7, epoch_argument)
        save_training_state(tmp_path / "checkpoint.npz", {
            "epoch": 7, "model_state_dict": model.state_dict(), "optimizer_state_dict": opt.state_dict(),
            "scheduler": sched.state_dict(), "loss": first[-1][0]})
        checkpoint = load_training_state(tmp_path / "checkpoint.npz")
        model, opt, sched = _tutorial_run(make, seed=1)
        model.load_state_dict(checkpoint["model_state_dict"])
        opt.load_state_dict(checkpoint["optimizer_state_dict"])
        sched.load_state_dict(checkpoint["scheduler"])
        assert first + _epochs(model, opt, sched, checkpoint["epoch"], 16, epoch_argument) == full


def test_the_tutorial_checkpoint_saves_with_minilora_save_as_with_torch_save(tmp_path):
    model = nn.Linear(3, 2)
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(ml.ones(1, 3)).sum().backward()
    opt.step()
    checkpoint = {"epoch": 3, "model_state_dict": model.state_dict(), "optimizer_state_dict": opt.state_dict()}
    ml.save(checkpoint, tmp_path / "checkpoint.pt")
    back = ml.load(tmp_path / "checkpoint.pt")
    assert back["epoch"] == 3 and sorted(back["model_state_dict"]) == ["bias", "weight"]
    fresh = nn.Linear(3, 2)
    fresh.load_state_dict(back["model_state_dict"])
    opt2 = optim.SGD(fresh.parameters(), lr=0.5)
    opt2.load_state_dict(back["optimizer_state_dict"])
    assert opt2.param_groups[0]["lr"] == 0.1 and opt2.param_groups[0]["momentum"] == 0.9
    assert np.array_equal(fresh.weight.numpy(force=True), model.weight.numpy(force=True))


def test_a_damaged_training_checkpoint_is_named_and_the_old_one_survives_a_failed_save(tmp_path):
    from minilora.train import load_training_state, save_training_state
    path = tmp_path / "checkpoint.npz"
    with pytest.raises(FileNotFoundError):
        load_training_state(path)
    save_training_state(path, {"epoch": 1, "w": np.ones(3)})
    with pytest.raises(TypeError, match="cannot store"):
        save_training_state(path, {"epoch": 2, "fn": object()})  # refused mid-way: the old file stays
    assert load_training_state(path)["epoch"] == 1
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(ValueError, match="truncated or corrupted"):
        load_training_state(path)


# ---- RMSprop and Adagrad ------------------------------------------------------------------------------------
@pytest.mark.parametrize("make", [
    lambda O, p: O.RMSprop(p),
    lambda O, p: O.RMSprop(p, 0.01, 0.9, 1e-6, 0.1, 0.8),
    lambda O, p: O.RMSprop(p, lr=0.02, alpha=0.3, centered=True, maximize=True),
    lambda O, p: O.RMSprop(p, lr=0.01, momentum=0.9, centered=True, weight_decay=0.05, foreach=False),
    lambda O, p: O.Adagrad(p),
    lambda O, p: O.Adagrad(p, 0.1, 0.05, 0.1, 0.5, 1e-6),
    lambda O, p: O.Adagrad(p, lr=0.1, maximize=True, initial_accumulator_value=0.2, foreach=None),
], ids=["RMSprop", "RMSprop positional", "RMSprop centered maximize", "RMSprop momentum centered L2",
        "Adagrad", "Adagrad positional", "Adagrad maximize"])
def test_rmsprop_and_adagrad_match_torch(make):
    """Two groups (the second with its own lr and weight_decay), a parameter without gradient for 3 steps."""
    opt, topt = _same_trajectory(make, steps=10, skip={1: 3})
    sd, tsd = opt.state_dict(), topt.state_dict()
    assert sd["param_groups"] == tsd["param_groups"]
    assert {i: sorted(st) for i, st in sd["state"].items()} == {i: sorted(st) for i, st in tsd["state"].items()}
    for i, st in tsd["state"].items():
        assert float(sd["state"][i]["step"]) == float(st["step"])


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("name,kwargs", [("RMSprop", {"lr": 0.01, "momentum": 0.9, "centered": True, "weight_decay": 0.1}),
                                         ("RMSprop", {"lr": 0.01, "alpha": 0.3}),
                                         ("Adagrad", {"lr": 0.1, "lr_decay": 0.01, "weight_decay": 0.1, "eps": 1e-4})])
def test_rmsprop_and_adagrad_in_16_bits_match_torch_bit_for_bit(dtype, name, kwargs):
    rng = np.random.default_rng(4)
    start, grads = rng.standard_normal(64), [rng.standard_normal(64) for _ in range(6)]
    p, t = nn.Parameter(ml.tensor(start, dtype=getattr(ml, dtype))), torch.nn.Parameter(torch.tensor(start).to(getattr(torch, dtype)))
    opt, topt = getattr(optim, name)([p], **kwargs), getattr(torch.optim, name)([t], **kwargs)
    for g in grads:
        p.grad, t.grad = ml.tensor(g, dtype=getattr(ml, dtype)), torch.tensor(g).to(getattr(torch, dtype))
        opt.step()
        topt.step()
        np.testing.assert_array_equal(p.float().numpy(force=True), t.detach().float().numpy(force=True))


def test_adagrad_state_exists_from_the_start_and_a_later_group_uses_the_constructors_value():
    ours, theirs = _twins()
    opt = optim.Adagrad(ours[:1], lr=0.1, initial_accumulator_value=0.3)
    topt = torch.optim.Adagrad(theirs[:1], lr=0.1, initial_accumulator_value=0.3)
    assert set(opt.state[ours[0]]) == set(topt.state[theirs[0]]) == {"step", "sum"}
    opt.add_param_group({"params": ours[1:], "initial_accumulator_value": 5.0})
    topt.add_param_group({"params": theirs[1:], "initial_accumulator_value": 5.0})
    a, b = _train(ml, ours, opt, 3), _train(torch, theirs, topt, 3)
    for x, y in zip(a, b):
        np.testing.assert_allclose(x, y, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(opt.state[ours[1]]["sum"], topt.state[theirs[1]]["sum"].numpy(force=True), rtol=1e-12)


@pytest.mark.parametrize("name,args,kwargs", [
    ("RMSprop", (-0.1,), {}), ("RMSprop", (0.1, -0.5), {}), ("RMSprop", (), {"eps": -1.0}),
    ("RMSprop", (), {"momentum": -0.1}), ("RMSprop", (), {"weight_decay": -0.1}),
    ("Adagrad", (-0.1,), {}), ("Adagrad", (0.1, -0.5), {}), ("Adagrad", (), {"weight_decay": -1}),
    ("Adagrad", (), {"initial_accumulator_value": -1}), ("Adagrad", (), {"eps": -1.0}),
])
def test_rmsprop_and_adagrad_refuse_bad_hyperparameters_in_torchs_words(name, args, kwargs):
    ours, theirs = _twins()
    _same_error(lambda: getattr(optim, name)(ours, *args, **kwargs),
                lambda: getattr(torch.optim, name)(theirs, *args, **kwargs))


def test_rmsprop_and_adagrad_state_dicts_load_from_torch_and_continue_alike():
    for name, kwargs in (("RMSprop", {"lr": 0.01, "momentum": 0.5, "centered": True}), ("Adagrad", {"lr": 0.1})):
        ours, theirs = _twins()
        topt = getattr(torch.optim, name)(theirs, **kwargs)
        _train(torch, theirs, topt, 3)
        fresh = [nn.Parameter(t.detach().numpy(force=True).copy()) for t in theirs]
        opt = getattr(optim, name)(fresh, lr=0.5)
        opt.load_state_dict(topt.state_dict())
        a, b = _train(ml, fresh, opt, 3, seed=5), _train(torch, theirs, topt, 3, seed=5)
        for x, y in zip(a, b):
            np.testing.assert_allclose(x, y, rtol=1e-12, atol=1e-14)


def test_cycling_momentum_needs_an_optimizer_with_momentum_as_torch():
    ours, theirs = _twins()
    opt, topt = optim.Adagrad(ours), torch.optim.Adagrad(theirs)
    _same_error(lambda: L.CyclicLR(opt, 0.01, 0.1), lambda: TL.CyclicLR(topt, 0.01, 0.1))
    _same_error(lambda: L.OneCycleLR(opt, 0.1, 10), lambda: TL.OneCycleLR(topt, 0.1, 10))
    _same_schedule(lambda S, o: S.OneCycleLR(o, 0.05, 40), opt_name="RMSprop",
                   opt_kwargs={"lr": 0.01, "momentum": 0.9})


@pytest.mark.parametrize("name", ["RMSprop", "Adagrad"])
def test_new_optimizer_signatures_match_torch(name):
    import inspect

    def described(cls):
        return [(p.name, p.kind, p.default) for p in inspect.signature(cls.__init__).parameters.values()][1:]
    assert described(getattr(optim, name)) == described(getattr(torch.optim, name))


# ---- gradient clipping -----------------------------------------------------------------------------------
@pytest.mark.parametrize("norm_type", [2.0, 1, float("inf"), "inf", 3.5])
@pytest.mark.parametrize("foreach", [None, True, False])
def test_clip_grad_norm_as_torch(norm_type, foreach):
    """Returns the total norm (a 0-d tensor of the gradients' dtype); a parameter without gradient is skipped."""
    ours, theirs = _twins()
    rng = np.random.default_rng(3)
    grads = [rng.standard_normal((3, 4)) * 3, None]
    totals = []
    for lib, params in ((ml, ours), (torch, theirs)):
        _set_grads(params, grads, lib)
        clip = ml.nn.utils.clip_grad_norm_ if lib is ml else torch.nn.utils.clip_grad_norm_
        totals.append(clip(params, 0.5, norm_type, False, foreach))
    assert totals[0].shape == () and str(totals[0].dtype) == "float64"
    assert totals[0].item() == pytest.approx(totals[1].item(), rel=1e-13)
    np.testing.assert_allclose(ours[0].grad.numpy(force=True), theirs[0].grad.numpy(force=True), rtol=1e-13)
    assert ours[1].grad is None


def test_clip_grad_norm_of_a_non_finite_norm_as_torch():
    ours, theirs = _twins()
    grads = [np.full((3, 4), np.inf), np.ones(5)]
    for lib, params in ((ml, ours), (torch, theirs)):
        _set_grads(params, grads, lib)
    _same_error(lambda: ml.nn.utils.clip_grad_norm_(ours, 1.0, error_if_nonfinite=True),
                lambda: torch.nn.utils.clip_grad_norm_(theirs, 1.0, error_if_nonfinite=True),
                words="The total norm of order 2.0 for gradients from `parameters` is non-finite")
    total, ttotal = ml.nn.utils.clip_grad_norm_(ours, 1.0), torch.nn.utils.clip_grad_norm_(theirs, 1.0)
    assert math.isinf(total.item()) and math.isinf(ttotal.item())
    for p, t in zip(ours, theirs):  # scaled by 1/inf, as torch: inf * 0 is NaN, the rest 0
        np.testing.assert_array_equal(p.grad.numpy(force=True), t.grad.numpy(force=True))


# ---- named parameters ----------------------------------------------------------------------------------------
def test_named_parameters_are_taken_and_their_names_saved_as_torch():
    ml.manual_seed(0)
    model = nn.Linear(3, 2, dtype=ml.float64)
    tmodel = torch.nn.Linear(3, 2, dtype=torch.float64)
    with torch.no_grad():
        tmodel.weight.copy_(torch.tensor(model.weight.numpy(force=True)))
        tmodel.bias.copy_(torch.tensor(model.bias.numpy(force=True)))
    opt, topt = optim.AdamW(model.named_parameters(), lr=0.1), torch.optim.AdamW(tmodel.named_parameters(), lr=0.1)
    assert opt.state_dict()["param_groups"] == topt.state_dict()["param_groups"]
    a = _train(ml, [model.weight, model.bias], opt, 3)
    b = _train(torch, [tmodel.weight, tmodel.bias], topt, 3)
    for x, y in zip(a, b):
        np.testing.assert_allclose(x, y, rtol=1e-12, atol=1e-14)
    named = list(model.named_parameters())
    groups = optim.SGD([{"params": named[:1]}, {"params": named[1:], "lr": 0.2}], lr=0.1)
    tnamed = list(tmodel.named_parameters())
    tgroups = torch.optim.SGD([{"params": tnamed[:1]}, {"params": tnamed[1:], "lr": 0.2}], lr=0.1)
    assert groups.state_dict()["param_groups"] == tgroups.state_dict()["param_groups"]
    _same_error(lambda: groups.add_param_group({"params": [nn.Parameter(np.zeros(2))]}),
                lambda: tgroups.add_param_group({"params": [torch.nn.Parameter(torch.zeros(2))]}))


def test_param_groups_keep_what_the_user_wrote_as_torch():
    ours, theirs = _twins()
    opt, topt = optim.Adam(ours, 0.1, [0.8, 0.9]), torch.optim.Adam(theirs, 0.1, [0.8, 0.9])
    assert opt.state_dict()["param_groups"] == topt.state_dict()["param_groups"]
    assert type(opt.param_groups[0]["betas"]) is tuple  # torch makes a list a tuple too


def test_get_lr_called_by_hand_warns_as_torch():
    """``scheduler.get_lr()`` outside ``step()`` computes the next lrs (not the current ones): torch warns."""
    for lib in (torch, ml):
        module, schedulers = _lib(lib)
        opt = module.SGD([lib.zeros(2, requires_grad=True)], lr=0.1)
        for sched in (schedulers.StepLR(opt, 1, 0.5), schedulers.CosineAnnealingWarmRestarts(opt, 3)):
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                sched.get_lr()
            assert [str(w.message) for w in caught] == [
                "To get the last learning rate computed by the scheduler, please use `get_last_lr()`."], lib
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                opt.step()
                sched.step()
                sched.get_last_lr()


# ---- transformers' schedules ------------------------------------------------------------------------------
def _transformers_run(lib, make, steps=30):
    """``make(schedule module, optimizer)`` on a two-group optimizer; the lrs of every step."""
    transformers_optimization = pytest.importorskip("transformers.optimization")
    ours, theirs = _twins()
    params = ours if lib is ml else theirs
    opt = _lib(lib)[0].AdamW([{"params": params[:1]}, {"params": params[1:], "lr": 0.3}], lr=0.1)
    sched = make(optim if lib is ml else transformers_optimization, opt)
    seen = [[g["lr"] for g in opt.param_groups]]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for step in range(steps):
            opt.step()
            sched.step(1.0) if isinstance(sched, (L.ReduceLROnPlateau, TL.ReduceLROnPlateau)) else sched.step()
            seen.append([g["lr"] for g in opt.param_groups])
    return seen


TRANSFORMERS_SCHEDULES = {
    "cosine_with_restarts": lambda T, o: T.get_cosine_with_hard_restarts_schedule_with_warmup(o, 3, 25, 3),
    "polynomial": lambda T, o: T.get_polynomial_decay_schedule_with_warmup(o, 4, 20, lr_end=1e-3, power=2.0),
    "inverse_sqrt": lambda T, o: T.get_inverse_sqrt_schedule(o, 5),
    "inverse_sqrt(timescale)": lambda T, o: T.get_inverse_sqrt_schedule(o, 0, timescale=7),
    "cosine_with_min_lr": lambda T, o: T.get_cosine_with_min_lr_schedule_with_warmup(o, 3, 20, min_lr=0.01),
    "cosine_with_min_lr(rate,cycles)": lambda T, o: T.get_cosine_with_min_lr_schedule_with_warmup(
        o, 3, 20, 1.5, min_lr_rate=0.2),
    "get_scheduler(cosine_with_restarts)": lambda T, o: T.get_scheduler(
        "cosine_with_restarts", o, num_warmup_steps=2, num_training_steps=20, scheduler_specific_kwargs={"num_cycles": 2}),
    "get_scheduler(polynomial)": lambda T, o: T.get_scheduler("polynomial", o, 2, 20),
    "get_scheduler(inverse_sqrt)": lambda T, o: T.get_scheduler("inverse_sqrt", o, 3),
    "get_scheduler(reduce_lr_on_plateau)": lambda T, o: T.get_scheduler(
        "reduce_lr_on_plateau", o, scheduler_specific_kwargs={"patience": 2, "factor": 0.5}),
    "get_scheduler(cosine_with_min_lr)": lambda T, o: T.get_scheduler(
        "cosine_with_min_lr", o, 2, 20, {"min_lr_rate": 0.1}),
    "get_scheduler(linear)": lambda T, o: T.get_scheduler("linear", o, 3, 20),
    "get_scheduler(constant)": lambda T, o: T.get_scheduler("constant", o),
}


@pytest.mark.parametrize("name", list(TRANSFORMERS_SCHEDULES))
def test_transformers_schedules_match_transformers(name):
    assert _transformers_run(ml, TRANSFORMERS_SCHEDULES[name]) == _transformers_run(torch, TRANSFORMERS_SCHEDULES[name])


def test_get_scheduler_takes_transformers_scheduler_type_and_refuses_what_it_refuses():
    transformers_optimization = pytest.importorskip("transformers.optimization")
    SchedulerType = transformers_optimization.SchedulerType
    ours, theirs = _twins()
    opt, topt = optim.AdamW(ours, lr=0.1), torch.optim.AdamW(theirs, lr=0.1)
    assert _transformers_run(ml, lambda T, o: T.get_scheduler(SchedulerType.COSINE, o, 2, 10)) == \
        _transformers_run(torch, lambda T, o: T.get_scheduler(SchedulerType.COSINE, o, 2, 10))
    for name, args in (("constant_with_warmup", ()), ("linear", ()), ("linear", (3,)), ("cosine", (0,)),
                       ("polynomial", (1,))):
        _same_error(lambda: optim.get_scheduler(name, opt, *args),
                    lambda: transformers_optimization.get_scheduler(name, topt, *args))
    _same_error(lambda: optim.get_scheduler("cosine_with_min_lr", opt, 1, 10),
                lambda: transformers_optimization.get_scheduler("cosine_with_min_lr", topt, 1, 10))
    _same_error(lambda: optim.get_polynomial_decay_schedule_with_warmup(opt, 1, 10, lr_end=0.5),
                lambda: transformers_optimization.get_polynomial_decay_schedule_with_warmup(topt, 1, 10, lr_end=0.5))
    with pytest.raises(ValueError, match="'cosine_restarts' is not a valid SchedulerType"):
        optim.get_scheduler("cosine_restarts", opt, 1, 10)
    _same_error(lambda: optim.get_scheduler("warmup_stable_decay", opt, 1, 10),  # (num_decay_steps missing)
                lambda: transformers_optimization.get_scheduler("warmup_stable_decay", topt, 1, 10))
    greedy = optim.get_scheduler("greedy", opt, 1, 10)  # (transformers' GreedyLR: tests/test_trainer_r15.py)
    assert type(greedy).__name__ == type(transformers_optimization.get_scheduler("greedy", topt, 1, 10)).__name__


@pytest.mark.parametrize("name", [n for n in L.__all__ if n.startswith("get_")])
def test_transformers_schedule_signatures(name):
    import inspect
    transformers_optimization = pytest.importorskip("transformers.optimization")

    def described(fn):
        return [(p.name, p.kind, p.default) for p in inspect.signature(fn).parameters.values()]
    assert described(getattr(L, name)) == described(getattr(transformers_optimization, name))


def test_load_state_dict_maps_the_saved_numbers_as_torch():
    """torch pairs the saved groups' parameter numbers, in order, with the optimizer's parameters: a state
    dict whose numbers are not 0, 1, ... in group order (written by hand or by other code) loads alike."""
    ours, theirs = _twins()
    topt = torch.optim.Adam(theirs, lr=0.1)
    _train(torch, theirs, topt, 2)
    saved = topt.state_dict()
    saved = {"state": {7: saved["state"][1], 3: saved["state"][0]},
             "param_groups": [dict(saved["param_groups"][0], params=[3, 7])]}
    fresh = [nn.Parameter(t.detach().numpy(force=True).copy()) for t in theirs]
    twin = [torch.nn.Parameter(t.detach().clone()) for t in theirs]
    opt, topt2 = optim.Adam(fresh, lr=0.1), torch.optim.Adam(twin, lr=0.1)
    opt.load_state_dict(saved)
    topt2.load_state_dict(saved)
    a, b = _train(ml, fresh, opt, 2), _train(torch, twin, topt2, 2)
    for x, y in zip(a, b):
        np.testing.assert_allclose(x, y, rtol=1e-12, atol=1e-14)


def test_minilora_load_of_a_training_checkpoint_says_what_reads_it(tmp_path):
    from minilora.train import save_training_state
    save_training_state(tmp_path / "checkpoint.npz", {"epoch": 1, "w": np.ones(2)})
    with pytest.raises(ValueError, match="NumPy .npz archive.*load_training_state"):
        ml.load(tmp_path / "checkpoint.npz")
    torch.save({"a": torch.zeros(2)}, tmp_path / "model.pt")  # torch's zip: read as torch.load reads it (r13)
    assert ml.load(tmp_path / "model.pt")["a"].tolist() == [0.0, 0.0]


def test_minilora_save_is_atomic_a_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    import os
    path = tmp_path / "model.safetensors"
    ml.save({"w": ml.ones(3)}, path)

    def disk_full(fd):  # the new bytes are written, not yet on disk: the crash comes now
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space left"):
        ml.save({"w": ml.zeros(3)}, path)
    monkeypatch.undo()
    np.testing.assert_array_equal(ml.load(path)["w"].numpy(force=True), np.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]  # no temporary file left behind


@pytest.mark.parametrize("make", [
    lambda O, p: O.AdamW(p, 0.1, (0.5, 0.7), 1e-8, 0.3, True, maximize=True),
    lambda O, p: O.RMSprop(p, lr=0.01, momentum=0.9, centered=True, weight_decay=0.05),
    lambda O, p: O.Adagrad(p, 0.1, 0.05, 0.1, 0.5, 1e-6),
], ids=["AdamW amsgrad", "RMSprop", "Adagrad"])
def test_new_optimizers_on_the_cuda_stand_in(make, monkeypatch):
    """The same trajectories with the parameters on ``cuda`` (tests/fake_cupy.py: CuPy's API, NumPy inside)."""
    import fake_cupy
    fake_cupy.install(monkeypatch)
    monkeypatch.setenv("MINILORA_DEVICE", "cuda")
    assert ml.tensor([1.0]).device.type == "cuda"
    opt, _ = _same_trajectory(make, steps=6, skip={1: 2})
    assert opt.param_groups[0]["params"][0].device.type == "cuda"


def test_load_training_state_names_files_that_are_not_training_checkpoints(tmp_path):
    from minilora.train import load_training_state
    torch.save({"a": torch.zeros(2)}, tmp_path / "model.pt")
    ml.save({"a": ml.zeros(2)}, tmp_path / "model.safetensors")
    with pytest.raises(ValueError, match="without minilora's '__meta__' entry.*torch.save"):
        load_training_state(tmp_path / "model.pt")
    with pytest.raises(ValueError, match="safetensors file.*minilora.load"):
        load_training_state(tmp_path / "model.safetensors")
    with pytest.raises(IsADirectoryError, match="checkpoint.npz"):
        load_training_state(tmp_path)


@pytest.mark.parametrize("map_location", ["cpu", {"emu": "cpu"}, lambda storage, loc: storage],
                         ids=["name", "dict", "callable"])
def test_minilora_load_takes_torchs_forms_of_map_location(tmp_path, map_location):
    """``torch.load(path, map_location=...)`` as tutorials write it: a name, a dict, ``lambda storage, loc: storage``."""
    state = {"w": ml.tensor(np.arange(3.0), device="emu", requires_grad=True), "b": ml.ones(2)}
    ml.save(state, tmp_path / "model.safetensors")
    loaded = ml.load(tmp_path / "model.safetensors", map_location=map_location)
    assert {name: t.device.type for name, t in loaded.items()} == {"w": "cpu", "b": "cpu"}
    assert loaded["w"].requires_grad and not loaded["b"].requires_grad
    np.testing.assert_array_equal(loaded["w"].detach().numpy(force=True), np.arange(3.0))
    torch.save({"w": torch.arange(3.0)}, tmp_path / "model.pt")  # torch takes the same forms
    torch.load(tmp_path / "model.pt", map_location={"cuda:0": "cpu"} if isinstance(map_location, dict) else map_location)


def test_minilora_load_map_location_errors(tmp_path):
    ml.save({"w": ml.ones(2, device="emu")}, tmp_path / "model.safetensors")
    assert ml.load(tmp_path / "model.safetensors", map_location={"cuda:0": "cpu"})["w"].device.type == "emu"
    assert ml.load(tmp_path / "model.safetensors", map_location=lambda t, loc: t.to("emu"))["w"].device.type == "emu"
    with pytest.raises(TypeError, match="map_location returned a str"):
        ml.load(tmp_path / "model.safetensors", map_location=lambda t, loc: "cpu")


def test_a_safetensors_file_whose_first_byte_is_0x80_is_not_taken_for_a_pickle(tmp_path):
    """The header's length is little-endian: 128 more than a multiple of 256 makes the first byte 0x80, a
    pickle's first byte (1 file in 32: headers are padded to 8 bytes). Such files were refused as pickles."""
    for length in range(1, 300):
        path = tmp_path / f"{length}.safetensors"
        ml.save({"x" * length: ml.ones(1)}, path)
        if path.read_bytes()[:1] == b"\x80":
            break
    else:
        pytest.fail("no header length 128 mod 256 reached")
    assert ml.load(path)["x" * length].tolist() == [1.0]


def test_a_custom_scheduler_written_as_in_torch_tutorials():
    """Subclass ``_LRScheduler`` (older tutorials) or ``LRScheduler`` with ``get_lr`` over ``base_lrs``."""
    def warmup_class(schedulers, base):
        class Warmup(getattr(schedulers, base)):
            def __init__(self, optimizer, warmup_steps, last_epoch=-1):
                self.warmup_steps = warmup_steps
                super().__init__(optimizer, last_epoch)

            def get_lr(self):
                return [lr * min(1.0, (self.last_epoch + 1) / self.warmup_steps) for lr in self.base_lrs]
        return Warmup
    for base in ("_LRScheduler", "LRScheduler"):
        _same_schedule(lambda S, o: warmup_class(S, base)(o, 5), steps=12)


# ---- an optimizer written by the user, as torch tutorials do ------------------------------------------------
def _users_optimizers(lib):
    class MomentumSGD(lib.optim.Optimizer):
        def __init__(self, params, lr=0.01, momentum=0.0):
            super().__init__(params, dict(lr=lr, momentum=momentum))

        @lib.no_grad()
        def step(self, closure=None):
            for group in self.param_groups:
                for p in group["params"]:
                    if p.grad is None:
                        continue
                    state = self.state[p]
                    if "buf" not in state:
                        state["buf"] = p.grad.clone()
                    else:
                        state["buf"].mul_(group["momentum"]).add_(p.grad)
                    p.add_(state["buf"], alpha=-group["lr"])

    class Shrink(lib.optim.Optimizer):  # no lr at all: torch does not ask for one
        def __init__(self, params, factor=0.5):
            super().__init__(params, dict(factor=factor))

        @lib.no_grad()
        def step(self, closure=None):
            for group in self.param_groups:
                for p in group["params"]:
                    if p.grad is not None:
                        p.mul_(group["factor"])
    return MomentumSGD, Shrink


def test_an_optimizer_written_by_the_user_trains_saves_and_resumes_as_torch():
    ours, theirs = _twins()
    results = []
    for lib, params in ((ml, ours), (torch, theirs)):
        momentum_sgd, shrink = _users_optimizers(lib)
        opt = momentum_sgd(params, lr=0.1, momentum=0.9)
        _train(lib, params, opt, 3)
        saved = opt.state_dict()
        again = momentum_sgd(params, lr=0.5)
        again.load_state_dict(saved)  # its Tensor state (state["buf"]) comes back as Tensors
        _train(lib, params, again, 2, seed=4)
        _train(lib, params, shrink(params), 1)
        results.append([np.array(p.detach().numpy(force=True)) for p in params])
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("make", [lambda S, o: S.LambdaLR(o, lambda e: 0.9 ** e),
                                  lambda S, o: S.MultiplicativeLR(o, lambda e: 0.9)], ids=["LambdaLR", "MultiplicativeLR"])
def test_a_group_added_after_a_lambda_scheduler_is_refused_not_left_unscheduled(make):
    """torch fails on it (a bare zip() error); minilora left the new group's lr as it was, silently."""
    ours, theirs = _twins()
    opt, topt = optim.SGD(ours[:1], lr=0.1), torch.optim.SGD(theirs[:1], lr=0.1)
    sched, tsched = make(L, opt), make(TL, topt)
    opt.add_param_group({"params": ours[1:], "lr": 0.5})
    topt.add_param_group({"params": theirs[1:], "lr": 0.5})
    opt.step()
    topt.step()
    _same_error(sched.step, tsched.step, words="add_param_group")


# ---- Adamax, NAdam, RAdam -----------------------------------------------------------------------------------
ADAM_VARIANTS = {
    "Adamax": lambda O, p: O.Adamax(p, 0.01),
    "Adamax(positional)": lambda O, p: O.Adamax(p, 0.02, (0.8, 0.9), 1e-6, 0.1, None, maximize=True),
    "NAdam": lambda O, p: O.NAdam(p, lr=0.01),
    "NAdam(positional)": lambda O, p: O.NAdam(p, 0.01, (0.8, 0.95), 1e-7, 0.1, 0.01, True),
    "NAdam(L2,maximize)": lambda O, p: O.NAdam(p, lr=0.01, weight_decay=0.1, maximize=True),
    "RAdam": lambda O, p: O.RAdam(p, lr=0.01),
    "RAdam(positional,decoupled)": lambda O, p: O.RAdam(p, 0.01, (0.5, 0.6), 1e-8, 0.1, True),
    "RAdam(L2,maximize)": lambda O, p: O.RAdam(p, lr=0.01, betas=(0.9, 0.9), weight_decay=0.2, maximize=True),
}


@pytest.mark.parametrize("name", list(ADAM_VARIANTS))
def test_adam_variants_match_torch(name):
    """12 steps: RAdam's rectified phase (rho_t > 5) starts within them for betas[1] <= 0.9."""
    opt, topt = _same_trajectory(ADAM_VARIANTS[name], steps=12, skip={1: 3})
    assert {i: sorted(st) for i, st in opt.state_dict()["state"].items()} == \
        {i: sorted(st) for i, st in topt.state_dict()["state"].items()}


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("name", ["Adamax(positional)", "NAdam(positional)", "RAdam(positional,decoupled)"])
def test_adam_variants_in_16_bits_match_torch_bit_for_bit(dtype, name):
    rng = np.random.default_rng(7)
    start, grads = rng.standard_normal(128), [rng.standard_normal(128) * 0.1 for _ in range(10)]
    p, t = nn.Parameter(ml.tensor(start, dtype=getattr(ml, dtype))), torch.nn.Parameter(torch.tensor(start).to(getattr(torch, dtype)))
    opt, topt = ADAM_VARIANTS[name](optim, [p]), ADAM_VARIANTS[name](torch.optim, [t])
    for g in grads:
        p.grad, t.grad = ml.tensor(g, dtype=getattr(ml, dtype)), torch.tensor(g).to(getattr(torch, dtype))
        opt.step()
        topt.step()
        np.testing.assert_array_equal(p.float().numpy(force=True), t.detach().float().numpy(force=True))


@pytest.mark.parametrize("name", ["Adamax", "NAdam", "RAdam"])
def test_adam_variants_signatures_errors_and_torchs_state_dict(name):
    import inspect

    def described(cls):
        return [(p.name, p.kind, p.default) for p in inspect.signature(cls.__init__).parameters.values()][1:]
    assert described(getattr(optim, name)) == described(getattr(torch.optim, name))
    ours, theirs = _twins()
    for kwargs in ({"lr": -1.0}, {"betas": (1.0, 0.9)}, {"eps": -1.0}, {"weight_decay": -0.1}):
        _same_error(lambda: getattr(optim, name)(ours, **kwargs), lambda: getattr(torch.optim, name)(theirs, **kwargs))
    topt = getattr(torch.optim, name)(theirs, lr=0.01)
    _train(torch, theirs, topt, 3)
    fresh = [nn.Parameter(t.detach().numpy(force=True).copy()) for t in theirs]
    opt = getattr(optim, name)(fresh, lr=0.5)
    opt.load_state_dict(topt.state_dict())
    # the oracle is torch resumed the same way (its load casts NAdam's float32 mu_product to float64, as ours)
    resumed = [torch.nn.Parameter(t.detach().clone()) for t in theirs]
    topt2 = getattr(torch.optim, name)(resumed, lr=0.5)
    topt2.load_state_dict(topt.state_dict())
    a, b = _train(ml, fresh, opt, 3, seed=5), _train(torch, resumed, topt2, 3, seed=5)
    for x, y in zip(a, b):
        np.testing.assert_allclose(x, y, rtol=1e-12, atol=1e-14)


# ---- Adadelta ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("make", [lambda O, p: O.Adadelta(p), lambda O, p: O.Adadelta(p, 0.5, 0.8, 1e-4, 0.1),
                                  lambda O, p: O.Adadelta(p, lr=2.0, rho=0.95, maximize=True, foreach=False)],
                         ids=["defaults", "positional", "maximize"])
def test_adadelta_matches_torch(make):
    _same_trajectory(make, steps=10, skip={1: 3})


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_adadelta_in_16_bits_matches_torch_bit_for_bit(dtype):
    rng = np.random.default_rng(7)
    start, grads = rng.standard_normal(128), [rng.standard_normal(128) for _ in range(8)]
    p, t = nn.Parameter(ml.tensor(start, dtype=getattr(ml, dtype))), torch.nn.Parameter(torch.tensor(start).to(getattr(torch, dtype)))
    opt, topt = optim.Adadelta([p], 0.5, 0.8, 1e-3, 0.1), torch.optim.Adadelta([t], 0.5, 0.8, 1e-3, 0.1)
    for g in grads:
        p.grad, t.grad = ml.tensor(g, dtype=getattr(ml, dtype)), torch.tensor(g).to(getattr(torch, dtype))
        opt.step()
        topt.step()
        np.testing.assert_array_equal(p.float().numpy(force=True), t.detach().float().numpy(force=True))


def test_adadelta_signature_errors_and_torchs_state_dict():
    import inspect

    def described(cls):
        return [(p.name, p.kind, p.default) for p in inspect.signature(cls.__init__).parameters.values()][1:]
    assert described(optim.Adadelta) == described(torch.optim.Adadelta)
    ours, theirs = _twins()
    for kwargs in ({"lr": -1.0}, {"rho": 1.5}, {"rho": -0.1}, {"eps": -1.0}, {"weight_decay": -0.1}):
        _same_error(lambda: optim.Adadelta(ours, **kwargs), lambda: torch.optim.Adadelta(theirs, **kwargs))
    topt = torch.optim.Adadelta(theirs)
    _train(torch, theirs, topt, 3)
    fresh = [nn.Parameter(t.detach().numpy(force=True).copy()) for t in theirs]
    opt = optim.Adadelta(fresh, lr=0.1)
    opt.load_state_dict(topt.state_dict())
    a, b = _train(ml, fresh, opt, 3, seed=5), _train(torch, theirs, topt, 3, seed=5)
    for x, y in zip(a, b):
        np.testing.assert_allclose(x, y, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("name,kwargs", [
    ("AdamW", {"lr": 0.01, "eps": 0.03}), ("Adam", {"lr": 0.01, "eps": 0.01, "amsgrad": True}),
    ("RMSprop", {"lr": 0.01, "eps": 0.01, "centered": True, "momentum": 0.5}), ("Adagrad", {"lr": 0.1, "eps": 0.01}),
    ("Adamax", {"lr": 0.01, "eps": 0.01}), ("NAdam", {"lr": 0.01, "eps": 0.01}),
    ("RAdam", {"lr": 0.01, "eps": 0.01, "betas": (0.9, 0.9)}), ("Adadelta", {"eps": 1e-3, "rho": 0.5})])
def test_a_large_eps_in_16_bits_is_added_as_torch_adds_it(dtype, name, kwargs):
    """torch rounds a number added to a 16-bit tensor to the tensor's dtype first (``sqrt(v).add_(eps)`` adds
    bfloat16's 0.010009765625 for eps=0.01): with a large eps the weights differed by an ulp here and there."""
    rng = np.random.default_rng(7)
    start, grads = rng.standard_normal(256), [rng.standard_normal(256) * 0.1 for _ in range(10)]
    p, t = nn.Parameter(ml.tensor(start, dtype=getattr(ml, dtype))), torch.nn.Parameter(torch.tensor(start).to(getattr(torch, dtype)))
    opt, topt = getattr(optim, name)([p], **kwargs), getattr(torch.optim, name)([t], **kwargs)
    for g in grads:
        p.grad, t.grad = ml.tensor(g, dtype=getattr(ml, dtype)), torch.tensor(g).to(getattr(torch, dtype))
        opt.step()
        topt.step()
    np.testing.assert_array_equal(p.float().numpy(force=True), t.detach().float().numpy(force=True))


HAND_CHANGED = {
    "CosineAnnealingLR(eta_min)": lambda S, o: S.CosineAnnealingLR(o, 9, 0.005),
    "StepLR": lambda S, o: S.StepLR(o, 4, 0.5),
    "MultiStepLR(repeated)": lambda S, o: S.MultiStepLR(o, [3, 3, 7, 20], 0.5),
    "LinearLR": lambda S, o: S.LinearLR(o, 0.1, 0.9, 10),
    "PolynomialLR": lambda S, o: S.PolynomialLR(o, 12, 1.5),
    "CosineAnnealingWarmRestarts": lambda S, o: S.CosineAnnealingWarmRestarts(o, 4, 2, 0.001),
    "OneCycleLR(Adam betas)": lambda S, o: S.OneCycleLR(o, [0.5, 1.0], total_steps=45, pct_start=0.2),
    "SequentialLR": lambda S, o: S.SequentialLR(o, [S.ConstantLR(o, 0.5, 3), S.StepLR(o, 4), S.ExponentialLR(o, 0.9)],
                                                [4, 12]),
}


@pytest.mark.parametrize("opt_name", ["SGD", "Adam"])
@pytest.mark.parametrize("name", list(HAND_CHANGED))
def test_schedulers_after_param_groups_lr_is_changed_by_hand(name, opt_name):
    """``param_groups[i]['lr'] = ...`` mid-run: torch's chainable (recursive) formulas carry the change on,
    the closed form would not; minilora must give torch's numbers, momentum/betas included."""
    _same_schedule(HAND_CHANGED[name], opt_name=opt_name, steps=44, hand=6)
