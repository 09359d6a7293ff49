// Stand-in for CUDA's <cooperative_groups/reduce.h> under minilora's CPU emulator: cg::reduce over a
// thread_block_tile<N> is a butterfly of shfl_xor, so every thread of the tile gets the result, as in CUDA;
// over a coalesced_group, CUDA's shfl_down halving or scan by rank.
#pragma once
#include "../cooperative_groups.h"

namespace cooperative_groups {
template <class T> struct plus { T operator()(const T& a, const T& b) const { return a + b; } };
template <class T> struct less { T operator()(const T& a, const T& b) const { return b < a ? b : a; } };
template <class T> struct greater { T operator()(const T& a, const T& b) const { return a < b ? b : a; } };
template <class T> struct bit_and { T operator()(const T& a, const T& b) const { return a & b; } };
template <class T> struct bit_or { T operator()(const T& a, const T& b) const { return a | b; } };
template <class T> struct bit_xor { T operator()(const T& a, const T& b) const { return a ^ b; } };

template <unsigned N, class P, class T, class Op>
T reduce(const thread_block_tile<N, P>& tile, T value, Op op, const char* file = __builtin_FILE(),
         int line = __builtin_LINE()) {
    if constexpr (N > 32) {
        return tile.reduce_warps(value, op, file, line);  // a tile of whole warps
    } else {
        for (unsigned offset = N / 2; offset > 0; offset /= 2) value = op(value, tile.shfl_xor(value, offset, file, line));
        return value;
    }
}

namespace __detail {
// A Hillis-Steele scan by rank, as CUDA's cooperative_groups scans a coalesced group: at step i each rank adds the
// value i ranks below it (its own when there is none), so float sums associate as on a GPU.
template <class T, class Op>
T scan_by_rank(const coalesced_group& group, T value, Op op) {
    for (unsigned i = 1; i < group.size(); i *= 2) {
        const T below = group.shfl_up(value, i);
        if (i <= group.thread_rank()) value = op(value, below);
    }
    return value;
}
}  // namespace __detail

// Over a coalesced_group, in CUDA's order: a power-of-two group halves by shfl_down and every lane gets rank 0's
// value; any other size is scanned by rank and every lane gets the last rank's (a float sum of 4 lanes is
// (v0 + v2) + (v1 + v3) there, not ((v0 + v1) + v2) + v3).
template <class T, class Op>
T reduce(const coalesced_group& group, T value, Op op) {
    const unsigned size = group.size();
    if ((size & (size - 1)) == 0) {
        for (unsigned offset = size / 2; offset > 0; offset /= 2) value = op(value, group.shfl_down(value, offset));
        return group.shfl(value, 0);
    }
    return group.shfl(__detail::scan_by_rank(group, value, op), size - 1);
}

// CUDA 12.2's reduce_update_async / reduce_store_async: the group's reduction, then one thread (rank 0) combines it
// with the value an atomic_ref names (fetch_add for plus, fetch_min for less, ...) or stores it there or through a
// pointer.  CUDA allows only the six operators above: a lambda or another functor does not build, as there.
namespace __detail {
template <class Op> struct atomic_update_of;
template <class T> struct atomic_update_of<plus<T>> { template <class A> static void run(A& a, T v) { a.fetch_add(v); } };
template <class T> struct atomic_update_of<less<T>> { template <class A> static void run(A& a, T v) { a.fetch_min(v); } };
template <class T> struct atomic_update_of<greater<T>> { template <class A> static void run(A& a, T v) { a.fetch_max(v); } };
template <class T> struct atomic_update_of<bit_and<T>> { template <class A> static void run(A& a, T v) { a.fetch_and(v); } };
template <class T> struct atomic_update_of<bit_or<T>> { template <class A> static void run(A& a, T v) { a.fetch_or(v); } };
template <class T> struct atomic_update_of<bit_xor<T>> { template <class A> static void run(A& a, T v) { a.fetch_xor(v); } };
}  // namespace __detail

template <class Group, class Atomic, class T, class Op>
void reduce_update_async(const Group& group, Atomic&& atomic, const T& value, Op&& op) {
    const T total = reduce(group, value, op);
    if (group.thread_rank() == 0) __detail::atomic_update_of<std::decay_t<Op>>::run(atomic, total);
}
template <class Group, class Atomic, class T, class Op>
void reduce_store_async(const Group& group, Atomic&& atomic, const T& value, Op&& op) {
    const T total = reduce(group, value, op);
    if (group.thread_rank() == 0) atomic.store(total);
}
template <class Group, class T, class Op>
void reduce_store_async(const Group& group, T* destination, const T& value, Op&& op) {
    const T total = reduce(group, value, op);
    if (group.thread_rank() == 0) *destination = total;
}
}  // namespace cooperative_groups
