"""An optimizer's state holds Tensors, as torch's: ``opt.state[p]["exp_avg"]`` is a Tensor of the parameter's dtype and
shape, ``step`` a 0-d float32 Tensor, each wrapping the array the update writes into (the same object from step to
step). User code that reads them (``.norm()``, ``.item()``), moves them (``if torch.is_tensor(v): s[k] = v.to(...)``)
or replaces them (a new Tensor, a NumPy array) works as with torch, and state_dicts round-trip through
``minilora.save``/``load`` and load from older checkpoints' NumPy arrays."""
import io

import numpy as np
import pytest

import minilora as ml

torch = pytest.importorskip("torch")

# (name, keyword arguments): every torch.optim class minilora has (SparseAdam is refused: no sparse gradients)
# (foreach=True: torch's other CPU implementation keeps the same state)
OPTIMIZERS = [("SGD", dict(lr=0.1, momentum=0.9)), ("Adam", {}), ("AdamW", {}),
              ("AdamW", dict(foreach=True)), ("Adam", dict(amsgrad=True)), ("RMSprop", dict(foreach=True)),
              ("RMSprop", dict(momentum=0.9, centered=True)), ("Adagrad", {}), ("Adamax", {}), ("NAdam", {}),
              ("RAdam", {}), ("Adadelta", {}), ("ASGD", dict(t0=1)), ("Rprop", {}), ("Adafactor", {}),
              ("LBFGS", dict(history_size=3, max_iter=4))]


def _first_kwargs(name):
    """The keyword arguments of ``name``'s first entry in OPTIMIZERS (SGD's with momentum: a state to look at)."""
    return next(kwargs for listed, kwargs in OPTIMIZERS if listed == name)


def _run(lib, name, kwargs, steps=3, dtype="float64", between=None):
    """A (4, 5) weight and a (3,) one trained ``steps`` steps on a fixed quadratic; ``between(opt)`` runs after
    the first step. Returns (optimizer, weights)."""
    values = np.linspace(-1.0, 1.0, 20).reshape(4, 5), np.array([0.5, -0.25, 2.0])
    weights = [lib.nn.Parameter(lib.tensor(v, dtype=getattr(lib, dtype))) for v in values]
    opt = getattr(lib.optim, name)(weights, **kwargs)

    def closure():
        opt.zero_grad()
        loss = sum(((w - 0.3) ** 2 * (1 + w.abs())).sum() for w in weights)
        loss.backward()
        return loss
    for k in range(steps):
        opt.step(closure)
        if k == 0 and between is not None:
            between(opt)
    return opt, weights


def _leaves(state):
    """``(key path, value)`` of every value in one parameter's state, lists (LBFGS's history) opened."""
    for key, value in state.items():
        if isinstance(value, list):
            yield from ((f"{key}[{i}]", v) for i, v in enumerate(value))
        else:
            yield key, value


@pytest.mark.parametrize("name,kwargs", OPTIMIZERS, ids=[f"{n}{'-' if k else ''}{'-'.join(k)}" for n, k in OPTIMIZERS])
def test_state_values_are_tensors_as_torch(name, kwargs):
    """Types, keys, dtypes, shapes and values after 3 steps (float64 weights: the state in float64, ``step``
    float32), and in the state_dict."""
    opt, weights = _run(ml, name, kwargs)
    topt, tweights = _run(torch, name, kwargs)
    for w, tw in zip(weights, tweights):
        ours, theirs = dict(_leaves(opt.state[w])), dict(_leaves(topt.state[tw]))
        assert set(ours) == set(theirs)
        for key, value in theirs.items():
            if not torch.is_tensor(value):
                assert not ml.is_tensor(ours[key]) and ours[key] == pytest.approx(value, rel=1e-12), key
                continue
            assert type(ours[key]) is ml.Tensor, (key, type(ours[key]))
            assert str(ours[key].dtype) == str(value.dtype).replace("torch.", ""), key
            assert tuple(ours[key].shape) == tuple(value.shape), key
            # (atol on the vector's scale: LBFGS's old_dirs are differences of gradients, whose small entries cancel)
            scale = float(np.abs(value.numpy()).max()) if value.numel() else 0.0
            np.testing.assert_allclose(ours[key].numpy(), value.numpy(), rtol=1e-12, atol=1e-12 * scale, err_msg=key)
        assert all(repr(ours[key]).startswith("tensor(") for key, value in theirs.items() if torch.is_tensor(value))
        assert (w in opt.state) == (tw in topt.state)
    state0 = opt.state_dict()["state"].get(0, {})
    if "step" in state0:
        assert state0["step"].item() == 3.0 and state0["step"].dtype == ml.float32


def test_tensor_methods_on_state_as_tutorials_use_them():
    """``state["exp_avg"].norm()``, ``state_dict()["state"][0]["step"].item()``: torch's numbers."""
    opt, (w, _) = _run(ml, "AdamW", {}, dtype="float32")
    topt, (tw, _) = _run(torch, "AdamW", {}, dtype="float32")
    assert opt.state[w]["exp_avg"].norm().item() == pytest.approx(topt.state[tw]["exp_avg"].norm().item(), rel=1e-6)
    assert opt.state_dict()["state"][0]["step"].item() == topt.state_dict()["state"][0]["step"].item() == 3.0
    assert ml.is_tensor(opt.state[w]["exp_avg_sq"].sqrt())
    sgd, (w, _) = _run(ml, "SGD", dict(lr=0.1))  # without momentum: no state at all, as torch's
    assert w not in sgd.state and not _run(torch, "SGD", dict(lr=0.1))[0].state


@pytest.mark.parametrize("name", ["AdamW", "SGD", "NAdam", "ASGD"])
def test_state_tensors_are_updated_in_place(name):
    """A state Tensor held from an earlier step is the one the optimizer updates (torch's in-place state): the same
    object, its values the current ones -- also for AdamW's small parameters, updated gathered in one flat pass."""
    kwargs = _first_kwargs(name)
    opt, weights = _run(ml, name, kwargs, steps=1)
    held = {(i, k): v for i, w in enumerate(weights) for k, v in opt.state[w].items()}
    before = {key: v.numpy().copy() for key, v in held.items()}
    w_before = weights[0].detach().numpy().copy()
    opt.step(lambda: _closure_of(opt, weights))
    assert not np.array_equal(weights[0].detach().numpy(), w_before)
    for (i, key), v in held.items():
        assert opt.state[weights[i]][key] is v, key
        if key not in ("eta", "mu"):  # (ASGD's stay 1 and lr before t0)
            assert not np.array_equal(v.numpy(), before[(i, key)]), key


def _closure_of(opt, weights):
    opt.zero_grad()
    loss = sum(((w - 0.3) ** 2 * (1 + w.abs())).sum() for w in weights)
    loss.backward()
    return loss


def test_move_state_loop_reaches_every_tensor_and_the_next_step_uses_it():
    """The "move optimizer state after loading" loop sees torch's tensors (``torch.is_tensor``), and values it puts
    back (a new Tensor, as ``v.to(...)`` of another device makes) are what the next step uses, as torch's."""
    def move(lib):
        def loop(opt):
            moved = 0
            for s in opt.state.values():
                for k, v in s.items():
                    if lib.is_tensor(v):
                        s[k] = v.to(dtype=lib.float64) * 0.5 if k != "step" else v.clone()
                        moved += 1
            opt.moved = moved
        return loop
    for name in ("Adam", "RMSprop", "SGD"):
        kwargs = _first_kwargs(name)
        opt, weights = _run(ml, name, kwargs, between=move(ml))
        topt, tweights = _run(torch, name, kwargs, between=move(torch))
        assert opt.moved == topt.moved > 0
        for w, tw in zip(weights, tweights):
            np.testing.assert_allclose(w.detach().numpy(), tw.detach().numpy(), rtol=1e-12)
            for k, v in topt.state[tw].items():
                np.testing.assert_allclose(opt.state[w][k].numpy(), v.numpy(), rtol=1e-12, err_msg=k)


def test_a_numpy_array_put_into_the_state_is_used_and_becomes_a_tensor():
    """An older minilora script writes NumPy arrays into the state: the next step computes on them."""
    def zero_moments(lib):
        def put(opt):
            for s in opt.state.values():
                s["exp_avg"] = np.zeros(tuple(s["exp_avg"].shape)) if lib is ml else s["exp_avg"].zero_()
        return put
    opt, weights = _run(ml, "Adam", {}, between=zero_moments(ml))
    topt, tweights = _run(torch, "Adam", {}, between=zero_moments(torch))
    for w, tw in zip(weights, tweights):
        assert type(opt.state[w]["exp_avg"]) is ml.Tensor
        np.testing.assert_allclose(w.detach().numpy(), tw.detach().numpy(), rtol=1e-12)


@pytest.mark.parametrize("name", ["AdamW", "NAdam", "SGD", "LBFGS"])
def test_state_dict_round_trip_through_save_and_load(name):
    """``minilora.save(opt.state_dict())``, ``load``, ``load_state_dict`` into a fresh optimizer: its state is
    Tensors again (copies, not the saved ones) and the next steps are bit for bit those of the optimizer saved."""
    kwargs = _first_kwargs(name)
    opt, weights = _run(ml, name, kwargs, dtype="float32")
    buffer = io.BytesIO()
    ml.save(opt.state_dict(), buffer)
    buffer.seek(0)
    loaded = ml.load(buffer)
    twins = [ml.nn.Parameter(w.detach().clone()) for w in weights]
    again = getattr(ml.optim, name)(twins, **kwargs)
    again.load_state_dict(loaded)
    for w in twins:
        for key, value in _leaves(again.state[w]):
            assert not isinstance(value, np.ndarray), key
    assert all(type(v) is ml.Tensor for v in again.state[twins[0]].values() if hasattr(v, "shape"))
    for _ in range(2):
        opt.step(lambda: _closure_of(opt, weights))
        again.step(lambda: _closure_of(again, twins))
    for w, twin in zip(weights, twins):
        np.testing.assert_array_equal(w.detach().numpy(), twin.detach().numpy())


def test_older_checkpoints_numpy_arrays_and_numbers_load_as_tensors():
    """A state_dict of NumPy arrays (minilora's before), with a plain-number ``step`` (an older torch's): Tensors
    after the load, ``step`` a 0-d float32 Tensor (torch's ``__setstate__``), the same steps after."""
    opt, weights = _run(ml, "AdamW", {}, dtype="float32")
    sd = opt.state_dict()
    old = {"param_groups": sd["param_groups"],
           "state": {i: {k: (float(v) if k == "step" else v.numpy().copy()) for k, v in st.items()}
                     for i, st in sd["state"].items()}}
    twins = [ml.nn.Parameter(w.detach().clone()) for w in weights]
    again = ml.optim.AdamW(twins)
    again.load_state_dict(old)
    step = again.state[twins[0]]["step"]
    assert type(step) is ml.Tensor and step.dtype == ml.float32 and step.shape == ()
    assert type(again.state[twins[0]]["exp_avg"]) is ml.Tensor
    opt.step(lambda: _closure_of(opt, weights))
    again.step(lambda: _closure_of(again, twins))
    for w, twin in zip(weights, twins):
        np.testing.assert_array_equal(w.detach().numpy(), twin.detach().numpy())


def test_lbfgs_reads_its_loss_without_a_warning(monkeypatch):
    """LBFGS's step runs under no_grad, where torch's ``float(loss)`` of a tensor that requires grad says nothing
    (minilora warned "Converting a tensor with requires_grad=True to a scalar" from inside LBFGS.step)."""
    import importlib
    import warnings
    monkeypatch.setattr(importlib.import_module("minilora.tensor"), "_warned_scalar_of_grad_tensor", False)  # (once)
    w = ml.nn.Parameter(ml.tensor([0.5, -1.0]))
    loss = (w ** 2).sum()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with ml.no_grad():
            assert float(loss) == 1.25
        _run(ml, "LBFGS", _first_kwargs("LBFGS"), steps=1)
