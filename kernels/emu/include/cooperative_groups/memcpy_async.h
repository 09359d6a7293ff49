// Stand-in for CUDA's <cooperative_groups/memcpy_async.h> under minilora's CPU emulator.
// cg::memcpy_async(group, dst, src, bytes) is a collective: every thread of the group calls it with the same
// arguments, and each issues its share of the copy as an asynchronous copy (runtime.cpp, "asynchronous copies").
// cg::wait(group) lands the caller's copies and synchronises the group, after which the whole copy is visible
// to every thread of it; cg::wait_prior<N>(group) leaves the N newest memcpy_async calls in flight.  A read
// before the wait sees the old bytes (on a GPU: old or new, by timing), and check_races=True names it.
#pragma once
#include "../cooperative_groups.h"
#include "../cuda/__emu_async.h"

namespace cooperative_groups {
template <class Group, class Shape>
__forceinline__ void memcpy_async(const Group& group, void* dst, const void* src, Shape bytes, const char* file = __builtin_FILE(),
                  int line = __builtin_LINE()) {
    cuda::__emu_async::issue_share(group.thread_rank(), group.size(), dst, src, (size_t)bytes,
                                   cuda::__emu_async::alignment_of<Shape>::value, file, line);
    __emu::async_commit();  // each call is its own stage (what wait_prior counts)
}
// The element-count form: copies min(dst_count, src_count) elements.
template <class Group, class T>
__forceinline__ void memcpy_async(const Group& group, T* dst, size_t dst_count, const T* src, size_t src_count,
                  const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
    memcpy_async(group, static_cast<void*>(dst), static_cast<const void*>(src),
                 (dst_count < src_count ? dst_count : src_count) * sizeof(T), file, line);
}
template <class Group>
void wait(const Group& group, const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
    __emu::async_wait(0);
    group.sync(file, line);
}
template <unsigned Count, class Group>
void wait_prior(const Group& group, const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
    __emu::async_wait((int)Count);
    group.sync(file, line);
}
}  // namespace cooperative_groups
