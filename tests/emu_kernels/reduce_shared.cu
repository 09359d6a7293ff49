// reduce_shared.cu -- sum of a vector with a shared-memory tree reduction.
//
// Shapes: x is float[n]; block_sums is float[gridDim.x] (one partial sum per block; the host or a
// second launch adds them).  Launch: block = BLOCK = 256 threads, grid = ceil(n / (2 * BLOCK)):
// each thread first adds two elements, then the block halves the number of active threads at
// every step: 128, 64, ..., 1.  Every step needs a __syncthreads() so that step s reads only
// values finished in step s - 1, and the barrier must be reached by *all* threads (it sits
// outside the `if`).
#define BLOCK 256

template <int N>
__device__ __forceinline__ void tree_reduce(float* s, int tid) {
#pragma unroll
    for (int stride = N / 2; stride > 0; stride >>= 1) {
        if (tid < stride) s[tid] += s[tid + stride];
        __syncthreads();
    }
}

extern "C" __global__ void __launch_bounds__(BLOCK) reduce_sum(const float* x, float* block_sums, int n) {
    __shared__ float partial[BLOCK];
    int tid = threadIdx.x;
    int i = blockIdx.x * (2 * BLOCK) + tid;
    float v = 0.0f;
    if (i < n) v += x[i];
    if (i + BLOCK < n) v += x[i + BLOCK];
    partial[tid] = v;
    __syncthreads();
    tree_reduce<BLOCK>(partial, tid);
    if (tid == 0) block_sums[blockIdx.x] = partial[0];
}

// __syncthreads_count: how many elements of each block are positive (a barrier that also counts).
extern "C" __global__ void count_positive(const float* x, int* block_counts, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    int c = __syncthreads_count(i < n && x[i] > 0.0f);
    if (threadIdx.x == 0) block_counts[blockIdx.x] = c;
}
