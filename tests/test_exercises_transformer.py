"""Exercises 2.x (notebook 02_transformer): RMSNorm, RoPE, attention, the loss, the Llama MLP.

Run one exercise:  python -m pytest -m ex2_4 tests
"""
import numpy as np
import pytest

import minilora as ml
from minilora import ops
from minilora.nn.llama import LlamaConfig, LlamaMLP
from minilora.testing import assert_close, grad_check


def _t(rng, *shape, requires_grad=True):
    return ml.tensor(rng.standard_normal(shape), dtype=ml.float64, requires_grad=requires_grad)


# ---- 2.1 / 2.2 RMSNorm ---------------------------------------------------------------------------
@pytest.mark.ex2_1
@pytest.mark.parametrize("with_weight", [True, False])
def test_rms_norm_forward(rng, with_weight):
    x = rng.standard_normal((2, 3, 8))
    w = rng.standard_normal(8) if with_weight else None
    eps = 1e-3  # large enough that forgetting it (or putting it outside the root) shows
    out = ops.rms_norm(ml.tensor(x), (8,), None if w is None else ml.tensor(w), eps=eps)
    expected = x / np.sqrt((x ** 2).mean(axis=-1, keepdims=True) + eps) * (1.0 if w is None else w)
    assert_close(out, expected, rtol=1e-12, atol=1e-12, name="rms_norm")


@pytest.mark.ex2_1
@pytest.mark.parametrize("with_weight", [True, False])
def test_rms_norm_rows_fills_r_normed_and_out(rng, with_weight):
    """The region's function on whole arrays: it must FILL all three outputs in place -- backward (2.2)
    reads the saved r and normed, so computing them into new arrays leaves backward garbage."""
    from minilora.ops.nn import _rms_norm_rows
    x, eps = rng.standard_normal((5, 6)), 1e-3
    w = rng.standard_normal(6) if with_weight else None
    normed, r, out = np.full((5, 6), np.nan), np.full((5, 1), np.nan), np.full((5, 6), np.nan)
    _rms_norm_rows(x, normed, r, out, w, eps)
    expected_r = 1 / np.sqrt((x ** 2).mean(axis=1, keepdims=True) + eps)
    assert_close(r, expected_r, rtol=1e-12, atol=1e-12, name="r = 1/sqrt(mean(x^2) + eps), saved for backward")
    assert_close(normed, x * expected_r, rtol=1e-12, atol=1e-12, name="normed = x * r, saved for backward")
    assert_close(out, x * expected_r * (1.0 if w is None else w), rtol=1e-12, atol=1e-12, name="out")


@pytest.mark.ex2_2
def test_rms_norm_backward(rng):
    grad_check(lambda x, w: ops.rms_norm(x, (6,), w, eps=1e-3), _t(rng, 2, 3, 6), _t(rng, 6))


@pytest.mark.ex2_2
@pytest.mark.parametrize("with_weight", [True, False])
def test_rms_norm_backward_rows_against_finite_differences(rng, with_weight):
    """The region's function on whole arrays, from the input and what 2.1 saved: it must FILL gx and gx_mean, the
    input's gradient's two parts (along x * r, and through r). (Every rms_norm's backward runs this region.)"""
    from minilora.ops.nn import _rms_norm_backward_rows, _rms_norm_rows
    x, g, eps = rng.standard_normal((4, 6)), rng.standard_normal((4, 6)), 1e-3
    w = rng.standard_normal(6) if with_weight else None
    normed, r, out = np.empty((4, 6)), np.empty((4, 1)), np.empty((4, 6))
    _rms_norm_rows(x, normed, r, out, w, eps)
    gx, gx_mean = np.full((4, 6), np.nan), np.full((4, 6), np.nan)
    _rms_norm_backward_rows(g, x, normed, r, gx, gx_mean, w)
    assert_close(gx, g * (1.0 if w is None else w) * r, rtol=1e-12, atol=1e-12, name="gx, along x * r")

    def loss(v):
        return float((g * v / np.sqrt((v ** 2).mean(axis=1, keepdims=True) + eps) * (1.0 if w is None else w)).sum())
    numeric = np.empty_like(x)
    for index in np.ndindex(x.shape):
        step = np.zeros_like(x)
        step[index] = 1e-6
        numeric[index] = (loss(x + step) - loss(x - step)) / 2e-6
    assert_close(gx + gx_mean, numeric, rtol=1e-6, atol=1e-8, name="gx + gx_mean, the input's gradient")


@pytest.mark.ex2_2
def test_rms_norm_backward_without_or_frozen_weight(rng):
    grad_check(lambda x: ops.rms_norm(x, (5,), eps=1e-3), _t(rng, 3, 5))
    w = _t(rng, 5, requires_grad=False)
    grad_check(lambda x, w: ops.rms_norm(x, (5,), w, eps=1e-3), _t(rng, 3, 5), w)
    assert w.grad is None


# ---- 2.3 RoPE --------------------------------------------------------------------------------------
@pytest.mark.ex2_3
def test_rotate_half_transposed_is_the_adjoint(rng):
    """<R x, g> == <x, R^T g> for every x and g: the definition of the transpose."""
    from minilora.ops.nn import _rotate_half_transposed
    x, g = rng.standard_normal((2, 3, 8)), rng.standard_normal((2, 3, 8))
    lhs = (ops.rotate_half(x) * g).sum(axis=-1)
    rhs = (x * _rotate_half_transposed(g)).sum(axis=-1)
    assert_close(rhs, lhs, rtol=1e-12, atol=1e-12, name="<x, R^T g>")


@pytest.mark.ex2_3
def test_rotary_embedding_backward(rng):
    angles = rng.standard_normal((1, 1, 3, 4))
    cos, sin = np.cos(angles), np.sin(angles)
    grad_check(lambda x: ops.rotary_embedding(x, cos, sin), _t(rng, 1, 2, 3, 4))


# ---- 2.4 attention ---------------------------------------------------------------------------------
@pytest.mark.ex2_4
@pytest.mark.parametrize("hq, hkv, tq, tk", [(2, 2, 3, 3), (4, 2, 3, 3), (4, 1, 2, 4)],
                         ids=["mha", "gqa", "gqa-kv-cache"])
def test_attention_backward(rng, hq, hkv, tq, tk):
    q, k, v = _t(rng, 1, hq, tq, 2), _t(rng, 1, hkv, tk, 2), _t(rng, 1, hkv, tk, 2)
    causal = np.arange(tk)[None, :] <= (tk - tq + np.arange(tq))[:, None]  # a KV cache's alignment
    grad_check(lambda q, k, v: ops.scaled_dot_product_attention(q, k, v, causal, enable_gqa=True), q, k, v)


@pytest.mark.ex2_4
def test_attention_backward_with_mask_and_scale(rng):
    q, k, v = _t(rng, 2, 2, 3, 2), _t(rng, 2, 1, 3, 2), _t(rng, 2, 1, 3, 2)
    mask = np.zeros((2, 1, 1, 3))
    mask[1, ..., 1] = -np.inf  # the second sample cannot see key 1 (every query still sees key 0)
    mask = mask + np.where(np.tri(3, dtype=bool), 0, -np.inf)  # and causal
    # (enable_gqa: one key/value head broadcast without it is torch's math kernel, composed ops, not exercise 2.4's)
    grad_check(lambda q, k, v: ops.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=0.7, enable_gqa=True),
               q, k, v)


# ---- 2.5 cross-entropy ------------------------------------------------------------------------------
@pytest.mark.ex2_5
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_backward(rng, reduction):
    targets = np.array([1, -100, 3, 0, 2])  # one ignored target
    grad_check(lambda z: ops.cross_entropy(z, targets, reduction=reduction), _t(rng, 5, 4))


# ---- 2.6 the Llama MLP ------------------------------------------------------------------------------
@pytest.mark.ex2_6
def test_llama_mlp_forward(rng):
    config = LlamaConfig(vocab_size=8, hidden_size=4, intermediate_size=6, num_hidden_layers=1,
                         num_attention_heads=2)
    mlp = LlamaMLP(config, dtype=ml.float64)
    x = rng.standard_normal((2, 3, 4))
    gate, up, down = (m.weight.numpy() for m in (mlp.gate_proj, mlp.up_proj, mlp.down_proj))
    a = x @ gate.T
    expected = (a / (1 + np.exp(-a)) * (x @ up.T)) @ down.T
    assert_close(mlp(ml.tensor(x)), expected, rtol=1e-10, atol=1e-12, name="LlamaMLP(x)")
