// Round 5: CUDA's directed-rounding double intrinsics and the SIMD video intrinsics, one launch each:
// thread i applies every variant to element i of the operands.

// out[8 * i + k]: op k of {add, sub, mul, div, rcp, sqrt, fma, fma with -c} in one rounding mode.
#define DIRECTED_DOUBLE(SUFFIX)                                                                      \
extern "C" __global__ void double_##SUFFIX(const double* a, const double* b, const double* c,        \
                                           double* out, int n) {                                     \
    int i = blockIdx.x * blockDim.x + threadIdx.x;                                                   \
    if (i >= n) return;                                                                              \
    double* o = out + 8 * i;                                                                         \
    o[0] = __dadd_##SUFFIX(a[i], b[i]);                                                              \
    o[1] = __dsub_##SUFFIX(a[i], b[i]);                                                              \
    o[2] = __dmul_##SUFFIX(a[i], b[i]);                                                              \
    o[3] = __ddiv_##SUFFIX(a[i], b[i]);                                                              \
    o[4] = __drcp_##SUFFIX(b[i]);                                                                    \
    o[5] = __dsqrt_##SUFFIX(fabs(a[i]));                                                             \
    o[6] = __fma_##SUFFIX(a[i], b[i], c[i]);                                                         \
    o[7] = __fma_##SUFFIX(a[i], b[i], -c[i]);                                                        \
}
DIRECTED_DOUBLE(rn)
DIRECTED_DOUBLE(rz)
DIRECTED_DOUBLE(rd)
DIRECTED_DOUBLE(ru)

// The float ones, same layout (rn first).
#define DIRECTED_FLOAT(SUFFIX)                                                                       \
extern "C" __global__ void float_##SUFFIX(const float* a, const float* b, const float* c,            \
                                          float* out, int n) {                                       \
    int i = blockIdx.x * blockDim.x + threadIdx.x;                                                   \
    if (i >= n) return;                                                                              \
    float* o = out + 8 * i;                                                                          \
    o[0] = __fadd_##SUFFIX(a[i], b[i]);                                                              \
    o[1] = __fsub_##SUFFIX(a[i], b[i]);                                                              \
    o[2] = __fmul_##SUFFIX(a[i], b[i]);                                                              \
    o[3] = __fdiv_##SUFFIX(a[i], b[i]);                                                              \
    o[4] = __frcp_##SUFFIX(b[i]);                                                                    \
    o[5] = __fsqrt_##SUFFIX(fabsf(a[i]));                                                            \
    o[6] = __fmaf_##SUFFIX(a[i], b[i], c[i]);                                                        \
    o[7] = __fmaf_##SUFFIX(a[i], b[i], -c[i]);                                                       \
}
DIRECTED_FLOAT(rn)
DIRECTED_FLOAT(rz)
DIRECTED_FLOAT(rd)
DIRECTED_FLOAT(ru)

// SIMD: out[N_SIMD * i + k] = intrinsic k of (a[i], b[i]).
#define SIMD_BOTH(F) F##2(x, y), F##4(x, y)
#define N_SIMD 87
extern "C" __global__ void simd(const unsigned* a, const unsigned* b, unsigned* out, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    const unsigned x = a[i], y = b[i];
    const unsigned r[N_SIMD] = {
        SIMD_BOTH(__vadd), SIMD_BOTH(__vaddss), SIMD_BOTH(__vaddus),
        SIMD_BOTH(__vsub), SIMD_BOTH(__vsubss), SIMD_BOTH(__vsubus),
        SIMD_BOTH(__vabsdiffs), SIMD_BOTH(__vabsdiffu),
        SIMD_BOTH(__vavgs), SIMD_BOTH(__vavgu), SIMD_BOTH(__vhaddu),
        SIMD_BOTH(__vmaxs), SIMD_BOTH(__vmaxu), SIMD_BOTH(__vmins), SIMD_BOTH(__vminu),
        SIMD_BOTH(__vcmpeq), SIMD_BOTH(__vcmpne),
        SIMD_BOTH(__vcmpges), SIMD_BOTH(__vcmpgeu), SIMD_BOTH(__vcmpgts), SIMD_BOTH(__vcmpgtu),
        SIMD_BOTH(__vcmples), SIMD_BOTH(__vcmpleu), SIMD_BOTH(__vcmplts), SIMD_BOTH(__vcmpltu),
        SIMD_BOTH(__vseteq), SIMD_BOTH(__vsetne),
        SIMD_BOTH(__vsetges), SIMD_BOTH(__vsetgeu), SIMD_BOTH(__vsetgts), SIMD_BOTH(__vsetgtu),
        SIMD_BOTH(__vsetles), SIMD_BOTH(__vsetleu), SIMD_BOTH(__vsetlts), SIMD_BOTH(__vsetltu),
        SIMD_BOTH(__vsads), SIMD_BOTH(__vsadu),
        __vabs2(x), __vabs4(x), __vabsss2(x), __vabsss4(x), __vneg2(x), __vneg4(x), __vnegss2(x), __vnegss4(x),
        __byte_perm(x, y, 0x3210 ^ (i & 0x7777)), __sad((int)x, (int)y, 7u), __usad(x, y, 7u),
        __funnelshift_l(x, y, i), __funnelshift_r(x, y, i),
    };
    for (int k = 0; k < N_SIMD; ++k) out[N_SIMD * i + k] = r[k];
}

// 32- and 64-bit integer intrinsics: out[12 * i + k].
extern "C" __global__ void bits(const unsigned long long* a, const unsigned long long* b, unsigned long long* out, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    const unsigned long long x = a[i], y = b[i];
    unsigned long long* o = out + 12 * i;
    o[0] = __popc((unsigned)x);
    o[1] = __popcll(x);
    o[2] = __clz((int)x);
    o[3] = __clzll((long long)x);
    o[4] = __ffs((int)x);
    o[5] = __ffsll((long long)x);
    o[6] = __brev((unsigned)x);
    o[7] = __brevll(x);
    o[8] = (unsigned)__mulhi((int)x, (int)y);
    o[9] = __umulhi((unsigned)x, (unsigned)y);
    o[10] = (unsigned long long)__mul64hi((long long)x, (long long)y);
    o[11] = __umul64hi(x, y);
}

// __hadd/__rhadd/__uhadd/__urhadd: out[4 * i + k].
extern "C" __global__ void halving(const int* a, const int* b, int* out, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    out[4 * i + 0] = __hadd(a[i], b[i]);
    out[4 * i + 1] = __rhadd(a[i], b[i]);
    out[4 * i + 2] = (int)__uhadd((unsigned)a[i], (unsigned)b[i]);
    out[4 * i + 3] = (int)__urhadd((unsigned)a[i], (unsigned)b[i]);
}

// CUDA's <math_constants.h> and the small type headers that public code includes explicitly.
#include <math_constants.h>
#include <vector_types.h>
#include <vector_functions.h>
#include <device_functions.h>
extern "C" __global__ void constants(float* f, double* d) {
    const float fs[] = {CUDART_PI_F, CUDART_PIO2_F, CUDART_SQRT_HALF_F, CUDART_L2E_F, CUDART_LN2_F, CUDART_INF_F,
                        CUDART_NAN_F, CUDART_NEG_ZERO_F, CUDART_MIN_DENORM_F, CUDART_MAX_NORMAL_F};
    const double ds[] = {CUDART_PI, CUDART_PI_LO, CUDART_SQRT_2PI, CUDART_L2E, CUDART_LN2, CUDART_INF, CUDART_NAN,
                         CUDART_NEG_ZERO, CUDART_MIN_DENORM, CUDART_TWO_TO_52};
    for (int k = 0; k < 10; ++k) { f[k] = fs[k]; d[k] = ds[k]; }
    float4 v = make_float4(f[0], f[1], f[2], f[3]);
    f[10] = v.x + v.w;
}

// Conversions with directed rounding that CUDA has and the emulator lacked, plus nvcc's __builtin_assume.
extern "C" __global__ void conversions(const long long* ll, const unsigned long long* ull, const double* d,
                                       const float* f, double* to_double, unsigned long long* to_unsigned, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    __builtin_assume(n > 0);
    __assume(i >= 0);
    if (i >= n) return;
    double* o = to_double + 6 * i;
    o[0] = __ll2double_rz(ll[i]); o[1] = __ll2double_rd(ll[i]); o[2] = __ll2double_ru(ll[i]);
    o[3] = __ull2double_rz(ull[i]); o[4] = __ull2double_rd(ull[i]); o[5] = __ull2double_ru(ull[i]);
    unsigned long long* u = to_unsigned + 6 * i;
    u[0] = __double2uint_rd(d[i]); u[1] = __double2uint_ru(d[i]);
    u[2] = __double2ull_rd(d[i]); u[3] = __double2ull_ru(d[i]);
    u[4] = __float2ull_rd(f[i]); u[5] = __float2ull_ru(f[i]);
}

// DPX (sm_90) min/max: out[N_DPX * i + k].
#define N_DPX 36
extern "C" __global__ void dpx(const unsigned* a, const unsigned* b, const unsigned* c, unsigned* out, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    const unsigned x = a[i], y = b[i], z = c[i];
    const int sx = (int)x, sy = (int)y, sz = (int)z;
    bool p, q;
    unsigned r[N_DPX] = {
        (unsigned)__vimax3_s32(sx, sy, sz), __vimax3_u32(x, y, z), (unsigned)__vimax3_s32_relu(sx, sy, sz),
        (unsigned)__vimax_s32_relu(sx, sy), (unsigned)__viaddmax_s32(sx, sy, sz), __viaddmax_u32(x, y, z),
        (unsigned)__viaddmax_s32_relu(sx, sy, sz), __vimax3_s16x2(x, y, z), __vimax3_u16x2(x, y, z),
        __vimax3_s16x2_relu(x, y, z), __vimax_s16x2_relu(x, y), __viaddmax_s16x2(x, y, z), __viaddmax_u16x2(x, y, z),
        __viaddmax_s16x2_relu(x, y, z),
        (unsigned)__vimin3_s32(sx, sy, sz), __vimin3_u32(x, y, z), (unsigned)__vimin3_s32_relu(sx, sy, sz),
        (unsigned)__vimin_s32_relu(sx, sy), (unsigned)__viaddmin_s32(sx, sy, sz), __viaddmin_u32(x, y, z),
        (unsigned)__viaddmin_s32_relu(sx, sy, sz), __vimin3_s16x2(x, y, z), __vimin3_u16x2(x, y, z),
        __vimin3_s16x2_relu(x, y, z), __vimin_s16x2_relu(x, y), __viaddmin_s16x2(x, y, z), __viaddmin_u16x2(x, y, z),
        __viaddmin_s16x2_relu(x, y, z),
    };
    r[28] = (unsigned)__vibmax_s32(sx, sy, &p); r[29] = p;
    r[30] = __vibmin_u32(x, y, &p); r[31] = p;
    r[32] = __vibmax_s16x2(x, y, &p, &q); r[33] = p * 2 + q;
    r[34] = __vibmin_u16x2(x, y, &p, &q); r[35] = p * 2 + q;
    for (int k = 0; k < N_DPX; ++k) out[N_DPX * i + k] = r[k];
}

// __dp4a and __dp2a_lo/_hi, signed and unsigned: out[6 * i + k].
extern "C" __global__ void dot_products(const int* a, const int* b, const int* c, int* out, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    const unsigned ua = a[i], ub = b[i], uc = c[i];
    out[6 * i + 0] = __dp4a(a[i], b[i], c[i]);
    out[6 * i + 1] = (int)__dp4a(ua, ub, uc);
    out[6 * i + 2] = __dp2a_lo(a[i], b[i], c[i]);
    out[6 * i + 3] = (int)__dp2a_lo(ua, ub, uc);
    out[6 * i + 4] = __dp2a_hi(a[i], b[i], c[i]);
    out[6 * i + 5] = (int)__dp2a_hi(ua, ub, uc);
}

// __fns: out[i] = __fns(mask[i], base[i], offset[i]).
extern "C" __global__ void find_nth_set(const unsigned* mask, const unsigned* base, const int* offset, unsigned* out, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = __fns(mask[i], base[i], offset[i]);
}
