"""PEFT's ``peft.helpers``: small tools around a model with LoRA layers.

``rescale_adapter_scale(model, multiplier)`` multiplies every LoRA layer's ``scaling`` (alpha / r per
adapter) for the duration of a ``with`` block: with a multiplier in [0, 1] the model sits between the base
model and the fine-tuned one (wise-ft), the original scalings come back on exit. ``check_if_peft_model(path)``
says whether a folder holds a PEFT adapter config.
"""
import contextlib

from .config import PeftConfig
from .layers import LoraLayer

__all__ = ["rescale_adapter_scale", "check_if_peft_model"]


@contextlib.contextmanager
def rescale_adapter_scale(model, multiplier):
    """Scale every LoRA layer's adapters by ``multiplier`` inside the block (PEFT's checks and words)."""
    if not isinstance(multiplier, (float, int)):
        raise TypeError(f"Argument multiplier should be of type float, got {type(multiplier)}")
    original_scaling = {}
    for module in model.modules():
        if isinstance(module, LoraLayer):
            original_scaling[module] = module.scaling.copy()
            module.scaling = {name: scale * multiplier for name, scale in module.scaling.items()}
    if not original_scaling:
        raise ValueError("scaling is only supported for models with `LoraLayer`s")
    try:
        yield
    finally:
        for module, scaling in original_scaling.items():
            module.scaling = scaling


def check_if_peft_model(model_name_or_path):
    """True when ``PeftConfig.from_pretrained`` can read an adapter config there (any failure: False, as PEFT)."""
    try:
        PeftConfig.from_pretrained(model_name_or_path)
    except Exception:  # noqa: BLE001  (PEFT's broad catch: a missing folder, a model folder, a bad file)
        return False
    return True
