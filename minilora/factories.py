"""Tensor factories with torch's signatures: ``zeros``, ``full``, ``eye``, ``rand``, ``linspace``, ...

Shapes come as varargs or one tuple (``zeros(2, 3)`` == ``zeros((2, 3))``); ``dtype=``, ``device=``
and ``requires_grad=`` are keyword-only, as in torch. Without ``dtype`` a float factory makes the
default float dtype (``minilora.get_default_dtype()``, float32), ``full`` infers it from the fill value
(bool -> bool, int -> int64, float -> default float) and ``randint`` makes int64, as torch does.
The ``*_like`` versions take the dtype and device of ``input`` unless told otherwise.

Every value is made on the host with NumPy (random draws from minilora's one seeded generator,
``minilora.manual_seed``) and then moved to the device.
"""
import math

import numpy as np

from . import dtypes
from . import random as _random
from .tensor import Tensor

__all__ = ["zeros", "ones", "empty", "full", "zeros_like", "ones_like", "empty_like", "full_like",
           "eye", "rand", "randn", "rand_like", "randn_like", "randint", "linspace", "is_tensor",
           "numel", "tril_indices", "triu_indices", "as_tensor", "asarray", "is_floating_point"]


def _size(size, fn):
    """``(2, 3)`` from ``f(2, 3)``, ``f((2, 3))`` or ``f([2, 3])``; torch's error for anything else."""
    if len(size) == 1 and isinstance(size[0], (tuple, list)):
        size = tuple(size[0])
    for n in size:
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) and not (
                isinstance(n, Tensor) and n.ndim == 0 and n.dtype.kind in "iu"):
            raise TypeError(f"{fn}(): size must be a tuple of ints, but got {type(n).__name__} "
                            f"({n!r})")
        if int(n) < 0:
            raise RuntimeError(f"{fn}(): Trying to create tensor with negative dimension {int(n)}: "
                               f"{list(map(int, size))}")
    return tuple(int(n) for n in size)


def _float_dtype(dtype):
    return dtypes.get_default_dtype() if dtype is None else dtypes.to_dtype(dtype)


def _make(array, dtype, device, requires_grad):
    return Tensor(array, dtype=dtype, device=device, requires_grad=requires_grad)


def _filled(shape, fill_value, dtype):
    """``np.full``, with a Python number rounded into a 16-bit float as torch rounds it (through
    float32: ``dtypes.cast``), and refused as torch refuses one that ``dtype`` cannot hold (uint8: 300)."""
    if isinstance(fill_value, (int, float)):
        fill_value = dtypes.checked_number(fill_value, dtype)
    if dtype.itemsize == 2 and dtypes.is_floating(dtype):
        fill_value = dtypes.cast(np.asarray(fill_value), dtype)
    return np.full(shape, fill_value, dtype)


def as_tensor(data, dtype=None, device=None):
    """``torch.as_tensor``: ``data`` as a tensor, without a copy where none is needed. A tensor of the
    asked dtype and device comes back as it is (otherwise converted with ``.to``, which autograd
    follows); a NumPy array of the asked dtype shares its memory when the device keeps NumPy arrays
    (cpu, emu); anything else is copied, its dtype inferred as ``tensor(data)`` does."""
    if isinstance(data, Tensor):
        return data if dtype is None and device is None else data.to(device=device, dtype=dtype)
    if isinstance(data, np.ndarray):
        data = dtypes.canonical(data)  # (an equal copy of bfloat16's dtype: the registered one)
        return Tensor(data, dtype=data.dtype if dtype is None else dtypes.to_dtype(dtype), device=device)
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
    dtype = dtypes.to_dtype(dtype)
    if isinstance(obj, Tensor):
        return _tensor_asarray(obj, dtype, device, copy, requires_grad)
    if isinstance(obj, np.ndarray):
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
    from .device import device as get_device
    return get_device(device)


# ---- filled with one value -----------------------------------------------------------------------
def zeros(*size, dtype=None, device=None, requires_grad=False):
    dtype = _float_dtype(dtype)
    return _make(np.zeros(_size(size, "zeros"), dtype), dtype, device, requires_grad)


def ones(*size, dtype=None, device=None, requires_grad=False):
    dtype = _float_dtype(dtype)
    return _make(np.ones(_size(size, "ones"), dtype), dtype, device, requires_grad)


def empty(*size, dtype=None, device=None, requires_grad=False):
    """As ``torch.empty``, but zero-filled: a teaching framework shows no stale memory."""
    dtype = _float_dtype(dtype)
    return _make(np.zeros(_size(size, "empty"), dtype), dtype, device, requires_grad)


def _fill_dtype(fill_value):
    """torch's rule for ``full`` without a dtype: bool, int64, or the default float."""
    if isinstance(fill_value, Tensor):
        fill_value = fill_value.item()
    if isinstance(fill_value, (bool, np.bool_)):
        return dtypes.bool
    if isinstance(fill_value, (int, np.integer)):
        return dtypes.int64
    if isinstance(fill_value, complex):
        raise TypeError("full(): minilora has no complex dtypes")
    return dtypes.get_default_dtype()


def full(size, fill_value, *, dtype=None, device=None, requires_grad=False):
    """A tensor of ``size`` filled with ``fill_value`` (dtype from the value unless given, as torch)."""
    dtype = _fill_dtype(fill_value) if dtype is None else dtypes.to_dtype(dtype)
    if isinstance(fill_value, Tensor):
        fill_value = fill_value.item()
    if not isinstance(size, (tuple, list)):  # torch's full, unlike ones/zeros, takes no bare number
        raise TypeError(f"full(): argument 'size' (position 1) must be tuple of ints, not {type(size).__name__}")
    size = _size(size, "full")
    return _make(_filled(size, fill_value, dtype), dtype, device, requires_grad)


def _like(input, dtype, device):
    return (input.dtype if dtype is None else dtypes.to_dtype(dtype),
            input.device if device is None else device)


def zeros_like(input, *, dtype=None, device=None, requires_grad=False):
    dtype, device = _like(input, dtype, device)
    return _make(np.zeros(input.shape, dtype), dtype, device, requires_grad)


def ones_like(input, *, dtype=None, device=None, requires_grad=False):
    dtype, device = _like(input, dtype, device)
    return _make(np.ones(input.shape, dtype), dtype, device, requires_grad)


def empty_like(input, *, dtype=None, device=None, requires_grad=False):
    """Zero-filled, like ``empty``."""
    return zeros_like(input, dtype=dtype, device=device, requires_grad=requires_grad)


def full_like(input, fill_value, *, dtype=None, device=None, requires_grad=False):
    dtype, device = _like(input, dtype, device)
    if isinstance(fill_value, Tensor):
        fill_value = fill_value.item()
    return _make(_filled(input.shape, fill_value, dtype), dtype, device, requires_grad)


def eye(n, m=None, *, dtype=None, device=None, requires_grad=False):
    """The ``n x m`` identity (``m`` defaults to ``n``)."""
    dtype = _float_dtype(dtype)
    return _make(np.eye(n, n if m is None else m, dtype=dtype), dtype, device, requires_grad)


def _triangle_indices(fn, row, col, offset, dtype, device):
    if row < 0 or col < 0:
        raise RuntimeError(f"{fn}: row and col must be non-negative, got {row} and {col}")
    dtype = dtypes.to_dtype(dtype)
    pick = np.tril_indices if fn == "tril_indices" else np.triu_indices
    return _make(np.stack(pick(row, offset, col)).astype(dtype), dtype, device, False)


def tril_indices(row, col, offset=0, *, dtype=dtypes.int64, device=None):
    """``torch.tril_indices``: the ``[2, N]`` coordinates of the lower triangle (on and below
    diagonal ``offset``) of a ``row x col`` matrix, row by row."""
    return _triangle_indices("tril_indices", row, col, offset, dtype, device)


def triu_indices(row, col, offset=0, *, dtype=dtypes.int64, device=None):
    """``torch.triu_indices``: the ``[2, N]`` coordinates of the upper triangle."""
    return _triangle_indices("triu_indices", row, col, offset, dtype, device)


# ---- random ------------------------------------------------------------------------------------
def _rng(generator):
    """A NumPy Generator: the one passed, or minilora's global one (``manual_seed``)."""
    if generator is None:
        return _random.generator()
    return getattr(generator, "_rng", generator)  # a minilora Generator, or a NumPy one


def _random_float(draw, dtype, fn):
    dtype = _float_dtype(dtype)
    if not dtypes.is_floating(dtype):
        raise RuntimeError(f"{fn}(): expected a floating point dtype, got {dtype}")
    return dtypes.cast(draw(), dtype), dtype  # drawn in float64 (rounded to 16 bits through float32)


def rand(*size, generator=None, dtype=None, device=None, requires_grad=False):
    """Uniform on [0, 1)."""
    shape = _size(size, "rand")
    array, dtype = _random_float(lambda: _rng(generator).random(shape), dtype, "rand")
    return _make(array, dtype, device, requires_grad)


def randn(*size, generator=None, dtype=None, device=None, requires_grad=False):
    """Standard normal."""
    shape = _size(size, "randn")
    array, dtype = _random_float(lambda: _rng(generator).standard_normal(shape), dtype, "randn")
    return _make(array, dtype, device, requires_grad)


def rand_like(input, *, dtype=None, device=None, requires_grad=False):
    dtype, device = _like(input, dtype, device)
    return rand(input.shape, dtype=dtype, device=device, requires_grad=requires_grad)


def randn_like(input, *, dtype=None, device=None, requires_grad=False):
    dtype, device = _like(input, dtype, device)
    return randn(input.shape, dtype=dtype, device=device, requires_grad=requires_grad)


def randint(low, high=None, size=None, *, generator=None, dtype=None, device=None,
            requires_grad=False):
    """``randint(high, size)`` or ``randint(low, high, size)``: integers in ``[low, high)``, int64.

    (torch writes ``randint(low=0, high, size)``: a two-argument call means ``high, size``.)"""
    if size is None:  # randint(high, size)
        if high is None:
            raise TypeError("randint() missing the size: call randint(high, size) or "
                            "randint(low, high, size)")
        low, high, size = 0, low, high
    elif high is None:  # randint(high, size=...)
        low, high = 0, low
    if high <= low:
        raise RuntimeError(f"random_ expects 'from' to be less than 'to', but got from={low} >= "
                           f"to={high}")
    dtype = dtypes.int64 if dtype is None else dtypes.to_dtype(dtype)
    values = _rng(generator).integers(low, high, _size((size,), "randint"))
    return _make(dtypes.cast(values, dtype), dtype, device, requires_grad)


def linspace(start, end, steps, *, dtype=None, device=None, requires_grad=False):
    """``steps`` evenly spaced values from ``start`` to ``end`` inclusive (computed in float64, then
    cast to ``dtype``; bfloat16 and float16 as torch's CPU kernel computes them, see
    ``_linspace_16bit``)."""
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 0:
        raise RuntimeError(f"linspace(): number of steps must be non-negative, got {steps!r}")
    dtype = _float_dtype(dtype)
    if dtype.itemsize == 2 and dtypes.is_floating(dtype):
        return _make(_linspace_16bit(start, end, int(steps), dtype), dtype, device, requires_grad)
    values = np.linspace(float(start), float(end), int(steps))
    if dtype.kind in "iu":  # torch computes integer linspaces in float and truncates
        values = np.trunc(values)
    return _make(values.astype(dtype), dtype, device, requires_grad)


def _linspace_16bit(start, end, steps, dtype):
    """torch's CPU linspace in a 16-bit float: ``start``, ``end`` and the step are values *of that
    dtype*, and every operation is rounded to it (its arithmetic on c10::BFloat16 / Half). The first
    half counts up from ``start``, the second down from ``end``, so both ends are exact.
    ``linspace(0, 1000, 7, dtype=bfloat16)[4]`` is 664 this way; float32 math rounded once says 668."""
    def rounded(x):  # a value of the dtype, held in float32 (which holds every 16-bit float exactly)
        return dtypes.cast(np.asarray(x, dtype=np.float32), dtype).astype(np.float32)
    first, last = rounded(float(start)), rounded(float(end))
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


def randperm(n, *, generator=None, dtype=None, device=None, requires_grad=False):
    """``torch.randperm(n)``: a random permutation of ``0 .. n-1`` (int64 unless ``dtype``), from
    minilora's generator (NumPy's stream: not torch's numbers for the same seed)."""
    dtype = dtypes.int64 if dtype is None else dtypes.to_dtype(dtype)
    return Tensor(_rng(generator).permutation(int(n)), dtype=dtype, device=device,
                  requires_grad=requires_grad)


def multinomial(input, num_samples, replacement=False, *, generator=None):
    """``torch.multinomial``: ``num_samples`` category indices (int64) drawn from each row of
    ``input``, a 1-D or 2-D tensor of non-negative weights (they need not sum to one). Without
    replacement a category is drawn at most once, so ``num_samples`` may not exceed the categories
    of nonzero weight. No gradient, as in torch."""
    weights = np.asarray(input.detach().cpu().numpy(), dtype=np.float64)
    if weights.ndim not in (1, 2):
        raise RuntimeError("prob_dist must be 1 or 2 dim")
    if not np.all(np.isfinite(weights)) or np.any(weights < 0):
        raise RuntimeError("probability tensor contains either `inf`, `nan` or element < 0")
    rows = weights.reshape(-1, weights.shape[-1])
    if np.any(rows.sum(axis=1) <= 0):
        raise RuntimeError("invalid multinomial distribution (sum of probabilities <= 0)")
    if not replacement and num_samples > rows.shape[1]:
        raise RuntimeError("cannot sample n_sample > prob_dist.size(-1) samples without replacement")
    if not replacement and num_samples > np.count_nonzero(rows, axis=1).min():
        raise RuntimeError("invalid multinomial distribution (with replacement=False, not enough "
                           "non-negative category to sample)")
    rng = _rng(generator)
    draws = np.stack([rng.choice(row.size, num_samples, replace=replacement, p=row / row.sum())
                      for row in rows]).astype(np.int64)
    draws = draws.reshape(weights.shape[:-1] + (num_samples,))
    return Tensor(draws, dtype=np.int64, device=input.device)


def _multinomial_method(self, num_samples, replacement=False, *, generator=None):
    return multinomial(self, num_samples, replacement, generator=generator)


Tensor.multinomial = _multinomial_method  # x.multinomial(n), as torch
