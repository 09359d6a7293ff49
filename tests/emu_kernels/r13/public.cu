// Round 13: kernels written the way CUDA code is published (CUB examples, the cooperative-groups and warp-primitive
// blog posts, half2 code, atomicCAS loops from the programming guide, grid-stride loops), unedited for the emulator.
#include <cassert>
#include <cstdio>
#include <cstdint>
#include <cooperative_groups.h>
#include <cooperative_groups/reduce.h>
#include <cub/cub.cuh>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

namespace cg = cooperative_groups;

// ---------------------------------------------------------------- CUB block scan and block radix sort
template <int BLOCK_THREADS, int ITEMS_PER_THREAD>
__global__ void block_scan_kernel(const int* __restrict__ in, int* __restrict__ out, int* __restrict__ block_sums,
                                  int n) {
    using BlockLoad = cub::BlockLoad<int, BLOCK_THREADS, ITEMS_PER_THREAD, cub::BLOCK_LOAD_TRANSPOSE>;
    using BlockStore = cub::BlockStore<int, BLOCK_THREADS, ITEMS_PER_THREAD, cub::BLOCK_STORE_TRANSPOSE>;
    using BlockScan = cub::BlockScan<int, BLOCK_THREADS>;
    __shared__ union {
        typename BlockLoad::TempStorage load;
        typename BlockStore::TempStorage store;
        typename BlockScan::TempStorage scan;
    } temp;
    constexpr int TILE = BLOCK_THREADS * ITEMS_PER_THREAD;
    const int offset = blockIdx.x * TILE;
    const int valid = min(TILE, n - offset);
    int items[ITEMS_PER_THREAD];
    BlockLoad(temp.load).Load(in + offset, items, valid, 0);
    __syncthreads();
    int aggregate;
    BlockScan(temp.scan).ExclusiveSum(items, items, aggregate);
    __syncthreads();
    BlockStore(temp.store).Store(out + offset, items, valid);
    if (threadIdx.x == 0) block_sums[blockIdx.x] = aggregate;
}

template <int BLOCK_THREADS, int ITEMS_PER_THREAD>
__global__ void block_radix_sort_kernel(const unsigned int* keys_in, unsigned int* keys_out, int n) {
    using BlockRadixSort = cub::BlockRadixSort<unsigned int, BLOCK_THREADS, ITEMS_PER_THREAD>;
    __shared__ typename BlockRadixSort::TempStorage temp_storage;
    unsigned int keys[ITEMS_PER_THREAD];
    const int base = blockIdx.x * BLOCK_THREADS * ITEMS_PER_THREAD;
    for (int k = 0; k < ITEMS_PER_THREAD; ++k) {  // blocked arrangement, the tail padded with the largest key
        const int i = base + threadIdx.x * ITEMS_PER_THREAD + k;
        keys[k] = i < n ? keys_in[i] : 0xFFFFFFFFu;
    }
    BlockRadixSort(temp_storage).Sort(keys);
    for (int k = 0; k < ITEMS_PER_THREAD; ++k) {
        const int i = base + threadIdx.x * ITEMS_PER_THREAD + k;
        if (i < n) keys_out[i] = keys[k];
    }
}

// ---------------------------------------------------------------- cooperative groups: tiles, shfl_down, reduce
__device__ float tile_sum(cg::thread_block_tile<32> tile, float v) {
    for (int offset = tile.size() / 2; offset > 0; offset /= 2) v += tile.shfl_down(v, offset);
    return v;  // lane 0 holds the sum
}

extern "C" __global__ void cg_sum_shfl_down(const float* x, float* total, int n) {
    cg::thread_block block = cg::this_thread_block();
    cg::thread_block_tile<32> tile = cg::tiled_partition<32>(block);
    float v = 0.0f;
    for (int i = block.group_index().x * block.size() + block.thread_rank(); i < n; i += gridDim.x * block.size())
        v += x[i];
    v = tile_sum(tile, v);
    if (tile.thread_rank() == 0) atomicAdd(total, v);
}

extern "C" __global__ void cg_row_max_and_sum(const float* x, float* row_max, float* row_sum, int rows, int cols) {
    // one 16-thread tile per row, cg::reduce with cg::greater and cg::plus
    auto block = cg::this_thread_block();
    auto tile = cg::tiled_partition<16>(block);
    const int row = blockIdx.x * (blockDim.x / 16) + tile.meta_group_rank();
    if (row >= rows) return;
    float m = -INFINITY, s = 0.0f;
    for (int c = tile.thread_rank(); c < cols; c += tile.size()) {
        m = fmaxf(m, x[row * cols + c]);
        s += x[row * cols + c];
    }
    m = cg::reduce(tile, m, cg::greater<float>());
    s = cg::reduce(tile, s, cg::plus<float>());
    if (tile.thread_rank() == 0) {
        row_max[row] = m;
        row_sum[row] = s;
    }
}

// ---------------------------------------------------------------- warp primitives of compute capability 7.0 / 8.0
// Warp-aggregated histogram (the __match_any_sync blog pattern): the lanes holding one key elect a leader that adds
// how many they are.
extern "C" __global__ void match_any_histogram(const int* keys, unsigned int* bins, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    const unsigned active = __ballot_sync(0xffffffffu, i < n);
    if (i >= n) return;
    const int key = keys[i];
    const unsigned peers = __match_any_sync(active, key);
    const int leader = __ffs(peers) - 1;
    const int lane = threadIdx.x % warpSize;
    if (lane == leader) atomicAdd(&bins[key], __popc(peers));
}

extern "C" __global__ void reduce_add_sync_sum(const unsigned* x, unsigned long long* total, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    const unsigned v = i < n ? x[i] : 0u;
    const unsigned warp_total = __reduce_add_sync(0xffffffffu, v);
    const unsigned warp_max = __reduce_max_sync(0xffffffffu, v);
    if ((threadIdx.x & 31) == 0) {
        atomicAdd(&total[0], (unsigned long long)warp_total);
        atomicMax(&total[1], (unsigned long long)warp_max);
    }
}

// Inclusive warp scan with __shfl_up_sync, then a block scan of the warp totals (the classic two-level scan).
extern "C" __global__ void warp_shfl_up_scan(const float* x, float* y, int n) {
    __shared__ float warp_totals[32];
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    float v = i < n ? x[i] : 0.0f;
#pragma unroll
    for (int d = 1; d < 32; d <<= 1) {
        const float up = __shfl_up_sync(0xffffffffu, v, d);
        if (lane >= d) v += up;
    }
    if (lane == 31) warp_totals[warp] = v;
    __syncthreads();
    if (warp == 0) {
        float t = lane < blockDim.x / 32 ? warp_totals[lane] : 0.0f;
        for (int d = 1; d < 32; d <<= 1) {
            const float up = __shfl_up_sync(0xffffffffu, t, d);
            if (lane >= d) t += up;
        }
        warp_totals[lane] = t;
    }
    __syncthreads();
    if (warp > 0) v += warp_totals[warp - 1];
    if (i < n) y[i] = v;
}

// Segmented sums of 8 lanes: __shfl_down_sync with a width.
extern "C" __global__ void segmented_sum8(const float* x, float* sums, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    float v = i < n ? x[i] : 0.0f;
    for (int offset = 4; offset > 0; offset >>= 1) v += __shfl_down_sync(0xffffffffu, v, offset, 8);
    if ((threadIdx.x & 7) == 0 && i < n) sums[i / 8] = v;
}

// Stream compaction with warp-aggregated atomics over coalesced_threads() (the "CUDA pro tip" filter).
__device__ int atomic_agg_inc(int* counter) {
    cg::coalesced_group active = cg::coalesced_threads();
    int res;
    if (active.thread_rank() == 0) res = atomicAdd(counter, active.size());
    return active.shfl(res, 0) + active.thread_rank();
}

extern "C" __global__ void filter_positive(const float* x, float* out, int* count, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n && x[i] > 0.0f) out[atomic_agg_inc(count)] = x[i];
}

// ---------------------------------------------------------------- half2 and bfloat162 arithmetic
extern "C" __global__ void half2_fma_div(const __half2* a, const __half2* b, const __half2* c, const __half2* d,
                                         __half2* out, int n2) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n2) out[i] = __h2div(__hfma2(a[i], b[i], c[i]), d[i]);
}

extern "C" __global__ void bf162_scale_add(const __nv_bfloat162* x, const __nv_bfloat162* y, float alpha,
                                           __nv_bfloat162* out, float* sums, int n2) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n2) return;
    const __nv_bfloat162 a2 = __float2bfloat162_rn(alpha);
    const __nv_bfloat162 r = __hadd2(__hmul2(a2, x[i]), y[i]);
    out[i] = r;
    const float2 f = __bfloat1622float2(r);
    sums[i] = f.x + f.y;
}

// Sums of half2 pairs into a few bins with atomicAdd(__half2*) (sm_60).
extern "C" __global__ void half2_atomic_bins(const __half2* x, const int* bin, __half2* bins, int n2) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n2) atomicAdd(&bins[bin[i]], x[i]);
}

// ---------------------------------------------------------------- atomicCAS loops
__device__ float atomic_max_float(float* address, float val) {
    int* address_as_int = (int*)address;
    int old = *address_as_int, assumed;
    do {
        assumed = old;
        if (__int_as_float(assumed) >= val) break;
        old = atomicCAS(address_as_int, assumed, __float_as_int(val));
    } while (assumed != old);
    return __int_as_float(old);
}

// The programming guide's atomicAdd for double before sm_60.
__device__ double atomic_add_double(double* address, double val) {
    unsigned long long int* address_as_ull = (unsigned long long int*)address;
    unsigned long long int old = *address_as_ull, assumed;
    do {
        assumed = old;
        old = atomicCAS(address_as_ull, assumed, __double_as_longlong(val + __longlong_as_double(assumed)));
    } while (assumed != old);
    return __longlong_as_double(old);
}

extern "C" __global__ void cas_max_and_sum(const float* x, const double* w, float* max_out, double* sum_out, int n) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += blockDim.x * gridDim.x) {
        atomic_max_float(max_out, x[i]);
        atomic_add_double(sum_out, w[i]);
    }
}

// ---------------------------------------------------------------- __ldg, __launch_bounds__, size_t grid-stride
extern "C" __global__ void __launch_bounds__(256, 2)
    saxpy_ldg_grid_stride(size_t n, float a, const float* __restrict__ x, float* __restrict__ y) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)blockDim.x * gridDim.x)
        y[i] = a * __ldg(&x[i]) + y[i];
}

// ---------------------------------------------------------------- templates with constexpr, if constexpr
template <typename T>
struct Square {
    __device__ constexpr T operator()(T v) const { return v * v; }
};

template <typename T, int BLOCK, bool SQUARED>
__global__ void templated_block_sum(const T* x, T* out, int n) {
    static_assert((BLOCK & (BLOCK - 1)) == 0, "BLOCK must be a power of two");
    constexpr int kWarps = BLOCK / 32;
    __shared__ T partial[kWarps];
    T v = T(0);
    for (int i = blockIdx.x * BLOCK + threadIdx.x; i < n; i += BLOCK * gridDim.x) {
        if constexpr (SQUARED) v += Square<T>{}(x[i]);
        else v += x[i];
    }
    for (int offset = 16; offset > 0; offset /= 2) v += __shfl_xor_sync(0xffffffffu, v, offset);
    if (threadIdx.x % 32 == 0) partial[threadIdx.x / 32] = v;
    __syncthreads();
    if (threadIdx.x == 0) {
        T s = T(0);
#pragma unroll
        for (int w = 0; w < kWarps; ++w) s += partial[w];
        out[blockIdx.x] = s;
    }
}

// ---------------------------------------------------------------- dynamic shared memory, extern alignas
// Two arrays carved out of one extern buffer: cols floats of a row, then cols ints (argmax candidates).
extern "C" __global__ void row_argmax_dynamic_smem(const float* x, int* argmax, int rows, int cols) {
    extern __shared__ alignas(16) unsigned char smem[];
    float* vals = reinterpret_cast<float*>(smem);
    int* idx = reinterpret_cast<int*>(vals + blockDim.x);
    const int row = blockIdx.x;
    if (row >= rows) return;
    float best = -INFINITY;
    int best_i = -1;
    for (int c = threadIdx.x; c < cols; c += blockDim.x) {
        const float v = x[row * cols + c];
        if (v > best) { best = v; best_i = c; }
    }
    vals[threadIdx.x] = best;
    idx[threadIdx.x] = best_i;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s) {
            const float o = vals[threadIdx.x + s];
            const int oi = idx[threadIdx.x + s];
            if (o > vals[threadIdx.x] || (o == vals[threadIdx.x] && oi >= 0 && oi < idx[threadIdx.x])) {
                vals[threadIdx.x] = o;
                idx[threadIdx.x] = oi;
            }
        }
        __syncthreads();
    }
    if (threadIdx.x == 0) argmax[row] = idx[0];
}

// ---------------------------------------------------------------- __constant__ stencil with a shared halo
#define RADIUS 3
__constant__ float c_weights[2 * RADIUS + 1];

extern "C" __global__ void conv1d_constant_halo(const float* in, float* out, int n) {
    extern __shared__ float tile[];  // blockDim.x + 2 * RADIUS
    const int g = blockIdx.x * blockDim.x + threadIdx.x;
    const int l = threadIdx.x + RADIUS;
    tile[l] = g < n ? in[g] : 0.0f;
    if (threadIdx.x < RADIUS) {
        const int left = g - RADIUS, right = g + blockDim.x;
        tile[l - RADIUS] = left >= 0 && left < n ? in[left] : 0.0f;
        tile[l + blockDim.x] = right < n ? in[right] : 0.0f;
    }
    __syncthreads();
    if (g >= n) return;
    float acc = 0.0f;
#pragma unroll
    for (int k = -RADIUS; k <= RADIUS; ++k) acc += c_weights[k + RADIUS] * tile[l + k];
    out[g] = acc;
}

// ---------------------------------------------------------------- byte histogram through uchar4 __ldg loads
extern "C" __global__ void byte_histogram_uchar4(const uchar4* data, unsigned int* hist, int n4) {
    __shared__ unsigned int local[256];
    for (int b = threadIdx.x; b < 256; b += blockDim.x) local[b] = 0;
    __syncthreads();
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n4; i += blockDim.x * gridDim.x) {
        const uchar4 v = __ldg(&data[i]);
        atomicAdd(&local[v.x], 1u);
        atomicAdd(&local[v.y], 1u);
        atomicAdd(&local[v.z], 1u);
        atomicAdd(&local[v.w], 1u);
    }
    __syncthreads();
    for (int b = threadIdx.x; b < 256; b += blockDim.x) atomicAdd(&hist[b], local[b]);
}

// ---------------------------------------------------------------- printf and assert in device code
extern "C" __global__ void print_block_sums(const int* x, int n) {
    __shared__ int s;
    if (threadIdx.x == 0) s = 0;
    __syncthreads();
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) atomicAdd(&s, x[i]);
    __syncthreads();
    if (threadIdx.x == 0) printf("block %d: sum=%d mean=%.3f\n", blockIdx.x, s, (float)s / blockDim.x);
}

extern "C" __global__ void normalize_checked(float* x, const float* norms, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) {
        assert(norms[i] > 0.0f);
        x[i] /= norms[i];
    }
}

// ---------------------------------------------------------------- more of CUB's block collectives
// CUB's BlockHistogram example: 4 bytes per thread into 256 shared bins, merged into the global histogram.
template <int BLOCK_THREADS, int ITEMS_PER_THREAD, cub::BlockHistogramAlgorithm ALGORITHM>
__global__ void block_histogram_kernel(const unsigned char* d_samples, unsigned int* d_histogram, int n) {
    using BlockHistogramT = cub::BlockHistogram<unsigned char, BLOCK_THREADS, ITEMS_PER_THREAD, 256, ALGORITHM>;
    __shared__ typename BlockHistogramT::TempStorage temp_storage;
    __shared__ unsigned int smem_histogram[256];
    unsigned char data[ITEMS_PER_THREAD];
    const int base = blockIdx.x * BLOCK_THREADS * ITEMS_PER_THREAD;
    int counted = 0;
    for (int k = 0; k < ITEMS_PER_THREAD; ++k) {  // a ragged tail is counted into bin 0, then taken back out
        const int i = base + threadIdx.x * ITEMS_PER_THREAD + k;
        data[k] = i < n ? d_samples[i] : 0;
        counted += i < n ? 0 : 1;
    }
    BlockHistogramT(temp_storage).Histogram(data, smem_histogram);
    __syncthreads();
    if (counted) atomicAdd(&smem_histogram[0], (unsigned int)-counted);
    __syncthreads();
    for (int b = threadIdx.x; b < 256; b += BLOCK_THREADS) atomicAdd(&d_histogram[b], smem_histogram[b]);
}

// Run-length encoding of a sorted tile: BlockDiscontinuity's head and tail flags, a BlockScan of the heads for
// each run's slot, BlockAdjacentDifference for the gaps between neighbours.
struct NotEqual {
    __device__ bool operator()(const int& a, const int& b) const { return a != b; }
};

template <int BLOCK_THREADS, int ITEMS>
__global__ void run_length_encode(const int* in, int* run_values, int* run_starts, int* run_ends, int* num_runs,
                                  int* gaps, int n) {
    using Discontinuity = cub::BlockDiscontinuity<int, BLOCK_THREADS>;
    using Scan = cub::BlockScan<int, BLOCK_THREADS>;
    using Difference = cub::BlockAdjacentDifference<int, BLOCK_THREADS>;
    __shared__ typename Discontinuity::TempStorage disc_temp;
    __shared__ typename Scan::TempStorage scan_temp;
    __shared__ typename Difference::TempStorage diff_temp;
    int items[ITEMS], heads[ITEMS], tails[ITEMS], slots[ITEMS], diffs[ITEMS];
    for (int k = 0; k < ITEMS; ++k) {
        const int i = threadIdx.x * ITEMS + k;
        items[k] = i < n ? in[i] : INT_MAX;  // the padding is one run past the end, dropped below
    }
    Discontinuity(disc_temp).FlagHeadsAndTails(heads, tails, items, NotEqual());
    int total;
    Scan(scan_temp).ExclusiveSum(heads, slots, total);
    Difference(diff_temp).SubtractLeftPartialTile(items, diffs, [](int a, int b) { return a - b; }, n);
    for (int k = 0; k < ITEMS; ++k) {
        const int i = threadIdx.x * ITEMS + k;
        if (i >= n) continue;
        if (heads[k]) {
            run_values[slots[k]] = items[k];
            run_starts[slots[k]] = i;
        }
        if (tails[k]) run_ends[slots[k] + heads[k] - 1] = i + 1;  // the run's slot: the heads up to it, less one
        gaps[i] = diffs[k];
    }
    if (threadIdx.x == 0) *num_runs = total - (n < BLOCK_THREADS * ITEMS ? 1 : 0);
}

// BlockMergeSort of (key, value) pairs by a custom comparator (descending |key|), a ragged tile padded with
// oob_default; BlockShuffle's Up for each item's left neighbour and Rotate of one value per thread.
struct AbsGreater {
    __device__ bool operator()(const float& a, const float& b) const { return fabsf(a) > fabsf(b); }
};

template <int BLOCK_THREADS, int ITEMS>
__global__ void merge_sort_and_shuffle(const float* keys_in, float* keys_out, int* index_out, float* left_out,
                                       int* rotated, int n) {
    using Sort = cub::BlockMergeSort<float, BLOCK_THREADS, ITEMS, int>;
    using Shuffle = cub::BlockShuffle<float, BLOCK_THREADS>;
    using IntShuffle = cub::BlockShuffle<int, BLOCK_THREADS>;
    __shared__ typename Sort::TempStorage sort_temp;
    __shared__ typename Shuffle::TempStorage shuffle_temp;
    __shared__ typename IntShuffle::TempStorage int_temp;
    float keys[ITEMS], left[ITEMS];
    int values[ITEMS];
    for (int k = 0; k < ITEMS; ++k) {
        const int i = threadIdx.x * ITEMS + k;
        keys[k] = i < n ? keys_in[i] : 0.0f;
        values[k] = i;
    }
    Sort(sort_temp).StableSort(keys, values, AbsGreater(), n, 0.0f);
    for (int k = 0; k < ITEMS; ++k) left[k] = -1.0f;
    Shuffle(shuffle_temp).Up(keys, left);
    int next_thread;
    IntShuffle(int_temp).Rotate((int)threadIdx.x * 10, next_thread, 3);
    for (int k = 0; k < ITEMS; ++k) {
        const int i = threadIdx.x * ITEMS + k;
        keys_out[i] = keys[k];
        index_out[i] = values[k];
        left_out[i] = left[k];
    }
    rotated[threadIdx.x] = next_thread;
}

// CUB's warp-level tile pipeline: WarpLoad (transposed), WarpMergeSort, WarpExchange to striped, WarpStore (striped):
// each logical warp sorts its own segment of the input.
struct Less {
    __device__ bool operator()(const int& a, const int& b) const { return a < b; }
};

template <int WARP_THREADS, int ITEMS, int WARPS>
__global__ void warp_sort_segments(const int* in, int* out, int n) {
    using Load = cub::WarpLoad<int, ITEMS, cub::WARP_LOAD_TRANSPOSE, WARP_THREADS>;
    using Sort = cub::WarpMergeSort<int, ITEMS, WARP_THREADS>;
    using Exchange = cub::WarpExchange<int, ITEMS, WARP_THREADS>;
    using Store = cub::WarpStore<int, ITEMS, cub::WARP_STORE_STRIPED, WARP_THREADS>;
    __shared__ typename Load::TempStorage load_temp[WARPS];
    __shared__ typename Sort::TempStorage sort_temp[WARPS];
    __shared__ typename Exchange::TempStorage exchange_temp[WARPS];
    __shared__ typename Store::TempStorage store_temp[WARPS];
    const int warp = threadIdx.x / WARP_THREADS;
    constexpr int TILE = WARP_THREADS * ITEMS;
    const int offset = (blockIdx.x * WARPS + warp) * TILE;
    const int valid = max(0, min(TILE, n - offset));
    int keys[ITEMS];
    Load(load_temp[warp]).Load(in + offset, keys, valid, INT_MAX);
    Sort(sort_temp[warp]).Sort(keys, Less(), valid, INT_MAX);
    Exchange(exchange_temp[warp]).BlockedToStriped(keys, keys);
    Store(store_temp[warp]).Store(out + offset, keys, valid);
}

// CUB's BlockRunLengthDecode example: runs (value, length) in a blocked arrangement, decoded window by window.
template <int BLOCK_THREADS, int RUNS_PER_THREAD, int DECODED_ITEMS_PER_THREAD>
__global__ void run_length_decode(const float* values, const int* lengths, int num_runs, float* out,
                                  unsigned* relative_offsets, unsigned* total_out) {
    using Decode = cub::BlockRunLengthDecode<float, BLOCK_THREADS, RUNS_PER_THREAD, DECODED_ITEMS_PER_THREAD>;
    __shared__ typename Decode::TempStorage temp_storage;
    float run_values[RUNS_PER_THREAD];
    int run_lengths[RUNS_PER_THREAD];
    for (int k = 0; k < RUNS_PER_THREAD; ++k) {
        const int r = threadIdx.x * RUNS_PER_THREAD + k;
        run_values[k] = r < num_runs ? values[r] : 0.0f;
        run_lengths[k] = r < num_runs ? lengths[r] : 0;
    }
    unsigned total;
    Decode decode(temp_storage, run_values, run_lengths, total);
    constexpr unsigned WINDOW = BLOCK_THREADS * DECODED_ITEMS_PER_THREAD;
    for (unsigned window = 0; window < total; window += WINDOW) {
        float items[DECODED_ITEMS_PER_THREAD];
        unsigned relative[DECODED_ITEMS_PER_THREAD];
        decode.RunLengthDecode(items, relative, window);
        for (int i = 0; i < DECODED_ITEMS_PER_THREAD; ++i) {
            const unsigned position = window + threadIdx.x * DECODED_ITEMS_PER_THREAD + i;
            if (position < total) {
                out[position] = items[i];
                relative_offsets[position] = relative[i];
            }
        }
    }
    if (threadIdx.x == 0) *total_out = total;
}
