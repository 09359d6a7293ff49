"""Which PEFT the oracle tests run against, and what changed in PEFT 0.22.0 that minilora follows.

minilora mirrors PEFT 0.22.0 (setup.py's ``[interop]`` pin). The oracle tests also run against 0.21.2 (a user
who has not upgraded yet); where 0.22.0 deliberately changed PEFT's behaviour (a bug fix, a new default, a new
field), minilora has 0.22.0's, and a test compares it with 0.21.2 through one of these named differences --
never by skipping the comparison. Import after ``pytest.importorskip("peft")``.

What 0.22.0 changed for a LoRA user (diff of the two installed packages, its docstrings and comments), and the
decision -- followed: a deliberate fix, default or feature of 0.22; kept: a 0.22 regression:

* followed, fixes: AdaLoRA's ranknum stays frozen when cast to the base's dtype; an adapter's modules follow the
  layer's train/eval mode (set_training); modules_to_save names match whole dotted parts; unload() gives the
  original module back; MultiheadAttention counts out_proj's update once (#3774), doubling older files' lora_B
  on load; a LoRA conv's lora_A takes the base's dilation and padding_mode; DoRA conv's repr prefix once;
  add_weighted_adapter refuses DoRA, combines lora_bias, drops rsLoRA; rank_pattern/alpha_pattern keep their
  order in adapter_config.json; SEQ_CLS's classifier names added once, in a new list.
* followed, new defaults/words: "pre_classifier" among the classifier names; load_adapter warns about missing
  keys (strict_adapter_check); PeftModel.set_adapter's TypeError; the rank_pattern warning's words; MHA's
  lora_bias refused; prepare_model_for_kbit_training's activation_checkpointing_kwargs.
* followed, new features: LoraConfig.astra_config (refused unless None: Astra needs preprocess_astra's
  activation statistics), init_lora_weights="nora" (implemented), PeftType.PACA (named, refused).
* not followed (a 0.22 regression): MultiheadAttention.unmerge now runs out_proj.unmerge() in place on the
  weight its forward saved for backward, so gradients upstream of the attention use W_out instead of
  W_out + dW (0.21's were consistent with its own forward). No upstream issue found; the oracle in
  test_peft_r7.peft_mha_fixed patches it.
* not minilora's concern: tensor/FSDP2 parallel paths, other methods (PaCA, Shadow, ...), healthcheck /
  print_healthcheck, get_additive_delta, create_dummy_lora_config, replace_lora_weights_pissa (not implemented).
"""
import peft
import torch
from packaging.version import Version

PEFT_VERSION = Version(peft.__version__)
PEFT_022 = PEFT_VERSION >= Version("0.22.0")


def as_of_peft(before_022, since_022):
    """The value the installed PEFT gives: ``since_022`` from 0.22.0 on (minilora's), else ``before_022``."""
    return since_022 if PEFT_022 else before_022


# LoraConfig fields that 0.22.0 added (written to adapter_config.json at their default): minilora writes them;
# a 0.21 PEFT writes none of them
LORA_CONFIG_FIELDS_NEW_IN_022 = {"astra_config": None}


def peft_config_file_as_022(config_dict):
    """A LoRA adapter_config.json dict written by the installed PEFT, as 0.22.0 writes it (its new fields at
    their defaults): what minilora's file must equal. A 0.22 file is returned unchanged."""
    if PEFT_022 or config_dict.get("peft_type") != "LORA":
        return config_dict
    return {**config_dict, **LORA_CONFIG_FIELDS_NEW_IN_022}


def freeze_ranknum_as_022(peft_model):
    """PEFT 0.21's AdaLoRA ``ranknum`` turns trainable where the adapter is cast to its base layer's dtype
    (``ParameterDict[name] = p.to(dtype)`` registers a new Parameter, requires_grad=True), so AdamW's weight
    decay shrinks the scale ``alpha / ranknum``. 0.22.0 restores the flag (frozen, as created): the oracle
    for minilora is 0.21 with that fix applied. Returns the names it froze (none on 0.22)."""
    frozen = [name for name, p in peft_model.named_parameters() if ".ranknum." in name and p.requires_grad]
    for name, p in peft_model.named_parameters():
        if name in frozen:
            p.requires_grad = False
    assert not frozen or not PEFT_022, f"PEFT {PEFT_VERSION} left ranknum trainable: {frozen}"
    return frozen


def classifier_modules_to_save(given, since_022=PEFT_022):
    """The ``modules_to_save`` that a SEQ_CLS / TOKEN_CLS model gives a config that held ``given``, as the
    installed PEFT writes it (``since_022=True``: as 0.22 and minilora write it): 0.22 adds "classifier",
    "score" and "pre_classifier", each once, in a new list; 0.21 extended the caller's list with "classifier"
    and "score", duplicates and all."""
    given = list(given or [])
    if since_022:
        return given + [name for name in ("classifier", "score", "pre_classifier") if name not in given]
    return given + ["classifier", "score"]


# Warnings PEFT 0.22 reworded: (0.21's words, 0.22's words). minilora writes 0.22's
WORDS_CHANGED_IN_022 = [
    ("did not match any targeted module and were ignored", "did not match any targeted module or parameter and "
                                                           "were ignored"),
]


def peft_words_as_022(message):
    """A message of the installed PEFT in 0.22's words (unchanged on 0.22)."""
    if not PEFT_022:
        for old, new in WORDS_CHANGED_IN_022:
            message = message.replace(old, new)
    return message


def conv_lora_as_022(peft_model):
    """PEFT 0.21 built a LoRA convolution's lora_A without the base's dilation and padding_mode (a reflect-padded
    base's A padded with zeros; a dilated base's two branches disagreed in shape); 0.22 gives A both. The oracle
    on 0.21: its lora_A convs given them (torch's conv forward reads both attributes, print(model) shows them).
    Returns how many it changed (none on 0.22)."""
    from peft.tuners.lora.layer import _ConvNd
    changed = 0
    for layer in peft_model.modules():
        if isinstance(layer, _ConvNd):
            base = layer.get_base_layer()
            for conv in layer.lora_A.values():
                if (conv.dilation, conv.padding_mode) != (base.dilation, base.padding_mode):
                    conv.dilation, conv.padding_mode = base.dilation, base.padding_mode
                    changed += 1
    assert not changed or not PEFT_022, f"PEFT {PEFT_VERSION} built lora_A without the base conv's settings"
    return changed


def peft_repr_as_022(text):
    """``print(model)`` of the installed PEFT as 0.22 prints it: 0.21 printed a DoRA convolution's magnitude
    with its class prefix twice ("lora.dora.lora.dora.DoraConv2dLayer()"; the embedding's still is, in 0.22)."""
    return text if PEFT_022 else text.replace("lora.dora.lora.dora.DoraConv", "lora.dora.DoraConv")


def unload_as_022(peft_model):
    """``peft_model.unload()`` as PEFT 0.22 does it: a modules_to_save wrapper gives its original module back
    (0.21's unload kept the active adapter's trained copy in its place)."""
    from peft.utils.other import ModulesToSaveWrapper
    originals = {name: module.original_module for name, module in peft_model.base_model.model.named_modules()
                 if isinstance(module, ModulesToSaveWrapper)}
    model = peft_model.unload()
    for name, module in originals.items():
        if model.get_submodule(name) is not module:
            assert not PEFT_022, f"PEFT {PEFT_VERSION}'s unload kept a trained copy of {name}"
            model.set_submodule(name, module)
    return model


def modules_to_save_matched_differently_by_021(modules_to_save, module_names):
    """The module names that PEFT 0.21 wraps for these ``modules_to_save`` entries and 0.22 (minilora) does not:
    0.21 matched an entry as a bare suffix ("norm" wrapped every "...layernorm"), 0.22 only the full name or its
    last dotted parts (``_is_valid_match``). Empty on 0.22."""
    if PEFT_022:
        return []
    return sorted(key for key in module_names for name in modules_to_save or ()
                  if key.endswith(name) and not (key == name or key.endswith("." + name)))


def weighted_adapter_as_022(peft_model, adapters, weights, adapter_name):
    """What PEFT 0.22's add_weighted_adapter changed, applied to 0.21's result (a no-op on 0.22): the new adapter
    has no rsLoRA (scaling 1: 0.21 kept adapters[0]'s use_rslora, scaling sqrt(r)), and its lora_B bias is
    ``sum w s b`` of the sources with a bias (0.21 left it at its initial value, and lora_bias as adapters[0]'s)."""
    from peft.tuners.lora import LoraLayer
    if PEFT_022 or adapter_name not in peft_model.peft_config:
        return
    config = peft_model.peft_config[adapter_name]
    biased = [a for a in adapters if peft_model.peft_config[a].lora_bias]
    config.use_rslora, config.lora_bias = False, bool(biased)
    for layer in peft_model.modules():
        if isinstance(layer, LoraLayer) and adapter_name in layer.scaling:
            layer.scaling[adapter_name] = config.lora_alpha / config.r
            bias = getattr(layer.lora_B[adapter_name], "bias", None) if adapter_name in layer.lora_B else None
            if bias is not None:
                with torch.no_grad():
                    bias.zero_()
                    for adapter, weight in zip(adapters, weights):
                        if adapter in layer.lora_B and layer.lora_bias[adapter]:
                            bias += weight * layer.scaling[adapter] * layer.lora_B[adapter].bias


def lora_config_fields_as_022(names):
    """A LoraConfig field list of the installed PEFT as 0.22 has it: 0.21's lacks astra_config (after
    corda_config)."""
    if PEFT_022 or "astra_config" in names or "corda_config" not in names:
        return list(names)
    at = list(names).index("corda_config") + 1
    return list(names)[:at] + ["astra_config"] + list(names)[at:]


# Parameters PEFT 0.22 added (before **kwargs): {qualified name: [names, in order, after the last 0.21 one]}
PARAMETERS_NEW_IN_022 = {"PeftModel.from_pretrained": ["strict_adapter_check"],
                         "PeftModel.load_adapter": ["strict_adapter_check"]}


def peft_parameters_as_022(qualname, names):
    """A PEFT signature's parameter names as 0.22 has them."""
    return list(names) if PEFT_022 else list(names) + PARAMETERS_NEW_IN_022.get(qualname, [])
