// cg_reduce.cu -- cooperative-groups kernels in the style of CUDA's samples and programming guide:
// a block sum with warp tiles and cg::reduce, tile collectives (ballot/any/all/shfl), a runtime-sized
// tile, an aggregated atomic append with coalesced_threads(), and a two-pass sum with grid.sync() in
// a cooperative launch.  Valid CUDA: the tests compile it with nvcc.
#include <cooperative_groups.h>
#include <cooperative_groups/reduce.h>
namespace cg = cooperative_groups;

// out[blockIdx.x] = the sum of this block's slice of x.  Launch: any block size that is a multiple of 32.
extern "C" __global__ void cg_block_sum(const float* x, float* out, int n) {
    __shared__ float partial[32];
    cg::thread_block block = cg::this_thread_block();
    cg::thread_block_tile<32> warp = cg::tiled_partition<32>(block);
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    float v = i < n ? x[i] : 0.0f;
    v = cg::reduce(warp, v, cg::plus<float>());
    if (warp.thread_rank() == 0) partial[warp.meta_group_rank()] = v;
    block.sync();
    if (warp.meta_group_rank() == 0) {
        int nwarps = (int)((block.size() + 31) / 32);
        v = (int)warp.thread_rank() < nwarps ? partial[warp.thread_rank()] : 0.0f;
        v = cg::reduce(warp, v, cg::plus<float>());
        if (block.thread_rank() == 0) out[blockIdx.x] = v;
    }
}

// Per thread, over its tile of 8: max, min, ballot, any, all, the rank-0 value and shfl_down by 1.
extern "C" __global__ void cg_tile_ops(const int* x, int* maxs, int* mins, unsigned* ballots, int* anys,
                                       int* alls, int* firsts, int* downs) {
    cg::thread_block block = cg::this_thread_block();
    cg::thread_block_tile<8> tile = cg::tiled_partition<8>(block);
    int i = block.thread_rank();
    int v = x[i];
    maxs[i] = cg::reduce(tile, v, cg::greater<int>());
    mins[i] = cg::reduce(tile, v, cg::less<int>());
    ballots[i] = tile.ballot(v > 0);
    anys[i] = tile.any(v > 40);
    alls[i] = tile.all(v > -40);
    firsts[i] = tile.shfl(v, 0);
    downs[i] = tile.shfl_down(v, 1);
    tile.sync();
}

// A tile whose size is a kernel argument: rank within it.
extern "C" __global__ void cg_runtime_tile(int* ranks, int* sizes, int tile_size) {
    cg::thread_block block = cg::this_thread_block();
    cg::thread_group tile = cg::tiled_partition(block, tile_size);
    int i = block.thread_rank();
    ranks[i] = tile.thread_rank();
    sizes[i] = tile.size();
    tile.sync();
}

// Appends x[i] to out, one atomicAdd per warp instead of one per thread (the classic atomicAggInc).
extern "C" __global__ void cg_aggregated_append(const int* x, int n, int* out, int* count) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    cg::coalesced_group active = cg::coalesced_threads();
    int base = 0;
    if (active.thread_rank() == 0) base = atomicAdd(count, (int)active.size());
    base = active.shfl(base, 0);
    out[base + active.thread_rank()] = x[i];
}

// Two-pass sum with a grid-wide barrier between the passes (a cooperative launch): each block writes
// its partial sum, grid.sync(), then thread 0 of the grid adds the partials in order.  Deterministic:
// no float atomics, so the race check's schedules must all agree.  Block size: a multiple of 32.
extern "C" __global__ void cg_grid_sum(const float* x, float* partial, float* out, int n) {
    __shared__ float warp_sums[32];
    cg::grid_group grid = cg::this_grid();
    cg::thread_block block = cg::this_thread_block();
    cg::thread_block_tile<32> warp = cg::tiled_partition<32>(block);
    float v = 0.0f;
    for (unsigned long long i = grid.thread_rank(); i < (unsigned long long)n; i += grid.size()) v += x[i];
    v = cg::reduce(warp, v, cg::plus<float>());
    if (warp.thread_rank() == 0) warp_sums[warp.meta_group_rank()] = v;
    block.sync();
    if (block.thread_rank() == 0) {
        float s = 0.0f;
        for (unsigned w = 0; w < (block.size() + 31) / 32; ++w) s += warp_sums[w];
        partial[blockIdx.x] = s;
    }
    grid.sync();
    if (grid.thread_rank() == 0) {
        float s = 0.0f;
        for (unsigned b = 0; b < gridDim.x; ++b) s += partial[b];
        *out = s;
    }
}

// Stage a block's slice through shared memory with cg::memcpy_async, then write it reversed.
#include <cooperative_groups/memcpy_async.h>
extern "C" __global__ void cg_staged_reverse(const float* x, float* y, int n) {
    extern __shared__ float stage[];
    cg::thread_block block = cg::this_thread_block();
    const int base = blockIdx.x * blockDim.x;
    const int count = min((int)blockDim.x, n - base);
    cg::memcpy_async(block, stage, (size_t)count, x + base, (size_t)count);
    cg::wait(block);
    const int t = block.thread_rank();
    if (t < count) y[base + t] = stage[count - 1 - t];
}
