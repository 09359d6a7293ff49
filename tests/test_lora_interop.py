"""minilora.lora against Hugging Face PEFT on transformers' Llama, in float64: the same logits and
gradients (LoRA, rsLoRA, DoRA), adapter files read both ways, the same merged weights, VeRA, and
per-sample adapters. Skipped when torch / transformers / peft are not installed."""
import json

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
peft = pytest.importorskip("peft")
pytest.importorskip("safetensors")

import torch  # noqa: E402

import minilora as ml  # noqa: E402

from minilora.checkpoint import load_file  # noqa: E402
from peft_versions import peft_config_file_as_022  # noqa: E402
from minilora.lora import LoraConfig, PeftModel, VeraConfig, get_peft_model  # noqa: E402
from minilora.models import LlamaConfig, LlamaForCausalLM  # noqa: E402
from minilora.testing import assert_close  # noqa: E402

# transformers patched to compute in float64 throughout (stock transformers keeps RMSNorm, softmax and
# RoPE in float32), and transformers' loss recomputed in float64: shared with the Llama tests.
from test_llama import float64_causal_loss, hf, hf_model  # noqa: E402,F401

CONFIG = LlamaConfig(vocab_size=37, hidden_size=16, intermediate_size=24, num_hidden_layers=2,
                     num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
VARIANTS = {
    "lora": dict(target_modules=["q_proj", "v_proj"]),
    "rslora": dict(target_modules=["q_proj", "k_proj", "o_proj"], use_rslora=True),
    "dora": dict(target_modules=["q_proj", "v_proj", "down_proj"], use_dora=True),
    "all_linear_patterns": dict(target_modules="all-linear", rank_pattern={"up_proj": 2},
                                alpha_pattern={"o_proj": 3}, modules_to_save=["lm_head"]),
    "embedding": dict(target_modules=["embed_tokens", "q_proj"], rank_pattern={"embed_tokens": 3}),
}
IDS = np.random.default_rng(0).integers(0, CONFIG.vocab_size, (2, 6))
LABELS = np.where(np.arange(6) < 2, -100, IDS)  # the prompt part is ignored, as in fine-tuning


def base_pair(transformers, seed=0):
    """transformers' model and a minilora model with the same (random, large) weights."""
    reference = hf_model(transformers, CONFIG, seed=seed)
    model = LlamaForCausalLM(CONFIG, dtype="float64")
    model.load_state_dict(reference.state_dict())
    return reference, model


def adapter_pair(transformers, kind="lora", **kwargs):
    """A PEFT model and a minilora PeftModel holding identical adapters (PEFT's random init)."""
    options = dict(r=4, lora_alpha=8, init_lora_weights=False, **kwargs)
    reference, model = base_pair(transformers)
    theirs = peft.get_peft_model(reference, peft.LoraConfig(**options))
    ours = get_peft_model(model, LoraConfig(**options))
    ours.load_state_dict(theirs.state_dict())  # PEFT's parameter names ARE minilora's
    return theirs, ours


def peft_logits(model, ids=IDS, **kwargs):
    with torch.no_grad():
        return model(torch.as_tensor(ids), **kwargs).logits.numpy()


def our_logits(model, ids=IDS, **kwargs):
    return model(ids, **kwargs).logits.numpy(force=True)


@pytest.mark.parametrize("variant", VARIANTS)
def test_same_logits_loss_and_gradients_as_peft(hf, variant, capsys):
    theirs, ours = adapter_pair(hf, **VARIANTS[variant])
    ref_logits = theirs(torch.as_tensor(IDS)).logits
    ref_loss = float64_causal_loss(ref_logits, LABELS)
    ref_loss.backward()
    out = ours(IDS, labels=LABELS)
    out.loss.backward()
    assert_close(out.logits, ref_logits.detach().numpy(), rtol=1e-12, atol=1e-12, name="logits")
    assert abs(out.loss.item() - ref_loss.item()) < 1e-12
    ref_grads = {n: p.grad.numpy() for n, p in theirs.named_parameters() if p.requires_grad}
    our_grads = {n: p.grad for n, p in ours.named_parameters() if p.requires_grad}
    assert set(our_grads) == set(ref_grads)  # the same parameters train, under the same names
    for name, grad in ref_grads.items():
        assert_close(our_grads[name], grad, rtol=1e-10, atol=1e-12, name=name)
    theirs.print_trainable_parameters()
    ours.print_trainable_parameters()
    line_theirs, line_ours = capsys.readouterr().out.splitlines()
    assert line_ours == line_theirs


@pytest.mark.parametrize("variant", ["dora", "all_linear_patterns", "embedding"])
def test_adapter_written_by_peft_loads_into_minilora(hf, tmp_path, variant):
    theirs, _ = adapter_pair(hf, **VARIANTS[variant])
    theirs.save_pretrained(tmp_path / "peft")
    _, model = base_pair(hf)
    ours = PeftModel.from_pretrained(model, tmp_path / "peft")
    assert_close(our_logits(ours), peft_logits(theirs), rtol=1e-12, atol=1e-12)
    # ...and writing it back gives PEFT's file: same tensor names and values, same config
    ours.save_pretrained(tmp_path / "ours")
    a, b = load_file(tmp_path / "peft" / "adapter_model.safetensors"), load_file(tmp_path / "ours" / "adapter_model.safetensors")
    assert set(a) == set(b) and all(np.array_equal(a[k], b[k]) for k in a)
    config_a = json.load(open(tmp_path / "peft" / "adapter_config.json"))
    config_b = json.load(open(tmp_path / "ours" / "adapter_config.json"))
    config_a["target_modules"] = sorted(config_a["target_modules"])  # PEFT writes a set, in any order
    assert config_b == peft_config_file_as_022(config_a)


@pytest.mark.parametrize("variant", ["lora", "dora", "embedding"])
def test_adapter_written_by_minilora_loads_into_peft(hf, tmp_path, variant):
    _, model = base_pair(hf)
    ours = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, init_lora_weights=False, **VARIANTS[variant]),
                          adapter_name="mine")
    ours.save_pretrained(tmp_path)  # a non-default adapter: in a subdirectory named after it
    reference, _ = base_pair(hf)
    theirs = peft.PeftModel.from_pretrained(reference, tmp_path / "mine", adapter_name="mine")
    assert_close(peft_logits(theirs), our_logits(ours), rtol=1e-12, atol=1e-12)
    written = json.load(open(tmp_path / "mine" / "adapter_config.json"))
    # only keys PEFT 0.22 knows (0.21 drops astra_config with its "Unexpected keyword arguments" warning)
    assert set(written) <= set(peft_config_file_as_022(peft.LoraConfig().to_dict()))


@pytest.mark.parametrize("variant", ["lora", "dora", "all_linear_patterns", "embedding"])
def test_merged_weights_equal_peft(hf, variant):
    theirs, ours = adapter_pair(hf, **VARIANTS[variant])
    merged_theirs = theirs.merge_and_unload().state_dict()
    merged_ours = ours.merge_and_unload().state_dict()
    assert set(merged_ours) == set(merged_theirs)
    for key, value in merged_theirs.items():
        assert_close(merged_ours[key], value.numpy(), rtol=1e-13, atol=1e-14, name=key)


def test_per_sample_adapters_match_peft(hf):
    theirs, ours = adapter_pair(hf, target_modules=["q_proj", "v_proj", "embed_tokens"])
    second = dict(r=2, lora_alpha=6, target_modules=["v_proj", "up_proj", "embed_tokens"], init_lora_weights=False)
    theirs.add_adapter("other", peft.LoraConfig(**second))
    ours.add_adapter("other", LoraConfig(**second))
    ours.load_state_dict(theirs.state_dict())
    theirs.eval()
    ours.eval()
    batch = np.random.default_rng(1).integers(0, CONFIG.vocab_size, (4, 5))
    names = ["other", "__base__", "default", "other"]
    assert_close(our_logits(ours, batch, adapter_names=names),
                 peft_logits(theirs, batch, adapter_names=names), rtol=1e-12, atol=1e-12)


def test_vera_matches_peft_and_files_go_both_ways(hf, tmp_path):
    reference, model = base_pair(hf)
    options = dict(r=4, target_modules=["q_proj", "v_proj", "up_proj"], init_weights=False)
    theirs = peft.get_peft_model(reference, peft.VeraConfig(**options))
    theirs.save_pretrained(tmp_path / "peft")
    ours = PeftModel.from_pretrained(model, tmp_path / "peft", is_trainable=True)
    assert_close(our_logits(ours), peft_logits(theirs), rtol=1e-12, atol=1e-12)
    ref_loss = float64_causal_loss(theirs(torch.as_tensor(IDS)).logits, LABELS)
    ref_loss.backward()
    ours(IDS, labels=LABELS).loss.backward()
    for name, p in theirs.named_parameters():
        if p.requires_grad:
            assert_close(dict(ours.named_parameters())[name].grad, p.grad.numpy(), rtol=1e-10, atol=1e-12)
    assert ours.get_nb_trainable_parameters() == theirs.get_nb_trainable_parameters()
    # minilora's own VeRA (NumPy-drawn projections, saved in the file) loads into PEFT
    _, model = base_pair(hf)
    mine = get_peft_model(model, VeraConfig(**options))
    rng = np.random.default_rng(2)
    with ml.no_grad():  # trained-looking lambdas, so the file carries real numbers
        for p in mine.parameters():
            if p.requires_grad:
                p.copy_(ml.tensor(rng.standard_normal(p.shape)))
    mine.save_pretrained(tmp_path / "ours")
    reference, _ = base_pair(hf)
    loaded = peft.PeftModel.from_pretrained(reference, tmp_path / "ours")
    assert_close(peft_logits(loaded), our_logits(mine), rtol=1e-12, atol=1e-12)


def test_loraplus_groups_equal_peft(hf):
    """create_loraplus_optimizer: the same four groups (by parameter name), learning rates and decay."""
    from peft.optimizers import create_loraplus_optimizer as peft_loraplus

    from minilora.lora import create_loraplus_optimizer
    from minilora.optim import AdamW
    options = dict(target_modules=["q_proj", "v_proj", "embed_tokens"], use_dora=False, bias="lora_only",
                   modules_to_save=["model.norm"])
    theirs, ours = adapter_pair(hf, **options)
    kwargs = dict(lr=1e-3, loraplus_lr_ratio=16, loraplus_weight_decay=0.1, loraplus_lr_embedding=1e-5)
    t_opt = peft_loraplus(theirs, torch.optim.AdamW, **kwargs)
    o_opt = create_loraplus_optimizer(ours, AdamW, **kwargs)
    t_names = {id(p): n for n, p in theirs.named_parameters()}
    o_names = {id(p): n for n, p in ours.named_parameters()}
    assert len(t_opt.param_groups) == len(o_opt.param_groups) == 4
    for t_group, o_group in zip(t_opt.param_groups, o_opt.param_groups):
        assert sorted(o_names[id(p)] for p in o_group["params"]) == sorted(t_names[id(p)] for p in t_group["params"])
        assert (o_group["lr"], o_group["weight_decay"]) == (t_group["lr"], t_group["weight_decay"])
    assert o_opt.param_groups[1]["params"] and o_opt.param_groups[2]["params"]  # embedding LoRA; B and norm
    with pytest.raises(ValueError, match="loraplus_lr_ratio must be positive"):
        create_loraplus_optimizer(ours, AdamW, lr=1e-3, loraplus_lr_ratio=0)
