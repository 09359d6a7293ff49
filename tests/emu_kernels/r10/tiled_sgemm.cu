// Round 10: a tutorial's tiled SGEMM as a CuPy benchmark launches it, on a stream between two events.
#include <cuda_runtime.h>

// C = alpha * A @ B + beta * C for row-major A (M x K), B (K x N), one TILE x TILE output tile per block.
template <int TILE>
__global__ void __launch_bounds__(TILE * TILE) sgemm_tiled(int M, int N, int K, float alpha, const float* __restrict__ A,
                                                           const float* __restrict__ B, float beta, float* __restrict__ C) {
  __shared__ float As[TILE][TILE];
  __shared__ float Bs[TILE][TILE + 1];  // padded: column reads hit distinct banks
  const int row = blockIdx.y * TILE + threadIdx.y, col = blockIdx.x * TILE + threadIdx.x;
  float acc = 0.f;
  for (int t = 0; t < (K + TILE - 1) / TILE; ++t) {
    const int ak = t * TILE + threadIdx.x, bk = t * TILE + threadIdx.y;
    As[threadIdx.y][threadIdx.x] = (row < M && ak < K) ? A[row * K + ak] : 0.f;
    Bs[threadIdx.y][threadIdx.x] = (bk < K && col < N) ? B[bk * N + col] : 0.f;
    __syncthreads();
#pragma unroll
    for (int k = 0; k < TILE; ++k) acc = fmaf(As[threadIdx.y][k], Bs[k][threadIdx.x], acc);
    __syncthreads();
  }
  if (row < M && col < N) C[row * N + col] = alpha * acc + beta * C[row * N + col];
}
