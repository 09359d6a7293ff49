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
// Versions (minilora.kernels picks one by shape; the tests run all).  Tile sizes live in lora_tiles.cuh,
// which minilora.kernels reads for its grids.  (cols = r for lora_fwd_u and N for lora_fwd_y.)
//     v1  naive: one thread per output element, a plain dot product from global memory.
//         block (16, 16); grid (ceil(cols / 16), ceil(M / 16)).
//     v2  shared-memory tiled: 16 x 16 output tile per block, k-step 16, one output per thread; each
//         element of X and W0 is read from global memory once per tile instead of once per output.
//         block 256; grid (ceil(cols / 16), ceil(M / 16)).
//     v1 and v2 are written out in full below, as plain CUDA.  From v3 on every version is ONE template
//     per kernel over common.cuh's GEMM machinery, configured by a struct in lora_tiles.cuh:
//     v3  register-blocked 2D tiling with float4 loads: lora_fwd_y uses 128 x 128 tiles, BK = 8,
//         8 x 8 outputs per thread; lora_fwd_u uses 64 x 32 tiles, BK = 16, 4 x 2 per thread
//         (r is small).  block 256; grid (ceil(cols / BN), ceil(M / BM)).  Ragged edges and
//         unaligned rows fall back to guarded scalar loads (common.cuh, load_tile).
//     v4  v3 with the pipelined main loop: two shared-memory buffers, the next tile's global reads in
//         flight while the block multiplies the current one (common.cuh, accumulate_tile).
//     v5  v4 with the warp-tiled thread layout for the 128 x 128 GEMM (common.cuh, ThreadTile).
//         lora_fwd_u has no v5 of its own: v4's kernel is launched (an alias in lora_tiles.cuh).
//     v6  lora_fwd_u with its rank tile sized to r: 16 x 16 tiles, one output per thread, k-step 32, so
//         M = 8192 launches 512 blocks (about 4 per SM of an H200, v4 launched 128) and r = 16 carries no
//         padding (v4's 32-wide rank tile was half padding).  lora_fwd_y is v5's kernel (an alias).
//         Expected, NOT measured (no GPU yet): U is a pass over X, so its floor is MK*4 bytes at HBM
//         speed, about 30 us at M = 8192, K = 4096; v4's U was estimated at 0.3-0.5 ms in the review.
//         ptxas (nvcc 13.0): lora_fwd_u_v6 48 registers on sm_80, 58 on sm_90, no spills.
//     v7  v6 with lora_fwd_y's main loop on cp.async (sm_80+; common.cuh, accumulate_tile_async): tiles
//         copied global -> shared without passing through registers, 4 buffers and 3 tiles in flight, so
//         the loads' latency hides behind 3 k-steps of arithmetic instead of v4's one.  X is transposed
//         into the k-major tile with 4-byte copies; edge guards stay per copy (zero-filling cp.async).
//         The rank-r epilogue keeps v3's loop (U needs the scale s on the way in).  lora_fwd_u is v6's.
//         Expected, NOT measured (no GPU yet).  ptxas (nvcc 13.0): lora_fwd_y_v7 122 registers on
//         sm_80, 128 on sm_90, no spills, 33 KB shared; the sm_90 SASS main loop has LDGSTS (cp.async),
//         LDGDEPBAR (commit) and DEPBAR.LE (wait_group); its plain LDGs belong to the epilogue.
//     v8  the forward is v7's (aliases): v8 changes only the backward's pass over dY.  Review of lora_fwd_u_v6
//         against the issue's "at least 4 blocks per SM" (132 SMs, M = 8192, r <= 16): it launches 512
//         blocks (3.9 per SM) and ptxas gives it 58 registers and 10 KB of shared memory on sm_90, so all
//         4 x 132 = 528 block slots can be resident: ONE wave, 97% of the slots filled, every SM streaming
//         3 or 4 blocks' rows of X.  Splitting K to reach 1024 blocks would only make that two waves of
//         the same total work (plus a reduction), so U keeps v6's kernel; the pass over dY, at 128 blocks
//         and 2 resident per SM, was the one that fell short (lora_backward.cu, v8).
//     v9  lora_fwd_y as ONE cp.async pipeline over  [X | sU] . [W0 | B]^T  (common.cuh, accumulate_phases_async):
//         the rank term's ceil(r / 8) k-steps are the last steps of the base GEMM's pipeline, so U's and B's
//         tiles are in flight while the last X/W0 tiles are multiplied (v7 ran them in a separate loop with
//         its own barriers and exposed latency; s scales U's fragments on the way out of shared memory, the
//         same float products as before, so v9's Y equals v7's bit for bit).  With loads asynchronous, bigger
//         thread tiles: 256 x 128 block tiles, 8 x 16 outputs per thread (8 warps of 32 x 128), 1 block per
//         SM -- 128 FFMA per 6 LDS.128 each k (v7: 64 per 4).  Full tiles of interior blocks are copied
//         without guards (load_full_tile_async: one source pointer and stride, constant shared offsets);
//         only edge blocks and the last ragged k-step pay per-copy bounds checks.  Blocks in grouped order
//         (GROUP_M = 8 tile rows at a time, common.cuh, grouped_tile): a wave of 132 blocks touches about 8
//         rows of X-tiles and 17 columns of W0-tiles (66 MB at K = 4096) instead of 4 and all 32 (80 MB),
//         so more of its reads are L2 hits.  4 stages of k-step 8: 49 KB of dynamic shared memory (sized by
//         the launcher; the kernel traps if given less).  k-step 16 was tried: 24 copies per thread and step
//         pushed ptxas past 255 registers (316 bytes of spills on sm_90).  lora_fwd_u is v6's.
//         Expected, NOT measured (no GPU yet): the issue's item 3 (bigger thread tiles once loads are
//         asynchronous) and 4 (the rank term in the pipeline, grouped order).
//         ptxas (nvcc 13.0): lora_fwd_y_v9 253 registers on sm_90, 228 on sm_80, no spills, no stack.
//         sm_90 SASS: the steady-state step's copies are 12 unpredicated LDGSTS.E (8 of X, 4 of W0) at
//         immediate offsets from one shared address, about 50 integer instructions beside them, against
//         1024 FFMA and 48 LDS.128; LDGDEPBAR / DEPBAR.LE for commit and wait; no LDL/STL.
//
// Run one by hand on the CPU (the emulator) or a GPU (CuPy) through minilora.kernels:
//     from minilora import kernels
//     Y, U = kernels.lora_forward(X, W0, A, B, scale, device="emu", version="v2")
#include "common.cuh"
#include "lora_tiles.cuh"

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

// v1 is the naive version every other is checked against: kernels.lora_forward(..., version="v1") runs it; a
// model's forward launches the tiled versions (v2 and up, kernels.pick_version), as it should on a GPU.
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
// v2: shared-memory tiled, one output per thread
// =================================================================================================
// The block computes a 16 x 16 tile of the output; thread (ty, tx) owns element (m0 + ty, col0 + tx).
// Each step of the k-loop, every thread copies ONE element of each operand's 16 x 16 tile into shared
// memory, the block waits, and each thread then takes 16 multiply-adds out of shared memory.
extern "C" __global__ void __launch_bounds__(256, 2)
lora_fwd_u_v2(const float* __restrict__ X, const float* __restrict__ A, float* __restrict__ U, int M, int K, int r,
              unsigned seed, unsigned threshold, float keep_scale) {
    constexpr int T = V2_TILE;
    __shared__ float Xs[T][T + 1];  // Xs[m][k] = dropout(X)[m0 + m, k0 + k]   (+1: no bank conflicts)
    __shared__ float As[T][T + 1];  // As[j][k] = A[j0 + j, k0 + k]
    const int ty = threadIdx.x / T, tx = threadIdx.x % T;
    const int m0 = blockIdx.y * T, j0 = blockIdx.x * T;
    float acc = 0.0f;
    for (int k0 = 0; k0 < K; k0 += T) {
        const int k = k0 + tx;  // the column this thread loads; zero outside the matrices
        const unsigned long long i = (unsigned long long)(m0 + ty) * K + k;
        const bool kept = threshold == 0u || lora_keep(seed, i, threshold);
        Xs[ty][tx] = (m0 + ty < M && k < K && kept) ? X[i] * keep_scale : 0.0f;
        As[ty][tx] = (j0 + ty < r && k < K) ? A[(unsigned long long)(j0 + ty) * K + k] : 0.0f;
        __syncthreads();
        for (int kk = 0; kk < T; ++kk) acc = fmaf(Xs[ty][kk], As[tx][kk], acc);
        __syncthreads();  // nobody overwrites a tile another thread is still reading
    }
    const int m = m0 + ty, j = j0 + tx;
    if (m < M && j < r) U[(unsigned long long)m * r + j] = acc;
}

extern "C" __global__ void __launch_bounds__(256, 2)
lora_fwd_y_v2(const float* __restrict__ X, const float* __restrict__ W0, const float* __restrict__ U,
              const float* __restrict__ B, const float* __restrict__ bias, int has_bias, float* __restrict__ Y,
              int M, int N, int K, int r, float s) {
    constexpr int T = V2_TILE;
    __shared__ float Ls[T][T + 1];  // left operand tile:  X[m0 + m, k0 + k], then s U[m0 + m, j0 + j]
    __shared__ float Rs[T][T + 1];  // right operand tile: W0[n0 + n, k0 + k], then B[n0 + n, j0 + j]
    const int ty = threadIdx.x / T, tx = threadIdx.x % T;
    const int m0 = blockIdx.y * T, n0 = blockIdx.x * T;
    float acc = 0.0f;
    // The base GEMM: acc = (X W0^T)[m, n].
    for (int k0 = 0; k0 < K; k0 += T) {
        const int k = k0 + tx;
        Ls[ty][tx] = (m0 + ty < M && k < K) ? X[(unsigned long long)(m0 + ty) * K + k] : 0.0f;
        Rs[ty][tx] = (n0 + ty < N && k < K) ? W0[(unsigned long long)(n0 + ty) * K + k] : 0.0f;
        __syncthreads();
        for (int kk = 0; kk < T; ++kk) acc = fmaf(Ls[ty][kk], Rs[tx][kk], acc);
        __syncthreads();
    }
    // The LoRA term into the same accumulator: + s (U B^T)[m, n], a k-loop of length r (s folded into U).
    for (int j0 = 0; j0 < r; j0 += T) {
        const int j = j0 + tx;
        Ls[ty][tx] = (m0 + ty < M && j < r) ? U[(unsigned long long)(m0 + ty) * r + j] * s : 0.0f;
        Rs[ty][tx] = (n0 + ty < N && j < r) ? B[(unsigned long long)(n0 + ty) * r + j] : 0.0f;
        __syncthreads();
        for (int jj = 0; jj < T; ++jj) acc = fmaf(Ls[ty][jj], Rs[tx][jj], acc);
        __syncthreads();
    }
    const int m = m0 + ty, n = n0 + tx;
    if (m < M && n < N) Y[(unsigned long long)m * N + n] = acc + (has_bias ? bias[n] : 0.0f);
}

// =================================================================================================
// v3, v4, v5: one template per kernel over common.cuh's tiled GEMM; Cfg (lora_tiles.cuh) says how.
// =================================================================================================
template <class Cfg>
__device__ __forceinline__ void lora_fwd_u_tiled(const float* X, const float* A, float* U, int M, int K, int r,
                                                 unsigned seed, unsigned threshold, float keep_scale) {
    __shared__ __align__(16) float As[Cfg::STAGES][Cfg::BK][Cfg::BM + SMEM_PAD];
    __shared__ __align__(16) float Bs[Cfg::STAGES][Cfg::BK][Cfg::BN + SMEM_PAD];
    const int m0 = blockIdx.y * Cfg::BM, j0 = blockIdx.x * Cfg::BN;
    using Tile = ThreadTile<Cfg::BM, Cfg::BN, Cfg::TM, Cfg::TN, Cfg::WARP_TILED>;
    static_assert(Tile::THREADS == THREADS, "the launch gives every tiled kernel THREADS threads");
    float acc[Cfg::TM][Cfg::TN];
    zero(acc);
    const Operand x = make_operand(X, K, M, keep_scale, seed, threshold);  // dropout(X), applied while loading
    const Operand a = make_operand(A, K, r);
    accumulate_tile<Tile, Cfg::BK, true, true, Cfg::VEC, Cfg::STAGES>(acc, As, Bs, x, a, m0, j0, 0, K);
    store_tile<Tile>(acc, U, r, M, r, m0, j0, nullptr);
}

template <class Cfg>
__device__ __forceinline__ void lora_fwd_y_tiled(const float* X, const float* W0, const float* U, const float* B,
                                                 const float* bias, int has_bias, float* Y, int M, int N, int K,
                                                 int r, float s) {
    __shared__ __align__(16) float As[Cfg::STAGES][Cfg::BK][Cfg::BM + SMEM_PAD];
    __shared__ __align__(16) float Bs[Cfg::STAGES][Cfg::BK][Cfg::BN + SMEM_PAD];
    const int m0 = blockIdx.y * Cfg::BM, n0 = blockIdx.x * Cfg::BN;
    using Tile = ThreadTile<Cfg::BM, Cfg::BN, Cfg::TM, Cfg::TN, Cfg::WARP_TILED>;
    float acc[Cfg::TM][Cfg::TN];
    zero(acc);
    // Main loop: the base GEMM X W0^T (both operands k-contiguous: X [M, K], W0 [N, K]).
    accumulate_tile<Tile, Cfg::BK, true, true, Cfg::VEC, Cfg::STAGES>(acc, As, Bs, make_operand(X, K, M),
                                                                       make_operand(W0, K, N), m0, n0, 0, K);
    // Epilogue: + s U B^T into the same registers -- r more steps of the k-loop (s folded into U's loads;
    // too few steps to be worth pipelining).
    accumulate_tile<Tile, Cfg::BK, true, true, Cfg::VEC, 1>(acc, As, Bs, make_operand(U, r, M, s),
                                                            make_operand(B, r, N), m0, n0, 0, r);
    store_tile<Tile>(acc, Y, N, M, N, m0, n0, has_bias ? bias : nullptr);
}

// The exported kernels (extern "C", as cupy.RawModule expects) each pick their configuration.
extern "C" __global__ void __launch_bounds__(256, 2)
lora_fwd_u_v3(const float* __restrict__ X, const float* __restrict__ A, float* __restrict__ U, int M, int K, int r,
              unsigned seed, unsigned threshold, float keep_scale) {
    lora_fwd_u_tiled<config::lora_fwd_u_v3>(X, A, U, M, K, r, seed, threshold, keep_scale);
}
extern "C" __global__ void __launch_bounds__(256, 2)
lora_fwd_y_v3(const float* __restrict__ X, const float* __restrict__ W0, const float* __restrict__ U,
              const float* __restrict__ B, const float* __restrict__ bias, int has_bias, float* __restrict__ Y,
              int M, int N, int K, int r, float s) {
    lora_fwd_y_tiled<config::lora_fwd_y_v3>(X, W0, U, B, bias, has_bias, Y, M, N, K, r, s);
}

extern "C" __global__ void __launch_bounds__(256, 2)
lora_fwd_u_v4(const float* __restrict__ X, const float* __restrict__ A, float* __restrict__ U, int M, int K, int r,
              unsigned seed, unsigned threshold, float keep_scale) {
    lora_fwd_u_tiled<config::lora_fwd_u_v4>(X, A, U, M, K, r, seed, threshold, keep_scale);
}
extern "C" __global__ void __launch_bounds__(256, 2)
lora_fwd_y_v4(const float* __restrict__ X, const float* __restrict__ W0, const float* __restrict__ U,
              const float* __restrict__ B, const float* __restrict__ bias, int has_bias, float* __restrict__ Y,
              int M, int N, int K, int r, float s) {
    lora_fwd_y_tiled<config::lora_fwd_y_v4>(X, W0, U, B, bias, has_bias, Y, M, N, K, r, s);
}

// (lora_fwd_u_v5 is lora_fwd_u_v4: see lora_tiles.cuh.)
extern "C" __global__ void __launch_bounds__(256, 2)
lora_fwd_y_v5(const float* __restrict__ X, const float* __restrict__ W0, const float* __restrict__ U,
              const float* __restrict__ B, const float* __restrict__ bias, int has_bias, float* __restrict__ Y,
              int M, int N, int K, int r, float s) {
    lora_fwd_y_tiled<config::lora_fwd_y_v5>(X, W0, U, B, bias, has_bias, Y, M, N, K, r, s);
}

// v6: U with a rank tile sized to r (config::lora_fwd_u_v6); Y is v5's kernel (lora_fwd_y_v6 is an alias).
extern "C" __global__ void __launch_bounds__(256, 4)
lora_fwd_u_v6(const float* __restrict__ X, const float* __restrict__ A, float* __restrict__ U, int M, int K, int r,
              unsigned seed, unsigned threshold, float keep_scale) {
    lora_fwd_u_tiled<config::lora_fwd_u_v6>(X, A, U, M, K, r, seed, threshold, keep_scale);
}

// v7: Y's main loop on cp.async (config::lora_fwd_y_v7, STAGES = 4); U is v6's kernel.
extern "C" __global__ void __launch_bounds__(256, 2)
lora_fwd_y_v7(const float* __restrict__ X, const float* __restrict__ W0, const float* __restrict__ U,
              const float* __restrict__ B, const float* __restrict__ bias, int has_bias, float* __restrict__ Y,
              int M, int N, int K, int r, float s) {
    lora_fwd_y_tiled<config::lora_fwd_y_v7>(X, W0, U, B, bias, has_bias, Y, M, N, K, r, s);
}

// v9: Y = [X | sU] . [W0 | B]^T + bias as one cp.async pipeline (common.cuh, accumulate_phases_async): the
// rank term's k-steps are the last steps of the base GEMM's pipeline, not a separate epilogue loop; 256 x 128
// block tiles with 8 x 16 outputs per thread (8 warps, 1 block per SM); full tiles copied without guards;
// blocks in grouped order (GROUP_M rows of tiles at a time) for L2 reuse.  Shared memory is dynamic
// (4 stages x 8 k x (256 + 128 + padding) floats, 49 KB: over the 48 KB a static array may take).
template <class Cfg>
__device__ __forceinline__ void lora_fwd_y_phases(float* smem, const float* X, const float* W0, const float* U,
                                                  const float* B, const float* bias, int has_bias, float* Y, int M,
                                                  int N, int K, int r, float s) {
    constexpr int BM = Cfg::BM, BN = Cfg::BN, BK = Cfg::BK, STAGES = Cfg::STAGES;
    using Tile = ThreadTile<BM, BN, Cfg::TM, Cfg::TN, Cfg::WARP_TILED>;
    static_assert(Tile::THREADS == THREADS, "the launch gives every tiled kernel THREADS threads");
    auto As = reinterpret_cast<float (*)[BK][BM + SMEM_PAD]>(smem);
    auto Bs = reinterpret_cast<float (*)[BK][BN + SMEM_PAD]>(smem + STAGES * BK * (BM + SMEM_PAD));
    int tile_m, tile_n;
    grouped_tile<Cfg::GROUP_M>(tile_m, tile_n);
    const int m0 = tile_m * BM, n0 = tile_n * BN;
    float acc[Cfg::TM][Cfg::TN];
    zero(acc);
    const Phase base = make_phase(make_operand(X, K, M), make_operand(W0, K, N), K);  // X W0^T over K
    const Phase rank = make_phase(make_operand(U, r, M), make_operand(B, r, N), r, s);  // (sU) B^T over r
    accumulate_phases_async<Tile, BK, STAGES, true, true>(acc, As, Bs, base, rank, m0, n0,
                                                          [](float (&)[Cfg::TM][Cfg::TN]) {});
    store_tile<Tile>(acc, Y, N, M, N, m0, n0, has_bias ? bias : nullptr);
}

extern "C" __global__ void __launch_bounds__(256, 1)
lora_fwd_y_v9(const float* __restrict__ X, const float* __restrict__ W0, const float* __restrict__ U,
              const float* __restrict__ B, const float* __restrict__ bias, int has_bias, float* __restrict__ Y,
              int M, int N, int K, int r, float s, int smem_bytes) {
    extern __shared__ __align__(16) float lora_smem[];
    if (smem_bytes < phases_smem_bytes<config::lora_fwd_y_v9>()) __trap();
    lora_fwd_y_phases<config::lora_fwd_y_v9>(lora_smem, X, W0, U, B, bias, has_bias, Y, M, N, K, r, s);
}
