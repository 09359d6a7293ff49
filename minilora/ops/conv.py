"""Convolution and pooling over images ``[N, C, H, W]`` (and sequences ``[N, C, L]``, as images of
height 1): what the CNN tutorials call, with torch's arguments and numbers.

One idea carries all of them: look at the input through *windows*. ``sliding_window_view`` gives,
without copying, an array ``[N, C, H_out, W_out, kh, kw]`` whose last two axes are the patch each
output position sees (``stride`` and ``dilation`` are steps through that view). Then

* a convolution is one ``einsum`` of the windows with the kernel;
* its input gradient puts each window's gradient back where the window came from: one strided
  add per kernel offset ``(i, j)`` -- ``kh * kw`` small adds, however large the image;
* max pooling picks each window's largest element (the first one, as torch); its gradient goes to
  that element alone;
* average pooling is a convolution with a constant kernel, one channel at a time (``groups=C``).

bfloat16 and float16 run in float32 and are rounded once (``float32_inside``), as torch's CPU kernels:
NumPy's ``einsum`` would sum 16-bit products in 16 bits. The pooling *gradients* are the exception,
as in torch: its CPU backward kernels add each output's gradient into the input's 16-bit gradient,
rounding after every addition, output position by output position (``_add_windows_back`` with
``round_to``), so minilora does the same to give torch's numbers bit for bit.
"""
import functools
import math

import numpy as np

from .. import amp as _amp, dtypes, float32_math, parallel
from ..factories import (composed_layout, composed_layout_unknown, contiguous_format, known_layout, laid_out_copy,
                         layout_order, suggested_format)
from ..device import xp_of
from ..tensor import Function, Tensor, backward_reads, inputs_not_torchs, is_grad_enabled, name_node, saving_as_torch
from . import conv_mm, conv_onednn
from .nn import KernelValues, _is_16bit_float, float32_inside

__all__ = ["conv1d", "conv2d", "max_pool1d", "max_pool2d", "avg_pool1d", "avg_pool2d",
           "adaptive_avg_pool2d", "interpolate", "conv_transpose1d", "conv_transpose2d",
           "adaptive_max_pool1d", "adaptive_max_pool2d", "unfold", "fold", "max_unpool1d", "max_unpool2d",
           "conv3d", "conv_transpose3d", "max_pool3d", "avg_pool3d", "adaptive_avg_pool3d", "adaptive_max_pool3d",
           "max_unpool3d", "fractional_max_pool2d", "fractional_max_pool3d"]


def _pair(value, name):
    """An int or a pair as ``(height, width)`` (torch accepts both)."""
    return _ntuple(value, 2, name)


def _ntuple(value, rank, name):
    """An int or ``rank`` ints, one per spatial dimension (torch accepts both)."""
    if isinstance(value, (int, np.integer)):
        return (int(value),) * rank
    if len(value) != rank:
        raise RuntimeError(f"expected {name} to be a single integer value or a list of {rank} values, got "
                           f"{list(value)}")
    return tuple(int(v) for v in value)


def _spatial(value, rank, name):
    """A convolution's or a pooling's kernel_size, stride, padding, dilation or output_padding as ``rank`` ints: an
    int or a one-element list stands for every spatial dimension (torch expands both), else one per dimension."""
    if not isinstance(value, (int, np.integer)) and len(value) == 1:
        value = value[0]
    return _ntuple(value, rank, name)


def _empty_list(stride):
    """A pooling's ``stride=[]`` (or ``()``): ATen's default, the kernel size."""
    return isinstance(stride, (list, tuple)) and len(stride) == 0


def _check_conv_geometry(stride, padding, dilation, groups):
    """torch's refusals, before a zero stride divides or a negative padding indexes backwards."""
    if min(stride) <= 0:
        raise RuntimeError(f"non-positive stride is not supported (stride={list(stride)})")
    if min(padding) < 0:
        raise RuntimeError(f"negative padding is not supported (padding={list(padding)})")
    if min(dilation) <= 0:
        raise RuntimeError(f"dilation should be greater than zero, but got {list(dilation)}")
    if groups <= 0:
        raise RuntimeError(f"non-positive groups is not supported (groups={groups})")


def _out_size(size, kernel, stride, padding, dilation):
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def _windows(xp, padded, kernel, stride, dilation):
    """``[N, C, H_out, W_out, kh, kw]``: the patch under every output position (a view, no copy)."""
    (kh, kw), (sh, sw), (dh, dw) = kernel, stride, dilation
    span = (dh * (kh - 1) + 1, dw * (kw - 1) + 1)
    view = xp.lib.stride_tricks.sliding_window_view(padded, span, axis=(2, 3))
    return view[:, :, ::sh, ::sw, ::dh, ::dw]


def _add_windows_back(xp, grad_windows, padded_shape, stride, dilation, round_to=None, by_offset=False):
    """The adjoint of ``_windows``: every window's gradient added back where it was read from.

    The kernel offsets go last to first: an input element then receives its windows' gradients in
    the order of their output positions (row by row), the order torch's CPU pooling kernels add them
    in (``by_offset``: first to last, the order of torch's col2im, ``F.fold``). ``round_to`` (a 16-bit
    dtype): round the running sums to it after every addition, as torch's kernels do in 16 bits."""
    out = xp.zeros(padded_shape, dtype=grad_windows.dtype)
    (sh, sw), (dh, dw) = stride, dilation
    h_out, w_out, kh, kw = grad_windows.shape[2:]
    if not (h_out and w_out):  # no windows (and the slices below would end at -1: from the end)
        return out
    order = (lambda n: range(n)) if by_offset else (lambda n: reversed(range(n)))  # noqa: E731
    for i in order(kh):
        for j in order(kw):
            rows = slice(i * dh, i * dh + sh * (h_out - 1) + 1, sh)
            cols = slice(j * dw, j * dw + sw * (w_out - 1) + 1, sw)
            out[:, :, rows, cols] += grad_windows[..., i, j]
            if round_to is not None:
                out[:, :, rows, cols] = _rounded(out[:, :, rows, cols], round_to)
    return out


def _rounded(a, dtype):
    """``a`` rounded to ``dtype`` (a 16-bit float), kept in its own dtype."""
    return a.astype(dtype).astype(a.dtype)


def _sum_in_order(a):
    """The sum over ``a``'s last two axes, added one element at a time in row-major order, as torch's
    CPU pooling kernels add a window (NumPy's pairwise sum can differ in the last bit)."""
    total = a[..., 0, 0].copy()
    for i in range(a.shape[-2]):
        for j in range(a.shape[-1]):
            if i or j:
                total += a[..., i, j]
    return total


def _narrow(t):
    """The dtype a pooling gradient accumulates in when it is not the float32 it is computed in: a
    16-bit input's own dtype (torch's pooling backward adds in it), else None."""
    return t.dtype if _is_16bit_float(t) else None


def _unpad(a, padding):
    ph, pw = padding
    return a[:, :, ph:a.shape[2] - ph, pw:a.shape[3] - pw]


class Conv2d(Function):
    """``out[n, o] = sum over c, i, j of x[n, c, h*s + i*d, w*s + j*d] * weight[o, c, i, j]``
    (a cross-correlation, as every deep-learning "convolution"), with ``groups`` splitting the
    channels into independent blocks. Zero ``padding`` is applied here; other padding modes are
    ``F.pad`` before the call (``nn.Conv2d`` does that)."""

    @staticmethod
    def forward(ctx, x, weight, stride, padding, dilation, groups, onednn_order=None, onednn_backward=None):
        xp = xp_of(x)
        ctx.onednn_backward = onednn_backward  # (conv_onednn.BackwardKernels: oneDNN's orders for the gradients)
        (ph, pw), g = padding, groups
        padded = xp.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw))) if ph or pw else x
        windows = _windows(xp, padded, weight.shape[2:], stride, dilation)
        n, c, h_out, w_out, kh, kw = windows.shape
        ctx.windows = windows.reshape(n, g, c // g, h_out, w_out, kh, kw)
        ctx.weight = weight.reshape(g, weight.shape[0] // g, c // g, kh, kw)
        ctx.geometry = (padded.shape, stride, dilation, padding)
        if onednn_order is not None:
            return _products_in_order(ctx.windows, ctx.weight, onednn_order).reshape(n, weight.shape[0], h_out, w_out)
        out = xp.einsum("ngchwij,gocij->ngohw", ctx.windows, ctx.weight, optimize=True)
        out = out if out.flags.c_contiguous else out.copy()  # torch's layout (dropout draws in memory order)
        return out.reshape(n, weight.shape[0], h_out, w_out)  # (no -1: N may be 0)

    @staticmethod
    def backward(ctx, g):
        xp, (nx, nw) = xp_of(g), ctx.needs_input_grad
        n, groups = g.shape[0], ctx.weight.shape[0]
        g = g.reshape(n, groups, g.shape[1] // groups, *g.shape[2:])  # [N, G, O/G, H_out, W_out]
        gx = gw = None
        padded_shape, stride, dilation, padding = ctx.geometry
        kernels = ctx.onednn_backward
        if nw and kernels is not None:
            gw = kernels.weight_gradient(g, ctx.windows)
        if nw and gw is None:
            gw = xp.einsum("ngohw,ngchwij->gocij", g, ctx.windows, optimize=True)
            gw = gw.reshape(gw.shape[0] * gw.shape[1], *gw.shape[2:])
        if nx and kernels is not None:
            gx = kernels.input_gradient(g, ctx.weight, padded_shape, stride, dilation)
            gx = None if gx is None else _unpad(gx, padding)
        if nx and gx is None:
            grad_windows = xp.einsum("ngohw,gocij->ngchwij", g, ctx.weight, optimize=True)
            channels = groups * grad_windows.shape[2]  # [N, G, C/G, ...] -> [N, C, ...] (no -1: N may be 0)
            grad_windows = grad_windows.reshape(n, channels, *grad_windows.shape[3:])
            gx = _unpad(_add_windows_back(xp, grad_windows, padded_shape, stride, dilation), padding)
        return gx, gw


# past this many multiply-adds the convolution is one einsum, not a loop of fused multiply-adds in oneDNN's order (a
# pass over the output each: ~0.3 s here): its bits then differ from torch's in the last place
_ORDERED_PRODUCTS = 2 ** 25


def _onednn_forward_kernel(input, weight, groups, plain, spatial):
    """``(order, bias_first)``: how oneDNN's float32 forward kernel for this convolution adds its products, one fused
    multiply-add after another -- ``order`` ``"kh kw ic"`` (kernel row, column, the input channels innermost) or
    ``"ic kh kw"`` (im2col's rows), from 0 with the bias added after, or from the bias (``bias_first``) -- where
    that is modelled; else None (the einsum's sums). Measured against torch 2.13 on this AVX-512 CPU, the kernels as
    ONEDNN_VERBOSE names them (oneDNN is open source): ``jit:avx512_core`` on at most 16 input channels (past 16 it
    blocks them by 16: not modelled); ``jit_1x1`` (a 1x1 kernel; ``plain``: unpadded, unit stride -- else not
    modelled), ``jit_dw`` (depthwise) and, for groups of at most 3 input and 8+ output channels, ``jit:avx2`` --
    these three from the bias; ``gemm:jit`` for the other groups, but for groups of input and output channels both
    multiples of 4 (a blocked kernel) and for ``spatial`` output positions one past a multiple of 16 (1, 17: a last
    block of one position sums otherwise, as a product with one column): not modelled."""
    taps = weight.shape[1] * weight.shape[2] * weight.shape[3]
    arrays = (input._array, weight._array)
    if any(type(a) is not np.ndarray or not a.flags.c_contiguous for a in arrays) or input.is_meta or \
            taps * weight.shape[0] * spatial * input.shape[0] > _ORDERED_PRODUCTS:  # (channels-last: other kernels)
        return None
    per_group, out_per_group = weight.shape[1], weight.shape[0] // groups
    one_by_one = weight.shape[2] == weight.shape[3] == 1
    if groups == 1:
        if one_by_one:
            return ("kh kw ic", True) if plain and per_group <= 64 else None
        return ("kh kw ic", False) if per_group <= 16 else None
    if one_by_one or (per_group % 4 == 0 and out_per_group % 4 == 0):
        return None
    if per_group == out_per_group == 1 or (per_group <= 3 and out_per_group >= 8):
        return "kh kw ic", True
    return ("ic kh kw", False) if spatial % 16 != 1 else None


def _products_in_order(windows, weight, order, start=None):
    """``einsum("ngchwij,gocij->ngohw")`` as fused multiply-adds in ``order`` (``_onednn_forward_kernel``'s), from 0 or
    from ``start`` (the bias, [G, O/G]): windows [N, G, C/G, H, W, kh, kw], weight [G, O/G, C/G, kh, kw]; float32
    [N, G, O/G, H, W]."""
    n, g, c, h, w, kh, kw = windows.shape
    out = np.zeros((n, g, weight.shape[1], h, w), np.float32)
    if start is not None:
        out += start[None, :, :, None, None]
    taps = [(ic, i, j) for i in range(kh) for j in range(kw) for ic in range(c)] if order == "kh kw ic" else \
        [(ic, i, j) for ic in range(c) for i in range(kh) for j in range(kw)]
    for ic, i, j in taps:
        x = np.ascontiguousarray(np.broadcast_to(windows[:, :, ic, None, :, :, i, j], out.shape))
        k = np.ascontiguousarray(np.broadcast_to(weight[None, :, :, ic, i, j, None, None], out.shape))
        out = float32_math.fused_multiply_add(x, k, out)
    return out


def _bias_first_values(input, weight, bias, stride, padding, dilation, groups, order):
    """The output of a kernel that starts its sums from the bias (``_onednn_forward_kernel``), [N, O, H, W]."""
    (ph, pw), x = padding, input._array
    padded = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw))) if ph or pw else x
    windows = _windows(np, padded, weight.shape[2:], stride, dilation)
    n, c, h_out, w_out, kh, kw = windows.shape
    per_group = (groups, weight.shape[0] // groups)
    values = _products_in_order(windows.reshape(n, groups, c // groups, h_out, w_out, kh, kw),
                                weight._array.reshape(*per_group, c // groups, kh, kw), order,
                                start=bias._array.reshape(per_group))
    return values.reshape(n, weight.shape[0], h_out, w_out)


def _conv_padding(padding, kernel, dilation, stride):
    """torch's ``padding``: an int, one per spatial dimension, 'valid' (none) or 'same' (the output
    keeps the input's size; stride 1 only). 'same' may need one more element after than before:
    returned as ``F.pad`` amounts (last dimension first: ``(left, right, top, bottom)`` in 2-D) with
    symmetric padding 0, as torch does."""
    rank = len(kernel)
    if padding == "valid":
        return (0,) * rank, None
    if padding == "same":
        if any(s != 1 for s in stride):
            raise RuntimeError("padding='same' is not supported for strided convolutions")
        totals = [d * (k - 1) for k, d in zip(kernel, dilation)]
        if all(t % 2 == 0 for t in totals):
            return tuple(t // 2 for t in totals), None
        return (0,) * rank, tuple(a for t in reversed(totals) for a in (t // 2, t - t // 2))
    if isinstance(padding, str):
        raise RuntimeError(f"Invalid padding string: {padding!r} (choose 'valid' or 'same')")
    return _spatial(padding, rank, "padding"), None


def _kernel_too_large(sizes, kernel, padding, dilation):
    """torch's error for a (dilated) kernel larger than the padded input, each sized per spatial dimension."""
    padded = " x ".join(str(n + 2 * p) for n, p in zip(sizes, padding))
    dilated = " x ".join(str(d * (k - 1) + 1) for k, d in zip(kernel, dilation))
    return RuntimeError(f"Calculated padded input size per channel: ({padded}). Kernel size: ({dilated}). Kernel size "
                        f"can't be greater than actual input size")


def _legacy_type_name(dtype):
    """The tensor type torch's 16-bit convolution message names: torch.HalfTensor, CPUBFloat16Type, torch.FloatTensor."""
    if dtypes.is_bfloat16(dtype):
        return "CPUBFloat16Type"
    return f"torch.{dtypes.torch_name(dtype)}Tensor"


def _geometry(stride, padding, dilation, output_padding=None):
    """(label, value) pairs of a convolution's geometry, in the order ATen checks their lengths."""
    pairs = [("stride", stride), ("padding", padding), ("dilation", dilation)]
    return pairs + [("output_padding", output_padding)] * (output_padding is not None)


def _check_convolution_call(name, dims, input, weight, bias, geometry, bias_words=True):
    """torch's first refusals of a convolution call, in ATen's order, before minilora reshapes anything: the input's
    rank (F's batchify), the weight's, a stride/padding/dilation (``geometry``: (label, value) pairs) of neither one
    value nor one per kernel dimension (an int spreads to ``dims``), the batched input's rank against the weight's,
    then the dtypes (the bias's in ``Input type (float) and bias type (double)`` words unless ``bias_words`` is False,
    where torch's kernel names the scalar types)."""
    if input.ndim not in (dims + 1, dims + 2):
        raise RuntimeError(f"Expected {dims + 1}D (unbatched) or {dims + 2}D (batched) input to {name}, but got "
                           f"input of size: {list(input.shape)}")
    if weight.ndim < 3:
        raise RuntimeError("weight should have at least three dimensions")
    kernel_dims = weight.ndim - 2
    by_mode = any(isinstance(value, str) for _, value in geometry)  # padding="same": ATen's other path, unchecked
    for label, value in geometry:
        if by_mode:
            break
        values = [value] * dims if isinstance(value, int) else list(value)
        if len(values) not in (1, kernel_dims):
            raise RuntimeError(f"expected {label} to be a single integer value or a list of {kernel_dims} values to "
                               f"match the convolution dimensions, but got {label}={values}")
    batched = [1] * (input.ndim == dims + 1) + list(input.shape)
    if len(batched) != weight.ndim:
        raise RuntimeError(f"Expected {weight.ndim}-dimensional input for {weight.ndim}-dimensional weight"
                           f"{'' if by_mode else ' '}{list(weight.shape)}, but got {len(batched)}-dimensional input of size {batched} instead")
    if input.dtype != weight.dtype:
        if _is_16bit_float(input) and _onednn_takes(input.dtype):
            raise RuntimeError(f"Input type ({_legacy_type_name(input.dtype)}) and weight type "
                               f"({_legacy_type_name(weight.dtype)}) should be the same or input should be a MKLDNN "
                               f"tensor and weight is a dense tensor")
        raise RuntimeError(f"expected scalar type {dtypes.torch_name(input.dtype)} but found "
                           f"{dtypes.torch_name(weight.dtype)}")
    if bias is not None and bias.dtype != input.dtype:
        if not bias_words:
            raise RuntimeError(f"expected scalar type {dtypes.torch_name(input.dtype)} but found "
                               f"{dtypes.torch_name(bias.dtype)}")
        from . import _c_name
        raise RuntimeError(f"Input type ({_c_name(input.dtype)}) and bias type ({_c_name(bias.dtype)}) should be "
                           f"the same")


def _onednn_takes(dtype):
    """Whether torch's convolution sends a 16-bit input to oneDNN on this CPU (ATen's use_mkldnn): bfloat16 where
    oneDNN has bf16 support (AVX-512 core), float16 where it has fp16 arithmetic (AVX512-FP16: Sapphire Rapids,
    not AMD's Zen 4). Its refusal of a weight of another dtype then names MKLDNN tensors; the other path's kernel
    says "expected scalar type"."""
    features = float32_math.cpu_features()
    if dtype == dtypes.float16:
        return bool(features.get("AVX512FP16"))
    return all(features.get(f) for f in ("AVX512F", "AVX512BW", "AVX512VL", "AVX512DQ"))


@_amp.autocasts
@saving_as_torch("input", "weight")  # what torch's convolution node keeps (not the bias)
def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """PyTorch's ``F.conv2d``: ``input`` [N, C, H, W] (or unbatched [C, H, W]) with ``weight``
    [O, C / groups, kh, kw], plus ``bias`` [O]."""
    # (the dtypes checked before a 16-bit input is computed in float32; a bias of another dtype would promote
    # the result silently)
    _check_convolution_call("conv2d", 2, input, weight, bias, _geometry(stride, padding, dilation))
    out = _conv2d(input, weight, bias, stride, padding, dilation, groups, onednn_float32=input.dtype == np.float32)
    return _conv_named(out, input, weight, bias, batched_ndim=4)


@float32_inside
def _conv2d(input, weight, bias, stride, padding, dilation, groups, onednn_float32=False):
    """(``onednn_float32``: a float32 input, where oneDNN's float32 kernels may run -- not a 16-bit one computed in
    float32 here: oneDNN's 16-bit kernels sum otherwise.)"""
    from .nn import pad as pad_op
    if input.ndim == 3:
        return _conv2d(input.unsqueeze(0), weight, bias, stride, padding, dilation, groups,
                       onednn_float32).squeeze(0)
    if input.ndim != 4 or weight.ndim != 4:
        raise RuntimeError(f"conv2d: expected a 3-D or 4-D input and a 4-D weight, got {tuple(input.shape)} "
                           f"and {tuple(weight.shape)}")
    if 0 in weight.shape[2:]:  # (an empty kernel sums nothing: torch refuses it, unless its empty-input shortcut
        # answers first; minilora always refuses)
        raise RuntimeError(f"kernel size should be greater than zero, but got kernel_height: {weight.shape[2]} "
                           f"kernel_width: {weight.shape[3]}")
    stride, dilation = _spatial(stride, 2, "stride"), _spatial(dilation, 2, "dilation")
    symmetric, extra = _conv_padding(padding, weight.shape[2:], dilation, stride)
    _check_conv_geometry(stride, symmetric, dilation, groups)
    _check_conv_channels(input, weight, groups)
    _check_empty_input(input)
    if extra is not None:
        input = pad_op(input, extra)
    sizes = [_out_size(n, k, s, p, d) for n, k, s, p, d in
             zip(input.shape[2:], weight.shape[2:], stride, symmetric, dilation)]
    if min(sizes) <= 0:
        raise _kernel_too_large(input.shape[2:], weight.shape[2:], symmetric, dilation)
    if conv_mm.takes(input, weight, bias, lambda: _uses_onednn(input, weight, stride, dilation, groups)):
        if bias is not None and (bias.ndim != 1 or bias.shape[0] != weight.shape[0]):
            raise RuntimeError(_bias_size_message(weight, bias))
        return conv_mm.SlowConv2d.apply(input, weight, bias, stride=stride, padding=symmetric, dilation=dilation,
                                        groups=groups)
    plain = all(s == 1 for s in stride) and not any(symmetric)
    kernel = _onednn_forward_kernel(input, weight, groups, plain, math.prod(sizes)) if onednn_float32 and _uses_onednn(
        input, weight, stride, dilation, groups) else None
    order, bias_first = kernel if kernel is not None else (None, False)
    ordered = {} if order is None else {"onednn_order": order}  # (meta tensors' shape rule takes the geometry only)
    backward = _onednn_backward_kernels(input, weight, stride, dilation, groups) if onednn_float32 else None
    ordered.update({} if backward is None else {"onednn_backward": backward})
    out = Conv2d.apply(input, weight, stride=stride, padding=symmetric, dilation=dilation, groups=groups, **ordered)
    out = _add_bias(out, bias, input, weight, stride, dilation, groups)
    if bias_first and bias is not None:  # (the composed graph differentiates; the values are the kernel's)
        values = _bias_first_values(input, weight, bias, stride, symmetric, dilation, groups, order)
        out = KernelValues.apply(out, values=values)
    return out


def _add_bias(out, bias, input, weight, stride, dilation, groups, transposed=False):
    """``out + bias`` per channel; where torch's convolution runs oneDNN (float32, ``_uses_onednn``) the bias's
    gradient is summed as oneDNN's backward sums it (``ConvBias``), elsewhere as torch's sum kernel."""
    if bias is None:
        return out
    if not transposed and (bias.ndim != 1 or bias.shape[0] != out.shape[1]):
        raise RuntimeError(_bias_size_message(weight, bias))
    chunks = "rows" if _onednn_gemm_bias(input, weight, stride, dilation, groups, transposed) else \
        _onednn_bias_chunks(input, weight, stride, dilation, groups, transposed)
    if chunks is None:
        return out + bias.reshape((1, -1) + (1,) * (out.ndim - 2))
    return ConvBias.apply(out, bias, chunks=chunks)


def _onednn_gemm_bias(input, weight, stride, dilation, groups, transposed):
    """Does torch's backward sum this float32 convolution's bias gradient in oneDNN's ``gemm:jit`` kernel
    (conv_onednn.runs_gemm_weights: groups, dilations; a contiguous NumPy input)?"""
    x = input._array
    return not transposed and type(x) is np.ndarray and x.flags.c_contiguous and input.dtype == np.float32 and \
        weight.dtype == np.float32 and input.shape[0] > 0 and _uses_onednn(input, weight, stride, dilation, groups) \
        and conv_onednn.runs_gemm_weights(weight.shape, groups, dilation)


def _bias_size_message(weight, bias):
    """torch's words for a convolution's bias that is not one value per output channel."""
    return (f"Given weight of size {list(weight.shape)}, expected bias to be 1-dimensional with {weight.shape[0]} "
            f"elements, but got bias of size {list(bias.shape)} instead")


def _uses_onednn(input, weight, stride, dilation, groups):
    """torch 2.13's ``ConvParams::use_mkldnn`` for a float32 CPU input (a 1-D one seen as [N, C, 1, L], as torch
    views it): a 1x1 kernel on one thread with a batch under 16, unit stride and dilation takes its own kernel, and
    so does a batch of 1 with a kernel of at most 3 wide or high, an ungrouped input of at most 20480 elements."""
    n, c, h, w = input.shape[:4]
    one_by_one = weight.shape[-1] == 1 and weight.shape[-2] == 1
    plain = all(s == 1 for s in stride) and all(d == 1 for d in dilation)
    if one_by_one and plain and n < 16 and parallel.num_threads() == 1:
        return False
    return groups > 1 or (weight.shape[-1] > 3 and weight.shape[-2] > 3) or n > 1 or n * c * h * w > 20480


def _onednn_weight_slices(input, weight, bias_chunks):
    """The slices of the batch oneDNN's jit kernels sum an ungrouped float32 weight gradient in, from the bias's
    (``_onednn_bias_chunks``): jit:avx2's threads take the blocks of 8 input channels too, then split the images;
    the "first convolution" (at most 3 input channels) splits the images evenly -- measured where they split evenly
    among the threads; else None (an uneven batch sums otherwise: not modelled)."""
    slices, by_rows = bias_chunks
    n, threads = input.shape[0], parallel.num_threads()
    if by_rows:
        return slices if n % slices == 0 else None
    if input.shape[1] > 8:
        blocks = -(-weight.shape[0] // 8) * -(-input.shape[1] // 8)
        return max(1, min(n, threads // min(blocks, threads)))
    return slices


def _onednn_bias_chunks(input, weight, stride, dilation, groups, transposed):
    """How many slices of the batch oneDNN's backward sums a float32 bias gradient in (``ConvBias``), or None
    where torch does not run oneDNN or runs an order not modelled here (grouped convolutions but a contiguous
    depthwise one, its threads splitting the images; ``_add_bias`` takes the ones of oneDNN's gemm kernel).
    Measured on torch 2.13 (AVX-512 CPU, oneDNN's jit:avx2 and jit:avx512_core kernels) on 1, 2, 3, 4 and 8
    threads: a contiguous transposed convolution in one slice (its deconvolution sums the bias itself); otherwise
    oneDNN's threads first take the blocks of output channels (16 a block where it runs jit:avx512_core, a
    channels_last input or 16+ input channels, else jit:avx2's 8), one thread a block, and the threads left for
    each block split the batch by balance211 (the first slices one image more); a contiguous input of at most 3
    channels (its "first convolution" kernel) splits the (image, first output dimension) pairs instead. Answers
    (slices, by rows). Not matched: a channels_last transposed convolution (None: torch's sum; pinned in
    tests/test_cnn_grads_r19.py)."""
    x = input._array
    if not (type(x) is np.ndarray and input.dtype == np.float32 and weight.dtype == np.float32):
        return None
    if not input.shape[0] or not _uses_onednn(input, weight, stride, dilation, groups):
        return None
    if groups > 1:  # (jit_dw, a depthwise convolution of one block of channels: its threads split the images)
        depthwise = weight.shape[0] == groups <= 16 and weight.shape[1] == 1
        return (min(input.shape[0], parallel.num_threads()), False) if depthwise and x.flags.c_contiguous and \
            not transposed else None
    channels_last = not x.flags.c_contiguous and np.moveaxis(x, 1, -1).flags.c_contiguous
    if transposed:
        return None if channels_last else (1, False)
    block = 16 if channels_last or input.shape[1] >= 16 else 8
    threads = parallel.num_threads()
    channel_threads = min(-(-weight.shape[0] // block), threads)  # (one thread a block of channels, at most)
    if input.shape[1] <= 3 and not channels_last:  # oneDNN's "first convolution": work items (image, out row)
        return threads // channel_threads, True
    return max(1, min(input.shape[0], threads // channel_threads)), False


def _onednn_backward_kernels(input, weight, stride, dilation, groups):
    """conv_onednn's ``BackwardKernels`` where torch's backward runs oneDNN on this float32 convolution (a contiguous
    NumPy input) and the kernels' orders are modelled; else None."""
    if input.is_meta or type(input._array) is not np.ndarray or not input._array.flags.c_contiguous or \
            not input.shape[0] or not _uses_onednn(input, weight, stride, dilation, groups):  # (an empty batch: 0s)
        return None
    threads = parallel.num_threads()
    if groups == 1:
        chunks = _onednn_bias_chunks(input, weight, stride, dilation, groups, transposed=False)
        if chunks is None:
            return None
        slices = _onednn_weight_slices(input, weight, chunks)
        return conv_onednn.ungrouped_kernels(weight.shape, stride, dilation, slices, input.shape[0], threads)
    threads_a_group = threads // min(groups, threads)  # (gemm:jit's threads take the groups first; jit_dw's the
    return conv_onednn.grouped_kernels(weight.shape, groups, slices=max(1, min(input.shape[0], threads_a_group)),
                                       depthwise_slices=min(input.shape[0], threads))  # batch: one block of 16)


class ConvBias(Function):
    """``out + bias`` per channel, whose bias gradient is oneDNN's (torch's convolution backward on its oneDNN
    path): each channel's elements added one after another in float32, image by image and each image in memory
    order (whatever its layout: measured), over ``chunks`` slices of the batch (one per thread), the slices'
    sums then added in order -- or, ``chunks`` "rows", as oneDNN's gemm kernel sums (conv_onednn.gemm_bias_gradient)."""
    torch_layout = "elementwise"  # (as the add it stands for)

    @staticmethod
    def forward(ctx, out, bias, chunks):
        ctx.chunks = chunks
        return out + bias.reshape((1, -1) + (1,) * (out.ndim - 2))

    @staticmethod
    def backward(ctx, g):
        if not ctx.needs_input_grad[1]:
            return g, None
        return g, (conv_onednn.gemm_bias_gradient(g) if ctx.chunks == "rows" else _onednn_bias_sum(g, *ctx.chunks))


def _onednn_bias_sum(g, slices, by_rows=False):
    """Each channel's sum of ``g`` in order, its images (or, ``by_rows``, its (image, first output dimension)
    items) cut into ``slices`` runs by balance211, the runs' sums added from the first."""
    channels = g.shape[1]
    items = g.shape[0] * (g.shape[2] if by_rows else 1)
    per_channel = np.moveaxis(g, 1, 0).reshape(channels, items, -1)
    total, start = np.zeros(channels, np.float32), 0
    for length in conv_onednn.balance211(items, slices):
        if length:
            rows = per_channel[:, start:start + length].reshape(channels, -1)
            part = np.cumsum(rows, axis=1, dtype=np.float32)[:, -1]  # (cumsum adds in order, one after another)
            total = part if not start else total + part
        start += length
    return total


def _check_conv_channels(input, weight, groups):
    channels = input.shape[1]
    if weight.shape[0] < groups:  # (no output channel: torch refuses an empty weight)
        raise RuntimeError(f"Given groups={groups}, expected weight to be at least {groups} at dimension 0, but "
                           f"got weight of size {list(weight.shape)} instead")
    if channels % groups or weight.shape[0] % groups or weight.shape[1] * groups != channels:
        raise RuntimeError(f"Given groups={groups}, weight of size {list(weight.shape)}, expected input"
                           f"{list(input.shape)} to have {weight.shape[1] * groups} channels, but got "
                           f"{channels} channels instead")


def _check_empty_input(input):
    """torch's convolutions take an empty batch or no channels, not an empty image of a real one."""
    if input.numel() == 0 and input.shape[0] and input.shape[1]:
        raise RuntimeError(f"Only zero batch or zero channel inputs are supported, but got input shape: "
                           f"{list(input.shape)}")


def _as_image(t):
    """A 1-D signal [N, C, L] (or [C, L]) as an image of height 1."""
    return t.unsqueeze(-2)


@_amp.autocasts
def conv1d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """PyTorch's ``F.conv1d``: ``input`` [N, C, L] (or [C, L]) with ``weight`` [O, C / groups, k]:
    ``conv2d`` on images of height 1."""
    _check_convolution_call("conv1d", 1, input, weight, bias, _geometry(stride, padding, dilation))
    if not isinstance(padding, str):
        padding = (0, padding if isinstance(padding, int) else padding[0])
    one = lambda v: (1, v if isinstance(v, int) else v[0])  # noqa: E731
    if bias is not None and (bias.ndim != 1 or bias.shape[0] != weight.shape[0]):  # (conv2d's words would name the
        raise RuntimeError(_bias_size_message(weight, bias))                        # image-shaped weight)
    try:
        out = conv2d(_as_image(input), _as_image(weight), bias, one(stride), padding, one(dilation), groups)
    except RuntimeError as exc:  # (conv2d's words name the height of 1: torch's conv1d names the length only)
        if "Calculated padded input size" not in str(exc) or isinstance(padding, str):
            raise
        raise _kernel_too_large(input.shape[-1:], weight.shape[-1:], padding[1:], one(dilation)[1:]) from None
    return _conv_named(out.squeeze(-2), input, weight, bias, batched_ndim=3)


@composed_layout_unknown  # (from a channels_last input: Function.torch_layout)
@_amp.autocasts
@saving_as_torch("input", "weight")  # what torch's convolution node keeps (not the bias)
def conv3d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """PyTorch's ``F.conv3d``: ``input`` [N, C, D, H, W] (or [C, D, H, W]) with ``weight``
    [O, C / groups, kd, kh, kw]: the sum, over the kernel's ``kd`` depth offsets, of ``conv2d`` of the
    depth slices that offset reads (every output depth at once, as a batch of images), with the
    kernel's slice at that depth."""
    _check_convolution_call("conv3d", 3, input, weight, bias, _geometry(stride, padding, dilation))
    out = _conv3d(input, weight, bias, stride, padding, dilation, groups)
    return _conv_named(out, input, weight, bias, batched_ndim=5)


@float32_inside
def _conv3d(input, weight, bias, stride, padding, dilation, groups):
    from .nn import pad as pad_op
    if input.ndim == 4:
        return _conv3d(input.unsqueeze(0), weight, bias, stride, padding, dilation, groups).squeeze(0)
    if input.ndim != 5 or weight.ndim != 5:
        raise RuntimeError(f"conv3d: expected a 4-D or 5-D input and a 5-D weight, got {tuple(input.shape)} "
                           f"and {tuple(weight.shape)}")
    if 0 in weight.shape[2:]:
        raise RuntimeError(f"kernel size should be greater than zero, but got kernel size {list(weight.shape[2:])}")
    stride, dilation = _spatial(stride, 3, "stride"), _spatial(dilation, 3, "dilation")
    symmetric, extra = _conv_padding(padding, weight.shape[2:], dilation, stride)
    _check_conv_geometry(stride, symmetric, dilation, groups)
    _check_conv_channels(input, weight, groups)
    _check_empty_input(input)
    if extra is not None:
        input = pad_op(input, extra)
    sizes = [_out_size(n, k, s, p, d) for n, k, s, p, d in
             zip(input.shape[2:], weight.shape[2:], stride, symmetric, dilation)]
    if min(sizes) <= 0:
        raise _kernel_too_large(input.shape[2:], weight.shape[2:], symmetric, dilation)
    if symmetric[0]:
        input = pad_op(input, (0, 0, 0, 0, symmetric[0], symmetric[0]))
    n, c, _, h, w = input.shape
    depth, step = sizes[0], stride[0]
    out = None
    for k in range(weight.shape[2]):  # one depth offset of the kernel: every output depth's slice at once
        start = k * dilation[0]
        slices = input[:, :, start:start + step * (depth - 1) + 1:step]  # [N, C, D_out, H, W]
        images = slices.transpose(1, 2).reshape(n * depth, c, h, w)
        part = Conv2d.apply(images, weight[:, :, k], stride=stride[1:], padding=symmetric[1:],
                            dilation=dilation[1:], groups=groups)
        out = part if out is None else out + part
    out = out.reshape(n, depth, weight.shape[0], *sizes[1:]).transpose(1, 2).contiguous()  # (torch's C order)
    return _add_bias(out, bias, input, weight, stride, dilation, groups)


def _torch_node(name, inputs=1):
    """Decorator of an op minilora builds from several where torch runs one kernel: the result's node
    takes torch's ``name`` (a string, or ``name(result)``), with the first ``inputs`` arguments as its
    inputs (as torch's graph shows them)."""
    def decorate(fn):
        @functools.wraps(fn)
        def op(*args, **kwargs):
            result = fn(*args, **kwargs)
            out = result[0] if isinstance(result, tuple) else result  # ((values, indices): the values)
            name_node(out, name if isinstance(name, str) else name(out), graph=args[:inputs])
            return result
        return op
    return decorate


def _conv_named(out, input, weight, bias, batched_ndim):
    """torch's node for a convolution: ConvolutionBackward0 of (input, weight, bias) -- minilora adds the
    bias in an op of its own --, or (one unbatched input) the squeeze of the batch dimension it added."""
    backward_reads(out, input, weight, zeros=False)  # (convolution_backward: the bias's gradient too)
    if input.ndim != batched_ndim:  # torch: squeeze(convolution(unsqueeze(input), ...), 0)
        convolution = ("ConvolutionBackward0", ("UnsqueezeBackward0", input), weight, bias)
        return name_node(out, "SqueezeBackward1", graph=(convolution,))
    return name_node(out, "ConvolutionBackward0", graph=(input, weight, bias))


# ---- pooling ---------------------------------------------------------------------------------------
def _lowest(dtype):
    """What max pooling pads with, so that padding never wins: -inf, or an integer dtype's smallest value
    (torch's integer kernels skip the padding; padded cells come after the input's in every window, so a
    tie with that value still picks the input's element)."""
    dtype = np.dtype(dtype)
    return int(np.iinfo(dtype).min) if dtype.kind in "iu" else -math.inf


def _window_maxima(xp, x, kernel, stride, padding, dilation):
    """Each window's largest element: ``(values, choice)``, ``choice`` its place in the flattened
    window (the first of equal ones, as torch; a NaN wins). The input is padded with -inf (an integer
    input: its smallest value), so padding never wins."""
    (ph, pw) = padding
    lowest = _lowest(x.dtype)
    padded = xp.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=lowest) if ph or pw else x
    windows = _windows(xp, padded, kernel, stride, dilation)
    flat = windows.reshape(*windows.shape[:4], windows.shape[4] * windows.shape[5])
    nan = xp.isnan(flat)
    choice = xp.where(nan.any(-1), nan.argmax(-1), flat.argmax(-1))
    return xp.take_along_axis(flat, choice[..., None], -1)[..., 0], choice, padded.shape, windows.shape


class MaxPool2d(Function):
    """Max pooling; the gradient of each output goes to the element it was taken from (added up in
    ``round_to``, a 16-bit dtype, where one element is the maximum of several windows)."""

    @staticmethod
    def forward(ctx, x, kernel, stride, padding, dilation, round_to=None):
        out, ctx.choice, padded_shape, window_shape = _window_maxima(xp_of(x), x, kernel, stride, padding,
                                                                     dilation)
        ctx.geometry = (padded_shape, kernel, stride, dilation, padding, window_shape)
        ctx.round_to = round_to
        return out

    @staticmethod
    def backward(ctx, g):
        xp = xp_of(g)
        padded_shape, (kh, kw), stride, dilation, padding, window_shape = ctx.geometry
        # Each output's gradient lands on the position its maximum came from (a one-hot of the choice;
        # NumPy's put_along_axis would do it too, but CuPy has no put_along_axis).
        chosen = xp.arange(kh * kw) == ctx.choice[..., None]
        # (a where, not chosen * g: torch adds g into zeros, so the others get +0, not -0 or NaN from inf * 0)
        grad_windows = xp.where(chosen, g[..., None], g.dtype.type(0)).reshape(window_shape)
        summed = _add_windows_back(xp, grad_windows, padded_shape, stride, dilation, ctx.round_to)
        return _unpad(summed, padding)


def _pool_geometry(kernel_size, stride, padding, dilation, rank=2):
    """Kernel, stride (default: the kernel), padding and dilation as ``rank`` ints each, with torch's checks."""
    kernel = _spatial(kernel_size, rank, "kernel_size")
    stride = kernel if stride is None or _empty_list(stride) else _spatial(stride, rank, "stride")
    padding, dilation = _spatial(padding, rank, "padding"), _spatial(dilation, rank, "dilation")
    _check_pool_geometry(kernel, stride, padding, dilation)
    return kernel, stride, padding, dilation


def _check_pool_geometry(kernel, stride, padding, dilation):
    """ATen's refusals in its order and words: pooling_output_shape's, dimension by dimension from the outermost
    (it runs first: a zero kernel is a zero default stride), then pool2d/pool3d_shape_check's, all at once."""
    for k, s, p, d in zip(kernel, stride, padding, dilation):
        if s == 0:
            raise RuntimeError("stride should not be zero")
        if p < 0:
            raise RuntimeError(f"pad must be non-negative, but got pad: {p}")
        if p > int(((k - 1) * d + 1) / 2):  # (C's division, toward zero)
            raise RuntimeError(f"pad should be at most half of effective kernel size, but got pad={p}, "
                               f"kernel_size={k} and dilation={d}")
    axes = "THW"[-len(kernel):]
    for what, name, values in (("kernel size", "k", kernel), ("stride", "d", stride),
                               ("dilation", "dilation", dilation)):
        if min(values) <= 0:
            got = " ".join(f"{name}{axis}: {v}" for axis, v in zip(axes, values))
            raise RuntimeError(f"{what} should be greater than zero, but got {got}")


def _one_pool_size(value, name, fn):
    """A 1-D pool's size or stride given as a list or tuple: its one int (an int passes), refused in torch's words
    (``fn``: max_pool1d's or avg_pool1d's) where it holds another number of them, not its first taken silently."""
    if isinstance(value, (int, np.integer)) or len(value) == 1:
        return value
    if fn == "avg_pool1d":
        raise RuntimeError(f"avg_pool1d() argument '{name}' should contain one int (got {len(value)})")
    forms = "None, an int, list of ints, or tuple of ints" if name == "stride" else "an int, list of ints or tuple of ints"
    raise RuntimeError(f"max_pool1d() {name} must be {forms} of size 1 but got size {len(value)}")


def _check_max_pool1d(kernel, stride, padding, dilation):
    """torch's own 1-D max pooling kernel's refusals (max_pool1d without indices), one int each."""
    for name, value, least in (("kernel_size", kernel, 1), ("stride", stride, 1), ("padding", padding, 0),
                               ("dilation", dilation, 1)):
        if value < least:
            rule = "non-negative" if least == 0 else "greater than zero"
            raise RuntimeError(f"max_pool1d() {name} must be {rule}, but got {value}")
        if name == "padding" and padding > kernel // 2:
            raise RuntimeError(f"max_pool1d() padding should be at most half of kernel size, but got padding="
                               f"{padding} and kernel_size={kernel}")


_FLOATS = ("float16", "bfloat16", "float32", "float64")


def _dtypes_taken(fn, input, others=(), floats=_FLOATS):
    """torch's NotImplementedError, naming its kernel ``fn``, for a dtype the kernel has no version of: it takes
    ``floats`` and the ``others`` named (integers, bool, complex). A complex input is refused by default, as by
    torch's pools and upsamplings (NumPy would average it, or take the max of complex numbers in its own order)."""
    if input.dtype.name not in floats and input.dtype.name not in others:
        raise NotImplementedError(f'"{fn}" not implemented for \'{dtypes.torch_name(input.dtype)}\'')


def _check_pool_input(fn, input):
    """A [C, H, W] or [N, C, H, W] input with non-empty planes (torch's RuntimeError otherwise)."""
    if input.ndim not in (3, 4) or 0 in tuple(input.shape[-3:]):
        raise RuntimeError(f"{fn}: non-empty 3D or 4D (batch mode) tensor expected for input, got "
                           f"{list(input.shape)}")


def _check_output_size(input, out_size):
    if min(out_size) <= 0:
        c, (h, w) = input.shape[1], input.shape[2:]
        raise RuntimeError(f"Given input size: ({c}x{h}x{w}). Calculated output size: "
                           f"({c}x{out_size[0]}x{out_size[1]}). Output size is too small")


def _ceil_extra(shape, kernel, stride, padding, dilation, ceil_mode):
    """``ceil_mode``: how many elements to add after the padded input (bottom, right) so that a last,
    partial window exists -- torch's rule: round the output size up, unless that window would
    start past the input and its left padding."""
    extra = []
    for size, k, s, p, d in zip(shape, kernel, stride, padding, dilation):
        reach = size + 2 * p - (d * (k - 1) + 1)
        count = (-(-reach // s) if ceil_mode else reach // s) + 1
        if ceil_mode and (count - 1) * s >= size + p:
            count -= 1
        extra.append(max(0, (count - 1) * s - reach))
    return tuple(extra)


def _pad_after(x, extra, value):
    """``x`` with ``extra`` (rows, columns) of ``value`` added at the bottom and the right."""
    from .nn import pad
    return pad(x, (0, extra[1], 0, extra[0]), value=value) if any(extra) else x


def _max_indices(input, kernel, stride, padding, dilation, extra):
    """torch's ``return_indices``: each maximum's position in its (unpadded) H * W plane."""
    x = input.numpy(force=True)
    grown = np.pad(x, ((0, 0), (0, 0), (0, extra[0]), (0, extra[1])), constant_values=_lowest(x.dtype))
    _, choice, _, window_shape = _window_maxima(np, grown, kernel, stride, padding, dilation)
    (kh, kw), (sh, sw), (dh, dw), (ph, pw) = kernel, stride, dilation, padding
    h_out, w_out = window_shape[2:4]
    rows = np.arange(h_out)[:, None] * sh + (choice // kw) * dh - ph
    cols = np.arange(w_out)[None, :] * sw + (choice % kw) * dw - pw
    return _indices_like_values((rows * x.shape[-1] + cols).astype(np.int64), input)


def _meta_indices(values):
    """A meta pool's indices: no maxima to find, unwritten int64s laid out as its values (ops/meta.py)."""
    from . import meta
    order = layout_order(values._array, None)  # (torch's preserve_format: the values' order of strides)
    indices = meta.unwritten(tuple(values.shape), np.int64, order)
    # (_make: the array as it is; Tensor() would take a meta array's shape only, in C order)
    return values._make(indices if indices.flags.c_contiguous else known_layout(indices, order), values._device,
                        False, None)


def _indices_like_values(indices, input):
    """A pool's indices (int64 on the host) as a Tensor laid out as torch's: like its values, in the input's
    suggested memory format (channels_last from a channels_last input)."""
    format = suggested_format(input._array)
    if format is not contiguous_format:
        indices = laid_out_copy(indices, format)
    return Tensor(indices, dtype=np.int64, device=input.device)


@saving_as_torch("input")  # what torch's node keeps
def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False):
    """PyTorch's ``F.max_pool2d`` over [N, C, H, W] (or [C, H, W]); ``stride`` defaults to the
    kernel size. ``return_indices=True`` also gives each maximum's flat index in its plane."""
    _check_pool_input("max_pool2d", input)
    _dtypes_taken("max_pool2d", input, others=("int64", "int32", "int16", "int8", "uint8"))
    if input.ndim == 3:  # (torch's suggested memory format of a 3-D input is contiguous: so is its result)
        out = max_pool2d(input.contiguous().unsqueeze(0), kernel_size, stride, padding, dilation, ceil_mode,
                         return_indices)
        values = name_node((out[0] if return_indices else out).squeeze(0), "MaxPool2DWithIndicesBackward0", input)
        return (values, out[1].squeeze(0)) if return_indices else values  # (torch's one node of the 3-D input)
    return _max_pool2d(input, kernel_size, stride, padding, dilation, ceil_mode, return_indices, _narrow(input))


@float32_inside
def _max_pool2d(input, kernel_size, stride, padding, dilation, ceil_mode, return_indices, round_to):
    kernel, stride, padding, dilation = _pool_geometry(kernel_size, stride, padding, dilation)
    extra = _ceil_extra(input.shape[2:], kernel, stride, padding, dilation, ceil_mode)
    _check_output_size(input, [(n + 2 * p + e - d * (k - 1) - 1) // s_ + 1 for n, p, e, d, k, s_ in
                               zip(input.shape[2:], padding, extra, dilation, kernel, stride)])
    out = MaxPool2d.apply(_pad_after(input, extra, _lowest(input.dtype)), kernel=kernel, stride=stride,
                          padding=padding, dilation=dilation, round_to=round_to)
    if any(extra):  # (ceil_mode's extra window: torch's kernel reads past the edge, its node is of the input)
        out = name_node(out, "MaxPool2DWithIndicesBackward0", input)
    if return_indices:
        return out, _meta_indices(out) if input.is_meta else _max_indices(input, kernel, stride, padding, dilation,
                                                                          extra)
    return out


def max_pool1d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False):
    """PyTorch's ``F.max_pool1d`` over [N, C, L]: ``max_pool2d`` of height 1."""
    if input.ndim not in (2, 3):
        raise RuntimeError(f"max_pool1d: Expected 2D or 3D (batch mode) tensor with optional 0 dim batch size "
                           f"for input, but got: {list(input.shape)}")
    if not return_indices and not (input.requires_grad and is_grad_enabled()):
        _dtypes_taken("max_pool1d_impl", input)  # (torch's own 1-D kernel, floats only; with indices or a gradient
        # to keep torch runs max_pool2d's, which takes integers too)
    kernel_size, padding, dilation = (_one_pool_size(v, name, "max_pool1d") for v, name in
                                      ((kernel_size, "kernel_size"), (padding, "padding"), (dilation, "dilation")))
    stride = None if stride is None or _empty_list(stride) else _one_pool_size(stride, "stride", "max_pool1d")
    one = lambda v: (1, v if isinstance(v, (int, np.integer)) else v[0])  # noqa: E731
    if not return_indices:  # (with indices torch runs max_pool2d's kernel, and its checks)
        _check_max_pool1d(one(kernel_size)[1], one(kernel_size if stride is None else stride)[1],
                          one(padding)[1], one(dilation)[1])
    out = max_pool2d(_as_image(input), one(kernel_size), stride and one(stride), (0, one(padding)[1]),
                     one(dilation), ceil_mode, return_indices)
    return tuple(t.squeeze(-2) for t in out) if return_indices else out.squeeze(-2)


class AvgPool2d(Function):
    """Average pooling: each window's sum divided by its output position's ``divisors`` entry.
    Backward gives each element of a window that output's gradient divided by its divisor (rounded
    to ``round_to`` first, and the sums after every addition, as torch's 16-bit kernel)."""

    @staticmethod
    def forward(ctx, x, kernel, stride, padding, extra, divisors, round_to=None):
        xp = xp_of(x)
        (ph, pw), (eh, ew) = padding, extra
        padded = xp.pad(x, ((0, 0), (0, 0), (ph, ph + eh), (pw, pw + ew))) if ph or pw or eh or ew else x
        windows = _windows(xp, padded, kernel, stride, (1, 1))
        ctx.geometry = (x.shape, padded.shape, stride, padding, windows.shape)
        ctx.divisors, ctx.round_to = divisors, round_to
        sums = _sum_in_order(windows)
        if sums.dtype.kind == "i":  # torch's int64 kernel: C++ integer division, toward zero
            return xp.sign(sums) * xp.sign(divisors) * (xp.abs(sums) // xp.abs(divisors))  # (divisor_override < 0)
        return sums / divisors

    @staticmethod
    def backward(ctx, g):
        xp = xp_of(g)
        shape, padded_shape, stride, (ph, pw), window_shape = ctx.geometry
        share = g / ctx.divisors
        if ctx.round_to is not None:
            share = _rounded(share, ctx.round_to)
        grad_windows = xp.broadcast_to(share[..., None, None], window_shape)
        summed = _add_windows_back(xp, grad_windows, padded_shape, stride, (1, 1), ctx.round_to)
        return summed[:, :, ph:ph + shape[2], pw:pw + shape[3]]


def _avg_divisors(size, out_size, kernel, stride, padding, count_include_pad, divisor_override):
    """What each output position's window sum is divided by, ``[h_out, w_out]``: torch's rule -- the
    window's size, clipped to the padded input (``count_include_pad``), or its elements inside the
    input (not), or ``divisor_override``. The extra ``ceil_mode`` elements never count."""
    if divisor_override is not None:
        return np.full(out_size, float(divisor_override))
    spans = []
    for n, n_out, k, s, p in zip(size, out_size, kernel, stride, padding):
        start = np.arange(n_out) * s - p
        end = np.minimum(start + k, n + p)
        spans.append(end - start if count_include_pad else np.minimum(end, n) - np.maximum(start, 0))
    return functools.reduce(np.multiply.outer, spans).astype(float)


@saving_as_torch("input")  # what torch's node keeps
def avg_pool2d(input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
               divisor_override=None):
    """PyTorch's ``F.avg_pool2d``: each window's sum divided by its size (``count_include_pad=False``:
    by its elements inside the input; ``divisor_override``: by that number)."""
    if input.ndim < 3:  # torch indexes dimension -3 first
        raise IndexError(f"avg_pool2d: Dimension out of range (expected to be in range of [-{input.ndim}, "
                         f"{input.ndim - 1}], but got -3): the input must be [C, H, W] or [N, C, H, W]")
    _check_pool_input("avg_pool2d", input)
    _dtypes_taken("avg_pool2d", input, others=("int64",))
    if input.ndim == 3:  # (torch's suggested memory format of a 3-D input is contiguous: so is its result)
        return avg_pool2d(input.contiguous().unsqueeze(0), kernel_size, stride, padding, ceil_mode,
                          count_include_pad, divisor_override).squeeze(0)
    return _avg_pool2d(input, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override,
                       _narrow(input))


@float32_inside
def _avg_pool2d(input, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override, round_to):
    if divisor_override is not None and divisor_override == 0:
        raise RuntimeError("divisor must be not zero")
    kernel, stride, padding, _ = _pool_geometry(kernel_size, stride, padding, 1)
    extra = _ceil_extra(input.shape[2:], kernel, stride, padding, (1, 1), ceil_mode)
    out_size = tuple((n + 2 * p + e - k) // s + 1
                     for n, p, e, k, s in zip(input.shape[2:], padding, extra, kernel, stride))
    _check_output_size(input, out_size)
    divisors = _avg_divisors(input.shape[2:], out_size, kernel, stride, padding, count_include_pad,
                             divisor_override)
    divisors = xp_of(input._array).asarray(divisors.astype(input.dtype))
    return AvgPool2d.apply(input, kernel=kernel, stride=stride, padding=padding, extra=extra, divisors=divisors,
                           round_to=round_to)


def avg_pool1d(input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True):
    """PyTorch's ``F.avg_pool1d`` over [N, C, L]: ``avg_pool2d`` of height 1."""
    if input.ndim not in (2, 3):
        raise RuntimeError(f"Expected 2 to 3 dimensions, but got {input.ndim}-dimensional tensor for argument "
                           f"#1 'self' (while checking arguments for avg_pool1d)")
    kernel_size, padding = (_one_pool_size(v, name, "avg_pool1d") for v, name in
                            ((kernel_size, "kernel_size"), (padding, "padding")))
    stride = None if stride is None or _empty_list(stride) else _one_pool_size(stride, "stride", "avg_pool1d")
    one = lambda v: (1, v if isinstance(v, (int, np.integer)) else v[0])  # noqa: E731
    out = avg_pool2d(_as_image(input), one(kernel_size), stride and one(stride), (0, one(padding)[1]), ceil_mode,
                     count_include_pad)
    return out.squeeze(-2)


class AdaptiveAvgPool2d(Function):
    """Output cell ``(i, j)``: the mean of input rows ``rows[i]`` and columns ``cols[j]`` (slices).
    As torch's kernels: the window's sum divided by its height, then by its width; backward adds
    ``g / height / width`` to every element of the window, cell by cell (in ``round_to``, a 16-bit
    dtype, rounding each step as torch's 16-bit kernel)."""

    @staticmethod
    def forward(ctx, x, rows, cols, round_to=None):
        xp = xp_of(x)
        out = xp.empty((*x.shape[:-2], len(rows), len(cols)), dtype=x.dtype)
        for i, r in enumerate(rows):
            for j, c in enumerate(cols):
                out[..., i, j] = _sum_in_order(x[..., r, c]) / (r.stop - r.start) / (c.stop - c.start)
        ctx.shape, ctx.rows, ctx.cols, ctx.round_to = x.shape, rows, cols, round_to
        return out

    @staticmethod
    def backward(ctx, g):
        xp = xp_of(g)
        gx = xp.zeros(ctx.shape, dtype=g.dtype)
        keep = (lambda a: _rounded(a, ctx.round_to)) if ctx.round_to is not None else (lambda a: a)
        for i, r in enumerate(ctx.rows):
            for j, c in enumerate(ctx.cols):
                share = keep(keep(g[..., i, j] / (r.stop - r.start)) / (c.stop - c.start))
                gx[..., r, c] = keep(gx[..., r, c] + share[..., None, None])
        return gx


def adaptive_avg_pool2d(input, output_size):
    """PyTorch's ``F.adaptive_avg_pool2d``: output cell ``(i, j)`` averages rows
    ``floor(i H / h_out)`` to ``ceil((i + 1) H / h_out)`` (and the same for columns), so any
    input size maps to ``output_size``; ``None`` keeps that dimension."""
    sizes = _adaptive_checks("adaptive_avg_pool2d", input, output_size)
    _dtypes_taken("adaptive_avg_pool2d", input)
    if sizes == (1, 1):  # torch computes a 1x1 output as the mean (its order of additions; nan over an empty
        # plane), from a channels_last input in that layout
        return composed_layout(input.mean((-2, -1), keepdim=True), input, "suggested")
    rows, cols = _adaptive_cells(input, sizes)
    if not rows or not cols:
        return _empty_pooling(input, (len(rows), len(cols)), "adaptive_avg_pool2d", "AdaptiveAvgPool2DBackward0")
    return name_node(_adaptive_avg_pool2d(input, rows, cols, _narrow(input)), "AdaptiveAvgPool2DBackward0", input)


class EmptyPooling(Function):
    """An adaptive pooling's output with no cells (an output size 0: ``F.interpolate(mode='area')`` at a scale
    that rounds to 0 asks for one). torch computes it; its backward refuses, naming the empty dimension."""

    @staticmethod
    def forward(ctx, x, shape, fn):
        ctx.pooling = fn
        return xp_of(x).zeros(shape, dtype=x.dtype)

    @staticmethod
    def backward(ctx, g):
        empty = next(d for d in range(1, g.ndim) if g.shape[d] == 0)
        raise RuntimeError(f"{ctx.pooling}_backward(): Expected grad_output to have non-zero size for non-batch "
                           f"dimensions, but grad_output has sizes {list(g.shape)} with dimension {empty} being empty")


def _empty_pooling(input, cells, fn, node, return_indices=False):
    shape = tuple(input.shape[:-len(cells)]) + tuple(cells)
    out = name_node(EmptyPooling.apply(input, shape=shape, fn=fn), node, input)
    if not return_indices:
        return out
    return out, Tensor(np.zeros(shape, np.int64), dtype=np.int64, device=input.device)


def _adaptive_checks(fn, input, output_size):
    """torch's checks of an adaptive pooling call; the two output sizes (None: the input's)."""
    if input.ndim not in (3, 4):
        raise RuntimeError(f"{fn}(): Expected 3D or 4D tensor, but got {list(input.shape)}")
    sizes = (output_size, output_size) if isinstance(output_size, int) or output_size is None else tuple(output_size)
    # torch checks every dim after the first (of an unbatched input too) for the max; the last two for the
    # average, and a 1x1 average is a mean (of nothing: nan)
    checked = () if sizes == (1, 1) and fn == "adaptive_avg_pool2d" else \
        input.shape[-2:] if fn == "adaptive_avg_pool2d" else input.shape[1:]
    if 0 in tuple(checked):
        raise RuntimeError(f"{fn}(): Expected input to have non-zero size for non-batch dimensions, but input "
                           f"has sizes {list(input.shape)}")
    if len(sizes) != 2:
        raise RuntimeError(f"{fn}: output_size must be 2")
    if any(n is not None and n < 0 for n in sizes):
        raise RuntimeError(f"{fn}: elements of output_size must be greater than or equal to 0 but received "
                           f"{list(sizes)}")
    return sizes


def _adaptive_cells(input, sizes):
    """Each output row's and column's input slice: ``floor(i H / h_out)`` to ``ceil((i + 1) H / h_out)``."""
    h, w = input.shape[-2:]
    h_out, w_out = (h if sizes[0] is None else sizes[0]), (w if sizes[1] is None else sizes[1])
    rows = tuple(slice(i * h // h_out, -(-(i + 1) * h // h_out)) for i in range(h_out))
    cols = tuple(slice(j * w // w_out, -(-(j + 1) * w // w_out)) for j in range(w_out))
    return rows, cols


@float32_inside
@saving_as_torch("input")  # what torch's node keeps (its backward reads the input's shape from it)
def _adaptive_avg_pool2d(input, rows, cols, round_to):
    return AdaptiveAvgPool2d.apply(input, rows=rows, cols=cols, round_to=round_to)


class AdaptiveMaxPool2d(Function):
    """Output cell ``(i, j)``: the largest element of input rows ``rows[i]`` and columns ``cols[j]``
    (the first of equal ones; a NaN wins). Backward adds each cell's gradient to its element, cell by
    cell (in ``round_to``, a 16-bit dtype, rounding after each addition, as torch's kernel)."""

    @staticmethod
    def forward(ctx, x, rows, cols, round_to=None):
        xp = xp_of(x)
        h, w = x.shape[-2:]
        out = xp.empty((*x.shape[:-2], len(rows), len(cols)), dtype=x.dtype)
        where = xp.empty(out.shape, dtype=np.int64)  # each maximum's flat index in its H x W plane
        for i, r in enumerate(rows):
            for j, c in enumerate(cols):
                block = x[..., r, c].reshape(*x.shape[:-2], (r.stop - r.start) * (c.stop - c.start))
                nan = xp.isnan(block)
                choice = xp.where(nan.any(-1), nan.argmax(-1), block.argmax(-1))
                out[..., i, j] = xp.take_along_axis(block, choice[..., None], -1)[..., 0]
                width = c.stop - c.start
                where[..., i, j] = (r.start + choice // width) * w + c.start + choice % width
        ctx.shape, ctx.where, ctx.round_to = x.shape, where, round_to
        return out

    @staticmethod
    def backward(ctx, g):
        xp = xp_of(g)
        planes = int(np.prod(ctx.shape[:-2]))
        gx = xp.zeros((planes, ctx.shape[-2] * ctx.shape[-1]), dtype=g.dtype)
        cells = g.shape[-2] * g.shape[-1]
        g2, where = g.reshape(planes, cells), ctx.where.reshape(planes, cells)
        every = xp.arange(planes)
        for cell in range(g2.shape[1]):  # in output order: torch's order of additions
            gx[every, where[:, cell]] += g2[:, cell]
            if ctx.round_to is not None:
                gx[every, where[:, cell]] = _rounded(gx[every, where[:, cell]], ctx.round_to)
        return gx.reshape(ctx.shape)


@saving_as_torch("input")  # what torch's node keeps
def adaptive_max_pool2d(input, output_size, return_indices=False):
    """PyTorch's ``F.adaptive_max_pool2d``: the maximum over the cells ``adaptive_avg_pool2d``
    averages; ``return_indices=True`` also gives each maximum's flat index in its H x W plane."""
    sizes = _adaptive_checks("adaptive_max_pool2d", input, output_size)
    _dtypes_taken("adaptive_max_pool2d", input)
    rows, cols = _adaptive_cells(input, sizes)
    if not rows or not cols:
        return _empty_pooling(input, (len(rows), len(cols)), "adaptive_max_pool2d", "AdaptiveMaxPool2DBackward0",
                              return_indices)
    out = _adaptive_max_pool2d(input, rows, cols, _narrow(input))
    if return_indices:
        return out, _meta_indices(out) if input.is_meta else _indices_like_values(
            _adaptive_max_indices(input, rows, cols), input)
    return out


@float32_inside
def _adaptive_max_pool2d(input, rows, cols, round_to):
    return AdaptiveMaxPool2d.apply(input, rows=rows, cols=cols, round_to=round_to)


def _adaptive_max_indices(input, rows, cols):
    """The flat indices of the maxima (a no-grad recomputation on the host)."""
    ctx = type("Ctx", (), {})()
    AdaptiveMaxPool2d.forward(ctx, input.numpy(force=True), rows, cols)
    return ctx.where


def one_output_size(fn, output_size):
    """A 1-D adaptive pooling's output size: an int or one int in a sequence (torch's words otherwise: a longer
    one had been cut to its first entry)."""
    if isinstance(output_size, (int, np.integer)):
        return int(output_size)
    if len(output_size) != 1:
        raise RuntimeError(f"{fn}() argument 'output_size' should contain one int (got {len(output_size)})")
    return int(output_size[0])


def adaptive_max_pool1d(input, output_size, return_indices=False):
    """``adaptive_max_pool2d`` of a [N, C, L] (or [C, L]) input seen as images of height 1."""
    if input.ndim not in (2, 3):
        raise RuntimeError(f"Expected 2 to 3 dimensions, but got {input.ndim}-dimensional tensor for argument "
                           f"#1 'self' (while checking arguments for adaptive_max_pool1d)")
    out = adaptive_max_pool2d(input.unsqueeze(-2), (1, one_output_size("adaptive_max_pool1d", output_size)),
                              return_indices)
    return tuple(t.squeeze(-2) for t in out) if return_indices else out.squeeze(-2)


# ---- unfold / fold: sliding blocks as columns (im2col) and back (col2im) -----------------------------
class Unfold(Function):
    """[N, C, H, W] -> [N, C * kh * kw, L]: every block of the (padded) input as a column, blocks in
    row-major order, a column's entries channel by channel then row by row of the block (torch's).
    Its adjoint is ``Fold``: each is the other's backward."""
    torch_node_name = staticmethod(lambda ctx: "Im2ColBackward0")  # (F.unfold is ATen's im2col)

    @staticmethod
    def forward(ctx, x, kernel, stride, padding, dilation, round_to=None):
        ctx.geometry = (x.shape[2:], kernel, stride, padding, dilation, round_to)
        return _im2col(xp_of(x), x, kernel, stride, padding, dilation)

    @staticmethod
    def backward(ctx, g):
        size, kernel, stride, padding, dilation, round_to = ctx.geometry
        return _col2im(xp_of(g), g, size, kernel, stride, padding, dilation, round_to)


class Fold(Function):
    """[N, C * kh * kw, L] -> [N, C, H, W]: each column added back where its block lies (sums where
    blocks overlap; in ``round_to``, a 16-bit dtype, rounding each addition, as torch's col2im)."""

    @staticmethod
    def forward(ctx, x, size, kernel, stride, padding, dilation, round_to=None):
        ctx.geometry = (kernel, stride, padding, dilation)
        return _col2im(xp_of(x), x, size, kernel, stride, padding, dilation, round_to)

    @staticmethod
    def backward(ctx, g):
        return _im2col(xp_of(g), g, *ctx.geometry)


def _im2col(xp, x, kernel, stride, padding, dilation):
    (ph, pw) = padding
    padded = xp.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw))) if ph or pw else x
    windows = _windows(xp, padded, kernel, stride, dilation)  # [N, C, oh, ow, kh, kw]
    n, c, oh, ow, kh, kw = windows.shape
    return xp.ascontiguousarray(windows.transpose(0, 1, 4, 5, 2, 3)).reshape(n, c * kh * kw, oh * ow)


def _col2im(xp, columns, size, kernel, stride, padding, dilation, round_to):
    (kh, kw), (ph, pw) = kernel, padding
    n, rows, _ = columns.shape
    oh, ow = _blocks(size, kernel, stride, padding, dilation)
    windows = columns.reshape(n, rows // (kh * kw), kh, kw, oh, ow).transpose(0, 1, 4, 5, 2, 3)
    padded = (n, rows // (kh * kw), size[0] + 2 * ph, size[1] + 2 * pw)
    summed = _add_windows_back(xp, windows, padded, stride, dilation, round_to, by_offset=True)
    return _unpad(summed, padding)


def _blocks(size, kernel, stride, padding, dilation):
    """How many blocks fit along each dimension."""
    return tuple(_out_size(n, k, s, p, d) for n, k, s, p, d in zip(size, kernel, stride, padding, dilation))


def _block_geometry(kernel_size, dilation, padding, stride):
    """The four pairs, refused with torch's RuntimeErrors (im2col's shape check) where a zero kernel,
    stride or dilation, or a negative padding, would give no blocks or index backwards."""
    kernel, stride, padding, dilation = (_pair(kernel_size, "kernel_size"), _pair(stride, "stride"),
                                         _pair(padding, "padding"), _pair(dilation, "dilation"))
    for name, label, (h, w), smallest in (("kernel size", "kernel", kernel, 1), ("stride", "stride", stride, 1),
                                          ("dilation", "dilation", dilation, 1), ("padding", "pad", padding, 0)):
        if min(h, w) < smallest:
            must = "be greater than zero" if smallest else "be non-negative"
            raise RuntimeError(f"{name} should {must}, but got {label}_height: {h} {label}_width: {w}")
    return kernel, stride, padding, dilation


def unfold(input, kernel_size, dilation=1, padding=0, stride=1):
    """PyTorch's ``F.unfold`` (im2col): [N, C, H, W] (or [C, H, W]) -> [N, C * kh * kw, L], every
    sliding block of the input as a column (a convolution is then a matrix product)."""
    if input.ndim < 3:  # torch reads dimensions 1 and 2 first
        raise IndexError(f"unfold: Dimension out of range: a {input.ndim}-D input has no spatial dimensions "
                         f"(expected [C, H, W] or [N, C, H, W])")
    if input.ndim > 4 or 0 in tuple(input.shape[-3:]):
        raise RuntimeError(f"Expected 3D or 4D (batch mode) tensor with possibly 0 batch size and other non-zero "
                           f"dimensions for input, but got: {list(input.shape)}")
    _dtypes_taken("im2col_out_cpu", input, others=("bool", "complex64", "complex128"))  # (torch 2.13: bool too)
    if input.ndim == 3:
        return unfold(input.unsqueeze(0), kernel_size, dilation, padding, stride).squeeze(0)
    kernel, stride, padding, dilation = _block_geometry(kernel_size, dilation, padding, stride)
    blocks = _blocks(input.shape[2:], kernel, stride, padding, dilation)
    if min(blocks) <= 0:
        raise RuntimeError(f"Given input with spatial size {tuple(input.shape[2:])}, kernel_size={kernel}, "
                           f"dilation={dilation}, padding={padding}, calculated shape of the array of sliding "
                           f"blocks as {blocks}, but its components must be at least one.")
    return _unfold(input, kernel, stride, padding, dilation, _narrow(input))


@float32_inside
def _unfold(input, kernel, stride, padding, dilation, round_to):
    return Unfold.apply(input, kernel=kernel, stride=stride, padding=padding, dilation=dilation, round_to=round_to)


def fold(input, output_size, kernel_size, dilation=1, padding=0, stride=1):
    """PyTorch's ``F.fold`` (col2im), the adjoint of ``unfold``: [N, C * kh * kw, L] (or unbatched)
    -> [N, C, *output_size], overlapping blocks summed."""
    if input.ndim not in (2, 3) or 0 in tuple(input.shape[-2:]):
        raise RuntimeError(f"Expected 2D or 3D (batch mode) tensor for input with possibly 0 batch size and "
                           f"non-zero dimensions for input, but got: {list(input.shape)}")
    _dtypes_taken("col2im_out_cpu", input, others=("bool", "complex64", "complex128"))  # (torch 2.13: bool too)
    if input.ndim == 2:
        return fold(input.unsqueeze(0), output_size, kernel_size, dilation, padding, stride).squeeze(0)
    kernel, stride, padding, dilation = _block_geometry(kernel_size, dilation, padding, stride)
    size = _pair(output_size, "output_size")
    if input.shape[1] % (kernel[0] * kernel[1]):
        raise RuntimeError(f"Expected size of input's dimension 1 to be divisible by the product of kernel_size, "
                           f"but got input.size(1)={input.shape[1]} and kernel_size={kernel}.")
    blocks = _blocks(size, kernel, stride, padding, dilation)
    if min(blocks) <= 0 or blocks[0] * blocks[1] != input.shape[2]:
        raise RuntimeError(f"Given output_size={size}, kernel_size={kernel}, dilation={dilation}, padding="
                           f"{padding}, stride={stride}, expected size of input's dimension 2 to match the "
                           f"calculated number of sliding blocks {blocks[0]} * {blocks[1]} = "
                           f"{blocks[0] * blocks[1]}, but got input.size(2)={input.shape[2]}.")
    return _fold(input, size, kernel, stride, padding, dilation, _narrow(input))


@float32_inside
def _fold(input, size, kernel, stride, padding, dilation, round_to):
    return Fold.apply(input, size=size, kernel=kernel, stride=stride, padding=padding, dilation=dilation,
                      round_to=round_to)


# ---- max unpooling: the maxima put back where max_pool2d(return_indices=True) found them -------------
class MaxUnpool2d(Function):
    """Each input value written at its flat index in an output plane of zeros (a later one wins where
    indices repeat); backward reads the gradient back at those indices."""

    @staticmethod
    def forward(ctx, x, indices, size):
        xp = xp_of(x)
        planes = int(np.prod(x.shape[:-2]))
        cells = x.shape[-2] * x.shape[-1]  # (not -1: there may be no planes)
        flat = indices.reshape(planes, cells)
        out = xp.zeros((planes, size[0] * size[1]), dtype=x.dtype)
        out[xp.arange(planes)[:, None], flat] = x.reshape(planes, cells)
        ctx.flat, ctx.shape, ctx.size = flat, x.shape, size
        return out.reshape(*x.shape[:-2], *size)

    @staticmethod
    def backward(ctx, g):
        xp = xp_of(g)
        rows = xp.arange(ctx.flat.shape[0])[:, None]
        return g.reshape(ctx.flat.shape[0], g.shape[-2] * g.shape[-1])[rows, ctx.flat].reshape(ctx.shape), None


@_amp.autocasts
def max_unpool2d(input, indices, kernel_size, stride=None, padding=0, output_size=None):
    """PyTorch's ``F.max_unpool2d``: the inverse of ``max_pool2d(..., return_indices=True)`` -- the
    pooled values put back at their positions, zeros elsewhere. The output size defaults to
    ``(H - 1) * stride - 2 * padding + kernel``; ``output_size`` picks another within one stride."""
    _unpool_kernel_dtype("max_unpool2d", input)
    kernel = _pair(kernel_size, "kernel_size")
    stride = kernel if stride is None else _pair(stride, "stride")
    size = _unpool_size(input, kernel, stride, _pair(padding, "padding"), output_size)
    if 0 in input.shape[1:]:  # (torch's kernel: an empty batch, or an unbatched input's empty channels only)
        raise RuntimeError(f"max_unpooling2d_forward_out_cpu(): Expected input to have non-zero size for non-batch "
                           f"dimensions, but got {list(input.shape)}")
    if indices.dtype != np.int64:
        raise RuntimeError(f"elements in indices should be type int64 but got: {indices.dtype}")
    if tuple(indices.shape) != tuple(input.shape):
        raise RuntimeError(f"Expected shape of indices to be same as that of the input tensor ({list(input.shape)}) "
                           f"but got indices tensor with shape: {list(indices.shape)}")
    positions = indices.numpy(force=True)
    if positions.size and (positions.min() < 0 or positions.max() >= size[0] * size[1]):
        bad = positions.max() if positions.max() >= size[0] * size[1] else positions.min()
        raise RuntimeError(f"Found an invalid max index: {bad} (output volumes are of size {size[0]}x{size[1]}")
    return MaxUnpool2d.apply(input, indices, size=size)


def _unpool_size(input, kernel, stride, padding, output_size):
    """torch's ``_unpool_output_size``: the default size, or ``output_size`` (its last dimensions)
    when it lies strictly within one stride of it."""
    rank = len(kernel)
    default = [(n - 1) * s + k - 2 * p for n, s, k, p in zip(input.shape[-rank:], stride, kernel, padding)]
    if output_size is None:
        for i, n in enumerate(default):  # (an empty input's (0 - 1) * stride: torch's Python check)
            if n < 0:
                raise ValueError(f"max_unpooling: output_size must contain non-negative spatial dimensions, but "
                                 f"got output_size[{i}]={n}")
        return tuple(default)
    sizes = list(output_size)[2:] if len(output_size) == rank + 2 else list(output_size)
    if len(sizes) != rank:
        raise ValueError(f"output_size should be a sequence containing {rank} or {rank + 2} elements, but it has a "
                         f"length of '{len(sizes)}'")
    for d, (n, m, s) in enumerate(zip(sizes, default, stride)):
        if not m - s < n < m + s:
            raise ValueError(f'invalid output_size "{sizes}" (dim {d} must be between {m - s} and {m + s})')
    return tuple(int(n) for n in sizes)


def _unpool_kernel_dtype(kernel, input):
    """torch's unpooling kernels are for floating dtypes only (an integer or bool input was put back as it came)."""
    if not dtypes.is_floating(input.dtype):
        raise NotImplementedError(f'"{kernel}" not implemented for \'{dtypes.torch_name(input.dtype)}\'')


@_torch_node("MaxUnpool3DBackward0")
def max_unpool3d(input, indices, kernel_size, stride=None, padding=0, output_size=None):
    """PyTorch's ``F.max_unpool3d``: the inverse of ``max_pool3d(..., return_indices=True)`` (indices
    are flat in each [D, H, W] volume: ``max_unpool2d``'s writing, on volumes seen as planes)."""
    _unpool_kernel_dtype("max_unpool3d", input)
    kernel = _ntuple(kernel_size, 3, "kernel_size")
    stride = kernel if stride is None else _ntuple(stride, 3, "stride")
    size = _unpool_size(input, kernel, stride, _ntuple(padding, 3, "padding"), output_size)
    if input.ndim not in (4, 5) or 0 in input.shape[1:]:
        raise RuntimeError(f"max_unpooling3d_forward_out_cpu(): Expected 4D or 5D tensor with non-zero sizes for "
                           f"non-batch dimensions, but got {list(input.shape)}")
    if indices.dtype != np.int64:
        raise RuntimeError(f"elements in indices should be type int64 but got: {indices.dtype}")
    if tuple(indices.shape) != tuple(input.shape):
        raise RuntimeError(f"Expected shape of indices to be same as that of the input tensor ({list(input.shape)}) "
                           f"but got indices tensor with shape: {list(indices.shape)}")
    positions = indices.numpy(force=True)
    volume = size[0] * size[1] * size[2]
    if positions.size and (positions.min() < 0 or positions.max() >= volume):
        bad = positions.max() if positions.max() >= volume else positions.min()
        raise RuntimeError(f"Found an invalid max index: {bad} (output volumes are of size "
                           f"{size[0]}x{size[1]}x{size[2]}")
    as_planes = lambda t: t.reshape(*t.shape[:-3], t.shape[-3] * t.shape[-2], t.shape[-1])  # noqa: E731
    out = MaxUnpool2d.apply(as_planes(input), as_planes(indices), size=(size[0] * size[1], size[2]))
    return out.reshape(*input.shape[:-3], *size)


def max_unpool1d(input, indices, kernel_size, stride=None, padding=0, output_size=None):
    """PyTorch's ``F.max_unpool1d``: ``max_unpool2d`` of height 1."""
    one = lambda v: v if isinstance(v, int) else v[0]  # noqa: E731
    size = None if output_size is None else (1, list(output_size)[-1])
    out = max_unpool2d(_as_image(input), _as_image(indices), (1, one(kernel_size)),
                       None if stride is None else (1, one(stride)), (0, one(padding)), size)
    return inputs_not_torchs(out.squeeze(-2))  # (torch's image is [N, C, L, 1], minilora's [N, C, 1, L])


# ---- resizing: F.interpolate -----------------------------------------------------------------------
_INTERPOLATE_MODES = {"nearest": None, "nearest-exact": None, "linear": 3, "bilinear": 4, "trilinear": 5,
                      "bicubic": 4, "area": None}  # mode: the input rank it needs (None: any of 3-D, 4-D, 5-D)


def _resize_kernel(input, size=None, scale_factor=None, mode="nearest", *args, **kwargs):
    """torch's kernel for ``F.interpolate``'s mode and spatial dims, under which autocast lists it (amp.py)."""
    spatial = getattr(input, "ndim", 0) - 2
    kernel = {"nearest": "upsample_nearest", "nearest-exact": "_upsample_nearest_exact", "linear": "upsample_linear",
              "bilinear": "upsample_bilinear", "trilinear": "upsample_trilinear", "bicubic": "upsample_bicubic",
              "area": "adaptive_avg_pool"}.get(mode)
    return kernel and f"{kernel}{spatial}d"


@_amp.autocasts(name_of=_resize_kernel)
def interpolate(input, size=None, scale_factor=None, mode="nearest", align_corners=None,
                recompute_scale_factor=None, antialias=False):
    """PyTorch's ``F.interpolate`` over [N, C, *spatial] (1 to 3 spatial dimensions): resize to
    ``size``, or by ``scale_factor`` (output size ``floor(in * scale)``; the source positions use
    ``1 / scale`` itself unless ``recompute_scale_factor=True``, as torch).

    Each spatial dimension is resized on its own, the last first (torch's kernels nest them so):
    'nearest' takes element ``floor(dst * in / out)`` ('nearest-exact': ``floor((dst + 0.5) * in /
    out)``); 'linear', 'bilinear', 'trilinear' blend the two neighbours of the source position
    ``(dst + 0.5) * in / out - 0.5`` (``align_corners=True``: ``dst * (in - 1) / (out - 1)``, the
    corner pixels' centres aligned); 'bicubic' blends four neighbours with Keys' cubic (a = -0.75,
    indices clamped at the edges, as torch); 'area' is adaptive average pooling. ``antialias=True``
    is refused."""
    if mode in ("nearest", "area", "nearest-exact") and align_corners is not None:
        raise ValueError("align_corners option can only be set with the interpolating modes: "
                         "linear | bilinear | bicubic | trilinear")
    sizes, scales = _interpolate_sizes(input, size, scale_factor, recompute_scale_factor, mode != "area")
    _check_interpolate_call(input, mode, antialias)  # (after the sizes: torch's order of refusals)
    if mode != "area" and math.prod(input.shape[1:]) == 0:  # (an empty batch is fine, empty channels not)
        raise RuntimeError(f"Non-empty {input.ndim}D data tensor expected but got a tensor with sizes "
                           f"{list(input.shape)}")
    if mode == "area":
        return _area_resize(input, sizes)
    if mode.startswith("nearest"):
        _dtypes_taken(_upsample_kernel(mode, input.ndim - 2), input, others=("uint8",))
    elif input.dtype == np.uint8 and input.ndim == 4:  # torch: a uint8 image path (rounded), refused here
        raise NotImplementedError(f"interpolate: mode={mode!r} on a uint8 input is not implemented in minilora "
                                  f"(torch rounds a uint8 image's interpolation its own way); convert to float first")
    else:
        _dtypes_taken(_upsample_kernel(mode, input.ndim - 2), input)
    kernel = _linear_kernel(input, sizes) if mode in ("linear", "bilinear", "trilinear") else None
    out = _interpolate(input, tuple(sizes), tuple(scales), mode, bool(align_corners), kernel, stored_as=input.dtype)
    out = composed_layout(out, input, "suggested")  # (torch's upsample kernels: channels_last from channels_last)
    return name_node(out, _UPSAMPLE_NODES[mode].format(len(sizes)), input, graph=(input,))  # (torch's one node)


def _upsample_kernel(mode, n):
    """The kernel torch's refusal of a dtype names, for ``mode`` over ``n`` spatial dimensions: its 2-D nearest and
    bilinear CPU kernels check the dtype in their channels-last loop (whatever the input's layout), the others
    while computing the source indices' weights."""
    if n == 2 and mode in ("nearest", "nearest-exact", "bilinear"):
        return f"upsample_{'bilinear' if mode == 'bilinear' else 'nearest'}2d_channels_last"
    kind = {"nearest-exact": "nearest", "bilinear": "linear", "trilinear": "linear", "bicubic": "cubic"}.get(mode, mode)
    return f"compute_indices_weights_{kind}"


# torch's node for each interpolate mode over n spatial dimensions
_UPSAMPLE_NODES = {"nearest": "UpsampleNearest{}DBackward0", "nearest-exact": "UpsampleNearestExact{}DBackward0",
                   "linear": "UpsampleLinear{}DBackward0", "bilinear": "UpsampleBilinear{}DBackward0",
                   "bicubic": "UpsampleBicubic{}DBackward0", "trilinear": "UpsampleTrilinear{}DBackward0"}


def _check_interpolate_call(input, mode, antialias):
    """torch's refusals, in torch's order and exception types."""
    if antialias and not (mode in ("bilinear", "bicubic") and input.ndim == 4):
        raise ValueError("Anti-alias option is restricted to bilinear, bicubic, and lanczos modes and requires "
                         "a 4-D tensor as input")
    if antialias:
        raise NotImplementedError(f"interpolate: mode={mode!r} with antialias=True is not implemented in "
                                  f"minilora (without antialias every mode is)")
    if mode not in _INTERPOLATE_MODES or input.ndim not in (3, 4, 5):
        raise NotImplementedError(f"Input Error: Only 3D, 4D and 5D input Tensors supported (got {input.ndim}D) "
                                  f"for the modes: nearest | linear | bilinear | bicubic | trilinear | lanczos | area | "
                                  f"nearest-exact (got {mode})")
    rank = _INTERPOLATE_MODES[mode]
    if rank is not None and input.ndim != rank:
        raise NotImplementedError(f"Got {input.ndim}D input, but {mode} mode needs {rank}D input")


def _interpolate_sizes(input, size, scale_factor, recompute_scale_factor, positive=True):
    """The output's spatial sizes, and the scale each dimension's source positions use (None: in / out).
    ``positive``: both sizes must be (torch's 'area' leaves that to adaptive average pooling)."""
    spatial = input.shape[2:]
    if size is not None and scale_factor is not None:
        raise ValueError("only one of size or scale_factor should be defined")
    if size is None and scale_factor is None:
        raise ValueError("either size or scale_factor should be defined")
    if size is not None:
        if recompute_scale_factor:
            raise ValueError("recompute_scale_factor is not meaningful with an explicit size.")
        sizes = [size] * len(spatial) if isinstance(size, int) else list(size)
        _same_rank(spatial, sizes, "output size", size)
        scales = [None] * len(spatial)
    else:
        scales = [scale_factor] * len(spatial) if isinstance(scale_factor, (int, float)) else list(scale_factor)
        _same_rank(spatial, scales, "scale_factor", scale_factor)
        sizes = [math.floor(float(n) * float(s)) for n, s in zip(spatial, scales)]
        scales = [None] * len(spatial) if recompute_scale_factor else [float(s) for s in scales]
    if positive and sizes and (min(sizes) <= 0 or min(spatial) <= 0):  # (no spatial dim: the rank check says so)
        raise RuntimeError(f"Input and output sizes should be greater than 0, but got input "
                           f"(D: {list(spatial)}) output (D: {sizes})")
    return [int(n) for n in sizes], scales


def _same_rank(spatial, values, what, given):
    if len(values) != len(spatial):
        raise ValueError(f"Input and {what.split()[0]} must have the same number of spatial dimensions, but got "
                         f"input with spatial dimensions of {list(spatial)} and {what} of {given}. Please provide "
                         f"input tensor in (N, C, d1, d2, ...,dK) format and {what} in (o1, o2, ...,oK) format.")


def _linear_kernel(input, sizes):
    """Which of torch's CPU kernels a linear resize runs: "channels_last" (``cpu_upsample_linear_channels_last``)
    for a channels_last input of more than 3 channels, and for any 2-D one whose output height + width is at most
    128 (or of 3 channels when torch runs on one thread); else "generic" (``upsample_generic_Nd_kernel_impl``)."""
    channels, spatial = input.shape[1], input.ndim - 2
    if spatial > 1 and channels > 3 and suggested_format(input._array) is not contiguous_format:
        return "channels_last"
    if spatial == 2 and (sum(sizes) <= 128 or (parallel.num_threads() == 1 and channels == 3)):
        return "channels_last"
    return "generic"


@float32_inside
def _interpolate(input, sizes, scales, mode, align_corners, kernel=None, stored_as=None):
    """The resize of ``input`` (float32 for a 16-bit one: ``stored_as`` names its dtype, in which torch's forward
    kernels store the weights they compute in float32)."""
    if mode in ("linear", "bilinear", "trilinear"):
        sources = tuple(_linear_sources(n_in, n_out, scale, align_corners, input.dtype)
                        for n_in, n_out, scale in zip(input.shape[2:], sizes, scales))
        forward_sources = sources if kernel == "channels_last" else _weights_stored_as(stored_as, sources)
        return LinearResize.apply(input, sources=sources, forward_sources=forward_sources, kernel=kernel)
    if mode.startswith("nearest"):
        sources = tuple(_nearest_sources(n_in, n_out, scale, mode == "nearest-exact")
                        for n_in, n_out, scale in zip(input.shape[2:], sizes, scales))
        return NearestResize.apply(input, sources=sources)
    arguments = [(n_in, n_out, scale, align_corners, input.dtype) for n_in, n_out, scale in zip(input.shape[2:], sizes,
                                                                                              scales)]  # (bicubic)
    taps = tuple([(index, _stored_as(stored_as, weight)) for index, weight in _cubic_sources(*a)] for a in arguments)
    return CubicResize.apply(input, taps=taps, backward_taps=tuple(_cubic_backward_sources(*a) for a in arguments))


def _stored_as(dtype, weights):
    """float32 ``weights`` as a 16-bit ``dtype`` holds them (torch's generic upsample kernel keeps a 16-bit input's
    weights in its dtype: rounded, then widened to float32 to blend); other dtypes: as they are."""
    if dtype is None or np.dtype(dtype).itemsize != 2 or weights.dtype != np.float32:
        return weights
    return weights.astype(dtype).astype(np.float32)


def _weights_stored_as(dtype, sources):
    """Linear ``sources`` with the weights a 16-bit forward stores: the second's rounded, the first ``1 - it`` in
    the 16-bit dtype (torch's ``lambda0 = scalar_t(1) - lambda1``), not ``1 - lambda`` rounded."""
    if dtype is None or np.dtype(dtype).itemsize != 2:
        return sources

    def stored(first, second, w_first, w_second):
        w_second = _stored_as(dtype, w_second)
        return first, second, _stored_as(dtype, (np.float32(1) - w_second).astype(w_second.dtype)), w_second
    return tuple(stored(*dimension) for dimension in sources)


class LinearResize(Function):
    """'linear', 'bilinear', 'trilinear' resizing as torch's CPU kernels compute it. ``sources``: per spatial
    dimension, each output index's two input indices and weights. ``kernel`` "generic" (torch's
    ``upsample_generic_Nd_kernel_impl``): each dimension blended on its own, the last first, ``t0 * w0 + t1 * w1``
    one fused multiply-add (GCC contracts it), ``fma(t0, w0, t1 * w1)``; "channels_last" (see ``_linear_kernel``):
    every corner at once (``_corners_blended``). Backward is torch's ``cpu_upsample_linear_backward`` for both:
    output position by output position (row-major), its 2^d corners in order, ``grad_in[corner] = fma(w_d * w_h *
    w_w, g, grad_in[corner])``."""

    @staticmethod
    def forward(ctx, x, sources, forward_sources=None, kernel="generic"):
        ctx.sources, ctx.kernel, ctx.shape, ctx.round_to = sources, kernel, x.shape, None
        xp, out = xp_of(x), x
        if kernel == "channels_last":
            return _corners_blended(xp, x, sources)
        for axis in reversed(range(len(sources))):  # (forward_sources: the weights as torch's forward stores them)
            first, second, w_first, w_second = (forward_sources or sources)[axis]
            shape = [len(first) if d == 2 + axis else 1 for d in range(x.ndim)]
            out = _multiply_add(xp, xp.take(out, first, 2 + axis), w_first.reshape(shape),
                                xp.take(out, second, 2 + axis) * w_second.reshape(shape))
        return out

    @staticmethod
    def backward(ctx, g):
        taps = [((first, w_first), (second, w_second)) for first, second, w_first, w_second in ctx.sources]
        return _resize_backward(taps, ctx.shape, g)


class NearestResize(Function):
    """'nearest' and 'nearest-exact' resizing: each output element a copy of the input element at ``sources``
    (per spatial dimension, each output index's input index). Backward is torch's ``cpu_upsample_nearest_backward``:
    each output's gradient added to its source element, output position by output position (row-major). (Resizing
    one dimension after the other, as index_select's, would add each row's gradients before the rows' sums.)"""

    @staticmethod
    def forward(ctx, x, sources):
        ctx.sources, ctx.shape, ctx.round_to = sources, x.shape, None
        xp, out = xp_of(x), x
        for axis, index in enumerate(sources):
            out = xp.take(out, index, 2 + axis)
        return out

    @staticmethod
    def backward(ctx, g):
        return _resize_backward([((index, None),) for index in ctx.sources], ctx.shape, g)


def _corners_blended(xp, x, sources):
    """torch's ``cpu_upsample_linear_channels_last``: the 2^d corners' values times their weights (the product of
    the corner's per-dimension weights), added in one expression. The channels in whole 256-bit vectors (torch's
    AVX2 build of the kernel: 8 floats) nest it from the last term, ``fma(x0, w0, fma(x1, w1, ... fma(x_last,
    w_last, x_before * w_before)))``; the remaining channels add it from the first, ``fma(x_last, w_last, ...
    fma(x0, w0, x1 * w1))`` (how GCC contracts each)."""
    terms = []
    for corner in np.ndindex(*(2,) * len(sources)):
        value, weight = x, None
        for axis, (pick, (first, second, w_first, w_second)) in enumerate(zip(corner, sources)):
            value = xp.take(value, second if pick else first, 2 + axis)
            w = (w_second if pick else w_first).reshape([-1 if d == axis else 1 for d in range(len(sources))])
            weight = w if weight is None else (weight * w).astype(x.dtype)
        terms.append((value, weight))
    nested = _multiply_add(xp, terms[-1][0], terms[-1][1], terms[-2][0] * terms[-2][1])
    for value, weight in reversed(terms[:-2]):
        nested = _multiply_add(xp, value, weight, nested)
    chained = _multiply_add(xp, terms[0][0], terms[0][1], terms[1][0] * terms[1][1])
    for value, weight in terms[2:]:
        chained = _multiply_add(xp, value, weight, chained)
    vectors = x.shape[1] - x.shape[1] % (32 // x.dtype.itemsize)
    chained[:, :vectors] = nested[:, :vectors]
    return chained


class CubicResize(Function):
    """'bicubic' resizing as torch's CPU kernels compute it. Forward (``upsample_generic_Nd_kernel_impl``): each
    dimension blended on its own, the last first, from its four ``taps`` (input indices and Keys' weights,
    ``_cubic_sources``), ``fma(t3, w3, fma(t2, w2, fma(t0, w0, t1 * w1)))`` as GCC contracts torch's loop. Backward
    (``upsample_bicubic2d_backward_out_frame``, compiled without fused multiply-adds, its weights from
    ``backward_taps``): output position by output position, its 16 taps (column tap outer, row tap inner), each
    adding ``g * w_row * w_column`` to the tap's input element."""

    @staticmethod
    def forward(ctx, x, taps, backward_taps):
        ctx.taps, ctx.backward_taps, ctx.shape, ctx.round_to = taps, backward_taps, x.shape, None
        xp, out = xp_of(x), x
        for axis in reversed(range(len(taps))):
            shape = [-1 if d == 2 + axis else 1 for d in range(x.ndim)]
            terms = [(xp.take(out, index, 2 + axis), weight.reshape(shape)) for index, weight in taps[axis]]
            out = _multiply_add(xp, terms[0][0], terms[0][1], terms[1][0] * terms[1][1])
            for value, weight in terms[2:]:
                out = _multiply_add(xp, value, weight, out)
        return out

    @staticmethod
    def backward(ctx, g):
        xp = xp_of(g)
        (rows, columns), (n, c, h, w) = ctx.backward_taps, ctx.shape
        out_h, out_w = g.shape[2:]
        oy, ox = np.divmod(np.arange(out_h * out_w), out_w)  # (output positions, row-major)
        corners = [(ii, jj) for ii in range(4) for jj in range(4)]  # (torch's loops: the column tap outer)
        targets = np.stack([rows[jj][0][oy] * w + columns[ii][0][ox] for ii, jj in corners], 1).reshape(-1)
        w_rows = np.stack([rows[jj][1][oy] for ii, jj in corners], 1).reshape(-1)
        w_columns = np.stack([columns[ii][1][ox] for ii, jj in corners], 1).reshape(-1)
        outputs = np.repeat(np.arange(out_h * out_w), len(corners))
        grad = xp.zeros((n * c, h * w), g.dtype)
        flat_g = g.reshape(n * c, out_h * out_w)
        for rank in _ranks_by_target(targets):  # (within a rank each input element receives at most once)
            share = (flat_g[:, outputs[rank]] * xp.asarray(w_rows[rank])) * xp.asarray(w_columns[rank])
            grad[:, targets[rank]] = grad[:, targets[rank]] + share
        return grad.reshape(ctx.shape)


def _multiply_add(xp, a, b, c):
    """``a * b + c`` rounded once (torch's kernels are compiled with FMA contraction); plain on a GPU."""
    if xp is not np:
        return a * b + c
    if np.result_type(a, b, c) == np.float64:
        return float32_math.fused_multiply_add64(a, b, c)
    return float32_math.fused_multiply_add(a, b, c)


def _resize_contributions(taps, spatial, dtype):
    """Every (input element, output element, weight) term of a resize's backward, in torch's order: output
    positions row-major, each one's corners in order (a corner: one of each dimension's ``taps``, pairs of input
    indices and weights, or of indices and None for 'nearest'); a corner's weight the product of its
    per-dimension weights, rounded after each product, as torch's (None for 'nearest')."""
    out_sizes = [len(index) for index, _ in (dim_taps[0] for dim_taps in taps)]
    corners = list(np.ndindex(*(len(dim_taps) for dim_taps in taps)))
    count = int(np.prod(out_sizes))
    outputs = np.broadcast_to(np.arange(count)[:, None], (count, len(corners)))
    targets, weights = np.zeros(outputs.shape, np.int64), None
    for axis, dim_taps in enumerate(taps):
        position = np.unravel_index(np.arange(count), out_sizes)[axis]
        targets = targets * spatial[axis] + np.stack([dim_taps[c[axis]][0][position] for c in corners], 1)
        if dim_taps[0][1] is not None:
            weight = np.stack([dim_taps[c[axis]][1][position] for c in corners], 1).astype(dtype)
            weights = weight if weights is None else (weights * weight).astype(dtype)
    return targets.reshape(-1), outputs.reshape(-1), None if weights is None else weights.reshape(-1)


def _resize_backward(taps, shape, g):
    """A resize's input gradient as torch's backward kernels add it: zeros, then each term of
    ``_resize_contributions`` in its order, ``grad += w * g`` one fused multiply-add (``grad += g`` for 'nearest')."""
    xp = xp_of(g)
    planes, spatial = int(np.prod(shape[:2])), shape[2:]
    grad = xp.zeros((planes, int(np.prod(spatial))), g.dtype)
    flat_g = g.reshape(planes, int(np.prod(g.shape[2:])))
    targets, outputs, weights = _resize_contributions(taps, spatial, g.dtype)
    for rank in _ranks_by_target(targets):  # (within a rank each input element receives at most once)
        received = flat_g[:, outputs[rank]]
        grad[:, targets[rank]] = grad[:, targets[rank]] + received if weights is None else \
            _multiply_add(xp, xp.asarray(weights[rank]), received, grad[:, targets[rank]])
    return grad.reshape(shape)


def _ranks_by_target(targets):
    """The terms (positions in ``targets``, kept in their order) grouped by rank: the r-th group holds each
    target's r-th term, so that a group's additions touch distinct elements and the groups run in order."""
    order = np.argsort(targets, kind="stable")
    sorted_targets = targets[order]
    starts = np.flatnonzero(np.r_[True, sorted_targets[1:] != sorted_targets[:-1]]) if targets.size else np.zeros(0, int)
    rank = np.arange(targets.size) - np.repeat(starts, np.diff(np.r_[starts, targets.size]))
    return [order[rank == r] for r in range(int(rank.max()) + 1 if rank.size else 0)]


def _source_scale(n_in, n_out, scale, dtype):
    """torch's ``compute_scales_value``: ``1 / scale_factor`` when one was given, else ``in / out``."""
    return dtype(1.0 / scale) if scale is not None and scale > 0 else dtype(n_in) / dtype(n_out)


def _nearest_sources(n_in, n_out, scale, exact):
    """The input index each output index copies (torch computes the position in float32)."""
    if not exact and n_out == n_in:
        return np.arange(n_out)
    if not exact and n_out == 2 * n_in:
        return np.arange(n_out) >> 1
    step = _source_scale(n_in, n_out, scale, np.float32)
    positions = np.arange(n_out, dtype=np.float32) + (np.float32(0.5) if exact else np.float32(0))
    return np.minimum(np.floor(positions * step).astype(np.int64), n_in - 1)


def _linear_sources(n_in, n_out, scale, align_corners, dtype):
    """For each output index: its two neighbours in the input and their weights, computed in the
    dtype the op runs in (float32, or float64), as torch's ``compute_indices_weights_linear``."""
    t = np.dtype(dtype).type
    if n_in == n_out:  # (torch copies: both neighbours the element itself, weights 1 and 0)
        return np.arange(n_out), np.arange(n_out), np.ones(n_out, t), np.zeros(n_out, t)
    if align_corners:
        step = t(n_in - 1) / t(n_out - 1) if n_out > 1 else t(0)
        source = step * np.arange(n_out, dtype=t)
    else:  # (scale * (dst + 0.5) - 0.5: one fused multiply-add in torch's compiled kernel)
        step = _source_scale(n_in, n_out, scale, t)
        source = np.maximum(_multiply_add(np, step, np.arange(n_out, dtype=t) + t(0.5), t(-0.5)), t(0))
    first = np.minimum(_floorf(source), n_in - 1)
    w_second = np.clip(source - first.astype(t), t(0), t(1)).astype(t)
    second = first + (first < n_in - 1)
    return first, second, t(1) - w_second, w_second


def _cubic_sources(n_in, n_out, scale, align_corners, dtype):
    """For each output index: its four neighbours (clamped into the input) and their weights, as torch's forward
    kernel computes them (``compute_indices_weights_cubic``): Keys' cubic with a = -0.75 of the source position's
    fraction (the position not clamped at 0), the position and the inner steps of each weight's polynomial fused
    multiply-adds (GCC's contraction; the last step of each is not fused)."""
    t = np.dtype(dtype).type
    if align_corners:
        step = t(n_in - 1) / t(n_out - 1) if n_out > 1 else t(0)
        source = step * np.arange(n_out, dtype=t)
    else:
        step = _source_scale(n_in, n_out, scale, t)
        source = _multiply_add(np, step, np.arange(n_out, dtype=t) + t(0.5), t(-0.5))
    base = _floorf(source)
    frac = (source - base.astype(t)).astype(t)
    fused = lambda a, b, c: _multiply_add(np, a, b, t(c))  # noqa: E731
    near = lambda x: fused(t(1.25), x, -2.25) * x * x + t(1)  # noqa: E731  ((a + 2) x - (a + 3)) x x + 1, |x| <= 1
    far = lambda x: fused(fused(t(-0.75), x, 3.75), x, -6.0) * x + t(3)  # noqa: E731  ((a x - 5a) x + 8a) x - 4a
    rest = (1 - frac).astype(t)  # (torch's x2 = 1 - t, then x2 + 1: two roundings)
    return _cubic_taps(base, [far(frac + 1), near(frac), near(rest), far(rest + 1)], n_in, t)


def _cubic_backward_sources(n_in, n_out, scale, align_corners, dtype):
    """``_cubic_sources`` as torch's backward kernel computes them: no fused multiply-adds, and the position's
    index at most ``n_in - 1``, its fraction clamped to [0, 1] (``guard_index_and_lambda``)."""
    t = np.dtype(dtype).type
    if align_corners:
        step = t(n_in - 1) / t(n_out - 1) if n_out > 1 else t(0)
        source = step * np.arange(n_out, dtype=t)
    else:
        source = _source_scale(n_in, n_out, scale, t) * (np.arange(n_out, dtype=t) + t(0.5)) - t(0.5)
    base = np.minimum(_floorf(source), n_in - 1)
    frac = np.clip(source - base.astype(t), t(0), t(1)).astype(t)
    a = t(-0.75)
    near = lambda x: ((a + 2) * x - (a + 3)) * x * x + 1  # noqa: E731
    far = lambda x: ((a * x - 5 * a) * x + 8 * a) * x - 4 * a  # noqa: E731
    rest = (1 - frac).astype(t)
    return _cubic_taps(base, [far(frac + 1), near(frac), near(rest), far(rest + 1)], n_in, t)


def _floorf(position):
    """C's ``floorf`` of each position, as torch's kernels take a source position's index: a float64 position is
    rounded to float32 first (2.9999999999 -> 3), so its index and fraction are those of the rounded one."""
    return np.floor(position.astype(np.float32)).astype(np.int64)


def _cubic_taps(base, weights, n_in, t):
    return [(np.clip(base + k - 1, 0, n_in - 1), np.asarray(w, t)) for k, w in enumerate(weights)]


def _area_resize(input, sizes):
    """'area': adaptive average pooling to ``sizes`` (3-D inputs as images of height 1)."""
    if input.ndim == 3:
        return adaptive_avg_pool2d(input.unsqueeze(-2), (1, sizes[0])).squeeze(-2)
    if input.ndim == 4:
        return adaptive_avg_pool2d(input, tuple(sizes))
    return adaptive_avg_pool3d(input, tuple(sizes))


# ---- transposed convolution ------------------------------------------------------------------------
class ConvTranspose2d(Function):
    """The adjoint of ``Conv2d`` with respect to its input: each input pixel ``x[n, c, h, w]`` adds
    ``x * weight[c, o]`` into the output window at ``(h * stride, w * stride)`` (``weight`` [C_in,
    C_out / groups, kh, kw], torch's layout). Forward is ``Conv2d``'s input gradient; backward is a
    ``Conv2d`` forward (for the input) and ``Conv2d``'s weight gradient (for the weight)."""

    @staticmethod
    def forward(ctx, x, weight, stride, padding, dilation, groups, output_padding, onednn=None):
        xp = xp_of(x)
        n, c_in, h, w = x.shape
        kh, kw = weight.shape[2:]
        ctx.x = x.reshape(n, groups, c_in // groups, h, w)
        ctx.weight = weight.reshape(groups, c_in // groups, weight.shape[1], kh, kw)
        ctx.onednn = onednn  # (conv_onednn.TransposedKernels: oneDNN's orders)
        full = tuple((size - 1) * s + d * (k - 1) + 1 + extra
                     for size, s, d, k, extra in zip((h, w), stride, dilation, (kh, kw), output_padding))
        ctx.geometry = (stride, padding, dilation, (h, w))
        if onednn is not None and onednn.output:  # (a convolution's input gradient, in that kernel's order)
            summed = conv_onednn.jit_input_gradient(x[:, None], weight[None], (n, weight.shape[1]) + full, stride,
                                                    dilation)
            return _unpad(summed, padding)
        grad_windows = xp.einsum("ngchw,gcoij->ngohwij", ctx.x, ctx.weight, optimize=True)
        grad_windows = grad_windows.reshape(n, groups * weight.shape[1], h, w, kh, kw)  # (no -1: N may be 0)
        summed = _add_windows_back(xp, grad_windows, (n, grad_windows.shape[1]) + full, stride, dilation)
        return _unpad(summed, padding)

    @staticmethod
    def backward(ctx, g):
        xp, (nx, nw) = xp_of(g), ctx.needs_input_grad
        stride, (ph, pw), dilation, (h, w) = ctx.geometry
        groups, kh, kw = ctx.weight.shape[0], ctx.weight.shape[3], ctx.weight.shape[4]
        if ctx.x.size == 0:  # an empty batch or image: nothing was summed (and no window fits an empty image)
            n, _, c, _, _ = ctx.x.shape
            return (xp.zeros((n, groups * c, h, w), g.dtype) if nx else None,
                    xp.zeros((groups * c,) + ctx.weight.shape[2:], g.dtype) if nw else None)
        padded = xp.pad(g, ((0, 0), (0, 0), (ph, ph), (pw, pw))) if ph or pw else g
        windows = _windows(xp, padded, (kh, kw), stride, dilation)[:, :, :h, :w]
        windows = windows.reshape(g.shape[0], groups, g.shape[1] // groups, h, w, kh, kw)
        onednn = ctx.onednn
        gx = gw = None
        if nx and onednn is not None and onednn.input_gradient:  # (a convolution's forward, in its order)
            gx = _products_in_order(windows, ctx.weight, "kh kw ic").reshape(g.shape[0], -1, h, w)
        elif nx:
            gx = xp.einsum("ngohwij,gcoij->ngchw", windows, ctx.weight, optimize=True).reshape(
                g.shape[0], groups * ctx.weight.shape[1], h, w)
        if nw and onednn is not None and onednn.weight_slices:  # (a convolution's weight gradient, the roles swapped)
            gw = conv_onednn.jit_weight_gradient(ctx.x, windows, onednn.weight_slices)
        elif nw:
            gw = xp.einsum("ngchw,ngohwij->gcoij", ctx.x, windows, optimize=True).reshape(
                groups * ctx.weight.shape[1], ctx.weight.shape[2], kh, kw)
        return gx, gw


@_amp.autocasts
def conv_transpose2d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
    """PyTorch's ``F.conv_transpose2d`` ("deconvolution", the upsampling layer of DCGAN's generator):
    ``input`` [N, C_in, H, W] (or [C_in, H, W]) with ``weight`` [C_in, C_out / groups, kh, kw];
    output size ``(H - 1) * stride - 2 * padding + dilation * (kh - 1) + output_padding + 1``."""
    _check_convolution_call("conv_transpose2d", 2, input, weight, None,
                            _geometry(stride, padding, dilation, output_padding))
    if bias is None or bias.dtype == input.dtype:
        out = _conv_transpose2d(input, weight, bias, stride, padding, output_padding, groups, dilation)
        return backward_reads(out, input, weight, zeros=False)  # (convolution_backward: the bias's gradient too)
    # torch adds a bias of another dtype in place: the result keeps the input's dtype. (torch refuses it
    # for a 16-bit input only where it hands that dtype to oneDNN, which depends on the CPU: float16 with
    # AVX512-FP16/AMX-FP16, bfloat16 with AVX-512. minilora adds it, as torch on the other CPUs.)
    out = _conv_transpose2d(input, weight, None, stride, padding, output_padding, groups, dilation)
    out = (out + bias.reshape(-1, 1, 1)).to(input.dtype)  # ([C, 1, 1]: batched or not)
    return backward_reads(out, input, weight, zeros=False)


@float32_inside
def _conv_transpose2d(input, weight, bias, stride, padding, output_padding, groups, dilation):
    if input.ndim == 3:
        return _conv_transpose2d(input.unsqueeze(0), weight, bias, stride, padding, output_padding, groups,
                                 dilation).squeeze(0)
    if weight.numel() == 0:  # (no output channel)
        raise RuntimeError(f"non-empty 2D or 4D weight tensor expected, but got: {list(weight.shape)}")
    if input.ndim != 4 or weight.ndim != 4:
        raise RuntimeError(f"conv_transpose2d: expected a 3-D or 4-D input and a 4-D weight, got "
                           f"{tuple(input.shape)} and {tuple(weight.shape)}")
    stride, padding, dilation = (_spatial(stride, 2, "stride"), _spatial(padding, 2, "padding"),
                                 _spatial(dilation, 2, "dilation"))
    output_padding = _spatial(output_padding, 2, "output_padding")
    _check_conv_geometry(stride, padding, dilation, groups)
    if any(op >= s and op >= d for op, s, d in zip(output_padding, stride, dilation)):
        raise RuntimeError(f"output padding must be smaller than either stride or dilation, but got "
                           f"output_padding_height: {output_padding[0]} output_padding_width: {output_padding[1]} "
                           f"stride_height: {stride[0]} stride_width: {stride[1]} dilation_height: {dilation[0]} "
                           f"dilation_width: {dilation[1]}")
    if input.shape[1] != weight.shape[0] or weight.shape[0] % groups:
        raise RuntimeError(f"Given transposed=1, weight of size {list(weight.shape)}, expected input"
                           f"{list(input.shape)} to have {weight.shape[0]} channels, but got {input.shape[1]} "
                           f"channels instead")
    _check_empty_input(input)
    sizes = [(n - 1) * s - 2 * p + d * (k - 1) + op + 1 for n, s, p, d, k, op in
             zip(input.shape[2:], stride, padding, dilation, weight.shape[2:], output_padding)]
    if min(sizes) <= 0:
        raise RuntimeError(f"Given input size per channel: ({input.shape[2]} x {input.shape[3]}). Calculated "
                           f"output size per channel: ({sizes[0]} x {sizes[1]}). Output size is too small")
    if conv_mm.takes(input, weight, bias, lambda: _uses_onednn(input, weight, stride, dilation, groups)) and \
            (bias is None or tuple(bias.shape) == (weight.shape[1] * groups,)):
        out = conv_mm.SlowConvTranspose2d.apply(input, weight, bias, stride=stride, padding=padding,
                                                dilation=dilation, groups=groups, output_padding=output_padding)
        return name_node(out, "ConvolutionBackward0", graph=(input, weight, bias))
    kernels = _onednn_transposed_kernels(input, weight, stride, dilation, groups)
    ordered = {} if kernels is None else {"onednn": kernels}  # (meta tensors' shape rule takes the geometry only)
    out = ConvTranspose2d.apply(input, weight, stride=stride, padding=padding, dilation=dilation, groups=groups,
                                output_padding=output_padding, **ordered)
    out = _add_bias(out, bias, input, weight, stride, dilation, groups, transposed=True)
    return name_node(out, "ConvolutionBackward0", graph=(input, weight, bias))  # (torch's one node, bias too)


def _onednn_transposed_kernels(input, weight, stride, dilation, groups):
    """conv_onednn's ``TransposedKernels`` for a float32 transposed convolution torch runs on oneDNN (ungrouped, a
    contiguous NumPy input), else None. oneDNN's deconvolution is its convolution with the roles swapped: the output
    a convolution's input gradient, the input gradient a convolution's forward, the weight gradient a convolution's
    with the output's gradient as its input -- whose threads take the blocks of 8 channels, then split the images."""
    x = input._array
    if input.dtype != np.float32 or groups != 1 or input.is_meta or type(x) is not np.ndarray or \
            not x.flags.c_contiguous or not input.shape[0] or not _uses_onednn(input, weight, stride, dilation, groups):
        return None
    c_in, c_out = weight.shape[:2]
    threads = parallel.num_threads()
    blocks = -(-c_in // 8) * (-(-c_out // 8) if c_out > 8 else 1)
    slices = max(1, min(input.shape[0], threads // min(blocks, threads)))
    return conv_onednn.transposed_kernels(weight.shape, stride, dilation, slices)


@_amp.autocasts
def conv_transpose1d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
    """PyTorch's ``F.conv_transpose1d`` over [N, C_in, L]: ``conv_transpose2d`` of height 1."""
    _check_convolution_call("conv_transpose1d", 1, input, weight, None,
                            _geometry(stride, padding, dilation, output_padding))
    one = lambda v: (v if isinstance(v, int) else v[0])  # noqa: E731
    out = conv_transpose2d(_as_image(input), _as_image(weight), bias, (1, one(stride)), (0, one(padding)),
                           (0, one(output_padding)), groups, (1, one(dilation)))
    return _conv_named(out.squeeze(-2), input, weight, bias, batched_ndim=3)


@composed_layout_unknown  # (from a channels_last input: Function.torch_layout)
@_amp.autocasts
@saving_as_torch("input", "weight")
def conv_transpose3d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
    """PyTorch's ``F.conv_transpose3d`` over [N, C_in, D, H, W] (or [C_in, D, H, W]) with ``weight``
    [C_in, C_out / groups, kd, kh, kw]: each kernel depth offset ``k`` is a ``conv_transpose2d`` of
    every input depth slice, whose results land ``stride`` apart from depth ``k * dilation`` on."""
    _check_convolution_call("conv_transpose3d", 3, input, weight, bias,
                            _geometry(stride, padding, dilation, output_padding), bias_words=False)
    out = _conv_transpose3d(input, weight, bias, stride, padding, output_padding, groups, dilation)
    return _conv_named(out, input, weight, bias, batched_ndim=5)


@float32_inside
def _conv_transpose3d(input, weight, bias, stride, padding, output_padding, groups, dilation):
    from .nn import pad as pad_op
    if input.ndim == 4:
        return _conv_transpose3d(input.unsqueeze(0), weight, bias, stride, padding, output_padding, groups,
                                 dilation).squeeze(0)
    if weight.numel() == 0:
        raise RuntimeError(f"non-empty 5D weight tensor expected, but got: {list(weight.shape)}")
    if input.ndim != 5 or weight.ndim != 5:
        raise RuntimeError(f"conv_transpose3d: expected a 4-D or 5-D input and a 5-D weight, got "
                           f"{tuple(input.shape)} and {tuple(weight.shape)}")
    stride, padding = _spatial(stride, 3, "stride"), _spatial(padding, 3, "padding")
    dilation, output_padding = _spatial(dilation, 3, "dilation"), _spatial(output_padding, 3, "output_padding")
    _check_conv_geometry(stride, padding, dilation, groups)
    if any(op >= s and op >= d for op, s, d in zip(output_padding, stride, dilation)):
        raise RuntimeError(f"output padding must be smaller than either stride or dilation, but got "
                           f"output_padding={list(output_padding)}, stride={list(stride)}, "
                           f"dilation={list(dilation)}")
    if input.shape[1] != weight.shape[0] or weight.shape[0] % groups:
        raise RuntimeError(f"Given transposed=1, weight of size {list(weight.shape)}, expected input"
                           f"{list(input.shape)} to have {weight.shape[0]} channels, but got {input.shape[1]} "
                           f"channels instead")
    _check_empty_input(input)
    sizes = [(n - 1) * s - 2 * p + d * (k - 1) + op + 1 for n, s, p, d, k, op in
             zip(input.shape[2:], stride, padding, dilation, weight.shape[2:], output_padding)]
    if min(sizes) <= 0:
        raise RuntimeError(f"Given input size per channel: ({' x '.join(map(str, input.shape[2:]))}). Calculated "
                           f"output size per channel: ({' x '.join(map(str, sizes))}). Output size is too small")
    n, c, depth, h, w = input.shape
    step, kd = stride[0], weight.shape[2]
    images = input.transpose(1, 2).reshape(n * depth, c, h, w)
    spread = (depth - 1) * step + 1  # the input depths, stride apart
    full = spread + dilation[0] * (kd - 1) + output_padding[0]  # before the padding is cut off
    out = None
    for k in range(kd):
        part = ConvTranspose2d.apply(images, weight[:, :, k], stride=stride[1:], padding=padding[1:],
                                     dilation=dilation[1:], groups=groups, output_padding=output_padding[1:])
        part = part.reshape(n, depth, part.shape[1], *sizes[1:]).transpose(1, 2)  # [N, O, D, H', W']
        if step > 1:  # step - 1 zero slices after each input depth
            gaps = part.new_zeros((n, part.shape[1], depth, step - 1, *sizes[1:]))
            part = _interleave(part, gaps, spread)
        first = k * dilation[0]
        part = pad_op(part, (0, 0, 0, 0, first, full - first - spread))
        out = part if out is None else out + part
    out = out[:, :, padding[0]:full - padding[0]]
    return _add_bias(out, bias, input, weight, stride, dilation, groups, transposed=True)


def _interleave(part, gaps, length):
    """``part`` [N, O, D, ...] with ``gaps`` [N, O, D, step - 1, ...] after each depth, cut to ``length``."""
    from .shape import cat
    n, o, depth = part.shape[:3]
    rows = cat([part.unsqueeze(3), gaps], 3)
    return rows.reshape(n, o, depth * rows.shape[3], *part.shape[3:])[:, :, :length]


# ---- 3-D pooling: the 2-D pooling of every depth slice a depth offset reads, combined over the offsets ------
def _check_pool3d_input(fn, input):
    if input.ndim not in (4, 5) or 0 in tuple(input.shape[-4:]):
        raise RuntimeError(f"{fn}: non-empty 4D or 5D (batch mode) tensor expected for input, got "
                           f"{list(input.shape)}")


def _depth_slices(padded, depth_out, kernel, stride, dilation):
    """For each kernel depth offset: the depth slices it reads, as images [N * D_out, C, H, W]."""
    n, c, _, h, w = padded.shape
    for k in range(kernel):
        start = k * dilation
        slices = padded[:, :, start:start + stride * (depth_out - 1) + 1:stride]
        yield slices.transpose(1, 2).reshape(n * depth_out, c, h, w)


def _as_volume(images, n, depth_out):
    """[N * D_out, C, H, W] -> [N, C, D_out, H, W], in C order as torch's kernels write it (the transpose's
    strides were what stride() reported, and .view() refused)."""
    return images.reshape(n, depth_out, *images.shape[1:]).transpose(1, 2).contiguous()


@composed_layout_unknown  # (from a channels_last input: Function.torch_layout)
@_torch_node("MaxPool3DWithIndicesBackward0")
@saving_as_torch("input")  # what torch's node keeps
def max_pool3d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
    """PyTorch's ``F.max_pool3d`` over [N, C, D, H, W] (or [C, D, H, W]): the largest of the
    ``max_pool2d`` results of the depth slices under each window (the first of equal ones in
    (depth, row, column) order, as torch)."""
    from .nn import pad as pad_op
    from .shape import stack
    _check_pool3d_input("max_pool3d", input)
    _dtypes_taken("max_pool3d", input, others=("int64", "int32", "int16", "int8", "uint8"))
    if input.ndim == 4:
        out = max_pool3d(input.unsqueeze(0), kernel_size, stride, padding, dilation, ceil_mode, return_indices)
        return tuple(t.squeeze(0) for t in out) if return_indices else out.squeeze(0)
    kernel, stride, padding, dilation = _pool_geometry(kernel_size, stride, padding, dilation, rank=3)
    extra = _ceil_extra(input.shape[2:3], kernel, stride, padding, dilation, ceil_mode)[0]
    depth = input.shape[2]
    depth_out = (depth + 2 * padding[0] + extra - dilation[0] * (kernel[0] - 1) - 1) // stride[0] + 1
    if depth_out <= 0:
        raise RuntimeError(f"max_pool3d: the output depth ({depth_out}) is too small (input {list(input.shape)})")
    padded = pad_op(input, (0, 0, 0, 0, padding[0], padding[0] + extra), value=_lowest(input.dtype))
    pooled = [max_pool2d(images, kernel[1:], stride[1:], padding[1:], dilation[1:], ceil_mode, return_indices)
              for images in _depth_slices(padded, depth_out, kernel[0], stride[0], dilation[0])]
    n = input.shape[0]
    values, offset = stack([p[0] if return_indices else p for p in pooled]).max(0)
    if not return_indices:
        return _as_volume(values, n, depth_out)
    # the depth each maximum came from, then its flat index in the input's [D, H, W] volume
    first = (np.arange(depth_out) * stride[0] - padding[0]).reshape(1, depth_out, 1, 1, 1)
    planes = stack([p[1] for p in pooled]).gather(0, offset.unsqueeze(0)).squeeze(0)
    chosen = offset.reshape(n, depth_out, *offset.shape[1:]) * dilation[0] + Tensor(first, dtype=np.int64,
                                                                                     device=input.device)
    plane = input.shape[3] * input.shape[4]
    indices = chosen * plane + planes.reshape(n, depth_out, *planes.shape[1:])
    return _as_volume(values, n, depth_out), indices.transpose(1, 2).contiguous()


@composed_layout_unknown  # (from a channels_last input: Function.torch_layout)
@_torch_node("AvgPool3DBackward0")
@saving_as_torch("input")  # what torch's node keeps
def avg_pool3d(input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
               divisor_override=None):
    """PyTorch's ``F.avg_pool3d``: each window's sum (the window sums of ``avg_pool2d`` over its depth
    slices) divided as torch divides it (the window's size, its elements inside the input, or
    ``divisor_override``)."""
    _check_pool3d_input("avg_pool3d", input)
    _dtypes_taken("avg_pool3d_out_frame", input, others=("int64",), floats=("float32", "float64"))
    if input.ndim == 4:
        return avg_pool3d(input.unsqueeze(0), kernel_size, stride, padding, ceil_mode, count_include_pad,
                          divisor_override).squeeze(0)
    if divisor_override is not None and divisor_override == 0:
        raise RuntimeError("divisor must be not zero")
    return _avg_pool3d(input, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)


@float32_inside
def _avg_pool3d(input, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override):
    kernel, stride, padding, _ = _pool_geometry(kernel_size, stride, padding, 1, rank=3)
    extra = _ceil_extra(input.shape[2:], kernel, stride, padding, (1, 1, 1), ceil_mode)
    out_size = tuple((n + 2 * p + e - k) // s + 1
                     for n, p, e, k, s in zip(input.shape[2:], padding, extra, kernel, stride))
    if min(out_size) <= 0:
        raise RuntimeError(f"avg_pool3d: the output size {list(out_size)} is too small (input {list(input.shape)})")
    divisors = _avg_divisors(input.shape[2:], out_size, kernel, stride, padding, count_include_pad,
                             divisor_override)
    divisors = xp_of(input._array).asarray(divisors.astype(input.dtype))
    return AvgPool3d.apply(input, kernel=kernel, stride=stride, padding=padding, extra=extra, divisors=divisors)


class AvgPool3d(Function):
    """3-D average pooling as torch's CPU kernel (``avg_pool3d_out_frame``) computes it: each window's
    elements added one at a time from 0, in (depth, row, column) order, and the sum divided by the output
    position's divisor. (Summing the depth slices' 2-D window sums instead rounds otherwise: up to 24 ulps.)
    Backward adds ``g / divisor`` to every element of each window, output position by output position."""
    torch_layout = "contiguous"  # (from a channels_last_3d input too: Function.torch_layout)

    @staticmethod
    def forward(ctx, x, kernel, stride, padding, extra, divisors):
        xp = xp_of(x)
        padded = xp.pad(x, ((0, 0), (0, 0)) + tuple((p, p + e) for p, e in zip(padding, extra)))
        windows = _windows3d(xp, padded, kernel, stride)
        ctx.geometry = (x.shape, padded.shape, stride, padding, windows.shape)
        ctx.replay = dict(kernel=kernel, stride=stride, padding=padding, extra=extra, divisors=divisors)
        ctx.divisors, ctx.round_to = divisors, None
        sums = _sum_block_in_order(windows)
        if sums.dtype.kind == "i":  # torch's int64 kernel: C++ integer division, toward zero (as AvgPool2d's)
            return xp.sign(sums) * xp.sign(divisors) * (xp.abs(sums) // xp.abs(divisors))
        return sums / divisors + 0  # (torch adds the average to a zeroed output: a -0.0 becomes 0.0)

    @staticmethod
    def backward(ctx, g):
        xp = xp_of(g)
        shape, padded_shape, stride, padding, window_shape = ctx.geometry
        shares = xp.broadcast_to((g / ctx.divisors)[..., None, None, None], window_shape)
        summed = _add_blocks_back(xp, shares, padded_shape, stride)
        return summed[(slice(None), slice(None)) + tuple(slice(p, p + n) for p, n in zip(padding, shape[2:]))]


def _windows3d(xp, padded, kernel, stride):
    """``[N, C, D_out, H_out, W_out, kd, kh, kw]``: the block under every output position (a view, no copy)."""
    view = xp.lib.stride_tricks.sliding_window_view(padded, kernel, axis=(2, 3, 4))
    return view[:, :, ::stride[0], ::stride[1], ::stride[2]]


def _sum_block_in_order(blocks):
    """The sum over ``blocks``' last three axes as torch's 3-D pooling kernels write it: ``sum = 0``, then
    ``sum += x`` for each element in (depth, row, column) order."""
    total = xp_of(blocks).zeros(blocks.shape[:-3], blocks.dtype)
    for offset in np.ndindex(*blocks.shape[-3:]):
        total += blocks[(Ellipsis,) + offset]
    return total


def _add_blocks_back(xp, grad_blocks, padded_shape, stride):
    """The adjoint of ``_windows3d``, in torch's order: the kernel offsets last to first, so that an element
    receives its blocks' gradients in the order of their output positions (as ``_add_windows_back``)."""
    out = xp.zeros(padded_shape, dtype=grad_blocks.dtype)
    outs = grad_blocks.shape[2:5]
    if not all(outs):  # (no blocks: the slices below would end at -1)
        return out
    for offset in reversed(list(np.ndindex(*grad_blocks.shape[5:]))):
        where = tuple(slice(k, k + s * (n - 1) + 1, s) for k, s, n in zip(offset, stride, outs))
        out[(slice(None), slice(None)) + where] += grad_blocks[(Ellipsis,) + offset]
    return out


def _adaptive_depths(input, output_size, fn):
    """The output sizes (None: the input's) and each output depth's slice of input depths."""
    sizes = (output_size,) * 3 if isinstance(output_size, int) or output_size is None else tuple(output_size)
    if len(sizes) != 3:
        raise RuntimeError(f"{fn}: output_size must be 3")
    if input.ndim not in (4, 5) or 0 in tuple(input.shape[-4:] if "max" in fn else input.shape[-3:]):
        raise RuntimeError(f"{fn}(): Expected 4D or 5D tensor with non-zero sizes, but got {list(input.shape)}")
    if any(n is not None and n < 0 for n in sizes):
        raise RuntimeError(f"{fn}: elements of output_size must be greater than or equal to 0 but received "
                           f"{list(sizes)}")
    sizes = tuple(n if s is None else s for n, s in zip(input.shape[-3:], sizes))
    depth = input.shape[-3]
    return sizes, [slice(i * depth // sizes[0], -(-(i + 1) * depth // sizes[0])) for i in range(sizes[0])]


def adaptive_avg_pool3d(input, output_size):
    """PyTorch's ``F.adaptive_avg_pool3d``: output cell ``(i, j, k)`` averages input depths ``floor(i D / d_out)``
    to ``ceil((i + 1) D / d_out)`` (rows and columns the same way). A 1x1x1 output is the mean over the three
    dimensions, as torch computes it (from a channels_last_3d input in that layout, as torch's)."""
    sizes, depths = _adaptive_depths(input, output_size, "adaptive_avg_pool3d")
    _dtypes_taken("adaptive_avg_pool3d_cpu", input)
    if sizes == (1, 1, 1):
        return composed_layout(input.mean((-3, -2, -1), keepdim=True), input, "suggested")
    rows, cols = _adaptive_cells(input, sizes[1:])
    if not depths or not rows or not cols:
        return _empty_pooling(input, (len(depths), len(rows), len(cols)), "adaptive_avg_pool3d",
                              "AdaptiveAvgPool3DBackward0")
    return _adaptive_average3d(input, (tuple(depths), rows, cols), _narrow(input))


@saving_as_torch("input")  # what torch's node keeps
@float32_inside
def _adaptive_average3d(input, cells, round_to):
    return AdaptiveAvgPool3d.apply(input, cells=cells, round_to=round_to)


class AdaptiveAvgPool3d(Function):
    """Output cell ``(i, j, k)``: the mean of the input block ``cells[0][i], cells[1][j], cells[2][k]`` (slices),
    as torch's kernel (``adaptive_avg_pool3d_out_frame``): the block added one element at a time from 0 in
    (depth, row, column) order, divided by its depth, then its height, then its width. (The mean over depth of
    the depth slices' 2-D averages rounds otherwise: up to 256 ulps.) Backward adds ``g / depth / height /
    width`` to every element of the block, cell by cell (in ``round_to``, a 16-bit dtype, each step rounded,
    as ``AdaptiveAvgPool2d``; the forward's sum and quotients too, as torch's scalar_t arithmetic)."""
    torch_layout = "contiguous"  # (from a channels_last_3d input too: Function.torch_layout)

    @staticmethod
    def forward(ctx, x, cells, round_to=None):
        xp = xp_of(x)
        out = xp.empty(x.shape[:-3] + tuple(len(c) for c in cells), dtype=x.dtype)
        steps = x if round_to is None else x.astype(round_to)  # (torch's 16-bit sum and quotients: each step rounded)
        for cell in np.ndindex(*out.shape[-3:]):
            block = tuple(c[i] for c, i in zip(cells, cell))
            total = _sum_block_in_order(steps[(Ellipsis,) + block])
            for extent in block:
                total = total / (extent.stop - extent.start)
            out[(Ellipsis,) + cell] = total
        ctx.shape, ctx.cells, ctx.round_to = x.shape, cells, round_to
        return out

    @staticmethod
    def backward(ctx, g):
        xp = xp_of(g)
        gx = xp.zeros(ctx.shape, dtype=g.dtype)
        keep = (lambda a: _rounded(a, ctx.round_to)) if ctx.round_to is not None else (lambda a: a)
        for cell in np.ndindex(*g.shape[-3:]):
            block = tuple(c[i] for c, i in zip(ctx.cells, cell))
            share = g[(Ellipsis,) + cell]
            for extent in block:
                share = keep(share / (extent.stop - extent.start))
            where = (Ellipsis,) + block
            gx[where] = keep(gx[where] + share[..., None, None, None])
        return gx


@composed_layout_unknown  # (from a channels_last input: Function.torch_layout)
@_torch_node("AdaptiveMaxPool3DBackward0")
def adaptive_max_pool3d(input, output_size, return_indices=False):
    """PyTorch's ``F.adaptive_max_pool3d``: the largest of each cell's depth slices' ``adaptive_max_pool2d``
    results (the first of equal ones in (depth, row, column) order)."""
    from .shape import stack
    sizes, depths = _adaptive_depths(input, output_size, "adaptive_max_pool3d")
    _dtypes_taken("adaptive_max_pool3d_cpu", input)
    if 0 in sizes:
        return _empty_pooling(input, sizes, "adaptive_max_pool3d", "AdaptiveMaxPool3DBackward0", return_indices)
    flat = input.flatten(-4, -3) if input.ndim == 5 else input
    values, planes = adaptive_max_pool2d(flat, sizes[1:], return_indices=True)
    values = values.reshape(*input.shape[:-2], *sizes[1:])
    planes = planes.reshape(*input.shape[:-2], *sizes[1:])
    out, where_ = zip(*(values[..., d, :, :].max(-3) for d in depths))
    out = stack(list(out), -3)
    if not return_indices:
        return out
    plane = input.shape[-2] * input.shape[-1]
    indices = [(offset + d.start) * plane + planes[..., d, :, :].gather(-3, offset.unsqueeze(-3)).squeeze(-3)
               for d, offset in zip(depths, where_)]
    return out, stack(indices, -3)


# ---- fractional max pooling (Graham 2014): windows at pseudo-random, increasing offsets --------------------
@_torch_node("FractionalMaxPool2DBackward0")
def fractional_max_pool2d(input, kernel_size, output_size=None, output_ratio=None, return_indices=False,
                          _random_samples=None):
    """PyTorch's ``F.fractional_max_pool2d`` over [N, C, H, W] (or [C, H, W]): ``output_size`` windows of
    ``kernel_size`` per dimension, their starts spread by one uniform draw per sample, channel and
    dimension -- drawn as torch draws them (``rand(N, C, 2)``; the first of each pair places the
    columns), so a seeded call gives torch's numbers."""
    return _fractional_max_pool(input, kernel_size, output_size, output_ratio, return_indices, _random_samples, 2)


@_torch_node("FractionalMaxPool3DBackward0")
def fractional_max_pool3d(input, kernel_size, output_size=None, output_ratio=None, return_indices=False,
                          _random_samples=None):
    """PyTorch's ``F.fractional_max_pool3d`` over [N, C, T, H, W] (or [C, T, H, W]); draws ``rand(N, C, 3)``
    (in (T, H, W) order)."""
    return _fractional_max_pool(input, kernel_size, output_size, output_ratio, return_indices, _random_samples, 3)


def _fractional_max_pool(input, kernel_size, output_size, output_ratio, return_indices, samples, rank):
    from ..factories import rand
    fn = f"fractional_max_pool{rank}d"
    if output_size is None and output_ratio is None:
        raise ValueError(f"{fn} requires specifying either an output_size or an output_ratio")
    if input.ndim not in (rank + 1, rank + 2) or 0 in tuple(input.shape[-rank - 1:]):
        raise RuntimeError(f"{fn}(): Expected {rank + 1}D or {rank + 2}D tensor with non-zero sizes for non-batch "
                           f"dimensions, but got {list(input.shape)}")
    spatial = tuple(input.shape[-rank:])
    if output_size is None:
        ratio = (float(output_ratio),) * rank if np.isscalar(output_ratio) else tuple(map(float, output_ratio))
        output_size = [int(n * r) for n, r in zip(spatial, ratio)]
    kernel, sizes = _ntuple(kernel_size, rank, "kernel_size"), _ntuple(output_size, rank, "output_size")
    for n, k, out in zip(spatial, kernel, sizes):
        if out + k - 1 > n:
            raise RuntimeError(f"{fn}(): pool size {k} too large relative to input size {n} and output size {out}")
    batched = input.ndim == rank + 2
    x = input if batched else input.unsqueeze(0)
    if samples is None:
        samples = rand(x.shape[0], x.shape[1], rank, dtype=input.dtype, device=input.device)
    draws = _fractional_draws(samples, x.shape[:2], rank)
    if rank == 2:
        draws = draws[..., ::-1]  # (torch's 2-D kernel places the columns with the first draw)
    starts = [_fractional_starts(draws[..., d], n, out, k) for d, (n, out, k) in enumerate(zip(spatial, sizes, kernel))]
    flat = _fractional_windows(starts, kernel, spatial)  # [N, C, *out, window]: flat input positions
    n, c = x.shape[:2]
    positions = int(np.prod(flat.shape[2:]))  # (out cells x window; explicit: N may be 0)
    index = Tensor(xp_of(x._array).asarray(flat.reshape(n, c, positions)), dtype=np.int64, device=input.device)
    windows = x.reshape(n, c, int(np.prod(spatial))).gather(2, index).reshape(flat.shape)
    values, choice = windows.max(-1)  # (the first of equal ones, as torch's strict >)
    backward_reads(values, input)  # (torch's fractional_max_pool2d_backward(grad, self, ...))
    if not batched:
        values = values.squeeze(0)
    if not return_indices:
        return values
    chosen = np.take_along_axis(flat, choice.numpy(force=True)[..., None], -1)[..., 0]
    indices = Tensor(xp_of(x._array).asarray(chosen), dtype=np.int64, device=input.device)
    return values, (indices if batched else indices.squeeze(0))


def _fractional_draws(samples, batch_and_channels, rank):
    """A given ``_random_samples`` checked as torch checks it ([N', C, rank] with N' at least the batch:
    an unbatched input is a batch of one) and its first N rows, the ones torch's kernel reads."""
    batch, channels = batch_and_channels
    if samples.ndim != 3:
        raise RuntimeError(f"Expect _random_samples to have 3 dimensions, got {samples.ndim}")
    if samples.shape[0] < batch:
        raise RuntimeError("Expect _random_samples.size(0) no less then input batch size.")
    if samples.shape[1] != channels:
        raise RuntimeError("Expect _random_samples.size(1) equals to input channel size.")
    if samples.shape[2] != rank:
        raise RuntimeError(f"Expect _random_samples.size(2) equals to {rank}; got {samples.shape[2]}.")
    return samples.numpy(force=True)[:batch]


def _fractional_starts(sample, size, out, kernel):
    """torch's generate_intervals: the window starts [N, C, out] along one dimension, from the draws
    [N, C] -- ``int((i + u) alpha) - int(u alpha)``, alpha = (size - kernel) / (out - 1), the last
    window flush with the end (computed in the draws' precision, as torch)."""
    starts = np.empty(sample.shape + (out,), dtype=np.int64)
    if out > 1:
        alpha = sample.dtype.type(size - kernel) / sample.dtype.type(out - 1)
        i = np.arange(out - 1, dtype=sample.dtype)
        starts[..., :-1] = ((i + sample[..., None]) * alpha).astype(np.int64) - \
            (sample[..., None] * alpha).astype(np.int64)
    starts[..., -1] = size - kernel
    return starts


def _fractional_windows(starts, kernel, spatial):
    """Every window's flat input positions (row-major, torch's scan order): [N, C, *out, prod(kernel)]."""
    rank = len(starts)
    flat = 0
    for d, (start, k, n) in enumerate(zip(starts, kernel, spatial)):
        # start [N, C, out_d] -> placed on its own output axis, its offsets on its own window axis
        shape = start.shape[:2] + tuple(start.shape[2] if e == d else 1 for e in range(rank))
        position = start.reshape(shape + (1,) * rank) + np.arange(k).reshape((1,) * (2 + rank) + tuple(
            k if e == d else 1 for e in range(rank)))
        flat = flat * n + position
    return flat.reshape(flat.shape[:2 + rank] + (int(np.prod(kernel)),))


# torch's CPU convolution and pooling kernels give a channels_last result for a channels_last input
# (its suggested memory format: Function.torch_layout)
for _op in (Conv2d, ConvTranspose2d, MaxPool2d, AvgPool2d, AdaptiveAvgPool2d, AdaptiveMaxPool2d):
    _op.torch_layout = "suggested"
