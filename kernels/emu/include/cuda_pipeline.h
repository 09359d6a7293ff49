// Stand-in for CUDA's <cuda_pipeline.h> under minilora's CPU emulator: the primitives __pipeline_memcpy_async,
// __pipeline_commit and __pipeline_wait_prior, which are cp.async, cp.async.commit_group and
// cp.async.wait_group N.  They go to the runtime's queue of asynchronous copies (runtime.cpp, "asynchronous
// copies"): a copy lands when a wait covers it, so a read before the wait sees the old bytes, and
// check_races=True names it.
#pragma once
#include "../cuda_emu.h"

// dst (shared) <- size_and_align bytes at src (global), the last zfill of them zeros; size 4, 8 or 16, both
// addresses aligned to it.
__forceinline__ void __pipeline_memcpy_async(void* __restrict__ dst_shared, const void* __restrict__ src_global,
                                             size_t size_and_align, size_t zfill = 0,
                                             const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
    if (size_and_align != 4 && size_and_align != 8 && size_and_align != 16)
        __emu::device_fault("__pipeline_memcpy_async copies 4, 8 or 16 bytes (size_and_align)", file, line);
    if (zfill > size_and_align) __emu::device_fault("__pipeline_memcpy_async: zfill exceeds size_and_align", file, line);
    (void)__emu::shared_window_of(dst_shared, file, line);  // cp.async writes shared memory only
    __emu::async_copy(dst_shared, src_global, size_and_align, size_and_align - zfill, size_and_align, file, line);
}
__forceinline__ void __pipeline_commit() { __emu::async_commit(); }
__forceinline__ void __pipeline_wait_prior(size_t prior) { __emu::async_wait(prior > 1000000 ? 1000000 : (int)prior); }
// A pipeline's copies tied to an arrive-wait barrier's phase (sm_80's awbarrier) are not modelled: named where used.
template <class... Args>
void __pipeline_arrive_on(Args&&...) {
    static_assert(sizeof...(Args) < 0, "__pipeline_arrive_on (pipeline copies completing an arrive-wait barrier's phase) "
                  "is not modelled by minilora's CUDA emulator: use __pipeline_wait_prior, or cuda::memcpy_async with a "
                  "cuda::barrier");
}
