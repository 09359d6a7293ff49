// matmul_tiled.cu -- C = A @ B with shared-memory tiles.
//
// Shapes: A is float[M][K], B is float[K][N], C is float[M][N], all row-major.
// Launch: block = (TILE, TILE) threads, grid = (ceil(N / TILE), ceil(M / TILE)); thread (tx, ty)
// of block (bx, by) computes C[by * TILE + ty][bx * TILE + tx].
//
// Versions:
//   v1 matmul_naive  every thread reads a row of A and a column of B from global memory.
//   v2 matmul_tiled  the block walks along K one TILE x TILE tile at a time; each thread loads one
//                    element of A's tile and one of B's into shared memory, so each global value is
//                    read once per block instead of TILE times.  Two barriers per tile: the first
//                    so no thread computes with a half-loaded tile, the second so no thread
//                    overwrites the tile while others still read it.
// Out-of-range elements (ragged M, N, K) are loaded as 0, which leaves the dot product unchanged.
#define TILE 16

extern "C" __global__ void matmul_naive(const float* A, const float* B, float* C, int M, int N, int K) {
    int row = blockIdx.y * blockDim.y + threadIdx.y;
    int col = blockIdx.x * blockDim.x + threadIdx.x;
    if (row >= M || col >= N) return;
    float acc = 0.0f;
    for (int k = 0; k < K; ++k) acc = fmaf(A[row * K + k], B[k * N + col], acc);
    C[row * N + col] = acc;
}

extern "C" __global__ void __launch_bounds__(TILE * TILE)
matmul_tiled(const float* __restrict__ A, const float* __restrict__ B, float* __restrict__ C, int M, int N, int K) {
    __shared__ float As[TILE][TILE];
    __shared__ float Bs[TILE][TILE];
    int tx = threadIdx.x, ty = threadIdx.y;
    int row = blockIdx.y * TILE + ty;
    int col = blockIdx.x * TILE + tx;
    float acc = 0.0f;
    for (int t = 0; t < K; t += TILE) {
        As[ty][tx] = (row < M && t + tx < K) ? A[row * K + t + tx] : 0.0f;
        Bs[ty][tx] = (t + ty < K && col < N) ? B[(t + ty) * N + col] : 0.0f;
        __syncthreads();
#pragma unroll
        for (int k = 0; k < TILE; ++k) acc += As[ty][k] * Bs[k][tx];
        __syncthreads();
    }
    if (row < M && col < N) C[row * N + col] = acc;
}
