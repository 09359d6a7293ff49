// half2_ops.cu -- paired 16-bit arithmetic as mixed-precision kernels write it: a half2 dot product
// with __hfma2 accumulation, and element-wise half2 / bfloat162 expressions using the operators and
// the usual intrinsics.  Valid CUDA: the tests compile it with nvcc.
#include <cuda_fp16.h>
#include <cuda_bf16.h>

// out += sum over i of a[i] . b[i]; each thread accumulates its pairs in half2, then adds in float.
extern "C" __global__ void half2_dot(const __half2* a, const __half2* b, float* out, int n2) {
    __half2 acc = __float2half2_rn(0.0f);
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n2; i += gridDim.x * blockDim.x)
        acc = __hfma2(a[i], b[i], acc);
    const float2 f = __half22float2(acc);
    atomicAdd(out, f.x + f.y);
}

// Per pair: c = max(a * b + a, -|b|) - b, then swapped halves, and two packed views.
extern "C" __global__ void half2_elementwise(const __half2* a, const __half2* b, __half2* c, __half2* swapped,
                                             __half2* lows, float* low_plus_high, int n2) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n2) return;
    __half2 r = __hmax2(a[i] * b[i] + a[i], __hneg2(__habs2(b[i])));
    r -= b[i];
    c[i] = r;
    swapped[i] = __lowhigh2highlow(r);
    lows[i] = __halves2half2(__low2half(a[i]), __high2half(b[i]));
    low_plus_high[i] = __low2float(r) + __high2float(r);
}

// Per pair in bfloat16: c = fma(a, b, a) - b and its float view.
extern "C" __global__ void bf162_elementwise(const __nv_bfloat162* a, const __nv_bfloat162* b, __nv_bfloat162* c,
                                             float2* as_float, int n2) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n2) return;
    const __nv_bfloat162 r = __hsub2(__hfma2(a[i], b[i], a[i]), b[i]);
    c[i] = r;
    as_float[i] = __bfloat1622float2(r);
}
