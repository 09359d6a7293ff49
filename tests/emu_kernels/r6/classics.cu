// Classic kernels written as their well-known sources write them: Mark Harris's "Optimizing Parallel
// Reduction in CUDA" (reduce0 .. reduce5, the template on the block size and the unrolled last warp),
// flash-attention-minimal's forward (one block per (batch, head), tiles of K and V in dynamic shared
// memory, running max and sum in global memory), and llm.c's layernorm backward (a block per group of rows,
// cooperative-groups warps, shared-memory accumulation of dweight/dbias, then global float atomics).
#include <cooperative_groups.h>
#include <cooperative_groups/reduce.h>
namespace cg = cooperative_groups;

// reduce0: interleaved addressing with a divergent branch (tid % (2*s) == 0).
extern "C" __global__ void reduce0(const int* g_idata, int* g_odata, unsigned n) {
    extern __shared__ int sdata[];
    unsigned tid = threadIdx.x;
    unsigned i = blockIdx.x * blockDim.x + threadIdx.x;
    sdata[tid] = i < n ? g_idata[i] : 0;
    __syncthreads();
    for (unsigned s = 1; s < blockDim.x; s *= 2) {
        if (tid % (2 * s) == 0) sdata[tid] += sdata[tid + s];
        __syncthreads();
    }
    if (tid == 0) g_odata[blockIdx.x] = sdata[0];
}

// reduce1: interleaved addressing, strided index (bank conflicts instead of divergence).
extern "C" __global__ void reduce1(const int* g_idata, int* g_odata, unsigned n) {
    extern __shared__ int sdata[];
    unsigned tid = threadIdx.x;
    unsigned i = blockIdx.x * blockDim.x + threadIdx.x;
    sdata[tid] = i < n ? g_idata[i] : 0;
    __syncthreads();
    for (unsigned s = 1; s < blockDim.x; s *= 2) {
        int index = 2 * s * tid;
        if (index < blockDim.x) sdata[index] += sdata[index + s];
        __syncthreads();
    }
    if (tid == 0) g_odata[blockIdx.x] = sdata[0];
}

// reduce3: sequential addressing, with the first add during the global load (two elements per thread).
extern "C" __global__ void reduce3(const int* g_idata, int* g_odata, unsigned n) {
    extern __shared__ int sdata[];
    unsigned tid = threadIdx.x;
    unsigned i = blockIdx.x * (blockDim.x * 2) + threadIdx.x;
    int mySum = i < n ? g_idata[i] : 0;
    if (i + blockDim.x < n) mySum += g_idata[i + blockDim.x];
    sdata[tid] = mySum;
    __syncthreads();
    for (unsigned s = blockDim.x / 2; s > 0; s >>= 1) {
        if (tid < s) sdata[tid] = mySum = mySum + sdata[tid + s];
        __syncthreads();
    }
    if (tid == 0) g_odata[blockIdx.x] = mySum;
}

// reduce4/5: the last warp unrolled through volatile shared memory (the pre-Volta idiom), the block size
// a template parameter so the compiler drops the dead branches.
template <unsigned int blockSize>
__device__ void warpReduce(volatile int* sdata, unsigned int tid) {
    if (blockSize >= 64) sdata[tid] += sdata[tid + 32];
    if (blockSize >= 32) sdata[tid] += sdata[tid + 16];
    if (blockSize >= 16) sdata[tid] += sdata[tid + 8];
    if (blockSize >= 8) sdata[tid] += sdata[tid + 4];
    if (blockSize >= 4) sdata[tid] += sdata[tid + 2];
    if (blockSize >= 2) sdata[tid] += sdata[tid + 1];
}
template <unsigned int blockSize>
__global__ void reduce5(const int* g_idata, int* g_odata, unsigned int n) {
    extern __shared__ int sdata[];
    unsigned int tid = threadIdx.x;
    unsigned int i = blockIdx.x * (blockSize * 2) + tid;
    unsigned int gridSize = blockSize * 2 * gridDim.x;
    sdata[tid] = 0;
    while (i < n) {  // reduce6's grid-stride loop: many elements per thread
        sdata[tid] += g_idata[i];
        if (i + blockSize < n) sdata[tid] += g_idata[i + blockSize];
        i += gridSize;
    }
    __syncthreads();
    if (blockSize >= 512) { if (tid < 256) { sdata[tid] += sdata[tid + 256]; } __syncthreads(); }
    if (blockSize >= 256) { if (tid < 128) { sdata[tid] += sdata[tid + 128]; } __syncthreads(); }
    if (blockSize >= 128) { if (tid < 64) { sdata[tid] += sdata[tid + 64]; } __syncthreads(); }
    if (tid < 32) warpReduce<blockSize>(sdata, tid);
    if (tid == 0) g_odata[blockIdx.x] = sdata[0];
}

// flash-attention-minimal's forward: Q, K, V, O are [B, nh, N, d]; l and m [B, nh, N] start at 0 and -inf.
// Tc = ceil(N / Bc) tiles of keys, Tr = ceil(N / Br) tiles of queries; one thread per query row of a tile.
// (Rows and columns past N are masked, so N need not be a multiple of the tile.)
extern "C" __global__ void forward_kernel(const float* Q, const float* K, const float* V, const int N, const int d,
                                          const int Tc, const int Tr, const int Bc, const int Br,
                                          const float softmax_scale, float* l, float* m, float* O) {
    int tx = threadIdx.x;
    int bx = blockIdx.x;
    int by = blockIdx.y;  // batch and head index
    int qkv_offset = (bx * gridDim.y * N * d) + (by * N * d);
    int lm_offset = (bx * gridDim.y * N) + (by * N);

    extern __shared__ float sram[];
    int tile_size = Bc * d;  // size of Qi, Kj, Vj
    float* Qi = sram;
    float* Kj = &sram[tile_size];
    float* Vj = &sram[tile_size * 2];
    float* S = &sram[tile_size * 3];

    for (int j = 0; j < Tc; j++) {
        // Load Kj, Vj to SRAM
        for (int x = 0; x < d; x++) {
            const bool in = j * Bc + tx < N;
            Kj[(tx * d) + x] = in ? K[qkv_offset + (tile_size * j) + (tx * d) + x] : 0.0f;
            Vj[(tx * d) + x] = in ? V[qkv_offset + (tile_size * j) + (tx * d) + x] : 0.0f;
        }
        __syncthreads();

        for (int i = 0; i < Tr; i++) {
            const bool row_ok = i * Br + tx < N;
            // Load Qi to SRAM, l and m to registers
            for (int x = 0; x < d; x++)
                Qi[(tx * d) + x] = row_ok ? Q[qkv_offset + (tile_size * i) + (tx * d) + x] : 0.0f;
            float row_m_prev = row_ok ? m[lm_offset + (Br * i) + tx] : -INFINITY;
            float row_l_prev = row_ok ? l[lm_offset + (Br * i) + tx] : 0.0f;

            // S = QK^T, row_m = rowmax(S)
            float row_m = -INFINITY;
            for (int y = 0; y < Bc; y++) {
                float sum = 0;
                for (int x = 0; x < d; x++) sum += Qi[(tx * d) + x] * Kj[(y * d) + x];
                sum *= softmax_scale;
                if (j * Bc + y >= N) sum = -INFINITY;  // a key past the end
                S[(Bc * tx) + y] = sum;
                if (sum > row_m) row_m = sum;
            }

            // P = exp(S - row_m), row_l = rowsum(P)
            float row_l = 0;
            for (int y = 0; y < Bc; y++) {
                S[(Bc * tx) + y] = j * Bc + y < N ? __expf(S[(Bc * tx) + y] - row_m) : 0.0f;
                row_l += S[(Bc * tx) + y];
            }

            // Compute new m and l
            float row_m_new = max(row_m_prev, row_m);
            float row_l_new = (__expf(row_m_prev - row_m_new) * row_l_prev) + (__expf(row_m - row_m_new) * row_l);

            // Write O, l, m to HBM
            if (row_ok) {
                for (int x = 0; x < d; x++) {
                    float pv = 0;  // Pij * Vj
                    for (int y = 0; y < Bc; y++) pv += S[(Bc * tx) + y] * Vj[(y * d) + x];
                    O[qkv_offset + (tile_size * i) + (tx * d) + x] =
                        (1 / row_l_new) * ((row_l_prev * __expf(row_m_prev - row_m_new) * O[qkv_offset + (tile_size * i) + (tx * d) + x]) +
                                           (__expf(row_m - row_m_new) * pv));
                }
                m[lm_offset + (Br * i) + tx] = row_m_new;
                l[lm_offset + (Br * i) + tx] = row_l_new;
            }
        }
        __syncthreads();  // otherwise, thread can use the wrong Kj, Vj in inner loop
    }
}

// llm.c's layernorm_backward_kernel (the shared-memory version): each warp takes rows, accumulates dbias
// and dweight for its channels in shared memory with atomics, the block adds them to global memory.
extern "C" __global__ void layernorm_backward_kernel2(float* dinp, float* dweight, float* dbias, const float* dout,
                                                      const float* inp, const float* weight, const float* mean,
                                                      const float* rstd, int B, int T, int C) {
    extern __shared__ float shared[];  // size = 2 * C
    namespace cg = cooperative_groups;
    cg::thread_block block = cg::this_thread_block();
    cg::thread_block_tile<32> warp = cg::tiled_partition<32>(block);
    int idx = blockIdx.x * warp.meta_group_size() + warp.meta_group_rank();
    int N = B * T;

    float* dbias_shared = shared;
    float* dweight_shared = shared + C;
    #pragma unroll
    for (int i = threadIdx.x; i < C; i += blockDim.x) {
        dbias_shared[i] = 0.0f;
        dweight_shared[i] = 0.0f;
    }
    __syncthreads();

    if (idx < N) {
        int b = idx / T;
        int t = idx % T;
        const float* dout_bt = dout + b * T * C + t * C;
        const float* inp_bt = inp + b * T * C + t * C;
        float* dinp_bt = dinp + b * T * C + t * C;
        const float mean_bt = mean[b * T + t];
        const float rstd_bt = rstd[b * T + t];

        float dnorm_mean = 0.0f;
        float dnorm_norm_mean = 0.0f;
        for (int i = warp.thread_rank(); i < C; i += warp.size()) {
            float norm_bti = (inp_bt[i] - mean_bt) * rstd_bt;
            float dnorm_i = weight[i] * dout_bt[i];
            dnorm_mean += dnorm_i;
            dnorm_norm_mean += dnorm_i * norm_bti;
        }
        dnorm_mean = cg::reduce(warp, dnorm_mean, cg::plus<float>{});
        dnorm_norm_mean = cg::reduce(warp, dnorm_norm_mean, cg::plus<float>{});
        dnorm_mean = dnorm_mean / C;
        dnorm_norm_mean = dnorm_norm_mean / C;

        for (int i = warp.thread_rank(); i < C; i += warp.size()) {
            float norm_bti = (inp_bt[i] - mean_bt) * rstd_bt;
            float dnorm_i = weight[i] * dout_bt[i];
            atomicAdd(&dbias_shared[i], dout_bt[i]);
            atomicAdd(&dweight_shared[i], norm_bti * dout_bt[i]);
            float dval = 0.0f;
            dval += dnorm_i;
            dval -= dnorm_mean;
            dval -= norm_bti * dnorm_norm_mean;
            dval *= rstd_bt;
            dinp_bt[i] += dval;
        }
    }
    __syncthreads();
    for (int i = threadIdx.x; i < C; i += blockDim.x) {
        atomicAdd(&dbias[i], dbias_shared[i]);
        atomicAdd(&dweight[i], dweight_shared[i]);
    }
}
