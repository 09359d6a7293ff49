// half_convert.cu -- 16-bit floats: __half (IEEE fp16) and __nv_bfloat16 (bf16).
//
// to_half: h[i] = fp16(x[i]) rounded to nearest even, back[i] = float(h[i]).
// to_bf16: bits[i] = the bf16 bit pattern of x[i] (round to nearest even), back[i] = float(that).
// half_axpy: y = a * x + y with x, y in fp16 and the arithmetic in float (the usual
// mixed-precision pattern: load half, compute float, store half).
// Launch: 1-D, one element per thread, any n.
#include <cuda_fp16.h>
#include <cuda_bf16.h>

extern "C" __global__ void to_half(const float* x, __half* h, float* back, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) {
        __half v = __float2half(x[i]);
        h[i] = v;
        back[i] = __half2float(v);
    }
}

extern "C" __global__ void to_bf16(const float* x, unsigned short* bits, float* back, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) {
        __nv_bfloat16 v = __float2bfloat16(x[i]);
        bits[i] = __bfloat16_as_ushort(v);
        back[i] = __bfloat162float(v);
    }
}

extern "C" __global__ void half_axpy(const __half* x, __half* y, float a, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] = __float2half(a * __half2float(x[i]) + __half2float(y[i]));
}
