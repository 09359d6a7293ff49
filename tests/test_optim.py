"""minilora.optim: SGD/Adam/AdamW trajectories against PyTorch, schedules against transformers,
clip_grad_norm_, checkpoints, frozen parameters and bad input."""
import pickle

import numpy as np
import pytest

import minilora as ml
import minilora.nn as nn
import minilora.optim as optim
from minilora.device import CHUNK
from minilora.testing import assert_close


class TinyNet(nn.Module):
    """Linear -> LayerNorm -> tanh -> Linear, float64; the same attribute names as TorchTinyNet."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(4, 6, dtype=ml.float64)
        self.norm = nn.LayerNorm(6, dtype=ml.float64)
        self.fc2 = nn.Linear(6, 3, dtype=ml.float64)

    def forward(self, x):
        return self.fc2(self.norm(self.fc1(x)).tanh())


def _torch_twin(model):
    """The same network in PyTorch with the same weights (and the same frozen parameters)."""
    torch = pytest.importorskip("torch")

    class TorchTinyNet(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = torch.nn.Linear(4, 6, dtype=torch.float64)
            self.norm = torch.nn.LayerNorm(6, dtype=torch.float64)
            self.fc2 = torch.nn.Linear(6, 3, dtype=torch.float64)

        def forward(self, x):
            return self.fc2(torch.tanh(self.norm(self.fc1(x))))

    twin = TorchTinyNet()
    twin.load_state_dict({k: torch.from_numpy(v.numpy(force=True).copy()) for k, v in model.state_dict().items()})
    for (name, p), (_, tp) in zip(model.named_parameters(), twin.named_parameters()):
        tp.requires_grad_(p.requires_grad)
    return twin


X = np.random.default_rng(7).standard_normal((5, 4))
Y = np.random.default_rng(8).standard_normal((5, 3))


def _loss(model, lib):
    """Mean squared error of the model on (X, Y), in minilora (lib=ml) or torch (lib=torch)."""
    if lib is ml:
        out = model(ml.tensor(X))
        return ((out - ml.tensor(Y)) ** 2).mean()
    out = model(lib.from_numpy(X))
    return ((out - lib.from_numpy(Y)) ** 2).mean()


def _groups_split(model):
    """Two parameter groups with their own hyperparameters (same code for both libraries)."""
    first = [model.fc1.weight, model.fc1.bias]
    rest = [p for name, p in model.named_parameters() if not name.startswith("fc1")]
    return [{"params": first, "lr": 0.03}, {"params": rest, "weight_decay": 0.0}]


CASES = {
    "sgd": (lambda o, ps: o.SGD(ps, lr=0.1), list),
    "sgd-momentum-dampening-wd": (lambda o, ps: o.SGD(ps, lr=0.1, momentum=0.9, dampening=0.2,
                                                      weight_decay=0.05), list),
    "sgd-nesterov-wd": (lambda o, ps: o.SGD(ps, lr=0.1, momentum=0.9, nesterov=True,
                                            weight_decay=0.05), list),
    "sgd-groups": (lambda o, ps: o.SGD(ps, lr=0.1, momentum=0.5, weight_decay=0.1), _groups_split),
    "adam": (lambda o, ps: o.Adam(ps, lr=0.02, betas=(0.8, 0.99)), list),
    "adam-l2": (lambda o, ps: o.Adam(ps, lr=0.02, weight_decay=0.1), list),
    "adamw": (lambda o, ps: o.AdamW(ps, lr=0.02, weight_decay=0.1), list),
    "adamw-groups": (lambda o, ps: o.AdamW(ps, lr=0.02, eps=1e-6, weight_decay=0.2), _groups_split),
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("frozen", [False, True], ids=["all-trained", "fc1.bias-frozen"])
def test_trajectory_matches_torch(case, frozen):
    """20 steps, each framework's own autograd, the same parameters after every step (float64)."""
    torch = pytest.importorskip("torch")
    make, groups = CASES[case]
    model = TinyNet()
    if frozen:
        model.fc1.bias.requires_grad_(False)
    twin = _torch_twin(model)
    opt, topt = make(optim, groups(model.parameters() if groups is list else model)), \
        make(torch.optim, groups(twin.parameters() if groups is list else twin))
    frozen_before = model.fc1.bias.numpy(force=True).copy()
    for step in range(20):
        opt.zero_grad()
        topt.zero_grad()
        _loss(model, ml).backward()
        _loss(twin, torch).backward()
        opt.step()
        topt.step()
        for (name, p), (_, tp) in zip(model.named_parameters(), twin.named_parameters()):
            assert_close(p, tp.detach().numpy(force=True), rtol=1e-10, atol=1e-12, name=f"step {step}: {name}")
    if frozen:
        assert model.fc1.bias not in opt.state
        np.testing.assert_array_equal(model.fc1.bias.numpy(force=True), frozen_before)


def _fixed_grad_run(make, param, grads):
    """Run an optimizer over one parameter fed with the given gradient arrays; return the values."""
    opt = make([param])
    for g in grads:
        param.grad = ml.tensor(g)
        opt.step()
    return param.numpy(force=True)


@pytest.mark.parametrize("layout", ["contiguous", "transposed"])
def test_adamw_large_parameter_matches_torch(layout):
    """More elements than one CPU chunk (the slicing path), and a strided parameter (whole-array path)."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    init = rng.standard_normal((CHUNK // 100 + 7, 101))  # not a multiple of CHUNK
    grads = [rng.standard_normal(init.shape) for _ in range(3)]
    data = init.copy() if layout == "contiguous" else init.T.copy().T
    p = nn.Parameter(data)
    assert p._array.flags.c_contiguous == (layout == "contiguous")
    kwargs = dict(lr=0.01, betas=(0.85, 0.995), eps=1e-7, weight_decay=0.3)
    ours = _fixed_grad_run(lambda ps: optim.AdamW(ps, **kwargs), p, grads)
    tp = torch.nn.Parameter(torch.from_numpy(init.copy()))
    opt = torch.optim.AdamW([tp], **kwargs)
    for g in grads:
        tp.grad = torch.from_numpy(g)
        opt.step()
    assert_close(ours, tp.detach().numpy(force=True), rtol=1e-12, atol=1e-14, name="AdamW parameter")


def test_adamw_float32_stays_float32_and_in_place(device):
    """The update keeps dtype and the very same arrays (what a Module and fused kernels rely on)."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    init = rng.standard_normal((33, 17)).astype(np.float32)
    grads = [rng.standard_normal(init.shape).astype(np.float32) for _ in range(4)]
    p = nn.Parameter(init.copy(), device=device)
    array = p._array
    opt = optim.AdamW([p], lr=0.05)
    for g in grads:
        p.grad = ml.tensor(g, device=p.device)
        opt.step()
    assert p._array is array and p.dtype == np.float32
    assert opt.state[p]["exp_avg"].dtype == np.float32
    tp = torch.nn.Parameter(torch.from_numpy(init.copy()))
    topt = torch.optim.AdamW([tp], lr=0.05)
    for g in grads:
        tp.grad = torch.from_numpy(g)
        topt.step()
    assert_close(p, tp.detach().numpy(force=True), rtol=1e-5, atol=1e-6, name="float32 AdamW")


def test_optimizer_does_not_change_gradients():
    """Gradients are read, never written: the engine may give two parameters one gradient array."""
    a = nn.Parameter(np.ones(3))
    b = nn.Parameter(np.full(3, 2.0))
    (a + b).sum().backward()
    b.grad = a.grad  # one gradient Tensor for two parameters: the case this test is about
    for make in (lambda ps: optim.AdamW(ps, weight_decay=0.5), lambda ps: optim.Adam(ps, weight_decay=0.5),
                 lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9, weight_decay=0.5)):
        opt = make([a, b])
        opt.step()
        opt.step()
        np.testing.assert_array_equal(a.grad, np.ones(3))


# --- state: frozen parameters, memory, checkpoints ------------------------------------------------
def test_frozen_and_gradless_parameters_get_no_state():
    model = TinyNet()
    model.fc1.requires_grad_(False)
    model.norm.bias.requires_grad_(True)
    opt = optim.AdamW(model.parameters(), lr=0.01)
    _loss(model, ml).backward()
    model.norm.bias.grad = None  # trainable but without a gradient this step: skipped too
    before = {n: p.numpy(force=True).copy() for n, p in model.named_parameters()}
    opt.step()
    trained = {"norm.weight", "fc2.weight", "fc2.bias"}
    assert {n for n, p in model.named_parameters() if p in opt.state} == trained
    for name, p in model.named_parameters():
        assert np.array_equal(p.numpy(force=True), before[name]) == (name not in trained), name
    expected = sum(2 * p.nbytes for n, p in model.named_parameters() if n in trained)
    assert opt.state_bytes() == expected


def test_state_bytes_sgd():
    model = TinyNet()
    _loss(model, ml).backward()
    plain = optim.SGD(model.parameters(), lr=0.1)
    plain.step()
    assert plain.state_bytes() == 0 and not plain.state  # no momentum, no state
    heavy = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    heavy.step()
    assert heavy.state_bytes() == sum(p.nbytes for p in model.parameters())


@pytest.mark.parametrize("make", [lambda ps: optim.AdamW(ps, lr=0.01),
                                  lambda ps: optim.SGD(ps, lr=0.05, momentum=0.9, nesterov=True)],
                         ids=["adamw", "sgd"])
def test_state_dict_round_trip_resumes_identically(make):
    model = TinyNet()
    opt = make(_groups_split(model))
    sched = optim.get_linear_schedule_with_warmup(opt, num_warmup_steps=2, num_training_steps=12)

    def train(model, opt, sched, steps):
        for _ in range(steps):
            opt.zero_grad()
            _loss(model, ml).backward()
            opt.step()
            sched.step()

    train(model, opt, sched, 4)
    # Through pickle, as a checkpoint file would go.
    saved = pickle.loads(pickle.dumps((model.state_dict(), opt.state_dict(), sched.state_dict())))
    live = opt.state_dict()
    train(model, opt, sched, 5)
    # As torch's, state_dict() is not a snapshot: it moved with the optimizer (the pickled copy did not).
    for key, st in live["state"].items():
        assert st is opt.state[opt._all_params()[key]]
        if "step" in st:  # (SGD keeps none)
            assert float(st["step"]) == float(saved[1]["state"][key]["step"]) + 5

    resumed = TinyNet()
    resumed.load_state_dict(saved[0])
    opt2 = make(_groups_split(resumed))
    sched2 = optim.get_linear_schedule_with_warmup(opt2, num_warmup_steps=2, num_training_steps=12)
    opt2.load_state_dict(saved[1])  # after building the scheduler, as in PyTorch and the HF Trainer
    sched2.load_state_dict(saved[2])
    assert [g["lr"] for g in opt2.param_groups] == [g["lr"] for g in saved[1]["param_groups"]]
    train(resumed, opt2, sched2, 5)
    for (name, p), (_, q) in zip(model.named_parameters(), resumed.named_parameters()):
        np.testing.assert_array_equal(p.numpy(force=True), q.numpy(force=True), err_msg=name)
    assert sched.get_last_lr() == sched2.get_last_lr()


def test_load_state_dict_errors():
    model = TinyNet()
    opt = optim.AdamW(model.parameters())
    _loss(model, ml).backward()
    opt.step()
    sd = opt.state_dict()
    with pytest.raises(ValueError, match="2 parameter groups, but the optimizer has 1"):
        opt.load_state_dict({"state": {}, "param_groups": sd["param_groups"] * 2})
    with pytest.raises(ValueError, match="parameter group 0: loaded state dict has 2 parameters, "
                                         "the optimizer has 6"):
        opt.load_state_dict({"state": {}, "param_groups": [dict(sd["param_groups"][0], params=[0, 1])]})
    bad = pickle.loads(pickle.dumps(sd))
    bad["state"][0]["exp_avg"] = np.zeros((2, 2))
    before = opt.state[model.fc1.weight]["exp_avg"].numpy().copy()
    with pytest.raises(ValueError, match=r"'exp_avg' of parameter 0 has shape \(2, 2\), but the "
                                         r"parameter has shape \(6, 4\)"):
        opt.load_state_dict(bad)
    np.testing.assert_array_equal(opt.state[model.fc1.weight]["exp_avg"].numpy(), before)  # untouched


def test_zero_grad():
    model = TinyNet()
    opt = optim.SGD(model.parameters(), lr=0.1)
    _loss(model, ml).backward()
    shared = model.fc2.weight.grad
    opt.zero_grad(set_to_none=False)
    assert (model.fc2.weight.grad == 0).numpy(force=True).all() and model.fc2.weight.grad.shape == (3, 6)
    assert model.fc2.weight.grad is shared  # zeroed in place, as torch's p.grad.zero_(): the same Tensor
    opt.zero_grad()
    assert all(p.grad is None for p in model.parameters())


def test_step_with_closure_returns_loss():
    model = TinyNet()
    opt = optim.Adam(model.parameters(), lr=0.01)

    def closure():
        opt.zero_grad()
        loss = _loss(model, ml)
        loss.backward()
        return loss

    first = opt.step(closure).item()
    with ml.no_grad():  # the closure builds its graph even when step() is called under no_grad
        opt.step(closure)
    assert opt.step(closure).item() < first


# --- bad input -------------------------------------------------------------------------------------
@pytest.mark.parametrize("make, error, message", [
    (lambda ps: optim.SGD(ps, lr=-0.1), ValueError, r"invalid lr: -0.1 \(must be >= 0.0"),
    (lambda ps: optim.AdamW(ps, lr=float("nan")), ValueError, "invalid lr: nan"),
    (lambda ps: optim.Adam(ps, betas=(1.0, 0.999)), ValueError,
     r"invalid betas\[0\]: 1.0 \(must be \[0.0, 1.0\)"),
    (lambda ps: optim.AdamW(ps, betas=(0.9, -0.5)), ValueError, r"invalid betas\[1\]: -0.5"),
    (lambda ps: optim.AdamW(ps, betas=0.9), ValueError, "betas must be a pair"),
    (lambda ps: optim.AdamW(ps, eps=-1e-8), ValueError, "invalid eps"),
    (lambda ps: optim.AdamW(ps, weight_decay=-0.01), ValueError, "invalid weight_decay"),
    (lambda ps: optim.AdamW(ps, lr="fast"), TypeError, "lr must be a number"),
    (lambda ps: optim.SGD(ps, momentum=-0.9), ValueError, "invalid momentum"),
    (lambda ps: optim.SGD(ps, lr=0.1, nesterov=True), ValueError, "Nesterov momentum requires"),
    (lambda ps: optim.SGD(ps, lr=-1.0), ValueError, "invalid lr: -1.0.*group 0"),  # (a group's own lr: taken, as torch)
])
def test_bad_hyperparameters(make, error, message):
    with pytest.raises(error, match=message):
        make(list(TinyNet().parameters()))


def test_bad_parameters():
    model = TinyNet()
    w = model.fc1.weight
    with pytest.raises(ValueError, match="empty parameter list"):
        optim.AdamW([])
    with pytest.raises(TypeError, match="parameter 1 of group 0 is a numpy.ndarray"):
        optim.AdamW([w, np.zeros(3)])
    with pytest.raises(TypeError, match="a single Tensor: wrap it in a list"):
        optim.AdamW(w)
    with pytest.raises(TypeError, match=r"given the Module; pass model.parameters\(\)"):
        optim.AdamW(model)
    with pytest.raises(ValueError, match="non-leaf Tensor.*Mul"):
        optim.SGD([w * 2.0], lr=0.1)
    with pytest.raises(TypeError, match="floating-point.*int64"):
        optim.SGD([ml.tensor([1, 2])], lr=0.1)
    with pytest.warns(UserWarning, match="duplicate parameters"):  # as torch: a warning, then a step per listing
        optim.SGD([w, w], lr=0.1)
    with pytest.raises(ValueError, match="already in another group"):
        optim.SGD([{"params": [w]}, {"params": [w, model.fc1.bias]}], lr=0.1)
    with pytest.raises(TypeError, match="not a set"):
        optim.SGD({w}, lr=0.1)
    with pytest.raises(TypeError, match="mixes parameter-group dicts and Tensors"):
        optim.SGD([{"params": [w]}, model.fc1.bias], lr=0.1)


def test_gradient_of_the_wrong_shape():
    p = nn.Parameter(np.zeros(5))
    with pytest.raises(RuntimeError, match="attempting to assign a gradient of size .\[10\]. to a tensor of size .\[5\]."):  # as torch
        p.grad = ml.tensor(np.ones(10))


def test_add_param_group_uses_defaults():
    model = TinyNet()
    opt = optim.AdamW(model.fc1.parameters(), lr=0.01, weight_decay=0.1)
    opt.add_param_group({"params": model.fc2.parameters(), "lr": 0.5})
    assert opt.param_groups[1]["lr"] == 0.5 and opt.param_groups[1]["weight_decay"] == 0.1
    assert opt.param_groups[1]["betas"] == (0.9, 0.999)


# --- clip_grad_norm_ -------------------------------------------------------------------------------
@pytest.mark.parametrize("norm_type", [2.0, 1.0, 3.0, float("inf")])
@pytest.mark.parametrize("max_norm", [0.05, 100.0], ids=["clipped", "not-clipped"])
def test_clip_grad_norm_matches_torch(norm_type, max_norm):
    torch = pytest.importorskip("torch")
    model = TinyNet()
    twin = _torch_twin(model)
    _loss(model, ml).backward()
    _loss(twin, torch).backward()
    total = optim.clip_grad_norm_(model.parameters(), max_norm, norm_type=norm_type)
    expected = torch.nn.utils.clip_grad_norm_(twin.parameters(), max_norm, norm_type=norm_type)
    assert isinstance(total, ml.Tensor) and total.shape == ()
    assert total.item() == pytest.approx(expected.item(), rel=1e-12)
    for (name, p), (_, tp) in zip(model.named_parameters(), twin.named_parameters()):
        assert_close(p.grad, tp.grad.numpy(force=True), rtol=1e-12, atol=1e-15, name=f"clipped grad of {name}")


def test_clip_grad_norm_edge_cases():
    a = nn.Parameter(np.array([3.0, 0.0]))
    b = nn.Parameter(np.array([4.0]))
    c = nn.Parameter(np.ones(2))  # no gradient: ignored
    a.grad, b.grad = a.data.clone(), b.data.clone()
    assert optim.clip_grad_norm_([a, b, c], 1.0).item() == pytest.approx(5.0)
    assert np.sqrt((a.grad ** 2).sum() + (b.grad ** 2).sum()) == pytest.approx(1.0, rel=1e-5)
    assert c.grad is None
    assert optim.clip_grad_norm_(c, 1.0).item() == 0.0  # a single tensor, no gradients at all
    # A gradient Tensor set as two parameters' .grad is scaled in place once per parameter: twice, as torch's.
    x, y = nn.Parameter(np.ones(4)), nn.Parameter(np.ones(4))
    (x + y).sum().backward()
    y.grad = x.grad  # one gradient Tensor for two parameters
    optim.clip_grad_norm_([x, y], 1.0)
    assert y.grad is x.grad
    np.testing.assert_allclose(x.grad, np.full(4, 1 / 8), rtol=1e-5)
    a.grad = ml.tensor([np.nan, 1.0], dtype=ml.float64)
    with pytest.raises(RuntimeError, match="non-finite"):
        optim.clip_grad_norm_([a], 1.0, error_if_nonfinite=True)
    assert np.isnan(optim.clip_grad_norm_([a], 1.0).item())
    # norm_type=0 is torch's count of non-zero (per-parameter) norms, not an error (see the r4 conformance tests)


# --- schedules -------------------------------------------------------------------------------------
SCHEDULES = {  # transformers' lr_scheduler_type -> (function name, its arguments)
    "constant": ("get_constant_schedule", dict()),
    "constant_with_warmup": ("get_constant_schedule_with_warmup", dict(num_warmup_steps=3)),
    "linear": ("get_linear_schedule_with_warmup", dict(num_warmup_steps=3, num_training_steps=12)),
    "cosine": ("get_cosine_schedule_with_warmup", dict(num_warmup_steps=3, num_training_steps=12)),
}


@pytest.mark.parametrize("name", list(SCHEDULES))
def test_schedules_match_transformers(name):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    function, kwargs = SCHEDULES[name]
    model = TinyNet()
    opt = optim.SGD(_groups_split(model), lr=0.1)
    topt = torch.optim.SGD(_groups_split(_torch_twin(model)), lr=0.1)
    ours = getattr(optim, function)(opt, **kwargs)
    theirs = getattr(transformers, function)(topt, **kwargs)
    by_name = optim.get_scheduler(name, optim.SGD(_groups_split(TinyNet()), lr=0.1), **kwargs)
    for step in range(16):  # past the end of training: linear and cosine stay at 0
        assert ours.get_last_lr() == pytest.approx(theirs.get_last_lr(), abs=1e-15), step
        assert [g["lr"] for g in opt.param_groups] == ours.get_last_lr()
        assert by_name.get_last_lr() == ours.get_last_lr()
        opt.step()
        topt.step()
        ours.step()
        theirs.step()
        by_name.step()


def test_cosine_cycles_and_lambda_list():
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    model = TinyNet()
    opt = optim.SGD(model.parameters(), lr=1.0)
    topt = torch.optim.SGD(_torch_twin(model).parameters(), lr=1.0)
    ours = optim.get_cosine_schedule_with_warmup(opt, 2, 10, num_cycles=2.0)
    theirs = transformers.get_cosine_schedule_with_warmup(topt, 2, 10, num_cycles=2.0)
    for _ in range(12):
        assert ours.get_last_lr() == pytest.approx(theirs.get_last_lr(), abs=1e-15)
        topt.step()  # PyTorch warns when a scheduler steps before its optimizer
        ours.step()
        theirs.step()
    two = optim.SGD(_groups_split(model), lr=1.0)
    sched = optim.LambdaLR(two, [lambda s: 0.5 ** s, lambda s: s])
    sched.step()
    sched.step()
    assert sched.get_last_lr() == [0.03 * 0.25, 1.0 * 2]
    with pytest.raises(ValueError, match="expected 2 lr_lambdas"):
        optim.LambdaLR(two, [lambda s: 1.0])


def test_scheduler_errors():
    opt = optim.SGD(TinyNet().parameters(), lr=0.1)
    with pytest.raises(KeyError, match="'initial_lr'"):
        optim.LambdaLR(opt, lambda s: 1.0, last_epoch=5)
    with pytest.raises(ValueError, match="unknown schedule 'warmup_stable'"):
        optim.get_scheduler("warmup_stable", opt)
    with pytest.raises(ValueError, match="needs num_training_steps"):
        optim.get_scheduler("cosine", opt, num_warmup_steps=2)
