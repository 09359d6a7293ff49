// FP8 as inference kernels use it (a per-tensor scale, E4M3 weights / activations, E5M2 gradients):
// quantize with the saturating class constructors and with __nv_cvt_* in both saturation modes, pack pairs
// and quads, and dequantize through float and through half.
#include <cuda_fp8.h>

extern "C" __global__ void fp8_quantize(const float* x, float scale, __nv_fp8_e4m3* q4, __nv_fp8_e5m2* q5,
                                        unsigned char* nosat4, unsigned char* nosat5, float* back4, float* back5,
                                        __half* half4, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    const float v = x[i] * scale;
    q4[i] = __nv_fp8_e4m3(v);
    q5[i] = __nv_fp8_e5m2(v);
    nosat4[i] = __nv_cvt_float_to_fp8(v, __NV_NOSAT, __NV_E4M3);
    nosat5[i] = __nv_cvt_float_to_fp8(v, __NV_NOSAT, __NV_E5M2);
    back4[i] = float(q4[i]) / scale;
    back5[i] = static_cast<float>(q5[i]) / scale;
    half4[i] = __half(__nv_cvt_fp8_to_halfraw(q4[i].__x, __NV_E4M3));
}

extern "C" __global__ void fp8_pack(const float4* x, __nv_fp8x4_e4m3* quads, __nv_fp8x2_e5m2* pairs, float4* back, int n4) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n4) return;
    quads[i] = __nv_fp8x4_e4m3(x[i]);
    pairs[i] = __nv_fp8x2_e5m2(make_float2(x[i].x, x[i].y));
    back[i] = float4(quads[i]);
}

// The same through inline PTX (sm_89's cvt with FP8 pairs): pack two floats (the first operand goes to the
// upper byte), with and without .relu, and unpack to a half2.
extern "C" __global__ void fp8_ptx(const float2* x, unsigned short* e4, unsigned short* e5, unsigned short* e4relu,
                                   unsigned* halves, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    unsigned short a, b, c;
    asm("cvt.rn.satfinite.e4m3x2.f32 %0, %2, %1;" : "=h"(a) : "f"(x[i].x), "f"(x[i].y));
    asm("cvt.rn.satfinite.e5m2x2.f32 %0, %2, %1;" : "=h"(b) : "f"(x[i].x), "f"(x[i].y));
    asm("cvt.rn.satfinite.relu.e4m3x2.f32 %0, %2, %1;" : "=h"(c) : "f"(x[i].x), "f"(x[i].y));
    unsigned h;
    asm("cvt.rn.f16x2.e4m3x2 %0, %1;" : "=r"(h) : "h"(a));
    e4[i] = a; e5[i] = b; e4relu[i] = c; halves[i] = h;
}
