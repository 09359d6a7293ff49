"""Mixed precision as torch users write it: ``autocast`` and ``GradScaler`` (``torch.amp``).

    with minilora.autocast(device_type="cpu", dtype=minilora.bfloat16):
        loss = model(x, labels=y).loss          # matrix products in bfloat16, the loss in float32
    scaler.scale(loss).backward()               # (scaler = minilora.amp.GradScaler("cpu"))
    scaler.unscale_(optimizer); clip_grad_norm_(model.parameters(), 1.0)
    scaler.step(optimizer); scaler.update()

**autocast.** Inside a region each op that torch lists for the tensors' device runs in the dtype its
*policy* names, chosen from torch's op tables (aten/src/ATen/autocast_mode.cpp and autocast_mode.h,
"Autocast Op Reference"): the CPU's for ``"cpu"``, CUDA's for ``"cuda"`` and ``"emu"``:

* ``lower``: floating inputs (not float64) are cast to the region's dtype (bfloat16 by default on
  the CPU, float16 on cuda): ``linear``, ``matmul``, ``mm``, ``bmm``, ``addmm``, ``baddbmm``,
  convolutions, ``prelu``, ``scaled_dot_product_attention`` (CUDA's also ``mv``, ``addmv``, ``addr``);
* ``fp32``: floating inputs are cast to float32: the losses, ``prod``, ``trace``, ``quantile``, ...
  on the CPU; on CUDA also ``exp``, ``log``, ``pow``, ``rsqrt``, ``layer_norm``, ``rms_norm``,
  ``group_norm``, ``softplus``, ``logsumexp``, ...;
* ``fp32_set_opt_dtype`` (CUDA): float32 unless the call names its own ``dtype=``: ``sum``,
  ``softmax``, ``log_softmax``, ``cumsum``, ``cumprod``, ``prod``, ``norm``;
* ``promote``: floating inputs are cast to the widest of them (``cat``, ``stack``, ``index_copy`` on
  the CPU; ``addcmul``, ``addcdiv``, ``atan2``, ``dot``, ``cross``, ``tensordot`` ... on CUDA);
* every other op runs on the dtypes it is given, as without autocast (``softmax`` and ``layer_norm``
  of a bfloat16 tensor stay bfloat16 on the CPU; ``silu`` and ``mean`` stay 16-bit on CUDA).
  ``binary_cross_entropy`` in a CUDA region is torch's error (use the ``_with_logits`` form).

The casts are ordinary differentiable ``.to(dtype)`` nodes, so gradients come back to a float32
weight in float32. Within one region a float32 leaf that requires grad (a parameter) is cast once and
the copy reused (torch's weight cache): changing the parameter in place inside the region is not
seen until the region ends, as in torch.

How an op takes part: its wrapper starts with ``if amp.used and amp.state.active: return
amp.autocast_op(name, fn, ...)``. ``state`` is the calling thread's autocast state (a threading.local: per
thread, as torch's, so a region in one thread, a server's request, casts no other thread's ops, and a new
thread starts with autocast off); ``active`` is False outside every region. A threading.local read costs
more than a module attribute, so ``used`` (has autocast been on in any thread?) comes first: a program that
never autocasts pays one module attribute read per op. (``amp.active`` reads this thread's flag, for code
off the hot path.) ``autocast_op`` casts the arguments by the op's policy and calls the
wrapper again with ``active`` cleared: an op's inner calls are not autocast again (torch's autocast
runs once, at the op the user called), and an op a wrapper builds from others (``dot`` from
``matmul``) keeps its own dtype (torch's ``dot`` is not autocast on the CPU).

Device types: ``"cpu"``, with torch's CPU tables; ``"cuda"`` (with a GPU) and minilora's ``"emu"``
(minilora's CUDA kernels in the emulator), with torch's CUDA tables. ``"cuda"`` where no GPU answers
is torch's warning and a disabled region (CPU-only code written for a GPU runs unchanged). A region
casts only tensors on its own device type, as torch. Not hooked on CUDA (the ops minilora lacks, or
builds elsewhere): ``erfinv``, ``renorm``, ``pdist``, ``grid_sample``, 3-D convolutions, ``nn.LSTM``'s
cuDNN cast.

**GradScaler** multiplies the loss by a scale (65536 at first), so that small 16-bit gradients do
not flush to zero; ``unscale_`` divides the gradients back and notes whether any is inf or NaN;
``step`` skips the optimizer's step when one was; ``update`` halves the scale after such a step and
doubles it after ``growth_interval`` clean ones (torch's ``_amp_update_scale_``, in float32).
"""
import functools
import inspect
import threading
import warnings
from collections import defaultdict
from enum import Enum

import numpy as np

from . import dtypes
from .device import xp_of
from .interrupts import held_ctrl_c
from .tensor import Tensor, no_grad

__all__ = ["autocast", "GradScaler", "OptState", "custom_fwd", "custom_bwd", "is_autocast_available",
           "is_autocast_enabled", "set_autocast_enabled", "get_autocast_dtype", "set_autocast_dtype",
           "is_autocast_cache_enabled", "set_autocast_cache_enabled", "clear_autocast_cache",
           "autocast_increment_nesting", "autocast_decrement_nesting"]

# ---- torch's op tables, under minilora's op names ------------------------------------------------
LOWER, FP32, PROMOTE = "lower", "fp32", "promote"
FP32_OPT, BANNED = "fp32_set_opt_dtype", "banned"
# An op a wrapper hooks that is on no list of a device, where torch builds it from listed ops: it runs as
# called with autocast left on, so the ops inside cast (``tensordot`` on the CPU: torch's goes through mm).
# (Only for ops hooked by ``autocasts``, whose undecorated function runs.) A hooked op on no list runs as
# called with autocast off inside: torch's one kernel (``dot`` on the CPU).
THROUGH = "through"

_CPU_TABLE = {  # torch's TORCH_LIBRARY_IMPL(aten, AutocastCPU, m): the ops of it that minilora has
    **dict.fromkeys(["conv1d", "conv2d", "conv_transpose1d", "conv_transpose2d", "bmm", "mm", "baddbmm", "addmm",
                     "conv3d", "conv_transpose3d", "conv_tbc", "linear", "matmul", "prelu", "scaled_dot_product_attention",
                     # torch's einsum is a composite of bmm (autocast): contractions come out in the
                     # lower dtype
                     "einsum",
                     # PEFT's LoRA layer is three linear calls (base_layer, lora_A, lora_B), each autocast
                     "lora_linear",
                     # torch's CPU nn.LSTM (without proj_size) is one oneDNN kernel per layer
                     "mkldnn_rnn_layer"], LOWER),
    **dict.fromkeys(["binary_cross_entropy", "prod", "quantile", "nanquantile", "trace", "max_unpool2d",
                     # F.pad's kernels by mode and padded dims (reflection_pad3d is not on the list)
                     "reflection_pad1d", "reflection_pad2d", "replication_pad1d", "replication_pad2d",
                     "replication_pad3d",
                     "mse_loss", "cosine_embedding_loss", "nll_loss", "hinge_embedding_loss", "poisson_nll_loss",
                     "smooth_l1_loss", "cross_entropy", "l1_loss", "huber_loss", "margin_ranking_loss",
                     "soft_margin_loss", "triplet_margin_loss", "multi_margin_loss", "kl_div",
                     "multilabel_margin_loss", "binary_cross_entropy_with_logits", "cdist"], FP32),
    **dict.fromkeys(["cat", "stack", "index_copy"], PROMOTE),
    "addbmm": LOWER, "vecdot": LOWER, "tensordot": THROUGH, "multi_dot": THROUGH,
    # (torch's composites of mm / multi_dot / the linalg norms, hooked for the CUDA list)
    "chain_matmul": THROUGH, "nuclear_norm": THROUGH, "frobenius_norm": THROUGH,
    # (F.bilinear is ATen's _trilinear, whose inner bmm calls are autocast: its products in the lower dtype)
    "bilinear": THROUGH,
    # (F.grid_sample is torch.grid_sampler, F.ctc_loss torch.ctc_loss: both on the list)
    "grid_sampler": FP32, "grid_sampler_2d": FP32, "ctc_loss": FP32,
    # (torch's CPU RNN cells are composites of linear: CUDA lists them whole)
    "lstm_cell": THROUGH, "gru_cell": THROUGH, "rnn_tanh_cell": THROUGH, "rnn_relu_cell": THROUGH,
}
# torch's CUDA tables (aten/src/ATen/autocast_mode.h: AT_FORALL_LOWER_PRECISION_FP, AT_FORALL_FP32,
# AT_FORALL_FP32_SET_OPT_DTYPE, AT_FORALL_DIFFERENT_REDISPATCH_SIGNATURE, AT_FORALL_PROMOTE), for minilora's
# "cuda" and "emu" devices. FP32_OPT is torch's fp32_set_opt_dtype (and norm's fp32_append_dtype): float32
# unless the call names its own dtype= (then the op runs as called).
_CUDA_TABLE = {
    **dict.fromkeys(["conv1d", "conv2d", "conv_transpose1d", "conv_transpose2d", "prelu", "addmm", "addmv", "addr",
                     "conv3d", "conv_transpose3d",
                     "matmul", "einsum", "einsum_no_contraction", "mm", "mv", "vecdot", "multi_dot", "linear",
                     "addbmm", "baddbmm", "bmm", "chain_matmul",
                     "scaled_dot_product_attention", "lora_linear", "conv_tbc",
                     "lstm_cell", "gru_cell", "rnn_tanh_cell", "rnn_relu_cell", "convolution"], LOWER),
    **dict.fromkeys(["acos", "asin", "cosh", "exp", "expm1", "log", "log10", "log2", "log1p",
                     "reciprocal", "rsqrt", "sinh", "tan", "pow", "softplus", "layer_norm", "group_norm",
                     "rms_norm", "cosine_similarity", "poisson_nll_loss", "cosine_embedding_loss", "nll_loss",
                     "hinge_embedding_loss", "kl_div", "l1_loss", "smooth_l1_loss", "huber_loss", "mse_loss",
                     "margin_ranking_loss", "multilabel_margin_loss", "soft_margin_loss", "triplet_margin_loss",
                     "multi_margin_loss", "binary_cross_entropy_with_logits", "logsumexp", "dist", "cdist",
                     "pdist", "erfinv", "renorm", "nuclear_norm", "frobenius_norm", "native_layer_norm", "grid_sampler",
                     # torch's cross_entropy is not on the list but is log_softmax (fp32_set_opt_dtype) then
                     # nll_loss (fp32): the whole loss runs in float32
                     "cross_entropy",
                     # F.interpolate's kernels by mode and spatial dims (its "area" mode is not listed)
                     "upsample_nearest1d", "upsample_nearest2d", "upsample_nearest3d", "_upsample_nearest_exact1d",
                     "_upsample_nearest_exact2d", "_upsample_nearest_exact3d", "upsample_linear1d",
                     "upsample_bilinear2d", "upsample_trilinear3d", "upsample_bicubic2d"], FP32),
    **dict.fromkeys(["prod", "softmax", "log_softmax", "cumprod", "cumsum", "sum", "norm", "vector_norm",
                     "matrix_norm"], FP32_OPT),
    **dict.fromkeys(["addcdiv", "addcmul", "atan2", "bilinear", "cross", "dot", "vdot", "tensordot", "scatter_add",
                     "index_put"],
                    PROMOTE),
    "binary_cross_entropy": BANNED,
}
_TABLES = {"cpu": _CPU_TABLE, "cuda": _CUDA_TABLE, "emu": _CUDA_TABLE}  # (emu runs minilora's CUDA kernels)
_BCE_BANNED = ("torch.nn.functional.binary_cross_entropy and torch.nn.BCELoss are unsafe to autocast.\n"
               "Many models use a sigmoid layer right before the binary cross entropy layer.\n"
               "In this case, combine the two layers using torch.nn.functional.binary_cross_entropy_with_logits\n"
               "or torch.nn.BCEWithLogitsLoss.  binary_cross_entropy_with_logits and BCEWithLogits are\n"
               "safe to autocast.")

# ---- the state: per thread, as torch's ----------------------------------------------------------------
_DEVICE_TYPES = ("cpu", "cuda", "emu")


class _FastDtypes(dict):
    """Each device type's autocast dtype. The CPU's default, bfloat16, is looked up when first asked for
    (``fast_dtype["cpu"]``): it imports ml_dtypes, which ``import minilora`` does not pay for (dtypes.py).
    Until then ``"cpu"`` is absent (``_stored_dtype`` is None), and a region that does not compute in it
    (disabled: gradient checkpointing's ``region_now``) keeps it so."""

    def __missing__(self, device_type):
        if device_type != "cpu":
            raise KeyError(device_type)
        self["cpu"] = dtypes.bfloat16
        return self["cpu"]


class _ThreadState(threading.local):
    """One thread's autocast state; a new thread starts with autocast off, torch's default dtypes and
    the weight cache on (torch's)."""

    def __init__(self):
        self.enabled = dict.fromkeys(_DEVICE_TYPES, False)
        self.fast_dtype = _FastDtypes(cuda=dtypes.float16, emu=dtypes.float16)
        self.cache_enabled = True
        self.nesting = 0
        self.cache = {}  # id(float32 leaf) -> (the leaf, its cast copy): one cast per parameter per region
        self.active = False  # is some device type's autocast on (and no autocast op running)?


state = _ThreadState()
used = False  # has autocast been on in any thread? (until then, the ops' check stops at this flag)


def __getattr__(name):
    """``amp.active``: is autocast on in this thread, no autocast op running? (A module ``__getattr__``,
    so the module stays a plain module: its attributes are read at full speed by the ops.)"""
    if name == "active":
        return state.active
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

_TORCH_DEVICE_TYPES = ("cpu, cuda, ipu, xpu, mkldnn, opengl, opencl, ideep, hip, ve, fpga, maia, xla, lazy, "
                       "vulkan, mps, meta, hpu, mtia, privateuseone")


def _refresh():
    global used
    state.active = any(state.enabled.values())
    used = used or state.active


def _device_type(device_type):
    """``device_type`` checked: one of minilora's devices, or torch's error for a string it does not know."""
    if device_type in _DEVICE_TYPES:
        return device_type
    kind = device_type.split(":")[0] if isinstance(device_type, str) else device_type
    if kind in _DEVICE_TYPES:
        return kind
    if isinstance(device_type, str) and kind in _TORCH_DEVICE_TYPES.split(", "):
        raise RuntimeError(f"User specified an unsupported autocast device_type '{device_type}' "
                           f"(minilora's devices are cpu, cuda and emu)")
    raise RuntimeError(f"Expected one of {_TORCH_DEVICE_TYPES}, emu device type at start of device string: "
                       f"{device_type}")


def _torch_dtype_name(dtype):
    return f"torch.{np.dtype(dtype).name}"


def is_autocast_available(device_type):
    """``torch.amp.is_autocast_available``: True for minilora's devices (cpu, cuda, emu)."""
    try:
        _device_type(device_type)
    except RuntimeError:
        if isinstance(device_type, str) and device_type.split(":")[0] in _TORCH_DEVICE_TYPES.split(", "):
            return False
        raise
    return True


def is_autocast_enabled(device_type=None):
    """``torch.is_autocast_enabled(device_type)``; without an argument, CUDA's (as torch)."""
    return state.enabled[_device_type("cuda" if device_type is None else device_type)]


def set_autocast_enabled(device_type, enabled=None):
    if enabled is None:  # torch's older one-argument form: CUDA's
        device_type, enabled = "cuda", device_type
    state.enabled[_device_type(device_type)] = bool(enabled)
    _refresh()


def get_autocast_dtype(device_type):
    return state.fast_dtype[_device_type(device_type)]


def set_autocast_dtype(device_type, dtype):
    state.fast_dtype[_device_type(device_type)] = dtypes.dtype_argument("set_autocast_dtype", dtype, position=2)


def _stored_dtype(device):
    """``device``'s autocast dtype as stored: None for the CPU's default, bfloat16, not looked up yet."""
    return state.fast_dtype.get(device)


def _store_dtype(device, dtype):
    """``set_autocast_dtype``, or back to the (not looked up) default for None."""
    if dtype is None:
        state.fast_dtype.pop(device, None)
    else:
        set_autocast_dtype(device, dtype)


def is_autocast_cache_enabled():
    return state.cache_enabled


def set_autocast_cache_enabled(enabled):
    state.cache_enabled = bool(enabled)


def clear_autocast_cache():
    state.cache.clear()


def autocast_increment_nesting():
    state.nesting += 1
    return state.nesting


def autocast_decrement_nesting():
    state.nesting -= 1
    return state.nesting


# torch's older per-device spellings, with torch's DeprecationWarning
def _deprecated(old, new):
    warnings.warn(f"torch.{old} is deprecated. Please use torch.{new} instead.", DeprecationWarning, stacklevel=3)


def is_autocast_cpu_enabled():
    _deprecated("is_autocast_cpu_enabled()", "is_autocast_enabled('cpu')")
    return is_autocast_enabled("cpu")


def get_autocast_cpu_dtype():
    _deprecated("get_autocast_cpu_dtype()", "get_autocast_dtype('cpu')")
    return get_autocast_dtype("cpu")


def get_autocast_gpu_dtype():
    _deprecated("get_autocast_gpu_dtype()", "get_autocast_dtype('cuda')")
    return get_autocast_dtype("cuda")


def set_autocast_cpu_enabled(enabled):
    _deprecated("set_autocast_cpu_enabled(enabled)", "set_autocast_enabled('cpu', enabled)")
    set_autocast_enabled("cpu", enabled)


def set_autocast_cpu_dtype(dtype):
    _deprecated("set_autocast_cpu_dtype(dtype)", "set_autocast_dtype('cpu', dtype)")
    set_autocast_dtype("cpu", dtype)


def set_autocast_gpu_dtype(dtype):
    _deprecated("set_autocast_gpu_dtype(dtype)", "set_autocast_dtype('cuda', dtype)")
    set_autocast_dtype("cuda", dtype)


# ---- the region --------------------------------------------------------------------------------
def region_now(device_type="cpu"):
    """An autocast region as the one in force now (enabled or not, its dtype, its cache): torch's
    checkpoint recomputes a segment in backward inside the region its forward ran in."""
    return autocast(device_type, dtype=_stored_dtype(device_type), enabled=state.enabled[device_type],
                    cache_enabled=state.cache_enabled)


def _cuda_available():
    from . import cuda
    return cuda.is_available()


class autocast:  # noqa: N801  (torch's name)
    """``torch.autocast(device_type, dtype=None, enabled=True, cache_enabled=None)``: a context
    manager, or a decorator (``@autocast("cpu")``). ``dtype`` defaults to ``get_autocast_dtype``
    (bfloat16 on the CPU, float16 on cuda). A dtype other than bfloat16/float16 disables the region
    with torch's warning; so does ``"cuda"`` where no GPU answers."""

    def __init__(self, device_type, dtype=None, enabled=True, cache_enabled=None):
        if not isinstance(device_type, str):
            raise ValueError(f"Expected `device_type` of type `str`, got: `{type(device_type)}`")
        # (None: the CPU's default, bfloat16, not looked up yet -- see fast_dtype. A dtype's name is kept as
        # given, as torch keeps it: the region warns and is disabled, and entering it is torch's TypeError)
        self._fast_dtype = _stored_dtype(_device_type(device_type)) if dtype is None else \
            dtypes.to_dtype(dtype) if dtypes.is_dtype_object(dtype) and not isinstance(dtype, type) else dtype
        self.device = _device_type(device_type)
        self._cache_enabled = is_autocast_cache_enabled() if cache_enabled is None else cache_enabled
        self._enabled = enabled and self._supported()

    @property
    def fast_dtype(self):
        """The region's dtype (torch's attribute). The CPU's default, bfloat16, is looked up when first read
        (it imports ml_dtypes): a disabled region does not read it."""
        if self._fast_dtype is None:
            self._fast_dtype = dtypes.bfloat16
        return self._fast_dtype

    @fast_dtype.setter
    def fast_dtype(self, dtype):
        self._fast_dtype = dtype

    def _supported(self):
        name = self.device.upper()
        if self.device == "cuda" and not _cuda_available():
            warnings.warn("CUDA is not available or torch_xla is imported. Disabling autocast.", stacklevel=3)
            return False
        fast = self.fast_dtype  # (bfloat16's placeholder without ml_dtypes passes: entering raises its error)
        if not isinstance(fast, dtypes.UnsupportedDType) and not (  # not a 16-bit float dtype
                isinstance(fast, np.dtype) and fast.itemsize == 2 and dtypes.is_floating(fast)):
            warnings.warn(f"In {name} autocast, but the target dtype is not supported. Disabling autocast.\n"
                          f"{name} Autocast only supports dtypes of torch.bfloat16, torch.float16 currently.",
                          stacklevel=3)
            return False
        return True

    def __enter__(self):
        self.prev_cache_enabled = is_autocast_cache_enabled()
        self.prev = is_autocast_enabled(self.device)
        self.prev_fastdtype = _stored_dtype(self.device)
        set_autocast_enabled(self.device, self._enabled)
        _store_dtype(self.device, self.fast_dtype if self._enabled else self._fast_dtype)
        autocast_increment_nesting()
        set_autocast_cache_enabled(self._cache_enabled)
        return self

    def __exit__(self, exc_type, exc_val, exc_tb):
        if autocast_decrement_nesting() == 0:  # leaving the outermost region: the cast weights go
            clear_autocast_cache()
        set_autocast_enabled(self.device, self.prev)
        _store_dtype(self.device, self.prev_fastdtype)
        set_autocast_cache_enabled(self.prev_cache_enabled)
        return False

    def __call__(self, func):
        if not callable(func):
            raise TypeError(
                f"autocast()(func) requires a callable, but got {type(func).__name__}. "
                f"Did you mean to use autocast as a context manager? For example:\n"
                f"    with torch.autocast(device_type=...):\n"
                f"        output = model(input)")

        @functools.wraps(func)
        def decorate_autocast(*args, **kwargs):
            with self:
                return func(*args, **kwargs)
        return decorate_autocast


_DEFAULT = object()


def _deprecated_autocast(device_type, default_dtype):
    """``torch.cpu.amp.autocast`` / ``torch.cuda.amp.autocast``: the same region, with torch's FutureWarning.
    ``default_dtype()`` is the dtype when none is given (bfloat16 on the CPU: looked up then, not at import)."""

    class _autocast(autocast):  # noqa: N801
        def __init__(self, enabled=True, dtype=_DEFAULT, cache_enabled=True):
            warnings.warn(f"`torch.{device_type}.amp.autocast(args...)` is deprecated. Please use "
                          f"`torch.amp.autocast('{device_type}', args...)` instead.", FutureWarning, stacklevel=2)
            dtype = default_dtype() if dtype is _DEFAULT else dtype
            super().__init__(device_type, enabled=enabled, dtype=dtype, cache_enabled=cache_enabled)

    _autocast.__name__ = _autocast.__qualname__ = "autocast"
    return _autocast


# ---- what the ops call ----------------------------------------------------------------------------
def _tensors(values):
    for v in values:
        if isinstance(v, Tensor):
            yield v
        elif isinstance(v, (list, tuple)):
            yield from _tensors(v)


def _floating_on(t, device_type):
    return t.device.type == device_type and dtypes.is_floating(t.dtype)


def _cached_cast(t, dtype, device_type):
    """``t`` in ``dtype`` if autocast may cast it (floating, not float64, on the region's device)."""
    if not _floating_on(t, device_type) or t.dtype in (dtype, dtypes.float64):
        return t
    cacheable = (state.cache_enabled and dtype == state.fast_dtype[device_type] and t.dtype == dtypes.float32
                 and t.requires_grad and t.is_leaf and t._base is None)
    if not cacheable:
        return t.to(dtype)
    cache = state.cache
    hit = cache.get(id(t))
    if hit is None or hit[0] is not t:
        hit = cache[id(t)] = (t, t.to(dtype))
    return hit[1]


def _cast_all(values, dtype, device_type):
    return [_cast_one(v, dtype, device_type) for v in values]


def _cast_one(v, dtype, device_type):
    if isinstance(v, Tensor):
        return _cached_cast(v, dtype, device_type)
    if isinstance(v, (list, tuple)):
        return type(v)(_cast_all(v, dtype, device_type))
    return v


def _widest(tensors, device_type):
    """torch's ``prioritize``: float32 wins over the region's dtype; float64 is left alone; a
    16-bit dtype that is not the region's is an error (torch refuses it too)."""
    lower = state.fast_dtype[device_type]
    current = lower
    for t in tensors:
        if not _floating_on(t, device_type) or t.dtype == dtypes.float64:
            continue
        if current == dtypes.float32 or t.dtype == dtypes.float32:
            current = dtypes.float32
        elif not (current == lower and t.dtype == lower):
            raise RuntimeError(f"Unexpected floating ScalarType in at::autocast::prioritize: "
                               f"{_torch_dtype_name(t.dtype)} in a {_torch_dtype_name(lower)} autocast region")
    return current


def _policy_cast(name, args, kwargs, fn=None):
    """``args`` and ``kwargs`` cast by op ``name``'s policy for the tensors' device (unchanged where
    autocast is off there, or the op is not on its list)."""
    device_type = _device_of(args, kwargs)
    policy = _policy(name, args, kwargs, device_type)
    if policy in (None, THROUGH) or policy == FP32_OPT and _names_a_dtype(fn, args, kwargs):
        return args, kwargs
    if kwargs.get("out") is not None:  # torch's out= calls are not autocast
        return args, kwargs
    if policy == BANNED:
        raise RuntimeError(_BCE_BANNED)
    if policy == LOWER:
        dtype = state.fast_dtype[device_type]
    elif policy in (FP32, FP32_OPT):
        dtype = dtypes.float32
    else:
        dtype = _widest(_tensors((*args, *kwargs.values())), device_type)
    return _cast_all(args, dtype, device_type), {k: _cast_one(v, dtype, device_type) for k, v in kwargs.items()}


def _device_of(args, kwargs):
    return next((t.device.type for t in _tensors((*args, *kwargs.values()))), "cpu")


def _policy(name, args, kwargs, device_type=None):
    """Op ``name``'s policy in the table of its tensors' device, None where autocast is off there."""
    device_type = device_type or _device_of(args, kwargs)
    return _TABLES.get(device_type, {}).get(name) if state.enabled.get(device_type) else None


@functools.lru_cache(maxsize=None)
def _signature(fn):
    return inspect.signature(fn)


def _names_a_dtype(fn, args, kwargs):
    """Whether the call passes its own ``dtype`` (by keyword or position): torch's fp32_set_opt_dtype
    ops (``sum``, ``softmax``, ...) then run in it, not in float32."""
    if kwargs.get("dtype") is not None:
        return True
    try:
        return _signature(fn).bind_partial(*args, **kwargs).arguments.get("dtype") is not None
    except (TypeError, ValueError):  # (the op's own call reports a wrong signature)
        return False


def autocast_op(name, fn, *args, **kwargs):
    """Call ``fn`` (the wrapper of op ``name``) with its arguments cast by the op's policy for the
    tensors' device, with autocast off while it runs."""
    if _policy(name, args, kwargs) == THROUGH:
        return fn(*args, **kwargs)
    args, kwargs = _policy_cast(name, args, kwargs, fn)
    return without_autocast(fn, *args, **kwargs)


def cast_args(name, *args):
    """``args`` cast as op ``name`` casts them, for a layer that is one kernel in torch but several
    ops in minilora, which then run with autocast on (``nn.LSTM``: its linears cast the weights)."""
    return _policy_cast(name, args, {})[0]


def without_autocast(fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` with autocast off: an autocast op's inner calls, and torch's in-place
    ops and ``out=`` calls, which autocast leaves alone (``a.addmm_(b, c)`` stays float32)."""
    saved, state.active = state.active, False
    try:
        return fn(*args, **kwargs)
    finally:
        state.active = saved


def autocasts(fn=None, *, name_of=None):
    """Decorator: op ``fn`` takes part in autocast under its own name in the tables above, or under
    the name ``name_of(*args, **kwargs)`` gives (``F.pad``: torch's kernel for the mode). For ops off
    the hot path; ``matmul`` and ``linear`` check ``state.active`` inline instead (no extra call)."""
    if fn is None:
        return functools.partial(autocasts, name_of=name_of)

    @functools.wraps(fn)
    def op(*args, **kwargs):
        if used and state.active:
            return autocast_op(fn.__name__ if name_of is None else name_of(*args, **kwargs), fn, *args, **kwargs)
        return fn(*args, **kwargs)
    return op


# ---- custom autograd Functions under autocast (torch.amp.custom_fwd / custom_bwd) ----------------------
def _cast_inputs(value, device_type, dtype):
    """torch's ``amp._cast``: floating tensors (not float64) on ``device_type`` in ``dtype``, through
    lists, tuples and dicts."""
    if isinstance(value, Tensor):
        return value.to(dtype) if _floating_on(value, device_type) and value.dtype != dtypes.float64 else value
    if isinstance(value, dict):
        return {_cast_inputs(k, device_type, dtype): _cast_inputs(v, device_type, dtype) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_cast_inputs(v, device_type, dtype) for v in value)
    return value


def _check_device_type_is_str(device_type):
    if not isinstance(device_type, str):
        raise ValueError(f"Expected `device_type` of type `str`, got: `{type(device_type)}`")


def custom_fwd(fwd=None, *, device_type, cast_inputs=None):
    """``@torch.amp.custom_fwd(device_type="cpu", cast_inputs=None)`` on an ``autograd.Function``'s
    ``forward``: without ``cast_inputs`` it runs as called and notes the region for ``custom_bwd``;
    with it, inside a region, the floating inputs are cast to ``cast_inputs`` and the forward runs
    with autocast off."""
    _check_device_type_is_str(device_type)
    if fwd is None:
        return functools.partial(custom_fwd, device_type=device_type, cast_inputs=cast_inputs)

    @functools.wraps(fwd)
    def decorate_fwd(*args, **kwargs):
        ctx = args[0]
        ctx._dtype = get_autocast_dtype(device_type)
        ctx._fwd_used_autocast = cast_inputs is None and is_autocast_enabled(device_type)
        if cast_inputs is None or not is_autocast_enabled(device_type):
            return fwd(*args, **kwargs)
        with autocast(device_type=device_type, enabled=False):
            return fwd(*_cast_inputs(args, device_type, cast_inputs), **_cast_inputs(kwargs, device_type, cast_inputs))
    return decorate_fwd


def custom_bwd(bwd=None, *, device_type):
    """``@torch.amp.custom_bwd(device_type="cpu")`` on ``backward``: it runs in the autocast state
    its ``custom_fwd`` forward ran in."""
    _check_device_type_is_str(device_type)
    if bwd is None:
        return functools.partial(custom_bwd, device_type=device_type)

    @functools.wraps(bwd)
    def decorate_bwd(*args, **kwargs):
        ctx = args[0]
        with autocast(device_type=device_type, enabled=ctx._fwd_used_autocast, dtype=ctx._dtype):
            return bwd(*args, **kwargs)
    return decorate_bwd


# ---- GradScaler ------------------------------------------------------------------------------------
class OptState(Enum):
    READY = 0
    UNSCALED = 1
    STEPPED = 2


def _refresh_per_optimizer_state():
    return {"stage": OptState.READY, "found_inf_per_device": {}}


class GradScaler:
    """``torch.amp.GradScaler(device="cuda", init_scale=2.**16, growth_factor=2.0, backoff_factor=0.5,
    growth_interval=2000, enabled=True)``. ``"cuda"`` without a GPU disables it with torch's warning
    (every method then passes through); ``"cpu"`` (and ``"emu"``) work with any minilora optimizer."""

    def __init__(self, device="cuda", init_scale=2.0 ** 16, growth_factor=2.0, backoff_factor=0.5,
                 growth_interval=2000, enabled=True):
        self._device = device
        self._enabled = enabled
        if device == "cuda" and enabled and not _cuda_available():
            warnings.warn("torch.cuda.amp.GradScaler is enabled, but CUDA is not available.  Disabling.",
                          stacklevel=2)
            self._enabled = False
        if self._enabled:
            if growth_factor <= 1.0:
                raise AssertionError("The growth factor must be > 1.0.")
            if backoff_factor >= 1.0:
                raise AssertionError("The backoff factor must be < 1.0.")
            self._init_scale = init_scale
            self._scale = None  # float32, made on the first scale() (as torch: lazily)
            self._growth_factor = growth_factor
            self._backoff_factor = backoff_factor
            self._growth_interval = growth_interval
            self._init_growth_tracker = 0
            self._growth_tracker = None
            self._per_optimizer_states = defaultdict(_refresh_per_optimizer_state)

    def _check_scale_growth_tracker(self, funcname):
        if self._scale is None:
            raise AssertionError(f"Attempted {funcname} but _scale is None.  This may indicate your script did "
                                 f"not use scaler.scale(loss or outputs) earlier in the iteration.")

    def _lazy_init(self):
        if self._scale is None:
            self._scale = np.float32(self._init_scale)
            self._growth_tracker = int(self._init_growth_tracker)

    def scale(self, outputs):
        """``outputs`` (a tensor, or lists/tuples of them) times the current scale."""
        if not self._enabled:
            return outputs
        if isinstance(outputs, Tensor):
            self._lazy_init()
            return outputs * self._scale_tensor(outputs)
        if isinstance(outputs, (list, tuple)):
            return type(outputs)(self.scale(v) for v in outputs)
        if hasattr(outputs, "__iter__"):
            return map(self.scale, outputs)
        raise ValueError("outputs must be a Tensor or an iterable of Tensors")

    def _scale_tensor(self, like):
        return Tensor(np.array(self._scale, dtype=np.float32), device=like.device)

    def _unscale_grads_(self, optimizer, inv_scale, allow_fp16):
        """Every gradient times ``inv_scale`` (float32, as torch's kernel), in place; whether any was
        inf or NaN before (per device, as torch keeps it)."""
        found = {}
        with no_grad():
            for group in optimizer.param_groups:
                for param in group["params"]:
                    grad = param.grad
                    if grad is None:
                        continue
                    if not allow_fp16 and grad.dtype == dtypes.float16:
                        raise ValueError("Attempting to unscale FP16 gradients.")
                    found[grad.device] = found.get(grad.device, 0.0) + _non_finite_check_and_unscale_(
                        grad, inv_scale)
        return {device: float(bool(n)) for device, n in found.items()}

    def unscale_(self, optimizer):
        """Divide ``optimizer``'s gradients by the scale (once per step: between it and ``step`` users
        clip the true gradients)."""
        if not self._enabled:
            return
        self._check_scale_growth_tracker("unscale_")
        state = self._per_optimizer_states[id(optimizer)]
        if state["stage"] is OptState.UNSCALED:
            raise RuntimeError("unscale_() has already been called on this optimizer since the last update().")
        if state["stage"] is OptState.STEPPED:
            raise RuntimeError("unscale_() is being called after step().")
        inv_scale = np.float32(1.0 / np.float64(self._scale))  # torch: the reciprocal in float64
        with held_ctrl_c():  # (a Ctrl-C half-way left some gradients unscaled, and a retry unscaled the rest twice)
            state["found_inf_per_device"] = self._unscale_grads_(optimizer, inv_scale, False)
            state["stage"] = OptState.UNSCALED

    def step(self, optimizer, *args, **kwargs):
        """``optimizer.step()`` unless an inf/NaN gradient was found (then the step is skipped and
        None returned); unscales first if the user did not."""
        if not self._enabled:
            return optimizer.step(*args, **kwargs)
        if "closure" in kwargs:
            raise RuntimeError("Closure use is not currently supported if GradScaler is enabled.")
        self._check_scale_growth_tracker("step")
        state = self._per_optimizer_states[id(optimizer)]
        if state["stage"] is OptState.STEPPED:
            raise RuntimeError("step() has already been called since the last update().")
        if state["stage"] is OptState.READY:
            self.unscale_(optimizer)
        if len(state["found_inf_per_device"]) == 0:
            raise AssertionError("No inf checks were recorded for this optimizer.")
        result = None
        if not sum(state["found_inf_per_device"].values()):
            result = optimizer.step(*args, **kwargs)
        state["stage"] = OptState.STEPPED
        return result

    def update(self, new_scale=None):
        """Back off the scale after a step with inf/NaN gradients, grow it after ``growth_interval``
        clean steps in a row (torch's ``_amp_update_scale_``), or set it to ``new_scale``."""
        if not self._enabled:
            return
        self._check_scale_growth_tracker("update")
        if new_scale is not None:
            self._scale = np.float32(_new_scale_value(new_scale, self._device))
        else:
            found = [v for s in self._per_optimizer_states.values() for v in s["found_inf_per_device"].values()]
            if not found:
                raise AssertionError("No inf checks were recorded prior to update.")
            self._update_scale(sum(found) > 0)
        self._per_optimizer_states = defaultdict(_refresh_per_optimizer_state)

    def _update_scale(self, found_inf):
        f32 = np.float32
        if found_inf:
            self._scale = f32(self._scale * f32(self._backoff_factor))
            self._growth_tracker = 0
            return
        successful = self._growth_tracker + 1
        if successful == self._growth_interval:
            grown = f32(self._scale * f32(self._growth_factor))
            if np.isfinite(grown):
                self._scale = grown
            successful = 0
        self._growth_tracker = successful

    def get_scale(self):
        if not self._enabled:
            return 1.0
        return self._init_scale if self._scale is None else float(self._scale)

    def get_growth_factor(self):
        return self._growth_factor

    def set_growth_factor(self, new_factor):
        self._growth_factor = new_factor

    def get_backoff_factor(self):
        return self._backoff_factor

    def set_backoff_factor(self, new_factor):
        self._backoff_factor = new_factor

    def get_growth_interval(self):
        return self._growth_interval

    def set_growth_interval(self, new_interval):
        self._growth_interval = new_interval

    def _get_growth_tracker(self):
        if not self._enabled:
            return 0
        return self._init_growth_tracker if self._growth_tracker is None else self._growth_tracker

    def is_enabled(self):
        return self._enabled

    def state_dict(self):
        if not self._enabled:
            return {}
        return {"scale": self.get_scale(), "growth_factor": self._growth_factor,
                "backoff_factor": self._backoff_factor, "growth_interval": self._growth_interval,
                "_growth_tracker": self._get_growth_tracker()}

    def load_state_dict(self, state_dict):
        if not self._enabled:
            return
        if len(state_dict) == 0:
            raise RuntimeError("The source state dict is empty, possibly because it was saved "
                               "from a disabled instance of GradScaler.")
        self._init_scale = state_dict["scale"]
        if self._scale is not None:
            self._scale = np.float32(state_dict["scale"])
        self._growth_factor = state_dict["growth_factor"]
        self._backoff_factor = state_dict["backoff_factor"]
        self._growth_interval = state_dict["growth_interval"]
        self._init_growth_tracker = state_dict["_growth_tracker"]
        if self._growth_tracker is not None:
            self._growth_tracker = int(state_dict["_growth_tracker"])


def _new_scale_value(new_scale, device):
    if isinstance(new_scale, float):
        return new_scale
    if not isinstance(new_scale, Tensor):  # (torch reads new_scale.device first: an int fails there)
        raise AttributeError(f"'{type(new_scale).__name__}' object has no attribute 'device'")
    reason = ("new_scale should be a float or a 1-element torch.cuda.FloatTensor or "
              "torch.FloatTensor with requires_grad=False.")
    if new_scale.device.type != device or new_scale.numel() != 1 or new_scale.requires_grad:
        raise AssertionError(reason)
    if new_scale.ndim:  # torch's scale is 0-d: its copy_ from a [1] tensor, which its message asks for, fails
        raise RuntimeError(f"output with shape [] doesn't match the broadcast shape {list(new_scale.shape)}")
    return new_scale.item()


def _non_finite_check_and_unscale_(grad, inv_scale):
    """torch's ``_amp_foreach_non_finite_check_and_unscale_`` for one gradient: 1 if it holds an inf
    or NaN; every element times ``inv_scale`` in float32 (float64 for float64), rounded once."""
    a = grad._array
    xp = xp_of(a)
    found = 0 if bool(xp.isfinite(dtypes.upcast(a)).all()) else 1
    compute = np.float64 if a.dtype == np.float64 else np.float32
    a[...] = (dtypes.upcast(a).astype(compute, copy=False) * compute(inv_scale)).astype(a.dtype)
    grad._bump_version()
    return found


def _deprecated_grad_scaler(device_type):
    class _GradScaler(GradScaler):
        def __init__(self, init_scale=2.0 ** 16, growth_factor=2.0, backoff_factor=0.5, growth_interval=2000,
                     enabled=True):
            warnings.warn(f"`torch.{device_type}.amp.GradScaler(args...)` is deprecated. Please use "
                          f"`torch.amp.GradScaler('{device_type}', args...)` instead.", FutureWarning, stacklevel=2)
            super().__init__(device_type, init_scale, growth_factor, backoff_factor, growth_interval, enabled)

    _GradScaler.__name__ = _GradScaler.__qualname__ = "GradScaler"
    return _GradScaler


class _Namespace:
    """``torch.cpu.amp`` / ``torch.cuda.amp``: the deprecated spellings, under those names."""

    def __init__(self, device_type, default_dtype):
        self.autocast = _deprecated_autocast(device_type, default_dtype)
        self.GradScaler = _deprecated_grad_scaler(device_type)


cpu_amp = _Namespace("cpu", lambda: dtypes.bfloat16)  # (dtypes.bfloat16 itself would import ml_dtypes now)
cuda_amp = _Namespace("cuda", lambda: dtypes.float16)
