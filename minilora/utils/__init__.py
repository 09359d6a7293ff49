"""The names of ``torch.utils`` that minilora has: ``minilora.utils.data`` (datasets, samplers,
``DataLoader``)."""
from . import data

__all__ = ["data"]
