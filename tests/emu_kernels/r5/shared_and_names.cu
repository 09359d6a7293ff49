// __shared__ structs and unions defined in place, and kernels named like C library functions.

// A block's statistics kept in one anonymous shared struct (as in reductions that carry several fields).
extern "C" __global__ void block_stats(const float* x, float* out, int n) {
    __shared__ struct {
        float sum[256];
        float max[256];
        int count;
    } s;
    const int t = threadIdx.x, i = blockIdx.x * blockDim.x + t;
    s.sum[t] = i < n ? x[i] : 0.0f;
    s.max[t] = i < n ? x[i] : -INFINITY;
    if (t == 0) s.count = min(n - blockIdx.x * blockDim.x, (int)blockDim.x);
    __syncthreads();
    for (int stride = blockDim.x / 2; stride > 0; stride >>= 1) {
        if (t < stride) {
            s.sum[t] += s.sum[t + stride];
            s.max[t] = fmaxf(s.max[t], s.max[t + stride]);
        }
        __syncthreads();
    }
    if (t == 0) {
        out[3 * blockIdx.x + 0] = s.sum[0];
        out[3 * blockIdx.x + 1] = s.max[0];
        out[3 * blockIdx.x + 2] = (float)s.count;
    }
}

// A named struct defined in place, two declarators (one an array), and the type used again afterwards.
extern "C" __global__ void pairs(const float* x, float* out) {
    __shared__ struct Pair { float key; int index; } best, pair[64];
    const int t = threadIdx.x;
    Pair mine = {x[t], t};
    pair[t] = mine;
    __syncthreads();
    if (t == 0) {
        best = pair[0];
        for (int k = 1; k < 64; ++k)
            if (pair[k].key > best.key) best = pair[k];
    }
    __syncthreads();
    out[t] = best.key * 1000.0f + (float)best.index + (float)sizeof(Pair) * 0.0f;
}

// A union in shared memory: the float bits reread as unsigned (type punning through shared memory).
extern "C" __global__ void float_bits(const float* x, unsigned* out) {
    __shared__ union {
        float f[128];
        unsigned u[128];
    } buffer;
    buffer.f[threadIdx.x] = x[threadIdx.x];
    __syncthreads();
    out[threadIdx.x] = buffer.u[127 - threadIdx.x];
}

// A file-scope shared struct.
__shared__ struct { int hits; int misses; } counters;
extern "C" __global__ void count_positive(const float* x, int* out, int n) {
    if (threadIdx.x == 0) counters.hits = counters.misses = 0;
    __syncthreads();
    for (int i = threadIdx.x; i < n; i += blockDim.x) atomicAdd(x[i] > 0 ? &counters.hits : &counters.misses, 1);
    __syncthreads();
    if (threadIdx.x == 0) { out[0] = counters.hits; out[1] = counters.misses; }
}

// __shared__ through macros: one that stands for the keyword (with an alignment), one that declares an array.
#define SMEM __shared__ __align__(16)
#define DECLARE_SHARED(T, name, count) __shared__ T name[count];
#ifdef SMEM  // the macro's name in a condition stays as written
#define SMEM_SCALE 1.0f
#else
#define SMEM_SCALE 0.0f
#endif
#define DECLARE_ORDER \
    SMEM int order[64]; \
    order[threadIdx.x] = 63 - threadIdx.x;
// A qualified, aligned struct defined in place.
extern "C" __global__ void macros_and_qualifiers(const float* x, float* out) {
    DECLARE_SHARED(float, tile, 64)
    DECLARE_ORDER
    static __shared__ volatile struct alignas(16) { float4 quad[16]; int last; } q;
    const int t = threadIdx.x;
    tile[t] = x[t];
    ((volatile float*)&q.quad[t / 4].x)[t % 4] = 2.0f * x[t];
    if (t == 63) q.last = t;
    __syncthreads();
    const int u = order[t];
    out[t] = SMEM_SCALE * tile[u] + ((volatile float*)&q.quad[u / 4].x)[u % 4] + (float)q.last + (((size_t)&q) % 16 == 0 ? 1000.0f : 0.0f);
}

// A struct in place holding a nested struct, a named union and a member function.
extern "C" __global__ void nested_members(float* out) {
    __shared__ struct {
        struct { float a[32]; } p;
        union Bits { int i; float f; } u;
        float get(int i) const { return p.a[i]; }
    } s;
    s.p.a[threadIdx.x] = threadIdx.x;
    if (threadIdx.x == 0) s.u.f = 0.5f;
    __syncthreads();
    out[threadIdx.x] = s.get(31 - threadIdx.x) + s.u.f;
}

// Kernels named like libc / libm functions, calling those functions inside.
extern "C" __global__ void abs(const int* x, int* out, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = ::abs(x[i]);
}
extern "C" __global__ void exp(const float* x, float* out, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = expf(x[i]);
}
extern "C" __global__ void __launch_bounds__(256) copy(const float* x, float* out, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = x[i];
}
extern "C" __global__ void memset(float* out, float value, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = value;
}
// C++ linkage, reached through name_expressions: an overload of sqrt, and a template called scale.
__global__ void sqrt(const float* x, float* out, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = sqrtf(x[i]);
}
template <typename T>
__global__ void scale(const T* x, T* out, T factor, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = x[i] * factor;
}

// Kernels in namespaces: extern "C" (found by its plain name), and C++ ones through name_expressions.
namespace ops {
extern "C" __global__ void ns_fill(float* out, float value, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = value;
}
__global__ void twice(const float* x, float* out, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = 2.0f * x[i];
}
namespace inner {
__global__ void log(const float* x, float* out, int n) {  // a libc name, in a nested namespace
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = logf(x[i]);
}
}  // namespace inner
}  // namespace ops
