// Kernels written the way the CUDA samples, NVIDIA's blog and popular tutorials write them, for
// tests/test_emulator_r4.py: each is run through the emulator unedited and matched to NumPy.
#include <cooperative_groups.h>
#include <cooperative_groups/reduce.h>
#include <cuda_fp16.h>
#include <cassert>
namespace cg = cooperative_groups;

// "CUDA Pro Tip: Write Flexible Kernels with Grid-Stride Loops", with __restrict__ and __ldg.
extern "C" __global__ void saxpy(int n, float a, const float* __restrict__ x, float* __restrict__ y) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += blockDim.x * gridDim.x)
        y[i] = a * __ldg(&x[i]) + y[i];
}

// "CUDA Pro Tip: Increase Performance with Vectorized Memory Access": float4 / int4 loads, scalar tail.
extern "C" __global__ void scale_vec4(const float* __restrict__ in, float* __restrict__ out, float s, int n) {
    int idx = blockIdx.x * blockDim.x + threadIdx.x;
    for (int i = idx; i < n / 4; i += blockDim.x * gridDim.x) {
        float4 v = reinterpret_cast<const float4*>(in)[i];
        v.x *= s; v.y *= s; v.z *= s; v.w *= s;
        reinterpret_cast<float4*>(out)[i] = v;
    }
    int tail = n / 4 * 4 + idx;  // the last n % 4 elements, one thread each
    if (tail < n) out[tail] = in[tail] * s;
}
extern "C" __global__ void copy_int4(const int* __restrict__ in, int* __restrict__ out, int n4) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n4; i += blockDim.x * gridDim.x)
        reinterpret_cast<int4*>(out)[i] = __ldg(reinterpret_cast<const int4*>(in) + i);
}

// A 3-D block over a 3-D grid: out[z][y][x] = in[z][y][x] * (1 + x) + y - z, with dim3 sizes.
extern "C" __global__ void volume(const float* in, float* out, int nx, int ny, int nz) {
    const dim3 p(blockIdx.x * blockDim.x + threadIdx.x, blockIdx.y * blockDim.y + threadIdx.y,
                 blockIdx.z * blockDim.z + threadIdx.z);
    if (p.x >= nx || p.y >= ny || p.z >= nz) return;
    const size_t i = (size_t(p.z) * ny + p.y) * nx + p.x;
    out[i] = in[i] * (1.0f + p.x) + float(p.y) - float(p.z);
}

// Cooperative groups: a block sum through tiles of 32 and cg::reduce, one atomicAdd per tile.
extern "C" __global__ void cg_sum(const float* x, float* total, int n) {
    cg::thread_block block = cg::this_thread_block();
    cg::thread_block_tile<32> tile = cg::tiled_partition<32>(block);
    float v = 0.0f;
    for (int i = blockIdx.x * block.size() + block.thread_rank(); i < n; i += gridDim.x * block.size()) v += x[i];
    __shared__ float per_tile[32];
    float s = cg::reduce(tile, v, cg::plus<float>());
    if (tile.thread_rank() == 0) per_tile[tile.meta_group_rank()] = s;
    block.sync();
    if (block.thread_rank() == 0) {
        float t = 0.0f;
        for (int k = 0; k < (int)tile.meta_group_size(); ++k) t += per_tile[k];
        atomicAdd(total, t);
    }
}

// Templates with int parameters (launched through name_expressions).
template <int BLOCK, typename T>
__global__ void block_sum(const T* x, T* out, int n) {
    __shared__ T s[BLOCK];
    int t = threadIdx.x;
    T v = 0;
    for (int i = blockIdx.x * BLOCK + t; i < n; i += gridDim.x * BLOCK) v += x[i];
    s[t] = v;
    __syncthreads();
#pragma unroll
    for (int stride = BLOCK / 2; stride > 0; stride >>= 1) {
        if (t < stride) s[t] += s[t + stride];
        __syncthreads();
    }
    if (t == 0) out[blockIdx.x] = s[0];
}

// __constant__ taps filled from the host (CuPy: get_global), a 1-D convolution with a halo in shared memory.
#define RADIUS 3
__constant__ float taps[2 * RADIUS + 1];
extern "C" __global__ void conv1d(const float* in, float* out, int n) {
    extern __shared__ float tile[];  // blockDim.x + 2 * RADIUS
    int g = blockIdx.x * blockDim.x + threadIdx.x, l = threadIdx.x + RADIUS;
    tile[l] = g < n ? in[g] : 0.0f;
    if (threadIdx.x < RADIUS) {
        tile[l - RADIUS] = g >= RADIUS ? in[g - RADIUS] : 0.0f;
        int r = g + blockDim.x;
        tile[l + blockDim.x] = r < n ? in[r] : 0.0f;
    }
    __syncthreads();
    if (g >= n) return;
    float acc = 0.0f;
#pragma unroll
    for (int k = -RADIUS; k <= RADIUS; ++k) acc += taps[k + RADIUS] * tile[l + k];
    out[g] = acc;
}

// Warp votes: stream compaction of the positives within each warp, plus per-warp any/all flags.
extern "C" __global__ void compact_warp(const float* x, float* kept, int* count, int* any_neg, int* all_pos, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    int lane = threadIdx.x % warpSize, warp = i / warpSize;
    bool keep = i < n && x[i] > 0.0f;
    unsigned mask = __ballot_sync(0xffffffffu, keep);
    int before = __popc(mask & ((1u << lane) - 1u));
    if (keep) kept[warp * 32 + before] = x[i];
    if (lane == 0) count[warp] = __popc(mask);
    int a = __any_sync(0xffffffffu, i < n && x[i] < 0.0f), b = __all_sync(0xffffffffu, i >= n || x[i] > 0.0f);
    if (lane == 0) { any_neg[warp] = a; all_pos[warp] = b; }
}
extern "C" __global__ void bits(const unsigned* x, int* clz, int* ffs, unsigned* brev, int* popc, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    clz[i] = __clz(x[i]);
    ffs[i] = __ffs(x[i]);
    brev[i] = __brev(x[i]);
    popc[i] = __popc(x[i]);
}

// Row softmax with the fast intrinsics (one warp per row), and RMSNorm with rsqrtf.
__device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffff, v, o));
    return v;
}
__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffff, v, o);
    return v;
}
extern "C" __global__ void softmax_rows(const float* x, float* y, int rows, int cols) {
    int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (row >= rows) return;
    const float* xr = x + (size_t)row * cols;
    float m = -INFINITY;
    for (int c = lane; c < cols; c += 32) m = fmaxf(m, xr[c]);
    m = warp_max(m);
    float s = 0.0f;
    for (int c = lane; c < cols; c += 32) s += __expf(xr[c] - m);
    s = warp_sum(s);
    for (int c = lane; c < cols; c += 32) y[(size_t)row * cols + c] = __fdividef(__expf(xr[c] - m), s);
}
extern "C" __global__ void rmsnorm(const float* x, const float* w, float* y, int cols, float eps) {
    const float* xr = x + (size_t)blockIdx.x * cols;
    float ss = 0.0f;
    for (int c = threadIdx.x; c < cols; c += 32) ss += xr[c] * xr[c];
    ss = warp_sum(ss);
    float inv = rsqrtf(ss / cols + eps);
    for (int c = threadIdx.x; c < cols; c += 32) y[(size_t)blockIdx.x * cols + c] = xr[c] * inv * w[c];
}

// half2 arithmetic: y = a * x + y two halves at a time, and a product and a sum of pairs.
extern "C" __global__ void haxpy(int n2, __half a, const __half2* x, __half2* y, __half2* prod, __half2* sum) {
    __half2 a2 = __half2half2(a);
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n2; i += blockDim.x * gridDim.x) {
        prod[i] = __hmul2(x[i], y[i]);
        sum[i] = __hadd2(x[i], y[i]);
        y[i] = __hfma2(a2, x[i], y[i]);
    }
}

// The classic float atomicMax built on atomicCAS, defined by the kernel under CUDA's own name (CUDA has
// no float overload), and the pre-sm_60 double atomicAdd guarded by __CUDA_ARCH__ as the guide shows.
__device__ float atomicMax(float* address, float val) {
    int* address_as_int = (int*)address;
    int old = *address_as_int, assumed;
    do {
        assumed = old;
        old = atomicCAS(address_as_int, assumed, __float_as_int(fmaxf(val, __int_as_float(assumed))));
    } while (assumed != old);
    return __int_as_float(old);
}
#if __CUDA_ARCH__ < 600
__device__ double atomicAdd(double* address, double val) {
    unsigned long long int* address_as_ull = (unsigned long long int*)address;
    unsigned long long int old = *address_as_ull, assumed;
    do {
        assumed = old;
        old = atomicCAS(address_as_ull, assumed, __double_as_longlong(val + __longlong_as_double(assumed)));
    } while (assumed != old);
    return __longlong_as_double(old);
}
#endif
extern "C" __global__ void max_and_sum(const float* x, float* mx, double* total, int n) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += blockDim.x * gridDim.x) {
        atomicMax(mx, x[i]);
        atomicAdd(total, (double)x[i]);
    }
}

// "An Efficient Matrix Transpose in CUDA C/C++": a padded tile (no bank conflicts), any matrix size.
#define TILE_DIM 32
#define BLOCK_ROWS 8
extern "C" __global__ void transpose(float* odata, const float* idata, int width, int height) {
    __shared__ float tile[TILE_DIM][TILE_DIM + 1];
    int x = blockIdx.x * TILE_DIM + threadIdx.x, y = blockIdx.y * TILE_DIM + threadIdx.y;
    for (int j = 0; j < TILE_DIM; j += BLOCK_ROWS)
        if (x < width && y + j < height) tile[threadIdx.y + j][threadIdx.x] = idata[(y + j) * width + x];
    __syncthreads();
    x = blockIdx.y * TILE_DIM + threadIdx.x;
    y = blockIdx.x * TILE_DIM + threadIdx.y;
    for (int j = 0; j < TILE_DIM; j += BLOCK_ROWS)
        if (x < height && y + j < width) odata[(y + j) * height + x] = tile[threadIdx.x][threadIdx.y + j];
}

// printf from device code and assert: a checked precondition.
extern "C" __global__ void report(const int* x, int n) {
    assert(n <= (int)(blockDim.x * gridDim.x));
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n && x[i] < 0) printf("block %d thread %d: x[%d] = %d is negative\n", blockIdx.x, threadIdx.x, i, x[i]);
}
