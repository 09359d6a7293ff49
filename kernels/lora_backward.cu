// lora_backward.cu -- the fused LoRA backward: gradients for X, A and B; none for the frozen W0.
//
// Forward was  Y = X W0^T + bias + s U B^T  with  U = dropout(X) A^T  (lora_forward.cu).  Given dY:
//     V  = s dY B                          [M, r]   the gradient reaching U (scratch, never returned)
//     dB = s dY^T U                        [N, r]
//     dX = dY W0 + mask/(1-p) * (V A)      [M, K]   dropout's backward touches the LoRA branch only
//     dA = V^T dropout(X)                  [r, K]
// Shapes and layouts as in lora_forward.cu: X [M, K], W0 [N, K], A [r, K], B [N, r], dY [M, N].
// The mask is regenerated from the seed (common.cuh, lora_keep), never stored.
// FLOPs: 2MNK (dX base) + 2MKr (V A) + 2MNr (V) + 2MNr (dB) + 2MKr (dA); no 2MNK for dW0 -- the saving
// LoRA is built on.  Bytes (fp32): 4(MN + NK + 2MK) plus rank-r arrays and the partial sums below.
//
// Launches (v2 on; v1 computes the same outputs naively, one kernel per output):
//     1. lora_bwd_dy:   ONE pass over dY produces V and dB.  A block owns BM rows of dY and walks all of
//                       N in BN-wide tiles: each tile adds into V's registers (dY B) and yields dB's rows
//                       n0..n0+BN summed over the block's BM rows (dY^T U).  Those per-block partial sums
//                       go to P_B [ceil(M/BM), N, r] (or straight into dB when one block covers M) ...
//     2. lora_reduce_partials: ... and a second pass adds them up in a fixed order:  dB = sum_b P_B[b].
//     3. lora_bwd_dx:   dX = dY W0 + mask * (V A): one GEMM; the rank-r term is accumulated first, masked
//                       in registers, then the main loop over N adds dY W0 to the same accumulators.
//     4. lora_bwd_da:   dA = V^T dropout(X) split over M: block z sums rows [z*R, (z+1)*R) into P_A[z] ...
//     5. lora_reduce_partials: ... and the second pass adds the S slices: dA = sum_z P_A[z].
// Deterministic: every output element is written by one thread and every sum runs in a fixed order --
// no float atomics anywhere -- so two runs give identical bits.
//
// Versions (tile sizes in lora_tiles.cuh, which minilora.kernels reads for its grids):
//     v1  naive, one thread per output element: lora_bwd_v_v1, lora_bwd_db_v1 (a full dot product over
//         M, so no partials), lora_bwd_dx_v1, lora_bwd_da_v1.  block (16, 16), grid over the output.
//     v2  shared-memory tiled, one output per thread, 16 x 16 tiles: lora_bwd_dy_v2, lora_bwd_dx_v2,
//         lora_bwd_da_v2.  block 256.
//     v1 and v2 are written out in full below, as plain CUDA.  From v3 on every version is ONE template
//     per kernel over common.cuh's GEMM machinery, configured by a struct in lora_tiles.cuh:
//     v3  register-blocked, float4 loads: lora_bwd_dy_v3 (BM 64, BN 32, r-chunk 64, 4 x 4 per thread),
//         lora_bwd_dx_v3 (128 x 128 tiles, BK 8, 8 x 8 per thread), lora_bwd_da_v3 (32 (r) x 64 (K)
//         tiles, BK 16 rows of M, 2 x 4 per thread).  block 256.
//     v4  the pipelined main loop for dX and dA (common.cuh, accumulate_tile); dY's pass has no k-loop
//         of its own to pipeline, so v4 launches lora_bwd_dy_v3 (an alias in lora_tiles.cuh).
//     v5  the warp-tiled thread layout for dX's 128 x 128 GEMM (common.cuh, ThreadTile); dY and dA
//         (no 8 x 8 thread block) launch their v3 and v4 kernels.
//     v6  lora_bwd_dy with its rank chunk sized to r: RC = 16 instead of 64 (75% padding at r = 16), one
//         rank per thread column, 4 rows of V per thread; r = 64 runs 4 chunks side by side (512 blocks at
//         M = 8192).  At r <= 16 it still launches ceil(M/64) blocks (128 at M = 8192, under 4 per SM):
//         more row blocks would grow dB's partial sums; splitting N over blocks (partial V instead) is
//         v8.  dX and dA are v5's kernels (aliases).  Expected, NOT measured (no GPU yet).
//         ptxas (nvcc 13.0): lora_bwd_dy_v6 80 registers on sm_80, 85 on sm_90 (2 blocks per SM), no spills.
//     v7  v6 with dX's main loop (dY W0) on cp.async, 4 buffers, 3 tiles in flight (common.cuh,
//         accumulate_tile_async): W0 is d-contiguous here, so its tile rows arrive as 16-byte copies.
//         dY's pass is v6's; dA keeps v4's register path (X is loaded through dropout).
//         Expected, NOT measured (no GPU yet).  ptxas (nvcc 13.0): lora_bwd_dx_v7 127 registers on
//         sm_80, 128 on sm_90, no spills; sm_90 SASS has LDGSTS.E.BYPASS.128 for W0's rows.
//     v8  v6's pass over dY with N split over blocks (grid z): at M = 8192 and r <= 16 v6 launches
//         ceil(M/64) = 128 blocks, under one per SM of a 132-SM H200, and at 85 registers (sm_90) only 2 of
//         them fit on an SM anyway.  v8 gives each block a slice of N -- whole 32-wide tiles, as many slices
//         as it takes for at least 4 blocks per SM (kernels._MIN_BLOCKS = 528): 5 slices, 640 blocks at
//         r = 16; 2 slices, 1024 blocks at r = 64 -- and writes V's partial sums ([slices, M, r], 0.5 MB
//         each at r = 16), reduced like dB's.  __launch_bounds__(256, 4): 64 registers (ptxas, sm_80 63,
//         sm_90 64, no spills) and 16 KB of shared memory, so 4 blocks are resident per SM.  dY is still
//         read once in all.  The same template runs lora_bf16.cu's pass over a bf16 dY.  dX and dA are v7's.
//         Expected, NOT measured (no GPU yet).
//     v9  dX as ONE cp.async pipeline on the forward's v9 tiles (256 x 128, 8 x 16 outputs per thread, 1 block per
//         SM, unguarded copies of full tiles, grouped block order, 49 KB of dynamic shared memory): the rank
//         term V A takes the pipeline's first ceil(r / 8) k-steps, the dropout mask multiplies the finished
//         V A in the accumulators (accumulate_phases_async's `between`), then the k-steps over N add dY W0.
//         v7 ran V A through an unpipelined loop first.  The same sums in the same order: dX equals v8's bit
//         for bit.  dY's pass is v8's, dA v4's.  Expected, NOT measured (no GPU yet).
//         ptxas (nvcc 13.0): lora_bwd_dx_v9 255 registers on sm_80 and sm_90, no spills, no stack; sm_90
//         SASS: W0's full-tile rows as unpredicated LDGSTS.E.BYPASS.128, V's as LDGSTS.E; no LDL/STL.
//     grids: dy (ceil(r/RC), ceil(M/BM), slices: 1 before v8); dx (ceil(K/BN), ceil(M/BM)); da (ceil(K/BN),
//     ceil(r/BM), S);
//     lora_reduce_partials: block 256, grid ceil(E/256) for E output elements.
//
// Run by hand:  dX, dA, dB = minilora.kernels.lora_backward(dY, X, W0, A, B, U, s, device="emu", version="v3")
#include "common.cuh"
#include "lora_tiles.cuh"

using namespace minilora;

// =================================================================================================
// v1: naive
// =================================================================================================
extern "C" __global__ void __launch_bounds__(256)
lora_bwd_v_v1(const float* __restrict__ dY, const float* __restrict__ B, float* __restrict__ V, int M, int N, int r,
              float s) {
    const int j = blockIdx.x * blockDim.x + threadIdx.x, m = blockIdx.y * blockDim.y + threadIdx.y;
    if (m >= M || j >= r) return;
    float acc = 0.0f;
    for (int n = 0; n < N; ++n) acc = fmaf(dY[(unsigned long long)m * N + n], B[(unsigned long long)n * r + j], acc);
    V[(unsigned long long)m * r + j] = s * acc;
}

extern "C" __global__ void __launch_bounds__(256)
lora_bwd_db_v1(const float* __restrict__ dY, const float* __restrict__ U, float* __restrict__ dB, int M, int N,
               int r, float s) {
    const int j = blockIdx.x * blockDim.x + threadIdx.x, n = blockIdx.y * blockDim.y + threadIdx.y;
    if (n >= N || j >= r) return;
    float acc = 0.0f;
    for (int m = 0; m < M; ++m) acc = fmaf(dY[(unsigned long long)m * N + n], U[(unsigned long long)m * r + j], acc);
    dB[(unsigned long long)n * r + j] = s * acc;
}

extern "C" __global__ void __launch_bounds__(256)
lora_bwd_dx_v1(const float* __restrict__ dY, const float* __restrict__ W0, const float* __restrict__ V,
               const float* __restrict__ A, float* __restrict__ dX, int M, int N, int K, int r, unsigned seed,
               unsigned threshold, float keep_scale) {
    const int k = blockIdx.x * blockDim.x + threadIdx.x, m = blockIdx.y * blockDim.y + threadIdx.y;
    if (m >= M || k >= K) return;
    float base = 0.0f;
    for (int n = 0; n < N; ++n) base = fmaf(dY[(unsigned long long)m * N + n], W0[(unsigned long long)n * K + k], base);
    float lora = 0.0f;
    for (int j = 0; j < r; ++j) lora = fmaf(V[(unsigned long long)m * r + j], A[(unsigned long long)j * K + k], lora);
    const unsigned long long i = (unsigned long long)m * K + k;
    const float keep = (threshold == 0u || lora_keep(seed, i, threshold)) ? keep_scale : 0.0f;
    dX[i] = base + keep * lora;
}

extern "C" __global__ void __launch_bounds__(256)
lora_bwd_da_v1(const float* __restrict__ V, const float* __restrict__ X, float* __restrict__ dA, int M, int K, int r,
               unsigned seed, unsigned threshold, float keep_scale) {
    const int k = blockIdx.x * blockDim.x + threadIdx.x, j = blockIdx.y * blockDim.y + threadIdx.y;
    if (j >= r || k >= K) return;
    float acc = 0.0f;
    for (int m = 0; m < M; ++m) {
        const unsigned long long i = (unsigned long long)m * K + k;
        if (threshold == 0u || lora_keep(seed, i, threshold)) acc = fmaf(V[(unsigned long long)m * r + j], X[i], acc);
    }
    dA[(unsigned long long)j * K + k] = acc * keep_scale;
}

// =================================================================================================
// The second pass of every split reduction: out[e] = sum_{z < S} P[z * E + e], z in increasing order.
// =================================================================================================
extern "C" __global__ void __launch_bounds__(256)
lora_reduce_partials(const float* __restrict__ P, float* __restrict__ out, int S, long long E) {
    const long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (e >= E) return;
    float acc = 0.0f;
    for (int z = 0; z < S; ++z) acc += P[z * E + e];
    out[e] = acc;
}

// =================================================================================================
// v2: shared-memory tiled, one output per thread (16 x 16 tiles, block 256: thread (ty, tx))
// =================================================================================================

// V = s dY B and dB's partial sums, reading dY once.  Block (x, y) owns rows [m0, m0 + 16) of dY and
// LoRA ranks [j0, j0 + 16).  It walks N in 16-wide tiles; per tile, thread (ty, tx) adds to
// V[m0 + ty, j0 + tx] and computes dB[n0 + ty, j0 + tx] summed over the block's 16 rows.
extern "C" __global__ void __launch_bounds__(256, 2)
lora_bwd_dy_v2(const float* __restrict__ dY, const float* __restrict__ B, const float* __restrict__ U,
               float* __restrict__ V, float* __restrict__ dB_out, int write_db, int M, int N, int r, float s) {
    constexpr int T = V2_TILE;
    __shared__ float Ds[T][T + 1];  // Ds[n][m] = dY[m0 + m, n0 + n]
    __shared__ float Bs[T][T + 1];  // Bs[n][j] = B[n0 + n, j0 + j]
    __shared__ float Us[T][T + 1];  // Us[m][j] = U[m0 + m, j0 + j], loaded once
    const int ty = threadIdx.x / T, tx = threadIdx.x % T;
    const int m0 = blockIdx.y * T, j0 = blockIdx.x * T;
    Us[ty][tx] = (m0 + ty < M && j0 + tx < r) ? U[(unsigned long long)(m0 + ty) * r + j0 + tx] : 0.0f;
    float v = 0.0f;
    for (int n0 = 0; n0 < N; n0 += T) {
        Ds[tx][ty] = (m0 + ty < M && n0 + tx < N) ? dY[(unsigned long long)(m0 + ty) * N + n0 + tx] : 0.0f;
        Bs[ty][tx] = (n0 + ty < N && j0 + tx < r) ? B[(unsigned long long)(n0 + ty) * r + j0 + tx] : 0.0f;
        __syncthreads();
        for (int nn = 0; nn < T; ++nn) v = fmaf(Ds[nn][ty], Bs[nn][tx], v);  // V[m, j] += dY[m, n] B[n, j]
        if (write_db) {  // dB[n, j] partial = sum over this block's rows m of dY[m, n] U[m, j]
            float db = 0.0f;
            for (int mm = 0; mm < T; ++mm) db = fmaf(Ds[ty][mm], Us[mm][tx], db);
            const int n = n0 + ty, j = j0 + tx;
            if (n < N && j < r) dB_out[((unsigned long long)blockIdx.y * N + n) * r + j] = s * db;
        }
        __syncthreads();
    }
    const int m = m0 + ty, j = j0 + tx;
    if (m < M && j < r) V[(unsigned long long)m * r + j] = s * v;
}

// dX = dY W0 + mask * (V A) for the 16 x 16 tile at (m0, k0): the rank-r term first, so the dropout
// mask multiplies a finished LoRA sum; then the main loop over N adds dY W0 to the same accumulator.
extern "C" __global__ void __launch_bounds__(256, 2)
lora_bwd_dx_v2(const float* __restrict__ dY, const float* __restrict__ W0, const float* __restrict__ V,
               const float* __restrict__ A, float* __restrict__ dX, int M, int N, int K, int r, unsigned seed,
               unsigned threshold, float keep_scale) {
    constexpr int T = V2_TILE;
    __shared__ float Ls[T][T + 1];  // left tile:  V[m0 + m, j0 + j], then dY[m0 + m, n0 + n]
    __shared__ float Rs[T][T + 1];  // right tile: A[j0 + j, k0 + k], then W0[n0 + n, k0 + k]
    const int ty = threadIdx.x / T, tx = threadIdx.x % T;
    const int m0 = blockIdx.y * T, k0 = blockIdx.x * T;
    float acc = 0.0f;
    for (int j0 = 0; j0 < r; j0 += T) {  // 1. (V A)[m, k]
        Ls[ty][tx] = (m0 + ty < M && j0 + tx < r) ? V[(unsigned long long)(m0 + ty) * r + j0 + tx] : 0.0f;
        Rs[ty][tx] = (j0 + ty < r && k0 + tx < K) ? A[(unsigned long long)(j0 + ty) * K + k0 + tx] : 0.0f;
        __syncthreads();
        for (int jj = 0; jj < T; ++jj) acc = fmaf(Ls[ty][jj], Rs[jj][tx], acc);
        __syncthreads();
    }
    if (threshold != 0u) {  // 2. dropout's backward: the forward's mask, scaled by 1/(1-p)
        const unsigned long long i = (unsigned long long)(m0 + ty) * K + (k0 + tx);
        acc *= lora_keep(seed, i, threshold) ? keep_scale : 0.0f;
    }
    for (int n0 = 0; n0 < N; n0 += T) {  // 3. + (dY W0)[m, k]
        Ls[ty][tx] = (m0 + ty < M && n0 + tx < N) ? dY[(unsigned long long)(m0 + ty) * N + n0 + tx] : 0.0f;
        Rs[ty][tx] = (n0 + ty < N && k0 + tx < K) ? W0[(unsigned long long)(n0 + ty) * K + k0 + tx] : 0.0f;
        __syncthreads();
        for (int nn = 0; nn < T; ++nn) acc = fmaf(Ls[ty][nn], Rs[nn][tx], acc);
        __syncthreads();
    }
    const int m = m0 + ty, k = k0 + tx;
    if (m < M && k < K) dX[(unsigned long long)m * K + k] = acc;
}

// dA's partial sum over the rows of split z: P_A[z] = V[rows]^T dropout(X)[rows], rows = [z R, z R + R).
// Thread (ty, tx) owns dA[j0 + ty, k0 + tx].
extern "C" __global__ void __launch_bounds__(256, 2)
lora_bwd_da_v2(const float* __restrict__ V, const float* __restrict__ X, float* __restrict__ dA_out, int M, int K,
               int r, int rows_per_split, unsigned seed, unsigned threshold, float keep_scale) {
    constexpr int T = V2_TILE;
    __shared__ float Vs[T][T + 1];  // Vs[m][j] = V[mb + m, j0 + j]
    __shared__ float Xs[T][T + 1];  // Xs[m][k] = dropout(X)[mb + m, k0 + k]
    const int ty = threadIdx.x / T, tx = threadIdx.x % T;
    const int j0 = blockIdx.y * T, k0 = blockIdx.x * T, z = blockIdx.z;
    const int m_begin = z * rows_per_split, m_end = min(M, m_begin + rows_per_split);
    float acc = 0.0f;
    for (int mb = m_begin; mb < m_end; mb += T) {
        const int m = mb + ty;
        const unsigned long long i = (unsigned long long)m * K + k0 + tx;
        const bool kept = threshold == 0u || lora_keep(seed, i, threshold);
        Vs[ty][tx] = (m < m_end && j0 + tx < r) ? V[(unsigned long long)m * r + j0 + tx] : 0.0f;
        Xs[ty][tx] = (m < m_end && k0 + tx < K && kept) ? X[i] * keep_scale : 0.0f;
        __syncthreads();
        for (int mm = 0; mm < T; ++mm) acc = fmaf(Vs[mm][ty], Xs[mm][tx], acc);
        __syncthreads();
    }
    const int j = j0 + ty, k = k0 + tx;
    if (j < r && k < K) dA_out[(unsigned long long)z * r * K + (unsigned long long)j * K + k] = acc;
}

// =================================================================================================
// v3, v4, v5: one template per kernel over common.cuh's tiled GEMM; Cfg (lora_tiles.cuh) says how.
// =================================================================================================

// (lora_bwd_dy_tiled -- V = s dY B and dB's partial sums in one pass over dY -- is in common.cuh:
// lora_bf16.cu runs the same template on bf16 dY.)

// Dropout's backward on a thread's TM x TN outputs of dX (rows from m0, columns of K from k0): the forward's
// mask (regenerated from the seed), kept elements scaled by 1/(1-p).  Shared by v3-v8 and v9.
template <class Tile, int TM, int TN>
__device__ __forceinline__ void apply_dropout_mask(float (&acc)[TM][TN], int m0, int k0, int K, unsigned seed,
                                                   unsigned threshold, float keep_scale) {
    if (threshold == 0u) return;
    const Tile tile(threadIdx.x);
#pragma unroll
    for (int i = 0; i < TM; ++i)
#pragma unroll
        for (int j = 0; j < TN; ++j) {
            const unsigned long long idx = (unsigned long long)(m0 + tile.row(i)) * K + (k0 + tile.col(j));
            acc[i][j] *= lora_keep(seed, idx, threshold) ? keep_scale : 0.0f;
        }
}

// dX = dY W0 + mask * (V A).  The rank-r term goes first: that way the dropout mask multiplies a
// finished LoRA sum held in the very accumulators the main loop then adds dY W0 to -- no second set
// of TM x TN registers, and the hash runs once per output element.
template <class Cfg>
__device__ __forceinline__ void lora_bwd_dx_tiled(const float* dY, const float* W0, const float* V, const float* A,
                                                  float* dX, int M, int N, int K, int r, unsigned seed,
                                                  unsigned threshold, float keep_scale) {
    constexpr int BM = Cfg::BM, BN = Cfg::BN, BK = Cfg::BK, TM = Cfg::TM, TN = Cfg::TN, STAGES = Cfg::STAGES;
    constexpr bool VEC = Cfg::VEC, WARP_TILED = Cfg::WARP_TILED;
    __shared__ __align__(16) float As[STAGES][BK][BM + SMEM_PAD];
    __shared__ __align__(16) float Bs[STAGES][BK][BN + SMEM_PAD];
    const int m0 = blockIdx.y * BM, k0 = blockIdx.x * BN;
    using Tile = ThreadTile<BM, BN, TM, TN, WARP_TILED>;
    float acc[TM][TN];
    zero(acc);
    // 1. V A: V [M, r] is (d = m, k = j) k-contiguous; A [r, K] is (d = k, k = j) d-contiguous.
    //    Only r / BK k-steps: too few to pipeline, and the plain loop needs fewer registers.
    accumulate_tile<Tile, BK, true, false, VEC, 1>(acc, As, Bs, make_operand(V, r, M), make_operand(A, K, K),
                                                   m0, k0, 0, r);
    // 2. dropout's backward: the same mask as the forward, scaled by 1/(1-p).
    apply_dropout_mask<Tile>(acc, m0, k0, K, seed, threshold, keep_scale);
    // 3. Main loop: + dY W0.  dY [M, N] is (d = m, k = n) k-contiguous; W0 [N, K] is (d = k, k = n).
    accumulate_tile<Tile, BK, true, false, VEC, STAGES>(acc, As, Bs, make_operand(dY, N, M),
                                                          make_operand(W0, K, K), m0, k0, 0, N);
    store_tile<Tile>(acc, dX, K, M, K, m0, k0, nullptr);
}

// dA's partial sum over the rows of split z: P_A[z] = V[rows]^T dropout(X)[rows], rows = [z*R, z*R + R).
template <class Cfg>
__device__ __forceinline__ void lora_bwd_da_tiled(const float* V, const float* X, float* dA_out, int M, int K, int r,
                                                  int rows_per_split, unsigned seed, unsigned threshold,
                                                  float keep_scale) {
    constexpr int BM = Cfg::BM, BN = Cfg::BN, BK = Cfg::BK, TM = Cfg::TM, TN = Cfg::TN, STAGES = Cfg::STAGES;
    constexpr bool VEC = Cfg::VEC, WARP_TILED = Cfg::WARP_TILED;
    __shared__ __align__(16) float As[STAGES][BK][BM + SMEM_PAD];
    __shared__ __align__(16) float Bs[STAGES][BK][BN + SMEM_PAD];
    const int j0 = blockIdx.y * BM, k0 = blockIdx.x * BN, z = blockIdx.z;
    const int m_begin = z * rows_per_split, m_end = min(M, m_begin + rows_per_split);
    using Tile = ThreadTile<BM, BN, TM, TN, WARP_TILED>;
    float acc[TM][TN];
    zero(acc);
    // V [M, r] is (d = j, k = m) and X [M, K] is (d = k, k = m): both d-contiguous.  Dropout on X's loads.
    accumulate_tile<Tile, BK, false, false, VEC, STAGES>(acc, As, Bs, make_operand(V, r, r),
                                                           make_operand(X, K, K, keep_scale, seed, threshold),
                                                           j0, k0, m_begin, m_end);
    store_tile<Tile>(acc, dA_out + (unsigned long long)z * r * K, K, r, K, j0, k0, nullptr);
}

// ---- the exported kernels: each picks its configuration (lora_tiles.cuh) --------------------------
extern "C" __global__ void __launch_bounds__(256, 2)
lora_bwd_dy_v3(const float* __restrict__ dY, const float* __restrict__ B, const float* __restrict__ U,
               float* __restrict__ V, float* __restrict__ dB_out, int write_db, int M, int N, int r, float s) {
    lora_bwd_dy_tiled<config::lora_bwd_dy_v3>(dY, B, U, V, dB_out, write_db, M, N, r, s, N);
}
extern "C" __global__ void __launch_bounds__(256, 2)
lora_bwd_dx_v3(const float* __restrict__ dY, const float* __restrict__ W0, const float* __restrict__ V,
               const float* __restrict__ A, float* __restrict__ dX, int M, int N, int K, int r, unsigned seed,
               unsigned threshold, float keep_scale) {
    lora_bwd_dx_tiled<config::lora_bwd_dx_v3>(dY, W0, V, A, dX, M, N, K, r, seed, threshold, keep_scale);
}
extern "C" __global__ void __launch_bounds__(256, 2)
lora_bwd_da_v3(const float* __restrict__ V, const float* __restrict__ X, float* __restrict__ dA_out, int M, int K,
               int r, int rows_per_split, unsigned seed, unsigned threshold, float keep_scale) {
    lora_bwd_da_tiled<config::lora_bwd_da_v3>(V, X, dA_out, M, K, r, rows_per_split, seed, threshold, keep_scale);
}

// (lora_bwd_dy_v4 and _v5 are lora_bwd_dy_v3; lora_bwd_da_v5 is lora_bwd_da_v4: see lora_tiles.cuh.)
extern "C" __global__ void __launch_bounds__(256, 2)
lora_bwd_dx_v4(const float* __restrict__ dY, const float* __restrict__ W0, const float* __restrict__ V,
               const float* __restrict__ A, float* __restrict__ dX, int M, int N, int K, int r, unsigned seed,
               unsigned threshold, float keep_scale) {
    lora_bwd_dx_tiled<config::lora_bwd_dx_v4>(dY, W0, V, A, dX, M, N, K, r, seed, threshold, keep_scale);
}
extern "C" __global__ void __launch_bounds__(256, 2)
lora_bwd_da_v4(const float* __restrict__ V, const float* __restrict__ X, float* __restrict__ dA_out, int M, int K,
               int r, int rows_per_split, unsigned seed, unsigned threshold, float keep_scale) {
    lora_bwd_da_tiled<config::lora_bwd_da_v4>(V, X, dA_out, M, K, r, rows_per_split, seed, threshold, keep_scale);
}

extern "C" __global__ void __launch_bounds__(256, 2)
lora_bwd_dx_v5(const float* __restrict__ dY, const float* __restrict__ W0, const float* __restrict__ V,
               const float* __restrict__ A, float* __restrict__ dX, int M, int N, int K, int r, unsigned seed,
               unsigned threshold, float keep_scale) {
    lora_bwd_dx_tiled<config::lora_bwd_dx_v5>(dY, W0, V, A, dX, M, N, K, r, seed, threshold, keep_scale);
}

// v6: one pass over dY with a 16-wide rank chunk (config::lora_bwd_dy_v6); dX and dA are v5's kernels.
extern "C" __global__ void __launch_bounds__(256, 2)
lora_bwd_dy_v6(const float* __restrict__ dY, const float* __restrict__ B, const float* __restrict__ U,
               float* __restrict__ V, float* __restrict__ dB_out, int write_db, int M, int N, int r, float s) {
    lora_bwd_dy_tiled<config::lora_bwd_dy_v6>(dY, B, U, V, dB_out, write_db, M, N, r, s, N);
}

// v7: dX's main loop on cp.async (config::lora_bwd_dx_v7); dY's pass is v6's, dA v4's.
extern "C" __global__ void __launch_bounds__(256, 2)
lora_bwd_dx_v7(const float* __restrict__ dY, const float* __restrict__ W0, const float* __restrict__ V,
               const float* __restrict__ A, float* __restrict__ dX, int M, int N, int K, int r, unsigned seed,
               unsigned threshold, float keep_scale) {
    lora_bwd_dx_tiled<config::lora_bwd_dx_v7>(dY, W0, V, A, dX, M, N, K, r, seed, threshold, keep_scale);
}

// v8: v6's pass over dY with N split over blocks (grid z): V_out is [slices, M, r] partial sums, reduced
// by lora_reduce_partials (config::lora_bwd_dy_v8).  Capped at 64 registers for 4 resident blocks per SM.
extern "C" __global__ void __launch_bounds__(256, 4)
lora_bwd_dy_v8(const float* __restrict__ dY, const float* __restrict__ B, const float* __restrict__ U,
               float* __restrict__ V_out, float* __restrict__ dB_out, int write_db, int M, int N, int r, float s,
               int n_slice) {
    lora_bwd_dy_tiled<config::lora_bwd_dy_v8>(dY, B, U, V_out, dB_out, write_db, M, N, r, s, n_slice);
}

// v9: dX = mask * (V A) + dY W0 as ONE cp.async pipeline (common.cuh, accumulate_phases_async): the rank
// term's r / BK k-steps come first, the dropout mask is applied to the finished V A in the accumulators
// (the `between` step), then the k-steps over N add dY W0 -- v7 ran V A through a separate unpipelined loop.
// The forward's v9 tiles: 256 x 128, 8 x 16 outputs per thread, 1 block per SM, unguarded full tiles, grouped
// block order, dynamic shared memory.  Same sums in the same order as v7: the results match it bit for bit.
template <class Cfg>
__device__ __forceinline__ void lora_bwd_dx_phases(float* smem, const float* dY, const float* W0, const float* V,
                                                   const float* A, float* dX, int M, int N, int K, int r,
                                                   unsigned seed, unsigned threshold, float keep_scale) {
    constexpr int BM = Cfg::BM, BN = Cfg::BN, BK = Cfg::BK, TM = Cfg::TM, TN = Cfg::TN, STAGES = Cfg::STAGES;
    using Tile = ThreadTile<BM, BN, TM, TN, Cfg::WARP_TILED>;
    static_assert(Tile::THREADS == THREADS, "the launch gives every tiled kernel THREADS threads");
    auto As = reinterpret_cast<float (*)[BK][BM + SMEM_PAD]>(smem);
    auto Bs = reinterpret_cast<float (*)[BK][BN + SMEM_PAD]>(smem + STAGES * BK * (BM + SMEM_PAD));
    int tile_m, tile_k;
    grouped_tile<Cfg::GROUP_M>(tile_m, tile_k);
    const int m0 = tile_m * BM, k0 = tile_k * BN;
    float acc[TM][TN];
    zero(acc);
    // V [M, r]: (d = m, k = j) k-contiguous; A [r, K]: (d = column of K, k = j) d-contiguous.  Likewise dY, W0.
    const Phase rank = make_phase(make_operand(V, r, M), make_operand(A, K, K), r);
    const Phase base = make_phase(make_operand(dY, N, M), make_operand(W0, K, K), N);
    const auto dropout_backward = [&](float (&lora)[TM][TN]) {  // the forward's mask, scaled by 1/(1-p)
        apply_dropout_mask<Tile>(lora, m0, k0, K, seed, threshold, keep_scale);
    };
    accumulate_phases_async<Tile, BK, STAGES, true, false>(acc, As, Bs, rank, base, m0, k0, dropout_backward);
    store_tile<Tile>(acc, dX, K, M, K, m0, k0, nullptr);
}

extern "C" __global__ void __launch_bounds__(256, 1)
lora_bwd_dx_v9(const float* __restrict__ dY, const float* __restrict__ W0, const float* __restrict__ V,
               const float* __restrict__ A, float* __restrict__ dX, int M, int N, int K, int r, unsigned seed,
               unsigned threshold, float keep_scale, int smem_bytes) {
    extern __shared__ __align__(16) float lora_smem[];
    if (smem_bytes < phases_smem_bytes<config::lora_bwd_dx_v9>()) __trap();
    lora_bwd_dx_phases<config::lora_bwd_dx_v9>(lora_smem, dY, W0, V, A, dX, M, N, K, r, seed, threshold, keep_scale);
}
