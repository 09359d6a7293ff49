"""``torch.special``: scipy.special's names for minilora's functions (``expit`` is sigmoid, ``gammaln``
lgamma, ``multigammaln`` mvlgamma ...), each taking torch's ``out=``. The new mathematics lives in
``minilora/ops/special.py``; the rest are minilora's existing ops under these names."""
from . import dtypes, ops
from ._argument_types import _overloaded
from .device import holds_no_values
from .factories import empty
from .ops import bessel as _bessel, incomplete_gamma as _incomplete_gamma, special as _special
from .ops.elementwise import _host_array
from .tensor import Tensor

__all__ = ["erf", "erfc", "erfinv", "expit", "logit", "gammaln", "digamma", "psi", "polygamma", "multigammaln",
           "xlogy", "xlog1py", "log_softmax", "softmax", "i0", "i1", "sinc", "entr", "ndtr", "ndtri", "log_ndtr",
           "erfcx", "logsumexp", "round", "expm1", "exp2", "log1p", "i0e", "i1e", "zeta"]


def _softmax(input, dim, *, dtype=None):
    return ops.softmax(input, dim, dtype=None if dtype is None else dtypes.dtype_argument("special_softmax", dtype))


def _log_softmax(input, dim, *, dtype=None):
    return ops.log_softmax(input, dim, dtype=None if dtype is None else dtypes.dtype_argument("special_log_softmax",
                                                                                                dtype))


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
globals().update({name: ops._with_out(getattr(_polynomials, name), f"special_{name}")
                  for name in _polynomials.__all__})
__all__ += _polynomials.__all__


softmax, log_softmax = _softmax, _log_softmax  # (torch.special's softmax takes no out=)


# the regularized incomplete gamma functions (minilora/ops/incomplete_gamma.py): torch.igamma / igammac
# (each public function below takes torch's out= too: wrapped at the end of the file, as _FUNCTIONS above)
def gammainc(input, other):
    """``torch.special.gammainc(a, x)``: P(a, x), the regularized lower incomplete gamma function."""
    _incomplete_gamma.tensors_only("special_gammainc", ("input", input), ("other", other))
    return _incomplete_gamma.igamma(input, other)


def gammaincc(input, other):
    """``torch.special.gammaincc(a, x)``: Q(a, x) = 1 - P(a, x), the upper one."""
    _incomplete_gamma.tensors_only("special_gammaincc", ("input", input), ("other", other))
    return _incomplete_gamma.igammac(input, other)


# the Bessel and Airy functions (minilora/ops/bessel.py): values only, as torch records no gradient for them
def _kernel_values(kernel, name, parameter, input):
    """``kernel``'s values of ``input`` as torch's ``{name}_cpu``: float32 and float64 (integers and bool in the
    default float dtype; complex and 16-bit refused), detached."""
    _incomplete_gamma.tensors_only(f"special_{name}", (parameter, input))
    dtype = input.dtype
    if dtype.kind == "c" or dtypes.is_floating(dtype) and dtype.itemsize == 2:
        raise NotImplementedError(f"\"{name}_cpu\" not implemented for '{dtypes.torch_name(dtype)}'")
    if not dtypes.is_floating(dtype):
        dtype = dtypes.get_default_dtype()
    if holds_no_values(input._array):  # (meta: the shape and dtype only)
        result = empty(input.shape, dtype=dtype, device=input.device)
    else:
        host = _host_array(input._array).astype(dtype, copy=False)
        result = Tensor(input.device.xp.asarray(kernel(host)), dtype=dtype, device=input.device)
    return result


def bessel_j0(input):
    """``torch.special.bessel_j0``: the Bessel function of the first kind, order 0."""
    return _kernel_values(_bessel.bessel_j0, "bessel_j0", "input", input)


def bessel_j1(input):
    """``torch.special.bessel_j1``: the Bessel function of the first kind, order 1."""
    return _kernel_values(_bessel.bessel_j1, "bessel_j1", "input", input)


def bessel_y0(input):
    """``torch.special.bessel_y0``: the Bessel function of the second kind, order 0 (-inf at 0, nan below)."""
    return _kernel_values(_bessel.bessel_y0, "bessel_y0", "input", input)


def bessel_y1(input):
    """``torch.special.bessel_y1``: the Bessel function of the second kind, order 1."""
    return _kernel_values(_bessel.bessel_y1, "bessel_y1", "input", input)


def modified_bessel_k0(input):
    """``torch.special.modified_bessel_k0``: the modified Bessel function of the second kind, order 0."""
    return _kernel_values(_bessel.modified_bessel_k0, "modified_bessel_k0", "input", input)


def modified_bessel_k1(input):
    """``torch.special.modified_bessel_k1``: order 1."""
    return _kernel_values(_bessel.modified_bessel_k1, "modified_bessel_k1", "input", input)


def scaled_modified_bessel_k0(x):
    """``torch.special.scaled_modified_bessel_k0``: K0(x) e^x (finite where K0 underflows)."""
    return _kernel_values(_bessel.scaled_modified_bessel_k0, "scaled_modified_bessel_k0", "x", x)


def scaled_modified_bessel_k1(x):
    """``torch.special.scaled_modified_bessel_k1``: K1(x) e^x."""
    return _kernel_values(_bessel.scaled_modified_bessel_k1, "scaled_modified_bessel_k1", "x", x)


def modified_bessel_i0(input):
    """``torch.special.modified_bessel_i0``: I0 by ATen's own kernel for this spelling (``i0``'s values)."""
    return _kernel_values(_bessel.modified_bessel_i0, "modified_bessel_i0", "input", input)


def modified_bessel_i1(input):
    """``torch.special.modified_bessel_i1``: I1 by ATen's kernel for this spelling, which is not ``i1``'s (its float
    series keeps every term; its product is taken in another order)."""
    return _kernel_values(_bessel.modified_bessel_i1, "modified_bessel_i1", "input", input)


def spherical_bessel_j0(x):
    """``torch.special.spherical_bessel_j0``: sin(x) / x, by its Taylor series below |x| = 1/2, 0 at +-inf."""
    return _kernel_values(_bessel.spherical_bessel_j0, "spherical_bessel_j0", "x", x)


def airy_ai(x):
    """``torch.special.airy_ai``: the Airy function Ai (0 beyond 103.892, nan at +-inf)."""
    return _kernel_values(_bessel.airy_ai, "airy_ai", "x", x)


_KERNELS = ["gammainc", "gammaincc", "bessel_j0", "bessel_j1", "bessel_y0", "bessel_y1", "modified_bessel_k0",
            "modified_bessel_k1", "scaled_modified_bessel_k0", "scaled_modified_bessel_k1", "airy_ai",
            "modified_bessel_i0", "modified_bessel_i1", "spherical_bessel_j0"]
globals().update({name: ops._with_out(globals()[name], f"special_{name}") for name in _KERNELS})
__all__ += _KERNELS
