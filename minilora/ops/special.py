"""Special functions with gradients: ``torch.erfc``, ``erfinv``, ``lgamma``, ``digamma``, ``polygamma``,
``mvlgamma``, ``i0`` and the ``torch.special`` ones built on them (``ndtr``, ``ndtri``, ``log_ndtr``,
``entr``, ``i1``, ``erfcx`` ...).

SciPy is not a dependency, so the values come from NumPy and Python's ``math`` module: ``math.erfc``
applied elementwise, ``numpy.i0``, lgamma SLEEF's as torch's (``sleef_lgamma``), and for the rest the series
torch's own CPU kernels use (Cephes: digamma's asymptotic series after the recurrence to x >= 10, the Hurwitz zeta
function for polygamma, Newton steps for the inverses). Each is computed in float64 on the host and
rounded once to the input's dtype (16-bit inputs through float32, as torch's kernels), so float32
results agree with torch's to an ulp or two. On a GPU the array makes the round trip to the host:
these are not the ops a training step spends its time in.

Integer and bool inputs compute in the default float dtype, as torch's do.
"""
import math
from fractions import Fraction

import numpy as np

from .. import amp as _amp, dtypes, fastmath, float32_math, float32_sums, mkl_vml
from ..sleef_lgamma import sleef_lgamma
from ..device import holds_no_values, xp_of
from ..tensor import Function, Tensor, name_node, no_forward_formula, saves_as_torch
from . import elementwise as E
from .elementwise import _floating, _host_array, computes_in_float32
from .faddeeva import erfcx_as_torch

_SQRT_PI = math.sqrt(math.pi)
_SQRT_2 = math.sqrt(2.0)
_SQRT_2PI = math.sqrt(2 * math.pi)
_FRAC_SQRT_2 = 0.707106781186547524400844362104849039  # (c10::frac_sqrt_2: 1 / math.sqrt(2) is an ulp below)


def _elementwise(scalar_function):
    """A float64 array function from a ``math`` one (0-d in, 0-d array out)."""
    ufunc = np.frompyfunc(scalar_function, 1, 1)
    return lambda x: np.asarray(ufunc(x), dtype=np.float64)


def _lgamma_scalar(x):
    try:
        return math.lgamma(x)
    except (ValueError, OverflowError):  # the poles 0, -1, -2 ... and |x| past ~2.5e305: torch gives +inf
        return math.inf


erfc_f64 = _elementwise(math.erfc)
lgamma_f64 = _elementwise(_lgamma_scalar)


def torch_lgamma(x):
    """torch.lgamma of a float array, in its dtype: SLEEF's (``sleef_lgamma``), as torch's vectorized CPU kernel of
    float32 and float64 computes it (math.lgamma rounded once was an ulp off it in 1.8% of float32 elements, 0.8%
    of float64 ones); under torch's "default" build, C's lgamma in float64 rounded once, as before. 16-bit arrays
    through float32, as torch's kernel (all 65536 bfloat16 and float16 values: its float32 lgamma rounded)."""
    if x.dtype.itemsize == 2:
        return torch_lgamma(x.astype(np.float32)).astype(x.dtype)
    if float32_math.CPU_CAPABILITY != "default":
        return sleef_lgamma(x)
    return lgamma_f64(x).astype(x.dtype, copy=False)


# digamma's asymptotic series: sum over k of B_2k / (2k x^2k), highest power first (Cephes' A)
_PSI_SERIES = [float(Fraction(b) / (2 * k)) for k, b in reversed(list(enumerate(
    ["1/6", "-1/30", "1/42", "-1/30", "5/66", "-691/2730", "7/6"], start=1)))]
_PSI_10 = 2.25175258906672110764  # digamma(10)


def digamma_f64(x):
    """torch's calc_digamma, in the array's own precision (float32 arrays as torch's float kernel, whose
    recurrence rounds each step: its float32 digamma is a few ulps from the true value, and so is this):
    +-inf at -+0, nan at the negative integers, the reflection psi(x) = psi(1 - x) - pi / tan(pi x) for
    x < 0 (the tangent C's, in float64, of x's fractional part), then the recurrence up to x >= 10 and the
    asymptotic series (Horner's steps fused, C's log)."""
    x = np.array(x, dtype=x.dtype if getattr(x, "dtype", None) == np.float32 else np.float64)
    negative = x < 0
    with np.errstate(divide="ignore", invalid="ignore"):
        result = _digamma_nonnegative(np.where(negative, 1 - x, x))
        fraction = (x - np.trunc(x)).astype(np.float64)
        reflection = np.zeros(x.shape, x.dtype)  # (C's tan through ctypes: only where x < 0 needs it)
        reflection[negative] = (math.pi / c_math("tan", math.pi * fraction[negative])).astype(x.dtype)
        out = np.where(negative, result - reflection, result)
        out[negative & (fraction == 0)] = np.nan
        out[np.isneginf(x)] = np.nan
        zero = x == 0
        out[zero] = np.copysign(np.inf, -x[zero])
    return out


def _digamma_nonnegative(x):
    real = x.dtype.type
    result = np.zeros_like(x)
    x = x.copy()
    while True:
        small = x < 10
        if not small.any():
            break
        result[small] -= real(1) / x[small]
        x[small] += real(1)
    z = real(1) / (x * x)
    series = np.zeros_like(x)
    for coefficient in _PSI_SERIES:  # (Cephes' polevl: GCC fuses its result * z + A[i])
        series = fastmath.multiply_add(series, z, real(coefficient))
    series = np.where(x < 1e17, z * series, real(0))
    with np.errstate(divide="ignore", invalid="ignore"):
        log = c_math("log", np.where(np.isnan(x), real(1), x))
    return np.where(x == 10, result + real(_PSI_10), result + log - real(0.5) / x - series)


def c_math(name, x):
    """C's ``name`` (the double function; its ``f`` twin for a float32 array) of an array, as torch's scalar
    kernels call them: ``float32_math``'s compiled loop for the functions it has, else each element through ctypes."""
    x = np.asarray(x)
    single = x.dtype == np.float32
    native = float32_math.c_function if single else float32_math.c_function64
    try:
        return native(name + "f" if single else name, x).reshape(x.shape)
    except ValueError:  # (not among the compiled loop's functions)
        return _ctypes_math(name + "f" if single else name, x)


_LIBM = {}


def _ctypes_math(name, x):
    """C's ``name`` of each element of a float32 (``name`` is the ``f`` function) or float64 array, through ctypes."""
    if name not in _LIBM:
        import ctypes
        import ctypes.util
        function = getattr(ctypes.CDLL(ctypes.util.find_library("m")), name)
        real = ctypes.c_float if x.dtype == np.float32 else ctypes.c_double
        function.restype, function.argtypes = real, [real]
        _LIBM[name] = np.frompyfunc(function, 1, 1)
    if not x.size:
        return np.empty(x.shape, x.dtype)
    return np.asarray(_LIBM[name](x), dtype=x.dtype).reshape(x.shape)


# Hurwitz zeta's Euler-Maclaurin terms: (2i+2)! / B_(2i+2) (Cephes' A)
_ZETA_A = [float(math.factorial(2 * i + 2) / Fraction(b)) for i, b in enumerate(
    ["1/6", "-1/30", "1/42", "-1/30", "5/66", "-691/2730", "7/6", "-3617/510", "43867/798", "-174611/330",
     "854513/138", "-236364091/2730"])]
_MACHEP = 1.11022302462515654042e-16


def zeta_cephes(s, q, dtype=np.float64):
    """Hurwitz's zeta(s, q) = sum over k >= 0 of (k + q)^-s step for step as torch's ``zeta`` of ``dtype`` inputs
    (Cephes', in torch's accumulate type: double for float32 and float64, float for 16-bit): inf at s = 1 and at
    the poles q = 0, -1 ..., nan for s < 1; a direct sum until the terms' argument passes 9, then Euler-Maclaurin --
    each element stopping where its next term no longer moves the sum (``_MACHEP``), as the C loop returns there:
    summing on rounds differently (5% of float64 zeta's elements, 15% of float32's, and nearly every
    polygamma(n >= 2) were an ulp off torch's before). The powers are C's (NumPy's float64 power is an ulp off
    glibc's in 1 element of 20); the first, q^-s, of two floats is ``powf`` (torch's ``::pow(q, -x)`` picks that
    overload for float32 inputs: found by comparing outputs). Returns the accumulate type's values."""
    real = np.float32 if np.dtype(dtype).itemsize == 2 else np.float64
    s, q = (a.astype(real) for a in np.broadcast_arrays(np.asarray(s, np.float64), np.asarray(q, np.float64)))
    power = "pow" if real == np.float64 else "powf"
    result = np.full(s.shape, np.nan, real)
    with np.errstate(all="ignore"):
        answered = _zeta_special_cases(s, q, result)
        first = "pow" if dtype == np.float64 else "powf"
        total = float32_math.c_function2(first, q, -s).astype(real)
        a, term = q.copy(), np.zeros_like(total)
        steps, machep = 0, real(_MACHEP)
        while True:  # the direct sum: at least 9 terms, and until a passes 9
            stepping = ~answered & ((steps < 9) | (a <= 9))
            if not stepping.any():
                break
            steps += 1
            a[stepping] += real(1)
            term[stepping] = float32_math.c_function2(power, a[stepping], -s[stepping])
            total[stepping] += term[stepping]
            answered |= _settled(stepping & (-machep * total < term) & (term < machep * total), total, result)
        _zeta_euler_maclaurin(s, a, term, total, answered, result)
    return result


def _zeta_special_cases(s, q, result):
    """Fill torch's answers that come before any sum (Cephes tests s first: nan at s < 1 even at a pole q); the
    mask of the elements answered. The rest never step: -1e308 + 1 == -1e308 would step forever."""
    answers = [(s == 1, np.inf), (s < 1, np.nan), ((q <= 0) & (q == np.floor(q)), np.inf),
               ((q <= 0) & (s != np.floor(s)), np.nan)]
    answered = np.zeros(s.shape, bool)
    for where, value in answers:
        result[where & ~answered] = value
        answered |= where
    return answered


def _settled(where, total, result):
    """Elements whose sum is final: their results filled; the mask returned (for ``answered |= ...``)."""
    result[where] = total[where]
    return where


def _zeta_euler_maclaurin(s, w, term, total, answered, result):
    """Cephes' tail: ``total += term w / (s - 1) - term / 2``, then up to 12 Bernoulli terms, each element
    returning at the first term too small to move its sum (``result`` filled for every element not yet answered)."""
    real = total.dtype.type
    total += term * w / (s - real(1))
    total -= real(0.5) * term
    factor, k = np.ones_like(total), real(0)
    for coefficient in _ZETA_A:
        factor *= s + k
        term = term / w
        t = factor * term / real(coefficient)
        total = total + t
        answered |= _settled(~answered & (np.abs(t / total) < real(_MACHEP)), total, result)
        k += real(1)
        factor *= s + k
        term = term / w
        k += real(1)
    result[~answered] = total[~answered]


def _polygamma(n, x, dtype=None):
    """polygamma of a float32 or float64 array ``x`` in torch's own steps for ``dtype`` (default: x's; a 16-bit
    dtype's values come widened to float32): digamma and trigamma by their own kernels, n >= 2 by
    ``polygamma_in_steps``; any other dtype computes in float64."""
    dtype = np.dtype(dtype or x.dtype)
    if n < 2 or dtype not in (np.float32, np.float64) and dtype.itemsize != 2:
        return polygamma_f64(n, x if x.dtype in (np.float32, np.float64) else x.astype(np.float64))
    return polygamma_in_steps(n, x, dtype)


def polygamma_in_steps(n, x, dtype):
    """polygamma(n >= 2) as torch's ``calc_polygamma`` of ``dtype``: ``(sign * exp(lgamma(n + 1))) * zeta(n + 1, x)``,
    the factor by C's float functions (``expf(lgammaf(n + 1))``; for float64 the double ones), zeta in the
    accumulate type and rounded to ``dtype`` (``zeta_cephes``), the product in float (double)."""
    real = np.float64 if dtype == np.float64 else np.float32
    order = dtypes.cast(np.array(n + 1, real), dtype).astype(real)  # (BFloat16(n) + 1: rounded for n > 256)
    zeta = dtypes.cast(zeta_cephes(order, x, dtype), dtype).astype(real)
    factor = real(1 if n % 2 else -1) * c_math("exp", c_math("lgamma", order))
    return factor * zeta


def polygamma_f64(n, x):
    """The n-th derivative of digamma: (-1)^(n+1) n! zeta(n + 1, x) (torch's formula); n = 0 is digamma,
    n = 1 trigamma (torch's own series for it)."""
    if n == 0:
        return digamma_f64(x)
    if n == 1:
        return trigamma_f64(x)
    return polygamma_in_steps(n, np.asarray(x, np.float64), np.float64)


def trigamma_f64(x):
    """polygamma(1, x) as torch's trigamma, in the array's own precision: the reflection below 1/2 (C's sin), six
    steps of the recurrence, then the asymptotic series, its multiply-adds fused as GCC compiles them (at the
    negative integers sin(pi x) is not quite 0: large, finite)."""
    x = np.array(x, dtype=x.dtype if getattr(x, "dtype", None) == np.float32 else np.float64)
    real = x.dtype.type
    fma = fastmath.multiply_add
    with np.errstate(all="ignore"):
        reflect = x < 0.5
        sine = c_math("sin", real(math.pi) * x)
        result = np.where(reflect, -(real(math.pi) * real(math.pi)) / (sine * sine), real(0))
        x = np.where(reflect, real(1) - x, x)
        for _ in range(6):
            result = result + real(1) / (x * x)
            x = x + real(1)
        ixx = real(1) / (x * x)
        inner = fma(-ixx, np.full_like(x, real(1) / real(42)), real(1) / real(30))
        inner = fma(-ixx, inner, real(1) / real(6))
        tail = fma(ixx, inner, real(1) + real(1) / (real(2) * x))
        result = result + tail / x
        return np.where(reflect, -result, result)


# M. Giles, "Approximating the erfinv function" (GPU Computing Gems, 2011), highest power first
_GILES_CENTRAL = [2.81022636e-08, 3.43273939e-07, -3.5233877e-06, -4.39150654e-06, 0.00021858087,
                  -0.00125372503, -0.00417768164, 0.246640727, 1.50140941]
_GILES_TAIL = [-0.000200214257, 0.000100950558, 0.00134934322, -0.00367342844, 0.00573950773,
               -0.0076224613, 0.00943887047, 1.00167406, 2.83297682]


def erfinv_f64(y):
    """The inverse of erf: +-inf at +-1, nan outside [-1, 1] (``_inverse_erf``)."""
    y = np.array(y, dtype=np.float64)
    a = np.abs(y)
    with np.errstate(all="ignore"):
        x = _inverse_erf(a, 1 - a, np.log1p(-a))  # (1 - a: exact for a >= 1/2, where the tail is used)
        x = np.where(a == 1, np.inf, np.where((a > 1) | np.isnan(a), np.nan, x))
    return np.copysign(x, y)


def _inverse_erf(a, tail, log_tail):
    """x >= 0 with erf(x) = a, given also ``tail`` = 1 - a and its log (the caller's, accurate where a
    is near 1). Giles' single-precision approximation (or, far out, the leading terms of erfc's
    asymptotic series) and six Newton steps, quadratic: on ``erf(x) = a`` near 0, on
    ``log erfc(x) = log(tail)`` towards 1, where ``erf(x) - a`` would cancel."""
    central = a < 0.5
    w = -np.log(tail * (1 + a))
    giles = np.where(w < 5, np.polyval(_GILES_CENTRAL, w - 2.5), np.polyval(_GILES_TAIL, np.sqrt(w) - 3)) * a
    rough = np.sqrt(-log_tail)  # erfc(x) ~ exp(-x^2) / (x sqrt(pi)) for large x
    far = np.sqrt(-log_tail - np.log(rough * _SQRT_PI))
    x = np.where(w < 30, giles, far)
    for _ in range(6):
        density = 2 / _SQRT_PI * np.exp(-x * x)
        erfc = erfc_f64(x)
        x = np.where(central, x - (fastmath.erf(x) - a) / density, x + (np.log(erfc) - log_tail) * erfc / density)
    return x


def ndtri_f64(p):
    """The normal distribution's quantile, sqrt(2) erfinv(2p - 1); below p = 1/2 as -sqrt(2) times
    the inverse of erfc at 2p, from 2p itself (``2p - 1`` would round the lower tail away)."""
    p = np.array(p, dtype=np.float64)
    with np.errstate(all="ignore"):
        upper = p >= 0.5
        q = np.where(upper, 1 - p, p)  # (exact for p >= 1/2)
        z = 2 * q  # erfc's argument: ndtri(p) = -sqrt(2) erfcinv(2p)
        x = _SQRT_2 * _inverse_erf(1 - z, z, np.log(z))
        x = np.where(upper, x, -x)
        x = np.where(p == 0, -np.inf, np.where(p == 1, np.inf, x))
        x = np.where((p < 0) | (p > 1) | np.isnan(p), np.nan, x)
    return x


# Cephes' ndtri: rational approximations P/Q of the normal quantile around the middle (|p - 1/2| <= 3/8, in y^2) and
# of its tails in z = 1 / sqrt(-2 log y) (P1/Q1 for z above 1/8, P2/Q2 below), highest power first
_NDTRI_P0 = (-5.99633501014107895267E1, 9.80010754185999661536E1, -5.66762857469070293439E1,
             1.39312609387279679503E1, -1.23916583867381258016E0)
_NDTRI_Q0 = (1.0, 1.95448858338141759834E0, 4.67627912898881538453E0, 8.63602421390890590575E1,
             -2.25462687854119370527E2, 2.00260212380060660359E2, -8.20372256168333339912E1,
             1.59056225126211695515E1, -1.18331621121330003142E0)
_NDTRI_P1 = (4.05544892305962419923E0, 3.15251094599893866154E1, 5.71628192246421288162E1,
             4.40805073893200834700E1, 1.46849561928858024014E1, 2.18663306850790267539E0,
             -1.40256079171354495875E-1, -3.50424626827848203418E-2, -8.57456785154685413611E-4)
_NDTRI_Q1 = (1.0, 1.57799883256466749731E1, 4.53907635128879210584E1, 4.13172038254672030440E1,
             1.50425385692907503408E1, 2.50464946208309415979E0, -1.42182922854787788574E-1,
             -3.80806407691578277194E-2, -9.33259480895457427372E-4)
_NDTRI_P2 = (3.23774891776946035970E0, 6.91522889068984211695E0, 3.93881025292474443415E0,
             1.33303460815807542389E0, 2.01485389549179081538E-1, 1.23716634817820021358E-2,
             3.01581553508235416007E-4, 2.65806974686737550832E-6, 6.23974539184983293730E-9)
_NDTRI_Q2 = (1.0, 6.02427039364742014255E0, 3.67983563856160859403E0, 1.37702099489081330271E0,
             2.16236993594496635890E-1, 1.34204006088543189037E-2, 3.28014464682127739104E-4,
             2.89247864745380683936E-6, 6.79019408009981274425E-9)
_EXP_MINUS_2 = 0.13533528323661269189


def _polevl(x, coefficients):
    """Cephes' ``polevl`` in x's dtype: Horner's ``result * x + c``, which GCC fuses (``fastmath.multiply_add``)."""
    real = x.dtype.type
    result = np.full_like(x, real(coefficients[0]))
    for c in coefficients[1:]:
        result = fastmath.multiply_add(result, x, real(c))
    return result


def cephes_ndtri(p):
    """torch's ``calc_ndtri`` of a float32/float64 array, in its dtype: p above 1 - e^-2 reflected to 1 - p; the
    middle ``y + y (y^2 P0(y^2) / Q0(y^2)) sqrt(2 pi)`` with y = p - 1/2; the tails ``x - log(x) / x - z P(z) / Q(z)``
    with x = sqrt(-2 log y), z = 1/x (C's log), negated on the lower side."""
    real = p.dtype.type
    with np.errstate(all="ignore"):
        upper = p > real(1) - real(_EXP_MINUS_2)
        y = np.where(upper, real(1) - p, p)
        centred = y - real(0.5)
        square = centred * centred
        ratio = square * _polevl(square, _NDTRI_P0) / _polevl(square, _NDTRI_Q0)
        middle = fastmath.multiply_add(centred, ratio, centred) * real(2.50662827463100050242)
        # (ATen calls ::log and ::sqrt, C's double functions, even for a float: float32 rounds their result)
        wide = np.where(y > 0, y, real(1)).astype(np.float64)
        x = np.sqrt(-2.0 * c_math("log", wide)).astype(p.dtype)
        wide = x.astype(np.float64)
        x0 = (wide - c_math("log", np.where(wide > 0, wide, 1.0)) / wide).astype(p.dtype)
        z = real(1) / x
        near = x < real(8)
        tail = z * np.where(near, _polevl(z, _NDTRI_P1), _polevl(z, _NDTRI_P2)) / \
            np.where(near, _polevl(z, _NDTRI_Q1), _polevl(z, _NDTRI_Q2))
        tails = x0 - tail
        out = np.where(y > real(_EXP_MINUS_2), middle, np.where(upper, tails, -tails))
        out = np.where(p == 0, real(-np.inf), np.where(p == 1, real(np.inf), out))
        return np.where((p < 0) | (p > 1) | np.isnan(p), real(np.nan), out).astype(p.dtype, copy=False)


def log_ndtr_f64(x):
    """log of the normal CDF: log1p(-ndtr(-x)) above 0, log(erfc(-x / sqrt 2) / 2) below, and for
    x < -20 (where erfc heads for underflow) the asymptotic series of the Mills ratio."""
    x = np.array(x, dtype=np.float64)
    with np.errstate(all="ignore"):
        upper = np.log1p(-0.5 * erfc_f64(x / _SQRT_2))
        middle = np.log(0.5 * erfc_f64(-x / _SQRT_2))
        z = 1 / (x * x)
        series, term = np.ones_like(x), np.ones_like(x)
        for k in range(1, 12):
            term = term * -(2 * k - 1) * z
            series = series + term
        far = -0.5 * x * x - np.log(-x) - 0.5 * math.log(2 * math.pi) + np.log(series)
        return np.where(x > 0, upper, np.where(x < -20, far, middle))


def i1_f64(x):
    """The modified Bessel function I1: its power series sum (x/2)^(2k+1) / (k! (k+1)!) up to |x| = 30
    (positive terms, no cancellation), its asymptotic expansion beyond."""
    x = np.array(x, dtype=np.float64)
    ax = np.abs(x)
    with np.errstate(all="ignore"):
        half = ax / 2
        term = half.copy()
        series = term.copy()
        for k in range(1, 120):
            term = term * half * half / (k * (k + 1))
            series = series + term
        return np.copysign(np.where(ax <= 30, series, np.exp(ax) * _scaled_asymptotic(ax, 1)), x)


def _scaled_asymptotic(ax, order):
    """I_order(x) e^-x for large x: 1 / sqrt(2 pi x) times sum over k of (-1)^k prod_j (4 order^2 - (2j - 1)^2)
    / (k! (8x)^k) (its terms shrink until k ~ 2x: 30 of them are ample past x = 30)."""
    mu = 4.0 * order * order
    expansion, term = np.ones_like(ax), np.ones_like(ax)
    for k in range(1, 30):
        term = term * -(mu - (2 * k - 1) ** 2) / (k * 8 * ax)
        expansion = expansion + term
    return expansion / np.sqrt(2 * math.pi * ax)


def i0e_f64(x):
    """I0(x) e^-|x|: NumPy's i0 where it does not overflow, the asymptotic expansion beyond."""
    x = np.array(x, dtype=np.float64)
    ax = np.abs(x)
    with np.errstate(all="ignore"):
        return np.where(ax <= 700, np.i0(np.where(ax <= 700, x, 0)) * np.exp(-ax), _scaled_asymptotic(ax, 0))


def i1e_f64(x):
    """I1(x) e^-|x|."""
    x = np.array(x, dtype=np.float64)
    ax = np.abs(x)
    with np.errstate(all="ignore"):
        return np.where(ax <= 30, i1_f64(np.where(ax <= 30, x, 0)) * np.exp(-ax),
                        np.copysign(_scaled_asymptotic(ax, 1), x))


# ---- torch's Cephes i0 and i0e ------------------------------------------------------------------------
# Cephes' Chebyshev coefficients of exp(-x) I0(x) on [0, 8] (A) and of exp(-x) sqrt(x) I0(x) on (8, inf) (B), the
# tables ATen's Math.h (and NumPy's i0) evaluate; torch's float kernel rounds them to float32.
_I0E_A = (
    -4.4153416464793395e-18, 3.3307945188222384e-17, -2.431279846547955e-16, 1.715391285555133e-15,
    -1.1685332877993451e-14, 7.676185498604936e-14, -4.856446783111929e-13, 2.95505266312964e-12,
    -1.726826291441556e-11, 9.675809035373237e-11, -5.189795601635263e-10, 2.6598237246823866e-09,
    -1.300025009986248e-08, 6.046995022541919e-08, -2.670793853940612e-07, 1.1173875391201037e-06,
    -4.4167383584587505e-06, 1.6448448070728896e-05, -5.754195010082104e-05, 0.00018850288509584165,
    -0.0005763755745385824, 0.0016394756169413357, -0.004324309995050576, 0.010546460394594998,
    -0.02373741480589947, 0.04930528423967071, -0.09490109704804764, 0.17162090152220877, -0.3046826723431984,
    0.6767952744094761,)
_I0E_B = (
    -7.233180487874754e-18, -4.830504485944182e-18, 4.46562142029676e-17, 3.461222867697461e-17,
    -2.8276239805165836e-16, -3.425485619677219e-16, 1.7725601330565263e-15, 3.8116806693526224e-15,
    -9.554846698828307e-15, -4.150569347287222e-14, 1.54008621752141e-14, 3.8527783827421426e-13,
    7.180124451383666e-13, -1.7941785315068062e-12, -1.3215811840447713e-11, -3.1499165279632416e-11,
    1.1889147107846439e-11, 4.94060238822497e-10, 3.3962320257083865e-09, 2.266668990498178e-08,
    2.0489185894690638e-07, 2.8913705208347567e-06, 6.889758346916825e-05, 0.0033691164782556943,
    0.8044904110141088,)


# Cephes' Chebyshev coefficients of exp(-x) I1(x) / x on [0, 8] (A) and of exp(-x) sqrt(x) I1(x) on (8, inf) (B), as
# Cephes prints them; torch's float kernel keeps only the last 17 of A and 7 of B (``_I1E_FLOAT_TERMS``).
_I1E_A = (
    2.77791411276104639959E-18, -2.11142121435816608115E-17, 1.55363195773620046921E-16,
    -1.10559694773538630805E-15, 7.60068429473540693410E-15, -5.04218550472791168711E-14,
    3.22379336594557470981E-13, -1.98397439776494371520E-12, 1.17361862988909016308E-11,
    -6.66348972350202774223E-11, 3.62559028155211703701E-10, -1.88724975172282928790E-9,
    9.38153738649577178388E-9, -4.44505912879632808065E-8, 2.00329475355213526229E-7,
    -8.56872026469545474066E-7, 3.47025130813767847674E-6, -1.32731636560394358279E-5,
    4.78156510755005422638E-5, -1.61760815825896745588E-4, 5.12285956168575772895E-4,
    -1.51357245063125314899E-3, 4.15642294431288815669E-3, -1.05640848946261981558E-2,
    2.47264490306265168283E-2, -5.29459812080949914269E-2, 1.02643658689847095384E-1,
    -1.76416518357834055153E-1, 2.52587186443633654823E-1,)
_I1E_B = (
    7.51729631084210481353E-18, 4.41434832307170791151E-18, -4.65030536848935832153E-17,
    -3.20952592199342395980E-17, 2.96262899764595013876E-16, 3.30820231092092828324E-16,
    -1.88035477551078244854E-15, -3.81440307243700780478E-15, 1.04202769841288027642E-14,
    4.27244001671195135429E-14, -2.10154184277266431302E-14, -4.08355111109219731823E-13,
    -7.19855177624590851209E-13, 2.03562854414708950722E-12, 1.41258074366137813316E-11,
    3.25260358301548823856E-11, -1.89749581235054123450E-11, -5.58974346219658380687E-10,
    -3.83538038596423702205E-9, -2.63146884688951950684E-8, -2.51223623787020892529E-7,
    -3.88256480887769039346E-6, -1.10588938762623716291E-4, -9.76109749136146840777E-3,
    7.78576235018280120474E-1,)
_I1E_FLOAT_TERMS = (17, 7)  # (float32 cannot hold the smaller terms' contribution: ATen's float tables drop them)


def _chebyshev_series(x, coefficients):
    """Cephes' ``chbevl`` as torch's kernels run it in ``x``'s dtype: ``b0 = x b1 - b2 + c``, whose ``x b1 - b2``
    GCC fuses (``fastmath.multiply_add``), then ``0.5 (b0 - b2)``."""
    real = x.dtype.type
    b0, b1, b2 = np.full_like(x, real(coefficients[0])), np.zeros_like(x), np.zeros_like(x)
    for c in coefficients[1:]:
        b2, b1 = b1, b0
        b0 = fastmath.multiply_add(x, b1, -b2) + real(c)
    return real(0.5) * (b0 - b2)


def _c_exp(x):
    """C's exp of the dtype (``expf`` / ``exp``), which torch's scalar Bessel kernels call (``std::exp``)."""
    exp = float32_math.c_function("expf", x) if x.dtype == np.float32 else float32_math.c_function64("exp", x)
    return exp.reshape(x.shape)  # (a 0-d x comes back 1-d)


def cephes_i0(a, scaled=False):
    """torch's CPU ``calc_i0`` (``calc_i0e`` with ``scaled``) of a float32 or float64 array, in its dtype: ``|x| <=
    8``: ``exp(x) chbevl(x / 2 - 2, A)``, beyond ``exp(x) chbevl(32 / x - 2, B) / sqrt(x)`` (exp C's, of the dtype)."""
    real = a.dtype.type
    x = np.abs(a)
    with np.errstate(all="ignore"):
        near = _chebyshev_series(x / real(2) - real(2), _I0E_A)
        far = _chebyshev_series(real(32) / x - real(2), _I0E_B)
        if not scaled:  # (exp(x) chbevl(...) / sqrt(x): the product first)
            exp = _c_exp(x)
            near, far = exp * near, exp * far
        return np.where(x <= real(8), near, far / np.sqrt(x))


def cephes_i1(a, scaled=False):
    """torch's CPU ``calc_i1`` (``calc_i1e`` with ``scaled``), as ``cephes_i0``: ``|x| <= 8``: ``exp(x) x chbevl(x / 2 -
    2, A)`` (``chbevl(...) x`` scaled), beyond ``exp(x) chbevl(32 / x - 2, B) / sqrt(x)``; odd, the sign put back last."""
    real = a.dtype.type
    near_terms, far_terms = (_I1E_A, _I1E_B) if a.dtype == np.float64 else \
        (_I1E_A[-_I1E_FLOAT_TERMS[0]:], _I1E_B[-_I1E_FLOAT_TERMS[1]:])
    x = np.abs(a)
    with np.errstate(all="ignore"):
        near = _chebyshev_series(x / real(2) - real(2), near_terms)
        far = _chebyshev_series(real(32) / x - real(2), far_terms)
        if scaled:
            near = near * x
        else:  # (exp(x) x chbevl(...), left to right)
            exp = _c_exp(x)
            near, far = exp * x * near, exp * far
        out = np.where(x <= real(8), near, far / np.sqrt(x))
        return np.where(a < 0, -out, out)


def _cephes_runs(a):
    """Is ``a`` a float32/float64 NumPy array, whose values torch's CPU kernels' own steps give here? (Not a meta
    one: no values, and the composed graph's shapes are the result's.)"""
    return type(a) is np.ndarray and a.dtype in (np.float32, np.float64) and not holds_no_values(a)


# ---- the ops --------------------------------------------------------------------------------------
def _on_host(f64, a, *, own_precision=False):
    """``f64`` of ``a`` on the host in float64 (or, ``own_precision``, in a's float32 as torch's float
    kernel computes), rounded to a's dtype, back on a's device."""
    host = _host_array(a)
    out = f64(host if own_precision else host.astype(np.float64)).astype(a.dtype, copy=False)
    return xp_of(a).asarray(out)


def _torch_exp(x):
    """torch.exp of an array (the exp op of a gradient formula): MKL's (VML) where MKL is loaded, as the exp op's
    (``float32_math.vml``: float64 too -- glibc's exp here was off torch's in ~4.5% of igamma's float64
    gradients); without MKL float32's correctly rounded value and float64's glibc exp (NumPy's own float64 exp is
    off torch's in ~5%)."""
    if type(x) is np.ndarray and x.dtype == np.float64 and not mkl_vml.applies("exp", x):
        with np.errstate(over="ignore"):
            return float32_math.c_function64("exp", x).reshape(x.shape)
    return float32_math.vml("exp", x)


def _gaussian_scaled(ctx, constant, exponent):
    """``constant * exp(exponent)`` as torch's erf-family gradients compute it: the exponent (a square: one
    op), its exp (MKL's in torch: ``_torch_exp``) and the product each one tensor op, rounded under a 16-bit gradient."""
    return E._step(ctx, constant * E._step(ctx, _torch_exp(E._step(ctx, exponent))))


@computes_in_float32
class Erfc(Function):
    @staticmethod
    def forward(ctx, a):
        ctx.a = a
        in_mkl = mkl_vml.compute("erfc", a)  # (float32/float64: torch's MKL erfc, where MKL is loaded)
        return _on_host(erfc_f64, a) if in_mkl is None else in_mkl

    @staticmethod
    def backward(ctx, g):  # torch's -2.0 / sqrt(M_PI) * exp(-(self.pow(2))) * grad, in that order
        return _gaussian_scaled(ctx, -2 / _SQRT_PI, -ctx.a * ctx.a) * g


@computes_in_float32
class Erfinv(Function):
    @staticmethod
    def forward(ctx, a):
        in_mkl = mkl_vml.compute("erfinv", a)  # (float32/float64: torch's MKL erfinv, where MKL is loaded)
        ctx.out = _on_host(erfinv_f64, a) if in_mkl is None else in_mkl
        return ctx.out

    @staticmethod
    def backward(ctx, g):  # torch's 0.5 * sqrt(M_PI) * exp(self.erfinv().pow(2)) * grad, in that order
        return _gaussian_scaled(ctx, 0.5 * _SQRT_PI, ctx.out * ctx.out) * g


@computes_in_float32
class Lgamma(Function):
    @staticmethod
    def forward(ctx, a):
        ctx.a = a
        return _on_host(torch_lgamma, a, own_precision=True)

    @staticmethod
    def backward(ctx, g):
        return g * _on_host(digamma_f64, ctx.a, own_precision=True)


@computes_in_float32
class Polygamma(Function):
    """``polygamma(n, x)`` (n = 0 is digamma); its derivative is polygamma(n + 1, x)."""

    @staticmethod
    def forward(ctx, a, n):
        ctx.a, ctx.n = a, n
        dtype = getattr(getattr(ctx, "sixteen_bit_input", None), "dtype", a.dtype)  # (computes_in_float32's)
        return _on_host(lambda x: _polygamma(n, x, dtype), a, own_precision=True)

    @staticmethod
    def backward(ctx, g):
        return g * _on_host(lambda x: _polygamma(ctx.n + 1, x), ctx.a, own_precision=True), None


def _bessel(a, order, scaled=False):
    """I0 / I1 (``order``; times e^-|x| with ``scaled``) of an array as torch's CPU kernel gives it: its Cephes
    series for float32/float64 (a GPU array's on the host, so both devices agree), else float64 on the host
    rounded to a's dtype."""
    if a.dtype in (np.float32, np.float64):
        series = cephes_i1 if order else cephes_i0
        return xp_of(a).asarray(series(_host_array(a), scaled=scaled))
    f64 = {(0, False): np.i0, (1, False): i1_f64, (0, True): i0e_f64, (1, True): i1e_f64}[order, scaled]
    return _on_host(f64, a)


def _safe_reciprocal_slope(ctx, g, lead, shift):
    """torch's i1_backward / i1e_backward: ``x`` replaced by eps where ``|x| <= eps`` (``safe``), ``lead(safe) - out
    * shift(safe)``, and 1/2 (the limit at 0) where x was that small; each step one tensor op of a's dtype."""
    xp, a = xp_of(g), ctx.a
    eps = np.finfo(a.dtype).eps
    not_tiny = xp.abs(a) > eps
    safe = xp.where(not_tiny, a, a.dtype.type(eps))
    with np.errstate(divide="ignore", invalid="ignore"):
        slope = E._step(ctx, lead(safe) - E._step(ctx, ctx.out * E._step(ctx, shift(safe))))
    return g * xp.where(not_tiny, slope, a.dtype.type(0.5))


def _reciprocal(x):
    return x.dtype.type(1) / x


@computes_in_float32
class I0(Function):
    @staticmethod
    def forward(ctx, a):
        ctx.a = a
        return _bessel(a, 0)

    @staticmethod
    def backward(ctx, g):  # torch's grad * at::special_i1(self)
        return g * _bessel(ctx.a, 1)


@computes_in_float32
class I1(Function):
    """I1's derivative is I0(x) - I1(x) / x (1/2 at 0: torch's i1_backward)."""

    @staticmethod
    def forward(ctx, a):
        ctx.a = a
        ctx.out = _bessel(a, 1)
        return ctx.out

    @staticmethod
    def backward(ctx, g):
        return _safe_reciprocal_slope(ctx, g, lambda x: _bessel(x, 0), _reciprocal)


@computes_in_float32
class I0e(Function):
    """I0(x) e^-|x|; derivative i1e(x) - sign(x) i0e(x)."""

    @staticmethod
    def forward(ctx, a):
        ctx.a = a
        ctx.out = _bessel(a, 0, scaled=True)
        return ctx.out

    @staticmethod
    def backward(ctx, g):  # torch's grad * (at::special_i1e(self) - self.sgn() * result)
        sign_times_out = E._step(ctx, xp_of(g).sign(ctx.a) * ctx.out)
        return g * E._step(ctx, _bessel(ctx.a, 1, scaled=True) - sign_times_out)


@computes_in_float32
class I1e(Function):
    """I1(x) e^-|x|; derivative i0e(x) - i1e(x) (sign(x) + 1/x), 1/2 at 0 (torch's i1e_backward)."""

    @staticmethod
    def forward(ctx, a):
        ctx.a = a
        ctx.out = _bessel(a, 1, scaled=True)
        return ctx.out

    @staticmethod
    def backward(ctx, g):
        return _safe_reciprocal_slope(ctx, g, lambda x: _bessel(x, 0, scaled=True),
                                      lambda x: xp_of(x).sign(x) + _reciprocal(x))


class Zeta(Function):
    """Hurwitz's zeta(x, q); torch's derivative for q, -x zeta(x + 1, q), and none for x."""

    @staticmethod
    def forward(ctx, x, q):
        ctx.x, ctx.q = x, q
        host = zeta_cephes(_host_array(x), _host_array(q), x.dtype).astype(x.dtype, copy=False)
        return xp_of(x).asarray(host)

    @staticmethod
    def backward(ctx, g):
        if ctx.needs_input_grad[0]:
            raise NotImplementedError("the derivative for 'zeta' is not implemented.")
        x, q = ctx.x, ctx.q
        shifted = xp_of(g).asarray(zeta_cephes(_host_array(x) + 1, _host_array(q), x.dtype).astype(x.dtype, copy=False))
        return None, E.unbroadcast(g * -x * shifted, q.shape)


@computes_in_float32
class Ndtri(Function):
    @staticmethod
    def forward(ctx, a):
        if a.dtype in (np.float32, np.float64):
            ctx.out = xp_of(a).asarray(cephes_ndtri(_host_array(a)))
        else:
            ctx.out = _on_host(ndtri_f64, a)
        return ctx.out

    @staticmethod
    def backward(ctx, g):  # torch's grad * std::sqrt(2 * M_PI) * (result.square() / 2).exp(), in that order
        real = g.dtype.type
        return (g * real(_SQRT_2PI)) * _torch_exp(ctx.out * ctx.out / real(2))


@computes_in_float32
class LogNdtr(Function):
    @staticmethod
    def forward(ctx, a):
        ctx.a = a
        if a.dtype in (np.float32, np.float64):
            ctx.out = xp_of(a).asarray(_log_ndtr_as_torch(_host_array(a)))
        else:
            ctx.out = _on_host(log_ndtr_f64, a)
        return ctx.out

    @staticmethod
    def backward(ctx, g):  # torch's grad / std::sqrt(2 * M_PI) * (result + self.pow(2) / 2).neg().exp(), in that order
        real, a = g.dtype.type, ctx.a
        return (g / real(_SQRT_2PI)) * _torch_exp(-(ctx.out + a * a / real(2)))


@computes_in_float32
class Erfcx(Function):
    @staticmethod
    def forward(ctx, a):
        ctx.a = a
        ctx.out = xp_of(a).asarray(erfcx_as_torch(_host_array(a)))
        return ctx.out

    @staticmethod
    def backward(ctx, g):  # torch's (2.0 * self * result - 2.0 / sqrt(M_PI)) * grad, in that order
        real = g.dtype.type
        return (real(2) * ctx.a * ctx.out - real(2 / _SQRT_PI)) * g


def _log_ndtr_as_torch(x):
    """torch's ``calc_log_ndtr`` of a float32/float64 array, in its dtype, with t = x / sqrt 2: from -1 up
    ``log1p(-erfc(t) / 2)`` (C's erfc and log1p); below, where erfc(-t) would underflow, ``log(erfcx(-t) / 2) - t^2``
    (Johnson's erfcx as ATen's, ``faddeeva.erfcx_as_torch``; C's log)."""
    real = x.dtype.type
    t = x * real(_FRAC_SQRT_2)
    with np.errstate(all="ignore"):
        upper = c_math("log1p", -c_math("erfc", t) / real(2))
        lower = c_math("log", erfcx_as_torch(-t) / real(2)) - t * t
    return np.where(x < real(-1), lower, upper)


def erfc(input):
    """``torch.erfc``: ``1 - erf(x)`` without the cancellation (erfc(10) is 2.1e-45, not 0)."""
    dtypes.refuse_complex("erfc_vml_cpu", input)
    return name_node(Erfc.apply(_floating(input)), "ErfcBackward0", input)


@_amp.autocasts  # (on torch's CUDA float32 list)
def erfinv(input):
    """``torch.erfinv``: the inverse of erf on [-1, 1] (+-inf at +-1, nan outside)."""
    dtypes.refuse_complex("erfinv_vml_cpu", input)
    result = name_node(Erfinv.apply(_floating(input)), "ErfinvBackward0", input)
    return saves_as_torch(result, input)  # (torch's formula re-derives erfinv from self: it keeps self)


def lgamma(input):
    """``torch.lgamma``: log |Gamma(x)| (+inf at the poles 0, -1, -2 ...)."""
    dtypes.refuse_complex("lgamma_vml_cpu", input)
    return name_node(Lgamma.apply(_floating(input)), "LgammaBackward0", input)


def digamma(input):
    """``torch.digamma``: d/dx lgamma(x) (-inf at +0, nan at the negative integers)."""
    dtypes.refuse_complex("digamma", input)
    return name_node(Polygamma.apply(_floating(input), 0), "DigammaBackward0", input)


def polygamma(n, input):
    """``torch.polygamma(n, x)``: the n-th derivative of digamma; n a non-negative int."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise TypeError(f"polygamma(): argument 'n' (position 1) must be int, not {type(n).__name__}")
    if n < 0:
        raise RuntimeError("polygamma(n, x) does not support negative n.")
    dtypes.refuse_complex({0: "digamma", 1: "trigamma"}.get(n, "polygamma"), input)  # (torch's kernel for n)
    return name_node(Polygamma.apply(_floating(input), int(n)), "PolygammaBackward0", input)


def mvlgamma(input, p):
    """``torch.mvlgamma(x, p)``: the multivariate log-gamma, sum over i < p of lgamma(x - i/2) plus
    p (p - 1) / 4 log(pi). (Elements up to (p - 1) / 2 are outside its domain; torch 2.13 computes the
    sum there too, with no check, and so does this.)"""
    if isinstance(p, bool) or not isinstance(p, (int, np.integer)):
        raise TypeError(f"mvlgamma(): argument 'p' (position 2) must be int, not {type(p).__name__}")
    if p < 1:
        raise RuntimeError("p has to be greater than or equal to 1")
    if input.dtype == np.bool_:  # (torch's check: lgamma of False and True would answer)
        raise RuntimeError("The input tensor may not be a boolean tensor.")
    if input.dtype.kind == "c":  # (torch's sum runs over an arange in the input's dtype, which has no complex kernel)
        raise NotImplementedError(f"\"arange_cpu\" not implemented for '{dtypes.torch_name(input.dtype)}'")
    x = _floating(input)
    total = lgamma(x)
    for i in range(1, p):
        total = E.add(total, lgamma(E.sub(x, i / 2)))
    total = total.contiguous()  # (torch's sum over a new last dimension: contiguous whatever the input's layout)
    constant = p * (p - 1) / 4 * math.log(math.pi)
    values = E.add(total, constant)
    if _cephes_runs(x._array):  # torch's order of additions, and its gradient (the composed graph stays for
        from .nn import KernelGradients  # create_graph)
        arguments = _mvlgamma_arguments(x._array, p)
        values = KernelGradients.apply(values, x, None, None, values=_mvlgamma_as_torch(arguments, constant),
                                       gradients=_mvlgamma_gradients(arguments))
    return saves_as_torch(name_node(values, "MvlgammaBackward0", input), input)  # (torch's node keeps self)


def _mvlgamma_arguments(x, p):
    """ATen's ``arange(-p / 2 + 1/2, 1/2, 1/2) + x.unsqueeze(-1)``: x - (p - 1)/2, ..., x - 1/2, x along a new last
    dimension, in x's dtype."""
    steps = np.arange(-p / 2 + 0.5, 0.5, 0.5).astype(x.dtype)
    return steps + x[..., None]


def _mvlgamma_as_torch(arguments, constant):
    """torch's ``lgamma_(arguments).sum(-1).add_(constant)``, its sum in torch's order (``float32_sums``)."""
    real = arguments.dtype.type
    summed = float32_sums.torch_order_sum(torch_lgamma(arguments), (arguments.ndim - 1,))
    return np.asarray(summed + real(constant), arguments.dtype)


def _mvlgamma_gradients(arguments):
    """derivatives.yaml's ``mvlgamma_backward``: ``grad * digamma_(arguments).sum(-1)``, for ``KernelGradients``."""
    def gradients(g, needs):
        summed = float32_sums.torch_order_sum(digamma_f64(arguments), (arguments.ndim - 1,))
        return (g * np.asarray(summed, arguments.dtype) if needs[0] else None), None, None
    return gradients


def i0(input):
    """``torch.i0``: the modified Bessel function of the first kind, order 0 (gradient i1)."""
    dtypes.refuse_complex("i0_vml_cpu", input)
    return name_node(I0.apply(_floating(input)), "I0Backward0", input)


def i1(input):
    """``torch.special.i1``: order 1."""
    dtypes.refuse_complex("i1_cpu", input)
    result = name_node(I1.apply(_floating(input)), "SpecialI1Backward0", input)
    return saves_as_torch(result, input, result)  # (torch's i1_backward reads both)


def i0e(input):
    """``torch.special.i0e``: I0(x) e^-|x| (finite where I0 overflows)."""
    dtypes.refuse_complex("i0e_cpu", input)
    return name_node(I0e.apply(_floating(input)), "SpecialI0EBackward0", input)


def i1e(input):
    """``torch.special.i1e``: I1(x) e^-|x|."""
    dtypes.refuse_complex("i1e_cpu", input)
    return name_node(I1e.apply(_floating(input)), "SpecialI1EBackward0", input)


def zeta(input, other):
    """``torch.special.zeta(x, q)``: Hurwitz's zeta function, sum over k >= 0 of (k + q)^-x; either
    may be a number (integers compute in the default float dtype)."""
    no_forward_formula("special_zeta", input, other)
    x, q = _two_tensors(input, other)
    _no_16bit("zeta", x)  # (torch's zeta kernel: float32 and float64 only)
    return name_node(Zeta.apply(x, q), "SpecialZetaBackward0", input, other)


def ndtr(input):
    """``torch.special.ndtr``: the standard normal CDF by torch's formula (1 + erf(x / sqrt 2)) / 2, whose
    lower tail cancels (float32 ndtr(-6.9) is 0; ``log_ndtr`` keeps the tail's digits)."""
    x = _floating(input)  # (ATen's (1 + erf(x * M_SQRT1_2)) * 0.5: Tensor-Scalar nodes, E.aten_scalar)
    scaled = E.aten_scalar(E.mul(x, _FRAC_SQRT_2), x)  # (M_SQRT1_2: 1 / sqrt(2) rounds an ulp lower)
    erf = E.erf(scaled)
    shifted = E.aten_scalar(E.add(erf, 1), erf)
    return E.aten_scalar(E.mul(shifted, 0.5), shifted)


def _no_16bit(name, input):
    """torch's CPU kernels of ndtri, log_ndtr and erfcx take float32 and float64 only (no complex, no 16-bit)."""
    dtypes.refuse_complex(f"{name}_cpu", input)
    if input.dtype.itemsize == 2 and input.dtype.kind in "fV":
        raise NotImplementedError(f"\"{name}_cpu\" not implemented for '{dtypes.torch_name(input.dtype)}'")


def ndtri(input):
    """``torch.special.ndtri``: the standard normal quantile (the inverse of ndtr)."""
    _no_16bit("ndtri", input)
    return name_node(Ndtri.apply(_floating(input)), "SpecialNdtriBackward0", input)


def log_ndtr(input):
    """``torch.special.log_ndtr``: log of the normal CDF, accurate far into the lower tail."""
    _no_16bit("log_ndtr", input)
    return name_node(LogNdtr.apply(_floating(input)), "SpecialLogNdtrBackward0", input)


def erfcx(input):
    """``torch.special.erfcx``: the scaled complementary error function exp(x^2) erfc(x), finite where erfc
    underflows (erfcx(30) is 0.0188; inf below -26.7)."""
    _no_16bit("erfcx", input)
    return name_node(Erfcx.apply(_floating(input)), "SpecialErfcxBackward0", input)


def entr(input):
    """``torch.special.entr``: -x ln x for x > 0, 0 at 0, -inf below (the terms of an entropy)."""
    dtypes.refuse_complex("entr_cpu", input)
    x = _floating(input)
    positive = x > 0
    safe = E.where(positive, x, E.add(E.mul(x, 0), 1))  # (no log of 0 or of a negative in the graph)
    values = E.neg(E.mul(safe, E.log(safe)))
    values = E.where(positive, values, E.where(x == 0, E.mul(E.abs(x), 0), E.add(E.mul(x, 0), -math.inf)))  # (+0 at
    # -0, as torch's)
    values = E.where(E.isnan(x), x, values)
    a = x._array
    if _cephes_runs(a) or (type(a) is np.ndarray and E._is_16bit_float(a) and not holds_no_values(a)):
        from .nn import KernelGradients  # (torch's derivative, grad * (-(1 + log(x))), handed to x; the composed
        values = KernelGradients.apply(values, x, None, None, values=_entr_as_torch(a),  # graph stays for
                                       gradients=_entr_gradients(a))  # create_graph)
    return saves_as_torch(name_node(values, "SpecialEntrBackward0", input), input)  # (torch's node keeps self)


def _entr_as_torch(x):
    """torch's scalar entr kernel on a NumPy array: ``-x * log(x)`` with C's log (``logf``) for x > 0, 0 at 0, -inf
    below (a 16-bit -inf too, where the composed ops' ``x * 0 - inf`` is nan), nan kept."""
    positive = x > 0
    safe = np.where(positive, x, x.dtype.type(1))
    if x.itemsize == 2:  # (16-bit: its log a 16-bit number, then the product rounded: c10's Half arithmetic)
        log = float32_math.c_function("logf", safe.astype(np.float32)).astype(x.dtype)
        product = (-x.astype(np.float32) * log.reshape(x.shape).astype(np.float32)).astype(x.dtype)
    else:
        log = float32_math.c_function("logf", safe) if x.dtype == np.float32 else \
            float32_math.c_function64("log", safe)
        product = -x * log.reshape(x.shape)
    values = np.where(positive, product, np.where(x == 0, x.dtype.type(0), x.dtype.type(-np.inf)))
    return np.where(np.isnan(x), x, values)


def _entr_gradients(x):
    """derivatives.yaml's entr gradient, ``g * (-(1 + log(x)))`` (torch's log: ``float32_math.vml``), a function of
    (g, needs) for ``KernelGradients``."""
    def gradients(g, needs):
        if not needs[0]:
            return None, None, None
        with np.errstate(all="ignore"):
            if x.itemsize == 2:  # (16-bit: torch's log, 1 +, neg and product each a 16-bit tensor op, rounded)
                step = lambda v: v.astype(x.dtype).astype(np.float32)  # noqa: E731
                factor = -step(1 + step(np.log(x.astype(np.float32))))
                return (g.astype(np.float32) * factor).astype(x.dtype), None, None
            return g * -(x.dtype.type(1) + float32_math.vml("log", x)), None, None
    return gradients


class XLog1pY(Function):
    """``x * log1p(y)``, 0 where ``x == 0`` (even for ``y == -1``); torch's gradients ``log1p(y)`` for
    ``x`` (0 where ``x == 0`` and ``y <= -1``) and ``x / (1 + y)`` for ``y`` -- elementwise.XLogY's
    rules with log1p."""

    @staticmethod
    def forward(ctx, x, y):
        xp = xp_of(x)
        ctx.x, ctx.y, ctx.shapes = x, y, (x.shape, y.shape)
        # (torch's scalar kernel: C's log1p, glibc's log1pf for float32, as elementwise.XLogY's C log)
        return E._xlogy_as_torch(xp, x, y, log1p=True).astype(x.dtype, copy=False)

    @staticmethod
    def backward(ctx, g):
        xp, x, y = xp_of(g), ctx.x, ctx.y
        with np.errstate(divide="ignore", invalid="ignore"):
            gx = xp.where((x == 0) & (y <= -1), 0, E._xlogy_as_torch(xp, g, y, log1p=True))  # at::special_xlog1py
            gy = g * x / (1 + y)
        return E.unbroadcast(gx, ctx.shapes[0]), E.unbroadcast(gy, ctx.shapes[1])


def xlog1py(input, other):
    """``torch.special.xlog1py``: ``input * log1p(other)``, 0 where ``input`` is 0; either may be a
    number (integers compute in the default float dtype)."""
    x, y = _two_tensors(input, other)
    dtypes.refuse_complex("xlog1py_cpu", x)
    return name_node(XLog1pY.apply(x, y), "SpecialXlog1PyBackward0", input, other)


def _two_tensors(input, other):
    """Both operands as tensors of torch's result dtype (integers: the default float dtype; a Python
    number: a constant tensor of the other's shape)."""
    x, y = E._promoted(E._floating(input) if isinstance(input, Tensor) else input,
                       E._floating(other) if isinstance(other, Tensor) else other, true_divide=True)
    like = x if isinstance(x, Tensor) else y
    return tuple(t if isinstance(t, Tensor) else E.add(E.mul(like.detach(), 0), t) for t in (x, y))


# ---- Tensor methods, as torch's: x.erfc(), x.lgamma_(), x.polygamma(2), x.mvlgamma(p=3) ----------------
def _in_place(op):
    def method(self, *args, **kwargs):
        return self._inplace(op, *args, **kwargs)
    method.__name__ = f"{op.__name__}_"
    return method


def _polygamma_method(self, n):
    return polygamma(n, self)


def _polygamma_(self, n):
    return self._inplace(lambda x: polygamma(n, x))


def _mvlgamma_method(self, p):
    return mvlgamma(self, p)


def _mvlgamma_(self, p):
    return self._inplace(mvlgamma, p)


# torch's layout of their results (Function.torch_layout): TensorIterator kernels, laid out from the inputs' strides
for _op in (Erfc, Erfinv, Lgamma, Polygamma, I0, I1, I0e, I1e, Zeta, Ndtri, LogNdtr, XLog1pY):
    _op.torch_layout = "elementwise"


METHODS = {"erfc": erfc, "erfinv": erfinv, "lgamma": lgamma, "digamma": digamma, "i0": i0,
           "erfc_": _in_place(erfc), "erfinv_": _in_place(erfinv), "lgamma_": _in_place(lgamma),
           "digamma_": _in_place(digamma), "i0_": _in_place(i0),
           "polygamma": _polygamma_method, "polygamma_": _polygamma_,
           "mvlgamma": _mvlgamma_method, "mvlgamma_": _mvlgamma_}
for _name, _fn in METHODS.items():
    setattr(Tensor, _name, _fn)
