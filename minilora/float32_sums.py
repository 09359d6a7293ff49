"""torch's CPU float32 and float64 sums in torch's order: the same numbers, last bit included.

A float32 sum's last bits depend on the order of its additions. NumPy adds pairwise (blocks of 128
in 8 running sums); torch 2.13's CPU ``sum`` (and ``mean``, its sum divided by the count) runs ATen's
``cascade_sum`` (aten/src/ATen/native/cpu/SumKernel.cpp), ported here step for step on NumPy arrays:

* ``multi_row_sum`` keeps ``K`` running sums (``K`` columns side by side) and adds its ``size`` rows
  in blocks of ``2^p`` (``p = max(4, ceil(log2(size)) / 4)``): each block summed in order from 0,
  the block sums gathered into a level-1 sum, every ``2^p`` block sums pushed into a level-2 sum, every
  ``2^p`` of those into a level-3 sum; at the end the rows of the partial block (level 0) plus level 1,
  then level 2, then level 3.
* ``row_sum`` reads a row as ``[-1, 4]`` (4 sums side by side: element ``i`` into sum ``i % 4``), runs
  ``multi_row_sum`` on it, adds the last ``size % 4`` elements into the first sum, then folds the
  four left to right.
* a row reduced along contiguous memory (``vectorized_inner_sum``, ``sum(-1)`` and a whole
  contiguous tensor) runs ``row_sum`` over its vectors (``SUM_LANES`` floats), so each lane has its
  own sums; the elements after the last
  whole vector are added from 0 in order, then the lanes one by one; a row narrower than a vector runs
  ``row_sum`` on its elements.
* a sum over leading dimensions (``vectorized_outer_sum``, ``sum(0)``) keeps one sum per output
  element: groups of ``4 SUM_LANES`` columns run ``multi_row_sum`` down the reduced rows, the other
  columns ``row_sum``; with fewer columns than a vector, groups of 4 (``scalar_outer_sum``).
* every result is added to the zero the output starts from (so -0 sums to 0, as torch's).

``row_sums`` (the rows' sums: ``sum(-1)``, a whole tensor, rms_norm's mean of squares) runs the same
additions compiled (``minilora/native/float32_sums.c``, as ``float32_math``'s SLEEF kernels: faster than
NumPy's own sum) where a C compiler is found; the NumPy steps here are the reference, and run without one
(``MINILORA_NATIVE=0``): 4-10x a plain NumPy sum, in ~20 short calls.

float64 runs the same cascade with 4 doubles a vector (``sum_lanes``: the kernel's 32-byte vectors, on every
capability), compiled too (``ml_row_sums_f64``, ``ml_outer_sums_f64``).

Any other layout -- a view (``x.T``, ``x[::2]``, ``x[..., ::3]``, an expanded ``x.expand(3, -1)``: a stride of 0),
middle dimensions (``x.sum(1)`` of a 3-D tensor), dimensions of size 1 -- is summed as torch's TensorIterator
runs the kernel (``_iterator_sum``): its order of dimensions and their coalescing (``_iterator_dims``), the
kernel's 2-D loop on the two innermost for each index of the others (``_loop_sums``), the loops' sums added
into the outputs in the iterator's order.

A whole-tensor sum of at least ``GRAIN_SIZE`` (32768) elements on several threads
(``parallel.num_threads()``, taken as torch's) is cut into one chunk a thread (``at::parallel_for``),
each summed as a row, and the chunks' sums added in order; a sum over leading dimensions is split by
columns, rounded to 128 bytes (``_column_ranges``). ``cascade_sum`` returns None for a negative stride (torch
has no such view: its flip copies), and the caller keeps NumPy's sum.

var/std/var_mean/std_mean (the end of this file) read the elements in the same iterator order: torch's Welford
kernel (``welford_moments``) and its whole-tensor variance (``squared_deviation_sum``).
"""
import math

import numpy as np

import contextlib
import ctypes
import threading
from pathlib import Path

from . import float32_math, gemm_pool, native, parallel
from .dtypes import is_floating

__all__ = ["cascade_sum", "row_sums", "two_norms", "row_moments", "thread_chunk", "welford_moments",
           "squared_deviation_sum", "sixteen_bit_sum", "torch_order_sum", "sum_like_torch", "sixteen_bit_backward", "GRAIN_SIZE", "SUM_LANES"]

GRAIN_SIZE = 32768  # at::internal::GRAIN_SIZE: below it one thread runs a reduction
_ILP = 4  # row_sum's running sums side by side (its ilp_factor)
# The sum kernel is registered with REGISTER_DISPATCH, not ALSO_REGISTER_AVX512_DISPATCH: on an AVX-512
# CPU torch runs its AVX2 build, so its vectors hold 8 floats on every capability ("default"'s
# Vectorized<float> is 32 bytes too). (Checked against torch 2.13 under all three capabilities.)
SUM_LANES = 8
_VECTOR_BYTES = 32  # (so a float64 vector holds 4: sum_lanes)
_SUMMED = (np.dtype(np.float32), np.dtype(np.float64))  # the dtypes summed in torch's order here


def sum_lanes(dtype):
    """The lanes of the sum kernel's ``Vectorized<scalar_t>`` for float32 or float64: 32 bytes' worth (8 floats,
    4 doubles) on every capability (AVX2's build; "default"'s generic vector is 32 bytes too)."""
    return _VECTOR_BYTES // dtype.itemsize


def _ceil_log2(n):
    return 1 if n <= 2 else (n - 1).bit_length()


_SLICE_ADDS = 4096  # elements a slice from which adding slice after slice beats NumPy's reduction


def _in_order(a, axis):
    """The sum of ``a`` along ``axis`` (not the last, which must have at least 2 columns and the smallest
    stride), added one after another: NumPy's reduction over an outer axis adds row after row, each
    column its own running sum (its pairwise summation runs only along the innermost loop). Few big
    slices (RMSNorm's rows: [rows, 8, 32]) are added slice by slice instead: the same additions, 2.4x
    faster than the reduction's short inner loops."""
    count = a.shape[axis]
    if 2 <= count <= 64 and a.size >= _SLICE_ADDS * count:
        slices = np.moveaxis(a, axis, 0)
        total = slices[0] + slices[1]
        for part in slices[2:]:
            total += part
        return total
    return np.add.reduce(a, axis=axis)


def multi_row_sum(x):
    """torch's ``multi_row_sum``: ``x`` [rows, size, K] (C-contiguous float32) -> [rows, K], the ``size``
    rows of each of ``rows`` slabs added in torch's cascade (see the module's docstring)."""
    slabs, size, width = x.shape
    step = 1 << max(4, _ceil_log2(size) // 4)
    blocks = size // step
    if blocks == 0:  # (short: one running sum, level 0)
        return _in_order(x, 1)
    sums = _in_order(x[:, :blocks * step].reshape(slabs, blocks, step, width), 2)
    total = _in_order(x[:, blocks * step:], 1)  # level 0: the rows after the last whole block
    for _ in range(2):  # levels 1 and 2: what is left of each after its last whole group of 2^p
        whole = sums.shape[1] // step * step
        if whole < sums.shape[1]:
            total += _in_order(sums[:, whole:], 1)
        if not whole:
            return total
        sums = _in_order(sums[:, :whole].reshape(slabs, whole // step, step, width), 2)
    total += _in_order(sums, 1)  # level 3 takes every level-2 sum
    return total


def _row_sum(x):
    """torch's ``row_sum`` of ``x`` [rows, size, K] along ``size``: four running sums (element ``i`` into
    ``i % 4``), the rest into the first, folded left to right -> [K, rows] (transposed: the few adds
    left then run along contiguous rows)."""
    slabs, size, width = x.shape
    whole = size // _ILP * _ILP
    sums = multi_row_sum(x[:, :whole].reshape(slabs, whole // _ILP, _ILP * width))
    sums = np.ascontiguousarray(sums.T).reshape(_ILP, width, slabs)
    if whole < size:  # the last size % 4 elements go into the first sum before the fold
        sums = np.concatenate([sums[:1], x[:, whole:].transpose(1, 2, 0), sums[1:]])
    return _top_to_bottom(sums)


def _top_to_bottom(rows):
    """The rows of an array (a few) added one after another, along its first axis. (Not NumPy's
    reduction: with one column it would add pairwise.)"""
    total = rows[0].copy()
    for row in rows[1:]:
        total += row
    return total


_NATIVE = {"tried": False, "library": None}


def _native_library():
    """minilora/native/float32_sums.c compiled and loaded (the same additions in C), or None (no compiler,
    ``MINILORA_NATIVE=0``)."""
    if not _NATIVE["tried"]:
        library = native.load(Path(__file__).with_name("native") / "float32_sums.c")
        if library is not None:
            size, pointer = ctypes.c_size_t, ctypes.c_void_p
            for row_sums in (library.ml_row_sums_f32, library.ml_row_sums_f64):
                row_sums.argtypes, row_sums.restype = [pointer, pointer, size, size, ctypes.c_int], None
            for outer_sums in (library.ml_outer_sums_f32, library.ml_outer_sums_f64):
                outer_sums.argtypes = [pointer, pointer, pointer, size, size, size, size, size, ctypes.c_int]
                outer_sums.restype = None
            library.ml_row_moments.argtypes = [pointer, pointer, pointer, size, size, ctypes.c_int, ctypes.c_int]
            library.ml_lane_sums.argtypes = [pointer, pointer, size, size, ctypes.c_int, ctypes.c_int]
            library.ml_row_moments.restype = library.ml_lane_sums.restype = None
            library.ml_fma_square_columns.argtypes = [pointer, pointer, size, size]
            library.ml_fma_square_columns.restype = None
            library.ml_fma_product_columns.argtypes = [pointer, pointer, pointer, size, size]
            library.ml_fma_product_columns.restype = None
            library.ml_welford_rows.argtypes = [pointer, pointer, pointer, size, size]
            library.ml_welford_rows.restype = None
            for name in ("ml_rms_norm_rows", "ml_rms_norm_backward_rows", "ml_outer_product_sums"):
                for kernel in (getattr(library, name + "_f32"), getattr(library, name + "_f64")):
                    kernel.argtypes, kernel.restype = [pointer, ctypes.c_int64, ctypes.c_int64], None
        _NATIVE.update(tried=True, library=library)
    return _NATIVE["library"]


class _RmsNormArgs(ctypes.Structure):  # float32_sums.c's rms_norm_args
    _fields_ = [(name, ctypes.c_void_p) for name in ("x", "weight", "normed", "r", "out")] + [
        ("width", ctypes.c_int64), ("eps", ctypes.c_double)]


class _RmsNormBackwardArgs(ctypes.Structure):  # float32_sums.c's rms_norm_backward_args
    _fields_ = [(name, ctypes.c_void_p) for name in ("g", "x", "r", "weight", "gx", "gx_mean")] + [
        ("width", ctypes.c_int64)]


class _OuterProductArgs(ctypes.Structure):  # float32_sums.c's outer_product_args
    _fields_ = [(name, ctypes.c_void_p) for name in ("x", "y", "out", "acc", "ranges")] + [
        ("rows", ctypes.c_int64), ("columns", ctypes.c_int64)]


def column_sums_of_products(x, y):
    """``(x * y).sum(0)`` of two C-contiguous float32 (float64) [rows, columns] arrays in torch's order (as
    ``cascade_sum`` adds the product array), compiled without the product array: each product rounded, then
    added (``_column_ranges_side_by_side``); None where that is not the sum cascade_sum would make (no
    compiler, a short array or range, other layouts or dtypes)."""
    if type(y) is not np.ndarray or type(x) is not np.ndarray or y.dtype != x.dtype or x.shape != y.shape \
            or x.ndim != 2 or not y.flags.c_contiguous:
        return None
    return _column_ranges_side_by_side(x, y)


def _column_ranges_side_by_side(x, y=None):
    """The sums down the columns of the C-contiguous [rows, columns] ``x`` (of ``x * y``, each product rounded,
    with ``y``), as cascade_sum's loop over torch's column ranges adds them, the ranges side by side in gemm_pool's
    C threads (``ml_outer_product_sums``: ml_outer_sums on each range); None where that loop would not call
    the compiled sums on every range (no compiler, a short range, one row or column)."""
    library = _native_library()
    if (library is None or type(x) is not np.ndarray or x.dtype not in _SUMMED or x.ndim != 2 or 1 in x.shape
            or x.size <= _SHORT_SIZE or not x.flags.c_contiguous):
        return None
    rows, columns = x.shape
    ranges = _column_ranges(x.size, columns, x.itemsize)
    if any(rows * (end - begin) <= _SHORT_SIZE for begin, end in ranges):  # (_outer_sums' short form)
        return None
    out, acc = np.empty(columns, x.dtype), np.empty(4 * columns, x.dtype)  # (multi_row_sum's 4 levels)
    bounds = np.array(ranges, np.int64)
    args = _OuterProductArgs(x=native.address(x), y=None if y is None else native.address(y), out=native.address(out),
                             acc=native.address(acc), ranges=native.address(bounds), rows=rows, columns=columns)
    kernel = library.ml_outer_product_sums_f32 if x.dtype == np.float32 else library.ml_outer_product_sums_f64
    parallel.kernel_rows(len(ranges), gemm_pool.RowKernel(kernel, args), work_per_row=x.size // len(ranges))
    return out


def rms_norm_rows(x, weight, eps, normed, r, out):
    """RMSNorm's forward of the C-contiguous float32/float64 rows ``x`` [rows, width] into ``normed``, ``r``
    [rows, 1] and ``out``, compiled (float32_sums.c's ``ml_rms_norm_rows``: exercise 2.1's solution, the same
    operations, one pass a row) and split among gemm_pool's C threads; False (nothing done) where it cannot be:
    no compiler, another layout or dtype, rows narrower than two vectors (``row_sums``' short form)."""
    kernel = _rms_norm_kernel("ml_rms_norm_rows", x, (normed, r, out), weight)
    if kernel is None:
        return False
    args = _RmsNormArgs(x=native.address(x), weight=None if weight is None else native.address(weight),
                        normed=native.address(normed), r=native.address(r), out=native.address(out),
                        width=x.shape[1], eps=float(eps))
    parallel.kernel_rows(len(x), gemm_pool.RowKernel(kernel, args), work_per_row=x.shape[1])
    return True


def rms_norm_backward_rows(g, x, r, weight, gx, gx_mean=None):
    """RMSNorm's input gradient (exercise 2.2's solution, compiled: ``ml_rms_norm_backward_rows``) from the
    output gradient ``g``, the input ``x`` and ``r`` into ``gx`` and ``gx_mean`` (its two parts), or their sum into
    ``gx`` (``gx_mean`` None); False (nothing done) where ``rms_norm_rows`` would be."""
    kernel = _rms_norm_kernel("ml_rms_norm_backward_rows", x, (g, r, gx) + ((gx_mean,) if gx_mean is not None
                                                                            else ()), weight)
    if kernel is None or g.shape != x.shape:
        return False
    args = _RmsNormBackwardArgs(g=native.address(g), x=native.address(x), r=native.address(r),
                                weight=None if weight is None else native.address(weight), gx=native.address(gx),
                                gx_mean=None if gx_mean is None else native.address(gx_mean), width=x.shape[1])
    parallel.kernel_rows(len(x), gemm_pool.RowKernel(kernel, args), work_per_row=2 * x.shape[1])
    return True


def _rms_norm_kernel(name, x, arrays, weight):
    """The compiled RMSNorm kernel ``name`` for ``x``'s dtype, or None where its arrays are not ones it takes:
    C-contiguous NumPy arrays of x's dtype (``r``: one value a row), rows of at least two vectors, a weight of
    one value a column or None."""
    library = _native_library()
    if (library is None or type(x) is not np.ndarray or x.ndim != 2 or x.dtype not in _NATIVE_DTYPES
            or x.shape[1] < 2 * sum_lanes(x.dtype) or not x.flags.c_contiguous):
        return None
    for a in arrays + (() if weight is None else (weight,)):
        if type(a) is not np.ndarray or a.dtype != x.dtype or not a.flags.c_contiguous or not a.flags.aligned:
            return None
    if any(a.size not in (x.size, len(x)) for a in arrays) or weight is not None and weight.size != x.shape[1]:
        return None
    return getattr(library, name + ("_f32" if x.dtype == np.float32 else "_f64"))


_NATIVE_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def fma_square_columns(rows):
    """Each column's squares of the float32 ``rows`` (2-D) added down the rows by fused multiply-adds from 0,
    in row order (batch norm's channels-last var_sum for one thread's chunk): compiled, else a row at a time."""
    library = _native_library()
    if library is not None and rows.size:
        rows = np.ascontiguousarray(rows, dtype=np.float32)
        out = np.empty(rows.shape[1], np.float32)
        library.ml_fma_square_columns(native.address(rows), native.address(out), rows.shape[0], rows.shape[1])
        return out
    out = np.zeros(rows.shape[1], np.float32)
    for row in rows:
        out = float32_math.fused_multiply_add(row, row, out)
    return out


def fma_product_columns(rows, others):
    """Each column's products ``rows * others`` (float32, 2-D, one shape) added down the rows by fused
    multiply-adds from 0, in row order (batch norm's channels-last backward dot product for one thread's chunk):
    compiled, else a row at a time."""
    library = _native_library()
    if library is not None and rows.size:
        rows = np.ascontiguousarray(rows, dtype=np.float32)
        others = np.ascontiguousarray(others, dtype=np.float32)
        out = np.empty(rows.shape[1], np.float32)
        library.ml_fma_product_columns(native.address(rows), native.address(others), native.address(out),
                                       rows.shape[0], rows.shape[1])
        return out
    out = np.zeros(rows.shape[1], np.float32)
    for row, other in zip(rows, others):
        out = float32_math.fused_multiply_add(row, other, out)
    return out


# ---- small arrays: the same additions in a few NumPy calls ------------------------------------------
# A tensor of a few elements (micrograd-sized code: a loss over 32 points, a bias gradient) pays the
# cascade's fixed cost -- ~20 NumPy calls, or the compiled call's ctypes set-up -- many times over its
# additions. For short rows the cascade is a fixed order, written out here; tests/test_tiny_path_r12.py
# checks these against the compiled sums, the NumPy port and torch across the size boundaries.
_SHORT_WIDTH = 2 * SUM_LANES  # float32 rows narrower than this are one chain of additions (_short_order)
_SHORT_SIZE = 4096  # elements up to which the short forms beat the compiled call
_SHORT_ROWS = 16 * _ILP  # row_sum over fewer rows than this forms no block of 2^4 (multi_row_sum's shortest)
_ZERO = np.zeros((), np.float32)  # (a 0-d array operand costs a ufunc call less than a NumPy scalar)


def _short_order(width, lanes=SUM_LANES):
    """The order in which torch's sum adds a row narrower than two vectors (of ``lanes``): one chain from its first
    element. A row narrower than a vector runs ``row_sum`` on its elements: four running sums of one element
    each (element i into i % 4), the elements after the first four into the first, then the other three:
    [0, 4, 5, 6, 1, 2, 3] (the sums start at 0: ``0 + x`` is ``x`` but for a zero's sign, which the
    output's ``+ 0`` clears). A row of one vector and a few more: each lane holds its one element, the
    elements after the vector are added first, then the lanes: [8, ..., width - 1, 0, ..., 7] (float32).
    None where that is the elements' own order."""
    if width < lanes:
        order = [0, *range(_ILP, width), *range(1, min(width, _ILP))]
    else:
        order = [*range(lanes, width), *range(lanes)]
    return None if order == list(range(width)) else np.array(order)


# each summed dtype's orders (by its itemsize) for the widths below two of its vectors (16 floats, 8 doubles)
_SHORT_ORDERS = {dtype.itemsize: [_short_order(width, sum_lanes(dtype)) for width in range(2 * sum_lanes(dtype))]
                 for dtype in _SUMMED}


def _short_row_sums(x):
    """``row_sums`` of a [rows, width] array with width below two vectors (``_SHORT_ORDERS``): each row's
    elements in ``_short_order``, added one after another (``add.accumulate`` adds in order; NumPy's sum
    would add pairwise), plus the output's zero."""
    order = _SHORT_ORDERS[x.itemsize][x.shape[1]]
    if order is not None:
        x = x[:, order]
    return np.add.accumulate(x, axis=1)[:, -1] + _ZERO


def _short_sum(flat):
    """``_short_row_sums`` of one flat row, as a 0-d array (the whole-tensor sum of a few elements). A zero
    sum is +0 (the output's ``+ 0``; a test instead of the addition: half its cost here)."""
    order = _SHORT_ORDERS[flat.itemsize][flat.size]
    total = np.add.accumulate(flat if order is None else flat[order])[-1]
    return np.asarray(total) if total else np.zeros((), flat.dtype)


def _short_row_sum(x):
    """torch's ``row_sum`` down the rows of a float32 [size, K] array with ``size < _SHORT_ROWS`` (no block of
    16): four running sums (row ``i`` into ``i % 4``, each added in order from the first: NumPy's reduction
    over an outer axis adds row after row), the rows after the last four into the first, folded left to
    right -> [K]. Fewer than four rows: one chain (see ``_short_order``)."""
    size = len(x)
    whole = size - size % _ILP
    if whole:
        sums = np.add.reduce(x[:whole].reshape(whole // _ILP, _ILP, -1), axis=0)
        x = np.concatenate((sums[:1], x[whole:], sums[1:])) if whole < size else sums
    return np.add.accumulate(x, axis=0)[-1]


def _short_outer_sums(x):
    """``_outer_sums`` of a [rows, columns] array with few rows, or None: groups of columns each
    a running sum per column (``multi_row_sum`` with fewer than 16 rows: in order), the others ``row_sum``
    (fewer than ``_SHORT_ROWS`` rows)."""
    rows, columns = x.shape
    lanes = sum_lanes(x.dtype)
    group = _ILP * lanes if columns >= lanes else _ILP
    grouped = columns // group * group
    if rows >= _SHORT_ROWS or (grouped and rows >= 16):
        return None
    if grouped == columns:
        return np.add.reduce(x, axis=0) + _ZERO
    rest = _short_row_sum(x[:, grouped:])
    if grouped:
        rest = np.concatenate((np.add.reduce(x[:, :grouped], axis=0), rest))
    return rest + _ZERO


def row_sums(x, port=False, squares=False):
    """The sum of each row of a C-contiguous float32 or float64 [rows, width] array (of its squares, rounded,
    with ``squares``: ``pow(x, 2).sum(-1)``) as torch's ``vectorized_inner_sum`` (``scalar_inner_sum`` for a
    row narrower than a vector) adds it: compiled (minilora/native/float32_sums.c, no temporary) where it
    can be, else (or with ``port``) the NumPy steps below; short rows of a small array in their order
    (``_short_row_sums``), unless ``port``."""
    lanes = sum_lanes(x.dtype)
    if x.shape[1] < 2 * lanes and x.size <= _SHORT_SIZE and not port:
        return _short_row_sums(np.square(x) if squares else x)
    library = None if port else _native_library()
    if library is not None:
        out = np.empty(len(x), x.dtype)
        compiled = library.ml_row_sums_f32 if x.dtype == np.float32 else library.ml_row_sums_f64
        compiled(native.address(x), native.address(out), len(x), x.shape[1], int(squares))
        return out
    if squares:
        x = np.square(x)
    rows, width = x.shape
    zero = x.dtype.type(0)
    if width < lanes:
        return _row_sum(x.reshape(rows, width, 1))[0] + zero
    vectors = width // lanes
    lane_sums = _row_sum(x[:, :vectors * lanes].reshape(rows, vectors, lanes))
    if vectors * lanes < width:  # the elements after the last vector first, then the lanes
        lane_sums = np.concatenate([x[:, vectors * lanes:].T, lane_sums])
    return _top_to_bottom(lane_sums) + zero  # (+ 0: the output's zero, so -0 sums to +0)


def thread_chunk(count, grain=GRAIN_SIZE):
    """How many of ``count`` items each thread takes in torch's ``at::parallel_for(0, count, grain)``
    (its OpenMP build; ``parallel.num_threads()`` taken as torch's thread count): all of them below
    ``grain`` or on one thread, else an even share among at most one thread per ``grain`` items."""
    threads = parallel.num_threads()
    if count < grain or threads == 1:
        return count
    return -(-count // min(threads, -(-count // grain)))


def serial_sums(a, axes, squares=False):
    """Sums over ``axes`` (kept as size 1) of a float32 or float64 NumPy array as torch's ``binary_kernel_reduce``
    adds them (the norm kernels for p other than 2, and p=2 off the last dim): each output's elements one by one,
    in memory order, in the array's own dtype; a single output of ``GRAIN_SIZE`` elements or more in one chunk per
    thread (``at::parallel_for``), the chunk sums then added in order. ``squares``: the elements' squares added,
    each rounded (NormTwoOps' ``acc + x * x``: not fused, checked against torch on AVX-512)."""
    axes = tuple(sorted(axis % a.ndim for axis in axes))
    kept = [axis for axis in range(a.ndim) if axis not in axes]
    inner_first = [dim[3] for dim in _iterator_dims(a, axes) if not dim[2]]  # (a broadcast dim decides nothing)
    reduced = [axis for axes_ in reversed(inner_first) for axis in reversed(axes_)]  # (outermost first)
    reduced += [axis for axis in axes if a.shape[axis] == 1]
    rows = np.transpose(a, kept + reduced).reshape([a.shape[axis] for axis in kept] + [-1])
    count = rows.shape[-1]
    chunk = thread_chunk(count) if rows.size == count else count  # (several outputs: split among threads)
    total = np.zeros(rows.shape[:-1], a.dtype)
    for start in range(0, count, chunk or 1):
        part = rows[..., start:start + chunk]
        total = total + np.cumsum(part * part if squares else part, axis=-1, dtype=a.dtype)[..., -1]
    return total.reshape([1 if axis in axes else n for axis, n in enumerate(a.shape)])


def _whole_sum(flat):
    """A 1-D contiguous array's sum as torch's: one row, or one chunk a thread (``two_pass_reduction``)
    whose sums are added in order."""
    n = flat.size
    chunk = thread_chunk(n)
    if chunk == n:
        return row_sums(flat.reshape(1, n))[0]
    total = flat.dtype.type(0)
    for start in range(0, n, chunk):
        total += row_sums(flat[start:start + chunk].reshape(1, -1))[0]
    return total


def _outer_sums(x):
    """The sum down each column of a float32 or float64 [rows, columns] array (rows of contiguous columns) as
    torch's ``vectorized_outer_sum`` (``scalar_outer_sum`` with fewer columns than a vector) adds it."""
    if x.size <= _SHORT_SIZE:
        short = _short_outer_sums(x)
        if short is not None:
            return short
    lanes = sum_lanes(x.dtype)
    return _slab_outer_sums(x[None], _ILP * lanes if x.shape[1] >= lanes else _ILP)[0]


def _slab_outer_sums(x, group):
    """The sum down each column of each slab of [slabs, rows, columns]: ``group`` columns side by side at a
    time (``multi_row_sum``: 4 vectors' lanes in ``vectorized_outer_sum``, 4 columns in ``scalar_outer_sum``),
    each column after the last whole group on its own (``row_sum``) -> [slabs, columns], plus the output's
    zero. Compiled (``ml_outer_sums``) where it can be."""
    library = _native_library()
    if library is not None:
        if x.strides[2] != x.itemsize or min(x.strides[:2]) < 0 or any(s % x.itemsize for s in x.strides):
            x = np.ascontiguousarray(x)  # (the kernel steps over whole rows and slabs of contiguous columns)
        out, sums = np.empty((len(x), x.shape[2]), x.dtype), np.empty(4 * x.shape[2], x.dtype)  # (4 levels)
        compiled = library.ml_outer_sums_f32 if x.dtype == np.float32 else library.ml_outer_sums_f64
        compiled(native.address(x), native.address(out), native.address(sums), *x.shape,
                 x.strides[0] // x.itemsize, x.strides[1] // x.itemsize, group)
        return out
    columns = x.shape[2]
    grouped = columns // group * group
    out = np.empty((len(x), columns), x.dtype)
    out[:, :grouped] = multi_row_sum(x[:, :, :grouped])
    if grouped < columns:
        out[:, grouped:] = _row_sum(np.ascontiguousarray(x[:, :, grouped:])).T
    return out + x.dtype.type(0)


def cascade_sum(a, axes):
    """``a.sum(axes)`` (no kept dimensions) for a float32 or float64 NumPy array in torch's order, or None
    where the layout is not one modelled here (see the module's docstring)."""
    if type(a) is not np.ndarray or a.dtype not in _SUMMED or a.size == 0:
        return None
    if a.nbytes < 2 * _VECTOR_BYTES and a.flags.c_contiguous and len(set(axes)) == a.ndim:  # under 2 vectors, all summed
        return _short_sum(a.reshape(-1))
    axes = tuple(sorted(axes))
    if not a.flags.c_contiguous or 1 in a.shape:  # (torch's iterator drops dimensions of size 1)
        return _iterator_sum(a, axes)
    ndim = a.ndim
    if axes == tuple(range(ndim)):  # the whole tensor: one contiguous row
        return np.asarray(_whole_sum(a.reshape(-1)), a.dtype)
    kept = [n for i, n in enumerate(a.shape) if i not in axes]
    if axes == tuple(range(ndim - len(axes), ndim)):  # trailing dimensions: rows of contiguous memory
        width = math.prod(a.shape[i] for i in axes)
        return row_sums(a.reshape(-1, width)).reshape(kept)
    if axes == tuple(range(len(axes))):  # leading dimensions: one running sum per column
        columns = a.reshape(math.prod(a.shape[i] for i in axes), -1)
        if a.size <= _SHORT_SIZE:  # (one range of columns: below GRAIN_SIZE)
            return _outer_sums(columns).reshape(kept)
        out = _column_ranges_side_by_side(columns)
        if out is None:
            out = np.empty(columns.shape[1], a.dtype)
            for begin, end in _column_ranges(a.size, columns.shape[1], a.itemsize):
                out[begin:end] = _outer_sums(columns[:, begin:end])
        return out.reshape(kept)
    return _iterator_sum(a, axes)


def _column_ranges(size, columns, itemsize=4, rounded=True):
    """The columns each thread sums in torch's ``parallel_dim_reduction`` (a reduction of 32768+
    elements on several threads): ``at::parallel_for`` over the columns, each range's ends rounded down
    to 128 bytes (32 floats, 16 doubles) but the last where the columns are contiguous (``rounded``); each
    range starts its own groups of columns."""
    threads = parallel.num_threads()
    if size < GRAIN_SIZE or threads == 1:
        return [(0, columns)]
    chunk = -(-columns // min(threads, columns))
    ranges = []
    for begin in range(0, columns, chunk):
        end = min(begin + chunk, columns)
        align = 128 // itemsize if rounded else 1
        begin, end = begin - begin % align, end if end == columns else end - end % align
        if begin < end:
            ranges.append((begin, end))
    return ranges



def sort_dimensions(order, shape, operands, first=()):
    """TensorIteratorBase::reorder_dimensions: ``order`` (dimensions, innermost first; torch starts from the last
    dimension) insertion-sorted innermost first -- the dimensions in ``first`` (a reduction's: the output's
    stride 0 there) inside the others, then each pair compared by the operands' strides (each given for
    ``shape``), the first operand deciding, a later one only where the first's strides are 0 (broadcast) or tie
    (on a tie the smaller size goes inside, unless a later operand decides)."""
    def should_swap(d0, d1):  # 1: d1 goes inside d0; -1: it stays outside; 0: no opinion
        if (d0 in first) != (d1 in first):
            return 1 if d1 in first else -1
        for strides in operands:
            s0, s1 = strides[d0], strides[d1]
            if s0 == 0 or s1 == 0:
                continue
            if s0 != s1:
                return -1 if s0 < s1 else 1
            if shape[d0] > shape[d1]:
                return 1
        return 0

    order = list(order)
    for i in range(1, len(order)):
        moving = i
        for j in range(i - 1, -1, -1):
            comparison = should_swap(order[j], order[moving])
            if comparison > 0:
                order[j], order[moving] = order[moving], order[j]
                moving = j
            elif comparison < 0:
                break
    return order


def _iterator_dims(a, axes):
    """The dimensions torch's TensorIterator loops over to reduce ``a`` over ``axes``, innermost first, each
    [size, input stride in bytes, output stride (0: reduced), the original axes it spans, innermost first]
    (TensorIteratorBase::reorder_dimensions and coalesce_dimensions): dimensions of size 1 dropped, the rest
    sorted from the last dimension on by an insertion sort that puts the reduced dimensions first, then
    compares the output's strides (a new C-contiguous tensor of the kept ones), then the input's (the smaller
    size first on a tie); neighbours that step through memory as one dimension (in the input and the output)
    are merged."""
    out_strides, step = {}, 1
    for axis in reversed(range(a.ndim)):
        if axis not in axes:
            out_strides[axis], step = step, step * a.shape[axis]
    out = {axis: out_strides.get(axis, 0) for axis in range(a.ndim)}
    order = sort_dimensions([axis for axis in reversed(range(a.ndim)) if a.shape[axis] > 1], a.shape,
                            [[out[axis] for axis in range(a.ndim)], a.strides], first=axes)
    dims = []
    for axis in order:
        size, stride = a.shape[axis], a.strides[axis]
        if dims and dims[-1][0] * dims[-1][1] == stride and dims[-1][0] * dims[-1][2] == out[axis]:
            dims[-1][0] *= size
            dims[-1][3].append(axis)
        else:
            dims.append([size, stride, out[axis], [axis]])
    return dims


def _loop_sums(x, in_strides, itemsize, half=None):
    """cascade_sum's 2-D loop on ``x`` [..., size1, size0], reduced along its last axis (``size0``): each row's sum
    -> [..., size1]. Along contiguous memory ``vectorized_inner_sum`` (``row_sums``); down rows of contiguous
    columns ``vectorized_outer_sum``; else ``scalar_inner_sum`` (``row_sum`` of each row's elements) when the
    reduced stride is the smaller, ``scalar_outer_sum`` when it is the larger (``_slab_outer_sums``). ``half``:
    ``x`` holds a 16-bit tensor's values as float32 (``itemsize`` 2): its vectors hold 16 elements, loaded as two
    float vectors (``_paired_lane_row_sums`` along memory; 8 columns each down rows), summed in float32."""
    (in0, in1), size1, size0 = in_strides, x.shape[-2], x.shape[-1]
    lanes = sum_lanes(x.dtype)
    vector = 2 * lanes if half is not None else lanes  # (elements of the input's Vectorized<scalar_t>)
    if in0 == itemsize and size0 >= vector:
        rows = np.ascontiguousarray(x).reshape(-1, size0)
        return (_paired_lane_row_sums(rows) if half is not None else row_sums(rows)).reshape(x.shape[:-1])
    if in0 < in1 and not (in1 == itemsize and size1 >= vector):
        rows = np.ascontiguousarray(x).reshape(-1, size0, 1)
        return (_row_sum(rows)[0] + x.dtype.type(0)).reshape(x.shape[:-1])
    group = _ILP * lanes if in1 == itemsize and size1 >= vector else _ILP
    slabs = np.ascontiguousarray(np.swapaxes(x, -1, -2)).reshape(-1, size0, size1)
    return _slab_outer_sums(slabs, group).reshape(x.shape[:-1])


def _paired_lane_row_sums(rows):
    """vectorized_inner_sum of 16-bit rows (their values as float32 [rows, width], width >= 16): each load of 16
    elements converted to two float vectors and added (InnerSumCastLoadPolicy: ``first + second``), those
    8-lane sums through ``row_sum``, then the elements after the last 16 from 0 in order, then the lanes."""
    count, width = rows.shape
    vectors = width // (2 * SUM_LANES)
    halves = rows[:, :vectors * 2 * SUM_LANES].reshape(count, vectors, 2, SUM_LANES)
    lane_sums = _row_sum(np.ascontiguousarray(halves[:, :, 0] + halves[:, :, 1]))
    lane_sums = np.concatenate([rows[:, vectors * 2 * SUM_LANES:].T, lane_sums])
    return _top_to_bottom(lane_sums) + np.float32(0)


def _split_dim(dims):
    """The dimension torch's ``parallel_dim_reduction`` splits among threads (``find_split_dim``): from the
    outermost, the first kept one with at least a thread's worth of columns, else the largest kept one."""
    threads, best = parallel.num_threads(), len(dims) - 1
    for d in range(len(dims) - 1, -1, -1):
        if not dims[d][2]:
            break
        if dims[d][0] >= threads:
            return d
        if dims[d][0] > dims[best][0]:
            best = d
    return best


def _iterator_sum(a, axes, half=None):
    """``a.sum(axes)`` for any layout, as torch's iterator runs cascade_sum: its dimensions (``_iterator_dims``),
    the 2-D loop over the two innermost (``_loop_sums``; swapped so that the reduced one is inside) for each
    index of the outer ones, and each loop's sums added into the output (from 0) in the iterator's order. A
    reduction of ``GRAIN_SIZE`` elements or more on several threads: one output in one chunk a thread
    (``_chunked_whole_sum``), several split on ``_split_dim`` (columns rounded to 128 bytes when they are
    contiguous: ``_column_ranges``). An expanded view's stride of 0 goes through the same steps (the iterator
    leaves a broadcast dimension where its insertion sort finds it; the loops read the same element again), as
    torch's. ``half``: ``a`` is a 16-bit tensor (``sixteen_bit_sum``). None for a negative stride."""
    if any(stride < 0 for stride, n in zip(a.strides, a.shape) if n > 1):
        return None
    kept = [n for i, n in enumerate(a.shape) if i not in axes]
    dims = _iterator_dims(a, axes)
    wide = np.dtype(np.float32) if half is not None else a.dtype  # (what the loops add in)
    if not any(dim[2] == 0 for dim in dims):  # nothing of size > 1 reduced: each element added to 0
        return (a.astype(wide) + wide.type(0)).reshape(kept)
    while len(dims) < 2:
        dims.append([1, a.itemsize, 0, []])
    threaded = a.size >= GRAIN_SIZE and parallel.num_threads() > 1
    split = _split_dim(dims) if threaded and math.prod(kept) > 1 else None
    if dims[0][2] and not dims[1][2]:  # (the reduced dimension inside)
        dims[0], dims[1] = dims[1], dims[0]
    view = np.lib.stride_tricks.as_strided(a, [d[0] for d in reversed(dims)], [d[1] for d in reversed(dims)],
                                           writeable=False).astype(wide, copy=False)
    if threaded and split is None:
        return np.asarray(_chunked_whole_sum(view, dims[0][1] == a.itemsize, half), wide).reshape(kept)
    in_strides = (dims[0][1], dims[1][1])
    if split == 1:  # (a split on an outer dimension leaves each loop whole)
        sums = np.empty(view.shape[:-1], wide)
        for begin, end in _column_ranges(a.size, dims[1][0], a.itemsize, rounded=dims[1][1] == a.itemsize):
            sums[..., begin:end] = _loop_sums(view[..., begin:end, :], in_strides, a.itemsize, half)
    else:
        sums = _loop_sums(view, in_strides, a.itemsize, half)
    return _into_output(sums, dims[:0:-1], a, axes, half).reshape(kept)


def _accumulated(sums, half):
    """The sums along the last axis (a temporary: changed) stored into an output one after another from its 0
    (CastStoreAccumulate): added in order, and with ``half`` rounded to that 16-bit dtype at every store, as the
    16-bit output holds it between stores (in float32)."""
    if half is None:
        sums[..., 0] += sums.dtype.type(0)  # (the output's zero: -0 sums to +0)
        return np.cumsum(sums, axis=-1)[..., -1]  # (a cumulative sum adds in order)
    out = np.zeros(sums.shape[:-1], np.float32)
    for k in range(sums.shape[-1]):
        out = (out + sums[..., k]).astype(half).astype(np.float32)
    return out


def _into_output(sums, dims, a, axes, half=None):
    """The loops' sums [outer dims..., size1] added into the output: ``dims`` (outermost first) name the original
    axes each spans; the kept ones become the output's axes in their order, and the sums that land on one
    output (over reduced axes) are stored one after another from 0, in the iterator's order (``_accumulated``)."""
    spans = [axis for dim in dims for axis in reversed(dim[3])]
    sums = sums.reshape([a.shape[axis] for axis in spans])
    kept = [spans.index(axis) for axis in range(a.ndim) if axis in spans and axis not in axes]
    reduced = [i for i, axis in enumerate(spans) if axis in axes]
    sums = sums.transpose(kept + reduced).reshape([sums.shape[i] for i in kept] + [-1])
    return _accumulated(sums, half)


def sixteen_bit_sum(a, axes, half):
    """``a.sum(axes)`` (no kept dims) of a float16/bfloat16 (``half``) NumPy array as torch's
    ``cascade_sum<scalar_t>`` adds it: through the iterator (``_iterator_sum``), the loops adding the values in
    float32 (16 elements a vector, ``_paired_lane_row_sums``), each store into the 16-bit output (or a thread's
    slot) rounded to it. -> float32 values (the last store's rounding is the caller's), or None: where the
    iterator's two innermost dimensions are both reduced, torch's sum_out sums a float32 copy instead
    (``should_use_acc_buffer``, pytorch#83149: the caller's float32 cascade), and for a negative stride."""
    if type(a) is not np.ndarray or a.size == 0:
        return None
    axes = tuple(sorted(axes))
    dims = _iterator_dims(a, axes)
    if len(dims) >= 2 and not dims[0][2] and not dims[1][2]:
        return None
    return _iterator_sum(a, axes, half)


def _is_16bit_float(a):
    return a.itemsize == 2 and is_floating(a.dtype)


def _float32_copy(a):
    """``a.to(float32)`` laid out as torch's copy (preserve_format): ``a``'s order of strides where ``a`` is
    non-overlapping and dense (NumPy's order "K"), else C-contiguous."""
    expected, dense = a.itemsize, True
    for stride, size in sorted((s, n) for s, n in zip(a.strides, a.shape) if n > 1):
        dense, expected = dense and stride == expected, expected * size
    return a.astype(np.float32, order="K" if dense else "C")


def torch_order_sum(a, axes):
    """``a.sum(axes)`` (no kept dims) of a float32, float64 or 16-bit float NumPy array in torch's CPU order
    of additions (16-bit: accumulated in float32, each store into the output rounded -> float32 values, the
    last rounding the caller's), or None where this file does not model it (other dtypes, CuPy arrays, empty
    arrays, negative strides): the caller sums with NumPy."""
    if a.dtype in _SUMMED:
        return cascade_sum(a, axes)
    if type(a) is not np.ndarray or not a.size or not _is_16bit_float(a):
        return None
    total = sixteen_bit_sum(a, axes, a.dtype)
    return cascade_sum(_float32_copy(a), axes) if total is None else total  # (None: torch sums a float32 copy)


_SIXTEEN_BIT_BACKWARD = threading.local()  # .dtype: see sixteen_bit_backward


@contextlib.contextmanager
def sixteen_bit_backward(dtype):
    """While a 16-bit op's backward runs in float32 on this thread (``ops.elementwise.backward_in_float32``): the
    float32 gradients ``sum_like_torch`` sums hold what torch's formula has as 16-bit tensors, so they are rounded
    to ``dtype`` and summed by torch's 16-bit kernel."""
    outer = getattr(_SIXTEEN_BIT_BACKWARD, "dtype", None)
    _SIXTEEN_BIT_BACKWARD.dtype = dtype
    try:
        yield
    finally:
        _SIXTEEN_BIT_BACKWARD.dtype = outer


def sum_like_torch(grad, axes):
    """``grad.sum(axes, keepdims=True)`` in ``grad``'s dtype as torch's CPU sum kernel adds it: autograd's
    ``at::sum_to`` reduces a broadcast input's gradient with that kernel, whose order of additions differs from
    NumPy's pairwise one in the last bit of most float32 sums. (16-bit floats: see ``torch_order_sum``; where
    it is not modelled, NumPy's sum, 16-bit in float32; inside ``sixteen_bit_backward`` a float32 gradient as
    the 16-bit tensor it stands for.)"""
    half = getattr(_SIXTEEN_BIT_BACKWARD, "dtype", None)
    if half is not None and grad.dtype == np.float32:
        return sum_like_torch(grad.astype(half), axes).astype(np.float32)
    if type(grad) is np.ndarray and any(step < 0 for step in grad.strides):  # (a backward's flipped view, cumsum's:
        grad = grad.copy(order="K")  # torch's flip is a copy, its strides positive in the same order)
    total = torch_order_sum(grad, axes)
    if total is None:
        wide = np.float32 if grad.itemsize == 2 and is_floating(grad.dtype) else None
        return grad.sum(axis=axes, keepdims=True, dtype=wide).astype(grad.dtype, copy=False)
    kept = tuple(1 if i in axes else n for i, n in enumerate(grad.shape))
    return total.astype(grad.dtype, copy=False).reshape(kept)


_ROWS_APART = 1 << 62  # (a stride between rows no layout has: each row a loop of its own)


def _chunked_whole_sum(view, contiguous, half=None):
    """A whole reduction on several threads (``two_pass_reduction``): the iterator's elements, in its order, cut
    into one chunk a thread; each chunk's runs along the innermost dimension (a row, or the part of one at a cut)
    summed as rows (``row_sums`` along contiguous memory, else ``row_sum``'s elements) and stored in order into
    the thread's slot of a buffer of the output's dtype, from 0 (``_accumulated``), then that buffer (one slot a
    thread, 0 where a thread had no chunk) summed as a row into the output."""
    width = view.shape[-1]
    flat = np.ascontiguousarray(view).reshape(-1)
    chunk = thread_chunk(flat.size)
    buffer = np.zeros(parallel.num_threads(), flat.dtype)
    itemsize = 2 if half is not None else flat.itemsize
    for slot, start in enumerate(range(0, flat.size, chunk)):
        end = min(start + chunk, flat.size)
        head = min(-start % width, end - start)  # (the rest of a row cut at the chunk's start)
        tail = (end - start - head) % width
        pieces = [flat[start:start + head], flat[start + head:end - tail].reshape(-1, width), flat[end - tail:end]]
        sums = [_loop_sums(rows, (itemsize if contiguous else itemsize + 1, _ROWS_APART), itemsize, half)
                for rows in (pieces[0][None], pieces[1], pieces[2][None]) if rows.size]
        buffer[slot] = _accumulated(np.concatenate(sums)[None], half)[0]
    return _loop_sums(buffer[None], (itemsize, itemsize * len(buffer)), itemsize, half)[0]


def two_norms(a, axes, keepdims=False):
    """``sqrt((a * a).sum(axes))`` for a float32 or float64 NumPy array in the order of torch's
    ``norm_kernel_tensor_iterator_impl`` for p=2 along contiguous memory (``is_reduce_lastdim``: the reduced
    dims coalesce into one, innermost in memory -- the last dims, a whole dense tensor, ``x.T``'s first dim):
    8-float (4-double) vectors each add ``x * x`` (rounded, not fused) into their lane, the lanes are added
    left to right, then the last ``n % 8`` squares one by one (the kernel has no AVX-512 build, as the sum's).
    Where torch's build fuses, GCC contracts that scalar ``acc += x * x`` into fused multiply-adds, and for
    float32 vectorizes it 4 squares at a time first (a fold-left reduction: the squares rounded, added in
    order): of a float32 tail of n, the first ``n // 4 * 4`` squares are rounded, the last ``n % 4`` fused
    (measured on widths 2..70: before, 1 row in 20 of width 5 or 13 off); float64's tail fused (0 of 300 rows
    off; unfused, 45). None for other layouts."""
    axes = tuple(range(a.ndim)) if axes is None else tuple(sorted(axis % a.ndim for axis in axes))
    if type(a) is not np.ndarray or a.dtype not in _SUMMED or a.size == 0 \
            or any(s < 0 for s, n in zip(a.strides, a.shape) if n > 1):
        return None
    dims = _iterator_dims(a, axes)  # (is_reduce_lastdim: one reduced dim after coalescing, innermost, contiguous)
    if sum(not d[2] for d in dims) != 1 or dims[0][2] or dims[0][1] != a.itemsize:
        return None
    values, as_result = _in_iterator_order(a, axes, a.dtype, dims)
    width = values.shape[1]
    squares = np.square(values)
    step = sum_lanes(a.dtype)
    rows, whole = len(squares), width - width % step
    lanes = np.zeros((rows, step), a.dtype)
    if whole:
        lanes = np.add.reduce(squares[:, :whole].reshape(rows, whole // step, step), axis=1)
    if not float32_math.FUSED_MULTIPLY_ADD:
        rounded = width  # (every square rounded, added in order)
    else:
        rounded = whole + (width - whole) // 4 * 4 if a.dtype == np.float32 else whole
    total = np.cumsum(np.concatenate([lanes, squares[:, whole:rounded]], axis=1), axis=1)[:, -1]  # (in order)
    multiply_add = float32_math.fused_multiply_add if a.dtype == np.float32 else float32_math.fused_multiply_add64
    for k in range(rounded, width):
        total = multiply_add(values[:, k], values[:, k], total)
    out = as_result(np.sqrt(total))
    return out.reshape([1 if i in axes else n for i, n in enumerate(a.shape)]) if keepdims else out


# ---- layer_norm's mean and variance: RowwiseMoments ---------------------------------------------------
_CHUNK = 16  # vectors a Welford chunk (kChunkSize)


def _multiply_add(fused, dtype=np.float32):
    """``a * b + c``: one rounding where torch's build fuses (vec::fmadd, GCC's contraction), else two."""
    if not fused:
        return lambda a, b, c: a * b + c
    return float32_math.fused_multiply_add if dtype == np.float32 else float32_math.fused_multiply_add64


def _merge_lanes(count_add, m1_add, m2_add, into, fma):
    """AddMomentsVec: ``into`` = [count, m1, m2] takes (count_add, m1_add, m2_add), lane by lane."""
    count = into[0]
    n = count + count_add
    real = into[1].dtype.type
    c = real(count_add) / real(n) if n else real(0)
    delta = m1_add - into[1]
    sum2, c_delta = into[2] + m2_add, c * delta
    into[1] = into[1] + c_delta
    into[2] = fma(delta * np.float32(count), c_delta, sum2)
    into[0] = n


def _chunk_moments(chunks, fma):
    """UpdateMomentsVec on [rows, chunks, j, lanes]: each chunk's Welford mean and M2 from zero, the
    vectors j in order (weights 1/(j+1) as float32)."""
    real = chunks.dtype.type
    m1 = np.zeros(chunks.shape[:2] + chunks.shape[3:], real)
    m2 = np.zeros_like(m1)
    for j in range(chunks.shape[2]):
        value = chunks[:, :, j]
        delta = value - m1
        m1 = fma(np.full_like(delta, real(1) / real(j + 1)), delta, m1)
        m2 = fma(delta, value - m1, m2)
    return m1, m2


def _row_moments_port(x, lanes, fused, sixteen_bit=None):
    """torch's RowwiseMoments in NumPy (see ``row_moments``), every row at once. ``sixteen_bit`` (bfloat16 or
    float16): its 16-bit form (``x`` their float32 values): a vector holds ``2 lanes`` 16-bit numbers, read as two
    float vectors, each half its own Welford chain in a chunk, the two merged into the cascade one after the other;
    the scalar loop's M2 update is fused for float16 (measured; bfloat16's, like float32's, is not)."""
    fma = _multiply_add(fused, x.dtype)
    real = x.dtype.type
    rows, width = x.shape
    halves = 1 if sixteen_bit is None else 2
    n = width // (lanes * halves)
    count = -(-n // _CHUNK)
    depth = _ceil_log2(count)
    vectors = x[:, :n * lanes * halves].reshape(rows, n, halves, lanes)
    whole = n // _CHUNK
    sizes = [_CHUNK] * whole + ([n - whole * _CHUNK] if whole < count else [])
    chunks = []  # per half: (m1, m2) [rows, chunks, lanes]
    for half in range(halves):
        m1, m2 = _chunk_moments(vectors[:, :whole * _CHUNK, half].reshape(rows, whole, _CHUNK, lanes), fma)
        if whole < count:
            last = _chunk_moments(vectors[:, None, whole * _CHUNK:, half], fma)
            m1, m2 = np.concatenate([m1, last[0]], axis=1), np.concatenate([m2, last[1]], axis=1)
        chunks.append((m1, m2))
    zero = np.zeros((rows, lanes), real)
    stack = [[0, zero, zero] for _ in range(depth)]
    for i, size in enumerate(sizes):  # the binary cascade of chunks
        for m1, m2 in chunks:
            _merge_lanes(size, m1[:, i], m2[:, i], stack[0], fma)
        level, mask = 1, i + 1
        while level < depth and mask & 1 == 0:
            _merge_lanes(*stack[level - 1], stack[level], fma)
            stack[level - 1] = [0, zero, zero]
            level, mask = level + 1, mask >> 1
    for level in stack[1:]:
        _merge_lanes(*level, stack[0], fma)
    tail_m2 = fma if sixteen_bit == np.float16 else _multiply_add(False)
    seen, mean, m2_total = 0, np.zeros(rows, real), np.zeros(rows, real)
    for k in range(n * lanes * halves, width):  # scalar Welford on the elements after the last vector
        value = x[:, k]
        delta = value - mean
        seen += 1
        mean = mean + delta / real(seen)
        m2_total = tail_m2(delta, value - mean, m2_total)
    per_lane = n * halves
    for lane in range(lanes):  # AddMoments: each lane's moments into the row's
        total = seen + per_lane
        c = real(per_lane) / real(total) if total else real(0)
        delta = stack[0][1][:, lane] - mean
        mean = fma(np.full_like(delta, c), delta, mean)
        m2_total = m2_total + fma(delta * delta * c, np.full_like(delta, real(seen)), stack[0][2][:, lane])
        seen = total
    return mean, m2_total / real(width)


def sixteen_bit_row_moments(x, dtype):
    """The mean and biased variance of each row of float32 [rows, width] ``x`` (values of the 16-bit ``dtype``) as
    torch's 16-bit RowwiseMoments computes them (group_norm's 16-bit kernel; ``_row_moments_port``): measured bit
    for bit, widths 9 to 5000, both dtypes, where the float32 order missed 1 mean in 3."""
    return _row_moments_port(np.ascontiguousarray(x, np.float32), SUM_LANES, float32_math.FUSED_MULTIPLY_ADD,
                             sixteen_bit=np.dtype(dtype))


def row_moments(x, port=False):
    """The mean and biased variance of each row of a C-contiguous float32 (or float64) [rows, width] array as torch's
    layer_norm computes them (``RowwiseMoments``, ATen/native/cpu/moments_utils.h): Welford's update
    over chunks of 16 vectors of ``SUM_LANES`` floats (the layer-norm kernel has no AVX-512 build
    either), each lane its own mean and M2, the chunks merged pairwise in a binary cascade, then the
    elements after the last vector by scalar Welford (unfused) and the lanes merged into them one by one;
    the other multiply-adds fused where torch's build fuses (``float32_math.FUSED_MULTIPLY_ADD``). Compiled
    (minilora/native/float32_sums.c) where it can be; the NumPy port is the reference."""
    fused = float32_math.FUSED_MULTIPLY_ADD
    if x.dtype == np.float64:  # (the same kernel on Vectorized<double>: 4 doubles a vector; the port only)
        return _row_moments_port(x, sum_lanes(x.dtype), fused)
    library = None if port else _native_library()
    if library is None:
        return _row_moments_port(x, SUM_LANES, fused)
    mean, var = np.empty(len(x), np.float32), np.empty(len(x), np.float32)
    library.ml_row_moments(native.address(x), native.address(mean), native.address(var), len(x), x.shape[1],
                           SUM_LANES, int(fused))
    return mean, var


def compiled_lane_sums(x, lanes=None):
    """``fastmath.lane_sum`` of a C-contiguous float32 [rows, width] array (no products) compiled
    (``ml_lane_sums``: the same additions; ``lanes`` floats a vector, the CPU's by default), or None without
    the compiled library."""
    library = _native_library()
    if library is None or not x.shape[1]:
        return None
    out = np.empty(len(x), np.float32)
    library.ml_lane_sums(native.address(x), native.address(out), len(x), x.shape[1], lanes or float32_math.FLOAT_LANES,
                         int(float32_math.CPU_CAPABILITY != "default"))
    return out


# ---- var/std: WelfordOps and std_var_all_cpu ------------------------------------------------------------
# torch's CPU var/std/var_mean/std_mean (ATen/native/ReduceOps.cpp's std_var_out / std_var_mean_out) take one of
# two kernels: var or std of a whole tensor (one output) in float32/float64 is ``std_var_all_cpu`` (the mean
# first, then the squared deviations added in float64: ``squared_deviation_sum``); everything else -- a var along
# dims, var_mean and std_mean always, 16-bit always -- is ``WelfordOps`` in binary_kernel_reduce
# (``welford_moments``): each output's elements one by one, in the iterator's order, in double.


def _welford_rows(rows):
    """WelfordOps.reduce down each row of a C-contiguous float64 [rows, n] array from its init -> (mean, m2):
    ``delta = x - mean; mean += delta / n; m2 += delta * (x - mean)``, unfused. Compiled (``ml_welford_rows``),
    else a column at a time."""
    library = _native_library()
    if library is not None:
        mean, m2 = np.empty(len(rows)), np.empty(len(rows))
        library.ml_welford_rows(native.address(rows), native.address(mean), native.address(m2), *rows.shape)
        return mean, m2
    mean, m2 = np.zeros(len(rows)), np.zeros(len(rows))
    for i in range(rows.shape[1]):
        value = rows[:, i]
        delta = value - mean
        mean = mean + delta / np.float64(i + 1)
        m2 = m2 + delta * (value - mean)
    return mean, m2


def _welford_combine(a, b):
    """WelfordOps.combine of two partial results (mean, m2, count) as Python floats: an empty one gives the other,
    else the mean moves by ``delta * nb / n`` and M2 gains ``delta * delta * na * nb / n`` (in that order)."""
    if a[2] == 0:
        return b
    if b[2] == 0:
        return a
    delta, count = b[0] - a[0], a[2] + b[2]
    share = b[2] / count
    return a[0] + delta * share, a[1] + b[1] + delta * delta * a[2] * share, count


def _in_iterator_order(a, axes, dtype=np.float64, dims=None):
    """``a`` as torch's reduction iterator walks it: [outputs, reduced elements] (``dtype``, C-contiguous, each row
    one output's elements in the order the kernel reads them: ``_iterator_dims``, or ``dims`` already found) and
    the function that lays out one value a row as the reduction's result (no kept dims)."""
    dims = _iterator_dims(a, axes) if dims is None else dims
    reduced, kept = [d for d in dims if not d[2]], [d for d in dims if d[2]]
    outer_first = kept[::-1] + reduced[::-1]
    view = np.lib.stride_tricks.as_strided(a, [d[0] for d in outer_first], [d[1] for d in outer_first],
                                           writeable=False)
    rows = np.ascontiguousarray(view, dtype=dtype).reshape(-1, math.prod(d[0] for d in reduced))
    spans = [axis for d in kept[::-1] for axis in reversed(d[3])]
    order = sorted(range(len(spans)), key=spans.__getitem__)
    shape = [n for axis, n in enumerate(a.shape) if axis not in axes]

    def as_result(values):
        return values.reshape([a.shape[axis] for axis in spans]).transpose(order).reshape(shape)
    return rows, as_result


def welford_moments(a, axes):
    """The mean and M2 (float64, shaped as ``a`` reduced over ``axes`` without kept dims) and the count of each
    output, as torch's ``WelfordOps<scalar_t, double>`` finds them in binary_kernel_reduce: each output's elements
    in the iterator's order (an expanded view's repeats included) by ``_welford_rows``; a single output of
    ``GRAIN_SIZE`` elements or more on several threads in one chunk a thread, the chunks' results combined in
    order (``_welford_combine``). Any float dtype (a 16-bit one's elements are exact in double). None for a
    CuPy array, nothing to reduce, or a negative stride (torch has no such view)."""
    if type(a) is not np.ndarray or a.size == 0 or any(s < 0 for s, n in zip(a.strides, a.shape) if n > 1):
        return None
    rows, as_result = _in_iterator_order(a, tuple(sorted(axes)))
    count = rows.shape[1]
    if len(rows) == 1 and count >= GRAIN_SIZE and parallel.num_threads() > 1:
        chunk, total = thread_chunk(count), (0.0, 0.0, 0.0)
        for start in range(0, count, chunk):
            part = rows[:, start:start + chunk]
            mean, m2 = _welford_rows(np.ascontiguousarray(part))
            total = _welford_combine(total, (float(mean[0]), float(m2[0]), float(part.shape[1])))
        mean, m2 = np.array([total[0]]), np.array([total[1]])
    else:
        mean, m2 = _welford_rows(rows)
    return as_result(mean), as_result(m2), count


def _loop_pieces(shape, begin, end):
    """The runs of elements each call of a 2-D loop covers in torch's ``serial_for_each`` over the iterator
    ``shape`` (innermost first) for the range [begin, end): DimCounter's ``max_2d_step`` (the rest of a row, or
    whole rows up to the end of the next dimension) -> the runs' lengths, in order."""
    if len(shape) <= 1:
        return [end - begin]
    values, rest = [], begin
    for size in shape:
        values.append(rest % size)
        rest //= size
    lengths, offset = [], begin
    while offset < end:
        step0, step1 = min(shape[0] - values[0], end - offset), 1
        if step0 == shape[0]:
            step1 = min(shape[1] - values[1], (end - offset) // shape[0])
        lengths.append(step0 * step1)
        offset += step0 * step1
        i, overflow = (1, step1) if step1 != 1 else (0, step0)
        while i < len(shape) and overflow:
            values[i] += overflow
            overflow = 1 if values[i] >= shape[i] else 0
            values[i] -= shape[i] * overflow
            i += 1
    return lengths


def squared_deviation_sum(a, mean):
    """``((x - mean)**2).sum()`` over all of a float32 or float64 array as torch's ``std_var_all_cpu`` adds it: the
    elements in its iterator's order (memory order, dims coalesced), each ``dx * dx`` in double (unfused), added
    from 0 within each call of its 2-D loop (``_loop_pieces``), those sums added into the thread's from 0, one
    chunk a thread (``at::parallel_reduce``) and the threads' sums added in order. None for a negative stride."""
    if any(s < 0 for s, n in zip(a.strides, a.shape) if n > 1):
        return None
    dims = _iterator_dims(a, tuple(range(a.ndim)))
    view = np.lib.stride_tricks.as_strided(a, [d[0] for d in reversed(dims)], [d[1] for d in reversed(dims)],
                                           writeable=False)
    squares = view.reshape(-1).astype(np.float64) - mean
    squares *= squares
    shape = [d[0] for d in dims]
    chunk, total = thread_chunk(a.size), 0.0
    for start in range(0, a.size, chunk):
        end = min(start + chunk, a.size)
        lengths = _loop_pieces(shape, start, end)
        if len(set(lengths)) == 1:  # (whole 2-D loops: one block each)
            sums = np.cumsum(squares[start:end].reshape(len(lengths), -1), axis=1)[:, -1]
        else:
            bounds = np.cumsum([start] + lengths)
            sums = [np.cumsum(squares[b:e])[-1] for b, e in zip(bounds[:-1], bounds[1:])]
        total += float(np.cumsum(np.concatenate([[0.0], sums]))[-1])  # (a cumulative sum adds in order)
    return total


# ---- the 16-bit batch-norm kernels' per-channel sums ------------------------------------------------------------
# ATen's bfloat16/float16 batch norm (batch_norm_kernel.cpp's *_internal<scalar_t, param_t>) sums each channel's
# terms in float32, in an order that shows in a float32 mean or variance (the "mixed" kernel, float32 parameters:
# autocast's) and now and then in a 16-bit one. Its kernels are REGISTER_DISPATCH'ed, so an AVX-512 CPU runs the AVX2
# build: a float vector holds 8 lanes and a 16-bit one 16 (two float vectors). Found with planted inputs (+-2^30
# among ones: what survives says where the two met), torch 2.13 on an Intel Xeon (AVX-512), all terms unfused.
_BATCH_NORM_LANES = 8


def _in_order_from_zero(steps):
    """``steps`` [k, ...] added one after another from +0 (NumPy's reduction over a leading axis adds row after row;
    the final ``+ 0`` makes an all -0 sum +0, as a sum that starts from 0)."""
    if not len(steps):
        return np.zeros(steps.shape[1:], np.float32)
    return np.add.reduce(steps, axis=0) + np.float32(0)


def _lanes_one_by_one(lanes):
    """``vec_reduce_all(op, v, size)``: lane 0, plus lane 1, plus lane 2, ... (a scalar loop, not a tree)."""
    total = lanes[..., 0]
    for lane in range(1, lanes.shape[-1]):
        total = total + lanes[..., lane]
    return total


def batch_norm_contiguous_sums(terms, times=None, fused_rest=True):
    """Each channel's sum of ``terms`` (float32 [N, C, S]: a contiguous batch's per-element terms, S the image), or
    with ``times`` (the same shape) of ``terms * times`` by fused multiply-adds (the backward's dot product: its
    build fuses that loop, not the statistics' squares), as ``batch_norm_cpu_collect_stats_contiguous_internal`` and
    the backward's add them: for each sample, each whole 16 of the image into 8 lanes (elements 0-7, then 8-15, each
    lane its own running sum across samples); the rest of each image (S % 16) into one scalar sum, sample after
    sample (``fused_rest``: by fused multiply-adds there too; measured: float16's scalar loop fuses, bfloat16's does
    not); the result is that scalar + the lanes added one by one."""
    n, c, s = terms.shape
    whole = s - s % (2 * _BATCH_NORM_LANES)

    def body(a):  # [steps, C, 8]: sample after sample, 8 elements a step
        return a[:, :, :whole].reshape(n, c, -1, _BATCH_NORM_LANES).transpose(0, 2, 1, 3).reshape(-1, c, _BATCH_NORM_LANES)

    def rest(a):  # [steps, C]: the elements after each image's whole 16s
        return a[:, :, whole:].transpose(0, 2, 1).reshape(-1, c)
    if times is None:
        return _in_order_from_zero(rest(terms)) + _lanes_one_by_one(_in_order_from_zero(body(terms)))
    scalar = _fused_in_order(rest(terms), rest(times)) if fused_rest else _in_order_from_zero(rest(terms * times))
    return scalar + _lanes_one_by_one(_fused_in_order(body(terms), body(times)))


def _fused_in_order(a, b):
    """``a[0] * b[0] + a[1] * b[1] + ...`` from +0, each step one fused multiply-add."""
    total = np.zeros(a.shape[1:], np.float32)
    for x, y in zip(a, b):
        total = float32_math.fused_multiply_add(np.ascontiguousarray(x), np.ascontiguousarray(y), total)
    return total


def batch_norm_channels_last_sums(rows, times=None, few_rows_serial=True):
    """Each column's sum of ``rows`` (float32 [M, C]: a channels-last batch, M = N * H * W), or with ``times`` of
    ``rows * times`` (var_sum: the centred rows times themselves; the backward's dot product), as the channels-last
    kernels (``batch_norm_cpu_collect_stats_channels_last_internal``, the backward's) add them: the rows cut into one
    chunk a thread (``at::parallel_for(0, M, 1)``), each chunk's rows added in order into its own float32 sums (a
    product by a fused multiply-add: its build fuses that loop, not the contiguous kernel's), the chunks' sums added
    in order from 0. The statistics kernel (``few_rows_serial``) adds no more rows than threads in one plain loop."""
    if len(rows) <= parallel.num_threads() and few_rows_serial:
        return _in_order_from_zero(rows if times is None else rows * times)
    chunk = thread_chunk(len(rows), grain=1)
    starts = range(0, len(rows), chunk)
    if times is None:
        parts = [_in_order_from_zero(rows[s:s + chunk]) for s in starts]
    else:
        parts = [fma_product_columns(rows[s:s + chunk], times[s:s + chunk]) for s in starts]
    return _in_order_from_zero(np.stack(parts))
