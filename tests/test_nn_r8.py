"""Round 8 of torch.nn's breadth: the modules and functionals tutorials call that minilora lacked
(3-D convolutions, grid_sample / affine_grid, gumbel_softmax, CTC loss, channel shuffle, lazy modules,
F.multi_head_attention_forward), each against torch: values, gradients (float64), seeded init
draws, state_dict layout and the errors of bad calls."""
import warnings

import numpy as np
import pytest

import minilora as ml
import minilora.nn as nn
import minilora.nn.functional as F

torch = pytest.importorskip("torch")
TF = torch.nn.functional


def both(array, requires_grad=False):
    """The same float64 values as a minilora and a torch tensor."""
    array = np.asarray(array, dtype=np.float64)
    return (ml.tensor(array, requires_grad=requires_grad),
            torch.tensor(array, requires_grad=requires_grad))


def close(ours, theirs, tol=1e-10):
    theirs = theirs.detach().numpy() if isinstance(theirs, torch.Tensor) else np.asarray(theirs)
    ours = ours.detach().numpy() if isinstance(ours, ml.Tensor) else np.asarray(ours)
    assert ours.shape == theirs.shape, (ours.shape, theirs.shape)
    np.testing.assert_allclose(ours, theirs, rtol=tol, atol=tol)


def check_values_and_grads(ml_fn, torch_fn, *arrays, seed=0, tol=1e-10):
    """Outputs and every input's gradient (float64, a random output gradient) against torch's."""
    pairs = [both(a, requires_grad=True) for a in arrays]
    ours, theirs = ml_fn(*(m for m, _ in pairs)), torch_fn(*(t for _, t in pairs))
    close(ours, theirs, tol)
    g = np.random.default_rng(seed).standard_normal(tuple(theirs.shape))
    ours.backward(ml.tensor(g))
    theirs.backward(torch.tensor(g))
    for m, t in pairs:
        close(m.grad, t.grad, tol)


def randn(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


def same_error(call_ml, call_torch):
    with pytest.raises(Exception) as theirs:
        call_torch()
    with pytest.raises(type(theirs.value)):
        call_ml()


# ---- 3-D convolutions --------------------------------------------------------------------------------
CONV3D = [  # input shape, weight shape, keyword arguments
    ((2, 4, 5, 6, 7), (6, 2, 3, 2, 3), dict(stride=(2, 1, 2), padding=(1, 0, 2), dilation=(2, 1, 1), groups=2)),
    ((2, 3, 5, 6, 5), (4, 3, 2, 3, 2), dict(padding="same", dilation=(1, 2, 1))),
    ((3, 5, 6, 7), (4, 3, 2, 3, 2), dict(padding="valid")),  # unbatched
    ((1, 2, 4, 4, 4), (3, 2, 1, 1, 1), dict(stride=3)),
]


@pytest.mark.parametrize("x_shape, w_shape, kwargs", CONV3D)
def test_conv3d_values_and_grads_as_torch(x_shape, w_shape, kwargs):
    bias = randn(w_shape[0], seed=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (torch's note on 'same' with an even kernel)
        check_values_and_grads(lambda x, w, b: F.conv3d(x, w, b, **kwargs), lambda x, w, b: TF.conv3d(x, w, b, **kwargs),
                               randn(*x_shape), randn(*w_shape, seed=1), bias)


CONV_TRANSPOSE3D = [
    ((2, 4, 3, 4, 5), (4, 3, 3, 2, 3), dict(stride=(2, 3, 1), padding=(1, 0, 1), output_padding=(1, 2, 0), groups=2,
                                           dilation=(1, 1, 2))),
    ((4, 3, 4, 5), (4, 3, 2, 2, 3), dict(stride=3, dilation=2, padding=2, output_padding=1)),  # unbatched
    ((1, 2, 2, 2, 2), (2, 1, 1, 2, 2), dict()),
]


@pytest.mark.parametrize("x_shape, w_shape, kwargs", CONV_TRANSPOSE3D)
def test_conv_transpose3d_values_and_grads_as_torch(x_shape, w_shape, kwargs):
    bias = randn(w_shape[1] * kwargs.get("groups", 1), seed=2)
    check_values_and_grads(lambda x, w, b: F.conv_transpose3d(x, w, b, **kwargs),
                           lambda x, w, b: TF.conv_transpose3d(x, w, b, **kwargs),
                           randn(*x_shape), randn(*w_shape, seed=1), bias)


def test_conv3d_positional_arguments_and_float32():
    x, w = randn(1, 2, 4, 5, 6).astype(np.float32), randn(3, 2, 2, 2, 2, seed=1).astype(np.float32)
    ours = F.conv3d(ml.tensor(x), ml.tensor(w), None, 2, 1, 1, 1)
    theirs = TF.conv3d(torch.tensor(x), torch.tensor(w), None, 2, 1, 1, 1)
    assert ours.dtype == ml.float32
    close(ours, theirs, 1e-5)
    assert ours.grad_fn is None


@pytest.mark.parametrize("call", [
    lambda L: L.nn.functional.conv3d(L.zeros(1, 2, 2, 2, 2), L.zeros(3, 2, 3, 3, 3)),  # kernel larger than input
    lambda L: L.nn.functional.conv3d(L.zeros(1, 3, 4, 4, 4), L.zeros(3, 2, 1, 1, 1)),  # channels
    lambda L: L.nn.functional.conv3d(L.zeros(1, 2, 4, 4), L.zeros(3, 2, 1, 1, 1)[0]),  # a 4-D weight
    lambda L: L.nn.functional.conv3d(L.zeros(1, 2, 4, 4, 4), L.zeros(3, 2, 1, 1, 1), stride=0),
    lambda L: L.nn.functional.conv3d(L.zeros(1, 2, 4, 4, 4), L.zeros(3, 2, 1, 1, 1), stride=(1, 1)),
    lambda L: L.nn.functional.conv3d(L.zeros(1, 2, 4, 4, 4), L.zeros(3, 2, 2, 2, 2), padding="same", stride=2),
    lambda L: L.nn.functional.conv_transpose3d(L.zeros(1, 2, 2, 2, 2), L.zeros(3, 2, 1, 1, 1)),  # channels
    lambda L: L.nn.functional.conv_transpose3d(L.zeros(1, 2, 2, 2, 2), L.zeros(2, 2, 1, 1, 1), output_padding=1),
    lambda L: L.nn.functional.conv_transpose3d(L.zeros(1, 2, 1, 1, 1), L.zeros(2, 2, 1, 1, 1), padding=1),
])
def test_bad_3d_convolutions_raise_as_torch(call):
    same_error(lambda: call(ml), lambda: call(torch))


@pytest.mark.parametrize("name, args, kwargs, shape", [
    ("Conv3d", (4, 6, (2, 3, 1)), dict(stride=2, groups=2, padding=(1, 0, 0)), (2, 4, 5, 5, 5)),
    ("Conv3d", (2, 3, 3), dict(padding=1, padding_mode="reflect", bias=False), (1, 2, 4, 4, 4)),
    ("Conv3d", (2, 3, 3), dict(padding="same", padding_mode="circular"), (1, 2, 4, 4, 4)),
    ("ConvTranspose3d", (4, 6, 3), dict(stride=2, groups=2, output_padding=1), (2, 4, 3, 3, 3)),
])
def test_3d_convolution_modules_init_state_dict_and_output_as_torch(name, args, kwargs, shape):
    torch.manual_seed(0)
    ml.manual_seed(0)
    theirs, ours = getattr(torch.nn, name)(*args, **kwargs), getattr(nn, name)(*args, **kwargs)
    assert repr(ours) == repr(theirs)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    for key, value in theirs.state_dict().items():
        close(ours.state_dict()[key], value, 0)  # the same draws, bit for bit
    x_torch, x_ml = torch.randn(*shape), ml.randn(*shape)
    close(ours(x_ml), theirs(x_torch), 1e-5)


def test_conv_transpose3d_module_output_size():
    torch.manual_seed(0)
    ml.manual_seed(0)
    theirs, ours = torch.nn.ConvTranspose3d(2, 3, 3, stride=2), nn.ConvTranspose3d(2, 3, 3, stride=2)
    x = randn(1, 2, 3, 3, 3).astype(np.float32)
    out = ours(ml.tensor(x), output_size=[8, 7, 8])
    close(out, theirs(torch.tensor(x), output_size=[8, 7, 8]), 1e-5)
    assert tuple(out.shape) == (1, 3, 8, 7, 8)


# ---- gumbel_softmax ----------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs", [dict(), dict(tau=0.5), dict(hard=True), dict(tau=2.0, hard=True, dim=0)])
def test_gumbel_softmax_draws_and_gradients_as_torch(kwargs):
    """A seeded call gives torch's sample (its exponential noise, drawn in torch's order); ``hard=True``
    is a one-hot whose gradient is the soft sample's (straight-through)."""
    logits = randn(4, 5)
    ours_in, theirs_in = both(logits, requires_grad=True)
    torch.manual_seed(7)
    ml.manual_seed(7)
    ours, theirs = F.gumbel_softmax(ours_in, **kwargs), TF.gumbel_softmax(theirs_in, **kwargs)
    close(ours, theirs, 1e-12)
    weights = randn(4, 5, seed=3)
    (ours * ml.tensor(weights)).sum().backward()
    (theirs * torch.tensor(weights)).sum().backward()
    close(ours_in.grad, theirs_in.grad, 1e-12)
    assert torch.rand(1).item() == ml.rand(1).item()  # both generators moved on alike


def test_gumbel_softmax_positional_and_eps_warning():
    ml.manual_seed(0)
    torch.manual_seed(0)
    logits = randn(2, 3).astype(np.float32)
    ours = F.gumbel_softmax(ml.tensor(logits), 1, True, 1e-10, -1)
    close(ours, TF.gumbel_softmax(torch.tensor(logits), 1, True, 1e-10, -1), 1e-6)
    assert ours.dtype == ml.float32
    with pytest.warns(UserWarning, match="eps"):
        F.gumbel_softmax(ml.tensor(logits), eps=1e-5)


# ---- channel shuffle ---------------------------------------------------------------------------------
def test_channel_shuffle_as_torch():
    x = np.arange(2 * 6 * 2 * 3, dtype=np.float64).reshape(2, 6, 2, 3)
    for groups in (1, 2, 3, 6):
        check_values_and_grads(lambda t: F.channel_shuffle(t, groups), lambda t: TF.channel_shuffle(t, groups), x)
        close(nn.ChannelShuffle(groups)(ml.tensor(x)), torch.nn.ChannelShuffle(groups)(torch.tensor(x)), 0)
    close(F.native_channel_shuffle(ml.tensor(x[0]), 2), TF.native_channel_shuffle(torch.tensor(x[0]), 2), 0)
    assert repr(nn.ChannelShuffle(3)) == repr(torch.nn.ChannelShuffle(3))


@pytest.mark.parametrize("shape, groups", [((2, 6), 2), ((1, 5, 2), 2), ((1, 4, 2), 0), ((1, 4, 2), -2)])
def test_channel_shuffle_errors_as_torch(shape, groups):
    with pytest.raises(RuntimeError) as theirs:
        TF.channel_shuffle(torch.zeros(shape), groups)
    with pytest.raises(RuntimeError) as ours:
        F.channel_shuffle(ml.zeros(shape), groups)
    assert str(ours.value) == str(theirs.value)


# ---- lazy modules ------------------------------------------------------------------------------------
LAZY = [("LazyLinear", (3,), (2, 7)), ("LazyLinear", (3, False), (2, 5, 4)), ("LazyConv1d", (4, 3), (5, 6)),
        ("LazyConv2d", (4, 3), (2, 5, 6, 6)), ("LazyConv3d", (4, 2), (1, 2, 3, 3, 3)),
        ("LazyConvTranspose1d", (4, 3), (2, 3, 5)), ("LazyConvTranspose2d", (4, 3), (1, 2, 4, 4)),
        ("LazyConvTranspose3d", (4, 2), (1, 2, 2, 2, 2))]


@pytest.mark.parametrize("name, args, shape", LAZY)
def test_lazy_modules_draw_at_first_call_as_torch(name, args, shape):
    torch.manual_seed(0)
    ml.manual_seed(0)
    theirs, ours = getattr(torch.nn, name)(*args), getattr(nn, name)(*args)
    assert repr(ours) == repr(theirs)
    assert isinstance(ours.weight, nn.UninitializedParameter) and ours.has_uninitialized_params()
    x_torch, x_ml = torch.randn(*shape), ml.randn(*shape)
    close(ours(x_ml), theirs(x_torch), 1e-5)
    assert type(ours).__name__ == type(theirs).__name__  # LazyLinear became Linear
    assert repr(ours) == repr(theirs)
    for key, value in theirs.state_dict().items():
        close(ours.state_dict()[key], value, 0)
    assert torch.rand(1).item() == ml.rand(1).item()


def test_uninitialized_parameter_refuses_its_shape_and_loading_materialises():
    layer = nn.LazyLinear(3)
    with pytest.raises(RuntimeError, match="uninitialized parameter"):
        layer.weight.shape
    assert repr(layer.weight) == "<UninitializedParameter>"
    state = {"weight": np.ones((3, 2), np.float32), "bias": np.zeros(3, np.float32)}
    layer.load_state_dict(state)
    assert tuple(layer.weight.shape) == (3, 2)
    out = layer(ml.ones(1, 2))  # nothing drawn: the loaded values stay
    close(out, np.full((1, 3), 2.0, np.float32), 0)
    assert type(layer) is nn.Linear and layer.in_features == 2
    layer = nn.LazyLinear(3)
    layer.load_state_dict(state)
    with pytest.raises(AssertionError, match="in_features"):
        layer(ml.ones(1, 5))


def test_lazy_conv_refuses_channels_not_divisible_by_groups():
    with pytest.raises(ValueError, match="divisible by groups"):
        nn.LazyConv2d(4, 3, groups=2)(ml.zeros(1, 3, 5, 5))
