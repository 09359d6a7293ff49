"""In-place activations and ``inplace=True``, side by side with torch 2.13: ``nn.ReLU(inplace=True)``,
``F.relu(x, inplace=True)``, ``F.relu_``, ``x.relu_()`` ... as the torchvision-style blocks, the CIFAR
tutorial and DCGAN write them (they raised NotImplementedError). Checked as torch: the result *is* the
input, values and dtypes (float32/float16/bfloat16, and integers where torch allows them), float64
gradients, the leaf error, the version-counter error at backward when a saved tensor was changed, views
writing through to their base, and the modules' reprs.
"""
import warnings

import numpy as np
import pytest

import minilora as ml
from minilora import nn
from minilora.nn import functional as F

torch = pytest.importorskip("torch")
TF, tnn = torch.nn.functional, torch.nn

A = np.random.default_rng(0).standard_normal((4, 4)) * 2
A[0, :3] = (0.0, -0.0, 0.1)  # the edges: zero, negative zero, at a threshold
LIBS = ((ml, F), (torch, TF))  # (library, its functional module)


def _values(t):
    """A tensor's values as float64 NumPy (16-bit floats widened exactly)."""
    t = t.detach() if hasattr(t, "detach") else t
    if isinstance(t, torch.Tensor):
        return t.double().numpy() if t.is_floating_point() else t.numpy()
    return np.asarray(t.numpy(force=True)).astype(np.float64 if ml.is_floating_point(t) else t.dtype)


def _tensor(lib, array, dtype, requires_grad=False):
    return lib.tensor(array).to(getattr(lib, dtype)).requires_grad_(requires_grad)


def _outcome(run):
    """What ``run()`` gives: ("ok", result) or the error's type name (and its first words)."""
    try:
        return "ok", run()
    except Exception as exc:  # noqa: BLE001  (the type is what is compared)
        return type(exc).__name__, str(exc)[:120]


# ---- every activation with an inplace argument, functional and module ---------------------------------
ACTIVATIONS = {  # name: (call with inplace=..., module constructor with inplace=...)
    "relu": (lambda L, x, ip: L.relu(x, inplace=ip), lambda N, ip: N.ReLU(inplace=ip)),
    "relu6": (lambda L, x, ip: L.relu6(x, ip), lambda N, ip: N.ReLU6(ip)),
    "leaky_relu": (lambda L, x, ip: L.leaky_relu(x, 0.2, ip), lambda N, ip: N.LeakyReLU(0.2, ip)),
    "elu": (lambda L, x, ip: L.elu(x, alpha=0.7, inplace=ip), lambda N, ip: N.ELU(0.7, inplace=ip)),
    "celu": (lambda L, x, ip: L.celu(x, 0.5, ip), lambda N, ip: N.CELU(0.5, ip)),
    "selu": (lambda L, x, ip: L.selu(x, ip), lambda N, ip: N.SELU(inplace=ip)),
    "hardtanh": (lambda L, x, ip: L.hardtanh(x, -0.5, 1.5, ip), lambda N, ip: N.Hardtanh(-0.5, 1.5, ip)),
    "hardsigmoid": (lambda L, x, ip: L.hardsigmoid(x, inplace=ip), lambda N, ip: N.Hardsigmoid(ip)),
    "hardswish": (lambda L, x, ip: L.hardswish(x, ip), lambda N, ip: N.Hardswish(inplace=ip)),
    "silu": (lambda L, x, ip: L.silu(x, inplace=ip), lambda N, ip: N.SiLU(ip)),
    "mish": (lambda L, x, ip: L.mish(x, ip), lambda N, ip: N.Mish(inplace=ip)),
    "threshold": (lambda L, x, ip: L.threshold(x, 0.1, 20.0, ip), lambda N, ip: N.Threshold(0.1, 20.0, ip)),
    "rrelu (eval)": (lambda L, x, ip: L.rrelu(x, 0.1, 0.3, False, ip), lambda N, ip: N.RReLU(0.1, 0.3, ip).eval()),
}


RTOL = {"float64": 1e-13, "float32": 1e-6, "float16": 0, "bfloat16": 0}  # 16-bit: bit for bit


def _run_activation(lib, functional, name, dtype, module):
    call, make = ACTIVATIONS[name]
    x = _tensor(lib, A, dtype)
    y = make(lib.nn, True)(x) if module else call(functional, x, True)
    return y is x, str(y.dtype).split(".")[-1], _values(x)


@pytest.mark.parametrize("module", [False, True], ids=["F", "module"])
@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16", "float64"])
@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_inplace_activation_writes_torchs_values_into_its_input(name, dtype, module):
    ours, theirs = (_run_activation(lib, functional, name, dtype, module) for lib, functional in LIBS)
    assert ours[0] and theirs[0], "the result is the input itself"
    assert ours[1] == theirs[1] == dtype
    np.testing.assert_allclose(ours[2], theirs[2], rtol=RTOL[dtype], atol=0)
    x = _tensor(ml, A, dtype)  # and exactly what the out-of-place call gives
    np.testing.assert_array_equal(_values(ACTIVATIONS[name][0](F, x, False)),
                                  _values(ACTIVATIONS[name][0](F, x.clone(), True)))


@pytest.mark.parametrize("name", ["relu", "relu6", "hardtanh", "threshold", "leaky_relu", "elu", "silu"])
def test_inplace_on_integers_as_torch(name):
    """relu/relu6/hardtanh/threshold run on integers in place in torch; the float-only ones refuse."""
    outcomes = [_outcome(lambda: _values(ACTIVATIONS[name][0](functional, lib.tensor([[-3, 0, 2, 7]]), True)))
                for lib, functional in LIBS]
    assert outcomes[0][0] == outcomes[1][0], outcomes
    if outcomes[0][0] == "ok":
        np.testing.assert_array_equal(*(o[1] for o in outcomes))


HARDTANH_CALLS = {
    "hardtanh(x)": lambda L, x: L.hardtanh(x), "hardtanh(x, -0.5, 1.5)": lambda L, x: L.hardtanh(x, -0.5, 1.5),
    "hardtanh(x, -2.7, 5.9)": lambda L, x: L.hardtanh(x, -2.7, 5.9), "hardtanh(x, 0.5, 3.5)": lambda L, x: L.hardtanh(x, 0.5, 3.5),
    "hardtanh_(x, 0.5, 3.5)": lambda L, x: L.hardtanh_(x, 0.5, 3.5), "relu6(x)": lambda L, x: L.relu6(x),
    "relu6(x, True)": lambda L, x: L.relu6(x, True),
}


@pytest.mark.parametrize("dtype", ["int64", "int32", "int8", "uint8", "bool"])
@pytest.mark.parametrize("call", list(HARDTANH_CALLS))
def test_hardtanh_and_relu6_of_integers_as_torch(call, dtype):
    """torch's integer kernel cuts the bounds to integers and keeps the dtype (minilora gave floats, so
    relu6(x, inplace=True) of an int64 tensor failed); negative limits for uint8 and bools are errors."""
    outcomes = [_outcome(lambda: (lambda y: (_values(y), str(y.dtype).split(".")[-1]))(
        HARDTANH_CALLS[call](functional, lib.tensor([[-3, 0, 2, 7]]).to(getattr(lib, dtype)))))
        for lib, functional in LIBS]
    assert outcomes[0][0] == outcomes[1][0], outcomes
    if outcomes[0][0] == "ok":
        np.testing.assert_array_equal(outcomes[0][1][0], outcomes[1][1][0])
        assert outcomes[0][1][1] == outcomes[1][1][1] == dtype
    else:
        assert outcomes[0][1] == outcomes[1][1]


@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_inplace_float64_gradient_as_torch(name):
    """On a non-leaf (the output of a mul by a leaf): values and gradients equal torch's, grad_fn set."""
    grads = []
    for lib, functional in LIBS:
        a = lib.tensor(A, requires_grad=True)
        x = a * 1.5
        y = ACTIVATIONS[name][0](functional, x, True)
        assert y is x and y.grad_fn is not None and y.requires_grad
        (y * lib.tensor(A)).sum().backward()
        grads.append((_values(y), a.grad.numpy()))
    np.testing.assert_allclose(grads[0][0], grads[1][0], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(grads[0][1], grads[1][1], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("module", [False, True], ids=["F", "module"])
@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_inplace_on_a_leaf_that_requires_grad_is_torchs_error(name, module):
    call, make = ACTIVATIONS[name]
    for lib, functional in LIBS:
        leaf = lib.tensor(A, requires_grad=True)
        with pytest.raises(RuntimeError, match="a leaf Variable that requires grad is being used in an "
                                               "in-place operation"):
            make(lib.nn, True)(leaf) if module else call(functional, leaf, True)
        assert leaf.grad_fn is None and leaf._version == 0
        with lib.no_grad():  # torch allows it there
            assert call(functional, leaf, True) is leaf
        assert leaf.requires_grad and leaf.grad_fn is None


MODULE_REPRS = ["ReLU", "ReLU6", "SELU", "SiLU", "Mish", "Hardswish", "Hardsigmoid", "RReLU", "Dropout", "Dropout1d",
                "Dropout2d", "Dropout3d", "AlphaDropout", "FeatureAlphaDropout", "LeakyReLU", "ELU", "CELU",
                "Hardtanh"]


@pytest.mark.parametrize("inplace", [False, True])
@pytest.mark.parametrize("name", MODULE_REPRS)
def test_module_repr_as_torch(name, inplace):
    assert repr(getattr(nn, name)(inplace=inplace)) == repr(getattr(tnn, name)(inplace=inplace))
    assert getattr(nn, name)(inplace=inplace).inplace is inplace


def test_threshold_repr_and_positional_inplace_as_torch():
    for args in ((0.1, 20.0), (0.1, 20, True)):
        assert repr(nn.Threshold(*args)) == repr(tnn.Threshold(*args))
    assert repr(nn.LeakyReLU(0.2, True)) == repr(tnn.LeakyReLU(0.2, True)) == "LeakyReLU(negative_slope=0.2, inplace=True)"


# ---- the underscore spellings ------------------------------------------------------------------------------
UNDERSCORE = {  # torch.nn.functional's in-place functions, positional and keyword
    "relu_": lambda L, x: L.relu_(x),
    "elu_": lambda L, x: L.elu_(x, 0.5),
    "elu_ alpha=": lambda L, x: L.elu_(x, alpha=2.0),
    "leaky_relu_": lambda L, x: L.leaky_relu_(x),
    "leaky_relu_ negative_slope=": lambda L, x: L.leaky_relu_(x, negative_slope=0.3),
    "hardtanh_": lambda L, x: L.hardtanh_(x, -0.2, 0.3),
    "hardtanh_ max_val=": lambda L, x: L.hardtanh_(x, max_val=0.5),
    "threshold_": lambda L, x: L.threshold_(x, 0.5, -1.0),
    "rrelu_ (eval)": lambda L, x: L.rrelu_(x, 0.2, 0.4),
    "celu_": lambda L, x: L.celu_(x, alpha=0.5),
    "selu_": lambda L, x: L.selu_(x),
}
METHODS = {  # Tensor methods and torch.* functions of the activation family
    "x.relu_()": lambda lib, x: x.relu_(),
    "x.sigmoid_()": lambda lib, x: x.sigmoid_(),
    "x.tanh_()": lambda lib, x: x.tanh_(),
    "x.clamp_(-0.5, 0.5)": lambda lib, x: x.clamp_(-0.5, 0.5),
    "x.clamp_(min=0.1)": lambda lib, x: x.clamp_(min=0.1),
    "x.clip_(max=0.2)": lambda lib, x: x.clip_(max=0.2),
    "x.clamp_min_(0)": lambda lib, x: x.clamp_min_(0),
    "x.clamp_max_(0.3)": lambda lib, x: x.clamp_max_(0.3),
    "torch.relu_": lambda lib, x: lib.relu_(x),
    "torch.sigmoid_": lambda lib, x: lib.sigmoid_(x),
    "torch.tanh_": lambda lib, x: lib.tanh_(x),
    "torch.clamp_": lambda lib, x: lib.clamp_(x, -0.3, 0.6),
    "torch.clip_": lambda lib, x: lib.clip_(x, min=-0.3),
    "torch.clamp_min_": lambda lib, x: lib.clamp_min_(x, 0.2),
    "torch.clamp_max_": lambda lib, x: lib.clamp_max_(x, 0.2),
}


def _in_place_call(call, lib, arg, dtype):
    x = _tensor(lib, A, dtype)
    y = call(arg, x)
    return y is x, str(y.dtype).split(".")[-1], _values(x)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("name", list(UNDERSCORE) + list(METHODS))
def test_underscore_functions_and_methods_as_torch(name, dtype):
    if name in UNDERSCORE:
        ours, theirs = (_in_place_call(UNDERSCORE[name], lib, functional, dtype) for lib, functional in LIBS)
    else:
        ours, theirs = (_in_place_call(METHODS[name], lib, lib, dtype) for lib, _ in LIBS)
    assert ours[0] and theirs[0] and ours[1] == theirs[1] == dtype
    np.testing.assert_allclose(ours[2], theirs[2], rtol=RTOL[dtype])


# ---- autograd: the version counter, chains of in-place ops, views -----------------------------------------------
PRODUCERS = {  # x made from leaves a, w by an op that may save x (its input or its result) for backward
    "mul": lambda L, a, w: a * w, "add": lambda L, a, w: a + w, "exp": lambda L, a, w: a.exp(),
    "sigmoid": lambda L, a, w: a.sigmoid(), "tanh": lambda L, a, w: a.tanh(), "relu": lambda L, a, w: a.relu(),
    "linear": lambda L, a, w: L.linear(a, w), "layer_norm": lambda L, a, w: L.layer_norm(a, (4,)),
    "softmax": lambda L, a, w: L.softmax(a, -1), "silu": lambda L, a, w: L.silu(a), "gelu": lambda L, a, w: L.gelu(a),
    "pow": lambda L, a, w: a ** 2, "div": lambda L, a, w: a / (w * w + 1), "elu": lambda L, a, w: L.elu(a),
    "clone": lambda L, a, w: a.clone(), "view": lambda L, a, w: (a * w).view(2, 8),
    "transposed": lambda L, a, w: (a * w).t(), "slice": lambda L, a, w: (a * w)[1:3],
}
IN_PLACE = {
    "relu": lambda L, x: L.relu(x, inplace=True), "leaky_relu_": lambda L, x: L.leaky_relu_(x, 0.2),
    "elu_": lambda L, x: L.elu_(x), "selu": lambda L, x: L.selu(x, inplace=True), "celu_": lambda L, x: L.celu_(x, 0.5),
    "hardtanh_": lambda L, x: L.hardtanh_(x, -0.5, 0.5), "relu6": lambda L, x: L.relu6(x, inplace=True),
    "hardswish": lambda L, x: L.hardswish(x, inplace=True), "silu": lambda L, x: L.silu(x, inplace=True),
    "mish": lambda L, x: L.mish(x, inplace=True), "threshold_": lambda L, x: L.threshold_(x, 0.1, 2.0),
    "x.sigmoid_()": lambda L, x: x.sigmoid_(), "x.tanh_()": lambda L, x: x.tanh_(),
    "x.clamp_()": lambda L, x: x.clamp_(-0.3, 0.4),
}


def _backward_through(lib, functional, produce, change):
    """Values of x after the change and the leaves' gradients, or the error backward (or the op) raised."""
    def run():
        a, w = lib.tensor(A, requires_grad=True), lib.tensor(A.T.copy(), requires_grad=True)
        x = produce(functional, a, w)
        y = change(functional, x)
        assert y is x
        (y * y).sum().backward()
        return _values(x), a.grad.numpy(), None if w.grad is None else w.grad.numpy()
    return _outcome(run)


@pytest.mark.parametrize("producer", list(PRODUCERS))
def test_inplace_after_each_op_gradient_or_version_error_as_torch(producer):
    """torch raises at backward where the producer saved the tensor the in-place op changed (exp,
    sigmoid, tanh, relu save their result; mul, linear, pow... their input); elsewhere the gradients
    (float64) are torch's, through views too (the base gets the change and its gradient)."""
    for name, change in IN_PLACE.items():
        ours, theirs = (_backward_through(lib, functional, PRODUCERS[producer], change) for lib, functional in LIBS)
        assert ours[0] == theirs[0], (name, ours, theirs)
        if ours[0] == "ok":
            for mine, torchs in zip(ours[1], theirs[1]):
                assert (mine is None) == (torchs is None), name
                if mine is not None:
                    np.testing.assert_allclose(mine, torchs, rtol=1e-10, atol=1e-12, err_msg=name)
        else:
            assert "modified by an inplace operation" in ours[1] + theirs[1], (name, ours)


CHAINS = {  # a second in-place change after the first, then backward: torch's error where the first saved its result
    "relu_ then mul_": lambda L, x: (L.relu_(x), x.mul_(2)),
    "x.relu_() then add_": lambda L, x: (x.relu_(), x.add_(1)),
    "relu_ twice": lambda L, x: (L.relu_(x), L.relu_(x)),
    "elu_ then add_": lambda L, x: (L.elu_(x), x.add_(1)),
    "selu_ then add_": lambda L, x: (L.selu_(x), x.add_(1)),
    "celu_ then add_": lambda L, x: (L.celu_(x), x.add_(1)),
    "leaky_relu_ then add_": lambda L, x: (L.leaky_relu_(x), x.add_(1)),
    "hardtanh_ then add_": lambda L, x: (L.hardtanh_(x), x.add_(1)),
    "threshold_ then add_": lambda L, x: (L.threshold_(x, 0.1, 2.0), x.add_(1)),
    "hardswish then add_": lambda L, x: (L.hardswish(x, inplace=True), x.add_(1)),
    "silu then mul_": lambda L, x: (L.silu(x, inplace=True), x.mul_(2)),
    "mish then add_": lambda L, x: (L.mish(x, inplace=True), x.add_(1)),
    "x.exp_() then relu_": lambda L, x: (x.exp_(), L.relu_(x)),
    "x.sigmoid_() then add_": lambda L, x: (x.sigmoid_(), x.add_(1)),
    "x.tanh_() then add_": lambda L, x: (x.tanh_(), x.add_(1)),
    "clamp_ then add_": lambda L, x: (x.clamp_(-0.3, 0.4), x.add_(1)),
    "relu then its input mul_": lambda L, x: (L.relu(x).sum(), x.mul_(2)),
    "relu_ of a slice": lambda L, x: L.relu_(x[1:3]),
    "relu_ of a slice of a transpose": lambda L, x: L.relu_(x.t()[1:3]),
    "relu_ of a view": lambda L, x: L.relu_(x.view(2, 8)),
    "slice used, then relu_ of the base": lambda L, x: (x[0:2].sum(), L.relu_(x)),
    "relu_ of a slice, then add_ to it": lambda L, x: (L.relu_(x[1:3]), x[1:3].add_(1)),
    "relu_ of a slice twice": lambda L, x: (L.relu_(x[1:3]), L.relu_(x[1:3])),
    "exp_ of a slice, then add_ elsewhere in the base": lambda L, x: (x[1:3].exp_(), x[3:].add_(1)),
    "elu_ of a slice, then add_ to the base": lambda L, x: (L.elu_(x[1:3]), x.add_(1)),
    "sigmoid_ of a column, then mul_": lambda L, x: (x[:, 0].sigmoid_(), x.mul_(2)),
    "tanh_ of a slice of a transpose": lambda L, x: x.t()[1:3].tanh_(),
    "hardtanh_ of a slice, then add_": lambda L, x: (L.hardtanh_(x[1:3]), x.add_(1)),
}


@pytest.mark.parametrize("name", list(CHAINS))
def test_chains_of_inplace_changes_as_torch(name):
    results = []
    for lib, functional in LIBS:
        def run():
            a = lib.tensor(A, requires_grad=True)
            x = a * 1
            CHAINS[name](functional, x)
            (x * x).sum().backward()
            return _values(x), a.grad.numpy()
        results.append(_outcome(run))
    ours, theirs = results
    assert ours[0] == theirs[0], (ours, theirs)
    if ours[0] == "ok":
        np.testing.assert_allclose(ours[1][0], theirs[1][0], rtol=1e-12)
        np.testing.assert_allclose(ours[1][1], theirs[1][1], rtol=1e-12)
    else:
        assert ours[1].startswith("one of the variables needed for gradient computation has been modified")


def test_relu_inplace_on_a_view_updates_the_base_and_its_gradient():
    for lib, functional in LIBS:
        a = lib.tensor(A, requires_grad=True)
        base = a * 2
        view = base[:, 1:3]
        assert functional.relu(view, inplace=True) is view
        assert (_values(base)[:, 1:3] >= 0).all() and base._version == view._version > 0
        base.sum().backward()
        expected = np.ones_like(A) * 2
        expected[:, 1:3] *= A[:, 1:3] > 0
        np.testing.assert_array_equal(a.grad.numpy(), expected)


# ---- dropout in place ---------------------------------------------------------------------------------------------
DROPOUTS = {  # name: (functional call, module, input shape)
    "dropout": (lambda L, x, p, training, ip: L.dropout(x, p, training, ip), "Dropout", (64, 32)),
    "dropout1d": (lambda L, x, p, training, ip: L.dropout1d(x, p, training, ip), "Dropout1d", (16, 32, 4)),
    "dropout2d": (lambda L, x, p, training, ip: L.dropout2d(x, p, training, ip), "Dropout2d", (16, 32, 2, 2)),
    "dropout3d": (lambda L, x, p, training, ip: L.dropout3d(x, p, training, ip), "Dropout3d", (16, 32, 2, 1, 2)),
    "alpha_dropout": (lambda L, x, p, training, ip: L.alpha_dropout(x, p, training, ip), "AlphaDropout", (64, 32)),
    "feature_alpha_dropout": (lambda L, x, p, training, ip: L.feature_alpha_dropout(x, p, training, ip),
                              "FeatureAlphaDropout", (16, 32, 4)),
}


@pytest.mark.parametrize("name", list(DROPOUTS))
def test_dropout_inplace_is_the_same_draw_written_into_the_input(name):
    """Random masks differ from torch's generator; the in-place call must be minilora's own
    out-of-place result for the same seed, written into the input, with its gradient."""
    call, _, shape = DROPOUTS[name]
    values = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    ml.manual_seed(3)
    expected = call(F, ml.tensor(values), 0.4, True, False)
    ml.manual_seed(3)
    a = ml.tensor(values, requires_grad=True)
    x = a * 1
    assert call(F, x, 0.4, True, True) is x
    np.testing.assert_array_equal(x.numpy(), expected.numpy())
    x.sum().backward()
    grad = a.grad.numpy()
    kept = (x.numpy() != 0) if "alpha" not in name else None
    if kept is not None:  # inverted dropout: 1/(1-p) where kept, 0 where dropped
        np.testing.assert_allclose(grad, kept / 0.6, rtol=1e-6)
    assert np.unique(grad).size <= 2


@pytest.mark.parametrize("name", list(DROPOUTS))
def test_dropout_inplace_edges_as_torch(name):
    """p=0 and eval return the input untouched (a leaf too, no error); p=1 in training zeroes the input
    (alpha dropout: its constant); in training a leaf that requires grad is torch's error."""
    call, module, shape = DROPOUTS[name]
    values = np.random.default_rng(2).standard_normal(shape).astype(np.float32)
    for lib, functional in LIBS:
        leaf = lib.tensor(values, requires_grad=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            assert call(functional, leaf, 0.0, True, True) is leaf
            assert call(functional, leaf, 0.5, False, True) is leaf
            assert getattr(lib.nn, module)(0.5, inplace=True).eval()(leaf) is leaf
            with pytest.raises(RuntimeError, match="a leaf Variable that requires grad"):
                call(functional, leaf, 0.5, True, True)
            np.testing.assert_array_equal(_values(leaf), values)
    results = []
    for lib, functional in LIBS:
        x = lib.tensor(values)
        results.append(_values(call(functional, x, 1.0, True, True)) if x is call(functional, x, 1.0, True, True)
                       else None)
    assert results[0] is not None and results[1] is not None
    np.testing.assert_allclose(results[0], results[1], rtol=1e-6)


def test_dropout_module_inplace_in_training_writes_into_its_input():
    x = ml.ones(200, 50)
    layer = nn.Dropout(0.25, inplace=True)
    assert layer(x) is x
    kept = x.numpy() != 0
    assert abs(kept.mean() - 0.75) < 0.02 and np.allclose(x.numpy()[kept], 1 / 0.75)


# ---- RReLU: random slopes in training -----------------------------------------------------------------------
def test_rrelu_eval_as_torch_and_training_slopes_within_bounds():
    for args in ((), (0.1, 0.3), (0.2, 0.2)):
        ours, theirs = ml.tensor(A, requires_grad=True), torch.tensor(A, requires_grad=True)
        F.rrelu(ours, *args).sum().backward()
        TF.rrelu(theirs, *args).sum().backward()
        np.testing.assert_allclose(ours.grad.numpy(), theirs.grad.numpy(), rtol=1e-12)
        np.testing.assert_allclose(F.rrelu(ours, *args).numpy(), TF.rrelu(theirs, *args).detach().numpy(), rtol=1e-12)
    a = ml.tensor(A, requires_grad=True)
    x = a * 1
    layer = nn.RReLU(0.1, 0.3, inplace=True)
    assert layer(x) is x
    x.sum().backward()
    slopes = a.grad.numpy()
    negative = A <= 0
    np.testing.assert_array_equal(slopes[~negative], 1.0)
    assert ((slopes[negative] >= 0.1) & (slopes[negative] <= 0.3)).all() and np.unique(slopes[negative]).size > 1
    np.testing.assert_allclose(x.detach().numpy(), np.where(negative, A * slopes, A), rtol=1e-12)
    for lib, functional in LIBS:
        with pytest.raises(RuntimeError, match="Lower bound should be less than or equal to the upper bound"):
            functional.rrelu(lib.tensor(A), 0.5, 0.1)


# ---- silu on a transposed tensor (it returned uninitialised memory) --------------------------------------------
def test_silu_and_swiglu_of_a_transposed_tensor_as_torch():
    for fn, torch_fn in ((lambda g, u: F.silu(g), lambda g, u: TF.silu(g)),
                         (F.swiglu, lambda g, u: TF.silu(g) * u)):
        results = []
        for lib in (ml, torch):
            g, u = lib.tensor(A, requires_grad=True), lib.tensor(A * 2, requires_grad=True)
            y = (fn if lib is ml else torch_fn)(g.t(), u.t())
            (y * lib.tensor(A).t()).sum().backward()  # a transposed gradient into backward too
            results.append((_values(y), g.grad.numpy(), None if u.grad is None else u.grad.numpy()))
        for mine, torchs in zip(*results):
            if torchs is not None:
                np.testing.assert_allclose(mine, torchs, rtol=1e-12, atol=1e-14)


# ---- a torchvision-style block: Conv2d -> BatchNorm2d -> ReLU(inplace=True) -> MaxPool2d ---------------------
def _block(lib):
    N = lib.nn
    return N.Sequential(N.Conv2d(3, 4, 3, padding=1), N.BatchNorm2d(4), N.ReLU(inplace=True), N.MaxPool2d(2),
                        N.Flatten(), N.Linear(64, 10), N.ReLU(True), N.Dropout(0.0, inplace=True),
                        N.Linear(10, 3))


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_conv_block_with_inplace_relu_forward_backward_as_torch(dtype):
    torch.manual_seed(0)
    theirs = _block(torch).to(getattr(torch, dtype))
    ours = _block(ml)
    ours.load_state_dict({k: ml.tensor(v.numpy()) for k, v in theirs.state_dict().items()})
    ours = ours.to(getattr(ml, dtype))
    assert repr(ours) == repr(theirs)
    images = np.random.default_rng(4).standard_normal((2, 3, 8, 8))
    tol = dict(rtol=1e-10, atol=1e-12) if dtype == "float64" else dict(rtol=2e-4, atol=1e-5)
    outputs = []
    for lib, model in ((ml, ours), (torch, theirs)):
        x = lib.tensor(images).to(getattr(lib, dtype)).requires_grad_(True)
        out = model(x)
        (out * out).sum().backward()
        outputs.append((out, x.grad))
    np.testing.assert_allclose(_values(outputs[0][0]), _values(outputs[1][0]), **tol)
    np.testing.assert_allclose(_values(outputs[0][1]), _values(outputs[1][1]), **tol)
    for (name, mine), torchs in zip(ours.named_parameters(), theirs.parameters()):
        np.testing.assert_allclose(_values(mine.grad), _values(torchs.grad), err_msg=name, **tol)
    np.testing.assert_allclose(_values(ours[1].running_var), _values(theirs[1].running_var), **tol)


def _basic_block(lib):
    """torchvision's ResNet BasicBlock as its forward is written: ``out += identity`` on the second
    batch norm's output, then ``self.relu(out)`` with ``nn.ReLU(inplace=True)``."""
    N = lib.nn

    class BasicBlock(N.Module):
        def __init__(self):
            super().__init__()
            self.conv1, self.bn1 = N.Conv2d(4, 4, 3, padding=1, bias=False), N.BatchNorm2d(4)
            self.relu = N.ReLU(inplace=True)
            self.conv2, self.bn2 = N.Conv2d(4, 4, 3, padding=1, bias=False), N.BatchNorm2d(4)

        def forward(self, x):
            identity = x
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            out += identity
            return self.relu(out)

    return N.Sequential(N.Conv2d(3, 4, 3, padding=1), N.LeakyReLU(0.2, inplace=True), BasicBlock(), BasicBlock())


def test_resnet_basic_blocks_with_inplace_relu_and_add_as_torch():
    torch.manual_seed(1)
    theirs = _basic_block(torch).double()
    ours = _basic_block(ml)
    ours.load_state_dict({k: ml.tensor(v.numpy()) for k, v in theirs.state_dict().items()})
    ours = ours.double()
    images = np.random.default_rng(5).standard_normal((2, 3, 6, 6))
    results = []
    for lib, model in ((ml, ours), (torch, theirs)):
        x = lib.tensor(images, requires_grad=True)
        out = model(x)
        out.pow(2).sum().backward()
        results.append([_values(out), x.grad.numpy()] + [_values(p.grad) for p in model.parameters()])
    for mine, torchs in zip(*results):
        np.testing.assert_allclose(mine, torchs, rtol=1e-10, atol=1e-12)


def _dcgan(lib):
    """The DCGAN tutorial's layers, small: ConvTranspose2d -> BatchNorm2d -> ReLU(True) ... Tanh, and the
    discriminator's Conv2d -> LeakyReLU(0.2, inplace=True) ... Sigmoid."""
    N = lib.nn
    generator = N.Sequential(N.ConvTranspose2d(4, 6, 4, 1, 0, bias=False), N.BatchNorm2d(6), N.ReLU(True),
                             N.ConvTranspose2d(6, 3, 4, 2, 1, bias=False), N.Tanh())
    discriminator = N.Sequential(N.Conv2d(3, 4, 4, 2, 1, bias=False), N.LeakyReLU(0.2, inplace=True),
                                 N.Conv2d(4, 6, 4, 2, 1, bias=False), N.BatchNorm2d(6),
                                 N.LeakyReLU(0.2, inplace=True), N.Conv2d(6, 1, 2, 1, 0, bias=False), N.Sigmoid())
    return N.Sequential(generator, discriminator)


def test_dcgan_generator_and_discriminator_with_inplace_activations_as_torch():
    torch.manual_seed(2)
    theirs = _dcgan(torch).double()
    ours = _dcgan(ml)
    ours.load_state_dict({k: ml.tensor(v.numpy()) for k, v in theirs.state_dict().items()})
    ours = ours.double()
    noise = np.random.default_rng(6).standard_normal((3, 4, 1, 1))
    results = []
    for lib, model in ((ml, ours), (torch, theirs)):
        out = model(lib.tensor(noise))
        lib.nn.functional.binary_cross_entropy(out.reshape(-1), lib.ones(3, dtype=lib.float64)).backward()
        results.append([_values(out)] + [_values(p.grad) for p in model.parameters()])
    for mine, torchs in zip(*results):
        np.testing.assert_allclose(mine, torchs, rtol=1e-9, atol=1e-12)
