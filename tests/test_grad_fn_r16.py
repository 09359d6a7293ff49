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


# ---- LoRA: PEFT's lora.Linear.forward is result + lora_B(lora_A(dropout(x))) * scaling, minilora one fused op
def peft_linear(lib, dropout=0.0, bias=True, dtype="float32"):
    """A LoRA'd Linear(8, 6) in training mode, seeded, its adapter not zero (init_lora_weights=False)."""
    peft = pytest.importorskip("peft") if lib is torch else ml.lora
    lib.manual_seed(0)
    model = lib.nn.Sequential(lib.nn.Linear(8, 6, bias=bias)).to(getattr(lib, dtype))
    config = peft.LoraConfig(r=2, lora_alpha=4, target_modules=["0"], lora_dropout=dropout, init_lora_weights=False)
    return peft.get_peft_model(model, config).train()


@pytest.mark.parametrize("dropout, bias, shape, dtype", [
    (0.0, True, (3, 8), "float32"), (0.0, False, (2, 3, 8), "float32"), (0.1, True, (2, 3, 8), "float32"),
    (0.1, False, (3, 8), "float32"), (0.0, True, (2, 3, 8), "bfloat16"), (0.1, False, (3, 8), "bfloat16")])
def test_a_lora_linear_prints_pefts_graph(dropout, bias, shape, dtype):
    """bfloat16: PEFT's float32 adapters (autocast_adapter_dtype) cast x to float32 and the sum back."""
    graphs = []
    for lib in (torch, ml):
        model = peft_linear(lib, dropout, bias, dtype)
        x = lib.randn(*shape, requires_grad=True).to(getattr(lib, dtype))
        graphs.append(graph(model(x).grad_fn, 4))
    assert graphs[1] == graphs[0]


def test_a_prehook_on_a_lora_linears_node_gets_pefts_grad_outputs():
    """The fused node's gradient output is PEFT's AddBackward0's: a prehook sees and replaces the same."""
    seen, grads = [], []
    for lib in (torch, ml):
        model = peft_linear(lib)
        out = model(lib.randn(2, 3, 8))
        out.grad_fn.register_prehook(lambda grad_outputs: (seen.append(grad_outputs[0].numpy()),
                                                           (grad_outputs[0] * 3,))[1])
        seen.append(out.grad_fn.name())  # (AddBackward0, where minilora's was LoraLinearBackward0)
        out.backward(lib.ones(2, 3, 6))
        layer = model.base_model.model[0]
        grads.append([layer.lora_A["default"].weight.grad.numpy(), layer.lora_B["default"].weight.grad.numpy()])
    assert seen[2] == seen[0]
    np.testing.assert_array_equal(seen[3], seen[1])
    for mine, torchs in zip(grads[1], grads[0]):
        np.testing.assert_allclose(mine, torchs, rtol=1e-6, atol=1e-6)  # (float32 sums in other orders)


def test_hooks_minilora_cannot_give_as_peft_are_refused():
    """register_hook's grad_inputs would be PEFT's two branches' gradients, which one fused node never has; the
    nodes under it are shown, never run: refused, never a hook silently given other tensors or never called."""
    out = peft_linear(ml)(ml.randn(3, 8, requires_grad=True))
    with pytest.raises(NotImplementedError, match="grad_outputs are .grad_fn.register_prehook"):
        out.grad_fn.register_hook(lambda grad_inputs, grad_outputs: None)
    base, branch = (node for node, _ in out.grad_fn.next_functions)
    for node in (base, branch, branch.next_functions[0][0]):
        with pytest.raises(NotImplementedError, match="a hook on it would never run"):
            node.register_prehook(lambda grad_outputs: None)
        with pytest.raises(NotImplementedError, match="a hook on it would never run"):
            node.register_hook(lambda grad_inputs, grad_outputs: None)
