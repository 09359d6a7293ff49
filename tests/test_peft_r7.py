"""PEFT 0.21 side by side with minilora, round 7 -- what minilora used to refuse or answer differently:

* the state dicts handed to the user (torch tensors there, minilora Tensors here: get_peft_model_state_dict
  with its options and ``state_dict=``, load_peft_weights, the load results), ``key_mapping`` and
  ``low_cpu_mem_usage``, ``inject_adapter_in_model(state_dict=...)``;
* DoRA on an Embedding; LoRA on nn.MultiheadAttention (against PEFT with its out_proj double count fixed,
  and against torch's attention with the updated weights: see minilora/lora/mha.py);
* PeftMixedModel of LoRA adapters; siblings: get/set_base_model_state_dict, get_peft_config,
  has_active_enabled_adapter, base_model_torch_dtype, load_adapter's result; the cuda device (fake CuPy).

The models are test_peft_custom_r6's small custom models (float64, torch's weights copied into minilora's).
Skipped when torch / peft are not installed."""
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
peft = pytest.importorskip("peft")

import minilora as ml  # noqa: E402
import minilora.lora as ml_peft  # noqa: E402

from test_peft_custom_r6 import (INPUTS, TOL, copy_trainable, mlp, nested, pair, run_both,  # noqa: E402
                                 side_by_side, train, trainable)
from peft_versions import PEFT_022, as_of_peft  # noqa: E402


def both(build, config, seed=0):
    """The same LoRA model in both libraries, PEFT's random adapter weights copied into minilora's."""
    theirs_base, ours_base = pair(build, seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = peft.get_peft_model(theirs_base, peft.LoraConfig(**config))
        ours = ml_peft.get_peft_model(ours_base, ml_peft.LoraConfig(**config))
    copy_trainable(theirs, ours)
    return theirs, ours


def assert_same_state(ours, theirs):
    """Same keys, shapes, dtypes and values; minilora's values are Tensors as PEFT's are torch tensors."""
    assert sorted(ours) == sorted(theirs)
    for key, value in theirs.items():
        assert isinstance(ours[key], ml.Tensor), (key, type(ours[key]))
        assert tuple(ours[key].shape) == tuple(value.shape) and str(ours[key].dtype) == str(value.dtype).split(".")[1]
        assert ours[key].numel() == value.numel() and ours[key].requires_grad == value.requires_grad
        np.testing.assert_allclose(ours[key].numpy(), value.detach().numpy(), rtol=0, atol=TOL, err_msg=key)


# ==================================================================================================
# The state dicts handed to the user: Tensors (PEFT: torch tensors), the model's own, detached
# ==================================================================================================
DORA_EMBED = dict(target_modules=["embed", "up"], modules_to_save=["head"], use_dora=True, init_lora_weights=False)


def test_get_peft_model_state_dict_hands_out_the_models_tensors_as_peft():
    """minilora returned NumPy arrays: ``sd[k].numel()`` failed, and the values were copies."""
    theirs, ours = both(nested, DORA_EMBED)
    assert_same_state(ml_peft.get_peft_model_state_dict(ours), peft.get_peft_model_state_dict(theirs))
    key = "base_model.model.blocks.0.proj.up.lora_A.weight"
    theirs_sd, ours_sd = peft.get_peft_model_state_dict(theirs), ml_peft.get_peft_model_state_dict(ours)
    theirs_sd[key].mul_(0)  # PEFT's values are the parameters' own storage (detached): so are minilora's
    ours_sd[key].mul_(0)
    assert not theirs.base_model.model.blocks[0].proj["up"].lora_A["default"].weight.detach().any()
    assert not ours.base_model.model.blocks[0].proj["up"].lora_A["default"].weight.detach().numpy().any()


@pytest.mark.parametrize("kw", [dict(adapter_name="other"), dict(save_embedding_layers=True),
                                dict(save_embedding_layers=False)])
def test_get_peft_model_state_dict_options_as_peft(kw):
    theirs, ours = both(nested, dict(target_modules=["embed", "down"], init_lora_weights=False))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs.add_adapter("other", peft.LoraConfig(target_modules=["up"], r=2, init_lora_weights=False))
        ours.add_adapter("other", ml_peft.LoraConfig(target_modules=["up"], r=2, init_lora_weights=False))
        copy_trainable(theirs, ours)
        theirs.set_adapter("other")
        ours.set_adapter("other")
        copy_trainable(theirs, ours)
        assert_same_state(ml_peft.get_peft_model_state_dict(ours, **kw), peft.get_peft_model_state_dict(theirs, **kw))


def test_get_peft_model_state_dict_reads_a_given_state_dict_as_peft():
    """PEFT's ``state_dict=``: the values come from it (a changed ``model.state_dict()``); minilora refused it."""
    theirs, ours = both(mlp, dict(target_modules=["seq.0", "seq.2"], modules_to_save=["seq.4"]))
    theirs_given = {k: v * 3 for k, v in theirs.state_dict().items() if ".2." not in k}  # seq.2 left out
    ours_given = {k: v * 3 for k, v in ours.state_dict().items() if ".2." not in k}
    assert_same_state(ml_peft.get_peft_model_state_dict(ours, ours_given),
                      peft.get_peft_model_state_dict(theirs, theirs_given))


def test_the_users_round_trip_through_minilora_save_and_set_peft_model_state_dict(tmp_path):
    """What a user does with the state dict: save it (torch.save there, minilora.save here), load it into a
    fresh model with set_peft_model_state_dict, and get PEFT's load result and outputs."""
    theirs, ours = both(nested, DORA_EMBED)
    x = INPUTS[nested](np.random.default_rng(4))
    train(theirs, ours, x, steps=2)
    torch.save(peft.get_peft_model_state_dict(theirs), tmp_path / "theirs.pt")
    ml.save(ml_peft.get_peft_model_state_dict(ours), tmp_path / "ours.safetensors")
    fresh_theirs, fresh_ours = both(nested, DORA_EMBED)  # untrained
    theirs_result = peft.set_peft_model_state_dict(fresh_theirs, torch.load(tmp_path / "theirs.pt"))
    ours_result = ml_peft.set_peft_model_state_dict(fresh_ours, ml.load(tmp_path / "ours.safetensors"))
    assert type(ours_result).__name__ == type(theirs_result).__name__ == "_IncompatibleKeys"
    assert sorted(ours_result.missing_keys) == sorted(theirs_result.missing_keys) and not ours_result.unexpected_keys
    t, m = run_both(fresh_theirs, fresh_ours, x)
    np.testing.assert_allclose(m, t, rtol=0, atol=TOL)
    np.testing.assert_allclose(m, run_both(theirs, ours, x)[1], rtol=0, atol=TOL)


def test_load_peft_weights_as_peft(tmp_path):
    """PEFT's ``load_peft_weights(folder)`` (minilora had none): {key: Tensor}, with subfolder and key_mapping."""
    theirs, ours = both(nested, DORA_EMBED)
    theirs.save_pretrained(tmp_path / "theirs")
    ours.save_pretrained(tmp_path / "ours")
    assert_same_state(ml_peft.load_peft_weights(str(tmp_path / "theirs"), device="cpu"),
                      peft.load_peft_weights(str(tmp_path / "ours"), device="cpu"))
    mapping = {r"blocks\.(\d)": r"layers.\1"}
    assert_same_state(ml_peft.load_peft_weights(tmp_path, subfolder="ours", key_mapping=mapping),
                      peft.load_peft_weights(str(tmp_path), device="cpu", subfolder="theirs", key_mapping=mapping))
    with pytest.raises(FileNotFoundError, match="adapter_model.safetensors"):
        ml_peft.load_peft_weights(tmp_path)


def test_from_pretrained_with_key_mapping_and_low_cpu_mem_usage_as_peft(tmp_path):
    """``key_mapping`` and ``low_cpu_mem_usage=True`` were refused; PEFT loads the same model with them."""
    theirs, ours = both(nested, dict(target_modules=["up", "down"], init_lora_weights=False))
    ours.save_pretrained(tmp_path)
    x = INPUTS[nested](np.random.default_rng(5))
    # the folder's keys renamed (blocks -> layers), then mapped back when loading
    weights = ml_peft.load_peft_weights(tmp_path, device="cpu")
    ml.save({k.replace(".blocks.", ".layers."): v for k, v in weights.items()},
            tmp_path / "adapter_model.safetensors")
    mapping = {r"^model\.layers\.": "blocks.", r"^layers\.": "blocks."}
    fresh_theirs, fresh_ours = pair(nested, seed=0)
    loaded_theirs = peft.PeftModel.from_pretrained(fresh_theirs, str(tmp_path), key_mapping=mapping,
                                                   low_cpu_mem_usage=True)
    loaded_ours = ml_peft.PeftModel.from_pretrained(fresh_ours, tmp_path, key_mapping=mapping, low_cpu_mem_usage=True)
    t, m = run_both(loaded_theirs, loaded_ours, x)
    np.testing.assert_allclose(m, t, rtol=0, atol=TOL)
    np.testing.assert_allclose(m, run_both(theirs, ours, x)[1], rtol=0, atol=TOL)
    loaded_ours.load_adapter(tmp_path, "again", key_mapping=mapping, low_cpu_mem_usage=True)
    assert "again" in loaded_ours.peft_config


# ==================================================================================================
# inject_adapter_in_model(config, model, state_dict=...): the state dict's keys choose the layers
# ==================================================================================================
def test_inject_adapter_in_model_from_a_state_dict_as_peft():
    """PEFT's ``state_dict=`` (minilora refused it): the layers named by its keys are adapted, whatever the
    config targets, with PEFT's warning naming the difference; then set_peft_model_state_dict loads it."""
    source, _ = both(mlp, dict(target_modules=["seq.0", "seq.4"], init_lora_weights=False))
    state = {k.removeprefix("base_model.model."): v for k, v in peft.get_peft_model_state_dict(source).items()}
    theirs_base, ours_base = pair(mlp)
    config = dict(target_modules=["seq.0", "seq.2"], r=8)
    with pytest.warns(RuntimeWarning) as theirs_warning:
        theirs = peft.inject_adapter_in_model(peft.LoraConfig(**config), theirs_base, state_dict=state,
                                              low_cpu_mem_usage=True)
    ours_state = {k: ml.tensor(v.detach().numpy()) for k, v in state.items()}
    with pytest.warns(RuntimeWarning) as ours_warning:
        ours = ml_peft.inject_adapter_in_model(ml_peft.LoraConfig(**config), ours_base, state_dict=ours_state,
                                               low_cpu_mem_usage=True)
    words = lambda record: [str(w.message) for w in record if "inconsistency" in str(w.message)]  # noqa: E731
    assert words(ours_warning) == words(theirs_warning) and len(words(ours_warning)) == 1
    assert trainable(ours) == trainable(theirs)
    theirs_result = peft.set_peft_model_state_dict(theirs, state, low_cpu_mem_usage=True)
    ours_result = ml_peft.set_peft_model_state_dict(ours, ours_state, low_cpu_mem_usage=True)
    assert sorted(ours_result.missing_keys) == sorted(theirs_result.missing_keys)
    x = INPUTS[mlp](np.random.default_rng(6))
    t, m = run_both(theirs, ours, x)
    np.testing.assert_allclose(m, t, rtol=0, atol=TOL)
    assert_same_state(ml_peft.get_peft_model_state_dict(ours), peft.get_peft_model_state_dict(theirs))


def test_inject_adapter_in_model_state_dict_with_target_parameters_refused_as_peft():
    state = {"seq.0.lora_A.weight": np.zeros((8, 20))}
    for lib, base in zip((peft, ml_peft), pair(mlp)):
        config = lib.LoraConfig(target_modules=[], target_parameters=["seq.0.weight"])
        with pytest.raises(ValueError, match="the PEFT config uses `target_parameters`"):
            lib.inject_adapter_in_model(config, base, state_dict=state)


# ==================================================================================================
# DoRA on an Embedding (PEFT's DoraEmbeddingLayer; minilora refused it)
# ==================================================================================================
@pytest.mark.parametrize("finish", ["merge_and_unload", "unload"])
@pytest.mark.parametrize("config", [dict(target_modules=["embed"], use_dora=True),
                                    dict(target_modules=["embed", "up", "head"], use_dora=True, use_rslora=True,
                                         r=2, lora_alpha=5)], ids=["embed", "embed_and_linears"])
def test_dora_on_an_embedding_as_peft(tmp_path, config, finish):
    """print(model), trainable names, outputs before and after 5 AdamW steps, the files (the magnitude saved as
    ``embed.lora_magnitude_vector`` [dim]), each library loading the other's folder, disable_adapter, merge."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        side_by_side(nested, tmp_path, finish=finish, **config)


def test_dora_embedding_beside_a_second_adapter_as_peft():
    """Two adapters active at once (PEFT's formula rescales the output so far: m/n * result), merging one of
    them then the other and unmerging (the norms kept from the merge), per-sample adapter_names refused."""
    theirs, ours = both(nested, dict(target_modules=["embed"], init_lora_weights=False))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs.add_adapter("dora", peft.LoraConfig(target_modules=["embed"], use_dora=True, r=3, init_lora_weights=False))
        ours.add_adapter("dora", ml_peft.LoraConfig(target_modules=["embed"], use_dora=True, r=3,
                                                    init_lora_weights=False))
    for model in (theirs, ours):
        model.base_model.set_adapter(["default", "dora"])
    copy_trainable(theirs, ours)
    x = INPUTS[nested](np.random.default_rng(7))
    t, m = run_both(theirs, ours, x)
    np.testing.assert_allclose(m, t, rtol=0, atol=TOL)
    for model in (theirs, ours):
        model.merge_adapter(["dora"])
        model.merge_adapter(["default"])
    np.testing.assert_allclose(run_both(theirs, ours, x)[1], t, rtol=0, atol=1e-10)
    np.testing.assert_allclose(ours.base_model.model.embed.base_layer.weight.numpy(),
                               theirs.base_model.model.embed.base_layer.weight.detach().numpy(), rtol=0, atol=TOL)
    for model in (theirs, ours):
        model.unmerge_adapter()
    np.testing.assert_allclose(ours.base_model.model.embed.base_layer.weight.numpy(),
                               theirs.base_model.model.embed.base_layer.weight.detach().numpy(), rtol=0, atol=TOL)
    ours.eval()
    with pytest.raises(ValueError, match="DoRA"):
        ours(ml.tensor(x), adapter_names=["dora", "default"])


# ==================================================================================================
# LoRA on nn.MultiheadAttention (PEFT's lora.MultiheadAttention; minilora refused it)
# ==================================================================================================
def attention(nn, dtype):
    class Attention(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Linear(6, 8, dtype=dtype)
            self.self_attn = nn.MultiheadAttention(8, 2, batch_first=True, dtype=dtype)
            self.head = nn.Linear(8, 3, dtype=dtype)

        def forward(self, x):
            h = self.embed(x)
            return self.head(self.self_attn(h, h, h, need_weights=False)[0])
    return Attention()


def peft_fixed_merge(self, safe_merge=False, adapter_names=None):
    """PEFT 0.21's MultiheadAttention.merge with out_proj's update added ONCE (huggingface/peft#3774: 0.21
    writes W_out + dW, then out_proj.merge() adds dW again). As 0.21, both weights become graph tensors
    (the forward's gradients reach A and B); out_proj is marked merged so that the model's loop skips it."""
    from peft.tuners.tuners_utils import check_adapters_to_merge
    for name in check_adapters_to_merge(self, adapter_names):
        base, out = self.get_base_layer(), self.get_base_layer().out_proj
        in_weight = base.in_proj_weight.data.detach() + self.get_delta_weight(name).to(out.weight.dtype)
        out_weight = out.weight.data.detach() + out.get_delta_weight(name).to(out.weight.dtype)
        del base.in_proj_weight, out.get_base_layer().weight
        base.in_proj_weight, out.get_base_layer().weight = in_weight, out_weight
        out.merged_adapters.append(name)
        self.merged_adapters.append(name)


def peft_fixed_unmerge(self):
    base = self.get_base_layer()
    out = base.out_proj
    while self.merged_adapters:
        name = self.merged_adapters.pop()
        in_weight = base.in_proj_weight.data - self.get_delta_weight(name).to(out.weight.dtype)
        out_weight = out.weight.data - out.get_delta_weight(name).to(out.weight.dtype)
        del base.in_proj_weight, out.get_base_layer().weight
        base.register_parameter("in_proj_weight", torch.nn.Parameter(in_weight, requires_grad=False))
        out.get_base_layer().register_parameter("weight", torch.nn.Parameter(out_weight, requires_grad=False))
        out.merged_adapters.remove(name)


@pytest.fixture
def peft_mha_fixed(monkeypatch):
    """The oracle: PEFT 0.22, which counts out_proj's update once, as minilora (see lora/mha.py), with its
    unmerge made out of place: 0.22's in-place ``out_proj.unmerge()`` rewrites the W_out + dW that the forward
    saved for backward, so every gradient upstream of the attention is wrong (a 0.22 regression, see
    tests/test_peft022_r30.py; minilora's are torch's). On PEFT 0.21: 0.21 with its double count fixed, writing
    files that say so (0.22 doubles a "0.21.2" file's out_proj)."""
    layer = peft.tuners.lora.layer.MultiheadAttention
    monkeypatch.setattr(layer, "unmerge", peft_fixed_unmerge)
    if not PEFT_022:
        monkeypatch.setattr(layer, "merge", peft_fixed_merge)
        monkeypatch.setattr(peft.PeftConfig, "_get_peft_version", staticmethod(lambda: "0.22.0"))
    monkeypatch.setitem(INPUTS, attention, lambda rng: rng.standard_normal((2, 5, 6)))


@pytest.mark.parametrize("finish", ["merge_and_unload", "unload"])
@pytest.mark.parametrize("config", [dict(target_modules=["self_attn"], r=2, lora_alpha=3),
                                    dict(target_modules=["self_attn"], lora_dropout=0.3, use_rslora=True,
                                         init_lora_weights="gaussian", modules_to_save=["head"])],
                         ids=["attention", "dropout_rslora_saved_head"])
def test_lora_on_multihead_attention_as_peft(peft_mha_fixed, tmp_path, config, finish):
    """print(model), trainable names and counts, outputs before and after 5 AdamW steps, the files (in_proj's
    pair as self_attn.lora_A/B, out_proj's as self_attn.base_layer.out_proj.lora_A/B), each library loading the
    other's folder, disable_adapter, merge_and_unload / unload (a plain MultiheadAttention with a plain
    out_proj again). LoRA dropout is not applied to the attention, as in PEFT (it merges for the forward)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        side_by_side(attention, tmp_path, finish=finish, **config)


def test_multihead_attention_lora_is_the_updated_attention():
    """Without PEFT: the output is torch's MultiheadAttention with W_in + s B A and W_out + s B_o A_o, as PEFT 0.22
    computes it. PEFT 0.21 computed W_out + 2 s B_o A_o (out_proj's update merged twice, huggingface/peft#3774)."""
    theirs, ours = both(attention, dict(target_modules=["self_attn"], r=2, lora_alpha=3, init_lora_weights=False))
    layer = ours.base_model.model.self_attn
    delta = {name: (m.lora_B["default"].weight.numpy() @ m.lora_A["default"].weight.numpy()) * m.scaling["default"]
             for name, m in (("in", layer), ("out", layer.base_layer.out_proj))}
    x = np.random.default_rng(9).standard_normal((2, 5, 6))
    for times in (1, 2):
        reference, _ = pair(attention)
        with torch.no_grad():
            reference.self_attn.in_proj_weight += torch.as_tensor(delta["in"])
            reference.self_attn.out_proj.weight += times * torch.as_tensor(delta["out"])
        t, m = run_both(reference, ours, x)
        if times == 1:
            np.testing.assert_allclose(m, t, rtol=0, atol=TOL)
        else:
            assert np.abs(m - t).max() > 1e-3
        if times == as_of_peft(2, 1):  # the one PEFT computes
            np.testing.assert_allclose(run_both(theirs, ours, x)[0], t, rtol=0, atol=TOL)


def test_multihead_attention_two_adapters_and_merging_as_peft(peft_mha_fixed):
    theirs, ours = both(attention, dict(target_modules=["self_attn"], r=2, init_lora_weights=False))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs.add_adapter("other", peft.LoraConfig(target_modules=["self_attn"], r=3, init_lora_weights=False))
        ours.add_adapter("other", ml_peft.LoraConfig(target_modules=["self_attn"], r=3, init_lora_weights=False))
    for model in (theirs, ours):
        model.base_model.set_adapter(["default", "other"])
    copy_trainable(theirs, ours)
    x = INPUTS[attention](np.random.default_rng(10))
    t, m = run_both(theirs, ours, x)
    np.testing.assert_allclose(m, t, rtol=0, atol=TOL)
    for model in (theirs, ours):
        model.merge_adapter(["other"])
    assert ours.base_model.model.self_attn.merged_adapters == ["other"]
    for model in (theirs, ours):
        model.merge_adapter(["default"])
    np.testing.assert_allclose(run_both(theirs, ours, x)[1], t, rtol=0, atol=1e-10)
    theirs_sd, ours_sd = theirs.state_dict(), ours.state_dict()
    for key in ("base_model.model.self_attn.base_layer.in_proj_weight",
                "base_model.model.self_attn.base_layer.out_proj.base_layer.weight"):
        np.testing.assert_allclose(ours_sd[key].numpy(), theirs_sd[key].numpy(), rtol=0, atol=TOL, err_msg=key)
    for model in (theirs, ours):
        model.unmerge_adapter()
    np.testing.assert_allclose(ours.base_model.model.self_attn.base_layer.in_proj_weight.numpy(),
                               theirs.base_model.model.self_attn.base_layer.in_proj_weight.detach().numpy(),
                               rtol=0, atol=TOL)
    ours.eval()
    with pytest.raises(TypeError, match="lora.MultiheadAttention does not support mixed adapter batches"):
        ours(ml.tensor(x), adapter_names=["default", "other"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours.delete_adapter("other")
    assert "other" not in ours.base_model.model.self_attn.base_layer.out_proj.lora_A


@pytest.mark.parametrize("kw,config,error,words", [
    (dict(kdim=4), {}, ValueError, "Only same embed for query/key/value is supported"),
    ({}, dict(use_dora=True), ValueError, "MultiheadAttention does not support DoRA"),
])
def test_multihead_attention_refusals_as_peft(kw, config, error, words):
    for nn in (torch.nn, ml.nn):
        lib = peft if nn is torch.nn else ml_peft
        model = nn.Sequential(nn.MultiheadAttention(8, 2, dtype=nn is torch.nn and torch.float64 or ml.float64, **kw))
        with pytest.raises(error, match=words):
            lib.get_peft_model(model, lib.LoraConfig(target_modules=["0"], **config))


# ==================================================================================================
# PeftMixedModel: get_peft_model(mixed=True) (refused before); LoRA is the one of PEFT's mixable methods here
# ==================================================================================================
def test_peft_mixed_model_of_lora_adapters_as_peft(tmp_path):
    """Two saved LoRA adapters loaded into a PeftMixedModel and active together: PEFT's class, print(model),
    trainable parameters, outputs, merge_and_unload; saving refused with PEFT's words."""
    first, second = dict(target_modules=["up"], init_lora_weights=False), \
        dict(target_modules=["up", "down"], r=2, init_lora_weights=False)
    for name, config in (("first", first), ("second", second)):
        both(nested, config)[1].save_pretrained(tmp_path / name)
    models = []
    for lib, base in zip((peft, ml_peft), pair(nested)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = lib.PeftMixedModel.from_pretrained(base, str(tmp_path / "first"), adapter_name="a")
            model.load_adapter(str(tmp_path / "second"), "b")
        model.set_adapter(["a", "b"])
        models.append(model)
    theirs, ours = models
    assert type(ours).__name__ == type(theirs).__name__ == "PeftMixedModel" and repr(ours) == repr(theirs)
    assert trainable(ours) == trainable(theirs) and ours.active_adapters == theirs.active_adapters == ["a", "b"]
    assert ours.get_nb_trainable_parameters() == theirs.get_nb_trainable_parameters()
    x = INPUTS[nested](np.random.default_rng(11))
    t, m = run_both(theirs, ours, x)
    np.testing.assert_allclose(m, t, rtol=0, atol=TOL)
    for model in models:
        with pytest.raises(NotImplementedError, match="Saving is not supported for PeftMixedModel"):
            model.save_pretrained(str(tmp_path / "mixed"))
        with pytest.raises(ValueError, match=r"Adapter\(s\) \['c'\] not found"):
            model.set_adapter(["a", "c"])
    t, m = run_both(theirs.merge_and_unload(), ours.merge_and_unload(), x)
    np.testing.assert_allclose(m, t, rtol=0, atol=1e-10)


def test_peft_mixed_model_refusals():
    """A method PEFT cannot mix: its ValueError and words; one it mixes but minilora has not beside LoRA: named."""
    for lib, base in zip((peft, ml_peft), pair(mlp)):
        with pytest.raises(ValueError, match="'VERA' is not compatible with the `PeftMixedModel`"):
            lib.get_peft_model(base, lib.VeraConfig(target_modules=["seq.0"]), mixed=True)
    model = ml_peft.get_peft_model(pair(mlp)[1], ml_peft.LoraConfig(target_modules=["seq.0"]), mixed=True)
    with pytest.raises(NotImplementedError, match="it has LoRA only"):
        model.add_adapter("ada", ml_peft.AdaLoraConfig(target_modules=["seq.2"], total_step=9))


# ==================================================================================================
# Siblings: the base model's own state dict under its original keys, and two PeftModel properties
# ==================================================================================================
@pytest.mark.parametrize("config", [dict(target_modules=["embed", "up"], use_dora=True, modules_to_save=["head"]),
                                    dict(target_modules=["up"], trainable_token_indices={"embed": [1, 3]})],
                         ids=["dora_saved_head", "trainable_tokens"])
def test_get_and_set_base_model_state_dict_as_peft(config):
    """PEFT's get_base_model_state_dict / set_base_model_state_dict (minilora had neither): the keys of the model
    before PEFT wrapped it, the adapters left out; loading one back (strict: PEFT's RuntimeError and words)."""
    theirs, ours = both(nested, config)
    assert_same_state(ml_peft.get_base_model_state_dict(ours), peft.get_base_model_state_dict(theirs))
    assert list(ml_peft.get_base_model_state_dict(ours)) == list(peft.get_base_model_state_dict(theirs))
    theirs_other, ours_other = pair(nested, seed=3)
    theirs_result = peft.set_base_model_state_dict(theirs, theirs_other.state_dict())
    ours_result = ml_peft.set_base_model_state_dict(ours, ours_other.state_dict())
    assert tuple(ours_result) == tuple(theirs_result) == ([], [])
    t, m = run_both(theirs, ours, INPUTS[nested](np.random.default_rng(12)))
    np.testing.assert_allclose(m, t, rtol=0, atol=TOL)
    for lib, model, other in ((peft, theirs, theirs_other), (ml_peft, ours, ours_other)):
        state = dict(list(other.state_dict().items())[1:], extra=other.state_dict()["head.bias"])
        with pytest.raises(RuntimeError, match=r"Missing key\(s\) in state_dict: \['embed.weight'\]\n\t"
                                               r"Unexpected key\(s\) in state_dict: \['extra'\]"):
            lib.set_base_model_state_dict(model, state)
        result = lib.set_base_model_state_dict(model, state, strict=False)
        assert (result.missing_keys, result.unexpected_keys) == (["embed.weight"], ["extra"])


def test_has_active_enabled_adapter_and_base_model_torch_dtype_as_peft():
    theirs, ours = both(nested, dict(target_modules=["up"]))
    assert ours.has_active_enabled_adapter is theirs.has_active_enabled_adapter is True
    with theirs.disable_adapter(), ours.disable_adapter():
        assert ours.has_active_enabled_adapter is theirs.has_active_enabled_adapter is False
    assert ours.has_active_enabled_adapter is theirs.has_active_enabled_adapter is True
    assert ours.base_model_torch_dtype is theirs.base_model_torch_dtype is None  # a model without .dtype
    llama = ml_peft.get_peft_model(ml.models.LlamaForCausalLM(ml.models.LlamaConfig(
        vocab_size=16, hidden_size=8, intermediate_size=16, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=2), dtype=ml.float64), ml_peft.LoraConfig(target_modules=["q_proj"]))
    assert llama.base_model_torch_dtype == ml.float64


def test_get_peft_config_as_peft():
    """PEFT's get_peft_config(dict) (minilora had config_from_dict only): the config class called with the fields."""
    fields = dict(peft_type="LORA", r=4, lora_alpha=8, target_modules=["up"], use_dora=True)
    ours, theirs = ml_peft.get_peft_config(fields), peft.get_peft_config(fields)
    assert type(ours).__name__ == type(theirs).__name__ == "LoraConfig"
    for field in ("r", "lora_alpha", "use_dora", "peft_type"):
        assert getattr(ours, field) == getattr(theirs, field), field
    assert sorted(ours.target_modules) == sorted(theirs.target_modules) == ["up"]
    for lib in (peft, ml_peft):
        with pytest.raises(TypeError, match="unexpected keyword argument 'bogus'"):
            lib.get_peft_config(dict(fields, bogus=1))


def test_dora_embedding_on_a_bfloat16_table_bit_for_bit():
    """A bfloat16 table with float32 adapters (autocast_adapter_dtype): PEFT's numbers bit for bit."""
    torch.manual_seed(0)
    theirs_base, ours_base = nested(torch.nn, torch.bfloat16), nested(ml.nn, ml.bfloat16)
    ours_base.load_state_dict({k: ml.tensor(v.float().numpy()).to(ml.bfloat16) for k, v in
                               theirs_base.state_dict().items()})
    config = dict(target_modules=["embed"], use_dora=True, init_lora_weights=False)
    theirs = peft.get_peft_model(theirs_base, peft.LoraConfig(**config))
    ours = ml_peft.get_peft_model(ours_base, ml_peft.LoraConfig(**config))
    ours_params = dict(ours.named_parameters())
    for name, p in theirs.named_parameters():
        if p.requires_grad:
            assert str(ours_params[name].dtype) == "float32"
            ours_params[name]._array[...] = p.detach().numpy()
    ids = np.random.default_rng(13).integers(0, 11, (2, 5))
    with torch.no_grad():
        expected = theirs(torch.as_tensor(ids)).float().numpy()
    np.testing.assert_array_equal(ours(ml.tensor(ids)).float().numpy(), expected)


def test_load_adapter_returns_the_load_result_and_evals_as_peft(tmp_path):
    """PEFT's load_adapter returns its load result (this adapter's missing / unexpected keys) and, unless
    is_trainable, puts the model in eval mode; minilora returned None and left the mode as it was."""
    theirs, ours = both(nested, dict(target_modules=["up"], modules_to_save=["head"]))
    ours.save_pretrained(tmp_path)
    for model in (theirs, ours):
        model.train()
        result = model.load_adapter(str(tmp_path), "again")
        assert (result.missing_keys, result.unexpected_keys) == ([], []) and not model.training
        model.train()
        model.load_adapter(str(tmp_path), "trainable", is_trainable=True)
        assert model.training


# ==================================================================================================
# The new layers and state dicts on the cuda device (CuPy's rules, tests/fake_cupy.py)
# ==================================================================================================
@pytest.mark.parametrize("build,config", [
    (nested, dict(target_modules=["embed", "up"], use_dora=True, init_lora_weights=False)),
    (attention, dict(target_modules=["self_attn"], init_lora_weights=False))], ids=["dora_embedding", "attention"])
def test_on_cuda_as_on_the_cpu(monkeypatch, tmp_path, build, config):
    """A cuda model takes CPU Tensors through set_peft_model_state_dict, hands out cuda Tensors, computes what the
    CPU model computes (forward, gradients, merged), and load_peft_weights loads to the GPU (PEFT's default)."""
    import fake_cupy
    fake_cupy.install(monkeypatch)
    monkeypatch.setitem(INPUTS, attention, lambda rng: rng.standard_normal((2, 5, 6)))
    cpu = ml_peft.get_peft_model(pair(build)[1], ml_peft.LoraConfig(**config))
    gpu = ml_peft.get_peft_model(pair(build)[1].to("cuda"), ml_peft.LoraConfig(**config))
    ml_peft.set_peft_model_state_dict(gpu, ml_peft.get_peft_model_state_dict(cpu))
    assert {v.device.type for v in ml_peft.get_peft_model_state_dict(gpu).values()} == {"cuda"}
    x = INPUTS[build](np.random.default_rng(14))
    on_cpu, on_gpu = cpu(ml.tensor(x)), gpu(ml.tensor(x, device="cuda"))
    np.testing.assert_allclose(on_gpu.numpy(force=True), on_cpu.numpy(), rtol=0, atol=TOL)
    on_cpu.sum().backward()
    on_gpu.sum().backward()
    gpu_params = dict(gpu.named_parameters())
    for name, p in cpu.named_parameters():
        if p.requires_grad:
            np.testing.assert_allclose(gpu_params[name].grad.numpy(force=True), p.grad.numpy(), rtol=0, atol=TOL)
    for model in (cpu, gpu):
        model.merge_adapter()
    with ml.no_grad():
        np.testing.assert_allclose(gpu(ml.tensor(x, device="cuda")).numpy(force=True), cpu(ml.tensor(x)).numpy(),
                                   rtol=0, atol=TOL)
    gpu.save_pretrained(tmp_path)
    assert {v.device.type for v in ml_peft.load_peft_weights(tmp_path).values()} == {"cuda"}


def test_prepare_model_for_kbit_training_and_cast_mixed_precision_params_as_peft():
    """PEFT's QLoRA-recipe helpers (minilora had neither), on a bfloat16 model that is not quantized: every
    parameter frozen and upcast to float32, the same Parameter objects; then LoRA, then the frozen ones down to
    bfloat16 and the trained ones float32."""
    torch.manual_seed(0)
    models = [nested(torch.nn, torch.bfloat16), nested(ml.nn, ml.bfloat16)]
    kinds = lambda model: [(n, str(p.dtype).split(".")[-1], p.requires_grad) for n, p in model.named_parameters()]  # noqa: E731
    before = [list(model.parameters()) for model in models]
    assert peft.prepare_model_for_kbit_training(models[0]) is models[0]
    assert ml_peft.prepare_model_for_kbit_training(models[1], use_gradient_checkpointing=True) is models[1]
    assert kinds(models[1]) == kinds(models[0]) and {k[1] for k in kinds(models[1])} == {"float32"}
    assert all(a is b for a, b in zip(before[1], models[1].parameters()))
    theirs = peft.get_peft_model(models[0], peft.LoraConfig(target_modules=["up"]))
    ours = ml_peft.get_peft_model(models[1], ml_peft.LoraConfig(target_modules=["up"]))
    peft.cast_mixed_precision_params(theirs, torch.bfloat16)
    ml_peft.cast_mixed_precision_params(ours, ml.bfloat16)
    assert kinds(ours) == kinds(theirs) and {k[1] for k in kinds(ours)} == {"float32", "bfloat16"}
