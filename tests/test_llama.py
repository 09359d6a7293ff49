"""The Llama model against transformers' LlamaForCausalLM: logits, loss, gradients, checkpoints both
ways, padding masks, the KV cache, config parsing, and the errors a bad checkpoint gives."""
import json
import os

import numpy as np
import pytest

import minilora as ml
from minilora import models
from minilora.models import KVCache, LlamaConfig, LlamaForCausalLM
from minilora.nn import StateDictError

CONFIGS = {
    "mha": dict(),
    "gqa": dict(num_key_value_heads=2),
    "tied_mqa": dict(num_key_value_heads=1, tie_word_embeddings=True),
    "bias_headdim": dict(num_key_value_heads=2, attention_bias=True, mlp_bias=True, head_dim=6,
                         rope_theta=500.0, rms_norm_eps=1e-5),
    # transformers builds embed_tokens with padding_idx=pad_token_id: that row gets no lookup gradient
    "padding": dict(pad_token_id=3),
    "tied_padding": dict(tie_word_embeddings=True, pad_token_id=0),
    # scaled RoPE (head_dim 8, theta 100: wavelengths 6, 20, 63, 199 positions, so with an original
    # context of 32 the llama3 rule keeps one frequency, blends one and divides two)
    "rope_linear": dict(num_attention_heads=2, rope_theta=100.0, rope_scaling={"rope_type": "linear", "factor": 2.0}),
    "rope_llama3": dict(num_attention_heads=2, rope_theta=100.0, rope_scaling={
        "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "original_max_position_embeddings": 32}),
}


def tiny_config(**overrides):
    base = dict(vocab_size=37, hidden_size=16, intermediate_size=24, num_hidden_layers=2,
                num_attention_heads=4, max_position_embeddings=64, pad_token_id=None)
    return LlamaConfig(**{**base, **overrides})


def randomize(model, seed=0, std=0.3):
    """Weights large enough that attention is far from uniform (init's 0.02 would hide mistakes)."""
    rng = np.random.default_rng(seed)
    with ml.no_grad():
        for name, p in model.named_parameters():
            values = rng.standard_normal(p.shape) * (0.1 if name.endswith("norm.weight") else std)
            p.copy_(ml.tensor(values + (1.0 if name.endswith("norm.weight") else 0.0)))
    return model


def relative_error(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-300))


def batch(config, b=2, t=7, seed=1):
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, config.vocab_size, size=(b, t))
    if config.pad_token_id is not None:
        ids[0, 3] = config.pad_token_id  # a pad token that later positions attend to
        ids[1, -2:] = config.pad_token_id  # right padding
    labels = ids.copy()
    labels[0, :2] = -100  # ignored targets, as for a prompt
    if config.pad_token_id is not None:
        labels[1, -2:] = -100
    return ids, labels


# --------------------------------------------------------------------------------------------------
# transformers as the float64 reference
# --------------------------------------------------------------------------------------------------
@pytest.fixture
def hf(monkeypatch):
    """transformers' Llama, patched to compute in the model's dtype throughout.

    Stock transformers computes RMSNorm, the attention softmax and the RoPE tables in float32 even in
    a float64 model (a choice made for bf16 training), which caps agreement at ~1e-7. For a float64
    reference those three stay in the input dtype here; the math is otherwise transformers' own.
    ``test_stock_transformers_float32`` compares against the unpatched code.
    """
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from transformers.models.llama import modeling_llama as llama

    def rms_norm(self, x):
        return self.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.variance_epsilon))

    def rope(self, x, position_ids):
        init = (self.compute_default_rope_parameters if self.rope_type == "default"
                else llama.ROPE_INIT_FUNCTIONS[self.rope_type])
        with pytest.MonkeyPatch.context() as float64:  # transformers' own (scaled) inv_freq, in float64
            float64.setattr(torch, "float", torch.float64)
            inv_freq, attention_scaling = init(self.config)
        freqs = position_ids[..., None].to(torch.float64) * inv_freq
        angles = torch.cat((freqs, freqs), dim=-1)
        return ((angles.cos() * attention_scaling).to(x.dtype), (angles.sin() * attention_scaling).to(x.dtype))

    def eager_attention(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
        key = llama.repeat_kv(key, module.num_key_value_groups)
        value = llama.repeat_kv(value, module.num_key_value_groups)
        scores = torch.matmul(query, key.transpose(2, 3)) * scaling
        if attention_mask is not None:
            scores = scores + attention_mask
        probs = torch.softmax(scores, dim=-1)
        return torch.matmul(probs, value).transpose(1, 2).contiguous(), probs

    monkeypatch.setattr(llama.LlamaRMSNorm, "forward", rms_norm)
    monkeypatch.setattr(llama.LlamaRotaryEmbedding, "forward", rope)
    monkeypatch.setattr(llama, "eager_attention_forward", eager_attention)
    return transformers


def hf_model(transformers, config, dtype="float64", seed=0):
    import torch
    hf_config = transformers.LlamaConfig.from_dict(config.to_dict())
    hf_config._attn_implementation = "eager"
    model = transformers.LlamaForCausalLM(hf_config).to(getattr(torch, dtype))
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1 + 0.1 * torch.randn_like(p))
            else:
                p.copy_(0.3 * torch.randn_like(p))
    return model


def float64_causal_loss(logits, labels):
    """transformers' loss recomputed in float64 (it upcasts logits to float32 for its own loss)."""
    import torch
    v = logits.shape[-1]
    return torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, v).double(),
                                             torch.as_tensor(labels)[:, 1:].reshape(-1),
                                             ignore_index=-100)


@pytest.mark.parametrize("name", CONFIGS)
def test_transformers_checkpoint_loads_into_minilora(hf, tmp_path, name):
    """Written by transformers' save_pretrained, read by minilora: same logits, loss, gradients."""
    import torch
    config = tiny_config(**CONFIGS[name])
    reference = hf_model(hf, config)
    reference.save_pretrained(tmp_path)  # safetensors, lm_head left out when tied
    model = LlamaForCausalLM.from_pretrained(tmp_path, dtype="float64")
    ids, labels = batch(config)

    out = model(ids, labels=labels)
    ref_logits = reference(torch.as_tensor(ids)).logits
    ref_loss = float64_causal_loss(ref_logits, labels)
    ref_loss.backward()
    out.loss.backward()

    assert out.logits.dtype == np.float64 and out.loss.dtype == np.float64
    assert relative_error(out.logits.numpy(), ref_logits.detach().numpy()) < 1e-9
    assert relative_error(out.loss.item(), ref_loss.item()) < 1e-9
    ref_params = dict(reference.named_parameters())
    for pname, p in model.named_parameters():
        assert relative_error(p.grad, ref_params[pname].grad.numpy()) < 1e-9, pname


@pytest.mark.parametrize("name", ["gqa", "tied_mqa", "bias_headdim", "padding", "rope_llama3"])
def test_minilora_checkpoint_loads_into_transformers(hf, tmp_path, name):
    import torch
    config = tiny_config(**CONFIGS[name])
    model = randomize(LlamaForCausalLM(config, dtype="float64"))
    model.save_pretrained(tmp_path)
    reference = hf.LlamaForCausalLM.from_pretrained(tmp_path, dtype=torch.float64,
                                                    attn_implementation="eager")
    # Every weight arrived (transformers would silently re-initialise a missing one).
    ref_state = reference.state_dict()
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(ref_state[key].numpy(), value.numpy(), err_msg=key)
    ids, labels = batch(config, seed=3)
    ref_logits = reference(torch.as_tensor(ids)).logits.detach()
    out = model(ids, labels=labels)
    assert relative_error(out.logits.numpy(), ref_logits.numpy()) < 1e-9
    assert relative_error(out.loss.item(), float64_causal_loss(ref_logits, labels).item()) < 1e-9


def test_stock_transformers_float32(tmp_path):
    """Unpatched transformers in float32 agrees to float32 precision."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    config = tiny_config(num_key_value_heads=2)
    model = randomize(LlamaForCausalLM(config, dtype="float32"))
    model.save_pretrained(tmp_path)
    reference = transformers.LlamaForCausalLM.from_pretrained(tmp_path, dtype=torch.float32)
    ids, labels = batch(config)
    ref = reference(torch.as_tensor(ids), labels=torch.as_tensor(labels))
    out = model(ids, labels=labels)
    assert relative_error(out.logits.numpy(), ref.logits.detach().numpy()) < 1e-4
    assert abs(out.loss.item() - ref.loss.item()) < 1e-4


# --------------------------------------------------------------------------------------------------
# Padding masks and the KV cache
# --------------------------------------------------------------------------------------------------
def test_left_padding_gives_the_unpadded_logits(hf):
    import torch
    config = tiny_config(num_key_value_heads=2)
    model = randomize(LlamaForCausalLM(config, dtype="float64"))
    long, short = [5, 9, 2, 30, 7], [11, 4, 8]
    ids = np.array([long, [0, 0] + short])
    mask = np.array([[1] * 5, [0, 0, 1, 1, 1]])
    positions = np.maximum(mask.cumsum(axis=1) - 1, 0)
    padded = model(ids, attention_mask=mask, position_ids=positions).logits.numpy()
    for row, seq in enumerate([long, short]):
        alone = model([seq]).logits.numpy()[0]
        assert relative_error(padded[row, -len(seq):], alone) < 1e-12
    # transformers, given the same mask and positions, agrees on every real (unpadded) position.
    reference = hf_model(hf, config)
    model.load_state_dict({k: v.detach().numpy() for k, v in reference.state_dict().items()})
    ours = model(ids, attention_mask=mask, position_ids=positions).logits.numpy()
    theirs = reference(torch.as_tensor(ids), attention_mask=torch.as_tensor(mask),
                       position_ids=torch.as_tensor(positions)).logits.detach().numpy()
    real = mask.astype(bool)
    assert relative_error(ours[real], theirs[real]) < 1e-9
    assert np.isfinite(ours).all()  # the fully padded rows give finite numbers, not NaN


def test_right_padding_and_ignored_labels_give_the_unpadded_loss():
    config = tiny_config()
    model = randomize(LlamaForCausalLM(config, dtype="float64"))
    seq = [3, 1, 4, 1, 5, 9]
    ids = np.array([seq + [0, 0]])
    labels = np.array([seq + [-100, -100]])
    mask = np.array([[1] * 6 + [0, 0]])
    padded = model(ids, labels=labels, attention_mask=mask).loss.item()
    alone = model([seq], labels=[seq]).loss.item()
    assert abs(padded - alone) < 1e-12


def test_kv_cache_gives_the_full_forward_logits():
    config = tiny_config(num_key_value_heads=2)
    model = randomize(LlamaForCausalLM(config, dtype="float64"))
    ids = np.random.default_rng(0).integers(0, config.vocab_size, size=(2, 9))
    full = model(ids).logits.numpy()
    out = model(ids[:, :5], use_cache=True)
    cache = out.past_key_values
    pieces = [out.logits.numpy()]
    for start, stop in [(5, 7), (7, 8), (8, 9)]:  # a chunk of two, then one token at a time
        out = model(ids[:, start:stop], past_key_values=cache, use_cache=True)
        pieces.append(out.logits.numpy())
    assert isinstance(cache, KVCache) and len(cache) == config.num_hidden_layers
    assert cache.get_seq_length() == 9
    assert cache.keys[0].shape == (2, 2, 9, config.head_dim)
    assert relative_error(np.concatenate(pieces, axis=1), full) < 1e-12


def test_loss_gradients_match_central_differences():
    """The whole model's backward, checked on a few weights against finite differences."""
    config = tiny_config(num_hidden_layers=1, hidden_size=8, intermediate_size=8, num_attention_heads=2,
                         num_key_value_heads=1, vocab_size=11)
    model = randomize(LlamaForCausalLM(config, dtype="float64"))
    ids, labels = batch(config, t=5)
    model(ids, labels=labels).loss.backward()
    weight = model.model.layers[0].self_attn.k_proj.weight
    analytic = weight.grad.numpy().copy()
    eps = 1e-6
    for index in [(0, 0), (3, 5), (1, 7)]:
        original = weight.data[index].item()
        weight.data[index] = original + eps
        plus = model(ids, labels=labels).loss.item()
        weight.data[index] = original - eps
        minus = model(ids, labels=labels).loss.item()
        weight.data[index] = original
        assert abs((plus - minus) / (2 * eps) - analytic[index]) < 1e-7


# --------------------------------------------------------------------------------------------------
# Structure, tied embeddings, configs
# --------------------------------------------------------------------------------------------------
def test_module_names_are_transformers_names():
    model = LlamaForCausalLM(tiny_config(num_hidden_layers=1))
    names = set(dict(model.named_parameters()))
    for proj in ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                 "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]:
        assert f"model.layers.0.{proj}.weight" in names
        assert type(model.get_submodule(f"model.layers.0.{proj}")) is ml.nn.Linear
    assert {"model.embed_tokens.weight", "model.norm.weight", "lm_head.weight",
            "model.layers.0.input_layernorm.weight",
            "model.layers.0.post_attention_layernorm.weight"} <= names


def test_tied_embeddings_share_one_parameter(tmp_path):
    model = LlamaForCausalLM(tiny_config(tie_word_embeddings=True))
    assert model.lm_head.weight is model.model.embed_tokens.weight
    assert "lm_head.weight" not in dict(model.named_parameters())  # counted once
    model.save_pretrained(tmp_path)
    from minilora.checkpoint import load_file
    assert "lm_head.weight" not in load_file(tmp_path / "model.safetensors")
    loaded = LlamaForCausalLM.from_pretrained(tmp_path)
    assert loaded.lm_head.weight is loaded.model.embed_tokens.weight
    np.testing.assert_array_equal(loaded.lm_head.weight.numpy(), model.lm_head.weight.numpy())


def test_config_reads_both_rope_styles_and_round_trips():
    new_style = {"model_type": "llama", "hidden_size": 16, "num_attention_heads": 4,
                 "rope_parameters": {"rope_type": "default", "rope_theta": 500000.0},
                 "use_cache": True}
    old_style = {"hidden_size": 16, "num_attention_heads": 4, "rope_theta": 500000.0}
    assert LlamaConfig.from_dict(new_style).rope_theta == 500000.0
    assert LlamaConfig.from_dict(old_style).rope_theta == 500000.0
    config = LlamaConfig.from_dict(new_style)
    assert config.head_dim == 4 and config.num_key_value_heads == 4
    again = LlamaConfig.from_dict(config.to_dict())
    assert again == config and again.use_cache is True  # (at transformers' default: not kept in extra, written)
    d = config.to_dict()
    assert d["architectures"] == ["LlamaForCausalLM"] and d["model_type"] == "llama" and d["use_cache"] is True


def test_llama31_config_reads_writes_and_matches_transformers_frequencies():
    """Llama 3.1's config.json (old-style rope_scaling) round-trips, and the scaled frequencies are
    transformers' (which computes them in float32)."""
    import math
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
    from minilora.nn.llama import rope_inverse_frequencies
    llama31 = {"hidden_size": 64, "num_attention_heads": 2, "rope_theta": 500000.0, "rope_scaling": {
        "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192, "rope_type": "llama3"}}
    config = LlamaConfig.from_dict(llama31)
    assert LlamaConfig.from_dict(config.to_dict()) == config
    ours = rope_inverse_frequencies(config)
    theirs, _ = ROPE_INIT_FUNCTIONS["llama3"](transformers.LlamaConfig.from_dict(config.to_dict()))
    assert relative_error(ours, theirs.numpy()) < 1e-6
    plain = 1.0 / 500000.0 ** (np.arange(0, 32, 2) / 32)
    assert ours[0] == plain[0] and ours[-1] == plain[-1] / 8  # fast kept, slow divided by factor
    assert LlamaConfig.from_dict({**llama31, "rope_scaling": {"type": "linear", "factor": 2.0}}).rope_scaling \
        == {"rope_type": "linear", "factor": 2.0}
    assert math.isclose(rope_inverse_frequencies(LlamaConfig.from_dict(
        {**llama31, "rope_scaling": {"type": "linear", "factor": 2.0}}))[1], plain[1] / 2)


@pytest.mark.parametrize("bad, message", [
    ({"model_type": "mistral"}, "model_type"),
    ({"rope_parameters": {"rope_type": "proportional", "rope_theta": 1.0, "factor": 4.0}},
     "rope_type 'proportional' is not supported"),
    ({"rope_scaling": {"type": "proportional", "factor": 2.0}}, "rope_type 'proportional' is not supported"),
    ({"rope_scaling": {"type": "yarn"}}, "needs factor"),
    ({"rope_scaling": {"type": "longrope", "short_factor": [1.0], "long_factor": "2"}}, "long_factor"),
    ({"rope_parameters": {"rope_type": "llama3", "rope_theta": 1.0, "factor": 8.0}},
     "needs low_freq_factor, high_freq_factor, original_max_position_embeddings"),
    ({"num_key_value_heads": 3}, "multiple of num_key_value_heads"),
    ({"hidden_size": 15}, "not a multiple of num_attention_heads"),
])
def test_config_errors(bad, message):
    with pytest.raises((ValueError, NotImplementedError), match=message):
        LlamaConfig.from_dict({"hidden_size": 16, "num_attention_heads": 4, **bad})


# --------------------------------------------------------------------------------------------------
# Checkpoint errors
# --------------------------------------------------------------------------------------------------
def saved(tmp_path, **overrides):
    model = LlamaForCausalLM(tiny_config(**overrides))
    model.save_pretrained(tmp_path)
    return model


def test_checkpoint_mismatch_lists_keys_and_shapes(tmp_path):
    saved(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["vocab_size"] = 40
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(StateDictError, match=r"size mismatch for model.embed_tokens.weight: copying a param with "
                                             r"shape minilora.Size\(\[37, 16\]\) from checkpoint, the shape in "
                                             r"current model is minilora.Size\(\[40, 16\]\)") as info:
        LlamaForCausalLM.from_pretrained(tmp_path)
    assert str(tmp_path) in str(info.value)


def test_checkpoint_missing_and_unexpected_keys(tmp_path):
    from minilora.checkpoint import load_file, save_file
    saved(tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    state["model.layers.0.mlp.extra.weight"] = state.pop("model.layers.0.mlp.up_proj.weight")
    save_file(state, tmp_path / "model.safetensors")
    with pytest.raises(StateDictError) as info:
        LlamaForCausalLM.from_pretrained(tmp_path)
    assert info.value.missing == ["model.layers.0.mlp.up_proj.weight"]
    assert info.value.unexpected == ["model.layers.0.mlp.extra.weight"]


def test_truncated_checkpoint_names_the_file(tmp_path):
    from minilora.checkpoint import CheckpointError
    saved(tmp_path)
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match="model.safetensors: truncated"):
        LlamaForCausalLM.from_pretrained(tmp_path)


def test_missing_checkpoint_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        LlamaForCausalLM.from_pretrained(tmp_path / "nowhere")


def test_reads_bfloat16_checkpoints(hf, tmp_path):
    import torch
    config = tiny_config(num_key_value_heads=2)
    reference = hf_model(hf, config, dtype="float32")
    reference.to(torch.bfloat16).save_pretrained(tmp_path)
    model = LlamaForCausalLM.from_pretrained(tmp_path, dtype="float32")
    for key, value in reference.state_dict().items():
        np.testing.assert_array_equal(model.state_dict()[key].numpy(), value.float().numpy())


def test_reads_sharded_checkpoints(hf, tmp_path):
    config = tiny_config()
    reference = hf_model(hf, config)
    reference.save_pretrained(tmp_path, max_shard_size="20KB")
    assert (tmp_path / "model.safetensors.index.json").exists()
    model = LlamaForCausalLM.from_pretrained(tmp_path, dtype="float64")
    for key, value in reference.state_dict().items():
        np.testing.assert_array_equal(model.state_dict()[key].numpy(), value.numpy())


def test_load_base_missing_says_how_to_make_it(tmp_path, monkeypatch):
    monkeypatch.setattr(models, "BASE_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="python -m minilora.pretrain"):
        models.load_base()


@pytest.mark.skipif(not os.path.isfile(os.path.join(models.BASE_DIR, "config.json")),
                    reason="the pretrained base has not been built yet (python -m minilora.pretrain)")
def test_load_base():
    model = models.load_base()
    out = model([[model.config.bos_token_id or 0, 1, 2]])
    assert out.logits.shape == (1, 3, model.config.vocab_size)
    assert os.path.getsize(os.path.join(models.BASE_DIR, "model.safetensors")) <= 5 * 2**20
