// dynamic_smem.cu -- extern __shared__: shared memory whose size is chosen at launch.
//
// softmax_rows: y = softmax(x) along each row.  x, y are float[rows][cols]; one block per row,
// blockDim.x threads (a power of two), shared_mem = blockDim.x * sizeof(float) bytes at launch.
// Each thread reduces a strided slice of the row, then the block combines the per-thread values
// in shared memory: first the max (for numerical stability), then the sum of exponentials.
//
// reverse_blocks: each block reverses its blockDim.x-element chunk of x through shared memory;
// the chunk size, and so the shared memory, is only known at launch.
extern "C" __global__ void softmax_rows(const float* __restrict__ x, float* __restrict__ y, int rows, int cols) {
    extern __shared__ float red[];
    const int row = blockIdx.x, tid = threadIdx.x;
    const float* xr = x + (size_t)row * cols;
    float m = -INFINITY;
    for (int c = tid; c < cols; c += blockDim.x) m = fmaxf(m, xr[c]);
    red[tid] = m;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s >>= 1) {
        if (tid < s) red[tid] = fmaxf(red[tid], red[tid + s]);
        __syncthreads();
    }
    m = red[0];
    __syncthreads();  // everyone has read red[0] before it is reused
    float sum = 0.0f;
    for (int c = tid; c < cols; c += blockDim.x) sum += __expf(xr[c] - m);
    red[tid] = sum;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s >>= 1) {
        if (tid < s) red[tid] += red[tid + s];
        __syncthreads();
    }
    const float inv = __fdividef(1.0f, red[0]);
    for (int c = tid; c < cols; c += blockDim.x) y[(size_t)row * cols + c] = __expf(xr[c] - m) * inv;
}

extern __shared__ int chunk[];  // file-scope form: shared by every kernel in this file

extern "C" __global__ void reverse_blocks(const int* x, int* y, int n) {
    int base = blockIdx.x * blockDim.x, t = threadIdx.x;
    int len = min(n - base, (int)blockDim.x);
    if (t < len) chunk[t] = x[base + t];
    __syncthreads();
    if (t < len) y[base + t] = chunk[len - 1 - t];
}
