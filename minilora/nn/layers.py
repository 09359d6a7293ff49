"""The basic layers: Linear, Embedding, RMSNorm, LayerNorm, Dropout, Identity.

Each holds its Parameters and calls one op from ``minilora.ops`` in ``forward``.
"""
import math

import numpy as np

from .. import ops
from ..ops.nn import _row_index
from . import init
from .module import Module, Parameter

__all__ = ["Linear", "Embedding", "RMSNorm", "LayerNorm", "Dropout", "Identity", "GELU", "SiLU",
           "ReLU"]


def _empty(shape, dtype, device):
    return Parameter(np.zeros(shape, dtype=dtype or "float32"), device=device)


def _features(normalized_shape, layer):
    """The normalized size: an int, or a 1-tuple as PyTorch accepts (norms here use the last axis)."""
    if isinstance(normalized_shape, (int, np.integer)):
        normalized_shape = (int(normalized_shape),)
    shape = tuple(normalized_shape)
    if len(shape) != 1:
        raise ValueError(f"{layer} normalizes over the last dimension only; got normalized_shape "
                         f"{normalized_shape!r}")
    return shape[0]


def _check_last_dim(layer, x, size):
    if x.shape[-1:] != (size,):
        raise ValueError(f"{layer} expects inputs whose last dimension is {size}, got shape {x.shape}")


class Linear(Module):
    """``y = x W^T + b`` with ``weight`` of shape ``[out_features, in_features]`` (PyTorch layout).

    Init as PyTorch: W ~ U(-1/sqrt(in), 1/sqrt(in)) (kaiming_uniform with a=sqrt(5)), same for b.
    """

    def __init__(self, in_features, out_features, bias=True, dtype=None, device=None):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = _empty((out_features, in_features), dtype, device)
        self.bias = _empty((out_features,), dtype, device) if bias else None
        self.reset_parameters()

    def reset_parameters(self):
        init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1 / math.sqrt(self.in_features) if self.in_features > 0 else 0
            init.uniform_(self.bias, -bound, bound)

    def forward(self, x):
        return ops.linear(x, self.weight, self.bias)

    def extra_repr(self):
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}")


class Embedding(Module):
    """A lookup table ``weight[ids]`` of shape ``[num_embeddings, embedding_dim]``, init N(0, 1).

    ``padding_idx`` as in ``torch.nn.Embedding``: that row starts at zero and gets no gradient
    (Hugging Face's Llama passes ``config.pad_token_id`` here)."""

    def __init__(self, num_embeddings, embedding_dim, padding_idx=None, dtype=None, device=None):
        super().__init__()
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        self.padding_idx = _row_index("Embedding", padding_idx, num_embeddings)
        self.weight = _empty((num_embeddings, embedding_dim), dtype, device)
        init.normal_(self.weight)
        if padding_idx is not None:
            self.weight.data[padding_idx] = 0

    def forward(self, ids):
        return ops.embedding(ids, self.weight, padding_idx=self.padding_idx)

    def extra_repr(self):
        pad = f", padding_idx={self.padding_idx}" if self.padding_idx is not None else ""
        return f"{self.num_embeddings}, {self.embedding_dim}{pad}"


class RMSNorm(Module):
    """``x / sqrt(mean(x^2) + eps) * weight`` over the last axis (Llama's norm; weight starts at ones)."""

    def __init__(self, hidden_size, eps=1e-6, dtype=None, device=None):
        super().__init__()
        self.eps = eps
        size = _features(hidden_size, "RMSNorm")
        self.weight = Parameter(np.ones(size, dtype=dtype or "float32"), device=device)

    def forward(self, x):
        _check_last_dim("RMSNorm", x, self.weight.shape[0])
        return ops.rms_norm(x, self.weight, self.eps)

    def extra_repr(self):
        return f"({self.weight.shape[0]},), eps={self.eps}"


class LayerNorm(Module):
    """``(x - mean) / sqrt(var + eps) * weight + bias`` over the last axis (biased variance).

    ``weight`` starts at ones and ``bias`` at zeros; ``elementwise_affine=False`` has neither,
    ``bias=False`` only a weight (as ``torch.nn.LayerNorm``).
    """

    def __init__(self, normalized_shape, eps=1e-5, elementwise_affine=True, bias=True, dtype=None,
                 device=None):
        super().__init__()
        self.eps = eps
        self.normalized_shape = (_features(normalized_shape, "LayerNorm"),)
        dtype = dtype or "float32"
        self.weight = Parameter(np.ones(self.normalized_shape, dtype=dtype), device=device) \
            if elementwise_affine else None
        self.bias = Parameter(np.zeros(self.normalized_shape, dtype=dtype), device=device) \
            if elementwise_affine and bias else None

    def forward(self, x):
        _check_last_dim("LayerNorm", x, self.normalized_shape[0])
        return ops.layer_norm(x, self.weight, self.bias, self.eps)

    def extra_repr(self):
        return f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.weight is not None}"


class Dropout(Module):
    def __init__(self, p=0.5):
        super().__init__()
        if not 0 <= p <= 1:
            raise ValueError(f"dropout probability must be in [0, 1], got {p}")
        self.p = p

    def forward(self, x):
        return ops.dropout(x, self.p, training=self.training)

    def extra_repr(self):
        return f"p={self.p}"


class Identity(Module):
    def forward(self, x):
        return x


class GELU(Module):
    def __init__(self, approximate="none"):
        super().__init__()
        if approximate not in ("none", "tanh"):
            raise ValueError(f"GELU approximate must be 'none' or 'tanh', got {approximate!r}")
        self.approximate = approximate

    def forward(self, x):
        return ops.gelu(x, self.approximate)

    def extra_repr(self):
        return f"approximate={self.approximate!r}"


class SiLU(Module):
    def forward(self, x):
        return ops.silu(x)


class ReLU(Module):
    def forward(self, x):
        return ops.relu(x)
