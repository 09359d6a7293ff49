// Round 11: kernels written the way CUDA samples, NVIDIA's blog posts and popular tutorials write them, run
// unedited on the emulator (tests/test_emulator_kernels_r11.py).  One file, one compile.
#include <cuda_runtime.h>
#if !defined(__CUDACC__) || CUDART_VERSION < 11000 || __CUDACC_VER_MAJOR__ < 11
#error "compile this file with nvcc from CUDA 11 or later"  // the guard samples put first
#endif
#include <cassert>
#include <cstdio>
#include <cooperative_groups.h>
#include <cooperative_groups/reduce.h>
#include <cub/block/block_reduce.cuh>
#include <cub/block/block_scan.cuh>
#include <cub/warp/warp_reduce.cuh>
#include <cuda/std/chrono>
#include <cuda/std/span>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

namespace cg = cooperative_groups;

// ---- 1. CUB BlockReduce: one partial sum per block, then one atomicAdd (the CUB documentation's example) ----
template <int BLOCK_THREADS>
__global__ void __launch_bounds__(BLOCK_THREADS) cub_sum(const float* __restrict__ in, float* out, int n) {
    using BlockReduce = cub::BlockReduce<float, BLOCK_THREADS>;
    __shared__ typename BlockReduce::TempStorage temp_storage;
    float thread_sum = 0.0f;
    for (int i = blockIdx.x * BLOCK_THREADS + threadIdx.x; i < n; i += gridDim.x * BLOCK_THREADS)
        thread_sum += in[i];
    float block_sum = BlockReduce(temp_storage).Sum(thread_sum);
    if (threadIdx.x == 0) atomicAdd(out, block_sum);
}
template __global__ void cub_sum<128>(const float*, float*, int);

// ---- 2. CUB BlockScan over several items per thread (exclusive prefix sum of one tile) ----
extern "C" __global__ void cub_exclusive_scan(const int* in, int* out, int n) {
    constexpr int THREADS = 64, ITEMS = 4;
    using BlockScan = cub::BlockScan<int, THREADS>;
    __shared__ typename BlockScan::TempStorage temp;
    int items[ITEMS];
    for (int k = 0; k < ITEMS; ++k) {
        int i = threadIdx.x * ITEMS + k;
        items[k] = i < n ? in[i] : 0;
    }
    int total;
    BlockScan(temp).ExclusiveSum(items, items, total);
    for (int k = 0; k < ITEMS; ++k) {
        int i = threadIdx.x * ITEMS + k;
        if (i < n) out[i] = items[k];
    }
    if (threadIdx.x == 0) out[n] = total;
}

// ---- 3. CUB WarpReduce: the maximum of each warp's 32 values, with cub::Max ----
extern "C" __global__ void cub_warp_max(const int* in, int* out) {
    using WarpReduce = cub::WarpReduce<int>;
    __shared__ typename WarpReduce::TempStorage temp[4];
    int warp_id = threadIdx.x / 32;
    int v = in[blockIdx.x * blockDim.x + threadIdx.x];
    int m = WarpReduce(temp[warp_id]).Reduce(v, cub::Max());
    if (threadIdx.x % 32 == 0) out[blockIdx.x * (blockDim.x / 32) + warp_id] = m;
}

// ---- 4. cooperative_groups: tiled_partition<16> and cg::reduce (the "Cooperative Groups" blog post) ----
extern "C" __global__ void cg_tile_sums(const float* in, float* tile_sums, int n) {
    cg::thread_block block = cg::this_thread_block();
    cg::thread_block_tile<16> tile = cg::tiled_partition<16>(block);
    int i = block.group_index().x * block.size() + block.thread_rank();
    float v = i < n ? in[i] : 0.0f;
    float s = cg::reduce(tile, v, cg::plus<float>());
    if (tile.thread_rank() == 0) tile_sums[i / 16] = s;
}

// ---- 5. warp shuffles with a ballot mask: the "Using CUDA Warp-Level Primitives" post's pattern ----
extern "C" __global__ void masked_warp_sum(const float* in, float* out, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    unsigned mask = __ballot_sync(0xffffffffu, i < n);
    if (i < n) {
        float v = in[i];
        int lanes = __popc(mask);
        // only full warps shuffle with the full mask; the partial last warp sums through lane 0
        if (lanes == 32) {
            for (int offset = 16; offset > 0; offset /= 2) v += __shfl_down_sync(mask, v, offset);
            if ((threadIdx.x & 31) == 0) out[i / 32] = v;
        } else {
            float total = 0.0f;
            for (int l = 0; l < lanes; ++l) total += __shfl_sync(mask, v, l);
            if ((threadIdx.x & 31) == 0) out[i / 32] = total;
        }
    }
}

// ---- 6. atomics on float, double, half, half2 and bfloat16, and atomicMax on floats through atomicCAS ----
// the sign trick: non-negative floats order as ints, negative ones in reverse as unsigned ints
__device__ __forceinline__ float atomicMaxFloat(float* addr, float value) {
    return value >= 0 ? __int_as_float(atomicMax((int*)addr, __float_as_int(value)))
                      : __uint_as_float(atomicMin((unsigned int*)addr, __float_as_uint(value)));
}
extern "C" __global__ void atomics_mix(const float* x, int n, float* fsum, double* dsum, __half* hsum,
                                       __half2* h2sum, __nv_bfloat16* bsum, float* fmax_out) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += blockDim.x * gridDim.x) {
        float v = x[i];
        atomicAdd(fsum, v);
        atomicAdd(dsum, (double)v);
        atomicAdd(hsum, __float2half(v));
        atomicAdd(h2sum, __floats2half2_rn(v, -v));
        atomicAdd(bsum, __float2bfloat16(v));
        atomicMaxFloat(fmax_out, v);
    }
}

// ---- 7. dynamic shared memory: one extern array carved into arrays of different types ----
extern "C" __global__ void carve_dynamic_shared(const float* x, const int* keys, float* out, int n) {
    extern __shared__ unsigned char smem[];
    double* acc = reinterpret_cast<double*>(smem);  // the widest type first keeps every array aligned
    float* values = reinterpret_cast<float*>(&acc[1]);
    int* flags = reinterpret_cast<int*>(&values[blockDim.x]);
    int t = threadIdx.x;
    values[t] = t < n ? x[t] : 0.0f;
    flags[t] = t < n ? keys[t] : 0;
    if (t == 0) *acc = 0.0;
    __syncthreads();
    if (t == 0) {
        for (int k = 0; k < blockDim.x; ++k)
            if (flags[k] > 0) *acc += values[k];
        out[0] = (float)*acc;
    }
}

// The CUDA samples' SharedMemory<T> helper: extern __shared__ arrays of a template's type
template <class T>
struct SharedMemory {
    __device__ inline operator T*() {
        extern __shared__ int __smem[];
        return (T*)__smem;
    }
};
template <>
struct SharedMemory<double> {
    __device__ inline operator double*() {
        extern __shared__ double __smem_d[];
        return (double*)__smem_d;
    }
};
template <class T>
__global__ void reduce_samples(const T* g_idata, T* g_odata, unsigned int n) {
    T* sdata = SharedMemory<T>();
    unsigned int tid = threadIdx.x;
    unsigned int i = blockIdx.x * (blockDim.x * 2) + threadIdx.x;
    T mySum = (i < n) ? g_idata[i] : 0;
    if (i + blockDim.x < n) mySum += g_idata[i + blockDim.x];
    sdata[tid] = mySum;
    __syncthreads();
    for (unsigned int s = blockDim.x / 2; s > 0; s >>= 1) {
        if (tid < s) sdata[tid] = mySum = mySum + sdata[tid + s];
        __syncthreads();
    }
    if (tid == 0) g_odata[blockIdx.x] = mySum;
}
template __global__ void reduce_samples<float>(const float*, float*, unsigned int);
template __global__ void reduce_samples<double>(const double*, double*, unsigned int);

// ---- 8. constant memory: polynomial coefficients set from the host ----
__constant__ float c_coeffs[8];
__constant__ int c_degree;
extern "C" __global__ void horner(const float* __restrict__ x, float* __restrict__ y, int n) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += blockDim.x * gridDim.x) {
        float acc = c_coeffs[c_degree];
        for (int k = c_degree - 1; k >= 0; --k) acc = fmaf(acc, x[i], c_coeffs[k]);
        y[i] = acc;
    }
}

// ---- 9. grid-stride SAXPY (the "CUDA Pro Tip: grid-stride loops" post) with __launch_bounds__ ----
extern "C" __global__ void __launch_bounds__(256, 2) saxpy(int n, float a, const float* __restrict__ x,
                                                             float* __restrict__ y) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += blockDim.x * gridDim.x) y[i] = a * x[i] + y[i];
}

// ---- 10. vector types: float4 loads with a scalar tail, int2 pairs ----
extern "C" __global__ void scale_float4(const float* in, float* out, float s, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    int n4 = n / 4;
    if (i < n4) {
        float4 v = reinterpret_cast<const float4*>(in)[i];
        v.x *= s; v.y *= s; v.z *= s; v.w *= s;
        reinterpret_cast<float4*>(out)[i] = v;
    }
    if (i == 0)
        for (int k = 4 * n4; k < n; ++k) out[k] = in[k] * s;
}
extern "C" __global__ void swap_int2(const int2* in, int2* out, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = make_int2(in[i].y, in[i].x + in[i].y);
}

// ---- 11. printf from a kernel ----
extern "C" __global__ void hello(int base) {
    if (threadIdx.x < 2) printf("Hello from block %d, thread %d: %d %.2f\n", blockIdx.x, threadIdx.x,
                                base + threadIdx.x, 0.5f * threadIdx.x);
}

// ---- 12. assert in device code ----
extern "C" __global__ void checked_sqrt(const float* x, float* y, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) {
        assert(x[i] >= 0.0f);
        y[i] = sqrtf(x[i]);
    }
}

// ---- 13. fast-math intrinsics ----
extern "C" __global__ void fast_math(const float* x, float* out, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) {
        float v = x[i];
        out[6 * i + 0] = __expf(v);
        out[6 * i + 1] = __fdividef(v, 1.0f + v * v);
        out[6 * i + 2] = rsqrtf(1.0f + v * v);
        out[6 * i + 3] = __saturatef(v);
        out[6 * i + 4] = __logf(1.0f + v * v);
        out[6 * i + 5] = __sinf(v) * __cosf(v);
    }
}

// ---- 14. half and bfloat16 conversions ----
extern "C" __global__ void convert_16bit(const float* x, __half* h, __nv_bfloat16* b, float* back, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) {
        h[i] = __float2half_rn(x[i]);
        b[i] = __float2bfloat16_rn(x[i]);
        back[2 * i] = __half2float(h[i]);
        back[2 * i + 1] = __bfloat162float(b[i]);
    }
}

// ---- 15. row softmax: one block per row, warp shuffles then shared memory (llm.c / tutorial style) ----
__device__ __forceinline__ float warp_reduce_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffff, v, o));
    return v;
}
__device__ __forceinline__ float warp_reduce_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffff, v, o);
    return v;
}
extern "C" __global__ void softmax_rows(const float* __restrict__ x, float* __restrict__ y, int cols) {
    __shared__ float shared[32];
    const float* row = x + (size_t)blockIdx.x * cols;
    float* out = y + (size_t)blockIdx.x * cols;
    int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
    float m = -INFINITY;
    for (int c = threadIdx.x; c < cols; c += blockDim.x) m = fmaxf(m, row[c]);
    m = warp_reduce_max(m);
    if (lane == 0) shared[warp] = m;
    __syncthreads();
    m = lane < warps ? shared[lane] : -INFINITY;
    m = warp_reduce_max(m);
    __syncthreads();
    float s = 0.0f;
    for (int c = threadIdx.x; c < cols; c += blockDim.x) s += expf(row[c] - m);
    s = warp_reduce_sum(s);
    if (lane == 0) shared[warp] = s;
    __syncthreads();
    s = lane < warps ? shared[lane] : 0.0f;
    s = warp_reduce_sum(s);
    for (int c = threadIdx.x; c < cols; c += blockDim.x) out[c] = expf(row[c] - m) / s;
}

// ---- 16. LayerNorm statistics with Welford's algorithm: per-thread running (mean, M2), merged across the block ----
struct Welford {
    float mean, m2;
    int count;
};
__device__ __forceinline__ Welford welford_merge(Welford a, Welford b) {
    int n = a.count + b.count;
    if (n == 0) return a;
    float delta = b.mean - a.mean;
    float nb_over_n = (float)b.count / n;
    return {a.mean + delta * nb_over_n, a.m2 + b.m2 + delta * delta * a.count * nb_over_n, n};
}
extern "C" __global__ void layernorm_welford(const float* x, const float* gamma, const float* beta, float* y,
                                             int cols, float eps) {
    __shared__ Welford partial[256];
    const float* row = x + (size_t)blockIdx.x * cols;
    Welford w{0.0f, 0.0f, 0};
    for (int c = threadIdx.x; c < cols; c += blockDim.x) {
        w.count += 1;
        float delta = row[c] - w.mean;
        w.mean += delta / w.count;
        w.m2 += delta * (row[c] - w.mean);
    }
    partial[threadIdx.x] = w;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s) partial[threadIdx.x] = welford_merge(partial[threadIdx.x], partial[threadIdx.x + s]);
        __syncthreads();
    }
    float mean = partial[0].mean, rstd = rsqrtf(partial[0].m2 / cols + eps);
    for (int c = threadIdx.x; c < cols; c += blockDim.x)
        y[(size_t)blockIdx.x * cols + c] = (row[c] - mean) * rstd * gamma[c] + beta[c];
}

// ---- 17. matrix-vector product, one warp per row (the common SGEMV tutorial kernel) ----
extern "C" __global__ void sgemv_warp_per_row(const float* __restrict__ A, const float* __restrict__ x,
                                              float* __restrict__ y, int rows, int cols) {
    int warps_per_block = blockDim.x / warpSize;
    int row = blockIdx.x * warps_per_block + threadIdx.x / warpSize;
    int lane = threadIdx.x % warpSize;
    if (row >= rows) return;  // whole warps leave together
    float sum = 0.0f;
    for (int c = lane; c < cols; c += warpSize) sum += A[(size_t)row * cols + c] * x[c];
    for (int offset = warpSize / 2; offset > 0; offset /= 2) sum += __shfl_down_sync(0xffffffff, sum, offset);
    if (lane == 0) y[row] = sum;
}

// ---- 18. __isConstant / __isGridConstant / __isGlobal: where a pointer points ----
__constant__ float c_table[4];
extern "C" __global__ void address_kinds(const __grid_constant__ float4 params, const float* g, unsigned* kinds,
                                         float* out, int n) {
    __shared__ float s[2];
    float local = params.y;
    kinds[0] = __isConstant(c_table);
    kinds[1] = __isConstant(g);
    kinds[2] = __isGridConstant(&params);
    kinds[3] = __isGlobal(g);
    kinds[4] = __isConstant(s);
    kinds[5] = __isGridConstant(&n) + __isGridConstant(&local);  // a plain parameter and a local: copies
    kinds[6] = __isGlobal(&params) + __isLocal(&params);
    out[0] = params.x + params.w + c_table[3] + n;
}

// ---- 19. inline PTX exit: threads past the end leave the kernel ----
extern "C" __global__ void ptx_exit_tail(const float* x, float* y, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) asm volatile("exit;");  // an asm as the body of an if, with an else
    else y[i] = x[i] + 1.0f;
    asm volatile("bar.sync 0;");  // the block's threads that have not exited meet here
    if (i < n) y[i] += 1.0f;
}

// ---- 20. libcu++'s span and chrono ----
__device__ float span_sum(cuda::std::span<const float> values) {
    float s = 0.0f;
    for (float v : values) s += v;
    return s;
}
extern "C" __global__ void span_rows(const float* x, float* sums, int cols, long long* nanos) {
    cuda::std::span<const float> row(x + blockIdx.x * cols, cols);
    if (threadIdx.x == 0) sums[blockIdx.x] = span_sum(row.first(cols / 2)) + span_sum(row.last(cols - cols / 2));
    if (blockIdx.x == 0 && threadIdx.x == 0) {
        using namespace cuda::std::chrono;
        auto d = duration_cast<nanoseconds>(milliseconds(3) + microseconds(5));
        nanos[0] = d.count();
        nanos[1] = duration_cast<microseconds>(seconds(2)).count();
    }
}

// ---- 21. early return before a barrier: threads past n leave, the rest reduce in shared memory ----
extern "C" __global__ void tail_block_sum(const float* x, float* out, int n) {
    __shared__ float partial[256];
    int t = threadIdx.x;
    int i = blockIdx.x * blockDim.x + t;
    if (i >= n) return;
    partial[t] = x[i];
    __syncthreads();
    if (t == 0) {
        int live = min((int)blockDim.x, n - (int)(blockIdx.x * blockDim.x));
        float s = 0.0f;
        for (int k = 0; k < live; ++k) s += partial[k];
        out[blockIdx.x] = s;
    }
}

// ---- 22. a pointer table: each entry the address of one tensor (the multi-tensor-apply pattern) ----
extern "C" __global__ void scale_tensor_list(float* const* tensors, const int* sizes, int count, float s) {
    int t = blockIdx.x;
    if (t >= count) return;
    float* p = tensors[t];
    for (int i = threadIdx.x; i < sizes[t]; i += blockDim.x) p[i] *= s;
}

// ---- 23. warp-synchronous primitives: __reduce_add_sync, __match_any_sync, __activemask ----
extern "C" __global__ void warp_primitives(const int* keys, unsigned* out) {
    int lane = threadIdx.x;
    int k = keys[lane];
    out[lane] = __popc(__match_any_sync(0xffffffff, k));  // how many lanes share my key
    out[32 + lane] = __reduce_add_sync(0xffffffff, (unsigned)k);
    if (lane % 2 == 0) out[64 + lane] = __activemask();
}

// ---- 24. half2 arithmetic: a fused GELU-ish kernel on packed halves ----
extern "C" __global__ void half2_axpby(const __half2* x, const __half2* y, __half2* out, float a, float b, int n2) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n2) {
        __half2 ha = __float2half2_rn(a), hb = __float2half2_rn(b);
        out[i] = __hfma2(ha, x[i], __hmul2(hb, y[i]));
    }
}

// ---- 25. templated elementwise functor with a bfloat16 output ----
struct Relu {
    __device__ float operator()(float v) const { return v > 0.0f ? v : 0.0f; }
};
template <typename Op, typename Out>
__global__ void apply_to(const float* __restrict__ in, Out* __restrict__ out, int n, Op op) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = static_cast<Out>(op(in[i]));
}
template __global__ void apply_to<Relu, __nv_bfloat16>(const float*, __nv_bfloat16*, int, Relu);
template __global__ void apply_to<Relu, double>(const float*, double*, int, Relu);

// ---- 26. an off-by-one read: the last thread reads one element past x (BUG: i + 1 < n was meant) ----
extern "C" __global__ void forward_difference(const float* x, float* d, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) d[i] = x[i + 1] - x[i];
}

// ---- 27. multi-tensor apply with a table of device addresses, as kernels/adamw.cu takes it ----
extern "C" __global__ void scale_by_address(const unsigned long long* addresses, const long long* sizes,
                                            float* first, int count, float s) {
    for (int t = 0; t < count; ++t) {
        float* p = reinterpret_cast<float*>(addresses[t]);
        for (long long i = threadIdx.x; i <= sizes[t]; i += blockDim.x)  // BUG when sizes[t] is the size: <=
            p[i] *= s;
    }
    (void)first;
}

// ---- 28. BUG: thread 0 returns (fine since Volta), but the others split between two barriers ----
extern "C" __global__ void split_barriers(float* x) {
    if (threadIdx.x == 0) return;
    if (threadIdx.x % 2) __syncthreads();
    else __syncthreads();
    x[threadIdx.x] = 1;
}

// ---- 29. a 64-byte aligned struct as a __grid_constant__ parameter (a CUtensorMap is one) ----
struct alignas(64) Coefficients {
    float v[20];
};
extern "C" __global__ void aligned_grid_constant(int n, const __grid_constant__ Coefficients c, float* out,
                                                 unsigned* flags) {
    out[threadIdx.x] = c.v[threadIdx.x % 20] * n;
    flags[threadIdx.x] = __isGridConstant(&c) + 2 * (reinterpret_cast<uintptr_t>(&c) % alignof(Coefficients) == 0);
}
