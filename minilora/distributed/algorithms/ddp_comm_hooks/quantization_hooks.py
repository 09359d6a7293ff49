"""torch's quantization hooks: each rank's gradients cross the network as 8-bit integers.

    model.register_comm_hook(None, quantization_hooks.quantization_pertensor_hook)

A rank picks an affine map for its bucket (``scale``, ``zero_point``: the bucket's range, zero included,
onto 0..255, as torch's ``MinMaxObserver``), all-gathers those two numbers, then all-gathers its gradients
as ``round(g / scale) + zero_point`` clamped to uint8; every rank maps each rank's integers back
(``scale * (q - zero_point)``), adds them in rank order and divides by the world size. The per-channel hook
does this for every ``bucket_size`` numbers of the bucket (torch's ``PerChannelMinMaxObserver`` rows).
torch marks both experimental: an all-gather moves world-size times the data of an all-reduce.
torch 2.13's own hooks read gloo's all-gather Future as every rank's tensors stacked and fail at their first
bucket (IndexError, TypeError); minilora's compute what they are written to.
"""
import numpy as np

from .... import dtypes
from ....factories import zeros
from ....futures import Future
from ....ops.nn import pad
from ....ops.shape import stack
from ....tensor import no_grad, tensor as make_tensor
from ... import all_gather, get_rank, group

__all__ = ["quantization_pertensor_hook", "quantization_perchannel_hook"]

_QUANT_MIN, _QUANT_MAX = 0, 255  # quint8
_EPS = np.finfo(np.float32).eps  # the observers' smallest scale


def _qparams(min_val, max_val):
    """torch's affine quint8 parameters for the ranges ``[min_val, max_val]`` (float32 Tensors, one number a
    channel): the range stretched to hold 0, over 255 steps; the zero point the integer 0 maps to."""
    min_val_neg = min_val.clamp(max=0.0)
    max_val_pos = max_val.clamp(min=0.0)
    scale = ((max_val_pos - min_val_neg) / float(_QUANT_MAX - _QUANT_MIN)).clamp(min=float(_EPS))
    zero_point = (_QUANT_MIN - (min_val_neg / scale).round()).clamp(_QUANT_MIN, _QUANT_MAX)
    return scale, zero_point


def _quantize(x, scale, zero_point):
    return ((x / scale).round() + zero_point).clamp(_QUANT_MIN, _QUANT_MAX).to(dtypes.uint8)


def _dequantize(q, scale, zero_point):
    return scale * (q.float() - zero_point)


def _gathered(tensor, group_to_use, world_size):
    """Every rank's ``tensor``, in rank order."""
    out = [zeros(*tensor.shape, dtype=tensor.dtype) for _ in range(world_size)]
    all_gather(out, tensor, group=group_to_use)
    return out


def _sum_of_dequantized(quantized, scales_and_zeros):
    """Each rank's integers mapped back with that rank's parameters, added in rank order (float32)."""
    total = zeros(*quantized[0].shape)
    for q, (scale, zero_point) in zip(quantized, scales_and_zeros):
        total += _dequantize(q, scale, zero_point)
    return total


def _done(value):
    future = Future()
    future.set_result(value)
    return future


def quantization_pertensor_hook(process_group, bucket):
    """One scale and zero point for the whole bucket (torch's ``quantize_per_tensor`` over an all-gather)."""
    group_to_use = process_group if process_group is not None else group.WORLD
    rank = process_group.rank() if process_group is not None else get_rank()
    world_size = group_to_use.size()
    with no_grad():
        tensor = bucket.buffer()
        scale, zero_point = _qparams(tensor.min().reshape(1), tensor.max().reshape(1))
        s_and_z = make_tensor([scale.item(), zero_point.item()])  # (torch.FloatTensor([s, z]))
        all_s_and_z = _gathered(s_and_z, group_to_use, world_size)
        quantized = _gathered(_quantize(tensor, all_s_and_z[rank][0], all_s_and_z[rank][1]), group_to_use,
                              world_size)
        total = _sum_of_dequantized(quantized, [(sz[0], sz[1]) for sz in all_s_and_z])
        return _done(total / world_size)


def quantization_perchannel_hook(process_group, bucket, bucket_size=512):
    """A scale and zero point for every ``bucket_size`` numbers of the bucket (padded with zeros to a whole
    number of rows: a full row more when it divides, as torch pads)."""
    group_to_use = process_group if process_group is not None else group.WORLD
    rank = process_group.rank() if process_group is not None else get_rank()
    world_size = group_to_use.size()
    with no_grad():
        tensor = bucket.buffer()
        rows = pad(tensor, (0, bucket_size - len(tensor) % bucket_size), mode="constant", value=0).view(
            -1, bucket_size)
        scales, zero_points = _qparams(rows.min(dim=1).values, rows.max(dim=1).values)
        all_s_and_z = _gathered(stack((scales, zero_points)), group_to_use, world_size)
        mine = all_s_and_z[rank]
        quantized = _gathered(_quantize(rows, mine[0][:, None], mine[1][:, None]), group_to_use, world_size)
        total = _sum_of_dequantized(quantized, [(sz[0][:, None], sz[1][:, None]) for sz in all_s_and_z])
        return _done(total.flatten()[:tensor.shape[0]] / world_size)
