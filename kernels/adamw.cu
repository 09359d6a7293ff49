// adamw.cu -- one launch updates every trainable tensor with torch.optim.AdamW's rule.
//
// Per element, for tensor t at step count `step` (hyperparameters lr, beta1, beta2, eps, wd):
//     p  <- p * (1 - lr * wd)                         decoupled weight decay, applied first
//     m  <- m + (1 - beta1) (g - m)                   = beta1 m + (1 - beta1) g   (torch: lerp)
//     v  <- beta2 v + (1 - beta2) g^2
//     p  <- p - step_size * m / (sqrt(v) / bc2_sqrt + eps)
// with step_size = lr / (1 - beta1^step) and bc2_sqrt = sqrt(1 - beta2^step) computed on the host in
// double precision (the bias corrections), and eps OUTSIDE the square root, exactly as PyTorch does.
// Adam (L2 weight decay) is the same rule with wd = 0 and a gradient that already holds wd * p.
//
// Why one kernel: AdamW is pure bandwidth -- 16 bytes read (p, g, m, v) and 12 written (p, m, v) per
// parameter, about 5 flops.  Written as a dozen array operations per tensor (what NumPy/CuPy do) every
// operation streams the arrays through memory again, and a LoRA model has hundreds of small tensors,
// each a separate launch.  Here every tensor's elements are read and written once, in one launch.
// Floor on an H200 (4.8 TB/s): 28 bytes/param -> 100M params in ~0.58 ms.
//
// Multi-tensor launch.  The host passes, for T tensors:
//     addresses  [4, T] uint64  device addresses of param, grad, exp_avg, exp_avg_sq of each tensor
//                               (use_addresses = 1, the normal path: tensors stay where they are), or
//     flat_p/g/m/v             four flat buffers holding all tensors back to back (use_addresses = 0;
//                               the CPU emulator's race check and sanitizer can only see memory that is
//                               passed as a kernel argument, so minilora.kernels uses this mode there);
//     offsets    [T + 1] int64 tensor t is elements [offsets[t], offsets[t+1]) (its size, in both modes);
//     chunks     [2 * blocks]  block b updates chunk chunks[2b+1] (ADAMW_CHUNK elements) of tensor chunks[2b];
//     hyper      [T, 8] float  per tensor: 1 - lr*wd, 1 - beta1, beta2, 1 - beta2, step_size, bc2_sqrt, eps, 0
//                               (per tensor, so parameter groups with different lr / wd share the launch).
// Launch: block 256 threads, grid = number of chunks.  Each thread moves float4s when all four arrays of
// its tensor are 16-byte aligned, else single floats.
//
// Versions: one.  Each element is read once and written once -- there is no data reuse to tile, so
// shared memory and register blocking (v2, v3 of the GEMM kernels) have nothing to offer here; what
// matters is one launch, coalesced float4 accesses and enough blocks in flight.
//
// Run by hand:  minilora.kernels.adamw_step(params, grads, exp_avgs, exp_avg_sqs, lr=1e-3, beta1=0.9,
//               beta2=0.999, eps=1e-8, weight_decay=0.01, step=1, device="emu")

#define ADAMW_THREADS 256
#define ADAMW_CHUNK 4096  // elements per block: 256 threads x 4 float4s

struct AdamWHyper {
    float decay;          // 1 - lr * weight_decay
    float one_minus_beta1;
    float beta2;
    float one_minus_beta2;
    float step_size;      // lr / (1 - beta1^step)
    float bc2_sqrt;       // sqrt(1 - beta2^step)
    float eps;
    float unused;
};

__device__ __forceinline__ void adamw_element(float& p, float g, float& m, float& v, const AdamWHyper& h) {
    // EXERCISE 5.2: update one element in place: weight decay, m, v, then the bias-corrected step (see header)
    // BEGIN SOLUTION
    p *= h.decay;                                     // decoupled weight decay, before the step
    m = fmaf(h.one_minus_beta1, g - m, m);            // m + (1 - beta1)(g - m)
    v = fmaf(h.one_minus_beta2 * g, g, h.beta2 * v);  // beta2 v + (1 - beta2) g^2
    const float denom = sqrtf(v) / h.bc2_sqrt + h.eps;  // sqrt(v_hat) + eps: eps outside the root
    p -= h.step_size * m / denom;
    // END SOLUTION
}

extern "C" __global__ void __launch_bounds__(ADAMW_THREADS)
adamw_multi_tensor(const unsigned long long* __restrict__ addresses, float* __restrict__ flat_p,
                   const float* __restrict__ flat_g, float* __restrict__ flat_m, float* __restrict__ flat_v,
                   const long long* __restrict__ offsets, const int* __restrict__ chunks,
                   const float* __restrict__ hyper, int num_tensors, int use_addresses) {
    const int t = chunks[2 * blockIdx.x];
    const long long begin = (long long)chunks[2 * blockIdx.x + 1] * ADAMW_CHUNK;
    const long long size = offsets[t + 1] - offsets[t];
    const long long count = min(size - begin, (long long)ADAMW_CHUNK);  // elements of this chunk
    float *p, *m, *v;
    const float* g;
    if (use_addresses) {
        p = reinterpret_cast<float*>(addresses[t]) + begin;
        g = reinterpret_cast<const float*>(addresses[num_tensors + t]) + begin;
        m = reinterpret_cast<float*>(addresses[2 * num_tensors + t]) + begin;
        v = reinterpret_cast<float*>(addresses[3 * num_tensors + t]) + begin;
    } else {
        p = flat_p + offsets[t] + begin;
        g = flat_g + offsets[t] + begin;
        m = flat_m + offsets[t] + begin;
        v = flat_v + offsets[t] + begin;
    }
    const AdamWHyper h = reinterpret_cast<const AdamWHyper*>(hyper)[t];

    long long done = 0;  // elements handled by the float4 loop
    const unsigned long long any_misaligned = (reinterpret_cast<unsigned long long>(p) |
                                               reinterpret_cast<unsigned long long>(g) |
                                               reinterpret_cast<unsigned long long>(m) |
                                               reinterpret_cast<unsigned long long>(v)) & 15ull;
    if (any_misaligned == 0) {
        for (long long q = threadIdx.x; q < count / 4; q += blockDim.x) {
            float4 p4 = reinterpret_cast<float4*>(p)[q];
            const float4 g4 = reinterpret_cast<const float4*>(g)[q];
            float4 m4 = reinterpret_cast<float4*>(m)[q];
            float4 v4 = reinterpret_cast<float4*>(v)[q];
            adamw_element(p4.x, g4.x, m4.x, v4.x, h);
            adamw_element(p4.y, g4.y, m4.y, v4.y, h);
            adamw_element(p4.z, g4.z, m4.z, v4.z, h);
            adamw_element(p4.w, g4.w, m4.w, v4.w, h);
            reinterpret_cast<float4*>(p)[q] = p4;
            reinterpret_cast<float4*>(m)[q] = m4;
            reinterpret_cast<float4*>(v)[q] = v4;
        }
        done = count / 4 * 4;
    }
    for (long long i = done + threadIdx.x; i < count; i += blockDim.x) {  // the tail, or everything
        float pi = p[i], mi = m[i], vi = v[i];
        adamw_element(pi, g[i], mi, vi, h);
        p[i] = pi;
        m[i] = mi;
        v[i] = vi;
    }
}
