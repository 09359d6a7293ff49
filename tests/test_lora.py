"""minilora.lora without any reference library: configs, injection and names, freezing, the LoRA /
DoRA / VeRA layers, merging, several adapters, per-sample adapters (BGMV) and adapter files.
(The comparisons with PEFT itself are in test_lora_interop.py.)"""
import json
import os

import numpy as np
import pytest

import minilora as ml
from minilora import nn, ops
from minilora.lora import (BASE_ADAPTER, AdapterMismatchError, LoraConfig, PeftModel, VeraConfig,
                           get_peft_model)
from minilora.lora import Linear as LoraLinear
from minilora.models import LlamaConfig, LlamaForCausalLM
from minilora.testing import assert_close, grad_check

TINY = dict(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)


def tiny_llama(dtype="float64", seed=0, **overrides):
    ml.manual_seed(seed)
    model = LlamaForCausalLM(LlamaConfig(**{**TINY, **overrides}), dtype=dtype)
    rng = np.random.default_rng(seed)
    with ml.no_grad():  # weights well away from zero, so every adapter visibly changes the output
        for name, p in model.named_parameters():
            if not name.endswith("norm.weight"):
                p.copy_(ml.tensor(0.3 * rng.standard_normal(p.shape)))
    return model


def ids(batch=3, seq=5, seed=0):
    return np.random.default_rng(seed).integers(0, TINY["vocab_size"], (batch, seq))


def logits(model, input_ids, **kwargs):
    with ml.no_grad():
        return model(input_ids, **kwargs).logits.numpy()


def lora(model, adapter="default", **kw):
    cfg = LoraConfig(**{"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"],
                        "init_lora_weights": False, **kw})
    return get_peft_model(model, cfg, adapter_name=adapter)


# ==================================================================================================
# LoraConfig
# ==================================================================================================
@pytest.mark.parametrize("kwargs, message", [
    (dict(r=0), "positive integer"), (dict(r=2.5), "positive integer"), (dict(r=True), "positive integer"),
    (dict(lora_dropout=1.5), r"\[0, 1\]"), (dict(lora_dropout=-0.1), r"\[0, 1\]"),
    (dict(bias="some"), "bias must be one of"), (dict(init_lora_weights="loftq"), "`loftq_config` must be specified"),
    (dict(init_lora_weights="loftq", loftq_config={"loftq_bits": 4}), "not implemented"),
    (dict(lora_alpha="16"), "finite number"), (dict(target_modules=3), "regex string or a list"),
    (dict(target_modules="q.*", layers_to_transform=[0]), "`target_modules` is a str"),
    (dict(layers_pattern="layers"), "`layers_to_transform` must also be specified"), (dict(rank_pattern={"q": 0}), "positive"),
    (dict(task_type="CHAT"), "task_type"), (dict(use_dora="yes"), "True or False"),
])
def test_config_refuses_invalid_values(kwargs, message):
    with pytest.raises((ValueError, TypeError), match=message):
        LoraConfig(**kwargs)


def test_config_dict_round_trip_and_peft_keys():
    cfg = LoraConfig(r=16, lora_alpha=32, target_modules={"v_proj", "q_proj"}, use_rslora=True,
                     rank_pattern={"q_proj": 8}, layers_to_transform=[0, 1], task_type="CAUSAL_LM")
    d = cfg.to_dict()
    assert d["peft_type"] == "LORA" and d["target_modules"] == ["q_proj", "v_proj"]
    assert d["fan_in_fan_out"] is False and d["loftq_config"] == {} and d["megatron_core"] == "megatron.core"
    assert LoraConfig.from_dict(json.loads(cfg.to_json_string())) == cfg
    with pytest.raises(NotImplementedError, match="megatron_config"):  # a PEFT field minilora does not implement
        LoraConfig.from_dict({**d, "megatron_config": {"tp": 2}})
    with pytest.warns(UserWarning, match="newer_key"):
        LoraConfig.from_dict({**d, "newer_key": 1})
    with pytest.raises(ValueError, match="of type 'VERA'"):
        LoraConfig.from_dict(VeraConfig(target_modules=["q_proj"]).to_dict())


def test_scaling_plain_and_rslora():
    assert LoraConfig(r=16, lora_alpha=32).scaling(16, 32) == 2.0
    assert LoraConfig(r=16, lora_alpha=32, use_rslora=True).scaling(16, 32) == 8.0


# ==================================================================================================
# Injection: which modules, which names, what trains
# ==================================================================================================
def adapted(peft_model):
    return sorted(n for n, m in peft_model.get_base_model().named_modules() if isinstance(m, LoraLinear))


def test_names_are_peft_names_and_only_lora_trains():
    model = lora(tiny_llama())
    names = dict(model.named_parameters())
    assert "base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight" in names
    assert "base_model.model.model.layers.1.self_attn.v_proj.lora_B.default.weight" in names
    assert "base_model.model.model.layers.0.self_attn.q_proj.base_layer.weight" in names
    trainable = {n for n, p in names.items() if p.requires_grad}
    assert trainable == {n for n in names if ".lora_A.default." in n or ".lora_B.default." in n}
    assert len(trainable) == 8
    assert names["base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight"].shape == (4, 16)
    assert names["base_model.model.model.layers.0.self_attn.v_proj.lora_B.default.weight"].shape == (8, 4)


def test_print_trainable_parameters_prints_peft_line(capsys):
    model = lora(tiny_llama())
    base = 64 * 16 * 2 + 2 * (16 * 16 * 2 + 16 * 8 * 2 + 16 * 32 * 3 + 2 * 16) + 16
    trainable = 2 * (4 * 16 + 16 * 4 + 4 * 16 + 8 * 4)
    assert model.get_nb_trainable_parameters() == (trainable, base + trainable) == (448, 7184)
    model.print_trainable_parameters()
    assert capsys.readouterr().out == "trainable params: 448 || all params: 7,184 || trainable%: 6.2361\n"


@pytest.mark.parametrize("targets, expected", [
    (["q_proj"], ["model.layers.0.self_attn.q_proj", "model.layers.1.self_attn.q_proj"]),
    ("model\\.layers\\.1\\..*_proj", [f"model.layers.1.{m}" for m in (
        "mlp.down_proj", "mlp.gate_proj", "mlp.up_proj", "self_attn.k_proj", "self_attn.o_proj",
        "self_attn.q_proj", "self_attn.v_proj")]),
    ("q_proj", []),  # a regex must match the WHOLE name
    (["layers.0.mlp.up_proj"], ["model.layers.0.mlp.up_proj"]),  # a suffix of dotted parts
    (["proj"], []),  # ...not of characters
])
def test_target_module_matching(targets, expected):
    if not expected:
        with pytest.raises(ValueError, match="not found in the base model") as error:  # PEFT's words;
            lora(tiny_llama(), target_modules=targets)
        assert "matched no module" in error.value.__notes__[0] and "q_proj" in error.value.__notes__[0]  # the hint
        return
    assert adapted(lora(tiny_llama(), target_modules=targets)) == expected


def test_all_linear_skips_the_output_head_and_exclude_modules_layers_to_transform():
    model = lora(tiny_llama(), target_modules="all-linear", exclude_modules=["down_proj"])
    names = adapted(model)
    assert len(names) == 2 * 6 and "lm_head" not in names and not any("down_proj" in n for n in names)
    assert model.peft_config["default"].target_modules[0] == "model.layers.0.mlp.down_proj"
    only_1 = lora(tiny_llama(), layers_to_transform=[1])
    assert adapted(only_1) == ["model.layers.1.self_attn.q_proj", "model.layers.1.self_attn.v_proj"]
    assert adapted(lora(tiny_llama(), target_modules=None)) == adapted(lora(tiny_llama()))  # llama default


def test_rank_and_alpha_patterns():
    model = lora(tiny_llama(), rank_pattern={"v_proj": 2}, alpha_pattern={"layers.1.self_attn.q_proj": 2})
    layers = model.get_base_model().model.layers
    assert layers[0].self_attn.v_proj.lora_A["default"].weight.shape == (2, 16)
    assert layers[0].self_attn.q_proj.scaling["default"] == 8 / 4
    assert layers[1].self_attn.q_proj.scaling["default"] == 2 / 4
    assert layers[1].self_attn.v_proj.scaling["default"] == 8 / 2


def test_init_true_starts_at_the_base_model_and_inits_like_peft():
    base = tiny_llama()
    reference = logits(base, ids())
    model = get_peft_model(base, LoraConfig(r=8, target_modules=["q_proj", "v_proj"]))
    assert np.array_equal(logits(model, ids()), reference)  # B = 0: exactly the base
    q = model.get_base_model().model.layers[0].self_attn.q_proj
    A, B = q.lora_A["default"].weight.numpy(), q.lora_B["default"].weight.numpy()
    assert not B.any() and np.abs(A).max() <= 1 / np.sqrt(16) and np.abs(A).max() > 0.8 / np.sqrt(16)
    gauss = get_peft_model(tiny_llama(), LoraConfig(r=8, target_modules="all-linear", init_lora_weights="gaussian"))
    As = np.concatenate([m.lora_A["default"].weight.numpy().ravel() for m in gauss.modules()
                         if isinstance(m, LoraLinear)])
    assert abs(As.std() - 1 / 8) < 0.01


def test_bias_modes():
    model = lora(tiny_llama(attention_bias=True), bias="lora_only")
    trainable = {n for n, p in model.named_parameters() if p.requires_grad and n.endswith("bias")}
    assert trainable == {f"base_model.model.model.layers.{i}.self_attn.{m}_proj.base_layer.bias"
                         for i in (0, 1) for m in "qv"}
    model = lora(tiny_llama(attention_bias=True), bias="all")
    assert sum(n.endswith("bias") and p.requires_grad for n, p in model.named_parameters()) == 8


def test_modules_to_save():
    model = lora(tiny_llama(), modules_to_save=["lm_head"])
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    assert "base_model.model.lm_head.modules_to_save.default.weight" in names
    assert "base_model.model.lm_head.original_module.weight" not in names
    head = model.get_base_model().lm_head
    with ml.no_grad():
        head.modules_to_save["default"].weight._array[...] += 1.0
    with model.disable_adapter():
        base = logits(model, ids())
    adapted_logits = logits(model, ids())
    assert not np.allclose(adapted_logits, base)
    unloaded = model.merge_and_unload()  # keeps the trained copy of the head
    assert type(unloaded.lm_head) is nn.Linear
    assert_close(logits(unloaded, ids()), adapted_logits, rtol=1e-11, atol=1e-11)


def test_training_updates_only_the_adapter_and_calls_the_fused_op():
    model = lora(tiny_llama())
    W0 = model.get_base_model().model.layers[0].self_attn.q_proj.base_layer.weight
    with ml.profile() as prof:
        out = model(ids(), labels=ids())
        out.loss.backward()
    assert prof.calls("LoraLinear", "forward") == 4 and prof.calls("LoraLinear", "backward") == 4
    grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert len(grads) == 8 and all(".lora_" in n for n in grads) and W0.grad is None


# ==================================================================================================
# DoRA and VeRA
# ==================================================================================================
def test_dora_forward_formula_and_magnitude_gradient():
    model = lora(tiny_llama(num_hidden_layers=1), use_dora=True, target_modules=["q_proj"])
    q = model.get_base_model().model.layers[0].self_attn.q_proj
    W0 = q.base_layer.weight.numpy()
    A, B, s = q.lora_A["default"].weight.numpy(), q.lora_B["default"].weight.numpy(), q.scaling["default"]
    m = q.lora_magnitude_vector["default"].weight
    assert_close(m, np.linalg.norm(W0 + s * B @ A, axis=1), rtol=1e-12, atol=0)  # starts at the norms
    with ml.no_grad():
        m._array[...] *= np.linspace(0.5, 1.5, m.shape[0])
    x = ml.tensor(np.random.default_rng(0).standard_normal((3, 16)))
    V = W0 + s * B @ A
    expected = (m.numpy() / np.linalg.norm(V, axis=1)) * (x.numpy() @ V.T)
    assert_close(q(x), expected, rtol=1e-12, atol=1e-12, name="DoRA output")
    grad_check(lambda m: q(x), m)  # the norm does not depend on m, so m's gradient is exact


def test_vera_formula_shared_projections_and_lambda_gradients():
    config = VeraConfig(r=4, target_modules=["q_proj", "v_proj"], init_weights=False)
    model = get_peft_model(tiny_llama(), config)
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert set(trainable) == {f"base_model.model.model.layers.{i}.self_attn.{m}_proj.vera_lambda_{v}.default"
                              for i in (0, 1) for m in "qv" for v in "bd"}
    layers = model.get_base_model().model.layers
    q, v = layers[0].self_attn.q_proj, layers[1].self_attn.v_proj
    assert q.vera_A["default"] is v.vera_A["default"] is model.base_model.vera_A["default"]
    assert q.vera_A["default"].shape == (4, 16) and q.vera_B["default"].shape == (16, 4)
    x = ml.tensor(np.random.default_rng(0).standard_normal((3, 16)))
    A, B = v.vera_A["default"].numpy()[:, :16], v.vera_B["default"].numpy()[:8]
    lb, ld = v.vera_lambda_b["default"], v.vera_lambda_d["default"]
    expected = x.numpy() @ v.base_layer.weight.numpy().T + lb.numpy() * ((ld.numpy() * (x.numpy() @ A.T)) @ B.T)
    assert_close(v(x), expected, rtol=1e-12, atol=1e-12, name="VeRA output")
    grad_check(lambda lb, ld: v(x), lb, ld)
    same = get_peft_model(tiny_llama(), config)  # projection_prng_key makes A and B reproducible
    assert np.array_equal(same.base_model.vera_A["default"].numpy(), model.base_model.vera_A["default"].numpy())


def test_embedding_lora_formula_init_padding_and_gradients():
    """PEFT's lora.Embedding: h = W0[x] + s A^T[x] B^T; A starts at zero (the model starts at the base),
    B ~ N(0, 1); the base table's padding_idx row gets no gradient through A either."""
    base_logits = logits(tiny_llama(pad_token_id=5), ids())
    model = get_peft_model(tiny_llama(pad_token_id=5), LoraConfig(r=3, lora_alpha=6, target_modules=["embed_tokens"]))
    layer = model.get_base_model().model.embed_tokens
    assert type(layer).__name__ == "Embedding" and layer.base_layer.padding_idx == 5
    A, B = layer.lora_embedding_A["default"], layer.lora_embedding_B["default"]
    assert A.shape == (3, 64) and B.shape == (16, 3) and not A.numpy().any() and B.numpy().std() > 0.5
    assert_close(logits(model, ids()), base_logits, rtol=0, atol=0, name="A = 0 starts at the base")
    with ml.no_grad():
        A.copy_(ml.tensor(np.random.default_rng(1).standard_normal(A.shape)))
    tokens = np.array([[5, 3, 5, 9]])
    want = layer.base_layer.weight.numpy()[tokens] + 2.0 * A.numpy().T[tokens] @ B.numpy().T
    assert_close(layer(tokens), want, rtol=1e-12, atol=1e-12, name="embedding LoRA output")
    grad_check(lambda A, B: layer(np.array([[3, 9, 3]])), A, B)  # (the pad column's gradient is 0 by design)
    layer(tokens).sum().backward()
    assert not A.grad.numpy()[:, 5].any() and A.grad.numpy()[:, 3].any()  # the pad token's column never trains


def test_embedding_lora_refusals_and_files_without_the_base_table(tmp_path):
    dora = get_peft_model(tiny_llama(), LoraConfig(target_modules=["embed_tokens"], use_dora=True)).get_base_model()
    table = dora.model.embed_tokens  # DoRA on an Embedding (PEFT's DoraEmbeddingLayer): a magnitude per dimension
    assert tuple(table.lora_magnitude_vector["default"].weight.shape) == (table.base_layer.weight.shape[1],)
    with pytest.raises(TypeError, match="Target module Embedding.* is not supported"):  # PEFT's words
        get_peft_model(tiny_llama(), VeraConfig(r=2, target_modules=["embed_tokens", "q_proj"]))
    with pytest.raises(ValueError, match="Target module LlamaRMSNorm.* is not supported"):  # PEFT's error
        get_peft_model(tiny_llama(), LoraConfig(target_modules=["input_layernorm"]))
    model = lora(tiny_llama(), target_modules=["embed_tokens", "q_proj"])
    model.save_pretrained(tmp_path / "with", save_embedding_layers="auto")
    model.save_pretrained(tmp_path / "without", save_embedding_layers=False)
    from minilora.checkpoint import load_file
    table = "base_model.model.model.embed_tokens.base_layer.weight"
    assert table in load_file(tmp_path / "with" / "adapter_model.safetensors")
    assert table not in load_file(tmp_path / "without" / "adapter_model.safetensors")
    for folder in ("with", "without"):  # PEFT's files come both ways: the table is optional on load
        again = PeftModel.from_pretrained(tiny_llama(), tmp_path / folder)
        assert_close(logits(again, ids()), logits(model, ids()), rtol=1e-12, atol=1e-12, name=folder)


def test_embedding_merge_unmerge_round_trip():
    model = lora(tiny_llama(), target_modules=["embed_tokens", "v_proj"])
    table = model.get_base_model().model.embed_tokens.base_layer.weight
    W0, unmerged = table.numpy().copy(), logits(model, ids())
    model.merge_adapter()
    assert_close(logits(model, ids()), unmerged, rtol=1e-11, atol=1e-11, name="merged logits")
    model.unmerge_adapter()
    assert_close(table, W0, rtol=1e-13, atol=1e-14, name="table after unmerge")
    with model.disable_adapter():
        assert_close(logits(model, ids()), logits(tiny_llama(), ids()), rtol=1e-12, atol=1e-12, name="disabled")


# ==================================================================================================
# Merging
# ==================================================================================================
@pytest.mark.parametrize("variant", [{}, {"use_dora": True}, {"use_rslora": True}, "vera"])
def test_merge_unmerge_round_trip(variant):
    config = VeraConfig(r=4, target_modules=["q_proj", "v_proj"], init_weights=False) if variant == "vera" \
        else LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False, **variant)
    model = get_peft_model(tiny_llama(), config)
    W0 = {n: p.numpy().copy() for n, p in model.named_parameters() if "base_layer" in n}
    unmerged = logits(model, ids())
    model.merge_adapter()
    assert_close(logits(model, ids()), unmerged, rtol=1e-11, atol=1e-11, name="merged logits")
    model.unmerge_adapter()
    for n, p in model.named_parameters():
        if "base_layer" in n:
            assert_close(p, W0[n], rtol=1e-13, atol=1e-14, name=n)


def test_merge_and_unload_unload_and_disable_adapter():
    base_logits = logits(tiny_llama(), ids())
    model = lora(tiny_llama())
    adapted_logits = logits(model, ids())
    with model.disable_adapter():
        assert_close(logits(model, ids()), base_logits, rtol=1e-12, atol=1e-12)
    assert np.array_equal(logits(model, ids()), adapted_logits)
    assert all(p.requires_grad for n, p in model.named_parameters() if ".lora_" in n)  # restored
    merged = model.merge_and_unload()
    assert type(merged) is LlamaForCausalLM and type(merged.model.layers[0].self_attn.q_proj) is nn.Linear
    assert "model.layers.0.self_attn.q_proj.weight" in merged.state_dict()
    assert_close(logits(merged, ids()), adapted_logits, rtol=1e-11, atol=1e-11)
    plain = lora(tiny_llama()).unload()
    assert_close(logits(plain, ids()), base_logits, rtol=0, atol=0)


def test_disabling_a_merged_model_unmerges_it():
    base_logits = logits(tiny_llama(), ids())
    model = lora(tiny_llama())
    model.merge_adapter()
    with model.disable_adapter():
        assert_close(logits(model, ids()), base_logits, rtol=1e-12, atol=1e-12)


def test_safe_merge_refuses_nan_and_changes_nothing():
    model = lora(tiny_llama())
    layer = model.get_base_model().model.layers[1].self_attn.v_proj
    with ml.no_grad():
        layer.lora_B["default"].weight.data[0, 0] = np.nan
    weights = {n: p.numpy().copy() for n, p in model.named_parameters()}
    with pytest.raises(ValueError, match=r"NaNs or infs.*'default'.*layers\.1\.self_attn\.v_proj"):
        model.merge_adapter(safe_merge=True)
    with pytest.raises(ValueError, match="NaNs or infs"):
        model.merge_and_unload(safe_merge=True)
    assert all(np.array_equal(p.numpy(), weights[n], equal_nan=True) for n, p in model.named_parameters())


# ==================================================================================================
# Several adapters
# ==================================================================================================
def two_adapters():
    model = lora(tiny_llama(), adapter="a")
    model.add_adapter("b", LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "o_proj"],
                                      init_lora_weights=False))
    return model.eval()


def test_add_set_delete_adapter():
    model = two_adapters()
    assert model.active_adapter == "a" and model.active_adapters == ["a"] and set(model.peft_config) == {"a", "b"}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".a." in n for n in trainable)  # "b" waits, frozen, until set_adapter
    out_a = logits(model, ids())
    model.set_adapter("b")
    assert all(".b." in n for n, p in model.named_parameters() if p.requires_grad)
    out_b = logits(model, ids())
    assert not np.allclose(out_a, out_b)
    model.set_adapter("a")
    assert np.array_equal(logits(model, ids()), out_a)
    model.delete_adapter("a")
    assert model.active_adapter == "b" and "a" not in model.peft_config
    assert not any(".a." in n for n, _ in model.named_parameters())
    assert np.array_equal(logits(model, ids()), out_b)
    with pytest.raises(ValueError, match="no adapter named 'zz'"):
        model.set_adapter("zz")
    with pytest.raises(ValueError, match="already exists"):
        model.add_adapter("b", LoraConfig(target_modules=["q_proj"]))
    with pytest.raises(ValueError, match="one method per model"):
        model.add_adapter("v", VeraConfig(target_modules=["q_proj"]))


def test_per_sample_adapters_equal_running_each_sample_alone():
    """BGMV with adapters of different ranks (4 and 2) and "__base__", against one sample at a time."""
    model = two_adapters()
    batch = ids(batch=5)
    names = ["a", BASE_ADAPTER, "b", "a", "b"]
    mixed = logits(model, batch, adapter_names=names)
    for i, name in enumerate(names):
        if name == BASE_ADAPTER:
            with model.disable_adapter():
                alone = logits(model, batch[i:i + 1])
        else:
            model.set_adapter(name)
            alone = logits(model, batch[i:i + 1])
        assert_close(mixed[i:i + 1], alone, rtol=1e-12, atol=1e-12, name=f"sample {i} ({name})")


def test_per_sample_adapters_are_one_batched_matmul_not_a_loop():
    model = two_adapters()

    def matmul_calls(batch):
        with ml.profile() as prof:
            logits(model, ids(batch=batch), adapter_names=(["a", "b", BASE_ADAPTER] * 4)[:batch])
        return prof.calls("MatMul")

    assert matmul_calls(3) == matmul_calls(12)


def test_per_sample_adapter_errors():
    model = two_adapters()
    # PEFT's words (tests/test_peft_users_r33.py compares them); minilora's hints are the errors' notes
    with pytest.raises(ValueError, match="non-existing adapter"):
        logits(model, ids(batch=2), adapter_names=["a", "c"])
    with pytest.raises(ValueError, match="Length of `adapter_names`") as error:
        logits(model, ids(batch=2), adapter_names=["a"])
    assert "one adapter name" in error.value.__notes__[0]
    with pytest.raises(ValueError, match="training mode") as error:
        logits(model.train(), ids(batch=2), adapter_names=["a", "b"])
    assert "model.eval" in error.value.__notes__[0]
    model.eval()
    model.merge_adapter()
    with pytest.raises(ValueError, match="merged"):
        logits(model, ids(batch=2), adapter_names=["a", "b"])
    dora = lora(tiny_llama(), use_dora=True).eval()
    with pytest.raises(ValueError, match="DoRA"):
        logits(dora, ids(batch=1), adapter_names=["default"])


# ==================================================================================================
# Adapter files
# ==================================================================================================
@pytest.fixture
def safetensors():
    return pytest.importorskip("safetensors")


def test_save_and_load_round_trip(tmp_path, safetensors):
    model = two_adapters()
    model.save_pretrained(tmp_path)
    assert sorted(os.listdir(tmp_path)) == ["README.md", "a", "b"]  # other adapters go to subdirectories; a model card
    assert sorted(os.listdir(tmp_path / "a")) == ["adapter_config.json", "adapter_model.safetensors"]
    from minilora.checkpoint import load_file
    keys = set(load_file(tmp_path / "a" / "adapter_model.safetensors"))
    assert "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight" in keys and len(keys) == 8
    assert json.load(open(tmp_path / "a" / "adapter_config.json"))["inference_mode"] is True
    loaded = PeftModel.from_pretrained(tiny_llama(), tmp_path / "a", adapter_name="a")
    assert np.array_equal(logits(loaded, ids()), logits(model, ids()))
    assert loaded.get_nb_trainable_parameters()[0] == 0  # loaded for inference unless is_trainable
    loaded.load_adapter(tmp_path / "b", "b")
    loaded.set_adapter("b")
    model.set_adapter("b")
    assert np.array_equal(logits(loaded, ids()), logits(model, ids()))
    trainable = PeftModel.from_pretrained(tiny_llama(), tmp_path / "a", is_trainable=True)
    assert trainable.get_nb_trainable_parameters()[0] == 448 and trainable.training


def test_dora_and_modules_to_save_file_names(tmp_path, safetensors):
    model = lora(tiny_llama(), use_dora=True, modules_to_save=["lm_head"])
    model.save_pretrained(tmp_path)
    from minilora.checkpoint import load_file
    keys = set(load_file(tmp_path / "adapter_model.safetensors"))
    assert "base_model.model.model.layers.0.self_attn.q_proj.lora_magnitude_vector" in keys
    assert "base_model.model.lm_head.weight" in keys
    loaded = PeftModel.from_pretrained(tiny_llama(), tmp_path)
    assert_close(logits(loaded, ids()), logits(model, ids()), rtol=1e-13, atol=1e-13)


def test_refuses_to_overwrite_a_different_adapter(tmp_path, safetensors):
    model = lora(tiny_llama())
    model.save_pretrained(tmp_path)
    with ml.no_grad():  # more training: the same adapter, new weights -> saving again is fine
        next(p for p in model.parameters() if p.requires_grad).data[...] += 1
    model.save_pretrained(tmp_path)
    other = lora(tiny_llama(), r=2)
    with pytest.raises(FileExistsError, match=r"different adapter.*'r'.*overwrite=True"):
        other.save_pretrained(tmp_path)
    other.save_pretrained(tmp_path, overwrite=True)
    assert json.load(open(tmp_path / "adapter_config.json"))["r"] == 2
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]  # atomic writes leave nothing


def test_wrong_base_model_names_the_first_mismatch(tmp_path, safetensors):
    lora(tiny_llama()).save_pretrained(tmp_path)
    with pytest.raises(AdapterMismatchError, match=r"size mismatch for base_model\.model\.model\.layers\.0\.self_attn"
                                                   r"\.q_proj\.lora_A\.default\.weight: copying a param with shape "
                                                   r"torch\.Size\(\[4, 16\]\) from checkpoint, the shape in current "
                                                   r"model is torch\.Size\(\[4, 32\]\)"):  # (torch's words, as PEFT)
        PeftModel.from_pretrained(tiny_llama(hidden_size=32), tmp_path)
    with pytest.raises(AdapterMismatchError, match=r"layers\.1\.self_attn\.q_proj.*which this model does not have"):
        PeftModel.from_pretrained(tiny_llama(num_hidden_layers=1), tmp_path)
    with pytest.raises(FileNotFoundError, match="subdirectory"):
        PeftModel.from_pretrained(tiny_llama(), tmp_path / "nothing")


def test_vera_adapter_file_round_trip(tmp_path, safetensors):
    model = get_peft_model(tiny_llama(), VeraConfig(r=4, target_modules=["q_proj", "v_proj"], init_weights=False))
    model.save_pretrained(tmp_path)
    from minilora.checkpoint import load_file
    keys = set(load_file(tmp_path / "adapter_model.safetensors"))
    assert {"base_model.vera_A", "base_model.vera_B",
            "base_model.model.model.layers.0.self_attn.q_proj.vera_lambda_b"} <= keys
    loaded = PeftModel.from_pretrained(tiny_llama(), tmp_path)
    assert_close(logits(loaded, ids()), logits(model, ids()), rtol=1e-13, atol=1e-13)


def test_works_on_a_plain_module_tree():
    """Any model of minilora Linears can be adapted, not only Llama."""
    class Toy(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = nn.Linear(6, 5)
            self.head = nn.Linear(5, 3)

        def forward(self, x):
            return self.head(ops.relu(self.encoder(x)))

    ml.manual_seed(0)
    model = get_peft_model(Toy(), LoraConfig(r=2, target_modules=["encoder"], init_lora_weights=False))
    x = ml.tensor(np.random.default_rng(0).standard_normal((4, 6)), dtype=ml.float32)
    out = model(x)
    assert out.shape == (4, 3)
    assert isinstance(model.base_model.model.encoder, LoraLinear)
    with pytest.raises(ValueError, match="no default for model type"):
        get_peft_model(Toy(), LoraConfig())


def test_a_hand_built_lora_layer_uses_its_adapter_at_once_as_peft_does():
    layer = LoraLinear(nn.Linear(6, 5), "default", LoraConfig(r=2, lora_alpha=2, init_lora_weights=False),
                       r=2, lora_alpha=2)
    assert layer.active_adapters == ["default"]
    assert layer.lora_A["default"].weight.requires_grad and layer.lora_B["default"].weight.requires_grad
    x = ml.randn(3, 6)
    assert not np.allclose(layer(x).numpy(), layer.base_layer(x).numpy())  # B != 0: the adapter acts
    # a second adapter added to the layer starts inactive and frozen, as in PEFT
    layer.update_layer("other", LoraConfig(r=2, lora_alpha=2), 2, 2)
    assert layer.active_adapters == ["default"] and not layer.lora_A["other"].weight.requires_grad


def test_loraplus_groups_and_learning_rates():
    from minilora.lora import create_loraplus_optimizer
    from minilora.optim import AdamW
    model = get_peft_model(tiny_llama(attention_bias=True), LoraConfig(r=2, target_modules=["q_proj"],
                                                                          bias="lora_only", use_dora=True))
    opt = create_loraplus_optimizer(model, AdamW, lr=1e-3, loraplus_lr_ratio=8, betas=(0.8, 0.9))
    names = {id(p): n for n, p in model.named_parameters()}
    groups = [{names[id(p)].split(".")[-3] for p in g["params"]} for g in opt.param_groups]
    assert [g["lr"] for g in opt.param_groups] == [1e-3, 1e-6, 8e-3, 8e-3]
    assert opt.param_groups[0]["betas"] == (0.8, 0.9)  # other options reach the optimizer
    assert groups[:3] == [{"lora_A"}, set(), {"lora_B", "lora_magnitude_vector"}]  # B and DoRA's 1-D magnitudes
    assert {names[id(p)].rsplit(".", 2)[-2] for p in opt.param_groups[3]["params"]} == {"base_layer"}  # biases
    assert len(opt.param_groups[3]["params"]) == 2 and opt.param_groups[3]["weight_decay"] == 0.0


def test_set_adapter_takes_a_list_as_peft_lora_model():
    """PEFT's ``LoraModel.set_adapter(["a", "b"])`` activates both: each layer adds both deltas, both
    train, ``active_adapters`` lists them; deleting one leaves the other active."""
    from minilora.lora import LoraConfig, get_peft_model
    config = dict(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    model = get_peft_model(tiny_llama(), LoraConfig(**config), adapter_name="a")
    model.add_adapter("b", LoraConfig(**config))
    layer = model.base_model.model.model.layers[0].self_attn.q_proj
    x = ml.tensor(np.random.default_rng(0).standard_normal((3, layer.in_features)))
    base = layer.base_layer(x).numpy()
    delta = {}
    for name in ("a", "b"):
        model.base_model.set_adapter(name)
        delta[name] = layer(x).numpy() - base
    model.base_model.set_adapter(["a", "b"])
    assert model.active_adapters == ["a", "b"] and model.base_model.active_adapter == ["a", "b"]
    np.testing.assert_allclose(layer(x).numpy() - base, delta["a"] + delta["b"], atol=1e-12)
    assert np.abs(delta["a"]).max() > 1e-3 and np.abs(delta["b"]).max() > 1e-3
    trains = {n.split(".")[-2] for n, p in model.named_parameters() if p.requires_grad}
    assert trains == {"a", "b"}
    with pytest.raises(ValueError, match="no adapter named 'c'"):
        model.base_model.set_adapter(["a", "c"])
    model.delete_adapter("a")
    assert model.active_adapters == ["b"]
    np.testing.assert_allclose(layer(x).numpy() - base, delta["b"], atol=1e-12)
