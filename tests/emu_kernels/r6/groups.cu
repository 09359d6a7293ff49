// Cooperative groups and warp intrinsics as public CUDA code uses them (CUDA samples, the CUDA blog's
// "Cooperative Groups: Flexible CUDA Thread Programming", llm.c): static and dynamic tiles, cg::reduce with
// cg::plus / cg::greater and a custom operator on a struct, labeled and binary partitions, invoke_one,
// match_any, and the __*_sync intrinsics with partial masks and widths.
#include <cooperative_groups.h>
#include <cooperative_groups/reduce.h>
namespace cg = cooperative_groups;

// Per tile of 16 threads: the sum and the max of its values; per tile of 8 (a dynamic partition): the count
// of positive values, written by each tile's rank-0 thread at its meta_group_rank.
extern "C" __global__ void tile_stats(const float* __restrict__ x, float* sums16, float* maxs16, int* pos8, int n) {
    cg::thread_block block = cg::this_thread_block();
    const int i = block.group_index().x * block.size() + block.thread_rank();
    const float v = i < n ? x[i] : 0.0f;
    cg::thread_block_tile<16> t16 = cg::tiled_partition<16>(block);
    const float s = cg::reduce(t16, v, cg::plus<float>());
    const float m = cg::reduce(t16, i < n ? v : -INFINITY, cg::greater<float>());
    const int tiles16 = block.size() / t16.num_threads();
    if (t16.thread_rank() == 0) {
        sums16[blockIdx.x * tiles16 + t16.meta_group_rank()] = s;
        maxs16[blockIdx.x * tiles16 + t16.meta_group_rank()] = m;
    }
    block.sync();
    cg::thread_group t8 = cg::tiled_partition(block, 8);
    __shared__ int counts[1024 / 8];
    if (t8.thread_rank() == 0) counts[block.thread_rank() / 8] = 0;
    t8.sync();
    if (v > 0.0f) atomicAdd(&counts[block.thread_rank() / 8], 1);
    t8.sync();
    if (t8.thread_rank() == 0) pos8[blockIdx.x * (block.size() / 8) + block.thread_rank() / 8] = counts[block.thread_rank() / 8];
}

// A warp-aggregated histogram: the threads holding a key (a divergent branch) split into groups by key with
// labeled_partition; each group's leader adds the group's size once.
extern "C" __global__ void aggregated_histogram(const int* keys, int n, unsigned* bins) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n && keys[i] >= 0) {
        cg::coalesced_group active = cg::coalesced_threads();
        cg::coalesced_group same = cg::labeled_partition(active, keys[i]);
        if (same.thread_rank() == 0) atomicAdd(&bins[keys[i]], same.size());
    }
}

// binary_partition of each warp by parity, then invoke_one: one atomic per group; the odd group also sums
// its values with cg::reduce over the coalesced group.
extern "C" __global__ void parity_counts(const int* x, int n, int* counts, int* odd_sum) {
    cg::thread_block_tile<32> warp = cg::tiled_partition<32>(cg::this_thread_block());
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    const int v = i < n ? x[i] : 0;
    cg::coalesced_group part = cg::binary_partition(warp, v & 1);
    cg::invoke_one(part, [&] { atomicAdd(&counts[v & 1], (int)part.num_threads()); });
    if (v & 1) {
        const int s = cg::reduce(part, v, cg::plus<int>());
        if (part.thread_rank() == 0) atomicAdd(odd_sum, s);
    }
}

// thread_block_tile<32>::match_any: each thread writes how many lanes of its warp share its key and the
// lowest such lane (the group's leader, as in a warp-deduplicated atomic).
extern "C" __global__ void warp_dedupe(const int* keys, int* peers, int* leader) {
    auto warp = cg::tiled_partition<32>(cg::this_thread_block());
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    const unsigned same = warp.match_any(keys[i]);
    peers[i] = __popc(same);
    leader[i] = __ffs(same) - 1;
}

// An online softmax's (max, sum of exp) pairs merged by cg::reduce with a custom operator over a struct,
// one 32-thread tile per row (llm.c's softmax_forward_kernel7 idea, with cooperative groups).
struct MaxSum { float m, s; };
struct MergeMaxSum {
    __device__ MaxSum operator()(MaxSum a, MaxSum b) const {
        const float m = fmaxf(a.m, b.m);
        return {m, a.s * expf(a.m - m) + b.s * expf(b.m - m)};
    }
};
extern "C" __global__ void softmax_rows_cg(const float* __restrict__ inp, float* __restrict__ out, int rows, int cols) {
    cg::thread_block block = cg::this_thread_block();
    cg::thread_block_tile<32> warp = cg::tiled_partition<32>(block);
    const int row = blockIdx.x * warp.meta_group_size() + warp.meta_group_rank();
    if (row >= rows) return;
    const float* x = inp + (size_t)row * cols;
    MaxSum acc = {-INFINITY, 0.0f};
    for (int c = warp.thread_rank(); c < cols; c += warp.size()) {
        const float m = fmaxf(acc.m, x[c]);
        acc = {m, acc.s * expf(acc.m - m) + expf(x[c] - m)};
    }
    const MaxSum total = cg::reduce(warp, acc, MergeMaxSum());
    for (int c = warp.thread_rank(); c < cols; c += warp.size())
        __stcs(out + (size_t)row * cols + c, expf(x[c] - total.m) / total.s);
}

// Segments of 8 and 16 lanes: __shfl_down_sync / __shfl_xor_sync with width, __shfl_up_sync as an
// inclusive scan within 8 lanes.
extern "C" __global__ void segment_shuffles(const int* x, int* down8, int* xor16, int* scan8) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    int v = x[i], s = v, t = v;
    for (int d = 4; d > 0; d /= 2) s += __shfl_down_sync(0xffffffffu, s, d, 8);
    for (int d = 8; d > 0; d /= 2) t += __shfl_xor_sync(0xffffffffu, t, d, 16);
    int scan = v;
    for (int d = 1; d < 8; d *= 2) {
        const int up = __shfl_up_sync(0xffffffffu, scan, d, 8);
        if ((threadIdx.x & 7) >= d) scan += up;
    }
    down8[i] = s;
    xor16[i] = t;
    scan8[i] = scan;
}

// sm_80's __reduce_*_sync over the lanes of a branch (the ballot of its predicate), __activemask inside
// it, and __syncwarp(mask) around a shared-memory exchange among those lanes only.
extern "C" __global__ void branch_reductions(const unsigned* x, unsigned* sums, unsigned* mins, int* maxs,
                                             unsigned* masks, unsigned* swapped) {
    __shared__ unsigned stage[32];
    const unsigned lane = threadIdx.x;
    const unsigned v = x[lane];
    const unsigned odd = __ballot_sync(0xffffffffu, v & 1);
    if (v & 1) {
        sums[lane] = __reduce_add_sync(odd, v);
        mins[lane] = __reduce_min_sync(odd, v);
        maxs[lane] = __reduce_max_sync(odd, -(int)v);
        masks[lane] = __activemask();
        stage[lane] = v;
        __syncwarp(odd);
        const unsigned partner = 31 - __clz(odd);  // the highest odd lane
        swapped[lane] = stage[partner];
        __syncwarp(odd);
    } else {
        masks[lane] = __activemask();
        sums[lane] = mins[lane] = swapped[lane] = 0;
        maxs[lane] = 0;
    }
}

// __match_any_sync / __match_all_sync over the warp.
extern "C" __global__ void match_keys(const int* keys, unsigned* any, unsigned* all, int* pred) {
    const int lane = threadIdx.x;
    any[lane] = __match_any_sync(0xffffffffu, keys[lane]);
    int p = 0;
    all[lane] = __match_all_sync(0x0000ffffu << (lane & 16), keys[lane] & ~1, &p);
    pred[lane] = p;
}

// A whole-grid two-phase normalization through grid.sync() (a cooperative launch): every block sums its
// part, block 0 adds the partial sums after the grid barrier, then every thread divides.
extern "C" __global__ void grid_normalize(float* x, float* partial, int n) {
    cg::grid_group grid = cg::this_grid();
    cg::thread_block block = cg::this_thread_block();
    __shared__ float warp_sums[32];
    float s = 0.0f;
    for (unsigned long long i = grid.thread_rank(); i < (unsigned long long)n; i += grid.size()) s += x[i];
    auto warp = cg::tiled_partition<32>(block);
    s = cg::reduce(warp, s, cg::plus<float>());
    if (warp.thread_rank() == 0) warp_sums[warp.meta_group_rank()] = s;
    block.sync();
    if (block.thread_rank() == 0) {
        float t = 0.0f;
        for (unsigned w = 0; w < warp.meta_group_size(); ++w) t += warp_sums[w];
        partial[blockIdx.x] = t;
    }
    grid.sync();
    float total = 0.0f;
    for (unsigned b = 0; b < gridDim.x; ++b) total += partial[b];
    for (unsigned long long i = grid.thread_rank(); i < (unsigned long long)n; i += grid.size()) x[i] /= total;
}

// A coalesced group of the odd lanes: its ballot and match_any answer in the group's ranks (bit k = rank k),
// and tiled_partition splits it into tiles of 4 by rank.
extern "C" __global__ void coalesced_ranks(const int* keys, unsigned* ballots, unsigned* matches, unsigned* tiles) {
    const unsigned lane = threadIdx.x;
    if (lane & 1) {
        cg::coalesced_group odd = cg::coalesced_threads();
        ballots[lane] = odd.ballot(odd.thread_rank() % 3 == 0);
        matches[lane] = odd.match_any(keys[lane]);
        cg::coalesced_group four = cg::tiled_partition(odd, 4);
        tiles[lane] = four.thread_rank() + 10 * four.size() + 100 * four.meta_group_rank() + 1000 * four.meta_group_size()
                      + 10000 * four.shfl(keys[lane], 0);
    } else {
        ballots[lane] = matches[lane] = tiles[lane] = 0;
    }
}
