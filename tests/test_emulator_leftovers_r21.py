"""Round 21's emulator leftovers: what a GPU or compute-sanitizer does, where the emulator ran on silently.

* A double ``free()`` / ``delete`` of device-heap memory in a kernel was glibc's business: an abort named as a crash
  "inside libc.so.6 (the kernel's line that called it is unknown)", or, once the block had been handed out again,
  nothing at all.  runtime.cpp now keeps the kernel's allocations (malloc/free and new/delete, linked with
  ``--wrap``) and names a second free at its line, as compute-sanitizer's memcheck does, by default.

* ``bar.sync id`` (inline PTX) without a thread count was ``__syncthreads()`` for every id.  PTX: "If no thread
  count is specified, all threads in the CTA participate in the barrier" -- barrier ``id``, not barrier 0.  So
  ``bar.sync 1`` meets a producer's ``bar.arrive 1, 96`` (was a false divergent-__syncthreads error), the same
  barrier is used without and with a count in later phases, and two ids at one source line no longer pass as one
  barrier (a GPU waits forever: now a BarrierError naming both).  Threads of one phase giving different counts
  are a BarrierError (undefined on a GPU; synccheck's report).
* A runtime ``cg::tiled_partition(g, n)`` of n > 32 said "larger tiles are not modelled", at a line of the
  emulator's header.  CUDA's programming guide: "Functionality is limited to native hardware sizes,
  1/2/4/8/16/32"; the refusal now says so at the kernel's line, and points to ``tiled_partition<N>``.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import pytest

from minilora import emulator as emu
from minilora.emulator import RawModule

pytestmark = pytest.mark.skipif(not emu.is_available(), reason="the CUDA emulator needs g++")

# ------------------------------------------------------------------------------ named barriers without a count
BARRIERS = r"""
// warp 0 publishes a tile and arrives at barrier 1 with the block's count; warps 1-2 wait there with no count
// (the whole block); then, the producer gone, warps 1-2 use barrier 1 again with a count of 64
extern "C" __global__ void arrive_then_whole_block(const float* in, float* out) {
    __shared__ float s[64];
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    if (warp == 0) {
        s[lane] = in[lane];
        asm volatile("bar.arrive 1, 96;" ::: "memory");
    } else {
        asm volatile("bar.sync 1;" ::: "memory");
        out[threadIdx.x - 32] = s[lane] * warp;
    }
    __syncthreads();
    if (warp == 0) return;
    s[threadIdx.x - 32] = in[threadIdx.x];
    asm volatile("bar.sync 1, 64;" ::: "memory");
    out[32 + threadIdx.x] = s[95 - threadIdx.x];
}

// warp 0 waits at barrier 1, warps 1-2 at barrier 2, from one source line: neither barrier ever fills
extern "C" __global__ void two_ids_one_line(float* out) {
    const unsigned id = threadIdx.x < 32 ? 1 : 2;
    asm volatile("bar.sync %0;" :: "r"(id) : "memory");
    out[threadIdx.x] = 1.f;
}

// warps 1-2 give a count of 64, warp 0 none (the block's 96) for the same phase of barrier 1
extern "C" __global__ void counts_disagree(float* out) {
    if (threadIdx.x < 32) asm volatile("bar.sync 1;" ::: "memory");
    else asm volatile("bar.sync 1, 64;" ::: "memory");
    out[threadIdx.x] = 1.f;
}

// barrier 3 for the whole block while a warp has returned: the rest pass, as at __syncthreads()
extern "C" __global__ void whole_block_after_an_exit(const int* in, int* out) {
    __shared__ int s[64];
    if (threadIdx.x >= 64) return;
    s[threadIdx.x] = in[threadIdx.x];
    asm volatile("barrier.sync 3;" ::: "memory");
    out[threadIdx.x] = s[63 - threadIdx.x];
}
"""


@lru_cache(maxsize=None)
def barriers() -> RawModule:
    return RawModule(code=BARRIERS)


@pytest.mark.parametrize("racecheck", [False, True])
def test_bar_sync_without_a_count_meets_an_arrive_of_the_block_and_mixes_with_a_count(racecheck):
    x = np.arange(96, dtype=np.float32) + 1
    out = np.zeros(128, np.float32)
    barriers().get_function("arrive_then_whole_block")((1,), (96,), (x, out), racecheck=racecheck)
    np.testing.assert_array_equal(out[:64], np.concatenate([x[:32] * 1, x[:32] * 2]))
    np.testing.assert_array_equal(out[64:], x[95:31:-1])
    # barrier 3 for the whole block while a warp has returned: the rest pass, as at __syncthreads()
    xi, outi = np.arange(96, dtype=np.int32), np.zeros(64, np.int32)
    barriers().get_function("whole_block_after_an_exit")((1,), (96,), (xi, outi), racecheck=racecheck)
    np.testing.assert_array_equal(outi, xi[63::-1])


def test_two_barrier_ids_at_one_line_are_not_one_barrier():
    with pytest.raises(emu.BarrierError, match=r"bar\.sync [12] at .*can never complete"):
        barriers().get_function("two_ids_one_line")((1,), (96,), (np.zeros(96, np.float32),))


def test_threads_of_one_phase_giving_different_counts_are_named():
    with pytest.raises(emu.BarrierError, match=r"bar\.sync 1, 64 at .*same thread count"):
        barriers().get_function("counts_disagree")((1,), (96,), (np.zeros(96, np.float32),))



# ------------------------------------------------------------------------------ runtime tiles
RUNTIME_TILES = r"""
#include <cooperative_groups.h>
namespace cg = cooperative_groups;

extern "C" __global__ void runtime_tile(int n, int* out) {
    cg::thread_group tile = cg::tiled_partition(cg::this_thread_block(), n);
    out[threadIdx.x] = tile.thread_rank() * 100 + tile.size();
}

extern "C" __global__ void runtime_tile_of_coalesced(int n, int* out) {
    cg::coalesced_group active = cg::coalesced_threads();
    cg::coalesced_group tile = cg::tiled_partition(active, n);
    out[threadIdx.x] = tile.thread_rank() * 100 + tile.size();
}
"""


@lru_cache(maxsize=None)
def runtime_tiles() -> RawModule:
    return RawModule(code=RUNTIME_TILES)


@pytest.mark.parametrize("kernel", ["runtime_tile", "runtime_tile_of_coalesced"])
@pytest.mark.parametrize("n", [64, 12])
def test_runtime_tile_outside_cudas_native_sizes_traps_at_the_kernels_line(kernel, n):
    out = np.zeros(128, np.int32)
    with pytest.raises(emu.KernelFault, match=rf"tiled_partition\(group, {n}\) at runtime_tile\.cu:\d+ .*'{kernel}'.*1/2/4/8/16/32"
                                              r".*CUDA_ERROR_ILLEGAL_INSTRUCTION"):
        runtime_tiles().get_function(kernel)((1,), (128,), (np.int32(n), out))
    runtime_tiles().get_function(kernel)((1,), (32,), (np.int32(8), out))  # a native size cuts as CUDA's
    np.testing.assert_array_equal(out[:32], np.arange(32) % 8 * 100 + 8)


# ------------------------------------------------------------------------------ the device heap
HEAP = r"""
__device__ int* kept;

extern "C" __global__ void free_twice(int* out) {
    int* p = (int*)malloc(4 * sizeof(int));
    p[0] = threadIdx.x;
    out[threadIdx.x] = p[0];
    free(p);
    if (threadIdx.x == 1) free(p);
}

extern "C" __global__ void delete_twice(int* out) {
    int* p = new int[4];
    p[0] = 7;
    out[threadIdx.x] = p[0];
    delete[] p;
    delete[] p;
}

extern "C" __global__ void keep(int* out) {  // one launch allocates, a later one frees: the heap outlives launches
    kept = (int*)malloc(64 * sizeof(int));
    kept[0] = 5;
    out[0] = kept[0];
}

extern "C" __global__ void release(int* out) {
    out[0] = kept[0];
    free(kept);
}
"""


@lru_cache(maxsize=None)
def heap() -> RawModule:
    return RawModule(code=HEAP)


@pytest.mark.parametrize("memcheck", [False, True])
def test_a_double_free_in_device_code_is_named_at_its_line(memcheck):
    out = np.zeros(4, np.int32)
    with pytest.raises(emu.KernelFault, match=r"thread \(1,0,0\) .*'free_twice' called free\(\) at \w+\.cu:9 .*double free"):
        heap().get_function("free_twice")((1,), (4,), (out,), memcheck=memcheck)
    with pytest.raises(emu.KernelFault, match=r"'delete_twice' called delete\[\] at \w+\.cu:17 .*double free"):
        heap().get_function("delete_twice")((1,), (1,), (out,), memcheck=memcheck)
    heap().get_function("keep")((1,), (1,), (out,))  # freed once in a later launch: fine
    heap().get_function("release")((1,), (1,), (out,))
    assert out[0] == 5
    with pytest.raises(emu.KernelFault, match=r"'release' called free\(\) at \w+\.cu:28 .*already freed"):
        heap().get_function("release")((1,), (1,), (out,))
