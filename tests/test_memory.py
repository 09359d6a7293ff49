"""minilora.memory: exact counts without allocating (against the real model, against PEFT, against the
numbers a learner meets in the lesson), measured memory of a real step, and the two commands."""
import time

import numpy as np
import pytest

import minilora as ml
from minilora import cli, memory, nn
from minilora.lora import LoraConfig, VeraConfig, get_peft_model
from minilora.models import LlamaConfig, LlamaForCausalLM
from minilora.optim import SGD, AdamW

TINY = dict(vocab_size=64, hidden_size=16, intermediate_size=24, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
ALL7 = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


# ==================================================================================================
# The worked numbers
# ==================================================================================================
@pytest.mark.parametrize("r, targets, trainable", [
    (8, ["q_proj", "v_proj"], 4_194_304),
    (16, ["q_proj", "k_proj", "v_proj", "o_proj"], 16_777_216),
    (16, ALL7, 39_976_960),
    (16, "all-linear", 39_976_960),
])
def test_llama_2_7b_trainable_counts_are_pefts(r, targets, trainable):
    e = memory.estimate("llama-2-7b", LoraConfig(r=r, target_modules=targets))
    assert e.trainable_params == trainable
    assert e.total_params == 6_738_415_616 + trainable


def test_peft_line_for_llama_2_7b():
    e = memory.estimate("llama-2-7b", LoraConfig(r=8, target_modules=["q_proj", "v_proj"]))
    assert e.peft_line() == "trainable params: 4,194,304 || all params: 6,742,609,920 || trainable%: 0.0622"


def test_known_model_sizes():
    assert memory.estimate("llama-2-7b").total_params == 6_738_415_616
    assert memory.estimate("llama-2-13b").total_params == 13_015_864_320
    assert memory.estimate("llama-2-70b").total_params == 68_976_648_192  # grouped-query attention
    assert round(memory.estimate("gpt-3-175b").total_params / 1e9) == 175


def test_gpt3_lora_on_wq_wv_is_4_7m_per_unit_of_rank():
    """The lesson says 4.7M at r=4 and ~526M at r=8; the right numbers are 4.7M at r=1, 37.7M at r=8."""
    assert memory.lora_params_per_rank("gpt-3-175b") == 2 * 96 * 2 * 12288 == 4_718_592
    r8 = memory.estimate("gpt-3-175b", LoraConfig(r=8, target_modules=["q_proj", "v_proj"]))
    assert r8.trainable_params == 37_748_736
    assert memory.estimate("gpt-3-175b", LoraConfig(r=4, target_modules=["q_proj", "v_proj"])
                           ).trainable_params == 18_874_368


def test_one_4096_matrix_at_rank_8():
    assert memory.matrix_lora_params(4096, 4096, 8) == (16_777_216, 65_536, 256.0)


def test_bytes_full_vs_lora():
    full = memory.estimate("llama-2-7b")
    assert full.bytes_per_param == 16  # weight 4 + gradient 4 + AdamW's two moments 8
    assert full.total_bytes == 16 * 6_738_415_616 and full.frozen_weight_bytes == 0
    lora = memory.estimate("llama-2-7b", LoraConfig(r=16, target_modules="all-linear"))
    assert lora.frozen_weight_bytes == 4 * 6_738_415_616
    assert lora.gradient_bytes == lora.trainable_weight_bytes == 4 * 39_976_960
    assert lora.optimizer_state_bytes == 8 * 39_976_960
    half = memory.estimate("llama-2-7b", LoraConfig(r=16, target_modules="all-linear"), dtype="bfloat16",
                           optimizer="sgd")
    # the base in bfloat16; the adapter (and its gradient) in float32, as autocast_adapter_dtype makes it
    assert half.adapter_dtype == "float32"
    assert half.total_bytes == 2 * 6_738_415_616 + 4 * 39_976_960 + 4 * 39_976_960
    kept = memory.estimate("llama-2-7b", LoraConfig(r=16, target_modules="all-linear"), dtype="bfloat16",
                           optimizer="sgd", autocast_adapter_dtype=False)
    assert kept.total_bytes == 2 * (6_778_392_576 + 39_976_960)
    assert memory.estimate("llama-2-7b", dtype="float16").adapter_dtype == "float16"  # no adapter: nothing upcast


def test_estimate_of_llama_2_7b_takes_milliseconds():
    config = LoraConfig(r=16, target_modules="all-linear")
    memory.estimate("llama-2-7b", config)  # imports done
    best = min(_seconds(lambda: memory.estimate("llama-2-7b", config)) for _ in range(3))
    assert best < 0.05


def _seconds(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


# ==================================================================================================
# estimate() == the real model
# ==================================================================================================
@pytest.mark.parametrize("overrides", [{}, dict(tie_word_embeddings=True), dict(attention_bias=True, mlp_bias=True),
                                       dict(num_key_value_heads=4, head_dim=8)])
def test_layout_is_the_real_models_named_parameters(overrides):
    config = LlamaConfig(**{**TINY, **overrides})
    model = LlamaForCausalLM(config)
    real = {n: p.shape for n, p in model.named_parameters()}
    assert {p.name: p.shape for p in memory.parameter_layout(config)} == real
    assert memory.estimate(config).total_params == model.num_parameters()


@pytest.mark.parametrize("kwargs, overrides", [
    (dict(target_modules=["q_proj", "v_proj"]), {}),
    (dict(target_modules="all-linear"), {}),
    (dict(target_modules=None), {}),
    (dict(target_modules=r".*\.(k|o)_proj"), {}),
    (dict(target_modules=ALL7, layers_to_transform=[1]), {}),
    (dict(target_modules=ALL7, exclude_modules=["down_proj"]), {}),
    (dict(target_modules=["q_proj", "up_proj"], rank_pattern={"up_proj": 2}), {}),
    (dict(target_modules=["q_proj", "v_proj"], use_dora=True), {}),
    (dict(target_modules=["q_proj"], bias="all"), dict(attention_bias=True)),
    (dict(target_modules=["q_proj"], bias="lora_only"), dict(attention_bias=True)),
    (dict(target_modules=["q_proj", "v_proj"], modules_to_save=["lm_head"]), {}),
    (dict(target_modules=["q_proj"], inference_mode=True), {}),
    (dict(target_modules=["embed_tokens", "q_proj"], rank_pattern={"embed_tokens": 2}), {}),
])
def test_peft_layout_is_get_peft_models_parameters(kwargs, overrides):
    """Names, shapes and trainability: the estimate is the wrapped model, parameter for parameter."""
    config = LlamaConfig(**{**TINY, **overrides})
    lora = LoraConfig(r=4, **kwargs)
    peft = get_peft_model(LlamaForCausalLM(config), lora)
    real = {n: (p.shape, p.requires_grad) for n, p in peft.named_parameters()}
    e = memory.estimate(config, lora)
    assert {p.name: (p.shape, p.trainable) for p in e.layout} == real
    assert (e.trainable_params, e.total_params) == peft.get_nb_trainable_parameters()


@pytest.mark.parametrize("peft_config", [
    LoraConfig(r=4, target_modules=["q_proj", "v_proj"]),
    LoraConfig(r=4, target_modules=["q_proj", "v_proj"], use_dora=True),
    LoraConfig(r=4, target_modules=["embed_tokens", "q_proj"], modules_to_save=["lm_head"]),
    LoraConfig(r=4, target_modules=["q_proj"], bias="lora_only"),
    LoraConfig(r=4, target_modules=["q_proj"], inference_mode=True),
    VeraConfig(r=8, target_modules=["q_proj", "v_proj"]),
])
@pytest.mark.parametrize("autocast", [True, False])
def test_estimated_bytes_are_the_real_float16_models(peft_config, autocast):
    """A float16 model gets float32 adapters (autocast_adapter_dtype=True, PEFT's default): the bytes
    of the estimate are the real model's, trainable and frozen, byte for byte."""
    config = LlamaConfig(**{**TINY, "attention_bias": peft_config.bias != "none"})
    peft = get_peft_model(LlamaForCausalLM(config, dtype="float16"), peft_config, autocast_adapter_dtype=autocast)
    params = list(peft.named_parameters())
    e = memory.estimate(config, peft_config, dtype="float16", autocast_adapter_dtype=autocast)
    assert e.trainable_weight_bytes == sum(p.numpy().nbytes for _, p in params if p.requires_grad)
    assert e.frozen_weight_bytes == sum(p.numpy().nbytes for _, p in params if not p.requires_grad)
    assert {p.name: str(dict(params)[p.name].dtype) for p in e.layout} == \
        {p.name: e.adapter_dtype if p.adapter else e.dtype for p in e.layout}
    assert (e.adapter_dtype == "float32") == autocast


def test_vera_estimate_matches_the_model():
    config = LlamaConfig(**TINY)
    vera = VeraConfig(r=8, target_modules=["q_proj", "v_proj"])
    peft = get_peft_model(LlamaForCausalLM(config), vera)
    e = memory.estimate(config, vera)
    assert (e.trainable_params, e.total_params) == peft.get_nb_trainable_parameters()


def test_estimate_equals_pefts_count_on_a_transformers_model():
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    peft = pytest.importorskip("peft")
    config = LlamaConfig(**TINY)
    hf_config = transformers.LlamaConfig(**{k: v for k, v in config.to_dict().items()
                                            if k not in ("architectures", "model_type")})
    for targets, r in ((["q_proj", "v_proj"], 8), ("all-linear", 4)):
        torch.manual_seed(0)
        model = peft.get_peft_model(transformers.LlamaForCausalLM(hf_config),
                                    peft.LoraConfig(r=r, target_modules=targets))
        e = memory.estimate(config, LoraConfig(r=r, target_modules=targets))
        assert (e.trainable_params, e.total_params) == model.get_nb_trainable_parameters()


def test_estimate_errors_name_the_problem():
    with pytest.raises(KeyError, match="llama-2-7b"):
        memory.estimate("llama-7")
    with pytest.raises(ValueError, match="q_proj"):  # lists the Linear names that exist
        memory.estimate(LlamaConfig(**TINY), LoraConfig(target_modules=["query"]))
    with pytest.raises(ValueError, match="dtype"):
        memory.estimate("llama-2-7b", dtype="float8")
    with pytest.raises(ValueError, match="optimizer"):
        memory.estimate("llama-2-7b", optimizer="lion")


# ==================================================================================================
# Measuring a real model
# ==================================================================================================
def _tiny_lora():
    ml.manual_seed(0)
    model = get_peft_model(LlamaForCausalLM(LlamaConfig(**TINY)), LoraConfig(r=4, target_modules="all-linear"))
    return model, AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)


def _batch(batch=2, seq=12):
    return np.random.default_rng(0).integers(0, TINY["vocab_size"], (batch, seq))


def test_report_is_consistent_with_parameters_and_optimizer_state():
    model, opt = _tiny_lora()
    params = list(model.parameters())
    rep = memory.report(model, opt, _batch())
    assert rep.frozen_weight_bytes == sum(p.nbytes for p in params if not p.requires_grad)
    assert rep.trainable_weight_bytes == sum(p.nbytes for p in params if p.requires_grad)
    assert rep.gradient_bytes == rep.trainable_weight_bytes  # measured: no gradient for a frozen W0
    assert not rep.optimizer_state_measured and rep.optimizer_state_bytes == 2 * rep.trainable_weight_bytes
    assert all(p.grad is None for p in params)  # the measuring step left nothing behind
    assert rep.activations.graph_bytes > 0 and rep.activations.peak_bytes > 0
    assert rep.total_bytes == (rep.frozen_weight_bytes + rep.trainable_weight_bytes + rep.gradient_bytes
                               + rep.optimizer_state_bytes + rep.activations.graph_bytes)

    model(_batch(), labels=_batch()).loss.backward()
    opt.step()
    after = memory.report(model, opt)
    assert after.optimizer_state_measured and after.optimizer_state_bytes == opt.state_bytes() \
        == rep.optimizer_state_bytes
    assert (model.get_nb_trainable_parameters()) == (after.trainable_params, after.total_params)


def test_report_counts_sgd_state_and_estimate_agrees_with_report():
    config = LlamaConfig(**TINY)
    model = LlamaForCausalLM(config)
    rep = memory.report(model, SGD(model.parameters(), lr=0.1, momentum=0.9))
    est = memory.estimate(config, optimizer="sgd-momentum")
    assert rep.optimizer_state_bytes == est.optimizer_state_bytes
    assert rep.trainable_weight_bytes + rep.gradient_bytes == est.trainable_weight_bytes + est.gradient_bytes


def test_graph_bytes_count_each_held_buffer_once_and_skip_weights():
    class Toy(nn.Module):
        """loss = sum((x @ W)^2): the graph holds x (8x16), h = x W (8x32, used twice) and h*h."""

        def __init__(self):
            super().__init__()
            self.W = nn.Parameter(np.ones((16, 32), dtype=np.float32))

        def forward(self, ids, labels=None):
            h = ml.Tensor(np.ones((8, 16), dtype=np.float32)) @ self.W
            return type("Out", (), {"loss": (h * h).sum()})

    stats = memory.measure_activations(Toy(), _batch())
    assert stats.graph_bytes == 4 * (8 * 16 + 8 * 32 + 8 * 32)
    assert stats.gradient_bytes == 4 * 16 * 32


def test_activations_grow_with_the_batch():
    model, _ = _tiny_lora()
    small = memory.measure_activations(model, _batch(2), trace_peak=False)
    big = memory.measure_activations(model, _batch(4), trace_peak=False)
    assert small.peak_bytes is None
    assert 1.8 < big.graph_bytes / small.graph_bytes < 2.2


def test_comparison_table_has_both_columns():
    full = memory.estimate("llama-2-7b")
    lora = memory.estimate("llama-2-7b", LoraConfig(r=16, target_modules="all-linear"))
    text = memory.comparison_table({"full": full, "LoRA": lora})
    assert "107.8 GB" in text and "27.6 GB" in text and "16.00" in text


# ==================================================================================================
# The commands
# ==================================================================================================
def test_memory_command(capsys):
    assert cli.main(["memory", "--preset", "llama-2-7b", "--r", "16", "--target", "all-linear"]) == 0
    out = capsys.readouterr().out
    assert "trainable params: 39,976,960 || all params: 6,778,392,576 || trainable%: 0.5898" in out
    assert "full fine-tuning" in out and "16.00" in out and "4.07" in out


def test_memory_command_corrects_the_lessons_gpt3_numbers(capsys):
    assert cli.main(["memory", "--preset", "gpt-3-175b", "--r", "8", "--matrix", "4096x4096"]) == 0
    out = capsys.readouterr().out
    assert "4,718,592 parameters per unit of rank" in out and "r=8: 37.7M" in out and "526M" in out
    assert "65,536 (256x fewer)" in out


def test_info_command(capsys, tmp_path):
    assert cli.main(["info", "--preset", "llama-2-7b"]) == 0
    assert "6,738,415,616" in capsys.readouterr().out
    model = LlamaForCausalLM(LlamaConfig(**TINY))
    model.save_pretrained(tmp_path / "tiny")
    assert cli.main(["info", "--model", str(tmp_path / "tiny")]) == 0
    out = capsys.readouterr().out
    assert f"{model.num_parameters():,d}" in out and "layers.*.self_attn.q_proj.weight" in out
    assert cli.main(["info", "--model", str(tmp_path / "missing")]) == 2
