"""``torch.utils.dlpack``: ``from_dlpack`` and ``to_dlpack`` (minilora/buffer_sharing.py)."""
from ..buffer_sharing import from_dlpack, to_dlpack

__all__ = ["from_dlpack", "to_dlpack"]
