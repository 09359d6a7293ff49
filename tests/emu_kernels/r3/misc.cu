// Everyday CUDA habits: block votes, the unrolled volatile last warp, templates, typed views of
// dynamic shared memory, __constant__ and __device__ globals, structs by value, vector types, printf.
#include <cstdio>
#include <cassert>

extern "C" __global__ void block_votes(const float* x, int* out, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    float v = i < n ? x[i] : 0.0f;
    int count = __syncthreads_count(v > 0.0f);
    int all = __syncthreads_and(v > -3.0f);
    int any = __syncthreads_or(v > 2.0f);
    if (threadIdx.x == 0) {
        out[3 * blockIdx.x] = count;
        out[3 * blockIdx.x + 1] = all;
        out[3 * blockIdx.x + 2] = any;
    }
}

// "Optimizing Parallel Reduction in CUDA" (reduction #6): templated block size, the last warp unrolled.
// Written as many Volta-era ports write it, `sdata[tid] += sdata[tid + 16]; __syncwarp();` is still a race
// (a lane may read a slot its neighbour already updated in the same step): that is warpReduceRacy.
template <unsigned int blockSize>
__device__ void warpReduceRacy(volatile float* sdata, unsigned int tid) {
    if (blockSize >= 64) { sdata[tid] += sdata[tid + 32]; __syncwarp(); }
    if (blockSize >= 32) { sdata[tid] += sdata[tid + 16]; __syncwarp(); }  // LINE: racy step
    if (blockSize >= 16) { sdata[tid] += sdata[tid + 8]; __syncwarp(); }
    if (blockSize >= 8) { sdata[tid] += sdata[tid + 4]; __syncwarp(); }
    if (blockSize >= 4) { sdata[tid] += sdata[tid + 2]; __syncwarp(); }
    if (blockSize >= 2) { sdata[tid] += sdata[tid + 1]; __syncwarp(); }
}

// The fix from NVIDIA's "Using CUDA Warp-Level Primitives": read, __syncwarp(), write, __syncwarp().
template <unsigned int blockSize>
__device__ void warpReduce(volatile float* sdata, unsigned int tid) {
    float v = sdata[tid];
#pragma unroll
    for (unsigned int s = 32; s > 0; s >>= 1) {
        if (blockSize >= 2 * s) {
            v += sdata[tid + s];
            __syncwarp();
            sdata[tid] = v;
            __syncwarp();
        }
    }
}

template <unsigned int blockSize, bool racy>
__global__ void reduce6(const float* g_idata, float* g_odata, unsigned int n) {
    extern __shared__ float sdata[];
    unsigned int tid = threadIdx.x;
    unsigned int i = blockIdx.x * (blockSize * 2) + tid;
    unsigned int gridSize = blockSize * 2 * gridDim.x;
    sdata[tid] = 0;
    while (i < n) {
        sdata[tid] += g_idata[i];
        if (i + blockSize < n) sdata[tid] += g_idata[i + blockSize];
        i += gridSize;
    }
    __syncthreads();
#pragma unroll
    for (unsigned int s = blockSize / 2; s > 32; s >>= 1) {
        if (tid < s) sdata[tid] += sdata[tid + s];
        __syncthreads();
    }
    if (tid < 32) {
        if (racy) warpReduceRacy<blockSize>(sdata, tid);
        else warpReduce<blockSize>(sdata, tid);
    }
    if (tid == 0) g_odata[blockIdx.x] = sdata[0];
}

// One dynamic shared buffer seen as ints then floats (the programming guide's "extern __shared__" example).
extern "C" __global__ void two_views(const int* keys, const float* vals, float* out, int n) {
    extern __shared__ int shared[];
    int* skeys = shared;
    float* svals = (float*)&skeys[n];
    for (int i = threadIdx.x; i < n; i += blockDim.x) { skeys[i] = keys[i]; svals[i] = vals[i]; }
    __syncthreads();
    for (int i = threadIdx.x; i < n; i += blockDim.x) out[i] = svals[n - 1 - i] * skeys[i];
}

__constant__ float coeffs[4];
__device__ int counter;
__device__ float table[8] = {1, 2, 3, 4, 5, 6, 7, 8};

extern "C" __global__ void poly(const float* x, float* y, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) {
        float v = x[i];
        y[i] = ((coeffs[3] * v + coeffs[2]) * v + coeffs[1]) * v + coeffs[0] + table[i % 8];
        atomicAdd(&counter, 1);
    }
}

struct Params {
    float scale;
    int offset;
    double shift;
    int n;
};
extern "C" __global__ void with_struct(Params p, const float* x, float* y) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < p.n) y[i] = p.scale * x[i] + p.offset + (float)p.shift;
}

// float4 loads (reinterpret_cast of a float array), make_float4, __ldg, int2 and uchar4.
extern "C" __global__ void vectors(const float* __restrict__ x, float* __restrict__ y, const int2* pairs,
                                   int* sums, const uchar4* pixels, float* gray, int n4) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n4) {
        float4 v = __ldg(reinterpret_cast<const float4*>(x) + i);
        reinterpret_cast<float4*>(y)[i] = make_float4(v.w, v.z, v.y, v.x * 2.0f);
        int2 p = pairs[i];
        sums[i] = p.x + p.y;
        uchar4 px = pixels[i];
        gray[i] = 0.299f * px.x + 0.587f * px.y + 0.114f * px.z + px.w * 0.0f;
    }
}

extern "C" __global__ void check_positive(const float* x, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) assert(x[i] > 0.0f);
}

extern "C" __global__ void say(const float* x, const char* unused) {
    if (threadIdx.x == 0 && blockIdx.x == 1)
        printf("block %d: x=%f int=%d hex=%x str=%s ptr_is_set=%d e=%.3e\n", blockIdx.x, x[1], 42, 255, "hi",
               x != nullptr, 12345.678);
}

// 3-D grid of 3-D blocks: every thread writes its own linear index.
extern "C" __global__ void index3d(int* out, int nx, int ny, int nz) {
    int x = blockIdx.x * blockDim.x + threadIdx.x;
    int y = blockIdx.y * blockDim.y + threadIdx.y;
    int z = blockIdx.z * blockDim.z + threadIdx.z;
    if (x < nx && y < ny && z < nz) out[(z * ny + y) * nx + x] = x + 1000 * y + 1000000 * z;
}

// Grid-stride loop with a grid much larger than the data, and with a small one.
extern "C" __global__ void saxpy(int n, float a, const float* x, float* y) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += blockDim.x * gridDim.x) y[i] = a * x[i] + y[i];
}

// More than 48 KB of static __shared__ is refused (ptxas: "uses too much shared data").
extern "C" __global__ void too_much_static(float* out) {
    __shared__ float big[13000];  // 52,000 bytes
    big[threadIdx.x] = threadIdx.x;
    __syncthreads();
    out[threadIdx.x] = big[blockDim.x - 1 - threadIdx.x];
}
