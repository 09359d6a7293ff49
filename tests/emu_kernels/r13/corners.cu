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

// ---------------------------------------------------------------- CUDA samples' reduction idioms
// SharedMemory<T>: the samples' workaround for extern __shared__ arrays of a template's type
template <class T> struct SharedMemory {
    __device__ inline operator T *() { extern __shared__ int __smem[]; return (T *)__smem; }
    __device__ inline operator const T *() const { extern __shared__ int __smem[]; return (T *)__smem; }
};
template <> struct SharedMemory<double> {
    __device__ inline operator double *() { extern __shared__ double __smem_d[]; return (double *)__smem_d; }
};

template <class T, unsigned int blockSize, bool nIsPow2>
__global__ void reduce_samples(const T *g_idata, T *g_odata, unsigned int n) {
    T *sdata = SharedMemory<T>();
    unsigned int tid = threadIdx.x;
    unsigned int gridSize = blockSize * gridDim.x;
    T mySum = 0;
    if (nIsPow2) {
        unsigned int i = blockIdx.x * blockSize * 2 + threadIdx.x;
        gridSize = gridSize << 1;
        while (i < n) { mySum += g_idata[i]; if ((i + blockSize) < n) mySum += g_idata[i + blockSize]; i += gridSize; }
    } else {
        unsigned int i = blockIdx.x * blockSize + threadIdx.x;
        while (i < n) { mySum += g_idata[i]; i += gridSize; }
    }
    sdata[tid] = mySum;
    __syncthreads();
    if ((blockSize >= 512) && (tid < 256)) sdata[tid] = mySum = mySum + sdata[tid + 256];
    __syncthreads();
    if ((blockSize >= 256) && (tid < 128)) sdata[tid] = mySum = mySum + sdata[tid + 128];
    __syncthreads();
    if ((blockSize >= 128) && (tid < 64)) sdata[tid] = mySum = mySum + sdata[tid + 64];
    __syncthreads();
    if (tid < 32) {
        if (blockSize >= 64) mySum += sdata[tid + 32];
        for (int offset = warpSize / 2; offset > 0; offset /= 2) mySum += __shfl_down_sync(0xffffffff, mySum, offset);
    }
    if (tid == 0) g_odata[blockIdx.x] = mySum;
}

// ---------------------------------------------------------------- half and bfloat16 operators, mixed with float
extern "C" __global__ void half_operators(const __half* x, const __nv_bfloat16* b, float* out, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    __half h = x[i];
    __half two = __float2half(2.0f);
    __half r = h * two + h;       // half ops
    r += __float2half(1.0f);
    float f = __half2float(r) * 0.5f;
    bool pos = h > __float2half(0.0f);
    __nv_bfloat16 bb = b[i] * b[i] - __float2bfloat16(1.0f);
    out[4 * i] = f;
    out[4 * i + 1] = pos ? 1.0f : -1.0f;
    out[4 * i + 2] = __bfloat162float(bb);
    out[4 * i + 3] = __half2float(__hmul(__habs(h), __hneg(two)));
}

// half2 warp shuffle + __halves2half2, __low2half, __high2half, __lowhigh2highlow
extern "C" __global__ void half2_shuffle(const __half2* x, __half2* out, int n2) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    __half2 v = i < n2 ? x[i] : __float2half2_rn(0.0f);
    for (int off = 16; off > 0; off >>= 1) v = __hadd2(v, __shfl_xor_sync(0xffffffffu, v, off));
    __half2 sw = __lowhigh2highlow(i < n2 ? x[i] : v);
    if (i < n2) out[2 * i] = v, out[2 * i + 1] = __halves2half2(__high2half(sw), __low2half(sw));
}

// atomics: atomicExch float, atomicInc wrap, atomicDec, 64-bit And/Or, atomicMin long long, atomicAdd_block, atomicCAS ushort
extern "C" __global__ void atomics_misc(float* fx, unsigned* counters, unsigned long long* bits, long long* mn,
                                        unsigned short* us, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    atomicExch(fx, 3.5f);
    atomicInc(&counters[0], 9u);     // wraps to 0 after 9
    atomicDec(&counters[1], 5u);
    atomicOr(&bits[0], 1ull << (i % 64));
    atomicAnd(&bits[1], ~(1ull << (i % 64)));
    atomicMin(&mn[0], (long long)(1000 - i) * 1000000000ll);
    atomicAdd_block(&counters[2], 2u);
    atomicAdd_system(&counters[3], 3u);
    unsigned short old = us[0], assumed;
    do { assumed = old; old = atomicCAS(&us[0], assumed, (unsigned short)(assumed + 1)); } while (assumed != old);
}

// static __shared__ in a device function, __device__ global counter
__device__ unsigned int g_blocks_done = 0;
__device__ float block_sum(float v) {
    static __shared__ float partial[32];
    int lane = threadIdx.x % 32, wid = threadIdx.x / 32;
    for (int o = 16; o > 0; o /= 2) v += __shfl_down_sync(0xffffffff, v, o);
    if (lane == 0) partial[wid] = v;
    __syncthreads();
    v = threadIdx.x < blockDim.x / 32 ? partial[lane] : 0.0f;
    if (wid == 0) for (int o = 16; o > 0; o /= 2) v += __shfl_down_sync(0xffffffff, v, o);
    return v;
}
// single-pass threadfence reduction (CUDA samples' threadFenceReduction)
extern "C" __global__ void threadfence_sum(const float* x, float* partials, float* total, int n) {
    __shared__ bool am_last;
    float v = 0.0f;
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += blockDim.x * gridDim.x) v += x[i];
    v = block_sum(v);
    if (threadIdx.x == 0) {
        partials[blockIdx.x] = v;
        __threadfence();
        unsigned int ticket = atomicInc(&g_blocks_done, gridDim.x);
        am_last = (ticket == gridDim.x - 1);
    }
    __syncthreads();
    if (am_last) {
        float s = threadIdx.x < gridDim.x ? partials[threadIdx.x] : 0.0f;
        s = block_sum(s);
        if (threadIdx.x == 0) { *total = s; g_blocks_done = 0; }
    }
}

// A partial warp's shuffle with a full mask inside a bounds check: wrong (the mask names lanes that left)
extern "C" __global__ void shfl_full_mask_in_branch(const float* x, float* out, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) {
        float v = x[i];
        for (int o = 16; o > 0; o /= 2) v += __shfl_down_sync(0xffffffff, v, o);
        if (threadIdx.x % 32 == 0) out[i / 32] = v;
    }
}

// ---------------------------------------------------------------- single-pass scan across blocks
// Single-pass prefix sum with decoupled look-back (Merrill & Garland), as tutorials write it: a dynamic tile id
// from an atomic ticket, each tile publishes its aggregate (flag A) then its inclusive prefix (flag P), and
// looks back over its predecessors' published values, spinning on a tile whose status is still invalid.
#define FLAG_INVALID 0u
#define FLAG_AGGREGATE 1u
#define FLAG_PREFIX 2u
struct __align__(8) TileStatus { unsigned flag; float value; };

__device__ unsigned long long pack(unsigned flag, float v) {
    return ((unsigned long long)__float_as_uint(v) << 32) | flag;
}

extern "C" __global__ void lookback_scan(const float* in, float* out, unsigned long long* status, unsigned* ticket,
                                         int n) {
    __shared__ int tile_id;
    __shared__ float s[256];
    __shared__ float exclusive;
    if (threadIdx.x == 0) tile_id = atomicAdd(ticket, 1u);
    __syncthreads();
    const int tile = tile_id;
    const int i = tile * blockDim.x + threadIdx.x;
    s[threadIdx.x] = i < n ? in[i] : 0.0f;
    __syncthreads();
    for (int d = 1; d < blockDim.x; d <<= 1) {  // Hillis-Steele inclusive scan of the tile
        float t = threadIdx.x >= d ? s[threadIdx.x - d] : 0.0f;
        __syncthreads();
        s[threadIdx.x] += t;
        __syncthreads();
    }
    if (threadIdx.x == 0) {
        const float aggregate = s[blockDim.x - 1];
        if (tile == 0) {
            atomicExch(&status[0], pack(FLAG_PREFIX, aggregate));
            exclusive = 0.0f;
        } else {
            atomicExch(&status[tile], pack(FLAG_AGGREGATE, aggregate));
            float prefix = 0.0f;
            for (int p = tile - 1; p >= 0; --p) {
                unsigned long long st;
                do { st = atomicAdd(&status[p], 0ull); } while ((unsigned)st == FLAG_INVALID);
                prefix += __uint_as_float((unsigned)(st >> 32));
                if ((unsigned)st == FLAG_PREFIX) break;
            }
            atomicExch(&status[tile], pack(FLAG_PREFIX, aggregate + prefix));
            exclusive = prefix;
        }
    }
    __syncthreads();
    if (i < n) out[i] = s[threadIdx.x] + exclusive;
}
