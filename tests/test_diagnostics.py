"""minilora.lora.diagnostics: spectra of learned updates (never building B A), truncation, training
findings from loss curves, adapter checks, and recommend_lora_config (the lesson's guide as code)."""
import math

import numpy as np
import pytest

import minilora as ml
from minilora import memory
from minilora.lora import LoraConfig, VeraConfig, get_peft_model
from minilora.lora import diagnostics as diag
from minilora.models import LlamaConfig, LlamaForCausalLM

TINY = dict(vocab_size=64, hidden_size=16, intermediate_size=24, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)


def tiny_peft(config=None, seed=0):
    ml.manual_seed(seed)
    config = config or LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    return get_peft_model(LlamaForCausalLM(LlamaConfig(**TINY), dtype="float64"), config)


def kinds(findings):
    return [f.kind for f in findings]


# ==================================================================================================
# Spectra
# ==================================================================================================
@pytest.mark.parametrize("out_f, in_f, r", [(20, 30, 4), (7, 50, 8), (40, 6, 3)])
def test_delta_svd_reconstructs_s_B_A(rng, out_f, in_f, r):
    A, B = rng.standard_normal((r, in_f)), rng.standard_normal((out_f, r))
    U, S, Vh = diag.delta_svd(A, B, scale=2.5)
    np.testing.assert_allclose(U @ np.diag(S) @ Vh, 2.5 * B @ A, atol=1e-12)
    np.testing.assert_allclose(S, np.linalg.svd(2.5 * B @ A, compute_uv=False)[:len(S)], rtol=1e-10)
    np.testing.assert_allclose(U.T @ U, np.eye(len(S)), atol=1e-12)  # orthonormal singular vectors
    assert np.all(np.diff(S) <= 0)


def test_spectrum_of_a_4096_layer_is_cheap(rng):
    """The point of the QR route: a 4096 x 4096 update at r=8 never becomes a 67 MB matrix."""
    A, B = rng.standard_normal((8, 4096)), rng.standard_normal((4096, 8))
    S = diag.delta_singular_values(A, B)
    assert S.shape == (8,) and np.all(S > 0)


def test_rank_measures():
    assert diag.energy_rank([3.0, 1.0, 0.1], 0.85) == 1  # 9 / 10.01 = 0.899 of the energy
    assert diag.energy_rank([3.0, 1.0, 0.1], 0.9) == 2   # ... just short of 90%
    assert diag.energy_rank([3.0, 1.0, 0.1], 0.9995) == 3  # 10 / 10.01 = 0.999
    assert diag.energy_rank([1.0, 1.0, 1.0, 1.0], 1.0) == 4
    assert diag.energy_rank([0.0, 0.0], 0.9) == 0
    assert diag.effective_rank([2.0, 2.0, 2.0, 2.0]) == pytest.approx(4.0)
    assert diag.effective_rank([5.0, 0.0, 0.0]) == pytest.approx(1.0)
    assert 1.0 < diag.effective_rank([3.0, 1.0]) < 2.0
    with pytest.raises(ValueError, match="energy"):
        diag.energy_rank([1.0], 0.0)


def test_adapter_spectrum_matches_the_merged_update():
    model = tiny_peft()
    spectra = diag.adapter_spectrum(model)
    layers = {name: m for name, m in model.named_modules() if hasattr(m, "lora_A")}
    assert len(spectra) == 4 and {s.name for s in spectra} == {n.replace("base_model.model.", "") for n in layers}
    for s, layer in zip(spectra, layers.values()):
        delta = layer.get_delta_weight("default")  # the full-size update, fine at this size
        np.testing.assert_allclose(s.singular_values, np.linalg.svd(delta, compute_uv=False)[:4], rtol=1e-9)
        assert s.relative_norm == pytest.approx(np.linalg.norm(delta) / np.linalg.norm(layer.base_layer.weight.numpy()))
    assert "q_proj" in diag.spectrum_table(spectra)


def test_vera_spectrum_matches_its_delta_weight():
    model = tiny_peft(VeraConfig(r=4, target_modules=["q_proj"], init_weights=False))
    for s, layer in zip(diag.adapter_spectrum(model), (m for m in model.modules() if hasattr(m, "vera_lambda_b"))):
        expected = np.linalg.svd(layer.get_delta_weight("default"), compute_uv=False)[:len(s.singular_values)]
        np.testing.assert_allclose(s.singular_values, expected, rtol=1e-8, atol=1e-12)


def test_truncate_keeps_the_best_rank_k_update_and_shapes():
    model = tiny_peft()
    layer = next(m for m in model.modules() if hasattr(m, "lora_A"))
    delta = layer.get_delta_weight("default")
    U, S, Vh = np.linalg.svd(delta)
    kept = diag.truncate_adapter(model, rank=2)
    assert set(kept.values()) == {2}
    assert layer.lora_A["default"].weight.shape == (4, 16)  # shapes (and the config) unchanged
    np.testing.assert_allclose(layer.get_delta_weight("default"), (U[:, :2] * S[:2]) @ Vh[:2], atol=1e-12)
    full = tiny_peft()
    assert all(k == 4 for k in diag.truncate_adapter(full, energy=1.0).values())  # 100%: nothing lost


def test_rank_ablation_restores_the_adapter():
    model = tiny_peft()
    ids = np.random.default_rng(0).integers(0, 64, (2, 6))
    before = model(ids).logits.numpy().copy()

    def metric(m):
        return float(m(ids, labels=ids).loss.item())

    rows = diag.rank_ablation(model, metric, ranks=[0, 2, 4])
    assert [r["mean_rank"] for r in rows] == [0, 2, 4]
    assert rows[-1]["metric"] == pytest.approx(metric(model))  # full rank == the untouched adapter
    assert rows[0]["lora_params"] == 0 and rows[-1]["lora_params"] == 4 * 4 * (16 + 16) - 4 * 2 * 8
    with model.disable_adapter():
        assert rows[0]["metric"] == pytest.approx(metric(model))  # rank 0 == no adapter
    np.testing.assert_array_equal(model(ids).logits.numpy(), before)


def test_truncate_refuses_merged_layers():
    model = tiny_peft()
    model.merge_adapter()
    with pytest.raises(ValueError, match="unmerge"):
        diag.truncate_adapter(model, energy=0.9)


# ==================================================================================================
# Training findings
# ==================================================================================================
def falling(n=60, start=3.0, end=1.0, noise=0.02, seed=0):
    rng = np.random.default_rng(seed)
    return list(np.linspace(start, end, n) + noise * rng.standard_normal(n))


def test_a_healthy_run_says_so():
    findings = diag.diagnose_training(falling(), eval_losses=[2.5, 2.0, 1.6, 1.3, 1.2])
    assert kinds(findings) == ["healthy"] and findings[0].severity == "info"


def test_flat_loss_is_not_decreasing():
    f = diag.diagnose_training([2.0 + 0.01 * (i % 3) for i in range(40)])
    assert kinds(f) == ["not_decreasing"] and f[0].severity == "warning"
    assert any("-100" in s for s in f[0].suggestions)  # the lesson's "labels all masked" hint


def test_nan_is_an_error_and_the_rest_is_judged_before_it():
    f = diag.diagnose_training(falling(40) + [float("nan"), 1.0])
    assert kinds(f) == ["non_finite"] and f[0].steps == (41,) and f[0].severity == "error"
    assert kinds(diag.diagnose_training([2.0] * 20 + [float("nan")])) == ["non_finite", "not_decreasing"]
    assert kinds(diag.diagnose_training([1.0, float("inf")])) == ["non_finite", "too_short"]


def test_spikes_on_a_falling_curve():
    losses = falling(60, noise=0.0)
    for i in (20, 35, 50):
        losses[i] *= 2
    f = {x.kind: x for x in diag.diagnose_training(losses)}
    assert f["spikes"].steps == (21, 36, 51) and f["spikes"].severity == "warning"
    # a steadily falling curve has no spikes, even though its early values are far above the mean
    assert "spikes" not in kinds(diag.diagnose_training(falling(60, start=10.0, noise=0.0)))


def test_overfitting_and_diverging():
    f = diag.diagnose_training(falling(), eval_losses=[2.0, 1.5, 1.4, 1.6, 1.8])
    assert "overfitting" in kinds(f)
    pairs = [(10, 2.0), (20, 1.5), (30, 1.4), (60, 1.9)]
    assert next(x for x in diag.diagnose_training(falling(), pairs) if x.kind == "overfitting").steps == (30, 60)
    flat = [2.0] * 40
    assert "diverging" in kinds(diag.diagnose_training(flat, [2.0, 1.9, 1.95, 2.3]))
    assert "overfitting" not in kinds(diag.diagnose_training(falling(), [2.0, 1.5, 1.4, 1.41]))  # within 3%


def test_too_short_and_bad_input():
    assert kinds(diag.diagnose_training([3.0, 2.0, 1.0])) == ["too_short"]
    with pytest.raises(ValueError, match="non-empty"):
        diag.diagnose_training([])


def test_diagnose_adapter():
    untrained = tiny_peft(LoraConfig(r=4, target_modules=["q_proj"]))  # B = 0: as initialised
    assert kinds(diag.diagnose_adapter(untrained)) == ["adapter_not_trained"]
    trained = tiny_peft()  # random A and B: every layer needs all 4 directions for 99.9% of its energy
    assert kinds(diag.diagnose_adapter(trained)) == []
    assert kinds(diag.diagnose_adapter(trained, energy=0.999)) == ["rank_saturated"]
    layer = next(m for m in trained.modules() if hasattr(m, "lora_A"))
    layer.lora_B["default"].weight.data[0, 0] = np.nan
    found = diag.diagnose_adapter(trained)
    assert kinds(found) == ["non_finite_weights"] and "lora_B" in found[0].message
    frozen = tiny_peft()
    for p in frozen.parameters():
        p.requires_grad = False
    assert "no_trainable" in kinds(diag.diagnose_adapter(frozen))


def test_diagnose_lora_training_runs_where_the_lessons_version_crashed():
    findings = diag.diagnose_lora_training(tiny_peft(), falling(), [2.5, 2.0, 1.6, 1.3])
    assert kinds(findings) == ["healthy"]
    assert all(str(f) for f in findings)


# ==================================================================================================
# recommend_lora_config
# ==================================================================================================
def test_the_lessons_two_examples():
    code = diag.recommend_lora_config("code", 50_000, model="llama-2-7b", priority="quality")
    assert (code.r, code.lora_alpha, code.target_modules, code.learning_rate, code.num_epochs) == \
        (32, 64, "all-linear", 2e-4, 1)
    small = memory.TransformerConfig(num_hidden_layers=12, hidden_size=768, num_attention_heads=12)
    cls = diag.recommend_lora_config("classification", 2_000, model=small, priority="speed")
    assert (cls.r, cls.lora_alpha, cls.target_modules, cls.learning_rate, cls.num_epochs) == \
        (8, 8, "all-linear", 3e-4, 5)


@pytest.mark.parametrize("task, shift, n, r, targets", [
    ("style", "medium", 20_000, 4, ["q_proj", "k_proj", "v_proj", "o_proj"]),
    ("classification", "low", 20_000, 4, ["q_proj", "k_proj", "v_proj", "o_proj"]),
    ("instruction", "medium", 20_000, 16, "all-linear"),
    ("domain", "high", 100_000, 32, "all-linear"),
    ("code", "medium", 500, 8, "all-linear"),   # tiny data caps the rank
    ("style", "high", 20_000, 8, "all-linear"),  # far from pretraining: more rank, every Linear
])
def test_rank_and_targets_follow_the_guide(task, shift, n, r, targets):
    rec = diag.recommend_lora_config(task, n, shift, model="llama-2-7b")
    assert (rec.r, rec.target_modules) == (r, targets)
    assert rec.reasons and rec.estimate.trainable_params > 0
    assert rec.lora_config().r == r  # a valid LoraConfig


def test_dropout_epochs_and_knowledge_warning():
    tiny = diag.recommend_lora_config("style", 300)
    assert (tiny.lora_dropout, tiny.num_epochs, tiny.estimate) == (0.1, 5, None)
    big = diag.recommend_lora_config("instruction", 200_000)
    assert (big.lora_dropout, big.num_epochs) == (0.0, 1)
    assert any("RAG" in w for w in diag.recommend_lora_config("knowledge", 10_000).warnings)


def test_memory_budget_is_respected():
    roomy = diag.recommend_lora_config("instruction", 20_000, model="llama-2-7b", memory_budget_gb=80)
    assert roomy.fits and roomy.dtype == "float32" and roomy.target_modules == "all-linear"
    tight = diag.recommend_lora_config("instruction", 20_000, model="llama-2-7b", memory_budget_gb=24)
    assert tight.fits and tight.dtype == "bfloat16"  # float32 weights alone (27 GB) cannot fit
    assert tight.estimate.total_bytes <= 0.75 * 24e9
    assert tight.estimate.total_bytes == memory.estimate("llama-2-7b", tight.lora_config(), "bfloat16").total_bytes
    hopeless = diag.recommend_lora_config("instruction", 20_000, model="llama-2-70b", memory_budget_gb=24)
    assert hopeless.fits is False and any("QLoRA" in w for w in hopeless.warnings)


def test_recommend_refuses_unknown_inputs():
    with pytest.raises(ValueError, match="task_type"):
        diag.recommend_lora_config("chat", 100)
    with pytest.raises(ValueError, match="distribution_shift"):
        diag.recommend_lora_config("style", 100, "extreme")
    with pytest.raises(ValueError, match="needs model"):
        diag.recommend_lora_config("style", 100, memory_budget_gb=8)
    assert math.isfinite(diag.recommend_lora_config("math", 5_000).learning_rate)


def test_noise_of_a_loss_near_zero_is_not_a_spike():
    # a healthy fine-tuning run: from 3.0 down to ~0.03, then batch noise of +-0.1 in absolute terms
    rng = np.random.default_rng(1)
    losses = list(np.linspace(3.0, 0.05, 40)) + list(0.03 + 0.1 * rng.random(40))
    assert "spikes" not in kinds(diag.diagnose_training(losses))
    losses[60] = 2.0  # a real jump still counts
    assert 61 in {x.kind: x for x in diag.diagnose_training(losses)}["spikes"].steps
