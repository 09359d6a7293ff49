// Tensor-core GEMMs through the WMMA API, written as the public tutorials write them (unedited for the emulator).
#include <mma.h>
#include <cuda_fp16.h>
#include <cuda_bf16.h>
using namespace nvcuda;

// ---- NVIDIA's "Programming Tensor Cores in CUDA 9" blog post: one warp per 16 x 16 tile of C, all matrices
// column-major, C = alpha A B + beta C.  M, N, K must be multiples of 16 (the post's rule).
const int WMMA_M = 16;
const int WMMA_N = 16;
const int WMMA_K = 16;

extern "C" __global__ void wmma_example(half *a, half *b, float *c, int M, int N, int K, float alpha, float beta) {
    // Leading dimensions. Packed with no transpositions.
    int lda = M;
    int ldb = K;
    int ldc = M;

    // Tile using a 2D grid
    int warpM = (blockIdx.x * blockDim.x + threadIdx.x) / warpSize;
    int warpN = (blockIdx.y * blockDim.y + threadIdx.y);

    // Declare the fragments
    wmma::fragment<wmma::matrix_a, WMMA_M, WMMA_N, WMMA_K, half, wmma::col_major> a_frag;
    wmma::fragment<wmma::matrix_b, WMMA_M, WMMA_N, WMMA_K, half, wmma::col_major> b_frag;
    wmma::fragment<wmma::accumulator, WMMA_M, WMMA_N, WMMA_K, float> acc_frag;
    wmma::fragment<wmma::accumulator, WMMA_M, WMMA_N, WMMA_K, float> c_frag;

    wmma::fill_fragment(acc_frag, 0.0f);

    // Loop over k
    for (int i = 0; i < K; i += WMMA_K) {
        int aRow = warpM * WMMA_M;
        int aCol = i;

        int bRow = i;
        int bCol = warpN * WMMA_N;

        // Bounds checking
        if (aRow < M && aCol < K && bRow < K && bCol < N) {
            // Load the inputs
            wmma::load_matrix_sync(a_frag, a + aRow + aCol * lda, lda);
            wmma::load_matrix_sync(b_frag, b + bRow + bCol * ldb, ldb);

            // Perform the matrix multiplication
            wmma::mma_sync(acc_frag, a_frag, b_frag, acc_frag);
        }
    }

    // Load in the current value of c, scale it by beta, and add this our result scaled by alpha
    int cRow = warpM * WMMA_M;
    int cCol = warpN * WMMA_N;

    if (cRow < M && cCol < N) {
        wmma::load_matrix_sync(c_frag, c + cRow + cCol * ldc, ldc, wmma::mem_col_major);

        for (int i = 0; i < c_frag.num_elements; i++) {
            c_frag.x[i] = alpha * acc_frag.x[i] + beta * c_frag.x[i];
        }

        // Store the output
        wmma::store_matrix_sync(c + cRow + cCol * ldc, c_frag, ldc, wmma::mem_col_major);
    }
}

// ---- A shared-memory tiled version for any M, N, K (the ragged edges zero-padded in shared memory), in the style
// of cuda-samples' cudaTensorCoreGemm: 4 warps per block as 2 x 2 tiles of 16 x 16, row-major A [M, K], B [K, N]
// and C [M, N]; the accumulators go through shared memory to the guarded global store.  T: half or bf16 inputs,
// Acc: float (or half, for half inputs: the "hgemm" configuration).
template <typename T, typename Acc>
__global__ void wmma_smem_gemm(const T* A, const T* B, Acc* C, int M, int N, int K) {
    constexpr int BM = 32, BN = 32, BK = 16, SKEW = 8;  // skew: 16 bytes, as the samples pad rows
    __shared__ __align__(32) T As[BM][BK + SKEW];
    __shared__ __align__(32) T Bs[BK][BN + SKEW];
    __shared__ __align__(32) Acc Cs[BM][BN + SKEW];
    const int warp = threadIdx.x / 32, wm = warp / 2, wn = warp % 2;
    const int m0 = blockIdx.y * BM, n0 = blockIdx.x * BN;

    wmma::fragment<wmma::accumulator, 16, 16, 16, Acc> acc;
    wmma::fill_fragment(acc, Acc(0.0f));
    for (int k0 = 0; k0 < K; k0 += BK) {
        for (int e = threadIdx.x; e < BM * BK; e += blockDim.x) {
            const int r = e / BK, c = e % BK;
            As[r][c] = (m0 + r < M && k0 + c < K) ? A[(size_t)(m0 + r) * K + k0 + c] : T(0.0f);
        }
        for (int e = threadIdx.x; e < BK * BN; e += blockDim.x) {
            const int r = e / BN, c = e % BN;
            Bs[r][c] = (k0 + r < K && n0 + c < N) ? B[(size_t)(k0 + r) * N + n0 + c] : T(0.0f);
        }
        __syncthreads();
        wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> a_frag;
        wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::row_major> b_frag;
        wmma::load_matrix_sync(a_frag, &As[wm * 16][0], BK + SKEW);
        wmma::load_matrix_sync(b_frag, &Bs[0][wn * 16], BN + SKEW);
        wmma::mma_sync(acc, a_frag, b_frag, acc);
        __syncthreads();
    }
    wmma::store_matrix_sync(&Cs[wm * 16][wn * 16], acc, BN + SKEW, wmma::mem_row_major);
    __syncthreads();
    for (int e = threadIdx.x; e < BM * BN; e += blockDim.x) {
        const int r = e / BN, c = e % BN;
        if (m0 + r < M && n0 + c < N) C[(size_t)(m0 + r) * N + n0 + c] = Cs[r][c];
    }
}
template __global__ void wmma_smem_gemm<half, float>(const half*, const half*, float*, int, int, int);
template __global__ void wmma_smem_gemm<half, half>(const half*, const half*, half*, int, int, int);
template __global__ void wmma_smem_gemm<__nv_bfloat16, float>(const __nv_bfloat16*, const __nv_bfloat16*, float*, int,
                                                               int, int);

// ---- cuda-samples' tf32TensorCoreGemm in miniature: m16n16k8 with precision::tf32 fragments, the inputs rounded
// with __float_to_tf32 after the load, as the sample does.  One warp per 16 x 16 tile; M, N multiples of 16, K of 8.
extern "C" __global__ void wmma_tf32(const float* A, const float* B, float* C, int M, int N, int K) {
    const int tile_m = blockIdx.y, tile_n = blockIdx.x;
    wmma::fragment<wmma::matrix_a, 16, 16, 8, wmma::precision::tf32, wmma::row_major> a_frag;
    wmma::fragment<wmma::matrix_b, 16, 16, 8, wmma::precision::tf32, wmma::col_major> b_frag;
    wmma::fragment<wmma::accumulator, 16, 16, 8, float> acc_frag;
    wmma::fill_fragment(acc_frag, 0.0f);
    for (int k = 0; k < K; k += 8) {
        wmma::load_matrix_sync(a_frag, A + tile_m * 16 * K + k, K);
        wmma::load_matrix_sync(b_frag, B + tile_n * 16 * K + k, K);  // B stored as [N, K]: column-major K x N
#pragma unroll
        for (int t = 0; t < a_frag.num_elements; t++) a_frag.x[t] = wmma::__float_to_tf32(a_frag.x[t]);
#pragma unroll
        for (int t = 0; t < b_frag.num_elements; t++) b_frag.x[t] = wmma::__float_to_tf32(b_frag.x[t]);
        wmma::mma_sync(acc_frag, a_frag, b_frag, acc_frag);
    }
    wmma::store_matrix_sync(C + tile_m * 16 * N + tile_n * 16, acc_frag, N, wmma::mem_row_major);
}

// ---- immaTensorCoreGemm in miniature: signed char inputs, int accumulators (exact, wrapping), C = A B + bias.
extern "C" __global__ void wmma_int8(const signed char* A, const signed char* B, const int* bias, int* C, int M, int N,
                                     int K) {
    const int tile_m = blockIdx.y, tile_n = blockIdx.x;
    wmma::fragment<wmma::matrix_a, 16, 16, 16, signed char, wmma::row_major> a_frag;
    wmma::fragment<wmma::matrix_b, 16, 16, 16, signed char, wmma::col_major> b_frag;
    wmma::fragment<wmma::accumulator, 16, 16, 16, int> acc_frag;
    wmma::load_matrix_sync(acc_frag, bias + tile_m * 16 * N + tile_n * 16, N, wmma::mem_row_major);
    for (int k = 0; k < K; k += 16) {
        wmma::load_matrix_sync(a_frag, A + tile_m * 16 * K + k, K);
        wmma::load_matrix_sync(b_frag, B + tile_n * 16 * K + k, K);
        wmma::mma_sync(acc_frag, a_frag, b_frag, acc_frag);
    }
    wmma::store_matrix_sync(C + tile_m * 16 * N + tile_n * 16, acc_frag, N, wmma::mem_row_major);
}

// ---- One warp, one tile of each remaining shape: C = A B + C with A row-major [M, K], B column-major (B^T [N, K]),
// C loaded and stored row-major.
template <int M, int N, int K, typename T, typename Acc>
__global__ void wmma_tile(const T* A, const T* Bt, Acc* C) {
    wmma::fragment<wmma::matrix_a, M, N, K, T, wmma::row_major> a;
    wmma::fragment<wmma::matrix_b, M, N, K, T, wmma::col_major> b;
    wmma::fragment<wmma::accumulator, M, N, K, Acc> c;
    wmma::load_matrix_sync(a, A, K);
    wmma::load_matrix_sync(b, Bt, K);
    wmma::load_matrix_sync(c, C, N, wmma::mem_row_major);
    wmma::mma_sync(c, a, b, c);
    wmma::store_matrix_sync(C, c, N, wmma::mem_row_major);
}
template __global__ void wmma_tile<32, 8, 16, half, float>(const half*, const half*, float*);
template __global__ void wmma_tile<8, 32, 16, __nv_bfloat16, float>(const __nv_bfloat16*, const __nv_bfloat16*, float*);
template __global__ void wmma_tile<8, 8, 4, double, double>(const double*, const double*, double*);
