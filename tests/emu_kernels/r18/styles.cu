// Round 18: kernels in styles the earlier rounds did not cover, written as their authors write them (llm.c's
// layernorm / online softmax / fused classifier / AdamW, a minimal FlashAttention-2, half2 and bfloat162 math,
// warp-aggregated atomics, a ballot radix pass, Kahan sums, cuda::std::array / tuple, a persistent kernel with
// an atomic work queue), built with options=("-std=c++17", "--use_fast_math", "-DBLOCK=128") as their users
// build them, unedited for the emulator.
#include <cooperative_groups.h>
#include <cooperative_groups/reduce.h>
#include <cooperative_groups/scan.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda/std/array>
#include <cuda/std/tuple>
#include <cstdint>
#include <cfloat>

namespace cg = cooperative_groups;

#ifndef BLOCK
#error "build with -DBLOCK=..."
#endif

// ------------------------------------------------------------------ llm.c style: x128 and cache-hinted loads
template <class ElementType>
struct alignas(16) Packed128 {
    Packed128() = default;
    __device__ explicit Packed128(int4 bits) {
        static_assert(sizeof(bits) == sizeof(payload), "Size mismatch.");
        memcpy(&payload, &bits, sizeof(bits));
    }
    __device__ static Packed128 constant(ElementType value) {
        Packed128 result;
        for (int k = 0; k < size; ++k) result.payload[k] = value;
        return result;
    }
    __device__ ElementType& operator[](int index) { return payload[index]; }
    __device__ const ElementType& operator[](int index) const { return payload[index]; }
    __device__ int4 get_bits() const {
        int4 bits;
        memcpy(&bits, &payload, sizeof(bits));
        return bits;
    }
    static constexpr const size_t size = sizeof(int4) / sizeof(ElementType);
    ElementType payload[size];
};
typedef Packed128<float> f128;

template <class ElementType>
__device__ Packed128<ElementType> load128cs(const ElementType* address) {
    return Packed128<ElementType>{__ldcs(reinterpret_cast<const int4*>(address))};
}
template <class ElementType>
__device__ void store128(ElementType* target, Packed128<ElementType> value) {
    *reinterpret_cast<int4*>(target) = value.get_bits();
}
template <class ElementType>
__device__ void store128cs(ElementType* target, Packed128<ElementType> value) {
    __stcs(reinterpret_cast<int4*>(target), value.get_bits());
}

// layernorm forward, one warp per row, C a multiple of 4
extern "C" __global__ void layernorm_forward_kernel3(float* __restrict__ out, float* __restrict__ mean,
                                                     float* __restrict__ rstd, const float* __restrict__ inp,
                                                     const float* __restrict__ weight,
                                                     const float* __restrict__ bias, int N, int C) {
    cg::thread_block block = cg::this_thread_block();
    cg::thread_block_tile<32> warp = cg::tiled_partition<32>(block);
    int idx = blockIdx.x * warp.meta_group_size() + warp.meta_group_rank();
    if (idx >= N) return;
    const float* x = inp + idx * C;
    float sum = 0.0f;
    for (int i = warp.thread_rank(); i < C; i += warp.size()) sum += x[i];
    sum = cg::reduce(warp, sum, cg::plus<float>{});
    float m = sum / C;
    if (warp.thread_rank() == 0 && mean != nullptr) __stcs(mean + idx, m);
    sum = 0.0f;
    for (int i = warp.thread_rank(); i < C; i += warp.size()) {
        float diff = x[i] - m;
        sum += diff * diff;
    }
    sum = cg::reduce(warp, sum, cg::plus<float>{});
    float s = rsqrtf(sum / C + 1e-5f);
    if (warp.thread_rank() == 0 && rstd != nullptr) __stcs(rstd + idx, s);
    float* o = out + idx * C;
    for (int c = warp.thread_rank() * f128::size; c < C; c += warp.size() * f128::size) {
        f128 xi = load128cs(x + c);
        f128 w = *reinterpret_cast<const f128*>(weight + c);
        f128 b = *reinterpret_cast<const f128*>(bias + c);
        f128 r;
        for (int k = 0; k < f128::size; ++k) r[k] = s * (xi[k] - m) * w[k] + b[k];
        store128cs(o + c, r);
    }
}

// ------------------------------------------------------------------ llm.c style: online softmax, one warp a row
extern "C" __global__ void softmax_forward_online_kernel(float* out, const float* inp, int N, int C) {
    const int warps_per_block = blockDim.x / 32;
    int row = blockIdx.x * warps_per_block + threadIdx.x / 32;
    int lane = threadIdx.x % 32;
    if (row >= N) return;
    const float* x = inp + row * C;
    float maxval = -INFINITY, sumval = 0.0f;
    for (int i = lane; i < C; i += 32) {
        float v = x[i];
        if (v > maxval) {
            sumval *= expf(maxval - v);
            maxval = v;
        }
        sumval += expf(v - maxval);
    }
    for (int offset = 16; offset > 0; offset >>= 1) {
        float other_max = __shfl_xor_sync(0xFFFFFFFF, maxval, offset);
        float other_sum = __shfl_xor_sync(0xFFFFFFFF, sumval, offset);
        float new_max = fmaxf(maxval, other_max);
        sumval = sumval * expf(maxval - new_max) + other_sum * expf(other_max - new_max);
        maxval = new_max;
    }
    float norm = 1.f / sumval;
    for (int i = lane; i < C; i += 32) out[row * C + i] = expf(x[i] - maxval) * norm;
}

// ------------------------------------------------------------------ llm.c style: fused classifier
struct SoftmaxParams {
    float Scale;
    float Offset;
};

__device__ SoftmaxParams prepare_softmax_blockwide(cg::thread_block_tile<32>& warp, int idx, const float* inp,
                                                   int V, int P) {
    const float* x = inp + idx * P;
    float thread_maxval = -INFINITY, thread_sumval = 0.0f;
    for (int i = V + threadIdx.x - blockDim.x; i >= 0; i -= blockDim.x) {
        float v = x[i];
        float old_maxval = thread_maxval;
        thread_maxval = fmaxf(thread_maxval, v);
        thread_sumval *= expf(old_maxval - thread_maxval);
        thread_sumval += expf(v - thread_maxval);
    }
    __shared__ float shared_maxval[32];
    __shared__ float shared_sumval[32];
    int num_warps = blockDim.x / 32;
    int warp_id = threadIdx.x / 32;
    int lane_id = threadIdx.x % 32;
    float warp_maxval = cg::reduce(warp, thread_maxval, cg::greater<float>{});
    if (lane_id == 0) shared_maxval[warp_id] = warp_maxval;
    __syncthreads();
    warp_maxval = (lane_id < num_warps) ? shared_maxval[lane_id] : -FLT_MAX;
    float block_maxval = cg::reduce(warp, warp_maxval, cg::greater<float>{});
    thread_sumval *= expf(thread_maxval - block_maxval);
    float warp_sumval = cg::reduce(warp, thread_sumval, cg::plus<float>{});
    if (lane_id == 0) shared_sumval[warp_id] = warp_sumval;
    __syncthreads();
    warp_sumval = (lane_id < num_warps) ? shared_sumval[lane_id] : 0.0f;
    float block_sumval = cg::reduce(warp, warp_sumval, cg::plus<float>{});
    return SoftmaxParams{1.f / block_sumval, block_maxval};
}

extern "C" __global__ void fused_classifier_kernel(float* logits, float* losses, float* probs, const float* dlosses,
                                                   const int* targets, int B, int T, int V, int P) {
    namespace cg = cooperative_groups;
    cg::thread_block block = cg::this_thread_block();
    cg::thread_block_tile<32> warp = cg::tiled_partition<32>(block);
    int idx = blockIdx.x;
    int ix = targets[idx];
    SoftmaxParams sp = prepare_softmax_blockwide(warp, idx, logits, V, P);
    float dloss = dlosses != NULL ? dlosses[idx] : 1.0f / (B * T);
    const float* logits_vec = logits + idx * P;
    for (int i = threadIdx.x; i < V; i += blockDim.x) {
        float v = __ldcs(&logits_vec[i]);
        float prob = expf(v - sp.Offset) * sp.Scale;
        if (probs != NULL) probs[idx * P + i] = prob;
        if (i == ix) losses[idx] = -logf(prob);  // read by the thread that overwrites it (no race on logits)
        float indicator = (i == ix) ? 1.0f : 0.0f;
        logits[idx * P + i] = (prob - indicator) * dloss;
    }
}

// ------------------------------------------------------------------ llm.c style: AdamW with lerp
__device__ inline float lerp(float start, float end, float weight) {
    return fma(weight, end, fma(-weight, start, start));
}

extern "C" __global__ void adamw_kernel2(float* params_memory, const float* grads_memory, float* m_memory,
                                         float* v_memory, long num_parameters, float learning_rate, float beta1,
                                         float beta2, float beta1_correction, float beta2_correction, float eps,
                                         float weight_decay) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= num_parameters) return;
    float grad = grads_memory[i];
    float m = m_memory[i];
    float v = v_memory[i];
    m = lerp(grad, m, beta1);
    m_memory[i] = m;
    v = lerp(grad * grad, v, beta2);
    v_memory[i] = v;
    m /= beta1_correction;
    v /= beta2_correction;
    params_memory[i] -= learning_rate * (m / (sqrtf(v) + eps) + weight_decay * params_memory[i]);
}

// ------------------------------------------------------------------ FlashAttention-2, minimal: Br = Bc = 32
// grid (B, nh), block (Bc); dynamic shared memory Qi, Kj, Vj tiles and S.
extern "C" __global__ void flash_attn2_forward(const float* Q, const float* K, const float* V, const int N,
                                               const int d, const int Tc, const int Tr, const int Bc, const int Br,
                                               const float softmax_scale, float* O, float* Lse) {
    int tx = threadIdx.x;
    int bx = blockIdx.x, by = blockIdx.y;
    int qkv_offset = (bx * gridDim.y * N * d) + (by * N * d);
    int lse_offset = (bx * gridDim.y * N) + (by * N);
    extern __shared__ float sram[];
    int tile_size = Bc * d;
    float* Qi = sram;
    float* Kj = &sram[tile_size];
    float* Vj = &sram[tile_size * 2];
    float* S = &sram[tile_size * 3];
    for (int i = 0; i < Tr; i++) {
        int row = i * Br + tx;
        for (int x = 0; x < d; x++) Qi[(tx * d) + x] = row < N ? Q[qkv_offset + row * d + x] : 0.0f;
        float row_m = -INFINITY, row_l = 0;
        float acc[64];
        for (int x = 0; x < d; x++) acc[x] = 0;
        for (int j = 0; j < Tc; j++) {
            __syncthreads();
            int col = j * Bc + tx;
            for (int x = 0; x < d; x++) {
                Kj[(tx * d) + x] = col < N ? K[qkv_offset + col * d + x] : 0.0f;
                Vj[(tx * d) + x] = col < N ? V[qkv_offset + col * d + x] : 0.0f;
            }
            __syncthreads();
            float row_m_new = row_m;
            for (int y = 0; y < Bc; y++) {
                float sum = 0;
                for (int x = 0; x < d; x++) sum += Qi[(tx * d) + x] * Kj[(y * d) + x];
                sum *= softmax_scale;
                if (j * Bc + y >= N) sum = -INFINITY;
                S[(Bc * tx) + y] = sum;
                row_m_new = max(row_m_new, sum);
            }
            float scale_old = __expf(row_m - row_m_new);
            float row_l_new = row_l * scale_old;
            for (int y = 0; y < Bc; y++) {
                float p = __expf(S[(Bc * tx) + y] - row_m_new);
                S[(Bc * tx) + y] = p;
                row_l_new += p;
            }
            for (int x = 0; x < d; x++) {
                float pv = 0;
                for (int y = 0; y < Bc; y++) pv += S[(Bc * tx) + y] * Vj[(y * d) + x];
                acc[x] = acc[x] * scale_old + pv;
            }
            row_m = row_m_new;
            row_l = row_l_new;
        }
        if (row < N) {
            for (int x = 0; x < d; x++) O[qkv_offset + row * d + x] = __fdividef(acc[x], row_l);
            Lse[lse_offset + row] = row_m + __logf(row_l);
        }
    }
}

// ------------------------------------------------------------------ half2 / bfloat162 intrinsics
// y = max(a * x + b, 0) / s on half2 pairs; z = bfloat162 (a * b + c) with a bf16 min/max clamp.
extern "C" __global__ void half2_axpb_relu_div(const __half2* __restrict__ x, const float2* __restrict__ ab,
                                               const __half2* __restrict__ s, __half2* __restrict__ y, int n2) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n2; i += blockDim.x * gridDim.x) {
        __half2 a = __float22half2_rn(make_float2(ab[0].x, ab[0].y));
        __half2 b = __float22half2_rn(ab[1]);
        __half2 t = __hfma2(a, x[i], b);
        t = __hmax2(t, __float2half2_rn(0.0f));
        y[i] = __h2div(t, s[i]);
    }
}

extern "C" __global__ void bf162_fma_clamp(const __nv_bfloat162* __restrict__ a, const __nv_bfloat162* __restrict__ b,
                                           const __nv_bfloat162* __restrict__ c, __nv_bfloat162* __restrict__ out,
                                           float lo, float hi, int n2) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n2) {
        __nv_bfloat162 r = __hfma2(a[i], b[i], c[i]);
        __nv_bfloat162 lo2 = __float2bfloat162_rn(lo), hi2 = __float2bfloat162_rn(hi);
        r = __hmin2(__hmax2(r, lo2), hi2);
        out[i] = r;
    }
}

// ------------------------------------------------------------------ warp-aggregated atomics (stream compaction)
__device__ __forceinline__ int lane_id() { return threadIdx.x & 31; }

__device__ int atomicAggInc(int* ctr) {
    unsigned int active = __activemask();
    int leader = __ffs(active) - 1;
    int change = __popc(active);
    unsigned int lane_mask_lt = (1u << lane_id()) - 1;
    unsigned int rank = __popc(active & lane_mask_lt);
    int warp_res;
    if (rank == 0) warp_res = atomicAdd(ctr, change);
    warp_res = __shfl_sync(active, warp_res, leader);
    return warp_res + rank;
}

extern "C" __global__ void filter_k(int* dst, int* nres, const int* src, int n, int threshold) {
    int i = threadIdx.x + blockIdx.x * blockDim.x;
    if (i < n && src[i] > threshold) dst[atomicAggInc(nres)] = src[i];
}

// a histogram whose lanes group equal keys with __match_any_sync: one atomic per distinct key per warp
extern "C" __global__ void match_any_histogram(const int* keys, unsigned int* hist, int n) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i - (int)(threadIdx.x & 31) < n; i += blockDim.x * gridDim.x) {
        bool valid = i < n;
        unsigned int mask = __ballot_sync(0xffffffffu, valid);
        if (valid) {
            int key = keys[i];
            unsigned int peers = __match_any_sync(mask, key);
            int leader = __ffs(peers) - 1;
            if ((threadIdx.x & 31) == leader) atomicAdd(&hist[key], __popc(peers));
        }
    }
}

// the lanes of a branch form a coalesced group (later an __activemask), while the others go on to meet them again
extern "C" __global__ void compact_then_count_per_warp(int* dst, int* nres, unsigned int* warp_counts,
                                                       unsigned int* low_masks, const int* src, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    int lane = threadIdx.x & 31;
    int v = i < n ? src[i] : 0;
    bool keep = v > 0;
    if (keep) {
        cg::coalesced_group active = cg::coalesced_threads();
        int base = 0;
        if (active.thread_rank() == 0) base = atomicAdd(nres, (int)active.size());
        base = active.shfl(base, 0);
        dst[base + active.thread_rank()] = v;
    }
    __syncwarp();
    unsigned int kept = __reduce_add_sync(0xffffffffu, keep ? 1u : 0u);
    if (lane == 0) warp_counts[i / 32] = kept;
    if (v < -25) {
        unsigned int low = __activemask();
        if (lane == __ffs(low) - 1) low_masks[i / 32] = low;
    }
    __syncwarp();
}

// float sums and scans over a coalesced group of each warp's first k lanes
extern "C" __global__ void coalesced_float_sums(const float* x, float* sums, float* inclusive, float* exclusive, int k) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if ((threadIdx.x & 31) < k) {
        cg::coalesced_group g = cg::coalesced_threads();
        float v = x[i];
        sums[i] = cg::reduce(g, v, cg::plus<float>());
        inclusive[i] = cg::inclusive_scan(g, v, cg::plus<float>());
        exclusive[i] = cg::exclusive_scan(g, v, cg::plus<float>());
    }
}

// running minimum of a tile of 4 with cg::less, NaNs included
extern "C" __global__ void tile_running_min(const float* x, float* out, int n) {
    cg::thread_block_tile<4> tile = cg::tiled_partition<4>(cg::this_thread_block());
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    float v = i < n ? x[i] : INFINITY;
    float m = cg::inclusive_scan(tile, v, cg::less<float>());
    if (i < n) out[i] = m;
}

// per-warp sums with __reduce_add_sync on a ragged tail
extern "C" __global__ void warp_sums_reduce_add(const unsigned int* x, unsigned int* sums, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    unsigned int mask = __ballot_sync(0xffffffffu, i < n);
    if (i < n) {
        unsigned int s = __reduce_add_sync(mask, x[i]);
        if ((threadIdx.x & 31) == 0) sums[i / 32] = s;
    }
}

// ------------------------------------------------------------------ one LSD radix pass (one bit) per block
// a stable split of each block's keys on `bit`: zeros first, ranks from __ballot_sync
template <int BLOCK_THREADS>
__global__ void __launch_bounds__(BLOCK_THREADS) radix_split_pass(const unsigned int* keys, unsigned int* out,
                                                                  int n, int bit) {
    constexpr int WARPS = BLOCK_THREADS / 32;
    __shared__ int warp_zeros[WARPS];
    __shared__ int warp_offsets[WARPS + 1];
    int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
    int i = blockIdx.x * BLOCK_THREADS + tid;
    bool valid = i < n;
    unsigned int key = valid ? keys[i] : 0xffffffffu;
    bool one = (key >> bit) & 1u;
    unsigned int ones = __ballot_sync(0xffffffffu, one && valid);
    unsigned int zeros = __ballot_sync(0xffffffffu, !one && valid);
    unsigned int lt = (1u << lane) - 1u;
    if (lane == 0) warp_zeros[warp] = __popc(zeros);
    __syncthreads();
    if (tid == 0) {
        int total = 0;
        for (int w = 0; w < WARPS; ++w) { warp_offsets[w] = total; total += warp_zeros[w]; }
        warp_offsets[WARPS] = total;
    }
    __syncthreads();
    int valid_in_block = min(BLOCK_THREADS, n - (int)(blockIdx.x * BLOCK_THREADS));
    int zeros_total = warp_offsets[WARPS];
    if (valid) {
        int rank;
        if (!one) {
            rank = warp_offsets[warp] + __popc(zeros & lt);
        } else {
            int ones_before = warp * 32 - warp_offsets[warp];  // full warps before this one
            rank = zeros_total + ones_before + __popc(ones & lt);
        }
        (void)valid_in_block;
        out[blockIdx.x * BLOCK_THREADS + rank] = key;
    }
}

// ------------------------------------------------------------------ Kahan summation, block partials
extern "C" __global__ void __launch_bounds__(BLOCK) kahan_block_sum(const float* __restrict__ x, float* partial,
                                                                    size_t n) {
    __shared__ float s_sum[BLOCK];
    __shared__ float s_c[BLOCK];
    float sum = 0.0f, c = 0.0f;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)blockDim.x * gridDim.x) {
        float y = x[i] - c;
        float t = sum + y;
        c = (t - sum) - y;
        sum = t;
    }
    s_sum[threadIdx.x] = sum;
    s_c[threadIdx.x] = c;
    __syncthreads();
    for (int stride = blockDim.x / 2; stride > 0; stride >>= 1) {
        if (threadIdx.x < stride) {
            float a = s_sum[threadIdx.x], b = s_sum[threadIdx.x + stride];
            float ca = s_c[threadIdx.x] + s_c[threadIdx.x + stride];
            float y = b - ca;
            float t = a + y;
            s_c[threadIdx.x] = (t - a) - y;
            s_sum[threadIdx.x] = t;
        }
        __syncthreads();
    }
    if (threadIdx.x == 0) partial[blockIdx.x] = s_sum[0] - s_c[0];
}

// ------------------------------------------------------------------ integer intrinsics: a hash and bit tricks
extern "C" __global__ void bit_tricks(const unsigned int* a, const unsigned int* b, unsigned int* hi,
                                      unsigned int* rev, unsigned int* funnel, unsigned int* fmod_, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    hi[i] = __umulhi(a[i], b[i]);
    rev[i] = __brev(a[i]);
    funnel[i] = __funnelshift_l(a[i], b[i], i);       // shift i & 31
    // Lemire's fast range reduction: a[i] * range >> 32
    fmod_[i] = __umulhi(a[i], (unsigned)(i + 1));
}

// ------------------------------------------------------------------ cuda::std::array / tuple, if constexpr
template <typename T, int N, bool SQUARED>
__global__ void __launch_bounds__(256, 2) stencil_stats(const T* __restrict__ x, T* __restrict__ out,
                                                       int* __restrict__ argmax, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    cuda::std::array<T, N> window{};
    for (int k = 0; k < N; ++k) {
        int j = min(max(i + k - N / 2, 0), n - 1);
        window[k] = x[j];
    }
    auto best = cuda::std::make_tuple(window[0], 0);
    T acc = T(0);
    for (int k = 0; k < N; ++k) {
        if constexpr (SQUARED) acc += window[k] * window[k];
        else acc += window[k];
        if (window[k] > cuda::std::get<0>(best)) best = cuda::std::make_tuple(window[k], k);
    }
    T value;
    int where;
    cuda::std::tie(value, where) = best;
    out[i] = acc;
    argmax[i] = i + where - N / 2;
}

// ------------------------------------------------------------------ grid-stride over size_t, past 2^31 in arithmetic
// out[i] = x[i] * (float)((base + i) % 7) with base near 2^32: the index arithmetic must be 64-bit
extern "C" __global__ void offset_scale(const float* __restrict__ x, float* __restrict__ out, size_t n,
                                        unsigned long long base) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        size_t global = base + i;
        out[i] = x[i] * (float)(global % 7);
    }
}

// ------------------------------------------------------------------ persistent kernel with an atomic work queue
__device__ unsigned int queue_head;

extern "C" __global__ void persistent_rowsum(const float* __restrict__ m, float* __restrict__ rows, int n_rows,
                                             int n_cols) {
    __shared__ unsigned int my_row;
    __shared__ float partial[BLOCK];
    while (true) {
        if (threadIdx.x == 0) my_row = atomicAdd(&queue_head, 1u);
        __syncthreads();
        unsigned int r = my_row;
        if (r >= (unsigned)n_rows) break;
        float s = 0.0f;
        for (int c = threadIdx.x; c < n_cols; c += blockDim.x) s += m[(size_t)r * n_cols + c];
        partial[threadIdx.x] = s;
        __syncthreads();
        for (int stride = blockDim.x / 2; stride > 0; stride >>= 1) {
            if (threadIdx.x < stride) partial[threadIdx.x] += partial[threadIdx.x + stride];
            __syncthreads();
        }
        if (threadIdx.x == 0) rows[r] = partial[0];
        __syncthreads();
    }
}

// ------------------------------------------------------------------ __constant__ coefficients, copied in by the host
__constant__ float c_poly[8];
__constant__ int c_degree;

extern "C" __global__ void horner_const(const float* __restrict__ x, float* __restrict__ y, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) {
        float acc = c_poly[c_degree];
        for (int k = c_degree - 1; k >= 0; --k) acc = fmaf(acc, x[i], c_poly[k]);
        y[i] = acc;
    }
}
