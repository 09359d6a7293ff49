"""torch's CPU float32 kernels, step by step: the same numbers, last bit included.

NumPy's float32 ``exp`` or ``tanh`` is its own SIMD code, and differs from torch's in the last bit
for a third of the elements; over a training run such differences grow. torch 2.x on x86 (the
pip wheels, built with MKL) computes its float32 elementwise math in two places:

* **Intel MKL's vector math (VML, "HA" mode)** for ``exp``, ``log``, ``log2``, ``log10``, ``tanh``,
  ``sin``, ``cos``, ``tan``, ``asin``, ``acos``, ``atan``, ``sqrt``, ``erf``, ``erfc`` (``at::vml``;
  float64 too). MKL's code is closed; its float32 results are the correctly rounded ones except for
  0.1% (``tanh``, ``log2``) to 18% (``sqrt``, ``tan``) of the elements. ``vml`` computes in float64
  and rounds once: the closest an open formula gets (NumPy's float32 ``exp`` was off in 39%). ``sqrt`` is
  the exception: on Intel CPUs with AVX-512 MKL's float32 and float64 roots are an rsqrt14 estimate refined,
  which ``mkl_sqrt`` computes the same way (matched bit for bit against torch; round 27).
* **SLEEF and ATen's own vectorized formulas** for the rest, ported here function by function
  (``sleef_exp``, ``sleef_expm1``, ``sleef_tanh``, ``sleef_log1p``: not correctly rounded, so only
  the same steps give the same numbers): ``sigmoid`` ``1 / (1 + exp(-x))``, ``silu`` ``x / (1 +
  exp(-x))``, ``torch.expm1`` and ``torch.log1p``, elu/selu/celu over expm1, ``softplus``
  ``log1p(exp(x))``, ``mish`` ``x tanh(log1p(exp(x)))``, gelu's tanh form. SLEEF's pow, sinh, cosh,
  exp2, atanh are left to ``vml``'s correctly rounded result (94-99.9% equal); ``power`` for pow.

A fused multiply-add ``fma(a, b, c)`` (one rounding) is computed as the float64 product (exact for
float32 factors) plus ``c`` in float64, rounded to float32: exact except when the float64 sum lands
on a float32 rounding midpoint, which 40 million test values never hit. (GCC also fuses ``a * b + c``
in ATen's vector code: gelu's ``x + kappa x^3`` is one.) SLEEF's exp, the one sigmoid and silu run,
rounds each of its fused multiply-adds exactly instead (``_HORNER_STEPS``), in ~35 NumPy passes over
cache-sized blocks: 5-8x the time of NumPy's float32 ``1 / (1 + exp(-x))``, the same bits as the step-by-step port
for all 2^32 float32 inputs (checked).
SLEEF's expm1, tanh and log1p carry their value in double-float (~48 bits) and round once at the end:
they run as SLEEF's formula evaluated in float64 (its float32 steps exact) and rounded, the step-by-step
port only on the ~0.1% of elements whose value lies near a float32 rounding midpoint (``_modelled``):
~10 ns an element instead of 35-100, the same bits for every float32 input (checked).
This NumPy code is the reference; where a C compiler is found, the same steps run compiled
(``minilora/native/float32_kernels.c``, scalar C with ``fmaf`` where SLEEF fuses, vectorized by GCC),
each torch formula (sigmoid, silu, elu, softplus, mish, gelu's tanh form) in one pass: 4-9x faster on a
million elements, the same bits (``native_available()`` says which runs; ``MINILORA_NATIVE=0`` or
``numpy_port()`` picks the NumPy code).

torch's elementwise loop (``cpu_kernel_vec``) runs the vectorized formula on two vectors at a time
(32 elements with AVX-512, 16 with AVX2: ``CPU_CAPABILITY``, below) and the scalar one on the last
``n % 32`` (``n % 16``) elements of each row (``scalar_positions``: of each thread's chunk of a contiguous
array, ``scalar_tail``), and on every element of an input not contiguous along its innermost dimension
(``x[::2]``: basic_loop). There it calls C's ``expf``, ``expm1f``, ``tanhf``, ``log1pf``, ``erff``: the C
library's own, which minilora calls too (``c_function``; glibc's are not correctly rounded in 0.04% (expf)
to ~8% (expm1f, tanhf) of elements). ``torch.expm1``/``log1p`` map the vector function over every element, no
tail. torch's "default" build (no SIMD, ``ATEN_CPU_CAPABILITY=default``) calls C's functions on every element
and fuses no multiply-add: the models here follow it. F.gelu's exact form is oneDNN's kernel for a contiguous
input (``gelu_erf``: its AVX-512 minimax erf ported; its AVX2 formula is not), and so is its gradient
(``onednn_gelu_erf_derivative``; ATen's ``aten_gelu_erf_derivative`` for the other inputs).
Not reproduced: MKL's own errors, softmax/log_softmax (ATen's exp_u20 and lane-ordered sums), logsigmoid, erfinv.

float64 follows the same two places. MKL's VML computes torch.exp, log, log2, log10, sqrt, sin, cos, tan, asin,
acos, atan, tanh, erf, erfc, erfinv and lgamma (contiguous and strided alike; NumPy's or C's stand in, 0.1-68% of
elements an ulp off: tanh 20%, erfc 16%, lgamma 68%). The rest are ``Vectorized<double>``'s SLEEF functions in
vectors of 8 doubles (``FLOAT_LANES`` elements a step) and C's double function in the scalar lambda (``loop64``,
``c_function64``): ported ``sleef_exp64``, ``sleef_exp2_64``, ``sleef_expm1_64``, ``sleef_log1p64``,
``sleef_hyperbolic64`` (sinh, cosh, tanh), ``sleef_atanh64``, ``sleef_erf64``, ``sleef_atan2_64``,
``sleef_hypot64``, ``sleef_pow64``, bit for bit, in NumPy (their fused multiply-adds by ``fused_multiply_add64``)
and the same steps compiled (float32_kernels.c's ``ml_exp64``, ``ml_sleef64``, ``ml_sleef64_2``: 10-60x faster,
the same bits); SLEEF's double log is not (NumPy's stands in). ``tests/float64_bits_sweep.py`` counts what is
left.
"""
import functools
import contextlib
import ctypes
import ctypes.util
import math
import os
import platform
import warnings

import numpy as np

from . import gemm_pool, mkl_vml, native, parallel
from .device import CHUNK, cache_slices, xp_of

__all__ = ["torch_cpu_capability", "CPU_CAPABILITY", "FLOAT_LANES", "FUSED_MULTIPLY_ADD", "vectorized", "vml",
           "correctly_rounded", "power", "power64", "sleef_exp", "sleef_exp2", "sleef_expm1", "loop_expm1",
           "scalar_tail", "loop_exp", "loop64", "vectorized64", "sleef_log1p64", "sleef_exp2_64", "sleef_expm1_64",
           "softplus64",
           "sleef_hyperbolic64", "sleef_atanh64", "sleef_erf64", "gelu_erf64", "gelu_erf_derivative64", "sleef_tanh",
           "loop_tanh", "gelu_tanh",
           "sleef_log1p", "softplus", "mish", "sigmoid", "logaddexp", "logaddexp2", "logaddexp64", "c_function",
           "c_function64", "scalar_positions", "gelu_erf", "onednn_gelu_erf", "onednn_gelu_erf_derivative",
           "aten_gelu_erf_derivative", "onednn_runs_gelu_erf", "aten_erf", "ONEDNN_AVX512", "pointwise", "sleef_log",
           "c_function2", "binary_loop", "atan2", "atan2_64", "sleef_atan2_64", "hypot64", "sleef_hypot64",
           "pow_loop64", "sleef_pow64", "silu_and_sigmoid", "relooped", "SIGMOID", "MISH_TANH", "GELU_TANH",
           "fused_multiply_add", "fused_multiply_add64", "two_sum", "two_product", "fused_multiply_add_block",
           "multiply_add_into", "in_cache_slices", "native_available", "numpy_port", "elu", "elu_backward",
           "softplus_backward", "mish_backward", "gelu_tanh_backward", "silu_backward_natively", "swiglu",
           "swiglu_backward", "rotary", "rotary_backward", "rotary_compiles"]

_F32, _F64 = np.float32, np.float64


def _on_flat_doubles(function):
    """``function`` (of float64 arrays, and strings passed through) run on its arrays broadcast, C-ordered and
    flattened, its answer in their shape (a 0-d array's NumPy results are scalars, which take no item assignment)."""
    @functools.wraps(function)
    def run(*args):
        shape = np.broadcast_shapes(*(np.shape(a) for a in args if not isinstance(a, str)))
        flat = [a if isinstance(a, str) else np.ascontiguousarray(np.broadcast_to(np.asarray(a, _F64), shape))
                .reshape(-1) for a in args]
        return function(*flat).reshape(shape)
    return run


# ---- which CPU torch thinks it runs on, and what that changes ------------------------------------
def cpu_features():
    """NumPy's table of this CPU's features (``{"AVX512F": True, ...}``)."""
    try:
        from numpy._core._multiarray_umath import __cpu_features__ as features
    except ImportError:  # (NumPy 1.x)
        from numpy.core._multiarray_umath import __cpu_features__ as features
    return features


def torch_cpu_capability(environ=None, features=None):
    """The instruction set torch's CPU kernels run (``torch.backends.cpu.get_cpu_capability()``, lower
    case), chosen as ATen's ``compute_cpu_capability`` does: ``ATEN_CPU_CAPABILITY`` if it is exactly
    ``"avx512"``, ``"avx2"`` or ``"default"`` (another value is ignored, with torch's warning), else the
    CPU's features: AVX-512 with its VL, BW and DQ extensions and FMA, then AVX2 with FMA, else none.
    The features are NumPy's table of them (no torch import); a CPU that is not x86 gets ``"default"``
    (minilora models no ARM or POWER kernels)."""
    environ = os.environ if environ is None else environ
    chosen = environ.get("ATEN_CPU_CAPABILITY")
    if chosen in ("avx512", "avx2", "default"):
        return chosen
    if chosen is not None:
        warnings.warn(f"ignoring invalid value for ATEN_CPU_CAPABILITY: {chosen}")
    features = cpu_features() if features is None else features
    if all(features.get(f) for f in ("AVX512VL", "AVX512BW", "AVX512DQ", "FMA3")):
        return "avx512"
    if features.get("AVX2") and features.get("FMA3"):
        return "avx2"
    return "default"


# What the capability changes in the kernels modelled here (torch reads it once, at its first kernel;
# minilora at import). "default" is torch's build for any x86-64: no SIMD intrinsics, and its
# Vectorized<float>::exp (expm1, log1p, tanh) is C's function element by element (c_function), and no fused
# multiply-add.
CPU_CAPABILITY = torch_cpu_capability()
FLOAT_LANES = 16 if CPU_CAPABILITY == "avx512" else 8  # Vectorized<float>::size(): a 64- or 32-byte vector
FUSED_MULTIPLY_ADD = CPU_CAPABILITY != "default"  # GCC fuses a * b + c only where the build targets FMA


def cpu_vendor():
    """``"GenuineIntel"``, ``"AuthenticAMD"``, ... from /proc/cpuinfo (Linux), or ``""``: MKL takes other code paths
    on other vendors' CPUs, so a model of MKL's bits says where it was matched."""
    try:
        with open("/proc/cpuinfo") as info:
            head = info.read(4096)
    except OSError:
        return ""
    return next((vendor for vendor in ("GenuineIntel", "AuthenticAMD") if vendor in head), "")


def _mkl_sqrt_cpu():
    """An Intel CPU with AVX-512: where MKL's float32 sqrt (torch's) was matched bit for bit (``mkl_sqrt``)."""
    return (cpu_vendor() == "GenuineIntel" and bool(cpu_features().get("AVX512F"))
            and platform.machine() in ("x86_64", "AMD64"))


MKL_SQRT_CPU = _mkl_sqrt_cpu()


# ---- the compiled kernels: these SLEEF ports in C (minilora/native/float32_kernels.c) ----------------
# The NumPy code below is the reference a learner reads; native/float32_kernels.c writes the same steps
# scalar in C (fmaf() where SLEEF fuses), compiled on first use (minilora/native: cached, loaded with
# ctypes, which gives up the GIL during a call, so parallel's threads split big arrays): 5-9x faster.
# It runs wherever it builds; without a C compiler, where the build fails, under MINILORA_NATIVE=0 or
# inside ``numpy_port()``, the NumPy code runs: the same bits either way (tests/test_native_float32_r11.py).
_native_state = {"library": None, "tried": False, "off": False}  # off: inside numpy_port()


# Each kernel's arguments: p a float32 array (its address), n the element count, f a float, s a step.
_C_TYPES = {"p": ctypes.c_void_p, "n": ctypes.c_size_t, "f": ctypes.c_float, "s": ctypes.c_size_t,
            "i": ctypes.c_int}
_NATIVE_SIGNATURES = {
    **dict.fromkeys(("ml_exp", "ml_exp_of_negative", "ml_expm1", "ml_tanh", "ml_log1p", "ml_log", "ml_sigmoid",
                     "ml_sinh", "ml_cosh", "ml_atanh", "ml_lgamma"), "ppn"),
    "ml_silu": "pppn", "ml_pow": "pppn", "ml_pow_scalar": "ppnf", "ml_atan2": "pppn", "ml_elu": "ppnfff", "ml_softplus": "ppnff", "ml_mish": "pppn", "ml_gelu_tanh": "pppnff",
    "ml_fma": "pspspspn", "ml_fma64": "pspspspn", "ml_fma_chain": "pppnnn", "ml_silu_backward": "ppppn", "ml_elu_backward": "pppnfff", "ml_softplus_backward": "pppnff",
    "ml_gelu_tanh_backward": "ppppnff", "ml_mish_backward": "ppppn", "ml_swiglu": "ppppn",
    "ml_swiglu_backward": "ppppppn", "ml_c_function": "ippn",
    "ml_gelu_erf_onednn": "ppnp", "ml_gelu_erf_onednn_derivative": "ppn", "ml_c_function2": "ipspspn", "ml_c_function64": "ippn",
    "ml_c_function2_64": "ipspspn",
    "ml_bf16_pair_products": "ppppnnnn", "ml_sequential_products": "ppppnnnn", "ml_amx_tile_products": "ppppnnnn", "ml_half_dot_products": "pppnnn", "ml_lanes4_products": "pppnnn", "ml_one_row_values": "pppnnin", "ml_row_max": "ppnn", "ml_rotary": "ppppppn",
    "ml_rotary_backward": "ppppppn", "ml_adamw": "ppppnifffffffii", "ml_mkl_sqrt": "ppn",
    "ml_mkl_sqrt64": "ppn", "ml_exp64": "ppn", "ml_sleef64": "ippn", "ml_lgamma_constants": "ip", "ml_sleef64_2": "ipppn", "ml_mkl_sdot": "pppn", "ml_mkl_ddot": "pppn",
    "ml_mkl_dgemv_rows": "pppnn", "ml_mkl_sgemv_rows": "pppnn", "ml_flash_exp_sum": "pppnnn",
    "ml_flash_exp_sum64": "pppnnn", "ml_flash_backward": "p" * 14, "ml_flash_backward64": "p" * 14,
    "ml_flash_forward": "p" * 10, "ml_flash_forward64": "p" * 10, "ml_flash_scalar_loops": "i"}
_NATIVE_RESULTS = {"ml_row_max": ctypes.c_int, "ml_adamw": ctypes.c_int}  # (the others return nothing)
# The kernels with a ``<name>_blocks`` twin in float32_kernels.c: the kernel on a block of elements (RoPE's: of rows),
# ``f(args, first, last)``, which gemm_pool's C threads call on each thread's block (``_native_map``, ``rotary``).
_BLOCK_KERNELS = ("ml_sinh", "ml_cosh", "ml_atanh", "ml_lgamma", "ml_log", "ml_exp", "ml_exp_of_negative", "ml_expm1",
                  "ml_tanh", "ml_log1p", "ml_sigmoid", "ml_gelu_erf_onednn_derivative", "ml_pow", "ml_atan2", "ml_silu",
                  "ml_mish", "ml_swiglu", "ml_silu_backward", "ml_mish_backward", "ml_swiglu_backward", "ml_rotary",
                  "ml_rotary_backward")


class _BlockArgs(ctypes.Structure):  # float32_kernels.c's block_args
    _fields_ = [("arrays", ctypes.c_void_p * 6), ("sizes", ctypes.c_void_p), ("steps", ctypes.c_void_p),
                ("d", ctypes.c_size_t)]


def _native_library():
    """The compiled kernels' ctypes library, or None (not built, or inside ``numpy_port()``)."""
    if _native_state["off"]:
        return None
    if not _native_state["tried"]:
        library = native.load(native.FLOAT32_KERNELS)
        if library is not None:
            for name, arguments in _NATIVE_SIGNATURES.items():
                getattr(library, name).argtypes = [_C_TYPES[a] for a in arguments]
                getattr(library, name).restype = _NATIVE_RESULTS.get(name)
            for name in _BLOCK_KERNELS:
                blocks = getattr(library, name + "_blocks")
                blocks.argtypes, blocks.restype = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64], None
        _native_state.update(library=library, tried=True)
    return _native_state["library"]


def native_available():
    """Whether torch's SLEEF kernels run compiled (True) or as the NumPy port (False: no C compiler, a
    failed build -- ``minilora.native.why_unavailable`` says why -- or ``MINILORA_NATIVE=0``). Same bits."""
    return _native_library() is not None


@contextlib.contextmanager
def numpy_port():
    """Within the block the NumPy port runs instead of the compiled kernels (in every thread: parallel's
    helpers too): the reference the tests compare them with."""
    before = _native_state["off"]
    _native_state["off"] = True
    try:
        yield
    finally:
        _native_state["off"] = before


def _native_map(kernel, arrays, *numbers):
    """``kernel(*arrays, n, *numbers)`` for flat C-contiguous float32 arrays of n elements (its inputs,
    then its outputs; None for an output not wanted), split across threads where big: gemm_pool's C threads
    for a kernel with a ``_blocks`` twin (``_BLOCK_KERNELS``: a hand-over of microseconds), else ``parallel``'s."""
    if not numbers and kernel.__name__ in _BLOCK_KERNELS:
        args = _BlockArgs(arrays=(ctypes.c_void_p * 6)(*[None if a is None else native.address(a) for a in arrays]))
        blocks = getattr(_native_state["library"], kernel.__name__ + "_blocks")  # (loaded: kernel is its)
        parallel.kernel_rows(arrays[0].size, gemm_pool.RowKernel(blocks, args), work_per_row=2)
        return

    def call(*parts):
        kernel(*(None if a is None else native.address(a) for a in parts), parts[0].size, *numbers)
    parallel.rows(call, *arrays, work_per_row=2)


def row_max(a):
    """``a.max(axis=-1, keepdims=True)``, the same bits: softmax's shift. NumPy's max along the contiguous
    axis of short rows is slow (~0.5 ns an element on rows of 128, twice its sum); a C-contiguous float32
    array goes through the compiled ``ml_row_max`` (~4x faster) unless a row holds a NaN or has a zero max
    (NumPy's choice of NaN, or of -0 or +0, is its own): then, or for any other array, NumPy's max."""
    library = _native_library()
    if (library is None or type(a) is not np.ndarray or a.dtype != _F32 or not a.flags.c_contiguous
            or a.ndim == 0 or a.shape[-1] == 0):
        return a.max(axis=-1, keepdims=True)
    out = np.empty(a.shape[:-1] + (1,), _F32)
    if library.ml_row_max(native.address(a), native.address(out), a.size // a.shape[-1], a.shape[-1]):
        return a.max(axis=-1, keepdims=True)
    return out


def rotary_compiles(x, cos, sin, out):
    """Whether ``rotary`` takes these arrays: float32 NumPy arrays [B, H, T, D] of one shape, D even and
    contiguous, any steps along B, H, T (a transposed [B, T, H, D] view, a broadcast ``cos``), ``out`` writable
    and apart from the inputs (written in place, a row would be read after some of it was written), and at
    least ROTARY_FROM elements (a decoded token's: the NumPy passes, whose Python is cheaper than these checks)."""
    arrays = (x, cos, sin, out)
    return (x.ndim == 4 and x.size >= ROTARY_FROM and not x.shape[3] % 2 and _native_library() is not None
            and all(type(a) is np.ndarray and a.dtype == _F32 and a.shape == x.shape and a.strides[3] == 4
                    and not any(step % 4 for step in a.strides) for a in arrays)
            and out.flags.writeable and not any(np.may_share_memory(out, a) for a in arrays[:3]))


ROTARY_FROM = 4096


def rotary(x, cos, sin, out):
    """RoPE's forward ``out[...] = x * cos + rotate_half(x) * sin`` in one compiled pass (``ml_rotary``) over
    arrays that ``rotary_compiles`` took, blocks of their first axis in gemm_pool's C threads: the same bits as
    ops/nn.py's five NumPy passes (each product rounded, then the sum), ~3x faster."""
    _rows_natively("ml_rotary", x, cos, sin, out)


def rotary_backward(g, cos, sin, out):
    """RoPE's backward ``out[...] = g * cos + R^T (g * sin)`` (``R^T [t1, t2] = [t2, -t1]``, rotate_half's
    transpose) in one compiled pass (``ml_rotary_backward``) over arrays that ``rotary_compiles`` took: the same bits
    as ops/nn.py's NumPy passes (each product rounded, then the sum)."""
    _rows_natively("ml_rotary_backward", g, cos, sin, out)


def _rows_natively(name, x, cos, sin, out):
    """Run the RoPE kernel ``name`` on [B, H, T, D] arrays (the sizes of the rows (b, h, t) and each array's steps
    in floats), blocks of B in gemm_pool's C threads where that pays: from [4, 128, 64] per batch row on 2 threads
    (2 vCPUs of an Intel Xeon, medians, real-time priority: [8, 4, 128, 64] 106 us whole, ~60 us split)."""
    sizes = np.array(x.shape[:3], np.uintp)
    steps = np.array([a.strides[k] // 4 for a in (x, cos, sin, out) for k in range(3)], np.intp)
    args = _BlockArgs(arrays=(ctypes.c_void_p * 6)(*map(native.address, (x, cos, sin, out))),
                      sizes=native.address(sizes), steps=native.address(steps), d=x.shape[3])
    blocks = getattr(_native_state["library"], name + "_blocks")  # (loaded: rotary_compiles said so)
    parallel.kernel_rows(len(x), gemm_pool.RowKernel(blocks, args), work_per_row=x[0].size // 2)


def _natively(name, x):
    """``name``'s compiled kernel of a float32 array (in C order, of x's shape), or None without them."""
    library = _native_library()
    if library is None:
        return None
    x = np.asarray(x, _F32)
    out = np.empty(x.shape, _F32)
    _native_map(getattr(library, name), [np.ascontiguousarray(x).reshape(-1), out.reshape(-1)])
    return out


def _loop_natively(name, inputs, outputs, numbers, scalar_formula):
    """A torch elementwise loop's whole formula as the compiled kernel ``name`` (``name(*inputs, *outputs, n,
    *numbers)``) over every element of C-contiguous float32 arrays of one shape, then at torch's scalar tail's
    positions (``scalar_tail``) ``scalar_formula(*the inputs' elements there)``, the formula with C's
    functions (a tuple, one per output; None: a formula with no C function). Returns ``outputs`` (new C-contiguous arrays of that shape), or None
    where the NumPy code must run: no compiled kernels, another layout (NumPy's result layout is kept there),
    or torch's "default" build (all of it its scalar loop)."""
    library = _native_library()
    shape = np.shape(inputs[0])
    if library is None or CPU_CAPABILITY == "default" or not all(
            type(x) is np.ndarray and x.dtype == _F32 and x.shape == shape for x in inputs) or not all(
            out.flags.c_contiguous for out in outputs):
        return None
    if not all(x.flags.c_contiguous for x in inputs):  # (torch's loop by their layout: scalar_positions)
        if scalar_formula is None:
            return None
        tails = scalar_positions(*inputs)
        inputs = [np.ascontiguousarray(x) for x in inputs]
    else:
        tails = scalar_positions(inputs[0]) if scalar_formula is not None else ()
    flat_inputs, flat_outputs = [x.reshape(-1) for x in inputs], [out.reshape(-1) for out in outputs]
    if scalar_formula is None or flat_inputs[0].size >= _VECTOR_STEP:
        _native_map(getattr(library, name), [*flat_inputs, *flat_outputs], *numbers)
    for where in tails:
        if np.size(flat_inputs[0][where]):
            for out, value in zip(flat_outputs, scalar_formula(*(x[where] for x in flat_inputs))):
                out[where] = value
    return outputs


_C_FUNCTIONS = ("expf", "expm1f", "log1pf", "tanhf", "exp2f", "erff", "logf", "sinhf", "coshf", "asinhf", "acoshf",
                "atanhf", "sinf")  # (ml_c_function's numbering)
_libm = {}


def c_function(name, x):
    """C's float function ``name`` (``"expf"``, ``"expm1f"``, ``"log1pf"``, ``"tanhf"``, ``"exp2f"``, ``"erff"``,
    ``"logf"``) of a float32 array: the C library's own, which torch's scalar lambdas call (``std::exp`` of a
    float): in the scalar tail of its loop, on a non-contiguous input (``scalar_positions``) and in its "default"
    build. glibc's are not correctly rounded in 0.04% (expf) to ~8% (expm1f, tanhf) of elements, so no formula
    here stands in for them. Compiled where it can be (one C loop), else each element through ctypes."""
    x = np.asarray(x, _F32)
    out = np.empty(x.shape, _F32)
    x = np.ascontiguousarray(x)  # (a 0-d x: 1-d here, out keeps its shape)
    library = _native_library()
    if library is not None:
        library.ml_c_function(_C_FUNCTIONS.index(name), native.address(x), native.address(out), x.size)
        return out
    if name not in _libm:
        import ctypes.util
        function = getattr(ctypes.CDLL(ctypes.util.find_library("m") or ctypes.util.find_library("c")), name)
        function.restype, function.argtypes = ctypes.c_float, [ctypes.c_float]
        _libm[name] = np.frompyfunc(function, 1, 1)
    if x.size:
        out[...] = _libm[name](x).reshape(out.shape)
    return out


_C_FUNCTIONS64 = ("exp", "exp2", "log1p", "sin", "log", "asinh", "acosh", "sinh", "cosh",
                  "atanh", "expm1", "tanh", "erf")  # (ml_c_function64's numbering)


def c_function64(name, x):
    """C's double function ``name`` (one of ``_C_FUNCTIONS64``) of a float64 array, as ``c_function``:
    the C library's own, which torch's float64 scalar lambdas call (NumPy's float64 exp2 and log1p are its own
    SIMD code, ~5% of elements an ulp off glibc's)."""
    x = np.asarray(x, _F64, order="C")  # (a 0-d array stays 0-d)
    out = np.empty(x.shape, _F64)
    library = _native_library()
    if library is not None:
        library.ml_c_function64(_C_FUNCTIONS64.index(name), native.address(x), native.address(out), x.size)
        return out
    key = name + "/double"
    if key not in _libm:
        import ctypes.util
        function = getattr(ctypes.CDLL(ctypes.util.find_library("m") or ctypes.util.find_library("c")), name)
        function.restype, function.argtypes = ctypes.c_double, [ctypes.c_double]
        _libm[key] = np.frompyfunc(function, 1, 1)
    if x.size:
        out[...] = _libm[key](x)
    return out


_C_FUNCTIONS2 = ("powf", "atan2f")  # (ml_c_function2's numbering)
_C_FUNCTIONS2_64 = ("pow", "atan2")  # (ml_c_function2_64's)


def c_function2(name, x, y):
    """C's two-argument float function ``name`` (``"powf"``, ``"atan2f"``; the double ``"pow"``, ``"atan2"``) of
    float32 (float64) arrays or numbers (broadcast), as ``c_function``: the C library's own, which torch's scalar
    code calls (NormOps' ``std::pow``)."""
    double = name in _C_FUNCTIONS2_64
    dtype, ctype = (_F64, ctypes.c_double) if double else (_F32, ctypes.c_float)
    x, y = np.asarray(x, dtype), np.asarray(y, dtype)
    out = np.empty(np.broadcast_shapes(x.shape, y.shape), dtype)
    library = _native_library()
    if library is not None:
        operands = [np.ascontiguousarray(np.broadcast_to(v, out.shape)) if v.size > 1 else v.reshape(1)
                    for v in (x, y)]
        (fx, sx), (fy, sy) = [(v, 1 if v.size > 1 else 0) for v in operands]
        compiled, names = (library.ml_c_function2_64, _C_FUNCTIONS2_64) if double else \
            (library.ml_c_function2, _C_FUNCTIONS2)
        compiled(names.index(name), native.address(fx), sx, native.address(fy), sy, native.address(out), out.size)
        return out
    if name not in _libm:
        function = getattr(ctypes.CDLL(ctypes.util.find_library("m") or ctypes.util.find_library("c")), name)
        function.restype, function.argtypes = ctype, [ctype, ctype]
        _libm[name] = np.frompyfunc(function, 2, 1)
    if out.size:
        out[...] = _libm[name](x, y)
    return out


def binary_loop(a, b, vectorized, scalar_name, step=None, dtype=_F32):
    """A torch float32 binary kernel whose vectorized lambda is SLEEF's function (``vectorized``: a stand-in of
    the broadcast arrays) and whose scalar one is C's ``scalar_name`` (``c_function2``; or a NumPy function that
    computes the same), on each row's tail and on every element of operands strided along their innermost dim
    (``scalar_positions``; ``step``: the vectorized loop's). C order. (``dtype`` float64: a double kernel.)"""
    a, b = np.broadcast_arrays(np.asarray(a, dtype), np.asarray(b, dtype))
    out = np.array(vectorized(a, b), dtype, order="C")  # (a 0-d result stays 0-d)
    flat, flat_a, flat_b = out.reshape(-1), np.ascontiguousarray(a).reshape(-1), np.ascontiguousarray(b).reshape(-1)
    for where in scalar_positions(a, b, step=step or _VECTOR_STEP):
        if flat_a[where].size:
            scalar = scalar_name if callable(scalar_name) else functools.partial(c_function2, scalar_name)
            flat[where] = scalar(flat_a[where], flat_b[where])
    return out


_FMOD_STEP = 16  # fmod's kernel is REGISTER_DISPATCH'ed: AVX2's build on AVX-512 too, two vectors of 8 floats


def fmod(a, b, step=_FMOD_STEP):
    """torch's float32 ``fmod`` (and the fmod inside ``remainder``; its 16-bit kernels' too, on their float32
    values with ``step=HALF_STEP``): SLEEF's ``fmodf`` in the vectorized body, C's exact ``fmodf`` in the scalar
    tail and on strided operands (``binary_loop``). The two agree but where SLEEF's first quotient overflows."""
    if CPU_CAPABILITY == "default":
        with np.errstate(all="ignore"):
            return np.fmod(np.asarray(a, _F32), np.asarray(b, _F32))
    return binary_loop(a, b, sleef_fmod, np.fmod, step=step)  # (C's fmodf is exact: NumPy's fmod)


def sleef_fmod(a, b):
    """SLEEF's ``fmodf``: exact, as C's, but NaN where its first quotient overflows: it scales a subnormal
    divisor and |a| by 2^25, takes the reciprocal of |b| rounded toward zero, and its first step's quotient
    trunc(prev(|a|) * (1 / |b|)) (``toward0f``: one ulp toward zero) becomes inf beyond FLT_MAX -- |a| / |b| past
    ~3.4e38 (bfloat16's fmod(239616, 7e-34); torch's NaN, C's the remainder)."""
    a, b = np.asarray(a, _F32), np.asarray(b, _F32)
    with np.errstate(all="ignore"):
        exact = np.fmod(a, b)
        nu, de = np.abs(a), np.abs(b)
        tiny = de < _F32(np.finfo(_F32).tiny)
        nu, de = np.where(tiny, nu * _F32(2 ** 25), nu), np.where(tiny, de * _F32(2 ** 25), de)
        reciprocal = (1 / de.astype(_F64))
        rde = reciprocal.astype(_F32)
        rde = np.where(rde.astype(_F64) > reciprocal, np.nextafter(rde, _F32(0)), rde)  # (rounded toward zero)
        first = np.trunc(np.nextafter(nu, _F32(0)) * rde)
        overflows = np.isinf(first) & (nu >= de) & (de != 0)
    return np.where(overflows, _F32(np.nan), exact)


def atan2(a, b, step=None):
    """torch's float32 ``atan2``: SLEEF's ``atan2f_u10`` in the vectorized body (``sleef_atan2``; under torch's
    "default" build C's), C's ``atan2f`` in the scalar tail and on strided operands (``step``: the 16-bit kernel's
    ``HALF_STEP``)."""
    vectorized = (lambda a, b: c_function2("atan2f", a, b)) if CPU_CAPABILITY == "default" else sleef_atan2
    return binary_loop(a, b, vectorized, "atan2f", step=step)


# ---- Sleef_atan2f16_u10 (SLEEF's xatan2f_u1) ----------------------------------------------------------------
# atan(y / x) = q pi/2 + s + s t p(t) with s = min/max of |y|, |x| as a double-float quotient, t = s^2 and p a
# degree-8 polynomial in t's high part; the quadrant's q pi/2 added in double-float; then IEEE's special cases.
_ATAN2_U = [_F32(c) for c in (-0.00176397908944636583328247, 0.0107900900766253471374512, -0.0309564601629972457885742,
                              0.0577365085482597351074219, -0.0838950723409652709960938, 0.109463557600975036621094,
                              -0.142626821994781494140625, 0.199983194470405578613281)]
_HALF_PI = _F32(np.pi / 2)


def atan2_64(a, b):
    """torch's float64 ``atan2``: SLEEF's ``atan2d8_u10`` in vectors of 8 (``sleef_atan2_64``), C's ``atan2`` in the
    scalar lambda (the tail, strided operands)."""
    vectorized = functools.partial(c_function2, "atan2") if CPU_CAPABILITY == "default" else sleef_atan2_64
    return binary_loop(a, b, vectorized, "atan2", step=FLOAT_LANES, dtype=_F64)


def _mulsign(a, b):
    """SLEEF's mulsign: a with its sign flipped where b's sign bit is set."""
    return a * np.copysign(_F32(1), b)


def _sleef_atan2k(y, x):
    """SLEEF's ``atan2kf_u1`` of float32 y >= 0 and x: the angle as a double-float."""
    q = np.where(x < 0, _F32(-2), _F32(0))
    x = np.abs(x)
    swap = x < y
    q = np.where(swap, q + _F32(1), q)
    zero = np.zeros_like(y)
    s = _df_divide((np.where(swap, -x, y), zero), (np.where(swap, y, x), zero))
    t = _df_square(s)
    hi = t[0] + t[1]  # dfnormalize
    t = hi, (t[0] - hi) + t[1]
    u = np.full_like(y, _ATAN2_U[0])
    for c in _ATAN2_U[1:]:
        u = _fma32(u, t[0], c)
    t = _df_mul(t, _df_two_sum_fast(_F32(-0.333332866430282592773438), u * t[0]))
    hi = _F32(1) + t[0]
    t = _df_mul(s, (hi, ((_F32(1) - hi) + t[0]) + t[1]))
    return _df_add(_df_mul_float((_F32(1.5707963705062866211), _F32(-4.3711388286737928865e-08)), q), t)


def _df_two_sum_fast(x, y):
    """x + y of two floats, |x| >= |y|, as a double-float (SLEEF's dfadd_vf2_vf_vf)."""
    hi = x + y
    return hi, (x - hi) + y


def sleef_atan2(y, x):
    """``Sleef_atan2f16_u10(y, x)`` of float32 arrays (broadcast); compiled where it can be."""
    y, x = np.broadcast_arrays(np.asarray(y, _F32), np.asarray(x, _F32))
    library = _native_library()
    if library is not None:
        out = np.empty(y.shape, _F32)
        _native_map(library.ml_atan2, [np.ascontiguousarray(v).reshape(-1) for v in (y, x)] + [out.reshape(-1)])
        return out
    with np.errstate(all="ignore"):
        tiny = np.abs(x) < _F32(2.9387372783541830947e-39)  # (both scaled up by 2^24 first)
        xs, ys = np.where(tiny, x * _F32(1 << 24), x), np.where(tiny, y * _F32(1 << 24), y)
        d = _sleef_atan2k(np.abs(ys), xs)
        r = _mulsign(d[0] + d[1], xs)
        r = np.where(np.isinf(x) | (x == 0), _HALF_PI - np.where(np.isinf(x), _mulsign(_HALF_PI, x), _F32(0)), r)
        # (the scaled y, as SLEEF's: a huge y over a tiny x overflows to inf there, and the answer is +-pi/2, not NaN)
        r = np.where(np.isinf(ys), _HALF_PI - np.where(np.isinf(x), _mulsign(_F32(np.pi / 4), x), _F32(0)), r)
        r = np.where(y == 0, np.where(np.signbit(x), _F32(np.pi), _F32(0)), r)
        return np.where(np.isnan(x) | np.isnan(y), _F32(np.nan), _mulsign(r, y)).astype(_F32, copy=False)


# ---- Sleef_atan2d8_u10 (SLEEF's xatan2_u1) -----------------------------------------------------------------
# The float32 one's steps in double-double, its polynomial of degree 19 in t = s^2 by Estrin's scheme.
_ATAN2_64_U = (1.06298484191448746607415e-05, -0.000125620649967286867384336, 0.00070557664296393412389774,
               -0.00251865614498713360352999, 0.00646262899036991172313504, -0.0128281333663399031014274,
               0.0208024799924145797902497, -0.0289002344784740315686289, 0.0359785005035104590853656,
               -0.041848579703592507506027, 0.0470843011653283988193763, -0.0524914210588448421068719,
               0.0587946590969581003860434, -0.0666620884778795497194182, 0.0769225330296203768654095,
               -0.0909090442773387574781907)
_ATAN2_64_HORNER = (0.111111108376896236538123, -0.142857142756268568062339, 0.199999999997977351284817,
                    -0.333333333333317605173818)


def _sleef_atan2k_64(y, x):
    """SLEEF's double ``atan2k_u1`` of y >= 0 and x (doubles): the angle as a double-double."""
    q = np.where(x < 0, -2.0, 0.0)
    x = np.abs(x)
    swap = x < y
    q = np.where(swap, q + 1, q)
    zero = np.zeros_like(y)
    s = _dd_divide64(np.where(swap, -x, y), zero, np.where(swap, y, x), zero)
    t = _dd_square(s)
    hi = t[0] + t[1]  # ddnormalize
    t = hi, (t[0] - hi) + t[1]
    t2 = t[0] * t[0]
    t4 = t2 * t2
    u = _sleef_poly([t[0], t2, t4, t4 * t4], _ATAN2_64_U)
    for c in _ATAN2_64_HORNER:
        u = _fma64_like(u, t[0], c)
    t = _dd_add_fast(s, _dd_mul(_dd_mul(s, t), (u, None)))
    return _dd_add_fast(_dd_mul(_dd_constant(_HALF_PI_DD, q), (q, None)), t)


@_on_flat_doubles
def sleef_atan2_64(y, x):
    """``Sleef_atan2d8_u10(y, x)`` of float64 arrays (broadcast): ``sleef_atan2``'s special cases around
    ``_sleef_atan2k_64``."""
    compiled = _sleef64_natively("atan2", y, x)
    if compiled is not None:
        return compiled
    with np.errstate(all="ignore"):
        tiny = np.abs(x) < 5.5626846462680083984e-309  # (both scaled up by 2^53 first)
        xs, ys = np.where(tiny, x * float(1 << 53), x), np.where(tiny, y * float(1 << 53), y)
        d = _sleef_atan2k_64(np.abs(ys), xs)
        r = _mulsign(d[0] + d[1], xs)
        r = np.where(np.isinf(x) | (x == 0), np.pi / 2 - np.where(np.isinf(x), _mulsign(np.pi / 2, x), 0.0), r)
        r = np.where(np.isinf(ys), np.pi / 2 - np.where(np.isinf(x), _mulsign(np.pi / 4, x), 0.0), r)
        r = np.where(y == 0, np.where(np.signbit(x), np.pi, 0.0), r)
        return np.where(np.isnan(x) | np.isnan(y), np.nan, _mulsign(r, y))


def hypot64(a, b):
    """torch's float64 ``hypot``: SLEEF's ``hypotd8_u05`` in vectors of 8 (``sleef_hypot64``), C's ``hypot``
    (NumPy's float64 hypot calls it) in the scalar lambda (the tail, strided operands)."""
    vectorized = np.hypot if CPU_CAPABILITY == "default" else sleef_hypot64
    return binary_loop(a, b, vectorized, np.hypot, step=FLOAT_LANES, dtype=_F64)


@_on_flat_doubles
def sleef_hypot64(x, y):
    """``Sleef_hypotd8_u05(x, y)`` of float64 arrays: ``max sqrt(1 + (min / max)^2)`` with the quotient, its square,
    the root and the product in double-double (both scaled by 2^54 below the normal range)."""
    compiled = _sleef64_natively("hypot", x, y)
    if compiled is not None:
        return compiled
    x, y = np.abs(x), np.abs(y)
    low, high = np.minimum(x, y), np.maximum(x, y)
    with np.errstate(all="ignore"):
        tiny = high < 2.2250738585072014e-308
        n, d = np.where(tiny, low * 2.0 ** 54, low), np.where(tiny, high * 2.0 ** 54, high)
        zero = np.zeros_like(n)
        t = _dd_divide64(n, zero, d, zero)
        t = _dd_mul(_dd_sqrt(_df_add_float(_dd_square(t), 1.0)), (high, None))
        out = t[0] + t[1]
        out = np.where(np.isnan(out), np.inf, out)
        out = np.where(low == 0, high, out)
        out = np.where(np.isnan(x) | np.isnan(y), np.nan, out)
        return np.where((x == np.inf) | (y == np.inf), np.inf, out)


def _dd_sqrt(d):
    """SLEEF's ``ddsqrt`` (fused multiply-adds): t = sqrt(hi + lo), then (d + t^2) / t / 2 in double-double."""
    t = np.sqrt(d[0] + d[1])
    square = t * t, fused_multiply_add64(t, t, -(t * t))
    inverse = 1 / t
    inverse = inverse, inverse * _fma64_like(-t, inverse, 1.0)
    s = _dd_mul(_df_add(d, square), inverse)
    return s[0] * 0.5, s[1] * 0.5


def pow_loop(a, b):
    """torch's float32 ``pow`` kernels of a tensor exponent (a tensor or number base): ``vectorized_pow`` (SLEEF's
    ``powf_u10``) in the vectorized body, C's ``powf`` in the scalar tail and on strided operands (a number operand
    broadcasts: vectorized)."""
    return binary_loop(a, b, vectorized_pow, "powf")


def pow_scalar_loop(a, exponent):
    """torch's float32 ``tensor ** number`` kernel (an exponent it does not compute by multiplication): SLEEF's pow
    with the exponent as a float32 in the vectorized body, its scalar lambda ``std::pow`` in double (the float32
    base and the exponent as given, rounded once) in the tail and on a strided input. (torch's "default" build: C's
    powf of the float32 exponent here, its vectorized body's; its tail's double pow is not modelled.)"""
    if CPU_CAPABILITY == "default":
        return c_function2("powf", a, _F32(exponent))
    return _in_loop(a, lambda v: vectorized_pow(v, _F32(exponent)),
                    lambda t: np.power(t.astype(_F64), float(exponent)).astype(_F32), layout=a)


def pow_loop64(a, b):
    """torch's float64 ``pow`` kernels (a tensor or number base and exponent): SLEEF's ``powd8_u10``
    (``sleef_pow64``; C's under torch's "default" build) in vectors of 8, C's ``pow`` in the scalar lambda."""
    vectorized = functools.partial(c_function2, "pow") if CPU_CAPABILITY == "default" else sleef_pow64
    return binary_loop(a, b, vectorized, "pow", step=FLOAT_LANES, dtype=_F64)


# SLEEF's double logk and expk (pow's): log|x| and e^d in double-double, their polynomials by Estrin's scheme
_SLEEF_LOGK_POLY = (0.116255524079935043668677, 0.103239680901072952701192, 0.117754809412463995466069,
                    0.13332981086846273921509, 0.153846227114512262845736, 0.181818180850050775676507,
                    0.222222222230083560345903, 0.285714285714249172087875, 0.400000000000000077715612)
_SLEEF_EXPK_POLY = (2.51069683420950419527139e-08, 2.76286166770270649116855e-07, 2.75572496725023574143864e-06,
                    2.48014973989819794114153e-05, 0.000198412698809069797676111, 0.0013888888939977128960529,
                    0.00833333333332371417601081, 0.0416666666665409524128449, 0.166666666666666740681535,
                    0.500000000000000999200722)


def _sleef_logk64(d):
    """SLEEF's double ``logk`` (AVX-512's branch: getexp, getmant) of d > 0: ln d as a double-double."""
    with np.errstate(all="ignore"):
        e = (np.frexp(d * (1 / 0.75))[1] - 1).astype(_F64)
        e = np.where(np.isinf(d), 1024.0, e)
        fraction = np.frexp(d)[0]  # in [0.5, 1)
        m = np.where(fraction < 0.75, fraction * 2, fraction)  # getmant: [0.75, 1.5)
    x = _dd_divide64(*two_sum(-1.0, m), *two_sum(1.0, m))
    x2 = _dd_square(x)
    x4 = x2[0] * x2[0]
    x8 = x4 * x4
    t = _sleef_poly([x2[0], x4, x8, x8 * x8], _SLEEF_LOGK_POLY)
    s = _dd_mul(_dd_constant(_LN2_DD, e), (e, None))
    s = _dd_add_fast(s, (x[0] * 2, x[1] * 2))
    x = _dd_mul(x2, x)
    s = _dd_add_fast(s, _dd_mul(x, _dd_constant(_TWO_THIRDS_DD, e)))
    x = _dd_mul(x2, x)
    return _dd_add_fast(s, _dd_mul(x, (t, None)))


def _sleef_expk64(d):
    """SLEEF's double ``expk``: e^(hi + lo) of a double-double, rounded to a double (0 below -1000)."""
    dq = np.rint((d[0] + d[1]) * 1.442695040888963407359924681001892137426645954152985934135449406931)
    s = _df_add_float(d, dq * -.69314718055966295651160180568695068359375)
    s = _df_add_float(s, dq * -.28235290563031577122588448175013436025525412068e-12)
    hi = s[0] + s[1]  # ddnormalize
    s = hi, (s[0] - hi) + s[1]
    u = _estrin10(s[0], _SLEEF_EXPK_POLY)
    t = _dd_add_fast((np.ones_like(hi), 0.0), s)
    t = _dd_add_fast(t, _dd_mul(_dd_square(s), (u, None)))
    return np.where(d[0] < -1000, 0.0, _times_power_of_two(t[0] + t[1], dq))


@_on_flat_doubles
def sleef_pow64(x, y):
    """``Sleef_powd8_u10(x, y)`` of float64 arrays: ``expk(logk(|x|) y)`` with the sign of an odd integer ``y``
    and IEEE's special cases (C's pow's)."""
    compiled = _sleef64_natively("pow", x, y)
    if compiled is not None:
        return compiled
    with np.errstate(all="ignore"):
        is_int = np.rint(y) == y
        is_odd = is_int & (np.rint(y * 0.5) != y * 0.5)
        d = _dd_mul(_sleef_logk64(np.abs(x)), (y, None))
        result = np.where(d[0] > 709.78271114955742909217217426, np.inf, _sleef_expk64(d))
        result = result * np.where(x > 0, 1.0, np.where(is_int, np.where(is_odd, -1.0, 1.0), np.nan))
        efx = _mulsign(np.abs(x) - 1, y)
        result = np.where(np.isinf(y), np.where(efx < 0, 0.0, np.where(efx == 0, 1.0, np.inf)), result)
        edge = np.where(is_odd, _mulsign(1.0, x), 1.0) * np.where(np.where(x == 0, -y, y) < 0, 0.0, np.inf)
        result = np.where(np.isinf(x) | (x == 0), edge, result)
        result = np.where(np.isnan(x) | np.isnan(y), np.nan, result)
        return np.where((y == 0) | (x == 1), 1.0, result)


def vectorized_pow(a, b):
    """torch's ``Vectorized<float>::pow`` of float32 arrays: SLEEF's ``powf_u10`` (``sleef_pow``); under torch's
    "default" build C's ``powf``."""
    if CPU_CAPABILITY == "default":
        return c_function2("powf", a, b)
    return sleef_pow(a, b)


# torch's float32 kernels of NumPy's functions that are not MKL's (``pointwise``): asinh and acosh map C's function
# over every element (Vectorized<float>::asinh is map(std::asinh)); sinh, cosh, atanh and exp2 run SLEEF's in the
# vectorized body (ported: sleef_exp2, sleef_sinh_or_cosh, sleef_atanh) and C's in the scalar tail and on strided
# inputs.
_C_EVERYWHERE = {"arcsinh": "asinhf", "arccosh": "acoshf"}
_SLEEF_IN_LOOP = {"sinh": "sinhf", "cosh": "coshf", "arctanh": "atanhf", "exp2": "exp2f"}


def pointwise(name, a):
    """NumPy's function ``name`` of an array as torch's kernel computes it: ``_C_EVERYWHERE``'s and
    ``_SLEEF_IN_LOOP``'s for float32 NumPy arrays, else ``vml``'s."""
    if _is_16bit_array(a) and not (a.dtype == np.float16 and name in _NUMPY_FLOAT16):  # (torch's 16-bit kernels:
        return pointwise(name, a.astype(_F32)).astype(a.dtype)  # its float32 lambdas on the widened values, rounded)
    if type(a) is np.ndarray and a.dtype == _F64 and (name in _C_EVERYWHERE or name in _SLEEF_IN_LOOP):
        return _pointwise64(name, a)
    if type(a) is not np.ndarray or a.dtype != _F32 or not (name in _C_EVERYWHERE or name in _SLEEF_IN_LOOP):
        return vml(name, a)
    if name in _C_EVERYWHERE:
        return c_function(_C_EVERYWHERE[name], a)
    vectorized = {"exp2": sleef_exp2, "sinh": lambda v: sleef_sinh_or_cosh(v, cosh=False),
                  "cosh": lambda v: sleef_sinh_or_cosh(v, cosh=True), "arctanh": sleef_atanh}.get(
                      name, lambda v: vml(name, v))
    return _in_loop(a, vectorized, lambda t: c_function(_SLEEF_IN_LOOP[name], t))


def _pointwise64(name, a):
    """``pointwise`` of a float64 array: torch's double kernels are the float32 ones' shapes (C's asinh and acosh on
    every element; SLEEF's sinh, cosh, atanh, exp2 in vectors of 8 doubles, C's in the scalar lambda: ``loop64``)."""
    c_name = _C_EVERYWHERE.get(name, _SLEEF_IN_LOOP.get(name))[:-1]  # (asinhf -> asinh)
    if name in _C_EVERYWHERE:
        return c_function64(c_name, a)
    return loop64(c_name, a)


def correctly_rounded(fn, x):
    """``fn`` (a NumPy ufunc) of a float32 array, computed in float64 and rounded once: torch's MKL
    kernels' result wherever those are correctly rounded (99% of ``exp``'s elements, 83% of ``sqrt``'s)."""
    with np.errstate(over="ignore"):  # (exp: past float32's range, float64's too; the cast gives inf)
        return _in_float64(fn, x)


def _in_float64(fn, a):
    """``fn(a)`` computed in float64, rounded to float32. A large C-contiguous array is cut into blocks
    for ``parallel``'s threads, each through one cache-sized float64 buffer (the same values: the same
    float64 loop on the same numbers). (On one thread no faster than NumPy's ``dtype=`` loop, which
    buffers alike: the float64 function itself is the time, 2.5x (exp) to 5x (tanh) NumPy's float32 one.)"""
    if a.size <= CHUNK or not a.flags.c_contiguous:  # (NumPy's output keeps a view's layout)
        return fn(a, dtype=_F64).astype(_F32)
    out = np.empty(a.shape, _F32)

    def blocks(part, out_part):
        buffer = np.empty(min(part.size, CHUNK), _F64)
        for block, out_block in cache_slices(part, out_part):
            wide = buffer[:block.size]
            wide[...] = block
            fn(wide, out=wide)
            out_block[...] = wide
    parallel.rows(blocks, a.reshape(-1), out.reshape(-1), work_per_row=2)
    return out


# float16 functions whose torch kernel NumPy's float16 loop matches on all 65536 numbers where the float32 model
# rounded does not: sin (torch's float16 sin is not its float32 one rounded, at +-300), arcsin (the float32 model
# is MKL's within an ulp; rounded, 2 numbers off). Measured, torch 2.13 (tests/half_bits_sweep.py).
_NUMPY_FLOAT16 = {"sin", "arcsin"}


def _is_16bit_array(a):
    """A bfloat16/float16 NumPy array (whose value torch's CPU kernels compute in float32)."""
    return type(a) is np.ndarray and (a.dtype == np.float16 or a.dtype.name == "bfloat16")


def vml(name, a):
    """The NumPy function ``name`` (``"exp"``, ``"tanh"``, ...) of an array as torch's MKL kernel
    gives it: MKL's own where MKL is loaded and torch calls it (``mkl_vml``), else as near as an open formula
    gets: float32 correctly rounded, other dtypes (and CuPy arrays) NumPy's own."""
    if _is_16bit_array(a) and not (a.dtype == np.float16 and name in _NUMPY_FLOAT16):  # (float16 exp(0.0073) is
        return vml(name, a.astype(_F32)).astype(a.dtype)  # a float32 tie: rounded from float32, as torch's)
    if name == "sqrt" and type(a) is np.ndarray and a.dtype in (_F32, _F64):
        return mkl_sqrt(a)
    in_mkl = mkl_vml.compute(name, a)  # torch's own MKL function, where MKL is loaded (sin, cos, tanh, log2, ...)
    if in_mkl is not None:
        return in_mkl
    if type(a) is not np.ndarray or a.dtype != _F32:
        return getattr(xp_of(a), name)(a)
    if name == "exp":  # (its float64 result may pass float32's range: inf, as float32's exp, unwarned)
        return correctly_rounded(np.exp, a)
    if name == "sqrt":
        return mkl_sqrt(a)
    return _in_float64(getattr(np, name), a)  # (no np.errstate: it costs ~1 us a call)


def mkl_sqrt(a, out=None):
    """torch's sqrt of a float32 or float64 NumPy array: MKL's, compiled (``ml_mkl_sqrt``, ``ml_mkl_sqrt64``: an
    estimate of 1/sqrt from AVX-512's rsqrt14 refined, not correctly rounded: ~1 root in 150 an ulp off), where it
    was matched (``MKL_SQRT_CPU``: an Intel CPU with AVX-512); elsewhere, and without a compiler, the correctly
    rounded root (NumPy's sqrt is correctly rounded) -- but where MKL is loaded on another CPU, MKL's own vsSqrt
    (``mkl_vml``: torch's there, measured on an AMD Zen 4). Into ``out`` if given."""
    if not MKL_SQRT_CPU and type(a) is np.ndarray and a.size:
        in_mkl = mkl_vml.compute("sqrt", a, out)
        if in_mkl is not None:
            return in_mkl
    library = _native_library()
    if not MKL_SQRT_CPU or library is None or a.size == 0 or a.dtype not in (_FLOAT32, _FLOAT64):
        return np.sqrt(a, out=out) if out is not None else np.sqrt(a)
    source = np.ascontiguousarray(a)
    target = out if out is not None and out.flags.c_contiguous and out.shape == a.shape and out.dtype == a.dtype \
        else np.empty(a.shape, a.dtype)
    kernel = library.ml_mkl_sqrt if a.dtype == _FLOAT32 else library.ml_mkl_sqrt64
    kernel(native.address(source), native.address(target), source.size)
    if out is not None and target is not out:
        out[...] = target
        return out
    return target


# ---- Sleef_powf16_u10 ----------------------------------------------------------------------------------------
# x^y = exp(y log|x|): SLEEF's logkf gives log|x| as a double-float (2 atanh((m - 1) / (m + 1)) + e ln 2, m the
# mantissa in [0.75, 1.5)), times y as a double-float, and expkf takes that pair back to one float (2^q e^s, its
# polynomial in s's high part, the sums in double-float); then the sign and IEEE's special cases. torch's
# Vectorized<float>::pow (AVX2 and AVX-512 builds alike), so its pow kernels' vectorized body.
_LOGKF_T = [_F32(c) for c in (0.240320354700088500976562, 0.285112679004669189453125, 0.400007992982864379882812)]
_LOGKF_C = (_F32(0.66666662693023681640625), _F32(3.69183861259614332084311e-09))
_EXPKF_U = [_F32(c) for c in (0.00136324646882712841033936, 0.00836596917361021041870117, 0.0416710823774337768554688,
                              0.166665524244308471679688, 0.499999850988388061523438)]


def _df_two_sum(x, y):
    """x + y of two floats as a double-float, SLEEF's dfadd2_vf2_vf_vf."""
    hi = x + y
    v = hi - x
    return hi, (x - (hi - v)) + (y - v)


def _df_add_fast(x, y):
    """(hi, lo) + (hi, lo) where |x| >= |y| (or x a float, lo 0), SLEEF's dfadd: the low parts added last."""
    hi = x[0] + y[0]
    return hi, (((x[0] - hi) + y[0]) + x[1]) + y[1]


def _sleef_logk(d):
    """SLEEF's ``logkf(d)``: ln d as a double-float, for d > 0 (AVX-512's getexp/getmant branch; AVX2's gives the
    same exponent and mantissa)."""
    e = (np.frexp(d * _F32(1 / 0.75))[1] - 1).astype(_F32)  # getexp: floor(log2 |v|)
    e = np.where(np.isinf(d), _F32(128), e)
    fraction = np.frexp(d)[0].astype(_F32)  # in [0.5, 1)
    m = np.where(fraction < _F32(0.75), fraction * _F32(2), fraction)  # getmant: [0.75, 1.5)
    x = _df_divide(_df_two_sum(_F32(-1), m), _df_two_sum(_F32(1), m))
    x2 = _df_square(x)
    t = _fma32(_fma32(_LOGKF_T[0], x2[0], _LOGKF_T[1]), x2[0], _LOGKF_T[2])
    series = _df_mul(_df_mul(x2, x), _df_add(_df_mul_float(x2, t), _LOGKF_C))
    return _df_add(_df_mul_float((_LN2_HI, _LN2_LO), e), _df_add((x[0] * _F32(2), x[1] * _F32(2)), series))


def _sleef_expk(d):
    """SLEEF's ``expkf(d)``: e^(hi + lo) of a double-float, one float."""
    q = np.rint((d[0] + d[1]) * _R_LN2)
    k = np.nan_to_num(np.clip(q, -300, 300)).astype(np.int32)
    q = k.astype(_F32)
    s = _df_add_float(d, q * _F32(-_L2U))
    s = _df_add_float(s, q * _F32(-_L2L))
    hi = s[0] + s[1]  # dfnormalize
    s = hi, (s[0] - hi) + s[1]
    u = np.full_like(s[0], _EXPKF_U[0])
    for c in _EXPKF_U[1:]:
        u = _fma32(u, s[0], c)
    t = _df_add_fast(s, _df_mul_float(_df_square(s), u))
    t = _df_add_fast((_F32(1), _F32(0)), t)
    return np.where(d[0] < -104, _F32(0), _sleef_ldexp(t[0] + t[1], k))


def _sleef_ldexp(x, q):
    """SLEEF's ``vldexp_vf_vf_vi2``: x 2^q as four products by one power of two and a fifth by another, each rounded
    (a subnormal result is rounded on the way, not once)."""
    m = q >> 31
    m = (((m + q) >> 6) - m) << 4
    q = q - (m << 2)
    u = (np.clip(m + 127, 0, 255).astype(np.int32) << 23).view(_F32)
    x = x * u * u * u * u
    return x * ((q + 127).astype(np.int32) << 23).view(_F32)


def sleef_pow(x, y):
    """``Sleef_powf16_u10(x, y)`` of float32 arrays (broadcast): ``expkf(logkf(|x|) * y)``, with C99's special cases
    as SLEEF writes them."""
    x, y = np.asarray(x, _F32), np.asarray(y, _F32)
    library = _native_library()
    if library is not None and y.ndim == 0:  # one exponent (x ** 1.7): no array of copies of it
        out = np.empty(x.shape, _F32)
        _native_map(library.ml_pow_scalar, [np.ascontiguousarray(x).reshape(-1), out.reshape(-1)], float(y))
        return out
    x, y = np.broadcast_arrays(x, y)
    if library is not None:  # (the same steps in C)
        out = np.empty(x.shape, _F32)
        _native_map(library.ml_pow, [np.ascontiguousarray(v).reshape(-1) for v in (x, y)] + [out.reshape(-1)])
        return out
    with np.errstate(all="ignore"):
        magnitude = np.abs(x)
        result = _sleef_expk(_df_mul_float(_sleef_logk(np.where(magnitude == 0, _F32(1), magnitude)), y))
        result = np.where(np.isnan(result), _F32(np.inf), result)
        whole = (np.trunc(y) == y) | (np.abs(y) > _F32(1 << 23))
        odd = whole & (np.abs(y) < _F32(1 << 24)) & (np.fmod(np.trunc(y), _F32(2)) != 0)
        result = result * np.where(x > 0, _F32(1), np.where(whole, np.where(odd, _F32(-1), _F32(1)), _F32(np.nan)))
        efx = (magnitude - _F32(1)) * np.copysign(_F32(1), y)  # (SLEEF's mulsign: the sign bits xor-ed)
        result = np.where(np.isinf(y), np.where(efx < 0, _F32(0), np.where(efx == 0, _F32(1), _F32(np.inf))), result)
        signed_one = np.where(odd, np.copysign(_F32(1), x), _F32(1))
        result = np.where(np.isinf(x) | (x == 0),
                          signed_one * np.where(np.where(x == 0, -y, y) < 0, _F32(0), _F32(np.inf)), result)
        result = np.where(np.isnan(x) | np.isnan(y), _F32(np.nan), result)
        return np.where((y == 0) | (x == 1), _F32(1), result).astype(_F32, copy=False)


def c_pow(x, y):
    """C's pow(x, y) for two Python floats: ``math.pow`` is it, but raises where C returns inf or NaN."""
    try:
        return math.pow(x, y)
    except OverflowError:
        return math.copysign(math.inf, x) if y == int(y) and int(y) % 2 else math.inf
    except ValueError:  # (+-0 to a negative power: inf, -inf for -0 to an odd one; a negative base to a fraction: NaN)
        if x != 0:
            return math.nan
        return math.copysign(math.inf, x) if y == int(y) and int(y) % 2 else math.inf


_C_POW = np.frompyfunc(c_pow, 2, 1)


def power64(a, b):
    """``a ** b`` of float64 arrays (or numbers) as C's ``pow`` gives it (glibc's, which torch's ``std::pow`` in
    its reduction ops calls): NumPy's float64 power (its own SIMD loops) differs in 1 element of 20. One call a
    element: for the norm kernels' p other than 1, 2 and inf only."""
    return np.asarray(_C_POW(a, b), np.float64)


# ---- Sleef_expf16_u10 ----------------------------------------------------------------------------
# exp(d) = 2^q * exp(s), q = rint(d / ln 2), s = d - q ln 2 with ln 2 split in two (Cody-Waite: q * L2U
# is exact), exp(s) = 1 + s + s^2 P(s) with a degree-5 P evaluated by Horner's rule in fused mult-adds.
_R_LN2 = _F32(1.4426950408889634)
_L2U, _L2L = 0.693145751953125, float(_F32(1.428606765330187045e-06))
_P = [float(_F32(c)) for c in (0.000198527617612853646278381, 0.00139304355252534151077271,
                               0.00833336077630519866943359, 0.0416664853692054748535156,
                               0.166666671633720397949219, 0.5)]


def _pow2(k):
    """2^k as float32 for integer k in [-126, 127], from its bits."""
    return ((k + 127) << 23).view(_F32)


# Each fused multiply-add of Horner's rule is computed exactly, in float64 with one rounding: u * s is
# exact there (two 24-bit factors), and adding c + C with C = 1.5 * 2^(e + 29) rounds the sum once to a
# multiple of 2^(e - 23), float32's rounding (to nearest, ties to even) for a result in [2^e, 2^(e+1));
# subtracting C is exact. The first four steps' results lie in one binade each for every |s| <= ln2 / 2
# (e = -10, -7, -5, -3: 0.0013-0.0015, 0.0078-0.0089, 0.039-0.045, 0.15-0.19); the last one (0.44-0.56)
# crosses 0.5 and is rounded by a cast. One ufunc call per step and no mixed dtypes in a call (NumPy's
# mixed-dtype loops cost 2-4x more), casts by assignment, constants as 0-d arrays (a Python or NumPy
# scalar operand costs a small call twice as much): 35 passes over a block instead of ~60.
def _const(value, dtype):
    return np.array(value, dtype)


_ROUND_TO_INT = _const(1.5 * 2 ** 23, _F32)  # x + this - this: rint(x) for |x| < 2^22; its low bits: x
_EXP_C = {name: _const(value, _F32) for name, value in
          (("r_ln2", _R_LN2), ("-r_ln2", -_R_LN2), ("one", 1))}
_EXP_C64 = {"-l2": _const(-(_L2U + _L2L), _F64), "p0": _const(_P[0], _F64),  # (L2U + L2L: exact in float64)
            "half": _const(_P[5], _F64)}
_HORNER_STEPS = [(_const(c + 1.5 * 2.0 ** (e + 29), _F64), _const(1.5 * 2.0 ** (e + 29), _F64))
                 for c, e in zip(_P[1:5], (-10, -7, -5, -3))]
_EXPONENT_SHIFT = _const(23, np.int32)


_EXP_BLOCK = 16384  # elements a block: its six scratch arrays and the slices of x and out fit in L2


def _sleef_exp_blocks(x, out, negate=False):
    """``out = Sleef_expf16_u10(x)`` (of ``-x`` if ``negate``) for flat float32 arrays, block by block
    through one set of scratch arrays (fresh ones for each block cost page faults: 1.7x the time)."""
    library = _native_library()
    if library is not None:
        (library.ml_exp_of_negative if negate else library.ml_exp)(native.address(x), native.address(out), x.size)
        return
    block = min(x.size, _EXP_BLOCK)
    if block == 0:
        return
    scratch = [*np.empty((3, block), _F32), *np.empty((3, block), _F64)]  # (two allocations: rows)
    for start in range(0, x.size, block):
        stop = min(start + block, x.size)
        if stop - start < block:
            scratch = [buffer[:stop - start] for buffer in scratch]
        _sleef_exp_block(x[start:stop], out[start:stop], scratch, negate)


def _sleef_exp_block(d, out, scratch, negate):
    """One block of ``_sleef_exp_blocks``: SLEEF's steps, each rounding where SLEEF's float32 op rounds."""
    q_bits, q, s, w, s64, u = scratch
    np.multiply(d, _EXP_C["-r_ln2" if negate else "r_ln2"], q_bits)  # (-d) * R = -(d * R), rounded alike
    np.add(q_bits, _ROUND_TO_INT, q_bits)  # q = rint(d / ln 2), in the low bits too
    np.subtract(q_bits, _ROUND_TO_INT, q)
    w[...] = q  # s = fma(q, -L2L, d - q L2U), d - q L2U exact (Sterbenz): d - q (L2U + L2L) rounded once,
    np.multiply(w, _EXP_C64["-l2"], w)  # exact in float64: 43 bits times q's 8
    s64[...] = d
    (np.subtract if negate else np.add)(w, s64, w)  # exact too (42 bits at most); -d - q (L2U + L2L) for -d
    s[...] = w  # one rounding
    s64[...] = s
    np.multiply(s64, _EXP_C64["p0"], u)  # Horner's rule, u = fma(u, s, c) exactly (see above)
    for c_plus_magic, magic in _HORNER_STEPS:
        np.add(u, c_plus_magic, u)
        np.subtract(u, magic, u)
        np.multiply(u, s64, u)
    np.add(u, _EXP_C64["half"], u)
    q[...] = u  # (q is free now: u, rounded)
    u[...] = q
    np.multiply(s, s, s)  # s * s, a float32 product
    w[...] = s
    np.multiply(w, u, w)
    np.add(w, s64, w)
    out[...] = w  # fma(s * s, u, s)
    np.add(out, _EXP_C["one"], out)
    if not (np.minimum.reduce(d) >= -87 and np.maximum.reduce(d) <= 87):  # (-87: near the subnormals; nan, inf)
        _scale_extremes(np.negative(d) if negate else d, q_bits - _ROUND_TO_INT, out)
        return
    exponent = q_bits.view(np.int32)  # 2^q, exact for these d: q added to out's exponent bits
    np.left_shift(exponent, _EXPONENT_SHIFT, exponent)  # (the constant's bits shift out)
    np.add(out.view(np.int32), exponent, out.view(np.int32))


def _scale_extremes(d, q, out):
    """``out *= 2^q`` as SLEEF's ldexp2 (in two steps, each 2^k a normal float), then its limits."""
    with np.errstate(invalid="ignore"):
        k = np.clip(q, -150, 150).astype(np.int32)  # (nan: any k, masked below)
    half = k >> 1
    out *= _pow2(half)
    out *= _pow2(k - half)
    out[d < -104] = 0
    out[d > 100] = np.inf
    nan = np.isnan(d)
    out[nan] = d[nan]


def in_cache_slices(formula, *arrays):
    """``formula(*arrays)`` for float32 NumPy arrays of one shape, computed a cache-sized slice at a time
    into one result, so a formula of many passes (a kernel's backward: gelu's tanh form has ~12, two of
    them fused multiply-adds) keeps its temporaries in the cache instead of streaming each through memory
    (a million elements: 13 -> 4.7 ms). Small arrays, and arrays not all C-contiguous float32 NumPy ones:
    the formula on the whole arrays (its result in NumPy's layout)."""
    if arrays[0].size <= CHUNK or not all(type(a) is np.ndarray and a.dtype == _F32 and a.flags.c_contiguous
                                          and a.shape == arrays[0].shape for a in arrays):
        return formula(*arrays)
    out = np.empty(arrays[0].shape, _F32)
    for *parts, out_part in cache_slices(*arrays, out):
        out_part[...] = formula(*parts)
    return out


# Sleef_expd8_u10's polynomial in s (|s| <= ln 2 / 2), highest power first: exp(s) = 1 + s + s^2 (1/2 + s P(s))
_SLEEF_EXP64_POLY = (0.2081276378237164457e-8, 0.2511210703042288022e-7, 0.2755762628169491192e-6,
                     0.2755723402025388239e-5, 0.2480158687479686264e-4, 0.1984126989855865850e-3,
                     0.1388888888914497797e-2, 0.8333333333314938210e-2, 0.4166666666666602598e-1,
                     0.1666666666666669072e+0)


def exp_of_negative64(a, loop=None):
    """``exp(-a)`` of a float64 NumPy array as torch's float64 sigmoid and silu kernels take it: SLEEF's double exp
    (``sleef_exp64``) in their vectorized loop, C's ``exp`` in the scalar lambda (the loop's tail, a strided input:
    ``scalar_positions`` of the loop's operands, ``loop``, default ``(a,)``; two vectors of doubles a step). NumPy's
    float64 exp is neither (~3% of sigmoids an ulp off torch's). C order, ``a``'s shape."""
    return loop64("exp", np.negative(a), loop or (a,))


def _estrin10(s, c):
    """SLEEF's ``POLY10`` of ``s`` (``_sleef_poly`` with s's powers s^2, s^4, s^8 by products)."""
    s2 = s * s
    s4 = s2 * s2
    return _sleef_poly([s, s2, s4, s4 * s4], c)


def _sleef_poly(powers, c):
    """SLEEF's ``POLYn`` macros: the polynomial of coefficients ``c`` (highest power first) by Estrin's scheme, given
    ``powers`` = [x, x^2, x^4, x^8] (as the caller computed them): the top ``n - k`` coefficients' polynomial times
    x^k plus the low ``k``'s, k the largest power of two below n, each step a fused multiply-add (the order
    decides the last bit)."""
    n = len(c)
    if n == 1:
        return c[0]
    level = (n - 1).bit_length() - 1
    split = n - (1 << level)
    return _fma64_like(powers[level], _sleef_poly(powers, c[:split]), _sleef_poly(powers, c[split:]))


def _times_power_of_two(u, q):
    """``u 2^q`` as SLEEF's ``vldexp2`` (two halves of q, so that 2^q itself need not be representable)."""
    with np.errstate(over="ignore", invalid="ignore"):
        k = np.nan_to_num(q, nan=0.0, posinf=0.0, neginf=0.0).clip(-2100, 2100).astype(np.int64)
        return u * np.ldexp(1.0, k >> 1) * np.ldexp(1.0, k - (k >> 1))


def _fma64_like(a, b, c):
    """fma(a, b, c) of float64 arrays where ``b`` and ``c`` may be numbers. (The compiled fma takes numbers as its
    first and last operands, not as its middle one: a number ``b`` trades places with ``a``, the same product.)"""
    if np.ndim(b) == 0:
        a, b = b, a
    if _native_library() is None:  # (_fma64_by_parts: arrays of one shape)
        a, c = (np.full_like(b, v) if np.ndim(v) == 0 else v for v in (a, c))
    return fused_multiply_add64(a, b, c)


_SLEEF64_UNARY = ("exp2", "log1p", "expm1", "sinh", "cosh", "tanh", "atanh", "erf", "lgamma")  # (ml_sleef64's order)
_SLEEF64_BINARY = ("atan2", "hypot", "pow")  # (ml_sleef64_2's)


def _sleef64_natively(name, *flat):
    """SLEEF's double function ``name`` of flat C-contiguous float64 arrays (``_on_flat_doubles``' arguments) by the
    compiled kernel (float32_kernels.c: the NumPy port's steps in C, the same bits), split between ``parallel``'s
    threads from 16k elements; None without it (the NumPy port then runs). A million elements, best of 7 on 2 busy
    cores: log1p 101 -> 9.5 ms, expm1 179 -> 14, sinh 217 -> 17, atan2 148 -> 14, hypot 103 -> 11, pow 327 -> 36,
    F.mish 345 -> 40, gelu's tanh form 239 -> 32."""
    library = _native_library()
    if library is None:
        return None
    out = np.empty(flat[0].size, _F64)
    if len(flat) == 1:
        which, kernel = _SLEEF64_UNARY.index(name), library.ml_sleef64
    else:
        which, kernel = _SLEEF64_BINARY.index(name), library.ml_sleef64_2

    def call(*parts):
        kernel(which, *(native.address(part) for part in parts), parts[0].size)
    parallel.rows(call, *flat, out, work_per_row=16)
    return out


def sleef_exp64(d):
    """``Sleef_expd8_u10`` (torch's ``Vectorized<double>::exp``: softmax's and log_softmax's float64 exp; torch.exp
    itself is MKL's, NumPy's bits) of a float64 array: q = rint(d / ln 2), s = d - q ln 2 in two fused steps, the
    polynomial by Estrin's scheme in fused multiply-adds, then times 2^q in two halves. ~7% of its answers are an
    ulp off the correctly rounded ones (softmax's rows)."""
    d = np.asarray(d, _F64)
    library = _native_library()
    if library is not None and d.ndim:  # (compiled: ml_exp64, these steps in C, ~60x faster; the same bits)
        source, out = np.ascontiguousarray(d), np.empty(d.shape, _F64)
        library.ml_exp64(native.address(source), native.address(out), source.size)
        return out
    q = np.rint(d * 1.442695040888963407359924681001892137426645954152985934135449406931)
    s = fused_multiply_add64(q, np.full_like(d, -.69314718055966295651160180568695068359375), d)
    s = fused_multiply_add64(q, np.full_like(d, -.28235290563031577122588448175013436025525412068e-12), s)
    u = _estrin10(s, _SLEEF_EXP64_POLY)
    for constant in (0.5, 1.0, 1.0):
        u = _fma64_like(u, s, constant)
    u = _times_power_of_two(u, q)
    u = np.where(d > 709.78271289338397, np.inf, u)
    return np.where(d < -1000, 0.0, u)  # (a NaN stays NaN: no comparison holds)


# Sleef_exp2d8_u10's polynomial in s = d - rint(d) (|s| <= 1/2), highest power first: 2^s = 1 + s P(s)
_SLEEF_EXP2_64_POLY = (0.4434359082926529454e-9, 0.7073164598085707425e-8, 0.1017819260921760451e-6,
                       0.1321543872511327615e-5, 0.1525273353517584730e-4, 0.1540353045101147808e-3,
                       0.1333355814670499073e-2, 0.9618129107597600536e-2, 0.5550410866482046596e-1,
                       0.2402265069591012214e+0)


@_on_flat_doubles
def sleef_exp2_64(d):
    """``Sleef_exp2d8_u10`` (torch's ``Vectorized<double>::exp2``: torch.exp2's and logaddexp2's float64 vectors) of
    a float64 array: ``2^q (1 + s P(s))``, P by Estrin's scheme in fused multiply-adds, times 2^q in two halves."""
    compiled = _sleef64_natively("exp2", d)
    if compiled is not None:
        return compiled
    q = np.rint(d)
    s = d - q
    u = _fma64_like(_fma64_like(_estrin10(s, _SLEEF_EXP2_64_POLY), s, 0.6931471805599452862e+0), s, 1.0)
    u = _times_power_of_two(u, q)
    u = np.where(d >= 1024, np.inf, u)
    return np.where(d < -2000, 0.0, u)


def sleef_exp(x, out=None):
    """``Sleef_expf16_u10`` (torch's ``Vectorized<float>::exp``) of a float32 array."""
    x = np.asarray(x, _F32)  # (ascontiguousarray would make a 0-d array 1-d)
    if out is not None and _native_library() is None and np.may_share_memory(x, out):
        x = x.copy()  # (in place: the port writes out before its last reads of x, the compiled kernel does not)
    out = np.empty(x.shape, _F32) if out is None else out
    flat, flat_out = np.ascontiguousarray(x).reshape(-1), out.reshape(-1)  # (out: contiguous)
    parallel.rows(_sleef_exp_blocks, flat, flat_out, work_per_row=4)  # (threads from 32k elements, as loop_exp)
    return out


# ---- Sleef_expm1f16_u10 ----------------------------------------------------------------------------
# expm1 in double-float arithmetic: a value is an unevaluated sum hi + lo of two float32s, each step an
# error-free transformation (two-sum, or a product whose error an fma recovers). exp(d) = 2^q e^s as in
# exp above, e^s = 1 + s + s^2 (1/2 + s (1/6 + s P(s))), then e^d - 1 in double-float, rounded at the end.
def _fma32(a, b, c):
    """fma(a, b, c) of float32 arrays, one rounding (through float64, as ``_fma``)."""
    return (np.multiply(a, b, dtype=_F64) + np.asarray(c, _F64)).astype(_F32)


_WHOLE_ARRAY_FMA = 1 << 17  # up to here NumPy's dtype= loops on the whole array are quicker than blocks


def fused_multiply_add(a, b, c):
    """``a * b + c`` of float32 arrays and numbers rounded once, as torch's fused multiply-add: the product
    exact in float64, the sum rounded from there (_whole_array_fma settles the ties where the float64 sum lands
    on a float32 midpoint; the block path, run without a compiler past 2^17 elements, does not: there about
    1 random triple in 3 million is rounded twice). Compiled (C's fmaf, ``_fma_natively``) wherever it can
    be, any size: 2.5 against 4.3 us on 8 elements, 2.7 against 6.3 on 512. Without it, C-contiguous
    arrays of the result's shape past 2^17 elements run block by block through float64 scratch that stays
    in the cache (a whole-array float64 round trip cost 5x: 9 ms for a million elements); others whole,
    in NumPy's layout."""
    compiled = _fma_natively(a, b, c)
    if compiled is not None:
        return compiled
    if getattr(b, "size", 0) <= _WHOLE_ARRAY_FMA:  # (at a thousand elements a microsecond of checks is a
        return _whole_array_fma(a, b, c)  # tenth of tanh's backward)
    shape = np.broadcast_shapes(np.shape(a), np.shape(b), np.shape(c))
    if not all(type(v) is np.ndarray and v.shape == shape and v.flags.c_contiguous for v in (a, b, c) if np.ndim(v)):
        return _whole_array_fma(a, b, c)
    out = np.empty(shape, _F32)
    flat_out = out.reshape(-1)
    operands = [v.reshape(-1) if np.ndim(v) else v for v in (a, b, c)]
    block = min(flat_out.size, _EXP_BLOCK)
    wide = np.empty((2, block), _F64)
    for start in range(0, flat_out.size, block or 1):
        stop = min(start + block, flat_out.size)
        fused_multiply_add_block(*(v if np.ndim(v) == 0 else v[start:stop] for v in operands),
                                 flat_out[start:stop], wide)
    return out


def fused_multiply_add_chain(a, b, acc):
    """``acc[i, j]`` after ``acc[i, j] = fma(a[t, i], b[t, j], acc[i, j])`` for t = 0, 1, ... in turn (a [T, M], b
    [T, K], acc [M, K], float32): each element's products one after another, rounded once each -- a convolution
    kernel's accumulator (ops/conv_onednn.py). Compiled where it can be, else a NumPy loop over t (the same bits)."""
    a, b = (np.ascontiguousarray(v, dtype=np.float32) for v in (a, b))
    out = np.array(acc, dtype=np.float32, order="C")
    library = _native_library()
    if library is not None and a.size and out.size:
        library.ml_fma_chain(native.address(a), native.address(b), native.address(out), a.shape[0], a.shape[1],
                             b.shape[1])
        return out
    for t in range(a.shape[0]):
        out = fused_multiply_add(np.ascontiguousarray(np.broadcast_to(a[t, :, None], out.shape)),
                                 np.ascontiguousarray(np.broadcast_to(b[t, None, :], out.shape)), out)
    return out


def fused_multiply_add64(a, b, c):
    """``a * b + c`` of float64 arrays and numbers rounded once, as the FMA instructions of torch's
    ``Vectorized<double>`` kernels (add's ``alpha``, ``addcmul``, ``lerp``, the optimizers' steps): C's ``fma``
    where compiled, else ``_fma64_by_parts``' exact NumPy emulation (equal but for overflow or subnormal parts)."""
    compiled = _fma_natively(a, b, c)
    return compiled if compiled is not None else _fma64_by_parts(a, b, c)


def two_sum(a, b):
    """``(s, e)`` with ``s = fl(a + b)`` and ``s + e == a + b`` exactly (Knuth's TwoSum)."""
    s = a + b
    b_part = s - a
    return s, (a - (s - b_part)) + (b - b_part)


def two_product(a, b):
    """``(p, e)`` with ``p = fl(a * b)`` and ``p + e == a * b`` exactly (Dekker's TwoProduct). Near the top of the
    range (the larger factor past 2^995 in float64, 2^114 in float32) Veltkamp's split would overflow, or its high
    half round up past the largest float: there the larger factor is taken at 2^-28 (2^-13) scale and the error
    scaled back, exactly (without it fma64's NumPy path was an ulp off in ~1 of 3 float64 lgammas past 1e300)."""
    p = a * b
    dtype = np.asarray(p).dtype
    top, shrink = (2.0 ** 995, 2.0 ** -28) if dtype == np.float64 else (2.0 ** 114, 2.0 ** -13)
    larger_is_b = np.abs(b) > np.abs(a)
    larger, smaller = np.where(larger_is_b, b, a), np.where(larger_is_b, a, b)
    scale = np.where(np.abs(larger) > top, dtype.type(shrink), dtype.type(1))
    larger = larger * scale
    return p, _product_error(larger, smaller, larger * smaller) / scale


def _product_error(a, b, p):
    """``a * b - p`` for ``p = fl(a * b)``, exactly, from the halves of ``a`` and ``b``."""
    a_high, a_low = _split(a)
    b_high, b_low = _split(b)
    return ((a_high * b_high - p) + a_high * b_low + a_low * b_high) + a_low * b_low


def _split(a):
    """``a`` as high + low halves of its mantissa (Veltkamp), each product of halves exact."""
    dtype = np.asarray(a).dtype
    scaled = dtype.type(134217729.0 if dtype == np.float64 else 4097.0) * a  # 2**ceil(p/2) + 1
    high = scaled - (scaled - a)
    return high, a - high


def _fma64_by_parts(a, b, c, rescale=True):
    """fma(a, b, c) in float64 from error-free transformations (Boldo & Melquiond, "Emulation of FMA and
    correctly rounded sums: proved algorithms using rounding to odd", 2008): ``a b = p + e`` and ``c + p = s + t``
    exactly; ``t + e`` rounded to odd, then added to ``s`` with one ordinary rounding, is the exact sum rounded
    once. Where the product of finite a and b overflows, an infinite c is the answer (-huge * huge + inf is inf,
    not NaN) and a finite one is added at half scale (``rescale``: a / 2 b + c / 2, doubled); where another part
    overflows NumPy's two roundings stand."""
    with np.errstate(over="ignore", invalid="ignore"):
        a, b, c = (np.asarray(v, _F64) for v in (a, b, c))
        p, e = two_product(a, b)
        s, t = two_sum(c, p)
        low, low_error = two_sum(t, e)
        # round to odd: an inexact ``low`` with an even last bit moves one ulp towards the exact value
        even = np.bitwise_and(np.asarray(low).view(np.int64), 1) == 0
        low = np.where((low_error != 0) & even, np.nextafter(low, np.copysign(np.inf, low_error)), low)
        out = np.where(np.isfinite(s + low), s + low, p + c)
        too_large = np.isinf(p) & np.isfinite(a) & np.isfinite(b)
        out = np.where(too_large & np.isinf(c), c, out)
        rescaled = too_large & np.isfinite(c)
        if rescale and np.any(rescaled):
            halved = _fma64_by_parts(np.where(rescaled, a * 0.5, 0.0), b, np.where(rescaled, c * 0.5, 0.0), False)
            out = np.where(rescaled, halved * 2, out)
    return out


def _fma_natively(a, b, c):
    """``fma(a, b, c)`` by the compiled kernel (C's ``fmaf``, or ``fma`` for float64: exactly rounded) where ``b``
    is a C-contiguous float32 (float64) array and ``a``, ``c`` arrays like it or numbers of its dtype; else None.
    Its fixed cost (~4 us, of which the ctypes call and three addresses ~2) is under the NumPy path's on any array:
    no loops or lists here, a number's one-element array kept, not remade, and no parallel.rows below 2^17
    elements (it would run the call whole there too)."""
    library = _native_library()
    dtype = b.dtype if type(b) is np.ndarray else None
    if library is None or (dtype is not _FLOAT32 and dtype is not _FLOAT64) or not b.flags.c_contiguous:
        return None
    step_a, step_c = _fma_step(a, b), _fma_step(c, b)
    if step_a is None or step_c is None:
        return None
    a, c = (a if step_a else _number_in_memory(a, dtype)), (c if step_c else _number_in_memory(c, dtype))
    out, kernel = np.empty(b.shape, dtype), library.ml_fma if dtype is _FLOAT32 else library.ml_fma64

    def call(out_part, a_part, b_part, c_part):  # (a number: its kept address, step 0)
        kernel(native.address(a_part) if step_a else a[1], step_a, native.address(b_part), 1,
                       native.address(c_part) if step_c else c[1], step_c, native.address(out_part), out_part.size)
    if out.size < 2 * parallel.MIN_ITEMS:
        call(out, a, b, c)
    else:
        parallel.rows(call, out.reshape(-1), *(v.reshape(-1) if step else None for v, step in
                                               ((a, step_a), (b, 1), (c, step_c))), work_per_row=1)
    return out


def _fma_step(v, b):
    """1 for an operand that is an array like ``b`` (C-contiguous, of its dtype and shape), 0 for a number that
    dtype holds exactly (the float64 path's value too), None for anything else."""
    if type(v) is np.ndarray and v.ndim:
        return 1 if v.dtype is b.dtype and v.shape == b.shape and v.flags.c_contiguous else None
    number = b.dtype.type
    return 0 if type(v) is number or number(v) == v or v != v else None


_FLOAT32, _FLOAT64 = np.dtype(_F32), np.dtype(_F64)  # (dtypes of NumPy's own types are singletons: `is` holds)
_NUMBERS = {}  # (float value, dtype) -> (its one-element array, that array's address)


def _number_in_memory(v, dtype=_FLOAT32):
    """``(array, address)`` of a one-element float32 (``dtype``) array holding the number ``v``, for a compiled
    kernel's step-0 operand: kept for a value seen before (SGD's -lr, tanh's 1), made afresh for zeros (the key
    would not tell -0 from 0) and NaN."""
    key = (float(v), dtype)
    kept = _NUMBERS.get(key) if key[0] else None
    if kept is None:
        number = np.full(1, v, dtype)
        kept = (number, native.address(number))
        if key[0] and key[0] == key[0] and len(_NUMBERS) < 256:
            _NUMBERS[key] = kept
    return kept


def silu_backward_natively(g, x, s, out):
    """``out = (g s) fma(x, 1 - s, 1)`` (silu's backward as torch rounds it) for flat C-contiguous float32
    arrays by the compiled kernel (a broadcast ``g``, ``y.sum().backward()``'s ones, as a dense copy); False
    where it cannot run (the caller's NumPy code then does)."""
    library, g = _native_library(), _dense_gradient(g, x)
    if library is None or not all(type(v) is np.ndarray and v.dtype == _F32 and v.flags.c_contiguous
                                  for v in (g, x, s, out)):
        return False
    library.ml_silu_backward(*map(native.address, (g, x, s, out)), out.size)
    return True


def _whole_array_fma(a, b, c):
    """``fma(a, b, c)`` rounded once, as C's fmaf: the product of two float32 is exact in float64 and the float64
    sum rounds once more into float32. That second rounding is wrong only where the float64 sum lands exactly
    on a float32 midpoint (a tie) while the exact sum does not: ``_settle_ties`` looks at those few."""
    product = np.multiply(a, b, dtype=_F64)
    total = np.add(product, c, dtype=_F64)
    if type(total) is not np.ndarray:  # (0-d operands give a NumPy scalar)
        total = np.asarray(total)
    out = total.astype(_F32)
    # candidates: a float32 midpoint in the normal range (the 29 bits float32 drops are 1000...0), or a sum in
    # float32's subnormal range (its midpoints sit higher: checked one by one). Counted, not any()'d: on a few
    # elements NumPy's any() or min() costs a microsecond, four elementwise passes and two counts half that.
    midpoint = np.equal(np.bitwise_and(total.view(np.uint64), _DROPPED_BITS), _MIDPOINT_BITS)
    if np.count_nonzero(midpoint) or np.count_nonzero(np.less(np.abs(total), _FLOAT32_TINY)):
        maybe = midpoint | (np.abs(total) < _FLOAT32_TINY)
        _settle_ties(np.broadcast_to(product, total.shape), np.broadcast_to(c, total.shape), total, out, maybe)
    return out


# (0-d arrays: a NumPy scalar operand costs a ufunc call twice as much)
_DROPPED_BITS, _MIDPOINT_BITS = np.array((1 << 29) - 1, np.uint64), np.array(1 << 28, np.uint64)
_FLOAT32_TINY = np.array(2.0 ** -126, _F64)  # below it float32 is subnormal


def _settle_ties(product, c, total, out, maybe):
    """Where ``total`` (float64 ``product + c``) is a float32 midpoint, round by the exact sum: its float64
    rounding error (Knuth's TwoSum) says on which side of the midpoint the exact value lies."""
    where = np.flatnonzero(maybe & np.isfinite(total) & np.isfinite(out))
    p, s, r = product.reshape(-1)[where], total.reshape(-1)[where], out.reshape(-1)[where]
    q = np.asarray(c, _F64).reshape(-1)[where] if np.ndim(c) else np.full(where.size, c, _F64)
    half = s - r.astype(_F64)  # exact: +-half a float32 ulp at a tie
    other = np.nextafter(r, np.where(half > 0, _F32(np.inf), _F32(-np.inf)))  # r's neighbour across the tie
    tie = (half != 0) & (other.astype(_F64) - r.astype(_F64) == 2 * half)
    back = s - p
    error = (p - (s - back)) + (q - back)  # exact: product + c == s + error
    # the exact sum lies past the midpoint, on other's side: other; on r's side (or at it): r
    np.put(out.reshape(-1), where, np.where(tie & (error * half > 0), other, r))


def fused_multiply_add_block(a, b, c, out, wide):
    """``out = fma(a, b, c)`` for a block: float32 arrays of ``out``'s size or numbers, through the two
    float64 rows of ``wide`` (at least that long: scratch a caller reuses from block to block)."""
    product, other = wide[0, :out.size], wide[1, :out.size]
    product[...] = a
    np.multiply(product, _as_float64(b, other), product)  # exact
    np.add(product, _as_float64(c, other), product)
    out[...] = product


def adamw_step(param, grad, exp_avg, exp_avg_sq, *, decay, shrink, one_minus_beta1, one_minus_beta2, beta2, bias2_root,
               eps, step_size, mkl_sqrt=True):
    """One AdamW step over flat C-contiguous float32 arrays in one compiled pass (``ml_adamw``): the same
    bits as ``optim.adam.adamw_update``'s NumPy calls given the same float32 numbers (its multiply-adds fused
    where ``FUSED_MULTIPLY_ADD``; its root ``mkl_sqrt``'s where that applies and ``mkl_sqrt`` is true, else correctly
    rounded), ~3x faster; False, doing nothing, where the kernels are not built or two of the
    arrays overlap (a gradient that IS the weight, ``p.grad = p.detach()``: the NumPy update, as torch's, shrinks
    it with the weight before the moments read it)."""
    library = _native_library()
    arrays = (param, grad, exp_avg, exp_avg_sq)
    if library is None or not all(type(a) is np.ndarray and a.dtype == _F32 and a.ndim == 1 and a.flags.c_contiguous
                                  and a.size == param.size for a in arrays):
        return False
    return library.ml_adamw(*map(native.address, arrays), param.size, int(decay), shrink, one_minus_beta1,
                            one_minus_beta2, beta2, bias2_root, eps, step_size, int(FUSED_MULTIPLY_ADD),
                            int(MKL_SQRT_CPU and mkl_sqrt)) == 0  # (torch's sqrt, MKL's, where matched: mkl_sqrt)


def multiply_add_into(a, b, c, out, wide):
    """``out = a * b + c`` for float32 arrays ``b``, ``c`` and ``a`` (an array or a number) as torch's CPU kernels
    round it: once (an FMA: ``lerp_vec``'s ``fmadd``, and GCC's fused ``self + value * t1 * t2`` of ``addcmul``)
    where ``FUSED_MULTIPLY_ADD``, else twice. ``b`` is scratch (overwritten); ``wide``: float64 scratch of ``out``'s
    size (the product of two float32 is exact there; the sum rounds once more only in a tie of a tie).
    Three times the time of the two-rounding ``b *= a; out = c + b`` (NumPy's float32 <-> float64 casts).
    float64 NumPy arrays are fused by ``fused_multiply_add64`` (``wide`` unused); other dtypes round twice."""
    if FUSED_MULTIPLY_ADD and out.dtype == _F64 and type(out) is np.ndarray:
        out[...] = fused_multiply_add64(a, b, c)
        return out
    if not FUSED_MULTIPLY_ADD or out.dtype != _F32:
        b *= a
        return np.add(c, b, out=out)
    wide[...] = b
    np.multiply(wide, np.float64(a) if np.ndim(a) == 0 else a, out=wide)
    np.add(wide, c, out=wide)
    out[...] = wide
    return out


def _as_float64(v, scratch):
    """An array copied into float64 ``scratch``, or a number as a 0-d float64 array (either keeps a ufunc
    in float64: NumPy's mixed-dtype loops cost 2-4x more; a 0-d float64 array is taken as it is)."""
    if type(v) is np.ndarray and v.ndim:
        scratch[...] = v
        return scratch
    return v if type(v) is np.ndarray and v.dtype == _F64 else np.asarray(v, _F64)


def _df_add_float(x, y):
    """(hi, lo) + y, SLEEF's dfadd2 (ddadd2 for doubles: a two-sum of the high parts, the low part added)."""
    hi = x[0] + y
    v = hi - x[0]
    return hi, ((x[0] - (hi - v)) + (y - v)) + x[1]


def _df_add(x, y):
    """(hi, lo) + (hi, lo), SLEEF's dfadd2."""
    hi = x[0] + y[0]
    v = hi - x[0]
    return hi, ((x[0] - (hi - v)) + (y[0] - v)) + (x[1] + y[1])


def _df_mul_float(x, y):
    hi = x[0] * y
    return hi, _fma32(x[1], y, _fma32(x[0], y, -hi.astype(_F64)))


def _df_mul(x, y):
    hi = x[0] * y[0]
    return hi, _fma32(x[0], y[1], _fma32(x[1], y[0], _fma32(x[0], y[0], -hi.astype(_F64))))


def _df_square(x):
    hi = x[0] * x[0]
    return hi, _fma32(x[0] + x[0], x[1], _fma32(x[0], x[0], -hi.astype(_F64)))


_EXPK2_U = [float(_F32(c)) for c in (0.1980960224e-3, 0.1394256484e-2, 0.8333456703e-2, 0.4166637361e-1)]
_EXPK2_SIXTH = float(_F32(0.166666659414234244790680580464))


def _expk2(a):
    """e^a as a double-float (hi, lo), SLEEF's expk2f: 2^q e^s, e^s = 1 + s + s^2 (1/2 + s (1/6 + s P(s)))."""
    q = np.rint(a * _R_LN2)
    k = np.nan_to_num(np.clip(q, -150, 150)).astype(np.int32)
    q = k.astype(_F32)
    s = _df_add_float((a, np.zeros_like(a)), q * _F32(-_L2U))
    s = _df_add_float(s, q * _F32(-_L2L))
    u = np.full_like(a, _F32(_EXPK2_U[0]))
    for c in _EXPK2_U[1:]:
        u = _fma32(u, s[0], _F32(c))
    t = _df_add_float(_df_mul_float(s, u), _F32(_EXPK2_SIXTH))
    t = _df_add_float(_df_mul(s, t), _F32(0.5))
    t = _df_add(s, _df_mul(_df_square(s), t))
    hi = _F32(1) + t[0]  # 1 + t, SLEEF's dfadd (1 >= |t|)
    t = hi, ((_F32(1) - hi) + t[0]) + t[1]
    half = k >> 1  # times 2^q in two steps, as SLEEF's ldexp2
    scale = [_pow2(half), _pow2(k - half)]
    return [np.where(a < -104, _F32(0), part * scale[0] * scale[1]) for part in t]


def _keep_negative_zero_and_nan(x, out):
    """SLEEF's last selects in expm1 and log1p: -0.0 and NaN come out as they went in."""
    keep = ((x == 0) & np.signbit(x)) | np.isnan(x)
    out[keep] = x[keep]


def _sleef_expm1_slice(a, out):
    """``out = Sleef_expm1f16_u10(a)`` for one cache-sized float32 slice."""
    with np.errstate(invalid="ignore", over="ignore"):
        d = _df_add_float(_expk2(a), _F32(-1))
        np.add(d[0], d[1], out=out)
    out[a > _F32(88.72283172607421875)] = np.inf
    out[a < _F32(-16.635532333438687426013570)] = -1
    _keep_negative_zero_and_nan(a, out)


def sleef_expm1(x):
    """``Sleef_expm1f16_u10`` (torch's ``Vectorized<float>::expm1``, and ``torch.expm1``) of a float32 array."""
    compiled = _natively("ml_expm1", x)
    if compiled is not None:
        return compiled
    return _modelled(_expm1_model, _sleef_expm1_slice, x, (-16.5, 88), _SMALL_BITS, _PORT_BELOW)


# ---- the double-float ports, fast: SLEEF's formula in float64, the port near a rounding midpoint --------
# expm1 and tanh carry e^|x| in double-float (~48 bits) and round once at the end, so their float32 result
# is the rounding of SLEEF's formula evaluated in float64 (its polynomial, its float32 q and s[0] and its
# float32 inner polynomial u computed exactly, the rest unrounded: _expk2_model), except where that value
# lies within _NEAR_MIDPOINT float64 ulps (2^-34 of the result) of a float32 rounding midpoint (there the
# double-float's own roundings decide; they were seen to 2^15.7 ulps) or 0 < |x| < 2^-8 (the double-float's
# error relative to the result grows as 1 / |x|), or x is out of the formula's range: those elements, ~0.1%
# of randn's, run the step-by-step port. ~30 float64 passes instead of the port's ~100 float32 ones and
# float64 round trips: 15-30x faster on large arrays; the same bits for every float32 input (checked).
_NEAR_MIDPOINT = 1 << 18
_LOW_29 = np.uint64((1 << 29) - 1)  # the float64 bits a float32 rounds away
_MIDPOINT_SHIFT = np.uint64(_NEAR_MIDPOINT - (1 << 28) + (1 << 29))  # low bits within _NEAR_MIDPOINT of 2^28: below 2 N
_SMALL_BITS = np.uint32(np.array(2.0 ** -8, _F32).view(np.uint32) - 1)
_LOG1P_SMALL_BITS = np.uint32(np.array(2.0 ** -90, _F32).view(np.uint32) - 1)  # (the port's low parts subnormal)
_MAGNITUDE = np.uint32(0x7FFFFFFF)
_PORT_BELOW = 4096  # (expm1, tanh: 0.2% of randn's elements go to the port, so most arrays this small have one)
_EXPK2_U_STEPS = [(_const(c + 1.5 * 2 ** (e + 29), _F64), _const(1.5 * 2 ** (e + 29), _F64))
                  for c, e in zip(_EXPK2_U[1:], (-10, -7, -5))]  # (u's steps stay in these binades)
_EXPK2_C32 = {"r_ln2": _const(_R_LN2, _F32), "-l2u": _const(-_L2U, _F32), "-l2l": _const(-_L2L, _F32)}
_EXPK2_C64 = {"c0": _const(_EXPK2_U[0], _F64), "sixth": _const(_EXPK2_SIXTH, _F64), "half": _const(0.5, _F64),
              "one": _const(1, _F64), "two": _const(2, _F64)}


class _ModelScratch:
    """The arrays one block of ``_modelled`` computes in, allocated once a call (fresh ones each block
    cost page faults)."""

    def __init__(self, size):
        self.q, self.h, self.r, self.v = np.empty((4, size), _F32)
        self.s, self.u, self.w = np.empty((3, size), _F64)
        self.bits = np.empty(size, np.uint64)
        self.small = np.empty(size, np.uint32)
        self.flag, self.other = np.empty((2, size), bool)

    def cut(self, size):
        """The same arrays cut to a last, shorter block."""
        cut = object.__new__(_ModelScratch)
        cut.__dict__ = {name: array[:size] for name, array in self.__dict__.items()}
        return cut


def _expk2_model(a, scratch):
    """SLEEF's ``expk2f(a) - 1`` in float64 (in ``scratch.u``): ``2^q (1 + t) - 1``, ``t = s + s^2 (1/2 +
    s (1/6 + s u))``, with the port's float32 ``q``, ``s``'s float32 high part and float32 ``u`` exact."""
    q, h, s, u, w = scratch.q, scratch.h, scratch.s, scratch.u, scratch.w
    np.multiply(a, _EXPK2_C32["r_ln2"], q)
    np.rint(q, q)  # q = rint(a / ln 2), the product rounded to float32 first
    np.multiply(q, _EXPK2_C32["-l2u"], h)
    np.add(h, a, h)  # a - q L2U, exact
    s[...] = h
    np.multiply(q, _EXPK2_C32["-l2l"], h)  # the port's float32 product
    w[...] = h
    np.add(s, w, s)  # s = a - q L2U - q L2L, exact in float64
    h[...] = s  # s's high part: one float32 rounding, as the port's double-float sum
    w[...] = h
    np.multiply(w, _EXPK2_C64["c0"], u)  # u = fma(fma(fma(c0, s, c1), s, c2), s, c3), each rounded
    for index, (c_plus_magic, magic) in enumerate(_EXPK2_U_STEPS):  # as float32 (see _HORNER_STEPS)
        if index:
            np.multiply(u, w, u)
        np.add(u, c_plus_magic, u)
        np.subtract(u, magic, u)
    np.multiply(u, s, u)
    np.add(u, _EXPK2_C64["sixth"], u)
    np.multiply(u, s, u)
    np.add(u, _EXPK2_C64["half"], u)
    np.multiply(u, s, u)
    np.add(u, _EXPK2_C64["one"], u)
    np.multiply(u, s, u)  # t = e^s - 1 (-0 for -0, as the port's)
    if np.any(q):  # times 2^q: 2^q t + (2^q - 1)
        exponent, power = h.view(np.int32), w.view(np.int64)
        np.copyto(exponent, q, casting="unsafe")  # (through int32: NumPy's float32-to-int64 cast is slow)
        np.add(exponent, np.int32(1023), exponent)
        np.copyto(power, exponent)
        np.left_shift(power, np.int64(52), power)
        np.multiply(u, w, u)
        np.subtract(w, _EXPK2_C64["one"], w)
        np.add(u, w, u)
    return u


def _expm1_model(a, scratch):
    return _expk2_model(a, scratch)


def _tanh_model(magnitude, scratch):
    """SLEEF's ``(e - 1/e) / (e + 1/e)`` in float64 for ``e = expk2f(|x|)``, as ``n / (n + 2)`` with
    ``n = e^2 - 1 = m (m + 2)``, ``m = e - 1`` (no cancellation for small |x|)."""
    m = _expk2_model(magnitude, scratch)
    n = scratch.s
    np.add(m, _EXPK2_C64["two"], n)
    np.multiply(n, m, n)
    np.add(n, _EXPK2_C64["two"], m)
    np.divide(n, m, m)
    return m


def _flag_for_port(value, x, scratch, small_bits):
    """Where ``value`` (float64) lies near a float32 rounding midpoint or ``x`` is small but not 0 (its
    magnitude's bits, less one, below ``small_bits``)."""
    flag, bits, small = scratch.flag, scratch.bits, scratch.small
    np.add(value.view(np.uint64), _MIDPOINT_SHIFT, bits)
    np.bitwise_and(bits, _LOW_29, bits)
    np.less(bits, np.uint64(2 * _NEAR_MIDPOINT), flag)
    np.bitwise_and(x.view(np.uint32), _MAGNITUDE, small)
    np.subtract(small, np.uint32(1), small)  # (0 wraps round to the largest)
    np.less(small, small_bits, scratch.other)
    np.logical_or(flag, scratch.other, flag)
    return flag


def _modelled(model, port_slice, x, limits, small_bits, port_below=0):
    """``port_slice``'s result for a float32 array, as ``model(block, scratch)`` rounded where it decides
    it (see above), block by block; elements outside ``limits`` (and NaN) also go to the port, and
    arrays of fewer than ``port_below`` elements whole (where the port would likely run anyway: its
    ~100 NumPy calls cost the same on one element as on a thousand)."""
    x = np.asarray(x, _F32)
    out = np.empty(x.shape, _F32)
    flat, flat_out = np.ascontiguousarray(x).reshape(-1), out.reshape(-1)
    if flat.size < port_below:
        port_slice(flat, flat_out)
        return out
    block = min(flat.size, _EXP_BLOCK)
    scratch = _ModelScratch(block) if block else None
    low, high = limits
    flagged = []
    for start in range(0, flat.size, block or 1):
        a, out_block = flat[start:start + block], flat_out[start:start + block]
        if a.size < block:
            scratch = scratch.cut(a.size)
        inside = low <= np.minimum.reduce(a) and np.maximum.reduce(a) <= high  # (nan: not inside)
        with np.errstate(invalid="ignore", over="ignore"):
            value = model(a if inside else np.clip(a, low, high), scratch)
        out_block[...] = value
        np.copysign(out_block, a, out_block)  # (expm1, log1p: x's sign; -0 for -0, as the ports)
        flag = _flag_for_port(value, a, scratch, small_bits)
        if not inside:
            flag |= ~((a >= low) & (a <= high))
        if flag.any():
            flagged.append(np.flatnonzero(flag) + start)
    if flagged:  # (in one call: the port's ~100 NumPy calls cost ~300 us on however few elements)
        where = np.concatenate(flagged)
        port = np.empty(where.size, _F32)
        port_slice(flat[where], port)
        flat_out[where] = port
    return out


def loop_expm1(x, layout=None):
    """``expm1`` as a torch elementwise kernel computes it inside its formula (elu): SLEEF's in the
    vectorized body, C's in the scalar tail (``c_function``; ``layout``: the kernel's input, where ``x`` was
    computed from it)."""
    return _in_loop(x, sleef_expm1, lambda t: c_function("expm1f", t), layout)


def sleef_sinh_or_cosh(x, cosh):
    """``Sleef_sinhf16_u10`` (``cosh``: ``Sleef_coshf16_u10``) of a float32 array: ``(e -+ 1/e) / 2`` with ``e =
    expk2f(|x|)`` and the reciprocal and the sum in double-float, infinite past |x| = 89 (SLEEF's bound, below
    float32's overflow at 89.4), the sign put back for sinh."""
    compiled = _natively("ml_cosh" if cosh else "ml_sinh", x)
    if compiled is not None:
        return compiled
    x = np.asarray(x, _F32)
    y = np.abs(x)
    with np.errstate(invalid="ignore", over="ignore"):
        e = _expk2(y)
        r = _df_reciprocal(e)
        r = r if cosh else (-r[0], -r[1])
        hi = e[0] + r[0]  # SLEEF's dfadd / dfsub: the low parts added last
        out = (hi + ((((e[0] - hi) + r[0]) + e[1]) + r[1])) * _F32(0.5)
        out = np.where((y > _F32(89)) | np.isnan(out), _F32(np.inf), out)
    if not cosh:
        out = np.copysign(out, x)
    return np.where(np.isnan(x), x, out).astype(_F32, copy=False)


_LOGK2_T = [_F32(c) for c in (0.2392828464508056640625, 0.28518211841583251953125, 0.400005877017974853515625,
                              0.666666686534881591796875)]


def _sleef_logk2(d):
    """SLEEF's ``logk2f``: ln of a double-float, as one (the exponent of its high part by getexp, the double-float
    scaled to a mantissa in [0.75, 1.5), 2 atanh((m - 1) / (m + 1)) by its series, plus e ln 2: e ln 2 + 2x first,
    then + x^3 t, each by dfadd, the low parts added last -- SLEEF 3.6's order; its older e ln 2 + (2x + x^3 t), by
    dfadd2, is an ulp off torch's lgamma near lgamma's zeros, as at -2.456007)."""
    e = (np.frexp(d[0] * _F32(1 / 0.75))[1] - 1).astype(_F32)
    scale = np.exp2(-e).astype(_F32)
    m = d[0] * scale, d[1] * scale
    x = _df_divide(_df_add_float(m, _F32(-1)), _df_add_float(m, _F32(1)))
    x2 = _df_square(x)
    t = _fma32(_fma32(_fma32(_LOGK2_T[0], x2[0], _LOGK2_T[1]), x2[0], _LOGK2_T[2]), x2[0], _LOGK2_T[3])
    s = _df_add_fast(_df_mul_float((_LN2_HI, _LN2_LO), e), (x[0] * _F32(2), x[1] * _F32(2)))
    return _df_add_fast(s, _df_mul_float(_df_mul(x2, x), t))


def sleef_atanh(x):
    """``Sleef_atanhf16_u10`` of a float32 array: ``logk2f((1 + |x|) / (1 - |x|)) / 2`` in double-float, the sign put
    back; NaN past 1 (and at infinity), infinite at 1."""
    compiled = _natively("ml_atanh", x)
    if compiled is not None:
        return compiled
    x = np.asarray(x, _F32)
    y = np.abs(x)
    with np.errstate(all="ignore"):
        d = _sleef_logk2(_df_divide(_df_two_sum(_F32(1), y), _df_two_sum(_F32(1), -y)))
        out = np.where(y > 1, _F32(np.nan), np.where(y == 1, _F32(np.inf), (d[0] + d[1]) * _F32(0.5)))
        out = np.where(np.isinf(x) | np.isnan(out), _F32(np.nan), out)
    return np.where(np.isnan(x), x, np.copysign(out, x)).astype(_F32, copy=False)


# ---- Sleef_tanhf16_u10 -----------------------------------------------------------------------------
# tanh |x| = (e - 1/e) / (e + 1/e) with e = e^|x| from expm1's double-float exp, the reciprocal and the
# quotient in double-float too; the sign put back at the end.
def _df_reciprocal(d):
    hi = _F32(1) / d[0]
    return hi, hi * _fma32(-d[1], hi, _fma32(-d[0], hi, _F32(1)))


def _df_divide(n, d):
    t = _F32(1) / d[0]
    hi = n[0] * t
    u = _fma32(t, n[0], -hi.astype(_F64))
    lo = _fma32(-d[1], t, _fma32(-d[0], t, _F32(1)))
    return hi, _fma32(hi, lo, _fma32(n[1], t, u))


def _sleef_tanh_slice(x, out):
    """``out = Sleef_tanhf16_u10(x)`` for one cache-sized float32 slice."""
    with np.errstate(invalid="ignore", over="ignore"):
        e = _expk2(np.abs(x))
        inverse = _df_reciprocal(e)
        d = _df_divide(_df_add(e, (-inverse[0], -inverse[1])), _df_add(e, inverse))
        np.add(d[0], d[1], out=out)
        out[(np.abs(x) > _F32(8.664339742)) | np.isnan(out)] = 1
    np.copysign(out, x, out=out)
    nan = np.isnan(x)
    out[nan] = x[nan]


_TANH_ONE_FROM = _F32(8.664339742)  # beyond it SLEEF's tanh is +-1


def sleef_tanh(x):
    """``Sleef_tanhf16_u10`` (torch's ``Vectorized<float>::tanh``, not ``torch.tanh``'s MKL) of a float32 array."""
    compiled = _natively("ml_tanh", x)
    if compiled is not None:
        return compiled
    x = np.asarray(x, _F32)
    magnitude = np.abs(x)
    big = magnitude > _TANH_ONE_FROM
    out = _modelled(_tanh_model, _sleef_tanh_slice, np.where(big, _F32(0), magnitude), (0, _TANH_ONE_FROM),
                    _SMALL_BITS, _PORT_BELOW)
    out[big] = 1
    return np.copysign(out, x, out=out)


def loop_tanh(x, layout=None):
    """``tanh`` as a torch elementwise kernel computes it inside its formula (gelu's tanh form): SLEEF's
    in the vectorized body, C's ``tanhf`` in the scalar tail."""
    return _in_loop(x, sleef_tanh, lambda t: c_function("tanhf", t), layout)


_GELU_BETA, _GELU_KAPPA = _F32(0.7978845608028654), _F32(0.044715)  # sqrt(2 / pi), 0.044715


def gelu_tanh(x):
    """torch's float32 ``gelu(x, approximate='tanh')`` and its tanh: ``inner = beta (x + kappa x^3)``
    (the sum a fused multiply-add, as GCC compiles ATen's vector code), ``(0.5 x) (1 + tanh(inner))``."""
    compiled = _loop_natively("ml_gelu_tanh", [x], _two_like(x), (_GELU_BETA, _GELU_KAPPA),
                              lambda v: _gelu_tanh_formula(v, lambda inner: c_function("tanhf", inner)))
    return compiled if compiled is not None else _gelu_tanh_formula(x, lambda inner: loop_tanh(inner, x))


def _gelu_tanh_formula(x, tanh):
    cube = x * x * x
    inner = _GELU_BETA * (fused_multiply_add(_GELU_KAPPA, cube, x) if FUSED_MULTIPLY_ADD else _GELU_KAPPA * cube + x)
    t = tanh(inner)
    return (_F32(0.5) * x) * (_F32(1) + t), t


# ---- gelu's exact form ------------------------------------------------------------------------------
# torch's float32 F.gelu(x) takes one of two kernels (Activation.cpp's gelu_out_cpu): a contiguous input of 2+
# elements goes to oneDNN's eltwise gelu_erf (while torch.backends.mkldnn.enabled), any other to ATen's loop.
# oneDNN's JIT kernel on an AVX-512 CPU (avx512_core, whatever ATEN_CPU_CAPABILITY says) evaluates erf(x / sqrt 2)
# as a piecewise minimax polynomial of |x|: one of 25 degree-5 polynomials, picked by |x|'s exponent and two
# mantissa bits, evaluated by Horner's rule in fused multiply-adds; then (x (1 + erf)) 0.5. The coefficients
# are its table's (jit_uni_eltwise_injector.cpp, gelu_erf_minimax_pol), as float32 bit patterns, one row a degree.
_GELU_ERF_POLYNOMIALS = np.array([
    [0xa6f2cb94, 0x32827792, 0x3381cc0c, 0x34523d4a, 0x351ac44d, 0x35f36d88, 0x36ee8229, 0x37b8a3bb, 0x3867a213,
     0x3940033b, 0x3a2a5a1d, 0x3ae35863, 0x3b7828f2, 0x3c08b14b, 0x3c515ed3, 0xbb503236, 0xbd8d8e5e, 0xbe8abcd9,
     0xbf0c19a2, 0xbeccb328, 0x3e176ced, 0x3f470d99, 0x3f7abb28, 0x3f800000, 0],
    [0x3f4c422a, 0x3f4c421f, 0x3f4c4207, 0x3f4c41cb, 0x3f4c413b, 0x3f4c3fad, 0x3f4c3a2f, 0x3f4c2d40, 0x3f4c146a,
     0x3f4bc341, 0x3f4ad08c, 0x3f48f8cf, 0x3f45fac7, 0x3f404e07, 0x3f3b980f, 0x3f48dff3, 0x3f78b21b, 0x3fbb0704,
     0x40019c32, 0x3fe536d6, 0x3f81331e, 0x3e6c8684, 0x3c98f936, 0, 0x3f800000],
    [0xb62173f4, 0x3735e4cf, 0x37f2ff89, 0x388c23be, 0x3917535c, 0x39ab2ab0, 0x3a60fadb, 0x3af9b960, 0x3b6e5491,
     0x3c0a4ec5, 0x3ca5aa8c, 0x3d2138d9, 0x3d8737d4, 0x3ddfb660, 0x3e0f27ab, 0x3d94004b, 0xbe0efdeb, 0xbf1d96c3,
     0xbf89db58, 0xbf6d9897, 0xbef69fb8, 0xbdc4f8a8, 0xbbde6422, 0, 0],
    [0xbe081a19, 0xbe084570, 0xbe08639b, 0xbe089837, 0xbe08f409, 0xbe09ab95, 0xbe0b66d0, 0xbe0e400a, 0xbe124df8,
     0xbe1bde02, 0xbe2f19c9, 0xbe4931bf, 0xbe685fbc, 0xbe89c95f, 0xbe96cbca, 0xbe8044aa, 0xbe0550f2, 0x3dcfd6a1,
     0x3e94c826, 0x3e79345f, 0x3decec91, 0x3ca46568, 0x3aa1e00a, 0, 0],
    [0xba3d61db, 0x39f097a3, 0x3a5845dc, 0x3ab1fa35, 0x3b0cefb8, 0x3b653ab6, 0x3bcae527, 0x3c221712, 0x3c6c5840,
     0x3cc0a703, 0x3d1dcc19, 0x3d63656d, 0x3d955907, 0x3dbf9910, 0x3dd53f69, 0x3db7dcef, 0x3d639ebe, 0xba6ede48,
     0xbd22be69, 0xbd041cf1, 0xbc64f5ab, 0xbb097a32, 0xb8ebf380, 0, 0],
    [0x3cb7d80c, 0x3c9b6050, 0x3c978d11, 0x3c92e850, 0x3c8d058b, 0x3c848454, 0x3c6cd623, 0x3c4c824b, 0x3c2a7935,
     0x3be0b390, 0x3b0651ac, 0xbb232f53, 0xbbd42fa0, 0xbc2c5366, 0xbc492c9e, 0xbc2a7aa6, 0xbbd55d04, 0xba823a76,
     0x3b102aa8, 0x3ae25a7e, 0x3a31f792, 0x38b84375, 0x3689bb5a, 0, 0]], np.uint32).view(_F32)
_GELU_ERF_TABLE_ADDRESS = _GELU_ERF_POLYNOMIALS.ctypes.data  # (C order: a row of 25 a degree)
_GELU_ERF_INDEX_BIAS = np.array(0xc21fffff, np.uint32).view(np.int32)  # (|x|'s bits plus this, >> 21: the index)
_GELU_ERF_SATURATED = np.array(0x40b15cee, np.uint32).view(_F32)  # (beyond it, 5.54: polynomial 23, erf = 1)
# the machine's own AVX-512 (oneDNN's JIT reads the CPU, not ATEN_CPU_CAPABILITY)
ONEDNN_AVX512 = torch_cpu_capability(environ={}) == "avx512"


def onednn_gelu_erf(x):
    """oneDNN's AVX-512 gelu_erf of a float32 array: ``(x (1 + sign(x) P_i(|x|))) 0.5``, ``P_i`` the minimax
    polynomial for |x|'s binade quarter (the last, 23, is 1 beyond 5.54; NaN takes 24: x itself, NaN)."""
    x = np.asarray(x, _F32)
    library = _native_library()
    if library is not None:  # (the same steps compiled, minilora/native/float32_kernels.c)
        flat, out = np.ascontiguousarray(x).reshape(-1), np.empty(x.shape, _F32)
        _native_map(library.ml_gelu_erf_onednn, [flat, out.reshape(-1)], _GELU_ERF_TABLE_ADDRESS)
        return out
    magnitude = np.abs(x)
    with np.errstate(over="ignore"):
        index = (magnitude.view(np.int32) + _GELU_ERF_INDEX_BIAS) >> 21  # (int32 arithmetic wraps, as vpaddd)
    np.clip(index, 1, 24, out=index)
    index[_GELU_ERF_SATURATED < magnitude] = 23
    polynomial = _GELU_ERF_POLYNOMIALS[5][index]
    for degree in range(4, -1, -1):
        polynomial = fused_multiply_add(polynomial, magnitude, _GELU_ERF_POLYNOMIALS[degree][index])
    erf = np.where(np.signbit(x), -polynomial, polynomial)
    with np.errstate(invalid="ignore", over="ignore"):
        return (x * (erf + _F32(1))) * _F32(0.5)


# oneDNN's gelu_erf backward (torch's F.gelu gradient for the inputs whose forward ran oneDNN: gelu_backward_out_cpu
# asks the same use_mkldnn) is another formula than its forward: Abramowitz and Stegun's 7.1.26 for erf, with oneDNN's
# own exp (exp_compute_vector_fwd: 2^(n-1) times a degree-5 polynomial in r = x - n ln 2, times 2), in the JIT's
# order of products and fused multiply-adds. Its constants, as float32 bit patterns, from its table:
def _f32_bits(*patterns):
    return np.array(patterns, np.uint32).view(_F32)


_ONEDNN_LOG2E, _ONEDNN_LN_FLT_MAX, _ONEDNN_LN_FLT_MIN, _ONEDNN_LN2 = _f32_bits(0x3fb8aa3b, 0x42b17218, 0xc2aeac50,
                                                                             0x3f317218)
_ONEDNN_EXP_POLYNOMIAL = _f32_bits(0x3f7ffffb, 0x3efffee3, 0x3e2aad40, 0x3d2b9d0d, 0x3c07cfce)  # degrees 1..5
_ONEDNN_SQRT1_2, _ONEDNN_1_SQRT_PI, _ONEDNN_AS_P = _f32_bits(0x3f3504f3, 0x3f106eba, 0x3ea7ba05)
_ONEDNN_AS_POLYNOMIAL = _f32_bits(0x3e827906, 0xbe91a98e, 0x3fb5f0e3, 0xbfba00e3, 0x3f87dc22)  # degrees 1..5


def onednn_exp(x):
    """oneDNN's JIT exp of float32 ``x``: clamped to [ln FLT_MIN, ln FLT_MAX] (0 below), n = floor(x log2 e + 0.5),
    r = x - n ln 2 (fused), the polynomial by Horner's rule in fused multiply-adds, times 2^(n-1), times 2."""
    x = np.asarray(x, _F32)
    underflows = x < _ONEDNN_LN_FLT_MIN
    clamped = np.maximum(np.minimum(x, _ONEDNN_LN_FLT_MAX), _ONEDNN_LN_FLT_MIN)  # (NaN: its min/max keep the bound)
    n = np.floor(clamped * _ONEDNN_LOG2E + _F32(0.5))
    r = fused_multiply_add(-n, _ONEDNN_LN2, clamped)
    with np.errstate(invalid="ignore"):
        half_scale = np.where(underflows, 0, ((n - _F32(1)).astype(np.int32) + 127) << 23).astype(np.int32)
    polynomial = _ONEDNN_EXP_POLYNOMIAL[4]
    for coefficient in _ONEDNN_EXP_POLYNOMIAL[3::-1]:
        polynomial = fused_multiply_add(polynomial, r, coefficient)
    polynomial = fused_multiply_add(polynomial, r, _F32(1))
    with np.errstate(over="ignore", invalid="ignore"):
        return (polynomial * half_scale.view(_F32)) * _F32(2)


def onednn_gelu_erf_derivative(x):
    """oneDNN's gelu_erf backward factor of float32 ``x`` (the gradient is it times the incoming one, rounded once):
    with u = x / sqrt 2, q = exp(-u^2) and w = 1 / (p |u| + 1), erf(u) = sign(u) (1 - q w P(w)) and the derivative
    0.5 erf(u) + (u q / sqrt(pi) + 0.5). Computed, on an AVX-512 machine, for exactly the inputs ``gelu_erf`` sends
    to oneDNN."""
    x = np.asarray(x, _F32)
    compiled = _natively("ml_gelu_erf_onednn_derivative", x)  # (the same steps compiled: float32_kernels.c)
    if compiled is not None:
        return compiled
    with np.errstate(over="ignore", invalid="ignore"):
        u = x * _ONEDNN_SQRT1_2
        q = onednn_exp(-(u * u))
        slope = (u * _ONEDNN_1_SQRT_PI) * q
        w = _F32(1) / fused_multiply_add(_ONEDNN_AS_P, np.abs(u), _F32(1))
        polynomial = _ONEDNN_AS_POLYNOMIAL[4]
        for coefficient in _ONEDNN_AS_POLYNOMIAL[3::-1]:
            polynomial = fused_multiply_add(polynomial, w, coefficient)
        erf = fused_multiply_add((-q) * w, polynomial, _F32(1))
        erf = np.where(np.signbit(u), -erf, erf)
        return fused_multiply_add(erf, _F32(0.5), slope + _F32(0.5))


def onednn_runs_gelu_erf(x, onednn=True):
    """Does torch's float32 F.gelu (and its backward) of ``x`` run oneDNN's kernel, one minilora reproduces (see
    gelu_erf)? (A float16 ``x`` only where oneDNN has fp16 arithmetic, AVX512-FP16: ATen's use_mkldnn device check;
    an AMD Zen 4 runs ATen's loop.)"""
    if x.dtype == np.float16 and not cpu_features().get("AVX512FP16"):
        return False
    return onednn and x.flags.c_contiguous and x.size > 1 and ONEDNN_AVX512


# ATen's loop (a strided input, one element, no oneDNN): x 0.5 (1 + erf(x / sqrt 2)) with Vectorized<float>::erf
# in the vectorized body -- Abramowitz and Stegun's 7.1.26 with SLEEF's exp: 1 - t P(t) e^(-x^2), t = 1 / (1 + p |x|)
# -- and C's erff in the scalar tail (torch's "default" build: erff everywhere).
_AS_P = _F32(0.3275911)
_AS_POLYNOMIAL = [_F32(c) for c in (1.061405429, -1.453152027, 1.421413741, -0.284496736, 0.254829592)]
_SQRT1_2 = _F32(0.7071067811865476)  # M_SQRT1_2 as the kernel's float


def aten_erf(x):
    """ATen's vectorized float32 erf (``Vectorized<float>::erf``, AVX2 and AVX-512 alike; fused multiply-adds)."""
    x = np.asarray(x, _F32)
    t = _F32(1) / fused_multiply_add(_AS_P, np.abs(x), _F32(1))
    r = np.full_like(t, _AS_POLYNOMIAL[0])
    for c in _AS_POLYNOMIAL[1:]:
        r = fused_multiply_add(r, t, c)
    with np.errstate(over="ignore"):
        e = sleef_exp(-(x * x))
    erf = fused_multiply_add(-e * t, r, _F32(1))
    return np.where(np.signbit(x), -erf, erf)


def gelu_erf(x, onednn=True, positions=None):
    """torch's float32 ``F.gelu(x)`` (the exact form): oneDNN's kernel for a C-contiguous array of 2+ elements
    on an AVX-512 machine (``onednn_gelu_erf``) while ``onednn`` (torch.backends.mkldnn.enabled), else ATen's loop (``aten_erf`` in the vectorized body, C's
    erff in the scalar tail: ``scalar_positions``, with GeluKernelImpl's grain).
    None where torch's kernel is not reproduced: oneDNN's AVX2 code (its own exp in Abramowitz and Stegun's
    formula) on a CPU without AVX-512."""
    x = np.asarray(x, _F32)
    if onednn and x.flags.c_contiguous and x.size > 1:  # (onednn_runs_gelu_erf, but for the AVX2 kernel: None)
        return onednn_gelu_erf(x) if ONEDNN_AVX512 else None
    half_x = x * _F32(0.5)
    scaled = x * _SQRT1_2
    erf = c_function("erff", scaled) if CPU_CAPABILITY == "default" else aten_erf(scaled)
    flat_erf, flat = erf.reshape(-1), np.ascontiguousarray(scaled).reshape(-1)
    grain = x.size // parallel.num_threads() if x.size > _GELU_MULTI_THREADING else None  # (GeluKernelImpl's)
    for where in scalar_positions(x, grain=grain) if positions is None else positions:
        flat_erf[where] = c_function("erff", flat[where])
    with np.errstate(invalid="ignore"):
        return half_x * (_F32(1) + erf)


_GELU_MULTI_THREADING = 16384  # GeluKernelImpl's: past it, its grain size is numel / threads
_GELU_PDF_BETA = _F32(2 / math.sqrt(math.pi) * math.sqrt(0.5) * 0.5)  # (M_2_SQRTPI * M_SQRT1_2 * 0.5)


def aten_gelu_erf_derivative(x, grad):
    """ATen's float32 gelu backward factor (GeluBackwardKernelImpl, for the inputs oneDNN does not take), the gradient
    being it times the incoming one ``grad``, as a C-ordered array of ``x``'s shape: cdf + x pdf with cdf = (erf(x /
    sqrt 2) + 1) 0.5 and pdf = exp((-0.5 x) x) beta, the sum a fused multiply-add, in the vectorized body
    (``aten_erf``, SLEEF's exp); 0.5 (1 + erff) + x (beta expf(x x (-0.5))) unfused in the scalar tail (C's
    functions), which ``scalar_positions`` finds from both operands' layouts (a gradient laid out otherwise than
    ``x``: the scalar loop throughout)."""
    positions = scalar_positions(x, grad)
    x = np.ascontiguousarray(x, _F32)
    with np.errstate(over="ignore", invalid="ignore"):
        cdf = (aten_erf(x * _SQRT1_2) + _F32(1)) * _F32(0.5)
        pdf = sleef_exp((_F32(-0.5) * x) * x) * _GELU_PDF_BETA
        derivative = np.ascontiguousarray(fused_multiply_add(x, pdf, cdf))
        flat_derivative, flat = derivative.reshape(-1), x.reshape(-1)  # (views: the tail written in place)
        for where in positions:
            tail = flat[where]
            tail_cdf = _F32(0.5) * (_F32(1) + c_function("erff", tail * _SQRT1_2))
            tail_pdf = _GELU_PDF_BETA * c_function("expf", (tail * tail) * _F32(-0.5))
            flat_derivative[where] = tail_cdf + tail * tail_pdf
    return derivative


def gelu_erf64(x):
    """torch's float64 ``F.gelu(x)`` (the exact form: ATen's loop, oneDNN takes no float64): ``(x 0.5) (1 +
    erf(x / sqrt 2))``, erf SLEEF's in vectors (``sleef_erf64``), C's in the scalar lambda."""
    x = np.asarray(x, _F64)
    with np.errstate(invalid="ignore"):
        return (x * 0.5) * (1 + loop64("erf", x * _SQRT1_2_64, (x,)))


_SQRT1_2_64 = math.sqrt(0.5)
_GELU_PDF_BETA64 = 2 / math.sqrt(math.pi) * math.sqrt(0.5) * 0.5


def gelu_erf_derivative64(x, grad):
    """torch's float64 gelu backward factor (``aten_gelu_erf_derivative``'s formula in double), C order: ``cdf + x
    pdf`` fused in the vectorized body, unfused with C's erf and exp in the scalar lambda of the loop over
    ``(grad, x)``."""
    positions, shape = scalar_positions(grad, x, step=FLOAT_LANES), np.shape(x)
    x = np.ascontiguousarray(x, _F64)  # (a 0-d x comes out 1-d: the result takes x's shape back)
    with np.errstate(over="ignore", invalid="ignore"):
        cdf = (vectorized64("erf", x * _SQRT1_2_64) + 1) * 0.5
        pdf = vectorized64("exp", (x * x) * -0.5) * _GELU_PDF_BETA64
        derivative = np.ascontiguousarray(fused_multiply_add64(x, pdf, cdf) if FUSED_MULTIPLY_ADD else cdf + x * pdf)
        flat_derivative, flat = derivative.reshape(-1), x.reshape(-1)
        for where in positions:
            tail = flat[where]
            tail_cdf = 0.5 * (1 + c_function64("erf", tail * _SQRT1_2_64))
            flat_derivative[where] = tail_cdf + tail * (_GELU_PDF_BETA64 * c_function64("exp", (tail * tail) * -0.5))
    return derivative.reshape(shape)


def _two_like(x):
    """Two new float32 arrays of x's shape, for a compiled kernel's two results."""
    return [np.empty(np.shape(x), _F32) for _ in range(2)]


# ---- Sleef_log1pf16_u10 ----------------------------------------------------------------------------
# log(1 + d) = e ln 2 + log(m') with 1 + d = 2^e m' (m' in [0.75, 1.5)), log(m') = 2 atanh(x) for
# x = (m' - 1) / (m' + 1), taken as m / (2 + m) with m = d 2^-e + (2^-e - 1) so 1 + d is never rounded;
# 2x + x^3 P(x^2) and e ln 2 in double-float. (AVX-512's branch: e from the getexp instruction.)
_LN2_HI, _LN2_LO = _F32(0.69314718246459960938), _F32(-1.904654323148236017e-09)


def _sleef_log1p_slice(d, out):
    """``out = Sleef_log1pf16_u10(d)`` for one cache-sized float32 slice."""
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        scaled = (d + _F32(1)) * _F32(1 / 0.75)
        e = (np.frexp(scaled)[1] - 1).astype(_F32)  # getexp: floor(log2 |v|)
        e[np.isinf(scaled)] = 128
        t = np.ldexp(_F32(1), -np.nan_to_num(e).astype(np.int32)).astype(_F32)
        m = _fma32(d, t, t - _F32(1))
        s = _df_mul_float((_LN2_HI, _LN2_LO), e)
        two_plus_m = _F32(2) + m
        x = _df_divide((m, np.zeros_like(m)), (two_plus_m, (_F32(2) - two_plus_m) + m))
        x2 = x[0] * x[0]
        p = _fma32(_fma32(_F32(0.3027294874), x2, _F32(0.3996108174)), x2, _F32(0.6666694880))
        hi = s[0] + x[0] * 2  # s + 2x (SLEEF's dfadd, |s| >= |2x|), then + x^3 p
        s = hi, (((s[0] - hi) + x[0] * 2) + s[1]) + x[1] * 2
        tail = x2 * x[0] * p
        hi = s[0] + tail
        np.add(hi, ((s[0] - hi) + tail) + s[1], out=out)
    out[d == np.inf] = np.inf
    out[d < -1] = np.nan
    out[d == -1] = -np.inf
    _keep_negative_zero_and_nan(d, out)


def sleef_log(x):
    """``Sleef_logf16_u10`` (torch's ``Vectorized<float>::log``, AVX-512's branch: the exponent of ``x / 0.75`` by
    getexp, the mantissa in [0.75, 1.5) by getmant; AVX2's gives the same): ``e ln 2 + 2 t + t^3 p(t^2)`` with
    ``t = (m - 1) / (m + 1)`` and the sums in double-float, as ``sleef_log1p``; log_softmax's log of its sums."""
    compiled = _natively("ml_log", x)
    if compiled is not None:
        return compiled
    d = np.asarray(x, _F32, order="C")  # (C order, as the compiled kernel's result)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        e = (np.frexp(d * _F32(1 / 0.75))[1] - 1).astype(_F32)  # getexp: floor(log2 |v|)
        e = np.where(np.isinf(d), _F32(128), e)
        fraction = np.frexp(d)[0].astype(_F32)  # in [0.5, 1)
        m = np.where(np.abs(fraction) < _F32(0.75), fraction * _F32(2), fraction)  # getmant: [0.75, 1.5)
        s = _df_mul_float((_LN2_HI, _LN2_LO), e)
        numerator = m - _F32(1)  # (exact: SLEEF's dfadd2(-1, m) has no low part)
        denominator_hi = _F32(1) + m
        v = denominator_hi - _F32(1)
        denominator = denominator_hi, (_F32(1) - (denominator_hi - v)) + (m - v)  # (TwoSum: dfadd2(1, m))
        t = _df_divide((numerator, np.zeros_like(m)), denominator)
        t2 = t[0] * t[0]
        p = _fma32(_fma32(_F32(0.3027294874), t2, _F32(0.3996108174)), t2, _F32(0.6666694880))
        hi = s[0] + t[0] * 2  # s + 2t (SLEEF's dfadd), then + t^3 p
        s = hi, (((s[0] - hi) + t[0] * 2) + s[1]) + t[1] * 2
        tail = t2 * t[0] * p
        hi = s[0] + tail
        out = hi + (((s[0] - hi) + tail) + s[1])
    out = np.where(d == np.inf, _F32(np.inf), out)
    out = np.where((d < 0) | np.isnan(d), _F32(np.nan), out)
    return np.where(d == 0, _F32(-np.inf), out).astype(_F32, copy=False)


# ---- Sleef_log1pd8_u10 ----------------------------------------------------------------------------
# The double version of the float32 formula above (torch.log1p's float64 kernel on every element, logsigmoid's and
# softplus' vectorized log1p): e from getexp of (1 + d) / 0.75, m = d 2^-e + (2^-e - 1), x = m / (2 + m) and
# e ln 2 + 2x + x^3 P(x^2) in double-double, P by Estrin's scheme in fused multiply-adds.
_SLEEF_LOG1P64_POLY = (0.1532076988502701353e+0, 0.1525629051003428716e+0, 0.1818605932937785996e+0,
                       0.2222214519839380009e+0, 0.2857142932794299317e+0, 0.3999999999635251990e+0,
                       0.6666666666667333541e+0)  # (highest power of x^2 first)
_LN2_DD = (0.693147180559945286226764, 2.319046813846299558417771e-17)  # ln 2 as a double-double
_LN2_HI64 = _LN2_DD[0]
_HALF_PI_DD = (1.570796326794896557998982, 6.12323399573676603586882e-17)
_TWO_THIRDS_DD = (0.666666666666666629659233, 3.80554962542412056336616e-17)


def _dd_constant(constant, like):
    """A double-double constant spread to ``like``'s shape."""
    return np.full_like(like, constant[0]), np.full_like(like, constant[1])


@_on_flat_doubles
def sleef_log1p64(d):
    """``Sleef_log1pd8_u10`` (torch's ``Vectorized<double>::log1p``, AVX-512's branch: the exponent by getexp) of a
    float64 array. NumPy's float64 log1p (and C's) differ from it in ~40% of elements near 0."""
    compiled = _sleef64_natively("log1p", d)
    if compiled is not None:
        return compiled
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        scaled = (d + 1) * (1 / 0.75)
        e = (np.frexp(scaled)[1] - 1).astype(_F64)  # getexp: floor(log2 |v|)
        e[np.isinf(scaled)] = 1024
        t = np.ldexp(1.0, -np.where(np.isfinite(scaled) & (scaled != 0), e, 0).astype(np.int64))
        m = _fma64_like(d, t, t - 1)
        s_hi = _LN2_HI64 * e  # ddmul((ln2 hi, lo), e)
        s_lo = _dd_mul(_dd_constant(_LN2_DD, e), (e, None))[1]
        two_plus_m = 2 + m  # ddadd(2, m)
        x_hi, x_lo = _dd_divide64(m, np.zeros_like(m), two_plus_m, (2 - two_plus_m) + m)
        x2 = x_hi * x_hi
        x4 = x2 * x2
        p = _sleef_poly([x2, x4, x4 * x4], _SLEEF_LOG1P64_POLY)
        hi = s_hi + x_hi * 2  # ddadd(s, 2x), then + x^3 P
        s_lo = (((s_hi - hi) + x_hi * 2) + s_lo) + x_lo * 2
        tail = (x2 * x_hi) * p
        s_hi, hi = hi, hi + tail
        out = hi + (((s_hi - hi) + tail) + s_lo)
    big = d > 1e307  # (past SLEEF's LOG1P_BOUND: its log, xlog_u1, here C's, as the compiled kernel's)
    out[big] = c_function64("log", d[big])
    out[(d < -1) | np.isnan(d)] = np.nan
    out[d == -1] = -np.inf
    out[(d == 0) & np.signbit(d)] = -0.0
    return out


# ---- Sleef_sinhd8_u10, coshd8_u10, tanhd8_u10 -------------------------------------------------------
# e = e^|x| in double-double (SLEEF's expk2: |x| - q ln 2 in two steps, its polynomial by Estrin's scheme, the
# low-order terms in double-double), its reciprocal in double-double, then (e -+ 1/e) / 2 or (e - 1/e) / (e + 1/e).
# Each double-double step is SLEEF's with fused multiply-adds (dd.h's FMA branch).
_SLEEF_EXPK2_POLY = (0.1602472219709932072e-9, 0.2092255183563157007e-8, 0.2505230023782644465e-7,
                     0.2755724800902135303e-6, 0.2755731892386044373e-5, 0.2480158735605815065e-4,
                     0.1984126984148071858e-3, 0.1388888888886763255e-2, 0.8333333333333347095e-2,
                     0.4166666666666669905e-1)


def _dd_add_fast(x, y):
    """``ddadd`` of two double-doubles, ``|x| >= |y|`` (Fast2Sum of the high parts)."""
    s = x[0] + y[0]
    return s, (((x[0] - s) + y[0]) + x[1]) + y[1]


def _dd_mul(x, y):
    """``ddmul`` of two double-doubles (``y`` a double: ``(y, 0)``), the product's error by fused multiply-adds."""
    fma = fused_multiply_add64
    s = x[0] * y[0]
    if y[1] is None:
        return s, fma(x[1], y[0], fma(x[0], y[0], -s))
    return s, fma(x[0], y[1], fma(x[1], y[0], fma(x[0], y[0], -s)))


def _dd_square(x):
    s = x[0] * x[0]
    return s, fused_multiply_add64(x[0] + x[0], x[1], fused_multiply_add64(x[0], x[0], -s))


def _dd_reciprocal64(d):
    hi = 1 / d[0]
    return hi, hi * fused_multiply_add64(-d[1], hi, _fma64_like(-d[0], hi, 1.0))


def _sleef_expk2_64(y):
    """SLEEF's double ``expk2`` of ``(y, 0)``: e^y as a double-double (both parts 0 below -1000)."""
    dq = np.rint(y * 1.442695040888963407359924681001892137426645954152985934135449406931)
    s = _df_add_float((y, np.zeros_like(y)), dq * -.69314718055966295651160180568695068359375)
    s = _df_add_float(s, dq * -.28235290563031577122588448175013436025525412068e-12)
    s2 = _dd_square(s)
    s4 = _dd_square(s2)
    u = _sleef_poly([s[0], s2[0], s4[0], s4[0] * s4[0]], _SLEEF_EXPK2_POLY)
    one = np.ones_like(y)
    t = _dd_add_fast((one * 0.5, 0.0), _dd_mul(s, (one * 0.1666666666666666574e+0, None)))
    t = _dd_add_fast((one, 0.0), _dd_mul(t, s))
    t = _dd_add_fast((one, 0.0), _dd_mul(t, s))
    t = _dd_add_fast(t, _dd_mul(s4, (u, None)))
    hi, lo = _times_power_of_two(t[0], dq), _times_power_of_two(t[1], dq)
    vanished = y < -1000
    return np.where(vanished, 0.0, hi), np.where(vanished, 0.0, lo)


@_on_flat_doubles
def sleef_expm1_64(a):
    """``Sleef_expm1d8_u10`` (torch's ``Vectorized<double>::expm1``: torch.expm1's float64 kernel on every element,
    elu's vectors) of a float64 array: expk2's double-double e^a minus 1 (TwoSum), rounded once."""
    compiled = _sleef64_natively("expm1", a)
    if compiled is not None:
        return compiled
    with np.errstate(over="ignore", invalid="ignore"):
        d = _df_add_float(_sleef_expk2_64(a), -1.0)
        out = d[0] + d[1]
    out = np.where(a > 709.782712893383996732223, np.inf, out)
    out = np.where(a < -36.736800569677101399113302437, -1.0, out)
    return np.where((a == 0) & np.signbit(a), -0.0, out)


@_on_flat_doubles
def sleef_hyperbolic64(name, x):
    """``Sleef_sinhd8_u10`` / ``coshd8_u10`` / ``tanhd8_u10`` (``name``) of a float64 array: torch's double
    ``Vectorized`` sinh, cosh and tanh (torch.sinh's and torch.cosh's vectors, mish's and gelu's tanh; torch.tanh
    itself is MKL's)."""
    compiled = _sleef64_natively(name, x)
    if compiled is not None:
        return compiled
    y = np.abs(x)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        e = _sleef_expk2_64(y)
        r = _dd_reciprocal64(e)
        if name == "tanh":
            d = _dd_divide64(*_df_add(e, (-r[0], -r[1])), *_df_add(e, r))
            out = d[0] + d[1]
            out = np.where((y > 18.714973875) | np.isnan(out), 1.0, out)
        else:
            d = _dd_add_fast(e, r if name == "cosh" else (-r[0], -r[1]))
            out = (d[0] + d[1]) * 0.5
            out = np.where((y > 710) | np.isnan(out), np.inf, out)
    if name != "cosh":
        out = np.copysign(out, x)
    return np.where(np.isnan(x), x, out)


# ---- Sleef_atanhd8_u10 and Sleef_erfd8_u10 ----------------------------------------------------------------
# atanh |x| = ln((1 + |x|) / (1 - |x|)) / 2 with the quotient and the log (SLEEF's logk2: e ln 2 + 2 t + t^3 P(t^2),
# t = (m - 1) / (m + 1)) in double-double. erf |x| = 1 - (1 + x P(x))^-16 up to 2.5 (Abramowitz and Stegun's form),
# 1 - e^(x Q(x)) beyond: P and Q of degree 23, their top 21 coefficients by Estrin's scheme, the low three and
# everything after in double-double. (torch's float64 F.gelu and atanh take these in vectors of 8; torch.erf is
# MKL's.)
_SLEEF_LOGK2_64_POLY = (0.13860436390467167910856, 0.131699838841615374240845, 0.153914168346271945653214,
                        0.181816523941564611721589, 0.22222224632662035403996, 0.285714285511134091777308,
                        0.400000000000914013309483)


def _sleef_logk2_64(d):
    """SLEEF's double ``logk2``: ln of a double-double d > 0, as one."""
    with np.errstate(all="ignore"):
        e = np.frexp(d[0] * (1 / 0.75))[1] - 1  # getexp: floor(log2 |v|)
        m = np.ldexp(d[0], -e), np.ldexp(d[1], -e)
    x = _dd_divide64(*_df_add_float(m, -1.0), *_df_add_float(m, 1.0))
    x2 = _dd_square(x)
    x4 = x2[0] * x2[0]
    t = _fma64_like(_sleef_poly([x2[0], x4, x4 * x4], _SLEEF_LOGK2_64_POLY), x2[0], 0.666666666666664853302393)
    e = e.astype(_F64)
    s = _dd_mul(_dd_constant(_LN2_DD, e), (e, None))
    s = _dd_add_fast(s, (x[0] * 2, x[1] * 2))
    return _dd_add_fast(s, _dd_mul(_dd_mul(x2, x), (t, None)))


@_on_flat_doubles
def sleef_atanh64(x):
    """``Sleef_atanhd8_u10`` (torch's ``Vectorized<double>::atanh``) of a float64 array: ``logk2((1 + |x|) / (1 -
    |x|)) / 2`` in double-double, the sign put back; NaN past 1 and at infinity, infinite at 1."""
    compiled = _sleef64_natively("atanh", x)
    if compiled is not None:
        return compiled
    y = np.abs(x)
    with np.errstate(all="ignore"):
        d = _sleef_logk2_64(_dd_divide64(*two_sum(1.0, y), *two_sum(1.0, -y)))
        out = np.where(y > 1, np.nan, np.where(y == 1, np.inf, (d[0] + d[1]) * 0.5))
        out = np.where(np.isinf(x) | np.isnan(out), np.nan, out)
    return np.where(np.isnan(x), x, np.copysign(out, x))


_ERF_NEAR_POLY = (-0.2083271002525222097e-14, +0.7151909970790897009e-13, -0.1162238220110999364e-11,
                  +0.1186474230821585259e-10, -0.8499973178354613440e-10, +0.4507647462598841629e-9,
                  -0.1808044474288848915e-8, +0.5435081826716212389e-8, -0.1143939895758628484e-7,
                  +0.1215442362680889243e-7, +0.1669878756181250355e-7, -0.9808074602255194288e-7,
                  +0.1389000557865837204e-6, +0.2945514529987331866e-6, -0.1842918273003998283e-5,
                  +0.3417987836115362136e-5, +0.3860236356493129101e-5, -0.3309403072749947546e-4,
                  +0.1060862922597579532e-3, +0.2323253155213076174e-3, +0.1490149719145544729e-3)  # |x| <= 2.5
_ERF_FAR_POLY = (-0.4024015130752621932e-18, +0.3847193332817048172e-16, -0.1749316241455644088e-14,
                 +0.5029618322872872715e-13, -0.1025221466851463164e-11, +0.1573695559331945583e-10,
                 -0.1884658558040203709e-9, +0.1798167853032159309e-8, -0.1380745342355033142e-7,
                 +0.8525705726469103499e-7, -0.4160448058101303405e-6, +0.1517272660008588485e-5,
                 -0.3341634127317201697e-5, -0.2515023395879724513e-5, +0.6539731269664907554e-4,
                 -0.3551065097428388658e-3, +0.1210736097958368864e-2, -0.2605566912579998680e-2,
                 +0.1252823202436093193e-2, +0.1820191395263313222e-1, -0.1021557155453465954e+0)
_ERF_NEAR_DD = ((0.0092877958392275604405, 7.9287559463961107493e-19),  # (the low three, degree 2 first)
                (0.042275531758784692937, 1.3785226620501016138e-19),
                (0.07052369794346953491, 9.5846628070792092842e-19))
_ERF_FAR_DD = ((-0.63691044383641748361, -2.4249477526539431839e-17),
               (-1.1282926061803961737, -6.2970338860410996505e-17),
               (-1.2261313785184804967e-05, -5.5329707514490107044e-22))


def _erf_polynomial(x, near):
    """P(x) (``near``: |x| <= 2.5) or Q(x) of ``erf``'s two forms as a double-double."""
    x2 = x * x
    x4 = x2 * x2
    x8 = x4 * x4
    top = _sleef_poly([x, x2, x4, x8, x8 * x8], [np.where(near, a, b) for a, b in zip(_ERF_NEAR_POLY, _ERF_FAR_POLY)])
    c2, c1, c0 = ([np.where(near, a[k], b[k]) for k in range(2)] for a, b in zip(_ERF_NEAR_DD, _ERF_FAR_DD))
    high = _dd_add_fast(c2, _dd_mul((top, np.zeros_like(x)), (x, None)))
    return _dd_add_fast(_dd_add_fast(c0, _dd_mul(c1, (x, None))), _dd_mul(high, (x2, None)))


@_on_flat_doubles
def sleef_erf64(a):
    """``Sleef_erfd8_u10`` (torch's ``Vectorized<double>::erf``: float64 F.gelu's vectors) of a float64 array."""
    compiled = _sleef64_natively("erf", a)
    if compiled is not None:
        return compiled
    x = np.abs(a)
    near = x <= 2.5
    with np.errstate(all="ignore"):
        p = _erf_polynomial(x, near)
        s = _dd_mul(p, (x, None))
        hi = 1 + s[0]
        power = hi, ((1 - hi) + s[0]) + s[1]  # 1 + x P (SLEEF's ddadd of a double), its 16th power's reciprocal
        for _ in range(4):
            power = _dd_square(power)
        power = _dd_reciprocal64(power)
        t = _df_add_float((np.where(near, power[0], _sleef_expk64(p)), np.where(near, power[1], 0.0)), -1.0)
        z = -(t[0] + t[1])
    z = np.where(x < 1e-8, x * 1.12837916709551262756245475959, z)
    z = np.where((x >= 6) | np.isinf(a), 1.0, z)
    return _mulsign(np.where(a == 0, 0.0, z), a)


def _dd_divide64(n_hi, n_lo, d_hi, d_lo):
    """SLEEF's ``dddiv`` with fused multiply-adds: (n_hi + n_lo) / (d_hi + d_lo) as a double-double."""
    t = 1 / d_hi
    hi = n_hi * t
    u = fused_multiply_add64(t, n_hi, -hi)
    v = fused_multiply_add64(-d_lo, t, _fma64_like(-d_hi, t, 1.0))
    return hi, fused_multiply_add64(hi, v, fused_multiply_add64(n_lo, t, u))


def sleef_log1p(x):
    """``Sleef_log1pf16_u10`` (torch's ``Vectorized<float>::log1p``) of a float32 array."""
    compiled = _natively("ml_log1p", x)
    if compiled is not None:
        return compiled
    return _modelled(_log1p_model, _sleef_log1p_slice, x, (-0.99, 1e30), _LOG1P_SMALL_BITS)


_LOG1P_C = {"4/3": _const(1 / 0.75, _F32), "one": _const(1, _F32), "two": _const(2, _F32),
            "c0": _const(float(_F32(0.3027294874)), _F64), "ln2": _const(float(_LN2_HI) + float(_LN2_LO), _F64),
            "two64": _const(2, _F64)}
_LOG1P_P_STEPS = [(_const(float(_F32(c)) + 1.5 * 2 ** (e + 29), _F64), _const(1.5 * 2 ** (e + 29), _F64))
                  for c, e in ((0.3996108174, -2), (0.6666694880, -1))]  # (p's steps stay in these binades)


def _log1p_model(d, scratch):
    """SLEEF's ``log1pf`` in float64 (in ``scratch.w``): ``e ln 2 + 2 x + x^3 p(x^2)`` with the port's
    float32 ``e``, ``m``, ``x``'s high part and its float32 ``x^3 p`` exact, ``x = m / (2 + m)`` unrounded."""
    m, t, x0, x2 = scratch.q, scratch.h, scratch.r, scratch.v
    e64, u, w = scratch.s, scratch.u, scratch.w
    exponent = t.view(np.int32)
    np.add(d, _LOG1P_C["one"], m)
    np.multiply(m, _LOG1P_C["4/3"], m)  # (1 + d) / 0.75, its exponent e = floor(log2): getexp
    np.right_shift(m.view(np.int32), np.int32(23), exponent)
    np.subtract(exponent, np.int32(127), exponent)
    np.copyto(e64, exponent)
    np.subtract(np.int32(127), exponent, exponent)
    np.left_shift(exponent, np.int32(23), exponent)  # t = 2^-e
    np.multiply(d, t, m)  # exact
    np.subtract(t, _LOG1P_C["one"], t)
    np.add(m, t, m)  # m = fma(d, t, t - 1): d t is exact, so one rounding
    np.add(m, _LOG1P_C["two"], t)
    np.divide(_LOG1P_C["one"], t, x0)
    np.multiply(m, x0, x0)  # x's high part, as the port's double-float division: m (1 / (2 + m))
    np.multiply(x0, x0, x2)
    w[...] = x2
    np.multiply(w, _LOG1P_C["c0"], u)  # p = fma(fma(c0, x2, c1), x2, c2), each rounded as float32
    for index, (c_plus_magic, magic) in enumerate(_LOG1P_P_STEPS):
        if index:
            np.multiply(u, w, u)
        np.add(u, c_plus_magic, u)
        np.subtract(u, magic, u)
    t[...] = u
    np.multiply(x2, x0, x2)
    np.multiply(x2, t, x2)  # x^3 p, the port's float32 tail
    w[...] = m
    np.add(w, _LOG1P_C["two64"], u)
    np.divide(w, u, w)
    np.multiply(w, _LOG1P_C["two64"], w)  # 2 x
    np.multiply(e64, _LOG1P_C["ln2"], e64)
    np.add(w, e64, w)
    u[...] = x2
    np.add(w, u, w)
    return w


def vectorized(name, x):
    """torch's ``Vectorized<float>::exp`` (``name``: ``"exp"``, ``"expm1"``, ``"log1p"``, ``"log"``) over every element
    of a float32 array, as ``torch.expm1`` runs it: SLEEF's, but under torch's "default" build C's
    function (``c_function``)."""
    if CPU_CAPABILITY == "default":
        return c_function(name + "f", x)
    return {"exp": sleef_exp, "expm1": sleef_expm1, "log1p": sleef_log1p, "log": sleef_log}[name](x)


def vectorized64(name, x):
    """torch's ``Vectorized<double>::exp`` / ``::exp2`` / ``::log1p`` / ``::log``... (``name``) of a float64 array:
    SLEEF's
    (``sleef_exp64``, ``sleef_exp2_64``, ``sleef_expm1_64``, ``sleef_log1p64``, ``sleef_hyperbolic64``,
    ``sleef_atanh64``, ``sleef_erf64``; C's under torch's "default" build); the log NumPy's."""
    if CPU_CAPABILITY == "default" and name != "log":
        return c_function64(name, x)
    return {"exp": sleef_exp64, "exp2": sleef_exp2_64, "log1p": sleef_log1p64, "log": np.log, "expm1": sleef_expm1_64,
            **{name: functools.partial(sleef_hyperbolic64, name) for name in ("sinh", "cosh", "tanh")},
            "atanh": sleef_atanh64, "erf": sleef_erf64}[name](x)


# ---- torch's elementwise loop: vectorized body, scalar tail --------------------------------------
_GRAIN_SIZE = 32768  # at::internal::GRAIN_SIZE: below it, one thread runs the whole loop
_VECTOR_STEP = 2 * FLOAT_LANES  # cpu_kernel_vec's vectorized loop takes two vectors at a time
HALF_STEP = 32  # its float16/bfloat16 step: 32 elements with AVX2 and AVX-512 alike (torch 2.13, measured)
# A kernel whose vector lambda takes Vectorized<Half/BFloat16> itself (GeluKernelImpl's reduced-float branch) steps two
# 16-bit vectors: 64 elements with AVX-512 (measured: F.gelu of 33 float16 numbers all scalar, of 64 all vector, on an
# AMD Zen 4, where oneDNN takes no float16), 32 with AVX2
HALF_VECTOR_STEP = 4 * FLOAT_LANES


def scalar_tail(n, threads=None, step=_VECTOR_STEP):
    """The ``(start, stop)`` ranges of an n-element contiguous result that torch's ``cpu_kernel_vec``
    computes with its scalar lambda: the last ``len % step`` of each chunk ``at::parallel_for`` hands a thread
    (one chunk below 32768 elements or on one thread); ``step``: two float vectors (32 with AVX-512, 16
    with AVX2), or ``HALF_STEP`` for float16/bfloat16. torch's "default" build: all of them, as far as the
    functions go (its vectorized ``exp`` is C's ``expf`` element by element)."""
    if CPU_CAPABILITY == "default":
        return [(0, n)]
    if n < _GRAIN_SIZE:  # (one chunk: the common case, per op and step, first)
        return [(n - n % step, n)] if n else []
    chunk = _thread_chunk(n, threads)
    return [(min(start + chunk, n) - (min(chunk, n - start) % step), min(start + chunk, n))
            for start in range(0, n, chunk or 1)]


def scalar_positions(*operands, step=_VECTOR_STEP, grain=None):
    """Where torch's ``cpu_kernel_vec`` runs its scalar lambda on operands of one shape (NumPy arrays, or numbers),
    as indices into the result's C order: a list of slices, or of one index array. C-contiguous operands: the
    tails of ``scalar_tail``. Other layouts as TensorIterator loops them: the dims in its order
    (reorder_dimensions' insertion sort by the operands' strides, where a broadcast stride of 0 decides nothing),
    those of size 1 dropped, neighbours stepping through memory as one merged; an innermost dim along which an
    operand is not contiguous (``x[::2]``, ``x[:, ::2]``), or two operands broadcast (stride 0:
    ``is_contiguous_scalar`` takes one), takes ``basic_loop``, the scalar lambda on every element; else each row
    of that dim (a thread's chunk cut at row ends) its last ``len % step`` (a transpose of a contiguous tensor:
    one row, in memory order)."""
    first = operands[0]
    if len(operands) == 1 and type(first) is np.ndarray and first.flags.c_contiguous and first.size < _GRAIN_SIZE:
        n = first.size  # (the common case first: one C-contiguous operand, one chunk)
        return [slice(0 if CPU_CAPABILITY == "default" else n - n % step, n)]
    arrays = [a for a in operands if np.ndim(a)]
    n = arrays[0].size if arrays else 1
    if n == 0 or all(type(a) is np.ndarray and a.flags.c_contiguous for a in arrays) or CPU_CAPABILITY == "default":
        return [slice(start, stop) for start, stop in scalar_tail(n, step=step)]
    shape = arrays[0].shape
    from .float32_sums import sort_dimensions  # (reorder_dimensions: a broadcast stride 0 has no say in the order)
    order = sort_dimensions(reversed(range(len(shape))), shape, [a.strides for a in arrays])  # (innermost first)
    dims = [d for d in reversed(order) if shape[d] > 1]  # (outermost first)
    rows = [[d] for d in dims[-1:]]
    for d in reversed(dims[:-1]):  # (merge d into the row inside it where every operand steps on through it)
        inner = rows[-1][0]
        if all(a.strides[d] == a.strides[inner] * shape[inner] for a in arrays):
            rows[-1].insert(0, d)
        else:
            rows.append([d])
    if not rows:
        return [slice(start, stop) for start, stop in scalar_tail(n, step=step)]
    inner = rows[0][-1]
    steps = [a.strides[inner] for a in arrays]
    if not all(step in (0, a.itemsize) for step, a in zip(steps, arrays)) or steps.count(0) > 1:
        return [slice(0, n)]  # (basic_loop: the vectorized loop takes one operand broadcast along the row, no more)
    row = int(np.prod([shape[d] for d in rows[0]]))
    rank = np.zeros(shape, np.intp)  # each element's place in the iterator's (memory) order
    multiplier = 1
    for d in reversed(dims):
        rank += (np.arange(shape[d]) * multiplier).reshape([-1 if k == d else 1 for k in range(len(shape))])
        multiplier *= shape[d]
    in_order = np.arange(n)
    chunk = _thread_chunk(n, grain=grain)
    piece_start = np.maximum(in_order - in_order % row, in_order - in_order % chunk)
    piece_stop = np.minimum(np.minimum(piece_start - piece_start % row + row, in_order - in_order % chunk + chunk), n)
    scalar = in_order >= piece_stop - (piece_stop - piece_start) % step
    return [np.flatnonzero(scalar[rank.reshape(-1)])]


def _one_loop(forward, backward):
    """Do two loops over arrays of one shape run their scalar lambda on the same elements? (Yes where every operand
    is C-contiguous, or a broadcast number: each loop's tail is the last ``n % step`` of the whole.)"""
    return all(not np.ndim(a) or a.flags.c_contiguous or not any(a.strides) for a in (*forward, *backward))


def relooped(saved, x, forward, backward, lambdas):
    """``saved``, a value minilora's forward computed for each element of ``x`` in the forward kernel's loop (over
    the operands ``forward``), as the backward kernel's loop (over ``backward``: the gradient, then ``x``) computes
    it again: silu's sigmoid, mish's and gelu's tanh, which torch's backward recomputes rather than saves. Where
    the loops take ``x``'s elements in other orders (a transposed input beside a contiguous gradient: basic_loop,
    all scalar), an element one computed with its vectorized lambda and the other with its scalar one (C's
    functions) is recomputed by the backward's: ``lambdas`` (vectorized, scalar) of those elements (``SIGMOID``,
    ``MISH_TANH``, ``GELU_TANH``). C order, ``x``'s shape."""
    if CPU_CAPABILITY == "default" or _one_loop(forward, backward):
        return saved
    was, now = _scalar_mask(forward, x.size), _scalar_mask(backward, x.size)
    changed = was != now
    if not changed.any():
        return saved
    out = np.array(saved, _F32, order="C")
    flat, values = out.reshape(-1), np.ascontiguousarray(x, _F32).reshape(-1)
    vector, scalar = lambdas
    for positions, formula in ((changed & now, scalar), (changed & was, vector)):
        if positions.any():
            flat[positions] = formula(values[positions])
    return out


def _scalar_mask(operands, n):
    mask = np.zeros(n, bool)
    for where in scalar_positions(*operands):
        mask[where] = True
    return mask


def _thread_chunk(n, threads=None, grain=None):
    """The elements ``at::parallel_for`` hands each thread of an n-element loop (all of them below its grain,
    ``grain`` or GRAIN_SIZE, 32768)."""
    threads = parallel.num_threads() if threads is None else threads
    grain = grain or _GRAIN_SIZE
    if n >= grain and threads > 1:
        return -(-n // min(threads, -(-n // grain)))
    return n


def _in_loop(x, vectorized, scalar, layout=None, step=_VECTOR_STEP):
    """``vectorized(x)``, with the positions of torch's scalar tail (``scalar_positions`` of ``layout``, the
    kernel's input or a tuple of its operands, where ``x`` is a value computed from them: a new array) computed by
    ``scalar`` instead: a
    float32 kernel whose two lambdas differ (float64: ``step=FLOAT_LANES``, two vectors of doubles), in ``x``'s C
    order."""
    flat = np.ascontiguousarray(x).reshape(-1)
    out = vectorized(flat)
    operands = layout if isinstance(layout, tuple) else (x if layout is None else layout,)
    for where in scalar_positions(*operands, step=step):
        out[where] = scalar(flat[where])
    return out.reshape(np.shape(x))


def softplus(x, beta, threshold):
    """torch's float32 ``softplus``: ``log1p(exp(beta x)) / beta`` (SLEEF's exp and log1p; C's in the
    scalar tail), ``x`` itself where ``beta x > threshold``."""
    beta, threshold = _F32(beta), _F32(threshold)

    def scalar(v):
        return c_function("log1pf", c_function("expf", v))

    def formula(x, log1p_exp):
        scaled = x * beta
        with np.errstate(over="ignore"):
            soft = log1p_exp(scaled) / beta
        return np.where(scaled > threshold, x, soft)
    compiled = _loop_natively("ml_softplus", [x], [np.empty(x.shape, _F32)], (beta, threshold),
                              lambda v: (formula(v, scalar),))
    if compiled is not None:
        return compiled[0]
    return formula(x, lambda v: _in_loop(v, lambda v: sleef_log1p(sleef_exp(v)), scalar, x))


def loop64(names, x, loop=None):
    """torch's double vector function ``names`` (``vectorized64``'s; a tuple: one after another, ``("exp",
    "log1p")`` is log1p(exp(x))) as a float64 elementwise kernel computes it inside its formula: in vectors of 8
    doubles, C's functions in the scalar lambda (the loop's tail, strided inputs: the ``scalar_positions`` of the
    loop's operands ``loop``, default ``x``). ``x``'s shape, C order."""
    names = (names,) if isinstance(names, str) else names

    def chain(function, v):
        for name in names:
            v = function(name, v)
        return v
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        return _in_loop(x, lambda v: chain(vectorized64, v), lambda v: chain(c_function64, v), loop, step=FLOAT_LANES)


def softplus64(x, beta, threshold):
    """torch's float64 ``softplus``: ``softplus``'s formula with SLEEF's double exp and log1p in vectors of 8, C's
    ``exp`` and ``log1p`` in the scalar lambda (the loop's tail, strided inputs)."""
    scaled = x * beta
    soft = loop64(("exp", "log1p"), scaled, (x,)) / beta
    return np.where(scaled > threshold, x, soft)


def logaddexp(a, b):
    """torch's float32 ``logaddexp`` of two arrays (broadcast, any layout): ``max(a, b) + log1p(exp(-|a - b|))``
    with SLEEF's exp and log1p, C's on the scalar tail of each row of torch's loop (any layout: scalar_positions),
    and ``a`` where both are the same infinity. (NumPy's float32 logaddexp: 8 ulps off near 0, where the sum
    cancels.)"""
    return _log_add_exp(a, b, base2=False)


_INV_LN2 = _F32(1.0 / 0.6931471805599453)  # logaddexp2's inv_log_2, rounded to float32 as torch's scalar_t


def logaddexp2(a, b):
    """torch's float32 ``logaddexp2``, as ``logaddexp``: ``max(a, b) + log1p(exp2(-|a - b|)) * (1 / ln 2)`` with
    SLEEF's exp2 (``sleef_exp2``) and log1p, the product and sum fused where torch's build fuses (GCC contracts
    ``m + l * c``: measured, 0 of 200000 off; unfused 21843; minilora's division by ln 2 before, 24262)."""
    return _log_add_exp(a, b, base2=True)


def logaddexp64(a, b, base2=False):
    """torch's float64 ``logaddexp`` (``base2``: ``logaddexp2``) as its cpu_kernel_vec runs it: on the scalar
    positions of its loop (each row's last n % 16 elements with AVX-512, every element of an input strided along
    its innermost dim: scalar_positions with Vectorized<double>'s lanes) the scalar lambda with C's exp/exp2 and
    log1p, ``m + l * (1 / ln 2)`` fused where the build fuses; elsewhere SLEEF's double vector functions
    (``vectorized64``)."""
    a, b = np.broadcast_arrays(np.asarray(a, _F64), np.asarray(b, _F64))
    with np.errstate(invalid="ignore", over="ignore"):  # (inf - inf: nan, replaced below)
        d = np.ascontiguousarray(-np.abs(a - b)).reshape(-1)
        log1p_power = vectorized64("log1p", vectorized64("exp2" if base2 else "exp", d))
        for where in scalar_positions(a, b, step=FLOAT_LANES):  # (a double vector holds half a float one's lanes)
            log1p_power[where] = c_function64("log1p", c_function64("exp2" if base2 else "exp", d[where]))
        log1p_power = log1p_power.reshape(a.shape)
        high = np.maximum(a, b)
        if not base2:
            out = high + log1p_power
        elif FUSED_MULTIPLY_ADD:
            out = fused_multiply_add64(log1p_power, np.full_like(log1p_power, 1 / math.log(2)), high)
        else:
            out = high + log1p_power * (1 / math.log(2))
    return np.where(np.isinf(a) & (a == b), a, out)


def _log_add_exp(a, b, base2):
    """``logaddexp`` (``base2``: ``logaddexp2``) as torch's cpu_kernel_vec runs it: the vector formula on the
    vectorized part of each row, C's functions on its scalar tail."""
    a, b = np.asarray(a, _F32), np.asarray(b, _F32)
    a, b = np.broadcast_arrays(a, b)
    with np.errstate(invalid="ignore"):  # (inf - inf: nan, replaced below)
        d = np.ascontiguousarray(-np.abs(a - b)).reshape(-1)
    tail = np.zeros(d.size, bool)
    for where in scalar_positions(a, b):
        tail[where] = True
    exp_vectorized, exp_in_c = (sleef_exp2, "exp2f") if base2 else (sleef_exp, "expf")
    with np.errstate(over="ignore"):
        log1p_exp = sleef_log1p(exp_vectorized(d))
        log1p_exp[tail] = c_function("log1pf", c_function(exp_in_c, d[tail]))
    log1p_exp = log1p_exp.reshape(a.shape)
    if not base2:
        out = np.maximum(a, b) + log1p_exp
    elif FUSED_MULTIPLY_ADD:
        out = fused_multiply_add(log1p_exp, _INV_LN2, np.maximum(a, b))
    else:
        out = np.maximum(a, b) + log1p_exp * _INV_LN2
    same_infinity = np.isinf(a) & (a == b)
    return np.where(same_infinity, a, out)


# SLEEF's xexp2f (Sleef_exp2f16_u10, torch's vectorized float32 exp2): exp2(d) = 2^q * exp2(s), q = rint(d),
# s = d - q, exp2(s) = 1 + s P(s) with a degree-5 P by Horner's rule in fused multiply-adds.
_EXP2_P = [_F32(c) for c in (0.1535920892e-3, 0.1339262701e-2, 0.9618384764e-2, 0.5550347269e-1,
                             0.2402264476e+0, 0.6931471825e+0)]


def sleef_exp2(x):
    """SLEEF's float32 exp2 (``Sleef_exp2f16_u10``): the same bits as torch's vectorized ``exp2`` (checked on 3
    million inputs over [-150, 128]; C's exp2 differs in 6%). inf from 128 on, 0 below -150."""
    x = np.asarray(x, _F32)
    q = np.rint(x)
    s = x - q
    u = np.full_like(s, _EXP2_P[0])
    for c in _EXP2_P[1:]:
        u = fused_multiply_add(u, s, c)
    u = fused_multiply_add(u, s, _F32(1))
    half = np.floor_divide(q, 2)  # (times 2^q in two steps, as SLEEF's ldexp2: each a normal float)
    with np.errstate(over="ignore"):
        u = u * np.exp2(half) * np.exp2(q - half)
    u = np.where(x >= 128, _F32(np.inf), u)
    return np.where(x < -150, _F32(0), u).astype(_F32, copy=False)


def mish(x):
    """torch's float32 ``mish`` and its tanh: ``x tanh(log1p(exp(x)))``, SLEEF's three (C's in the tail)."""
    scalar = _scalar_mish_tanh
    compiled = _loop_natively("ml_mish", [x], _two_like(x), (), lambda v: (v * scalar(v), scalar(v)))
    if compiled is not None:
        return tuple(compiled)
    t = _in_loop(x, _vector_mish_tanh, scalar)
    return x * t, t


def elu(x, alpha, scale, input_scale):
    """torch's float32 ELU kernel (elu, selu, celu): ``x > 0 ? scale x : (alpha scale) expm1(input_scale x)``,
    its constants float32 and SLEEF's expm1 (C's in the scalar tail)."""
    alpha, scale, input_scale = (_F32(c) for c in (alpha, scale, input_scale))

    def formula(x, expm1):
        return np.where(x > 0, x * scale, expm1(x * input_scale) * (alpha * scale))
    compiled = _loop_natively("ml_elu", [x], [np.empty(x.shape, _F32)], (alpha * scale, scale, input_scale),
                              lambda v: (formula(v, lambda t: c_function("expm1f", t)),))
    return compiled[0] if compiled is not None else formula(x, lambda v: loop_expm1(v, x))


def elu_backward(g, x, alpha, scale, input_scale):
    """torch's float32 ``elu_backward`` (from the input): ``x > 0 ? g scale : ((g input_scale) (alpha scale))
    exp(min(x, 0) input_scale)``, exp as its loop computes it (``loop_exp``)."""
    alpha, scale, input_scale = (_F32(c) for c in (alpha, scale, input_scale))
    negative_scale, g = alpha * scale, _dense_gradient(g, x)

    def gradient(g, x, e):
        return np.where(x > 0, g * scale, g * input_scale * negative_scale * e)
    with np.errstate(over="ignore"):
        compiled = _loop_natively(
            "ml_elu_backward", [g, x], [np.empty(x.shape, _F32)], (scale, input_scale, negative_scale),
            lambda g, x: (gradient(g, x, c_function("expf", np.minimum(x, 0) * input_scale)),))
        if compiled is not None:
            return compiled[0]
        return in_cache_slices(gradient, g, x, loop_exp(np.minimum(x, 0) * input_scale, layout=(g, x)))


def _dense_gradient(g, x):
    """``g`` copied to C order where it is a broadcast view (``y.sum().backward()``'s ones) and ``x`` is
    C-contiguous, so that the compiled kernel takes it (NumPy lays the result out in C order either way)."""
    if type(g) is np.ndarray and 0 in g.strides and g.shape == x.shape and x.flags.c_contiguous and g.size > 1:
        return np.ascontiguousarray(g)
    return g


def softplus_backward(g, x, beta, threshold):
    """torch's float32 ``softplus_backward``: ``beta x > threshold ? g : (g z) / (z + 1)``, ``z = exp(beta x)``
    as its loop computes it (``loop_exp``)."""
    beta, threshold, g = _F32(beta), _F32(threshold), _dense_gradient(g, x)

    def gradient(g, x, z):
        return np.where(x * beta > threshold, g, g * z / (z + 1))
    with np.errstate(over="ignore", invalid="ignore"):
        compiled = _loop_natively("ml_softplus_backward", [g, x], [np.empty(x.shape, _F32)], (beta, threshold),
                                  lambda g, x: (gradient(g, x, c_function("expf", x * beta)),))
        if compiled is not None:
            return compiled[0]
        return in_cache_slices(gradient, g, x, loop_exp(x * beta, layout=(g, x)))


def _sleef_exp_of_negative_blocks(x, out):
    _sleef_exp_blocks(x, out, negate=True)


def loop_exp(x, negate=False, layout=None):
    """``exp`` of a float32 array (of ``-x`` if ``negate``) as a torch elementwise kernel computes it inside
    its formula (elu's, softplus's backward, sigmoid): SLEEF's in the vectorized body, C's in the scalar tail, by position in ``x``'s memory order (``scalar_positions`` of the kernel's
    operands ``layout`` where ``x`` was computed from them)."""
    flat = np.ascontiguousarray(x).reshape(-1)
    e = np.empty_like(flat)
    if flat.size >= _VECTOR_STEP and CPU_CAPABILITY != "default":  # (shorter: all tail)
        rows = _sleef_exp_of_negative_blocks if negate else _sleef_exp_blocks
        parallel.rows(rows, flat, e, work_per_row=4)  # (threads from 32k elements: ~100 us each)
    for where in scalar_positions(*(layout or (x,))):
        tail = flat[where]
        if tail.size:
            e[where] = c_function("expf", np.negative(tail) if negate else tail)
    return e.reshape(x.shape)


def _one_plus_exp_neg(x):
    """``1 + exp(-x)`` in float32, exp as torch's loop computes it (``loop_exp``)."""
    e = loop_exp(x, negate=True)
    np.add(e, _EXP_C["one"], e)
    return e


def sigmoid(x):
    """torch's float32 ``sigmoid``: ``1 / (1 + exp(-x))``, each step rounded to float32."""
    compiled = _loop_natively("ml_sigmoid", [x], [np.empty(np.shape(x), _F32)], (), lambda v: (_scalar_sigmoid(v),))
    if compiled is not None:
        return compiled[0]
    denominator = _one_plus_exp_neg(x)
    return np.divide(_EXP_C["one"], denominator, denominator)


def _scalar_sigmoid(x):
    """sigmoid in torch's scalar tail: C's ``expf``."""
    return _EXP_C["one"] / (_EXP_C["one"] + c_function("expf", -x))


def _vector_sigmoid(x):
    """sigmoid in torch's vectorized body: SLEEF's exp."""
    return _EXP_C["one"] / (_EXP_C["one"] + sleef_exp(np.negative(x)))


def _vector_mish_tanh(x):
    return sleef_tanh(sleef_log1p(sleef_exp(x)))


def _scalar_mish_tanh(x):
    return c_function("tanhf", c_function("log1pf", c_function("expf", x)))


# (vectorized, scalar) lambdas of the values a backward kernel recomputes from its input (``relooped``)
SIGMOID = (_vector_sigmoid, _scalar_sigmoid)
MISH_TANH = (_vector_mish_tanh, _scalar_mish_tanh)
GELU_TANH = (lambda x: _gelu_tanh_formula(x, sleef_tanh)[1],
             lambda x: _gelu_tanh_formula(x, lambda inner: c_function("tanhf", inner))[1])


def mish_backward(g, x, t):
    """torch's float32 ``mish_backward``, ``g fma(x s, fma(-t, t, 1), t)`` with ``s = sigmoid(x)`` as its loop
    computes it, by the compiled kernel; None where it cannot run (the caller's NumPy formula then does)."""
    def scalar(g, x, t):
        return (g * fused_multiply_add(x * _scalar_sigmoid(x), fused_multiply_add(-t, t, 1), t),)
    compiled = _loop_natively("ml_mish_backward", [_dense_gradient(g, x), x, t], [np.empty(np.shape(x), _F32)], (),
                              scalar)
    return None if compiled is None else compiled[0]


def gelu_tanh_backward(g, x, t):
    """torch's float32 gelu(tanh) backward from the forward's ``t``, ``g (0.5 (1 + t) + ((0.5 x) fma(-t, t, 1))
    beta fma(3 kappa, x^2, 1))``, by the compiled kernel; None where it cannot run (the caller's NumPy
    formula, ``ops.elementwise._gelu_tanh_derivative``, then does)."""
    compiled = _loop_natively("ml_gelu_tanh_backward", [_dense_gradient(g, x), x, t], [np.empty(np.shape(x), _F32)],
                              (_GELU_BETA, _F32(3) * _GELU_KAPPA), None)
    return None if compiled is None else compiled[0]


def silu_and_sigmoid(x, s, out):
    """Fill ``out = x / (1 + exp(-x))`` (torch's float32 ``silu``, one division) and ``s = sigmoid(x)``
    (``1 / (1 + exp(-x))``, which silu's backward reads) from one exp."""
    def scalar(v):
        denominator = _EXP_C["one"] + c_function("expf", -v)
        return _EXP_C["one"] / denominator, v / denominator
    if _loop_natively("ml_silu", [x], [s, out], (), scalar) is not None:
        return
    denominator = _one_plus_exp_neg(x)
    np.divide(_EXP_C["one"], denominator, out=s)
    np.divide(x, denominator, out=out)


def swiglu(gate, up):
    """Llama's MLP activation ``silu(gate) * up`` as torch computes transformers' ``act_fn(gate) * up``
    in float32: silu's kernel (``gate / (1 + exp(-gate))``, exp as its loop computes it over ``gate``'s
    elements in C order: ``loop_exp``), rounded, then times ``up``. Returns ``(out, d)``, new C-contiguous
    arrays, ``d = 1 + exp(-gate)``: the backward's sigmoid ``1 / d`` and silu ``gate / d`` as torch's.

    Compiled: one pass, as fast as the NumPy-exp chain it replaced (0.45 ms for [8, 128, 688] on 2 threads).
    Without a compiler the NumPy port gives the same bits at ~19x that (8.6 ms): benchmarks/train_step.py's
    step ~20% slower under MINILORA_NATIVE=0 (226 against 186 ms), the price of torch's bits everywhere."""
    if type(gate) is np.ndarray and gate.flags.c_contiguous and type(up) is np.ndarray:
        up = np.asarray(up, order="C")  # (a transposed up: the kernel takes it in gate's order)

    def scalar(gate, up):
        d = _EXP_C["one"] + c_function("expf", -gate)
        return d, (gate / d) * up
    compiled = _loop_natively("ml_swiglu", [gate, up], _two_like(gate), (), scalar)
    if compiled is not None:
        d, out = compiled
        return out, d
    d = _one_plus_exp_neg(gate)
    out = np.divide(gate, d, out=np.empty(d.shape, _F32))  # (out=: a 0-d gate gives an array, not a scalar)
    out *= up
    return out, d


def swiglu_backward(g, gate, up, d, up_needs_grad=True):
    """The gradients ``(d gate, d up)`` (``d up`` None unless ``up_needs_grad``) of ``swiglu`` from its
    ``d``, rounded as torch's autograd of ``silu(gate) * up``: mul's backward first (``g up``, and ``d up =
    g silu(gate)`` with silu as the forward rounded it), then silu's backward of ``g up`` with its sigmoid
    ``s = 1 / d`` as torch's kernel computes it: ``((g up) s) fma(gate, 1 - s, 1)`` (no fused multiply-add
    in torch's "default" build). New C-contiguous arrays; any layout in (a broadcast ``g`` too)."""
    library = _native_library()
    arrays = [np.asarray(v, order="C") for v in (g, gate, up, d)]  # (a broadcast g: copied, the kernel runs)
    if library is not None and FUSED_MULTIPLY_ADD and all(v.dtype == _F32 and v.shape == d.shape for v in arrays):
        dgate, dup = np.empty(d.shape, _F32), np.empty(d.shape, _F32) if up_needs_grad else None
        _native_map(library.ml_swiglu_backward, [*(v.reshape(-1) for v in arrays), dgate.reshape(-1),
                                                 None if dup is None else dup.reshape(-1)])
        return dgate, dup
    g, gate, up, d = (v.reshape(-1) for v in arrays)  # (flat: a 0-d d would make NumPy scalars)
    one = _EXP_C["one"]
    s = np.divide(one, d)
    dgate = g * up
    dgate *= s
    slope = np.subtract(one, s, out=s)
    dgate *= fused_multiply_add(gate, slope, one) if FUSED_MULTIPLY_ADD else np.add(one, gate * slope)
    dup = g * np.divide(gate, d) if up_needs_grad else None
    return dgate.reshape(arrays[3].shape), None if dup is None else dup.reshape(arrays[3].shape)
