"""CUDA written by others, run through the emulator unedited (tests/emu_kernels/r4/samples.cu: grid-stride
loops, vector loads, 3-D blocks, cooperative groups, int templates, __constant__, warp votes, fast math,
half2, a kernel's own float atomicMax, the padded transpose, printf/assert), each matched to NumPy; then
what nvcc refuses (CUDA's exact table of atomic overloads, static shared memory over 48 KB, dynamic
parallelism, inline PTX, CUDA libraries), undefined behaviour (integer division by zero) and initcheck.
No fault may end Python: every one is an exception.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest

from minilora import emulator as emu
from minilora.emulator import CompileError, EmulatorError, KernelFault, RawModule

from test_emulator_cuda_sources import check_lora_kernels

R4 = Path(__file__).parent / "emu_kernels" / "r4"
pytestmark = pytest.mark.skipif(not emu.is_available(), reason="the CUDA emulator needs g++")
rng = np.random.default_rng(66)
BLOCK_SUM = ["block_sum<128, float>", "block_sum<256, double>"]


SAMPLES = dict(path=R4 / "samples.cu", name_expressions=BLOCK_SUM)
EMULATOR_BUILDS = [(SAMPLES, {})]  # compiled on the session's helper core meanwhile (tests/background_runs.py)


@lru_cache(maxsize=None)
def samples() -> RawModule:
    return RawModule(**SAMPLES)


def fn(name: str):
    return samples().get_function(name)


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


# ------------------------------------------------------------------------------------------------
# Kernels in the style of the samples and tutorials, against NumPy
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("grid, block", [(1, 32), (3, 128), (64, 256)])
def test_grid_stride_saxpy_with_restrict_and_ldg(grid, block):
    n = 5000
    x, y = rng.standard_normal(n).astype(np.float32), rng.standard_normal(n).astype(np.float32)
    expected = np.float32(2.5) * x + y
    fn("saxpy")((grid,), (block,), (np.int32(n), np.float32(2.5), x, y))
    np.testing.assert_array_equal(y, expected)


@pytest.mark.parametrize("n", [4096, 4099, 3])
def test_vectorized_float4_and_int4_loads(n):
    x = rng.standard_normal(n).astype(np.float32)
    out = np.full(n, np.nan, np.float32)
    fn("scale_vec4")((cdiv(max(n // 4, 1), 128),), (128,), (x, out, np.float32(3.0), np.int32(n)))
    np.testing.assert_array_equal(out, x * np.float32(3.0))
    ints = rng.integers(-2**31, 2**31, 4 * 300).astype(np.int32)
    copied = np.zeros_like(ints)
    fn("copy_int4")((2,), (64,), (ints, copied, np.int32(300)))
    np.testing.assert_array_equal(copied, ints)


def test_three_dimensional_blocks_and_grid_with_dim3():
    nz, ny, nx = 5, 9, 17
    a = rng.standard_normal((nz, ny, nx)).astype(np.float32)
    out = np.full_like(a, np.nan)
    block = (8, 4, 2)
    fn("volume")((cdiv(nx, 8), cdiv(ny, 4), cdiv(nz, 2)), block, (a, out, np.int32(nx), np.int32(ny), np.int32(nz)))
    z, y, x = np.meshgrid(np.arange(nz), np.arange(ny), np.arange(nx), indexing="ij")
    np.testing.assert_array_equal(out, a * (1 + x).astype(np.float32) + y.astype(np.float32) - z.astype(np.float32))


@pytest.mark.parametrize("block", [32, 96, 256])
def test_cooperative_groups_tiles_and_reduce(block):
    x = rng.integers(-50, 50, 10_000).astype(np.float32)  # integers: exact in any order
    total = np.zeros(1, np.float32)
    fn("cg_sum")((7,), (block,), (x, total, np.int32(x.size)))
    assert total[0] == x.sum()


@pytest.mark.parametrize("expression, dtype, block", [(BLOCK_SUM[0], np.float32, 128), (BLOCK_SUM[1], np.float64, 256)])
def test_template_kernel_with_int_and_type_parameters(expression, dtype, block):
    x = rng.integers(-100, 100, 3000).astype(dtype)
    partial = np.zeros(5, dtype)
    fn(expression)((5,), (block,), (x, partial, np.int32(x.size)))
    assert partial.sum() == x.sum()


def test_constant_memory_convolution_filled_from_the_host():
    taps = np.array([0.5, -1.0, 0.25, 2.0, 0.25, -1.0, 0.5], np.float32)
    samples().get_global("taps")[:] = taps  # CuPy: get_global; the CUDA runtime's cudaMemcpyToSymbol
    n, block = 1000, 128
    x = rng.standard_normal(n).astype(np.float32)
    out = np.full(n, np.nan, np.float32)
    fn("conv1d")((cdiv(n, block),), (block,), (x, out, np.int32(n)), shared_mem=(block + 6) * 4, racecheck=True)
    padded = np.pad(x, 3).astype(np.float64)
    expected = sum(taps[k] * padded[k:k + n] for k in range(7))
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


def test_warp_vote_compaction_any_all():
    n = 200
    x = rng.standard_normal(n).astype(np.float32)
    x[64:96] = np.abs(x[64:96]) + 0.1  # one warp with every value positive
    warps, launched = cdiv(n, 32), 2 * cdiv(n, 64)  # the last block's second warp has no element, and writes
    kept = np.full(launched * 32, np.nan, np.float32)  # its count (0) too: the arrays were one warp short
    count, any_neg, all_pos = (np.full(launched, -7, np.int32) for _ in range(3))
    fn("compact_warp")((cdiv(n, 64),), (64,), (x, kept, count, any_neg, all_pos, np.int32(n)))
    assert count[warps:].tolist() == [0] * (launched - warps)
    per_warp = np.pad(x, (0, warps * 32 - n), constant_values=np.nan).reshape(warps, 32)
    for w in range(warps):
        positives = per_warp[w][per_warp[w] > 0]
        assert count[w] == positives.size
        np.testing.assert_array_equal(kept[w * 32:w * 32 + positives.size], positives)
        assert any_neg[w] == (per_warp[w] < 0).any() and all_pos[w] == np.all(per_warp[w][~np.isnan(per_warp[w])] > 0)


def test_clz_ffs_brev_popc():
    x = np.concatenate([[0, 1, 0x80000000, 0xFFFFFFFF, 0x00F0F000], rng.integers(0, 2**32, 59)]).astype(np.uint32)
    clz, ffs, popc = (np.zeros(64, np.int32) for _ in range(3))
    brev = np.zeros(64, np.uint32)
    fn("bits")((1,), (64,), (x, clz, ffs, brev, popc, np.int32(64)))
    as_bits = [format(int(v), "032b") for v in x]
    np.testing.assert_array_equal(clz, [len(b) - len(b.lstrip("0")) for b in as_bits])
    np.testing.assert_array_equal(ffs, [0 if v == 0 else (int(v) & -int(v)).bit_length() for v in x])
    np.testing.assert_array_equal(brev, [int(b[::-1], 2) for b in as_bits])
    np.testing.assert_array_equal(popc, [b.count("1") for b in as_bits])


def test_softmax_with_expf_fdividef_and_rmsnorm_with_rsqrtf():
    rows, cols = 10, 100
    x = (rng.standard_normal((rows, cols)) * 4).astype(np.float32)
    y = np.full_like(x, np.nan)
    fn("softmax_rows")((cdiv(rows, 4),), (128,), (x, y, np.int32(rows), np.int32(cols)))
    e = np.exp(x.astype(np.float64) - x.max(1, keepdims=True))
    np.testing.assert_allclose(y, e / e.sum(1, keepdims=True), rtol=2e-6, atol=1e-9)
    w = rng.standard_normal(cols).astype(np.float32)
    fn("rmsnorm")((rows,), (32,), (x, w, y, np.int32(cols), np.float32(1e-6)))
    x64 = x.astype(np.float64)
    np.testing.assert_allclose(y, x64 / np.sqrt((x64 ** 2).mean(1, keepdims=True) + 1e-6) * w, rtol=2e-6)


def test_half2_fma_mul_add_round_as_the_gpu():
    n2 = 300
    x = (rng.standard_normal(2 * n2) * 3).astype(np.float16)
    y = (rng.standard_normal(2 * n2) * 3).astype(np.float16)
    a = np.float16(1.3)
    prod, total = np.zeros_like(x), np.zeros_like(x)
    y0 = y.copy()
    fn("haxpy")((2,), (64,), (np.int32(n2), a, x, y, prod, total))
    x64, y64 = x.astype(np.float64), y0.astype(np.float64)
    np.testing.assert_array_equal(y, (np.float64(a) * x64 + y64).astype(np.float16))  # __hfma2: one rounding
    np.testing.assert_array_equal(prod, (x64 * y64).astype(np.float16))
    np.testing.assert_array_equal(total, (x64 + y64).astype(np.float16))


def test_a_kernel_may_define_the_float_atomic_max_cuda_lacks():
    """It failed to compile ('redefinition of float atomicMax(float*, float)'): the emulator offered a float
    atomicMax that CUDA does not have, so the programming guide's own version clashed with it."""
    x = rng.integers(-1000, 1000, 5000).astype(np.float32)
    mx, total = np.full(1, -np.inf, np.float32), np.zeros(1, np.float64)
    fn("max_and_sum")((8,), (128,), (x, mx, total, np.int32(x.size)))
    assert mx[0] == x.max() and total[0] == x.sum()


@pytest.mark.parametrize("width, height", [(64, 32), (100, 37)])
def test_padded_shared_memory_transpose(width, height):
    a = rng.standard_normal((height, width)).astype(np.float32)
    out = np.full((width, height), np.nan, np.float32)
    fn("transpose")((cdiv(width, 32), cdiv(height, 32)), (32, 8), (out, a, np.int32(width), np.int32(height)))
    np.testing.assert_array_equal(out, a.T)


def test_printf_and_assert(capfd):
    x = np.array([3, -4, 5, -6], np.int32)
    fn("report")((2,), (2,), (x, np.int32(4)))
    lines = sorted(capfd.readouterr().out.splitlines())
    assert lines == ["block 0 thread 1: x[1] = -4 is negative", "block 1 thread 1: x[3] = -6 is negative"]
    with pytest.raises(KernelFault, match=r"assertion `n <= \(int\)\(blockDim.x \* gridDim.x\)` failed at samples\.cu"):
        fn("report")((1,), (2,), (x, np.int32(4)))


def test_racecheck_and_initcheck_see_the_constants_get_global_filled():
    """racecheck=True ran another build of the source, whose __constant__ copy get_global had not filled:
    the filter read 0xFF bytes (NaN) and the result was all NaN, with no error."""
    src = r'''
    __constant__ float scale[2];
    __device__ int calls;
    extern "C" __global__ void k(float* y) { y[threadIdx.x] *= scale[threadIdx.x % 2]; if (threadIdx.x == 0) calls += 1; }
    '''
    mod = RawModule(code=src)
    mod.get_global("scale")[:] = [2.0, 3.0]
    mod.get_global("calls")[:] = 10
    for check in ("racecheck", "initcheck"):
        y = np.ones(4, np.float32)
        mod.get_function("k")((1,), (4,), (y,), **{check: True})
        np.testing.assert_array_equal(y, [2, 3, 2, 3])
    assert mod.get_global("calls")[0] == 12  # what the checked launches wrote comes back


# ------------------------------------------------------------------------------------------------
# What nvcc refuses: CUDA's exact table of atomic overloads (sm_90)
# ------------------------------------------------------------------------------------------------
TYPES = {"i32": "int", "u32": "unsigned int", "u64": "unsigned long long", "i64": "long long", "f32": "float",
         "f64": "double", "f16": "__half", "bf16": "__nv_bfloat16", "u16": "unsigned short", "h2": "__half2",
         "bf2": "__nv_bfloat162", "f2": "float2", "f4": "float4"}
CUDA_ATOMICS = {  # the programming guide's "Atomic Functions", compute capability 9.0
    "atomicAdd": {"i32", "u32", "u64", "f32", "f64", "f16", "bf16", "h2", "bf2", "f2", "f4"},
    "atomicSub": {"i32", "u32"},
    "atomicExch": {"i32", "u32", "u64", "f32"},
    "atomicMin": {"i32", "u32", "u64", "i64"},
    "atomicMax": {"i32", "u32", "u64", "i64"},
    "atomicInc": {"u32"},
    "atomicDec": {"u32"},
    "atomicCAS": {"i32", "u32", "u64", "u16"},
    "atomicAnd": {"i32", "u32", "u64"},
    "atomicOr": {"i32", "u32", "u64"},
    "atomicXor": {"i32", "u32", "u64"},
}
SCALARS = ["i32", "u32", "u64", "i64", "f32", "f64", "f16", "bf16", "u16"]


def _atomic_calls(valid: bool) -> list[tuple[str, str]]:
    """(op, type) pairs: those CUDA declares, or those it does not (over the scalar types)."""
    if valid:
        return [(op, t) for op, types in CUDA_ATOMICS.items() for t in sorted(types)]
    return [(op, t) for op in CUDA_ATOMICS for t in SCALARS if t not in CUDA_ATOMICS[op]]


def _atomic_source(calls) -> str:
    lines = ['#include <cuda_fp16.h>', '#include <cuda_bf16.h>', 'template <class T> __device__ void use(T* p, T v) {}']
    lines.append('extern "C" __global__ void k(char* raw) {')
    for op, t in calls:
        ctype = TYPES[t]
        args = "p, v, v" if op == "atomicCAS" else "p, v"
        lines.append(f"    {{ {ctype}* p = ({ctype}*)raw; {ctype} v{{}}; {op}({args}); }}  // {op} {t}")
    lines.append("}")
    return "\n".join(lines)


def test_every_atomic_overload_cuda_declares_compiles():
    RawModule(code=_atomic_source(_atomic_calls(valid=True))).get_function("k")


def test_every_atomic_overload_cuda_lacks_is_refused_as_nvcc_refuses_it():
    """atomicSub on unsigned long long and atomicMax/atomicMin on float compiled before (nvcc: no such overload)."""
    calls = _atomic_calls(valid=False)
    with pytest.raises(CompileError) as info:
        RawModule(code=_atomic_source(calls)).get_function("k")
    refused = {int(line) for line in __import__("re").findall(r"k\.cu:(\d+):\d+: error", str(info.value))}
    first = 5  # the line of the first call in _atomic_source
    missing = [calls[i] for i in range(len(calls)) if first + i not in refused]
    assert not missing, f"compiled although CUDA has no such overload: {missing}"


def test_atomics_appear_with_the_architecture_that_introduced_them():
    src = '''#include <cuda_fp16.h>
    extern "C" __global__ void k(double* d, __half* h) { atomicAdd(d, 1.0); atomicAdd(h, __half(1.0f)); }'''
    with pytest.raises(CompileError, match=r"atomicAdd\(double\*"):
        RawModule(code=src, options=("-arch=sm_52",)).get_function("k")
    with pytest.raises(CompileError, match=r"atomicAdd\(__half\*"):
        RawModule(code=src, options=("-arch=sm_61",)).get_function("k")
    RawModule(code=src, options=("-arch=sm_70",)).get_function("k")
    own = samples().code.replace("__CUDA_ARCH__ < 600", "__CUDA_ARCH__ < 600 // (sm_52 here)")
    mod = RawModule(code=own, options=("-arch=sm_52",), name_expressions=BLOCK_SUM)  # the guide's own double add
    x = np.arange(100, dtype=np.float32)
    mx, total = np.full(1, -np.inf, np.float32), np.zeros(1, np.float64)
    mod.get_function("max_and_sum")((2,), (64,), (x, mx, total, np.int32(100)))
    assert mx[0] == 99 and total[0] == 4950


# ------------------------------------------------------------------------------------------------
# Shared memory limits: static arrays count against the 48 KB too
# ------------------------------------------------------------------------------------------------
SHARED = r'''
extern "C" __global__ void mixed(float* out) {
    __shared__ float tile[8192];          // 32 KB static
    extern __shared__ float extra[];
    tile[threadIdx.x] = threadIdx.x;
    extra[threadIdx.x] = 1.0f;
    __syncthreads();
    out[threadIdx.x] = tile[threadIdx.x] + extra[threadIdx.x];
}
extern "C" __global__ void two_halves(float* out) {
    __shared__ float a[6400];
    __shared__ float b[6400];  // 51,200 bytes together
    a[threadIdx.x] = 1.0f;
    b[threadIdx.x] = 2.0f;
    out[threadIdx.x] = a[threadIdx.x] + b[threadIdx.x];
}
'''


def test_static_plus_dynamic_shared_memory_over_48kb_needs_the_opt_in():
    """32 KB static + 20 KB dynamic launched before; CUDA refuses the launch (CUDA_ERROR_INVALID_VALUE) unless
    the kernel raised cudaFuncAttributeMaxDynamicSharedMemorySize."""
    kernel = RawModule(code=SHARED).get_function("mixed")
    out = np.zeros(32, np.float32)
    kernel((1,), (32,), (out,), shared_mem=16 * 1024)  # 48 KB together: fine
    np.testing.assert_array_equal(out, np.arange(32) + 1)
    for check in ({}, {"racecheck": True}):
        with pytest.raises(EmulatorError, match=r"CUDA_ERROR_INVALID_VALUE.* 32768 bytes of static __shared__ memory "
                                                r"\(reached at 'tile' declared at mixed\.cu:3\) and asks shared_mem=20480"):
            kernel((1,), (32,), (out,), shared_mem=20 * 1024, **check)
    kernel.max_dynamic_shared_size_bytes = 20 * 1024
    kernel((1,), (32,), (out,), shared_mem=20 * 1024)
    kernel.max_dynamic_shared_size_bytes = 200 * 1024  # + 32 KB static: more than the GPU's 227 KB
    with pytest.raises(EmulatorError, match=r"CUDA_ERROR_INVALID_VALUE.*max_dynamic_shared_size_bytes 204800 plus its "
                                            r"32768 bytes of static"):
        kernel((1,), (32,), (out,), shared_mem=20 * 1024)
    with pytest.raises(EmulatorError, match="CUDA_ERROR_INVALID_VALUE"):
        kernel.max_dynamic_shared_size_bytes = 300 * 1024


@pytest.mark.parametrize("sanitize", [False, True])
def test_static_shared_arrays_over_48kb_together_are_ptxas_error(sanitize):
    with pytest.raises(CompileError, match=r"ptxas error   : Entry function 'two_halves' uses too much shared data "
                                           r"\(0xc800 bytes, 0xc000 max\)"):
        RawModule(code=SHARED, sanitize=sanitize).get_function("two_halves")((1,), (32,), (np.zeros(32, np.float32),))


# ------------------------------------------------------------------------------------------------
# Features out of scope: refused by name, not with g++'s puzzlement
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("src, match", [
    ('extern "C" __global__ void child(float* x) { x[threadIdx.x] *= 2.0f; }\n'
     'extern "C" __global__ void k(float* x) {\n    if (threadIdx.x == 0) child<<<1, 32>>>(x);\n}',
     r"child\.cu:3: a kernel launch <<<\.\.\.>>> inside device code \(CUDA dynamic parallelism\) is not supported"),
    # (the common idioms -- %laneid, ld.global.nc, cvt, lop3, prmt -- are translated since round 6:
    # test_emulator_r6.py, mma.sync and ldmatrix since round 9: test_emulator_tensorcore_r9.py; Hopper's
    # warpgroup mma is not)
    ('__device__ void mma(float* d, unsigned long long da, unsigned long long db) {\n'
     '    asm volatile("wgmma.mma_async.sync.aligned.m64n8k16.f32.bf16.bf16 {%0,%1,%2,%3}, %4, %5, 1, 1, 1, 0, 0;"\n'
     '                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]) : "l"(da), "l"(db));\n}\n'
     'extern "C" __global__ void k(float* d, const unsigned* a, const unsigned* b) { mma(d, 0, 0); }',
     r"k\.cu:2: the inline PTX instruction 'wgmma\.mma_async\.sync\.aligned\.m64n8k16\.f32\.bf16\.bf16' is not "
     r"modelled by minilora's CUDA emulator; it runs: mov"),
    ('#include <curand_kernel.h>\nextern "C" __global__ void k(float* out) { curandState s; }',
     r"curand_kernel\.h belongs to cuRAND .* which minilora's CUDA emulator does not provide"),
    # <cub/cub.cuh> has a stand-in since round 7 (block and warp reduce / scan); the device-wide algorithms do not
    ('#include <cub/device/device_reduce.cuh>\nextern "C" __global__ void k(float* out) {}',
     r"cub/device/device_reduce\.cuh belongs to CUB beyond the emulator's <cub/cub\.cuh> stand-in"),
    ('__constant__ float taps[4];\nextern "C" __global__ void k(float* y) { y[threadIdx.x] *= taps[threadIdx.x]; }\n'
     'void set_taps(const float* h) { cudaMemcpyToSymbol(taps, h, sizeof(taps)); }',
     r"k\.cu:3: cudaMemcpyToSymbol\(\) is the CUDA runtime's host API.*get_global"),
])
def test_unsupported_features_are_refused_by_name(src, match):
    with pytest.raises(CompileError, match=match):
        RawModule(code=src).get_function("k")


def test_inline_ptx_behind_cuda_emu_guard_is_fine():
    src = '''__device__ unsigned lane() {
    #ifdef __CUDA_EMU__
        return threadIdx.x % 32;
    #else
        unsigned r; asm volatile("mov.u32 %0, %%laneid;" : "=r"(r)); return r;
    #endif
    }
    extern "C" __global__ void k(unsigned* out) { out[threadIdx.x] = lane(); }'''
    out = np.zeros(64, np.uint32)
    RawModule(code=src).get_function("k")((1,), (64,), (out,))
    np.testing.assert_array_equal(out, np.arange(64) % 32)


# ------------------------------------------------------------------------------------------------
# Undefined behaviour: integer division by zero is an exception naming kernel, thread and line
# ------------------------------------------------------------------------------------------------
DIVIDE = r'''
extern "C" __global__ void int_div(const int* a, const int* b, int* c) { c[threadIdx.x] = a[threadIdx.x] / b[threadIdx.x]; }
extern "C" __global__ void uint_mod(const unsigned* a, const unsigned* b, unsigned* c) { c[threadIdx.x] = a[threadIdx.x] % b[threadIdx.x]; }
extern "C" __global__ void ll_div(const long long* a, const long long* b, long long* c) { c[threadIdx.x] = a[threadIdx.x] / b[threadIdx.x]; }
extern "C" __global__ void by_constant_zero(const int* a, const int* b, int* c) {
    c[threadIdx.x] = a[threadIdx.x] / 0;
}
'''


@pytest.mark.parametrize("name, dtype, line", [("int_div", np.int32, 2), ("uint_mod", np.uint32, 3),
                                               ("ll_div", np.int64, 4), ("by_constant_zero", np.int32, 6)])
@pytest.mark.parametrize("check", [{}, {"racecheck": True}, {"workers": 2}])
def test_integer_division_by_zero_is_a_kernel_fault_at_the_line(name, dtype, line, check):
    """A GPU gives an unspecified value and no error; the emulator stops with a catchable KernelFault.  The
    constant zero was a trap instruction g++ put in the launcher (reported at wrapper.cpp, SIGILL)."""
    a, b = np.arange(1, 65).astype(dtype), np.ones(64, dtype)
    b[37] = 0
    thread = 0 if name == "by_constant_zero" else 37
    with pytest.raises(KernelFault, match=rf"thread \({thread},0,0\) of block \(0,0,0\) of kernel '{name}' crashed at "
                                          rf"int_div\.cu:{line}: SIGFPE: integer division by zero"):
        RawModule(code=DIVIDE).get_function(name)((1,), (64,), (a, b, np.zeros(64, dtype)), **check)


def test_int_min_divided_by_minus_one_is_named_too():
    a, b = np.full(32, -2**31, np.int32), np.full(32, -1, np.int32)
    with pytest.raises(KernelFault, match=r"or INT_MIN / -1 \(on a GPU no error"):
        RawModule(code=DIVIDE).get_function("int_div")((1,), (32,), (a, b, np.zeros(32, np.int32)))


UNDEFINED = r'''
extern "C" __global__ void lane_mask(const int* width, unsigned* out) {
    out[threadIdx.x] = (1u << width[threadIdx.x]) - 1u;  // width 32: 0xffffffff on a GPU, 0 on x86
}
extern "C" __global__ void to_int(const float* x, int* out) {
    out[threadIdx.x] = (int)(x[threadIdx.x] * 100.0f);  // NaN: 0 on a GPU, INT_MIN on x86
}
extern "C" __global__ void to_int_saturating(const float* x, int* out) {
    out[threadIdx.x] = __float2int_rz(x[threadIdx.x] * 100.0f);
}
'''


@pytest.mark.parametrize("sanitize", [False, True])
def test_a_shift_by_the_width_or_more_stops_instead_of_giving_the_cpus_result(sanitize):
    """(1u << 32) - 1 gave 0 (x86 masks the count to 0) where a GPU gives 0xffffffff (shl clamps), silently."""
    mod = RawModule(code=UNDEFINED, sanitize=sanitize)
    out = np.zeros(4, np.uint32)
    mod.get_function("lane_mask")((1,), (3,), (np.array([1, 8, 31], np.int32), out[:3]))
    np.testing.assert_array_equal(out[:3], [1, 255, 2**31 - 1])
    match = (r"shift exponent 32 is too large for 32-bit type 'unsigned int' at lane_mask\.cu:3" if sanitize else
             r"thread \(3,0,0\) of block \(0,0,0\) of kernel 'lane_mask' shifts a 32-bit 'unsigned int' by 32 at "
             r"lane_mask\.cu:3: undefined in C\+\+ .* A GPU clamps the count")
    with pytest.raises(KernelFault, match=match):
        mod.get_function("lane_mask")((1,), (4,), (np.array([1, 8, 31, 32], np.int32), out))


@pytest.mark.parametrize("check", [{}, {"racecheck": True}])
def test_a_float_to_int_cast_of_nan_or_out_of_range_stops(check):
    """(int)NaN gave INT_MIN (x86's cvttss2si) where a GPU gives 0 (cvt.rzi saturates), silently."""
    mod = RawModule(code=UNDEFINED)
    x, out = np.array([1.5, -2.25, 3e8, np.nan], np.float32), np.zeros(4, np.int32)
    with pytest.raises(KernelFault, match=r"thread \(2,0,0\) .* converts the 'float' 3e\+10 to 'int' at lane_mask\.cu:6"):
        mod.get_function("to_int")((1,), (4,), (x, out), **check)
    mod.get_function("to_int_saturating")((1,), (4,), (x, out), **check)  # the intrinsic saturates as the GPU does
    np.testing.assert_array_equal(out, [150, -225, 2**31 - 1, 0])


MISALIGNED = r'''
extern "C" __global__ void vec_load(const float* x, float* y, int offset) {
    float4 v = reinterpret_cast<const float4*>(x + offset)[threadIdx.x];
    y[threadIdx.x] = v.x + v.y + v.z + v.w;
}
extern "C" __global__ void vec_store(float* y, int offset) {
    reinterpret_cast<float4*>(y + offset)[threadIdx.x] = make_float4(1, 2, 3, 4);
}
extern "C" __global__ void int_from_bytes(const char* x, int* y, int offset) {
    y[threadIdx.x] = *reinterpret_cast<const int*>(x + offset + 4 * threadIdx.x);
}
'''


@pytest.mark.parametrize("sanitize", [False, True])
def test_a_misaligned_vector_or_int_access_is_refused_as_the_gpu_refuses_it(sanitize):
    """A float4 load from x + 1 and an int load from an odd byte ran (x86 loads anything) and a float4 store
    faulted as 'a null pointer' (movaps); a GPU stops each with CUDA_ERROR_MISALIGNED_ADDRESS."""
    mod = RawModule(code=MISALIGNED, sanitize=sanitize)
    x, y = np.arange(64, dtype=np.float32), np.zeros(64, np.float32)
    mod.get_function("vec_load")((1,), (8,), (x, y, np.int32(4)))  # aligned: fine
    np.testing.assert_array_equal(y[:8], x[4:36].reshape(8, 4).sum(1))
    if sanitize:
        what = [r"reference binding to misaligned address .* 'const struct float4', which requires 16 byte alignment",
                r"store to misaligned address .* 'struct float4'", r"load of misaligned address .* 'const int'"]
    else:
        what = [r"thread \(0,0,0\) of block \(0,0,0\) of kernel 'vec_load' accesses a 'const struct float4' at address "
                r"0x[0-9a-f]+, which is not a multiple of its 16-byte alignment, at vec_load\.cu:3: a GPU stops the kernel "
                r"there \(CUDA_ERROR_MISALIGNED_ADDRESS", r"stores a 'struct float4' .* at vec_load\.cu:7",
                r"loads a 'const int' .* 4-byte alignment, at vec_load\.cu:10"]
    with pytest.raises(KernelFault, match=what[0]):
        mod.get_function("vec_load")((1,), (8,), (x, y, np.int32(1)))
    with pytest.raises(KernelFault, match=what[1]):
        mod.get_function("vec_store")((1,), (8,), (y, np.int32(2)))
    with pytest.raises(KernelFault, match=what[2]):
        mod.get_function("int_from_bytes")((1,), (8,), (x.view(np.uint8), y.view(np.int32), np.int32(1)))


# ------------------------------------------------------------------------------------------------
# initcheck: reading shared memory no thread has written
# ------------------------------------------------------------------------------------------------
HALO = r'''
extern "C" __global__ void stencil(const float* x, float* y, int n) {
    __shared__ float s[130];
    int t = threadIdx.x, i = blockIdx.x * blockDim.x + t;
    s[t + 1] = i < n ? x[i] : 0.0f;
    if (t == 0 && i > 0) s[0] = x[i - 1];  // BUG: block 0 never writes its left halo
    if (t == blockDim.x - 1) s[t + 2] = i + 1 < n ? x[i + 1] : 0.0f;
    __syncthreads();
    if (i < n) y[i] = s[t] + s[t + 1] + s[t + 2];
}
extern "C" __global__ void histogram(const int* v, int* out, int n, int zero_first) {
    __shared__ int bins[16];
    if (zero_first && threadIdx.x < 16) bins[threadIdx.x] = 0;
    __syncthreads();
    for (int i = threadIdx.x; i < n; i += blockDim.x) atomicAdd(&bins[v[i]], 1);
    __syncthreads();
    if (threadIdx.x < 16) out[threadIdx.x] = bins[threadIdx.x];
}
'''


def test_initcheck_names_a_read_of_shared_memory_no_thread_wrote():
    """Without it the read gives NaN in one element only, which a test over one block may never see."""
    mod = RawModule(code=HALO)
    x, y = np.arange(256, dtype=np.float32), np.zeros(256, np.float32)
    mod.get_function("stencil")((2,), (128,), (x, y, np.int32(256)))
    assert np.isnan(y[0]) and not np.isnan(y[1:]).any()
    with pytest.raises(KernelFault, match=r"initcheck: uninitialized __shared__ read: thread \(0,0,0\) of block \(0,0,0\) "
                                          r"of kernel 'stencil' reads byte 0 of __shared__ 's' \(a 4-byte access\) at "
                                          r"stencil\.cu:9"):
        mod.get_function("stencil")((2,), (128,), (x, y, np.int32(256)), initcheck=True)


def test_initcheck_counts_atomics_and_accepts_a_correct_kernel():
    mod = RawModule(code=HALO)
    v = rng.integers(0, 16, 500).astype(np.int32)
    out = np.zeros(16, np.int32)
    mod.get_function("histogram")((1,), (64,), (v, out, np.int32(500), np.int32(1)), initcheck=True)
    np.testing.assert_array_equal(out, np.bincount(v, minlength=16))
    with pytest.raises(KernelFault, match=r"uninitialized __shared__ read.*of __shared__ 'bins' .* at stencil\.cu:15"):
        mod.get_function("histogram")((1,), (64,), (v, out, np.int32(500), np.int32(0)), initcheck=True)  # atomicAdd's line
    with pytest.raises(ValueError, match="racecheck=True and initcheck=True are separate tools"):
        mod.get_function("histogram")((1,), (64,), (v, out, np.int32(500), np.int32(0)), initcheck=True, racecheck=True)


@pytest.mark.parametrize("version", __import__("minilora.kernels", fromlist=["VERSIONS"]).VERSIONS)
def test_every_project_kernel_passes_initcheck(version, initcheck_every_launch):
    """kernels/*.cu read no shared byte before writing it (cp.async copies included), with ragged shapes."""
    check_lora_kernels(version, rng)
    assert any(name.endswith(version) for name in initcheck_every_launch), initcheck_every_launch


def test_cooperative_groups_ranks_and_sizes_have_cudas_types():
    """They were all unsigned long long: rank 0's `thread_rank() - 1` became 1.8e19 as a float, 4.3e9 on a GPU."""
    src = r'''
    #include <cooperative_groups.h>
    namespace cg = cooperative_groups;
    extern "C" __global__ void k(int* sizes, float* below) {
        cg::thread_block block = cg::this_thread_block();
        cg::thread_block_tile<16> tile = cg::tiled_partition<16>(block);
        cg::thread_group dynamic_tile = cg::tiled_partition(block, 8);
        cg::grid_group grid = cg::this_grid();
        if (block.thread_rank() == 0) {
            int k = 0;
            for (int s : {sizeof(block.thread_rank()), sizeof(block.size()), sizeof(block.num_threads()),
                          sizeof(tile.thread_rank()), sizeof(tile.size()), sizeof(tile.meta_group_rank()),
                          sizeof(dynamic_tile.thread_rank()), sizeof(dynamic_tile.size()),
                          sizeof(cg::coalesced_threads().thread_rank()), sizeof(grid.thread_rank()), sizeof(grid.size())})
                sizes[k++] = s;
        }
        below[block.thread_rank()] = (float)(tile.thread_rank() - 1);
    }'''
    sizes, below = np.zeros(11, np.int32), np.zeros(32, np.float32)
    RawModule(code=src).get_function("k")((1,), (32,), (sizes, below))
    np.testing.assert_array_equal(sizes, [4] * 9 + [8, 8])
    assert below[0] == np.float32(2**32 - 1) and below[1] == 0


def test_integer_min_max_norms_and_directed_conversions_of_cudas_math_api():
    """umin/umax/llmin/..., norm3df/rnorm3df/norm4df/rhypotf, __int2float_rz/rd/ru, __ll2float_*, __double2float_*,
    __double2int_rd/ru, __float2ull_rn, __double2hiint/__hiloint2double did not compile."""
    src = r'''
    extern "C" __global__ void k(const float* v, float* f, long long* i, const double* d) {
        i[0] = umin(3u, 0xffffffffu); i[1] = umax(3u, 0xffffffffu); i[2] = llmin(-5ll, 7ll); i[3] = llmax(-5ll, 7ll);
        i[4] = (long long)ullmin(1ull << 63, 5ull); i[5] = __double2int_rd(-2.5); i[6] = __double2int_ru(-2.5);
        i[7] = (long long)__float2ull_rn(1e19f); i[8] = __double2hiint(d[0]); i[9] = (unsigned)__double2loint(d[0]);
        f[0] = norm3df(v[0], v[1], v[2]); f[1] = rnorm3df(v[0], v[1], v[2]);
        f[2] = norm4df(v[0], v[1], v[2], v[3]); f[3] = rhypotf(v[0], v[1]);
        f[4] = __int2float_rz(16777217); f[5] = __int2float_rd(-16777217); f[6] = __int2float_ru(16777217);
        f[7] = __ll2float_rz(9223372036854775807ll); f[8] = __ull2float_rn(18446744073709551615ull);
        f[9] = __double2float_rd(d[1]); f[10] = __double2float_ru(d[1]); f[11] = __double2float_rz(-d[1]);
        f[12] = (float)__hiloint2double(__double2hiint(d[0]), __double2loint(d[0]));
    }'''
    v = np.array([3.0, 4.0, 12.0, 84.0], np.float32)
    f, i, d = np.zeros(13, np.float32), np.zeros(10, np.int64), np.array([-1.75, 0.1])
    RawModule(code=src).get_function("k")((1,), (1,), (v, f, i, d))
    bits = int(np.float64(-1.75).view(np.uint64))
    np.testing.assert_array_equal(i, [3, 0xffffffff, -5, 7, 5, -3, -2, int(np.float32(1e19)) - 2**64, np.int32(np.uint32(bits >> 32)),
                                      bits & 0xffffffff])
    tenth = np.float32(0.1)  # 0.100000001490116: above 0.1
    np.testing.assert_array_equal(f, np.array([13, 1 / 13, 85, 1 / 5, 16777216, -16777218, 16777218,
                                               2.0**63 - 2.0**39, 2.0**64, np.nextafter(tenth, np.float32(0)), tenth,
                                               -np.nextafter(tenth, np.float32(0)), -1.75], np.float32))


@pytest.mark.parametrize("declaration, match", [
    ("__shared__ float s[32] = {0};", r"line 2: initializer not allowed for __shared__ variable \(nvcc refuses it too\)"),
    ("__shared__ float s[32]{};", "initializer not allowed for __shared__ variable"),
    # (a struct defined in place is taken since round 5: tests/test_emulator_r5.py; its initializer is not)
    ("__shared__ struct { float v[32]; } s_ = {};\n    float* s = s_.v;", "initializer not allowed for __shared__ variable"),
])
def test_shared_declarations_the_rewriting_cannot_take_are_named(declaration, match):
    """Both said only 'cannot parse this __shared__ declaration'."""
    src = f'extern "C" __global__ void k(float* out) {{\n    {declaration}\n    out[threadIdx.x] = s[threadIdx.x];\n}}'
    with pytest.raises(CompileError, match=match):
        RawModule(code=src).get_function("k")


def test_a_comparison_in_a_shared_array_size_is_not_an_initializer():
    src = '''template <int BLOCK> __global__ void k(float* out) {
        __shared__ float s[BLOCK >= 64 ? 64 : (BLOCK == 32 ? 32 : 16)];
        s[threadIdx.x] = threadIdx.x;
        __syncthreads();
        out[threadIdx.x] = s[BLOCK - 1 - threadIdx.x];
    }'''
    out = np.zeros(32, np.float32)
    RawModule(code=src, name_expressions=["k<32>"]).get_function("k<32>")((1,), (32,), (out,))
    np.testing.assert_array_equal(out, np.arange(31, -1, -1))


def test_an_unaligned_numpy_array_is_refused_at_the_call():
    """np.frombuffer(..., offset=1) is a valid float32 array NumPy-side but no device array is ever unaligned:
    the kernel's first load would be a misaligned access."""
    raw = np.zeros(4 * 64 + 1, np.uint8)
    x = np.frombuffer(raw.data, np.float32, count=64, offset=1)
    y = np.zeros(64, np.float32)
    with pytest.raises(ValueError, match=r"argument 0 \('x'\) of kernel 'vec_load' is not aligned to its dtype"):
        RawModule(code=MISALIGNED).get_function("vec_load")((1,), (8,), (x, y, np.int32(0)))


def test_throw_in_device_code_is_a_compile_error_as_with_nvcc():
    """It compiled, and the throw ended the launch in abort() (a KernelFault with no source line)."""
    src = 'extern "C" __global__ void k(float* y) {\n    if (threadIdx.x == 3) throw 42;\n    y[threadIdx.x] = 1;\n}'
    with pytest.raises(CompileError, match=r"k\.cu:2:\d+: error: exception handling disabled"):
        RawModule(code=src).get_function("k")


LEGACY_REDUCE = r'''
// "Optimizing Parallel Reduction in CUDA" (reduce5): the last warp unrolled through a volatile pointer,
// with no __syncwarp -- written for lockstep warps, and still giving the right sum on a GPU in practice.
template <unsigned int blockSize>
__device__ void warpReduce(volatile int* sdata, unsigned int tid) {
    if (blockSize >= 64) sdata[tid] += sdata[tid + 32];
    if (blockSize >= 32) sdata[tid] += sdata[tid + 16];
    if (blockSize >= 16) sdata[tid] += sdata[tid + 8];
    if (blockSize >= 8) sdata[tid] += sdata[tid + 4];
    if (blockSize >= 4) sdata[tid] += sdata[tid + 2];
    if (blockSize >= 2) sdata[tid] += sdata[tid + 1];
}
template <unsigned int blockSize>
__global__ void reduce5(const int* g_idata, int* g_odata, unsigned int n) {
    __shared__ int sdata[blockSize];
    unsigned int tid = threadIdx.x, i = blockIdx.x * (blockSize * 2) + threadIdx.x;
    sdata[tid] = (i < n ? g_idata[i] : 0) + (i + blockSize < n ? g_idata[i + blockSize] : 0);
    __syncthreads();
    if (blockSize >= 512) { if (tid < 256) sdata[tid] += sdata[tid + 256]; __syncthreads(); }
    if (blockSize >= 256) { if (tid < 128) sdata[tid] += sdata[tid + 128]; __syncthreads(); }
    if (blockSize >= 128) { if (tid < 64) sdata[tid] += sdata[tid + 64]; __syncthreads(); }
    if (tid < 32) warpReduce<blockSize>(sdata, tid);
    if (tid == 0) g_odata[blockIdx.x] = sdata[0];
}
'''


@pytest.mark.parametrize("block", [64, 256])
def test_the_legacy_volatile_warp_unroll_sums_as_on_a_gpu_and_racecheck_reports_it(block):
    """Each lane ran alone up to its next barrier, so the unrolled last warp read stale partial sums and the
    total was silently wrong; now volatile loads and stores take turns across the lanes (a GPU warp's lockstep)."""
    expression = f"reduce5<{block}>"
    mod = RawModule(code=LEGACY_REDUCE, name_expressions=[expression])
    x = rng.integers(-1000, 1000, 5000).astype(np.int32)
    blocks = cdiv(x.size, 2 * block)
    out = np.zeros(blocks, np.int32)
    for check in ({}, {"check_races": True}, {"workers": 2}):
        out[:] = 0
        mod.get_function(expression)((blocks,), (block,), (x, out, np.uint32(x.size)), **check)
        np.testing.assert_array_equal(out, np.pad(x, (0, blocks * 2 * block - x.size)).reshape(blocks, -1).sum(1))
    with pytest.raises(emu.RaceError, match=r"racecheck: .* hazard on __shared__ 'sdata'"):
        mod.get_function(expression)((blocks,), (block,), (x, out, np.uint32(x.size)), racecheck=True)
