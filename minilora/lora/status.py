"""PEFT's troubleshooting view of a model: ``model.get_layer_status()`` and ``model.get_model_status()``.

One ``TunerLayerStatus`` per adapted layer (and per modules_to_save copy) says which adapters it holds,
which are active, merged, trainable, and on which device; ``TunerModelStatus`` sums them up for the
model, writing "irregular" where the layers disagree (one layer merged and another not, an adapter
trainable in some layers only...) -- which is usually the bug being looked for.
"""
from collections import defaultdict
from dataclasses import dataclass

from .layers import BaseTunerLayer, ModulesToSaveWrapper

__all__ = ["TunerLayerStatus", "TunerModelStatus", "get_layer_status", "get_model_status"]

IRREGULAR = "irregular"

@dataclass
class TunerLayerStatus:
    name: str
    module_type: str
    enabled: bool
    active_adapters: list
    merged_adapters: list
    requires_grad: dict  # adapter -> True, False or "irregular" (some of its weights train, some not)
    available_adapters: list
    devices: dict  # adapter -> sorted device types of its weights
    quantization_backend: str = None


@dataclass
class TunerModelStatus:
    base_model_type: str
    adapter_model_type: str
    peft_types: dict
    trainable_params: int
    total_params: int
    num_adapter_layers: int
    enabled: object  # True, False or "irregular"
    active_adapters: object  # a list, or "irregular"
    merged_adapters: object
    requires_grad: dict
    available_adapters: list
    devices: dict
    quantization_backend: str = None


def _all_or_none(flags):
    """True if every flag is True, False if every one is False, else "irregular"."""
    flags = list(flags)
    if all(flag is True for flag in flags):
        return True
    if all(flag is False for flag in flags):
        return False
    return IRREGULAR


def _weights_by_adapter(module, table_names):
    """``{adapter: [its parameters]}`` over the named per-adapter tables of a layer, in table order."""
    weights = defaultdict(list)
    for table_name in table_names:
        table = getattr(module, table_name)
        for adapter in table.keys():
            item = table[adapter]
            weights[adapter].extend(item.parameters() if hasattr(item, "parameters") else [item])
    return {adapter: params for adapter, params in weights.items() if params}


def _layer_status(name, module):
    if isinstance(module, ModulesToSaveWrapper):
        module_type, merged, available = "ModulesToSaveWrapper", [], sorted(module.modules_to_save.keys())
        trained_tables = held_tables = ["modules_to_save"]
    else:
        module_type = module.peft_name or type(module).__name__  # PEFT's repr(module).partition("(")[0]
        merged, available = list(module.merged_adapters), sorted(module.adapter_names())
        trained_tables = list(module.adapter_layer_names)
        held_tables = trained_tables + list(getattr(module, "other_param_names", ()))  # AdaLoRA's ranknum too
    requires_grad = {adapter: _all_or_none(p.requires_grad for p in params)
                     for adapter, params in _weights_by_adapter(module, trained_tables).items()}
    devices = {adapter: sorted({p.device.type for p in params})
               for adapter, params in _weights_by_adapter(module, held_tables).items()}
    return TunerLayerStatus(name=name, module_type=module_type, enabled=not module.disable_adapters,
                            active_adapters=list(module.active_adapters), merged_adapters=merged,
                            requires_grad=requires_grad, available_adapters=available, devices=devices)


def get_layer_status(peft_model):
    """One ``TunerLayerStatus`` per adapted layer and modules_to_save copy, in module order (names as
    PEFT writes them: relative to ``model.base_model``)."""
    statuses = [_layer_status(name, module) for name, module in peft_model.base_model.named_modules()
                if isinstance(module, (BaseTunerLayer, ModulesToSaveWrapper))]
    if not statuses:
        raise ValueError("No adapter layers found in the model, please ensure that it's a PEFT model or that you "
                         "have PEFT adapters injected in the model.")
    return statuses


def _common(values):
    """The one value every layer has, else "irregular"."""
    values = set(values)
    return values.pop() if len(values) == 1 else IRREGULAR


def get_model_status(peft_model):
    """The layers' statuses summed up for the whole model (``TunerModelStatus``)."""
    layers = get_layer_status(peft_model)
    trainable, total = peft_model.get_nb_trainable_parameters()
    merged_anywhere = set().union(*(status.merged_adapters for status in layers))
    merged_everywhere = all(not (set(s.available_adapters) - set(s.merged_adapters)) & merged_anywhere for s in layers)
    active = {tuple(status.active_adapters) for status in layers}
    grads, devices = defaultdict(list), defaultdict(set)
    for status in layers:
        for adapter, flag in status.requires_grad.items():
            grads[adapter].append(flag)
        for adapter, types in status.devices.items():
            devices[adapter].update(types)
    return TunerModelStatus(
        base_model_type=type(peft_model.get_base_model()).__name__,
        adapter_model_type=type(peft_model.base_model).__name__,
        peft_types={name: getattr(config.peft_type, "value", config.peft_type)  # "LORA", not "PeftType.LORA"
                    for name, config in peft_model.peft_config.items()},
        trainable_params=trainable, total_params=total, num_adapter_layers=len(layers),
        enabled=_common(status.enabled for status in layers),
        active_adapters=list(active.pop()) if len(active) == 1 else IRREGULAR,
        merged_adapters=sorted(merged_anywhere) if merged_everywhere else IRREGULAR,
        requires_grad={adapter: _all_or_none(flags) for adapter, flags in grads.items()},
        available_adapters=sorted(set().union(*(status.available_adapters for status in layers))),
        devices={adapter: sorted(types) for adapter, types in devices.items()})
