// minilora_async_copy.h -- cp.async (Ampere's asynchronous global -> shared copies) on the emulator.
//
// common.cuh includes this under __CUDA_EMU__ in place of its inline PTX, so one .cu source runs on
// both.  On a GPU, `cp.async` starts a copy that the thread does not wait for; `commit_group` closes
// the copies issued since the last commit into one group; `wait_group N` blocks until at most the N
// most recent groups are still in flight.  Until then the shared-memory destination holds whatever it
// held before -- reading it early is a bug that may or may not show on a given GPU.
//
// Here it always shows: the runtime (runtime.cpp, "asynchronous copies") only *records* a copy when it
// is issued and performs it when a wait_group covers its group, so a kernel that reads a stage before
// waiting for it reads stale data (or the NaN the emulator poisons fresh shared memory with), and
// check_races=True names the read.  The same queue serves inline PTX cp.async, <cuda_pipeline.h>,
// <cuda/pipeline>, <cuda/barrier> and cooperative_groups::memcpy_async.
#pragma once
#include "../cuda_emu.h"

namespace minilora_emu {
// dst[0 .. bytes) (shared) <- the first src_bytes bytes at src (global), the rest zero-filled (cp.async's src-size).
__forceinline__ void async_copy(void* dst, const void* src, int bytes, int src_bytes,
                                const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
    __emu::async_copy(dst, src, (size_t)bytes, (size_t)src_bytes, (size_t)bytes, file, line);
}
__forceinline__ void async_commit() { __emu::async_commit(); }
// wait_group `pending`: land the oldest groups until at most `pending` remain.
__forceinline__ void async_wait(int pending) { __emu::async_wait(pending); }
}  // namespace minilora_emu
