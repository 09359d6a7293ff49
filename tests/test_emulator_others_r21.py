"""Round 21: CUDA kernels written the way public code writes them run on the emulator unedited, with a GPU's numbers.

Each kernel is a string below, in the style of a well-known source, run through the CuPy-compatible RawModule on
tiny ragged shapes and compared with a float64 NumPy reference.  What failed before this round, and the fix:

* Tiles of more than 32 threads (CUDA 11.1+: ``cg::tiled_partition<64..1024>``, CUDA samples' ``multi_warp_cg_reduce``
  with ``__shared__ cg::block_tile_memory<BlockSize>`` and ``cg::this_thread_block(scratch)``) did not compile: the
  stand-in stopped at 32 and had no ``block_tile_memory``.  Such a tile is now whole warps with a barrier of its own
  (runtime.cpp's ``tile_sync``: the rest of the block does not wait, racecheck orders the tile's accesses across it),
  with CUDA's ``shfl`` from one source, ``any``, ``all`` and ``cg::reduce``; a tile thread that exits before the
  tile's sync is a BarrierError (a GPU hangs).  CUDA 12's split barrier (``block.barrier_arrive()`` /
  ``barrier_wait(std::move(token))``, grid_group's too) did not compile; the whole barrier is now at the wait.
* PTX's named barriers (``bar.sync id, count`` / ``bar.arrive id, count``: CUTLASS's NamedBarrier, warp-specialized
  producer / consumer kernels) were refused at build time.  Barrier ``id`` now completes when ``count`` threads have
  arrived (runtime.cpp's ``named_barrier``); those that only arrive go on, racecheck orders the arrivals' writes
  before the waiters' reads, and one that can never complete is a BarrierError naming it.
* ``__fdividef(a, b)`` and PTX ``div.approx.f32`` were ``a / b`` rounded once; the GPU's is "computed as a * (1/b)"
  (PTX ISA), two roundings, which differ from one in the last bit for about a quarter of all pairs (a silent
  divergence in every softmax written with ``__fdividef``).  Both are now the product with the rounded reciprocal
  (the emulator's rule for rcp.approx, which a GPU computes within an ulp of it).  Of the same kind: ``__tanf`` was
  tan rounded once, where CUDA documents the fast divide of ``__sinf`` by ``__cosf`` (another number for ~40% of
  inputs; ``tanf`` under ``--use_fast_math`` too), and ``__frsqrt_rn`` rounded twice (``1.0f / sqrtf(x)``: ~30% of
  inputs) where CUDA's rounds once.
* A block that waits for another block (a hand-written grid barrier on a global counter, as code before cooperative
  groups wrote it; a split-K tile waiting for its predecessor's flag) spun forever: one worker ran the blocks one
  after another, so the one it waited for never started (Ctrl-C or timeout= the only way out).  A block that spins
  (2^14 turns and 0.1 s) now gets a worker for every block not started yet, up to 64, as a GPU holds them all
  resident (runtime.cpp's ``ask_for_help``; not in racecheck, the sanitizer or check_races' other orders).
* ``__shared__`` declared through macros, as people write them: ``#define SCRATCH(T) __shared__ struct {...} s`` with
  the ``;`` where the macro is used was "cannot parse this __shared__ declaration"; an anonymous (or ``S_##n``)
  struct in a macro expanded twice in one scope or at file scope was a redefinition (one name for every expansion;
  the struct is now named after the variable, per expansion); and a macro expanded at file scope, or a
  ``__shared__`` variable in a ``namespace``, crashed Python with SIGSEGV when the library loaded (a reference bound
  outside any block).  File-scope uses of such macros are written out first; a namespace's variable is an accessor
  function there, so ``tiles::q[i]`` still names it.

Checked and left as they were: ``__hdiv`` -- bf16's is div.rn.f32 then one rounding to bf16 (CUDA 12's
cuda_bf16.hpp), which equals the correctly rounded quotient (double rounding through float is innocuous for 8- and
11-bit formats: 24 >= 2p + 2); half's is ``rcp.approx`` times ``a`` rounded to half (refined by an fma below
0x008F), which with the reciprocal rounded matched the correctly rounded quotient on 1.5 M random pairs, so the
emulator's ``float(a) / float(b)`` rounding already gives those bits; what it cannot give is where a GPU's
rcp.approx itself is an ulp off.  A ``__shared__ struct {...} name;`` in a macro expanded twice gets one variable
per expansion (round 20's site marking covers it).  Crashes (INT_MIN / -1, wild and null pointers, a bad free, a
huge memcpy, printf of a non-string, traps) were already KernelFaults naming the kernel and line.
"""
from __future__ import annotations

from functools import lru_cache

import ctypes
import ctypes.util
import sys

import numpy as np
import pytest

import background_runs
from minilora import emulator as emu
from minilora.emulator import RawModule

pytestmark = pytest.mark.skipif(not emu.is_available(), reason="the CUDA emulator needs g++")


def rng(seed=0):
    return np.random.default_rng(seed)


# ---------------------------------------------------------------------------------- tiles of 64..1024 threads
BIG_TILES = r'''
#include <cooperative_groups.h>
#include <cooperative_groups/reduce.h>
#include <cooperative_groups/scan.h>
namespace cg = cooperative_groups;

// CUDA samples' reduction, multi_warp_cg_reduce: a grid-stride sum, then cg::reduce over tiles of several warps
template <class T, size_t BlockSize, size_t MultiWarpGroupSize>
__global__ void multi_warp_cg_reduce(const T *g_idata, T *g_odata, unsigned int n) {
    __shared__ cg::block_tile_memory<BlockSize> scratch;
    auto cta = cg::this_thread_block(scratch);
    auto multiWarpTile = cg::tiled_partition<MultiWarpGroupSize>(cta);
    T threadVal = 0;
    for (unsigned i = blockIdx.x * BlockSize + threadIdx.x; i < n; i += BlockSize * gridDim.x) threadVal += g_idata[i];
    threadVal = cg::reduce(multiWarpTile, threadVal, cg::plus<T>());
    __shared__ T partial[BlockSize / MultiWarpGroupSize];
    if (multiWarpTile.thread_rank() == 0) partial[multiWarpTile.meta_group_rank()] = threadVal;
    cta.sync();
    if (cta.thread_rank() == 0) {
        T s = 0;
        for (unsigned k = 0; k < multiWarpTile.meta_group_size(); ++k) s += partial[k];
        g_odata[blockIdx.x] = s;
    }
}

// each 128-thread tile stages values in shared memory and syncs only itself; a broadcast, votes, a max
extern "C" __global__ void tile128(const int* in, int* out, int* info) {
    __shared__ int stage[256];
    cg::thread_block block = cg::this_thread_block();
    cg::thread_block_tile<128> tile = cg::tiled_partition<128>(block);
    const unsigned r = tile.thread_rank(), base = tile.meta_group_rank() * 128;
    stage[base + r] = in[block.thread_rank()];
    tile.sync();
    int v = stage[base + (r + 1) % 128];
    int fifth = tile.shfl(v, 5);
    int any_neg = tile.any(v < 0), all_small = tile.all(v < 1000);
    int mx = cg::reduce(tile, v, cg::greater<int>());
    out[block.thread_rank()] = v + fifth;
    if (r == 0) {
        int* mine = info + 4 * tile.meta_group_rank();
        mine[0] = any_neg;
        mine[1] = all_small;
        mine[2] = mx;
        mine[3] = tile.meta_group_size() * 1000 + tile.num_threads();
    }
}

// CUDA 11's spelling; only the first tile works, the rest of the block (a short tile among it) returns
extern "C" __global__ void first_tile_only(const float* in, float* out) {
    __shared__ cg::experimental::block_tile_memory<4, 256> shared;
    cg::thread_block block = cg::experimental::this_thread_block(shared);
    auto tile = cg::experimental::tiled_partition<64>(block);
    if (tile.meta_group_rank() != 0) return;
    float s = cg::reduce(tile, in[threadIdx.x], cg::plus<float>());
    if (tile.thread_rank() == 0) out[0] = s;
}

// a thread of the tile exits before the tile's sync: a GPU waits forever
extern "C" __global__ void tile_with_a_missing_thread(float* out) {
    auto tile = cg::tiled_partition<64>(cg::this_thread_block());
    if (threadIdx.x == 70) return;
    tile.sync();
    out[threadIdx.x] = 1.f;
}

// scans over tiles of 128 threads (four warps each)
extern "C" __global__ void tile_scans(const int* x, int* inclusive, int* exclusive) {
    auto tile = cg::tiled_partition<128>(cg::this_thread_block());
    const int v = x[threadIdx.x];
    inclusive[threadIdx.x] = cg::inclusive_scan(tile, v);
    exclusive[threadIdx.x] = cg::exclusive_scan(tile, v, cg::plus<int>());
}

// CUDA 12's split block barrier: independent work between the arrive and the wait
extern "C" __global__ void split_barrier(const float* x, float* out) {
    __shared__ float s[64];
    auto block = cg::this_thread_block();
    s[block.thread_rank()] = x[block.thread_rank()];
    auto token = block.barrier_arrive();
    const float independent = 2.f * x[block.thread_rank()];
    block.barrier_wait(std::move(token));
    out[block.thread_rank()] = s[63 - block.thread_rank()] + independent;
}

// reads the other tile's stage: this tile's sync does not order it
extern "C" __global__ void reads_across_tiles(int* out) {
    __shared__ int stage[128];
    auto tile = cg::tiled_partition<64>(cg::this_thread_block());
    stage[threadIdx.x] = threadIdx.x;
    tile.sync();
    out[threadIdx.x] = stage[(threadIdx.x + 64) % 128];
}
'''
BIG_TILE_TEMPLATES = ("multi_warp_cg_reduce<float, 256, 64>", "multi_warp_cg_reduce<int, 192, 64>")


@lru_cache(maxsize=None)
def big_tiles() -> RawModule:
    return RawModule(code=BIG_TILES, name_expressions=BIG_TILE_TEMPLATES)


def test_samples_multi_warp_cg_reduce_with_block_tile_memory():
    x = rng(1).random(3001).astype(np.float32)
    out = np.zeros(3, np.float32)
    big_tiles().get_function("multi_warp_cg_reduce<float, 256, 64>")((3,), (256,), (x, out, np.uint32(x.size)))
    np.testing.assert_allclose(out.astype(np.float64).sum(), x.astype(np.float64).sum(), rtol=1e-6)
    xi = rng(2).integers(-100, 100, 1000).astype(np.int32)
    outi = np.zeros(2, np.int32)  # a block of 192: three tiles of 64
    big_tiles().get_function("multi_warp_cg_reduce<int, 192, 64>")((2,), (192,), (xi, outi, np.uint32(xi.size)))
    block_of = np.arange(xi.size) // 192 % 2  # the grid-stride loop: block b reads the chunks b, b + 2, ...
    np.testing.assert_array_equal(outi, [xi[block_of == b].sum() for b in range(2)])


@pytest.mark.parametrize("racecheck", [False, True])
def test_tile_of_128_syncs_itself_broadcasts_votes_and_reduces(racecheck):
    x = rng(3).integers(-50, 900, 256).astype(np.int32)
    out, info = np.zeros(256, np.int32), np.zeros(8, np.int32)
    big_tiles().get_function("tile128")((1,), (256,), (x, out, info), racecheck=racecheck)
    v = np.roll(x.reshape(2, 128), -1, axis=1)
    np.testing.assert_array_equal(out.reshape(2, 128), v + v[:, 5:6])
    expected = [[int((row < 0).any()), int((row < 1000).all()), row.max(), 2128] for row in v]
    np.testing.assert_array_equal(info.reshape(2, 4), expected)


def test_cuda11_experimental_spelling_and_a_tile_alone():
    x = rng(4).random(96).astype(np.float32)
    out = np.zeros(1, np.float32)
    big_tiles().get_function("first_tile_only")((1,), (96,), (x, out))
    np.testing.assert_allclose(out[0], x[:64].astype(np.float64).sum(), rtol=1e-6)


def test_inclusive_and_exclusive_scans_over_tiles_of_four_warps():
    x = rng(9).integers(-9, 9, 256).astype(np.int32)
    inclusive, exclusive = np.zeros_like(x), np.zeros_like(x)
    big_tiles().get_function("tile_scans")((1,), (256,), (x, inclusive, exclusive))
    tiles = x.reshape(2, 128)
    np.testing.assert_array_equal(inclusive.reshape(2, 128), np.cumsum(tiles, axis=1))
    np.testing.assert_array_equal(exclusive.reshape(2, 128), np.cumsum(tiles, axis=1) - tiles)


def test_split_block_barrier_arrive_then_wait():
    x = np.arange(64, dtype=np.float32)
    out = np.zeros_like(x)
    big_tiles().get_function("split_barrier")((1,), (64,), (x, out), racecheck=True)
    np.testing.assert_array_equal(out, x[::-1] + 2 * x)


def test_a_tile_thread_that_exited_is_named_not_a_hang():
    with pytest.raises(emu.BarrierError, match=r"thread_block_tile of 64 threads .* 1 of its threads have exited"):
        big_tiles().get_function("tile_with_a_missing_thread")((1,), (128,), (np.zeros(128, np.float32),))


def test_racecheck_sees_a_read_of_another_tiles_stage():
    with pytest.raises(emu.RaceError, match="stage"):
        big_tiles().get_function("reads_across_tiles")((1,), (128,), (np.zeros(128, np.int32),), racecheck=True)


# ---------------------------------------------------------------------------------- named barriers (inline PTX)
NAMED_BARRIERS = r"""
__device__ __forceinline__ void named_sync(int id, int n) { asm volatile("bar.sync %0, %1;" :: "r"(id), "r"(n) : "memory"); }
__device__ __forceinline__ void named_arrive(int id, int n) { asm volatile("bar.arrive %0, %1;" :: "r"(id), "r"(n) : "memory"); }
enum { FULL = 1, EMPTY = 2 };

// warp specialization: warp 0 fills a shared buffer tile after tile, warps 1-2 consume each
extern "C" __global__ void __launch_bounds__(96) producer_consumer(const float* __restrict__ in, float* __restrict__ out,
                                                                   int tiles) {
    __shared__ float buf[64];
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    if (warp == 0) {
        for (int t = 0; t < tiles; ++t) {
            if (t > 0) named_sync(EMPTY, 96);  // the consumers are done with the buffer
            buf[lane] = in[t * 64 + lane];
            buf[lane + 32] = in[t * 64 + lane + 32];
            named_arrive(FULL, 96);            // publish, without waiting
        }
    } else {
        const int c = threadIdx.x - 32;
        for (int t = 0; t < tiles; ++t) {
            named_sync(FULL, 96);
            out[t * 64 + c] = 2.f * buf[c] + buf[63 - c];
            if (t + 1 < tiles) named_arrive(EMPTY, 96);
        }
    }
}

// two warps sync among themselves while the first warp has returned
extern "C" __global__ void two_warps_alone(float* out) {
    __shared__ float s[64];
    if (threadIdx.x < 32) return;
    const int c = threadIdx.x - 32;
    s[c] = c;
    asm volatile("barrier.sync.aligned 3, 64;" ::: "memory");
    out[c] = s[63 - c];
}

extern "C" __global__ void too_few_arrive(float* out) {
    if (threadIdx.x < 64) asm volatile("bar.sync 1, 96;" ::: "memory");
    out[threadIdx.x] = 1.f;
}
"""


@lru_cache(maxsize=None)
def named_barriers() -> RawModule:
    return RawModule(code=NAMED_BARRIERS)


@pytest.mark.parametrize("checks", [{}, {"racecheck": True}, {"check_races": True}])
def test_warp_specialized_producer_consumer_on_named_barriers(checks):
    x = rng(5).random(64 * 3).astype(np.float32)
    out = np.zeros_like(x)
    named_barriers().get_function("producer_consumer")((1,), (96,), (x, out, np.int32(3)), **checks)
    tiles = x.reshape(3, 64)
    np.testing.assert_array_equal(out.reshape(3, 64), 2 * tiles + tiles[:, ::-1])


def test_named_barrier_of_two_warps_while_the_rest_exited():
    out = np.zeros(64, np.float32)
    named_barriers().get_function("two_warps_alone")((1,), (96,), (out,), racecheck=True)
    np.testing.assert_array_equal(out, np.arange(64)[::-1])


def test_a_named_barrier_short_of_threads_is_named():
    with pytest.raises(emu.BarrierError, match=r"bar\.sync 1, 96 .* 64 of its 96 threads arrived"):
        named_barriers().get_function("too_few_arrive")((1,), (96,), (np.zeros(96, np.float32),))


# ---------------------------------------------------------------------------------- fast division
FAST_DIVISION = r"""
extern "C" __global__ void fast_divide(const float* a, const float* b, float* intrinsic, float* ptx, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    intrinsic[i] = __fdividef(a[i], b[i]);
    float d;
    asm("div.approx.f32 %0, %1, %2;" : "=f"(d) : "f"(a[i]), "f"(b[i]));
    ptx[i] = d;
}
"""


def test_fdividef_and_div_approx_multiply_by_the_reciprocal():
    a, b = rng(6).standard_normal((2, 1000)).astype(np.float32)
    b[:3] = [2.0 ** 127, -3e38, 4.0]  # the flush to zero above 2^126, and an exact reciprocal
    intrinsic, ptx = np.zeros_like(a), np.zeros_like(a)
    RawModule(code=FAST_DIVISION).get_function("fast_divide")((4,), (256,), (a, b, intrinsic, ptx, np.int32(a.size)))
    with np.errstate(under="ignore"):
        expected = a * (np.float32(1) / b)  # two float32 roundings, as the GPU's a * rcp(b)
    expected[:2] = [np.copysign(0.0, a[0]), np.copysign(0.0, -a[1])]
    np.testing.assert_array_equal(intrinsic, expected)
    np.testing.assert_array_equal(ptx, expected)
    assert (intrinsic != a / b).mean() > 0.1  # a / b rounded once is another number for many pairs


TANGENTS = r"""
extern "C" __global__ void tangents(const float* x, float* fast_tan, float* tan_f, float* rsqrt_rn, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    fast_tan[i] = __tanf(x[i]);
    tan_f[i] = tanf(x[i]);
    rsqrt_rn[i] = __frsqrt_rn(x[i]);
}
"""


def libm_float(name):
    fn = getattr(ctypes.CDLL(ctypes.util.find_library("m")), name)  # the C library the emulator's sinf / cosf are
    fn.restype, fn.argtypes = ctypes.c_float, [ctypes.c_float]
    return np.vectorize(lambda v: fn(float(v)), otypes=[np.float32])


@pytest.mark.parametrize("options", [(), ("--use_fast_math",)])
def test_tanf_is_the_fast_divide_of_sin_by_cos_and_frsqrt_rn_rounds_once(options):
    x = (rng(7).random(500) * 3 + 0.01).astype(np.float32)
    fast_tan, tan_f, rsqrt_rn = (np.zeros_like(x) for _ in range(3))
    kernel = RawModule(code=TANGENTS, options=options).get_function("tangents")
    kernel((2,), (256,), (x, fast_tan, tan_f, rsqrt_rn, np.int32(x.size)))
    sin, cos = libm_float("sinf")(x), libm_float("cosf")(x)
    expected = sin * (np.float32(1) / cos)  # __fdividef(__sinf(x), __cosf(x))
    np.testing.assert_array_equal(fast_tan, expected)
    assert (fast_tan != np.tan(x.astype(np.float64)).astype(np.float32)).mean() > 0.1
    if options:  # --use_fast_math: nvcc compiles tanf as __tanf
        np.testing.assert_array_equal(tan_f, expected)
    np.testing.assert_array_equal(rsqrt_rn, (1 / np.sqrt(x.astype(np.float64))).astype(np.float32))


# ---------------------------------------------------------------------------------- blocks that wait for blocks
GRID_BARRIER = r"""
// a sense-reversing grid barrier on a global counter, as code wrote it before cooperative groups
__device__ void grid_barrier(unsigned* count, volatile unsigned* generation) {
    __syncthreads();
    if (threadIdx.x == 0) {
        const unsigned gen = *generation;
        __threadfence();
        if (atomicAdd(count, 1) == gridDim.x - 1) {
            *count = 0;
            __threadfence();
            *generation = gen + 1;
        } else {
            while (*generation == gen) { }
        }
    }
    __syncthreads();
}

extern "C" __global__ void sum_then_total(const float* x, float* partial, float* total, unsigned* sync, int n) {
    float s = 0.f;
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) s += x[i];
    atomicAdd(&partial[blockIdx.x], s);
    grid_barrier(sync, sync + 1);
    if (blockIdx.x == 0 && threadIdx.x == 0) {
        float t = 0.f;
        for (int b = 0; b < gridDim.x; ++b) t += partial[b];
        total[0] = t;
    }
}
"""


@pytest.mark.parametrize("blocks, workers", [(6, 1), (12, None)])
def test_a_hand_written_grid_barrier_meets_instead_of_spinning_forever(blocks, workers):
    x = rng(8).integers(0, 4, 1000).astype(np.float32)
    partial, total, sync = np.zeros(blocks, np.float32), np.zeros(1, np.float32), np.zeros(2, np.uint32)
    kernel = RawModule(code=GRID_BARRIER).get_function("sum_then_total")
    kernel((blocks,), (64,), (x, partial, total, sync, np.int32(x.size)), workers=workers, timeout=10)
    assert total[0] == x.sum()
    assert list(sync) == [0, 1]


# ---------------------------------------------------------------------------------- __shared__ through macros
SHARED_MACROS = r"""
#define SUM_SCRATCH(T) __shared__ struct { T buf[32]; T total; } scratch
#define DECLARE_PAIR(n) __shared__ struct { float v[4]; int c; } n;
#define DECLARE_NAMED(n) __shared__ struct S_##n { int k[2]; } n;

template <typename T>
__device__ T block_sum(T v) {
    SUM_SCRATCH(T);  // the ';' is the use's
    scratch.buf[threadIdx.x] = v;
    __syncthreads();
    if (threadIdx.x == 0) {
        T t = 0;
        for (int i = 0; i < 32; ++i) t += scratch.buf[i];
        scratch.total = t;
    }
    __syncthreads();
    const T r = scratch.total;
    __syncthreads();
    return r;
}

extern "C" __global__ void macro_declarations(float* sums, unsigned long long* where) {
    DECLARE_PAIR(first)
    DECLARE_PAIR(second)  // the same anonymous struct text twice in one scope
    DECLARE_NAMED(a) DECLARE_NAMED(b)
    const float f = block_sum<float>(threadIdx.x);
    const int i = block_sum<int>(1);
    const double d = block_sum<double>(0.25);
    if (threadIdx.x == 0) {
        first.v[0] = 1.f; second.v[0] = 2.f; a.k[0] = 3; b.k[0] = 4;
        sums[0] = f; sums[1] = i; sums[2] = d; sums[3] = first.v[0] + second.v[0] + a.k[0] + b.k[0];
        where[0] = (unsigned long long)&first; where[1] = (unsigned long long)&second;
        where[2] = (unsigned long long)&a; where[3] = (unsigned long long)&b;
    }
}
"""


def test_shared_declared_through_macros_with_the_semicolon_at_the_use_and_twice_in_one_scope():
    sums, where = np.zeros(4, np.float32), np.zeros(4, np.uint64)
    RawModule(code=SHARED_MACROS).get_function("macro_declarations")((1,), (32,), (sums, where))
    np.testing.assert_array_equal(sums, [496, 32, 8, 10])
    assert len(set(where.tolist())) == 4


# Each crashed Python with SIGSEGV when the module loaded: run in a child, so that a crash is a failure, not the end
# of the test session.
SHARED_AT_FILE_SCOPE = r"""
#define DECLARE_TILE(n) __shared__ float n[4];
#define DECLARE_PAIR(n) __shared__ struct { float v[4]; int c; } n;
DECLARE_TILE(tile)
DECLARE_PAIR(fa)
DECLARE_PAIR(fb)
namespace stage {
__shared__ int q[4];
DECLARE_TILE(r)
}
extern "C" __global__ void file_scope(float* out) {
    const int t = threadIdx.x;
    tile[t] = t;
    stage::q[t] = 10 * t;
    stage::r[t] = 100 * t;
    fa.v[t] = 1000 * t;
    fb.v[t] = 2000 * t;
    __syncthreads();
    out[t] = tile[3 - t] + stage::q[3 - t] + stage::r[3 - t] + fa.v[3 - t] + fb.v[3 - t];
}
"""
CHILD = """
import sys, numpy as np
from minilora.emulator import RawModule
out = np.zeros(4, np.float32)
RawModule(code=sys.stdin.read()).get_function("file_scope")((2,), (4,), (out,))
print(out.tolist())
"""


def test_shared_at_file_scope_through_a_macro_and_in_a_namespace_does_not_crash_python():
    child = background_runs.run_process([sys.executable, "-c", CHILD], timeout=300, input=SHARED_AT_FILE_SCOPE)
    assert child.returncode == 0, child.stderr[-2000:]
    assert child.stdout.strip().splitlines()[-1] == str([3111.0 * (3 - t) for t in range(4)])
