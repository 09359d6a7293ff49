"""Tensor methods torch has that are not ops of their own, which libraries and tutorials call on the way to
something else: ``fill_diagonal_``, ``dim_order``, ``as_subclass``, ``apply_`` / ``map_`` / ``map2_`` (a
Python function over the elements), the deprecated ``resize`` / ``resize_as``, ``slice_inverse``,
``module_load`` (what ``load_state_dict`` asks a parameter), and the questions a library asks a tensor before
it picks a code path (``is_sparse``, ``is_quantized``, ``is_mps``, ...: all False for minilora's dense CPU/GPU
tensors, as torch's answers for a dense CPU tensor).

What minilora has no tensors for is refused by name, never answered with a dense stand-in: sparse layouts
(``to_sparse``, ``torch.sparse_coo_tensor``: NotImplementedError), quantized tensors (``q_scale``, ...: torch's
own error for a tensor that is not quantized), complex32 (``chalf``), and the functions torch removed (``eig``,
``lstsq``, ``solve``, ``symeig``: torch's RuntimeError, which says what replaced them).
"""
import math
import numbers
import operator
import warnings
import weakref

import numpy as np

from .. import dtypes
from ..tensor import Function, Tensor, _grad_dtype_of, _grad_dtypes, name_node

# ---- fill_diagonal_ ---------------------------------------------------------------------------------------------


def fill_diagonal_(self, fill_value, wrap=False):
    """``x.fill_diagonal_(fill_value, wrap=False)``: the main diagonal (``x[i, i, ..., i]``) set to
    ``fill_value``, in place. As ATen: a view of ``x``'s storage whose one stride is the sum of ``x``'s strides,
    filled; a tensor of more than 2 dimensions must have them all equal. ``wrap=True`` continues a tall
    matrix's diagonal after every ``width + 1`` rows (NumPy's fill_diagonal rule)."""
    fill_value = _number_argument("fill_diagonal_", "fill_value", fill_value, 1)
    if wrap is not True and wrap is not False:
        raise TypeError(f"fill_diagonal_(): argument 'wrap' must be bool, not {type(wrap).__name__}")
    if self.ndim < 2:
        raise RuntimeError("dimensions must larger than 1")
    height, width = self.shape[0], self.shape[1]
    if self.ndim > 2 and any(n != height for n in self.shape):
        raise RuntimeError("all dimensions of input must be of equal length")
    if self.numel() == 0:  # (no diagonal to fill: minilora's as_strided cannot address an empty storage)
        return self
    step, offset = sum(self.stride()), self.storage_offset()
    size = min(height, width)
    self.as_strided((size,), (step,), offset).fill_(fill_value)
    if wrap and self.ndim == 2 and height > width + 1:
        # (ATen counts the wrapped part from numel, as if x were contiguous)
        wrapped = -(-self.numel() // (width + 1)) - size
        self.as_strided((wrapped,), (step,), offset + self.stride(0) * (width + 1)).fill_(fill_value)
    return self


def _number_argument(fn, name, value, position):
    """A Python number (or a 0-d tensor's value), as torch's argument parser takes a Number."""
    if isinstance(value, Tensor) and value.ndim == 0:
        return value.item()
    if isinstance(value, (numbers.Number, np.number, np.bool_)):
        return value
    raise TypeError(f"{fn}(): argument '{name}' (position {position}) must be Number, not {type(value).__name__}")


# ---- layout questions -------------------------------------------------------------------------------------------


def const_data_ptr(self):
    """``x.const_data_ptr()``: ``data_ptr()`` for code that promises not to write (the same address)."""
    return self.data_ptr()


def dim_order(self, *, ambiguity_check=False):
    """``x.dim_order(ambiguity_check=False)``: the dimensions from outermost to innermost in memory (``(0, 2, 3,
    1)`` for channels_last), as torch's: its elementwise-output permutation. ``ambiguity_check=True`` refuses a
    tensor with several right answers (a dimension of size 1, two equal strides); a list of memory formats
    lets such a tensor through where it is laid out in exactly one of them."""
    from .. import factories
    if not isinstance(ambiguity_check, bool) and not (
            isinstance(ambiguity_check, list) and all(isinstance(f, factories.memory_format) for f in ambiguity_check)):
        raise TypeError("The ambiguity_check argument must be a bool or a list of memory formats.")
    formats = ambiguity_check if isinstance(ambiguity_check, list) else []
    if ambiguity_check is not False and _several_orders(self):
        if sum(bool(self.is_contiguous(memory_format=f)) for f in formats) != 1:
            raise RuntimeError("The tensor does not have unique dim order, or cannot map to exact one of the given "
                               "memory formats.")
    order, ambiguous = _logical_to_physical(self, check=ambiguity_check is not False)
    if ambiguous:
        raise RuntimeError("The tensor does not have unique dim order.")
    return tuple(order)


def _several_orders(tensor):
    """Could the dimensions be listed in more than one order (a size-1 dimension, neighbours of equal stride)?"""
    strides = tensor.stride()
    return any(a == b for a, b in zip(strides, strides[1:])) or any(n == 1 for n in tensor.shape)


def _logical_to_physical(tensor, check):
    """torch._prims_common's compute_elementwise_output_logical_to_physical_perm for one tensor: contiguous and
    channels_last answered at once, else an insertion sort of the dimensions by stride, innermost first (a stride
    of 0 has no say; equal strides put the smaller size inside), and whether some neighbours stayed unordered."""
    ndim = tensor.ndim
    if ndim <= 1:
        return list(range(ndim)), False
    from .. import factories
    contiguous = tensor.is_contiguous()
    # (prims asks channels_last only, which a tensor of other than 4 dimensions is not, channels_last_3d aside)
    channels_last = ndim == 4 and tensor.is_contiguous(memory_format=factories.channels_last)
    if contiguous and not channels_last:
        return list(range(ndim)), False
    if channels_last and not contiguous:
        return [0, *range(2, ndim), 1], False
    shape, strides = tensor.shape, tensor.stride()

    def at_least(a, b):  # (prims' ge: a multiple counts as larger)
        return b == 0 or (a != 0 and (a >= b or a % b == 0))

    def compare(a, b):  # 1: b goes inside a; -1: it stays outside; 0: no opinion
        sa, sb = strides[a], strides[b]
        if sa == 0 or sb == 0:
            return 0
        if sa == sb:
            return 0 if at_least(shape[b], shape[a]) else 1
        if at_least(sb, sa):
            return -1
        return 1 if at_least(sa, sb) else 0

    perm = list(reversed(range(ndim)))  # (innermost first while sorting)
    for i in range(1, ndim):
        moving = i
        for j in reversed(range(i)):
            order = compare(perm[j], perm[moving])
            if order > 0:
                perm[j], perm[moving] = perm[moving], perm[j]
                moving = j
            elif order < 0:
                break
    ambiguous = check and any(compare(perm[i], perm[i + 1]) != -1 for i in range(ndim - 1))
    return list(reversed(perm)), ambiguous


def as_subclass(self, cls):
    """``x.as_subclass(cls)``: a tensor of class ``cls`` (a Tensor subclass) over ``x``'s memory: torch's alias of
    ``x`` (``x[...]``: a view, its node AliasBackward0, so gradients reach ``x``), re-classed."""
    if not (isinstance(cls, type) and issubclass(cls, Tensor)):
        raise TypeError("Creating a Tensor subclass from a class that does not inherit from Tensor is not possible. "
                        "Make sure your class inherits from Tensor.")
    alias = self[...]
    if cls is Tensor:
        return alias
    made = object.__new__(cls)  # (a subclass may have a __dict__ Tensor's slots lack: no __class__ assignment)
    for slot in Tensor.__slots__:
        if slot != "__weakref__" and hasattr(alias, slot):
            setattr(made, slot, getattr(alias, slot))
    return made


def chalf(self, memory_format=None):
    """``x.chalf()``: complex32, which minilora does not have (NumPy has no complex32): refused by name."""
    raise NotImplementedError("chalf(): complex32 (torch.chalf, 'ComplexHalf') is not supported by minilora: NumPy "
                              "has no complex32 dtype; use cfloat() (complex64)")


# ---- a Python function over the elements: apply_, map_, map2_ ----------------------------------------------------


def apply_(self, callable):  # noqa: A002 (torch's argument name)
    """``x.apply_(fn)``: each element replaced by ``fn(element)`` (a Python number in, a number out, converted
    to x's dtype as torch's C cast does). Slow, and on the CPU only, as torch's."""
    return _map_elements(self, "apply_", callable, [])


def map_(self, tensor, callable):  # noqa: A002
    """``x.map_(y, fn)``: ``x[i] = fn(x[i], y[i])``, ``y`` broadcast to x's shape and of x's dtype."""
    return _map_elements(self, "map_", callable, [("other", tensor)])


def map2_(self, x, y, callable):  # noqa: A002
    """``self.map2_(x, y, fn)``: ``self[i] = fn(self[i], x[i], y[i])``."""
    return _map_elements(self, "map2_", callable, [("x", x), ("y", y)])


def _map_elements(self, name, fn, others):
    for position, (label, other) in enumerate(others, 1):
        if not isinstance(other, Tensor):
            raise TypeError(f"{name}(): argument '{label}' (position {position}) must be Tensor, not "
                            f"{type(other).__name__}")
    if self._requires_grad or any(other._requires_grad for _, other in others):
        raise RuntimeError(f"Can't call {name}() on Variable that requires grad. Use var.detach().{name}() instead.")
    if self._device.type not in ("cpu", "meta"):
        raise TypeError(f"{name} is only implemented on CPU tensors")
    for label, other in others:
        if other.dtype != self.dtype:
            where = f"'{label}'" if name == "map_" else f"argument '{label}'"
            raise TypeError(f"{name}: expected {_legacy_name(self.dtype)} for {where} "
                            f"(got {_legacy_name(other.dtype)})")
    operands = [other.expand(self.shape) for _, other in others]
    if self._device.type == "meta":  # (no values to call it on: torch's meta tensor comes back as it was)
        return self
    columns = [self.reshape(-1).tolist()] + [o.reshape(-1).tolist() for o in operands]
    results = [_as_element(fn(*values), self.dtype) for values in zip(*columns)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # (1e6 in float16 is inf, as C's cast)
        new = np.array(results, dtype=np.int64 if self.dtype.kind in "iu" else None).astype(self.dtype)
    self._array[...] = new.reshape(self._array.shape)
    self._bump_version()
    return self


def _as_element(value, dtype):
    """``value`` (fn's result) as the Python number torch's element conversion makes of it."""
    if dtype.kind == "c":
        return complex(value)
    if dtype.kind == "b":
        return bool(value)
    if dtype.kind in "iu":
        value = float(value) if isinstance(value, (float, np.floating)) else operator.index(value)
        if isinstance(value, int) and not -2 ** 63 <= value < 2 ** 63:
            raise ValueError("Overflow when unpacking long long")
        try:  # (c10's overflow rule: a float past the type's range, or nan, refused; uint8 takes -1 as 255)
            return dtypes.checked_number(value, dtype)
        except RuntimeError:
            raise RuntimeError(f"value cannot be converted to type {dtype.name} without overflow") from None
    if not isinstance(value, (numbers.Real, np.bool_)):
        raise TypeError(f"must be real number, not {type(value).__name__}")
    return float(value)


def _legacy_name(dtype):
    return f"torch.{dtypes.torch_name(dtype)}Tensor"


# ---- the deprecated out-of-place resize, slice_inverse, module_load, grad_dtype ----------------------------------


class Resize(Function):
    """torch.autograd._functions.Resize: the input's elements in a new shape (a view where it is contiguous);
    the gradient reshaped back."""

    @staticmethod
    def forward(ctx, a, sizes):
        ctx.input_shape = a.shape
        return np.ascontiguousarray(a).reshape(sizes)

    @staticmethod
    def backward(ctx, g):
        return np.ascontiguousarray(g).reshape(ctx.input_shape)


def resize(self, *sizes):
    """``x.resize(2, 3)`` (deprecated, torch's warning): ``x``'s elements in that shape, the count unchanged."""
    warnings.warn("non-inplace resize is deprecated", UserWarning, stacklevel=2)
    return _resized(self, sizes)


def resize_as(self, tensor):
    """``x.resize_as(y)`` (deprecated, torch's warning): ``x.resize(*y.shape)``."""
    warnings.warn("non-inplace resize_as is deprecated", UserWarning, stacklevel=2)
    return _resized(self, tuple(tensor.shape))


def _resized(self, sizes):
    count = math.prod(sizes) if all(isinstance(n, numbers.Integral) for n in sizes) else None
    if count != self.numel():  # (torch multiplies what it was given: resize((3, 2)) is a tuple, refused)
        shown = count if count is not None else "x".join(map(str, sizes))
        raise RuntimeError(f"requested resize to {'x'.join(map(str, sizes))} ({shown} elements in total), but the "
                           f"given tensor has a size of {'x'.join(map(str, self.shape))} ({self.numel()} elements). "
                           f"autograd's resize can only change the shape of a given tensor, while preserving the "
                           f"number of elements. ")
    return name_node(Resize.apply(self, sizes=tuple(int(n) for n in sizes)), "ResizeBackward")


def slice_inverse(self, src, dim=0, start=None, end=None, step=1):
    """``x.slice_inverse(src, dim=0, start=None, end=None, step=1)``: the view of ``x``'s storage with ``src``'s
    sizes, strides and offset (ATen's: the slice arguments are not read)."""
    return self.as_strided(tuple(src.shape), src.stride(), src.storage_offset())


def module_load(self, other, assign=False):
    """``param.module_load(value, assign=False)``: what ``load_state_dict`` makes of ``value`` for this
    parameter: ``value`` itself, detached, when assigning; else ``value`` copied into ``self``, detached."""
    if assign:
        return other.detach()
    return self.copy_(other).detach()


def _grad_dtype(self):
    """``x.grad_dtype``: the dtype ``x.grad`` takes: ``x``'s own unless set (a leaf's only, as torch's)."""
    if self._ctx is not None:
        raise RuntimeError("grad_dtype can only be accessed on leaf tensors.")
    return _grad_dtype_of(self)


def _set_grad_dtype(self, dtype):
    """``x.grad_dtype = torch.float64`` (or None: any dtype): the backward pass casts the gradients reaching
    ``x`` to it, and ``x.grad = g`` must have it, as torch's. Set on a leaf only."""
    if self._ctx is not None:
        raise RuntimeError("grad_dtype can only be set on leaf tensors.")
    if dtype is not None and not isinstance(dtype, np.dtype):
        raise RuntimeError(f"grad_dtype must be a torch.dtype or None, but got {type(dtype).__name__}")
    if dtype == self.dtype:
        _grad_dtypes.pop(id(self), None)
        return
    _grad_dtypes[id(self)] = (weakref.ref(self, lambda _, key=id(self): _grad_dtypes.pop(key, None)), dtype)


def record_stream(self, s):
    """``x.record_stream(stream)``: a CUDA caching-allocator hint. CuPy's memory pool frees an array when it is
    released, so there is nothing to record on ``cuda``; on the CPU, torch's error."""
    if self._device.type == "cuda":
        return None
    if not hasattr(s, "ptr") and not type(s).__name__.endswith("Stream"):
        raise RuntimeError("unknown parameter type")
    raise NotImplementedError(f"Could not run 'aten::record_stream' with arguments from the "
                              f"'{self._device.type.upper()}' backend.")


# ---- what a dense CPU tensor answers to library checks -----------------------------------------------------------


def _false(self):
    return False


_FALSE_PROPERTIES = ("is_sparse", "is_sparse_csr", "is_quantized", "is_mkldnn", "is_nested", "is_xpu", "is_mps",
                     "is_ipu", "is_xla", "is_vulkan", "is_maia", "is_mtia")


def is_distributed(self):
    return False


def sparse_dim(self):
    """A dense tensor's sparse dimensions: none (torch's answer)."""
    return 0


def dense_dim(self):
    """A dense tensor's dense dimensions: all of them (torch's answer)."""
    return self.ndim


def to_dense(self, dtype=None, *, masked_grad=None):
    """``x.to_dense()``: a dense tensor is its own (cast to ``dtype`` where given)."""
    return self if dtype is None else self.to(dtypes.dtype_argument("to_dense", dtype))


def dequantize(self):
    """``x.dequantize()`` of a tensor that is not quantized: itself as float32 (torch's rule: a float32 tensor
    comes back as it is)."""
    return self if self.dtype == np.float32 else self.to(dtypes.float32)


def _layout_refusal(name, expected):
    def refuse(self, *args, **kwargs):
        raise RuntimeError(f"{name} expected {expected} layout but got Strided")
    refuse.__name__ = name
    refuse.__doc__ = f"``x.{name}()``: a dense (strided) tensor has none; torch's error."
    return refuse


_LAYOUT_REFUSALS = {"is_coalesced": "sparse coordinate tensor", "coalesce": "sparse coordinate tensor",
                    "indices": "sparse coordinate tensor", "values": "sparse tensor",
                    "crow_indices": "sparse row compressed tensor", "col_indices": "sparse row compressed tensor",
                    "ccol_indices": "sparse column compressed tensor",
                    "row_indices": "sparse column compressed tensor"}

SPARSE_UNSUPPORTED = "minilora has no sparse tensors (every tensor is dense, torch.strided)"


def _no_sparse(name):
    def refuse(*args, **kwargs):
        raise NotImplementedError(f"{name}: sparse tensors are not supported: {SPARSE_UNSUPPORTED}")
    refuse.__name__ = name
    refuse.__doc__ = f"``{name}``: refused by name ({SPARSE_UNSUPPORTED})."
    return refuse


_SPARSE_METHODS = ("to_sparse", "to_sparse_coo", "to_sparse_csr", "to_sparse_csc", "to_sparse_bsr", "to_sparse_bsc",
                   "sparse_mask", "sparse_resize_", "sparse_resize_and_clear_", "resize_as_sparse_")
SPARSE_FUNCTIONS = {name: _no_sparse(f"torch.{name}") for name in (
    "sparse_coo_tensor", "sparse_csr_tensor", "sparse_csc_tensor", "sparse_bsr_tensor", "sparse_bsc_tensor",
    "sparse_compressed_tensor")}


def _sparse_only(self, *args, **kwargs):
    raise RuntimeError("tensor.sspaddmm(...) can only be called on sparse tensors")  # (torch's, for smm too)


def _not_quantized(name):
    def refuse(self, *args, **kwargs):
        raise NotImplementedError(f"Could not run 'aten::{name}' with arguments from the "
                                  f"'{self._device.type.upper()}' backend: this tensor is not quantized (minilora has "
                                  f"no quantized tensors)")
    refuse.__name__ = name
    return refuse


_QUANTIZED = ("int_repr", "q_scale", "q_zero_point", "qscheme", "q_per_channel_scales", "q_per_channel_zero_points",
              "q_per_channel_axis")

_REMOVED = {  # (torch's words: each says what replaced it)
    "eig": "`torch.linalg.eig` returns complex tensors of dtype `cfloat` or `cdouble` rather than real tensors "
           "mimicking complex tensors.\n\nL, _ = torch.eig(A) should be replaced with:\nL_complex = "
           "torch.linalg.eigvals(A)\n\nand\n\nL, V = torch.eig(A, eigenvectors=True) should be replaced with:\n"
           "L_complex, V_complex = torch.linalg.eig(A)",
    "lstsq": "`torch.lstsq` is deprecated in favor of `torch.linalg.lstsq`.\n`torch.linalg.lstsq` has reversed "
             "arguments and does not return the QR decomposition in the returned tuple (although it returns other "
             "information about the problem).\n\nTo get the QR decomposition consider using `torch.linalg.qr`.\n\n"
             "The returned solution in `torch.lstsq` stored the residuals of the solution in the last m - n columns "
             "of the returned value whenever m > n. In torch.linalg.lstsq, the residuals are in the field 'residuals' "
             "of the returned named tuple.\n\nThe unpacking of the solution, as in\nX, _ = torch.lstsq(B, A).solution"
             "[:A.size(1)]\nshould be replaced with:\nX = torch.linalg.lstsq(A, B).solution",
    "solve": "`torch.solve` is deprecated in favor of `torch.linalg.solve`. `torch.linalg.solve` has its arguments "
             "reversed and does not return the LU factorization.\n\nTo get the LU factorization see `torch.lu`, which "
             "can be used with `torch.lu_solve` or `torch.lu_unpack`.\nX = torch.solve(B, A).solution should be "
             "replaced with:\nX = torch.linalg.solve(A, B)",
    "symeig": "The default behavior has changed from using the upper triangular portion of the matrix by default to "
              "using the lower triangular portion.\n\nL, _ = torch.symeig(A, upper=upper) should be replaced with:\n"
              "L = torch.linalg.eigvalsh(A, UPLO='U' if upper else 'L')\n\nand\n\nL, V = torch.symeig(A, "
              "eigenvectors=True) should be replaced with:\nL, V = torch.linalg.eigh(A, UPLO='U' if upper else 'L')",
}


def _removed(name, advice):
    def refuse(*args, **kwargs):
        raise RuntimeError(f"This function was deprecated since version 1.9 and is now removed. {advice}")
    refuse.__name__ = name
    return refuse


_NO_BACKEND = {  # (torch's words on a build without these devices)
    "xpu": (AssertionError, "Torch not compiled with XPU enabled"),
    "ipu": (RuntimeError, "PyTorch is not linked with support for ipu devices"),
    "mtia": (AssertionError, "Torch not compiled with MTIA enabled. Ensure you have `import "
                             "mtia.host_runtime.torch_mtia.dynamic_library` in your python src file and include "
                             "`//mtia/host_runtime/torch_mtia:torch_mtia` as your target dependency!"),
}


def _no_backend(name):
    kind, message = _NO_BACKEND[name]

    def refuse(self, *args, **kwargs):
        raise kind(message)
    refuse.__name__ = name
    return refuse


def to_mkldnn(self, dtype=None):
    """``x.to_mkldnn()``: oneDNN's opaque layout, which minilora does not have: refused by name."""
    raise NotImplementedError("to_mkldnn(): minilora has no mkldnn (oneDNN) tensors: every tensor is dense, "
                              "torch.strided")


def to_padded_tensor(self, padding, output_size=None):
    """``x.to_padded_tensor(0.)``: a nested tensor's; a dense tensor has none (torch's error, named)."""
    raise NotImplementedError(f"Could not run 'aten::to_padded_tensor' with arguments from the "
                              f"'{self._device.type.upper()}' backend: it takes a nested tensor, which minilora does "
                              f"not have")


_REINFORCE = ("reinforce() was removed.\nUse torch.distributions instead.\nSee "
              "https://pytorch.org/docs/main/distributions.html\n\nInstead of:\n\nprobs = policy_network(state)\n"
              "action = probs.multinomial()\nnext_state, reward = env.step(action)\naction.reinforce(reward)\n"
              "action.backward()\n\nUse:\n\nprobs = policy_network(state)\n# NOTE: categorical is equivalent to "
              "what used to be called multinomial\nm = torch.distributions.Categorical(probs)\naction = m.sample()\n"
              "next_state, reward = env.step(action)\nloss = -m.log_prob(action) * reward\nloss.backward()\n")


def reinforce(self, reward):
    raise RuntimeError(_REINFORCE)


def _volatile(self):
    warnings.warn("volatile was removed (Variable.volatile is always False)", UserWarning, stacklevel=2)
    return False


def _set_volatile(self, value):
    warnings.warn("volatile was removed and now has no effect. Use `with torch.no_grad():` instead.", UserWarning,
                  stacklevel=2)


def _install():
    methods = {"fill_diagonal_": fill_diagonal_, "const_data_ptr": const_data_ptr, "dim_order": dim_order,
               "as_subclass": as_subclass, "chalf": chalf, "apply_": apply_, "map_": map_, "map2_": map2_,
               "resize": resize, "resize_as": resize_as, "slice_inverse": slice_inverse, "module_load": module_load,
               "record_stream": record_stream, "is_distributed": is_distributed, "sparse_dim": sparse_dim,
               "dense_dim": dense_dim, "to_dense": to_dense, "dequantize": dequantize,
               "smm": _sparse_only, "sspaddmm": _sparse_only}
    methods.update({name: _layout_refusal(name, expected) for name, expected in _LAYOUT_REFUSALS.items()})
    methods.update({name: _no_sparse(f"Tensor.{name}") for name in _SPARSE_METHODS})
    methods.update({name: _not_quantized(name) for name in _QUANTIZED})
    methods.update({name: _removed(name, advice) for name, advice in _REMOVED.items()})
    methods.update({name: _no_backend(name) for name in _NO_BACKEND})
    methods.update({"to_mkldnn": to_mkldnn, "to_padded_tensor": to_padded_tensor, "reinforce": reinforce})
    for name, method in methods.items():
        setattr(Tensor, name, method)
    for name in _FALSE_PROPERTIES:
        setattr(Tensor, name, property(_false, doc=f"``x.{name}``: False (minilora's tensors are dense, on cpu, emu "
                                                   f"or cuda), as torch's for a dense CPU tensor."))
    Tensor.grad_dtype = property(_grad_dtype, _set_grad_dtype, doc=_grad_dtype.__doc__)
    Tensor.volatile = property(_volatile, _set_volatile, doc="Removed from torch: False, with its warning.")
    Tensor.name = property(lambda self: None, doc="A named tensor's name: None (minilora has no named tensors).")


_install()
