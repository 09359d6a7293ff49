// Stand-in for CUDA's <cooperative_groups.h> under minilora's CPU emulator.
//
// The groups are thin views over what the emulator already models for real: a thread_block's
// sync() is __syncthreads(), a tile of N <= 32 threads is a slice of a warp whose collectives are
// the __*_sync functions with the tile's lane mask and width N.  Every sync and collective records
// the *caller's* file and line (GCC's __builtin_FILE/__builtin_LINE as default arguments), so a
// divergent block.sync() is reported at the user's line, not at this header's.
//
// Modelled: this_thread_block() (sync, thread_rank, size/num_threads, group_index, thread_index,
// group_dim/dim_threads), tiled_partition(block, N) (runtime size: sync, thread_rank, size,
// meta_group_rank/size) and tiled_partition<N>(block) (also shfl, shfl_up/down/xor, any, all, ballot,
// match_any, match_all), labeled_partition / binary_partition (coalesced groups by label), invoke_one,
// coalesced_threads() (the lanes of the warp that call it at the same line before any
// lane of the warp can run on: the others have exited or wait elsewhere -- CUDA's converged lanes),
// this_grid() (ranks, sizes and sync() in a cooperative launch), this_cluster() (sync, barrier_arrive/wait, ranks,
// map_shared_rank: thread block clusters of a __cluster_dims__ kernel), and cg::reduce in
// <cooperative_groups/reduce.h>.  Ranks and sizes have CUDA's types: unsigned int within a block,
// unsigned long long for the grid (rank 0's `thread_rank() - 1` wraps to the same number as on a GPU).
#pragma once
#include "../cuda_emu.h"

namespace cooperative_groups {
namespace __detail {
inline unsigned block_threads() { return blockDim.x * blockDim.y * blockDim.z; }
inline unsigned block_rank() { return (threadIdx.z * blockDim.y + threadIdx.y) * blockDim.x + threadIdx.x; }
inline unsigned lane() { return block_rank() & 31u; }
// The lanes of the warp that belong to this thread's tile of `n` threads (n a power of two <= 32).
inline unsigned tile_mask(unsigned n) {
    const unsigned bits = n >= 32 ? 0xffffffffu : ((1u << n) - 1u);
    return n >= 32 ? bits : bits << (lane() / n * n);
}
// CUDA's tiled_partition(group, n) cuts only "native hardware sizes, 1/2/4/8/16/32" (cooperative_groups.h); any
// other n traps (its _get_tiled_threads calls __trap()), which the GPU reports as an illegal instruction.  Tiles of
// 64..1024 threads exist only as thread_block_tile<N> (tiled_partition<N>(block)).
inline void check_tile_size(unsigned n, const char* file, int line) {
    if (n == 0 || n > 32 || (n & (n - 1)))
        __emu::bad_runtime_tile(n, file, line);
}
}  // namespace __detail

class thread_block {
public:
    void sync(const char* file = __builtin_FILE(), int line = __builtin_LINE()) const {
        __emu::syncthreads(__emu::BAR_PLAIN, 0, file, line);
    }
    // CUDA 12's split barrier: sync() is barrier_wait(barrier_arrive()).  Here the whole barrier is at the wait,
    // which every thread must reach on a GPU too; racecheck orders what a thread accesses between its arrive and
    // its wait by the next barrier only (a GPU's wait promises only what the others did before arriving).
    struct arrival_token {};
    arrival_token barrier_arrive() const {
        __emu::split_barrier_arrive();
        return arrival_token{};
    }
    void barrier_wait(arrival_token&&, const char* file = __builtin_FILE(), int line = __builtin_LINE()) const {
        __emu::split_barrier_wait(file, line);
    }
    unsigned int thread_rank() const { return __detail::block_rank(); }
    unsigned int size() const { return __detail::block_threads(); }
    unsigned int num_threads() const { return __detail::block_threads(); }
    dim3 group_index() const { return dim3(blockIdx.x, blockIdx.y, blockIdx.z); }
    dim3 thread_index() const { return dim3(threadIdx.x, threadIdx.y, threadIdx.z); }
    dim3 group_dim() const { return dim3(blockDim.x, blockDim.y, blockDim.z); }
    dim3 dim_threads() const { return group_dim(); }
};
inline thread_block this_thread_block() { return thread_block(); }

// A tile whose size is known only at run time (what tiled_partition(block, n) returns in CUDA).  As CUDA's, its
// size() is what the parent has left for it (the last tile of a 48-thread block cut in 32s has 16 threads), and
// meta_group_rank / meta_group_size are its place among the parent's tiles: a tile of 4 cut from a tile of 16 is
// one of 4, not one of the block's.
class thread_group {
public:
    // Tile `n` of the thread's block.
    explicit thread_group(unsigned n)
        : thread_group(checked(n), __detail::block_rank(), __detail::block_threads(),
                       (__detail::block_threads() + n - 1) / n) {}
    // Tile `n` of a parent of `parent_size` threads in which this thread has rank `parent_rank`.
    thread_group(unsigned n, unsigned parent_rank, unsigned parent_size, unsigned meta_size)
        : n_(checked(n)), size_(parent_size - parent_rank / n * n < n ? parent_size - parent_rank / n * n : n),
          meta_rank_(parent_rank / n), meta_size_(meta_size) {}
    void sync(const char* file = __builtin_FILE(), int line = __builtin_LINE()) const {
        __emu::warp_op(__emu::W_SYNC, file, line, __detail::tile_mask(n_), 0, 0, 32);
    }
    unsigned int thread_rank() const { return __detail::block_rank() % n_; }
    unsigned int size() const { return size_; }
    unsigned int num_threads() const { return size_; }
    unsigned int meta_group_rank() const { return meta_rank_; }
    unsigned int meta_group_size() const { return meta_size_; }

protected:
    // A tile cut at run time has at most 32 threads (tiled_partition(group, n) checks); one of a thread_block_tile<N>
    // up to 1024, which its class checks at compile time.
    static unsigned checked(unsigned n) { return n; }
    unsigned n_, size_, meta_rank_, meta_size_;
};
namespace __detail {
// The caller's tile of `n` threads in a parent group, as CUDA's tiled_partition cuts it.  Of the block: ceil(size
// / n) tiles.  Of a tile (a thread_block_tile<M>): M / n tiles, ranked within it.  Of a runtime tile: itself when it
// is no larger than n, else floor(size / n) tiles (CUDA's count for a tiled group).
inline thread_group tile_of(const thread_block& block, unsigned n) {
    return thread_group(n, block.thread_rank(), block.size(), (block.size() + n - 1) / n);
}
template <class Tile>
inline thread_group tile_of(const Tile& parent, unsigned n) {
    if (n > parent.size()) __emu::assert_fail("tiled_partition: a tile larger than its parent", __FILE__, __LINE__);
    return thread_group(n, parent.thread_rank(), parent.size(), parent.size() / n);
}
inline thread_group tile_of(const thread_group& parent, unsigned n) {
    if (parent.size() <= n) return parent;
    return thread_group(n, parent.thread_rank(), parent.size(), parent.size() / n);
}
}  // namespace __detail
inline thread_group tiled_partition(const thread_block& parent, unsigned n, const char* file = __builtin_FILE(),
                                    int line = __builtin_LINE()) {
    __detail::check_tile_size(n, file, line);
    return __detail::tile_of(parent, n);
}
inline thread_group tiled_partition(const thread_group& parent, unsigned n, const char* file = __builtin_FILE(),
                                    int line = __builtin_LINE()) {
    __detail::check_tile_size(n, file, line);
    return __detail::tile_of(parent, n);
}

namespace __detail {
// The exchange of a tile of more than 32 threads (whole warps; tile_sync in runtime.cpp): every thread shows a pointer
// to its value at a sync, reads the others' after it, and a second sync keeps the values in place until all have read.
template <class T, class Read>
inline auto tile_exchange(unsigned first, unsigned count, const T& mine, Read read, const char* file, int line)
    -> decltype(read(first)) {
    __emu::tile_sync(int(first), int(count), &mine, file, line);
    const auto result = read(first);
    __emu::tile_sync(int(first), int(count), &mine, file, line);  // still showing it: some may read yet
    return result;
}
template <class T>
inline const T& tile_value(unsigned rank) { return *static_cast<const T*>(__emu::tile_peer(int(rank))); }
}  // namespace __detail

// A tile of N threads known at compile time.  CUDA declares it thread_block_tile<Size, ParentT = void>:
// tiled_partition<N>(block) is a thread_block_tile<N, thread_block>, which converts to the parent-erased
// thread_block_tile<N> (both spellings appear in user code).  Up to 32 threads it is a slice of a warp and the warp
// collectives work on it; from 64 to 1024 (CUDA 11.1+: block_tile_memory before sm_80) it is whole warps with a
// barrier of its own, and CUDA gives it only sync, shfl (every thread naming the same source), any, all and cg::reduce
// -- the lane-wise ones (shfl_up/down/xor, ballot, match_*) do not compile for it, as with nvcc.
template <unsigned N, class ParentT = void>
class thread_block_tile : public thread_group {
    static_assert(N >= 1 && N <= 1024 && (N & (N - 1)) == 0,
                  "thread_block_tile<N>: N must be a power of two in 1..1024, as CUDA's");
    static constexpr bool kWarp = N <= 32;
    unsigned first() const { return __detail::block_rank() / N * N; }

public:
    thread_block_tile() : thread_group(N) {}
    explicit thread_block_tile(const thread_group& tile) : thread_group(tile) { size_ = N; }  // N even when partial
    template <class OtherParent>
    thread_block_tile(const thread_block_tile<N, OtherParent>& tile) : thread_group(tile) {}
    static constexpr unsigned int num_threads() { return N; }
    static constexpr unsigned int size() { return N; }
    void sync(const char* file = __builtin_FILE(), int line = __builtin_LINE()) const {
        if constexpr (kWarp) __emu::warp_op(__emu::W_SYNC, file, line, __detail::tile_mask(N), 0, 0, 32);
        else __emu::tile_sync(int(first()), int(N), nullptr, file, line);
    }
    template <class T>
    T shfl(T v, int src, const char* file = __builtin_FILE(), int line = __builtin_LINE()) const {
        if constexpr (kWarp) return __emu::shfl_any(__emu::W_SHFL_IDX, file, line, __detail::tile_mask(N), v, src, N);
        else return __detail::tile_exchange(first(), N, v, [&](unsigned base) {
                 return __detail::tile_value<T>(base + unsigned(src) % N); }, file, line);
    }
    template <class T>
    T shfl_down(T v, unsigned delta, const char* file = __builtin_FILE(), int line = __builtin_LINE()) const {
        static_assert(kWarp, "thread_block_tile<N>::shfl_down: CUDA has it only for tiles of 32 threads or fewer");
        return __emu::shfl_any(__emu::W_SHFL_DOWN, file, line, __detail::tile_mask(N), v, int(delta), N);
    }
    template <class T>
    T shfl_up(T v, unsigned delta, const char* file = __builtin_FILE(), int line = __builtin_LINE()) const {
        static_assert(kWarp, "thread_block_tile<N>::shfl_up: CUDA has it only for tiles of 32 threads or fewer");
        return __emu::shfl_any(__emu::W_SHFL_UP, file, line, __detail::tile_mask(N), v, int(delta), N);
    }
    template <class T>
    T shfl_xor(T v, unsigned mask, const char* file = __builtin_FILE(), int line = __builtin_LINE()) const {
        static_assert(kWarp, "thread_block_tile<N>::shfl_xor: CUDA has it only for tiles of 32 threads or fewer");
        return __emu::shfl_any(__emu::W_SHFL_XOR, file, line, __detail::tile_mask(N), v, int(mask), N);
    }
    int any(int p, const char* file = __builtin_FILE(), int line = __builtin_LINE()) const {
        if constexpr (kWarp)
            return int(__emu::warp_op(__emu::W_ANY, file, line, __detail::tile_mask(N), p ? 1 : 0, 0, 32));
        else return count_true(p, file, line) > 0;
    }
    int all(int p, const char* file = __builtin_FILE(), int line = __builtin_LINE()) const {
        if constexpr (kWarp)
            return int(__emu::warp_op(__emu::W_ALL, file, line, __detail::tile_mask(N), p ? 1 : 0, 0, 32));
        else return count_true(p, file, line) == tile_threads();
    }
    // The tile's ballot: bit k is the predicate of the tile's thread of rank k.
    unsigned ballot(int p, const char* file = __builtin_FILE(), int line = __builtin_LINE()) const {
        static_assert(kWarp, "thread_block_tile<N>::ballot: CUDA has it only for tiles of 32 threads or fewer");
        const unsigned m = __detail::tile_mask(N);
        const unsigned b = unsigned(__emu::warp_op(__emu::W_BALLOT, file, line, m, p ? 1 : 0, 0, 32));
        return (b & m) >> (__detail::lane() / N * N % 32);
    }
    // match_any / match_all (sm_70), in the tile's ranks as ballot: bit k is the tile's thread of rank k.
    template <class T>
    unsigned match_any(T v, const char* file = __builtin_FILE(), int line = __builtin_LINE()) const {
        static_assert(kWarp, "thread_block_tile<N>::match_any: CUDA has it only for tiles of 32 threads or fewer");
        const unsigned m = __detail::tile_mask(N);
        const unsigned peers = unsigned(__emu::warp_op(__emu::W_MATCH_ANY, file, line, m, __emu::match_bits(v), 0, 32));
        return (peers & m) >> (__detail::lane() / N * N % 32);
    }
    template <class T>
    unsigned match_all(T v, int& pred, const char* file = __builtin_FILE(), int line = __builtin_LINE()) const {
        static_assert(kWarp, "thread_block_tile<N>::match_all: CUDA has it only for tiles of 32 threads or fewer");
        const unsigned m = __detail::tile_mask(N);
        const unsigned same = __emu::match_all(file, line, m, v, &pred);
        return (same & m) >> (__detail::lane() / N * N % 32);
    }
    // cg::reduce over a multi-warp tile (reduce.h): each warp's butterfly, then the warps' results in a tree of the
    // same shape, so every thread gets the same value.
    template <class T, class Op>
    T reduce_warps(T v, Op op, const char* file, int line) const {
        for (unsigned offset = 16; offset > 0; offset /= 2)
            v = op(v, __emu::shfl_any(__emu::W_SHFL_XOR, file, line, 0xffffffffu, v, int(offset), 32));
        return __detail::tile_exchange(first(), N, v, [&](unsigned base) {
            T part[N / 32 > 0 ? N / 32 : 1];
            const unsigned warps = (tile_threads() + 31) / 32;
            for (unsigned k = 0; k < warps; ++k) part[k] = __detail::tile_value<T>(base + 32 * k);
            for (unsigned width = 1; width < warps; width *= 2)
                for (unsigned k = 0; k + width < warps; k += 2 * width) part[k] = op(part[k], part[k + width]);
            return part[0];
        }, file, line);
    }

    // cg::inclusive_scan / exclusive_scan over a multi-warp tile (scan.h): each warp's Kogge-Stone scan by shfl_up,
    // then the totals of the warps before this one folded in, op(own, below) as in CUDA's operand order.
    template <class T, class Op>
    T scan_warps(T v, Op op, bool inclusive, const char* file, int line) const {
        const unsigned lane = __detail::lane();
        for (unsigned d = 1; d < 32; d *= 2) {
            const T below = __emu::shfl_any(__emu::W_SHFL_UP, file, line, 0xffffffffu, v, int(d), 32);
            if (lane >= d) v = op(v, below);
        }
        const unsigned rank = thread_rank();
        return __detail::tile_exchange(first(), N, v, [&](unsigned base) {
            T mine = v;
            if (rank >= 32) {  // the lower warps' totals, nearest first: op(own, op(previous warp, ...))
                T lower = __detail::tile_value<T>(base + rank / 32 * 32 - 1);
                for (unsigned w = rank / 32 - 1; w-- > 0;) lower = op(lower, __detail::tile_value<T>(base + 32 * w + 31));
                mine = op(mine, lower);
            }
            if (inclusive) return mine;
            if (rank == 0) return T();
            T before = __detail::tile_value<T>(base + rank - 1);  // the previous rank's inclusive value
            if ((rank - 1) / 32 > 0) {
                T lower = __detail::tile_value<T>(base + (rank - 1) / 32 * 32 - 1);
                for (unsigned w = (rank - 1) / 32 - 1; w-- > 0;)
                    lower = op(lower, __detail::tile_value<T>(base + 32 * w + 31));
                before = op(before, lower);
            }
            return before;
        }, file, line);
    }

private:
    // The threads the tile has (fewer than N where the block ends inside it).
    unsigned tile_threads() const {
        const unsigned left = __detail::block_threads() - first();
        return left < N ? left : N;
    }
    unsigned count_true(int p, const char* file, int line) const {
        const int mine = p ? 1 : 0;
        return __detail::tile_exchange(first(), N, mine, [&](unsigned base) {
            unsigned n = 0;
            for (unsigned k = 0; k < tile_threads(); ++k) n += __detail::tile_value<int>(base + k) != 0;
            return n;
        }, file, line);
    }
};
template <unsigned N, class Parent>
thread_block_tile<N, Parent> tiled_partition(const Parent& parent) {
    return thread_block_tile<N, Parent>(__detail::tile_of(parent, N));
}

// Before sm_80 a tile of more than 32 threads needs scratch in shared memory, which the block hands over:
// `__shared__ block_tile_memory<256> scratch; auto block = this_thread_block(scratch);` (CUDA 12; CUDA 11.1-11.8 spell
// it experimental::block_tile_memory<CommunicationSize, MaxBlockSize>).  The emulator's tiles keep their state in
// the runtime, so the scratch is only a place holder of CUDA's size and the block is the ordinary one.
template <unsigned MaxBlockSize = 1024>
struct block_tile_memory {
    static_assert(MaxBlockSize >= 1 && MaxBlockSize <= 1024, "block_tile_memory<MaxBlockSize>: at most 1024 threads");
    alignas(16) unsigned char scratch[16];
};
template <unsigned MaxBlockSize>
inline thread_block this_thread_block(block_tile_memory<MaxBlockSize>&) { return thread_block(); }
namespace experimental {
template <unsigned CommunicationSize = 8, unsigned MaxBlockSize = 1024>
struct block_tile_memory {
    alignas(16) unsigned char scratch[16];
};
template <unsigned C, unsigned M>
inline thread_block this_thread_block(block_tile_memory<C, M>&) { return thread_block(); }
using cooperative_groups::this_thread_block;
using cooperative_groups::tiled_partition;
}  // namespace experimental

// The lanes of a warp that reached coalesced_threads() together (see the note at the top).
class coalesced_group {
public:
    explicit coalesced_group(unsigned mask, unsigned meta_rank = 0, unsigned meta_size = 1)
        : mask_(mask), meta_rank_(meta_rank), meta_size_(meta_size) {}
    unsigned int size() const { return __builtin_popcount(mask_); }
    unsigned int num_threads() const { return size(); }
    unsigned int thread_rank() const { return __builtin_popcount(mask_ & ((1u << __detail::lane()) - 1u)); }
    void sync(const char* file = __builtin_FILE(), int line = __builtin_LINE()) const {
        __emu::warp_op(__emu::W_SYNC, file, line, mask_, 0, 0, 32);
    }
    // shfl by the group's rank: the rank-th lane present in the mask.
    template <class T>
    T shfl(T v, unsigned rank, const char* file = __builtin_FILE(), int line = __builtin_LINE()) const {
        return shfl_rank(v, rank % size(), file, line);
    }
    // ballot, match_any and match_all answer in the group's ranks, as CUDA's: bit k is the thread of rank k
    // (the lanes' bits packed together; a lane mask only when the whole warp is in the group).
    unsigned ballot(int p, const char* file = __builtin_FILE(), int line = __builtin_LINE()) const {
        return pack(unsigned(__emu::warp_op(__emu::W_BALLOT, file, line, mask_, p ? 1 : 0, 0, 32)));
    }
    template <class T>
    unsigned match_any(T v, const char* file = __builtin_FILE(), int line = __builtin_LINE()) const {
        return pack(unsigned(__emu::warp_op(__emu::W_MATCH_ANY, file, line, mask_, __emu::match_bits(v), 0, 32)));
    }
    template <class T>
    unsigned match_all(T v, int& pred, const char* file = __builtin_FILE(), int line = __builtin_LINE()) const {
        return pack(__emu::match_all(file, line, mask_, v, &pred));
    }
    int any(int p, const char* file = __builtin_FILE(), int line = __builtin_LINE()) const {
        return int(__emu::warp_op(__emu::W_ANY, file, line, mask_, p ? 1 : 0, 0, 32));
    }
    int all(int p, const char* file = __builtin_FILE(), int line = __builtin_LINE()) const {
        return int(__emu::warp_op(__emu::W_ALL, file, line, mask_, p ? 1 : 0, 0, 32));
    }
    template <class T>
    T shfl_down(T v, unsigned delta, const char* file = __builtin_FILE(), int line = __builtin_LINE()) const {
        const unsigned rank = thread_rank() + delta;  // a rank past the end reads the lane's own value, as CUDA
        return shfl_rank(v, rank < size() ? rank : thread_rank(), file, line);
    }
    template <class T>
    T shfl_up(T v, unsigned delta, const char* file = __builtin_FILE(), int line = __builtin_LINE()) const {
        return shfl_rank(v, delta <= thread_rank() ? thread_rank() - delta : thread_rank(), file, line);
    }
    unsigned lane_mask() const { return mask_; }
    // After tiled_partition(coalesced, n): which tile of the parent this is, and how many there are.
    unsigned int meta_group_rank() const { return meta_rank_; }
    unsigned int meta_group_size() const { return meta_size_; }

private:
    template <class T>
    T shfl_rank(T v, unsigned rank, const char* file, int line) const {
        unsigned m = mask_;
        for (unsigned k = 0; k < rank; ++k) m &= m - 1;
        return __emu::shfl_any(__emu::W_SHFL_IDX, file, line, mask_, v, __builtin_ctz(m), 32);
    }
    unsigned pack(unsigned lanes) const {
        unsigned packed = 0, rank = 0;
        for (unsigned lane = 0; lane < 32; ++lane)
            if (mask_ >> lane & 1u) packed |= (lanes >> lane & 1u) << rank++;
        return packed;
    }
    unsigned mask_, meta_rank_, meta_size_;
};
// tiled_partition of a coalesced group: its threads in rank order, n at a time (the last tile may be short).
inline coalesced_group tiled_partition(const coalesced_group& parent, unsigned n,
                                       const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
    __detail::check_tile_size(n, file, line);
    const unsigned first = parent.thread_rank() / n * n;
    unsigned mask = 0, rank = 0;
    for (unsigned lane = 0; lane < 32; ++lane) {
        if (!(parent.lane_mask() >> lane & 1u)) continue;
        if (rank >= first && rank < first + n) mask |= 1u << lane;
        ++rank;
    }
    return coalesced_group(mask, parent.thread_rank() / n, (parent.size() + n - 1) / n);
}
inline coalesced_group coalesced_threads(const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
    return coalesced_group(unsigned(__emu::warp_op(__emu::W_COALESCE, file, line, 0xffffffffu, 0, 0, 32)));
}

// labeled_partition (sm_70) and binary_partition (CUDA 11): the parent's lanes split by a label (or a
// predicate) into coalesced groups, each holding the lanes with the same value.  Collective over the parent.
namespace __detail {
inline unsigned lanes_of(const coalesced_group& g) { return g.lane_mask(); }
template <unsigned N, class P> inline unsigned lanes_of(const thread_block_tile<N, P>&) { return tile_mask(N); }
}  // namespace __detail
template <class Parent>
inline coalesced_group labeled_partition(const Parent& parent, int label, const char* file = __builtin_FILE(),
                                         int line = __builtin_LINE()) {
    const unsigned lanes = __detail::lanes_of(parent);
    return coalesced_group(unsigned(__emu::warp_op(__emu::W_MATCH_ANY, file, line, lanes, __emu::match_bits(label), 0, 32)));
}
template <class Parent>
inline coalesced_group labeled_partition(const Parent& parent, unsigned label, const char* file = __builtin_FILE(),
                                         int line = __builtin_LINE()) {
    return labeled_partition(parent, int(label), file, line);
}
template <class Parent>
inline coalesced_group binary_partition(const Parent& parent, bool pred, const char* file = __builtin_FILE(),
                                        int line = __builtin_LINE()) {
    return labeled_partition(parent, int(pred), file, line);
}

// invoke_one (CUDA 12.1): the group's rank-0 thread calls fn; invoke_one_broadcast also hands its result to
// every thread of the group.  Collective, as in CUDA (the group synchronizes around the call).
template <class Group, class Fn, class... Args>
inline void invoke_one(const Group& group, Fn&& fn, Args&&... args) {
    if (group.thread_rank() == 0) fn(static_cast<Args&&>(args)...);
    group.sync();
}
template <class Group, class Fn, class... Args>
inline auto invoke_one_broadcast(const Group& group, Fn&& fn, Args&&... args) -> decltype(fn(static_cast<Args&&>(args)...)) {
    decltype(fn(static_cast<Args&&>(args)...)) result{};
    if (group.thread_rank() == 0) result = fn(static_cast<Args&&>(args)...);
    return group.shfl(result, 0);
}

// The whole grid.  grid.sync() needs every block resident at once: a cooperative launch (a kernel made
// with enable_cooperative_groups=True), in which the emulator parks each block at the grid barrier
// until all have arrived.  In an ordinary launch it raises, as it would hang or misbehave on a GPU.
class grid_group {
public:
    unsigned long long thread_rank() const {
        const unsigned long long b = (blockIdx.z * 1ull * gridDim.y + blockIdx.y) * gridDim.x + blockIdx.x;
        return b * __detail::block_threads() + __detail::block_rank();
    }
    unsigned long long size() const {
        return 1ull * gridDim.x * gridDim.y * gridDim.z * __detail::block_threads();
    }
    unsigned long long num_threads() const { return size(); }
    // The blocks of the grid (CUDA 11's names).
    unsigned long long block_rank() const { return (blockIdx.z * 1ull * gridDim.y + blockIdx.y) * gridDim.x + blockIdx.x; }
    unsigned long long num_blocks() const { return 1ull * gridDim.x * gridDim.y * gridDim.z; }
    dim3 dim_blocks() const { return dim3(gridDim.x, gridDim.y, gridDim.z); }
    dim3 group_dim() const { return dim_blocks(); }
    dim3 block_index() const { return dim3(blockIdx.x, blockIdx.y, blockIdx.z); }
    // Only a cooperative launch gets the grid's workspace: in an ordinary one CUDA's grid_group is not valid.
    bool is_valid() const { return __emu::cooperative_launch(); }
    void sync(const char* file = __builtin_FILE(), int line = __builtin_LINE()) const { __emu::grid_sync(file, line); }
    // The split grid barrier (CUDA 12): the whole barrier at the wait, as thread_block's.
    struct arrival_token {};
    arrival_token barrier_arrive() const { return arrival_token{}; }
    void barrier_wait(arrival_token&&, const char* file = __builtin_FILE(), int line = __builtin_LINE()) const {
        sync(file, line);
    }
};
inline grid_group this_grid() { return grid_group(); }

// The thread block cluster (sm_90): the blocks of a kernel declared __cluster_dims__(x, y, z), resident together.
// sync() is a barrier for every non-exited thread of the cluster, and map_shared_rank(p, rank) is the same place as p
// (in one of the block's __shared__ arrays) in block `rank`'s shared memory: distributed shared memory, read and
// written as ordinary memory.  A kernel without __cluster_dims__ runs each block as a cluster of one, as on sm_90.
class cluster_group {
public:
    void sync(const char* file = __builtin_FILE(), int line = __builtin_LINE()) const { __emu::cluster_sync(file, line); }
    struct arrival_token {};
    arrival_token barrier_arrive(const char* file = __builtin_FILE(), int line = __builtin_LINE()) const {
        __emu::cluster_arrive(false, file, line);
        return arrival_token{};
    }
    void barrier_wait(const char* file = __builtin_FILE(), int line = __builtin_LINE()) const {
        __emu::cluster_wait(file, line);
    }
    void barrier_wait(arrival_token&&, const char* file = __builtin_FILE(), int line = __builtin_LINE()) const {
        __emu::cluster_wait(file, line);
    }
    unsigned int block_rank() const { return __emu::cluster::block_rank(); }
    unsigned int num_blocks() const { return __emu::cluster::blocks(); }
    dim3 dim_blocks() const { return __emu::cluster::dims(); }
    dim3 block_index() const { return __emu::cluster::block_index(); }
    unsigned int thread_rank() const { return block_rank() * __detail::block_threads() + __detail::block_rank(); }
    unsigned int num_threads() const { return num_blocks() * __detail::block_threads(); }
    unsigned int size() const { return num_threads(); }
    dim3 dim_threads() const {
        const dim3 c = dim_blocks();
        return dim3(c.x * blockDim.x, c.y * blockDim.y, c.z * blockDim.z);
    }
    bool is_valid() const { return true; }
    template <class T>
    T* map_shared_rank(T* addr, unsigned int rank, const char* file = __builtin_FILE(), int line = __builtin_LINE()) const {
        return static_cast<T*>(__emu::map_shared_rank(addr, rank, file, line));
    }
    template <class T>
    T& map_shared_rank(T& addr, unsigned int rank, const char* file = __builtin_FILE(), int line = __builtin_LINE()) const {
        return *static_cast<T*>(__emu::map_shared_rank(&addr, rank, file, line));
    }
    unsigned int query_shared_rank(const void* addr, const char* file = __builtin_FILE(), int line = __builtin_LINE()) const {
        return __emu::shared_rank_of(addr, file, line);
    }
};
inline cluster_group this_cluster() { return cluster_group(); }

template <class Group>
inline void sync(const Group& g, const char* file = __builtin_FILE(), int line = __builtin_LINE()) { g.sync(file, line); }
// The free-function spellings of older CUDA code: cg::thread_rank(g), cg::group_size(g), cg::num_threads(g).
template <class Group> inline auto thread_rank(const Group& g) -> decltype(g.thread_rank()) { return g.thread_rank(); }
template <class Group> inline auto group_size(const Group& g) -> decltype(g.size()) { return g.size(); }
template <class Group> inline auto num_threads(const Group& g) -> decltype(g.num_threads()) { return g.num_threads(); }
}  // namespace cooperative_groups
