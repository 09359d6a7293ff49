"""PEFT 0.22 side by side with minilora, round 33: forms off the first-hour path that tests/peft_users_sweep.py found
differing (20 of its 243 forms at the start of the round). Each check runs the same script in both libraries on
one tiny float64 Llama (transformers' weights copied into minilora's: tests/test_peft_fields_r13.py's ``llama``):

* ``isinstance(module, LoraLayer)`` was False for a LoRA Embedding (and AdaLoRA's SVDLinear): PEFT's LoraLayer is
  the base of every LoRA layer kind. So ``helpers.rescale_adapter_scale(model, 0.5)`` left a LoRA'd embedding at
  its full scale (different logits, no error) and refused an AdaLoRA model;
* ``LoraLayer.set_scale`` / ``scale_layer`` / ``unscale_layer`` (diffusers' ``set_adapters`` and
  ``scale_lora_layers`` call them) did not exist;
* refusals in other words than PEFT's: per-sample ``adapter_names`` (training mode, merged adapters, a wrong
  length, an unknown name, a DoRA adapter), target_modules matching nothing (and PEFT's words when
  exclude_modules took the matches out), merging ``lora_bias=True`` into a layer without a bias, and loading
  weights of another shape (torch's load_state_dict words, every mismatched parameter). minilora's own hints
  are PEP 678 notes now, so ``str(error)`` is PEFT's.

Not followed: PEFT's ``scale_layer`` / ``unscale_layer`` skip an Embedding's adapters (they look in lora_A, where an
embedding's adapters are in lora_embedding_A); minilora scales them. Skipped when torch / transformers / peft are
not installed."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

import peft.helpers  # noqa: E402
import peft.tuners.lora  # noqa: E402

import minilora.lora as ml_peft  # noqa: E402
import minilora.lora.helpers  # noqa: E402

from test_peft_fields_r13 import ATOL, BASE, LIBRARIES, llama, logits  # noqa: E402
from test_peft_users_r27 import adapted, in_both  # noqa: E402

HELPERS = {"torch": peft.helpers, "minilora": ml_peft.helpers}
LORA_LAYER = {"torch": peft.tuners.lora.LoraLayer, "minilora": ml_peft.LoraLayer}


def name_of(lib):
    return "torch" if lib is torch else "minilora"


def two(lib, lib_peft, other=None, **config):
    """The tiny Llama with adapter "default" (seed 1) and "other" (seed 2, r=2, alpha 6), both drawn B != 0."""
    model = adapted(lib, lib_peft, **config)
    lib.manual_seed(2)
    model.add_adapter("other", lib_peft.LoraConfig(**dict(BASE, **dict(dict(r=2, lora_alpha=6), **(other or {})))))
    return model


def assert_same_arrays(got):
    ours, theirs = got["minilora"], got["torch"]
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=ATOL)


# ==================================================================================================
# every LoRA layer kind is a LoraLayer: rescale_adapter_scale reaches the embedding's and AdaLoRA's
# ==================================================================================================
def test_a_lora_embedding_is_a_lora_layer_as_peft():
    def script(lib, lib_peft):
        model = adapted(lib, lib_peft, target_modules=["embed_tokens", "q_proj", "lm_head"])
        return sorted(n for n, m in model.named_modules() if isinstance(m, LORA_LAYER[name_of(lib)]))
    got = in_both(script)
    assert got["minilora"] == got["torch"]
    assert "base_model.model.model.embed_tokens" in got["minilora"]


def test_rescale_adapter_scale_scales_an_embeddings_adapter_as_peft():
    def script(lib, lib_peft):
        model = two(lib, lib_peft, target_modules=["embed_tokens", "q_proj"], other=dict(target_modules=["embed_tokens"]))
        full = logits(lib, model)
        with HELPERS[name_of(lib)].rescale_adapter_scale(model, 0.5):
            inside = logits(lib, model)
        return inside, logits(lib, model), full
    got = in_both(script)
    assert_same_arrays(got)
    assert np.abs(got["minilora"][0] - got["minilora"][2]).max() > 1e-3  # (the half-scaled model is another one)


def test_rescale_adapter_scale_on_adalora_as_peft():
    def script(lib, lib_peft):
        base = llama(lib)
        lib.manual_seed(1)
        model = lib_peft.get_peft_model(base, lib_peft.AdaLoraConfig(
            init_r=4, target_r=2, total_step=8, lora_alpha=8, init_lora_weights=False, target_modules=["q_proj"]))
        with HELPERS[name_of(lib)].rescale_adapter_scale(model, multiplier=0.25):
            inside = logits(lib, model)
        return inside, logits(lib, model)
    assert_same_arrays(in_both(script))


def test_a_subclass_of_lora_layer_is_still_checked_as_a_class():
    """Guard (passes on the round's start too): a user's LoraLayer subclass (a custom LoRA Linear) is a class
    like any other -- a plain lora.Linear is not an instance of it."""
    class Mine(ml_peft.LoraLayer):
        pass
    model = adapted(*LIBRARIES["minilora"])
    layer = model.base_model.model.model.layers[0].self_attn.q_proj
    assert isinstance(layer, ml_peft.LoraLayer) and not isinstance(layer, Mine) and issubclass(Mine, ml_peft.Linear)


# ==================================================================================================
# set_scale / scale_layer / unscale_layer
# ==================================================================================================
@pytest.mark.parametrize("use_rslora", [False, True])
def test_set_scale_scale_layer_unscale_layer_as_peft(use_rslora):
    def script(lib, lib_peft):
        model = two(lib, lib_peft, use_rslora=use_rslora)
        layer = model.base_model.model.model.layers[0].self_attn.q_proj
        seen = []
        for call in (lambda: layer.set_scale("default", 0.5), lambda: layer.set_scale(adapter="other", scale=3),
                     lambda: layer.set_scale("absent", 2.0), lambda: layer.scale_layer(3.0),
                     lambda: layer.unscale_layer(2.0), lambda: layer.unscale_layer(scale=None)):
            call()
            seen += [layer.scaling["default"], layer.scaling["other"]]
        layer.set_scale("default", 0.5)
        return seen + [logits(lib, model)]
    got = in_both(script)
    assert got["minilora"][:-1] == pytest.approx(got["torch"][:-1], rel=1e-15)
    np.testing.assert_allclose(got["minilora"][-1], got["torch"][-1], rtol=1e-5, atol=ATOL)


def test_set_scale_on_an_embedding_as_peft_and_scale_layer_scales_it():
    def script(lib, lib_peft):
        model = adapted(lib, lib_peft, target_modules=["embed_tokens"], use_rslora=True)
        layer = model.base_model.model.model.embed_tokens
        layer.set_scale("default", 0.25)
        return layer.scaling["default"], logits(lib, model)
    got = in_both(script)
    assert got["minilora"][0] == got["torch"][0] == 0.25 * 8 / 2
    np.testing.assert_allclose(got["minilora"][1], got["torch"][1], rtol=1e-5, atol=ATOL)
    # PEFT's scale_layer skips an Embedding's adapters (it looks in lora_A): minilora scales them, as it says
    model = adapted(*LIBRARIES["minilora"], target_modules=["embed_tokens"])
    layer = model.base_model.model.model.embed_tokens
    layer.scale_layer(2)
    assert layer.scaling["default"] == 4.0
    layer.unscale_layer()
    assert layer.scaling["default"] == 2.0


# ==================================================================================================
# refusals in PEFT's words
# ==================================================================================================
def refusal(script):
    """``script`` raises in both libraries: (class name, message) of each."""
    def caught(lib, lib_peft):
        with pytest.raises(Exception) as error:
            script(lib, lib_peft)
        return type(error.value).__name__, str(error.value)
    return in_both(caught)


def mixed(mode="eval", names=("other", "default"), dora=False, merged=False):
    def script(lib, lib_peft):
        model = two(lib, lib_peft, use_dora=dora)
        model.train(mode == "train")
        if merged:
            model.merge_adapter()
        model(input_ids=lib.tensor([[1, 5, 9], [1, 22, 3]]), adapter_names=list(names))
    return script


@pytest.mark.parametrize("script, words", [
    (mixed(mode="train"), "Cannot pass `adapter_names` when the model is in training mode."),
    (mixed(names=["other", "nope"]), "Trying to infer with non-existing adapter(s): nope"),
    (mixed(names=["other", "default", "other"]), "Length of `adapter_names` should be the same as the number of "
                                                 "inputs, but got 3 and 2 respectively."),
    (mixed(merged=True), "Cannot pass `adapter_names` when there are merged adapters, please call "
                         "`unmerge_adapter` first."),
    (mixed(dora=True), "Cannot pass `adapter_names` when DoRA is enabled."),
], ids=["training", "unknown", "length", "merged", "dora"])
def test_mixed_batch_refusals_in_pefts_words(script, words):
    got = refusal(script)
    assert got["minilora"] == got["torch"] == ("ValueError", words)


@pytest.mark.parametrize("config, words", [
    (dict(target_modules="q_proj"), "Target modules q_proj not found in the base model. Please check the target "
                                    "modules and try again."),
    (dict(target_modules=["q_proj"], layers_to_transform=[5], layers_pattern="layers"),
     "Target modules {'q_proj'} not found in the base model. Please check the target modules and try again. Note: "
     "You specified 'layers_to_transform': [5]. You also specified 'layers_pattern': layers."),
    (dict(target_modules=["q_proj"], exclude_modules=["q_proj"]), "No modules were targeted for adaptation."),
], ids=["string", "layers", "excluded"])
def test_target_modules_matching_nothing_in_pefts_words(config, words):
    got = refusal(lambda lib, lib_peft: adapted(lib, lib_peft, **config))
    assert got["minilora"] == got["torch"]
    assert got["minilora"][0] == "NoMatchingPeftModuleError" and got["minilora"][1].startswith(words)


def test_a_no_match_error_keeps_minilora_s_hint_as_a_note():
    with pytest.raises(ml_peft.NoMatchingPeftModuleError) as error:
        adapted(*LIBRARIES["minilora"], target_modules=["nope"])
    assert "Module names in this model:" in error.value.__notes__[0]


def test_merging_a_lora_bias_into_a_layer_without_bias_in_pefts_words():
    def script(lib, lib_peft):
        adapted(lib, lib_peft, lora_bias=True).merge_and_unload(safe_merge=True)
    got = refusal(script)
    assert got["minilora"] == got["torch"] == (
        "RuntimeError", "Impossible to merge LoRA with `lora_bias=True` because the base layer has no bias.")


def test_loading_weights_of_another_rank_is_torchs_load_state_dict_error(tmp_path):
    def from_state_dict(lib, lib_peft):
        state = lib_peft.get_peft_model_state_dict(two(lib, lib_peft), adapter_name="other")
        lib_peft.set_peft_model_state_dict(adapted(lib, lib_peft, task_type="CAUSAL_LM"), state)

    def from_folder(lib, lib_peft):
        folder = str(tmp_path / name_of(lib))
        two(lib, lib_peft).save_pretrained(folder)
        model = lib_peft.PeftModel.from_pretrained(llama(lib), folder)
        model.load_adapter(f"{folder}/other", "default")  # (r=2 into the r=4 adapter of that name)
    for script, model_class in ((from_state_dict, "PeftModelForCausalLM"), (from_folder, "PeftModel")):
        got = refusal(script)
        assert got["minilora"][1] == got["torch"][1]
        assert got["minilora"][1].startswith(f"Error(s) in loading state_dict for {model_class}:\n\tsize mismatch "
                                             "for base_model.model.model.layers.0.self_attn.q_proj.lora_A.default")
        assert got["minilora"][1].count("size mismatch") == 8  # every mismatched parameter, as torch lists them


# ==================================================================================================
# torch_device="cpu": taken, as PEFT's (the adapter's weights sit on the model's device either way)
# ==================================================================================================
def test_loading_with_torch_device_cpu_as_peft(tmp_path):
    def script(lib, lib_peft):
        folder = str(tmp_path / name_of(lib))
        two(lib, lib_peft).save_pretrained(folder)
        model = lib_peft.PeftModel.from_pretrained(llama(lib), folder, torch_device="cpu", is_trainable=True)
        model.load_adapter(f"{folder}/other", "again", False, "cpu")  # (positional: is_trainable, torch_device)
        first = logits(lib, model)
        model.set_adapter("again")
        return first, logits(lib, model)
    assert_same_arrays(in_both(script))
    with pytest.raises(NotImplementedError, match="torch_device='cuda:7'"):  # a copy minilora does not make
        LIBRARIES["minilora"][1].PeftModel.from_pretrained(llama(LIBRARIES["minilora"][0]), str(tmp_path / "minilora"),
                                                           torch_device="cuda:7")
