// Warp-level primitives as the CUDA programming guide and the NVIDIA blog posts use them.
#include <cooperative_groups.h>
#include <cooperative_groups/reduce.h>
namespace cg = cooperative_groups;

// Inclusive scan inside segments of `width` lanes (Kogge-Stone with __shfl_up_sync).
extern "C" __global__ void segment_scan(const int* in, int* out, int width) {
    int lane = threadIdx.x % width;
    int v = in[threadIdx.x];
    for (int d = 1; d < width; d *= 2) {
        int up = __shfl_up_sync(0xffffffff, v, d, width);
        if (lane >= d) v += up;
    }
    out[threadIdx.x] = v;
}

// Each lane reads from (lane + 3) within its segment: __shfl_sync with width and a source lane past it.
extern "C" __global__ void segment_rotate(const float* in, float* idx_out, float* xor_out, float* down_out,
                                         int width) {
    float v = in[threadIdx.x];
    int lane = threadIdx.x % width;
    idx_out[threadIdx.x] = __shfl_sync(0xffffffff, v, lane + 3, width);
    xor_out[threadIdx.x] = __shfl_xor_sync(0xffffffff, v, 1, width);
    down_out[threadIdx.x] = __shfl_down_sync(0xffffffff, v, 2, width);
}

// Ballot / any / all / popc: count positives per warp (the "warp vote" blog example).
extern "C" __global__ void vote(const float* x, unsigned* ballots, int* anys, int* alls, int* counts, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    float v = i < n ? x[i] : 0.0f;
    unsigned b = __ballot_sync(0xffffffff, v > 0.0f);
    int any = __any_sync(0xffffffff, v > 1.0f);
    int all = __all_sync(0xffffffff, v > -2.0f);
    int warp = i / 32;
    if (threadIdx.x % 32 == 0) {
        ballots[warp] = b;
        anys[warp] = any;
        alls[warp] = all;
        counts[warp] = __popc(b);
    }
}

// __activemask inside a divergent branch.
extern "C" __global__ void active_mask(unsigned* out) {
    unsigned m = 0;
    if (threadIdx.x % 3 == 0) m = __activemask();
    else m = __activemask();
    out[threadIdx.x] = m;
}

// __match_any_sync groups lanes holding the same key (the blog's warp-aggregated histogram).
extern "C" __global__ void match_any(const int* keys, unsigned* masks, int* leaders_sum, const int* vals) {
    int key = keys[threadIdx.x];
    unsigned peers = __match_any_sync(0xffffffff, key);
    masks[threadIdx.x] = peers;
    int leader = __ffs(peers) - 1;
    int total = 0;
    for (int l = 0; l < 32; ++l) {                       // every lane reaches the same shuffles
        int v = __shfl_sync(0xffffffff, vals[threadIdx.x], l);
        if (peers & (1u << l)) total += v;
    }
    if ((int)(threadIdx.x % 32) == leader) atomicAdd(&leaders_sum[key], total);
}

extern "C" __global__ void match_all(const int* keys, unsigned* out, int* preds) {
    int pred = -1;
    unsigned m = __match_all_sync(0xffffffff, keys[threadIdx.x], &pred);
    out[threadIdx.x] = m;
    preds[threadIdx.x] = pred;
}

// sm_80 __reduce_*_sync on unsigned and int.
extern "C" __global__ void warp_reduce_ops(const int* x, int* adds, int* mins, int* maxs, unsigned* ands,
                                           unsigned* ors) {
    int v = x[threadIdx.x];
    adds[threadIdx.x] = __reduce_add_sync(0xffffffff, v);
    mins[threadIdx.x] = __reduce_min_sync(0xffffffff, v);
    maxs[threadIdx.x] = __reduce_max_sync(0xffffffff, v);
    ands[threadIdx.x] = __reduce_and_sync(0xffffffff, (unsigned)v);
    ors[threadIdx.x] = __reduce_or_sync(0xffffffff, (unsigned)v);
}

// __syncwarp(mask) with half a warp: lanes 0-15 exchange through shared memory.
extern "C" __global__ void half_warp_exchange(const float* x, float* y) {
    __shared__ float buf[32];
    if (threadIdx.x < 16) {
        buf[threadIdx.x] = x[threadIdx.x];
        __syncwarp(0x0000ffff);
        y[threadIdx.x] = buf[15 - threadIdx.x];
    } else {
        y[threadIdx.x] = -x[threadIdx.x];
    }
}

// Cooperative groups: block sum with tiled_partition<32> / <16> and cg::reduce.
template <int TILE>
__device__ float block_sum(const float* x, int n) {
    cg::thread_block block = cg::this_thread_block();
    cg::thread_block_tile<TILE> tile = cg::tiled_partition<TILE>(block);
    __shared__ float partial[1024 / TILE];
    int i = blockIdx.x * blockDim.x + block.thread_rank();
    float v = i < n ? x[i] : 0.0f;
    float s = cg::reduce(tile, v, cg::plus<float>());
    if (tile.thread_rank() == 0) partial[block.thread_rank() / TILE] = s;
    block.sync();
    float total = 0.0f;
    if (block.thread_rank() == 0)
        for (int t = 0; t < (int)(block.size() / TILE); ++t) total += partial[t];
    return total;
}

extern "C" __global__ void cg_sum32(const float* x, float* out, int n) {
    float t = block_sum<32>(x, n);
    if (threadIdx.x == 0) out[blockIdx.x] = t;
}
extern "C" __global__ void cg_sum16(const float* x, float* out, int n) {
    float t = block_sum<16>(x, n);
    if (threadIdx.x == 0) out[blockIdx.x] = t;
}

// cg::reduce with cg::greater and cg::less, and tile.shfl_down, meta_group_rank.
extern "C" __global__ void cg_minmax(const int* x, int* mx, int* mn, int* meta) {
    cg::thread_block_tile<16> t = cg::tiled_partition<16>(cg::this_thread_block());
    int v = x[threadIdx.x];
    mx[threadIdx.x] = cg::reduce(t, v, cg::greater<int>());
    mn[threadIdx.x] = cg::reduce(t, v, cg::less<int>());
    meta[threadIdx.x] = t.meta_group_rank() * 100 + t.meta_group_size();
}

// grid-wide sync without a cooperative launch: must be an error.
extern "C" __global__ void grid_needs_coop(float* x) {
    cg::grid_group g = cg::this_grid();
    x[g.thread_rank()] = 1.0f;
    g.sync();
}

