"""2-D convolution as torch's CPU "slow" kernel computes it (ATen's ConvolutionMM2d.cpp, ``thnn_conv2d``), with MKL.

torch 2.13 runs a float64 convolution, and a float32 one where oneDNN does not take it (``conv._uses_onednn``: a
batch of one small image, a 1x1 kernel on one thread), as matrix products, one image (one "frame") at a time and one
group of channels at a time:

    forward       columns = im2col(x[n])                 [C k_h k_w, H_out W_out] (a 1x1 kernel: x[n] itself)
                  out[n] = bias; out[n] += W columns     MKL's gemm, beta = 1 with a bias (0 without)
    grad input    cols = W^T grad[n]                     MKL's gemm, then col2im: every column added back to
                                                         the pixel it was read from, kernel offsets in order
    grad weight   gW = 0; gW += grad[n] columns^T        MKL's gemm with beta = 1, image after image
    grad bias     the sum of grad over images and pixels (torch's sum kernel)

Every product is MKL's own call with torch's shapes (a row-major call here is the column-major call torch makes), so
the bits follow; dilation reads the columns with gaps (torch's slow_conv_dilated2d, the same steps). Only where MKL is
minilora's BLAS and the arrays are NumPy's (``takes``); elsewhere ``conv.Conv2d``'s einsum runs.
"""
import numpy as np

from .. import blas
from ..tensor import Function
from ..float32_sums import sum_like_torch
from .elementwise import unbroadcast


def takes(input, weight, bias, uses_onednn):
    """Does torch run its slow kernel here, and can minilora take its steps? ``uses_onednn``: conv's model of
    torch's oneDNN choice for float32 (float64 never goes to oneDNN)."""
    arrays = [t._array for t in (input, weight) + ((bias,) if bias is not None else ())]
    if any(type(a) is not np.ndarray for a in arrays) or blas.library() != "mkl":
        return False
    dtype = input.dtype
    if any(a.dtype != dtype for a in arrays) or not blas.has_direct_gemm(dtype):
        return False
    if not (arrays[0].flags.c_contiguous and arrays[1].flags.c_contiguous):  # (channels_last: torch's other loops)
        return False
    if not (arrays[0].size and arrays[1].size):  # (an empty batch or image: conv's own shortcuts, torch's shapes)
        return False
    return dtype == np.float64 or (dtype == np.float32 and not uses_onednn())


class SlowConv2d(Function):
    """``x`` [N, C, H, W] (zero padding applied here), ``weight`` [O, C / groups, k_h, k_w], ``bias`` [O] or None."""

    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding, dilation, groups):
        columns = _columns(x, weight.shape[2:], stride, padding, dilation, groups)  # [N, G, C/G k_h k_w, H_out W_out]
        n, (o, kh, kw) = x.shape[0], (weight.shape[0], *weight.shape[2:])
        h_out, w_out = _out_sizes(x.shape[2:], (kh, kw), stride, padding, dilation)
        per_group = weight.reshape(groups, o // groups, -1)
        out = np.zeros((n, groups, o // groups, h_out * w_out), dtype=x.dtype)
        if bias is not None:
            out[...] = bias.reshape(groups, o // groups, 1)
        for image in range(n):
            for g in range(groups):
                blas.gemm(per_group[g], columns[image, g], out[image, g], beta=0.0 if bias is None else 1.0)
        # (conv.Conv2d's fields: higher_order's formula for a gradient's own graph reads them)
        ctx.columns, ctx.weight, ctx.has_bias = columns, per_group, bias is not None
        ctx.geometry = (x.shape, stride, dilation, padding)
        ctx.kernel = (kh, kw)
        return out.reshape(n, o, h_out, w_out)

    @staticmethod
    def backward(ctx, grad):
        needs_x, needs_w, needs_b = ctx.needs_input_grad[:3]
        groups, og = ctx.weight.shape[:2]
        n, o, h_out, w_out = grad.shape
        # (the bias's sum reads the gradient as it comes, in its strides, as torch's sum kernel does)
        gb = unbroadcast(grad, (1, o, 1, 1)).reshape(o) if ctx.has_bias and needs_b else None
        grad = np.ascontiguousarray(grad).reshape(n, groups, og, h_out * w_out)
        gx = _grad_input(grad, ctx.weight, ctx.geometry, ctx.kernel) if needs_x else None
        gw = _grad_weight(grad, ctx.columns, ctx.weight).reshape(o, -1, *ctx.kernel) if needs_w else None
        return gx, gw, gb


def _out_sizes(sizes, kernel, stride, padding, dilation):
    return tuple((size + 2 * p - d * (k - 1) - 1) // s + 1
                 for size, k, s, p, d in zip(sizes, kernel, stride, padding, dilation))


def _columns(x, kernel, stride, padding, dilation, groups):
    """im2col of every image: [N, G, C/G k_h k_w, H_out W_out], rows ordered (channel, kernel row, kernel column)
    and columns (output row, output column), as torch's unfolded2d_copy lays them out."""
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel, stride, padding, dilation
    padded = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw))) if ph or pw else x
    span = (dh * (kh - 1) + 1, dw * (kw - 1) + 1)
    windows = np.lib.stride_tricks.sliding_window_view(padded, span, axis=(2, 3))[:, :, ::sh, ::sw, ::dh, ::dw]
    n, _, h_out, w_out = windows.shape[:4]
    return np.ascontiguousarray(windows.transpose(0, 1, 4, 5, 2, 3)).reshape(n, groups, -1, h_out * w_out)


def _grad_input(grad, per_group, geometry, kernel):
    """Per image and group: ``W^T grad`` (MKL), then col2im (kernel offsets in order, from zeros)."""
    (x_shape, stride, dilation, padding), (kh, kw) = geometry, kernel
    n, groups, og, pixels = grad.shape
    cg = per_group.shape[2] // (kh * kw)
    h_out, w_out = _out_sizes(x_shape[2:], (kh, kw), stride, padding, dilation)
    columns = np.empty((n, groups, cg * kh * kw, pixels), dtype=grad.dtype)
    for image in range(n):
        for g in range(groups):
            blas.gemm(per_group[g].T, grad[image, g], columns[image, g])
    columns = columns.reshape(n, groups * cg, kh, kw, h_out, w_out)
    (ph, pw), (sh, sw), (dh, dw) = padding, stride, dilation
    padded = np.zeros((n, groups * cg, x_shape[2] + 2 * ph, x_shape[3] + 2 * pw), dtype=grad.dtype)
    for i in range(kh):
        for j in range(kw):
            rows = slice(i * dh, i * dh + sh * (h_out - 1) + 1, sh)
            cols = slice(j * dw, j * dw + sw * (w_out - 1) + 1, sw)
            padded[:, :, rows, cols] += columns[:, :, i, j]
    return padded[:, :, ph:ph + x_shape[2], pw:pw + x_shape[3]]


def _grad_weight(grad, columns, per_group):
    """Per group: zeros, then ``+= grad[n] columns[n]^T`` image after image (MKL's gemm with beta = 1)."""
    n, groups = grad.shape[:2]
    gw = np.zeros(per_group.shape, dtype=grad.dtype)
    for g in range(groups):
        for image in range(n):
            blas.gemm(grad[image, g], columns[image, g].T, gw[g], beta=1.0)
    return gw


class SlowConvTranspose2d(Function):
    """torch's slow_conv_transpose2d (NaiveConvolutionTranspose2d.cpp), group by group and image by image::

        forward       columns = W^T x[n]                    MKL's gemm  [C_out k_h k_w, H W]
                      out[n] = col2im(columns) + bias        from zeros, kernel offsets in order (measured:
                                                             the bias last)
        grad input    grad_x[n] = W im2col(grad[n])          MKL's gemm
        grad weight   gW = 0; gW += x[n] im2col(grad[n])^T   MKL's gemm with beta = 1, image after image
        grad bias     gb = 0; gb += the sum of grad[n] over its pixels, image after image

    ``x`` [N, C_in, H, W], ``weight`` [C_in, C_out / groups, k_h, k_w]."""

    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding, dilation, groups, output_padding):
        n, c_in, h, w = x.shape
        og, kh, kw = weight.shape[1:]
        ctx.weight = weight.reshape(groups, c_in // groups, og, kh, kw)  # (conv.ConvTranspose2d's fields)
        ctx.x, ctx.geometry, ctx.has_bias = x.reshape(n, groups, c_in // groups, h, w), (stride, padding, dilation,
                                                                                            (h, w)), bias is not None
        per_group = ctx.weight.reshape(groups, c_in // groups, og * kh * kw)
        columns = np.empty((n, groups, og * kh * kw, h * w), dtype=x.dtype)
        for image in range(n):
            for g in range(groups):
                blas.gemm(per_group[g].T, ctx.x[image, g].reshape(-1, h * w), columns[image, g])
        full = tuple((size - 1) * s + d * (k - 1) + 1 + extra
                     for size, s, d, k, extra in zip((h, w), stride, dilation, (kh, kw), output_padding))
        out = np.zeros((n, groups * og) + tuple(f - 2 * p for f, p in zip(full, padding)), dtype=x.dtype)
        columns = columns.reshape(n, groups * og, kh, kw, h, w)
        _col2im(columns, out, stride, padding, dilation)
        if bias is not None:
            out += bias.reshape(-1, 1, 1)
        return out

    @staticmethod
    def backward(ctx, grad):
        needs_x, needs_w, needs_b = ctx.needs_input_grad[:3]
        stride, padding, dilation, (h, w) = ctx.geometry
        groups, cg, og, kh, kw = ctx.weight.shape
        n = grad.shape[0]
        columns = _transposed_columns(grad, (kh, kw), stride, padding, dilation, groups, (h, w))
        per_group = ctx.weight.reshape(groups, cg, og * kh * kw)
        gx = gw = gb = None
        if needs_x:
            gx = np.empty((n, groups, cg, h * w), dtype=grad.dtype)
            for image in range(n):
                for g in range(groups):
                    blas.gemm(per_group[g], columns[image, g], gx[image, g])
            gx = gx.reshape(n, groups * cg, h, w)
        if needs_w:
            gw = np.zeros(per_group.shape, dtype=grad.dtype)
            for g in range(groups):
                for image in range(n):
                    blas.gemm(ctx.x[image, g].reshape(cg, h * w), columns[image, g].T, gw[g], beta=1.0)
            gw = gw.reshape(groups * cg, og, kh, kw)
        if ctx.has_bias and needs_b:
            gb = np.zeros(grad.shape[1], dtype=grad.dtype)
            for image in range(n):
                gb += sum_like_torch(np.ascontiguousarray(grad[image]).reshape(grad.shape[1], -1), (1,)).reshape(-1)
        return gx, gw, gb


def _transposed_columns(grad, kernel, stride, padding, dilation, groups, size):
    """im2col of the output's gradient, one column per input pixel (``size``): [N, G, C_out/G k_h k_w, H W]."""
    columns = _columns(np.ascontiguousarray(grad), kernel, stride, padding, dilation, groups)
    n = grad.shape[0]
    (kh, kw), pixels = kernel, columns.shape[-1]
    windows = _out_sizes(grad.shape[2:], kernel, stride, padding, dilation)
    if tuple(windows) == tuple(size):
        return columns
    # (output_padding: more windows than input pixels; the first H x W, as torch's im2col reads them)
    columns = columns.reshape(n, groups, -1, *windows)[..., :size[0], :size[1]]
    return np.ascontiguousarray(columns).reshape(n, groups, -1, size[0] * size[1]) if pixels else columns


def _col2im(columns, out, stride, padding, dilation):
    """``columns`` [N, C, k_h, k_w, H, W] added into ``out`` [N, C, H_out, W_out] (in place) where each was read
    from, kernel offsets in order (torch's col2im); contributions landing in the padding are dropped."""
    n, c, kh, kw, h, w = columns.shape
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    padded = np.zeros((n, c, out.shape[2] + 2 * ph, out.shape[3] + 2 * pw), dtype=out.dtype)
    padded[:, :, ph:ph + out.shape[2], pw:pw + out.shape[3]] = out
    for i in range(kh):
        for j in range(kw):
            rows = slice(i * dh, i * dh + sh * (h - 1) + 1, sh)
            cols = slice(j * dw, j * dw + sw * (w - 1) + 1, sw)
            padded[:, :, rows, cols] += columns[:, :, i, j]
    out[...] = padded[:, :, ph:ph + out.shape[2], pw:pw + out.shape[3]]
