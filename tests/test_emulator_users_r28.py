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
  allocator, which names the write itself.
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
    with pytest.raises(KernelFault, match=r"out-of-bounds write into device-heap memory during kernel 'scratch_list': "
                                          r"the 12-byte allocation made at scratch_list\.cu:5 \(at 0x[0-9a-f]+\) had its "
                                          r"bytes 0\.\.3 past its end overwritten, and 3 more allocations theirs"):
        kernel((1,), (4,), (i32(3), i32(4), out, i32(1)))
    module(HEAP).get_function("release_kept")((1,), (4,), ())  # reported once: the canaries are whole again
