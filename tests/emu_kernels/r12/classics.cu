// Round 12: the classic CUDA kernels of talks, books and blog posts, written the way their authors write them
// (from memory of their public style): Mark Harris's parallel reduction 1-7, GPU Gems 3's Blelloch scan,
// the padded-tile transpose, a privatized histogram, a radix sort split, a butterfly softmax, a half2
// batched GEMV and a warp bitonic top-k.  The volatile warp unroll makes the emulator build this file in its
// lockstep variant.  Run by tests/test_emulator_kernels_r12.py.  One file, one compile.
#include <cuda_runtime.h>
#include <cuda_fp16.h>
#include <cooperative_groups.h>

namespace cg = cooperative_groups;

#define FULL_MASK 0xffffffff

// ===================================== Mark Harris: parallel reduction ====================================
// Each kernel reduces blockDim.x (or 2 * blockDim.x, or a grid-stride share) elements to g_odata[blockIdx.x].

// ---- reduction #1: interleaved addressing, divergent branching ----
extern "C" __global__ void reduce0(const float *g_idata, float *g_odata, unsigned int n) {
    extern __shared__ float sdata[];
    unsigned int tid = threadIdx.x;
    unsigned int i = blockIdx.x * blockDim.x + threadIdx.x;
    sdata[tid] = (i < n) ? g_idata[i] : 0;
    __syncthreads();
    // do reduction in shared mem
    for (unsigned int s = 1; s < blockDim.x; s *= 2) {
        if (tid % (2 * s) == 0) {
            sdata[tid] += sdata[tid + s];
        }
        __syncthreads();
    }
    // write result for this block to global mem
    if (tid == 0) g_odata[blockIdx.x] = sdata[0];
}

// ---- reduction #2: interleaved addressing, strided index (bank conflicts) ----
extern "C" __global__ void reduce1(const float *g_idata, float *g_odata, unsigned int n) {
    extern __shared__ float sdata[];
    unsigned int tid = threadIdx.x;
    unsigned int i = blockIdx.x * blockDim.x + threadIdx.x;
    sdata[tid] = (i < n) ? g_idata[i] : 0;
    __syncthreads();
    for (unsigned int s = 1; s < blockDim.x; s *= 2) {
        int index = 2 * s * tid;
        if (index < blockDim.x) {
            sdata[index] += sdata[index + s];
        }
        __syncthreads();
    }
    if (tid == 0) g_odata[blockIdx.x] = sdata[0];
}

// ---- reduction #3: sequential addressing ----
extern "C" __global__ void reduce2(const float *g_idata, float *g_odata, unsigned int n) {
    extern __shared__ float sdata[];
    unsigned int tid = threadIdx.x;
    unsigned int i = blockIdx.x * blockDim.x + threadIdx.x;
    sdata[tid] = (i < n) ? g_idata[i] : 0;
    __syncthreads();
    for (unsigned int s = blockDim.x / 2; s > 0; s >>= 1) {
        if (tid < s) {
            sdata[tid] += sdata[tid + s];
        }
        __syncthreads();
    }
    if (tid == 0) g_odata[blockIdx.x] = sdata[0];
}

// ---- reduction #4: first add during global load (half the blocks) ----
extern "C" __global__ void reduce3(const float *g_idata, float *g_odata, unsigned int n) {
    extern __shared__ float sdata[];
    unsigned int tid = threadIdx.x;
    unsigned int i = blockIdx.x * (blockDim.x * 2) + threadIdx.x;
    float mySum = (i < n) ? g_idata[i] : 0;
    if (i + blockDim.x < n) mySum += g_idata[i + blockDim.x];
    sdata[tid] = mySum;
    __syncthreads();
    for (unsigned int s = blockDim.x / 2; s > 0; s >>= 1) {
        if (tid < s) {
            sdata[tid] = mySum = mySum + sdata[tid + s];
        }
        __syncthreads();
    }
    if (tid == 0) g_odata[blockIdx.x] = mySum;
}

// ---- reduction #5: unroll the last warp (volatile: the warp's lanes in lockstep, no __syncwarp) ----
__device__ void warpReduce(volatile float *sdata, unsigned int tid) {
    sdata[tid] += sdata[tid + 32];
    sdata[tid] += sdata[tid + 16];
    sdata[tid] += sdata[tid + 8];
    sdata[tid] += sdata[tid + 4];
    sdata[tid] += sdata[tid + 2];
    sdata[tid] += sdata[tid + 1];
}

extern "C" __global__ void reduce4(const float *g_idata, float *g_odata, unsigned int n) {
    extern __shared__ float sdata[];
    unsigned int tid = threadIdx.x;
    unsigned int i = blockIdx.x * (blockDim.x * 2) + threadIdx.x;
    float mySum = (i < n) ? g_idata[i] : 0;
    if (i + blockDim.x < n) mySum += g_idata[i + blockDim.x];
    sdata[tid] = mySum;
    __syncthreads();
    for (unsigned int s = blockDim.x / 2; s > 32; s >>= 1) {
        if (tid < s) sdata[tid] += sdata[tid + s];
        __syncthreads();
    }
    if (tid < 32) warpReduce(sdata, tid);
    if (tid == 0) g_odata[blockIdx.x] = sdata[0];
}

// ---- reduction #6: completely unrolled, blockSize a template parameter ----
template <unsigned int blockSize>
__device__ void warpReduce(volatile float *sdata, unsigned int tid) {
    if (blockSize >= 64) sdata[tid] += sdata[tid + 32];
    if (blockSize >= 32) sdata[tid] += sdata[tid + 16];
    if (blockSize >= 16) sdata[tid] += sdata[tid + 8];
    if (blockSize >= 8) sdata[tid] += sdata[tid + 4];
    if (blockSize >= 4) sdata[tid] += sdata[tid + 2];
    if (blockSize >= 2) sdata[tid] += sdata[tid + 1];
}

template <unsigned int blockSize>
__global__ void reduce5(const float *g_idata, float *g_odata, unsigned int n) {
    extern __shared__ float sdata[];
    unsigned int tid = threadIdx.x;
    unsigned int i = blockIdx.x * (blockSize * 2) + threadIdx.x;
    float mySum = (i < n) ? g_idata[i] : 0;
    if (i + blockSize < n) mySum += g_idata[i + blockSize];
    sdata[tid] = mySum;
    __syncthreads();
    if (blockSize >= 512) { if (tid < 256) { sdata[tid] += sdata[tid + 256]; } __syncthreads(); }
    if (blockSize >= 256) { if (tid < 128) { sdata[tid] += sdata[tid + 128]; } __syncthreads(); }
    if (blockSize >= 128) { if (tid < 64) { sdata[tid] += sdata[tid + 64]; } __syncthreads(); }
    if (tid < 32) warpReduce<blockSize>(sdata, tid);
    if (tid == 0) g_odata[blockIdx.x] = sdata[0];
}

// ---- reduction #7: multiple elements per thread, a grid-stride while loop ----
template <unsigned int blockSize, bool nIsPow2>
__global__ void reduce6(const float *g_idata, float *g_odata, unsigned int n) {
    extern __shared__ float sdata[];
    unsigned int tid = threadIdx.x;
    unsigned int i = blockIdx.x * (blockSize * 2) + threadIdx.x;
    unsigned int gridSize = blockSize * 2 * gridDim.x;
    float mySum = 0;
    while (i < n) {
        mySum += g_idata[i];
        // ensure we don't read out of bounds -- this is optimized away for powerOf2 sized arrays
        if (nIsPow2 || i + blockSize < n) mySum += g_idata[i + blockSize];
        i += gridSize;
    }
    sdata[tid] = mySum;
    __syncthreads();
    if (blockSize >= 512) { if (tid < 256) { sdata[tid] = mySum = mySum + sdata[tid + 256]; } __syncthreads(); }
    if (blockSize >= 256) { if (tid < 128) { sdata[tid] = mySum = mySum + sdata[tid + 128]; } __syncthreads(); }
    if (blockSize >= 128) { if (tid < 64) { sdata[tid] = mySum = mySum + sdata[tid + 64]; } __syncthreads(); }
    if (tid < 32) warpReduce<blockSize>(sdata, tid);
    if (tid == 0) g_odata[blockIdx.x] = sdata[0];
}

// ===================================== GPU Gems 3: the Blelloch scan =====================================
// A work-efficient exclusive scan of 2 * blockDim.x elements per block, shared memory padded against bank
// conflicts; each block's total goes to sums, and add_block_sums adds the scanned totals (the large-array
// scheme).  Elements past n read as 0.
#define NUM_BANKS 32
#define LOG_NUM_BANKS 5
#define CONFLICT_FREE_OFFSET(n) ((n) >> LOG_NUM_BANKS)

extern "C" __global__ void prescan(float *g_odata, const float *g_idata, float *sums, int n) {
    extern __shared__ float temp[];  // allocated on invocation
    int thid = threadIdx.x;
    int block_n = 2 * blockDim.x;
    int base = blockIdx.x * block_n;
    int offset = 1;
    int ai = thid;
    int bi = thid + (block_n / 2);
    int bankOffsetA = CONFLICT_FREE_OFFSET(ai);
    int bankOffsetB = CONFLICT_FREE_OFFSET(bi);
    temp[ai + bankOffsetA] = base + ai < n ? g_idata[base + ai] : 0;
    temp[bi + bankOffsetB] = base + bi < n ? g_idata[base + bi] : 0;

    for (int d = block_n >> 1; d > 0; d >>= 1) {  // build sum in place up the tree
        __syncthreads();
        if (thid < d) {
            int ai = offset * (2 * thid + 1) - 1;
            int bi = offset * (2 * thid + 2) - 1;
            ai += CONFLICT_FREE_OFFSET(ai);
            bi += CONFLICT_FREE_OFFSET(bi);
            temp[bi] += temp[ai];
        }
        offset *= 2;
    }

    if (thid == 0) {  // clear the last element
        sums[blockIdx.x] = temp[block_n - 1 + CONFLICT_FREE_OFFSET(block_n - 1)];
        temp[block_n - 1 + CONFLICT_FREE_OFFSET(block_n - 1)] = 0;
    }

    for (int d = 1; d < block_n; d *= 2) {  // traverse down tree & build scan
        offset >>= 1;
        __syncthreads();
        if (thid < d) {
            int ai = offset * (2 * thid + 1) - 1;
            int bi = offset * (2 * thid + 2) - 1;
            ai += CONFLICT_FREE_OFFSET(ai);
            bi += CONFLICT_FREE_OFFSET(bi);
            float t = temp[ai];
            temp[ai] = temp[bi];
            temp[bi] += t;
        }
    }
    __syncthreads();
    if (base + ai < n) g_odata[base + ai] = temp[ai + bankOffsetA];
    if (base + bi < n) g_odata[base + bi] = temp[bi + bankOffsetB];
}

extern "C" __global__ void add_block_sums(float *g_odata, const float *scanned_sums, int n) {
    int i = blockIdx.x * 2 * blockDim.x + threadIdx.x;
    float add = scanned_sums[blockIdx.x];
    if (i < n) g_odata[i] += add;
    if (i + blockDim.x < n) g_odata[i + blockDim.x] += add;
}

// ============================ the matrix transpose with a padded shared tile ============================
const int TILE_DIM = 32;
const int BLOCK_ROWS = 8;

// a 32 x 8 block moves a 32 x 32 tile; the +1 column keeps a tile column off one bank
extern "C" __global__ void transposeNoBankConflicts(float *odata, const float *idata, int width, int height) {
    __shared__ float tile[TILE_DIM][TILE_DIM + 1];

    int x = blockIdx.x * TILE_DIM + threadIdx.x;
    int y = blockIdx.y * TILE_DIM + threadIdx.y;

    for (int j = 0; j < TILE_DIM; j += BLOCK_ROWS)
        if (x < width && y + j < height)
            tile[threadIdx.y + j][threadIdx.x] = idata[(y + j) * width + x];

    __syncthreads();

    x = blockIdx.y * TILE_DIM + threadIdx.x;  // transpose block offset
    y = blockIdx.x * TILE_DIM + threadIdx.y;

    for (int j = 0; j < TILE_DIM; j += BLOCK_ROWS)
        if (x < height && y + j < width)
            odata[(y + j) * height + x] = tile[threadIdx.x][threadIdx.y + j];
}

// ============================== a histogram privatized in shared memory ==============================
#define NUM_BINS 256

extern "C" __global__ void histo_privatized(const unsigned char *buffer, long size, unsigned int *histo) {
    __shared__ unsigned int histo_s[NUM_BINS];
    for (int bin = threadIdx.x; bin < NUM_BINS; bin += blockDim.x) histo_s[bin] = 0u;
    __syncthreads();

    int i = threadIdx.x + blockIdx.x * blockDim.x;
    int stride = blockDim.x * gridDim.x;  // all threads handle blockDim.x * gridDim.x consecutive elements
    while (i < size) {
        atomicAdd(&(histo_s[buffer[i]]), 1);
        i += stride;
    }
    __syncthreads();

    for (int bin = threadIdx.x; bin < NUM_BINS; bin += blockDim.x) atomicAdd(&(histo[bin]), histo_s[bin]);
}

// ============================ one split step of an LSD radix sort (one block) ============================
// Stable partition of the keys by one bit: each warp counts its zeros with __ballot_sync, a thread's rank
// among its warp's zeros (or ones) is __popc of the lanes below it, the warps' counts are scanned in
// shared memory.
__device__ __forceinline__ unsigned int lanemask_lt() {
    unsigned int mask;
    asm("mov.u32 %0, %%lanemask_lt;" : "=r"(mask));
    return mask;
}

extern "C" __global__ void radix_split(const unsigned int *keys_in, unsigned int *keys_out, int n, int bit) {
    __shared__ unsigned int warp_zeros[32];
    __shared__ unsigned int warp_offset[33];
    int tid = threadIdx.x;
    int lane = tid & 31, warp = tid >> 5;
    int nwarps = (blockDim.x + 31) / 32;

    bool valid = tid < n;
    unsigned int key = valid ? keys_in[tid] : 0xffffffffu;
    bool zero = valid && ((key >> bit) & 1) == 0;
    unsigned int zeros = __ballot_sync(FULL_MASK, zero);
    unsigned int ones = __ballot_sync(FULL_MASK, valid && !zero);
    if (lane == 0) warp_zeros[warp] = __popc(zeros);
    __syncthreads();

    if (tid == 0) {  // exclusive scan of the warps' zero counts; the total zeros last
        unsigned int run = 0;
        for (int w = 0; w < nwarps; ++w) {
            warp_offset[w] = run;
            run += warp_zeros[w];
        }
        warp_offset[nwarps] = run;
    }
    __syncthreads();

    if (valid) {
        unsigned int total_zeros = warp_offset[nwarps];
        unsigned int zeros_before = warp_offset[warp] + __popc(zeros & lanemask_lt());
        unsigned int ones_before = (warp * 32 - warp_offset[warp]) + __popc(ones & lanemask_lt());
        keys_out[zero ? zeros_before : total_zeros + ones_before] = key;
    }
}

// ===================== a row softmax, one warp per row, __shfl_xor_sync butterflies ======================
extern "C" __global__ void softmax_warp_rows(const float *__restrict__ x, float *__restrict__ y, int rows, int cols) {
    int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    int lane = threadIdx.x % 32;
    if (row >= rows) return;
    const float *xr = x + (size_t)row * cols;

    float m = -INFINITY;
    for (int c = lane; c < cols; c += 32) m = fmaxf(m, xr[c]);
#pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1) m = fmaxf(m, __shfl_xor_sync(FULL_MASK, m, offset));

    float s = 0.f;
    for (int c = lane; c < cols; c += 32) s += __expf(xr[c] - m);
#pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1) s += __shfl_xor_sync(FULL_MASK, s, offset);

    float inv = 1.f / s;
    for (int c = lane; c < cols; c += 32) y[(size_t)row * cols + c] = __expf(xr[c] - m) * inv;
}

// ============== a batched GEMV in half precision: half2 products, float accumulation per warp ==============
// y[b, r] = A[b, r, :] . x[b, :]; blockDim (32, rows per block), gridDim (row blocks, batch); cols even.
extern "C" __global__ void batched_gemv_half2(const __half *__restrict__ A, const __half *__restrict__ x,
                                              __half *__restrict__ y, int rows, int cols) {
    int b = blockIdx.y;
    int row = blockIdx.x * blockDim.y + threadIdx.y;
    int lane = threadIdx.x;
    if (row >= rows) return;
    const half2 *a2 = reinterpret_cast<const half2 *>(A + ((size_t)b * rows + row) * cols);
    const half2 *x2 = reinterpret_cast<const half2 *>(x + (size_t)b * cols);

    float acc = 0.f;
    for (int c = lane; c < cols / 2; c += 32) {
        float2 p = __half22float2(__hmul2(a2[c], x2[c]));
        acc += p.x + p.y;
    }
    for (int offset = 16; offset > 0; offset >>= 1) acc += __shfl_down_sync(FULL_MASK, acc, offset);
    if (lane == 0) y[(size_t)b * rows + row] = __float2half(acc);
}

// =============================== top-k by a warp-level bitonic sort ===============================
// One warp per row: sort 32 candidates descending across the lanes (shfl_xor compare-exchange), then for
// each further chunk of 32, sort it, merge it reversed against the current best (a bitonic sequence) and
// clean it up.  k <= 32.
__device__ __forceinline__ void compare_exchange(float &v, int &idx, int partner_dist, bool keep_max) {
    float ov = __shfl_xor_sync(FULL_MASK, v, partner_dist);
    int oi = __shfl_xor_sync(FULL_MASK, idx, partner_dist);
    bool other_bigger = ov > v || (ov == v && oi < idx);
    if (other_bigger == keep_max) {
        v = ov;
        idx = oi;
    }
}

__device__ void bitonic_sort_desc(float &v, int &idx, int lane) {
#pragma unroll
    for (int k = 2; k <= 32; k <<= 1) {
#pragma unroll
        for (int j = k >> 1; j > 0; j >>= 1) {
            bool descending = (lane & k) == 0;
            bool lower = (lane & j) == 0;
            compare_exchange(v, idx, j, lower == descending);
        }
    }
}

__device__ void bitonic_merge_desc(float &v, int &idx, int lane) {
#pragma unroll
    for (int j = 16; j > 0; j >>= 1) compare_exchange(v, idx, j, (lane & j) == 0);
}

extern "C" __global__ void topk_warp_bitonic(const float *x, float *values, int *indices, int rows, int cols, int k) {
    int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    int lane = threadIdx.x & 31;
    if (row >= rows) return;
    const float *xr = x + (size_t)row * cols;

    float best = lane < cols ? xr[lane] : -INFINITY;
    int best_idx = lane < cols ? lane : cols + lane;
    bitonic_sort_desc(best, best_idx, lane);

    for (int start = 32; start < cols; start += 32) {
        int c = start + lane;
        float v = c < cols ? xr[c] : -INFINITY;
        int vi = c < cols ? c : cols + lane;
        bitonic_sort_desc(v, vi, lane);
        float rv = __shfl_sync(FULL_MASK, v, 31 - lane);  // reversed: best + reversed chunk is bitonic
        int ri = __shfl_sync(FULL_MASK, vi, 31 - lane);
        if (rv > best || (rv == best && ri < best_idx)) {
            best = rv;
            best_idx = ri;
        }
        bitonic_merge_desc(best, best_idx, lane);
    }
    if (lane < k) {
        values[(size_t)row * k + lane] = best;
        indices[(size_t)row * k + lane] = best_idx;
    }
}

// ================== a two-phase grid reduction through grid.sync() (a cooperative launch) ==================
// Threads past n return before the grid barrier, as a bounds check at the top of a kernel does; the
// others meet at grid.sync(), and block 0's thread 0 adds the blocks' partial sums.
extern "C" __global__ void grid_sum_early_return(const float *x, float *partial, float *total, int n) {
    cg::grid_group grid = cg::this_grid();
    cg::thread_block block = cg::this_thread_block();
    __shared__ float s[256];
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    s[threadIdx.x] = 0.f;
    block.sync();
    if (i >= n) return;
    atomicAdd(&s[0], x[i]);
    block.sync();
    if (threadIdx.x == 0) partial[blockIdx.x] = s[0];
    grid.sync();
    if (blockIdx.x == 0 && threadIdx.x == 0) {
        float sum = 0.f;
        for (int b = 0; b < gridDim.x; ++b) sum += partial[b];
        *total = sum;
    }
}

// Thread (0,0,0) of the last block returns: nobody arrives at the grid barrier for that block.
extern "C" __global__ void grid_sync_without_thread0(int *done) {
    cg::grid_group grid = cg::this_grid();
    if (blockIdx.x == gridDim.x - 1 && threadIdx.x == 0) return;
    grid.sync();
    atomicAdd(done, 1);
}

// A 3-point stencil whose author forgot the left edge: thread 0 reads x[-1].
extern "C" __global__ void stencil3_missing_left_edge(const float *x, float *y, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n - 1) y[i] = (x[i - 1] + x[i] + x[i + 1]) / 3.0f;
}

// A float4 copy without a scalar tail: for n not a multiple of 4 the last thread reads past the end.
extern "C" __global__ void copy_float4_no_tail(const float *x, float *y, int n) {
    int i = (blockIdx.x * blockDim.x + threadIdx.x) * 4;
    if (i < n) reinterpret_cast<float4 *>(y)[i / 4] = reinterpret_cast<const float4 *>(x)[i / 4];
}
