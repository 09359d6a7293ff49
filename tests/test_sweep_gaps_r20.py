"""Round 20: the ops whose float32 gradients (or values) ``tests/grad_bits_sweep.py`` found far off torch's, fixed
where the gap was a formula or an order of additions minilora can follow, compared with torch bit for bit, each
written as torch's users call it (positional and keyword).

- ``F.ctc_loss``: ATen's kernel calls the C library's ``exp``/``log`` (NumPy's float32 exp differs from glibc's in
  ~40% of elements) and adds the alpha-beta products of a class one position at a time, the last first; its
  gradient ``exp(lp) - exp(...)`` cancels, so one bit there was up to 378,261 ulps of a small gradient.
- ``F.avg_pool3d`` / ``F.adaptive_avg_pool3d``: torch's kernels add a 3-D window one element at a time (and the
  adaptive one divides by depth, then height, then width); minilora added its depth slices' 2-D sums (averages).
- ``F.adaptive_avg_pool2d`` / ``3d`` to a 1x1 (1x1x1) output: torch computes the mean (its order of additions,
  its MeanBackward1), laid out in a channels_last input's format.
"""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as TF  # noqa: E402

import minilora as ml  # noqa: E402
import minilora.nn.functional as MF  # noqa: E402


def _bits_equal(a, b):
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape
    assert a.dtype == b.dtype
    np.testing.assert_array_equal(a.view(np.int32 if a.dtype == np.float32 else np.int64),
                                  b.view(np.int32 if b.dtype == np.float32 else np.int64))


def _both(call, *arrays, weight_seed=1):
    """``call(F, *tensors)`` in torch and in minilora from the same float32 arrays: (torch's value and input
    gradients, minilora's), the gradient that of ``sum(out * w)`` for a fixed draw ``w``."""
    answers = []
    for lib, F in ((torch, TF), (ml, MF)):
        leaves = [lib.tensor(a, requires_grad=True) for a in arrays]
        out = call(lib, F, *leaves)
        w = np.random.default_rng(weight_seed).standard_normal(tuple(out.shape)).astype(np.float32)
        (out * lib.tensor(w)).sum().backward()
        answers.append((out.detach().numpy(), [t.grad.numpy() for t in leaves]))
    return answers


def _log_probs(rng, steps, batch, classes):
    logits = rng.standard_normal((steps, batch, classes)).astype(np.float32)
    return np.asarray(torch.log_softmax(torch.tensor(logits), 2))


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_ctc_loss_gradient_is_torchs_bits(reduction):
    rng = np.random.default_rng(0)
    lp = _log_probs(rng, 30, 4, 10)
    targets = rng.integers(1, 10, (4, 12))
    lengths_in, lengths_target = [30, 28, 30, 25], [12, 7, 10, 9]

    def call(lib, F, log_probs):
        return F.ctc_loss(log_probs, lib.tensor(targets), lengths_in, lengths_target, reduction=reduction)
    (theirs, their_grads), (ours, our_grads) = _both(call, lp)
    _bits_equal(theirs, ours)
    _bits_equal(their_grads[0], our_grads[0])


def test_ctc_loss_positional_with_repeats_blank_and_zero_infinity():
    rng = np.random.default_rng(3)
    lp = _log_probs(rng, 12, 3, 5)
    # repeated labels need a blank between them; the second sample cannot be aligned in 4 steps (inf -> 0)
    targets = np.array([[1, 1, 2, 2, 3], [2, 3, 1, 4, 4], [4, 4, 4, 1, 2]])

    def call(lib, F, log_probs):
        return F.ctc_loss(log_probs, lib.tensor(targets), lib.tensor([12, 4, 11]), lib.tensor([5, 5, 3]), 0, "none",
                          True)
    (theirs, their_grads), (ours, our_grads) = _both(call, lp)
    _bits_equal(theirs, ours)
    _bits_equal(their_grads[0], our_grads[0])


@pytest.mark.parametrize("spelling", ["positional", "keyword"])
def test_avg_pool3d_adds_each_window_in_torchs_order(spelling):
    x = np.random.default_rng(1).standard_normal((2, 3, 5, 6, 7)).astype(np.float32) * 4

    def call(lib, F, t):
        if spelling == "positional":
            return F.avg_pool3d(t, (2, 3, 4), (1, 2, 2), (0, 1, 2), True, False)
        return F.avg_pool3d(t, kernel_size=3, stride=2, padding=1, ceil_mode=True, count_include_pad=True,
                            divisor_override=5)
    (theirs, their_grads), (ours, our_grads) = _both(call, x)
    _bits_equal(theirs, ours)
    _bits_equal(their_grads[0], our_grads[0])


def test_avg_pool3d_module_on_an_unbatched_input():
    x = np.random.default_rng(2).standard_normal((3, 6, 6, 6)).astype(np.float32)
    (theirs, their_grads), (ours, our_grads) = _both(lambda lib, F, t: lib.nn.AvgPool3d(3, stride=1)(t), x)
    _bits_equal(theirs, ours)
    _bits_equal(their_grads[0], our_grads[0])


@pytest.mark.parametrize("output_size", [(5, 7, 4), 3, (3, None, 5)])
def test_adaptive_avg_pool3d_divides_each_window_as_torch(output_size):
    x = np.random.default_rng(4).standard_normal((2, 8, 8, 8, 8)).astype(np.float32) * 3
    (theirs, their_grads), (ours, our_grads) = _both(lambda lib, F, t: F.adaptive_avg_pool3d(t, output_size), x)
    _bits_equal(theirs, ours)
    _bits_equal(their_grads[0], our_grads[0])


def test_adaptive_avg_pool3d_keyword_and_module():
    x = np.random.default_rng(5).standard_normal((3, 7, 9, 10)).astype(np.float32)
    (theirs, _), (ours, _) = _both(lambda lib, F, t: F.adaptive_avg_pool3d(t, output_size=(3, 4, 6)), x)
    _bits_equal(theirs, ours)
    (theirs, their_grads), (ours, our_grads) = _both(lambda lib, F, t: lib.nn.AdaptiveAvgPool3d((2, 5, 3))(t), x)
    _bits_equal(theirs, ours)
    _bits_equal(their_grads[0], our_grads[0])


@pytest.mark.parametrize("pool, shape", [("adaptive_avg_pool2d", (2, 3, 37, 41)), ("adaptive_avg_pool1d", (2, 3, 301)),
                                         ("adaptive_avg_pool3d", (2, 3, 9, 37, 41))])
def test_global_average_pooling_is_torchs_mean(pool, shape):
    x = np.random.default_rng(6).standard_normal(shape).astype(np.float32)
    (theirs, their_grads), (ours, our_grads) = _both(lambda lib, F, t: getattr(F, pool)(t, 1), x)
    _bits_equal(theirs, ours)
    _bits_equal(their_grads[0], our_grads[0])
    t = ml.tensor(x, requires_grad=True)
    assert type(getattr(MF, pool)(t, output_size=1).grad_fn).__name__ == type(
        getattr(TF, pool)(torch.tensor(x, requires_grad=True), output_size=1).grad_fn).__name__


def test_global_average_pooling_of_channels_last_keeps_torchs_strides():
    x = np.random.default_rng(7).standard_normal((2, 3, 4, 5, 6)).astype(np.float32)
    theirs = TF.adaptive_avg_pool3d(torch.tensor(x).to(memory_format=torch.channels_last_3d), (1, 1, 1))
    ours = MF.adaptive_avg_pool3d(ml.tensor(x).to(memory_format=ml.channels_last_3d), (1, 1, 1))
    assert ours.stride() == theirs.stride()
    theirs = TF.adaptive_avg_pool2d(torch.tensor(x[0]).to(memory_format=torch.channels_last), 1)
    ours = MF.adaptive_avg_pool2d(ml.tensor(x[0]).to(memory_format=ml.channels_last), 1)
    assert ours.stride() == theirs.stride()


@pytest.mark.parametrize("align_corners", [True, False])
def test_linear_and_trilinear_resizing_are_torchs_bits(align_corners):
    rng = np.random.default_rng(8)
    x1 = rng.standard_normal((2, 3, 13)).astype(np.float32)
    (theirs, their_grads), (ours, our_grads) = _both(
        lambda lib, F, t: F.interpolate(t, size=29, mode="linear", align_corners=align_corners), x1)
    _bits_equal(theirs, ours)
    _bits_equal(their_grads[0], our_grads[0])
    x3 = rng.standard_normal((1, 2, 4, 5, 3)).astype(np.float32)
    (theirs, their_grads), (ours, our_grads) = _both(
        lambda lib, F, t: F.interpolate(t, None, (1.7, 0.6, 2.5), "trilinear", align_corners), x3)
    _bits_equal(theirs, ours)
    _bits_equal(their_grads[0], our_grads[0])


@pytest.mark.parametrize("channels", [3, 8, 20])
def test_bilinear_resizing_is_torchs_bits(channels):
    # a small output: torch's channels-last kernel (its vectors of 8 channels and the rest each its own way)
    x = np.random.default_rng(9).standard_normal((1, channels, 9, 9)).astype(np.float32)
    for call in (lambda lib, F, t: F.interpolate(t, size=(20, 20), mode="bilinear", align_corners=False),
                 lambda lib, F, t: lib.nn.Upsample(scale_factor=1.5, mode="bilinear", align_corners=True)(t),
                 lambda lib, F, t: F.upsample_bilinear(t, (13, 5))):
        (theirs, their_grads), (ours, our_grads) = _both(call, x)
        _bits_equal(theirs, ours)
        _bits_equal(their_grads[0], our_grads[0])


def test_large_bilinear_and_channels_last_resizing_are_torchs_bits():
    rng = np.random.default_rng(10)
    x = rng.standard_normal((1, 2, 40, 50)).astype(np.float32)  # output height + width > 128: the generic kernel
    (theirs, their_grads), (ours, our_grads) = _both(
        lambda lib, F, t: F.interpolate(t, size=(70, 90), mode="bilinear"), x)
    _bits_equal(theirs, ours)
    _bits_equal(their_grads[0], our_grads[0])
    x = rng.standard_normal((2, 5, 4, 5, 6)).astype(np.float32)
    (theirs, _), (ours, _) = _both(lambda lib, F, t: F.interpolate(
        t.contiguous(memory_format=lib.channels_last_3d), size=(6, 7, 5), mode="trilinear"), x)
    _bits_equal(theirs, ours)


@pytest.mark.parametrize("mode", ["nearest", "nearest-exact"])
def test_nearest_resizing_gradient_adds_in_torchs_order(mode):
    x = np.random.default_rng(11).standard_normal((2, 3, 4, 4, 4)).astype(np.float32)
    (theirs, their_grads), (ours, our_grads) = _both(
        lambda lib, F, t: F.interpolate(t, scale_factor=1.7, mode=mode), x)
    _bits_equal(theirs, ours)
    _bits_equal(their_grads[0], our_grads[0])
    x2 = x[0]
    (_, their_grads), (_, our_grads) = _both(lambda lib, F, t: lib.nn.Upsample((5, 7), mode=mode)(t), x2)
    _bits_equal(their_grads[0], our_grads[0])


@pytest.mark.parametrize("align_corners", [True, False])
def test_bicubic_resizing_is_torchs_bits(align_corners):
    rng = np.random.default_rng(12)
    x = rng.standard_normal((2, 3, 9, 30)).astype(np.float32)  # (30 -> 70: the weight of 2 - t is (1 - t) + 1)
    (theirs, their_grads), (ours, our_grads) = _both(
        lambda lib, F, t: F.interpolate(t, size=(20, 70), mode="bicubic", align_corners=align_corners), x)
    _bits_equal(theirs, ours)
    _bits_equal(their_grads[0], our_grads[0])
    (theirs, their_grads), (ours, our_grads) = _both(
        lambda lib, F, t: lib.nn.Upsample(None, 0.6, "bicubic", align_corners)(t), x)
    _bits_equal(theirs, ours)
    _bits_equal(their_grads[0], our_grads[0])


def test_float64_linear_resizing_takes_torchs_float_index():
    # torch's floorf rounds a float64 source position to float32 first: 2.9999999999 is index 3
    x = np.random.default_rng(13).standard_normal((1, 5, 40, 50))
    theirs = TF.interpolate(torch.tensor(x), size=(70, 90), mode="bilinear", align_corners=True)
    ours = MF.interpolate(ml.tensor(x), size=(70, 90), mode="bilinear", align_corners=True)
    np.testing.assert_array_equal(theirs.numpy(), ours.numpy())


@pytest.mark.parametrize("padding_mode", ["zeros", "border", "reflection"])
@pytest.mark.parametrize("align_corners", [True, False])
def test_grid_sample_bilinear_2d_is_torchs_bits(padding_mode, align_corners):
    rng = np.random.default_rng(14)
    x = rng.standard_normal((2, 3, 5, 6)).astype(np.float32)
    grid = rng.uniform(-1.4, 1.4, (2, 11, 7, 2)).astype(np.float32)  # (points past the edges: padding_mode's work)
    grid[0, 0, :4] = [[-1, -1], [1, 1], [0.2, -1], [1, 0.5]]  # (corners and borders exactly)

    def call(lib, F, t, g):
        if align_corners:
            return F.grid_sample(t, g, "bilinear", padding_mode, True)
        return F.grid_sample(t, g, mode="bilinear", padding_mode=padding_mode, align_corners=False)
    (theirs, their_grads), (ours, our_grads) = _both(call, x, grid)
    _bits_equal(theirs, ours)
    _bits_equal(their_grads[0], our_grads[0])
    _bits_equal(their_grads[1], our_grads[1])


def test_grid_sample_bilinear_gradient_is_torchs_and_differentiates_again():
    rng = np.random.default_rng(15)
    x, grid = rng.standard_normal((1, 2, 4, 4)), rng.uniform(-1, 1, (1, 3, 3, 2))
    (_, their_grads), (_, our_grads) = _both(lambda lib, F, t, g: F.grid_sample(t, g, align_corners=False),
                                             x.astype(np.float32), grid.astype(np.float32))
    _bits_equal(their_grads[1], our_grads[1])
    answers = []
    for lib in (torch, ml):  # create_graph: minilora's recorded gradient is its composition's (rounded otherwise)
        t, g = lib.tensor(x, requires_grad=True), lib.tensor(grid, requires_grad=True)
        gt, gg = lib.autograd.grad((lib.nn.functional.grid_sample(t, g, align_corners=False) ** 2).sum(), (t, g),
                                   create_graph=True)
        answers.append([a.detach().numpy() for a in lib.autograd.grad((gt ** 2).sum() + (gg ** 2).sum(), (t, g))])
    for theirs, ours in zip(*answers):
        np.testing.assert_allclose(ours, theirs, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("padding_mode", ["zeros", "border", "reflection"])
def test_grid_sample_trilinear_3d_is_torchs_bits(padding_mode):
    rng = np.random.default_rng(16)
    x = rng.standard_normal((2, 3, 4, 5, 3)).astype(np.float32)
    grid = rng.uniform(-1.3, 1.3, (2, 3, 4, 5, 3)).astype(np.float32)
    for align_corners in (True, False):
        (theirs, their_grads), (ours, our_grads) = _both(
            lambda lib, F, t, g: F.grid_sample(t, g, padding_mode=padding_mode, align_corners=align_corners), x, grid)
        np.testing.assert_array_equal(theirs.view(np.int32), ours.view(np.int32))  # (+0.0 where torch's is)
        _bits_equal(their_grads[0], our_grads[0])
        _bits_equal(their_grads[1], our_grads[1])
