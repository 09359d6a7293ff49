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
}  // namespace cooperative_groups
