// Round 7: CUB's block and warp collectives as vLLM, FasterTransformer and TensorRT-LLM kernels use them:
// cub::BlockReduce in an rms_norm (the total read in thread 0), cub::BlockReduce over cub::KeyValuePair with
// cub::ArgMax (a top-1 softmax gate), cub::BlockScan over two items per thread with the block aggregate
// (expert offsets of an MoE token sort), and cub::WarpReduce with a valid-item count.
#include <cuda_runtime.h>
#include <cub/cub.cuh>

template <int BLOCK>
__global__ void rms_norm_cub(float* __restrict__ out, const float* __restrict__ x, const float* __restrict__ w,
                             float eps, int hidden) {
  using BlockReduce = cub::BlockReduce<float, BLOCK>;
  __shared__ typename BlockReduce::TempStorage reduce_store;
  __shared__ float s_rstd;
  const float* row = x + static_cast<size_t>(blockIdx.x) * hidden;
  float variance = 0.0f;
  for (int i = threadIdx.x; i < hidden; i += BLOCK) variance += row[i] * row[i];
  variance = BlockReduce(reduce_store).Reduce(variance, cub::Sum{}, blockDim.x);
  if (threadIdx.x == 0) s_rstd = rsqrtf(variance / hidden + eps);
  __syncthreads();
  for (int i = threadIdx.x; i < hidden; i += BLOCK) out[static_cast<size_t>(blockIdx.x) * hidden + i] = row[i] * s_rstd * w[i];
}

// One block per token: softmax over the experts' logits and the top-1 expert by cub::ArgMax.
template <int BLOCK>
__global__ void top1_gate(const float* __restrict__ logits, int experts, float* __restrict__ weight, int* __restrict__ expert) {
  using KV = cub::KeyValuePair<int, float>;
  using ArgReduce = cub::BlockReduce<KV, BLOCK>;
  using SumReduce = cub::BlockReduce<float, BLOCK>;
  __shared__ union {
    typename ArgReduce::TempStorage arg;
    typename SumReduce::TempStorage sum;
  } temp;
  __shared__ float s_max, s_sum;
  const float* row = logits + static_cast<size_t>(blockIdx.x) * experts;
  KV best{-1, -INFINITY};
  for (int e = threadIdx.x; e < experts; e += BLOCK) best = cub::ArgMax()(best, KV{e, row[e]});
  const KV top = ArgReduce(temp.arg).Reduce(best, cub::ArgMax());
  if (threadIdx.x == 0) s_max = top.value;
  __syncthreads();
  float local = 0.0f;
  for (int e = threadIdx.x; e < experts; e += BLOCK) local += __expf(row[e] - s_max);
  const float total = SumReduce(temp.sum).Sum(local);
  if (threadIdx.x == 0) {
    s_sum = total;
    weight[blockIdx.x] = 1.0f / s_sum;  // exp(max - max) / sum
    expert[blockIdx.x] = top.key;
  }
}

// Counts per expert (two per thread) turned into start offsets by an exclusive block scan; the last thread of the
// block also writes the total.  Then each warp's sum of its first `valid` counts by cub::WarpReduce.
template <int BLOCK>
__global__ void expert_offsets(const int* __restrict__ counts, int* __restrict__ offsets, int* __restrict__ total,
                               int* __restrict__ warp_sums, int valid) {
  using BlockScan = cub::BlockScan<int, BLOCK>;
  using WarpReduce = cub::WarpReduce<int>;
  __shared__ typename BlockScan::TempStorage scan_store;
  __shared__ typename WarpReduce::TempStorage warp_store[BLOCK / 32];
  int items[2] = {counts[2 * threadIdx.x], counts[2 * threadIdx.x + 1]};
  int starts[2];
  int aggregate;
  BlockScan(scan_store).ExclusiveSum(items, starts);
  offsets[2 * threadIdx.x] = starts[0];
  offsets[2 * threadIdx.x + 1] = starts[1];
  __syncthreads();
  int inclusive;
  BlockScan(scan_store).InclusiveSum(items[0] + items[1], inclusive, aggregate);
  if (threadIdx.x == BLOCK - 1) total[0] = aggregate;
  const int warp = threadIdx.x / 32;
  const int s = WarpReduce(warp_store[warp]).Sum(counts[2 * threadIdx.x], valid);
  if (threadIdx.x % 32 == 0) warp_sums[warp] = s;
}
