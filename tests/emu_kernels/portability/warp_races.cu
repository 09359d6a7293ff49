// warp_races.cu -- warp-synchronous code that is only correct by accident on a GPU, each next to its
// fixed version: the volatile last-warp unroll of a tree reduction, lanes passing values through shared
// memory, and a warp overwriting a shared slot another warp still has to read.  racecheck=True must
// report each bug and pass each fix.  Valid CUDA: the tests compile it with nvcc.
#define BLOCK 256

// BUG: the classic "unroll the last warp" with volatile and no __syncwarp.  Lanes of a warp are not
// guaranteed to run in lockstep (Volta and later), and here they run one after another.
extern "C" __global__ void reduce_volatile_unroll(const float* x, float* out, int n) {
    __shared__ float sdata[BLOCK];
    unsigned t = threadIdx.x, i = blockIdx.x * BLOCK + t;
    sdata[t] = i < (unsigned)n ? x[i] : 0.0f;
    __syncthreads();
    for (unsigned s = BLOCK / 2; s > 32; s >>= 1) {
        if (t < s) sdata[t] += sdata[t + s];
        __syncthreads();
    }
    if (t < 32) {
        volatile float* v = sdata;
        v[t] += v[t + 32];
        v[t] += v[t + 16];  // LINE: unroll
        v[t] += v[t + 8];
        v[t] += v[t + 4];
        v[t] += v[t + 2];
        v[t] += v[t + 1];
    }
    if (t == 0) out[blockIdx.x] = sdata[0];
}

// Fixed: read, __syncwarp(), write, __syncwarp() at every step.
extern "C" __global__ void reduce_syncwarp(const float* x, float* out, int n) {
    __shared__ float sdata[BLOCK];
    unsigned t = threadIdx.x, i = blockIdx.x * BLOCK + t;
    sdata[t] = i < (unsigned)n ? x[i] : 0.0f;
    __syncthreads();
    for (unsigned s = BLOCK / 2; s > 32; s >>= 1) {
        if (t < s) sdata[t] += sdata[t + s];
        __syncthreads();
    }
    if (t < 32) {
        float v = sdata[t];
        for (unsigned offset = 32; offset > 0; offset >>= 1) {
            v += sdata[t + offset];
            __syncwarp();
            sdata[t] = v;
            __syncwarp();
        }
    }
    if (t == 0) out[blockIdx.x] = sdata[0];
}

// BUG: each lane reads its neighbour's slot with no __syncwarp() after the writes.
extern "C" __global__ void rotate_lanes_bad(const float* x, float* y) {
    __shared__ float buf[32];
    int lane = threadIdx.x;
    buf[lane] = x[lane];  // LINE: rotate write
    y[lane] = buf[(lane + 1) % 32];  // LINE: rotate read
}

extern "C" __global__ void rotate_lanes(const float* x, float* y) {
    __shared__ float buf[32];
    int lane = threadIdx.x;
    buf[lane] = x[lane];
    __syncwarp();
    y[lane] = buf[(lane + 1) % 32];
}

// BUG: with 64 threads (two warps), thread t overwrites tile[t] while thread 63 - t, in the other
// warp, may not have read it yet: a __syncthreads() is missing between the read and the write.
extern "C" __global__ void mirror_double_bad(const float* x, float* y) {
    __shared__ float tile[64];
    int t = threadIdx.x;
    tile[t] = x[t];
    __syncthreads();
    float mirrored = tile[63 - t];
    tile[t] = 2.0f * mirrored;
    __syncthreads();
    y[t] = tile[t];
}

extern "C" __global__ void mirror_double(const float* x, float* y) {
    __shared__ float tile[64];
    int t = threadIdx.x;
    tile[t] = x[t];
    __syncthreads();
    float mirrored = tile[63 - t];
    __syncthreads();
    tile[t] = 2.0f * mirrored;
    __syncthreads();
    y[t] = tile[t];
}

// BUG: lanes pass values through global memory with no __syncwarp().
extern "C" __global__ void rotate_through_global_bad(float* scratch, float* y) {
    int lane = threadIdx.x;
    scratch[lane] = (float)(lane * lane);
    y[lane] = scratch[(lane + 1) % 32];
}

extern "C" __global__ void rotate_through_global(float* scratch, float* y) {
    int lane = threadIdx.x;
    scratch[lane] = (float)(lane * lane);
    __syncwarp();
    y[lane] = scratch[(lane + 1) % 32];
}
