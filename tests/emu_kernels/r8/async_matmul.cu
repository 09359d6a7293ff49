// Matrix multiply C = A * B with asynchronous global -> shared copies, written the way NVIDIA's cuda-samples
// globalToShmemAsyncCopy does it (block-square tiles, wA and wB multiples of the tile), and the other ways
// public code spells the same copies: <cuda_pipeline.h> primitives, inline-PTX cp.async macros,
// cooperative_groups::memcpy_async.
#include <cooperative_groups.h>
#include <cooperative_groups/memcpy_async.h>
#include <cuda/barrier>
#include <cuda/pipeline>
#include <cuda_pipeline.h>

namespace cg = cooperative_groups;

// Multi-stage pipeline, one pipeline per thread, each thread copying a float4 of A and of B per stage, up to
// PREFETCH stages ahead of the one it computes with.  With no barrier between a tile's use and the next iteration's
// copies, those copies (PREFETCH + 1 ahead) must not reach the buffer a slower thread still reads: PREFETCH + 1 <
// maxPipelineStages.  At 3, a fast thread copies into it (racecheck names the read).
template <int BLOCK_SIZE_X, int PREFETCH>
__global__ void MatrixMulAsyncCopyMultiStageLargeChunk(float *__restrict__ C, const float *__restrict__ A,
                                                       const float *__restrict__ B, int wA, int wB) {
  // Requires BLOCK_SIZE_X % 4 == 0
  constexpr size_t maxPipelineStages = 4;

  __shared__ alignas(alignof(float4)) float As[maxPipelineStages][BLOCK_SIZE_X][BLOCK_SIZE_X];
  __shared__ alignas(alignof(float4)) float Bs[maxPipelineStages][BLOCK_SIZE_X][BLOCK_SIZE_X];

  float Csub = 0.0;
  const int aBegin = wA * (BLOCK_SIZE_X)*blockIdx.y;
  const int aEnd = aBegin + wA - 1;
  int aStep = BLOCK_SIZE_X;
  int bBegin = BLOCK_SIZE_X * blockIdx.x;
  int bStep = BLOCK_SIZE_X * wB;
  const int t4x = threadIdx.x * 4;
  const auto shape4 = cuda::aligned_size_t<alignof(float4)>(sizeof(float4));

  cuda::pipeline<cuda::thread_scope_thread> pipe = cuda::make_pipeline();

  for (int a = aBegin, b = bBegin, i = 0, aStage = aBegin, bStage = bBegin, iStage = 0; a <= aEnd;
       a += aStep, b += bStep, ++i) {
    // Load the matrices from device memory to shared memory; each thread loads one element of each matrix
    for (; aStage <= a + aStep * PREFETCH; aStage += aStep, bStage += bStep, ++iStage) {
      pipe.producer_acquire();
      if (aStage <= aEnd && t4x < BLOCK_SIZE_X) {
        // Rotating buffer
        const int j = iStage % maxPipelineStages;
        cuda::memcpy_async(&As[j][threadIdx.y][t4x], &A[aStage + wA * threadIdx.y + t4x], shape4, pipe);
        cuda::memcpy_async(&Bs[j][threadIdx.y][t4x], &B[bStage + wB * threadIdx.y + t4x], shape4, pipe);
      }
      pipe.producer_commit();
    }
    pipe.consumer_wait();
    // Synchronize to make sure the matrices are loaded
    __syncthreads();

    // Rotating buffer
    const int j = i % maxPipelineStages;

    // Multiply the two matrices together;
    // each thread computes one element of the block sub-matrix
#pragma unroll
    for (int k = 0; k < BLOCK_SIZE_X; ++k) {
      Csub += As[j][threadIdx.y][k] * Bs[j][k][threadIdx.x];
    }
    pipe.consumer_release();

    // Don't have to synchronize because maxPipelineStages is greater than one
    // therefore next iteration is loading to a different buffer.
  }

  // Write the block sub-matrix to device memory;
  // each thread writes four element
  int c = wB * BLOCK_SIZE_X * blockIdx.y + BLOCK_SIZE_X * blockIdx.x;
  C[c + wB * threadIdx.y + threadIdx.x] = Csub;
}

// Single stage, an arrive/wait barrier instead of a pipeline.
template <int BLOCK_SIZE_X>
__global__ void MatrixMulAsyncCopyLargeChunkAWBarrier(float *__restrict__ C, const float *__restrict__ A,
                                                      const float *__restrict__ B, int wA, int wB) {
#pragma nv_diag_suppress static_var_with_dynamic_init
  // Requires BLOCK_SIZE_X % 4 == 0
  __shared__ cuda::barrier<cuda::thread_scope_block> bar;

  __shared__ alignas(alignof(float4)) float As[BLOCK_SIZE_X][BLOCK_SIZE_X];
  __shared__ alignas(alignof(float4)) float Bs[BLOCK_SIZE_X][BLOCK_SIZE_X];

  if (threadIdx.x == 0) {
    init(&bar, blockDim.x * blockDim.y);
  }
  __syncthreads();

  int aBegin = wA * BLOCK_SIZE_X * blockIdx.y;
  int aEnd = aBegin + wA - 1;
  int aStep = BLOCK_SIZE_X;
  int bBegin = BLOCK_SIZE_X * blockIdx.x;
  int bStep = BLOCK_SIZE_X * wB;
  float Csub = 0.0;
  const int t4x = threadIdx.x * 4;

  for (int a = aBegin, b = bBegin; a <= aEnd; a += aStep, b += bStep) {
    if (t4x < BLOCK_SIZE_X) {
      cuda::memcpy_async(&As[threadIdx.y][t4x], &A[a + wA * threadIdx.y + t4x], sizeof(float4), bar);
      cuda::memcpy_async(&Bs[threadIdx.y][t4x], &B[b + wB * threadIdx.y + t4x], sizeof(float4), bar);
    }
    // Synchronize to make sure the matrices are loaded
    bar.arrive_and_wait();

#pragma unroll
    for (int k = 0; k < BLOCK_SIZE_X; ++k) {
      Csub += As[threadIdx.y][k] * Bs[k][threadIdx.x];
    }
    // Synchronize to make sure that the preceding computation is done before overwriting the new sub-matrices
    bar.arrive_and_wait();
  }
  int c = wB * BLOCK_SIZE_X * blockIdx.y + BLOCK_SIZE_X * blockIdx.x;
  C[c + wB * threadIdx.y + threadIdx.x] = Csub;
}

// Block-scoped pipeline over shared state: the whole block copies each tile together.
template <int BLOCK_SIZE>
__global__ void MatrixMulAsyncCopyBlockPipeline(float *__restrict__ C, const float *__restrict__ A,
                                                const float *__restrict__ B, int wA, int wB) {
  constexpr int stages = 2;
  __shared__ float As[stages][BLOCK_SIZE][BLOCK_SIZE];
  __shared__ float Bs[stages][BLOCK_SIZE][BLOCK_SIZE];
  __shared__ cuda::pipeline_shared_state<cuda::thread_scope_block, stages> shared_state;
  auto block = cg::this_thread_block();
  auto pipe = cuda::make_pipeline(block, &shared_state);

  const int tiles = wA / BLOCK_SIZE;
  auto issue = [&](int t) {
    pipe.producer_acquire();
    const int s = t % stages;
    for (int row = 0; row < BLOCK_SIZE; ++row) {  // each row is a contiguous run the block shares
      cuda::memcpy_async(block, &As[s][row][0], &A[(blockIdx.y * BLOCK_SIZE + row) * wA + t * BLOCK_SIZE],
                         sizeof(float) * BLOCK_SIZE, pipe);
      cuda::memcpy_async(block, &Bs[s][row][0], &B[(t * BLOCK_SIZE + row) * wB + blockIdx.x * BLOCK_SIZE],
                         sizeof(float) * BLOCK_SIZE, pipe);
    }
    pipe.producer_commit();
  };
  float acc = 0.f;
  for (int t = 0; t < stages - 1 && t < tiles; ++t) issue(t);
  for (int t = 0; t < tiles; ++t) {
    if (t + stages - 1 < tiles) issue(t + stages - 1);
    cuda::pipeline_consumer_wait_prior<stages - 1>(pipe);
    if (t + stages - 1 >= tiles) pipe.consumer_wait();
    const int s = t % stages;
    for (int k = 0; k < BLOCK_SIZE; ++k) acc += As[s][threadIdx.y][k] * Bs[s][k][threadIdx.x];
    pipe.consumer_release();
  }
  C[(blockIdx.y * BLOCK_SIZE + threadIdx.y) * wB + blockIdx.x * BLOCK_SIZE + threadIdx.x] = acc;
}

// The pipeline primitives: double buffering, with zero fill past the ragged edge (any M, N, K).
#define TILE 16
extern "C" __global__ void sgemm_pipeline_primitives(const float* __restrict__ A, const float* __restrict__ B,
                                          float* __restrict__ C, int M, int N, int K) {
  __shared__ float As[2][TILE][TILE];
  __shared__ float Bs[2][TILE][TILE];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int row = blockIdx.y * TILE + ty, col = blockIdx.x * TILE + tx;
  const int tiles = (K + TILE - 1) / TILE;
  auto load = [&](int t, int s) {
    const int ka = t * TILE + tx, kb = t * TILE + ty;
    const bool in_a = row < M && ka < K, in_b = kb < K && col < N;
    // out of range: copy nothing, fill 4 zero bytes (the source must still be a valid address)
    __pipeline_memcpy_async(&As[s][ty][tx], in_a ? &A[row * K + ka] : A, sizeof(float), in_a ? 0 : sizeof(float));
    __pipeline_memcpy_async(&Bs[s][ty][tx], in_b ? &B[kb * N + col] : B, sizeof(float), in_b ? 0 : sizeof(float));
    __pipeline_commit();
  };
  float acc = 0.f;
  load(0, 0);
  for (int t = 0; t < tiles; ++t) {
    if (t + 1 < tiles) {
      load(t + 1, (t + 1) & 1);
      __pipeline_wait_prior(1);
    } else {
      __pipeline_wait_prior(0);
    }
    __syncthreads();
    const int s = t & 1;
#pragma unroll
    for (int k = 0; k < TILE; ++k) acc += As[s][ty][k] * Bs[s][k][tx];
    __syncthreads();
  }
  if (row < M && col < N) C[row * N + col] = acc;
}

// Inline-PTX cp.async as CUTLASS-flavoured repositories write it: macros over a 32-bit shared address.
#define CP_ASYNC_CA(dst, src, bytes) \
  asm volatile("cp.async.ca.shared.global [%0], [%1], %2;\n" ::"r"(dst), "l"(src), "n"(bytes))
#define CP_ASYNC_CG_ZFILL(dst, src, src_bytes)                                                          \
  asm volatile("cp.async.cg.shared.global.L2::128B [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), \
               "r"(src_bytes))
#define CP_ASYNC_COMMIT_GROUP() asm volatile("cp.async.commit_group;\n" ::)
#define CP_ASYNC_WAIT_GROUP(n) asm volatile("cp.async.wait_group %0;\n" ::"n"(n))
#define CP_ASYNC_WAIT_ALL() asm volatile("cp.async.wait_all;\n" ::)

// y[r] = sum_c X[r][c] * w[c]: rows of X staged through shared memory in float4 chunks, two stages deep,
// the ragged end of a row zero-filled by src-size.
template <int THREADS, int CHUNK>
__global__ void gemv_cp_async(const float* __restrict__ X, const float* __restrict__ w, float* __restrict__ y,
                              int rows, int cols) {
  __shared__ __align__(16) float xs[2][CHUNK];
  __shared__ __align__(16) float ws[2][CHUNK];
  __shared__ float partial[THREADS];
  const int r = blockIdx.x;
  const int steps = (cols + CHUNK - 1) / CHUNK;
  auto stage = [&](int step, int s) {
    for (int v = threadIdx.x; v < CHUNK / 4; v += THREADS) {
      const int c = step * CHUNK + v * 4;
      const int valid = cols - c >= 4 ? 4 : (cols - c > 0 ? cols - c : 0);
      const float* gx = valid ? &X[(size_t)r * cols + c] : X;
      const float* gw = valid ? &w[c] : w;
      uint32_t sx = static_cast<uint32_t>(__cvta_generic_to_shared(&xs[s][v * 4]));
      uint32_t sw = static_cast<uint32_t>(__cvta_generic_to_shared(&ws[s][v * 4]));
      if (valid == 4 && (cols % 4) == 0) {
        CP_ASYNC_CG_ZFILL(sx, gx, 16);
        CP_ASYNC_CG_ZFILL(sw, gw, 16);
      } else {  // rows that are not 16-byte aligned: four 4-byte copies
        for (int e = 0; e < 4; ++e) {
          const bool in = e < valid;
          uint32_t dx = sx + 4 * e, dw = sw + 4 * e;
          if (in) {
            CP_ASYNC_CA(dx, gx + e, 4);
            CP_ASYNC_CA(dw, gw + e, 4);
          } else {
            xs[s][v * 4 + e] = 0.f;
            ws[s][v * 4 + e] = 0.f;
          }
        }
      }
    }
    CP_ASYNC_COMMIT_GROUP();
  };
  float acc = 0.f;
  stage(0, 0);
  for (int step = 0; step < steps; ++step) {
    if (step + 1 < steps) {
      stage(step + 1, (step + 1) & 1);
      CP_ASYNC_WAIT_GROUP(1);
    } else {
      CP_ASYNC_WAIT_ALL();
    }
    __syncthreads();
    for (int c = threadIdx.x; c < CHUNK; c += THREADS) acc += xs[step & 1][c] * ws[step & 1][c];
    __syncthreads();
  }
  partial[threadIdx.x] = acc;
  __syncthreads();
  for (int off = THREADS / 2; off > 0; off >>= 1) {
    if (threadIdx.x < off) partial[threadIdx.x] += partial[threadIdx.x + off];
    __syncthreads();
  }
  if (threadIdx.x == 0) y[r] = partial[0];
}

// cooperative_groups::memcpy_async of a whole row into shared memory, then a warp per column block.
template <int THREADS>
__global__ void row_scale_cg_memcpy(const float* __restrict__ x, const float* __restrict__ scale,
                                    float* __restrict__ out, int cols) {
  extern __shared__ float row[];
  auto block = cg::this_thread_block();
  cg::memcpy_async(block, row, x + (size_t)blockIdx.x * cols, sizeof(float) * cols);
  cg::memcpy_async(block, row + cols, scale, sizeof(float) * cols);
  cg::wait(block);
  for (int c = block.thread_rank(); c < cols; c += THREADS)
    out[(size_t)blockIdx.x * cols + c] = row[c] * row[cols + c] + row[cols - 1 - c];
}

// CUTLASS-style copy helpers: zero fill by src-size, a predicated copy, and the ignore-src form.  Each block stages a
// 4 x 32 tile of a pitched matrix (rows of 32 floats, `cols` of them valid) and writes the whole tile back doubled:
// zeros outside the matrix.
template <int SizeInBytes>
__device__ __forceinline__ void cp_async_zfill(void* smem_ptr, const void* global_ptr, int src_in_bytes) {
  unsigned smem_int_ptr = static_cast<unsigned>(__cvta_generic_to_shared(smem_ptr));
  asm volatile("cp.async.cg.shared.global [%0], [%1], %2, %3;\n" ::"r"(smem_int_ptr), "l"(global_ptr),
               "n"(SizeInBytes), "r"(src_in_bytes));
}
template <int SizeInBytes>
__device__ __forceinline__ void cp_async_pred(void* smem_ptr, const void* global_ptr, bool pred_guard) {
  unsigned smem_int_ptr = static_cast<unsigned>(__cvta_generic_to_shared(smem_ptr));
  asm volatile(
      "{\n"
      "  .reg .pred p;\n"
      "  setp.ne.b32 p, %0, 0;\n"
      "  @p cp.async.ca.shared.global [%1], [%2], %3;\n"
      "}\n" ::"r"((int)pred_guard),
      "r"(smem_int_ptr), "l"(global_ptr), "n"(SizeInBytes));
}
__device__ __forceinline__ void cp_async_ignore_src(void* smem_ptr, const void* global_ptr, bool ignore) {
  unsigned smem_int_ptr = static_cast<unsigned>(__cvta_generic_to_shared(smem_ptr));
  asm volatile(
      "{\n"
      "  .reg .pred p;\n"
      "  setp.ne.b32 p, %2, 0;\n"
      "  cp.async.ca.shared.global [%0], [%1], 16, p;\n"
      "}\n" ::"r"(smem_int_ptr), "l"(global_ptr), "r"((int)ignore));
}
extern "C" __global__ void cutlass_style_tile_copy(const float* __restrict__ x, float* __restrict__ out, int rows,
                                                   int cols) {
  __shared__ __align__(16) float tile[4][32];
  const int r = threadIdx.x / 8, c = (threadIdx.x % 8) * 4, row = blockIdx.x * 4 + r;
  const float* src = x + (size_t)(row < rows ? row : 0) * 32 + c;
  const int valid = cols - c >= 4 ? 4 : (cols - c > 0 ? cols - c : 0);
  if (row >= rows) {
    cp_async_ignore_src(&tile[r][c], src, true);  // past the last row: zeros, nothing read
  } else if (valid == 4) {
    cp_async_pred<16>(&tile[r][c], src, true);
  } else {
    cp_async_zfill<16>(&tile[r][c], src, 4 * valid);
  }
  asm volatile("cp.async.commit_group;\n" ::);
  asm volatile("cp.async.wait_group 0;\n" ::);
  __syncthreads();
  for (int k = 0; k < 4; ++k) out[(size_t)row * 32 + c + k] = 2.f * tile[r][c + k];  // (out: whole tiles)
}

// Bugs the checker must catch.
extern "C" __global__ void reads_before_wait(const float* __restrict__ x, float* __restrict__ out) {
  __shared__ float buf[64];
  __pipeline_memcpy_async(&buf[threadIdx.x], &x[threadIdx.x], sizeof(float));
  __pipeline_commit();
  out[threadIdx.x] = buf[threadIdx.x];  // too early: the copy may not have landed
  __pipeline_wait_prior(0);
}
extern "C" __global__ void reads_neighbour_without_barrier(const float* __restrict__ x, float* __restrict__ out) {
  __shared__ float buf[64];
  __pipeline_memcpy_async(&buf[threadIdx.x], &x[threadIdx.x], sizeof(float));
  __pipeline_commit();
  __pipeline_wait_prior(0);
  out[threadIdx.x] = buf[(threadIdx.x + 1) % 64];  // the neighbour's copy: needs a __syncthreads() first
}
extern "C" __global__ void cg_reads_before_wait(const float* __restrict__ x, float* __restrict__ out) {
  __shared__ float buf[64];
  auto block = cg::this_thread_block();
  cg::memcpy_async(block, buf, x, sizeof(float) * 64);
  out[threadIdx.x] = buf[threadIdx.x];
  cg::wait(block);
}
extern "C" __global__ void misaligned_cp_async(const float* __restrict__ x, float* __restrict__ out) {
  __shared__ __align__(16) float buf[64];
  __pipeline_memcpy_async(&buf[threadIdx.x * 4 + 1], &x[threadIdx.x * 4], 16);
  __pipeline_commit();
  __pipeline_wait_prior(0);
  out[threadIdx.x] = buf[1];
}
extern "C" __global__ void barrier_without_init(float* out) {
  __shared__ cuda::barrier<cuda::thread_scope_block> bar;
  bar.arrive_and_wait();
  out[threadIdx.x] = 1.f;
}
extern "C" __global__ void exits_with_copies_in_flight(const float* __restrict__ x, float* __restrict__ out) {
  __shared__ float buf[32];
  __pipeline_memcpy_async(&buf[threadIdx.x], &x[threadIdx.x], sizeof(float));
  __pipeline_commit();  // never waited for: the copy still lands (into this block's shared memory)
  out[threadIdx.x] = 1.f;
}
