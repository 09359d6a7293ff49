"""``minilora.nn.utils``: gradient clipping under ``torch.nn.utils``' names.

The code lives in ``minilora/optim/clip_grad.py``, next to the optimizers (exercise 6.2 is there).
``optim`` sits above ``nn`` in the layers, so it is imported when a function is called, not when
``minilora.nn`` is.
"""

__all__ = ["clip_grad_norm_", "clip_grad_value_"]


def clip_grad_norm_(parameters, max_norm, norm_type=2.0, error_if_nonfinite=False, foreach=None):
    """Scale the gradients so their total norm is at most ``max_norm``; returns the norm before."""
    from ..optim import clip_grad
    return clip_grad.clip_grad_norm_(parameters, max_norm, norm_type, error_if_nonfinite, foreach)


def clip_grad_value_(parameters, clip_value, foreach=None):
    """Clamp every gradient element into ``[-clip_value, clip_value]``."""
    from ..optim import clip_grad
    return clip_grad.clip_grad_value_(parameters, clip_value, foreach)
