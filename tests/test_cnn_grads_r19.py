"""A CNN's parameter gradients are torch's float32 bits: BatchNorm's and GroupNorm's weight, bias and input
gradients, and a convolution's bias gradient.

torch's CPU kernels compute these in an order of their own (batch_norm_cpu_backward_contiguous_impl: per sample
and channel an 8-float vector sum added into a double; ...). minilora's composed formula summed otherwise and
differed in the last bits of most elements, so a vision tutorial's loss drifted from torch's after a few steps.
The oracle is torch itself, on the same inputs, both on two threads.
"""
import numpy as np
import pytest
import torch

import minilora as ml

pytestmark = pytest.mark.usefixtures("two_threads")


def _leaf_pair(values, channels_last=False):
    """The same float32 values as a torch and a minilora leaf that require grad."""
    t, m = torch.tensor(values), ml.tensor(values)
    if channels_last:
        t, m = t.contiguous(memory_format=torch.channels_last), m.contiguous(memory_format=ml.channels_last)
    return t.requires_grad_(), m.requires_grad_()


def _grads_after_backward(lib, call, leaves, upstream, upstream_channels_last=False):
    out = call(lib, *leaves)
    upstream = lib.tensor(upstream)
    if upstream_channels_last:
        upstream = upstream.contiguous(memory_format=lib.channels_last)
    out.backward(upstream)
    return [leaf.grad.detach().numpy() if lib is torch else leaf.grad.numpy() for leaf in leaves]


def _assert_same_grads(call, arrays, out_shape, channels_last=False, upstream_channels_last=False, seed=1):
    pairs = [_leaf_pair(a, channels_last and a.ndim >= 4) for a in arrays]
    upstream = np.random.default_rng(seed).standard_normal(out_shape).astype(np.float32)
    expected = _grads_after_backward(torch, call, [p[0] for p in pairs], upstream, upstream_channels_last)
    got = _grads_after_backward(ml, call, [p[1] for p in pairs], upstream, upstream_channels_last)
    for name, e, g in zip(("input", "weight", "bias"), expected, got):
        np.testing.assert_array_equal(g, e, err_msg=f"{name}'s gradient")


def _norm_arrays(shape, channels, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(shape).astype(np.float32), rng.standard_normal(channels).astype(np.float32),
            rng.standard_normal(channels).astype(np.float32)]


def _batch_norm(training):
    def call(lib, x, w, b):
        c = x.shape[1]
        running_mean, running_var = lib.full((c,), 0.1), lib.full((c,), 1.3)
        return lib.nn.functional.batch_norm(x, running_mean, running_var, w, b, training=training)
    return call


BATCH_NORM_SHAPES = [(5, 7, 9, 11), (5, 7, 13), (3, 7, 5, 6, 7), (4, 3, 40), (2, 5, 3, 2)]


@pytest.mark.parametrize("shape", BATCH_NORM_SHAPES, ids=str)
def test_batch_norm_training_gradients_are_torchs_bits(shape):
    _assert_same_grads(_batch_norm(True), _norm_arrays(shape, shape[1]), shape)


@pytest.mark.parametrize("shape", BATCH_NORM_SHAPES[:3], ids=str)
def test_batch_norm_eval_gradients_are_torchs_bits(shape):
    _assert_same_grads(_batch_norm(False), _norm_arrays(shape, shape[1]), shape)


@pytest.mark.parametrize("shape", [(6, 7), (37, 20), (6, 7, 1, 1), (5, 9, 1)], ids=str)
@pytest.mark.parametrize("training", [True, False], ids=["training", "eval"])
def test_batch_norm_of_one_element_per_channel_is_torchs_channels_last_kernel(shape, training):
    """[N, C] (BatchNorm1d after a Linear) and NC11: ATen's channels-last kernel, its rows cut between threads."""
    _assert_same_grads(_batch_norm(training), _norm_arrays(shape, shape[1]), shape)


@pytest.mark.parametrize("upstream_channels_last", [True, False], ids=["same layout", "contiguous gradient"])
@pytest.mark.parametrize("training", [True, False], ids=["training", "eval"])
def test_channels_last_batch_norm_gradients_are_torchs_bits(training, upstream_channels_last):
    """Gradient laid out as the input: the channels-last kernel; otherwise ATen's own loops (torch's sum of dy)."""
    shape = (3, 20, 5, 4)
    _assert_same_grads(_batch_norm(training), _norm_arrays(shape, 20), shape, channels_last=True,
                       upstream_channels_last=upstream_channels_last)


def test_batch_norm_of_a_sum_takes_atens_own_loops():
    """``y.sum().backward()`` hands batch norm an expanded gradient: ATen's own loops, not its kernel."""
    results = []
    x, w, b = _norm_arrays((5, 7, 9, 11), 7)
    for lib in (torch, ml):
        leaves = [lib.tensor(a).requires_grad_() for a in (x, w, b)]
        lib.nn.functional.batch_norm(leaves[0], None, None, leaves[1], leaves[2], training=True).sum().backward()
        results.append([leaf.grad.numpy() for leaf in leaves])
    for e, g in zip(*results):
        np.testing.assert_array_equal(g, e)


def test_batchnorm2d_module_after_conv_trains_as_torch():
    """The tutorial's block: Conv2d into a BatchNorm2d in training mode; two SGD steps give torch's loss and
    parameters. (The convolution's weight is frozen: its gradient is a matrix product in MKL's or oneDNN's
    order, which depends on the CPU; with batch 1 its bias gradient is torch's plain sum.)"""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((1, 3, 12, 10)).astype(np.float32)
    results = []
    for lib in (torch, ml):
        lib.manual_seed(0)
        model = lib.nn.Sequential(lib.nn.Conv2d(3, 6, 3, padding=1), lib.nn.BatchNorm2d(6), lib.nn.ReLU())
        model[0].weight.requires_grad_(False)
        opt = lib.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
        for _ in range(2):
            opt.zero_grad()
            loss = (model(lib.tensor(x)) ** 2).mean()
            loss.backward()
            opt.step()
        results.append([loss.item()] + [p.detach().numpy().copy() for p in model.parameters()])
    for e, g in zip(*results):
        np.testing.assert_array_equal(g, e)


# (shape, groups): channels per group under a vector (2), one vector (16), a vector and a tail (20), 3-D, 5-D
GROUP_NORM_CASES = [((5, 6, 9, 11), 3), ((3, 32, 5, 6), 2), ((3, 20, 5, 6), 1), ((4, 8, 13), 2),
                    ((2, 6, 4, 4, 3), 2)]


@pytest.mark.parametrize("shape, groups", GROUP_NORM_CASES, ids=str)
def test_group_norm_gradients_are_torchs_bits(shape, groups):
    def call(lib, x, w, b):
        return lib.nn.functional.group_norm(x, groups, w, b)
    _assert_same_grads(call, _norm_arrays(shape, shape[1]), shape)


def test_group_norm_without_affine_input_gradient_is_torchs_bits():
    def call(lib, x):
        return lib.nn.functional.group_norm(x, 2)
    _assert_same_grads(call, _norm_arrays((4, 6, 7, 5), 6)[:1], (4, 6, 7, 5))


F_CONV = {"conv1d": "conv1d", "conv2d": "conv2d", "conv3d": "conv3d", "conv_transpose2d": "conv_transpose2d",
          "conv_transpose1d": "conv_transpose1d", "conv_transpose3d": "conv_transpose3d"}
# (function, input shape, weight shape, keywords): oneDNN's path (batch > 1) with up to 8 output channels (the
# batch split between the threads), more (the channels split), a transposed one (never split), channels_last
CONV_CASES = [
    ("conv2d", (5, 7, 9, 11), (6, 7, 3, 3), {"padding": 1}),
    ("conv2d", (4, 3, 32, 32), (6, 3, 5, 5), {}),
    ("conv2d", (4, 6, 14, 14), (16, 6, 5, 5), {}),
    ("conv2d", (4, 16, 8, 8), (32, 16, 3, 3), {"padding": 1}),
    ("conv2d", (3, 5, 8, 9), (12, 5, 3, 3), {"stride": 2}),
    ("conv2d", (16, 7, 6, 5), (8, 7, 1, 1), {}),
    ("conv1d", (5, 7, 13), (6, 7, 3), {}),
    ("conv3d", (3, 7, 5, 6, 7), (6, 7, 2, 2, 2), {}),
    ("conv_transpose2d", (5, 7, 9, 11), (7, 6, 3, 3), {"stride": 2}),
    ("conv_transpose2d", (4, 64, 8, 8), (64, 32, 4, 4), {"stride": 2, "padding": 1}),
    ("conv_transpose1d", (3, 4, 10), (4, 5, 3), {"stride": 2}),
    ("conv_transpose3d", (2, 3, 3, 4, 5), (3, 4, 2, 2, 2), {}),
]


def _conv_bias_grads(lib, name, x, w, b, keywords, channels_last):
    x, w, b = lib.tensor(x), lib.tensor(w), lib.tensor(b).requires_grad_()
    if channels_last:
        x = x.contiguous(memory_format=lib.channels_last)
    out = getattr(lib.nn.functional, name)(x, w, b, **keywords)
    upstream = np.random.default_rng(5).standard_normal(tuple(out.shape)).astype(np.float32)
    out.backward(lib.tensor(upstream))
    return b.grad.numpy()


UNMODELLED = pytest.mark.xfail(strict=True, reason="a channels_last transposed convolution: oneDNN's deconvolution "
                               "sums the bias in an order not found (none of: in order, by batch halves, 4/8/16 "
                               "lanes per image); minilora sums as torch's sum kernel (the envelope test below)")


def _conv_case_values(name, x_shape, w_shape):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = (rng.standard_normal(w_shape) * 0.2).astype(np.float32)
    b = rng.standard_normal(w_shape[1] if "transpose" in name else w_shape[0]).astype(np.float32)
    return x, w, b


@pytest.mark.parametrize("channels_last", [False, True], ids=["contiguous", "channels_last"])
@pytest.mark.parametrize("name, x_shape, w_shape, keywords", CONV_CASES, ids=lambda v: str(v))
def test_convolution_bias_gradient_is_onednns_bits(name, x_shape, w_shape, keywords, channels_last, request):
    if channels_last and len(x_shape) != 4:
        pytest.skip("channels_last is a 4-D layout")
    if channels_last and "transpose" in name:
        request.applymarker(UNMODELLED)
    x, w, b = _conv_case_values(name, x_shape, w_shape)
    expected = _conv_bias_grads(torch, name, x, w, b, keywords, channels_last)
    np.testing.assert_array_equal(_conv_bias_grads(ml, name, x, w, b, keywords, channels_last), expected)


@pytest.mark.parametrize("case", [c for c in CONV_CASES if c[0] == "conv_transpose2d"], ids=lambda c: str(c[1]))
def test_channels_last_transposed_convolution_bias_gradient_within_a_sums_rounding(case):
    """Not oneDNN's bits (above): within float32 summation's bound, (n - 1) 2^-24 sum |dy| per channel."""
    name, x_shape, w_shape, keywords = case
    x, w, b = _conv_case_values(name, x_shape, w_shape)
    expected = _conv_bias_grads(torch, name, x, w, b, keywords, True)
    got = _conv_bias_grads(ml, name, x, w, b, keywords, True)
    out_shape = tuple(getattr(torch.nn.functional, name)(torch.tensor(x), torch.tensor(w), **keywords).shape)
    upstream = np.random.default_rng(5).standard_normal(out_shape).astype(np.float32)
    count = upstream.size // upstream.shape[1]
    bound = 2 * (count - 1) * 2.0 ** -24 * np.abs(upstream).sum(axis=(0, 2, 3))
    assert np.all(np.abs(got.astype(np.float64) - expected) <= bound)


@pytest.mark.parametrize("threads", [1, 3, 4], ids=lambda n: f"{n} threads")
@pytest.mark.parametrize("case", [CONV_CASES[0], CONV_CASES[1], CONV_CASES[2], CONV_CASES[3], CONV_CASES[7]],
                         ids=lambda c: c[0] + str(c[1]))
def test_convolution_bias_gradient_on_other_thread_counts_is_onednns_bits(case, threads):
    """One thread: every channel's elements in order, image after image; more: oneDNN's threads take the blocks
    of channels first, the rest split the batch (a 3-channel first layer: its (image, row) items)."""
    name, x_shape, w_shape, keywords = case
    x, w, b = _conv_case_values(name, x_shape, w_shape)
    ml.parallel.set_num_threads(threads)
    torch.set_num_threads(threads)
    try:
        expected = _conv_bias_grads(torch, name, x, w, b, keywords, False)
        got = _conv_bias_grads(ml, name, x, w, b, keywords, False)
    finally:
        ml.parallel.set_num_threads(2)
        torch.set_num_threads(2)
    np.testing.assert_array_equal(got, expected)


def _with_threads(threads, function):
    ml.parallel.set_num_threads(threads)
    torch.set_num_threads(threads)
    try:
        return function()
    finally:
        ml.parallel.set_num_threads(2)
        torch.set_num_threads(2)


@pytest.mark.parametrize("shape", [(6, 7), (37, 20), (300, 9)], ids=str)
def test_batch_norm_channels_last_kernel_adds_three_threads_buffers_in_double(shape):
    """Three threads' partial sums (two add alike in float or double) are added in double, then rounded."""
    _with_threads(3, lambda: _assert_same_grads(_batch_norm(True), _norm_arrays(shape, shape[1]), shape))


def test_group_norm_on_three_threads_is_torchs_bits():
    _with_threads(3, lambda: _assert_same_grads(lambda lib, x, w, b: lib.nn.functional.group_norm(x, 2, w, b),
                                                _norm_arrays((4, 8, 13), 8), (4, 8, 13)))


@pytest.mark.xfail(strict=True, reason="torch's one-thread build adds a group's channels after its last whole "
                                       "vector otherwise when 4, 5 or 7 are left (not modelled: 1, 2, 3 and 6 "
                                       "left match); the envelope test below bounds it")
def test_group_norm_on_one_thread_with_four_channels_left_is_torchs_bits():
    _with_threads(1, lambda: _assert_same_grads(lambda lib, x, w, b: lib.nn.functional.group_norm(x, 2, w, b),
                                                _norm_arrays((4, 8, 13), 8), (4, 8, 13)))


def test_group_norm_on_one_thread_with_four_channels_left_is_within_a_few_ulps():
    """The input gradient's difference there is a few ulps of its largest element (measured: < 2^-20 of it)."""
    def grads():
        x, w, b = _norm_arrays((4, 8, 13), 8)
        upstream = np.random.default_rng(1).standard_normal((4, 8, 13)).astype(np.float32)
        return [_grads_after_backward(lib, lambda lib_, *leaves: lib_.nn.functional.group_norm(leaves[0], 2, *leaves[1:]),
                                      [p[i] for p in [_leaf_pair(a) for a in (x, w, b)]], upstream)
                for i, lib in ((0, torch), (1, ml))]
    expected, got = _with_threads(1, grads)
    np.testing.assert_array_equal(got[1], expected[1])  # (weight and bias: torch's bits)
    np.testing.assert_array_equal(got[2], expected[2])
    assert np.abs(got[0] - expected[0]).max() <= 2.0 ** -20 * np.abs(expected[0]).max()
