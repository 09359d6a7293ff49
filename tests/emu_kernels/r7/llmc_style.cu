// Round 7: kernels in the style of llm.c's dev/cuda and of minimal flash-attention code: an online softmax with
// exp2f and a -INFINITY start (masked entries are -inf), a Welford layernorm merged with shuffles over float4
// loads with streaming cache hints, and a float atomicMax built from an atomicCAS loop.
#include <cuda_runtime.h>
#include <cooperative_groups.h>
#include <cooperative_groups/reduce.h>
#include <cfloat>

namespace cg = cooperative_groups;

#define LOG2E_F 1.4426950408889634f

// One warp per row; each lane keeps a running (max, sum of exp) pair, merged across the warp at the end.
extern "C" __global__ void softmax_online_exp2(float* __restrict__ out, const float* __restrict__ inp, int N, int C) {
  cg::thread_block block = cg::this_thread_block();
  cg::thread_block_tile<32> warp = cg::tiled_partition<32>(block);
  const int row = blockIdx.x * warp.meta_group_size() + warp.meta_group_rank();
  if (row >= N) return;
  const float* x = inp + static_cast<size_t>(row) * C;
  float maxval = -INFINITY, sumval = 0.0f;
  for (int i = warp.thread_rank(); i < C; i += warp.size()) {
    const float v = __ldcs(x + i);
    if (v == -INFINITY) continue;  // a masked entry adds nothing (and -inf - -inf would be NaN)
    const float m = fmaxf(maxval, v);
    sumval = sumval * exp2f((maxval - m) * LOG2E_F) + exp2f((v - m) * LOG2E_F);
    maxval = m;
  }
  const float row_max = cg::reduce(warp, maxval, cg::greater<float>());
  sumval *= (maxval == -INFINITY) ? 0.0f : exp2f((maxval - row_max) * LOG2E_F);
  const float row_sum = cg::reduce(warp, sumval, cg::plus<float>());
  const float inv = 1.0f / row_sum;
  for (int i = warp.thread_rank(); i < C; i += warp.size())
    __stcs(out + static_cast<size_t>(row) * C + i, exp2f((x[i] - row_max) * LOG2E_F) * inv);
}

struct Welford {
  float mean, m2, count;
};

__device__ __forceinline__ Welford welford_merge(const Welford& a, const Welford& b) {
  if (b.count == 0.0f) return a;
  if (a.count == 0.0f) return b;
  const float count = a.count + b.count;
  const float delta = b.mean - a.mean;
  const float frac = b.count / count;
  return {a.mean + delta * frac, a.m2 + b.m2 + delta * delta * a.count * frac, count};
}

__device__ __forceinline__ Welford welford_push(Welford w, float x) {
  w.count += 1.0f;
  const float delta = x - w.mean;
  w.mean += delta / w.count;
  w.m2 += delta * (x - w.mean);
  return w;
}

__device__ __forceinline__ Welford warp_welford(Welford w) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) {
    Welford other;
    other.mean = __shfl_xor_sync(0xffffffffu, w.mean, offset);
    other.m2 = __shfl_xor_sync(0xffffffffu, w.m2, offset);
    other.count = __shfl_xor_sync(0xffffffffu, w.count, offset);
    w = welford_merge(w, other);
  }
  return w;
}

// One block per row.  The row's float4 part is read with __ldcs through a reinterpret_cast (C % 4 == 0 only:
// otherwise rows after the first are not 16-byte aligned), the rest one float at a time.
template <int BLOCK>
__global__ void layernorm_welford(float* __restrict__ out, float* __restrict__ mean_out, float* __restrict__ rstd_out,
                                  const float* __restrict__ inp, const float* __restrict__ weight,
                                  const float* __restrict__ bias, int C, float eps) {
  const float* x = inp + static_cast<size_t>(blockIdx.x) * C;
  const int vec_end = (C % 4 == 0) ? C : 0;
  Welford w{0.0f, 0.0f, 0.0f};
  for (int i = threadIdx.x * 4; i < vec_end; i += BLOCK * 4) {
    const float4 v = __ldcs(reinterpret_cast<const float4*>(x + i));
    w = welford_push(w, v.x);
    w = welford_push(w, v.y);
    w = welford_push(w, v.z);
    w = welford_push(w, v.w);
  }
  for (int i = vec_end + threadIdx.x; i < C; i += BLOCK) w = welford_push(w, x[i]);
  w = warp_welford(w);
  __shared__ Welford partial[BLOCK / 32];
  __shared__ float s_mean, s_rstd;
  if (threadIdx.x % 32 == 0) partial[threadIdx.x / 32] = w;
  __syncthreads();
  if (threadIdx.x == 0) {
    Welford total = partial[0];
#pragma unroll
    for (int k = 1; k < BLOCK / 32; ++k) total = welford_merge(total, partial[k]);
    s_mean = total.mean;
    s_rstd = rsqrtf(total.m2 / total.count + eps);
    mean_out[blockIdx.x] = s_mean;
    rstd_out[blockIdx.x] = s_rstd;
  }
  __syncthreads();
  const float mean = s_mean, rstd = s_rstd;
  float* y = out + static_cast<size_t>(blockIdx.x) * C;
  for (int i = threadIdx.x; i < C; i += BLOCK) __stcs(y + i, (x[i] - mean) * rstd * __ldg(weight + i) + __ldg(bias + i));
}

// The classic float atomicMax: a compare-and-swap loop on the bits, stopping early once the stored value is larger.
__device__ __forceinline__ float atomic_max_float(float* address, float val) {
  int* address_as_i = reinterpret_cast<int*>(address);
  int old = *address_as_i, assumed;
  do {
    assumed = old;
    if (__int_as_float(assumed) >= val) break;
    old = atomicCAS(address_as_i, assumed, __float_as_int(val));
  } while (assumed != old);
  return __int_as_float(old);
}

// And the sign trick: non-negative floats order as signed ints, negative ones in reverse as unsigned ints.
__device__ __forceinline__ float atomic_max_float_signed(float* addr, float value) {
  return !signbit(value) ? __int_as_float(atomicMax(reinterpret_cast<int*>(addr), __float_as_int(value)))
                         : __uint_as_float(atomicMin(reinterpret_cast<unsigned int*>(addr), __float_as_uint(value)));
}

// Per-segment max (segments of `seg` elements) by both methods, and the absmax of everything in a double
// accumulated with atomicAdd(double*) for the mean of |x|.
extern "C" __global__ void segment_max(const float* __restrict__ x, int n, int seg, float* __restrict__ max_cas,
                                       float* __restrict__ max_sign, double* __restrict__ abs_sum) {
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += blockDim.x * gridDim.x) {
    atomic_max_float(max_cas + i / seg, x[i]);
    atomic_max_float_signed(max_sign + i / seg, x[i]);
    atomicAdd(abs_sum, static_cast<double>(fabsf(x[i])));
  }
}
