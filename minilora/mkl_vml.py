"""torch's MKL math functions, called in MKL itself where Intel's ``mkl`` wheel is installed (``minilora[mkl]``).

torch's CPU build computes several float32/float64 functions with MKL's vector math library (VML) in its
high-accuracy mode: results within an ulp or so, but not correctly rounded, so an open formula cannot give their
bits (minilora's correctly rounded ``sin`` differed from torch's in 5% of float32 elements, ``exp`` in 1%, its float64
``tanh`` in 21%, ``erfc`` in 19%). With MKL loaded (``minilora.blas``: the version torch 2.13 ships, 2024.2) minilora calls the
same functions: ``vms<Name>_64`` / ``vmd<Name>_64`` with ``VML_HA``.

Which of torch's functions are VML's was measured, not assumed: each function's output on a million random bit
patterns of each dtype (every exponent, NaNs, infinities, subnormals) and on random normal values, contiguous and
strided, equal to VML's in every bit -- ``_TORCH_CALLS_VML`` below -- with MKL 2024.2, the version torch 2.13 ships
(``minilora[mkl]`` pins it: MKL 2026.2's sin and cos differ for |x| of 1e4-5e5, its exp in 3% of elements). torch's
log1p, expm1, sinh, cosh, asinh, acosh, atanh, exp2, rsqrt and lgamma are not VML's (SLEEF's, C's or ATen's own:
``float32_math``), nor are the exponentials inside its fused kernels (softmax, SiLU, ...).
``compute`` returns None where it does not apply (MKL not chosen, another dtype, CuPy arrays): the caller's own
formula stands.
"""
import ctypes

import numpy as np

from . import blas

__all__ = ["compute", "applies"]

# torch's function -> VML's name, for float32 and float64 alike (both measured equal bit for bit)
_TORCH_CALLS_VML = {"exp": "Exp", "log": "Ln", "sin": "Sin", "cos": "Cos", "tan": "Tan", "arcsin": "Asin", "arccos": "Acos", "arctan": "Atan",
                    "tanh": "Tanh", "log2": "Log2", "log10": "Log10", "erf": "Erf", "erfc": "Erfc",
                    "erfinv": "ErfInv"}
_VML_HA, _VML_ERRMODE_IGNORE = 0x2, 0x100  # high accuracy (torch's), and no errno / callback on NaN or overflow
_PREFIX = {np.dtype(np.float32): "vms", np.dtype(np.float64): "vmd"}
_functions = {}


# torch's sqrt is VML's too (measured on an AMD Zen 4: every bit, float32 and float64, contiguous and strided); on the
# Intel host it was matched first by a compiled model (float32_math.mkl_sqrt), which stays there: asked by name only
_NAMED_ONLY = {"sqrt": "Sqrt"}


def applies(name, a):
    """Whether ``compute(name, a)`` gives torch's VML result: MKL is minilora's BLAS, ``name`` is one of torch's
    VML functions (or ``_NAMED_ONLY``'s, which callers ask for themselves), ``a`` a float32 or float64 NumPy array."""
    return ((name in _TORCH_CALLS_VML or name in _NAMED_ONLY) and type(a) is np.ndarray and a.dtype in _PREFIX
            and blas.library() == "mkl")


def _function(name, dtype):
    key = (name, dtype)
    if key not in _functions:
        vml_name = _TORCH_CALLS_VML.get(name) or _NAMED_ONLY[name]
        fn = getattr(blas._mkl_library(), f"{_PREFIX[dtype]}{vml_name}_64")
        fn.argtypes = [ctypes.c_int64, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]
        fn.restype = None
        _functions[key] = fn
    return _functions[key]


def compute(name, a, out=None):
    """torch's ``name`` (NumPy's spelling: "sin", "arctan", "erfinv", ...) of ``a`` as MKL's VML computes it, or None
    where it does not apply (``applies``). Into ``out`` if given (C-contiguous, ``a``'s shape and dtype)."""
    if not applies(name, a):
        return None
    source = np.ascontiguousarray(a)  # (torch gives a strided input the same values: measured)
    target = out if out is not None and out.flags.c_contiguous and out.shape == a.shape and out.dtype == a.dtype \
        else np.empty(a.shape, a.dtype)
    if source.size:
        _function(name, a.dtype)(source.size, source.ctypes.data, target.ctypes.data, _VML_HA | _VML_ERRMODE_IGNORE)
    if out is not None and target is not out:
        out[...] = target
        return out
    return target
