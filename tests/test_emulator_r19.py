"""Round 19: the emulator as a CuPy user and a CUDA-samples author use it.

* A launch's grid and block are what CuPy's ``Function.__call__(self, tuple grid, tuple block, ...)`` takes: an int
  or a list is Cython's TypeError ("Argument 'grid' has incorrect type (expected tuple, got int)"), a fourth entry is
  dropped, a float entry is refused, and ``shared_mem`` is a keyword (``RawKernel.__call__(grid, block, args,
  **kwargs)``; a negative one is Cython's OverflowError for a ``size_t``).  The emulator took ints, lists and a
  positional shared_mem, so code that ran here failed on a GPU.
* ``RawKernel(code, name, options)`` and ``RawModule(*, code=..., options=...)`` refuse what Cython's typed
  arguments refuse: options as a list or a string, bytes for the code, ``translate_cucomplex`` by position, the code
  of a RawModule by position; ``compile(log_stream=...)`` writes the compiler's messages, as CuPy's writes NVRTC's.
* ``RawKernel.attributes`` and its ten properties: registers, static shared and local memory from ``nvcc
  --resource-usage`` where nvcc is on PATH (-1, CuPy's "unknown", without it), ``__launch_bounds__``, the
  ``__constant__`` bytes, the architecture, ``-dlcm=ca``, a settable carveout.  They did not exist.
* ``--use_fast_math`` compiles expf/logf/log10f/exp10f/powf (std::exp of a float too) as their intrinsics and,
  with ``-ftz=true``, flushes float subnormals to zero, as nvcc does.  The option changed nothing.
* ``cupy.fuse``: CuPy runs the function itself when no argument is a CuPy array; the emulator's arrays are NumPy's,
  so the fused function gives the unfused numbers (elementwise, reductions, NumPy 2's scalar rules).  It was missing.
* A sweep of kernels in the CUDA samples' styles (tests/emu_kernels/r19/samples.cu): the seven classic reductions
  (volatile warp-synchronous and ``__shfl_down_sync``), a Blelloch scan with bank-conflict padding, shared-atomic
  histograms, the padded-tile transpose, a tiled matmul in dynamic ``extern __shared__``, bitonic sort, a
  cooperative ``grid.sync()`` and templates through ``name_expressions``, each against float64 NumPy on ragged
  shapes.  They ran unchanged and right on the emulator before this round too (regression cover).
"""
from __future__ import annotations

import importlib
import io
import re
import shutil
import subprocess
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest

from minilora import emulator as emu
from minilora.emulator import RawKernel, RawModule

pytestmark = pytest.mark.skipif(not emu.is_available(), reason="the CUDA emulator needs g++")
R19 = Path(__file__).parent / "emu_kernels" / "r19" / "samples.cu"
TEMPLATES = ("reduce0<float>", "reduce1<float>", "reduce2<float>", "reduce3<float>", "reduce4<float, 128>",
             "reduce5<float, 128>", "reduce6<float, 128, false>", "reduce6<float, 128, true>", "reduce2<double>",
             "reduce4<float, 32>", "matmul_dynamic_smem<16>", "axpy<float>", "axpy<double>",
             "samples::scale_items<float, 4>")
f32, f64, i32, u32 = np.float32, np.float64, np.int32, np.uint32
needs_nvcc = pytest.mark.skipif(shutil.which("nvcc") is None, reason="registers and shared sizes come from nvcc")

ONE = r'''extern "C" __global__ void one(float* y) { y[threadIdx.x] = 1.0f; }'''


def attributes_module():  # (imported here, so that each test of this file fails on its own before round 19)
    return importlib.import_module("minilora.emulator_attributes")


def rng(seed=0):
    return np.random.default_rng(seed)


def cdiv(a, b):
    return -(-a // b)


SAMPLES = dict(code=R19.read_text(), name_expressions=TEMPLATES)
PLAIN = dict(code=SAMPLES["code"])  # (no name expressions: another build)
EMULATOR_BUILDS = [(SAMPLES, {}), (PLAIN, {})]  # built on the session's helper core meanwhile (background_runs.py)


@lru_cache(maxsize=None)
def samples() -> RawModule:
    return RawModule(**SAMPLES)


@lru_cache(maxsize=None)
def cooperative() -> RawModule:
    return RawModule(**PLAIN, enable_cooperative_groups=True)


def fn(name):
    return samples().get_function(name)


@lru_cache(maxsize=None)
def one() -> RawKernel:
    return RawKernel(ONE, "one")


# ---------------------------------------------------------------------------------------- launches as CuPy's
@pytest.mark.parametrize("grid, block, message", [
    (4, (32,), "Argument 'grid' has incorrect type (expected tuple, got int)"),
    ((4,), 32, "Argument 'block' has incorrect type (expected tuple, got int)"),
    ([4], (32,), "Argument 'grid' has incorrect type (expected tuple, got list)"),
    ((1,), [32, 1], "Argument 'block' has incorrect type (expected tuple, got list)"),
    (np.int64(4), (32,), "Argument 'grid' has incorrect type (expected tuple, got numpy.int64)"),
    ((2.0,), (32,), "'float' object cannot be interpreted as an integer"),
    (None, (32,), "unsupported operand type(s) for +: 'NoneType' and 'tuple'"),
])
def test_grid_and_block_must_be_tuples_as_cythons_typed_arguments_refuse(grid, block, message):
    y = np.zeros(32, f32)
    with pytest.raises(TypeError, match=re.escape(message)):
        one()(grid, block, (y,))
    assert not y.any()


def test_an_empty_grid_tuple_is_cupys_index_error():
    with pytest.raises(IndexError, match="tuple index out of range"):
        one()((), (32,), (np.zeros(32, f32),))


def test_a_fourth_grid_entry_is_dropped_as_cupy_pads_and_cuts_to_three():
    y = np.zeros(32, f32)
    one()((1, 1, 1, 7), (32, 1, 1, 5), (y,))
    assert (y == 1).all()


def test_shared_mem_is_keyword_only_and_a_size_t():
    y = np.zeros(32, f32)
    with pytest.raises(TypeError, match=re.escape("__call__() takes exactly 3 positional arguments (4 given)")):
        one()((1,), (32,), (y,), 0)
    with pytest.raises(OverflowError, match="can't convert negative value to size_t"):
        one()((1,), (32,), (y,), shared_mem=-1)
    with pytest.raises(TypeError, match="'float' object cannot be interpreted as an integer"):
        one()((1,), (32,), (y,), shared_mem=16.0)
    one()((1,), (32,), (y,), shared_mem=np.int64(16))
    assert (y == 1).all()


@pytest.mark.parametrize("make, error, message", [
    (lambda: RawKernel(ONE, "one", ["-DX=1"]), TypeError, "Argument 'options' has incorrect type (expected tuple, got list)"),
    (lambda: RawKernel(ONE, "one", "-DX=1"), TypeError, "Argument 'options' has incorrect type (expected tuple, got str)"),
    (lambda: RawKernel(ONE.encode(), "one"), TypeError, "Argument 'code' has incorrect type (expected str, got bytes)"),
    (lambda: RawKernel(ONE, "one", (), "nvrtc", True), TypeError, "positional argument"),
    (lambda: RawModule(ONE), TypeError, "positional argument"),
    (lambda: RawModule(code=ONE, options=["-DX=1"]), TypeError,
     "Argument 'options' has incorrect type (expected tuple, got list)"),
    (lambda: RawModule(), TypeError, "Exactly one of `code` and `path` keyword arguments must be given."),
])
def test_constructors_take_cupys_typed_arguments(make, error, message):
    # CuPy: RawKernel(str code, str name, tuple options=(), str backend='nvrtc', *, translate_cucomplex=False, ...),
    # RawModule(*, str code=None, str path=None, tuple options=(), ...)
    with pytest.raises(error, match=re.escape(message)):
        make()


def test_compile_writes_the_compilers_messages_to_log_stream():
    # CuPy: kernel.compile(log_stream=sys.stdout) prints NVRTC's log -- nothing for a clean source
    clean, log = RawKernel(ONE + "\n// log", "one"), io.StringIO()
    clean.compile(log_stream=log)
    assert log.getvalue() == ""
    noisy = r'''extern "C" __global__ void noisy(int* y) { y[threadIdx.x] = 5 / 0; }'''
    for build in (lambda s: RawKernel(noisy, "noisy").compile(log_stream=s),
                  lambda s: RawModule(code=noisy).compile(log_stream=s)):
        log = io.StringIO()
        build(log)
        assert "division by zero" in log.getvalue() and "noisy" in log.getvalue()


# ---------------------------------------------------------------------------------------- kernel attributes
def test_attributes_are_cupys_ten_keys_in_its_order():
    attrs = fn("transposeNoBankConflicts").attributes
    assert list(attrs) == ["max_threads_per_block", "shared_size_bytes", "const_size_bytes", "local_size_bytes",
                           "num_regs", "ptx_version", "binary_version", "cache_mode_ca",
                           "max_dynamic_shared_size_bytes", "preferred_shared_memory_carveout"]
    assert all(type(v) is int for v in attrs.values())
    assert attrs["ptx_version"] == attrs["binary_version"] == 90 and attrs["cache_mode_ca"] == 0
    assert attrs["preferred_shared_memory_carveout"] == -1


def nvcc_report(code: str) -> str:
    with __import__("tempfile").TemporaryDirectory() as d:
        (Path(d) / "k.cu").write_text(code)
        return subprocess.run(["nvcc", "-cubin", "-arch=sm_90", "--resource-usage", "-o", "/dev/null",
                               str(Path(d) / "k.cu")], capture_output=True, text=True).stderr


PADDED = r'''extern "C" __global__ void __launch_bounds__(256) padded(const float* x, float* y, int n) {
  __shared__ float tile[32][33];
  float local[24];
  for (int k = 0; k < 24; ++k) local[k] = x[(threadIdx.x * 7 + k) % n];
  tile[threadIdx.x % 32][threadIdx.x / 32] = local[(int)x[0] & 15];
  __syncthreads();
  y[threadIdx.x] = tile[threadIdx.x / 32][threadIdx.x % 32] + local[threadIdx.x % 24];
}'''


@needs_nvcc
def test_registers_shared_and_local_bytes_are_nvccs():
    report = nvcc_report(PADDED)
    regs = int(re.search(r"Used (\d+) registers", report).group(1))
    smem = int(re.search(r"(\d+) bytes smem", report).group(1))
    stack = int(re.search(r"(\d+) bytes stack frame", report).group(1))
    k = RawKernel(PADDED, "padded")
    assert (k.num_regs, k.shared_size_bytes, k.local_size_bytes) == (regs, smem, stack)
    assert smem == 32 * 33 * 4
    # 48 KB less the static arrays until the kernel opts in, as cuFuncGetAttribute reports it
    assert k.max_dynamic_shared_size_bytes == 48 * 1024 - smem
    assert k.max_threads_per_block == 256  # its __launch_bounds__


@needs_nvcc
def test_template_instances_get_their_own_registers():
    assert fn("reduce6<float, 128, true>").num_regs > 0
    assert fn("samples::scale_items<float, 4>").num_regs > 0
    assert fn("transposeNoBankConflicts").shared_size_bytes == 32 * 33 * 4


def test_without_nvcc_what_only_ptxas_knows_is_minus_one(monkeypatch):
    monkeypatch.setattr(attributes_module(), "nvcc_path", lambda: None)
    k = RawKernel(PADDED + "\n// no nvcc", "padded")
    assert (k.num_regs, k.shared_size_bytes, k.local_size_bytes) == (-1, -1, -1)
    assert k.max_threads_per_block == 256 and k.max_dynamic_shared_size_bytes == 48 * 1024


def test_max_threads_per_block_follows_the_register_file():
    limit = attributes_module().max_threads_per_block
    assert limit(32, None) == 1024   # 64 K registers / 32
    assert limit(128, None) == 512
    assert limit(255, None) == 256   # 255 x 32 rounds up to 8192 a warp
    assert limit(72, 256) == 256
    assert limit(-1, None) == 1024


def test_constant_bytes_architecture_and_dlcm_come_from_the_source_and_options():
    code = r'''__constant__ float coeffs[10];
__constant__ int lut[3];
extern "C" __global__ void k(float* y) { y[threadIdx.x] = coeffs[threadIdx.x % 10] + lut[0]; }'''
    assert RawKernel(code, "k").const_size_bytes == 52
    assert RawKernel(code, "k", ("-arch=sm_80",)).ptx_version == 80
    assert RawKernel(code, "k", ("-Xptxas", "-dlcm=ca")).cache_mode_ca == 1
    assert RawKernel(code, "k", ("-Xptxas=-dlcm=ca",)).cache_mode_ca == 1


def test_preferred_shared_memory_carveout_is_settable_in_the_drivers_range():
    k = RawKernel(ONE + "\n// carveout", "one")
    k.preferred_shared_memory_carveout = 50
    assert k.preferred_shared_memory_carveout == 50 == k.attributes["preferred_shared_memory_carveout"]
    with pytest.raises(emu.CUDADriverError, match="CUDA_ERROR_INVALID_VALUE"):
        k.preferred_shared_memory_carveout = 101
    k.max_dynamic_shared_size_bytes = 64 * 1024
    assert k.attributes["max_dynamic_shared_size_bytes"] == 64 * 1024


# ---------------------------------------------------------------------------------------- fast math
FAST = r'''#include <cmath>
extern "C" __global__ void fast(const float* x, float* y, int n) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  float v = x[i], a = fabsf(v) + 0.5f;
  float* o = y + 10 * i;
  o[0] = expf(v);         o[1] = __expf(v);
  o[2] = std::exp(v);     o[3] = logf(a);       o[4] = __logf(a);
  o[5] = log10f(a);       o[6] = __log10f(a);   o[7] = powf(a, 1.37f);  o[8] = __powf(a, 1.37f);
  o[9] = exp10f(v * 0.25f) - __exp10f(v * 0.25f);
}'''


def run_fast(options, x):
    y = np.zeros((x.size, 10), f32)
    RawKernel(FAST, "fast", options)((cdiv(x.size, 128),), (128,), (x, y, i32(x.size)))
    return y


def test_use_fast_math_compiles_the_math_functions_as_their_intrinsics():
    x = (rng(1).standard_normal(2000) * 6).astype(f32)
    fast = run_fast(("--use_fast_math",), x)
    np.testing.assert_array_equal(fast[:, 0], fast[:, 1])  # expf is __expf
    np.testing.assert_array_equal(fast[:, 2], fast[:, 1])  # std::exp(float) too
    np.testing.assert_array_equal(fast[:, 3], fast[:, 4])
    np.testing.assert_array_equal(fast[:, 5], fast[:, 6])
    np.testing.assert_array_equal(fast[:, 7], fast[:, 8])
    np.testing.assert_array_equal(fast[:, 9], 0)
    accurate = run_fast((), x)  # without it, the accurate functions: the exp differs from __expf somewhere
    assert (accurate[:, 0] != accurate[:, 1]).any()
    np.testing.assert_allclose(accurate[:, 0], np.exp(x.astype(f64)), rtol=2e-7)


FTZ = r'''extern "C" __global__ void ftz(const float* x, float* y, const double* d, double* e) {
  int i = threadIdx.x;
  y[2 * i] = x[i] * 0.5f;   // a subnormal result
  y[2 * i + 1] = x[i] + 0.0f;  // a subnormal input
  e[i] = d[i] * 0.5;
}'''


@pytest.mark.parametrize("options, flushed", [((), False), (("-ftz=true",), True), (("--use_fast_math",), True),
                                              (("--use_fast_math", "-ftz=false"), False), (("--ftz", "true"), True)])
def test_ftz_flushes_float_subnormals_to_signed_zero(options, flushed):
    x = np.array([2e-38, -3e-39, 1.5, 1e-45], f32)
    y = np.zeros(8, f32)
    RawKernel(FTZ, "ftz", options)((1,), (4,), (x, y, np.ones(4), np.zeros(4)))
    def flush(v):  # a GPU's .ftz: a subnormal operand or result is a zero of its sign
        return np.where(np.abs(v) < np.finfo(f32).tiny, np.copysign(f32(0), v), v) if flushed else v
    want = np.stack([flush(flush(x) * f32(0.5)), flush(x) + f32(0)], 1).ravel()
    np.testing.assert_array_equal(y, want)
    np.testing.assert_array_equal(np.signbit(y), np.signbit(want))


def test_ftz_keeps_double_subnormals_as_a_gpu_does():  # (round 24: the kernel's double instructions run unflushed)
    d, e = np.array([1e-310, 3e-300, 1.0, 2.0]), np.zeros(4)
    RawKernel(FTZ, "ftz", ("-ftz=true",))((1,), (4,), (np.ones(4, f32), np.zeros(8, f32), d, e))
    np.testing.assert_array_equal(e, d * 0.5)


def test_a_faulting_ftz_kernel_leaves_pythons_float_math_alone():
    bad = RawKernel(r'''extern "C" __global__ void bad(float* y, int* p) {
  y[threadIdx.x] *= 0.5f;
  if (threadIdx.x == 3) *p = 1;  // a null pointer
}''', "bad", ("-ftz=true",))
    with pytest.raises(emu.KernelFault):
        bad((1,), (8,), (np.full(8, 2e-38, f32), None))
    assert np.array([2e-38], f32)[0] * f32(0.5) == f32(1e-38)  # the caller's thread keeps its subnormals


def test_ftz_needs_true_or_false():
    with pytest.raises(ValueError, match="-ftz takes true or false"):
        RawKernel(FTZ, "ftz", ("-ftz=yes",)).compile()


# ---------------------------------------------------------------------------------------- cupy.fuse
def test_fuse_gives_the_unfused_elementwise_result_and_keeps_its_name():
    def squared_diff(x, y):
        """(x - y)^2"""
        return (x - y) * (x - y)
    fused = emu.fuse(kernel_name="squared_diff_kernel")(squared_diff)
    x, y = rng(2).standard_normal(37).astype(f32), rng(3).standard_normal(37).astype(f32)
    got = fused(x, y)
    assert got.dtype == f32 and np.array_equal(got, squared_diff(x, y))
    assert repr(fused) == "<Fusion 'squared_diff_kernel'>"
    assert fused.__name__ == "squared_diff" and fused.__doc__ == "(x - y)^2"
    assert repr(emu.fuse(squared_diff)) == repr(emu.fuse()(squared_diff)) == "<Fusion 'squared_diff'>"


def test_fuse_reductions_and_scalar_rules_are_the_unfused_ones():
    @emu.fuse
    def norm_and_scale(x, s):
        return np.sqrt(np.sum(x * x, axis=1)) * s

    x = rng(4).standard_normal((5, 33)).astype(f32)
    for s in (2.5, np.float32(2.5), np.float64(2.5), 3):
        got = norm_and_scale(x, s)
        want = np.sqrt(np.sum(x * x, axis=1)) * s
        assert got.dtype == want.dtype and np.array_equal(got, want)
    assert norm_and_scale(x, 2.5).dtype == f32        # a Python float takes the array's dtype
    assert norm_and_scale(x, np.float64(2.5)).dtype == f64  # a NumPy scalar keeps its own


def test_fuse_calls_nest_and_take_positional_arguments_only():
    inner = emu.fuse(lambda a: a + 1)
    outer = emu.fuse(lambda a, b: inner(a) * b)
    x = np.arange(6, dtype=i32)
    assert np.array_equal(outer(x, 2), (x + 1) * 2)
    with pytest.raises(TypeError):
        outer(x, b=2)


def test_fake_cupy_has_fuse_on_its_device_arrays():
    import fake_cupy
    cp = fake_cupy.modules()["cupy"]
    fused = cp.fuse()(lambda x, y: cp.maximum(x, y) - cp.sum(y))
    a, b = cp.asarray(np.arange(5, dtype=f32)), cp.asarray(np.ones(5, f32))
    got = fused(a, b)
    assert isinstance(got, cp.ndarray) and np.array_equal(got.get(), np.maximum(np.arange(5), 1) - 5)


# ---------------------------------------------------------------------------------------- the samples' kernels
@pytest.mark.parametrize("n", [1000, 4097, 37])
@pytest.mark.parametrize("name, per_thread", [("reduce0<float>", 1), ("reduce1<float>", 1), ("reduce2<float>", 1),
                                              ("reduce3<float>", 2), ("reduce4<float, 128>", 2),
                                              ("reduce5<float, 128>", 2), ("reduce6<float, 128, false>", 0),
                                              ("reduce6<float, 128, true>", 0)])
def test_the_seven_classic_reductions(name, per_thread, n):
    x = rng(n).standard_normal(n).astype(f32)
    blocks = min(4, cdiv(n, 256)) if per_thread == 0 else cdiv(n, 128 * per_thread)
    partial = np.full(blocks, np.nan, f32)
    fn(name)((blocks,), (128,), (x, partial, u32(n)), shared_mem=128 * 4)
    np.testing.assert_allclose(partial.astype(f64).sum(), x.astype(f64).sum(), rtol=1e-5, atol=1e-4)
    if per_thread:  # each block's own elements
        chunks = [x[b * 128 * per_thread:(b + 1) * 128 * per_thread].astype(f64).sum() for b in range(blocks)]
        np.testing.assert_allclose(partial, chunks, rtol=1e-5, atol=1e-5)


def test_warp_synchronous_reduce4_with_a_32_thread_block_and_the_double_shared_memory_specialization():
    x = rng(5).standard_normal(300).astype(f32)
    partial = np.zeros(cdiv(300, 64), f32)  # the samples give a block of <= 32 threads 2 x threads of shared memory
    fn("reduce4<float, 32>")((partial.size,), (32,), (x, partial, u32(300)), shared_mem=64 * 4, check_races=True)
    np.testing.assert_allclose(partial.astype(f64).sum(), x.astype(f64).sum(), rtol=1e-5)
    d, out = rng(6).standard_normal(777), np.zeros(7)
    fn("reduce2<double>")((7,), (128,), (d, out, u32(777)), shared_mem=128 * 8)
    np.testing.assert_allclose(out.sum(), d.sum(), rtol=1e-13)


def blelloch_scan(x, threads=64):
    n, m = x.size, 2 * threads
    blocks = cdiv(n, m)
    out, sums = np.full(n, np.nan, f32), np.zeros(blocks, f32)
    fn("prescan")((blocks,), (threads,), (out, x, sums, i32(n)), shared_mem=(m + m // 32) * 4)
    if blocks > 1:
        fn("add_block_sums")((blocks,), (threads,), (out, blelloch_scan(sums, threads), i32(n)))
    return out


@pytest.mark.parametrize("n", [1000, 129, 5000, 1])
def test_blelloch_scan_with_bank_conflict_padding(n):
    x = rng(7).standard_normal(n).astype(f32)
    want = np.concatenate([[0], np.cumsum(x.astype(f64))[:-1]])
    np.testing.assert_allclose(blelloch_scan(x), want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("n", [10000, 333])
def test_shared_atomic_histograms(n):
    data = rng(8).integers(0, 256, n).astype(np.uint8)
    hist = np.zeros(256, u32)
    fn("histogram256_shared")((8,), (192,), (data, hist, i32(n)), check_races=True)
    np.testing.assert_array_equal(hist, np.bincount(data, minlength=256))
    words = data[:n // 4 * 4].copy()
    hist = np.zeros(256, u32)
    fn("histogram256_words")((4,), (256,), (words.view(u32), hist, i32(words.size // 4)))
    np.testing.assert_array_equal(hist, np.bincount(words, minlength=256))


@pytest.mark.parametrize("height, width", [(45, 70), (33, 1), (64, 96)])
def test_transpose_with_padded_tiles(height, width):
    a = rng(9).standard_normal((height, width)).astype(f32)
    out = np.full((width, height), np.nan, f32)
    fn("transposeNoBankConflicts")((cdiv(width, 32), cdiv(height, 32)), (32, 8), (out, a, i32(width), i32(height)))
    np.testing.assert_array_equal(out, a.T)


@pytest.mark.parametrize("M, N, K", [(37, 29, 53), (16, 16, 16), (1, 70, 3)])
def test_tiled_matmul_in_dynamic_shared_memory(M, N, K):
    A, B = rng(10).standard_normal((M, K)).astype(f32), rng(11).standard_normal((K, N)).astype(f32)
    C = np.full((M, N), np.nan, f32)
    fn("matmul_dynamic_smem<16>")((cdiv(N, 16), cdiv(M, 16)), (16, 16), (A, B, C, i32(M), i32(N), i32(K)),
                                  shared_mem=2 * 16 * 16 * 4)
    np.testing.assert_allclose(C, A.astype(f64) @ B, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("n", [1000, 3000])
def test_bitonic_sort_shared_then_global_steps(n):
    size = 1 << (n - 1).bit_length()
    keys = np.full(size, 0xFFFFFFFF, u32)
    keys[:n] = rng(12).integers(0, 2**32 - 1, n, dtype=u32)
    values = np.arange(size, dtype=u32)
    dst_keys, dst_values = np.zeros_like(keys), np.zeros_like(values)
    threads = 512
    fn("bitonicSortShared")((size // (2 * threads),), (threads,),
                            (dst_keys, dst_values, keys, values, u32(2 * threads), u32(1)), shared_mem=4 * threads * 4)
    k = 2
    while k <= size:
        j = k // 2
        while j > 0:
            fn("bitonic_global_step")((size // 256,), (256,), (dst_keys, dst_values, u32(j), u32(k), u32(size)))
            j //= 2
        k *= 2
    np.testing.assert_array_equal(dst_keys[:n], np.sort(keys[:n]))
    np.testing.assert_array_equal(keys[dst_values[:n]], np.sort(keys[:n]))


@pytest.mark.parametrize("n", [1000, 77])
def test_cooperative_grid_sync_normalisation(n):
    x = (np.abs(rng(13).standard_normal(n)) + 0.1).astype(f32)
    x0, partial = x.astype(f64), np.zeros(5, f32)
    cooperative().get_function("normalize_grid_sync")((4,), (256,), (x, partial, i32(n)))
    np.testing.assert_allclose(x, x0 / x0.sum(), rtol=1e-5)


def test_templates_through_name_expressions():
    x, y = rng(14).standard_normal(300).astype(f32), rng(15).standard_normal(300).astype(f32)
    want = 2.5 * x.astype(f64) + y
    fn("axpy<float>")((2,), (64,), (f32(2.5), x, y, i32(300)))
    np.testing.assert_allclose(y, want, rtol=1e-6, atol=1e-6)
    xd, yd = rng(16).standard_normal(300), rng(17).standard_normal(300)
    want = 2.5 * xd + yd
    fn("axpy<double>")((2,), (64,), (2.5, xd, yd, i32(300)))
    np.testing.assert_array_equal(yd, want)
    out, xs = np.zeros(301, f32), rng(18).standard_normal(301).astype(f32)
    fn("samples::scale_items<float, 4>")((3,), (32,), (out, xs, f32(3), i32(301)))
    np.testing.assert_array_equal(out, xs * f32(3))


@pytest.mark.parametrize("n", [1000, 97])
def test_warp_shuffle_scan_and_cg_reduce(n):
    module = RawModule(**PLAIN)
    v = rng(19).integers(-5, 6, n).astype(i32)
    out, sums = np.zeros(n, i32), np.zeros(cdiv(n, 256), i32)
    module.get_function("shfl_scan_block")((sums.size,), (256,), (v, out, sums, i32(n)), shared_mem=8 * 4)
    np.testing.assert_array_equal(out, np.concatenate([np.cumsum(v[i:i + 256]) for i in range(0, n, 256)]))
    x, total = rng(20).standard_normal(4 * n).astype(f32), np.zeros(1)
    module.get_function("cg_reduce_sum")((3,), (128,), (x, total, i32(n)))
    np.testing.assert_allclose(total[0], x.astype(f64).sum(), rtol=1e-5, atol=1e-4)
