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
        assert (m.grad is None) == (t.grad is None)  # (an input the call leaves unused: no gradient in both)
        if t.grad is not None:
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
        check_values_and_grads(lambda x, w, b: F.conv3d(x, w, b, **kwargs),
                               lambda x, w, b: TF.conv3d(x, w, b, **kwargs),
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


# ---- grid_sample / affine_grid -----------------------------------------------------------------------
SAMPLING = [(mode, padding_mode, align_corners) for mode in ("bilinear", "nearest", "bicubic")
            for padding_mode in ("zeros", "border", "reflection") for align_corners in (False, True)]


@pytest.mark.parametrize("mode, padding_mode, align_corners", SAMPLING)
def test_grid_sample_values_and_grads_as_torch(mode, padding_mode, align_corners):
    """Points inside and outside the image (|grid| up to 1.4), gradients for the image and the grid."""
    grid = np.random.default_rng(1).uniform(-1.4, 1.4, (2, 4, 7, 2))
    grid[0, 0, :3] = [[1.0, -1.0], [0.5, 0.0], [-1.0, 1.0]]  # corners and a half-pixel (rounding to even)
    kwargs = dict(mode=mode, padding_mode=padding_mode, align_corners=align_corners)
    check_values_and_grads(lambda x, g: F.grid_sample(x, g, **kwargs), lambda x, g: TF.grid_sample(x, g, **kwargs),
                           randn(2, 3, 5, 6), grid)


@pytest.mark.parametrize("mode, padding_mode, align_corners",
                         [s for s in SAMPLING if s[0] != "bicubic" and (s[1] == "reflection" or not s[2])])
def test_grid_sample_3d_as_torch(mode, padding_mode, align_corners):
    grid = np.random.default_rng(2).uniform(-1.3, 1.3, (2, 3, 2, 4, 3))
    kwargs = dict(mode=mode, padding_mode=padding_mode, align_corners=align_corners)
    check_values_and_grads(lambda x, g: F.grid_sample(x, g, **kwargs), lambda x, g: TF.grid_sample(x, g, **kwargs),
                           randn(2, 2, 4, 5, 3), grid)


@pytest.mark.parametrize("size", [(2, 3, 4, 5), (2, 3, 1, 5), (2, 3, 3, 4, 5)])
@pytest.mark.parametrize("align_corners", [False, True])
def test_affine_grid_values_and_grads_as_torch(size, align_corners):
    rank = len(size) - 2
    theta = randn(2, rank, rank + 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (torch's note on unit-size grids with align_corners)
        check_values_and_grads(lambda t: F.affine_grid(t, size, align_corners),
                               lambda t: TF.affine_grid(t, size, align_corners), theta)
        ours = F.affine_grid(ml.tensor(theta.astype(np.float32)), list(size), align_corners=align_corners)
        theirs = TF.affine_grid(torch.tensor(theta.astype(np.float32)), list(size), align_corners=align_corners)
    assert ours.dtype == ml.float32
    close(ours, theirs, 1e-6)


def test_spatial_transformer_step_as_torch():
    """The STN tutorial's step: affine_grid of a predicted theta, then grid_sample; float32, both gradients."""
    image, theta = randn(2, 1, 6, 6).astype(np.float32), randn(2, 2, 3, seed=1).astype(np.float32) * 0.5
    results = []
    for lib, fn in ((ml, F), (torch, TF)):
        x, t = lib.tensor(image, requires_grad=True), lib.tensor(theta, requires_grad=True)
        out = fn.grid_sample(x, fn.affine_grid(t, x.size(), align_corners=False), align_corners=False)
        (out * out).sum().backward()
        results.append((out, x.grad, t.grad))
    for ours, theirs in zip(*results):
        close(ours, theirs, 1e-5)


def test_grid_sample_default_align_corners_warns_as_torch():
    with pytest.warns(UserWarning, match="align_corners=False"):
        F.grid_sample(ml.zeros(1, 1, 2, 2), ml.zeros(1, 1, 1, 2))
    with pytest.warns(UserWarning, match="align_corners=False"):
        F.affine_grid(ml.zeros(1, 2, 3), (1, 1, 2, 2))


@pytest.mark.parametrize("call", [
    lambda L: L.nn.functional.grid_sample(L.zeros(1, 1, 2, 2), L.zeros(1, 1, 1, 2), mode="linear", align_corners=False),
    lambda L: L.nn.functional.grid_sample(L.zeros(1, 1, 2, 2), L.zeros(1, 1, 1, 2), padding_mode="edge",
                                          align_corners=False),
    lambda L: L.nn.functional.grid_sample(L.zeros(1, 1, 2, 2), L.zeros(1, 1, 1, 3), align_corners=False),
    lambda L: L.nn.functional.grid_sample(L.zeros(2, 1, 2, 2), L.zeros(1, 1, 1, 2), align_corners=False),
    lambda L: L.nn.functional.grid_sample(L.zeros(1, 1, 2, 2), L.zeros(1, 1, 1, 2, 2), align_corners=False),
    lambda L: L.nn.functional.grid_sample(L.zeros(1, 1, 2, 2, 2), L.zeros(1, 1, 1, 1, 3), mode="bicubic",
                                          align_corners=False),
    lambda L: L.nn.functional.grid_sample(L.zeros(1, 1, 2, 2), L.zeros(1, 1, 1, 2, dtype=L.float64),
                                          align_corners=False),
    lambda L: L.nn.functional.affine_grid(L.zeros(1, 2, 3), (1, 1, 2, 2, 2), align_corners=False),
    lambda L: L.nn.functional.affine_grid(L.zeros(1, 2, 3), (1, 1, 2), align_corners=False),
    lambda L: L.nn.functional.affine_grid(L.zeros(1, 2, 3, dtype=L.int64), (1, 1, 2, 2), align_corners=False),
    lambda L: L.nn.functional.affine_grid(L.zeros(1, 2, 3), (1, 1, 0, 2), align_corners=False),
])
def test_bad_sampling_calls_raise_as_torch(call):
    same_error(lambda: call(ml), lambda: call(torch))


# ---- CTC loss ----------------------------------------------------------------------------------------
def _ctc_case():
    rng = np.random.default_rng(0)
    log_probs = torch.tensor(rng.standard_normal((8, 4, 5))).log_softmax(2).numpy()
    targets = rng.integers(1, 5, (4, 4))
    targets[0, 1] = targets[0, 0]  # a repeated label: needs a blank between
    input_lengths, target_lengths = [8, 7, 5, 2], [4, 3, 0, 3]  # the last has no alignment (infinite loss)
    return log_probs, targets, input_lengths, target_lengths


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("zero_infinity", [False, True])
@pytest.mark.parametrize("concatenated", [False, True])
def test_ctc_loss_values_and_grads_as_torch(reduction, zero_infinity, concatenated):
    """The loss and ``log_probs.grad`` of torch's docs example (a leaf of log-softmax values): torch's
    gradient formula, nan where a loss is infinite unless ``zero_infinity``."""
    log_probs, targets, input_lengths, target_lengths = _ctc_case()
    if concatenated:
        targets = np.concatenate([row[:n] for row, n in zip(targets, target_lengths)])
    ours_in, theirs_in = both(log_probs, requires_grad=True)
    ours = F.ctc_loss(ours_in, ml.tensor(targets), ml.tensor(input_lengths), ml.tensor(target_lengths),
                      reduction=reduction, zero_infinity=zero_infinity)
    theirs = TF.ctc_loss(theirs_in, torch.tensor(targets), torch.tensor(input_lengths), torch.tensor(target_lengths),
                         reduction=reduction, zero_infinity=zero_infinity)
    close(ours, theirs, 1e-12)
    g = randn(*theirs.shape, seed=4)
    ours.backward(ml.tensor(g))
    theirs.backward(torch.tensor(g))
    close(ours_in.grad, theirs_in.grad, 1e-9)


def test_ctc_loss_gradcheck_through_log_softmax():
    """Composed with log_softmax (as CTC is used) torch's gradient is the exact one."""
    _, targets, _, _ = _ctc_case()
    logits = ml.tensor(randn(6, 2, 5), requires_grad=True)
    loss = lambda x: F.ctc_loss(x.log_softmax(2), ml.tensor(targets[:2, :3]), [6, 5], [3, 2])  # noqa: E731
    assert ml.autograd.gradcheck(loss, (logits,))


def test_ctc_loss_module_blank_unbatched_and_float32():
    log_probs, targets, _, _ = _ctc_case()
    lp32 = log_probs.astype(np.float32)
    ours = nn.CTCLoss(blank=4, reduction="sum")(ml.tensor(lp32), ml.tensor(targets - 1), (8, 8, 6, 5), (4, 2, 1, 3))
    theirs = torch.nn.CTCLoss(blank=4, reduction="sum")(torch.tensor(lp32), torch.tensor(targets - 1), (8, 8, 6, 5),
                                                          (4, 2, 1, 3))
    assert ours.dtype == ml.float32
    close(ours, theirs, 1e-5)
    ours = F.ctc_loss(ml.tensor(log_probs[:, 0]), ml.tensor(targets[0]), ml.tensor(8), ml.tensor(4), 0, "none")
    theirs = TF.ctc_loss(torch.tensor(log_probs[:, 0]), torch.tensor(targets[0]), torch.tensor(8), torch.tensor(4),
                         0, "none")
    close(ours, theirs, 1e-12)
    assert repr(nn.CTCLoss()) == repr(torch.nn.CTCLoss())


@pytest.mark.parametrize("change", [
    dict(input_lengths=[8, 7, 5]), dict(target_lengths=[4, 3, 0]), dict(input_lengths=[9, 7, 5, 2]),
    dict(target_lengths=[5, 3, 0, 3]), dict(blank=5), dict(reduction="average"), dict(dtype="int32"),
])
def test_bad_ctc_calls_raise_as_torch(change):
    log_probs, targets, input_lengths, target_lengths = _ctc_case()
    args = dict(input_lengths=input_lengths, target_lengths=target_lengths, blank=0, reduction="mean")
    dtype = change.pop("dtype", None)
    args.update(change)
    calls = []
    for lib, fn in ((ml, F), (torch, TF)):
        lp = lib.tensor(log_probs)
        lp = lp.to(getattr(lib, dtype)) if dtype else lp
        calls.append(lambda lib=lib, fn=fn, lp=lp: fn.ctc_loss(
            lp, lib.tensor(targets), lib.tensor(args["input_lengths"]), lib.tensor(args["target_lengths"]),
            args["blank"], args["reduction"]))
    same_error(*calls)


# ---- F.multi_head_attention_forward ------------------------------------------------------------------
def _attention_weights(seed=0, e=8, kdim=None):
    rng = np.random.default_rng(seed)
    kdim = kdim or e
    return dict(in_proj_weight=rng.standard_normal((3 * e, e)) * 0.3, in_proj_bias=rng.standard_normal(3 * e),
                out_proj_weight=rng.standard_normal((e, e)) * 0.3, out_proj_bias=rng.standard_normal(e),
                q_proj_weight=rng.standard_normal((e, e)) * 0.3, k_proj_weight=rng.standard_normal((e, kdim)) * 0.3,
                v_proj_weight=rng.standard_normal((e, kdim)) * 0.3, bias_k=rng.standard_normal((1, 1, e)),
                bias_v=rng.standard_normal((1, 1, e)))


@pytest.mark.parametrize("case", ["packed", "separate", "bias_kv+zero_attn", "masks", "unbatched", "static_kv",
                                  "per-head weights"])
def test_multi_head_attention_forward_as_torch(case):
    e, heads, length, source, n = 8, 2, 5, 6, 3
    weights = _attention_weights()
    names = ["query", "key", "value"] + sorted(weights)
    arrays = [randn(length, n, e, seed=1), randn(source, n, e, seed=2), randn(source, n, e, seed=3)]
    arrays += [weights[k] for k in sorted(weights)]
    options = dict(use_separate_proj_weight=case == "separate", average_attn_weights=case != "per-head weights")
    mask = np.triu(np.ones((length, source), bool), 2)
    padding = np.zeros((n, source), bool)
    padding[1, -2:] = True

    def call(lib, fn, *tensors):
        t = dict(zip(names, tensors))
        if case == "unbatched":
            t["query"], t["key"], t["value"] = t["query"][:, 0], t["key"][:, 0], t["value"][:, 0]
        kv = case == "bias_kv+zero_attn"
        extra = {}
        if case == "masks":
            extra = dict(attn_mask=lib.tensor(mask), key_padding_mask=lib.tensor(padding))
        if case == "static_kv":
            extra = dict(static_k=t["key"].reshape(source, n * heads, e // heads).transpose(0, 1),
                         static_v=t["value"].reshape(source, n * heads, e // heads).transpose(0, 1))
        out, attention = fn.multi_head_attention_forward(
            t["query"], t["key"], t["value"], e, heads, t["in_proj_weight"], t["in_proj_bias"],
            t["bias_k"] if kv else None, t["bias_v"] if kv else None, kv, 0.0, t["out_proj_weight"],
            t["out_proj_bias"], training=True, q_proj_weight=t["q_proj_weight"], k_proj_weight=t["k_proj_weight"],
            v_proj_weight=t["v_proj_weight"], **options, **extra)
        return (out * lib.tensor(np.cos(np.arange(out.numel())).reshape(tuple(out.shape)))).sum() + \
            (attention * attention).sum()

    check_values_and_grads(lambda *ts: call(ml, F, *ts), lambda *ts: call(torch, TF, *ts), *arrays)


def test_multi_head_attention_module_is_the_functional():
    """nn.MultiheadAttention's forward is F.multi_head_attention_forward with its own weights."""
    torch.manual_seed(0)
    ml.manual_seed(0)
    theirs, ours = torch.nn.MultiheadAttention(8, 2), nn.MultiheadAttention(8, 2)
    x = randn(5, 3, 8).astype(np.float32)
    out, attention = F.multi_head_attention_forward(
        ml.tensor(x), ml.tensor(x), ml.tensor(x), 8, 2, ours.in_proj_weight, ours.in_proj_bias, None, None, False,
        0.0, ours.out_proj.weight, ours.out_proj.bias)
    expected, expected_attention = theirs(torch.tensor(x), torch.tensor(x), torch.tensor(x))
    close(out, expected, 1e-5)
    close(attention, expected_attention, 1e-6)
    close(ours(ml.tensor(x), ml.tensor(x), ml.tensor(x))[0], expected, 1e-5)
    with pytest.raises(AssertionError, match="embedding dimension"):
        F.multi_head_attention_forward(ml.tensor(x), ml.tensor(x), ml.tensor(x), 6, 2, ours.in_proj_weight, None,
                                       None, None, False, 0.0, ours.out_proj.weight, None)


# ---- 3-D pooling and padding -------------------------------------------------------------------------
POOL3D = [
    ("max_pool3d", dict(kernel_size=(2, 3, 2), stride=(1, 2, 2), padding=(1, 1, 0), dilation=(2, 1, 1))),
    ("max_pool3d", dict(kernel_size=3, stride=2, padding=1, ceil_mode=True, return_indices=True)),
    ("avg_pool3d", dict(kernel_size=(2, 3, 2), stride=(1, 2, 2), padding=(1, 1, 0))),
    ("avg_pool3d", dict(kernel_size=3, stride=2, padding=1, ceil_mode=True, count_include_pad=False)),
    ("avg_pool3d", dict(kernel_size=2, divisor_override=3)),
    ("adaptive_avg_pool3d", dict(output_size=(2, 4, 3))),
    ("adaptive_avg_pool3d", dict(output_size=(None, 3, 1))),
    ("adaptive_max_pool3d", dict(output_size=(2, 4, 3), return_indices=True)),
]


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("name, kwargs", POOL3D)
def test_3d_pooling_values_indices_and_grads_as_torch(name, kwargs, ties):
    """``ties``: small integers, so windows hold equal maxima: torch's first in (depth, row, column) order."""
    rng = np.random.default_rng(5)
    x = rng.integers(0, 3, (2, 3, 5, 6, 7)).astype(np.float64) if ties else rng.standard_normal((2, 3, 5, 6, 7))
    for shape in ((2, 3, 5, 6, 7), (3, 5, 6, 7)):  # batched and unbatched
        values = x.reshape(shape) if len(shape) == 5 else x[0]
        ours_in, theirs_in = both(values, requires_grad=True)
        ours, theirs = getattr(F, name)(ours_in, **kwargs), getattr(TF, name)(theirs_in, **kwargs)
        if kwargs.get("return_indices"):
            assert ours[1].dtype == ml.int64
            np.testing.assert_array_equal(ours[1].numpy(), theirs[1].numpy())
            ours, theirs = ours[0], theirs[0]
        close(ours, theirs, 1e-12)
        g = randn(*theirs.shape, seed=6)
        ours.backward(ml.tensor(g))
        theirs.backward(torch.tensor(g))
        close(ours_in.grad, theirs_in.grad, 1e-12)


@pytest.mark.parametrize("name, args", [("MaxPool3d", (3, 2, 1)), ("AvgPool3d", ((2, 3, 1),)),
                                        ("AdaptiveAvgPool3d", ((1, 2, 3),)), ("AdaptiveMaxPool3d", (2,)),
                                        ("ConstantPad3d", (1, 2.5)), ("ZeroPad3d", ((1, 2, 0, 1, 1, 0),)),
                                        ("ReflectionPad3d", (1,)), ("ReplicationPad3d", ((2, 0, 1, 1, 0, 2),)),
                                        ("CircularPad3d", (1,))])
def test_3d_pooling_and_padding_modules_as_torch(name, args):
    ours, theirs = getattr(nn, name)(*args), getattr(torch.nn, name)(*args)
    assert repr(ours) == repr(theirs)
    x = randn(2, 3, 4, 5, 6).astype(np.float32)
    close(ours(ml.tensor(x)), theirs(torch.tensor(x)), 1e-6)


# ---- gradcheck (float64 finite differences) of the new differentiable ops -----------------------------
@pytest.mark.parametrize("name", ["conv3d", "conv_transpose3d", "grid_sample bilinear", "grid_sample bicubic",
                                  "grid_sample 3-D reflection", "affine_grid", "avg_pool3d", "max_pool3d",
                                  "adaptive_avg_pool3d", "gumbel_softmax"])
def test_gradcheck(name):
    rng = np.random.default_rng(8)
    leaf = lambda *shape: ml.tensor(rng.standard_normal(shape), requires_grad=True)  # noqa: E731
    grid = lambda *shape: ml.tensor(rng.uniform(-1.2, 1.2, shape), requires_grad=True)  # noqa: E731
    cases = {
        "conv3d": (lambda x, w: F.conv3d(x, w, stride=(1, 2, 1), padding=1, groups=2),
                   (leaf(1, 2, 3, 4, 3), leaf(2, 1, 2, 2, 2))),
        "conv_transpose3d": (lambda x, w: F.conv_transpose3d(x, w, stride=2, output_padding=1, dilation=(1, 1, 2)),
                             (leaf(1, 2, 2, 3, 2), leaf(2, 2, 2, 1, 2))),
        "grid_sample bilinear": (lambda x, g: F.grid_sample(x, g, padding_mode="border", align_corners=False),
                                 (leaf(1, 2, 4, 5), grid(1, 3, 2, 2))),
        "grid_sample bicubic": (lambda x, g: F.grid_sample(x, g, mode="bicubic", align_corners=True),
                                (leaf(1, 2, 4, 5), grid(1, 3, 2, 2))),
        "grid_sample 3-D reflection": (lambda x, g: F.grid_sample(x, g, padding_mode="reflection",
                                                                  align_corners=False),
                                       (leaf(1, 1, 3, 4, 3), grid(1, 2, 2, 1, 3))),
        "affine_grid": (lambda t: F.affine_grid(t, (2, 1, 3, 4), align_corners=False), (leaf(2, 2, 3),)),
        "avg_pool3d": (lambda x: F.avg_pool3d(x, 2, 1, 1, True, False), (leaf(1, 2, 3, 4, 3),)),
        "max_pool3d": (lambda x: F.max_pool3d(x, 2, 1), (leaf(1, 2, 3, 4, 3),)),
        "adaptive_avg_pool3d": (lambda x: F.adaptive_avg_pool3d(x, (2, 3, 2)), (leaf(1, 2, 3, 4, 3),)),
        "gumbel_softmax": (lambda x: (ml.manual_seed(0), F.gumbel_softmax(x, tau=0.7))[1], (leaf(3, 4),)),
    }
    fn, inputs = cases[name]
    assert ml.autograd.gradcheck(fn, inputs)


def test_3d_convolutions_autocast_to_bfloat16_as_torch():
    """conv3d / conv_transpose3d are on torch's autocast lists (lower precision), as conv2d."""
    x, w = randn(1, 2, 3, 4, 3).astype(np.float32), randn(2, 2, 2, 2, 2, seed=1).astype(np.float32)
    for name in ("conv3d", "conv_transpose3d"):
        with ml.autocast("cpu"):
            ours = getattr(F, name)(ml.tensor(x), ml.tensor(w))
        with torch.autocast("cpu"):
            theirs = getattr(TF, name)(torch.tensor(x), torch.tensor(w))
        assert str(ours.dtype) == "bfloat16" and theirs.dtype == torch.bfloat16
        close(ours.float(), theirs.float(), 2e-2)


# ---- more siblings: max_unpool3d, lp_pool3d, pdist, the *_with_indices forms, interpolate 'area' in 3-D --------
def test_max_unpool3d_inverts_max_pool3d_as_torch():
    x = randn(2, 3, 4, 4, 6)
    pooled, indices = TF.max_pool3d(torch.tensor(x), 2, return_indices=True)
    for output_size in (None, (5, 5, 7), [2, 3, 5, 5, 7]):
        ours_in, theirs_in = both(pooled.numpy(), requires_grad=True)
        ours = nn.MaxUnpool3d(2)(ours_in, ml.tensor(indices.numpy()), output_size)
        theirs = torch.nn.MaxUnpool3d(2)(theirs_in, indices, output_size)
        close(ours, theirs, 0)
        g = randn(*theirs.shape, seed=2)
        ours.backward(ml.tensor(g))
        theirs.backward(torch.tensor(g))
        close(ours_in.grad, theirs_in.grad, 0)
    assert repr(nn.MaxUnpool3d(2)) == repr(torch.nn.MaxUnpool3d(2))
    same_error(lambda: F.max_unpool3d(ml.tensor(pooled.numpy()), ml.tensor(indices.numpy()), 2, output_size=(9, 9)),
               lambda: TF.max_unpool3d(pooled, indices, 2, output_size=(9, 9)))


@pytest.mark.parametrize("norm_type, kwargs", [(2, dict(kernel_size=2)), (3.0, dict(kernel_size=(2, 1, 2), stride=1,
                                                                                      ceil_mode=True)),
                                               (float("inf"), dict(kernel_size=2))])
def test_lp_pool3d_as_torch(norm_type, kwargs):
    x = np.abs(randn(2, 3, 4, 5, 6)) + 0.1
    check_values_and_grads(lambda t: F.lp_pool3d(t, norm_type, **kwargs),
                           lambda t: TF.lp_pool3d(t, norm_type, **kwargs), x)
    assert repr(nn.LPPool3d(norm_type, 2)) == repr(torch.nn.LPPool3d(norm_type, 2))


@pytest.mark.parametrize("p", [2, 1, 0, 3.5, float("inf")])
def test_pdist_as_torch(p):
    x = randn(5, 3)
    x[3] = x[1]  # a zero distance (its gradient: 0, as torch's)
    check_values_and_grads(lambda t: F.pdist(t, p), lambda t: TF.pdist(t, p), x)


def test_with_indices_forms_always_return_indices():
    x = randn(2, 3, 6, 6, 6)
    for name, args in [("max_pool1d_with_indices", (x[:, :, 0, 0], 2)), ("max_pool2d_with_indices", (x[:, :, 0], 2)),
                       ("max_pool3d_with_indices", (x, 2)), ("adaptive_max_pool1d_with_indices", (x[:, :, 0, 0], 4)),
                       ("adaptive_max_pool2d_with_indices", (x[:, :, 0], 4)),
                       ("adaptive_max_pool3d_with_indices", (x, 4))]:
        (ours, ours_at), (theirs, theirs_at) = (getattr(F, name)(ml.tensor(args[0]), *args[1:]),
                                                getattr(TF, name)(torch.tensor(args[0]), *args[1:]))
        close(ours, theirs, 0)
        np.testing.assert_array_equal(ours_at.numpy(), theirs_at.numpy())


def test_interpolate_area_on_volumes_as_torch():
    x = randn(2, 3, 5, 6, 7)
    for kwargs in (dict(size=(3, 4, 2)), dict(scale_factor=0.5)):
        check_values_and_grads(lambda t: F.interpolate(t, mode="area", **kwargs),
                               lambda t: TF.interpolate(t, mode="area", **kwargs), x)


@pytest.mark.parametrize("name, shape, kwargs", [
    ("LazyBatchNorm1d", (4, 3), {}), ("LazyBatchNorm2d", (2, 3, 4, 4), dict(momentum=None)),
    ("LazyBatchNorm3d", (2, 3, 2, 2, 2), dict(affine=False)), ("LazyInstanceNorm1d", (2, 3, 5), {}),
    ("LazyInstanceNorm2d", (2, 3, 4, 4), dict(track_running_stats=False)),
    ("LazyInstanceNorm3d", (2, 3, 2, 2, 2), dict(bias=False))])
def test_lazy_norms_as_torch(name, shape, kwargs):
    """num_features from the first input; running statistics are UninitializedBuffers until then (the lazy
    instance norms: affine and tracking by default, as torch's)."""
    theirs, ours = getattr(torch.nn, name)(**kwargs), getattr(nn, name)(**kwargs)
    assert repr(ours) == repr(theirs)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    if kwargs.get("track_running_stats", True):
        assert isinstance(ours.running_mean, nn.UninitializedBuffer)
    x = randn(*shape).astype(np.float32)
    close(ours(ml.tensor(x)), theirs(torch.tensor(x)), 1e-5)
    assert type(ours).__name__ == type(theirs).__name__ and repr(ours) == repr(theirs)
    for key, value in theirs.state_dict().items():
        close(ours.state_dict()[key], value, 1e-6)


# ---- F.linear_cross_entropy / nn.LinearCrossEntropyLoss, F.conv_tbc ------------------------------------
@pytest.mark.parametrize("case", ["plain", "bias+smoothing+sum", "ignore_index none-reduction", "K-dimensional",
                                  "class weights", "probabilities", "unbatched"])
def test_linear_cross_entropy_as_torch(case):
    rng = np.random.default_rng(3)
    x, w, b = randn(5, 4), randn(6, 4, seed=1), randn(6, seed=2)
    target, kwargs, arrays = rng.integers(0, 6, 5), {}, [x, w]
    if case == "bias+smoothing+sum":
        kwargs, arrays = dict(reduction="sum", label_smoothing=0.1), [x, w, b]
    elif case == "ignore_index none-reduction":
        kwargs = dict(ignore_index=int(target[1]), reduction="none")
    elif case == "K-dimensional":
        w, target = randn(6, 3, 4, seed=1), rng.integers(0, 6, (5, 3))
        arrays = [x, w]
    elif case == "class weights":
        kwargs = dict(weight=np.abs(randn(6, seed=4)))
    elif case == "probabilities":
        target = np.abs(randn(5, 6, seed=5))
    elif case == "unbatched":
        x, target = x[0], target[0]
        arrays = [x, w]

    def call(lib, fn, *tensors):
        options = {k: (lib.tensor(v) if isinstance(v, np.ndarray) else v) for k, v in kwargs.items()}
        bias = tensors[2] if len(tensors) == 3 else None
        return fn.linear_cross_entropy(tensors[0], tensors[1], lib.tensor(target), linear_bias=bias, **options)

    check_values_and_grads(lambda *t: call(ml, F, *t), lambda *t: call(torch, TF, *t), *arrays)


def test_linear_cross_entropy_module_and_refusals():
    torch.manual_seed(0)
    ml.manual_seed(0)
    kwargs = dict(out_features=(3,), bias=True, label_smoothing=0.1)
    theirs, ours = torch.nn.LinearCrossEntropyLoss(4, 6, **kwargs), nn.LinearCrossEntropyLoss(4, 6, **kwargs)
    assert repr(ours) == repr(theirs)
    for key, value in theirs.state_dict().items():
        close(ours.state_dict()[key], value, 0)
    x, target = randn(5, 4).astype(np.float32), np.random.default_rng(1).integers(0, 6, (5, 3))
    close(ours(ml.tensor(x), ml.tensor(target)), theirs(torch.tensor(x), torch.tensor(target)), 1e-6)
    with pytest.raises(NotImplementedError, match="options"):
        F.linear_cross_entropy(ml.zeros(2, 4), ml.zeros(6, 4), ml.zeros(2, dtype=ml.int64), options=object())
    for x, w, target, bias in (((2, 3), (6, 4), (2,), None), ((4,), (6, 3, 4), (3,), None),
                               ((2, 4), (6, 4), (2,), (5,))):
        def call(L):
            return L.nn.functional.linear_cross_entropy(L.zeros(x), L.zeros(w), L.zeros(target, dtype=L.int64),
                                                        linear_bias=None if bias is None else L.zeros(bias))
        same_error(lambda: call(ml), lambda: call(torch))


def test_conv_tbc_as_torch():
    check_values_and_grads(lambda x, w, b: F.conv_tbc(x, w, b, 1), lambda x, w, b: TF.conv_tbc(x, w, b, 1),
                           randn(7, 2, 4), randn(3, 4, 5, seed=1), randn(5, seed=2))


# ---- nn.Buffer ---------------------------------------------------------------------------------------
def test_buffer_assignment_registers_as_torch():
    results = []
    for lib in (ml, torch):
        class Net(lib.nn.Module):
            def __init__(self):
                super().__init__()
                self.table = lib.nn.Buffer(lib.ones(2))
                self.cache = lib.nn.Buffer(lib.zeros(3), persistent=False)

        net = Net()
        net.table = lib.nn.Buffer(lib.full((2,), 5.0))  # re-assigned: still a buffer, in its place
        results.append((list(net.state_dict()), [n for n, _ in net.named_buffers()],
                        isinstance(net.cache, lib.nn.Buffer), net.table.tolist()))
    assert results[0] == results[1]
    shared = ml.ones(2)
    ml.nn.Buffer(shared).add_(1)  # the values are shared (torch: data.detach())
    assert shared.tolist() == [2.0, 2.0]
    with pytest.raises(TypeError, match="Tensor"):
        ml.nn.Buffer([1.0, 2.0])


def test_data_parallel_wraps_as_torch():
    """One device: the wrapped module sees the whole batch; the wrapper's names are torch's."""
    outputs = []
    for lib in (ml, torch):
        lib.manual_seed(0)
        model = lib.nn.DataParallel(lib.nn.Linear(3, 2))
        outputs.append((repr(model), list(model.state_dict()), model(lib.ones(4, 3)).tolist()))
    assert outputs[0][:2] == outputs[1][:2]
    np.testing.assert_allclose(outputs[0][2], outputs[1][2], rtol=1e-6)


# ---- fractional max pooling --------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("rank, shape, kwargs", [
    (2, (2, 3, 11, 9), dict(kernel_size=3, output_size=(5, 4))),
    (2, (3, 11, 9), dict(kernel_size=(2, 3), output_ratio=(0.5, 0.7))),
    (2, (2, 3, 6, 6), dict(kernel_size=2, output_size=1)),
    (3, (2, 2, 7, 8, 9), dict(kernel_size=2, output_size=(4, 5, 3))),
    (3, (2, 7, 8, 9), dict(kernel_size=3, output_ratio=(0.5, 0.5, 0.6))),
])
def test_fractional_max_pool_draws_values_indices_and_grads_as_torch(rank, shape, kwargs, dtype):
    """A seeded call draws torch's window offsets (rand(N, C, rank)) and so gives its numbers."""
    x = randn(*shape).astype(dtype)
    name = f"fractional_max_pool{rank}d"
    torch.manual_seed(0)
    ml.manual_seed(0)
    ours_in, theirs_in = ml.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    (ours, ours_at), (theirs, theirs_at) = (getattr(F, name)(ours_in, return_indices=True, **kwargs),
                                            getattr(TF, name)(theirs_in, return_indices=True, **kwargs))
    close(ours, theirs, 0)
    np.testing.assert_array_equal(ours_at.numpy(), theirs_at.numpy())
    g = randn(*theirs.shape, seed=1).astype(dtype)
    ours.backward(ml.tensor(g))
    theirs.backward(torch.tensor(g))
    close(ours_in.grad, theirs_in.grad, 0)
    assert torch.rand(1).item() == ml.rand(1).item()


def test_fractional_max_pool_modules_as_torch():
    for cls, shape in (("FractionalMaxPool2d", (2, 3, 8, 8)), ("FractionalMaxPool3d", (1, 2, 6, 6, 6))):
        for kwargs in (dict(output_ratio=0.5), dict(output_size=3, return_indices=True)):
            torch.manual_seed(1)
            ml.manual_seed(1)
            ours, theirs = getattr(nn, cls)(2, **kwargs), getattr(torch.nn, cls)(2, **kwargs)
            assert repr(ours) == repr(theirs)
            x = randn(*shape).astype(np.float32)
            a, b = ours(ml.tensor(x)), theirs(torch.tensor(x))
            close(a[0] if isinstance(a, tuple) else a, b[0] if isinstance(b, tuple) else b, 0)
    for kwargs in (dict(), dict(output_size=2, output_ratio=0.5), dict(output_ratio=1.5)):
        with pytest.raises(ValueError) as theirs:
            torch.nn.FractionalMaxPool2d(2, **kwargs)
        with pytest.raises(ValueError) as ours:
            nn.FractionalMaxPool2d(2, **kwargs)
        assert str(ours.value) == str(theirs.value)


# ---- AdaptiveLogSoftmaxWithLoss ------------------------------------------------------------------------
def test_adaptive_log_softmax_as_torch():
    torch.manual_seed(0)
    ml.manual_seed(0)
    theirs = torch.nn.AdaptiveLogSoftmaxWithLoss(16, 20, [4, 10], div_value=2.0, head_bias=True).double()
    ours = nn.AdaptiveLogSoftmaxWithLoss(16, 20, [4, 10], div_value=2.0, head_bias=True).double()
    assert repr(ours) == repr(theirs) and list(ours.state_dict()) == list(theirs.state_dict())
    for key, value in theirs.state_dict().items():
        close(ours.state_dict()[key], value, 0)
    with torch.no_grad():  # the cluster entries of the head made likely: predict() mixes both paths
        theirs.head.bias[4:] += 3.0
    ours.head.bias.data = ml.tensor(theirs.head.bias.detach().numpy())
    x, target = randn(6, 16), np.array([0, 5, 12, 3, 19, 9])
    ours_in, theirs_in = both(x, requires_grad=True)
    a, b = ours(ours_in, ml.tensor(target)), theirs(theirs_in, torch.tensor(target))
    close(a.output, b.output, 1e-12)
    close(a.loss, b.loss, 1e-12)
    a.loss.backward()
    b.loss.backward()
    close(ours_in.grad, theirs_in.grad, 1e-12)
    close(ours.tail[1][0].weight.grad, theirs.tail[1][0].weight.grad, 1e-12)
    close(ours.log_prob(ours_in), theirs.log_prob(theirs_in), 1e-12)
    assert ours.predict(ours_in).tolist() == theirs.predict(theirs_in).tolist()
    single = ours(ours_in[0], ml.tensor(target[0]))
    close(single.output, theirs(theirs_in[0], torch.tensor(target[0])).output, 1e-12)
    same_error(lambda: ours(ours_in, ml.tensor([0, 5, 12, 3, 20, 9])),
               lambda: theirs(theirs_in, torch.tensor([0, 5, 12, 3, 20, 9])))
    with pytest.raises(ValueError, match="cutoffs"):
        nn.AdaptiveLogSoftmaxWithLoss(16, 20, [10, 4])


def test_nll_loss_2d_is_the_deprecated_nll_loss():
    x, target = randn(2, 3, 4, 4), np.random.default_rng(0).integers(0, 3, (2, 4, 4))
    with pytest.warns(FutureWarning, match="NLLLoss2d"):
        ours = nn.NLLLoss2d(ignore_index=1)
    with pytest.warns(FutureWarning):
        theirs = torch.nn.NLLLoss2d(ignore_index=1)
    close(ours(ml.tensor(x), ml.tensor(target)), theirs(torch.tensor(x), torch.tensor(target)), 1e-12)


@pytest.mark.parametrize("name, call", [
    ("conv3d", lambda L, x4, x5: L.nn.functional.conv3d(x5, L.ones(2, 2, 2, 2, 2))),
    ("grid_sample", lambda L, x4, x5: L.nn.functional.grid_sample(x4, L.zeros(1, 3, 3, 2), align_corners=False)),
    ("grid_sample 3-D", lambda L, x4, x5: L.nn.functional.grid_sample(x5, L.zeros(1, 2, 3, 3, 3),
                                                                      align_corners=False)),
    ("affine_grid", lambda L, x4, x5: L.nn.functional.affine_grid(x4[:, 0, :2, :3], (1, 1, 3, 3),
                                                                  align_corners=False)),
    ("ctc_loss", lambda L, x4, x5: L.nn.functional.ctc_loss(x4.reshape(4, 2, 4)[:, :1].log_softmax(2),
                                                             L.tensor([[1]]), L.tensor([4]), L.tensor([1]),
                                                             reduction="none")),
    ("max_pool3d", lambda L, x4, x5: L.nn.functional.max_pool3d(x5, 2)),
    ("avg_pool3d", lambda L, x4, x5: L.nn.functional.avg_pool3d(x5, 2)),
    ("adaptive_avg_pool3d", lambda L, x4, x5: L.nn.functional.adaptive_avg_pool3d(x5, 2)),
    ("adaptive_avg_pool3d 1", lambda L, x4, x5: L.nn.functional.adaptive_avg_pool3d(x5, 1)),
    ("adaptive_max_pool3d", lambda L, x4, x5: L.nn.functional.adaptive_max_pool3d(x5, 2)),
    ("fractional_max_pool2d", lambda L, x4, x5: L.nn.functional.fractional_max_pool2d(x4, 2, output_size=2)),
    ("pdist", lambda L, x4, x5: L.nn.functional.pdist(x4[0, 0])),
    ("channel_shuffle", lambda L, x4, x5: L.nn.functional.channel_shuffle(x4, 2)),
])
def test_grad_fn_names_as_torch(name, call):
    """The node a user prints (``out.grad_fn``) is torch's, though minilora builds these from several ops."""
    names = []
    for lib in (ml, torch):
        x4, x5 = lib.ones(1, 2, 4, 4, requires_grad=True), lib.ones(1, 2, 4, 4, 4, requires_grad=True)
        node = call(lib, x4, x5).grad_fn
        names.append(node.name())
    assert names[0] == names[1]
