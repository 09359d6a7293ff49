"""The autograd semantics of ``Tensor`` (minilora/tensor.py): what backward accumulates, when the graph
exists and when it is freed, grad modes, dtypes and devices, errors that name both sides, and a small
composite model against PyTorch."""
import numpy as np
import pytest

import minilora as ml
from minilora import ops
from minilora.testing import assert_close


def enabled(name):
    return {d.name: d for d in ml.all_devices()}[name].enabled()


def t64(rng, *shape, requires_grad=True):
    return ml.tensor(rng.standard_normal(shape), dtype=ml.float64, requires_grad=requires_grad)


# ---- backward and gradient accumulation -------------------------------------------------------------
def test_gradients_accumulate_over_uses_and_over_backward_calls(rng):
    x = t64(rng, 3)
    (x * x + x).sum().backward()  # x used three times in one graph
    assert_close(x.grad, 2 * x.numpy(force=True) + 1, name="one backward")
    (x * 3).sum().backward()  # a second graph adds to .grad, as in PyTorch
    assert_close(x.grad, 2 * x.numpy(force=True) + 4, name="accumulated")


def test_backward_with_explicit_gradient(rng):
    x = t64(rng, 2, 3)
    seed = rng.standard_normal((2, 3))
    (x * 2).backward(seed)  # the vector of a vector-Jacobian product
    assert_close(x.grad, 2 * seed, name="x.grad")
    y = t64(rng, 2)
    (y * 1.0).backward(ml.tensor(np.array([1.0, -1.0])))  # a Tensor works too
    assert_close(y.grad, [1.0, -1.0], name="y.grad")


def test_backward_of_a_non_scalar_needs_a_gradient_and_says_which_shape(rng):
    x = t64(rng, 2, 3)
    with pytest.raises(RuntimeError, match=r"scalar.*shape \(2, 3\)"):
        (x * 2).backward()
    with pytest.raises(RuntimeError, match=r"grad_output\[0\] has a shape of torch.Size\(\[3\]\) and output\[0\] "
                                           r"has a shape of torch.Size\(\[2, 3\]\)"):  # (torch's words, round 27)
        (x * 2).backward(np.ones(3))


def test_backward_on_something_that_needs_no_grad_raises():
    with pytest.raises(RuntimeError, match="does not require grad"):
        ml.tensor([1.0, 2.0]).sum().backward()


def test_graph_is_freed_after_backward_unless_retained(rng):
    x = t64(rng, 3)
    y = (x.exp() * 2).sum()
    y.backward()
    with pytest.raises(RuntimeError, match="backward through the graph a second time.*retain_graph=True"):
        y.backward()
    z = (x.exp() * 2).sum()
    x.grad = None
    z.backward(retain_graph=True)
    z.backward()  # allowed once more, and the gradients add up
    assert_close(x.grad, 4 * np.exp(x.numpy(force=True)), name="x.grad after two backward calls")


def test_freed_graph_drops_saved_arrays(rng):
    x = t64(rng, 4)
    y = x.exp()
    assert y.grad_fn.out is not None  # Exp keeps its output for backward
    y.sum().backward()
    assert not hasattr(y.grad_fn, "out")
    # only the leaf that requires grad stays (its AccumulateGrad in next_functions, as torch's)
    assert all(i is x for i in y.grad_fn.inputs) and y.grad_fn.next_functions[0][0].variable is x


def test_retain_grad_keeps_a_non_leaf_gradient(rng):
    x = t64(rng, 3)
    h = x * 2
    h.retain_grad()
    (h * h).sum().backward()
    assert_close(h.grad, 2 * h.numpy(force=True), name="h.grad")
    assert (x * 3).grad is None


def test_gradient_of_a_diamond_graph_is_summed_once_per_path(rng):
    """``a`` feeds two branches that meet again: its gradient must be complete before it is used."""
    x = t64(rng, 3)
    a = x * 2
    b, c = a.exp(), a * a
    (b + c).sum().backward()
    assert_close(x.grad, 2 * (np.exp(2 * x.numpy(force=True)) + 4 * x.numpy(force=True)), rtol=1e-12, name="x.grad")


def test_a_long_chain_needs_no_recursion():
    x = ml.tensor([0.5], dtype=ml.float64, requires_grad=True)
    y = x
    for _ in range(5000):
        y = y * 1.0001
    y.sum().backward()
    assert_close(x.grad, [1.0001 ** 5000], rtol=1e-9, name="x.grad")


# ---- when a graph is built -------------------------------------------------------------------------
def test_no_grad_builds_no_graph(rng):
    x = t64(rng, 3)
    with ml.no_grad():
        y = x * 2 + 1
        with ml.enable_grad():
            z = x * 2
    assert not y.requires_grad and y.grad_fn is None and y.is_leaf
    assert z.requires_grad and z.grad_fn is not None
    assert ml.is_grad_enabled()

    @ml.no_grad()
    def infer(t):
        return t.exp()

    assert infer(x).grad_fn is None
    with ml.set_grad_enabled(False):
        assert (x + 1).grad_fn is None


def test_no_graph_when_nothing_requires_grad(rng):
    x, w = t64(rng, 3, requires_grad=False), t64(rng, 3, requires_grad=False)
    y = (x * w).exp().sum()
    assert not y.requires_grad and y.grad_fn is None
    frozen = ml.nn.Linear(3, 2).requires_grad_(False)
    assert frozen(ml.tensor(rng.standard_normal((1, 3)).astype(np.float32))).grad_fn is None


def test_detach_shares_data_but_not_the_graph(rng):
    x = t64(rng, 3)
    d = (x * 2).detach()
    assert not d.requires_grad and d.grad_fn is None
    assert_close(d, 2 * x.numpy(force=True), name="detached values")
    e = x.detach()
    assert np.shares_memory(e.numpy(force=True), x.numpy(force=True))  # like torch: same storage


# ---- what a tensor is ------------------------------------------------------------------------------
def test_numpy_item_shape_dtype_device():
    x = ml.tensor([[1.0, 2.0, 3.0]])
    assert x.shape == (1, 3) and x.dtype == np.float32 and x.device is ml.device("cpu")
    assert x.device.name == "cpu" and x.ndim == 2 and x.numel() == 3 and x.size(1) == 3
    np.testing.assert_array_equal(x.numpy(force=True), [[1.0, 2.0, 3.0]])
    assert ml.tensor([[2.5]]).item() == 2.5 and isinstance(ml.tensor(3.0).item(), float)
    with pytest.raises(RuntimeError, match=r"one element.*\(1, 3\)"):  # RuntimeError, as torch
        x.item()
    assert ml.tensor([1, 2]).dtype == np.int64  # Python ints stay integers
    assert ml.tensor([1.0], dtype=ml.float64).dtype == np.float64


def test_float16_storage_stays_float16(rng):
    h = ml.tensor(rng.standard_normal(4), dtype=ml.float16, requires_grad=True)
    y = (h * 2 + 1).exp().sum()
    y.backward()
    assert y.dtype == np.float16 and h.grad.dtype == np.float16
    assert_close(h.grad, 2 * np.exp(2 * h.numpy(force=True).astype(np.float64) + 1), rtol=5e-3, atol=1e-3,
                 name="float16 gradient")
    assert h.half() is h and h.float().dtype == np.float32


def test_dtype_conversion_is_differentiable(rng):
    x = t64(rng, 3)
    y = x.float()
    assert y.dtype == np.float32
    (y * 2).sum().backward()
    assert x.grad.dtype == np.float64
    assert_close(x.grad, [2.0, 2.0, 2.0], name="x.grad")


def test_only_float_tensors_can_require_grad():
    with pytest.raises(RuntimeError, match="Only Tensors of floating point and complex dtype can require gradients"):
        ml.tensor([1, 2], requires_grad=True)  # RuntimeError in torch 2.13's words (round 25: they named no dtype)


# ---- operators with Python scalars, and inputs left untouched ---------------------------------------
def test_python_scalars_in_operators_keep_float32():
    x = ml.tensor([1.0, 2.0, 4.0], requires_grad=True)
    cases = {"2 + x": (2 + x, [3, 4, 6]), "x - 1": (x - 1, [0, 1, 3]), "1 - x": (1 - x, [0, -1, -3]),
             "3 * x": (3 * x, [3, 6, 12]), "x / 2": (x / 2, [0.5, 1, 2]), "4 / x": (4 / x, [4, 2, 1]),
             "x ** 2": (x ** 2, [1, 4, 16]), "2 ** x": (2 ** x, [2, 4, 16]), "-x": (-x, [-1, -2, -4])}
    for name, (y, expected) in cases.items():
        assert y.dtype == np.float32, f"{name} gave {y.dtype}: a Python scalar must not upcast"
        assert_close(y, np.array(expected, dtype=np.float64), name=name)
    sum(y for y, _ in cases.values()).sum().backward()
    # d/dx of the sum of all the cases above, element by element
    xs = np.array([1.0, 2.0, 4.0])
    expected = 1 + 1 - 1 + 3 + 0.5 - 4 / xs ** 2 + 2 * xs + np.log(2) * 2 ** xs - 1
    assert_close(x.grad, expected, rtol=1e-5, name="x.grad")


def test_ops_never_mutate_their_inputs_or_the_seed_gradient(rng):
    a, b = t64(rng, 3, 4), t64(rng, 4)
    a0, b0 = a.numpy(force=True).copy(), b.numpy(force=True).copy()
    seed = rng.standard_normal((3,))
    seed0 = seed.copy()
    out = ops.layer_norm(ops.gelu(a * b + 1), (4,), b, b).softmax(-1) @ b
    out.backward(seed)
    np.testing.assert_array_equal(a.numpy(force=True), a0)
    np.testing.assert_array_equal(b.numpy(force=True), b0)
    np.testing.assert_array_equal(seed, seed0)


def test_a_gradient_shared_by_two_leaves_is_not_changed_through_the_other(rng):
    """Add hands the same array to both inputs; accumulating into one must not touch the other."""
    a, b = t64(rng, 3), t64(rng, 3)
    (a + b).sum().backward()
    (a * 2).sum().backward()
    assert_close(a.grad, [3.0, 3.0, 3.0], name="a.grad")
    assert_close(b.grad, [1.0, 1.0, 1.0], name="b.grad")


# ---- devices -----------------------------------------------------------------------------------------
def test_to_device_and_back_carries_the_gradient(rng):
    if not enabled("emu"):
        pytest.skip("emu device not enabled here")
    emu = ml.device("emu")
    x = t64(rng, 3)
    y = x.to("emu")
    assert y.device is emu and x.device.name == "cpu"
    z = (y * 3).to("cpu").sum()
    assert z.device.name == "cpu"
    z.backward()
    assert x.grad is not None and isinstance(x.grad, ml.Tensor)
    assert_close(x.grad, [3.0, 3.0, 3.0], name="x.grad through emu")
    assert x.to("cpu") is x


def test_tensors_on_two_devices_in_one_op_name_both():
    if not enabled("emu"):
        pytest.skip("emu device not enabled here")
    a, b = ml.tensor([1.0]), ml.tensor([1.0], device="emu")
    with pytest.raises(RuntimeError, match="same device.*cpu and emu"):
        a + b


def test_cuda_says_why_it_is_not_enabled():
    if enabled("cuda"):
        pytest.skip("CUDA is enabled on this machine")
    with pytest.raises(RuntimeError, match="device 'cuda' is not enabled: .+"):
        ml.device("cuda")
    with pytest.raises(RuntimeError, match="not enabled"):
        ml.tensor([1.0]).to("cuda")


def test_unknown_device_lists_the_choices():
    with pytest.raises(ValueError, match=r"unknown device 'tpu'.*cpu.*cuda.*emu"):
        ml.device("tpu")


# ---- errors that name both sides ---------------------------------------------------------------------
def test_mismatched_shapes_name_both_shapes():
    # (torch's words since round 22: its infer_size and mm errors name both sides' sizes)
    with pytest.raises(ValueError, match=r"size of tensor a \(3\) must match the size of tensor b \(4\) at "
                                         r"non-singleton dimension 1"):
        ml.tensor(np.ones((2, 3))) + ml.tensor(np.ones(4))
    with pytest.raises(ValueError, match=r"mat1 and mat2 shapes cannot be multiplied \(2x3 and 2x2\)"):
        ml.tensor(np.ones((2, 3))) @ ml.tensor(np.ones((2, 2)))
    with pytest.raises(ValueError, match=r"mat1 and mat2 shapes cannot be multiplied \(4x3 and 2x5\)"):
        ops.linear(ml.tensor(np.ones((4, 3))), ml.tensor(np.ones((5, 2))))
    with pytest.raises(ValueError, match=r"Sizes of tensors must match except in dimension 0. Expected size 3 but got "
                                         r"size 2 for tensor number 1 in the list."):  # (torch's, since round 23)
        ops.cat([ml.tensor(np.ones((2, 3))), ml.tensor(np.ones((3, 2)))])


def test_mismatched_dtypes_name_both_dtypes():
    """torch's words and class (RuntimeError); still a TypeError too, as minilora raised before."""
    for error in (RuntimeError, TypeError):
        with pytest.raises(error, match="expected m1 and m2 to have the same dtype, but got: float != double"):
            ml.tensor(np.ones((2, 3)), dtype=ml.float32) @ ml.tensor(np.ones((3, 2)))
        with pytest.raises(error, match="expected m1 and m2 to have the same dtype, but got: double != float"):
            ops.linear(ml.tensor(np.ones((1, 3))), ml.tensor(np.ones((2, 3)), dtype=ml.float32))


# ---- a composite model against PyTorch ---------------------------------------------------------------
def test_mlp_softmax_cross_entropy_matches_torch(rng):
    """Two-layer MLP, softmax-weighted features and cross-entropy: loss and every gradient."""
    torch = pytest.importorskip("torch")
    x_np, w1_np, b1_np, w2_np = (rng.standard_normal(s) for s in [(6, 4), (8, 4), (8,), (5, 8)])
    targets = np.array([0, 4, 2, -100, 1, 3])
    x, w1, b1, w2 = (ml.tensor(a, requires_grad=True) for a in (x_np, w1_np, b1_np, w2_np))
    h = ops.gelu(ops.linear(x, w1, b1))
    h = h * ops.softmax(h, axis=-1)
    loss = ops.cross_entropy(ops.linear(h, w2), targets)
    loss.backward()

    tx, tw1, tb1, tw2 = (torch.tensor(a, requires_grad=True) for a in (x_np, w1_np, b1_np, w2_np))
    th = torch.nn.functional.gelu(torch.nn.functional.linear(tx, tw1, tb1))
    th = th * torch.softmax(th, dim=-1)
    tloss = torch.nn.functional.cross_entropy(torch.nn.functional.linear(th, tw2), torch.tensor(targets))
    tloss.backward()

    assert_close(loss, tloss.detach().numpy(force=True), rtol=1e-12, name="loss")
    for name, ours, theirs in [("x", x, tx), ("w1", w1, tw1), ("b1", b1, tb1), ("w2", w2, tw2)]:
        assert_close(ours.grad, theirs.grad.numpy(force=True), rtol=1e-10, atol=1e-12, name=f"{name}.grad")


def test_rng_state_round_trip_replays_the_same_draws():
    """ml.get_rng_state / set_rng_state (torch.get_rng_state): gradient checkpointing replays dropout with it."""
    ml.manual_seed(11)
    state = ml.get_rng_state()
    first = ml.randn(4, dtype=ml.float64).numpy(force=True)
    ml.set_rng_state(state)
    again = ml.randn(4, dtype=ml.float64).numpy(force=True)
    np.testing.assert_array_equal(again, first)
    assert not np.array_equal(ml.randn(4, dtype=ml.float64).numpy(force=True), first)  # the state moved on
