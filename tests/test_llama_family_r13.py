"""Qwen2, Mistral and Qwen3 (minilora/nn/llama_family.py) against transformers 5 and PEFT.

A user's ``AutoModelForCausalLM.from_pretrained("qwen2-folder")`` stopped with "minilora implements 'llama'".
Tiny random checkpoints are built here with transformers (config + save_pretrained) and loaded with minilora's
AutoModelForCausalLM: float64 logits (left padding, prompts longer than the sliding window), greedy generate
with the KV cache past the window, a LoRA step's gradients with PEFT's default target_modules, seeded init,
and the config.json save_pretrained writes (read back by transformers as the same config).
"""
import importlib
import json
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import minilora as ml  # noqa: E402
from minilora import lora  # noqa: E402
from minilora.models import AutoConfig, AutoModelForCausalLM, LlamaForCausalLM, Qwen2Config  # noqa: E402

SHAPE = dict(vocab_size=37, hidden_size=16, intermediate_size=24, num_hidden_layers=3, num_attention_heads=4,
             num_key_value_heads=2)
# model_type -> its settings; the windows (5, 4 positions) are shorter than the 12-token prompts
CASES = {
    "qwen2": ("qwen2", dict()),
    "qwen2_window": ("qwen2", dict(use_sliding_window=True, sliding_window=5, max_window_layers=1)),
    "mistral_window": ("mistral", dict(sliding_window=5, head_dim=6)),
    "qwen3": ("qwen3", dict(head_dim=6)),
    "qwen3_window_bias_tied": ("qwen3", dict(head_dim=6, attention_bias=True, use_sliding_window=True,
                                             sliding_window=4, max_window_layers=2, tie_word_embeddings=True)),
}
PREFIX = {"llama": "Llama", "qwen2": "Qwen2", "mistral": "Mistral", "qwen3": "Qwen3"}


@pytest.fixture
def hf(monkeypatch):
    """transformers computing RMSNorm, RoPE tables and eager softmax in float64 (stock code keeps them in
    float32 in a float64 model, which caps agreement at ~1e-7; tests/test_llama.py's fixture, per family)."""
    for family, prefix in PREFIX.items():
        module = importlib.import_module(f"transformers.models.{family}.modeling_{family}")

        def rms_norm(self, x):
            return self.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.variance_epsilon))

        def rope(self, x, position_ids):
            with pytest.MonkeyPatch.context() as float64:
                float64.setattr(torch, "float", torch.float64)
                inv_freq, scaling = self.compute_default_rope_parameters(self.config)
            angles = torch.cat([position_ids[..., None].to(torch.float64) * inv_freq] * 2, dim=-1)
            return (angles.cos() * scaling).to(x.dtype), (angles.sin() * scaling).to(x.dtype)

        def eager(attention, query, key, value, attention_mask, scaling, dropout=0.0, module=module, **kwargs):
            key = module.repeat_kv(key, attention.num_key_value_groups)
            value = module.repeat_kv(value, attention.num_key_value_groups)
            scores = torch.matmul(query, key.transpose(2, 3)) * scaling
            probs = torch.softmax(scores if attention_mask is None else scores + attention_mask, dim=-1)
            return torch.matmul(probs, value).transpose(1, 2).contiguous(), probs

        monkeypatch.setattr(getattr(module, prefix + "RMSNorm"), "forward", rms_norm)
        monkeypatch.setattr(getattr(module, prefix + "RotaryEmbedding"), "forward", rope)
        monkeypatch.setattr(module, "eager_attention_forward", eager)
    return transformers


def _quiet(call):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return call()


def hf_checkpoint(folder, case, attn="sdpa"):
    """transformers' model of ``case`` in float64, weights large enough to make attention far from uniform,
    saved to ``folder``."""
    model_type, settings = CASES[case]
    config = transformers.AutoConfig.for_model(model_type, **SHAPE, **settings)
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config, attn_implementation=attn).double()
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(0.3 * torch.randn_like(p) + (1.0 if name.endswith("norm.weight") else 0.0))
    _quiet(lambda: model.save_pretrained(folder))
    return model


def prompts():
    ids = np.random.default_rng(1).integers(0, SHAPE["vocab_size"], (2, 12))
    mask = np.ones_like(ids)
    mask[1, :3] = 0  # left padding
    return ids, mask


def relative_error(a, b):
    return float(np.abs(a - b).max() / np.abs(b).max())


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("case", CASES)
def test_logits_and_greedy_generate_equal_transformers(hf, tmp_path, case, attn):
    reference = hf_checkpoint(tmp_path, case, attn)
    model = AutoModelForCausalLM.from_pretrained(tmp_path, dtype="float64", attn_implementation=attn)
    assert type(model).__name__ == type(reference).__name__  # Qwen2ForCausalLM, ...
    ids, mask = prompts()
    expected = reference(torch.tensor(ids), attention_mask=torch.tensor(mask)).logits.detach().numpy()
    logits = model(ids, attention_mask=mask).logits.numpy()
    real = mask.astype(bool)  # (a padding query's row is each implementation's own choice)
    assert relative_error(logits[real], expected[real]) < 1e-12
    # greedy with the KV cache, 8 tokens past the prompt (and past every window)
    expected = _quiet(lambda: reference.generate(torch.tensor(ids), attention_mask=torch.tensor(mask),
                                                 max_new_tokens=8, do_sample=False)).numpy()
    np.testing.assert_array_equal(model.generate(ids, attention_mask=mask, max_new_tokens=8, do_sample=False).numpy(),
                                  expected)


@pytest.mark.parametrize("case", ["qwen2", "mistral_window", "qwen3_window_bias_tied"])
def test_lora_step_gradients_equal_peft(hf, tmp_path, case):
    peft = pytest.importorskip("peft")
    reference = peft.get_peft_model(hf_checkpoint(tmp_path, case), peft.LoraConfig(r=2, lora_alpha=4))
    model = lora.get_peft_model(AutoModelForCausalLM.from_pretrained(tmp_path, dtype="float64"),
                                lora.LoraConfig(r=2, lora_alpha=4))
    ours = dict(model.named_parameters())
    theirs = {name: p for name, p in reference.named_parameters() if p.requires_grad}
    assert sorted(theirs) == sorted(n for n, p in ours.items() if p.requires_grad)  # PEFT's q_proj, v_proj default
    assert any(".v_proj.lora_B." in name for name in theirs) and not any("k_proj" in name for name in theirs)
    rng = np.random.default_rng(2)
    with torch.no_grad(), ml.no_grad():
        for name, p in theirs.items():  # B = 0 would leave A without a gradient
            values = 0.3 * rng.standard_normal(tuple(p.shape))
            p.copy_(torch.tensor(values))
            ours[name].copy_(ml.tensor(values))
    ids, mask = prompts()
    logits = reference(torch.tensor(ids), attention_mask=torch.tensor(mask)).logits
    labels = torch.tensor(np.where(mask == 1, ids, -100))
    loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1))
    loss.backward()  # (transformers' own loss upcasts the logits to float32: recomputed in float64)
    out = model(ids, attention_mask=mask, labels=labels.numpy())
    out.loss.backward()
    assert abs(out.loss.item() - loss.item()) < 1e-12 * abs(loss.item())
    for name, p in theirs.items():
        assert relative_error(ours[name].grad.numpy(), p.grad.numpy()) < 1e-11, name


@pytest.mark.parametrize("case", ["qwen2_window", "mistral_window", "qwen3_window_bias_tied"])
def test_seeded_init_and_saved_config_are_transformers(tmp_path, case):
    model_type, settings = CASES[case]
    config = AutoConfig.for_model(model_type, **SHAPE, **settings)
    hf_config = transformers.AutoConfig.for_model(model_type, **SHAPE, **settings)
    ml.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    torch.manual_seed(0)
    reference = transformers.AutoModelForCausalLM.from_config(hf_config)
    expected = {name: t.detach().numpy() for name, t in reference.state_dict().items()}
    state = model.state_dict()
    assert sorted(state) == sorted(expected)  # q_norm / k_norm, Qwen's q/k/v biases, a tied head
    for name, t in state.items():
        np.testing.assert_array_equal(t.numpy(), expected[name], err_msg=name)
    assert repr(model) == repr(reference)  # print(model): Qwen2MLP, Qwen3RMSNorm, ... as transformers' (not LlamaMLP)
    model.save_pretrained(tmp_path / "ours")
    _quiet(lambda: reference.save_pretrained(tmp_path / "theirs"))
    saved, written = (json.loads((tmp_path / side / "config.json").read_text()) for side in ("ours", "theirs"))
    assert saved["model_type"] == model_type and saved["architectures"] == [f"{PREFIX[model_type]}ForCausalLM"]
    # the same keys, but transformers' defaults it leaves out and rope_theta (written for transformers 4 too)
    assert set(saved) - set(written) == {"rope_theta"}
    assert set(written) - set(saved) <= {"transformers_version", "use_cache", "attention_dropout"}
    read = [_quiet(lambda: transformers.AutoConfig.from_pretrained(tmp_path / side)).to_dict()
            for side in ("ours", "theirs")]
    for config_dict in read:
        config_dict.pop("_name_or_path")
    assert read[0] == read[1]
    again = AutoModelForCausalLM.from_pretrained(tmp_path / "theirs")
    assert type(again) is type(model) and again.config.sliding_window == settings["sliding_window"]
    assert getattr(again.config, "layer_types", None) == getattr(hf_config, "layer_types", None)


def test_other_model_types_get_a_clear_error(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_embd": 8}))
    with pytest.raises(ValueError, match="model_type 'gpt2'.*'llama', 'mistral', 'qwen2', 'qwen3'"):
        AutoModelForCausalLM.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match="model_type 'gpt2'"):
        AutoConfig.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "qwen2", **SHAPE}))
    with pytest.raises(ValueError, match="LlamaConfig reads 'llama'.*AutoModelForCausalLM"):
        LlamaForCausalLM.from_pretrained(tmp_path)
    with pytest.raises(OSError, match="from_pretrained"):
        AutoModelForCausalLM()
    # transformers' validate_layer_type
    with pytest.raises(ValueError, match=r"`num_hidden_layers` \(3\) must be equal to the number of `layer_types`"):
        Qwen2Config(**SHAPE, layer_types=["full_attention"])
    with pytest.raises(ValueError, match="'sliding_window' is '4'"):
        AutoConfig.for_model("mistral", **SHAPE, sliding_window="4")


def test_adapter_file_names_the_variant_and_loads_both_ways(hf, tmp_path):
    """A task_type-less adapter records its base class (PEFT's auto_mapping): PEFT's AutoPeftModel then loads
    it onto transformers' Qwen3, minilora's AutoPeftModelForCausalLM onto minilora's (it wrote LlamaForCausalLM)."""
    peft = pytest.importorskip("peft")
    hf_checkpoint(tmp_path / "base", "qwen3_window_bias_tied")
    model = lora.get_peft_model(AutoModelForCausalLM.from_pretrained(tmp_path / "base", dtype="float64"),
                                lora.LoraConfig(r=2, init_lora_weights=False))
    model.save_pretrained(tmp_path / "adapter")
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert config["auto_mapping"] == {"base_model_class": "Qwen3ForCausalLM",
                                      "parent_library": "transformers.models.qwen3.modeling_qwen3"}
    assert config["base_model_name_or_path"] == str(tmp_path / "base")
    reference = _quiet(lambda: peft.AutoPeftModel.from_pretrained(tmp_path / "adapter", dtype=torch.float64))
    loaded = lora.AutoPeftModelForCausalLM.from_pretrained(tmp_path / "adapter", dtype="float64")
    assert type(loaded.get_base_model()).__name__ == "Qwen3ForCausalLM"
    ids, mask = prompts()
    expected = reference(torch.tensor(ids)).logits.detach().numpy()
    assert relative_error(loaded(ids).logits.numpy(), expected) < 1e-12
    assert relative_error(model(ids).logits.numpy(), expected) < 1e-12


def test_first_layers_of_a_windowed_checkpoint(tmp_path):
    """from_pretrained(num_hidden_layers=n) loads the first n layers, each keeping its attention type, as
    transformers' (minilora refused: layer_types had 3 entries for 1 layer)."""
    model_type, settings = CASES["qwen2_window"]
    ml.manual_seed(0)
    AutoModelForCausalLM.from_config(AutoConfig.for_model(model_type, **SHAPE, **settings)).save_pretrained(tmp_path)
    model = AutoModelForCausalLM.from_pretrained(tmp_path, num_hidden_layers=2)
    assert len(model.model.layers) == 2 and model.config.layer_types == ["full_attention", "sliding_attention"]
    assert [layer.self_attn.sliding_window for layer in model.model.layers] == [None, 5]


def test_command_line_and_server_load_the_variant(tmp_path, capsys):
    """`minilora train/generate --model DIR` and the server load a Qwen2 folder as Qwen2 (they refused it)."""
    from types import SimpleNamespace

    from minilora import train
    from minilora.cli import main as cli
    from minilora.serve.cli import load_engine
    ml.manual_seed(0)  # vocab_size 259: minilora's byte-level tokenizer serves a folder without tokenizer.json
    config = AutoConfig.for_model("qwen2", **{**SHAPE, "vocab_size": 259}, use_sliding_window=True, sliding_window=3,
                                  max_window_layers=0)
    model = AutoModelForCausalLM.from_config(config)
    model.save_pretrained(tmp_path)
    loaded = train._load_model(SimpleNamespace(model=str(tmp_path), dtype="float32", device=None))
    assert type(loaded).__name__ == "Qwen2ForCausalLM"
    engine, _ = load_engine(str(tmp_path))
    assert type(engine.model).__name__ == "Qwen2ForCausalLM"
    assert cli(["generate", "Hello", "--model", str(tmp_path), "--max-new-tokens", "4"]) in (0, None)
    assert capsys.readouterr().out


def test_server_batch_with_a_sliding_window_decodes_as_generate(tmp_path):
    """The server's ragged batch (rows of other lengths, left-padded in one cache) keeps each row's window:
    every row's greedy tokens are those of generate on that prompt alone."""
    from minilora.serve.batch import RaggedBatch
    ml.manual_seed(0)
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model("mistral", **SHAPE, sliding_window=3), dtype="float64")
    prompts = [[5, 9, 2, 30, 7, 7, 1], [3, 14, 15, 9]]
    batch, tokens = RaggedBatch(model), []
    for prompt in prompts:
        tokens.append([int(np.argmax(batch.add(prompt)))])
    for _ in range(5):
        for row, logits in zip(tokens, batch.step([row[-1] for row in tokens])):
            row.append(int(np.argmax(logits)))
    for prompt, row in zip(prompts, tokens):
        expected = model.generate(np.array([prompt]), max_new_tokens=6, do_sample=False).numpy()[0, len(prompt):]
        assert row == expected.tolist()


@pytest.mark.parametrize("task", ["SequenceClassification", "TokenClassification"])
def test_classification_heads_on_a_variant_body(hf, tmp_path, task):
    """AutoModelFor{Sequence,Token}Classification on a Qwen2 causal-LM folder: the body read, a new head
    (its weights copied from transformers' here), the same float64 logits."""
    hf_checkpoint(tmp_path, "qwen2_window")
    reference = _quiet(lambda: getattr(transformers, f"AutoModelFor{task}").from_pretrained(
        tmp_path, num_labels=3, pad_token_id=0, dtype=torch.float64))
    model = getattr(ml.models, f"AutoModelFor{task}").from_pretrained(tmp_path, num_labels=3, pad_token_id=0,
                                                                       dtype="float64")
    assert type(model).__name__ == type(reference).__name__ == f"Qwen2For{task}"
    model.score.load_state_dict({k: v.detach().numpy() for k, v in reference.score.state_dict().items()})
    reference.eval(), model.eval()
    ids, mask = prompts()
    ids[0, -2:] = 0  # right padding for the sequence head's pooling
    expected = reference(torch.tensor(ids), attention_mask=torch.tensor(mask)).logits.detach().numpy()
    logits = model(ids, attention_mask=mask).logits.numpy()
    rows = slice(None) if task == "SequenceClassification" else mask.astype(bool)
    assert relative_error(logits[rows], expected[rows]) < 1e-12


@pytest.mark.parametrize("case", ["qwen2_window", "mistral_window", "qwen3_window_bias_tied"])
def test_memory_estimate_counts_the_variants_parameters(case):
    """minilora.memory's layout is the model's named_parameters (it counted Llama's: no Qwen2 q/k/v
    biases, no Qwen3 q_norm/k_norm) and its LoRA count PEFT's on transformers' model."""
    peft = pytest.importorskip("peft")
    from minilora import memory
    model_type, settings = CASES[case]
    config = AutoConfig.for_model(model_type, **SHAPE, **settings)
    layout = [(p.name, tuple(p.shape)) for p in memory.parameter_layout(config)]
    assert layout == [(n, tuple(p.shape)) for n, p in AutoModelForCausalLM.from_config(config).named_parameters()]
    torch.manual_seed(0)
    reference = peft.get_peft_model(
        transformers.AutoModelForCausalLM.from_config(transformers.AutoConfig.for_model(model_type, **SHAPE,
                                                                                        **settings)),
        peft.LoraConfig(r=4, target_modules="all-linear"))
    estimate = memory.estimate(config, lora.LoraConfig(r=4, target_modules="all-linear"))
    assert (estimate.trainable_params, estimate.total_params) == reference.get_nb_trainable_parameters()
