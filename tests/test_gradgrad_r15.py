"""Double backward (``create_graph=True``) as torch's: gradient penalties (WGAN-GP, R1), MAML and Hessian-vector
products differentiate a gradient again, so the gradient must be in the graph wherever torch's is.

torch's backward of hardtanh, threshold, the shrinks, the reflection/replication pads, nll_loss, prelu, rrelu and
fractional max pooling is one ATen function of the input (``hardtanh_backward(grad, self)``), recorded under
create_graph=True: the gradient requires grad and has a grad_fn even where the incoming gradient is a constant
(its derivative in the input: zeros). A convolution's and a batch/instance/layer norm's bias gradient is recorded
with the input and weight likewise (derivative: none). minilora's formulas for these multiply by constant masks,
so its gradients were constants (requires_grad=False): ``autograd.grad(penalty, params)`` refused the bias as
unused, and a lazy R1 step left the bias's ``.grad`` None, so Adam skipped the parameter torch moves
(``tensor.backward_reads``: the op declares what torch's backward reads; ``ops/higher_order.ReadsInputs``).
Besides, minilora's recorded backward refused vector norms of orders other than 0, 1, 2 and scatter_reduce's
amax/amin, failed on conv_transpose with output_padding (ShapeError), answered 0 where torch's second derivative
of a norm at a zero vector is nan, put the values of max_unpool's repeated index where torch adds them, and
differentiated binary_cross_entropy's gradient by the chain rule where torch has written formulas (3e-11 off).

The sweep takes op_db's OpInfos with ``supports_gradgrad``, float64, the first samples: the gradients (fixed random
cotangent) with create_graph=True match torch's values, requires_grad and grad_fn presence; then a vjp of them
(the cotangent itself requiring grad, as gradgradcheck) matches torch's second derivatives within 1e-12.
"""
import functools
import itertools

import numpy as np
import pytest

from torch_db import ml, to_minilora, torch

from torch.testing._internal.common_methods_invocations import op_db  # noqa: E402

from test_opinfo_functional_r14 import minilora_callable  # noqa: E402  (op_db's callables carried to minilora)

RTOL = 1e-12  # float64: the same formulas, summed in other orders (BLAS, pairwise)
SAMPLES = 2

# the OpInfos whose gradients were constants under create_graph=True (tensor.backward_reads), ...
JOINED = ["nn.functional.hardtanh", "nn.functional.relu6", "nn.functional.threshold", "nn.functional.hardshrink",
          "nn.functional.softshrink", "nn.functional.pad.reflect", "nn.functional.pad.replicate",
          "nn.functional.pad.replicate_negative", "nn.functional.nll_loss", "nn.functional.prelu",
          "nn.functional.rrelu", "nn.functional.fractional_max_pool2d", "nn.functional.fractional_max_pool3d",
          "nn.functional.batch_norm", "nn.functional.instance_norm", "nn.functional.layer_norm",
          "nn.functional.conv1d", "nn.functional.conv2d", "nn.functional.conv3d", "nn.functional.conv_transpose1d",
          "nn.functional.conv_transpose2d", "nn.functional.conv_transpose3d"]
# ... those whose recorded backward refused, failed or differed (ops/higher_order.py) ...
RECORDED = ["linalg.norm.subgradients_at_zero", "nn.functional.binary_cross_entropy", "scatter_reduce.amax",
            "scatter_reduce.amin", "index_reduce.amax", "nn.functional.max_unpool2d"]
# (the third samples: conv_transpose with output_padding, where the recorded weight gradient had more windows than
# the input pixels (ShapeError); norms at a zero vector, torch's nan second derivative; binary_cross_entropy,
# whose second derivatives are torch's written formulas with their eps, 3e-11 from the chain rule's; max_unpool's
# repeated index)
MORE_SAMPLES = {"nn.functional.conv_transpose2d": 3, "nn.functional.conv_transpose3d": 3,
                "linalg.norm.subgradients_at_zero": 3, "nn.functional.binary_cross_entropy": 3,
                "nn.functional.max_unpool2d": 3}
# ... and common neighbours that were right
NEIGHBOURS = ["nn.functional.relu", "nn.functional.leaky_relu", "nn.functional.elu", "nn.functional.gelu",
              "nn.functional.softplus", "nn.functional.mse_loss", "nn.functional.max_pool2d",
              "nn.functional.avg_pool2d", "nn.functional.logsigmoid", "nn.functional.pad.constant",
              "nn.functional.cross_entropy", "nn.functional.group_norm", "clamp", "where", "abs"]


def key(op):
    return op.name + (f".{op.variant_test_name}" if op.variant_test_name else "")


OPINFOS = {key(op): op for op in op_db if op.supports_gradgrad and torch.float64 in op.supported_dtypes("cpu")}


def tensors_in(value):
    if isinstance(value, (torch.Tensor, ml.Tensor)):
        return [value]
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (list, tuple)):
        return [t for item in value for t in tensors_in(item)]
    return []


def as_array(g):
    if isinstance(g, torch.Tensor) and g._is_zerotensor():  # (torch's ZeroTensor: a gradient known to be 0)
        return np.zeros(tuple(g.shape))
    return None if g is None else np.array(g.detach().numpy())


def first_and_second(lib, fn, arguments, cotangents, second_cotangents, cotangent_requires_grad):
    """The create_graph=True gradients of ``fn`` with respect to its inputs that require grad (values,
    requires_grad, grad_fn present); with ``cotangent_requires_grad``, also the vjp of those gradients with
    respect to the inputs and the cotangents (None where nothing reaches)."""
    first, args, kwargs = arguments
    inputs = [t for t in tensors_in(arguments) if t.requires_grad]
    if lib is torch:
        torch.manual_seed(42)
    outputs = [t for t in tensors_in(fn(first, *args, **kwargs)) if t.requires_grad]
    v = [lib.tensor(c, dtype=lib.float64, requires_grad=cotangent_requires_grad) for c in cotangents]
    grads = lib.autograd.grad(outputs, inputs, v, create_graph=True, allow_unused=True)
    firsts = [None if g is None else (as_array(g), g.requires_grad, g.grad_fn is not None) for g in grads]
    if not cotangent_requires_grad:
        return firsts, None
    live = [g for g in grads if g is not None]
    w = [lib.tensor(c.reshape(tuple(g.shape)), dtype=lib.float64) for c, g in zip(second_cotangents, live)]
    seconds = lib.autograd.grad(live, inputs + v, w, allow_unused=True)
    return firsts, [as_array(s) for s in seconds]


def assert_close(ours, theirs, what):
    assert ours.shape == theirs.shape, what
    finite = np.abs(theirs[np.isfinite(theirs)])
    scale = finite.max() if finite.size else 0.0
    np.testing.assert_allclose(ours, theirs, rtol=RTOL, atol=RTOL * scale + 1e-300, err_msg=what)


def compare_sample(op, sample, rng):
    arguments = (sample.input, tuple(sample.args), dict(sample.kwargs))
    with torch.random.fork_rng():
        torch.manual_seed(42)
        outputs = [t for t in tensors_in(op.op(sample.input, *sample.args, **sample.kwargs)) if t.requires_grad]
    cotangents = [rng.standard_normal(tuple(o.shape)) for o in outputs]
    inputs = [t for t in tensors_in(arguments) if t.requires_grad]
    second = [rng.standard_normal(tuple(t.shape)) for t in inputs]
    ours_fn = minilora_callable(op, op.op)
    for requires_grad in (False, True):
        with torch.random.fork_rng():
            theirs = first_and_second(torch, op.op, arguments, cotangents, second, requires_grad)
        ours = first_and_second(ml, ours_fn, to_minilora(arguments), cotangents, second, requires_grad)
        for i, (mine, torchs) in enumerate(zip(ours[0], theirs[0])):
            what = f"{key(op)} {sample} gradient {i}"
            assert (mine is None) == (torchs is None), what
            if mine is not None:
                assert_close(mine[0], torchs[0], what)
                assert mine[1:] == torchs[1:], f"{what}: (requires_grad, has grad_fn) {mine[1:]}, torch's {torchs[1:]}"
        for i, (mine, torchs) in enumerate(zip(ours[1] or (), theirs[1] or ())):
            what = f"{key(op)} {sample} second derivative {i}"
            if mine is None or torchs is None:  # (None and zeros are the same derivative: no path, or a zero one)
                assert not np.any(mine if torchs is None else torchs), what
            else:
                assert_close(mine, torchs, what)


@pytest.mark.parametrize("name", JOINED + RECORDED + NEIGHBOURS)
def test_second_derivatives_and_graph_flags_match_torch(name):
    op = OPINFOS[name]
    rng = np.random.default_rng(15)
    torch.manual_seed(0)
    samples = [s for s in itertools.islice(op.sample_inputs_func(op, "cpu", torch.float64, True), SAMPLES + 2)
               if not _degenerate_layer_norm(name, s)][:MORE_SAMPLES.get(name, SAMPLES)]
    assert samples
    for sample in samples:
        compare_sample(op, sample, rng)


def _degenerate_layer_norm(name, sample):
    """layer_norm over one element: x - mean is exactly 0 in minilora, torch's kernel leaves ~1e-13 (its rounding
    of the mean), so the weight's gradient is 0 against 8e-15: nothing to compare at 1e-12."""
    return name == "nn.functional.layer_norm" and sample.input.numel() == 1


def test_gradient_through_hardtanh_is_in_the_graph_with_a_constant_cotangent():
    """The plain case the old pass got wrong: grad of sum(w * hardtanh(x)) with w a constant."""
    flags = []
    for lib in (torch, ml):
        x = lib.tensor([[-2.0, -0.5, 0.25, 3.0]], dtype=lib.float64, requires_grad=True)
        grad, = lib.autograd.grad((lib.nn.functional.hardtanh(x) * 2.0).sum(), x, create_graph=True)
        again, = lib.autograd.grad(grad.sum(), x)  # (the old pass: 'does not require grad')
        flags.append((grad.requires_grad, grad.grad_fn is not None, again.tolist()))
    assert flags[1] == flags[0] == (True, True, [[0.0, 0.0, 0.0, 0.0]])


@pytest.mark.parametrize("dim", [None, 1])
def test_vector_norm_of_every_order_differentiates_twice_as_torch(dim):
    """torch's norm_backward for every order (minilora's recorded backward had p = 0, 1, 2 and refused the rest:
    a Lipschitz penalty with the inf-norm, a p = 4 norm); a zero row gives torch's nan where it gives one."""
    values = np.random.default_rng(4).standard_normal((3, 4))
    values[2] = [0.0, 1.5, -1.5, 0.25]  # (two maxima of |x|: inf-norm's gradient shared)
    for order in (0.5, 1.5, 3, 4, float("inf"), -float("inf")):
        answers = []
        for lib in (torch, ml):
            x = lib.tensor(values, dtype=lib.float64, requires_grad=True)
            weights = lib.tensor([1.0, -2.0, 0.5] if dim else 1.5, dtype=lib.float64)
            grad, = lib.autograd.grad((lib.linalg.vector_norm(x, order, dim) * weights).sum(), x, create_graph=True)
            hvp, = lib.autograd.grad((grad * lib.tensor(values[::-1].copy(), dtype=lib.float64)).sum(), x)
            answers.append((as_array(grad), as_array(hvp)))
        for mine, torchs in zip(answers[1], answers[0]):
            assert_close(mine, torchs, f"ord={order} dim={dim}")


def test_max_unpool_with_a_repeated_index_differentiates_twice_and_forward_as_torch():
    """Overlapping pooling windows choose one element twice: the unpooling puts the later value there, its
    backward gathers the gradient for both, and the derivative of that gather adds them back (torch's double
    backward; minilora's recorded one put them, 1000 for torch's 1100); forward AD is the unpooling of the
    tangent (torch's auto_linear), which the change must leave as it was."""
    answers = []
    for lib in (torch, ml):
        x = lib.tensor([[[1.0, 2.0], [4.0, 5.0]]], dtype=lib.float64, requires_grad=True)
        index = lib.tensor([[[1, 2], [1, 1]]])
        unpool = functools.partial(lib.nn.functional.max_unpool1d, indices=index, kernel_size=3, stride=2,
                                   padding=1, output_size=(3,))
        v = lib.tensor([[[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]]], dtype=lib.float64, requires_grad=True)
        grad, = lib.autograd.grad(unpool(x), x, v, create_graph=True)
        again, = lib.autograd.grad(grad, v, lib.tensor([[[1.0, 10.0], [100.0, 1000.0]]], dtype=lib.float64))
        with lib.autograd.forward_ad.dual_level():
            dual = lib.autograd.forward_ad.make_dual(x.detach(), lib.tensor([[[0.1, 0.2], [0.3, 0.4]]],
                                                                            dtype=lib.float64))
            tangent = lib.autograd.forward_ad.unpack_dual(unpool(dual)).tangent
        answers.append([as_array(grad), as_array(again), as_array(tangent)])
    for mine, torchs in zip(answers[1], answers[0]):
        assert_close(mine, torchs, "max_unpool1d")


# ---- a conditional critic with a lazy R1 penalty (StyleGAN2's: a step of the penalty alone, Adam) ----------
def critic_and_data(lib):
    lib.manual_seed(0)
    nn = lib.nn
    critic = nn.Sequential(nn.ReflectionPad1d(1), nn.Conv1d(2, 3, 3), nn.ReLU6(), nn.Hardtanh(-0.5, 0.5),
                           nn.Flatten(), nn.Linear(15, 4)).double()
    x = lib.randn(6, 2, 5, dtype=lib.float64) * 2
    target = lib.tensor([0, 1, 2, 3, 1, 0])
    return critic, x, target


def score(lib, critic, x, target):
    """A conditional critic's score: one output per class, the sample's class picks it (nll_loss on the raw
    scores: minus their mean), linear in the output as WGAN's."""
    return lib.nn.NLLLoss()(critic(x), target)


def lazy_r1_step(lib):
    critic, x, target = critic_and_data(lib)
    optimizer = lib.optim.Adam(critic.parameters(), lr=0.05)
    score(lib, critic, x, target).backward()  # an ordinary step: Adam's moments fill
    optimizer.step()
    optimizer.zero_grad()
    x.requires_grad_(True)
    grad, = lib.autograd.grad(score(lib, critic, x, target), x, create_graph=True)
    r1 = grad.pow(2).sum((1, 2)).mean() * 5.0
    r1.backward()  # torch: the conv's bias gets zeros (reached through relu6/hardtanh), Adam moves it
    optimizer.step()
    return [p.grad for p in critic.parameters()], list(critic.parameters())


def test_lazy_r1_step_through_relu6_hardtanh_pad_and_nll_moves_the_parameters_as_torch():
    (their_grads, theirs), (our_grads, ours) = lazy_r1_step(torch), lazy_r1_step(ml)
    for i, (mine, torchs) in enumerate(zip(our_grads, their_grads)):
        assert (mine is None) == (torchs is None), f"parameter {i}'s .grad: {mine}, torch's {torchs}"
        if mine is not None:
            assert_close(as_array(mine), as_array(torchs), f"parameter {i}'s .grad")
    for i, (mine, torchs) in enumerate(zip(ours, theirs)):
        assert_close(as_array(mine), as_array(torchs), f"parameter {i} after the R1 step")


def test_penalty_gradient_reaches_every_parameter_torchs_reaches():
    """``autograd.grad(penalty, params)``: torch's zeros for the conv's bias (the old pass: 'One of the
    differentiated Tensors appears to not have been used in the graph')."""
    answers = []
    for lib in (torch, ml):
        critic, x, target = critic_and_data(lib)
        x.requires_grad_(True)
        grad, = lib.autograd.grad(score(lib, critic, x, target), x, create_graph=True)
        params = [p for name, p in critic.named_parameters() if name != "5.bias"]  # (no path in torch either)
        answers.append([as_array(g) for g in lib.autograd.grad((grad ** 2).sum(), params)])
    for i, (mine, torchs) in enumerate(zip(*answers[::-1])):
        assert_close(mine, torchs, f"parameter {i}")
