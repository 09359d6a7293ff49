"""LoRA+ (Hayou et al., 2024): train B faster than A. PEFT's ``create_loraplus_optimizer``.

With one learning rate, A and B learn at badly matched speeds when the model is wide: B starts at zero
and its updates are multiplied by A, whose entries stay small. LoRA+ gives B (and the other 1-D
trainable vectors, such as DoRA's magnitudes) ``lr * loraplus_lr_ratio``; A keeps ``lr``; LoRA on an
embedding gets its own, small ``loraplus_lr_embedding``. Same groups, names and defaults as PEFT:

    optimizer = create_loraplus_optimizer(model, AdamW, lr=2e-4, loraplus_lr_ratio=16)
"""
from ..nn import LayerNorm
from .layers import Embedding

__all__ = ["create_loraplus_optimizer"]


def create_loraplus_optimizer(model, optimizer_cls, *, lr, loraplus_lr_ratio, **kwargs):
    """``optimizer_cls`` over ``model``'s trainable parameters in LoRA+'s four groups.

    Groups: A and everything else (``lr``), embedding LoRA (``loraplus_lr_embedding``, default 1e-6),
    B and 1-D vectors with weight decay, and the same without (norm weights and biases), both at
    ``lr * loraplus_lr_ratio``. ``loraplus_weight_decay`` (default 0) applies to all but the last.
    Other keyword arguments go to the optimizer.
    """
    if loraplus_lr_ratio <= 0:
        raise ValueError(f"loraplus_lr_ratio must be positive (the paper uses 2 to 16), got {loraplus_lr_ratio}")
    weight_decay = kwargs.pop("loraplus_weight_decay", 0.0)
    lr_embedding = kwargs.pop("loraplus_lr_embedding", 1e-6)
    no_decay = _norm_and_bias_parameters(model)
    groups = {"A": [], "embedding": [], "B": [], "B_no_decay": []}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        holder = model.get_submodule(".".join(name.split(".")[:-2]))  # lora_embedding_A.default -> the layer
        if isinstance(holder, Embedding):
            groups["embedding"].append(param)
        elif "lora_B" in name or param.ndim == 1:
            groups["B_no_decay" if id(param) in no_decay else "B"].append(param)
        else:
            groups["A"].append(param)
    return optimizer_cls([
        {"params": groups["A"], "weight_decay": weight_decay, "lr": lr},
        {"params": groups["embedding"], "weight_decay": weight_decay, "lr": lr_embedding},
        {"params": groups["B"], "weight_decay": weight_decay, "lr": lr * loraplus_lr_ratio},
        {"params": groups["B_no_decay"], "weight_decay": 0.0, "lr": lr * loraplus_lr_ratio},
    ], lr=lr, **kwargs)


def _norm_and_bias_parameters(model):
    """``id``s of the parameters PEFT's LoRA+ does not decay: biases and LayerNorm parameters.

    (transformers' list of norm layers, which PEFT uses here, holds LayerNorm only: an RMSNorm's
    weight -- Llama's -- is decayed, and so it is here, for the same groups.)"""
    out = {id(p) for name, p in model.named_parameters() if "bias" in name}
    for module in model.modules():
        if isinstance(module, LayerNorm):
            out.update(id(p) for p in module.parameters())
    return out

