"""Round 19: what torch prints and reports about graphs and hooks, compared call for call with torch 2.13.

One node for a call with several outputs (split's pieces, eigh's (L, Q), a user Function's outputs): the outputs
share ``grad_fn``, each edge numbered by its ``output_nr``; hook handles numbered by one counter from 0, and a
module's empty hook dicts printed as torch's ``OrderedDict()``.
"""
import sys

import numpy as np
import pytest

import minilora as ml

torch = pytest.importorskip("torch")

A = [[4., 1., 0., 2.], [1., 3., 1., 0.], [0., 1., 5., 1.], [2., 0., 1., 6.]]


def _graph_of(lib, call):
    """For each output with a node: its node's name, whether it is the first output's node, and the edge
    ``output * 2`` has to it (its output_nr); with ``output.output_nr``."""
    x = lib.tensor(A, dtype=lib.float64, requires_grad=True)
    outs = [o for o in call(lib, x) if o.grad_fn is not None]
    first = outs[0].grad_fn
    return [(o.grad_fn.name(), o.grad_fn is first, (o * 2).grad_fn.next_functions[0][1], o.output_nr) for o in outs]


MULTI_OUTPUT_CALLS = {
    "split": lambda L, x: x.split(2),
    "split_with_sizes": lambda L, x: x.split([1, 3], dim=1),
    "chunk": lambda L, x: x.chunk(2),
    "unbind": lambda L, x: x.unbind(1),
    "unsafe_split": lambda L, x: L.unsafe_split(x, 2),
    "linalg.eigh": lambda L, x: L.linalg.eigh(x),
    "linalg.svd": lambda L, x: L.linalg.svd(x),
    "linalg.qr": lambda L, x: L.linalg.qr(x),
    "linalg.slogdet": lambda L, x: L.linalg.slogdet(x),
    "linalg.eig": lambda L, x: L.linalg.eig(x),
    "linalg.lu (P is not differentiable: L is output 0)": lambda L, x: L.linalg.lu(x),
    "linalg.svdvals (S is _linalg_svd's output 1)": lambda L, x: (L.linalg.svdvals(x),),
    "var_mean": lambda L, x: L.var_mean(x, 1),
    "std_mean": lambda L, x: L.std_mean(x, 1),
    "aminmax": lambda L, x: L.aminmax(x, dim=1),
    "max(dim)": lambda L, x: x.max(1),
    "topk": lambda L, x: x.topk(2),
    "triangular_solve": lambda L, x: L.triangular_solve(x, x.triu()),
    "linalg.lstsq": lambda L, x: L.linalg.lstsq(x, x),
    "lu_unpack": lambda L, x: L.lu_unpack(*L.linalg.lu_factor(x)),
    "split_copy": lambda L, x: L.split_copy(x, 2),
    "unbind_copy": lambda L, x: L.unbind_copy(x),
    "histogram (NotImplemented, one node)": lambda L, x: L.histogram(x.reshape(-1), 3),
}


@pytest.mark.parametrize("name", MULTI_OUTPUT_CALLS)
def test_a_call_with_several_outputs_is_one_node_numbered_as_torchs(name):
    call = MULTI_OUTPUT_CALLS[name]
    assert _graph_of(ml, call) == _graph_of(torch, call)


def test_gradients_through_a_shared_node_are_torchs():
    def seen(lib):
        x = lib.tensor(A, requires_grad=True)
        a, b = x.split([1, 3])
        (a * 3).sum().backward()  # (b unused)
        s = lib.tensor(A, dtype=lib.float64, requires_grad=True)
        w, v = lib.linalg.eigh(s)
        (w.sum() + (v * v).sum()).backward()
        return x.grad.tolist(), a.grad_fn is b.grad_fn, w.grad_fn is v.grad_fn, np.round(s.grad.numpy(), 12).tolist()
    assert seen(ml) == seen(torch)


def _two_outputs(lib, log):
    class Scale(lib.autograd.Function):
        @staticmethod
        def forward(ctx, x, y):
            ctx.save_for_backward(x, y)
            return x * y, x + y

        @staticmethod
        @lib.autograd.function.once_differentiable
        def backward(ctx, g1, g2):
            x, y = ctx.saved_tensors
            log.append((ctx.needs_input_grad, g1.tolist(), g2.tolist()))
            return g1 * y + g2, g1 * x + g2
    return Scale


def test_a_user_functions_outputs_share_its_node():
    def seen(lib):
        log = []
        x, y = lib.tensor([1., 2.], requires_grad=True), lib.tensor([3., 4.])
        p, q = _two_outputs(lib, log).apply(x, y)
        edges = [(type(n).__name__, k) for n, k in p.grad_fn.next_functions]
        (q * q).sum().backward(retain_graph=True)  # (p unused: its gradient reaches backward as zeros)
        gx, = lib.autograd.grad((q * q).sum(), x, create_graph=True)
        with pytest.raises(RuntimeError) as twice:  # (once_differentiable: torch's error at the second backward)
            gx.sum().backward()
        return (p.grad_fn is q.grad_fn, p.output_nr, q.output_nr, type(q.grad_fn).__name__,
                (q * 1).grad_fn.next_functions[0][1], edges, log, x.grad.tolist(), gx.tolist(), str(twice.value))
    assert seen(ml) == seen(torch)


def test_a_marked_non_differentiable_output_keeps_its_place_in_the_numbering():
    def seen(lib):
        log = []

        class Pair(lib.autograd.Function):
            @staticmethod
            def forward(ctx, x):
                a, b = x * 2, x * 3
                ctx.mark_non_differentiable(a)
                ctx.set_materialize_grads(False)
                return a, b

            @staticmethod
            def backward(ctx, ga, gb):
                log.append((ga, gb.tolist()))
                return gb * 3
        x = lib.ones(2, requires_grad=True)
        a, b = Pair.apply(x)
        edge = (b * 2).grad_fn.next_functions[0]
        b.sum().backward()
        return a.grad_fn, a.requires_grad, b.output_nr, type(edge[0]).__name__, edge[1], log, x.grad.tolist()
    assert seen(ml) == seen(torch)


def test_hooks_on_a_shared_node_are_refused_by_name():
    """torch's hooks on a node with several outputs see every output's gradient at once (None for an unused
    one); minilora's engine runs a node per output of a built-in op and cannot hand them over together: refused,
    not half-run (a user Function's node runs them: test_hooks_on_a_user_functions_node_see_every_output)."""
    x = ml.ones(4, requires_grad=True)
    a, b = x.split(2)
    with pytest.raises(NotImplementedError, match="several outputs"):
        a.grad_fn.register_prehook(lambda grad_outputs: None)
    with pytest.raises(NotImplementedError, match="several outputs"):
        b.grad_fn.register_hook(lambda grad_inputs, grad_outputs: None)


def test_the_shared_node_survives_backward():
    def seen(lib):
        x = lib.tensor(A, requires_grad=True)
        a, b = x.chunk(2)
        (a.sum() + b.sum()).backward()
        return a.grad_fn is b.grad_fn, (b * 1).grad_fn.next_functions[0][1], a.grad_fn.name()
    assert seen(ml) == seen(torch)


def test_aminmax_node_saves_min_not_result():
    x = ml.tensor(A, dtype=ml.float64, requires_grad=True)
    low, high = ml.aminmax(x, dim=1)
    np.testing.assert_array_equal(low.grad_fn._saved_min.numpy(), low.detach().numpy())
    with pytest.raises(AttributeError):
        low.grad_fn._saved_result


# ---- hook handles and hook dicts ----------------------------------------------------------------------------
def _hook_ids(lib):
    """The ids of a module's, a tensor's and a node's hook handles, relative to the first one (torch's counter
    is one class attribute for every kind of hook)."""
    m = lib.nn.Linear(2, 2)
    handles = [m.register_forward_hook(lambda *a: None), m.register_forward_pre_hook(lambda *a: None)]
    t = lib.ones(2, requires_grad=True)
    handles.append(t.register_hook(lambda g: g))
    handles.append((t * 2).grad_fn.register_prehook(lambda go: None))
    handles.append(m.register_full_backward_hook(lambda *a: None))
    first = handles[0].id
    return [h.id - first for h in handles], [k - first for k in m._forward_hooks], [k - first for k in m._forward_pre_hooks]


def test_hook_handle_ids_come_from_one_counter():
    assert _hook_ids(ml) == _hook_ids(torch)


def test_handle_is_utils_hooks_removable_handle():
    from minilora.utils.hooks import RemovableHandle
    handle = ml.ones(1, requires_grad=True).register_hook(lambda g: g)
    assert isinstance(handle, RemovableHandle)
    assert type(handle).__module__ + "." + type(handle).__name__ == "minilora.utils.hooks.RemovableHandle"
    assert isinstance(ml.nn.Linear(1, 1).register_forward_hook(lambda *a: None), RemovableHandle)


@pytest.mark.parametrize("kind", ["_forward_hooks", "_backward_hooks", "_forward_pre_hooks", "_backward_pre_hooks",
                                  "_state_dict_hooks", "_load_state_dict_pre_hooks"])
def test_a_modules_empty_hook_dict_prints_as_torchs(kind):
    assert repr(getattr(ml.nn.Linear(1, 1), kind)) == repr(getattr(torch.nn.Linear(1, 1), kind))


# ---- DDP's buckets -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("limits", [[2 ** 20, 25 * 2 ** 20], [600], [sys.maxsize], [100, 300, 2000]])
def test_ddp_cuts_its_buckets_as_torchs_compute_bucket_assignment_by_size(limits):
    """DDP's buckets (so what a comm hook's GradBucket holds) are torch's reducer's: one open bucket per dtype,
    closed once its bytes reach the current limit, sorted by their first tensor; with the ready order given
    (tensor_indices), kept in the order they closed. tests/test_ddp_hooks_r19.py runs the hooks under MPI."""
    from minilora.nn.parallel import _assign_buckets
    shapes = [(300, 300), (7,), (600, 500), (64,), (32, 3), (1000,), (513, 512), (3,)]
    kinds = ["float32", "float64", "float32", "float32", "float16", "float64", "float32", "float16"]
    mine = [ml.zeros(*shape, dtype=getattr(ml, kind)) for shape, kind in zip(shapes, kinds)]
    theirs = [torch.zeros(*shape, dtype=getattr(torch, kind)) for shape, kind in zip(shapes, kinds)]
    expected, _ = torch.distributed._compute_bucket_assignment_by_size(theirs, limits)
    assert _assign_buckets(mine, limits) == expected
    for ready in ([6, 2, 7, 0, 5, 1, 4, 3], [1, 3, 5, 7, 0, 2, 4, 6], [4, 0, 1, 2, 3, 5, 6, 7], [7, 6, 5, 4, 3, 2, 1, 0]):
        expected, _ = torch.distributed._compute_bucket_assignment_by_size([theirs[i] for i in ready], limits, [],
                                                                           ready)
        mine_cut = _assign_buckets([mine[i] for i in ready], limits, sort=False)
        assert [[ready[j] for j in bucket] for bucket in mine_cut] == expected, ready
    assert torch.distributed._DEFAULT_FIRST_BUCKET_BYTES == ml.distributed._DEFAULT_FIRST_BUCKET_BYTES == 2 ** 20


# ---- an LSTM's graph ---------------------------------------------------------------------------------------
def _described(node, depth=0):
    """A node's class name and its next_functions two levels down (a leaf's AccumulateGrad, None)."""
    if node is None or depth > 1:
        return None
    return type(node).__name__, [(_described(n, depth + 1), k) for n, k in node.next_functions]


def _lstm_graph(lib, options, shape, with_state, dtype="float32"):
    lib.manual_seed(0)
    dtype = getattr(lib, dtype)
    lstm = lib.nn.LSTM(2, 3, **options).to(dtype)
    x = lib.randn(*shape, dtype=dtype, requires_grad=True)
    args = (x,)
    if with_state:
        layers = options.get("num_layers", 1) * (2 if options.get("bidirectional") else 1)
        h0 = lib.zeros(layers, *shape[1:-1], 3, dtype=dtype, requires_grad=True)
        args = (x, (h0, h0 * 1))
    out, (h, c) = lstm(*args)
    (out.sum() + h.sum() + c.sum()).backward()
    return _described(out.grad_fn), _described(h.grad_fn), _described(c.grad_fn), x.grad.numpy().round(6).tolist()


LSTM_CASES = {
    "one layer": ({}, (4, 1, 2), False),
    "two layers": (dict(num_layers=2), (4, 1, 2), False),
    "no bias, a state given": (dict(bias=False), (4, 1, 2), True),
    "bidirectional": (dict(bidirectional=True), (4, 1, 2), False),
    "batch_first": (dict(batch_first=True), (1, 4, 2), False),
    "unbatched, a state given": ({}, (4, 2), True),
}


@pytest.mark.parametrize("case", LSTM_CASES)
def test_a_float32_lstm_layer_is_torchs_one_onednn_node(case):
    """torch's CPU LSTM runs each layer as one oneDNN kernel: print(output) says grad_fn=<MkldnnRnnLayerBackward0>,
    and h_n, c_n are its outputs 1 and 2 (minilora runs the steps as ops, shown as that node)."""
    assert _lstm_graph(ml, *LSTM_CASES[case]) == _lstm_graph(torch, *LSTM_CASES[case])


def test_an_lstm_is_one_node_only_where_torch_runs_the_onednn_kernel():
    """float64, a projection, or torch.backends.mkldnn.enabled off: torch's native loop, StackBackward0 of the
    steps; switched back on, one node again."""
    assert _lstm_graph(ml, {}, (4, 1, 2), False, "float64") == _lstm_graph(torch, {}, (4, 1, 2), False, "float64")
    assert _lstm_graph(ml, dict(proj_size=2), (4, 1, 2), False) == _lstm_graph(torch, dict(proj_size=2), (4, 1, 2), False)
    for lib in (ml, torch):
        lib.backends.mkldnn.enabled = False
    try:
        assert _lstm_graph(ml, {}, (4, 1, 2), True) == _lstm_graph(torch, {}, (4, 1, 2), True)
    finally:
        for lib in (ml, torch):
            lib.backends.mkldnn.enabled = True
    assert _lstm_graph(ml, {}, (4, 1, 2), True) == _lstm_graph(torch, {}, (4, 1, 2), True)


# ---- print(scheduler.state_dict()), print(outputs) -----------------------------------------------------------
@pytest.mark.parametrize("three_phase", [False, True])
def test_one_cycle_state_dict_prints_its_keys_in_torchs_order(three_phase):
    def printed(lib):
        optimizer = lib.optim.SGD([lib.nn.Parameter(lib.ones(2))], lr=0.1, momentum=0.9)
        scheduler = lib.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=1.0, total_steps=10, three_phase=three_phase)
        optimizer.step()
        scheduler.step()
        return repr(scheduler.state_dict())
    assert printed(ml) == printed(torch)


def _cache_printed(family, options):
    """The cache in a causal LM's output, printed, for transformers' model and minilora's of one config."""
    transformers = pytest.importorskip("transformers")
    from minilora.nn import llama, llama_family
    size = dict(vocab_size=16, hidden_size=8, intermediate_size=16, num_hidden_layers=2, num_attention_heads=2,
                num_key_value_heads=1, max_position_embeddings=32, **options)
    ours = getattr(llama_family, f"{family}ForCausalLM", None) or getattr(llama, f"{family}ForCausalLM")
    our_config = getattr(llama_family, f"{family}Config", None) or getattr(llama, f"{family}Config")
    torch.manual_seed(0)
    theirs = getattr(transformers, f"{family}ForCausalLM")(getattr(transformers, f"{family}Config")(**size)).eval()
    with torch.no_grad():
        their_cache = theirs(torch.tensor([[1, 2]]), use_cache=True).past_key_values
    with ml.no_grad():
        our_cache = ours(our_config(**size)).eval()(ml.tensor([[1, 2]]), use_cache=True).past_key_values
    return repr(our_cache), repr(their_cache)


@pytest.mark.parametrize("family, options", [("Llama", {}), ("Mistral", {}),
                                             ("Qwen2", dict(use_sliding_window=True, max_window_layers=1, sliding_window=4))])
def test_a_models_cache_prints_as_transformers_dynamic_cache(family, options):
    ours, theirs = _cache_printed(family, options)
    assert ours == theirs


def test_an_empty_dynamic_cache_prints_as_transformers():
    transformers = pytest.importorskip("transformers")
    from minilora.nn.llama import DynamicCache
    assert repr(DynamicCache()) == repr(transformers.DynamicCache())


NO_DERIVATIVE_CALLS = {
    "unique": lambda L, x: L.unique(x),
    "unique(dim=0)": lambda L, x: L.unique(x, dim=0),
    "unique_consecutive": lambda L, x: L.unique_consecutive(x),
    "heaviside": lambda L, x: L.heaviside(x, x),
    "bincount(weights=)": lambda L, x: L.bincount(L.tensor([0, 1]), weights=x[:2]),
    "bernoulli(p)": lambda L, x: L.bernoulli(x, 0.5),
}


@pytest.mark.parametrize("name", NO_DERIVATIVE_CALLS)
def test_an_op_without_derivative_is_torchs_node_not_an_internal_one(name):
    """torch's node for an op whose derivative is not implemented: named where derivatives.yaml lists it
    (Unique2Backward0), else NotImplemented; minilora printed its internal _NoDerivativeBackward0."""
    def seen(lib):
        out = NO_DERIVATIVE_CALLS[name](lib, lib.tensor([0.25, 0.25, 0.5], requires_grad=True))
        with pytest.raises((RuntimeError, NotImplementedError)) as error:
            out.sum().backward()
        return type(out.grad_fn).__name__, out.grad_fn.name(), type(error.value).__name__, str(error.value)
    assert seen(ml) == seen(torch)


def test_a_node_torch_has_no_derivative_for_prints_as_not_implemented():
    """linalg.ldl_factor / ldl_solve: torch records a ``NotImplemented`` node, which raises only at backward."""
    def seen(lib):
        A = lib.tensor([[4., 1.], [1., 3.]], requires_grad=True)
        LD, pivots = lib.linalg.ldl_factor(A)
        x = lib.linalg.ldl_solve(LD, pivots, lib.tensor([[1.], [2.]], requires_grad=True))
        names = [type(LD.grad_fn).__name__, x.grad_fn.name(), [type(n).__name__ for n, _ in x.grad_fn.next_functions]]
        with pytest.raises(RuntimeError) as error:
            x.sum().backward()
        return names, str(error.value)
    assert seen(ml) == seen(torch)


def test_a_user_functions_grad_fn_is_its_ctx():
    """torch's grad_fn of a custom Function is its ctx: saved_tensors, needs_input_grad (the Function's inputs',
    not an inner node's), the attributes forward set; saved_tensors refuses after a backward that freed them."""
    def seen(lib):
        class Scale(lib.autograd.Function):
            @staticmethod
            def forward(ctx, x, k):
                ctx.save_for_backward(x)
                ctx.k = k
                return x * k, x + k

            @staticmethod
            def backward(ctx, g1, g2):
                return g1 * ctx.k + g2, None
        x = lib.tensor([1., 2.], requires_grad=True)
        a, b = Scale.apply(x, 3.0)
        node = a.grad_fn
        before = ([t.tolist() for t in node.saved_tensors], node.k, node.needs_input_grad, node is b.grad_fn,
                  type(node).__name__, node.name())
        (a.sum() + b.sum()).backward()
        with pytest.raises(RuntimeError) as error:
            node.saved_tensors
        return before, node.k, str(error.value).split(".")[0], x.grad.tolist()
    assert seen(ml) == seen(torch)


# ---- left as it is -----------------------------------------------------------------------------------------
@pytest.mark.xfail(strict=True, reason="minilora's dtypes are NumPy's (x.dtype is numpy.dtype('float32'), printed "
                   "float32; torch prints torch.float32): a dtype class of its own would touch every op and NumPy "
                   "interop call, a rewrite this round does not make")
def test_a_dtype_prints_as_torchs():
    assert str(ml.ones(1).dtype) == str(torch.ones(1).dtype)


def test_multihead_attentions_output_prints_torchs_grad_fn():
    """print(attn_output): torch's MHA views out_proj's 2-D result back, ViewBackward0 over Mm (no bias) or Addmm
    (the nodes inside the attention are minilora's own composition: not compared)."""
    def seen(lib):
        names = []
        for bias in (False, True):
            lib.manual_seed(0)
            attention = lib.nn.MultiheadAttention(4, 2, bias=bias)
            q = lib.randn(3, 2, 4, requires_grad=True)
            out, weights = attention(q, q, q)
            names.append((out.grad_fn.name(), out.grad_fn.next_functions[0][0].name(), weights.grad_fn.name()))
        return names
    assert seen(ml) == seen(torch)


def test_hooks_on_a_user_functions_node_see_every_output():
    """torch's pre-hook on a two-output Function's node gets one gradient per output (None for the unused one,
    before it is materialized as zeros) and may replace them; its post-hook gets one gradient per tensor input."""
    def seen(lib):
        log = []

        class Pair(lib.autograd.Function):
            @staticmethod
            def forward(ctx, x, y):
                return x * 2, x * y

            @staticmethod
            def backward(ctx, g1, g2):
                log.append(("backward", g1.tolist(), g2.tolist()))
                return g1 * 2 + g2, g2
        x, y = lib.ones(2, requires_grad=True), lib.full((2,), 3.0, requires_grad=True)
        a, b = Pair.apply(x, y)
        listed = lambda grads: [None if g is None else g.tolist() for g in grads]  # noqa: E731
        a.grad_fn.register_prehook(lambda grad_outputs: log.append(("pre", listed(grad_outputs))))
        b.grad_fn.register_prehook(lambda grad_outputs: (grad_outputs[0], grad_outputs[1] * 10))
        a.grad_fn.register_hook(lambda grad_inputs, grad_outputs: log.append(("post", listed(grad_inputs),
                                                                              listed(grad_outputs))))
        a.grad_fn.register_hook(lambda grad_inputs, grad_outputs: (grad_inputs[0] * 2, None))
        b.sum().backward()
        return log, x.grad.tolist(), y.grad
    assert seen(ml) == seen(torch)
