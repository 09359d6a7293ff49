"""torch's ``native_*`` ops: the norms and dropout as ATen's kernels return them, with what they keep for backward.

    out, mean, rstd = torch.native_layer_norm(x, [4], w, b, 1e-5)      # mean, rstd: [*, 1]
    out, save_mean, save_invstd = torch.native_batch_norm(x, w, b, rm, rv, True, 0.1, 1e-5)
    out, mask = torch.native_dropout(x, 0.1, True)                     # mask: bool, True = kept

The outputs are the functional ops' own (``F.layer_norm``, ``F.batch_norm``, ``F.group_norm``: the same
values and gradients, under the same node names); the statistics are computed as those ops' torch-bit paths
compute theirs (``ops/nn.py``: ``float32_sums.row_moments`` for layer and group norm, ``aten_training_statistics``
for batch norm, ``batch_norm_16bit_statistics`` for its 16-bit kernels), so a float32 mean or rstd is torch's bits.
As torch's, layer and batch norm's statistics carry no gradient, group norm's do. ``native_dropout`` draws
F.dropout's mask and scales as ATen's kernel. ``batch_norm_update_stats`` is SyncBatchNorm's piece torch's CPU
build has; the others (``batch_norm_stats``, ``batch_norm_elemt``, ``batch_norm_gather_stats*``,
``batch_norm_backward_*``) are torch's CUDA kernels' maths on any device (the last section).
"""
import math

import numpy as np

from .. import amp as _amp, float32_sums
from ..device import xp_of
from ..dtypes import compute_dtype, float32, torch_name
from ..factories import empty, suggested_format
from ..tensor import Function, Tensor, is_grad_enabled, name_node, no_grad
from . import nn as _nn
from .shape import stack


def _stat(array, like):
    """A statistic (no gradient) on ``like``'s device."""
    return Tensor._make(array, like._device, False, None)


def _unread(shape, dtype, like):
    """A meta input's statistic: its shape and dtype, no value computed (nor a page of the input read)."""
    return empty(shape, dtype=dtype, device=like.device)


# ---- layer norm ------------------------------------------------------------------------------------
@_amp.autocasts  # (on torch's CUDA list, float32; on no CPU list: run as called)
def native_layer_norm(input, normalized_shape, weight, bias, eps):
    """``(out, mean, rstd)``: ``F.layer_norm``'s output, and each row's mean and 1 / sqrt(var + eps) shaped
    ``input.shape[:axis] + (1,) * len(normalized_shape)``."""
    out = _nn.layer_norm(input, list(normalized_shape), weight, bias, eps)
    width = math.prod(normalized_shape)
    axis = input.ndim - len(normalized_shape)
    shape = tuple(input.shape[:axis]) + (1,) * len(normalized_shape)
    if input.is_meta:
        mixed = any(t is not None and t.dtype == float32 for t in (weight, bias))
        dtype = float32 if mixed and compute_dtype(input.dtype) != input.dtype else input.dtype
        return out, _unread(shape, dtype, input), _unread(shape, dtype, input)
    mean, rstd = _layer_norm_statistics(input, width, eps, weight, bias)
    return out, _stat(mean.reshape(shape), input), _stat(rstd.reshape(shape), input)


def _layer_norm_statistics(input, width, eps, weight, bias):
    x = input._array
    rows = _nn._rows(x, width)
    if type(x) is np.ndarray and x.dtype in (np.float32, np.float64) and rows.size:
        mean, variance = float32_sums.row_moments(np.ascontiguousarray(rows))
        return mean, 1 / np.sqrt(variance + x.dtype.type(eps))
    if type(x) is np.ndarray and compute_dtype(x.dtype) != x.dtype and rows.size:  # (16-bit: its own kernel)
        mean, rstd = _nn._layer_norm_16bit_statistics(rows.astype(np.float32), eps, x.dtype)
        mixed = any(t is not None and t.dtype == float32 for t in (weight, bias))  # (float32 parameters: kept in
        return (mean, rstd) if mixed else (mean.astype(x.dtype), rstd.astype(x.dtype))  # float32, as torch's)
    return _plain_row_statistics(rows, eps)


def _plain_row_statistics(rows, eps):
    """Each row's mean and 1 / sqrt(biased var + eps) in the compute dtype, rounded to the rows' (the devices
    whose kernels are not torch's CPU ones, and empty rows)."""
    xp, dtype = xp_of(rows), rows.dtype
    wide = rows.astype(compute_dtype(dtype))
    mean = wide.mean(axis=1) if rows.shape[1] else xp.full(len(rows), np.nan, wide.dtype)
    variance = ((wide - mean[:, None]) ** 2).mean(axis=1) if rows.shape[1] else mean
    return mean.astype(dtype), (1 / xp.sqrt(variance + wide.dtype.type(eps))).astype(dtype)


# ---- batch norm ------------------------------------------------------------------------------------
def native_batch_norm(input, weight, bias, running_mean, running_var, training, momentum, eps):
    """``(out, save_mean, save_invstd)``: ``F.batch_norm``'s output (the running statistics updated in training),
    and in training the batch's mean and 1 / sqrt(biased var + eps) per channel; in eval two empty tensors, as
    torch's CPU kernel returns."""
    out = _nn.batch_norm(input, running_mean, running_var, weight, bias, training, momentum, eps)
    if not training:
        return out, _unread((0,), input.dtype, input), _unread((0,), input.dtype, input)
    if input.is_meta:
        return out, _unread((input.shape[1],), input.dtype, input), _unread((input.shape[1],), input.dtype, input)
    if _nn._is_16bit_float(input) and type(input._array) is np.ndarray:  # (torch's two 16-bit kernels' own)
        mixed = not _nn._all_16bit_parameters(input, running_mean, running_var, weight, bias)
        stats = _nn.batch_norm_16bit_statistics(input, eps, mixed)
        dtype = float32 if mixed else input.dtype
        return out, _stat(stats.short_mean.astype(dtype), input), _stat(stats.invstd.astype(dtype), input)
    mean, variance = _batch_statistics(input)
    invstd = (1 / xp_of(variance).sqrt(variance.astype(np.float64) + eps)).astype(variance.dtype)
    return out, _stat(mean.astype(variance.dtype), input), _stat(invstd, input)


def _batch_statistics(input):
    """Each channel's batch mean and biased variance as torch's kernel takes them: ATen's float32 and float64 ones
    (``_aten_batch_stats``, the variance ``var_sum / n`` in the dtype), else in the compute dtype."""
    x = input._array
    count = x.size // x.shape[1] if x.ndim >= 2 and x.shape[1] else 0
    view = _nn._aten_kernel_view(x) if x.dtype in (np.float32, np.float64) else None
    if view is not None and count:
        mean, var_sum = _nn._aten_batch_stats(view, count)
        return mean, var_sum / x.dtype.type(count)
    axes = (0,) + tuple(range(2, x.ndim))
    wide = x.astype(compute_dtype(x.dtype))
    mean = wide.mean(axis=axes)
    centred = wide - mean.reshape((1, -1) + (1,) * (x.ndim - 2))
    return mean, (centred * centred).mean(axis=axes)


def batch_norm_update_stats(input, running_mean, running_var, momentum):
    """``(mean, var)``: the batch's mean and biased variance per channel in the input's dtype, the running
    statistics blended in place (``momentum`` of the batch's mean and unbiased variance), as torch's CPU kernel."""
    mean, variance = _batch_statistics(input)
    count = input.numel() // input.shape[1]
    with no_grad():
        if count and _nn._running_stats_as_aten(input, running_mean, running_var):
            _nn._update_running_as_aten(input._array, count, running_mean, running_var, momentum)
        else:
            for stat, new in ((running_mean, mean), (running_var, variance * (count / max(count - 1, 1)))):
                if stat is not None:
                    _nn._blend_(stat, _stat(new, input), momentum)
    return _stat(mean.astype(input.dtype), input), _stat(variance.astype(input.dtype), input)


# ---- group norm ------------------------------------------------------------------------------------
def native_group_norm(input, weight, bias, N, C, HxW, group, eps):
    """``(out, mean, rstd)``: ``F.group_norm``'s output and each (sample, group)'s mean and rstd, [N, group]."""
    if not input.is_meta and not input.is_contiguous(memory_format=suggested_format(input._array)):
        # (F.group_norm makes its input contiguous first; the native form refuses any other layout, as torch's)
        raise RuntimeError("Expected X.is_contiguous(memory_format) to be true, but got false.  (Could this error "
                           "message be improved?  If so, please report an enhancement request to PyTorch.)")
    if input.numel() != N * C * HxW:
        raise RuntimeError("Expected X.numel() == N * C * HxW to be true, but got false.  (Could this error message "
                           "be improved?  If so, please report an enhancement request to PyTorch.)")
    out = _nn.group_norm(input, group, weight, bias, eps)
    x = input._array
    if input.is_meta:
        return out, _unread((N, group), input.dtype, input), _unread((N, group), input.dtype, input)
    sixteen_bit = compute_dtype(x.dtype) != x.dtype
    mixed = sixteen_bit and any(t is not None and t.dtype == float32 for t in (weight, bias))
    if type(x) is np.ndarray and (x.dtype == np.float32 or sixteen_bit) and x.size:
        mean, rstd = _nn.group_statistics_as_torch(x, group, eps)  # (the kernel's for its dtype and layout: float32
        if sixteen_bit and not mixed:  # statistics, a 16-bit kernel's kept with float32 parameters, else rounded)
            mean, rstd = mean.astype(x.dtype), rstd.astype(x.dtype)
    elif type(x) is np.ndarray and x.dtype == np.float64 and x.size:
        mean, variance = float32_sums.row_moments(np.ascontiguousarray(x).reshape(N * group, -1))
        rstd = 1 / np.sqrt(variance + eps)
    else:
        mean, rstd = _plain_row_statistics(xp_of(x).ascontiguousarray(x).reshape(N * group, -1), eps)
    mean, rstd = _stat(mean.reshape(N, group), input), _stat(rstd.reshape(N, group), input)
    if input.requires_grad and is_grad_enabled():  # (torch differentiates group norm's statistics too, unlike
        mean, rstd = _differentiable_group_statistics(input, N, group, eps, mean, rstd)  # layer and batch norm's)
    return out, mean, rstd


def _differentiable_group_statistics(input, n, group, eps, mean, rstd):
    """The statistics' values in the place of the same statistics composed of ops, whose gradients reach the input
    (the values are the kernel's, the gradient the composition's), but only where both statistics get a gradient:
    torch's backward (infinitely_differentiable_native_group_norm_backward) adds their part to the input's
    gradient when dmean and drstd are both defined, and ignores either alone (``mean.sum().backward()`` leaves
    ``x.grad`` None; ``(out + mean).sum()`` differentiates ``out`` only)."""
    grouped = input.reshape(n, group, input.numel() // (n * group) if n * group else 0)
    arrived = [False, False]
    both = BothStatistics.apply(stack([grouped.mean(-1), (grouped.var(-1, correction=0) + eps).rsqrt()]),
                                arrived=arrived)
    return tuple(name_node(OneStatistic.apply(both, k=k, values=value._array, arrived=arrived),
                           "NativeGroupNormBackward0", input) for k, value in enumerate((mean, rstd)))


class BothStatistics(Function):
    """The two statistics composed (stacked), passed on to their ``OneStatistic`` nodes; its backward runs after
    theirs (it was recorded first) and passes their gradient on only where both arrived (``arrived``, which they
    mark)."""

    @staticmethod
    def forward(ctx, stacked, arrived):
        ctx.arrived = arrived
        return stacked

    @staticmethod
    def backward(ctx, g):
        both = all(ctx.arrived)
        ctx.arrived[:] = [False, False]  # (ready for the next pass: retain_graph)
        return g if both else None

    backward_graph = backward  # (create_graph=True: the same rule on the recorded gradient)


class OneStatistic(Function):
    """Statistic ``k`` of ``BothStatistics``' stack, with the kernel's ``values``; its backward marks that a gradient
    arrived and hands it on in its place of the stack."""

    @staticmethod
    def forward(ctx, both, k, values, arrived):
        ctx.k, ctx.arrived, ctx.shape = k, arrived, both.shape
        return values

    @staticmethod
    def backward(ctx, g):
        ctx.arrived[ctx.k] = True
        placed = xp_of(g).zeros(ctx.shape, g.dtype)
        placed[ctx.k] = g
        return placed

    @staticmethod
    def backward_graph(ctx, g):  # (create_graph=True: placed by ops, so recorded)
        ctx.arrived[ctx.k] = True
        zeros = g.new_zeros(g.shape)
        return stack([g, zeros] if ctx.k == 0 else [zeros, g])


# ---- dropout ---------------------------------------------------------------------------------------
def native_dropout(input, p, train):
    """``(out, mask)``: in training the mask torch draws (``bernoulli_(1 - p)``, the same draws as
    ``F.dropout``'s) and ``input * mask * scale`` with ATen's ``scale = 1 / (1 - p)`` computed in double (where
    F.dropout divides the noise by ``1 - p`` in the dtype: the two differ in the last bit for some p); out of
    training (or ``train=None``) a copy and a mask of ones. The gradient is ``grad * mask * scale``."""
    if train is not None and not train:
        return _native_dropout_node(input.clone(), input), _stat(xp_of(input._array).ones(input.shape, bool), input)
    if not 0 <= 1 - p <= 1:
        raise RuntimeError(f"bernoulli_ expects p to be in [0, 1], but got p={1 - p}")
    if input.numel() and not input.is_meta:
        mask = _stat(_nn.dropout_noise(input._array, p), input)
    else:  # (nothing to draw: a meta tensor draws nothing, as torch's meta kernel)
        mask = _unread(tuple(input.shape), np.dtype(bool), input)
    if input.dtype.kind in "biu":  # (torch's input.mul(mask) then .mul_(scale): the float scale into an integer)
        raise RuntimeError(f"result type Float can't be cast to the desired output type "
                           f"{torch_name(input.dtype)}")
    scale = 0.0 if p == 1 else 1.0 / (1.0 - p)
    return _native_dropout_node(NativeDropout.apply(input, mask=mask._array, scale=scale), input), mask


class NativeDropout(Function):
    """ATen's ``input.mul(mask).mul_(scale)``: the in-place product takes ``scale`` rounded to the input's dtype (a
    16-bit input: bfloat16's 1 / 0.85, then the product in float, rounded); its backward ``grad * mask * scale`` is
    a new tensor's product, the scale in float (double for float64). The two differ for 16-bit dtypes only."""

    @staticmethod
    def forward(ctx, x, mask, scale):
        ctx.mask, ctx.scale = mask, scale
        wide = compute_dtype(x.dtype)
        kept = (x * mask).astype(x.dtype)
        return (kept.astype(wide) * wide.type(x.dtype.type(scale))).astype(x.dtype)

    @staticmethod
    def backward(ctx, g):
        wide = compute_dtype(g.dtype)
        kept = (g * ctx.mask).astype(g.dtype)
        return ((kept.astype(wide) * wide.type(ctx.scale)).astype(g.dtype),)


def _native_dropout_node(out, input):
    return name_node(out, "NativeDropoutBackward0", input, graph=(input,))


# ---- small ones ------------------------------------------------------------------------------------
def native_norm(input, *args, **kwargs):
    """torch's native_norm is a sparse tensor's op: a dense (CPU) tensor is its dispatcher's error."""
    overload = "" if not args and not kwargs else ".ScalarOpt_dim_dtype"
    raise NotImplementedError(f"Could not run 'aten::native_norm{overload}' with arguments from the "
                              f"'{input.device.type.upper()}' backend. native_norm is a sparse tensor's op "
                              f"(minilora's tensors are dense): use torch.linalg.vector_norm")


def norm_except_dim(v, pow=2, dim=0):
    """The ``pow``-norm of ``v`` over every dimension but ``dim``, kept as size-1 dimensions (weight_norm's g):
    ATen's ``norm_except_dim``, the same ops (``dim=-1``: the whole tensor's norm)."""
    if dim == -1:
        return v.norm(pow)
    if dim == 0:
        return v.contiguous().view(v.shape[0], -1).norm(pow, 1).view((v.shape[0],) + (1,) * (v.ndim - 1))
    if dim == v.ndim - 1:
        return v.contiguous().view(-1, v.shape[-1]).norm(pow, 0).view((1,) * (v.ndim - 1) + (v.shape[-1],))
    return norm_except_dim(v.transpose(0, dim), pow, 0).transpose(0, dim)


# ---- SyncBatchNorm's pieces (torch's CUDA kernels' maths, on any device) --------------------------------
# torch's SyncBatchNorm runs these inside its own autograd.Function: per process ``batch_norm_stats``, an all-gather,
# ``batch_norm_gather_stats_with_counts`` to combine, ``batch_norm_elemt`` to normalise; backward
# ``batch_norm_backward_reduce``, an all-reduce, ``batch_norm_backward_elemt``. torch builds them for CUDA only (its
# CPU build refuses them); here they compute wherever the tensors are, in float64 for float64 inputs and float32
# (torch's accumulation type) for the others, and carry no gradient (as torch's are used).
def _channels_array(t):
    """``t`` [N, C, *] as an array [C, N * *] in its accumulation dtype."""
    x = t._array
    wide = x.astype(np.float64 if x.dtype == np.float64 else np.float32)
    return xp_of(x).moveaxis(wide, 1, 0).reshape(x.shape[1], -1)


def _per_channel_of(values, ndim):
    return values.reshape((1, -1) + (1,) * (ndim - 2))


def batch_norm_stats(input, eps):
    """``(mean, invstd)`` of each channel of this process's batch, ``invstd = 1 / sqrt(biased var + eps)``."""
    x = _channels_array(input)
    mean = x.mean(axis=1)
    variance = ((x - mean[:, None]) ** 2).mean(axis=1)
    return _stat(mean, input), _stat(1 / xp_of(x).sqrt(variance + eps), input)


def batch_norm_elemt(input, weight, bias, mean, invstd, eps):
    """``(x - mean) * invstd * weight + bias`` per channel, in the input's dtype."""
    x = input._array
    wide = x.astype(mean.dtype)
    out = (wide - _per_channel_of(mean._array, x.ndim)) * _per_channel_of(invstd._array, x.ndim)
    if weight is not None:
        out = out * _per_channel_of(weight._array.astype(mean.dtype), x.ndim)
    if bias is not None:
        out = out + _per_channel_of(bias._array.astype(mean.dtype), x.ndim)
    return _stat(out.astype(x.dtype), input)


def batch_norm_gather_stats_with_counts(input, mean, invstd, running_mean, running_var, momentum, eps, counts):
    """The processes' ``mean``, ``invstd`` [world, C] and batch ``counts`` [world] combined (each variance recovered
    as ``1 / invstd^2 - eps``; Chan's parallel merge): the whole batch's ``(mean, invstd)``, and the running
    statistics blended in place (``momentum`` of the mean and of the unbiased variance)."""
    xp = xp_of(mean._array)
    n = counts._array.astype(mean.dtype)[:, None]
    means, variances = mean._array, 1 / (invstd._array * invstd._array) - eps
    total = n.sum(axis=0)
    combined = (n * means).sum(axis=0) / total
    variance = (n * (variances + (means - combined) ** 2)).sum(axis=0) / total
    with no_grad():
        for stat, new in ((running_mean, combined), (running_var, variance * total / (total - 1))):
            if stat is not None:
                blended = (1 - momentum) * stat._array.astype(new.dtype) + momentum * new
                stat._array[...] = blended.astype(stat.dtype)
                stat._bump_version()
    return _stat(combined, input), _stat(1 / xp.sqrt(variance + eps), input)


def batch_norm_gather_stats(input, mean, invstd, running_mean, running_var, momentum, eps, count):
    """``batch_norm_gather_stats_with_counts`` with every process's batch of ``count`` elements per channel."""
    counts = _stat(xp_of(mean._array).full(mean.shape[0], count, mean.dtype), input)
    return batch_norm_gather_stats_with_counts(input, mean, invstd, running_mean, running_var, momentum, eps, counts)


def batch_norm_backward_reduce(grad_out, input, mean, invstd, weight, input_g, weight_g, bias_g):
    """``(sum_dy, sum_dy_xmu, grad_weight, grad_bias)`` per channel: ``sum(dy)``, ``sum(dy (x - mean))``, the latter
    times invstd and the former, each None where its flag is off (sums: ``input_g``)."""
    dy, x = _channels_array(grad_out), _channels_array(input)
    sum_dy = dy.sum(axis=1)
    sum_dy_xmu = (dy * (x - mean._array[:, None])).sum(axis=1)
    param_dtype = (weight if weight is not None else mean).dtype
    return (_stat(sum_dy, input) if input_g else None, _stat(sum_dy_xmu, input) if input_g else None,
            _stat((sum_dy_xmu * invstd._array).astype(param_dtype), input) if weight_g else None,
            _stat(sum_dy.astype(param_dtype), input) if bias_g else None)


def batch_norm_backward_elemt(grad_out, input, mean, invstd, weight, sum_dy, sum_dy_xmu, count):
    """The input's gradient from the all-reduced sums: ``(dy - sum_dy / N - (x - mean) invstd^2 sum_dy_xmu / N)
    invstd weight``, N the whole batch's count per channel (``count``: each process's, summed)."""
    x = input._array
    total = float(count._array.astype(np.float64).sum())
    per = lambda v: _per_channel_of(v, x.ndim)  # noqa: E731
    dy, wide = grad_out._array.astype(mean.dtype), x.astype(mean.dtype)
    scale = invstd._array if weight is None else invstd._array * weight._array.astype(mean.dtype)
    centred = (wide - per(mean._array)) * per(invstd._array * invstd._array * sum_dy_xmu._array / total)
    return _stat(((dy - per(sum_dy._array / total) - centred) * per(scale)).astype(x.dtype), input)
