// Stand-in for CUDA's <cooperative_groups/scan.h> under minilora's CPU emulator: cg::inclusive_scan and
// cg::exclusive_scan over a thread_block_tile<N>, as a Kogge-Stone scan of shfl_up (log2 N steps; a tile of several
// warps scans each warp so, then folds in the lower warps' totals), and
// over a coalesced_group by CUDA's scan by rank.
#pragma once
#include "reduce.h"  // plus, less, greater, bit_and, bit_or, bit_xor

namespace cooperative_groups {
template <unsigned N, class P, class T, class Op = plus<T>>
T inclusive_scan(const thread_block_tile<N, P>& tile, T value, Op op = Op()) {
    if constexpr (N > 32) {
        return tile.scan_warps(value, op, true, __FILE__, __LINE__);  // a tile of whole warps
    } else {
        for (unsigned d = 1; d < N; d *= 2) {
            const T below = tile.shfl_up(value, d);
            // op(own, below) in CUDA's operand order: cg::less(x, NaN) is x but cg::less(NaN, x) is NaN
            if (tile.thread_rank() >= d) value = op(value, below);
        }
        return value;
    }
}

// Thread 0 gets T() (0 for cg::plus), every other thread the inclusive scan of the threads before it.
template <unsigned N, class P, class T, class Op = plus<T>>
T exclusive_scan(const thread_block_tile<N, P>& tile, T value, Op op = Op()) {
    if constexpr (N > 32) {
        return tile.scan_warps(value, op, false, __FILE__, __LINE__);
    } else {
        const T inclusive = inclusive_scan(tile, value, op);
        const T before = tile.shfl_up(inclusive, 1);
        return tile.thread_rank() == 0 ? T() : before;
    }
}

// Over a coalesced_group: CUDA's scan by rank (reduce.h), the exclusive one the inclusive one a rank up.
template <class T, class Op = plus<T>>
T inclusive_scan(const coalesced_group& group, T value, Op op = Op()) {
    return __detail::scan_by_rank(group, value, op);
}
template <class T, class Op = plus<T>>
T exclusive_scan(const coalesced_group& group, T value, Op op = Op()) {
    const T before = group.shfl_up(__detail::scan_by_rank(group, value, op), 1);
    return group.thread_rank() == 0 ? T() : before;
}
}  // namespace cooperative_groups
