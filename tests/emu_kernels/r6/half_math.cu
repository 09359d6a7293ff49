// Paired 16-bit arithmetic as inference kernels write it (FasterTransformer's, vLLM's activation and
// layernorm kernels): __half2 / __nv_bfloat162 math in registers, conversions at the edges, comparisons
// (ordered and unordered, as CUDA distinguishes them), and atomicAdd on __half2, __nv_bfloat162 and double.
#include <cuda_fp16.h>
#include <cuda_bf16.h>

// y = gelu_tanh(x * w + b) in half2, then per-pair stats in float; and the same in bfloat162.
extern "C" __global__ void half2_bias_gelu(const __half2* __restrict__ x, const __half2* __restrict__ w,
                                           const __half2* __restrict__ b, __half2* __restrict__ y,
                                           float2* __restrict__ wide, int n2) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n2) return;
    const __half2 v = __hfma2(x[i], w[i], b[i]);
    const float2 f = __half22float2(v);
    const float k = 0.7978845608f;
    const float gx = 0.5f * f.x * (1.0f + tanhf(k * (f.x + 0.044715f * f.x * f.x * f.x)));
    const float gy = 0.5f * f.y * (1.0f + tanhf(k * (f.y + 0.044715f * f.y * f.y * f.y)));
    y[i] = __float22half2_rn(make_float2(gx, gy));
    wide[i] = make_float2(__low2float(v), __high2float(v));
}

extern "C" __global__ void bf162_ops(const __nv_bfloat162* a, const __nv_bfloat162* b, __nv_bfloat162* sum,
                                     __nv_bfloat162* prod, __nv_bfloat162* fma, __nv_bfloat162* quot,
                                     __nv_bfloat162* mx, float* lows, int n2) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n2) return;
    sum[i] = __hadd2(a[i], b[i]);
    prod[i] = __hmul2(a[i], b[i]);
    fma[i] = __hfma2(a[i], b[i], __float2bfloat162_rn(1.0f));
    quot[i] = __h2div(a[i], b[i]);
    mx[i] = __hmax2(a[i], __hneg2(b[i]));
    lows[i] = __low2float(a[i]) + __high2float(__lows2bfloat162(a[i], b[i]));
}

// CUDA's half comparisons: __hne is ordered (false when either is NaN), __hneu unordered (true); the vector
// forms, and the half2 operators (== is "both lanes equal", != is "both lanes unequal or NaN").
extern "C" __global__ void half_compare(const __half2* a, const __half2* b, int* flags, __half2* lanes, int n2) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n2) return;
    const __half ax = __low2half(a[i]), bx = __low2half(b[i]);
    flags[6 * i + 0] = __hne(ax, bx);
    flags[6 * i + 1] = __hneu(ax, bx);
    flags[6 * i + 2] = __hltu(ax, bx) + 2 * __hgeu(ax, bx) + 4 * __hequ(ax, bx);
    flags[6 * i + 3] = a[i] == b[i];
    flags[6 * i + 4] = a[i] != b[i];
    flags[6 * i + 5] = __hbne2(a[i], b[i]) + 2 * __hbneu2(a[i], b[i]);
    lanes[2 * i] = __hne2(a[i], b[i]);
    lanes[2 * i + 1] = __hneu2(a[i], b[i]);
}

// Scatter-add into 16-bit pairs and doubles (a histogram of weights, as a mixed-precision backward writes it).
extern "C" __global__ void pair_atomics(const int* slot, const __half2* hv, const __nv_bfloat162* bv, const double* dv,
                                        __half2* hsum, __nv_bfloat162* bsum, double* dsum, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    atomicAdd(hsum + slot[i], hv[i]);
    atomicAdd(bsum + slot[i], bv[i]);
    atomicAdd(dsum + slot[i], dv[i]);
}
