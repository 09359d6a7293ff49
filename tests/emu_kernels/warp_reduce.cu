// warp_reduce.cu -- reductions and scans inside a warp with shuffles (no shared memory).
//
// A warp is 32 threads with consecutive linear ids.  __shfl_down_sync(mask, v, d) returns v from
// lane (lane + d); after the steps d = 16, 8, 4, 2, 1 lane 0 holds the warp's sum.
// __shfl_xor_sync pairs lane l with lane l ^ d (a butterfly): every lane ends with the result.
// __shfl_up_sync builds an inclusive prefix sum; __ballot_sync packs one predicate bit per lane.
//
// Launch: any block size that is a multiple of 32; out arrays have one entry per warp
// (warp_sum, warp_max, ballot) or per element (scan, broadcast).  Inputs of ragged length n are
// padded inside the kernel with the operation's identity.
#define FULL_MASK 0xffffffffu

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int d = 16; d > 0; d >>= 1) v += __shfl_down_sync(FULL_MASK, v, d);
    return v;
}

extern "C" __global__ void warp_sum_kernel(const float* x, float* sums, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    float s = warp_sum(i < n ? x[i] : 0.0f);
    if ((threadIdx.x & 31) == 0) sums[i / 32] = s;
}

extern "C" __global__ void warp_max_kernel(const float* x, float* maxes, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    float m = i < n ? x[i] : -INFINITY;
    for (int d = 16; d > 0; d >>= 1) m = fmaxf(m, __shfl_xor_sync(FULL_MASK, m, d));
    // every lane holds the max now; lane 31 writes it to show that
    if ((threadIdx.x & 31) == 31) maxes[i / 32] = m;
}

extern "C" __global__ void warp_scan_kernel(const int* x, int* scan, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    int lane = threadIdx.x & 31;
    int v = i < n ? x[i] : 0;
    for (int d = 1; d < 32; d <<= 1) {
        int up = __shfl_up_sync(FULL_MASK, v, d);
        if (lane >= d) v += up;
    }
    if (i < n) scan[i] = v;
}

extern "C" __global__ void warp_ballot_kernel(const float* x, unsigned int* bits, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    unsigned int b = __ballot_sync(FULL_MASK, i < n && x[i] > 0.0f);
    if ((threadIdx.x & 31) == 0) bits[i / 32] = b;
}

// Each group of `width` lanes reads the value of its group's lane `src` (width-segmented shuffle).
extern "C" __global__ void warp_broadcast_kernel(const double* x, double* y, int src, int width, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    double v = __shfl_sync(FULL_MASK, i < n ? x[i] : 0.0, src, width);
    __syncwarp();
    if (i < n) y[i] = v;
}
