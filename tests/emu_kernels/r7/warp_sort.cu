// Round 7: warp-level code as 2025 kernels write it: a block-wide radix sort for top-k (ballot + popc ranks with
// %lanemask_lt read through inline PTX), a warp-aggregated histogram whose groups of equal keys come from
// __match_any_sync and whose per-group sums come from __reduce_add_sync over each group's own mask, and a
// vectorized scale-and-accumulate written in inline PTX (ld.global.nc.v4.f32, fma.rn.f32, st.global.cs.v4.f32,
// red.global.add.f32).
#include <cuda_runtime.h>
#include <cstdint>

__device__ __forceinline__ unsigned lanemask_lt() {
  unsigned mask;
  asm("mov.u32 %0, %%lanemask_lt;" : "=r"(mask));
  return mask;
}

// Floats as unsigned keys that sort in the same order (negative floats reversed); NaN (positive) sorts last.
__device__ __forceinline__ unsigned ordered_key(float f) {
  const unsigned u = __float_as_uint(f);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

// One block per row of n <= BLOCK values: an LSD radix sort, one bit per pass, on the inverted keys so that the
// largest come first; equal keys keep their index order (each pass is a stable split).  Writes the top k.
template <int BLOCK>
__global__ void __launch_bounds__(BLOCK) block_topk(const float* __restrict__ x, int n, int k, float* __restrict__ values,
                                                    int* __restrict__ indices) {
  static_assert(BLOCK % 32 == 0 && BLOCK <= 1024, "whole warps");
  constexpr int WARPS = BLOCK / 32;
  __shared__ unsigned keys[BLOCK];
  __shared__ int ids[BLOCK];
  __shared__ int zeros_before[WARPS];
  __shared__ int total_zeros;
  const int t = threadIdx.x, lane = t % 32, warp = t / 32;
  const float* row = x + static_cast<size_t>(blockIdx.x) * n;
  unsigned key = t < n ? ~ordered_key(row[t]) : 0xffffffffu;  // padding sorts after every real value
  int id = t;
  for (int bit = 0; bit < 32; ++bit) {
    const bool one = (key >> bit) & 1u;
    const unsigned zeros = __ballot_sync(0xffffffffu, !one);
    if (lane == 0) zeros_before[warp] = __popc(zeros);
    __syncthreads();
    if (t == 0) {
      int running = 0;
#pragma unroll
      for (int w = 0; w < WARPS; ++w) {
        const int z = zeros_before[w];
        zeros_before[w] = running;
        running += z;
      }
      total_zeros = running;
    }
    __syncthreads();
    const int zeros_below_me = zeros_before[warp] + __popc(zeros & lanemask_lt());
    const int dest = one ? total_zeros + (t - zeros_below_me) : zeros_below_me;
    keys[dest] = key;
    ids[dest] = id;
    __syncthreads();
    key = keys[t];
    id = ids[t];
    __syncthreads();
  }
  if (t < k) {
    const unsigned u = ~key;
    values[static_cast<size_t>(blockIdx.x) * k + t] = __uint_as_float((u & 0x80000000u) ? (u & 0x7fffffffu) : ~u);
    indices[static_cast<size_t>(blockIdx.x) * k + t] = id;
  }
}

// Weighted histogram: lanes holding the same bin find each other with __match_any_sync, add their weights with
// __reduce_add_sync over that group's mask (groups differ from lane to lane), and the group's lowest lane adds
// the group's total and count with one atomic each.
extern "C" __global__ void weighted_histogram(const int* __restrict__ bins, const unsigned* __restrict__ weights, int n,
                                              unsigned* __restrict__ totals, unsigned* __restrict__ counts,
                                              unsigned* __restrict__ atomics_used) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  const unsigned active = __ballot_sync(0xffffffffu, i < n);
  if (i >= n) return;
  const int bin = bins[i];
  const unsigned peers = __match_any_sync(active, bin);
  const unsigned group_total = __reduce_add_sync(peers, weights[i]);
  const int leader = __ffs(peers) - 1;
  if ((threadIdx.x % 32) == leader) {
    atomicAdd(totals + bin, group_total);
    atomicAdd(counts + bin, static_cast<unsigned>(__popc(peers)));
    atomicAdd(atomics_used, 1u);
  }
}

// y = a * x + y over float4s through inline PTX, and the sum of y into *total with red.global.add.
extern "C" __global__ void axpy_ptx(const float* __restrict__ x, float* __restrict__ y, float a, int n4,
                                    float* __restrict__ total) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n4) return;
  float x0, x1, x2, x3, y0, y1, y2, y3;
  asm volatile("ld.global.nc.v4.f32 {%0, %1, %2, %3}, [%4];"
               : "=f"(x0), "=f"(x1), "=f"(x2), "=f"(x3) : "l"(x + 4 * i));
  asm volatile("ld.global.v4.f32 {%0, %1, %2, %3}, [%4];"
               : "=f"(y0), "=f"(y1), "=f"(y2), "=f"(y3) : "l"(y + 4 * i));
  asm("fma.rn.f32 %0, %1, %2, %0;" : "+f"(y0) : "f"(a), "f"(x0));
  asm("fma.rn.f32 %0, %1, %2, %0;" : "+f"(y1) : "f"(a), "f"(x1));
  asm("fma.rn.f32 %0, %1, %2, %0;" : "+f"(y2) : "f"(a), "f"(x2));
  asm("fma.rn.f32 %0, %1, %2, %0;" : "+f"(y3) : "f"(a), "f"(x3));
  asm volatile("st.global.cs.v4.f32 [%0], {%1, %2, %3, %4};" :: "l"(y + 4 * i), "f"(y0), "f"(y1), "f"(y2), "f"(y3)
               : "memory");
  asm volatile("red.global.add.f32 [%0], %1;" :: "l"(total), "f"((y0 + y1) + (y2 + y3)) : "memory");
}

// A mutex from atomicCAS (lanes of one warp and of other warps contend): each thread appends its index to a
// list under the lock.  Fine on a GPU since Volta (independent thread scheduling); the emulator must let the
// lock holder run while the others spin.
extern "C" __global__ void append_under_spin_lock(int* __restrict__ lock, int* __restrict__ count, int* __restrict__ list) {
  bool done = false;
  while (!done) {
    if (atomicCAS(lock, 0, 1) == 0) {
      const int k = *count;
      list[k] = blockIdx.x * blockDim.x + threadIdx.x;
      *count = k + 1;
      __threadfence();
      atomicExch(lock, 0);
      done = true;
    }
  }
}
