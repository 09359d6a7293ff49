"""``SparseAdam``: torch's Adam for sparse gradients (``nn.Embedding(sparse=True)``), refused.

minilora has no sparse gradients, and torch's SparseAdam steps only on sparse ones (a dense gradient raises
``RuntimeError``), so a SparseAdam here could never take a step: it is refused when built, with an error that
says so (a ``NotImplementedError``, which is a ``RuntimeError`` as torch's is).
"""
from .optimizer import Optimizer

__all__ = ["SparseAdam"]


class SparseAdam(Optimizer):
    """``SparseAdam(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, maximize=False)``: torch's signature; always
    raises ``NotImplementedError`` (minilora has no sparse gradients)."""
    _state_shaped_as_params = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, maximize=False):
        raise NotImplementedError("SparseAdam does not support dense gradients, please consider Adam instead: "
                                  "minilora has no sparse gradients (nn.Embedding(sparse=True) is not implemented), "
                                  "so SparseAdam could never take a step; use optim.Adam or optim.AdamW")
