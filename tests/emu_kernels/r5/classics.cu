// Kernels in the style of public CUDA code (llm.c, the CUDA samples, CUB, NVIDIA's blog posts), written anew
// for the emulator's tests: each keeps the constructs of its model (cooperative groups, packed 128-bit loads,
// bank-conflict-free scan offsets, diagonal block order, bitonic comparators, per-warp sub-histograms, float4
// n-body tiles, a CUB-like TempStorage union, __constant__ filter taps, warp-aggregated atomics).
#include <cooperative_groups.h>
#include <cooperative_groups/reduce.h>
namespace cg = cooperative_groups;

// ---- llm.c: 128-bit packed loads and stores ------------------------------------------------------
template <class ElementType>
struct alignas(16) Packed128 {
    static constexpr int size = sizeof(int4) / sizeof(ElementType);
    ElementType payload[size];
    __device__ ElementType& operator[](int index) { return payload[index]; }
    __device__ const ElementType& operator[](int index) const { return payload[index]; }
};
typedef Packed128<float> f128;
template <class T>
__device__ Packed128<T> load128cs(const T* address) {
    Packed128<T> result;
    int4 bits = __ldcs(reinterpret_cast<const int4*>(address));
    memcpy(&result, &bits, sizeof(bits));
    return result;
}
template <class T>
__device__ void store128(T* target, Packed128<T> value) {
    *reinterpret_cast<int4*>(target) = *reinterpret_cast<int4*>(&value);
}

// residual + GELU (tanh approximation), four floats per thread
#define GELU_SCALING_FACTOR sqrtf(2.0f / M_PI)
extern "C" __global__ void residual_gelu(float* out, const float* inp1, const float* inp2, int N) {
    int idx = (blockIdx.x * blockDim.x + threadIdx.x) * f128::size;
    if (idx >= N) return;
    f128 a = load128cs(inp1 + idx), b = load128cs(inp2 + idx), r;
    for (int k = 0; k < f128::size; k++) {
        float x = a[k] + b[k];
        float cube = 0.044715f * x * x * x;
        r[k] = 0.5f * x * (1.0f + tanhf(GELU_SCALING_FACTOR * (x + cube)));
    }
    store128(out + idx, r);
}

// ---- llm.c: layernorm, one warp per row, cooperative groups ----------------------------------------
extern "C" __global__ void layernorm_forward(float* __restrict__ out, float* __restrict__ mean,
                                             float* __restrict__ rstd, const float* __restrict__ inp,
                                             const float* __restrict__ weight, const float* __restrict__ bias,
                                             int N, int C) {
    cg::thread_block block = cg::this_thread_block();
    cg::thread_block_tile<32> warp = cg::tiled_partition<32>(block);
    int idx = blockIdx.x * warp.meta_group_size() + warp.meta_group_rank();
    if (idx >= N) return;
    const float* x = inp + idx * C;
    float sum = 0.0f;
    for (int i = warp.thread_rank(); i < C; i += warp.size()) sum += x[i];
    sum = cg::reduce(warp, sum, cg::plus<float>{});
    float m = sum / C;
    if (warp.thread_rank() == 0 && mean != nullptr) __stcs(mean + idx, m);
    sum = 0.0f;
    for (int i = warp.thread_rank(); i < C; i += warp.size()) {
        float diff = x[i] - m;
        sum += diff * diff;
    }
    sum = cg::reduce(warp, sum, cg::plus<float>{});
    float s = rsqrtf(sum / C + 1e-5f);
    if (warp.thread_rank() == 0 && rstd != nullptr) __stcs(rstd + idx, s);
    float* o = out + idx * C;
    for (int c = warp.thread_rank(); c < C; c += warp.size()) {
        float n = s * (__ldcs(x + c) - m);
        __stcs(o + c, n * weight[c] + bias[c]);
    }
}

// ---- llm.c: online softmax, one warp per row (max and normalizer updated together) ------------------
extern "C" __global__ void softmax_online(float* out, const float* inp, int N, int C) {
    const int warps_per_block = blockDim.x / 32;
    const int row = blockIdx.x * warps_per_block + threadIdx.x / 32;
    const int lane = threadIdx.x % 32;
    if (row >= N) return;
    const float* x = inp + row * C;
    float maxval = -INFINITY, sumval = 0.0f;
    for (int i = lane; i < C; i += 32) {
        float v = x[i];
        if (v > maxval) {
            sumval *= expf(maxval - v);
            maxval = v;
        }
        sumval += expf(v - maxval);
    }
    for (int offset = 16; offset > 0; offset /= 2) {
        float other_max = __shfl_xor_sync(0xFFFFFFFF, maxval, offset);
        float other_sum = __shfl_xor_sync(0xFFFFFFFF, sumval, offset);
        float new_max = fmaxf(maxval, other_max);
        sumval = sumval * expf(maxval - new_max) + other_sum * expf(other_max - new_max);
        maxval = new_max;
    }
    for (int i = lane; i < C; i += 32) out[row * C + i] = expf(x[i] - maxval) / sumval;
}

// ---- CUDA samples: work-efficient (Blelloch) scan with bank-conflict-free offsets ---------------------
#define NUM_BANKS 32
#define LOG_NUM_BANKS 5
#define CONFLICT_FREE_OFFSET(n) ((n) >> LOG_NUM_BANKS)
// Exclusive scan of one block of 2 * blockDim.x elements; the block's total goes to sums[blockIdx.x].
extern "C" __global__ void prescan(float* g_odata, const float* g_idata, float* sums, int n) {
    extern __shared__ float temp[];
    const int thid = threadIdx.x, base = 2 * blockIdx.x * blockDim.x, m = 2 * blockDim.x;
    int ai = thid, bi = thid + blockDim.x;
    int bankOffsetA = CONFLICT_FREE_OFFSET(ai), bankOffsetB = CONFLICT_FREE_OFFSET(bi);
    temp[ai + bankOffsetA] = base + ai < n ? g_idata[base + ai] : 0.0f;
    temp[bi + bankOffsetB] = base + bi < n ? g_idata[base + bi] : 0.0f;
    int offset = 1;
    for (int d = m >> 1; d > 0; d >>= 1) {  // up-sweep
        __syncthreads();
        if (thid < d) {
            int a = offset * (2 * thid + 1) - 1, b = offset * (2 * thid + 2) - 1;
            a += CONFLICT_FREE_OFFSET(a);
            b += CONFLICT_FREE_OFFSET(b);
            temp[b] += temp[a];
        }
        offset *= 2;
    }
    if (thid == 0) {
        sums[blockIdx.x] = temp[m - 1 + CONFLICT_FREE_OFFSET(m - 1)];
        temp[m - 1 + CONFLICT_FREE_OFFSET(m - 1)] = 0;
    }
    for (int d = 1; d < m; d *= 2) {  // down-sweep
        offset >>= 1;
        __syncthreads();
        if (thid < d) {
            int a = offset * (2 * thid + 1) - 1, b = offset * (2 * thid + 2) - 1;
            a += CONFLICT_FREE_OFFSET(a);
            b += CONFLICT_FREE_OFFSET(b);
            float t = temp[a];
            temp[a] = temp[b];
            temp[b] += t;
        }
    }
    __syncthreads();
    if (base + ai < n) g_odata[base + ai] = temp[ai + bankOffsetA];
    if (base + bi < n) g_odata[base + bi] = temp[bi + bankOffsetB];
}
extern "C" __global__ void add_block_offsets(float* data, const float* offsets, int n) {
    int i = 2 * blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) data[i] += offsets[blockIdx.x];
    if (i + blockDim.x < n) data[i + blockDim.x] += offsets[blockIdx.x];
}

// ---- CUDA samples: transpose with diagonal block reordering (avoids partition camping) -----------------
#define TILE_DIM 32
#define BLOCK_ROWS 8
extern "C" __global__ void transpose_diagonal(float* odata, const float* idata, int width, int height) {
    __shared__ float tile[TILE_DIM][TILE_DIM + 1];
    int blockIdx_x, blockIdx_y;
    if (width == height) {
        blockIdx_y = blockIdx.x;
        blockIdx_x = (blockIdx.x + blockIdx.y) % gridDim.x;
    } else {
        int bid = blockIdx.x + gridDim.x * blockIdx.y;
        blockIdx_y = bid % gridDim.y;
        blockIdx_x = ((bid / gridDim.y) + blockIdx_y) % gridDim.x;
    }
    int xIndex = blockIdx_x * TILE_DIM + threadIdx.x, yIndex = blockIdx_y * TILE_DIM + threadIdx.y;
    int index_in = xIndex + yIndex * width;
    xIndex = blockIdx_y * TILE_DIM + threadIdx.x;
    yIndex = blockIdx_x * TILE_DIM + threadIdx.y;
    int index_out = xIndex + yIndex * height;
    for (int i = 0; i < TILE_DIM; i += BLOCK_ROWS) tile[threadIdx.y + i][threadIdx.x] = idata[index_in + i * width];
    __syncthreads();
    for (int i = 0; i < TILE_DIM; i += BLOCK_ROWS) odata[index_out + i * height] = tile[threadIdx.x][threadIdx.y + i];
}

// ---- CUDA samples: bitonic sort of (key, value) pairs in shared memory --------------------------------
#define SHARED_SIZE_LIMIT 1024U
__device__ inline void Comparator(unsigned& keyA, unsigned& valA, unsigned& keyB, unsigned& valB, unsigned dir) {
    unsigned t;
    if ((keyA > keyB) == dir) {
        t = keyA; keyA = keyB; keyB = t;
        t = valA; valA = valB; valB = t;
    }
}
// Each block sorts SHARED_SIZE_LIMIT elements (two per thread), ascending when dir is 1.
extern "C" __global__ void bitonicSortShared(unsigned* d_DstKey, unsigned* d_DstVal, const unsigned* d_SrcKey,
                                             const unsigned* d_SrcVal, unsigned arrayLength, unsigned dir) {
    __shared__ unsigned s_key[SHARED_SIZE_LIMIT];
    __shared__ unsigned s_val[SHARED_SIZE_LIMIT];
    d_SrcKey += blockIdx.x * SHARED_SIZE_LIMIT + threadIdx.x;
    d_SrcVal += blockIdx.x * SHARED_SIZE_LIMIT + threadIdx.x;
    d_DstKey += blockIdx.x * SHARED_SIZE_LIMIT + threadIdx.x;
    d_DstVal += blockIdx.x * SHARED_SIZE_LIMIT + threadIdx.x;
    s_key[threadIdx.x] = d_SrcKey[0];
    s_val[threadIdx.x] = d_SrcVal[0];
    s_key[threadIdx.x + (SHARED_SIZE_LIMIT / 2)] = d_SrcKey[(SHARED_SIZE_LIMIT / 2)];
    s_val[threadIdx.x + (SHARED_SIZE_LIMIT / 2)] = d_SrcVal[(SHARED_SIZE_LIMIT / 2)];
    for (unsigned size = 2; size < arrayLength; size <<= 1) {
        unsigned ddd = dir ^ ((threadIdx.x & (size / 2)) != 0);
        for (unsigned stride = size / 2; stride > 0; stride >>= 1) {
            __syncthreads();
            unsigned pos = 2 * threadIdx.x - (threadIdx.x & (stride - 1));
            Comparator(s_key[pos + 0], s_val[pos + 0], s_key[pos + stride], s_val[pos + stride], ddd);
        }
    }
    for (unsigned stride = arrayLength / 2; stride > 0; stride >>= 1) {
        __syncthreads();
        unsigned pos = 2 * threadIdx.x - (threadIdx.x & (stride - 1));
        Comparator(s_key[pos + 0], s_val[pos + 0], s_key[pos + stride], s_val[pos + stride], dir);
    }
    __syncthreads();
    d_DstKey[0] = s_key[threadIdx.x];
    d_DstVal[0] = s_val[threadIdx.x];
    d_DstKey[(SHARED_SIZE_LIMIT / 2)] = s_key[threadIdx.x + (SHARED_SIZE_LIMIT / 2)];
    d_DstVal[(SHARED_SIZE_LIMIT / 2)] = s_val[threadIdx.x + (SHARED_SIZE_LIMIT / 2)];
}

// ---- CUDA samples: 256-bin histogram, one sub-histogram per warp, bytes read four at a time ----------
#define HISTOGRAM256_BIN_COUNT 256
#define WARP_COUNT 6
#define HISTOGRAM256_THREADBLOCK_SIZE (WARP_COUNT * 32)
#define UMUL(a, b) __umul24((a), (b))
__device__ inline void addWord(unsigned* s_WarpHist, unsigned data) {
    atomicAdd(s_WarpHist + ((data >> 0) & 0xFFU), 1);
    atomicAdd(s_WarpHist + ((data >> 8) & 0xFFU), 1);
    atomicAdd(s_WarpHist + ((data >> 16) & 0xFFU), 1);
    atomicAdd(s_WarpHist + ((data >> 24) & 0xFFU), 1);
}
// Per-block partial histograms: d_PartialHistograms[blockIdx.x * 256 + bin].
extern "C" __global__ void histogram256Kernel(unsigned* d_PartialHistograms, const unsigned* d_Data, unsigned dataCount) {
    __shared__ unsigned s_Hist[WARP_COUNT * HISTOGRAM256_BIN_COUNT];
    unsigned* s_WarpHist = s_Hist + (threadIdx.x >> 5) * HISTOGRAM256_BIN_COUNT;
#pragma unroll
    for (unsigned i = 0; i < (WARP_COUNT * HISTOGRAM256_BIN_COUNT / HISTOGRAM256_THREADBLOCK_SIZE); i++)
        s_Hist[threadIdx.x + i * HISTOGRAM256_THREADBLOCK_SIZE] = 0;
    cg::sync(cg::this_thread_block());
    for (unsigned pos = UMUL(blockIdx.x, blockDim.x) + threadIdx.x; pos < dataCount; pos += UMUL(blockDim.x, gridDim.x))
        addWord(s_WarpHist, d_Data[pos]);
    cg::sync(cg::this_thread_block());
    for (unsigned bin = threadIdx.x; bin < HISTOGRAM256_BIN_COUNT; bin += HISTOGRAM256_THREADBLOCK_SIZE) {
        unsigned sum = 0;
        for (unsigned i = 0; i < WARP_COUNT; i++) sum += s_Hist[bin + i * HISTOGRAM256_BIN_COUNT];
        d_PartialHistograms[blockIdx.x * HISTOGRAM256_BIN_COUNT + bin] = sum;
    }
}

// ---- CUDA samples: n-body, all pairs in tiles of float4 positions in dynamic shared memory ------------
__device__ float3 bodyBodyInteraction(float4 bi, float4 bj, float3 ai, float softeningSquared) {
    float3 r;
    r.x = bj.x - bi.x;
    r.y = bj.y - bi.y;
    r.z = bj.z - bi.z;
    float distSqr = r.x * r.x + r.y * r.y + r.z * r.z + softeningSquared;
    float invDist = rsqrtf(distSqr);
    float invDistCube = invDist * invDist * invDist;
    float s = bj.w * invDistCube;  // w holds the mass
    ai.x += r.x * s;
    ai.y += r.y * s;
    ai.z += r.z * s;
    return ai;
}
extern "C" __global__ void integrateBodies(float4* newPos, const float4* oldPos, float4* vel, float deltaTime,
                                           float damping, float softeningSquared, int numBodies) {
    extern __shared__ float4 sharedPos[];
    int index = blockIdx.x * blockDim.x + threadIdx.x;
    float4 position = index < numBodies ? oldPos[index] : make_float4(0, 0, 0, 0);
    float3 acc = {0.0f, 0.0f, 0.0f};
    for (int tile = 0; tile < (numBodies + blockDim.x - 1) / blockDim.x; tile++) {
        int j = tile * blockDim.x + threadIdx.x;
        sharedPos[threadIdx.x] = j < numBodies ? oldPos[j] : make_float4(0, 0, 0, 0);  // mass 0: no force
        __syncthreads();
#pragma unroll 4
        for (int k = 0; k < blockDim.x; k++) acc = bodyBodyInteraction(position, sharedPos[k], acc, softeningSquared);
        __syncthreads();
    }
    if (index >= numBodies) return;
    float4 velocity = vel[index];
    velocity.x = (velocity.x + acc.x * deltaTime) * damping;
    velocity.y = (velocity.y + acc.y * deltaTime) * damping;
    velocity.z = (velocity.z + acc.z * deltaTime) * damping;
    position.x += velocity.x * deltaTime;
    position.y += velocity.y * deltaTime;
    position.z += velocity.z * deltaTime;
    newPos[index] = position;
    vel[index] = velocity;
}

// ---- CUB style: a block reduction whose temporary storage is a union in shared memory ----------------
template <int BLOCK_THREADS>
struct BlockReduceSum {
    static constexpr int WARPS = (BLOCK_THREADS + 31) / 32;
    union TempStorage {
        float warp_aggregates[WARPS];
        struct { float total; int count; } result;
    };
    TempStorage& temp;
    __device__ explicit BlockReduceSum(TempStorage& storage) : temp(storage) {}
    __device__ float Sum(float value, int valid) {
        const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
        for (int offset = 16; offset > 0; offset >>= 1) value += __shfl_down_sync(0xFFFFFFFFu, value, offset);
        if (lane == 0) temp.warp_aggregates[warp] = value;
        __syncthreads();
        float total = 0.0f;
        if (threadIdx.x == 0) {
            for (int w = 0; w < WARPS; ++w) total += temp.warp_aggregates[w];
        }
        __syncthreads();  // the union's fields share bytes: every warp has read before they are rewritten
        if (threadIdx.x == 0) {
            temp.result.total = total;
            temp.result.count = valid;
        }
        __syncthreads();
        return temp.result.total;
    }
};
template <int BLOCK_THREADS>
__global__ void block_sum_cub_style(const float* in, float* out, int n) {
    typedef BlockReduceSum<BLOCK_THREADS> BlockReduce;
    __shared__ typename BlockReduce::TempStorage temp_storage;
    int i = blockIdx.x * BLOCK_THREADS + threadIdx.x;
    float total = BlockReduce(temp_storage).Sum(i < n ? in[i] : 0.0f, min(n - (int)blockIdx.x * BLOCK_THREADS, BLOCK_THREADS));
    if (threadIdx.x == 0) out[blockIdx.x] = total;
}

// ---- CUDA samples: separable convolution (rows), filter taps in __constant__ memory ------------------
#define KERNEL_RADIUS 8
#define KERNEL_LENGTH (2 * KERNEL_RADIUS + 1)
__constant__ float c_Kernel[KERNEL_LENGTH];
#define ROWS_BLOCKDIM_X 16
#define ROWS_BLOCKDIM_Y 4
#define ROWS_RESULT_STEPS 4
#define ROWS_HALO_STEPS 1
extern "C" __global__ void convolutionRowsKernel(float* d_Dst, const float* d_Src, int imageW, int imageH, int pitch) {
    __shared__ float s_Data[ROWS_BLOCKDIM_Y][(ROWS_RESULT_STEPS + 2 * ROWS_HALO_STEPS) * ROWS_BLOCKDIM_X];
    const int baseX = (blockIdx.x * ROWS_RESULT_STEPS - ROWS_HALO_STEPS) * ROWS_BLOCKDIM_X + threadIdx.x;
    const int baseY = blockIdx.y * ROWS_BLOCKDIM_Y + threadIdx.y;
    d_Src += baseY * pitch + baseX;
    d_Dst += baseY * pitch + baseX;
#pragma unroll
    for (int i = ROWS_HALO_STEPS; i < ROWS_HALO_STEPS + ROWS_RESULT_STEPS; i++)
        s_Data[threadIdx.y][threadIdx.x + i * ROWS_BLOCKDIM_X] = d_Src[i * ROWS_BLOCKDIM_X];
#pragma unroll
    for (int i = 0; i < ROWS_HALO_STEPS; i++)  // left halo: zero outside the image
        s_Data[threadIdx.y][threadIdx.x + i * ROWS_BLOCKDIM_X] = (baseX >= -i * ROWS_BLOCKDIM_X) ? d_Src[i * ROWS_BLOCKDIM_X] : 0;
#pragma unroll
    for (int i = ROWS_HALO_STEPS + ROWS_RESULT_STEPS; i < ROWS_HALO_STEPS + ROWS_RESULT_STEPS + ROWS_HALO_STEPS; i++)
        s_Data[threadIdx.y][threadIdx.x + i * ROWS_BLOCKDIM_X] = (imageW - baseX > i * ROWS_BLOCKDIM_X) ? d_Src[i * ROWS_BLOCKDIM_X] : 0;
    __syncthreads();
#pragma unroll
    for (int i = ROWS_HALO_STEPS; i < ROWS_HALO_STEPS + ROWS_RESULT_STEPS; i++) {
        float sum = 0;
#pragma unroll
        for (int j = -KERNEL_RADIUS; j <= KERNEL_RADIUS; j++)
            sum += c_Kernel[KERNEL_RADIUS - j] * s_Data[threadIdx.y][threadIdx.x + i * ROWS_BLOCKDIM_X + j];
        d_Dst[i * ROWS_BLOCKDIM_X] = sum;
    }
}

// ---- NVIDIA blog: warp-aggregated atomics (stream compaction of the positive values) ------------------
__device__ int atomicAggInc(int* counter) {
    cg::coalesced_group active = cg::coalesced_threads();
    int prev;
    if (active.thread_rank() == 0) prev = atomicAdd(counter, active.size());
    prev = active.shfl(prev, 0);
    return prev + active.thread_rank();
}
__device__ int atomicAggIncIntrinsics(int* counter) {
    unsigned mask = __activemask();
    int leader = __ffs(mask) - 1, lane = threadIdx.x % 32;
    int prev;
    if (lane == leader) prev = atomicAdd(counter, __popc(mask));
    prev = __shfl_sync(mask, prev, leader);
    return prev + __popc(mask & ((1u << lane) - 1));
}
extern "C" __global__ void filter_positive(int* dst, int* nres, const int* src, int n, int use_groups) {
    int i = threadIdx.x + blockIdx.x * blockDim.x;
    if (i < n && src[i] > 0) dst[use_groups ? atomicAggInc(nres) : atomicAggIncIntrinsics(nres)] = src[i];
}
