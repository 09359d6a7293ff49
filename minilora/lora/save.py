"""Adapter files, byte-compatible with PEFT: ``adapter_config.json`` + ``adapter_model.safetensors``.

The file holds only the adapter, with the adapter name taken out of every key (it is chosen again
when loading)::

    model:  base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight
    file:   base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight

DoRA's magnitude is stored as ``...q_proj.lora_magnitude_vector`` (no ``.weight``), VeRA's shared
projections as ``base_model.vera_A`` / ``base_model.vera_B``, a ``modules_to_save`` copy under the
module's own name (``base_model.model.lm_head.weight``) -- all as PEFT writes them.

The save folder is replaced as one unit (``minilora.checkpoint.atomic_folder``).
"""
import os
import re
import warnings

import numpy as np

from ..checkpoint import (CheckpointError, atomic_folder, atomic_write, load_json, load_weights, read_header,
                          save_file, save_json, warn_non_finite)
from ..dtypes import is_floating
from .. import nn, serialization
from ..nn.llama import LlamaForCausalLM
from ..nn.module import IncompatibleKeys
from ..size import Size, torch_spelling
from ..tensor import Tensor, tensor, with_note
from .config import CONFIG_KEYS_WITH_PRESERVED_ORDER, CONFIG_NAME, written_by_minilora
from .layers import BaseTunerLayer, ModulesToSaveWrapper, TrainableTokensWrapper
from .mha import double_out_proj_of_old_peft_files

__all__ = ["WEIGHTS_NAME", "get_peft_model_state_dict", "set_peft_model_state_dict", "save_adapters",
           "read_adapter_config", "load_adapter_weights", "AdapterMismatchError", "AdapterFileNotFoundError",
           "write_model_card", "load_peft_weights", "remap_keys", "adapter_folder", "get_base_model_state_dict",
           "set_base_model_state_dict"]

WEIGHTS_NAME = "adapter_model.safetensors"
TORCH_WEIGHTS_NAME = "adapter_model.bin"  # older PEFT's torch.save file
EMBEDDING_LAYER_NAMES = ("embed_tokens", "lm_head")  # PEFT's: targeting one saves the embedding tables
# Config keys that may differ between two saves of the *same* adapter.
_VOLATILE_KEYS = {"peft_version", "inference_mode", "auto_mapping", "revision"}


class AdapterMismatchError(ValueError, RuntimeError):
    """An adapter file does not fit the model (another base model, other target modules or ranks). A
    RuntimeError as PEFT's "size mismatch for ..." (torch's load_state_dict), a ValueError as minilora's
    error always was."""


class AdapterFileNotFoundError(FileNotFoundError, ValueError):
    """An adapter folder lacks a file. PEFT's ``Can't find 'adapter_config.json' at ...`` is a ValueError;
    a FileNotFoundError is what the missing file is."""


def _embedding_base_weights(peft_model, adapter_name, untargeted=False, wrapped_ok=False):
    """``{file key: Tensor}`` of the base tables of the model's embedding layers, saved beside the adapter.

    PEFT's rule (``save_embedding_layers="auto"``: the vocabulary may have been resized for new tokens):
    when the adapter's ``target_modules`` names an embedding layer, the input embedding and the output
    head are saved, each one that is a tuner layer around an Embedding / Linear -- ``lm_head`` as much as
    ``embed_tokens``, and whichever adapter wrapped it. PEFT loads them back if the file has them.
    ``untargeted`` (``save_embedding_layers=True``): when no embedding is targeted, both layers are saved
    anyway, under their own names (``...model.embed_tokens.weight``, ``...lm_head.weight``), as PEFT's."""
    if not _targets_an_embedding(peft_model, peft_model.peft_config[adapter_name]):
        return _untargeted_tables(peft_model, wrapped_ok) if untargeted else {}
    return {f"{path}.base_layer.{key}": value for path, module in _embedding_layers(peft_model)
            if isinstance(module, BaseTunerLayer) and isinstance(module.base_layer, (nn.Linear, nn.Embedding))
            for key, value in module.base_layer.state_dict(keep_vars=True).items()}


def _untargeted_tables(peft_model, wrapped_ok):
    """The embedding layers' own state (PEFT writes each layer's ``state_dict`` under its name); a layer an
    adapter wraps (modules_to_save, trainable tokens) is refused by name when saving (``wrapped_ok`` False)
    rather than saved otherwise, and left out when loading."""
    tables = {}
    for path, module in _embedding_layers(peft_model):
        if isinstance(module, (BaseTunerLayer, ModulesToSaveWrapper, TrainableTokensWrapper)):
            if wrapped_ok:
                continue
            raise NotImplementedError(
                f"save_embedding_layers=True with {path} wrapped by {type(module).__name__} (modules_to_save or "
                "trainable_token_indices) is not implemented in minilora; its adapter file already holds what "
                "trains there: save with the default save_embedding_layers='auto'")
        tables.update({f"{path}.{key}": value for key, value in module.state_dict(keep_vars=True).items()})
    return tables


def _base_of(model):
    """A PeftModel's base model; a model with adapters injected in place (inject_adapter_in_model) itself."""
    get_base_model = getattr(model, "get_base_model", None)
    return get_base_model() if get_base_model is not None else model


def _embedding_layers(peft_model):
    """``[(path, module)]``: the input embedding and the output head, wrapped or not."""
    base = _base_of(peft_model)
    if not hasattr(base, "get_input_embeddings"):
        return []
    layers = [base.get_input_embeddings(), base.get_output_embeddings()]
    return [(path, module) for path, module in peft_model.named_modules() if any(module is m for m in layers)]


def _skipped_embedding_tables(peft_model):
    """File keys of an embedding table whose layer no adapter wraps here: PEFT writes them when another
    adapter of the saving model wrapped that layer, and its (strict=False) load passes them by."""
    return {f"{path}.base_layer.{key}" for path, module in _embedding_layers(peft_model)
            if not isinstance(module, BaseTunerLayer) for key in module.state_dict()}


def _targets_an_embedding(peft_model, config):
    """PEFT's test: a target list holding "embed_tokens" or "lm_head" itself, or a regex (other than
    "all-linear") that matches the full name of a module called so."""
    targets = getattr(config, "target_modules", None)
    if not isinstance(targets, str):
        return any(name in (targets or ()) for name in EMBEDDING_LAYER_NAMES)
    if targets == "all-linear":
        return False
    return any(re.fullmatch(targets, name) for name, _ in _base_of(peft_model).named_modules()
               if re.search(r"(^|\.)(embed_tokens|lm_head)$", name))


def _adapter_entries(peft_model, adapter_name):
    """``{file key: (Tensor, required)}``: the adapter's tensors, plus the optional embedding tables."""
    # (a file saved with save_embedding_layers=True holds the untargeted layers' tables: they load, as in PEFT)
    tables = _embedding_base_weights(peft_model, adapter_name, untargeted=True, wrapped_ok=True)
    tables.update(_wrapped_table_insides(peft_model, adapter_name))
    out = {k: (t, False) for k, t in tables.items()}
    out.update({k: (t, True) for k, t in _adapter_weights(peft_model, adapter_name).items()})
    return out


def _wrapped_table_insides(peft_model, adapter_name):
    """``{file key: Tensor}`` of what PEFT's save_embedding_layers writes for an embedding layer an adapter wraps:
    the wrapper's whole state under its name, adapter name dropped (``...embed_tokens.token_adapter.base_layer
    .weight``, ``...lm_head.original_module.weight``, ``...lm_head.modules_to_save.weight``). minilora does not
    write them (the file holds what trains there); it loads them from PEFT's files, as PEFT's load does."""
    others = set(peft_model.peft_config) - {adapter_name}
    out = {}
    for path, module in _embedding_layers(peft_model):
        if not isinstance(module, (ModulesToSaveWrapper, TrainableTokensWrapper)):
            continue
        for key, value in module.state_dict(keep_vars=True).items():
            parts = key.split(".")
            if not others.intersection(parts):
                out[".".join([path] + [part for part in parts if part != adapter_name])] = value
    return out


def _adapter_weights(peft_model, adapter_name):
    """``{file key: Tensor}`` of one adapter: the single traversal that saving and loading share."""
    config = peft_model.peft_config[adapter_name]
    out = {}
    for path, module in peft_model.named_modules():
        if not getattr(module, "saves_rows", True):
            continue  # LoRA's trainable tokens on a tied head: saved once, under the embedding (PEFT)
        if isinstance(module, BaseTunerLayer):
            for table_name in module.adapter_layer_names:
                table = getattr(module, table_name)
                if adapter_name not in table:
                    continue
                item = table[adapter_name]
                if table_name == "lora_magnitude_vector":
                    out[f"{path}.lora_magnitude_vector"] = item.weight  # PEFT drops ".weight" here
                elif hasattr(item, "named_parameters"):  # lora_A.default (a Linear) -> lora_A.weight
                    out.update({f"{path}.{table_name}.{n}": p for n, p in item.named_parameters()})
                else:  # vera_lambda_b.default (a Parameter) -> vera_lambda_b
                    out[f"{path}.{table_name}"] = item
            if config.bias.endswith("_only") and module.base_bias is not None:
                out[f"{path}.base_layer.bias"] = module.base_bias
        elif isinstance(module, ModulesToSaveWrapper) and adapter_name in module.modules_to_save:
            copy = module.modules_to_save[adapter_name]  # its own tensors: a load reports them loaded
            out.update({f"{path}.{k}": t for k, t in copy.state_dict(keep_vars=True).items()})
    if config.bias == "all":
        # the model's own biases; an adapter's lora_B.<name>.bias (lora_bias=True) is an adapter tensor, saved
        # above under PEFT's name (lora_B.bias), not again under its model name
        out.update({k: t for k, t in peft_model.state_dict().items()
                    if k.endswith(".bias") and ".modules_to_save." not in k and not re.search(r"\.lora_\w+\.", k)})
    if config.peft_type == "VERA" and config.save_projection:
        for name in ("vera_A", "vera_B"):
            out[f"base_model.{name}"] = getattr(peft_model.base_model, name)[adapter_name]
    return out


def get_peft_model_state_dict(model, state_dict=None, adapter_name="default", unwrap_compiled=False,
                              save_embedding_layers="auto"):
    """``{file key: Tensor}``: what ``save_pretrained`` writes for this adapter (PEFT's signature).

    As PEFT's, the values are the model's own tensors, detached (no gradient; an in-place change to one
    changes the model), on the model's device -- ready for ``minilora.save``, ``set_peft_model_state_dict``
    or ``.shape`` / ``.dtype`` / ``.numel()``. ``state_dict`` (PEFT's): a ``{model key: value}`` to read the
    values from instead of the model (e.g. a modified ``model.state_dict()``); its values are returned as
    they are, and a key it lacks is left out. ``save_embedding_layers`` as in PEFT: "auto" (or True) adds
    the base tables of targeted embedding layers (``...embed_tokens.base_layer.weight``), and "auto" both
    tables after a ``resize_token_embeddings`` (see ``_embedding_tables``), False leaves them out.
    ``unwrap_compiled`` changes nothing (minilora has no compiled wrappers to unwrap)."""
    tensors = _adapter_weights(model, adapter_name)
    tensors.update(_embedding_tables(model, adapter_name, save_embedding_layers))
    if state_dict is None:
        tensors = {k: t.detach() for k, t in tensors.items()}
    else:
        tensors = _values_from_state_dict(model, tensors, state_dict)
    if getattr(model, "get_base_model", None) is None:  # adapters injected in place: LoRA's plain tensors
        return tensors
    return model.base_model.tensors_for_file(adapter_name, tensors)


def _embedding_tables(model, adapter_name, save_embedding_layers):
    """The embedding tables saved beside the adapter, PEFT's rule. True: always. "auto": when the adapter
    targets an embedding layer (its base table), unless it trains token rows (trainable_token_indices: the
    point is a small file); else when the vocabulary was resized (new tokens: the base the adapter names has
    another vocab_size, so it cannot give the new rows), the tables under their own names -- less a layer an
    adapter wraps (modules_to_save, trainable tokens), whose trained state the file holds already (PEFT also
    writes the wrapper's insides there: not copied)."""
    config = model.peft_config[adapter_name]
    uses_tokens = getattr(config, "trainable_token_indices", None) is not None or config.peft_type == "TRAINABLE_TOKENS"
    if save_embedding_layers is True:
        return _embedding_base_weights(model, adapter_name, untargeted=True)
    if not save_embedding_layers:
        return {}
    if _targets_an_embedding(model, config):
        tables = {} if uses_tokens else _embedding_base_weights(model, adapter_name)
        if tables:  # PEFT's words
            warnings.warn("Setting `save_embedding_layers` to `True` as embedding layers found in `target_modules`.")
        return tables
    if not _vocabulary_resized(model, config):
        return {}
    warnings.warn("Setting `save_embedding_layers` to `True` as the embedding layer has been resized during "
                  "finetuning.")
    return _untargeted_tables(model, wrapped_ok=True)


def _vocabulary_resized(model, config):
    """Does the model's vocab_size differ from its base's (config.json of the adapter's base_model_name_or_path: a
    local folder or minilora's shipped base)? A name that is neither, a Hub repository, cannot be read here: PEFT's
    offline warning, and the vocabulary is taken as unchanged."""
    vocab_size = getattr(getattr(_base_of(model), "config", None), "vocab_size", None)
    name = getattr(config, "base_model_name_or_path", None) or _name_or_path(_base_of(model))  # (as the file says)
    if not vocab_size or not name:
        return False
    from .. import models  # (the shipped base's name and folder)
    folder = models.BASE_DIR if name == models.BASE_NAME else name
    path = os.path.join(folder, "config.json")
    if not os.path.isfile(path):
        warnings.warn(f"Could not find a config file in {name} - will assume that the vocabulary was not modified.")
        return False
    return load_json(path).get("vocab_size", vocab_size) != vocab_size


def _values_from_state_dict(model, tensors, state_dict):
    """``{file key: state_dict[model key]}``: each adapter tensor found by its name in ``model.state_dict()``."""
    model_keys = {id(t): k for k, t in model.state_dict(keep_vars=True).items()}
    found = {k: model_keys.get(id(t)) for k, t in tensors.items()}
    return {k: state_dict[key] for k, key in found.items() if key in state_dict}


def _shape(value):
    """The shape of a minilora Tensor, a NumPy array or anything with ``.shape`` (a torch tensor)."""
    return tuple(value.shape) if hasattr(value, "shape") else tuple(np.shape(value))


def _array_for(target, value):
    """``value`` (a Tensor on any device, a NumPy array, a torch tensor...) as an array of ``target``'s device."""
    if isinstance(value, Tensor):
        value = value.detach().to(target.device)._array
    return target.device.xp.asarray(value, dtype=target.dtype)


def _check_sizes(model, state, targets, names, source):
    """Every tensor of the file of another shape than the model's: torch's load_state_dict error, which PEFT's
    load raises (each such parameter by its name in the model, in the model's order); minilora's hint as a note."""
    order = {name: i for i, name in enumerate(names.values())}
    mismatched = sorted(((names[id(t)], _shape(state[key]), tuple(t.shape)) for key, t in targets.items()
                         if _shape(state[key]) != tuple(t.shape)), key=lambda m: order[m[0]])
    if not mismatched:
        return
    lines = "".join(f"\n\tsize mismatch for {name}: copying a param with shape {torch_spelling(given)} from "
                    f"checkpoint, the shape in current model is {torch_spelling(wanted)}."
                    for name, given, wanted in mismatched)
    raise with_note(AdapterMismatchError(f"Error(s) in loading state_dict for {type(model).__name__}:{lines}"),
                    f"{source}: the adapter was made for another base model (or another rank r)")


def set_peft_model_state_dict(model, peft_model_state_dict, adapter_name="default", ignore_mismatched_sizes=False,
                              low_cpu_mem_usage=False, *, source="peft_model_state_dict"):
    """Copy ``{file key: Tensor or array}`` into the adapter (PEFT's signature). The first mismatch is named in
    the error; with ``ignore_mismatched_sizes=True`` a tensor whose shape differs from the model's is skipped
    (left as it is, listed in missing_keys) with PEFT's warning, as PEFT's. ``source`` names the weights in the
    errors: the file they came from (``load_adapter``), else the argument.

    Returns what PEFT returns, the result of ``model.load_state_dict(..., strict=False)``:
    ``IncompatibleKeys(missing_keys, unexpected_keys)``, where ``missing_keys`` is every key of
    ``model.state_dict()`` that was not loaded (the base weights, other adapters) and
    ``unexpected_keys`` is empty (an unexpected key raised above)."""
    # low_cpu_mem_usage=True: PEFT's load_state_dict(..., assign=True): the given tensors become the weights
    # (an adapter made on the meta device gets its values so), each adapter then on its base layer's dtype
    entries = _adapter_entries(model, adapter_name)
    given = state = _as_file_keys(model, peft_model_state_dict, entries)
    if ignore_mismatched_sizes:
        state = _without_mismatched(model, state, entries)
    skipped = _skipped_embedding_tables(model)
    unexpected = [k for k in state if k not in entries and k not in skipped]
    if unexpected:
        raise AdapterMismatchError(
            f"{source} has weights for {unexpected[0]!r} ({len(unexpected)} such keys), which this "
            "model does not have: was the adapter trained on another base model or other target modules?")
    missing = [k for k, (_, required) in entries.items() if required and k not in given]
    if missing:
        raise AdapterMismatchError(f"{source} has no tensor {missing[0]!r} ({len(missing)} missing), "
                                   "which this model's adapter needs")
    targets = {k: t for k, (t, _) in entries.items() if k in state}
    names = {id(t): k for k, t in model.state_dict(keep_vars=True).items()}
    _check_sizes(model, state, targets, names, source)
    if low_cpu_mem_usage:
        loaded = model.load_state_dict({names[id(t)]: _as_tensor(state[key]) for key, t in targets.items()},
                                       strict=False, assign=True)
        _adapters_to_base_layers(model, adapter_name)
        return loaded
    for key, target in targets.items():
        if target.is_meta:  # torch's load_state_dict: a copy into a meta parameter is a no-op, with its warning
            warnings.warn(f"for {names[id(target)]}: copying from a non-meta parameter in the checkpoint to a meta "
                          "parameter in the current model, which is a no-op. (Did you mean to pass `assign=True` to "
                          "assign items in the state dictionary to their corresponding key in the module instead of "
                          "copying them in place?)")
            continue
        target._array[...] = _array_for(target, state[key])
        target._bump_version()  # an in-place change, as PEFT's load_state_dict (param.copy_)
    loaded = {id(target) for target in targets.values()}
    missing = [k for k, t in model.state_dict(keep_vars=True).items() if id(t) not in loaded]
    return IncompatibleKeys(missing, [])


def _as_tensor(value):
    """A state dict's value (a Tensor, a NumPy array, a torch tensor) as a Tensor of its own dtype."""
    if isinstance(value, Tensor):
        return value
    if hasattr(value, "detach"):  # a torch tensor
        value = value.detach().cpu().numpy()
    return tensor(np.asarray(value))


def _adapters_to_base_layers(model, adapter_name):
    """PEFT's _move_adapter_to_device_of_base_layer after an assigning load: each adapter table (lora_A, ...)
    none of whose weights is still on meta goes to its base layer's device and floating dtype."""
    for layer in model.modules():
        if not isinstance(layer, BaseTunerLayer):
            continue
        base = layer
        while isinstance(getattr(base, "base_layer", None), nn.Module):
            base = base.base_layer
        base = getattr(base, "weight", None)
        if base is None:
            continue
        for table_name in layer.adapter_layer_names:
            table = getattr(layer, table_name, None)
            if table is None or adapter_name not in table or any(p.is_meta for p in table.parameters()):
                continue
            dtype = base.dtype if is_floating(base.dtype) else None
            table[adapter_name] = table[adapter_name].to(base.device, dtype=dtype)
        getattr(layer, "meta_adapters", set()).discard(adapter_name)


def _as_file_keys(model, state, entries):
    """``state`` with the model's own keys of this adapter's tensors (``...lora_A.other.weight``, as
    ``model.state_dict()`` names them) under the file's keys: PEFT passes a key it does not map on to
    ``load_state_dict``, so those load too."""
    file_key = {id(tensor): key for key, (tensor, _) in entries.items()}
    model_to_file = {key: file_key[id(t)] for key, t in model.state_dict(keep_vars=True).items() if id(t) in file_key}
    return {model_to_file.get(key, key): value for key, value in state.items()}


def _without_mismatched(model, state, entries):
    """``state`` less the tensors whose shape is not their target's, each named in PEFT's warning (the
    model's key, adapter name included)."""
    order = {id(t): (i, k) for i, (k, t) in enumerate(model.state_dict(keep_vars=True).items())}
    mismatched = sorted((order[id(entries[key][0])], key, _shape(value), tuple(entries[key][0].shape))
                        for key, value in state.items()
                        if key in entries and _shape(value) != tuple(entries[key][0].shape))
    if mismatched:  # in the model's order, shapes printed as PEFT's torch.Size
        listed = "\n".join(f"- {model_key}: found shape {Size(found)} in the checkpoint and {Size(shape)} in the "
                           "model instantiated" for (_, model_key), _, found, shape in mismatched)
        warnings.warn(f"Some weights of {type(model).__name__} were not initialized from the model checkpoint "
                      f"and are being ignored because you passed `ignore_mismatched_sizes=True`: {listed}.")
    skipped = {key for _, key, _, _ in mismatched}
    return {key: value for key, value in state.items() if key not in skipped}


def get_base_model_state_dict(model):
    """The base model's own ``{key: Tensor}`` under its original keys (PEFT's ``get_base_model_state_dict``):
    the wrappers' infixes taken out (``q_proj.base_layer.weight`` -> ``q_proj.weight``, a saved module's
    ``original_module``, trainable tokens' ``token_adapter.base_layer``), the adapters' tensors left out."""
    state = _base_of(model).state_dict()
    return {original: state[key] for original, key in _base_model_keys(model).items()}


def set_base_model_state_dict(model, state_dict, strict=True):
    """Load ``{original key: value}`` into the base model under its wrappers (PEFT's counterpart of
    ``get_base_model_state_dict``). ``strict``: a missing or unexpected key is torch's RuntimeError (PEFT's
    words); returns ``(missing_keys, unexpected_keys)``."""
    keys = _base_model_keys(model)
    unexpected = [k for k in state_dict if k not in keys]
    missing = [k for k in keys if k not in state_dict]
    if strict and (missing or unexpected):
        errors = ([f"Missing key(s) in state_dict: {missing}"] if missing else []) + \
            ([f"Unexpected key(s) in state_dict: {unexpected}"] if unexpected else [])
        raise RuntimeError("Error(s) in loading state_dict:\n\t" + "\n\t".join(errors))
    _base_of(model).load_state_dict({keys[k]: v for k, v in state_dict.items() if k in keys}, strict=False)
    return IncompatibleKeys(missing, unexpected)


def _base_model_keys(model):
    """``{original key: key in the base model's state_dict()}`` of the base model's own tensors."""
    base = _base_of(model)
    state = base.state_dict(keep_vars=True)
    keys = {}

    def walk(module, original, current):
        inner = _wrapped_layer(module)
        if inner is not None:  # a wrapper: only what it wraps is the base model's
            name, layer = inner
            walk(layer, original, f"{current}{name}.")
            return
        for name in [*module._parameters, *module._buffers]:
            if current + name in state:
                keys[original + name] = current + name
        for name, child in module._modules.items():
            if child is not None:
                walk(child, f"{original}{name}.", f"{current}{name}.")
    walk(base, "", "")
    return keys


def _wrapped_layer(module):
    """``(infix, layer)`` of a PEFT wrapper (the name under which it holds the base model's layer), or None."""
    if isinstance(module, BaseTunerLayer):
        return "base_layer", module.base_layer
    if isinstance(module, ModulesToSaveWrapper):
        return "original_module", module.original_module
    if isinstance(module, TrainableTokensWrapper):
        return "token_adapter", module.token_adapter
    return None


# --------------------------------------------------------------------------------------------------
# Directories
# --------------------------------------------------------------------------------------------------
def _adapter_dir(save_directory, adapter_name):
    """PEFT's layout: "default" in the directory itself, any other adapter in a subdirectory."""
    if adapter_name == "default":
        return save_directory
    directory = os.path.join(save_directory, adapter_name)
    # adapter names are checked when an adapter is added; this keeps any write inside save_directory
    if os.path.dirname(os.path.abspath(directory)) != os.path.abspath(save_directory):
        raise ValueError(f"adapter name {adapter_name!r} would be saved outside {save_directory!r}")
    return directory


def save_adapters(peft_model, save_directory, selected_adapters=None, overwrite=False, save_embedding_layers="auto",
                  safe_serialization=True, also=None):
    """Each adapter's weights and config into ``save_directory`` as one unit, with what ``also(folder)`` writes
    into the folder that then replaces it (the model card: a full disk while it was written, after the adapter
    was in place, said the save was abandoned and left the new adapter without it)."""
    if os.path.isfile(save_directory):
        raise ValueError(f"save_pretrained needs a directory, but {save_directory!r} is a file")
    names = list(peft_model.peft_config) if selected_adapters is None else list(selected_adapters)
    unknown = [n for n in names if n not in peft_model.peft_config]
    if unknown:
        raise ValueError("You passed an invalid `selected_adapters` arguments, current supported adapter names are "
                         f"{list(peft_model.peft_config)} - got {names}.")  # PEFT's words
    files = {}  # adapter name -> (tensors, config): everything checked before anything is written
    for name in names:
        tensors = get_peft_model_state_dict(peft_model, adapter_name=name, save_embedding_layers=save_embedding_layers)
        config = peft_model.peft_config[name].to_dict()
        config["inference_mode"] = True  # as PEFT: a saved adapter loads for inference by default
        if config["base_model_name_or_path"] is None:
            config["base_model_name_or_path"] = _name_or_path(peft_model.get_base_model())
        if config["task_type"] is None:  # PEFT's AutoPeftModel then finds the base model's class here
            config["auto_mapping"] = _auto_mapping(peft_model.get_base_model())
        if not overwrite:
            _refuse_other_adapter(_adapter_dir(save_directory, name), config, tensors)
        files[name] = tensors, config
    # One unit: a full disk or a kill mid-save leaves the old adapter folder whole, never the new
    # config beside the old weights. Files the save does not write (other adapters) are kept, but for a saved
    # adapter's weights in the other format (a loader takes adapter_model.safetensors first: old weights).
    weights, other = (WEIGHTS_NAME, TORCH_WEIGHTS_NAME) if safe_serialization else (TORCH_WEIGHTS_NAME, WEIGHTS_NAME)
    stale = [os.path.relpath(os.path.join(_adapter_dir(save_directory, name), other), save_directory) for name in files]
    with atomic_folder(save_directory, replaces=stale) as tmp:
        for name, (tensors, config) in files.items():
            directory = _adapter_dir(tmp, name)
            if safe_serialization:
                save_file(tensors, os.path.join(directory, weights), metadata={"format": "pt"})
            else:  # (PEFT's torch.save of the same dict: torch.save's zip format, no pickled class)
                os.makedirs(directory, exist_ok=True)
                serialization.save({key: _as_tensor(value) for key, value in tensors.items()},
                                   os.path.join(directory, weights))
            save_json(config, os.path.join(directory, CONFIG_NAME), CONFIG_KEYS_WITH_PRESERVED_ORDER)
        if also is not None:
            also(tmp)


def _as_tensor(value):
    return value if isinstance(value, Tensor) else tensor(value)


def _auto_mapping(model):
    """PEFT's auto_mapping for an adapter without a task_type: the base model's class and module.
    minilora's Llama is written as transformers' (what PEFT writes for the same model), so PEFT's
    AutoPeftModel.from_pretrained loads the folder with transformers."""
    if isinstance(model, LlamaForCausalLM):  # (Mistral, Qwen2, Qwen3: its subclasses, as transformers' classes)
        model_type = model.config.model_type
        return {"base_model_class": type(model).__name__,
                "parent_library": f"transformers.models.{model_type}.modeling_{model_type}"}
    return {"base_model_class": type(model).__name__, "parent_library": type(model).__module__}


def _name_or_path(model):
    return getattr(model, "name_or_path", None) or getattr(getattr(model, "config", None), "_name_or_path", None)


def _refuse_other_adapter(directory, config, tensors):
    """Raise if ``directory`` already holds an adapter with another config or other tensors."""
    config_path = os.path.join(directory, CONFIG_NAME)
    weights_path = os.path.join(directory, WEIGHTS_NAME)
    if not os.path.isfile(config_path):
        return
    old = load_json(config_path)
    diff = sorted(k for k in set(old) | set(config) if k not in _VOLATILE_KEYS
                  and _normalised(old.get(k)) != _normalised(config.get(k)))
    reason = f"config differs in {diff}" if diff else None
    if reason is None and os.path.isfile(weights_path):
        header, _ = read_header(weights_path)
        old_shapes = {k: tuple(v["shape"]) for k, v in header.items() if k != "__metadata__"}
        new_shapes = {k: _shape(t) for k, t in tensors.items()}
        if old_shapes != new_shapes:
            reason = "its tensor names or shapes differ"
    if reason:
        raise FileExistsError(f"{directory} already holds a different adapter ({reason}); pass "
                              "overwrite=True to replace it, or choose another directory")


def _normalised(value):
    return sorted(value) if isinstance(value, list) and all(isinstance(v, str) for v in value) else value


def read_adapter_config(directory):
    path = os.path.join(os.fspath(directory), CONFIG_NAME)
    if not os.path.isfile(path):
        raise AdapterFileNotFoundError(f"Can't find '{CONFIG_NAME}' at '{os.fspath(directory)}': not an adapter "
                                       "directory (adapters other than 'default' are saved in a subdirectory "
                                       "named after them)")
    config = load_json(path)
    if not isinstance(config, dict):
        raise ValueError(f"{path}: an adapter config must be a JSON object of field: value, got a "
                         f"{type(config).__name__}")
    from .config import without_runtime_config
    config = without_runtime_config(config)
    _check_config_values(path, config)
    return config


def _check_config_values(path, config):
    """A value the config class refuses (``"r": -16``) raises its error (PEFT's type) naming the file: the
    field alone does not say which of a model's files holds it. (Warnings come from the real load.)"""
    import warnings
    from .config import config_from_dict
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            config_from_dict(config)
    except (ValueError, TypeError, NotImplementedError) as exc:
        if exc.args and isinstance(exc.args[0], str):
            exc.args = (f"{path}: {exc.args[0]}",) + exc.args[1:]
        raise


_HUB_OPTIONS = ("token", "use_auth_token", "cache_dir", "force_download", "proxies", "local_files_only")


def adapter_folder(model_id, options, what):
    """The folder an adapter is read from, with PEFT's Hub keywords: ``subfolder`` is a folder inside
    ``model_id``; ``revision`` may only be "main"; the download options (token, cache_dir, ...) change
    nothing for a local folder. Another keyword is Python's TypeError (PEFT would pass it on to the Hub)."""
    options = dict(options)
    subfolder, revision = options.pop("subfolder", None), options.pop("revision", None)
    for key in options:
        if key not in _HUB_OPTIONS:
            raise TypeError(f"{what}() got an unexpected keyword argument {key!r}")
    if revision not in (None, "main"):
        raise NotImplementedError(f"{what}(revision={revision!r}): minilora reads a local folder as it is")
    return os.path.join(os.fspath(model_id), subfolder) if subfolder else model_id


def load_peft_weights(model_id, device=None, key_mapping=None, **hf_hub_download_kwargs):
    """``{file key: Tensor}`` of the adapter file in folder ``model_id`` (PEFT's ``load_peft_weights``), on
    ``device`` (None: the GPU when there is one, else the CPU, as PEFT's ``infer_device``); ``subfolder`` and
    the Hub's keywords as PEFT's (a local folder only); ``key_mapping`` as PEFT's (see ``remap_keys``)."""
    from .. import cuda
    directory = adapter_folder(model_id, hf_hub_download_kwargs, "load_peft_weights")
    path = _weights_path(directory)
    device = device if device is not None else ("cuda" if cuda.is_available() else "cpu")
    return {k: tensor(v, device=device) for k, v in remap_keys(load_weights(path), key_mapping).items()}


def _weights_path(directory):
    """``adapter_model.safetensors``, else the ``adapter_model.bin`` older PEFT versions wrote (torch.save's
    format, read without unpickling: minilora/torch_format.py), as PEFT looks for them."""
    for name in (WEIGHTS_NAME, TORCH_WEIGHTS_NAME):
        path = os.path.join(os.fspath(directory), name)
        if os.path.isfile(path):
            return path
    raise AdapterFileNotFoundError(f"no {WEIGHTS_NAME} or {TORCH_WEIGHTS_NAME} in {os.fspath(directory)!r}")


def remap_keys(tensors, key_mapping):
    """PEFT's ``key_mapping``: ``{regex: replacement}`` applied to each key without its ``base_model.model.``
    (or ``base_model.``) prefix -- the first pattern that matches is used -- then the prefix is put back."""
    if not key_mapping:
        return tensors
    out = {}
    for key, value in tensors.items():
        prefix = next((p for p in ("base_model.model.", "base_model.") if key.startswith(p)), None)
        if prefix is None:  # PEFT's ValueError (its words: it only reads keys it wrote)
            raise ValueError(f"An error occurred while trying to load a PEFT state_dict with key_mapping: the key "
                             f"{key!r} does not start with 'base_model.', as every key of an adapter file does.")
        key = key[len(prefix):]
        for pattern, replacement in key_mapping.items():
            new_key, count = re.subn(pattern, replacement, key)
            if count:
                key = new_key
                break
        out[prefix + key] = value
    return out


def load_adapter_weights(peft_model, directory, adapter_name, key_mapping=None, ignore_mismatched_sizes=False,
                         low_cpu_mem_usage=False):
    path = _weights_path(directory)
    config = peft_model.peft_config[adapter_name]
    if config.peft_type == "VERA" and not config.save_projection and not written_by_minilora(config):
        raise NotImplementedError(
            f"{directory}: this VeRA adapter was saved without vera_A/vera_B (save_projection=False); "
            "PEFT rebuilds them with torch's random generator, which minilora does not reproduce. "
            "Save it with save_projection=True.")
    peft_model.base_model.prepare_to_load(adapter_name)  # e.g. AdaLoRA: shrink to the saved ranks
    tensors = remap_keys(load_weights(path), key_mapping)
    _refuse_integer_tensors(path, tensors)
    warn_non_finite(tensors, f"adapter {path}")  # PEFT loads NaN silently; every output would be NaN
    tensors = double_out_proj_of_old_peft_files(peft_model, tensors, _raw_config(directory), adapter_name)
    return set_peft_model_state_dict(peft_model, tensors, adapter_name, ignore_mismatched_sizes, low_cpu_mem_usage,
                                     source=path)


def _raw_config(directory):
    """adapter_config.json's dict as written (which fields it has: its peft_version may be missing)."""
    path = os.path.join(os.fspath(directory), CONFIG_NAME)
    return load_json(path) if os.path.isfile(path) else {}


def _refuse_integer_tensors(path, tensors):
    """An adapter's weights are floating point: an integer tensor (a header whose F32 was corrupted to I32)
    would be cast to floats in silence, as PEFT's param.copy_ casts it."""
    for name, array in tensors.items():
        if not is_floating(array.dtype) and array.dtype.kind != "c":
            raise CheckpointError(f"{path}: tensor {name!r} is stored as {array.dtype}, but an adapter's weights "
                                  "are floating point (a corrupted header?)")


def write_model_card(save_directory, base_model, peft_type, causal_lm, transformers_model=False, into=None):
    """A short ``README.md`` model card, as PEFT writes beside an adapter (metadata the Hub reads, and
    how to load it), in ``into`` (the folder of a save that replaces ``save_directory``'s files) or
    ``save_directory``. A card already in ``save_directory`` is the user's: it is left as it is."""
    if os.path.exists(os.path.join(save_directory, "README.md")):
        return
    path = os.path.join(into or save_directory, "README.md")
    from .. import __version__
    peft_type = getattr(peft_type, "value", peft_type)  # PeftType.LORA -> "LORA" (f-strings show the member)
    meta = _card_metadata(base_model, peft_type, causal_lm, transformers_model)
    base = f"`{base_model}`" if base_model else "its base model"
    text = "\n".join(["---", *meta, "---", "", "# Adapter", "",
                      f"A {peft_type} adapter for {base}, saved by minilora {__version__} in PEFT's format.", "",
                      "```python", "from minilora.lora import AutoPeftModelForCausalLM  # or: from peft import ...",
                      'model = AutoPeftModelForCausalLM.from_pretrained("path/to/this/folder")', "```", "",
                      "### Framework versions", "", f"- minilora {__version__}", ""])
    with atomic_write(path, "w") as f:
        f.write(text)


def _card_metadata(base_model, peft_type, causal_lm, transformers_model):
    """The card's YAML front matter, PEFT's keys and tags (``create_or_update_model_card``): the Hub links
    the adapter to its base through ``base_model`` and the ``base_model:adapter:<name>`` tag; "lora" tags a
    LoRA adapter only; "transformers" a base in transformers' format. minilora adds its own tag (as a base's
    ``model_tags`` would be added). PEFT sorts the tags. (An unnamed base -- a model built from a config --
    gets neither ``base_model`` nor the tag: PEFT writes ``''`` there, which names no model.)"""
    tags = ["minilora"] + (["lora"] if peft_type == "LORA" else []) + (["transformers"] if transformers_model else [])
    if base_model:
        tags.append(f"base_model:adapter:{base_model}")
    return ([f"base_model: {_yaml_scalar(base_model)}"] if base_model else []) + ["library_name: peft"] + \
        (["pipeline_tag: text-generation"] if causal_lm else []) + ["tags:"] + \
        [f"- {_yaml_scalar(tag)}" for tag in sorted(tags)]


_YAML_PLAIN_UNSAFE = re.compile(r"""^$|^[\s!&*\[\]{}|>@`"'%,#]|^[-?:](\s|$)|\s$|:$|: | #|"""
                                r"^(true|false|yes|no|on|off|null|~)$|"  # (a bool or null)
                                r"^[-+]?(\.\d+|\d[\d_]*(\.[\d_]*)?)([eE][-+]?\d+)?$",  # (a number)
                                re.IGNORECASE)


def _yaml_scalar(text):
    """``text`` as a YAML scalar: plain where YAML reads it back as that string, else single-quoted (a trailing
    ':' would make a mapping, "true" a bool, "1e3" a number), as PyYAML's dump writes it."""
    return "'" + text.replace("'", "''") + "'" if _YAML_PLAIN_UNSAFE.search(text) else text
