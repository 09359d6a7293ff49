// Round 7: quantization kernels in the style of bitsandbytes and of LLM int8/fp8 inference code: NF4 dequantize
// with a __constant__ code book and per-block absmax (two 4-bit codes per byte, written as __nv_bfloat162 pairs),
// row-wise int8 quantization with the rounding-mode conversion intrinsics, and a bf16 fused multiply-add epilogue
// with __hfma2 / __hmax2_nan / __hmin2 on __nv_bfloat162 read through int4 (16-byte) loads.
#include <cuda_runtime.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cstdint>

__constant__ float nf4_code[16] = {
    -1.0f, -0.6961928009986877f, -0.5250730514526367f, -0.39491748809814453f, -0.28444138169288635f,
    -0.18477343022823334f, -0.09105003625154495f, 0.0f, 0.07958029955625534f, 0.16093020141124725f,
    0.24611230194568634f, 0.33791524171829224f, 0.44070982933044434f, 0.5626170039176941f, 0.7229568362236023f, 1.0f};

// Each thread expands one byte (high nibble first, as bitsandbytes packs them); blocksize values share one absmax.
template <int BLOCKSIZE>
__global__ void dequantize_nf4_bf16(const uint8_t* __restrict__ packed, const float* __restrict__ absmax,
                                    __nv_bfloat162* __restrict__ out, int n_bytes) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n_bytes) return;
  const uint8_t byte = __ldg(packed + i);
  const float scale = __ldg(absmax + (2 * i) / BLOCKSIZE);
  out[i] = __floats2bfloat162_rn(nf4_code[byte >> 4] * scale, nf4_code[byte & 0x0f] * scale);
}

// Row-wise symmetric int8: scale = absmax / 127, q = round-half-even(x / scale) saturated to [-127, 127]
// (__float2int_rn, then a clamp); the half input is also rounded down to an int with __half2int_rd, and to a
// short with __half2short_rz (the conversion intrinsics that saturate and send NaN to 0).
extern "C" __global__ void quantize_rowwise_int8(const __half* __restrict__ x, int8_t* __restrict__ q,
                                                 float* __restrict__ scales, int* __restrict__ floors,
                                                 short* __restrict__ truncs, long long* __restrict__ wide, int cols) {
  const __half* row = x + static_cast<size_t>(blockIdx.x) * cols;
  float amax = 0.0f;
  for (int c = threadIdx.x; c < cols; c += blockDim.x) amax = fmaxf(amax, fabsf(__half2float(row[c])));
#pragma unroll
  for (int offset = 16; offset > 0; offset /= 2) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, offset));
  __shared__ float warp_max[32];
  if (threadIdx.x % 32 == 0) warp_max[threadIdx.x / 32] = amax;
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int w = 1; w < (blockDim.x + 31) / 32; ++w) amax = fmaxf(amax, warp_max[w]);
    warp_max[0] = amax;
    scales[blockIdx.x] = amax / 127.0f;
  }
  __syncthreads();
  const float inv = 127.0f / warp_max[0];
  for (int c = threadIdx.x; c < cols; c += blockDim.x) {
    const size_t at = static_cast<size_t>(blockIdx.x) * cols + c;
    const int v = __float2int_rn(__half2float(row[c]) * inv);
    q[at] = static_cast<int8_t>(max(-127, min(127, v)));
    floors[at] = __half2int_rd(row[c]);
    truncs[at] = __half2short_rz(row[c]);
    wide[at] = __half2ll_rn(row[c]);
  }
}

// out = clamp(a * b + c, lo, hi) in bf16 pairs, eight values (one int4) per thread; NaN propagates (_nan max).
extern "C" __global__ void bf16_fma_clamp(const __nv_bfloat16* __restrict__ a, const __nv_bfloat16* __restrict__ b,
                                          const __nv_bfloat16* __restrict__ c, __nv_bfloat16* __restrict__ out,
                                          float lo, float hi, int n_vec) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n_vec) return;
  const int4 va = reinterpret_cast<const int4*>(a)[i];
  const int4 vb = reinterpret_cast<const int4*>(b)[i];
  const int4 vc = reinterpret_cast<const int4*>(c)[i];
  const __nv_bfloat162* pa = reinterpret_cast<const __nv_bfloat162*>(&va);
  const __nv_bfloat162* pb = reinterpret_cast<const __nv_bfloat162*>(&vb);
  const __nv_bfloat162* pc = reinterpret_cast<const __nv_bfloat162*>(&vc);
  const __nv_bfloat162 lo2 = __float2bfloat162_rn(lo), hi2 = __float2bfloat162_rn(hi);
  int4 vo;
  __nv_bfloat162* po = reinterpret_cast<__nv_bfloat162*>(&vo);
#pragma unroll
  for (int k = 0; k < 4; ++k) po[k] = __hmin2(__hmax2_nan(__hfma2(pa[k], pb[k], pc[k]), lo2), hi2);
  reinterpret_cast<int4*>(out)[i] = vo;
}
