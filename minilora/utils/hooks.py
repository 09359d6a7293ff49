"""``torch.utils.hooks``: ``RemovableHandle``, what every ``register_*hook`` returns (defined with the engine,
minilora/tensor.py, as tensors' hooks are the first to use it)."""
from ..tensor import RemovableHandle

__all__ = ["RemovableHandle"]
