"""The printed autograd graph is torch's, continued: casts inside ops, indexing's views, saved values after backward.

torch promotes an operand inside the op that reads it (``x * t.double()``: mul's TensorIterator; ``x.sum(dtype=)``:
sum's kernel), so its graph has no ToCopyBackward0 there, where minilora casts first with a node of its own;
``m[0, 0]`` is torch's two SelectBackward0 (its indexing runs one view per entry), where minilora runs one op.
Compared with torch 2.13 from the same seed, as tests/test_grad_fn_r15.py.
"""
import numpy as np
import pytest

import minilora as ml

from test_grad_fn_r15 import graph, run

torch = pytest.importorskip("torch")

# the cast torch makes inside the op (no node), and the .to torch's op calls (a ToCopyBackward0 node)
CASTS = """\
y = x * t.double()
y = torch.mul(t.double(), x)
y = t.double() - x
y = torch.add(x, t.double(), alpha=2)
y = x.half() + x
y = torch.clamp(x, min=t.double())
y = torch.clamp(x, t.double(), None)
y = torch.where(t > 0, x, t.double())
y = torch.maximum(x, t.double())
y = torch.atan2(x, t.double())
y = torch.hypot(x, t.double())
y = torch.xlogy(x, t.double())
y = torch.cat([x, t.double()])
y = torch.cat((t.double(), x), 0)
y = torch.hstack([x, t.double()])
y = torch.sum(x, dtype=torch.float64)
y = q.sum(1, dtype=torch.float64)
y = torch.mean(q, (0, 1), dtype=torch.float64)
y = torch.prod(x, dtype=torch.float64)
y = torch.cumsum(x, 0, dtype=torch.float64)
y = torch.linalg.vector_norm(x, dtype=torch.float64)
y = torch.norm(x, dtype=torch.float64)
y = torch.linalg.matrix_norm(q, dtype=torch.float64)
y = torch.linalg.matrix_norm(q, 1, dtype=torch.float64)
y = torch.linalg.matrix_norm(q, float('-inf'), dim=(2, 0))
y = F.softmin(x, 0, dtype=torch.float64)
y = F.softmin(x, 0, dtype=torch.float32)
y = torch.fft.fft(x)
""".splitlines()
SHOWN_CASTS = """\
y = torch.softmax(x, 0, dtype=torch.float64)
y = torch.log_softmax(q, -1, dtype=torch.float64)
y = torch.linalg.matrix_norm(q, 'nuc', dtype=torch.float64)
y = x.double() * t
""".splitlines()  # (torch's op calls .to first, or the user did: a ToCopyBackward0, kept; these passed before)


@pytest.mark.parametrize("source", CASTS + SHOWN_CASTS)
def test_casts_inside_an_op_are_no_node_as_torchs(source):
    theirs, ours = run(torch, source), run(ml, source)
    assert graph(ours.grad_fn, 3) == graph(theirs.grad_fn, 3)
    assert ours.dtype == getattr(ml, str(theirs.dtype).removeprefix("torch."))


def test_a_hidden_cast_still_differentiates_in_each_inputs_dtype():
    """The cast's node still runs (the gradient reaches x in float32), and the graph shows it after backward too."""
    grads, graphs = [], []
    for lib in (torch, ml):
        y = run(lib, "y = torch.hypot(x, t.double()) * torch.sum(x, dtype=torch.float64)")
        y.backward(lib.ones(3, dtype=lib.float64))
        graphs.append(graph(y.grad_fn, 3))
        x = y.grad_fn.next_functions[0][0].next_functions[0][0].variable
        grads.append((str(x.grad.dtype), x.grad.numpy()))
    assert graphs[1] == graphs[0]
    assert grads[1][0].removeprefix("minilora.") == grads[0][0].removeprefix("torch.")
    np.testing.assert_allclose(grads[1][1], grads[0][1], rtol=1e-6)


# torch's indexing runs one op per entry, left to right (TensorIndexing.h applySlicing), advanced indices last
INDEXING = """\
y = q[0, 0]
y = m[0, 1, 2]
y = m[0][1, 2]
y = q[1, :, 0]
y = q[0, ..., 1]
y = q[0:1, 0]
y = q[None, 0, :, 1:]
y = q[..., 0, None]
y = q[0, None, ..., None]
y = m[:, 1:, 0, ::2]
y = q[torch.tensor(1), 0]
y = q[[0, 1], 0]
y = q[0, [0, 1]]
y = q[1:, [0, 1], 2]
y = q[True, 0]
y = q[0, True]
y = q[torch.tensor(True), 0]
y = q[0, q[0] > 0]
y = q[q[:, :, 0] > 0, 1]
y = q[:, 0:3]
y = q[:, -3:]
y = q[0:2]
""".splitlines()  # (the last two passed before: they guard the rule for slices)


@pytest.mark.parametrize("source", INDEXING)
def test_indexing_shows_torchs_op_per_entry(source):
    """A slice covering its dimension is no op in a tuple (as written: ``-3:`` slices), a lone slice is one."""
    theirs, ours = run(torch, source), run(ml, source)
    assert graph(ours.grad_fn, 4) == graph(theirs.grad_fn, 4)


def test_indexing_chain_after_backward_and_its_gradient():
    grads, graphs = [], []
    for lib in (torch, ml):
        lib.manual_seed(0)
        m = lib.randn(2, 3, 4, requires_grad=True)
        y = m[1, 1:, None, 2]
        y.backward(lib.arange(2.0).reshape(2, 1))
        graphs.append(graph(y.grad_fn, 4))
        grads.append(m.grad.numpy())
    assert graphs[1] == graphs[0]
    np.testing.assert_array_equal(grads[1], grads[0])


# torch's node keeps its non-tensor saved values after backward (sizes, dims, scalars, a None for no tensor) and
# refuses a freed tensor in its own words
AFTER_BACKWARD = [
    ("y = q.sum(-1, keepdim=True)", ["_saved_dim", "_saved_keepdim", "_saved_self_sym_sizes"]),
    ("y = torch.mean(q, dim=[0, 2])", ["_saved_dim", "_saved_keepdim", "_saved_self_sym_sizes"]),
    ("y = torch.nansum(q, 1)", ["_saved_dim", "_saved_keepdim"]),
    ("y = q.sum()", ["_saved_self_sym_sizes"]),
    ("y = q.view(6, 4)", ["_saved_self_sym_sizes"]),
    ("y = q[1]", ["_saved_self_sym_sizes"]),
    ("y = q[:, 1:]", ["_saved_self_sym_sizes"]),
    ("y = x.expand(2, 3)", ["_saved_self_sym_sizes"]),
    ("y = q[0] @ q[1].t()", ["_saved_self_sym_sizes"]),
    ("y = torch.add(x, x * 2, alpha=3)", ["_saved_alpha"]),
    ("y = torch.sub(x, 2, alpha=3)", ["_saved_alpha"]),
    ("y = torch.add(x, t, alpha=0.5)", ["_saved_alpha"]),
    ("y = x + t", ["_saved_alpha"]),
    ("y = x * 2", ["_saved_self", "_saved_other"]),
    ("y = x * t", ["_saved_self", "_saved_other"]),
    ("y = x * x", ["_saved_self", "_saved_other"]),
    ("y = x.exp()", ["_saved_result"]),
]


def saved_or_error(node, name):
    try:
        value = getattr(node, name)
    except (AttributeError, RuntimeError) as error:
        return type(error).__name__, str(error)
    if hasattr(value, "detach"):
        return "tensor", value.detach().numpy().tolist()
    return tuple(value) if isinstance(value, (tuple, list)) or type(value).__name__ == "Size" else value


@pytest.mark.parametrize("source, shown", AFTER_BACKWARD, ids=[s for s, _ in AFTER_BACKWARD])
def test_saved_values_after_backward_are_torchs(source, shown):
    answers = []
    for lib in (torch, ml):
        y = run(lib, source)
        y.backward(lib.ones_like(y))
        answers.append([saved_or_error(y.grad_fn, name) for name in shown])
    assert answers[1] == answers[0]


# ops minilora composes shown as torch's node: a 0-d input's scan or reduction (minilora's copy), put (minilora's
# index_put of the flattened input), kron (torch's _unsafe_views), sum_to_size (viewed only to drop leading dims)
COMPOSED = """\
y = torch.cumsum(x[0], 0)
y = torch.cumprod(x[0], 0)
y = torch.logcumsumexp(x[0], 0)
y = torch.max(x[0], 0)[0]
y = torch.min(x[0], 0, True)[0]
y = x[0].unfold(0, 1, 1)
y = q.sum_to_size(1, 3, 4)
y = torch.put(q, torch.tensor([0, 5]), x[:2])
y = q * 1; y.put_(torch.tensor([0, 5]), x[:2])
y = torch.kron(q[0], q[1])
y = torch.kron(x, q)
""".splitlines()


@pytest.mark.parametrize("source", COMPOSED)
def test_composed_ops_show_torchs_nodes(source):
    theirs, ours = run(torch, source), run(ml, source)
    assert graph(ours.grad_fn, 3) == graph(theirs.grad_fn, 3)


# torch's circular pad is ATen's copies into slices of a new tensor (_pad_circular): CopySlices nodes, each later
# copy reading a slice of the tensor it writes (one node met twice in the graph, as torch's)
CIRCULAR = """\
y = F.pad(q, (1, 1), mode='circular')
y = F.pad(q, (-1, 2), mode='circular')
y = F.pad(q, (0, 0), mode='circular')
y = F.pad(m, (1, 2, 0, 1), mode='circular')
y = F.pad(m, (1, -1, 2, 0), 'circular')
y = F.pad(m, (1, 2, 0, 1, 2, 1), mode='circular')
y = torch.nn.Conv2d(3, 2, 3, padding=1, padding_mode='circular')(m)
""".splitlines()


@pytest.mark.parametrize("source", CIRCULAR)
def test_a_circular_pad_shows_torchs_copies(source):
    theirs, ours = run(torch, source), run(ml, source)
    assert graph(ours.grad_fn, 6) == graph(theirs.grad_fn, 6)


def test_a_circular_pads_copies_read_the_node_they_follow_and_its_gradient_is_torchs():
    found, grads = [], []
    for lib in (torch, ml):
        lib.manual_seed(0)
        x = lib.randn(2, 3, 4, requires_grad=True)
        y = lib.nn.functional.pad(x, (2, 1), mode="circular")
        last, sliced = (node for node, _ in y.grad_fn.next_functions)
        found.append(sliced.next_functions[0][0] is last)
        y.backward(lib.arange(42.0).reshape(2, 3, 7))
        grads.append(x.grad.numpy())
        found.append(graph(y.grad_fn, 5))
    assert found[2:] == found[:2] and found[0]
    np.testing.assert_array_equal(grads[1], grads[0])


@pytest.mark.parametrize("dropout, bias, shape, dtype, autocast", [
    (0.0, True, (3, 8), "float32", "bfloat16"), (0.1, False, (2, 3, 8), "float32", "bfloat16"),
    (0.0, False, (3, 8), "bfloat16", "bfloat16"), (0.1, True, (2, 3, 8), "float32", "float16"),
    (0.0, True, (8,), "float32", "bfloat16")])
def test_a_lora_linear_in_autocast_prints_pefts_graph(dropout, bias, shape, dtype, autocast):
    """Each of PEFT's F.linear casts its operands to the autocast dtype (ToCopyBackward0 of x and of the float32
    adapters); minilora's fused node was shown as LoraLinearBackward0 of autocast's casts. Also after backward."""
    from test_grad_fn_r16 import peft_linear
    graphs = []
    for lib in (torch, ml):
        model = peft_linear(lib, dropout, bias, dtype)
        x = lib.randn(*shape, requires_grad=True).to(getattr(lib, dtype))
        with lib.autocast("cpu", dtype=getattr(lib, autocast)):
            out = model(x)
        graphs.append(graph(out.grad_fn, 5))
        out.float().sum().backward()
        graphs.append(graph(out.grad_fn, 5))
    assert graphs[2:] == graphs[:2]


# torch's node is of the inputs where minilora broadcasts or pads them first, or runs a 3-D input as 4-D
OF_THE_INPUTS = """\
y = torch.masked_scatter(q[0], t[:, None] > 0, q[1] * 2)
y = q * 1; y.masked_scatter_(t[None, :, None] > 0, q * 3)
y = torch.linalg.cross(q[:, :, :3], x.expand(2, 3, 3))
y = torch.linalg.cross(q[:1, :, :3], q[:, :, 1:])
y = F.max_pool2d(m, 3, 2, ceil_mode=True)
y = F.max_pool1d(q, 3, 2, ceil_mode=True)
y = F.max_pool2d(m[0], 3, 2, ceil_mode=True)
y = F.max_pool2d(m[0], 2, return_indices=True)[0]
y = torch.nn.MaxPool2d(2)(m[0])
y = torch.vstack([x, x])
y = torch.row_stack([x, q[0, :, :3]])
""".splitlines()


@pytest.mark.parametrize("source", OF_THE_INPUTS)
def test_nodes_are_of_the_inputs_as_torchs(source):
    """masked_scatter and linalg.cross broadcast inside torch's kernel (minilora's expand showed ExpandBackward0),
    max_pool2d's ceil_mode window reads past the edge (minilora's pad showed ConstantPadNdBackward0), an unbatched
    pool is one node (minilora's unsqueeze and squeeze showed), vstack's rows are atleast_2d's unsqueeze."""
    theirs, ours = run(torch, source), run(ml, source)
    assert graph(ours.grad_fn, 3) == graph(theirs.grad_fn, 3)


# ops torch composes in C++ use ATen's Tensor-Scalar overloads: AddBackward1/MulBackward1/DivBackward1, one edge
SCALAR_OVERLOADS = """\
y = F.margin_ranking_loss(x, t, torch.tensor([1., -1., 1.]), margin=0.5)
y = F.margin_ranking_loss(x, t, torch.tensor([1., -1., 1.]), reduction='none')
y = F.cosine_embedding_loss(q[0], q[1], torch.tensor([1., -1., 1.]))
y = F.cosine_embedding_loss(q[0], q[1], torch.tensor([1., -1., 1.]), margin=0.2, reduction='sum')
y = torch.trapz(x)
y = torch.trapz(x, dx=2)
y = torch.trapezoid(q, dx=0.5)
y = torch.trapezoid(q, torch.linspace(0, 1, 4) ** 2)
y = torch.trapezoid(q, t.abs().cumsum(0), dim=1)
y = torch.cumulative_trapezoid(x)
y = torch.cumulative_trapezoid(q, dx=2.0)
y = torch.cumulative_trapezoid(q, torch.linspace(0, 1, 4) ** 2)
y = torch.special.ndtr(x)
y = torch.gradient(x)[0]
y = torch.gradient(q, dim=1)[0]
y = torch.gradient(q, spacing=2.0, dim=2, edge_order=2)[0]
y = torch.gradient(q)[1]
""".splitlines()


@pytest.mark.parametrize("source", SCALAR_OVERLOADS)
def test_aten_composed_ops_show_scalar_overloads(source):
    theirs, ours = run(torch, source), run(ml, source)
    assert graph(ours.grad_fn, 5) == graph(theirs.grad_fn, 5)
    np.testing.assert_array_equal(ours.detach().numpy(), theirs.detach().numpy())
