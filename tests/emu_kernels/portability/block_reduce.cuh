// block_reduce.cuh -- a helper header in the style of llm.c's common.h and the samples' .cuh files: a
// block-wide sum whose scratch space is a __shared__ array declared here, in the header.
#pragma once

__device__ inline float warp_sum(float v) {
    for (int offset = 16; offset > 0; offset /= 2) v += __shfl_xor_sync(0xffffffffu, v, offset);
    return v;
}

// Sum of v over the block (any multiple of 32 threads); every thread gets the result.
__device__ inline float block_sum(float v) {
    __shared__ float warp_sums[32];
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
    v = warp_sum(v);
    if (lane == 0) warp_sums[warp] = v;
    __syncthreads();
    v = lane < warps ? warp_sums[lane] : 0.0f;
    v = warp_sum(v);
    __syncthreads();  // warp_sums may be reused by the next call
    return v;
}

// A barrier only some threads reach, for the test that errors point into this header.
__device__ inline void sync_if_even() {
    if (threadIdx.x % 2 == 0) __syncthreads();  // LINE: header barrier
}
