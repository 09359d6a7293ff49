"""sdpa without a mask where a block of keys has NaN scores only in its last ``keys % lanes`` (torch's flash kernel).

torch's ``_mul_reduce_max_fusion_kernel`` takes the max of whole vectors by ``vec::maximum`` (a NaN wins) and of the
tail by ``std::max(max, x)``, which keeps ``max`` at a NaN: a row whose NaNs sit in the tail gets the other keys' max,
and where that is -inf (every other key masked, or -inf scores) the kernel sets the block's weights to 0 -- torch's
output is 0 there, its logsumexp 0, where minilora had NaN (F.sdpa of [1, 1, 1, 1] with q = -0, k = inf). A mask's
max (``reduce_all``) lets every NaN win, as before. Planted keys give NaN, -inf or finite scores in every position.
"""
import itertools

import numpy as np
import pytest

import minilora as ml
from minilora import blas, float32_math
from test_sdpa_flash_backward_r29 import _both, one_thread  # noqa: F401  (one_thread: its autouse fixture, here too)

torch = pytest.importorskip("torch")

pytestmark = pytest.mark.skipif(blas.library() != "mkl", reason="MKL (minilora[mkl]) is not minilora's BLAS here")


def _planted(dtype, tq, tk, seed):
    """q of positive entries and keys each NaN, -inf or finite, so each score is NaN, -inf or finite as its key;
    most keys -inf, so that rows see only NaN (or nothing) in a block."""
    rng = np.random.default_rng(seed)
    q = rng.uniform(0.5, 1.5, (1, 2, tq, 2)).astype(dtype)
    k = rng.standard_normal((1, 2, tk, 2)).astype(dtype)
    kind = rng.choice(3, size=(1, 2, tk), p=[0.15, 0.7, 0.15])
    k[kind == 0] = np.nan
    k[kind == 1] = -np.inf
    v = rng.standard_normal((1, 2, tk, 2)).astype(dtype)
    grad = rng.standard_normal((1, 2, tq, 2)).astype(dtype)
    return q, k, v, grad


LANES = {np.float32: float32_math.FLOAT_LANES, np.float64: float32_math.FLOAT_LANES // 2}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("causal", [False, True])
def test_nan_scores_in_a_blocks_tail_are_torchs(dtype, causal):
    lanes = LANES[dtype]
    checked = 0
    for tk, seed in itertools.product((1, 3, lanes, lanes + 3, 2 * lanes + 1, 515), range(4)):
        q, k, v, grad = _planted(dtype, min(tk, 9), tk, seed)
        (ours, _), (theirs, _) = _both(q, k, v, grad, None, is_causal=causal)
        for name, a, b in zip(("out", "dq", "dk", "dv"), ours, theirs):
            assert np.array_equal(a, b, equal_nan=True), (tk, seed, name)
        checked += int((theirs[0] == 0).any())
    assert checked  # rows torch answers with 0 (NaN-only tails) were among them


def test_the_first_report():
    """[1, 1, 1, 1], q = -0, k = inf: q k^T is NaN, a one-key tail; torch's output 0, and its gradients."""
    q, k, v, grad = (np.array(x, np.float32).reshape(1, 1, 1, 1) for x in (-0.0, np.inf, 1.0, 1.0))
    (ours, _), (theirs, _) = _both(q, k, v, grad, None)
    assert theirs[0].item() == 0
    for a, b in zip(ours, theirs):
        assert np.array_equal(a, b, equal_nan=True)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_numpy_steps_are_the_compiled_kernels(dtype):
    from minilora.ops import attention32
    for tk, causal, masked in itertools.product((3, LANES[dtype] + 3, 515), (False, True), (False, True)):
        q, k, v, grad = _planted(dtype, 7, tk, tk)
        bias = np.zeros((1, 1, 7, tk), dtype) if masked else None
        results = []
        for port in (False, True):
            with float32_math.numpy_port() if port else ml.no_grad():
                out, lse = attention32.flash_forward(q, k, v, bias, dtype(0.5), causal)
                results.append((out, lse, *attention32.flash_backward(grad, q, k, v, out, lse, bias, dtype(0.5), causal)))
        assert all(np.array_equal(a, b, equal_nan=True) for a, b in zip(*results)), (tk, causal, masked)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_16_bit_inputs(dtype):
    for tk, seed in itertools.product((3, 19, 515), range(3)):
        q, k, v, _ = _planted(np.float32, 5, tk, seed)
        outs = []
        for lib in (ml, torch):
            args = [lib.tensor(a).to(getattr(lib, dtype)) for a in (q, k, v)]
            outs.append(lib.nn.functional.scaled_dot_product_attention(*args).float().numpy())
        assert np.array_equal(*outs, equal_nan=True), (tk, seed)


def _outputs_and_grads(lib, dtype, arrays, grad, **options):
    leaves = [lib.tensor(a).to(getattr(lib, dtype)).requires_grad_() for a in arrays]
    out = lib.nn.functional.scaled_dot_product_attention(*leaves, **options)
    out.backward(lib.tensor(grad).to(getattr(lib, dtype)))
    return [out.detach().float().numpy()] + [t.grad.float().numpy() for t in leaves]


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_16_bit_causal_fills_the_future_keys_and_skips_their_blocks(dtype):
    """is_causal on 16-bit inputs: torch's kernel fills a query's future keys with -inf in place of their products
    (before the scaling), never reads a block of keys no query of a block sees, and in the backward sets the future
    weights to 0 after the exp. minilora added a -inf bias instead: NaN + -inf is NaN, so a NaN key (or an infinite
    value) after a query's position made its output NaN where torch's is finite (20 of 24 planted cases)."""
    for (tq, tk), seed in itertools.product(((4, 4), (19, 19), (40, 40), (200, 600), (5, 40)), range(2)):
        q, k, v, grad = _planted(np.float32, tq, tk, seed)
        v[0, 1, -1] = np.inf  # the last key's value: a future, unread block for the first query blocks at 600
        ours = _outputs_and_grads(ml, dtype, (q, k, v), grad, is_causal=True)
        theirs = _outputs_and_grads(torch, dtype, (q, k, v), grad, is_causal=True)
        for name, a, b in zip(("out", "dq", "dk", "dv"), ours, theirs):
            assert np.array_equal(a, b, equal_nan=True), (tq, tk, seed, name)
