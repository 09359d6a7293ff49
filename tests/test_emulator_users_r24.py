"""Round 24: CUDA as its users write it (the CUDA samples' styles), run unedited through the emulator's CuPy API
against a float64 NumPy reference; then the round-23 gaps: -ftz=true flushing floats only, a bit-field left of
`/=` under --use_fast_math, the device heap's books in the sanitizer's build.

What failed at the round's start, and the fix (in the emulator, never the kernel):

* Refused where a GPU runs it: the CUDA samples' reduce6, whose lanes 2 and 3 of a 4-lane ballot mask shuffle from
  lanes 4 and 5 (outside the mask; CUDA leaves the value undefined, and only lane 0's sum is kept), was a
  KernelFault.  Now such a lane reads all-ones bits (a NaN), and the launch is a KernelFault naming the shuffle only
  when that NaN reaches a floating-point argument array (in the sanitizer's build too); initcheck=True refuses the
  read itself.
* Wrong numbers, silently: under -ftz=true (--use_fast_math) SSE's FTZ/DAZ flushed double subnormals and inline
  PTX f32 without .ftz too; a GPU flushes floats only.  The kernel is now compiled to assembly and its double
  instructions and libm double calls run with FTZ/DAZ cleared; PTX f32 without .ftz as well.
* Did not build: a bit-field left of `/=` under --use_fast_math (the fast division's operator/= takes a reference).
* Under sanitize=True the device heap kept no books: a malloc past cudaLimitMallocHeapSize succeeded, a double free
  was AddressSanitizer's report, a leak did not count in deviceHeapInUse.

The kernels (written for this file, in the styles of the CUDA samples and the CUDA C++ guide): a shared-memory
reduction finished by warp shuffles over a grid-stride loop, cooperative groups' thread_block / tiled_partition /
cg::reduce, a Blelloch (work-efficient) exclusive scan in dynamic shared memory with bank-conflict padding, a tiled
transpose with a padded tile, a 256-bin histogram with shared atomics, matrixMul as a template with `#pragma unroll`
(RawModule name_expressions), `__ldg` and float4 loads through reinterpret_cast under `__launch_bounds__`, a
convolution reading `__constant__` memory, an atomicCAS loop for a float max, half / bfloat16 intrinsics, printf
and assert in kernels, CuPy's ElementwiseKernel / ReductionKernel; a kernel's bug (an out-of-bounds write, a race)
is a Python error, never a crash.
"""
from __future__ import annotations

import re
from functools import lru_cache

import numpy as np
import pytest

from minilora import emulator as emu
from minilora.emulator import ElementwiseKernel, KernelFault, RaceError, RawModule, ReductionKernel

pytestmark = pytest.mark.skipif(not emu.is_available(), reason="the CUDA emulator needs g++")
rng = np.random.default_rng(2424)

# ------------------------------------------------------------------------------------------- reductions
REDUCTIONS = r"""
#include <cooperative_groups.h>
#include <cooperative_groups/reduce.h>
namespace cg = cooperative_groups;

#define FULL_MASK 0xffffffff

__inline__ __device__ float warpReduceSum(float val) {
    for (int offset = warpSize / 2; offset > 0; offset /= 2)
        val += __shfl_down_sync(FULL_MASK, val, offset);
    return val;
}

// one partial per block: a grid-stride loop, warps reduce by shuffles, warp 0 reduces the warps' sums
extern "C" __global__ void block_sums(const float* __restrict__ in, float* __restrict__ partial, int n) {
    static __shared__ float shared[32];
    int lane = threadIdx.x % warpSize;
    int wid = threadIdx.x / warpSize;
    float sum = 0.0f;
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += blockDim.x * gridDim.x)
        sum += in[i];
    sum = warpReduceSum(sum);
    if (lane == 0) shared[wid] = sum;
    __syncthreads();
    sum = (threadIdx.x < blockDim.x / warpSize) ? shared[lane] : 0.0f;
    if (wid == 0) sum = warpReduceSum(sum);
    if (threadIdx.x == 0) partial[blockIdx.x] = sum;
}

// cooperative groups: tiles of 32 reduce with cg::reduce, the tiles' leaders add into the total
extern "C" __global__ void cg_sum(const float* in, float* total, int n) {
    cg::thread_block block = cg::this_thread_block();
    cg::thread_block_tile<32> tile = cg::tiled_partition<32>(block);
    float v = 0.0f;
    for (int i = block.group_index().x * block.size() + block.thread_rank(); i < n; i += block.size() * gridDim.x)
        v += in[i];
    float s = cg::reduce(tile, v, cg::plus<float>());
    if (tile.thread_rank() == 0) atomicAdd(total, s);
}

// no atomicMax for float: the classic atomicCAS loop on the bits
__device__ float atomicMaxFloat(float* address, float val) {
    int* address_as_int = (int*)address;
    int old = *address_as_int, assumed;
    do {
        assumed = old;
        old = atomicCAS(address_as_int, assumed, __float_as_int(fmaxf(val, __int_as_float(assumed))));
    } while (assumed != old);
    return __int_as_float(old);
}

extern "C" __global__ void max_kernel(const float* x, float* result, int n) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += blockDim.x * gridDim.x)
        atomicMaxFloat(result, x[i]);
}

// 256 bins: each block counts into shared memory, then adds its counts to the global histogram
#define NUM_BINS 256
extern "C" __global__ void histogram256(const unsigned char* data, unsigned int* hist, int n) {
    __shared__ unsigned int s_hist[NUM_BINS];
    for (int b = threadIdx.x; b < NUM_BINS; b += blockDim.x) s_hist[b] = 0;
    __syncthreads();
    int stride = blockDim.x * gridDim.x;
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
        atomicAdd(&s_hist[data[i]], 1u);
    __syncthreads();
    for (int b = threadIdx.x; b < NUM_BINS; b += blockDim.x)
        if (s_hist[b]) atomicAdd(&hist[b], s_hist[b]);
}
"""


@lru_cache(maxsize=None)
def module(source: str, options: tuple = (), name_expressions: tuple = (), sanitize: bool = False) -> RawModule:
    return RawModule(code=source, options=options, name_expressions=list(name_expressions) or None,
                     sanitize=sanitize).compile()


def test_shared_memory_reduction_with_warp_shuffles_over_a_grid_stride_loop():
    n, blocks = 3001, 4
    x = rng.standard_normal(n).astype(np.float32)
    partial = np.zeros(blocks, np.float32)
    module(REDUCTIONS).get_function("block_sums")((blocks,), (128,), (x, partial, np.int32(n)))
    np.testing.assert_allclose(partial.astype(np.float64).sum(), x.astype(np.float64).sum(), rtol=0, atol=1e-3)


def test_cooperative_groups_tiles_reduce_into_one_total():
    n = 1000
    x = rng.standard_normal(n).astype(np.float32)
    total = np.zeros(1, np.float32)
    module(REDUCTIONS).get_function("cg_sum")((3,), (96,), (x, total, np.int32(n)))
    np.testing.assert_allclose(total[0], x.astype(np.float64).sum(), rtol=0, atol=1e-3)


def test_atomic_cas_loop_float_max():
    x = (rng.standard_normal(777) * 10).astype(np.float32)
    result = np.array([-np.inf], np.float32)
    module(REDUCTIONS).get_function("max_kernel")((2,), (64,), (x, result, np.int32(x.size)))
    assert result[0] == x.max()


def test_histogram_with_shared_atomics_counts_every_byte():
    data = rng.integers(0, 256, 5000, dtype=np.uint8)
    hist = np.zeros(256, np.uint32)
    module(REDUCTIONS).get_function("histogram256")((3,), (128,), (data, hist, np.int32(data.size)))
    np.testing.assert_array_equal(hist, np.bincount(data, minlength=256))


# The CUDA samples' reduce6: the dynamic shared memory behind SharedMemory<T>'s conversion (a double
# specialisation), a ballot mask for the warps' sums -- whose lanes 2 and 3 shuffle from lanes 4 and 5, outside
# the mask: an undefined value only lane 0's never-used partners read.
REDUCE6 = r"""
#include <cooperative_groups.h>
namespace cg = cooperative_groups;
template <class T> struct SharedMemory {
    __device__ inline operator T*() { extern __shared__ int __smem[]; return (T*)__smem; }
    __device__ inline operator const T*() const { extern __shared__ int __smem[]; return (T*)__smem; }
};
template <> struct SharedMemory<double> {
    __device__ inline operator double*() { extern __shared__ double __smem_d[]; return (double*)__smem_d; }
    __device__ inline operator const double*() const { extern __shared__ double __smem_d[]; return (double*)__smem_d; }
};
template <class T, unsigned int blockSize, bool nIsPow2>
__global__ void reduce6(const T* __restrict__ g_idata, T* __restrict__ g_odata, unsigned int n) {
    cg::thread_block cta = cg::this_thread_block();
    T* sdata = SharedMemory<T>();
    unsigned int tid = threadIdx.x;
    unsigned int gridSize = blockSize * gridDim.x;
    unsigned int maskLength = (blockSize & 31);
    maskLength = (maskLength > 0) ? (32 - maskLength) : maskLength;
    const unsigned int mask = (0xffffffff) >> maskLength;
    T mySum = 0;
    if (nIsPow2) {
        unsigned int i = blockIdx.x * blockSize * 2 + threadIdx.x;
        gridSize = gridSize << 1;
        while (i < n) {
            mySum += g_idata[i];
            if ((i + blockSize) < n) mySum += g_idata[i + blockSize];
            i += gridSize;
        }
    } else {
        unsigned int i = blockIdx.x * blockSize + threadIdx.x;
        while (i < n) { mySum += g_idata[i]; i += gridSize; }
    }
    for (int offset = warpSize / 2; offset > 0; offset /= 2) mySum += __shfl_down_sync(mask, mySum, offset);
    if ((tid % warpSize) == 0) sdata[tid / warpSize] = mySum;
    cg::sync(cta);
    const unsigned int shmem_extent = (blockSize / warpSize) > 0 ? (blockSize / warpSize) : 1;
    const unsigned int ballot_result = __ballot_sync(mask, tid < shmem_extent);
    if (tid < shmem_extent) {
        mySum = sdata[tid];
        for (int offset = blockDim.x / warpSize / 2; offset > 0; offset /= 2)
            mySum += __shfl_down_sync(ballot_result, mySum, offset);
    }
    if (tid == 0) g_odata[blockIdx.x] = mySum;
#ifdef KEEP_EVERY_LANE
    if (tid < shmem_extent) g_odata[gridDim.x + tid] = mySum;  // lanes 2 and 3 hold the undefined sums
#endif
}
"""
REDUCE6_INSTANCES = ("reduce6<float, 128, true>", "reduce6<double, 64, false>")


@pytest.mark.parametrize("expression,dtype,block", [(REDUCE6_INSTANCES[0], np.float32, 128),
                                                    (REDUCE6_INSTANCES[1], np.float64, 64)])
def test_cuda_samples_reduce6_runs_though_idle_lanes_shuffle_from_outside_the_mask(expression, dtype, block):
    n, blocks = 5000, 8
    x = rng.standard_normal(n).astype(dtype)
    partial = np.zeros(blocks, dtype)
    kernel = module(REDUCE6, name_expressions=REDUCE6_INSTANCES).get_function(expression)
    kernel((blocks,), (block,), (x, partial, np.uint32(n)), shared_mem=block * x.itemsize)
    np.testing.assert_allclose(partial.astype(np.float64).sum(), x.astype(np.float64).sum(), rtol=0, atol=1e-3)


def test_an_undefined_shuffle_value_that_reaches_memory_is_a_kernel_fault():
    x = rng.standard_normal(1000).astype(np.float32)
    out = np.zeros(2 + 4, np.float32)
    kernel = module(REDUCE6, ("-DKEEP_EVERY_LANE",), REDUCE6_INSTANCES).get_function(REDUCE6_INSTANCES[0])
    with pytest.raises(KernelFault, match=r"__shfl_down_sync at .*lane 2 reads lane 4, which is not in the mask "
                                          r"\(mask 0x0000000f\).*reached argument 1 \('g_odata'\)"):
        kernel((2,), (128,), (x, out, np.uint32(1000)), shared_mem=128 * 4)
    kernel = module(REDUCE6, (), REDUCE6_INSTANCES).get_function(REDUCE6_INSTANCES[0])
    with pytest.raises(KernelFault, match=r"lane 2 reads lane 4"):  # initcheck: any read of an undefined value
        kernel((2,), (128,), (x, out[:2], np.uint32(1000)), shared_mem=128 * 4, initcheck=True)



def test_an_undefined_shuffle_value_is_found_in_the_sanitizers_child_too():
    source = r"""
extern "C" __global__ void four_lanes(const float* x, float* out) {
    float v = x[threadIdx.x];
    if (threadIdx.x < 4) v += __shfl_down_sync(0xf, v, 2);  // lanes 2, 3 read lanes 4, 5: outside the mask
    if (threadIdx.x < 4) out[threadIdx.x] = v;
}"""
    x, out = np.arange(32, dtype=np.float32), np.zeros(4, np.float32)
    kernel = emu.RawKernel(source, "four_lanes", sanitize=True)
    with pytest.raises(KernelFault, match=r"lane 2 reads lane 4.*reached argument 1 \('out'\)"):
        kernel((1,), (32,), (x, out))


# ---------------------------------------------------------------------------- scans, transposes, loads
LAYOUT = r"""
#define NUM_BANKS 32
#define LOG_NUM_BANKS 5
#define CONFLICT_FREE_OFFSET(n) ((n) >> LOG_NUM_BANKS)

// Blelloch's work-efficient exclusive scan of one block's 2 * blockDim.x elements (GPU Gems 3, ch. 39)
extern "C" __global__ void prescan(float* g_odata, const float* g_idata, int n) {
    extern __shared__ float temp[];
    int thid = threadIdx.x;
    int offset = 1;
    int ai = thid, bi = thid + (n / 2);
    int bankOffsetA = CONFLICT_FREE_OFFSET(ai), bankOffsetB = CONFLICT_FREE_OFFSET(bi);
    temp[ai + bankOffsetA] = g_idata[ai];
    temp[bi + bankOffsetB] = g_idata[bi];
    for (int d = n >> 1; d > 0; d >>= 1) {  // up-sweep
        __syncthreads();
        if (thid < d) {
            int a = offset * (2 * thid + 1) - 1, b = offset * (2 * thid + 2) - 1;
            a += CONFLICT_FREE_OFFSET(a); b += CONFLICT_FREE_OFFSET(b);
            temp[b] += temp[a];
        }
        offset *= 2;
    }
    if (thid == 0) temp[n - 1 + CONFLICT_FREE_OFFSET(n - 1)] = 0;
    for (int d = 1; d < n; d *= 2) {  // down-sweep
        offset >>= 1;
        __syncthreads();
        if (thid < d) {
            int a = offset * (2 * thid + 1) - 1, b = offset * (2 * thid + 2) - 1;
            a += CONFLICT_FREE_OFFSET(a); b += CONFLICT_FREE_OFFSET(b);
            float t = temp[a];
            temp[a] = temp[b];
            temp[b] += t;
        }
    }
    __syncthreads();
    g_odata[ai] = temp[ai + bankOffsetA];
    g_odata[bi] = temp[bi + bankOffsetB];
}

#define TILE_DIM 32
#define BLOCK_ROWS 8
// the padded tile: column reads of tile[.][TILE_DIM + 1] hit 32 different banks
extern "C" __global__ void transposeNoBankConflicts(float* odata, const float* idata, int width, int height) {
    __shared__ float tile[TILE_DIM][TILE_DIM + 1];
    int x = blockIdx.x * TILE_DIM + threadIdx.x;
    int y = blockIdx.y * TILE_DIM + threadIdx.y;
    for (int j = 0; j < TILE_DIM; j += BLOCK_ROWS)
        if (x < width && y + j < height) tile[threadIdx.y + j][threadIdx.x] = idata[(y + j) * width + x];
    __syncthreads();
    x = blockIdx.y * TILE_DIM + threadIdx.x;
    y = blockIdx.x * TILE_DIM + threadIdx.y;
    for (int j = 0; j < TILE_DIM; j += BLOCK_ROWS)
        if (x < height && y + j < width) odata[(y + j) * height + x] = tile[threadIdx.x][threadIdx.y + j];
}

// float4 loads through reinterpret_cast and read-only loads through __ldg, 256 threads at most per block
extern "C" __global__ void __launch_bounds__(256) saxpy_vec4(int n, float a, const float* __restrict__ x,
                                                             float* __restrict__ y) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    int n4 = n / 4;
    if (i < n4) {
        float4 xv = __ldg(reinterpret_cast<const float4*>(x) + i);
        float4 yv = reinterpret_cast<float4*>(y)[i];
        yv.x = a * xv.x + yv.x; yv.y = a * xv.y + yv.y;
        yv.z = a * xv.z + yv.z; yv.w = a * xv.w + yv.w;
        reinterpret_cast<float4*>(y)[i] = yv;
    }
    if (i == 0)
        for (int j = 4 * n4; j < n; ++j) y[j] = a * __ldg(&x[j]) + y[j];  // the tail
}

#define FILTER_RADIUS 3
__constant__ float c_filter[2 * FILTER_RADIUS + 1];
// a 1-D convolution: the filter in constant memory, the block's input (with halo) in shared memory
extern "C" __global__ void conv1d(const float* in, float* out, int n) {
    extern __shared__ float s_in[];
    int g = blockIdx.x * blockDim.x + threadIdx.x;
    int l = threadIdx.x + FILTER_RADIUS;
    s_in[l] = g < n ? in[g] : 0.0f;
    if (threadIdx.x < FILTER_RADIUS) {
        int left = g - FILTER_RADIUS, right = g + blockDim.x;
        s_in[threadIdx.x] = left >= 0 ? in[left] : 0.0f;
        s_in[l + blockDim.x] = right < n ? in[right] : 0.0f;
    }
    __syncthreads();
    if (g >= n) return;
    float sum = 0.0f;
#pragma unroll
    for (int k = -FILTER_RADIUS; k <= FILTER_RADIUS; ++k) sum += c_filter[k + FILTER_RADIUS] * s_in[l + k];
    out[g] = sum;
}
"""


def test_blelloch_exclusive_scan_in_dynamic_shared_memory():
    n = 256  # one block of n / 2 threads; the padding adds n / 32 floats
    x = rng.integers(-8, 8, n).astype(np.float32)
    out = np.zeros(n, np.float32)
    shared = (n + n // 32) * 4
    module(LAYOUT).get_function("prescan")((1,), (n // 2,), (out, x, np.int32(n)), shared_mem=shared)
    np.testing.assert_array_equal(out, np.concatenate([[0], np.cumsum(x.astype(np.float64))[:-1]]))


@pytest.mark.parametrize("height,width", [(64, 32), (45, 70)])
def test_tiled_transpose_with_a_padded_tile(height, width):
    a = rng.standard_normal((height, width)).astype(np.float32)
    out = np.zeros((width, height), np.float32)
    grid = (-(-width // 32), -(-height // 32))
    module(LAYOUT).get_function("transposeNoBankConflicts")(grid, (32, 8), (out, a, np.int32(width), np.int32(height)))
    np.testing.assert_array_equal(out, a.T)


def test_float4_loads_through_ldg_under_launch_bounds():
    n = 1030
    x, y = rng.standard_normal(n).astype(np.float32), rng.standard_normal(n).astype(np.float32)
    want = 2.5 * x.astype(np.float64) + y
    module(LAYOUT).get_function("saxpy_vec4")((2,), (256,), (np.int32(n), np.float32(2.5), x, y))
    np.testing.assert_allclose(y, want, rtol=1e-6, atol=1e-6)
    with pytest.raises(emu.CUDADriverError):  # more threads than __launch_bounds__(256) allows
        module(LAYOUT).get_function("saxpy_vec4")((1,), (512,), (np.int32(n), np.float32(2.5), x, y))


def test_convolution_with_a_constant_memory_filter():
    n, radius = 300, 3
    mod = module(LAYOUT)
    taps = rng.standard_normal(2 * radius + 1).astype(np.float32)
    mod.get_global("c_filter")[...] = taps
    x, out = rng.standard_normal(n).astype(np.float32), np.zeros(n, np.float32)
    block = 64
    mod.get_function("conv1d")((-(-n // block),), (block,), (x, out, np.int32(n)),
                               shared_mem=(block + 2 * radius) * 4)
    padded = np.pad(x.astype(np.float64), radius)
    want = sum(taps[k].astype(np.float64) * padded[k:k + n] for k in range(2 * radius + 1))
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------- templates through CuPy
TEMPLATES = r"""
// matrixMul in the CUDA samples' style: the tile size a template parameter, the inner product unrolled
template <int BLOCK_SIZE, typename T>
__global__ void matrixMulCUDA(T* C, const T* A, const T* B, int wA, int wB) {
    int bx = blockIdx.x, by = blockIdx.y, tx = threadIdx.x, ty = threadIdx.y;
    int aBegin = wA * BLOCK_SIZE * by, aEnd = aBegin + wA - 1, aStep = BLOCK_SIZE;
    int bBegin = BLOCK_SIZE * bx, bStep = BLOCK_SIZE * wB;
    T Csub = 0;
    for (int a = aBegin, b = bBegin; a <= aEnd; a += aStep, b += bStep) {
        __shared__ T As[BLOCK_SIZE][BLOCK_SIZE];
        __shared__ T Bs[BLOCK_SIZE][BLOCK_SIZE];
        As[ty][tx] = A[a + wA * ty + tx];
        Bs[ty][tx] = B[b + wB * ty + tx];
        __syncthreads();
#pragma unroll
        for (int k = 0; k < BLOCK_SIZE; ++k) Csub += As[ty][k] * Bs[k][tx];
        __syncthreads();
    }
    int c = wB * BLOCK_SIZE * by + BLOCK_SIZE * bx;
    C[c + wB * ty + tx] = Csub;
}

namespace ops {
template <typename T> struct Square { __device__ T operator()(T v) const { return v * v; } };
}
template <typename T, typename Op>
__global__ void map_kernel(const T* in, T* out, size_t n) {
    Op op;
    for (size_t i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)blockDim.x * gridDim.x)
        out[i] = op(in[i]);
}
"""
MATMUL = ("matrixMulCUDA<16, float>", "matrixMulCUDA<8, double>")
MAPS = ("map_kernel<float, ops::Square<float>>", "map_kernel<double, ops::Square<double>>")


@pytest.mark.parametrize("expression,dtype,tile", [(MATMUL[0], np.float32, 16), (MATMUL[1], np.float64, 8)])
def test_template_matrix_mul_through_name_expressions(expression, dtype, tile):
    hA, wA, wB = 2 * tile, 3 * tile, tile
    A, B = rng.standard_normal((hA, wA)).astype(dtype), rng.standard_normal((wA, wB)).astype(dtype)
    C = np.zeros((hA, wB), dtype)
    kernel = module(TEMPLATES, name_expressions=MATMUL + MAPS).get_function(expression)
    kernel((wB // tile, hA // tile), (tile, tile), (C, A, B, np.int32(wA), np.int32(wB)))
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(C, A.astype(np.float64) @ B, rtol=tol, atol=tol)


@pytest.mark.parametrize("expression,dtype", [(MAPS[0], np.float32), (MAPS[1], np.float64)])
def test_template_with_a_functor_in_a_namespace(expression, dtype):
    x = rng.standard_normal(333).astype(dtype)
    out = np.zeros_like(x)
    module(TEMPLATES, name_expressions=MATMUL + MAPS).get_function(expression)((2,), (64,), (x, out, np.uint64(x.size)))
    np.testing.assert_array_equal(out, x * x)


# ----------------------------------------------------------------------------------- half and bfloat16
HALF = r"""
#include <cuda_fp16.h>
#include <cuda_bf16.h>
// y = a * x + y in half, half2 for pairs; a dot product accumulated in float from bfloat16 inputs
extern "C" __global__ void haxpy(int n, __half a, const __half* x, __half* y) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    int n2 = n / 2;
    if (i < n2) {
        __half2 a2 = __half2half2(a);
        const __half2* x2 = reinterpret_cast<const __half2*>(x);
        __half2* y2 = reinterpret_cast<__half2*>(y);
        y2[i] = __hfma2(a2, x2[i], y2[i]);
    }
    if (i == 0 && (n & 1)) y[n - 1] = __hfma(a, x[n - 1], y[n - 1]);
}

extern "C" __global__ void half_ops(const float* x, __half* sum, __half* prod, __half* mx, float* back, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    __half h = __float2half(x[i]), g = __float2half_rn(0.75f);
    sum[i] = __hadd(h, g);
    prod[i] = __hmul(h, g);
    mx[i] = __hmax(h, __hneg(g));
    back[i] = __half2float(h) + __low2float(__halves2half2(g, h));
}

extern "C" __global__ void bf16_dot(const __nv_bfloat16* a, const __nv_bfloat16* b, float* out, int n) {
    __shared__ float partial[64];
    float acc = 0.0f;
    for (int i = threadIdx.x; i < n; i += blockDim.x) acc += __bfloat162float(a[i]) * __bfloat162float(b[i]);
    partial[threadIdx.x] = acc;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s) partial[threadIdx.x] += partial[threadIdx.x + s];
        __syncthreads();
    }
    if (threadIdx.x == 0) out[0] = partial[0];
}

extern "C" __global__ void to_bf16(const float* x, __nv_bfloat16* y, __nv_bfloat16* twice, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) {
        y[i] = __float2bfloat16(x[i]);
        twice[i] = __hmul(y[i], __float2bfloat16(2.0f));
    }
}
"""


def bf16_round(x: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 (round to nearest even), kept as float32 values."""
    bits = x.astype(np.float32).view(np.uint32).astype(np.uint64)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16 << 16
    return rounded.astype(np.uint32).view(np.float32)


def test_half_axpy_with_half2_fma():
    n = 301
    x, y = rng.standard_normal(n).astype(np.float16), rng.standard_normal(n).astype(np.float16)
    a = np.float16(1.5)
    want = (np.float64(a) * x.astype(np.float64) + y).astype(np.float16)  # fma: one rounding to half
    module(HALF).get_function("haxpy")((2,), (128,), (np.int32(n), a, x, y))
    np.testing.assert_array_equal(y, want)


def test_half_intrinsics_round_as_numpy_float16():
    n = 200
    x = (rng.standard_normal(n) * 3).astype(np.float32)
    outs = [np.zeros(n, np.float16) for _ in range(3)] + [np.zeros(n, np.float32)]
    module(HALF).get_function("half_ops")((2,), (128,), (x, *outs, np.int32(n)))
    h, g = x.astype(np.float16), np.float16(0.75)
    np.testing.assert_array_equal(outs[0], (h.astype(np.float64) + 0.75).astype(np.float16))
    np.testing.assert_array_equal(outs[1], (h.astype(np.float64) * 0.75).astype(np.float16))
    np.testing.assert_array_equal(outs[2], np.maximum(h, -g))
    np.testing.assert_array_equal(outs[3], h.astype(np.float32) + np.float32(0.75))


def test_bfloat16_conversion_product_and_dot():
    n = 150
    x = (rng.standard_normal(n) * 5).astype(np.float32)
    y, twice = np.zeros(n, np.uint16), np.zeros(n, np.uint16)
    module(HALF).get_function("to_bf16")((2,), (128,), (x, y, twice, np.int32(n)))
    want = bf16_round(x)
    np.testing.assert_array_equal((y.astype(np.uint32) << 16).view(np.float32), want)
    np.testing.assert_array_equal((twice.astype(np.uint32) << 16).view(np.float32), 2 * want)
    out = np.zeros(1, np.float32)
    module(HALF).get_function("bf16_dot")((1,), (64,), (y, twice, out, np.int32(n)))
    np.testing.assert_allclose(out[0], (want.astype(np.float64) * 2 * want).sum(), rtol=1e-5)


# ------------------------------------------------------------------- printf, assert and a kernel's bugs
DIAGNOSTICS = r"""
#include <cstdio>
#include <cassert>
extern "C" __global__ void hello(const float* x, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n && x[i] < 0.0f) printf("block %d thread %d: x[%d] = %.2f\n", blockIdx.x, threadIdx.x, i, x[i]);
}

extern "C" __global__ void checked_sqrt(const float* x, float* y, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) {
        assert(x[i] >= 0.0f);
        y[i] = sqrtf(x[i]);
    }
}

// off by one: i <= n writes one element past the end
extern "C" __global__ void scale_off_by_one(float* y, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i <= n) y[i] = 2.0f * y[i];
}

// a lookup in a local table with an unchecked index
extern "C" __global__ void local_table(float* out, int k) {
    float table[8];
    for (int j = 0; j < 8; ++j) table[j] = j * 0.5f;
    out[threadIdx.x] = table[k + threadIdx.x];
}

// a block sum that forgets the __syncthreads() between the tree's steps
extern "C" __global__ void racy_sum(const float* x, float* out) {
    __shared__ float s[128];
    s[threadIdx.x] = x[threadIdx.x];
    __syncthreads();
    for (int stride = blockDim.x / 2; stride > 0; stride >>= 1)
        if (threadIdx.x < stride) s[threadIdx.x] += s[threadIdx.x + stride];
    if (threadIdx.x == 0) out[0] = s[0];
}
"""


def test_printf_in_a_kernel_prints_each_thread_line(capfd):
    x = np.array([1.0, -2.5, 3.0, -0.25], np.float32)
    module(DIAGNOSTICS).get_function("hello")((2,), (2,), (x, np.int32(4)))
    lines = sorted(capfd.readouterr().out.splitlines())
    assert lines == ["block 0 thread 1: x[1] = -2.50", "block 1 thread 1: x[3] = -0.25"]


def test_a_failed_assert_in_a_kernel_is_a_python_error():
    y = np.zeros(40, np.float32)
    module(DIAGNOSTICS).get_function("checked_sqrt")((1,), (64,), (np.arange(40, dtype=np.float32), y, np.int32(40)))
    np.testing.assert_array_equal(y, np.sqrt(np.arange(40, dtype=np.float32)))
    x = np.arange(40, dtype=np.float32)
    x[17] = -1.0
    with pytest.raises(KernelFault, match=r"x\[i\] >= 0.0f"):
        module(DIAGNOSTICS).get_function("checked_sqrt")((1,), (64,), (x, y, np.int32(40)))


def test_an_out_of_bounds_write_is_a_python_error_naming_the_argument():
    y = np.ones(64, np.float32)
    with pytest.raises(KernelFault, match="y"):
        module(DIAGNOSTICS).get_function("scale_off_by_one")((1,), (128,), (y, np.int32(64)))


def test_a_local_array_indexed_far_past_its_end_is_named_so():
    out = np.zeros(4, np.float32)
    module(DIAGNOSTICS).get_function("local_table")((1,), (4,), (out, np.int32(2)))
    np.testing.assert_array_equal(out, [1.0, 1.5, 2.0, 2.5])
    # since round 29 the bounds check names the index itself, before the stack's guard page would
    with pytest.raises(KernelFault, match=r"'local_table' indexes element 100000 of an array of type 'float \[8\]'"):
        module(DIAGNOSTICS).get_function("local_table")((1,), (4,), (out, np.int32(100000)))


def test_a_missing_syncthreads_is_a_race_under_racecheck():
    x, out = rng.standard_normal(128).astype(np.float32), np.zeros(1, np.float32)
    kernel = module(DIAGNOSTICS).get_function("racy_sum")
    with pytest.raises(RaceError):
        kernel((1,), (128,), (x, out), racecheck=True)


# ----------------------------------------------------------------------- ElementwiseKernel and ReductionKernel
def test_elementwise_kernel_saxpy_and_a_reduction_kernel_norm():
    saxpy = ElementwiseKernel("float32 x, float32 y, float32 a", "float32 z", "z = a * x + y", "saxpy_r24")
    x, y = rng.standard_normal((4, 50)).astype(np.float32), rng.standard_normal((4, 50)).astype(np.float32)
    z = saxpy(x, y, np.float32(0.5))
    np.testing.assert_array_equal(z, np.float32(0.5) * x + y)
    l2 = ReductionKernel("T x", "T y", "x * x", "a + b", "y = sqrt(a)", "0", "l2_r24")
    np.testing.assert_allclose(l2(x, axis=1), np.sqrt((x.astype(np.float64) ** 2).sum(1)), rtol=1e-6)
    relu_max = ReductionKernel("T x", "T y", "max(x, (T)0)", "max(a, b)", "y = a", "0", "relu_max_r24")
    np.testing.assert_array_equal(relu_max(x, axis=0), np.maximum(x, 0).max(0))


# -------------------------------------------------------------------- round 23's gaps: fast-math bit-fields
BITFIELDS = r"""
struct Packed { unsigned level : 4; unsigned count : 12; int delta : 8; };
extern "C" __global__ void halve(Packed* p, float* f, int n) {
    int i = threadIdx.x;
    if (i >= n) return;
    Packed q = p[i];
    q.count /= 3; q.level /= 2u; q.delta /= -2;   // bit-fields left of `/=`: integer division
    p[i] = q;
    f[i] /= 3.0f;                                 // a float: __fdividef under --use_fast_math
}
"""


def test_a_bit_field_left_of_divide_assign_builds_under_fast_math():
    level, count, delta = np.array([15, 7, 3, 1]), np.array([4095, 100, 9, 2]), np.array([-128, 127, -3, 5])
    packed = (level | count << 4 | (delta & 0xFF) << 16).astype(np.uint32)
    f = np.array([1, 2, 3, 10], np.float32)
    module(BITFIELDS, ("--use_fast_math",)).get_function("halve")((1,), (4,), (packed, f, np.int32(4)))
    assert list(packed & 15) == list(level // 2) and list(packed >> 4 & 4095) == list(count // 3)
    assert list((packed >> 16 & 0xFF).astype(np.uint8).view(np.int8)) == [64, -63, 1, -2]  # C's truncation
    np.testing.assert_array_equal(f, np.array([1, 2, 3, 10], np.float32) * (np.float32(1) / np.float32(3)))


# ------------------------------------------------------------ round 23's gaps: -ftz=true flushes floats only
FTZ = r"""
extern "C" __global__ void mixed(const float* f, const double* d, float* fo, double* dout) {
    const float a = f[0];        // a float subnormal
    const double x = d[0], y = d[1];
    fo[0] = f[1] * f[1];         // 1e-40: a float result flushed
    dout[0] = y * 1e-10;         // 1e-310: a double subnormal result, kept
    dout[1] = x + x;             // a double subnormal input, kept
    dout[2] = exp(-710.0);       // libm's double function: its subnormal result kept
    dout[3] = sqrt(x);
    dout[4] = __dadd_rd(x, x);   // a directed rounding, kept
    dout[5] = fma(y, 1e-10, x);
    dout[6] = x > 0.0 ? 1.0 : -1.0;
    dout[7] = (double)a;         // cvt.f64.f32 of a float subnormal: read as 0 under -ftz
    float r;
    asm("add.f32 %0, %1, %2;" : "=f"(r) : "f"(a), "f"(-0.0f)); fo[1] = r;      // no .ftz: kept
    asm("mul.rn.f32 %0, %1, %2;" : "=f"(r) : "f"(f[1]), "f"(f[1])); fo[2] = r;
    asm("add.ftz.f32 %0, %1, %2;" : "=f"(r) : "f"(a), "f"(-0.0f)); fo[3] = r;  // .ftz: flushed
    asm("cvt.f64.f32 %0, %1;" : "=d"(dout[8]) : "f"(a));                         // no .ftz: kept
}
"""


@pytest.mark.parametrize("options", [("-ftz=true",), ("--use_fast_math",)])
def test_ftz_flushes_float_subnormals_and_keeps_double_ones(options):
    f, d = np.array([-3e-39, 1e-20], np.float32), np.array([4e-310, 1e-300])
    fo, dout = np.full(4, 7, np.float32), np.full(9, 7.0)
    module(FTZ, options).get_function("mixed")((1,), (1,), (f, d, fo, dout))
    x, y = d
    assert fo[0] == 0 and fo[3] == 0 and np.signbit(fo[3])
    assert fo[1] == f[0] and fo[2] == np.float32(1e-20) * np.float32(1e-20) != 0
    np.testing.assert_array_equal(dout, [y * 1e-10, 2 * x, np.exp(-710.0), np.sqrt(x), 2 * x, y * 1e-10 + x, 1.0,
                                         0.0, np.float64(f[0])])


# ---------------------------------------------------- round 23's gaps: the device heap in the sanitizer's build
HEAP = r"""
extern "C" __global__ void heap(int* out, int mode) {
    if (threadIdx.x != 0) return;
    if (mode == 0) { char* p = (char*)malloc(16 << 20); out[0] = p == nullptr; free(p); }    // past 8 MiB: NULL
    if (mode == 1) { int* p = (int*)malloc(64); p[0] = 5; out[0] = p[0]; free(p); free(p); } // a double free
    if (mode == 2) { int* p = new int[256]; out[0] = p != nullptr; }                          // 1 KiB leaked
}
"""


def test_the_sanitizer_build_keeps_the_device_heaps_books():
    from minilora.emulator import cuda
    cuda.runtime.deviceReset()
    kernel, out = emu.RawKernel(HEAP, "heap", sanitize=True), np.zeros(1, np.int32)
    try:
        kernel((1,), (32,), (out, np.int32(0)))
        assert out[0] == 1  # a malloc past cudaLimitMallocHeapSize answers NULL, as on a GPU
        with pytest.raises(KernelFault, match=r"called free\(\) at heap\.cu:5 .* already freed: a double free"):
            kernel((1,), (32,), (out, np.int32(1)))
        kernel((1,), (32,), (out, np.int32(2)))
        assert out[0] == 1 and cuda.runtime.deviceHeapInUse() == 1024  # the leak stays taken
        with pytest.raises(cuda.runtime.CUDARuntimeError, match="cudaErrorInvalidValue"):
            cuda.runtime.deviceSetLimit(cuda.runtime.cudaLimitMallocHeapSize, 64 << 20)  # fixed once used
    finally:
        cuda.runtime.deviceReset()


# ---------------------------------------------------------------------------- CuPy's own headers in kernels
CUPY_HEADERS = r"""
#include <cupy/carray.cuh>
#include <cupy/math_constants.h>
extern "C" __global__ void clamp_inf(const float16* x, float* y, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] = __hisinf(x[i]) ? CUDART_NAN_F : (float)x[i];
}
"""


def test_cupys_bundled_headers_in_raw_and_reduction_kernels():
    x = np.array([1.5, np.inf, -2.0, -np.inf], np.float16)
    y = np.zeros(4, np.float32)
    module(CUPY_HEADERS).get_function("clamp_inf")((1,), (32,), (x, y, np.int32(4)))
    np.testing.assert_array_equal(y, [1.5, np.nan, -2.0, np.nan])
    amax = ReductionKernel("T x", "T y", "x", "max(a, b)", "y = a", "-CUDART_INF_F", "amax_r24",
                           preamble="#include <cupy/math_constants.h>")
    a = rng.standard_normal((3, 7)).astype(np.float32)
    np.testing.assert_array_equal(amax(a, axis=1), a.max(1))
    with pytest.raises(emu.CompileError, match=r"CUDART_PI_F"):  # not among CuPy's four
        RawModule(code="#include <cupy/math_constants.h>\n"
                       "extern \"C\" __global__ void k(float* y) { y[0] = CUDART_PI_F; }").compile()
    # (<cupy/complex.cuh> is there since round 31: thrust::complex, tests/test_emulator_users_r31.py)
    with pytest.raises(emu.CompileError, match=r"CuPy's headers beyond the emulator's"):
        RawModule(code="#include <cupy/atomics.cuh>\nextern \"C\" __global__ void k(float* y) {}").compile()
