// constant_filter.cu -- a 1-D convolution whose taps live in __constant__ memory, filled by the host
// (cudaMemcpyToSymbol in C++, RawModule.get_global in CuPy), and a table with compiled-in values.
// Valid CUDA: the tests compile it with nvcc.
#define RADIUS 3
__constant__ float taps[2 * RADIUS + 1];
__constant__ int offsets[4] = {0, 10, 20, 30};

// y[i] = sum_k taps[k] * x[i + k - RADIUS], zero outside x.
extern "C" __global__ void convolve(const float* x, float* y, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float acc = 0.0f;
    for (int k = 0; k < 2 * RADIUS + 1; ++k) {
        int j = i + k - RADIUS;
        if (j >= 0 && j < n) acc += taps[k] * x[j];
    }
    y[i] = acc;
}

extern "C" __global__ void add_offsets(int* v) { v[threadIdx.x] += offsets[threadIdx.x % 4]; }
