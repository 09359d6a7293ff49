"""``minilora.models``: the Llama model and the small pretrained base that ships with minilora.

    from minilora.models import load_base
    model = load_base()                      # a tiny Llama trained by `python -m minilora.pretrain`
    out = model(ids, labels=ids)             # out.loss, out.logits

The architecture itself is in ``minilora/nn/llama.py``; its relatives Mistral, Qwen2 and Qwen3, and
``AutoModelForCausalLM`` (the class from config.json's ``model_type``; ``AutoModel`` the bare body, no head), in
``minilora/nn/llama_family.py``.
"""
import os
import random

import numpy as np

from . import random as _ml_random
from .backends import use_deterministic_algorithms
from .nn.llama import (BaseModelOutputWithPast, CausalLMOutput, CausalLMOutputWithPast, DynamicCache, KVCache,
                       LlamaConfig, LlamaForCausalLM, LlamaForSequenceClassification, LlamaForTokenClassification,
                       LlamaModel, SequenceClassifierOutputWithPast, TokenClassifierOutput)
from .nn.llama_family import *  # noqa: F401,F403  (Mistral, Qwen2, Qwen3, the Auto classes)
from .nn.llama_family import __all__ as _FAMILY

__all__ = ["LlamaConfig", "LlamaForCausalLM", "LlamaModel", "KVCache", "DynamicCache", "CausalLMOutput",
           "CausalLMOutputWithPast",
           "BaseModelOutputWithPast", "set_seed", "LlamaForSequenceClassification", "LlamaForTokenClassification",
           "SequenceClassifierOutputWithPast", "TokenClassifierOutput", "load_base", "BASE_DIR", "BASE_NAME"]
__all__ += _FAMILY

BASE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "assets", "base")
# The shipped base's stable name, the same on every machine: adapters trained on it record it as
# base_model_name_or_path, and AutoPeftModelForCausalLM.from_pretrained(adapter_dir) finds it by it.
BASE_NAME = "minilora/base"


def load_base(dtype="float32", device=None):
    """The pretrained base model shipped in ``minilora/assets/base`` (config.json + model.safetensors)."""
    if not os.path.isfile(os.path.join(BASE_DIR, "config.json")):
        raise FileNotFoundError(f"the pretrained base model is missing: {BASE_DIR} has no config.json. "
                                "Create it with `python -m minilora.pretrain` (or reinstall minilora).")
    model = LlamaForCausalLM.from_pretrained(BASE_DIR, dtype=dtype, device=device)
    model.name_or_path = BASE_NAME
    return model


def set_seed(seed, deterministic=False):
    """transformers' ``set_seed``: seeds Python's ``random``, NumPy's global generator and minilora's own
    (torch's stream, every device), so a script that calls ``transformers.set_seed(n)`` draws the same
    numbers here (minilora has one generator for every device: transformers' cuda.manual_seed_all is in it).
    ``deterministic=True``: ``minilora.use_deterministic_algorithms(True)``, as transformers."""
    random.seed(seed)
    np.random.seed(seed)
    _ml_random.manual_seed(seed)
    if deterministic:
        use_deterministic_algorithms(True)
