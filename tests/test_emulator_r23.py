"""Round 23: CUDA written by others on the emulator -- flush-to-zero, fast-math division, half sine and cosine,
the device heap, barriers that exited threads never reach.

What failed at the round's start, and the fix (in the emulator, never the kernel):

* Wrong numbers, silently: inline PTX's ``.ftz`` (``add.ftz.f32``, ``fma.rn.ftz.f32``, ``ex2.approx.ftz.f32``,
  ``setp.gt.ftz.f32``, ``cvt.rn.ftz.f32.f64``, ``add.ftz.f16x2`` ...) was ignored: a subnormal input or result
  near 1e-38 was kept where the GPU reads and writes a zero of the same sign.
* Wrong numbers, silently: ``hsin`` / ``hcos`` of a ``__half`` were ``sinf`` / ``cosf`` rounded to half (two
  roundings); cuda_fp16.hpp computes them with fmaf only (no approximate instruction), bit for bit reproducible,
  and patches three inputs by an ulp -- the correctly rounded half on every input.
* Wrong numbers, silently: under ``--use_fast_math`` a float ``x / y`` was IEEE's quotient; nvcc compiles it as
  ``__fdividef(x, y)`` (``x * (1/y)``: a last bit off on about a quarter of pairs, and 0 for 2^126 < |y| < 2^128).
* Passes where a GPU hangs: a ``cuda::barrier`` (init'ed for the whole block) that threads returned before arriving
  at was released as ``__syncthreads()`` is; a GPU's counts arrivals and waits forever.  Now a BarrierError naming
  the deadlock.  (``__syncthreads()`` itself keeps waiting only for the non-exited threads: CUDA documents that
  since Volta.)
* Runs here, fails on a GPU: the device heap was each module's own 8 MiB (and a free of what another module's
  kernel allocated was refused), and its size could be raised after a kernel had used it; CUDA's heap is the
  context's, and ``cudaDeviceSetLimit(cudaLimitMallocHeapSize)`` after such a launch is cudaErrorInvalidValue.

Ran as a GPU does (no test: they passed at the round's start): a tail warp's ``__shfl_down_sync`` under a ballot
mask reading a lane outside the mask (a KernelFault naming the lanes: CUDA leaves the value undefined),
``__activemask()`` in a divergent branch, ``tiled_partition<16>`` shuffles, ``atomicAdd`` on ``__half2`` and
``__nv_bfloat162``, a ``float4`` load at ``x + 1`` (a KernelFault: CUDA_ERROR_MISALIGNED_ADDRESS).
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import pytest

from minilora import emulator as emu
from minilora.emulator import RawModule

pytestmark = pytest.mark.skipif(not emu.is_available(), reason="the CUDA emulator needs g++")

TINY = np.float32(3e-39)  # subnormal: the smallest normal float32 is 1.18e-38

# ---------------------------------------------------------------------------------------------- PTX .ftz
FTZ = r"""
#include <cuda_fp16.h>
__device__ float add_ftz(float a, float b) { float r; asm("add.ftz.f32 %0, %1, %2;" : "=f"(r) : "f"(a), "f"(b)); return r; }
__device__ float add_kept(float a, float b) { float r; asm("add.f32 %0, %1, %2;" : "=f"(r) : "f"(a), "f"(b)); return r; }
extern "C" __global__ void flush(const float* x, const double* d, const unsigned* h2, float* out, unsigned* bits) {
    const float a = x[0], b = x[1];  // a subnormal, b = 1e-20
    float r;
    out[0] = add_ftz(a, -0.0f);
    out[1] = add_kept(a, -0.0f);
    asm("mul.ftz.f32 %0, %1, %2;" : "=f"(r) : "f"(b), "f"(b)); out[2] = r;          // 1e-40: made subnormal
    asm("mul.f32 %0, %1, %2;" : "=f"(r) : "f"(b), "f"(b)); out[3] = r;
    asm("fma.rn.ftz.f32 %0, %1, %2, %3;" : "=f"(r) : "f"(a), "f"(2.0f), "f"(1.0f)); out[4] = r - 1.0f;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(-130.0f)); out[5] = r;
    asm("ex2.approx.f32 %0, %1;" : "=f"(r) : "f"(-130.0f)); out[6] = r;
    asm("neg.ftz.f32 %0, %1;" : "=f"(r) : "f"(a)); out[7] = r;                        // -0: the sign is kept
    asm("cvt.rn.ftz.f32.f64 %0, %1;" : "=f"(r) : "d"(d[0])); out[8] = r;
    asm("lg2.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(a)); out[9] = r;                 // log2(0): -inf
    asm("rcp.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(0x1p127f)); out[10] = r;        // 2^-127 flushed: the
    asm("max.ftz.f32 %0, %1, %2;" : "=f"(r) : "f"(a), "f"(0.0f)); out[11] = r;       // __fdividef rule
    asm("add.ftz.f16x2 %0, %1, %2;" : "=r"(bits[0]) : "r"(h2[0]), "r"(0x80008000u));           // half subnormals too
    asm("add.f16x2 %0, %1, %2;" : "=r"(bits[1]) : "r"(h2[0]), "r"(0x80008000u));
    asm("cvt.ftz.f32.f16 %0, %1;" : "=f"(out[12]) : "h"((unsigned short)(h2[0] & 0xffff)));  // f16 side: kept
}
"""


def test_ftz_in_inline_ptx_flushes_subnormal_inputs_and_results_to_signed_zero():
    x = np.array([-TINY, 1e-20], np.float32)
    d = np.array([1e-39], np.float64)
    h2 = np.array([0x8001_0001], np.uint32)  # two half subnormals: +2^-24 (low) and -2^-24 (high)
    out, bits = np.full(13, 7.0, np.float32), np.zeros(2, np.uint32)
    base_module().get_function("flush")((1,), (1,), (x, d, h2, out, bits))
    f = out.view(np.uint32)
    assert f[0] == 0x8000_0000 and out[1] == -TINY           # -subnormal + -0 -> -0; kept without .ftz
    assert f[2] == 0 and out[3] == np.float32(1e-20) * np.float32(1e-20) != 0
    assert out[4] == 0.0                                    # 2 * flushed + 1 == 1 exactly
    assert f[5] == 0 and out[6] == np.float32(2.0 ** -130)
    assert f[7] == 0 and out[8] == 0.0                      # neg(-0) = +0; the double's 1e-39 made 0
    assert out[9] == -np.inf and f[10] == 0 and f[11] == 0
    assert bits[0] == 0x8000_0000 and bits[1] == 0x8001_0001
    assert out[12] == np.float32(2.0 ** -24)                # cvt.ftz.f32.f16: a half subnormal widens unflushed


SETP = r"""
extern "C" __global__ void setp(const float* x, unsigned* out) {
    unsigned p;
    asm("{.reg .pred q; setp.gt.ftz.f32 q, %1, 0f00000000; selp.u32 %0, 1, 0, q;}" : "=r"(p) : "f"(x[0])); out[0] = p;
    asm("{.reg .pred q; setp.gt.f32 q, %1, 0f00000000; selp.u32 %0, 1, 0, q;}" : "=r"(p) : "f"(x[0])); out[1] = p;
}
"""


def test_ftz_setp_reads_a_subnormal_as_zero():
    # setp.gt.ftz of +TINY > 0 is false on a GPU (TINY reads as 0); without .ftz it is true
    out = np.full(2, 9, np.uint32)
    base_module().get_function("setp")((1,), (1,), (np.array([TINY], np.float32), out))
    assert list(out) == [0, 1]


# ------------------------------------------------------------------------------------------ half sin / cos
HALF_TRIG = r"""
#include <cuda_fp16.h>
extern "C" __global__ void trig(const unsigned short* bits, unsigned short* out, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    const __half x = __ushort_as_half(bits[i]);
    out[i] = __half_as_ushort(hsin(x));
    out[n + i] = __half_as_ushort(hcos(x));
    const __half2 pair = h2sin(__halves2half2(x, x));
    out[2 * n + i] = __half_as_ushort(__high2half(pair));
}
"""


def test_hsin_hcos_are_cudas_float_code_the_correctly_rounded_half():
    bits = np.arange(65536, dtype=np.uint16)
    out = np.zeros(3 * 65536, np.uint16)
    base_module().get_function("trig")((256,), (256,), (bits, out, np.int32(65536)))
    x = bits.view(np.float16).astype(np.float64)
    finite = np.isfinite(x)
    with np.errstate(invalid="ignore"):
        want = [np.sin(x).astype(np.float16).view(np.uint16), np.cos(x).astype(np.float16).view(np.uint16)]
    got = out.reshape(3, 65536)
    for k in range(2):
        np.testing.assert_array_equal(got[k][finite], want[k][finite])
        assert np.isnan(got[k].view(np.float16)[~finite]).all()
    np.testing.assert_array_equal(got[2], got[0])
    # the inputs cuda_fp16.hpp patches: sinf / cosf rounded to half missed them by an ulp
    for b in (0x32B3, 0x5CB0, 0xB2B3):
        assert got[0][b] == want[0][b]
    assert got[1][0x2B7C] == want[1][0x2B7C]


# ------------------------------------------------------------------------- cuda::barrier and exited threads
BARRIER = r"""
#include <cuda/barrier>
#include <cuda/pipeline>
#include <cooperative_groups.h>
#include <utility>
extern "C" __global__ void staged(const float* x, float* out, int n) {
    __shared__ cuda::pipeline_shared_state<cuda::thread_scope_block, 2> state;
    __shared__ float s[64];
    auto pipe = cuda::make_pipeline(cooperative_groups::this_thread_block(), &state);
    if ((int)threadIdx.x >= n) return;  // libcu++'s stage barriers count the whole block
    pipe.producer_acquire();
    cuda::memcpy_async(&s[threadIdx.x], &x[threadIdx.x], sizeof(float), pipe);
    pipe.producer_commit();
    pipe.consumer_wait();
    out[threadIdx.x] = s[(threadIdx.x + 1) % n];
    pipe.consumer_release();
}
extern "C" __global__ void early_return(const float* x, float* out, int n) {
    __shared__ cuda::barrier<cuda::thread_scope_block> bar;
    __shared__ float s[64];
    if (threadIdx.x == 0) init(&bar, blockDim.x);
    __syncthreads();
    const int i = threadIdx.x;
    if (i >= n) return;  // the tail leaves: it never arrives
    s[i] = x[i];
    bar.arrive_and_wait();
    out[i] = s[(i + 1) % n];
}
extern "C" __global__ void arrive_then_leave(float* out) {
    __shared__ cuda::barrier<cuda::thread_scope_block> bar;
    __shared__ float s[64];
    if (threadIdx.x == 0) init(&bar, blockDim.x);
    __syncthreads();
    s[threadIdx.x] = threadIdx.x;
    auto token = bar.arrive();
    if (threadIdx.x % 2) return;  // arrived, then left: the phase still completes on a GPU
    bar.wait(std::move(token));
    out[threadIdx.x] = s[(threadIdx.x + 1) % blockDim.x];
}
"""


def test_cuda_barrier_that_returned_threads_never_reach_is_a_named_deadlock():
    x, out = np.arange(64, dtype=np.float32), np.zeros(64, np.float32)
    kernel = base_module().get_function("early_return")
    kernel((1,), (64,), (x, out, np.int32(64)))  # every thread arrives: fine
    np.testing.assert_array_equal(out, np.roll(x, -1))
    line = line_of(SOURCE, "bar.arrive_and_wait")
    with pytest.raises(emu.BarrierError, match=rf"deadlock: cuda::barrier's wait at flush\.cu:{line} .* 14 of the "
                                               r"block's 64 threads exited before arriving"):
        kernel((1,), (64,), (x, out, np.int32(50)))
    out = np.zeros(64, np.float32)
    base_module().get_function("arrive_then_leave")((1,), (64,), (out,))  # arrived, then returned: no deadlock
    even = np.arange(0, 64, 2)
    np.testing.assert_array_equal(out[even], even + 1)
    staged = base_module().get_function("staged")  # a block-scoped cuda::pipeline: the same barriers inside
    staged((1,), (64,), (x, out, np.int32(64)))
    np.testing.assert_array_equal(out, np.roll(x, -1))
    with pytest.raises(emu.BarrierError, match=r"deadlock: cuda::pipeline's consumer_wait at .* 14 of the block's 64"):
        staged((1,), (64,), (x, out, np.int32(50)))


# ------------------------------------------------------------------------------------ --use_fast_math's `/`
DIVIDE = r"""
#define HALF_OF(n) ((n) / 2)
#define WARPS (64 / 32)
#if WARPS > 1  // a macro the preprocessor evaluates keeps its plain `/`
#define PAIRS WARPS
#endif
template <int N> struct Tile { float v[N / 2]; };
extern "C" __global__ void divide(const float* x, const float* y, const int* k, float* out, int* iout, double* dout) {
    const int i = threadIdx.x;
    __shared__ float s[HALF_OF(64)];  // integer constants still size arrays
    Tile<8> tile;
    tile.v[i % 4] = x[i] / y[i];
    out[i] = tile.v[i % 4];
    float a = x[i];
    a /= y[i];
    out[32 + i] = a;
    out[64 + i] = fdividef(x[i], y[i]);
    constexpr float third = 1.0f / 3.0f;
    s[i] = third;
    out[96 + i] = s[i];
    out[128 + i] = x[i] / k[i];          // float / int: a float quotient
    iout[i] = 96 / k[i];                 // ints: the integer division
    dout[i] = (double)x[i] / y[i];       // doubles: IEEE
}
"""


@lru_cache(maxsize=None)
def divide_module(fast: bool) -> RawModule:
    return RawModule(code=DIVIDE, options=("--use_fast_math",)) if fast else base_module()


def run_divide(fast: bool, x, y, k):
    out, iout, dout = np.zeros(160, np.float32), np.zeros(32, np.int32), np.zeros(32, np.float64)
    divide_module(fast).get_function("divide")((1,), (32,), (x, y, k, out, iout, dout))
    return out.reshape(5, 32), iout, dout


def fdividef(x, y):
    """__fdividef: x * (1/y), each rounded to float32; 0 for 2^126 < |y| < 2^128 (CUDA's documented rule)."""
    with np.errstate(all="ignore"):
        q = x * (np.float32(1) / y)
    return np.where((np.abs(y) > 2.0 ** 126) & np.isfinite(y), x * np.float32(0) * np.sign(y), q).astype(np.float32)


def test_use_fast_math_makes_a_float_division_fdividef_as_nvcc_does():
    g = np.random.default_rng(0)
    x = g.uniform(-10, 10, 32).astype(np.float32)
    y = g.uniform(0.5, 3, 32).astype(np.float32)
    x[0], y[0] = 2.0 ** 100, 2.0 ** 127  # past 2^126 the fast divide gives 0, IEEE's 2^-27
    k = np.arange(1, 33, dtype=np.int32)
    fast, slow = run_divide(True, x, y, k), run_divide(False, x, y, k)
    want = fdividef(x, y)
    assert (want != x / y).sum() >= 3  # the pairs tell the two divisions apart
    for row in range(3):  # x / y, x /= y, fdividef(x, y)
        np.testing.assert_array_equal(fast[0][row], want)
        np.testing.assert_array_equal(slow[0][row], x / y)
    assert fast[0][0][0] == 0 and slow[0][0][0] == 2.0 ** -27
    np.testing.assert_array_equal(fast[0][3], fdividef(np.float32(1), np.float32(3)))
    np.testing.assert_array_equal(fast[0][4], fdividef(x, k.astype(np.float32)))
    np.testing.assert_array_equal(fast[1], 96 // k)
    np.testing.assert_array_equal(fast[2], x.astype(np.float64) / y.astype(np.float64))
    line = line_of(DIVIDE, "96 / k[i]")
    with pytest.raises(emu.KernelFault, match=rf"divide\.cu:{line}: SIGFPE: integer division by zero"):
        run_divide(True, x, y, np.zeros(32, np.int32))  # still named at the user's line


# ------------------------------------------------------------------------------- the context's device heap
LEAK = r"""extern "C" __global__ void leak(unsigned long long bytes, int* got, unsigned long long* where) {
    void* p = malloc(bytes);  // not freed here
    got[0] = p != nullptr;
    where[0] = (unsigned long long)p;
}"""
TAKE = r"""
extern "C" __global__ void take(unsigned long long bytes, int* got) {
    void* p = malloc(bytes);
    got[0] = p != nullptr;
    free(p);
}
extern "C" __global__ void say(int x) { printf("%d\n", x); }
extern "C" __global__ void give_back(const unsigned long long* where) { free((void*)where[0]); }
"""
SOURCE = FTZ + SETP + HALF_TRIG + BARRIER + DIVIDE + TAKE


def line_of(source: str, text: str) -> int:
    return source[:source.index(text)].count("\n") + 1


@lru_cache(maxsize=None)
def base_module() -> RawModule:
    """The kernels built once, as one source (a build is most of a test's time)."""
    return RawModule(code=SOURCE)


def test_the_device_heap_is_the_contexts_a_leak_stays_taken_and_its_size_is_fixed_once_used():
    runtime = emu.cuda.runtime  # cupy.cuda.runtime
    leak, take = RawModule(code=LEAK).get_function("leak"), base_module().get_function("take")
    got = np.zeros(1, np.int32)
    runtime.deviceReset()
    try:
        take((1,), (1,), (np.uint64(5 << 20), got))
        assert got[0] == 1 and runtime.deviceHeapInUse() == 0
        where = np.zeros(1, np.uint64)
        leak((1,), (1,), (np.uint64(5 << 20), got, where))
        assert got[0] == 1 and runtime.deviceHeapInUse() == 5 << 20  # the leak shows
        take((1,), (1,), (np.uint64(5 << 20), got))
        assert got[0] == 0  # another module's leak holds 5 of the context's 8 MiB, as on a GPU
        base_module().get_function("give_back")((1,), (1,), (where,))  # freed by the other module: fine on a GPU
        assert runtime.deviceHeapInUse() == 0
        take((1,), (1,), (np.uint64(5 << 20), got))
        assert got[0] == 1
        leak((1,), (1,), (np.uint64(1 << 20), got, where))
        with pytest.raises(runtime.CUDARuntimeError, match="^cudaErrorInvalidValue"):
            runtime.deviceSetLimit(runtime.cudaLimitMallocHeapSize, 64 << 20)  # too late: a kernel used the heap
    finally:
        runtime.deviceReset()
    assert runtime.deviceHeapInUse() == 0
    runtime.deviceSetLimit(runtime.cudaLimitMallocHeapSize, 16 << 20)  # before any launch: fine
    try:
        take((1,), (1,), (np.uint64(12 << 20), got))
        assert got[0] == 1
    finally:
        runtime.deviceReset()
    assert runtime.deviceGetLimit(runtime.cudaLimitMallocHeapSize) == 8 << 20
    runtime.deviceSetLimit(runtime.cudaLimitPrintfFifoSize, 2 << 20)
    try:
        base_module().get_function("say")((1,), (1,), (np.int32(7),))
        with pytest.raises(runtime.CUDARuntimeError, match="^cudaErrorInvalidValue"):
            runtime.deviceSetLimit(runtime.cudaLimitPrintfFifoSize, 4 << 20)  # a kernel has printed
    finally:
        runtime.deviceReset()
    assert runtime.deviceGetLimit(runtime.cudaLimitPrintfFifoSize) == 1 << 20
