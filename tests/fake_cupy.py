"""A stand-in for CuPy 13.3, for tests on machines without a GPU (it computes nothing on a GPU).

Most machines that run the tests have no GPU, so minilora's ``cuda`` path (CuPy arrays) would never
run and CuPy-only bugs would hide there: a NumPy function CuPy lacks (``errstate``,
``put_along_axis``), a keyword it does not take (``max(initial=...)``), ``np.asarray`` of a device
array, a NumPy array mixed into a device computation, a ufunc method CuPy has not got
(``maximum.accumulate``). This module is a ``cupy`` that computes with NumPy on the host but keeps
CuPy's rules where they differ from NumPy's:

* its namespace is CuPy 13.3's, name for name, with CuPy's keyword arguments (the tables below);
* ``ndarray`` is NOT a ``numpy.ndarray`` subclass: ``isinstance(x, np.ndarray)`` is False, as for a
  real device array, and ``np.asarray(x)`` raises CuPy's "Implicit conversion to a NumPy array is
  not allowed" (a subclass would be converted silently and taken for a host array by ``xp_of``);
* a NumPy array in a device computation raises ``TypeError: Unsupported type`` as CuPy's kernels do,
  except where CuPy copies from the host (``array``, ``asarray``, ``x.set(host)``, indices, and
  values written through array indices); ``x[1:] = host`` raises CuPy's ValueError;
* NumPy functions called on it dispatch to its own (``__array_function__``/``__array_ufunc__``),
  and raise where CuPy has no such function, as the real protocol does;
* reductions and indexing give 0-d arrays, never NumPy scalars; ufunc methods exist only where
  CuPy 13 has them (``reduce``/``accumulate``: add, multiply; ``reduceat``: add; ``at``: add,
  subtract, maximum, minimum, bitwise and/or/xor, each for the dtypes its atomics take);
* views keep identity (``x[1:].base is x``), ``asarray`` of host data copies it;
* raw kernels (``RawModule``, ``RawKernel``) cannot compile here and say so; ``ElementwiseKernel`` and
  ``ReductionKernel`` run in minilora's CPU emulator (its classes of the same names), on the NumPy arrays
  under the device arrays; ``fuse`` calls the function on the device arrays (a GPU's fused kernel gives the
  unfused numbers);
* no bfloat16: CuPy 13's array creation takes only the dtype characters ``?bhilqBHILQefdFD``
  (``_array_default``: ``ValueError: Unsupported dtype bfloat16`` for an ml_dtypes array; bfloat16's
  character is 'E'). The stand-in refuses every bfloat16 array so, a little stricter than CuPy 13,
  where the few dtype-blind operations (``zeros``: a memset) pass and the first kernel fails.
  ``install(monkeypatch, version="14.0.0")`` models CuPy 14 instead, which takes ml_dtypes'
  bfloat16, as CuPy 14's sources say (cupy/cupy#9494, #9691, #9630, #10317; read for this, round 3):

  - elementwise ops: cupy/bfloat16.cuh converts to float, computes, rounds once -- NumPy with ml_dtypes
    does the same (float32 per op, rounded once). Comparisons have bf16 loops; ``all``/``any`` take bf16
    through their float32 loops (a safe cast). Rounding (``around``/``round``/``rint``) and ``divmod`` have
    no bf16 loop (#9630, #9691): CuPy's type resolution takes the float32 loop, so the result is float32
    here too. ``cupyx`` (``scipy.special.erf``) has no bf16 kernels (#9630): float32 loops, float32 results.
  - matmul/dot of 16-bit floats: two 2-D operands (or a vector and a matrix: ``dot`` makes it 2-D) go to
    cuBLAS ``gemmEx`` with float32 compute, the result rounded once to the operands' dtype. A product with
    ONE output element (``(1, K) @ (K, 1)``, vector @ vector) is not a GEMM: ``tensordot_core`` sums it
    with a ReductionKernel in the output dtype (``_tensordot_core_mul_sum``), modelled as a running
    16-bit sum. Operands of more than two dimensions: CuPy 14.0 sends bfloat16 to its integer kernel,
    which fails (cupy/cupy#10317, open) -- refused here.
  - reductions without ``dtype=``: summed in bfloat16 here (NumPy's), the worst CuPy 14 might do (#9494:
    "the computation type ... missing for now"; #9691 filled "some reduction" gaps): minilora asks for
    ``dtype=float32``, which CuPy honours. The GPU run's probe (benchmarks/gpu_train_step.py) prints what
    this CuPy really does.
  - sort, argsort, partition, argpartition, lexsort: Thrust's type dispatcher (cupy_thrust.cu) has no
    bfloat16: refused, as by CuPy's ``Sorting arrays with dtype ... is not supported``.
  - ``ufunc.at`` / ``scatter_add``: the atomics take no bfloat16 (the ``_AT_DTYPES`` table below).
  - it needs NumPy >= 2.1.2 (``_scalar.pyx`` registers bfloat16 only then): installed here, checked by the
    probe on the GPU.

Its own limits (what a pass here does not prove): dtype promotion (CuPy's rules for Python and
NumPy scalars), rounding and speed are NumPy's; lists of Python numbers are accepted wherever NumPy
accepts them; a NumPy array is accepted wherever a parameter takes shapes, axes or indices
(STRUCTURAL), which CuPy does through Cython's sequence conversion -- not checked name by name;
positional-argument counts are not checked; ``.data`` (device pointers), streams and NCCL are
absent. The real GPU run is ``benchmarks/gpu_check.sh``.

Use: ``install(monkeypatch)`` (see tests/test_cuda_standin.py) puts it in ``sys.modules`` as
``cupy`` and re-probes minilora's ``cuda`` device, which is then enabled with this module as xp.
"""
import contextlib
import re
import sys
import types
import weakref

import math

import numpy as np

# ---- CuPy 13.3's namespace ---------------------------------------------------------------------
# Made from the cupy-cuda12x 13.3.0 wheel, which imports without a GPU (``pip download
# cupy-cuda12x==13.3.0 --no-deps``, unzip, ``pip install --target`` fastrlock beside it): every
# public name of cupy (and of cupy.ndarray, cupy.linalg, cupy.random, cupy.fft) from dir(), with the
# parameter names of the functions whose signature inspect.signature or the Cython docstring gives
# (``name(a axis out)``); a bare name takes any keyword.
_CUPY = """
AxisError ComplexWarning DataSource ElementwiseKernel Inf Infinity ModuleDeprecationWarning NAN NINF
NZERO NaN PINF PZERO RankWarning RawKernel RawModule ReductionKernel TooHardError
VisibleDeprecationWarning abs absolute add all(a axis out keepdims) allclose(a b rtol atol equal_nan)
alltrue(a axis out keepdims) amax(a axis out keepdims) amin(a axis out keepdims) angle(z deg) any(a axis
out keepdims) append(arr values axis) apply_along_axis arange(start stop step dtype) arccos arccosh
arcsin arcsinh arctan arctan2 arctanh argmax(a axis dtype out keepdims) argmin(a axis dtype out
keepdims) argpartition(a kth axis) argsort(a axis kind) argwhere(a) around(a decimals out) array(obj
dtype copy order subok ndmin blocking) array2string array_equal(a1 a2 equal_nan) array_equiv(a1 a2)
array_repr(arr max_line_width precision suppress_small) array_split(ary indices_or_sections axis)
array_str(arr max_line_width precision suppress_small) asanyarray(a dtype order blocking) asarray(a
dtype order blocking) asarray_chkfinite(a dtype order) ascontiguousarray(a dtype) asfarray(a dtype)
asfortranarray(a dtype) asnumpy(a stream order out blocking) atleast_1d() atleast_2d() atleast_3d()
average(a axis weights returned keepdims) bartlett(M) base_repr(number base padding) binary_repr(num
width) bincount(x weights minlength) bitwise_and bitwise_not bitwise_or bitwise_xor blackman(M) bool_
broadcast broadcast_arrays() broadcast_shapes() broadcast_to(array shape) byte byte_bounds(a) c_
can_cast(from_ to casting) cbrt cdouble ceil cfloat choose(a choices out mode) clear_memo() clip(a a_min
a_max out) column_stack(tup) common_type() complex128 complex64 complex_ complexfloating
compress(condition a axis out) concatenate(tup axis out dtype casting) conj conjugate convolve(a v mode)
copy(a order) copysign copyto(dst src casting where) corrcoef(a y rowvar bias ddof dtype) correlate(a v
mode) cos cosh count_nonzero(a axis) cov(a y rowvar bias ddof fweights aweights dtype) cross(a b axisa
axisb axisc axis) csingle cumprod(a axis dtype out) cumproduct(a axis dtype out) cumsum(a axis dtype
out) deg2rad degrees delete(arr indices axis) diag(v k) diag_indices(n ndim) diag_indices_from(arr)
diagflat(v k) diagonal(a offset axis1 axis2) diff(a n axis prepend append) digitize(x bins right)
disable_experimental_feature_warning disp divide divmod dot(a b out) double dsplit(ary
indices_or_sections) dstack(tup) dtype e ediff1d(arr to_end to_begin) einsum empty(shape dtype order)
empty_like(prototype dtype order subok shape) equal euler_gamma exp exp2 expand_dims(a axis) expm1
extract(condition a) eye(N M k dtype order) fabs fill_diagonal(a val wrap) find_common_type finfo fix
flatiter flatnonzero(a) flip(a axis) fliplr(a) flipud(a) float16 float32 float64 float_ float_power
floating floor floor_divide fmax fmin fmod format_float_positional format_float_scientific format_parser
frexp fromDlpack(dltensor) from_dlpack(array) frombuffer fromfile fromfunction fromiter fromstring
full(shape fill_value dtype order) full_like(a fill_value dtype order subok shape) fuse(args kwargs) gcd
generic genfromtxt get_array_module() get_array_wrap get_default_memory_pool()
get_default_pinned_memory_pool() get_printoptions() gradient(f axis edge_order) greater greater_equal
half hamming(M) hanning(M) heaviside histogram(x bins range weights density) histogram2d(x y bins range
weights density) histogramdd(sample bins range weights density) hsplit(ary indices_or_sections)
hstack(tup dtype casting) hypot i0 identity(n dtype) iinfo imag(val) in1d(ar1 ar2 assume_unique invert)
index_exp indices(dimensions dtype) inexact inf infty inner(a b) int16 int32 int64 int8 int_ intc
integer interp(x xp fp left right period) intersect1d(arr1 arr2 assume_unique return_indices) intp
invert is_available() isclose(a b rtol atol equal_nan) iscomplex(x) iscomplexobj(x) isfinite
isfortran(a) isin(element test_elements assume_unique invert) isinf isnan isneginf(x out) isposinf(x
out) isreal(x) isrealobj(x) isscalar(element) issctype(rep) issubclass_(arg1 arg2) issubdtype(arg1 arg2)
issubsctype(arg1 arg2) iterable(y) ix_() kaiser(M beta) kron(a b) lcm ldexp left_shift less less_equal
lexsort(keys) linspace(start stop num endpoint retstep dtype axis) load(file mmap_mode allow_pickle)
loadtxt log log10 log1p log2 logaddexp logaddexp2 logical_and logical_not logical_or logical_xor
logspace(start stop num endpoint base dtype axis) longlong mask_indices(n mask_func k) matmul max(a axis
out keepdims) maximum may_share_memory(a b max_work) mean(a axis dtype out keepdims) median(a axis out
overwrite_input keepdims) memoize(for_each_device) meshgrid mgrid min(a axis out keepdims)
min_scalar_type(a) minimum mintypecode(typechars typeset default) mod modf moveaxis(a source
destination) msort(a) multiply nan nan_to_num(x copy nan posinf neginf) nanargmax(a axis dtype out
keepdims) nanargmin(a axis dtype out keepdims) nancumprod(a axis dtype out) nancumsum(a axis dtype out)
nanmax(a axis out keepdims) nanmean(a axis dtype out keepdims) nanmedian(a axis out overwrite_input
keepdims) nanmin(a axis out keepdims) nanprod(a axis dtype out keepdims) nanstd(a axis dtype out ddof
keepdims) nansum(a axis dtype out keepdims) nanvar(a axis dtype out ddof keepdims) ndarray ndim(a)
ndindex negative newaxis nextafter nonzero(a) not_equal number obj2sctype(rep default) ogrid ones(shape
dtype order) ones_like(a dtype order subok shape) outer(a b out) packbits(a axis bitorder) pad
partition(a kth axis) percentile(a q axis out overwrite_input method keepdims interpolation) pi
piecewise(x condlist funclist) place(arr mask vals) poly(seq_of_zeros) poly1d polyadd(a1 a2) polyfit(x y
deg rcond full w cov) polymul(a1 a2) polysub(a1 a2) polyval(p x) positive power printoptions prod(a axis
dtype out keepdims) product(a axis dtype out keepdims) promote_types(type1 type2) ptp(a axis out
keepdims) put(a ind v mode) putmask(a mask values) quantile(a q axis out overwrite_input method keepdims
interpolation) r_ rad2deg radians ravel(a order) ravel_multi_index(multi_index dims mode order)
real(val) real_if_close(a tol) reciprocal remainder repeat(a repeats axis) require(a dtype requirements)
reshape(a newshape order) resize(a new_shape) result_type() right_shift rint roll(a shift axis)
rollaxis(a axis start) roots(p) rot90(a k axes) round(a decimals out) round_(a decimals out)
row_stack(tup dtype casting) s_ safe_eval save(file arr allow_pickle) savetxt savez savez_compressed
sctype2char(sctype) searchsorted(a v side sorter) select(condlist choicelist default)
set_printoptions(precision threshold edgeitems linewidth suppress nanstr infstr formatter sign floatmode
legacy override_repr) set_string_function setdiff1d(ar1 ar2 assume_unique) setxor1d(ar1 ar2
assume_unique) shape(a) shares_memory(a b max_work) short show_config(_full) sign signbit signedinteger
sin sinc single singlecomplex sinh size(a axis) sometrue(a axis out keepdims) sort(a axis kind)
sort_complex(a) split(ary indices_or_sections axis) sqrt square squeeze(a axis) stack(tup axis out dtype
casting) std(a axis dtype out ddof keepdims) subtract sum(a axis dtype out keepdims) swapaxes(a axis1
axis2) take(a indices axis out) take_along_axis(a indices axis) tan tanh tensordot(a b axes) tile(A
reps) trace(a offset axis1 axis2 dtype out) transpose(a axes) trapz(y x dx axis) tri(N M k dtype) tril(m
k) tril_indices(n k m) tril_indices_from(arr k) trim_zeros(filt trim) triu(m k) triu_indices(n k m)
triu_indices_from(arr k) true_divide trunc typename(char) ubyte ufunc uint uint16 uint32 uint64 uint8
uintc uintp ulonglong union1d(arr1 arr2) unique(ar return_index return_inverse return_counts axis
equal_nan) unpackbits(a axis bitorder) unravel_index(indices dims order) unsignedinteger unwrap(p
discont axis period) ushort vander(x N increasing) var(a axis dtype out ddof keepdims) vdot(a b)
vectorize vsplit(ary indices_or_sections) vstack(tup dtype casting) where(condition x y) who(vardict)
zeros(shape dtype order) zeros_like(a dtype order subok shape)
"""
_UFUNCS = """
abs absolute add arccos arccosh arcsin arcsinh arctan arctan2 arctanh bitwise_and bitwise_not bitwise_or
bitwise_xor cbrt ceil conj conjugate copysign cos cosh deg2rad degrees divide divmod equal exp exp2
expm1 fabs fix float_power floor floor_divide fmax fmin fmod frexp gcd greater greater_equal heaviside
hypot i0 invert isfinite isinf isnan lcm ldexp left_shift less less_equal log log10 log1p log2 logaddexp
logaddexp2 logical_and logical_not logical_or logical_xor maximum minimum mod modf multiply negative
nextafter not_equal positive power rad2deg radians reciprocal remainder right_shift rint sign signbit
sin sinc sinh sqrt square subtract tan tanh true_divide trunc
"""
_NDARRAY = """
T all(axis out keepdims) any(axis out keepdims) argmax(axis out dtype keepdims) argmin(axis out dtype
keepdims) argpartition(kth axis) argsort(axis) astype(dtype order casting subok copy) base
choose(choices out mode) clip(min max out) compress(condition axis out) conj() conjugate() copy(order)
cstruct cumprod(axis dtype out) cumsum(axis dtype out) data device diagonal(offset axis1 axis2) dot(b
out) dtype dump(file) dumps() fill(value) flags flat flatten(order) get(stream order out blocking) imag
item() itemsize max(axis out keepdims) mean(axis dtype out keepdims) min(axis out keepdims) nbytes ndim
nonzero() partition(kth axis) prod(axis dtype out keepdims) ptp(axis out keepdims) put(indices values
mode) ravel(order) real reduced_view(dtype) repeat(repeats axis) reshape(shape order) round(decimals
out) scatter_add(slices value) scatter_max(slices value) scatter_min(slices value) searchsorted(v side
sorter) set(arr stream) shape size sort(axis) squeeze(axis) std(axis dtype out ddof keepdims) strides
sum(axis dtype out keepdims) swapaxes(axis1 axis2) take(indices axis out) toDlpack() tobytes(order)
tofile(fid sep format) tolist() trace(offset axis1 axis2 dtype out) transpose(axes) var(axis dtype out
ddof keepdims) view(dtype type)
"""
_LINALG = """
LinAlgError cholesky(a) det(a) eigh(a UPLO) eigvalsh(a UPLO) inv(a) lstsq(a b rcond) matrix_power(M n)
matrix_rank(M tol) norm(x ord axis keepdims) pinv(a rcond) qr(a mode) slogdet(a) solve(a b) svd(a
full_matrices compute_uv) tensorinv(a ind) tensorsolve(a b axes)
"""
_RANDOM = """
BitGenerator MRG32k3a Philox4x3210 RandomState XORWOW beta binomial bytes chisquare choice default_rng
dirichlet exponential f gamma geometric get_random_state gumbel hypergeometric laplace logistic
lognormal logseries multinomial multivariate_normal negative_binomial noncentral_chisquare noncentral_f
normal pareto permutation poisson power rand randint randn random random_integers random_sample ranf
rayleigh reset_states sample seed set_random_state shuffle standard_cauchy standard_exponential
standard_gamma standard_normal standard_t triangular uniform vonmises wald weibull zipf
"""
_FFT = """
config fft fft2 fftfreq fftn fftshift hfft ifft ifft2 ifftn ifftshift ihfft irfft irfft2 irfftn rfft
rfft2 rfftfreq rfftn
"""


def _table(text):
    """``{name: parameter names in order, or None}`` from a table above."""
    entries = re.finditer(r"(\w+)(?:\(([^)]*)\))?", text)
    return {m[1]: None if m[2] is None else tuple(m[2].split()) for m in entries}


NAMES, UFUNC_NAMES = _table(_CUPY), set(_UFUNCS.split())
METHODS = _table(_NDARRAY)
# Names CuPy keeps that NumPy 2 removed: the fake gives them NumPy 2's spelling.
_NUMPY1 = {"Inf": "inf", "Infinity": "inf", "NaN": "nan", "NAN": "nan", "PINF": "inf", "infty": "inf",
           "float_": "float64", "complex_": "complex128", "cfloat": "complex128",
           "singlecomplex": "complex64", "round_": "round", "product": "prod", "cumproduct": "cumprod",
           "alltrue": "all", "sometrue": "any", "trapz": "trapezoid", "in1d": "isin"}
HOST_INPUT = {"array", "asarray", "asanyarray"}  # where CuPy copies host data to the device
# Parameters that take host sequences of ints (shapes, axes, split points, indices): a NumPy array
# is fine there in CuPy too; anywhere else it is device data and refused.
STRUCTURAL = {"axis", "axes", "axis1", "axis2", "shape", "newshape", "reps", "pad_width", "source",
              "destination", "shift", "repeats", "kth", "indices_or_sections", "dims", "indices", "ind",
              "slices", "sorter"}


class FakeCupyLimit(NotImplementedError):
    """Something the stand-in cannot do (compile or launch a CUDA kernel): not a minilora bug."""


# ---- moving between the fake device and NumPy --------------------------------------------------
def _refuse_host(obj):
    raise TypeError(f"Unsupported type {type(obj)}")  # CuPy's message for a NumPy array in a kernel


def _unwrap(obj, host_ok=False):
    """NumPy's view of an argument: device arrays unwrapped, lists and tuples walked, NumPy arrays
    refused (unless CuPy would copy them from the host there)."""
    if isinstance(obj, ndarray):
        return obj._a
    if isinstance(obj, np.ndarray):
        return obj if host_ok else _refuse_host(obj)
    if isinstance(obj, (list, tuple)) and not hasattr(obj, "_fields"):
        return type(obj)(_unwrap(o, host_ok) for o in obj)
    if isinstance(obj, dict):
        return {k: _unwrap(v, host_ok) for k, v in obj.items()}
    return obj


def _check_dtype(dtype):
    """CuPy 13's array creation: only the dtype characters it knows (bfloat16's 'E' is not one)."""
    if dtype.char not in "?bhilqBHILQefdFD" and _MODULE.__version__.startswith("13."):
        raise ValueError(f"Unsupported dtype {dtype}")


def _is_bfloat16(array):
    return getattr(array, "dtype", None) is not None and array.dtype.name == "bfloat16"


def _refuse_bfloat16_sort(name, array):
    """CuPy's sorts run Thrust through a type dispatcher compiled with CuPy, which has no bfloat16."""
    if _is_bfloat16(array):
        raise NotImplementedError(f"Sorting arrays with dtype 'bfloat16' is not supported ({name})")


def _sorting(name, fn):
    def sort_fn(a, *args, **kwargs):
        _refuse_bfloat16_sort(name, a)
        return fn(a, *args, **kwargs)
    sort_fn.__name__ = name
    return sort_fn


def _through_float32(name, fn):
    """A CuPy 14 routine with no bfloat16 loop: bfloat16 takes its float32 loop (a safe cast), so the
    result is float32."""
    def float32_fn(a, *args, **kwargs):
        if _is_bfloat16(a):
            a = a.astype(np.float32)
        return fn(a, *args, **kwargs)
    float32_fn.__name__ = name
    return float32_fn


def _wrap(obj):
    """Results as CuPy gives them: arrays (0-d ones for what NumPy gives as scalars), tuples."""
    if isinstance(obj, np.ndarray):
        _check_dtype(obj.dtype)
        return ndarray._of(obj)
    if isinstance(obj, np.generic):
        return ndarray._of(np.asarray(obj))
    if isinstance(obj, tuple):  # named tuples too: CuPy returns plain ones
        return tuple(_wrap(o) for o in obj)
    if isinstance(obj, list):
        return [_wrap(o) for o in obj]
    return obj


def _check_keywords(name, allowed, kwargs):
    if allowed is not None:
        for key in kwargs:
            if key not in allowed:
                raise TypeError(f"{name}() got an unexpected keyword argument '{key}' (CuPy 13.3)")


def _call(name, numpy_fn, allowed, args, kwargs, host_ok=False):
    """``numpy_fn`` on the unwrapped arguments; ``allowed`` names the parameters in order (a NumPy
    array may go to a STRUCTURAL one; past the end, to the last, as ``*axes`` takes them)."""
    _check_keywords(name, allowed, kwargs)
    names = allowed or ("",)
    host_args = [_unwrap(a, host_ok or names[min(i, len(names) - 1)] in STRUCTURAL)
                 for i, a in enumerate(args)]
    host_kwargs = {k: _unwrap(v, host_ok or k in STRUCTURAL) for k, v in kwargs.items()}
    result = numpy_fn(*host_args, **host_kwargs)
    out = kwargs.get("out")
    return out if isinstance(out, ndarray) else _wrap(result)  # CuPy returns the out array itself


def _function(name, numpy_fn, allowed, host_ok=False):
    def fn(*args, **kwargs):
        return _call(name, numpy_fn, allowed, args, kwargs, host_ok)
    fn.__name__ = fn.__qualname__ = name
    return fn


def _erf(x, out=None):
    """scipy.special.erf for the fake's cupyx.scipy.special, from math.erf (no SciPy in the test extra):
    float32 stays float32, as CuPy's."""
    x = np.asarray(x)
    if x.dtype.name == "bfloat16":  # no bfloat16 kernel in cupyx: its float32 loop (cupy/cupy#9630)
        x = x.astype(np.float32)
    values = np.vectorize(math.erf, otypes=[np.float64])(x)
    values = values.astype(x.dtype if x.dtype.kind == "f" else np.float64)
    if out is None:
        return values
    out[...] = values
    return out


# ---- ndarray -----------------------------------------------------------------------------------
class Event:
    """``cupy.cuda.Event``: a mark on the (host's) clock; ``cupy.cuda.get_elapsed_time`` of two."""

    def __init__(self, block=False, disable_timing=False, interprocess=False):
        self.time = None

    def record(self, stream=None):
        import time
        self.time = time.perf_counter()

    def synchronize(self):
        return None


class Device:
    """``cupy.cuda.Device``: the one fake GPU."""

    def __init__(self, device=None):
        self.id = 0 if device is None else int(device)

    def use(self):
        return None

    def synchronize(self):
        return None

    compute_capability = "90"

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def __eq__(self, other):
        return isinstance(other, Device) and other.id == self.id

    def __hash__(self):
        return self.id

    def __repr__(self):
        return f"<CUDA Device {self.id}>"


class ndarray:
    """CuPy's ndarray on the host: a NumPy array inside, CuPy's rules outside."""

    __slots__ = ("_a", "__weakref__")
    __array_priority__ = 100  # NumPy's binary operators defer to it, as to CuPy's
    __hash__ = None

    def __init__(self, shape, dtype=float, memptr=None, strides=None, order="C"):
        self._a = np.empty(shape, dtype, order=order)
        _check_dtype(self._a.dtype)
        _POOL.check(self._a)

    @classmethod
    def _of(cls, array):
        _check_dtype(array.dtype)
        _POOL.check(array)  # (every new device array is made here: the one place memory is "allocated")
        obj = cls.__new__(cls)
        obj._a = array
        _WRAPPER_OF[id(array)] = obj
        return obj

    @property
    def base(self):
        """The array that owns the memory of a view: the same object each time, as CuPy's
        (minilora tells views from copies by ``out.base is a``)."""
        owner = self._a.base
        if not isinstance(owner, np.ndarray):
            return None
        known = _WRAPPER_OF.get(id(owner))
        return known if known is not None and known._a is owner else ndarray._of(owner)

    # what CuPy refuses: turning into a NumPy array behind the user's back
    def __array__(self, dtype=None, copy=None):
        raise TypeError("Implicit conversion to a NumPy array is not allowed. "
                        "Please use `.get()` to construct a NumPy array explicitly.")

    def __array_ufunc__(self, numpy_ufunc, method, *inputs, **kwargs):
        ours = _MODULE.__dict__.get(numpy_ufunc.__name__)
        if not isinstance(ours, ufunc):
            return NotImplemented
        return getattr(ours, method)(*inputs, **kwargs) if method != "__call__" else ours(*inputs, **kwargs)

    def __array_function__(self, func, types, args, kwargs):
        module = _MODULE
        for part in func.__module__.split(".")[1:]:
            module = getattr(module, part, None)
        ours = getattr(module, func.__name__, None)
        if ours is None or not callable(ours):
            return NotImplemented  # NumPy then raises "no implementation found", as with CuPy
        return ours(*args, **kwargs)

    # attributes
    shape = property(lambda self: self._a.shape)
    dtype = property(lambda self: self._a.dtype)
    ndim = property(lambda self: self._a.ndim)
    size = property(lambda self: self._a.size)
    strides = property(lambda self: self._a.strides)
    itemsize = property(lambda self: self._a.itemsize)
    nbytes = property(lambda self: self._a.nbytes)
    flags = property(lambda self: self._a.flags)
    T = property(lambda self: ndarray._of(self._a.T))
    real = property(lambda self: ndarray._of(self._a.real))
    imag = property(lambda self: ndarray._of(self._a.imag))
    device = property(lambda self: Device(0))

    @property
    def data(self):  # a kernel launch's device pointer: the one thing a host array cannot give
        raise FakeCupyLimit("the fake CuPy has no device memory (.data): kernels run on a real GPU "
                            "(benchmarks/gpu_check.sh) or in the emulator (device 'emu')")

    def get(self, stream=None, order="C", out=None, blocking=True):
        host = np.array(self._a, order=order)
        if out is not None:
            out[...] = host
            return out
        return host

    def set(self, arr, stream=None):
        if not isinstance(arr, np.ndarray):
            raise TypeError(f"Only numpy.ndarray can be set to cupy.ndarray, not {type(arr)}")
        self._a[...] = arr

    def sort(self, axis=-1):  # CuPy's sort is stable and takes no kind
        _refuse_bfloat16_sort("sort", self)
        self._a.sort(axis=axis, kind="stable")

    def argsort(self, axis=-1):
        _refuse_bfloat16_sort("argsort", self)
        return ndarray._of(self._a.argsort(axis=axis, kind="stable"))

    def round(self, decimals=0, out=None):
        return _MODULE.around(self, decimals, out)

    def scatter_add(self, slices, value):
        np.add.at(self._a, _unwrap(slices, host_ok=True), _unwrap(value))

    def __getattr__(self, name):  # the other methods CuPy's ndarray has, with CuPy's keywords
        if name not in METHODS or name.startswith("_"):
            raise AttributeError(f"'cupy.ndarray' object has no attribute '{name}'")
        if name in ("partition", "argpartition"):
            _refuse_bfloat16_sort(name, self)
        method = getattr(self._a, name)
        return lambda *args, **kwargs: _call(f"ndarray.{name}", method, METHODS[name], args, kwargs)

    # indexing: indices may come from the host, as CuPy allows
    def __getitem__(self, key):
        return _wrap(self._a[_unwrap(key, host_ok=True)])

    def __setitem__(self, key, value):
        key = _unwrap(key, host_ok=True)
        parts = key if isinstance(key, tuple) else (key,)
        basic = all(p is None or p is Ellipsis or isinstance(p, (slice, int, np.integer)) for p in parts)
        if basic and isinstance(value, np.ndarray) and value.shape != ():
            # CuPy copies host values in for array indices only; a basic index fills (CuPy 13,
            # _scatter_op; `x[:] = host` only with CUPY_EXPERIMENTAL_SLICE_COPY=1). x.set(host) copies.
            raise ValueError("non-scalar numpy.ndarray cannot be used for fill")
        self._a[key] = _unwrap(value, host_ok=True)

    def __len__(self):
        return len(self._a)

    def __iter__(self):
        if self.ndim == 0:
            raise TypeError("iteration over a 0-d array")
        return (self[i] for i in range(len(self)))

    # conversions CuPy allows (each one a device-to-host sync on a GPU). No __index__, no __round__:
    # CuPy's ndarray has neither, so range(x) and round(x) fail there and here.
    def __bool__(self):
        return bool(self._a)

    def __float__(self):
        return float(self._a)

    def __int__(self):
        return int(self._a)

    def __complex__(self):
        return complex(self._a)

    def __repr__(self):
        return repr(self._a)

    def __str__(self):
        return str(self._a)

    def __format__(self, spec):
        return format(self._a[()] if self.ndim == 0 else self._a, spec)

    def __copy__(self):
        return ndarray._of(self._a.copy())

    def __deepcopy__(self, memo):
        return ndarray._of(self._a.copy())

    def __reduce__(self):
        return (_from_host, (self._a.copy(),))

    def __neg__(self):
        return ndarray._of(-self._a)

    def __pos__(self):
        return ndarray._of(+self._a)

    def __abs__(self):
        return ndarray._of(abs(self._a))

    def __invert__(self):
        return ndarray._of(~self._a)


_WRAPPER_OF = weakref.WeakValueDictionary()  # id(NumPy array) -> its live wrapper


def _from_host(array):
    return ndarray._of(array)


def _operator(name):
    def op(self, other):
        result = getattr(self._a, name)(_unwrap(other))
        return result if result is NotImplemented else _wrap(result)
    return op


def _in_place(name):
    def op(self, other):
        getattr(self._a, name)(_unwrap(other))
        return self
    return op


def _matmul(a, b, out=None, **kwargs):
    """CuPy's matmul, on NumPy arrays. 16-bit floats go to cuBLAS with float32 compute and come back rounded
    once, in their dtype (NumPy gives float32 for bfloat16, summed in bfloat16) -- except a product with one
    output element, which CuPy's ``dot`` sums with a reduction kernel in the 16-bit dtype. CuPy 14.0 takes
    bfloat16 only up to 2-D operands (cuBLAS gemmEx); more dimensions reach an integer GEMM and fail its
    type check (cupy/cupy#10317, open as of 2026-09): refused here, as minilora must not depend on them."""
    dtype = getattr(a, "dtype", None)
    if dtype is None or dtype.itemsize != 2 or dtype.kind in "biu" or getattr(b, "dtype", None) != dtype:
        return np.matmul(a, b, out=out, **kwargs)
    if dtype.kind != "f" and max(a.ndim, b.ndim) > 2:
        raise TypeError(f"cupy 14.0 matmul: {dtype} operands of shapes {a.shape} and {b.shape} fall to "
                        "the integer GEMM kernel (bfloat16 reaches cuBLAS only as 1-D or 2-D operands)")
    if max(a.ndim, b.ndim) <= 2 and a.shape[0 if a.ndim == 1 else -2:-1] in ((), (1,)) \
            and (b.ndim == 1 or b.shape[-1] == 1):
        result = _sum_in_16_bits(a.reshape(-1), b.reshape(-1)).reshape(a.shape[:-1] + b.shape[1:])
    else:
        result = np.matmul(a.astype(np.float32), b.astype(np.float32)).astype(dtype)
    if out is None:
        return result
    out[...] = result
    return out


def _sum_in_16_bits(a, b):
    """``dot``'s one-element product: products rounded to the dtype, a running sum in the dtype."""
    products = (a.astype(np.float32) * b.astype(np.float32)).astype(a.dtype)
    return np.add.accumulate(products, dtype=a.dtype)[-1:] if products.size else np.zeros(1, a.dtype)


for _op in ("add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "matmul", "and", "or", "xor",
            "lshift", "rshift", "divmod"):
    setattr(ndarray, f"__{_op}__", _operator(f"__{_op}__"))
    setattr(ndarray, f"__r{_op}__", _operator(f"__r{_op}__"))
    if _op not in ("divmod", "matmul"):
        setattr(ndarray, f"__i{_op}__", _in_place(f"__i{_op}__"))
ndarray.__matmul__ = lambda self, other: _call("__matmul__", _matmul, None, (self, other), {})
ndarray.__rmatmul__ = lambda self, other: _call("__rmatmul__", _matmul, None, (other, self), {})
for _op in ("eq", "ne", "lt", "le", "gt", "ge"):
    setattr(ndarray, f"__{_op}__", _operator(f"__{_op}__"))
ndarray.__module__ = "cupy"


# ---- ufuncs ------------------------------------------------------------------------------------
_UFUNC_METHODS = {"reduce": {"add", "multiply"}, "accumulate": {"add", "multiply"}, "reduceat": {"add"},
                  "at": {"add", "subtract", "maximum", "minimum", "bitwise_and", "bitwise_or", "bitwise_xor"}}


# the dtypes CuPy 13's scatter kernels (atomicAdd, atomicMax ...) take in ufunc.at
_AT_DTYPES = {"add": {"int32", "float16", "float32", "float64", "uint32", "uint64"},
              "subtract": {"int32", "uint32"},
              "maximum": {"int32", "float32", "float64", "uint32", "uint64"},
              "minimum": {"int32", "float32", "float64", "uint32", "uint64"}}


class ufunc:
    """CuPy's ufunc: call keywords out/dtype/casting only (no ``where``), methods only where CuPy
    13 has them."""

    def __init__(self, name, numpy_fn):
        self.__name__ = self.name = name
        self._np = numpy_fn

    def __call__(self, *args, **kwargs):
        return _call(self.name, self._np, ("x1", "x2", "out", "dtype", "casting"), args, kwargs)

    def _method(self, method, keywords):
        if self.name not in _UFUNC_METHODS.get(method, (self.name,)):
            raise NotImplementedError(f"`{self.name}.{method}` is not supported yet")  # CuPy's words
        return _function(f"{self.name}.{method}", getattr(self._np, method), keywords)

    def reduce(self, *args, **kwargs):
        return self._method("reduce", ("array", "axis", "dtype", "out", "keepdims"))(*args, **kwargs)

    def accumulate(self, *args, **kwargs):
        return self._method("accumulate", ("array", "axis", "dtype", "out"))(*args, **kwargs)

    def reduceat(self, *args, **kwargs):
        return self._method("reduceat", ("array", "indices", "axis", "dtype", "out"))(*args, **kwargs)

    def outer(self, *args, **kwargs):
        return self._method("outer", None)(*args, **kwargs)

    def at(self, a, indices, b=None):
        self._method("at", None)  # refuses where CuPy has no .at
        kinds = _AT_DTYPES.get(self.name)
        if kinds is not None and np.dtype(a.dtype).name not in kinds:  # CuPy's atomics
            raise TypeError(f"cupy.{self.name}.at only supports {', '.join(sorted(kinds))} as data type")
        args = () if b is None else (_unwrap(b),)
        getattr(self._np, "at")(_unwrap(a), _unwrap(indices, host_ok=True), *args)

    def __repr__(self):
        return f"<ufunc '{self.name}'>"


# ---- what cannot run here ----------------------------------------------------------------------
class _Kernel:
    def __init__(self, *args, **kwargs):
        raise FakeCupyLimit(f"the fake CuPy cannot compile CUDA ({type(self).__name__}): kernels run "
                            "on a real GPU (benchmarks/gpu_check.sh) or in the emulator (device 'emu')")


RawModule = type("RawModule", (_Kernel,), {})
RawKernel = type("RawKernel", (_Kernel,), {})


class _EmulatedKernel:
    """``ElementwiseKernel`` / ``ReductionKernel`` routed to minilora's CPU emulator (the same classes for NumPy
    arrays, minilora/emulator_kernels.py), which generates and runs the CUDA kernel CuPy would: device arrays go
    in as the NumPy arrays under them (written in place), results come back as device arrays (an output that
    was given, the same object), and a NumPy array among the arguments is CuPy's ``Unsupported type``.  Without
    g++ it cannot compile here and says so, as RawModule does."""
    _emulated = ""

    def __init__(self, *args, **kwargs):
        from minilora import emulator
        if not emulator.is_available():
            _Kernel.__init__(self)
        self._kernel = getattr(emulator, self._emulated)(*args, **kwargs)

    def __call__(self, *args, **kwargs):
        given = {id(a._a): a for a in [*args, kwargs.get("out")] if isinstance(a, ndarray)}
        host_args = [_unwrap(a) for a in args]
        host_kwargs = {k: _unwrap(v) if k == "out" else v for k, v in kwargs.items()}
        result = self._kernel(*host_args, **host_kwargs)

        def device(r):
            if not isinstance(r, np.ndarray):
                return r
            return given[id(r)] if id(r) in given else ndarray._of(r)
        return tuple(device(r) for r in result) if isinstance(result, tuple) else device(result)


ElementwiseKernel = type("ElementwiseKernel", (_EmulatedKernel,), {"_emulated": "ElementwiseKernel"})
ReductionKernel = type("ReductionKernel", (_EmulatedKernel,), {"_emulated": "ReductionKernel"})


# ---- the module --------------------------------------------------------------------------------
def _submodule(name, table, numpy_module):
    module = types.ModuleType(f"cupy.{name}")
    for attr, keywords in _table(table).items():
        value = getattr(numpy_module, attr, None)
        if callable(value) and not isinstance(value, type):
            setattr(module, attr, _function(f"{name}.{attr}", value, keywords))
        elif value is not None:
            setattr(module, attr, value)
    return module


# ---- linalg's error reporting ---------------------------------------------------------------------
# CuPy checks cuSOLVER's info only inside cupyx.errstate(linalg="raise") (cupy/linalg/_util.py,
# _check_cusolver_dev_info_if_synchronization_allowed); by default ("ignore") a singular or not
# positive-definite matrix gives no error, just what cuSOLVER left: modelled for inv, solve and cholesky.
_ERRSTATE = {"linalg": "ignore"}


@contextlib.contextmanager
def errstate(*, linalg=None):
    """``cupyx.errstate``: ``linalg="raise"`` makes the linalg functions raise numpy.linalg.LinAlgError."""
    previous = dict(_ERRSTATE)
    if linalg is not None:
        if linalg not in ("ignore", "raise"):
            raise ValueError(f"linalg must be one of 'ignore' or 'raise', got {linalg!r}")
        _ERRSTATE["linalg"] = linalg
    try:
        yield
    finally:
        _ERRSTATE.update(previous)


def _quiet_linalg():
    """numpy.linalg with inv, solve and cholesky answering a failure as CuPy does outside errstate("raise"):
    inf/nan from the solves, cholesky's partial factor (potrf stops at the failing column, finite values)."""
    quiet = types.SimpleNamespace(**{n: getattr(np.linalg, n) for n in dir(np.linalg) if not n.startswith("_")})

    def on_failure(function, failed):
        def call(*args, **kwargs):
            try:
                return function(*args, **kwargs)
            except np.linalg.LinAlgError:
                if _ERRSTATE["linalg"] == "raise":
                    raise
                return failed(*args, **kwargs)
        return call

    def partial_cholesky(a):
        a = np.asarray(a)
        out = np.tril(a).reshape((-1,) + a.shape[-2:]).copy() if a.size else np.tril(a)
        for L in out:
            for j in range(L.shape[-1]):
                pivot = L[j, j] - L[j, :j] @ L[j, :j]
                if not pivot > 0:
                    L[j, j] = pivot
                    break
                L[j, j] = np.sqrt(pivot)
                L[j + 1:, j] = (L[j + 1:, j] - L[j + 1:, :j] @ L[j, :j]) / L[j, j]
        return out.reshape(a.shape)

    quiet.inv = on_failure(np.linalg.inv, lambda a: np.full(np.shape(a), np.inf, np.asarray(a).dtype))
    quiet.solve = on_failure(np.linalg.solve, lambda a, b: np.full(
        np.broadcast_shapes(np.shape(a)[:-2], np.shape(b)[:-2]) + np.shape(b)[-2:], np.nan, np.asarray(b).dtype))
    quiet.cholesky = on_failure(np.linalg.cholesky, partial_cholesky)
    return quiet


class OutOfMemoryError(MemoryError):
    """``cupy.cuda.memory.OutOfMemoryError``: CuPy 13's class and words (cupy/cuda/memory.pyx)."""

    def __init__(self, size, total, limit=0):
        self._size, self._total, self._limit = size, total, limit
        limit_text = f", limit set to: {limit:,} bytes" if limit else ""
        super().__init__(f"Out of memory allocating {size:,} bytes (allocated so far: {total:,} bytes{limit_text}).")

    def __reduce__(self):
        return type(self), (self._size, self._total, self._limit)


OutOfMemoryError.__module__ = "cupy.cuda.memory"


class MemoryPool:
    """CuPy's default memory pool, for its ``set_limit``: an array larger than the limit is refused with CuPy's
    OutOfMemoryError, as a GPU that lacks the memory refuses it (the stand-in keeps no books of what is held: each
    new array is checked alone)."""

    def __init__(self):
        self._limit = 0

    def set_limit(self, size=None, fraction=None):
        self._limit = int(size or 0)

    def get_limit(self):
        return self._limit

    def used_bytes(self):
        return 0

    def total_bytes(self):
        return 0

    def free_all_blocks(self, stream=None):
        return None

    def check(self, array):
        if self._limit and array.base is None and array.nbytes > self._limit:
            raise OutOfMemoryError(array.nbytes, 0, self._limit)


_POOL = MemoryPool()


class CUDARuntimeError(RuntimeError):
    """``cupy.cuda.runtime.CUDARuntimeError``: its words start with the runtime's error name
    ("cudaErrorIllegalAddress: an illegal memory access was encountered")."""

    def __init__(self, status, name="cudaErrorIllegalAddress", description="an illegal memory access was encountered"):
        self.status = status
        super().__init__(f"{name}: {description}")


CUDARuntimeError.__module__ = "cupy_backends.cuda.api.runtime"


def _cuda_module():
    cuda = types.ModuleType("cupy.cuda")
    cuda.memory = types.ModuleType("cupy.cuda.memory")
    cuda.memory.OutOfMemoryError, cuda.memory.MemoryPool = OutOfMemoryError, MemoryPool
    cuda.runtime = types.SimpleNamespace(getDeviceCount=lambda: 1, deviceSynchronize=lambda: None,
                                         runtimeGetVersion=lambda: 13000, CUDARuntimeError=CUDARuntimeError)
    cuda.Device = Device
    cuda.Event = Event
    cuda.get_elapsed_time = lambda start, end: (end.time - start.time) * 1e3  # milliseconds, as CuPy's
    return cuda


def _to_device(name, numpy_fn, allowed):
    """``array``/``asarray`` as CuPy's: host data is copied to new (device) memory, never shared;
    ``asarray`` of a device array that needs no change is that array."""
    def to_device(obj, *args, **kwargs):
        _check_keywords(name, allowed, kwargs)
        host = _unwrap(obj, host_ok=True)
        result = numpy_fn(host, *args, **kwargs)
        if isinstance(obj, ndarray):
            return obj if result is host else ndarray._of(result)
        if isinstance(host, np.ndarray) and np.shares_memory(result, host):
            result = result.copy()
        return ndarray._of(result)
    to_device.__name__ = name
    return to_device


def _build():
    module = types.ModuleType("cupy")
    module.__doc__ = "A stand-in for CuPy 13.3 (tests/fake_cupy.py): NumPy underneath, CuPy's rules."
    module.__version__ = "13.3.0"
    for name, keywords in NAMES.items():
        value = getattr(np, _NUMPY1.get(name, name), None)
        if value is None:
            continue  # a NumPy 1 name no longer in NumPy 2 (who, safe_eval, ...)
        if name in UFUNC_NAMES:
            value = ufunc(name, value)
        elif name in HOST_INPUT:
            value = _to_device(name, value, keywords)
        elif callable(value) and not isinstance(value, type) and name not in ("c_", "r_", "s_", "index_exp"):
            value = _function(name, value, keywords)
        setattr(module, name, value)
    for name in ("sort", "argsort", "partition", "argpartition", "lexsort"):
        setattr(module, name, _sorting(name, getattr(module, name)))
    for name in ("around", "round", "round_", "rint", "divmod"):
        setattr(module, name, _through_float32(name, getattr(module, name)))
    module.ndarray, module.ufunc, module.matmul = ndarray, ufunc, ufunc("matmul", _matmul)
    for kernel in (RawModule, RawKernel, ElementwiseKernel, ReductionKernel):
        setattr(module, kernel.__name__, kernel)
    # cupy.fuse: one kernel for the chain on a GPU, the unfused numbers; here the function runs on these arrays
    from minilora import emulator_fusion
    module.fuse = emulator_fusion.fuse
    module.asnumpy = lambda a, stream=None, order="C", out=None, blocking=True: (
        a.get(order=order, out=out) if isinstance(a, ndarray) else np.asarray(a, order=order))
    module.get_array_module = lambda *args: module if any(isinstance(a, ndarray) for a in args) else np
    module.is_available = lambda: True
    module.get_default_memory_pool = lambda: _POOL
    module.cuda = _cuda_module()
    module.lib = types.ModuleType("cupy.lib")
    module.lib.stride_tricks = types.ModuleType("cupy.lib.stride_tricks")
    module.lib.stride_tricks.as_strided = _function(
        "as_strided", np.lib.stride_tricks.as_strided, ("x", "shape", "strides"))
    module.lib.stride_tricks.sliding_window_view = _function(
        "sliding_window_view", np.lib.stride_tricks.sliding_window_view,
        ("x", "window_shape", "axis", "subok", "writeable"))
    module.linalg = _submodule("linalg", _LINALG, _quiet_linalg())
    module.fft = _submodule("fft", _FFT, np.fft)
    module.random = _submodule("random", _RANDOM, np.random)
    module.FakeCupyLimit = FakeCupyLimit
    return module


def _build_cupyx():
    special = types.ModuleType("cupyx.scipy.special")
    special.erf = _function("erf", _erf, ("x", "out"))
    scipy_module = types.ModuleType("cupyx.scipy")
    scipy_module.special = special
    cupyx = types.ModuleType("cupyx")
    cupyx.scipy = scipy_module
    cupyx.errstate = errstate
    return {"cupyx": cupyx, "cupyx.scipy": scipy_module, "cupyx.scipy.special": special}


_MODULE = _build()


def modules():
    """``{name: module}`` to put in ``sys.modules``: cupy, its submodules, cupyx.scipy.special."""
    found = {"cupy": _MODULE, "cupy.cuda": _MODULE.cuda, "cupy.cuda.memory": _MODULE.cuda.memory, "cupy.linalg": _MODULE.linalg,
             "cupy.fft": _MODULE.fft, "cupy.random": _MODULE.random, "cupy.lib": _MODULE.lib,
             "cupy.lib.stride_tricks": _MODULE.lib.stride_tricks}
    found.update(_build_cupyx())
    return found


def install(monkeypatch, version="13.3.0"):
    """Make ``import cupy`` give the fake and minilora's ``cuda`` device run on it, until the test
    ends (monkeypatch undoes both). ``version="14.0.0"``: a CuPy 14, which takes bfloat16."""
    from minilora.device import _DEVICES
    monkeypatch.setattr(_MODULE, "__version__", version)
    for name, module in modules().items():
        monkeypatch.setitem(sys.modules, name, module)
    cuda = _DEVICES["cuda"]
    for attr, value in (("_checked", False), ("_why", None), ("_xp", None), ("_bfloat16_refused", None)):
        monkeypatch.setattr(cuda, attr, value)
    monkeypatch.setattr(_POOL, "_limit", 0)  # (a test's set_limit ends with it)
    assert cuda.enabled() and cuda.xp is _MODULE, cuda.why_disabled
    return _MODULE
