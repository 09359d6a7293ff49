"""torch's top-level spellings of ``nn.functional`` (``torch.conv2d``, ``torch.layer_norm``,
``torch.embedding`` ...) with torch's own arguments, which are ATen's and differ from ``F.*`` for some:
``torch.embedding(weight, indices)`` takes the weight first, ``torch.batch_norm`` wants all nine
arguments with the weight before the running statistics, the losses take ``reduction`` as ATen's int
(0 none, 1 mean, 2 sum) and default to 0, none (torch 2.13's Python binding reads ATen's
``reduction=Mean`` default as 0: ``torch.kl_div(x, y)`` is elementwise), ``torch.kl_div``'s mean is
the plain mean (F's warning is about ``'mean'`` meaning that; here it is asked for) and
``torch.adaptive_max_pool1d`` always returns ``(values, indices)``.

nn.functional sits a layer above the root package, so it is reached when a function runs (as the root's
``minilora.nn``), not imported here.
"""
import warnings

from . import amp as _amp

_REDUCTIONS = {0: "none", 1: "mean", 2: "sum"}


def _F():
    import minilora
    return minilora.nn.functional


def _reduction(reduction):
    if not isinstance(reduction, int) or isinstance(reduction, bool):
        raise TypeError(f"argument 'reduction' must be int, not {type(reduction).__name__} (torch's top-level "
                        f"losses take ATen's 0 none, 1 mean, 2 sum)")
    if reduction not in _REDUCTIONS:
        raise ValueError(f"{reduction} is not a valid value for reduction")
    return _REDUCTIONS[reduction]


def conv1d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    return _F().conv1d(input, weight, bias, stride, padding, dilation, groups)


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    return _F().conv2d(input, weight, bias, stride, padding, dilation, groups)


def conv_transpose1d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
    return _F().conv_transpose1d(input, weight, bias, stride, padding, output_padding, groups, dilation)


def conv_transpose2d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
    return _F().conv_transpose2d(input, weight, bias, stride, padding, output_padding, groups, dilation)


def conv3d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    return _F().conv3d(input, weight, bias, stride, padding, dilation, groups)


def conv_transpose3d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
    return _F().conv_transpose3d(input, weight, bias, stride, padding, output_padding, groups, dilation)


def constant_pad_nd(input, pad, value=0):
    """``torch.constant_pad_nd(x, pad, value)``: ``F.pad``'s constant mode (negative pads crop)."""
    if len(pad) % 2:
        raise RuntimeError(f"Length of pad must be even but instead it equals {len(pad)}")
    return _F().pad(input, list(pad), "constant", value)


def pdist(input, p=2):
    return _F().pdist(input, p)


def layer_norm(input, normalized_shape, weight=None, bias=None, eps=1e-05, cudnn_enable=True):
    return _F().layer_norm(input, normalized_shape, weight, bias, eps)


def group_norm(input, num_groups, weight=None, bias=None, eps=1e-05, cudnn_enabled=True):
    return _F().group_norm(input, num_groups, weight, bias, eps)


def rms_norm(input, normalized_shape, weight=None, eps=None):
    return _F().rms_norm(input, normalized_shape, weight, eps)


def batch_norm(input, weight, bias, running_mean, running_var, training, momentum, eps, cudnn_enabled):
    """``torch.batch_norm``: ATen's order (weight, bias before the running statistics), all required."""
    return _F()._batch_norm(input, running_mean, running_var, weight, bias, training, momentum, eps)  # (no F check)


def instance_norm(input, weight, bias, running_mean, running_var, use_input_stats, momentum, eps, cudnn_enabled):
    return _F().instance_norm(input, running_mean, running_var, weight, bias, use_input_stats, momentum, eps)


def embedding(weight, indices, padding_idx=-1, scale_grad_by_freq=False, sparse=False):
    """``torch.embedding(weight, indices)``: the weight first; padding_idx -1 means none."""
    if weight.ndim != 2:
        raise RuntimeError("'weight' must be 2-D")
    return _F().embedding(indices, weight, None if padding_idx == -1 else padding_idx,
                          scale_grad_by_freq=scale_grad_by_freq, sparse=sparse)


def feature_dropout(input, p, train):
    return _F().dropout2d(input, p, train) if input.ndim == 4 else _F().dropout1d(input, p, train)


def feature_dropout_(input, p, train):
    return _F().dropout2d(input, p, train, inplace=True) if input.ndim == 4 else \
        _F().dropout1d(input, p, train, inplace=True)


def cosine_similarity(x1, x2, dim=1, eps=1e-08):
    return _F().cosine_similarity(x1, x2, dim, eps)


def pairwise_distance(x1, x2, p=2.0, eps=1e-06, keepdim=False):
    return _F().pairwise_distance(x1, x2, p, eps, keepdim)


def _cdist_by_products(x1, x2, p, compute_mode):
    """Does torch's cdist take its matrix-product path (``_euclidean_dist``)? p = 2, asked for, or by default
    once either side has more than 25 rows."""
    by_default = compute_mode in (None, "use_mm_for_euclid_dist_if_necessary") and max(x1.shape[-2], x2.shape[-2]) > 25
    empty = not (x1.numel() and x2.numel())  # (ATen: an empty input always takes _cdist_forward)
    return p == 2 and (compute_mode == "use_mm_for_euclid_dist" or by_default) and not empty


def _euclidean_dist(x1, x2):
    """torch's ``_euclidean_dist`` (cdist's p = 2 by matrix products): ``[-2 x1, |x1|^2, 1] @ [x2, 1, |x2|^2]^T``,
    clamped at 0, square-rooted -- not the rows' differences' norms (cancellation makes it differ, most in 16 bits:
    near points come out 0). The batch dims broadcast first (torch expands both). Its gradient is torch's
    ``_euclidean_dist_backward``, ``x1 * sum(g / d) - (g / d) @ x2`` (0 where d is 0); the differences' norms
    stand as the graph a recorded pass (create_graph) differentiates."""
    from . import linalg
    from .ops.extra import broadcast_shapes
    from .ops.shape import cat
    from .ops.nn import KernelGradients
    from .tensor import no_grad
    batch = tuple(broadcast_shapes(x1.shape[:-2], x2.shape[:-2]))
    x1, x2 = x1.expand(batch + tuple(x1.shape[-2:])), x2.expand(batch + tuple(x2.shape[-2:]))
    with no_grad():
        x1_norm, x2_norm = x1.pow(2).sum(-1, keepdim=True), x2.pow(2).sum(-1, keepdim=True)
        x1_ = cat([x1.mul(-2), x1_norm, x1_norm.new_ones(x1_norm.shape)], -1)
        x2_ = cat([x2, x2_norm.new_ones(x2_norm.shape), x2_norm], -1)
        result = x1_.matmul(x2_.mT).clamp_min_(0).sqrt_()
    composed = linalg.vector_norm(x1.unsqueeze(-2) - x2.unsqueeze(-3), 2, dim=-1)

    def gradients(g, needs):
        from .tensor import Tensor
        with no_grad():
            g = Tensor(g, dtype=g.dtype, device=x1.device)
            ratio = (g / result).masked_fill_(result == 0, 0)
            g1 = x1 * ratio.sum(-1, True) - ratio.matmul(x2) if needs[0] else None
            g2 = x2 * ratio.sum(-2, False).unsqueeze(-1) - ratio.mT.matmul(x1) if needs[1] else None
        return tuple(None if t is None else t._array for t in (g1, g2)) + (None,)
    return KernelGradients.apply(composed, x1, x2, None, values=result._array, gradients=gradients)


_CDIST_MODES = (None, "use_mm_for_euclid_dist_if_necessary", "use_mm_for_euclid_dist", "donot_use_mm_for_euclid_dist")


@_amp.autocasts
def cdist(x1, x2, p=2.0, compute_mode=None):
    """``torch.cdist``: the p-norm distance between each row of ``x1`` and each row of ``x2`` (batched)."""
    if compute_mode not in _CDIST_MODES:  # (another string ran as the default, as the Python of torch's would not)
        raise ValueError(f"{compute_mode} is not a valid value for compute_mode")
    from . import linalg
    from .dtypes import is_floating, torch_name
    from .ops import _c_name
    from .ops.nn import Cdist
    from .tensor import name_node, no_forward_formula, saves_as_torch
    if x1.ndim < 2 or x2.ndim < 2:
        raise RuntimeError(f"cdist only supports at least 2D tensors, X1 got: {x1.ndim}D")
    if x1.shape[-1] != x2.shape[-1]:
        raise RuntimeError(f"X1 and X2 must have the same number of columns. X1: {x1.shape[-1]} "
                           f"X2: {x2.shape[-1]}")
    for name, x in (("X1", x1), ("X2", x2)):  # (complex and integer inputs: torch computes nothing)
        if not is_floating(x.dtype):
            raise RuntimeError(f"cdist only supports floating-point dtypes, {name} got: {torch_name(x.dtype)}")
    if _cdist_by_products(x1, x2, p, compute_mode):  # (torch's _euclidean_dist: ops, differentiable again)
        if x1.dtype != x2.dtype:  # (its matrix product's check)
            raise RuntimeError(f"expected m1 and m2 to have the same dtype, but got: {_c_name(x1.dtype)} != "
                               f"{_c_name(x2.dtype)}")
        no_forward_formula("_euclidean_dist", x1, x2)
        return name_node(_euclidean_dist(x1, x2), "CdistBackward0", x1, x2)
    no_forward_formula("_cdist_forward", x1, x2)
    if p < 0:
        raise RuntimeError("cdist only supports non-negative p values")
    if is_floating(x1.dtype) and x1.dtype.itemsize == 2 and x1.numel() and x2.numel() and x1.shape[-1]:
        raise NotImplementedError(f'"cdist" not implemented for \'{torch_name(x1.dtype)}\'')  # (ATen's kernel:
        # float and double; an empty input never reaches it, nor the matrix-product path above)
    if x1.dtype != x2.dtype and x1.numel() and x2.numel():
        raise RuntimeError(f"expected scalar type {torch_name(x1.dtype)} but found {torch_name(x2.dtype)}")
    out = name_node(Cdist.apply(x1, x2, p=float(p)), "CdistBackward0", x1, x2)
    return saves_as_torch(out, x1, x2, out)  # (torch's _cdist_forward node keeps both and its result)


def binary_cross_entropy_with_logits(input, target, weight=None, pos_weight=None, reduction=0):
    """ATen's, without F's same-size check: its in-place chain ``(1 - target).mul_(input)`` (then
    ``.mul_(weight)``; ``log_sigmoid(input).mul_(pos_weight-term)``) broadcasts into target's shape, and
    into input's for ``pos_weight``: an input of (1,) and a target of (1, 2) give a (1, 2) loss."""
    from .ops.extra import broadcast_shapes
    reduction = _reduction(reduction)  # (the arguments are checked before any shape)
    if pos_weight is not None:
        _writes_into(input.shape, broadcast_shapes(pos_weight.shape, target.shape))
    _writes_into(target.shape, input.shape)
    if weight is not None:
        _writes_into(target.shape, weight.shape)
    return _F().binary_cross_entropy_with_logits(input.expand(target.shape), target, weight,
                                                 reduction=reduction, pos_weight=pos_weight)


def _writes_into(out_shape, other_shape):
    """The check of ATen's ``out.op_(other)``: ``other`` broadcasts to ``out``'s shape, not beyond."""
    from .ops.extra import broadcast_shapes
    shape = broadcast_shapes(out_shape, other_shape)
    if tuple(shape) != tuple(out_shape):
        raise RuntimeError(f"output with shape {list(out_shape)} doesn't match the broadcast shape {list(shape)}")


def kl_div(input, target, reduction=0, *, log_target=False):
    with warnings.catch_warnings():  # (F's warning about 'mean' is for F's callers; torch.kl_div gives none)
        warnings.simplefilter("ignore")
        return _F().kl_div(input, target, reduction=_reduction(reduction), log_target=log_target)


def hinge_embedding_loss(input, target, margin=1.0, reduction=0):
    return _F().hinge_embedding_loss(input, target, margin, reduction=_reduction(reduction))


def margin_ranking_loss(input1, input2, target, margin=0.0, reduction=0):
    """ATen's ``(-target * (input1 - input2) + margin).clamp_min_(0)``: the three broadcast (F's
    same-dimension check is F's own: torch.margin_ranking_loss of (), (1,), () is a (1,) loss)."""
    from .ops.extra import broadcast_tensors
    reduction = _reduction(reduction)  # (the arguments are checked before any shape)
    input1, input2, target = broadcast_tensors(input1, input2, target)
    return _F().margin_ranking_loss(input1, input2, target, margin, reduction=reduction)


def cosine_embedding_loss(input1, input2, target, margin=0.0, reduction=0):
    return _F().cosine_embedding_loss(input1, input2, target, margin, reduction=_reduction(reduction))


def triplet_margin_loss(anchor, positive, negative, margin=1.0, p=2, eps=1e-06, swap=False, reduction=0):
    # (ATen's op, without F's refusal of a margin <= 0)
    return _F()._triplet_margin_loss(anchor, positive, negative, margin, p, eps, swap,
                                     reduction=_reduction(reduction))


def poisson_nll_loss(input, target, log_input, full, eps, reduction):
    return _F().poisson_nll_loss(input, target, log_input, full, eps=eps, reduction=_reduction(reduction))


def pixel_shuffle(input, upscale_factor):
    return _F().pixel_shuffle(input, upscale_factor)


def pixel_unshuffle(input, downscale_factor):
    return _F().pixel_unshuffle(input, downscale_factor)


def channel_shuffle(input, groups):
    """``torch.channel_shuffle``: the channels in ``groups`` groups, interleaved (F.channel_shuffle is torch's
    same native op)."""
    return _F().channel_shuffle(input, groups)


def native_channel_shuffle(input, groups):
    """``torch.native_channel_shuffle``: the same shuffle as ``channel_shuffle``."""
    return _F().channel_shuffle(input, groups)


def max_pool1d(input, kernel_size, stride=(), padding=0, dilation=1, ceil_mode=False):
    return _F().max_pool1d(input, kernel_size, stride, padding, dilation, ceil_mode)


def max_pool2d(input, kernel_size, stride=(), padding=0, dilation=1, ceil_mode=False):
    return _F().max_pool2d(input, kernel_size, stride, padding, dilation, ceil_mode)


def max_pool3d(input, kernel_size, stride=(), padding=0, dilation=1, ceil_mode=False):
    return _F().max_pool3d(input, kernel_size, stride, padding, dilation, ceil_mode)


def avg_pool1d(input, kernel_size, stride=(), padding=0, ceil_mode=False, count_include_pad=True):
    return _F().avg_pool1d(input, kernel_size, stride, padding, ceil_mode, count_include_pad)


def adaptive_avg_pool1d(input, output_size):
    return _F().adaptive_avg_pool1d(input, output_size)


def adaptive_max_pool1d(input, output_size):
    """``torch.adaptive_max_pool1d``: always ``(values, indices)`` (F's returns indices on request)."""
    return _F().adaptive_max_pool1d(input, output_size, return_indices=True)


def hardshrink(input, lambd=0.5):
    return _F().hardshrink(input, lambd)


def prelu(input, weight):
    return _F().prelu(input, weight)


def bilinear(input1, input2, weight, bias=None):
    return _F().bilinear(input1, input2, weight, bias)


# ---- ATen's spellings of convolution, sampling, bags, CTC and pooling (torch.convolution, torch.grid_sampler ...)
@_amp.autocasts  # (on no autocast list, torch's or its CUDA's: one kernel, run as called, not cast)
def convolution(input, weight, bias, stride, padding, dilation, transposed, output_padding, groups):
    """``torch.convolution``: ATen's one entry for every convolution, the rank read off the input (3-D: 1-d, 4-D: 2-d,
    5-D: 3-d), ``transposed`` choosing ``conv_transpose*d`` (with ``output_padding``)."""
    rank = input.ndim - 2
    if rank not in (1, 2, 3):
        raise RuntimeError(f"Expected 3D (unbatched) or 4D (batched) input to conv2d, but got input of size: "
                           f"{list(input.shape)}" if rank < 1 else
                           f"convolution: expected a 3-D, 4-D or 5-D input, got {input.ndim}-D")
    if transposed:
        return getattr(_F(), f"conv_transpose{rank}d")(input, weight, bias, stride, padding, output_padding, groups,
                                                       dilation)
    return getattr(_F(), f"conv{rank}d")(input, weight, bias, stride, padding, dilation, groups)


def conv_tbc(input, weight, bias, pad=0):
    return _F().conv_tbc(input, weight, bias, pad)


_BAG_MODES = {0: "sum", 1: "mean", 2: "max"}


def embedding_bag(weight, indices, offsets, scale_grad_by_freq=False, mode=0, sparse=False, per_sample_weights=None,
                  include_last_offset=False, padding_idx=None):
    """``torch.embedding_bag(weight, indices, offsets, ...)``: the weight first, ``mode`` ATen's int (0 sum, 1 mean,
    2 max), and ATen's four results: ``(output, offset2bag, bag_size, max_indices)`` (``_bag_bookkeeping``)."""
    from .tensor import Tensor
    if not isinstance(offsets, Tensor):
        raise TypeError(f"embedding_bag(): argument 'offsets' (position 3) must be Tensor, not "
                        f"{type(offsets).__name__}")
    if mode not in _BAG_MODES:
        raise RuntimeError(f"embedding_bag: mode must be 0 (sum), 1 (mean) or 2 (max), got {mode}")
    output = _F().embedding_bag(indices, weight, offsets, scale_grad_by_freq=scale_grad_by_freq,
                                mode=_BAG_MODES[mode], sparse=sparse, per_sample_weights=per_sample_weights,
                                include_last_offset=include_last_offset, padding_idx=padding_idx)
    return (output, *_bag_bookkeeping(weight, indices, offsets, mode, include_last_offset, padding_idx,
                                      per_sample_weights))


def _bag_bookkeeping(weight, indices, offsets, mode, include_last_offset, padding_idx, per_sample_weights):
    """ATen's CPU ``offset2bag`` (each index's bag; empty on the 'sum' fast path: float or 16-bit, no padding_idx), ``bag_size`` (the
    bags' sizes without padding, the last one up to the end of ``indices`` even with ``include_last_offset``; zeros
    in 'sum' mode) and ``max_indices`` (each bag's and column's first arg max in 'max' mode, ``bag_size`` in 'mean'
    mode, zeros in 'sum' mode)."""
    import numpy as np
    from .tensor import Tensor
    ids, starts = indices.numpy().astype(np.int64).reshape(-1), offsets.numpy().astype(np.int64).reshape(-1)
    n, bags = len(ids), len(starts) - (1 if include_last_offset else 0)
    make = lambda a: Tensor(np.asarray(a, np.int64), dtype=np.int64, device=weight.device)  # noqa: E731
    if mode == 0:
        fast = _F()._torchs_fast_bag_path(weight, per_sample_weights, padding_idx)
        marks = _bag_of_each(n, starts[:bags])
        return make([] if fast else marks), make(np.zeros(len(starts))), make(np.zeros(len(starts)))
    offset2bag = _bag_of_each(n, starts[:bags])
    ends = np.append(starts[1:bags], n) if bags else starts[:0]
    kept = ids != padding_idx if padding_idx is not None else np.ones(n, bool)
    sizes = np.array([kept[a:b].sum() for a, b in zip(starts[:bags], ends)], np.int64)
    if mode == 1:
        return make(offset2bag), make(sizes), make(sizes.copy())
    table = weight.detach().numpy()
    arg = np.zeros((bags, table.shape[1]), np.int64)
    for bag, (a, b) in enumerate(zip(starts[:bags], ends)):
        rows = [i for i in ids[a:b] if padding_idx is None or i != padding_idx]
        for k, row in enumerate(rows):  # (ATen's loop: a later row replaces only a strictly greater value)
            if k == 0:
                arg[bag] = row
            else:
                arg[bag] = np.where(table[row] > table[arg[bag], np.arange(table.shape[1])], row, arg[bag])
    return make(offset2bag), make(sizes), make(arg)


def _bag_of_each(n, starts):
    """ATen's offset2bag: a 1 added at each bag's start (in n + 1 places), the running sum less 1, cut to n."""
    import numpy as np
    marks = np.zeros(n + 1, np.int64)
    np.add.at(marks, np.clip(starts, 0, n), 1)
    return np.cumsum(marks)[:n] - 1


@_amp.autocasts
def ctc_loss(log_probs, targets, input_lengths, target_lengths, blank=0, reduction=0, zero_infinity=False):
    """``torch.ctc_loss``: ``F.ctc_loss`` with ATen's int ``reduction`` (default 0, none)."""
    return _F().ctc_loss(log_probs, targets, input_lengths, target_lengths, blank, _reduction(reduction),
                         zero_infinity)


def max_pool1d_with_indices(input, kernel_size, stride=(), padding=0, dilation=1, ceil_mode=False):
    return _F().max_pool1d(input, kernel_size, stride, padding, dilation, ceil_mode, return_indices=True)


_INTERPOLATIONS, _PADDINGS = ("bilinear", "nearest", "bicubic"), ("zeros", "border", "reflection")


@_amp.autocasts
def grid_sampler(input, grid, interpolation_mode, padding_mode, align_corners):
    """``torch.grid_sampler``: ``F.grid_sample`` with ATen's ints (0 bilinear, 1 nearest, 2 bicubic; 0 zeros,
    1 border, 2 reflection)."""
    return _F().grid_sample(input, grid, _INTERPOLATIONS[interpolation_mode], _PADDINGS[padding_mode],
                            align_corners)


@_amp.autocasts
def grid_sampler_2d(input, grid, interpolation_mode, padding_mode, align_corners):
    if input.ndim != 4:
        raise RuntimeError(f"grid_sampler(): expected 4D input and grid with same number of dimensions, but got "
                           f"input with sizes {list(input.shape)} and grid with sizes {list(grid.shape)}")
    return grid_sampler(input, grid, interpolation_mode, padding_mode, align_corners)


def grid_sampler_3d(input, grid, interpolation_mode, padding_mode, align_corners):
    if input.ndim != 5:
        raise RuntimeError(f"grid_sampler(): expected 5D input and grid with same number of dimensions, but got "
                           f"input with sizes {list(input.shape)} and grid with sizes {list(grid.shape)}")
    return grid_sampler(input, grid, interpolation_mode, padding_mode, align_corners)


def affine_grid_generator(theta, size, align_corners):
    return _F().affine_grid(theta, list(size), align_corners)


def embedding_renorm_(input, indices, max_norm, norm_type):
    """``torch.embedding_renorm_(weight, indices, max_norm, norm_type)``: each row named in ``indices`` whose norm
    exceeds ``max_norm`` scaled down to it, in place (what ``F.embedding(max_norm=...)`` does first); the weight."""
    from .ops.nn import _renormalise_rows_
    _renormalise_rows_(input, indices._array, max_norm, norm_type)
    return input


def _attach_methods():
    """``x.hardshrink(0.5)`` and ``x.prelu(weight)``: torch's Tensor methods for these two."""
    from .tensor import Tensor
    Tensor.hardshrink = hardshrink
    Tensor.prelu = prelu


_attach_methods()
