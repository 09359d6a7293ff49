"""torch.lgamma's CPU kernel of float32 and float64 (and, through float32, of the 16-bit dtypes): SLEEF's
``Sleef_lgammaf16_u10`` / ``Sleef_lgammad8_u10``, here in NumPy, step for step (the double-float helpers of
``float32_math``, the multiply-adds fused where AVX-512's build fuses them).

SLEEF's ``gammak`` splits Gamma(x) into e^c n / d, c and n / d double-floats (pairs hi + lo):

* x >= 2.3: Stirling's series, c = (x - 1/2) ln x - x + ln sqrt(2 pi) + a polynomial in 1/x, x first moved up
  past 7 by the recurrence Gamma(x) = Gamma(x + k) / (x (x + 1) ... (x + k - 1)) (k = 3 for float, 5 for double);
* x near 1 (0.5 <= x <= 1.2, double 1.1) and the rest up to 2.3: ln Gamma's Taylor polynomial about 1 and about 2;
* x < 0.5: the reflection Gamma(x) = pi / (sin(pi x) Gamma(1 - x)), sin(pi x) by SLEEF's ``sinpik``;
* |x| tiny: Gamma(x) ~ 1 / x, scaled by 2^60 (double 2^120) so that 1 / x does not overflow.

lgamma = c + ln |n / d| (SLEEF's ``logk2``), +inf at infinity, at the poles 0, -1, -2 ... and where a
double-float overflowed. math.lgamma rounded once is an ulp off it in ~1.8% of float32 elements and ~0.8% of
float64 ones.
"""
import ctypes

import numpy as np

from .float32_math import (_df_add, _df_add_float, _df_divide, _df_mul, _df_mul_float, _dd_divide64, _dd_mul,
                           _fma32, _native_library, _natively, _sleef64_natively, _sleef_logk2, _sleef_logk2_64,
                           fused_multiply_add64)

_F32, _F64 = np.float32, np.float64


def _pair(value, dtype):
    """SLEEF's ``vcast_vf2_d`` (a double as a float and the float of the rest); doubles give their pairs as such."""
    if isinstance(value, tuple):
        return dtype(value[0]), dtype(value[1])
    hi = dtype(value)
    return hi, dtype(value - float(hi))


def _normalize(x):
    hi = x[0] + x[1]
    return hi, (x[0] - hi) + x[1]


def _select(mask, x, y):
    return np.where(mask, x[0], y[0]), np.where(mask, x[1], y[1])


def _negate(x):
    return -x[0], -x[1]


class _Float:
    """float32's double-float steps and gammafk's constants."""
    dtype = _F32
    tiny, near_1_to, shift = 1e-30, 1.2, 3
    tiny_scale, ln_tiny_scale = 2.0 ** 60, 41.58883083359671856503  # (ln 2^60)
    ln_sqrt_2pi, ln_pi = 0.91893853320467278056, 1.1447298858494001639
    reflection_period = 4096.0  # (sin(pi x)'s argument reduced by it: its integer part stays exact in an int32)
    stirling = (0.000839498720672087279971000786, -5.17179090826059219329394422e-05,
                -0.000592166437353693882857342347, 6.97281375836585777403743539e-05,
                0.000784039221720066627493314301, -0.000229472093621399176949318732,
                -0.002681327160493827160473958490, 0.003472222222222222222175164840, 0.083333333333333333335592087900)
    about_1 = (0.9435157776, 0.8670063615, 0.4826702476, -0.8855129778e-1, 0.1013825238, -0.1493408978,
               0.1697509140, -0.2072454542, 0.2705872357)
    about_2 = (0.1102489550e-3, 0.8160019934e-4, 0.1528468856e-3, -0.2355068718e-3, 0.4962242092e-3,
               -0.1193488017e-2, 0.2891599433e-2, -0.7385451812e-2, 0.2058077045e-1)
    taylor = ((-0.400686534596170958447352690395, -0.673523028297382446749257758235e-1),  # (about 1, about 2)
              (0.822466960142643054450325495997, 0.322467033928981157743538726901),
              (-0.577215665946766039837398973297, 0.422784335087484338986941629852))
    # sin(pi s / 4) (even turns) and cos(pi s / 4) (odd), s in [-1, 1]: a polynomial in s^2, its two lowest
    # coefficients double-floats
    sinpi_sin = (0.3093842054e-6, -0.3657307388e-4, 0.2490393585e-2, (-0.080745510756969451904,
                 -1.3373665339076936258e-09), (0.78539818525314331055, -2.1857338617566484855e-08))
    sinpi_cos = (-0.2430611801e-7, 0.3590577080e-5, -0.3259917721e-3, (0.015854343771934509277,
                 4.4940051354032242811e-10), (-0.30842512845993041992, -9.0728339030733922277e-09))
    mul, mul_by, divide, logk2, fma = _df_mul, _df_mul_float, _df_divide, _sleef_logk2, _fma32

    @staticmethod
    def even_quarter_turns(u):
        """sinpifk's q: u truncated, then to the even integer away from 0's side (C's int arithmetic)."""
        q = np.trunc(u).astype(np.int32)
        return (q + ((q.view(np.uint32) >> 31).astype(np.int32) ^ 1)) & ~1


class _Double:
    """float64's double-double steps and gammak's constants."""
    dtype = _F64
    tiny, near_1_to, shift = 1e-306, 1.1, 5
    tiny_scale, ln_tiny_scale = 2.0 ** 120, (83.1776616671934334590333, 3.67103459631568507221878e-15)
    ln_sqrt_2pi, ln_pi = (0.91893853320467278056, -3.8782941580672414498e-17), (1.1447298858494001639,
                                                                                 1.026595116270782638e-17)
    reflection_period = 2.0 ** 28
    stirling = (-156.801412704022726379848862, 1.120804464289911606838558160000, 13.39798545514258921833306020000,
                -0.116546276599463200848033357000, -1.391801093265337481495562410000,
                0.015056113040026424412918973400, 0.179540117061234856098844714000,
                -0.002481743600264997730942489280, -0.029527880945699120504851034100,
                0.000540164767892604515196325186, 0.006403362833808069794787256200,
                -0.000162516262783915816896611252, -0.001914438498565477526465972390,
                7.20489541602001055898311517e-05, 0.000839498720672087279971000786,
                -5.17179090826059219329394422e-05, -0.000592166437353693882857342347,
                6.97281375836585777403743539e-05, 0.000784039221720066627493314301,
                -0.000229472093621399176949318732, -0.002681327160493827160473958490,
                0.003472222222222222222175164840, 0.083333333333333333335592087900)
    about_1 = (0.2947916772827614196e+2, 0.1281459691827820109e+3, 0.2617544025784515043e+3,
               0.3287022855685790432e+3, 0.2818145867730348186e+3, 0.1728670414673559605e+3,
               0.7748735764030416817e+2, 0.2512856643080930752e+2, 0.5766792106140076868e+1,
               0.7270275473996180571e+0, 0.8396709124579147809e-1, -0.8211558669746804595e-1,
               0.6828831828341884458e-1, -0.7712481339961671511e-1, 0.8337492023017314957e-1,
               -0.9094964931456242518e-1, 0.1000996313575929358e+0, -0.1113342861544207724e+0,
               0.1255096673213020875e+0, -0.1440498967843054368e+0, 0.1695571770041949811e+0,
               -0.2073855510284092762e+0, 0.2705808084277815939e+0)
    about_2 = (0.7074816000864609279e-7, 0.4009244333008730443e-6, 0.1040114641628246946e-5,
               0.1508349150733329167e-5, 0.1288143074933901020e-5, 0.4744167749884993937e-6,
               -0.6554816306542489902e-7, -0.3189252471452599844e-6, 0.1358883821470355377e-6,
               -0.4343931277157336040e-6, 0.9724785897406779555e-6, -0.2036886057225966011e-5,
               0.4373363141819725815e-5, -0.9439951268304008677e-5, 0.2050727030376389804e-4,
               -0.4492620183431184018e-4, 0.9945751236071875931e-4, -0.2231547599034983196e-3,
               0.5096695247101967622e-3, -0.1192753911667886971e-2, 0.2890510330742210310e-2,
               -0.7385551028674461858e-2, 0.2058080842778455335e-1)
    taylor = ((-0.4006856343865314862, -0.6735230105319810201e-1), (0.8224670334241132030, 0.3224670334241132030),
              (-0.5772156649015328655, 0.4227843350984671345))
    sinpi_sin = (-2.02461120785182399295868e-14, 6.948218305801794613277840e-12, -1.75724749952853179952664e-09,
                 3.133616889668683928784220e-07, -3.65762041821615519203610e-05, 0.0024903945701927185027435600,
                 (-0.0807455121882807852484731, 3.61852475067037104849987e-18),
                 (0.785398163397448278999491, 3.06287113727155002607105e-17))
    sinpi_cos = (9.94480387626843774090208e-16, -3.89796226062932799164047e-13, 1.150115825399960352669010e-10,
                 -2.46113695010446974953590e-08, 3.590860448590527540050620e-06, -0.000325991886927389905997954,
                 (0.0158543442438155018914259, -1.04693272280631521908845e-18),
                 (-0.308425137534042437259529, -1.95698492133633550338345e-17))
    fma = staticmethod(fused_multiply_add64)

    @staticmethod
    def mul(x, y):
        return _dd_mul(x, y)

    @staticmethod
    def mul_by(x, y):
        return _dd_mul(x, (y, None))

    @staticmethod
    def divide(n, d):
        return _dd_divide64(*n, *d)

    @staticmethod
    def logk2(x):
        return _sleef_logk2_64(x)

    @staticmethod
    def even_quarter_turns(u):
        """sinpik's q: u + 1/2 rounded to nearest, its low bit cleared."""
        return np.rint(u + 0.5).astype(np.int32) & ~1


def _product(p, x, y):
    """x * y of two arrays as a double-float (the error by a fused multiply-add)."""
    hi = x * y
    return hi, p.fma(x, y, -hi)


def _pick(p, mask, a, b):
    """SLEEF's ``vsel_vf_vo_f_f``: constants (rounded to the dtype; pairs as pairs) chosen elementwise."""
    if isinstance(a, tuple):
        a, b = _pair(a, p.dtype), _pair(b, p.dtype)
        return np.where(mask, a[0], b[0]), np.where(mask, a[1], b[1])
    return np.where(mask, p.dtype(a), p.dtype(b))


def _sinpik(p, d):
    """SLEEF's ``sinpik``: sin(pi d) as a double-float, d's quarter-turns q folded out (the odd pairs by cos's
    polynomial, the sign by q's bit 2)."""
    u = d * p.dtype(4)
    q = p.even_quarter_turns(u)
    cos = (q & 2) == 2
    s = u - q.astype(p.dtype)
    t, s = s, s * s
    s2 = _product(p, t, t)
    coefficients = [_pick(p, cos, c, sin) for c, sin in zip(p.sinpi_cos, p.sinpi_sin)]
    u = coefficients[0]
    for c in coefficients[1:-2]:
        u = p.fma(u, s, c)
    x = _df_add((u * s, np.zeros_like(u)), coefficients[-2])
    x = _df_add(p.mul(s2, x), coefficients[-1])
    x = p.mul(x, _select(cos, s2, (t, np.zeros_like(t))))
    x = _select(cos, _df_add_float(x, p.dtype(1)), x)
    flip = (q & 4) == 4
    return np.where(flip, -x[0], x[0]), np.where(flip, -x[1], x[1])


def _gammak(p, a):
    """SLEEF's ``gammak``: (c, n / d), double-floats with Gamma(a) = e^c n / d."""
    real = p.dtype
    zero = np.zeros_like(a)
    one = (np.ones_like(a), zero)
    tiny, reflect = np.abs(a) < real(p.tiny), a < real(0.5)
    x = _select(tiny, (zero, zero), _select(reflect, _df_add_float((real(1), real(0)), -a), (a, zero)))
    near_1 = (real(0.5) <= x[0]) & (x[0] <= real(p.near_1_to))
    stirling = real(2.3) <= x[0]
    y = x
    for k in range(1, p.shift):
        y = _normalize(p.mul(_df_add_float(x, real(k)), y))
    shift = stirling & (x[0] <= real(7))  # (Stirling's series wants x past 7)
    numerator = _select(shift, y, one)
    x = _select(shift, _df_add_float(x, real(p.shift)), x)
    t = np.where(stirling, real(1) / x[0], _normalize(_df_add_float(x, np.where(near_1, real(-1), real(-2))))[0])
    u = _polynomial_step(p, stirling, near_1, 0)
    for i in range(1, len(p.stirling)):
        u = p.fma(u, t, _polynomial_step(p, stirling, near_1, i))
    y = p.mul(_df_add_float(x, real(-0.5)), p.logk2(x))
    y = _df_add(_df_add(y, _negate(x)), _pair(p.ln_sqrt_2pi, real))
    z = _product(p, u, t)
    for about_1, about_2 in p.taylor:
        z = p.mul_by(_df_add_float(z, _pick(p, near_1, about_1, about_2)), t)
    c = _select(stirling, y, z)
    denominator = _select(stirling, _df_add_float(_product(p, u, t), real(1)), one)
    c = _select(tiny, _pair(p.ln_tiny_scale, real), _select(reflect, _df_add(_pair(p.ln_pi, real), _negate(c)), c))
    sine = (zero, zero)
    if reflect.any():
        period = real(p.reflection_period)
        turns = np.trunc(a * (real(1) / period))
        turns = np.where(np.abs(turns) < 2.0 ** 31, turns, -(2.0 ** 31)).astype(real)  # (the int32 conversion's)
        sine = p.mul(denominator, _sinpik(p, a - period * turns))
    n = _select(tiny, one, _select(reflect, numerator, denominator))
    d = _select(tiny, (a * real(p.tiny_scale), zero), _select(reflect, sine, numerator))
    return c, p.divide(n, d)


def _polynomial_step(p, stirling, near_1, i):
    """The i-th coefficient of the three polynomials, chosen elementwise (SLEEF's ``vsel_vf_vo_vo_f_f_f``)."""
    return np.where(stirling, p.dtype(p.stirling[i]), _pick(p, near_1, p.about_1[i], p.about_2[i]))


def sleef_lgamma(a):
    """``Sleef_lgammaf16_u10`` of a float32 array, ``Sleef_lgammad8_u10`` of a float64 one: compiled where a C
    compiler is found (float32_kernels.c's ``SLEEF_LGAMMA``, these steps in C, the same bits; a million randn * 5
    float32 elements in 55 ms against 826 here, float64 67 against 961: best of 7 on 2 cores, load ~6), else the
    NumPy steps below."""
    p = _Double if np.asarray(a).dtype == _F64 else _Float
    shape = np.shape(a)
    a = np.ascontiguousarray(a, p.dtype)  # (the compiled fused multiply-adds take contiguous arrays; 0-d: 1-d)
    compiled = _compiled(a, p)
    if compiled is not None:
        return compiled.reshape(shape)
    with np.errstate(all="ignore"):
        c, ratio = _gammak(p, a)
        negative = np.signbit(ratio[0])  # (SLEEF's dfabs: both parts' signs flipped by the high part's)
        y = _df_add(c, p.logk2((np.abs(ratio[0]), np.where(negative, -ratio[1], ratio[1]))))
        r = y[0] + y[1]
        pole = np.isinf(a) | ((a <= 0) & (np.trunc(a) == a)) | (~np.isnan(a) & np.isnan(r))
    return np.where(pole, p.dtype(np.inf), r).astype(p.dtype, copy=False).reshape(shape)


# ---- the compiled kernel (float32_kernels.c's SLEEF_LGAMMA) takes its constants from the classes above ----------
_PAIR, _TERMS = ctypes.c_double * 2, ctypes.c_double * 23


class _CompiledConstants(ctypes.Structure):  # float32_kernels.c's lgamma_constants
    _fields_ = [("tiny", ctypes.c_double), ("near_1_to", ctypes.c_double), ("shift", ctypes.c_double),
                ("tiny_scale", ctypes.c_double), ("period", ctypes.c_double), ("ln_tiny_scale", _PAIR),
                ("ln_sqrt_2pi", _PAIR), ("ln_pi", _PAIR), ("terms", ctypes.c_int), ("stirling", _TERMS),
                ("about_1", _TERMS), ("about_2", _TERMS), ("taylor", _PAIR * 3), ("sinpi_terms", ctypes.c_int),
                ("sinpi_sin", ctypes.c_double * 6), ("sinpi_cos", ctypes.c_double * 6), ("sinpi_sin_pairs", _PAIR * 2),
                ("sinpi_cos_pairs", _PAIR * 2)]


def _compiled_constants(p):
    """``p``'s constants as the C struct: a pair given as one double has lo 0 (the kernel splits it as ``_pair``)."""
    pair = lambda v: _PAIR(*v) if isinstance(v, tuple) else _PAIR(v, 0.0)  # noqa: E731
    plain = len(p.sinpi_sin) - 2
    return _CompiledConstants(
        p.tiny, p.near_1_to, p.shift, p.tiny_scale, p.reflection_period, pair(p.ln_tiny_scale), pair(p.ln_sqrt_2pi),
        pair(p.ln_pi), len(p.stirling), _TERMS(*p.stirling), _TERMS(*p.about_1), _TERMS(*p.about_2),
        (_PAIR * 3)(*map(pair, p.taylor)), plain, (ctypes.c_double * 6)(*p.sinpi_sin[:plain]),
        (ctypes.c_double * 6)(*p.sinpi_cos[:plain]), (_PAIR * 2)(*map(pair, p.sinpi_sin[plain:])),
        (_PAIR * 2)(*map(pair, p.sinpi_cos[plain:])))


_given = set()  # (the libraries that have the constants: one a process)


def _compiled(a, p):
    """The compiled kernel's lgamma of a contiguous array, or None without it (no C compiler, ``numpy_port()``)."""
    library = _native_library()
    if library is None:
        return None
    if id(library) not in _given:
        for which, constants in enumerate((_Float, _Double)):
            library.ml_lgamma_constants(which, ctypes.byref(_compiled_constants(constants)))
        _given.add(id(library))
    return _natively("ml_lgamma", a) if p is _Float else _sleef64_natively("lgamma", a.reshape(-1))
