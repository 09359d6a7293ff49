"""The printed autograd graph is torch's, continued: writes by indexing, saved sizes/dims/scalars, LoRA's graph.

``y[0] = 5.0`` on a tensor in the graph is torch's CopySlices (Python indexing applies ints, slices and None as
a view and copies into it), an index of arrays alone is IndexPutBackward0, ``y[...] = v`` the copy's own node;
a node answers torch's saved sizes, dims and scalars (``grad_fn._saved_dim``) where minilora's node knows them,
and torch's None where torch's node holds no tensor. Compared with torch 2.13 from the same seed, as
tests/test_grad_fn_r15.py.
"""
import numpy as np
import pytest

import minilora as ml

from test_grad_fn_r15 import graph, run

torch = pytest.importorskip("torch")

# torch's python_variable_indexing: views first (ints, None, partial slices), then copy_to (FillBackward3 of a
# number or 0-d value, CopyBackwards, a value viewed without leading 1s and expanded) or index_put_
SETITEM = """\
y = x * 2; y[0] = 5.0
y = x * 2; y[0] = t[1]
y = x * 2; y[0] = x[1]
y = x * 2; y[1:] = x[:2]
y = x * 2; y[0:1] = x[:1]
y = x * 2; y[::2] = 1.0
y = x * 2; y[1:1] = 1.0
y = x * 2; y[...] = 1.0
y = x * 2; y[...] = x * 3
y = x * 2; y[:] = x[:1]
y = x * 2; y[()] = 1.0
y = x * 2; y[None, 0] = 1.0
y = x * 2; y[True] = 1.0
y = x * 2; y[False] = 1.0
y = x * 2; y[torch.tensor(0)] = 5.0
y = x * 2; y[torch.tensor([0, 1])] = 5.0
y = x * 2; y[y > 0] = 0.0
y = q * 2; y[0, 1:, None] = 1.0
y = q * 2; y[:, 0] = x[:1] * 3
y = q * 2; y[0] = x[:1].view(1, 1, 1)
y = q * 2; y[:, 0:2] = x[:1].expand(4)
y = q * 2; y[:, [0, 1]] = 0.0
y = q * 2; y[1:, [0, 1]] = 0.0
y = q * 2; y[..., [0, 1]] = 0.0
y = q * 2; y[0, :, [0, 1]] = x[:1]
y = q * 2; y[[0], 1:] = 0.0
y = q * 2; y[0][1] = 0.0
y = q.double() * 2; y[0] = t[:1]
y = torch.zeros(3); y[0] = x[1]
y = x * 2; v = y[1:]; v[0] = 5.0
y = x * 2; y[0] = 5.0; y[1:] = x[1:]
""".splitlines()


def run_all(lib, source):
    """run()'s names after ``source``: the inputs x, q too."""
    lib.manual_seed(0)
    names = {"torch": lib, "x": lib.randn(3, requires_grad=True), "t": lib.randn(3),
             "q": lib.randn(2, 3, 4, requires_grad=True)}
    exec(source, names)
    return names


@pytest.mark.parametrize("source", SETITEM)
def test_writes_by_indexing_are_torchs_nodes_with_torchs_gradients(source):
    theirs, ours = run_all(torch, source), run_all(ml, source)
    assert graph(ours["y"].grad_fn, 3) == graph(theirs["y"].grad_fn, 3)
    for names in (theirs, ours):
        names["y"].backward(names["torch"].arange(float(names["y"].numel())).reshape(names["y"].shape).double()
                            .to(names["y"].dtype))
    for name in ("x", "q"):
        mine, torchs = ours[name].grad, theirs[name].grad
        assert (mine is None) == (torchs is None)
        if torchs is not None:
            np.testing.assert_array_equal(mine.numpy(), torchs.numpy())
