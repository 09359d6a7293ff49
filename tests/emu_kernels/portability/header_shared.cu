// header_shared.cu -- kernels whose __shared__ memory is declared in an included header
// (block_reduce.cuh).  Valid CUDA: the tests compile it with nvcc.
#include "block_reduce.cuh"

// out[row] = sum of x[row, :], one block per row.
extern "C" __global__ void row_sums(const float* x, float* out, int cols) {
    const float* row = x + (size_t)blockIdx.x * cols;
    float v = 0.0f;
    for (int c = threadIdx.x; c < cols; c += blockDim.x) v += row[c];
    v = block_sum(v);
    if (threadIdx.x == 0) out[blockIdx.x] = v;
}

// y = x - mean(x) over one block's row: two block sums in a row share the header's scratch space.
extern "C" __global__ void center_rows(const float* x, float* y, int cols) {
    const float* row = x + (size_t)blockIdx.x * cols;
    float v = 0.0f;
    for (int c = threadIdx.x; c < cols; c += blockDim.x) v += row[c];
    const float mean = block_sum(v) / cols;
    const float check = block_sum(1.0f);  // = blockDim.x, reusing warp_sums
    for (int c = threadIdx.x; c < cols; c += blockDim.x)
        y[(size_t)blockIdx.x * cols + c] = row[c] - mean + (check - blockDim.x);
}

extern "C" __global__ void divergent_in_header(int* out) {
    sync_if_even();
    __syncthreads();  // the odd threads wait here, the even ones in the header
    out[threadIdx.x] = 1;
}
