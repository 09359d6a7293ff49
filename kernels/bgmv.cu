// bgmv.cu -- batched gather matrix-vector products: every row of a batch through its OWN LoRA adapter
//
// The multi-adapter serving kernel (Punica's BGMV, used by S-LoRA, LoRAX and vLLM): requests for
// different adapters share one batch; the base GEMM Y = X W0^T runs once for all of them, then this
// file adds each row's own LoRA branch
//
//     y_m += s_a * B_a (A_a x_m)          with a = idx[m];   rows with idx[m] < 0 get nothing added
//
// in two launches, shrink then expand, as Punica does (B_a A_a is never built):
//     1. bgmv_shrink:  U[m, j] = sum_k X[m, k] A[a, j, k]           for j < rank[a]    (rank-r: tiny)
//     2. bgmv_expand:  Y[m, n] += s[a] * sum_{j < rank[a]} U[m, j] B[a, n, j]
//
// Shapes (row-major float32; the adapters are stacked, each padded to the largest rank R):
//     X  [M, K]     one row per token (in decoding: one token per request)
//     A  [L, R, K]  lora_A.weight of the L adapters, rows j >= rank[a] are never read
//     B  [L, N, R]  lora_B.weight of the L adapters, columns j >= rank[a] are never read
//     rank [L] int32, s [L] float32 (alpha / r), idx [M] int32 (adapter of each row, -1: none)
//     U  [M, R]     scratch; only U[m, j < rank[idx[m]]] is written
//     Y  [M, N]     read and written: it comes in holding the base output
// Adapters of different ranks cost their own rank, not R: the loops stop at rank[a].
// FLOPs: 2 M K r + 2 M N r (r of each row's adapter); bytes: every row reads its own A_a and B_a, so
// a decode batch is bound by memory traffic, just like the base GEMV.
//
// Versions (minilora.kernels.bgmv(..., version=...); the tests run both):
//     v1  plain: one thread per output element, a dot product straight from global memory.
//         shrink: block (16, 16), grid (ceil(R / 16), ceil(M / 16));
//         expand: block (16, 16), grid (ceil(N / 16), ceil(M / 16)).
//         Simple, but in shrink the 16 threads of a row read A_a's rows with stride K (uncoalesced)
//         and each thread walks all of K alone.
//     v2  shared-memory tiled: one block per row (and, in expand, per BGMV_TILE_N outputs).
//         shrink: the row x_m is staged in shared memory in chunks of BGMV_TILE_K floats (read from
//         global memory once, coalesced); each warp takes one rank j, its 32 lanes read consecutive
//         k of A_a (coalesced) and a warp shuffle sums the 32 partial dots.
//         block BGMV_THREADS (8 warps), grid (M).
//         expand: u_m (at most BGMV_MAX_RANK floats) is staged in shared memory once per block, then
//         each thread computes one output n from it.  block BGMV_THREADS, grid (ceil(N / BGMV_THREADS), M).
//
// Run one by hand on the CPU (the emulator) or a GPU (CuPy) through minilora.kernels:
//     from minilora import kernels
//     kernels.bgmv(Y, X, A, B, ranks, scales, idx, device="emu", version="v2")   # Y updated in place
#include "common.cuh"

#define BGMV_V1_BLOCK 16
#define BGMV_THREADS 256   // 8 warps
#define BGMV_TILE_K 256    // floats of x_m staged in shared memory at a time (v2 shrink)
#define BGMV_MAX_RANK 256  // largest rank v2 handles (registers in shrink, shared memory in expand)
static_assert(BGMV_THREADS == BGMV_TILE_K, "v2 shrink stages one float of x per thread");

// =================================================================================================
// v1: plain
// =================================================================================================
extern "C" __global__ void __launch_bounds__(256)
bgmv_shrink_v1(const float* __restrict__ X, const float* __restrict__ A, const int* __restrict__ rank,
               const int* __restrict__ idx, float* __restrict__ U, int M, int K, int R) {
    const int j = blockIdx.x * blockDim.x + threadIdx.x;  // rank index
    const int m = blockIdx.y * blockDim.y + threadIdx.y;  // row
    if (m >= M) return;
    const int a = idx[m];
    if (a < 0 || j >= rank[a]) return;  // no adapter for this row, or past this adapter's rank
    const float* x = X + (unsigned long long)m * K;
    const float* a_row = A + ((unsigned long long)a * R + j) * K;
    float acc = 0.0f;
    for (int k = 0; k < K; ++k) acc = fmaf(x[k], a_row[k], acc);
    U[(unsigned long long)m * R + j] = acc;
}

extern "C" __global__ void __launch_bounds__(256)
bgmv_expand_v1(const float* __restrict__ U, const float* __restrict__ B, const int* __restrict__ rank,
               const float* __restrict__ s, const int* __restrict__ idx, float* __restrict__ Y, int M, int N,
               int R) {
    const int n = blockIdx.x * blockDim.x + threadIdx.x;  // output feature
    const int m = blockIdx.y * blockDim.y + threadIdx.y;  // row
    if (m >= M || n >= N) return;
    const int a = idx[m];
    if (a < 0) return;  // this row keeps the base output
    const float* u = U + (unsigned long long)m * R;
    const float* b_row = B + ((unsigned long long)a * N + n) * R;
    float acc = 0.0f;
    for (int j = 0; j < rank[a]; ++j) acc = fmaf(u[j], b_row[j], acc);
    Y[(unsigned long long)m * N + n] += s[a] * acc;
}

// =================================================================================================
// v2: shared-memory tiled, one block per row
// =================================================================================================
extern "C" __global__ void __launch_bounds__(BGMV_THREADS)
bgmv_shrink_v2(const float* __restrict__ X, const float* __restrict__ A, const int* __restrict__ rank,
               const int* __restrict__ idx, float* __restrict__ U, int M, int K, int R) {
    __shared__ float x_tile[BGMV_TILE_K];
    const int m = blockIdx.x;
    const int a = idx[m];
    if (a < 0) return;  // the whole block leaves together: no barrier is skipped by only some threads
    const int r = rank[a];
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, warps = BGMV_THREADS / 32;
    const float* x = X + (unsigned long long)m * K;
    // Each warp owns ranks warp, warp + 8, ...; its running sums live in registers across the K chunks.
    float acc[BGMV_MAX_RANK / (BGMV_THREADS / 32)];
    for (int t = 0; t < BGMV_MAX_RANK / warps; ++t) acc[t] = 0.0f;
    for (int k0 = 0; k0 < K; k0 += BGMV_TILE_K) {
        const int k = k0 + threadIdx.x;  // BGMV_THREADS == BGMV_TILE_K: one float per thread
        x_tile[threadIdx.x] = k < K ? x[k] : 0.0f;
        __syncthreads();
        const int width = min(BGMV_TILE_K, K - k0);
        for (int j = warp, t = 0; j < r; j += warps, ++t) {
            const float* a_row = A + ((unsigned long long)a * R + j) * K + k0;
            for (int kk = lane; kk < width; kk += 32) acc[t] = fmaf(x_tile[kk], a_row[kk], acc[t]);
        }
        __syncthreads();  // before the next chunk overwrites x_tile
    }
    for (int j = warp, t = 0; j < r; j += warps, ++t) {
        float v = acc[t];
        for (int offset = 16; offset > 0; offset /= 2) v += __shfl_down_sync(0xffffffffu, v, offset);
        if (lane == 0) U[(unsigned long long)m * R + j] = v;
    }
}

extern "C" __global__ void __launch_bounds__(BGMV_THREADS)
bgmv_expand_v2(const float* __restrict__ U, const float* __restrict__ B, const int* __restrict__ rank,
               const float* __restrict__ s, const int* __restrict__ idx, float* __restrict__ Y, int M, int N,
               int R) {
    __shared__ float u_tile[BGMV_MAX_RANK];
    const int m = blockIdx.y;
    const int a = idx[m];
    if (a < 0) return;  // whole block: see shrink
    const int r = rank[a];
    for (int j = threadIdx.x; j < r; j += BGMV_THREADS) u_tile[j] = U[(unsigned long long)m * R + j];
    __syncthreads();
    const int n = blockIdx.x * BGMV_THREADS + threadIdx.x;
    if (n >= N) return;
    const float* b_row = B + ((unsigned long long)a * N + n) * R;
    float acc = 0.0f;
    for (int j = 0; j < r; ++j) acc = fmaf(u_tile[j], b_row[j], acc);
    Y[(unsigned long long)m * N + n] += s[a] * acc;
}
