"""``F.affine_grid`` and ``F.grid_sample``: reading an image at arbitrary points (spatial transformer
networks, optical-flow warping, deformable registration), with torch's arguments and numbers.

``grid`` holds, for every output position, the point to read in normalised coordinates (-1 the first
pixel, +1 the last; ``(x, y)`` or ``(x, y, z)`` -- the *last* spatial dimension first). Each point
is turned into pixel coordinates, moved inside the image by ``padding_mode`` ('border' clamps,
'reflection' mirrors; 'zeros' reads 0 outside), then read by ``mode``: 'nearest' (the nearest pixel,
halves to even, as torch), 'bilinear' (the 2 or 2^3 neighbours, trilinear in 3-D) or 'bicubic' (the
4 x 4 neighbours, torch's cubic kernel with A = -0.75; 2-D only).

Everything is built from differentiable ops: the pixel *indices* are constants, and the gradient
reaches ``grid`` through the interpolation weights (and the coordinate moves: a clamped coordinate has
no gradient, a mirrored one a flipped sign), exactly the derivative torch's kernel computes. 2-D bilinear
and 3-D trilinear sampling on the CPU are instead one op each with torch's kernels' roundings
(``GridSampleBilinear2d``, ``GridSampleTrilinear3d``), their recorded gradients (create_graph) the composition's.
"""
import itertools
import warnings

import numpy as np

from .. import amp as _amp
from ..device import xp_of
from ..dtypes import is_floating
from ..factories import linspace
from ..tensor import Function, Tensor, name_node, no_forward_formula, saving_as_torch
from .conv import _multiply_add, _ranks_by_target
from .elementwise import where

__all__ = ["grid_sample", "affine_grid"]

_ALIGN_CORNERS_NOTE = ("Default grid_sample and affine_grid behavior has changed to align_corners=False since "
                       "1.3.0. Please specify align_corners=True if the old behavior is desired. See the "
                       "documentation of grid_sample for details.")


def _align_corners(align_corners):
    if align_corners is None:
        warnings.warn(_ALIGN_CORNERS_NOTE, stacklevel=3)
        return False
    return align_corners


# ---- affine_grid -------------------------------------------------------------------------------------
def affine_grid(theta, size, align_corners=None):
    """The sampling grid [N, H, W, 2] (or [N, D, H, W, 3]) of the affine maps ``theta`` [N, 2, 3]
    ([N, 3, 4]) for an output of ``size`` (N, C, H, W) ((N, C, D, H, W)), as torch's."""
    align_corners = _align_corners(align_corners)
    if not is_floating(theta.dtype):
        raise ValueError(f"Expected theta to have floating point type, but got {theta.dtype}")
    size = [int(n) for n in size]
    if len(size) not in (4, 5):
        raise NotImplementedError(f"affine_grid only supports 4D and 5D sizes, for 2D and 3D affine transforms, "
                                  f"respectively. Got size {size}.")
    rank = len(size) - 2
    if theta.ndim != 3 or tuple(theta.shape[1:]) != (rank, rank + 1):
        raise ValueError(f"Expected a batch of {rank}D affine matrices of shape Nx{rank}x{rank + 1} for size "
                         f"{size}. Got {list(theta.shape)}.")
    spatial = size[2:]
    if align_corners and min(spatial) == 1:
        warnings.warn("Since version 1.3.0, affine_grid behavior has changed for unit-size grids when "
                      "align_corners=True. This is not an intended use case of affine_grid. See the "
                      "documentation of affine_grid for details.", stacklevel=2)
    elif min(size) <= 0:
        raise ValueError(f"Expected non-zero, positive output size. Got {size}")
    base = _base_grid(spatial, align_corners, theta)  # [P, rank + 1]: (x, y[, z], 1) per output position
    n, points = size[0], base.shape[0]
    grid = base.unsqueeze(0).expand(n, points, rank + 1) @ theta.transpose(1, 2)
    return name_node(grid.reshape(n, *spatial, rank), "AffineGridGeneratorBackward0", graph=(theta,))


def _base_grid(spatial, align_corners, theta):
    """Every output position's normalised coordinates (x first) and a 1, as torch's
    ``affine_grid_generator`` builds them (its linspace, scaled by (n - 1) / n without align_corners)."""
    xp = theta.device.xp
    axes = [_linspace_from_neg_one(n, align_corners, theta) for n in spatial]
    mesh = xp.meshgrid(*axes, indexing="ij")  # one array per spatial dimension, [*spatial]
    columns = [m.reshape(-1) for m in reversed(mesh)] + [xp.ones(int(np.prod(spatial)), dtype=mesh[0].dtype)]
    return Tensor(xp.stack(columns, axis=1), dtype=theta.dtype, device=theta.device)


def _linspace_from_neg_one(steps, align_corners, theta):
    if steps <= 1:
        return theta.device.xp.zeros(max(steps, 1), dtype=theta._array.dtype)
    values = linspace(-1, 1, steps, dtype=theta.dtype)._array
    if not align_corners:  # (two roundings, as torch's range * (steps - 1) / steps)
        values = values * values.dtype.type(steps - 1) / values.dtype.type(steps)
    return theta.device.xp.asarray(values)


# ---- grid_sample -------------------------------------------------------------------------------------
@_amp.autocasts(name_of=lambda *args, **kwargs: "grid_sampler")  # (torch's F.grid_sample is torch.grid_sampler)
def grid_sample(input, grid, mode="bilinear", padding_mode="zeros", align_corners=None):
    """``input`` [N, C, H, W] (or [N, C, D, H, W]) read at ``grid`` [N, H_out, W_out, 2] (or
    [N, D_out, H_out, W_out, 3]): [N, C, H_out, W_out] (or [N, C, D_out, H_out, W_out])."""
    if mode not in ("bilinear", "nearest", "bicubic"):
        raise ValueError(f"nn.functional.grid_sample(): expected mode to be 'bilinear', 'nearest' or 'bicubic', "
                         f"but got: '{mode}'")
    if padding_mode not in ("zeros", "border", "reflection"):
        raise ValueError(f"nn.functional.grid_sample(): expected padding_mode to be 'zeros', 'border', or "
                         f"'reflection', but got: '{padding_mode}'")
    no_forward_formula("grid_sampler_3d" if input.ndim == 5 else "grid_sampler_2d", input, grid)
    align_corners = _align_corners(align_corners)
    _check_grid_sample(input, grid, mode)
    out = _grid_sample(input, grid, mode, padding_mode, align_corners)
    return name_node(out, f"GridSampler{input.ndim - 2}DBackward0", graph=(input, grid))


@saving_as_torch("input", "grid")  # what torch's grid_sampler node keeps
def _grid_sample(input, grid, mode, padding_mode, align_corners):
    rank = input.ndim - 2
    # (on meta every mode's result is the bilinear kernel's shape and dtype: its shape rule, ops/meta.py; the
    # composed modes read the grid's values on the host)
    if input.is_meta or mode == "bilinear" and input.device.type == "cpu" and input.dtype in (np.float32, np.float64):
        kernel = GridSampleBilinear2d if rank == 2 else GridSampleTrilinear3d
        return kernel.apply(input, grid, padding_mode=padding_mode, align_corners=align_corners)
    return _composed(input, grid, mode, padding_mode, align_corners)


def _composed(input, grid, mode, padding_mode, align_corners):
    """grid_sample from differentiable ops (its gradients are recorded: create_graph works through them)."""
    sizes = tuple(input.shape[2:])
    rank = len(sizes)
    # pixel coordinates, one tensor [N, *out] per spatial dimension (grid's last component is x: the last one)
    coords = [_unnormalize(grid[..., rank - 1 - d], sizes[d], align_corners) for d in range(rank)]
    if mode == "bicubic":
        return _bicubic(input, coords, padding_mode, align_corners)
    if mode == "nearest" and rank == 2 and input.dtype in (np.float32, np.float64):  # (16 bits: not modelled)
        return _nearest_2d(input, grid, coords, padding_mode, align_corners)
    frozen = _lost_in_backward(coords, sizes, padding_mode, align_corners) if mode == "nearest" and rank == 3 \
        else None
    coords = [_moved_inside(c, size, padding_mode, align_corners, rank) for c, size in zip(coords, sizes)]
    if mode == "nearest":
        indices = [np.rint(_values(c)) for c in coords]  # (halves to even, as torch's nearbyint)
        out = _read(input, indices, frozen=frozen)
        return out + sum(_no_gradient(c) for c in coords).unsqueeze(1)  # (grid's gradient: zeros)
    return _bilinear(input, coords)


def _nearest_2d(input, grid, coords, padding_mode, align_corners):
    """torch's 2-D nearest is its vectorized kernel's: the pixel coordinates ``_kernel_coordinates``'s (a NaN one
    clamped to pixel 0 by 'border' and 'reflection'), rounded half to even, in forward and backward alike."""
    (h, w), t = input.shape[2:], input.dtype.type
    grid_values = _values(grid)
    pixels = [_kernel_coordinates(grid_values[..., k], size, padding_mode, align_corners, t)[0]
              for k, size in ((1, h), (0, w))]  # (y, x)
    out = _read(input, [np.rint(p) for p in pixels])
    return out + sum(_no_gradient(c) for c in coords).unsqueeze(1)  # (grid's gradient: zeros)


def _lost_in_backward(coords, sizes, padding_mode, align_corners):
    """The 3-D scalar kernel's points with a NaN coordinate once mirrored (a NaN one; an infinite one mirrored):
    its forward clamps them to the last pixel and reads it, its backward (``..._set_grad``) keeps them NaN: no
    pixel inside, no gradient."""
    def lost(coord, size):
        if padding_mode != "reflection":
            return np.isnan(_values(coord))
        if align_corners and size == 1:  # (nothing to mirror into: every coordinate 0)
            return np.zeros(coord.shape, bool)
        return ~np.isfinite(_values(coord))

    return np.logical_or.reduce([lost(c, size) for c, size in zip(coords, sizes)])


def _check_grid_sample(input, grid, mode):
    if input.dtype != grid.dtype:
        raise RuntimeError(f"grid_sampler(): expected input and grid to have same dtype, but input has "
                           f"{input.dtype} and grid has {grid.dtype}")
    if input.ndim not in (4, 5) or grid.ndim != input.ndim:
        raise RuntimeError(f"grid_sampler(): expected 4D or 5D input and grid with same number of dimensions, "
                           f"but got input with sizes {list(input.shape)} and grid with sizes {list(grid.shape)}")
    if input.shape[0] != grid.shape[0]:
        raise RuntimeError(f"grid_sampler(): expected grid and input to have same batch size, but got input with "
                           f"sizes {list(input.shape)} and grid with sizes {list(grid.shape)}")
    if grid.shape[-1] != input.ndim - 2:
        raise RuntimeError(f"grid_sampler(): expected grid to have size {input.ndim - 2} in last dimension, but got "
                           f"grid with sizes {list(grid.shape)}")
    if any(n == 0 for n in input.shape[2:]):
        raise RuntimeError(f"grid_sampler(): expected input to have non-empty spatial dimensions, but input has "
                           f"sizes {list(input.shape)} with dimension {list(input.shape).index(0)} being empty")
    if mode == "bicubic" and input.ndim != 4:
        raise RuntimeError("grid_sampler(): bicubic interpolation only supports 4D input")


def _values(t):
    return np.asarray(t.detach()._array) if t.device.type == "cpu" else t.detach()._array.get()


def _constant(like, array):
    return Tensor(like.device.xp.asarray(array), dtype=like.dtype, device=like.device)


def _no_gradient(c):
    """Zeros that keep ``c`` in the graph (torch's nearest mode gives grid a zero gradient, not none)."""
    return where(_constant(c, np.isfinite(_values(c))).bool(), c * 0, 0)


def _unnormalize(coord, size, align_corners):
    """[-1, 1] -> pixel coordinates: -1 and +1 the centres of the corner pixels (``align_corners``) or
    their outer edges."""
    if align_corners:
        return (coord + 1) / 2 * (size - 1)
    return ((coord + 1) * size - 1) / 2


def _moved_inside(coord, size, padding_mode, align_corners, rank):
    if padding_mode == "border":
        return _clip(coord, size, rank)
    if padding_mode == "reflection":
        twice = (0, 2 * (size - 1)) if align_corners else (-1, 2 * size - 1)
        return _clip(_reflect(coord, *twice), size, rank)
    return coord


def _clip(coord, size, rank):
    """Clamped to the pixels [0, size - 1]: where it moves, its gradient is 0 (torch: strictly inside only)."""
    values = _values(coord)
    inside = (values > 0) & (values < size - 1)
    clipped = _clamped_to_pixels(values, size, rank)
    return where(_constant(coord, inside).bool(), coord, _constant(coord, clipped))


def _clamped_to_pixels(values, size, rank):
    """``values`` clamped to [0, size - 1] as torch's kernels clamp, NaN included: the 2-D kernel's vector
    ``max(in, 0)`` answers 0 for a NaN (x86's max returns its second operand), the 3-D scalar kernel's
    ``std::min(size - 1, std::max(in, 0))`` size - 1."""
    t = values.dtype.type
    if rank == 2:
        return np.minimum(np.fmax(values, t(0)), t(size - 1))
    return np.where(np.isnan(values), t(size - 1), np.minimum(np.maximum(values, t(0)), t(size - 1)))


def _reflect(coord, twice_low, twice_high):
    """Mirrored into [twice_low / 2, twice_high / 2] as often as it takes (torch's reflect_coordinates): the
    mirrored value plus ``(coord - coord) * sign``, a zero whose gradient flips with every mirroring (not
    ``coord * sign + offset``: at 1e30 that sum cancels to 0)."""
    if twice_low == twice_high:
        return coord * 0
    values = _values(coord)
    mirrored, sign = _mirror(values, twice_low, twice_high)
    return _constant(coord, mirrored) + (coord - coord.detach()) * _constant(coord, sign)


def _mirror(values, twice_low, twice_high):
    """NumPy's part of ``_reflect``: the mirrored values and d(mirrored) / d(values) (+1 or -1)."""
    low, span = values.dtype.type(twice_low / 2), values.dtype.type((twice_high - twice_low) / 2)
    distance = values - low
    sign = np.where(distance < 0, -1, 1)
    distance = np.abs(distance)
    extra, flips = np.fmod(distance, span), np.floor(distance / span)
    even = (flips % 2 == 0) | ~(flips < 2.0 ** 31)  # (torch's int flips: past int's range INT_MIN, even)
    mirrored = np.where(even, extra + low, span - extra + low).astype(values.dtype)
    return mirrored, (sign * np.where(even, 1, -1)).astype(values.dtype)


def _read(input, indices, frozen=None):
    """``input`` [N, C, *S] at integer pixel ``indices`` (one array [N, *out] per spatial dimension):
    [N, C, *out], 0 where a point is outside; the points ``frozen`` [N, *out] read without a gradient."""
    n, c, sizes = input.shape[0], input.shape[1], input.shape[2:]
    out_shape = indices[0].shape[1:]
    inside = np.ones(indices[0].shape, dtype=bool)
    flat = np.zeros(indices[0].shape, dtype=np.int64)
    for index, size in zip(indices, sizes):
        with np.errstate(invalid="ignore"):
            inside &= (index >= 0) & (index < size)
        flat = flat * size + np.where(inside, index, 0).astype(np.int64)
    positions = int(np.prod(out_shape))
    flat = np.where(inside, flat, 0).reshape(n, 1, positions)
    index = Tensor(input.device.xp.asarray(np.broadcast_to(flat, (n, c, positions))), dtype=np.int64,
                   device=input.device)
    values = input.reshape(n, c, int(np.prod(sizes))).gather(2, index).reshape(n, c, *out_shape)
    if frozen is not None and frozen.any():
        still = input.detach().reshape(n, c, int(np.prod(sizes))).gather(2, index).reshape(n, c, *out_shape)
        values = where(_constant(values, frozen.reshape(n, 1, *out_shape)).bool(), still, values)
    if inside.all():
        return values
    # (where, not times 0: a NaN weight's gradient must not reach the pixel an outside point stands in for)
    return where(_constant(values, inside.reshape(n, 1, *out_shape)).bool(), values, 0)


def _bilinear(input, coords):
    """The 2^rank neighbours of every point, each weighted by the product of its 1-D weights (x's first,
    torch's order), added in torch's corner order (top-left first)."""
    floors = [np.floor(_values(c)) for c in coords]
    out = None
    for offsets in itertools.product((0, 1), repeat=len(coords)):
        weight = None
        for c, low, o in reversed(list(zip(coords, floors, offsets))):  # x, y[, z]
            factor = (c - _constant(c, low)) if o else (_constant(c, low + 1) - c)
            weight = factor if weight is None else weight * factor
        term = weight.unsqueeze(1) * _read(input, [f + o for f, o in zip(floors, offsets)])
        out = term + 0.0 if out is None else out + term  # (torch's sum starts from +0: a point outside reads +0)
    return out


_A = -0.75  # torch's (and OpenCV's) cubic convolution constant


def _cubic_weights(t):
    """The 4 weights of the taps at -1, 0, 1, 2 from a point a fraction ``t`` past tap 0."""
    near = lambda x: ((_A + 2) * x - (_A + 3)) * x * x + 1  # noqa: E731  |x| <= 1
    far = lambda x: ((_A * x - 5 * _A) * x + 8 * _A) * x - 4 * _A  # noqa: E731  1 < |x| < 2
    return [far(t + 1.0), near(t), near(1.0 - t), far((1.0 - t) + 1.0)]


def _bicubic(input, coords, padding_mode, align_corners):
    """The 4 x 4 neighbours; each tap (not the point) is moved inside by ``padding_mode``, as torch."""
    (y, x), (h, w) = coords, input.shape[2:]
    y0, x0 = np.floor(_values(y)), np.floor(_values(x))
    wy, wx = _cubic_weights(y - _constant(y, y0)), _cubic_weights(x - _constant(x, x0))
    out = None
    for i in range(4):
        row = None
        rows = _tap(y0 - 1 + i, h, padding_mode, align_corners)
        for j in range(4):
            term = wx[j].unsqueeze(1) * _read(input, [rows, _tap(x0 - 1 + j, w, padding_mode, align_corners)])
            row = term if row is None else row + term
        term = wy[i].unsqueeze(1) * row
        out = term if out is None else out + term
    return out


def _tap(position, size, padding_mode, align_corners):
    """An integer tap position moved inside as ``padding_mode`` says (the vectorized kernel's
    compute_coordinates: a NaN tap -- a NaN point's -- clamped to pixel 0 and read with its NaN weight)."""
    if padding_mode == "border":
        return _clamped_to_pixels(position, size, 2)
    if padding_mode == "reflection":
        reflected, _ = _kernel_reflection(position, size, align_corners, position.dtype.type)
        return _clamped_to_pixels(reflected, size, 2)
    return position


# ---- 2-D bilinear sampling as torch's vectorized CPU kernel (GridSamplerKernel.cpp's ApplyGridSample) -----------
class GridSampleBilinear2d(Function):
    """``grid_sample(mode='bilinear')`` of a [N, C, H, W] input, with torch's kernel's roundings: each point's pixel
    coordinates (``_kernel_coordinates``), its four neighbours' weights ``nw = (1 - n) * (1 - w)`` ... from the
    fractions ``w = x - floor(x)``, ``n = y - floor(y)``, blended ``fma(se, w_se, fma(sw, w_sw, fma(ne, w_ne,
    nw * w_nw)))`` (GCC's contraction). Backward, as the kernel's: the grid points in vectors of 8 floats (its AVX2
    build; 4 doubles), for each channel each corner's ``g * weight`` added to the input in lane order (that is the
    order an input element receives them in), and the grid's gradient summed over the channels,
    ``gx = fma(fma(se - sw, n, (ne - nw) * s), g, gx)``, times the coordinate's derivative."""

    @staticmethod
    def forward(ctx, input, grid, padding_mode, align_corners):
        (h, w), dtype = input.shape[2:], input.dtype.type
        x, x_grad = _kernel_coordinates(grid[..., 0], w, padding_mode, align_corners, dtype)
        y, y_grad = _kernel_coordinates(grid[..., 1], h, padding_mode, align_corners, dtype)
        corners, shares = _corners(x, y, h, w)
        ctx.saved = (input, grid, corners, shares, x_grad, y_grad)
        ctx.padding_mode, ctx.align_corners = padding_mode, align_corners
        values = [_gathered(input, index, inside) for index, inside, _ in corners]
        weights = [weight[:, None] for _, _, weight in corners]
        out = values[0] * weights[0]
        for value, weight in zip(values[1:], weights[1:]):  # (nw * w_nw, then each fused onto the sum)
            out = _multiply_add(np, value, weight, out)
        return out.reshape(*input.shape[:2], *grid.shape[1:3])

    @staticmethod
    def backward(ctx, g):
        input, grid, corners, shares, x_grad, y_grad = ctx.saved
        n, c, h, w = input.shape
        points = int(np.prod(g.shape[2:]))
        flat_g = g.reshape(n, c, points)
        grad_input = np.zeros((n, c, h * w), input.dtype) if ctx.needs_input_grad[0] else None
        if grad_input is not None:
            _scatter_in_kernel_order(grad_input, flat_g, corners, input.dtype.itemsize)
        gx, gy = _grid_gradient(input, flat_g, corners, shares)
        grad_grid = np.stack([gx * x_grad.reshape(n, points), gy * y_grad.reshape(n, points)], -1)
        return (None if grad_input is None else grad_input.reshape(input.shape),
                grad_grid.reshape(grid.shape).astype(grid.dtype, copy=False))


def _kernel_coordinates(coord, size, padding_mode, align_corners, t):
    """torch's ``ComputeLocation``: the pixel coordinate of each normalised one and its derivative. Unnormalised
    as ``(c + 1) * (size - 1) / 2`` (``align_corners``) or ``fma(c + 1, size / 2, -0.5)``; 'border' clamps to
    [0, size - 1] (derivative 0 unless strictly inside), 'reflection' mirrors first (``_kernel_reflection``)."""
    scale = t(size - 1) / t(2) if align_corners else t(size) / t(2)
    coord = coord.astype(t, copy=False)
    pixel = (coord + t(1)) * scale if align_corners else _multiply_add(np, coord + t(1), scale, t(-0.5))
    grad = np.full(pixel.shape, scale, t)
    if padding_mode == "reflection":
        pixel, flip = _kernel_reflection(pixel, size, align_corners, t)
        grad = flip * grad
    if padding_mode in ("border", "reflection"):  # (a NaN: 0, as the forward's clip; torch's backward crashes)
        low = np.fmax(pixel, t(0))
        clipped = np.minimum(low, t(size - 1))
        inside = (low.view(_INT[t]) != t(0).view(_INT[t])) & (clipped.view(_INT[t]) != t(size - 1).view(_INT[t]))
        pixel, grad = clipped, np.where(inside, grad, t(0))
    return pixel, grad


_INT = {np.float32: np.int32, np.float64: np.int64}  # (the kernel compares bit patterns: a border is outside)


def _kernel_reflection(pixel, size, align_corners, t):
    """torch's ``reflect_coordinates_get_grad``: ``pixel`` mirrored into [low, low + span] (low 0 or -0.5), and
    +-1, the mirrored coordinate's derivative."""
    low, twice_span = (t(0), t(size - 1) * t(2)) if align_corners else (t(-0.5), t(size) * t(2))
    if twice_span <= 0:
        return np.zeros_like(pixel), np.zeros_like(pixel)
    shifted = pixel - low
    magnitude = np.abs(shifted)
    flips = np.trunc(magnitude / twice_span)
    extra = _multiply_add(np, -flips, twice_span, magnitude)  # (abs_in - double_flips * twice_span, fused)
    reflected = twice_span - extra
    once_more = extra > reflected
    return np.where(once_more, reflected, extra) + low, np.where(once_more ^ (shifted < 0), t(-1), t(1))


def _corners(x, y, h, w):
    """The four neighbours nw, ne, sw, se of every point [N, H_out, W_out]: each one's flat index in the H x W plane
    [N, P], whether it lies inside, and its weight; and the shares (s, n, e, w) [N, P] the weights are made of (n
    the fraction past the row above, s = 1 - n; w past the column to the left, e = 1 - w)."""
    west, north = np.floor(x), np.floor(y)
    past_west, past_north = x - west, y - north
    east, south = x.dtype.type(1) - past_west, y.dtype.type(1) - past_north
    n, points = x.shape[0], int(np.prod(x.shape[1:]))
    corners = []
    for dy, dx, weight in ((0, 0, south * east), (0, 1, south * past_west), (1, 0, past_north * east),
                           (1, 1, past_north * past_west)):
        row, column = north + dy, west + dx
        with np.errstate(invalid="ignore"):
            inside = (row >= 0) & (row < h) & (column >= 0) & (column < w)
        index = np.where(inside, row * w + column, 0).astype(np.int64)
        corners.append((index.reshape(n, points), inside.reshape(n, points), weight.reshape(n, points)))
    return corners, tuple(a.reshape(n, points) for a in (south, past_north, east, past_west))


def _gathered(input, index, inside):
    """``input`` [N, C, H, W] at the flat plane indices ``index`` [N, P] (0 where not ``inside``): [N, C, P]."""
    n, c, h, w = input.shape
    values = np.take_along_axis(input.reshape(n, c, h * w), np.broadcast_to(index[:, None], (n, c, index.shape[1])), 2)
    return np.where(inside[:, None], values, input.dtype.type(0))


def _scatter_in_kernel_order(grad_input, flat_g, corners, itemsize):
    """``grad_input[n, c, corner] += g * weight`` in the kernel's order: the points in vectors of 32 bytes, per
    vector each corner for every lane in turn (an element then receives its terms in (vector, corner, lane)
    order); the channels apart (each its own plane)."""
    lanes = 32 // itemsize
    n, _, points = flat_g.shape
    order = np.arange(points)
    sequence = np.concatenate([(order // lanes * 4 + k) * lanes + order % lanes for k in range(4)])
    for b in range(n):
        targets = np.concatenate([index[b] for index, _, _ in corners])
        inside = np.concatenate([inside[b] for _, inside, _ in corners])
        terms = np.concatenate([flat_g[b] * weight[b] for _, _, weight in corners], 1)  # [C, 4 P]
        chosen = np.flatnonzero(inside)[np.argsort(sequence[inside], kind="stable")]
        for rank in _ranks_by_target(targets[chosen]):
            where = chosen[rank]
            grad_input[b][:, targets[where]] = grad_input[b][:, targets[where]] + terms[:, where]


def _grid_gradient(input, flat_g, corners, shares):
    """d(loss)/d(pixel x), d(loss)/d(pixel y) of every point [N, P]: over the channels in order,
    ``gx = fma(fma(se - sw, n, (ne - nw) * s), g, gx)`` and ``gy = fma(fma(se - ne, w, (sw - nw) * e), g, gy)``."""
    nw, ne, sw, se = (_gathered(input, index, inside) for index, inside, _ in corners)
    south, north, east, west = shares
    gx = np.zeros((flat_g.shape[0], flat_g.shape[2]), input.dtype)
    gy = np.zeros_like(gx)
    for c in range(flat_g.shape[1]):
        across = _multiply_add(np, se[:, c] - sw[:, c], north, (ne[:, c] - nw[:, c]) * south)
        down = _multiply_add(np, se[:, c] - ne[:, c], west, (sw[:, c] - nw[:, c]) * east)
        gx = _multiply_add(np, across, flat_g[:, c], gx)
        gy = _multiply_add(np, down, flat_g[:, c], gy)
    return gx, gy


# ---- 3-D: torch's scalar CPU kernel (GridSampler.cpp's grid_sampler_3d_cpu_impl), compiled without fused steps ----
_CORNERS_3D = list(itertools.product((0, 1), repeat=3))  # (dz, dy, dx): tnw, tne, tsw, tse, bnw, bne, bsw, bse


class GridSampleTrilinear3d(Function):
    """``grid_sample(mode='bilinear')`` of a [N, C, D, H, W] input as torch's scalar kernel: each point's pixel
    coordinates ``_scalar_coordinates``, the eight corners' weights products of their distances (x's, y's, z's),
    the output ``0 + v_tnw * w_tnw + ...`` over the corners inside, in order. Backward: each point (in order)
    adds ``w * g`` to its corners, and the grid's gradient ``gix -/+= v * dy * dz * g`` over channels and corners,
    times the coordinate's derivative."""

    @staticmethod
    def forward(ctx, input, grid, padding_mode, align_corners):
        d, h, w = input.shape[2:]
        coords = [_scalar_coordinates(grid[..., k], size, padding_mode, align_corners, input.dtype.type)
                  for k, size in enumerate((w, h, d))]  # (x, y, z)
        corners = _corners_3d([c for c, _ in coords], d, h, w)
        ctx.saved = (input, grid, corners, [g for _, g in coords])
        ctx.padding_mode, ctx.align_corners = padding_mode, align_corners
        n, c = input.shape[:2]
        out = np.zeros((n, c, corners[0][0].shape[1]), input.dtype)
        if padding_mode != "zeros" and any(np.isnan(p).any() for p, _ in coords):
            # (the forward's clip sends a NaN coordinate to the last pixel; the backward's keeps it: no corner)
            corners = _corners_3d([_clamped_to_pixels(p, size, 3) for (p, _), size in zip(coords, (w, h, d))],
                                  d, h, w)
        for index, inside, weight, _ in corners:
            out = np.where(inside[:, None], out + _gathered_3d(input, index) * weight[:, None], out)
        return out.reshape(n, c, *grid.shape[1:4])

    @staticmethod
    def backward(ctx, g):
        input, grid, corners, coordinate_grads = ctx.saved
        n, c = input.shape[:2]
        points = corners[0][0].shape[1]
        flat_g = g.reshape(n, c, points)
        grad_input = None
        if ctx.needs_input_grad[0]:
            grad_input = np.zeros((n, c, int(np.prod(input.shape[2:]))), input.dtype)
            sequence = np.concatenate([np.arange(points) * 8 + k for k in range(8)])  # (point, then corner)
            for b in range(n):
                targets = np.concatenate([index[b] for index, _, _, _ in corners])
                inside = np.concatenate([inside[b] for _, inside, _, _ in corners])
                terms = np.concatenate([weight[b] * flat_g[b] for _, _, weight, _ in corners], 1)
                chosen = np.flatnonzero(inside)[np.argsort(sequence[inside], kind="stable")]
                for rank in _ranks_by_target(targets[chosen]):
                    where = chosen[rank]
                    grad_input[b][:, targets[where]] = grad_input[b][:, targets[where]] + terms[:, where]
        sums = [np.zeros((n, points), input.dtype) for _ in range(3)]  # (gix, giy, giz)
        for channel in range(c):
            gout = flat_g[:, channel]
            for index, inside, _, slopes in corners:
                value = _gathered_3d(input, index)[:, channel]
                for k, (sign, (first, second)) in enumerate(slopes):
                    change = ((value * first) * second) * gout
                    sums[k] = np.where(inside, sums[k] + change if sign > 0 else sums[k] - change, sums[k])
        grad_grid = np.stack([m.reshape(n, points) * s for m, s in zip(coordinate_grads, sums)], -1)
        return (None if grad_input is None else grad_input.reshape(input.shape),
                grad_grid.reshape(grid.shape).astype(grid.dtype, copy=False))


def _scalar_coordinates(coord, size, padding_mode, align_corners, t):
    """torch's scalar ``grid_sampler_compute_source_index_set_grad``: the pixel coordinate and its derivative."""
    coord = coord.astype(t, copy=False)
    if align_corners:
        pixel, grad = ((coord + t(1)) / t(2)) * t(size - 1), np.full(coord.shape, t(size - 1) / t(2), t)
    else:
        pixel, grad = ((coord + t(1)) * t(size) - t(1)) / t(2), np.full(coord.shape, t(size) / t(2), t)
    if padding_mode == "reflection":
        twice = (0, 2 * (size - 1)) if align_corners else (-1, 2 * size - 1)
        if twice[0] == twice[1]:
            pixel, grad = np.zeros_like(pixel), np.zeros_like(grad)
        else:
            pixel, flip = _mirror(pixel, *twice)
            grad = grad * flip
    if padding_mode in ("border", "reflection"):
        inside = (pixel > 0) & (pixel < size - 1)
        pixel = np.where(pixel <= 0, t(0), np.where(pixel >= size - 1, t(size - 1), pixel)).astype(t)
        grad = grad * inside.astype(t)  # (times 0, as torch's: a mirrored coordinate's -scale * 0 is -0.0)
    return pixel, grad


def _corners_3d(coords, d, h, w):
    """The eight corners of every point (``_CORNERS_3D`` order): flat index in the D x H x W volume [N, P], inside,
    weight (dx * dy * dz, rounded in that order) and, per coordinate, the sign and the two distances whose product
    is the weight's derivative along it."""
    x, y, z = coords
    n, points = x.shape[0], int(np.prod(x.shape[1:]))
    low = [np.floor(c) for c in (x, y, z)]
    near = [c - f for c, f in zip((x, y, z), low)]  # (distance past the lower corner)
    far = [(f + 1) - c for c, f in zip((x, y, z), low)]  # (to the upper one)
    corners = []
    for dz, dy, dx in _CORNERS_3D:
        picks = (dx, dy, dz)
        dist = [near[k] if picks[k] else far[k] for k in range(3)]
        weight = (dist[0] * dist[1]) * dist[2]
        iz, iy, ix = low[2] + dz, low[1] + dy, low[0] + dx
        with np.errstate(invalid="ignore"):
            inside = (ix >= 0) & (ix < w) & (iy >= 0) & (iy < h) & (iz >= 0) & (iz < d)
        index = np.where(inside, (iz * h + iy) * w + ix, 0).astype(np.int64)
        slopes = [(1 if picks[k] else -1, tuple(dist[j].reshape(n, points) for j in range(3) if j != k))
                  for k in range(3)]
        corners.append((index.reshape(n, points), inside.reshape(n, points), weight.reshape(n, points), slopes))
    return corners


def _gathered_3d(input, index):
    n, c = input.shape[:2]
    volume = int(np.prod(input.shape[2:]))
    return np.take_along_axis(input.reshape(n, c, volume), np.broadcast_to(index[:, None], (n, c, index.shape[1])), 2)
