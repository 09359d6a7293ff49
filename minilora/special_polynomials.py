"""torch.special's classical orthogonal polynomials of degree n at x: Chebyshev T, U, V, W, Hermite H and He,
Laguerre L, Legendre P (spherical_bessel_j0, sin(x) / x, is ops/bessel.py's). Each follows torch's kernel: n
truncated to an integer (negative: 0), the closed forms torch takes at x = +-1 (and, for Chebyshev of high degree
inside (-1, 1), its trigonometric form), otherwise the three-term recurrence, in the result's dtype (x and n
promoted, integers to the default float dtype). torch records no gradient for them, and neither does minilora."""
import numpy as np

from . import dtypes
from .tensor import Tensor

__all__ = ["chebyshev_polynomial_t", "chebyshev_polynomial_u", "chebyshev_polynomial_v", "chebyshev_polynomial_w",
           "shifted_chebyshev_polynomial_t", "shifted_chebyshev_polynomial_u", "shifted_chebyshev_polynomial_v",
           "shifted_chebyshev_polynomial_w", "hermite_polynomial_h", "hermite_polynomial_he", "laguerre_polynomial_l",
           "legendre_polynomial_p"]


def _operands(name, x, n):
    """x and n as arrays of the result dtype (broadcast), n's degrees as int64, and the device to return on."""
    if not isinstance(x, Tensor) and not isinstance(n, Tensor):
        raise TypeError(f"special_{name}() received an invalid combination of arguments - got "
                        f"({type(x).__name__}, {type(n).__name__}), but expected one of:\n"
                        " * (Tensor x, Tensor n, *, Tensor out = None)\n * (Number x, Tensor n, *, Tensor out = None)\n"
                        " * (Tensor x, Number n, *, Tensor out = None)\n")
    like = x if isinstance(x, Tensor) else n
    dtype = dtypes.result_type(x, n)
    dtypes.refuse_complex(f"{name}_cpu", dtype)
    if not dtypes.is_floating(dtype):
        dtype = dtypes.get_default_dtype()
    arrays = [np.asarray(v.detach().numpy() if isinstance(v, Tensor) else v) for v in (x, n)]
    x_array, n_array = np.broadcast_arrays(arrays[0].astype(dtype), arrays[1].astype(dtype))
    with np.errstate(invalid="ignore"):
        degree = np.where(np.isfinite(n_array), n_array, -1).astype(np.int64)  # (C's cast truncates)
    return x_array, degree, like


def _result(values, x, like):
    """The values in x's (the result's) dtype, on the input's device (special.py gives them torch's out=)."""
    values = values.astype(x.dtype)
    return Tensor(like.device.xp.asarray(values), dtype=values.dtype, device=like.device)


def _recurrence(x, degree, first, step, start=2, stop=None):
    """The three-term recurrence q_k = step(k, p, q) from q_1 = ``first`` (p = q_0 = 1), run element by element
    up to its own degree (``stop(degree)``, degree by default), stopping where q turns nan, as torch's loop."""
    p, q = np.ones_like(x), first.copy()
    last = degree if stop is None else stop(degree)
    with np.errstate(all="ignore"):
        for k in range(start, int(last.max(initial=0)) + 1):
            active = (k <= last) & ~np.isnan(q)
            if not active.any():
                break
            r = step(k, p, q)
            p, q = np.where(active, q, p), np.where(active, r, q)
    return q


def _low_degrees(x, degree, first, values):
    """Degree 0 is 1, degree 1 is ``first``, a negative degree 0; ``values`` elsewhere."""
    one = np.ones_like(x)
    return np.where(degree < 0, 0, np.where(degree == 0, one, np.where(degree == 1, first, values)))


def _chebyshev(x, degree, first, trig, trig_from, at_one, at_minus_one):
    two_x = x + x
    values = _recurrence(x, degree, first, lambda k, p, q: two_x * q - p)
    with np.errstate(all="ignore"):
        inside = (degree > trig_from) & (np.abs(x) < 1)
        values = np.where(inside, trig(x, degree.astype(x.dtype)), values)
    values = _low_degrees(x, degree, first, values)
    edge = np.where(x > 0, at_one(degree), at_minus_one(degree)).astype(x.dtype)
    return np.where((np.abs(x) == 1) & (degree >= 0), edge, values)


def _alternating(even, odd):
    return lambda degree: np.where(degree % 2 == 0, even(degree), odd(degree))


def _kind_t(x, degree, trig_from):
    return _chebyshev(x, degree, x, lambda x, n: np.cos(n * np.arccos(x)), trig_from, lambda d: np.ones(d.shape),
                      _alternating(lambda d: np.ones(d.shape), lambda d: -np.ones(d.shape)))


def _kind_u(x, degree, trig_from):
    def trig(x, n):
        angle = np.arccos(x)
        return np.where(np.sin(angle) != 0, np.sin((n + 1) * angle) / np.sin(angle),
                        (n + 1) * np.cos((n + 1) * angle) / x)
    return _chebyshev(x, degree, x + x, trig, trig_from, lambda d: d + 1,
                      _alternating(lambda d: d + 1, lambda d: -(d + 1)))


def _kind_v(x, degree, trig_from):
    def trig(x, n):
        angle = np.arccos(x)
        odd = np.where(n.astype(np.int64) % 2 == 0, n + n + 1, -(n + n + 1))
        return np.where(np.sin(angle / 2) != 1, np.cos((n + x.dtype.type(0.5)) * angle) / np.cos(angle / 2), odd)
    return _chebyshev(x, degree, x + x - 1, trig, trig_from, lambda d: np.ones(d.shape),
                      _alternating(lambda d: d + d + 1, lambda d: -(d + d + 1)))


def _kind_w(x, degree, trig_from, shifted=False):
    def trig(x, n):
        angle = np.arccos(x)
        alternating = np.where(n.astype(np.int64) % 2 == 0, 1, -1)
        edge = alternating if shifted else np.where(x > 0, n + n + 1, alternating)  # (torch's two kernels differ)
        return np.where(np.cos(angle / 2) != 1, np.sin((n + x.dtype.type(0.5)) * angle) / np.sin(angle / 2), edge)
    return _chebyshev(x, degree, x + x + 1, trig, trig_from, lambda d: d + d + 1,
                      _alternating(lambda d: np.ones(d.shape), lambda d: -np.ones(d.shape)))


# Chebyshev's four kinds: (kind, degree above which torch takes the trigonometric form, and the shifted one's)
_CHEBYSHEV = {"t": (_kind_t, 6, 6), "u": (_kind_u, 8, 6), "v": (_kind_v, 8, 6), "w": (_kind_w, 8, 4)}


def _chebyshev_of_kind(kind, shifted):
    compute, trig_from, shifted_trig_from = _CHEBYSHEV[kind]
    name = f"{'shifted_' if shifted else ''}chebyshev_polynomial_{kind}"

    def polynomial(input, n):
        x, degree, like = _operands(name, input, n)
        if not shifted:
            return _result(compute(x, degree, trig_from), x, like)
        extra = {"shifted": True} if kind == "w" else {}
        return _result(compute(x + x - 1, degree, shifted_trig_from, **extra), x, like)
    polynomial.__name__ = name
    polynomial.__doc__ = (f"``torch.special.{name}``: Chebyshev's polynomial of the {kind.upper()} kind"
                          + (" at 2x - 1 (on [0, 1])." if shifted else "."))
    return polynomial


chebyshev_polynomial_t, chebyshev_polynomial_u, chebyshev_polynomial_v, chebyshev_polynomial_w = (
    _chebyshev_of_kind(kind, False) for kind in "tuvw")
(shifted_chebyshev_polynomial_t, shifted_chebyshev_polynomial_u, shifted_chebyshev_polynomial_v,
 shifted_chebyshev_polynomial_w) = (_chebyshev_of_kind(kind, True) for kind in "tuvw")


def _hermite_limit(x):
    """torch returns nan past this degree (the recurrence would only overflow)."""
    return 128 if x.dtype == np.float32 else 512


def hermite_polynomial_h(input, n):
    """``torch.special.hermite_polynomial_h``: the physicists' H_n (H_{k+1} = 2x H_k - 2k H_{k-1})."""
    x, degree, like = _operands("hermite_polynomial_h", input, n)
    two_x = x + x
    values = _recurrence(x, degree, two_x, lambda k, p, q: two_x * q - x.dtype.type(2 * (k - 1)) * p)
    values = np.where(degree > _hermite_limit(x), np.nan, values)
    return _result(_low_degrees(x, degree, two_x, values), x, like)


def hermite_polynomial_he(input, n):
    """``torch.special.hermite_polynomial_he``: the probabilists' He_n (He_{k+1} = x He_k - k He_{k-1})."""
    x, degree, like = _operands("hermite_polynomial_he", input, n)
    values = _recurrence(x, degree, x, lambda k, p, q: x * q - x.dtype.type(k - 1) * p)
    values = np.where(degree > _hermite_limit(x), np.nan, values)
    return _result(_low_degrees(x, degree, x, values), x, like)


def laguerre_polynomial_l(input, n):
    """``torch.special.laguerre_polynomial_l``: L_n(x), 1 at x = 0."""
    x, degree, like = _operands("laguerre_polynomial_l", input, n)
    one_minus_x = 1 - x
    t = x.dtype.type
    values = _recurrence(x, degree, one_minus_x,
                         lambda k, p, q: ((t(2 * (k - 1)) + one_minus_x) * q - t(k - 1) * p) / t(k))
    values = _low_degrees(x, degree, one_minus_x, values)
    return _result(np.where((x == 0) & (degree >= 0), 1, values), x, like)


def legendre_polynomial_p(input, n):
    """``torch.special.legendre_polynomial_p``: P_n(x), +-1 at x = +-1."""
    x, degree, like = _operands("legendre_polynomial_p", input, n)
    t = x.dtype.type
    values = _recurrence(x, degree, x, lambda k, p, q: (t(2 * k - 1) * x * q - t(k - 1) * p) / t(k))
    values = _low_degrees(x, degree, x, values)
    edge = np.where((x > 0) | (degree % 2 == 0), 1, -1)
    return _result(np.where((np.abs(x) == 1) & (degree >= 0), edge, values), x, like)
