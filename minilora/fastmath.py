"""Fast math for the CPU: the formulas the ops state, computed in fewer passes over memory.

An op in ``minilora/ops`` says what it computes (``gelu(x) = x * Phi(x)``, ``silu(x) = x *
sigmoid(x)``, the mean of each row of ``a * b``) and calls the function here that computes it
quickly. Nothing here changes what is computed, only how: the tricks are

* **in-place ufunc chains**: a formula such as ``g * s * (1 + a * (1 - s))`` written as NumPy
  operators makes a new array per operator; written as ``out=`` calls and ``*=`` on one array it
  makes none, and each pass reads less memory;
* **cache-sized slices** (``device.cache_slices``): a chain of ~20 passes over a few thousand
  elements at a time keeps them in the CPU cache instead of streaming the whole array 20 times;
* **Abramowitz & Stegun 7.1.26** for ``erf`` in float32/float16: a rational approximation times
  ``exp(-z^2)``, |error| < 1.5e-7 (float32's own precision; PyTorch's CPU kernels use it too).
  float64 keeps the exact ``math.erf``, so gradient checks and interop tests see no approximation;
* **BLAS or ``einsum`` for row reductions**: the mean of each row of ``a * b`` as one ``einsum``
  (no ``a * b`` temporary), or, for a plain row mean, a matrix-vector product with ``1/width``;
  below ``parallel.MIN_ITEMS`` elements (decoding: a few rows) ``einsum``'s set-up costs more than
  the temporary, so the plain expression runs.

CuPy arrays run through the same functions with CuPy's operators (``erf`` from
``cupyx.scipy.special``, whole arrays instead of cache slices). The functions work on whatever block
``parallel.rows`` hands them, or on whole arrays.
"""
import math

import numpy as np

from . import float32_math, float32_sums, parallel
from .device import CHUNK, cache_slices, xp_of

__all__ = ["multiply_add", "erf", "normal_cdf_pdf", "gelu_and_derivative", "sigmoid_and_silu", "silu_backward",
           "swiglu", "swiglu_backward", "row_mean", "column_sum",
           "lane_sum"]


# ---- a fused multiply-add ------------------------------------------------------------------------
def multiply_add(a, b, c):
    """``a * b + c`` rounded once, as the FMA instruction of torch's float32 CPU kernels computes it
    (GCC fuses ``x * y + z`` in ATen's vectorized code: tanh's and SiLU's backward, softmax's sums).
    For float32 the product is exact in float64 and the sum is rounded from there (twice-rounded only
    in a tie of a tie, never seen in practice); float64 is fused too (``float32_math.fused_multiply_add64``:
    ATen's ``Vectorized<double>`` code is the same template). Both round twice, NumPy's ``a * b + c``, where
    torch's build fuses none (``float32_math.FUSED_MULTIPLY_ADD``: its "default" one) and for other dtypes."""
    dtype = getattr(b, "dtype", None)
    if dtype != np.float32 or not float32_math.FUSED_MULTIPLY_ADD:
        if dtype == np.float64 and float32_math.FUSED_MULTIPLY_ADD and type(b) is np.ndarray:
            return float32_math.fused_multiply_add64(a, b, c)
        return a * b + c
    if type(b) is np.ndarray:  # (before xp_of: a tiny tanh backward's whole cost is a few microseconds)
        return float32_math.fused_multiply_add(a, b, c)
    xp = xp_of(b)
    if xp is np:
        return float32_math.fused_multiply_add(a, b, c)
    return xp.add(xp.multiply(a, b, dtype=np.float64), c, dtype=np.float64).astype(np.float32)


# ---- erf and the normal distribution -------------------------------------------------------------
# Abramowitz & Stegun 7.1.26: for z >= 0, erfc(z) ~= t (a1 + a2 t + ... + a5 t^4) exp(-z^2) with
# t = 1 / (1 + p z); |error| < 1.5e-7, i.e. float32 precision (PyTorch's CPU kernels use it too).
_AS_P = 0.3275911
_AS_A = (0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429)  # a1 ... a5
_AS_NEG_HALF = tuple(-0.5 * a for a in _AS_A)  # the same, times -1/2: Horner yields -erfc/2 directly
_INV_SQRT_2PI = 1 / math.sqrt(2 * math.pi)


def _half_erf_of_abs(x, scale=1.0):
    """``(erf(|scale*x|) / 2, exp(-(scale*x)^2))`` by A&S 7.1.26, for a float32/float16 NumPy array.

    Every step works in place on one of the two results; constants are Python floats, so float32
    stays float32 (NumPy 2 promotion rules)."""
    gauss = np.square(x)
    gauss *= -scale * scale
    np.exp(gauss, out=gauss)
    k = 1 / (_AS_P * scale)
    t = np.abs(x)
    t += k
    np.divide(k, t, out=t)  # t = 1 / (1 + p |scale x|), written k / (k + |x|): one pass fewer
    half = t * _AS_NEG_HALF[4]  # -erfc/2 by Horner's rule: ((a5 t + a4) t + ...) t * gauss * -1/2
    for coef in _AS_NEG_HALF[3::-1]:
        half += coef
        half *= t
    half *= gauss
    half += 0.5  # erf/2 = 1/2 - erfc/2
    return half, gauss


def erf(x):
    """The error function of an array (float64: exact via ``math.erf``; float32/16: A&S 7.1.26;
    CuPy: ``cupyx.scipy.special.erf``)."""
    if xp_of(x) is not np:
        from cupyx.scipy.special import erf as cupy_erf
        return cupy_erf(x)
    if x.dtype == np.float64:  # exactness matters more than speed here: grad checks, interop tests
        return np.asarray(np.frompyfunc(math.erf, 1, 1)(x), dtype=np.float64)  # (0-d: a float, not an array)
    y, _ = _half_erf_of_abs(x)
    np.copysign(y, x, out=y)  # erf is odd
    y *= 2
    return y


def normal_cdf_pdf(x):
    """``(Phi(x), phi(x))``, the standard normal CDF ``(1 + erf(x / sqrt 2)) / 2`` and density
    ``exp(-x^2 / 2) / sqrt(2 pi)``, as two new arrays (in float32: sharing ``exp(-x^2/2)``)."""
    xp = xp_of(x)
    if xp is not np or x.dtype == np.float64:  # the exact erf
        pdf = xp.exp(-0.5 * x * x) * _INV_SQRT_2PI
        return 0.5 * (1 + erf(x * (1 / math.sqrt(2)))), pdf
    cdf, pdf = _half_erf_of_abs(x, scale=1 / math.sqrt(2))  # A&S's exp(-z^2) is phi * sqrt(2 pi)
    np.copysign(cdf, x, out=cdf)
    cdf += 0.5  # Phi(x) = (1 + erf(x / sqrt 2)) / 2
    pdf *= _INV_SQRT_2PI
    return cdf, pdf


def gelu_and_derivative(x, out, deriv=None):
    """Fill ``out = x * Phi(x)`` and (unless None) ``deriv = Phi(x) + x * phi(x)`` for flat arrays,
    a cache-sized slice at a time (~20 passes, each over data already in the cache)."""
    for xs, ys, ds in cache_slices(x, out, deriv, step=parallel.slice_elements()):
        cdf, pdf = normal_cdf_pdf(xs)
        xp_of(xs).multiply(xs, cdf, out=ys)
        if ds is not None:
            xp_of(xs).multiply(xs, pdf, out=ds)
            ds += cdf


# ---- sigmoid, SiLU, SwiGLU: in-place chains ------------------------------------------------------
def sigmoid_and_silu(a, s, out):
    """Fill ``s = sigmoid(a) = 1 / (1 + e^-a)`` and ``out = silu(a) = a / (1 + e^-a)``, in place: torch's
    formulas, with the array library's own ``exp`` (float32: NumPy's, not the SLEEF exp torch's kernel
    uses, so 17% of silu's elements would differ in the last bit: float32 NumPy arrays take
    ``float32_math.silu_and_sigmoid`` / ``swiglu`` instead; this runs for the other dtypes and CuPy).
    ``e^-a = inf`` gives 0 and -0, as torch."""
    xp = xp_of(a)
    xp.negative(a, out=s)
    with np.errstate(over="ignore"):
        xp.exp(s, out=s)
    s += 1
    xp.divide(a, s, out=out)
    xp.divide(1, s, out=s)


_ONE32, _ONE64 = np.array(1, np.float32), np.array(1, np.float64)


def silu_backward(g, a, s, gx):
    """Fill ``gx = (g * s) * (1 + a * (1 - s))`` (``g`` times the derivative of ``a * sigmoid(a)``,
    ``s = sigmoid(a)``), rounded as torch's silu_backward kernel: ``1 + a * (1 - s)`` is one fused
    multiply-add (float32: through float64, a cache-sized slice at a time; float64: C's fma). ``gx`` may be ``g``."""
    xp = xp_of(g)
    if gx.dtype == np.float64 and xp is np and float32_math.FUSED_MULTIPLY_ADD:  # (float64: fused as well)
        slope = float32_math.fused_multiply_add64(a, 1 - s, _ONE64)
        xp.multiply(g, s, out=gx)
        gx *= slope
        return
    if gx.dtype != np.float32 or xp is not np or not float32_math.FUSED_MULTIPLY_ADD:
        slope = 1 - s
        slope *= a
        slope += 1
        xp.multiply(g, s, out=gx)
        gx *= slope
        return
    if float32_math.silu_backward_natively(g, a, s, gx):  # (compiled: one pass, the same bits)
        return
    step = parallel.slice_elements()  # (beside another thread: longer calls, see parallel.SPLIT_SLICE)
    block = min(g.size, step or CHUNK)  # (scratch reused slice by slice: fresh arrays this size cost page faults)
    slope, wide = np.empty(block, np.float32), np.empty((2, block), np.float64)
    for gs, as_, ss, out in cache_slices(g, a, s, gx, step=step):
        slope_ = slope[:ss.size]
        np.subtract(_ONE32, ss, slope_)
        float32_math.fused_multiply_add_block(as_, slope_, _ONE64, slope_, wide)  # one rounding
        np.multiply(gs, ss, out=out)
        out *= slope_


def swiglu(gate, up, s, out):
    """Fill ``s = sigmoid(gate)`` and ``out = gate * s * up``, in place (float32 NumPy arrays: torch's bits
    by ``float32_math.swiglu`` instead)."""
    sigmoid_and_silu(gate, s, out)
    out *= up


def swiglu_backward(g, gate, up, s, dgate, dup=None):
    """Fill ``dup = g * gate * s`` (unless None) and ``dgate = (g * up) * s * (1 + gate * (1 - s))``."""
    if dup is not None:
        xp_of(g).multiply(gate, s, out=dup)
        dup *= g
    # torch's order for silu(gate) * up: mul's backward first (g * up), then silu's
    xp_of(g).multiply(g, up, out=dgate)
    silu_backward(dgate, gate, s, dgate)


# ---- reductions over rows and columns ------------------------------------------------------------
def row_mean(a, b=None):
    """``(a * b).mean(axis=1)`` of 2-D arrays (``a.mean(axis=1)`` without ``b``), without the
    temporary: a BLAS matrix-vector product with a vector of ``1/width``, or one ``einsum``."""
    xp = xp_of(a)
    scale = 1 / (a.shape[1] or 1)  # (rows of width 0: no rows either, see ops.nn._rows; nothing to divide)
    if b is None:
        return a @ xp.full(a.shape[1], scale, dtype=a.dtype)
    if a.size < parallel.MIN_ITEMS:  # a few rows (decoding): einsum's set-up costs more than the temporary
        return (a * b).sum(axis=1) * scale
    return xp.einsum("ij,ij->i", a, b) * scale


def column_sum(a, b=None):
    """``(a * b).sum(axis=0)`` of 2-D arrays (``a.sum(axis=0)`` without ``b``), without the
    temporary: a BLAS vector-matrix product with ones, or one ``einsum``."""
    xp = xp_of(a)
    if b is None:
        return xp.ones(a.shape[0], dtype=a.dtype) @ a
    return xp.einsum("ij,ij->j", a, b)


# ---- torch's vectorized row sum ------------------------------------------------------------------
def lane_sum(a, b=None, fuse_tail=False, lanes=None):
    """The sum of each row of C-contiguous float32 [rows, width] ``a`` (times ``b``, elementwise) as torch's
    ``vec::reduce_all`` / ``map2_reduce_all`` adds (softmax's and log_softmax's backward): one running sum
    per lane of torch's vector (``float32_math.FLOAT_LANES``: 16 with AVX-512, 8 with AVX2), lane ``j``
    taking elements ``j, j + lanes, ...`` in order (the last, partial block adds into its first lanes), then
    the lanes folded in halves (with 16: lanes ``j`` and ``j + 8``, then ``+ 4``, ``+ 2``, ``+ 1``;
    torch's "default" build adds them left to right); a row narrower than a vector is added left to
    right. Each product is rounded, but with ``fuse_tail`` those of the partial block, added by a fused
    multiply-add (torch's build does so when it runs on one thread, where it fuses at all). ``lanes``: another
    vector width (a kernel built for AVX2 only, as layer_norm's backward: 8 floats or 4 doubles). Only float32's lanes
    are folded in halves (ATen specialises ``vec_reduce_all`` for float alone): a float64 row's lanes are added left
    to right."""
    lane_count = lanes or float32_math.FLOAT_LANES
    if b is None and a.flags.c_contiguous and a.dtype == np.float32:
        compiled = float32_sums.compiled_lane_sums(a, lane_count)  # (the same additions in C, where it is built)
        if compiled is not None:
            return compiled
    products = a if b is None else a * b
    rows, width = a.shape
    if width < lane_count:
        return _left_to_right(products)
    full = width - width % lane_count
    blocks = products[:, :full].reshape(rows, full // lane_count, lane_count)
    lanes = np.add.reduce(blocks, axis=1)  # (a reduction over a middle axis: block after block, in order)
    tail = slice(full, width)
    if fuse_tail and b is not None and float32_math.FUSED_MULTIPLY_ADD:
        lanes[:, :width - full] = multiply_add(a[:, tail], b[:, tail], lanes[:, :width - full])
    else:
        lanes[:, :width - full] += products[:, tail]
    if float32_math.CPU_CAPABILITY == "default" or products.dtype != np.float32:
        return _left_to_right(lanes)  # (vec_reduce_all: lane 0 plus each next lane; only float's is folded in halves)
    while lanes.shape[1] > 1:
        half = lanes.shape[1] // 2
        lanes = lanes[:, :half] + lanes[:, half:]
    return lanes[:, 0]


def _left_to_right(columns):
    """The sum of each row of a 2-D array, its columns added one after another."""
    total = columns[:, 0].copy()
    for j in range(1, columns.shape[1]):
        total += columns[:, j]
    return total
