// faults.cu -- kernels that crash or hang on purpose, one way each, for tests/test_faults_emulator.py.
// On a GPU each of these ends in "an illegal memory access was encountered" or an unspecified launch
// failure (or never finishes); under the CPU emulator each must become a Python exception that names
// the kernel, the thread, the block and the line, and leave Python running.
// Everything outside the __CUDA_EMU__ block is valid CUDA (nvcc compiles this file in the tests).

// The thread `bad` writes through a null pointer; the others write their index.
extern "C" __global__ void null_write(float* out, int bad) {
    float* p = threadIdx.x == bad ? nullptr : out;
    p[threadIdx.x] = (float)threadIdx.x;  // LINE: null_write
}

// Writes far outside any allocation (an index computed from garbage).
extern "C" __global__ void wild_write(float* out, long long offset) {
    out[offset] = 1.0f;  // LINE: wild_write
}

// q = a / b element-wise; a zero in b is a hardware exception on the CPU (on a GPU: garbage).
extern "C" __global__ void int_divide(const int* a, const int* b, int* q, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) q[i] = a[i] / b[i];  // LINE: int_divide
}

// Recursion whose depth the caller picks: deep enough, it overflows any stack.
__device__ int depth_sum(int n) {
    volatile int pad[64];  // volatile: the frames cannot be optimised away
    pad[n & 63] = n;
    return n <= 0 ? 0 : depth_sum(n - 1) + pad[n & 63];
}
extern "C" __global__ void deep_recursion(int* out, int depth) {
    out[threadIdx.x] = depth_sum(depth);
}

// A 256 KiB local array per thread (CUDA allows up to 512 KiB of local memory per thread).
#define LOCAL_N 65536
extern "C" __global__ void big_local_array(float* out, int n) {
    float local[LOCAL_N];
    for (int i = 0; i < n; ++i) local[i] = (float)(i % 7) * (float)(threadIdx.x + 1);
    float s = 0.0f;
    for (int i = n - 1; i >= 0; --i) s += local[i];
    out[threadIdx.x] = s;
}

// Thread `bad` stops the kernel with CUDA's __trap().
extern "C" __global__ void traps(int* out, int bad) {
    if ((int)threadIdx.x == bad) __trap();  // LINE: traps
    out[threadIdx.x] = 1;
}

// Waits for a flag that nobody sets: never finishes.
extern "C" __global__ void spins(const int* flag, int* out) {
    while (*(volatile const int*)flag == 0) {
    }
    out[0] = 1;
}

// Spins inside libm: the emulator can only stop it between calls.
extern "C" __global__ void spins_in_libm(const int* flag, float* out) {
    float x = 0.5f;
    while (*(volatile const int*)flag == 0) x = sinf(x) + 0.5f;
    out[0] = x;
}

#ifdef __CUDA_EMU__
// Host habits that nvcc refuses in device code but a learner may paste into a kernel for the emulator.
extern "C" __global__ void calls_exit(int* out, int bad) {
    if ((int)threadIdx.x == bad) exit(3);  // LINE: calls_exit
    out[threadIdx.x] = 1;
}
extern "C" __global__ void calls_abort(int* out, int bad) {
    if ((int)threadIdx.x == bad) abort();  // LINE: calls_abort
    out[threadIdx.x] = 1;
}
#endif
