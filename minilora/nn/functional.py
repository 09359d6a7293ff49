"""``minilora.nn.functional`` -- the stateless ops under PyTorch's ``F.`` names and signatures.

Every function here takes the arguments ``torch.nn.functional``'s namesake takes, in the same order
and with the same defaults (``tests/test_torch_conformance_nn.py`` compares the signatures). An
option minilora does not implement (``inplace=True``, ``sparse=True``) raises rather than being ignored.
"""
import warnings

import numpy as np

from .. import ops
from ..ops.nn import binary_cross_entropy, binary_cross_entropy_with_logits  # noqa: F401
from ..ops.nn import cosine_similarity, huber_loss, kl_div, normalize, smooth_l1_loss  # noqa: F401
from ..ops.nn import (cosine_embedding_loss, margin_ranking_loss, pairwise_distance,  # noqa: F401
                      triplet_margin_loss)
from ..ops.nn import batch_norm, group_norm  # noqa: F401
from ..ops.nn import _floating_only
from ..ops.nn import float32_inside as _float32_inside
from ..ops.conv import (adaptive_avg_pool2d, avg_pool1d, avg_pool2d, conv1d, conv2d,  # noqa: F401
                        max_pool1d, max_pool2d)
from ..ops.nn import (_refuse, cross_entropy, dropout, embedding, l1_loss, layer_norm,  # noqa: F401
                      mse_loss, nll_loss, one_hot, pad, rms_norm, rotary_embedding,
                      scaled_dot_product_attention, swiglu)
from ..tensor import _to_dtype

__all__ = ["linear", "embedding", "layer_norm", "rms_norm", "scaled_dot_product_attention", "dropout",
           "cross_entropy", "nll_loss", "mse_loss", "l1_loss", "binary_cross_entropy",
           "binary_cross_entropy_with_logits", "pad", "one_hot", "relu", "gelu", "silu",
           "sigmoid", "tanh", "softmax", "log_softmax", "rotary_embedding", "swiglu", "softplus",
           "leaky_relu", "normalize", "cosine_similarity", "smooth_l1_loss", "huber_loss", "kl_div",
           "elu", "selu", "celu", "relu6", "hardtanh", "hardswish", "hardsigmoid", "logsigmoid",
           "mish", "softsign", "glu", "softmin", "pairwise_distance", "margin_ranking_loss",
           "triplet_margin_loss", "cosine_embedding_loss", "batch_norm", "group_norm", "conv1d", "conv2d",
           "max_pool1d", "max_pool2d", "avg_pool1d", "avg_pool2d", "adaptive_avg_pool2d"]


def linear(input, weight, bias=None):
    """``input @ weight.T + bias`` with ``weight`` [out_features, in_features] (PyTorch layout);
    a 1-D ``weight`` [in_features] gives one output per row, without that dimension (torch)."""
    if weight.ndim == 1:
        if bias is not None:  # torch refuses this combination too
            raise RuntimeError("linear: a bias needs a 2-D weight (mat2 must be a matrix, got 1-D tensor)")
        return ops.matmul(input, weight)
    if bias is None or tuple(bias.shape) == (weight.shape[0],):  # the fused node (the common case)
        return ops.linear(input, weight, bias)
    return _linear_with_broadcast_bias(input, weight, bias)


def _linear_with_broadcast_bias(input, weight, bias):
    """A bias of another shape that broadcasts to the output (a 0-d or [1] bias): added as its own op,
    so that its gradient is summed back to its shape (the fused node expects [out_features])."""
    out_shape = (*input.shape[:-1], weight.shape[0])
    try:
        fits = np.broadcast_shapes(tuple(bias.shape), out_shape) == out_shape
    except ValueError:
        fits = False
    if not fits:
        raise RuntimeError(f"linear: the bias of shape {tuple(bias.shape)} does not broadcast to the "
                           f"output's shape {out_shape}")
    return ops.linear(input, weight) + bias


def relu(input, inplace=False):
    _refuse("relu", inplace=(inplace, False))
    return ops.relu(input)


def silu(input, inplace=False):
    _refuse("silu", inplace=(inplace, False))
    _floating_only("silu", input)
    return ops.silu(input)


def softplus(input, beta=1, threshold=20):
    """``log(1 + exp(beta x)) / beta``, and ``x`` itself where ``beta x > threshold`` (torch's)."""
    _floating_only("softplus", input)
    return ops.softplus(input, beta, threshold)


def leaky_relu(input, negative_slope=0.01, inplace=False):
    """``x`` for ``x > 0``, ``negative_slope * x`` otherwise."""
    _refuse("leaky_relu", inplace=(inplace, False))
    _floating_only("leaky_relu", input)
    return ops.leaky_relu(input, negative_slope)


def elu(input, alpha=1.0, inplace=False):
    """``x`` for ``x > 0``, ``alpha (exp(x) - 1)`` otherwise."""
    _refuse("elu", inplace=(inplace, False))
    _floating_only("elu", input)
    return ops.elu(input, alpha)


def selu(input, inplace=False):
    """``scale * elu(x, alpha)`` with the self-normalising constants of Klambauer et al."""
    _refuse("selu", inplace=(inplace, False))
    _floating_only("selu", input)
    return ops.selu(input)


def celu(input, alpha=1.0, inplace=False):
    """``x`` for ``x > 0``, ``alpha (exp(x / alpha) - 1)`` otherwise."""
    _refuse("celu", inplace=(inplace, False))
    _floating_only("celu", input)
    return ops.celu(input, alpha)


def hardtanh(input, min_val=-1.0, max_val=1.0, inplace=False):
    """``x`` clamped to ``[min_val, max_val]``; no gradient at or beyond the bounds (torch's)."""
    _refuse("hardtanh", inplace=(inplace, False))
    return ops.hardtanh(input, min_val, max_val)


def relu6(input, inplace=False):
    """``min(max(x, 0), 6)`` (torch's is ``hardtanh(x, 0, 6)``, gradients included)."""
    _refuse("relu6", inplace=(inplace, False))
    return ops.hardtanh(input, 0.0, 6.0)


def hardswish(input, inplace=False):
    _refuse("hardswish", inplace=(inplace, False))
    _floating_only("hardswish", input)
    return ops.hardswish(input)


def hardsigmoid(input, inplace=False):
    _refuse("hardsigmoid", inplace=(inplace, False))
    return ops.hardsigmoid(input)


def logsigmoid(input):
    """``log(sigmoid(x))``, stable for large ``|x|``."""
    _floating_only("logsigmoid", input)
    return ops.logsigmoid(input)


def mish(input, inplace=False):
    _refuse("mish", inplace=(inplace, False))
    _floating_only("mish", input)
    return ops.mish(input)


def softsign(input):
    return ops.softsign(input)


@_float32_inside  # torch's glu is one kernel: a 16-bit input is computed in float32, rounded once
def glu(input, dim=-1):
    """The gated linear unit: ``a * sigmoid(b)`` for the two halves ``a``, ``b`` of ``dim``."""
    _floating_only("glu", input)
    if input.ndim == 0:
        raise RuntimeError("glu does not support scalars because halving size must be even")
    size = input.shape[dim]
    if size % 2:
        raise RuntimeError(f"Halving dimension must be even, but dimension {dim} is size {size}")
    first, second = ops.split(input, size // 2, dim)
    return first * ops.sigmoid(second)


def softmin(input, dim=None, _stacklevel=3, dtype=None):
    """``softmax(-input)`` along ``dim`` (cast to ``dtype`` first, if given)."""
    if dtype is not None:
        input = ops.astype(input, _to_dtype(dtype))
    return ops.softmax(-input, _softmax_dim("softmin", input.ndim, dim))


def gelu(input, *, approximate="none"):
    """Exact GELU ``x * Phi(x)`` or, with ``approximate='tanh'``, the tanh approximation."""
    if approximate not in ("none", "tanh"):
        raise RuntimeError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
    _floating_only("gelu", input)
    return ops.gelu(input, approximate)


def sigmoid(input):
    return ops.sigmoid(input)


def tanh(input):
    return ops.tanh(input)


def _softmax_dim(fn, ndim, dim):
    """PyTorch's rule when ``dim`` is not given (deprecated, with a warning): 0 for 0-, 1- and 3-D
    inputs, else 1."""
    if dim is not None:
        return dim
    warnings.warn(f"Implicit dimension choice for {fn} has been deprecated. Change the call to "
                  "include dim=X as an argument.", UserWarning, stacklevel=3)
    return 0 if ndim in (0, 1, 3) else 1


def softmax(input, dim=None, _stacklevel=3, dtype=None):
    """Softmax along ``dim`` (cast to ``dtype`` first, if given)."""
    if dtype is not None:
        input = ops.astype(input, _to_dtype(dtype))
    return ops.softmax(input, _softmax_dim("softmax", input.ndim, dim))


def log_softmax(input, dim=None, _stacklevel=3, dtype=None):
    """Log-softmax along ``dim`` (cast to ``dtype`` first, if given)."""
    if dtype is not None:
        input = ops.astype(input, _to_dtype(dtype))
    return ops.log_softmax(input, _softmax_dim("log_softmax", input.ndim, dim))
