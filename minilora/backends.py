"""``torch.backends`` and torch's process-wide switches, as training scripts set them.

nanoGPT's ``train.py`` starts with ``torch.backends.cuda.matmul.allow_tf32 = True`` and
``torch.backends.cudnn.allow_tf32 = True``; Hugging Face's examples call
``torch.backends.mps.is_available()`` and ``torch.use_deterministic_algorithms(True)``. Here those
flags are stored and read back with torch's rules (a flag takes a bool only; ``allow_tf32`` and
``set_float32_matmul_precision`` are one setting seen two ways), so such a script runs unchanged.

What they change in minilora: nothing, as on torch's CPU. minilora's GPU path multiplies float32
matrices through CuPy at full float32 precision whatever ``allow_tf32`` says (it has no TF32
switch); there is no cuDNN, MPS or oneDNN to tune; and its ops are deterministic already (NumPy's
and CuPy's reductions do not depend on thread timing), so ``use_deterministic_algorithms`` has
nothing to refuse.
"""
import contextlib
import sys
import types
import warnings

from . import blas as _blas, float32_math as _float32_math

__all__ = ["cuda", "cudnn", "mps", "mkldnn", "mkl", "openmp", "cpu", "opt_einsum",
           "set_float32_matmul_precision", "get_float32_matmul_precision", "use_deterministic_algorithms",
           "are_deterministic_algorithms_enabled", "is_deterministic_algorithms_warn_only_enabled",
           "set_deterministic_debug_mode", "get_deterministic_debug_mode", "set_warn_always",
           "is_warn_always_enabled"]

_MATMUL_PRECISIONS = ("highest", "high", "medium")
_state = {"float32_matmul_precision": "highest", "deterministic": False, "warn_only": False,
          "warn_always": False}


def _expect_bool(setter, value):
    """torch's check on a flag: ``cudnn.benchmark = 1`` is refused, only True/False are taken."""
    if not isinstance(value, bool):
        raise RuntimeError(f"{setter} expects a bool, but got {type(value).__name__}")
    return value


# --- float32 matmul precision (torch.set_float32_matmul_precision, cuda.matmul.allow_tf32) ------------

def set_float32_matmul_precision(precision):
    """``"highest"`` (full float32), ``"high"`` or ``"medium"`` (TF32/bfloat16 products allowed on
    GPUs that have them). Stored and read back; minilora's products stay float32 (module docstring).
    An unknown name is ignored with torch's warning, a non-string refused."""
    if not isinstance(precision, str):
        raise RuntimeError(f"set_float32_matmul_precision expects a str, but got {type(precision).__name__}")
    if precision not in _MATMUL_PRECISIONS:
        warnings.warn(f"{precision} is not one of 'highest', 'high', or 'medium'; the current"
                      "setFloat32MatmulPrecision call has no effect.", UserWarning, stacklevel=2)
        return
    _state["float32_matmul_precision"] = precision


def get_float32_matmul_precision():
    return _state["float32_matmul_precision"]


class _CublasFlags:
    """``torch.backends.cuda.matmul``: ``allow_tf32`` is the float32 matmul precision seen as a bool
    (True is "high"), the reduced-precision reductions plain flags; other names are refused."""
    _FLAGS = ("allow_tf32", "allow_fp16_reduced_precision_reduction", "allow_bf16_reduced_precision_reduction",
              "allow_fp16_accumulation")

    def __init__(self):
        object.__setattr__(self, "_flags", {"allow_fp16_reduced_precision_reduction": True,
                                            "allow_bf16_reduced_precision_reduction": True,
                                            "allow_fp16_accumulation": False})

    def __getattr__(self, name):
        if name == "allow_tf32":
            return _state["float32_matmul_precision"] != "highest"
        if name in self._flags:
            return self._flags[name]
        raise AttributeError(f"Unknown attribute {name}")

    def __setattr__(self, name, value):
        if name == "allow_tf32":
            _state["float32_matmul_precision"] = "high" if _expect_bool("set_allow_tf32_cublas", value) else "highest"
        elif name in self._flags:
            if not isinstance(value, bool):
                raise TypeError(f"{name} expects a bool or a tuple/list of bools, but got {type(value)}")
            self._flags[name] = value
        else:
            raise AttributeError(f"Unknown attribute {name}")


class _FlagModule(types.ModuleType):
    """A backend module whose flags take a bool only (``torch.backends.cudnn.benchmark = True``)."""
    _FLAGS = {}  # flag -> (torch's setter name in its error message, default)

    def __init__(self, name, doc):
        super().__init__(name, doc)
        object.__setattr__(self, "_flags", {flag: default for flag, (_, default) in self._FLAGS.items()})

    def __getattr__(self, name):
        flags = self.__dict__["_flags"]
        if name in flags:
            return flags[name]
        raise AttributeError(f"module '{self.__name__}' has no attribute '{name}'")

    def __setattr__(self, name, value):
        if name in self._FLAGS:
            self._flags[name] = _expect_bool(self._FLAGS[name][0], value)
        else:
            super().__setattr__(name, value)

    @contextlib.contextmanager
    def _set_flags_for_a_while(self, **values):
        before = dict(self._flags)
        try:
            for name, value in values.items():
                setattr(self, name, value)
            yield
        finally:
            self._flags.update(before)


class _CudnnModule(_FlagModule):
    _FLAGS = {"enabled": ("set_enabled_cudnn", True), "benchmark": ("set_benchmark_cudnn", False),
              "deterministic": ("set_deterministic_cudnn", False), "allow_tf32": ("set_allow_tf32_cudnn", True)}
    benchmark_limit = 10

    def is_available(self):
        return False  # (no cuDNN: minilora's GPU path is CuPy's cuBLAS and its own kernels)

    def version(self):
        return None

    def is_acceptable(self, tensor):
        return False

    def flags(self, enabled=False, benchmark=False, benchmark_limit=10, deterministic=False, allow_tf32=True,
              fp32_precision="none", depthwise_kernel="auto"):
        """``with torch.backends.cudnn.flags(enabled=False): ...``: the flags set inside, restored after."""
        return self._set_flags_for_a_while(enabled=enabled, benchmark=benchmark, deterministic=deterministic,
                                           allow_tf32=allow_tf32)


class _MkldnnModule(_FlagModule):
    _FLAGS = {"enabled": ("set_enabled_mkldnn", True), "deterministic": ("set_deterministic_mkldnn", False)}

    def is_available(self):
        return True  # (torch's CPU wheel has oneDNN; a script asking means "can I use the CPU fast path")

    def flags(self, enabled=False, deterministic=False):
        return self._set_flags_for_a_while(enabled=enabled, deterministic=deterministic)


class _CudaModule(types.ModuleType):
    """``torch.backends.cuda``: ``matmul`` flags and the scaled-dot-product-attention backend switches
    (``F.scaled_dot_product_attention`` here has one implementation, the math one, whichever is on)."""
    _SDP = ("flash", "mem_efficient", "math", "cudnn")

    def __init__(self):
        super().__init__("minilora.backends.cuda", self.__doc__)
        self.matmul = _CublasFlags()
        self._sdp = dict.fromkeys(self._SDP, True)
        for kind in self._SDP:
            setattr(self, f"enable_{kind}_sdp", self._enabler(kind))
            setattr(self, f"{kind}_sdp_enabled", self._reader(kind))

    def _enabler(self, kind):
        def enable(enabled):
            self._sdp[kind] = _expect_bool(f"set_sdp_use_{kind}", enabled)
        enable.__name__ = f"enable_{kind}_sdp"
        return enable

    def _reader(self, kind):
        def enabled():
            return self._sdp[kind]
        enabled.__name__ = f"{kind}_sdp_enabled"
        return enabled

    def is_built(self):
        return False  # (torch's "compiled with CUDA"; minilora reaches a GPU through CuPy: minilora.cuda)

    def preferred_linalg_library(self, backend=None):
        return "default"

    @contextlib.contextmanager
    def sdp_kernel(self, enable_flash=True, enable_math=True, enable_mem_efficient=True, enable_cudnn=True):
        """torch's deprecated context manager: the switches set inside, restored after."""
        warnings.warn("`torch.backends.cuda.sdp_kernel()` is deprecated. In the future, this context manager "
                      "will be removed. Please see `torch.nn.attention.sdpa_kernel()` for the new context "
                      "manager, with updated signature.", FutureWarning, stacklevel=3)
        before = dict(self._sdp)
        try:
            for kind, value in zip(self._SDP, (enable_flash, enable_mem_efficient, enable_math, enable_cudnn)):
                self._sdp[kind] = _expect_bool(f"set_sdp_use_{kind}", value)
            yield
        finally:
            self._sdp.update(before)


def _availability(name, available, doc, **extra):
    module = types.ModuleType(f"minilora.backends.{name}", doc)
    module.is_available = lambda: available
    for key, value in extra.items():
        setattr(module, key, value)
    return module


cuda = _CudaModule()
cudnn = _CudnnModule("minilora.backends.cudnn", "torch.backends.cudnn: flags stored, no cuDNN behind them.")
mkldnn = _MkldnnModule("minilora.backends.mkldnn", "torch.backends.mkldnn: flags stored.")
mps = _availability("mps", False, "torch.backends.mps: Apple's GPUs, never here.", is_built=lambda: False)
mkl = _availability("mkl", False, "torch.backends.mkl: whether minilora's products go through MKL (minilora/blas.py: "
                    "Intel's mkl wheel installed), as torch's do where it was built with MKL.")
mkl.is_available = lambda: _blas.library() == "mkl"
openmp = _availability("openmp", False, "torch.backends.openmp: minilora's threads are its own.")
opt_einsum = _availability("opt_einsum", False, "torch.backends.opt_einsum.", enabled=False, strategy=None)
cpu = types.ModuleType("minilora.backends.cpu", "torch.backends.cpu.")
# (the instruction set torch's CPU kernels run, which minilora's float32 kernels model: ATEN_CPU_CAPABILITY or the CPU's)
cpu.get_cpu_capability = lambda: _float32_math.CPU_CAPABILITY.upper()
for _module in (cuda, cudnn, mkldnn, mps, mkl, openmp, opt_einsum, cpu):
    sys.modules[_module.__name__] = _module  # (``import minilora.backends.cudnn`` as torch's)


# --- warnings given once (torch.set_warn_always) ------------------------------------------------------

def set_warn_always(b, /):
    """torch's switch for the warnings it gives once per process (TORCH_WARN_ONCE): with True, each time.
    minilora's such warnings (ops/deprecated_signatures.py) read it through ``is_warn_always_enabled``."""
    if not isinstance(b, bool):
        raise RuntimeError(f"setWarnOnlyOnce expects a bool, but got {type(b).__name__}")
    _state["warn_always"] = b


def is_warn_always_enabled():
    return _state["warn_always"]


# --- deterministic algorithms (torch.use_deterministic_algorithms) ------------------------------------

def use_deterministic_algorithms(mode, *, warn_only=False):
    """Stored and read back. minilora's ops are deterministic already, so none is refused."""
    for name, value in (("mode", mode), ("warn_only", warn_only)):
        if not isinstance(value, bool):
            where = " (position 1)" if name == "mode" else ""
            raise TypeError(f"_set_deterministic_algorithms(): argument '{name}'{where} must be bool, "
                            f"not {type(value).__name__}")
    _state["deterministic"], _state["warn_only"] = mode, warn_only and mode


def are_deterministic_algorithms_enabled():
    return _state["deterministic"]


def is_deterministic_algorithms_warn_only_enabled():
    return _state["warn_only"]


def get_deterministic_debug_mode():
    """0 default, 1 warn, 2 error: torch's view of the two flags above."""
    return 0 if not _state["deterministic"] else 1 if _state["warn_only"] else 2


def set_deterministic_debug_mode(debug_mode):
    names = {"default": 0, "warn": 1, "error": 2}
    if isinstance(debug_mode, str):
        if debug_mode not in names:
            raise RuntimeError("invalid value of debug_mode, expected one of `default`, `warn`, `error`, "
                               f"but got {debug_mode}")
        debug_mode = names[debug_mode]
    if not isinstance(debug_mode, int) or isinstance(debug_mode, bool):
        raise TypeError(f"debug_mode must be str or int, but got {type(debug_mode)}")
    if debug_mode not in (0, 1, 2):
        raise RuntimeError(f"invalid value of debug_mode, expected 0, 1, or 2, but got {debug_mode}")
    use_deterministic_algorithms(debug_mode > 0, warn_only=debug_mode == 1)
