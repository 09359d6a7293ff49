// Round 7: intrinsic semantics that kernels rely on at the edges: 16-bit float <-> integer conversions in every
// rounding mode (NaN, saturation, 64-bit results), the _nan max/min returning the canonical NaN, the _mask
// compares, shuffle offsets as shfl.sync reads them (low 5 bits: -1 is 31), __mul24 / __umul24 on 32-bit inputs,
// and numeric_limits of the 16-bit types through <cuda/std/limits>.
#include <cuda_fp16.h>
#include <cuda_bf16.h>
#include <cuda/std/limits>
#include <cuda/std/bit>

extern "C" __global__ void half_to_int(const unsigned short* __restrict__ bits, long long* __restrict__ out, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const __half h = __ushort_as_half(bits[i]);
  const __nv_bfloat16 b = __ushort_as_bfloat16(bits[i]);
  long long* o = out + 16 * i;
  o[0] = __half2int_rn(h);
  o[1] = __half2int_rd(h);
  o[2] = __half2uint_ru(h);
  o[3] = __half2short_rz(h);
  o[4] = __half2ll_rn(h);
  o[5] = static_cast<long long>(__half2ull_rz(h));
  o[6] = __half2char_rz(h);
  o[7] = __half2uchar_rz(h);
  o[8] = __bfloat162int_rn(b);
  o[9] = __bfloat162ll_rd(b);
  o[10] = __bfloat162short_ru(b);
  o[11] = __bfloat162ushort_rn(b);
  o[12] = __bfloat162char_rz(b);
  o[13] = static_cast<long long>(__bfloat162ull_rn(b));
  o[14] = __bfloat162uint_rz(b);
  o[15] = __half2ushort_rd(h);
}

extern "C" __global__ void int_to_16bit(const long long* __restrict__ ints, unsigned short* __restrict__ out, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const long long v = ints[i];
  unsigned short* o = out + 8 * i;
  o[0] = __half_as_ushort(__ll2half_rn(v));
  o[1] = __half_as_ushort(__ll2half_rz(v));
  o[2] = __half_as_ushort(__ll2half_rd(v));
  o[3] = __half_as_ushort(__ll2half_ru(v));
  o[4] = __bfloat16_as_ushort(__ll2bfloat16_rn(v));
  o[5] = __bfloat16_as_ushort(__ull2bfloat16_rz(static_cast<unsigned long long>(v)));
  o[6] = __bfloat16_as_ushort(__ll2bfloat16_rd(v));
  o[7] = __bfloat16_as_ushort(__ll2bfloat16_ru(v));
}

// out: __hmax_nan, __hmin_nan, __hmax2_nan (both lanes), __heq2_mask, __hlt2_mask, __hgeu2_mask as two halves each.
extern "C" __global__ void nan_max_and_masks(const unsigned short* __restrict__ a, const unsigned short* __restrict__ b,
                                             unsigned short* __restrict__ out, unsigned* __restrict__ masks, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const __half x = __ushort_as_half(a[i]), y = __ushort_as_half(b[i]);
  out[4 * i + 0] = __half_as_ushort(__hmax_nan(x, y));
  out[4 * i + 1] = __half_as_ushort(__hmin_nan(x, y));
  const __nv_bfloat162 p = __hmax2_nan(__halves2bfloat162(__ushort_as_bfloat16(a[i]), __ushort_as_bfloat16(b[i])),
                                       __halves2bfloat162(__ushort_as_bfloat16(b[i]), __ushort_as_bfloat16(a[i])));
  out[4 * i + 2] = __bfloat16_as_ushort(p.x);
  out[4 * i + 3] = __bfloat16_as_ushort(p.y);
  const __half2 xy = __halves2half2(x, y), yx = __halves2half2(y, x);
  masks[3 * i + 0] = __heq2_mask(xy, yx);
  masks[3 * i + 1] = __hlt2_mask(xy, yx);
  masks[3 * i + 2] = __hgeu2_mask(xy, yx);
}

extern "C" __global__ void shuffle_offsets(int* __restrict__ out) {
  const int lane = threadIdx.x, v = 100 + lane;
  out[lane] = __shfl_up_sync(0xffffffffu, v, -1);  // delta is unsigned: 31
  out[32 + lane] = __shfl_down_sync(0xffffffffu, v, 33);  // 1
  out[64 + lane] = __shfl_up_sync(0xffffffffu, v, 34, 16);  // 2 within each 16-lane segment
  out[96 + lane] = __shfl_xor_sync(0xffffffffu, v, 16, 16);  // the upper segment reads the lower one
}

extern "C" __global__ void mul24(const int* __restrict__ a, const int* __restrict__ b, int* __restrict__ s,
                                 unsigned* __restrict__ u, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  s[i] = __mul24(a[i], b[i]);
  u[i] = __umul24(static_cast<unsigned>(a[i]), static_cast<unsigned>(b[i]));
}

template <typename T>
__device__ void limits_of(unsigned short* o) {
  using L = cuda::std::numeric_limits<T>;
  const T values[6] = {L::lowest(), L::max(), L::min(), L::epsilon(), L::infinity(), L::denorm_min()};
  for (int k = 0; k < 6; ++k) o[k] = cuda::std::bit_cast<unsigned short>(values[k]);
  o[6] = L::digits;
}

extern "C" __global__ void limits_16bit(unsigned short* __restrict__ out) {
  limits_of<__half>(out);
  limits_of<__nv_bfloat16>(out + 7);
}

// __half / __nv_bfloat16 built from any integer type (rounded to nearest even) and converted back to integers
// by their conversion operators (toward zero, saturating, NaN to 0 -- or 0x8000000000000000 for 64 bits).
template <typename H>
__device__ void integer_round_trip(const long long* v, unsigned short* bits, long long* back) {
  const unsigned u = static_cast<unsigned>(v[0]);
  const size_t s = static_cast<size_t>(v[1]);
  const H from_u = u, from_size = static_cast<H>(s), from_ll = static_cast<H>(v[2]), from_short = static_cast<short>(v[3]);
  const H values[4] = {from_u, from_size, from_ll, from_short};
  for (int k = 0; k < 4; ++k) bits[k] = *reinterpret_cast<const unsigned short*>(&values[k]);
  const H x = values[2];
  back[0] = static_cast<int>(x);
  back[1] = static_cast<unsigned short>(x);
  back[2] = static_cast<long long>(x);
  back[3] = static_cast<signed char>(x);
  back[4] = x ? 1 : 0;
}

extern "C" __global__ void integer_constructors(const long long* __restrict__ v, unsigned short* __restrict__ bits,
                                                long long* __restrict__ back, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  integer_round_trip<__half>(v + 4 * i, bits + 8 * i, back + 10 * i);
  integer_round_trip<__nv_bfloat16>(v + 4 * i, bits + 8 * i + 4, back + 10 * i + 5);
}

// CUDA's min / max: fminf / fmaxf on floats (NaN gives the other argument), and a __half argument taken as float.
extern "C" __global__ void min_max_overloads(const float* __restrict__ a, const float* __restrict__ b,
                                             const __half* __restrict__ h, float* __restrict__ out, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  out[6 * i + 0] = min(a[i], b[i]);
  out[6 * i + 1] = max(a[i], b[i]);
  out[6 * i + 2] = max(h[i], 0.0f);
  out[6 * i + 3] = static_cast<float>(min(static_cast<double>(a[i]), b[i]));
  out[6 * i + 4] = static_cast<float>(max(3, static_cast<int>(b[i] == b[i] ? 1 : 7)));
  out[6 * i + 5] = static_cast<float>(min(-1, 2u) == 2u ? 1 : 0);  // int and unsigned compare unsigned
}
