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
// Launches (v2 and v3; v1 computes the same outputs naively, one kernel per output):
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
// Versions:
//     v1  naive, one thread per output element: lora_bwd_v_v1, lora_bwd_db_v1 (a full dot product over
//         M, so no partials), lora_bwd_dx_v1, lora_bwd_da_v1.  block (16, 16), grid over the output.
//     v2  shared-memory tiled, one output per thread: lora_bwd_dy_v2 (BM = BN = r-chunk = 16),
//         lora_bwd_dx_v2 (16 x 16 tiles), lora_bwd_da_v2 (16 x 16 tiles).  block 256.
//     v3  register-blocked, float4 loads: lora_bwd_dy_v3 (BM 64, BN 32, r-chunk 64, 4 x 4 per thread),
//         lora_bwd_dx_v3 (128 x 128 tiles, BK 8, 8 x 8 per thread), lora_bwd_da_v3 (32 (r) x 64 (K)
//         tiles, BK 16 rows of M, 2 x 4 per thread).  block 256.
//     grids: dy (ceil(r/RC), ceil(M/BM)); dx (ceil(K/BN), ceil(M/BM)); da (ceil(K/BN), ceil(r/BM), S);
//     lora_reduce_partials: block 256, grid ceil(E/256) for E output elements.
//
// Run by hand:  dX, dA, dB = minilora.kernels.lora_backward(dY, X, W0, A, B, U, s, device="emu", version="v3")
#include "common.cuh"

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
// v2 and v3: tiled templates; the exported kernels at the bottom pick the tile shapes.
// =================================================================================================

// V = s dY B and dB's partial sums, reading dY once.  Block (x, y) owns rows [y*BM, y*BM + BM) of dY
// and LoRA ranks [x*RC, x*RC + RC).  Thread (ty, tx) owns a TM x TN block of V and, for every n-tile,
// a TB x TN block of that tile's dB rows.
template <int BM, int BN, int RC, int TM, int TN, bool VEC>
__device__ __forceinline__ void lora_bwd_dy_tiled(const float* dY, const float* B, const float* U, float* V,
                                                  float* dB_out, int write_db, int M, int N, int r, float s) {
    constexpr int TX = RC / TN, TY = BM / TM, THREADS = TX * TY, TB = BN / TY;
    static_assert(BN % TY == 0, "each thread row must own a whole number of dB rows per n-tile");
    __shared__ __align__(16) float Ds[BN][BM + SMEM_PAD];  // Ds[n][m] = dY[m0 + m, n0 + n]
    __shared__ __align__(16) float Bs[BN][RC + SMEM_PAD];  // Bs[n][j] = B[n0 + n, j0 + j]
    __shared__ __align__(16) float Us[BM][RC + SMEM_PAD];  // Us[m][j] = U[m0 + m, j0 + j], loaded once
    const int tid = threadIdx.x, ty = tid / TX, tx = tid % TX;
    const int m0 = blockIdx.y * BM, j0 = blockIdx.x * RC;
    const Operand dy = make_operand(dY, N, M);  // (d = m, k = n): k-contiguous
    const Operand b = make_operand(B, r, r);    // (d = j, k = n): d-contiguous
    const Operand u = make_operand(U, r, r);    // (d = j, k = m): d-contiguous
    load_tile<BM, RC, RC + SMEM_PAD, false, VEC, THREADS>(Us, u, j0, m0, M, tid);
    float v[TM][TN];
    zero(v);
    for (int n0 = 0; n0 < N; n0 += BN) {
        load_tile<BN, BM, BM + SMEM_PAD, true, VEC, THREADS>(Ds, dy, m0, n0, N, tid);
        load_tile<BN, RC, RC + SMEM_PAD, false, VEC, THREADS>(Bs, b, j0, n0, N, tid);
        __syncthreads();
        // V[m, j] += sum over this tile's n of dY[m, n] B[n, j]
        multiply_tiles<BN>(v, Ds, Bs, ThreadTile<BM, RC, TM, TN, false>(tid));
        // dB[n, j] partial = sum over this block's m of dY[m, n] U[m, j], for the tile's rows n
        if (write_db) {
            float db[TB][TN];
            zero(db);
#pragma unroll 4
            for (int mm = 0; mm < BM; ++mm) {
                float af[TB], bf[TN];
#pragma unroll
                for (int q = 0; q < TB; ++q) af[q] = Ds[ty * TB + q][mm];
#pragma unroll
                for (int j = 0; j < TN; ++j) bf[j] = Us[mm][tx * TN + j];
                outer_product_add(db, af, bf);
            }
#pragma unroll
            for (int q = 0; q < TB; ++q) {
                const int n = n0 + ty * TB + q;
#pragma unroll
                for (int j = 0; j < TN; ++j) {
                    const int jj = j0 + tx * TN + j;
                    if (n < N && jj < r) dB_out[((unsigned long long)blockIdx.y * N + n) * r + jj] = s * db[q][j];
                }
            }
        }
        __syncthreads();
    }
#pragma unroll
    for (int i = 0; i < TM; ++i) {
        const int m = m0 + ty * TM + i;
#pragma unroll
        for (int j = 0; j < TN; ++j) {
            const int jj = j0 + tx * TN + j;
            if (m < M && jj < r) V[(unsigned long long)m * r + jj] = s * v[i][j];
        }
    }
}

// dX = dY W0 + mask * (V A).  The rank-r term goes first: that way the dropout mask multiplies a
// finished LoRA sum held in the very accumulators the main loop then adds dY W0 to -- no second set
// of TM x TN registers, and the hash runs once per output element.
template <int BM, int BN, int BK, int TM, int TN, bool VEC, int STAGES, bool WARP_TILED>
__device__ __forceinline__ void lora_bwd_dx_tiled(const float* dY, const float* W0, const float* V, const float* A,
                                                  float* dX, int M, int N, int K, int r, unsigned seed,
                                                  unsigned threshold, float keep_scale) {
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
    if (threshold != 0u) {
        const Tile tile(threadIdx.x);
#pragma unroll
        for (int i = 0; i < TM; ++i)
#pragma unroll
            for (int j = 0; j < TN; ++j) {
                const unsigned long long idx = (unsigned long long)(m0 + tile.row(i)) * K + (k0 + tile.col(j));
                acc[i][j] *= lora_keep(seed, idx, threshold) ? keep_scale : 0.0f;
            }
    }
    // 3. Main loop: + dY W0.  dY [M, N] is (d = m, k = n) k-contiguous; W0 [N, K] is (d = k, k = n).
    accumulate_tile<Tile, BK, true, false, VEC, STAGES>(acc, As, Bs, make_operand(dY, N, M),
                                                          make_operand(W0, K, K), m0, k0, 0, N);
    store_tile<Tile>(acc, dX, K, M, K, m0, k0, nullptr);
}

// dA's partial sum over the rows of split z: P_A[z] = V[rows]^T dropout(X)[rows], rows = [z*R, z*R + R).
template <int BM, int BN, int BK, int TM, int TN, bool VEC, int STAGES, bool WARP_TILED>
__device__ __forceinline__ void lora_bwd_da_tiled(const float* V, const float* X, float* dA_out, int M, int K, int r,
                                                  int rows_per_split, unsigned seed, unsigned threshold,
                                                  float keep_scale) {
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

// ---- the exported kernels ------------------------------------------------------------------------
// v2: 16 x 16 tiles, one output per thread, scalar loads.
extern "C" __global__ void __launch_bounds__(256, 2)
lora_bwd_dy_v2(const float* __restrict__ dY, const float* __restrict__ B, const float* __restrict__ U,
               float* __restrict__ V, float* __restrict__ dB_out, int write_db, int M, int N, int r, float s) {
    lora_bwd_dy_tiled<16, 16, 16, 1, 1, false>(dY, B, U, V, dB_out, write_db, M, N, r, s);
}
extern "C" __global__ void __launch_bounds__(256, 2)
lora_bwd_dx_v2(const float* __restrict__ dY, const float* __restrict__ W0, const float* __restrict__ V,
               const float* __restrict__ A, float* __restrict__ dX, int M, int N, int K, int r, unsigned seed,
               unsigned threshold, float keep_scale) {
    lora_bwd_dx_tiled<16, 16, 16, 1, 1, false, 1, false>(dY, W0, V, A, dX, M, N, K, r, seed, threshold, keep_scale);
}
extern "C" __global__ void __launch_bounds__(256, 2)
lora_bwd_da_v2(const float* __restrict__ V, const float* __restrict__ X, float* __restrict__ dA_out, int M, int K,
               int r, int rows_per_split, unsigned seed, unsigned threshold, float keep_scale) {
    lora_bwd_da_tiled<16, 16, 16, 1, 1, false, 1, false>(V, X, dA_out, M, K, r, rows_per_split, seed, threshold, keep_scale);
}

// v3: register blocks and float4 loads.
extern "C" __global__ void __launch_bounds__(256, 2)
lora_bwd_dy_v3(const float* __restrict__ dY, const float* __restrict__ B, const float* __restrict__ U,
               float* __restrict__ V, float* __restrict__ dB_out, int write_db, int M, int N, int r, float s) {
    lora_bwd_dy_tiled<64, 32, 64, 4, 4, true>(dY, B, U, V, dB_out, write_db, M, N, r, s);
}
extern "C" __global__ void __launch_bounds__(256, 2)
lora_bwd_dx_v3(const float* __restrict__ dY, const float* __restrict__ W0, const float* __restrict__ V,
               const float* __restrict__ A, float* __restrict__ dX, int M, int N, int K, int r, unsigned seed,
               unsigned threshold, float keep_scale) {
    lora_bwd_dx_tiled<128, 128, 8, 8, 8, true, 1, false>(dY, W0, V, A, dX, M, N, K, r, seed, threshold, keep_scale);
}
extern "C" __global__ void __launch_bounds__(256, 2)
lora_bwd_da_v3(const float* __restrict__ V, const float* __restrict__ X, float* __restrict__ dA_out, int M, int K,
               int r, int rows_per_split, unsigned seed, unsigned threshold, float keep_scale) {
    lora_bwd_da_tiled<32, 64, 16, 2, 4, true, 1, false>(V, X, dA_out, M, K, r, rows_per_split, seed, threshold, keep_scale);
}

// v4: v3's tiles with the pipelined main loop (two shared-memory buffers, next tile fetched during
// the multiply; common.cuh, accumulate_tile).  dY's pass has no k-loop of its own to pipeline: v3's.
extern "C" __global__ void __launch_bounds__(256, 2)
lora_bwd_dy_v4(const float* __restrict__ dY, const float* __restrict__ B, const float* __restrict__ U,
               float* __restrict__ V, float* __restrict__ dB_out, int write_db, int M, int N, int r, float s) {
    lora_bwd_dy_tiled<64, 32, 64, 4, 4, true>(dY, B, U, V, dB_out, write_db, M, N, r, s);
}
extern "C" __global__ void __launch_bounds__(256, 2)
lora_bwd_dx_v4(const float* __restrict__ dY, const float* __restrict__ W0, const float* __restrict__ V,
               const float* __restrict__ A, float* __restrict__ dX, int M, int N, int K, int r, unsigned seed,
               unsigned threshold, float keep_scale) {
    lora_bwd_dx_tiled<128, 128, 8, 8, 8, true, 2, false>(dY, W0, V, A, dX, M, N, K, r, seed, threshold, keep_scale);
}
extern "C" __global__ void __launch_bounds__(256, 2)
lora_bwd_da_v4(const float* __restrict__ V, const float* __restrict__ X, float* __restrict__ dA_out, int M, int K,
               int r, int rows_per_split, unsigned seed, unsigned threshold, float keep_scale) {
    lora_bwd_da_tiled<32, 64, 16, 2, 4, true, 2, false>(V, X, dA_out, M, K, r, rows_per_split, seed, threshold, keep_scale);
}

// v5: v4 with the warp-tiled thread layout for the big 128 x 128 GEMM (common.cuh, ThreadTile): each
// warp's shared-memory reads hit one transaction per float4 instead of four.  dY's and dA's kernels
// (8 x 8 is not their thread block) stay as in v4.
extern "C" __global__ void __launch_bounds__(256, 2)
lora_bwd_dy_v5(const float* __restrict__ dY, const float* __restrict__ B, const float* __restrict__ U,
               float* __restrict__ V, float* __restrict__ dB_out, int write_db, int M, int N, int r, float s) {
    lora_bwd_dy_tiled<64, 32, 64, 4, 4, true>(dY, B, U, V, dB_out, write_db, M, N, r, s);
}
extern "C" __global__ void __launch_bounds__(256, 2)
lora_bwd_dx_v5(const float* __restrict__ dY, const float* __restrict__ W0, const float* __restrict__ V,
               const float* __restrict__ A, float* __restrict__ dX, int M, int N, int K, int r, unsigned seed,
               unsigned threshold, float keep_scale) {
    lora_bwd_dx_tiled<128, 128, 8, 8, 8, true, 2, true>(dY, W0, V, A, dX, M, N, K, r, seed, threshold, keep_scale);
}
extern "C" __global__ void __launch_bounds__(256, 2)
lora_bwd_da_v5(const float* __restrict__ V, const float* __restrict__ X, float* __restrict__ dA_out, int M, int K,
               int r, int rows_per_split, unsigned seed, unsigned threshold, float keep_scale) {
    lora_bwd_da_tiled<32, 64, 16, 2, 4, true, 2, false>(V, X, dA_out, M, K, r, rows_per_split, seed, threshold,
                                                        keep_scale);
}
