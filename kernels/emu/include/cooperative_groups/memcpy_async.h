// Stand-in for CUDA's <cooperative_groups/memcpy_async.h> under minilora's CPU emulator.
// cg::memcpy_async(group, dst, src, bytes) is a collective: every thread of the group calls it with the
// same arguments.  Here each thread copies its share at once (bytes rank, rank + size, ...), and
// cg::wait(group) is the group's barrier -- after it the whole copy is visible to every thread, which
// is all CUDA promises (the GPU overlaps the copy with other work; that is only a speed difference).
#pragma once
#include "../cooperative_groups.h"

namespace cooperative_groups {
template <class Group>
void memcpy_async(const Group& group, void* dst, const void* src, size_t bytes) {
    char* d = static_cast<char*>(dst);
    const char* s = static_cast<const char*>(src);
    for (size_t i = group.thread_rank(); i < bytes; i += group.size()) d[i] = s[i];
}
// The element-count form: copies min(dst_count, src_count) elements.
template <class Group, class T>
void memcpy_async(const Group& group, T* dst, size_t dst_count, const T* src, size_t src_count) {
    memcpy_async(group, static_cast<void*>(dst), static_cast<const void*>(src),
                 (dst_count < src_count ? dst_count : src_count) * sizeof(T));
}
template <class Group>
void wait(const Group& group, const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
    group.sync(file, line);
}
template <unsigned Count, class Group>
void wait_prior(const Group& group, const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
    group.sync(file, line);  // everything is copied already: waiting for all is waiting for the older ones
}
}  // namespace cooperative_groups
