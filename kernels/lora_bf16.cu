// lora_bf16.cu -- the fused LoRA forward and backward in bf16 on tensor cores (mma.sync m16n8k16, fp32
// accumulate), as PEFT users train in mixed precision.
//
// Math (as lora_forward.cu / lora_backward.cu, no dropout):
//     forward   U = X A^T                [M, r]  fp32        Y = X W0^T + bias + s U B^T        [M, N]  fp32
//     backward  V = s dY B               [M, r]  fp32        dB = s dY^T U                      [N, r]  fp32
//               dX = dY W0 + V A         [M, K]  fp32        dA = V^T X                         [r, K]  fp32
// Precision: the frozen base weight W0 [N, K], the activations X [M, K] and the incoming gradient dY [M, N]
// are bf16 (bit patterns in uint16 arrays: NumPy has no bfloat16); the adapter A [r, K], B [N, r] are the
// fp32 master weights the optimizer updates; bias [N], U, V and every output fp32.
//   * The K- or N-long products with W0 -- X W0^T forward, dY W0 backward, >98% of the flops -- run on the
//     tensor cores: bf16 x bf16 products (exact in fp32), fp32 sums.
//   * How A and B enter: they do not enter the tensor cores at all.  Every product with an adapter factor
//     (U, s U B^T, V, V A, dA, dB) runs in fp32 on the CUDA cores, from the master copies as they are: no
//     bf16 copy of A and B to make each step, a small update s B A x is not rounded to 8 bits before it is
//     added to W0 x, and dA, dB -- the only gradients LoRA trains on -- are summed in fp32 from exact
//     products.  The price: those terms are only r/K (r/N) of the flops (0.4% at r = 16, K = 4096), but a
//     CUDA core does about 16x fewer bf16-equivalent flops than a tensor core, so they cost an estimated
//     5-10% on top of the tensor-core GEMM at r = 16 and 25-40% at r = 64.  The alternative, for large r:
//     the rank term as extra k-steps of the same mma loop ([dY | V] [W0 ; A]) with V and A rounded to
//     bf16 (or split into hi + lo bf16 pairs, 3x the rank flops, ~16-bit mantissas).
//
// Kernels (launchers: minilora.kernels.lora_forward_bf16, lora_backward_bf16; block 256 everywhere):
//   lora_bf16_fwd_u   U = X A^T: one warp per row of X, lanes across k, 16 ranks at a time, a shuffle
//                     reduction.  Grid ceil(M / 8) (8 warps = 8 rows: BF16_U_ROWS).  Memory bound.
//   lora_bf16_fwd_y   Y: the tensor-core GEMM tile below with W0 n-major ([N, K]: its rows are mma's "col"
//                     operand, B^T), then s U B^T in fp32, then bias.  Grid (ceil(N / 128), ceil(M / 128)).
//   lora_bf16_bwd_dy  V and dB in one pass over dY: lora_backward.cu's v8 pass (common.cuh,
//                     lora_bwd_dy_tiled) with dY converted from bf16 as it is loaded; 64 rows x 16 ranks per
//                     block, N split over grid z so at least 4 blocks per SM run (partial sums of V and dB
//                     reduced by lora_backward.cu's lora_reduce_partials).  Grid (ceil(r/16), ceil(M/64), slices).
//   lora_bf16_bwd_dx  dX: the same GEMM tile with N as the reduction: dY [M, N] k-contiguous like X, W0 [N, K]
//                     now k-major (rows = the reduction), its B fragments from ldmatrix's .trans form (no
//                     transposed copy of W0); then V A in fp32.  Grid (ceil(K / 128), ceil(M / 128)).
//   lora_bf16_bwd_da  dA = V^T X split over M: a thread per column of K, 16 ranks per block, V's rows staged
//                     in shared memory 32 at a time and read as broadcasts.  Grid (ceil(K/256), ceil(r/16),
//                     slices): slices for about 4 blocks per SM (2-byte loads need many threads in flight;
//                     512 blocks at M = 8192, K = 4096, r = 16), their partial sums reduced by
//                     lora_reduce_partials, in a fixed order.
// The GEMM tile (struct lora_bf16_y_v1 in lora_tiles.cuh; lora_bf16_dx_v1 is the same): 128 x 128 outputs,
// k-step 32, 8 warps each owning a 64 x 32 warp tile = 4 x 4 mma tiles of 16 x 8 (64 fp32 accumulators per
// thread).  Shared-memory layouts, rows padded by 8 bf16 so ldmatrix's 16-byte row addresses stay aligned
// and the 8 rows of one 8 x 8 matrix fall in different banks:
//     k-contiguous tiles (X, dY, the forward's W0): [128 rows][32 + 8]  -- ldmatrix x4 (A operand), x2 (B^T);
//     the backward's W0 tile:                       [32 k-rows][128 + 8] -- ldmatrix x4.trans (B operand).
// Loads by cp.async, 16 bytes = 8 bf16 each, STAGES buffers (k-steps in flight while one multiplies), when
// every row length involved is a multiple of 8 and the pointers are 16-byte aligned; otherwise plain 2-byte
// loads (correct, slower).  Tile edges are
// zero-filled (cp.async src-size 0).  The rank term: RC = 16 ranks at a time, both factors staged in the
// (then idle) shared memory.  Deterministic: no float atomics; every sum runs in a fixed order.
//
// Expected, not measured (no GPU run yet): an mma.sync kernel of this shape reaches roughly 60-75% of an
// H100/H200's dense bf16 peak; cuBLAS's wgmma kernels are faster (the issue's goal for the forward is within
// 1.35x of cuBLAS's bf16 base GEMM).  At M = 8192, K = N = 4096, r = 16 the backward's side passes are small:
// dY (64 MB) and X (64 MB) read once each, about 3 GFLOP of fp32 for V, dB and dA against dX's 275 GFLOP.
// ptxas (nvcc 13.0, sm_90): fwd_y and bwd_dx 254-255 registers in both versions (1 block of 256 threads
// per SM), bwd_dy 64, bwd_da 42; no spills.
//
// Versions of the GEMM tile (lora_bf16_fwd_y, lora_bf16_bwd_dx; the side kernels have one version):
//   v1  2 cp.async stages in 40 KB of static shared memory (the static limit is 48 KB): the next k-step's
//       loads have one k-step of mma (32 of K) to hide behind.
//   v2  (the default) 4 stages, 3 k-steps in flight: 80 KB (Y) / 74 KB (dX), so dynamic shared memory --
//       extern __shared__, sized by the launcher (kernels._bf16_gemm) and opted in above 48 KB
//       (max_dynamic_shared_size_bytes); the kernel traps if given less than its layout needs.  The shared
//       memory costs nothing: at 255 registers per thread only one block fits on an SM anyway.  Kernels
//       lora_bf16_fwd_y_v2, lora_bf16_bwd_dx_v2.  Expected, not measured: the usual 10-20% of an
//       mma.sync GEMM whose loads were exposed.
// Requires sm_80 or later on a GPU; runs on any CPU under the emulator, where common.cuh's ldmatrix/mma
// are warp collectives.
#include "common.cuh"
#include "lora_tiles.cuh"

using namespace minilora;

// ---- U = X A^T: BF16_U_ROWS rows of X per block (lora_tiles.cuh), one per warp -------------------------
constexpr int BF16_U_RANKS = 16;  // ranks summed at once by a lane (registers)

extern "C" __global__ void __launch_bounds__(32 * BF16_U_ROWS)
lora_bf16_fwd_u(const unsigned short* __restrict__ X, const float* __restrict__ A, float* __restrict__ U,
                int M, int K, int r) {
    const int lane = threadIdx.x % 32;
    const int m = blockIdx.x * BF16_U_ROWS + threadIdx.x / 32;
    if (m >= M) return;  // a whole warp leaves together: the shuffles below see full warps
    const unsigned short* x = X + (unsigned long long)m * K;
    for (int j0 = 0; j0 < r; j0 += BF16_U_RANKS) {
        float sum[BF16_U_RANKS];
#pragma unroll
        for (int jj = 0; jj < BF16_U_RANKS; ++jj) sum[jj] = 0.0f;
        for (int k = lane; k < K; k += 32) {  // consecutive lanes, consecutive k: coalesced
            const float xk = bf16_to_float(x[k]);
#pragma unroll
            for (int jj = 0; jj < BF16_U_RANKS; ++jj)
                if (j0 + jj < r) sum[jj] = fmaf(xk, A[(unsigned long long)(j0 + jj) * K + k], sum[jj]);
        }
#pragma unroll
        for (int jj = 0; jj < BF16_U_RANKS; ++jj) {
            float s = sum[jj];
            for (int offset = 16; offset > 0; offset /= 2) s += __shfl_xor_sync(0xffffffffu, s, offset);
            if (lane == 0 && j0 + jj < r) U[(unsigned long long)m * r + j0 + jj] = s;
        }
    }
}

// ---- the tensor-core GEMM tile, shared by the forward's Y and the backward's dX -------------------------
// acc (this warp's WM x WN outputs) = sum over l < L of Aop(m, l) Bop(l, n) for the BM x BN tile at (m0, n0),
// Aop k-contiguous ([M, L] row-major: X in the forward, dY in the backward) and Bop either
//   * n-major, [Nout, L] row-major (the forward's W0: its rows are mma's "col" operand, B^T) -- BF16StageNT;
//   * k-major, [L, Nout] row-major (the backward's W0, N being the reduction of dX = dY W0) -- BF16StageNN,
//     whose fragments come from ldmatrix's .trans form, so W0 needs no transposed copy.
using BF16Y = config::lora_bf16_y_v1;  // the tile shape of every version (v2 changes only STAGES)
static_assert(config::lora_bf16_y_v2::BM == BF16Y::BM && config::lora_bf16_y_v2::BN == BF16Y::BN &&
              config::lora_bf16_y_v2::BK == BF16Y::BK && config::lora_bf16_y_v2::WM == BF16Y::WM &&
              config::lora_bf16_y_v2::WN == BF16Y::WN && config::lora_bf16_y_v2::RC == BF16Y::RC,
              "lora_bf16_y_v2 is v1 with more stages");

constexpr int BF16_LD = BF16Y::BK + 8;   // bf16 per shared row of a k-contiguous tile (padded)
constexpr int BF16_LDN = BF16Y::BN + 8;  // bf16 per shared row of a k-major tile (padded the same way)
constexpr int BF16_MI = BF16Y::WM / 16, BF16_NJ = BF16Y::WN / 8;  // mma tiles per warp: 16 x 8 each
static_assert((BF16Y::BM / BF16Y::WM) * (BF16Y::BN / BF16Y::WN) * 32 == THREADS, "one warp per warp tile");
static_assert(BF16_NJ % 2 == 0, "the .trans B fragments come two n-tiles per ldmatrix_x4");

struct BF16StageNT {
    unsigned short a[BF16Y::BM][BF16_LD];  // Aop rows m0.., k-contiguous
    unsigned short b[BF16Y::BN][BF16_LD];  // Bop rows n0.., k-contiguous (B^T of the mma)
};
struct BF16StageNN {
    unsigned short a[BF16Y::BM][BF16_LD];   // Aop rows m0.., k-contiguous
    unsigned short b[BF16Y::BK][BF16_LDN];  // Bop rows k0.. (the reduction), columns n0.. (the output)
};
struct BF16Epilogue {
    float u[BF16Y::BM][BF16Y::RC + 1];  // the rank term's left factor: U or V [m0 + i][j0 + jj] (+1: banks)
    float b[BF16Y::BN][BF16Y::RC + 1];  // its right factor: B [n0 + i][j0 + jj] or A [j0 + jj][n0 + i]
};
union BF16Shared {  // v1's static shared memory
    BF16StageNT nt[BF16Y::STAGES];
    BF16StageNN nn[BF16Y::STAGES];
    BF16Epilogue epilogue;  // used only after the main loop
};

// S[dd][cc] = src[(d0 + dd) * cols + c0 + cc] for dd < ROWS, cc < COLS, zero outside rows x cols.  With
// `vec`, 16-byte cp.async copies (cols % 8 == 0, aligned base, c0 a multiple of 8): a chunk of 8 is wholly
// inside or wholly outside, and outside chunks are zero fills (src-size 0).  Else plain 2-byte loads.
template <int ROWS, int COLS, int LD>
__device__ __forceinline__ void load_bf16_tile(unsigned short (*S)[LD], const unsigned short* src, int rows,
                                               int cols, int d0, int c0, bool vec) {
    constexpr int CHUNKS = ROWS * COLS / 8;
    for (int c = threadIdx.x; c < CHUNKS; c += THREADS) {
        const int dd = c / (COLS / 8), cc = c % (COLS / 8) * 8;
        const int d = d0 + dd, col = c0 + cc;
        if (vec) {
            const bool in = d < rows && col < cols;
            const unsigned short* from = in ? src + (unsigned long long)d * cols + col : src;
            cp_async<16>(reinterpret_cast<float*>(&S[dd][cc]), reinterpret_cast<const float*>(from), in ? 16 : 0);
        } else {
#pragma unroll
            for (int q = 0; q < 8; ++q)
                S[dd][cc + q] = d < rows && col + q < cols ? src[(unsigned long long)d * cols + col + q]
                                                           : (unsigned short)0;
        }
    }
}

// Start loading the reduction step at k0 of both operands into one stage.
__device__ __forceinline__ void load_stage(BF16StageNT& st, const unsigned short* a, const unsigned short* b, int M,
                                           int Nout, int L, int m0, int n0, int k0, bool vec) {
    load_bf16_tile<BF16Y::BM, BF16Y::BK, BF16_LD>(st.a, a, M, L, m0, k0, vec);
    load_bf16_tile<BF16Y::BN, BF16Y::BK, BF16_LD>(st.b, b, Nout, L, n0, k0, vec);
}
__device__ __forceinline__ void load_stage(BF16StageNN& st, const unsigned short* a, const unsigned short* b, int M,
                                           int Nout, int L, int m0, int n0, int k0, bool vec) {
    load_bf16_tile<BF16Y::BM, BF16Y::BK, BF16_LD>(st.a, a, M, L, m0, k0, vec);
    load_bf16_tile<BF16Y::BK, BF16Y::BN, BF16_LDN>(st.b, b, L, Nout, k0, n0, vec);
}

// This lane's B fragments of the warp's NJ n-tiles for the 16 k at kk (ldmatrix: lane 8j + row points at
// row `row` of matrix j).
__device__ __forceinline__ void b_fragments(unsigned (&b)[BF16_NJ][2], const BF16StageNT& st, int wn, int kk) {
    const int lane = threadIdx.x % 32, j = lane / 8, row = lane % 8;
#pragma unroll
    for (int jn = 0; jn < BF16_NJ; ++jn)  // Bop's 8 rows (n) x 16 k: two 8 x 8 halves along k
        ldmatrix_x2(b[jn], &st.b[wn + 8 * jn + row][kk + 8 * (j % 2)]);
}
__device__ __forceinline__ void b_fragments(unsigned (&b)[BF16_NJ][2], const BF16StageNN& st, int wn, int kk) {
    const int lane = threadIdx.x % 32, j = lane / 8, row = lane % 8;
#pragma unroll
    for (int jn = 0; jn < BF16_NJ; jn += 2) {  // matrices: (k 0-7 | 8-15) x (n-tile jn | jn + 1), transposed
        unsigned d[4];
        ldmatrix_x4_trans(d, &st.b[kk + 8 * (j % 2) + row][wn + 8 * (jn + j / 2)]);
        b[jn][0] = d[0], b[jn][1] = d[1], b[jn + 1][0] = d[2], b[jn + 1][1] = d[3];
    }
}

// The main loop: k-tiles loaded ahead by cp.async (STAGES buffers; one commit group per step, empty ones
// past the end, so "at most STAGES - 2 pending" always means "step kt has landed"), fragments by ldmatrix,
// products by mma.sync.  acc must start at zero (or hold what the products should be added to).
template <int STAGES, class Stage>
__device__ __forceinline__ void bf16_main_loop(float (&acc)[BF16_MI][BF16_NJ][4], Stage* stage,
                                               const unsigned short* a, const unsigned short* b, int M, int Nout,
                                               int L, int m0, int n0, int wm, int wn, bool vec) {
    static_assert(STAGES >= 2, "the pipeline needs a buffer to fill while another is multiplied");
    constexpr int BK = BF16Y::BK;
    const int k_tiles = (L + BK - 1) / BK;
#pragma unroll
    for (int st = 0; st < STAGES - 1; ++st) {  // the prologue: the first STAGES - 1 steps in flight
        if (st < k_tiles) load_stage(stage[st], a, b, M, Nout, L, m0, n0, st * BK, vec);
        cp_async_commit();
    }
    const int lane = threadIdx.x % 32, j = lane / 8, row = lane % 8;
    for (int kt = 0; kt < k_tiles; ++kt) {
        cp_async_wait<STAGES - 2>();  // step kt has landed (this thread's copies) ...
        __syncthreads();              // ... and everyone's; and everyone is done with the buffer refilled next
        const int next = kt + STAGES - 1;
        if (next < k_tiles) load_stage(stage[next % STAGES], a, b, M, Nout, L, m0, n0, next * BK, vec);
        cp_async_commit();
        const Stage& t = stage[kt % STAGES];
#pragma unroll
        for (int kk = 0; kk < BK; kk += 16) {
            unsigned af[BF16_MI][4], bf[BF16_NJ][2];
#pragma unroll
            for (int i = 0; i < BF16_MI; ++i)  // Aop's 16 x 16 quadrants: top-left, bottom-left, top-right, ...
                ldmatrix_x4(af[i], &t.a[wm + 16 * i + row + 8 * (j % 2)][kk + 8 * (j / 2)]);
            b_fragments(bf, t, wn, kk);
#pragma unroll
            for (int i = 0; i < BF16_MI; ++i)
#pragma unroll
                for (int jn = 0; jn < BF16_NJ; ++jn) mma_bf16_16x8x16(acc[i][jn], af[i], bf[jn], acc[i][jn]);
        }
    }
    cp_async_wait<0>();  // the empty trailing groups: nothing may stay in flight
}

// The rank term in fp32 on the CUDA cores: acc[m][n] += s * sum_j Lf[m, j] R(n, j), RC ranks at a time
// staged in the (then idle) shared memory.  Lf [M, r] row-major (U, or V); R(n, j) = R[n * r + j] (B [N, r],
// the forward) or, R_JMAJOR, R[j * Nout + n] (A [r, K], the backward's V A).
template <bool R_JMAJOR>
__device__ __forceinline__ void add_rank_term(float (&acc)[BF16_MI][BF16_NJ][4], BF16Epilogue& ep, const float* Lf,
                                              const float* R, int M, int Nout, int r, int m0, int n0, int wm, int wn,
                                              float s) {
    constexpr int BM = BF16Y::BM, BN = BF16Y::BN, RC = BF16Y::RC;
    const int lane = threadIdx.x % 32, g = lane / 4, tq = lane % 4;  // accumulators: rows g, g + 8; cols 2tq, 2tq + 1
    for (int j0 = 0; j0 < r; j0 += RC) {
        __syncthreads();  // the main loop's (or the last chunk's) reads of shared memory are over
        for (int idx = threadIdx.x; idx < BM * RC; idx += THREADS) {
            const int i = idx / RC, jj = idx % RC, m = m0 + i;
            ep.u[i][jj] = m < M && j0 + jj < r ? Lf[(unsigned long long)m * r + j0 + jj] : 0.0f;
        }
        for (int idx = threadIdx.x; idx < BN * RC; idx += THREADS) {
            // consecutive threads, consecutive addresses: along j for B [N, r], along n for A [r, K]
            const int i = R_JMAJOR ? idx % BN : idx / RC, jj = R_JMAJOR ? idx / BN : idx % RC, n = n0 + i;
            const unsigned long long at = R_JMAJOR ? (unsigned long long)(j0 + jj) * Nout + n
                                                   : (unsigned long long)n * r + j0 + jj;
            ep.b[i][jj] = n < Nout && j0 + jj < r ? R[at] : 0.0f;
        }
        __syncthreads();
#pragma unroll
        for (int i = 0; i < BF16_MI; ++i)
#pragma unroll
            for (int jn = 0; jn < BF16_NJ; ++jn)
#pragma unroll
                for (int e = 0; e < 4; ++e) {
                    const int mm = wm + 16 * i + g + 8 * (e / 2), nn = wn + 8 * jn + 2 * tq + e % 2;
                    float dot = 0.0f;
#pragma unroll
                    for (int jj = 0; jj < RC; ++jj) dot = fmaf(ep.u[mm][jj], ep.b[nn][jj], dot);
                    acc[i][jn][e] = fmaf(s, dot, acc[i][jn][e]);
                }
    }
}

// C[m, n] = acc (+ bias[n]) for this warp's outputs, inside M x Nout.
__device__ __forceinline__ void store_acc(const float (&acc)[BF16_MI][BF16_NJ][4], float* C, const float* bias, int M,
                                          int Nout, int m0, int n0, int wm, int wn) {
    const int lane = threadIdx.x % 32, g = lane / 4, tq = lane % 4;
#pragma unroll
    for (int i = 0; i < BF16_MI; ++i)
#pragma unroll
        for (int jn = 0; jn < BF16_NJ; ++jn)
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const int m = m0 + wm + 16 * i + g + 8 * (e / 2), n = n0 + wn + 8 * jn + 2 * tq + e % 2;
                if (m < M && n < Nout) C[(unsigned long long)m * Nout + n] = acc[i][jn][e] + (bias ? bias[n] : 0.0f);
            }
}

__device__ __forceinline__ bool aligned16(const void* p) {
    return (reinterpret_cast<unsigned long long>(p) & 15ull) == 0;
}

// Shared memory for STAGES buffers of a stage type, reused by the epilogue after the main loop.
template <int STAGES, class Stage>
__device__ __forceinline__ constexpr int bf16_smem_bytes() {
    return STAGES * (int)sizeof(Stage) > (int)sizeof(BF16Epilogue) ? STAGES * (int)sizeof(Stage)
                                                                    : (int)sizeof(BF16Epilogue);
}

// v2 takes its shared memory at launch (dynamic: over 48 KB needs the opt-in attribute the launcher sets):
// a launch with less than the kernel needs stops with a trap instead of writing past it.
template <int STAGES, class Stage>
__device__ __forceinline__ void check_dynamic_smem(int smem_bytes) {
    if (smem_bytes < bf16_smem_bytes<STAGES, Stage>()) __trap();
}

// ---- the forward: Y = X W0^T + bias + s U B^T --------------------------------------------------------------
template <int STAGES>
__device__ __forceinline__ void bf16_fwd_y(unsigned char* smem, const unsigned short* X, const unsigned short* W0,
                                           const float* U, const float* B, const float* bias, int has_bias, float* Y,
                                           int M, int N, int K, int r, float s) {
    const int m0 = blockIdx.y * BF16Y::BM, n0 = blockIdx.x * BF16Y::BN, warp = threadIdx.x / 32;
    const int wm = warp / (BF16Y::BN / BF16Y::WN) * BF16Y::WM, wn = warp % (BF16Y::BN / BF16Y::WN) * BF16Y::WN;
    float acc[BF16_MI][BF16_NJ][4] = {};
    bf16_main_loop<STAGES>(acc, reinterpret_cast<BF16StageNT*>(smem), X, W0, M, N, K, m0, n0, wm, wn,
                           K % 8 == 0 && aligned16(X) && aligned16(W0));
    add_rank_term<false>(acc, *reinterpret_cast<BF16Epilogue*>(smem), U, B, M, N, r, m0, n0, wm, wn, s);
    store_acc(acc, Y, has_bias ? bias : nullptr, M, N, m0, n0, wm, wn);
}

// v1: 2 stages in 40 KB of static shared memory.
extern "C" __global__ void __launch_bounds__(THREADS)
lora_bf16_fwd_y(const unsigned short* __restrict__ X, const unsigned short* __restrict__ W0,
               const float* __restrict__ U, const float* __restrict__ B, const float* __restrict__ bias,
               int has_bias, float* __restrict__ Y, int M, int N, int K, int r, float s) {
    __shared__ __align__(16) BF16Shared sh;
    bf16_fwd_y<config::lora_bf16_y_v1::STAGES>(reinterpret_cast<unsigned char*>(&sh), X, W0, U, B, bias, has_bias,
                                               Y, M, N, K, r, s);
}

// v2: 4 stages (80 KB) in dynamic shared memory, smem_bytes of it.
extern "C" __global__ void __launch_bounds__(THREADS)
lora_bf16_fwd_y_v2(const unsigned short* __restrict__ X, const unsigned short* __restrict__ W0,
                   const float* __restrict__ U, const float* __restrict__ B, const float* __restrict__ bias,
                   int has_bias, float* __restrict__ Y, int M, int N, int K, int r, float s, int smem_bytes) {
    extern __shared__ __align__(16) unsigned char bf16_smem[];
    constexpr int STAGES = config::lora_bf16_y_v2::STAGES;
    check_dynamic_smem<STAGES, BF16StageNT>(smem_bytes);
    bf16_fwd_y<STAGES>(bf16_smem, X, W0, U, B, bias, has_bias, Y, M, N, K, r, s);
}

// ---- the backward ----------------------------------------------------------------------------------------
// 1. V = s dY B [M, r] and dB = s dY^T U, in one pass over the bf16 dY, on the CUDA cores in fp32:
//    lora_bwd_dy_v8's template (common.cuh) with N split over grid z (partial sums of V and dB, reduced
//    by lora_backward.cu's lora_reduce_partials).
extern "C" __global__ void __launch_bounds__(256, 4)
lora_bf16_bwd_dy(const unsigned short* __restrict__ dY, const float* __restrict__ B, const float* __restrict__ U,
                 float* __restrict__ V_out, float* __restrict__ dB_out, int write_db, int M, int N, int r, float s,
                 int n_slice) {
    lora_bwd_dy_tiled<config::lora_bf16_dy_v1>(dY, B, U, V_out, dB_out, write_db, M, N, r, s, n_slice);
}

// 2. dX = dY W0 + V A [M, K]: the tensor-core tile with N as the reduction (W0 k-major: .trans fragments),
//    then V A in fp32 in the epilogue (V already holds s).  v1: 2 static stages; v2: 4 dynamic ones.
template <int STAGES>
__device__ __forceinline__ void bf16_bwd_dx(unsigned char* smem, const unsigned short* dY, const unsigned short* W0,
                                            const float* V, const float* A, float* dX, int M, int N, int K, int r) {
    const int m0 = blockIdx.y * BF16Y::BM, k0 = blockIdx.x * BF16Y::BN, warp = threadIdx.x / 32;
    const int wm = warp / (BF16Y::BN / BF16Y::WN) * BF16Y::WM, wn = warp % (BF16Y::BN / BF16Y::WN) * BF16Y::WN;
    float acc[BF16_MI][BF16_NJ][4] = {};
    bf16_main_loop<STAGES>(acc, reinterpret_cast<BF16StageNN*>(smem), dY, W0, M, K, N, m0, k0, wm, wn,
                           N % 8 == 0 && K % 8 == 0 && aligned16(dY) && aligned16(W0));
    add_rank_term<true>(acc, *reinterpret_cast<BF16Epilogue*>(smem), V, A, M, K, r, m0, k0, wm, wn, 1.0f);
    store_acc(acc, dX, nullptr, M, K, m0, k0, wm, wn);
}

extern "C" __global__ void __launch_bounds__(THREADS)
lora_bf16_bwd_dx(const unsigned short* __restrict__ dY, const unsigned short* __restrict__ W0,
                 const float* __restrict__ V, const float* __restrict__ A, float* __restrict__ dX, int M, int N,
                 int K, int r) {
    __shared__ __align__(16) BF16Shared sh;
    bf16_bwd_dx<config::lora_bf16_y_v1::STAGES>(reinterpret_cast<unsigned char*>(&sh), dY, W0, V, A, dX, M, N, K, r);
}

extern "C" __global__ void __launch_bounds__(THREADS)
lora_bf16_bwd_dx_v2(const unsigned short* __restrict__ dY, const unsigned short* __restrict__ W0,
                    const float* __restrict__ V, const float* __restrict__ A, float* __restrict__ dX, int M, int N,
                    int K, int r, int smem_bytes) {
    extern __shared__ __align__(16) unsigned char bf16_smem[];
    constexpr int STAGES = config::lora_bf16_y_v2::STAGES;
    check_dynamic_smem<STAGES, BF16StageNN>(smem_bytes);
    bf16_bwd_dx<STAGES>(bf16_smem, dY, W0, V, A, dX, M, N, K, r);
}

// 3. dA's partial sum over the rows of split z: P_A[z] = V[rows]^T X[rows], rows = [z*R, z*R + R), fp32
//    on the CUDA cores.  Thread t owns column k = blockIdx.x * THREADS + t of K and the block's RC ranks:
//    per row of X, one coalesced 2-byte load and RC multiply-adds with V's row, which every thread reads
//    from the same shared-memory address (a broadcast).
extern "C" __global__ void __launch_bounds__(THREADS)
lora_bf16_bwd_da(const float* __restrict__ V, const unsigned short* __restrict__ X, float* __restrict__ dA_out,
                 int M, int K, int r, int rows_per_split) {
    using Cfg = config::lora_bf16_da_v1;
    constexpr int BM = Cfg::BM, RC = Cfg::RC;
    __shared__ __align__(16) float Vs[BM][RC];  // Vs[mm][jj] = V[mb + mm, j0 + jj]
    const int k = blockIdx.x * THREADS + threadIdx.x, j0 = blockIdx.y * RC, z = blockIdx.z;
    const int m_begin = z * rows_per_split, m_end = min(M, m_begin + rows_per_split);
    float acc[RC];
#pragma unroll
    for (int jj = 0; jj < RC; ++jj) acc[jj] = 0.0f;
    for (int mb = m_begin; mb < m_end; mb += BM) {
        for (int e = threadIdx.x; e < BM * RC; e += THREADS) {
            const int mm = e / RC, jj = e % RC, m = mb + mm;
            Vs[mm][jj] = m < m_end && j0 + jj < r ? V[(unsigned long long)m * r + j0 + jj] : 0.0f;
        }
        __syncthreads();
        if (k < K) {
            const int rows = min(BM, m_end - mb);
#pragma unroll 4
            for (int mm = 0; mm < rows; ++mm) {  // unrolled: several rows' loads of X in flight at once
                const float x = bf16_to_float(X[(unsigned long long)(mb + mm) * K + k]);
#pragma unroll
                for (int jj = 0; jj < RC; ++jj) acc[jj] = fmaf(Vs[mm][jj], x, acc[jj]);
            }
        }
        __syncthreads();  // everyone is done with Vs before the next rows overwrite it
    }
    if (k >= K) return;
#pragma unroll
    for (int jj = 0; jj < RC; ++jj)
        if (j0 + jj < r) dA_out[(unsigned long long)z * r * K + (unsigned long long)(j0 + jj) * K + k] = acc[jj];
}
