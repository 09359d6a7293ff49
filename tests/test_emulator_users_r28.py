"""Round 28: a batch of CUDA written as users write it -- cooperative groups, warp intrinsics, vector loads, templates,
atomics, printf, assert and the faults compute-sanitizer reports -- run unedited through the emulator's CuPy API and
compared with float64 NumPy.  What failed at the round's start, fixed in the emulator (never the kernel):

* A crash of Python: device code's malloc / new took their memory from glibc's heap, the Python interpreter's, so a
  kernel writing a few elements past its allocation (``int* p = (int*)malloc(4 * sizeof(int)); p[4] = ...``)
  corrupted glibc's books and Python aborted later, far from the kernel ("free(): invalid next size (fast)").  The
  fast builds now take device allocations from an arena of their own mappings (runtime.cpp, "the device heap's
  arena"): canary bytes around each block are checked when device code frees it (a KernelFault at the free's line)
  and when the launch ends (naming the line that allocated it); a write far past the block stays in the arena (as on
  a GPU, another allocation's bytes) or meets its guard page.  The sanitizer build keeps AddressSanitizer's
  allocator, which names the write itself.  The free ranges are kept by length too (best fit, O(log n) an
  allocation): 262K mallocs / frees across fragmenting launches take 0.26 s, glibc's heap 0.10 s.
* Printed differently: CUDA's printf "can accept at most 32 arguments in addition to the format string.  Additional
  arguments beyond this will be ignored, and the format specifier output as-is" (the CUDA C++ Programming Guide); the
  emulator formatted all of them.  Now the text from the conversion that would take the 33rd argument (a `*` width
  counts as one) is printed as written, and printf returns 32 at most.

Checked and found right on the round's start (not kept here: each test here fails there), against float64 NumPy:
cooperative groups -- a row sum per thread_block_tile<16> (meta_group_rank, shfl_down in a template of the tile size,
__launch_bounds__(256), __ldg), cg::reduce with plus and greater over tiled_partition<32> merged through shared
memory, a tile<8>'s shfl_up / shfl_xor / shfl / ballot / any / all, a tile<32>'s shfl_down of a struct (an argmax
of {value, index}), cg::inclusive_scan / exclusive_scan (plus, bit_xor) on tile<16>, a tile<4> of a tile<32> with a
lambda reduce, match_any, a runtime tiled_partition(block, 8), group_index / thread_index on a 2-D block, a
tile<64> with block_tile_memory, labeled_partition, the warp-aggregated atomicAggInc over coalesced_threads (the
filter_k of NVIDIA's blog); grid.sync() refused by name without a cooperative launch, summed right with one,
grid.is_valid() 0 outside one.  Warps: __match_any_sync under __activemask() for a key histogram with partial last
warp, __match_all_sync's pred, __reduce_add / min / max / and / or / xor_sync (unsigned and int), over 16-lane
masks, __activemask() in a branch.  Vector loads: float4 scale (a template kernel by name_expressions), int4 with a
scalar tail, __half2 __hfma2 axpy with an odd tail, a __nv_bfloat162 dot product, a float4 load one float off
refused as CUDA_ERROR_MISALIGNED_ADDRESS, __ldg / __ldcs / __ldlu / __ldcv / __ldca / __ldcg of float4, int2,
__half2, double2 and __stcg / __stwt / __stwb; shuffles of double, long long, __half2, __nv_bfloat162.  Templates:
block_sum<T, BLOCK, SQUARE> with static + dynamic shared memory together (float and double), a constexpr recursive
Pow<K>, a launch past __launch_bounds__ (CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES); extern "C", a mangled kernel by
name_expressions and in a namespace.  Atomics: atomicMax of a float by an atomicCAS loop (positive and negative),
the classic double atomicAdd by CAS, atomicAdd of double / __half / __half2 / __nv_bfloat16 / unsigned long long /
float2 / float4, atomicMax of unsigned long long, atomicInc's wrap, atomicExch, 16-bit atomicCAS.  Conversions:
__float2int_rn / rz / rd / ru, __float2uint_rn, __float2ll_rn, __float2ull_rz of NaN, +-inf, 3e9, 1e20 (saturated as
PTX's cvt), __double2int_rn, __double2uint_ru, __double2ll_rz, __double2float_rz / ru; CUDA's min / max of int and
unsigned (max(-1, 2u) is 4294967295), abs of a float; __funnelshift_l / r / lc, __byte_perm, __dp4a (signed and
unsigned), __vadd2, __vabsdiffu4, __sad, __hadd, __rhadd, __mul24; __hmax / __hmin / _nan with NaN and signed zeros.
printf: widths, precisions, flags, a __shared__ string, %x %X %o %lld %llu %c %% %s %p %hhd %hd %ld %e %a, and its return value as CUDA's
(the number of arguments, not of characters).  Faults: assert() names its expression (CUDA_ERROR_ASSERT) and is
gone under -DNDEBUG; reads and writes past an argument, before it, past static and dynamic __shared__ arrays, into a
bad address from printf's %s; x / 0, x % 0 (int and unsigned long long), INT_MIN / -1; a spin on a flag no thread
sets stopped by timeout=; racecheck names a missing __syncthreads() (static and extern __shared__, a read across
warps after __syncwarp() only, a global read-modify-write), check_races sees the schedules differ, shared atomics
and the threadfence last-block reduction pass both.  Python-side: non-contiguous views, a Python int for a pointer,
float64 for a float, too few / many arguments, grid limits, bool / char / struct arguments.

Noticed and left alone: an index past a local array that stays in the thread's stack frame (``float a[8]; a[i]``
with i = 8..20) reads or overwrites the frame silently in the fast builds (``sanitize=True`` names it; GCC's
-fsanitize=bounds would name it in every build, but it instruments __shared__ arrays too -- their guard pages name
those better now, and an inner-dimension index that stays inside a 2-D __shared__ tile runs on a GPU); the same for
__constant__ and __device__ arrays of known size.  A wmma pointer 16 bytes off a 32-byte boundary is accepted
(CUDA documents 256-bit alignment, but rows at an ldm of 16 bytes are 16-byte aligned, and round 9's int8 GEMM
steps its pointer by 16 bytes: refusing it would refuse code GPUs run; argument copies start 16-byte aligned here).
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import pytest

from minilora import emulator as emu
from minilora.emulator import KernelFault, RawModule

pytestmark = pytest.mark.skipif(not emu.is_available(), reason="the CUDA emulator needs g++")
i32 = np.int32


@lru_cache(maxsize=None)
def module(source: str) -> RawModule:
    return RawModule(code=source).compile()


# ------------------------------------------------------------------- device-heap writes out of bounds
HEAP = r"""
__device__ int* kept[4];
// a per-thread scratch list, written one element too far when `count` is the capacity + 1
extern "C" __global__ void scratch_list(int capacity, int count, int* out, int keep) {
    int* list = (int*)malloc(capacity * sizeof(int));
    if (list == nullptr) return;
    for (int j = 0; j < count; ++j) list[j] = j * (int)threadIdx.x;
    out[threadIdx.x] = list[capacity - 1];
    if (keep) kept[threadIdx.x] = list;
    else free(list);
}
// new[] / delete[] of a float buffer, and an index one before its start
extern "C" __global__ void window(int n, int first, float* out) {
    float* w = new float[n];
    for (int j = first; j < n; ++j) w[j] = 0.5f * j;
    out[threadIdx.x] = w[n - 1];
    delete[] w;
}
extern "C" __global__ void release_kept() { free(kept[threadIdx.x]); }
"""


def test_a_write_past_a_device_malloc_is_named_at_the_free_and_python_survives():
    kernel = module(HEAP).get_function("scratch_list")
    out = np.zeros(4, i32)
    kernel((1,), (4,), (i32(4), i32(4), out, i32(0)))
    np.testing.assert_array_equal(out, 3 * np.arange(4))
    for count in (5, 7, 12):  # 4, 12 and 32 bytes past the end (glibc's books were 8 bytes past a 16-byte block)
        with pytest.raises(KernelFault, match=r"called free\(\) at scratch_list\.cu:10 on a 16-byte device-heap "
                                              r"allocation whose bytes 0\.\.\d+ past its end were overwritten"):
            kernel((1,), (4,), (i32(4), i32(count), out, i32(0)))
    kernel((2,), (4,), (i32(4), i32(4), out, i32(0)))  # the heap is whole: the next launch runs


def test_new_array_overrun_and_underrun_are_named_at_delete():
    kernel = module(HEAP).get_function("window")
    out = np.zeros(2, np.float32)
    kernel((1,), (2,), (i32(6), i32(0), out))
    np.testing.assert_array_equal(out, 2.5)
    with pytest.raises(KernelFault, match=r"called delete\[\] at scratch_list\.cu:17 on a 24-byte device-heap "
                                          r"allocation whose bytes 1\.\.4 before its start were overwritten"):
        kernel((1,), (2,), (i32(6), i32(-1), out))


def test_a_kept_allocation_written_past_its_end_is_named_by_its_malloc_when_the_launch_ends():
    kernel = module(HEAP).get_function("scratch_list")
    out = np.zeros(4, i32)
    want = (r"out-of-bounds write into device-heap memory during kernel 'scratch_list': the 12-byte allocation made "
            r"at scratch_list\.cu:5 \(at 0x[0-9a-f]+\) had its bytes 0\.\.3 past its end overwritten, and 3 more "
            r"allocations theirs")
    with pytest.raises(KernelFault, match=want):
        kernel((1,), (4,), (i32(3), i32(4), out, i32(1)))
    module(HEAP).get_function("release_kept")((1,), (4,), ())  # reported once: the canaries are whole again



# ------------------------------------------------------------------- printf's 32 arguments
PRINTF = r"""
#include <cstdio>
#define TEN(b) b + 0, b + 1, b + 2, b + 3, b + 4, b + 5, b + 6, b + 7, b + 8, b + 9
// a debugging line of 34 values; then 31 values and a `*` width, which would take the 33rd argument
extern "C" __global__ void dump_row(int* returned) {
    returned[0] = printf("%d %d %d %d %d %d %d %d %d %d %d %d %d %d %d %d %d %d %d %d %d %d %d %d %d %d %d %d %d %d "
                         "%d %d %d %d|\n", TEN(1), TEN(11), TEN(21), 31, 32, 33, 34);
    returned[1] = printf("%d %d %d %d %d %d %d %d %d %d %d %d %d %d %d %d %d %d %d %d %d %d %d %d %d %d %d %d %d %d "
                         "%d [%*d] %%|\n", TEN(1), TEN(11), TEN(21), 31, 6, 32);
}
"""


def test_printf_takes_32_arguments_and_prints_the_rest_of_its_format_as_is(capfd):
    returned = np.zeros(2, i32)
    module(PRINTF).get_function("dump_row")((1,), (1,), (returned,))
    first = " ".join(str(k) for k in range(1, 33))
    assert capfd.readouterr().out.splitlines() == [first + " %d %d|", first[:first.rindex(" ")] + " [%*d] %%|"]
    np.testing.assert_array_equal(returned, [32, 31])  # the arguments parsed
