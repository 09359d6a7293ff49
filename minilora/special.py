"""``torch.special``: scipy.special's names for minilora's functions (``expit`` is sigmoid, ``gammaln``
lgamma, ``multigammaln`` mvlgamma ...), each taking torch's ``out=``. The new mathematics lives in
``minilora/ops/special.py``; the rest are minilora's existing ops under these names."""
from . import dtypes, ops
from ._argument_types import _overloaded
from .ops import special as _special

__all__ = ["erf", "erfc", "erfinv", "expit", "logit", "gammaln", "digamma", "psi", "polygamma", "multigammaln",
           "xlogy", "xlog1py", "log_softmax", "softmax", "i0", "i1", "sinc", "entr", "ndtr", "ndtri", "log_ndtr",
           "erfcx", "logsumexp", "round", "expm1", "exp2", "log1p", "i0e", "i1e", "zeta"]


def _softmax(input, dim, *, dtype=None):
    return ops.softmax(input, dim, dtype=dtype)


def _log_softmax(input, dim, *, dtype=None):
    return ops.log_softmax(input, dim, dtype=dtype)


def _round(input, *, decimals=0):
    return ops.round(input, decimals=decimals)


def _polygamma(n, input):
    return _special.polygamma(n, input)


def _multigammaln(input, p):
    return _special.mvlgamma(input, p)


_FUNCTIONS = {
    "erf": ops.erf, "erfc": _special.erfc, "erfinv": _special.erfinv, "expit": ops.sigmoid, "logit": ops.logit,
    "gammaln": _special.lgamma, "digamma": _special.digamma, "psi": _special.digamma, "polygamma": _polygamma,
    "multigammaln": _multigammaln, "xlogy": ops.xlogy, "xlog1py": _special.xlog1py, "i0": _special.i0,
    "i1": _special.i1, "i0e": _special.i0e, "i1e": _special.i1e, "zeta": _special.zeta, "sinc": ops.extra.sinc,
    "entr": _special.entr, "ndtr": _special.ndtr,
    "ndtri": _special.ndtri, "log_ndtr": _special.log_ndtr,
    "erfcx": _special.erfcx, "logsumexp": ops.logsumexp, "round": _round,
    "expm1": ops.expm1, "exp2": ops.exp2, "log1p": ops.log1p}
globals().update({name: ops._with_out(fn, name) for name, fn in _FUNCTIONS.items()})
# two numbers (special.zeta(2, 3)) are no overload of torch's: its TypeError listing them
_NUMBER_OR_TENSOR = ("(Tensor input, Tensor other, *, Tensor out = None)",
                     "(Number self, Tensor other, *, Tensor out = None)",
                     "(Tensor input, Number other, *, Tensor out = None)")
globals().update({name: _overloaded(globals()[name], f"special_{name}", _NUMBER_OR_TENSOR)
                  for name in ("xlogy", "xlog1py", "zeta")})
# the classical orthogonal polynomials (minilora/special_polynomials.py)
from . import special_polynomials as _polynomials  # noqa: E402
globals().update({name: getattr(_polynomials, name) for name in _polynomials.__all__})
__all__ += _polynomials.__all__


def _values_only(function, name):
    """torch's second spelling of a function minilora has (``modified_bessel_i0`` is ``i0``), which torch
    records without a gradient: the same values, detached."""
    def values(input, *, out=None):
        dtypes.refuse_complex(f"{name}_cpu", input)  # (torch's kernel has this name, not the first spelling's)
        result = function(input).detach()
        return result if out is None else out.copy_(result)
    values.__name__, values.__doc__ = name, f"``torch.special.{name}``: {function.__name__}'s values, no gradient."
    return values


modified_bessel_i0 = _values_only(_special.i0, "modified_bessel_i0")
modified_bessel_i1 = _values_only(_special.i1, "modified_bessel_i1")
__all__ += ["modified_bessel_i0", "modified_bessel_i1"]
softmax, log_softmax = _softmax, _log_softmax  # (torch.special's softmax takes no out=)
