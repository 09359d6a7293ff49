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


def _peft_lora_forward_in_torch(x):
    """PEFT's LoRA Linear forward in torch (lora_dropout 0: nn.Identity): base(x) + B(A(x)) * scaling,
    written out (importing peft alone takes seconds)."""
    torch.manual_seed(0)
    base, A, B = torch.nn.Linear(8, 8), torch.nn.Linear(8, 2, bias=False), torch.nn.Linear(2, 8, bias=False)
    base.requires_grad_(False)
    return base(x) + B(A(x)) * 4.0


def test_lora_layer_counts_as_peft():
    x = np.random.default_rng(3).standard_normal((3, 8)).astype(np.float32)
    minilora.manual_seed(0)
    model = minilora.lora.get_peft_model(minilora.nn.Sequential(minilora.nn.Linear(8, 8)),
                                         minilora.lora.LoraConfig(r=2, lora_alpha=8, target_modules=["0"]))
    counts = []
    for L, forward in ((torch, _peft_lora_forward_in_torch), (minilora, model)):
        log = []
        with _log_hooks(L, log):
            out = forward(L.tensor(x))
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


# ---- in-place changes into views inside the graph (torch's CopySlices) ---------------------------------
VIEWS = {
    "view": lambda y: y.view(12),
    "reshape": lambda y: y.reshape(4, 3),
    "t": lambda y: y.t(),
    "transpose": lambda y: y.transpose(0, 1),
    "permute": lambda y: y.permute(1, 0),
    "movedim": lambda y: y.movedim(0, 1),
    "narrow": lambda y: y.narrow(1, 1, 2),
    "select": lambda y: y.select(0, 1),
    "y[:, 1:3]": lambda y: y[:, 1:3],
    "y[:, ::2]": lambda y: y[:, ::2],
    "expand": lambda y: y[:1].expand(1, 4),
    "squeeze": lambda y: y[:1].squeeze(0),
    "unsqueeze": lambda y: y.unsqueeze(0),
    "view_as": lambda y: y.view_as(y.reshape(2, 6)),
    "diagonal": lambda y: y.diagonal(),
    "diagonal(1)": lambda y: y.diagonal(1),
    "diagonal(-1, 1, 0)": lambda y: y.diagonal(-1, 1, 0),
    "unfold (windows apart)": lambda y: y.unfold(1, 2, 2),
    "unfold (windows overlap)": lambda y: y.unfold(1, 2, 1),
    "split": lambda y: y.split(2, dim=1)[1],
    "split(sizes)": lambda y: y.split([1, 3], dim=1)[0],
    "chunk": lambda y: y.chunk(2)[0],
    "unbind": lambda y: y.unbind(0)[2],
}
INPLACE = {
    "mul_": lambda v: v.mul_(2),
    "zero_": lambda v: v.zero_(),
    "add_": lambda v: v.add_(v.detach() * 0 + 1),
    "exp_": lambda v: v.exp_(),
    "fill_": lambda v: v.fill_(3.0),
    "copy_": lambda v: v.copy_(v.detach() * 2),
    "v[...] = 1": lambda v: v.__setitem__(..., 1.0),
}
# where windows overlap, an op that reads the old values writes each element once per window in torch
# (its loop runs in place): NumPy computes first and writes once (see ops/shape.py, Unfold)
OVERLAP_READS = {("unfold (windows overlap)", name) for name in ("mul_", "add_", "exp_")}


def _view_case(view, change, into_base):
    def case(L):
        x = L.tensor(np.arange(12, dtype=np.float32).reshape(3, 4) / 10, requires_grad=True)
        y = x * 1.5
        v = view(y)
        if into_base:  # the base changes after the view was taken: the view's node is made again
            y.mul_(2)
            loss = (v * v).sum()
        else:
            change(v)
            loss = (y * y).sum() + (v * 3).sum()
        loss.backward()
        return np.round(x.grad.numpy(), 4).tolist(), np.round(y.detach().numpy(), 4).tolist()
    return case


VIEW_CASES = {f"{v}.{c}": _view_case(VIEWS[v], INPLACE[c], False) for v in VIEWS for c in INPLACE
              if (v, c) not in OVERLAP_READS}
VIEW_CASES.update({f"{v}, then base.mul_": _view_case(VIEWS[v], None, True) for v in VIEWS})


def _same(ours, theirs):
    if isinstance(ours, str) or isinstance(theirs, str):
        return ours == theirs
    return all(np.allclose(a, b, rtol=1e-4, atol=1e-4) for a, b in zip(ours, theirs))


@pytest.mark.parametrize("name", VIEW_CASES)
def test_in_place_change_of_a_view_as_torch(name):
    ours, theirs = _outcome(minilora, VIEW_CASES[name]), _outcome(torch, VIEW_CASES[name])
    assert _same(ours, theirs), (ours, theirs)


@pytest.mark.parametrize("call, message", [
    (lambda y: y.split(2, dim=1)[1].mul_(2), "Output 1 of Split is a view and is being modified inplace"),
    (lambda y: y.unbind(0)[2].zero_(), "Output 2 of Unbind is a view and is being modified inplace"),
    (lambda y: y.split([1, 3], dim=1)[1].add_(1), "Output 1 of SplitWithSizes is a view and is being modified"),
])
def test_views_of_a_multi_view_function_name_torchs_error(call, message):
    y = minilora.ones(3, 4, requires_grad=True) * 1
    with pytest.raises(RuntimeError, match=message):
        call(y)


def test_a_multi_view_output_used_after_its_base_changed_names_torchs_error():
    y = minilora.ones(3, 4, requires_grad=True) * 1
    piece = y.unbind(0)[1]
    y.mul_(2)
    with pytest.raises(RuntimeError, match="Output 1 of Unbind is a view and its base or another view of its base"):
        piece * 2


def test_writes_into_diagonal_and_unfold_outside_the_graph_as_torch():
    results = []
    for L in (torch, minilora):
        y = L.arange(12.0).reshape(3, 4)
        y.diagonal().mul_(2)
        y.unfold(1, 2, 2).select(2, 0).add_(100)
        z = L.arange(12.0).reshape(3, 4)
        z.unfold(1, 2, 1).zero_()
        results.append((y.tolist(), z.tolist()))
    assert results[0] == results[1]


def test_copy_into_a_tensor_in_the_graph_keeps_its_node_as_torch():
    for L in (torch, minilora):
        x = L.ones(3, requires_grad=True)
        y = x * 2
        y.copy_(L.zeros(3))
        assert y.requires_grad
        y.sum().backward()
        assert x.grad.tolist() == [0.0, 0.0, 0.0]


# ---- grad_fn names of composite and fused ops, as torch's CPU graph shows them -------------------------
def _graph(node):
    if node is None:
        return "None"
    inner = [_graph(child) for child, _ in node.next_functions]
    return node.name() + (f"({', '.join(inner)})" if inner else "")


NAMED = {
    "sdpa": lambda L, x, v, w: L.nn.functional.scaled_dot_product_attention(x, x, x),
    "sdpa(bfloat16)": lambda L, x, v, w: L.nn.functional.scaled_dot_product_attention(*[x.bfloat16()] * 3),
    "sdpa(causal, gqa)": lambda L, x, v, w: L.nn.functional.scaled_dot_product_attention(
        x, x[:, :1], x[:, :1], is_causal=True, enable_gqa=True),
    "outer": lambda L, x, v, w: L.outer(v, w),
    "diag of a matrix": lambda L, x, v, w: L.diag(x.reshape(4, 6)[:, :4], 1),
    "dropout": lambda L, x, v, w: L.nn.functional.dropout(x, 0.5),
    "nn.Dropout": lambda L, x, v, w: L.nn.Dropout(0.2)(x),
    "dropout2d": lambda L, x, v, w: L.nn.functional.dropout2d(x, 0.5),
    "rms_norm": lambda L, x, v, w: L.nn.functional.rms_norm(x, (4,), w),
    "rms_norm(no weight)": lambda L, x, v, w: L.nn.functional.rms_norm(x, (4,)),
    "nn.RMSNorm": lambda L, x, v, w: L.nn.RMSNorm(4)(x),
}


@pytest.mark.parametrize("name", NAMED)
def test_grad_fn_graph_as_torch(name):
    graphs = []
    for L in (torch, minilora):
        x = L.tensor(np.linspace(0, 1, 24, dtype=np.float32).reshape(1, 2, 3, 4), requires_grad=True)
        v, w = L.tensor([1.0, 2.0, 3.0], requires_grad=True), L.tensor([1.0, 2.0, 3.0, 4.0], requires_grad=True)
        graphs.append(_graph(NAMED[name](L, x, v, w).grad_fn))
    assert graphs[1] == graphs[0]
