"""Weight initialisers, in place, with PyTorch's formulas and minilora's seeded generator.

Why the scale matters: a layer's output variance is ``fan_in * Var(w) * Var(x)``, so ``Var(w)``
of about ``1/fan_in`` keeps activations from growing or vanishing layer after layer (``gain``
corrects for what the nonlinearity does to the variance). ``Linear`` uses
``kaiming_uniform_(w, a=sqrt(5))``, i.e. ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``; LoRA initialises
``A`` the same way and ``B`` with zeros, so an adapter starts as an exact no-op.
"""
import functools
import math
import warnings

import numpy as np

from .. import dtypes
from .. import random as _random
from ..tensor import no_grad

__all__ = ["calculate_gain", "uniform_", "normal_", "trunc_normal_", "zeros_", "ones_", "constant_",
           "kaiming_uniform_", "kaiming_normal_", "xavier_uniform_", "xavier_normal_", "orthogonal_", "eye_",
           "dirac_", "sparse_", "fan_in_and_fan_out"]


def fan_in_and_fan_out(tensor):
    """``(fan_in, fan_out)`` of a weight ``[out, in, *kernel]`` (PyTorch's convention)."""
    if tensor.ndim < 2:
        raise ValueError(f"fan in/out needs at least 2 dimensions, got shape {tuple(tensor.shape)}")
    receptive = int(np.prod(tensor.shape[2:])) if tensor.ndim > 2 else 1
    return tensor.shape[1] * receptive, tensor.shape[0] * receptive


_calculate_fan_in_and_fan_out = fan_in_and_fan_out  # torch's (private) name, which tutorials call

_LINEAR_FNS = ("linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d",
               "conv_transpose3d")


def calculate_gain(nonlinearity, param=None):
    """How much a nonlinearity shrinks the standard deviation, undone by the init (PyTorch's table)."""
    if nonlinearity in _LINEAR_FNS or nonlinearity == "sigmoid":
        return 1
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        if param is None:
            slope = 0.01
        elif isinstance(param, (int, float)) and not isinstance(param, bool):
            slope = param
        else:  # a bool or a string would give a number silently (True ** 2 == 1)
            raise ValueError(f"negative_slope {param} not a valid number")
        return math.sqrt(2.0 / (1 + slope ** 2))
    if nonlinearity == "selu":
        return 3.0 / 4
    raise ValueError(f"unsupported nonlinearity {nonlinearity!r}")


def _skippable(initialiser):
    """An in-place initialiser that leaves a tensor on the meta device as it is and draws nothing (it has no
    values to set: torch's generator does not move either; torch.nn.utils.skip_init builds there)."""
    @functools.wraps(initialiser)
    def run(tensor, *args, **kwargs):
        if getattr(tensor, "is_meta", False):
            return tensor
        return initialiser(tensor, *args, **kwargs)
    return run


def _fill(tensor, values):
    with no_grad():
        tensor._array[...] = tensor.device.xp.asarray(dtypes.cast(np.asarray(values), tensor.dtype))
    tensor._bump_version()  # an in-place change, as torch's tensor.normal_() and friends
    return tensor


def _fan(tensor, mode):
    mode = mode.lower()  # (torch takes "FAN_IN" too)
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"Mode {mode} not supported, please use one of ['fan_in', 'fan_out']")
    fan_in, fan_out = fan_in_and_fan_out(tensor)
    fan = fan_in if mode == "fan_in" else fan_out
    if fan == 0:
        raise ValueError(f"cannot initialise a tensor with a zero {mode} (shape {tensor.shape})")
    return fan


@_skippable
def uniform_(tensor, a=0.0, b=1.0, generator=None):
    return _fill(tensor, _uniform_values(tensor, a, b, generator))


@_skippable
def normal_(tensor, mean=0.0, std=1.0, generator=None):
    return _fill(tensor, _normal_values(tensor, mean, std, generator))


def _uniform_values(tensor, a, b, generator):
    """What ``tensor.uniform_(a, b, generator=generator)`` writes, as an array (torch's numbers, in
    ``tensor``'s memory order, from a minilora Generator or the global one; a
    ``numpy.random.Generator`` draws NumPy's)."""
    _refuse_integer(tensor, "check_uniform_bounds")
    from ..factories import check_uniform_bounds
    check_uniform_bounds(a, b, tensor.dtype)  # (torch's tensor.uniform_ checks: a > b, bounds past the dtype's range)
    if isinstance(generator, np.random.Generator):
        return generator.uniform(a, b, tensor.shape)
    return _torch_draw(tensor, generator, lambda gen, shape: _parts(tensor, lambda s, dtype: gen.uniform(s, dtype, a, b))(shape))


def _normal_values(tensor, mean, std, generator):
    """What ``tensor.normal_(mean, std, generator=generator)`` writes, as an array (see
    ``_uniform_values``)."""
    _refuse_integer(tensor, "normal_kernel_cpu")
    if std < 0:
        raise RuntimeError(f"normal expects std >= 0.0, but found std {std}")
    if isinstance(generator, np.random.Generator):
        return generator.normal(mean, std, tensor.shape)
    contiguous = tensor._array.flags.c_contiguous  # (torch's 16-at-a-time kernel needs a contiguous tensor)
    if tensor.dtype.kind == "c":  # torch: each part with std / sqrt(2), as tensor.normal_()
        std = std / math.sqrt(2)
    return _torch_draw(tensor, generator,
                       lambda gen, shape: _parts(tensor, lambda s, dtype: gen.normal(s, dtype, mean, std, contiguous))(shape))


def _refuse_integer(tensor, kernel):
    """torch's error for an integer (or bool) tensor, whose uniform_/normal_ kernels have none (a
    rejection loop would otherwise never end on values rounded to integers)."""
    if tensor.dtype.kind != "c":
        from ..factories import _refuse_integer as refuse
        refuse(tensor, kernel)


def _parts(tensor, draw):
    """``draw(shape, dtype)`` for ``tensor``: a complex one's (real, imag) pairs drawn as one real tensor."""
    from ..factories import _in_pairs_if_complex
    return _in_pairs_if_complex(tensor.dtype, draw)


def _torch_draw(tensor, generator, draw):
    """``draw(gen, shape)``: torch's draw for ``tensor`` (as ``tensor.uniform_()`` and friends, in its
    memory order) from ``generator`` (a minilora Generator) or the global one."""
    from ..factories import _drawn_in_memory_order
    if generator is not None and not isinstance(generator, _random.Generator):
        raise TypeError(f"generator must be a minilora Generator (or a numpy.random.Generator), "
                        f"got {type(generator).__module__}.{type(generator).__name__}")
    gen = _random.resolve(generator)
    return _drawn_in_memory_order(tensor._array, lambda shape: draw(gen, shape))


def _normal_cdf(x):
    return (1.0 + math.erf(x / math.sqrt(2.0))) / 2.0


@_skippable
def trunc_normal_(tensor, mean=0.0, std=1.0, a=-2.0, b=2.0, generator=None):
    """N(mean, std) restricted to ``[a, b]`` (absolute bounds, as in PyTorch), by rejection, drawing
    what torch 2.x draws (so the same seed gives torch's values).

    When ``[a, b]`` holds most of the mass, draw normals and redraw those outside. When it holds
    little (a far tail), that would loop nearly forever: draw uniformly in ``[a, b]`` instead and
    keep each value with probability ``pdf(x) / max pdf`` (torch's two regimes, split at 0.3)."""
    if a > b:
        raise RuntimeError(f"uniform_ expects to return a [from, to) range, but found from={a} > to={b}")
    if mean < a - 2 * std or mean > b + 2 * std:
        warnings.warn("mean is more than 2 std from [a, b] in nn.init.trunc_normal_. "
                      "The distribution of values may be incorrect.", stacklevel=2)
    if _normal_cdf((b - mean) / std) - _normal_cdf((a - mean) / std) > 0.3:
        if tensor.dtype.kind == "c":  # torch's normal_ fills it, then comparing with the bounds has no complex kernel
            _fill(tensor, _normal_values(tensor, mean, std, generator))
            raise NotImplementedError(f'"lt_cpu" not implemented for \'{dtypes.torch_name(tensor.dtype)}\'')
        return _fill(tensor, _redrawn_normals(tensor, mean, std, a, b, generator))
    if tensor.dtype.kind == "c":  # (its uniform_ fill and the acceptance draw, then the comparison fails)
        _fill(tensor, _uniform_values(tensor, a, b, generator))
        _uniform_values(tensor, 0.0, 1.0, generator)
        raise NotImplementedError(f'"gt_cpu" not implemented for \'{dtypes.torch_name(tensor.dtype)}\'')
    return _fill(tensor, _uniform_rejection(tensor, mean, std, a, b, generator))


def _redrawn_normals(tensor, mean, std, a, b, generator):
    """torch's first regime: normals for the whole tensor; while any lies outside ``[a, b]`` (the
    bounds rounded to the dtype), a whole tensor of fresh normals, of which those places take theirs."""
    _bounds_fit(tensor.dtype, a, b)
    low, high = (dtypes.cast(np.array(bound), tensor.dtype) for bound in (a, b))
    values = _normal_values(tensor, mean, std, generator)
    outside = (values < low) | (values > high)
    while outside.any():
        values = np.where(outside, _normal_values(tensor, mean, std, generator), values)
        outside = (values < low) | (values > high)
    return values


def _bounds_fit(dtype, *bounds):
    """torch's ``tensor.new_tensor(bound).item()``: a bound an integer dtype cannot hold (-2.0 into uint8) is its
    overflow error, in new_tensor's words (the dtype's name, not the C type's)."""
    if dtype.kind in "iu":
        try:
            for bound in bounds:
                dtypes.checked_number(bound, dtype)
        except RuntimeError:
            raise RuntimeError(f"value cannot be converted to type {dtype.name} without overflow") from None


def _uniform_rejection(tensor, mean, std, a, b, generator):
    """torch's second regime: values in ``[a, b]`` with density proportional to the normal pdf there.
    Every round draws a whole tensor of candidates and one of acceptance uniforms (as torch, computed
    in the tensor's dtype op by op), and the places still pending take theirs."""
    dtype = tensor.dtype
    peak = max(a, min(mean, b))  # where the pdf is highest inside [a, b]
    log_peak = -0.5 * ((peak - mean) / std) ** 2

    def log_ratio(x):  # log(pdf(x) / pdf(peak)) <= 0, as torch's sub_(mean).div_(std).pow_(2)...
        for step in (lambda v: v - mean, lambda v: v / std, lambda v: v * v, lambda v: v * -0.5,
                     lambda v: v - log_peak):
            x = _in_dtype(step(_computable(x)), dtype)
        return x

    def rejected(candidates):
        log_u = _in_dtype(np.log(_computable(_uniform_values(tensor, 0.0, 1.0, generator))), dtype)
        return log_u > log_ratio(candidates)

    values = _uniform_values(tensor, a, b, generator)
    pending = rejected(values)
    while pending.any():
        candidates = _uniform_values(tensor, a, b, generator)
        values = np.where(pending, candidates, values)
        pending = np.where(pending, rejected(candidates), pending)
    return values


def _computable(values):
    """16-bit values as float32 (torch computes their ops in float and rounds each result)."""
    return values.astype(np.float32) if values.dtype.itemsize == 2 else values


def _in_dtype(values, dtype):
    with np.errstate(divide="ignore", over="ignore"):
        return dtypes.cast(np.asarray(values), dtype)


@_skippable
def constant_(tensor, val):
    val = dtypes.checked_number(dtypes.python_number(val), tensor.dtype)  # as torch's fill_: 300 into uint8 raises
    return _fill(tensor, np.full(tensor.shape, val))


@_skippable
def zeros_(tensor):
    return constant_(tensor, 0.0)


@_skippable
def ones_(tensor):
    return constant_(tensor, 1.0)


def _is_empty(tensor):
    """True (with torch's warning) for a tensor with no elements: the fan-based inits leave it as it is."""
    if 0 in tuple(tensor.shape):
        warnings.warn("Initializing zero-element tensors is a no-op", stacklevel=3)
        return True
    return False


@_skippable
def kaiming_uniform_(tensor, a=0, mode="fan_in", nonlinearity="leaky_relu", generator=None):
    """PyTorch's ``kaiming_uniform_``: U(-bound, bound), bound = gain * sqrt(3 / fan)."""
    if _is_empty(tensor):
        return tensor
    bound = math.sqrt(3.0) * _kaiming_std(tensor, a, mode, nonlinearity)  # (torch's rounding steps)
    return uniform_(tensor, -bound, bound, generator)


@_skippable
def kaiming_normal_(tensor, a=0, mode="fan_in", nonlinearity="leaky_relu", generator=None):
    """PyTorch's ``kaiming_normal_``: N(0, std), std = gain / sqrt(fan)."""
    if _is_empty(tensor):
        return tensor
    return normal_(tensor, 0.0, _kaiming_std(tensor, a, mode, nonlinearity), generator)


def _kaiming_std(tensor, a, mode, nonlinearity):
    return calculate_gain(nonlinearity, a) / math.sqrt(_fan(tensor, mode))


@_skippable
def xavier_uniform_(tensor, gain=1.0, generator=None):
    """U(-bound, bound), bound = gain * sqrt(6 / (fan_in + fan_out)) (Glorot & Bengio)."""
    bound = math.sqrt(3.0) * _xavier_std(tensor, gain)  # (torch's rounding steps)
    return uniform_(tensor, -bound, bound, generator)


@_skippable
def xavier_normal_(tensor, gain=1.0, generator=None):
    """N(0, std), std = gain * sqrt(2 / (fan_in + fan_out))."""
    return normal_(tensor, 0.0, _xavier_std(tensor, gain), generator)


def _xavier_std(tensor, gain):
    fan_in, fan_out = fan_in_and_fan_out(tensor)
    return gain * math.sqrt(2.0 / float(fan_in + fan_out))


@_skippable
def orthogonal_(tensor, gain=1, generator=None):
    """A (semi-)orthogonal matrix times ``gain`` (Saxe et al. 2013), trailing dimensions flattened:
    orthonormal rows if there are fewer rows than columns, else orthonormal columns. Keeps every
    singular value at ``gain``, so a deep linear stack neither grows nor shrinks its input.

    As torch: the QR factorisation of a Gaussian matrix, with Q's columns' signs fixed by R's
    diagonal so that Q is uniformly distributed over the orthogonal matrices."""
    if tensor.ndim < 2:
        raise ValueError("Only tensors with 2 or more dimensions are supported")
    if tensor.numel() == 0:
        return tensor
    from ..factories import empty
    rows = tensor.shape[0]
    cols = tensor.numel() // rows
    gaussian = _normal_values(empty((rows, cols), dtype=tensor.dtype), 0.0, 1.0, generator)  # (torch's draw)
    if tensor.dtype.kind == "c":  # (torch factors it, then R's diagonal's sign() refuses a complex one)
        raise NotImplementedError("Unlike NumPy, torch.sign is not intended to support complex numbers. Please use "
                                  "torch.sgn instead.")
    if tensor.dtype.itemsize == 2:  # (after the draw, as torch's: its 16-bit QR has no CPU kernel)
        raise NotImplementedError(f'"geqrf_cpu" not implemented for \'{dtypes.torch_name(tensor.dtype)}\'')
    if rows < cols:
        gaussian = gaussian.T  # QR gives orthonormal columns: factor the tall one
    q, r = np.linalg.qr(_computable(gaussian))
    q *= np.sign(np.diag(r))
    if rows < cols:
        q = q.T
    return _fill(tensor, _in_dtype(_in_dtype(q, tensor.dtype).reshape(tensor.shape) * gain, tensor.dtype))


@_skippable
def eye_(tensor):
    """The identity matrix (ones on the main diagonal) in a 2-D tensor: a Linear layer that starts by
    passing its first inputs through."""
    if tensor.ndim != 2:
        raise ValueError("Only tensors with 2 dimensions are supported")
    return _fill(tensor, np.eye(*tensor.shape))


@_skippable
def dirac_(tensor, groups=1):
    """A 3-, 4- or 5-D convolution weight ``[out, in, *kernel]`` that starts as the identity: output
    channel ``d`` of each group copies input channel ``d`` through the kernel's centre."""
    if tensor.ndim not in (3, 4, 5):
        raise ValueError("Only tensors with 3, 4, or 5 dimensions are supported")
    if tensor.shape[0] % groups:
        raise ValueError("dim 0 must be divisible by groups")
    per_group = tensor.shape[0] // groups
    centre = tuple(size // 2 for size in tensor.shape[2:])
    values = np.zeros(tensor.shape)
    for g in range(groups):
        for d in range(min(per_group, tensor.shape[1])):
            values[(g * per_group + d, d) + centre] = 1
    return _fill(tensor, values)


@_skippable
def sparse_(tensor, sparsity, std=0.01, generator=None):
    """A 2-D weight drawn from N(0, std) with ``ceil(sparsity * rows)`` zeros in every column, at
    rows chosen at random per column (Martens 2010, torch's ``sparse_``)."""
    if tensor.ndim != 2:
        raise ValueError("Only tensors with 2 dimensions are supported")
    rows, cols = tensor.shape
    values = _normal_values(tensor, 0.0, std, generator)
    zeros_per_column = int(math.ceil(sparsity * rows))
    for col in range(cols):  # torch draws the rows from the global generator, whatever generator= is
        values[_random.default_generator.randperm(rows)[:zeros_per_column], col] = 0
    return _fill(tensor, values)


# ---- the names without the underscore: torch keeps them, deprecated, for old tutorials and papers' code --
def _deprecated(initializer):
    """``initializer`` under its old name, with torch's FutureWarning pointing at the caller's line."""
    old = initializer.__name__[:-1]

    @functools.wraps(initializer)
    def deprecated(*args, **kwargs):
        warnings.warn(f"`nn.init.{old}` is now deprecated in favor of `nn.init.{initializer.__name__}`.",
                      FutureWarning, stacklevel=2)
        return initializer(*args, **kwargs)
    deprecated.__name__ = deprecated.__qualname__ = old
    return deprecated


(uniform, normal, constant, eye, dirac, xavier_uniform, xavier_normal, kaiming_uniform, kaiming_normal, orthogonal,
 sparse) = map(_deprecated, (uniform_, normal_, constant_, eye_, dirac_, xavier_uniform_, xavier_normal_,
                             kaiming_uniform_, kaiming_normal_, orthogonal_, sparse_))
