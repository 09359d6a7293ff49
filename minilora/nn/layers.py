"""The basic layers: Linear, Embedding, RMSNorm, LayerNorm, Dropout, activations, losses.

Each holds its Parameters and calls one op from ``minilora.ops`` in ``forward``. Constructors take
``torch.nn``'s arguments in torch's order (``Linear(in, out, bias, device, dtype)``); an option
minilora does not implement (``inplace=True``, ``max_norm=``) raises instead of being ignored.
"""
import math

import numpy as np

from .. import ops
from ..ops.nn import _refuse, _row_index, legacy_reduction
from . import functional as F
from . import init
from .module import Module, Parameter

__all__ = ["Linear", "Embedding", "RMSNorm", "LayerNorm", "Dropout", "Identity", "GELU", "SiLU",
           "ReLU", "Tanh", "Sigmoid", "CrossEntropyLoss", "NLLLoss", "MSELoss", "L1Loss"]


def _empty(shape, dtype, device):
    return Parameter(np.zeros(shape, dtype=dtype or "float32"), device=device)


def _normalized_shape(normalized_shape):
    """An int or a sequence of ints (the trailing dimensions normalized) as a tuple, as PyTorch."""
    if isinstance(normalized_shape, (int, np.integer)):
        return (int(normalized_shape),)
    return tuple(int(n) for n in normalized_shape)


class Linear(Module):
    """``y = x W^T + b`` with ``weight`` of shape ``[out_features, in_features]`` (PyTorch layout).

    Init as PyTorch: W ~ U(-1/sqrt(in), 1/sqrt(in)) (kaiming_uniform with a=sqrt(5)), same for b.
    """

    def __init__(self, in_features, out_features, bias=True, device=None, dtype=None):
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

    def __init__(self, num_embeddings, embedding_dim, padding_idx=None, max_norm=None, norm_type=2.0,
                 scale_grad_by_freq=False, sparse=False, _weight=None, _freeze=False, device=None,
                 dtype=None):
        super().__init__()
        _refuse("Embedding", max_norm=(max_norm, None), scale_grad_by_freq=(scale_grad_by_freq, False),
                sparse=(sparse, False))
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        self.padding_idx = _row_index("Embedding", padding_idx, num_embeddings)
        if _weight is not None:  # from_pretrained: the given table, as it is (shared, not copied)
            if tuple(_weight.shape) != (num_embeddings, embedding_dim):
                raise ValueError(f"Embedding: _weight has shape {tuple(_weight.shape)}, expected "
                                 f"{(num_embeddings, embedding_dim)}")
            self.weight = Parameter(_weight, requires_grad=not _freeze, device=device, dtype=dtype)
            return
        self.weight = _empty((num_embeddings, embedding_dim), dtype, device)
        init.normal_(self.weight)
        if padding_idx is not None:
            self.weight._array[padding_idx] = 0

    @classmethod
    def from_pretrained(cls, embeddings, freeze=True, padding_idx=None, max_norm=None, norm_type=2.0,
                        scale_grad_by_freq=False, sparse=False):
        """An Embedding over the 2-D table ``embeddings`` (frozen unless ``freeze=False``), as torch:
        the table is used as it is, the ``padding_idx`` row is not zeroed."""
        if len(embeddings.shape) != 2:
            raise ValueError(f"Embeddings parameter is expected to be 2-dimensional, got shape "
                             f"{tuple(embeddings.shape)}")
        rows, cols = embeddings.shape
        return cls(rows, cols, padding_idx=padding_idx, max_norm=max_norm, norm_type=norm_type,
                   scale_grad_by_freq=scale_grad_by_freq, sparse=sparse, _weight=embeddings, _freeze=freeze)

    def forward(self, input):
        return ops.embedding(input, self.weight, padding_idx=self.padding_idx)

    def extra_repr(self):
        pad = f", padding_idx={self.padding_idx}" if self.padding_idx is not None else ""
        return f"{self.num_embeddings}, {self.embedding_dim}{pad}"


class RMSNorm(Module):
    """``x / sqrt(mean(x^2) + eps) * weight`` over the trailing ``normalized_shape`` dimensions
    (Llama's norm; weight starts at ones). ``eps=None``: the dtype's machine epsilon, as torch."""

    def __init__(self, normalized_shape, eps=None, elementwise_affine=True, device=None, dtype=None):
        super().__init__()
        self.normalized_shape, self.eps = _normalized_shape(normalized_shape), eps
        self.elementwise_affine = elementwise_affine
        self.weight = Parameter(np.ones(self.normalized_shape, dtype=dtype or "float32"), device=device) \
            if elementwise_affine else None

    def forward(self, x):
        return ops.rms_norm(x, self.normalized_shape, self.weight, self.eps)

    def extra_repr(self):
        return f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}"


class LayerNorm(Module):
    """``(x - mean) / sqrt(var + eps) * weight + bias`` over the trailing ``normalized_shape``
    dimensions (biased variance).

    ``weight`` starts at ones and ``bias`` at zeros; ``elementwise_affine=False`` has neither,
    ``bias=False`` only a weight (as ``torch.nn.LayerNorm``).
    """

    def __init__(self, normalized_shape, eps=1e-5, elementwise_affine=True, bias=True, device=None,
                 dtype=None):
        super().__init__()
        self.eps = eps
        self.normalized_shape = _normalized_shape(normalized_shape)
        self.elementwise_affine = elementwise_affine
        dtype = dtype or "float32"
        self.weight = Parameter(np.ones(self.normalized_shape, dtype=dtype), device=device) \
            if elementwise_affine else None
        self.bias = Parameter(np.zeros(self.normalized_shape, dtype=dtype), device=device) \
            if elementwise_affine and bias else None

    def forward(self, x):
        return ops.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)

    def extra_repr(self):
        return f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}"


class Dropout(Module):
    def __init__(self, p=0.5, inplace=False):
        super().__init__()
        if not 0 <= p <= 1:
            raise ValueError(f"dropout probability must be in [0, 1], got {p}")
        _refuse("Dropout", inplace=(inplace, False))
        self.p, self.inplace = p, inplace

    def forward(self, input):
        return ops.dropout(input, self.p, training=self.training)

    def extra_repr(self):
        return f"p={self.p}, inplace={self.inplace}"


class Identity(Module):
    """Returns its input; takes (and ignores) any arguments, as ``torch.nn.Identity``."""

    def __init__(self, *args, **kwargs):
        super().__init__()

    def forward(self, input):
        return input


class GELU(Module):
    def __init__(self, approximate="none"):
        super().__init__()
        if approximate not in ("none", "tanh"):
            raise ValueError(f"GELU approximate must be 'none' or 'tanh', got {approximate!r}")
        self.approximate = approximate

    def forward(self, input):
        return F.gelu(input, approximate=self.approximate)

    def extra_repr(self):
        return f"approximate={self.approximate!r}"


class _Activation(Module):
    """An activation module with torch's ``inplace`` argument (only ``False`` is implemented)."""

    def __init__(self, inplace=False):
        super().__init__()
        _refuse(type(self).__name__, inplace=(inplace, False))
        self.inplace = inplace

    def extra_repr(self):
        return "inplace=True" if self.inplace else ""


class SiLU(_Activation):
    def forward(self, input):
        return ops.silu(input)


class ReLU(_Activation):
    def forward(self, input):
        return ops.relu(input)


class Tanh(Module):
    def forward(self, input):
        return ops.tanh(input)


class Sigmoid(Module):
    def forward(self, input):
        return ops.sigmoid(input)


class Softmax(Module):
    def __init__(self, dim=None):
        super().__init__()
        self.dim = dim  # None: torch's deprecated implicit choice, with its warning (F.softmax)

    def forward(self, input):
        return F.softmax(input, self.dim)


class Flatten(Module):
    """``input.flatten(start_dim, end_dim)``; the defaults keep the batch dimension, as torch's."""

    def __init__(self, start_dim=1, end_dim=-1):
        super().__init__()
        self.start_dim, self.end_dim = start_dim, end_dim

    def forward(self, input):
        return ops.flatten(input, self.start_dim, self.end_dim)


# ---- losses (``torch.nn``'s loss modules: the functional loss with the options stored) ------------
class _Loss(Module):
    def __init__(self, size_average=None, reduce=None, reduction="mean"):
        super().__init__()
        self.reduction = legacy_reduction(size_average, reduce, reduction)


class _WeightedLoss(_Loss):
    """A loss with a per-class ``weight``: a buffer (in ``state_dict``, moved by ``to()``), as torch."""

    def __init__(self, weight=None, size_average=None, reduce=None, reduction="mean"):
        super().__init__(size_average, reduce, reduction)
        self.register_buffer("weight", weight)


class CrossEntropyLoss(_WeightedLoss):
    def __init__(self, weight=None, size_average=None, ignore_index=-100, reduce=None, reduction="mean",
                 label_smoothing=0.0):
        super().__init__(weight, size_average, reduce, reduction)
        self.ignore_index, self.label_smoothing = ignore_index, label_smoothing

    def forward(self, input, target):
        return F.cross_entropy(input, target, weight=self.weight, ignore_index=self.ignore_index,
                               reduction=self.reduction, label_smoothing=self.label_smoothing)


class NLLLoss(_WeightedLoss):
    def __init__(self, weight=None, size_average=None, ignore_index=-100, reduce=None, reduction="mean"):
        super().__init__(weight, size_average, reduce, reduction)
        self.ignore_index = ignore_index

    def forward(self, input, target):
        return F.nll_loss(input, target, weight=self.weight, ignore_index=self.ignore_index,
                          reduction=self.reduction)


class MSELoss(_Loss):
    def forward(self, input, target):
        return F.mse_loss(input, target, reduction=self.reduction)


class L1Loss(_Loss):
    def forward(self, input, target):
        return F.l1_loss(input, target, reduction=self.reduction)


class BCELoss(_WeightedLoss):
    def forward(self, input, target):
        return F.binary_cross_entropy(input, target, weight=self.weight, reduction=self.reduction)


class BCEWithLogitsLoss(_Loss):
    """``weight`` and ``pos_weight`` are buffers, as torch's."""

    def __init__(self, weight=None, size_average=None, reduce=None, reduction="mean", pos_weight=None):
        super().__init__(size_average, reduce, reduction)
        self.register_buffer("weight", weight)
        self.register_buffer("pos_weight", pos_weight)

    def forward(self, input, target):
        return F.binary_cross_entropy_with_logits(input, target, self.weight, reduction=self.reduction,
                                                  pos_weight=self.pos_weight)
