// Kernels written the way popular public CUDA code writes them, run unedited on the emulator (round 8).
#include <cooperative_groups.h>
#include <cub/cub.cuh>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

namespace cg = cooperative_groups;
#define WARP_SIZE 32
#define CEIL_DIV(M, N) (((M) + (N)-1) / (N))

// ---- flash-attention-minimal style forward (one thread per query row, K/V tiles in shared memory) --------------
extern "C" __global__ void forward_kernel(const float* Q, const float* K, const float* V, const int N, const int d,
                                          const int Tc, const int Tr, const int Bc, const int Br,
                                          const float softmax_scale, float* l, float* m, float* O) {
    int tx = threadIdx.x;
    int bx = blockIdx.x; int by = blockIdx.y;  // batch and head index

    // Offset into Q,K,V,O,l,m - different for each batch and head
    int qkv_offset = (bx * gridDim.y * N * d) + (by * N * d);  // gridDim.y = nh
    int lm_offset = (bx * gridDim.y * N) + (by * N);  // offset for l and m

    // Define SRAM for Q,K,V,S
    extern __shared__ float sram[];
    int tile_size = Bc * d;  // size of Qi, Kj, Vj
    float* Qi = sram;
    float* Kj = &sram[tile_size];
    float* Vj = &sram[tile_size * 2];
    float* S = &sram[tile_size * 3];

    for (int j = 0; j < Tc; j++) {
        const int kv_rows = min(Bc, N - j * Bc);  // the last tile may be short
        // Load Kj, Vj to SRAM
        if (tx < kv_rows) {
            for (int x = 0; x < d; x++) {
                Kj[(tx * d) + x] = K[qkv_offset + (tile_size * j) + (tx * d) + x];
                Vj[(tx * d) + x] = V[qkv_offset + (tile_size * j) + (tx * d) + x];
            }
        }
        __syncthreads();  // such that the inner loop can use the correct Kj, Vj

        for (int i = 0; i < Tr; i++) {
            if (i * Br + tx >= N) break;
            // Load Qi to SRAM, l and m to registers
            for (int x = 0; x < d; x++) {
                Qi[(tx * d) + x] = Q[qkv_offset + (tile_size * i) + (tx * d) + x];
            }
            float row_m_prev = m[lm_offset + (Br * i) + tx];
            float row_l_prev = l[lm_offset + (Br * i) + tx];

            // S = QK^T, row_m = rowmax(S)
            float row_m = -INFINITY;
            for (int y = 0; y < kv_rows; y++) {
                float sum = 0;
                for (int x = 0; x < d; x++) {
                    sum += Qi[(tx * d) + x] * Kj[(y * d) + x];
                }
                sum *= softmax_scale;
                S[(Bc * tx) + y] = sum;

                if (sum > row_m)
                    row_m = sum;
            }

            // P = exp(S - row_m), row_l = rowsum(P)
            float row_l = 0;
            for (int y = 0; y < kv_rows; y++) {
                S[(Bc * tx) + y] = __expf(S[(Bc * tx) + y] - row_m);
                row_l += S[(Bc * tx) + y];
            }

            // Compute new m and l
            float row_m_new = max(row_m_prev, row_m);
            float row_l_new = (__expf(row_m_prev - row_m_new) * row_l_prev) + (__expf(row_m - row_m_new) * row_l);

            // Write O, l, m to HBM
            for (int x = 0; x < d; x++) {
                float pv = 0;  // Pij * Vj
                for (int y = 0; y < kv_rows; y++) {
                    pv += S[(Bc * tx) + y] * Vj[(y * d) + x];
                }
                O[qkv_offset + (tile_size * i) + (tx * d) + x] = (1 / row_l_new) \
                    * ((row_l_prev * __expf(row_m_prev - row_m_new) * O[qkv_offset + (tile_size * i) + (tx * d) + x]) \
                    + (__expf(row_m - row_m_new) * pv));
            }
            m[lm_offset + (Br * i) + tx] = row_m_new;
            l[lm_offset + (Br * i) + tx] = row_l_new;
        }
        __syncthreads();  // otherwise, thread can use the wrong Kj, Vj in inner loop
    }
}

// ---- siboehm-style SGEMM: block tile, warp tile, thread tile, vectorized float4 loads -------------------------
// (ragged M and N, K a multiple of 4: the float4 loads zero-fill outside the matrices)
template <const int BM, const int BN, const int BK, const int WM, const int WN, const int WNITER, const int TM,
          const int TN, const int NUM_THREADS>
__global__ void __launch_bounds__(NUM_THREADS)
    sgemmWarptiling(int M, int N, int K, float alpha, float *A, float *B, float beta, float *C) {
  const uint cRow = blockIdx.y;
  const uint cCol = blockIdx.x;

  // Placement of the warp in the threadblock tile
  const uint warpIdx = threadIdx.x / WARP_SIZE;  // the warp this thread is in
  const uint warpCol = warpIdx % (BN / WN);
  const uint warpRow = warpIdx / (BN / WN);

  // size of the warp subtile
  constexpr uint WMITER = (WM * WN) / (WARP_SIZE * TM * TN * WNITER);
  constexpr uint WSUBM = WM / WMITER;
  constexpr uint WSUBN = WN / WNITER;

  // Placement of the thread in the warp subtile
  const uint threadIdxInWarp = threadIdx.x % WARP_SIZE;
  const uint threadColInWarp = threadIdxInWarp % (WSUBN / TN);
  const uint threadRowInWarp = threadIdxInWarp / (WSUBN / TN);

  // allocate space for the current blocktile in SMEM
  __shared__ float As[BM * BK];
  __shared__ float Bs[BK * BN];

  // calculating the indices that this thread will load into SMEM
  const uint innerRowA = threadIdx.x / (BK / 4);
  const uint innerColA = threadIdx.x % (BK / 4);
  constexpr uint rowStrideA = (NUM_THREADS * 4) / BK;
  const uint innerRowB = threadIdx.x / (BN / 4);
  const uint innerColB = threadIdx.x % (BN / 4);
  constexpr uint rowStrideB = NUM_THREADS / (BN / 4);

  // allocate thread-local cache for results in registerfile
  float threadResults[WMITER * TM * WNITER * TN] = {0.0};
  float regM[WMITER * TM] = {0.0};
  float regN[WNITER * TN] = {0.0};

  for (uint bkIdx = 0; bkIdx < K; bkIdx += BK) {
    for (uint offset = 0; offset + rowStrideA <= BM; offset += rowStrideA) {
      const uint row = cRow * BM + innerRowA + offset, col = bkIdx + innerColA * 4;
      float4 tmp = make_float4(0.f, 0.f, 0.f, 0.f);
      if (row < M && col < K) tmp = reinterpret_cast<const float4 *>(&A[row * K + col])[0];
      // transpose A while storing it
      As[(innerColA * 4 + 0) * BM + innerRowA + offset] = tmp.x;
      As[(innerColA * 4 + 1) * BM + innerRowA + offset] = tmp.y;
      As[(innerColA * 4 + 2) * BM + innerRowA + offset] = tmp.z;
      As[(innerColA * 4 + 3) * BM + innerRowA + offset] = tmp.w;
    }
    for (uint offset = 0; offset + rowStrideB <= BK; offset += rowStrideB) {
      const uint row = bkIdx + innerRowB + offset, col = cCol * BN + innerColB * 4;
      float4 tmp = make_float4(0.f, 0.f, 0.f, 0.f);
      if (row < K && col < N) tmp = reinterpret_cast<const float4 *>(&B[row * N + col])[0];
      reinterpret_cast<float4 *>(&Bs[(innerRowB + offset) * BN + innerColB * 4])[0] = tmp;
    }
    __syncthreads();

    for (uint dotIdx = 0; dotIdx < BK; ++dotIdx) {
      // populate registers for whole warptile
      for (uint wSubRowIdx = 0; wSubRowIdx < WMITER; ++wSubRowIdx) {
        for (uint i = 0; i < TM; ++i) {
          regM[wSubRowIdx * TM + i] =
              As[(dotIdx * BM) + warpRow * WM + wSubRowIdx * WSUBM + threadRowInWarp * TM + i];
        }
      }
      for (uint wSubColIdx = 0; wSubColIdx < WNITER; ++wSubColIdx) {
        for (uint i = 0; i < TN; ++i) {
          regN[wSubColIdx * TN + i] =
              Bs[(dotIdx * BN) + warpCol * WN + wSubColIdx * WSUBN + threadColInWarp * TN + i];
        }
      }
      // execute warptile matmul
      for (uint wSubRowIdx = 0; wSubRowIdx < WMITER; ++wSubRowIdx) {
        for (uint wSubColIdx = 0; wSubColIdx < WNITER; ++wSubColIdx) {
          // calculate per-thread results
          for (uint resIdxM = 0; resIdxM < TM; ++resIdxM) {
            for (uint resIdxN = 0; resIdxN < TN; ++resIdxN) {
              threadResults[(wSubRowIdx * TM + resIdxM) * (WNITER * TN) + (wSubColIdx * TN) + resIdxN] +=
                  regM[wSubRowIdx * TM + resIdxM] * regN[wSubColIdx * TN + resIdxN];
            }
          }
        }
      }
    }
    __syncthreads();
  }

  // write out the results
  for (uint wSubRowIdx = 0; wSubRowIdx < WMITER; ++wSubRowIdx) {
    for (uint wSubColIdx = 0; wSubColIdx < WNITER; ++wSubColIdx) {
      for (uint resIdxM = 0; resIdxM < TM; resIdxM += 1) {
        const uint row = cRow * BM + warpRow * WM + wSubRowIdx * WSUBM + threadRowInWarp * TM + resIdxM;
        const uint col = cCol * BN + warpCol * WN + wSubColIdx * WSUBN + threadColInWarp * TN;
        if (row >= M || col >= N) continue;
        for (uint resIdxN = 0; resIdxN < TN; resIdxN += 4) {
          // load C vector into registers
          float4 tmp = reinterpret_cast<float4 *>(&C[row * N + col + resIdxN])[0];
          // perform GEMM update in reg
          const int i = (wSubRowIdx * TM + resIdxM) * (WNITER * TN) + wSubColIdx * TN + resIdxN;
          tmp.x = alpha * threadResults[i + 0] + beta * tmp.x;
          tmp.y = alpha * threadResults[i + 1] + beta * tmp.y;
          tmp.z = alpha * threadResults[i + 2] + beta * tmp.z;
          tmp.w = alpha * threadResults[i + 3] + beta * tmp.w;
          // write back
          reinterpret_cast<float4 *>(&C[row * N + col + resIdxN])[0] = tmp;
        }
      }
    }
  }
}

// ---- llama.cpp-style norms and softmax: warp reductions, templates on the block size ---------------------------
static __device__ __forceinline__ float warp_reduce_sum(float x) {
#pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1) {
        x += __shfl_xor_sync(0xffffffff, x, offset, 32);
    }
    return x;
}

static __device__ __forceinline__ float warp_reduce_max(float x) {
#pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1) {
        x = fmaxf(x, __shfl_xor_sync(0xffffffff, x, offset, 32));
    }
    return x;
}

template <int block_size>
static __global__ void rms_norm_f32(const float * x, float * dst, const int ncols, const float eps) {
    const int row = blockIdx.x*blockDim.y + threadIdx.y;
    const int tid = threadIdx.x;

    float tmp = 0.0f; // partial sum for thread in warp

    for (int col = tid; col < ncols; col += block_size) {
        const float xi = x[row*ncols + col];
        tmp += xi * xi;
    }

    // sum up partial sums
    tmp = warp_reduce_sum(tmp);
    if (block_size > WARP_SIZE) {
        __shared__ float s_sum[32];
        int warp_id = threadIdx.x / WARP_SIZE;
        int lane_id = threadIdx.x % WARP_SIZE;
        if (lane_id == 0) {
            s_sum[warp_id] = tmp;
        }
        __syncthreads();
        tmp = s_sum[lane_id];
        tmp = warp_reduce_sum(tmp);
    }

    const float mean = tmp / ncols;
    const float scale = rsqrtf(mean + eps);

    for (int col = tid; col < ncols; col += block_size) {
        dst[row*ncols + col] = scale * x[row*ncols + col];
    }
}

template <bool vals_smem, int ncols_template, int block_size_template>
static __global__ void soft_max_f32(const float * x, const float * mask, float * dst, const int ncols_par,
                                    const int nrows_y, const float scale) {
    const int ncols = ncols_template == 0 ? ncols_par : ncols_template;

    const int tid  = threadIdx.x;
    const int rowx = blockIdx.x;
    const int rowy = rowx % nrows_y; // broadcast the mask in the row dimension

    const int block_size = block_size_template == 0 ? blockDim.x : block_size_template;

    const int warp_id = threadIdx.x / WARP_SIZE;
    const int lane_id = threadIdx.x % WARP_SIZE;

    extern __shared__ float data_soft_max_f32[];
    float * buf_iw = data_soft_max_f32; // shared memory buffer for inter-warp communication
    // shared memory buffer to cache values between iterations:
    float * vals = vals_smem ? buf_iw + WARP_SIZE : dst + (int64_t)rowx*ncols;

    float max_val = -INFINITY;

#pragma unroll
    for (int col0 = 0; col0 < ncols; col0 += block_size) {
        const int col = col0 + tid;

        if (ncols_template == 0 && col >= ncols) {
            break;
        }

        const int64_t ix = (int64_t)rowx*ncols + col;
        const int64_t iy = (int64_t)rowy*ncols + col;

        const float val = x[ix]*scale + (mask ? mask[iy] : 0.0f);

        vals[col] = val;
        max_val = max(max_val, val);
    }

    // find the max value in the block
    max_val = warp_reduce_max(max_val);
    if (block_size > WARP_SIZE) {
        if (warp_id == 0) {
            buf_iw[lane_id] = -INFINITY;
        }
        __syncthreads();

        if (lane_id == 0) {
            buf_iw[warp_id] = max_val;
        }
        __syncthreads();

        max_val = buf_iw[lane_id];
        max_val = warp_reduce_max(max_val);
    }

    float tmp = 0.0f; // partial sum

#pragma unroll
    for (int col0 = 0; col0 < ncols; col0 += block_size) {
        const int col = col0 + tid;

        if (ncols_template == 0 && col >= ncols) {
            break;
        }

        const float val = expf(vals[col] - max_val);
        tmp += val;
        vals[col] = val;
    }

    // find the sum of exps in the block
    tmp = warp_reduce_sum(tmp);
    if (block_size > WARP_SIZE) {
        __syncthreads();
        if (warp_id == 0) {
            buf_iw[lane_id] = 0.0f;
        }
        __syncthreads();

        if (lane_id == 0) {
            buf_iw[warp_id] = tmp;
        }
        __syncthreads();

        tmp = buf_iw[lane_id];
        tmp = warp_reduce_sum(tmp);
    }

    const float inv_sum = 1.0f / tmp;

#pragma unroll
    for (int col0 = 0; col0 < ncols; col0 += block_size) {
        const int col = col0 + tid;

        if (ncols_template == 0 && col >= ncols) {
            return;
        }

        const int64_t idst = (int64_t)rowx*ncols + col;
        dst[idst] = vals[col] * inv_sum;
    }
}

// ---- CUB: BlockLoad / BlockRadixSort / BlockStore, BlockExchange + BlockScan ----------------------------------
// Each block sorts its tile of (key, original index) pairs; the last tile is partial (padded with +inf keys).
template <int BLOCK_THREADS, int ITEMS_PER_THREAD>
__global__ void block_sort_pairs(const float* __restrict__ keys_in, float* __restrict__ keys_out,
                                 int* __restrict__ index_out, int n) {
    using BlockLoadT = cub::BlockLoad<float, BLOCK_THREADS, ITEMS_PER_THREAD, cub::BLOCK_LOAD_WARP_TRANSPOSE>;
    using BlockRadixSortT = cub::BlockRadixSort<float, BLOCK_THREADS, ITEMS_PER_THREAD, int>;
    using BlockStoreKeys = cub::BlockStore<float, BLOCK_THREADS, ITEMS_PER_THREAD, cub::BLOCK_STORE_WARP_TRANSPOSE>;
    using BlockStoreIdx = cub::BlockStore<int, BLOCK_THREADS, ITEMS_PER_THREAD, cub::BLOCK_STORE_WARP_TRANSPOSE>;
    __shared__ union TempStorage {
        typename BlockLoadT::TempStorage load;
        typename BlockRadixSortT::TempStorage sort;
        typename BlockStoreKeys::TempStorage store_keys;
        typename BlockStoreIdx::TempStorage store_idx;
    } temp_storage;

    constexpr int TILE = BLOCK_THREADS * ITEMS_PER_THREAD;
    const int block_offset = blockIdx.x * TILE;
    const int valid = min(TILE, n - block_offset);

    float keys[ITEMS_PER_THREAD];
    int idx[ITEMS_PER_THREAD];
    BlockLoadT(temp_storage.load).Load(keys_in + block_offset, keys, valid, INFINITY);
    for (int i = 0; i < ITEMS_PER_THREAD; ++i) idx[i] = block_offset + threadIdx.x * ITEMS_PER_THREAD + i;
    __syncthreads();
    BlockRadixSortT(temp_storage.sort).Sort(keys, idx);
    __syncthreads();
    BlockStoreKeys(temp_storage.store_keys).Store(keys_out + block_offset, keys, valid);
    __syncthreads();
    BlockStoreIdx(temp_storage.store_idx).Store(index_out + block_offset, idx, valid);
}

// Descending by the low `bits` bits of signed keys, striped result (SortDescendingBlockedToStriped).
template <int BLOCK_THREADS, int ITEMS_PER_THREAD>
__global__ void block_sort_desc_bits(const int* __restrict__ keys_in, int* __restrict__ keys_out, int bits) {
    typedef cub::BlockRadixSort<int, BLOCK_THREADS, ITEMS_PER_THREAD> BlockRadixSort;
    __shared__ typename BlockRadixSort::TempStorage temp_storage;
    int thread_keys[ITEMS_PER_THREAD];
    cub::LoadDirectBlocked(threadIdx.x, keys_in + blockIdx.x * BLOCK_THREADS * ITEMS_PER_THREAD, thread_keys);
    BlockRadixSort(temp_storage).SortDescendingBlockedToStriped(thread_keys, 0, bits);
    cub::StoreDirectStriped<BLOCK_THREADS>(threadIdx.x, keys_out + blockIdx.x * BLOCK_THREADS * ITEMS_PER_THREAD,
                                           thread_keys);
}

// Inclusive prefix sum of a ragged array: striped loads (coalesced), exchanged to blocked, scanned.
template <int BLOCK_THREADS, int ITEMS_PER_THREAD>
__global__ void block_prefix_sum(const int* __restrict__ in, int* __restrict__ out, int n) {
    typedef cub::BlockExchange<int, BLOCK_THREADS, ITEMS_PER_THREAD> BlockExchangeT;
    typedef cub::BlockScan<int, BLOCK_THREADS> BlockScanT;
    __shared__ union {
        typename BlockExchangeT::TempStorage exchange;
        typename BlockScanT::TempStorage scan;
    } temp;
    int items[ITEMS_PER_THREAD];
    cub::CacheModifiedInputIterator<cub::LOAD_LDG, int> in_itr(in);
    cub::LoadDirectStriped<BLOCK_THREADS>(threadIdx.x, in_itr, items, n, 0);
    BlockExchangeT(temp.exchange).StripedToBlocked(items);
    __syncthreads();
    BlockScanT(temp.scan).InclusiveSum(items, items);
    cub::StoreDirectBlocked(threadIdx.x, out, items, n);
}

// ---- 16-bit pairs: __hfma2 on half2, bf16 pairs through float2 ------------------------------------------------
// out = a * x + y over n halves (an odd n leaves one scalar at the end).
extern "C" __global__ void haxpy_half2(int n, __half a, const __half* x, __half* y) {
    const int pairs = n / 2;
    const __half2 a2 = __half2half2(a);
    const __half2* x2 = reinterpret_cast<const __half2*>(x);
    __half2* y2 = reinterpret_cast<__half2*>(y);
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < pairs; i += blockDim.x * gridDim.x)
        y2[i] = __hfma2(a2, x2[i], y2[i]);
    if (blockIdx.x == 0 && threadIdx.x == 0 && (n & 1)) y[n - 1] = __hfma(a, x[n - 1], y[n - 1]);
}

// SwiGLU gate in bf16 pairs: out = silu(g) * u, the silu in float, one rounding per step.
extern "C" __global__ void swiglu_bf16x2(const __nv_bfloat162* __restrict__ gate, const __nv_bfloat162* __restrict__ up,
                                         __nv_bfloat162* __restrict__ out, int pairs) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= pairs) return;
    const float2 g = __bfloat1622float2(gate[i]);
    const float2 s = make_float2(g.x / (1.0f + __expf(-g.x)), g.y / (1.0f + __expf(-g.y)));
    out[i] = __hmul2(__float22bfloat162_rn(s), up[i]);
}

// ---- histogram with shared-memory atomics (privatised per block, merged with global atomics) -------------------
extern "C" __global__ void histogram_smem_atomics(const unsigned char* __restrict__ in, int n,
                                                  unsigned int* __restrict__ out, int nbins) {
    extern __shared__ unsigned int smem[];
    for (int i = threadIdx.x; i < nbins; i += blockDim.x) smem[i] = 0;
    __syncthreads();
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += blockDim.x * gridDim.x)
        atomicAdd(&smem[in[i] % nbins], 1);
    __syncthreads();
    for (int i = threadIdx.x; i < nbins; i += blockDim.x) atomicAdd(&out[i], smem[i]);
}

// ---- transpose through a padded tile (no bank conflicts), ragged edges -----------------------------------------
const int TILE_DIM = 32;
const int BLOCK_ROWS = 8;

extern "C" __global__ void transposeNoBankConflicts(float* odata, const float* idata, int width, int height) {
    __shared__ float tile[TILE_DIM][TILE_DIM + 1];

    int x = blockIdx.x * TILE_DIM + threadIdx.x;
    int y = blockIdx.y * TILE_DIM + threadIdx.y;

    for (int j = 0; j < TILE_DIM; j += BLOCK_ROWS)
        if (x < width && y + j < height) tile[threadIdx.y + j][threadIdx.x] = idata[(y + j) * width + x];

    __syncthreads();

    x = blockIdx.y * TILE_DIM + threadIdx.x;  // transpose block offset
    y = blockIdx.x * TILE_DIM + threadIdx.y;

    for (int j = 0; j < TILE_DIM; j += BLOCK_ROWS)
        if (x < height && y + j < width) odata[(y + j) * height + x] = tile[threadIdx.x][threadIdx.y + j];
}

// ---- grid-stride loops around a grid-wide barrier (cooperative launch) -----------------------------------------
extern "C" __global__ void grid_rms_normalize(const float* __restrict__ x, float* __restrict__ y,
                                              float* __restrict__ partial, int n) {
    cg::grid_group grid = cg::this_grid();
    cg::thread_block block = cg::this_thread_block();
    __shared__ float warp_sums[32];
    float acc = 0.f;
    for (unsigned long long i = grid.thread_rank(); i < (unsigned long long)n; i += grid.size()) acc += x[i] * x[i];
    acc = warp_reduce_sum(acc);
    if (block.thread_rank() % 32 == 0) warp_sums[block.thread_rank() / 32] = acc;
    block.sync();
    if (block.thread_rank() == 0) {
        float s = 0.f;
        for (int w = 0; w < (int)(block.size() + 31) / 32; ++w) s += warp_sums[w];
        partial[blockIdx.x] = s;
    }
    grid.sync();
    float total = 0.f;
    for (int b = 0; b < (int)gridDim.x; ++b) total += partial[b];
    const float inv = rsqrtf(total / n + 1e-6f);
    for (unsigned long long i = grid.thread_rank(); i < (unsigned long long)n; i += grid.size()) y[i] = x[i] * inv;
}
