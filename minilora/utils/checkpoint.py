"""``torch.utils.checkpoint``: gradient checkpointing (the code and its explanation live in
minilora/nn/checkpointing.py)."""
from ..nn.checkpointing import checkpoint, checkpoint_sequential

__all__ = ["checkpoint", "checkpoint_sequential"]
