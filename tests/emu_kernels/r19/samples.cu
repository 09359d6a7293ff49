// Round 19: kernels in the styles of NVIDIA's CUDA samples (reduction, scan, histogram, transpose, matrixMul,
// sortingNetworks) and GPU Gems 3's scan chapter, written for this test as their authors write them.
#include <cooperative_groups.h>
namespace cg = cooperative_groups;

// ------------------------------------------------------------------------------------------- reduction
// The samples' trick for dynamic shared memory in a template: an extern __shared__ array of one type,
// cast to T, with a specialization for double (alignment).
template <class T>
struct SharedMemory {
  __device__ inline operator T *() {
    extern __shared__ int __smem[];
    return (T *)__smem;
  }
  __device__ inline operator const T *() const {
    extern __shared__ int __smem[];
    return (T *)__smem;
  }
};

template <>
struct SharedMemory<double> {
  __device__ inline operator double *() {
    extern __shared__ double __smem_d[];
    return (double *)__smem_d;
  }
  __device__ inline operator const double *() const {
    extern __shared__ double __smem_d[];
    return (double *)__smem_d;
  }
};

// reduce0: interleaved addressing, divergent branch (tid % (2*s))
template <class T>
__global__ void reduce0(T *g_idata, T *g_odata, unsigned int n) {
  T *sdata = SharedMemory<T>();
  unsigned int tid = threadIdx.x;
  unsigned int i = blockIdx.x * blockDim.x + threadIdx.x;
  sdata[tid] = (i < n) ? g_idata[i] : 0;
  __syncthreads();
  for (unsigned int s = 1; s < blockDim.x; s *= 2) {
    if ((tid % (2 * s)) == 0) sdata[tid] += sdata[tid + s];
    __syncthreads();
  }
  if (tid == 0) g_odata[blockIdx.x] = sdata[0];
}

// reduce1: interleaved addressing with a strided index, no divergence, bank conflicts
template <class T>
__global__ void reduce1(T *g_idata, T *g_odata, unsigned int n) {
  T *sdata = SharedMemory<T>();
  unsigned int tid = threadIdx.x;
  unsigned int i = blockIdx.x * blockDim.x + threadIdx.x;
  sdata[tid] = (i < n) ? g_idata[i] : 0;
  __syncthreads();
  for (unsigned int s = 1; s < blockDim.x; s *= 2) {
    int index = 2 * s * tid;
    if (index < blockDim.x) sdata[index] += sdata[index + s];
    __syncthreads();
  }
  if (tid == 0) g_odata[blockIdx.x] = sdata[0];
}

// reduce2: sequential addressing
template <class T>
__global__ void reduce2(T *g_idata, T *g_odata, unsigned int n) {
  T *sdata = SharedMemory<T>();
  unsigned int tid = threadIdx.x;
  unsigned int i = blockIdx.x * blockDim.x + threadIdx.x;
  sdata[tid] = (i < n) ? g_idata[i] : 0;
  __syncthreads();
  for (unsigned int s = blockDim.x / 2; s > 0; s >>= 1) {
    if (tid < s) sdata[tid] += sdata[tid + s];
    __syncthreads();
  }
  if (tid == 0) g_odata[blockIdx.x] = sdata[0];
}

// reduce3: the first add during the global load (half the blocks)
template <class T>
__global__ void reduce3(T *g_idata, T *g_odata, unsigned int n) {
  T *sdata = SharedMemory<T>();
  unsigned int tid = threadIdx.x;
  unsigned int i = blockIdx.x * (blockDim.x * 2) + threadIdx.x;
  T mySum = (i < n) ? g_idata[i] : 0;
  if (i + blockDim.x < n) mySum += g_idata[i + blockDim.x];
  sdata[tid] = mySum;
  __syncthreads();
  for (unsigned int s = blockDim.x / 2; s > 0; s >>= 1) {
    if (tid < s) sdata[tid] = mySum = mySum + sdata[tid + s];
    __syncthreads();
  }
  if (tid == 0) g_odata[blockIdx.x] = mySum;
}

// reduce4 (the classic one): the last warp unrolled, warp-synchronous, through volatile shared memory
template <class T, unsigned int blockSize>
__device__ void warpReduce(volatile T *sdata, unsigned int tid) {
  if (blockSize >= 64) sdata[tid] += sdata[tid + 32];
  if (blockSize >= 32) sdata[tid] += sdata[tid + 16];
  if (blockSize >= 16) sdata[tid] += sdata[tid + 8];
  if (blockSize >= 8) sdata[tid] += sdata[tid + 4];
  if (blockSize >= 4) sdata[tid] += sdata[tid + 2];
  if (blockSize >= 2) sdata[tid] += sdata[tid + 1];
}

template <class T, unsigned int blockSize>
__global__ void reduce4(T *g_idata, T *g_odata, unsigned int n) {
  T *sdata = SharedMemory<T>();
  unsigned int tid = threadIdx.x;
  unsigned int i = blockIdx.x * (blockSize * 2) + threadIdx.x;
  T mySum = (i < n) ? g_idata[i] : 0;
  if (i + blockSize < n) mySum += g_idata[i + blockSize];
  sdata[tid] = mySum;
  __syncthreads();
  for (unsigned int s = blockDim.x / 2; s > 32; s >>= 1) {
    if (tid < s) sdata[tid] = mySum = mySum + sdata[tid + s];
    __syncthreads();
  }
  if (tid < 32) warpReduce<T, blockSize>(sdata, tid);
  if (tid == 0) g_odata[blockIdx.x] = sdata[0];
}

// reduce5: completely unrolled (blockSize a template parameter), the last warp by __shfl_down_sync
template <class T, unsigned int blockSize>
__global__ void reduce5(T *g_idata, T *g_odata, unsigned int n) {
  T *sdata = SharedMemory<T>();
  unsigned int tid = threadIdx.x;
  unsigned int i = blockIdx.x * (blockSize * 2) + threadIdx.x;
  T mySum = (i < n) ? g_idata[i] : 0;
  if (i + blockSize < n) mySum += g_idata[i + blockSize];
  sdata[tid] = mySum;
  __syncthreads();
  if ((blockSize >= 512) && (tid < 256)) sdata[tid] = mySum = mySum + sdata[tid + 256];
  __syncthreads();
  if ((blockSize >= 256) && (tid < 128)) sdata[tid] = mySum = mySum + sdata[tid + 128];
  __syncthreads();
  if ((blockSize >= 128) && (tid < 64)) sdata[tid] = mySum = mySum + sdata[tid + 64];
  __syncthreads();
  if (tid < 32) {
    if (blockSize >= 64) mySum += sdata[tid + 32];
    for (int offset = 32 / 2; offset > 0; offset /= 2) mySum += __shfl_down_sync(0xffffffff, mySum, offset);
  }
  if (tid == 0) g_odata[blockIdx.x] = mySum;
}

// reduce6: many elements per thread (grid-stride), nIsPow2 specialising the loop, cooperative groups tiles
template <class T, unsigned int blockSize, bool nIsPow2>
__global__ void reduce6(T *g_idata, T *g_odata, unsigned int n) {
  cg::thread_block cta = cg::this_thread_block();
  T *sdata = SharedMemory<T>();
  unsigned int tid = threadIdx.x;
  unsigned int gridSize = blockSize * gridDim.x;
  T mySum = 0;
  if (nIsPow2) {
    unsigned int i = blockIdx.x * blockSize * 2 + threadIdx.x;
    gridSize = gridSize << 1;
    while (i < n) {
      mySum += g_idata[i];
      if ((i + blockSize) < n) mySum += g_idata[i + blockSize];
      i += gridSize;
    }
  } else {
    unsigned int i = blockIdx.x * blockSize + threadIdx.x;
    while (i < n) {
      mySum += g_idata[i];
      i += gridSize;
    }
  }
  sdata[tid] = mySum;
  cg::sync(cta);
  if ((blockSize >= 512) && (tid < 256)) sdata[tid] = mySum = mySum + sdata[tid + 256];
  cg::sync(cta);
  if ((blockSize >= 256) && (tid < 128)) sdata[tid] = mySum = mySum + sdata[tid + 128];
  cg::sync(cta);
  if ((blockSize >= 128) && (tid < 64)) sdata[tid] = mySum = mySum + sdata[tid + 64];
  cg::sync(cta);
  cg::thread_block_tile<32> tile32 = cg::tiled_partition<32>(cta);
  if (cta.thread_rank() < 32) {
    if (blockSize >= 64) mySum += sdata[tid + 32];
    for (int offset = tile32.size() / 2; offset > 0; offset /= 2) mySum += tile32.shfl_down(mySum, offset);
  }
  if (cta.thread_rank() == 0) g_odata[blockIdx.x] = mySum;
}

// ------------------------------------------------------------------------------------------- scan
// GPU Gems 3, ch. 39: a work-efficient (Blelloch) exclusive scan of 2 * blockDim.x elements per block,
// with the bank-conflict-avoiding padding; the block sums are scanned and added by two more launches.
#define NUM_BANKS 32
#define LOG_NUM_BANKS 5
#define CONFLICT_FREE_OFFSET(n) ((n) >> LOG_NUM_BANKS)

extern "C" __global__ void prescan(float *g_odata, const float *g_idata, float *g_sums, int n) {
  extern __shared__ float temp[];
  int thid = threadIdx.x;
  int m = 2 * blockDim.x;
  int base = blockIdx.x * m;
  int offset = 1;
  int ai = thid;
  int bi = thid + (m / 2);
  int bankOffsetA = CONFLICT_FREE_OFFSET(ai);
  int bankOffsetB = CONFLICT_FREE_OFFSET(bi);
  temp[ai + bankOffsetA] = (base + ai < n) ? g_idata[base + ai] : 0.0f;
  temp[bi + bankOffsetB] = (base + bi < n) ? g_idata[base + bi] : 0.0f;
  for (int d = m >> 1; d > 0; d >>= 1) {  // up-sweep
    __syncthreads();
    if (thid < d) {
      int a = offset * (2 * thid + 1) - 1;
      int b = offset * (2 * thid + 2) - 1;
      a += CONFLICT_FREE_OFFSET(a);
      b += CONFLICT_FREE_OFFSET(b);
      temp[b] += temp[a];
    }
    offset *= 2;
  }
  if (thid == 0) {
    int last = m - 1 + CONFLICT_FREE_OFFSET(m - 1);
    if (g_sums) g_sums[blockIdx.x] = temp[last];
    temp[last] = 0;
  }
  for (int d = 1; d < m; d *= 2) {  // down-sweep
    offset >>= 1;
    __syncthreads();
    if (thid < d) {
      int a = offset * (2 * thid + 1) - 1;
      int b = offset * (2 * thid + 2) - 1;
      a += CONFLICT_FREE_OFFSET(a);
      b += CONFLICT_FREE_OFFSET(b);
      float t = temp[a];
      temp[a] = temp[b];
      temp[b] += t;
    }
  }
  __syncthreads();
  if (base + ai < n) g_odata[base + ai] = temp[ai + bankOffsetA];
  if (base + bi < n) g_odata[base + bi] = temp[bi + bankOffsetB];
}

extern "C" __global__ void add_block_sums(float *g_data, const float *g_incr, int n) {
  int i = blockIdx.x * 2 * blockDim.x + threadIdx.x;
  float add = g_incr[blockIdx.x];
  if (i < n) g_data[i] += add;
  if (i + blockDim.x < n) g_data[i + blockDim.x] += add;
}

// ------------------------------------------------------------------------------------------- histogram
#define HIST_BINS 256
extern "C" __global__ void histogram256_shared(const unsigned char *data, unsigned int *hist, int n) {
  __shared__ unsigned int s_hist[HIST_BINS];
  for (int b = threadIdx.x; b < HIST_BINS; b += blockDim.x) s_hist[b] = 0;
  __syncthreads();
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += blockDim.x * gridDim.x)
    atomicAdd(&s_hist[data[i]], 1u);
  __syncthreads();
  for (int b = threadIdx.x; b < HIST_BINS; b += blockDim.x)
    if (s_hist[b]) atomicAdd(&hist[b], s_hist[b]);
}

// packed words, four bytes a load, as histogram64's uchar4 path
extern "C" __global__ void histogram256_words(const unsigned int *words, unsigned int *hist, int nwords) {
  __shared__ unsigned int s_hist[HIST_BINS];
  for (int b = threadIdx.x; b < HIST_BINS; b += blockDim.x) s_hist[b] = 0;
  __syncthreads();
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < nwords; i += blockDim.x * gridDim.x) {
    unsigned int w = words[i];
    atomicAdd(s_hist + ((w >> 0) & 0xFFU), 1);
    atomicAdd(s_hist + ((w >> 8) & 0xFFU), 1);
    atomicAdd(s_hist + ((w >> 16) & 0xFFU), 1);
    atomicAdd(s_hist + ((w >> 24) & 0xFFU), 1);
  }
  __syncthreads();
  for (int b = threadIdx.x; b < HIST_BINS; b += blockDim.x) atomicAdd(&hist[b], s_hist[b]);
}

// ------------------------------------------------------------------------------------------- transpose
#define TILE_DIM 32
#define BLOCK_ROWS 8
extern "C" __global__ void transposeNoBankConflicts(float *odata, const float *idata, int width, int height) {
  __shared__ float tile[TILE_DIM][TILE_DIM + 1];
  int x = blockIdx.x * TILE_DIM + threadIdx.x;
  int y = blockIdx.y * TILE_DIM + threadIdx.y;
  for (int j = 0; j < TILE_DIM; j += BLOCK_ROWS)
    if (x < width && y + j < height) tile[threadIdx.y + j][threadIdx.x] = idata[(y + j) * width + x];
  __syncthreads();
  x = blockIdx.y * TILE_DIM + threadIdx.x;  // transposed block offset
  y = blockIdx.x * TILE_DIM + threadIdx.y;
  for (int j = 0; j < TILE_DIM; j += BLOCK_ROWS)
    if (x < height && y + j < width) odata[(y + j) * height + x] = tile[threadIdx.x][threadIdx.y + j];
}

// ------------------------------------------------------------------------------------------- matrixMul
// C = A B with square tiles in dynamic shared memory (the caller passes 2 * TILE * TILE * sizeof(float)).
template <int TILE>
__global__ void matmul_dynamic_smem(const float *__restrict__ A, const float *__restrict__ B, float *__restrict__ C,
                                    int M, int N, int K) {
  extern __shared__ float smem[];
  float *As = smem;
  float *Bs = smem + TILE * TILE;
  int tx = threadIdx.x, ty = threadIdx.y;
  int row = blockIdx.y * TILE + ty, col = blockIdx.x * TILE + tx;
  float acc = 0.0f;
  for (int t = 0; t < (K + TILE - 1) / TILE; ++t) {
    int ka = t * TILE + tx, kb = t * TILE + ty;
    As[ty * TILE + tx] = (row < M && ka < K) ? A[row * K + ka] : 0.0f;
    Bs[ty * TILE + tx] = (kb < K && col < N) ? B[kb * N + col] : 0.0f;
    __syncthreads();
#pragma unroll
    for (int k = 0; k < TILE; ++k) acc += As[ty * TILE + k] * Bs[k * TILE + tx];
    __syncthreads();
  }
  if (row < M && col < N) C[row * N + col] = acc;
}

// ------------------------------------------------------------------------------------------- sortingNetworks
// bitonic sort of each block's 2 * blockDim.x keys (with values) in shared memory, then global merge steps.
__device__ inline void Comparator(unsigned int &keyA, unsigned int &valA, unsigned int &keyB, unsigned int &valB,
                                  unsigned int dir) {
  unsigned int t;
  if ((keyA > keyB) == dir) {
    t = keyA; keyA = keyB; keyB = t;
    t = valA; valA = valB; valB = t;
  }
}

extern "C" __global__ void bitonicSortShared(unsigned int *d_DstKey, unsigned int *d_DstVal,
                                             const unsigned int *d_SrcKey, const unsigned int *d_SrcVal,
                                             unsigned int arrayLength, unsigned int dir) {
  extern __shared__ unsigned int s_buf[];
  unsigned int *s_key = s_buf;
  unsigned int *s_val = s_buf + 2 * blockDim.x;
  unsigned int base = blockIdx.x * 2 * blockDim.x;
  s_key[threadIdx.x] = d_SrcKey[base + threadIdx.x];
  s_val[threadIdx.x] = d_SrcVal[base + threadIdx.x];
  s_key[threadIdx.x + blockDim.x] = d_SrcKey[base + threadIdx.x + blockDim.x];
  s_val[threadIdx.x + blockDim.x] = d_SrcVal[base + threadIdx.x + blockDim.x];
  for (unsigned int size = 2; size < arrayLength; size <<= 1) {
    unsigned int ddd = dir ^ ((threadIdx.x & (size / 2)) != 0);
    for (unsigned int stride = size / 2; stride > 0; stride >>= 1) {
      __syncthreads();
      unsigned int pos = 2 * threadIdx.x - (threadIdx.x & (stride - 1));
      Comparator(s_key[pos + 0], s_val[pos + 0], s_key[pos + stride], s_val[pos + stride], ddd);
    }
  }
  for (unsigned int stride = arrayLength / 2; stride > 0; stride >>= 1) {
    __syncthreads();
    unsigned int pos = 2 * threadIdx.x - (threadIdx.x & (stride - 1));
    Comparator(s_key[pos + 0], s_val[pos + 0], s_key[pos + stride], s_val[pos + stride], dir);
  }
  __syncthreads();
  d_DstKey[base + threadIdx.x] = s_key[threadIdx.x];
  d_DstVal[base + threadIdx.x] = s_val[threadIdx.x];
  d_DstKey[base + threadIdx.x + blockDim.x] = s_key[threadIdx.x + blockDim.x];
  d_DstVal[base + threadIdx.x + blockDim.x] = s_val[threadIdx.x + blockDim.x];
}

// one step (j, k) of the global bitonic network over n = 2^p keys: thread i compares i with i ^ j
extern "C" __global__ void bitonic_global_step(unsigned int *keys, unsigned int *vals, unsigned int j,
                                               unsigned int k, unsigned int n) {
  unsigned int i = blockIdx.x * blockDim.x + threadIdx.x;
  unsigned int ixj = i ^ j;
  if (i >= n || ixj <= i) return;
  bool ascending = (i & k) == 0;
  unsigned int a = keys[i], b = keys[ixj];
  if ((a > b) == ascending) {
    keys[i] = b; keys[ixj] = a;
    unsigned int t = vals[i]; vals[i] = vals[ixj]; vals[ixj] = t;
  }
}

// ------------------------------------------------------------------------------------------- grid sync
// one launch, two phases: block partial sums, grid.sync(), then block 0 adds the partials and every thread
// scales its element by the total (a normalisation needing the whole grid's sum).
extern "C" __global__ void normalize_grid_sync(float *x, float *partial, int n) {
  cg::grid_group grid = cg::this_grid();
  cg::thread_block block = cg::this_thread_block();
  __shared__ float s[256];
  float mine = 0.0f;
  for (int i = grid.thread_rank(); i < n; i += grid.size()) mine += x[i];
  s[block.thread_rank()] = mine;
  block.sync();
  for (int stride = block.size() / 2; stride > 0; stride >>= 1) {
    if (block.thread_rank() < stride) s[block.thread_rank()] += s[block.thread_rank() + stride];
    block.sync();
  }
  if (block.thread_rank() == 0) partial[blockIdx.x] = s[0];
  grid.sync();
  if (grid.thread_rank() == 0) {
    float total = 0.0f;
    for (int b = 0; b < gridDim.x; ++b) total += partial[b];
    partial[gridDim.x] = total;
  }
  grid.sync();
  float total = partial[gridDim.x];
  for (int i = grid.thread_rank(); i < n; i += grid.size()) x[i] /= total;
}

// ------------------------------------------------------------------------------------------- templates
template <typename T>
__global__ void axpy(T a, const T *x, T *y, int n) {
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += blockDim.x * gridDim.x) y[i] = a * x[i] + y[i];
}

namespace samples {
template <typename T, int ITEMS>
__global__ void scale_items(T *y, const T *x, T s, int n) {
  int base = (blockIdx.x * blockDim.x + threadIdx.x) * ITEMS;
#pragma unroll
  for (int k = 0; k < ITEMS; ++k)
    if (base + k < n) y[base + k] = x[base + k] * s;
}
}  // namespace samples

// ------------------------------------------------------------------------------------------- warp-level idioms
// shfl_scan's intra-warp inclusive scan (warpSize, lane arithmetic), block totals through shared memory
extern "C" __global__ void shfl_scan_block(const int *in, int *out, int *block_sums, int n) {
  extern __shared__ int warp_sums[];
  int id = blockIdx.x * blockDim.x + threadIdx.x;
  int lane = threadIdx.x % warpSize, warp = threadIdx.x / warpSize;
  int value = id < n ? __ldg(&in[id]) : 0;
#pragma unroll
  for (int i = 1; i <= warpSize; i *= 2) {
    int up = __shfl_up_sync(0xffffffff, value, i, warpSize);
    if (lane >= i) value += up;
  }
  if (lane == warpSize - 1) warp_sums[warp] = value;
  __syncthreads();
  if (warp == 0 && lane < blockDim.x / warpSize) {
    int s = warp_sums[lane];
    for (int i = 1; i < blockDim.x / warpSize; i *= 2) {
      int up = __shfl_up_sync((1u << (blockDim.x / warpSize)) - 1, s, i, blockDim.x / warpSize);
      if (lane >= i) s += up;
    }
    warp_sums[lane] = s;
  }
  __syncthreads();
  if (warp > 0) value += warp_sums[warp - 1];
  if (id < n) out[id] = value;
  if (threadIdx.x == blockDim.x - 1 && block_sums) block_sums[blockIdx.x] = value;
}

// a block reduction by cg::reduce over 32-thread tiles, then atomicAdd of each tile's sum (a double total)
#include <cooperative_groups/reduce.h>
extern "C" __global__ void cg_reduce_sum(const float4 *x4, double *total, int n4) {
  cg::thread_block block = cg::this_thread_block();
  cg::thread_block_tile<32> tile = cg::tiled_partition<32>(block);
  float mine = 0.0f;
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n4; i += blockDim.x * gridDim.x) {
    float4 v = x4[i];
    mine += (v.x + v.y) + (v.z + v.w);
  }
  float tile_sum = cg::reduce(tile, mine, cg::plus<float>());
  if (tile.thread_rank() == 0) atomicAdd(total, (double)tile_sum);
}
