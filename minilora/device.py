"""Devices: where a tensor's numbers live and which code computes on them.

Four devices, one interface:

* ``cpu``  -- NumPy arrays, NumPy math. Always enabled.
* ``emu``  -- NumPy arrays too, but every op that has a hand-written CUDA kernel (the fused LoRA
  forward/backward, the fused AdamW) runs that ``.cu`` source in the project's CPU emulator, so the
  CUDA code is exercised on machines without a GPU. Enabled when a C++ compiler is found.
* ``cuda`` -- CuPy arrays on an NVIDIA GPU; kernels go through ``cupy.RawModule``. Enabled only when
  CuPy imports *and* a GPU answers.
* ``meta`` -- torch's device of shapes without values: a tensor there has a shape, a dtype and strides,
  and no number of it may be read (``item()``, ``numpy()``, a copy to another device refuse, in torch's
  words). Its arrays are zeros in pages the OS has not handed out yet (``unwritten_zeros``: a page is
  backed only when written), so a model built there costs no memory, and an op on meta tensors
  computes its result's shape, dtype and strides without its arithmetic (minilora/ops/meta.py: a shape
  rule per op family; an op without one runs on those zeros). See ``_MetaArrays``. Always enabled.

A device is also a context manager, as torch's: ``with minilora.device("meta"): model = Model()`` makes
every tensor a factory makes without a ``device=`` there (``set_default_device`` for the block, per
thread, nested blocks restored in order, an exception included).

A device that cannot run says so through ``enabled()`` and ``why_disabled``; nothing fails at import.
"""
import contextlib
import mmap
import os
import re
import shutil
import sys
import threading

import numpy as np

__all__ = ["Device", "device", "default_device", "get_default_device", "set_default_device", "xp_of",
           "all_devices", "cache_slices", "CHUNK", "META", "NO_DATA", "unwritten_zeros", "holds_no_values"]


class OutOfMemoryError(RuntimeError):
    """``torch.OutOfMemoryError`` (``torch.cuda.OutOfMemoryError`` is the same class): a device ran out of memory.
    One class under both names, so ``except torch.OutOfMemoryError`` and ``except torch.cuda.OutOfMemoryError``
    catch the same errors. CuPy's own ``cupy.cuda.memory.OutOfMemoryError`` met where minilora works on ``cuda``
    is raised as this class, in torch's words (``raise_device_error_as_torch``)."""


class AcceleratorError(RuntimeError):
    """``torch.AcceleratorError``: an accelerator's runtime reported an error. CuPy's
    ``cupy.cuda.runtime.CUDARuntimeError`` met where minilora works on ``cuda`` is raised as this class."""


# Where minilora works on ``cuda`` -- an op (Function.apply), a backward pass, an optimizer step, a copy to the GPU --
# CuPy's own errors are raised again as torch's classes, so a user's ``except torch.cuda.OutOfMemoryError`` (halve
# the batch and retry) or ``except torch.AcceleratorError`` catches them; before, it missed them and the run died.
# Each error raised is an instance of CuPy's class too (a class made of both), so code catching CuPy's keeps
# catching it. NumPy's MemoryError for an array the CPU cannot hold is torch's CPU allocator's RuntimeError in its
# words (a MemoryError too); any other error (minilora's own RuntimeErrors) passes unchanged.
_BOTH_CLASSES = {}  # (CuPy's class, torch's) -> the class that is both


def raise_device_error_as_torch(exc):
    """``except (MemoryError, RuntimeError) as exc: raise_device_error_as_torch(exc); raise`` -- CuPy's
    out-of-memory error ("Out of memory allocating 2,147,483,648 bytes (allocated so far: ...)") raised as
    ``OutOfMemoryError`` ("CUDA out of memory. Tried to allocate 2.00 GiB. ..."), a CUDA runtime error
    ("cudaErrorIllegalAddress: an illegal memory access was encountered") as ``AcceleratorError`` ("CUDA error: an
    illegal memory access was encountered ..."), and so the CPU emulator's (``emu``'s KernelFault); NumPy's for an
    array too large for the CPU's memory as torch's RuntimeError ("DefaultCPUAllocator: can't allocate memory: you
    tried to allocate N bytes"); returns for any other error, to be raised as it is."""
    size = getattr(exc, "_total_size", None)  # (NumPy's _ArrayMemoryError: the bytes it was asked for)
    if isinstance(exc, MemoryError) and size is not None and not isinstance(exc, RuntimeError):
        raise _both(MemoryError, RuntimeError)(
            f"[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: you tried to "
            f"allocate {size} bytes. Error code 12 (Cannot allocate memory)") from exc
    for cupy_class, torch_class, words in ((_cupy_class("memory", "OutOfMemoryError"), OutOfMemoryError,
                                            _torch_out_of_memory_message),
                                           (_cupy_class("runtime", "CUDARuntimeError"), AcceleratorError,
                                            _torch_cuda_error_message)):
        if cupy_class is not None and isinstance(exc, cupy_class) and not isinstance(exc, torch_class):
            raise _both(cupy_class, torch_class)(words(exc)) from exc
    emulated = _emulator_runtime_error()
    if emulated is not None and isinstance(exc, emulated) and not isinstance(exc, AcceleratorError):
        # a kernel's fault on ``emu``: torch's class, and still the emulator's own (KernelFault)
        raise _both(type(exc), AcceleratorError)(_torch_emulated_message(exc)) from exc


@contextlib.contextmanager
def device_errors_as_torch():
    """``raise_device_error_as_torch`` for a block (a backward pass, an optimizer step, a copy to the GPU)."""
    try:
        yield
    except (MemoryError, RuntimeError) as exc:
        raise_device_error_as_torch(exc)
        raise


def _cupy_class(module, name):
    """``cupy.cuda.<module>.<name>`` if CuPy was imported (never imported here), else None."""
    return getattr(getattr(getattr(sys.modules.get("cupy"), "cuda", None), module, None), name, None)


def _emulator_runtime_error():
    """The CPU emulator's ``cuda.runtime.CUDARuntimeError`` (a kernel's fault on ``emu``: KernelFault) if the
    emulator was imported (never imported here: it is a layer above), else None."""
    return getattr(sys.modules.get(f"{__package__}.emulator_runtime"), "CUDARuntimeError", None)


def _both(cupy_class, torch_class):
    both = _BOTH_CLASSES.get((cupy_class, torch_class))
    if both is None:
        both = _BOTH_CLASSES[cupy_class, torch_class] = type(torch_class.__name__, (torch_class, cupy_class), {
            "__init__": RuntimeError.__init__, "__module__": torch_class.__module__,
            "__reduce__": lambda self: (torch_class, self.args)})  # (unpickled as torch's class alone)
    return both


def _torch_out_of_memory_message(exc):
    """torch's opening words (c10's CUDACachingAllocator), the size in its ``format_size`` units, then CuPy's own
    words, which say what was allocated so far (torch's per-GPU totals are its own allocator's books)."""
    size = re.search(r"allocating ([\d,]+) bytes", str(exc))  # (CuPy's words: its attributes are private)
    tried = f" Tried to allocate {_format_size(int(size[1].replace(',', '')))}." if size else ""
    return f"CUDA out of memory.{tried} (CuPy: {exc})"


def _format_size(size):
    """c10's ``format_size``: bytes up to 1 KiB, then KiB, MiB, GiB with two decimals (1 MiB exactly is "1024.00
    KiB", as there)."""
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size > scale:
            return f"{size / scale:.2f} {unit}"
    return f"{size} bytes"


def _torch_emulated_message(exc):
    """On ``emu`` a kernel's fault is reported at its launch, in the emulator's words (the fault, the thread, the
    block and the source line): torch's opening words before them."""
    return f"CUDA error: {exc}"


def _torch_cuda_error_message(exc):
    """c10's ``C10_CUDA_CHECK`` words: "CUDA error: <the runtime's description>" and its note that a kernel's error
    may be reported at a later call (CuPy's words start with the error's name: "cudaErrorIllegalAddress: ...")."""
    name, _, description = str(exc).partition(": ")
    return (f"CUDA error: {description or name}\nCUDA kernel errors might be asynchronously reported at some other "
            f"API call, so the stacktrace below might be incorrect.\nFor debugging consider passing "
            f"CUDA_LAUNCH_BLOCKING=1 (CuPy: {exc})")


class UnknownDeviceError(RuntimeError, ValueError):
    """A device name minilora does not know: torch's RuntimeError, and the ValueError minilora raised before."""


class Device:
    """One place to compute. ``xp`` is the array module (numpy or cupy)."""

    def __init__(self, name, uses_kernels):
        self.name = name
        self.uses_kernels = uses_kernels  # True: ops with a .cu kernel launch it (sets .dispatches too)
        self._checked = False
        self._why = None
        self._xp = None
        self._bfloat16_refused = None  # (xp, why) once asked: does this CuPy make bfloat16 arrays?

    @property
    def uses_kernels(self):
        return self._uses_kernels

    @uses_kernels.setter
    def uses_kernels(self, value):
        # (a setter, not a property for .dispatches: Function.apply reads that on every op. The CUDA stand-in's
        # tests turn kernels off on 'cuda', and .dispatches must follow)
        self._uses_kernels = value
        # Function.apply runs another forward here: a .cu kernel (emu, cuda), the shape rule (meta: ops/meta.py)
        self.dispatches = value or self.name == "meta"

    # Probing is lazy: importing minilora must never import CuPy or touch a GPU.
    def _probe(self):
        if self._checked:
            return
        self._checked = True
        if self.name == "cuda":
            try:
                import cupy
                count = cupy.cuda.runtime.getDeviceCount()
            except Exception as exc:  # ImportError, or CUDA driver errors
                self._why = f"CuPy is not usable here ({type(exc).__name__}: {exc})"
                return
            if count == 0:
                self._why = "CuPy imports but no GPU answers (getDeviceCount() == 0)"
                return
            self._xp = cupy
        else:
            if self.name == "emu" and shutil.which(os.environ.get("CXX", "g++")) is None:
                self._why = "the CUDA emulator needs a C++ compiler (g++) on PATH"
                return
            self._xp = np

    def enabled(self):
        self._probe()
        return self._why is None

    @property
    def why_disabled(self):
        self._probe()
        return self._why

    @property
    def xp(self):
        if not self.enabled():
            raise RuntimeError(f"device '{self.name}' is not enabled: {self._why}")
        return self._xp

    def check_dtype(self, dtype):
        """Raise a clear error if this device cannot hold ``dtype``. bfloat16 needs CuPy >= 14 on
        ``cuda``: CuPy 13 has no bfloat16 and refuses such an array ("Unsupported dtype bfloat16").
        Called where host data goes to the GPU (``tensor``, ``.to``, ``Module.to``)."""
        if self.name != "cuda" or getattr(dtype, "name", None) != "bfloat16":
            return
        version = getattr(self.xp, "__version__", "0")
        if int(version.split(".")[0]) < 14:
            raise TypeError(f"bfloat16 tensors on cuda need CuPy >= 14, which (with ml_dtypes) has "
                            f"bfloat16 on the GPU; this is CuPy {version}, which has none. Upgrade "
                            f"(pip install -U 'cupy-cuda12x>=14' ml_dtypes) or keep cuda tensors in "
                            f"float32 or float16")
        why = self._bfloat16_refusal(dtype)
        if why:
            raise TypeError(f"bfloat16 tensors on cuda: this CuPy {version} refuses bfloat16 arrays ({why}). "
                            f"CuPy 14 takes ml_dtypes' bfloat16 only where it could register it at import "
                            f"-- with NumPy >= 2.1.2 (this is NumPy {np.__version__}) and ml_dtypes "
                            f"installed before CuPy is imported. Upgrade NumPy, or keep cuda tensors in "
                            f"float32 or float16")

    def _bfloat16_refusal(self, dtype):
        """Why this CuPy refuses bfloat16 arrays ('' if it makes them): asked once, by making an empty one
        (CuPy checks a dtype where it creates an array)."""
        if self._bfloat16_refused is None or self._bfloat16_refused[0] is not self.xp:
            try:
                self.xp.empty(0, dtype=dtype)
                why = ""
            except (TypeError, ValueError) as exc:
                why = f"{type(exc).__name__}: {exc}"
            self._bfloat16_refused = (self.xp, why)
        return self._bfloat16_refused[1]

    @property
    def type(self):
        """``x.device.type == 'cpu'``, as torch."""
        return self.name

    @property
    def index(self):
        return None  # one device of each kind

    # No __eq__ with strings: as torch (``torch.device('cpu') == 'cpu'`` is False), a device equals
    # only itself; compare ``x.device.type == 'cpu'``.

    def __repr__(self):
        return f"device(type='{self.name}')"

    def __str__(self):
        return self.name

    def __reduce__(self):  # pickling/copying gives back the same singleton
        return (device, (self.name,))

    # ``with device:`` -- torch's DeviceContext: the default device for the block. The devices are
    # singletons, so what a block restores is kept on a per-thread stack, not on the object (the same
    # device may be entered twice, nested).
    def __enter__(self):
        _default.entered.append(_default.name)
        _default.name = self.name
        return self

    def __exit__(self, *exc):
        _default.name = _default.entered.pop()
        return False


NO_DATA = "Cannot copy out of meta tensor; no data!"  # (torch's words, wherever a meta tensor's values would leave)


class _UnwrittenMapping(mmap.mmap):
    """An anonymous mapping of meta storage (its own type: ``holds_no_values`` tells it from a file's)."""


def holds_no_values(array):
    """Is ``array`` meta storage (or a view of it): zeros that stand for values nobody has? A check that reads
    values (an index's bounds) skips it, as torch's meta kernels check no values."""
    while isinstance(array, np.ndarray):
        array = array.base
    return isinstance(getattr(array, "obj", None), _UnwrittenMapping)  # (NumPy's memoryview of the mapping)


class _UnwrittenPages:
    """Memory for meta arrays that no page of is ever backed: each array a range of its own in a large anonymous
    mapping nobody writes (its pages cost nothing until touched). ``np.zeros`` would not do: calloc serves a block
    under glibc's mmap threshold (128 KiB, raised up to 32 MiB once a larger block is freed) from the heap, which
    it clears by writing -- 100k small meta tensors cost their whole size. An array of ``OWN_MAPPING`` bytes or
    more gets a mapping of its own; smaller ones share a ``REGION``, which goes back to the OS once its last
    array is gone. Each array's ``base`` is an array of its own bytes, so no two meta arrays look like
    views of one storage (tensor._share_storage)."""

    REGION = 1 << 30  # (address space, not memory: MAP_NORESERVE, no commit charge either)
    OWN_MAPPING = 1 << 24
    _FLAGS = mmap.MAP_PRIVATE | getattr(mmap, "MAP_NORESERVE", 0x4000)

    def __init__(self):
        self._lock = threading.Lock()
        self._region, self._used = None, self.REGION

    def zeros(self, shape, dtype=float, order="C"):
        dtype = np.dtype(dtype)
        shape = (shape,) if isinstance(shape, (int, np.integer)) else tuple(shape)
        nbytes = dtype.itemsize * int(np.prod(shape, dtype=np.int64))
        if dtype.hasobject or nbytes <= 0 or min(shape, default=0) < 0:  # (NumPy's own zeros, or its error)
            return np.zeros(shape, dtype, order)
        mapping, start = self._place(nbytes)
        # (the bytes as an array of their own -- the base of the result, a view of them -- so that no two meta
        # arrays have one base)
        return np.frombuffer(mapping, np.uint8, nbytes, start).view(dtype).reshape(shape, order=order)

    def _place(self, nbytes):
        """A mapping, and where in it ``nbytes`` never-written bytes start (aligned to 64, as NumPy's own)."""
        if nbytes >= self.OWN_MAPPING:
            return _UnwrittenMapping(-1, nbytes, flags=self._FLAGS), 0
        with self._lock:
            if self._used + nbytes > self.REGION:
                self._region, self._used = _UnwrittenMapping(-1, self.REGION, flags=self._FLAGS), 0
            start, self._used = self._used, self._used + -(-nbytes // 64) * 64
            return self._region, start


unwritten_zeros = _UnwrittenPages().zeros


class _MetaArrays:
    """The meta device's array module: NumPy's, but the arrays it makes from data or shapes are zeros
    in memory nobody has written (``unwritten_zeros``: pages the OS backs only when written). Nothing is copied
    into a meta tensor, and nothing is read out of it: Tensor refuses (``NO_DATA``). Every other name is NumPy's
    own (``xp.where``, ``xp.ndarray``)."""

    def __getattr__(self, name):
        return getattr(np, name)

    @staticmethod
    def zeros(shape, dtype=float, order="C"):
        return unwritten_zeros(shape, dtype, order)

    @staticmethod
    def asarray(data, dtype=None, **_):
        shape, data_dtype = _shape_and_dtype(data)
        return unwritten_zeros(shape, data_dtype if dtype is None else dtype)

    array = asarray
    empty = ones = zeros

    @staticmethod
    def zeros_like(a, dtype=None, **_):
        return unwritten_zeros(np.shape(a), a.dtype if dtype is None else dtype)

    empty_like = ones_like = zeros_like

    @staticmethod
    def full(shape, fill_value, dtype=None, **_):
        return unwritten_zeros(shape, np.asarray(fill_value).dtype if dtype is None else dtype)


def _shape_and_dtype(data):
    """The shape and dtype ``np.asarray(data)`` would have, without copying an array's values."""
    if hasattr(data, "shape") and hasattr(data, "dtype"):
        return tuple(data.shape), data.dtype
    data = np.asarray(data)
    return data.shape, data.dtype


_DEVICES = {name: Device(name, uses_kernels=(name not in ("cpu", "meta"))) for name in ("cpu", "emu", "cuda", "meta")}
META = _DEVICES["meta"]
META._checked, META._xp = True, _MetaArrays()


class _DefaultDevice(threading.local):
    """The default device of this thread, as torch's (set_default_device and ``with device:`` are per
    thread): ``name`` (None: MINILORA_DEVICE, else cpu) and the names the open ``with`` blocks restore."""

    def __init__(self):
        self.name = None
        self.entered = []


_default = _DefaultDevice()


def all_devices():
    """The three devices that compute, enabled or not (tests parametrise over these): not ``meta``, which
    holds no values to compare."""
    return [dev for dev in _DEVICES.values() if dev is not META]


# c10's device string grammar: a type of letters and underscores, then an optional index without leading zeros
_DEVICE_STRING = re.compile(r"[a-zA-Z_]+(:(0|[1-9][0-9]*))?")


def device(name=None):
    """``device('cpu' | 'emu' | 'cuda' | 'meta')``; ``None`` gives the default (this thread's
    ``with device:`` block's or set_default_device's, else ``MINILORA_DEVICE``, else cpu).

    Asking for a device that cannot run raises an error that says why."""
    if isinstance(name, Device):
        return name
    if name is None:
        name = _default.name or os.environ.get("MINILORA_DEVICE", "cpu")
    dev = _DEVICES.get(name) if type(name) is str else None
    if dev is not None and dev._checked and dev._why is None:  # (a plain name, probed before: every factory's call)
        return dev
    given, name = name, str(name).split(":")[0]  # accept 'cuda:0' as PyTorch users write it
    if type(given) is str and not _DEVICE_STRING.fullmatch(given):  # x.to('float64'): torch reads a device
        raise UnknownDeviceError(f"Invalid device string: '{given}'")
    if name not in _DEVICES:
        raise UnknownDeviceError(f"unknown device '{name}': Expected one of {', '.join(sorted(_DEVICES))} device "
                                 f"type at start of device string: {given}")
    dev = _DEVICES[name]
    if not dev.enabled():
        raise RuntimeError(f"device '{name}' is not enabled: {dev.why_disabled}")
    return dev


def default_device():
    return device(None)


def default_is_set():
    """Has this thread a default device set (set_default_device, a ``with device:`` block)? torch's then fills
    every factory's device=, ``tensor(t)``'s too; without one ``tensor(t)`` stays on t's device."""
    return _default.name is not None


def default_is_meta():
    """Is this thread's default device meta (set_default_device, a ``with device("meta")`` block)? A quick
    look (factories ask it for every tensor): MINILORA_DEVICE=meta is not read here."""
    return _default.name == "meta"


def set_default_device(name):
    """``torch.set_default_device``: the device of new tensors made without a ``device=`` (``None``
    goes back to the default), in this thread, as torch's. A device that cannot run is refused here,
    saying why."""
    _default.name = None if name is None else device(name).name


def get_default_device():
    """``torch.get_default_device()``: where new tensors go (``device(type='cpu')`` unless changed)."""
    return device(None)


def xp_of(array):
    """The array module that owns ``array``: numpy for NumPy arrays, else cupy."""
    if isinstance(array, np.ndarray) or np.isscalar(array):
        return np
    import cupy
    return cupy


# Multi-pass NumPy math (GELU's ~20 passes, AdamW's dozen ufuncs) runs over slices of CHUNK elements,
# so each slice and its temporaries stay in the L2 cache between passes instead of streaming through
# memory: 5 float32 slices are 640 KiB.
CHUNK = 32768


def cache_slices(*arrays, step=None):
    """Matching flat slices of same-size arrays (``None`` stays ``None``), ``step`` (default CHUNK)
    elements at a time on the CPU (``parallel.slice_elements()`` gives the step for a chain of short
    calls); the whole arrays at once on a GPU. Slices of contiguous arrays are views, so writing into
    them writes the arrays."""
    flat = [a if a is None else a.reshape(-1) for a in arrays]
    size = flat[0].size
    step = (step or CHUNK) if xp_of(flat[0]) is np else max(size, 1)
    for start in range(0, size, step):
        yield [a if a is None else a[start:start + step] for a in flat]
