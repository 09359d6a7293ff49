"""A PEFT user's first hour with minilora: LoraConfig's fields, TaskType and the model classes,
save_pretrained's keywords and model card, AutoPeftModelForCausalLM, and the rough edges around
several adapters and several wrappers (delete a merged adapter, wrap a model twice, odd adapter names).

Calls are written the way PEFT users write them (positional and keyword). The comparisons with PEFT
itself skip when peft is not installed; everything else runs without it."""
import dataclasses
import inspect
import json
import os
import types
import warnings

import numpy as np
import pytest

import background_runs
import minilora as ml
from minilora.lora import (AutoPeftModelForCausalLM, LoraConfig, PeftModel, PeftModelForCausalLM, TaskType,
                           VeraConfig, get_peft_model)
from minilora.models import BASE_NAME, LlamaConfig, LlamaForCausalLM, load_base

TINY = dict(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
IDS = np.random.default_rng(0).integers(0, TINY["vocab_size"], (2, 5))


def tiny_llama(seed=0):
    ml.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(**TINY), dtype="float64")


def config(**kw):
    return LoraConfig(**{"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"],
                         "init_lora_weights": False, **kw})


def logits(model):
    with ml.no_grad():
        return model(IDS).logits.numpy()


def saved_adapter(tmp_path, name, seed):
    """A folder holding a random LoRA adapter for ``tiny_llama()``, and that adapter's logits."""
    base = tiny_llama()
    ml.manual_seed(seed)  # the adapter's random init
    model = get_peft_model(base, config())
    model.save_pretrained(str(tmp_path / name))
    return str(tmp_path / name), logits(model)


def peft_or_skip():
    return pytest.importorskip("peft")


# ==================================================================================================
# LoraConfig: every PEFT field, PEFT's order; the unimplemented ones at their default only
# ==================================================================================================
def test_lora_config_has_peft_fields_in_peft_order():
    peft = peft_or_skip()
    from peft_versions import LORA_CONFIG_FIELDS_NEW_IN_022, lora_config_fields_as_022
    for ours, theirs in ((LoraConfig, peft.LoraConfig), (VeraConfig, peft.VeraConfig)):
        assert [f.name for f in dataclasses.fields(ours)] == \
            lora_config_fields_as_022([f.name for f in dataclasses.fields(theirs)])
    # every field passed by keyword at PEFT's own default value is accepted
    defaults = {f.name: getattr(peft.LoraConfig(), f.name) for f in dataclasses.fields(peft.LoraConfig)
                if f.name not in ("peft_type", "runtime_config", "peft_version")}
    cfg = LoraConfig(**{k: (sorted(v) if isinstance(v, set) else v) for k, v in defaults.items()})
    # the keys PEFT 0.22 writes, no more
    assert set(cfg.to_dict()) == set(peft.LoraConfig().to_dict()) | set(LORA_CONFIG_FIELDS_NEW_IN_022)
    assert cfg.to_dict()["peft_type"] == "LORA"


# (fan_in_fan_out=True is accepted as in PEFT, which warns and turns it off on Linear targets:
# tests/test_peft_conformance_r4.py)
# (lora_bias, trainable_token_indices, layer_replication, target_parameters: implemented, tests/test_peft_r6.py)
# (use_qalora, loftq_config, eva_config, corda_config, alora_invocation_tokens: tests/test_peft_inits_r12.py)
# (ensure_weight_tying: accepted where PEFT ties nothing, refused at get_peft_model where it would:
# tests/test_peft_fields_r13.py)
UNIMPLEMENTED = [("megatron_config", {"tp": 2}), ("use_bdlora", True)]


@pytest.mark.parametrize("field,value", UNIMPLEMENTED)
def test_unimplemented_field_refused_by_name_in_constructor_and_from_dict(field, value):
    with pytest.raises(NotImplementedError, match=field):
        LoraConfig(**{field: value})
    with pytest.raises(NotImplementedError, match=field):
        LoraConfig.from_dict({**LoraConfig().to_dict(), field: value})


def test_from_dict_and_constructor_agree():
    cfg = LoraConfig(r=16, lora_alpha=32, target_modules=["v_proj", "q_proj"], task_type=TaskType.CAUSAL_LM)
    assert LoraConfig.from_dict(json.loads(cfg.to_json_string())) == cfg
    with pytest.raises(ValueError, match="of type 'VERA'"):
        LoraConfig(peft_type="VERA")


def test_task_type_is_a_str_enum_as_in_peft():
    assert TaskType.CAUSAL_LM == "CAUSAL_LM" and isinstance(TaskType.CAUSAL_LM, str)
    cfg = LoraConfig(task_type=TaskType.CAUSAL_LM)
    assert cfg.task_type == "CAUSAL_LM" and json.loads(cfg.to_json_string())["task_type"] == "CAUSAL_LM"
    peft = pytest.importorskip("peft")
    assert [t.value for t in TaskType] == [t.value for t in peft.TaskType]
    assert LoraConfig(task_type=peft.TaskType.CAUSAL_LM).task_type == "CAUSAL_LM"


# ==================================================================================================
# The classes get_peft_model / PeftModel.from_pretrained return; AutoPeftModelForCausalLM
# ==================================================================================================
def test_task_type_picks_the_model_class_as_peft():
    assert type(get_peft_model(tiny_llama(), config(task_type="CAUSAL_LM"))) is PeftModelForCausalLM
    assert type(get_peft_model(tiny_llama(), config())) is PeftModel
    with pytest.raises(NotImplementedError, match="SEQ_2_SEQ_LM"):  # (SEQ_CLS: tests/test_hf_docs_r8.py)
        get_peft_model(tiny_llama(), config(task_type="SEQ_2_SEQ_LM"))


def test_peft_model_from_pretrained_returns_the_task_class(tmp_path):
    model = get_peft_model(tiny_llama(), config(task_type="CAUSAL_LM"))
    model.save_pretrained(str(tmp_path))
    loaded = PeftModel.from_pretrained(tiny_llama(), str(tmp_path))
    assert type(loaded) is PeftModelForCausalLM and not loaded.training
    np.testing.assert_array_equal(logits(loaded), logits(model))


def test_auto_peft_model_loads_the_shipped_base_by_its_stable_name(tmp_path):
    model = get_peft_model(load_base(), LoraConfig(r=2, task_type="CAUSAL_LM", init_lora_weights=False))
    model.save_pretrained(str(tmp_path))
    written = json.loads((tmp_path / "adapter_config.json").read_text())
    assert written["base_model_name_or_path"] == BASE_NAME
    loaded = AutoPeftModelForCausalLM.from_pretrained(str(tmp_path))
    assert type(loaded) is PeftModelForCausalLM
    np.testing.assert_array_equal(logits(loaded), logits(model))


def test_auto_peft_model_loads_a_base_folder_and_refuses_a_hub_name(tmp_path):
    tiny_llama().save_pretrained(str(tmp_path / "base"))
    model = get_peft_model(LlamaForCausalLM.from_pretrained(str(tmp_path / "base"), dtype="float64"), config())
    model.save_pretrained(str(tmp_path / "adapter"))
    loaded = AutoPeftModelForCausalLM.from_pretrained(str(tmp_path / "adapter"), dtype="float64")
    np.testing.assert_array_equal(logits(loaded), logits(model))
    path = tmp_path / "adapter" / "adapter_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "base_model_name_or_path": "meta-llama/x"}))
    with pytest.raises(FileNotFoundError, match="does not download"):
        AutoPeftModelForCausalLM.from_pretrained(str(tmp_path / "adapter"))


# ==================================================================================================
# save_pretrained: PEFT's keywords and positions, a model card
# ==================================================================================================
def test_save_pretrained_takes_peft_positional_arguments(tmp_path):
    model = get_peft_model(tiny_llama(), config())
    model.add_adapter("other", config())
    model.save_pretrained(str(tmp_path / "a"), True)  # PEFT's second argument: safe_serialization
    assert sorted(os.listdir(tmp_path / "a")) == ["README.md", "adapter_config.json", "adapter_model.safetensors",
                                                 "other"]
    model.save_pretrained(str(tmp_path / "b"), True, ["other"])  # then selected_adapters
    assert sorted(os.listdir(tmp_path / "b")) == ["README.md", "other"]
    model.save_pretrained(str(tmp_path / "c"), False)  # PEFT's adapter_model.bin (tests/test_saved_files_r19.py)
    assert sorted(os.listdir(tmp_path / "c" / "other")) == ["adapter_config.json", "adapter_model.bin"]
    with pytest.raises(TypeError, match="selected_adapters"):
        model.save_pretrained(str(tmp_path / "c"), selected_adapters="other")
    model.save_pretrained(str(tmp_path / "d"), is_main_process=False)  # another process saves
    assert not (tmp_path / "d").exists()


def test_model_card_as_peft_writes_it_and_a_users_card_is_kept(tmp_path):
    model = get_peft_model(load_base(), LoraConfig(r=2, task_type="CAUSAL_LM"))
    model.save_pretrained(str(tmp_path))
    card = (tmp_path / "README.md").read_text()
    assert card.startswith("---\n") and f"base_model: {BASE_NAME}\n" in card and "library_name: peft\n" in card
    assert "pipeline_tag: text-generation" in card and "- lora" in card
    (tmp_path / "README.md").write_text("my own card\n")
    model.save_pretrained(str(tmp_path))
    assert (tmp_path / "README.md").read_text() == "my own card\n"


def test_signatures_follow_peft():
    """PEFT's parameters, in PEFT's order (minilora may add keyword-only ones after them)."""
    peft = peft_or_skip()

    def names(fn):
        return [p.name for p in inspect.signature(fn).parameters.values()
                if p.kind in (p.POSITIONAL_OR_KEYWORD, p.POSITIONAL_ONLY)]
    pairs = [(PeftModel.save_pretrained, peft.PeftModel.save_pretrained),
             (PeftModel.from_pretrained, peft.PeftModel.from_pretrained),
             (PeftModel.load_adapter, peft.PeftModel.load_adapter),
             (PeftModel.delete_adapter, peft.PeftModel.delete_adapter),
             (get_peft_model, peft.get_peft_model),
             (AutoPeftModelForCausalLM.from_pretrained, peft.AutoPeftModelForCausalLM.from_pretrained),
             (PeftModel.__init__, peft.PeftModel.__init__),
             (PeftModel.add_adapter, peft.PeftModel.add_adapter),
             (PeftModel.set_adapter, peft.PeftModel.set_adapter),
             (LoraConfig.from_pretrained, peft.LoraConfig.from_pretrained),
             (ml.lora.get_peft_model_state_dict, peft.get_peft_model_state_dict),
             (ml.lora.set_peft_model_state_dict, peft.set_peft_model_state_dict)]
    from peft_versions import peft_parameters_as_022
    for ours, theirs in pairs:
        assert names(ours) == peft_parameters_as_022(theirs.__qualname__, names(theirs)), ours.__qualname__


def test_lora_config_save_and_from_pretrained_as_peft(tmp_path):
    """LoraConfig.save_pretrained was missing and from_pretrained took no subfolder (PEFT has both)."""
    peft = peft_or_skip()
    ours = config(r=6, lora_dropout=0.1)
    ours.save_pretrained(str(tmp_path / "ours"))
    theirs = peft.LoraConfig.from_pretrained(str(tmp_path / "ours"))
    assert (theirs.r, theirs.lora_alpha, theirs.lora_dropout, sorted(theirs.target_modules)) == (6, 8, 0.1, ["q_proj", "v_proj"])
    peft.LoraConfig(r=3, target_modules=["k_proj"]).save_pretrained(str(tmp_path / "theirs" / "second"))
    back = LoraConfig.from_pretrained(str(tmp_path / "theirs"), subfolder="second")
    assert back.r == 3 and list(back.target_modules) == ["k_proj"]


def test_state_dict_helpers_take_peft_arguments_and_refuse_what_they_do_not_do(tmp_path):
    """get_/set_peft_model_state_dict in PEFT's order (adapter_name was the second positional argument,
    where PEFT has state_dict); ignore_mismatched_sizes in PEFT's position (test_peft_offpath_r10: what it skips)."""
    from minilora.lora import get_peft_model_state_dict, set_peft_model_state_dict
    model = get_peft_model(tiny_llama(), config())
    model.add_adapter("other", config(r=2))
    state = get_peft_model_state_dict(model, None, "other", True)  # PEFT's positions; nothing to unwrap
    assert {v.shape[0] for k, v in state.items() if "lora_A" in k} == {2}
    doubled = get_peft_model_state_dict(model, {k: v * 2 for k, v in model.state_dict().items()}, "other")
    assert sorted(doubled) == sorted(state)  # the values come from the state_dict given (PEFT's state_dict=)
    for key, value in state.items():
        np.testing.assert_array_equal(doubled[key].numpy(), 2 * value.numpy())
    set_peft_model_state_dict(model, state, "other", True)  # nothing mismatched: nothing skipped
    set_peft_model_state_dict(model, state, "other")


def test_minilora_load_takes_torch_loads_arguments(tmp_path):
    path = str(tmp_path / "w.safetensors")
    ml.save({"w": ml.tensor([1.0, 2.0])}, path)
    for kw in (dict(weights_only=True), dict(weights_only=None), dict(map_location="cpu", weights_only=True)):
        assert ml.load(path, **kw)["w"].tolist() == [1.0, 2.0]
    assert ml.load(path, weights_only=False)["w"].tolist() == [1.0, 2.0]  # (a safetensors file: nothing to unpickle)
    with pytest.raises(NotImplementedError, match="mmap=True"):
        ml.load(path, mmap=True)
    torch = pytest.importorskip("torch")
    ours = [p.name for p in inspect.signature(ml.load).parameters.values()]
    assert ours == [p for p in inspect.signature(torch.load).parameters if p != "pickle_load_args"]


def test_adapter_saved_by_minilora_loads_in_peft_with_positional_calls(tmp_path):
    peft = peft_or_skip()
    transformers = pytest.importorskip("transformers")
    torch = pytest.importorskip("torch")
    base = tiny_llama()
    base.save_pretrained(str(tmp_path / "base"))
    model = get_peft_model(LlamaForCausalLM.from_pretrained(str(tmp_path / "base"), dtype="float64"),
                           config(task_type=TaskType.CAUSAL_LM))
    model.save_pretrained(str(tmp_path / "adapter"), True)
    theirs = peft.AutoPeftModelForCausalLM.from_pretrained(str(tmp_path / "adapter"), torch_dtype=torch.float64)
    assert type(theirs).__name__ == type(model).__name__ == "PeftModelForCausalLM"
    assert isinstance(theirs.get_base_model(), transformers.LlamaForCausalLM)
    with torch.no_grad():
        expected = theirs(torch.as_tensor(IDS)).logits.numpy()
    # (stock transformers keeps RMSNorm and softmax in float32, hence the tolerance)
    np.testing.assert_allclose(logits(model), expected, rtol=1e-5, atol=1e-6)


def test_adapter_saved_by_peft_loads_with_minilora_auto_class(tmp_path):
    """PEFT records the transformers model's folder as base_model_name_or_path; minilora's
    AutoPeftModelForCausalLM follows it and computes PEFT's logits."""
    peft = peft_or_skip()
    transformers = pytest.importorskip("transformers")
    torch = pytest.importorskip("torch")
    from test_llama import hf_model
    base_dir = str(tmp_path / "base")
    hf_model(transformers, LlamaConfig(**TINY)).save_pretrained(base_dir)
    reference = transformers.AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float64)
    theirs = peft.get_peft_model(reference, peft.LoraConfig(r=4, lora_alpha=8, init_lora_weights=False,
                                                            target_modules=["q_proj", "v_proj"],
                                                            task_type=peft.TaskType.CAUSAL_LM))
    theirs.save_pretrained(str(tmp_path / "adapter"))
    ours = AutoPeftModelForCausalLM.from_pretrained(str(tmp_path / "adapter"), dtype="float64")
    assert type(ours) is PeftModelForCausalLM and not ours.training
    theirs.eval()
    with torch.no_grad():
        expected = theirs(torch.as_tensor(IDS)).logits.numpy()
    np.testing.assert_allclose(logits(ours), expected, rtol=1e-5, atol=1e-6)


# ==================================================================================================
# autocast_adapter_dtype: float16 adapters become float32, as PEFT makes them
# ==================================================================================================
def peft_fp16_pair(autocast, tmp_path, use_dora=False):
    """The same float16 model in transformers + PEFT and in minilora, with PEFT's adapter saved."""
    pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    peft = peft_or_skip()
    import torch

    from test_llama import hf_model
    theirs = hf_model(transformers, LlamaConfig(**TINY), dtype="float32")
    ours = LlamaForCausalLM(LlamaConfig(**TINY), dtype="float16")
    ours.load_state_dict(theirs.state_dict())
    theirs = theirs.to(torch.float16)
    torch.manual_seed(1)
    theirs = peft.get_peft_model(theirs, peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                                         init_lora_weights=False, use_dora=use_dora),
                                 autocast_adapter_dtype=autocast)
    theirs.save_pretrained(str(tmp_path / "adapter"))
    return theirs, ours, str(tmp_path / "adapter")


def adapter_dtypes(model):
    return {str(p.dtype).replace("torch.", "") for n, p in model.named_parameters() if "lora_" in n}


@pytest.mark.parametrize("use_dora", [False, True], ids=["lora", "dora"])
@pytest.mark.parametrize("autocast", [True, False])
def test_autocast_adapter_dtype_as_peft_on_a_float16_model(autocast, use_dora, tmp_path):
    """PEFT makes a float16 model's adapters float32 unless autocast_adapter_dtype=False; minilora used to
    accept the argument and keep float16 either way."""
    import torch
    theirs, ours, folder = peft_fp16_pair(autocast, tmp_path, use_dora)
    expected = {"float32"} if autocast else {"float16"}
    assert adapter_dtypes(theirs) == expected
    assert adapter_dtypes(get_peft_model(LlamaForCausalLM(LlamaConfig(**TINY), dtype="float16"), config(),
                                         autocast_adapter_dtype=autocast)) == expected
    loaded = PeftModel.from_pretrained(ours, folder, autocast_adapter_dtype=autocast)
    assert adapter_dtypes(loaded) == expected
    loaded.load_adapter(folder, "second", autocast_adapter_dtype=autocast)
    assert adapter_dtypes(loaded) == expected
    with torch.no_grad():
        want = theirs(torch.as_tensor(IDS)).logits.float().numpy()
    got = logits(loaded)
    assert got.dtype == np.float16  # the base keeps its dtype; only the adapter branch is float32
    np.testing.assert_allclose(got.astype(np.float32), want, atol=2e-2, rtol=2e-2)


@pytest.mark.parametrize("kind", ["vera", "embedding", "adalora"])
def test_autocast_adapter_dtype_for_every_adapter_kind_as_peft(kind):
    """PEFT upcasts every tuner's float16 adapter tensors (VeRA's shared projections too); the layers
    then compute the adapter's term in float32 and hand the base's dtype on."""
    pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    peft = peft_or_skip()
    import torch

    from minilora.lora import AdaLoraConfig
    make = {"vera": lambda lib: lib.VeraConfig(r=2, target_modules=["q_proj"]),
            "embedding": lambda lib: lib.LoraConfig(r=2, target_modules=["embed_tokens", "q_proj"]),
            "adalora": lambda lib: lib.AdaLoraConfig(r=2, target_modules=["q_proj"], total_step=10)}[kind]
    lib = types.SimpleNamespace(VeraConfig=VeraConfig, LoraConfig=LoraConfig, AdaLoraConfig=AdaLoraConfig)

    def dtypes(model):
        adapter = [t for n, t in [*model.named_parameters(), *model.named_buffers()]
                   if any(k in n for k in ("lora_", "vera_"))]
        return sorted({str(t.dtype).replace("torch.", "") for t in adapter})
    theirs = peft.get_peft_model(transformers.LlamaForCausalLM(transformers.LlamaConfig(**TINY)).to(torch.float16),
                                 make(peft))
    ours = get_peft_model(LlamaForCausalLM(LlamaConfig(**TINY), dtype="float16"), make(lib))
    assert dtypes(ours) == dtypes(theirs) == ["float32"]
    out = ours(IDS, labels=IDS)
    out.loss.backward()
    assert out.logits.dtype == np.float16 and all(p.grad is not None for p in ours.parameters() if p.requires_grad)


def test_autocast_adapter_dtype_trains_float32_adapters_beside_float16_weights():
    model = get_peft_model(LlamaForCausalLM(LlamaConfig(**TINY), dtype="float16"), config())
    model.train()
    model(IDS, labels=IDS).loss.backward()
    grads = {str(p.grad.dtype) for n, p in model.named_parameters() if p.requires_grad}
    assert grads == {"float32"}
    with pytest.raises(TypeError, match="autocast_adapter_dtype must be True or False"):
        get_peft_model(tiny_llama(), config(), autocast_adapter_dtype="yes")


# ==================================================================================================
# Several adapters, several wrappers
# ==================================================================================================
def test_delete_of_a_merged_adapter_is_refused_with_peft_message():
    base = logits(tiny_llama())
    model = get_peft_model(tiny_llama(), config())
    model.merge_adapter()
    with pytest.raises(ValueError, match=r"Cannot delete adapter\(s\) \['default'\] while they are merged"):
        model.delete_adapter("default")
    model.unmerge_adapter()
    model.delete_adapter("default")
    np.testing.assert_allclose(logits(model), base, rtol=1e-12, atol=1e-12)


def test_set_adapter_makes_the_adapter_trainable_unless_inference_mode_as_peft(tmp_path):
    """PEFT 0.21: set_adapter(name) unfreezes that adapter, even one loaded for inference;
    inference_mode=True keeps it frozen (minilora kept a loaded adapter frozen and had no inference_mode)."""
    peft = peft_or_skip()
    pytest.importorskip("transformers")
    from test_llama import hf_model
    import transformers

    def trainable(model):
        return sorted({n.split(".")[-2] for n, p in model.named_parameters() if p.requires_grad})
    folder, _ = saved_adapter(tmp_path, "a", seed=1)
    theirs = peft.PeftModel.from_pretrained(hf_model(transformers, LlamaConfig(**TINY)), folder, adapter_name="a")
    ours = PeftModel.from_pretrained(tiny_llama(), folder, adapter_name="a")
    assert trainable(theirs) == trainable(ours) == []
    for model in (theirs, ours):
        model.load_adapter(folder, "b")
    for model in (theirs, ours):
        model.set_adapter("b")
    assert trainable(theirs) == trainable(ours) == ["b"]
    for model in (theirs, ours):
        model.set_adapter("a", inference_mode=True)
    assert trainable(theirs) == trainable(ours) == []


def test_set_adapter_on_a_merged_model_warns_and_unmerges_as_peft():
    model = get_peft_model(tiny_llama(), config())
    model.add_adapter("other", config())
    only_default = logits(model)
    model.merge_adapter()
    with pytest.warns(UserWarning, match="Adapter cannot be set when the model is merged"):
        model.set_adapter("other")
    model.set_adapter("default")
    np.testing.assert_allclose(logits(model), only_default, rtol=1e-10, atol=1e-12)


def test_get_peft_model_twice_warns_and_replaces_the_adapter_as_peft():
    """(Refused before r11; PEFT's second tuner shares the first's configs and replaces the adapter in the
    layers: tests/test_peft_hf_offpath_r11.py compares it with PEFT.)"""
    base = tiny_llama()
    first = get_peft_model(base, config())
    with pytest.warns(UserWarning, match="modify a model with PEFT for a second time"):
        second = get_peft_model(base, config(r=2))
    assert first.peft_config is second.peft_config and first.peft_config["default"].r == 2
    np.testing.assert_array_equal(logits(first), logits(second))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        get_peft_model(tiny_llama(), config())  # a fresh model: no warning


def test_from_pretrained_twice_on_one_base_keeps_each_model_on_its_adapter(tmp_path):
    dir_a, logits_a = saved_adapter(tmp_path, "a", seed=1)
    dir_b, logits_b = saved_adapter(tmp_path, "b", seed=2)
    assert not np.allclose(logits_a, logits_b)
    base = tiny_llama()
    model_a = PeftModel.from_pretrained(base, dir_a)
    np.testing.assert_array_equal(logits(model_a), logits_a)
    with pytest.warns(UserWarning):
        model_b = PeftModel.from_pretrained(base, dir_b, "b")
    np.testing.assert_array_equal(logits(model_b), logits_b)
    np.testing.assert_array_equal(logits(model_a), logits_a)  # not the second adapter
    np.testing.assert_array_equal(logits(model_b), logits_b)
    merged = model_a.merge_and_unload()  # merges ITS adapter, even though model_b ran last
    np.testing.assert_allclose(logits(merged), logits_a, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", ["../escape", "/tmp/escape", "a/b", "a\\b", "a.b", "..", ""])
def test_adapter_names_that_are_paths_are_refused(tmp_path, name):
    model = get_peft_model(tiny_llama(), config())
    with pytest.raises((ValueError, TypeError), match="adapter name"):
        model.add_adapter(name, config())
    with pytest.raises((ValueError, TypeError), match="adapter name"):
        get_peft_model(tiny_llama(), config(), adapter_name=name)
    model.save_pretrained(str(tmp_path / "out"))
    assert sorted(os.listdir(tmp_path)) == ["out"]


# ==================================================================================================
# The minilora command: a user's mistake is one line and exit status 2, never a traceback
# ==================================================================================================
MISTAKES = [(["train", "--device", "tpu"], "train", "--device"),
            (["generate", "--model", "/no/such/folder", "hi"], "generate", "/no/such/folder"),
            (["generate", "--adapter", "/no/such/adapter", "hi"], "generate", "adapter_config.json"),
            (["info", "--model", "/no/such/folder"], "info", "/no/such/folder"),
            (["demo", "--task", "no-such-task"], "demo", "no-such-task"),
            (["demo", "--r", "0"], "demo", "--r"),
            (["train", "--r", "0"], "train", "--r")]


def minilora_commands(*commands):
    """[(exit code, stdout, stderr)] of ``python -m minilora *argv`` for each argv of ``commands``, one after the
    other in one new folder: a background run (tests/background_runs.py), behind the session's others, on the
    core the main process leaves idle."""
    import sys
    import tempfile
    with tempfile.TemporaryDirectory(prefix="minilora-cli-") as folder:
        return [(done.returncode, done.stdout, done.stderr) for done in (
            background_runs.run_process([sys.executable, "-m", "minilora", *argv], cwd=folder, timeout=300)
            for argv in commands)]


CLI_TRAIN = ["train", "--eval-n", "2", "--eval-every", "2", "--no-progress", "--out", "run", "--r", "2"]
CLI_TRAIN_RUNS = ((*CLI_TRAIN, "--steps", "2"), (*CLI_TRAIN, "--steps", "4", "--resume", "--seed", "7"),
                  (*CLI_TRAIN[:-1], "4", "--steps", "4", "--resume"), (*CLI_TRAIN, "--steps", "4", "--resume"))


def _cli_runs(items):
    """{key: the commands} of the selected CLI tests."""
    runs = {("cli", tuple(item.callspec.params["argv"])): (tuple(item.callspec.params["argv"]),) for item in
            background_runs.selected(items, __name__, "test_cli_mistake_is_one_line_and_status_2")}
    if background_runs.selected(items, __name__, "test_cli_train_no_progress_lines_resume_message_and_run_options"):
        runs["cli train"] = CLI_TRAIN_RUNS
    return runs


def start_background_runs(items, runs):
    for key, commands in _cli_runs(items).items():
        runs.submit(key, __name__, "minilora_commands", *commands)


def cli_result(runs, key, *commands):
    """The background run's results (a no-op submit after start_background_runs)."""
    runs.submit(key, __name__, "minilora_commands", *commands)
    return runs.result(key)


@pytest.mark.parametrize("argv,command,named", MISTAKES, ids=[" ".join(m[0]) for m in MISTAKES])
def test_cli_mistake_is_one_line_and_status_2(argv, command, named, background):
    [(returncode, _, stderr)] = cli_result(background, ("cli", tuple(argv)), tuple(argv))
    assert returncode == 2, stderr
    assert "Traceback" not in stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith(f"minilora {command}: error: ") and named in last, last


def test_cli_uses_peft_option_names_with_rank_as_alias():
    from minilora.cli import build_parser
    for command in ("demo", "train"):
        parser = build_parser(command)
        for flag in ("--r", "--rank"):
            args = parser.parse_args([command, flag, "4", "--lora-alpha", "3"])
            assert (getattr(args, "rank", None) or getattr(args, "r", None)) == 4 and args.lora_alpha == 3


def _counting_rows(n=24, length=10):
    return np.array([[(i + j) % 13 + 3 for j in range(length)] for i in range(n)], dtype=np.int64)


def test_ctrl_c_finishes_the_step_checkpoints_it_and_resume_continues_identically(tmp_path, python_sigint):
    """The first Ctrl-C (SIGINT) stops train() after the step in progress, with that step
    checkpointed; resuming gives the same losses as a run that was never interrupted."""
    import signal

    from minilora.train import TrainingInterrupted, load_training_state, train
    rows, kw = _counting_rows(), dict(batch_size=8, lr=1e-2, warmup_steps=1, progress=False)
    straight = train(tiny_llama(), rows, steps=5, **kw)

    def press_ctrl_c_at_step_2(model):  # eval_fn runs at the end of a step: the signal lands mid-run
        if len(interrupted.losses) == 1:
            signal.raise_signal(signal.SIGINT)
        interrupted.losses.append(None)
        return {}
    interrupted = types.SimpleNamespace(losses=[])
    with pytest.raises(TrainingInterrupted) as info:
        train(tiny_llama(), rows, steps=5, eval_every=1, eval_fn=press_ctrl_c_at_step_2,
              out_dir=str(tmp_path), **kw)
    assert info.value.step == 2 and isinstance(info.value, KeyboardInterrupt)
    assert load_training_state(info.value.checkpoint)["step"] == 2
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handler is put back
    resumed = train(tiny_llama(seed=5), rows, steps=5, out_dir=str(tmp_path), resume=True, **kw)
    assert resumed.losses == straight.losses


def test_cli_train_no_progress_lines_resume_message_and_run_options(background):
    first, other, wider, resumed = cli_result(background, "cli train", *CLI_TRAIN_RUNS)
    assert first[0] == 0, first[2]
    assert "step 2/2  loss" in first[1] and "step 2  accuracy" in first[1]  # a line per log and eval
    assert "before:" in first[1]
    assert other[0] == 2 and "Traceback" not in other[2]
    assert "started with --seed 0, not --seed 7" in other[2]
    assert wider[0] == 2 and "started with --r 2, not --r 4" in wider[2]
    assert resumed[0] == 0, resumed[2]
    assert "resume: continuing run from step 2 of 4" in resumed[1]
    assert "before:" not in resumed[1]  # the base model is not evaluated again
    assert "step 4/4  loss" in resumed[1]


# ==================================================================================================
# transformers' names on the model: from_pretrained's dtype, outputs, embeddings, generate
# ==================================================================================================
def test_from_pretrained_dtype_torch_dtype_and_auto(tmp_path):
    tiny_llama().save_pretrained(str(tmp_path))  # float64 weights; config.json records the dtype
    assert LlamaForCausalLM.from_pretrained(str(tmp_path), dtype="float32").dtype == np.float32
    assert LlamaForCausalLM.from_pretrained(str(tmp_path), torch_dtype="float32").dtype == np.float32
    assert LlamaForCausalLM.from_pretrained(str(tmp_path), dtype="auto").dtype == np.float64
    with pytest.raises(ValueError, match="disagree"):
        LlamaForCausalLM.from_pretrained(str(tmp_path), dtype="float64", torch_dtype="float16")


def test_outputs_index_as_transformers_model_outputs():
    model = tiny_llama()
    with_loss, without = model(IDS, labels=IDS), model(IDS, None)  # second positional: attention_mask
    assert with_loss[0] is with_loss.loss and with_loss[1] is with_loss["logits"] is with_loss.logits
    assert without[0] is without.logits and without.keys() == ["logits", "cache"]  # (config.use_cache, as transformers)
    assert without[1] is without.past_key_values is without["past_key_values"]
    with pytest.raises(KeyError, match="loss"):
        without["loss"]


def test_embedding_accessors_and_resize():
    model = tiny_llama()
    assert model.get_input_embeddings() is model.model.embed_tokens and model.get_output_embeddings() is model.lm_head
    before = logits(model)
    model.resize_token_embeddings(70)
    assert model.config.vocab_size == 70 and model.get_output_embeddings().weight.shape == (70, TINY["hidden_size"])
    np.testing.assert_array_equal(logits(model)[..., :64], before)  # old tokens' logits unchanged
    model.get_input_embeddings().weight.requires_grad_(False)
    model.enable_input_require_grads()
    assert model(IDS).logits.requires_grad  # a graph through frozen embeddings (checkpointing + LoRA)


@pytest.mark.parametrize("options", [dict(max_length=9), dict(max_new_tokens=5, repetition_penalty=1.5),
                                     dict(max_new_tokens=4, eos_token_id=[7, 11], pad_token_id=0)],
                         ids=["max_length", "repetition_penalty", "eos_list"])
def test_greedy_generate_options_match_transformers(options):
    pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    import torch

    from test_llama import hf_model
    theirs = hf_model(transformers, LlamaConfig(**TINY))
    ours = LlamaForCausalLM(LlamaConfig(**TINY), dtype="float64")
    ours.load_state_dict(theirs.state_dict())
    expected = theirs.generate(torch.as_tensor(IDS), do_sample=False, **options).numpy()
    got = ours.generate(IDS, **options).numpy()
    np.testing.assert_array_equal(got, expected)


LENGTHS = [dict(), dict(max_new_tokens=0), dict(max_new_tokens=-1), dict(max_length=5), dict(max_length=3),
           dict(max_length=0), dict(max_length=8), dict(max_new_tokens=2, max_length=3)]


@pytest.mark.parametrize("options", LENGTHS, ids=[",".join(f"{k}={v}" for k, v in o.items()) or "no-length"
                                                 for o in LENGTHS])
def test_generate_lengths_and_refusals_match_transformers(options):
    """transformers 5: 20 NEW tokens by default (4.x counted the prompt in), max_new_tokens < 1 and a
    max_length the prompt already fills are ValueErrors (minilora used to return the prompt)."""
    pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    import torch

    from test_llama import hf_model
    theirs = hf_model(transformers, LlamaConfig(**TINY))
    ours = LlamaForCausalLM(LlamaConfig(**TINY), dtype="float64")
    ours.load_state_dict(theirs.state_dict())
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            expected = theirs.generate(torch.as_tensor(IDS), do_sample=False, **options).numpy()
    except ValueError:
        with pytest.raises(ValueError, match="`max_new_tokens` must be greater than 0|but `max_length` is set to"):
            ours.generate(IDS, **options)
        return
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = ours.generate(IDS, **options).numpy()
    np.testing.assert_array_equal(got, expected)
    if not options:  # transformers' warning about its default length, in our words
        assert any("max_new_tokens" in str(w.message) for w in caught)


GENERATION_CONFIGS = [dict(max_length=12, eos_token_id=[7, 11], pad_token_id=0, repetition_penalty=1.3),
                      dict(max_new_tokens=6, do_sample=False, num_beams=1, transformers_version="5.0.0")]


@pytest.mark.parametrize("file", GENERATION_CONFIGS, ids=["length-eos-penalty", "new-tokens"])
@pytest.mark.parametrize("call", [dict(), dict(max_new_tokens=4, repetition_penalty=1.0)], ids=["defaults", "override"])
def test_generation_config_json_is_used_as_transformers_uses_it(tmp_path, file, call):
    """A model folder's generation_config.json sets generate()'s defaults (the call's options win), as in
    transformers; minilora used to ignore the file (another length, other end-of-sequence ids)."""
    pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    import torch

    from test_llama import hf_model
    theirs = hf_model(transformers, LlamaConfig(**TINY))
    theirs.generation_config = transformers.GenerationConfig(**file)
    theirs.save_pretrained(str(tmp_path))
    ours = LlamaForCausalLM.from_pretrained(str(tmp_path), dtype="float64")
    theirs = transformers.LlamaForCausalLM.from_pretrained(str(tmp_path), dtype=torch.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = theirs.generate(torch.as_tensor(IDS), **call).numpy()
        got = ours.generate(IDS, **call).numpy()
    np.testing.assert_array_equal(got, expected)
    ours.save_pretrained(str(tmp_path / "again"))  # and it is written back for transformers to read
    assert transformers.GenerationConfig.from_pretrained(str(tmp_path / "again")).to_diff_dict().items() >= \
        {k: v for k, v in file.items() if k != "transformers_version"}.items()


def test_generation_config_sampling_defaults_and_refusals():
    model = tiny_llama()
    greedy = model.generate(IDS, max_new_tokens=5).numpy()
    model.generation_config.do_sample, model.generation_config.top_k = True, 1  # as a chat model's file would
    np.testing.assert_array_equal(model.generate(IDS, max_new_tokens=5, seed=0).numpy(), greedy)  # top-k 1: argmax
    with pytest.raises(ValueError, match="do not support `num_return_sequences` different than 1"):
        model.generate(IDS, max_new_tokens=2, do_sample=False, num_return_sequences=2)  # the call wins
    model.generation_config = ml.generate.GenerationConfig(num_beam_groups=2, num_beams=4)
    with pytest.raises(ValueError, match=r"Group Beam Search requires `trust_remote_code=True`"):  # (transformers')
        model.generate(IDS, max_new_tokens=2)
    model.generation_config.other.pop("num_beam_groups")
    model.generate(IDS, max_new_tokens=2)  # beam search (tests/test_serve_cli_r4.py)


def test_sampling_options_given_to_greedy_decoding_are_warned_about():
    """transformers warns that temperature/top_k/top_p do nothing without do_sample=True; so do we."""
    model = tiny_llama()
    with pytest.warns(UserWarning, match=r"temperature=0.7, top_k=5 only apply to sampling"):
        model.generate(IDS, max_new_tokens=2, temperature=0.7, top_k=5)
    mask = ml.ones(*IDS.shape, dtype=ml.int64)  # (a batch without a mask or pad id gets transformers' own warning)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the defaults, or None, say nothing
        model.generate(IDS, attention_mask=mask, max_new_tokens=2, temperature=1.0, top_k=50, top_p=1.0)
        model.generate(IDS, attention_mask=mask, max_new_tokens=2, top_k=None, top_p=None)
        model.generate(IDS, attention_mask=mask, max_new_tokens=2, do_sample=True, temperature=0.7, top_k=5, seed=0)


def test_generate_defaults_sampling_options_and_streamer(capsys):
    from minilora.generate import TextStreamer
    from minilora.tokenizer import ByteTokenizer
    model = load_base()
    tok = ByteTokenizer()
    ids = tok("The capital of", return_tensors="np")["input_ids"]
    with pytest.warns(UserWarning, match="max_new_tokens"):  # transformers 5's default: 20 new tokens
        assert model.generate(ids).shape == (1, ids.shape[1] + 20)
    assert model.generate(ids, do_sample=True, num_return_sequences=3, max_new_tokens=4, seed=0).shape == (3, 19)
    with pytest.raises(ValueError, match="num_return_sequences"):
        model.generate(ids, num_return_sequences=2, max_new_tokens=2)
    with pytest.raises(ValueError, match="max_new_tokens"):
        model.generate(ids, max_new_tokens=-1)
    with pytest.raises(ValueError, match="integers"):
        model.generate(ids.astype(float), max_new_tokens=1)
    out = model.generate(ids, max_new_tokens=12, streamer=TextStreamer(tok, skip_prompt=True, skip_special_tokens=True))
    assert capsys.readouterr().out == tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True) + "\n"
    with pytest.warns(UserWarning, match="max_position_embeddings"):
        model.generate(ids, max_new_tokens=model.config.max_position_embeddings)
