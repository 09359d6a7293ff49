"""Hot-swapping a LoRA adapter: new weights into the loaded adapter, in place (PEFT's ``peft.utils.hotswap``).

    model = PeftModel.from_pretrained(base, "adapter-0")
    hotswap_adapter(model, "adapter-1", adapter_name="default")   # the same modules, new weights and scaling

As PEFT: the new adapter must target the same modules or fewer (a layer it lacks is zeroed; one it has
and the model lacks is a RuntimeError), its config must agree on ``use_rslora``, ``lora_dropout``,
``alpha_pattern`` and ``use_dora``; each layer's scaling becomes the new config's; a rank smaller than
the loaded one is copied into the first ranks (the rest zeroed, shapes kept), a larger one replaces the
tensor; ``model.peft_config`` stays the loaded adapter's (PEFT does not update it either).

Where PEFT 0.21 goes wrong, minilora does what the new adapter means: the scaling of a layer under
``rank_pattern`` is its pattern rank's (PEFT takes ``r``: another output than the adapter's), and the
DoRA magnitudes and ``modules_to_save`` copies are swapped too (PEFT: KeyError).
``prepare_model_for_compiled_hotswap`` pads the ranks (minilora's compile does not recompile on a new
scaling, so the scalings stay numbers).
"""
from ..nn import Linear as _NNLinear
from ..tensor import Tensor
from .config import PeftConfig, PeftType
from .layers import BaseTunerLayer, Linear
from .model import _pattern_value

__all__ = ["hotswap_adapter", "hotswap_adapter_from_state_dict", "check_hotswap_configs_compatible",
           "prepare_model_for_compiled_hotswap", "CONFIG_KEYS_TO_CHECK"]

CONFIG_KEYS_TO_CHECK = {PeftType.LORA: ["use_rslora", "lora_dropout", "alpha_pattern", "use_dora"]}


def check_hotswap_configs_compatible(config0, config1):
    """PEFT's check (its words): the same method, LoRA, and equal values of the keys that change the
    output beyond the weights."""
    if config0.peft_type != config1.peft_type:
        raise ValueError(f"Incompatible PEFT types found: {config0.peft_type.value} and {config1.peft_type.value}")
    if config0.peft_type not in CONFIG_KEYS_TO_CHECK:
        raise ValueError(f"Hotswapping only supports {', '.join(t.value for t in CONFIG_KEYS_TO_CHECK)} but "
                         f"{config0.peft_type.value} was passed.")
    dict0, dict1 = config0.to_dict(), config1.to_dict()
    for key in CONFIG_KEYS_TO_CHECK[config0.peft_type]:
        if dict0.get(key) != dict1.get(key):
            raise ValueError(f"Configs are incompatible: for {key}, {dict0.get(key)} != {dict1.get(key)}")


def hotswap_adapter(model, model_name_or_path, adapter_name, torch_device=None, **kwargs):
    """Replace the weights (and scalings) of ``model``'s adapter ``adapter_name`` with those of the adapter
    in folder ``model_name_or_path`` (``subfolder=`` as PEFT; a local folder)."""
    from .save import load_peft_weights
    config = PeftConfig.from_pretrained(model_name_or_path, subfolder=kwargs.get("subfolder"))
    check_hotswap_configs_compatible(model.active_peft_config, config)
    tensors = load_peft_weights(model_name_or_path, device=torch_device, subfolder=kwargs.get("subfolder"))
    _swap(model, tensors, adapter_name, config)


def hotswap_adapter_from_state_dict(model, state_dict, adapter_name, config, parameter_prefix="lora_"):
    """The low-level step, as PEFT's: ``state_dict`` holds the model's keys (the adapter name inserted,
    ``...lora_A.default.weight``), ``config`` the new adapter's LoraConfig."""
    if not hasattr(model, "peft_config"):
        raise TypeError(f"hotswap_adapter_from_state_dict needs a PeftModel (with peft_config), got "
                        f"{type(model).__name__}")
    _swap(model, {_file_key(k, adapter_name, parameter_prefix): v for k, v in state_dict.items()}, adapter_name,
          config)


def _file_key(key, adapter_name, prefix):
    """``...lora_A.default.weight`` -> ``...lora_A.weight`` (the adapter file's key; PEFT inserts the name
    after the first ``lora_`` part)."""
    if prefix not in key:
        return key  # a modules_to_save tensor: its file key has no adapter name
    head, tail = key[:key.index(prefix)], key[key.index(prefix):]
    if tail.endswith("." + adapter_name):
        return head + tail[:-len(adapter_name) - 1]
    return head + tail.replace(f".{adapter_name}.", ".", 1)


def _model_key(key, adapter_name, prefix="lora_"):
    """The inverse, for messages in PEFT's words (PEFT's _insert_adapter_name_into_state_dict)."""
    if prefix not in key:
        return key
    suffix = key.split(prefix, 1)[1]
    if "." not in suffix:
        return f"{key}.{adapter_name}"
    rest = ".".join(suffix.split(".")[1:])
    return key.replace(rest, f"{adapter_name}.{rest}")


def _swap(model, tensors, adapter_name, config):
    from .save import _adapter_entries
    layers = [(name, m) for name, m in model.base_model.model.named_modules() if isinstance(m, BaseTunerLayer)]
    if any(adapter_name in m.merged_adapters for _, m in layers):  # PEFT's words
        raise ValueError(
            f"Cannot hot-swap adapter '{adapter_name}' because it is currently merged into the base weights. "
            "Please unmerge the adapter first by calling `peft_model.unmerge_adapter()` (or, for diffusers "
            "models, `diffusers_model.unfuse_lora()`); unmerging after a swap of merged weights would otherwise "
            "corrupt them.")
    entries = _adapter_entries(model, adapter_name)
    unexpected = [_model_key(k, adapter_name) for k in tensors if k not in entries]
    if unexpected:
        raise RuntimeError(f"Hot swapping the adapter did not succeed, unexpected keys found: {', '.join(unexpected)}.")
    swapped = [(name, layer) for name, layer in layers if adapter_name in getattr(layer, "scaling", {})]
    left_alone = {name: layer for name, layer in swapped
                  if not any(k.startswith(f"base_model.model.{name}.") for k in tensors)}
    # Everything that can refuse the swap is checked before anything changes: refused half-way (PEFT's
    # loop), the model served neither adapter -- some layers' scalings or weights new, the others old.
    for name, layer in left_alone.items():
        _check_can_zero(layer, adapter_name, name)
    for key, value in tensors.items():
        _swap_kind(entries[key][0], value, key)
    for name, layer in swapped:
        if name in left_alone:
            _zero_layer(layer, adapter_name)  # the new adapter leaves this layer alone
            continue
        rank = _pattern_value(config.rank_pattern, name, config.r)
        alpha = _pattern_value(config.alpha_pattern, name, config.lora_alpha)
        layer.scaling[adapter_name] = config.scaling(rank, alpha)
    for key, value in tensors.items():
        _swap_tensor(entries[key][0], value, key)


def _check_can_zero(layer, adapter_name, name):
    if adapter_name in layer.lora_magnitude_vector:  # B = 0 under DoRA is not the base layer: say so
        raise NotImplementedError(f"hotswap: the new adapter has no DoRA weights for {name!r}; a DoRA layer cannot "
                                  "be switched off by zeroing it (its magnitude still rescales the base weight)")


def _zero_layer(layer, adapter_name):
    """A layer the new adapter does not have: its A and B (and lora_B's bias) become 0, as PEFT's."""
    for table in (layer.lora_A, layer.lora_B):
        for param in table[adapter_name].parameters():
            param._array[...] = 0
            param._bump_version()


def _swap_kind(param, value, key):
    """PEFT's three cases: "same" shape (copied), a smaller rank (copied into the first "rows" or "columns",
    the rest zeroed: B A is the new adapter's), a larger one ("replace" the tensor); or PEFT's ValueError."""
    old, new = tuple(param.shape), tuple(value.shape)
    if old == new:
        return "same"
    if not (all(o >= n for o, n in zip(old, new)) and len(old) == len(new)):
        return "replace"
    if old[0] > new[0]:
        return "rows"
    if len(old) > 1 and old[1] > new[1]:
        return "columns"
    raise ValueError(f"Incompatible shapes found for LoRA weights {key}: {old} vs {new}. Please ensure that "
                     "all ranks are padded to the largest rank among all LoRA adapters by using "
                     "peft.utils.hotswap.prepare_model_for_compiled_hotswap.")


def _swap_tensor(param, value, key):
    array = value.numpy(force=True) if isinstance(value, Tensor) else value
    array = param.device.xp.asarray(array).astype(param._array.dtype, copy=False)
    kind = _swap_kind(param, array, key)
    if kind == "replace":
        param.data = Tensor(array, dtype=array.dtype, device=param.device)
        return
    if kind != "same":
        param._array[...] = 0
    if kind == "rows":
        param._array[:array.shape[0]] = array
    elif kind == "columns":
        param._array[:, :array.shape[1]] = array
    else:
        param._array[...] = array
    param._bump_version()


def prepare_model_for_compiled_hotswap(model, *, target_rank=None, config=None, check_compiled="error"):
    """PEFT's: pad every LoRA Linear's A and B with zero ranks to ``target_rank`` (the output does not
    change), so adapters of smaller ranks swap in without new shapes; ``config`` (one LoraConfig or
    ``model.peft_config``) gets ``r`` (and its rank_pattern values) set to ``target_rank``."""
    if check_compiled not in ("error", "warn", "ignore"):
        raise ValueError(f"check_compiles should be one of 'error', 'warn', or 'ignore', got '{check_compiled}' "
                         "instead.")
    if hasattr(model, "_orig_mod") and check_compiled == "error":
        raise ValueError("Call prepare_model_for_compiled_hotswap *before* compiling the model")
    layers = [m for m in model.modules() if isinstance(m, Linear)]
    if not layers:
        raise ValueError("No adapter layers found on the model, make sure call `prepare_model_for_compiled_hotswap` "
                         "after loading the first adapter and before loading the second adapter.")
    if target_rank is None:
        return
    for layer in layers:
        if type(layer) is not Linear:  # PEFT pads Linear and Conv2d layers; minilora Linear ones
            raise NotImplementedError(f"prepare_model_for_compiled_hotswap(target_rank=...) pads LoRA Linear "
                                      f"layers in minilora, not {type(layer).__name__}")
        for adapter_name in list(layer.lora_A.keys()):
            layer.lora_A[adapter_name] = _padded(layer.lora_A[adapter_name], target_rank, is_lora_A=True)
            layer.lora_B[adapter_name] = _padded(layer.lora_B[adapter_name], target_rank, is_lora_A=False)
    if config:
        for lora_config in (config.values() if isinstance(config, dict) else [config]):
            lora_config.r = target_rank
            for key in lora_config.rank_pattern:
                lora_config.rank_pattern[key] = target_rank


def _padded(module, target_rank, is_lora_A):
    """PEFT's ``_get_padded_linear``: a new Linear (drawn as PEFT draws it, then overwritten) holding the
    weights with zero ranks added."""
    weight = module.weight
    rank = weight.shape[0] if is_lora_A else weight.shape[1]
    if rank == target_rank:
        return module
    if rank > target_rank:
        raise ValueError(f"Trying to pad the adapter to the target rank {target_rank}, but the original rank is "
                         f"larger ({rank}). This is not possible.")
    out_features, in_features = weight.shape
    has_bias = module.bias is not None
    new = _NNLinear(in_features, target_rank, bias=has_bias) if is_lora_A else \
        _NNLinear(target_rank, out_features, bias=has_bias)
    padded = weight.device.xp.zeros(new.weight.shape, dtype=weight._array.dtype)
    if is_lora_A:
        padded[:rank] = weight._array
    else:
        padded[:, :rank] = weight._array
    new.weight.data = Tensor(padded, dtype=padded.dtype, device=weight.device)
    new.weight.requires_grad_(weight.requires_grad)
    if has_bias:
        new.bias.data = module.bias.data
    return new
