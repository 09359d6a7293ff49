// Stand-in for CUDA's <cuComplex.h> under minilora's CPU emulator: single and double complex numbers
// as float2 / double2 (real part in .x), with CUDA's function names.  A kernel taking
// cuFloatComplex* accepts a NumPy complex64 array (complex128 for cuDoubleComplex*).
#pragma once
#include "../cuda_emu.h"

typedef float2 cuFloatComplex;
typedef double2 cuDoubleComplex;
typedef cuFloatComplex cuComplex;

#define __EMU_COMPLEX(C, T, SUFFIX, SQRT)                                                               \
    inline T cuCreal##SUFFIX(C z) { return z.x; }                                                       \
    inline T cuCimag##SUFFIX(C z) { return z.y; }                                                       \
    inline C cuConj##SUFFIX(C z) { return C{z.x, -z.y}; }                                               \
    inline C cuCadd##SUFFIX(C a, C b) { return C{a.x + b.x, a.y + b.y}; }                               \
    inline C cuCsub##SUFFIX(C a, C b) { return C{a.x - b.x, a.y - b.y}; }                               \
    inline C cuCmul##SUFFIX(C a, C b) { return C{a.x * b.x - a.y * b.y, a.x * b.y + a.y * b.x}; }       \
    /* Division and modulus scaled as CUDA's own, so that large or small parts do not overflow. */      \
    inline C cuCdiv##SUFFIX(C a, C b) {                                                                 \
        const T s = (T)fabs(b.x) + (T)fabs(b.y), inv = (T)1 / s;                                        \
        const T ar = a.x * inv, ai = a.y * inv, br = b.x * inv, bi = b.y * inv;                         \
        const T d = (T)1 / (br * br + bi * bi);                                                         \
        return C{(ar * br + ai * bi) * d, (ai * br - ar * bi) * d};                                     \
    }                                                                                                   \
    inline T cuCabs##SUFFIX(C z) {                                                                      \
        T a = (T)fabs(z.x), b = (T)fabs(z.y);                                                           \
        const T v = a > b ? a : b, w = a > b ? b : a;                                                   \
        if (v == (T)0 || v > (T)(sizeof(T) == 4 ? FLT_MAX : DBL_MAX) || w > (T)(sizeof(T) == 4 ? FLT_MAX : DBL_MAX))        \
            return v + w;                                                                               \
        const T q = w / v;                                                                              \
        return v * SQRT((T)1 + q * q);                                                                  \
    }                                                                                                   \
    inline C cuCfma##SUFFIX(C a, C b, C c) {                                                            \
        return C{a.x * b.x + c.x - a.y * b.y, a.x * b.y + c.y + a.y * b.x};                             \
    }
__EMU_COMPLEX(cuFloatComplex, float, f, sqrtf)
__EMU_COMPLEX(cuDoubleComplex, double, , sqrt)
#undef __EMU_COMPLEX

inline cuFloatComplex make_cuFloatComplex(float r, float i) { return cuFloatComplex{r, i}; }
inline cuDoubleComplex make_cuDoubleComplex(double r, double i) { return cuDoubleComplex{r, i}; }
inline cuComplex make_cuComplex(float r, float i) { return cuComplex{r, i}; }
inline cuDoubleComplex cuComplexFloatToDouble(cuFloatComplex z) { return cuDoubleComplex{z.x, z.y}; }
inline cuFloatComplex cuComplexDoubleToFloat(cuDoubleComplex z) { return cuFloatComplex{(float)z.x, (float)z.y}; }
