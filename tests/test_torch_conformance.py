"""Core Tensor semantics behave as torch's (issue 12, part A): ``.grad``/``.data``, in-place ops,
views and version counters, ``__setitem__``, dtypes and type promotion, ``.to`` and devices, grad modes.

Each case is ONE snippet written the way a torch user writes it, run twice: with ``lib = torch`` and
with ``lib = minilora``. What it returns (tensors, numbers, dtypes, lists of them) must agree: values
(float64 cases to 1e-12), dtypes by name, shapes. Where torch raises, minilora must raise the same
exception type (``expect_error`` cases). Cases where minilora knowingly differs are tested on their
own at the end, each with the reason.
"""
import numpy as np
import pytest

import background_runs

torch = pytest.importorskip("torch")

import minilora as ml  # noqa: E402
from minilora.testing import grad_check  # noqa: E402

RNG = np.random.default_rng(7)
A = RNG.standard_normal((3, 4))
B = RNG.standard_normal((3, 4))
V = RNG.standard_normal(4)


def t(lib, array, grad=False, dtype=None):
    """A ``lib`` tensor holding a copy of ``array`` (float64 unless ``dtype``)."""
    dtype = getattr(lib, dtype or "float64")
    return lib.tensor(np.array(array), dtype=dtype, requires_grad=grad)


def _plain(value):
    """What a snippet returned, as comparable Python/NumPy values (dtypes by name)."""
    if isinstance(value, (torch.Tensor, ml.Tensor)):  # (torch's .numpy(force=True) refuses bfloat16: from_torch)
        array = ml.dtypes.from_torch(value) if isinstance(value, torch.Tensor) else value.numpy(force=True)
        return ("tensor", str(value.dtype).removeprefix("torch."), array)
    if isinstance(value, torch.dtype):
        return ("dtype", str(value).removeprefix("torch."))
    if isinstance(value, np.dtype):
        return ("dtype", str(value))
    if isinstance(value, dict):  # a state_dict, hooks' records: keys in order, values compared
        return [("key", k, _plain(v)) for k, v in value.items()]
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    return value


def _assert_same(theirs, ours, where=""):
    if isinstance(theirs, list):
        assert isinstance(ours, list) and len(ours) == len(theirs), f"{where}: {ours} vs {theirs}"
        for i, (a, b) in enumerate(zip(theirs, ours)):
            _assert_same(a, b, f"{where}[{i}]")
    elif isinstance(theirs, tuple) and theirs and theirs[0] == "tensor":
        assert isinstance(ours, tuple) and ours[0] == "tensor", f"{where}: got {ours!r}"
        assert ours[1] == theirs[1], f"{where}: dtype {ours[1]}, torch {theirs[1]}"
        assert ours[2].shape == theirs[2].shape, f"{where}: shape {ours[2].shape}, torch {theirs[2].shape}"
        np.testing.assert_allclose(ours[2].astype(np.float64) if ours[1] == "bfloat16" else ours[2],
                                   theirs[2].astype(np.float64) if theirs[1] == "bfloat16" else theirs[2],
                                   rtol=1e-12, atol=1e-12, err_msg=where)
    else:
        assert ours == theirs, f"{where}: {ours!r}, torch {theirs!r}"


def run_both(snippet):
    return _plain(snippet(torch)), _plain(snippet(ml))


def check(snippet):
    theirs, ours = run_both(snippet)
    _assert_same(theirs, ours, snippet.__name__)


def expect_error(snippet):
    """torch raises: minilora raises the same exception type."""
    with pytest.raises(Exception) as theirs:
        snippet(torch)
    with pytest.raises(theirs.type):
        snippet(ml)


# ---- .grad and .data are Tensors ------------------------------------------------------------------
def test_grad_and_data_are_tensors_with_torch_methods():
    def snippet(lib):
        p = lib.nn.Parameter(t(lib, A))
        (p * p).sum().backward()
        norm = p.grad.norm()
        halved = p.grad.mul_(0.5)
        data = p.data
        return [p.grad, norm, halved is p.grad, data, data.requires_grad, data.is_leaf,
                p.grad.requires_grad, type(p.grad).__name__ == "Tensor"]
    check(snippet)


def test_grad_zero_and_set_and_none():
    def snippet(lib):
        p = lib.nn.Parameter(t(lib, A))
        (2 * p).sum().backward()
        p.grad.zero_()
        (3 * p).sum().backward()  # accumulates into the zeroed gradient
        after = p.grad.clone()
        p.grad = None
        (p * p).sum().backward()
        replaced = p.grad.clone()
        p.grad = t(lib, B)
        return [after, replaced, p.grad]
    check(snippet)


def test_grad_assignment_checks():
    def not_a_tensor(lib):
        p = lib.nn.Parameter(t(lib, A))
        p.grad = np.ones((3, 4))
    expect_error(not_a_tensor)

    def wrong_shape(lib):
        p = lib.nn.Parameter(t(lib, A))
        p.grad = t(lib, V)
    expect_error(wrong_shape)

    def wrong_dtype(lib):
        p = lib.nn.Parameter(t(lib, A))
        p.grad = t(lib, A, dtype="float32")
    expect_error(wrong_dtype)


def test_data_shares_storage_outside_autograd():
    def snippet(lib):
        p = lib.nn.Parameter(t(lib, A))
        y = p * p  # saves p; writing through .data is invisible to autograd, as in torch
        p.data.mul_(2)
        p.data[0, 0] = 10.0
        y.sum().backward()
        return [p, p.grad, p._version]
    check(snippet)


def test_data_normal_and_nn_init_on_data():
    ml.manual_seed(0)
    p = ml.nn.Parameter(ml.zeros(2000, 50))
    p.data.normal_(0, 0.02)
    assert abs(p.numpy(force=True).std() - 0.02) < 1e-3 and abs(p.numpy(force=True).mean()) < 1e-3
    q = ml.nn.Parameter(ml.zeros(3, 4))
    ml.nn.init.normal_(q.data)
    assert q.numpy(force=True).std() > 0.1 and not q.grad and q.requires_grad
    p.data.uniform_(-1, 3)
    assert p.numpy(force=True).min() >= -1 and p.numpy(force=True).max() < 3 and abs(p.numpy(force=True).mean() - 1) < 0.05


def test_array_protocol():
    x = ml.tensor(A)
    assert np.asarray(x) is x._array and np.asarray(x, dtype=np.float32).dtype == np.float32
    np.testing.assert_array_equal(np.exp(x), np.exp(A))  # NumPy functions take tensors
    assert isinstance(A + x, ml.Tensor)  # array + tensor: the tensor's operator, as with torch


def test_data_setter():
    def snippet(lib):
        p = lib.nn.Parameter(t(lib, A))
        p.data = t(lib, B)
        return [p, p.requires_grad, p.is_leaf]
    check(snippet)


# ---- in-place operators and methods ---------------------------------------------------------------
def test_augmented_assignment_is_in_place():
    def snippet(lib):
        x = t(lib, A)
        same = x
        x += t(lib, B)
        x -= 1
        x *= t(lib, V)
        x /= 2
        x **= 2
        return [x, same is x, x._version]
    check(snippet)


def test_floor_div_mod_and_logical_augmented_assignment_are_in_place():
    """``//=``, ``%=``, ``&=``, ``|=``, ``^=`` write into the tensor (and so into a view's base);
    without them Python rebinds the name and the base silently keeps its old values (found by h17)."""
    def snippet(lib):
        x = lib.tensor([[7, -7, 5], [9, -3, 4]])
        row = x[0]
        row //= 2
        x[1] %= 4
        mask = lib.tensor([True, False, True])
        alias = mask
        mask &= lib.tensor([True, True, False])
        mask |= lib.tensor([False, True, False])
        mask ^= lib.tensor([True, False, False])
        f = t(lib, A)
        f //= 0.3
        f %= 0.7
        g = t(lib, B)
        g.floor_divide_(0.4)
        g.remainder_(0.5)
        return [x, alias, mask is alias, f, g]
    check(snippet)


def test_optimizer_style_update_under_no_grad():
    def snippet(lib):
        p = lib.nn.Parameter(t(lib, A))
        (p * p).sum().backward()
        with lib.no_grad():
            p -= 0.1 * p.grad
            p.add_(p.grad, alpha=-0.1)
        return [p, p.is_leaf, p.requires_grad]
    check(snippet)


@pytest.mark.parametrize("name", ["add_", "sub_", "mul_", "div_", "add_alpha", "sub_alpha", "zero_",
                                  "fill_", "fill_tensor", "copy_", "copy_broadcast", "clamp_",
                                  "masked_fill_", "pow_", "neg_", "div_floor"])
def test_in_place_methods_values(name):
    calls = {
        "add_": lambda x, lib: x.add_(t(lib, B)), "sub_": lambda x, lib: x.sub_(t(lib, V)),
        "mul_": lambda x, lib: x.mul_(3), "div_": lambda x, lib: x.div_(t(lib, B)),
        "add_alpha": lambda x, lib: x.add_(t(lib, B), alpha=2.5),
        "sub_alpha": lambda x, lib: x.sub_(other=t(lib, B), alpha=0.5),
        "zero_": lambda x, lib: x.zero_(), "fill_": lambda x, lib: x.fill_(1.5),
        "fill_tensor": lambda x, lib: x.fill_(t(lib, 2.0)),
        "copy_": lambda x, lib: x.copy_(t(lib, B)), "copy_broadcast": lambda x, lib: x.copy_(t(lib, V)),
        "clamp_": lambda x, lib: x.clamp_(-0.5, 0.5), "masked_fill_": lambda x, lib: x.masked_fill_(x > 0, -1.0),
        "pow_": lambda x, lib: x.pow_(2), "neg_": lambda x, lib: x.neg_(),
        "div_floor": lambda x, lib: x.div_(0.3, rounding_mode="floor"),
    }

    def snippet(lib):
        x = t(lib, A)
        out = calls[name](x, lib)
        return [x, out is x, x._version]
    snippet.__name__ = name
    check(snippet)


@pytest.mark.parametrize("name", ["add_", "mul_", "zero_", "copy_", "setitem", "iadd", "normal_"])
def test_in_place_on_a_leaf_that_requires_grad_raises(name):
    def snippet(lib):
        x = t(lib, A, grad=True)
        if name == "setitem":
            x[0] = 1.0
        elif name == "iadd":
            x += 1
        elif name == "normal_":
            x.normal_()
        elif name == "copy_":
            x.copy_(t(lib, B))
        else:
            getattr(x, name)(*([2.0] if name != "zero_" else []))
    expect_error(snippet)


def test_in_place_on_a_view_of_a_leaf_raises():
    def snippet(lib):
        x = t(lib, A, grad=True)
        x[0].mul_(2)
    expect_error(snippet)


def test_in_place_on_a_non_leaf_is_differentiable():
    def snippet(lib):
        x = t(lib, A, grad=True)
        w = t(lib, B, grad=True)
        y = x * 2
        y += 1
        y.mul_(w)  # needs y's old value for w's gradient
        y -= x
        y.sum().backward()
        return [y, x.grad, w.grad, y.is_leaf, y.grad_fn is not None]
    check(snippet)


def test_in_place_keeps_earlier_uses_on_the_old_values():
    def snippet(lib):
        x = t(lib, A, grad=True)
        y = x * 1
        z = y * 3  # recorded before y changes: its gradient must not go through the mul_
        y.mul_(2)
        (z.sum() + (y * y).sum()).backward()
        return [x.grad, z, y]
    check(snippet)


def test_in_place_on_a_leaf_without_grad_joins_the_graph():
    def snippet(lib):
        w = t(lib, V, grad=True)
        buf = lib.zeros(4, dtype=lib.float64)
        buf += w * w
        buf.sum().backward()
        return [w.grad, buf.is_leaf, buf.requires_grad]
    check(snippet)


def test_fill_and_zero_on_a_non_leaf_cut_the_gradient():
    def snippet(lib):
        x = t(lib, A, grad=True)
        y = x * 1
        y.fill_(2.0)
        z = x * 1
        z.zero_()
        (y * x + z).sum().backward()
        return [x.grad]
    check(snippet)


def test_copy_into_a_non_leaf_takes_the_source_gradient():
    def snippet(lib):
        x = t(lib, V, grad=True)
        buf = lib.zeros(3, 4, dtype=lib.float64)
        buf.copy_(x * 2)
        (buf * buf).sum().backward()
        return [buf, x.grad]
    check(snippet)


# ---- version counter: tensors saved for backward, then changed ------------------------------------
def test_saved_output_changed_in_place_raises_at_backward():
    def snippet(lib):
        x = t(lib, A, grad=True)
        y = x.exp()  # exp saves its output
        y.add_(1)
        y.sum().backward()
    expect_error(snippet)


def test_saved_input_changed_through_a_view_raises_at_backward():
    def snippet(lib):
        x = t(lib, A, grad=True)
        h = x * 1
        y = h * h  # saves h
        h.view(-1)[0] = 5.0  # a view shares the version counter
        y.sum().backward()
    expect_error(snippet)


def test_saved_input_changed_through_detach_raises_at_backward():
    def snippet(lib):
        x = t(lib, A, grad=True)
        y = x * x
        x.detach().zero_()
        y.sum().backward()
    expect_error(snippet)


def test_unsaved_operand_may_change():
    def snippet(lib):
        x = t(lib, A, grad=True)
        h = x * 1
        y = h + 2  # add saves nothing
        h.mul_(3)
        y.sum().backward()
        return [x.grad]
    check(snippet)


def test_version_counter_is_shared_by_views():
    def snippet(lib):
        x = t(lib, A)
        v = x.view(12)
        w = x[1:]
        v.add_(1)
        w.mul_(2)
        x.T[0, 0] = 3.0
        return [x._version, v._version, w._version, x.detach()._version]
    check(snippet)


# ---- weights changed in place between forward and backward (the GAN mistake) -----------------------
@pytest.mark.parametrize("change", ["sgd", "adamw", "load_state_dict", "init", "no_grad_add_"])
def test_weights_changed_after_forward_refuse_backward(change):
    """torch refuses a backward through a graph whose saved weights were since changed in place (by
    optimizer.step(), load_state_dict, nn.init or a no_grad update); minilora must not silently use
    the new weights."""
    def snippet(lib):
        lin = lib.nn.Linear(4, 3).double()
        x = t(lib, A, grad=True)
        loss = lin(x).pow(2).sum()
        if change in ("sgd", "adamw"):
            opt = (lib.optim.SGD(lin.parameters(), lr=0.1) if change == "sgd"
                   else lib.optim.AdamW(lin.parameters(), lr=0.1))
            (lin.weight * 2).sum().backward()
            opt.step()
        elif change == "load_state_dict":
            lin.load_state_dict({k: v * 2 for k, v in lin.state_dict().items()})
        elif change == "init":
            lib.nn.init.normal_(lin.weight)
        else:
            with lib.no_grad():
                lin.weight.add_(1.0)
        loss.backward()
    snippet.__name__ = change
    expect_error(snippet)


def test_optimizer_step_then_new_forward_is_fine():
    def snippet(lib):
        lin = lib.nn.Linear(4, 3).double()
        with lib.no_grad():
            lin.weight.copy_(t(lib, B[:, :4]))
            lin.bias.zero_()
        opt = lib.optim.SGD(lin.parameters(), lr=0.1)
        x = t(lib, A)
        for _ in range(3):
            opt.zero_grad()
            lin(x).pow(2).sum().backward()
            opt.step()
        return [lin.weight, lin.bias]
    check(snippet)


def test_gradient_accumulation_versions_and_values():
    """.grad accumulates in place across backward calls (its version counts each addition, as
    torch's), whether or not user code looked at it in between."""
    def snippet(lib):
        w = t(lib, V, grad=True)
        x = t(lib, A)
        out = []
        for step in range(3):
            ((x * w).tanh() * w).sum().backward()
            if step == 1:
                out.append(w.grad.clone())
        out += [w.grad, w.grad._version]
        return out
    check(snippet)


def test_a_grad_used_in_a_graph_then_accumulated_into_refuses_backward():
    def snippet(lib):
        w = t(lib, V, grad=True)
        (w * w).sum().backward()
        g = w.grad  # the user holds .grad and uses it in a new graph that saves it
        x = t(lib, V, grad=True)
        loss = (x * g).sum() + (w * 3).sum()
        (w * w).sum().backward()  # accumulates into w.grad in place: the saved g changed
        loss.backward()
    expect_error(snippet)


def test_nodes_before_an_inplace_change_keep_their_inputs_node():
    """A long chain where one tensor is changed in place midway: ops recorded before the change
    still differentiate through the node they saw (checked against torch)."""
    def snippet(lib):
        x = t(lib, A, grad=True)
        h = x.sin()  # sin saves its input, not h: h may change in place
        early = h * 2  # recorded before h changes
        h.mul_(3)
        h.add_(t(lib, B))
        late = h.exp()
        h2 = x * 1
        v = h2.view(12)
        h2.add_(1)  # changes v's base after v was made
        (early.sum() + late.sum() + v.pow(2).sum()).backward()
        return [x.grad, h, h._version, v._version]
    check(snippet)


def test_detach_in_place_keeps_earlier_consumers():
    def snippet(lib):
        x = t(lib, A, grad=True)
        h = x * 2
        y = h * 2.5  # recorded while h still had its node (and saves no h)
        h.detach_()
        z = h * 3  # h is now a leaf
        (y.sum() + z.sum()).backward()
        return [x.grad, h.requires_grad, h.grad_fn is None]
    check(snippet)


# ---- views share storage --------------------------------------------------------------------------
@pytest.mark.parametrize("make", ["view", "reshape", "slice", "int_index", "ellipsis", "transpose",
                                  "permute", "T", "squeeze", "unsqueeze", "detach", "data", "flatten",
                                  "t", "mT", "chunk", "split", "contiguous", "t_contiguous"])
def test_views_share_storage(make):
    views = {
        "view": lambda x: x.view(3, 4, 1), "reshape": lambda x: x.reshape(12),
        "slice": lambda x: x[1:, ::2], "int_index": lambda x: x[1], "ellipsis": lambda x: x[..., 0],
        "transpose": lambda x: x.transpose(0, 1), "permute": lambda x: x.permute(1, 0),
        "T": lambda x: x.T, "squeeze": lambda x: x.view(1, 3, 4).squeeze(0),
        "unsqueeze": lambda x: x.unsqueeze(1), "detach": lambda x: x.detach(), "data": lambda x: x.data,
        "flatten": lambda x: x.flatten(),
        "t": lambda x: x.t(), "mT": lambda x: x.mT, "chunk": lambda x: x.chunk(2, dim=1)[1],
        "split": lambda x: x.split(1)[2], "contiguous": lambda x: x.contiguous(),
        # x.t().contiguous() is a copy in torch: an in-place op on it must not reach x (found by h17)
        "t_contiguous": lambda x: x.t().contiguous(),
    }

    def snippet(lib):
        x = t(lib, A)
        v = views[make](x)
        v.mul_(-1)
        v.add_(1)
        return [x, v]
    snippet.__name__ = make
    check(snippet)


@pytest.mark.parametrize("case", ["contiguous", "t_same_shape", "t_flat", "sliced_cols", "sliced_rows",
                                  "expanded_flat", "expanded_unsqueeze", "permuted_merge", "empty_t",
                                  "view_as", "minus_one"])
def test_view_is_a_view_or_torchs_error(case):
    """x.view() never copies: where the strides forbid a view, torch raises (reshape copies instead)."""
    views = {
        "contiguous": lambda x: x.view(2, 6), "t_same_shape": lambda x: x.t().view(4, 3),
        "t_flat": lambda x: x.t().view(12), "sliced_cols": lambda x: x[:, :2].view(6),
        "sliced_rows": lambda x: x[1:].view(8), "expanded_flat": lambda x: x[0].expand(2, 4).view(8),
        "expanded_unsqueeze": lambda x: x[0].expand(2, 4).view(2, 4, 1),
        "permuted_merge": lambda x: x.view(3, 2, 2).permute(1, 0, 2).view(2, 6),
        "empty_t": lambda x: x[:0].t().view(0), "view_as": lambda x: x.t().view_as(x),
        "minus_one": lambda x: x.view(-1, 2),
    }

    def snippet(lib):
        x = t(lib, A)
        v = views[case](x)
        v.mul_(2)  # a view: x changes too
        return [x, v]
    snippet.__name__ = case
    try:
        snippet(torch)
    except RuntimeError:
        expect_error(snippet)
        return
    check(snippet)


@pytest.mark.parametrize("case", ["matmul", "broadcast_add", "broadcast_mul", "reshape", "cat", "expand",
                                  "permute", "linear"])
def test_shape_mismatches_raise_torchs_error_type(case):
    """torch raises RuntimeError for shapes that do not fit; so does minilora (a ShapeError, which is
    also a ValueError, as minilora's own code once expected)."""
    def snippet(lib):
        x, y = t(lib, A), t(lib, B)
        if case == "matmul":
            return x @ y
        if case == "broadcast_add":
            return x + t(lib, V[:3])
        if case == "broadcast_mul":
            return x * t(lib, A[:2])
        if case == "reshape":
            return x.reshape(5, 2)
        if case == "cat":
            return lib.cat([x, t(lib, V)[None, :3]])
        if case == "expand":
            return x.expand(4, 3)
        if case == "permute":
            return x.permute(0, 0)
        return lib.nn.functional.linear(x, t(lib, B.T))
    snippet.__name__ = case
    with pytest.raises(RuntimeError):
        snippet(torch)
    with pytest.raises(RuntimeError):
        snippet(ml)


def test_writing_into_an_expanded_tensor_raises():
    def snippet(lib):
        x = t(lib, V)
        x.expand(3, 4).add_(1)
    expect_error(snippet)


# ---- __setitem__ ----------------------------------------------------------------------------------
@pytest.mark.parametrize("case", ["int", "slice_scalar", "slice_tensor", "mask", "list_index",
                                  "broadcast_row", "ellipsis"])
def test_setitem_values(case):
    def snippet(lib):
        x = t(lib, A)
        if case == "int":
            x[0] = 1.0
        elif case == "slice_scalar":
            x[:, 1:] = -2
        elif case == "slice_tensor":
            x[:, 1:] = t(lib, B[:, 1:])
        elif case == "mask":
            x[x > 0] = 0.0
        elif case == "list_index":
            x[[0, 2]] = t(lib, V)
        elif case == "broadcast_row":
            x[1:] = t(lib, V)
        else:
            x[...] = 3
        return [x, x._version]
    snippet.__name__ = case
    check(snippet)


def test_labels_masking_as_in_a_data_collator():
    def snippet(lib):
        labels = lib.tensor([[5, 0, 7, 0], [0, 0, 3, 2]])
        pad = 0
        labels[labels == pad] = -100
        return [labels]
    check(snippet)


def test_setitem_gradients_as_index_put():
    def snippet(lib):
        x = t(lib, A, grad=True)
        v = t(lib, V[:3], grad=True)
        y = x * 1
        y[:, 2] = v  # gradient to v from the written column; zero for x there
        y[0] = 7.0
        (y * y).sum().backward()
        return [y, x.grad, v.grad]
    check(snippet)


def test_setitem_with_a_tensor_that_requires_grad_into_a_plain_tensor():
    def snippet(lib):
        w = t(lib, V, grad=True)
        out = lib.zeros(2, 4, dtype=lib.float64)
        out[1] = w * 3
        (out ** 2).sum().backward()
        return [out, w.grad, out.requires_grad]
    check(snippet)


def test_index_put_grad_check():
    x = ml.tensor(A, requires_grad=True)
    v = ml.tensor(V[:2], requires_grad=True)
    grad_check(lambda a, b: ml.ops.index_put(a * 1, (slice(1, 3), 1), b), x, v)
    grad_check(lambda a, b: ml.ops.index_put(a, ([0, 2], [1, 1]), b, accumulate=True), x, v)


# ---- dtypes and type promotion --------------------------------------------------------------------
DTYPES = ["bool", "uint8", "int32", "int64", "float16", "float32", "float64"]


def _operand(lib, kind, dtype):
    if kind == "dim":
        return lib.tensor(np.array([1, 2, 3]).astype(dtype), dtype=getattr(lib, dtype))
    if kind == "0d":
        return lib.tensor(np.array(1).astype(dtype), dtype=getattr(lib, dtype))
    return {"bool": True, "uint8": 3, "int32": 3, "int64": 3, "float16": 2.5, "float32": 2.5,
            "float64": 2.5}[dtype]  # a Python number of that kind


@pytest.mark.parametrize("left", DTYPES)
@pytest.mark.parametrize("right_kind", ["dim", "0d", "scalar"])
@pytest.mark.parametrize("op", ["add", "mul", "div", "lt"])
def test_type_promotion_matches_torch(left, right_kind, op):
    for right in DTYPES:
        def snippet(lib):
            a = _operand(lib, "dim", left)
            b = _operand(lib, right_kind, right)
            if op == "add":
                if left == right == "bool" or (left == "bool" and right_kind == "scalar" and right == "bool"):
                    return [lib.result_type(a, b)]
                return [a + b, b + a, lib.result_type(a, b)]
            if op == "mul":
                return [a * b, b * a]
            if op == "div":
                return [a / b, b / a] if right_kind != "scalar" or right != "bool" else [a / b]
            return [a < b, a == b]
        snippet.__name__ = f"{left} {op} {right_kind} {right}"
        check(snippet)


def test_python_float_does_not_promote_float32():
    def snippet(lib):
        x = lib.ones(3)
        return [x * 0.1, x + 1e-300, x / 3, 2.5 - x, x ** 2.0]
    check(snippet)


def test_integer_division_and_floor_division():
    def snippet(lib):
        i = lib.tensor([7, -7, 3])
        return [i / 2, i / i, i // 2, lib.div(i, 2, rounding_mode="trunc"),
                lib.div(i, 2, rounding_mode="floor"), i * 0.5, i + True]
    check(snippet)


def test_result_type_and_promote_types():
    def snippet(lib):
        f32, i64 = lib.ones(2), lib.tensor([1, 2])
        return [lib.result_type(f32, 1.0), lib.result_type(i64, 1.0), lib.result_type(i64, f32),
                lib.result_type(f32, lib.tensor(1.0, dtype=lib.float64)),
                lib.promote_types(lib.int64, lib.float16), lib.promote_types(lib.uint8, lib.int8)]
    check(snippet)


def test_dtype_objects_and_names():
    def snippet(lib):
        x = lib.ones(2, dtype=lib.float64)
        return [x.dtype == lib.float64, x.dtype == lib.double, lib.long == lib.int64,
                lib.float == lib.float32, lib.half == lib.float16, lib.int == lib.int32,
                lib.tensor([True]).dtype == lib.bool, x.dtype != lib.float32,
                lib.zeros(2, dtype=lib.long).dtype, lib.ones(2).to(lib.int64).dtype,
                lib.tensor([1.5], dtype=lib.float16).dtype, x.is_floating_point(),
                lib.tensor([1]).is_floating_point(), lib.get_default_dtype()]
    check(snippet)


def test_dtype_conversion_methods():
    def snippet(lib):
        x = t(lib, [[-1.7, 0.0, 2.5]])
        return [x.long(), x.int(), x.bool(), x.float(), x.half(), x.double(), x.type_as(lib.tensor([1])),
                x.element_size(), x.float().element_size(), x.nbytes]
    check(snippet)


def test_bfloat16_is_a_dtype_with_ml_dtypes():
    """With ml_dtypes (in the [test] extra) bfloat16 works as torch's: see tests/test_bf16_tensor.py."""
    def snippet(lib):
        x = lib.ones(2, dtype=lib.bfloat16)
        return [x, lib.ones(2).to(lib.bfloat16), lib.tensor([1.5], dtype=lib.bfloat16), lib.ones(2).bfloat16(),
                x.dtype, x.element_size(), x.is_floating_point()]
    check(snippet)


def run_without_ml_dtypes(body):
    """Run ``body`` (Python source that prints "ok" at the end) in a fresh interpreter where
    ``import ml_dtypes`` raises ImportError, as on a machine without it; fail with its stderr."""
    import sys
    script = 'import sys\nsys.modules["ml_dtypes"] = None  # `import ml_dtypes` now raises ImportError\n' + body
    done = background_runs.run_process([sys.executable, "-c", script], timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


def test_bfloat16_without_ml_dtypes_is_a_clear_error():
    """Without ml_dtypes (blocked from importing in a fresh interpreter) every way to ask for bfloat16
    raises a TypeError that names the problem and the fix, instead of computing in another dtype."""
    run_without_ml_dtypes("""
import minilora as ml
assert not ml.dtypes.HAS_BFLOAT16
for make in (lambda: ml.ones(2, dtype=ml.bfloat16), lambda: ml.ones(2).to(ml.bfloat16),
             lambda: ml.tensor([1.0], dtype=ml.bfloat16), lambda: ml.ones(2).bfloat16(),
             lambda: ml.nn.Linear(2, 2).bfloat16(), lambda: ml.set_default_dtype(ml.bfloat16)):
    try:
        make()
    except TypeError as exc:
        assert "bfloat16" in str(exc) and "ml_dtypes" in str(exc) and "float32" in str(exc), exc
    else:
        raise AssertionError("no error")
print("ok")
""")


def test_tensor_constructors_infer_dtypes_as_torch():
    def snippet(lib):
        return [lib.tensor([1, 2]), lib.tensor([1.0, 2]), lib.tensor([True, False]), lib.tensor(3),
                lib.tensor(2.5), lib.Tensor([1, 2]), lib.Tensor(np.array([1, 2])), lib.Tensor(2, 3).shape,
                lib.Tensor().shape, lib.tensor(np.arange(3, dtype=np.int32)),
                lib.tensor(np.ones(2, dtype=np.float64)), lib.tensor([1, 2], dtype=lib.float64)]
    check(snippet)


def test_as_tensor_shares_what_it_can():
    """torch.as_tensor: a NumPy array of the same dtype is shared, a dtype change copies, a tensor comes
    back as itself (or converted, with autograd following), numbers infer the dtype as tensor() does."""
    def snippet(lib):
        a = np.ones(3)
        shared, converted = lib.as_tensor(a), lib.as_tensor(a, dtype=lib.float32)
        a[0] = 5
        x = lib.tensor([1.0, 2.0], requires_grad=True)
        same, cast = lib.as_tensor(x), lib.as_tensor(x, dtype=lib.float64)
        (cast * cast).sum().backward()
        return [shared, converted, same is x, x.grad, lib.as_tensor([1.0, 2]), lib.as_tensor(3),
                lib.as_tensor([[True]]), lib.as_tensor(a[::2])]
    check(snippet)


def test_tensor_copies_its_data_and_legacy_constructor_rejects_a_float():
    array = np.ones(3)
    x = ml.tensor(array)
    array[0] = 5
    assert x[0].item() == 1.0  # torch.tensor copies; torch.from_numpy shares
    y = ml.from_numpy(array)
    array[1] = 7
    assert y[1].item() == 7.0 and y.dtype == ml.float64 and y.device.type == "cpu"
    with pytest.raises(TypeError):  # torch.from_numpy takes a NumPy array only
        ml.from_numpy([1.0, 2.0])

    def snippet(lib):
        return lib.Tensor(3.0)
    expect_error(snippet)


@pytest.mark.parametrize("args", [(5,), (2, 7), (0, 1, 0.25), (1.5,), (0, 10, 3), (5, 0, -1),
                                  (0.0, 1.0, 0.1), (-3, 3.5)])
def test_arange_dtype_and_values(args):
    def snippet(lib):
        return [lib.arange(*args), lib.arange(*args, dtype=lib.float64)]
    snippet.__name__ = f"arange{args}"
    check(snippet)


def test_arange_keywords():
    def snippet(lib):
        return [lib.arange(start=1, end=4), lib.arange(0, 3, step=0.5, dtype=lib.float64)]
    check(snippet)


# ---- .to and devices ------------------------------------------------------------------------------
def test_to_overloads():
    def snippet(lib):
        x = t(lib, A, grad=True)
        a = x.to(lib.float32)
        b = x.to("cpu")
        c = x.to("cpu", lib.float32)
        d = x.to(lib.tensor([1]))
        e = x.to(device="cpu", dtype=lib.float16)
        f = x.to(lib.float64)
        g = x.to(lib.float64, copy=True)
        (a.sum() + c.sum() + g.sum()).backward()
        return [a, b is x, c, d, e, f is x, g is x, x.grad, a.requires_grad, d.requires_grad]
    check(snippet)


def test_device_attributes():
    def snippet(lib):
        x = lib.ones(2)
        # (a device never equals a string in torch -- compare .type -- so minilora's does not either)
        return [x.device.type, x.is_cuda, x.device == "cpu", lib.device("cpu") == lib.device("cpu"),
                str(x.device), x.device == x.to("cpu").device, lib.device("cpu").type,
                x.device.type == "cpu"]
    check(snippet)


def test_cuda_when_there_is_no_gpu():
    assert isinstance(ml.cuda.is_available(), bool)
    if not ml.cuda.is_available():
        assert ml.cuda.device_count() == 0
        with pytest.raises(RuntimeError, match="cuda"):
            ml.ones(2).to("cuda")
        with pytest.raises(RuntimeError, match="cuda"):
            ml.ones(2).cuda()


# ---- grad modes -----------------------------------------------------------------------------------
def test_no_grad_as_decorator_bare_and_called():
    def snippet(lib):
        x = t(lib, V, grad=True)

        @lib.no_grad()
        def called(v):
            return v * 2

        @lib.no_grad
        def bare(v):
            return v * 2

        @lib.enable_grad()
        def enabled(v):
            return v * 2

        with lib.no_grad():
            inside = enabled(x)
        return [called(x).requires_grad, bare(x).requires_grad, lib.is_grad_enabled(),
                inside.requires_grad, bare.__name__]
    check(snippet)


def test_inference_mode():
    def snippet(lib):
        x = t(lib, V, grad=True)
        with lib.inference_mode():
            y = x * 2
            on = lib.is_inference_mode_enabled()
        with lib.inference_mode(False):
            z = x * 2

        @lib.inference_mode()
        def f(v):
            return v * 2
        return [y.requires_grad, on, z.requires_grad, f(x).requires_grad, lib.is_inference_mode_enabled()]
    check(snippet)


def test_set_grad_enabled():
    def snippet(lib):
        x = t(lib, V, grad=True)
        with lib.set_grad_enabled(False):
            y = x * 2
        return [y.requires_grad, lib.is_grad_enabled()]
    check(snippet)


# ---- keyword names as torch -----------------------------------------------------------------------
def test_keyword_names_of_arithmetic():
    def snippet(lib):
        x, y = t(lib, A), t(lib, B)
        return [lib.add(input=x, other=y, alpha=2), lib.sub(x, other=y, alpha=0.5), lib.mul(input=x, other=y),
                lib.div(x, other=y), lib.div(x, y, rounding_mode="trunc"), lib.pow(input=x, exponent=2),
                x.add(other=y, alpha=3), x.sub(y, alpha=2), x.mul(other=2), x.div(other=y), x.pow(exponent=3),
                lib.neg(input=x), lib.exp(input=x), lib.sqrt(input=x.abs()), lib.sigmoid(input=x),
                lib.tanh(input=x), lib.relu(input=x), x.neg(), lib.abs(input=x)]
    check(snippet)


def test_shape_ops_as_torch_users_call_them():
    def snippet(lib):
        x = t(lib, A, grad=True)
        outs = [lib.reshape(x, (4, 3)), x.reshape(2, 6), x.reshape((12,)), x.view(-1, 2), lib.permute(x, (1, 0)),
                x.permute(1, 0), lib.transpose(x, dim0=0, dim1=1), x.transpose(1, 0), x.expand(2, 3, 4),
                x.unsqueeze(0).expand(2, -1, -1), x[None, :, 1:3], x[..., ::2], x[[0, 2]], x[x > 0]]
        sum(o.sum() * (i + 1) for i, o in enumerate(outs)).backward()
        return outs + [x.grad, lib.floor_divide(lib.tensor([7, -7]), 2)]
    check(snippet)


def test_arithmetic_gradients_with_alpha_and_promotion():
    def snippet(lib):
        x = t(lib, A, grad=True)
        y = t(lib, B, dtype="float32", grad=True)
        i = lib.tensor([[1, 2, 3, 4]])
        out = lib.add(x, y, alpha=-1.5) * i / 3 + lib.sub(y, x, alpha=2)
        out.sum().backward()
        return [out, x.grad, y.grad]
    check(snippet)


# ---- misc Tensor protocol -------------------------------------------------------------------------
def test_len_iter_bool_index():
    def snippet(lib):
        x = t(lib, A)
        rows = [r for r in x]
        return [len(x), rows, bool(lib.tensor([1.0])), [1, 2, 3][lib.tensor(1)], int(lib.tensor([4])),
                float(lib.tensor(2.5))]
    check(snippet)
    expect_error(lambda lib: bool(lib.ones(2)))
    expect_error(lambda lib: lib.ones(2).item())
    expect_error(lambda lib: len(lib.tensor(1.0)))


def test_requires_grad_rules():
    expect_error(lambda lib: lib.tensor([1, 2], requires_grad=True))
    expect_error(lambda lib: (t(lib, V, grad=True) * 2).requires_grad_(False))
    expect_error(lambda lib: lib.tensor([1.0]).backward())

    def snippet(lib):
        x = t(lib, V, grad=True)
        y = x * 2
        y.retain_grad()
        (y * y).sum().backward()
        return [y.grad, y.retains_grad, x.retains_grad]
    check(snippet)


def test_backward_options():
    def snippet(lib):
        x = t(lib, V, grad=True)
        y = x * x
        y.backward(gradient=t(lib, [1.0, 2.0, 3.0, 4.0]), retain_graph=True)
        y.sum().backward()
        return [x.grad]
    check(snippet)
    grads = []  # (angle of a complex tensor under create_graph=True: recorded as torch's since round 16, was refused)
    for lib in (torch, ml):
        x = lib.tensor([[1.0, 2.0], [3.0, 5.0]], requires_grad=True)
        lib.angle(x * (1 + 1j)).sum().backward(create_graph=True)  # (after the create_graph warning, once per process)
        grads.append((x.grad.detach().numpy().tolist(), x.grad.requires_grad))
    assert grads[1] == grads[0]


def test_gradients_are_owned_by_their_leaf():
    """torch gives each leaf its own gradient tensor; an in-place change of one leaves the other."""
    def snippet(lib):
        a, b = t(lib, V, grad=True), t(lib, V, grad=True)
        (a + b).sum().backward()
        a.grad.mul_(3)
        b.grad.zero_()
        (a * 2).sum().backward()
        return [a.grad, b.grad, a.grad is b.grad]
    check(snippet)


# ---- in-place through views of tensors in the graph (torch's CopySlices) --------------------------
@pytest.mark.parametrize("case", ["slice_iadd", "row_mul_tensor", "overlapping_sibling", "view_setitem",
                                  "transposed_rows", "plain_buffer", "base_changed_after_view",
                                  "view_of_view"])
def test_in_place_through_a_view_of_a_graph_tensor(case):
    def snippet(lib):
        x = t(lib, A, grad=True)
        w = t(lib, V, grad=True)
        y = x * 2
        out = y
        if case == "slice_iadd":
            y[:, 0] += 1  # Python: tmp = y[:, 0]; tmp += 1; y[:, 0] = tmp
        elif case == "row_mul_tensor":
            y[1].mul_(w)
        elif case == "overlapping_sibling":
            column = y[:, 1]  # made before the write below changes one of its elements
            y[0].mul_(3)
            out = column
        elif case == "view_setitem":
            y.view(12)[3:5] = 0.0
        elif case == "transposed_rows":
            y.T[0].add_(y.T[1])
        elif case == "plain_buffer":
            out = lib.zeros(3, 4, dtype=lib.float64)
            out[1].add_(w)
        elif case == "base_changed_after_view":
            out = y[0]
            y += w
        else:
            y[1:][0, 1:3].sub_(w[:2], alpha=2)
        (out * out).sum().backward()
        return [out, y, x.grad, w.grad]
    snippet.__name__ = case
    check(snippet)


def test_in_place_through_a_view_still_checks_saved_values():
    def snippet(lib):
        x = t(lib, A, grad=True)
        y = x.exp()  # saves its output
        y[0] += 1
        y.sum().backward()
    expect_error(snippet)


# ---- where minilora knowingly differs --------------------------------------------------------------
def test_numpy_of_a_tensor_that_requires_grad_is_allowed():
    """torch refuses ``.numpy(force=True)`` on a tensor that requires grad; minilora hands out the values
    (what comes back is detached by nature, so no number can be wrong)."""
    x = ml.tensor(V, requires_grad=True)
    np.testing.assert_array_equal(x.numpy(force=True), V)


def test_torch_takes_a_minilora_tensor_the_ways_its_users_write_it():
    """``torch.tensor(t)`` (a copy), ``torch.as_tensor(t)``/``torch.asarray(t)``/``torch.from_dlpack(t)``
    (shared, through DLPack); a tensor that requires grad is refused by DLPack as torch refuses its own."""
    torch = pytest.importorskip("torch")
    t = ml.tensor([[1.0, 2.0], [3.0, 4.0]])
    copied, shared = torch.tensor(t), torch.from_dlpack(t)
    for made in (copied, shared, torch.as_tensor(t), torch.asarray(t)):
        assert made.dtype == torch.float32 and made.tolist() == [[1.0, 2.0], [3.0, 4.0]]
    t.add_(1)
    assert shared.tolist() == [[2.0, 3.0], [4.0, 5.0]] and copied.tolist() == [[1.0, 2.0], [3.0, 4.0]]
    assert torch.tensor(ml.arange(5)).dtype == torch.int64
    with pytest.raises(BufferError, match="require gradient"):  # (torch's own tensor raises BufferError)
        torch.from_dlpack(ml.ones(2, requires_grad=True))
    if ml.dtypes.HAS_BFLOAT16:
        with pytest.raises(BufferError, match="to_torch"):
            torch.from_dlpack(ml.ones(2, dtype=ml.bfloat16))


def test_format_spec_on_a_tensor_as_torch():
    """``f"{loss:.4f}"`` -- in every training-loop tutorial -- formats a 0-d tensor's value; a tensor
    with dimensions takes only the empty spec."""
    def snippet(lib):
        loss = lib.tensor(2.345678)
        return [f"{loss:.4f}", f"{lib.tensor(3):d}", f"{lib.tensor(7):>4}", f"{loss}" == str(loss),
                format(lib.tensor(1.5, dtype=lib.float64), "e")]
    check(snippet)
    for lib in (ml, pytest.importorskip("torch")):
        with pytest.raises(TypeError):
            f"{lib.tensor([1.0, 2.0]):.2f}"
