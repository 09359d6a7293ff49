"""Double backward (``create_graph=True``) and the gradients torch gives as None, constants or refusals, round 16.

minilora's recorded backward refused scatter_reduce / index_reduce with reduce='prod', every torch.fft transform
(rfft, irfft, hfft, ihfft, fft2, rfftn, irfftn, ..., and so stft) and nextafter, where torch differentiates them
twice. A sweep of op_db's OpInfos (float64, the first samples: outputs' requires_grad and grad_fn, which gradients
are None, and the create_graph gradients' requires_grad and grad_fn with a constant cotangent and with one that
requires grad) found the rest of the kind: ``torch.norm(x, 0)``'s gradient was zeros where torch's is None;
linalg.det of a 1x1 matrix gave a gradient in A's graph where torch's is the incoming gradient itself; cdist's
gradient was vector_norm's, where torch's _cdist_backward gives p = 0 zeros (minilora: None) and p = inf the
whole gradient to each tied largest difference (minilora shared it), and cannot be differentiated again;
nextafter's gradient was 1 where self == other (torch: 0, the result is other there); hardsigmoid's and the
margin losses' gradients were constants under create_graph where torch's backward is an ATen function of the
input (so in the graph).

Each comparison runs the same calls on torch and minilora in float64; values within 1e-12 (the same formulas,
summed in other orders), requires_grad and grad_fn presence exactly, refusals with torch's type and words.
"""
import itertools

import numpy as np
import pytest

from torch_db import ml, to_minilora, torch

from torch.testing._internal.common_methods_invocations import op_db  # noqa: E402

RTOL = 1e-12


def assert_close(ours, theirs, what):
    ours, theirs = np.asarray(ours), np.asarray(theirs)
    assert ours.shape == theirs.shape, what
    finite = np.abs(theirs[np.isfinite(theirs)])
    scale = finite.max() if finite.size else 0.0
    np.testing.assert_allclose(ours, theirs, rtol=RTOL, atol=RTOL * scale + 1e-300, err_msg=what)


def as_array(g):
    if isinstance(g, torch.Tensor) and g._is_zerotensor():  # (torch's ZeroTensor: a gradient known to be 0)
        return np.zeros(tuple(g.shape), dtype=np.complex128 if g.is_complex() else np.float64)
    return None if g is None else np.array(g.detach().resolve_conj().numpy())


def flags(g):
    return None if g is None else (g.requires_grad, g.grad_fn is not None)


def tensors(lib, values, requires_grad=True):
    return [lib.tensor(v, dtype=lib.complex128 if np.iscomplexobj(v) else lib.float64, requires_grad=requires_grad)
            for v in values]


def grads_twice(lib, fn, inputs, cotangents, weights, cotangent_requires_grad=True):
    """The create_graph=True gradients of ``fn(*inputs)`` (value, requires_grad, grad_fn), then the gradient of
    sum(weights * gradients) with respect to the inputs and the cotangents (None where nothing reaches)."""
    xs = tensors(lib, inputs)
    v = tensors(lib, cotangents, cotangent_requires_grad)
    outputs = fn(*xs)
    outputs = list(outputs) if isinstance(outputs, tuple) else [outputs]
    grads = lib.autograd.grad(outputs, xs, v, create_graph=True, allow_unused=True)
    live = [(g, w) for g, w in zip(grads, weights) if g is not None and g.requires_grad]
    wanted = xs + (v if cotangent_requires_grad else [])
    seconds = lib.autograd.grad([g for g, _ in live], wanted, tensors(lib, [w for _, w in live], False),
                                allow_unused=True) if live else []
    return [(as_array(g), flags(g)) for g in grads], [as_array(s) for s in seconds]


def assert_twice_as_torch(fn_of_lib, inputs, cotangents, *, cotangent_requires_grad=True, seed=16):
    rng = np.random.default_rng(seed)
    weights = [rng.standard_normal(np.shape(x)) for x in inputs]
    weights = [w + 1j * rng.standard_normal(w.shape) if np.iscomplexobj(x) else w for w, x in zip(weights, inputs)]
    theirs = grads_twice(torch, fn_of_lib(torch), inputs, cotangents, weights, cotangent_requires_grad)
    ours = grads_twice(ml, fn_of_lib(ml), inputs, cotangents, weights, cotangent_requires_grad)
    for i, ((mine, my_flags), (torchs, their_flags)) in enumerate(zip(ours[0], theirs[0])):
        assert (mine is None) == (torchs is None), f"gradient {i}: {mine}, torch's {torchs}"
        if mine is not None:
            assert_close(mine, torchs, f"gradient {i}")
            assert my_flags == their_flags, f"gradient {i}: (requires_grad, grad_fn) {my_flags}, torch's {their_flags}"
    assert len(ours[1]) == len(theirs[1])
    for i, (mine, torchs) in enumerate(zip(*(ours[1], theirs[1]))):
        if mine is None or torchs is None:  # (None and zeros: the same derivative)
            assert not np.any(mine if torchs is None else torchs), f"second derivative {i}"
        else:
            assert_close(mine, torchs, f"second derivative {i}")


def refusals(fn):
    """What torch and minilora raise for ``fn(lib)``: (type name, message) each."""
    caught = []
    for lib in (torch, ml):
        with pytest.raises(Exception) as error:
            fn(lib)
        caught.append((type(error.value).__name__, str(error.value)))
    return caught


# ---- scatter_reduce / index_reduce with reduce='prod' --------------------------------------------------------------
SELF = [1.0, 2.0, 0.0, 4.0, 5.0]
INDEX = [0, 0, 1, 2, 2, 4]


@pytest.mark.parametrize("include_self", [True, False])
@pytest.mark.parametrize("src", [[2.0, 3.0, 0.5, 0.0, 7.0, 1.0],  # (a zero in self, a single zero sent to a place)
                                 [2.0, -3.0, 0.5, 1.5, 7.0, 1.0]])
def test_scatter_reduce_prod_differentiates_twice_as_torch(src, include_self):
    index = INDEX

    def fn_of(lib):
        return lambda x, s: x.scatter_reduce(0, lib.tensor(index), s, "prod", include_self=include_self)
    assert_twice_as_torch(fn_of, [SELF, src], [[0.5, -1.0, 2.0, 1.5, 0.25]])


def test_scatter_reduce_prod_with_a_constant_cotangent_is_in_the_graph_as_torch():
    def fn_of(lib):
        return lambda x, s: lib.scatter_reduce(x, 0, lib.tensor(INDEX), s, reduce="prod")
    assert_twice_as_torch(fn_of, [SELF, [2.0, 3.0, 0.5, 0.0, 7.0, 1.0]], [[1.0] * 5], cotangent_requires_grad=False)


@pytest.mark.parametrize("include_self", [True, False])
def test_index_reduce_prod_differentiates_twice_as_torch(include_self):
    def fn_of(lib):
        return lambda x, s: x.index_reduce(0, lib.tensor([0, 2, 0]), s, "prod", include_self=include_self)
    assert_twice_as_torch(fn_of, [[[1.0, 2.0], [0.0, 4.0], [5.0, 3.0]], [[2.0, 0.0], [0.5, 3.0], [-7.0, 1.0]]],
                          [[[0.5, -1.0], [2.0, 1.0], [1.5, 0.25]]])


@pytest.mark.parametrize("call", ["scatter_reduce", "index_reduce"])
def test_prod_with_two_zeros_sent_to_one_place_gives_the_gradient_and_refuses_the_next_as_torch(call):
    """torch's formula cannot differentiate src's gradient there: a DelayedError node in its words."""
    def second(lib):
        x = lib.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=lib.float64, requires_grad=True)
        src = lib.tensor([[0.0, 3.0], [0.0, 5.0]], dtype=lib.float64, requires_grad=True)
        y = (x.scatter_reduce(0, lib.tensor([[1, 1], [1, 1]]), src, "prod") if call == "scatter_reduce"
             else x.index_reduce(0, lib.tensor([1, 1]), src, "prod"))
        grads = lib.autograd.grad(y.sum(), [x, src], create_graph=True)
        return [as_array(g) for g in grads], lib.autograd.grad(grads[1].sum(), src)
    with pytest.raises(RuntimeError):
        second(ml)
    (mine, torchs) = refusals(second)
    assert mine == torchs and "Double backward is unsupported" in torchs[1]
    x, src = (ml.tensor(v, dtype=ml.float64, requires_grad=True) for v in ([[1.0, 2.0], [3.0, 4.0]],
                                                                           [[0.0, 3.0], [0.0, 5.0]]))
    grads = ml.autograd.grad(x.index_reduce(0, ml.tensor([1, 1]), src, "prod").sum(), [x, src], create_graph=True)
    assert [g.tolist() for g in grads] == [[[1.0, 1.0], [0.0, 15.0]], [[0.0, 20.0], [0.0, 12.0]]]  # (torch's)


def test_gradgradcheck_scatter_reduce_prod():
    index = ml.tensor([0, 0, 1, 2, 2, 4])
    x = ml.tensor([1.5, 2.0, -0.5, 4.0, 0.7], dtype=ml.float64, requires_grad=True)
    src = ml.tensor([2.0, 0.0, 0.5, -1.0, 0.3, 1.2], dtype=ml.float64, requires_grad=True)
    assert ml.autograd.gradgradcheck(lambda a, s: a.scatter_reduce(0, index, s, "prod"), (x, src))


# ---- torch.fft: R2C, C2R and C2C transforms --------------------------------------------------------------------
FFT_OPINFOS = [op for op in op_db if op.name.startswith("fft.") and op.name not in ("fft.fftshift", "fft.ifftshift")]


def _complex_like(rng, shape, complex_):
    values = rng.standard_normal(shape)
    return values + 1j * rng.standard_normal(shape) if complex_ else values


@pytest.mark.parametrize("op", FFT_OPINFOS, ids=lambda op: op.name)
def test_fft_transforms_differentiate_twice_as_torch(op):
    """op_db's first samples (n / s, dim, norm), a real and a complex input where the transform takes both."""
    rng = np.random.default_rng(16)
    for dtype in (torch.float64, torch.complex128):
        if dtype not in op.supported_dtypes("cpu"):
            continue
        torch.manual_seed(0)
        for sample in itertools.islice(op.sample_inputs_func(op, "cpu", dtype, True), 2):
            x = sample.input.detach().numpy()
            out = op.op(sample.input, *sample.args, **sample.kwargs)
            cotangent = _complex_like(rng, tuple(out.shape), out.is_complex())
            name = op.name.removeprefix("fft.")

            def fn_of(lib, args=sample.args, kwargs=sample.kwargs, name=name):
                return lambda t: getattr(lib.fft, name)(t, *to_minilora(args) if lib is ml else args, **kwargs)
            assert_twice_as_torch(fn_of, [x], [cotangent])


def test_stft_differentiates_twice_as_torch():
    def fn_of(lib):
        return lambda x: lib.stft(x, 8, hop_length=2, window=lib.hann_window(8, dtype=lib.float64),
                                  return_complex=True)
    rng = np.random.default_rng(1)
    assert_twice_as_torch(fn_of, [rng.standard_normal(20)], [_complex_like(rng, (5, 11), True)])


def test_gradgradcheck_rfft_and_irfft():
    x = ml.tensor(np.random.default_rng(2).standard_normal((3, 6)), dtype=ml.float64, requires_grad=True)
    assert ml.autograd.gradgradcheck(lambda t: ml.fft.rfft(t, n=8, norm="ortho").abs(), (x,))
    assert ml.autograd.gradgradcheck(lambda t: ml.fft.irfft(ml.fft.rfft(t) * 1.5, n=6, dim=0), (x,))


# ---- nextafter ---------------------------------------------------------------------------------------------------
def test_nextafter_differentiates_twice_as_torch_and_is_0_where_self_is_other():
    def fn_of(lib):
        return lib.nextafter
    assert_twice_as_torch(fn_of, [[[1.0, 2.0, 3.0]], [[3.0], [2.0]]], [[[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]])
    assert_twice_as_torch(fn_of, [[1.0, 2.0], [2.0, 2.0]], [[1.0, 1.0]], cotangent_requires_grad=False)


# ---- torch.norm(x, 0), linalg.det of a 1x1 ---------------------------------------------------------------------
@pytest.mark.parametrize("call", ["torch.norm", "Tensor.norm"])
def test_zero_norm_has_no_gradient_as_torch(call):
    """torch's norm_backward returns no gradient for p = 0: x.grad stays None (minilora's torch.norm gave zeros;
    linalg.vector_norm's was None already)."""
    for lib in (torch, ml):
        norm = {"torch.norm": lambda x: lib.norm(x, 0, 1), "Tensor.norm": lambda x: x.norm(p=0)}[call]
        x = lib.tensor([[1.0, 0.0, float("nan")], [0.0, 0.0, 2.0]], dtype=lib.float64, requires_grad=True)
        y = norm(x)
        assert y.requires_grad and type(y.grad_fn).__name__ == "LinalgVectorNormBackward0"
        assert lib.autograd.grad(y.sum(), x, allow_unused=True, create_graph=True) == (None,)
        y.sum().backward()
        assert x.grad is None


@pytest.mark.parametrize("shape", [(1, 1), (3, 1, 1)])
def test_det_of_a_1x1_matrix_has_the_incoming_gradient_as_torch(shape):
    """torch's linalg_det_backward for n = 1: grad expanded, not in A's graph (minilora: grad det A^-T)."""
    values = np.arange(1.0, 1 + np.prod(shape)).reshape(shape) * [[-1.5]]
    values[0] = 0.0  # (a singular one too)

    def fn_of(lib):
        return lib.linalg.det
    cotangent = np.linspace(1, 2, int(np.prod(shape[:-2]))).reshape(shape[:-2])
    assert_twice_as_torch(fn_of, [values], [cotangent], cotangent_requires_grad=False)
    assert_twice_as_torch(fn_of, [values], [cotangent])


# ---- cdist: torch's _cdist_backward ------------------------------------------------------------------------------
X1 = [[0.0, 0.0], [1.0, 2.0]]
X2 = [[1.0, 1.0], [3.0, 0.0], [1.0, 2.0]]  # (ties of |difference|, a zero distance)


def test_cdist_gradient_is_torchs_cdist_backward():
    """p = 0: zeros (minilora: None); p = inf: the whole gradient to each tied largest |difference| (minilora
    shared it); the other orders as before, now from the same formula."""
    for p in (0.0, float("inf"), 0.5, 1.0, 1.5, 2.0, 3.0):
        grads = []
        for lib in (torch, ml):
            x1, x2 = tensors(lib, [X1, X2])
            d = lib.cdist(x1, x2, p)
            grads.append(lib.autograd.grad(d, [x1, x2], lib.tensor(np.arange(6.0).reshape(2, 3), dtype=lib.float64)))
        for i, (mine, torchs) in enumerate(zip(grads[1], grads[0])):
            assert mine is not None, f"p={p} gradient {i}: None, torch's {torchs}"
            assert_close(as_array(mine), as_array(torchs), f"p={p} gradient {i}")


def test_cdist_gradient_is_in_the_graph_and_refuses_a_second_as_torch():
    def second(lib):
        x1, x2 = tensors(lib, [X1, X2])
        g = lib.autograd.grad(lib.cdist(x1, x2, 0.0).sum(), [x1, x2], create_graph=True)
        assert [flags(t) for t in g] == [(True, True), (True, True)]
        return lib.autograd.grad(g[0].sum(), x1)
    (mine, torchs) = refusals(second)
    assert mine == torchs == ("NotImplementedError", "the derivative for '_cdist_backward' is not implemented.")


def test_cdist_refuses_a_negative_p_as_torch():
    (mine, torchs) = refusals(lambda lib: lib.cdist(lib.ones(2, 3), lib.ones(2, 3), -1.0))
    assert mine == torchs


# ---- gradients torch's backward computes with an ATen function of the input: in the graph ---------------------
@pytest.mark.parametrize("loss", ["hardsigmoid", "multi_margin_loss", "multilabel_margin_loss"])
def test_gradient_requires_grad_with_a_constant_cotangent_as_torch(loss):
    answers = []
    for lib in (torch, ml):
        F = lib.nn.functional
        x = lib.tensor([[-4.0, -1.0, 0.5, 3.5], [0.25, 2.0, -0.5, 1.0]], dtype=lib.float64, requires_grad=True)
        y = {"hardsigmoid": lambda: F.hardsigmoid(x) * 2.0,
             "multi_margin_loss": lambda: F.multi_margin_loss(x, lib.tensor([1, 3])),
             "multilabel_margin_loss": lambda: F.multilabel_margin_loss(x, lib.tensor([[1, 0, -1, 2]] * 2))}[loss]()
        g, = lib.autograd.grad(y.sum(), x, create_graph=True)
        answers.append((as_array(g), flags(g)))
    assert_close(answers[1][0], answers[0][0], loss)
    assert answers[1][1] == answers[0][1] == (True, True)


@pytest.mark.parametrize("loss", ["multi_margin_loss", "multilabel_margin_loss"])
def test_margin_losses_have_no_gradient_where_a_margin_is_met_exactly_as_torch(loss):
    """ATen's kernels add a term's gradient only where it is > 0 (minilora's clamp_min gave it at 0 too)."""
    grads = []
    for lib in (torch, ml):
        F = lib.nn.functional
        x = lib.tensor([[0.0, 1.0, 0.0, -2.0], [0.25, 2.0, -0.5, 1.0]], dtype=lib.float64, requires_grad=True)
        y = (F.multi_margin_loss(x, lib.tensor([1, 3])) if loss == "multi_margin_loss"
             else F.multilabel_margin_loss(x, lib.tensor([[1, -1, 0, 0], [1, 0, -1, 2]])))
        grads.append(as_array(lib.autograd.grad(y, x)[0]))
    assert_close(grads[1], grads[0], loss)


# ---- polar, permute of a 0-d tensor ------------------------------------------------------------------------------
@pytest.mark.parametrize("abs_, angle", [([2.0, 0.0, -1.5], [0.3, 0.7, 1.1]), ([[0.5], [1.5]], [0.1, -2.0, 3.0])])
def test_polar_differentiates_twice_as_torch(abs_, angle):
    """torch's polar_backward reads sgn(result): 0 where abs = 0 and the sign flipped where abs < 0 (minilora took
    e^{i angle}, the derivative); its recorded backward refused (complex)."""
    shape = np.broadcast_shapes(np.shape(abs_), np.shape(angle))
    rng = np.random.default_rng(3)
    cotangent = rng.standard_normal(shape) + 1j * rng.standard_normal(shape)

    def fn_of(lib):
        return lib.polar
    assert_twice_as_torch(fn_of, [abs_, angle], [cotangent])
    assert_twice_as_torch(fn_of, [abs_, angle], [cotangent], cotangent_requires_grad=False)


def test_permute_of_a_0d_tensor_differentiates_twice_as_torch():
    def fn_of(lib):
        return lambda x: x.permute(()) * x
    assert_twice_as_torch(fn_of, [1.5], [2.0])


# ---- outputs torch puts in the graph -----------------------------------------------------------------------------
def test_diff_of_order_0_is_a_copy_of_the_input_as_torch():
    """torch.diff(x, 0) is a copy (CopyBackwards), prepend and append left out; minilora returned x itself (an
    alias: its grad_fn None) or the joined tensor."""
    answers = []
    for lib in (torch, ml):
        x = lib.tensor([1.0, 4.0, 9.0], requires_grad=True)
        y, joined = lib.diff(x, 0), lib.diff(x, n=0, prepend=lib.ones(2), append=lib.zeros(1))
        answers.append((y is x, repr(y), joined.tolist(), type(joined.grad_fn).__name__))
    assert answers[1] == answers[0]


def test_lstsq_residuals_are_in_the_graph_as_torch():
    """Empty (the default driver gelsy) or not, residuals are an output of torch's LinalgLstsqBackward0."""
    answers = []
    for lib in (torch, ml):
        A = lib.tensor(np.arange(15.0).reshape(5, 3) ** 1.5, dtype=lib.float64, requires_grad=True)
        B = lib.tensor(np.arange(10.0).reshape(5, 2), dtype=lib.float64)
        flags_ = [[(t.requires_grad, type(t.grad_fn).__name__) for t in lib.linalg.lstsq(A, B, driver=driver)[:2]]
                  for driver in (None, "gelsd")]
        answers.append(flags_)
    assert answers[1] == answers[0]


def test_fill_gives_a_constant_zero_gradient_as_torch():
    """torch.fill's input gets zeros_like(grad), a constant (minilora's was zeros in the graph)."""
    def fn_of(lib):
        return lambda x: lib.fill(x, 2.0)
    assert_twice_as_torch(fn_of, [[[1.0, 2.0], [3.0, 4.0]]], [[[1.0, -1.0], [0.5, 2.0]]])


@pytest.mark.parametrize("call", ["zero_", "fill_", "normal", "bernoulli", "matrix_power_0"])
def test_a_filled_tensors_gradient_is_a_constant_as_torch(call):
    """torch's ZeroBackward0 / FillBackward2 / matrix_power(A, 0)'s CopyBackwards give the old values
    zeros_like(grad): a constant, so with create_graph=True the gradient does not require grad (minilora's was
    zeros in the graph; normal and bernoulli of a tensor are filled clones)."""
    def fn_of(lib):
        def filled(x):
            if call == "matrix_power_0":
                return lib.linalg.matrix_power(x, 0)
            if call in ("normal", "bernoulli"):
                lib.manual_seed(0)
                return lib.normal(x, 1.0) if call == "normal" else lib.bernoulli(x.clamp(0, 1))
            y = x * 2
            return y.zero_() if call == "zero_" else y.fill_(3.0)
        return filled
    assert_twice_as_torch(fn_of, [[[0.25, 0.5], [0.75, 0.125]]], [[[1.0, -1.0], [0.5, 2.0]]])


@pytest.mark.parametrize("call", ["index_add", "scatter_add", "scatter_reduce_sum"])
def test_self_gradient_that_is_the_incoming_one_is_handed_on_as_torch(call):
    """derivatives.yaml's ``self: grad`` (index_add, scatter_add, scatter_reduce 'sum' with include_self): torch
    hands on the cotangent itself (no grad_fn); minilora recorded a node for it."""
    answers = []
    for lib in (torch, ml):
        x = lib.ones(3, 2, dtype=lib.float64, requires_grad=True)
        src = lib.full((1, 2), 2.0, dtype=lib.float64, requires_grad=True)
        index = lib.tensor([[0, 2]])
        y = {"index_add": lambda: x.index_add(0, lib.tensor([1]), src, alpha=2),
             "scatter_add": lambda: lib.scatter_add(x, 0, index, src),
             "scatter_reduce_sum": lambda: x.scatter_reduce(0, index, src, "sum")}[call]()
        v = lib.ones(3, 2, dtype=lib.float64, requires_grad=True)
        g, = lib.autograd.grad(y, x, v, create_graph=True)
        answers.append((g is v, flags(g), as_array(g).tolist()))
    assert answers[1] == answers[0]


def test_einsum_of_complex_tensors_is_complex_and_differentiable_as_torch():
    """minilora took a complex operand for an integer one: einsum('i->', z) was an int64 tensor without a grad_fn."""
    rng = np.random.default_rng(5)
    a = rng.standard_normal((2, 3)) + 1j * rng.standard_normal((2, 3))
    b = rng.standard_normal((3, 4)) + 1j * rng.standard_normal((3, 4))

    def fn_of(lib):
        return lambda x, y: (lib.einsum("ij,jk->ik", x, y), lib.einsum("i->", [x[0]]))
    assert_twice_as_torch(fn_of, [a, b], [rng.standard_normal((2, 4)) + 1j * rng.standard_normal((2, 4)), 1 - 2j])


@pytest.mark.parametrize("call", ["zero_", "fill_", "matrix_power_0"])
def test_a_filled_complex_tensors_gradient_as_torch(call):
    def fn_of(lib):
        def filled(x):
            if call == "matrix_power_0":
                return lib.linalg.matrix_power(x, 0) + x
            y = x * 2
            return (y.zero_() if call == "zero_" else y.fill_(3.0 - 1j)) + x
        return filled
    values = np.array([[0.25 + 1j, 0.5], [0.75 - 2j, 0.125j]])
    assert_twice_as_torch(fn_of, [values], [values[::-1].copy()])


@pytest.mark.parametrize("call", ["sgn", "angle"])
def test_sgn_and_angle_of_complex_tensors_differentiate_twice_as_torch(call):
    """torch's sgn_backward / angle_backward on ops, with torch's nan second derivative at z = 0 (minilora's
    recorded backward refused complex inputs)."""
    z = np.array([[1 + 2j, 0j, -0.5 + 0.25j], [3 - 1j, 2j, -1.5 + 0j]])
    cotangent = np.array([[0.5 - 1j, 1 + 1j, 2 - 0.5j], [-1 + 0.5j, 0.25j, 1.0]])
    cotangent = cotangent if call == "sgn" else cotangent.real.copy()

    def fn_of(lib):
        return getattr(lib, call)
    assert_twice_as_torch(fn_of, [z], [cotangent])
    assert_twice_as_torch(fn_of, [z], [cotangent], cotangent_requires_grad=False)


@pytest.mark.parametrize("call", ["as_strided", "as_strided_overlapping", "unfold", "fold"])
def test_complex_gradients_through_as_strided_and_im2col_as_torch(call):
    """Linear maps with real coefficients: minilora refused a complex gradient there ('no complex derivative for
    AsStrided / Unfold'), first order too; AsStrided's storage sums were float64 only."""
    rng = np.random.default_rng(7)
    shape = (1, 4, 4) if call == "fold" else (1, 1, 3, 3)
    z = rng.standard_normal(shape) + 1j * rng.standard_normal(shape)

    def fn_of(lib):
        F = lib.nn.functional
        return {"as_strided": lambda x: x.as_strided((2, 2), (3, 1), 1) * 1j,
                "as_strided_overlapping": lambda x: x.as_strided((2, 3), (1, 1)),
                "unfold": lambda x: F.unfold(x, 2),
                "fold": lambda x: F.fold(x, (3, 3), 2)}[call]
    out = fn_of(torch)(torch.tensor(z))
    cotangent = rng.standard_normal(tuple(out.shape)) + 1j * rng.standard_normal(tuple(out.shape))
    assert_twice_as_torch(fn_of, [z], [cotangent])


@pytest.mark.parametrize("call", ["addmm", "baddbmm", "addbmm"])
def test_addmm_family_with_complex_alpha_and_beta_as_torch(call):
    """minilora took a complex result for an integer one and refused complex alpha/beta (int(2+3j): TypeError)."""
    rng = np.random.default_rng(0)
    shapes = {"addmm": [(2, 4), (2, 3), (3, 4)], "baddbmm": [(2, 2, 4), (2, 2, 3), (2, 3, 4)],
              "addbmm": [(2, 4), (3, 2, 3), (3, 3, 4)]}[call]
    inputs = [rng.standard_normal(s) + 1j * rng.standard_normal(s) for s in shapes]

    def fn_of(lib):
        return lambda a, b, c: getattr(lib, call)(a, b, c, beta=1 + 2j, alpha=2 + 3j)
    assert_twice_as_torch(fn_of, inputs, [rng.standard_normal(shapes[0]) + 1j * rng.standard_normal(shapes[0])])
