// small_features.cu -- one-line CUDA habits from public sources: the shared-memory qualifier after the
// type (`extern float __shared__ s[];`), __CUDA_ARCH__ checks, and a null pointer for an optional input.
// Valid CUDA: the tests compile it with nvcc.

// y = reverse(x) + (bias ? bias[i] : 0), staged through dynamic shared memory.
extern "C" __global__ void reverse_add(const float* x, const float* bias, float* y, int n) {
    extern float __shared__ stage[];
    static int __shared__ length;
    int t = threadIdx.x;
    if (t == 0) length = n;
    if (t < n) stage[t] = x[t];
    __syncthreads();
    if (t < length) y[t] = stage[n - 1 - t] + (bias != nullptr ? bias[t] : 0.0f);
}

// The architecture the device code was compiled for (nvcc: -arch=sm_XY gives XY0), -1 on the host path.
extern "C" __global__ void cuda_arch(int* out) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 700
    out[0] = __CUDA_ARCH__;
#else
    out[0] = -1;
#endif
}

// At most 128 threads per block: CUDA refuses a larger launch.
#define SCALE_THREADS 128
extern "C" __global__ void __launch_bounds__(SCALE_THREADS, 4) scale(float* x, float s, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) x[i] *= s;
}
