"""glibc's float32 ``logf``, ``sinf`` and ``cosf``, step by step: what torch's "default" build (a CPU
without AVX2, or ``ATEN_CPU_CAPABILITY=default``) calls where its AVX2 kernels run a vectorized formula.

glibc's (since 2.28: Arm's optimized-routines, MIT licensed) compute in double and round once to float,
but are not correctly rounded (``logf`` 0.82 ulp, ``sinf``/``cosf`` 0.56 ulp at worst): 0.7% (logf) to
1.3% (sinf, cosf) of randn's float results differ from the correctly rounded ones, so randn's scalar
Box-Muller (``random.py``) gets these ports. Their double steps are plain multiplies and adds, as glibc
builds them for a CPU without FMA (the CPUs torch's default build is for); glibc's FMA variant, picked
on newer CPUs, rounds the same doubles to other floats only at a near tie: none among the 2^24 inputs
randn hands each, nor in 4M random float32 bit patterns (subnormals, nan, inf, |x| past 120 included),
checked against glibc 2.36 on an AVX-512 CPU.
"""
import numpy as np

__all__ = ["glibc_logf", "glibc_sinf", "glibc_cosf"]

_F32, _F64 = np.float32, np.float64
_hex = float.fromhex  # (C's hexadecimal float literals, digit for digit)
# (1/c, log(c)) by sixteenths of [OFF, 2 OFF), c near the middle of each
_LOGF_TABLE = np.array([_hex(v) for v in """
    0x1.661ec79f8f3bep+0 -0x1.57bf7808caadep-2    0x1.571ed4aaf883dp+0 -0x1.2bef0a7c06ddbp-2
    0x1.49539f0f010bp+0  -0x1.01eae7f513a67p-2    0x1.3c995b0b80385p+0 -0x1.b31d8a68224e9p-3
    0x1.30d190c8864a5p+0 -0x1.6574f0ac07758p-3    0x1.25e227b0b8eap+0  -0x1.1aa2bc79c81p-3
    0x1.1bb4a4a1a343fp+0 -0x1.a4e76ce8c0e5ep-4    0x1.12358f08ae5bap+0 -0x1.1973c5a611cccp-4
    0x1.0953f419900a7p+0 -0x1.252f438e10c1ep-5    0x1p+0                0x0p+0
    0x1.e608cfd9a47acp-1  0x1.aa5aa5df25984p-5    0x1.ca4b31f026aap-1   0x1.c5e53aa362eb4p-4
    0x1.b2036576afce6p-1  0x1.526e57720db08p-3    0x1.9c2d163a1aa2dp-1  0x1.bc2860d22477p-3
    0x1.886e6037841edp-1  0x1.1058bc8a07ee1p-2    0x1.767dcf5534862p-1  0x1.4043057b6ee09p-2
    """.split()]).reshape(16, 2)
_LOGF_LN2 = _hex("0x1.62e42fefa39efp-1")
_LOGF_POLY = tuple(map(_hex, ("-0x1.00ea348b88334p-2", "0x1.5575b0be00b6ap-2",  # (of r^4, r^3, r^2)
                              "-0x1.ffffef20a4123p-2")))
_LOGF_OFF = 0x3F330000  # (OFF: the float bits where z's range starts)


def glibc_logf(x):
    """glibc's ``logf`` of a float32 array: ``x = 2^k z`` with z in [0x3f330000, 2 * that),
    ``log(x) = log1p(z / c - 1) + log(c) + k ln 2``, c from z's sixteenth of the range, log1p a
    polynomial; a subnormal x is scaled by 2^23 first (0, negatives, inf, nan: C's answers)."""
    x = np.asarray(x, _F32)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        word = np.where(x < np.finfo(_F32).tiny, x * _F32(2 ** 23), x).view(np.int32)
        word = np.where(x < np.finfo(_F32).tiny, word - (23 << 23), word)
        offset = word - _LOGF_OFF
        inverse_c, log_c = np.moveaxis(_LOGF_TABLE[(offset >> 19) & 15], -1, 0)
        z = (word - (offset & np.int32(-1 << 23))).view(_F32).astype(_F64)  # (k's bits cleared)
        r = z * inverse_c - 1
        r2 = r * r
        y = _LOGF_POLY[0] * r2 + (_LOGF_POLY[1] * r + _LOGF_POLY[2])
        y = (y * r2 + ((log_c + (offset >> 23) * _LOGF_LN2) + r)).astype(_F32)
        outside = ~((x > 0) & (x < np.inf))  # (0: -inf, negatives and nan: nan, inf: inf)
        if outside.any():
            y[outside] = np.log(x[outside])
    return y


# sinf and cosf: |x| < 0.75 a polynomial in x; up to 120 x - n pi/2 (one multiply-subtract in double)
# and the sine or cosine polynomial by the quadrant n; beyond, x reduced by 4/pi to 192 bits in integers.
_HALF_PI_INVERSE_2_24 = _hex("0x1.45F306DC9C883p+23")  # 2/pi 2^24: the quadrant, rounded, from the top bits
_HALF_PI = _hex("0x1.921FB54442D18p0")
_COS_POLY = tuple(map(_hex, ("0x1p0", "-0x1.ffffffd0c621cp-2", "0x1.55553e1068f19p-5", "-0x1.6c087e89a359dp-10",
                             "0x1.99343027bf8c3p-16")))
_SIN_POLY = tuple(map(_hex, ("-0x1.555545995a603p-3", "0x1.1107605230bc4p-7", "-0x1.994eb3774cf24p-13")))
_FOUR_OVER_PI = np.array([  # 4/pi to 192 bits, 8 new bits a word
    0xa2, 0xa2f9, 0xa2f983, 0xa2f9836e, 0xf9836e4e, 0x836e4e44, 0x6e4e4415, 0x4e441529,
    0x441529fc, 0x1529fc27, 0x29fc2757, 0xfc2757d1, 0x2757d1f5, 0x57d1f534, 0xd1f534dd, 0xf534ddc0,
    0x34ddc0db, 0xddc0db62, 0xc0db6295, 0xdb629599, 0x6295993c, 0x95993c43, 0x993c4390, 0x3c439041],
    np.uint64)


def _reduce_large(word):
    """glibc's ``reduce_large``: ``|x|`` (its float bits, >= 120) modulo pi/2 as a double in [-pi/4,
    pi/4] and the quadrant, from a 32x96-bit product with 4/pi as 2.62-bit fixed point."""
    word = word.astype(np.uint64)
    words = _FOUR_OVER_PI[((word >> np.uint64(26)) & np.uint64(15))[..., None] + np.array([0, 4, 8], np.uint64)]
    mantissa = ((word & np.uint64(0xFFFFFF)) | np.uint64(0x800000)) << ((word >> np.uint64(23)) & np.uint64(7))
    low32 = (mantissa * words[..., 0]) & np.uint64(0xFFFFFFFF)
    fraction = (mantissa * words[..., 2]) >> np.uint64(32) | (low32 << np.uint64(32))
    fraction += mantissa * words[..., 1]
    quadrant = (fraction + np.uint64(1 << 61)) >> np.uint64(62)
    fraction = (fraction - (quadrant << np.uint64(62))).view(np.int64)
    return fraction.astype(_F64) * _hex("0x1.921FB54442D18p-62"), quadrant.astype(np.int32)


def _glibc_sinf_or_cosf(x, cosine):
    """glibc's ``sinf`` (``cosine`` False) or ``cosf`` of a float32 array."""
    x = np.asarray(x, _F32)
    magnitude = np.abs(x).view(np.int32)
    small, tiny = magnitude < 0x3F400000, magnitude < 0x39800000  # |x| < 0.75, < 2^-12
    with np.errstate(invalid="ignore"):  # (a signalling nan, a nan or inf's quadrant)
        wide = x.astype(_F64)
        scaled = wide * _HALF_PI_INVERSE_2_24
        quadrant = (np.where(np.abs(scaled) < 2 ** 31, scaled, 0).astype(np.int32) + 0x800000) >> 24
        reduced = wide - quadrant * _HALF_PI
        large = (magnitude >= 0x42F00000) & (magnitude < 0x7F800000)  # 120 <= |x| < inf
        signed_quadrant = quadrant = np.where(small, 0, quadrant)
        if large.any():  # (|x| reduced: x's sign joins the quadrant that picks the signs)
            reduced[large], quadrant[large] = _reduce_large(magnitude[large])
            signed_quadrant = quadrant + (large & (x < 0))
        reduced = np.where(small, wide, reduced)
        sign = np.where((signed_quadrant & 3) % 3 == 0, 1.0, -1.0)  # (1, -1, -1, 1 by quadrant mod 4)
        flip = np.where(signed_quadrant & 2, -1.0, 1.0)  # (glibc's second table: the cosine negated)
        x1, x2 = reduced * sign, reduced * reduced
        x3 = x1 * x2
        sin = (x1 + x3 * _SIN_POLY[0]) + (x3 * x2) * (_SIN_POLY[1] + x2 * _SIN_POLY[2])
        x4 = x2 * x2
        cos = ((_COS_POLY[0] + x2 * _COS_POLY[1]) + x4 * _COS_POLY[2]) + \
            (x4 * x2) * (_COS_POLY[3] + x2 * _COS_POLY[4])
        out = np.where((quadrant & 1) != cosine, cos * flip, sin).astype(_F32)
        out[tiny] = _F32(1) if cosine else x[tiny]
        out[magnitude >= 0x7F800000] = np.nan
    return out


def glibc_sinf(x):
    """glibc's ``sinf`` of a float32 array."""
    return _glibc_sinf_or_cosf(x, cosine=False)


def glibc_cosf(x):
    """glibc's ``cosf`` of a float32 array."""
    return _glibc_sinf_or_cosf(x, cosine=True)
