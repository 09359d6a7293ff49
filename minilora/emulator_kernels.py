"""CuPy's kernel-writing classes on the CPU emulator: ``ElementwiseKernel`` and ``ReductionKernel``.

CuPy users write most custom kernels as a loop body (``'z = (x - y) * (x - y)'``) or as a map / reduce
/ post-map triple, and CuPy generates the CUDA kernel around it.  These classes do the same here: each
call resolves the type placeholders (``T x, T y``) from the arguments, broadcasts the inputs, allocates
(or checks) the outputs, generates a CUDA C kernel and launches it through the emulator's ``RawKernel``,
so the emulator's checks (out-of-bounds shared memory, barriers, ``check_races=``-style faults) apply to
the generated code and to the user's fragment inside it.  The generated code is cached per signature;
the compiled library by content hash, as for every emulated kernel.

What the loop body sees is what CuPy gives it: a non-raw argument ``x`` is the element at the current
index (a ``const T&`` for inputs, a ``T&`` for outputs); ``raw T x`` is the whole array (``x[k]`` with a
flat C-order index, ``x.size()``, ``x.shape()``, ``x.strides()`` in bytes); ``i`` is the loop index and
``_ind.size()`` the loop size.  In a reduction, ``_j`` is the flat index of the element being mapped
(reduced axes first, then the kept ones), ``_J`` its index within its reduction and ``_i`` the output's.

complex64 and complex128 are ``complex<float>`` and ``complex<double>``: thrust::complex from the emulator's
<cupy/complex.cuh>, which a generated kernel includes where its code names complex (CuPy's include it always).

Differences from CuPy, each deliberate: the loop shape is always kept whole (``reduce_dims`` is accepted and changes
nothing a kernel can see through ``i`` or ``x[k]``); a type placeholder that no array decides is a
``TypeError`` naming it (CuPy lets a ``KeyError`` escape).
"""
from __future__ import annotations

import numbers
import re

import numpy as np

from .emulator import RawKernel
from .emulator_streams import stream_of

__all__ = ["ElementwiseKernel", "ReductionKernel"]

# CuPy's C spelling of each dtype (cupy._core._scalar.get_typename); float16 is the emulator's __half.
_C_NAMES = {
    np.dtype(np.bool_): "bool", np.dtype(np.int8): "signed char", np.dtype(np.uint8): "unsigned char",
    np.dtype(np.int16): "short", np.dtype(np.uint16): "unsigned short", np.dtype(np.int32): "int",
    np.dtype(np.uint32): "unsigned int", np.dtype(np.int64): "long long",
    np.dtype(np.uint64): "unsigned long long", np.dtype(np.float16): "float16",
    np.dtype(np.float32): "float", np.dtype(np.float64): "double",
    np.dtype(np.complex64): "complex<float>", np.dtype(np.complex128): "complex<double>",
}

# What every generated kernel starts with: CuPy's CArray / CIndexer names with the members user code
# calls.  The number of dimensions is a run-time value (up to 32, NumPy's limit is 64 but CuPy's
# kernels rarely see more than a handful), so one compiled kernel serves every shape of the same dtypes.
_HEADER = r"""
typedef __half float16;
#define _EMU_MAX_NDIM 32
// _ind.get(): a multi-index.  A type of its own (not a pointer), so that x[0] is not ambiguous.
struct _EmuIndex {
    ptrdiff_t v[_EMU_MAX_NDIM];
    __device__ ptrdiff_t& operator[](int k) { return v[k]; }
    __device__ const ptrdiff_t& operator[](int k) const { return v[k]; }
};
template <typename T, int _unused_ndim = 0, bool _c = false, bool _b = false, int _core = 0>
struct CArray {
    T* data_; int ndim_; ptrdiff_t size_; ptrdiff_t shape_[_EMU_MAX_NDIM]; ptrdiff_t strides_[_EMU_MAX_NDIM];
    __device__ CArray(T* data, const long long* meta) : data_(data), ndim_((int)meta[0]), size_(1) {
        for (int k = 0; k < ndim_; ++k) {
            shape_[k] = (ptrdiff_t)meta[1 + k];
            strides_[k] = (ptrdiff_t)meta[1 + ndim_ + k];
            size_ *= shape_[k];
        }
    }
    __device__ ptrdiff_t size() const { return size_; }
    __device__ int ndim() const { return ndim_; }
    __device__ const ptrdiff_t* shape() const { return shape_; }
    __device__ const ptrdiff_t* strides() const { return strides_; }
    __device__ T* data() const { return data_; }
    // A multi-index (one entry per dimension), as _ind.get() gives it.
    __device__ T& operator[](const _EmuIndex& idx) const {
        ptrdiff_t offset = 0;
        for (int k = 0; k < ndim_; ++k) offset += idx.v[k] * strides_[k];
        return at(offset);
    }
    // A flat index in C order over this array's own shape.
    __device__ T& operator[](ptrdiff_t i) const {
        ptrdiff_t offset = 0;
        for (int k = ndim_ - 1; k >= 0; --k) {
            offset += (i % shape_[k]) * strides_[k];
            i /= shape_[k];
        }
        return at(offset);
    }
    __device__ T& at(ptrdiff_t byte_offset) const {
        typedef typename std::remove_const<T>::type mutable_t;
        return *reinterpret_cast<T*>(reinterpret_cast<char*>(const_cast<mutable_t*>(data_)) + byte_offset);
    }
};

template <int _unused_ndim = 0, bool _b = false>
struct CIndexer {
    int ndim_; ptrdiff_t size_; ptrdiff_t shape_[_EMU_MAX_NDIM]; _EmuIndex index_;
    __device__ explicit CIndexer(const long long* meta) : ndim_((int)meta[0]), size_(1) {
        for (int k = 0; k < ndim_; ++k) { shape_[k] = (ptrdiff_t)meta[1 + k]; size_ *= shape_[k]; index_.v[k] = 0; }
    }
    __device__ ptrdiff_t size() const { return size_; }
    __device__ int ndim() const { return ndim_; }
    __device__ const ptrdiff_t* shape() const { return shape_; }
    __device__ void set(ptrdiff_t i) {
        for (int k = ndim_ - 1; k >= 0; --k) { index_.v[k] = i % shape_[k]; i /= shape_[k]; }
    }
    __device__ const _EmuIndex& get() const { return index_; }
};
"""
_HEADER_INCLUDES = "#include <cuda_fp16.h>\n#include <assert.h>\n#include <type_traits>\n"
# CuPy includes its complex.cuh in every generated kernel; here only where the code names complex<...> or thrust
# (<complex> costs each compile ~0.3 s, and no real-typed kernel can tell it is missing unless it names them)
_USES_COMPLEX = re.compile(r"\b(?:complex|thrust)\b")


def _with_includes(code: str) -> str:
    return _HEADER_INCLUDES + ("#include <cupy/complex.cuh>\n" if _USES_COMPLEX.search(code) else "") + code
_MAX_NDIM = 32


# -- parameters ---------------------------------------------------------------------------------------
class _Param:
    """One entry of an argument list such as ``'raw T x'``: a placeholder (one letter) or a dtype name."""

    def __init__(self, text: str, is_const: bool):
        words = text.split()
        if len(words) < 2:
            raise Exception(f"Syntax error: {text}")  # CuPy's type and message
        type_name, self.name = words[-2:]
        self.raw, self.is_const = False, is_const
        for word in words[:-2]:
            if word == "raw":
                self.raw = True
            elif word == "_non_const":
                self.is_const = False
            else:
                raise Exception(f'Unknown keyword "{word}"')
        if not re.fullmatch(r"[A-Za-z_]\w*", self.name):
            raise ValueError(f"invalid parameter name {self.name!r} in {text!r}")
        if len(type_name) == 1:
            self.placeholder, self.dtype = type_name, None
        else:
            self.placeholder, self.dtype = None, np.dtype(type_name)  # TypeError for an unknown name, as CuPy
            if self.dtype.name != type_name:
                raise ValueError(f"Wrong type {type_name}")
            _c_name(self.dtype)

    def ctype(self) -> str:
        return self.placeholder or _c_name(self.dtype)


def _c_name(dtype: np.dtype) -> str:
    dtype = np.dtype(dtype)
    if dtype not in _C_NAMES:
        raise TypeError(f"dtype {dtype} is not supported by the emulator's generated kernels "
                        f"(supported: {', '.join(sorted(d.name for d in _C_NAMES))})")
    return _C_NAMES[dtype]


def _parse_params(text: str, is_const: bool) -> tuple:
    text = text.strip()
    return tuple(_Param(p, is_const) for p in text.split(",")) if text else ()


def _check_kernel_name(name: str) -> None:
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z_]\w*", name):
        raise ValueError(f'Invalid kernel name: "{name}"')


def _decide_types(in_params, out_params, in_dtypes, out_dtypes):
    """Each placeholder's dtype, from the outputs first and then the inputs, as CuPy decides it."""
    found: dict[str, np.dtype] = {}
    for params, dtypes in ((out_params, out_dtypes), (in_params, in_dtypes)):
        for p, dtype in zip(params, dtypes):
            if dtype is None:
                continue  # a scalar takes the type of its parameter
            if p.dtype is not None:
                if dtype != p.dtype:
                    raise TypeError(f"Type is mismatched. {p.name} {dtype} {p.dtype}")
            elif p.placeholder in found:
                if found[p.placeholder] != dtype:
                    raise TypeError(f"Type is mismatched. {p.name} {dtype} {found[p.placeholder]} {p.placeholder}")
            else:
                found[p.placeholder] = dtype
    for p in in_params + out_params:
        if p.dtype is None and p.placeholder not in found:
            raise TypeError(f"cannot decide the type {p.placeholder} of parameter '{p.name}': no array argument "
                            f"of type {p.placeholder} was given (a scalar takes its parameter's type)")
    resolve = [p.dtype if p.dtype is not None else found[p.placeholder] for p in in_params + out_params]
    for dtype in resolve:
        _c_name(dtype)
    return resolve[:len(in_params)], resolve[len(in_params):], found


# -- arguments ----------------------------------------------------------------------------------------
def _is_scalar(value) -> bool:
    return isinstance(value, (numbers.Number, np.number, np.bool_))


def _check_input(value, kernel: str, i: int):
    if isinstance(value, np.ndarray) or _is_scalar(value):
        return value
    raise TypeError(f"argument {i} of kernel '{kernel}' must be a NumPy array or a scalar, got "
                    f"{type(value).__name__} (on the emulator NumPy arrays play cupy.ndarray)")


def _broadcast_shape(arrays) -> tuple:
    try:
        return np.broadcast_shapes(*(a.shape for a in arrays))
    except ValueError:
        shapes = ", ".join(str(a.shape) for a in arrays)
        raise ValueError(f"operands could not be broadcast together with shapes {shapes}") from None


def _meta(shape, strides) -> list:
    """A CArray's / CIndexer's description: ndim, shape, strides in bytes."""
    if len(shape) > _MAX_NDIM:
        raise ValueError(f"the emulator's generated kernels take at most {_MAX_NDIM} dimensions, got {len(shape)}")
    return [len(shape), *shape, *strides]


def _scalar_value(value, dtype: np.dtype):
    """A scalar argument cast to its parameter's dtype, as CuPy's CScalar.apply_dtype."""
    with np.errstate(all="ignore"):
        return np.array(value).astype(dtype)[()]


class _Launchable:
    """The arrays, scalars and descriptions of one launch, in the generated kernel's parameter order."""

    def __init__(self):
        self.decls, self.args, self.meta, self.prologue = [], [], [], []
        self.copy_back = []  # (user's array, contiguous stand-in) for non-contiguous outputs

    def add_array(self, p, array: np.ndarray, view_shape, view_strides, ctype: str, const: bool, local: str):
        """`array` (C-contiguous) goes in as a pointer; the kernel sees it through a CArray `local`."""
        offset = len(self.meta)
        self.meta += _meta(view_shape, view_strides)
        qual = "const " if const else ""
        self.decls.append(f"{qual}{ctype}* _emu_ptr_{p.name}")
        self.args.append(array)
        self.prologue.append(f"CArray<{qual}{ctype}> {local}(_emu_ptr_{p.name}, _emu_meta + {offset});")

    def add_scalar(self, p, value, ctype: str):
        self.decls.append(f"{ctype} {p.name}")
        self.args.append(value)

    def add_indexer(self, name: str, shape):
        offset = len(self.meta)
        self.meta += _meta(shape, [0] * len(shape))
        self.prologue.append(f"CIndexer<> {name}(_emu_meta + {offset});")

    def finish(self):
        self.decls.append("const long long* _emu_meta")
        self.args.append(np.array(self.meta or [0], dtype=np.int64))

    def copy_outputs_back(self):
        for user, stand_in in self.copy_back:
            user[...] = stand_in


def _contiguous_input(array: np.ndarray) -> np.ndarray:
    """What the kernel's pointer reads: the array itself, or a C-contiguous aligned copy (device memory
    always is; broadcasting is done by the strides the kernel is given, never by copying)."""
    return np.require(array, requirements=["C", "A"])


def _contiguous_output(array: np.ndarray, launch: _Launchable) -> np.ndarray:
    stand_in = np.require(array, requirements=["C", "A"])
    if stand_in is array:
        return array
    # A copy with the current contents (a kernel may leave elements untouched), written back after the launch.
    launch.copy_back.append((array, stand_in))
    return stand_in


def _strides_for(array: np.ndarray, shape) -> list:
    """Byte strides that read contiguous `array` broadcast to `shape` (0 along broadcast dimensions)."""
    lead = len(shape) - array.ndim
    return [0 if k < lead or (array.shape[k - lead] == 1 and n != 1) else array.strides[k - lead]
            for k, n in enumerate(shape)]


def _typedefs(found: dict) -> str:
    return "".join(f"typedef {_c_name(dtype)} {name};\n" for name, dtype in sorted(found.items()))


class _KernelCache:
    """Compiled RawKernels by generated source (the emulator caches the library on disk too)."""

    def __init__(self, options):
        self.options = (options,) if isinstance(options, str) else tuple(options)
        self._kernels: dict[str, RawKernel] = {}
        self.codes: dict[tuple, str] = {}  # array dtypes -> generated source, as CuPy's cached_codes

    def get(self, code: str, name: str, args) -> RawKernel:
        self.codes[tuple(a.dtype for a in args[:-1] if isinstance(a, np.ndarray))] = code
        if code not in self._kernels:
            self._kernels[code] = RawKernel(code, name, self.options)
        return self._kernels[code]


class _CachedCodes:
    """CuPy's debugging view of the generated CUDA C: ``kernel.cached_code`` after a call."""

    @property
    def cached_codes(self) -> dict:
        """The generated source of each call signature so far, keyed by the dtypes of the array arguments."""
        return dict(self._cache.codes)

    @property
    def cached_code(self) -> str:
        if not self._cache.codes:
            raise RuntimeError(f"kernel '{self.name}' has not been called yet: its code is generated per call")
        return next(iter(self._cache.codes.values()))


def _pop_options(kwargs: dict, names) -> list:
    values = [kwargs.pop(n, default) for n, default in names]
    if kwargs:
        raise TypeError(f"Wrong arguments {kwargs}")
    return values


# -- ElementwiseKernel --------------------------------------------------------------------------------
class ElementwiseKernel(_CachedCodes):
    """``cupy.ElementwiseKernel`` on the emulator: ``ElementwiseKernel('T x, T y', 'T z', 'z = x - y')``.

    Call it with the inputs (outputs are allocated in the broadcast shape and the decided dtypes) or with
    inputs and outputs; ``size=`` sets the loop size when every array is ``raw``; ``block_size=`` the
    threads per block (128)."""

    def __init__(self, in_params, out_params, operation, name="kernel", reduce_dims=True, preamble="",
                 no_return=False, return_tuple=False, loop_prep="", after_loop="", options=()):
        _check_kernel_name(name)
        self.in_params, self.out_params = _parse_params(in_params, True), _parse_params(out_params, False)
        self.nin, self.nout = len(self.in_params), len(self.out_params)
        self.nargs = self.nin + self.nout
        if "i" in [p.name for p in self.in_params + self.out_params]:
            raise ValueError("Can not use 'i' as a parameter name")
        self.operation, self.name, self.reduce_dims, self.preamble = operation, name, reduce_dims, preamble
        self.no_return, self.return_tuple = no_return, return_tuple
        self.loop_prep, self.after_loop, self.options = loop_prep, after_loop, options
        self.__name__ = name
        self._cache = _KernelCache(options)

    def __call__(self, *args, **kwargs):
        size, block_size, stream = _pop_options(kwargs, (("size", None), ("block_size", 128), ("stream", None)))
        stream_of(stream, self.name)  # launches finish before returning: any stream is already in order
        if isinstance(block_size, bool) or not isinstance(block_size, numbers.Integral) or block_size <= 0:
            raise ValueError("block_size must be greater than zero")
        if len(args) not in (self.nin, self.nargs):
            raise TypeError(f"Wrong number of arguments for {self.name!r}. It must be either {self.nin} or "
                            f"{self.nargs} (with outputs), but given {len(args)}.")
        args = [_check_input(a, self.name, k) for k, a in enumerate(args)]
        ins, outs = args[:self.nin], args[self.nin:]
        for a in outs:
            if not isinstance(a, np.ndarray):
                raise TypeError("Output arguments must be cupy.ndarray (here: NumPy arrays), got "
                                f"{type(a).__name__}")
        shape = self._loop_shape(args, size)
        in_types, out_types, found = _decide_types(
            self.in_params, self.out_params,
            [a.dtype if isinstance(a, np.ndarray) else None for a in ins], [a.dtype for a in outs])
        outs = self._outputs(outs, out_types, shape, size is not None)
        result = None if self.no_return else outs[0] if self.nout == 1 and not self.return_tuple else tuple(outs)
        if 0 in shape:
            return result
        self._launch(ins, outs, in_types, out_types, found, shape, int(block_size))
        return result

    def _loop_shape(self, args, size) -> tuple:
        params = self.in_params + self.out_params
        broadcast = [a for p, a in zip(params, args) if not p.raw and isinstance(a, np.ndarray)]
        if size is not None:
            if isinstance(size, bool) or not isinstance(size, numbers.Integral) or size < 0:
                raise TypeError(f"size must be a non-negative int, got {size!r}")
            if broadcast:
                raise ValueError("Specified 'size' can be used only if all of the ndarray are 'raw'.")
            return (int(size),)
        if not broadcast:
            raise ValueError("Loop size is undecided.")
        return _broadcast_shape(broadcast)

    def _outputs(self, outs, out_types, shape, size_given) -> list:
        if not outs:
            if any(p.raw for p in self.out_params) and not size_given:
                raise ValueError("Output array size is Undecided")
            return [np.empty(shape, dtype) for dtype in out_types]
        for p, a in zip(self.out_params, outs):
            if not p.raw and a.shape != shape:
                raise ValueError(f"Out shape is mismatched: output '{p.name}' has shape {a.shape}, the loop {shape}")
        return outs

    def _launch(self, ins, outs, in_types, out_types, found, shape, block_size):
        launch = _Launchable()
        body = []
        for p, a, dtype in zip(self.in_params + self.out_params, ins + outs, in_types + out_types):
            ctype, is_input = p.ctype(), p.is_const
            if not isinstance(a, np.ndarray):
                launch.add_scalar(p, _scalar_value(a, dtype), ctype)
                continue
            a_run = _contiguous_input(a) if is_input else _contiguous_output(a, launch)
            if p.raw:
                launch.add_array(p, a_run, a_run.shape, a_run.strides, ctype, is_input, p.name)
            else:
                launch.add_array(p, a_run, shape, _strides_for(a_run, shape), ctype, is_input, f"_raw_{p.name}")
                body.append(f"{'const ' if is_input else ''}{ctype} &{p.name} = _raw_{p.name}[_ind.get()];")
        launch.add_indexer("_ind", shape)
        launch.finish()
        code = self._source(launch, body, found)
        kernel = self._cache.get(code, self.name, launch.args)
        n = int(np.prod(shape))
        grid = min(-(-n // block_size), 64)  # a grid-stride loop covers the rest, as CuPy's CUPY_FOR
        kernel((grid,), (block_size,), tuple(launch.args))
        launch.copy_outputs_back()

    def _source(self, launch, body, found) -> str:
        return _with_includes(f"{_HEADER}{_typedefs(found)}{self.preamble}\n"
                f'extern "C" __global__ void {self.name}({", ".join(launch.decls)}) {{\n'
                + "".join(f"  {line}\n" for line in launch.prologue)
                + f"  {self.loop_prep};\n"
                + "  for (ptrdiff_t i = (ptrdiff_t)blockIdx.x * blockDim.x + threadIdx.x; i < _ind.size();\n"
                + "       i += (ptrdiff_t)blockDim.x * gridDim.x) {\n"
                + "    _ind.set(i);\n"
                + "".join(f"    {line}\n" for line in body)
                + f"    {self.operation};\n  }}\n  {self.after_loop};\n}}\n")


# -- ReductionKernel ----------------------------------------------------------------------------------
def _reduce_axes(axis, ndim: int) -> tuple:
    if axis is None:
        return tuple(range(ndim))
    axes = tuple(axis) if isinstance(axis, (tuple, list)) else (axis,)
    normalized = []
    for ax in axes:
        if isinstance(ax, bool) or not isinstance(ax, numbers.Integral):
            raise TypeError(f"axis must be an int or a tuple of ints, got {axis!r}")
        if not -ndim <= ax < ndim:
            raise np.exceptions.AxisError(int(ax), ndim)
        normalized.append(int(ax) % ndim)
    if len(set(normalized)) != len(normalized):
        raise ValueError("duplicate value in 'axis'")
    return tuple(sorted(normalized))


class ReductionKernel(_CachedCodes):
    """``cupy.ReductionKernel`` on the emulator: ``ReductionKernel('T x', 'T y', 'x * x', 'a + b',
    'y = sqrt(a)', '0', 'l2norm')`` then ``kernel(x, axis=1, keepdims=False)``.  Returns the first output,
    as CuPy does."""

    def __init__(self, in_params, out_params, map_expr, reduce_expr, post_map_expr, identity,
                 name="reduce_kernel", reduce_type=None, reduce_dims=True, preamble="", options=()):
        _check_kernel_name(name)
        self.in_params, self.out_params = _parse_params(in_params, True), _parse_params(out_params, False)
        self.nin, self.nout = len(self.in_params), len(self.out_params)
        self.nargs = self.nin + self.nout
        self.map_expr, self.reduce_expr, self.post_map_expr = map_expr, reduce_expr, post_map_expr
        self.identity = "" if identity is None else str(identity)
        self.name, self.reduce_dims, self.preamble, self.options = name, reduce_dims, preamble, options
        self.reduce_type = self.out_params[0].ctype() if reduce_type is None else reduce_type
        self.__name__ = name
        self._cache = _KernelCache(options)

    def __call__(self, *args, **kwargs):
        out, axis, keepdims, stream = _pop_options(
            kwargs, (("out", None), ("axis", None), ("keepdims", False), ("stream", None)))
        stream_of(stream, self.name)
        if len(args) not in (self.nin, self.nargs):
            raise TypeError(f"Wrong number of arguments for {self.name}")
        args = [_check_input(a, self.name, k) for k, a in enumerate(args)]
        ins, outs = args[:self.nin], args[self.nin:]
        if out is not None:
            if self.nout != 1:
                raise NotImplementedError("out= is for a kernel with one output; pass several outputs positionally")
            if outs:
                raise ValueError("cannot specify 'out' as both a positional and keyword argument")
            outs = [out]
        for a in outs:
            if not isinstance(a, np.ndarray):
                raise TypeError(f"Output arguments must be cupy.ndarray (here: NumPy arrays), got {type(a).__name__}")
        broadcast = [a for p, a in zip(self.in_params, ins) if not p.raw and isinstance(a, np.ndarray)]
        if not broadcast:
            raise ValueError("Loop size is undecided.")
        shape = _broadcast_shape(broadcast)
        in_types, out_types, found = _decide_types(
            self.in_params, self.out_params,
            [a.dtype if isinstance(a, np.ndarray) else None for a in ins], [a.dtype for a in outs])
        reduce_axes = _reduce_axes(axis, len(shape))
        kept_axes = tuple(k for k in range(len(shape)) if k not in reduce_axes)
        out_shape = tuple(1 if k in reduce_axes else n for k, n in enumerate(shape)) if keepdims \
            else tuple(shape[k] for k in kept_axes)
        outs = self._outputs(outs, out_types, out_shape)
        if outs[0].size == 0:
            return outs[0]
        if self.identity == "" and 0 in shape:
            raise ValueError(f"zero-size array to reduction operation {self.name} which has no identity")
        permuted = reduce_axes + kept_axes
        if permuted != tuple(range(len(shape))) and any(p.raw for p in self.in_params):
            raise NotImplementedError("Illegal conditions: a raw input cannot be reduced along these axes "
                                      "(CuPy would have to transpose it)")
        self._launch(ins, outs, in_types, out_types, found, shape, permuted, out_shape)
        return outs[0]

    def _outputs(self, outs, out_types, out_shape) -> list:
        if not outs:
            if any(p.raw for p in self.out_params):
                raise ValueError("Output array size is Undecided")
            return [np.empty(out_shape, dtype) for dtype in out_types]
        for p, a in zip(self.out_params, outs):
            if not p.raw and a.shape != out_shape:
                raise ValueError(f"Out shape is mismatched: output '{p.name}' has shape {a.shape}, "
                                 f"the reduction gives {out_shape}")
        return outs

    def _launch(self, ins, outs, in_types, out_types, found, shape, permuted, out_shape):
        launch = _Launchable()
        in_exprs, out_exprs = [], []
        in_shape = tuple(shape[k] for k in permuted)  # reduced axes first, kept axes last, as CuPy's _in_ind
        for p, a, dtype in zip(self.in_params, ins, in_types):
            if not isinstance(a, np.ndarray):
                launch.add_scalar(p, _scalar_value(a, dtype), p.ctype())
            elif p.raw:
                a = _contiguous_input(a)
                launch.add_array(p, a, a.shape, a.strides, p.ctype(), True, p.name)
            else:
                a = _contiguous_input(a)
                strides = _strides_for(a, shape)
                launch.add_array(p, a, in_shape, [strides[k] for k in permuted], p.ctype(), True, f"_raw_{p.name}")
                in_exprs.append(f"const {p.ctype()} {p.name} = _raw_{p.name}[_in_ind.get()];")
        for p, a in zip(self.out_params, outs):
            a_run = _contiguous_output(a, launch)
            if p.raw:
                launch.add_array(p, a_run, a_run.shape, a_run.strides, p.ctype(), False, p.name)
            else:
                launch.add_array(p, a_run, out_shape, a_run.strides, p.ctype(), False, f"_raw_{p.name}")
                out_exprs.append(f"{p.ctype()} &{p.name} = _raw_{p.name}[_out_ind.get()];")
        launch.add_indexer("_in_ind", in_shape)
        launch.add_indexer("_out_ind", out_shape)
        launch.finish()
        out_size = int(np.prod(out_shape))
        reduce_size = int(np.prod(in_shape)) // out_size
        threads = 1 << max(0, min(reduce_size, 128) - 1).bit_length()  # a power of two for the tree
        code = self._source(launch, in_exprs, out_exprs, found, threads)
        kernel = self._cache.get(code, self.name, launch.args)
        kernel((min(out_size, 64),), (threads,), tuple(launch.args))
        launch.copy_outputs_back()

    def _source(self, launch, in_exprs, out_exprs, found, threads) -> str:
        identity = self.identity
        return _with_includes(f"{_HEADER}{_typedefs(found)}{self.preamble}\n"
                f"#define REDUCE(a, b) ({self.reduce_expr})\n"
                f"#define POST_MAP(a) ({self.post_map_expr})\n"
                f"typedef {self.reduce_type} _type_reduce;\n"
                f'extern "C" __global__ void {self.name}({", ".join(launch.decls)}) {{\n'
                f"  __shared__ _type_reduce _sdata[{threads}];\n"
                + "".join(f"  {line}\n" for line in launch.prologue)
                + "  const ptrdiff_t _out_size = _out_ind.size();\n"
                "  const ptrdiff_t _reduce_size = _out_size ? _in_ind.size() / _out_size : 0;\n"
                "  const unsigned int _tid = threadIdx.x;\n"
                "  // One block per output element (grid-stride); its threads split the reduction, then a tree\n"
                "  // in shared memory combines their partial results.\n"
                "  for (ptrdiff_t _i = blockIdx.x; _i < _out_size; _i += gridDim.x) {\n"
                f"    _type_reduce _s = _type_reduce({identity});\n"
                f"    for (ptrdiff_t _J = _tid; _J < _reduce_size; _J += {threads}) {{\n"
                "      const ptrdiff_t _j = _J * _out_size + _i;\n"
                "      _in_ind.set(_j);\n"
                + "".join(f"      {line}\n" for line in in_exprs)
                + f"      _type_reduce _a = static_cast<_type_reduce>({self.map_expr});\n"
                "      _s = REDUCE(_s, _a);\n"
                "    }\n"
                "    _sdata[_tid] = _s;\n"
                "    __syncthreads();\n"
                f"    for (unsigned int _half = {threads} / 2; _half > 0; _half >>= 1) {{\n"
                "      if (_tid < _half) {\n"
                "        _type_reduce _a = _sdata[_tid], _b = _sdata[_tid + _half];\n"
                "        _sdata[_tid] = REDUCE(_a, _b);\n"
                "      }\n"
                "      __syncthreads();\n"
                "    }\n"
                "    if (_tid == 0) {\n"
                "      _s = _sdata[0];\n"
                "      _out_ind.set(_i);\n"
                + "".join(f"      {line}\n" for line in out_exprs)
                + "      POST_MAP(_s);\n"
                "    }\n"
                "    __syncthreads();  // _sdata is reused by the next output\n"
                "  }\n}\n")
