// Round 13: pre-Volta warp-synchronous code, wrong since Volta's independent thread scheduling.

// Volta+: a last-warp unroll of a shared-memory reduction with neither volatile nor __syncwarp() (the pre-Volta
// idiom): the lanes of a warp are no longer in lockstep, so it is a race.
extern "C" __global__ void last_warp_unsynchronized(const float* x, float* out, int n) {
    __shared__ float sdata[128];
    const unsigned tid = threadIdx.x;
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    sdata[tid] = i < n ? x[i] : 0.0f;
    __syncthreads();
    for (unsigned s = blockDim.x / 2; s > 32; s >>= 1) {
        if (tid < s) sdata[tid] += sdata[tid + s];
        __syncthreads();
    }
    if (tid < 32) {
        sdata[tid] += sdata[tid + 32];
        sdata[tid] += sdata[tid + 16];
        sdata[tid] += sdata[tid + 8];
        sdata[tid] += sdata[tid + 4];
        sdata[tid] += sdata[tid + 2];
        sdata[tid] += sdata[tid + 1];
    }
    if (tid == 0) out[blockIdx.x] = sdata[0];
}
