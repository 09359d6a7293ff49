// Round 7: kernels in the style of vLLM's csrc/ (layernorm_kernels.cu, activation_kernels.cu,
// pos_encoding_kernels.cu, attention/paged_attention_v1): templates over the element type, a vector struct
// of 16-bit values with __nv_bfloat162 arithmetic, an activation passed as a function-pointer template
// parameter, if constexpr on a bool template parameter, and a simplified paged attention over block tables.
#include <cuda_runtime.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cstdint>
#include <cub/cub.cuh>

#define VLLM_LDG(arg) __ldg(arg)
#define WARP_SIZE 32

namespace vllm {

template <typename T>
__device__ __forceinline__ T warp_reduce_sum(T val) {
#pragma unroll
  for (int mask = WARP_SIZE / 2; mask > 0; mask >>= 1)
    val += __shfl_xor_sync(0xffffffff, val, mask, WARP_SIZE);
  return val;
}

// FasterTransformer's blockReduceSum: a static __shared__ scratch of one slot per warp.
template <typename T>
__device__ __forceinline__ T block_reduce_sum(T val) {
  static __shared__ T shared[WARP_SIZE];
  const int lane = threadIdx.x & 0x1f;
  const int wid = threadIdx.x >> 5;
  val = warp_reduce_sum<T>(val);
  if (lane == 0) shared[wid] = val;
  __syncthreads();
  val = (threadIdx.x < (blockDim.x / 32.f)) ? shared[lane] : (T)(0.0f);
  val = warp_reduce_sum<T>(val);
  return val;
}

// A 16-byte vector of 16-bit floats, added and scaled pairwise as __nv_bfloat162 / __half2.
template <typename scalar_t> struct Packed;
template <> struct Packed<__nv_bfloat16> { using type = __nv_bfloat162; };
template <> struct Packed<__half> { using type = __half2; };

template <typename scalar_t, int width>
struct alignas(16) VecT {
  static_assert(width % 2 == 0, "pairs");
  using P = typename Packed<scalar_t>::type;
  scalar_t data[width];

  __device__ VecT& operator+=(const VecT& other) {
#pragma unroll
    for (int i = 0; i < width; i += 2) {
      P a{data[i], data[i + 1]};
      const P b{other.data[i], other.data[i + 1]};
      a += b;
      data[i] = a.x;
      data[i + 1] = a.y;
    }
    return *this;
  }
  __device__ VecT& operator*=(const VecT& other) {
#pragma unroll
    for (int i = 0; i < width; i += 2) {
      const P a = __hmul2(P{data[i], data[i + 1]}, P{other.data[i], other.data[i + 1]});
      data[i] = a.x;
      data[i + 1] = a.y;
    }
    return *this;
  }
  __device__ VecT& operator*=(const float scale) {
#pragma unroll
    for (int i = 0; i < width; ++i) data[i] = static_cast<scalar_t>(static_cast<float>(data[i]) * scale);
    return *this;
  }
  __device__ float sum_squares() const {
    float result = 0.0f;
#pragma unroll
    for (int i = 0; i < width; ++i) {
      const float x = static_cast<float>(data[i]);
      result += x * x;
    }
    return result;
  }
};

template <typename scalar_t>
__global__ void rms_norm_kernel(scalar_t* __restrict__ out, const scalar_t* __restrict__ input,
                                const scalar_t* __restrict__ weight, const float epsilon, const int num_tokens,
                                const int hidden_size) {
  __shared__ float s_variance;
  float variance = 0.0f;
  for (int idx = threadIdx.x; idx < hidden_size; idx += blockDim.x) {
    const float x = (float)input[blockIdx.x * hidden_size + idx];
    variance += x * x;
  }
  variance = block_reduce_sum<float>(variance);
  if (threadIdx.x == 0) s_variance = rsqrtf(variance / hidden_size + epsilon);
  __syncthreads();
  for (int idx = threadIdx.x; idx < hidden_size; idx += blockDim.x) {
    const float x = (float)input[blockIdx.x * hidden_size + idx];
    out[blockIdx.x * hidden_size + idx] = ((scalar_t)(x * s_variance)) * weight[idx];
  }
}

// residual += input; input = rms_norm(residual) * weight, eight 16-bit values at a time.
template <typename scalar_t, int width>
__global__ void fused_add_rms_norm_kernel(scalar_t* __restrict__ input, scalar_t* __restrict__ residual,
                                          const scalar_t* __restrict__ weight, const float epsilon,
                                          const int num_tokens, const int hidden_size) {
  static_assert(sizeof(VecT<scalar_t, width>) == sizeof(scalar_t) * width);
  const int vec_hidden_size = hidden_size / width;
  __shared__ float s_variance;
  float variance = 0.0f;
  auto* __restrict__ input_v = reinterpret_cast<VecT<scalar_t, width>*>(input);
  auto* __restrict__ residual_v = reinterpret_cast<VecT<scalar_t, width>*>(residual);
  auto* __restrict__ weight_v = reinterpret_cast<const VecT<scalar_t, width>*>(weight);
  for (int idx = threadIdx.x; idx < vec_hidden_size; idx += blockDim.x) {
    const int id = blockIdx.x * vec_hidden_size + idx;
    VecT<scalar_t, width> temp = input_v[id];
    temp += residual_v[id];
    variance += temp.sum_squares();
    residual_v[id] = temp;
  }
  variance = block_reduce_sum<float>(variance);
  if (threadIdx.x == 0) s_variance = rsqrtf(variance / hidden_size + epsilon);
  __syncthreads();
  for (int idx = threadIdx.x; idx < vec_hidden_size; idx += blockDim.x) {
    const int id = blockIdx.x * vec_hidden_size + idx;
    VecT<scalar_t, width> temp = residual_v[id];
    temp *= s_variance;
    temp *= weight_v[idx];
    input_v[id] = temp;
  }
}

template <typename T>
__device__ __forceinline__ T silu_kernel(const T& x) {
  return (T)(((float)x) / (1.0f + expf((float)-x)));
}

template <typename T>
__device__ __forceinline__ T gelu_tanh_kernel(const T& x) {
  const float f = (float)x;
  constexpr float BETA = M_SQRT2 * M_2_SQRTPI * 0.5f;
  constexpr float KAPPA = 0.044715;
  const float inner = BETA * (f + KAPPA * f * f * f);
  return (T)(0.5f * f * (1.0f + ::tanhf(inner)));
}

template <typename scalar_t, scalar_t (*ACT_FN)(const scalar_t&), bool act_first>
__global__ void act_and_mul_kernel(scalar_t* __restrict__ out, const scalar_t* __restrict__ input, const int d) {
  const int64_t token_idx = blockIdx.x;
  for (int64_t idx = threadIdx.x; idx < d; idx += blockDim.x) {
    const scalar_t x = VLLM_LDG(&input[token_idx * 2 * d + idx]);
    const scalar_t y = VLLM_LDG(&input[token_idx * 2 * d + d + idx]);
    out[token_idx * d + idx] = act_first ? ACT_FN(x) * y : x * ACT_FN(y);
  }
}

template <typename scalar_t, bool IS_NEOX>
inline __device__ void apply_token_rotary_embedding(scalar_t* __restrict__ arr, const scalar_t* __restrict__ cos_ptr,
                                                    const scalar_t* __restrict__ sin_ptr, int rot_offset,
                                                    int embed_dim) {
  int x_index, y_index;
  scalar_t cos, sin;
  if constexpr (IS_NEOX) {
    x_index = rot_offset;
    y_index = embed_dim + rot_offset;
    cos = VLLM_LDG(cos_ptr + x_index);
    sin = VLLM_LDG(sin_ptr + x_index);
  } else {
    x_index = 2 * rot_offset;
    y_index = 2 * rot_offset + 1;
    cos = VLLM_LDG(cos_ptr + x_index / 2);
    sin = VLLM_LDG(sin_ptr + x_index / 2);
  }
  const scalar_t x = arr[x_index];
  const scalar_t y = arr[y_index];
  arr[x_index] = x * cos - y * sin;
  arr[y_index] = y * cos + x * sin;
}

template <typename scalar_t, bool IS_NEOX>
__global__ void rotary_embedding_kernel(const int64_t* __restrict__ positions, scalar_t* __restrict__ query,
                                        scalar_t* __restrict__ key, const scalar_t* __restrict__ cos_sin_cache,
                                        const int rot_dim, const int64_t query_stride, const int64_t key_stride,
                                        const int num_heads, const int num_kv_heads, const int head_size) {
  const int token_idx = blockIdx.x;
  const int64_t pos = positions[token_idx];
  const scalar_t* cache_ptr = cos_sin_cache + pos * rot_dim;
  const int embed_dim = rot_dim / 2;
  const scalar_t* cos_ptr = cache_ptr;
  const scalar_t* sin_ptr = cache_ptr + embed_dim;
  const int nq = num_heads * embed_dim;
  for (int i = threadIdx.x; i < nq; i += blockDim.x) {
    const int head_idx = i / embed_dim;
    const int64_t token_head = token_idx * query_stride + head_idx * head_size;
    apply_token_rotary_embedding<scalar_t, IS_NEOX>(query + token_head, cos_ptr, sin_ptr, i % embed_dim, embed_dim);
  }
  const int nk = num_kv_heads * embed_dim;
  for (int i = threadIdx.x; i < nk; i += blockDim.x) {
    const int head_idx = i / embed_dim;
    const int64_t token_head = token_idx * key_stride + head_idx * head_size;
    apply_token_rotary_embedding<scalar_t, IS_NEOX>(key + token_head, cos_ptr, sin_ptr, i % embed_dim, embed_dim);
  }
}

// Paged attention, one block per (head, sequence): the keys and values of a sequence live in fixed-size
// blocks of a cache, found through the sequence's row of block_tables.  Logits go to dynamic shared memory.
template <int HEAD_SIZE, int BLOCK_SIZE, int NUM_THREADS>
__global__ void __launch_bounds__(NUM_THREADS) paged_attention_v1_kernel(
    float* __restrict__ out,              // [num_seqs, num_heads, HEAD_SIZE]
    const float* __restrict__ q,          // [num_seqs, num_heads, HEAD_SIZE]
    const float* __restrict__ k_cache,    // [num_blocks, num_kv_heads, BLOCK_SIZE, HEAD_SIZE]
    const float* __restrict__ v_cache,    // [num_blocks, num_kv_heads, BLOCK_SIZE, HEAD_SIZE]
    const int num_kv_heads, const float scale,
    const int* __restrict__ block_tables,  // [num_seqs, max_num_blocks_per_seq]
    const int* __restrict__ seq_lens, const int max_num_blocks_per_seq) {
  constexpr int NUM_WARPS = NUM_THREADS / WARP_SIZE;
  constexpr int VEC = 4;
  static_assert(HEAD_SIZE % VEC == 0);
  const int head_idx = blockIdx.x, seq_idx = blockIdx.y, num_heads = gridDim.x;
  const int kv_head_idx = head_idx / (num_heads / num_kv_heads);
  const int seq_len = seq_lens[seq_idx];
  const int warp_idx = threadIdx.x / WARP_SIZE, lane = threadIdx.x % WARP_SIZE;

  __shared__ float4 q_vecs[HEAD_SIZE / VEC];
  __shared__ float red_smem[2 * NUM_WARPS];
  extern __shared__ char shared_mem[];
  float* logits = reinterpret_cast<float*>(shared_mem);

  const float4* q_ptr = reinterpret_cast<const float4*>(q + (seq_idx * num_heads + head_idx) * HEAD_SIZE);
  for (int i = threadIdx.x; i < HEAD_SIZE / VEC; i += NUM_THREADS) q_vecs[i] = q_ptr[i];
  __syncthreads();

  const int* block_table = block_tables + seq_idx * max_num_blocks_per_seq;
  float qk_max = -FLT_MAX;
  for (int token = threadIdx.x; token < seq_len; token += NUM_THREADS) {
    const int64_t physical_block = block_table[token / BLOCK_SIZE];
    const float4* k_ptr = reinterpret_cast<const float4*>(
        k_cache + ((physical_block * num_kv_heads + kv_head_idx) * BLOCK_SIZE + token % BLOCK_SIZE) * HEAD_SIZE);
    float qk = 0.f;
#pragma unroll
    for (int i = 0; i < HEAD_SIZE / VEC; ++i) {
      const float4 kv = k_ptr[i], qv = q_vecs[i];
      qk += qv.x * kv.x + qv.y * kv.y + qv.z * kv.z + qv.w * kv.w;
    }
    qk *= scale;
    logits[token] = qk;
    qk_max = fmaxf(qk_max, qk);
  }
#pragma unroll
  for (int mask = WARP_SIZE / 2; mask >= 1; mask /= 2) qk_max = fmaxf(qk_max, __shfl_xor_sync(uint32_t(-1), qk_max, mask));
  if (lane == 0) red_smem[warp_idx] = qk_max;
  __syncthreads();
  qk_max = lane < NUM_WARPS ? red_smem[lane] : -FLT_MAX;
#pragma unroll
  for (int mask = NUM_WARPS / 2; mask >= 1; mask /= 2) qk_max = fmaxf(qk_max, __shfl_xor_sync(uint32_t(-1), qk_max, mask));
  qk_max = __shfl_sync(uint32_t(-1), qk_max, 0);

  float exp_sum = 0.f;
  for (int token = threadIdx.x; token < seq_len; token += NUM_THREADS) {
    const float val = __expf(logits[token] - qk_max);
    logits[token] = val;
    exp_sum += val;
  }
  exp_sum = warp_reduce_sum(exp_sum);
  if (lane == 0) red_smem[NUM_WARPS + warp_idx] = exp_sum;
  __syncthreads();
  exp_sum = lane < NUM_WARPS ? red_smem[NUM_WARPS + lane] : 0.f;
#pragma unroll
  for (int mask = NUM_WARPS / 2; mask >= 1; mask /= 2) exp_sum += __shfl_xor_sync(uint32_t(-1), exp_sum, mask);
  const float inv_sum = __fdividef(1.f, __shfl_sync(uint32_t(-1), exp_sum, 0) + 1e-6f);

  for (int d = threadIdx.x; d < HEAD_SIZE; d += NUM_THREADS) {
    float acc = 0.f;
    for (int token = 0; token < seq_len; ++token) {
      const int64_t physical_block = block_table[token / BLOCK_SIZE];
      acc += logits[token] *
             v_cache[((physical_block * num_kv_heads + kv_head_idx) * BLOCK_SIZE + token % BLOCK_SIZE) * HEAD_SIZE + d];
    }
    out[(seq_idx * num_heads + head_idx) * HEAD_SIZE + d] = acc * inv_sum;
  }
}

}  // namespace vllm

// CUB's block and warp collectives as vLLM, FasterTransformer and TensorRT-LLM kernels use them:
// cub::BlockReduce in an rms_norm (the total read in thread 0), cub::BlockReduce over cub::KeyValuePair with
// cub::ArgMax (a top-1 softmax gate), cub::BlockScan over two items per thread with the block aggregate
// (expert offsets of an MoE token sort), and cub::WarpReduce with a valid-item count.
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
