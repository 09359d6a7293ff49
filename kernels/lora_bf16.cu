// lora_bf16.cu -- the fused LoRA forward in bf16 on tensor cores (mma.sync m16n8k16, fp32 accumulate).
//
// Math (as lora_forward.cu, no dropout):   U = X A^T            [M, r]   fp32
//                                          Y = X W0^T + bias + s U B^T   [M, N]   fp32
// Precision, as PEFT users train in mixed precision: the frozen base weight W0 [N, K] and the
// activations X [M, K] are bf16 (bit patterns in uint16 arrays: NumPy has no bfloat16); the adapter
// A [r, K], B [N, r] are the fp32 master weights; bias [N] fp32; U and Y fp32.
//   * X W0^T -- the K-long dot products, >98% of the flops -- runs on the tensor cores: bf16 x bf16
//     products (exact in fp32), fp32 sums.
//   * The rank-r term stays fp32, on the CUDA cores: it is r/K of the flops (16/4096 = 0.4%), so the
//     tensor cores would save almost nothing, and fp32 keeps the adapter exactly as the optimizer holds
//     it -- no bf16 copy of A and B to make each step, and a small update s B A x is not rounded to
//     8 bits before it is added to W0 x.  Only X is rounded (it arrives in bf16).
//
// Kernels:
//   lora_bf16_fwd_u  U = X A^T: one warp per row of X, lanes across k, 16 ranks at a time, a shuffle
//                    reduction.  Launch: grid ceil(M / 8), block 256 (8 warps = 8 rows: BF16_U_ROWS).  Memory bound.
//   lora_bf16_fwd_y  Y: 128 x 128 output tiles, k-step 32, 8 warps each owning a 64 x 32 warp tile =
//                    4 x 4 mma tiles of 16 x 8 (64 fp32 accumulators per thread).  Operand tiles in
//                    shared memory k-contiguous, rows padded by 8 bf16 (80 bytes: ldmatrix's 16-byte
//                    row addresses stay aligned, and the 8 rows of one 8 x 8 matrix fall in different
//                    banks); fragments by ldmatrix (x4 for X, x2 for W0, whose rows are B^T's rows =
//                    mma's "col" operand).  Loads by cp.async, 16 bytes = 8 bf16 each, STAGES buffers
//                    (tiles of later k-steps in flight while this one multiplies) when K % 8 == 0 and the
//                    pointers are 16-byte aligned; otherwise plain 2-byte loads (correct, slower).  Tile
//                    edges are zero-filled (cp.async src-size 0).  Epilogue: the rank term in chunks of
//                    RC ranks, U and B chunks staged in the (then idle) shared memory, fp32.
//                    Launch: grid (ceil(N / 128), ceil(M / 128)), block 256.  Configuration:
//                    lora_tiles.cuh, struct lora_bf16_y_v1.
//
// Expected, not measured (no GPU run yet): an mma.sync kernel of this shape reaches roughly 60-75% of
// an H100/H200's dense bf16 peak; cuBLAS's wgmma kernels are faster (the issue's goal is within 1.35x
// of cuBLAS's bf16 base GEMM).  Two stages only: 3-4 stages need more than 48 KB of shared memory, which
// is dynamic shared memory and an opt-in attribute at launch -- the next step, with a wider k-step.
//
// Versions: v1 (this file).  Requires sm_80 or later on a GPU; runs on any CPU under the emulator,
// where common.cuh's ldmatrix/mma are warp collectives.  Launcher: minilora.kernels.lora_forward_bf16.
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

// ---- Y = X W0^T + bias + s U B^T ---------------------------------------------------------------------
using BF16Y = config::lora_bf16_y_v1;

constexpr int BF16_LD = BF16Y::BK + 8;  // bf16 per shared-memory row (padded)

struct BF16Stage {
    unsigned short x[BF16Y::BM][BF16_LD];  // X rows m0.., k-contiguous
    unsigned short w[BF16Y::BN][BF16_LD];  // W0 rows n0.., k-contiguous (B^T of the mma)
};
struct BF16Epilogue {
    float u[BF16Y::BM][BF16Y::RC + 1];  // U[m0 + i][j0 + jj] (+1: rows in different banks)
    float b[BF16Y::BN][BF16Y::RC + 1];  // B[n0 + i][j0 + jj]
};
union BF16Shared {
    BF16Stage stage[BF16Y::STAGES];
    BF16Epilogue epilogue;  // used only after the main loop
};

// S[dd][kk] = src[d0 + dd][k0 + kk] (rows of length K), zero outside rows x K.  With `vec`, 16-byte
// cp.async copies (K % 8 == 0, aligned base): a chunk of 8 is either wholly inside or wholly outside.
template <int ROWS>
__device__ __forceinline__ void load_bf16_tile(unsigned short (*S)[BF16_LD], const unsigned short* src,
                                               int rows, int K, int d0, int k0, bool vec) {
    constexpr int CHUNKS = ROWS * BF16Y::BK / 8;
    for (int c = threadIdx.x; c < CHUNKS; c += THREADS) {
        const int dd = c / (BF16Y::BK / 8), kk = c % (BF16Y::BK / 8) * 8;
        const int d = d0 + dd, k = k0 + kk;
        if (vec) {
            const bool in = d < rows && k < K;
            const unsigned short* from = in ? src + (unsigned long long)d * K + k : src;
            cp_async<16>(reinterpret_cast<float*>(&S[dd][kk]), reinterpret_cast<const float*>(from), in ? 16 : 0);
        } else {
#pragma unroll
            for (int q = 0; q < 8; ++q)
                S[dd][kk + q] = d < rows && k + q < K ? src[(unsigned long long)d * K + k + q] : (unsigned short)0;
        }
    }
}

extern "C" __global__ void __launch_bounds__(THREADS)
lora_bf16_fwd_y(const unsigned short* __restrict__ X, const unsigned short* __restrict__ W0,
               const float* __restrict__ U, const float* __restrict__ B, const float* __restrict__ bias,
               int has_bias, float* __restrict__ Y, int M, int N, int K, int r, float s) {
    constexpr int BM = BF16Y::BM, BN = BF16Y::BN, BK = BF16Y::BK, WM = BF16Y::WM, WN = BF16Y::WN;
    constexpr int STAGES = BF16Y::STAGES, RC = BF16Y::RC;
    constexpr int MI = WM / 16, NJ = WN / 8;  // mma tiles per warp: 16 x 8 each
    static_assert((BM / WM) * (BN / WN) * 32 == THREADS, "one warp per warp tile");
    __shared__ __align__(16) BF16Shared sh;

    const int m0 = blockIdx.y * BM, n0 = blockIdx.x * BN;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int wm = warp / (BN / WN) * WM, wn = warp % (BN / WN) * WN;  // this warp's tile in the block tile
    const bool vec = K % 8 == 0 && (reinterpret_cast<unsigned long long>(X) & 15) == 0 &&
                     (reinterpret_cast<unsigned long long>(W0) & 15) == 0;

    float acc[MI][NJ][4];
#pragma unroll
    for (int i = 0; i < MI; ++i)
#pragma unroll
        for (int j = 0; j < NJ; ++j)
#pragma unroll
            for (int e = 0; e < 4; ++e) acc[i][j][e] = 0.0f;

    // The main loop: k-tiles loaded ahead by cp.async, fragments by ldmatrix, products by mma.sync.
    const int k_tiles = (K + BK - 1) / BK;
    // Prologue: the first STAGES - 1 tiles in flight, one commit group each (empty groups past the end,
    // so the wait below always counts the same number of groups).
#pragma unroll
    for (int st = 0; st < STAGES - 1; ++st) {
        if (st < k_tiles) {
            load_bf16_tile<BM>(sh.stage[st].x, X, M, K, m0, st * BK, vec);
            load_bf16_tile<BN>(sh.stage[st].w, W0, N, K, n0, st * BK, vec);
        }
        cp_async_commit();
    }
    const int j = lane / 8, row = lane % 8;  // ldmatrix: lane 8j + row points at row `row` of matrix j
    for (int kt = 0; kt < k_tiles; ++kt) {
        cp_async_wait<STAGES - 2>();  // tile kt has landed (this thread's copies) ...
        __syncthreads();              // ... and everyone's; and everyone is done with the buffer refilled next
        const int next = kt + STAGES - 1;
        if (next < k_tiles) {
            load_bf16_tile<BM>(sh.stage[next % STAGES].x, X, M, K, m0, next * BK, vec);
            load_bf16_tile<BN>(sh.stage[next % STAGES].w, W0, N, K, n0, next * BK, vec);
        }
        cp_async_commit();
        const BF16Stage& t = sh.stage[kt % STAGES];
#pragma unroll
        for (int kk = 0; kk < BK; kk += 16) {
            unsigned a[MI][4], b[NJ][2];
#pragma unroll
            for (int i = 0; i < MI; ++i)  // X's 16 x 16 quadrants: top-left, bottom-left, top-right, bottom-right
                ldmatrix_x4(a[i], &t.x[wm + 16 * i + row + 8 * (j % 2)][kk + 8 * (j / 2)]);
#pragma unroll
            for (int jn = 0; jn < NJ; ++jn)  // W0's 8 rows (n) x 16 k: two 8 x 8 halves along k
                ldmatrix_x2(b[jn], &t.w[wn + 8 * jn + row][kk + 8 * (j % 2)]);
#pragma unroll
            for (int i = 0; i < MI; ++i)
#pragma unroll
                for (int jn = 0; jn < NJ; ++jn) mma_bf16_16x8x16(acc[i][jn], a[i], b[jn], acc[i][jn]);
        }
    }
    cp_async_wait<0>();  // the empty trailing groups: nothing may stay in flight

    // Epilogue: acc += s * U[m, j0:j0+RC] . B[n, j0:j0+RC], RC ranks at a time through shared memory.
    const int g = lane / 4, tq = lane % 4;  // the accumulator layout: rows g, g + 8; columns 2tq, 2tq + 1
    for (int j0 = 0; j0 < r; j0 += RC) {
        __syncthreads();  // the main loop's (or the last chunk's) reads of shared memory are over
        for (int idx = threadIdx.x; idx < BM * RC; idx += THREADS) {
            const int i = idx / RC, jj = idx % RC, m = m0 + i;
            sh.epilogue.u[i][jj] = m < M && j0 + jj < r ? U[(unsigned long long)m * r + j0 + jj] : 0.0f;
        }
        for (int idx = threadIdx.x; idx < BN * RC; idx += THREADS) {
            const int i = idx / RC, jj = idx % RC, n = n0 + i;
            sh.epilogue.b[i][jj] = n < N && j0 + jj < r ? B[(unsigned long long)n * r + j0 + jj] : 0.0f;
        }
        __syncthreads();
#pragma unroll
        for (int i = 0; i < MI; ++i)
#pragma unroll
            for (int jn = 0; jn < NJ; ++jn)
#pragma unroll
                for (int e = 0; e < 4; ++e) {
                    const int mm = wm + 16 * i + g + 8 * (e / 2), nn = wn + 8 * jn + 2 * tq + e % 2;
                    float dot = 0.0f;
#pragma unroll
                    for (int jj = 0; jj < RC; ++jj) dot = fmaf(sh.epilogue.u[mm][jj], sh.epilogue.b[nn][jj], dot);
                    acc[i][jn][e] = fmaf(s, dot, acc[i][jn][e]);
                }
    }
#pragma unroll
    for (int i = 0; i < MI; ++i)
#pragma unroll
        for (int jn = 0; jn < NJ; ++jn)
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const int m = m0 + wm + 16 * i + g + 8 * (e / 2), n = n0 + wn + 8 * jn + 2 * tq + e % 2;
                if (m < M && n < N) Y[(unsigned long long)m * N + n] = acc[i][jn][e] + (has_bias ? bias[n] : 0.0f);
            }
}
