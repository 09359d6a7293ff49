// buggy.cu -- kernels with classic bugs, each caught by one of the emulator's checks.
// They are valid CUDA (nvcc compiles them); the bugs only show when they run.
#define TILE 16

// BUG: the second __syncthreads() of the tiled matmul is missing, so a fast thread overwrites
// As/Bs with the next tile while slower threads still read the current one.  (check_races)
extern "C" __global__ void matmul_missing_sync(const float* A, const float* B, float* C, int M, int N, int K) {
    __shared__ float As[TILE][TILE];
    __shared__ float Bs[TILE][TILE];
    int tx = threadIdx.x, ty = threadIdx.y;
    int row = blockIdx.y * TILE + ty, col = blockIdx.x * TILE + tx;
    float acc = 0.0f;
    for (int t = 0; t < K; t += TILE) {
        As[ty][tx] = (row < M && t + tx < K) ? A[row * K + t + tx] : 0.0f;
        Bs[ty][tx] = (t + ty < K && col < N) ? B[(t + ty) * N + col] : 0.0f;
        __syncthreads();
        for (int k = 0; k < TILE; ++k) acc += As[ty][k] * Bs[k][tx];
    }
    if (row < M && col < N) C[row * N + col] = acc;
}

// BUG: the barrier is inside the `if`, so only some threads reach it.  (BarrierError)
extern "C" __global__ void reduce_divergent_sync(float* x) {
    __shared__ float s[64];
    int t = threadIdx.x;
    s[t] = x[t];
    __syncthreads();
    for (int stride = 32; stride > 0; stride >>= 1) {
        if (t < stride) {
            s[t] += s[t + stride];
            __syncthreads();
        }
    }
    __syncthreads();  // the threads that skipped the loop's barrier wait here, the others there
    if (t == 0) x[0] = s[0];
}

// Not a bug since Volta: threads past the end return before the barrier, which then waits for the threads
// that have not exited only (CUDA Programming Guide, compute capability 7.x; PTX ISA, exit).  It runs.
extern "C" __global__ void reduce_early_return(const float* x, float* out, int n) {
    __shared__ float s[128];
    int t = threadIdx.x;
    if (t >= n) return;
    s[t] = x[t];
    __syncthreads();
    if (t == 0) {
        float acc = 0.0f;
        for (int k = 0; k < n; ++k) acc += s[k];
        out[0] = acc;
    }
}

// BUG: every thread reads its neighbour's slot before anyone wrote it: no barrier between the
// write and the read, and thread 0 reads the slot nobody writes.  (poisoned shared memory: NaN)
extern "C" __global__ void read_before_write(float* out) {
    __shared__ float s[32];
    int t = threadIdx.x;
    float left = t > 0 ? s[t - 1] : s[31];
    s[t] = (float)t;
    out[t] = left;
}

// BUG: off by one, reads x[n].  (sanitize=True -> KernelFault)
extern "C" __global__ void oob_global_read(const float* x, float* y, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] = x[i + 1];
}

// BUG: `<=` instead of `<`, writes y[n].  (sanitize=True -> KernelFault)
extern "C" __global__ void oob_global_write(const float* x, float* y, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i <= n) y[i] = 2.0f * (i < n ? x[i] : 0.0f);
}

// BUG: the shared tile has blockDim.x entries but thread t writes slot t + 1.
// (sanitize=True -> KernelFault; the canary check catches it even without the sanitizer)
extern "C" __global__ void oob_shared_write(const float* x, float* y) {
    __shared__ float tile[32];
    int t = threadIdx.x;
    tile[t + 1] = x[t];
    __syncthreads();
    y[t] = tile[t];
}

// BUG: reads the dynamic shared array one past its end (shared_mem = blockDim.x * 4 bytes).
extern "C" __global__ void oob_dynamic_shared_read(float* y) {
    extern __shared__ float buf[];
    int t = threadIdx.x;
    buf[t] = (float)t;
    __syncthreads();
    y[t] = buf[t + 1];
}

// BUG: only half the warp calls the shuffle, but the mask names all 32 lanes.  (BarrierError)
extern "C" __global__ void shfl_divergent(float* x) {
    int lane = threadIdx.x & 31;
    float v = x[threadIdx.x];
    if (lane < 16) v += __shfl_down_sync(0xffffffffu, v, 8);
    x[threadIdx.x] = v;
}

// A device-side assert that fails for one thread.  (KernelFault)
#include <assert.h>
extern "C" __global__ void failing_assert(const int* x, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) assert(x[i] >= 0);
}

// BUG: the two halves of the block wait at two *different* barriers.  (BarrierError)
extern "C" __global__ void sync_if_else(float* x) {
    int t = threadIdx.x;
    if (t < 16) {
        x[t] *= 2.0f;
        __syncthreads();
    } else {
        x[t] += 1.0f;
        __syncthreads();
    }
}
