"""The names of ``torch.utils`` that minilora has: ``minilora.utils.data`` (datasets, samplers,
``DataLoader``) and ``minilora.utils.checkpoint`` (gradient checkpointing)."""
from . import checkpoint, data

__all__ = ["checkpoint", "data"]
