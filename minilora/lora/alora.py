"""Activated LoRA (PEFT's ``LoraConfig(alora_invocation_tokens=[...])``, aLoRA): the adapter acts only from the
last occurrence of its invocation tokens onwards, so everything before it is the base model's -- a KV cache
built by the base model for the prompt serves the adapter too.

    config = LoraConfig(task_type="CAUSAL_LM", alora_invocation_tokens=tokenizer.encode("<|assistant|>"), ...)
    model = get_peft_model(model, config)
    model(input_ids)          # the adapter changes only the invocation tokens and what follows them
    model.generate(input_ids) # ... and every generated token

PEFT 0.21's ``tuners/lora/variants.py``: ``PeftModelForCausalLM.forward`` / ``generate`` find each row's
*offset* (how many positions from the start of the invocation to the end of ``input_ids``: None when it is
absent) and every lora.Linear adds ``s B A dropout(x)`` to the last ``offset`` positions of each row (capped at
the positions it sees: a generation step's single token is always inside). Without offsets (a base-model call,
``inputs_embeds`` alone) the adapter adds nothing. Only plain lora.Linear layers take it (PEFT's ValueError
otherwise: DoRA, embeddings, convolutions), it does not merge, and beam search refuses it.
"""
import warnings

import numpy as np

from .layers import BASE_ADAPTER

__all__ = ["calculate_alora_offsets", "is_alora_relevant_in_batch", "alora_offsets_for_forward",
           "alora_offsets_for_generate"]


def calculate_alora_offsets(peft_config, active_adapter, input_ids, adapter_names=None):
    """Per row: the distance from the start of the last occurrence of its adapter's invocation tokens to the
    end of the row (None: no aLoRA adapter, or the tokens do not occur)."""
    if input_ids is None:
        return []
    ids = np.asarray(input_ids.tolist() if hasattr(input_ids, "tolist") else input_ids)
    offsets = [None] * ids.shape[0]
    for i, row in enumerate(ids):
        name = adapter_names[i] if adapter_names and i < len(adapter_names) else active_adapter
        if name == BASE_ADAPTER:
            continue
        if name not in peft_config:  # PEFT's words
            warnings.warn(f"Adapter '{name}' not found in peft_config. Using base model for row {i}.")
            continue
        tokens = getattr(peft_config[name], "alora_invocation_tokens", None)
        if tokens is None:
            continue
        n = len(tokens)
        starts = [s for s in np.flatnonzero(row == tokens[0]) if s + n <= len(row) and list(row[s:s + n]) == tokens]
        if starts:
            offsets[i] = len(row) - int(starts[-1]) or None
    return offsets


def is_alora_relevant_in_batch(model, adapter_names=None):
    """Does the active adapter, or one named per row, have invocation tokens?"""
    if getattr(model.active_peft_config, "alora_invocation_tokens", None):
        return True
    return any(getattr(model.peft_config.get(name), "alora_invocation_tokens", None)
               for name in adapter_names or () if name != BASE_ADAPTER)


def alora_offsets_for_forward(model, input_ids, inputs_embeds, adapter_names, alora_offsets):
    """PEFT's ``get_alora_offsets_for_forward``: the offsets a causal LM's forward passes to its layers."""
    if not is_alora_relevant_in_batch(model, adapter_names) or alora_offsets is not None:
        return alora_offsets
    if input_ids is None and inputs_embeds is not None:
        warnings.warn("Cannot calculate aLoRA offsets when only inputs_embeds are provided. Disabling aLoRA for this "
                      "forward pass.")
        return None
    return calculate_alora_offsets(model.peft_config, model.active_adapter, input_ids, adapter_names)


def alora_offsets_for_generate(model, args, kwargs, adapter_names, alora_offsets):
    """PEFT's ``get_alora_offsets_for_generate``: from ``input_ids`` (or the first positional argument)."""
    if not is_alora_relevant_in_batch(model, adapter_names) or alora_offsets is not None:
        return alora_offsets
    input_ids = kwargs.get("input_ids")
    if input_ids is None and args and hasattr(args[0], "ndim"):
        input_ids = args[0]
    if input_ids is None:
        warnings.warn("Cannot calculate aLoRA offsets during generate as input_ids are not available. Disabling "
                      "aLoRA.")
        return None
    if input_ids.ndim == 1:
        input_ids = input_ids.unsqueeze(0)
    return calculate_alora_offsets(model.peft_config, model.active_adapter, input_ids, adapter_names)

