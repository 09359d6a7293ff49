"""Round 26: compiled row kernels in gemm_pool's C threads (``gemm_pool.RowKernel``, ``parallel.kernel_rows``).

RMSNorm's forward and backward ran as NumPy passes over the whole array (exercise 2.1's and 2.2's solutions): at a
Llama's [1024, 256] float32 activations ~300 us a call on one thread, four passes, and below the size a Python
helper's hand-over (~100 us) pays for, so unsplit: ~13 ms of a LoRA step's serial time at d=256.
``float32_sums.rms_norm_rows`` / ``rms_norm_backward_rows`` run the solutions' operations, in their order, once
per row (float32_sums.c), on blocks of rows in gemm_pool's C threads. These tests pin that they are the regions'
bits for every split, and torch's for the op, and that they decline what they do not take."""
import numpy as np
import pytest

import minilora as ml
from minilora import float32_math, float32_sums, gemm_pool
from minilora.ops import nn as nn_ops

compiled = pytest.mark.skipif(float32_sums._native_library() is None, reason="no C compiler: the regions run")
SHAPES = [(1, 16), (3, 17), (5, 33), (257, 300), (1024, 256), (64, 4096)]


def _inputs(shape, dtype, seed=0):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(shape) * rng.uniform(0.01, 30, shape[:-1] + (1,))).astype(dtype)
    return x, rng.standard_normal(shape[-1]).astype(dtype), rng.standard_normal(shape).astype(dtype)


def _forward_of_region(x, weight, eps):
    normed, r, out = np.empty_like(x), np.empty((len(x), 1), x.dtype), np.empty_like(x)
    nn_ops._rms_norm_rows(x, normed, r, out, weight, eps)
    return normed, r, out


@compiled
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("weighted", [True, False])
def test_compiled_rms_norm_is_the_regions_bits(any_threads, dtype, shape, weighted):
    x, w, g = _inputs(shape, dtype)
    weight = w if weighted else None
    eps = dtype(1e-6)
    expected = _forward_of_region(x, weight, eps)
    got = np.full_like(x, np.nan), np.full((len(x), 1), np.nan, dtype), np.full_like(x, np.nan)
    assert float32_sums.rms_norm_rows(x, weight, eps, *got)
    for a, b in zip(got, expected):
        np.testing.assert_array_equal(a, b)
    normed, r, _ = expected
    gx, gx_mean = np.empty_like(x), np.empty_like(x)
    nn_ops._rms_norm_backward_rows(g, x, normed, r, gx, gx_mean, weight)
    parts = np.full_like(x, np.nan), np.full_like(x, np.nan)
    assert float32_sums.rms_norm_backward_rows(g, x, r, weight, *parts)
    np.testing.assert_array_equal(parts[0], gx)
    np.testing.assert_array_equal(parts[1], gx_mean)
    summed = np.full_like(x, np.nan)
    assert float32_sums.rms_norm_backward_rows(g, x, r, weight, summed)
    np.testing.assert_array_equal(summed, gx + gx_mean)


@compiled
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_rows_of_nan_inf_zero_and_huge_values_are_the_regions_bits(dtype):
    x, w, g = _inputs((6, 48), dtype)
    x[0, 3], x[1] = np.nan, 0.0
    x[2, 5], x[3, :] = np.inf, np.finfo(dtype).max / 4
    x[4, :] = np.finfo(dtype).tiny * 3
    x[5, 7] = -0.0
    w[9] = np.nan
    with np.errstate(all="ignore"):
        expected = _forward_of_region(x, w, dtype(1e-6))
        got = np.empty_like(x), np.empty((6, 1), dtype), np.empty_like(x)
        assert float32_sums.rms_norm_rows(x, w, dtype(1e-6), *got)
        for a, b in zip(got, expected):
            np.testing.assert_array_equal(a.view(f"u{a.itemsize}"), b.view(f"u{b.itemsize}"))
        gx, gx_mean = np.empty_like(x), np.empty_like(x)
        nn_ops._rms_norm_backward_rows(g, x, expected[0], expected[1], gx, gx_mean, w)
        summed = np.empty_like(x)
        assert float32_sums.rms_norm_backward_rows(g, x, expected[1], w, summed)
        np.testing.assert_array_equal(summed, gx + gx_mean)


@compiled
@pytest.mark.parametrize("case", ["narrow rows", "float16", "a view", "weight of another dtype", "short weight"])
def test_what_the_kernels_do_not_take_is_declined_untouched(case):
    x, w, _ = _inputs((8, 64), np.float32)
    if case == "narrow rows":
        x, w = x[:, :15].copy(), w[:15].copy()
    elif case == "float16":
        x, w = x.astype(np.float16), w.astype(np.float16)
    elif case == "a view":
        x = x[:, ::2]
        w = w[:32].copy()
    elif case == "weight of another dtype":
        w = w.astype(np.float64)
    else:
        w = w[:-1].copy()
    outs = np.zeros(x.shape, x.dtype), np.zeros((len(x), 1), x.dtype), np.zeros(x.shape, x.dtype)
    assert float32_sums.rms_norm_rows(x, w, x.dtype.type(1e-6), *outs) is False
    assert not any(o.any() for o in outs)


@compiled
def test_a_row_kernel_fills_every_block_for_any_thread_count():
    x, w, _ = _inputs((1000, 64), np.float64)
    expected = _forward_of_region(x, w, 1e-6)
    before = ml.parallel.num_threads()
    try:
        for count in (2, 3, 5, 8):
            ml.parallel.set_num_threads(count)
            got = np.full_like(x, np.nan), np.full((len(x), 1), np.nan), np.full_like(x, np.nan)
            assert float32_sums.rms_norm_rows(x, w, 1e-6, *got)
            np.testing.assert_array_equal(got[2], expected[2])
    finally:
        ml.parallel.set_num_threads(before)


@compiled
def test_the_pool_runs_a_row_kernel_on_its_blocks():
    """The pool calls the kernel once per block, rows [n i / parts, n (i + 1) / parts), as its products."""
    if not gemm_pool.available():
        pytest.skip("no CBLAS: the pool is off")
    x, w, _ = _inputs((90, 32), np.float32)
    library = float32_sums._native_library()
    out = np.full_like(x, np.nan), np.full((90, 1), np.nan, np.float32), np.full_like(x, np.nan)
    args = float32_sums._RmsNormArgs(x=x.ctypes.data, weight=w.ctypes.data, normed=out[0].ctypes.data,
                                     r=out[1].ctypes.data, out=out[2].ctypes.data, width=32, eps=1e-6)
    assert gemm_pool.run(90, 3, [gemm_pool.RowKernel(library.ml_rms_norm_rows_f32, args)])
    np.testing.assert_array_equal(out[2], _forward_of_region(x, w, np.float32(1e-6))[2])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_rms_norm_split_in_c_threads_is_torchs_bits(two_threads, dtype):
    """A [1024, 256] Llama activation, the size that splits: values and both gradients are torch's bits."""
    torch = pytest.importorskip("torch")
    x, w, g = _inputs((4, 256, 256), dtype, seed=3)
    tx, tw = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
    mx, mw = ml.tensor(x, requires_grad=True), ml.tensor(w, requires_grad=True)
    ty = torch.nn.functional.rms_norm(tx, (256,), tw, 1e-6)
    my = ml.nn.functional.rms_norm(mx, (256,), mw, 1e-6)
    np.testing.assert_array_equal(my.detach().numpy(), ty.detach().numpy())
    ty.backward(torch.tensor(g))
    my.backward(ml.tensor(g))
    np.testing.assert_array_equal(mx.grad.numpy(), tx.grad.numpy())
    np.testing.assert_array_equal(mw.grad.numpy(), tw.grad.numpy())


# ---- float32_math's compiled elementwise kernels and RoPE, on blocks in the C threads ------------------------------
def _kernel_arrays(name, n, rng):
    """Inputs in each kernel's own range, outputs empty, as the kernel's signature lists them (float32_math)."""
    arity = float32_math._NATIVE_SIGNATURES[name].count("p")
    inputs = {"ml_swiglu": 2, "ml_swiglu_backward": 4, "ml_silu_backward": 3, "ml_mish_backward": 3,
              "ml_pow": 2, "ml_atan2": 2}.get(name, 1)
    values = [rng.uniform(-3, 3, n).astype(np.float32) for _ in range(inputs)]
    if name in ("ml_log", "ml_log1p", "ml_pow"):
        values[0] = np.abs(values[0]) + np.float32(0.1)
    if name == "ml_atanh":
        values[0] = values[0] / np.float32(3.5)
    if name == "ml_swiglu_backward":
        values[3] = np.float32(1) + np.exp(-values[1])
    return values + [np.full(n, np.nan, np.float32) for _ in range(arity - inputs)]


needs_kernels = pytest.mark.skipif(float32_math._native_library() is None, reason="no C compiler")


@needs_kernels
@pytest.mark.parametrize("name", [n for n in float32_math._BLOCK_KERNELS if "rotary" not in n])
def test_an_elementwise_kernel_split_in_c_threads_is_the_whole_calls_bits(name):
    rng = np.random.default_rng(7)
    n = 3 * 65536 + 37  # (blocks that start off a vector's edge)
    arrays = _kernel_arrays(name, n, rng)
    kernel = getattr(float32_math._native_library(), name)
    whole = [a.copy() for a in arrays]
    kernel(*(w.ctypes.data for w in whole), n)
    before = ml.parallel.num_threads()
    try:
        for count in (2, 3):
            ml.parallel.set_num_threads(count)
            split = [a.copy() for a in arrays]
            float32_math._native_map(kernel, split)
            for got, expected in zip(split, whole):
                np.testing.assert_array_equal(got, expected, err_msg=f"{name} on {count} threads")
    finally:
        ml.parallel.set_num_threads(before)


@needs_kernels
def test_swiglu_backward_without_the_up_gradient_leaves_it_none_in_blocks():
    rng = np.random.default_rng(8)
    gate, up, g = (rng.standard_normal((8, 128, 688)).astype(np.float32) for _ in range(3))
    out, d = float32_math.swiglu(gate, up)
    both = float32_math.swiglu_backward(g, gate, up, d, True)
    alone = float32_math.swiglu_backward(g, gate, up, d, False)
    assert alone[1] is None
    np.testing.assert_array_equal(alone[0], both[0])


@needs_kernels
@pytest.mark.parametrize("backward", [False, True])
def test_rotary_split_in_c_threads_is_the_numpy_passes_bits(any_threads, backward):
    rng = np.random.default_rng(9)
    x = rng.standard_normal((8, 128, 4, 64)).astype(np.float32).transpose(0, 2, 1, 3)  # (a Llama's q: a view)
    cos, sin = (rng.standard_normal((1, 1, 128, 64)).astype(np.float32) for _ in range(2))
    compiled, numpy_rows = ((float32_math.rotary_backward, nn_ops._rotate_back_rows) if backward
                            else (float32_math.rotary, nn_ops._rotate_rows))
    got = nn_ops._rotated(compiled, numpy_rows, x, cos, sin)
    expected = np.empty_like(got)
    numpy_rows(x, np.broadcast_to(cos, x.shape), np.broadcast_to(sin, x.shape), expected)
    np.testing.assert_array_equal(got, expected)


def test_products_are_declined_while_openblas_runs_its_own_threads():
    """gemm_pool.run called directly (not through parallel.products_run, which puts BLAS on one thread) with
    OpenBLAS on 2 threads: each block's sgemm started OpenBLAS's threads too, and under ``chrt -f 99`` the first
    call hung at 200% CPU. Now the products are declined (False, nothing written); a row kernel still runs."""
    from minilora import blas
    if not gemm_pool.available() or blas.get_num_threads() is None:
        pytest.skip("no pool or no OpenBLAS thread control here")
    x, w, _ = _inputs((64, 32), np.float32)
    out = np.zeros((64, 32), np.float32)
    before = blas.get_num_threads()
    blas.set_num_threads(2)
    try:
        assert gemm_pool.run(64, 2, [gemm_pool.Product(x, w.reshape(32, 1) * np.ones((1, 32), np.float32), out)]) \
            is False
        assert not out.any()
        library = float32_sums._native_library()
        if library is not None:
            outs = np.full_like(x, np.nan), np.full((64, 1), np.nan, np.float32), np.full_like(x, np.nan)
            args = float32_sums._RmsNormArgs(x=x.ctypes.data, weight=w.ctypes.data, normed=outs[0].ctypes.data,
                                             r=outs[1].ctypes.data, out=outs[2].ctypes.data, width=32, eps=1e-6)
            assert gemm_pool.run(64, 2, [gemm_pool.RowKernel(library.ml_rms_norm_rows_f32, args)])
            assert not np.isnan(outs[2]).any()
    finally:
        blas.set_num_threads(before)
