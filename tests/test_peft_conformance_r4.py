"""PEFT 0.21 and transformers 5.25 side by side with minilora, round 4: code written the way their docs
write it, run on a tiny random Llama in both, numbers, strings, files and errors compared.

* LlamaForCausalLM.from_pretrained(path, **config_overrides) and config=, transformers' rule;
* config.attention_dropout applied in training mode, as transformers;
* PEFT's handling of fan_in_fan_out on Linear targets and of targets that are not supported layers.

Skipped when torch / transformers / peft are not installed."""
import dataclasses
import json
import logging
import os
import re
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

import minilora as ml  # noqa: E402
from minilora.lora import LoraConfig, get_peft_model  # noqa: E402
from minilora.models import LlamaConfig, LlamaForCausalLM  # noqa: E402

from test_llama import hf_model  # noqa: E402
from test_peft_conformance_r3 import IDS, TINY, as_numpy  # noqa: E402  (the tiny random Llama and its token ids)
from peft_versions import PEFT_022  # noqa: E402


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A tiny Llama saved by transformers (float32)."""
    folder = tmp_path_factory.mktemp("tiny")
    hf_model(transformers, TINY, dtype="float32").save_pretrained(folder)
    return str(folder)


def hf_load(path, **kwargs):
    logging.getLogger("transformers").setLevel(logging.ERROR)  # (its load report of left-out layers)
    return transformers.LlamaForCausalLM.from_pretrained(path, **kwargs)


# Float32 logits of two implementations that sum in different orders (OpenBLAS vs MKL products,
# NumPy's vs MKL's exp in softmax and SiLU) differ by a few float32 roundings of the hidden sums: about
# 1e-6 at logits of order 1, sometimes 1.5e-6 (measured). A wrong weight or option moves them by 1e-2.
FLOAT32_LOGITS = dict(rtol=1e-5, atol=5e-6)


def logits_of(model):
    if isinstance(model, torch.nn.Module):
        with torch.no_grad():
            return model.eval()(torch.tensor(IDS)).logits.numpy()
    return model.eval()(ml.tensor(IDS)).logits.detach().numpy()


@pytest.mark.parametrize("overrides", [dict(num_hidden_layers=1), dict(rms_norm_eps=1e-2),
                                       dict(initializer_range=0.5, num_hidden_layers=1)])
def test_from_pretrained_keywords_override_the_config(saved, overrides):
    reference, model = hf_load(saved, **overrides), LlamaForCausalLM.from_pretrained(saved, **overrides)
    for key, value in overrides.items():
        assert getattr(model.config, key) == getattr(reference.config, key) == value
    assert len(model.model.layers) == len(reference.model.layers)
    np.testing.assert_allclose(logits_of(model), logits_of(reference), rtol=1e-4, atol=1e-5)


def test_from_pretrained_use_cache_override_reaches_the_config(saved):
    model = LlamaForCausalLM.from_pretrained(saved, use_cache=False)
    assert model.config.use_cache is False is hf_load(saved, use_cache=False).config.use_cache
    assert model.eval()(ml.tensor(IDS)).past_key_values is None


def test_from_pretrained_config_keyword(saved):
    hf_config = transformers.LlamaConfig.from_pretrained(saved, num_hidden_layers=1)
    reference = hf_load(saved, config=hf_config)
    model = LlamaForCausalLM.from_pretrained(saved, config=LlamaConfig.from_pretrained(saved))
    assert model.config.num_hidden_layers == 2
    model = LlamaForCausalLM.from_pretrained(saved, config=LlamaConfig(**{**TINY.to_dict(), "num_hidden_layers": 1}))
    np.testing.assert_allclose(logits_of(model), logits_of(reference), rtol=1e-4, atol=1e-5)


def test_from_pretrained_unknown_keyword_is_transformers_type_error(saved):
    for load in (hf_load, LlamaForCausalLM.from_pretrained):
        with pytest.raises(TypeError, match="__init__\\(\\) got an unexpected keyword argument 'foo'"):
            load(saved, foo=1)


def test_config_output_hidden_states_is_read_as_transformers(saved):
    for load in (hf_load, LlamaForCausalLM.from_pretrained):
        model = load(saved, output_hidden_states=True).eval()
        ids = torch.tensor(IDS) if load is hf_load else ml.tensor(IDS)
        with torch.no_grad():
            assert len(model(ids).hidden_states) == TINY.num_hidden_layers + 1
            assert model(ids, output_hidden_states=False).hidden_states is None
    # (transformers 5.25 itself fails on config.return_dict=False: its LlamaModel hands a tuple to
    # LlamaForCausalLM; minilora refuses there, naming the setting: tests/test_live_settings_r16.py)
    with pytest.raises(AttributeError, match="config.return_dict is False"):
        LlamaForCausalLM.from_pretrained(saved, return_dict=False).eval()(ml.tensor(IDS))
    weights = []  # loading with output_attentions=True picks "eager" attention, which has weights to return
    for load in (hf_load, LlamaForCausalLM.from_pretrained):
        model = load(saved, output_attentions=True).eval()
        assert model.config._attn_implementation == "eager"
        with torch.no_grad():
            weights.append([as_numpy(w) for w in model(torch.tensor(IDS) if load is hf_load else ml.tensor(IDS)).attentions])
    assert len(weights[0]) == len(weights[1]) == TINY.num_hidden_layers
    for theirs, ours in zip(*weights):
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)


def test_attention_dropout_in_training_mode_as_transformers():
    config = LlamaConfig(**{**TINY.to_dict(), "attention_dropout": 0.5})
    ml.manual_seed(0)
    model = LlamaForCausalLM(config)
    assert model.model.layers[0].self_attn.attention_dropout == 0.5
    ids = ml.tensor(IDS)
    model.train()
    first, second = model(ids).logits.detach().numpy(), model(ids).logits.detach().numpy()
    assert not np.allclose(first, second)  # dropout draws anew, as transformers' in train()
    model.eval()
    np.testing.assert_array_equal(model(ids).logits.detach().numpy(), model(ids).logits.detach().numpy())
    reference = hf_model(transformers, config, dtype="float32").train()
    assert reference.config.attention_dropout == 0.5
    with torch.no_grad():
        assert not torch.equal(reference(torch.tensor(IDS)).logits, reference(torch.tensor(IDS)).logits)


# ==================================================================================================
# PEFT's handling of fan_in_fan_out and of targets that are not supported layers
# ==================================================================================================
def both_models():
    return hf_model(transformers, TINY, dtype="float32"), LlamaForCausalLM(TINY)


def configs(**fields):
    kind = fields.pop("kind", "LoraConfig")
    return getattr(peft, kind)(**fields), getattr(ml.lora, kind)(**fields)


def fan_warnings(caught):
    return [str(w.message) for w in caught if "fan_in_fan_out" in str(w.message)]


@pytest.mark.parametrize("kind", ["LoraConfig", "VeraConfig"])
@pytest.mark.parametrize("targets", [["q_proj"], ["embed_tokens", "q_proj", "v_proj"], ["embed_tokens"]])
def test_fan_in_fan_out_on_linear_warns_and_is_turned_off_as_peft(tmp_path, kind, targets):
    if kind == "VeraConfig" and "embed_tokens" in targets:
        pytest.skip("VeRA adapts Linear layers only")
    results = []
    for model, config, folder in zip(both_models(), configs(kind=kind, r=2, target_modules=targets,
                                                            fan_in_fan_out=True), ("peft", "ml")):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            wrapped = (peft if folder == "peft" else ml.lora).get_peft_model(model, config)
        wrapped.save_pretrained(tmp_path / folder)
        with open(tmp_path / folder / "adapter_config.json") as f:
            saved = json.load(f)["fan_in_fan_out"]
        # (PEFT stores the caller's config object itself and turns it off there too; minilora stores
        # a copy, so only the stored config is compared)
        results.append((fan_warnings(caught), wrapped.peft_config["default"].fan_in_fan_out, saved))
    assert results[0] == results[1]


def test_unsupported_target_is_peft_value_error():
    for model, config in zip(both_models(), configs(r=2, target_modules=["input_layernorm", "q_proj"])):
        wrap = peft.get_peft_model if isinstance(model, torch.nn.Module) else ml.lora.get_peft_model
        with pytest.raises(ValueError, match=r"^Target module LlamaRMSNorm\(\(16,\), eps=1e-06.*\) is not supported\. "
                                             r"Currently, only the following modules are supported: "):
            wrap(model, config)


def test_vera_target_that_is_not_linear_is_peft_type_error():
    for model, config in zip(both_models(), configs(kind="VeraConfig", r=2, target_modules=["embed_tokens", "q_proj"])):
        wrap = peft.get_peft_model if isinstance(model, torch.nn.Module) else ml.lora.get_peft_model
        with pytest.raises(TypeError, match=r"^Target module Embedding\(37, 16\) is not supported\. Currently, only "):
            wrap(model, config)


# ==================================================================================================
# LlamaConfig: what transformers users call on a config
# ==================================================================================================
def test_config_json_string_file_and_diff_dict_read_back_by_transformers(tmp_path):
    ours = LlamaConfig(**TINY.to_dict())
    text = ours.to_json_string()
    assert text.endswith("}\n") and text == ours.to_json_string(use_diff=True)
    assert json.loads(text) == ours.to_diff_dict() == ours.to_dict()
    ours.to_json_file(tmp_path / "c.json")
    assert (tmp_path / "c.json").read_text() == text
    theirs = transformers.LlamaConfig.from_json_file(tmp_path / "c.json")
    reference = transformers.LlamaConfig.from_dict(TINY.to_dict())
    assert theirs.to_diff_dict() == reference.to_diff_dict()
    assert LlamaConfig.from_json_file(tmp_path / "c.json") == ours
    read_back = LlamaConfig.from_dict(json.loads(reference.to_json_string()))  # theirs, read by minilora
    assert dataclasses.replace(read_back, extra={}) == ours
    assert read_back.extra == {}  # (transformers' use_cache, attention_dropout, pretraining_tp: at their defaults)
    for key, value in json.loads(reference.to_json_string()).items():
        if key not in ("transformers_version", "pretraining_tp", "use_cache", "attention_dropout"):
            assert json.loads(text)[key] == value, key


def test_config_from_pretrained_keywords_as_transformers(saved):
    theirs, their_unused = transformers.LlamaConfig.from_pretrained(saved, num_hidden_layers=1, use_cache=False,
                                                                    foo=3, return_unused_kwargs=True)
    ours, our_unused = LlamaConfig.from_pretrained(saved, num_hidden_layers=1, use_cache=False, foo=3,
                                                   return_unused_kwargs=True)
    assert our_unused == their_unused == {"foo": 3}
    assert ours.num_hidden_layers == theirs.num_hidden_layers == 1
    assert ours.use_cache is theirs.use_cache is False
    plain = LlamaConfig.from_pretrained(saved, foo=3)
    assert not hasattr(plain, "foo") and not hasattr(transformers.LlamaConfig.from_pretrained(saved, foo=3), "foo")


def test_config_update_as_transformers():
    ours, theirs = LlamaConfig(**TINY.to_dict()), transformers.LlamaConfig.from_dict(TINY.to_dict())
    for config in (ours, theirs):
        config.update({"num_hidden_layers": 3, "my_note": "x"})
        assert config.num_hidden_layers == 3 and config.my_note == "x"
    with pytest.raises(ValueError, match="num_hidden_layers"):
        ours.update({"num_hidden_layers": 2.5})  # (minilora checks the field types again)


def test_from_pretrained_config_object_with_config_keywords_is_type_error(saved):
    for load, config_cls in ((hf_load, transformers.LlamaConfig), (LlamaForCausalLM.from_pretrained, LlamaConfig)):
        with pytest.raises(TypeError, match="unexpected keyword argument 'num_hidden_layers'"):
            load(saved, config=config_cls.from_pretrained(saved), num_hidden_layers=1)


# ==================================================================================================
# PeftModel files: adapter_config.json as PEFT writes it
# ==================================================================================================
def test_adapter_without_task_type_writes_peft_auto_mapping_and_peft_auto_model_loads_it(saved, tmp_path):
    config = dict(r=2, lora_alpha=4, target_modules=["q_proj"], init_lora_weights=False)
    theirs = peft.get_peft_model(hf_load(saved), peft.LoraConfig(**config))
    theirs.save_pretrained(tmp_path / "peft")
    ours = get_peft_model(LlamaForCausalLM.from_pretrained(saved), LoraConfig(**config))
    ours.save_pretrained(tmp_path / "ml")
    written = [json.loads((tmp_path / side / "adapter_config.json").read_text()) for side in ("peft", "ml")]
    assert written[1]["auto_mapping"] == written[0]["auto_mapping"] == {
        "base_model_class": "LlamaForCausalLM", "parent_library": "transformers.models.llama.modeling_llama"}
    loaded = peft.AutoPeftModel.from_pretrained(str(tmp_path / "ml"))  # needs auto_mapping without a task_type
    np.testing.assert_allclose(logits_of(loaded), logits_of(ours), rtol=1e-4, atol=1e-5)
    with_task = get_peft_model(LlamaForCausalLM.from_pretrained(saved), LoraConfig(**config, task_type="CAUSAL_LM"))
    with_task.save_pretrained(tmp_path / "task")
    assert json.loads((tmp_path / "task" / "adapter_config.json").read_text())["auto_mapping"] is None


# ==================================================================================================
# unload() as PEFT's code does it
# ==================================================================================================
def adapted_pair(**fields):
    """PEFT's and minilora's LoRA on the same base with the same random adapter weights."""
    reference = hf_model(transformers, TINY, dtype="float32")
    model = LlamaForCausalLM(TINY)
    model.load_state_dict({k: v.numpy() for k, v in reference.state_dict().items()})
    theirs = peft.get_peft_model(reference, peft.LoraConfig(**fields))
    ours = get_peft_model(model, LoraConfig(**fields))
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in theirs.named_parameters():
            if p.requires_grad:
                p.copy_(torch.randn_like(p) * 0.3)
    ours.load_state_dict({k: v.detach().numpy() for k, v in theirs.state_dict().items()})
    np.testing.assert_allclose(logits_of(ours), logits_of(theirs), rtol=1e-4, atol=1e-5)
    return theirs, ours


def test_unload_keeps_what_merge_adapter_merged_as_peft():
    theirs, ours = adapted_pair(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"])
    adapted = logits_of(theirs)
    theirs.merge_adapter(), ours.merge_adapter()
    unloaded = theirs.unload(), ours.unload()
    np.testing.assert_allclose(logits_of(unloaded[0]), adapted, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(logits_of(unloaded[1]), adapted, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("method", ["unload", "merge_and_unload"])
def test_unload_gives_the_original_module_and_merge_and_unload_the_trained_copy_as_peft(method):
    """PEFT 0.22: unload() is the model as it came (the original module back), merge_and_unload() keeps the
    trained copy; 0.21's unload() kept the trained copy too."""
    theirs, ours = adapted_pair(r=2, target_modules=["q_proj"], modules_to_save=["lm_head"])
    wrapper = theirs.base_model.model.lm_head
    trained, original = (m.weight.detach().numpy().copy()
                         for m in (wrapper.modules_to_save["default"], wrapper.original_module))
    assert not np.allclose(trained, original)
    unloaded = getattr(theirs, method)(), getattr(ours, method)()
    want = original if method == "unload" else trained
    np.testing.assert_allclose(unloaded[1].lm_head.weight.numpy(), want, rtol=1e-6)
    peft_kept = trained if method == "unload" and not PEFT_022 else want
    np.testing.assert_allclose(unloaded[0].lm_head.weight.detach().numpy(), peft_kept, rtol=1e-6)
    if peft_kept is want:
        np.testing.assert_allclose(logits_of(unloaded[1]), logits_of(unloaded[0]), rtol=1e-4, atol=1e-5)


def test_failed_adapter_load_gives_the_model_back_untouched(tmp_path):
    _, ours = adapted_pair(r=2, target_modules=["q_proj"], modules_to_save=["lm_head"])
    ours.save_pretrained(tmp_path)
    model = LlamaForCausalLM(TINY)
    original_head = model.lm_head
    (tmp_path / "adapter_model.safetensors").write_bytes(b"broken")
    with pytest.raises(Exception):
        ml.lora.PeftModel.from_pretrained(model, tmp_path)
    assert model.lm_head is original_head and type(model.model.layers[0].self_attn.q_proj) is ml.nn.Linear


@pytest.mark.parametrize("targets", [["q"], "q_proj", ".*q"])
def test_targets_that_match_nothing_start_with_peft_words(targets):
    reference = hf_model(transformers, TINY, dtype="float32")
    for wrap, model, config in ((peft.get_peft_model, reference, peft.LoraConfig(r=2, target_modules=targets)),
                                (get_peft_model, LlamaForCausalLM(TINY), LoraConfig(r=2, target_modules=targets))):
        shown = targets if isinstance(targets, str) else set(targets)
        with pytest.raises(ValueError, match="^" + re.escape(
                f"Target modules {shown} not found in the base model. Please check the target modules and try again.")):
            wrap(model, config)


# ==================================================================================================
# LlamaForCausalLM: what transformers users call on a model
# ==================================================================================================
def test_model_counts_and_class_attributes_as_transformers(saved):
    theirs, ours = hf_load(saved), LlamaForCausalLM.from_pretrained(saved)
    for kwargs in ({}, {"exclude_embeddings": True}, {"only_trainable": True}):
        assert ours.num_parameters(**kwargs) == theirs.num_parameters(**kwargs), kwargs
    assert ours.get_memory_footprint(return_buffers=False) == theirs.get_memory_footprint(return_buffers=False)
    assert ours.can_generate() is theirs.can_generate() is True
    assert type(ours.get_decoder()).__name__ == type(theirs.get_decoder()).__name__ == "LlamaModel"
    for name in ("main_input_name", "base_model_prefix"):
        assert getattr(ours, name) == getattr(theirs, name)
    assert ours.config_class is LlamaConfig


@pytest.mark.parametrize("size", ["20KB", 20000, "0.02mb", "5KB"])
def test_save_pretrained_max_shard_size_shards_as_transformers(saved, tmp_path, size):
    theirs, ours = hf_load(saved), LlamaForCausalLM.from_pretrained(saved)
    theirs.save_pretrained(tmp_path / "theirs", max_shard_size=size)
    ours.save_pretrained(tmp_path / "ours", max_shard_size=size)
    index = [json.loads((tmp_path / side / "model.safetensors.index.json").read_text()) for side in ("theirs", "ours")]
    assert index[1]["metadata"] == index[0]["metadata"]
    assert set(index[1]["weight_map"]) == set(index[0]["weight_map"])
    assert len(set(index[1]["weight_map"].values())) == len(set(index[0]["weight_map"].values()))
    for folder in ("theirs", "ours"):  # each reads the other's
        for load in (hf_load, LlamaForCausalLM.from_pretrained):
            np.testing.assert_allclose(logits_of(load(str(tmp_path / folder))), logits_of(theirs), **FLOAT32_LOGITS)


def test_save_pretrained_other_arguments_as_transformers(saved, tmp_path):
    ours = LlamaForCausalLM.from_pretrained(saved)
    ours.save_pretrained(tmp_path / "rank1", is_main_process=False)
    assert list((tmp_path / "rank1").iterdir()) == []
    ours.save_pretrained(tmp_path / "plain", safe_serialization=True)
    ours.save_pretrained(tmp_path / "plain2", safe_serialization=False)  # transformers 5: safetensors anyway
    assert (tmp_path / "plain2" / "model.safetensors").is_file()
    zeros = {k: v * 0 for k, v in ours.state_dict().items()}
    ours.save_pretrained(tmp_path / "zeros", state_dict=zeros)
    assert not hf_load(str(tmp_path / "zeros")).model.norm.weight.detach().any()
    with pytest.raises(NotImplementedError, match="push_to_hub"):
        ours.save_pretrained(tmp_path / "hub", push_to_hub=True)
    for bad, words in (("19KiB", "Unit 'IB' not supported"), ("two GB", "Could not parse the size value")):
        for model in (ours, hf_load(saved)):
            with pytest.raises(ValueError, match=words):
                model.save_pretrained(tmp_path / "bad", max_shard_size=bad)


# ==================================================================================================
# PeftConfig: the docs' loading flow
# ==================================================================================================
def test_peft_config_from_pretrained_flow_as_peft_docs(saved, tmp_path):
    """config = PeftConfig.from_pretrained(id); base from config.base_model_name_or_path; PeftModel on it."""
    _, ours = adapted_pair(r=2, target_modules=["q_proj"])
    ours.base_model.model.name_or_path = saved
    ours.save_pretrained(tmp_path / "adapter")
    for lib, load_base in ((peft, hf_load), (ml.lora, LlamaForCausalLM.from_pretrained)):
        config = lib.PeftConfig.from_pretrained(str(tmp_path / "adapter"))
        assert type(config).__name__ == "LoraConfig" and isinstance(config, lib.PeftConfig)
        assert config.base_model_name_or_path == saved and config.is_prompt_learning is False
        model = lib.PeftModel.from_pretrained(load_base(config.base_model_name_or_path), str(tmp_path / "adapter"))
        assert lib.PeftConfig.from_json_file(str(tmp_path / "adapter" / "adapter_config.json"))["r"] == 2
        np.testing.assert_allclose(logits_of(model), logits_of(ours), rtol=1e-4, atol=1e-5)


def test_config_class_from_pretrained_follows_the_file_peft_type(tmp_path):
    for lib in (peft, ml.lora):
        lib.VeraConfig(r=2, target_modules=["q_proj"]).save_pretrained(str(tmp_path / lib.__name__))
        assert type(lib.LoraConfig.from_pretrained(str(tmp_path / lib.__name__))).__name__ == "VeraConfig"


def test_new_model_pad_row_is_zero_and_gets_no_gradient_as_transformers():
    fields = dict(vocab_size=37, hidden_size=16, intermediate_size=24, num_hidden_layers=1,
                  num_attention_heads=4, num_key_value_heads=2, pad_token_id=3)
    theirs = transformers.LlamaForCausalLM(transformers.LlamaConfig(**fields))
    ours = LlamaForCausalLM(LlamaConfig(**fields))
    assert not theirs.model.embed_tokens.weight[3].any()
    assert not ours.model.embed_tokens.weight.detach().numpy()[3].any()
    assert ours.model.embed_tokens.weight.detach().numpy()[4].any()
    ids = np.array([[3, 5, 3, 7]])
    ours(ml.tensor(ids), labels=ml.tensor(ids)).loss.backward()
    theirs(torch.tensor(ids), labels=torch.tensor(ids)).loss.backward()
    assert not theirs.model.embed_tokens.weight.grad[3].any()
    assert not ours.model.embed_tokens.weight.grad.numpy()[3].any()


# ==================================================================================================
# Several adapters
# ==================================================================================================
def test_a_second_adapter_with_bias_is_refused_as_peft():
    for lib, model in ((peft, hf_model(transformers, TINY, dtype="float32")), (ml.lora, LlamaForCausalLM(TINY))):
        wrapped = lib.get_peft_model(model, lib.LoraConfig(r=2, target_modules=["q_proj"], bias="lora_only"))
        with pytest.raises(ValueError, match="LoraModel supports only 1 adapter with bias"):
            wrapped.add_adapter("other", lib.LoraConfig(r=2, target_modules=["q_proj"], bias="all"))
        assert list(wrapped.peft_config) == ["default"]
        wrapped.add_adapter("plain", lib.LoraConfig(r=2, target_modules=["q_proj"]))  # bias="none" is fine


@pytest.mark.parametrize("kinds", [("dora", "dora"), ("lora", "dora"), ("dora", "lora")])
def test_several_active_dora_adapters_as_peft(kinds):
    """PEFT's DoRA rescales the output so far, the adapters before it included (lora_dropout=0)."""
    theirs, ours = adapted_pair(r=2, lora_alpha=4, target_modules=["q_proj", "down_proj"], use_dora=kinds[0] == "dora")
    second = dict(r=2, lora_alpha=4, target_modules=["q_proj", "down_proj"], use_dora=kinds[1] == "dora")
    theirs.add_adapter("other", peft.LoraConfig(**second)), ours.add_adapter("other", LoraConfig(**second))
    torch.manual_seed(2)
    with torch.no_grad():
        for name, p in theirs.named_parameters():
            if ".other." in name:
                p.copy_(torch.randn_like(p) * 0.3 + (1.0 if "magnitude" in name else 0.0))
    ours.load_state_dict({k: v.detach().numpy() for k, v in theirs.state_dict().items()})
    for model in (theirs, ours):
        model.base_model.set_adapter(["default", "other"])
    np.testing.assert_allclose(logits_of(ours), logits_of(theirs), rtol=1e-4, atol=1e-5)


def test_two_active_adapters_with_modules_to_save_on_one_module_are_refused_as_peft():
    for lib, model in ((peft, hf_model(transformers, TINY, dtype="float32")), (ml.lora, LlamaForCausalLM(TINY))):
        config = dict(r=2, target_modules=["q_proj"], modules_to_save=["lm_head"])
        wrapped = lib.get_peft_model(model, lib.LoraConfig(**config))
        wrapped.add_adapter("other", lib.LoraConfig(**config))
        with pytest.raises(ValueError, match="Only one adapter can be set at a time for ModulesToSaveWrapper"):
            wrapped.base_model.set_adapter(["default", "other"])
        assert wrapped.active_adapters == ["default"]


def test_config_attributes_set_later_are_read_and_saved_as_transformers(saved, tmp_path):
    """model.config.use_cache = False (training scripts' line) and friends, read at forward time."""
    for load in (hf_load, LlamaForCausalLM.from_pretrained):
        model = load(saved).eval()
        ids = torch.tensor(IDS) if load is hf_load else ml.tensor(IDS)
        model.config.use_cache = False
        model.config.output_hidden_states = True
        model.config.my_note = "kept"
        with torch.no_grad():
            out = model(ids)
        assert out.past_key_values is None and len(out.hidden_states) == TINY.num_hidden_layers + 1
        saved_dict = model.config.to_dict()
        assert saved_dict["use_cache"] is False and saved_dict["my_note"] == "kept"


def test_tie_weights_as_transformers():
    fields = dict(vocab_size=37, hidden_size=16, intermediate_size=24, num_hidden_layers=1, num_attention_heads=4)
    theirs = transformers.LlamaForCausalLM(transformers.LlamaConfig(**fields, tie_word_embeddings=True))
    for lib, model in ((torch.nn, theirs), (ml.nn, LlamaForCausalLM(LlamaConfig(**fields, tie_word_embeddings=True)))):
        model.set_input_embeddings(lib.Embedding(37, 16))
        assert model.lm_head.weight is not model.model.embed_tokens.weight
        model.tie_weights()
        assert model.lm_head.weight is model.model.embed_tokens.weight


def test_from_pretrained_loading_options_as_transformers(saved, tmp_path):
    parent, child = os.path.split(saved)
    for load in (hf_load, LlamaForCausalLM.from_pretrained):
        model = load(parent, subfolder=child, cache_dir=str(tmp_path), token=None, force_download=False,
                     ignore_mismatched_sizes=False, quantization_config=None)
        np.testing.assert_allclose(logits_of(model), logits_of(hf_load(saved)), **FLOAT32_LOGITS)
        model, info = load(saved, output_loading_info=True, num_hidden_layers=1)
        assert set(info) >= {"missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs"}
        assert info["unexpected_keys"] == {k for k in hf_load(saved).state_dict() if k.startswith("model.layers.1.")}
        assert not info["missing_keys"] and not info["mismatched_keys"] and not info["error_msgs"]
    # (ignore_mismatched_sizes=True loads as transformers since round 14: tests/test_generation_fields_r14.py)
    for option in (dict(quantization_config={"load_in_4bit": True}), dict(variant="fp16")):
        with pytest.raises(NotImplementedError, match=next(iter(option))):
            LlamaForCausalLM.from_pretrained(saved, **option)


def test_peft_model_from_pretrained_and_load_adapter_hub_keywords_as_peft(saved, tmp_path):
    _, ours = adapted_pair(r=2, target_modules=["q_proj"])
    ours.save_pretrained(tmp_path / "adapters" / "one")
    options = dict(subfolder="one", revision="main", token=None, cache_dir=str(tmp_path / "cache"))
    results = []
    for lib, load in ((peft, hf_load), (ml.lora, LlamaForCausalLM.from_pretrained)):
        model = lib.PeftModel.from_pretrained(load(saved), str(tmp_path / "adapters"), **options)
        model.load_adapter(str(tmp_path / "adapters"), adapter_name="two", **options)
        assert sorted(model.peft_config) == ["default", "two"]
        results.append(logits_of(model))
    np.testing.assert_allclose(results[1], results[0], rtol=1e-4, atol=1e-5)


def test_config_from_dict_keywords_as_transformers():
    for cls in (transformers.LlamaConfig, LlamaConfig):
        config, unused = cls.from_dict({"hidden_size": 16, "num_attention_heads": 4}, num_hidden_layers=3, foo=1,
                                       return_unused_kwargs=True)
        assert config.num_hidden_layers == 3 and unused == {"foo": 1}
        assert not hasattr(cls.from_dict({"hidden_size": 16, "num_attention_heads": 4}, foo=1), "foo")
