"""nn layers as tutorials use them, against torch 2.13 bit for bit with MKL as the BLAS, round 31: what round 30's
sweep (tests/users_nn_sweep.py) left where torch runs oneDNN.

Convolution gradients in the orders of oneDNN's backward kernels (minilora/ops/conv_onednn.py): the input gradient of
``jit:avx512_core`` (kernel row, column, output channel), the weight gradient of ``jit:avx2``/``jit:avx512_core``
(each thread's images position after position, the threads' sums added), and ``gemm:jit``'s (grouped, dilated):
columns summed over a group's output channels then col2im; weights as 16-lane dot products folded in halves.
"""
import sys

import numpy as np
import pytest

import minilora as ml
from minilora import blas

torch = pytest.importorskip("torch")
sys.path.insert(0, __file__.rsplit("/", 1)[0])
from users_nn_sweep import CASES, compare  # noqa: E402  (the sweep's cases)
from test_cnn_grads_r19 import _with_threads  # noqa: E402

pytestmark = [pytest.mark.skipif(blas.library() != "mkl", reason="MKL (minilora[mkl]) is not minilora's BLAS here"),
              pytest.mark.usefixtures("two_threads")]
_BY_NAME = {case[0]: case for case in CASES}


def _differences(name, dtype):
    name, build, call, make, _, grad = _BY_NAME[name]
    return compare(name, build, call, make, dtype, grad)


def _gradients(lib, x, w, **geometry):
    """(input grad, weight grad) of ``conv2d`` with a fixed upstream gradient, as NumPy arrays (the forward's orders
    are round 30's: tests/test_nn_users2_r30.py)."""
    x = lib.tensor(x, requires_grad=True)
    w = lib.tensor(w, requires_grad=True)
    out = lib.nn.functional.conv2d(x, w, **geometry)
    g = np.random.default_rng(9).standard_normal(tuple(out.shape)).astype(np.float32)
    out.backward(lib.tensor(g))
    return [np.asarray(t.detach().numpy()) for t in (x.grad, w.grad)]


def _assert_convolution_is_torchs(n, c, o, size, kernel, seed=0, **geometry):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c) + size).astype(np.float32)
    w = rng.standard_normal((o, c // geometry.get("groups", 1)) + kernel).astype(np.float32)
    for name, theirs, mine in zip(["input grad", "weight grad"], _gradients(torch, x, w, **geometry),
                                  _gradients(ml, x, w, **geometry)):
        np.testing.assert_array_equal(mine, theirs, err_msg=name)


# ---- convolution gradients ------------------------------------------------------------------------------------
_SWEEP_CONVOLUTIONS = ["Conv1d", "Conv1d stride pad dil", "Conv1d circular", "Conv1d reflect", "Conv1d causal valid",
                       "Conv2d", "Conv2d stride2 pad1", "Conv2d reflect", "Conv2d replicate", "Conv2d circular",
                       "Conv2d patchify", "Conv2d mnist", "F.conv2d positional", "F.conv2d kw", "F.conv1d kw",
                       "Conv2d+BN+ReLU+pool", "ConvTranspose2d", "ConvTranspose1d", "Conv2d tuple args",
                       "Conv2d groups", "Conv2d depthwise", "Conv2d same dil", "Conv1d depthwise", "Conv2d 1x1"]


@pytest.mark.parametrize("name", _SWEEP_CONVOLUTIONS)
def test_sweeps_float32_convolution_gradients_are_torchs(name):
    assert _differences(name, "float32") == []


_JIT_SHAPES = [  # (N, C, O, size, kernel, geometry): jit:avx512_core's input gradient, jit:avx2's weight gradient
    (2, 4, 6, (9, 11), (3, 3), {}),
    (3, 4, 16, (9, 11), (3, 3), {"stride": 2, "padding": 1}),
    (2, 12, 6, (9, 11), (3, 3), {"padding": (0, 2)}),  # (two blocks of 8 input channels: one thread each)
    (4, 8, 6, (9, 11), (3, 3), {}),
    (4, 9, 12, (9, 11), (3, 3), {}),
    (4, 1, 8, (28, 28), (5, 5), {}),
    (4, 3, 7, (12, 10), (3, 2), {"stride": (2, 1), "padding": 1}),  # (the "first convolution": 3 channels)
    (2, 4, 6, (1, 17), (1, 3), {"padding": (0, 2), "dilation": (1, 2)}),
]
_ONE_BY_ONE_SHAPES = [  # jit_1x1: each image's sum from 0, the threads' images added
    (2, 4, 6, (9, 11), (1, 1), {}),
    (4, 8, 6, (9, 11), (1, 1), {}),
    (4, 16, 12, (5, 7), (1, 1), {}),
    (6, 4, 6, (5, 7), (1, 1), {}),  # (split evenly among 1, 2 and 3 threads)
]
_DEPTHWISE_SHAPES = [  # jit_dw: the jit kernels' orders, one channel a group
    (2, 4, 4, (1, 17), (1, 3), {"groups": 4}),
    (3, 16, 16, (9, 11), (3, 3), {"padding": 1, "groups": 16}),
    (4, 8, 8, (9, 11), (3, 3), {"stride": 2, "padding": 1, "groups": 8}),
]
_GEMM_SHAPES = [  # gemm:jit: grouped, dilated, strided and dilated
    (2, 4, 8, (9, 11), (3, 3), {"padding": 1, "groups": 2}),
    (5, 4, 8, (9, 11), (3, 3), {"padding": 1, "groups": 4}),
    (2, 6, 9, (20, 30), (3, 3), {"stride": 2, "groups": 3}),
    (4, 4, 6, (9, 11), (3, 3), {"padding": 2, "dilation": 2}),
    (3, 4, 6, (9, 11), (3, 2), {"stride": (2, 1), "padding": (1, 0), "dilation": (1, 2)}),
    (2, 4, 6, (1, 17), (1, 3), {"stride": (1, 2), "padding": (0, 2), "dilation": (1, 2)}),
    (4, 2, 8, (28, 28), (5, 5), {"groups": 2}),
]


@pytest.mark.parametrize("shape", _JIT_SHAPES + _ONE_BY_ONE_SHAPES + _DEPTHWISE_SHAPES + _GEMM_SHAPES, ids=str)
def test_convolution_gradients_are_onednns_bits(shape):
    """And the same convolution of an empty batch: zeros (the ordered kernels not asked)."""
    n, c, o, size, kernel, geometry = shape
    _assert_convolution_is_torchs(n, c, o, size, kernel, **geometry)
    _assert_convolution_is_torchs(0, c, o, size, kernel, **geometry)


_THREADED_SHAPES = [_JIT_SHAPES[0], _JIT_SHAPES[3], _DEPTHWISE_SHAPES[1], _GEMM_SHAPES[1], _GEMM_SHAPES[3]]


@pytest.mark.parametrize("shape, threads", [(shape, threads) for shape in _THREADED_SHAPES for threads in (1, 3)]
                         + [(_ONE_BY_ONE_SHAPES[3], 3)], ids=str)  # (a 1x1 kernel on one thread: not oneDNN)
def test_convolution_gradients_on_other_thread_counts_are_onednns_bits(shape, threads):
    n, c, o, size, kernel, geometry = shape
    _with_threads(threads, lambda: _assert_convolution_is_torchs(n, c, o, size, kernel, **geometry))


def _transposed_gradients(lib, x, w, **geometry):
    """(out, input grad, weight grad) of ``conv_transpose2d`` with a fixed upstream gradient, as NumPy arrays."""
    x = lib.tensor(x, requires_grad=True)
    w = lib.tensor(w, requires_grad=True)
    out = lib.nn.functional.conv_transpose2d(x, w, **geometry)
    g = np.random.default_rng(9).standard_normal(tuple(out.shape)).astype(np.float32)
    out.backward(lib.tensor(g))
    return [np.asarray(t.detach().numpy()) for t in (out, x.grad, w.grad)]


_TRANSPOSED_SHAPES = [  # (N, C_in, C_out, size, kernel, geometry, is the output modelled: unit strides)
    (2, 4, 6, (9, 11), (3, 3), {}, True),
    (5, 4, 6, (9, 11), (3, 3), {"padding": 1}, True),
    (4, 12, 6, (9, 11), (3, 3), {}, True),
    (4, 6, 12, (9, 11), (3, 3), {"dilation": 2}, True),
    (3, 4, 3, (9, 11), (4, 4), {"stride": 2, "padding": 1}, False),
    (2, 4, 6, (1, 17), (1, 4), {"stride": (1, 2), "padding": (0, 1)}, False),
]


@pytest.mark.parametrize("shape", _TRANSPOSED_SHAPES, ids=str)
def test_transposed_convolution_is_onednns_bits(shape):
    """oneDNN's deconvolution: a convolution's input gradient (its output), forward (its input gradient) and weight
    gradient (the output's gradient as the input). A dilated one's weight gradient runs gemm: not modelled."""
    n, c_in, c_out, size, kernel, geometry, output_modelled = shape
    rng = np.random.default_rng(1)
    x = rng.standard_normal((n, c_in) + size).astype(np.float32)
    w = rng.standard_normal((c_in, c_out) + kernel).astype(np.float32)
    names = ["out", "input grad", "weight grad"]
    checked = [output_modelled, True, "dilation" not in geometry]
    for name, check, theirs, mine in zip(names, checked, _transposed_gradients(torch, x, w, **geometry),
                                         _transposed_gradients(ml, x, w, **geometry)):
        if check:
            np.testing.assert_array_equal(mine, theirs, err_msg=name)


def _assert_bias_gradient_is_torchs(n, c, o, size, kernel, geometry):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((n, c) + size).astype(np.float32)
    w = rng.standard_normal((o, c // geometry.get("groups", 1)) + kernel).astype(np.float32)
    b = rng.standard_normal(o).astype(np.float32)
    grads = []
    for lib in (torch, ml):
        bias = lib.tensor(b, requires_grad=True)
        out = lib.nn.functional.conv2d(lib.tensor(x), lib.tensor(w), bias, **geometry)
        out.backward(lib.tensor(np.random.default_rng(9).standard_normal(tuple(out.shape)).astype(np.float32)))
        grads.append(bias.grad.numpy())
    np.testing.assert_array_equal(grads[1], grads[0])


@pytest.mark.parametrize("shape", _GEMM_SHAPES[:5] + _GEMM_SHAPES[6:], ids=str)  # (the 1-D one: alike either way)
def test_gemm_kernels_bias_gradient_is_onednns_bits(shape):
    """gemm:jit sums each channel's bias gradient row by row (an image's last dimension from 0), the rows in order."""
    _assert_bias_gradient_is_torchs(*shape)


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("shape", _DEPTHWISE_SHAPES, ids=str)
def test_depthwise_bias_gradient_is_onednns_bits(shape, threads):
    """jit_dw: each thread's images in order, the threads' sums added (as the ungrouped kernels' ConvBias)."""
    _with_threads(threads, lambda: _assert_bias_gradient_is_torchs(*shape))


def test_fused_multiply_add_chain_compiled_and_numpy_agree():
    """The weight gradient's chain of fused multiply-adds: C's fmaf loop and the NumPy loop, the same bits."""
    from minilora import float32_math
    rng = np.random.default_rng(4)
    a, b = rng.standard_normal((37, 5)).astype(np.float32), rng.standard_normal((37, 9)).astype(np.float32)
    start = rng.standard_normal((5, 9)).astype(np.float32)
    compiled = float32_math.fused_multiply_add_chain(a, b, start)
    with float32_math.numpy_port():
        ported = float32_math.fused_multiply_add_chain(a, b, start)
    expected = start.astype(np.float64)
    for t in range(37):  # (a float64 product is exact; its sum rounded to float32 once: fmaf but for double rounding)
        expected = (a[t, :, None].astype(np.float64) * b[t] + expected).astype(np.float32).astype(np.float64)
    np.testing.assert_array_equal(compiled, ported)
    np.testing.assert_array_equal(compiled, expected.astype(np.float32))

