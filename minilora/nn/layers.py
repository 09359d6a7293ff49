"""The basic layers: Linear, Embedding, RMSNorm, LayerNorm, Dropout, activations, losses.

Each holds its Parameters and calls one op from ``minilora.ops`` in ``forward``. Constructors take
``torch.nn``'s arguments in torch's order (``Linear(in, out, bias, device, dtype)``); an option
minilora does not implement (``max_norm=``) raises instead of being ignored.
"""
import math
import numbers
import warnings
from typing import NamedTuple

import numpy as np

from .. import amp as _amp, ops
from ..dtypes import dtype_argument, get_default_dtype, is_floating, to_dtype
from ..ops import recurrent
from ..ops.nn import EmbeddingArgumentError, _refuse, _row_index, legacy_reduction
from ..tensor import name_node, no_grad, share_node, warn_at_caller
from . import functional as F
from . import init
from .module import Module, ModuleList, Parameter, Sequential
from .utils.rnn import PackedSequence

__all__ = ["Linear", "Embedding", "RMSNorm", "LayerNorm", "Dropout", "Identity", "GELU", "SiLU", "ReLU", "Tanh",
           "Sigmoid", "CrossEntropyLoss", "NLLLoss", "MSELoss", "L1Loss", "Softplus", "LeakyReLU", "CosineSimilarity",
           "SmoothL1Loss", "HuberLoss", "KLDivLoss", "MultiheadAttention", "ELU", "CELU", "SELU", "Hardtanh", "ReLU6",
           "Hardswish", "Hardsigmoid", "Mish", "LogSigmoid", "Softsign", "GLU", "Softmin", "LogSoftmax",
           "PairwiseDistance", "MarginRankingLoss", "TripletMarginLoss", "CosineEmbeddingLoss", "Unflatten",
           "BatchNorm1d", "BatchNorm2d", "GroupNorm", "Conv1d", "Conv2d", "MaxPool1d", "MaxPool2d", "AvgPool1d",
           "AvgPool2d", "AdaptiveAvgPool2d", "RNN", "LSTM", "GRU", "TransformerEncoderLayer", "TransformerEncoder",
           "TransformerDecoderLayer", "TransformerDecoder", "Transformer",
           "Upsample", "UpsamplingNearest2d", "UpsamplingBilinear2d", "SoftMarginLoss", "HingeEmbeddingLoss",
           "PoissonNLLLoss", "GaussianNLLLoss", "MultiLabelSoftMarginLoss", "MultiMarginLoss", "Threshold",
           "Hardshrink", "Softshrink", "Tanhshrink", "PReLU", "AdaptiveAvgPool1d", "ConstantPad1d", "ConstantPad2d",
           "ZeroPad1d", "ZeroPad2d", "ReflectionPad1d", "ReflectionPad2d", "ReplicationPad1d", "ReplicationPad2d",
           "CircularPad1d", "CircularPad2d", "Dropout1d", "Dropout2d", "Dropout3d", "ConvTranspose1d",
           "ConvTranspose2d", "PixelShuffle", "PixelUnshuffle", "Softmax2d", "AdaptiveMaxPool1d", "AdaptiveMaxPool2d",
           "InstanceNorm1d", "InstanceNorm2d", "RNNCell", "LSTMCell", "GRUCell", "BatchNorm3d", "InstanceNorm3d",
           "Unfold", "Fold", "MultiLabelMarginLoss", "TripletMarginWithDistanceLoss", "MaxUnpool1d",
           "MaxUnpool2d", "Bilinear", "LPPool1d", "LPPool2d", "LocalResponseNorm", "EmbeddingBag", "AlphaDropout",
           "FeatureAlphaDropout", "RReLU", "Conv3d", "ConvTranspose3d", "ChannelShuffle", "CTCLoss", "ConstantPad3d",
           "ZeroPad3d", "ReflectionPad3d", "ReplicationPad3d", "CircularPad3d", "MaxPool3d", "AvgPool3d",
           "AdaptiveAvgPool3d", "AdaptiveMaxPool3d", "MaxUnpool3d", "LPPool3d", "LinearCrossEntropyLoss",
           "FractionalMaxPool2d", "FractionalMaxPool3d", "AdaptiveLogSoftmaxWithLoss", "NLLLoss2d"]


def _float_dtype(dtype):
    """A layer's ``dtype=`` (``ml.bfloat16``, ``torch.bfloat16``), or the default dtype, as torch's layers; a
    dtype's name is the TypeError of the ``torch.empty`` call torch's layers make their parameters with."""
    return get_default_dtype() if dtype is None else dtype_argument("empty", dtype)


def _nonnegative(shape):
    """A layer's parameter shape, or torch's RuntimeError for a negative size (NumPy's would be a ValueError)."""
    negative = [d for d in shape if d < 0]
    if negative:
        raise RuntimeError(f"Trying to create tensor with negative dimension {negative[0]}: {list(shape)}")
    return shape


def _empty(shape, dtype, device):
    return Parameter(np.zeros(_nonnegative(shape), dtype=_float_dtype(dtype)), device=device)


def _reset_affine(norm):
    """torch's ``reset_parameters`` of an affine norm: weight ones, bias zeros (those it has)."""
    if norm.weight is not None:
        init.ones_(norm.weight)
    if norm.bias is not None:
        init.zeros_(norm.bias)


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

    def forward(self, input):
        return ops.linear(input, self.weight, self.bias)

    def extra_repr(self):
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}")


class _LookupTable(Module):
    """What Embedding and EmbeddingBag share: torch's ``reset_parameters`` of the table."""

    def reset_parameters(self):
        """N(0, 1), the ``padding_idx`` row zeroed (as torch's)."""
        init.normal_(self.weight)
        if self.padding_idx is not None:
            with no_grad():
                self.weight[self.padding_idx].fill_(0)


def _check_table(weight, num_embeddings, embedding_dim):
    """A table given to Embedding / EmbeddingBag (``_weight``) must be [num_embeddings, embedding_dim]:
    torch asserts it (a larger one would be used as it is, silently)."""
    if tuple(weight.shape) != (num_embeddings, embedding_dim):
        raise EmbeddingArgumentError("Shape of weight does not match num_embeddings and embedding_dim")


def _pretrained_size(embeddings):
    """``(rows, columns)`` of a table given to ``from_pretrained``: it must be 2-D (torch asserts)."""
    if len(embeddings.shape) != 2:
        raise EmbeddingArgumentError(f"Embeddings parameter is expected to be 2-dimensional, got "
                                     f"shape {tuple(embeddings.shape)}")
    return tuple(embeddings.shape)


def _lookup_options_repr(module):
    """The ``max_norm`` / ``norm_type`` / ``scale_grad_by_freq`` part of Embedding's and
    EmbeddingBag's repr: only the options that differ from torch's defaults."""
    text = ""
    if module.max_norm is not None:
        text += f", max_norm={module.max_norm}"
    if module.norm_type != 2:
        text += f", norm_type={module.norm_type}"
    if module.scale_grad_by_freq:
        text += f", scale_grad_by_freq={module.scale_grad_by_freq}"
    return text


class Embedding(_LookupTable):
    """A lookup table ``weight[ids]`` of shape ``[num_embeddings, embedding_dim]``, init N(0, 1).

    ``padding_idx`` as in ``torch.nn.Embedding``: that row starts at zero and gets no gradient
    (Hugging Face's Llama passes ``config.pad_token_id`` here)."""

    def __init__(self, num_embeddings, embedding_dim, padding_idx=None, max_norm=None, norm_type=2.0,
                 scale_grad_by_freq=False, sparse=False, _weight=None, _freeze=False, device=None,
                 dtype=None):
        super().__init__()
        _refuse("Embedding", sparse=(sparse, False))
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        self.padding_idx = _row_index("Embedding", padding_idx, num_embeddings)
        self.max_norm, self.norm_type = max_norm, norm_type
        self.scale_grad_by_freq, self.sparse = scale_grad_by_freq, sparse
        if _weight is not None:  # from_pretrained: the given table, as it is (shared, not copied)
            _check_table(_weight, num_embeddings, embedding_dim)
            self.weight = Parameter(_weight, requires_grad=not _freeze, device=device, dtype=dtype)
            return
        self.weight = _empty((num_embeddings, embedding_dim), dtype, device)
        self.weight.requires_grad = not _freeze
        self.reset_parameters()

    @classmethod
    def from_pretrained(cls, embeddings, freeze=True, padding_idx=None, max_norm=None, norm_type=2.0,
                        scale_grad_by_freq=False, sparse=False):
        """An Embedding over the 2-D table ``embeddings`` (frozen unless ``freeze=False``), as torch:
        the table is used as it is, the ``padding_idx`` row is not zeroed."""
        rows, cols = _pretrained_size(embeddings)
        return cls(rows, cols, padding_idx=padding_idx, max_norm=max_norm, norm_type=norm_type,
                   scale_grad_by_freq=scale_grad_by_freq, sparse=sparse, _weight=embeddings, _freeze=freeze)

    def forward(self, input):
        return ops.embedding(input, self.weight, self.padding_idx, self.max_norm, self.norm_type,
                             self.scale_grad_by_freq, self.sparse)

    def extra_repr(self):
        """torch's text: the sizes, then only the options that differ from their defaults."""
        text = f"{self.num_embeddings}, {self.embedding_dim}"
        if self.padding_idx is not None:
            text += f", padding_idx={self.padding_idx}"
        text += _lookup_options_repr(self)
        if self.sparse:
            text += ", sparse=True"
        return text


class RMSNorm(Module):
    """``x / sqrt(mean(x^2) + eps) * weight`` over the trailing ``normalized_shape`` dimensions
    (Llama's norm; weight starts at ones). ``eps=None``: the machine epsilon of the dtype it computes
    in (float32's for bfloat16/float16), as torch."""

    def __init__(self, normalized_shape, eps=None, elementwise_affine=True, device=None, dtype=None):
        super().__init__()
        self.normalized_shape, self.eps = _normalized_shape(normalized_shape), eps
        self.elementwise_affine = elementwise_affine
        self.weight = Parameter(np.ones(self.normalized_shape, dtype=_float_dtype(dtype)), device=device) \
            if elementwise_affine else None

    def reset_parameters(self):
        if self.weight is not None:
            init.ones_(self.weight)

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
        self.normalized_shape = _nonnegative(_normalized_shape(normalized_shape))
        self.elementwise_affine = elementwise_affine
        dtype = _float_dtype(dtype)
        self.weight = Parameter(np.ones(self.normalized_shape, dtype=dtype), device=device) \
            if elementwise_affine else None
        self.bias = Parameter(np.zeros(self.normalized_shape, dtype=dtype), device=device) \
            if elementwise_affine and bias else None

    def reset_parameters(self):
        _reset_affine(self)

    def forward(self, input):
        return ops.layer_norm(input, self.normalized_shape, self.weight, self.bias, self.eps)

    def extra_repr(self):
        return (f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}, "
                f"bias={self.bias is not None}")


class Dropout(Module):
    def __init__(self, p=0.5, inplace=False):
        super().__init__()
        if not 0 <= p <= 1:
            raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")  # (torch's words)
        self.p, self.inplace = p, inplace

    def forward(self, input):
        return ops.dropout(input, self.p, training=self.training, inplace=self.inplace)

    def extra_repr(self):
        return f"p={self.p}, inplace={self.inplace}"


class Dropout1d(Dropout):
    """Channel-wise dropout (``F.dropout1d``): whole channels of [N, C, L] zeroed."""

    def forward(self, input):
        return F.dropout1d(input, self.p, self.training, self.inplace)


class Dropout2d(Dropout):
    def forward(self, input):
        return F.dropout2d(input, self.p, self.training, self.inplace)


class Dropout3d(Dropout):
    def forward(self, input):
        return F.dropout3d(input, self.p, self.training, self.inplace)


class EmbeddingBag(_LookupTable):
    """``F.embedding_bag`` over a table ``weight`` [num_embeddings, embedding_dim] (init N(0, 1), the
    ``padding_idx`` row zeroed): ``forward(input, offsets=None, per_sample_weights=None)``."""

    def __init__(self, num_embeddings, embedding_dim, max_norm=None, norm_type=2.0, scale_grad_by_freq=False,
                 mode="mean", sparse=False, _weight=None, include_last_offset=False, padding_idx=None, device=None,
                 dtype=None):
        super().__init__()
        _refuse("EmbeddingBag", sparse=(sparse, False))
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        self.max_norm, self.norm_type, self.scale_grad_by_freq = max_norm, norm_type, scale_grad_by_freq
        self.mode, self.sparse, self.include_last_offset = mode, sparse, include_last_offset
        self.padding_idx = _row_index("EmbeddingBag", padding_idx, num_embeddings)
        if _weight is not None:
            _check_table(_weight, num_embeddings, embedding_dim)
            self.weight = Parameter(_weight, device=device, dtype=dtype)
            return
        self.weight = _empty((num_embeddings, embedding_dim), dtype, device)
        self.reset_parameters()

    @classmethod
    def from_pretrained(cls, embeddings, freeze=True, max_norm=None, norm_type=2.0, scale_grad_by_freq=False,
                        mode="mean", sparse=False, include_last_offset=False, padding_idx=None):
        """An EmbeddingBag over the 2-D table ``embeddings`` (frozen unless ``freeze=False``), as torch:
        the table is used as it is, the ``padding_idx`` row is not zeroed."""
        rows, cols = _pretrained_size(embeddings)
        bag = cls(rows, cols, max_norm, norm_type, scale_grad_by_freq, mode, sparse, embeddings,
                  include_last_offset, padding_idx)
        bag.weight.requires_grad = not freeze
        return bag

    def forward(self, input, offsets=None, per_sample_weights=None):
        return F.embedding_bag(input, self.weight, offsets, self.max_norm, self.norm_type, self.scale_grad_by_freq,
                               self.mode, self.sparse, per_sample_weights, self.include_last_offset,
                               self.padding_idx)

    def extra_repr(self):
        text = f"{self.num_embeddings}, {self.embedding_dim}" + _lookup_options_repr(self)
        text += f", mode={self.mode!r}"
        if self.padding_idx is not None:
            text += f", padding_idx={self.padding_idx}"
        return text


class AlphaDropout(Dropout):
    def forward(self, input):
        return F.alpha_dropout(input, self.p, self.training, self.inplace)


class FeatureAlphaDropout(Dropout):
    def forward(self, input):
        return F.feature_alpha_dropout(input, self.p, self.training, self.inplace)


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
    """An activation module with torch's ``inplace`` argument: ``inplace=True`` writes the result into
    the input (``F.relu(x, inplace=True)``); torch's repr shows it only when it is set."""

    def __init__(self, inplace=False):
        super().__init__()
        self.inplace = inplace

    def extra_repr(self):
        return "inplace=True" if self.inplace else ""

    def _inplace_repr(self, text):
        """``text`` with torch's ``, inplace=True`` suffix when it is set."""
        return text + (", inplace=True" if self.inplace else "")


class SiLU(_Activation):
    def forward(self, input):
        return F.silu(input, self.inplace)


class ReLU(_Activation):
    def forward(self, input):
        return F.relu(input, self.inplace)


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

    def extra_repr(self):
        return f"dim={self.dim}"


class Flatten(Module):
    """``input.flatten(start_dim, end_dim)``; the defaults keep the batch dimension, as torch's."""

    def __init__(self, start_dim=1, end_dim=-1):
        super().__init__()
        self.start_dim, self.end_dim = start_dim, end_dim

    def forward(self, input):
        return ops.flatten(input, self.start_dim, self.end_dim)

    def extra_repr(self):
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"


# ---- losses (``torch.nn``'s loss modules: the functional loss with the options stored) ------------
class _Loss(Module):
    def __init__(self, size_average=None, reduce=None, reduction="mean"):
        super().__init__()
        self.reduction = legacy_reduction(size_average, reduce, reduction)


class CTCLoss(_Loss):
    """``F.ctc_loss`` as a module: ``forward(log_probs, targets, input_lengths, target_lengths)``."""

    def __init__(self, blank=0, reduction="mean", zero_infinity=False):
        super().__init__(reduction=reduction)
        self.blank, self.zero_infinity = blank, zero_infinity

    def forward(self, log_probs, targets, input_lengths, target_lengths):
        return F.ctc_loss(log_probs, targets, input_lengths, target_lengths, self.blank, self.reduction,
                          self.zero_infinity)


class _WeightedLoss(_Loss):
    """A loss with a per-class ``weight``: a buffer (in ``state_dict``, moved by ``to()``), as torch."""

    def __init__(self, weight=None, size_average=None, reduce=None, reduction="mean"):
        super().__init__(size_average, reduce, reduction)
        self.register_buffer("weight", weight)


class LinearCrossEntropyLoss(_WeightedLoss):
    """torch's ``nn.LinearCrossEntropyLoss``: an output projection and the cross entropy of its logits in
    one module (``F.linear_cross_entropy``); the projection is ``self.linear``, a Linear(in_features,
    num_classes * prod(out_features)), initialised as torch's."""

    def __init__(self, in_features, num_classes, *, out_features=(), bias=False, device=None, dtype=None,
                 reduction="mean", weight=None, ignore_index=None, label_smoothing=0.0, options=None):
        if weight is not None and tuple(weight.shape) != (num_classes,):
            raise RuntimeError(f"expected weight shape to be {(num_classes,)}, got {tuple(weight.shape)}")
        if label_smoothing < 0 or label_smoothing > 1.0:
            raise RuntimeError(f"expected label_smoothing to be in range [0, 1], got {label_smoothing}")
        super().__init__(weight=weight, reduction=reduction)
        self.num_classes, self.out_features = num_classes, out_features
        self.ignore_index, self.label_smoothing = ignore_index, label_smoothing
        self.linear = Linear(in_features, math.prod(out_features, start=num_classes), bias=bias, device=device,
                             dtype=dtype)
        self.options = options

    def forward(self, input, target):
        shape = (self.num_classes, *self.out_features)
        bias = None if self.linear.bias is None else self.linear.bias.reshape(shape)
        return F.linear_cross_entropy(input, self.linear.weight.reshape(*shape, self.linear.in_features), target,
                                      linear_bias=bias, weight=self.weight, reduction=self.reduction,
                                      ignore_index=self.ignore_index, label_smoothing=self.label_smoothing,
                                      options=self.options)

    def extra_repr(self):
        return (f"in_features={self.linear.in_features}, num_classes={self.num_classes}, "
                f"out_features={self.out_features}, bias={self.linear.bias is not None}, "
                f"reduction={self.reduction}, ignore_index={self.ignore_index}, "
                f"label_smoothing={self.label_smoothing}, options={self.options}")


class _ASMoutput(NamedTuple):
    """What ``AdaptiveLogSoftmaxWithLoss`` returns (torch's namedtuple): each target's log-probability
    and the mean negative of them."""
    output: object
    loss: object


class AdaptiveLogSoftmaxWithLoss(Module):
    """torch's ``nn.AdaptiveLogSoftmaxWithLoss`` (Grave et al. 2016, "Efficient softmax approximation for
    GPUs"): the frequent classes (below ``cutoffs[0]``) and one entry per rarer cluster share the
    ``head`` softmax; each cluster has its own smaller projection (``tail``, its width divided by
    ``div_value`` per cluster). Modules, parameters and their init draws in torch's order."""

    def __init__(self, in_features, n_classes, cutoffs, div_value=4.0, head_bias=False, device=None, dtype=None):
        super().__init__()
        cutoffs = list(cutoffs)
        if len(cutoffs) == 0:
            raise ValueError("cutoffs should be a sequence of length larger than 0")
        if (cutoffs != sorted(cutoffs) or min(cutoffs) <= 0 or max(cutoffs) > n_classes - 1
                or len(set(cutoffs)) != len(cutoffs) or any(int(c) != c for c in cutoffs)):
            raise ValueError("cutoffs should be a sequence of unique, positive integers sorted in an increasing "
                             "order, where each value is between 1 and n_classes-1")
        self.in_features, self.n_classes = in_features, n_classes
        self.cutoffs, self.div_value, self.head_bias = cutoffs + [n_classes], div_value, head_bias
        self.shortlist_size, self.n_clusters = self.cutoffs[0], len(self.cutoffs) - 1
        self.head_size = self.shortlist_size + self.n_clusters
        self.head = Linear(in_features, self.head_size, bias=head_bias, device=device, dtype=dtype)
        self.tail = ModuleList()
        for i in range(self.n_clusters):
            hidden = int(in_features // (div_value ** (i + 1)))
            width = self.cutoffs[i + 1] - self.cutoffs[i]
            self.tail.append(Sequential(Linear(in_features, hidden, bias=False, device=device, dtype=dtype),
                                        Linear(hidden, width, bias=False, device=device, dtype=dtype)))

    def reset_parameters(self):
        self.head.reset_parameters()
        for to_hidden, to_output in self.tail:
            to_hidden.reset_parameters()
            to_output.reset_parameters()

    def forward(self, input_, target_):
        if target_.ndim == 1:
            if input_.shape[0] != target_.shape[0]:
                raise RuntimeError("Input and target should have the same size in the batch dimension.")
            if input_.ndim != 2:
                raise RuntimeError(f"1D target tensor expects 2D input tensors, but found inputs with size "
                                   f"{input_.shape}")
        elif target_.ndim == 0:
            if input_.ndim != 1:
                raise RuntimeError(f"0D target tensor expects 1D input tensors, but found inputs with size "
                                   f"{input_.shape}")
        else:
            raise RuntimeError("0D or 1D target tensor expected, multi-target not supported")
        batched = target_.ndim > 0
        input, target = (input_, target_) if batched else (input_.unsqueeze(0), target_.unsqueeze(0))
        rows_used, batch = 0, target.shape[0]
        output = input.new_zeros(batch)
        gather_at = target.new_zeros(batch)  # each row's column of the head: its class or its cluster's entry
        bounds = [0] + self.cutoffs
        for i in range(len(bounds) - 1):
            mask = (target >= bounds[i]) & (target < bounds[i + 1])
            rows = mask.nonzero().reshape(-1)
            if rows.numel() == 0:
                continue
            if i == 0:
                gather_at = gather_at.index_copy(0, rows, target[mask])
            else:
                cluster_logprob = F.log_softmax(self.tail[i - 1](input.index_select(0, rows)), dim=1)
                gather_at = gather_at.index_fill(0, rows, self.shortlist_size + i - 1)
                local = cluster_logprob.gather(1, (target[mask] - bounds[i]).unsqueeze(1))
                output = output.index_copy(0, rows, local.squeeze(1))
            rows_used += rows.numel()
        if rows_used != batch:
            raise RuntimeError(f"Target values should be in [0, {self.n_classes - 1}], but values in range "
                               f"[{target.min().item()}, {target.max().item()}] were found. ")
        head_logprob = F.log_softmax(self.head(input), dim=1)
        output = output + head_logprob.gather(1, gather_at.unsqueeze(1)).squeeze(1)
        loss = (-output).mean()
        return _ASMoutput(output if batched else output.squeeze(0), loss)

    def _get_full_log_prob(self, input, head_output):
        """The log-probabilities of all ``n_classes``, from the head's output."""
        head_logprob = F.log_softmax(head_output, dim=1)
        parts = [head_logprob[:, :self.shortlist_size]]
        for i in range(self.n_clusters):
            cluster_logprob = F.log_softmax(self.tail[i](input), dim=1)
            parts.append(cluster_logprob + head_logprob[:, self.shortlist_size + i].unsqueeze(1))
        return ops.cat(parts, 1)

    def log_prob(self, input):
        return self._get_full_log_prob(input, self.head(input))

    def predict(self, input):
        head_output = self.head(input)
        output = ops.argmax(head_output, dim=1)
        outside = output >= self.shortlist_size
        if not outside.any():
            return output
        if outside.all():
            return ops.argmax(self._get_full_log_prob(input, head_output), dim=1)
        output[outside] = ops.argmax(self._get_full_log_prob(input[outside], head_output[outside]), dim=1)
        return output


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


class NLLLoss2d(NLLLoss):
    """torch's deprecated name for ``NLLLoss`` over images (its FutureWarning included)."""

    def __init__(self, weight=None, size_average=None, ignore_index=-100, reduce=None, reduction="mean"):
        warnings.warn("`NLLLoss2d` has been deprecated. Please use `NLLLoss` instead as a drop-in replacement and "
                      "see https://pytorch.org/docs/main/nn.html#torch.nn.NLLLoss for more details.",
                      FutureWarning, stacklevel=2)
        super().__init__(weight, size_average, ignore_index, reduce, reduction)


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


# ---- more activations and losses, with torch's constructor arguments --------------------------------
class Softplus(Module):
    def __init__(self, beta=1.0, threshold=20.0):
        super().__init__()
        self.beta, self.threshold = beta, threshold

    def forward(self, input):
        return F.softplus(input, self.beta, self.threshold)

    def extra_repr(self):
        return f"beta={self.beta}, threshold={self.threshold}"


class LeakyReLU(_Activation):
    def __init__(self, negative_slope=0.01, inplace=False):
        super().__init__(inplace)
        self.negative_slope = negative_slope

    def forward(self, input):
        return F.leaky_relu(input, self.negative_slope, self.inplace)

    def extra_repr(self):
        return self._inplace_repr(f"negative_slope={self.negative_slope}")


class RReLU(_Activation):
    """Randomized leaky ReLU (``F.rrelu``): random slopes below 0 in training, their mean in eval."""

    def __init__(self, lower=1.0 / 8, upper=1.0 / 3, inplace=False):
        super().__init__(inplace)
        self.lower, self.upper = lower, upper

    def forward(self, input):
        return F.rrelu(input, self.lower, self.upper, self.training, self.inplace)

    def extra_repr(self):
        return self._inplace_repr(f"lower={self.lower}, upper={self.upper}")


class Threshold(_Activation):
    def __init__(self, threshold, value, inplace=False):
        super().__init__(inplace)
        self.threshold, self.value = threshold, value

    def forward(self, input):
        return F.threshold(input, self.threshold, self.value, self.inplace)

    def extra_repr(self):
        return self._inplace_repr(f"threshold={self.threshold}, value={self.value}")


class Hardshrink(Module):
    def __init__(self, lambd=0.5):
        super().__init__()
        self.lambd = lambd

    def forward(self, input):
        return F.hardshrink(input, self.lambd)

    def extra_repr(self):
        return f"{self.lambd}"


class Softshrink(Hardshrink):
    def forward(self, input):
        return F.softshrink(input, self.lambd)


class Tanhshrink(Module):
    def forward(self, input):
        return F.tanhshrink(input)


class PReLU(Module):
    """``x`` where positive, ``weight * x`` elsewhere, the slope learned: one (``num_parameters=1``)
    or one per channel, starting at ``init``."""

    def __init__(self, num_parameters=1, init=0.25, device=None, dtype=None):
        super().__init__()
        self.num_parameters, self.init = num_parameters, init
        self.weight = _empty((num_parameters,), dtype, device)  # (torch's error for a negative count)
        self.reset_parameters()

    def reset_parameters(self):
        init.constant_(self.weight, self.init)

    def forward(self, input):
        return F.prelu(input, self.weight)

    def extra_repr(self):
        return f"num_parameters={self.num_parameters}"


class CosineSimilarity(Module):
    def __init__(self, dim=1, eps=1e-08):
        super().__init__()
        self.dim, self.eps = dim, eps

    def forward(self, x1, x2):
        return F.cosine_similarity(x1, x2, self.dim, self.eps)


class SmoothL1Loss(_Loss):
    def __init__(self, size_average=None, reduce=None, reduction="mean", beta=1.0):
        super().__init__(size_average, reduce, reduction)
        self.beta = beta

    def forward(self, input, target):
        return F.smooth_l1_loss(input, target, reduction=self.reduction, beta=self.beta)


class HuberLoss(_Loss):
    def __init__(self, reduction="mean", delta=1.0):
        if not isinstance(delta, (float, int)):  # (torch's check: a complex or Tensor delta is refused here)
            raise TypeError(f"delta must be a float or int, got: {type(delta)}")
        super().__init__(reduction=reduction)
        self.delta = delta

    def forward(self, input, target):
        return F.huber_loss(input, target, reduction=self.reduction, delta=self.delta)


class KLDivLoss(_Loss):
    """``reduction='batchmean'`` is the KL divergence per sample (torch's advice); 'mean' warns."""

    def __init__(self, size_average=None, reduce=None, reduction="mean", log_target=False):
        super().__init__(size_average, reduce, reduction)
        self.log_target = log_target

    def forward(self, input, target):
        return F.kl_div(input, target, reduction=self.reduction, log_target=self.log_target)


# ---- multi-head attention -----------------------------------------------------------------------------
class NonDynamicallyQuantizableLinear(Linear):
    """A Linear (torch's class for ``MultiheadAttention.out_proj``, which its quantization skips; so it
    prints under this name)."""


class MultiheadAttention(Module):
    """``torch.nn.MultiheadAttention``: ``softmax(q k^T / sqrt(d) + mask) v`` per head, between an
    input projection and ``out_proj``.

    Parameters as torch's, so a torch ``state_dict`` loads unchanged: ``in_proj_weight``
    ``[3 E, E]`` holds the query, key and value projections stacked in that order (and
    ``in_proj_bias`` ``[3 E]``), then ``out_proj.weight`` / ``out_proj.bias``; with keys or values
    of another width (``kdim``/``vdim``) the three are ``q_proj_weight`` ``[E, E]``,
    ``k_proj_weight`` ``[E, kdim]`` and ``v_proj_weight`` ``[E, vdim]`` instead. Inputs are
    ``[L, N, E]`` (``batch_first=True``: ``[N, L, E]``) or unbatched ``[L, E]``. Masks follow
    torch's convention, which is the *opposite* of ``scaled_dot_product_attention``'s: a boolean
    ``attn_mask`` ``[L, S]`` or ``[N * H, L, S]`` and ``key_padding_mask`` ``[N, S]`` mark with
    True the keys that may NOT be attended to; float masks are added to the scores.
    ``forward`` returns ``(output, weights)``: the attention weights averaged over the heads
    (``average_attn_weights=False``: per head), or None when ``need_weights=False``.
    """

    def __init__(self, embed_dim, num_heads, dropout=0.0, bias=True, add_bias_kv=False,
                 add_zero_attn=False, kdim=None, vdim=None, batch_first=False, device=None, dtype=None):
        super().__init__()
        if embed_dim <= 0 or num_heads <= 0:  # (torch's check, before the divisibility one)
            raise ValueError(f"embed_dim and num_heads must be greater than 0, got embed_dim={embed_dim} and "
                             f"num_heads={num_heads} instead")
        if embed_dim % num_heads:
            raise AssertionError("embed_dim must be divisible by num_heads")
        self.embed_dim = embed_dim
        self.kdim = embed_dim if kdim is None else kdim
        self.vdim = embed_dim if vdim is None else vdim
        self._qkv_same_embed_dim = self.kdim == embed_dim and self.vdim == embed_dim
        self.num_heads, self.head_dim = num_heads, embed_dim // num_heads
        self.dropout, self.batch_first = dropout, batch_first
        if self._qkv_same_embed_dim:
            self.in_proj_weight = _empty((3 * embed_dim, embed_dim), dtype, device)
            for name in ("q_proj_weight", "k_proj_weight", "v_proj_weight"):
                self.register_parameter(name, None)
        else:
            self.q_proj_weight = _empty((embed_dim, embed_dim), dtype, device)
            self.k_proj_weight = _empty((embed_dim, self.kdim), dtype, device)
            self.v_proj_weight = _empty((embed_dim, self.vdim), dtype, device)
            self.register_parameter("in_proj_weight", None)
        self.register_parameter("in_proj_bias", _empty((3 * embed_dim,), dtype, device) if bias else None)
        self.out_proj = NonDynamicallyQuantizableLinear(embed_dim, embed_dim, bias=bias, device=device, dtype=dtype)
        # add_bias_kv: one learned key and value appended to every sequence; add_zero_attn: a zero one
        for name in ("bias_k", "bias_v"):
            self.register_parameter(name, _empty((1, 1, embed_dim), dtype, device) if add_bias_kv else None)
        self.add_zero_attn = add_zero_attn
        self._reset_parameters()

    def _reset_parameters(self):
        """torch's: Xavier-uniform input projection(s), zero biases (``out_proj.weight`` keeps
        Linear's)."""
        if self._qkv_same_embed_dim:
            init.xavier_uniform_(self.in_proj_weight)
        else:
            for weight in (self.q_proj_weight, self.k_proj_weight, self.v_proj_weight):
                init.xavier_uniform_(weight)
        if self.in_proj_bias is not None:
            init.constant_(self.in_proj_bias, 0.0)
            init.constant_(self.out_proj.bias, 0.0)
        if self.bias_k is not None:
            init.xavier_normal_(self.bias_k)
            init.xavier_normal_(self.bias_v)

    def forward(self, query, key, value, key_padding_mask=None, need_weights=True, attn_mask=None,
                average_attn_weights=True, is_causal=False):
        """``F.multi_head_attention_forward`` with this module's weights (read at the call: LoRA may
        stand in for ``in_proj_weight`` and ``out_proj``)."""
        native = self._torch_takes_fast_path(query, key, value, attn_mask, key_padding_mask)
        return self._attend(query, key, value, key_padding_mask, need_weights, attn_mask, average_attn_weights,
                            is_causal, native)

    def _attend(self, query, key, value, key_padding_mask, need_weights, attn_mask, average_attn_weights, is_causal,
                native):
        """The computation, ``native``: in the steps of torch's inference kernel (the module's fast path, or
        TransformerEncoderLayer's fused one, which calls the kernel whatever the masks' dtype)."""
        if self._qkv_same_embed_dim:
            weights = self.in_proj_weight
        else:
            weights = (self.q_proj_weight, self.k_proj_weight, self.v_proj_weight)
        return F._multi_head_attention(
            query, key, value, self.embed_dim, self.num_heads, weights, self.in_proj_bias, self.bias_k, self.bias_v,
            self.add_zero_attn, self.dropout, self.out_proj, self.training, key_padding_mask, need_weights,
            attn_mask, average_attn_weights, is_causal, batch_first=self.batch_first,
            separate_weights=not self._qkv_same_embed_dim, native=native)

    def _torch_takes_fast_path(self, query, key, value, attn_mask, key_padding_mask):
        """torch's conditions for its inference kernel (``_native_multi_head_attention``), whose steps differ from
        the module's others: self-attention, batch first, eval mode, nothing to differentiate, bool masks."""
        from ..tensor import is_grad_enabled
        out_proj = self.out_proj  # (a LoRA layer's stand-in for one call is a function: its weights in a closure)
        tensors = (query, self.in_proj_weight, self.in_proj_bias, getattr(out_proj, "weight", None),
                   getattr(out_proj, "bias", None))
        return (not any(m is not None and is_floating(m.dtype) for m in (attn_mask, key_padding_mask))
                and query.ndim == 3 and query is key and key is value and self.batch_first and not self.training
                and self.in_proj_weight is not None and self.in_proj_bias is not None
                and query.dtype == self.in_proj_weight.dtype == self.in_proj_bias.dtype and self.num_heads % 2 == 0
                and self.bias_k is None and not self.add_zero_attn and not (_amp.used and _amp.state.active)
                and not (is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)))


# ---- the rest of torch's common activation modules ----------------------------------------------------
class ELU(_Activation):
    def __init__(self, alpha=1.0, inplace=False):
        super().__init__(inplace)
        self.alpha = alpha

    def forward(self, input):
        return F.elu(input, self.alpha, self.inplace)

    def extra_repr(self):
        return self._inplace_repr(f"alpha={self.alpha}")


class CELU(ELU):
    def forward(self, input):
        return F.celu(input, self.alpha, self.inplace)


class SELU(_Activation):
    def forward(self, input):
        return F.selu(input, self.inplace)


class Hardtanh(_Activation):
    """``min_value``/``max_value``: torch's deprecated spellings of ``min_val``/``max_val``."""

    def __init__(self, min_val=-1.0, max_val=1.0, inplace=False, min_value=None, max_value=None):
        super().__init__(inplace)
        if min_value is not None:
            warnings.warn("keyword argument `min_value` is deprecated and rename to `min_val`",
                          FutureWarning, stacklevel=2)
            min_val = min_value
        if max_value is not None:
            warnings.warn("keyword argument `max_value` is deprecated and rename to `max_val`",
                          FutureWarning, stacklevel=2)
            max_val = max_value
        if min_val >= max_val:  # torch's assertion
            raise AssertionError(f"Hardtanh: min_val ({min_val}) must be less than max_val ({max_val})")
        self.min_val, self.max_val = min_val, max_val

    def forward(self, input):
        return F.hardtanh(input, self.min_val, self.max_val, self.inplace)

    def extra_repr(self):
        return self._inplace_repr(f"min_val={self.min_val}, max_val={self.max_val}")


class ReLU6(Hardtanh):
    def __init__(self, inplace=False):
        super().__init__(0.0, 6.0, inplace)

    def extra_repr(self):
        return "inplace=True" if self.inplace else ""


class Hardswish(_Activation):
    def forward(self, input):
        return F.hardswish(input, self.inplace)

    def extra_repr(self):
        return ""  # torch's repr leaves inplace out (as Hardsigmoid's)


class Hardsigmoid(_Activation):
    def forward(self, input):
        return F.hardsigmoid(input, self.inplace)

    def extra_repr(self):
        return ""  # torch's repr leaves inplace out (as Hardswish's)


class Mish(_Activation):
    def forward(self, input):
        return F.mish(input, self.inplace)


class LogSigmoid(Module):
    def forward(self, input):
        return F.logsigmoid(input)


class Softsign(Module):
    def forward(self, input):
        return F.softsign(input)


class GLU(Module):
    def __init__(self, dim=-1):
        super().__init__()
        self.dim = dim

    def forward(self, input):
        return F.glu(input, self.dim)

    def extra_repr(self):
        return f"dim={self.dim}"


class Softmin(Module):
    def __init__(self, dim=None):
        super().__init__()
        self.dim = dim

    def forward(self, input):
        return F.softmin(input, self.dim)

    def extra_repr(self):
        return f"dim={self.dim}"


class LogSoftmax(Module):
    def __init__(self, dim=None):
        super().__init__()
        self.dim = dim  # None: torch's deprecated implicit choice, with its warning

    def forward(self, input):
        return F.log_softmax(input, self.dim)

    def extra_repr(self):
        return f"dim={self.dim}"


# ---- distances, margin losses, Unflatten ---------------------------------------------------------------
class PairwiseDistance(Module):
    def __init__(self, p=2.0, eps=1e-06, keepdim=False):
        super().__init__()
        self.norm, self.eps, self.keepdim = p, eps, keepdim  # (torch stores p as `norm`)

    def forward(self, x1, x2):
        return F.pairwise_distance(x1, x2, self.norm, self.eps, self.keepdim)


class MarginRankingLoss(_Loss):
    def __init__(self, margin=0.0, size_average=None, reduce=None, reduction="mean"):
        super().__init__(size_average, reduce, reduction)
        self.margin = margin

    def forward(self, input1, input2, target):
        return F.margin_ranking_loss(input1, input2, target, margin=self.margin, reduction=self.reduction)


class TripletMarginLoss(_Loss):
    def __init__(self, margin=1.0, p=2.0, eps=1e-06, swap=False, size_average=None, reduce=None,
                 reduction="mean"):
        super().__init__(size_average, reduce, reduction)
        if margin <= 0:
            raise ValueError(f"TripletMarginLoss: expected margin to be greater than 0, got {margin} instead")
        self.margin, self.p, self.eps, self.swap = margin, p, eps, swap

    def forward(self, anchor, positive, negative):
        return F.triplet_margin_loss(anchor, positive, negative, margin=self.margin, p=self.p, eps=self.eps,
                                     swap=self.swap, reduction=self.reduction)


class CosineEmbeddingLoss(_Loss):
    def __init__(self, margin=0.0, size_average=None, reduce=None, reduction="mean"):
        super().__init__(size_average, reduce, reduction)
        self.margin = margin

    def forward(self, input1, input2, target):
        return F.cosine_embedding_loss(input1, input2, target, margin=self.margin, reduction=self.reduction)


class SoftMarginLoss(_Loss):
    def forward(self, input, target):
        return F.soft_margin_loss(input, target, reduction=self.reduction)


class HingeEmbeddingLoss(_Loss):
    def __init__(self, margin=1.0, size_average=None, reduce=None, reduction="mean"):
        super().__init__(size_average, reduce, reduction)
        self.margin = margin

    def forward(self, input, target):
        return F.hinge_embedding_loss(input, target, margin=self.margin, reduction=self.reduction)


class PoissonNLLLoss(_Loss):
    def __init__(self, log_input=True, full=False, size_average=None, eps=1e-08, reduce=None, reduction="mean"):
        super().__init__(size_average, reduce, reduction)
        self.log_input, self.full, self.eps = log_input, full, eps

    def forward(self, log_input, target):
        return F.poisson_nll_loss(log_input, target, log_input=self.log_input, full=self.full, eps=self.eps,
                                  reduction=self.reduction)


class GaussianNLLLoss(_Loss):
    def __init__(self, *, full=False, eps=1e-06, reduction="mean"):
        super().__init__(None, None, reduction)
        self.full, self.eps = full, eps

    def forward(self, input, target, var):
        return F.gaussian_nll_loss(input, target, var, full=self.full, eps=self.eps, reduction=self.reduction)


class MultiLabelSoftMarginLoss(_WeightedLoss):
    def forward(self, input, target):
        return F.multilabel_soft_margin_loss(input, target, weight=self.weight, reduction=self.reduction)


class MultiMarginLoss(_WeightedLoss):
    def __init__(self, p=1, margin=1.0, weight=None, size_average=None, reduce=None, reduction="mean"):
        super().__init__(weight, size_average, reduce, reduction)
        if p not in (1, 2):
            raise ValueError("only p == 1 and p == 2 supported")
        if weight is not None and weight.ndim != 1:
            raise ValueError(f"MultiMarginLoss: expected weight to be None or 1D tensor, got {weight.ndim}D instead")
        self.p, self.margin = p, margin

    def forward(self, input, target):
        return F.multi_margin_loss(input, target, p=self.p, margin=self.margin, weight=self.weight,
                                   reduction=self.reduction)


class MultiLabelMarginLoss(_Loss):
    def forward(self, input, target):
        return F.multilabel_margin_loss(input, target, reduction=self.reduction)


class TripletMarginWithDistanceLoss(_Loss):
    def __init__(self, *, distance_function=None, margin=1.0, swap=False, reduction="mean"):
        super().__init__(None, None, reduction)
        if margin <= 0:
            raise ValueError(f"TripletMarginWithDistanceLoss: expected margin to be greater than 0, got {margin} "
                             f"instead")
        self.distance_function = distance_function if distance_function is not None else PairwiseDistance()
        self.margin, self.swap = margin, swap

    def forward(self, anchor, positive, negative):
        return F.triplet_margin_with_distance_loss(anchor, positive, negative,
                                                   distance_function=self.distance_function, margin=self.margin,
                                                   swap=self.swap, reduction=self.reduction)


class Unflatten(Module):
    """``input.unflatten(dim, unflattened_size)``: the inverse of ``Flatten``."""

    def __init__(self, dim, unflattened_size):
        super().__init__()
        self.dim, self.unflattened_size = dim, tuple(unflattened_size)

    def forward(self, input):
        return ops.unflatten(input, self.dim, self.unflattened_size)

    def extra_repr(self):
        return f"dim={self.dim}, unflattened_size={self.unflattened_size}"


# ---- batch and group normalisation --------------------------------------------------------------------
class _BatchNorm(Module):
    """torch's ``_BatchNorm``: per-channel ``weight``/``bias`` (``affine``; ``bias=False`` drops the
    bias) and, with ``track_running_stats``, the buffers ``running_mean``, ``running_var`` and
    ``num_batches_tracked`` under torch's names. Training normalises with the batch statistics
    and updates the running ones (``momentum=None``: their cumulative average); eval uses them."""

    _ranks = ()

    def __init__(self, num_features, eps=1e-05, momentum=0.1, affine=True, track_running_stats=True,
                 device=None, dtype=None, *, bias=True):
        super().__init__()
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.affine, self.track_running_stats = affine, track_running_stats
        self.register_parameter("weight", _empty((num_features,), dtype, device) if affine else None)
        self.register_parameter("bias", _empty((num_features,), dtype, device) if affine and bias else None)
        if track_running_stats:
            self.register_buffer("running_mean", _empty((num_features,), dtype, device).detach())
            self.register_buffer("running_var", _empty((num_features,), dtype, device).detach())
            self.register_buffer("num_batches_tracked", ops.tensor(0, device=device))
        else:
            for name in ("running_mean", "running_var", "num_batches_tracked"):
                self.register_buffer(name, None)
        self.reset_parameters()

    def reset_running_stats(self):
        if self.track_running_stats:
            self.running_mean.zero_()
            self.running_var.fill_(1)
            self.num_batches_tracked.zero_()

    def reset_parameters(self):
        self.reset_running_stats()
        if self.weight is not None:
            init.ones_(self.weight)
        if self.bias is not None:
            init.zeros_(self.bias)

    def forward(self, input):
        if input.ndim not in self._ranks:
            raise ValueError(f"expected {' or '.join(f'{r}D' for r in self._ranks)} input (got "
                             f"{input.ndim}D input)")
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:  # a cumulative moving average
                factor = 1.0 / float(self.num_batches_tracked.item())
        use_batch_stats = self.training or (self.running_mean is None and self.running_var is None)
        keep = not self.training or self.track_running_stats  # buffers updated only when tracked
        return F.batch_norm(input, self.running_mean if keep else None, self.running_var if keep else None,
                            self.weight, self.bias, use_batch_stats, factor, self.eps)

    def extra_repr(self):
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
                f"bias={self.bias is not None}, "
                f"track_running_stats={self.track_running_stats}")


class BatchNorm1d(_BatchNorm):
    """Over [N, C] or [N, C, L]."""
    _ranks = (2, 3)


class BatchNorm2d(_BatchNorm):
    """Over [N, C, H, W]."""
    _ranks = (4,)


class BatchNorm3d(_BatchNorm):
    """Over [N, C, D, H, W]."""
    _ranks = (5,)


class _InstanceNorm(_BatchNorm):
    """torch's ``InstanceNorm1d/2d``: each sample's channels normalised on their own; ``affine`` and
    ``track_running_stats`` off by default; an unbatched input is one sample."""

    def __init__(self, num_features, eps=1e-05, momentum=0.1, affine=False, track_running_stats=False,
                 device=None, dtype=None, *, bias=True):
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device, dtype, bias=bias)

    def forward(self, input):
        if input.ndim not in self._ranks:
            raise ValueError(f"expected {' or '.join(f'{r}D' for r in self._ranks)} input (got {input.ndim}D input)")
        feature_dim = input.ndim - self._ranks[0]  # 1 batched, 0 unbatched
        if input.shape[feature_dim] != self.num_features:
            if self.affine:
                raise ValueError(f"expected input's size at dim={feature_dim} to match num_features "
                                 f"({self.num_features}), but got: {input.shape[feature_dim]}.")
            warnings.warn(f"input's size at dim={feature_dim} does not match num_features. You can silence this "
                          f"warning by not passing in num_features, which is not used because affine=False",
                          stacklevel=2)
        if input.ndim == self._ranks[0]:  # unbatched
            return self._instance_norm(input.unsqueeze(0)).squeeze(0)
        return self._instance_norm(input)

    def _instance_norm(self, input):
        return F.instance_norm(input, self.running_mean, self.running_var, self.weight, self.bias,
                               self.training or not self.track_running_stats,
                               self.momentum if self.momentum is not None else 0.0, self.eps)


class InstanceNorm1d(_InstanceNorm):
    """Over [N, C, L] or [C, L]."""
    _ranks = (2, 3)


class InstanceNorm2d(_InstanceNorm):
    """Over [N, C, H, W] or [C, H, W]."""
    _ranks = (3, 4)


class InstanceNorm3d(_InstanceNorm):
    """Over [N, C, D, H, W] or [C, D, H, W]."""
    _ranks = (4, 5)


class GroupNorm(Module):
    def __init__(self, num_groups, num_channels, eps=1e-05, affine=True, device=None, dtype=None, *,
                 bias=True):
        super().__init__()
        if num_channels % num_groups:
            raise ValueError(f"num_channels ({num_channels}) must be divisible by num_groups ({num_groups})")
        self.num_groups, self.num_channels, self.eps, self.affine = num_groups, num_channels, eps, affine
        self.register_parameter("weight", _empty((num_channels,), dtype, device) if affine else None)
        self.register_parameter("bias", _empty((num_channels,), dtype, device) if affine and bias else None)
        self.reset_parameters()

    def reset_parameters(self):
        _reset_affine(self)

    def forward(self, input):
        return F.group_norm(input, self.num_groups, self.weight, self.bias, self.eps)

    def extra_repr(self):
        return (f"{self.num_groups}, {self.num_channels}, eps={self.eps}, affine={self.affine}, "
                f"bias={self.bias is not None}")


# ---- convolution and pooling --------------------------------------------------------------------------
class _ConvNd(Module):
    """torch's ``_ConvNd`` for 1-D, 2-D and 3-D: ``weight`` [out, in / groups, *kernel] and ``bias``
    [out], initialised as torch's (Kaiming-uniform with a = sqrt(5); bias U(-1/sqrt(fan_in), ...)).
    ``padding_mode`` other than 'zeros' pads with ``F.pad`` first, as torch does."""

    _rank = 2
    _transposed = False  # the transposed convolutions' weight is [in, out / groups, *kernel]

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1,
                 bias=True, padding_mode="zeros", device=None, dtype=None):
        super().__init__()
        if groups <= 0:
            raise ValueError("groups must be a positive integer")
        if in_channels % groups:
            raise ValueError("in_channels must be divisible by groups")
        if out_channels % groups:
            raise ValueError("out_channels must be divisible by groups")
        if padding_mode not in ("zeros", "reflect", "replicate", "circular"):
            raise ValueError(f"padding_mode must be one of ['zeros', 'reflect', 'replicate', 'circular'], "
                             f"but got padding_mode='{padding_mode}'")
        as_tuple = lambda v: (v,) * self._rank if isinstance(v, int) else tuple(v)  # noqa: E731
        if isinstance(padding, str):
            if padding not in ("same", "valid"):
                raise ValueError(f"Invalid padding string {padding!r}, should be one of {{'valid', 'same'}}")
            if padding == "same" and any(s != 1 for s in as_tuple(stride)):
                raise ValueError("padding='same' is not supported for strided convolutions")
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.kernel_size, self.stride, self.dilation = as_tuple(kernel_size), as_tuple(stride), as_tuple(dilation)
        self.padding = padding if isinstance(padding, str) else as_tuple(padding)
        self.padding_mode = padding_mode
        channels = (in_channels, out_channels // groups) if self._transposed else (out_channels, in_channels // groups)
        self.weight = _empty(channels + self.kernel_size, dtype, device)
        self.register_parameter("bias", _empty((out_channels,), dtype, device) if bias else None)
        self.reset_parameters()

    def reset_parameters(self):
        init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        fan_in = self.weight.shape[1] * math.prod(self.kernel_size)
        if self.bias is not None and fan_in != 0:  # (torch leaves the bias of an empty kernel undrawn)
            init.uniform_(self.bias, -1 / math.sqrt(fan_in), 1 / math.sqrt(fan_in))

    def _pad_amounts(self):
        """``F.pad`` amounts (last dimension first) for a non-zeros ``padding_mode``."""
        if self.padding == "valid":
            return (0, 0) * self._rank
        if self.padding == "same":
            amounts = []
            for k, d in reversed(list(zip(self.kernel_size, self.dilation))):
                total = d * (k - 1)
                amounts += [total // 2, total - total // 2]
            return tuple(amounts)
        return tuple(p for p in reversed(self.padding) for _ in range(2))

    def forward(self, input):
        conv = (F.conv1d, F.conv2d, F.conv3d)[self._rank - 1]
        if self.padding_mode == "zeros":
            return conv(input, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)
        padded = F.pad(input, self._pad_amounts(), mode=self.padding_mode)
        return conv(padded, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)

    def extra_repr(self):
        text = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}")
        if self.padding != (0,) * self._rank:
            text += f", padding={self.padding}"
        if self.dilation != (1,) * self._rank:
            text += f", dilation={self.dilation}"
        if getattr(self, "output_padding", (0,) * self._rank) != (0,) * self._rank:  # transposed only
            text += f", output_padding={self.output_padding}"
        if self.groups != 1:
            text += f", groups={self.groups}"
        if self.bias is None:
            text += ", bias=False"
        if self.padding_mode != "zeros":
            text += f", padding_mode={self.padding_mode}"
        return text


class Conv1d(_ConvNd):
    """Over [N, C, L] (or [C, L])."""
    _rank = 1


class Conv2d(_ConvNd):
    """Over [N, C, H, W] (or [C, H, W])."""
    _rank = 2


class Conv3d(_ConvNd):
    """Over [N, C, D, H, W] (or [C, D, H, W]): video and volumetric (medical) images."""
    _rank = 3


class _ConvTransposeNd(_ConvNd):
    """torch's ``ConvTranspose1d/2d``: ``weight`` [in, out / groups, *kernel] (the transposed layout),
    initialised as torch's; ``forward(input, output_size=None)`` picks the ``output_padding`` that
    gives ``output_size``, as torch does."""

    _transposed = True

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, output_padding=0, groups=1,
                 bias=True, dilation=1, padding_mode="zeros", device=None, dtype=None):
        if padding_mode != "zeros":
            raise ValueError(f'Only "zeros" padding mode is supported for {type(self).__name__}')
        if isinstance(padding, str):
            raise ValueError(f"{type(self).__name__}: padding={padding!r} is not supported (an int or a tuple)")
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
                         padding_mode, device, dtype)
        self.output_padding = (output_padding,) * self._rank if isinstance(output_padding, int) \
            else tuple(output_padding)

    def _output_padding(self, input, output_size):
        if output_size is None:
            return self.output_padding
        sizes = list(output_size)[-self._rank:] if len(output_size) > self._rank else list(output_size)
        if len(sizes) != self._rank:
            raise ValueError(f"ConvTranspose{self._rank}D: for {input.ndim}D input, output_size must have "
                             f"{self._rank} or {self._rank + 2} elements (got {len(output_size)})")
        spatial = input.shape[-self._rank:]
        smallest = [(n - 1) * s - 2 * p + d * (k - 1) + 1 for n, s, p, d, k in
                    zip(spatial, self.stride, self.padding, self.dilation, self.kernel_size)]
        largest = [m + s - 1 for m, s in zip(smallest, self.stride)]
        if any(not lo <= n <= hi for n, lo, hi in zip(sizes, smallest, largest)):
            raise ValueError(f"requested an output size of {sizes}, but valid sizes range from {smallest} to "
                             f"{largest} (for an input of {list(spatial)})")
        return tuple(n - m for n, m in zip(sizes, smallest))

    def forward(self, input, output_size=None):
        conv = (F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d)[self._rank - 1]
        output_padding = self._output_padding(input, output_size)
        if self._rank == 1:
            output_padding = output_padding[0]
        return conv(input, self.weight, self.bias, self.stride, self.padding, output_padding, self.groups,
                    self.dilation)


class ConvTranspose1d(_ConvTransposeNd):
    """Over [N, C, L] (or [C, L])."""
    _rank = 1


class ConvTranspose2d(_ConvTransposeNd):
    """Over [N, C, H, W] (or [C, H, W]): DCGAN's upsampling layer."""
    _rank = 2


class ConvTranspose3d(_ConvTransposeNd):
    """Over [N, C, D, H, W] (or [C, D, H, W])."""
    _rank = 3


class MaxPool2d(Module):
    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, return_indices=False, ceil_mode=False):
        super().__init__()
        self.kernel_size, self.stride = kernel_size, stride if stride is not None else kernel_size
        self.padding, self.dilation = padding, dilation
        self.return_indices, self.ceil_mode = return_indices, ceil_mode

    def _pool(self):
        return F.max_pool2d

    def forward(self, input):
        return self._pool()(input, self.kernel_size, self.stride, self.padding, self.dilation,
                            ceil_mode=self.ceil_mode, return_indices=self.return_indices)

    def extra_repr(self):
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
                f"dilation={self.dilation}, ceil_mode={self.ceil_mode}")


class MaxPool1d(MaxPool2d):
    def _pool(self):
        return F.max_pool1d


class MaxPool3d(MaxPool2d):
    def _pool(self):
        return F.max_pool3d


class FractionalMaxPool2d(Module):
    """``F.fractional_max_pool2d`` as a layer (torch's checks; ``_random_samples``, if given, a buffer)."""

    _rank = 2

    def __init__(self, kernel_size, output_size=None, output_ratio=None, return_indices=False, _random_samples=None):
        super().__init__()
        as_tuple = lambda v: (v,) * self._rank if np.isscalar(v) else tuple(v)  # noqa: E731
        self.kernel_size, self.return_indices = as_tuple(kernel_size), return_indices
        self.register_buffer("_random_samples", _random_samples)
        self.output_size = as_tuple(output_size) if output_size is not None else None
        self.output_ratio = as_tuple(output_ratio) if output_ratio is not None else None
        name = type(self).__name__
        if output_size is None and output_ratio is None:
            raise ValueError(f"{name} requires specifying either an output size, or a pooling ratio")
        if output_size is not None and output_ratio is not None:
            raise ValueError("only one of output_size and output_ratio may be specified")
        if self.output_ratio is not None and not all(0 < r < 1 for r in self.output_ratio):
            raise ValueError(f"output_ratio must be between 0 and 1 (got {output_ratio})")

    def forward(self, input):
        pool = F.fractional_max_pool2d if self._rank == 2 else F.fractional_max_pool3d
        return pool(input, self.kernel_size, self.output_size, self.output_ratio, self.return_indices,
                    _random_samples=self._random_samples)


class FractionalMaxPool3d(FractionalMaxPool2d):
    _rank = 3


class AvgPool2d(Module):
    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
                 divisor_override=None):
        super().__init__()
        self.kernel_size, self.stride = kernel_size, stride if stride is not None else kernel_size
        self.padding, self.ceil_mode = padding, ceil_mode
        self.count_include_pad, self.divisor_override = count_include_pad, divisor_override

    def forward(self, input):
        return F.avg_pool2d(input, self.kernel_size, self.stride, self.padding, self.ceil_mode,
                            self.count_include_pad, self.divisor_override)

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class AvgPool3d(AvgPool2d):
    def forward(self, input):
        return F.avg_pool3d(input, self.kernel_size, self.stride, self.padding, self.ceil_mode,
                            self.count_include_pad, self.divisor_override)


class AvgPool1d(Module):
    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True):
        super().__init__()
        single = lambda v: (v,) if isinstance(v, int) else tuple(v)  # noqa: E731  (torch stores 1-tuples)
        self.kernel_size = single(kernel_size)
        self.stride = single(stride if stride is not None else kernel_size)
        self.padding, self.ceil_mode, self.count_include_pad = single(padding), ceil_mode, count_include_pad

    def forward(self, input):
        return F.avg_pool1d(input, self.kernel_size, self.stride, self.padding, self.ceil_mode,
                            self.count_include_pad)

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class _AdaptiveAvgPoolNd(Module):
    """torch's base of AdaptiveAvgPool1d/2d: the output size and its repr; each subclass pools."""

    def __init__(self, output_size):
        super().__init__()
        self.output_size = output_size

    def extra_repr(self):
        return f"output_size={self.output_size}"


class AdaptiveAvgPool2d(_AdaptiveAvgPoolNd):
    def forward(self, input):
        return F.adaptive_avg_pool2d(input, self.output_size)


class AdaptiveAvgPool3d(_AdaptiveAvgPoolNd):
    def forward(self, input):
        return F.adaptive_avg_pool3d(input, self.output_size)


class Upsample(Module):
    """``F.interpolate`` as a layer (torch's ``nn.Upsample``): ``size`` or ``scale_factor`` (kept as
    floats, as torch), ``mode`` and ``align_corners``."""

    def __init__(self, size=None, scale_factor=None, mode="nearest", align_corners=None,
                 recompute_scale_factor=None):
        super().__init__()
        self.name = type(self).__name__
        self.size, self.mode = size, mode
        self.scale_factor = tuple(float(f) for f in scale_factor) if isinstance(scale_factor, (tuple, list)) \
            else float(scale_factor) if scale_factor else None
        self.align_corners, self.recompute_scale_factor = align_corners, recompute_scale_factor

    def forward(self, input):
        return F.interpolate(input, self.size, self.scale_factor, self.mode, self.align_corners,
                             recompute_scale_factor=self.recompute_scale_factor)

    def extra_repr(self):
        what = f"scale_factor={self.scale_factor!r}" if self.scale_factor is not None else f"size={self.size!r}"
        return f"{what}, mode={self.mode!r}"


class UpsamplingNearest2d(Upsample):
    """torch's ``nn.UpsamplingNearest2d``: ``Upsample(mode='nearest')``."""

    def __init__(self, size=None, scale_factor=None):
        super().__init__(size, scale_factor, mode="nearest")


class UpsamplingBilinear2d(Upsample):
    """torch's ``nn.UpsamplingBilinear2d``: ``Upsample(mode='bilinear', align_corners=True)`` -- the
    corners aligned, unlike ``Upsample``'s bilinear default."""

    def __init__(self, size=None, scale_factor=None):
        super().__init__(size, scale_factor, mode="bilinear", align_corners=True)


class AdaptiveMaxPool2d(Module):
    def __init__(self, output_size, return_indices=False):
        super().__init__()
        self.output_size, self.return_indices = output_size, return_indices

    def forward(self, input):
        return F.adaptive_max_pool2d(input, self.output_size, self.return_indices)

    def extra_repr(self):
        return f"output_size={self.output_size}"


class AdaptiveMaxPool1d(AdaptiveMaxPool2d):
    def forward(self, input):
        return F.adaptive_max_pool1d(input, self.output_size, self.return_indices)


class AdaptiveMaxPool3d(AdaptiveMaxPool2d):
    def forward(self, input):
        return F.adaptive_max_pool3d(input, self.output_size, self.return_indices)


class Unfold(Module):
    """``F.unfold`` as a layer: every sliding block of [N, C, H, W] as a column of [N, C kh kw, L]."""

    def __init__(self, kernel_size, dilation=1, padding=0, stride=1):
        super().__init__()
        self.kernel_size, self.dilation, self.padding, self.stride = kernel_size, dilation, padding, stride

    def forward(self, input):
        return F.unfold(input, self.kernel_size, self.dilation, self.padding, self.stride)

    def extra_repr(self):
        return (f"kernel_size={self.kernel_size}, dilation={self.dilation}, padding={self.padding}, "
                f"stride={self.stride}")


class Fold(Unfold):
    """``F.fold`` as a layer: columns [N, C kh kw, L] summed back into [N, C, *output_size]."""

    def __init__(self, output_size, kernel_size, dilation=1, padding=0, stride=1):
        super().__init__(kernel_size, dilation, padding, stride)
        self.output_size = output_size

    def forward(self, input):
        return F.fold(input, self.output_size, self.kernel_size, self.dilation, self.padding, self.stride)

    def extra_repr(self):
        return f"output_size={self.output_size}, " + super().extra_repr()


class MaxUnpool2d(Module):
    """``F.max_unpool2d`` as a layer: ``forward(input, indices, output_size=None)``."""

    _rank = 2

    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__()
        as_tuple = lambda v: (v,) * self._rank if isinstance(v, int) else tuple(v)  # noqa: E731
        self.kernel_size = as_tuple(kernel_size)
        self.stride = as_tuple(stride if stride is not None else kernel_size)
        self.padding = as_tuple(padding)

    def forward(self, input, indices, output_size=None):
        unpool = (F.max_unpool1d, F.max_unpool2d, F.max_unpool3d)[self._rank - 1]
        return unpool(input, indices, self.kernel_size, self.stride, self.padding, output_size)

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class MaxUnpool1d(MaxUnpool2d):
    _rank = 1


class MaxUnpool3d(MaxUnpool2d):
    _rank = 3


class Bilinear(Module):
    """``y = x1^T A x2 + b`` with ``weight`` [out, in1, in2] and ``bias`` [out], both
    U(-1/sqrt(in1), 1/sqrt(in1)) as torch's."""

    def __init__(self, in1_features, in2_features, out_features, bias=True, device=None, dtype=None):
        super().__init__()
        self.in1_features, self.in2_features, self.out_features = in1_features, in2_features, out_features
        self.weight = _empty((out_features, in1_features, in2_features), dtype, device)
        self.register_parameter("bias", _empty((out_features,), dtype, device) if bias else None)
        self.reset_parameters()

    def reset_parameters(self):
        bound = 1 / math.sqrt(self.weight.shape[1])
        init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            init.uniform_(self.bias, -bound, bound)

    def forward(self, input1, input2):
        return F.bilinear(input1, input2, self.weight, self.bias)

    def extra_repr(self):
        return (f"in1_features={self.in1_features}, in2_features={self.in2_features}, "
                f"out_features={self.out_features}, bias={self.bias is not None}")


class LPPool1d(Module):
    def __init__(self, norm_type, kernel_size, stride=None, ceil_mode=False):
        super().__init__()
        self.norm_type, self.kernel_size, self.stride, self.ceil_mode = norm_type, kernel_size, stride, ceil_mode

    def _pool(self):
        return F.lp_pool1d

    def forward(self, input):
        return self._pool()(input, float(self.norm_type), self.kernel_size, self.stride, self.ceil_mode)

    def extra_repr(self):
        return (f"norm_type={self.norm_type}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"ceil_mode={self.ceil_mode}")


class LPPool2d(LPPool1d):
    def _pool(self):
        return F.lp_pool2d


class LPPool3d(LPPool1d):
    def _pool(self):
        return F.lp_pool3d


class LocalResponseNorm(Module):
    def __init__(self, size, alpha=0.0001, beta=0.75, k=1.0):
        super().__init__()
        self.size, self.alpha, self.beta, self.k = size, alpha, beta, k

    def forward(self, input):
        return F.local_response_norm(input, self.size, self.alpha, self.beta, self.k)

    def extra_repr(self):
        return f"{self.size}, alpha={self.alpha}, beta={self.beta}, k={self.k}"


class PixelShuffle(Module):
    def __init__(self, upscale_factor):
        super().__init__()
        self.upscale_factor = upscale_factor

    def forward(self, input):
        return F.pixel_shuffle(input, self.upscale_factor)

    def extra_repr(self):
        return f"upscale_factor={self.upscale_factor}"


class PixelUnshuffle(Module):
    def __init__(self, downscale_factor):
        super().__init__()
        self.downscale_factor = downscale_factor

    def forward(self, input):
        return F.pixel_unshuffle(input, self.downscale_factor)

    def extra_repr(self):
        return f"downscale_factor={self.downscale_factor}"


class ChannelShuffle(Module):
    """ShuffleNet's channel shuffle: ``F.channel_shuffle(input, groups)``."""

    def __init__(self, groups):
        super().__init__()
        self.groups = groups

    def forward(self, input):
        return F.channel_shuffle(input, self.groups)

    def extra_repr(self):
        return f"groups={self.groups}"


class Softmax2d(Module):
    """Softmax over the channels (dimension -3) of [C, H, W] or [N, C, H, W]."""

    def forward(self, input):
        if input.ndim not in (3, 4):
            raise ValueError(f"Softmax2d: expected input to be 3D or 4D, got {input.ndim}D instead")
        return F.softmax(input, -3)


class AdaptiveAvgPool1d(_AdaptiveAvgPoolNd):
    def forward(self, input):
        return F.adaptive_avg_pool1d(input, self.output_size)


# ---- padding layers: F.pad with a fixed padding (an int pads every side) ---------------------------
class _PadNd(Module):
    mode, sides = "constant", 2  # sides: how many numbers the padding has (2 per padded dimension)

    def __init__(self, padding):
        super().__init__()
        self.padding = (padding,) * self.sides if isinstance(padding, int) else tuple(padding)

    def forward(self, input):
        if self.mode == "constant":
            return F.pad(input, self.padding, "constant", self.value)
        if self.mode == "circular":  # (torch's _CircularPadNd checks the rank itself, in its words)
            rank = self.sides // 2 + 1
            if input.ndim not in (rank, rank + 1):
                raise ValueError(f"expected {rank}D or {rank + 1}D input (got {input.ndim}D input)")
        return F.pad(input, self.padding, self.mode)

    def extra_repr(self):
        return f"{self.padding}"


class ConstantPad1d(_PadNd):
    def __init__(self, padding, value):
        super().__init__(padding)
        self.value = value

    def extra_repr(self):
        return f"padding={self.padding}, value={self.value}"


class ConstantPad2d(ConstantPad1d):
    sides = 4


class ConstantPad3d(ConstantPad1d):
    sides = 6


class ZeroPad1d(ConstantPad1d):
    def __init__(self, padding):
        super().__init__(padding, 0.0)

    def extra_repr(self):
        return f"{self.padding}"


class ZeroPad2d(ZeroPad1d):
    sides = 4


class ZeroPad3d(ZeroPad1d):
    sides = 6


class ReflectionPad1d(_PadNd):
    mode = "reflect"


class ReflectionPad2d(ReflectionPad1d):
    sides = 4


class ReflectionPad3d(ReflectionPad1d):
    sides = 6


class ReplicationPad1d(_PadNd):
    mode = "replicate"


class ReplicationPad2d(ReplicationPad1d):
    sides = 4


class ReplicationPad3d(ReplicationPad1d):
    sides = 6


class CircularPad1d(_PadNd):
    mode = "circular"


class CircularPad2d(CircularPad1d):
    sides = 4


class CircularPad3d(CircularPad1d):
    sides = 6


# ---- recurrent layers ----------------------------------------------------------------------------------
def _check_rnn_types(**values_and_types):
    """torch's RNNBase type checks, in its order: ``bias=1`` or ``input_size=2.0`` is a TypeError."""
    for name, (value, kind) in values_and_types.items():
        if not isinstance(value, kind):
            raise TypeError(f"{name} should be of type {kind.__name__}, got: {type(value).__name__}")


class _RNNBase(Module):
    """torch's ``RNNBase`` for ``RNN``, ``LSTM`` and ``GRU``: per layer and direction the weights
    ``weight_ih_l{k}`` [gates * H, input], ``weight_hh_l{k}`` [gates * H, H] and the biases
    ``bias_ih_l{k}``/``bias_hh_l{k}`` (``_reverse`` for the backward direction), all initialised
    U(-1/sqrt(H), 1/sqrt(H)), in torch's order and layout, so a torch ``state_dict`` loads.

    The loop over time is plain Python over differentiable ops; as torch does on the CPU, the input
    projection of every time step is one ``linear`` before the loop, and each cell combines its
    gates in the order torch's cell does (the same roundings). Inputs are ``[L, N, input]``
    (``batch_first``: ``[N, L, input]``) or unbatched ``[L, input]``; ``dropout`` applies to
    every layer's output but the last, in training."""

    _gates = 1

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False, dropout=0.0,
                 bidirectional=False, device=None, dtype=None, proj_size=0):
        super().__init__()
        if not isinstance(dropout, numbers.Number) or not 0 <= dropout <= 1 or isinstance(dropout, bool):
            raise ValueError("dropout should be a number in range [0, 1] representing the probability of "
                             "an element being zeroed")
        if dropout > 0 and num_layers == 1:  # (torch's hint: the one layer's output is never dropped)
            warn_at_caller("dropout option adds dropout after all but last recurrent layer, so non-zero dropout "
                           f"expects num_layers greater than 1, but got dropout={dropout} and num_layers={num_layers}")
        _check_rnn_types(bias=(bias, bool), batch_first=(batch_first, bool), input_size=(input_size, int))
        if input_size <= 0:  # (torch's order of checks)
            raise ValueError("input_size must be greater than zero")
        _check_rnn_types(hidden_size=(hidden_size, int))
        for name, size in (("hidden_size", hidden_size), ("num_layers", num_layers)):
            if size <= 0:
                raise ValueError(f"{name} must be greater than zero")
        if proj_size < 0:
            raise ValueError("proj_size should be a positive integer or zero to disable projections")
        if proj_size >= hidden_size:
            raise ValueError("proj_size has to be smaller than hidden_size")
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.proj_size = proj_size
        out = proj_size or hidden_size  # the width of h (LSTM's proj_size: h = W_hr (o * tanh(c)))
        self.bias, self.batch_first, self.dropout = bias, batch_first, float(dropout)
        self.bidirectional = bidirectional
        directions = 2 if bidirectional else 1
        rows = self._gates * hidden_size
        for layer in range(num_layers):
            width = input_size if layer == 0 else out * directions
            for suffix in ("", "_reverse")[:directions]:
                setattr(self, f"weight_ih_l{layer}{suffix}", _empty((rows, width), dtype, device))
                setattr(self, f"weight_hh_l{layer}{suffix}", _empty((rows, out), dtype, device))
                if bias:
                    setattr(self, f"bias_ih_l{layer}{suffix}", _empty((rows,), dtype, device))
                    setattr(self, f"bias_hh_l{layer}{suffix}", _empty((rows,), dtype, device))
                if proj_size:
                    setattr(self, f"weight_hr_l{layer}{suffix}", _empty((proj_size, hidden_size), dtype, device))
        self.reset_parameters()

    def reset_parameters(self):
        bound = 1.0 / math.sqrt(self.hidden_size) if self.hidden_size > 0 else 0
        for weight in self.parameters():
            init.uniform_(weight, -bound, bound)

    def _weights(self, layer, suffix):
        get = lambda name: getattr(self, f"{name}_l{layer}{suffix}", None)  # noqa: E731
        return get("weight_ih"), get("weight_hh"), get("bias_ih"), get("bias_hh")

    def _initial_state(self, input, hx, batch, width=None):
        """``hx`` as a list with one entry per layer and direction (zeros when not given)."""
        shape = (self.num_layers * (2 if self.bidirectional else 1), batch,
                 width or self.proj_size or self.hidden_size)
        if hx is None:
            return [input.new_zeros(shape[1:]) for _ in range(shape[0])]
        if tuple(hx.shape) != shape:
            raise RuntimeError(f"Expected hidden size {shape}, got {tuple(hx.shape)}")
        return [hx[i] for i in range(shape[0])]  # (torch's layers take hx[i]: SelectBackward0 in their graph)

    def forward(self, input, hx=None):
        if isinstance(input, PackedSequence):
            return self._forward_packed(input, hx)
        batched = input.ndim == 3
        if input.ndim not in (2, 3):
            raise ValueError(f"{type(self).__name__}: Expected input to be 2D or 3D, got {input.ndim}D instead")
        if not batched:  # one sequence: a batch of one
            input = input.unsqueeze(1)
            hx = self._map_state(hx, lambda t: t.unsqueeze(1))
        elif self.batch_first:
            input = input.transpose(0, 1)
        output, state = self._run(input, hx)
        if not batched:
            return output.squeeze(1), self._map_state(state, lambda t: t.squeeze(1))
        return (output.transpose(0, 1) if self.batch_first else output), state

    def _forward_packed(self, packed, hx):
        """torch's RNN on a PackedSequence: ``hx`` (in the caller's order) is put in the packed order, the
        layers run on ``data``, and the last states are put back in the caller's order."""
        order, back = packed.sorted_indices, packed.unsorted_indices
        if hx is not None and order is not None:
            hx = self._map_state(hx, lambda t: t.index_select(1, order))
        output, state = self._run(packed.data, hx, packed.batch_sizes.tolist())
        if back is not None:
            state = self._map_state(state, lambda t: t.index_select(1, back))
        return PackedSequence(output, packed.batch_sizes, order, back), state

    def _check_dtype(self, input):
        """torch's check_input: outside autocast an input of another dtype than the weights is refused, with
        torch's advice (rather than failing inside the first product)."""
        weight = self.weight_ih_l0
        if input.dtype != weight.dtype and not (_amp.used and _amp.state.active):
            theirs, ours = f"torch.{input.dtype}", f"torch.{weight.dtype}"
            raise ValueError(f"RNN input dtype ({theirs}) does not match weight dtype ({ours}). Convert input: "
                             f"input.to({ours}), or convert model: model.to({theirs})")

    @staticmethod
    def _map_state(state, fn):
        return None if state is None else fn(state)

    @staticmethod
    def _cat_states(states):
        return ops.cat(states, 0)

    def _run(self, input, hx, batch_sizes=None):
        """The layers in turn over ``input`` [L, N, features] (or a PackedSequence's data [sum of lengths,
        features] and its ``batch_sizes``): ``(output, h_n)``, computed by torch.lstm's / gru's / rnn_tanh's own
        loop (``ops/recurrent.py``), as torch's module calls them."""
        self._check_dtype(input)
        states = self._initial_state(input, hx, batch_sizes[0] if batch_sizes else input.shape[1])
        suffixes = ("", "_reverse")[:2 if self.bidirectional else 1]
        weights = [self._weights(layer, suffix) + (getattr(self, f"weight_hr_l{layer}{suffix}", None),)
                   for layer in range(self.num_layers) for suffix in suffixes]
        output, finals = recurrent.run_layers(self._kind(), input, states, weights, self.num_layers, self.dropout,
                                              self.training, self.bidirectional, batch_sizes)
        return output, self._stack_states(finals)

    @staticmethod
    def _stack_states(finals):
        return ops.stack(finals, 0)

    def extra_repr(self):
        text = f"{self.input_size}, {self.hidden_size}"
        if getattr(self, "proj_size", 0):
            text += f", proj_size={self.proj_size}"
        for name, default in (("num_layers", 1), ("bias", True), ("batch_first", False), ("dropout", 0),
                              ("bidirectional", False)):
            if getattr(self, name) != default:
                text += f", {name}={getattr(self, name)}"
        return text


def _refuse_proj_size(kwargs):
    if "proj_size" in kwargs:  # (torch's RNN and GRU refuse it by name, even proj_size=0)
        raise ValueError("proj_size argument is only supported for LSTM, not RNN or GRU")


class RNN(_RNNBase):
    """``h' = tanh(W_ih x + b_ih + W_hh h + b_hh)`` (``nonlinearity='relu'``: relu)."""

    def __init__(self, input_size, hidden_size, num_layers=1, nonlinearity="tanh", bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, device=None, dtype=None, **others):
        _refuse_proj_size(others)
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"Unknown nonlinearity '{nonlinearity}'. Select from 'tanh' or 'relu'.")
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
                         device, dtype, **others)
        self.nonlinearity = nonlinearity

    def _kind(self):
        return f"rnn_{self.nonlinearity}"

    def _output(self, state):
        return state


class GRU(_RNNBase):
    """Gates in torch's order r, z, n: ``r = s(..)``, ``z = s(..)``, ``n = tanh(W_in x + b_in +
    r (W_hn h + b_hn))``, ``h' = (h - n) z + n`` (torch's form of ``(1 - z) n + z h``)."""

    _gates = 3

    def __init__(self, *args, **kwargs):
        _refuse_proj_size(kwargs)
        super().__init__(*args, **kwargs)

    def _kind(self):
        return "gru"

    def _output(self, state):
        return state


class LSTM(_RNNBase):
    """Gates in torch's order i, f, g, o: ``c' = f c + i g``, ``h' = o tanh(c')``; ``hx`` and the
    returned state are the pair ``(h, c)``. ``proj_size > 0``: ``h' = W_hr (o tanh(c'))``, of that width."""

    _gates = 4

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False, dropout=0.0,
                 bidirectional=False, proj_size=0, device=None, dtype=None):
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
                         device, dtype, proj_size)

    def forward(self, input, hx=None):
        if (_amp.used and _amp.state.active) and not self.proj_size and not isinstance(input, PackedSequence):  # torch's CPU LSTM is one oneDNN kernel, autocast as a whole:
            input, hx = _amp.cast_args("mkldnn_rnn_layer", input, hx)  # state, gates and output 16-bit too
        return super().forward(input, hx)

    def _initial_state(self, input, hx, batch):
        h0, c0 = (None, None) if hx is None else hx
        return list(zip(super()._initial_state(input, h0, batch),
                        super()._initial_state(input, c0, batch, width=self.hidden_size)))

    @staticmethod
    def _map_state(state, fn):
        return None if state is None else tuple(fn(t) for t in state)

    @staticmethod
    def _stack_states(finals):
        return ops.stack([h for h, _ in finals], 0), ops.stack([c for _, c in finals], 0)

    @staticmethod
    def _cat_states(states):
        return ops.cat([h for h, _ in states], 0), ops.cat([c for _, c in states], 0)

    def _kind(self):
        return "lstm"

    def _output(self, state):
        return state[0]


# ---- transformer encoder ----------------------------------------------------------------------------
def _activation_fn(activation):
    """torch's legacy strings 'relu'/'gelu', or any callable (a function or a module)."""
    if isinstance(activation, str):
        if activation not in ("relu", "gelu"):
            raise RuntimeError(f"activation should be relu/gelu, not {activation}")
        return F.relu if activation == "relu" else F.gelu
    return activation



# ---- one step of a recurrent layer: RNNCell, LSTMCell, GRUCell -----------------------------------------
class _RNNCellBase(Module):
    """torch's ``RNNCellBase``: ``weight_ih`` [gates * H, input], ``weight_hh`` [gates * H, H],
    ``bias_ih``/``bias_hh`` (``bias=True``), all U(-1/sqrt(H), 1/sqrt(H)); ``forward(input, hx=None)``
    on [N, input] or an unbatched [input], ``hx`` zeros by default. The step is the recurrent layer's
    own (``ops/recurrent.py``'s steps, which torch.rnn_tanh_cell ... lstm_cell run): the same numbers as one step of it."""

    _gates = 1

    def __init__(self, input_size, hidden_size, bias=True, device=None, dtype=None):
        super().__init__()
        self.input_size, self.hidden_size, self.bias = input_size, hidden_size, bias
        rows = self._gates * hidden_size
        self.weight_ih = _empty((rows, input_size), dtype, device)
        self.weight_hh = _empty((rows, hidden_size), dtype, device)
        self.register_parameter("bias_ih", _empty((rows,), dtype, device) if bias else None)
        self.register_parameter("bias_hh", _empty((rows,), dtype, device) if bias else None)
        self.reset_parameters()

    reset_parameters = _RNNBase.reset_parameters

    def _check(self, input, hx):
        name = type(self).__name__
        if input.ndim not in (1, 2):
            raise ValueError(f"{name}: Expected input to be 1D or 2D, got {input.ndim}D instead")
        states = [(f"hx[{i}]", h) for i, h in enumerate(hx)] if isinstance(hx, tuple) else [("hidden", hx)]
        for what, h in states:  # (LSTMCell's pair named hx[0], hx[1], as torch's)
            if h is not None and h.ndim not in (1, 2):
                raise ValueError(f"{name}: Expected {what} to be 1D or 2D, got {h.ndim}D instead")
        if input.shape[-1] != self.input_size:
            raise RuntimeError(f"input has inconsistent input_size: got {input.shape[-1]} expected {self.input_size}")
        for i, h in enumerate(hx if isinstance(hx, tuple) else (hx,)):
            if h is None:
                continue
            if h.shape[-1] != self.hidden_size:
                raise RuntimeError(f"hidden{i} has inconsistent hidden_size: got {h.shape[-1]}, expected "
                                   f"{self.hidden_size}")
            if input.ndim == 2 and (h.ndim != 2 or h.shape[0] != input.shape[0]):
                raise RuntimeError(f"Input batch size {input.shape[0]} doesn't match hidden{i} batch size "
                                   f"{h.shape[0] if h.ndim == 2 else 'none (unbatched)'}")
            if input.ndim == 1 and h.ndim != 1:
                raise RuntimeError(f"hidden{i} of shape {list(h.shape)} for an unbatched input: expected "
                                   f"[{self.hidden_size}]")

    def _zeros(self, input):
        return input.new_zeros((*input.shape[:-1], self.hidden_size))

    def forward(self, input, hx=None):
        self._check(input, hx)
        if _amp.used and (_amp.used and _amp.state.active):  # torch's cell is one op on CUDA's lower-precision list: its state 16-bit too
            input, hx = _amp.cast_args(self._autocast_name(), input, hx)
        batched = input.ndim == 2
        if not batched:  # one sample: as a batch of one, as torch
            input = input.unsqueeze(0)
            hx = None if hx is None else tuple(h.unsqueeze(0) for h in hx) if isinstance(hx, tuple) else hx.unsqueeze(0)
        state = self._step(F.linear(input, self.weight_ih, self.bias_ih), hx if hx is not None else
                           self._initial(input))
        if batched:
            return state
        return tuple(t.squeeze(0) for t in state) if isinstance(state, tuple) else state.squeeze(0)

    def _initial(self, input):
        return self._zeros(input)

    _torch_op = None  # torch's op for the cell, under which autocast lists it (amp.py's tables)

    def _autocast_name(self):
        return self._torch_op or f"rnn_{self.nonlinearity}_cell"

    def _step(self, projected, state):
        return self._cell(projected, state, self.weight_hh, self.bias_hh)

    def extra_repr(self):
        text = f"{self.input_size}, {self.hidden_size}"
        if not self.bias:
            text += ", bias=False"
        if getattr(self, "nonlinearity", "tanh") != "tanh":
            text += f", nonlinearity={self.nonlinearity}"
        return text


class RNNCell(_RNNCellBase):
    """``h' = tanh(W_ih x + b_ih + W_hh h + b_hh)`` (``nonlinearity='relu'``: relu)."""

    def __init__(self, input_size, hidden_size, bias=True, nonlinearity="tanh", device=None, dtype=None):
        super().__init__(input_size, hidden_size, bias, device, dtype)
        self.nonlinearity = nonlinearity

    def _step(self, projected, state):
        if self.nonlinearity not in ("tanh", "relu"):
            raise RuntimeError(f"Unknown nonlinearity: {self.nonlinearity}")
        return recurrent.STEPS[f"rnn_{self.nonlinearity}"](projected, state, self.weight_hh, self.bias_hh)


class GRUCell(_RNNCellBase):
    _gates = 3
    _torch_op = "gru_cell"
    _cell = staticmethod(recurrent.gru_step)


class LSTMCell(_RNNCellBase):
    """Returns ``(h', c')``; ``hx`` is the pair ``(h, c)``."""

    _gates = 4
    _cell = staticmethod(recurrent.lstm_step)
    _torch_op = "lstm_cell"

    def _initial(self, input):
        zeros = self._zeros(input)
        return zeros, zeros

class TransformerEncoderLayer(Module):
    """``torch.nn.TransformerEncoderLayer``: self-attention then a feed-forward block
    (``linear2(dropout(activation(linear1(x))))``), each added back to its input; LayerNorm after
    each sum (``norm_first=True``: before each block, the pre-LN layout). Submodule names as
    torch's (``self_attn``, ``linear1``, ``linear2``, ``norm1``, ``norm2``), so its state_dict loads."""

    def __init__(self, d_model, nhead, dim_feedforward=2048, dropout=0.1, activation=F.relu,
                 layer_norm_eps=1e-05, batch_first=False, norm_first=False, bias=True, device=None,
                 dtype=None):
        super().__init__()
        self.self_attn = MultiheadAttention(d_model, nhead, dropout=dropout, bias=bias, batch_first=batch_first,
                                            device=device, dtype=dtype)
        self.linear1 = Linear(d_model, dim_feedforward, bias=bias, device=device, dtype=dtype)
        self.dropout = Dropout(dropout)
        self.linear2 = Linear(dim_feedforward, d_model, bias=bias, device=device, dtype=dtype)
        self.norm_first = norm_first
        self.norm1 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias, device=device, dtype=dtype)
        self.norm2 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias, device=device, dtype=dtype)
        self.dropout1, self.dropout2 = Dropout(dropout), Dropout(dropout)
        self.activation = _activation_fn(activation)
        act = self.activation
        self.activation_relu_or_gelu = 1 if act is F.relu or isinstance(act, ReLU) else \
            2 if act is F.gelu or isinstance(act, GELU) else 0  # (torch's flag: TransformerEncoder reads it)

    def forward(self, src, src_mask=None, src_key_padding_mask=None, is_causal=False):
        src_key_padding_mask = F._canonical_mask(src_key_padding_mask, "src_key_padding_mask",
                                                 F._none_or_dtype(src_mask), "src_mask", src.dtype)
        src_mask = F._canonical_mask(src_mask, "src_mask", None, "", src.dtype, check_other=False)
        fused = self._torch_fuses(src)
        x = src
        if self.norm_first:
            x = x + self._sa_block(self.norm1(x), src_mask, src_key_padding_mask, is_causal, fused)
            return x + self._ff_block(self.norm2(x))
        x = self.norm1(x + self._sa_block(x, src_mask, src_key_padding_mask, is_causal, fused))
        return self.norm2(x + self._ff_block(x))

    _nested = False  # set by TransformerEncoder while torch would run this layer on nested sequences

    def _sa_block(self, x, attn_mask, key_padding_mask, is_causal, fused=False):
        if fused or self._nested:  # (the masks are float here, canonical: the module's own fast path refuses them)
            x = self.self_attn._attend(x, x, x, key_padding_mask, False, attn_mask, True, is_causal,
                                       native="nested" if self._nested else True)[0]
        else:
            x = self.self_attn(x, x, x, attn_mask=attn_mask, key_padding_mask=key_padding_mask, need_weights=False,
                               is_causal=is_causal)[0]
        return self.dropout1(x)

    def _torch_fuses(self, src):
        """torch's conditions for its fused inference layer (``_transformer_encoder_layer_fwd``), which runs the
        attention's inference kernel with the masks read as bools -- any nonzero float in them leaves a key out."""
        from ..tensor import is_grad_enabled
        attn = self.self_attn
        if not isinstance(attn, MultiheadAttention) or src.ndim != 3 or self.training or not attn.batch_first \
                or attn.in_proj_bias is None or not attn._qkv_same_embed_dim or not self.activation_relu_or_gelu \
                or self.norm1.eps != self.norm2.eps or attn.num_heads % 2 or (_amp.used and _amp.state.active):
            return False
        if any(m._forward_hooks or m._forward_pre_hooks for m in self.modules()):
            return False
        tensors = (src, attn.in_proj_weight, attn.in_proj_bias, attn.out_proj.weight, attn.out_proj.bias,
                   self.norm1.weight, self.norm1.bias, self.norm2.weight, self.norm2.bias, self.linear1.weight,
                   self.linear1.bias, self.linear2.weight, self.linear2.bias)
        return not (is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors))

    def _ff_block(self, x):
        return self.dropout2(self.linear2(self.dropout(self.activation(self.linear1(x)))))


def _check_has_layers(stack):
    """torch's forward reads ``layers[0]`` first: a stack of ``num_layers <= 0`` is its IndexError."""
    if not len(stack.layers):
        raise IndexError(f"index 0 is out of range: this {type(stack).__name__} has no layers (num_layers <= 0)")


class TransformerEncoder(Module):
    """``torch.nn.TransformerEncoder``: ``num_layers`` copies of ``encoder_layer`` (``layers.0``,
    ``layers.1``, ... as torch names them), then ``norm`` if given.

    One torch behaviour is kept on purpose: where torch runs its inference fast path on a *nested
    tensor* (eval mode, no gradient needed, a right-padded ``src_key_padding_mask`` and no
    ``mask``, with a layer it can fuse), the padded positions of its output are exactly 0, not the
    values the layers computed there. minilora computes the layers on the padded batch, their
    attention's softmax over each sequence's own keys as torch's nested one, and then zeros those
    positions under the same conditions, so the numbers are torch's everywhere."""

    def __init__(self, encoder_layer, num_layers, norm=None, enable_nested_tensor=True, mask_check=True):
        import copy
        from .module import ModuleList
        super().__init__()
        self.layers = ModuleList([copy.deepcopy(encoder_layer) for _ in range(num_layers)])
        self.num_layers, self.norm, self.enable_nested_tensor = num_layers, norm, enable_nested_tensor
        self.mask_check = mask_check
        why_not = self._why_not_nested(encoder_layer)
        if enable_nested_tensor and why_not:
            warnings.warn(f"enable_nested_tensor is True, but self.use_nested_tensor is False because {why_not}",
                          UserWarning, stacklevel=2)
        self.use_nested_tensor = enable_nested_tensor and not why_not

    @staticmethod
    def _why_not_nested(layer):
        """torch's reasons (in its order) not to use nested tensors for this layer; '' if none."""
        if not isinstance(layer, TransformerEncoderLayer):
            return "encoder_layer was not TransformerEncoderLayer"
        attn = layer.self_attn
        checks = [(layer.norm_first, "encoder_layer.norm_first was True"),
                  (not attn.batch_first, "encoder_layer.self_attn.batch_first was not True(use batch_first for "
                                         "better inference performance)"),
                  (not attn._qkv_same_embed_dim, "encoder_layer.self_attn._qkv_same_embed_dim was not True"),
                  (attn.in_proj_bias is None, "encoder_layer.self_attn was passed bias=False"),
                  (not layer.activation_relu_or_gelu, "encoder_layer.activation_relu_or_gelu was not True"),
                  (layer.norm1.eps != layer.norm2.eps, "encoder_layer.norm1.eps was not equal to "
                                                       "encoder_layer.norm2.eps"),
                  (attn.num_heads % 2 == 1, "encoder_layer.self_attn.num_heads is odd")]
        return next((reason for failed, reason in checks if failed), "")

    def forward(self, src, mask=None, src_key_padding_mask=None, is_causal=None):
        _check_has_layers(self)
        src_key_padding_mask = F._canonical_mask(src_key_padding_mask, "src_key_padding_mask",
                                                 F._none_or_dtype(mask), "mask", src.dtype)
        mask = F._canonical_mask(mask, "mask", None, "", src.dtype, check_other=False)
        nested = self._torch_would_nest(src, mask, src_key_padding_mask)
        output = src
        for layer in self.layers:
            layer._nested = nested
            try:
                output = layer(output, src_mask=mask, is_causal=bool(is_causal),
                               src_key_padding_mask=src_key_padding_mask)
            finally:
                del layer._nested
        if nested:
            keep = ~src_key_padding_mask.bool() if src_key_padding_mask.dtype == np.bool_ else \
                src_key_padding_mask == 0  # (a float mask: 0 means "take part")
            output = output.masked_fill(~keep.unsqueeze(-1), 0.0)  # torch's to_padded_tensor(0.): +0 (times 0 gave
            # -0.0 under a negative value, and nan under a nan)
        if self.norm is not None:
            output = self.norm(output)
        return output

    def _torch_would_nest(self, src, mask, padding):
        """The conditions of torch's nested-tensor fast path (see the class docstring)."""
        from ..tensor import is_grad_enabled
        if not self.use_nested_tensor or self.layers[0].training or src.ndim != 3 or padding is None:
            return False
        if mask is not None:
            return False
        keep = (~padding.bool() if padding.dtype == np.bool_ else padding == 0).numpy(force=True)
        if self.mask_check and not all(_left_aligned(row) for row in keep):
            return False
        first = self.layers[0]
        tensors = [src, first.self_attn.in_proj_weight, first.self_attn.in_proj_bias,
                   first.self_attn.out_proj.weight, first.self_attn.out_proj.bias, first.norm1.weight,
                   first.norm1.bias, first.norm2.weight, first.norm2.bias, first.linear1.weight,
                   first.linear1.bias, first.linear2.weight, first.linear2.bias]
        return not (is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors))


def _left_aligned(row):
    """True for a row of kept positions like [1, 1, 1, 0, 0]: all kept ones before any padding."""
    return not np.any(row[1:] & ~row[:-1])


class TransformerDecoderLayer(Module):
    """``torch.nn.TransformerDecoderLayer``: self-attention over ``tgt``, attention from ``tgt`` to
    ``memory`` (the encoder's output), then the feed-forward block, each added back to its input with
    LayerNorm after each sum (``norm_first=True``: before each block). Submodule names as torch's
    (``self_attn``, ``multihead_attn``, ``linear1``, ``linear2``, ``norm1``-``norm3``)."""

    def __init__(self, d_model, nhead, dim_feedforward=2048, dropout=0.1, activation=F.relu,
                 layer_norm_eps=1e-05, batch_first=False, norm_first=False, bias=True, device=None,
                 dtype=None):
        super().__init__()
        place = dict(device=device, dtype=dtype)
        self.self_attn = MultiheadAttention(d_model, nhead, dropout=dropout, bias=bias, batch_first=batch_first,
                                            **place)
        self.multihead_attn = MultiheadAttention(d_model, nhead, dropout=dropout, bias=bias,
                                                 batch_first=batch_first, **place)
        self.linear1 = Linear(d_model, dim_feedforward, bias=bias, **place)
        self.dropout = Dropout(dropout)
        self.linear2 = Linear(dim_feedforward, d_model, bias=bias, **place)
        self.norm_first = norm_first
        self.norm1 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias, **place)
        self.norm2 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias, **place)
        self.norm3 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias, **place)
        self.dropout1, self.dropout2, self.dropout3 = Dropout(dropout), Dropout(dropout), Dropout(dropout)
        self.activation = _activation_fn(activation)

    def forward(self, tgt, memory, tgt_mask=None, memory_mask=None, tgt_key_padding_mask=None,
                memory_key_padding_mask=None, tgt_is_causal=False, memory_is_causal=False):
        x = tgt
        if self.norm_first:
            x = x + self._sa_block(self.norm1(x), tgt_mask, tgt_key_padding_mask, tgt_is_causal)
            x = x + self._mha_block(self.norm2(x), memory, memory_mask, memory_key_padding_mask, memory_is_causal)
            return x + self._ff_block(self.norm3(x))
        x = self.norm1(x + self._sa_block(x, tgt_mask, tgt_key_padding_mask, tgt_is_causal))
        x = self.norm2(x + self._mha_block(x, memory, memory_mask, memory_key_padding_mask, memory_is_causal))
        return self.norm3(x + self._ff_block(x))

    def _sa_block(self, x, attn_mask, key_padding_mask, is_causal):
        x = self.self_attn(x, x, x, attn_mask=attn_mask, key_padding_mask=key_padding_mask, need_weights=False,
                           is_causal=is_causal)[0]
        return self.dropout1(x)

    def _mha_block(self, x, memory, attn_mask, key_padding_mask, is_causal):
        x = self.multihead_attn(x, memory, memory, attn_mask=attn_mask, key_padding_mask=key_padding_mask,
                                need_weights=False, is_causal=is_causal)[0]
        return self.dropout2(x)

    def _ff_block(self, x):
        return self.dropout3(self.linear2(self.dropout(self.activation(self.linear1(x)))))


class TransformerDecoder(Module):
    """``torch.nn.TransformerDecoder``: ``num_layers`` copies of ``decoder_layer`` (``layers.0``, ...),
    each reading the same ``memory``, then ``norm`` if given."""

    def __init__(self, decoder_layer, num_layers, norm=None):
        import copy
        from .module import ModuleList
        super().__init__()
        self.layers = ModuleList([copy.deepcopy(decoder_layer) for _ in range(num_layers)])
        self.num_layers, self.norm = num_layers, norm

    def forward(self, tgt, memory, tgt_mask=None, memory_mask=None, tgt_key_padding_mask=None,
                memory_key_padding_mask=None, tgt_is_causal=None, memory_is_causal=False):
        _check_has_layers(self)
        output = tgt
        for layer in self.layers:
            output = layer(output, memory, tgt_mask=tgt_mask, memory_mask=memory_mask,
                           tgt_key_padding_mask=tgt_key_padding_mask,
                           memory_key_padding_mask=memory_key_padding_mask, tgt_is_causal=bool(tgt_is_causal),
                           memory_is_causal=memory_is_causal)
        return output if self.norm is None else self.norm(output)


class Transformer(Module):
    """``torch.nn.Transformer``: a TransformerEncoder over ``src`` and a TransformerDecoder over ``tgt``
    reading the encoder's output, each ending in a LayerNorm; every weight matrix starts Xavier-uniform,
    as torch's. ``Transformer.generate_square_subsequent_mask(sz)``: the causal mask, ``-inf`` above
    the diagonal, 0 elsewhere (torch's tutorials call it on the class)."""

    def __init__(self, d_model=512, nhead=8, num_encoder_layers=6, num_decoder_layers=6, dim_feedforward=2048,
                 dropout=0.1, activation=F.relu, custom_encoder=None, custom_decoder=None, layer_norm_eps=1e-05,
                 batch_first=False, norm_first=False, bias=True, device=None, dtype=None):
        super().__init__()
        layer = dict(d_model=d_model, nhead=nhead, dim_feedforward=dim_feedforward, dropout=dropout,
                     activation=activation, layer_norm_eps=layer_norm_eps, batch_first=batch_first,
                     norm_first=norm_first, bias=bias, device=device, dtype=dtype)
        norm = dict(eps=layer_norm_eps, bias=bias, device=device, dtype=dtype)
        self.encoder = custom_encoder if custom_encoder is not None else TransformerEncoder(
            TransformerEncoderLayer(**layer), num_encoder_layers, LayerNorm(d_model, **norm))
        self.decoder = custom_decoder if custom_decoder is not None else TransformerDecoder(
            TransformerDecoderLayer(**layer), num_decoder_layers, LayerNorm(d_model, **norm))
        self._reset_parameters()
        self.d_model, self.nhead, self.batch_first = d_model, nhead, batch_first

    def _reset_parameters(self):
        """torch's: every weight matrix Xavier-uniform, in ``parameters()`` order."""
        for p in self.parameters():
            if p.dim() > 1:
                init.xavier_uniform_(p)

    def forward(self, src, tgt, src_mask=None, tgt_mask=None, memory_mask=None, src_key_padding_mask=None,
                tgt_key_padding_mask=None, memory_key_padding_mask=None, src_is_causal=None, tgt_is_causal=None,
                memory_is_causal=False):
        batch = 0 if self.batch_first else 1
        if src.dim() == 3 and src.size(batch) != tgt.size(batch):
            raise RuntimeError("the batch number of src and tgt must be equal")
        if src.size(-1) != self.d_model or tgt.size(-1) != self.d_model:
            raise RuntimeError("the feature number of src and tgt must be equal to d_model")
        memory = self.encoder(src, mask=src_mask, src_key_padding_mask=src_key_padding_mask, is_causal=src_is_causal)
        return self.decoder(tgt, memory, tgt_mask=tgt_mask, memory_mask=memory_mask,
                            tgt_key_padding_mask=tgt_key_padding_mask,
                            memory_key_padding_mask=memory_key_padding_mask, tgt_is_causal=tgt_is_causal,
                            memory_is_causal=memory_is_causal)

    @staticmethod
    def generate_square_subsequent_mask(sz, device=None, dtype=None):
        dtype = to_dtype(dtype) if dtype is not None else get_default_dtype()
        return ops.tensor(np.triu(np.full((sz, sz), -np.inf), 1), dtype=dtype, device=device)
