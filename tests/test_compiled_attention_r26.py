"""Round 26: a Llama layer's float32 attention in gemm_pool's C threads (minilora/compiled_attention.py,
native/attention.c), the NumPy code's steps (ops/nn.py's _attention_forward, exercise 2.4's solution) on blocks of
(batch, head) pairs. The NumPy code made ~10 calls per block, and two Python threads met at the GIL after each:
on 2 threads a LoRA step's attention ran 1.5x faster than on 1. These tests pin that the compiled attention gives
the NumPy code's bits -- layouts, masks, rows with no key, NaN, zero rows, any thread count -- and that it steps
aside where it does not apply. The NumPy code's exp for float32 is now SLEEF's (torch's exp, the compiled one's)."""
import numpy as np
import pytest

import minilora as ml
from minilora import compiled_attention
from minilora.ops import nn as nn_ops

pytestmark = pytest.mark.skipif(compiled_attention._kernels() is None, reason="no C compiler: the NumPy code runs")


def _qkv(b, h, tq, tk, d, dv, transposed, rng):
    if transposed:  # (a Llama's q, k, v: [B, T, H, D] memory seen as [B, H, T, D])
        q = rng.standard_normal((b, tq, h, d)).astype(np.float32).transpose(0, 2, 1, 3)
        k = rng.standard_normal((b, tk, h, d)).astype(np.float32).transpose(0, 2, 1, 3)
        v = rng.standard_normal((b, tk, h, dv)).astype(np.float32).transpose(0, 2, 1, 3)
        return q, k, v
    return (rng.standard_normal((b, h, t, x)).astype(np.float32) for t, x in ((tq, d), (tk, d), (tk, dv)))


def _bias(kind, b, tq, tk, rng):
    if kind == "causal":
        return np.triu(np.full((tq, tk), -np.inf, np.float32), 1 + tk - tq)[None, None]
    if kind == "per batch":
        return rng.standard_normal((b, 1, tq, tk)).astype(np.float32)
    if kind == "keys padded":  # (a padding mask: [B, 1, 1, Tk], whole rows of keys out; one batch row all out)
        mask = np.zeros((b, 1, 1, tk), np.float32)
        mask[:, :, :, tk // 2:] = -np.inf
        mask[0] = -np.inf
        return mask
    return None


def _both(q, k, v, bias, scale, g):
    """(compiled, NumPy) results: out, probs, dq, dk, dv."""
    b, h, tq, _ = q.shape
    tk = k.shape[2]
    bias = None if bias is None else nn_ops._with_batch_axis(bias, (b, h, tq, tk))
    results = []
    for compiled in (True, False):
        out, probs = np.full((b, h, tq, v.shape[3]), np.nan, np.float32), np.full((b, h, tq, tk), np.nan, np.float32)
        grads = [np.full(a.shape, np.nan, np.float32) for a in (q, k, v)]
        if compiled:
            assert compiled_attention.forward(q, k, v, bias, out, probs, scale)
            assert compiled_attention.backward(g, q, k, v, probs, out, *grads, scale)
        else:
            nn_ops._attention_forward(q, k, v, bias, out, probs, scale)
            nn_ops._attention_backward(g, q, k, v, probs, out, *grads, scale)
        results.append([out, probs, *grads])
    return results


CASES = [  # (b, h, tq, tk, d, dv, transposed, bias)
    (2, 3, 17, 17, 8, 8, False, None), (8, 4, 128, 128, 64, 64, True, "causal"), (3, 2, 33, 33, 16, 16, True, "per batch"),
    (1, 1, 200, 200, 32, 32, False, "causal"), (2, 2, 5, 19, 16, 24, False, "keys padded"),
    (2, 3, 9, 130, 8, 4, True, "per batch"), (4, 2, 64, 64, 64, 64, True, None)]


@pytest.mark.parametrize("case", CASES, ids=[str(c) for c in CASES])
def test_compiled_attention_is_the_numpy_codes_bits(any_threads, case):
    rng = np.random.default_rng(sum(case[:6]))
    b, h, tq, tk, d, dv, transposed, kind = case
    q, k, v = _qkv(b, h, tq, tk, d, dv, transposed, rng)
    g = rng.standard_normal((b, h, tq, dv)).astype(np.float32)
    compiled, numpy = _both(q, k, v, _bias(kind, b, tq, tk, rng), np.float32(d ** -0.5), g)
    for name, got, expected in zip(("out", "probs", "dq", "dk", "dv"), compiled, numpy):
        np.testing.assert_array_equal(got, expected, err_msg=name)


@pytest.mark.parametrize("case", ["nan in q", "zero rows", "inf in k"])
def test_rows_numpys_max_decides_are_the_numpy_codes_bits(case):
    rng = np.random.default_rng(3)
    q, k, v = _qkv(2, 2, 16, 16, 8, 8, False, rng)
    if case == "nan in q":
        q[0, 1, 3, 2] = np.nan
    elif case == "zero rows":
        q[1, 0, :5] = 0
        q[0, 0, 2] = -0.0
    else:
        k[1, 1, 4, 0] = np.inf
    g = rng.standard_normal((2, 2, 16, 8)).astype(np.float32)
    with np.errstate(all="ignore"):
        compiled, numpy = _both(q, k, v, _bias("causal", 2, 16, 16, rng), np.float32(0.35), g)
    for name, got, expected in zip(("out", "probs", "dq", "dk", "dv"), compiled, numpy):
        np.testing.assert_array_equal(got, expected, err_msg=name)


@pytest.mark.parametrize("case", ["grouped-query heads", "float64", "one column", "broadcast keys"])
def test_what_it_does_not_take_is_declined(case):
    rng = np.random.default_rng(4)
    q, k, v = _qkv(2, 4, 8, 8, 8, 8, False, rng)
    if case == "grouped-query heads":
        k, v = k[:, :2].copy(), v[:, :2].copy()
    elif case == "float64":
        q, k, v = (a.astype(np.float64) for a in (q, k, v))
    elif case == "one column":
        v = v[..., :1].copy()
    else:
        k = np.broadcast_to(k[:, :, :1], k.shape)
    out, probs = np.zeros((2, 4, 8, v.shape[3]), q.dtype), np.zeros((2, 4, 8, 8), q.dtype)
    assert compiled_attention.forward(q, k, v, None, out, probs, 0.5) is False
    assert not out.any() and not probs.any()


def test_sdpa_of_a_llama_shape_is_close_to_torchs(two_threads):
    """Values and gradients near torch's flash attention (its own order and exp: not its bits)."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(5)
    q, k, v = _qkv(4, 4, 64, 64, 32, 32, True, rng)
    tensors = [(ml.tensor(a, requires_grad=True), torch.tensor(a, requires_grad=True)) for a in (q, k, v)]
    ours = ml.nn.functional.scaled_dot_product_attention(*(m for m, _ in tensors), is_causal=True)
    theirs = torch.nn.functional.scaled_dot_product_attention(*(t for _, t in tensors), is_causal=True)
    np.testing.assert_allclose(ours.detach().numpy(), theirs.detach().numpy(), rtol=1e-5, atol=2e-6)
    g = rng.standard_normal(ours.shape).astype(np.float32)
    ours.backward(ml.tensor(g))
    theirs.backward(torch.tensor(g))
    for m, t in tensors:
        np.testing.assert_allclose(m.grad.numpy(), t.grad.numpy(), rtol=1e-4, atol=1e-5)


def test_the_numpy_ports_exp_in_place_keeps_its_input():
    """The NumPy code's float32 exp runs in place (``_softmax_exp``); without compiled kernels float32_math's port
    wrote its output before its last reads of the input, and a masked attention came out NaN everywhere."""
    from minilora import float32_math
    x = np.array([[-np.inf, -200.0, -1.0, 0.0, 3.0, 90.0, np.inf, -0.5]] * 3, np.float32)
    expected = float32_math.sleef_exp(x)
    with float32_math.numpy_port():
        in_place = x.copy()
        float32_math.sleef_exp(in_place, out=in_place)
    np.testing.assert_array_equal(in_place, expected)


def test_the_pool_declines_the_attention_kernel_while_openblas_runs_its_own_threads():
    """Its blocks call sgemm: called directly with OpenBLAS's threads on, as a product (test_row_kernels_r26), the
    pool declines it rather than start OpenBLAS's threads in each block (a livelock under chrt -f 99)."""
    from minilora import blas, gemm_pool
    if not gemm_pool.available() or blas.get_num_threads() is None:
        pytest.skip("no pool or no OpenBLAS thread control here")
    rng = np.random.default_rng(6)
    q, k, v = _qkv(2, 2, 8, 8, 8, 8, False, rng)
    out, probs = np.zeros((2, 2, 8, 8), np.float32), np.zeros((2, 2, 8, 8), np.float32)
    args = compiled_attention._arguments(q, k, v, out, probs, 0.5)
    kernel = gemm_pool.RowKernel(compiled_attention._kernels().ml_attention_forward_blocks, args, calls_blas=True)
    before = blas.get_num_threads()
    blas.set_num_threads(2)
    try:
        assert gemm_pool.run(4, 2, [kernel]) is False
        assert not out.any()
    finally:
        blas.set_num_threads(before)
    assert compiled_attention.forward(q, k, v, None, out, probs, 0.5) and out.any()  # (through products_run: runs)
