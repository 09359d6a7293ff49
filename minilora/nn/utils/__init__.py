"""``minilora.nn.utils``: gradient clipping under ``torch.nn.utils``' names, and ``rnn``
(``pad_sequence``: ``minilora.nn.utils.rnn``).

The code lives in ``minilora/optim/clip_grad.py``, next to the optimizers (exercise 6.2 is there).
``optim`` sits above ``nn`` in the layers, so it is imported when a function is called, not when
``minilora.nn`` is.
"""

from ... import ops
from ...tensor import Tensor
from . import fusion, parametrizations, parametrize, prune, rnn, stateless
from .fusion import fuse_conv_bn_eval, fuse_conv_bn_weights, fuse_linear_bn_eval, fuse_linear_bn_weights
from .spectral_norm import remove_spectral_norm, spectral_norm
from .weight_norm import remove_weight_norm, weight_norm

__all__ = ["rnn", "clip_grad_norm_", "clip_grad_value_", "clip_grads_with_norm_", "get_total_norm", "skip_init",
           "parameters_to_vector", "vector_to_parameters", "parametrize", "parametrizations", "prune",
           "fusion", "stateless", "fuse_conv_bn_eval", "fuse_conv_bn_weights", "fuse_linear_bn_eval", "fuse_linear_bn_weights",
           "weight_norm", "remove_weight_norm", "spectral_norm", "remove_spectral_norm"]


def _one_device(parameters):
    """The parameters as a list, all on one device (torch's ``_check_param_device``)."""
    parameters = [parameters] if isinstance(parameters, Tensor) else list(parameters)
    for p in parameters[1:]:
        if p.device != parameters[0].device:
            raise TypeError("Found two parameters on different devices, this is currently not supported.")
    return parameters


def parameters_to_vector(parameters):
    """Every parameter flattened, one after the other, into one vector (in the graph)."""
    return ops.cat([p.reshape(-1) for p in _one_device(parameters)])


def vector_to_parameters(vec, parameters):
    """Set the parameters from one vector, in ``parameters_to_vector``'s layout: as torch's
    ``param.data = vec[i:j].view_as(param).data``, each parameter then shares ``vec``'s memory."""
    if not isinstance(vec, Tensor):
        module = "" if type(vec).__module__ == "builtins" else f"{type(vec).__module__}."  # (torch.typename)
        raise TypeError(f"expected torch.Tensor, but got: {module}{type(vec).__qualname__}")
    start = 0
    for p in _one_device(parameters):
        p.data = vec[start:start + p.numel()].view_as(p).data
        start += p.numel()


def skip_init(module_cls, *args, **kwargs):
    """``torch.nn.utils.skip_init``: ``module_cls(*args, **kwargs)`` with its parameters and buffers
    left uninitialised (``to_empty``) and nothing drawn from the generator -- for a model whose weights
    are loaded or written next, where a large model's init would cost minutes. As torch's: built on the
    'meta' device (no values: its initialisers neither draw nor write), then given empty storage."""
    import inspect
    if "device" not in inspect.signature(module_cls).parameters:
        raise RuntimeError("Module must support a 'device' arg to skip initialization")
    device = kwargs.pop("device", "cpu")
    return module_cls(*args, device="meta", **kwargs).to_empty(device=device)


def clip_grad_norm_(parameters, max_norm, norm_type=2.0, error_if_nonfinite=False, foreach=None):
    """Scale the gradients so their total norm is at most ``max_norm``; returns the norm before."""
    from ...optim import clip_grad
    return clip_grad.clip_grad_norm_(parameters, max_norm, norm_type, error_if_nonfinite, foreach)


def clip_grad_norm(parameters, max_norm, norm_type=2.0, error_if_nonfinite=False, foreach=None):
    """The old name (pytorch/examples' word_language_model once called it): ``clip_grad_norm_``, with
    torch's FutureWarning."""
    import warnings
    warnings.warn("`torch.nn.utils.clip_grad_norm` is now deprecated in favor of `torch.nn.utils.clip_grad_norm_`.",
                  FutureWarning, stacklevel=2)
    return clip_grad_norm_(parameters, max_norm, norm_type, error_if_nonfinite, foreach)


def clip_grad_value_(parameters, clip_value, foreach=None):
    """Clamp every gradient element into ``[-clip_value, clip_value]``."""
    from ...optim import clip_grad
    return clip_grad.clip_grad_value_(parameters, clip_value, foreach)


def get_total_norm(tensors, norm_type=2.0, error_if_nonfinite=False, foreach=None):
    """The total ``norm_type``-norm of ``tensors`` (usually the gradients), a 0-d Tensor."""
    from ...optim import clip_grad
    return clip_grad.get_total_norm(tensors, norm_type, error_if_nonfinite, foreach)


def clip_grads_with_norm_(parameters, max_norm, total_norm, foreach=None):
    """Scale the gradients by ``min(1, max_norm / (total_norm + 1e-6))``, in place."""
    from ...optim import clip_grad
    return clip_grad.clip_grads_with_norm_(parameters, max_norm, total_norm, foreach)
