"""``minilora.nn.functional`` -- the stateless ops under PyTorch's ``F.`` names and signatures.

Every function here takes the arguments ``torch.nn.functional``'s namesake takes, in the same order
and with the same defaults (``tests/test_torch_conformance_nn.py`` compares the signatures). An
option minilora does not implement (``sparse=True``) raises rather than being ignored; ``inplace=True``
writes the result into the input, with torch's autograd rules (``_in_place_if``).
"""
import functools
import math
import warnings

import numpy as np

from .. import amp as _amp, ops
from ..device import holds_no_values as _holds_no_values
from ..size import torch_spelling as _torch_spelling
from ..dtypes import checked_number as _checked_number, int_argument as _int_argument, torch_name as _torch_name
from ..dtypes import bool_argument as _bool_argument, can_cast as _can_cast, dtype_argument as _dtype_argument
from ..ops.nn import binary_cross_entropy, binary_cross_entropy_with_logits  # noqa: F401
from ..ops.nn import cosine_similarity, huber_loss, kl_div, normalize, smooth_l1_loss  # noqa: F401
from ..ops.nn import cosine_embedding_loss, margin_ranking_loss, pairwise_distance  # noqa: F401
from ..ops.nn import triplet_margin_loss as _triplet_margin_loss
from ..ops.nn import batch_norm as _batch_norm, group_norm  # noqa: F401
from ..ops.nn import refuse_integer_batch_norm as _refuse_integer_batch_norm
from ..ops.nn import _floating_only, _reduced, _row_index
from ..ops.nn import legacy_reduction as _legacy_reduction
from ..ops.nn import dropout_noise as _dropout_noise, feature_dropout as _feature_dropout
from ..ops.nn import _refuse_integer_dropout
from ..ops.nn import nan_where_a_difference_is as _nan_where_a_difference_is
from ..ops.nn import float32_inside as _float32_inside, Glu as _Glu, PRelu as _PRelu, KernelGradients as _KernelGradients
from ..ops.conv import adaptive_max_pool1d, adaptive_max_pool2d, fold, unfold  # noqa: F401
from ..ops.conv import max_unpool1d, max_unpool2d  # noqa: F401
from ..ops.matmul import trilinear as _trilinear, cpp_type_name as _cpp_type_name
from ..ops.conv import one_output_size as _one_output_size
from ..ops.conv import conv3d, conv_transpose3d  # noqa: F401
from ..ops.conv import adaptive_avg_pool3d, adaptive_max_pool3d, avg_pool3d, max_pool3d, max_unpool3d  # noqa: F401
from ..ops.conv import fractional_max_pool2d, fractional_max_pool3d  # noqa: F401
from ..ops.ctc import ctc_loss  # noqa: F401
from ..ops.sampling import affine_grid, grid_sample  # noqa: F401
from ..ops.conv import (adaptive_avg_pool2d, avg_pool1d, avg_pool2d, conv1d, conv2d,  # noqa: F401
                        conv_transpose1d, conv_transpose2d, interpolate, max_pool1d, max_pool2d)
from ..ops.nn import (_refuse, cross_entropy, dropout, embedding, l1_loss, layer_norm,  # noqa: F401
                      mse_loss, nll_loss, one_hot, pad, rms_norm, rotary_embedding,
                      scaled_dot_product_attention, swiglu)
from ..dtypes import is_floating as _is_floating
from .. import random as _random
from ..tensor import Tensor as _Tensor, _to_dtype, no_forward_formula as _no_forward_formula
from ..tensor import no_complex_autograd as _no_complex_autograd
from ..tensor import no_grad as _no_grad
from ..ops.bags import DenseBagGradient as _DenseBagGradient
from ..tensor import name_node as _name_node, saved_for as _saved_for, saves_as_torch as _saves_as_torch
from ..tensor import backward_reads as _backward_reads
from ..tensor import torch_broadcast_message as _torch_broadcast_message, torch_expand_message as _torch_expand_message
from ..tensor import with_note as _with_note

__all__ = ["linear", "embedding", "layer_norm", "rms_norm", "scaled_dot_product_attention", "dropout",
           "cross_entropy", "nll_loss", "mse_loss", "l1_loss", "binary_cross_entropy",
           "binary_cross_entropy_with_logits", "pad", "one_hot", "relu", "gelu", "silu", "sigmoid", "tanh", "softmax",
           "log_softmax", "rotary_embedding", "swiglu", "softplus", "leaky_relu", "normalize", "cosine_similarity",
           "smooth_l1_loss", "huber_loss", "kl_div", "elu", "selu", "celu", "relu6", "hardtanh", "hardswish",
           "hardsigmoid", "logsigmoid", "mish", "softsign", "glu", "softmin", "pairwise_distance",
           "margin_ranking_loss", "triplet_margin_loss", "cosine_embedding_loss", "batch_norm", "group_norm",
           "conv1d", "conv2d", "max_pool1d", "max_pool2d", "avg_pool1d", "avg_pool2d", "adaptive_avg_pool2d",
           "interpolate", "upsample", "upsample_nearest", "upsample_bilinear", "soft_margin_loss",
           "hinge_embedding_loss", "poisson_nll_loss", "gaussian_nll_loss", "multilabel_soft_margin_loss",
           "multi_margin_loss", "threshold", "hardshrink", "softshrink", "tanhshrink", "prelu", "adaptive_avg_pool1d",
           "dropout1d", "dropout2d", "dropout3d", "conv_transpose1d", "conv_transpose2d", "pixel_shuffle",
           "pixel_unshuffle", "adaptive_max_pool1d", "adaptive_max_pool2d", "instance_norm", "unfold", "fold",
           "multilabel_margin_loss", "triplet_margin_with_distance_loss", "max_unpool1d", "max_unpool2d", "bilinear",
           "lp_pool1d", "lp_pool2d", "local_response_norm", "embedding_bag", "alpha_dropout", "feature_alpha_dropout",
           "rrelu", "relu_", "elu_", "leaky_relu_", "hardtanh_", "threshold_", "rrelu_", "celu_", "selu_",
           "gumbel_softmax", "channel_shuffle", "native_channel_shuffle", "conv3d", "conv_transpose3d",
           "grid_sample", "affine_grid", "ctc_loss", "multi_head_attention_forward", "max_pool3d", "avg_pool3d",
           "adaptive_avg_pool3d", "adaptive_max_pool3d", "max_unpool3d", "lp_pool3d", "pdist",
           "max_pool1d_with_indices", "max_pool2d_with_indices", "max_pool3d_with_indices",
           "adaptive_max_pool1d_with_indices", "adaptive_max_pool2d_with_indices", "adaptive_max_pool3d_with_indices",
           "linear_cross_entropy", "conv_tbc", "fractional_max_pool2d", "fractional_max_pool3d",
           "fractional_max_pool2d_with_indices", "fractional_max_pool3d_with_indices"]


def linear(input, weight, bias=None):
    """``input @ weight.T + bias`` with ``weight`` [out_features, in_features] (PyTorch layout);
    a 1-D ``weight`` [in_features] gives one output per row, without that dimension (torch)."""
    if not (isinstance(input, _Tensor) and isinstance(weight, _Tensor) and (bias is None or isinstance(bias, _Tensor))):
        _refuse_non_tensors("linear", input=input, weight=weight, bias=bias, required=("input", "weight"))
    if str(input.dtype) == "bool" and weight.dtype == input.dtype and weight.ndim == 2 and input.numel() and \
            weight.numel():  # (torch's addmm: no bool kernel; an empty product runs none; a float weight is
        # the mismatch of dtypes below)
        raise NotImplementedError('"addmm_impl_cpu_" not implemented for \'Bool\'')
    if weight.ndim == 1:
        if bias is not None:  # torch refuses this combination too
            raise RuntimeError("linear: a bias needs a 2-D weight (mat2 must be a matrix, got 1-D tensor)")
        return ops.matmul(input, weight)
    if bias is None or tuple(bias.shape) == (weight.shape[0],):  # the fused node (the common case)
        try:
            return ops.linear(input, weight, bias)
        except RuntimeError:  # (the error path only: torch transposes the weight first, and says so)
            _refuse_weight_rank(weight)
            raise
    _refuse_weight_rank(weight)
    return _linear_with_broadcast_bias(input, weight, bias)


def _refuse_weight_rank(weight):
    if weight.ndim > 2:
        raise RuntimeError(f"t() expects a tensor with <= 2 dimensions, but self is {weight.ndim}D")


def _linear_bias_message(input, bias, out_shape):
    """torch's words for a bias that does not fit: ATen's linear adds a 1-D bias in addmm (an input of up to 3
    dimensions, its rows folded: expand's words), any other after the product (the broadcast's words)."""
    if bias.ndim == 1 and input.ndim <= 3:
        return _torch_expand_message(tuple(bias.shape), [math.prod(out_shape[:-1]), out_shape[-1]])
    return _torch_broadcast_message([out_shape, tuple(bias.shape)])


def _linear_with_broadcast_bias(input, weight, bias):
    """A bias of another shape that broadcasts to the output (a 0-d or [1] bias): added as its own op,
    so that its gradient is summed back to its shape (the fused node expects [out_features])."""
    out_shape = (*input.shape[:-1], weight.shape[0])
    try:
        fits = np.broadcast_shapes(tuple(bias.shape), out_shape) == out_shape
    except ValueError:
        fits = False
    if not fits:
        hint = f"linear: the bias of shape {tuple(bias.shape)} does not broadcast to the output's shape {out_shape}"
        raise _with_note(RuntimeError(_linear_bias_message(input, bias, out_shape) or hint), hint)
    return ops.linear(input, weight) + bias


def _refuse_non_tensors(fn, required=("input",), **arguments):
    """torch's TypeError for the first of ``arguments`` (in ``fn``'s positional order; None passes where it is an
    optional tensor's default, not for the ``required`` ones) that is not a Tensor: NumPy took an ndarray silently,
    a number or ``bias=True`` failed in an AttributeError of minilora's code."""
    for position, (name, value) in enumerate(arguments.items(), start=1):
        if (value is not None or name in required) and not isinstance(value, _Tensor):
            kind = type(value)
            shown = kind.__name__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__name__}"
            raise TypeError(f"{fn}(): argument '{name}' (position {position}) must be Tensor, not {shown}")


def _in_place_if(inplace, fn, input, *args, saves_result=False):
    """``fn(input, *args)``; with torch's ``inplace=True`` the result is written into ``input``, which is
    returned (torch's rules: a leaf that requires grad is refused, a view writes through to its base,
    a tensor saved for backward fails the version check there: see ``Tensor._inplace``).

    ``saves_result``: torch's in-place kernel keeps its result for backward (elu_, leaky_relu_:
    their gradient is read from it), so changing ``input`` in place again before backward is torch's
    version-counter error."""
    if not inplace:
        return fn(input, *args)
    if not isinstance(input, _Tensor):  # (F.relu_(5): an AttributeError of _inplace before)
        _refuse_non_tensors(getattr(fn, "__name__", "").lstrip("_") + "_", input=input)
    return input._inplace(_saving_result(fn) if saves_result else fn, *args)


def _saving_result(fn):
    """``fn`` whose node also holds its result (``Tensor._inplace`` then points that at the storage the
    result is written into, for the version check at backward)."""
    def run(input, *args):
        result = fn(input, *args)
        if result._ctx is not None:
            result._ctx.inplace_result = result._array
            _saves_as_torch(result, result)  # (the result only: what the out-of-place op said it keeps no longer)
        return result
    return run


def relu(input, inplace=False):
    return _in_place_if(inplace, ops.relu, input)


def silu(input, inplace=False):
    if isinstance(input, _Tensor) and input.dtype.kind == "c":  # torch's complex kernel, which it cannot differentiate
        _no_complex_autograd("silu", input.dtype, input)
        return _in_place_if(inplace, _complex_silu, input)
    _floating_only("silu", input)
    return _in_place_if(inplace, ops.silu, input)


def _complex_silu(input):
    """torch's complex SiLU: ``x / (1 + exp(-x))``."""
    return ops.div(input, ops.add(ops.exp(ops.neg(input)), 1))


def softplus(input, beta=1, threshold=20):
    """``log(1 + exp(beta x)) / beta``, and ``x`` itself where ``beta x > threshold`` (torch's)."""
    _floating_only("softplus", input)
    return ops.softplus(input, beta, threshold)


def leaky_relu(input, negative_slope=0.01, inplace=False):
    """``x`` for ``x > 0``, ``negative_slope * x`` otherwise."""
    _floating_only("leaky_relu", input)
    return _in_place_if(inplace, ops.leaky_relu, input, negative_slope, saves_result=True)


def elu(input, alpha=1.0, inplace=False):
    """``x`` for ``x > 0``, ``alpha (exp(x) - 1)`` otherwise."""
    _floating_only("elu", input)
    return _in_place_if(inplace, ops.elu, input, alpha, saves_result=True)


def selu(input, inplace=False):
    """``scale * elu(x, alpha)`` with the self-normalising constants of Klambauer et al."""
    _floating_only("selu", input)
    return _in_place_if(inplace, ops.selu, input, saves_result=True)


def celu(input, alpha=1.0, inplace=False):
    """``x`` for ``x > 0``, ``alpha (exp(x / alpha) - 1)`` otherwise."""
    _floating_only("celu", input)
    return _in_place_if(inplace, ops.celu, input, alpha, saves_result=True)


def hardtanh(input, min_val=-1.0, max_val=1.0, inplace=False):
    """``x`` clamped to ``[min_val, max_val]``; no gradient at or beyond the bounds (torch's)."""
    return _in_place_if(inplace, ops.hardtanh, input, min_val, max_val)


def relu6(input, inplace=False):
    """``min(max(x, 0), 6)`` (torch's is ``hardtanh(x, 0, 6)``, gradients included)."""
    return _in_place_if(inplace, ops.hardtanh, input, 0.0, 6.0)


def hardswish(input, inplace=False):
    _floating_only("hardswish", input)
    return _in_place_if(inplace, ops.hardswish, input)


def hardsigmoid(input, inplace=False):
    _float_kernel_only("hardsigmoid_cpu", input)
    return _in_place_if(inplace, ops.hardsigmoid, input)


def logsigmoid(input):
    """``log(sigmoid(x))``, stable for large ``|x|``."""
    _floating_only("logsigmoid", input)
    return ops.logsigmoid(input)


def mish(input, inplace=False):
    _floating_only("mish", input)
    return _in_place_if(inplace, ops.mish, input)


def rrelu(input, lower=1.0 / 8, upper=1.0 / 3, training=False, inplace=False):
    """Randomized leaky ReLU: in training each element at or below 0 gets its own slope drawn from
    U(lower, upper) (its gradient is that slope); in eval the slope is their mean (torch's leaky_relu)."""
    if lower > upper:
        raise RuntimeError("Lower bound should be less than or equal to the upper bound")
    if training is not True and training is not False:
        _bool_argument("rrelu", "training", training, position=4)
    if not training:  # (torch's CPU rrelu writes a contiguous result whatever the input's layout)
        result = leaky_relu(input, (lower + upper) / 2, inplace)
        return result if inplace else result.contiguous()
    if input.dtype.name not in ("float32", "float64", "bfloat16"):  # (torch's CPU kernel has no float16 one)
        raise NotImplementedError(f'"rrelu_with_noise_out_cpu" not implemented for \'{_torch_name(input.dtype)}\'')
    if input.is_meta:  # (no values: no slopes drawn, as torch's meta kernel)
        return input if inplace else input * 1.0
    result = _in_place_if(inplace, _random_slopes, input, lower, upper)
    if inplace or result._array.flags.c_contiguous and not result._layout_unknown():
        return result
    return result.contiguous()  # (torch's CPU rrelu writes a contiguous result whatever the input's layout)


def _random_slopes(input, lower, upper):
    """torch's CPU rrelu: element by element (index order), a slope ``U(lower, upper)`` (a uniform
    double between the bounds rounded to float, double's own for a float64 input) drawn only for an
    element at or below 0; 1 elsewhere."""
    values = input.detach().numpy(force=True)
    drawn = values <= 0
    if input.dtype != np.float64:
        lower, upper = float(np.float32(lower)), float(np.float32(upper))
    slopes = np.ones(values.shape, np.float64)
    # (u * (upper - lower) + lower in two roundings: this kernel's compiled code fuses no multiply-add)
    slopes[drawn] = _random.default_generator.uniform((int(drawn.sum()),), np.float64) * (upper - lower) + lower
    if input.dtype.itemsize == 2:  # (bfloat16, float16: torch's kernel multiplies in float32, rounds once)
        slopes = ops.tensor(slopes, dtype=np.dtype("float32"), device=input.device)
        return _backward_reads(ops.where(input > 0, input, (input.float() * slopes).to(input.dtype)), input)
    slopes = ops.tensor(slopes, dtype=input.dtype, device=input.device)  # (torch's rrelu_with_noise_backward:)
    return _backward_reads(ops.where(input > 0, input, input * slopes), input)


# torch's in-place spellings: ``F.relu_(x)`` is ``F.relu(x, inplace=True)``
def relu_(input):
    return relu(input, inplace=True)


def elu_(input, alpha=1.0):
    return elu(input, alpha, inplace=True)


def leaky_relu_(input, negative_slope=0.01):
    return leaky_relu(input, negative_slope, inplace=True)


def hardtanh_(input, min_val=-1.0, max_val=1.0):
    return hardtanh(input, min_val, max_val, inplace=True)


def threshold_(input, threshold, value):
    return _in_place_if(True, _threshold, input, threshold, value)


def rrelu_(input, lower=1.0 / 8, upper=1.0 / 3, training=False):
    return rrelu(input, lower, upper, training, inplace=True)


def celu_(input, alpha=1.0):
    return celu(input, alpha, inplace=True)


def selu_(input):
    return selu(input, inplace=True)


def softsign(input):
    if str(input.dtype) == "bool":  # (torch's x / (1 + |x|): its abs has no bool kernel)
        raise NotImplementedError('"abs_cpu" not implemented for \'Bool\'')
    return ops.softsign(input)


@_float32_inside  # torch's glu is one kernel: a 16-bit input is computed in float32, rounded once
def glu(input, dim=-1):
    """The gated linear unit: ``a * sigmoid(b)`` for the two halves ``a``, ``b`` of ``dim``."""
    _floating_only("glu", input)
    if input.ndim == 0:
        raise RuntimeError("glu does not support scalars because halving size must be even")
    (dim,) = ops.shape._dims((dim,), input.ndim)  # (torch's IndexError words, not a tuple's)
    size = input.shape[dim]
    if size % 2:
        raise RuntimeError(f"Halving dimension must be even, but dimension {dim} is size {size}")
    return _name_node(_Glu.apply(input, dim=dim % input.ndim), "GluBackward0", graph=(input,))  # (torch's one node)


def softmin(input, dim=None, _stacklevel=3, dtype=None):
    """``softmax(-input)`` along ``dim``, cast to ``dtype`` after the negation, if given (torch's
    ``(-input).softmax(dim, dtype=dtype)``: its ToCopyBackward0 over the NegBackward0)."""
    return ops.softmax(-input, _softmax_dim("softmin", input.ndim, dim), dtype=dtype)


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
        input = ops.astype(input, _dtype_argument("softmax", dtype))
    return ops.softmax(input, _softmax_dim("softmax", input.ndim, dim))


def log_softmax(input, dim=None, _stacklevel=3, dtype=None):
    """Log-softmax along ``dim`` (cast to ``dtype`` first, if given)."""
    if dtype is not None:
        input = ops.astype(input, _dtype_argument("log_softmax", dtype))
    return ops.log_softmax(input, _softmax_dim("log_softmax", input.ndim, dim))


def _deprecated_upsample(name):
    warnings.warn(f"`nn.functional.{name}` is deprecated. Use `nn.functional.interpolate` instead.",
                  UserWarning, stacklevel=3)


def upsample(input, size=None, scale_factor=None, mode="nearest", align_corners=None):
    """torch's deprecated name for ``interpolate`` (with its warning)."""
    _deprecated_upsample("upsample")
    return interpolate(input, size, scale_factor, mode, align_corners)


def upsample_nearest(input, size=None, scale_factor=None):
    """torch's deprecated ``interpolate(mode='nearest')`` (with its warning)."""
    _deprecated_upsample("upsample_nearest")
    return interpolate(input, size, scale_factor, mode="nearest")


def upsample_bilinear(input, size=None, scale_factor=None):
    """torch's deprecated ``interpolate(mode='bilinear', align_corners=True)`` -- corners aligned,
    unlike ``interpolate``'s default (with its warning)."""
    _deprecated_upsample("upsample_bilinear")
    return interpolate(input, size, scale_factor, mode="bilinear", align_corners=True)


# ---- losses built from other ops, in torch's order of ops (each op rounds as torch's does) ---------
@_amp.autocasts
def soft_margin_loss(input, target, size_average=None, reduce=None, reduction="mean"):
    """``log(1 + exp(-target * input))`` for targets of +1 / -1 (torch's ``log1p(exp(...))``)."""
    reduction = _legacy_reduction(size_average, reduce, reduction)
    _no_complex_autograd("soft_margin_loss", input.dtype, input, target)
    if getattr(target, "requires_grad", False):  # torch's kernel has no gradient for the target
        raise RuntimeError("The function 'soft_margin_loss' is not differentiable with respect to argument "
                           "'target'. This input cannot have requires_grad True.")
    margin = -input * target
    if tuple(margin.shape) != tuple(input.shape):  # (that buffer has the input's shape too)
        raise RuntimeError(f"output with shape {list(input.shape)} doesn't match the broadcast shape "
                           f"{list(margin.shape)}")
    if margin.dtype != input.dtype:  # torch's kernel writes into a buffer of the input's dtype
        if not _can_cast(margin.dtype, input.dtype):  # (an int64 input's float margin: was cast to integers)
            raise RuntimeError(f"result type {_torch_name(margin.dtype)} can't be cast to the desired output type "
                               f"{_torch_name(input.dtype)}")
        margin = margin.to(input.dtype)
    out = _reduced("soft_margin_loss", ops.log1p(ops.exp(margin)), reduction)
    if str(input.dtype) in ("float32", "float64") and type(input._array) is np.ndarray and \
            getattr(target, "dtype", None) == input.dtype:  # torch's backward kernel's bits, the composed graph kept
        out = _KernelGradients.apply(out, input, None, None, values=out._array.copy(),  # for create_graph
                                     gradients=_soft_margin_gradients(input._array, target._array, reduction))
    return _name_node(out, "SoftMarginLossBackward0", input, graph=(input,))


def _soft_margin_gradients(x, t, reduction):
    """torch's soft_margin_loss_backward, in its order: ``z = exp(-t x)`` (MKL's), ``((t z) * -norm) / (z + 1) * g``
    with ``norm`` 1/n for a mean (else 1), a function of (g, needs) for ``KernelGradients``."""
    from .. import float32_math
    real = x.dtype.type

    def gradients(g, needs):
        norm = 1 / x.size if reduction == "mean" and x.size else 1.0
        z = float32_math.vml("exp", -t * x)
        with np.errstate(all="ignore"):
            return (((t * z) * real(-norm)) / (z + real(1))) * g if needs[0] else None, None, None
    return gradients


@_amp.autocasts
def hinge_embedding_loss(input, target, margin=1.0, size_average=None, reduce=None, reduction="mean"):
    """``input`` where ``target`` is 1, ``max(0, margin - input)`` where it is -1 (torch adds the
    two parts, so a target that is neither gets both)."""
    reduction = _legacy_reduction(size_average, reduce, reduction)
    zeros = input.new_zeros(())
    # ATen's ``margin - self`` fills a tensor of the input's dtype with margin first: an integer input stays integer
    # (margin truncated; its mean is torch's error), a 16-bit one gets margin rounded before the subtraction
    margin_clamp = (input.new_full(tuple(input.shape), margin) - input).clamp_min(0)
    loss = ops.where(target != 1, margin_clamp, zeros) + ops.where(target != -1, input, zeros)
    return _reduced("hinge_embedding_loss", loss, reduction)


@_amp.autocasts
def poisson_nll_loss(input, target, log_input=True, full=False, size_average=None, eps=1e-8, reduce=None,
                     reduction="mean"):
    """The negative log-likelihood of ``target`` counts under Poisson rates: ``exp(input) - target *
    input`` (``log_input``), else ``input - target * log(input + eps)``; ``full`` adds Stirling's
    approximation of ``log(target!)`` where ``target > 1``."""
    reduction = _legacy_reduction(size_average, reduce, reduction)
    if reduction not in ("none", "mean", "sum"):
        raise ValueError(reduction + " is not a valid value for reduction")
    loss = ops.exp(input) - target * input if log_input else input - target * ops.log(input + eps)
    if full:  # (ATen's ``t * log(t) - t + 0.5 * log(2 pi t)``: GCC evaluates the + operator's right operand first,
        # so its nodes are made first and the engine runs them last: the order target's 5 gradients are added in)
        half_log = 0.5 * ops.log(2 * math.pi * target)
        stirling = target * ops.log(target) - target + half_log
        loss = loss + stirling.masked_fill(target <= 1, 0)
    return _reduced("poisson_nll_loss", loss, reduction)


def gaussian_nll_loss(input, target, var, full=False, eps=1e-6, reduction="mean"):
    """``0.5 (log(var) + (input - target)^2 / var)`` (``full``: plus ``0.5 log(2 pi)``), ``var``
    clamped to at least ``eps`` for the value but not for the gradient, as torch. ``var`` has the
    input's shape, or one dimension of size 1 (or the last one dropped): one variance shared."""
    if isinstance(var, float):
        if var < 0:
            raise ValueError("var has negative entry/entries")
        var = input.new_ones(tuple(input.shape)) * var
    elif not isinstance(var, ops.Tensor):  # (torch: its any() of the bool ``var < 0``; an int var is no float)
        raise TypeError(f"gaussian_nll_loss(): var must be a Tensor or a float, not {type(var).__name__}")
    elif bool((var < 0).any()):
        raise ValueError("var has negative entry/entries")
    if tuple(var.shape) != tuple(input.shape):
        if tuple(input.shape[:-1]) == tuple(var.shape):
            var = var.unsqueeze(-1)
        elif not (input.ndim == var.ndim and
                  sum(v for i, v in zip(input.shape, var.shape) if i != v) == 1):
            raise ValueError("var is of incorrect size")
    if reduction not in ("none", "mean", "sum"):
        raise ValueError(reduction + " is not valid")
    var = var.clone()  # (torch's steps: the clamp changes the values only, the gradient passes as through the copy)
    with _no_grad():
        var.clamp_(min=eps)
    loss = 0.5 * (ops.log(var) + (input - target) ** 2 / var)
    if full:
        loss = loss + 0.5 * math.log(2 * math.pi)
    return loss.mean() if reduction == "mean" else loss.sum() if reduction == "sum" else loss


def multilabel_soft_margin_loss(input, target, weight=None, size_average=None, reduce=None, reduction="mean"):
    """Binary cross-entropy of every class's logit against its 0/1 target, averaged over the classes
    (the last dimension): one loss per sample, then reduced."""
    reduction = _legacy_reduction(size_average, reduce, reduction)
    loss = -(target * logsigmoid(input) + (1 - target) * logsigmoid(-input))
    if weight is not None:
        loss = loss * weight
    loss = loss.sum(input.ndim - 1) / input.shape[-1]
    if reduction not in ("none", "mean", "sum"):
        raise ValueError(reduction + " is not valid")
    return loss if reduction == "none" else loss.mean() if reduction == "mean" else loss.sum()


@_amp.autocasts
def multi_margin_loss(input, target, p=1, margin=1.0, weight=None, size_average=None, reduce=None,
                      reduction="mean"):
    """The multi-class hinge loss: for each sample, ``sum over classes j != y of max(0, margin -
    x[y] + x[j])^p`` (times ``weight[y]``) divided by the number of classes."""
    reduction = _legacy_reduction(size_average, reduce, reduction)
    if p not in (1, 2):
        raise ValueError("only p == 1 and p == 2 supported")
    if weight is not None and weight.ndim != 1:  # torch's Python checks come before its kernel's
        raise ValueError("weight must be one-dimensional")
    _no_forward_formula("multi_margin_loss", input, weight)
    if not _is_floating(input.dtype) or (input.dtype.itemsize == 2 and input.device.type == "cpu"):  # torch's CPU
        # kernel has no 16-bit, integer or bool version (an int64 input was computed in integers)
        raise NotImplementedError(f'"multi_margin_loss_cpu_kernel" not implemented for \'{_torch_name(input.dtype)}\'')
    if weight is not None and weight.dtype != input.dtype:  # (minilora promoted silently)
        raise RuntimeError(f"expected scalar type {_torch_name(input.dtype)} but found {_torch_name(weight.dtype)}")
    if getattr(weight, "requires_grad", False):  # torch's kernel has no gradient for the weight
        raise RuntimeError("The function 'multi_margin_loss' is not differentiable with respect to argument "
                           "'weight'. This input cannot have requires_grad True.")
    _check_multi_margin_shapes(input, target, weight)
    rows = input.reshape(1, -1) if input.ndim <= 1 else input
    labels = target.reshape(-1, 1).long()
    others = np.arange(rows.shape[1])[None, :] != labels.numpy(force=True)  # the target's own column: 0
    z = (margin - rows.gather(1, labels) + rows).relu()  # (ATen's kernel: a gradient only where z > 0, as relu's)
    terms = (z if p == 1 else z * z) * ops.tensor(others, dtype=rows.dtype, device=rows.device)
    if weight is not None:
        terms = terms * weight[labels.reshape(-1)].reshape(-1, 1)
    loss = terms.sum(1) / rows.shape[1]
    loss = loss.reshape(tuple(target.shape)) if input.ndim <= 1 else loss  # one sample: the target's shape
    graph = (input,) if weight is None else (input, weight)
    loss = _reduced("multi_margin_loss", loss, reduction, graph=graph)
    if type(input._array) is np.ndarray and input.dtype in (np.float32, np.float64) and input.numel() \
            and not _holds_no_values(input._array):  # (a meta input: no values, the composed graph's shapes)
        kernel = _MultiMarginKernel(rows._array, labels._array.reshape(-1), p, margin,
                                    None if weight is None else weight._array, reduction)
        loss = _KernelGradients.apply(loss, input, None, None, values=kernel.values(tuple(loss.shape)),
                                      gradients=kernel.gradients(tuple(input.shape)))
        loss = _name_node(loss, "MultiMarginLossBackward0", *graph, graph=graph)  # (torch's one node)
    return _backward_reads(loss, input)  # (torch's multi_margin_loss_backward(grad, self, target, ...))


class _MultiMarginKernel:
    """ATen's CPU multi_margin_loss kernels (LossMultiMargin.cpp) on [N, C] rows: each row's terms ``z = (margin -
    x[y]) + x[d]`` where ``z > 0``, in class order, in the dtype (z or z * z, times weight[y]), the row's sum
    divided by C; 'sum' and 'mean' add the rows in double (acc_type). The backward's terms are ``g`` (1 / (N C)
    for 'mean', else 1 / C, rounded once) or ``2 g z``, times weight[y], x[y]'s gradient their running negative,
    then all times the output's gradient. The composed ops added and scaled in other orders (an ulp off)."""

    def __init__(self, x, target, p, margin, weight, reduction):
        self.x, self.target, self.p, self.reduction = x, target, p, reduction
        self.margin, self.kind = x.dtype.type(margin), x.dtype.type
        self.target_weight = None if weight is None else weight[target]
        self.x_target = x[np.arange(x.shape[0]), target]

    def _terms(self, d):
        """(z > 0 and d is not the row's target, z) of every row for class d."""
        z = (self.margin - self.x_target) + self.x[:, d]
        return (z > 0) & (self.target != d), z

    def values(self, shape):
        total = np.zeros(self.x.shape[0], self.x.dtype)
        with np.errstate(all="ignore"):
            for d in range(self.x.shape[1]):
                active, z = self._terms(d)
                h = z if self.p == 1 else z * z
                h = h if self.target_weight is None else h * self.target_weight
                total = np.where(active, total + h, total)
            total = total / self.kind(self.x.shape[1])
        if self.reduction == "none":
            return total.reshape(shape)
        summed = np.cumsum(total.astype(np.float64))[-1]  # (accscalar_t: double, row after row)
        return np.asarray(summed / total.size if self.reduction == "mean" else summed).astype(self.x.dtype)

    def gradients(self, shape):
        frames, classes = self.x.shape
        step = self.kind(1.0 / (frames * classes) if self.reduction == "mean" else 1.0 / classes)
        grad, at_target = np.zeros_like(self.x), np.zeros(frames, self.x.dtype)
        with np.errstate(all="ignore"):
            for d in range(classes):
                active, z = self._terms(d)
                h = np.broadcast_to(step, z.shape) if self.p == 1 else (self.kind(2) * step) * z
                h = h if self.target_weight is None else h * self.target_weight
                grad[:, d] = np.where(active, h, self.kind(0))
                at_target = np.where(active, at_target - h, at_target)
        grad[np.arange(frames), self.target] = at_target

        def kernel_gradients(g, needs):
            if not needs[0]:
                return None, None, None
            scale = g.reshape(-1, 1) if self.reduction == "none" and g.ndim else g.reshape(())
            return (grad * scale).reshape(shape), None, None
        return kernel_gradients


def _check_multi_margin_shapes(input, target, weight):
    """torch's checks: a [C] or [N, C] input, a target with one class index per sample, in range."""
    _check_margin_input(input)
    samples = input.shape[0] if input.ndim == 2 else 1
    if target.ndim > 1 or target.numel() != samples:
        raise RuntimeError(f"multi_margin_loss: target tensor should be 1-D with size equal to the number of input "
                           f"samples (batch size). Expected target size [{samples}], but got {list(target.shape)}. "
                           f"Input has shape {list(input.shape)}.")
    classes = input.shape[-1] if input.ndim else 1
    if weight is not None and weight.numel() != classes:
        raise RuntimeError(f"inconsistent weight size, expected {classes} but got {list(weight.shape)}")
    values = target.numpy(force=True)
    if values.size and (values.min() < 0 or values.max() >= classes):
        raise RuntimeError("target out of range")


# ---- shrinkage and thresholds, PReLU ---------------------------------------------------------------
def threshold(input, threshold, value, inplace=False):
    """``input`` where it is above ``threshold``, else ``value`` (in the input's dtype, as torch). A
    16-bit input is compared in float32, as torch's kernel does (0.1 is not rounded to bfloat16's
    0.1001 first)."""
    _complex_kernel_refused("threshold_cpu", input)
    return _in_place_if(inplace, _threshold, input, threshold, value)


def _threshold(input, threshold, value):
    if str(input.dtype) == "bool":
        raise NotImplementedError('"threshold_cpu" not implemented for \'Bool\'')
    if not _is_floating(input.dtype):  # (both numbers must fit the integer dtype: uint8 refuses -1.0)
        threshold, value = (_checked_number(n, input.dtype) for n in (threshold, value))
    # (a nan is kept, as torch's x <= threshold ? value : x)
    compared = input.float() if input.dtype.itemsize == 2 and _is_floating(input.dtype) else input
    filled = ops.elementwise.fill_where(input, compared <= threshold, value, contiguous=False)  # (input's layout)
    filled = _name_node(filled, "ThresholdBackward0", input, graph=(input,))  # (torch's one node)
    return _backward_reads(_saves_as_torch(filled, input), input)  # torch keeps the input: threshold_backward


def hardshrink(input, lambd=0.5):
    """0 where ``-lambd <= x <= lambd``, else ``x``."""
    _float_kernel_only("hardshrink_cpu", input)
    filled = ops.elementwise.fill_where(input, (input >= -lambd) & (input <= lambd), 0, contiguous=False)
    filled = _name_node(filled, "HardshrinkBackward0", input, graph=(input,))
    return _backward_reads(filled, input)  # (torch's hardshrink_backward(grad, self))


def softshrink(input, lambd=0.5):
    """``x - lambd`` above ``lambd``, ``x + lambd`` below ``-lambd``, 0 between (one kernel in torch:
    a 16-bit input computed in float32, rounded once)."""
    _float_kernel_only("softshrink_check", input)  # (torch's kernel checks lambda in the input's dtype first)
    if lambd < 0:
        raise RuntimeError(f"lambda must be in range [0, inf) for input dtype {input.dtype}, but found {lambd}")
    scalar = _scalar_lambda_positions(input)
    shrunk = _name_node(_softshrink(input, lambd, scalar), "SoftshrinkBackward0", input, graph=(input,))
    return _backward_reads(shrunk, input)  # (torch's softshrink_backward(grad, self))


@_float32_inside
def _softshrink(input, lambd, scalar):
    # (torch's scalar lambda gives x * 0 between the bounds: -0.0 for a negative x; its vectorized body a masked
    # +0; both nan for nan). Its backward is ``0 between the bounds, else grad``: +0 there, however negative or
    # infinite the gradient (the gradient of x * 0 was g * 0: -0.0, or NaN for an inf), and all of it at a NaN x
    between = input.detach() * 0
    if scalar is not None:
        between = ops.where(ops.tensor(scalar), between, 0.0)
    return ops.where(input > lambd, input - lambd,
                     ops.where(input < -lambd, input + lambd, ops.where(input != input, input, between)))


def _scalar_lambda_positions(input):
    """A mask of the elements torch's CPU softshrink kernel gives to its scalar lambda (the rest go through its
    vectorized body, a vector a step: 16 floats or 8 doubles with AVX-512, 32 16-bit numbers; measured), or None
    where every element does (off the CPU's NumPy arrays: all taken as the scalar lambda's)."""
    from .. import float32_math
    x = input._array
    if type(x) is not np.ndarray or not x.size:
        return None
    step = float32_math.HALF_STEP if x.itemsize == 2 else float32_math.FLOAT_LANES * 4 // x.itemsize
    mask = np.zeros(x.size, bool)
    for where in float32_math.scalar_positions(x, step=step):
        mask[where] = True
    return mask.reshape(x.shape)


def tanhshrink(input):
    """``x - tanh(x)`` (two ops in torch, each rounding: the same here)."""
    return input - input.tanh()


@_amp.autocasts
def prelu(input, weight):
    """``x`` where positive, ``weight * x`` elsewhere: one learned slope, or one per channel (dim 1)."""
    if weight.ndim > 1:
        raise RuntimeError(f"prelu: Expected `weight` to be a scalar or 1D tensor, but got: ndim = {weight.ndim}")
    if weight.dtype != input.dtype:
        raise RuntimeError(f"prelu: Type promoting not supported. Got {input.dtype} and {weight.dtype}")
    _complex_kernel_refused("prelu_cpu", input)
    channels = input.shape[1] if input.ndim >= 2 else 1
    if weight.numel() not in (1, channels):
        raise RuntimeError(f"Mismatch of parameter numbers and input channel size. Found parameter numbers = "
                           f"{weight.numel()} and channel size = {channels}.")
    slopes = weight.reshape((1, -1) + (1,) * (input.ndim - 2)) if input.ndim >= 2 and weight.numel() != 1 \
        else weight.reshape(())  # (one slope: a scalar; else one per channel, none for no channels)
    out = _saves_as_torch(_PRelu.apply(input, slopes), input, weight)  # as torch's one node
    out = _name_node(out, "PreluKernelBackward0", input, graph=(input, weight))
    return _backward_reads(out, input, weight)  # (its _prelu_kernel_backward(grad, self, weight))


def _complex_kernel_refused(kernel, input):
    """torch's NotImplementedError for a kernel with no complex version (NumPy would compare complex numbers)."""
    if input.dtype.kind == "c":
        raise NotImplementedError(f'"{kernel}" not implemented for \'{_torch_name(input.dtype)}\'')


def _float_kernel_only(kernel, input):
    """torch's NotImplementedError for an integer input of a float-only kernel."""
    if not np.issubdtype(np.dtype(input.dtype), np.floating) and str(input.dtype) != "bfloat16":
        raise NotImplementedError(f'"{kernel}" not implemented for \'{_torch_name(input.dtype)}\'')


def adaptive_avg_pool1d(input, output_size):
    """``adaptive_avg_pool2d`` of a [N, C, L] (or [C, L]) input seen as images of height 1."""
    if input.ndim not in (2, 3):
        raise RuntimeError(f"adaptive_avg_pool1d(): Expected 2D or 3D tensor, but got {list(input.shape)}")
    size = _one_output_size("adaptive_avg_pool1d", output_size)
    return adaptive_avg_pool2d(input.unsqueeze(-2), (1, size)).squeeze(-2)


# ---- channel-wise dropout --------------------------------------------------------------------------
def _dropout_prob(p):
    if p < 0.0 or p > 1.0:
        raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")


def _training_flag(fn, training):
    """torch's check of the dropout functions' ``training`` (its kernels' ``train``): a bool, not "no" or 0."""
    if training is not True and training is not False:
        _bool_argument(fn, "train", training, position=3)


def dropout1d(input, p=0.5, training=True, inplace=False):
    """Whole channels of a [N, C, L] (or [C, L]) input zeroed with probability ``p``, the rest scaled
    by ``1/(1-p)``."""
    _dropout_prob(p)
    _training_flag("feature_dropout", training)
    if input.ndim not in (2, 3):
        raise RuntimeError(f"dropout1d: Expected 2D or 3D input, but received a {input.ndim}D input. Note that "
                           f"dropout1d exists to provide channel-wise dropout on inputs with 1 spatial dimension, "
                           f"a channel dimension, and an optional batch dimension (i.e. 2D or 3D inputs).")
    return _in_place_if(inplace and training and p > 0, _channel_dropout, input, p, training, 3)


def _channel_dropout(input, p, training, batched_ndim):
    """``feature_dropout`` of ``input``; one of any rank but ``batched_ndim`` is seen as a batch of 1, as torch's
    dropout1d/dropout3d do (so a 3-D input to dropout3d draws one mask entry per row of its first dimension)."""
    if input.ndim != batched_ndim:
        return _feature_dropout(input.unsqueeze(0), p, training).squeeze(0)
    return _feature_dropout(input, p, training)


def _warn_feature_dropout_rank(name, ndim, spatial):
    """torch's deprecation warning for dropout2d / dropout3d given an input of another rank (it still
    runs); the warning points at the caller of ``name``, as torch's."""
    warnings.warn(f"{name}: Received a {ndim}-D input to {name}, which is deprecated and will result in an "
                  f"error in a future release. To retain the behavior and silence this warning, please use "
                  f"dropout instead. Note that {name} exists to provide channel-wise dropout on inputs with "
                  f"{spatial} spatial dimensions, a channel dimension, and an optional batch dimension (i.e. "
                  f"{spatial + 1}D or {spatial + 2}D inputs).", stacklevel=3)


def dropout2d(input, p=0.5, training=True, inplace=False):
    """Whole channels of a [N, C, H, W] input zeroed with probability ``p`` (torch's warnings for
    other ranks; a 3-D input is read as [N, C, L], as torch still does)."""
    _dropout_prob(p)
    _training_flag("feature_dropout", training)
    if input.ndim not in (3, 4):
        _warn_feature_dropout_rank("dropout2d", input.ndim, spatial=2)
    if input.ndim == 3:
        warnings.warn("dropout2d: Received a 3D input to dropout2d and assuming that channel-wise 1D dropout "
                      "behavior is desired - input is interpreted as shape (N, C, L), where C is the channel "
                      "dim. This behavior will change in a future release to interpret the input as one "
                      "without a batch dimension, i.e. shape (C, H, W). To maintain the 1D channel-wise "
                      "dropout behavior, please switch to using dropout1d instead.", stacklevel=2)
    return _in_place_if(inplace and training and p > 0, _feature_dropout, input, p, training)


def dropout3d(input, p=0.5, training=True, inplace=False):
    """Whole channels of a [N, C, D, H, W] (or [C, D, H, W]) input zeroed with probability ``p``."""
    _dropout_prob(p)
    _training_flag("feature_dropout", training)
    if input.ndim not in (4, 5):
        _warn_feature_dropout_rank("dropout3d", input.ndim, spatial=3)
    return _in_place_if(inplace and training and p > 0, _channel_dropout, input, p, training, 5)


# ---- pixel (un)shuffle: channels <-> space (super-resolution's sub-pixel convolution) -----------------
def pixel_shuffle(input, upscale_factor):
    """[*, C r^2, H, W] -> [*, C, H r, W r]: each group of r^2 channels becomes an r x r block."""
    r = _check_shuffle("pixel_shuffle", "upscale_factor", input, upscale_factor)
    *batch, c, h, w = input.shape
    if c % (r * r):
        raise RuntimeError(f"pixel_shuffle expects its input's 'channel' dimension to be divisible by the square "
                           f"of upscale_factor, but input.size(-3)={c} is not divisible by {r * r}")
    k = len(batch)
    blocks = input.reshape(*batch, c // (r * r), r, r, h, w)
    order = list(range(k)) + [k, k + 3, k + 1, k + 4, k + 2]  # [*, C, H, r, W, r]
    shuffled = _in_suggested_format(blocks.permute(*order).reshape(*batch, c // (r * r), h * r, w * r), input)
    return _name_node(shuffled, "PixelShuffleBackward0", input, graph=(input,))  # (torch's one node)


def _in_suggested_format(result, input):
    """``result`` laid out in ``input``'s suggested memory format, as torch's CPU pixel_(un)shuffle and
    channel_shuffle kernels write it (channels_last from a channels_last input; the reshape made it C-contiguous):
    torch's empty(..., memory_format=channels_last) strides, a channel dimension of size 1 included. Always a new
    tensor, as the kernels': the reshapes of a factor or group of 1 view ``input``."""
    from ..factories import contiguous_format, known_layout, layout_order, suggested_format
    format = suggested_format(input._array)
    if format is contiguous_format and result._base is None:
        return result
    laid_out = result.clone(memory_format=format)  # (a new tensor, as torch's kernel writes: never a view of input)
    if format is not contiguous_format:  # ([2, 1, 8, 12]'s strides are (96, 1, 12, 1), not C order's)
        known_layout(laid_out._array, layout_order(laid_out._array, format))
    return laid_out


def pixel_unshuffle(input, downscale_factor):
    """[*, C, H r, W r] -> [*, C r^2, H, W]: the inverse of ``pixel_shuffle``."""
    r = _check_shuffle("pixel_unshuffle", "downscale_factor", input, downscale_factor)
    *batch, c, h, w = input.shape
    for name, size, dim in (("height", h, -2), ("width", w, -1)):
        if size % r:
            raise RuntimeError(f"pixel_unshuffle expects {name} to be divisible by downscale_factor, but "
                               f"input.size({dim})={size} is not divisible by {r}")
    k = len(batch)
    blocks = input.reshape(*batch, c, h // r, r, w // r, r)
    order = list(range(k)) + [k, k + 2, k + 4, k + 1, k + 3]  # [*, C, r, r, H, W]
    unshuffled = _in_suggested_format(blocks.permute(*order).reshape(*batch, c * r * r, h // r, w // r), input)
    return _name_node(unshuffled, "PixelUnshuffleBackward0", input, graph=(input,))


def channel_shuffle(input, groups):
    """[N, C, *] -> [N, C, *] with the channels dealt out as cards: the ``groups`` blocks of C / groups
    channels interleaved (ShuffleNet's channel shuffle), as ``torch.nn.functional.channel_shuffle``."""
    if input.ndim <= 2:
        raise RuntimeError(f"channel_shuffle expects input with > 2 dims, but got input with sizes "
                           f"{list(input.shape)}")
    if groups <= 0:
        raise RuntimeError(f"Number of groups to divide channels in must be positive. Value of groups:{groups}")
    n, c, *rest = input.shape
    if c % groups:
        raise RuntimeError(f"Number of channels must be divisible by groups. Got {c} channels and {groups} groups.")
    out = input.reshape(n, groups, c // groups, *rest).transpose(1, 2).reshape(input.shape)
    out = _in_suggested_format(out, input)  # (torch's kernel writes a new tensor in that format)
    return _name_node(out, "ChannelShuffleBackward0", input, graph=(input,))


native_channel_shuffle = channel_shuffle  # (torch's name for the same kernel)


def gumbel_softmax(logits, tau=1, hard=False, eps=1e-10, dim=-1):
    """A sample from the Gumbel-softmax distribution (Jang et al. 2016), drawn as torch draws it
    (``-log`` of exponential noise, one draw per element in order), so a seeded call gives torch's
    numbers. ``hard=True``: a one-hot of the largest entry, whose gradient is the soft sample's
    (straight-through)."""
    if eps != 1e-10:
        warnings.warn("`eps` parameter is deprecated and has no effect.", stacklevel=2)
    gumbels = -logits.new_zeros(logits.shape).exponential_().log()  # ~Gumbel(0, 1)
    y_soft = ((logits + gumbels) / tau).softmax(dim)
    if not hard:
        return y_soft  # (the reparameterisation trick)
    index = y_soft.max(dim, keepdim=True)[1]
    y_hard = logits.new_zeros(logits.shape).scatter_(dim, index, 1.0)
    return y_hard - y_soft.detach() + y_soft


def _check_shuffle(fn, name, input, factor):
    _int_argument(fn, name, factor)
    if input.ndim < 3:
        raise RuntimeError(f"{fn} expects input to have at least 3 dimensions, but got input with {input.ndim} "
                           f"dimension(s)")
    if factor <= 0:
        raise RuntimeError(f"{fn} expects a positive {name}, but got {factor}")
    return int(factor)


# ---- batch and instance normalisation --------------------------------------------------------------
def batch_norm(input, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1, eps=1e-5):
    """torch's ``F.batch_norm``: ATen's batch norm (``ops.nn.batch_norm``; ``torch.batch_norm``,
    ``native_batch_norm`` and ``instance_norm`` call it directly) after F's own checks, which ATen does not make:
    more than one value a channel in training (ATen normalises a single one: variance 0), and ``eps``."""
    if training is not True and training is not False:
        _bool_argument("batch_norm", "training", training, position=6)
    size = tuple(input.shape)
    if training and size and math.prod(size[:1] + size[2:]) == 1:
        raise ValueError(f"Expected more than 1 value per channel when training, got input size {list(size)}")
    if training and eps <= 0.0:
        raise ValueError(f"batch_norm eps must be positive during training, but got {eps}")
    if eps < 0.0:
        raise ValueError(f"batch_norm eps must be non-negative, but got {eps}")
    return _batch_norm(input, running_mean, running_var, weight, bias, training, momentum, eps)


def instance_norm(input, running_mean=None, running_var=None, weight=None, bias=None, use_input_stats=True,
                  momentum=0.1, eps=1e-5):
    """Each sample's channels normalised on their own: torch's way, ``batch_norm`` of the input seen
    as one sample with N * C channels (weight, bias and running statistics repeated N times); the
    running statistics then take the mean over the samples of their updates."""
    _refuse_integer_batch_norm(input)  # (its mean failed in other words)
    if use_input_stats and int(np.prod(input.shape[2:])) == 1:
        raise ValueError(f"Expected more than 1 spatial element when training, got input size {tuple(input.shape)}")
    if not use_input_stats and (running_mean is None or running_var is None):
        raise RuntimeError("Expected running_mean and running_var to be defined when use_input_stats is false")
    n, c = input.shape[:2]
    repeated = [None if t is None else t.repeat(n) for t in (weight, bias, running_mean, running_var)]
    joined = input.contiguous().reshape(1, n * c, *input.shape[2:])  # (torch's input.contiguous().view(): a sliced
    # input's batch norm is the contiguous kernel's, not the strided loop's)
    out = _batch_norm(joined, repeated[2], repeated[3], repeated[0], repeated[1], use_input_stats, momentum, eps)
    _backward_reads(out, joined, repeated[0], zeros=False)  # (torch's batch_norm node: the bias's gradient too)
    with _no_grad():
        for stat, updated in ((running_mean, repeated[2]), (running_var, repeated[3])):
            if stat is not None and use_input_stats:  # (in eval they are read only: even an empty batch's nan)
                stat.copy_(updated.reshape(n, c).mean(0))
    return out.reshape(input.shape)


# ---- two more margin losses ------------------------------------------------------------------------
@_amp.autocasts
def multilabel_margin_loss(input, target, size_average=None, reduce=None, reduction="mean"):
    """For each sample, its target classes are ``target``'s entries up to the first -1; the loss is
    ``sum over target classes j and non-target classes i of max(0, 1 - (x[j] - x[i]))`` over the
    number of classes (a class listed twice counts twice, as in torch's kernel)."""
    reduction = _legacy_reduction(size_average, reduce, reduction)
    _no_forward_formula("multilabel_margin_loss_forward", input)
    if not _is_floating(input.dtype):  # (torch's kernel has no integer or bool version: NumPy computed one)
        raise NotImplementedError(f'"multilabel_margin_loss_forward_out_frame" not implemented for '
                                  f"'{_torch_name(input.dtype)}'")
    rows, labels = _multilabel_rows(input, target)
    classes = rows.shape[1]
    listed = np.zeros(rows.shape)  # how many times each class is listed as a target
    for n, row in enumerate(labels):
        valid = row[:np.argmax(row == -1)] if (row == -1).any() else row
        np.add.at(listed[n], valid, 1)
    others = ops.tensor((listed == 0)[:, None, :] * listed[:, :, None], dtype=rows.dtype, device=rows.device)
    margins = (1 - rows.unsqueeze(2) + rows.unsqueeze(1)).relu()  # [N, target j, other i] (a gradient where > 0)
    loss = (margins * others).sum((1, 2)) / classes
    loss = _reduced("multilabel_margin_loss", loss.reshape(()) if input.ndim <= 1 else loss, reduction,
                    graph=(input,))
    if type(input._array) is np.ndarray and input.dtype in (np.float32, np.float64):
        values = _multilabel_margin_values(rows._array, labels, listed > 0, reduction, tuple(loss.shape))
        loss = _KernelGradients.apply(loss, input, None, None, values=values,
                                      gradients=_multilabel_margin_gradients(rows._array, labels, listed > 0,
                                                                             input.shape, reduction))
        loss = _name_node(loss, "MultilabelMarginLossBackward0", input, graph=(input,))  # (torch's one node)
    return _backward_reads(loss, input)  # (torch's multilabel_margin_loss_backward(grad, self, target, is_target))


def _multilabel_margin_values(x, labels, is_target, reduction, shape):
    """ATen's multilabel_margin_loss forward: each row's terms ``(1 - x[j]) + x[i]`` (in the dtype) for each target j
    in order and each non-target i with a positive term, added in double and rounded to the dtype per row; the rows
    then added in double and divided by C (and N for 'mean') there, or, for 'none', each row divided by C in the
    dtype. The composed ops summed in the dtype (an ulp off)."""
    kind, classes = x.dtype.type, x.shape[1]
    row_sums = np.zeros(x.shape[0], x.dtype)
    for n, row in enumerate(labels):
        total = 0.0  # (accscalar_t: a Python float is C's double)
        for j in row:
            if j < 0:
                break
            with np.errstate(all="ignore"):
                terms = (kind(1) - x[n, j]) + x[n]
            total = functools.reduce(float.__add__, terms[~is_target[n] & (terms > 0)].tolist(), total)
        row_sums[n] = total
    if reduction == "none" and shape:
        return (row_sums / kind(classes)).reshape(shape)
    total = np.float64(functools.reduce(float.__add__, row_sums.tolist(), 0.0)) / classes
    with np.errstate(invalid="ignore"):  # (no rows: 0 / 0, NaN as torch's)
        return np.asarray(total / x.shape[0] if reduction == "mean" else total).astype(x.dtype).reshape(shape)


def _multilabel_margin_gradients(x, labels, is_target, shape, reduction):
    """ATen's multilabel_margin_loss_backward as a function of (g, needs) for ``KernelGradients``: for each row,
    each target j in order and each non-target i with ``1 - x[j] + x[i] > 0``, ``-= s`` into j and ``+= s`` into
    i, one addition at a time (``s`` = 1 / (N C) for 'mean', 1 / C otherwise, rounded once), then times the
    output's gradient. The composed sum's backward added those terms in another order (an ulp off)."""
    frames, classes = x.shape
    step = x.dtype.type(1.0 / max(frames * classes, 1) if reduction == "mean" else 1.0 / classes)  # (N = 0: no step)
    grad = np.zeros_like(x)
    for n in range(frames):
        for j in labels[n]:
            if j < 0:
                break
            with np.errstate(all="ignore"):
                beaten = ~is_target[n] & ((x.dtype.type(1) - x[n, j] + x[n]) > 0)
            for i in np.flatnonzero(beaten):  # (j is a target, never one of these)
                grad[n, j] -= step
                grad[n, i] += step

    def gradients(g, needs):
        if not needs[0]:
            return None, None, None
        scale = g.reshape(-1, 1) if reduction == "none" and g.ndim else g
        return (grad * scale).reshape(shape), None, None
    return gradients


def _check_margin_input(input):
    """torch's check for the margin losses' [C] or [N, C] input: no empty class dim (N may be 0)."""
    if not (input.ndim == 0 or (input.ndim <= 2 and input.shape[-1] != 0)):
        raise RuntimeError(f"Expected non-empty vector or matrix with optional 0-dim batch size, but got: "
                           f"{list(input.shape)}")


def _multilabel_rows(input, target):
    """The input as [N, C] and the targets as a host array [N, C], checked as torch does."""
    _check_margin_input(input)
    if target.dtype != np.int64:
        raise RuntimeError(f"expected scalar type Long but found {target.dtype}")
    if tuple(target.shape) != tuple(input.shape) or input.ndim > 2:
        raise RuntimeError(f"inconsistent target size: {list(target.shape)} for input of size: {list(input.shape)}")
    labels = target.numpy(force=True).reshape(-1, input.shape[-1] if input.ndim else 1)
    if labels.size and (labels.min() < -1 or labels.max() >= labels.shape[1]):
        raise RuntimeError("argument #2 'target' is out of range")
    return input.reshape(labels.shape), labels


def triplet_margin_loss(anchor, positive, negative, margin=1.0, p=2, eps=1e-6, swap=False, size_average=None,
                        reduce=None, reduction="mean"):
    """``max(d(a, p) - d(a, n) + margin, 0)`` with ``d`` the ``pairwise_distance`` (``ops.nn``'s, which is
    also the top-level ``torch.triplet_margin_loss``); torch's functional form refuses a margin <= 0."""
    if size_average is None and reduce is None and reduction not in ("mean", "sum", "none"):
        raise ValueError(f"{reduction} is not a valid value for reduction")
    _positive_margin(margin)
    return _triplet_margin_loss(anchor, positive, negative, margin, p, eps, swap, size_average, reduce, reduction)


def _positive_margin(margin):
    if margin <= 0:
        raise ValueError(f"margin must be greater than 0, got {margin}")


def triplet_margin_with_distance_loss(anchor, positive, negative, *, distance_function=None, margin=1.0,
                                      swap=False, reduction="mean"):
    """``max(d(a, p) - d(a, n) + margin, 0)`` with any distance ``d`` (default: ``pairwise_distance``);
    ``swap=True`` takes the smaller of ``d(a, n)`` and ``d(p, n)``."""
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"{reduction} is not a valid value for reduction")
    _positive_margin(margin)
    if not anchor.ndim == positive.ndim == negative.ndim:
        raise RuntimeError(f"The anchor, positive, and negative tensors are expected to have the same number of "
                           f"dimensions, but got: anchor {anchor.ndim}D, positive {positive.ndim}D, and negative "
                           f"{negative.ndim}D inputs")
    distance = distance_function if distance_function is not None else pairwise_distance
    to_positive, to_negative = distance(anchor, positive), distance(anchor, negative)
    if swap:
        to_negative = ops.minimum(to_negative, distance(positive, negative))
    loss = (margin + to_positive - to_negative).clamp_min(0)
    return loss.sum() if reduction == "sum" else loss.mean() if reduction == "mean" else loss


def _refuse_mixed_bilinear(input1, input2, weight, bias):
    """torch's first check: one dtype for all (an int64 input1 was multiplied in the float weight's dtype)."""
    named = {"input1": input1, "input2": input2, "weight": weight, **({} if bias is None else {"bias": bias})}
    if len({tensor.dtype for tensor in named.values()}) > 1:
        got = ", ".join(f"{name}: {_cpp_type_name(tensor.dtype)}" for name, tensor in named.items())
        raise RuntimeError(f"All tensors must have the same dtype, got {got}")


@_amp.autocasts  # (not on the CPU's list: its _trilinear's bmm calls are, ops.matmul.trilinear)
def bilinear(input1, input2, weight, bias=None):
    """``y[..., o] = sum over i, j of x1[..., i] weight[o, i, j] x2[..., j] + bias[o]``."""
    _refuse_mixed_bilinear(input1, input2, weight, bias)
    if weight.ndim != 3:
        raise RuntimeError(f"bilinear(): weight must be three-dimensional, got {weight.ndim}D")
    if input1.ndim != input2.ndim or tuple(input1.shape[:-1]) != tuple(input2.shape[:-1]):
        dim = next((d for d, (a, b) in enumerate(zip(input1.shape, input2.shape)) if a != b), 0)
        raise RuntimeError(f"bilinear(): input batch dimensions do not match at dim {dim}: got "
                           f"{input1.shape[dim]} and {input2.shape[dim]}")
    for name, x, axis in (("input1", input1, 1), ("input2", input2, 2)):
        if x.shape[-1] != weight.shape[axis]:
            raise RuntimeError(f"bilinear(): {name} size does not match weight size: got {x.shape[-1]} but "
                               f"expected {weight.shape[axis]}")
    if bias is not None and tuple(bias.shape) != (weight.shape[0],):
        raise RuntimeError(f"bilinear(): bias size does not match weight size: got {bias.shape[-1]} but expected "
                           f"{weight.shape[0]}")
    _no_complex_autograd("_trilinear", np.result_type(input1.dtype, weight.dtype, input2.dtype), input1, weight, input2)
    # ATen's bilinear: the inputs flattened to rows, _trilinear over [rows, out, in1, in2] (each output feature k:
    # input1 @ weight[k], then each row's dot with input2, both torch's bmm: its order, and its inf/NaN where an
    # infinity meets a zero), the rows put back, then + bias
    rows = _trilinear(input1.reshape(-1, input1.shape[-1]), weight, input2.reshape(-1, input2.shape[-1]),
                      (1, 3), (0,), (1, 2), (2, 3))
    out = rows.reshape(*input1.shape[:-1], weight.shape[0])
    return out if bias is None else out + bias


# ---- power-average pooling and local response normalisation (torch's Python, op for op) -----------
def lp_pool1d(input, norm_type, kernel_size, stride=None, ceil_mode=False):
    """``(sum over a window of x^p)^(1/p)`` (p = ``norm_type``; inf: the max of |x|)."""
    return _lp_pool(input, norm_type, kernel_size, stride, ceil_mode, avg_pool1d, max_pool1d,
                    kernel_size if isinstance(kernel_size, int) else kernel_size[0])


def lp_pool2d(input, norm_type, kernel_size, stride=None, ceil_mode=False):
    """``(sum over a window of x^p)^(1/p)`` over [N, C, H, W] (p = ``norm_type``; inf: the max of |x|)."""
    kh, kw = (kernel_size, kernel_size) if isinstance(kernel_size, int) else kernel_size
    return _lp_pool(input, norm_type, kernel_size, stride, ceil_mode, avg_pool2d, max_pool2d, kw * kh)


def lp_pool3d(input, norm_type, kernel_size, stride=None, ceil_mode=False):
    """``(sum over a window of x^p)^(1/p)`` over [N, C, D, H, W] (p = ``norm_type``; inf: the max of |x|)."""
    kd, kh, kw = (kernel_size,) * 3 if isinstance(kernel_size, int) else kernel_size
    return _lp_pool(input, norm_type, kernel_size, stride, ceil_mode, avg_pool3d, max_pool3d, kd * kh * kw)


def _lp_pool(input, norm_type, kernel_size, stride, ceil_mode, average, maximum, window):
    if norm_type == float("inf"):
        return maximum(input.abs(), kernel_size, stride, 0, 1, ceil_mode)
    if norm_type == -float("inf"):
        return -maximum(-input.abs(), kernel_size, stride, 0, 1, ceil_mode)
    out = average(input.pow(norm_type), kernel_size, stride, 0, ceil_mode)
    return (out.sign() * relu(out.abs())).mul(window).pow(1.0 / norm_type)


def _always_with_indices(pool):
    """torch's ``F.max_pool2d_with_indices`` (and kin): the pooling, returning the indices too whatever
    ``return_indices`` says."""
    def with_indices(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
        return pool(input, kernel_size, stride, padding, dilation, ceil_mode, return_indices=True)
    with_indices.__name__ = with_indices.__qualname__ = pool.__name__ + "_with_indices"
    return with_indices


def _adaptive_always_with_indices(pool):
    def with_indices(input, output_size, return_indices=False):
        return pool(input, output_size, return_indices=True)
    with_indices.__name__ = with_indices.__qualname__ = pool.__name__ + "_with_indices"
    return with_indices


max_pool1d_with_indices = _always_with_indices(max_pool1d)
max_pool2d_with_indices = _always_with_indices(max_pool2d)
max_pool3d_with_indices = _always_with_indices(max_pool3d)
adaptive_max_pool1d_with_indices = _adaptive_always_with_indices(adaptive_max_pool1d)
adaptive_max_pool2d_with_indices = _adaptive_always_with_indices(adaptive_max_pool2d)
adaptive_max_pool3d_with_indices = _adaptive_always_with_indices(adaptive_max_pool3d)


def fractional_max_pool2d_with_indices(input, kernel_size, output_size=None, output_ratio=None, return_indices=False,
                                       _random_samples=None):
    return fractional_max_pool2d(input, kernel_size, output_size, output_ratio, True, _random_samples)


def fractional_max_pool3d_with_indices(input, kernel_size, output_size=None, output_ratio=None, return_indices=False,
                                       _random_samples=None):
    return fractional_max_pool3d(input, kernel_size, output_size, output_ratio, True, _random_samples)


def linear_cross_entropy(input, linear_weight, target, *, linear_bias=None, weight=None, reduction="mean",
                         ignore_index=None, label_smoothing=0.0, options=None):
    """torch's ``F.linear_cross_entropy``: ``cross_entropy(linear(input, linear_weight, linear_bias), target)``
    with ``linear_weight`` [C, *out_features, in_features] (out_features: a K-dimensional loss). minilora
    computes the reference form (torch's ``options`` chooses a chunked, lower-memory kernel: refused here)."""
    if options is not None:
        raise NotImplementedError("linear_cross_entropy: options= (torch's chunked kernel) is not implemented in "
                                  "minilora; leave it None for the reference computation")
    if not 1 <= input.ndim <= 2:
        raise RuntimeError(f"expected input with dimensionality 1 or 2, got {input.ndim}")
    if linear_weight.ndim < 2:
        raise RuntimeError(f"expected linear_weight with dimensionality at least 2, got {linear_weight.ndim}")
    batch, in_features = tuple(input.shape[:-1]), input.shape[-1]
    if in_features != linear_weight.shape[-1]:
        raise RuntimeError(f"expected equal input and linear_weight last dimensions (in_features), got "
                           f"{in_features} and {linear_weight.shape[-1]}, respectively")
    classes, out_features = linear_weight.shape[0], tuple(linear_weight.shape[1:-1])
    if linear_bias is not None and tuple(linear_bias.shape) != (classes, *out_features):
        raise RuntimeError(f"expected linear_bias shape {(classes, *out_features)}, got {tuple(linear_bias.shape)}")
    if out_features and not batch:
        raise RuntimeError(f"K-dimensional loss defined by linear_weight shape {tuple(linear_weight.shape)} "
                           f"requires batched input, (N, {in_features}), got unbatched input with shape "
                           f"{tuple(input.shape)}")
    logits_shape = (*batch, classes, *out_features)
    if tuple(target.shape) == logits_shape and ignore_index is not None:
        raise RuntimeError("ignore_index cannot be specified when target contains probabilities")
    flat_weight = linear_weight.reshape(-1, in_features)
    flat_bias = None if linear_bias is None else linear_bias.reshape(-1)
    logits = linear(input, flat_weight, flat_bias).reshape(logits_shape)
    return cross_entropy(logits, target, weight, ignore_index=-100 if ignore_index is None else ignore_index,
                         reduction=reduction, label_smoothing=label_smoothing)


@_amp.autocasts
def conv_tbc(input, weight, bias, pad=0):
    """torch's ``F.conv_tbc``: a 1-D convolution over [time, batch, channels] with ``weight``
    [kernel, in, out] and ``bias`` [out] (fairseq's layout): ``conv1d`` in the other layout."""
    if input.ndim != 3:
        raise RuntimeError("Input must have 3 dims: time, batch, in_channel")
    if weight.ndim != 3:
        raise RuntimeError("Weight tensor must have 3 dims: kernel_width, in_channels, out_channels.")
    if bias.ndim != 1:
        raise RuntimeError("Bias must be 1-D")
    if input.shape[2] != weight.shape[1]:
        raise RuntimeError("Input dim 2 (input channels) is not == dim 1 in the weight tensor")
    if weight.shape[2] != bias.shape[0]:
        raise RuntimeError("Bias size must equal dim 2 in the weight tensor (output channels).")
    out = conv1d(input.permute(1, 2, 0), weight.permute(2, 1, 0), bias, padding=pad)
    return out.permute(2, 0, 1)


@_amp.autocasts
def pdist(input, p=2):
    """The p-norm distances between the rows of ``input`` [N, M], every pair i < j once, in row-major
    order: [N (N - 1) / 2], as ``torch.pdist``."""
    _no_forward_formula("_pdist_forward", input)
    if input.ndim != 2:
        raise RuntimeError(f"pdist only supports 2D tensors, got: {input.ndim}D")
    if not _is_floating(input.dtype):
        raise RuntimeError("pdist only supports floating-point dtypes")
    if p < 0:
        raise RuntimeError("pdist only supports non-negative p values")
    if input.dtype.itemsize == 2 and input.shape[0] > 1 and input.shape[1] > 0:  # (torch's kernel: float and double;
        raise NotImplementedError(f'"pdist" not implemented for \'{_torch_name(input.dtype)}\'')  # one row or no
        # columns never reach it)
    first, second = np.triu_indices(input.shape[0], 1)
    rows = lambda index: input[ops.tensor(index, dtype=np.dtype("int64"), device=input.device)]  # noqa: E731
    difference = rows(first) - rows(second)
    out = difference.norm(p, -1)
    if p == 0:
        if not _holds_no_values(input._array):  # (a meta input: no values to look at)
            out = ops.tensor(_nan_where_a_difference_is(difference._array, out._array), device=input.device)
        if input.requires_grad:  # (torch's _pdist_backward gives zeros for p = 0, where norm's gives None)
            out = ops.elementwise.ZeroGradientTo.apply(out.detach(), input)
    elif p in (1, 2, math.inf) and _pdist_kernel_runs(input._array, p):  # (torch's kernel's values and gradient; the
        x = np.ascontiguousarray(input._array)  # composed graph stays for create_graph)
        dist = out._array.copy() if p == math.inf else _pdist_as_torch(x, p) if x.dtype == np.float32 \
            else _float64_pdist(out._array, x, p)  # (inf: a max, any order gives its value)
        out = _KernelGradients.apply(out, input, None, None, values=dist, gradients=_pdist_gradients(x, dist, p))
    return _name_node(_saves_as_torch(out, input, out), "PdistBackward0", graph=(input,))  # (torch's node keeps
    # both)


def _pdist_kernel_runs(a, p):
    """Do torch's pdist kernel's steps run here for ``a`` (``_pdist_as_torch``, ``_pdist_gradients``)? float32 and
    float64 arrays. (float32's distances are torch's bits; float64's p = 1 and 2 sums are added in an order not found
    yet: the composed distances stand there, and its p = 2 gradient, built on them, is torch's formula but not bits.)"""
    return type(a) is np.ndarray and a.dtype in (np.float32, np.float64) and a.shape[0] > 1 and a.shape[1] > 0 \
        and not _holds_no_values(a)  # (a meta input: no values, the composed graph's shapes)


def _pdist_as_torch(x, p):
    """torch's ``_pdist_forward`` for p = 1 or 2 (float32/float64): each pair's ``|x_i - x_j|`` (squared for p = 2)
    added as ``vec::map2_reduce_all`` adds it in the kernel's AVX2 build (8 floats or 4 doubles a vector: the first
    vector, then each whole vector added lane by lane, the tail into its own lanes, the lanes folded in halves);
    a row narrower than a vector added in order. The square root last for p = 2."""
    first, second = np.triu_indices(len(x), 1)
    terms = np.abs(x[first] - x[second])
    if p == 2:
        terms = terms * terms
    lanes = 32 // x.itemsize
    width = x.shape[1]
    if width < lanes:
        total = np.add.accumulate(terms, axis=1)[:, -1]
    else:
        total = terms[:, :lanes].copy()
        whole = width - width % lanes
        for start in range(lanes, whole, lanes):
            total += terms[:, start:start + lanes]
        total[:, :width - whole] += terms[:, whole:]
        step = lanes // 2
        while step:  # (vec_reduce_all: lane i with lane i ^ step)
            total = total + total[:, np.arange(lanes) ^ step]
            step //= 2
        total = total[:, 0]
    return np.sqrt(total) if p == 2 else total


def _float64_pdist(composed, x, p):
    """float64 pdist: the composed norm's distances (torch's sum order there is not found yet), but the kernel's own
    where its unscaled sum of squares overflows or underflows (one column: the norm is |x_i - x_j|, the kernel's
    sqrt of its square inf past 1.3e154, 0 below 1e-162) -- there the two differ by more than rounding."""
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        kernel = _pdist_as_torch(x, p)
        rounding_apart = np.abs(kernel - composed) <= 1e-12 * np.abs(composed)
    return np.where(rounding_apart | np.isnan(kernel), composed, kernel)


def _pdist_pair_terms(x, dist, grad, p):
    """ATen's pdist backward term of each pair (i < j, row-major) and column: ``grad * diff / dist`` (p = 2),
    ``grad * sign(diff)`` (p = 1), ``grad * sign(diff)`` where ``|diff|`` is the distance (p = inf); 0 where the
    distance is 0 (p = 2), in the input's dtype."""
    first, second = np.triu_indices(len(x), 1)
    diff = x[first] - x[second]
    g, d = grad[:, None], dist[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        if p == 2:
            return np.where(d == 0, diff.dtype.type(0), g * diff / d)
        sign = np.sign(diff)
        if p == 1:
            return g * sign
        return g * sign * (diff.dtype.type(1) - np.minimum(diff.dtype.type(1), np.ceil(np.abs(np.abs(diff) - d))))


def _pdist_gradients(x, dist, p):
    """torch's ``_pdist_backward`` (``backward_down_column_pdist``) as a function of (g, needs) for ``KernelGradients``:
    each column on its own, row i's gradient the pairs' terms added into a zero in the kernel's order: minus those of
    the pairs (k, i), k < i, then plus those of (i, j), j > i."""
    n = len(x)
    pair = np.zeros((n, n), np.int64)
    pair[np.triu_indices(n, 1)] = np.arange(n * (n - 1) // 2)
    pair = pair + pair.T  # (the pair's index either way round; the diagonal's term is masked to +0 below)
    sign = np.triu(np.ones((n, n), x.dtype), 1) - np.tril(np.ones((n, n), x.dtype), -1)

    def gradients(g, needs):
        terms = _pdist_pair_terms(x, dist, np.ascontiguousarray(g), p)
        result = np.empty_like(x)
        for row in range(n):
            signed = terms[pair[row]] * sign[row][:, None]  # (the diagonal: term * 0, made +0 next)
            signed[row] = 0
            result[row] = np.add.accumulate(np.concatenate([np.zeros((1, x.shape[1]), x.dtype), signed]))[-1]
        return (result if needs[0] else None), None, None
    return gradients


def local_response_norm(input, size, alpha=0.0001, beta=0.75, k=1.0):
    """Each value divided by ``(k + alpha * mean of x^2 over the ``size`` neighbouring channels)^beta``
    (AlexNet's normalisation; the window padded with zeros at the channel ends)."""
    if input.ndim < 3:
        raise ValueError(f"Expected 3D or higher dimensionality                          input (got {input.ndim} "
                         f"dimensions)")
    if input.numel() == 0:
        return input
    squares = input.mul(input)
    n, c = input.shape[:2]
    # torch: avg_pool over a window of `size` channels (2-D for [N, C, L], 3-D beyond): an average
    # pool of [N, 1, C, rest] with a (size, 1) window computes the same sums
    squares = squares.reshape(n, 1, c, -1)
    squares = pad(squares, (0, 0, size // 2, (size - 1) // 2))
    div = avg_pool2d(squares, (size, 1), stride=1).reshape(input.shape)
    div = div.mul(alpha).add(k).pow(beta)
    return input / div


# ---- embedding_bag: the sum / mean / max of each bag of embeddings ----------------------------------
@_amp.autocasts  # (not autocast in torch: nor the sums inside)
def embedding_bag(input, weight, offsets=None, max_norm=None, norm_type=2, scale_grad_by_freq=False, mode="mean",
                  sparse=False, per_sample_weights=None, include_last_offset=False, padding_idx=None):
    """PyTorch's ``F.embedding_bag`` (the text classifier of torch's tutorial): the rows of a 2-D
    ``input`` are bags, or a 1-D ``input`` is cut into bags at ``offsets``; each bag's embeddings are
    summed, averaged or max-pooled (``padding_idx`` entries left out; an empty bag gives zeros),
    ``per_sample_weights`` scaling each one in 'sum' mode."""
    ids, starts, stop = _bags(input, offsets, include_last_offset)
    _no_forward_formula("_embedding_bag", weight, per_sample_weights)
    if weight.ndim != 2:
        raise ValueError(f"weight has to be a 2D Tensor, but got Tensor of dimension {weight.ndim}")
    if not _is_floating(weight.dtype):  # (torch's bag kernel takes floating tables only; it names the type so)
        kind = f"CPU{_torch_name(weight.dtype)}Type" if weight.dtype.kind == "c" else weight.type()
        raise RuntimeError(f"Expected tensor for argument #1 'weight' to have one of the following scalar types: "
                           f"Half, BFloat16, Float, Double; but got {kind} instead (while checking arguments for "
                           f"embedding_bag)")
    padding_idx = _row_index("embedding_bag", padding_idx, weight.shape[0])  # (-1 is the last row, as torch)
    if scale_grad_by_freq:  # torch's bag kernel counts frequencies its own way: not reproduced here
        raise NotImplementedError("embedding_bag: scale_grad_by_freq=True is not implemented in minilora")
    if mode not in ("sum", "mean", "max"):
        raise ValueError(f"mode has to be one of sum, mean or max, but got {mode}")
    if per_sample_weights is not None and mode != "sum":
        raise NotImplementedError(f"embedding_bag: per_sample_weights was not None. per_sample_weights is only "
                                  f"supported for mode='sum' (got mode='{mode}'). Please open a feature request "
                                  f"on GitHub.")
    if per_sample_weights is not None and tuple(per_sample_weights.shape) != tuple(input.shape):
        raise ValueError(f"embedding_bag: If per_sample_weights ({tuple(per_sample_weights.shape)}) is not None, "
                         f"then it must have the same shape as the input ({tuple(input.shape)})")
    if ids is None:  # meta ids (or offsets): one row of the table's width per bag, as torch's meta kernel
        return embedding(input.new_zeros((len(starts),)), weight)  # (an embedding of one id per bag: its shape)
    flat = ids.reshape(-1)
    ends = list(starts[1:]) + [flat.size]
    kept = [[i for i in range(a, b) if flat[i] != padding_idx] for a, b in zip(starts, ends)]
    added = _added_by_torchs_kernel(kept, stop, mode, weight, per_sample_weights, padding_idx)
    if mode != "max" and max_norm is None and not sparse and _grad_as_torch_kernel(weight, per_sample_weights):
        with _no_grad():  # the values from the ops below; the gradient from torch's own loop (ops/bags.py)
            value = embedding_bag(input, weight, offsets, mode=mode, per_sample_weights=per_sample_weights,
                                  include_last_offset=include_last_offset, padding_idx=padding_idx)
        bag_of = np.repeat(np.arange(len(starts)), np.diff(np.r_[starts, flat.size]).astype(np.int64))
        inputs = (weight,) if per_sample_weights is None else (weight, per_sample_weights.reshape(-1))
        # (torch's backward reaches every id offset2bag puts in a bag: in 'sum' mode only those its fast path added)
        reached = np.zeros(flat.size, bool)
        reached[[i for bag in (kept if mode == "mean" else added) for i in bag]] = True
        out = _DenseBagGradient.apply(*inputs, value=value._array, ids=flat.astype(np.int64), bag_of=bag_of,
                                      bag_sizes=np.array([len(bag) for bag in kept]), mean=mode == "mean",
                                      reached=reached)
        # torch's node keeps the sample weights, and the weight only for the sample weights' gradient
        return _saves_as_torch(out, _saved_for(weight, per_sample_weights), per_sample_weights)
    if added is not kept and mode == "mean" and _grad_asked(weight, per_sample_weights):
        raise NotImplementedError("embedding_bag: a gradient of mode='mean' with include_last_offset=True and "
                                  "offsets[-1] < len(input) (torch's sums stop at offsets[-1], its gradient "
                                  "does not) is implemented in minilora without max_norm or sparse only")
    rows = embedding(ops.tensor(flat, device=weight.device), weight, None, max_norm, norm_type, scale_grad_by_freq,
                     sparse)
    sizes = [len(bag) for bag in kept]  # (what 'mean' divides by: offset2bag's count, whatever was added)
    fbgemm = _torchs_fast_bag_path(weight, per_sample_weights, padding_idx)
    if str(rows.dtype) == "bfloat16" and mode != "max" and not _grad_asked(weight, per_sample_weights):
        return _bfloat16_bag_sums(rows, per_sample_weights, added, sizes if mode == "mean" else None,
                                  half_away=fbgemm)
    if per_sample_weights is not None and fbgemm and rows.dtype == np.float32:  # (torch's FBGEMM path)
        return _weighted_bag_sums(rows, per_sample_weights.reshape(-1), added)
    if per_sample_weights is not None and not _grad_asked(weight, per_sample_weights) and rows.device.type == "cpu":
        return _scaled_bag_sums(rows, per_sample_weights.reshape(-1), added)
    if per_sample_weights is not None:  # (its other path: each product rounded, then added)
        rows = rows * per_sample_weights.reshape(-1, 1)
    if mode == "max":
        empty = rows[:0].sum(0)  # an empty bag's zeros, still in the graph (torch's output has a grad_fn)
        maxima = [rows[ops.tensor(np.array(bag), device=weight.device)].max(0)[0] if bag else empty for bag in kept]
        return ops.stack(maxima, 0) if maxima else rows[:0]  # (no bags: an empty batch, still in the graph)
    if not _grad_asked(weight) and type(rows._array) is np.ndarray and rows.dtype in (np.float32, np.float64):
        # torch's kernel adds each bag's rows one by one (a matrix product's BLAS order rounded otherwise: 21 of 185)
        sums = ops.tensor(_sums_in_bag_order(rows._array, added), dtype=rows.dtype, device=rows.device)
    else:
        share = np.zeros((len(added), flat.size))
        for b, bag in enumerate(added):
            share[b, bag] = 1.0
        sums = ops.tensor(share, dtype=rows.dtype, device=rows.device) @ rows
    if mode == "sum":
        return sums
    counts = np.maximum(sizes, 1).astype(np.float64).reshape(-1, 1)
    return sums / ops.tensor(counts, dtype=rows.dtype, device=rows.device)  # (torch divides the bag's sum)


def _added_by_torchs_kernel(kept, stop, mode, weight, per_sample_weights, padding_idx):
    """The positions each bag's sum adds on torch's CPU: ``kept`` (each bag's positions, padding left out), but
    where its fast path runs ('sum' and 'mean'), which reads each bag's end from the offsets, the last bag ends at
    ``stop`` (``offsets[-1]`` with ``include_last_offset``): the ids after it are left out, where every other path
    (float64, a padding_idx, 'max', a strided table) puts them in the last bag by offset2bag, as CUDA's kernel does
    (``kept`` itself is returned then)."""
    if mode == "max" or weight.device.type != "cpu" or not _torchs_fast_bag_path(weight, per_sample_weights,
                                                                                  padding_idx):
        return kept
    if not kept or not kept[-1] or kept[-1][-1] < stop:  # (nothing after offsets[-1])
        return kept
    return [[i for i in bag if i < stop] for bag in kept]


def _torchs_fast_bag_path(weight, per_sample_weights, padding_idx):
    """ATen's ``is_fast_path`` for embedding_bag on the CPU: a float32 or 16-bit table with contiguous rows (and
    contiguous sample weights), no padding_idx. Its 'sum' mode reads the bags' bounds from the offsets and makes no
    offset2bag."""
    table = weight._array
    contiguous = lambda a: a.shape[-1] <= 1 or a.strides[-1] == a.itemsize  # noqa: E731
    return ((str(weight.dtype) in ("float32", "float16", "bfloat16")) and padding_idx is None and table.ndim == 2
            and contiguous(table) and (per_sample_weights is None or contiguous(per_sample_weights._array)))


def _grad_as_torch_kernel(weight, per_sample_weights):
    """Whether a gradient is asked of a floating embedding_bag on the CPU, which ops/bags.py then gives as torch's
    kernel accumulates it (16-bit ones in the gradient's own dtype)."""
    inputs = [t for t in (weight, per_sample_weights) if t is not None]
    return (any(t.requires_grad for t in inputs) and ops.is_grad_enabled() and weight.device.type == "cpu"
            and type(weight._array) is np.ndarray and (weight.dtype in (np.float32, np.float64, np.float16)
                                                       or str(weight.dtype) == "bfloat16")
            and all(t.dtype == weight.dtype for t in inputs))


def _grad_asked(*tensors):
    return ops.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def _bfloat16_bag_sums(rows, weights, kept, sizes, half_away):
    """torch's bfloat16 bags (sum and mean; where no gradient is asked, else the ops below, within a bfloat16 step
    of these): each bag's rows (times their sample weights, in float32) added one by one in float32 and the sum
    rounded to bfloat16 once, half away from zero on FBGEMM's path (no padding_idx) or to nearest even on ATen's
    own; 'mean' (``sizes`` given) then divides that bfloat16 sum by the bag's size in float32 and rounds again, as
    ATen divides its bfloat16 output."""
    values = rows.numpy(force=True).astype(np.float32)
    if weights is not None:
        values = values * weights.reshape(-1).numpy(force=True).astype(np.float32)[:, None]
    sums = _sums_in_bag_order(values, kept)
    if half_away:  # FBGEMM's float32 -> bfloat16: add half a step to the bits, then cut
        sums = ((sums.view(np.uint32).astype(np.uint64) + 0x8000) & 0xFFFF0000).astype(np.uint32).view(np.float32)
    out = sums.astype(rows.dtype)
    if sizes is not None:
        out = (out.astype(np.float32) / np.maximum(sizes, 1).astype(np.float32).reshape(-1, 1)).astype(rows.dtype)
    return ops.tensor(out, dtype=rows.dtype, device=rows.device)


def _scaled_bag_sums(rows, weights, kept):
    """Each bag's ``sum(weight_i * row_i)`` as ATen's own loop (``index_select_scale_add``: float64, or a
    padding_idx) adds it: each product rounded, added into the bag's zeros one by one in the bag's order (a plain
    C loop, not fused: measured, 0 of 320 float64 values off; fused, 151); float16's in a float32 buffer, rounded
    once (each product exact). Values only (no gradient asked)."""
    values, weights = rows.numpy(force=True), weights.numpy(force=True)
    if values.dtype.itemsize == 2:  # (float16: FBGEMM's and ATen's 16-bit paths sum in a float32 buffer)
        values, weights = values.astype(np.float32), weights.astype(np.float32)
    return ops.tensor(_sums_in_bag_order(values * weights[:, None], kept).astype(rows.dtype), dtype=rows.dtype,
                      device=rows.device)


def _sums_in_bag_order(values, kept):
    """Each bag's rows of ``values`` added one by one into zeros in the bag's order, all bags a step at a time
    (padded to one length with a zero row: adding 0.0 changes nothing)."""
    length = max((len(bag) for bag in kept), default=0)
    padded = np.concatenate([values, np.zeros((1, values.shape[1]), values.dtype)])
    index = np.array([bag + [values.shape[0]] * (length - len(bag)) for bag in kept], dtype=np.int64)
    sums = np.zeros((len(kept), values.shape[1]), values.dtype)
    for j in range(length):  # in each bag's order
        sums += padded[index[:, j]]
    return sums


def _weighted_bag_sums(rows, weights, kept):
    """Each bag's ``sum(weight_i * row_i)`` as torch's kernel (FBGEMM's, used without a padding_idx) adds it: a
    fused multiply-add per row, in the bag's order (``addcmul``, fused as torch's), from zeros. The bags are
    padded to one length with a zero row of weight 0 (``fma(0, 0, acc)`` is ``acc``)."""
    length = max((len(bag) for bag in kept), default=0)
    pad = rows.shape[0]  # (the index of the appended zero row)
    index = ops.tensor(np.array([bag + [pad] * (length - len(bag)) for bag in kept], dtype=np.int64).reshape(
        len(kept), length), device=rows.device)
    padded_rows = ops.cat([rows, rows.new_zeros((1, rows.shape[1]))])[index]  # [bags, length, dim]
    padded_weights = ops.cat([weights.to(rows.dtype), weights.new_zeros((1,), dtype=rows.dtype)])[index]
    total = rows.new_zeros((len(kept), rows.shape[1]))
    for j in range(length):
        total = ops.addcmul(total, padded_weights[:, j:j + 1], padded_rows[:, j])
    return total


def _bags(input, offsets, include_last_offset):
    """The ids (a host array), where each bag starts, checked as torch checks them, and where the offsets say the
    last bag ends (``offsets[-1]`` with ``include_last_offset``, else the end of the ids)."""
    if input.ndim == 2:
        if offsets is not None:
            raise ValueError(f"if input is 2D, then offsets has to be None, as input is treated is a mini-batch of "
                             f"fixed length sequences. However, found offsets of type {type(offsets)}")
        if input.is_meta:  # (no ids to read: the bags' count, for the result's shape; see embedding_bag)
            return None, [0] * input.shape[0], 0
        ids = input.numpy(force=True)
        return ids, list(range(0, ids.size, ids.shape[1])) if ids.shape[1] else [0] * ids.shape[0], ids.size
    if input.ndim != 1:
        raise ValueError(f"input has to be 1D or 2D Tensor, but got Tensor of dimension {input.ndim}")
    if offsets is None:
        raise ValueError("offsets has to be a 1D Tensor but got None")
    if offsets.ndim != 1:
        raise ValueError("offsets has to be a 1D Tensor")
    if input.is_meta or offsets.is_meta:  # (no offsets to read or check: one bag per offset, as torch's meta kernel)
        return None, [0] * max(offsets.shape[0] - bool(include_last_offset), 0), 0
    ids, starts = input.numpy(force=True), [int(o) for o in offsets.numpy(force=True)]
    if starts and starts[0] != 0:
        raise RuntimeError(f"offsets[0] has to be 0, i.e., the first sequence in the mini-batch has to start from "
                           f"position 0. However, got {starts[0]}")
    if starts and starts[-1] > ids.size:
        raise RuntimeError(f"offsets[-1] can not be greater than input's length {ids.size} but got offsets[-1] of "
                           f"{starts[-1]}")
    if include_last_offset and starts:
        return ids, starts[:-1], starts[-1]
    return ids, starts, ids.size


# ---- alpha dropout: dropout that keeps SELU's zero mean and unit variance ---------------------------
_SELU_ALPHA = 1.7580993408473766  # -SELU's negative saturation value, torch's constant


def alpha_dropout(input, p=0.5, training=False, inplace=False):
    """Dropped elements set to SELU's saturation value, then everything scaled and shifted back to
    mean 0, variance 1 (torch's formula). Note torch's default here: ``training=False``."""
    return _alpha_dropout(input, p, training, inplace, channels=False)


def feature_alpha_dropout(input, p=0.5, training=False, inplace=False):
    """``alpha_dropout`` of whole channels (dimension 1)."""
    return _alpha_dropout(input, p, training, inplace, channels=True)


def _alpha_dropout(input, p, training, inplace, channels):
    """torch's _dropout_impl: its shortcuts, then the feature noise's shape check and the integer refusal
    (its ``noise.add(-1).mul_(alpha * a)`` has no integer result)."""
    _dropout_prob(p)
    _training_flag("feature_alpha_dropout" if channels else "alpha_dropout", training)
    if not training or p == 0 or input.numel() == 0:
        return input
    if p < 1 and channels and input.ndim < 2:
        raise RuntimeError("Feature dropout requires at least 2 dimensions in the input")
    if p < 1 and not _is_floating(input.dtype) and input.dtype.kind != "c":  # (bool noise: add(-1) made it Long)
        noise_dtype = np.dtype(np.int64) if input.dtype == np.bool_ else None
        _refuse_integer_dropout(input, p, channels=channels, noise_dtype=noise_dtype)
    if input.is_meta:  # (no values: no noise drawn, as torch's meta kernel)
        return input if inplace else input * 1.0
    return _in_place_if(inplace, _alpha_dropped, input, p, channels)


def _alpha_dropped(input, p, channels):
    if p == 1:
        return input * input.new_zeros(())
    a = 1.0 / math.sqrt((_SELU_ALPHA * _SELU_ALPHA * p + 1) * (1 - p))
    # torch's steps, each stored in the input's dtype: b = (noise - 1) * alpha a + alpha a p; noise *= a
    work = np.float64 if input.dtype == np.float64 else np.float32
    stored = lambda v: np.asarray(v).astype(input.dtype).astype(work)  # noqa: E731
    noise = _dropout_noise(input._array, p, channels=channels).astype(work)  # torch's bernoulli_(1 - p)
    shift = stored(stored(stored(noise - 1) * work(_SELU_ALPHA * a)) + work(_SELU_ALPHA * a * p))
    noise = stored(noise * work(a))
    as_input = lambda values: ops.tensor(values, dtype=input.dtype, device=input.device)  # noqa: E731
    return input * as_input(noise) + as_input(shift)


# ---- multi-head attention (nn.MultiheadAttention's computation) ----------------------------------------
def multi_head_attention_forward(query, key, value, embed_dim_to_check, num_heads, in_proj_weight, in_proj_bias,
                                 bias_k, bias_v, add_zero_attn, dropout_p, out_proj_weight, out_proj_bias,
                                 training=True, key_padding_mask=None, need_weights=True, attn_mask=None,
                                 use_separate_proj_weight=False, q_proj_weight=None, k_proj_weight=None,
                                 v_proj_weight=None, static_k=None, static_v=None, average_attn_weights=True,
                                 is_causal=False):
    """torch's ``F.multi_head_attention_forward``: ``nn.MultiheadAttention``'s forward with its weights
    given. Inputs ``[L, N, E]`` (sequence first) or unbatched ``[L, E]``; returns ``(output, weights)``
    as the module does. ``static_k`` / ``static_v`` ``[N * num_heads, S, E / num_heads]`` replace the
    projected keys / values."""
    if use_separate_proj_weight:
        if q_proj_weight is None or k_proj_weight is None or v_proj_weight is None:
            raise AssertionError("use_separate_proj_weight is True but q_proj_weight, k_proj_weight or "
                                 "v_proj_weight is None")
        weights = (q_proj_weight, k_proj_weight, v_proj_weight)
    else:
        if in_proj_weight is None:
            raise AssertionError("use_separate_proj_weight is False but in_proj_weight is None")
        weights = in_proj_weight
    return _multi_head_attention(
        query, key, value, embed_dim_to_check, num_heads, weights, in_proj_bias, bias_k, bias_v, add_zero_attn,
        dropout_p, lambda out: linear(out, out_proj_weight, out_proj_bias), training, key_padding_mask,
        need_weights, attn_mask, average_attn_weights, is_causal, batch_first=False, static_kv=(static_k, static_v),
        separate_weights=use_separate_proj_weight)


def _multi_head_attention(query, key, value, embed_dim, num_heads, weights, in_proj_bias, bias_k, bias_v,
                          add_zero_attn, dropout_p, out_proj, training, key_padding_mask, need_weights, attn_mask,
                          average_attn_weights, is_causal, batch_first, static_kv=(None, None), separate_weights=False,
                          native=False):
    """The computation, in torch's steps and layouts (its bits, gradients too, follow from them): ``weights`` the
    packed ``[3E, E]`` projection, or the three separate ones; ``out_proj`` a callable, the module's own -- which
    LoRA may replace. Which inputs are the same tensor matters, as in torch: self-attention projects once.
    ``native``: where the module takes torch's inference kernel (_native_multi_head_attention): the weights' steps
    whether or not they are wanted, the query scaled by the float ``1 / sqrt(d)``, the heads' weights summed, then
    divided; with a mask, its own masked softmax (``_native_masked_softmax``). ``native="nested"``: the kernel on
    TransformerEncoder's nested sequences (``_nested_softmax``)."""
    _check_key_value_shapes(key, value, batch_first, separate_weights)
    _check_mask_ranks(query, key_padding_mask, attn_mask)
    key_padding_mask = _canonical_mask(key_padding_mask, "key_padding_mask", _none_or_dtype(attn_mask), "attn_mask",
                                       query.dtype)
    if is_causal and attn_mask is None:  # torch: is_causal is only a hint about attn_mask
        raise RuntimeError("Need attn_mask if specifying the is_causal hint. You may use the "
                           "Transformer module method `generate_square_subsequent_mask` to "
                           "create this mask.")
    # torch then trusts the hint (its inference kernel never does: it applies the mask it is given)
    sdpa_causal = is_causal and key_padding_mask is None and not need_weights and not native
    attn_mask = None if sdpa_causal else _canonical_mask(attn_mask, "attn_mask", None, "", query.dtype,
                                                         check_other=False)
    batched, batch_first_input = query.ndim == 3, query
    if batched and batch_first:
        query, key, value = _sequence_first(query, key, value)
    if not batched:  # one sequence: a batch of one (sequence first)
        query, key, value = (t.unsqueeze(1) for t in (query, key, value))
        if key_padding_mask is not None:
            key_padding_mask = key_padding_mask.unsqueeze(0)
    length, n, e = query.shape
    if e != embed_dim:
        raise AssertionError(f"was expecting embedding dimension of {embed_dim}, but got {e}")
    if embed_dim % num_heads:
        raise AssertionError(f"embed_dim {embed_dim} not divisible by num_heads {num_heads}")
    if native:
        q, k, v = _native_in_projection(batch_first_input, weights, in_proj_bias, embed_dim)
    else:
        q, k, v = _in_projection(query, key, value, weights, in_proj_bias, embed_dim)
    attn_mask = _attention_mask_3d(attn_mask, n * num_heads, length, key.shape[0])
    heads = _Heads(n, num_heads, embed_dim // num_heads)
    k, v, attn_mask, key_padding_mask = heads.keys_values(k, v, static_kv, bias_k, bias_v, add_zero_attn, attn_mask,
                                                          key_padding_mask)
    attn_mask = _merged_padding_mask(attn_mask, key_padding_mask, heads, k.shape[1])
    dropout_p = dropout_p if training else 0.0
    if need_weights or native:
        scale = _native_query_scale(heads.head_dim, q.dtype) if native else math.sqrt(1.0 / float(heads.head_dim))
        out, attention = _attention_with_weights(heads.split(q), k, v, attn_mask, dropout_p, scale, native)
        if native:  # (the kernel's transform_0213: its rows batch first, as the output projection takes them)
            out = out.view(n, num_heads, length, heads.head_dim).transpose(1, 2).reshape(n * length, embed_dim)
        else:
            out = out.transpose(0, 1).reshape(length * n, embed_dim)
        attention = attention if need_weights else None
    else:
        out, attention = _attention_by_sdpa(heads.split(q), k, v, attn_mask, dropout_p, sdpa_causal, heads), None
        out = out.permute(2, 0, 1, 3).reshape(n * length, embed_dim)
    out = out_proj(out)  # (the rows' order counts: MKL's gemm may sum a block's last rows in another order)
    out = out.view(n, length, out.shape[1]).transpose(1, 0) if native else out.view(length, n, out.shape[1])
    if attention is not None:
        attention = attention.view(n, num_heads, length, k.shape[1])
        if average_attn_weights:
            attention = attention.sum(1) / num_heads if native else attention.mean(dim=1)
    if not batched:
        return out.squeeze(1), None if attention is None else attention.squeeze(0)
    return (out.transpose(1, 0) if batch_first else out), attention


def _sequence_first(query, key, value):
    """nn.MultiheadAttention's transposes of batch-first inputs, keeping which of them are the same tensor."""
    if key is value:
        if query is key:
            query = key = value = query.transpose(1, 0)
            return query, key, value
        query, key = (x.transpose(1, 0) for x in (query, key))
        return query, key, key
    return tuple(x.transpose(1, 0) for x in (query, key, value))


def _in_projection(query, key, value, weights, bias, embed_dim):
    """torch's _in_projection_packed / _in_projection: q, k, v [T, N, E]. With the packed weight, self-attention
    is one product (keys and values the same tensor: one for both), split as torch splits it."""
    if not isinstance(weights, _Tensor):
        b_q, b_k, b_v = (None,) * 3 if bias is None else bias.chunk(3)
        return tuple(linear(x, w, b) for x, w, b in zip((query, key, value), weights, (b_q, b_k, b_v)))
    if weights.ndim != 2 or weights.shape[0] != 3 * embed_dim:
        raise AssertionError(f"in_proj_weight should be [{3 * embed_dim}, {embed_dim}]")
    if key is value and query is key:
        return tuple(_packed_split(linear(query, weights, bias), 3, embed_dim))
    if key is value:
        w_q, w_kv = weights.split([embed_dim, 2 * embed_dim])
        b_q, b_kv = (None, None) if bias is None else bias.split([embed_dim, 2 * embed_dim])
        k, v = _packed_split(linear(key, w_kv, b_kv), 2, embed_dim)
        return linear(query, w_q, b_q), k, v
    w_q, w_k, w_v = weights.chunk(3)
    b_q, b_k, b_v = (None,) * 3 if bias is None else bias.chunk(3)
    return linear(query, w_q, b_q), linear(key, w_k, b_k), linear(value, w_v, b_v)


def _native_in_projection(x, weight, bias, embed_dim):
    """The inference kernel's qkv_projection: one product of the batch-first input's rows (contiguous, whatever
    the weight's grad), the bias added to the finished product (its transform_bias_rescale_qkv; a 16-bit product
    rounded first), as sequence-first q, k, v."""
    qkv = ops.matmul(x, weight.t()) + bias
    return [part.transpose(0, 1).contiguous() for part in qkv.split(embed_dim, -1)]


def _packed_split(projected, parts, embed_dim):
    """[..., parts * E] -> ``parts`` tensors [..., E], through torch's contiguous [parts, ..., E] copy."""
    stacked = projected.unflatten(-1, (parts, embed_dim)).unsqueeze(0).transpose(0, -2).squeeze(-2).contiguous()
    return [stacked[i] for i in range(parts)]


def _attention_mask_3d(attn_mask, batch_heads, length, source):
    """A 2-D mask [L, S] as [1, L, S], a 3-D one checked against [N H, L, S] (torch's words)."""
    if attn_mask is None:
        return None
    expected = {2: (length, source), 3: (batch_heads, length, source)}[attn_mask.ndim]  # (ranks checked)
    if tuple(attn_mask.shape) != expected:
        raise RuntimeError(f"The shape of the {attn_mask.ndim}D attn_mask is {_torch_spelling(attn_mask.shape)}, "
                           f"but should be {expected}.")
    return attn_mask.unsqueeze(0) if attn_mask.ndim == 2 else attn_mask


class _Heads:
    """The layouts of torch's multi_head_attention_forward: [T, N, E] <-> [N H, T, D]."""

    def __init__(self, n, num_heads, head_dim):
        self.n, self.num_heads, self.head_dim = n, num_heads, head_dim

    def split(self, x):
        return x.view(x.shape[0], self.n * self.num_heads, self.head_dim).transpose(0, 1)

    def keys_values(self, k, v, static_kv, bias_k, bias_v, add_zero_attn, attn_mask, key_padding_mask):
        """Keys and values [N H, S, D]: projected (or static), with bias_k / bias_v and a zero key appended (the
        masks padded for each)."""
        static_k, static_v = static_kv
        if bias_k is not None and bias_v is not None:
            if static_k is not None or static_v is not None:
                raise AssertionError("bias cannot be added to static key.")
            k, v = ops.cat([k, bias_k.repeat(1, self.n, 1)]), ops.cat([v, bias_v.repeat(1, self.n, 1)])
            attn_mask, key_padding_mask = _padded_masks(attn_mask, key_padding_mask)
        k = self.split(k) if static_k is None else self._static(static_k, "k")
        v = self.split(v) if static_v is None else self._static(static_v, "v")
        if add_zero_attn:
            zeros = k.new_zeros((self.n * self.num_heads, 1, self.head_dim))
            k, v = ops.cat([k, zeros], dim=1), ops.cat([v, zeros.to(v.dtype)], dim=1)
            attn_mask, key_padding_mask = _padded_masks(attn_mask, key_padding_mask)
        return k, v, attn_mask, key_padding_mask

    def _static(self, static, name):
        if static.shape[0] != self.n * self.num_heads:
            raise AssertionError(f"expecting static_{name}.size(0) of {self.n * self.num_heads}, but got "
                                 f"{static.shape[0]}")
        if static.shape[2] != self.head_dim:
            raise AssertionError(f"expecting static_{name}.size(2) of {self.head_dim}, but got {static.shape[2]}")
        return static


def _padded_masks(attn_mask, key_padding_mask):
    """Both masks with one more key (attended: 0 or False), as torch pads them for an appended key."""
    return tuple(None if mask is None else pad(mask, (0, 1)) for mask in (attn_mask, key_padding_mask))


def _merged_padding_mask(attn_mask, key_padding_mask, heads, source):
    """The key padding mask [N, S] added to the attention mask, as [N H, 1, S] (torch's _check_key_padding_mask
    first)."""
    if key_padding_mask is None:
        return attn_mask
    for axis, size in enumerate((heads.n, source)):
        if key_padding_mask.ndim <= axis or key_padding_mask.shape[axis] != size:
            got = key_padding_mask.shape[axis] if key_padding_mask.ndim > axis else None
            raise AssertionError(f"Expected key_padded_mask.shape[{axis}] to be {size}, but got {got}")
    padding = key_padding_mask.view(heads.n, 1, 1, source).expand(-1, heads.num_heads, -1, -1).reshape(
        heads.n * heads.num_heads, 1, source)
    return padding if attn_mask is None else attn_mask + padding


def _native_query_scale(head_dim, dtype):
    """_native_multi_head_attention's ``1 / sqrt(d)``, computed in the input's dtype (float32 for 16-bit inputs)."""
    work = np.float64 if dtype == np.float64 else np.float32
    return float(work(1.0) / np.sqrt(work(head_dim)))


def _attention_with_weights(q, k, v, attn_mask, dropout_p, scale, native=False):
    """torch's need_weights path: the query scaled first, baddbmm with the mask, softmax, dropout (the weights
    returned are the dropped ones), bmm. (``native``: the inference kernel's bmm, its masked softmax after.)"""
    q_scaled = q * scale
    if attn_mask is None or native:
        scores = ops.bmm(q_scaled, k.transpose(-2, -1))
    else:
        scores = ops.baddbmm(attn_mask, q_scaled, k.transpose(-2, -1))
    if attn_mask is None or not native:
        weights = softmax(scores, dim=-1)
    elif native == "nested":
        weights = _nested_softmax(scores, attn_mask)
    else:
        weights = _native_masked_softmax(scores, attn_mask)
    if dropout_p > 0.0:
        weights = dropout(weights, p=dropout_p)
    return ops.bmm(weights, v), weights


def _native_masked_softmax(scores, attn_mask):
    """The inference kernel's softmax of [N H, L, S] ``scores``: the merged float mask (0 or -inf) read as bools
    (nonzero: left out), then torch's ``_masked_softmax`` (``ops.reduce.masked_softmax_rows_as_torch``: its own
    scalar loop, not the vectorized softmax's order). Inference only: nothing here is differentiated."""
    masked = np.broadcast_to((attn_mask != 0).numpy(force=True), scores.shape)
    rows = scores.numpy(force=True).reshape(-1, scores.shape[-1])
    weights = ops.reduce.masked_softmax_rows_as_torch(rows, masked.reshape(rows.shape))
    return ops.tensor(weights.reshape(scores.shape), dtype=scores.dtype, device=scores.device)


def _nested_softmax(scores, attn_mask):
    """The inference kernel's softmax of [N H, L, S] ``scores`` on sequences torch has nested (TransformerEncoder's
    fast path: right-padded, the padding mask's zeros a prefix of each row): its nested softmax is the ordinary one
    over each sequence's own keys -- not the masked softmax's scalar loop -- and 0 past them."""
    kept = (attn_mask == 0).sum(-1).numpy(force=True).reshape(-1)  # [N H] (one row of the mask per head)
    weights = scores.new_zeros(scores.shape)
    for length in np.unique(kept):
        rows = ops.tensor(np.flatnonzero(kept == length), device=scores.device)
        weights[rows, :, :length] = softmax(scores[rows, :, :length], dim=-1)
    return weights


def _attention_by_sdpa(q, k, v, attn_mask, dropout_p, is_causal, heads):
    """torch's need_weights=False path: scaled_dot_product_attention on [N, H, T, D] views."""
    if attn_mask is not None:
        attn_mask = attn_mask.unsqueeze(0) if attn_mask.shape[0] == 1 else \
            attn_mask.view(heads.n, heads.num_heads, -1, k.shape[1])
    as_4d = lambda t: t.view(heads.n, heads.num_heads, t.shape[1], heads.head_dim)  # noqa: E731
    return scaled_dot_product_attention(as_4d(q), as_4d(k), as_4d(v), attn_mask, dropout_p, is_causal)


def _check_key_value_shapes(key, value, batch_first, separate_weights):
    """torch's AssertionError when keys and values disagree (in their sequence and batch dims only where
    each has its own projection, kdim/vdim), shapes as torch shows them: sequence first."""
    def shown(t):
        return type(t.shape)((t.shape[1], t.shape[0], t.shape[2])) if batch_first and t.ndim == 3 else t.shape
    if separate_weights and key.shape[:-1] != value.shape[:-1]:
        raise AssertionError(f"key's sequence and batch dims {shown(key)[:2]} do not match value's "
                             f"{shown(value)[:2]}")
    if not separate_weights and key.shape != value.shape:
        raise AssertionError(f"key shape {shown(key)} does not match value shape {shown(value)}")


def _check_mask_ranks(query, key_padding_mask, attn_mask):
    """torch's _mha_shape_check of the masks' ranks (a batched query: a 2-D padding mask; unbatched: 1-D)."""
    kind, padding_rank = ("batched (3-D)", 2) if query.ndim == 3 else ("unbatched (2-D)", 1)
    if key_padding_mask is not None and key_padding_mask.ndim != padding_rank:
        raise AssertionError(f"For {kind} `query`, expected `key_padding_mask` to be `None` or {padding_rank}-D but "
                             f"found {key_padding_mask.ndim}-D tensor instead")
    if attn_mask is not None and attn_mask.ndim not in (2, 3):
        raise AssertionError(f"For {kind} `query`, expected `attn_mask` to be `None`, 2-D or 3-D but found "
                             f"{attn_mask.ndim}-D tensor instead")


def _none_or_dtype(input):
    """torch's F._none_or_dtype: a mask's dtype, or None."""
    if input is None:
        return None
    if isinstance(input, _Tensor):
        return input.dtype
    raise RuntimeError("input to _none_or_dtype() must be None or torch.Tensor")


def _canonical_mask(mask, mask_name, other_type, other_name, target_type, check_other=True):
    """torch's F._canonical_mask: a bool mask as an additive float one (True -> -inf) of ``target_type``, a
    float mask as it is; another dtype is torch's AssertionError, and a mask whose dtype differs from the
    other mask's (a bool padding mask beside a float attention mask) torch's deprecation warning."""
    if mask is None:
        return None
    floating = _is_floating(mask.dtype)
    if mask.dtype != np.bool_ and not floating:
        raise AssertionError(f"only bool and floating types of {mask_name} are supported")
    if check_other and other_type is not None and mask.dtype != other_type:
        warnings.warn(f"Support for mismatched {mask_name} and {other_name} is deprecated. Use same type for both "
                      "instead.", stacklevel=3)
    return mask if floating else _mha_mask_as_float(mask, target_type)


def _mha_mask_as_float(mask, dtype):
    if mask.dtype == np.bool_:
        return ops.masked_fill(mask.new_zeros(mask.shape, dtype=dtype), mask, float("-inf"))
    if not _is_floating(mask.dtype):
        raise AssertionError(f"only bool and floating types of masks are supported, got {mask.dtype}")
    return mask


# torch's refusal of a number, a list, None or an array where these functions take a Tensor (_argument_types.py)
from .._argument_types import check_functional_arguments as _check_functional_arguments  # noqa: E402

_check_functional_arguments(globals())
