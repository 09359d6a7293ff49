// Round 20: kernels in the modern style -- llm.c's train_gpt2.cu and dev/cuda, NVIDIA's blog posts on cooperative
// groups and warp-level primitives, hand-written CUTLASS-free kernels -- written for this test as their authors
// write them: cooperative_groups tiles (CUDA's two-parameter thread_block_tile<32, cg::thread_block> too), 128-bit
// packed loads with cache hints, bf16 / half math and conversions, warp intrinsics, atomics on every type, dynamic
// shared memory carved into several arrays, templates through name_expressions, printf.
#include <cooperative_groups.h>
#include <cooperative_groups/memcpy_async.h>
#include <cooperative_groups/reduce.h>
#include <cuda/atomic>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

namespace cg = cooperative_groups;
typedef __nv_bfloat16 floatX;
#define WARP_SIZE 32

// ------------------------------------------------------------------------------ llm.c's 128-bit packed type
template <class ElementType>
struct alignas(16) Packed128 {
    Packed128() = default;
    __device__ explicit Packed128(int4 bits) { memcpy(&payload, &bits, sizeof(bits)); }
    __device__ ElementType& operator[](int index) { return payload[index]; }
    __device__ const ElementType& operator[](int index) const { return payload[index]; }
    __device__ int4 get_bits() const {
        int4 bits;
        memcpy(&bits, &payload, sizeof(bits));
        return bits;
    }
    static constexpr const int size = sizeof(int4) / sizeof(ElementType);
    ElementType payload[size];
};
typedef Packed128<floatX> x128;
typedef Packed128<float> f128;

template <class T>
__device__ Packed128<T> load128(const T* address) { return Packed128<T>{*reinterpret_cast<const int4*>(address)}; }
template <class T>
__device__ Packed128<T> load128cs(const T* address) { return Packed128<T>{__ldcs(reinterpret_cast<const int4*>(address))}; }
template <class T>
__device__ Packed128<T> load128g(const T* address) { return Packed128<T>{__ldg(reinterpret_cast<const int4*>(address))}; }
template <class T>
__device__ void store128(T* target, Packed128<T> value) { *reinterpret_cast<int4*>(target) = value.get_bits(); }
template <class T>
__device__ void store128cs(T* target, Packed128<T> value) { __stcs(reinterpret_cast<int4*>(target), value.get_bits()); }

__device__ inline float warpReduceSum(float val) {
    for (int offset = 16; offset > 0; offset /= 2) val += __shfl_xor_sync(0xFFFFFFFF, val, offset);
    return val;
}

// ------------------------------------------------------------------------------ layernorm forward (bf16, x128)
// One warp per row; the tile spelled as CUDA declares it, thread_block_tile<Size, ParentT>.
extern "C" __global__ void layernorm_forward(floatX* __restrict__ out, float* __restrict__ mean,
                                             float* __restrict__ rstd, const floatX* __restrict__ inp,
                                             const floatX* __restrict__ weight, const floatX* __restrict__ bias,
                                             int N, int C) {
    cg::thread_block block = cg::this_thread_block();
    cg::thread_block_tile<32, cg::thread_block> warp = cg::tiled_partition<32>(block);
    int idx = blockIdx.x * warp.meta_group_size() + warp.meta_group_rank();
    if (idx >= N) return;
    const floatX* x = inp + idx * C;
    float sum = 0.0f;
    for (int c = warp.thread_rank() * x128::size; c < C; c += warp.size() * x128::size) {
        x128 packed = load128cs(x + c);
#pragma unroll
        for (int k = 0; k < x128::size; ++k) sum += (float)packed[k];
    }
    float m = cg::reduce(warp, sum, cg::plus<float>{}) / C;
    float sq = 0.0f;
    for (int c = warp.thread_rank() * x128::size; c < C; c += warp.size() * x128::size) {
        x128 packed = load128cs(x + c);
#pragma unroll
        for (int k = 0; k < x128::size; ++k) {
            float d = (float)packed[k] - m;
            sq += d * d;
        }
    }
    float s = rsqrtf(cg::reduce(warp, sq, cg::plus<float>{}) / C + 1e-5f);
    for (int c = warp.thread_rank() * x128::size; c < C; c += warp.size() * x128::size) {
        x128 packed = load128cs(x + c), w = load128g(weight + c), b = load128g(bias + c), o;
#pragma unroll
        for (int k = 0; k < x128::size; ++k)
            o[k] = (floatX)(s * ((float)packed[k] - m) * (float)w[k] + (float)b[k]);
        store128cs(out + idx * C + c, o);
    }
    if (warp.thread_rank() == 0) {
        __stcs(mean + idx, m);
        __stcs(rstd + idx, s);
    }
}

// ------------------------------------------------------------------------------ layernorm backward (float)
// One warp per row.  dweight and dbias are summed per block in dynamic shared memory (two arrays carved from one
// buffer) with shared atomics, then added to global memory with one atomicAdd per column and block.
extern "C" __global__ void layernorm_backward(float* __restrict__ dinp, float* __restrict__ dweight,
                                              float* __restrict__ dbias, const float* __restrict__ dout,
                                              const float* __restrict__ inp, const float* __restrict__ weight,
                                              const float* __restrict__ mean, const float* __restrict__ rstd,
                                              int N, int C) {
    extern __shared__ float shared[];
    float* dbias_shared = shared;
    float* dweight_shared = shared + C;
    cg::thread_block block = cg::this_thread_block();
    cg::thread_block_tile<32> warp = cg::tiled_partition<32>(block);
    for (int i = block.thread_rank(); i < C; i += block.size()) dbias_shared[i] = dweight_shared[i] = 0.0f;
    block.sync();
    int idx = blockIdx.x * warp.meta_group_size() + warp.meta_group_rank();
    if (idx < N) {
        const float* dout_bt = dout + idx * C;
        const float* inp_bt = inp + idx * C;
        const float mean_bt = mean[idx], rstd_bt = rstd[idx];
        float dnorm_mean = 0.0f, dnorm_norm_mean = 0.0f;
        for (int i = warp.thread_rank(); i < C; i += warp.size()) {
            float norm_bti = (inp_bt[i] - mean_bt) * rstd_bt;
            float dnorm_i = weight[i] * dout_bt[i];
            dnorm_mean += dnorm_i;
            dnorm_norm_mean += dnorm_i * norm_bti;
        }
        dnorm_mean = cg::reduce(warp, dnorm_mean, cg::plus<float>{}) / C;
        dnorm_norm_mean = cg::reduce(warp, dnorm_norm_mean, cg::plus<float>{}) / C;
        for (int i = warp.thread_rank(); i < C; i += warp.size()) {
            float norm_bti = (inp_bt[i] - mean_bt) * rstd_bt;
            float dnorm_i = weight[i] * dout_bt[i];
            atomicAdd(&dbias_shared[i], dout_bt[i]);
            atomicAdd(&dweight_shared[i], norm_bti * dout_bt[i]);
            dinp[idx * C + i] += rstd_bt * (dnorm_i - dnorm_mean - norm_bti * dnorm_norm_mean);
        }
    }
    block.sync();
    for (int i = block.thread_rank(); i < C; i += block.size()) {
        atomicAdd(&dbias[i], dbias_shared[i]);
        atomicAdd(&dweight[i], dweight_shared[i]);
    }
}

// ------------------------------------------------------------------------------ online softmax, one warp per row
// Each lane keeps a running (max, sum of exp) pair over its columns; the lanes' pairs meet through shfl_down with
// the usual rescaling, then lane 0's answer is broadcast with warp.shfl.
extern "C" __global__ void softmax_online(float* __restrict__ out, const floatX* __restrict__ inp, int N, int C) {
    auto warp = cg::tiled_partition<32>(cg::this_thread_block());
    int row = blockIdx.x * warp.meta_group_size() + warp.meta_group_rank();
    if (row >= N) return;
    const floatX* x = inp + row * C;
    float maxval = -INFINITY, sumval = 0.0f;
    for (int c = warp.thread_rank(); c < C; c += warp.size()) {
        float v = __bfloat162float(x[c]);
        if (v == -INFINITY) continue;  // a masked entry adds nothing (and -inf - -inf would be NaN)
        float m = fmaxf(maxval, v);
        sumval = sumval * expf(maxval - m) + expf(v - m);
        maxval = m;
    }
    for (int offset = warp.size() / 2; offset > 0; offset /= 2) {
        float other_max = warp.shfl_down(maxval, offset);
        float other_sum = warp.shfl_down(sumval, offset);
        float m = fmaxf(maxval, other_max);
        // a lane that saw no column has max -inf: exp(-inf - -inf) is NaN, so it adds nothing instead
        float mine = maxval == -INFINITY ? 0.0f : sumval * expf(maxval - m);
        float theirs = other_max == -INFINITY ? 0.0f : other_sum * expf(other_max - m);
        sumval = mine + theirs;
        maxval = m;
    }
    maxval = warp.shfl(maxval, 0);
    float norm = 1.0f / warp.shfl(sumval, 0);
    for (int c = warp.thread_rank(); c < C; c += warp.size()) out[row * C + c] = expf(__bfloat162float(x[c]) - maxval) * norm;
}

// ------------------------------------------------------------------------------ GELU (tanh form), x128 bf16
#define GELU_SCALING_FACTOR sqrtf(2.0f / M_PI)
extern "C" __global__ void gelu_forward(floatX* out, const floatX* inp, int n) {
    int i = (blockIdx.x * blockDim.x + threadIdx.x) * x128::size;
    if (i >= n) return;
    x128 packed_out, packed_inp = load128cs(inp + i);
#pragma unroll
    for (int k = 0; k < packed_inp.size; ++k) {
        float xi = (float)packed_inp[k];
        float cube = 0.044715f * xi * xi * xi;
        packed_out[k] = (floatX)(0.5f * xi * (1.0f + tanhf(GELU_SCALING_FACTOR * (xi + cube))));
    }
    store128(out + i, packed_out);
}
extern "C" __global__ void gelu_backward_inplace(floatX* d_in_out, const floatX* inp, int n) {
    int i = (blockIdx.x * blockDim.x + threadIdx.x) * x128::size;
    if (i >= n) return;
    x128 packed_dinp, packed_inp = load128cs(inp + i), packed_dout = load128(d_in_out + i);
    for (int k = 0; k < packed_inp.size; ++k) {
        float x = (float)packed_inp[k];
        float cube = 0.044715f * x * x * x;
        float tanh_arg = GELU_SCALING_FACTOR * (x + cube);
        float tanh_out = tanhf(tanh_arg);
        float coshf_out = coshf(tanh_arg);
        float sech_out = 1.0f / (coshf_out * coshf_out);
        float local_grad = 0.5f * (1.0f + tanh_out) + x * 0.5f * sech_out * GELU_SCALING_FACTOR * (1.0f + 3.0f * 0.044715f * x * x);
        packed_dinp[k] = (floatX)(local_grad * (float)packed_dout[k]);
    }
    store128(d_in_out + i, packed_dinp);
}

// ------------------------------------------------------------------------------ AdamW with stochastic rounding
// The master weights stay in float; the bf16 copy is rounded stochastically: the 16 bits bf16 drops are compared
// with 16 random bits from a hash of (thread, position, seed), and the value is rounded up (all ones, then
// round-to-nearest) or truncated.
__device__ __host__ constexpr unsigned int noise_hash(unsigned int x, unsigned int seed) {
    unsigned int h = x * 0x9E3779B1u + seed;
    h ^= h >> 15;
    h *= 0x85EBCA77u;
    h ^= h >> 13;
    h *= 0xC2B2AE3Du;
    h ^= h >> 16;
    return h;
}
__device__ void stochastic_rounding(float in, floatX* out, unsigned int random) {
    unsigned int threshold = random & 0xFFFF;
    unsigned int float_bits = __float_as_uint(in);
    unsigned int rounded_bits = float_bits & 0x0000FFFF;
    float_bits = (rounded_bits > threshold) ? (float_bits | 0xFFFF) : (float_bits & ~0xFFFF);
    *out = __float2bfloat16_rn(__uint_as_float(float_bits));
}
__device__ float lerp(float start, float end, float weight) { return fma(weight, end, fma(-weight, start, start)); }

extern "C" __global__ void adamw(floatX* params_memory, float* master_params, const floatX* grads_memory,
                                 float* m_memory, float* v_memory, size_t num_parameters, float learning_rate,
                                 float beta1, float beta2, float beta1_correction, float beta2_correction,
                                 float eps, float weight_decay, float grad_scale, unsigned int seed) {
    size_t idx = blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= num_parameters) return;
    float grad = grad_scale * (float)grads_memory[idx];
    float m = m_memory[idx], v = v_memory[idx];
    m = lerp(grad, m, beta1);
    m_memory[idx] = m;
    v = lerp(grad * grad, v, beta2);
    v_memory[idx] = v;
    m /= beta1_correction;
    v /= beta2_correction;
    float old_param = master_params[idx];
    float param = old_param - (learning_rate * (m / (sqrtf(v) + eps) + weight_decay * old_param));
    stochastic_rounding(param, &params_memory[idx], noise_hash((unsigned int)idx, seed));
    master_params[idx] = param;
}

// ------------------------------------------------------------------------------ encoder: bf16x2 adds through int4
// out[b, t, :] = wte[token] + wpe[t], eight bf16 at a time, added as four __nv_bfloat162 pairs.
extern "C" __global__ void encoder_forward(floatX* out, const int* inp, const floatX* wte, const floatX* wpe,
                                           int B, int T, int C) {
    int idx = (blockIdx.x * blockDim.x + threadIdx.x) * x128::size;
    if (idx >= B * T * C) return;
    int bt = idx / C, t = bt % T, c = idx % C;
    int ix = inp[bt];
    x128 a = load128g(wte + ix * C + c), p = load128g(wpe + t * C + c), o;
    const __nv_bfloat162* a2 = reinterpret_cast<const __nv_bfloat162*>(&a);
    const __nv_bfloat162* p2 = reinterpret_cast<const __nv_bfloat162*>(&p);
    __nv_bfloat162* o2 = reinterpret_cast<__nv_bfloat162*>(&o);
#pragma unroll
    for (int k = 0; k < x128::size / 2; ++k) o2[k] = __hadd2(a2[k], p2[k]);
    store128(out + idx, o);
}

// ------------------------------------------------------------------------------ 16-bit conversions and pairs
// Every rounding mode of float -> bf16 / half, double -> bf16 / half, and pair arithmetic, as bits.
extern "C" __global__ void convert_16bit(const float* __restrict__ x, const double* __restrict__ d,
                                         unsigned short* __restrict__ out, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    const float v = x[i];
    unsigned short* o = out + 10 * i;
    o[0] = __bfloat16_as_ushort(__float2bfloat16_rn(v));
    o[1] = __bfloat16_as_ushort(__float2bfloat16_rz(v));
    o[2] = __bfloat16_as_ushort(__float2bfloat16_rd(v));
    o[3] = __bfloat16_as_ushort(__float2bfloat16_ru(v));
    o[4] = __half_as_ushort(__float2half_rn(v));
    o[5] = __half_as_ushort(__float2half_rz(v));
    o[6] = __half_as_ushort(__float2half_rd(v));
    o[7] = __half_as_ushort(__float2half_ru(v));
    o[8] = __bfloat16_as_ushort(__double2bfloat16(d[i]));
    o[9] = __half_as_ushort(__double2half(d[i]));
}
extern "C" __global__ void pair_math(const unsigned* __restrict__ a, const unsigned* __restrict__ b,
                                     const unsigned* __restrict__ c, unsigned* __restrict__ bf_out,
                                     unsigned* __restrict__ h_out, const float2* __restrict__ f, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    __nv_bfloat162 ba, bb, bc;
    __half2 ha, hb, hc;
    memcpy(&ba, a + i, 4); memcpy(&bb, b + i, 4); memcpy(&bc, c + i, 4);
    memcpy(&ha, a + i, 4); memcpy(&hb, b + i, 4); memcpy(&hc, c + i, 4);
    __nv_bfloat162 br[5] = {__hadd2(ba, bb), __hmul2(ba, bb), __hfma2(ba, bb, bc), __hsub2(ba, bb), __float22bfloat162_rn(f[i])};
    __half2 hr[5] = {__hadd2(ha, hb), __hmul2(ha, hb), __hfma2(ha, hb, hc), __hsub2(ha, hb), __float22half2_rn(f[i])};
    memcpy(bf_out + 5 * i, br, sizeof(br));
    memcpy(h_out + 5 * i, hr, sizeof(hr));
}

// ------------------------------------------------------------------------------ integer and warp intrinsics
extern "C" __global__ void bit_intrinsics(const unsigned* __restrict__ a, const unsigned* __restrict__ b,
                                          const int* __restrict__ s, unsigned* __restrict__ out, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    unsigned x = a[i], y = b[i];
    int sel = s[i];
    unsigned* o = out + 9 * i;
    o[0] = __popc(x);
    o[1] = __ffs((int)x);
    o[2] = __clz((int)x);
    o[3] = __brev(x);
    o[4] = __byte_perm(x, y, (unsigned)sel);
    o[5] = __funnelshift_l(x, y, (unsigned)sel);
    o[6] = __funnelshift_r(x, y, (unsigned)sel);
    o[7] = __funnelshift_lc(x, y, (unsigned)sel);
    o[8] = __fns(x, (unsigned)(sel & 31), (sel >> 8) % 41 - 20);
}
// A ragged last warp: the lanes past n sit the branch out, so __activemask() and the reductions see only the others.
extern "C" __global__ void warp_intrinsics(const int* __restrict__ v, unsigned* __restrict__ out, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) {
        int x = v[i];
        unsigned act = __activemask();
        unsigned* o = out + 8 * i;
        o[0] = act;
        o[1] = __reduce_add_sync(act, (unsigned)x);
        o[2] = (unsigned)__reduce_max_sync(act, x);
        o[3] = (unsigned)__reduce_min_sync(act, x);
        o[4] = __match_any_sync(act, x & 3);
        o[5] = __ballot_sync(act, x < 0);
        if (act == 0xffffffffu) {  // partners outside the segment read their own value (CUDA's width rule)
            o[6] = (unsigned)__shfl_xor_sync(act, x, 4, 8);
            o[7] = (unsigned)__shfl_xor_sync(act, x, 9, 16);
        }
        __syncwarp(act);
    }
}

// ------------------------------------------------------------------------------ atomics on every type
extern "C" __global__ void atomics_all_types(const int* __restrict__ v, int n, double* d, __half2* h2,
                                             __nv_bfloat162* b2, __half* h, __nv_bfloat16* b, unsigned short* u16,
                                             float* fmax, unsigned* wrap_inc, unsigned* wrap_dec, float* per_block,
                                             long long* ll_min, float* aref_sum, int* aref_max, float2* f2) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    const int x = v[i];
    atomicAdd(d, x * 0.5);
    atomicAdd(h2, __halves2half2(__int2half_rn(x & 7), __int2half_rn(-(x & 3))));
    atomicAdd(b2, __floats2bfloat162_rn((float)(x & 1), 2.0f * (x & 1)));
    atomicAdd(h + 1, __int2half_rn(x & 1));  // a 2-byte element at an odd index: its own 2 bytes only
    atomicAdd(b + 1, __int2bfloat16_rn(1));
    unsigned short old = *u16, assumed;  // a 16-bit counter by compare-and-swap
    do {
        assumed = old;
        old = atomicCAS(u16, assumed, (unsigned short)(assumed + 3));
    } while (old != assumed);
    const float f = x * 0.25f;  // float max through integer atomics: non-negative floats order as ints
    if (f >= 0.0f) atomicMax(reinterpret_cast<int*>(fmax), __float_as_int(f));
    else atomicMin(reinterpret_cast<unsigned*>(fmax), __float_as_uint(f));
    atomicInc(wrap_inc, 5u);
    atomicDec(wrap_dec, 7u);
    atomicAdd_block(per_block + blockIdx.x, 1.0f);
    atomicMin(ll_min, x * -1000000000LL);
    cuda::atomic_ref<float, cuda::thread_scope_device> sum(*aref_sum);
    sum.fetch_add(0.5f, cuda::std::memory_order_relaxed);
    cuda::atomic_ref<int, cuda::thread_scope_block> best(*aref_max);
    best.fetch_max(x);
    atomicAdd(f2, make_float2(1.0f, (float)(x & 1)));
    __threadfence();
}

// ------------------------------------------------------------------------------ cooperative groups corners
// Tiles of tiles: meta_group_rank / meta_group_size count within the parent, as CUDA's; a runtime tile at the
// end of a block that is not a multiple of its size is short; grid_group::is_valid() says whether the launch is
// cooperative.
extern "C" __global__ void tile_places(unsigned* out) {
    cg::thread_block block = cg::this_thread_block();
    auto tile16 = cg::tiled_partition<16>(block);
    auto tile4 = cg::tiled_partition<4>(tile16);
    cg::thread_group run32 = cg::tiled_partition(block, 32);
    cg::thread_group run8 = cg::tiled_partition(run32, 8);
    unsigned* o = out + 8 * block.thread_rank();
    o[0] = tile16.meta_group_rank();
    o[1] = tile16.meta_group_size();
    o[2] = tile4.meta_group_rank();
    o[3] = tile4.meta_group_size();
    o[4] = run32.size();
    o[5] = run8.size();
    o[6] = run8.meta_group_rank() * 100 + run8.meta_group_size();
    o[7] = cg::this_grid().is_valid();
}

// Welford's (mean, M2, count) -- 12 bytes -- merged by cg::reduce over a tile, and a float4 broadcast by shfl.
struct Welford {
    float mean, m2;
    int count;
};
struct WelfordMerge {
    __device__ Welford operator()(const Welford& a, const Welford& b) const {
        const int n = a.count + b.count;
        if (n == 0) return Welford{0.0f, 0.0f, 0};
        const float delta = b.mean - a.mean;
        return Welford{a.mean + delta * b.count / n, a.m2 + b.m2 + delta * delta * a.count * b.count / n, n};
    }
};
extern "C" __global__ void welford_rows(const float* __restrict__ x, float4* __restrict__ stats, int rows, int cols) {
    auto warp = cg::tiled_partition<32>(cg::this_thread_block());
    int row = blockIdx.x * warp.meta_group_size() + warp.meta_group_rank();
    if (row >= rows) return;
    Welford w{0.0f, 0.0f, 0};
    for (int c = warp.thread_rank(); c < cols; c += warp.size()) {
        float v = x[row * cols + c];
        w.count += 1;
        float delta = v - w.mean;
        w.mean += delta / w.count;
        w.m2 += delta * (v - w.mean);
    }
    Welford total = cg::reduce(warp, w, WelfordMerge());
    float4 s = warp.shfl(make_float4(total.mean, total.m2 / total.count, (float)total.count, (float)warp.thread_rank()), 31);
    if (warp.thread_rank() == 0) stats[row] = s;
}

// A grid-wide normalization through grid.sync(), grid-stride loops over grid.thread_rank() / grid.size(), and the
// block's sum through a per-warp reduction into a small static __shared__ array (llm.c's blockReduce).
template <int BLOCK>
__global__ void __launch_bounds__(BLOCK) grid_normalize(float* __restrict__ x, float* __restrict__ partial, int n) {
    __shared__ float warp_sums[BLOCK / WARP_SIZE];
    cg::grid_group grid = cg::this_grid();
    cg::thread_block block = cg::this_thread_block();
    float acc = 0.0f;
    for (unsigned long long i = grid.thread_rank(); i < (unsigned long long)n; i += grid.size()) acc += x[i];
    acc = warpReduceSum(acc);
    if (threadIdx.x % WARP_SIZE == 0) warp_sums[threadIdx.x / WARP_SIZE] = acc;
    block.sync();
    if (threadIdx.x == 0) {
        float s = 0.0f;
#pragma unroll
        for (int w = 0; w < BLOCK / WARP_SIZE; ++w) s += warp_sums[w];
        partial[grid.block_rank()] = s;
    }
    grid.sync();
    float total = 0.0f;
    for (unsigned b = 0; b < grid.num_blocks(); ++b) total += partial[b];
    for (unsigned long long i = grid.thread_rank(); i < (unsigned long long)n; i += grid.size()) x[i] /= total;
}

// ------------------------------------------------------------------------------ cg::memcpy_async, double-buffered
// Each block sums its rows of `cols` floats: the copy of row r + 1 into the other half of the buffer is in flight
// while row r is summed (cg::wait_prior<1> lands all but the newest copy), as NVIDIA's blog on asynchronous copies
// writes it.
extern "C" __global__ void row_sums_pipelined(const float* __restrict__ x, float* __restrict__ sums, int rows_per_block,
                                              int cols) {
    extern __shared__ float stage[];  // two rows
    cg::thread_block block = cg::this_thread_block();
    auto warp = cg::tiled_partition<32>(block);
    const float* rows = x + (size_t)blockIdx.x * rows_per_block * cols;
    cg::memcpy_async(block, stage, rows, sizeof(float) * cols);
    for (int r = 0; r < rows_per_block; ++r) {
        if (r + 1 < rows_per_block) {
            cg::memcpy_async(block, stage + (r + 1) % 2 * cols, rows + (r + 1) * cols, sizeof(float) * cols);
            cg::wait_prior<1>(block);
        } else {
            cg::wait(block);
        }
        const float* row = stage + r % 2 * cols;
        float s = 0.0f;
        for (int c = block.thread_rank(); c < cols; c += block.size()) s += row[c];
        s = cg::reduce(warp, s, cg::plus<float>());
        if (warp.thread_rank() == 0) atomicAdd(&sums[blockIdx.x * rows_per_block + r], s);
        block.sync();  // everyone is done with this half before the next copy overwrites it
    }
}

// ------------------------------------------------------------------------------ shared memory carving, tables
// One dynamic buffer holds a float array, an int array and a double array (aligned up to 8 bytes); a second
// extern __shared__ declaration names the same bytes, as every extern __shared__ array starts at the same address.
// A constexpr table and a template parameter unrolled with #pragma unroll.
__device__ constexpr float kTaps[5] = {0.0625f, 0.25f, 0.375f, 0.25f, 0.0625f};
template <typename T, int TAPS>
__global__ void carve_and_filter(const T* __restrict__ a, const int* __restrict__ b, const double* __restrict__ c,
                                 T* __restrict__ out, int n) {
    extern __shared__ __align__(16) unsigned char smem[];
    extern __shared__ T alias[];
    T* sa = reinterpret_cast<T*>(smem);
    int* sb = reinterpret_cast<int*>(sa + n);
    const size_t offset = (n * sizeof(T) + n * sizeof(int) + 7) & ~size_t(7);
    double* sc = reinterpret_cast<double*>(smem + offset);
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        sa[i] = a[i];
        sb[i] = b[i];
        sc[i] = c[i];
    }
    __syncthreads();
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        T acc = 0;
#pragma unroll
        for (int k = 0; k < TAPS; ++k) {
            const int j = i + k - TAPS / 2;
            acc += (j >= 0 && j < n) ? (T)kTaps[k] * alias[j] : (T)0;
        }
        out[i] = acc * (T)sb[n - 1 - i] + (T)sc[i];
    }
}

// ------------------------------------------------------------------------------ printf
// CUDA's printf returns the number of arguments it parsed (0 without any), not the characters written.
extern "C" __global__ void print_rows(const float* x, int n, int* returned) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    returned[2 * i] = printf("row %d: %.3f %5.1e %s %c 0x%x %lld %%\n", i, x[i], x[i], "ok", 'a' + i, 255 + i, 1LL << 40);
    returned[2 * i + 1] = printf("plain\n");
}
