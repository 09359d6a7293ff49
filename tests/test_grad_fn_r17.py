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
