// minilora_async_copy.h -- cp.async (Ampere's asynchronous global -> shared copies) on the emulator.
//
// common.cuh includes this under __CUDA_EMU__ in place of its inline PTX, so one .cu source runs on
// both.  On a GPU, `cp.async` starts a copy that the thread does not wait for; `commit_group` closes
// the copies issued since the last commit into one group; `wait_group N` blocks until at most the N
// most recent groups are still in flight.  Until then the shared-memory destination holds whatever it
// held before -- reading it early is a bug that may or may not show on a given GPU.
//
// Here it always shows: a copy is only *recorded* when issued and performed when a wait_group covers
// its group, so a kernel that reads a stage before waiting for it reads stale data (or the NaN the
// emulator poisons fresh shared memory with), and the tests catch it.  Copies left uncommitted are in
// no group and are not performed by a wait, as on the GPU.
//
// Each CUDA thread has its own queue, keyed by its place in the grid (fibers switch only at barriers,
// and a block's fibers share one OS thread).  A kernel must wait for all of its groups before it exits
// (the pipelines in common.cuh end with wait_group 0); a copy still queued when the thread ends is not
// checked for and would land during a later launch's wait.
#pragma once

#include <cstring>
#include <deque>
#include <unordered_map>
#include <vector>

#ifdef EMU_RACECHECK
namespace __emu { void initcheck_written(void* p, size_t n); }  // runtime.cpp: initcheck sees the copy land
#endif

namespace minilora_emu {

struct AsyncCopy {
    void* dst;        // shared memory
    const void* src;  // global memory
    int bytes;        // 4, 8 or 16: how much of dst is written
    int src_bytes;    // how much is read from src; the rest of dst is zero-filled (cp.async's src-size)
};

struct AsyncQueue {
    std::vector<AsyncCopy> open;               // issued since the last commit_group
    std::deque<std::vector<AsyncCopy>> groups;  // committed, oldest first
};

using AsyncQueues = std::unordered_map<unsigned long long, AsyncQueue>;

inline AsyncQueues& async_queues() {
    thread_local AsyncQueues queues;
    return queues;
}

// This CUDA thread's key: its block's linear index times the block size plus its linear thread index.
inline unsigned long long my_async_key() {
    const unsigned long long block = (blockIdx.z * (unsigned long long)gridDim.y + blockIdx.y) * gridDim.x + blockIdx.x;
    const unsigned long long thread = (threadIdx.z * blockDim.y + threadIdx.y) * blockDim.x + threadIdx.x;
    return block * ((unsigned long long)blockDim.x * blockDim.y * blockDim.z) + thread;
}

inline void async_copy(void* dst, const void* src, int bytes, int src_bytes) {
    async_queues()[my_async_key()].open.push_back(AsyncCopy{dst, src, bytes, src_bytes});
}

inline void async_commit() {
    AsyncQueue& q = async_queues()[my_async_key()];
    q.groups.push_back(std::move(q.open));
    q.open.clear();
}

// wait_group `pending`: perform the oldest groups until at most `pending` remain.
inline void async_wait(int pending) {
    AsyncQueues& queues = async_queues();
    const auto it = queues.find(my_async_key());
    if (it == queues.end()) return;  // nothing issued
    AsyncQueue& q = it->second;
    while ((int)q.groups.size() > pending) {
        for (const AsyncCopy& c : q.groups.front()) {
#ifdef EMU_RACECHECK
            __emu::initcheck_written(c.dst, (size_t)c.bytes);  // memcpy is not instrumented
#endif
            if (c.src_bytes > 0) std::memcpy(c.dst, c.src, (size_t)c.src_bytes);
            std::memset(static_cast<char*>(c.dst) + c.src_bytes, 0, (size_t)(c.bytes - c.src_bytes));
        }
        q.groups.pop_front();
    }
    if (q.groups.empty() && q.open.empty()) queues.erase(it);  // keep the table as small as the copies in flight
}

}  // namespace minilora_emu
