// lora_forward.cu -- the fused LoRA forward:  Y = X W0^T + bias + s * dropout(X) A^T B^T
//
// Shapes (row-major float32, PyTorch's [out, in] weight layout):
//     X  [M, K]  the input, all leading dims flattened      W0 [N, K]  frozen base weight
//     A  [r, K]  lora_A.weight                              B  [N, r]  lora_B.weight
//     bias [N] (optional)      s = lora_alpha / r (or alpha / sqrt(r) with rsLoRA)
//     U  [M, r]  the rank-r intermediate, returned so that backward can reuse it
//     Y  [M, N]
//
// Two launches, in this order:
//     1. lora_fwd_u:  U = dropout(X) A^T                   (M x r: tiny, computed ONCE)
//     2. lora_fwd_y:  Y = X W0^T + s U B^T + bias          (one GEMM; the rank-r term is added to the
//                                                         same accumulators after the main loop)
// The N x K matrix B A is never built, and X A^T is never recomputed per output tile: an output tile
// of Y reads BM rows of U and BN rows of B, r floats each -- a K-loop of length r tacked onto the
// K-loop of length K.  FLOPs: 2MNK (base) + 2MKr (U) + 2MNr (LoRA term);  bytes (fp32): 4(MK + NK +
// MN) plus the small rank-r arrays.
//
// Dropout (lora_dropout > 0): element (m, k) of X is kept iff lora_keep(seed, m*K + k, threshold)
// (common.cuh); kept elements are scaled by 1/(1-p).  Only the LoRA branch sees dropout, as in PEFT.
// The mask is a hash, never stored: backward regenerates it.
//
// Versions (every kernel exists in each; minilora.kernels picks one by shape, tests run all):
//     v1  naive: one thread per output element, a plain dot product from global memory.
//         block (16, 16); grid (ceil(cols / 16), ceil(M / 16)).
//     v2  shared-memory tiled: 16 x 16 output tile per block, BK = 16, one output per thread.
//         block 256; grid (ceil(cols / 16), ceil(M / 16)).
//     v3  register-blocked 2D tiling with float4 loads: lora_fwd_y uses 128 x 128 tiles, BK = 8,
//         8 x 8 outputs per thread; lora_fwd_u uses 64 x 32 tiles, BK = 16, 4 x 2 per thread
//         (r is small).  block 256; grid (ceil(cols / BN), ceil(M / BM)).  Ragged edges and
//         unaligned rows fall back to guarded scalar loads (common.cuh, load_tile).
// (cols = r for lora_fwd_u and N for lora_fwd_y.)
//
// Run one by hand on the CPU (the emulator) or a GPU (CuPy) through minilora.kernels:
//     from minilora import kernels
//     Y, U = kernels.lora_forward(X, W0, A, B, scale, device="emu", version="v2")
#include "common.cuh"

using namespace minilora;

// =================================================================================================
// v1: naive
// =================================================================================================
extern "C" __global__ void __launch_bounds__(256)
lora_fwd_u_v1(const float* __restrict__ X, const float* __restrict__ A, float* __restrict__ U, int M, int K,
              int r, unsigned seed, unsigned threshold, float keep_scale) {
    const int j = blockIdx.x * blockDim.x + threadIdx.x;  // column of U: which LoRA rank
    const int m = blockIdx.y * blockDim.y + threadIdx.y;  // row of U: which token
    if (m >= M || j >= r) return;
    float acc = 0.0f;
    for (int k = 0; k < K; ++k) {
        const unsigned long long i = (unsigned long long)m * K + k;
        if (threshold == 0u || lora_keep(seed, i, threshold)) acc = fmaf(X[i], A[(unsigned long long)j * K + k], acc);
    }
    U[(unsigned long long)m * r + j] = acc * keep_scale;
}

extern "C" __global__ void __launch_bounds__(256)
lora_fwd_y_v1(const float* __restrict__ X, const float* __restrict__ W0, const float* __restrict__ U,
              const float* __restrict__ B, const float* __restrict__ bias, int has_bias, float* __restrict__ Y,
              int M, int N, int K, int r, float s) {
    const int n = blockIdx.x * blockDim.x + threadIdx.x;  // output feature
    const int m = blockIdx.y * blockDim.y + threadIdx.y;  // token
    if (m >= M || n >= N) return;
    // EXERCISE 5.1: one thread per output: Y[m, n] = (X W0^T)[m, n] + s (U B^T)[m, n] + bias[n] if has_bias
    // BEGIN SOLUTION
    float base = 0.0f;  // (X W0^T)[m, n]: row m of X against row n of W0
    for (int k = 0; k < K; ++k) base = fmaf(X[(unsigned long long)m * K + k], W0[(unsigned long long)n * K + k], base);
    float lora = 0.0f;  // (U B^T)[m, n]: only r terms, because U = dropout(X) A^T is already done
    for (int j = 0; j < r; ++j) lora = fmaf(U[(unsigned long long)m * r + j], B[(unsigned long long)n * r + j], lora);
    Y[(unsigned long long)m * N + n] = base + s * lora + (has_bias ? bias[n] : 0.0f);
    // END SOLUTION
}

// =================================================================================================
// v2 and v3: tiled.  One template per kernel; the versions differ only in tile shape and load width.
// =================================================================================================
template <int BM, int BN, int BK, int TM, int TN, bool VEC, int STAGES, bool WARP_TILED>
__device__ __forceinline__ void lora_fwd_u_tiled(const float* X, const float* A, float* U, int M, int K, int r,
                                                 unsigned seed, unsigned threshold, float keep_scale) {
    __shared__ __align__(16) float As[STAGES][BK][BM + SMEM_PAD];
    __shared__ __align__(16) float Bs[STAGES][BK][BN + SMEM_PAD];
    const int m0 = blockIdx.y * BM, j0 = blockIdx.x * BN;
    using Tile = ThreadTile<BM, BN, TM, TN, WARP_TILED>;
    float acc[TM][TN];
    zero(acc);
    const Operand x = make_operand(X, K, M, keep_scale, seed, threshold);  // dropout(X), applied while loading
    const Operand a = make_operand(A, K, r);
    accumulate_tile<Tile, BK, true, true, VEC, STAGES>(acc, As, Bs, x, a, m0, j0, 0, K);
    store_tile<Tile>(acc, U, r, M, r, m0, j0, nullptr);
}

template <int BM, int BN, int BK, int TM, int TN, bool VEC, int STAGES, bool WARP_TILED>
__device__ __forceinline__ void lora_fwd_y_tiled(const float* X, const float* W0, const float* U, const float* B,
                                                 const float* bias, int has_bias, float* Y, int M, int N, int K,
                                                 int r, float s) {
    __shared__ __align__(16) float As[STAGES][BK][BM + SMEM_PAD];
    __shared__ __align__(16) float Bs[STAGES][BK][BN + SMEM_PAD];
    const int m0 = blockIdx.y * BM, n0 = blockIdx.x * BN;
    using Tile = ThreadTile<BM, BN, TM, TN, WARP_TILED>;
    float acc[TM][TN];
    zero(acc);
    // Main loop: the base GEMM X W0^T (both operands k-contiguous: X [M, K], W0 [N, K]).
    accumulate_tile<Tile, BK, true, true, VEC, STAGES>(acc, As, Bs, make_operand(X, K, M),
                                                         make_operand(W0, K, N), m0, n0, 0, K);
    // Epilogue: + s U B^T into the same registers -- r more steps of the k-loop (s folded into U's loads;
    // too few steps to be worth pipelining).
    accumulate_tile<Tile, BK, true, true, VEC, 1>(acc, As, Bs, make_operand(U, r, M, s), make_operand(B, r, N),
                                                  m0, n0, 0, r);
    store_tile<Tile>(acc, Y, N, M, N, m0, n0, has_bias ? bias : nullptr);
}

// The exported kernels (extern "C", as cupy.RawModule expects) just pick a tile shape.
// v2: 16 x 16 tiles, one output per thread, scalar loads.
extern "C" __global__ void __launch_bounds__(256, 2)
lora_fwd_u_v2(const float* __restrict__ X, const float* __restrict__ A, float* __restrict__ U, int M, int K, int r,
              unsigned seed, unsigned threshold, float keep_scale) {
    lora_fwd_u_tiled<16, 16, 16, 1, 1, false, 1, false>(X, A, U, M, K, r, seed, threshold, keep_scale);
}
extern "C" __global__ void __launch_bounds__(256, 2)
lora_fwd_y_v2(const float* __restrict__ X, const float* __restrict__ W0, const float* __restrict__ U,
              const float* __restrict__ B, const float* __restrict__ bias, int has_bias, float* __restrict__ Y,
              int M, int N, int K, int r, float s) {
    lora_fwd_y_tiled<16, 16, 16, 1, 1, false, 1, false>(X, W0, U, B, bias, has_bias, Y, M, N, K, r, s);
}

// v3: register blocks and float4 loads.
extern "C" __global__ void __launch_bounds__(256, 2)
lora_fwd_u_v3(const float* __restrict__ X, const float* __restrict__ A, float* __restrict__ U, int M, int K, int r,
              unsigned seed, unsigned threshold, float keep_scale) {
    lora_fwd_u_tiled<64, 32, 16, 4, 2, true, 1, false>(X, A, U, M, K, r, seed, threshold, keep_scale);
}
extern "C" __global__ void __launch_bounds__(256, 2)
lora_fwd_y_v3(const float* __restrict__ X, const float* __restrict__ W0, const float* __restrict__ U,
              const float* __restrict__ B, const float* __restrict__ bias, int has_bias, float* __restrict__ Y,
              int M, int N, int K, int r, float s) {
    lora_fwd_y_tiled<128, 128, 8, 8, 8, true, 1, false>(X, W0, U, B, bias, has_bias, Y, M, N, K, r, s);
}

// v4: v3's tiles with the pipelined main loop: two shared-memory buffers, the next tile's global
// reads in flight while the block multiplies the current one (common.cuh, accumulate_tile).
extern "C" __global__ void __launch_bounds__(256, 2)
lora_fwd_u_v4(const float* __restrict__ X, const float* __restrict__ A, float* __restrict__ U, int M, int K, int r,
              unsigned seed, unsigned threshold, float keep_scale) {
    lora_fwd_u_tiled<64, 32, 16, 4, 2, true, 2, false>(X, A, U, M, K, r, seed, threshold, keep_scale);
}
extern "C" __global__ void __launch_bounds__(256, 2)
lora_fwd_y_v4(const float* __restrict__ X, const float* __restrict__ W0, const float* __restrict__ U,
              const float* __restrict__ B, const float* __restrict__ bias, int has_bias, float* __restrict__ Y,
              int M, int N, int K, int r, float s) {
    lora_fwd_y_tiled<128, 128, 8, 8, 8, true, 2, false>(X, W0, U, B, bias, has_bias, Y, M, N, K, r, s);
}

// v5: v4 with the warp-tiled thread layout for the 128 x 128 GEMM (common.cuh, ThreadTile): each
// warp's shared-memory reads hit one transaction per float4 instead of four.
extern "C" __global__ void __launch_bounds__(256, 2)
lora_fwd_u_v5(const float* __restrict__ X, const float* __restrict__ A, float* __restrict__ U, int M, int K, int r,
              unsigned seed, unsigned threshold, float keep_scale) {
    lora_fwd_u_tiled<64, 32, 16, 4, 2, true, 2, false>(X, A, U, M, K, r, seed, threshold, keep_scale);
}
extern "C" __global__ void __launch_bounds__(256, 2)
lora_fwd_y_v5(const float* __restrict__ X, const float* __restrict__ W0, const float* __restrict__ U,
              const float* __restrict__ B, const float* __restrict__ bias, int has_bias, float* __restrict__ Y,
              int M, int N, int K, int r, float s) {
    lora_fwd_y_tiled<128, 128, 8, 8, 8, true, 2, true>(X, W0, U, B, bias, has_bias, Y, M, N, K, r, s);
}
