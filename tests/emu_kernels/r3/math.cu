// Math functions and bit intrinsics from the CUDA Math API, one output column each.
#include <cuda_fp16.h>
#include <cuda_bf16.h>

// Float math: each thread writes 16 results for its x.
extern "C" __global__ void float_math(const float* x, float* out, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float v = x[i];
    float* o = out + 16 * i;
    o[0] = erff(v);
    o[1] = erfcf(v);
    o[2] = expf(v);
    o[3] = __expf(v);
    o[4] = rsqrtf(fabsf(v));
    o[5] = __fdividef(v, 3.0f);
    float s, c;
    sincospif(v, &s, &c);
    o[6] = s;
    o[7] = c;
    o[8] = sinpif(v);
    o[9] = cospif(v);
    o[10] = normcdff(v);
    o[11] = erfinvf(v / 4.0f);
    o[12] = __saturatef(v);
    o[13] = exp2f(v);
    o[14] = log1pf(fabsf(v));
    o[15] = tanhf(v);
}

// fmaf rounds once: a*b+c where a*b loses bits in a separate multiply.
extern "C" __global__ void fma_once(const float* a, const float* b, const float* c, float* fused, float* split,
                                    int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) {
        fused[i] = fmaf(a[i], b[i], c[i]);
        float p = __fmul_rn(a[i], b[i]);  // __fmul_rn is never contracted into an FMA
        split[i] = __fadd_rn(p, c[i]);
    }
}

extern "C" __global__ void minmax_nan(const float* a, const float* b, float* mn, float* mx, int n) {
    int i = threadIdx.x;
    if (i < n) { mn[i] = fminf(a[i], b[i]); mx[i] = fmaxf(a[i], b[i]); }
}

// Conversions to int: round-to-nearest-even, toward zero, and the saturation of out-of-range values.
extern "C" __global__ void to_int(const float* x, int* rn, int* rz, int* rd, int* ru, unsigned* urn, int* bits,
                                  long long* ll, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) {
        rn[i] = __float2int_rn(x[i]);
        rz[i] = __float2int_rz(x[i]);
        rd[i] = __float2int_rd(x[i]);
        ru[i] = __float2int_ru(x[i]);
        urn[i] = __float2uint_rn(x[i]);
        bits[i] = __float_as_int(x[i]);
        ll[i] = __float2ll_rz(x[i]);
    }
}

extern "C" __global__ void bit_ops(const unsigned* x, const unsigned* y, int* popc, int* clz, int* ffs,
                                   unsigned* brev, unsigned* umulhi, int* mulhi, unsigned* perm, unsigned* funnel,
                                   unsigned* sad, int* dp4a, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) {
        popc[i] = __popc(x[i]);
        clz[i] = __clz((int)x[i]);
        ffs[i] = __ffs((int)x[i]);
        brev[i] = __brev(x[i]);
        umulhi[i] = __umulhi(x[i], y[i]);
        mulhi[i] = __mulhi((int)x[i], (int)y[i]);
        perm[i] = __byte_perm(x[i], y[i], 0x5140);
        funnel[i] = __funnelshift_l(x[i], y[i], i % 40) ^ __funnelshift_r(x[i], y[i], i % 40);
        sad[i] = __sad((int)x[i] % 1000, (int)y[i] % 1000, 7u);
        dp4a[i] = __dp4a((int)x[i], (int)y[i], 5);
    }
}

// Integer overflow wraps around (two's complement) as on the GPU: a hash built on it must agree.
extern "C" __global__ void wraparound(const unsigned* seed, unsigned* out, int* iout, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) {
        unsigned h = seed[i];
        h ^= h >> 16; h *= 0x7feb352du; h ^= h >> 15; h *= 0x846ca68bu; h ^= h >> 16;
        out[i] = h;
        iout[i] = (int)(seed[i] * 2654435761u) + 2147483647;  // computed in unsigned, then converted
    }
}

// half and bfloat16: conversions and arithmetic with one rounding per operation.
extern "C" __global__ void half_ops(const float* x, const float* y, const float* z, __half* h, __half* hfma,
                                    __half* hadd, __nv_bfloat16* b, __nv_bfloat16* bfma, float* back, int* flags,
                                    int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) {
        __half a = __float2half(x[i]), bb = __float2half(y[i]), c = __float2half(z[i]);
        h[i] = a;
        hfma[i] = __hfma(a, bb, c);
        hadd[i] = __hadd(a, bb);
        __nv_bfloat16 p = __float2bfloat16(x[i]), q = __float2bfloat16(y[i]), r = __float2bfloat16(z[i]);
        b[i] = p;
        bfma[i] = __hfma(p, q, r);
        back[i] = __half2float(a) + __bfloat162float(p);
        flags[i] = __hisnan(a) + 2 * __hisinf(a) + 4 * __hisinf(p);
    }
}

extern "C" __global__ void half_convert_modes(const float* x, __half* rz, __half* rd, __half* ru,
                                              __nv_bfloat16* brz, int* hi, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) {
        rz[i] = __float2half_rz(x[i]);
        rd[i] = __float2half_rd(x[i]);
        ru[i] = __float2half_ru(x[i]);
        brz[i] = __float2bfloat16_rz(x[i]);
        hi[i] = __half2int_rz(__float2half(x[i]));
    }
}
