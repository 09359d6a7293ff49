// Stand-in for CUDA's <cooperative_groups/reduce.h> under minilora's CPU emulator: cg::reduce over a
// thread_block_tile<N> is a butterfly of shfl_xor, so every thread of the tile gets the result, as in CUDA;
// over a coalesced_group, a gather by rank.
#pragma once
#include "../cooperative_groups.h"

namespace cooperative_groups {
template <class T> struct plus { T operator()(const T& a, const T& b) const { return a + b; } };
template <class T> struct less { T operator()(const T& a, const T& b) const { return b < a ? b : a; } };
template <class T> struct greater { T operator()(const T& a, const T& b) const { return a < b ? b : a; } };
template <class T> struct bit_and { T operator()(const T& a, const T& b) const { return a & b; } };
template <class T> struct bit_or { T operator()(const T& a, const T& b) const { return a | b; } };
template <class T> struct bit_xor { T operator()(const T& a, const T& b) const { return a ^ b; } };

template <unsigned N, class T, class Op>
T reduce(const thread_block_tile<N>& tile, T value, Op op) {
    for (unsigned offset = N / 2; offset > 0; offset /= 2) value = op(value, tile.shfl_xor(value, offset));
    return value;
}

// Over a coalesced_group (any set of lanes): every lane gathers the values rank by rank.
template <class T, class Op>
T reduce(const coalesced_group& group, T value, Op op) {
    T total = group.shfl(value, 0);
    for (unsigned rank = 1; rank < group.size(); ++rank) total = op(total, group.shfl(value, rank));
    return total;
}
}  // namespace cooperative_groups
