// Less common intrinsics: half math, half <-> integer conversions, cache-hint loads, __brevll, clock().
#include <cuda_fp16.h>
#include <cuda_bf16.h>

extern "C" __global__ void half_math(const __half* x, __half* out, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    __half v = x[i];
    __half* o = out + 8 * i;
    o[0] = hsin(v);
    o[1] = hcos(v);
    o[2] = hexp2(v);
    o[3] = hfloor(v);
    o[4] = hrint(v);
    o[5] = __hfma_relu(v, v, __float2half(-1.0f));
    o[6] = __hmul_rn(v, __float2half(3.0f));
    o[7] = __short2half_rn((short)__half2short_rn(v)) + __uint2half_rn(7000u);
}

extern "C" __global__ void hints(const float* x, float* y, unsigned long long* rev, long long* ticks, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) {
        __stcg(&y[i], __ldcg(&x[i]) + __ldca(&x[i]) + __ldlu(&x[i]) + __ldcv(&x[i]));
        rev[i] = __brevll(0x0123456789abcdefull + (unsigned long long)i);
        long long t0 = clock();
        ticks[i] = clock64() >= 0 && clock() >= t0;
    }
}

// Directed-rounding float intrinsics: column k of out is op k (add, sub, mul, div, sqrt, rcp, fma) in
// round-toward-zero, down and up (21 columns).
extern "C" __global__ void directed(const float* a, const float* b, const float* c, float* out, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float x = a[i], y = b[i], z = c[i];
    float* o = out + 21 * i;
    o[0] = __fadd_rz(x, y); o[1] = __fsub_rz(x, y); o[2] = __fmul_rz(x, y); o[3] = __fdiv_rz(x, y);
    o[4] = __fsqrt_rz(fabsf(x)); o[5] = __frcp_rz(y); o[6] = __fmaf_rz(x, y, z);
    o[7] = __fadd_rd(x, y); o[8] = __fsub_rd(x, y); o[9] = __fmul_rd(x, y); o[10] = __fdiv_rd(x, y);
    o[11] = __fsqrt_rd(fabsf(x)); o[12] = __frcp_rd(y); o[13] = __fmaf_rd(x, y, z);
    o[14] = __fadd_ru(x, y); o[15] = __fsub_ru(x, y); o[16] = __fmul_ru(x, y); o[17] = __fdiv_ru(x, y);
    o[18] = __fsqrt_ru(fabsf(x)); o[19] = __frcp_ru(y); o[20] = __fmaf_ru(x, y, z);
}
