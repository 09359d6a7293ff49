"""dtypes as PyTorch names them, and PyTorch's type promotion.

``minilora.float32``, ``minilora.long``, ``minilora.bool`` ... *are* NumPy dtype objects
(``minilora.float32 is numpy.dtype('float32')``). That costs nothing anywhere: NumPy and CuPy take
them as they are, ``x.dtype == minilora.float32`` and ``x.dtype == 'float32'`` both hold, and a
tensor's ``.dtype`` needs no conversion.

NumPy itself has no bfloat16. The ``ml_dtypes`` package (JAX's; ``pip install minilora[bf16]``) adds one
to NumPy, and CuPy >= 14 takes the same dtype on the GPU, so with it installed ``minilora.bfloat16`` is
``numpy.dtype(ml_dtypes.bfloat16)`` like every other dtype here. Without it, ``minilora.bfloat16`` is a
placeholder that raises a clear error when used, instead of silently computing in another dtype.

16-bit floats keep 8 (bfloat16) or 11 (float16) significant bits, so a sum of many of them rounded
after every addition drifts. torch computes each elementwise op in float32 and rounds the result once;
reductions and matrix products accumulate in float32 (``compute_dtype``) and round at the end. The ops
follow that; NumPy alone would accumulate a bfloat16 sum in bfloat16.

``result_type(*operands)`` follows torch's promotion rules, which differ from NumPy's:

* categories rank bool < integer < floating; the result takes the highest category present;
* a *dimensioned* tensor (ndim >= 1) decides the dtype within its category; a 0-d tensor only when no
  dimensioned tensor has that category; a Python number only when no tensor has it;
* a Python float then gives the default dtype (float32), a Python int int64.

So ``float32 tensor * 2.5`` stays float32, ``float32 tensor + float64 0-d tensor`` is float32 (NumPy
says float64), ``int64 tensor * float32 tensor`` is float32 (NumPy: float64), ``int tensor * 0.5``
is float32 (NumPy: float64). Torch's rules surprise people too; we follow them, not a third rule.
"""
import builtins
import importlib.util
import math
import sys
import warnings

import numpy as np

__all__ = ["float16", "float32", "float64", "bfloat16", "half", "float", "double", "int8", "uint8",
           "int16", "int32", "int64", "int", "long", "short", "bool", "get_default_dtype",
           "set_default_dtype", "result_type", "promote_types", "to_dtype", "is_floating_point", "HAS_BFLOAT16",
           "finfo", "iinfo", "can_cast"]

float16 = half = np.dtype("float16")
float32 = float = np.dtype("float32")  # noqa: A001  (torch.float)
float64 = double = np.dtype("float64")
int8, uint8, int16 = np.dtype("int8"), np.dtype("uint8"), np.dtype("int16")
short = int16
int32 = int = np.dtype("int32")  # noqa: A001  (torch.int is int32)
int64 = long = np.dtype("int64")
bool = np.dtype("bool")  # noqa: A001  (torch.bool)


class UnsupportedDType:
    """A dtype torch has and NumPy cannot hold: naming it is fine, computing with it is an error."""

    def __init__(self, name, advice):
        self.name, self.advice = name, advice

    def __repr__(self):
        return f"minilora.{self.name}"

    def __str__(self):
        return self.name

    def error(self):
        return TypeError(f"{self.name} is not supported: NumPy has no {self.name} type, so minilora "
                         f"cannot compute in it. {self.advice}")


# ``bfloat16`` is made on first use (``__getattr__`` below, PEP 562): importing ml_dtypes costs ~0.7 s
# (NumPy registering its loops), which ``import minilora`` and a float32 user should not pay. Until
# then no array can hold a bfloat16 (its dtype exists once ml_dtypes is imported), so ``is_bfloat16``
# answers every other dtype with one comparison and imports nothing.
HAS_BFLOAT16 = importlib.util.find_spec("ml_dtypes") is not None  # installed (confirmed when first used)
_NO_BFLOAT16 = UnsupportedDType("bfloat16", "Install ml_dtypes (pip install 'minilora[bf16]'), which adds "
                                            "bfloat16 to NumPy, or use minilora.float32 or minilora.float16.")


def _load_bfloat16():
    """Set and return ``bfloat16``: ml_dtypes' dtype, or without ml_dtypes the placeholder that explains
    itself. From then on it is a plain attribute of this module (``__getattr__`` is asked no more)."""
    global bfloat16, HAS_BFLOAT16
    try:
        import ml_dtypes
        bfloat16 = np.dtype(ml_dtypes.bfloat16)
    except ImportError:
        bfloat16 = _NO_BFLOAT16
    HAS_BFLOAT16 = isinstance(bfloat16, np.dtype)
    return bfloat16


def _bfloat16():
    """``bfloat16`` from inside this module (a module's ``__getattr__`` does not answer its own globals)."""
    return globals()["bfloat16"] if "bfloat16" in globals() else _load_bfloat16()


def bfloat16_if_installed():
    """ml_dtypes' bfloat16 (imported now if it was not yet), or None without ml_dtypes."""
    bf16 = _bfloat16()
    return bf16 if HAS_BFLOAT16 else None


def __getattr__(name):
    if name == "bfloat16":
        return _load_bfloat16()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | {"bfloat16"})


_default_float = float32


def get_default_dtype():
    return _default_float


def set_default_dtype(dtype):
    """As ``torch.set_default_dtype``: the dtype of Python floats and of float factories (any floating
    dtype, bfloat16 and float16 included, as torch allows)."""
    global _default_float
    if not isinstance(dtype, (np.dtype, UnsupportedDType)) and type(dtype).__module__ != "torch":
        raise TypeError("invalid dtype object: only floating-point types are supported as the default type")
    dtype = to_dtype(dtype)
    if not is_floating(dtype):
        raise TypeError(f"only floating-point types are supported as the default type, got {dtype}")
    _default_float = dtype


_NAMES = {"bf16": "bfloat16", "half": "float16", "float": "float32", "double": "float64",
          "long": "int64", "int": "int32", "short": "int16"}


def to_dtype(dtype):
    """A NumPy dtype from anything that names one: ``minilora.float32``, ``np.float32``, ``'float32'``,
    ``'torch.float32'``, ``torch.float32`` itself. ``None`` stays ``None``; bfloat16 raises."""
    if dtype is None or isinstance(dtype, np.dtype):
        return dtype
    if isinstance(dtype, UnsupportedDType):
        raise dtype.error()
    if dtype is builtins.float:  # torch.tensor(..., dtype=float) means float64, as NumPy's
        return float64
    if not isinstance(dtype, str) and type(dtype).__module__ == "torch":  # torch.float32
        dtype = str(dtype)
    if isinstance(dtype, str):
        name = dtype.removeprefix("torch.").removeprefix("minilora.")
        name = _NAMES.get(name, name)
        if name == "bfloat16":
            bf16 = _bfloat16()
            if not HAS_BFLOAT16:
                raise bf16.error()
            return bf16
        dtype = name
    return np.dtype(dtype)


# torch's ``dtype`` parameter takes a torch.dtype, or one of the Python types its parser reads as one
# (``torch.zeros(2, dtype=float)`` is float64 whatever the default dtype, ``int`` int64)
_PYTHON_TYPE_DTYPES = {builtins.float: float64, builtins.int: int64, builtins.bool: bool,
                       builtins.complex: np.dtype("complex128")}
# torch's functions with several signatures, whose parser answers a bad dtype with "invalid combination"
_OVERLOADED = frozenset("sum mean prod arange rand randn randint eye linspace logspace rand_like randn_like "
                        "randint_like to view randperm normal linalg_norm linalg_matrix_norm hann_window "
                        "hamming_window bartlett_window blackman_window kaiser_window".split())


def dtype_argument(fn, dtype, position=None, overloaded=None, name="dtype"):
    """``dtype`` given to the public ``fn``: a minilora dtype (or torch's), or ``float``, ``int``, ``bool``,
    ``complex`` (torch's parser reads them as float64, int64, bool, complex128). Anything else is torch's
    TypeError in its words: a dtype's name (``'float32'``), a NumPy scalar type (``np.float32``, a ``type``
    to torch's parser), ``dtype=2``, ``dtype=[1]``. minilora's dtypes *are* NumPy dtype objects, so
    ``np.dtype('float32')`` is ``minilora.float32`` and passes."""
    if dtype is None or isinstance(dtype, np.dtype):
        return dtype
    if isinstance(dtype, type) and dtype in _PYTHON_TYPE_DTYPES:
        return _PYTHON_TYPE_DTYPES[dtype]
    if isinstance(dtype, UnsupportedDType) or type(dtype).__module__ == "torch" and type(dtype).__name__ == "dtype":
        return to_dtype(dtype)
    raise not_a_dtype(fn, dtype, position, overloaded, name)


def not_a_dtype(fn, value, position=None, overloaded=None, name="dtype"):
    """torch's parser's TypeError for a ``dtype`` argument of ``fn`` that is no torch.dtype; for a function
    with several signatures the call could match (``overloaded``: by default those of ``_OVERLOADED``) it
    says no signature matched."""
    kind = _argument_type_name(value)
    if fn in _OVERLOADED if overloaded is None else overloaded:
        return TypeError(f"{fn}() received an invalid combination of arguments - got ({name}={kind}), but "
                         f"expected {name} to be torch.dtype")
    where = "" if position is None else f" (position {position})"
    return TypeError(f"{fn}(): argument '{name}'{where} must be torch.dtype, not {kind}")


def is_dtype_object(value):
    """Is ``value`` something that stands for a dtype (``Tensor.to``'s first argument read as a dtype, not a
    device)? A string never is: torch reads ``x.to('float64')`` as a device."""
    return (isinstance(value, (np.dtype, UnsupportedDType)) or type(value).__module__ == "torch" and
            type(value).__name__ == "dtype" or isinstance(value, type) and (value in _PYTHON_TYPE_DTYPES or
                                                                          issubclass(value, np.generic)))


def is_floating_point(dtype):
    """True for float16/bfloat16/float32/float64 (NumPy files bfloat16 under kind 'V', not 'f')."""
    return is_floating(to_dtype(dtype))


def is_floating(dtype):
    """``is_floating_point`` for a dtype that is already a NumPy dtype (no name lookup: on hot paths)."""
    return dtype.kind == "f" or is_bfloat16(dtype)


def is_bfloat16(dtype):
    """bfloat16 as ml_dtypes registers it -- or an equal copy of it (``newbyteorder('=')`` makes one
    that ``is`` misses; ``canonical`` turns arrays of it back into the registered dtype). One comparison
    for any other dtype, and no import: ml_dtypes' dtypes are NumPy kind 'V', and none exists before
    ml_dtypes is imported (by minilora or by the user)."""
    if dtype.kind != "V" or "ml_dtypes" not in sys.modules:
        return False
    bf16 = _bfloat16()
    return dtype is bf16 or dtype.newbyteorder("=") == bf16


def canonical(array):
    """``array`` with the registered bfloat16 dtype if it holds an equal copy of it (a view when the
    byte order is native, else a byte-swapped copy), so identity checks (``dtype is bfloat16``) hold."""
    dtype = getattr(array, "dtype", None)
    if dtype is None or not is_bfloat16(dtype) or dtype is _bfloat16():
        return array
    return array.view(_bfloat16()) if dtype.isnative else array.astype(_bfloat16())


def compute_dtype(dtype):
    """The dtype torch accumulates sums and matrix products of ``dtype`` in: float32 for the 16-bit
    floats (the result is rounded back once, at the end), the dtype itself otherwise."""
    if dtype.itemsize == 2 and is_floating(dtype):
        return float32
    return dtype


def upcast(array):
    """``array`` in its compute dtype: a float32 copy of a 16-bit float array, else ``array`` itself.
    An op computes on this and rounds its result back to the input dtype once (``.astype(dtype)``)."""
    dtype = array.dtype
    return array.astype(float32) if dtype.itemsize == 2 and is_floating(dtype) else array


def cast(array, dtype):
    """``array.astype(dtype)`` rounded as torch rounds. torch converts a float64 or 32/64-bit integer
    value to bfloat16/float16 *through float32* (c10's 16-bit types are built from a float), while
    NumPy and ml_dtypes round it directly: ``1 + 2**-8 + 2**-30`` is 1.0 in torch's bfloat16 and
    1.0078125 in a direct cast. The two differ only near a tie, but they differ: go through float32."""
    source = array.dtype
    if source.kind == "c" and dtype.kind not in "cb":  # the real part, with torch's warning (not NumPy's)
        warnings.warn("Casting complex values to real discards the imaginary part", UserWarning, stacklevel=2)
        array, source = array.real, array.real.dtype
    if dtype.kind in "iu" and is_bfloat16(source):  # ml_dtypes sends -1.75 to uint8 as 0 and 300.5 to int8
        array = array.astype(float32)  # as 0; torch wraps (255, 44), as NumPy's float32 cast does (exact)
    if dtype.itemsize == 2 and source.itemsize >= 4 and source is not float32 and is_floating(dtype) \
            and source.kind != "c":
        with np.errstate(over="ignore"):
            array = array.astype(float32)
    if dtype.itemsize < array.dtype.itemsize and is_floating(dtype):
        with np.errstate(over="ignore"):  # too large for the narrower float: inf, silently, as in torch
            return array.astype(dtype)
    return array.astype(dtype)


def from_torch(value):
    """The values of a torch tensor as a NumPy array (on the CPU). torch's ``.numpy()`` refuses
    bfloat16 ("Got unsupported ScalarType BFloat16"); its bits are ml_dtypes' bfloat16 bits, so they
    are reinterpreted, not converted. Without ml_dtypes a bfloat16 tensor is widened to float32 (exact)."""
    value = value.detach().cpu()
    if str(value.dtype) == "torch.bfloat16":
        bf16 = bfloat16_if_installed()
        if bf16 is None:
            return value.float().numpy()
        import torch  # already imported: ``value`` is one of its tensors
        return value.view(torch.int16).numpy().view(bf16)
    return value.numpy()


def to_torch(array):
    """A CPU torch tensor sharing a NumPy array's memory, bfloat16 included (``from_torch``'s inverse:
    ``torch.from_numpy`` refuses ml_dtypes' arrays, so the bits go through int16). Needs torch."""
    import torch
    array = np.ascontiguousarray(array)
    if is_bfloat16(array.dtype):
        return torch.from_numpy(array.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(array)


def is_torch_tensor(value):
    """A torch.Tensor (or Parameter), told apart without importing torch."""
    return type(value).__module__.split(".")[0] == "torch" and hasattr(value, "detach")


class finfo:
    """``torch.finfo(dtype)``: the limits of a floating dtype as Python floats (``bits``, ``eps``,
    ``max``, ``min``, ``tiny``/``smallest_normal``, ``resolution``), bfloat16 included. Without a
    dtype, the default dtype's."""

    def __init__(self, type=None):  # noqa: A002  (torch's argument name)
        dtype = get_default_dtype() if type is None else dtype_argument("finfo", type, 1, name="type")
        if dtype.kind == "c":  # a complex dtype: its parts' float dtype (as torch: complex64 is float32's)
            dtype = np.dtype(np.float32 if dtype == np.complex64 else np.float64)
        if not is_floating(dtype):
            raise TypeError(f"torch.finfo() requires a floating point input type. Use torch.iinfo "
                            f"to handle '{dtype}'")
        info = np.finfo(dtype)
        self.dtype = dtype.name
        self.bits = dtype.itemsize * 8
        self.eps, self.max, self.min = builtins.float(info.eps), builtins.float(info.max), builtins.float(info.min)
        self.tiny = self.smallest_normal = builtins.float(info.smallest_normal)
        self.resolution = 10.0 ** -info.precision  # (NumPy's, stored in the dtype, is 0.0100098 for bfloat16)

    def __repr__(self):
        return (f"finfo(resolution={self.resolution:g}, min={self.min:g}, max={self.max:g}, eps={self.eps:g}, "
                f"smallest_normal={self.smallest_normal:g}, tiny={self.tiny:g}, dtype={self.dtype})")


class iinfo:
    """``torch.iinfo(dtype)``: ``bits``, ``min``, ``max`` (Python ints) of an integer dtype."""

    def __init__(self, type):  # noqa: A002  (torch's argument name)
        dtype = dtype_argument("iinfo", type, 1, name="type")
        if dtype.kind not in "iu":
            raise TypeError(f"torch.{dtype.name} is not supported by torch.iinfo")
        info = np.iinfo(dtype)
        self.dtype, self.bits = dtype.name, dtype.itemsize * 8
        self.min, self.max = builtins.int(info.min), builtins.int(info.max)

    def __repr__(self):
        return f"iinfo(min={self.min:g}, max={self.max:g}, dtype={self.dtype})"


# ---- promotion -------------------------------------------------------------------------------------
_CATEGORY = {"b": 0, "i": 1, "u": 1, "f": 2, "c": 3}


def _category(dtype):
    return 2 if is_bfloat16(dtype) else _CATEGORY[dtype.kind]


def promote_types(a, b):
    """torch.promote_types: within a category the wider type; across categories the higher one as it
    is (``int64`` with ``float16`` is float16 -- NumPy would say float64). uint16/32/64 promote with
    nothing but a float or themselves, as in torch."""
    a, b = dtype_argument("promote_types", a, 1, name="type1"), dtype_argument("promote_types", b, 2, name="type2")
    ca, cb = _category(a), _category(b)
    if a != b and ca <= 1 and cb <= 1 and (a in _UNPROMOTED or b in _UNPROMOTED):
        raise RuntimeError(f"Promotion for uint16, uint32, uint64 types is not supported, attempted "
                           f"to promote {a} and {b}")
    if ca != cb:
        if ca + cb == 5 and not (is_bfloat16(a) or is_bfloat16(b)):  # a float and a complex type: the
            return np.promote_types(a, b)  # complex type wide enough for both (float64, complex64: complex128)
        return a if ca > cb else b
    return np.promote_types(a, b)


def can_cast(from_, to):
    """``torch.can_cast``: whether an in-place op may write a result of dtype ``from_`` into a tensor
    of dtype ``to``: never down a category (float into an integer, an integer into bool), any width
    within one (int64 into uint8 wraps, float64 into bfloat16 rounds; NumPy's "same_kind" refuses
    int64 into uint8)."""
    from_, to = dtype_argument("can_cast", from_, 1, name="from_"), dtype_argument("can_cast", to, 2, name="to")
    return _category(from_) <= _category(to)


_UINT64 = np.dtype("uint64")
_UNPROMOTED = (np.dtype("uint16"), np.dtype("uint32"), _UINT64)


def _scalar_dtype(value):
    """The dtype torch gives a Python number taking part in an op (a "wrapped number"): a Python int
    is int64, or uint64 from 2**63 up (which torch promotes with no integer type but itself)."""
    if isinstance(value, builtins.bool) or isinstance(value, np.bool_):
        return bool
    if isinstance(value, (builtins.int, np.integer)):
        if -2**63 <= value < 2**63:
            return int64
        _check_python_int(value)
        return _UINT64
    if isinstance(value, (builtins.float, np.floating)) or (isinstance(value, np.generic) and is_bfloat16(value.dtype)):
        return _default_float
    if isinstance(value, complex):  # the complex type of the default float dtype, as torch
        return np.dtype("complex128" if _default_float == float64 else "complex64")
    raise TypeError(f"expected a tensor or a number, got {type(value).__name__}")


def _combine(higher, lower):
    """torch's combine_categories: the higher-priority group wins unless the lower one is of a higher
    category; then the lower one's type (promoted with the higher one if that was only bool)."""
    if higher is None:
        return lower
    if lower is None:
        return higher
    if _category(higher) >= _category(lower):
        return promote_types(higher, lower) if higher == bool else higher
    if lower.kind == "c" and _category(higher) == 2:  # a float tensor with a complex number: the float's own
        if higher == np.float16:  # width, made complex (float32 * 2j is complex64; float16 * 2j torch's complex32)
            raise NotImplementedError("float16 with a complex number (or 0-d tensor) is complex32 (ComplexHalf) in "
                                      "torch: minilora has no complex32; convert the float16 tensor to float32 first")
        return promote_types(higher, np.dtype("complex64"))
    return promote_types(higher, lower)


def result_type(*operands):
    """The dtype torch gives the result of an op on ``operands`` (tensors, arrays and numbers)."""
    dimensioned = zero_dim = wrapped = None
    for x in operands:
        dtype = getattr(x, "dtype", None)
        if dtype is None or isinstance(x, np.generic):  # Python numbers (and NumPy scalars)
            t = _scalar_dtype(x)
            wrapped = t if wrapped is None else promote_types(wrapped, t)
        elif x.ndim == 0:
            zero_dim = dtype if zero_dim is None else promote_types(zero_dim, dtype)
        else:
            dimensioned = dtype if dimensioned is None else promote_types(dimensioned, dtype)
    return _combine(dimensioned, _combine(zero_dim, wrapped))


# ---- Python numbers meeting a tensor's dtype --------------------------------------------------------
# torch reads a Python int as int64 (as uint64 from 2**63 to 2**64) and then treats it in one of two
# ways. In an op (``x + 300``, ``x < -1``, ``x & 0xFF``) it becomes a 0-d tensor cast to the op's
# dtype with C's wrap-around: a uint8 tensor plus 300 adds 44, ``uint8 < -1`` compares with 255.
# Where it is *stored* (``fill_``, ``full``, ``masked_fill``, ``where``, ``clamp``, ``x[i] = v``, an
# integer power, ``alpha``) torch first checks that it fits, and raises RuntimeError if not. NumPy
# does neither: it raises OverflowError for ``uint8 + 300`` and compares ``uint8 < -1`` exactly.
def python_number(value):
    """A NumPy scalar as the Python number torch takes it for (``np.int64(300)`` is 300, which wraps or
    is checked like any int; ``np.float32(2.5)`` is 2.5) -- and, torch's quirk, a NumPy bool as the
    float 1.0 or 0.0 (torch reads it through ``float()``: ``int tensor + np.True_`` is float32).
    Anything else comes back unchanged."""
    if not isinstance(value, np.generic):
        return value
    if isinstance(value, np.integer):
        return builtins.int(value)
    if isinstance(value, (np.floating, np.bool_)) or is_bfloat16(value.dtype):
        return builtins.float(value)
    return value


_TORCH_NAMES = {"uint8": "Byte", "int8": "Char", "int16": "Short", "int32": "Int", "int64": "Long",
                "bool": "Bool", "float16": "Half", "bfloat16": "BFloat16", "float32": "Float",
                "float64": "Double", "complex64": "ComplexFloat", "complex128": "ComplexDouble"}


def torch_name(dtype):
    """The name torch's messages give ``dtype`` ("Byte" for uint8, "Float" for float32 ...)."""
    return _TORCH_NAMES.get(dtype.name, dtype.name)


def refuse_complex(kernel, *dtypes_or_tensors):
    """torch's NotImplementedError for a CPU kernel that has no complex version (erfc, lgamma, zeta ...),
    named by the first complex dtype among the operands (pass the promoted one where operands differ):
    minilora's NumPy code would otherwise compute on the real parts, or lexicographically."""
    for value in dtypes_or_tensors:
        dtype = getattr(value, "dtype", value)
        if getattr(dtype, "kind", None) == "c":
            raise NotImplementedError(f'"{kernel}" not implemented for \'{torch_name(dtype)}\'')


def _check_python_int(value):
    """torch's OverflowError for a Python int that neither int64 nor uint64 holds."""
    if not -2**63 <= value < 2**64:
        raise OverflowError("int too big to convert")


def wrap_int(value, dtype):
    """The Python int ``value`` taking part in an op of integer ``dtype``, as torch's kernel sees it:
    cast with C's wrap-around (``wrap_int(300, uint8)`` is 44, ``wrap_int(-1, uint8)`` 255)."""
    _check_python_int(value)
    return wrap_around(value, dtype)


def wrap_around(value, dtype):
    """The Python int ``value`` modulo the integer ``dtype``'s range (C's cast), unchecked: for a
    product of numbers already wrapped, which wraps as the kernel's product does."""
    bits = dtype.itemsize * 8
    value %= 2**bits
    if dtype.kind == "i" and value >= 2**(bits - 1):
        value -= 2**bits
    return value


_C_NAMES = {"uint8": "uint8_t", "int8": "int8_t", "int16": "int16_t", "int32": "int",
            "int64": "int64_t", "float16": "c10::Half", "bfloat16": "c10::BFloat16",
            "float32": "float", "float64": "double"}


def _fractional(value):
    """A float (Python's, NumPy's, or a floating tensor) where an int is wanted."""
    dtype = getattr(value, "dtype", None)
    return isinstance(value, (builtins.float, np.floating)) or (isinstance(dtype, np.dtype) and dtype.kind in "fc")


def int_argument(fn, name, value):
    """``value`` of the int parameter ``name`` of torch's ``fn``. A float is torch's TypeError: ``int()``, NumPy
    and ``range`` would truncate 2.5 to 2, a silently different answer; so is a string or a sequence (``aminmax(x,
    dim=[0, 1])`` reduced over both)."""
    if _fractional(value) or isinstance(value, (str, list, tuple, dict, set)):
        raise TypeError(f"{fn}(): argument '{name}' must be int, not {type(value).__name__}")
    return value


def bool_argument(fn, name, value, position=None):
    """``value`` of the bool parameter ``name`` of torch's ``fn``: True or False only, as torch's argument parser
    (a NumPy bool, 0/1, None or a string is its TypeError). Python's truth would decide silently otherwise:
    ``requires_grad_("no")`` required grad, ``sort(descending="no")`` sorted descending."""
    if value is True or value is False:
        return value
    where = "" if position is None else f" (position {position})"
    raise TypeError(f"{fn + '(): ' if fn else ''}argument '{name}'{where} must be bool, not "
                    f"{_argument_type_name(value)}")


def _argument_type_name(value):
    """The type torch's argument parser names: ``str``, ``NoneType``, ``numpy.bool``, ``Tensor``."""
    kind = type(value)
    if any(k.__name__ == "Tensor" and k.__module__.startswith("minilora") for k in kind.__mro__):
        return "Tensor"
    return kind.__name__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__name__}"


def int_arguments(fn, name, values):
    """``values`` of the int-tuple parameter ``name`` of torch's ``fn`` (sizes, pads, shifts), as ``int_argument``."""
    for i, value in enumerate(values):
        if _fractional(value):
            raise TypeError(f"{fn}(): argument '{name}' must be tuple of ints, but found element of type "
                            f"{type(value).__name__} at pos {i}")
    return values


def checked_number(value, dtype, check_16bit_floats=True):
    """The Python number ``value`` stored into a tensor of ``dtype``, as torch stores it: refused
    (RuntimeError, torch's words) when it does not fit, as c10's ``overflows`` decides -- a float
    outside the finite range (inf and nan only into floats), an int outside the integer type's range;
    unsigned types also take an int down to ``-max``, which wraps (uint8 takes -1 as 255). Any
    number fits a bool. Returns what NumPy should store: for an integer dtype an int, truncated and
    wrapped to it; else ``value``.
    ``check_16bit_floats=False``: any number goes into float16/bfloat16 (inf past its range), as in
    torch's ``where`` and ``x[i] = v``, which check float32 and the integer types only."""
    if isinstance(value, builtins.int) and not isinstance(value, builtins.bool):
        _check_python_int(value)
    if dtype == bool:
        return builtins.bool(value)  # (any number fits: nonzero is True)
    if isinstance(value, builtins.bool) or dtype.kind == "c":
        return value
    if value.__class__ is complex:  # into a real dtype: only with no imaginary part (torch's overflow check)
        if value.imag != 0:
            raise _overflow(dtype)
        value = value.real
    if is_floating(dtype):
        if dtype.itemsize == 2 and not check_16bit_floats:
            return value
        if math.isfinite(value) and not -finfo(dtype).max <= value <= finfo(dtype).max:
            raise _overflow(dtype)
        return value
    low, high = iinfo(dtype).min, iinfo(dtype).max
    if isinstance(value, builtins.int) and dtype.kind == "u" and value < 0:
        low = -high  # (c10 lets a negative number wrap into an unsigned type, as `a - b` needs)
    elif not isinstance(value, builtins.int):  # a float is compared with the limits as doubles, as c10
        low, high = builtins.float(low), builtins.float(high)  # does (2**63 - 1 is 2.0**63 there)
    if not (math.isfinite(value) and low <= value <= high):
        raise _overflow(dtype)
    return wrap_around(builtins.int(value), dtype)  # (a float truncated, as C casts: 2.0**63 into int64 wraps)


def _overflow(dtype):
    name = _C_NAMES.get(dtype.name, dtype.name)
    return RuntimeError(f"value cannot be converted to type {name} without overflow")
