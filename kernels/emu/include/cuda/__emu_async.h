// Shared by the stand-ins for <cuda/barrier> and <cuda/pipeline> (and cooperative_groups::memcpy_async): the
// shape types of libcu++'s memcpy_async and the split of a group's copy among its threads.  The copies go to the
// runtime's queue of asynchronous copies (runtime.cpp, "asynchronous copies").
#pragma once
#include "../../cuda_emu.h"
#include "atomic"

namespace cuda {
// A byte count promised to be a multiple of Alignment, with both addresses aligned to it.
template <size_t Alignment>
struct aligned_size_t {
    static constexpr size_t align = Alignment;
    size_t value;
    explicit constexpr aligned_size_t(size_t size) : value(size) {}
    constexpr operator size_t() const { return value; }
};
namespace __emu_async {
template <class Shape> struct alignment_of { static constexpr size_t value = 1; };
template <size_t A> struct alignment_of<aligned_size_t<A>> { static constexpr size_t value = A; };

// Thread `rank` of `count` issues its contiguous share of the group's copy (in units of the promised
// alignment), as one asynchronous copy: on a GPU the group's threads share the work the same way.
__forceinline__ void issue_share(unsigned rank, unsigned count, void* dst, const void* src, size_t bytes, size_t align,
                        const char* file, int line) {
    if (align > 1 && ((uintptr_t(dst) | uintptr_t(src) | bytes) % align))
        __emu::device_fault("cuda::memcpy_async: an aligned_size_t<N> copy needs both addresses and the size to be "
                            "multiples of N", file, line);
    const size_t units = bytes / align, per = (units + count - 1) / count;
    const size_t lo = per * rank < units ? per * rank : units, hi = per * (rank + 1) < units ? per * (rank + 1) : units;
    if (hi > lo)
        __emu::async_copy(static_cast<char*>(dst) + lo * align, static_cast<const char*>(src) + lo * align,
                          (hi - lo) * align, (hi - lo) * align, 1, file, line);
}
inline unsigned block_threads() { return blockDim.x * blockDim.y * blockDim.z; }
}  // namespace __emu_async
}  // namespace cuda
