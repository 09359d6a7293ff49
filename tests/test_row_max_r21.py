"""float32_math.row_max: softmax's row max through the compiled ml_row_max, the bits of NumPy's
``max(axis=-1, keepdims=True)`` (NaN rows, -inf rows, zero rows of both signs, ragged widths); and
attention and cross entropy, which shift by it, give the bits they gave with NumPy's max."""
import numpy as np
import pytest

import minilora as ml
from minilora import compiled_attention, float32_math
import minilora.nn.functional as F

needs_compiled = pytest.mark.skipif(not float32_math.native_available(), reason="no compiled kernels here")


def same_bits(a, b):
    return a.shape == b.shape and a.dtype == b.dtype and np.array_equal(a.view(np.uint32), b.view(np.uint32))


def awkward_rows(width, rng):
    """Random rows, and rows of -inf, of -inf and one value, of NaNs (both signs) among values, of +inf,
    of zeros of both signs, of -0 alone, of values below zero."""
    rows = rng.standard_normal((12, width)).astype(np.float32)
    rows[1] = -np.inf
    rows[2] = -np.inf
    rows[2, width // 2] = 3.0
    rows[3, width - 1] = np.nan
    rows[4, 0] = -np.float32(np.nan)  # (a negative NaN, as 0/0 on x86)
    rows[4, width // 3] = np.nan
    rows[5, width // 2] = np.inf
    rows[6] = 0.0
    rows[6, ::2] = -0.0
    rows[7] = -0.0
    rows[8] = -np.abs(rows[8]) - 1
    return rows


@pytest.mark.parametrize("width", [1, 7, 15, 16, 17, 31, 33, 128, 130])
def test_bits_of_numpys_max(width):
    rng = np.random.default_rng(width)
    rows = awkward_rows(width, rng)
    assert same_bits(float32_math.row_max(rows), rows.max(axis=-1, keepdims=True))
    for i in range(len(rows)):  # each awkward row alone, and beside ordinary ones (which take the compiled path)
        block = rows[[i, 0, 9, 10]]
        assert same_bits(float32_math.row_max(block), block.max(axis=-1, keepdims=True))


@needs_compiled
def test_ordinary_rows_run_compiled_with_numpys_bits():
    rng = np.random.default_rng(0)
    scores = rng.standard_normal((2, 4, 128, 128)).astype(np.float32) * 30
    scores[0, 1, :, 5:] = -np.inf  # causal-style masked tails
    library = float32_math._native_library()
    out = np.empty(scores.shape[:-1] + (1,), np.float32)
    assert library.ml_row_max(ml.native.address(scores), ml.native.address(out), 1024, 128) == 0
    assert same_bits(out, scores.max(axis=-1, keepdims=True))
    assert same_bits(float32_math.row_max(scores), scores.max(axis=-1, keepdims=True))


def test_other_arrays_take_numpys_max():
    rng = np.random.default_rng(1)
    wide = rng.standard_normal((6, 40)).astype(np.float32)
    for a in (wide[:, ::2], wide.T, wide.astype(np.float64), wide[:0], np.float32(2.0).reshape(1)):
        assert np.array_equal(float32_math.row_max(a), a.max(axis=-1, keepdims=True))
    with pytest.raises(ValueError):  # (an empty row has no max: NumPy's error)
        float32_math.row_max(np.zeros((3, 0), np.float32))


def attention_and_loss(seed):
    """SDPA with a boolean mask (one query row masked out entirely), causal SDPA, and cross entropy: outputs
    and gradients as arrays."""
    rng = np.random.default_rng(seed)
    q, k, v = (ml.tensor(rng.standard_normal((2, 3, 20, 8)).astype(np.float32), requires_grad=True) for _ in range(3))
    mask = ml.tensor(rng.random((20, 20)) > 0.3)
    mask[4] = False
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    causal = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    logits = ml.tensor(rng.standard_normal((30, 50)).astype(np.float32) * 4, requires_grad=True)
    loss = F.cross_entropy(logits, ml.tensor(rng.integers(0, 50, 30)))
    (out.sum() + (causal * causal).sum() + loss).backward()
    return [t.detach().numpy() for t in (out, causal, loss)] + [t.grad.numpy() for t in (q, k, v, logits)]


@pytest.fixture
def openblas():
    """The fused attention's own row max: with MKL, sdpa is torch's flash kernel (ops/attention32.py) instead."""
    before = ml.blas.select("openblas")
    yield
    ml.blas.select(before or "openblas")


def test_attention_and_cross_entropy_shift_by_row_max(monkeypatch, openblas):
    with float32_math.numpy_port():  # the compiled kernels off: NumPy's max
        before = attention_and_loss(3)
    compiled = attention_and_loss(3)  # (round 26: the attention's max in C, compiled_attention's ml_row_max)
    calls = []
    original = float32_math.row_max
    monkeypatch.setattr(float32_math, "row_max", lambda a: calls.append(a.shape) or original(a))
    monkeypatch.setattr(compiled_attention, "forward", lambda *args: False)  # (the NumPy code's row_max calls)
    after = attention_and_loss(3)
    assert len(calls) >= 3  # (masked attention, causal attention, the loss's rows)
    for x, y, z in zip(before, after, compiled):
        assert same_bits(np.asarray(x, np.float32), np.asarray(y, np.float32))
        assert same_bits(np.asarray(x, np.float32), np.asarray(z, np.float32))


def softmax_family(seed):
    """softmax, log_softmax and logsumexp along the last dim (rows with -inf, a NaN row), and their gradients."""
    rng = np.random.default_rng(seed)
    data = (rng.standard_normal((6, 5, 40)) * 5).astype(np.float32)
    data[0, 0, 3:] = -np.inf
    data[1, 2, 7] = np.nan
    x = ml.tensor(data, requires_grad=True)
    outs = [x.softmax(-1), F.log_softmax(x, dim=-1), ml.logsumexp(x, -1), ml.softmax(x[2], 1)]
    sum(o.nan_to_num(0.0, 0.0, 0.0).sum() for o in outs).backward()
    return [o.detach().numpy() for o in outs] + [x.grad.numpy()]


def test_softmax_log_softmax_logsumexp_shift_by_row_max(monkeypatch):
    with float32_math.numpy_port():
        before = softmax_family(5)
    calls = []
    original = float32_math.row_max
    monkeypatch.setattr(float32_math, "row_max", lambda a: calls.append(a.shape) or original(a))
    after = softmax_family(5)
    assert len(calls) >= 4
    for x, y in zip(before, after):
        assert same_bits(x, y)
