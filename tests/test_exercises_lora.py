"""Exercises 3.1 (03_memory_wall), 4.x (04_lora_layer), 7.x (07_merge_and_serve) and
8.x (08_variants_and_diagnostics): counting, the LoRA op and layer, merging, VeRA, spectra.

Run one exercise:  python -m pytest -m ex4_2 tests
"""
import math

import numpy as np
import pytest

import minilora as ml
from minilora import nn, ops
from minilora.lora import LoraConfig, VeraConfig, get_peft_model
from minilora.lora.diagnostics import delta_svd, effective_rank
from minilora.memory import matrix_lora_params
from minilora.testing import assert_close, grad_check


def _t(rng, *shape, requires_grad=True):
    return ml.tensor(rng.standard_normal(shape), dtype=ml.float64, requires_grad=requires_grad)


class _OneLayer(nn.Module):
    """The smallest model LoRA can wrap: one Linear named like an attention projection."""

    def __init__(self, d_in=6, d_out=5):
        super().__init__()
        self.q_proj = nn.Linear(d_in, d_out, dtype=ml.float64)

    def forward(self, x):
        return self.q_proj(x)


def _lora_model(rng, **config):
    model = get_peft_model(_OneLayer(), LoraConfig(**dict(dict(r=2, lora_alpha=4, target_modules=["q_proj"]),
                                                          **config)))
    layer = model.base_model.model.q_proj
    weight = layer.lora_B["default"].weight  # (torch takes a tensor, not an ndarray, in x[...] = v)
    weight.data[...] = ml.tensor(rng.standard_normal(weight.shape), dtype=weight.dtype)
    return model, layer


# ---- 3.1 counting --------------------------------------------------------------------------------
@pytest.mark.ex3_1
def test_matrix_lora_params():
    assert matrix_lora_params(4096, 4096, 8) == (16_777_216, 65_536, 256.0)
    full, lora, ratio = matrix_lora_params(100, 30, 2)
    assert (full, lora) == (3000, 260) and ratio == pytest.approx(3000 / 260)


# ---- 4.1 the scale -------------------------------------------------------------------------------
@pytest.mark.ex4_1
def test_scaling_alpha_over_r_and_rslora():
    assert LoraConfig(r=8, lora_alpha=16).scaling(8, 16) == 2.0
    assert LoraConfig(r=8, lora_alpha=16, use_rslora=True).scaling(8, 16) == pytest.approx(16 / math.sqrt(8))
    assert LoraConfig(r=4, lora_alpha=4).scaling(16, 4) == 0.25  # from the arguments (rank_pattern)


# ---- 4.2 / 4.3 the LoRA op on the CPU -------------------------------------------------------------
def _lora_inputs(rng, requires_grad=True):
    x, W0 = _t(rng, 2, 3, 5, requires_grad=requires_grad), _t(rng, 4, 5, requires_grad=False)
    A, B, bias = _t(rng, 2, 5), _t(rng, 4, 2), _t(rng, 4)
    return x, W0, A, B, bias


@pytest.mark.ex4_2
@pytest.mark.parametrize("dropout_p", [0.0, 0.4])
def test_lora_linear_forward(rng, dropout_p):
    x, W0, A, B, bias = _lora_inputs(rng, requires_grad=False)
    out = ops.lora_linear(x, W0, A, B, 1.5, bias=bias, dropout_p=dropout_p, seed=7)
    X = x.numpy().reshape(-1, 5)
    Xd = X * ops.lora_dropout_mask(7, 6, 5, dropout_p) / (1 - dropout_p) if dropout_p else X
    expected = X @ W0.numpy().T + 1.5 * Xd @ (B.numpy() @ A.numpy()).T + bias.numpy()
    assert_close(out, expected.reshape(2, 3, 4), rtol=1e-12, atol=1e-12, name="lora_linear")


@pytest.mark.ex4_3
@pytest.mark.parametrize("dropout_p", [0.0, 0.4])
def test_lora_linear_backward(rng, dropout_p):
    x, W0, A, B, bias = _lora_inputs(rng)
    grad_check(lambda x, W0, A, B, bias: ops.lora_linear(x, W0, A, B, 1.5, bias=bias, dropout_p=dropout_p,
                                                         seed=7), x, W0, A, B, bias)
    assert W0.grad is None  # frozen: no gradient GEMM


@pytest.mark.ex4_3
def test_lora_linear_backward_only_adapter(rng):
    """Only A and B train (the input needs no gradient): they still get theirs."""
    x, W0, A, B, _ = _lora_inputs(rng, requires_grad=False)
    grad_check(lambda A, B: ops.lora_linear(x, W0, A, B, 0.5), A, B)


@pytest.mark.ex4_2
def test_lora_forward_rows_alone_is_the_whole_forward(rng):
    """The region's function on whole arrays, no threads: what a learner can run by hand."""
    from minilora.ops.lora import _lora_forward_rows
    X, W0, A, B, bias = (rng.standard_normal(s) for s in ((6, 5), (4, 5), (2, 5), (4, 2), (4,)))
    keep = ops.lora_dropout_mask(3, 6, 5, 0.5) * 2.0
    U, Y = np.full((6, 2), np.nan), np.full((6, 4), np.nan)
    _lora_forward_rows(X, keep, U, Y, W0, A, B, bias, 0.5)
    assert_close(U, (X * keep) @ A.T, rtol=1e-13, atol=1e-13, name="U")
    assert_close(Y, X @ W0.T + 0.5 * U @ B.T + bias, rtol=1e-13, atol=1e-13, name="Y")


@pytest.mark.ex4_3
@pytest.mark.parametrize("p", [0.0, 0.5])
def test_lora_backward_rows_alone_is_the_whole_backward(rng, p):
    from minilora.ops.lora import _lora_backward_rows
    dY, X, W0, A, B = (rng.standard_normal(s) for s in ((6, 4), (6, 5), (4, 5), (2, 5), (4, 2)))
    keep = ops.lora_dropout_mask(3, 6, 5, p) / (1 - p) if p else None
    Xd = X if keep is None else X * keep
    U = Xd @ A.T
    V, dX = np.full((6, 2), np.nan), np.full((6, 5), np.nan)
    dA, dB = _lora_backward_rows(dY, X, U, keep, V, dX, W0, A, B, 0.5, True, True)
    assert_close(V, 0.5 * dY @ B, rtol=1e-13, atol=1e-13, name="V")
    assert_close(dX, dY @ W0 + (V @ A) * (1 if keep is None else keep), rtol=1e-13, atol=1e-13, name="dX")
    assert_close(dA, V.T @ Xd, rtol=1e-13, atol=1e-13, name="dA")
    assert_close(dB, 0.5 * dY.T @ U, rtol=1e-13, atol=1e-13, name="dB")
    assert _lora_backward_rows(dY, X, U, keep, V, None, W0, A, B, 0.5, False, False) == (None, None)


# ---- 4.4 B = 0 at the start --------------------------------------------------------------------------
@pytest.mark.ex4_4
@pytest.mark.parametrize("init", [True, "gaussian"])
def test_new_adapter_starts_at_the_base_model(rng, init):
    base = _OneLayer()
    x = _t(rng, 3, 6, requires_grad=False)
    before = base(x).numpy()
    model = get_peft_model(base, LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj"], init_lora_weights=init))
    layer = model.base_model.model.q_proj
    assert not layer.lora_B["default"].weight.numpy().any()
    assert layer.lora_A["default"].weight.numpy().any()  # A is random, so B gets a gradient
    assert_close(model(x), before, rtol=0, atol=0, name="output of a fresh adapter")


@pytest.mark.ex4_4
def test_init_lora_weights_false_changes_the_output(rng):
    model = get_peft_model(_OneLayer(), LoraConfig(r=2, target_modules=["q_proj"], init_lora_weights=False))
    assert model.base_model.model.q_proj.lora_B["default"].weight.numpy().any()


# ---- 7.1 / 7.2 merging ------------------------------------------------------------------------------
@pytest.mark.ex7_1
def test_get_delta_weight(rng):
    _, layer = _lora_model(rng)
    A, B = layer.lora_A["default"].weight.numpy(), layer.lora_B["default"].weight.numpy()
    assert_close(layer.get_delta_weight("default"), 2.0 * B @ A, rtol=1e-12, atol=1e-12, name="delta W")


@pytest.mark.ex7_2
def test_merge_and_unmerge(rng):
    model, layer = _lora_model(rng)
    x = _t(rng, 3, 6, requires_grad=False)
    W0, expected = layer.base_layer.weight.numpy().copy(), model(x).numpy()
    layer.merge()
    assert layer.merged
    assert_close(model(x), expected, rtol=1e-10, atol=1e-12, name="merged output")
    assert_close(layer.base_layer.weight, W0 + layer.get_delta_weight("default"), rtol=1e-12, atol=1e-12,
                 name="merged weight")
    layer.unmerge()
    assert_close(layer.base_layer.weight, W0, rtol=1e-12, atol=1e-12, name="unmerged weight")


# ---- 8.1 VeRA ----------------------------------------------------------------------------------------
@pytest.mark.ex8_1
@pytest.mark.parametrize("r", [3, 5], ids=["r<out", "r=out"])  # r = out_features: lambda_d broadcasts on B's rows
def test_vera_delta_weight(rng, r):
    model = get_peft_model(_OneLayer(), VeraConfig(r=r, target_modules=["q_proj"]))
    layer = model.base_model.model.q_proj
    lambda_b, lambda_d = layer.vera_lambda_b["default"], layer.vera_lambda_d["default"]
    lambda_b.data[...] = ml.tensor(rng.standard_normal(lambda_b.shape), dtype=lambda_b.dtype)
    lambda_d.data[...] = ml.tensor(rng.standard_normal(lambda_d.shape), dtype=lambda_d.dtype)
    A, B = (t.numpy() for t in layer._projections("default"))
    expected = np.diag(lambda_b.numpy()) @ B @ np.diag(lambda_d.numpy()) @ A
    assert_close(layer.get_delta_weight("default"), expected, rtol=1e-12, atol=1e-12, name="VeRA delta W")


# ---- 8.2 / 8.3 spectra -------------------------------------------------------------------------------
@pytest.mark.ex8_2
@pytest.mark.parametrize("scale", [0.5, -2.0])  # a negative scale: its sign goes into U or Vh, not into S
def test_delta_svd(rng, scale):
    A, B = rng.standard_normal((3, 7)), rng.standard_normal((5, 3))
    U, S, Vh = delta_svd(A, B, scale=scale)
    assert U.shape == (5, 3) and S.shape == (3,) and Vh.shape == (3, 7)
    assert_close(U @ np.diag(S) @ Vh, scale * B @ A, rtol=1e-10, atol=1e-12, name="U S Vh")
    assert_close(U.T @ U, np.eye(3), rtol=0, atol=1e-12, name="U^T U")
    assert_close(Vh @ Vh.T, np.eye(3), rtol=0, atol=1e-12, name="Vh Vh^T")
    assert_close(S, np.linalg.svd(scale * B @ A, compute_uv=False)[:3], rtol=1e-10, atol=1e-12, name="S")


@pytest.mark.ex8_3
def test_effective_rank():
    assert effective_rank([2.0, 2.0, 2.0, 2.0]) == pytest.approx(4.0)
    assert effective_rank([5.0, 0.0, 0.0]) == pytest.approx(1.0)
    assert effective_rank([0.0, 0.0]) == 0.0
    p = np.array([3.0, 1.0]) / 4.0
    assert effective_rank([3.0, 1.0]) == pytest.approx(np.exp(-(p * np.log(p)).sum()))
