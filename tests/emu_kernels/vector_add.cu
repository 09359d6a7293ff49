// vector_add.cu -- the "hello world" of CUDA: c[i] = a[i] + b[i].
//
// Shapes: a, b, c are float[n].  Launch: block = 256 threads, grid = ceil(n / 256) blocks,
// one element per thread.  The guard `if (i < n)` handles ragged n (not a multiple of 256).
//
// Versions:
//   v1 vector_add         one float per thread
//   v2 vector_add_float4  four floats per thread through one 16-byte float4 load/store (the array
//                         must be 16-byte aligned); the last n % 4 elements are done one at a time.
extern "C" __global__ void __launch_bounds__(256)
vector_add(const float* __restrict__ a, const float* __restrict__ b, float* __restrict__ c, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) c[i] = a[i] + b[i];
}

extern "C" __global__ void vector_add_float4(const float* __restrict__ a, const float* __restrict__ b,
                                             float* __restrict__ c, int n) {
    static_assert(sizeof(float4) == 16 && alignof(float4) == 16, "float4 is 16 bytes, 16-aligned");
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    int n4 = n / 4;
    if (i < n4) {
        float4 x = reinterpret_cast<const float4*>(a)[i];
        float4 y = reinterpret_cast<const float4*>(b)[i];
        reinterpret_cast<float4*>(c)[i] = make_float4(x.x + y.x, x.y + y.y, x.z + y.z, x.w + y.w);
    }
    int tail = 4 * n4 + i;  // the first (n % 4) threads also do one leftover element
    if (tail < n && i < 4) c[tail] = a[tail] + b[tail];
}
