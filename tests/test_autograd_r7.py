"""Hooks on saved tensors (torch.autograd.graph) and thread-local grad mode, side by side with torch 2.13.

``saved_tensors_hooks(pack, unpack)``: pack runs once per tensor an op saves, when the op runs; unpack at
backward (and at each ``grad_fn._saved_self``); the innermost hooks of this thread apply. The counts are
compared where minilora's node saves what torch's saves (see tensor.py, _pack_saved); where minilora's
op keeps other arrays (layer_norm's normalised input, cross_entropy's probabilities, a Llama model) the
counts differ, and test_counts_where_minilora_keeps_other_arrays pins minilora's so a change is seen.
"""
import threading

import numpy as np
import pytest

import minilora
import minilora.autograd.graph  # noqa: F401  (the import form users write)

torch = pytest.importorskip("torch")

X = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
W = np.random.default_rng(1).standard_normal((5, 4)).astype(np.float32)
B = np.random.default_rng(2).standard_normal(5).astype(np.float32)


def _log_hooks(L, log):
    def pack(t):
        log.append(("pack", tuple(t.shape)))
        return t

    def unpack(t):
        log.append(("unpack", tuple(t.shape)))
        return t
    return L.autograd.graph.saved_tensors_hooks(pack, unpack)


def _counted(L, call, wants_x=True, wants_w=True):
    """(packs at forward, unpacks at backward, x.grad) for ``call(L, F, x, w, b)``."""
    x = L.tensor(X, requires_grad=wants_x)
    w = L.tensor(W, requires_grad=wants_w)
    b = L.tensor(B, requires_grad=True)
    log = []
    with _log_hooks(L, log):
        out = call(L, L.nn.functional, x, w, b)
    packs = len(log)
    out.sum().backward()
    grad = None if x.grad is None else x.grad.detach().numpy().copy()
    return packs, len(log) - packs, grad


CALLS = {
    "linear": lambda L, F, x, w, b: F.linear(x, w, b),
    "linear(no bias)": lambda L, F, x, w, b: F.linear(x, w),
    "linear(3-D input)": lambda L, F, x, w, b: F.linear(x.reshape(3, 1, 4), w, b),
    "matmul": lambda L, F, x, w, b: x @ w.t(),
    "x * y": lambda L, F, x, w, b: x * w[:3, :],
    "x * x": lambda L, F, x, w, b: x * x,
    "(a*b+c) chain": lambda L, F, x, w, b: (x * w[:3] + x) * x + b[:4],
    "relu": lambda L, F, x, w, b: F.relu(x),
    "softmax": lambda L, F, x, w, b: F.softmax(x, dim=-1),
    "exp": lambda L, F, x, w, b: x.exp(),
    "pow": lambda L, F, x, w, b: x.pow(2),
    "tanh": lambda L, F, x, w, b: L.tanh(x),
    "sum": lambda L, F, x, w, b: x.sum(0),
    "mse_loss": lambda L, F, x, w, b: F.mse_loss(x, w[:3]),
    "gelu": lambda L, F, x, w, b: F.gelu(x),
    "amax": lambda L, F, x, w, b: x.amax(1),
    "clamp": lambda L, F, x, w, b: x.clamp(-0.5, 0.5),
}


TWO_OPERANDS = ["linear", "linear(no bias)", "linear(3-D input)", "matmul", "x * y", "(a*b+c) chain", "mse_loss"]


@pytest.mark.parametrize("name, frozen", [(n, None) for n in CALLS] + [(n, f) for n in TWO_OPERANDS for f in "xw"])
def test_pack_and_unpack_counts_as_torch(name, frozen):
    call = CALLS[name]
    kwargs = {"wants_x": frozen != "x", "wants_w": frozen != "w"}
    ours, theirs = _counted(minilora, call, **kwargs), _counted(torch, call, **kwargs)
    assert ours[:2] == theirs[:2]
    if theirs[2] is not None:
        np.testing.assert_allclose(ours[2], theirs[2], rtol=1e-5, atol=1e-6)


def test_lora_layer_counts_as_peft():
    peft = pytest.importorskip("peft")
    x = np.random.default_rng(3).standard_normal((3, 8)).astype(np.float32)
    counts = []
    for L, get, config in ((torch, peft.get_peft_model, peft.LoraConfig),
                           (minilora, minilora.lora.get_peft_model, minilora.lora.LoraConfig)):
        L.manual_seed(0)
        model = get(L.nn.Sequential(L.nn.Linear(8, 8)), config(r=2, target_modules=["0"]))
        log = []
        with _log_hooks(L, log):
            out = model(L.tensor(x))
        packs = len(log)
        out.sum().backward()
        counts.append((packs, len(log) - packs))
    assert counts[0] == counts[1] == (3, 3)


def test_counts_where_minilora_keeps_other_arrays():
    # torch: layer_norm 3 (input, mean, rstd), LayerNorm 5 (+ weight, bias), cross_entropy 4
    # (log_softmax's result twice, target, total_weight). minilora's one node keeps its normalised input
    # and probabilities, which are its own (not packed): documented, pinned here.
    x = minilora.tensor(X, requires_grad=True)
    F = minilora.nn.functional
    got = {}
    for name, call in {"layer_norm": lambda: F.layer_norm(x, (4,)),
                       "LayerNorm": lambda: minilora.nn.LayerNorm(4)(x),
                       "cross_entropy": lambda: F.cross_entropy(x, minilora.tensor([0, 1, 2]))}.items():
        log = []
        with _log_hooks(minilora, log):
            call().sum().backward()
        got[name] = len(log)
    assert got == {"layer_norm": 2, "LayerNorm": 6, "cross_entropy": 0}


def _outcome(L, case):
    try:
        value = case(L)
    except Exception as error:  # noqa: BLE001  (the type is what is compared)
        return type(error).__name__
    return value


def _unpack_returns(value):
    def case(L):
        x = L.tensor([1.0, 2.0, 3.0], requires_grad=True)
        with L.autograd.graph.saved_tensors_hooks(lambda t: t, lambda t: value(L, t)):
            y = x.pow(2)
        y.sum().backward()
        return x.grad.tolist()
    return case


def _order(L):
    log = []
    x = L.tensor([1.0, 2.0], requires_grad=True)
    graph = L.autograd.graph
    with graph.saved_tensors_hooks(lambda t: log.append("pack outer") or t, lambda t: log.append("unpack outer") or t):
        with graph.saved_tensors_hooks(lambda t: log.append("pack inner") or t, lambda t: log.append("unpack inner") or t):
            y = x.pow(2)
        z = y.exp()
    z.sum().backward()
    return log


def _pack_gets_the_tensors(L):
    seen = []
    x = L.tensor([1.0, 2.0], requires_grad=True)
    with L.autograd.graph.saved_tensors_hooks(lambda t: seen.append(t) or t, lambda t: t):
        z = (x * x).exp()
    return [s is x for s in seen], seen[-1] is z


def _retain_graph(L):
    log = []
    x = L.tensor([1.0, 2.0], requires_grad=True)
    with L.autograd.graph.saved_tensors_hooks(lambda t: log.append("p") or t, lambda t: log.append("u") or t):
        y = x * x
    y.sum().backward(retain_graph=True)
    y.sum().backward()
    return log


def _saved_self_unpacks(L):
    log = []
    x = L.tensor([1.0, 2.0], requires_grad=True)
    with L.autograd.graph.saved_tensors_hooks(lambda t: log.append("p") or 7, lambda t: log.append(t) or x):
        y = x * x
    y.grad_fn._saved_self
    y.grad_fn._saved_other
    return log


def _unpack_changes_the_values(L):
    x = L.tensor([1.0, 2.0], requires_grad=True)
    with L.autograd.graph.saved_tensors_hooks(lambda t: t, lambda t: t * 0 + 1):
        y = x * x
    y.sum().backward()
    return x.grad.tolist()


def _packed_copy_frees_the_version_check(L):
    # torch checks no version of a tensor saved through hooks: a packed copy is what backward reads
    x = L.tensor([1.0, 2.0], requires_grad=True)
    with L.autograd.graph.saved_tensors_hooks(lambda t: t.clone(), lambda t: t):
        y = x * 2
        z = y * y
    y.add_(1)
    z.sum().backward()
    return x.grad.tolist()


def _not_under_no_grad(L):
    x = L.tensor([1.0, 2.0], requires_grad=True)
    with L.no_grad(), L.autograd.graph.saved_tensors_hooks(lambda t: 1 / 0, lambda t: t):
        return x.pow(2).tolist()


def _ops_inside_pack_not_packed(L):
    log = []
    x = L.tensor([1.0, 2.0], requires_grad=True)

    def pack(t):
        log.append("p")
        return t * t

    with L.autograd.graph.saved_tensors_hooks(pack, lambda t: t.sqrt()):
        y = x.exp()
    y.sum().backward()
    return log, [round(v, 4) for v in x.grad.tolist()]


def _disabled_then_hooks(L):
    with L.autograd.graph.disable_saved_tensors_hooks("no hooks here"):
        with L.autograd.graph.saved_tensors_hooks(lambda t: t, lambda t: t):
            pass


def _hooks_then_disabled(L):
    with L.autograd.graph.saved_tensors_hooks(lambda t: t, lambda t: t):
        with L.autograd.graph.disable_saved_tensors_hooks("no hooks here"):
            pass


def _disabled_alone(L):
    x = L.tensor([1.0, 2.0], requires_grad=True)
    with L.autograd.graph.disable_saved_tensors_hooks("no hooks here"):
        x.pow(2).sum().backward()
    return x.grad.tolist()


def _hooks_stay_in_their_thread(L):
    seen = []
    x = L.tensor([1.0, 2.0], requires_grad=True)
    with L.autograd.graph.saved_tensors_hooks(lambda t: seen.append(1) or t, lambda t: t):
        thread = threading.Thread(target=lambda: x.pow(2))
        thread.start()
        thread.join()
    return seen


def _save_on_cpu(L):
    x = L.tensor([1.0, 2.0, 3.0], requires_grad=True)
    with L.autograd.graph.save_on_cpu(pin_memory=False):
        y = (x * x).exp().sum()
    y.backward()
    return [round(v, 2) for v in x.grad.tolist()]


CASES = {
    "unpack gives another dtype": _unpack_returns(lambda L, t: t.double()),
    "unpack gives no tensor": _unpack_returns(lambda L, t: 3),
    "unpack gives None": _unpack_returns(lambda L, t: None),
    "unpack gives another shape": _unpack_returns(lambda L, t: t[:2]),
    "nested hooks: the innermost apply": _order,
    "pack gets the input and the output themselves": _pack_gets_the_tensors,
    "retain_graph unpacks again": _retain_graph,
    "_saved_self calls unpack": _saved_self_unpacks,
    "unpack's values are what backward uses": _unpack_changes_the_values,
    "a packed copy is not version-checked": _packed_copy_frees_the_version_check,
    "no_grad: nothing packed": _not_under_no_grad,
    "ops inside pack are not packed": _ops_inside_pack_not_packed,
    "disable_saved_tensors_hooks, then hooks": _disabled_then_hooks,
    "hooks, then disable_saved_tensors_hooks": _hooks_then_disabled,
    "disable_saved_tensors_hooks alone": _disabled_alone,
    "hooks are per thread": _hooks_stay_in_their_thread,
    "save_on_cpu": _save_on_cpu,
}


@pytest.mark.parametrize("name", CASES)
def test_saved_tensor_hooks_as_torch(name):
    assert _outcome(minilora, CASES[name]) == _outcome(torch, CASES[name])


def test_wrong_shape_from_unpack_names_the_problem():
    with pytest.raises(RuntimeError, match=r"unpack_hook returned a tensor of shape \[2\] for a tensor of shape \[3\]"):
        _unpack_returns(lambda L, t: t[:2])(minilora)


def test_disable_message_is_the_callers():
    with pytest.raises(RuntimeError, match="^no hooks here$"):
        _disabled_then_hooks(minilora)


def test_linear_grads_through_save_on_cpu_match_torch():
    grads = []
    for L in (torch, minilora):
        x, w, b = (L.tensor(a, requires_grad=True) for a in (X, W, B))
        with L.autograd.graph.save_on_cpu():
            loss = L.nn.functional.linear(x.reshape(3, 1, 4), w, b).relu().sum()
        loss.backward()
        grads.append([t.grad.detach().numpy() for t in (x, w, b)])
    for ours, theirs in zip(grads[1], grads[0]):
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)


# ---- grad mode and inference mode are per thread (torch's) -------------------------------------------
def _in_thread(fn):
    result = []
    thread = threading.Thread(target=lambda: result.append(fn()))
    thread.start()
    thread.join()
    return result[0]


def _mode_seen_from_another_thread(L, region):
    with region(L):
        return _in_thread(lambda: (L.is_grad_enabled(), L.is_inference_mode_enabled())), L.is_grad_enabled()


REGIONS = {
    "no_grad": lambda L: L.no_grad(),
    "set_grad_enabled(False)": lambda L: L.set_grad_enabled(False),
    "inference_mode": lambda L: L.inference_mode(),
}


@pytest.mark.parametrize("region", REGIONS)
def test_grad_mode_is_per_thread(region):
    ours = _mode_seen_from_another_thread(minilora, REGIONS[region])
    assert ours == _mode_seen_from_another_thread(torch, REGIONS[region]) == ((True, False), False)


def test_no_grad_in_a_thread_leaves_the_others_recording():
    # a server thread under no_grad while another thread trains: the trainer's graph is still built
    x = minilora.tensor([1.0, 2.0], requires_grad=True)
    inside, release = threading.Event(), threading.Event()

    def serve():
        with minilora.no_grad():
            inside.set()
            release.wait(5)

    server = threading.Thread(target=serve)
    server.start()
    inside.wait(5)
    y = (x * x).sum()
    release.set()
    server.join()
    assert y.requires_grad
    y.backward()
    assert x.grad.tolist() == [2.0, 4.0]


def test_set_grad_enabled_as_a_call_changes_this_thread_only():
    try:
        minilora.set_grad_enabled(False)
        assert _in_thread(minilora.is_grad_enabled) is True
        assert minilora.is_grad_enabled() is False
    finally:
        minilora.set_grad_enabled(True)


def test_a_tensor_made_in_another_threads_inference_mode_is_not_inference():
    inside, release = threading.Event(), threading.Event()

    def infer():
        with minilora.inference_mode():
            inside.set()
            release.wait(5)

    worker = threading.Thread(target=infer)
    worker.start()
    inside.wait(5)
    made = minilora.ones(2) * 2
    release.set()
    worker.join()
    assert not made.is_inference()


# ---- autocast is per thread (torch's) ----------------------------------------------------------------
def _name(dtype):
    return str(dtype).replace("torch.", "")


def _autocast_seen_from_another_thread(L):
    a = L.ones(2, 2)
    with L.autocast("cpu"):
        here = (L.is_autocast_enabled("cpu"), _name((a @ a).dtype))
        there = _in_thread(lambda: (L.is_autocast_enabled("cpu"), _name((a @ a).dtype),
                                    _name(L.get_autocast_dtype("cpu"))))
    return here, there


def test_autocast_is_per_thread():
    ours = _autocast_seen_from_another_thread(minilora)
    assert ours == _autocast_seen_from_another_thread(torch)
    assert ours == ((True, "bfloat16"), (False, "float32", "bfloat16"))


def test_autocast_in_a_thread_leaves_the_others_in_float32():
    a = minilora.ones(2, 2)
    inside, release = threading.Event(), threading.Event()

    def worker():
        with minilora.autocast("cpu"):
            inside.set()
            release.wait(5)

    thread = threading.Thread(target=worker)
    thread.start()
    inside.wait(5)
    dtype = (a @ a).dtype
    release.set()
    thread.join()
    assert dtype == minilora.float32
