"""Tensor factories with torch's signatures: ``zeros``, ``full``, ``eye``, ``rand``, ``linspace``, ...

Shapes come as varargs or one tuple (``zeros(2, 3)`` == ``zeros((2, 3))``); ``dtype=``, ``device=``
and ``requires_grad=`` are keyword-only, as in torch. Without ``dtype`` a float factory makes the
default float dtype (``minilora.get_default_dtype()``, float32), ``full`` infers it from the fill value
(bool -> bool, int -> int64, float -> default float) and ``randint`` makes int64, as torch does.
The ``*_like`` versions take the dtype and device of ``input`` unless told otherwise.

Every value is made on the host with NumPy (random draws from minilora's one seeded generator,
``minilora.manual_seed``, or a ``generator=``) and then moved to the device.

The random family is here too: ``rand``/``randn``/``randint``/``randperm``/``multinomial``, torch's
sampling ops (``normal``, ``bernoulli``, ``poisson``, ``randint_like``), ``histc``, and the in-place
fills set on ``Tensor`` (``normal_``, ``uniform_``, ``exponential_``, ``random_``, ``bernoulli_``,
``geometric_``, ``cauchy_``, ``log_normal_``). They check their arguments as torch does, and their
numbers are torch's CPU numbers for the same seed: each calls the ``minilora.random.Generator``
method that is torch's kernel (see random.py).
"""
import builtins
import contextlib
import functools
import math
import numbers
import operator
import weakref

import numpy as np

from . import dtypes, float32_math, float32_sums, parallel as _parallel, return_types
from . import random as _random
from .device import META, all_devices as _all_devices, device as _get_device, xp_of
from .device import default_is_meta as _default_is_meta, raise_device_error_as_torch, unwritten_zeros as _unwritten
from .float32_math import CPU_CAPABILITY, FUSED_MULTIPLY_ADD, fused_multiply_add, fused_multiply_add64
from . import tensor as _tensor_module
from .tensor import _NAMED_BY_FIELDS, Function, Tensor, no_forward_formula, refuse_negative_strides, share_node

__all__ = ["zeros", "ones", "empty", "full", "zeros_like", "ones_like", "empty_like", "full_like",
           "eye", "rand", "randn", "rand_like", "randn_like", "randint", "linspace", "logspace", "is_tensor",
           "numel", "tril_indices", "triu_indices", "as_tensor", "asarray", "is_floating_point",
           "normal", "bernoulli", "poisson", "randint_like", "histc", "histogram"]


def _is_size_int(n):
    """An int a size takes: a Python or NumPy int (not a bool), or a 0-d integer tensor."""
    return not isinstance(n, bool) and (isinstance(n, (int, np.integer)) or (
        isinstance(n, Tensor) and n.ndim == 0 and n.dtype.kind in "iu"))


def int_sizes(size, fn):
    """``(2, 3)`` from ``f(2, 3)``, ``f((2, 3))`` or ``f([2, 3])``, refused in the words of torch's argument parser:
    a lone non-sequence "must be tuple of ints, not float"; a bad first element "found element of type float at
    pos 0" (given apart: "takes 1 positional argument but 2 were given"); a later one "failed to unpack the object
    at pos 2" (counted from 1)."""
    listed = len(size) == 1 and isinstance(size[0], (tuple, list))
    if len(size) == 1 and not listed and not _is_size_int(size[0]):
        raise TypeError(f"{fn}(): argument 'size' (position 1) must be tuple of ints, not {type(size[0]).__name__}")
    if size and not listed and not _is_size_int(size[0]):
        raise TypeError(f"{fn}() takes 1 positional argument but {len(size)} were given")
    size = tuple(size[0]) if listed else tuple(size)
    for i, n in enumerate(size):
        if _is_size_int(n):
            continue
        if i == 0:
            raise TypeError(f"{fn}(): argument 'size' (position 1) must be tuple of ints, but found element of type "
                            f"{type(n).__name__} at pos 0")
        raise TypeError(f"{fn}(): argument 'size' failed to unpack the object at pos {i + 1} with error \"type must be "
                        f"tuple of ints,but got {type(n).__name__}\"")
    return size


def _size(size, fn, negative_words=None):
    """``(2, 3)`` from ``f(2, 3)``, ``f((2, 3))`` or ``f([2, 3])``; torch's error for anything else: for a
    negative dimension, torch's words (naming no function) unless ``negative_words`` says others."""
    size = int_sizes(size, fn)
    for n in size:
        if int(n) < 0:
            raise RuntimeError(negative_words or
                               f"Trying to create tensor with negative dimension {int(n)}: {list(map(int, size))}")
    return tuple(int(n) for n in size)


def _sizes(size, keywords, fn, negative_words=None):
    """The shape from ``f(2, 3)``, ``f((2, 3))`` or torch's keyword spelling ``f(size=(2, 3))``
    (which ``**keywords`` holds: Python cannot also name the ``*size`` parameter as a keyword)."""
    if keywords:
        if set(keywords) != {"size"}:
            raise TypeError(f"{fn}() got an unexpected keyword argument '{sorted(keywords)[0]}'")
        if size:
            raise TypeError(f"{fn}() got multiple values for argument 'size'")
        size = (keywords["size"],)
    if not size:  # (torch.zeros() is no 0-d tensor: torch.zeros(()) is)
        raise TypeError(f'{fn}() missing 1 required positional arguments: "size"')
    return _size(size, fn, negative_words)


def _float_dtype(dtype, fn=None):
    """``dtype`` or the default float dtype; given the public ``fn``, checked as torch's parser checks it."""
    if dtype is None:
        return dtypes.get_default_dtype()
    return dtypes.to_dtype(dtype) if fn is None else dtypes.dtype_argument(fn, dtype)


def _made_drawn(array, dtype, device, requires_grad):
    """``_make`` of a random draw: on ``cuda`` it says once that torch's CUDA numbers are not reproduced."""
    made = _make(array, dtype, device, requires_grad)
    _random.note_cuda_draw(made.device)
    return made


def _make(array, dtype, device, requires_grad):
    # (np.asarray: a draw of size () is a NumPy scalar, which Tensor() would read as a size if an integer)
    made = Tensor(np.asarray(array), dtype=dtype, device=device, requires_grad=requires_grad)
    return made if _tensor_module._batching is None else _tensor_module._batching.made(made)


def _filled(shape, fill_value, dtype):
    """``np.full``, with a Python number rounded into a 16-bit float as torch rounds it (through
    float32: ``dtypes.cast``), and refused as torch refuses one that ``dtype`` cannot hold (uint8: 300)."""
    fill_value = dtypes.python_number(fill_value)  # (np.int64(300) is 300, as in torch)
    if isinstance(fill_value, (int, float, complex)):
        fill_value = dtypes.checked_number(fill_value, dtype)
    if dtype.itemsize == 2 and dtypes.is_floating(dtype):
        fill_value = dtypes.cast(np.asarray(fill_value), dtype)
    return np.full(shape, fill_value, dtype)


def as_tensor(data, dtype=None, device=None):
    """``torch.as_tensor``: ``data`` as a tensor, without a copy where none is needed. A tensor of the
    asked dtype and device comes back as it is (otherwise converted with ``.to``, which autograd
    follows); a NumPy array of the asked dtype shares its memory when the device keeps NumPy arrays
    (cpu, emu); anything else is copied, its dtype inferred as ``tensor(data)`` does."""
    dtype = dtypes.dtype_argument("as_tensor", dtype)
    if isinstance(data, Tensor):
        return data if dtype is None and device is None else data.to(device=device, dtype=dtype)
    if isinstance(data, np.ndarray):
        refuse_negative_strides(data)
        data = dtypes.canonical(data)  # (an equal copy of bfloat16's dtype: the registered one)
        return Tensor(data, dtype=data.dtype if dtype is None else dtype, device=device)
    from .tensor import tensor
    return tensor(data, dtype=dtype, device=device)


def asarray(obj, *, dtype=None, device=None, copy=None, requires_grad=None):
    """``torch.asarray``: ``obj`` as a tensor, aliasing it where it can.

    A tensor whose dtype and device already fit comes back *itself* (``copy=True`` copies it,
    detached); ``requires_grad=True/False`` then sets the flag on it, as torch does (a non-leaf
    asked for ``False`` gives a detached alias instead). A NumPy array shares its memory on a device
    that keeps NumPy arrays (cpu, emu). ``copy=False`` where a copy is unavoidable (another dtype or
    device, a Python sequence) raises ValueError instead of copying silently. A copy follows the
    graph only with ``requires_grad=True``."""
    dtype = dtypes.dtype_argument("asarray", dtype)
    if isinstance(obj, Tensor):
        return _tensor_asarray(obj, dtype, device, copy, requires_grad)
    if isinstance(obj, np.ndarray):
        refuse_negative_strides(obj)
        obj = dtypes.canonical(obj)  # (an equal copy of bfloat16's dtype: the registered one)
        target = obj.dtype if dtype is None else dtype
        if copy is False and target != obj.dtype:
            raise ValueError(f"can't alias tensor with dtype {obj.dtype} into dtype {target}.")
        out = Tensor(obj.copy() if copy else obj, dtype=target, device=device)
        if copy is False and not np.shares_memory(out._array, obj):
            raise ValueError(f"can't alias a NumPy array into a tensor on {out.device.name}.")
    elif copy is False:
        raise ValueError("can't alias arbitrary sequence into a tensor.")
    else:
        from .tensor import tensor
        out = tensor(np.asarray(obj) if isinstance(obj, np.generic) else obj, dtype=dtype, device=device)
    return out.requires_grad_() if requires_grad else out


def _tensor_asarray(t, dtype, device, copy, requires_grad):
    """``asarray`` of a tensor: the tensor itself, or a converted copy (see ``asarray``)."""
    moves = device is not None and t.device != _device_of(device)
    if (dtype is not None and dtype != t.dtype) or moves:
        if copy is False:
            raise ValueError(f"can't alias tensor with dtype {t.dtype} on {t.device.name} into dtype "
                             f"{dtype or t.dtype} on {_device_of(device or t.device).name}.")
        out = t.to(device=device, dtype=dtype)
    elif copy:
        out = t.clone()
    else:  # an alias: the tensor itself
        if requires_grad is None or requires_grad == t.requires_grad:
            return t
        if t.is_leaf:
            return t.requires_grad_(requires_grad)
        return t.detach()  # a non-leaf cannot drop out of the graph: a detached alias
    return out if requires_grad else out.detach()


def _device_of(device):
    return _get_device(device)


def _for_meta(device):
    """Is a factory's result going to the meta device (named, or this thread's ``with device("meta")`` block)?
    Its values are then never made, not even for a moment: unwritten zeros stand for them (device.py)."""
    return _default_is_meta() if device is None else _device_of(device) is META


def _undrawn(shape, dtype, requires_grad=False):
    """A random factory's result on the meta device: a meta tensor has no values, so nothing is drawn
    and the generator stays where it was, as torch's."""
    return _make(_unwritten(shape, dtype), dtype, META, requires_grad)


# ---- filled with one value -----------------------------------------------------------------------
_ZEROS_NEGATIVE = "zeros: Dimension size must be non-negative."  # (torch's zeros kernel's own words; on meta,
# with no kernel, its factories' "Trying to create tensor with negative dimension ...")


def zeros(*size, dtype=None, layout=None, device=None, pin_memory=False, requires_grad=False, **keywords):
    if layout is not None or pin_memory is not False:  # (the common call skips the check)
        check_layout("zeros", layout, pin_memory, device)
    dtype = _float_dtype(dtype, "zeros")
    on_meta = _for_meta(device)
    shape = _sizes(size, keywords, "zeros", None if on_meta else _ZEROS_NEGATIVE)
    return _make((_unwritten if on_meta else np.zeros)(shape, dtype), dtype, device, requires_grad)


def ones(*size, dtype=None, layout=None, device=None, pin_memory=False, requires_grad=False, **keywords):
    if layout is not None or pin_memory is not False:  # (the common call skips the check)
        check_layout("ones", layout, pin_memory, device)
    dtype = _float_dtype(dtype, "ones")
    return _make((_unwritten if _for_meta(device) else np.ones)(_sizes(size, keywords, "ones"), dtype), dtype,
                 device, requires_grad)


def empty(*size, dtype=None, layout=None, device=None, pin_memory=False, requires_grad=False, memory_format=None,
          **keywords):
    """As ``torch.empty``, but zero-filled: a teaching framework shows no stale memory.
    ``memory_format=torch.channels_last``: laid out with the channels innermost."""
    if layout is not None or pin_memory is not False:  # (the common call skips the check)
        check_layout("empty", layout, pin_memory, device)
    dtype = _float_dtype(dtype, "empty")
    result = _make((_unwritten if _for_meta(device) else np.zeros)(_sizes(size, keywords, "empty"), dtype), dtype,
                   device, requires_grad)
    if memory_format not in (None, contiguous_format, preserve_format):
        result._array = laid_out_copy(result._array, memory_format)  # (a fresh leaf)
    return result


def _fill_dtype(fill_value):
    """torch's rule for ``full`` without a dtype: bool, int64, or the default float."""
    if isinstance(fill_value, Tensor):
        fill_value = fill_value.item()
    if isinstance(fill_value, bool):  # (a NumPy bool is not: torch fills the default float with it)
        return dtypes.bool
    if isinstance(fill_value, (int, np.integer)):
        return dtypes.int64
    if isinstance(fill_value, complex):  # the default float dtype's complex type, as torch
        return dtypes.promote_types(dtypes.get_default_dtype(), np.dtype("complex64"))
    return dtypes.get_default_dtype()


def full(size, fill_value, *, dtype=None, layout=None, device=None, pin_memory=False, requires_grad=False):
    """A tensor of ``size`` filled with ``fill_value`` (dtype from the value unless given, as torch)."""
    if layout is not None or pin_memory is not False:  # (the common call skips the check)
        check_layout("full", layout, pin_memory, device)
    if not isinstance(fill_value, (numbers.Number, np.generic, Tensor)):  # (NumPy would broadcast a list)
        raise TypeError(f"full(): argument 'fill_value' (position 2) must be Number, not {type(fill_value).__name__}")
    dtype = _fill_dtype(fill_value) if dtype is None else dtypes.dtype_argument("full", dtype)
    if isinstance(fill_value, Tensor):
        fill_value = fill_value.item()
    if not isinstance(size, (tuple, list)):  # torch's full, unlike ones/zeros, takes no bare number
        raise TypeError(f"full(): argument 'size' (position 1) must be tuple of ints, not {type(size).__name__}")
    size = _size((size,), "full")
    if _for_meta(device):
        _filled((), fill_value, dtype)  # (the value is checked against the dtype all the same, as torch's)
        return _make(_unwritten(size, dtype), dtype, device, requires_grad)
    return _make(_filled(size, fill_value, dtype), dtype, device, requires_grad)


def _like(input, dtype, device, fn):
    return (input.dtype if dtype is None else dtypes.dtype_argument(fn, dtype),
            input.device if device is None else device)


def zeros_like(input, *, dtype=None, layout=None, device=None, pin_memory=False, requires_grad=False,
               memory_format=None):
    """Laid out as ``input`` (torch's preserve_format) unless ``memory_format`` says otherwise; so are
    the other ``*_like`` tensors."""
    if layout is not None or pin_memory is not False:
        check_layout("zeros_like", layout, pin_memory, device)
    dtype, device = _like(input, dtype, device, "zeros_like")
    fill = _unwritten if _for_meta(device) else np.zeros
    return _laid_out_like(input, memory_format, lambda shape: _make(fill(shape, dtype), dtype, device, requires_grad))


def ones_like(input, *, dtype=None, layout=None, device=None, pin_memory=False, requires_grad=False,
              memory_format=None):
    if layout is not None or pin_memory is not False:  # (the common call skips the check)
        check_layout("ones_like", layout, pin_memory, device)
    dtype, device = _like(input, dtype, device, "ones_like")
    fill = _unwritten if _for_meta(device) else np.ones
    return _laid_out_like(input, memory_format, lambda shape: _make(fill(shape, dtype), dtype, device, requires_grad))


def empty_like(input, *, dtype=None, layout=None, device=None, pin_memory=False, requires_grad=False,
               memory_format=None):
    """Zero-filled, like ``empty``."""
    if layout is not None or pin_memory is not False:  # (the common call skips the check)
        check_layout("empty_like", layout, pin_memory, device)
    dtype = dtypes.dtype_argument("empty_like", dtype)  # (before zeros_like, which takes any spelling from here)
    return zeros_like(input, dtype=dtype, device=device, requires_grad=requires_grad, memory_format=memory_format)


def full_like(input, fill_value, *, dtype=None, layout=None, device=None, pin_memory=False, requires_grad=False,
              memory_format=None):
    if layout is not None or pin_memory is not False:  # (the common call skips the check)
        check_layout("full_like", layout, pin_memory, device)
    dtype, device = _like(input, dtype, device, "full_like")
    if isinstance(fill_value, Tensor):
        fill_value = fill_value.item()
    return _laid_out_like(input, memory_format, lambda shape: _make(_filled(shape, fill_value, dtype), dtype,
                                                                    device, requires_grad))


def eye(n, m=None, *, dtype=None, layout=None, device=None, pin_memory=False, requires_grad=False):
    """The ``n x m`` identity (``m`` defaults to ``n``)."""
    if layout is not None or pin_memory is not False:  # (the common call skips the check)
        check_layout("eye", layout, pin_memory, device)
    for name, value in (("n", n), ("m", m)):
        if value is not None and value < 0:
            raise RuntimeError(f"{name} must be greater or equal to 0, got {value}")
    dtype = _float_dtype(dtype, "eye")
    return _make(np.eye(n, n if m is None else m, dtype=dtype), dtype, device, requires_grad)


def _triangle_indices(fn, row, col, offset, dtype, device):
    for name, value in (("row", row), ("col", col), ("offset", offset)):
        dtypes.int_argument(fn, name, value)
    if row < 0 or col < 0:
        raise RuntimeError(f"{fn}: row and col must be non-negative, got {row} and {col}")
    dtype = dtypes.to_dtype(dtype)
    pick = np.tril_indices if fn == "tril_indices" else np.triu_indices
    return _make(np.stack(pick(row, offset, col)).astype(dtype), dtype, device, False)


def tril_indices(row, col, offset=0, *, dtype=dtypes.int64, layout=None, device=None, pin_memory=False):
    """``torch.tril_indices``: the ``[2, N]`` coordinates of the lower triangle (on and below
    diagonal ``offset``) of a ``row x col`` matrix, row by row."""
    if layout is not None or pin_memory is not False:  # (the common call skips the check)
        check_layout("tril_indices", layout, pin_memory, device)
    return _triangle_indices("tril_indices", row, col, offset, dtypes.dtype_argument("tril_indices", dtype), device)


def triu_indices(row, col, offset=0, *, dtype=dtypes.int64, layout=None, device=None, pin_memory=False):
    """``torch.triu_indices``: the ``[2, N]`` coordinates of the upper triangle."""
    if layout is not None or pin_memory is not False:  # (the common call skips the check)
        check_layout("triu_indices", layout, pin_memory, device)
    return _triangle_indices("triu_indices", row, col, offset, dtypes.dtype_argument("triu_indices", dtype), device)


# ---- random ------------------------------------------------------------------------------------
def _gen(generator):
    """The ``minilora.random.Generator`` to draw from: the one passed, or the global one."""
    if generator is None:
        return _random.default_generator
    if not isinstance(generator, _random.Generator):
        raise TypeError(f"argument 'generator' must be torch.Generator, not {type(generator).__name__}")
    return generator


def _random_float(draw, dtype, kernel, pairs=None):
    """``draw(dtype)`` for a floating ``dtype`` (the default float dtype if None), with the dtype. A complex
    dtype: ``pairs(real dtype)``, the (real, imag) pairs torch draws as one real tensor of shape (..., 2)."""
    dtype = _float_dtype(dtype)
    if dtype.kind == "c" and pairs is not None:
        return pairs(np.dtype(np.float32 if dtype == np.complex64 else np.float64)).view(dtype)[..., 0], dtype
    if not dtypes.is_floating(dtype):  # (torch names its kernel that has no such dtype)
        raise NotImplementedError(f'"{kernel}" not implemented for \'{dtypes.torch_name(dtype)}\'')
    return draw(dtype), dtype


# ---- memory formats: how torch lays out a tensor made from another (clone, empty_like ...) -------------------
class memory_format:
    """``torch.memory_format``: how a new tensor is laid out in memory (``torch.preserve_format``,
    ``contiguous_format``, ``channels_last``, ``channels_last_3d``)."""

    def __init__(self, name):
        self.name = name

    def __repr__(self):
        return f"torch.{self.name}"

    def __reduce__(self):  # (copied or pickled, it is the same object again, as torch's: checks compare by identity)
        return self.name


preserve_format, contiguous_format = memory_format("preserve_format"), memory_format("contiguous_format")
channels_last, channels_last_3d = memory_format("channels_last"), memory_format("channels_last_3d")
_CHANNELS_LAST = {channels_last: (4, (0, 2, 3, 1)), channels_last_3d: (5, (0, 2, 3, 4, 1))}


# ---- layouts: how a tensor's elements are stored (torch.layout); minilora's are all dense --------------------
class layout:
    """``torch.layout``: ``torch.strided`` (dense, every tensor minilora makes) or one of torch's sparse and
    other layouts (``sparse_coo``, ``sparse_csr`` ...), which minilora names so that code spelling them reads,
    and refuses when asked to make one."""

    def __init__(self, name):
        self.name = name

    def __repr__(self):
        return f"torch.{self.name}"

    def __reduce__(self):  # (the same object again after copy.deepcopy or pickle, as torch's)
        return self.name


strided, sparse_coo, sparse_csr, sparse_csc = (layout(name) for name in ("strided", "sparse_coo", "sparse_csr",
                                                                         "sparse_csc"))
sparse_bsr, sparse_bsc, _mkldnn, jagged = (layout(name) for name in ("sparse_bsr", "sparse_bsc", "_mkldnn", "jagged"))
Tensor.layout = property(lambda self: strided, doc="``x.layout``: always ``torch.strided`` (dense) in minilora.")

_NO_PINNED_MEMORY = ("pin_memory=True requires a CUDA or other accelerator backend; no pinned memory allocator is "
                     "available on this system.")


def check_layout(fn, layout_given, pin_memory, device=None):
    """torch's factory keywords ``layout=`` and ``pin_memory=``, checked as torch checks them: a layout must be a
    ``torch.layout`` (a non-strided one is refused: minilora has dense tensors only); ``pin_memory`` a bool, True
    only where a GPU's pinned host memory exists (CuPy with a GPU: pinning changes speed, not values). The
    factories call it only when either keyword is not its default, so the common call pays one comparison."""
    if layout_given is not None and layout_given is not strided:
        if not isinstance(layout_given, layout):
            raise TypeError(f"{fn}(): argument 'layout' must be torch.layout, not {type(layout_given).__name__}")
        raise NotImplementedError(f"{fn}(): layout={layout_given!r} is not supported: minilora has dense "
                                  f"(torch.strided) tensors only")
    if pin_memory is None or pin_memory is False:
        return
    if not isinstance(pin_memory, bool):
        raise TypeError(f"{fn}(): argument 'pin_memory' must be bool, not {type(pin_memory).__name__}")
    if device is not None and _device_of(device) is META:  # (torch: nothing to pin on meta, nothing refused)
        return
    if not any(d.name == "cuda" and d.enabled() for d in _all_devices()):
        raise RuntimeError(_NO_PINNED_MEMORY)


def preserved_order(shape, strides):
    """The dimensions from outermost to innermost of torch's preserve_format copy of a tensor with these
    strides (its infer_dense_strides: an insertion sort by stride, broadcast dimensions (stride 0) left
    where they stand, equal strides ordered by size)."""
    return iterator_order(shape, [strides])


def iterator_order(shape, operands):
    """The dimensions, outermost first, of the result torch's TensorIterator makes from operands with
    these strides (each given for ``shape``; 0 where broadcast): preserved_order's insertion sort, the
    first operand deciding each comparison, a later one only where the first's strides tie or are 0
    (``float32_sums.sort_dimensions``, which the sums' iterator shares)."""
    perm = float32_sums.sort_dimensions(reversed(range(len(shape))), shape, operands)  # (innermost first)
    return tuple(reversed(perm))


def layout_order(array, format=None):
    """The dimensions, outermost first, of a tensor torch makes from ``array`` in memory format ``format``
    (clone, empty_like, zeros_like ...): preserve_format (the default) keeps ``array``'s order of strides,
    channels_last puts the channels innermost. torch draws dropout masks and random fills in memory order."""
    preserve = format is None or format is preserve_format
    if format is contiguous_format or (preserve and (array.ndim < 2 or array.flags.c_contiguous)):
        return tuple(range(array.ndim))
    if preserve:
        return preserved_order(array.shape, array.strides)
    if format not in _CHANNELS_LAST:
        raise TypeError(f"memory_format must be a torch.memory_format, not {type(format).__name__}")
    rank, order = _CHANNELS_LAST[format]
    if array.ndim != rank:
        raise RuntimeError(f"required rank {rank} tensor to use {format.name} format")
    return order


def is_laid_out_in(array, format):
    """Does ``array`` lie in memory as ``format`` (channels_last, channels_last_3d) lays it out, dimensions of
    size 1 aside (torch's is_contiguous(memory_format=...))? Another rank answers False."""
    return strides_laid_out_in(array.shape, tuple(s // array.itemsize for s in array.strides), format)


def strides_laid_out_in(shape, strides, format):
    """is_laid_out_in for a tensor of these sizes and strides (in elements): torch's
    compute_channels_last_contiguous rule (an empty tensor's strides are torch's, not NumPy's); format None:
    C order (compute_contiguous's rule, for a tensor with elements)."""
    if format is None:
        rank, order = len(shape), range(len(shape))
    elif format not in _CHANNELS_LAST:
        raise TypeError(f"memory_format must be a torch.memory_format, not {type(format).__name__}")
    else:
        rank, order = _CHANNELS_LAST[format]
    if len(shape) != rank:
        return False
    step = 1
    for axis in reversed(order):  # (innermost first)
        if shape[axis] != 1 and strides[axis] != step:
            return False
        step *= shape[axis]
    return True


def in_iterator_layout(out, inputs):
    """``out`` (an elementwise result NumPy laid out) laid out as torch's TensorIterator lays out the
    result of ``inputs`` (arrays broadcast to ``out``'s shape; numbers left out): the first input's order
    of strides, the next one's where it is silent (NumPy's order='K' gives up for inputs that disagree,
    and puts broadcast dimensions outermost)."""
    shape = out.shape
    order = iterator_order_of(shape, inputs)
    if order == tuple(range(len(shape))):
        return out if out.flags.c_contiguous else xp_of(out).asarray(out, order="C")
    if out.flags.c_contiguous or preserved_order(shape, out.strides) != order:
        buffer = xp_of(out).empty(tuple(shape[i] for i in order), out.dtype)
        laid_out = buffer.transpose(tuple(np.argsort(order)))
        laid_out[...] = out
        out = laid_out
    return known_layout(out, order)


def iterator_order_of(shape, inputs):
    """iterator_order for arrays ``inputs`` broadcast to ``shape`` (numbers and 0-d arrays left out)."""
    operands = []
    for a in inputs:
        if getattr(a, "ndim", 0):
            lead = len(shape) - a.ndim
            operands.append((0,) * lead + tuple(0 if n == 1 and shape[lead + i] != 1 else s
                                                for i, (n, s) in enumerate(zip(a.shape, a.strides))))
    return iterator_order(shape, operands)


def iterator_strides(shape, operands):
    """torch's strides of the new result of shape ``shape`` of a TensorIterator (an elementwise op) over
    inputs of these ``operands`` ((sizes, strides) each, in elements, torch's own strides for the dimensions
    of size 1; a Python number the op wraps into a 0-d tensor as ((), ())). ATen's TensorIteratorBase: where
    every input has the result's shape, its fast setup (all contiguous: contiguous; all channels_last:
    channels_last; all non-overlapping and dense with one set of strides: those strides); else
    compute_strides (a broadcast dimension's stride 0) and reorder_dimensions' order (iterator_order), the
    strides compatible_stride gives that order (a size 0 multiplying by 0), contiguous when it is C order."""
    ndim = len(shape)
    if ndim < 2:
        return contiguous_strides(shape)
    if operands and all(tuple(sizes) == tuple(shape) for sizes, _ in operands):
        if all(_is_contiguous(sizes, strides) for sizes, strides in operands):
            return contiguous_strides(shape)
        for format, (rank, order) in _CHANNELS_LAST.items():
            if ndim == rank and all(strides_laid_out_in(sizes, strides, format) for sizes, strides in operands):
                return _compatible_strides(shape, order)
        first = tuple(operands[-1][1])  # (ATen checks from the last input on and copies its strides)
        if all(tuple(strides) == first for _, strides in operands) and _non_overlapping_and_dense(shape, first):
            return first
    broadcast = []
    for sizes, strides in operands:
        lead = ndim - len(sizes)
        broadcast.append((0,) * lead + tuple(0 if n == 1 and shape[lead + i] != 1 else s
                                             for i, (n, s) in enumerate(zip(sizes, strides))))
    order = iterator_order(shape, broadcast)
    return contiguous_strides(shape) if order == tuple(range(ndim)) else _compatible_strides(shape, order)


def _is_contiguous(shape, strides):
    """torch's is_contiguous (compute_contiguous): the dimensions longer than 1 in C order; any empty tensor."""
    return 0 in shape or strides_laid_out_in(shape, strides, None)


def _compatible_strides(shape, order):
    """ATen's compatible_stride (and get_channels_last_strides): dense strides for ``order`` (outermost
    first) where a dimension of size 0 multiplies the next one's stride by 0 (dense_strides counts it as 1)."""
    strides, step = [0] * len(shape), 1
    for axis in reversed(order):
        strides[axis] = step
        step *= shape[axis]
    return tuple(strides)


def suggested_format(array):
    """torch's suggest_memory_format: channels_last (channels_last_3d) for a 4-D (5-D) tensor laid out
    with its channels innermost, else contiguous_format."""
    for format, (rank, _) in _CHANNELS_LAST.items():
        if array.ndim != rank:
            continue
        known = known_strides(array)  # (torch's strides where NumPy's flags cannot tell: a channel of size 1)
        if isinstance(known, tuple) and known != contiguous_strides(array.shape):
            if strides_laid_out_in(array.shape, known, format):
                return format
        elif not array.flags.c_contiguous and is_laid_out_in(array, format):
            return format
    return contiguous_format


_KNOWN_LAYOUTS = weakref.WeakValueDictionary()  # id(array) -> array: see known_layout


_LAYOUT_ORDERS = {}  # id(array) -> (weak reference to the array, order, torch's strides): see known_layout


def known_layout(array, order=None, strides=None):
    """Mark ``array`` (a result just made) as laid out as torch lays out the same result, so that
    ``stride()`` may report its strides (NumPy's layout of other non-contiguous results may not be
    torch's: stride() refuses those). ``order``: the dimensions, outermost first, torch lays it out in;
    then ``stride()`` answers torch's strides for it (dense_strides) even where dimensions of size 1
    leave NumPy's flags and strides ambiguous (a channels_last [N, C, 1, 1] result, which NumPy calls
    C-contiguous). ``strides``: torch's own strides, where they are not dense_strides of an order (a
    TensorIterator result's dimensions of size 1 or 0: iterator_strides), or why they are not known (a
    refusal's message: stride() raises it). Returns ``array``."""
    if isinstance(strides, str):
        _remember_order(array, None, strides)
    elif strides is not None:
        if tuple(strides) != contiguous_strides(array.shape):
            _remember_order(array, preserved_order(array.shape, strides), tuple(strides))
        else:  # (an order told before, by a step of the op that did not know the inputs' strides)
            _LAYOUT_ORDERS.pop(id(array), None)
    elif order is not None and tuple(order) != tuple(range(array.ndim)):
        _remember_order(array, tuple(order))
    if not array.flags.c_contiguous:
        try:
            _KNOWN_LAYOUTS[id(array)] = array
        except TypeError:  # (an array type without weak references: stride() stays cautious)
            pass
    return array


def layout_is_known(array):
    """Was ``array`` marked by known_layout?"""
    return _KNOWN_LAYOUTS.get(id(array)) is array


def _remember_order(array, order, strides=None):
    key = id(array)

    def forget(ref):
        if _LAYOUT_ORDERS.get(key, (None,))[0] is ref:
            del _LAYOUT_ORDERS[key]
    _tensor_module._layouts_remembered = True  # (Function.apply looks at its inputs' layouts from now on)
    try:
        _LAYOUT_ORDERS[key] = (weakref.ref(array, forget), order,
                               dense_strides(array.shape, order) if strides is None else strides)
    except TypeError:  # (an array type without weak references: stride() stays cautious)
        pass


_SHARED_STRIDES = {}  # id(tensor) -> (weak reference to the tensor, to its array, the strides' answer)


def strides_answer(strides_of):
    """What ``strides_of()`` (a tensor's ``stride``) answers now: its strides, or its refusal's message."""
    try:
        return tuple(strides_of())
    except NotImplementedError as refusal:
        return str(refusal)


def share_strides(tensor, answer):
    """``tensor`` (made over another tensor's storage without being its view: ``detach()`` or ``.data``
    of a view, a tensor an in-place view op such as ``x.t_()`` changed) keeps ``answer`` (strides_answer:
    torch's strides, which NumPy's and the chain of views cannot tell for its dimensions of size 1, or a
    refusal) as long as it holds the array it holds now (shared_strides)."""
    key = id(tensor)

    def forget(ref):
        if _SHARED_STRIDES.get(key, (None,))[0] is ref:
            del _SHARED_STRIDES[key]
    try:
        _SHARED_STRIDES[key] = (weakref.ref(tensor, forget), weakref.ref(tensor._array), answer)
    except TypeError:  # (an array type without weak references: stride() answers as it would)
        pass


def shared_strides(tensor):
    """The strides share_strides kept for ``tensor`` while it holds the same array (None if none);
    NotImplementedError where they could not be told."""
    answer = shared_strides_kept(tensor)
    if isinstance(answer, str):
        raise NotImplementedError(answer)
    return answer


def shared_strides_kept(tensor):
    """What share_strides kept for ``tensor`` (strides or a refusal's message) while it holds the same array."""
    entry = _SHARED_STRIDES.get(id(tensor))
    if entry is None or entry[0]() is not tensor or entry[1]() is not tensor._array:
        return None
    return entry[2]


def like_view_strides(result, input, memory_format=None):
    """``result`` (a new tensor laid out as torch's preserve_format copy of ``input``: clone, the ``*_like``
    factories) keeps torch's strides where ``input`` has dimensions of size 1 whose strides NumPy's cannot
    tell (a view, share_strides): torch copies ``input``'s strides when they are non-overlapping and dense,
    else lays the copy out densely in their order. Returns ``result``."""
    if memory_format not in (None, preserve_format) or all(n > 1 for n in input._array.shape) or (
            input._base is None and shared_strides_kept(input) is None):
        return result
    answer = strides_answer(input.stride)
    if not isinstance(answer, str):
        answer = preserved_strides(input._array.shape, answer)
    array = result._array
    if not isinstance(answer, str) and array.size and any(n > 1 and s != a // array.itemsize
                                           for n, s, a in zip(array.shape, answer, array.strides)):
        answer = "stride(): minilora laid this copy out otherwise than torch; call .contiguous() first"
    share_strides(result, answer)
    return result


def numpy_layout_kept(copy, source):
    """``copy`` (a new array of the non-C-contiguous NumPy array ``source``'s values) laid out as torch.tensor lays
    out its copy: torch wraps ``source`` with its own strides and copies it in preserve_format (preserved_strides).
    A source with a negative stride is left to NumPy's order (torch refuses it). Returns the array to keep."""
    strides = tuple(s // source.itemsize for s in source.strides)
    if any(s < 0 for s in strides) or strides == contiguous_strides(source.shape) or copy.shape != source.shape:
        return copy
    order = preserved_order(source.shape, strides)
    buffer = np.empty(tuple(source.shape[i] for i in order), copy.dtype)
    laid_out = buffer.transpose(tuple(np.argsort(order)))
    laid_out[...] = copy
    return known_layout(laid_out, strides=preserved_strides(source.shape, strides))


def preserved_strides(shape, strides):
    """torch's strides of a preserve_format copy (empty_like, clone, ``.to(dtype)``) of a tensor with these
    strides: the same where they are non-overlapping and dense (as any empty tensor's are to torch), else dense
    in their order (infer_dense_strides)."""
    if 0 in shape or _non_overlapping_and_dense(shape, strides):
        return tuple(strides)
    return dense_strides(shape, preserved_order(shape, strides))


def iterator_result(out, inputs, rule, number_operands=()):
    """``out`` (the array NumPy made for an elementwise op's result over ``inputs``: Tensors and numbers)
    laid out, and marked (known_layout), as torch lays out that result from inputs whose strides minilora
    knows: rule "elementwise" (a TensorIterator's result: iterator_strides, the numbers at positions
    ``number_operands`` being 0-d tensors there) or "preserve" (a preserve_format copy of the first input:
    preserved_strides). None where an input's strides are not known (its stride() refuses)."""
    operands = []
    for i, x in enumerate(inputs):
        if isinstance(x, Tensor):
            strides = strides_answer(x.stride)
            if isinstance(strides, str):  # (torch's strides of the result's dimensions of size 1 depend on them)
                if all(n > 1 for n in out.shape):
                    return None
                arrays = [getattr(a, "_array", a) for a in inputs if getattr(a, "ndim", 0)]  # (NumPy's strides: the order, as near
                return known_layout(in_iterator_layout(out, arrays), strides=strides)  # as minilora can tell)
            operands.append((tuple(x._array.shape), strides))
        elif getattr(x, "ndim", 0):  # (an op's own array: its strides are NumPy's, known where C order)
            if not x.flags.c_contiguous:
                return None
            operands.append((tuple(x.shape), contiguous_strides(x.shape)))
        elif i in number_operands and isinstance(x, (builtins.bool, builtins.int, builtins.float, builtins.complex,
                                                          np.generic, np.ndarray)):
            operands.append(((), ()))  # (a number, or the 0-d array an op made of it)
    if not operands:
        return None
    if rule == "preserve":
        strides = preserved_strides(*operands[0])
    else:
        strides = iterator_strides(out.shape, operands)
    return laid_out_in_strides(out, strides)


def laid_out_in_strides(out, strides):
    """``out`` (a new array) laid out in memory as a tensor of these strides (in elements; its dimensions
    longer than 1 dense in their order), copied where NumPy laid it out otherwise, and marked so that stride()
    answers ``strides`` (known_layout)."""
    shape = out.shape
    if out.size and any(n > 1 and s != a // out.itemsize for n, s, a in zip(shape, strides, out.strides)):
        order = preserved_order(shape, strides)
        buffer = xp_of(out).empty(tuple(shape[i] for i in order), out.dtype)
        laid_out = buffer.transpose(tuple(np.argsort(order)))
        laid_out[...] = out
        out = laid_out
    return known_layout(out, strides=strides)


def _non_overlapping_and_dense(shape, strides):
    """torch's is_non_overlapping_and_dense: the dimensions longer than 1, by stride, fill memory."""
    step = 1
    for axis in sorted((axis for axis in range(len(shape)) if shape[axis] > 1), key=lambda axis: strides[axis]):
        if strides[axis] != step:
            return False
        step *= shape[axis]
    return True


def known_order(array):
    """The order, outermost dimension first, known_layout was told ``array`` is laid out in (None if none)."""
    entry = _LAYOUT_ORDERS.get(id(array))
    return entry[1] if entry is not None and entry[0]() is array else None


def known_strides(array):
    """torch's strides of ``array`` as known_layout was told them (by an order or as strides; None if neither;
    a refusal's message where they are not known)."""
    entry = _LAYOUT_ORDERS.get(id(array))
    return entry[2] if entry is not None and entry[0]() is array else None


def contiguous_strides(shape):
    """torch's strides of a contiguous tensor: the last dimension 1, each other the product of the
    sizes after it (a size-0 dimension counting as 1)."""
    return dense_strides(shape, range(len(shape)))


def dense_strides(shape, order):
    """torch's strides of a dense tensor of ``shape`` laid out in ``order`` (outermost first): the
    innermost 1, each other the next inner one's stride times its size (a size 0 or 1 counting as 1), as
    torch's channels_last strides and empty_strided's from infer_dense_strides."""
    strides, step = [0] * len(shape), 1
    for axis in reversed(order):
        strides[axis] = step
        step *= max(shape[axis], 1)
    return tuple(strides)


_UNKNOWN_LAYOUTS = weakref.WeakValueDictionary()  # id(array) -> array: see unknown_layout


def unknown_layout(array):
    """Mark ``array`` (a result made from a channels_last input by an op minilora does not lay out as
    torch does) as of unknown layout: NumPy made it C-contiguous where torch's may be channels_last, so
    ``stride()`` and ``is_contiguous()`` refuse it, as they refuse other layouts minilora does not know.
    Returns ``array``."""
    _tensor_module._unknown_layouts_made = True  # (Function.apply looks further from now on)
    try:
        _UNKNOWN_LAYOUTS[id(array)] = array
    except TypeError:  # (an array type without weak references)
        pass
    return array


def layout_is_unknown(array):
    """Was ``array`` marked by unknown_layout?"""
    return _UNKNOWN_LAYOUTS.get(id(array)) is array


# torch's layout of the result of an op minilora composes from others where torch runs one CPU kernel,
# from a channels_last input: "suggested" (the input's memory format: max_pool3d, group_norm), "onednn" (the
# 3-D convolutions: suggested for 16- and 32-bit floats, contiguous for float64), "contiguous" (avg_pool3d and
# the adaptive 3-D pools write a contiguous result). composed_layout lays the result out so.
_COMPOSED_LAYOUTS = {"conv3d": "onednn", "conv_transpose3d": "onednn", "max_pool3d": "suggested",
                     "group_norm": "suggested", "avg_pool3d": "contiguous", "adaptive_max_pool3d": "contiguous"}


def composed_layout_unknown(op):
    """Decorator of an op minilora composes from others where torch runs one kernel (conv3d, the 3-D
    pools, group_norm): its intermediates leave channels_last, so from a channels_last input its result
    answers torch's layout (_COMPOSED_LAYOUTS) only where NumPy's happens to be it; any other result's
    layout is not known (unknown_layout, its storage's too: a view answers nothing either)."""
    rule = _COMPOSED_LAYOUTS[op.__name__]

    @functools.wraps(op)
    def composed(input, *args, **kwargs):
        return composed_layout(op(input, *args, **kwargs), input, rule)
    return composed


def composed_layout(result, input, rule):
    """``result`` (a tensor or a tuple of them: what an op minilora composes made from ``input``) laid out as
    torch's one kernel lays it out from a channels_last input: rule "suggested" (the input's memory format)
    or "contiguous" (see _composed_result_layout). Returns ``result``."""
    format = suggested_format(input._array) if isinstance(input, Tensor) else contiguous_format
    if format is not contiguous_format:
        if rule == "onednn":  # (torch's 3-D convolutions: oneDNN's channels_last kernel for 16- and 32-bit
            # floats, slow_conv3d's contiguous result for float64; another dtype's is not known here)
            rule = {"float64": "contiguous"}.get(str(input._array.dtype), "suggested")
            if str(input._array.dtype) not in ("float64", "float32", "float16", "bfloat16"):
                rule = None
        for t in result if isinstance(result, tuple) else (result,):
            if rule is None:
                unknown_layout(t._array)
            else:
                _composed_result_layout(t, input, contiguous_format if rule == "contiguous" else format)
    return result


def _composed_result_layout(t, input, format):
    """Mark ``t`` (a composed op's result from ``input``) as laid out as torch's (``format``) where NumPy's
    layout is that one, else lays it out so."""
    array, view = t._array, t._base is not None and t._base is not input and t._base is not input._base
    if format is contiguous_format and array.flags.c_contiguous and not view:
        _UNKNOWN_LAYOUTS.pop(id(array), None)  # (an inner op's marks: the whole op's layout is known)
        _LAYOUT_ORDERS.pop(id(array), None)
        return
    if format is not contiguous_format and is_laid_out_in(array, format):
        order = layout_order(array, format)
        if not view:
            _UNKNOWN_LAYOUTS.pop(id(array), None)
            known_layout(array, order)
            return
        if dense_strides(array.shape, order) == tuple(s // array.itemsize for s in array.strides):
            for a in (array, t._base._array):
                _UNKNOWN_LAYOUTS.pop(id(a), None)
            return  # (a view of an intermediate whose strides are torch's: stride() reads them)
    # torch's one kernel writes a new tensor in ``format``: the result is copied into it (a view of one of
    # minilora's intermediates becomes that new tensor, as torch's is no view), its node re-pointed at the copy
    laid_out = xp_of(array).ascontiguousarray(array) if format is contiguous_format else laid_out_copy(array, format)
    _UNKNOWN_LAYOUTS.pop(id(array), None)
    _LAYOUT_ORDERS.pop(id(array), None)
    t._array = laid_out
    if view:
        t._base = t._view = t._counter = None
    if t._ctx is not None:
        _tensor_module._resave_output(t._ctx, array, laid_out)
        if view or t._ctx.out_watch is not None:
            t._ctx.watch_output(t)


def laid_out_copy(a, format=None):
    """A copy of ``a`` laid out as torch lays out ``clone(memory_format=format)`` (see layout_order)."""
    order = layout_order(a, format)
    if order == tuple(range(a.ndim)):
        return a.copy()
    buffer = xp_of(a).empty(tuple(a.shape[i] for i in order), a.dtype)
    copy = buffer.transpose(tuple(np.argsort(order)))
    copy[...] = a
    return known_layout(copy, order)


def in_layout_of(result, a):
    """``result`` (a new array of ``a``'s shape) laid out as torch lays out a result it makes from ``a``
    with ``empty_like(a)`` (flip, sort ...): ``a``'s order of strides (layout_order)."""
    order = layout_order(a)
    if order == tuple(range(a.ndim)):
        return xp_of(result).asarray(result, order="C")
    buffer = xp_of(result).empty(tuple(a.shape[i] for i in order), result.dtype)
    laid_out = buffer.transpose(tuple(np.argsort(order)))
    laid_out[...] = result
    return known_layout(laid_out, order)


# func._BatchedDraws while vmap(randomness='different') runs: told which array a draw is laid out like, so a draw
# like a sample of a mapped input lands where torch's draw on the batched input does
_like_draws = None


def _drawn_like(array, order):
    """The draws made inside are laid out as ``array``, its axes taken in ``order`` (see ``_like_draws``)."""
    return _like_draws.laid_out_like(array, order) if _like_draws is not None else contextlib.nullcontext()


def _laid_out_like(input, memory_format, make, draws=False):
    """``make(shape)`` (a new tensor) for ``input``'s shape, laid out as torch's ``empty_like(input,
    memory_format=...)``: made for the dimensions in memory order (so random draws land where torch's
    do), then seen in index order. ``draws``: ``make`` draws random numbers, so an input whose layout
    minilora does not know is refused (draw_order); otherwise the result's layout is not known either."""
    if draws:
        order = draw_order(input, memory_format)
    else:
        order = layout_order(input._array, memory_format)
    with _drawn_like(input._array, order):
        result = make(tuple(input.shape[i] for i in order))
    if _tensor_module._batching is not None:  # (inside vmap: batched as its input, as torch's)
        _tensor_module._batching.made(result, like=input)
    if order != tuple(range(input.ndim)):
        result._array = known_layout(result._array.transpose(tuple(np.argsort(order))), order)  # (a fresh leaf)
    elif not draws and memory_format in (None, preserve_format) and layout_unknown_of(input):
        unknown_layout(result._array)  # (zeros_like keeps a layout minilora does not know)
    return like_view_strides(result, input, memory_format)


def _memory_order(array):
    """The axes of ``array`` from the largest stride to the smallest: torch's iterator fills a tensor
    in memory order, so a transposed tensor gets its draws column by column."""
    strides = getattr(array, "strides", ())
    if array.ndim < 2 or array.flags.c_contiguous:
        return tuple(range(array.ndim))
    return tuple(sorted(range(array.ndim), key=lambda axis: -abs(strides[axis])))


def layout_unknown_of(x):
    """Is ``x`` (a Tensor, or an op's input array) of a layout minilora does not know (unknown_layout: made
    from a channels_last tensor by an op whose layout it does not follow), or a view of one?"""
    if not _tensor_module._unknown_layouts_made:  # (the common case: one global read)
        return False
    if isinstance(x, Tensor):
        return x._layout_unknown()
    return layout_is_unknown(x) or (isinstance(x.base, np.ndarray) and layout_is_unknown(x.base))


def draw_order(x, memory_format=None):
    """The axes of ``x`` (a Tensor or an array), outermost first, in the order torch draws random numbers
    for it: an in-place fill walks ``x`` in memory order (TensorIterator), dropout and ``rand_like`` fill
    ``empty_like(x, memory_format=...)`` in its memory order (preserve_format: ``x``'s). Every random op
    whose draws depend on its input's layout asks here, so an input whose layout minilora does not know
    (``layout_unknown_of``) is refused rather than drawn in another order than torch's."""
    array = x._array if isinstance(x, Tensor) else x
    if memory_format is None or memory_format is preserve_format:
        if layout_unknown_of(x):
            raise NotImplementedError(
                f"random draws on a tensor of shape {tuple(array.shape)} whose memory layout minilora does not "
                f"know (made from a channels_last tensor by an op whose layout it does not follow): torch draws "
                f"in the tensor's memory order; call .contiguous() (or .contiguous(memory_format=...)) first")
        if not array.flags.c_contiguous and any(s < 0 for s in array.strides):  # (NumPy's reversed views)
            return _memory_order(array)
    return layout_order(array, memory_format)


def _drawn_in_memory_order(array, draw, batch_in_front=False):
    """``draw(shape)`` laid out as ``array`` is in memory: drawn for the axes in memory order (draw_order),
    then put back in index order. ``batch_in_front``: under vmap(randomness='different') the batch's draw
    has its batch dimension in front whatever ``array``'s layout (torch's dropout)."""
    if type(array).__module__.split(".")[0] == "cupy":  # (an in-place fill, dropout or init of a cuda tensor)
        _random.note_cuda_draw("cuda")
    order = draw_order(array)
    with contextlib.nullcontext() if batch_in_front else _drawn_like(array, order):
        values = draw(tuple(array.shape[axis] for axis in order))
    return values if order == tuple(range(array.ndim)) else values.transpose(np.argsort(order))


def rand(*size, generator=None, dtype=None, layout=None, device=None, pin_memory=False, requires_grad=False,
         **keywords):
    """Uniform on [0, 1): torch's numbers for the same seed."""
    if layout is not None or pin_memory is not False:  # (the common call skips the check)
        check_layout("rand", layout, pin_memory, device)
    dtype = dtypes.dtype_argument("rand", dtype)
    shape = _sizes(size, keywords, "rand")
    device = _device_of(device)  # (resolved once: Tensor() below takes the Device as it is)
    if device is META:
        return _undrawn(shape, _float_dtype(dtype), requires_grad)
    array, dtype = _random_float(lambda d: _gen(generator).uniform(shape, d), dtype, "check_uniform_bounds",
                                 lambda d: _gen(generator).uniform(shape + (2,), d))
    return _made_drawn(array, dtype, device, requires_grad)


def randn(*size, generator=None, dtype=None, layout=None, device=None, pin_memory=False, requires_grad=False,
          **keywords):
    """Standard normal: torch's numbers for the same seed."""
    if layout is not None or pin_memory is not False:  # (the common call skips the check)
        check_layout("randn", layout, pin_memory, device)
    dtype = dtypes.dtype_argument("randn", dtype)
    return _randn(_sizes(size, keywords, "randn"), generator, dtype, device, requires_grad)


def _randn(shape, generator, dtype, device, requires_grad, contiguous=True):
    """``randn(shape)``; ``contiguous=False``: as torch's normal_ fills a tensor laid out otherwise (one
    value at a time: its vectorised normal_fill runs on contiguous tensors only)."""
    device = _device_of(device)  # (resolved once: Tensor() below takes the Device as it is)
    if device is META:
        return _undrawn(shape, _float_dtype(dtype), requires_grad)
    gen = _gen(generator)
    array, dtype = _random_float(lambda d: gen.normal(shape, d, contiguous=contiguous), dtype, "normal_kernel_cpu",
                                 lambda d: gen.normal(shape + (2,), d, 0.0, 1 / math.sqrt(2), contiguous=contiguous))
    return _made_drawn(array, dtype, device, requires_grad)


def rand_like(input, *, generator=None, dtype=None, layout=None, device=None, pin_memory=False, requires_grad=False,
              memory_format=None):
    """Drawn in the memory order of ``empty_like(input)``, as torch: ``rand_like(x.t())`` is ``rand`` of
    ``x``'s shape, transposed."""
    if layout is not None or pin_memory is not False:  # (the common call skips the check)
        check_layout("rand_like", layout, pin_memory, device)
    dtype, device = _like(input, dtype, device, "rand_like")
    return _laid_out_like(input, memory_format, lambda shape: rand(shape, generator=generator, dtype=dtype,
                                                                   device=device, requires_grad=requires_grad),
                          draws=True)


def randn_like(input, *, generator=None, dtype=None, layout=None, device=None, pin_memory=False, requires_grad=False,
               memory_format=None):
    if layout is not None or pin_memory is not False:  # (the common call skips the check)
        check_layout("randn_like", layout, pin_memory, device)
    dtype, device = _like(input, dtype, device, "randn_like")
    order = draw_order(input, memory_format)
    laid_out = [axis for axis in order if input.shape[axis] != 1]
    contiguous = laid_out == sorted(laid_out)  # (torch's is_contiguous: dimensions of size 1 aside)
    return _laid_out_like(input, memory_format, lambda shape: _randn(shape, generator, dtype, device, requires_grad,
                                                                     contiguous), draws=True)


def randint(low=0, high=None, size=None, *, generator=None, dtype=None, layout=None, device=None,
            pin_memory=False, requires_grad=False):
    """``randint(high, size)`` or ``randint(low, high, size)``: integers in ``[low, high)``, int64.

    (torch writes ``randint(low=0, high, size)``: a two-argument call means ``high, size``.)"""
    if layout is not None or pin_memory is not False:  # (the common call skips the check)
        check_layout("randint", layout, pin_memory, device)
    if size is None:  # randint(high, size)
        if high is None:
            raise TypeError("randint() missing the size: call randint(high, size) or "
                            "randint(low, high, size)")
        _refuse_bare_size(high, " (position 2)")
        low, high, size = 0, low, high
    elif high is None:  # randint(high, size=...)
        low, high = 0, low
    _refuse_bare_size(size)
    dtypes.int_argument("randint", "low", low), dtypes.int_argument("randint", "high", high)
    if high <= low:
        raise RuntimeError(f"random_ expects 'from' to be less than 'to', but got from={low} >= "
                           f"to={high}")
    dtype = dtypes.int64 if dtype is None else dtypes.dtype_argument("randint", dtype)
    _check_random_range(low, high, dtype)
    low, high = _representable_range(low, high, dtype)
    device = _device_of(device)
    if device is META:
        return _undrawn(_size((size,), "randint"), dtype, requires_grad)
    values = _gen(generator).integers(_size((size,), "randint"), dtype, low, high)
    return _made_drawn(values, dtype, device, requires_grad)


def _refuse_bare_size(size, where=""):
    """randint's size is a tuple of ints in every torch overload: ``randint(3, 3)`` is refused, not 3 draws below 3."""
    if not isinstance(size, (tuple, list)):
        raise TypeError(f"randint(): argument 'size'{where} must be tuple of ints, not {type(size).__name__}")


_C_TYPES = {"uint8": "unsigned char", "int8": "signed char", "int16": "short int", "int32": "int",
            "int64": "long", "bool": "bool"}


def _representable_range(low, high, dtype, high_given=True):
    """torch's ``update_from`` / ``update_to`` for a float dtype: an end whose neighbour inside the
    range rounds past it (so that the dtype cannot tell them apart) moves inwards by the dtype's
    spacing there; the ends of an integer dtype stay."""
    if not dtypes.is_floating(dtype):
        return low, high
    digits = _MANTISSA_DIGITS[dtype.name]

    def rounded(value):  # static_cast<int64_t>(static_cast<scalar_t>(value))
        return int(dtypes.cast(np.array([value], np.int64), dtype).astype(np.float64)[0])

    if rounded(low + 1) < low:
        low = rounded(low + 1) + (1 << (abs(low + 1).bit_length() - 1 - digits + 1))
    if high_given and rounded(high - 1) >= high:
        high = rounded(high - 1) - (1 << (abs(high - 1).bit_length() - 1 - digits + 1))
    if high_given and not low < high:
        raise RuntimeError(f"random_ expects 'from' casted to dtype to be less than 'to' casted to dtype, "
                           f"but got from={low} >= to={high}")
    return low, high


def _check_random_range(low, high, dtype):
    """torch's randint refuses a range an integer (or bool) dtype cannot hold, rather than wrap the
    numbers drawn (randint(0, 300, dtype=uint8) would give 44 for 300 - 256)."""
    if dtypes.is_floating(dtype):  # (a float dtype's finite range: float16's ends at 65504)
        largest = _FLOAT_MAX[dtype.name]
        info, type_name = (-largest, largest), _C_FLOAT_NAMES[dtype.name]
    elif dtype.kind in "biu":
        info = (0, 1) if dtype.kind == "b" else (np.iinfo(dtype).min, np.iinfo(dtype).max)
        type_name = _C_TYPES[dtype.name]
    elif dtype.kind == "c":  # (NumPy would draw integers into the real parts)
        raise RuntimeError("check_random_bounds handles only integral, floating-point and boolean types")
    else:
        return
    for name, value in (("from", low), ("to - 1", high - 1)):
        if not info[0] <= value <= info[1]:
            raise RuntimeError(f"{name} is out of bounds for {type_name}")


_FLOAT_MAX = {"float16": 65504.0, "bfloat16": 3.3895313892515355e38, "float32": 3.4028234663852886e38,
              "float64": 1.7976931348623157e308}


def linspace(start, end, steps, *, dtype=None, layout=None, device=None, pin_memory=False, requires_grad=False):
    """``steps`` evenly spaced values from ``start`` to ``end`` inclusive, bit for bit torch's CPU
    kernel: see ``_linspace`` (bfloat16 and float16: ``_linspace_16bit``)."""
    if layout is not None or pin_memory is not False:  # (the common call skips the check)
        check_layout("linspace", layout, pin_memory, device)
    steps = _check_steps("linspace", steps)
    if dtype is None and any(isinstance(v, complex) or isinstance(v, Tensor) and v.is_complex() for v in (start, end)):
        dtype = np.dtype(np.complex64 if dtypes.get_default_dtype() == np.float32 else np.complex128)  # (torch's)
    dtype = _float_dtype(dtype, "linspace")
    if steps == 0:  # (torch converts neither end then)
        return _make(np.zeros(0, dtype), dtype, device, requires_grad)
    if dtype.itemsize == 2 and dtypes.is_floating(dtype):
        return _make(_linspace_16bit(start, end, int(steps), dtype), dtype, device, requires_grad)
    if dtype.kind == "c":  # (a complex range: its real and imaginary parts, each a real one)
        return _make(_complex_parts(_linspace, start, end, int(steps), dtype), dtype, device, requires_grad)
    return _make(_linspace(start, end, int(steps), dtype), dtype, device, requires_grad)


def _complex_parts(real_range, start, end, steps, dtype):
    """``real_range`` (linspace's) of a complex ``dtype``: the real and imaginary parts, each a range of the
    parts' float dtype."""
    part = np.dtype(np.float32 if dtype == np.complex64 else np.float64)
    start, end = (complex(v.item() if isinstance(v, Tensor) else v) for v in (start, end))
    values = real_range(start.real, end.real, steps, part) + 1j * real_range(start.imag, end.imag, steps, part)
    return values.astype(dtype)


def _check_steps(fn, steps):
    """``steps`` as an int, with torch's checks: an int or a 0-d integer tensor (TypeError
    otherwise), not negative."""
    try:
        if isinstance(steps, bool):
            raise TypeError
        steps = operator.index(steps)
    except TypeError:
        raise TypeError(f"{fn}(): argument 'steps' (position 3) must be int, not "
                        f"{type(steps).__name__}") from None
    if steps < 0:
        raise RuntimeError("number of steps must be non-negative")
    return steps


def _linspace(start, end, steps, dtype):
    """torch's CPU linspace: ``step = (end - start) / (steps - 1)`` in the dtype; the first half of the
    values counts up from ``start`` (``start + step * i``), the second down from ``end``
    (``end - step * (steps - 1 - i)``), so both ends are exact. Each value is rounded once: torch's
    kernel is compiled with fused multiply-adds (``_multiply_add``). Integer dtypes truncate ``start``
    and ``end``, compute in float64 and truncate the values, as torch does."""
    if dtype == np.bool_ and steps > 1:  # (one value is a fill: torch runs no kernel then)
        raise NotImplementedError('"linspace_cpu" not implemented for \'Bool\'')
    if dtype == np.bool_:
        return np.full(1, bool(start))
    convert = _to_integer if dtype.kind in "iu" else _to_float
    exact = np.dtype(np.float64) if dtype.kind in "iu" else dtype
    first = exact.type(convert(start, dtype))
    if steps == 1:  # (one value: torch converts start only -- linspace(3.0, -2.0, 1, dtype=uint8) is [3])
        return np.full(1, first).astype(dtype)
    last = exact.type(convert(end, dtype))
    step = exact.type(exact.type(last - first) / exact.type(max(steps - 1, 1)))
    i = np.arange(steps)
    up = _multiply_add(step, i.astype(exact), first)
    down = _multiply_add(-step, (steps - 1 - i).astype(exact), last)
    return np.where(i < steps // 2, up, down).astype(dtype)


def logspace(start, end, steps, base=10.0, *, dtype=None, layout=None, device=None, pin_memory=False,
             requires_grad=False):
    """``base ** linspace(start, end, steps)``, bit for bit torch's CPU kernel: the exponents in
    float64 (from ``start`` and ``end`` as values of ``dtype``; the first half counting up from
    ``start``, the second down from ``end``), each power C's ``pow`` (Python's ``math.pow``: NumPy's
    vectorised power can differ in the last bit), rounded to ``dtype``. Integer dtypes truncate, and
    take ``base`` as a float32, as torch does."""
    if layout is not None or pin_memory is not False:  # (the common call skips the check)
        check_layout("logspace", layout, pin_memory, device)
    steps = _check_steps("logspace", steps)
    dtype = _float_dtype(dtype, "logspace")
    if dtype.kind == "c":  # (torch's complex pow of each exponent: not reproduced)
        raise NotImplementedError(f"logspace of a complex dtype ({dtypes.torch_name(dtype)}) is not implemented in "
                                  f"minilora: take base ** linspace(start, end, steps, dtype=...) instead")
    if dtype == np.bool_ and steps > 1:  # (one value or none: torch runs no kernel, as linspace)
        raise NotImplementedError('"logspace_cpu" not implemented for \'Bool\'')
    if dtype == np.bool_:
        return _make(np.full(steps, bool(float32_math.power64(float(base), float(start)))), dtype, device,
                     requires_grad)
    # (C's pow, as torch's std::pow: inf past the largest double, NaN for a negative base's fractional power, where
    # Python's math.pow raises)
    values = float32_math.power64(_base_of(base, dtype), np.asarray(_log_exponents(start, end, int(steps), dtype),
                                                                    np.float64))
    values = dtypes.cast(values, dtype) if dtype.itemsize == 2 and dtypes.is_floating(dtype) else values.astype(dtype)
    return _make(values, dtype, device, requires_grad)


def _base_of(base, dtype):
    base = float(base.item() if isinstance(base, Tensor) else base)
    return float(np.float32(base)) if dtype.kind in "iu" else base


def _log_exponents(start, end, steps, dtype):
    """The float64 exponents of ``logspace``: ``start + step * i`` for the first half, ``end - step *
    (steps - 1 - i)`` for the second, with ``step = (end - start) / (steps - 1)`` and ``end - start``
    computed in ``dtype`` (as torch's kernel: its ``scalar_t`` subtraction)."""
    if steps <= 1:
        return [float(start)][:steps]
    if dtype.kind in "iu":
        first, last = _to_integer(start, dtype), _to_integer(end, dtype)
        span = last - first
    else:
        first, last = (float(dtypes.cast(np.asarray(_to_float(v, dtype)), dtype)) for v in (start, end))
        span = float(dtypes.cast(np.asarray(last - first), dtype))
    step = span / (steps - 1)
    return [first + step * i if i < steps // 2 else last - step * (steps - 1 - i) for i in range(steps)]


def _to_integer(value, dtype):
    """A Python number as torch converts a Scalar to an integer dtype: truncated, its range checked
    (an unsigned dtype takes negative integers down to -max, wrapping them as two's complement)."""
    value = value.item() if isinstance(value, Tensor) else value
    limits = np.iinfo(dtype)
    if isinstance(value, (int, np.integer)) and limits.min == 0 and -limits.max <= value < 0:
        return int(value) % (limits.max + 1)
    _check_fits(value, dtype)
    return int(value)


def _to_float(value, dtype):
    """A Python number (or 0-d tensor) as a float, refused as torch refuses it where ``dtype``
    cannot hold it (infinities and NaN pass)."""
    value = float(value.item() if isinstance(value, Tensor) else value)
    _check_fits(value, dtype)
    return value


def _check_fits(value, dtype):
    """torch's range check where it converts a Python number to ``dtype``."""
    if dtypes.is_floating(dtype):
        if not math.isfinite(value):
            return
        low, high = -dtypes.finfo(dtype).max, dtypes.finfo(dtype).max
    else:
        low, high = np.iinfo(dtype).min, np.iinfo(dtype).max
    if not low <= value <= high:
        raise RuntimeError(f"value cannot be converted to type {dtype} without overflow")


def _multiply_add(a, b, c):
    """``a * b + c`` rounded once, as torch's linspace kernel (compiled with fused multiply-adds) computes it
    (``float32_math``'s emulations: they keep inf and NaN where an error-free split of them gives NaN); torch's
    "default" build fuses none (``float32_math.FUSED_MULTIPLY_ADD``): two roundings there."""
    if not FUSED_MULTIPLY_ADD:
        return a * b + c
    fused = fused_multiply_add64 if np.asarray(b).dtype == np.float64 else fused_multiply_add
    return fused(a, b, c)


def check_range(start, end, step):
    """torch's checks of arange's / range's bounds (numbers): finite bounds and a step that is not 0 (nor NaN),
    walking towards ``end`` -- where Python's int() of a NaN or infinite bound raised its own ValueError."""
    if not (math.isfinite(start) and math.isfinite(end)):
        raise RuntimeError(f"unsupported range: {_scalar_text(start)} -> {_scalar_text(end)}")
    if step == 0 or math.isnan(step):
        raise RuntimeError("step must be nonzero")
    if (end - start) * step < 0:
        raise RuntimeError("upper bound and lower bound inconsistent with step sign")


def _scalar_text(x):
    """A number as torch's c10::Scalar prints it in a message (six significant digits: ``0``, ``1.5``, ``nan``)."""
    return str(x) if isinstance(x, (int, np.integer)) else format(float(x), "g")


def arange_values(start, step, count, dtype):
    """torch's CPU ``arange`` values in a floating ``dtype``, bit for bit. ATen's kernel computes in the
    accumulate type (float64 for float32/float64, float32 for 16-bit floats) as cpu_serial_kernel_vec runs it:
    each thread's chunk (at::parallel_for, 32768 elements a grain) goes in blocks of two vectors of
    ``32 // itemsize`` lanes (the 32-byte build arange runs, even on AVX-512), each vector from its own base
    ``start + step * j`` rounded to ``dtype``, its lanes ``base + k * step``; the chunk's last elements (fewer
    than two vectors) are ``start + step * i`` rounded once. Products and sums are fused where torch's build
    fuses them (``FUSED_MULTIPLY_ADD``; 16-bit arithmetic runs through c10's operators, unfused)."""
    if dtype.itemsize == 2 or not FUSED_MULTIPLY_ADD:
        wide, multiply_add = np.float32 if dtype.itemsize == 2 else np.float64, lambda a, b, c: a * b + c
    else:
        wide, multiply_add = np.float64, fused_multiply_add64
    lanes, step, start = 32 // dtype.itemsize, wide(step), wide(start)
    index = np.arange(count)
    tasks = max(1, min(_parallel.num_threads(), -(-count // 32768)))
    chunk = max(1, -(-count // tasks))
    begin = index - index % chunk
    length = np.minimum(begin + chunk, count) - begin
    position = index - begin
    vectorised = position < length // (2 * lanes) * (2 * lanes)
    lane = (position % lanes).astype(wide)
    base = dtypes.cast(multiply_add(step, (index - lane).astype(wide), start), dtype).astype(wide)
    in_vectors = dtypes.cast(multiply_add(step, lane, base), dtype)
    alone = dtypes.cast(multiply_add(step, index.astype(wide), start), dtype)
    return np.where(vectorised, in_vectors, alone)


def _linspace_16bit(start, end, steps, dtype):
    """torch's CPU linspace in a 16-bit float: ``start``, ``end`` and the step are values *of that
    dtype*, and every operation is rounded to it (its arithmetic on c10::BFloat16 / Half). The first
    half counts up from ``start``, the second down from ``end``, so both ends are exact.
    ``linspace(0, 1000, 7, dtype=bfloat16)[4]`` is 664 this way; float32 math rounded once says 668."""
    def rounded(x):  # a value of the dtype, held in float32 (which holds every 16-bit float exactly)
        return dtypes.cast(np.asarray(x, dtype=np.float32), dtype).astype(np.float32)
    first, last = rounded(_to_float(start, dtype)), rounded(_to_float(end, dtype))
    if steps == 1:
        return np.full(1, first).astype(dtype)
    step = rounded(rounded(last - first) / rounded(steps - 1))
    i = np.arange(steps)
    up = first + rounded(step * rounded(i))
    down = last - rounded(step * rounded(steps - 1 - i))
    return np.where(i < steps // 2, up, down).astype(dtype)


# ---- about tensors -----------------------------------------------------------------------------
def is_tensor(obj):
    return isinstance(obj, Tensor)


def numel(input):
    return math.prod(input.shape)


def is_floating_point(input):
    return input.is_floating_point()


def randperm(n, *, generator=None, dtype=None, layout=None, device=None, pin_memory=False, requires_grad=False):
    """``torch.randperm(n)``: a random permutation of ``0 .. n-1`` (int64 unless ``dtype``), torch's
    for the same seed."""
    if layout is not None or pin_memory is not False:  # (the common call skips the check)
        check_layout("randperm", layout, pin_memory, device)
    dtype = dtypes.int64 if dtype is None else dtypes.dtype_argument("randperm", dtype)
    n = operator.index(n)
    if n < 0:
        raise RuntimeError(f"Trying to create tensor with negative dimension {n}: [{n}]")
    _check_randperm_fits(n, dtype)
    device = _device_of(device)
    if device is META:
        return _undrawn((n,), dtype, requires_grad)
    return _made_drawn(_gen(generator).randperm(n).astype(dtype), dtype, device, requires_grad)


_RANDPERM_FLOAT_LIMITS = {"float16": (2049, "2049", "Half"), "float32": (2 ** 24 + 1, "2^24+1", "Float"),
                          "float64": (2 ** 53 + 1, "2^53+1", "Double")}


def _check_randperm_fits(n, dtype):
    """torch's refusal of a permutation ``dtype`` cannot hold (the last value ``n - 1``)."""
    if dtype == np.bool_ or dtype.kind == "c":
        raise NotImplementedError(f'"randperm" not implemented for \'{dtypes.torch_name(dtype)}\'')
    if dtype.name in _RANDPERM_FLOAT_LIMITS:
        limit, shown, name = _RANDPERM_FLOAT_LIMITS[dtype.name]
        if n > limit:
            raise RuntimeError(f"n cannot be greater than {shown} for {name} type.")
    elif dtype.kind in "iu" and n - 1 > np.iinfo(dtype).max:
        raise RuntimeError(f"value cannot be converted to type {dtype.name}_t without overflow")


def multinomial(input, num_samples, replacement=False, *, generator=None):
    """``torch.multinomial``: ``num_samples`` category indices (int64) drawn from each row of
    ``input``, a 1-D or 2-D tensor of non-negative weights (they need not sum to one). Without
    replacement a category is drawn at most once; once the categories of nonzero weight are used up,
    the zero-weight ones follow. torch's algorithms, so torch's samples for the same seed: one sample
    or no replacement: the arg-max / top-k of ``weight / Exp(1)`` (the zero weights tie at 0: minilora
    takes them in index order, torch in its top-k's order of ties); several with replacement: a
    uniform double searched in each row's normalised cumulative sum. No gradient, as in torch."""
    _check_int(num_samples, "multinomial", "num_samples", 2)
    if not dtypes.is_floating(input.dtype):
        raise RuntimeError(f"multinomial only supports floating-point dtypes for input, got: "
                           f"{dtypes.torch_name(input.dtype)}")
    if input.is_meta:  # (nothing to draw from: no draws, as torch's)
        return _make(_unwritten(tuple(input.shape[:-1]) + (num_samples,), np.int64), dtypes.int64, META, False)
    weights = _host(input)
    if weights.ndim not in (1, 2):
        raise RuntimeError("prob_dist must be 1 or 2 dim")
    if num_samples <= 0:
        raise RuntimeError("cannot sample n_sample <= 0 samples")
    if not replacement and num_samples > weights.shape[-1]:
        raise RuntimeError("cannot sample n_sample > prob_dist.size(-1) samples without replacement")
    if weights.shape[-1] == 0:  # (torch's check of the weights fails first, in its aminmax)
        raise RuntimeError("aminmax(): cannot compute aminmax over an empty dimension as the operation "
                           "has no identity")
    rows = weights.reshape(-1, weights.shape[-1])
    many_with_replacement = replacement and num_samples > 1  # (torch's kernel checks each row as it draws)
    if not many_with_replacement and (not np.all(np.isfinite(weights)) or np.any(weights < 0)):
        raise RuntimeError("probability tensor contains either `inf`, `nan` or element < 0")
    if not many_with_replacement and np.any(rows.sum(axis=1) <= 0):
        raise RuntimeError("invalid multinomial distribution (sum of probabilities <= 0)")
    gen, typed = _gen(generator), input.detach().cpu().numpy().reshape(rows.shape)
    if many_with_replacement:
        draws = _draw_with_replacement(gen, typed, num_samples)
    else:  # (torch's exponentials fill empty_like(input): in its memory order)
        exponentials = _drawn_in_memory_order(input._array, gen.exponential).reshape(rows.shape)
        draws = _draw_by_exponential_race(gen, typed, num_samples, exponentials)
    return Tensor(draws.reshape(weights.shape[:-1] + (num_samples,)), dtype=np.int64, device=input.device)


def _check_int(value, fn, name, position):
    """torch's TypeError for a float (or bool) where an int argument goes."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{fn}(): argument '{name}' (position {position}) must be int, not "
                        f"{type(value).__name__}")


def _draw_with_replacement(gen, rows, num_samples):
    """torch's CPU kernel, row after row: the cumulative sum in the weights' dtype (float for 16-bit
    ones) divided by its total, the last set to 1; each sample the first category whose cumulative
    weight is not below a uniform double."""
    work = np.float32 if rows.dtype.itemsize == 2 else rows.dtype
    draws = np.empty((len(rows), num_samples), np.int64)
    for i, row in enumerate(rows.astype(work)):
        cumulative = np.cumsum(row, dtype=work)
        _check_distribution(row, cumulative[-1])  # (the rows before a bad one have drawn)
        cumulative /= cumulative[-1]
        cumulative[-1] = 1
        draws[i] = np.searchsorted(cumulative.astype(np.float64), gen.uniform((num_samples,), np.float64), "left")
    return draws


def _check_distribution(row, total):
    """torch's checks in its with-replacement kernel: each weight in order (not >= 0, NaN included; then not
    finite), then the row's sum."""
    bad = np.flatnonzero(~((row >= 0) & np.isfinite(row)))
    if bad.size:
        kind = "< 0" if not row[bad[0]] >= 0 else "= infinity or NaN"
        raise RuntimeError(f"invalid multinomial distribution (encountering probability entry {kind})")
    if not total > 0:
        raise RuntimeError("invalid multinomial distribution (sum of probabilities <= 0)")


def _draw_by_exponential_race(gen, rows, num_samples, exponentials=None):
    """torch's draw of one sample, or of several without replacement: ``q = weight / Exp(1)`` (the
    exponentials drawn for the whole weight tensor, in its dtype; ``exponentials``: drawn already, in the
    weights' memory order), then the arg-max (first of equal values) or the ``num_samples`` largest,
    largest first."""
    dtype = rows.dtype
    exponentials = dtypes.cast(gen.exponential(rows.shape) if exponentials is None else exponentials, dtype)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = dtypes.cast(dtypes.upcast(rows) / dtypes.upcast(exponentials), dtype).astype(np.float64)
    if num_samples == 1:
        return np.argmax(ratios, axis=1)[:, None].astype(np.int64)
    return np.argsort(-ratios, axis=1, kind="stable")[:, :num_samples].astype(np.int64)


def _multinomial_method(self, num_samples, replacement=False, *, generator=None):
    return multinomial(self, num_samples, replacement, generator=generator)


Tensor.multinomial = _multinomial_method  # x.multinomial(n), as torch


# ---- torch's sampling family: normal, bernoulli, poisson, randint_like, Tensor.*_ fills ---------
# Every draw is torch's algorithm on torch's stream (the Generator's methods). No gradient flows through a draw, but torch still links a drawn tensor to the graph of the
# tensors it was drawn from (their gradient is zero), so it requires grad when one of them does.
def _refuse_integer(input, kernel):
    """torch's NotImplementedError for a sampling kernel that has no integer (or bool) version."""
    if not dtypes.is_floating(input.dtype):
        raise NotImplementedError(f'"{kernel}" not implemented for \'{dtypes.torch_name(input.dtype)}\'')


def _drawn(values, dtype, device, sources=()):
    """``values`` (a NumPy array) as a tensor of ``dtype``; in the graph (with a zero gradient) of
    the tensors among ``sources`` that require grad, as torch's sampling ops are."""
    linked = [s for s in sources if isinstance(s, Tensor) and s.requires_grad]
    if not linked or not _grad_enabled():
        return _made_drawn(dtypes.cast(values, dtype), dtype, device, False)
    anchor = sum(s.sum() for s in linked)  # any node that reads them: its values are replaced below
    out = anchor.to(dtype).expand(values.shape).clone()
    return out._fill_inplace(out._device.xp.asarray(dtypes.cast(values, dtype)))


def _grad_enabled():
    from .tensor import is_grad_enabled
    return is_grad_enabled()


def no_derivative_error(name, error=RuntimeError):
    """torch's error for an op it has no derivative for, in its two wordings: a RuntimeError from its generated code
    (no formula: ``derivative for aten::X is not implemented``), a NotImplementedError from derivatives.yaml's
    ``not_implemented`` (``the derivative for 'X' is not implemented.``)."""
    if error is RuntimeError:
        return RuntimeError(f"derivative for aten::{name} is not implemented")
    return error(f"the derivative for '{name}' is not implemented.")


class _NoDerivative(Function):
    """A result computed outside the graph that torch nevertheless records with a node whose backward is not
    implemented (``unique``, ``bincount`` with weights, ``heaviside``): the result requires grad and backward through
    it raises torch's error (no_derivative_error: ``name``, ``error``), rather than silently skipping it."""

    kept_when_freed = _NAMED_BY_FIELDS  # (its name reads ctx.op_name: kept after backward)

    @staticmethod
    def forward(ctx, source, *, values, name, error=RuntimeError):
        ctx.op_name, ctx.error = name, error
        return values

    @staticmethod
    def torch_node_name(ctx):
        """torch's node: named where derivatives.yaml has an entry for the op (``not_implemented`` in it), else its
        fallback ``NotImplemented`` (heaviside, bincount, histogram, scatter's reduce, bernoulli(p))."""
        return _NAMED_NO_DERIVATIVE.get(ctx.op_name, "torch::autograd::NotImplemented")

    @staticmethod
    def backward(ctx, grad):
        raise no_derivative_error(ctx.op_name, ctx.error)


_NAMED_NO_DERIVATIVE = {"_unique2": "Unique2Backward0", "unique_dim": "UniqueDimBackward0",
                        "unique_consecutive": "UniqueConsecutiveBackward0",
                        "_standard_gamma_grad": "StandardGammaGradBackward0"}


def _without_derivative(out, source, name):
    """``out``'s values in ``source``'s graph through a node whose backward raises torch's error."""
    return _NoDerivative.apply(source, values=out._array, name=name)


def _host(t):
    return np.asarray(t.detach().cpu().numpy(), dtype=np.float64)


def _broadcast(a, b):
    """The broadcast shape of two shapes, or torch's RuntimeError naming the first mismatch."""
    try:
        return np.broadcast_shapes(a, b)
    except ValueError:
        for i in range(1, min(len(a), len(b)) + 1):
            if a[-i] != b[-i] and 1 not in (a[-i], b[-i]):
                raise RuntimeError(f"The size of tensor a ({a[-i]}) must match the size of tensor b "
                                   f"({b[-i]}) at non-singleton dimension {max(len(a), len(b)) - i}") from None
        raise


def normal(mean, std=1.0, size=None, *, generator=None, dtype=None, layout=None, device=None, pin_memory=False,
           requires_grad=False):
    """``torch.normal``, its four overloads: ``normal(mean_tensor, std_tensor)`` (broadcast),
    ``normal(mean_tensor, std=1.0)``, ``normal(mean, std_tensor)``, and ``normal(mean, std, size)``
    (with ``dtype``, ``device``, ``requires_grad`` as ``randn``). A tensor result takes ``mean``'s
    dtype (``std``'s when ``mean`` is a number); no gradient flows through the draw."""
    if layout is not None or pin_memory is not False:  # (the common call skips the check)
        check_layout("normal", layout, pin_memory, device)
    dtype = dtype if dtype is None else dtypes.dtype_argument("normal", dtype)
    if size is not None:  # normal(mean, std, size): numbers (a 0-d tensor reads as one, as in torch)
        if not isinstance(size, (tuple, list)) or any(isinstance(v, Tensor) and v.ndim for v in (mean, std)):
            raise TypeError("normal() received an invalid combination of arguments: with a size, mean and "
                            "std are numbers and size a tuple of ints")
        mean, std = _scalars(mean, std)
    if not isinstance(mean, Tensor) and not isinstance(std, Tensor):
        if size is None:
            raise TypeError("normal() received an invalid combination of arguments - got (float, float): "
                            "with numbers for mean and std it needs a size: normal(mean, std, size)")
        _check_std(std)
        requires_grad = requires_grad or False  # (None: False, as the other factories read it: _argument_types)
        shape = _size((size,), "normal")
        device = _device_of(device)
        if device is META:
            return _undrawn(shape, _float_dtype(dtype), requires_grad)
        array, dtype = _random_float(lambda d: _gen(generator).normal(shape, d, mean, std), dtype,
                                     "normal_kernel_cpu")
        return _made_drawn(array, dtype, device, requires_grad)
    if (dtype, layout, device, pin_memory, requires_grad) != (None, None, None, False, False):
        # (only the size overload takes them: a tensor mean or std's result was made as they asked, torch refuses)
        raise TypeError("normal() received an invalid combination of arguments: dtype, layout, device, pin_memory "
                        "and requires_grad go with normal(mean, std, size) of numbers only")
    like = mean if isinstance(mean, Tensor) else std
    if isinstance(std, Tensor) and std.dtype.kind == "c":
        raise RuntimeError("normal expects standard deviation to be non-complex")
    if like.dtype.kind != "c":  # (a complex mean: torch's complex normal_, each part with std / sqrt(2))
        _refuse_integer(like, "normal_kernel_cpu")
    if like.is_meta:
        return _make(_unwritten(_broadcast(np.shape(mean), np.shape(std)), like.dtype), like.dtype, META, False)
    if isinstance(std, Tensor):
        if np.any(_host(std) < 0):  # (NaN passes, as in torch)
            raise RuntimeError("normal expects all elements of std >= 0.0")
    else:
        _check_std(std)
    return _drawn(_normal_tensors(mean, std, like.dtype, generator), like.dtype, like.device, (mean, std))


def _normal_tensors(mean, std, dtype, generator):
    """torch's ``normal(mean, std)`` with a tensor among them: standard normals of the broadcast
    shape (with a number ``std``: of that std), then ``mul_(std)`` and ``add_(mean)`` in ``dtype``."""
    means, stds = (v.detach().cpu().numpy() if isinstance(v, Tensor) else v for v in (mean, std))
    shape = _broadcast(np.shape(means), np.shape(stds))
    part_std = 1 / math.sqrt(2) if dtype.kind == "c" else 1.0  # (complex: normal_'s std split between the parts)
    draw = _in_pairs_if_complex(dtype, lambda s, d: _gen(generator).normal(
        s, d, 0.0, part_std * (1.0 if isinstance(std, Tensor) else std)))
    values = draw(shape)
    if isinstance(std, Tensor):
        values = dtypes.cast(dtypes.upcast(values) * dtypes.upcast(dtypes.cast(np.asarray(stds), dtype)), dtype)
    if not isinstance(mean, Tensor):
        means = dtypes.cast(np.asarray(means, np.float64), dtype)
    return dtypes.cast(dtypes.upcast(values) + dtypes.upcast(dtypes.cast(np.asarray(means), dtype)), dtype)


def _check_std(std):
    if std < 0:
        raise RuntimeError(f"normal expects std >= 0.0, but found std {_number(std)}")


def _number(x):
    """A number as torch prints it in an error message (``-1.0`` as ``-1``)."""
    return int(x) if float(x).is_integer() else x


def bernoulli(input, p=None, *, generator=None):
    """``torch.bernoulli(input)``: 1 with probability ``input[i]`` (each in [0, 1]), else 0, in
    ``input``'s dtype (a floating one). ``bernoulli(input, p)``: a tensor like ``input`` (any dtype)
    drawn with the one probability ``p``."""
    if input.is_meta:
        return _make(_unwritten(input.shape, input.dtype), input.dtype, META, False)
    if p is not None:  # (torch's graph of this one has no derivative: backward raises)
        out = _drawn(_bernoulli_draws(p, input.shape, generator), input.dtype, input.device)
        return _without_derivative(out, input, "bernoulli") if input.requires_grad and _grad_enabled() else out
    dtypes.refuse_complex("bernoulli_tensor_cpu_self_", input)
    _refuse_integer(input, "bernoulli_tensor_cpu_p_")
    probs = dtypes.canonical(input.detach().cpu().numpy())
    _check_probabilities(probs, generator)
    draws = _gen(generator).bernoulli_tensor(probs)
    return _drawn(draws, input.dtype, input.device, (input,))


def _check_probabilities(probs, generator):
    """torch's check of each probability (in [0, 1]; NaN fails), made element by element as its kernel draws:
    the elements before the first one outside have drawn their uniforms when it raises."""
    flat = np.asarray(probs).reshape(-1)
    outside = np.flatnonzero(~((flat >= 0) & (flat <= 1)))
    if outside.size:
        _gen(generator).bernoulli_tensor(flat[:outside[0]])
        raise RuntimeError("Expected p_in >= 0 && p_in <= 1 to be true, but got false.  (Could this error message "
                           "be improved?  If so, please report an enhancement request to PyTorch.)")  # (torch's words)


def _bernoulli_draws(p, shape, generator):
    """0/1 draws (bool) of ``shape``: ``p`` a number in [0, 1], or a tensor broadcast to ``shape``
    (a 53-bit uniform double below p; below a float p tensor: a 24-bit float)."""
    if isinstance(p, Tensor):
        _refuse_integer(p, "bernoulli_tensor_cpu_p_")
        probs = _host(p)
        if probs.ndim > len(shape) or np.broadcast_shapes(probs.shape, shape) != tuple(shape):
            raise RuntimeError(f"expand({list(probs.shape)}, size={list(shape)}): the probabilities "
                               f"cannot be broadcast to the tensor's shape")
        probs = np.broadcast_to(dtypes.canonical(p.detach().cpu().numpy()), shape)
        _check_probabilities(probs, generator)
        return _gen(generator).bernoulli_tensor(probs)
    if not 0 <= p <= 1:
        raise RuntimeError(f"bernoulli_ expects p to be in [0, 1], but got p={_number(p)}")
    return _gen(generator).bernoulli(shape, p)


def poisson(input, generator=None):
    """``torch.poisson(rates)``: a Poisson draw for each rate (non-negative), in ``rates``' dtype,
    torch's sampler (see ``Generator.poisson``). A rate past int64 (infinity too) gives torch's
    -2**63 (its int64 overflow)."""
    _refuse_integer(input, "poisson_cpu")
    if input.is_meta:
        return _make(_unwritten(input.shape, input.dtype), input.dtype, META, False)
    rates = _host(input)
    negative = np.flatnonzero(~(rates.reshape(-1) >= 0))  # (NaN fails too)
    if negative.size:  # (torch's kernel checks each rate as it draws: those before it have drawn)
        _gen(generator).poisson(rates.reshape(-1)[:negative[0]])
        raise RuntimeError("invalid Poisson rate, expected rate to be non-negative")
    return _drawn(_gen(generator).poisson(rates), input.dtype, input.device, (input,))


def randint_like(input, low=0, high=None, *, generator=None, dtype=None, layout=None, device=None,
                 pin_memory=False, requires_grad=False, memory_format=None):
    """``randint_like(input, high)`` or ``randint_like(input, low, high)``: integers in
    ``[low, high)`` shaped like ``input``, in its dtype unless told (a float tensor gets whole floats)."""
    if layout is not None or pin_memory is not False:  # (the common call skips the check)
        check_layout("randint_like", layout, pin_memory, device)
    if high is None:
        low, high = 0, low
    if high is None:  # (randint_like(x, None): torch's parser refuses it; randint read it as 0)
        raise TypeError("randint_like(): argument 'high' must be int, not NoneType")
    dtype, device = _like(input, dtype, device, "randint_like")
    return _laid_out_like(input, memory_format, lambda shape: randint(
        low, high, shape, generator=generator, dtype=dtype, device=device, requires_grad=requires_grad), draws=True)


# ---- histc -------------------------------------------------------------------------------------
def histc(input, bins=100, min=0, max=0):
    """``torch.histc``: counts of ``input``'s elements in ``bins`` equal-width bins over
    ``[min, max]`` (values outside are left out; ``max`` itself falls in the last bin). ``min == max``
    (the default 0, 0) takes the data's range; a range of one value widens to ``[v - 1, v + 1]``. The
    counts are in ``input``'s dtype, without gradient. A bin index is torch's:
    ``int((x - left) * bins / (right - left))`` computed in the dtype.

    The counts are exact. torch counts in the input's dtype, once per CPU thread: a 16-bit count
    stops growing at 256 (bfloat16) or 2048 (float16) per thread, so its result depends on the
    machine (``histc(ones(1000, dtype=bfloat16), 3)[1]`` is 512 on 2 threads, 256 on 1). (torch's ``out=``:
    minilora/__init__.py wraps it, as histogram.)"""
    _check_int(bins, "histc", "bins", 2)
    if input.dtype.kind == "c" and min == max:  # (torch takes the range from aminmax first)
        _refuse_integer(input, "aminmax_cpu")
    _refuse_integer(input, "histogram_cpu")
    if bins <= 0:
        raise RuntimeError(f"torch.histogram(): bins must be > 0, but got {bins} for dimension 0")
    if input.is_meta:  # (no values to count: the counts' shape, as torch's meta kernel)
        return _make(_unwritten((bins,), input.dtype), input.dtype, input.device, False)
    values = input.detach().cpu().numpy().reshape(-1)
    left, right = _histc_range(values, float(min), float(max))
    edges = linspace(left, right, bins + 1, dtype=input.dtype).numpy()
    counts = np.bincount(_histc_bins(values, edges, bins), minlength=bins + 1)[:bins]
    return _make(counts.astype(input.dtype), input.dtype, input.device, False)


def _histc_range(values, left, right):
    """torch's histc range: the given one, or the data's when ``min == max``; widened by 1 each way
    when it is a single value; refused when not finite or reversed."""
    if left == right and values.size:
        left, right = float(np.min(values)), float(np.max(values))  # (a NaN gives NaN: refused below)
        if math.isnan(left) and CPU_CAPABILITY != "default":  # (the vectorized min/max's NaN is all ones)
            left = right = -math.nan
    if left == right:
        left, right = left - 1, right + 1
    if not (math.isfinite(left) and math.isfinite(right)):  # (C prints a NaN with its sign)
        shown = (("-nan" if math.copysign(1, v) < 0 else "nan") if math.isnan(v) else _number(v) for v in (left, right))
        raise RuntimeError("torch.histc: range of [{}, {}] is not finite".format(*shown))
    if not left < right:
        raise RuntimeError("torch.histc: max must be larger than min")
    return left, right


def _histc_bins(values, edges, bins):
    """Each value's bin (``bins`` for one left out), computed in the values' dtype as torch's kernel
    (each step of a 16-bit float rounded to it: c10::Half arithmetic)."""
    dtype = values.dtype
    def rounded(x):
        return dtypes.cast(np.asarray(x, dtype=np.float32), dtype).astype(np.float32) \
            if dtype.itemsize == 2 else np.asarray(x, dtype=dtype)
    left, right = rounded(edges[0]), rounded(edges[-1])
    x = rounded(values)
    with np.errstate(invalid="ignore"):
        inside = (x >= left) & (x <= right)  # (NaN is outside)
        position = rounded(rounded(rounded(x - left) * rounded(bins)) / rounded(right - left))
    # x == right (or a position rounded up to bins) lands in the last bin, as in torch's kernel. A
    # 16-bit product (x - left) * bins past the dtype's range is inf: torch's cast of it to int64 is
    # INT64_MIN, an offset that wraps around to bin 0 (so those values count in the first bin)
    position = np.where(np.isinf(position), 0, np.minimum(np.nan_to_num(position), bins - 1))
    return np.where(inside, position, bins).astype(np.int64)


# ---- histogram ---------------------------------------------------------------------------------
_Histogram = return_types.make("histogram", ["hist", "bin_edges"])  # torch.return_types.histogram


def histogram(input, bins=100, *, range=None, weight=None, density=False):  # noqa: A002
    """``torch.histogram``: ``(hist, bin_edges)``. ``bins`` an int (equal-width bins over ``range``,
    the data's min..max by default, a single value widened by 0.5 each way) or a tensor of edges.
    Each bin holds ``[edge_i, edge_i+1)``, the last one its right edge too; values outside (and NaN)
    are left out. ``weight`` adds its element instead of 1, in the values' order (torch on several
    threads sums each thread's share apart: its float32 sums can differ in the last bits). ``density``
    divides by the total and by each bin's width, as torch (``hist / hist.sum()``, then
    ``/ bin_edges.diff()``). float32/float64 only, as torch's kernel. Both results require a gradient
    when ``input`` does, through a node whose backward is torch's error (aten::histogram has none)."""
    if input.dtype not in (dtypes.float32, dtypes.float64):
        raise NotImplementedError(f"\"histogramdd\" not implemented for '{dtypes.torch_name(input.dtype)}'")
    no_forward_formula("aten::histogram", input, weight)
    if isinstance(bins, Tensor) and bins.ndim != 1:  # (edges are a list: a matrix of them was read flattened)
        raise RuntimeError(f"torch.histogramdd: bins tensor should have one dimension, but got {bins.ndim} "
                           "dimensions in the bins tensor for dimension 0")
    values = input.detach().cpu().numpy().reshape(-1)
    edges = _histogram_edges(input, values, bins, range)
    counts_weight = _histogram_weight(input, weight)
    positions = _histogram_bins(values, edges, local_search=not isinstance(bins, Tensor))
    inside = positions >= 0
    hist = np.zeros(len(edges) - 1, dtype=input.dtype)  # (added to in the values' order, in the dtype: torch's)
    np.add.at(hist, positions[inside], input.dtype.type(1) if counts_weight is None else counts_weight[inside])
    if density:  # (a float32 total of weights can differ from torch's in the last bit: its summation order)
        hist = (hist / hist.sum(dtype=input.dtype)) / np.diff(edges)
    hist_t = _make(hist, input.dtype, input.device, False)
    edges_t = _make(edges, input.dtype, input.device, False)
    if input.requires_grad and _grad_enabled():
        hist_t, edges_t = share_node(tuple(_without_derivative(t, input, "histogram") for t in (hist_t, edges_t)))
    return _Histogram(hist_t, edges_t)


def _histogram_edges(input, values, bins, range, dim=0):  # noqa: A002
    """The bin edges: ``bins`` itself (a tensor of input's dtype), or ``bins + 1`` values of
    ``linspace`` over the range (torch's checks, torch's messages; ``dim``: histogramdd's dimension)."""
    if isinstance(bins, Tensor):
        if bins.dtype != input.dtype:
            raise RuntimeError("torch.histogramdd: input tensor and bins tensors should have the same dtype, "
                               f"but got input with dtype {_c_float(input.dtype)} and bins for dimension {dim} "
                               f"with dtype {_c_float(bins.dtype)}")
        if bins.numel() < 2:
            raise RuntimeError(f"torch.histogram(): bins must be > 0, but got {bins.numel() - 1} for dimension {dim}")
        return bins.detach().cpu().numpy().reshape(-1)
    _check_int(bins, "histogram", "bins", 2)
    if bins <= 0:
        raise RuntimeError(f"torch.histogram(): bins must be > 0, but got {bins} for dimension {dim}")
    if range is not None:
        left, right = float(range[0]), float(range[1])
    elif values.size:
        left, right = float(np.min(values)), float(np.max(values))  # (NaN propagates: refused below)
    else:
        left, right = 0.0, 1.0
    if not (math.isfinite(left) and math.isfinite(right)):
        raise RuntimeError(f"torch.histogramdd: dimension {dim}'s range [{_c_number(left)}, {_c_number(right)}] "
                           "is not finite")
    if left > right:
        raise RuntimeError(f"torch.histogramdd: min should not exceed max, but got min {_number(left)} max "
                           f"{_number(right)} for dimension {dim}")
    if left == right:
        left, right = left - 0.5, right + 0.5
    return linspace(left, right, bins + 1, dtype=input.dtype).numpy()


def _c_float(dtype):
    return _C_FLOAT_NAMES.get(dtype.name, dtype.name)


def _c_number(x):
    return "nan" if math.isnan(x) else _number(x)


def _histogram_weight(input, weight):
    if weight is None:
        return None
    if tuple(weight.shape) != tuple(input.shape):
        raise RuntimeError("torch.histogramdd: if weight tensor is provided it should have the same shape as the "
                           "input tensor excluding its innermost dimension, but got input with shape "
                           f"[{input.numel()}, 1] and weight with shape {list(weight.shape)}")
    if weight.dtype != input.dtype:
        raise RuntimeError("torch.histogramdd: if weight tensor is provided, input tensor and weight tensor should "
                           f"have the same dtype, but got input({_c_float(input.dtype)}), and "
                           f"weight({_c_float(weight.dtype)})")
    return weight.detach().cpu().numpy().reshape(-1)


def _histogram_bins(values, edges, local_search):
    """Each value's bin, -1 for one outside the edges (or NaN). Equal-width bins (``local_search``):
    torch's guess ``int((x - left) * bins / (right - left))`` in the dtype, then corrected against the
    neighbouring edges; bins given as edges: a binary search. A value on the last edge is in the last bin."""
    n_edges = len(edges)
    left, right = edges[0], edges[-1]
    with np.errstate(invalid="ignore"):
        inside = (values >= left) & (values <= right)
    x = np.where(inside, values, left)
    if local_search:
        guess = ((x - left) * values.dtype.type(n_edges - 1) / (right - left)).astype(np.int64)
        low, high = np.maximum(guess - 1, 0), np.minimum(guess + 2, n_edges)
        # upper_bound within edges[low:high]: low + how many of those edges are <= x
        window = np.arange(3)
        candidates = np.minimum(low[:, None] + window, n_edges - 1)
        below = (edges[candidates] <= x[:, None]) & (low[:, None] + window < high[:, None])
        position = low + below.sum(axis=1) - 1
    else:
        position = np.searchsorted(edges, x, side="right") - 1
    position = np.where(position == n_edges - 1, position - 1, position)
    return np.where(inside, position, -1)


_HistogramDD = return_types.make("histogramdd", ["hist", "bin_edges"])  # torch.return_types.histogramdd


def histogramdd(input, bins, *, range=None, weight=None, density=False):  # noqa: A002
    """``torch.histogramdd``: the histogram of ``input``'s rows, each a point in ``D = input.shape[-1]``
    dimensions: ``(hist, bin_edges)``, ``hist`` of shape (bins_0, ..., bins_D-1), one tensor of edges a dimension.
    ``bins`` an int for every dimension, one int a dimension or one tensor of edges a dimension; ``range`` a flat
    list of D (min, max) pairs; each dimension binned as ``histogram`` bins (a point outside any is left out);
    ``density`` divides by the total, then by each bin's width in each dimension, as torch's."""
    if input.dtype not in (dtypes.float32, dtypes.float64):
        raise NotImplementedError(f"\"histogramdd\" not implemented for '{dtypes.torch_name(input.dtype)}'")
    if input.ndim < 2:
        raise RuntimeError("torch.histogramdd: input tensor should have at least 2 dimensions")
    no_forward_formula("aten::histogramdd", input, weight)
    dims = input.shape[-1]
    bins = [bins] * dims if isinstance(bins, int) else list(bins)
    if len(bins) != dims:
        raise RuntimeError("histogramdd: The size of bins must be equal to the innermost dimension of the input.")
    if range is not None and len(range) != 2 * dims:
        raise RuntimeError(f"torch.histogramdd: for a {dims}-dimensional histogram range should have {2 * dims} "
                           f"elements, but got {len(range)}")
    points = input.detach().cpu().numpy().reshape(-1, dims)
    if weight is not None and tuple(weight.shape) != tuple(input.shape[:-1]):
        raise RuntimeError("torch.histogramdd: if weight tensor is provided it should have the same shape as the "
                           "input tensor excluding its innermost dimension, but got input with shape "
                           f"{list(input.shape)} and weight with shape {list(weight.shape)}")
    counts_weight = None if weight is None else _histogram_weight(input.detach()[..., 0], weight)
    edges = [_histogram_edges(input, points[:, d], bins[d], None if range is None else range[2 * d:2 * d + 2], d)
             for d in builtins.range(dims)]
    positions = [_histogram_bins(points[:, d], edges[d], local_search=not isinstance(bins[d], Tensor))
                 for d in builtins.range(dims)]
    inside = np.logical_and.reduce([p >= 0 for p in positions]) if dims else np.ones(len(points), bool)
    hist = np.zeros([len(e) - 1 for e in edges], dtype=input.dtype)  # (added to in the points' order)
    np.add.at(hist, tuple(p[inside] for p in positions),
              input.dtype.type(1) if counts_weight is None else counts_weight[inside])
    if density:
        hist = hist / hist.sum(dtype=input.dtype)
        for d, e in enumerate(edges):
            hist = hist / np.diff(e).reshape([-1 if k == d else 1 for k in builtins.range(dims)])
    hist_t = _make(hist, input.dtype, input.device, False)
    edges_t = [_make(e, input.dtype, input.device, False) for e in edges]
    if input.requires_grad and _grad_enabled():
        hist_t = _without_derivative(hist_t, input, "histogramdd")
        edges_t = [_without_derivative(t, input, "histogramdd") for t in edges_t]
    return _HistogramDD(hist_t, tuple(edges_t))


# ---- in-place random fills: Tensor.normal_, uniform_, exponential_, random_, bernoulli_, ... -----
def _fill_drawn(self, draw):
    """Write ``draw(shape)`` (drawn on the host in ``self``'s memory order, as torch's iterator fills
    it; any float dtype, cast to self's) into ``self``: a leaf requiring grad refuses; in the graph the
    node stays and the gradient to the old values is zero, as torch's."""
    if self._device is META:  # (no values to draw: torch's generator does not move)
        return self._fill_inplace(0)
    values = _drawn_in_memory_order(self._array, draw)
    return self._fill_inplace(self._device.xp.asarray(dtypes.cast(np.asarray(values), self.dtype)))


def _continuous(self, name, type_name):
    """torch's error for a continuous distribution asked to fill an integer (or bool) tensor."""
    if not dtypes.is_floating(self.dtype):
        raise RuntimeError(f"{name} distribution is a continuous probability distribution. dtype must "
                           f"be a floating point but you specified {type_name(self.dtype)}")


_GCC_TYPES = {"int64": "long int", "uint8": "unsigned char", "bool": "bool"}  # (typeid names torch prints)


def _scalars(*values):
    """The numbers of a random fill, a 0-d tensor read as its value (as torch takes one)."""
    return [v.item() if isinstance(v, Tensor) else v for v in values]


def _normal_(self, mean=0.0, std=1.0, *, generator=None):
    mean, std = _scalars(mean, std)
    _check_std(std)
    if self.dtype.kind != "c":
        _refuse_integer(self, "normal_kernel_cpu")
    contiguous = self._array.flags.c_contiguous  # (torch's block algorithm is for contiguous tensors)
    if self.dtype.kind == "c":  # torch: each part with std / sqrt(2), so that |z| has the std asked
        std = std / math.sqrt(2)
    return _fill_drawn(self, _in_pairs_if_complex(
        self.dtype, lambda shape, dtype: _gen(generator).normal(shape, dtype, mean, std, contiguous)))


def _uniform_(self, a=0.0, b=1.0, *, generator=None):
    a, b = _scalars(a, b)
    if self.dtype.kind != "c":
        _refuse_integer(self, "check_uniform_bounds")
    check_uniform_bounds(a, b, self.dtype)
    return _fill_drawn(self, _in_pairs_if_complex(
        self.dtype, lambda shape, dtype: _gen(generator).uniform(shape, dtype, a, b)))


_C_FLOAT_NAMES = {"float32": "float", "float64": "double", "float16": "c10::Half", "bfloat16": "c10::BFloat16"}


def check_uniform_bounds(low, high, dtype):
    """torch's checks of ``uniform_(low, high)`` on a tensor of ``dtype`` (a complex one: its parts' dtype): each
    bound finite and within the dtype's range, ``low <= high``, and ``high - low`` within it too (NumPy would fill
    the tensor with inf)."""
    real = np.dtype(np.float32 if dtype == np.complex64 else np.float64) if dtype.kind == "c" else dtype
    largest = float(dtypes.finfo(real).max)
    for value, name in ((low, "from"), (high, "to")):
        if not -largest <= value <= largest:  # (nan too)
            raise RuntimeError(f"{name} is out of bounds for {_C_FLOAT_NAMES[real.name]}")
    if low > high:
        raise RuntimeError(f"uniform_ expects to return a [from, to) range, but found from={_number(low)} "
                           f"> to={_number(high)}")
    if high - low > largest:  # (printed as C++ prints a double: 3e+38, 60000)
        raise RuntimeError(f"uniform_ expects to-from <= std::numeric_limits<{dtypes.torch_name(real)}>::max(), but "
                           f"found to={high:g} and from={low:g} which result in to-from to exceed the limit")


def _in_pairs_if_complex(dtype, draw):
    """``draw(shape, dtype)`` as a function of the shape; for a complex dtype, the (real, imag) pairs drawn
    as one real tensor of shape (..., 2), as torch fills ``view_as_real`` of a complex tensor."""
    if dtype.kind != "c":
        return lambda shape: draw(shape, dtype)
    real = np.dtype(np.float32 if dtype == np.complex64 else np.float64)
    return lambda shape: draw(tuple(shape) + (2,), real).view(dtype)[..., 0]


def _exponential_(self, lambd=1.0, *, generator=None):
    lambd, = _scalars(lambd)
    if not lambd > 0:
        raise RuntimeError(f"exponential_ expects lambda > 0.0, but found lambda={_number(lambd)}")
    _continuous(self, "Exponential", dtypes.torch_name)
    return _fill_drawn(self, lambda shape: _gen(generator).exponential(shape, lambd))


def _cauchy_(self, median=0.0, sigma=1.0, *, generator=None):
    median, sigma = _scalars(median, sigma)
    if not sigma > 0:
        raise RuntimeError(f"cauchy_ expects sigma > 0.0, but found sigma={_number(sigma)}")
    _continuous(self, "Cauchy", lambda d: _GCC_TYPES.get(d.name, _C_TYPES.get(d.name)))
    return _fill_drawn(self, lambda shape: _gen(generator).cauchy(shape, median, sigma))


def _log_normal_(self, mean=1.0, std=2.0, *, generator=None):
    mean, std = _scalars(mean, std)
    if not std > 0:
        raise RuntimeError(f"log_normal_ expects std > 0.0, but found std={_number(std)}")
    _refuse_integer(self, "log_normal_cpu")
    return _fill_drawn(self, lambda shape: _gen(generator).log_normal(shape, mean, std))


def _geometric_(self, p, *, generator=None):
    """The number of Bernoulli(p) trials up to the first success (1, 2, ...), any dtype."""
    p, = _scalars(p)
    if not 0 < p < 1:
        raise RuntimeError(f"geometric_ expects p to be in (0, 1), but got p={_number(p)}")
    if self.dtype == np.bool_ or self.dtype.kind == "c":
        raise NotImplementedError(f'"geometric_cpu" not implemented for \'{dtypes.torch_name(self.dtype)}\'')
    return _fill_drawn(self, lambda shape: _gen(generator).geometric(shape, p))


def _bernoulli_(self, p=0.5, *, generator=None):
    # (0/1 draws into a complex tensor: torch has no such kernel, named by the kind of p)
    dtypes.refuse_complex("bernoulli_tensor_cpu_self_" if isinstance(p, Tensor) else "bernoulli_scalar_cpu_", self)
    if isinstance(p, Tensor):  # (torch's iterator walks self in memory order, p broadcast alongside)
        order = draw_order(self)
        if order != tuple(builtins.range(self.ndim)) and _broadcasts_to(p.shape, self.shape):
            p = p.expand(self.shape).permute(order)
        return _fill_drawn(self, lambda shape: _bernoulli_draws(p, shape, generator))
    return _fill_drawn(self, lambda shape: _bernoulli_draws(p, shape, generator))


def _broadcasts_to(shape, target):
    """Does ``shape`` broadcast to ``target`` (torch's expand)?"""
    return len(shape) <= len(target) and all(n in (1, m) for n, m in zip(reversed(shape), reversed(target)))


def _bernoulli_method(self, p=None, *, generator=None):
    return bernoulli(self, p, generator=generator)


def _random_(self, *args, generator=None, **keywords):
    """``random_()``: integers in ``[0, top]`` (top: 2**mantissa bits for a float dtype, the dtype's
    max for an integer one); ``random_(to)``: ``[0, to)``; ``random_(from, to)``: ``[from, to)``
    (``to=None``: ``[from, top]``). Whole numbers even in a float tensor."""
    low, high = _random_range(self.dtype, *args, **keywords)
    if low == -2 ** 63 and high == _random_top(self.dtype) + 1 and self.dtype.name in _FULL_RANGE_DTYPES:
        high = 2 ** 63  # random_(-2**63, None): torch's kernel for all 2**64 values, whatever the dtype
    if not _names_to(args, keywords):  # random_(from): the bounds first, as torch
        _check_random_range(low, high, self.dtype)
        if high <= low:
            raise RuntimeError(f"random_ expects 'from' casted to dtype to be less than or equal to 'to_inc' "
                               f"casted to dtype, but got from={low} > to_inc={high - 1}")
    if high <= low:
        raise RuntimeError(f"random_ expects 'from' to be less than 'to', but got from={low} >= to={high}")
    _check_random_range(low, high, self.dtype)
    low, high = _representable_range(low, high, self.dtype, high_given=_names_to(args, keywords))
    if high - low < 2 ** 64:  # (every int64 value: torch does not warn)
        _warn_float_precision(high, self.dtype)
    if not args and not keywords:  # random_(): torch's own kernel (a 32-bit word but for int64/double)
        draw = lambda shape: _gen(generator).random_(shape, self.dtype)  # noqa: E731
    else:
        draw = lambda shape: _gen(generator).integers(shape, self.dtype, low, high)  # noqa: E731
    draws = _drawn_in_memory_order(self._array, draw)
    return self._fill_inplace(self._device.xp.asarray(draws))


_FULL_RANGE_DTYPES = ("int64", "float32", "float64", "bfloat16")


def _names_to(args, keywords):
    """Whether a random_ call gave ``to`` (a number): random_(to), random_(from, to), to=..."""
    named = dict(zip(("from", "to"), args if len(args) != 1 else (0, args[0])), **keywords)
    return named.get("to") is not None


def _random_range(dtype, *args, **keywords):
    """``(low, high)`` (high exclusive) from torch's spellings: ``()``, ``(to)``, ``(from, to)``."""
    if len(args) > 2 or set(keywords) - {"from", "to"}:
        raise TypeError("random_() takes (), (to) or (from, to)")
    if dtype.kind == "c":  # (torch: no integer draws into complex numbers)
        if not args and not keywords:
            raise NotImplementedError(f'"random_kernel_cpu" not implemented for \'{dtypes.torch_name(dtype)}\'')
        raise RuntimeError("check_random_bounds handles only integral, floating-point and boolean types")
    if len(args) == 1 and not keywords:  # random_(to)
        args = (0, args[0])
    named = dict(zip(("from", "to"), args), **keywords)
    low, high = named.get("from", 0), named.get("to")
    for value in (low, high):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer))):
            kinds = ", ".join(type(a).__name__ for a in args)
            raise TypeError(f"random_() received an invalid combination of arguments - got ({kinds}): "
                            f"'from' and 'to' must be ints")
        if value is not None and not -2 ** 63 <= value < 2 ** 63:
            raise ValueError("Overflow when unpacking long long")
    return int(low), _random_top(dtype) + 1 if high is None else int(high)


_MANTISSA_DIGITS = {"float16": 11, "bfloat16": 8, "float32": 24, "float64": 53}
_C_FLOAT_NAMES = {"float16": "c10::Half", "bfloat16": "c10::BFloat16", "float32": "float", "float64": "double"}


def _random_top(dtype):
    if dtype.kind == "b":
        return 1
    if dtypes.is_floating(dtype):
        return 2 ** _MANTISSA_DIGITS[dtype.name]
    return int(np.iinfo(dtype).max)


def _warn_float_precision(high, dtype):
    """torch's warning when a float dtype cannot hold every integer of the range."""
    if dtypes.is_floating(dtype) and high - 1 > 2 ** _MANTISSA_DIGITS[dtype.name]:
        import warnings
        digits = _MANTISSA_DIGITS[dtype.name]
        warnings.warn(f"to - 1 is out of bounds [-(2^{digits}), 2^{digits}]. Due to precision limitations "
                      f"{_C_FLOAT_NAMES[dtype.name]} can support discrete uniform distribution only within "
                      f"this range.", UserWarning, stacklevel=3)


def _histc_method(self, bins=100, min=0, max=0):
    return histc(self, bins, min, max)


def _histogram_method(self, bins=100, *, range=None, weight=None, density=False):  # noqa: A002
    return histogram(self, bins, range=range, weight=weight, density=density)


for _name, _method in (("normal_", _normal_), ("uniform_", _uniform_), ("exponential_", _exponential_),
                       ("cauchy_", _cauchy_), ("log_normal_", _log_normal_), ("geometric_", _geometric_),
                       ("bernoulli_", _bernoulli_), ("bernoulli", _bernoulli_method), ("random_", _random_),
                       ("histc", _histc_method), ("histogram", _histogram_method)):
    _method.__name__ = _name  # (so a wrong argument's TypeError names torch's method)
    setattr(Tensor, _name, _method)


# ---- out=: torch.zeros(2, 3, out=t) and the other factories torch gives it ------------------------
def with_out(factory):
    """``factory`` taking torch's keyword ``out=``: the values are made in out's dtype (a ``dtype=``
    that differs is torch's RuntimeError) and written into ``out``, resized to them without a
    warning as torch's factories resize; ``out`` itself is returned."""
    import functools

    @functools.wraps(factory)
    def call(*args, out=None, **kwargs):
        try:  # (NumPy's MemoryError for torch.empty(2**40): torch's CPU allocator's RuntimeError; free when none)
            if out is None:
                return factory(*args, **kwargs)
            _check_out(factory.__name__, out)
            dtype = kwargs.pop("dtype", None)
            if dtype is not None and dtypes.to_dtype(dtype) != out.dtype:
                raise RuntimeError(f"dtype {dtypes.torch_name(dtypes.to_dtype(dtype))} does not match dtype "
                                   f"of out parameter ({dtypes.torch_name(out.dtype)})")
            return _write_into(out, factory(*args, dtype=out.dtype, **kwargs))
        except MemoryError as exc:
            raise_device_error_as_torch(exc)
            raise
    return call


def refuse_overlapping_out(outs, inputs=(), same_allowed=False):
    """torch's refusal of an out= tensor whose elements share memory with each other (an expanded tensor: ATen's
    assert_no_internal_overlap) or with one of ``inputs`` (assert_no_overlap; the same tensor even when empty).
    ``same_allowed``: an input that is exactly the out tensor's elements passes (an elementwise op's
    assert_no_partial_overlap: ``torch.exp(x, out=x)`` computes each element before writing it). Two out tensors
    sharing memory are refused too: torch does not check it, and writes one result over the other (``aminmax(x,
    out=(z, z))``: both are the max) -- a refusal beats a silent wrong value."""
    for position, out in enumerate(outs):
        if any(o is out or out.device.xp.shares_memory(out._array, o._array) for o in outs[:position]):
            raise RuntimeError("unsupported operation: two of the out tensors refer to a single memory location: "
                               "each result needs a tensor of its own.")
        if out._array.size and any(step == 0 and n > 1 for step, n in zip(out._array.strides, out.shape)):
            raise RuntimeError("unsupported operation: more than one element of the written-to tensor refers to a "
                               "single memory location. Please clone() the tensor before performing the operation.")
        shared = [t for t in inputs if t is out or out.device.xp.shares_memory(out._array, t._array)]
        if any(not (same_allowed and _same_elements(out, t)) for t in shared):
            raise RuntimeError("unsupported operation: some elements of the input tensor and the written-to tensor "
                               "refer to a single memory location. Please clone() the tensor before performing the "
                               "operation.")


def _same_elements(a, b):
    """Whether tensors ``a`` and ``b`` are views of exactly the same elements, in the same order."""
    from .tensor import _data_address
    return a._array.shape == b._array.shape and a._array.strides == b._array.strides and \
        _data_address(a._array) == _data_address(b._array)


def _random_with_out(draw, drawn_for_out):
    """``draw`` (bernoulli, multinomial, normal) taking ``out=``: ``drawn_for_out(out, args, kwargs)``
    refuses an out torch refuses and draws; the draw is then written into ``out`` in its dtype."""
    import functools

    @functools.wraps(draw)
    def call(*args, out=None, **kwargs):
        if out is None:
            return draw(*args, **kwargs)
        _check_out(draw.__name__, out)
        refuse_overlapping_out((out,))
        result = drawn_for_out(out, args, kwargs)
        return _write_into(out, Tensor(dtypes.cast(result._array, out.dtype), dtype=out.dtype,
                                       device=result.device))
    return call


def _normal_for_out(out, args, kwargs):
    """normal(0., 1., size, out=t) draws in out's dtype; normal(mean_tensor, ...) wants out of the
    result's shape (torch broadcasts out with mean and std rather than resizing it)."""
    if not _any_tensor(args, kwargs):
        _refuse_integer(out, "normal_kernel_cpu")
        return _plain_normal(*args, dtype=out.dtype, **kwargs)
    result = _plain_normal(*args, **kwargs)
    if out.shape != result.shape:
        raise RuntimeError(f"The size of out {list(out.shape)} must match the size of the normal's "
                           f"result {list(result.shape)}")
    _refuse_integer(out, "normal_kernel_cpu")
    return result


def _bernoulli_for_out(out, args, kwargs):
    return _plain_bernoulli(*args, **kwargs)  # (0 and 1 go into an out of any dtype)


def _multinomial_for_out(out, args, kwargs):
    if out.dtype != dtypes.int64:
        raise RuntimeError(f"multinomial expects Long tensor out, got: {dtypes.torch_name(out.dtype)}")
    return _plain_multinomial(*args, **kwargs)


def _any_tensor(args, kwargs):
    return any(isinstance(a, Tensor) for a in (*args, *kwargs.values()))


def _check_out(name, out):
    if not isinstance(out, Tensor):
        raise TypeError(f"{name}(): argument 'out' must be Tensor, not {type(out).__name__}")
    if out.requires_grad and _grad_enabled():
        raise RuntimeError(f"{name}(): functions with out=... arguments don't support automatic "
                           f"differentiation, but one of the arguments requires grad.")


def _write_into(out, result):
    """``result``'s values written into ``out`` (resized to its shape); returns ``out``."""
    if result.device != out.device:
        raise RuntimeError(f"Expected all tensors to be on the same device, but found at least two "
                           f"devices, {out.device} and {result.device}!")
    out._check_inplace()
    if out.shape == result.shape:
        out._array[...] = result._array
    else:
        out._array = result._array  # (torch's resize_: a fresh buffer of the new shape)
    out._bump_version()
    return out


for _name in ("zeros", "ones", "empty", "full", "eye", "rand", "randn", "randint", "linspace",
              "logspace", "randperm"):
    globals()[_name] = with_out(globals()[_name])
_plain_normal, _plain_bernoulli, _plain_multinomial = normal, bernoulli, multinomial
normal = _random_with_out(normal, _normal_for_out)
bernoulli = _random_with_out(bernoulli, _bernoulli_for_out)
multinomial = _random_with_out(multinomial, _multinomial_for_out)


_random._STATE_WRAPPER = lambda array: Tensor(array, dtype=np.uint8)  # get_state(): a ByteTensor, as torch
