"""Round 8: as_strided and its family as views (storage offset, strides, AsStridedBackward, version
counters), in-place ops through views that show an element more than once (torch's element-by-element
order), fill_ of an expand()ed tensor, retain_grad() on a view whose base changed in place. Each case
runs the same call in torch 2.13 and in minilora."""
import numpy as np
import pytest

import minilora

torch = pytest.importorskip("torch")


def both(make):
    """``make(lib)`` run with torch and with minilora: (torch's result, minilora's result)."""
    return make(torch), make(minilora)


def assert_same(t, m):
    if isinstance(t, (tuple, list)):
        assert len(t) == len(m)
        for a, b in zip(t, m):
            assert_same(a, b)
    elif isinstance(t, torch.Tensor):
        assert isinstance(m, minilora.Tensor)
        assert tuple(t.shape) == tuple(m.shape)
        assert str(t.dtype).replace("torch.", "") == str(m.dtype).replace("minilora.", "")
        np.testing.assert_allclose(m.detach().numpy(), t.detach().numpy(), rtol=1e-6, atol=1e-6)
    else:
        assert t == m


def errors_alike(make):
    """Both libraries raise, the same exception type with the same words."""
    with pytest.raises(Exception) as t:
        make(torch)
    with pytest.raises(type(t.value)) as m:
        make(minilora)
    assert str(t.value).split(".")[0] == str(m.value).split(".")[0], (t.value, m.value)


# ---- as_strided: the view, its storage offset and strides ------------------------------------------
@pytest.mark.parametrize("call", [
    lambda lib, x: x.as_strided((2, 2), (1, 2)),
    lambda lib, x: x.as_strided((2, 2), (1, 2), 0),
    lambda lib, x: lib.as_strided(x, size=(3, 2), stride=(1, 1), storage_offset=2),
    lambda lib, x: lib.as_strided(x, (0,), (1,), 8),
    lambda lib, x: x.as_strided((2, 3), (0, 1)),
])
def test_as_strided_of_a_view_reads_the_storage(call):
    def make(lib):
        x = lib.arange(12.).reshape(3, 4)[1:]  # storage offset 4
        y = call(lib, x)
        return y, y.stride(), y.storage_offset(), x.storage_offset(), y._base is x._base
    assert_same(*both(make))


@pytest.mark.parametrize("call", [
    lambda lib, x: x.as_strided((4, 4), (4, 1)),  # beyond the storage
    lambda lib, x: x.as_strided((2, 2), (-1, 1), 3),
    lambda lib, x: x.as_strided((2, -2), (1, 1)),
    lambda lib, x: x.as_strided((2, 2), (1,)),
    lambda lib, x: x.as_strided((2, 2), (1, 1), -1),
    lambda lib, x: lib.as_strided(x, size=(2, 2), stride=(0, 1), storage_offset=12),
])
def test_as_strided_refuses_as_torch(call):
    errors_alike(lambda lib: call(lib, lib.arange(12.).reshape(3, 4)))


def test_as_strided_backward_sums_overlapping_windows():
    def make(lib):
        a = lib.arange(6., requires_grad=True)
        y = a.as_strided((3, 3), (1, 1))
        (y * lib.arange(9.).reshape(3, 3)).sum().backward()
        b = lib.arange(6., requires_grad=True)
        z = (b * 2)[1:].as_strided((2, 2), (2, 1))  # offset 1 inherited from the slice
        z.sum().backward()
        return y, a.grad, z, b.grad, type(y.grad_fn).__name__ if lib is torch else y.grad_fn.name()
    t, m = both(make)
    assert_same(t[:4], m[:4])
    assert m[4] == "AsStridedBackward0"


def test_as_strided_of_an_expanded_input_shares_the_gradient():
    """torch divides a storage element's gradient among the places an overlapping input shows it."""
    def make(lib):
        a = lib.arange(3., requires_grad=True)
        y = a.expand(2, 3).as_strided((2, 2), (1, 1))
        (y * lib.tensor([[1., 2.], [3., 4.]])).sum().backward()
        return y, a.grad
    assert_same(*both(make))


def test_writes_through_as_strided_reach_the_base_and_its_version():
    def make(lib):
        x = lib.arange(6.)
        v = x.as_strided((3,), (2,))
        v.add_(1)
        w = x.unfold(0, 4, 2).unfold(1, 2, 1)  # a view of a view NumPy's as_strided made
        w.mul_(-1)
        return x, x._version, v._version, w._version, w._base is x
    assert_same(*both(make))


def test_as_strided_in_place_in_the_graph():
    def make(lib):
        a = lib.arange(8., requires_grad=True)
        b = a * 1
        b[2:].as_strided((2, 2), (1, 4)).mul_(3)  # storage offset 2, as torch's
        (b * lib.arange(8.)).sum().backward()
        return b, a.grad
    assert_same(*both(make))


def test_as_strided_in_place_form():
    def make(lib):
        x = lib.arange(6.)
        r = x.as_strided_((2, 2), (1, 2), 1)
        return r is x, x, x._version, x.stride(), x.storage_offset()
    assert_same(*both(make))
    errors_alike(lambda lib: lib.arange(6., requires_grad=True).as_strided_((2,), (2,)))
    t = (torch.arange(6., requires_grad=True) * 1).as_strided_((2,), (2,))
    m = (minilora.arange(6., requires_grad=True) * 1).as_strided_((2,), (2,))
    assert m.grad_fn.name() == t.grad_fn.name() == "AsStridedBackward1"


# ---- as_strided_scatter ----------------------------------------------------------------------------
@pytest.mark.parametrize("call", [
    lambda lib, i, s: lib.as_strided_scatter(i, s, (2, 2), (1, 2)),
    lambda lib, i, s: lib.as_strided_scatter(i, s, (2, 2), (1, 2), 1),
    lambda lib, i, s: i.as_strided_scatter(s, size=(2, 2), stride=(2, 1), storage_offset=2),
    lambda lib, i, s: lib.as_strided_scatter(i, s, (2, 2), (1, 1)),  # the slice overlaps itself
    lambda lib, i, s: lib.as_strided_scatter(i.double(), s, (2, 2), (1, 2)),  # src cast to input's dtype
])
def test_as_strided_scatter_values(call):
    assert_same(*both(lambda lib: call(lib, lib.zeros(6), lib.arange(4.).reshape(2, 2) + 1)))


def test_as_strided_scatter_keeps_a_transposed_layout():
    def make(lib):
        x = lib.arange(6., dtype=lib.float64).reshape(2, 3).t()
        return lib.as_strided_scatter(x, lib.ones(2, dtype=lib.float64), (2,), (1,))
    assert_same(*both(make))


def test_as_strided_scatter_refuses_a_wrong_source_shape():
    errors_alike(lambda lib: lib.as_strided_scatter(lib.zeros(6), lib.ones(3), (2, 2), (1, 2)))


def test_as_strided_scatter_gradient_is_the_clone_and_copy_one():
    """Deliberately not torch 2.13's AsStridedScatterBackward (which gives ``input`` the gradient inside
    the slice, zero outside: the opposite of what the values depend on): the gradient of the same
    computation written as clone + as_strided + copy_, which torch differentiates correctly."""
    weights = np.arange(6.) + 1

    def scatter(lib, i, s):
        return lib.as_strided_scatter(i * 1, s, (2, 2), (1, 2))

    def by_copy(lib, i, s):
        out = (i * 1).clone()
        out.as_strided((2, 2), (1, 2)).copy_(s)
        return out

    grads = {}
    for lib, fn in ((torch, by_copy), (minilora, scatter)):
        i = lib.zeros(6, requires_grad=True)
        s = lib.ones(2, 2, requires_grad=True)
        out = fn(lib, i, s)
        (out * lib.tensor(weights, dtype=lib.float32)).sum().backward()
        grads[lib] = (i.grad.numpy(), s.grad.numpy())
    np.testing.assert_array_equal(grads[minilora][0], grads[torch][0])
    np.testing.assert_array_equal(grads[minilora][1], grads[torch][1])
    np.testing.assert_array_equal(grads[minilora][0], [0, 0, 0, 0, 5, 6])
    assert scatter(minilora, minilora.zeros(6, requires_grad=True), minilora.ones(2, 2)).grad_fn.name() == \
        "AsStridedScatterBackward0"


# ---- in-place ops through views that show an element more than once ----------------------------------
@pytest.mark.parametrize("op", [
    lambda v: v.add_(1),
    lambda v: v.mul_(2),
    lambda v: v.exp_(),
    lambda v: v.clamp_(0, 2),
    lambda v: v.sub_(v.new_ones(v.shape) * 0.5),
    lambda v: v.index_fill_(0, v.new_zeros(1).long(), 5),
    lambda v: v.fill_(7),
    lambda v: v.copy_(v.new_zeros(v.shape)),
])
@pytest.mark.parametrize("view", [
    lambda x: x.unfold(0, 3, 1),
    lambda x: x.unfold(0, 3, 2),
    lambda x: x.unfold(0, 3, 1)[1:],
    lambda x: x.as_strided((2, 3), (1, 1)),
])
def test_in_place_through_overlapping_windows_changes_each_appearance(view, op):
    """torch's kernels go element by element: an element shown k times is changed k times."""
    def make(lib):
        x = lib.arange(6.) / 4
        op(view(x))
        return x, x._version
    assert_same(*both(make))


def test_in_place_through_overlapping_windows_in_the_graph_is_refused_clearly():
    a = minilora.arange(6., requires_grad=True)
    b = a * 1
    with pytest.raises(NotImplementedError, match="shows some elements more than once"):
        b.unfold(0, 3, 1).add_(1)
    b.unfold(0, 2, 2).add_(1)  # windows that do not overlap: differentiable, as before
    b.sum().backward()
    np.testing.assert_array_equal(a.grad.numpy(), np.ones(6))


@pytest.mark.parametrize("op", [lambda e: e.fill_(2), lambda e: e.zero_()])
def test_fill_of_an_expanded_tensor_writes_through(op):
    def make(lib):
        a = lib.ones(3)
        op(a.expand(2, 3))
        return a, a._version
    assert_same(*both(make))


@pytest.mark.parametrize("op", [lambda e: e.add_(1), lambda e: e.copy_(e * 0), lambda e: e.clamp_(0, 1),
                                lambda e: e.normal_(), lambda e: e.uniform_()])
def test_other_writes_into_an_expanded_tensor_are_refused(op):
    for lib in (torch, minilora):
        with pytest.raises(RuntimeError, match="more than one element of the written-to tensor"):
            op(lib.zeros(3).expand(2, 3))


# ---- siblings: retain_grad, hooks, detach/data --------------------------------------------------------
def test_retain_grad_on_a_view_survives_an_in_place_change_of_its_base():
    def make(lib):
        a = lib.arange(12.).reshape(3, 4).requires_grad_()
        b = a * 1
        v = b[1]
        v.retain_grad()
        b.mul_(3)
        (v * 2).sum().backward()
        return v.grad, a.grad, v.retains_grad
    assert_same(*both(make))


def test_detach_shares_the_version_counter_and_data_does_not():
    def make(lib):
        a = lib.arange(4., requires_grad=True)
        d = a.detach()
        d.add_(1)
        e = a.data
        e.add_(1)
        return a, a._version, d._version, e._version
    assert_same(*both(make))


# ---- saved-tensor hooks on the fused ops of a Llama + LoRA step: torch's packs, minilora's (pinned) ----
def _packs(lib, call):
    """What the pack hook sees (shape, dtype) while ``call`` runs, and how many unpacks backward makes."""
    seen, unpacked = [], []

    def pack(t):
        seen.append((tuple(t.shape), str(t.dtype).split(".")[-1]))
        return t

    def unpack(t):
        unpacked.append(1)
        return t

    with lib.autograd.graph.saved_tensors_hooks(pack, unpack):
        out = call(lib, lib.nn.functional)
    out.float().sum().backward()
    return seen, len(unpacked)


FUSED = {  # name: (call, torch's packs, minilora's packs) -- see each op's docstring in minilora/ops/nn.py
    "rms_norm": (lambda L, F: F.rms_norm(_leaf(L, (2, 3, 8)), (8,), _leaf(L, (8,)), 1e-6),
                 [((2, 3, 8), "float32"), ((2, 3, 1), "float32"), ((2, 3, 1), "float32"), ((2, 3, 8), "float32"),
                  ((8,), "float32"), ((2, 3, 8), "float32")],
                 [((8,), "float32"), ((2, 3, 8), "float32")]),
    "layer_norm": (lambda L, F: F.layer_norm(_leaf(L, (2, 3, 8)), (8,), _leaf(L, (8,)), _leaf(L, (8,))),
                   [((8,), "float32"), ((2, 3, 8), "float32"), ((8,), "float32"), ((2, 3, 1), "float32"),
                    ((2, 3, 1), "float32")],
                   [((2, 3, 8), "float32"), ((8,), "float32"), ((8,), "float32")]),
    "cross_entropy": (lambda L, F: F.cross_entropy(_leaf(L, (6, 8)), L.tensor([1, 2, 3, 4, 5, 6])),
                      [((6, 8), "float32"), ((6, 8), "float32"), ((6,), "int64"), ((), "float32")],
                      []),
    "scaled_dot_product_attention": (
        lambda L, F: F.scaled_dot_product_attention(*[_leaf(L, (1, 2, 4, 8), seed) for seed in range(3)],
                                                    is_causal=True),
        [((1, 2, 4, 8), "float32")] * 3 + [((1, 2, 4), "float32"), ((1, 2, 4, 8), "float32")],
        # with MKL, torch's flash kernel's node (ops/attention32.py): torch's packs; else the fused node's
        [((1, 2, 4, 8), "float32")] * 3 + [((1, 2, 4), "float32"), ((1, 2, 4, 8), "float32")]
        if minilora.blas.library() == "mkl" else [((1, 2, 4, 8), "float32")] * 4),
    "softmax": (lambda L, F: F.softmax(_leaf(L, (2, 8)), -1), [((2, 8), "float32")], [((2, 8), "float32")]),
    "silu": (lambda L, F: F.silu(_leaf(L, (2, 8))), [((2, 8), "float32")], [((2, 8), "float32")]),
    "silu(gate) * up (Llama's MLP; minilora's ops.swiglu)": (
        lambda L, F: (F.silu(_leaf(L, (2, 8))) * _leaf(L, (2, 8), 1) if L is torch
                      else L.ops.swiglu(_leaf(L, (2, 8)), _leaf(L, (2, 8), 1))),
        [((2, 8), "float32")] * 3, [((2, 8), "float32")] * 2),
    "rotary embedding (transformers' apply_rotary_pos_emb; minilora's ops.rotary_embedding)": (
        lambda L, F: _rotary(L, _leaf(L, (1, 2, 3, 4)), *(L.tensor(np.cos(np.arange(12.) / 5).reshape(1, 1, 3, 4)
                                                                        .astype(np.float32)) for _ in "cs")),
        [((1, 1, 3, 4), "float32")] * 2, [((1, 1, 3, 4), "float32")] * 2),
}


def _rotary(lib, x, cos, sin):
    if lib is minilora:
        return minilora.ops.rotary_embedding(x, cos, sin)
    half = x.shape[-1] // 2
    return x * cos + torch.cat((-x[..., half:], x[..., :half]), dim=-1) * sin


def _leaf(lib, shape, seed=0):
    values = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    return lib.tensor(values, requires_grad=True)


@pytest.mark.parametrize("name", FUSED)
def test_saved_tensor_packs_of_the_fused_ops_are_pinned(name):
    """Where minilora's one fused node keeps its own intermediates (normalised input, probabilities)
    its packs differ from torch's (documented in the op's docstring); the test sees a change on
    either side. Each packed tensor is unpacked once at backward, in both libraries."""
    call, torch_packs, minilora_packs = FUSED[name]
    theirs, ours = _packs(torch, call), _packs(minilora, call)
    assert theirs == (torch_packs, len(torch_packs))
    assert ours == (minilora_packs, len(minilora_packs))


# ---- in-place through views in the graph: values, gradients, torch's node names --------------------
GRAPH_CASES = {
    "copy_ from a tensor through overlapping windows": lambda lib, b: b.unfold(0, 3, 1).copy_(
        lib.arange(12.).reshape(4, 3).requires_grad_() * 2),
    "fill_ through overlapping windows": lambda lib, b: b.unfold(0, 3, 1).fill_(2),
    "mul_ through as_strided": lambda lib, b: b.as_strided((2, 2), (1, 2)).mul_(3),
    "mul_ through as_strided of a transpose": lambda lib, b: b.reshape(2, 3).t().as_strided((2, 2), (1, 3)).mul_(3),
    "add_ through as_strided of a slice": lambda lib, b: b[1:].as_strided((2,), (3,)).add_(b[:2].detach()),
}


@pytest.mark.parametrize("name", GRAPH_CASES)
def test_in_place_through_views_in_the_graph(name):
    def make(lib):
        a = lib.arange(6., requires_grad=True)
        b = a * 1
        GRAPH_CASES[name](lib, b)
        (b * lib.arange(6.)).sum().backward()
        return b, a.grad, b.grad_fn.name()
    assert_same(*both(make))


def test_a_view_used_after_its_base_changed_in_place_is_torchs_as_strided_node():
    def make(lib):
        a = lib.arange(6., requires_grad=True)
        b = a * 1
        y = b.as_strided((3,), (2,))
        v = b[1:3]
        b.mul_(2)
        (y * lib.tensor([1., 2., 3.])).sum().backward()
        return y, a.grad, y.grad_fn.name(), v.grad_fn.name(), y._version
    assert_same(*both(make))


@pytest.mark.parametrize("index, value", [(0, 1.0), ((0, 1), 1.0), (0, "row"), (0, "0-d")])
def test_setitem_into_an_expanded_tensor_where_the_region_repeats_nothing(index, value):
    def make(lib):
        a = lib.zeros(3)
        v = {"row": lib.tensor([1., 2., 3.]), "0-d": lib.tensor(5.)}.get(value, value)
        a.expand(2, 3)[index] = v
        return a, a._version
    assert_same(*both(make))


@pytest.mark.parametrize("index", [[0], ([0, 1],)])
def test_advanced_setitem_into_an_expanded_tensor_writes_with_torchs_warning(index):
    def make(lib):
        a = lib.zeros(3)
        with pytest.warns(UserWarning, match="Use of index_put_ on expanded tensors is deprecated"):
            a.expand(2, 3)[index] = 1.0
        return a, a._version
    assert_same(*both(make))


@pytest.mark.parametrize("index", [slice(None), Ellipsis, (slice(None), 1)])
def test_setitem_into_an_expanded_region_that_repeats_an_element_is_refused(index):
    for lib in (torch, minilora):
        with pytest.raises(RuntimeError, match="more than one element of the written-to tensor"):
            lib.zeros(3).expand(2, 3)[index] = 1.0


# ---- Linear and LoRA's fused linear pack what torch's linear packs: weight.t() [in, out], in its order ----
LINEAR_CALLS = {
    "2-D, bias": lambda L, x, w, b: L.nn.functional.linear(x, w, b),
    "2-D, no bias": lambda L, x, w, b: L.nn.functional.linear(x, w),
    "3-D, bias": lambda L, x, w, b: L.nn.functional.linear(x.reshape(2, 3, 8), w, b),
    "3-D, no bias": lambda L, x, w, b: L.nn.functional.linear(x.reshape(2, 3, 8), w),
    "frozen weight": lambda L, x, w, b: L.nn.functional.linear(x, w.detach(), b),
    "frozen input": lambda L, x, w, b: L.nn.functional.linear(x.detach(), w, b),
    "1-D input": lambda L, x, w, b: L.nn.functional.linear(x[0], w, b),
}


@pytest.mark.parametrize("name", LINEAR_CALLS)
def test_linear_packs_torchs_tensors_in_torchs_order(name):
    def make(lib):
        x, w, b = _leaf(lib, (6, 8)), _leaf(lib, (4, 8), 1), _leaf(lib, (4,), 2)
        seen = []

        def unpack(t):  # a changed value: backward must use what unpack returns, as torch's does
            return t * 2

        with lib.autograd.graph.saved_tensors_hooks(lambda t: seen.append(tuple(t.shape)) or t, unpack):
            out = LINEAR_CALLS[name](lib, x, w, b)
        out.sum().backward()
        return seen, x.grad if x.grad is not None else 0, w.grad if w.grad is not None else 0
    assert_same(*both(make))


def _lora_layer_in_torch(x, bias):
    """PEFT's LoRA Linear (lora_dropout 0) written out in torch: base(x) + B(A(x)) * scaling."""
    torch.manual_seed(0)
    base, A, B = torch.nn.Linear(8, 8, bias=bias), torch.nn.Linear(8, 2, bias=False), torch.nn.Linear(2, 8, bias=False)
    base.requires_grad_(False)
    return base(x) + B(A(x)) * 4.0


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("input_grad", [False, True])
def test_lora_linear_packs_what_peft_layers_pack(bias, input_grad):
    x = np.random.default_rng(3).standard_normal((3, 8)).astype(np.float32)
    minilora.manual_seed(0)
    model = minilora.lora.get_peft_model(minilora.nn.Sequential(minilora.nn.Linear(8, 8, bias=bias)),
                                         minilora.lora.LoraConfig(r=2, lora_alpha=8, target_modules=["0"]))
    shapes = []
    for lib, forward in ((torch, lambda t: _lora_layer_in_torch(t, bias)), (minilora, model)):
        seen = []
        with lib.autograd.graph.saved_tensors_hooks(lambda t: seen.append(tuple(t.shape)) or t, lambda t: t):
            forward(lib.tensor(x, requires_grad=input_grad)).sum().backward()
        shapes.append(seen)
    assert shapes[0] == shapes[1]


def test_embedding_saves_its_ids_tensor_as_torch():
    def make(lib):
        w = _leaf(lib, (10, 4))
        seen = []
        with lib.autograd.graph.saved_tensors_hooks(lambda t: seen.append((tuple(t.shape), str(t.dtype))) or t,
                                                     lambda t: t):
            lib.nn.functional.embedding(lib.tensor([[1, 2, 3]]), w).sum().backward()
        ids = lib.tensor([[1, 2, 3]])
        out = lib.nn.functional.embedding(ids, w)
        ids.add_(1)  # torch's node saved the ids: backward now refuses
        with pytest.raises(RuntimeError, match="modified by an inplace operation"):
            out.sum().backward()
        return [(shape, dtype.split(".")[-1]) for shape, dtype in seen], w.grad
    assert_same(*both(make))
