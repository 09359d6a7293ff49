"""Round 30 made the compiled flash-attention kernels (native/float32_kernels.c, ops/attention32.py) faster without
changing a bit: the forward's row max in vector lanes (it scanned one element after the other), the exp sums' and
rowsum(dO * out)'s lane loops inlined for a constant lane count (they ran over a run-time count, scalar).
``attention32.scalar_loops()`` runs round 29's scalar loops; here both give the same bits on ragged shapes -- lengths
around the vector sizes, planted NaN, infinities, zeros of both signs, rows that see no key -- forward and backward,
float32 and float64, and the exp sums for each lane count a build may use (and attention32's NumPy steps). Torch's
bits for these kernels: tests/test_sdpa_flash_r28.py and test_sdpa_flash_backward_r29.py.
"""
import numpy as np
import pytest

from minilora import blas, float32_math
from minilora.ops import attention32

pytestmark = [
    pytest.mark.skipif(blas.library() != "mkl", reason="MKL (minilora[mkl]) is not minilora's BLAS here"),
    pytest.mark.skipif(not float32_math.native_available(), reason="the compiled kernels are not built here"),
]


def _bits(a):
    """The array's bit patterns (a NaN's and a zero's sign included), for an exact comparison."""
    a = np.ascontiguousarray(a)
    return a.view(np.uint32 if a.dtype == np.float32 else np.uint64)


def _planted(dtype, b, hq, hkv, tq, tk, d, mask, seed):
    """q, k, v, dO and a mask with the values the row max and sums must carry: a NaN and infinities in k, a query
    row of -0 (every score a zero), huge scores, and (bool mask) rows that see no key."""
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((b, tq, hq, d)).astype(dtype).transpose(0, 2, 1, 3)  # (a Llama's projection layout)
    k, v = (rng.standard_normal((b, hkv, tk, d)).astype(dtype) for _ in range(2))
    q[0, 0, tq // 2] = -0.0
    if tq > 2:
        q[0, -1, 1] *= 200
    k[-1, 0, tk // 3, d // 2] = np.nan
    k[0, -1, tk - 1, 0] = np.inf if tk % 2 else -np.inf
    grad = rng.standard_normal((b, hq, tq, d)).astype(dtype)
    if mask == "float":
        mask = (rng.standard_normal((b, hq, tq, tk)) * 3).astype(dtype)
    elif mask == "bool":
        mask = rng.random((b, 1, tq, tk)) > 0.3
        mask[:, :, ::5] = False
    return q, k, v, grad, mask


def _both_loops(fn):
    """fn()'s arrays with the vector loops and with the scalar ones."""
    vector = fn()
    with attention32.scalar_loops():
        scalar = fn()
    return vector, scalar


CASES = [  # (batch, query heads, key/value heads, Tq, Tk, head size, causal, mask)
    (1, 1, 1, 1, 1, 1, False, None),            # one key: no whole vector anywhere
    (2, 2, 2, 9, 15, 7, False, "float"),        # a row one short of a vector
    (1, 4, 2, 17, 17, 16, True, None),          # one over a vector, GQA, causal
    (2, 2, 1, 33, 31, 20, False, "bool"),       # rows that see no key, a tail of 15
    (1, 2, 2, 40, 600, 33, True, "bool"),       # two blocks of keys (the running max rescales), causal and masked
    (1, 1, 1, 70, 129, 80, False, None),        # two query blocks, a vector and one
]


def _case_id(case):
    return "x".join(map(str, case))


def _attention_inputs(dtype, case, seed):
    """q, k, v, dO, the bias (a bool mask as 0 / -inf), the scale and causal, for ``CASES``' entry ``case``."""
    *shape, causal, mask = case
    q, k, v, grad, mask = _planted(dtype, *shape, mask, seed)
    bias = None if mask is None else np.where(mask, 0, -np.inf).astype(dtype) if mask.dtype == bool else mask
    return q, k, v, grad, bias, dtype(1 / np.sqrt(q.shape[-1])), causal


def _assert_same_bits(vector, scalar):
    for ours, reference in zip(vector, scalar):
        np.testing.assert_array_equal(_bits(ours), _bits(reference))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_flash_forward_vector_loops_give_the_scalar_loops_bits(dtype, case):
    q, k, v, _, bias, scale, causal = _attention_inputs(dtype, case, seed=case[4])
    _assert_same_bits(*_both_loops(lambda: attention32.flash_forward(q, k, v, bias, scale, causal)))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_flash_backward_vector_loops_give_the_scalar_loops_bits(dtype, case):
    q, k, v, grad, bias, scale, causal = _attention_inputs(dtype, case, seed=case[3])
    out, lse = attention32.flash_forward(q, k, v, bias, scale, causal)
    _assert_same_bits(*_both_loops(lambda: attention32.flash_backward(grad, q, k, v, out, lse, bias, scale, causal)))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("lanes", [16, 8, 4, 3])  # (AVX-512's and AVX2's vectors of either dtype; 3: no inlined copy)
def test_exp_sums_in_vector_lanes_give_the_scalar_loops_bits(dtype, lanes):
    rng = np.random.default_rng(lanes)
    for n in (1, lanes - 1, lanes, lanes + 1, 2 * lanes + 5, 130):
        x = (rng.standard_normal((5, n)) * 30).astype(dtype)
        x[1, n // 2] = np.nan
        x[2, 0] = -np.inf
        x[3] = -0.0
        vector, scalar = _both_loops(lambda: attention32._exp_and_lane_sum_natively(x, lanes))
        _assert_same_bits(vector, scalar)
        if lanes == (attention32._LANES if dtype == np.float32 else attention32._LANES // 2):
            with float32_math.numpy_port():  # (and attention32's NumPy steps, which a learner reads)
                _assert_same_bits(vector, attention32._exp_and_lane_sum(x))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("scale", [0.0, -0.25, np.inf, np.nan, 1e-30])
def test_causal_forward_skips_the_future_keys_only_where_their_weights_are_zero(dtype, scale):
    """Causal without a mask, the vector loops compute no exp for the keys after a query (-inf times a positive scale,
    less a finite max: weight 0); a scale of 0, below 0 or NaN makes those scores NaN or +inf -- then every key's."""
    q, k, v, _, bias, _, causal = _attention_inputs(dtype, (1, 2, 2, 33, 40, 16, True, None), seed=1)
    _assert_same_bits(*_both_loops(lambda: attention32.flash_forward(q, k, v, bias, dtype(scale), causal)))
