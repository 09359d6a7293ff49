"""The orders oneDNN's float32 convolution *backward* kernels add their products in, so that minilora's gradients
are torch's bits where torch runs oneDNN (``conv._uses_onednn``). The forward's orders: ``conv._onednn_forward_kernel``.

Each kernel is a loop of fused multiply-adds into a float32 accumulator (one rounding per product); which products
come first is what these functions decide. Measured on torch 2.13 (oneDNN 3.12, AVX-512 CPU, 1 and 2 threads) with
random inputs on the sweep's shapes and more (tests/test_nn_users3_r31.py), the kernels as ONEDNN_VERBOSE names them:

* input gradient, ``jit:avx512_core`` (no groups, at most 16 output channels: one block of them): every input pixel
  starts from 0 and takes its products kernel row by kernel row, column by column, the output channels innermost --
  ``"kh kw oc"``, as the forward's ``"kh kw ic"``. Past 16 output channels, or with a dimension both strided and
  dilated, the pixels' sums differ from this order: not modelled.
* weight gradient, ``jit:avx2`` / ``jit:avx512_core`` (no groups, no dilation -- dilation runs ``gemm:jit`` --, fewer
  than 16 input channels and not a 1x1 kernel, which runs ``jit_1x1``): each thread adds its slice of the batch
  (``conv._onednn_weight_slices``) image after image, output row after row, column after column, from 0; then the
  slices' sums are added from the first.
* weight gradient, ``jit_1x1`` (a 1x1 kernel, up to 16 channels each way, the batch split evenly by the threads):
  each image's sum from 0 in the jit order above, the images' sums added in each thread's run, then the runs'
  (``one_by_one_weight_gradient``).
* ``jit_dw`` (depthwise, at most 16 channels): both gradients in the jit kernels' orders above, one channel a group,
  the weight gradient's threads splitting the batch (``grouped_kernels``).
* ``gemm:jit`` (groups that no special kernel takes; a dilated weight gradient; an input gradient with a dimension
  both strided and dilated): im2col and oneDNN's own sgemm, image by image and group by group. Its input gradient's
  columns are each a sum over the group's output channels, one fused multiply-add after another from 0, then added
  back into the image kernel row by row, column by column (col2im), from 0. Its weight gradient is a dot product over
  the output positions in 16 lanes (position p into lane p % 16, fused multiply-adds), the lanes folded in halves
  (8 + 8, 4 + 4, 2 + 2, 1 + 1), each image's sums then added to the thread's running sum; the threads take the groups
  first, then split the batch (balance211), and their sums are added from the first.
"""
import math

import numpy as np

from .. import float32_math

# past this many fused multiply-adds (or steps of the weight gradient's sequential loop) the gradients are the
# einsum's: the loops below make a pass over an array per step (the weight gradient's chain compiled: a loop in C)
ORDERED_PRODUCTS = 2 ** 25
ORDERED_STEPS = 2 ** 13


def _fma(a, b, acc):
    """``a * b + acc`` rounded once, ``a`` and ``b`` broadcast to ``acc``'s shape."""
    a, b = (np.ascontiguousarray(np.broadcast_to(v, acc.shape)) for v in (a, b))
    return float32_math.fused_multiply_add(a, b, np.ascontiguousarray(acc))


def balance211(count, parts):
    """oneDNN's balance211: ``count`` items in ``parts`` runs, the first ``count - (ceil - 1) * parts`` of them
    ``ceil(count / parts)`` long, the others one shorter."""
    longer = -(-count // parts)
    long_runs = count - (longer - 1) * parts
    return [longer if i < long_runs else longer - 1 for i in range(parts)]


def _tap(i, j, out_size, stride, dilation):
    """The rows and columns of the padded input that kernel offset (i, j) reads for the output positions."""
    (h_out, w_out), (sh, sw), (dh, dw) = out_size, stride, dilation
    return (slice(i * dh, i * dh + sh * (h_out - 1) + 1, sh), slice(j * dw, j * dw + sw * (w_out - 1) + 1, sw))


def jit_input_gradient(g, weight, padded_shape, stride, dilation):
    """The gradient of the padded input, [N, C, H_p, W_p]: g [N, G, O/G, H_out, W_out], weight [G, O/G, C/G, kh, kw]
    (no groups, G = 1, or depthwise, O/G = 1), in the jit kernels' order (kernel row, column, output channel), each
    pixel's sum from 0."""
    kh, kw = weight.shape[3:]
    n, groups, per_group = padded_shape[0], weight.shape[0], weight.shape[2]
    acc = np.zeros((n, groups, per_group) + tuple(padded_shape[2:]), np.float32)
    for i in range(kh):
        for j in range(kw):
            rows, cols = _tap(i, j, g.shape[3:], stride, dilation)
            for group in range(groups):  # (the output channels as the chain's steps, the pixels and channels its grid)
                pixels = np.moveaxis(acc[:, group, :, rows, cols], 1, -1)  # [N, H_out, W_out, C/G]
                steps = np.moveaxis(g[:, group], 1, 0).reshape(g.shape[2], -1)  # [O/G, N H_out W_out]
                summed = float32_math.fused_multiply_add_chain(steps, weight[group, :, :, i, j],
                                                               pixels.reshape(-1, per_group))
                acc[:, group, :, rows, cols] = np.moveaxis(summed.reshape(pixels.shape), -1, 1)
    return acc.reshape(padded_shape)


def jit_weight_gradient(g, windows, slices):
    """The weight gradient [O, C/G, kh, kw] of g [N, G, O/G, H_out, W_out] and the input's windows [N, G, C/G, H_out,
    W_out, kh, kw] (G = 1 or depthwise): the batch's images cut into ``slices`` runs by balance211 (one a thread), each
    run's products added in order (image, output row, column) from 0, the runs' sums then added from the first."""
    groups, out_per_group, per_group = g.shape[1], g.shape[2], windows.shape[2]
    kernel = windows.shape[5:]
    total, first = None, 0
    for length in balance211(g.shape[0], slices):
        run = slice(first, first + length)
        acc = np.stack([float32_math.fused_multiply_add_chain(  # (each group's positions [T] as the chain's steps)
            np.moveaxis(g[run, group], 1, -1).reshape(-1, out_per_group),
            np.moveaxis(windows[run, group], 1, 3).reshape(-1, per_group * math.prod(kernel)),
            np.zeros((out_per_group, per_group * math.prod(kernel)), np.float32)) for group in range(groups)])
        total = acc if total is None else total + acc
        first += length
    return total.reshape(groups * out_per_group, per_group, *kernel)


def one_by_one_weight_gradient(g, windows, slices):
    """``jit_1x1``'s weight gradient: ``jit_weight_gradient``'s order within each image, from 0; the images' sums
    added in ``slices`` runs (balance211), the runs' sums then added from the first."""
    per_image = [jit_weight_gradient(g[b:b + 1], windows[b:b + 1], 1) for b in range(g.shape[0])]
    return _runs_added(per_image, slices)


def _runs_added(per_image, slices):
    """The images' sums added in order within each of ``slices`` runs (balance211), the runs' sums from the first."""
    total, first = None, 0
    for length in filter(None, balance211(len(per_image), slices)):
        run = None
        for image in range(first, first + length):
            run = per_image[image] if run is None else run + per_image[image]
        total = run if total is None else total + run
        first += length
    return total


def gemm_input_gradient(g, weight, padded_shape, stride, dilation):
    """``gemm:jit``'s gradient of the padded input [N, C, H_p, W_p]: g [N, G, O/G, H_out, W_out], weight [G, O/G, C/G,
    kh, kw]; each column (a group's kernel offset and input channel at an output position) summed over the group's
    output channels in order from 0, then col2im."""
    n, groups, out_per_group = g.shape[:3]
    per_group, kh, kw = weight.shape[2:]
    acc = np.zeros((n, groups, per_group) + tuple(padded_shape[2:]), np.float32)
    for i in range(kh):
        for j in range(kw):
            column = np.zeros((n, groups, per_group) + g.shape[3:], np.float32)
            for oc in range(out_per_group):
                column = _fma(g[:, :, oc, None], weight[None, :, oc, :, i, j, None, None], column)
            rows, cols = _tap(i, j, g.shape[3:], stride, dilation)
            acc[..., rows, cols] += column
    return acc.reshape(padded_shape)


def _lanes_folded(lanes):
    """The 16 lanes' (last axis) sum as a vector's horizontal sum: halves added, 8 + 8, 4 + 4, 2 + 2, 1 + 1."""
    while lanes.shape[-1] > 1:
        half = lanes.shape[-1] // 2
        lanes = lanes[..., :half] + lanes[..., half:]
    return lanes[..., 0]


def gemm_weight_gradient(g, windows, slices):
    """``gemm:jit``'s weight gradient [O, C/G, kh, kw]: g [N, G, O/G, H_out, W_out], windows [N, G, C/G, H_out, W_out,
    kh, kw]; per image a 16-lane dot product over the output positions, the images' sums added in ``slices`` runs."""
    n, groups, out_per_group = g.shape[:3]
    per_group, kh, kw = windows.shape[2], windows.shape[5], windows.shape[6]
    positions = g.shape[3] * g.shape[4]
    grads = g.reshape(n, groups, out_per_group, 1, positions)
    columns = np.moveaxis(windows, (5, 6), (3, 4)).reshape(n, groups, 1, per_group * kh * kw, positions)
    lanes = np.zeros((n, groups, out_per_group, per_group * kh * kw, 16), np.float32)
    for start in range(0, positions, 16):
        width = min(16, positions - start)
        lanes[..., :width] = _fma(grads[..., start:start + width], columns[..., start:start + width],
                                  lanes[..., :width])
    return _runs_added(_lanes_folded(lanes), slices).reshape(groups * out_per_group, per_group, kh, kw)


class BackwardKernels:
    """Which of the orders above torch's backward takes for one convolution: ``data`` and ``weights`` each "jit",
    "gemm" or None (not modelled: the einsum's sums), with the weight gradient's split of the batch (``slices``)."""

    def __init__(self, data, weights, slices):
        self.data, self.weights, self.slices = data, weights, slices

    def input_gradient(self, g, weight, padded_shape, stride, dilation):
        """The padded input's gradient (g [N, G, O/G, H_out, W_out], weight [G, O/G, C/G, kh, kw]), or None."""
        if self.data is None or g.size * weight[0, 0].size > ORDERED_PRODUCTS:
            return None
        if self.data == "jit":
            return jit_input_gradient(g, weight, padded_shape, stride, dilation)
        return gemm_input_gradient(g, weight, padded_shape, stride, dilation)

    def weight_gradient(self, g, windows):
        """The weight gradient [O, C/G, kh, kw] (windows [N, G, C/G, H_out, W_out, kh, kw]), or None."""
        positions = g.shape[0] * g.shape[3] * g.shape[4]
        taps = windows.shape[2] * windows.shape[5] * windows.shape[6]  # (C/G kh kw products per output element)
        if self.weights is None or g.size * taps > ORDERED_PRODUCTS:
            return None
        if self.weights in ("jit", "1x1") and positions > ORDERED_STEPS:
            return None
        if self.weights == "jit":
            return jit_weight_gradient(g, windows, self.slices)
        if self.weights == "1x1":
            return one_by_one_weight_gradient(g, windows, self.slices)
        return gemm_weight_gradient(g, windows, self.slices)


def ungrouped_kernels(weight_shape, stride, dilation, slices, batch, threads):
    """An ungrouped convolution's kernels (weight [O, C, kh, kw]; ``slices``: the jit kernels' split of the batch, None
    where not modelled): the input gradient "jit" up to 16 output channels, "gemm" where a dimension is both strided
    and dilated (up to 8 output channels: past them unmeasured); the weight gradient "gemm" with a dilation, else "jit"
    on fewer than 16 input channels (16+ blocks them: another order), and for a 1x1 kernel "1x1" (``jit_1x1``, up to
    16 channels each way: each image's sum from 0, the threads' images then added; measured where the threads split
    the batch evenly, else not modelled)."""
    strided_and_dilated = any(s > 1 and d > 1 for s, d in zip(stride, dilation))
    data = ("gemm" if weight_shape[0] <= 8 else None) if strided_and_dilated else \
        ("jit" if weight_shape[0] <= 16 else None)
    if any(d > 1 for d in dilation):
        return BackwardKernels(data, "gemm", min(batch, threads))
    if weight_shape[2] == weight_shape[3] == 1:
        even = batch % min(batch, threads) == 0 and max(weight_shape[:2]) <= 16
        return BackwardKernels(data, "1x1" if even else None, min(batch, threads))
    return BackwardKernels(data, "jit" if weight_shape[1] < 16 and slices is not None else None, slices)


def gemm_bias_gradient(g):
    """``gemm:jit``'s bias gradient of g [N, O, ...]: each channel's rows (an image's last dimension) summed alone from
    0, in order, the row sums then added one after another, image after image."""
    rows = np.moveaxis(g, 1, 0).reshape(g.shape[1], -1, g.shape[-1])
    row_sums = np.cumsum(rows, axis=2, dtype=np.float32)[..., -1]  # (cumsum adds in order)
    return np.cumsum(row_sums, axis=1, dtype=np.float32)[:, -1]


def runs_gemm_weights(weight_shape, groups, dilation):
    """Does oneDNN's weight (and bias) gradient run ``gemm:jit`` (weight [O, C/G, kh, kw]): a grouped convolution no
    special kernel takes, or an ungrouped dilated one?"""
    if groups == 1:
        return any(d > 1 for d in dilation)
    kernels = grouped_kernels(weight_shape, groups, 1)
    return kernels is not None and kernels.weights == "gemm"


def grouped_kernels(weight_shape, groups, slices, depthwise_slices=1):
    """A grouped convolution's kernels: "gemm" for both gradients where oneDNN runs ``gemm:jit`` (not depthwise --
    ``jit_dw`` --, not at most 3 input channels for 8+ output channels a group -- ``jit:avx2`` --, not input and output
    channels a group both multiples of 4 -- a blocked kernel), the input gradient up to 8 output channels a group;
    "jit" for a depthwise one (``jit_dw``: as the ungrouped jit kernels' orders, one channel a group) of at most 16
    channels, its weight gradient over ``depthwise_slices`` of the batch."""
    per_group, out_per_group = weight_shape[1], weight_shape[0] // groups
    if per_group == out_per_group == 1:
        return BackwardKernels("jit", "jit", depthwise_slices) if groups <= 16 else None
    special = (per_group <= 3 and out_per_group >= 8) or (per_group % 4 == 0 and out_per_group % 4 == 0)
    if special:
        return None
    return BackwardKernels("gemm" if out_per_group <= 8 else None, "gemm", slices)


class TransposedKernels:
    """Which orders torch's transposed convolution (oneDNN's deconvolution) takes: its ``output`` in
    ``jit_input_gradient``'s (unit strides: jit:avx512_core; a strided one runs brg_deconv, another order not modelled),
    its ``input_gradient`` in the forward's ``"kh kw ic"`` (conv._products_in_order), its weight gradient in
    ``jit_weight_gradient``'s over ``weight_slices`` of the batch (None: not modelled)."""

    def __init__(self, output, input_gradient, weight_slices):
        self.output, self.input_gradient, self.weight_slices = output, input_gradient, weight_slices


def transposed_kernels(weight_shape, stride, dilation, slices):
    """Measured like the convolution's (weight [C_in, C_out, kh, kw]): the output up to 16 input channels with unit
    strides, the input gradient up to 16 output channels, the weight gradient below 16 output channels, undilated;
    the gradients not for a 1x1 kernel (jit_1x1's). A strided output (brg_deconv) adds its products in one chain for
    some output columns and per kernel column for others, by how its threads cut the image: not modelled."""
    c_in, c_out = weight_shape[:2]
    one_by_one = weight_shape[2] == weight_shape[3] == 1
    output = c_in <= 16 and all(s == 1 for s in stride)
    weights = c_out < 16 and all(d == 1 for d in dilation) and not one_by_one
    return TransposedKernels(output, c_out <= 16 and not one_by_one, slices if weights else None)
