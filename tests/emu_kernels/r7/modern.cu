// Round 7: C++17/20-era device code as 2025 kernels write it: libcu++ (<cuda/std/...>: cuda::std::min,
// numeric_limits, array, clamp), lambdas, constexpr helpers, a __grid_constant__ parameter struct, templates
// unrolled with #pragma unroll over an int parameter, and one-warp cooperative-groups scans.
#include <cuda_runtime.h>
#include <cooperative_groups.h>
#include <cooperative_groups/reduce.h>
#include <cooperative_groups/scan.h>
#include <cuda/std/limits>
#include <cuda/std/array>
#include <cuda/std/cmath>
#include <cuda/std/algorithm>
#include <cuda/std/type_traits>
#include <cuda/std/utility>
#include <cuda/std/cstdint>

namespace cg = cooperative_groups;

struct ClampParams {
  const float* __restrict__ x;
  float* __restrict__ y;
  int n;
  float lo, hi;
  int stride;  // elements per thread, a loop bound from the struct
};

// Each thread clamps `stride` elements; the parameters come in a __grid_constant__ struct (no copy to local).
extern "C" __global__ void clamp_grid_constant(const __grid_constant__ ClampParams p) {
  const int base = (blockIdx.x * blockDim.x + threadIdx.x) * p.stride;
  for (int k = 0; k < p.stride; ++k) {
    const int i = base + k;
    if (i < p.n) p.y[i] = cuda::std::clamp(p.x[i], p.lo, p.hi);
  }
}

// Row max and argmax with cuda::std::numeric_limits, cuda::std::pair and a lambda merging (value, index).
template <int BLOCK>
__global__ void row_argmax(const float* __restrict__ x, float* __restrict__ best, int* __restrict__ where, int cols) {
  using Pair = cuda::std::pair<float, int>;
  const float* row = x + static_cast<int64_t>(blockIdx.x) * cols;
  auto better = [](const Pair& a, const Pair& b) {
    return (b.first > a.first || (b.first == a.first && b.second < a.second)) ? b : a;
  };
  Pair mine{-cuda::std::numeric_limits<float>::infinity(), cuda::std::numeric_limits<int>::max()};
  for (int c = threadIdx.x; c < cols; c += BLOCK) mine = better(mine, Pair{row[c], c});
  __shared__ cuda::std::array<Pair, BLOCK / 32> partial;
  auto warp = cg::tiled_partition<32>(cg::this_thread_block());
#pragma unroll
  for (int offset = 16; offset > 0; offset /= 2) {
    const Pair other{warp.shfl_down(mine.first, offset), warp.shfl_down(mine.second, offset)};
    mine = better(mine, other);
  }
  if (warp.thread_rank() == 0) partial[warp.meta_group_rank()] = mine;
  __syncthreads();
  if (threadIdx.x == 0) {
    Pair total = partial[0];
    for (int w = 1; w < BLOCK / 32; ++w) total = better(total, partial[w]);
    best[blockIdx.x] = total.first;
    where[blockIdx.x] = total.second;
  }
}

// A constexpr table built at compile time and a generic lambda, applied N times per thread with #pragma unroll.
constexpr cuda::std::array<float, 4> make_coeffs() {
  cuda::std::array<float, 4> c{};
  for (int i = 0; i < 4; ++i) c[i] = 1.0f / static_cast<float>(1 << i);
  return c;
}

template <int N, typename T>
__global__ void horner_unrolled(const T* __restrict__ x, T* __restrict__ y, int n) {
  constexpr auto coeffs = make_coeffs();
  const auto poly = [&](auto v) {
    decltype(v) acc = 0;
#pragma unroll
    for (int i = 3; i >= 0; --i) acc = acc * v + static_cast<decltype(v)>(coeffs[i]);
    return acc;
  };
  const int base = (blockIdx.x * blockDim.x + threadIdx.x) * N;
#pragma unroll
  for (int k = 0; k < N; ++k) {
    if (base + k < n) {
      if constexpr (cuda::std::is_same_v<T, double>) y[base + k] = poly(x[base + k]);
      else y[base + k] = static_cast<T>(poly(static_cast<float>(x[base + k])));
    }
  }
}

// Stream compaction: keep the positive values, in order, with cg::exclusive_scan over each warp and an
// atomicAdd on a global counter per warp (the output order between warps is fixed by warp rank here: a
// block-wide prefix of the warp totals in shared memory).
extern "C" __global__ void compact_positive(const int* __restrict__ x, int* __restrict__ out, int* __restrict__ count,
                                            int n) {
  auto block = cg::this_thread_block();
  auto warp = cg::tiled_partition<32>(block);
  __shared__ int warp_totals[32];
  __shared__ int block_base;
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  const int keep = (i < n && x[i] > 0) ? 1 : 0;
  const int pos_in_warp = cg::exclusive_scan(warp, keep);
  const int warp_total = cg::reduce(warp, keep, cg::plus<int>());
  if (warp.thread_rank() == 0) warp_totals[warp.meta_group_rank()] = warp_total;
  block.sync();
  if (threadIdx.x < 32) {
    const int t = threadIdx.x < warp.meta_group_size() ? warp_totals[threadIdx.x] : 0;
    const int incl = cg::inclusive_scan(warp, t);
    if (threadIdx.x < warp.meta_group_size()) warp_totals[threadIdx.x] = incl - t;
    if (threadIdx.x == 31) block_base = atomicAdd(count, incl);
  }
  block.sync();
  if (keep) out[block_base + warp_totals[warp.meta_group_rank()] + pos_in_warp] = x[i];
}

// cuda::std math: cuda::std::fma, cuda::std::abs / signbit / isfinite, cuda::std::min and max on mixed signs.
extern "C" __global__ void std_math(const float* __restrict__ a, const float* __restrict__ b, float* __restrict__ out,
                                    int* __restrict__ flags, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const float x = a[i], y = b[i];
  out[3 * i + 0] = cuda::std::fma(x, y, 1.0f);
  out[3 * i + 1] = cuda::std::min(cuda::std::abs(x), y);
  out[3 * i + 2] = cuda::std::max(x, y);
  flags[i] = (cuda::std::signbit(x) ? 1 : 0) | (cuda::std::isfinite(y) ? 2 : 0) | (cuda::std::isnan(x) ? 4 : 0);
}

// A one-pass grid reduction as CCCL-era code writes it: each block's partial sum goes to global memory, a
// cuda::atomic_ref ticket (acq_rel) tells the last block to finish, which adds the partials in block order and
// resets the ticket for the next launch; the maximum goes through atomic_ref<float>::fetch_max.
#include <cuda/atomic>

template <int BLOCK>
__global__ void sum_last_block(const float* __restrict__ x, int n, float* __restrict__ partials,
                               unsigned* __restrict__ ticket, float* __restrict__ result, float* __restrict__ max_out) {
  __shared__ float sums[BLOCK];
  __shared__ bool is_last;
  float local = 0.0f, local_max = -cuda::std::numeric_limits<float>::infinity();
  for (int i = blockIdx.x * BLOCK + threadIdx.x; i < n; i += BLOCK * gridDim.x) {
    local += x[i];
    local_max = cuda::std::max(local_max, x[i]);
  }
  sums[threadIdx.x] = local;
  cuda::atomic_ref<float, cuda::thread_scope_device>(*max_out).fetch_max(local_max, cuda::memory_order_relaxed);
  __syncthreads();
#pragma unroll
  for (int stride = BLOCK / 2; stride > 0; stride /= 2) {
    if (threadIdx.x < stride) sums[threadIdx.x] += sums[threadIdx.x + stride];
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    partials[blockIdx.x] = sums[0];
    cuda::atomic_ref<unsigned, cuda::thread_scope_device> done(*ticket);
    is_last = done.fetch_add(1u, cuda::memory_order_acq_rel) == gridDim.x - 1;
  }
  __syncthreads();
  if (is_last && threadIdx.x == 0) {
    float total = 0.0f;
    for (int b = 0; b < static_cast<int>(gridDim.x); ++b) total += partials[b];
    *result = total;
    cuda::std::atomic_ref<unsigned>(*ticket).store(0u, cuda::std::memory_order_relaxed);
  }
}

// Producer and consumer in one block with no barrier between them: the consumer waits on a release/acquire flag
// through cuda::atomic_ref, backing off with __nanosleep; a second consumer polls an ld.acquire in inline PTX.
extern "C" __global__ void flag_handoff(int* __restrict__ flag, float* __restrict__ data, float* __restrict__ seen) {
  cuda::atomic_ref<int, cuda::thread_scope_block> ready(*flag);
  if (threadIdx.x == blockDim.x - 1) {
    data[0] = 42.0f;
    ready.store(1, cuda::memory_order_release);
  } else if (threadIdx.x == 0) {
    while (ready.load(cuda::memory_order_acquire) == 0) __nanosleep(32);
    seen[0] = data[0];
  } else if (threadIdx.x == 1) {
    int v = 0;
    do {
      asm volatile("ld.acquire.gpu.global.b32 %0, [%1];" : "=r"(v) : "l"(flag) : "memory");
    } while (v == 0);
    seen[1] = data[0];
  }
}
