/* torch's float32 SLEEF kernels (Sleef_expf16_u10, expm1f, tanhf, log1pf as ATen's Vectorized<float>
 * runs them), written scalar, step for step as minilora/float32_math.py's NumPy port writes them: the port
 * is the reference a learner reads, this file the same steps at C speed. Every float operation rounds as
 * SLEEF's vector code rounds it: fmaf() exactly where SLEEF (and the port) fuses, and nowhere else
 * (minilora/native/__init__.py compiles it with -ffp-contract=off and without -ffast-math, so GCC neither
 * fuses nor reorders; it may vectorize the loops, which changes no bit). A select is a ternary, so that
 * the loops stay branch-free and vectorize.
 *
 * Each kernel maps n contiguous floats; the caller (float32_math) splits big arrays across threads and
 * redoes torch's scalar tail (C's functions, not SLEEF's) in NumPy. */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stddef.h>
#include <string.h>
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#endif

typedef struct { float hi, lo; } df;

/* A function the loops must have inlined to vectorize: GCC's size heuristics leave pow's log and exp as calls
 * otherwise (a call in the loop body: scalar, ~10x slower) */
#if defined(__GNUC__)
#define ALWAYS_INLINE static inline __attribute__((always_inline))
#else
#define ALWAYS_INLINE static inline
#endif  /* a double-float: the unevaluated sum hi + lo */

static inline uint32_t bits_of(float x) { uint32_t u; memcpy(&u, &x, 4); return u; }
static inline float float_of(uint32_t u) { float x; memcpy(&x, &u, 4); return x; }

/* rint(x) for |x| < 2^22 (ties to even), as the port's 1.5 * 2^23 trick: x + C - C */
static inline float round_to_int(float x) { return (x + 12582912.0f) - 12582912.0f; }

/* 2^k as float32 for an integer-valued float k in [-126, 127], from its bits */
static inline float pow2(float k) { return float_of((uint32_t)((int32_t)k + 127) << 23); }

/* SLEEF's ldexp2kf: x 2^k in two steps (each factor a normal float), k clipped to [-150, 150] first
 * (NaN: 0); the halves as an arithmetic shift right (floor), as the port's k >> 1. The clip is a min and a max:
 * written as "q > 150 ? 150 : q < -150 ? -150 : q", GCC turned each case into its own constant products,
 * computed in every vector lane, and x 2^-75 2^-75 underflowed in each vector: a microcode assist a vector,
 * which made an exp of 704K floats take 2.3 ms instead of ~0.4 (2 vCPUs of an Intel Xeon, AVX-512). */
static inline float scale_by_pow2(float x, float q) {
    float at_most = q > 150.0f ? 150.0f : q, clipped = at_most < -150.0f ? -150.0f : at_most;  /* (max, min) */
    int32_t k = (int32_t)(q == q ? clipped : 0.0f);
    int32_t half = k >> 1;
    return x * pow2((float)half) * pow2((float)(k - half));
}

/* ---- Sleef_expf16_u10 ------------------------------------------------------------------------ */
#define R_LN2 1.442695040888963407359924681001892137426645954152985934135449406931f
#define L2U 0.693145751953125f
#define L2L 1.428606765330187045e-06f

static inline float sleef_exp(float d) {
    float q = round_to_int(d * R_LN2);
    float s = fmaf(q, -L2U, d);
    s = fmaf(q, -L2L, s);
    float u = 0.000198527617612853646278381f;
    u = fmaf(u, s, 0.00139304355252534151077271f);
    u = fmaf(u, s, 0.00833336077630519866943359f);
    u = fmaf(u, s, 0.0416664853692054748535156f);
    u = fmaf(u, s, 0.166666671633720397949219f);
    u = fmaf(u, s, 0.5f);
    u = fmaf(s * s, u, s);
    u = u + 1.0f;
    u = scale_by_pow2(u, q);
    u = d < -104.0f ? 0.0f : u;
    u = d > 100.0f ? INFINITY : u;
    return d != d ? d : u;
}

/* ---- double-float arithmetic, SLEEF's df* (the port's _df_*) ---------------------------------- */
static inline df df_add_float(df x, float y) {
    float hi = x.hi + y, v = hi - x.hi;
    return (df){hi, ((x.hi - (hi - v)) + (y - v)) + x.lo};
}
static inline df df_add(df x, df y) {
    float hi = x.hi + y.hi, v = hi - x.hi;
    return (df){hi, ((x.hi - (hi - v)) + (y.hi - v)) + (x.lo + y.lo)};
}
static inline df df_mul_float(df x, float y) {
    float hi = x.hi * y;
    return (df){hi, fmaf(x.lo, y, fmaf(x.hi, y, -hi))};
}
static inline df df_mul(df x, df y) {
    float hi = x.hi * y.hi;
    return (df){hi, fmaf(x.hi, y.lo, fmaf(x.lo, y.hi, fmaf(x.hi, y.hi, -hi)))};
}
static inline df df_square(df x) {
    float hi = x.hi * x.hi;
    return (df){hi, fmaf(x.hi + x.hi, x.lo, fmaf(x.hi, x.hi, -hi))};
}
static inline df df_reciprocal(df d) {
    float hi = 1.0f / d.hi;
    return (df){hi, hi * fmaf(-d.lo, hi, fmaf(-d.hi, hi, 1.0f))};
}
static inline df df_divide(df n, df d) {
    float t = 1.0f / d.hi, hi = n.hi * t;
    float u = fmaf(t, n.hi, -hi);
    float lo = fmaf(-d.lo, t, fmaf(-d.hi, t, 1.0f));
    return (df){hi, fmaf(hi, lo, fmaf(n.lo, t, u))};
}

/* SLEEF's expk2f: e^a as a double-float, 2^q e^s with e^s = 1 + s + s^2 (1/2 + s (1/6 + s P(s))) */
static inline df expk2(float a) {
    float q = round_to_int(a * R_LN2);
    q = q > 150.0f ? 150.0f : q < -150.0f ? -150.0f : q == q ? q : 0.0f;
    df s = df_add_float((df){a, 0.0f}, q * -L2U);
    s = df_add_float(s, q * -L2L);
    float u = 0.1980960224e-3f;
    u = fmaf(u, s.hi, 0.1394256484e-2f);
    u = fmaf(u, s.hi, 0.8333456703e-2f);
    u = fmaf(u, s.hi, 0.4166637361e-1f);
    df t = df_add_float(df_mul_float(s, u), 0.166666659414234244790680580464f);
    t = df_add_float(df_mul(s, t), 0.5f);
    t = df_add(s, df_mul(df_square(s), t));
    float hi = 1.0f + t.hi;
    t = (df){hi, ((1.0f - hi) + t.hi) + t.lo};
    t.hi = a < -104.0f ? 0.0f : scale_by_pow2(t.hi, q);
    t.lo = a < -104.0f ? 0.0f : scale_by_pow2(t.lo, q);
    return t;
}

/* SLEEF's last selects in expm1 and log1p: -0.0 and NaN come out as they went in */
static inline float keep_negative_zero_and_nan(float x, float out) {
    return (x != x || bits_of(x) == 0x80000000u) ? x : out;
}

/* ---- Sleef_expm1f16_u10 ------------------------------------------------------------------------ */
static inline float sleef_expm1(float a) {
    df d = df_add_float(expk2(a), -1.0f);
    float out = d.hi + d.lo;
    out = a > 88.72283172607421875f ? INFINITY : out;
    out = a < -16.635532333438687426013570f ? -1.0f : out;
    return keep_negative_zero_and_nan(a, out);
}

/* ---- Sleef_tanhf16_u10 ------------------------------------------------------------------------- */
static inline float sleef_tanh(float x) {
    float magnitude = fabsf(x);
    df e = expk2(magnitude), inverse = df_reciprocal(e);
    df d = df_divide(df_add(e, (df){-inverse.hi, -inverse.lo}), df_add(e, inverse));
    float out = d.hi + d.lo;
    out = (magnitude > 8.664339742f || out != out) ? 1.0f : out;
    out = copysignf(out, x);
    return x != x ? x : out;
}

/* ---- Sleef_log1pf16_u10 (AVX-512's branch: the exponent from getexp) --------------------------- */
static inline float sleef_log1p(float d) {
    float scaled = (d + 1.0f) * (float)(1 / 0.75);
    int32_t exponent = (int32_t)((bits_of(scaled) >> 23) & 0xff) - 127;  /* getexp: floor(log2 |v|) */
    exponent = scaled == 0.0f ? -1 : exponent;  /* (the port's frexp of 0; NaN: overridden below) */
    float e = (float)exponent;
    float t = exponent < 127 ? pow2((float)-exponent)  /* 2^-e; 2^-127 and 2^-128 are subnormal */
              : exponent == 127 ? 5.877471754111437540e-39f : 2.938735877055718770e-39f;
    float m = fmaf(d, t, t - 1.0f);
    df s = df_mul_float((df){0.69314718246459960938f, -1.904654323148236017e-09f}, e);
    float two_plus_m = 2.0f + m;
    df x = df_divide((df){m, 0.0f}, (df){two_plus_m, (2.0f - two_plus_m) + m});
    float x2 = x.hi * x.hi;
    float p = fmaf(fmaf(0.3027294874f, x2, 0.3996108174f), x2, 0.6666694880f);
    float hi = s.hi + x.hi * 2;  /* s + 2x (SLEEF's dfadd, |s| >= |2x|), then + x^3 p */
    s = (df){hi, (((s.hi - hi) + x.hi * 2) + s.lo) + x.lo * 2};
    float tail = x2 * x.hi * p;
    hi = s.hi + tail;
    float out = hi + (((s.hi - hi) + tail) + s.lo);
    out = d == INFINITY ? INFINITY : out;
    out = d < -1.0f ? NAN : out;
    out = d == -1.0f ? -INFINITY : out;
    return keep_negative_zero_and_nan(d, out);
}

/* frexpf's exponent and fraction from the bits, as selects: frexpf itself is a call per element, which keeps GCC
 * from vectorizing a loop (8-13x slower). As glibc's: 0, inf and NaN give exponent 0 and themselves (NaN quieted,
 * as its x + x), a subnormal is normalized (scaled by 2^24 first, exactly). */
#define FLOAT_MIN_NORMAL 1.17549435082228750797e-38f
#define FLOAT_MAX 3.40282346638528859812e+38f
static inline float frexp_exponent(float v) {  /* (a float: GCC vectorizes these selects, not int ones) */
    float a = fabsf(v);
    int tiny = a < FLOAT_MIN_NORMAL;
    float biased = (float)(int32_t)(bits_of(tiny ? a * 16777216.0f : a) >> 23);
    return ((a == 0.0f) | !(a <= FLOAT_MAX)) ? 0.0f : biased - (tiny ? 150.0f : 126.0f);
}
static inline float frexp_fraction(float v) {
    float a = fabsf(v);
    uint32_t b = bits_of(a < FLOAT_MIN_NORMAL ? v * 16777216.0f : v);
    float fraction = float_of((b & 0x807fffffu) | 0x3f000000u);  /* the sign and mantissa, exponent -1 */
    return (a == 0.0f || !(a <= FLOAT_MAX)) ? v + v : fraction;
}

/* Sleef_logf16_u10 (the port's sleef_log): e from getexp(d / 0.75), m = getmant(d) in [0.75, 1.5) (frexpf: its
 * fraction in [0.5, 1), doubled below 0.75), t = (m - 1) / (m + 1) in double-float, then as log1p above */
static inline float sleef_log(float d) {
    float e = isinf(d) ? 128.0f : frexp_exponent(d * (float)(1 / 0.75)) - 1.0f;
    float fraction = frexp_fraction(d);
    float m = fabsf(fraction) < 0.75f ? fraction * 2.0f : fraction;
    df s = df_mul_float((df){0.69314718246459960938f, -1.904654323148236017e-09f}, e);
    float denominator = 1.0f + m, v = denominator - 1.0f;
    df x = df_divide((df){m - 1.0f, 0.0f}, (df){denominator, (1.0f - (denominator - v)) + (m - v)});
    float x2 = x.hi * x.hi;
    float p = fmaf(fmaf(0.3027294874f, x2, 0.3996108174f), x2, 0.6666694880f);
    float hi = s.hi + x.hi * 2;
    s = (df){hi, (((s.hi - hi) + x.hi * 2) + s.lo) + x.lo * 2};
    float tail = x2 * x.hi * p;
    hi = s.hi + tail;
    float out = hi + (((s.hi - hi) + tail) + s.lo);
    out = d == INFINITY ? INFINITY : out;
    out = (d < 0.0f || d != d) ? NAN : out;
    return d == 0.0f ? -INFINITY : out;
}

/* ---- the kernels float32_math calls (ctypes releases the GIL around each call) ----------------- */
/* ---- Sleef_powf16_u10: expkf(logkf(|x|) y), then C99's special cases as SLEEF writes them ------- */
static inline df df_two_sum(float x, float y) {  /* dfadd2 of two floats */
    float hi = x + y, v = hi - x;
    return (df){hi, (x - (hi - v)) + (y - v)};
}
static inline df df_add_fast(df x, df y) {  /* dfadd: |x| >= |y|, the low parts added last */
    float hi = x.hi + y.hi;
    return (df){hi, (((x.hi - hi) + y.hi) + x.lo) + y.lo};
}
ALWAYS_INLINE df sleef_logk(float d) {  /* ln d as a double-float (d > 0; AVX-512's getexp/getmant) */
    float e = isinf(d) ? 128.0f : frexp_exponent(d * (1.0f / 0.75f)) - 1.0f;
    float fraction = frexp_fraction(d);
    float m = fraction < 0.75f ? fraction * 2.0f : fraction;
    df x = df_divide(df_two_sum(-1.0f, m), df_two_sum(1.0f, m)), x2 = df_square(x);
    float t = fmaf(fmaf(0.240320354700088500976562f, x2.hi, 0.285112679004669189453125f), x2.hi,
                   0.400007992982864379882812f);
    df series = df_mul(df_mul(x2, x), df_add(df_mul_float(x2, t),
                                              (df){0.66666662693023681640625f, 3.69183861259614332084311e-09f}));
    return df_add(df_mul_float((df){0.69314718246459960938f, -1.904654323148236017e-09f}, e),
                  df_add((df){x.hi * 2.0f, x.lo * 2.0f}, series));
}
static inline float sleef_ldexp(float x, int32_t q) {  /* x 2^q in five products, as SLEEF's vldexp */
    int32_t m = q >> 31;
    m = (((m + q) >> 6) - m) << 4;
    q = q - m * 4;
    m += 127;
    m = m < 0 ? 0 : (m > 255 ? 255 : m);
    float u = float_of((uint32_t)m << 23);
    x = x * u * u * u * u;
    return x * float_of((uint32_t)(q + 127) << 23);
}
ALWAYS_INLINE float sleef_expk(df d) {  /* e^(hi + lo) as one float */
    float q = rintf((d.hi + d.lo) * R_LN2);
    q = q != q ? 0.0f : (q < -300.0f ? -300.0f : (q > 300.0f ? 300.0f : q));
    df s = df_add_float(d, q * -L2U);
    s = df_add_float(s, q * -L2L);
    float hi = s.hi + s.lo;
    s = (df){hi, (s.hi - hi) + s.lo};
    float u = 0.00136324646882712841033936f;
    u = fmaf(u, s.hi, 0.00836596917361021041870117f);
    u = fmaf(u, s.hi, 0.0416710823774337768554688f);
    u = fmaf(u, s.hi, 0.166665524244308471679688f);
    u = fmaf(u, s.hi, 0.499999850988388061523438f);
    df t = df_add_fast(s, df_mul_float(df_square(s), u));
    t = df_add_fast((df){1.0f, 0.0f}, t);
    return d.hi < -104.0f ? 0.0f : sleef_ldexp(t.hi + t.lo, (int32_t)q);
}
/* pow's special cases, as SLEEF writes them, on its result r of x^y = e^(y ln|x|): each a float select on one
 * comparison (fmodf(y, 2) would be a call, and int flags or selects of combined conditions kept GCC from vectorizing) */
static inline float pow_special_cases(float x, float y, float r) {
    float x_magnitude = fabsf(x), y_magnitude = fabsf(y), whole_y = truncf(y);
    r = r != r ? INFINITY : r;
    float whole = whole_y == y ? 1.0f : 0.0f;
    whole = y_magnitude > 8388608.0f ? 1.0f : whole;  /* (every float beyond 2^23 is whole) */
    float odd = truncf(y * 0.5f) * 2.0f != whole_y ? whole : 0.0f;
    odd = y_magnitude < 16777216.0f ? odd : 0.0f;
    r *= x > 0 ? 1.0f : (whole != 0.0f ? (odd != 0.0f ? -1.0f : 1.0f) : NAN);
    float efx = (x_magnitude - 1.0f) * copysignf(1.0f, y);  /* SLEEF's mulsign */
    r = y_magnitude == INFINITY ? (efx < 0 ? 0.0f : (efx == 0 ? 1.0f : INFINITY)) : r;
    float sign = odd != 0.0f ? copysignf(1.0f, x) : 1.0f;  /* (SLEEF: ((x == 0 ? -y : y) < 0 ? 0 : inf)) */
    r = x_magnitude == INFINITY ? sign * (y < 0 ? 0.0f : INFINITY) : r;
    r = x == 0 ? sign * (y > 0 ? 0.0f : INFINITY) : r;
    r = x != x ? NAN : r;
    r = y != y ? NAN : r;
    r = y == 0 ? 1.0f : r;
    return x == 1 ? 1.0f : r;
}
/* x^y in blocks, each in three loops over the block (ln|x| as a double-float; times y, e^ that; the special cases):
 * one loop with all three steps was too much for GCC, which left it scalar (~10x slower). y_step 0: one exponent. */
#define POW_BLOCK 512
static void pow_blocks(const float *restrict x, const float *restrict y, size_t y_step, float *restrict out, size_t n) {
    float hi[POW_BLOCK], lo[POW_BLOCK];
    for (size_t start = 0; start < n; start += POW_BLOCK) {
        size_t m = n - start < POW_BLOCK ? n - start : POW_BLOCK;
        const float *xb = x + start, *yb = y + start * y_step;
        float *ob = out + start;
        for (size_t i = 0; i < m; i++) {
            df l = sleef_logk(fabsf(xb[i]));  /* (SLEEF takes ln 1 where x is 0: any value does, a special case) */
            hi[i] = l.hi;
            lo[i] = l.lo;
        }
        for (size_t i = 0; i < m; i++) ob[i] = sleef_expk(df_mul_float((df){hi[i], lo[i]}, yb[i * y_step]));
        for (size_t i = 0; i < m; i++) ob[i] = pow_special_cases(xb[i], yb[i * y_step], ob[i]);
    }
}
void ml_pow(const float *restrict x, const float *restrict y, float *restrict out, size_t n) {
    pow_blocks(x, y, 1, out, n);
}
void ml_pow_scalar(const float *restrict x, float *restrict out, size_t n, float y) {
    pow_blocks(x, &y, 0, out, n);
}
/* ---- Sleef_sinhf16_u10 / Sleef_coshf16_u10: (e -+ 1/e) / 2, e = expk2f(|x|), in double-float ------- */
static inline float sleef_sinh_or_cosh(float x, int cosh) {
    float y = fabsf(x);
    df e = expk2(y), r = df_reciprocal(e);
    float hi = cosh ? e.hi + r.hi : e.hi - r.hi;  /* SLEEF's dfadd / dfsub: the low parts added last */
    float lo = cosh ? (((e.hi - hi) + r.hi) + e.lo) + r.lo : (((e.hi - hi) - r.hi) + e.lo) - r.lo;
    float out = (hi + lo) * 0.5f;
    out = (y > 89.0f || out != out) ? INFINITY : out;
    out = cosh ? out : copysignf(out, x);
    return x != x ? x : out;
}
void ml_sinh(const float *restrict x, float *restrict out, size_t n) {
    for (size_t i = 0; i < n; i++) out[i] = sleef_sinh_or_cosh(x[i], 0);
}
void ml_cosh(const float *restrict x, float *restrict out, size_t n) {
    for (size_t i = 0; i < n; i++) out[i] = sleef_sinh_or_cosh(x[i], 1);
}
/* ---- Sleef_atanhf16_u10: logk2f((1 + y) / (1 - y)) / 2 in double-float ------------------------------- */
static inline df sleef_logk2(df d) {  /* ln of a double-float (AVX-512's getexp of its high part) */
    int exponent = (int)frexp_exponent(d.hi * (1.0f / 0.75f));
    float e = (float)(exponent - 1), scale = float_of((uint32_t)(127 - (exponent - 1)) << 23);
    df m = {d.hi * scale, d.lo * scale};
    df x = df_divide(df_add_float(m, -1.0f), df_add_float(m, 1.0f)), x2 = df_square(x);
    float t = fmaf(fmaf(fmaf(0.2392828464508056640625f, x2.hi, 0.28518211841583251953125f), x2.hi,
                        0.400005877017974853515625f), x2.hi, 0.666666686534881591796875f);
    df s = df_add_fast(df_mul_float((df){0.69314718246459960938f, -1.904654323148236017e-09f}, e),
                       (df){x.hi * 2.0f, x.lo * 2.0f});  /* (SLEEF 3.6's order: float32_math._sleef_logk2) */
    return df_add_fast(s, df_mul_float(df_mul(x2, x), t));
}
static inline float sleef_atanh(float x) {
    float y = fabsf(x);
    df d = sleef_logk2(df_divide(df_two_sum(1.0f, y), df_two_sum(1.0f, -y)));
    float out = y > 1.0f ? NAN : (y == 1.0f ? INFINITY : (d.hi + d.lo) * 0.5f);
    out = (isinf(x) || out != out) ? NAN : out;
    out = copysignf(out, x);
    return x != x ? x : out;
}
void ml_atanh(const float *restrict x, float *restrict out, size_t n) {
    for (size_t i = 0; i < n; i++) out[i] = sleef_atanh(x[i]);
}
/* ---- Sleef_atan2f16_u10 (xatan2f_u1): q pi/2 + atan of the smaller over the larger, in double-float --- */
static const float atan2_u[8] = {-0.00176397908944636583328247f, 0.0107900900766253471374512f,
    -0.0309564601629972457885742f, 0.0577365085482597351074219f, -0.0838950723409652709960938f,
    0.109463557600975036621094f, -0.142626821994781494140625f, 0.199983194470405578613281f};
static inline float mulsign(float a, float b) { return a * copysignf(1.0f, b); }
static inline df sleef_atan2k(float y, float x) {  /* y >= 0 */
    float q = x < 0 ? -2.0f : 0.0f;
    x = fabsf(x);
    int swap = x < y;
    q = swap ? q + 1.0f : q;
    df s = df_divide((df){swap ? -x : y, 0.0f}, (df){swap ? y : x, 0.0f}), t = df_square(s);
    float hi = t.hi + t.lo;
    t = (df){hi, (t.hi - hi) + t.lo};
    float u = atan2_u[0];  /* (Horner's steps written out: GCC left the loop a loop, and the kernel scalar) */
    u = fmaf(u, t.hi, atan2_u[1]);
    u = fmaf(u, t.hi, atan2_u[2]);
    u = fmaf(u, t.hi, atan2_u[3]);
    u = fmaf(u, t.hi, atan2_u[4]);
    u = fmaf(u, t.hi, atan2_u[5]);
    u = fmaf(u, t.hi, atan2_u[6]);
    u = fmaf(u, t.hi, atan2_u[7]);
    float a = -0.333332866430282592773438f, b = u * t.hi, h = a + b;
    t = df_mul(t, (df){h, (a - h) + b});
    h = 1.0f + t.hi;
    t = df_mul(s, (df){h, ((1.0f - h) + t.hi) + t.lo});
    return df_add(df_mul_float((df){1.5707963705062866211f, -4.3711388286737928865e-08f}, q), t);
}
static inline float sleef_atan2(float y, float x) {
    const double m_pi = 3.14159265358979323846;  /* (C99 has no M_PI) */
    const float half_pi = (float)(m_pi / 2), quarter_pi = (float)(m_pi / 4), pi = (float)m_pi;
    int tiny = fabsf(x) < 2.9387372783541830947e-39f;
    float xs = tiny ? x * 16777216.0f : x, ys = tiny ? y * 16777216.0f : y;
    df d = sleef_atan2k(fabsf(ys), xs);
    float r = mulsign(d.hi + d.lo, xs);
    r = (isinf(x) | (x == 0)) ? half_pi - (isinf(x) ? mulsign(half_pi, x) : 0.0f) : r;
    r = isinf(ys) ? half_pi - (isinf(x) ? mulsign(quarter_pi, x) : 0.0f) : r;  /* (the scaled y, as SLEEF's) */
    r = y == 0 ? (signbit(x) ? pi : 0.0f) : r;
    return ((x != x) | (y != y)) ? NAN : mulsign(r, y);
}
void ml_atan2(const float *restrict y, const float *restrict x, float *restrict out, size_t n) {
    for (size_t i = 0; i < n; i++) out[i] = sleef_atan2(y[i], x[i]);
}
void ml_log(const float *restrict x, float *restrict out, size_t n) {
    for (size_t i = 0; i < n; i++) out[i] = sleef_log(x[i]);
}
void ml_exp(const float *restrict x, float *restrict out, size_t n) {
    for (size_t i = 0; i < n; i++) out[i] = sleef_exp(x[i]);
}
void ml_exp_of_negative(const float *restrict x, float *restrict out, size_t n) {
    for (size_t i = 0; i < n; i++) out[i] = sleef_exp(-x[i]);
}
void ml_expm1(const float *restrict x, float *restrict out, size_t n) {
    for (size_t i = 0; i < n; i++) out[i] = sleef_expm1(x[i]);
}
void ml_tanh(const float *restrict x, float *restrict out, size_t n) {
    for (size_t i = 0; i < n; i++) out[i] = sleef_tanh(x[i]);
}
void ml_log1p(const float *restrict x, float *restrict out, size_t n) {
    for (size_t i = 0; i < n; i++) out[i] = sleef_log1p(x[i]);
}

/* ---- whole formulas of torch's kernels, one pass each (float32_math's composites; their constants
 * come from Python as floats, rounded there as the NumPy code rounds them) --------------------------- */
void ml_sigmoid(const float *restrict x, float *restrict out, size_t n) {  /* 1 / (1 + exp(-x)) */
    for (size_t i = 0; i < n; i++) out[i] = 1.0f / (1.0f + sleef_exp(-x[i]));
}
void ml_silu(const float *restrict x, float *restrict s, float *restrict out, size_t n) {
    for (size_t i = 0; i < n; i++) {  /* silu = x / (1 + exp(-x)), and s = sigmoid(x) for its backward */
        float d = 1.0f + sleef_exp(-x[i]);
        s[i] = 1.0f / d;
        out[i] = x[i] / d;
    }
}
void ml_swiglu(const float *restrict gate, const float *restrict up, float *restrict d, float *restrict out,
               size_t n) {  /* Llama's silu(gate) * up: silu rounded, then times up; d = 1 + exp(-gate) kept */
    for (size_t i = 0; i < n; i++) {
        d[i] = 1.0f + sleef_exp(-gate[i]);
        out[i] = (gate[i] / d[i]) * up[i];
    }
}
void ml_elu(const float *restrict x, float *restrict out, size_t n, float alpha_scale, float scale,
            float input_scale) {  /* x > 0 ? scale x : (alpha scale) expm1(input_scale x) */
    for (size_t i = 0; i < n; i++) {
        float v = x[i];
        out[i] = v > 0.0f ? v * scale : sleef_expm1(v * input_scale) * alpha_scale;
    }
}
void ml_softplus(const float *restrict x, float *restrict out, size_t n, float beta, float threshold) {
    for (size_t i = 0; i < n; i++) {  /* beta x > threshold ? x : log1p(exp(beta x)) / beta */
        float scaled = x[i] * beta;
        float soft = sleef_log1p(sleef_exp(scaled)) / beta;
        out[i] = scaled > threshold ? x[i] : soft;
    }
}
void ml_mish(const float *restrict x, float *restrict out, float *restrict t, size_t n) {
    for (size_t i = 0; i < n; i++) {  /* t = tanh(log1p(exp(x))), mish = x t */
        t[i] = sleef_tanh(sleef_log1p(sleef_exp(x[i])));
        out[i] = x[i] * t[i];
    }
}
void ml_gelu_tanh(const float *restrict x, float *restrict out, float *restrict t, size_t n, float beta,
                  float kappa) {  /* t = tanh(beta fma(kappa, x^3, x)), gelu = (0.5 x) (1 + t) */
    for (size_t i = 0; i < n; i++) {
        float v = x[i];
        t[i] = sleef_tanh(beta * fmaf(kappa, v * v * v, v));
        out[i] = (0.5f * v) * (1.0f + t[i]);
    }
}

/* elu's backward (torch's elu_backward, is_result=False): x > 0 ? g scale : ((g input_scale) (alpha scale))
 * exp(min(x, 0) input_scale) */
void ml_elu_backward(const float *g, const float *restrict x, float *out, size_t n, float scale, float input_scale,
                     float negative_scale) {
    for (size_t i = 0; i < n; i++) {
        float v = x[i], e = sleef_exp((v > 0.0f ? 0.0f : v) * input_scale);  /* (min(NaN, 0): NaN, as NumPy's) */
        out[i] = v > 0.0f ? g[i] * scale : ((g[i] * input_scale) * negative_scale) * e;
    }
}
/* softplus's backward: beta x > threshold ? g : (g z) / (z + 1), z = exp(beta x) */
void ml_softplus_backward(const float *g, const float *restrict x, float *out, size_t n, float beta,
                          float threshold) {
    for (size_t i = 0; i < n; i++) {
        float scaled = x[i] * beta, z = sleef_exp(scaled);
        out[i] = scaled > threshold ? g[i] : (g[i] * z) / (z + 1.0f);
    }
}

/* gelu's tanh form's backward from the forward's t: g (0.5 (1 + t) + ((0.5 x) fma(-t, t, 1)) beta fma(kappa3,
 * x^2, 1)), as torch's gelu_backward kernel rounds it */
void ml_gelu_tanh_backward(const float *g, const float *restrict x, const float *restrict t, float *out, size_t n,
                           float beta, float kappa3) {
    for (size_t i = 0; i < n; i++) {
        float v = x[i], inner_grad = beta * fmaf(kappa3, v * v, 1.0f);
        out[i] = g[i] * (0.5f * (1.0f + t[i]) + ((0.5f * v) * fmaf(-t[i], t[i], 1.0f)) * inner_grad);
    }
}
/* mish's backward, g fma(x s, fma(-t, t, 1), t) with s = sigmoid(x) = 1 / (1 + exp(-x)) */
void ml_mish_backward(const float *g, const float *restrict x, const float *restrict t, float *out, size_t n) {
    for (size_t i = 0; i < n; i++) {
        float s = 1.0f / (1.0f + sleef_exp(-x[i]));
        out[i] = g[i] * fmaf(x[i] * s, fmaf(-t[i], t[i], 1.0f), t[i]);
    }
}

/* ---- SLEEF's other double functions (torch's Vectorized<double> exp2, log1p, expm1, sinh, cosh, tanh, atanh, erf,
 * atan2, hypot, pow): float32_math's NumPy ports (sleef_exp2_64, sleef_log1p64, ...) step for step in C, each
 * product-and-sum a fused multiply-add where the port's is, so that both give the same bits. A double-double is
 * an unevaluated sum hi + lo; the helpers below are the ports' _dd_* and _df_* steps. */
typedef struct { double hi, lo; } dd;

static inline dd dd_of(double hi, double lo) { dd r = {hi, lo}; return r; }

/* Knuth's TwoSum: a + b exactly (float32_math.two_sum) */
static inline dd dd_two_sum(double a, double b) {
    double s = a + b, v = s - a;
    return dd_of(s, (a - (s - v)) + (b - v));
}

/* x + y, y a double: TwoSum of the high parts, x's low part added (_df_add_float) */
static inline dd dd_add_d(dd x, double y) {
    double s = x.hi + y, v = s - x.hi;
    return dd_of(s, ((x.hi - (s - v)) + (y - v)) + x.lo);
}

/* x + y with TwoSum of the high parts (_df_add) */
static inline dd dd_add(dd x, dd y) {
    double s = x.hi + y.hi, v = s - x.hi;
    return dd_of(s, ((x.hi - (s - v)) + (y.hi - v)) + (x.lo + y.lo));
}

/* x + y where |x| >= |y| (_dd_add_fast) */
static inline dd dd_add_fast(dd x, dd y) {
    double s = x.hi + y.hi;
    return dd_of(s, (((x.hi - s) + y.hi) + x.lo) + y.lo);
}

static inline dd dd_mul_d(dd x, double y) {
    double s = x.hi * y;
    return dd_of(s, fma(x.lo, y, fma(x.hi, y, -s)));
}

static inline dd dd_mul(dd x, dd y) {
    double s = x.hi * y.hi;
    return dd_of(s, fma(x.hi, y.lo, fma(x.lo, y.hi, fma(x.hi, y.hi, -s))));
}

static inline dd dd_square(dd x) {
    double s = x.hi * x.hi;
    return dd_of(s, fma(x.hi + x.hi, x.lo, fma(x.hi, x.hi, -s)));
}

static inline dd dd_reciprocal(dd d) {
    double s = 1 / d.hi;
    return dd_of(s, s * fma(-d.lo, s, fma(-d.hi, s, 1.0)));
}

static inline dd dd_divide(dd n, dd d) {
    double t = 1 / d.hi, s = n.hi * t;
    double u = fma(t, n.hi, -s), v = fma(-d.lo, t, fma(-d.hi, t, 1.0));
    return dd_of(s, fma(s, v, fma(n.lo, t, u)));
}

static inline dd dd_sqrt(dd d) {
    double t = sqrt(d.hi + d.lo), inverse = 1 / t;
    dd square = dd_of(t * t, fma(t, t, -(t * t)));
    dd s = dd_mul(dd_add(d, square), dd_of(inverse, inverse * fma(-t, inverse, 1.0)));
    return dd_of(s.hi * 0.5, s.lo * 0.5);
}

/* u 2^q in two halves of q (_times_power_of_two: q clipped to +-2100, NaN 0) */
static inline double times_power_of_two(double u, double q) {
    int64_t k = q != q ? 0 : q > 2100 ? 2100 : q < -2100 ? -2100 : (int64_t)q;
    return u * ldexp(1.0, (int)(k >> 1)) * ldexp(1.0, (int)(k - (k >> 1)));
}

static inline double mulsign64(double a, double b) { return a * copysign(1.0, b); }

/* Estrin's scheme as float32_math._sleef_poly: coefficients highest power first, p = [x, x^2, x^4, x^8, x^16] */
static inline double poly2(const double *p, const double *c) { return fma(p[0], c[0], c[1]); }
static inline double poly3(const double *p, const double *c) { return fma(p[1], c[0], poly2(p, c + 1)); }
static inline double poly4(const double *p, const double *c) { return fma(p[1], poly2(p, c), poly2(p, c + 2)); }
static inline double poly5(const double *p, const double *c) { return fma(p[2], c[0], poly4(p, c + 1)); }
static inline double poly7(const double *p, const double *c) { return fma(p[2], poly3(p, c), poly4(p, c + 3)); }
static inline double poly8(const double *p, const double *c) { return fma(p[2], poly4(p, c), poly4(p, c + 4)); }
static inline double poly9(const double *p, const double *c) { return fma(p[3], c[0], poly8(p, c + 1)); }
static inline double poly10(const double *p, const double *c) { return fma(p[3], poly2(p, c), poly8(p, c + 2)); }
static inline double poly16(const double *p, const double *c) { return fma(p[3], poly8(p, c), poly8(p, c + 8)); }
static inline double poly21(const double *p, const double *c) { return fma(p[4], poly5(p, c), poly16(p, c + 5)); }

#define LN2_HI 0.693147180559945286226764
#define LN2_LO 2.319046813846299558417771e-17
#define R_LN2_64 1.442695040888963407359924681001892137426645954152985934135449406931
#define LN2_UPPER .69314718055966295651160180568695068359375
#define LN2_LOWER .28235290563031577122588448175013436025525412068e-12

/* ---- SLEEF's double exp (Sleef_expd8_u10, torch's Vectorized<double>::exp: float64 softmax, sigmoid, silu, ...),
 * float32_math.sleef_exp64's steps in the same order: q = rint(d / ln 2), s = d - q ln 2 in two fused steps, POLY10
 * by Estrin's scheme in fused multiply-adds (SLEEF's macro's grouping), three more, then times 2^q in two halves. */
static const double EXP64_POLY[10] = {0.2081276378237164457e-8, 0.2511210703042288022e-7, 0.2755762628169491192e-6,
                                      0.2755723402025388239e-5, 0.2480158687479686264e-4, 0.1984126989855865850e-3,
                                      0.1388888888914497797e-2, 0.8333333333314938210e-2, 0.4166666666666602598e-1,
                                      0.1666666666666669072e+0};

static double sleef_exp64(double d) {
    double q = rint(d * R_LN2_64);
    double s = fma(q, -LN2_UPPER, d);
    s = fma(q, -LN2_LOWER, s);
    double s2 = s * s, s4 = s2 * s2;
    double p[4] = {s, s2, s4, s4 * s4};
    double u = poly10(p, EXP64_POLY);
    u = fma(u, s, 0.5);
    u = fma(u, s, 1.0);
    u = fma(u, s, 1.0);
    u = times_power_of_two(u, q);
    if (d > 709.78271289338397) u = INFINITY;
    if (d < -1000) u = 0.0;
    return u;
}

void ml_exp64(const double *x, double *out, size_t n) {
    for (size_t i = 0; i < n; i++) out[i] = sleef_exp64(x[i]);
}

/* ---- torch's CPU flash attention's exponentials and row sums (minilora/ops/attention32.py's _exp_and_lane_sum,
 * step for step): ATen's Vectorized<float>::exp_u20 (float64: SLEEF's exp) on a row's whole vectors, C's exp on
 * the last n % lanes, and each row's sum -- the vectors added lane by lane, the lanes folded pairwise (float32,
 * i + i^(lanes/2), ..., ^1) or added in order (float64), then the tail in order. */
static const float EXP_U20[6] = {0.00828929059f, 0.0418978221f, 0.166676521f, 0.499991506f, 0.999999701f, 1.0f};

static float aten_exp_u20(float x) {
    const float ln_flt_min = float_of(0xc2aeac50u), ln_flt_max = float_of(0x42b17218u);
    float clipped = x < ln_flt_max ? x : ln_flt_max;  /* (the vector min and max: a NaN becomes the bound) */
    clipped = clipped > ln_flt_min ? clipped : ln_flt_min;
    float whole = floorf(fmaf(clipped, float_of(0x3fb8aa3bu), 0.5f));
    float r = fmaf(-whole, float_of(0x3f317218u), clipped);
    float poly = fmaf(r, EXP_U20[0], EXP_U20[1]);
    poly = fmaf(r, poly, EXP_U20[2]);  /* (written out: a loop here kept the row's loop from vectorizing, 5x) */
    poly = fmaf(r, poly, EXP_U20[3]);
    poly = fmaf(r, poly, EXP_U20[4]);
    poly = fmaf(r, poly, EXP_U20[5]);
    float two_to_n_minus_1 = x < ln_flt_min ? 0.0f : float_of((uint32_t)((int32_t)(whole - 1.0f) + 127) << 23);
    return poly * two_to_n_minus_1 * 2.0f;
}

/* The flash kernels' loops in vector lanes (the default) or one element at a time (round 29's loops, the same
 * operations in the same order): ml_flash_scalar_loops(1) selects the scalar ones, for the tests and benchmarks
 * that compare the two in one process (attention32.scalar_loops). A process-wide setting: flip it between calls. */
static int flash_scalar_loops = 0;
void ml_flash_scalar_loops(int on) { flash_scalar_loops = on; }

#define FLASH_UNROLLED _Pragma("GCC unroll 16")  /* (GCC and clang: unroll the loop that follows) */

/* The lanes of a vector sum (acc[0..lanes), the caller's local array) folded pairwise into lane 0 where ``pairwise``
 * (float32's vec_reduce_all: lane i + lane i^(lanes/2), ..., ^1 -- lane 0 needs only the lower halves, i + (i + width)
 * with i < width, the same additions), else added in order (float64's). */
#define FLASH_LANE_SUMS(T)                                                                                          \
ALWAYS_INLINE T flash_fold_lanes_##T(T *acc, const size_t lanes, int pairwise) {                                     \
    if (!pairwise) {                                                                                                \
        T total = acc[0];                                                                                           \
        for (size_t l = 1; l < lanes; l++) total += acc[l];                                                         \
        return total;                                                                                               \
    }                                                                                                               \
    FLASH_UNROLLED for (size_t width = lanes / 2; width >= 1; width /= 2)  /* (unrolled: a vector add each) */      \
        FLASH_UNROLLED for (size_t l = 0; l < width; l++) acc[l] = acc[l] + acc[l + width];                         \
    return acc[0];                                                                                                  \
}                                                                                                                   \
                                                                                                                    \
/* The vector part of a row's sum: whole vectors of ``lanes`` elements of x added lane by lane, the lanes folded.     \
 * With a constant ``lanes`` (flash_vector_sum's cases) it inlines into one vector add per vector; GCC keeps the    \
 * loop over a run-time ``lanes`` scalar (an add per element). Each lane adds its elements in order either way. */ \
ALWAYS_INLINE T flash_lane_sums_##T(const T *x, size_t whole, const size_t lanes, int pairwise) {                    \
    T acc[16] = {0};                                                                                                \
    for (size_t i = 0; i < whole; i += lanes)                                                                       \
        for (size_t l = 0; l < lanes; l++) acc[l] += x[i + l];                                                      \
    return flash_fold_lanes_##T(acc, lanes, pairwise);                                                              \
}                                                                                                                   \
                                                                                                                    \
static T flash_vector_sum_##T(const T *x, size_t whole, size_t lanes, int pairwise) {                               \
    switch (flash_scalar_loops ? 0 : lanes) {  /* (torch's vector sizes, each its own inlined copy; else scalar) */ \
    case 16: return flash_lane_sums_##T(x, whole, 16, pairwise);                                                    \
    case 8: return flash_lane_sums_##T(x, whole, 8, pairwise);                                                      \
    case 4: return flash_lane_sums_##T(x, whole, 4, pairwise);                                                      \
    default: return flash_lane_sums_##T(x, whole, lanes, pairwise);                                                 \
    }                                                                                                               \
}
FLASH_LANE_SUMS(float)
FLASH_LANE_SUMS(double)

/* One row of ml_flash_exp_sum, whose elements from ``live`` on are -inf (the causal forward's keys after the query,
 * less a finite max): their exp is exactly +0, and adding +0 leaves a sum of non-negative values as it is, so the whole
 * vectors and tail elements past ``live`` get 0 without an exp, and no lane adds them. live = n: every element. */
#define FLASH_EXP_SUM_ROW(T, VECTOR_EXP, TAIL_EXP, PAIRWISE)                                                        \
static T flash_exp_sum_row_##T(const T *in, T *out, size_t n, size_t live, size_t lanes) {                         \
    size_t whole = n - n % lanes, computed = live < whole ? (live + lanes - 1) / lanes * lanes : whole;             \
    for (size_t i = 0; i < computed; i++) out[i] = VECTOR_EXP(in[i]);                                               \
    for (size_t i = computed; i < whole; i++) out[i] = 0;                                                           \
    T total = flash_vector_sum_##T(out, computed, lanes, PAIRWISE);                                                 \
    for (size_t i = whole; i < n; i++) {                                                                            \
        out[i] = i < live ? TAIL_EXP(in[i]) : 0;                                                                    \
        total += out[i];                                                                                            \
    }                                                                                                               \
    return total;                                                                                                   \
}

static float flash_expf(float x) { return (float)exp((double)x); }  /* (the kernel's expf: correctly rounded, measured) */
FLASH_EXP_SUM_ROW(float, aten_exp_u20, flash_expf, 1)
FLASH_EXP_SUM_ROW(double, sleef_exp64, exp, 0)

void ml_flash_exp_sum(const float *x, float *e, float *totals, size_t rows, size_t n, size_t lanes) {
    for (size_t row = 0; row < rows; row++) totals[row] = flash_exp_sum_row_float(x + row * n, e + row * n, n, n, lanes);
}

void ml_flash_exp_sum64(const double *x, double *e, double *totals, size_t rows, size_t n, size_t lanes) {
    for (size_t row = 0; row < rows; row++) totals[row] = flash_exp_sum_row_double(x + row * n, e + row * n, n, n, lanes);
}

/* ---- torch's CPU flash-attention backward (minilora/ops/attention32.py's flash_backward, step for step) ----
 * Batch elements [0, dims[0]), each query head in turn (a group of them shares key/value head j / group, so their
 * dk, dv are added one after the other, as the kernel's loop). Per block of dims[6] queries: rowsum(dO * out) in
 * vector lanes (attention32._rows_dot); per block of 512 keys (only those a causal query block sees): the weights
 * exp(scale * q k^T + bias - lse) with SLEEF's exp, 0 after a query's position where causal, and MKL's four
 * products added into dv, dq, dk, called as the kernel calls them (``gemm``: blas.gemm_address's CBLAS ?gemm).
 * dims: batch, query heads, key/value heads, Tq, Tk, head size, query block, causal, lanes. strides (elements):
 * [batch, head, row] of q, k, v, dO, out, lse, then [batch, head, row, key] of the bias (NULL: none), then
 * [batch, head, row] of dq, dk, dv (zeros on entry; laid out as the inputs, as torch's: their rows MKL's ldc). */
#include <stdlib.h>

/* The first of a block's nk keys that comes after the query (query - first key = ``query_less_first_key``) where
 * causal, else nk: the kernel fills those keys' scores with -inf (forward) and their weights with 0 (backward). */
static int64_t flash_first_future_key(int64_t causal, int64_t query_less_first_key, int64_t nk) {
    int64_t future = query_less_first_key + 1;
    return causal && future > 0 && future < nk ? future : nk;
}

enum { FLASH_ROW_MAJOR = 101, FLASH_NO_TRANS = 111, FLASH_TRANS = 112, FLASH_KV_BLOCK = 512 };

/* torch's scratch buffers are tensors (at::empty: 64-byte aligned), and MKL's gemm may sum otherwise by where its
 * operands and output lie (measured on an AMD Zen 4), so the kernels' buffers start where torch's do. */
static size_t flash_aligned_size(size_t bytes) { return (bytes + 63) / 64 * 64; }
static void *flash_aligned_alloc(size_t bytes, void **block) {  /* (C99: no aligned_alloc; free(*block)) */
    *block = malloc(flash_aligned_size(bytes) + 64);
    return *block == NULL ? NULL : (void *)(((uintptr_t)*block + 63) / 64 * 64);
}

#define FLASH_BACKWARD(NAME, T, EXP, PAIRWISE)                                                                        \
typedef void (*NAME##_gemm)(int, int, int, int64_t, int64_t, int64_t, T, const T *, int64_t, const T *, int64_t, T, \
                            T *, int64_t);                                                                          \
                                                                                                                    \
ALWAYS_INLINE T NAME##_rows_dot_lanes(const T *a, const T *b, int64_t n, const int64_t lanes) {                     \
    T acc[16], total;                                                                                               \
    if (n < lanes) {                                                                                                \
        total = a[0] * b[0];                                                                                        \
        for (int64_t i = 1; i < n; i++) total += a[i] * b[i];                                                       \
        return total;                                                                                               \
    }                                                                                                               \
    int64_t tail = n % lanes;                                                                                       \
    for (int64_t l = 0; l < lanes; l++) acc[l] = a[l] * b[l];                                                       \
    for (int64_t s = lanes; s + lanes <= n; s += lanes)                                                             \
        for (int64_t l = 0; l < lanes; l++) acc[l] += a[s + l] * b[s + l];                                          \
    for (int64_t l = 0; l < tail; l++) acc[l] += a[n - tail + l] * b[n - tail + l];                                 \
    return flash_fold_lanes_##T(acc, lanes, PAIRWISE);                                                              \
}                                                                                                                   \
                                                                                                                    \
static T NAME##_rows_dot(const T *a, const T *b, int64_t n, int64_t lanes) {  /* (constant lanes: vector code) */  \
    switch (flash_scalar_loops ? 0 : lanes) {                                                                       \
    case 16: return NAME##_rows_dot_lanes(a, b, n, 16);                                                             \
    case 8: return NAME##_rows_dot_lanes(a, b, n, 8);                                                               \
    case 4: return NAME##_rows_dot_lanes(a, b, n, 4);                                                               \
    default: return NAME##_rows_dot_lanes(a, b, n, lanes);                                                          \
    }                                                                                                               \
}                                                                                                                   \
                                                                                                                    \
void NAME(const void *gemm_address, const int64_t *dims, const int64_t *strides, const T *scale_at, const T *q,     \
          const T *k, const T *v, const T *g, const T *out, const T *lse, const T *bias, T *dq, T *dk, T *dv) {     \
    NAME##_gemm gemm = (NAME##_gemm)gemm_address;                                                                   \
    int64_t batch = dims[0], hq = dims[1], hkv = dims[2], tq = dims[3], tk = dims[4], d = dims[5], step = dims[6];  \
    int64_t causal = dims[7], lanes = dims[8], group = hq / hkv, kv_split = tk < FLASH_KV_BLOCK ? tk : FLASH_KV_BLOCK;\
    const int64_t *sq = strides, *sk = strides + 3, *sv = strides + 6, *sg = strides + 9, *so = strides + 12;       \
    const int64_t *sl = strides + 15, *sb = strides + 18, *sdq = strides + 22, *sdk = strides + 25, *sdv = strides + 28;\
    void *block;                                                                                                    \
    T scale = *scale_at, *weights = flash_aligned_alloc(sizeof(T) * (2 * step * kv_split + step), &block);          \
    T *score_grads = weights + step * kv_split, *row_dots = score_grads + step * kv_split;                          \
    if (weights == NULL) return;                                                                                    \
    for (int64_t b = 0; b < batch; b++)                                                                             \
        for (int64_t j = 0; j < hq; j++) {                                                                          \
            int64_t h = j / group;                                                                                  \
            const T *qh = q + b * sq[0] + j * sq[1], *kh = k + b * sk[0] + h * sk[1], *vh = v + b * sv[0] + h * sv[1];\
            const T *gh = g + b * sg[0] + j * sg[1], *oh = out + b * so[0] + j * so[1], *lh = lse + b * sl[0] + j * sl[1];\
            const T *bh = bias == NULL ? NULL : bias + b * sb[0] + j * sb[1];                                       \
            T *dqh = dq + b * sdq[0] + j * sdq[1], *dkh = dk + b * sdk[0] + h * sdk[1], *dvh = dv + b * sdv[0] + h * sdv[1];\
            for (int64_t m = 0; m < tq; m += step) {                                                                \
                int64_t nq = tq - m < step ? tq - m : step, num_keys = causal && m + nq < tk ? m + nq : tk;         \
                for (int64_t r = 0; r < nq; r++)                                                                    \
                    row_dots[r] = NAME##_rows_dot(gh + (m + r) * sg[2], oh + (m + r) * so[2], d, lanes);            \
                for (int64_t n = 0; n < num_keys; n += kv_split) {                                                  \
                    int64_t nk = tk - n < kv_split ? tk - n : kv_split;                                             \
                    gemm(FLASH_ROW_MAJOR, FLASH_NO_TRANS, FLASH_TRANS, nq, nk, d, scale, qh + m * sq[2], sq[2],     \
                         kh + n * sk[2], sk[2], 0, weights, nk);                                                    \
                    for (int64_t r = 0; r < nq; r++) {                                                              \
                        T *row = weights + r * nk, normalizer = lh[(m + r) * sl[2]];                                \
                        int64_t future = flash_first_future_key(causal, m + r - n, nk);                             \
                        int64_t computed = flash_scalar_loops ? nk : future;  /* (their weights are set to 0) */    \
                        if (bh != NULL)                                                                             \
                            for (int64_t c = 0; c < computed; c++) row[c] += bh[(m + r) * sb[2] + (n + c) * sb[3]]; \
                        for (int64_t c = 0; c < computed; c++) row[c] = EXP(row[c] - normalizer);  /* (vectorized) */\
                        for (int64_t c = future; c < nk; c++) row[c] = 0;                                           \
                    }                                                                                               \
                    gemm(FLASH_ROW_MAJOR, FLASH_TRANS, FLASH_NO_TRANS, nk, d, nq, 1, weights, nk, gh + m * sg[2],   \
                         sg[2], 1, dvh + n * sdv[2], sdv[2]);                                                       \
                    gemm(FLASH_ROW_MAJOR, FLASH_NO_TRANS, FLASH_TRANS, nq, nk, d, 1, gh + m * sg[2], sg[2],         \
                         vh + n * sv[2], sv[2], 0, score_grads, nk);                                                \
                    for (int64_t r = 0; r < nq; r++)                                                                \
                        for (int64_t c = 0; c < nk; c++)                                                            \
                            score_grads[r * nk + c] = weights[r * nk + c] * (score_grads[r * nk + c] - row_dots[r]);\
                    gemm(FLASH_ROW_MAJOR, FLASH_NO_TRANS, FLASH_NO_TRANS, nq, d, nk, scale, score_grads, nk,        \
                         kh + n * sk[2], sk[2], 1, dqh + m * sdq[2], sdq[2]);                                       \
                    gemm(FLASH_ROW_MAJOR, FLASH_TRANS, FLASH_NO_TRANS, nk, d, nq, scale, score_grads, nk,           \
                         qh + m * sq[2], sq[2], 1, dkh + n * sdk[2], sdk[2]);                                       \
                }                                                                                                   \
            }                                                                                                       \
        }                                                                                                           \
    free(block);                                                                                                    \
}

FLASH_BACKWARD(ml_flash_backward, float, sleef_exp, 1)
FLASH_BACKWARD(ml_flash_backward64, double, sleef_exp64, 0)
typedef ml_flash_backward_gemm ml_flash_backward_gemm_of_float;
typedef ml_flash_backward64_gemm ml_flash_backward_gemm_of_double;

/* A row's largest score and ``start`` (the running max), NaN if any of them before ``nan_from`` is NaN (a NaN from
 * there on is skipped: torch's unmasked kernel takes the last len % lanes of a block by std::max(max, x), which keeps
 * max at a NaN x, after whole vectors' vec::maximum, which propagates one): each lane of 64-byte GCC vectors
 * keeps its largest element, the lanes are folded by halves, then the scalar tail and the running max are compared.
 * A comparison rounds nothing, so this order gives the scan's value; only which zero a max of zeros is may differ (-0
 * or +0), and no step after it sees that (x - 0 and x - -0 differ only at x = -0, where every exp gives 1; lse's
 * 0 + log(sum) and -0 + log(sum) are equal). The scan compare-and-selected one element after the other (a chain of
 * dependent scalar max's, ~80% of the forward's own time); GCC keeps such a loop scalar without -ffinite-math-only,
 * hence the explicit vectors. */
#define FLASH_ROW_MAX(T, INT)                                                                                       \
typedef T flash_vector_##T __attribute__((vector_size(64)));                                                        \
typedef INT flash_mask_##T __attribute__((vector_size(64)));                                                        \
                                                                                                                    \
static T flash_row_max_##T(const T *row, int64_t n, T start, int64_t nan_from) {                                  \
    enum { LANES = 64 / sizeof(T) };                                                                                \
    flash_vector_##T top, v;                                                                                        \
    flash_mask_##T nan = {0}, greater;                                                                              \
    int64_t i = 0, vectors_end = n < nan_from ? n : nan_from;                                                       \
    for (int l = 0; l < LANES; l++) top[l] = -INFINITY;                                                             \
    for (; i + LANES <= vectors_end; i += LANES) {                                                                  \
        memcpy(&v, row + i, sizeof v);  /* (an unaligned load) */                                                   \
        greater = v > top;  /* (false at a NaN: it stays out of top, and ``nan`` records it) */                     \
        top = (flash_vector_##T)(((flash_mask_##T)v & greater) | ((flash_mask_##T)top & ~greater));                \
        nan |= v != v;                                                                                              \
    }                                                                                                               \
    T result = start, lanes[LANES];                                                                                 \
    int any_nan = start != start;                                                                                   \
    for (; i < n; i++) {                                                                                            \
        result = row[i] > result ? row[i] : result;                                                                 \
        any_nan |= i < nan_from && row[i] != row[i];                                                                \
    }                                                                                                               \
    memcpy(lanes, &top, sizeof lanes);                                                                              \
    FLASH_UNROLLED for (int width = LANES / 2; width >= 1; width /= 2)  /* (halves: a vector max each) */          \
        FLASH_UNROLLED for (int l = 0; l < width; l++) lanes[l] = lanes[l + width] > lanes[l] ? lanes[l + width] : lanes[l];\
    for (int l = 0; l < LANES; l++) any_nan |= nan[l] != 0;                                                         \
    result = lanes[0] > result ? lanes[0] : result;                                                                 \
    return any_nan ? (T)NAN : result;                                                                               \
}                                                                                                                   \
                                                                                                                    \
static T flash_row_scan_##T(const T *row, int64_t n, T start, int64_t nan_from) {  /* (one element after the other) */\
    int any_nan = start != start;                                                                                   \
    T result = start;                                                                                               \
    for (int64_t i = 0; i < n; i++) {                                                                               \
        any_nan |= i < nan_from && row[i] != row[i];                                                                \
        result = row[i] > result ? row[i] : result;                                                                 \
    }                                                                                                               \
    return any_nan ? (T)NAN : result;                                                                               \
}
FLASH_ROW_MAX(float, int32_t)
FLASH_ROW_MAX(double, int64_t)

/* ---- and its forward (attention32.flash_forward, step for step): per (batch, query head, block of queries), the
 * blocks of keys in turn with the running max ``top``, sum and ``dst`` of the online softmax; out = dst * (1 / sum)
 * and the logsumexp top + log(sum). dims: as the backward's, then whether a * b + c is fused (FMA targets). strides:
 * [batch, head, row] of q, k, v, then the bias's four, then [batch, head, row] of out. lse: C-contiguous
 * [batch, heads, rows]. A NaN propagates through the maxima as NumPy's maximum does. Causal without a mask and with a
 * positive scale, the keys after a query are neither scaled, compared nor exponentiated: their weights are 0 either
 * way (flash_exp_sum_row); the backward likewise skips the exp of the weights it sets to 0. */
#define FLASH_FORWARD(NAME, T, EXP_SUM, SCALAR_EXP, LOG, FMA)                                                        \
static T NAME##_fma(int fused, T a, T b, T c) { return fused ? FMA(a, b, c) : a * b + c; }                          \
                                                                                                                    \
void NAME(const void *gemm_address, const int64_t *dims, const int64_t *strides, const T *scale_at, const T *q,     \
          const T *k, const T *v, const T *bias, T *out, T *lse) {                                                  \
    ml_flash_backward##_gemm_of_##T gemm = (ml_flash_backward##_gemm_of_##T)gemm_address;                           \
    int64_t batch = dims[0], hq = dims[1], hkv = dims[2], tq = dims[3], tk = dims[4], d = dims[5], step = dims[6];  \
    int64_t causal = dims[7], lanes = dims[8], fused = dims[9], group = hq / hkv;                                   \
    int64_t kv_split = tk < FLASH_KV_BLOCK ? tk : FLASH_KV_BLOCK;                                                   \
    const int64_t *sq = strides, *sk = strides + 3, *sv = strides + 6, *sb = strides + 9, *so = strides + 13;       \
    /* torch's per-thread buffer (64-byte aligned, as at::empty): qk, qk_max, qk_sum, dst in a row -- MKL's sums may  \
     * depend on where its operands lie (an AMD Zen 4: dst's offset changed an ulp); e where torch's exp writes: qk */ \
    size_t torch_part = flash_aligned_size(sizeof(T) * (step * kv_split + 2 * step + step * d));                    \
    void *block;                                                                                                    \
    T scale = *scale_at, *scores = flash_aligned_alloc(torch_part + sizeof(T) * (step * kv_split + 2 * step), &block);\
    if (scores == NULL) return;                                                                                     \
    T *top = scores + step * kv_split, *total = top + step, *dst = total + step;                                    \
    T *e = (T *)((char *)scores + torch_part), *block_total = e + step * kv_split, *rescale = block_total + step;   \
    for (int64_t b = 0; b < batch; b++)                                                                             \
        for (int64_t j = 0; j < hq; j++) {                                                                          \
            int64_t h = j / group;                                                                                  \
            const T *qh = q + b * sq[0] + j * sq[1], *kh = k + b * sk[0] + h * sk[1], *vh = v + b * sv[0] + h * sv[1];\
            const T *bh = bias == NULL ? NULL : bias + b * sb[0] + j * sb[1];                                       \
            T *outh = out + b * so[0] + j * so[1], *lseh = lse + (b * hq + j) * tq;                                 \
            for (int64_t m = 0; m < tq; m += step) {                                                                \
                int64_t nq = tq - m < step ? tq - m : step, num_keys = causal && m + nq < tk ? m + nq : tk;         \
                for (int64_t r = 0; r < nq; r++) top[r] = -INFINITY, total[r] = 0;                                  \
                for (int64_t n = 0; n < num_keys; n += kv_split) {                                                  \
                    int64_t nk = tk - n < kv_split ? tk - n : kv_split;                                             \
                    int64_t nan_from = bh == NULL ? nk - nk % lanes : nk;  /* (flash_row_max: a mask's max keeps all) */\
                    gemm(FLASH_ROW_MAJOR, FLASH_NO_TRANS, FLASH_TRANS, nq, nk, d, 1, qh + m * sq[2], sq[2],         \
                         kh + n * sk[2], sk[2], 0, scores, nk);                                                     \
                    for (int64_t r = 0; r < nq; r++) {                                                              \
                        T *row = scores + r * nk, row_top;                                                          \
                        int64_t future = flash_first_future_key(causal, m + r - n, nk);                             \
                        for (int64_t c = future; c < nk; c++) row[c] = -INFINITY;                                   \
                        /* -inf times a positive scale, less a finite max, is -inf: its exp 0 (computed: nk) */    \
                        int64_t computed = !flash_scalar_loops && bh == NULL && scale > 0 ? future : nk;            \
                        if (bh == NULL)                                                                             \
                            for (int64_t c = 0; c < computed; c++) row[c] *= scale;                                 \
                        else                                                                                        \
                            for (int64_t c = 0; c < nk; c++)                                                        \
                                row[c] = NAME##_fma(fused, scale, row[c], bh[(m + r) * sb[2] + (n + c) * sb[3]]);   \
                        row_top = (flash_scalar_loops ? flash_row_scan_##T : flash_row_max_##T)(row, computed, top[r],  \
                                                                                                nan_from);          \
                        computed = row_top != row_top ? nk : computed;  /* (a NaN max: NaN weights throughout) */  \
                        int live = row_top != -INFINITY;  /* (no key yet: weights 0, max and sum as they were) */  \
                        for (int64_t c = 0; c < computed; c++) row[c] -= live ? row_top : 0;                        \
                        block_total[r] = EXP_SUM(row, e + r * nk, nk, computed, lanes);                             \
                        if (!live) memset(e + r * nk, 0, sizeof(T) * nk);                                           \
                        rescale[r] = SCALAR_EXP(live ? top[r] - row_top : 0);                                       \
                        if (live) total[r] = NAME##_fma(fused, rescale[r], total[r], block_total[r]);               \
                        top[r] = row_top;                                                                           \
                        if (n)                                                                                      \
                            for (int64_t c = 0; c < d; c++) dst[r * d + c] *= rescale[r];                           \
                    }                                                                                               \
                    gemm(FLASH_ROW_MAJOR, FLASH_NO_TRANS, FLASH_NO_TRANS, nq, d, nk, 1, e, nk, vh + n * sv[2],      \
                         sv[2], n ? 1 : 0, dst, d);                                                                 \
                }                                                                                                   \
                for (int64_t r = 0; r < nq; r++) {                                                                  \
                    T sum = total[r] == 0 ? 1 : total[r], reciprocal = (T)1 / sum;  /* (no key: output 0) */        \
                    for (int64_t c = 0; c < d; c++) outh[(m + r) * so[2] + c] = dst[r * d + c] * reciprocal;        \
                    lseh[m + r] = (top[r] == -INFINITY ? 0 : top[r]) + LOG(sum);                                    \
                }                                                                                                   \
            }                                                                                                       \
        }                                                                                                           \
    free(block);                                                                                                    \
}

FLASH_FORWARD(ml_flash_forward, float, flash_exp_sum_row_float, flash_expf, logf, fmaf)
FLASH_FORWARD(ml_flash_forward64, double, flash_exp_sum_row_double, exp, log, fma)

static const double EXP2_64_POLY[10] = {
    0.4434359082926529454e-9, 0.7073164598085707425e-8, 0.1017819260921760451e-6, 0.1321543872511327615e-5,
    0.1525273353517584730e-4, 0.1540353045101147808e-3, 0.1333355814670499073e-2, 0.9618129107597600536e-2,
    0.5550410866482046596e-1, 0.2402265069591012214e+0};

static double sleef_exp2_64(double d) {
    double q = rint(d), s = d - q, s2 = s * s, s4 = s2 * s2;
    double p[4] = {s, s2, s4, s4 * s4};
    double u = fma(fma(poly10(p, EXP2_64_POLY), s, 0.6931471805599452862e+0), s, 1.0);
    u = times_power_of_two(u, q);
    if (d >= 1024) u = INFINITY;
    if (d < -2000) u = 0.0;
    return u;
}

static const double LOG1P_64_POLY[7] = {0.1532076988502701353e+0, 0.1525629051003428716e+0, 0.1818605932937785996e+0,
                                        0.2222214519839380009e+0, 0.2857142932794299317e+0, 0.3999999999635251990e+0,
                                        0.6666666666667333541e+0};

/* floor(log2 |v|) as AVX-512's getexp (frexp's exponent less one) */
static inline double exponent_of(double v) { int e; frexp(v, &e); return e - 1; }

static double sleef_log1p64(double d) {
    if (d != d || d < -1) return NAN;
    if (d == -1) return -INFINITY;
    if (d == 0) return d;                                /* (-0 stays -0) */
    if (d > 1e307) return log(d);                        /* (past SLEEF's bound: its log, here C's) */
    double scaled = (d + 1) * (1 / 0.75), e = exponent_of(scaled);
    double t = ldexp(1.0, -(int)e);
    double m = fma(d, t, t - 1);
    double s_hi = LN2_HI * e, s_lo = fma(LN2_LO, e, fma(LN2_HI, e, -s_hi));
    double two_plus_m = 2 + m;
    dd x = dd_divide(dd_of(m, 0.0), dd_of(two_plus_m, (2 - two_plus_m) + m));
    double x2 = x.hi * x.hi, x4 = x2 * x2;
    double p[4] = {x2, x4, x4 * x4, 0};
    double poly = poly7(p, LOG1P_64_POLY);
    double hi = s_hi + x.hi * 2;
    s_lo = (((s_hi - hi) + x.hi * 2) + s_lo) + x.lo * 2;
    double tail = (x2 * x.hi) * poly;
    s_hi = hi;
    hi = hi + tail;
    return hi + (((s_hi - hi) + tail) + s_lo);
}

static const double EXPK2_64_POLY[10] = {
    0.1602472219709932072e-9, 0.2092255183563157007e-8, 0.2505230023782644465e-7, 0.2755724800902135303e-6,
    0.2755731892386044373e-5, 0.2480158735605815065e-4, 0.1984126984148071858e-3, 0.1388888888886763255e-2,
    0.8333333333333347095e-2, 0.4166666666666669905e-1};

/* e^y as a double-double (SLEEF's expk2 of (y, 0); both parts 0 below -1000) */
static dd sleef_expk2_64(double y) {
    double q = rint(y * R_LN2_64);
    dd s = dd_add_d(dd_of(y, 0.0), q * -LN2_UPPER);
    s = dd_add_d(s, q * -LN2_LOWER);
    dd s2 = dd_square(s), s4 = dd_square(s2);
    double p[4] = {s.hi, s2.hi, s4.hi, s4.hi * s4.hi};
    double u = poly10(p, EXPK2_64_POLY);
    dd t = dd_add_fast(dd_of(0.5, 0.0), dd_mul_d(s, 0.1666666666666666574e+0));
    t = dd_add_fast(dd_of(1.0, 0.0), dd_mul(t, s));
    t = dd_add_fast(dd_of(1.0, 0.0), dd_mul(t, s));
    t = dd_add_fast(t, dd_mul_d(s4, u));
    if (y < -1000) return dd_of(0.0, 0.0);
    return dd_of(times_power_of_two(t.hi, q), times_power_of_two(t.lo, q));
}

static double sleef_expm1_64(double a) {
    if (a > 709.782712893383996732223) return INFINITY;
    if (a < -36.736800569677101399113302437) return -1.0;
    if (a == 0) return a;
    dd d = dd_add_d(sleef_expk2_64(a), -1.0);
    return d.hi + d.lo;
}

/* which: 0 sinh, 1 cosh, 2 tanh */
static double sleef_hyperbolic64(int which, double x) {
    if (x != x) return x;
    double y = fabs(x), out;
    dd e = sleef_expk2_64(y), r = dd_reciprocal(e), minus_r = dd_of(-r.hi, -r.lo);
    if (which == 2) {
        dd d = dd_divide(dd_add(e, minus_r), dd_add(e, r));
        out = d.hi + d.lo;
        if (y > 18.714973875 || out != out) out = 1.0;
    } else {
        dd d = dd_add_fast(e, which == 1 ? r : minus_r);
        out = (d.hi + d.lo) * 0.5;
        if (y > 710 || out != out) out = INFINITY;
    }
    return which == 1 ? out : copysign(out, x);
}

static const double LOGK2_64_POLY[7] = {0.13860436390467167910856, 0.131699838841615374240845,
                                        0.153914168346271945653214, 0.181816523941564611721589,
                                        0.22222224632662035403996, 0.285714285511134091777308,
                                        0.400000000000914013309483};

/* ln of a double-double d > 0 as one (SLEEF's logk2) */
static dd sleef_logk2_64(dd d) {
    double e = exponent_of(d.hi * (1 / 0.75));
    dd m = dd_of(ldexp(d.hi, -(int)e), ldexp(d.lo, -(int)e));
    dd x = dd_divide(dd_add_d(m, -1.0), dd_add_d(m, 1.0));
    dd x2 = dd_square(x);
    double x4 = x2.hi * x2.hi;
    double p[4] = {x2.hi, x4, x4 * x4, 0};
    double t = fma(poly7(p, LOGK2_64_POLY), x2.hi, 0.666666666666664853302393);
    dd s = dd_mul_d(dd_of(LN2_HI, LN2_LO), e);
    s = dd_add_fast(s, dd_of(x.hi * 2, x.lo * 2));
    return dd_add_fast(s, dd_mul_d(dd_mul(x2, x), t));
}

static double sleef_atanh64(double x) {
    if (x != x) return x;
    double y = fabs(x), out;
    if (isinf(x) || y > 1) return NAN;
    if (y == 1) {
        out = INFINITY;
    } else {
        dd d = sleef_logk2_64(dd_divide(dd_two_sum(1.0, y), dd_two_sum(1.0, -y)));
        out = (d.hi + d.lo) * 0.5;
        if (out != out) return NAN;
    }
    return copysign(out, x);
}

static const double EXPK_64_POLY[10] = {
    2.51069683420950419527139e-08, 2.76286166770270649116855e-07, 2.75572496725023574143864e-06,
    2.48014973989819794114153e-05, 0.000198412698809069797676111, 0.0013888888939977128960529,
    0.00833333333332371417601081, 0.0416666666665409524128449, 0.166666666666666740681535,
    0.500000000000000999200722};

/* e^d of a double-double, rounded to a double (SLEEF's expk; 0 below -1000) */
static double sleef_expk64(dd d) {
    double q = rint((d.hi + d.lo) * R_LN2_64);
    dd s = dd_add_d(d, q * -LN2_UPPER);
    s = dd_add_d(s, q * -LN2_LOWER);
    double hi = s.hi + s.lo;
    s = dd_of(hi, (s.hi - hi) + s.lo);
    double s2 = s.hi * s.hi, s4 = s2 * s2;
    double p[4] = {s.hi, s2, s4, s4 * s4};
    double u = poly10(p, EXPK_64_POLY);
    dd t = dd_add_fast(dd_of(1.0, 0.0), s);
    t = dd_add_fast(t, dd_mul_d(dd_square(s), u));
    return d.hi < -1000 ? 0.0 : times_power_of_two(t.hi + t.lo, q);
}

/* erf: |x| <= 2.5 as (1 + x P(x))^-16 - 1, beyond as e^(x P(x)) - 1 (SLEEF's erf_u1's two coefficient sets),
 * P's low three coefficients double-doubles */
static const double ERF_NEAR_POLY[21] = {
    -0.2083271002525222097e-14, +0.7151909970790897009e-13, -0.1162238220110999364e-11, +0.1186474230821585259e-10,
    -0.8499973178354613440e-10, +0.4507647462598841629e-9, -0.1808044474288848915e-8, +0.5435081826716212389e-8,
    -0.1143939895758628484e-7, +0.1215442362680889243e-7, +0.1669878756181250355e-7, -0.9808074602255194288e-7,
    +0.1389000557865837204e-6, +0.2945514529987331866e-6, -0.1842918273003998283e-5, +0.3417987836115362136e-5,
    +0.3860236356493129101e-5, -0.3309403072749947546e-4, +0.1060862922597579532e-3, +0.2323253155213076174e-3,
    +0.1490149719145544729e-3};
static const double ERF_FAR_POLY[21] = {
    -0.4024015130752621932e-18, +0.3847193332817048172e-16, -0.1749316241455644088e-14, +0.5029618322872872715e-13,
    -0.1025221466851463164e-11, +0.1573695559331945583e-10, -0.1884658558040203709e-9, +0.1798167853032159309e-8,
    -0.1380745342355033142e-7, +0.8525705726469103499e-7, -0.4160448058101303405e-6, +0.1517272660008588485e-5,
    -0.3341634127317201697e-5, -0.2515023395879724513e-5, +0.6539731269664907554e-4, -0.3551065097428388658e-3,
    +0.1210736097958368864e-2, -0.2605566912579998680e-2, +0.1252823202436093193e-2, +0.1820191395263313222e-1,
    -0.1021557155453465954e+0};
static const double ERF_NEAR_DD[3][2] = {{0.0092877958392275604405, 7.9287559463961107493e-19},
                                         {0.042275531758784692937, 1.3785226620501016138e-19},
                                         {0.07052369794346953491, 9.5846628070792092842e-19}};
static const double ERF_FAR_DD[3][2] = {{-0.63691044383641748361, -2.4249477526539431839e-17},
                                        {-1.1282926061803961737, -6.2970338860410996505e-17},
                                        {-1.2261313785184804967e-05, -5.5329707514490107044e-22}};

static double sleef_erf64(double a) {
    double x = fabs(a), x2 = x * x, x4 = x2 * x2, x8 = x4 * x4;
    int near = x <= 2.5;
    const double (*c)[2] = near ? ERF_NEAR_DD : ERF_FAR_DD;
    double p[5] = {x, x2, x4, x8, x8 * x8};
    double t = poly21(p, near ? ERF_NEAR_POLY : ERF_FAR_POLY);
    dd high = dd_add_fast(dd_of(c[0][0], c[0][1]), dd_mul_d(dd_of(t, 0.0), x));
    dd low = dd_add_fast(dd_of(c[2][0], c[2][1]), dd_mul_d(dd_of(c[1][0], c[1][1]), x));
    dd t2 = dd_add_fast(low, dd_mul_d(high, x2));
    if (near) {
        dd s = dd_mul_d(t2, x);
        double hi = 1 + s.hi;
        s = dd_of(hi, ((1 - hi) + s.hi) + s.lo);
        for (int k = 0; k < 4; k++) s = dd_square(s);
        t2 = dd_reciprocal(s);
    } else {
        t2 = dd_of(sleef_expk64(t2), 0.0);
    }
    t2 = dd_add_d(t2, -1.0);
    double z = -(t2.hi + t2.lo);
    if (x < 1e-8) z = x * 1.12837916709551262756245475959;
    if (x >= 6) z = 1.0;
    if (isinf(a)) z = 1.0;
    if (a == 0) z = 0.0;
    return mulsign64(z, a);
}

static const double ATAN2_64_POLY[16] = {
    1.06298484191448746607415e-05, -0.000125620649967286867384336, 0.00070557664296393412389774,
    -0.00251865614498713360352999, 0.00646262899036991172313504, -0.0128281333663399031014274,
    0.0208024799924145797902497, -0.0289002344784740315686289, 0.0359785005035104590853656,
    -0.041848579703592507506027, 0.0470843011653283988193763, -0.0524914210588448421068719,
    0.0587946590969581003860434, -0.0666620884778795497194182, 0.0769225330296203768654095,
    -0.0909090442773387574781907};
static const double ATAN2_64_HORNER[4] = {0.111111108376896236538123, -0.142857142756268568062339,
                                          0.199999999997977351284817, -0.333333333333317605173818};

/* the angle of (x, y), y >= 0, as a double-double (SLEEF's atan2k_u1) */
static dd sleef_atan2k_64(double y, double x) {
    double q = x < 0 ? -2.0 : 0.0;
    x = fabs(x);
    int swap = x < y;
    if (swap) q += 1;
    dd s = dd_divide(dd_of(swap ? -x : y, 0.0), dd_of(swap ? y : x, 0.0));
    dd t = dd_square(s);
    double hi = t.hi + t.lo;
    t = dd_of(hi, (t.hi - hi) + t.lo);
    double t2 = t.hi * t.hi, t4 = t2 * t2;
    double p[4] = {t.hi, t2, t4, t4 * t4};
    double u = poly16(p, ATAN2_64_POLY);
    for (int k = 0; k < 4; k++) u = fma(u, t.hi, ATAN2_64_HORNER[k]);
    t = dd_add_fast(s, dd_mul_d(dd_mul(s, t), u));
    return dd_add_fast(dd_mul_d(dd_of(1.570796326794896557998982, 6.12323399573676603586882e-17), q), t);
}

static double sleef_atan2_64(double y, double x) {
    const double half_pi = 1.5707963267948966;
    int tiny = fabs(x) < 5.5626846462680083984e-309;   /* (both scaled up by 2^53 first) */
    double xs = tiny ? x * 9007199254740992.0 : x, ys = tiny ? y * 9007199254740992.0 : y;
    dd d = sleef_atan2k_64(fabs(ys), xs);
    double r = mulsign64(d.hi + d.lo, xs);
    if (isinf(x) || x == 0) r = half_pi - (isinf(x) ? mulsign64(half_pi, x) : 0.0);
    if (isinf(ys)) r = half_pi - (isinf(x) ? mulsign64(0.7853981633974483, x) : 0.0);
    if (y == 0) r = signbit(x) ? 3.141592653589793 : 0.0;
    return x != x || y != y ? NAN : mulsign64(r, y);
}

static double sleef_hypot64(double x, double y) {
    x = fabs(x), y = fabs(y);
    if (x == INFINITY || y == INFINITY) return INFINITY;
    if (x != x || y != y) return NAN;
    double low = x < y ? x : y, high = x < y ? y : x;
    if (low == 0) return high;
    int tiny = high < 2.2250738585072014e-308;
    double n = tiny ? low * 18014398509481984.0 : low, d = tiny ? high * 18014398509481984.0 : high;
    dd t = dd_divide(dd_of(n, 0.0), dd_of(d, 0.0));
    t = dd_mul_d(dd_sqrt(dd_add_d(dd_square(t), 1.0)), high);
    double out = t.hi + t.lo;
    return out != out ? INFINITY : out;
}

static const double LOGK_64_POLY[9] = {
    0.116255524079935043668677, 0.103239680901072952701192, 0.117754809412463995466069, 0.13332981086846273921509,
    0.153846227114512262845736, 0.181818180850050775676507, 0.222222222230083560345903, 0.285714285714249172087875,
    0.400000000000000077715612};

/* ln d of d > 0 as a double-double (SLEEF's logk, AVX-512's branch: getexp, getmant) */
static dd sleef_logk64(double d) {
    double e = isinf(d) ? 1024.0 : exponent_of(d * (1 / 0.75));
    int ignored;
    double fraction = frexp(d, &ignored);               /* in [0.5, 1) */
    double m = fraction < 0.75 ? fraction * 2 : fraction;  /* getmant: [0.75, 1.5) */
    dd x = dd_divide(dd_two_sum(-1.0, m), dd_two_sum(1.0, m));
    dd x2 = dd_square(x);
    double x4 = x2.hi * x2.hi, x8 = x4 * x4;
    double p[4] = {x2.hi, x4, x8, x8 * x8};
    double t = poly9(p, LOGK_64_POLY);
    dd s = dd_mul_d(dd_of(LN2_HI, LN2_LO), e);
    s = dd_add_fast(s, dd_of(x.hi * 2, x.lo * 2));
    x = dd_mul(x2, x);
    s = dd_add_fast(s, dd_mul(x, dd_of(0.666666666666666629659233, 3.80554962542412056336616e-17)));
    x = dd_mul(x2, x);
    return dd_add_fast(s, dd_mul_d(x, t));
}

static double sleef_pow64(double x, double y) {
    int is_int = rint(y) == y, is_odd = is_int && rint(y * 0.5) != y * 0.5;
    if (y == 0 || x == 1) return 1.0;
    if (x != x || y != y) return NAN;
    if (isinf(x) || x == 0) return (is_odd ? mulsign64(1.0, x) : 1.0) * ((x == 0 ? -y : y) < 0 ? 0.0 : INFINITY);
    if (isinf(y)) {
        double efx = mulsign64(fabs(x) - 1, y);
        return efx < 0 ? 0.0 : efx == 0 ? 1.0 : INFINITY;
    }
    dd d = dd_mul_d(sleef_logk64(fabs(x)), y);
    double result = d.hi > 709.78271114955742909217217426 ? INFINITY : sleef_expk64(d);
    return result * (x > 0 ? 1.0 : is_int ? (is_odd ? -1.0 : 1.0) : NAN);
}

/* ---- Sleef_lgammaf16_u10 / Sleef_lgammad8_u10 (torch.lgamma's float32 and float64 kernels): minilora/sleef_lgamma.py
 * step for step, one template (SLEEF_LGAMMA) for both types as the port's _Float and _Double: gammak's double-float
 * c and n / d with Gamma(a) = e^c n / d, then lgamma = c + ln |n / d|. The constants are the port's doubles, rounded
 * to the type here as the port rounds them (a double cast to float, not a float literal: the two may differ). */
typedef struct {
    double tiny, near_1_to, shift, tiny_scale, period;  /* (period: sin(pi x)'s argument reduced by it) */
    double ln_tiny_scale[2], ln_sqrt_2pi[2], ln_pi[2];  /* pairs; one with lo 0 is split as SLEEF's vcast_vf2_d */
    int terms;  /* of each of the three polynomials, highest power first */
    double stirling[23], about_1[23], about_2[23], taylor[3][2];  /* (taylor: [i][0] about 1, [i][1] about 2) */
    int sinpi_terms;  /* sin(pi s / 4) and cos(pi s / 4): sinpi_terms plain coefficients, then two pairs */
    double sinpi_sin[6], sinpi_cos[6], sinpi_sin_pairs[2][2], sinpi_cos_pairs[2][2];
} lgamma_constants;

/* The constants come from minilora/sleef_lgamma.py (its _Float and _Double: one place for them), given once
 * after loading (ml_lgamma_constants, 0: float, 1: double) */
static lgamma_constants LGAMMA_FLOAT, LGAMMA_DOUBLE;
void ml_lgamma_constants(int which, const lgamma_constants *k) {
    if (which) LGAMMA_DOUBLE = *k; else LGAMMA_FLOAT = *k;
}

/* sinpik's quarter turns q of u = 4 d: float's truncated, then an odd one moved to the even one past it from 0 (C's
 * int arithmetic, as SLEEF's); double's u + 1/2 rounded to nearest, its low bit cleared */
static inline int32_t lgamma_quarter_turns_float(float u) {
    int32_t q = (int32_t)u;
    return (q + (int32_t)(((uint32_t)q >> 31) ^ 1u)) & ~1;
}
static inline int32_t lgamma_quarter_turns_double(double u) { return (int32_t)rint(u + 0.5) & ~1; }

/* A constant pair rounded to the type (sleef_lgamma._pair): lo 0 means a double given alone, split into its rounded
 * value and the rounded rest */
#define LGAMMA_PAIR(PAIR, T, v) ((PAIR){(T)(v)[0], (v)[1] != 0 ? (T)(v)[1] : (T)((v)[0] - (double)(T)(v)[0])})

#define SLEEF_LGAMMA(NAME, T, PAIR, K, FMA, ADD_REAL, ADD, MUL, MUL_REAL, DIVIDE, LOGK2, QUARTER_TURNS)             \
static inline PAIR NAME##_normalize(PAIR x) { T hi = x.hi + x.lo; return (PAIR){hi, (x.hi - hi) + x.lo}; }          \
static inline PAIR NAME##_product(T x, T y) { T hi = x * y; return (PAIR){hi, FMA(x, y, -hi)}; }                     \
static inline PAIR NAME##_negate(PAIR x) { return (PAIR){-x.hi, -x.lo}; }                                           \
                                                                                                                    \
/* SLEEF's sinpik: sin(pi d) as a pair, d's quarter turns folded out (the odd pairs by cos's polynomial) */          \
static inline PAIR NAME##_sinpi(T d) {                                                                              \
    T u = d * (T)4;                                                                                                 \
    int32_t q = QUARTER_TURNS(u);                                                                                   \
    int odd = (q & 2) == 2;  /* (an odd pair of quarter turns: cos's polynomial) */                                 \
    T t = u - (T)q, s = t * t;                                                                                      \
    PAIR s2 = NAME##_product(t, t);                                                                                 \
    const double *plain = odd ? K.sinpi_cos : K.sinpi_sin;                                                          \
    const double (*pairs)[2] = odd ? K.sinpi_cos_pairs : K.sinpi_sin_pairs;                                         \
    T v = (T)plain[0];                                                                                              \
    for (int i = 1; i < K.sinpi_terms; i++) v = FMA(v, s, (T)plain[i]);                                             \
    PAIR x = ADD((PAIR){v * s, 0}, LGAMMA_PAIR(PAIR, T, pairs[0]));                                                 \
    x = ADD(MUL(s2, x), LGAMMA_PAIR(PAIR, T, pairs[1]));                                                            \
    x = MUL(x, odd ? s2 : (PAIR){t, 0});                                                                            \
    x = odd ? ADD_REAL(x, (T)1) : x;                                                                                \
    return (q & 4) == 4 ? NAME##_negate(x) : x;                                                                     \
}                                                                                                                   \
                                                                                                                    \
/* SLEEF's gammak: c (returned) and n / d (*ratio) with Gamma(a) = e^c n / d: Stirling's series from 2.3 (x moved  \
 * past 7 by the recurrence), ln Gamma's Taylor polynomials about 1 and 2 below, the reflection below 1/2, 1 / x    \
 * scaled where x is tiny */                                                                                        \
static inline PAIR NAME##_gammak(T a, PAIR *ratio) {                                                                \
    const PAIR zero = {0, 0}, one = {1, 0};                                                                         \
    int tiny = fabs(a) < (T)K.tiny, reflect = a < (T)0.5;                                                           \
    PAIR x = tiny ? zero : reflect ? ADD_REAL(one, -a) : (PAIR){a, 0};                                              \
    int near_1 = ((T)0.5 <= x.hi) & (x.hi <= (T)K.near_1_to), stirling = (T)2.3 <= x.hi;                            \
    PAIR y = x;                                                                                                     \
    for (int k = 1; k < K.shift; k++) y = NAME##_normalize(MUL(ADD_REAL(x, (T)k), y));                              \
    int shift = stirling & (x.hi <= (T)7);                                                                          \
    PAIR numerator = shift ? y : one;                                                                               \
    x = shift ? ADD_REAL(x, (T)K.shift) : x;                                                                        \
    T t = stirling ? (T)1 / x.hi : NAME##_normalize(ADD_REAL(x, near_1 ? (T)-1 : (T)-2)).hi;                        \
    const double *poly = stirling ? K.stirling : near_1 ? K.about_1 : K.about_2;                                    \
    T u = (T)poly[0];                                                                                               \
    for (int i = 1; i < K.terms; i++) u = FMA(u, t, (T)poly[i]);                                                    \
    PAIR series = MUL(ADD_REAL(x, (T)-0.5), LOGK2(x));                                                              \
    series = ADD(ADD(series, NAME##_negate(x)), LGAMMA_PAIR(PAIR, T, K.ln_sqrt_2pi));                               \
    PAIR z = NAME##_product(u, t);                                                                                  \
    for (int i = 0; i < 3; i++) z = MUL_REAL(ADD_REAL(z, (T)K.taylor[i][near_1 ? 0 : 1]), t);                       \
    PAIR c = stirling ? series : z;                                                                                 \
    PAIR denominator = stirling ? ADD_REAL(NAME##_product(u, t), (T)1) : one;                                       \
    c = tiny ? LGAMMA_PAIR(PAIR, T, K.ln_tiny_scale)                                                                \
             : reflect ? ADD(LGAMMA_PAIR(PAIR, T, K.ln_pi), NAME##_negate(c)) : c;                                  \
    T turns = (T)trunc(a * ((T)1 / (T)K.period));                                                                   \
    turns = fabs(turns) < 2147483648.0 ? turns : (T)-2147483648.0;  /* (the int32 conversion's) */                  \
    PAIR sine = MUL(denominator, NAME##_sinpi(a - (T)K.period * turns));                                            \
    PAIR n = tiny ? one : reflect ? numerator : denominator;                                                        \
    PAIR d = tiny ? (PAIR){a * (T)K.tiny_scale, 0} : reflect ? sine : numerator;                                    \
    *ratio = DIVIDE(n, d);                                                                                          \
    return c;                                                                                                       \
}                                                                                                                   \
                                                                                                                    \
/* lgamma = c + ln |n / d|; +inf at infinity, at the poles 0, -1, -2 ... and where a pair overflowed */             \
static T NAME(T a) {                                                                                                \
    PAIR ratio, c = NAME##_gammak(a, &ratio);                                                                       \
    PAIR y = ADD(c, LOGK2(signbit(ratio.hi) ? NAME##_negate(ratio) : ratio));                                      \
    T r = y.hi + y.lo;                                                                                              \
    int pole = isinf(a) || (a <= 0 && (T)trunc(a) == a) || (a == a && r != r);                                      \
    return pole ? (T)INFINITY : r;                                                                                  \
}

SLEEF_LGAMMA(sleef_lgamma32, float, df, LGAMMA_FLOAT, fmaf, df_add_float, df_add, df_mul, df_mul_float, df_divide,
             sleef_logk2, lgamma_quarter_turns_float)
SLEEF_LGAMMA(sleef_lgamma64, double, dd, LGAMMA_DOUBLE, fma, dd_add_d, dd_add, dd_mul, dd_mul_d, dd_divide,
             sleef_logk2_64, lgamma_quarter_turns_double)

void ml_lgamma(const float *restrict x, float *restrict out, size_t n) {
    for (size_t i = 0; i < n; i++) out[i] = sleef_lgamma32(x[i]);
}

/* float32_math._SLEEF64_UNARY's numbering */
void ml_sleef64(int which, const double *restrict x, double *restrict out, size_t n) {
    switch (which) {
    case 0: for (size_t i = 0; i < n; i++) out[i] = sleef_exp2_64(x[i]); break;
    case 1: for (size_t i = 0; i < n; i++) out[i] = sleef_log1p64(x[i]); break;
    case 2: for (size_t i = 0; i < n; i++) out[i] = sleef_expm1_64(x[i]); break;
    case 3: case 4: case 5: for (size_t i = 0; i < n; i++) out[i] = sleef_hyperbolic64(which - 3, x[i]); break;
    case 6: for (size_t i = 0; i < n; i++) out[i] = sleef_atanh64(x[i]); break;
    case 7: for (size_t i = 0; i < n; i++) out[i] = sleef_erf64(x[i]); break;
    case 8: for (size_t i = 0; i < n; i++) out[i] = sleef_lgamma64(x[i]); break;
    default: break;
    }
}

/* float32_math._SLEEF64_BINARY's numbering */
void ml_sleef64_2(int which, const double *restrict x, const double *restrict y, double *restrict out, size_t n) {
    switch (which) {
    case 0: for (size_t i = 0; i < n; i++) out[i] = sleef_atan2_64(x[i], y[i]); break;
    case 1: for (size_t i = 0; i < n; i++) out[i] = sleef_hypot64(x[i], y[i]); break;
    case 2: for (size_t i = 0; i < n; i++) out[i] = sleef_pow64(x[i], y[i]); break;
    default: break;
    }
}

/* ---- MKL's float32 sqrt, as torch's CPU build runs it on an Intel CPU with AVX-512 --------------------------
 * torch sends float32 sqrt to MKL's vector math (VML, "HA" accuracy), whose code is closed and not correctly
 * rounded: about 1 root in 150 is an ulp off the exact one. Matched bit for bit against torch.sqrt (Intel Xeon,
 * Sapphire Rapids class; every exponent of float32, subnormals, 0, inf and NaN; tests/test_mkl_sqrt_r27.py):
 *     y = rsqrt14(a)  (the AVX-512 instruction's 14-bit estimate of 1/sqrt(a)),  s = a y,
 *     root = fma(fma(-s, s, a), y / 2, s)      one correction of s by the residual a - s^2
 * with a = x 2^48 and the root times 2^-24 below 2^-64 (where the residual would be subnormal: any scale between
 * 2^-117 and 2^79 gives these bits), x itself for 0, -0 and +inf, NaN (x's, quieted) for a NaN, and +NaN for a
 * negative x. Other CPUs (an AMD's MKL path, AVX2) were not matched: float32_math asks where this applies.
 * (found by trying the usual refinements of an rsqrt estimate against torch's bits: /tmp scripts, round 27) */
__attribute__((target("avx512f,fma"))) static void mkl_sqrt_16(const float *x, float *out, __mmask16 lanes) {
    __m512 v = _mm512_maskz_loadu_ps(lanes, x), zero = _mm512_setzero_ps();
    __mmask16 tiny = _mm512_cmp_ps_mask(v, _mm512_set1_ps(0x1p-64f), _CMP_LT_OQ);
    __m512 a = _mm512_mask_mul_ps(v, tiny, v, _mm512_set1_ps(0x1p48f));
    __m512 y = _mm512_rsqrt14_ps(a), s = _mm512_mul_ps(a, y);
    __m512 root = _mm512_fmadd_ps(_mm512_fnmadd_ps(s, s, a), _mm512_mul_ps(y, _mm512_set1_ps(0.5f)), s);
    root = _mm512_mask_mul_ps(root, tiny, root, _mm512_set1_ps(0x1p-24f));
    __mmask16 itself = _mm512_cmp_ps_mask(v, zero, _CMP_EQ_OQ) | _mm512_cmp_ps_mask(v, _mm512_set1_ps(INFINITY), _CMP_EQ_OQ);
    root = _mm512_mask_mov_ps(root, itself, v);
    root = _mm512_mask_mov_ps(root, _mm512_cmp_ps_mask(v, zero, _CMP_LT_OQ), _mm512_set1_ps(NAN));
    root = _mm512_mask_add_ps(root, _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q), v, v);  /* (x + x: x's NaN, quiet) */
    _mm512_mask_storeu_ps(out, lanes, root);
}

__attribute__((target("avx512f,fma"))) void ml_mkl_sqrt(const float *x, float *out, size_t n) {
    size_t i = 0;
    for (; i + 16 <= n; i += 16) mkl_sqrt_16(x + i, out + i, 0xFFFF);
    if (i < n) mkl_sqrt_16(x + i, out + i, (__mmask16)((1u << (n - i)) - 1));
}

/* The same for float64, matched likewise: one Goldschmidt step on rsqrt14's estimate, then the correction --
 *     s = a y, h = y / 2, e = fma(-s, h, 1/2), s = fma(s, e, s), h = fma(h, e, h), root = fma(fma(-s, s, a), h, s)
 * -- with a = x 2^108 and the root times 2^-54 below 2^-512 (any scale between 2^-1010 and 2^900 gives these bits). */
__attribute__((target("avx512f,fma"))) static void mkl_sqrt_8(const double *x, double *out, __mmask8 lanes) {
    __m512d v = _mm512_maskz_loadu_pd(lanes, x), zero = _mm512_setzero_pd(), half = _mm512_set1_pd(0.5);
    __mmask8 tiny = _mm512_cmp_pd_mask(v, _mm512_set1_pd(0x1p-512), _CMP_LT_OQ);
    __m512d a = _mm512_mask_mul_pd(v, tiny, v, _mm512_set1_pd(0x1p108));
    __m512d y = _mm512_rsqrt14_pd(a), s = _mm512_mul_pd(a, y), h = _mm512_mul_pd(half, y);
    __m512d e = _mm512_fnmadd_pd(s, h, half);
    s = _mm512_fmadd_pd(s, e, s);
    h = _mm512_fmadd_pd(h, e, h);
    __m512d root = _mm512_fmadd_pd(_mm512_fnmadd_pd(s, s, a), h, s);
    root = _mm512_mask_mul_pd(root, tiny, root, _mm512_set1_pd(0x1p-54));
    __mmask8 itself = _mm512_cmp_pd_mask(v, zero, _CMP_EQ_OQ) | _mm512_cmp_pd_mask(v, _mm512_set1_pd(INFINITY), _CMP_EQ_OQ);
    root = _mm512_mask_mov_pd(root, itself, v);
    root = _mm512_mask_mov_pd(root, _mm512_cmp_pd_mask(v, zero, _CMP_LT_OQ), _mm512_set1_pd(NAN));
    root = _mm512_mask_add_pd(root, _mm512_cmp_pd_mask(v, v, _CMP_UNORD_Q), v, v);
    _mm512_mask_storeu_pd(out, lanes, root);
}

__attribute__((target("avx512f,fma"))) void ml_mkl_sqrt64(const double *x, double *out, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8) mkl_sqrt_8(x + i, out + i, 0xFF);
    if (i < n) mkl_sqrt_8(x + i, out + i, (__mmask8)((1u << (n - i)) - 1));
}

/* ---- one AdamW step over n float32 weights, in one pass --------------------------------------------------
 * The order and roundings of optim/adam.py's adamw_update (exercise 6.1; torch's single-tensor AdamW), which
 * makes ~14 passes of NumPy calls over each slice: every float32 operation rounded as written, and the two
 * multiply-adds torch fuses (lerp's fmadd, addcmul's) rounded once through double where ``fused`` -- the
 * product of two floats is exact in double, then the sum, as adamw_update's float64 ``wide`` array does.
 * ``mkl_sqrt``: the root is MKL's (above: torch's on an Intel AVX-512 CPU), else sqrtf's, correctly rounded;
 * then each block of 256 weights goes twice through the cache: the moments, then their roots, then the weights.
 * 0; 1, nothing done, where two of the arrays overlap (``restrict`` would not hold; a gradient that IS the weight is
 * shrunk with it before the moments read it in adamw_update, as in torch's). */
#define ADAMW_BLOCK 256
int ml_adamw(float *restrict p, const float *restrict g, float *restrict m, float *restrict v, size_t n,
             int decay, float shrink, float one_minus_beta1, float one_minus_beta2, float beta2, float bias2_root,
             float eps, float step_size, int fused, int mkl_sqrt) {
    const uintptr_t at[4] = {(uintptr_t)p, (uintptr_t)g, (uintptr_t)m, (uintptr_t)v};
    for (int a = 0; a < 4; a++)
        for (int b = a + 1; b < 4; b++)
            if ((at[a] < at[b] ? at[b] - at[a] : at[a] - at[b]) < n * sizeof(float))
                return 1;
    for (size_t first = 0; first < n; first += ADAMW_BLOCK) {
        size_t last = n - first < ADAMW_BLOCK ? n : first + ADAMW_BLOCK;
        float root[ADAMW_BLOCK];
        for (size_t i = first; i < last; i++) {
            float d = g[i] - m[i];  /* m <- m + (1 - beta1)(g - m): exp_avg.lerp_(grad, 1 - beta1) */
            m[i] = fused ? (float)((double)d * (double)one_minus_beta1 + (double)m[i]) : m[i] + d * one_minus_beta1;
            float s = g[i] * one_minus_beta2;  /* v <- beta2 v + ((1 - beta2) g) g */
            float vi = v[i] * beta2;
            v[i] = fused ? (float)((double)s * (double)g[i] + (double)vi) : vi + s * g[i];
        }
        if (mkl_sqrt)
            ml_mkl_sqrt(v + first, root, last - first);
        else
            for (size_t i = first; i < last; i++) root[i - first] = sqrtf(v[i]);
        for (size_t i = first; i < last; i++) {
            float w = decay ? p[i] * shrink : p[i];  /* decoupled weight decay */
            float denom = root[i - first] / bias2_root + eps;
            p[i] = w + m[i] * step_size / denom;  /* p <- p + (-lr / (1 - beta1^t)) m / denom */
        }
    }
    return 0;
}

/* ---- a fused multiply-add, one rounding (torch's FMAs in backward formulas); a step of 0 repeats a
 * number's one element ------------------------------------------------------------------------------ */
void ml_fma(const float *a, size_t step_a, const float *b, size_t step_b, const float *c, size_t step_c,
            float *out, size_t n) {
    if (step_a && step_b && step_c) {
        for (size_t i = 0; i < n; i++) out[i] = fmaf(a[i], b[i], c[i]);
    } else if (step_a && step_b) {  /* (the common cases as loops that vectorize: fma(x, y, 1), ...) */
        float c0 = c[0];
        for (size_t i = 0; i < n; i++) out[i] = fmaf(a[i], b[i], c0);
    } else if (step_b && !step_a && !step_c) {
        float a0 = a[0], c0 = c[0];
        for (size_t i = 0; i < n; i++) out[i] = fmaf(a0, b[i], c0);
    } else {
        for (size_t i = 0; i < n; i++) out[i] = fmaf(a[i * step_a], b[i * step_b], c[i * step_c]);
    }
}
/* the same in float64, C's fma(): torch's Vectorized<double> fmadd (add's alpha, addcmul, lerp, the optimizers) */
/* acc[i, j] = fma(a[t, i], b[t, j], acc[i, j]) for t = 0, 1, ... in turn: a chain of fused multiply-adds per element,
 * as a convolution kernel's accumulator takes its products one after another (ops/conv_onednn.py) */
void ml_fma_chain(const float *restrict a, const float *restrict b, float *restrict acc, size_t steps, size_t m,
                  size_t k) {
    for (size_t i = 0; i < m; i++)
        for (size_t t = 0; t < steps; t++) {
            float a_ti = a[t * m + i];
            const float *b_t = b + t * k;
            float *row = acc + i * k;
            for (size_t j = 0; j < k; j++) row[j] = fmaf(a_ti, b_t[j], row[j]);
        }
}
void ml_fma64(const double *a, size_t step_a, const double *b, size_t step_b, const double *c, size_t step_c,
              double *out, size_t n) {
    for (size_t i = 0; i < n; i++) out[i] = fma(a[i * step_a], b[i * step_b], c[i * step_c]);
}
/* silu's backward, g s (1 + x (1 - s)) as torch's kernel rounds it: (g s) fma(x, 1 - s, 1) */
void ml_silu_backward(const float *g, const float *restrict x, const float *restrict s, float *out, size_t n) {
    for (size_t i = 0; i < n; i++) out[i] = (g[i] * s[i]) * fmaf(x[i], 1.0f - s[i], 1.0f);
}
/* silu(gate) * up's backward from d = 1 + exp(-gate): mul's first (g up, and d up = g silu(gate), silu =
 * gate / d as the forward rounded it), then silu's of g up, its sigmoid 1 / d as torch's kernel computes it */
static inline float swiglu_dgate(float g, float gate, float up, float d) {
    float s = 1.0f / d;
    return ((g * up) * s) * fmaf(gate, 1.0f - s, 1.0f);
}
void ml_swiglu_backward(const float *restrict g, const float *restrict gate, const float *restrict up,
                        const float *restrict d, float *restrict dgate, float *restrict dup, size_t n) {
    if (!dup) {  /* (up needs no gradient) */
        for (size_t i = 0; i < n; i++) dgate[i] = swiglu_dgate(g[i], gate[i], up[i], d[i]);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        dgate[i] = swiglu_dgate(g[i], gate[i], up[i], d[i]);
        dup[i] = g[i] * (gate[i] / d[i]);
    }
}

/* C's own float functions, as torch's scalar lambdas call them (std::exp(float) is expf: the C library's, the
 * same one torch's process calls): its scalar tail, a non-contiguous input's basic_loop, its "default" build */
void ml_c_function(int which, const float *restrict x, float *restrict out, size_t n) {
    switch (which) {
    case 0: for (size_t i = 0; i < n; i++) out[i] = expf(x[i]); break;
    case 1: for (size_t i = 0; i < n; i++) out[i] = expm1f(x[i]); break;
    case 2: for (size_t i = 0; i < n; i++) out[i] = log1pf(x[i]); break;
    case 3: for (size_t i = 0; i < n; i++) out[i] = tanhf(x[i]); break;
    case 4: for (size_t i = 0; i < n; i++) out[i] = exp2f(x[i]); break;
    case 5: for (size_t i = 0; i < n; i++) out[i] = erff(x[i]); break;
    case 6: for (size_t i = 0; i < n; i++) out[i] = logf(x[i]); break;
    case 7: for (size_t i = 0; i < n; i++) out[i] = sinhf(x[i]); break;
    case 8: for (size_t i = 0; i < n; i++) out[i] = coshf(x[i]); break;
    case 9: for (size_t i = 0; i < n; i++) out[i] = asinhf(x[i]); break;
    case 10: for (size_t i = 0; i < n; i++) out[i] = acoshf(x[i]); break;
    case 11: for (size_t i = 0; i < n; i++) out[i] = atanhf(x[i]); break;
    case 12: for (size_t i = 0; i < n; i++) out[i] = sinf(x[i]); break;
    default: break;
    }
}

/* C's double functions, which torch's float64 scalar lambdas call (std::exp of a double): float32_math.c_function64 */
void ml_c_function64(int which, const double *restrict x, double *restrict out, size_t n) {
    switch (which) {
    case 0: for (size_t i = 0; i < n; i++) out[i] = exp(x[i]); break;
    case 1: for (size_t i = 0; i < n; i++) out[i] = exp2(x[i]); break;
    case 2: for (size_t i = 0; i < n; i++) out[i] = log1p(x[i]); break;
    case 3: for (size_t i = 0; i < n; i++) out[i] = sin(x[i]); break;
    case 4: for (size_t i = 0; i < n; i++) out[i] = log(x[i]); break;
    case 5: for (size_t i = 0; i < n; i++) out[i] = asinh(x[i]); break;
    case 6: for (size_t i = 0; i < n; i++) out[i] = acosh(x[i]); break;
    case 7: for (size_t i = 0; i < n; i++) out[i] = sinh(x[i]); break;
    case 8: for (size_t i = 0; i < n; i++) out[i] = cosh(x[i]); break;
    case 9: for (size_t i = 0; i < n; i++) out[i] = atanh(x[i]); break;
    case 10: for (size_t i = 0; i < n; i++) out[i] = expm1(x[i]); break;
    case 11: for (size_t i = 0; i < n; i++) out[i] = tanh(x[i]); break;
    case 12: for (size_t i = 0; i < n; i++) out[i] = erf(x[i]); break;
    default: break;
    }
}

/* oneDNN's AVX-512 gelu_erf (float32_math.onednn_gelu_erf, its port): polynomial i of table (6 rows of 25
 * float32 coefficients, degree 0 first) for |x|'s binade quarter, Horner's rule in fmaf, then (x (1 + erf)) 0.5 */
void ml_gelu_erf_onednn(const float *restrict x, float *restrict out, size_t n, const float *restrict table) {
    const float saturated = float_of(0x40b15ceeu);
    for (size_t i = 0; i < n; i++) {
        float v = x[i], magnitude = fabsf(v);
        int32_t index = (int32_t)(bits_of(magnitude) + 0xc21fffffu) >> 21;  /* (wraps, as vpaddd; vpsrad) */
        index = index < 1 ? 1 : index > 24 ? 24 : index;
        index = saturated < magnitude ? 23 : index;
        float p = fmaf(table[125 + index], magnitude, table[100 + index]);
        p = fmaf(p, magnitude, table[75 + index]);
        p = fmaf(p, magnitude, table[50 + index]);
        p = fmaf(p, magnitude, table[25 + index]);
        p = fmaf(p, magnitude, table[index]);
        float erf = signbit(v) ? -p : p;
        out[i] = (v * (erf + 1.0f)) * 0.5f;
    }
}

/* oneDNN's JIT exp (float32_math.onednn_exp, its port): clamped (minps/maxps: a NaN takes the bound), 2^(n-1) times a
 * degree-5 polynomial in r = x - n ln 2, times 2; 0 below ln FLT_MIN */
static float onednn_exp(float x) {
    const float ln_flt_max = float_of(0x42b17218u), ln_flt_min = float_of(0xc2aeac50u);
    int underflows = x < ln_flt_min;
    float clamped = x < ln_flt_max ? x : ln_flt_max;
    clamped = clamped > ln_flt_min ? clamped : ln_flt_min;
    float n = floorf(clamped * float_of(0x3fb8aa3bu) + 0.5f);
    float r = fmaf(-n, float_of(0x3f317218u), clamped);
    uint32_t half_scale = underflows ? 0u : (uint32_t)((int32_t)(n - 1.0f) + 127) << 23;
    float p = fmaf(float_of(0x3c07cfceu), r, float_of(0x3d2b9d0du));
    p = fmaf(p, r, float_of(0x3e2aad40u));
    p = fmaf(p, r, float_of(0x3efffee3u));
    p = fmaf(p, r, float_of(0x3f7ffffbu));
    p = fmaf(p, r, 1.0f);
    return (p * float_of(half_scale)) * 2.0f;
}

/* oneDNN's gelu_erf backward factor (float32_math.onednn_gelu_erf_derivative, its port): Abramowitz and Stegun's erf
 * of u = x / sqrt 2 with onednn_exp, then 0.5 erf(u) + (u exp(-u^2) / sqrt(pi) + 0.5) */
void ml_gelu_erf_onednn_derivative(const float *restrict x, float *restrict out, size_t n) {
    for (size_t i = 0; i < n; i++) {
        float u = x[i] * float_of(0x3f3504f3u);
        float q = onednn_exp(-(u * u));
        float slope = (u * float_of(0x3f106ebau)) * q;
        float w = 1.0f / fmaf(float_of(0x3ea7ba05u), fabsf(u), 1.0f);
        float p = fmaf(float_of(0x3f87dc22u), w, float_of(0xbfba00e3u));
        p = fmaf(p, w, float_of(0x3fb5f0e3u));
        p = fmaf(p, w, float_of(0xbe91a98eu));
        p = fmaf(p, w, float_of(0x3e827906u));
        float erf = fmaf((-q) * w, p, 1.0f);
        erf = signbit(u) ? -erf : erf;
        out[i] = fmaf(erf, 0.5f, slope + 0.5f);
    }
}

/* C's two-argument float functions (float32_math.c_function2): powf (NormOps' std::pow of a float), atan2f;
 * an operand's step 0 repeats its one value */
void ml_c_function2(int which, const float *x, size_t step_x, const float *y, size_t step_y, float *out, size_t n) {
    switch (which) {
    case 0: for (size_t i = 0; i < n; i++) out[i] = powf(x[i * step_x], y[i * step_y]); break;
    case 1: for (size_t i = 0; i < n; i++) out[i] = atan2f(x[i * step_x], y[i * step_y]); break;
    default: break;
    }
}

void ml_c_function2_64(int which, const double *x, size_t step_x, const double *y, size_t step_y, double *out,
                       size_t n) {
    switch (which) {
    case 0: for (size_t i = 0; i < n; i++) out[i] = pow(x[i * step_x], y[i * step_y]); break;
    case 1: for (size_t i = 0; i < n; i++) out[i] = atan2(x[i * step_x], y[i * step_y]); break;
    default: break;
    }
}

/* bfloat16 matrix products in oneDNN's order of additions (minilora/bf16_products.py): a [m, k] and b [k, n]
   hold bfloat16 values as floats, so every product is exact in float32; c [m, n] gets each sum. The k axis
   runs in blocks of `block`; in a block each output adds its products a pair at a time, the odd k, then the
   even one (vdpbf16ps), each addition rounded; the blocks' sums are added in order.
   For speed only (the same additions in the same order): on x86-64 tiles of 4 rows x 32 columns keep their
   sums in eight 16-float registers; the other outputs go 4 rows x 256 columns at a time through L1 (`part`
   holds 4 x 256 floats of a later block's sums). */
#define ML_BF16_ROWS 4
#define ML_BF16_COLS 256
static void ml_bf16_add_products(float *restrict acc, const float *restrict brow, const float *x, size_t rows,
                                 size_t cols) {
    for (size_t r = 0; r < rows; r++) {
        const float xr = x[r];
        float *restrict out = acc + r * ML_BF16_COLS;
        for (size_t j = 0; j < cols; j++) out[j] += xr * brow[j];
    }
}
static void ml_bf16_pairs_region(const float *restrict a, const float *restrict b, float *restrict c,
                                 float *restrict part, size_t i0, size_t i1, size_t j0, size_t j1, size_t k, size_t n,
                                 size_t block) {
    float sums[ML_BF16_ROWS * ML_BF16_COLS], x[ML_BF16_ROWS];
    for (size_t i = i0; i < i1; i += ML_BF16_ROWS) {
        size_t rows = i1 - i < ML_BF16_ROWS ? i1 - i : ML_BF16_ROWS;
        for (size_t j = j0; j < j1; j += ML_BF16_COLS) {
            size_t cols = j1 - j < ML_BF16_COLS ? j1 - j : ML_BF16_COLS;
            for (size_t lo = 0; lo < k; lo += block) {
                size_t hi = lo + block < k ? lo + block : k;
                float *acc = lo == 0 ? sums : part;
                for (size_t q = 0; q < ML_BF16_ROWS * ML_BF16_COLS; q++) acc[q] = 0.0f;
                for (size_t kk = lo; kk < hi; kk += 2) {
                    if (kk + 1 < hi) {
                        for (size_t r = 0; r < rows; r++) x[r] = a[(i + r) * k + kk + 1];
                        ml_bf16_add_products(acc, b + (kk + 1) * n + j, x, rows, cols);
                    }
                    for (size_t r = 0; r < rows; r++) x[r] = a[(i + r) * k + kk];
                    ml_bf16_add_products(acc, b + kk * n + j, x, rows, cols);
                }
                if (lo > 0)
                    for (size_t q = 0; q < ML_BF16_ROWS * ML_BF16_COLS; q++) sums[q] += part[q];
            }
            for (size_t r = 0; r < rows; r++)
                for (size_t jj = 0; jj < cols; jj++) c[(i + r) * n + j + jj] = sums[r * ML_BF16_COLS + jj];
        }
    }
}
#if defined(__x86_64__) && defined(__GNUC__)  /* called only on AVX512-BF16 CPUs */
#include <immintrin.h>
#define ML_BF16_TILES 1
#define ML_BF16_STEP(kk)                                                                        \
    do {                                                                                        \
        __m512 b0 = _mm512_loadu_ps(b + (kk) * n + j), b1 = _mm512_loadu_ps(b + (kk) * n + j + 16); \
        for (int r = 0; r < 4; r++) {                                                           \
            __m512 x = _mm512_set1_ps(a[(i + r) * k + (kk)]);                                   \
            acc[r][0] = _mm512_add_ps(acc[r][0], _mm512_mul_ps(x, b0));                         \
            acc[r][1] = _mm512_add_ps(acc[r][1], _mm512_mul_ps(x, b1));                         \
        }                                                                                       \
    } while (0)
__attribute__((target("avx512f"))) static void ml_bf16_pairs_tiles(const float *restrict a, const float *restrict b,
                                                                    float *restrict c, size_t m4, size_t n32, size_t k,
                                                                    size_t n, size_t block) {
    for (size_t i = 0; i < m4; i += 4)
        for (size_t j = 0; j < n32; j += 32) {
            __m512 total[4][2], acc[4][2];
            for (size_t lo = 0; lo < k; lo += block) {
                size_t hi = lo + block < k ? lo + block : k;
                for (int r = 0; r < 4; r++) acc[r][0] = acc[r][1] = _mm512_setzero_ps();
                for (size_t kk = lo; kk < hi; kk += 2) {
                    if (kk + 1 < hi) ML_BF16_STEP(kk + 1);
                    ML_BF16_STEP(kk);
                }
                for (int r = 0; r < 4; r++)
                    for (int h = 0; h < 2; h++) total[r][h] = lo == 0 ? acc[r][h] : _mm512_add_ps(total[r][h], acc[r][h]);
            }
            for (int r = 0; r < 4; r++) {
                _mm512_storeu_ps(c + (i + r) * n + j, total[r][0]);
                _mm512_storeu_ps(c + (i + r) * n + j + 16, total[r][1]);
            }
        }
}
#else
#define ML_BF16_TILES 0
#endif
void ml_bf16_pair_products(const float *restrict a, const float *restrict b, float *restrict c, float *restrict part,
                           size_t m, size_t k, size_t n, size_t block) {
    size_t m4 = 0, n32 = 0;
#if ML_BF16_TILES
    m4 = m - m % 4, n32 = n - n % 32;
    ml_bf16_pairs_tiles(a, b, c, m4, n32, k, n, block);
#endif
    ml_bf16_pairs_region(a, b, c, part, 0, m4, n32, n, k, n, block);  /* the columns right of the tiles */
    ml_bf16_pairs_region(a, b, c, part, m4, m, 0, n, k, n, block);    /* the rows below them */
}

/* 16-bit products in the orders of torch's oneDNN kernels on an Intel CPU (Sapphire Rapids class): a [m, k] and
   b [k, n] hold 16-bit values as floats, c [m, n] gets each float32 sum; `part` is n floats of scratch. The inner
   loops run over a row of b, so GCC vectorizes them; the additions are the models' own, in their order.
   ml_sequential_products (half_products.onednn_blocks, float16 on AVX512-FP16): k after k from zero in blocks of
   `block`, the blocks' sums added in order.
   ml_amx_tile_products (bf16_products' AMX order): per tile of k (32, or bf16_products.tile_k's) the even k and the odd k in two chains from zero, their
   sum added to the running one; every sum below 2^-126 a zero of its sign (the tile unit's flush; the caller
   flushes subnormal inputs). `part` holds 2 n floats there. */
static inline float ml_flush(float x) { return fabsf(x) < FLT_MIN ? x * 0.0f : x; }

void ml_sequential_products(const float *restrict a, const float *restrict b, float *restrict c, float *restrict part,
                            size_t m, size_t k, size_t n, size_t block) {
    for (size_t i = 0; i < m; i++) {
        float *restrict row = c + i * n;
        for (size_t lo = 0; lo < k; lo += block) {
            size_t hi = lo + block < k ? lo + block : k;
            float *restrict acc = lo == 0 ? row : part;
            for (size_t j = 0; j < n; j++) acc[j] = 0.0f;
            for (size_t kk = lo; kk < hi; kk++) {
                const float x = a[i * k + kk];
                const float *restrict brow = b + kk * n;
                for (size_t j = 0; j < n; j++) acc[j] += x * brow[j];
            }
            if (lo > 0)
                for (size_t j = 0; j < n; j++) row[j] += part[j];
        }
    }
}

void ml_amx_tile_products(const float *restrict a, const float *restrict b, float *restrict c, float *restrict part,
                          size_t m, size_t k, size_t n, size_t tile) {
    float *restrict even = part, *restrict odd = part + n;
    for (size_t i = 0; i < m; i++) {
        float *restrict row = c + i * n;
        for (size_t j = 0; j < n; j++) row[j] = 0.0f;
        for (size_t lo = 0; lo < k; lo += tile) {  /* (tile: bf16_products.tile_k, an even k per tile) */
            size_t hi = lo + tile < k ? lo + tile : k;
            for (size_t j = 0; j < n; j++) even[j] = odd[j] = 0.0f;
            for (size_t kk = lo; kk < hi; kk++) {
                const float x = a[i * k + kk];
                const float *restrict brow = b + kk * n;
                float *restrict chain = kk % 2 ? odd : even;
                for (size_t j = 0; j < n; j++) chain[j] = ml_flush(chain[j] + x * brow[j]);
            }
            for (size_t j = 0; j < n; j++) row[j] = ml_flush(row[j] + ml_flush(even[j] + odd[j]));
        }
    }
}

/* ---- a row's max (softmax's shift), which NumPy's max(axis=-1) finds at ~0.5 ns an element on rows of 128:
 * here two 8-lane running maxima a row, in GCC's vector extension (clang's too), so that it compiles to vector
 * compares and selects on any target. A NaN never wins `v > top`: the row's NaNs are only noted, and the
 * function returns 1 where some row held one, or where a row's max is a zero (which of -0 and +0 is NumPy's
 * depends on its lanes), for the caller to take NumPy's max instead: the same bits either way. */
typedef float ml_vfloat __attribute__((vector_size(32)));
typedef int32_t ml_vmask __attribute__((vector_size(32)));
#define ML_MAX_LANES 8

static inline ml_vfloat ml_larger(ml_vfloat v, ml_vfloat top) {  /* v > top ? v : top, lane by lane */
    ml_vmask greater = v > top;
    return (ml_vfloat)(((ml_vmask)v & greater) | ((ml_vmask)top & ~greater));
}

int ml_row_max(const float *restrict x, float *restrict out, size_t rows, size_t width) {
    int numpy_decides = 0;  /* a NaN or a zero max seen */
    for (size_t r = 0; r < rows; r++, x += width) {
        ml_vfloat top0, top1, v0, v1;
        ml_vmask nan = {0};
        size_t i = 0;
        for (int j = 0; j < ML_MAX_LANES; j++) top0[j] = top1[j] = -INFINITY;
        for (; i + 2 * ML_MAX_LANES <= width; i += 2 * ML_MAX_LANES) {
            memcpy(&v0, x + i, sizeof v0);  /* (unaligned loads) */
            memcpy(&v1, x + i + ML_MAX_LANES, sizeof v1);
            top0 = ml_larger(v0, top0);
            top1 = ml_larger(v1, top1);
            nan |= (v0 != v0) | (v1 != v1);
        }
        top0 = ml_larger(top1, top0);
        float top = -INFINITY;
        for (; i < width; i++) {  /* the row's last width % 16 */
            top = x[i] > top ? x[i] : top;
            numpy_decides |= x[i] != x[i];
        }
        for (int j = 0; j < ML_MAX_LANES; j++) {
            top = top0[j] > top ? top0[j] : top;
            numpy_decides |= nan[j] != 0;
        }
        out[r] = top;
        numpy_decides |= top == 0;
    }
    return numpy_decides;
}

/* ---- RoPE's forward, x * cos + rotate_half(x) * sin, and its backward, g * cos + R^T (g * sin) with
 * R^T [t1, t2] = [t2, -t1], each in one pass (ops/nn.py's Rotary computes them in NumPy passes: the products, the
 * half negated, the halves concatenated, the sum). Each element is rounded as there: both products rounded, then
 * their sum (no fused multiply-add: -ffp-contract=off), and the negated half is the negated element times sin, as
 * NumPy multiplies the concatenated -x2 by sin (the backward's -(g * sin) has those bits too, a NaN gradient's sign
 * included, where GCC turns "a + -(b * c)" into "a - b * c", whose NaN keeps its sign). The arrays are [outer, d]
 * with d contiguous: row k of each starts at its own step times k (cos and sin broadcast along the batch and heads
 * with step 0 there), so a transposed [B, H, T, D] view of [B, T, H, D] memory needs no copy. The rows are
 * (b, h, t) with their sizes and each array's steps (in floats) in sizes[3], steps[4][3]. */
static inline void ml_rotate_row(const float *restrict x, const float *restrict c, const float *restrict s,
                                 float *restrict o, size_t d, int backward) {
    size_t half = d / 2;
    if (!backward) {
        for (size_t e = 0; e < half; e++) o[e] = x[e] * c[e] + (-x[e + half]) * s[e];
        for (size_t e = half; e < d; e++) o[e] = x[e] * c[e] + x[e - half] * s[e];
    } else {
        for (size_t e = 0; e < half; e++) o[e] = x[e] * c[e] + x[e + half] * s[e + half];
        for (size_t e = half; e < d; e++) o[e] = x[e] * c[e] + (-x[e - half]) * s[e - half];
    }
}

static inline void ml_rotate_rows(const float *x, const float *c, const float *s, float *out, const size_t *sizes,
                                  const ptrdiff_t *steps, size_t d, int backward) {
    for (ptrdiff_t i = 0; i < (ptrdiff_t)sizes[0]; i++)
        for (ptrdiff_t j = 0; j < (ptrdiff_t)sizes[1]; j++)
            for (ptrdiff_t k = 0; k < (ptrdiff_t)sizes[2]; k++)
                ml_rotate_row(x + i * steps[0] + j * steps[1] + k * steps[2], c + i * steps[3] + j * steps[4] + k * steps[5],
                              s + i * steps[6] + j * steps[7] + k * steps[8],
                              out + i * steps[9] + j * steps[10] + k * steps[11], d, backward);
}

void ml_rotary(const float *x, const float *c, const float *s, float *out, const size_t *sizes,
               const ptrdiff_t *steps, size_t d) {
    ml_rotate_rows(x, c, s, out, sizes, steps, d, 0);
}

void ml_rotary_backward(const float *g, const float *c, const float *s, float *out, const size_t *sizes,
                        const ptrdiff_t *steps, size_t d) {
    ml_rotate_rows(g, c, s, out, sizes, steps, d, 1);
}

/* ---- float16 products as ATen's fp16_dot_with_fp32_arith adds them (half_products.py's dot_products, the same
 * order): c[i][j] = the dot product of rows a[i] and b[j] (float32 copies of float16 values: each product exact).
 * 8 registers of 8 lanes take k in blocks of 64, folded register r + r^4, ^2, ^1, then lane l + l^4, ^2, ^1; whole
 * 16-element pieces into one more 8-lane register, folded so; the last k % 16 products one by one. */
static float ml_fold_lanes(const float *lanes) {
    float x[8], y[4];
    for (int l = 0; l < 8; l++) x[l] = lanes[l] + lanes[l ^ 4];
    for (int l = 0; l < 4; l++) y[l] = x[l] + x[l ^ 2];
    return y[0] + y[1];
}

void ml_half_dot_products(const float *restrict a, const float *restrict b, float *restrict c,
                          size_t m, size_t k, size_t n) {
    size_t whole = k - k % 64, pieces = k - k % 16;
    for (size_t i = 0; i < m; i++) {
        const float *row = a + i * k;
        for (size_t j = 0; j < n; j++) {
            const float *col = b + j * k;
            float regs[64] = {0}, piece[8] = {0};
            for (size_t s = 0; s < whole; s += 64)
                for (int t = 0; t < 64; t++) regs[t] += row[s + t] * col[s + t];
            for (int half = 4; half >= 1; half /= 2)
                for (int r = 0; r < half; r++)
                    for (int l = 0; l < 8; l++) regs[8 * r + l] = regs[8 * r + l] + regs[8 * (r + half) + l];
            float total = ml_fold_lanes(regs);
            for (size_t s = whole; s < pieces; s += 8)
                for (int l = 0; l < 8; l++) piece[l] += row[s + l] * col[s + l];
            total = total + ml_fold_lanes(piece);
            for (size_t s = pieces; s < k; s++) total = total + row[s] * col[s];
            c[i * n + j] = total;
        }
    }
}

/* ---- MKL's float32 order for x @ a^T with a few outputs a row (mkl_half_gemm.py's lanes_of_4): 4 lanes take
 * k = 4 j + l, each from zero; folded (l0 + l2) + (l1 + l3); the last k % 4 products one by one. */
void ml_lanes4_products(const float *restrict a, const float *restrict b, float *restrict c,
                        size_t m, size_t k, size_t n) {
    size_t whole = k - k % 4;
    for (size_t i = 0; i < m; i++) {
        const float *row = a + i * k;
        for (size_t j = 0; j < n; j++) {
            const float *col = b + j * k;
            float lanes[4] = {0};
            for (size_t s = 0; s < whole; s += 4)
                for (int l = 0; l < 4; l++) lanes[l] += row[s + l] * col[s + l];
            float total = (lanes[0] + lanes[2]) + (lanes[1] + lanes[3]);
            for (size_t s = whole; s < k; s++) total = total + row[s] * col[s];
            c[i * n + j] = total;
        }
    }
}

/* ---- one query row's weighted values in MKL's order (mkl_half_gemm.py's one_query_values): dst[c] += the sum over
 * the block's keys j of w[j] * v[j][c], from dst[c]. quads != 0 (bfloat16): each 4 keys (p0 + p2) + (p1 + p3), in
 * order, then the last keys % 4 from the last one back; else (float16) key after key, but the first `unaligned`
 * outputs each 8 keys as 4 added in order then 4 summed apart and added, the last keys % 8 in order. */
void ml_one_row_values(const float *restrict w, const float *restrict v, float *restrict dst,
                       size_t keys, size_t d, int quads, size_t unaligned) {
    size_t whole = keys - keys % (quads ? 4 : 8);
    if (quads) {
        for (size_t s = 0; s < whole; s += 4) {
            const float *v0 = v + s * d, *v1 = v0 + d, *v2 = v1 + d, *v3 = v2 + d;
            for (size_t c = 0; c < d; c++)
                dst[c] += (w[s] * v0[c] + w[s + 2] * v2[c]) + (w[s + 1] * v1[c] + w[s + 3] * v3[c]);
        }
        for (size_t j = keys; j-- > whole;)
            for (size_t c = 0; c < d; c++) dst[c] += w[j] * v[j * d + c];
        return;
    }
    size_t peeled = unaligned < d ? unaligned : d;
    for (size_t c = 0; c < peeled; c++) {
        float total = dst[c];
        for (size_t s = 0; s < whole; s += 8) {
            float apart = 0;
            for (size_t j = s; j < s + 4; j++) total += w[j] * v[j * d + c];
            for (size_t j = s + 4; j < s + 8; j++) apart += w[j] * v[j * d + c];
            total += apart;
        }
        for (size_t j = whole; j < keys; j++) total += w[j] * v[j * d + c];
        dst[c] = total;
    }
    for (size_t j = 0; j < keys; j++)
        for (size_t c = peeled; c < d; c++) dst[c] += w[j] * v[j * d + c];
}

/* ---- the kernels above on a block, for minilora/gemm_pool.py's C threads -----------------------------------
 * gemm_pool.c calls a row kernel as f(args, first, last) on each thread's block (gemm_pool.RowKernel). For an
 * elementwise kernel, kernel##_blocks runs it on elements [first, last) of each flat float32 array in
 * block_args (its inputs, then its outputs, as the kernel takes them; NULL stays NULL): each element gets the
 * same bits wherever a block starts. RoPE's blocks are rows of its first axis (the batch). */
typedef struct {
    float *arrays[6];
    const size_t *sizes;     /* (RoPE: the sizes and steps of ml_rotary, and d) */
    const ptrdiff_t *steps;
    size_t d;
} block_args;

static inline float *from(float *array, int64_t first) { return array ? array + first : 0; }

#define BLOCK_OF(args, first, last) \
    float *const *a = ((const block_args *)(args))->arrays; size_t n = (size_t)((last) - (first))
#define ON_BLOCKS_2(kernel) void kernel##_blocks(const void *args, int64_t first, int64_t last) { \
    BLOCK_OF(args, first, last); kernel(from(a[0], first), from(a[1], first), n); }
#define ON_BLOCKS_3(kernel) void kernel##_blocks(const void *args, int64_t first, int64_t last) { \
    BLOCK_OF(args, first, last); kernel(from(a[0], first), from(a[1], first), from(a[2], first), n); }
#define ON_BLOCKS_4(kernel) void kernel##_blocks(const void *args, int64_t first, int64_t last) { \
    BLOCK_OF(args, first, last); kernel(from(a[0], first), from(a[1], first), from(a[2], first), from(a[3], first), n); }
#define ON_BLOCKS_6(kernel) void kernel##_blocks(const void *args, int64_t first, int64_t last) { \
    BLOCK_OF(args, first, last); kernel(from(a[0], first), from(a[1], first), from(a[2], first), from(a[3], first), \
                                        from(a[4], first), from(a[5], first), n); }

ON_BLOCKS_2(ml_sinh) ON_BLOCKS_2(ml_cosh) ON_BLOCKS_2(ml_atanh) ON_BLOCKS_2(ml_log) ON_BLOCKS_2(ml_exp)
ON_BLOCKS_2(ml_exp_of_negative) ON_BLOCKS_2(ml_expm1) ON_BLOCKS_2(ml_tanh) ON_BLOCKS_2(ml_log1p)
ON_BLOCKS_2(ml_sigmoid) ON_BLOCKS_2(ml_gelu_erf_onednn_derivative) ON_BLOCKS_2(ml_lgamma)
ON_BLOCKS_3(ml_pow) ON_BLOCKS_3(ml_atan2) ON_BLOCKS_3(ml_silu) ON_BLOCKS_3(ml_mish)
ON_BLOCKS_4(ml_swiglu) ON_BLOCKS_4(ml_silu_backward) ON_BLOCKS_4(ml_mish_backward)
ON_BLOCKS_6(ml_swiglu_backward)

static void rotary_block(const void *args, int64_t first, int64_t last, int backward) {
    const block_args *b = args;
    const ptrdiff_t *steps = b->steps;
    size_t sizes[3] = {(size_t)(last - first), b->sizes[1], b->sizes[2]};
    ml_rotate_rows(b->arrays[0] + first * steps[0], b->arrays[1] + first * steps[3], b->arrays[2] + first * steps[6],
                   b->arrays[3] + first * steps[9], sizes, steps, b->d, backward);
}
void ml_rotary_blocks(const void *args, int64_t first, int64_t last) { rotary_block(args, first, last, 0); }
void ml_rotary_backward_blocks(const void *args, int64_t first, int64_t last) { rotary_block(args, first, last, 1); }

/* ---- MKL's dot product on an Intel AVX-512 CPU (mkl_dot.py's dot_in_mkl_order, the same order): vectors of L
 * lanes (16 floats, 8 doubles) fused-multiply-added into 4 accumulators in turn, vector v into v % 4; the last
 * (vectors % 4) full vectors into accumulators 0, 1, 0; the last n % L products into accumulator 0's first lanes.
 * Then (a0 + a1) + (a2 + a3), and its lanes folded: l + l^4, ^2, ^1 (doubles), l + l^8, ^4, ^1, ^2 (floats). */
#define ML_MKL_DOT(NAME, T, L, FMA, ...)                                                                      \
void NAME(const T *restrict x, const T *restrict y, T *restrict out, size_t n) {                             \
    static const int folds[] = {__VA_ARGS__};                                                                 \
    T acc[4][L] = {{0}}, lanes[L], folded[L];                                                                 \
    size_t vectors = n / L, main = vectors - vectors % 4;                                                     \
    for (size_t v = 0; v < vectors; v++) {                                                                    \
        T *a = acc[v < main ? v % 4 : (v - main) % 2];                                                        \
        for (int l = 0; l < L; l++) a[l] = FMA(x[v * L + l], y[v * L + l], a[l]);                             \
    }                                                                                                         \
    for (size_t i = vectors * L; i < n; i++) acc[0][i - vectors * L] = FMA(x[i], y[i], acc[0][i - vectors * L]); \
    for (int l = 0; l < L; l++) lanes[l] = (acc[0][l] + acc[1][l]) + (acc[2][l] + acc[3][l]);                 \
    for (size_t f = 0; f < sizeof folds / sizeof folds[0]; f++) {                                             \
        for (int l = 0; l < L; l++) folded[l] = lanes[l] + lanes[l ^ folds[f]];                               \
        memcpy(lanes, folded, sizeof lanes);                                                                  \
    }                                                                                                         \
    *out = lanes[0];                                                                                          \
}
ML_MKL_DOT(ml_mkl_sdot, float, 16, fmaf, 8, 4, 1, 2)
ML_MKL_DOT(ml_mkl_ddot, double, 8, fma, 4, 2, 1)

/* ---- MKL's float64 matrix-vector product, a C-contiguous matrix (mkl_dot.py's rows_times_vector_in_mkl_order,
 * the same order): each row's dot product in 2 accumulators of 8 fused lanes (vector v into v % 2), the two added,
 * then the odd last whole vector and the last k % 8 products (a masked vector) fused in; lanes folded l + l^2, ^1,
 * ^4. */
void ml_mkl_dgemv_rows(const double *restrict a, const double *restrict x, double *restrict out, size_t rows,
                       size_t k) {
    static const int folds[] = {2, 1, 4};
    size_t vectors = k / 8, pairs = vectors - vectors % 2;
    for (size_t r = 0; r < rows; r++) {
        const double *row = a + r * k;
        double acc[2][8] = {{0}}, lanes[8], folded[8];
        for (size_t v = 0; v < pairs; v++)
            for (int l = 0; l < 8; l++) acc[v % 2][l] = fma(row[v * 8 + l], x[v * 8 + l], acc[v % 2][l]);
        for (int l = 0; l < 8; l++) lanes[l] = acc[0][l] + acc[1][l];
        for (size_t i = pairs * 8; i < k; i++) lanes[i % 8] = fma(row[i], x[i], lanes[i % 8]);
        for (int f = 0; f < 3; f++) {
            for (int l = 0; l < 8; l++) folded[l] = lanes[l] + lanes[l ^ folds[f]];
            memcpy(lanes, folded, sizeof lanes);
        }
        out[r] = lanes[0];
    }
}

/* ---- MKL's float32 matrix-vector product, a C-contiguous matrix (mkl_dot.py's sgemv_row_in_mkl_order, the same
 * order): the first product apart, the rest from element 1 in vectors of 16 fused lanes, lanes folded l + l^8, ^4,
 * ^2, ^1. Rows in groups of 4 (grouped != 0): the first product starts lane 0, one accumulator, folded, and the last
 * (k - 1) % 16 products fused into a vector whose lane 0 holds that sum, folded again. The rows after the last group:
 * `accumulators` (1 or 2, vector v into v % 2, added before the odd last vector) and the masked tail, folded, then
 * the first product (rounded) added. */
static float ml_fold16(float *lanes) {
    static const int folds[] = {8, 4, 2, 1};
    float folded[16];
    for (int f = 0; f < 4; f++) {
        for (int l = 0; l < 16; l++) folded[l] = lanes[l] + lanes[l ^ folds[f]];
        memcpy(lanes, folded, sizeof folded);
    }
    return lanes[0];
}

static float ml_sgemv_row(const float *restrict row, const float *restrict x, size_t k, int accumulators,
                          int grouped) {
    float acc[2][16] = {{0}}, lanes[16];
    if (grouped) acc[0][0] = row[0] * x[0];
    size_t vectors = (k - 1) / 16, whole = vectors - vectors % accumulators, tail = 1 + 16 * vectors;
    for (size_t v = 0; v < whole; v++)
        for (int l = 0; l < 16; l++) {
            size_t i = 1 + 16 * v + l;
            acc[v % accumulators][l] = fmaf(row[i], x[i], acc[v % accumulators][l]);
        }
    for (int l = 0; l < 16; l++) lanes[l] = accumulators == 2 ? acc[0][l] + acc[1][l] : acc[0][l];
    for (size_t i = 1 + 16 * whole; i < tail; i++) lanes[(i - 1) % 16] = fmaf(row[i], x[i], lanes[(i - 1) % 16]);
    if (!grouped) {
        for (size_t i = tail; i < k; i++) lanes[i - tail] = fmaf(row[i], x[i], lanes[i - tail]);
        return ml_fold16(lanes) + row[0] * x[0];
    }
    float total = ml_fold16(lanes);
    if (tail >= k) return total;
    memset(lanes, 0, sizeof lanes);
    lanes[0] = total;
    for (size_t i = tail; i < k; i++) lanes[i - tail] = fmaf(row[i], x[i], lanes[i - tail]);
    return ml_fold16(lanes);
}

void ml_mkl_sgemv_rows(const float *restrict a, const float *restrict x, float *restrict out, size_t rows, size_t k) {
    size_t grouped = rows - rows % 4;
    for (size_t r = 0; r < rows; r++)
        out[r] = ml_sgemv_row(a + r * k, x, k, r >= grouped && r - grouped == 1 ? 1 : 2 - (r < grouped), r < grouped);
}
