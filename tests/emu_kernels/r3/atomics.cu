// Atomics the way tutorials use them: histograms, global sums, a CAS loop for float max, counters.
#include <cuda_fp16.h>
#include <cuda_bf16.h>

extern "C" __global__ void atomic_sums(const float* x, const double* xd, const int* xi, float* fs, double* ds,
                                       int* is, unsigned long long* us, int n) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += blockDim.x * gridDim.x) {
        atomicAdd(fs, x[i]);
        atomicAdd(ds, xd[i]);
        atomicAdd(is, xi[i]);
        atomicAdd(us, (unsigned long long)(xi[i] + 1000));
    }
}

// The programming guide's atomicMax for float, written with atomicCAS on the int bits.
__device__ float atomicMaxFloat(float* address, float val) {
    int* address_as_int = (int*)address;
    int old = *address_as_int, assumed;
    do {
        assumed = old;
        old = atomicCAS(address_as_int, assumed, __float_as_int(fmaxf(val, __int_as_float(assumed))));
    } while (assumed != old);
    return __int_as_float(old);
}

// The programming guide's double atomicAdd for old GPUs (atomicCAS on unsigned long long).
__device__ double atomicAddDouble(double* address, double val) {
    unsigned long long int* address_as_ull = (unsigned long long int*)address;
    unsigned long long int old = *address_as_ull, assumed;
    do {
        assumed = old;
        old = atomicCAS(address_as_ull, assumed, __double_as_longlong(val + __longlong_as_double(assumed)));
    } while (assumed != old);
    return __longlong_as_double(old);
}

extern "C" __global__ void cas_loops(const float* x, float* mx, double* sum, int* imax, int* imin, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) {
        atomicMaxFloat(mx, x[i]);
        atomicAddDouble(sum, (double)x[i]);
        atomicMax(imax, __float2int_rz(x[i] * 100.0f));
        atomicMin(imin, __float2int_rz(x[i] * 100.0f));
    }
}

// atomicInc wraps to 0 after `limit`; atomicExch returns the previous value; atomicDec wraps to limit.
extern "C" __global__ void counters(unsigned* ring, unsigned* down, int* slots, int* exch_seen) {
    unsigned old = atomicInc(ring, 9u);   // values 0..9, then 0 again
    atomicDec(down, 4u);
    atomicAdd(&slots[old], 1);
    int prev = atomicExch(exch_seen, (int)threadIdx.x);
    atomicAdd(&exch_seen[1], prev >= -1 ? 1 : 0);
}

// Histogram with shared-memory privatization (the classic CUDA-by-example kernel).
extern "C" __global__ void histo(const unsigned char* data, unsigned* bins, int n) {
    __shared__ unsigned local[256];
    for (int b = threadIdx.x; b < 256; b += blockDim.x) local[b] = 0;
    __syncthreads();
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += blockDim.x * gridDim.x)
        atomicAdd(&local[data[i]], 1u);
    __syncthreads();
    for (int b = threadIdx.x; b < 256; b += blockDim.x) atomicAdd(&bins[b], local[b]);
}

// 16-bit atomics (sm_70 __half, sm_80 __nv_bfloat16, __half2): small integers are exact.
extern "C" __global__ void atomic_16bit(__half* h, __half2* h2, __nv_bfloat16* b, __nv_bfloat162* b2) {
    atomicAdd(h, __float2half(1.0f));
    atomicAdd(h2, __floats2half2_rn(1.0f, 2.0f));
    atomicAdd(b, __float2bfloat16(1.0f));
    atomicAdd(b2, __floats2bfloat162_rn(1.0f, -1.0f));
}

// atomicAnd/Or/Xor on unsigned: set bit (i % 32) in word i / 32.
extern "C" __global__ void bitset(const int* idx, unsigned* bits, unsigned* x, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) {
        atomicOr(&bits[idx[i] / 32], 1u << (idx[i] % 32));
        atomicXor(x, 1u << (i % 32));
        atomicAnd(&x[1], ~(1u << (i % 32)));
    }
}
