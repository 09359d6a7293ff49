"""Double backward (``create_graph=True``): which gradients torch hands on as they are, which it records, which
are constants, round 17.

With create_graph=True torch's engine hands an input the incoming gradient itself where the op's formula is
``grad`` (derivatives.yaml's ``self: grad``; ``unsqueeze_to`` with nothing to put back; ``repeat_backward`` with
one copy of each dim): the input's gradient *is* the cotangent (no grad_fn, the cotangent's requires_grad). Where
the formula is an op on the gradient (a scatter into zeros, rot90, ``at::sum_to`` to a 0-d shape) the gradient has
a node of its own. minilora recorded nodes for squeeze of no size-1 dim, repeat/tile by ones, cumsum along a dim
of one element, prod of a 0-d tensor, put with accumulate, addr with beta = 1 and index_add / scatter_add of a 0-d
tensor (its reshapes, the fused multiply-add's two paths), a node where repeat/tile by 0 give constant zeros and
prod of an empty tensor the reverse; and it handed the cotangent on where torch records: max/min/median/nanmedian/
mode/kthvalue/sort/topk/cummax/cummin along a dim of a 0-d tensor (a clone: torch scatters the gradient), rot90 by
a multiple of 4 and expand/broadcast_to of a 0-d tensor. Found by sweeping op_db's autograd OpInfos (all samples,
float64) with create_graph=True and a cotangent that requires grad.

Each comparison runs the same call on torch and minilora: the gradient's values, whether it is the cotangent,
requires_grad and grad_fn presence; for the 0-d selections also the forward node's name (a clone's before).
"""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

import minilora as ml  # noqa: E402
from test_gradgrad_r16 import refusals  # noqa: E402  (what each library raises)


def structure(lib, call, shape, seed=0):
    """The create_graph=True gradient of ``call(lib, x)`` in ``x`` for a cotangent that requires grad: (is it the
    cotangent, requires_grad, has a grad_fn, values, and where it requires grad the derivatives of sum(w * gradient)
    in x and in the cotangent: the double-vjp through the recorded backward)."""
    rng = np.random.default_rng(seed)
    x = lib.tensor(rng.standard_normal(shape), dtype=lib.float64, requires_grad=True)
    y = call(lib, x)
    v = lib.tensor(rng.standard_normal(tuple(y.shape)), dtype=lib.float64, requires_grad=True)
    g, = lib.autograd.grad(y, x, v, create_graph=True)
    seconds = None
    if g.requires_grad:
        w = lib.tensor(rng.standard_normal(shape), dtype=lib.float64)
        seconds = [None if s is None else np.array(s.tolist())
                   for s in lib.autograd.grad((g * w).sum(), [x, v], allow_unused=True)]
    return g is v, g.requires_grad, g.grad_fn is not None, np.array(g.tolist()), seconds


def assert_structure_as_torch(call, shape):
    *mine, my_values, my_seconds = structure(ml, call, shape)
    *theirs, their_values, their_seconds = structure(torch, call, shape)
    assert mine == theirs, f"(is the cotangent, requires_grad, has grad_fn): {mine}, torch's {theirs}"
    np.testing.assert_allclose(my_values, their_values, rtol=1e-12, atol=1e-15)
    for mine, theirs in zip(my_seconds or (), their_seconds or ()):
        np.testing.assert_allclose(0 if mine is None else mine, 0 if theirs is None else theirs, rtol=1e-12,
                                   atol=1e-15)


def ones(lib, *shape):
    return lib.ones(*shape, dtype=lib.float64)


HANDED_ON = {  # torch: the cotangent itself
    "squeeze()": (lambda lib, x: x.squeeze(), (2, 3)),
    "squeeze(0)": (lambda lib, x: x.squeeze(0), (2, 3)),
    "squeeze(dim=(0, 1))": (lambda lib, x: x.squeeze(dim=(0, 1)), (2, 3)),
    "torch.squeeze 0-d": (lambda lib, x: lib.squeeze(x, -1), ()),
    "squeeze_copy": (lambda lib, x: lib.squeeze_copy(x, 1), (2, 3)),
    "repeat(1, 1)": (lambda lib, x: x.repeat(1, 1), (2, 3)),
    "repeat(()) 0-d": (lambda lib, x: x.repeat(()), ()),
    "tile((1,))": (lambda lib, x: x.tile((1,)), (2, 3)),
    "torch.tile(dims=)": (lambda lib, x: lib.tile(x, dims=(1, 1)), (2, 3)),
    "cumsum along one element": (lambda lib, x: x.cumsum(0), (1, 3)),
    "torch.cumsum(dim=1) of (2, 1)": (lambda lib, x: lib.cumsum(x, dim=1), (2, 1)),
    "cumsum (1,)": (lambda lib, x: x.cumsum(-1), (1,)),
    "prod() 0-d": (lambda lib, x: x.prod(), ()),
    "put accumulate": (lambda lib, x: x.put(lib.tensor([0, 0]), ones(lib, 2), accumulate=True), (2, 3)),
    "torch.put positional": (lambda lib, x: lib.put(x, lib.tensor([1]), ones(lib, 1), True), (3,)),
    "addr": (lambda lib, x: x.addr(ones(lib, 2), ones(lib, 3)), (2, 3)),
    "torch.addr alpha=2": (lambda lib, x: lib.addr(x, ones(lib, 2), ones(lib, 3), alpha=2), (2, 3)),
    "index_add 0-d": (lambda lib, x: x.index_add(0, lib.tensor([0]), lib.tensor(2.0, dtype=lib.float64), alpha=-1),
                      ()),
    "scatter_add 0-d": (lambda lib, x: lib.scatter_add(x, 0, lib.tensor(0), lib.tensor(2.0, dtype=lib.float64)), ()),
}
RECORDED = {  # torch: a node of its own
    "squeeze(1) of a size-1 dim": (lambda lib, x: x.squeeze(1), (2, 1)),
    "repeat(1, 1, 1)": (lambda lib, x: x.repeat(1, 1, 1), (2, 3)),
    "tile((2, 1))": (lambda lib, x: x.tile((2, 1)), (2, 3)),
    "cumsum": (lambda lib, x: x.cumsum(1), (2, 3)),
    "put": (lambda lib, x: x.put(lib.tensor([0]), ones(lib, 1)), (2, 3)),
    "addr beta=2": (lambda lib, x: x.addr(ones(lib, 2), ones(lib, 3), beta=2), (2, 3)),
    "addr broadcast input": (lambda lib, x: lib.addr(x, ones(lib, 2), ones(lib, 3)), (3,)),
    "rot90(0)": (lambda lib, x: x.rot90(0), (2, 3)),
    "torch.rot90(k=4, dims=)": (lambda lib, x: lib.rot90(x, k=4, dims=(1, 0)), (2, 3)),
    "rot90(2)": (lambda lib, x: x.rot90(2), (2, 3)),
    "expand 0-d": (lambda lib, x: x.expand(()), ()),
    "broadcast_to 0-d": (lambda lib, x: lib.broadcast_to(x, ()), ()),
    "expand_as 0-d": (lambda lib, x: x.expand_as(lib.tensor(1.0)), ()),
    "expand (2, 3)": (lambda lib, x: x.expand(2, 3), (1, 3)),
    "max(0) 0-d": (lambda lib, x: x.max(0)[0], ()),
    "torch.min(dim=) 0-d": (lambda lib, x: lib.min(x, dim=0).values, ()),
    "median(0) 0-d": (lambda lib, x: x.median(0)[0], ()),
    "nanmedian(0) 0-d": (lambda lib, x: x.nanmedian(0)[0], ()),
    "mode 0-d": (lambda lib, x: lib.mode(x, 0)[0], ()),
    "kthvalue 0-d": (lambda lib, x: x.kthvalue(1, dim=0)[0], ()),
    "sort 0-d": (lambda lib, x: x.sort(0)[0], ()),
    "sort(stable=True) 0-d": (lambda lib, x: lib.sort(x, dim=0, stable=True)[0], ()),
    "topk 0-d": (lambda lib, x: x.topk(1)[0], ()),
    "cummax 0-d": (lambda lib, x: x.cummax(0)[0], ()),
    "torch.cummin(dim=) 0-d": (lambda lib, x: lib.cummin(x, dim=0).values, ()),
}


@pytest.mark.parametrize("name", list(HANDED_ON) + list(RECORDED))
def test_gradient_is_the_cotangent_or_a_node_as_torch(name):
    call, shape = {**HANDED_ON, **RECORDED}[name]
    assert_structure_as_torch(call, shape)
    assert structure(ml, call, shape)[0] == (name in HANDED_ON)  # (the others: neighbours that were right too)


@pytest.mark.parametrize("call", [lambda lib, x: x.repeat(0, 1), lambda lib, x: lib.tile(x, (2, 0))],
                         ids=["repeat(0, 1)", "tile((2, 0))"])
def test_no_copy_gives_constant_zeros_as_torch(call):
    """torch's repeat_backward: zeros of the input's shape, a constant (requires_grad False under create_graph)."""
    assert_structure_as_torch(call, (2, 3))
    assert structure(ml, call, (2, 3))[1:3] == (False, False)


@pytest.mark.parametrize("dim", [None, 0])
def test_prod_of_an_empty_tensor_is_in_the_graph_as_torch(dim):
    """torch's prod_backward has no zero to treat: grad * (result / input), empty but recorded."""
    answers = []
    for lib in (torch, ml):
        x = lib.zeros(0, dtype=lib.float64, requires_grad=True)
        y = x.prod() if dim is None else x.prod(dim)
        g, = lib.autograd.grad(y, x, lib.tensor(2.0, dtype=lib.float64), create_graph=True)
        answers.append((tuple(g.shape), g.requires_grad, g.grad_fn is not None))
    assert answers[1] == answers[0] == ((0,), True, True)


@pytest.mark.parametrize("call", ["x.max(0)[0]", "x.min(0)[0]", "x.topk(1, 0)[0]", "x.cumsum(0)", "x.cumprod(0)",
                                  "x.logcumsumexp(0)", "x.prod(0)", "x.put(i, s)"])
def test_forward_nodes_are_named_as_torchs(call):
    """A 0-d max/min/topk along a dim was a CloneBackward0, 0-d cumsum/cumprod/logcumsumexp/prod(dim) too, put
    without accumulate a ViewBackward0."""
    names = []
    for lib in (torch, ml):
        x = lib.tensor([[1.5, -2.0]] if "put" in call else 1.5, dtype=lib.float64, requires_grad=True)
        i, s = lib.tensor([1]), lib.tensor([3.0], dtype=lib.float64, requires_grad=True)
        y = eval(call)
        names.append((y.grad_fn.name(), [f.name() for f, _ in y.grad_fn.next_functions]))
    assert names[1] == names[0]


# ---- refusals in torch's words ---------------------------------------------------------------------------------


@pytest.mark.parametrize("index", [[[0, 1], [1, 2]], [[0, 1, 2]]], ids=["smaller", "one row"])
@pytest.mark.parametrize("call", ["scatter", "scatter_add", "torch.scatter_add", "sum", "mean", "prod", "amax"])
def test_a_src_larger_than_the_index_is_refused_at_backward_as_torch(call, index):
    """torch's src gradient is grad.gather(dim, index): its engine refuses it for a larger src ('returned an invalid
    gradient'); prod/amax's formula broadcasts src against the index first. minilora gave scatter/scatter_add a
    zero-padded gradient and scatter_reduce an internal error."""
    def backward(lib):
        x, src = lib.ones(3, 3, requires_grad=True), lib.ones(3, 3, requires_grad=True)
        i = lib.tensor(index)
        y = {"scatter": lambda: x.scatter(0, i, src), "scatter_add": lambda: x.scatter_add(0, i, src),
             "torch.scatter_add": lambda: lib.scatter_add(x, dim=0, index=i, src=src)}.get(
            call, lambda: x.scatter_reduce(0, i, src, call))()
        y.sum().backward()
    if call in ("prod", "amax") and len(index) == 1:  # (torch's formula spreads a gradient over unscattered rows)
        with pytest.raises(NotImplementedError, match="larger than the index"):
            backward(ml)
        return
    mine, torchs = refusals(backward)
    assert mine == torchs


@pytest.mark.parametrize("call", ["heaviside", "bincount", "unique", "unique(dim=0)", "unique_consecutive",
                                  "scatter(reduce='add')"])
def test_ops_without_a_derivative_refuse_in_torchs_words(call):
    """minilora's own wording ('the derivative for 'unique' is not implemented (torch has none either)')."""
    def backward(lib):
        x = lib.tensor([1.0, 2.0, 2.0], requires_grad=True)
        y = {"heaviside": lambda: lib.heaviside(x, x), "bincount": lambda: lib.bincount(lib.tensor([0, 1, 1]), x),
             "unique": lambda: lib.unique(x), "unique(dim=0)": lambda: lib.unique(x, dim=0),
             "unique_consecutive": lambda: x.unique_consecutive(),
             "scatter(reduce='add')": lambda: x.scatter(0, lib.tensor([0]), x, reduce="add")}[call]()
        y.sum().backward()
    mine, torchs = refusals(backward)
    assert mine == torchs


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("p, compute_mode", [(1.0, None), (2.0, None), (2.0, "donot_use_mm_for_euclid_dist"),
                                             (float("inf"), "use_mm_for_euclid_dist")])
def test_cdist_of_16_bit_tensors_is_refused_as_torch(dtype, p, compute_mode):
    """ATen's cdist kernel takes float and double: 16 bits are refused unless the matrix-product path runs (p = 2
    with use_mm_for_euclid_dist, or more than 25 rows); minilora computed them."""
    def cdist(lib):
        x1, x2 = lib.ones(2, 3, dtype=getattr(lib, dtype)), lib.ones(4, 3, dtype=getattr(lib, dtype))
        return lib.cdist(x1, x2, p, compute_mode=compute_mode) if compute_mode else lib.cdist(x1, x2, p)
    mine, torchs = refusals(cdist)
    assert mine == torchs
    for lib in (torch, ml):  # (the matrix-product path and empty inputs compute)
        x1 = lib.ones(2, 3, dtype=getattr(lib, dtype))
        assert lib.cdist(x1, lib.ones(30, 3, dtype=getattr(lib, dtype))).shape == (2, 30)
        assert lib.cdist(x1[:0], lib.ones(4, 3, dtype=getattr(lib, dtype)), 1.0).shape == (0, 4)


# ---- complex gradients ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", ["complex64", "complex128"])
def test_acosh_of_complex_numbers_has_the_principal_branchs_derivative_as_torch(dtype):
    """torch's complex acosh gradient is conj(1 / (sqrt(z - 1) sqrt(z + 1))); minilora's (z^2 - 1)^(-1/2) had the
    other sign where Re z < 0 (-0.5+0.3j: 0.18-1.04j, torch's -0.18+1.04j), first and second derivatives alike."""
    values = [-2.0, 0.5, 3.0, 1 + 2j, -0.5 + 0.3j, -1.5 - 0.2j]
    answers = []
    for lib in (torch, ml):
        z = lib.tensor(values, dtype=getattr(lib, dtype), requires_grad=True)
        g, = lib.autograd.grad((z.acosh().abs() ** 2).sum(), z, create_graph=True)
        gg, = lib.autograd.grad((g.abs() ** 2).sum(), z)
        answers.append([np.array(t.detach().resolve_conj().numpy() if lib is torch else t.detach().numpy())
                        for t in (g, gg)])
    tolerance = 1e-5 if dtype == "complex64" else 1e-11
    for mine, theirs in zip(answers[1], answers[0]):
        np.testing.assert_allclose(mine, theirs, rtol=tolerance)


@pytest.mark.parametrize("call", ["torch.lerp(z, w, 0.3)", "z.lerp(end=w, weight=0.7)", "torch.lerp(z, w, 0.3 + 0.1j)",
                                  "torch.lerp(z, w, w)"])
def test_lerp_of_complex_tensors_differentiates_twice_as_torch(call):
    """minilora refused complex lerp ('lerp is only implemented for floating tensors'); torch's gradients are
    grad * conj(1 - weight), grad * conj(weight), grad * conj(end - self)."""
    answers = []
    for lib in (torch, ml):
        z = lib.tensor([1 + 2j, -0.5 + 0.3j, 2 - 1j], dtype=lib.complex128, requires_grad=True)
        w = lib.tensor([0.5 - 1j, 1 + 1j, -1 + 0.2j], dtype=lib.complex128, requires_grad=True)
        y = eval(call, {"torch": lib, "z": z, "w": w})
        g = lib.autograd.grad((y.abs() ** 2).sum(), (z, w), create_graph=True)
        gg = lib.autograd.grad(sum((t.abs() ** 2).sum() for t in g), (z, w))
        answers.append([np.array(t.detach().resolve_conj().numpy() if lib is torch else t.detach().numpy())
                        for t in (y, *g, *gg)])
    for mine, theirs in zip(answers[1], answers[0]):
        np.testing.assert_allclose(mine, theirs, rtol=1e-12)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_l1_loss_of_complex_tensors_differentiates_twice_as_torch(reduction):
    """torch's l1_loss of complex tensors is |input - target| reduced (real); minilora refused complex inputs."""
    answers = []
    for lib in (torch, ml):
        z = lib.tensor([1 + 2j, -0.5 + 0.3j, 2 - 1j], dtype=lib.complex128, requires_grad=True)
        w = lib.tensor([0.5 - 1j, 1 + 1j, -1 + 0.2j], dtype=lib.complex128, requires_grad=True)
        y = lib.nn.functional.l1_loss(z, w, reduction=reduction)
        g = lib.autograd.grad((y * y).sum(), (z, w), create_graph=True)
        gg = lib.autograd.grad(sum((t.abs() ** 2).sum() for t in g), (z, w))
        answers.append([np.array(t.detach().resolve_conj().numpy() if lib is torch else t.detach().numpy())
                        for t in (y, *g, *gg)])
    for mine, theirs in zip(answers[1], answers[0]):
        np.testing.assert_allclose(mine, theirs, rtol=1e-12)


@pytest.mark.parametrize("dtypes, rows", [(("complex128", "float64"), 4), (("float64", "complex128"), 4),
                                          (("int64", "int64"), 4), (("float32", "float64"), 4),
                                          (("float64", "float32"), 30)])
def test_cdist_refuses_complex_integer_and_mixed_dtypes_as_torch(dtypes, rows):
    """minilora computed a complex128 or int64 distance, or promoted two dtypes, where torch refuses."""
    def cdist(lib):
        return lib.cdist(lib.ones(2, 3, dtype=getattr(lib, dtypes[0])), lib.ones(rows, 3, dtype=getattr(lib, dtypes[1])))
    mine, torchs = refusals(cdist)
    assert mine == torchs
