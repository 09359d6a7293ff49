// shuffle_mask.cu -- warp sums that read lanes outside their mask (undefined in CUDA: the value read
// is not the caller's own), and the fixed versions.  Valid CUDA: the tests compile it with nvcc.

// BUG: a block of fewer than 32 threads, full-mask tree from offset 16: lane 8 of a 24-thread block
// reads lane 24, which does not exist.  (NVIDIA's old reduction sample makes this mistake.)
extern "C" __global__ void warp_sum_partial(const float* x, float* out) {
    float v = x[threadIdx.x];
    for (int offset = 16; offset > 0; offset /= 2) v += __shfl_down_sync(0xffffffffu, v, offset);  // LINE: partial
    if (threadIdx.x == 0) *out = v;
}

// Fixed: launch a whole warp and let the extra lanes contribute zero.
extern "C" __global__ void warp_sum_padded(const float* x, float* out, int n) {
    float v = (int)threadIdx.x < n ? x[threadIdx.x] : 0.0f;
    for (int offset = 16; offset > 0; offset /= 2) v += __shfl_down_sync(0xffffffffu, v, offset);
    if (threadIdx.x == 0) *out = v;
}

// BUG: the first 16 lanes reduce among themselves but start with xor 16, which crosses the mask.
extern "C" __global__ void half_warp_sum_bad(const float* x, float* out) {
    float v = x[threadIdx.x];
    if (threadIdx.x < 16) {
        for (int m = 16; m > 0; m /= 2) v += __shfl_xor_sync(0x0000ffffu, v, m);  // LINE: half
        if (threadIdx.x == 0) *out = v;
    }
}

// Fixed: within 16 lanes, start at xor 8.
extern "C" __global__ void half_warp_sum(const float* x, float* out) {
    float v = x[threadIdx.x];
    if (threadIdx.x < 16) {
        for (int m = 8; m > 0; m /= 2) v += __shfl_xor_sync(0x0000ffffu, v, m);
        if (threadIdx.x == 0) *out = v;
    }
}
