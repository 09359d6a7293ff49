"""``get_peft_model``, ``PeftModel`` and the tuners (``LoraModel``, ``VeraModel``): PEFT's API.

The wrapping is PEFT's, so names are PEFT's::

    PeftModel
    └── base_model: LoraModel            (finds the target Linears and swaps in LoRA layers)
        └── model: LlamaForCausalLM      (the original model, changed in place)
            └── model.layers.0.self_attn.q_proj: lora.Linear
                ├── base_layer: Linear   (frozen W0)
                ├── lora_A.default: Linear in -> r
                └── lora_B.default: Linear r -> out

hence ``base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight``.
"""
import contextlib
import copy
import functools
import math
import os
import re
import warnings
import weakref

import numpy as np

from .. import dtypes
from ..checkpoint import one_version_of
from ..nn import Conv1d as _NNConv1d
from ..nn import Conv2d as _NNConv2d
from ..nn import Embedding as _NNEmbedding
from ..nn import Linear as _NNLinear
from ..nn import Module, ModuleDict, ModuleList
from ..nn import MultiheadAttention as _NNMultiheadAttention
from ..random import Generator, fork_rng
from ..device import META as _META
from ..device import device as _device
from ..tensor import Tensor, with_note
from . import save as _io
from .config import PeftConfig, TaskType, config_from_dict
from .conv import Conv1d as LoraConv1d
from .conv import Conv2d as LoraConv2d
from .alora import alora_offsets_for_forward, alora_offsets_for_generate
from .inits import save_converted_to_lora
from .mha import MultiheadAttention as LoraMultiheadAttention
from .layers import (BASE_ADAPTER, BaseTunerLayer, BufferDict, Embedding, Linear, ModulesToSaveWrapper, ParameterDict,
                     ParamWrapper, TrainableTokensLayer, TrainableTokensWrapper, VeraLinear)

__all__ = ["prepare_model_for_kbit_training", "cast_mixed_precision_params", "get_peft_model", "PeftModel",
           "PeftMixedModel", "PeftModelForCausalLM", "AutoPeftModelForCausalLM", "LoraModel",
           "VeraModel", "TrainableTokensModel", "target_module_matches", "PeftError", "NoMatchingPeftModuleError"]


class PeftError(Exception):
    """PEFT's base error (peft.utils.error.PeftError)."""


class NoMatchingPeftModuleError(PeftError, ValueError):
    """An adapter's target_modules matched no module of the base model (PEFT's error of that name, a ValueError):
    a program that adds such an adapter on purpose catches this one, not every ValueError."""


class AdapterNameError(ValueError, KeyError):
    """A name that cannot be an adapter's. For a name with a '.', PEFT's error is torch's ModuleDict KeyError
    ("module name can't contain \".\""); minilora also refuses paths, which save_pretrained would make folders of."""
    __str__ = Exception.__str__  # the message as written (KeyError's str would quote it)


# What PEFT adapts when target_modules is None (its TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING).
DEFAULT_TARGET_MODULES = {model_type: ["q_proj", "v_proj"] for model_type in ("llama", "mistral", "qwen2", "qwen3")}


# ==================================================================================================
# Which modules does a config target? (PEFT's check_target_module_exists, rule for rule)
# ==================================================================================================
def names_module(key, name):
    """Whether ``name`` (a modules_to_save / trainable_token_indices entry) names the module ``key``: the full
    name, or its last part(s) after a dot (PEFT 0.22's ``_is_valid_match``; 0.21's bare ``endswith`` also
    wrapped "input_layernorm" for "layernorm" and "model.norm" for "norm" in every "...layernorm")."""
    return key == name or key.endswith("." + name)


def _matches_list_or_regex(patterns, key):
    """A regex string must match the whole name; a list entry must equal it or be its last part(s)."""
    if isinstance(patterns, str):
        return re.fullmatch(patterns, key) is not None
    return key in patterns or any(key.endswith("." + name) for name in patterns)


def _layer_index(key, layers_pattern):
    """The first layer number in ``key`` (``model.layers.3.mlp.up_proj`` -> 3), PEFT's regexes."""
    if not layers_pattern:
        match = re.match(r".*?\.[^.]*\.(?P<idx>\d+)\.", key)
    else:
        patterns = [layers_pattern] if isinstance(layers_pattern, str) else layers_pattern
        match = None
        for pattern in patterns:
            match = re.match(rf"(?:^|.*?\.){pattern}\.(?P<idx>\d+)\.", key)
            if match:
                break
    return int(match["idx"]) if match else None


def target_module_matches(config, key):
    """Does the module named ``key`` get an adapter under ``config``?"""
    if getattr(config, "exclude_modules", None) and _matches_list_or_regex(config.exclude_modules, key):
        return False
    if config.modules_to_save and any(re.match(rf"(^|.*\.){m}($|\..*)", key) for m in config.modules_to_save):
        return False  # a module that is trained in full never also gets an adapter
    if not _matches_list_or_regex(config.target_modules, key):
        return False
    # PEFT applies layers_to_transform only to a suffix match: a target that IS the full name
    # (a top-level "lm_head") is adapted whatever the layers; an empty list names no layer filter (PEFT's
    # `len(layer_indexes) != 0`), not "no layer"
    if isinstance(config.target_modules, str) or config.layers_to_transform in (None, []) or \
            key in config.target_modules:
        return True
    index = _layer_index(key, config.layers_pattern)
    layers = config.layers_to_transform
    return index is not None and (index == layers if isinstance(layers, int) else index in layers)


def _pattern_value(patterns, key, default):
    """``rank_pattern`` / ``alpha_pattern`` lookup: the first key that matches the end of the name."""
    for pattern, value in patterns.items():
        if re.match(rf"(.*\.)?({pattern})$", key):
            return value
    return default


def _warn_unmatched_patterns(config, targeted):
    """A rank_pattern / alpha_pattern key that matches none of the adapted modules is a typo or a key
    written for another model: warn, as PEFT does (with its words), rather than silently use ``r``.
    (Not for AdaLoRA, whose rank_pattern holds the allocated masks by parameter name: PEFT's warning
    there is spurious.)"""
    if config.peft_type == "ADALORA":
        return
    for attr in ("rank_pattern", "alpha_pattern"):
        patterns = getattr(config, attr, None) or {}
        unmatched = sorted(key for key in patterns
                           if not any(re.match(rf"(.*\.)?({key})$", name) for name in targeted))
        if unmatched:
            warnings.warn(f"The following {attr} keys did not match any targeted module or parameter and were "
                          f"ignored: {unmatched}.", RuntimeWarning)  # (PEFT 0.22's words)


def _warn_nothing_excluded(config, names):
    """PEFT's warning when ``exclude_modules`` names no module of the model (of all the module ``names``, as
    PEFT's check): a typo there adapts the very layers the user meant to leave alone, without a word."""
    excluded = getattr(config, "exclude_modules", None)
    if excluded and not any(_matches_list_or_regex(excluded, key) for key in names):
        shown = excluded if isinstance(excluded, str) else set(excluded)  # (PEFT keeps a set)
        warnings.warn(f"You have passed exclude_modules={shown} but no modules were excluded. Please check that "
                      "exclude_modules was set correctly.")


def _warn_state_dict_differs(by_config, by_state_dict):
    """PEFT's warning when the layers a state_dict names are not the ones the config targets."""
    more_in_config = sorted(set(by_config) - set(by_state_dict))
    more_in_state_dict = sorted(set(by_state_dict) - set(by_config))
    if not more_in_config and not more_in_state_dict:
        return
    message = ("While injecting the PEFT adapters, an inconsistency was discovered between the PEFT config and the "
               "provided state_dict. This is not necessarily an issue and can be ignored if this was the intent. ")
    if more_in_config:
        message += f"The PEFT config contained these additional target modules: {more_in_config}. "
    if more_in_state_dict:
        message += f"The state_dict contained these additional target modules: {more_in_state_dict}. "
    warnings.warn(message, RuntimeWarning)


_EMBEDDING_LAYER_NAMES = _io.EMBEDDING_LAYER_NAMES  # PEFT's EMBEDDING_LAYER_NAMES
_UNTIE_EXAMPLE = """
```python
from transformers import AutoModelForCausalLM

# Load original tied model
model = AutoModelForCausalLM.from_pretrained("google/gemma-2-2b-it", tie_word_embeddings=False)

# Set the randomly initialized lm_head to the previously tied embeddings
model.lm_head.weight.data = model.model.embed_tokens.weight.data.clone()

# Save the untied model
untied_model_dir = "dir/for/untied/model"
model.save_pretrained(untied_model_dir)
model.config.save_pretrained(untied_model_dir)

# Now use the original model but in untied format
model = AutoModelForCausalLM.from_pretrained(untied_model_dir)
```
"""  # (PEFT's example in its merge warning for a tied layer with an adapter)


def _warn_tied_layer_adapted(model, config):
    """With ``tie_word_embeddings`` the input embedding and the output head are one matrix: an adapter
    (or a modules_to_save copy) on either one does not follow the tie, and merging it changes both
    layers. PEFT warns (in these words); so does minilora. ``ensure_weight_tying=True`` (PEFT ties the
    adapters of both layers) is accepted where PEFT finds nothing to tie, with its warning, and refused by
    name where it would tie."""
    ensure = getattr(config, "ensure_weight_tying", False)
    if not getattr(getattr(model, "config", None), "tie_word_embeddings", False):
        if ensure:
            warnings.warn("You have requested `ensure_weight_tying`, but no tied modules were found in the model")
        if ensure and getattr(config, "trainable_token_indices", None) is not None:
            warnings.warn("ensure_weight_tying=True but the model does not have tied weights (tie_word_embeddings="
                          "False). Weight tying will not be applied for trainable_token_indices.")
        return
    targets = config.target_modules
    if isinstance(targets, str):
        adapted = any(re.fullmatch(targets, name) for name in _EMBEDDING_LAYER_NAMES)
    else:
        adapted = any(name.split(".")[-1] in _EMBEDDING_LAYER_NAMES for name in targets or ())
    saved = any(name.split(".")[-1] in _EMBEDDING_LAYER_NAMES
                for name in getattr(config, "modules_to_save", None) or ())
    if ensure:  # (a tied layer in modules_to_save: LoraModel._tie_modules_to_save)
        _ensure_weight_tying(adapted or saved, adapted or getattr(config, "trainable_token_indices", None) is not None)
    elif adapted or saved:  # PEFT's two wordings: a config with an ensure_weight_tying field (LoRA's) names it
        why = "`ensure_weight_tying` is not set to True" if hasattr(config, "ensure_weight_tying") else \
            "no implementation exists to tie the adapters"
        warnings.warn(f"Model has `tie_word_embeddings=True` and a tied layer is part of the adapter, but {why}. "
                      "This can lead to complications, for example when merging the adapter or converting your "
                      "model to formats other than safetensors. "
                      "Check the discussion here: https://github.com/huggingface/peft/issues/2777")


def _ensure_weight_tying(ties_something, ties_adapters):
    """ensure_weight_tying=True on a tied model: PEFT's warning when no tied layer is adapted (nothing
    changes); tying LoRA adapters or trainable tokens of embed_tokens and lm_head is not implemented here,
    so refused by name (tied modules_to_save copies are: LoraModel._tie_modules_to_save)."""
    if ties_adapters:
        raise NotImplementedError(
            "LoraConfig(ensure_weight_tying=True) with a tied embed_tokens / lm_head in target_modules or "
            "trainable_token_indices: minilora does not tie their adapters (PEFT does); leave "
            "ensure_weight_tying=False (PEFT's default), untie the model (tie_word_embeddings=False), or train "
            "the tied table through modules_to_save")
    if ties_something:
        return
    warnings.warn("You have requested `ensure_weight_tying`, but no tied modules are added in either "
                  "`modules_to_save` or `target_modules`")


# ==================================================================================================
# The tuner: injects adapter layers into the model and manages them
# ==================================================================================================
class _Wrapper(Module):
    """Attributes a wrapper does not have come from the module it wraps (as PEFT's wrappers do)."""

    wrapped = None  # the attribute holding the wrapped module

    def __getattr__(self, name):
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name == self.wrapped or name.startswith("__"):
                raise
            return getattr(getattr(self, self.wrapped), name)


class LoraModel(_Wrapper):
    """Holds the original ``model`` and the adapter configs; swaps target Linears for LoRA layers."""

    prefix = "lora_"  # parameters whose names contain this are adapter weights
    layer_cls = Linear
    wrapped = "model"

    def __init__(self, model, config, adapter_name="default", state_dict=None):
        super().__init__()
        self.model = model
        self.peft_config = self._configs_of_earlier_tuner(model)
        self.peft_config.pop(adapter_name, None)  # PEFT: a second get_peft_model replaces that adapter
        self.active_adapter = adapter_name
        self.targeted_module_names = []  # PEFT's: every module an adapter was injected into, in that order
        self.inject_adapter(adapter_name, config, state_dict=state_dict)
        self.set_adapter(adapter_name)
        model.peft_config = self.peft_config  # PEFT's BaseTuner leaves its configs on the model

    @staticmethod
    def _configs_of_earlier_tuner(model):
        """PEFT's BaseTuner: a model already wrapped (get_peft_model twice, from_pretrained twice on one base)
        holds the earlier tuner's ``peft_config`` dict, and the new tuner shares it: both PeftModels then
        see every adapter's config, and an adapter name given again is replaced in the layers (in both)."""
        configs = model.__dict__.get("peft_config")
        if not isinstance(configs, dict):
            return {}
        warnings.warn("Already found a `peft_config` attribute in the model. This will lead to having multiple "
                      "adapters in the model. Make sure to know what you are doing!")
        return configs

    @property
    def active_adapters(self):
        """The active adapters as a list (``active_adapter`` is a name, or a list after
        ``set_adapter([...])``, as in PEFT)."""
        if self.active_adapter is None:
            return []
        return [self.active_adapter] if isinstance(self.active_adapter, str) else list(self.active_adapter)

    # --- injection -----------------------------------------------------------------------------
    def inject_adapter(self, adapter_name, config, state_dict=None):
        """Wrap every matching Linear (or add ``adapter_name`` to an already wrapped one). With a
        ``state_dict`` (PEFT's), the layers it holds adapter weights for are the targets instead (its keys
        only: ``...q_proj.lora_A.weight`` targets ``...q_proj``)."""
        if adapter_name in self.peft_config:
            raise ValueError(f"Adapter with name {adapter_name!r} already exists; pick another name "
                             "or delete_adapter() it first")  # (PEFT's words)
        if adapter_name == BASE_ADAPTER:
            raise ValueError(f"{BASE_ADAPTER!r} is reserved: it means 'no adapter' in adapter_names")
        _check_adapter_name(adapter_name)
        config = self._resolve_targets(config)  # PEFT keeps (and resolves) the caller's own config object
        wrapped, targeted = self.wrapped_layer_names(), list(self.targeted_module_names)
        try:
            with keeping_trainability(self.model, adapter_name), \
                    keeping_adapter_modes(self, adapter_name, training=not config.inference_mode):
                self._inject(adapter_name, config, state_dict)
        except Exception:
            self._roll_back(adapter_name, wrapped, targeted)
            raise

    def _roll_back(self, adapter_name, wrapped_before, targeted_before):
        """A refused adapter leaves no trace. PEFT (0.21.2 and 0.22.0) leaves it half-injected -- the layers it reached
        before the refusal (a target that is not a Linear, lora_bias on an Embedding, a trainable-tokens
        layer not found...) keep its weights, in state_dict() and print(model) -- and then lets a second
        add_adapter under that name overwrite them. minilora is stricter: the model is as it was (only a
        PiSSA/OLoRA init that already rewrote a base weight cannot be undone)."""
        self.peft_config.pop(adapter_name, None)
        for module in self._adapter_modules():
            if adapter_name in module.adapter_names():
                module.delete_adapter(adapter_name)
        self.unwrap_layers_except(wrapped_before)
        self.targeted_module_names = targeted_before

    def _inject(self, adapter_name, config, state_dict=None):
        self._before_injection(adapter_name, config)
        if getattr(config, "target_parameters", None) and state_dict:  # PEFT's words
            raise ValueError("Trying to inject a PEFT adapter from a state_dict but the PEFT config uses "
                             "`target_parameters`. This is not supported -- when using `target_parameters`, please "
                             "inject the adapter without the state_dict.")
        if getattr(config, "layer_replication", None):  # PEFT's _prepare_model: before the targets are matched
            replicate_layers(self.model, config.layer_replication)
        from_state_dict = None if state_dict is None else {k.rsplit("." + self.prefix, 1)[0] for k in state_dict}
        matched, by_config = [], []
        for key, module in self._candidate_modules():
            if target_module_matches(config, key):
                by_config.append(key)
            if key not in (by_config if from_state_dict is None else from_state_dict):
                continue
            if isinstance(module, BaseTunerLayer):
                self._update_layer(module, adapter_name, config, key)
            else:
                self._replace(key, self._create_layer(module, adapter_name, config, key))
            matched.append(key)
        parameters = self._inject_parameters(adapter_name, config)
        self._check_matches(config, matched, parameters)
        if from_state_dict is not None:
            _warn_state_dict_differs(by_config, matched)
        else:
            _warn_nothing_excluded(config, [key for key, _ in self._candidate_modules()])
        _warn_unmatched_patterns(config, matched + parameters)
        _warn_tied_layer_adapted(self.model, config)
        self.targeted_module_names += [key for key in matched if key not in self.targeted_module_names]
        self.peft_config[adapter_name] = config
        self._add_modules_to_save(adapter_name, config)
        self._add_trainable_tokens(adapter_name, config)
        self._freeze_all_but_adapters(config)

    def _check_matches(self, config, modules, parameters):
        """Nothing adapted is an error; with target_parameters, PEFT's words and its warnings when only
        one of the two lists matched."""
        wanted_parameters = getattr(config, "target_parameters", None)
        if not modules and not parameters:
            if wanted_parameters is not None and not config.target_modules:
                raise ValueError("No `target_modules` passed but also no `target_parameters` found. Please check "
                                 "the values for these arguments.")
            raise self._no_match_error(config)
        if config.target_modules and not modules:
            warnings.warn(f"target_modules={config.target_modules} were set but no module was matched.", RuntimeWarning)
        elif wanted_parameters and not parameters:
            warnings.warn(f"target_parameters={wanted_parameters} were set but no parameter was matched.",
                          RuntimeWarning)

    def _inject_parameters(self, adapter_name, config):
        """``target_parameters``: wrap the layer owning each matching parameter (its full name equals a
        target or ends with "." + target, PEFT's rule) in a ``ParamWrapper``. Returns the parameter names.
        rank_pattern / alpha_pattern keys are matched against the parameter's name (``...q_proj.weight``),
        as PEFT does."""
        targets = sorted(set(getattr(config, "target_parameters", None) or ()))
        matches = lambda name: name in targets or any(name.endswith("." + t) for t in targets)  # noqa: E731
        found = []
        for key, module in list(self._candidate_modules()):
            if isinstance(module, ParamWrapper):  # an earlier adapter's wrapper: add this adapter to it
                names = [module.parameter_name]
            elif isinstance(module, _WRAPPERS):
                base = getattr(module, "base_layer", None) or getattr(module, "original_module", None)
                if isinstance(module, BaseTunerLayer) and any(matches(f"{key}.{n}") for n, _ in
                                                              base.named_parameters(recurse=False)):
                    raise ValueError(  # PEFT's words
                        f"Trying to wrap an `nn.Parameter` of layer '{key}' of type {type(base).__name__}, which is "
                        "not a valid target. Make sure that this layer is not also targeted with `target_modules`. "
                        "For some models, PEFT will do this automatically, try setting `target_modules=[]` to "
                        "prevent it.")
                continue
            else:
                names = [n for n, _ in module.named_parameters(recurse=False)]
            for param_name in names:
                name = f"{key}.{param_name}"
                if not matches(name):
                    continue
                r, alpha = self._rank_and_alpha(config, name)
                if isinstance(module, ParamWrapper):
                    module.update_layer(adapter_name, config, r, alpha)
                else:
                    self._replace(key, _param_wrapper(module, param_name, adapter_name, config, r, alpha, name))
                found.append(name)
        return found

    def _candidate_modules(self):
        """(name, module) of the model, skipping what lives inside adapter layers (lora_A, copies...)."""
        inside = []
        for key, module in list(self.model.named_modules()):
            if not key or any(key.startswith(prefix) for prefix in inside):
                continue
            if isinstance(module, _WRAPPERS):
                inside.append(key + ".")
            yield key, module

    def wrapped_layer_names(self):
        """Names of the layers wrapped by an adapter layer (or a modules_to_save copy) now."""
        return {key for key, module in self._candidate_modules() if isinstance(module, _WRAPPERS)}

    def unwrap_layers_except(self, keep):
        """Put the plain layer back wherever a wrapper not named in ``keep`` stands (after a failed
        load_adapter its wrappers hold no adapter, but would still rename the layers' weights)."""
        for key, module in list(self._candidate_modules()):
            if key not in keep and isinstance(module, _WRAPPERS):
                plain = module.unwrapped() if isinstance(module, BaseTunerLayer) else module.original_module
                self._replace(key, plain)

    def _resolve_targets(self, config):
        """``None`` -> the model type's default; ``"all-linear"`` -> every Linear but the output head."""
        targets = config.target_modules
        if targets is None:
            model_type = _model_type(self.model)
            if model_type not in DEFAULT_TARGET_MODULES:
                raise ValueError(f"target_modules is None and minilora knows no default for model type "
                                 f"{model_type!r}: pass target_modules=[...] (e.g. ['q_proj', 'v_proj'])")
            config.target_modules = list(DEFAULT_TARGET_MODULES[model_type])
        elif isinstance(targets, str) and targets.lower() == "all-linear":
            head = _all_linear_skipped_head(self.model, config.task_type)
            config.target_modules = sorted(
                key for key, module in self._candidate_modules()
                if _is_linear(module, self.layer_cls) and module is not head)
        return config

    def _no_match_error(self, config):
        """PEFT's NoMatchingPeftModuleError, in its words; minilora's list of this model's names as a note."""
        words, hint = self._no_match_message(config)
        return with_note(NoMatchingPeftModuleError(words), hint)

    def _no_match_message(self, config):
        names = [key for key, _ in self._candidate_modules()]
        short = sorted({key.rsplit(".", 1)[-1] for key in names if not key.rsplit(".", 1)[-1].isdigit()})
        if len(names) <= 30:  # a small custom model (nn.Sequential's "seq.0"): every full name helps more
            short = names
        filters = config.layers_to_transform is not None or getattr(config, "exclude_modules", None)
        targets = config.target_modules if isinstance(config.target_modules, str) else set(config.target_modules or ())
        # PEFT's words tell the module names that exclude_modules took out from those nothing matched
        exclude = getattr(config, "exclude_modules", None)
        excluded = [key for key in names if exclude and _matches_list_or_regex(exclude, key)]
        if excluded and len(excluded) == len(names):
            return ("All modules were excluded. This is likely unintended. Check your `target_modules`, "
                    "`exclude_modules` and `modules_to_save` configuration."), f"exclude_modules={exclude!r}"
        if excluded:
            peft_words = ("No modules were targeted for adaptation. This might be caused by a combination of "
                          "mismatched target modules and excluded modules. Please check your `target_modules` and "
                          "`exclude_modules` configuration. You may also have only targeted modules that are marked "
                          "to be saved (`modules_to_save`).")
        else:
            peft_words = (f"Target modules {targets} not found in the base model. Please check the target modules "
                          "and try again.")
        if config.layers_to_transform is not None:  # PEFT's notes on the layer filter, in its words
            peft_words += f" Note: You specified 'layers_to_transform': {config.layers_to_transform}."
        if config.layers_pattern is not None:
            peft_words += f" You also specified 'layers_pattern': {config.layers_pattern}."
        return peft_words, (f"target_modules={config.target_modules!r} matched no module of "
                            f"{type(self.model).__name__}{' (after layers_to_transform / exclude_modules)' if filters else ''}. "
                            f"Module names in this model: {', '.join(short)} "
                            f"(full names look like {names[len(names) // 2]!r})")

    def _replace(self, key, new_module):
        parent_name, _, child = key.rpartition(".")
        setattr(self.model.get_submodule(parent_name), child, new_module)

    def _before_injection(self, adapter_name, config):
        if self.peft_config:
            existing = next(iter(self.peft_config.values()))
            if existing.peft_type != config.peft_type:
                raise ValueError(f"cannot add a {config.peft_type.value} adapter to a model with "
                                 f"{existing.peft_type.value} adapters (one method per model, as in PEFT)")
        biases = [getattr(c, "bias", "none") for c in [*self.peft_config.values(), config]]
        if sum(bias != "none" for bias in biases) > 1:  # they would all train the base layers' one bias
            raise ValueError(f"{type(self).__name__} supports only 1 adapter with bias. When using multiple "
                             "adapters, set bias to 'none' for all adapters.")
        self._check_same_target_parameters(config)

    def _check_same_target_parameters(self, config):
        """PEFT's rule: all adapters that use target_parameters target the same parameters (its nested
        wrappers encode which parameter a weight belongs to)."""
        wanted = set(getattr(config, "target_parameters", None) or ())
        for name, other in self.peft_config.items():
            theirs = set(getattr(other, "target_parameters", None) or ())
            if wanted and theirs and theirs != wanted:  # PEFT's words
                raise ValueError("When using multiple adapters with `target_parameters`, all adapters must target "
                                 f"the same set of parameters, but got {sorted(wanted)} for the new adapter and "
                                 f"{sorted(theirs)} for adapter '{name}'.")

    def _rank_and_alpha(self, config, key):
        return (_pattern_value(config.rank_pattern, key, config.r),
                _pattern_value(config.alpha_pattern, key, config.lora_alpha))

    def _create_layer(self, target, adapter_name, config, key):
        """The LoRA layer for ``target``: ``lora.Linear``, ``lora.Embedding`` or ``lora.Conv1d/2d``, as PEFT."""
        r, alpha = self._rank_and_alpha(config, key)
        for kind, custom in (getattr(config, "_custom_modules", None) or {}).items():  # PEFT tries them first
            if isinstance(target, kind):
                return custom(target, adapter_name, config=config, r=r, lora_alpha=alpha)
        kinds = {_NNLinear: Linear, _NNEmbedding: Embedding, _NNConv1d: LoraConv1d, _NNConv2d: LoraConv2d,
                 _NNMultiheadAttention: LoraMultiheadAttention}
        layer = next((lora for kind, lora in kinds.items() if isinstance(target, kind)), None)  # subclasses too
        if layer is None:  # PEFT's ValueError and words
            raise ValueError(f"Target module {target} is not supported. Currently, only the following modules "
                             f"are supported: `nn.Linear`, `nn.Embedding`, `nn.Conv1d`, `nn.Conv2d`, "
                             f"`nn.MultiheadAttention` (minilora's; PEFT also adapts Conv3d and Conv1D). "
                             f"Module {key!r} is a "
                             f"{type(target).__name__}: choose target_modules that name layers of those types.")
        if layer is Linear:
            _fan_in_fan_out_off_for_linear(config)
        return layer(target, adapter_name, config, r, alpha)

    def _update_layer(self, layer, adapter_name, config, key):
        layer.update_layer(adapter_name, config, *self._rank_and_alpha(config, key))

    def _add_modules_to_save(self, adapter_name, config):
        """Wrap every module that a modules_to_save entry names (``names_module``). An entry matching nothing is
        skipped without a word, as PEFT's ``_set_trainable`` does (one config serves several architectures:
        ``["lm_head", "score"]``); ``PeftModel.modules_to_save`` still lists it."""
        tied_head = self._tied_head_to_save(config)
        for name in config.modules_to_save or ():
            for key, module in self._candidate_modules():
                if not names_module(key, name):
                    continue
                if isinstance(module, ModulesToSaveWrapper):
                    module.update(adapter_name)
                else:
                    self._replace(key, ModulesToSaveWrapper(module, adapter_name))
        if tied_head is not None:  # the head's copy is the embedding's table (PEFT's tied_module)
            embedding_copy = self.model.get_input_embeddings().modules_to_save[adapter_name]
            head = self.model.get_submodule(tied_head)
            if isinstance(head, ModulesToSaveWrapper):
                head.update(adapter_name, tied_module=embedding_copy)
            else:
                self._replace(tied_head, ModulesToSaveWrapper(head, adapter_name, tied_module=embedding_copy))

    def _tied_head_to_save(self, config):
        """PEFT's ``_add_modules_to_save_to_tie``: with ensure_weight_tying and embed_tokens or lm_head in
        modules_to_save of a tied model, the embedding's name is appended to ``config.modules_to_save`` and the
        tied head's entry taken out (in place, so adapter_config.json shows it); returns the head's name."""
        head = self._tied_head_name()
        saved = config.modules_to_save or []
        if not getattr(config, "ensure_weight_tying", False) or head is None or \
                not any(name.split(".")[-1] in _EMBEDDING_LAYER_NAMES for name in saved):
            return None
        embedding_name = _module_name(self.model, self.model.get_input_embeddings())
        if embedding_name not in saved:
            saved.append(embedding_name)
        for name in saved:
            if re.match(rf"(^|.*\.){name}($|\..*)", head):
                saved.remove(name)
                break
        config.modules_to_save = saved
        return head

    def _add_trainable_tokens(self, adapter_name, config):
        """``trainable_token_indices``: wrap the input embedding (a list of ids) or each named layer (a dict
        ``{name: ids}``, matched as PEFT: the full name ends with it) in a ``TrainableTokensWrapper``. With
        tied embeddings, the head is tied to the embedding's rows (PEFT's rule: unless a dict gives them
        different ids)."""
        indices = getattr(config, "trainable_token_indices", None)
        if indices is None:
            return
        embedding_name = _module_name(self.model, self.model.get_input_embeddings()) \
            if hasattr(self.model, "get_input_embeddings") else "embed_tokens"
        targets = dict(indices) if isinstance(indices, dict) else {embedding_name: indices}
        for name in targets:  # PEFT's check (minilora's also catches the list form's embedding)
            if any(name.endswith(m) or m.endswith(name) for m in config.modules_to_save or ()):
                raise ValueError("The embedding layer is already marked to be trained fully, either specify "
                                 f'`modules_to_save=[..., "{name}", ...]` or `trainable_tokens={{\'{name}\': x}}` '
                                 "but not both.")
        head = self._tied_head_name()
        named_heads = [k for k in targets if head is not None and len(targets) > 1 and head.endswith(k)]
        embedding_ids = [v for k, v in targets.items() if embedding_name.endswith(k)]
        mismatch = bool(named_heads and embedding_ids) and any(targets[k] != embedding_ids[0] for k in named_heads)
        for name, ids in targets.items():
            if mismatch or name not in named_heads or not embedding_ids:  # a tied head follows the embedding
                self._wrap_token_layers(name, adapter_name, ids)
        embedding = self.model.get_input_embeddings() if hasattr(self.model, "get_input_embeddings") else None
        if head is not None and not mismatch and isinstance(embedding, TrainableTokensWrapper):
            layer = embedding.token_adapter
            self._wrap_token_layers(head, adapter_name, layer.token_indices[adapter_name], tied_adapter=layer)

    def _tied_head_name(self):
        """The output head's name when it shares the input embedding's matrix (tie_word_embeddings)."""
        if not getattr(getattr(self.model, "config", None), "tie_word_embeddings", False) or \
                not hasattr(self.model, "get_input_embeddings"):
            return None
        head, embedding = _output_head(self.model), self.model.get_input_embeddings()
        weight = lambda m: getattr(m, "original_module", m).weight  # noqa: E731  (a wrapper's own table)
        if head is None or embedding is None or weight(head) is not weight(embedding):
            return None
        return _module_name(self.model, head)

    def _wrap_token_layers(self, name, adapter_name, ids, tied_adapter=None):
        found = False
        for key, module in list(self._candidate_modules()):
            if not names_module(key, name):
                continue
            found = True
            if isinstance(module, TrainableTokensWrapper):
                module.update(adapter_name, ids)
            else:
                self._replace(key, TrainableTokensWrapper(module, adapter_name, ids, tied_adapter=tied_adapter))
        if not found:  # PEFT's words
            raise NoMatchingPeftModuleError(f"Target modules {{{name!r}}} not found in the base model. Please check "
                                            "the target modules and try again.")

    def _freeze_all_but_adapters(self, config):
        """Only adapter weights train; then the ``bias`` mode may unfreeze biases (PEFT's rules)."""
        for name, p in self.model.named_parameters():
            if self.prefix not in name:
                p.requires_grad = False
        if not config.inference_mode:
            self.apply_bias_modes()

    def apply_bias_modes(self):
        """PEFT's rule, applied last when an adapter is added: the bias modes of the ACTIVE adapters -- a
        second adapter keeps the first's biases training; a new inactive adapter's mode waits -- and "all"
        means every bias of the model, each adapter's lora_B.bias too (an inactive one's included, as PEFT)."""
        for bias in {getattr(self.peft_config.get(name), "bias", "none") for name in self.active_adapters}:
            if bias == "all":
                for name, p in self.model.named_parameters():
                    if name.endswith("bias"):
                        p.requires_grad = True
            elif bias.endswith("_only"):  # "lora_only" / "vera_only": biases of adapted layers
                for module in self.tuner_layers():
                    if module.base_bias is not None:
                        module.base_bias.requires_grad = True

    # --- the adapter layers --------------------------------------------------------------------
    def tuner_layers(self):
        return [m for m in self.model.modules() if isinstance(m, BaseTunerLayer)]

    def _adapter_modules(self):
        return [m for m in self.model.modules() if isinstance(m, (BaseTunerLayer, ModulesToSaveWrapper))]

    def set_adapter(self, adapter_name, inference_mode=None):
        """Make ``adapter_name`` -- or, as PEFT's ``LoraModel.set_adapter``, a list of names, whose
        outputs then add up -- the active adapter(s). They train unless ``inference_mode`` (None,
        minilora's own calls: as their configs say, i.e. frozen when loaded for inference)."""
        names = [adapter_name] if isinstance(adapter_name, str) else list(adapter_name)
        for name in names:
            if name not in self.peft_config:
                raise ValueError(f"Adapter {name} not found. (no adapter named {name!r}; adapters: "
                                 f"{sorted(self.peft_config)})")  # PEFT's words, then minilora's
        if inference_mode is None:
            inference_mode = all(self.peft_config[name].inference_mode for name in names)
        modules = self._adapter_modules()
        for module in modules:  # before anything switches
            if hasattr(module, "check_set_adapter"):  # modules_to_save copies, trainable tokens: one at a time
                module.check_set_adapter(names)
        if any(isinstance(m, BaseTunerLayer) and m.merged for m in modules):  # PEFT's warning
            warnings.warn("Adapter cannot be set when the model is merged. Unmerging the model first.")
        for module in modules:
            if isinstance(module, BaseTunerLayer) and module.merged:
                module.unmerge()  # a merged weight holds the old adapter: take it out first
            module.set_adapter(adapter_name, inference_mode=inference_mode)
        if isinstance(adapter_name, str):
            self.named_adapter = adapter_name  # the PeftModel's one name (see PeftModel.active_adapter)
        self.active_adapter = adapter_name
        self._claim_layers()

    # Two PeftModels may wrap the same base object (PEFT allows it, with a warning): they share the
    # adapter layers, which hold one active adapter at a time. The base model remembers which wrapper
    # last chose the active adapter; any other wrapper chooses its own again before it runs or merges.
    def _claim_layers(self):
        self.model.__dict__["_peft_layers_owner"] = weakref.ref(self)

    def _own_layers(self):
        owner = self.model.__dict__.get("_peft_layers_owner")
        if self.active_adapter is not None and (owner is None or owner() is not self):
            self.set_adapter(self.active_adapter)

    def delete_adapter(self, adapter_name):
        if adapter_name not in self.peft_config:
            raise ValueError(f"Adapter {adapter_name} does not exist (no adapter named {adapter_name!r}; "
                             f"adapters: {sorted(self.peft_config)})")  # PEFT's words, then minilora's
        # its delta would stay baked into the base weights with nothing left to unmerge it (PEFT's check)
        merged = {name for layer in self.tuner_layers() for name in layer.merged_adapters}
        if adapter_name in merged:
            raise ValueError(f"Cannot delete adapter(s) {[adapter_name]} while they are merged. "
                             "Please unmerge them first.")
        del self.peft_config[adapter_name]
        for module in self._adapter_modules():
            module.delete_adapter(adapter_name)
        if adapter_name in self.active_adapters:  # the other active ones stay; else the first left
            still_active = [name for name in self.active_adapters if name != adapter_name]
            remaining = still_active or sorted(self.peft_config)[:1]
            if not still_active and remaining:  # PEFT's words (each of its layers says it)
                warnings.warn(f"Adapter {adapter_name} was active which is now deleted. Setting active adapter to "
                              f"{remaining[0]}.")
            self.active_adapter = None
            if remaining:
                self.set_adapter(remaining if len(remaining) > 1 else remaining[0])

    def add_to_loss(self, outputs):
        """A method's own term in the loss (AdaLoRA's orthogonal regulariser); plain LoRA adds none."""
        return outputs

    def tensors_for_file(self, adapter_name, tensors):
        """``{file key: array}`` as saved; a method may reshape it (AdaLoRA keeps its unmasked ranks)."""
        return tensors

    def prepare_to_load(self, adapter_name):
        """Called before a saved adapter's weights are copied in (AdaLoRA resizes to the saved ranks)."""

    def set_requires_grad(self, adapter_names, requires_grad=True):
        """PEFT's ``set_requires_grad``: train (or freeze) the named adapters, active or not."""
        for module in self._adapter_modules():
            module.set_requires_grad(adapter_names, requires_grad=requires_grad)

    def enable_adapter_layers(self):
        """Use the adapters again; as PEFT, the active ones train again. (PEFT also makes an adapter loaded
        for inference trainable here; minilora keeps such an adapter frozen, as its config says.)"""
        names = self.active_adapters
        inference = bool(names) and all(self.peft_config[name].inference_mode for name in names)
        for module in self._adapter_modules():
            module.enable_adapters(True)
            module.set_adapter(module.active_adapters, inference_mode=inference)

    def disable_adapter_layers(self):
        """Run the base model alone; as PEFT, the adapters are frozen meanwhile (nothing to train).

        An active adapter with ``bias="all"`` / ``"lora_only"`` trained the base layers' biases in place, so
        the output is not the original base model's: PEFT's warning says so."""
        for name in self.active_adapters:
            bias = getattr(self.peft_config[name], "bias", "none")
            if bias != "none":
                warnings.warn(f"Careful, disabling adapter layers with bias configured to be '{bias}' does not "
                              "produce the same output as the base model would without adaption.")
        for module in self._adapter_modules():
            module.enable_adapters(False)
            module.set_requires_grad(module.adapter_names(), requires_grad=False)

    # --- merging -------------------------------------------------------------------------------
    def merge_adapter(self, adapter_names=None, safe_merge=False):
        """Fold the adapters into the base weights (faster inference; ``unmerge_adapter`` undoes it).

        ``safe_merge``: every layer's merged weight is checked for NaN/inf *before* any is changed.
        """
        self._own_layers()
        self._check_merge_names(adapter_names)
        self._check_merge_allowed()
        self._warn_already_merged(adapter_names)
        self._check_bias_mergeable(adapter_names)
        if safe_merge:
            self._check_merge_is_finite(adapter_names)
        for layer in self.tuner_layers():  # safe_merge: a 16-bit weight adds the delta rounded to its dtype
            layer.merge(safe_merge=safe_merge, adapter_names=adapter_names)

    def _check_merge_names(self, adapter_names):
        """``adapter_names`` of a merge: None (the active adapters) or a list of this model's adapters. A string
        would be read letter by letter and a name that is no adapter skipped by every layer: either way the
        merge folded nothing in, without a word (PEFT refuses the string; minilora the unknown name too)."""
        if isinstance(adapter_names, str):
            raise TypeError(f"adapter_names should be a list of strings, got {adapter_names!r}.")
        unknown = [name for name in adapter_names or () if name not in self.peft_config]
        if unknown:
            raise ValueError(f"Adapter {unknown[0]} not found. (adapter_names={list(adapter_names)!r} names no "
                             f"adapter of this model; adapters: {list(self.peft_config)})")

    def _check_merge_is_finite(self, adapter_names):
        for layer in self.tuner_layers():
            for name in (adapter_names or layer.active_adapters):
                if name in layer.adapter_names() and name not in layer.merged_adapters:
                    new = layer.merge_math(name, layer.weight._array.copy())
                    if not bool(np.isfinite(_host(new)).all()):
                        raise ValueError(f"NaNs detected in the merged weights. The adapter {name} seems to be "
                                         f"broken (NaNs or infs when merging adapter {name!r} into "
                                         f"{_module_name(self.model, layer)}; no weight was changed)")

    def _check_merge_allowed(self):
        """Replicated layers share their base weights: merging one copy's adapter would change them all.
        PEFT means to refuse this (0.21.2 and 0.22.0: its check, ``self.peft_config.get("layer_replication")``, looks
        the field up among the adapter names, so it never fires and the merge corrupts the shared weights);
        minilora refuses, with PEFT's words."""
        if any(getattr(config, "layer_replication", None) for config in self.peft_config.values()):
            raise ValueError("Cannot merge LORA layers when base model layers are replicated (layer_replication: "
                             "the copies share their base weights; use unload(), or save the adapter instead)")
        tied = [name for name in self.targeted_module_names if name.split(".")[-1] in _EMBEDDING_LAYER_NAMES]
        if tied and getattr(getattr(self.model, "config", None), "tie_word_embeddings", False):  # PEFT's words
            warnings.warn(f"Model with `tie_word_embeddings=True` and the tied_target_modules={tied!r} are part of "
                          "the adapter. This can lead to complications. You can opt to merge the adapter after "
                          "cloning the weights (to untie the embeddings). You can untie the embeddings by loading "
                          "the model with `tie_word_embeddings=False`. For example:" + _UNTIE_EXAMPLE)

    def _check_bias_mergeable(self, adapter_names):
        """lora_bias=True on a layer without a bias cannot be merged. PEFT raises this RuntimeError in the
        middle of merging (that layer's weight already changed, earlier layers merged); minilora checks
        every layer first, so a refused merge changes no weight."""
        for layer in self.tuner_layers():
            for name in (adapter_names or layer.active_adapters):
                if getattr(layer, "lora_bias", {}).get(name) and layer.base_bias is None and \
                        name not in layer.merged_adapters:
                    raise with_note(RuntimeError("Impossible to merge LoRA with `lora_bias=True` because the base "
                                                 "layer has no bias."),  # PEFT's words; where, as a note
                                    f"{_module_name(self.model, layer)}, adapter {name!r}; no weight was changed")

    def _warn_already_merged(self, adapter_names):
        """PEFT's warnings (once here, not once per layer) when some or all of the adapters are merged."""
        layers = self.tuner_layers()
        merged = [name for name in self.peft_config if any(name in layer.merged_adapters for layer in layers)]
        if not merged:
            return
        pending = [name for name in (adapter_names or self.active_adapters) if name not in merged]
        if pending:
            warnings.warn(f"Already following adapters were merged {','.join(merged)}. "
                          f"You are now additionally merging {','.join(pending)}.")
        else:
            warnings.warn("All adapters are already merged, nothing to do.")

    def unmerge_adapter(self):
        if not any(layer.merged for layer in self.tuner_layers()):
            warnings.warn("Already unmerged. Nothing to do.")  # PEFT's words
        for layer in self.tuner_layers():
            layer.unmerge()

    def add_weighted_adapter(self, adapters, weights, adapter_name, combination_type="svd", svd_rank=None,
                             svd_clamp=None, svd_full_matrices=True, svd_driver=None, density=None,
                             majority_sign_method="total"):
        """A new adapter combined from trained ones (PEFT's method; the math is in ``compose.py``)."""
        from .compose import add_weighted_adapter
        add_weighted_adapter(self, adapters, weights, adapter_name, combination_type=combination_type,
                             svd_rank=svd_rank, svd_clamp=svd_clamp, svd_full_matrices=svd_full_matrices,
                             svd_driver=svd_driver, density=density, majority_sign_method=majority_sign_method)

    def merge_and_unload(self, progressbar=False, safe_merge=False, adapter_names=None):
        """Merge, then replace every adapter layer by its plain Linear: returns the original model class.

        (``progressbar`` is accepted for PEFT compatibility; merging a small model is instant.)
        """
        self._own_layers()
        self._check_merge_names(adapter_names)
        self._check_merge_allowed()
        self._check_bias_mergeable(adapter_names)
        if safe_merge:
            self._check_merge_is_finite(adapter_names)
        return self._unload(merge=True, adapter_names=adapter_names, safe_merge=safe_merge)

    def unload(self):
        """Remove the adapter layers without merging: returns the model's own class.

        As PEFT's code does (its docstring says "the original base model"): weights that
        ``merge_adapter()`` merged stay merged, and a ``modules_to_save`` module is replaced by the
        active adapter's trained copy. For the untouched base, ``unmerge_adapter()`` first, or use
        ``disable_adapter()``."""
        return self._unload(merge=False)

    def _restore_base_model(self):
        """The model exactly as it was before the adapters (nothing merged, the original
        modules_to_save modules): what minilora's own callers need (a failed load, the server
        dropping its last adapter), where PEFT's unload() would keep merged or trained weights."""
        for key, module in list(self._candidate_modules()):
            if isinstance(module, BaseTunerLayer):
                module.unmerge()
                self._replace(key, module.unwrapped())
            elif isinstance(module, TrainableTokensWrapper):
                module.token_adapter.unmerge()
                self._replace(key, module.original_module)
            elif isinstance(module, ModulesToSaveWrapper):
                self._replace(key, module.original_module)
        self.model.__dict__.pop("peft_config", None)
        return self.model

    def _unload(self, merge, adapter_names=None, safe_merge=False):
        if merge and adapter_names:  # PEFT 0.22: an ambiguous choice of module copies is refused before any merge
            for _, module in self._candidate_modules():
                if isinstance(module, ModulesToSaveWrapper):
                    module.check_set_adapter(adapter_names)
        for key, module in list(self._candidate_modules()):
            if isinstance(module, BaseTunerLayer):
                if merge:  # (safe_merge rounds a 16-bit weight's delta first, as merge_adapter(safe_merge=True))
                    module.merge(safe_merge=safe_merge, adapter_names=adapter_names)
                self._replace(key, module.unwrapped())
            elif isinstance(module, TrainableTokensWrapper):  # PEFT: the table, with the rows merged or not
                if merge:
                    module.token_adapter.merge(adapter_names=adapter_names)
                self._replace(key, module.original_module)
            elif isinstance(module, ModulesToSaveWrapper):
                self._replace(key, _unloaded_module_to_save(module, merge, adapter_names))
        self.model.__dict__.pop("peft_config", None)  # PEFT: no adapter left, so no "Already found" warning later
        return self.model

    # --- per-sample adapters ---------------------------------------------------------------------
    @contextlib.contextmanager
    def _enable_peft_forward_hooks(self, adapter_names, alora_offsets=None, num_beams=None):
        """During one forward (or generate), tell every adapter layer which adapter each sample uses, and
        aLoRA's offsets (lora/alora.py)."""
        self._own_layers()
        if alora_offsets is not None:
            if isinstance(num_beams, int) and num_beams > 1:  # PEFT's words
                raise ValueError("Beam search not yet supported for aLoRA.")
            with self._alora_offsets_set(alora_offsets), self._enable_peft_forward_hooks(adapter_names):
                yield
            return
        if adapter_names is None:
            yield
            return
        if self.training:  # PEFT's words; minilora's hint as a note
            raise with_note(ValueError("Cannot pass `adapter_names` when the model is in training mode."),
                            "adapter_names (one adapter per sample) is for inference: call model.eval() first")
        unknown = sorted(set(adapter_names) - set(self.peft_config) - {BASE_ADAPTER})
        if unknown:
            raise with_note(ValueError(f"Trying to infer with non-existing adapter(s): {', '.join(unknown)}"),
                            f"adapters: {sorted(self.peft_config)} (or {BASE_ADAPTER!r} for the base model)")
        modules = self._adapter_modules()
        for module in modules:
            module.batch_adapter_names = list(adapter_names)
        try:
            yield
        finally:
            for module in modules:
                module.batch_adapter_names = None


    @contextlib.contextmanager
    def _alora_offsets_set(self, alora_offsets):
        layers = self.tuner_layers()
        for layer in layers:
            layer.alora_offsets = list(alora_offsets)
        try:
            yield
        finally:
            for layer in layers:
                layer.alora_offsets = None


_WRAPPERS = (BaseTunerLayer, ModulesToSaveWrapper, TrainableTokensWrapper)  # what stands where a layer was


def replicate_layers(model, layer_map):
    """PEFT's ``layer_replication``: rebuild the decoder's layer list from ranges of the existing layers,
    e.g. ``[[0, 4], [2, 5]]`` makes layers ``[0, 1, 2, 3, 2, 3, 4]`` out of 5. A copy shares its original's
    weights (no memory for the base) but is its own module, so each copy gets its own adapter: a deeper
    model to fine-tune. ``num_hidden_layers`` and each copy's ``layer_idx`` (its KV-cache slot) follow."""
    while hasattr(model, "model"):
        model = model.model
    layers = getattr(model, "layers", None)
    if not isinstance(layers, ModuleList):  # PEFT's words
        raise ValueError("Could not locate the layers attribute in the model. Expected Llama, Bert or Falcon "
                         "compatible architectures.")
    new_layers = []
    for start, end in layer_map:
        if end > len(layers):
            raise IndexError(f"layer_replication range [{start}, {end}] goes past the model's {len(layers)} layers")
        for i in range(start, end):
            new_layers.append(_clone_sharing_weights(layers[i]))
            for submodule in new_layers[-1].modules():
                if hasattr(submodule, "layer_idx"):
                    submodule.layer_idx = len(new_layers) - 1
    model.layers = ModuleList(new_layers)
    if hasattr(getattr(model, "config", None), "num_hidden_layers"):
        model.config.num_hidden_layers = len(new_layers)


def _clone_sharing_weights(module):
    """A deep copy of ``module`` whose parameters are the original's own (PEFT's clone_module)."""
    clone = copy.deepcopy(module)
    for name, submodule in module.named_modules():
        target = clone.get_submodule(name) if name else clone
        for param_name, param in list(submodule._parameters.items()):
            if param is not None:
                setattr(target, param_name, param)
    return clone


def _param_wrapper(module, param_name, adapter_name, config, r, alpha, name):
    """A ``ParamWrapper`` for ``module.<param_name>``: PEFT's refusal of a non-2-D parameter, minilora's
    of what it does not map (a parameter other than a Linear's or an Embedding's weight)."""
    param = getattr(module, param_name)
    if param.ndim not in (2, 3):
        raise ValueError(f"lora.ParamWrapper was initialized with {param.ndim} dimensional Parameter, but only 2d and "
                         "3d are supported.")
    if param_name != "weight" or type(module) not in (_NNLinear, _NNEmbedding):
        raise NotImplementedError(f"target_parameters: {name!r} ({tuple(param.shape)}) is not the weight of a "
                                  f"Linear or Embedding layer; minilora adapts those only (PEFT's 3-D MoE expert "
                                  f"tensors do not occur in its models)")
    return ParamWrapper(module, adapter_name, config, r, alpha, parameter_name=param_name)


def _fan_in_fan_out_off_for_linear(config):
    """fan_in_fan_out describes weights stored [in, out] (GPT-2's Conv1D); a Linear stores [out, in].
    PEFT warns and turns it off in the config itself (so adapter_config.json says False); so does minilora."""
    if config.fan_in_fan_out:
        warnings.warn("fan_in_fan_out is set to True but the target module is `torch.nn.Linear`. "
                      "Setting fan_in_fan_out to False.")
        config.fan_in_fan_out = False


class VeraModel(LoraModel):
    """VeRA: one pair of frozen random matrices (``vera_A``, ``vera_B``) shared by every adapted layer."""

    prefix = "vera_lambda_"
    layer_cls = VeraLinear

    def _before_injection(self, adapter_name, config):
        super()._before_injection(adapter_name, config)
        for other in self.peft_config.values():
            if other.projection_prng_key != config.projection_prng_key:
                raise ValueError("all VeRA adapters of a model must share projection_prng_key "
                                 f"(got {config.projection_prng_key}, existing {other.projection_prng_key})")
        shapes = [m.weight.shape for key, m in self._candidate_modules()
                  if isinstance(m, (_NNLinear, VeraLinear)) and target_module_matches(config, key)]
        if not shapes:
            raise self._no_match_error(config)
        out_max, in_max = max(s[0] for s in shapes), max(s[1] for s in shapes)
        if "vera_A" not in self._modules:
            self.vera_A, self.vera_B = BufferDict(), BufferDict()
        # Kaiming-uniform with gain sqrt(2), as PEFT: U(-b, b), b = sqrt(3) * sqrt(2) / sqrt(fan_in), drawn
        # in float32 from a generator of its own seeded by the key (PEFT's torch.Generator): the same
        # config always gives the same projections, PEFT's own, and the global stream is left alone.
        own = Generator().manual_seed(config.projection_prng_key)
        dtype, device = _model_dtype_device(self.model)
        for table, shape in ((self.vera_A, (config.r, in_max)), (self.vera_B, (out_max, config.r))):
            bound = math.sqrt(3.0) * (math.sqrt(2) / math.sqrt(shape[1]))
            table[adapter_name] = Tensor(own.uniform(shape, np.float32, -bound, bound), dtype=dtype, device=device)

    def _create_layer(self, target, adapter_name, config, key):
        if not isinstance(target, _NNLinear):  # PEFT's TypeError and words (a Linear subclass is a Linear)
            raise TypeError(f"Target module {target} is not supported. Currently, only `nn.Linear` is supported "
                            f"(minilora's; PEFT also adapts Conv1D). Module {key!r} is a {type(target).__name__}: "
                            "VeRA adapts only Linear layers.")
        _fan_in_fan_out_off_for_linear(config)
        return VeraLinear(target, adapter_name, config, self.vera_A, self.vera_B)

    def _update_layer(self, layer, adapter_name, config, key):
        layer.update_layer(adapter_name, config)

    def delete_adapter(self, adapter_name):
        super().delete_adapter(adapter_name)
        self._drop_projections(adapter_name)

    def _roll_back(self, adapter_name, wrapped_before, targeted_before):
        super()._roll_back(adapter_name, wrapped_before, targeted_before)
        self._drop_projections(adapter_name)

    def _drop_projections(self, adapter_name):
        for table in (getattr(self, "vera_A", {}), getattr(self, "vera_B", {})):
            if adapter_name in table:
                del table[adapter_name]


class TrainableTokensModel(LoraModel):
    """PEFT's TrainableTokensModel (``TrainableTokensConfig``): each target layer becomes a
    ``TrainableTokensLayer`` (names ``embed_tokens.trainable_tokens_delta.default``, no wrapper); with
    tied embeddings the head gets a layer tied to the embedding's rows, as PEFT."""

    prefix = "trainable_tokens_"
    layer_cls = TrainableTokensLayer

    def _resolve_targets(self, config):
        if config.target_modules is None:  # PEFT: the input embedding's full name (a string)
            has_embedding = hasattr(self.model, "get_input_embeddings")
            config.target_modules = _module_name(self.model, self.model.get_input_embeddings()) \
                if has_embedding else "embed_tokens"
        return config

    def _create_layer(self, target, adapter_name, config, key):
        if not isinstance(target, (_NNEmbedding, _NNLinear)):
            raise TypeError(f"TrainableTokens trains rows of Embedding (or Linear) layers; {key!r} is a "
                            f"{type(target).__name__}")
        return TrainableTokensLayer(target, adapter_name, config.token_indices, init_weights=config.init_weights)

    def _update_layer(self, layer, adapter_name, config, key):
        layer.update_layer(adapter_name, config.token_indices, config.init_weights)

    def _inject(self, adapter_name, config, state_dict=None):
        super()._inject(adapter_name, config, state_dict)
        head = self._tied_head_name()  # None for a model without get_input_embeddings (a plain nn.Module)
        if head is None or not isinstance(self.model.get_input_embeddings(), TrainableTokensLayer):
            return
        embedding = self.model.get_input_embeddings()
        current = self.model.get_submodule(head)
        if isinstance(current, TrainableTokensLayer) and current.tied_adapter is embedding:
            current.update_layer(adapter_name, None)
            return
        base = current.base_layer if isinstance(current, TrainableTokensLayer) else current  # (also targeted)
        self._replace(head, TrainableTokensLayer(base, adapter_name, None, tied_adapter=embedding))


PEFT_TYPE_TO_TUNER = {"LORA": LoraModel, "VERA": VeraModel, "TRAINABLE_TOKENS": TrainableTokensModel}


def _model_type(model):
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    if model_type is None and hasattr(config, "to_dict"):
        model_type = config.to_dict().get("model_type")
    return model_type or type(model).__name__.lower().replace("forcausallm", "")


def _is_linear(module, layer_cls):
    """A Linear, or an adapter layer around one ("all-linear" for a second adapter). Not a ParamWrapper
    (PEFT takes adapter layers whose class name has "Linear" in it: not lora.ParamWrapper, whatever it wraps)."""
    return isinstance(module, _NNLinear) or (isinstance(module, layer_cls) and not isinstance(module, ParamWrapper)
                                             and isinstance(module.base_layer, _NNLinear))


def _all_linear_skipped_head(model, task_type):
    """The head "all-linear" leaves out, as PEFT's: a transformers model's (minilora's have
    get_output_embeddings) output embedding or, where it has none, a SEQ_CLS model's ``score`` / ``classifier``
    (PEFT's SEQ_CLS_HEAD_NAMES, issue 2027). A user's own module keeps every Linear, its ``lm_head`` included."""
    if not hasattr(model, "get_output_embeddings"):
        return None
    head = model.get_output_embeddings()
    if head is None and task_type == TaskType.SEQ_CLS:
        head = next((getattr(model, name) for name in ("score", "classifier")
                     if getattr(model, name, None) is not None), None)
    return head


def _output_head(model):
    """The module that maps hidden states to the vocabulary (never adapted by ``"all-linear"``)."""
    if hasattr(model, "get_output_embeddings"):
        return model.get_output_embeddings()
    return model._modules.get("lm_head")


def _model_dtype_device(model):
    p = next(model.parameters())
    return p.dtype, p.device


def _module_name(model, target):
    return next((name for name, m in model.named_modules() if m is target), type(target).__name__)


def _host(array):
    return array if isinstance(array, np.ndarray) else array.get()


def warn_if_name_inside_prefix(adapter_name, peft_config):
    """PEFT's warning for an adapter named by a piece of its method's parameter prefix ("lora", "a", "_" of
    "lora_"): PEFT's loaders find an adapter's weights by that prefix, and such a name may confuse them (minilora's
    own loading is unaffected; the warning is for files PEFT reads)."""
    prefix = getattr(PEFT_TYPE_TO_TUNER.get(peft_config.peft_type), "prefix", None)
    if prefix and isinstance(adapter_name, str) and adapter_name in prefix:
        warnings.warn(f"Adapter name '{adapter_name}' should not be contained in the prefix '{prefix}'. "
                      "This may lead to reinitialization of the adapter weights during loading.")


def _check_adapter_name(adapter_name):
    """An adapter name becomes a key in every parameter name and, when saved, a folder name: it may not
    be a path (``save_pretrained`` writes adapter ``name`` to ``save_directory/name``) nor hold a dot."""
    if not isinstance(adapter_name, str):
        raise TypeError(f"an adapter name must be a non-empty string, got {adapter_name!r}")
    if not adapter_name:  # (PEFT's: ModuleDict's KeyError, "module name can't be empty string")
        raise AdapterNameError(f"an adapter name must be a non-empty string, got {adapter_name!r}")
    if os.path.isabs(adapter_name) or adapter_name in (".", "..") or any(c in adapter_name for c in "/\\.") \
            or (os.altsep and os.altsep in adapter_name):
        raise AdapterNameError(f"invalid adapter name {adapter_name!r}: it may not be a path nor contain '/', "
                               "'\\' or '.' (save_pretrained writes each adapter to a folder named after it)")


def _refuse(name, value, default, what):
    """A PEFT argument minilora does not implement: accepted at its default, refused by name otherwise."""
    if value != default:
        raise NotImplementedError(f"{what}({name}={value!r}) is not implemented in minilora "
                                  f"(only {name}={default!r})")


# ==================================================================================================
# PeftModel: what get_peft_model returns
# ==================================================================================================
class PeftModel(_Wrapper):
    """A model with adapters. Calls go to the wrapped model; adapter methods are PEFT's.

    ``low_cpu_mem_usage=True`` (here, in get_peft_model, add_adapter, from_pretrained, load_adapter,
    inject_adapter_in_model) makes the new adapter's weights on the meta device, as PEFT's init_empty_weights
    (``empty_adapter_weights``), to be given values by loading: ``set_peft_model_state_dict(...,
    low_cpu_mem_usage=True)`` assigns them, as from_pretrained and load_adapter do."""

    wrapped = "base_model"

    def __init__(self, model, peft_config, adapter_name="default", autocast_adapter_dtype=True,
                 low_cpu_mem_usage=False):
        super().__init__()
        if peft_config.peft_type not in PEFT_TYPE_TO_TUNER:
            raise NotImplementedError(f"adapter type {getattr(peft_config.peft_type, 'value', None)!r} is not "
                                      "supported")
        with fork_rng(enabled=low_cpu_mem_usage):  # PEFT builds the adapters on the meta device: nothing is drawn
            self.base_model = self._tuner_class(peft_config)(model, peft_config, adapter_name)
        if low_cpu_mem_usage:
            empty_adapter_weights(self.base_model, adapter_name)
        cast_adapter_dtype(self.base_model, adapter_name, autocast_adapter_dtype)

    @staticmethod
    def _tuner_class(peft_config):
        return PEFT_TYPE_TO_TUNER[peft_config.peft_type]

    # --- what is there -------------------------------------------------------------------------
    @property
    def peft_config(self):
        return self.base_model.peft_config

    @property
    def active_adapter(self):
        """One name, as PEFT's PeftModel holds: after ``base_model.set_adapter([...])`` (several adapters
        active in the layers) it is the name set before, whose config ``active_peft_config`` reads."""
        active = self.base_model.active_adapter
        if active is None or isinstance(active, str):
            return active
        return getattr(self.base_model, "named_adapter", None) or active[0]

    @property
    def active_adapters(self):
        return self.base_model.active_adapters

    @property
    def active_peft_config(self):
        return self.peft_config[self.active_adapter]

    @property
    def peft_type(self):
        """The active adapter's method: "LORA", "ADALORA", "VERA" (PEFT's PeftType values)."""
        return self.active_peft_config.peft_type

    @property
    def modules_to_save(self):
        """The modules_to_save names of all adapters, as a set (None when there are none), as PEFT."""
        names = {name for config in self.peft_config.values()
                 for name in getattr(config, "modules_to_save", None) or ()}
        return names or None

    def get_base_model(self):
        """The original model (with adapter layers inside it until ``merge_and_unload``/``unload``)."""
        return self.base_model.model

    @property
    def has_active_enabled_adapter(self):
        """PEFT's: False inside ``with model.disable_adapter():`` (and after ``disable_adapter_layers()``) while
        adapters are active, True otherwise (its formula: also True when no adapter is active)."""
        disabled = any(module.disable_adapters for module in self.base_model._adapter_modules())
        return not disabled or not self.active_adapters

    @property
    def base_model_torch_dtype(self):
        """The base model's ``dtype`` (None when it has none), as PEFT's."""
        return getattr(self.base_model, "dtype", None)

    def get_nb_trainable_parameters(self):
        """``(trainable, all)`` parameter counts; a parameter shared by two modules counts once."""
        trainable = total = 0
        for _, p in self.named_parameters():
            total += p.numel()
            if p.requires_grad:
                trainable += p.numel()
        return trainable, total

    def print_trainable_parameters(self):
        trainable, total = self.get_nb_trainable_parameters()
        print(f"trainable params: {trainable:,d} || all params: {total:,d} || "
              f"trainable%: {100 * trainable / total:.4f}")

    # --- running -------------------------------------------------------------------------------
    def forward(self, *args, adapter_names=None, alora_offsets=None, **kwargs):
        """The wrapped model's forward. ``adapter_names=[...]``: one adapter (or "__base__") per sample;
        ``alora_offsets``: aLoRA's per-row offsets (a causal LM computes them from ``input_ids``)."""
        with self.base_model._enable_peft_forward_hooks(adapter_names, alora_offsets):
            return self.get_base_model()(*args, **kwargs)

    def generate(self, *args, adapter_names=None, alora_offsets=None, **kwargs):
        beams = kwargs.get("num_beams")
        if isinstance(self, PeftModelForCausalLM):  # (PEFT computes aLoRA's offsets in the causal LM's generate)
            alora_offsets = alora_offsets_for_generate(self, args, kwargs, adapter_names, alora_offsets)
        if adapter_names is not None and isinstance(beams, int) and beams > 1:  # each row runs as num_beams rows:
            adapter_names = [name for name in adapter_names for _ in range(beams)]  # PEFT repeats its name as well
        with self.base_model._enable_peft_forward_hooks(adapter_names, alora_offsets, beams):
            return self.get_base_model().generate(*args, **kwargs)

    @contextlib.contextmanager
    def disable_adapter(self):
        """``with model.disable_adapter():`` runs the plain base model (a merged one is unmerged).

        As PEFT, the adapters are enabled again on the way out unless every one was already disabled before
        (``base_model.disable_adapter_layers()``): the context restores that state, it does not override it.
        Some layers enabled and others not is most likely a mistake: PEFT's warning, and all enabled after."""
        from .status import IRREGULAR
        enabled = self.get_model_status().enabled
        if enabled == IRREGULAR:
            warnings.warn("The model contains some adapter layers that are enabled and others that are disabled. "
                          "This is most likely unintentional. After exiting the disable_adapter context, all "
                          "adapters will be enabled")
        self.base_model.disable_adapter_layers()
        try:
            yield
        finally:
            if enabled is not False:
                self.base_model.enable_adapter_layers()

    # --- several adapters ----------------------------------------------------------------------
    def add_adapter(self, adapter_name, peft_config, low_cpu_mem_usage=False, autocast_adapter_dtype=True):
        """Add another adapter (inactive and frozen until ``set_adapter``)."""
        if adapter_name not in self.peft_config:  # (PEFT's "already exists" error comes first)
            warn_if_name_inside_prefix(adapter_name, peft_config)
        self._add_adapter(adapter_name, peft_config, low_cpu_mem_usage, autocast_adapter_dtype)

    def _add_adapter(self, adapter_name, peft_config, low_cpu_mem_usage, autocast_adapter_dtype):
        with keeping_trainability(self.base_model.model, adapter_name):  # (PEFT's injection does all this inside)
            with fork_rng(enabled=low_cpu_mem_usage):
                self.base_model.inject_adapter(adapter_name, peft_config)
            self.base_model.set_adapter(self.active_adapter if self.active_adapter is not None else adapter_name)
            if not peft_config.inference_mode:
                self.base_model.apply_bias_modes()  # after set_adapter, as PEFT's injection
        if low_cpu_mem_usage:
            empty_adapter_weights(self.base_model, adapter_name)
        cast_adapter_dtype(self.base_model, adapter_name, autocast_adapter_dtype)

    def set_adapter(self, adapter_name, inference_mode=False):
        """Make ``adapter_name`` the active adapter and, as PEFT does, trainable (``requires_grad``) --
        also one loaded for inference -- unless ``inference_mode=True`` keeps it frozen."""
        if not isinstance(adapter_name, str):  # PEFT 0.22's TypeError and words
            raise TypeError("PeftModel.set_adapter only supports a single adapter name as a string. To activate "
                            "multiple adapters, use model.base_model.set_adapter(adapter_names) if the PEFT method "
                            "supports it.")
        self.base_model.set_adapter(adapter_name, inference_mode=inference_mode)

    def get_layer_status(self):
        """PEFT's per-layer troubleshooting view (``minilora.lora.status``)."""
        from .status import get_layer_status
        return get_layer_status(self)

    def get_model_status(self):
        """PEFT's whole-model troubleshooting view: "irregular" where the layers disagree."""
        from .status import get_model_status
        return get_model_status(self)

    def set_requires_grad(self, adapter_names, requires_grad=True):
        """Train (``True``) or freeze these adapters' weights, whether active or not (PEFT's method)."""
        self.base_model.set_requires_grad(adapter_names, requires_grad=requires_grad)

    def delete_adapter(self, adapter_name):
        self.base_model.delete_adapter(adapter_name)

    # --- files ---------------------------------------------------------------------------------
    def save_pretrained(self, save_directory, safe_serialization=True, selected_adapters=None,
                        save_embedding_layers="auto", is_main_process=True,
                        path_initial_model_for_weight_conversion=None, *, overwrite=False, **kwargs):
        """Write each adapter as PEFT does: ``adapter_config.json`` + ``adapter_model.safetensors``
        (adapter "default" in ``save_directory``, others in ``save_directory/<name>``), and a short model
        card ``README.md`` (kept if one is there already). PEFT's signature and order.

        * ``safe_serialization=False``: ``adapter_model.bin`` in torch.save's format instead, as PEFT writes it.
        * ``save_embedding_layers`` as in PEFT: with "auto", an adapter that targets an embedding layer
          also stores that layer's base table; False leaves it out.
        * ``is_main_process=False`` writes nothing (one process of a distributed run saves).
        * ``overwrite`` (minilora's own): a *different* adapter already saved there (other config,
          tensor names or shapes) is refused unless True; re-saving the same adapter is fine.
        """
        if kwargs:
            raise NotImplementedError(f"save_pretrained: minilora does not implement PEFT's {sorted(kwargs)}")
        if isinstance(selected_adapters, str):
            raise TypeError(f"selected_adapters must be a list of adapter names, got {selected_adapters!r} "
                            "(PEFT's second positional argument is safe_serialization)")
        if not is_main_process:
            return
        card = functools.partial(_io.write_model_card, save_directory, self._card_base_model(),
                                 self.active_peft_config.peft_type, isinstance(self, PeftModelForCausalLM),
                                 # (a class with a config_class saves and loads in transformers' format)
                                 transformers_model=getattr(self.get_base_model(), "config_class", None) is not None)
        if path_initial_model_for_weight_conversion is not None:  # PiSSA/OLoRA -> plain LoRA (inits.py)
            save_converted_to_lora(self, save_directory, path_initial_model_for_weight_conversion, selected_adapters)
            card()
        else:  # (the card in the same unit as the adapter)
            _io.save_adapters(self, save_directory, selected_adapters=selected_adapters, overwrite=overwrite,
                              save_embedding_layers=save_embedding_layers, safe_serialization=safe_serialization,
                              also=lambda folder: card(into=folder))

    def _card_base_model(self):
        config = self.peft_config.get(self.active_adapters[0]) if self.active_adapters else None
        return (config.base_model_name_or_path if config is not None else None) or \
            _io._name_or_path(self.get_base_model())

    @classmethod
    def from_pretrained(cls, model, model_id, adapter_name="default", is_trainable=False, config=None,
                        autocast_adapter_dtype=True, ephemeral_gpu_offload=False, low_cpu_mem_usage=False,
                        key_mapping=None, strict_adapter_check="warn", **kwargs):
        """Wrap ``model`` with the adapter saved in directory ``model_id`` (by minilora or PEFT).

        As PEFT: ``PeftModel.from_pretrained`` returns the class of the adapter's ``task_type``
        (``PeftModelForCausalLM`` for "CAUSAL_LM"); loaded for inference unless ``is_trainable``.
        ``subfolder`` and the Hub's keywords as in PEFT (see ``save.adapter_folder``); ``key_mapping`` as in
        ``load_peft_weights``; ``low_cpu_mem_usage``: the adapter is made on meta and its weights assigned (see
        ``PeftModel``); ``strict_adapter_check`` as in ``load_adapter``."""
        _refuse_load_options(ephemeral_gpu_offload, "PeftModel.from_pretrained")
        _check_strict_adapter_check(strict_adapter_check)
        _check_is_trainable(is_trainable)
        if config is not None and not isinstance(config, PeftConfig):  # PEFT's check and words
            raise ValueError(f"The input config must be a PeftConfig, got {config.__class__}")
        ignore_mismatched_sizes = kwargs.pop("ignore_mismatched_sizes", False)  # PEFT's load_adapter keywords
        _check_torch_device(model, kwargs.pop("torch_device", None), "PeftModel.from_pretrained")
        model_id = _io.adapter_folder(model_id, kwargs, "PeftModel.from_pretrained")
        with one_version_of(model_id):  # (the config and the weights of one save, whatever another process saves)
            config = config if config is not None else config_from_dict(_io.read_adapter_config(model_id))
            config = copy.deepcopy(config)
            config.inference_mode = not is_trainable
            model_cls = _class_for_task(config.task_type) if cls is PeftModel else cls
            trainable = [(param, param.requires_grad) for param in model.parameters()]
            peft_model = model_cls(model, config, adapter_name, autocast_adapter_dtype=autocast_adapter_dtype,
                                   low_cpu_mem_usage=low_cpu_mem_usage)
            try:
                result = _io.load_adapter_weights(peft_model, model_id, adapter_name, key_mapping,
                                                  ignore_mismatched_sizes, low_cpu_mem_usage)
                peft_model._report_adapter_keys(result, adapter_name, strict_adapter_check)
                if low_cpu_mem_usage:  # (PEFT's load_adapter casts after loading: assigned weights took the base's
                    cast_adapter_dtype(peft_model.base_model, adapter_name, autocast_adapter_dtype)  # dtype)
            except Exception:  # an adapter that does not fit: give the caller's model back as it came
                peft_model.base_model._restore_base_model()
                for param, flag in trainable:
                    param.requires_grad = flag
                raise
        if not is_trainable:
            peft_model.eval()
        return peft_model

    def load_adapter(self, model_id, adapter_name, is_trainable=False, torch_device=None,
                     autocast_adapter_dtype=True, ephemeral_gpu_offload=False, low_cpu_mem_usage=False,
                     key_mapping=None, strict_adapter_check="warn", **kwargs):
        """Load another saved adapter under ``adapter_name`` (not activated: use ``set_adapter``; a name the
        model has already gets the folder's weights in place, its config kept, as PEFT's); with
        ``is_trainable=True`` its weights train already, as in PEFT (the active adapter's stay as they are),
        else the model is put in eval mode, as PEFT does. Returns PEFT's load result: ``(missing_keys,
        unexpected_keys)`` of this adapter's own weights (a mismatch raised already, so both are empty but for
        PEFT's filter by name, see ``_report_adapter_keys``), reported as ``strict_adapter_check`` says (PEFT
        0.22): "warn", "error" (RuntimeError) or "ignore"."""
        _check_torch_device(self, torch_device, "load_adapter")
        _refuse_load_options(ephemeral_gpu_offload, "load_adapter")
        _check_strict_adapter_check(strict_adapter_check)
        _check_is_trainable(is_trainable)
        ignore_mismatched_sizes = kwargs.pop("ignore_mismatched_sizes", False)  # PEFT reads it from kwargs too
        model_id = _io.adapter_folder(model_id, kwargs, "load_adapter")
        with one_version_of(model_id):  # (the config and the weights of one save: a server's reload mid-training)
            if adapter_name in self.peft_config:  # PEFT: the folder's weights replace that adapter's (a later
                result = _io.load_adapter_weights(self, model_id, adapter_name, key_mapping,  # checkpoint)
                                                  ignore_mismatched_sizes, low_cpu_mem_usage)
            else:
                result = self._load_new_adapter(model_id, adapter_name, is_trainable, autocast_adapter_dtype,
                                                key_mapping, ignore_mismatched_sizes, low_cpu_mem_usage)
        if low_cpu_mem_usage:  # (PEFT's load_adapter casts after loading: assigned weights took the base's dtype)
            cast_adapter_dtype(self.base_model, adapter_name, autocast_adapter_dtype)
        if not is_trainable:
            self.eval()
        return self._report_adapter_keys(result, adapter_name, strict_adapter_check)

    def _report_adapter_keys(self, result, adapter_name, strict_adapter_check):
        """PEFT 0.22's check after loading: the missing keys that hold the method's prefix and the adapter's name
        (PEFT's filter, by substring: a name inside the prefix, "a" in "lora_A", also catches the other
        adapters' keys, and PEFT's hint says so) warned about, raised or ignored. Returns the filtered result."""
        prefix = self.base_model.prefix
        result = type(result)([k for k in result.missing_keys if prefix in k and adapter_name in k], [])
        if strict_adapter_check == "ignore" or not result.missing_keys:
            return result
        problems = f"missing adapter keys: {result.missing_keys}"  # (unexpected keys raised when loading)
        hint = (f"Adapter name '{adapter_name}' should not be contained in the prefix '{prefix}'. This could be the "
                "potential reason for missing adapter keys. ") if adapter_name in prefix else ""
        if strict_adapter_check == "error":
            raise RuntimeError(f"{hint}Error(s) in loading adapter '{adapter_name}' state_dict: found {problems}.")
        warnings.warn(f"{hint}Found {problems} while loading the checkpoint.")
        return result

    def _load_new_adapter(self, model_id, adapter_name, is_trainable, autocast_adapter_dtype, key_mapping,
                          ignore_mismatched_sizes, low_cpu_mem_usage=False):
        """load_adapter under a new name: the folder's config added as ``adapter_name``, then its weights;
        a failed load takes the adapter out again."""
        config = config_from_dict(_io.read_adapter_config(model_id))
        config.inference_mode = not is_trainable
        wrapped = self.base_model.wrapped_layer_names()
        self.add_adapter(adapter_name, config, low_cpu_mem_usage, autocast_adapter_dtype=autocast_adapter_dtype)
        if is_trainable:  # add_adapter leaves a new, inactive adapter frozen
            self.set_requires_grad(adapter_name)
        try:
            return _io.load_adapter_weights(self, model_id, adapter_name, key_mapping, ignore_mismatched_sizes,
                                            low_cpu_mem_usage)
        except Exception:
            self.delete_adapter(adapter_name)  # leave the model as it was: no adapter, no new wrappers
            self.base_model.unwrap_layers_except(wrapped)
            raise


@contextlib.contextmanager
def keeping_trainability(model, adapter_name):
    """PEFT 0.21's rule for adding an adapter: every parameter already there keeps its ``requires_grad`` (another
    adapter set trainable, a loaded one frozen, a base weight the user unfroze); only ``adapter_name``'s own new
    weights get the new adapter's setting. The first adapter is the exception: it freezes the base model."""
    def is_new(name):
        return f".{adapter_name}." in name or name.endswith(f".{adapter_name}")
    first = not any(isinstance(module, BaseTunerLayer) for module in model.modules())
    kept = [] if first else [(p, p.requires_grad) for name, p in model.named_parameters() if not is_new(name)]
    yield
    for parameter, requires_grad in kept:
        parameter.requires_grad = requires_grad


@contextlib.contextmanager
def keeping_adapter_modes(tuner, adapter_name, training):
    """PEFT 0.22's rule for adding an adapter: the adapters already there keep their modules' train / eval
    mode (their Dropout), and the new adapter's modules take ``training`` (not its config's inference_mode),
    whatever mode the model is in; its next set_adapter makes them follow the layer's mode. (0.21 left a new
    adapter's Dropout training in a model already put in eval mode, until the next model.eval().)"""
    kept = [(module, module.training) for layer in tuner.tuner_layers()
            for name in layer.adapter_layer_names + getattr(layer, "other_param_names", ())
            if isinstance(getattr(layer, name, None), ModuleDict) for module in getattr(layer, name).values()]
    yield
    for module, was_training in kept:
        module.train(was_training)
    for layer in tuner.tuner_layers():
        layer.set_training(adapter_name, training)


class MixedModel(LoraModel):
    """PEFT's tuner of a ``PeftMixedModel`` (its name in print(model)); in minilora it holds LoRA adapters."""


# PEFT's PeftMixedModel mixes these methods; minilora has LoRA among them (AdaLoRA too, but not beside LoRA)
MIXABLE_PEFT_TYPES = ("LORA", "LOHA", "LOKR", "ADALORA", "OFT", "SHIRA")


def _check_mixable(peft_config):
    """PEFT's ValueError for a method it cannot mix; minilora's NotImplementedError for a mixable method it has
    not got (LoRA is the one it mixes: adapters of several LoRA configs, active together)."""
    if peft_config.peft_type not in MIXABLE_PEFT_TYPES:  # PEFT's words
        raise ValueError(f"The provided `peft_type` '{peft_config.peft_type.value}' is not compatible with the "
                         f"`PeftMixedModel`. Compatible types are: {MIXABLE_PEFT_TYPES}")
    if peft_config.peft_type != "LORA":
        raise NotImplementedError(
            f"PeftMixedModel with a {peft_config.peft_type.value} adapter is not implemented in minilora: of PEFT's "
            f"mixable methods {MIXABLE_PEFT_TYPES} it has LoRA only (LoHa, LoKr, OFT and SHiRA do not exist here, "
            "and AdaLoRA cannot share a model with LoRA). Mix LoRA adapters, or use get_peft_model without mixed.")


class PeftMixedModel(PeftModel):
    """``get_peft_model(model, config, mixed=True)`` / ``PeftMixedModel.from_pretrained``: PEFT's model for
    several adapters active together (``set_adapter(["a", "b"])``), possibly of different methods -- in
    minilora LoRA adapters (``_check_mixable`` says why). As PEFT's: adapters are not upcast to float32
    (no autocast_adapter_dtype), bias modes other than "none" only with one adapter, and no saving."""

    def __init__(self, model, peft_config, adapter_name="default", autocast_adapter_dtype=False, **kwargs):
        _check_mixable(peft_config)
        super().__init__(model, peft_config, adapter_name, autocast_adapter_dtype=autocast_adapter_dtype, **kwargs)

    @staticmethod
    def _tuner_class(peft_config):
        return MixedModel

    @property
    def active_adapter(self):
        return self.base_model.active_adapter  # the list of names (PEFT's PeftMixedModel)

    def add_adapter(self, adapter_name, peft_config, low_cpu_mem_usage=False, autocast_adapter_dtype=False):
        _check_mixable(peft_config)  # (PEFT's PeftMixedModel.add_adapter does not check the name against the prefix)
        self._add_adapter(adapter_name, peft_config, low_cpu_mem_usage, autocast_adapter_dtype)

    def set_adapter(self, adapter_name, inference_mode=False):
        """Activate one adapter or a list of them (their updates add up), trainable unless inference_mode."""
        names = [adapter_name] if isinstance(adapter_name, str) else list(adapter_name)
        unknown = sorted(set(names) - set(self.peft_config))
        if unknown:  # PEFT's words
            raise ValueError(f"Adapter(s) {unknown} not found, available adapters: {sorted(self.peft_config)}")
        self.base_model.set_adapter(names, inference_mode=inference_mode)

    def save_pretrained(self, save_directory, safe_serialization=False, selected_adapters=None, **kwargs):
        raise NotImplementedError(f"Saving is not supported for {type(self).__name__} (yet).")  # PEFT's words


class PeftModelForCausalLM(PeftModel):
    """What ``get_peft_model`` returns for ``task_type="CAUSAL_LM"`` (PEFT's class of that name).

    Same behaviour as ``PeftModel`` here (minilora's models are all causal language models), except that,
    as in PEFT, the forward goes through the tuner, which may add its own term to the loss (AdaLoRA's
    orthogonal regulariser; a plain ``PeftModel`` calls the base model directly and adds nothing)."""

    def forward(self, input_ids=None, attention_mask=None, inputs_embeds=None, labels=None, output_attentions=None,
                output_hidden_states=None, return_dict=None, task_ids=None, *, adapter_names=None, **kwargs):
        """PEFT's argument order for a causal LM -- its third positional is ``inputs_embeds``, not the base
        model's ``position_ids`` -- passed on by keyword (``task_ids`` is for prompt learning: unused by
        LoRA, as in PEFT)."""
        given = dict(inputs_embeds=inputs_embeds, labels=labels, output_attentions=output_attentions,
                     output_hidden_states=output_hidden_states, return_dict=return_dict)
        kwargs.update({name: value for name, value in given.items() if value is not None})
        alora_offsets = alora_offsets_for_forward(self, input_ids, inputs_embeds, adapter_names,
                                                  kwargs.pop("alora_offsets", None))
        out = super().forward(input_ids, attention_mask, adapter_names=adapter_names, alora_offsets=alora_offsets,
                              **kwargs)
        return self.base_model.add_to_loss(out)


class PeftModelForFeatureExtraction(PeftModel):
    """What ``get_peft_model`` returns for ``task_type="FEATURE_EXTRACTION"`` (PEFT's class of that name):
    the forward goes through the tuner, with PEFT's argument order (no ``labels``: a keyword goes on)."""

    def forward(self, input_ids=None, attention_mask=None, inputs_embeds=None, output_attentions=None,
                output_hidden_states=None, return_dict=None, task_ids=None, *, adapter_names=None, **kwargs):
        given = dict(inputs_embeds=inputs_embeds, output_attentions=output_attentions,
                     output_hidden_states=output_hidden_states, return_dict=return_dict)
        kwargs.update({name: value for name, value in given.items() if value is not None})
        out = super().forward(input_ids, attention_mask, adapter_names=adapter_names, **kwargs)
        return self.base_model.add_to_loss(out)


# PEFT's names for a task head: with SEQ_CLS / TOKEN_CLS they join every adapter's modules_to_save, so the
# freshly initialised head trains (and is saved) with the adapter. A name the model lacks is skipped, as PEFT.
# (PEFT 0.22 added "pre_classifier": DistilBERT-style heads draw it afresh too, so it must train and be saved.)
CLASSIFIER_MODULE_NAMES = ("classifier", "score", "pre_classifier")


def _add_classifier_to_save(peft_config):
    """PEFT 0.22's: the classifier names added to the config's modules_to_save, each once, in a NEW list.

    The config is the caller's object; extending its list in place (PEFT 0.21) grew it on every reuse (a
    config shared by cross-validation folds, a second adapter) and changed the caller's own list."""
    if hasattr(peft_config, "modules_to_save"):
        existing = list(peft_config.modules_to_save or ())
        peft_config.modules_to_save = existing + [name for name in CLASSIFIER_MODULE_NAMES if name not in existing]


class _PeftModelForClassification(PeftModelForCausalLM):
    """PEFT's PeftModelForSequenceClassification / PeftModelForTokenClassification: the task head
    ("score" on a Llama, "classifier" elsewhere) trains in full beside the adapter (a ModulesToSaveWrapper);
    the forward is PEFT's (``labels`` to the base model, whose loss it is). ``cls_layer_name`` is set as
    PEFT sets it: the first child of the tuner whose name holds a modules_to_save name -- the tuner's only
    child is "model", so on a Llama it stays unset (AttributeError), as in PEFT 0.21.2 and 0.22.0."""

    def __init__(self, model, peft_config, adapter_name="default", **kwargs):
        _add_classifier_to_save(peft_config)
        super().__init__(model, peft_config, adapter_name, **kwargs)
        names = self.modules_to_save or ()
        for name, _ in self.base_model.named_children():
            if any(wanted in name for wanted in names):
                self.cls_layer_name = name
                break

    def add_adapter(self, adapter_name, peft_config, low_cpu_mem_usage=False, autocast_adapter_dtype=True):
        _add_classifier_to_save(peft_config)  # every adapter gets its own copy of the head, as PEFT
        super().add_adapter(adapter_name, peft_config, low_cpu_mem_usage, autocast_adapter_dtype)


class PeftModelForSequenceClassification(_PeftModelForClassification):
    """What ``get_peft_model`` returns for ``task_type="SEQ_CLS"`` (e.g. on LlamaForSequenceClassification)."""


class PeftModelForTokenClassification(_PeftModelForClassification):
    """What ``get_peft_model`` returns for ``task_type="TOKEN_CLS"`` (e.g. on LlamaForTokenClassification)."""


def _class_for_task(task_type):
    """PEFT's MODEL_TYPE_TO_PEFT_MODEL_MAPPING, for the task types minilora has models for."""
    classes = {None: PeftModel, TaskType.CAUSAL_LM: PeftModelForCausalLM,
               TaskType.FEATURE_EXTRACTION: PeftModelForFeatureExtraction,
               TaskType.SEQ_CLS: PeftModelForSequenceClassification,
               TaskType.TOKEN_CLS: PeftModelForTokenClassification}
    if task_type in classes:
        return classes[task_type]
    raise NotImplementedError(f"task_type={task_type!r} is not implemented in minilora (its models are causal "
                              "language models and Llama with a classification head): use 'CAUSAL_LM', "
                              "'SEQ_CLS', 'TOKEN_CLS', 'FEATURE_EXTRACTION' or None")


def cast_adapter_dtype(tuner, adapter_name, autocast_adapter_dtype=True):
    """PEFT's ``autocast_adapter_dtype``: adapter weights made in float16 or bfloat16 become float32.

    An adapter's layers take their base layer's dtype, so a bfloat16 model gets bfloat16 adapters (their
    initial values rounded to it, as PEFT's are); PEFT upcasts them (the default, True) because training a
    low-rank update in half precision loses small updates to rounding. The base stays 16-bit and each layer
    computes its adapter branch in float32 and rounds the result back, as in PEFT. ``False`` keeps them.

    As PEFT, every per-adapter entry of a tuner layer is upcast, not only the trained factors: AdaLoRA's
    ``ranknum`` too (so ``alpha / (ranknum + 1e-5)`` is PEFT's float32 number, not a 16-bit one)."""
    if autocast_adapter_dtype not in (True, False):
        raise TypeError(f"autocast_adapter_dtype must be True or False, got {autocast_adapter_dtype!r}")
    if not autocast_adapter_dtype:
        return
    for module in tuner.modules():
        if isinstance(module, BufferDict) and adapter_name in module and _is_16_bit(module[adapter_name].dtype):
            module[adapter_name] = module[adapter_name].float()  # VeRA's shared projections, as PEFT
        if not isinstance(module, BaseTunerLayer):
            continue
        for table in module.modules():  # lora_A.<adapter>.weight, vera_lambda_b.<adapter>, ranknum.<adapter>, ...
            if not isinstance(table, (ModuleDict, ParameterDict)) or adapter_name not in table:
                continue
            for name, param in table.named_parameters():
                if name.split(".")[0] == adapter_name and _is_16_bit(param.dtype):
                    param.data = param.data.float()  # the same Parameter object, as PEFT's in-place cast


def prepare_model_for_kbit_training(model, use_gradient_checkpointing=True, activation_checkpointing_kwargs=None,
                                    auto_clear_cache=True, *, gradient_checkpointing_kwargs=None):
    """PEFT's preparation of a model before LoRA training (the QLoRA recipe's first call): every parameter
    frozen, float16/bfloat16 ones cast to float32 (the same Parameter objects). minilora loads no 4-/8-bit
    weights, so PEFT's quantized branch (gradient checkpointing, inputs requiring grad) never applies; its
    keywords are taken and change nothing, as for an unquantized model in PEFT. PEFT 0.22 renamed
    ``gradient_checkpointing_kwargs`` to ``activation_checkpointing_kwargs`` (the old name a keyword, with its
    FutureWarning; both at once refused in its words). Returns ``model``."""
    if gradient_checkpointing_kwargs and activation_checkpointing_kwargs:
        raise ValueError("Don't use `activation_checkpointing_kwargs` and `gradient_checkpointing_kwargs` at the same "
                         "time, only use `activation_checkpointing_kwargs`; `gradient_checkpointing_kwargs` is "
                         "deprecated and will be removed in v1.2.")
    if gradient_checkpointing_kwargs:
        warnings.warn("`gradient_checkpointing_kwargs` is deprecated and will be removed in v1.2. Use "
                      "`activation_checkpointing_kwargs` instead.", FutureWarning)
    for param in model.parameters():
        param.requires_grad = False
    for param in model.parameters():
        if _is_16_bit(param.dtype):
            param.data = param.data.float()
    return model


def cast_mixed_precision_params(model, dtype):
    """PEFT's: parameters that do not train to ``dtype`` (float16 / bfloat16), trained ones to float32."""
    for param in model.parameters():
        param.data = param.data.to(dtype if not param.requires_grad else dtypes.float32)


def _is_16_bit(dtype):
    """float16 or bfloat16 (PEFT's dtypes_to_convert_to_fp32)."""
    return dtype.itemsize == 2 and dtypes.is_floating(dtype)


def _check_is_trainable(is_trainable):
    """``is_trainable`` is True or False, as LoraConfig's flags: ``is_trainable="False"`` (a command line's
    string) is true, and PEFT loads the adapter trainable without a word."""
    if not isinstance(is_trainable, bool):
        raise TypeError(f"is_trainable must be True or False, got {is_trainable!r}")


def _unloaded_module_to_save(wrapper, merge, adapter_names):
    """What replaces a ModulesToSaveWrapper when the adapters go (PEFT 0.22): ``merge_and_unload`` keeps the
    trained copy of the adapter it merges (the active one, or the one of ``adapter_names`` that has a copy
    here); ``unload`` gives the original module back, the model as it was before get_peft_model (0.21 kept the
    active copy there too, so "unload" still carried trained weights)."""
    if not merge:
        return wrapper.original_module
    selected = wrapper.check_set_adapter(wrapper.active_adapters if adapter_names is None else adapter_names)
    return wrapper.modules_to_save[selected[0]] if selected else wrapper.original_module


def _check_strict_adapter_check(value):
    if value not in ("warn", "error", "ignore"):  # PEFT 0.22's words
        raise ValueError(f"strict_adapter_check must be one of 'warn', 'error' or 'ignore', got {value!r}.")


def _check_torch_device(model, torch_device, what):
    """PEFT reads the file onto ``torch_device`` and copies it into the adapter's weights, which sit on their
    base layers' device: naming the device the model is on (``"cpu"``, as scripts do) changes nothing, so it
    is taken; another device (a copy minilora does not make) is refused by name."""
    if torch_device is None:
        return
    try:
        wanted = str(_device(torch_device))
    except Exception:  # noqa: BLE001  (a device this machine cannot make: the refusal below names it)
        wanted = None
    if {str(p.device) for p in model.parameters()} != {wanted}:
        _refuse("torch_device", torch_device, None, what)


def _refuse_load_options(ephemeral_gpu_offload, what):
    _refuse("ephemeral_gpu_offload", ephemeral_gpu_offload, False, what)


def _load_base_model(name_or_path, model_class_name, **kwargs):
    """The base model an adapter names: minilora's shipped base, or a local Hugging Face-format folder,
    loaded as ``minilora.models.<model_class_name>`` (a classification head is drawn new on the body)."""
    from .. import models  # the model zoo, only when a base is loaded
    model_class = getattr(models, model_class_name)
    if name_or_path == models.BASE_NAME:
        if model_class in (models.LlamaForCausalLM, models.AutoModelForCausalLM):
            return models.load_base(**kwargs)
        model = model_class.from_pretrained(models.BASE_DIR, **kwargs)
        model.name_or_path = models.BASE_NAME
        return model
    if name_or_path and os.path.isdir(name_or_path):
        return model_class.from_pretrained(name_or_path, **kwargs)
    raise FileNotFoundError(
        f"the adapter's base_model_name_or_path is {name_or_path!r}, which is neither minilora's shipped base "
        f"({models.BASE_NAME!r}) nor a local folder; minilora does not download from the Hugging Face Hub. "
        f"Load the base yourself ({model_class_name}.from_pretrained(folder)), then "
        "PeftModel.from_pretrained(model, adapter_dir).")


class _AutoPeftModel:
    """PEFT's AutoPeftModelFor*: ``from_pretrained(adapter_dir)`` loads the base model the adapter names (its
    ``base_model_name_or_path``) as the task's model class, then the adapter on top -- one call."""
    _peft_class = None  # what PeftModel.from_pretrained returns for the task
    _model_class_name = None  # the minilora.models class the base is loaded as

    def __init__(self, *args, **kwargs):
        raise TypeError(f"use {type(self).__name__}.from_pretrained(adapter_dir) (as in PEFT)")

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, adapter_name="default", is_trainable=False,
                        config=None, revision=None, import_allowlist=None, **kwargs):
        """``kwargs`` go to the base model's ``from_pretrained`` (e.g. ``dtype``, ``device``).

        (``import_allowlist`` is accepted for PEFT's signature: minilora never imports a module that
        an adapter file names, so there is nothing to allow.)"""
        _refuse("revision", revision, None, f"{cls.__name__}.from_pretrained")
        peft_config = config if config is not None else \
            config_from_dict(_io.read_adapter_config(pretrained_model_name_or_path))
        if peft_config.task_type is not None and _class_for_task(peft_config.task_type) is not cls._peft_class:
            expected = _class_for_task(peft_config.task_type).__name__  # PEFT's words
            raise ValueError(f"Expected target PEFT class: {expected}, but you have asked for: "
                             f"{cls._peft_class.__name__} make sure that you are loading the correct model for "
                             "your task type.")
        base = _load_base_model(peft_config.base_model_name_or_path, cls._model_class_name, **kwargs)
        return cls._peft_class.from_pretrained(base, pretrained_model_name_or_path, adapter_name=adapter_name,
                                               is_trainable=is_trainable, config=peft_config)


class AutoPeftModelForCausalLM(_AutoPeftModel):
    """``AutoPeftModelForCausalLM.from_pretrained(adapter_dir)`` (a task_type None adapter loads too)."""
    _peft_class, _model_class_name = PeftModelForCausalLM, "AutoModelForCausalLM"  # (Llama, Mistral, Qwen2, Qwen3)


class AutoPeftModelForSequenceClassification(_AutoPeftModel):
    """A SEQ_CLS adapter on LlamaForSequenceClassification: the trained head comes from the adapter's file."""
    _peft_class, _model_class_name = PeftModelForSequenceClassification, "AutoModelForSequenceClassification"


class AutoPeftModelForTokenClassification(_AutoPeftModel):
    """A TOKEN_CLS adapter on LlamaForTokenClassification: the trained head comes from the adapter's file."""
    _peft_class, _model_class_name = PeftModelForTokenClassification, "AutoModelForTokenClassification"


def _refuse_a_peft_model(model):
    """A PeftModel given to get_peft_model again (a notebook cell run twice): PEFT wraps the wrapper, minilora
    failed in an AttributeError of its own code; the two ways a user means, named instead."""
    if isinstance(model, PeftModel):
        raise TypeError(f"get_peft_model: the model is already a {type(model).__name__}; add another adapter with "
                        "model.add_adapter(name, config), or wrap its base model (model.get_base_model() after "
                        "model.unload()) for a fresh start")


def get_peft_model(model, peft_config, adapter_name="default", mixed=False, autocast_adapter_dtype=True,
                   revision=None, low_cpu_mem_usage=False):
    """Wrap ``model`` with a new adapter: matched Linears get LoRA (or VeRA) layers, the rest freezes.

    PEFT's signature. The class returned follows ``peft_config.task_type`` (``PeftModelForCausalLM``
    for "CAUSAL_LM", ``PeftModel`` for None). A model that already has adapter layers gets PEFT's
    warnings and, as there, shares the earlier PeftModel's configs; an adapter name it already has is
    replaced in both models (see ``LoraModel._configs_of_earlier_tuner``)."""
    _refuse_a_peft_model(model)
    if any(isinstance(module, BaseTunerLayer) for module in model.modules()):  # PEFT's warning
        warnings.warn("You are trying to modify a model with PEFT for a second time. If you want to reload "
                      "the model with a different config, make sure to call `.unload()` before.")
    if getattr(peft_config, "init_lora_weights", None) == "eva" and not low_cpu_mem_usage:  # PEFT's warning
        warnings.warn("lora with eva initialization used with low_cpu_mem_usage=False. Setting low_cpu_mem_usage=True "
                      "can improve the maximum batch size possible for eva initialization.")
    warn_if_name_inside_prefix(adapter_name, peft_config)
    if mixed:  # PEFT: before the task type, and without autocast_adapter_dtype
        return PeftMixedModel(model, peft_config, adapter_name)
    model_cls = _class_for_task(peft_config.task_type)
    if revision is not None:
        peft_config = copy.deepcopy(peft_config)
        peft_config.revision = revision
    return model_cls(model, peft_config, adapter_name, autocast_adapter_dtype=autocast_adapter_dtype,
                     low_cpu_mem_usage=low_cpu_mem_usage)


def empty_adapter_weights(tuner, adapter_name):
    """``low_cpu_mem_usage=True``: the adapter's weights on the meta device, as PEFT makes them (its
    init_empty_weights): shapes and dtypes without values, until ``set_peft_model_state_dict(...,
    low_cpu_mem_usage=True)`` assigns loaded ones (``layer.meta_adapters`` names them meanwhile: EVA initialises
    them). A forward before that raises torch's device error (a CPU input meets a meta weight), where torch 2.13's
    F.linear returns uninitialised memory."""
    for layer in tuner.tuner_layers():
        for table_name in layer.adapter_layer_names:
            table = getattr(layer, table_name, None)
            if table is None or adapter_name not in table:
                continue
            item = table[adapter_name]
            for param in item.parameters() if isinstance(item, Module) else (item,):
                param._array, param._device = _META.xp.zeros(param._array.shape, param._array.dtype), _META
        layer.meta_adapters = getattr(layer, "meta_adapters", set()) | {adapter_name}


def inject_adapter_in_model(peft_config, model, adapter_name="default", low_cpu_mem_usage=False, state_dict=None):
    """PEFT's low-level API: put the adapter layers into ``model`` in place and return that same model
    (no ``PeftModel`` around it: saving is ``get_peft_model_state_dict(model)``). Only the adapters
    train afterwards, as with get_peft_model. VeRA is refused as by PEFT: its shared projections live
    on the tuner, which this API drops. ``state_dict`` (PEFT's): the layers it holds adapter weights for
    are adapted, whatever the config's target_modules (a warning names the difference); its values are
    not loaded -- ``set_peft_model_state_dict(model, state_dict)`` does that. ``low_cpu_mem_usage``: the adapter's
    weights on meta (see ``PeftModel``)."""
    if peft_config.peft_type not in PEFT_TYPE_TO_TUNER:
        raise ValueError(f"`inject_adapter_in_model` does not support {peft_config.peft_type} yet. "
                         "Please use `get_peft_model`.")
    tuner_cls = PEFT_TYPE_TO_TUNER[peft_config.peft_type]
    if issubclass(tuner_cls, VeraModel):  # PEFT's words
        raise ValueError(f"`inject_adapter_in_model` does not support {peft_config.peft_type} because it uses "
                         "shared state stored on the tuner. Please use `get_peft_model` instead.")
    if peft_config.peft_type == "ADALORA":  # its rank allocator and saved ranks live on the tuner
        raise NotImplementedError("inject_adapter_in_model is not implemented for ADALORA in minilora: "
                                  "use get_peft_model")
    with fork_rng(enabled=low_cpu_mem_usage):
        tuner = tuner_cls(model, peft_config, adapter_name, state_dict=state_dict)
    if low_cpu_mem_usage:
        empty_adapter_weights(tuner, adapter_name)
    model.peft_config = tuner.peft_config  # as PEFT: get/set_peft_model_state_dict(model) read it
    return model
