// histogram.cu -- atomics: a histogram, an integer max and a float max built from atomicCAS.
//
// histogram: values are int[n] in [0, NBINS); counts is int[NBINS].  Each block first counts in
// its own shared-memory histogram (fast shared atomics, little contention), then adds it into the
// global one with one atomicAdd per bin.  Launch: any 1-D block and grid; a grid-stride loop
// covers any n.
// max_int: atomicMax on a global int.   max_float: atomicMax has no float overload on older
// GPUs, so the classic trick loops on atomicCAS over the float's bits until the stored value is
// at least ours.   add_float: atomicAdd on a global float (the sum's rounding depends on order).
#define NBINS 64

extern "C" __global__ void histogram(const int* values, int* counts, int n) {
    __shared__ int local[NBINS];
    for (int b = threadIdx.x; b < NBINS; b += blockDim.x) local[b] = 0;
    __syncthreads();
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += blockDim.x * gridDim.x)
        atomicAdd(&local[values[i]], 1);
    __syncthreads();
    for (int b = threadIdx.x; b < NBINS; b += blockDim.x)
        if (local[b]) atomicAdd(&counts[b], local[b]);
}

extern "C" __global__ void max_int(const int* values, int* result, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) atomicMax(result, values[i]);
}

__device__ float atomic_max_float(float* addr, float value) {
    int* bits = reinterpret_cast<int*>(addr);
    int old = *bits;
    while (__int_as_float(old) < value) {
        int assumed = old;
        old = atomicCAS(bits, assumed, __float_as_int(value));
        if (old == assumed) break;
    }
    return __int_as_float(old);
}

extern "C" __global__ void max_float(const float* values, float* result, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) atomic_max_float(result, values[i]);
}

extern "C" __global__ void add_float(const float* values, float* result, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) atomicAdd(result, values[i]);
}
