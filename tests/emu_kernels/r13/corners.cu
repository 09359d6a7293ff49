// Round 13, second file: the less travelled intrinsics and library corners public kernels use.
#include <cstdio>
#include <cooperative_groups.h>
#include <cooperative_groups/reduce.h>
#include <cooperative_groups/scan.h>
#include <cub/cub.cuh>
#include <cuda/atomic>
#include <cuda/std/limits>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

namespace cg = cooperative_groups;

// cg scans, ballot/any/all on tiles, labeled_partition by key, binary_partition by sign
extern "C" __global__ void cg_scans_and_partitions(const int* x, int* inclusive, int* exclusive, int* key_count,
                                                   int* ballots, int n) {
    auto block = cg::this_thread_block();
    auto tile = cg::tiled_partition<32>(block);
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    const int v = i < n ? x[i] : 0;
    const int inc = cg::inclusive_scan(tile, v);
    const int exc = cg::exclusive_scan(tile, v, cg::plus<int>());
    const unsigned positive = tile.ballot(v > 0);
    const bool any_big = tile.any(v > 40), all_small = tile.all(v < 60);
    // lanes with equal v % 4 form one group: its size, as each lane sees it
    cg::coalesced_group same = cg::labeled_partition(cg::coalesced_threads(), v & 3);
    cg::coalesced_group sign = cg::binary_partition(cg::coalesced_threads(), v < 0);
    if (i < n) {
        inclusive[i] = inc;
        exclusive[i] = exc;
        key_count[i] = same.size() * 100 + sign.size();
    }
    if (tile.thread_rank() == 0) {
        const int w = i / 32;
        ballots[3 * w] = (int)positive;
        ballots[3 * w + 1] = any_big;
        ballots[3 * w + 2] = all_small;
    }
}

// CUB warp and block collectives: WarpReduce over partial warps, BlockReduce with num_valid, WarpScan
extern "C" __global__ void cub_warp_block_reduce(const float* x, float* warp_sums, float* block_max, float* scans,
                                                 int n) {
    using WarpReduce = cub::WarpReduce<float>;
    using BlockReduce = cub::BlockReduce<float, 128>;
    using WarpScan = cub::WarpScan<float>;
    __shared__ typename WarpReduce::TempStorage warp_temp[4];
    __shared__ typename BlockReduce::TempStorage block_temp;
    __shared__ typename WarpScan::TempStorage scan_temp[4];
    const int i = blockIdx.x * blockDim.x + threadIdx.x, warp = threadIdx.x / 32;
    const float v = i < n ? x[i] : 0.0f;
    const int valid_in_warp = max(0, min(32, n - (i - (int)(threadIdx.x % 32))));
    const float ws = WarpReduce(warp_temp[warp]).Sum(v, valid_in_warp);
    const int valid_in_block = max(0, min(128, n - (int)(blockIdx.x * blockDim.x)));
    const float bm = BlockReduce(block_temp).Reduce(v, cub::Max(), valid_in_block);
    float prefix;
    WarpScan(scan_temp[warp]).ExclusiveSum(v, prefix);
    if (threadIdx.x % 32 == 0) warp_sums[i / 32] = ws;
    if (threadIdx.x == 0) block_max[blockIdx.x] = bm;
    if (i < n) scans[i] = prefix;
}

// __syncthreads_count / _or / _and
extern "C" __global__ void block_votes(const float* x, int* out, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    const bool pred = i < n && x[i] > 0.0f;
    const int count = __syncthreads_count(pred);
    const int any = __syncthreads_or(pred);
    const int all = __syncthreads_and(i < n);
    if (threadIdx.x == 0) {
        out[3 * blockIdx.x] = count;
        out[3 * blockIdx.x + 1] = any;
        out[3 * blockIdx.x + 2] = all;
    }
}

// Integer intrinsics: __dp4a, __byte_perm, __funnelshift_l, __umulhi, __brev, __clz, __sad, __vabsdiffu4
extern "C" __global__ void integer_intrinsics(const unsigned* a, const unsigned* b, unsigned* out, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    const unsigned x = a[i], y = b[i];
    out[8 * i + 0] = (unsigned)__dp4a((int)x, (int)y, 7);
    out[8 * i + 1] = __byte_perm(x, y, 0x5140);
    out[8 * i + 2] = __funnelshift_l(x, y, i % 40);
    out[8 * i + 3] = __umulhi(x, y);
    out[8 * i + 4] = __brev(x);
    out[8 * i + 5] = (unsigned)__clz((int)x);
    out[8 * i + 6] = __sad((int)x, (int)y, 3u);
    out[8 * i + 7] = __vabsdiffu4(x, y);
}

// half / bf16 scalar math: hexp, hrsqrt, __hmax_nan, __hisnan, atomicAdd on __nv_bfloat16
extern "C" __global__ void half_math(const __half* x, __half* out, __nv_bfloat16* bf_sum, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    const __half h = x[i];
    out[4 * i + 0] = hexp(h);
    out[4 * i + 1] = hrsqrt(__habs(h));
    out[4 * i + 2] = __hmax_nan(h, __float2half(0.5f));
    out[4 * i + 3] = __hisnan(h) ? __float2half(-1.0f) : __hneg(h);
    atomicAdd(bf_sum, __float2bfloat16(1.0f));
}

// libcu++: atomic_ref fetch_add / fetch_max on device scope, numeric_limits
extern "C" __global__ void atomic_ref_stats(const int* x, int* sum_and_max, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    cuda::atomic_ref<int, cuda::thread_scope_device> total(sum_and_max[0]);
    cuda::atomic_ref<int, cuda::thread_scope_device> biggest(sum_and_max[1]);
    if (i < n) {
        total.fetch_add(x[i], cuda::std::memory_order_relaxed);
        biggest.fetch_max(x[i], cuda::std::memory_order_relaxed);
    } else if (i == n) {
        biggest.fetch_max(cuda::std::numeric_limits<int>::min());
    }
}

// float intrinsics: __fdividef, __saturatef, __frcp_rn, __fmaf_rn, __fsqrt_rn, __expf, rsqrtf, copysignf, sincospif
extern "C" __global__ void float_intrinsics(const float* x, const float* y, float* out, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    const float a = x[i], b = y[i];
    float s, c;
    sincospif(a, &s, &c);
    out[8 * i + 0] = __saturatef(a);
    out[8 * i + 1] = __frcp_rn(b);
    out[8 * i + 2] = __fmaf_rn(a, b, 1.0f);
    out[8 * i + 3] = __fsqrt_rn(fabsf(b));
    out[8 * i + 4] = copysignf(2.0f, a);
    out[8 * i + 5] = s;
    out[8 * i + 6] = c;
    out[8 * i + 7] = __fdiv_rn(a, b);
}

// printf with the formats people use: %lld, %u, %x, %e, %g, %s, %c, %5.2f
extern "C" __global__ void printf_formats(long long big, unsigned u, float f, double d) {
    if (threadIdx.x == 0)
        printf("big=%lld u=%u hex=%x e=%e g=%g s=%s c=%c f=%5.2f\n", big, u, u, d, f, "ok", 'Z', f);
}
