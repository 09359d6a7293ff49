"""Layers and the Module system (``minilora.nn``), mirroring ``torch.nn``."""
from . import functional, init
from .checkpointing import checkpoint
from .layers import GELU, Dropout, Embedding, Identity, LayerNorm, Linear, ReLU, RMSNorm, SiLU
from .module import IncompatibleKeys, Module, ModuleDict, ModuleList, Parameter, StateDictError

__all__ = ["Module", "Parameter", "ModuleList", "ModuleDict", "StateDictError", "IncompatibleKeys",
           "Linear", "Embedding", "RMSNorm", "LayerNorm", "Dropout", "Identity", "GELU", "SiLU", "ReLU",
           "functional", "init", "checkpoint"]
