"""PEFT 0.21 side by side with minilora, round 27: what a PEFT user reaches past the paths earlier rounds tested
(a sweep of LoraConfig fields, several adapters, the saved files and loading them both ways; each row below is
where the sweep found minilora differing). Each check runs the same script in both libraries on one tiny float64
Llama (transformers' weights copied into minilora's):

* ``with model.disable_adapter():`` after ``base_model.disable_adapter_layers()``: PEFT leaves the adapters
  disabled on the way out (the context restores the state it found); minilora enabled them;
* disabling adapters whose ``bias`` is "all" / "lora_only" (trained base biases stay in the output), and the
  context entered with some layers enabled and others not: PEFT's two warnings, which minilora did not give;
* ``layers_to_transform=[]``: PEFT reads an empty list as no layer filter and adapts every layer; minilora
  adapted none (NoMatchingPeftModuleError);
* the ``README.md`` card's front matter: PEFT tags the adapter ``base_model:adapter:<base>`` (how the Hub
  links an adapter to its base), "lora" for a LoRA adapter only and "transformers" for a transformers-format
  base, sorted; minilora wrote its peft_type lower-cased ("vera") and neither of the others;
* ``add_weighted_adapter(..., svd_driver=...)`` on a CPU model: torch's RuntimeError (``driver=`` is for CUDA);
  minilora ignored the driver;
* an adapter_config.json holding ``runtime_config`` (settings for one run) or a field of a newer PEFT: PEFT's
  warnings, in its words (minilora: none, and its own words);
* saving an adapter after ``resize_token_embeddings`` (new tokens) on a base loaded from a folder: PEFT's "auto"
  saves both embedding tables (the base cannot give the new rows), with its warning; minilora saved neither, so
  the adapter loaded on the base again had random new rows.

Skipped when torch / transformers / peft are not installed."""
import json
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

from minilora import models  # noqa: E402

# (the two libraries, the base LoRA config and the tiny float64 Llama of round 13's field survey)
from test_peft_fields_r13 import ATOL, BASE, LIBRARIES, llama, logits  # noqa: E402


def adapted(lib, lib_peft, **config):
    """A PeftModel of the tiny Llama, its adapter drawn from seed 1 (init_lora_weights=False: B is not zero)."""
    base = llama(lib)  # (seeds torch itself)
    lib.manual_seed(1)
    return lib_peft.get_peft_model(base, lib_peft.LoraConfig(**dict(BASE, **config)))


def in_both(script):
    """``script(lib, lib_peft)`` in each library: {"torch": result, "minilora": result}."""
    return {name: script(lib, lib_peft) for name, (lib, lib_peft) in LIBRARIES.items()}


def warned(run):
    """What ``run()`` warned, as a sorted list of messages (transformers' own deprecations left out)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run()
    return sorted({str(w.message) for w in caught if not issubclass(w.category, FutureWarning)})


# ==================================================================================================
# disable_adapter(): the state it finds, and PEFT's warnings
# ==================================================================================================
def test_disable_adapter_context_keeps_adapters_that_were_disabled_before_disabled_as_peft():
    def script(lib, lib_peft):
        model = adapted(lib, lib_peft)
        base = logits(lib, model.get_base_model())  # (the adapters run: not the base's logits)
        model.base_model.disable_adapter_layers()
        with model.disable_adapter():
            pass
        return logits(lib, model), base, model.get_model_status().enabled
    got = in_both(script)
    for adapter_off, adapter_on, enabled in got.values():
        assert enabled is False
        assert np.abs(adapter_off - adapter_on).max() > 1e-3  # still disabled: not the adapted model
    np.testing.assert_allclose(got["minilora"][0], got["torch"][0], rtol=1e-5, atol=ATOL)


@pytest.mark.parametrize("bias", ["all", "lora_only"])
def test_disabling_adapters_that_train_a_bias_warns_as_peft(bias):
    def script(lib, lib_peft):
        model = adapted(lib, lib_peft, bias=bias)

        def disable_in_context():
            with model.disable_adapter():
                pass
        return warned(disable_in_context), warned(model.base_model.disable_adapter_layers)
    got = in_both(script)
    assert got["minilora"] == got["torch"]
    assert all(f"bias configured to be '{bias}'" in " ".join(messages) for messages in got["minilora"])


def test_disable_adapter_on_partly_disabled_layers_warns_and_enables_all_as_peft():
    def script(lib, lib_peft):
        model = adapted(lib, lib_peft)
        model.base_model.model.model.layers[0].self_attn.q_proj.enable_adapters(False)

        def disable_in_context():
            with model.disable_adapter():
                pass
        return warned(disable_in_context), logits(lib, model), model.get_model_status().enabled
    got = in_both(script)
    assert got["minilora"][0] == got["torch"][0] and "most likely unintentional" in got["minilora"][0][0]
    assert got["minilora"][2] is got["torch"][2] is True
    np.testing.assert_allclose(got["minilora"][1], got["torch"][1], rtol=1e-5, atol=ATOL)


# ==================================================================================================
# layers_to_transform=[]: no layer filter
# ==================================================================================================
@pytest.mark.parametrize("layers_pattern", [None, "layers"])
def test_empty_layers_to_transform_adapts_every_layer_as_peft(layers_pattern):
    def script(lib, lib_peft):
        model = adapted(lib, lib_peft, layers_to_transform=[], layers_pattern=layers_pattern)
        return sorted(model.targeted_module_names), logits(lib, model)
    got = in_both(script)
    assert got["minilora"][0] == got["torch"][0] and len(got["torch"][0]) == 4  # q and v of both layers
    np.testing.assert_allclose(got["minilora"][1], got["torch"][1], rtol=1e-5, atol=ATOL)


# ==================================================================================================
# the model card's front matter
# ==================================================================================================
def front_matter(folder):
    """The card's YAML block, less minilora's own tag (its provenance, as a base's model_tags would be added)."""
    lines = (folder / "README.md").read_text().split("---\n")[1].splitlines()
    return [line for line in lines if line != "- minilora"]


@pytest.mark.parametrize("config_class, config", [
    ("LoraConfig", dict(r=2, target_modules=["q_proj"])),
    ("LoraConfig", dict(r=2, target_modules=["q_proj"], task_type="CAUSAL_LM")),
    ("VeraConfig", dict(r=2, target_modules=["q_proj"])),
])
def test_model_card_front_matter_as_peft(tmp_path, config_class, config):
    """A base loaded from a folder (named by its path in both libraries): PEFT's keys and tags."""
    llama(torch).save_pretrained(tmp_path / "base")
    named = {"torch": transformers.LlamaForCausalLM, "minilora": models.LlamaForCausalLM}
    for name, (lib, lib_peft) in LIBRARIES.items():
        base = named[name].from_pretrained(str(tmp_path / "base"))
        model = lib_peft.get_peft_model(base, getattr(lib_peft, config_class)(**config))
        model.save_pretrained(str(tmp_path / name))
    assert front_matter(tmp_path / "minilora") == front_matter(tmp_path / "torch")
    assert f"- base_model:adapter:{tmp_path / 'base'}" in front_matter(tmp_path / "minilora")


@pytest.mark.parametrize("name, expected", [
    ("org/model-1B", "org/model-1B"), ("", "''"), ("base_model:adapter:", "'base_model:adapter:'"),
    ("true", "'true'"), ("12", "'12'"), ("it's", "it's"), ("a: b", "'a: b'"), ("@x", "'@x'"),
])
def test_card_values_are_yaml_that_reads_back(name, expected):
    yaml = pytest.importorskip("yaml")
    from minilora.lora.save import _yaml_scalar
    assert _yaml_scalar(name) == expected == yaml.safe_dump([name]).strip()[2:]
    assert yaml.safe_load(f"- {_yaml_scalar(name)}") == [name]


# ==================================================================================================
# add_weighted_adapter(svd_driver=...) on the CPU
# ==================================================================================================
def test_svd_driver_on_a_cpu_model_is_torchs_error_before_any_change():
    def script(lib, lib_peft):
        model = adapted(lib, lib_peft)
        lib.manual_seed(2)
        model.add_adapter("other", lib_peft.LoraConfig(**dict(BASE, r=2)))
        with pytest.raises(RuntimeError, match="`driver=` is only supported on CUDA inputs") as error:
            model.add_weighted_adapter(["default", "other"], [1.0, 0.5], "mix", combination_type="svd",
                                       svd_driver="gesvd")
        # (a driver is not used by the other combinations: no error there, in both)
        model.add_weighted_adapter(["default", "other"], [1.0, 0.5], "cat", combination_type="cat",
                                   svd_driver="gesvd")
        return str(error.value), sorted(model.peft_config)
    got = in_both(script)
    assert got["minilora"][0] == got["torch"][0]
    assert got["minilora"][1] == ["cat", "default", "other"]  # (PEFT's leaves a half-made "mix" behind)


# ==================================================================================================
# adapter_config.json: runtime_config and a newer PEFT's fields
# ==================================================================================================
@pytest.mark.parametrize("extra, words", [
    ({"runtime_config": {"ephemeral_gpu_offload": False}}, "contains a `runtime_config` key. This is ignored."),
    ({"a_newer_field": 3}, "Unexpected keyword arguments ['a_newer_field'] for class LoraConfig, these are ignored."),
])
def test_config_file_keys_that_are_ignored_warn_with_pefts_words(tmp_path, extra, words):
    def script(lib, lib_peft):
        folder = tmp_path / lib.__name__
        adapted(lib, lib_peft).save_pretrained(str(folder))
        config = json.loads((folder / "adapter_config.json").read_text())
        (folder / "adapter_config.json").write_text(json.dumps(dict(config, **extra)))
        found = {}

        def load():
            found["model"] = lib_peft.PeftModel.from_pretrained(llama(lib), str(folder))
        said = warned(load) + warned(lambda: lib_peft.LoraConfig.from_pretrained(str(folder)))
        return [message for message in said if words in message], logits(lib, found["model"])
    got = in_both(script)
    assert len(got["minilora"][0]) == len(got["torch"][0]) == 2
    np.testing.assert_allclose(got["minilora"][1], got["torch"][1], rtol=1e-5, atol=ATOL)


# ==================================================================================================
# a resized vocabulary: the tables go in the file
# ==================================================================================================
NEW_VOCAB = 70  # the tiny Llama's 64 tokens and 6 new ones


def resized_base(lib, folder, rows=None):
    """The base loaded from ``folder`` and resized to NEW_VOCAB; the new rows (and head rows) set to ``rows``
    ({name: array}, the same in both libraries), else zero."""
    base = (transformers.LlamaForCausalLM if lib is torch else models.LlamaForCausalLM).from_pretrained(str(folder))
    base.resize_token_embeddings(NEW_VOCAB)
    with lib.no_grad():
        tables = {"embed": base.get_input_embeddings().weight, "head": base.get_output_embeddings().weight}
        for name, table in tables.items():
            new = np.zeros((NEW_VOCAB - 64, table.shape[1])) if rows is None else rows[name]
            table[64:] = lib.tensor(new, dtype=table.dtype)
    return base


@pytest.mark.parametrize("config", [{}, dict(trainable_token_indices=[64, 65]), dict(modules_to_save=["lm_head"])])
def test_adapter_of_a_resized_vocabulary_saves_the_tables_and_loads_back_as_peft(tmp_path, config):
    llama(torch).save_pretrained(tmp_path / "base")
    gen = np.random.default_rng(0)
    rows = {"embed": gen.standard_normal((NEW_VOCAB - 64, 32)), "head": gen.standard_normal((NEW_VOCAB - 64, 32))}
    expected, files = {}, {}
    for name, (lib, lib_peft) in LIBRARIES.items():
        lib.manual_seed(1)
        model = lib_peft.get_peft_model(resized_base(lib, tmp_path / "base", rows),
                                        lib_peft.LoraConfig(**dict(BASE, **config)))
        expected[name] = logits(lib, model)
        assert any("embedding layer has been resized" in m for m in warned(lambda: model.save_pretrained(
            str(tmp_path / name))))
        files[name] = {k: v for k, v in load_adapter_file(tmp_path / name).items() if "lora_" not in k}
    assert sorted(files["minilora"]) == sorted(k for k in files["torch"] if not _wrapper_inside(k))
    for key, value in files["minilora"].items():
        np.testing.assert_array_equal(value, files["torch"][key], err_msg=key)
    for reader, (lib, lib_peft) in LIBRARIES.items():  # each library loads the other's folder on a base whose
        writer = "torch" if reader == "minilora" else "minilora"  # new rows are zero: the file's come back
        loaded = lib_peft.PeftModel.from_pretrained(resized_base(lib, tmp_path / "base"), str(tmp_path / writer))
        np.testing.assert_allclose(logits(lib, loaded), expected[writer], rtol=1e-5, atol=ATOL)


def _wrapper_inside(key):
    """PEFT also writes a wrapped table's insides (the trainable tokens' base layer, modules_to_save's original and
    copy): not copied (minilora loads them, which this test's loading of PEFT's folder checks)."""
    return any(inside in key for inside in (".token_adapter.base_layer.", ".original_module.", ".modules_to_save."))


def load_adapter_file(folder):
    from safetensors.numpy import load_file
    return load_file(str(folder / "adapter_model.safetensors"))
