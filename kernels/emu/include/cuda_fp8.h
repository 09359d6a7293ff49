// Stand-in for CUDA's <cuda_fp8.h> under minilora's CPU emulator: the FP8 formats of sm_89/sm_90,
// E4M3 (bias 7, no infinities, NaN = S.1111.111, largest 448) and E5M2 (bias 15, IEEE-like with
// infinities, largest 57344), their storage types, the __nv_cvt_* conversions with CUDA's saturation
// modes, and the __nv_fp8{,x2,x4}_e4m3 / _e5m2 classes.  Conversions round to nearest, ties to even,
// from the exact value (a double): __NV_SATFINITE clamps what overflows (infinities too) to the largest
// finite value, __NV_NOSAT makes it NaN (E4M3) or infinity (E5M2); NaN stays NaN (0x7F, 0xFF signed).
// The class constructors saturate, as CUDA's do.  Arrays of them are uint8 (or ml_dtypes' float8_*) to NumPy.
#pragma once
#include "../cuda_emu.h"

typedef unsigned char __nv_fp8_storage_t;
typedef unsigned short __nv_fp8x2_storage_t;
typedef unsigned int __nv_fp8x4_storage_t;
typedef enum __nv_saturation_t { __NV_NOSAT, __NV_SATFINITE } __nv_saturation_t;
typedef enum __nv_fp8_interpretation_t { __NV_E4M3, __NV_E5M2 } __nv_fp8_interpretation_t;

// (the rounding itself lives in minilora_ptx.h: inline PTX's cvt ... .e4m3x2 uses it too)
namespace __emu {
namespace fp8 {
inline double decode_as(unsigned code, __nv_fp8_interpretation_t kind) { return decode((unsigned char)code, kind == __NV_E4M3); }
inline unsigned char encode_as(double v, __nv_saturation_t sat, __nv_fp8_interpretation_t kind) {
    return encode(v, sat == __NV_SATFINITE, kind == __NV_E4M3);
}
}  // namespace fp8
}  // namespace __emu

inline __nv_fp8_storage_t __nv_cvt_double_to_fp8(double x, __nv_saturation_t sat, __nv_fp8_interpretation_t kind) {
    return __emu::fp8::encode_as(x, sat, kind);
}
inline __nv_fp8_storage_t __nv_cvt_float_to_fp8(float x, __nv_saturation_t sat, __nv_fp8_interpretation_t kind) {
    return __emu::fp8::encode_as(x, sat, kind);
}
inline __nv_fp8_storage_t __nv_cvt_halfraw_to_fp8(__half_raw x, __nv_saturation_t sat, __nv_fp8_interpretation_t kind) {
    return __emu::fp8::encode_as(float(__half(x)), sat, kind);
}
inline __nv_fp8_storage_t __nv_cvt_bfloat16raw_to_fp8(__nv_bfloat16_raw x, __nv_saturation_t sat,
                                                      __nv_fp8_interpretation_t kind) {
    return __emu::fp8::encode_as(float(__nv_bfloat16(x)), sat, kind);
}
// Pairs: the first (x) value in the low byte.
inline __nv_fp8x2_storage_t __nv_cvt_float2_to_fp8x2(float2 x, __nv_saturation_t sat, __nv_fp8_interpretation_t kind) {
    return (__nv_fp8x2_storage_t)(__nv_cvt_float_to_fp8(x.x, sat, kind) | (__nv_cvt_float_to_fp8(x.y, sat, kind) << 8));
}
inline __nv_fp8x2_storage_t __nv_cvt_double2_to_fp8x2(double2 x, __nv_saturation_t sat, __nv_fp8_interpretation_t kind) {
    return (__nv_fp8x2_storage_t)(__nv_cvt_double_to_fp8(x.x, sat, kind) | (__nv_cvt_double_to_fp8(x.y, sat, kind) << 8));
}
inline __nv_fp8x2_storage_t __nv_cvt_halfraw2_to_fp8x2(__half2_raw x, __nv_saturation_t sat, __nv_fp8_interpretation_t kind) {
    return (__nv_fp8x2_storage_t)(__nv_cvt_halfraw_to_fp8(__half_raw{x.x}, sat, kind) |
                                  (__nv_cvt_halfraw_to_fp8(__half_raw{x.y}, sat, kind) << 8));
}
inline __nv_fp8x2_storage_t __nv_cvt_bfloat16raw2_to_fp8x2(__nv_bfloat162_raw x, __nv_saturation_t sat,
                                                           __nv_fp8_interpretation_t kind) {
    return (__nv_fp8x2_storage_t)(__nv_cvt_bfloat16raw_to_fp8(__nv_bfloat16_raw{x.x}, sat, kind) |
                                  (__nv_cvt_bfloat16raw_to_fp8(__nv_bfloat16_raw{x.y}, sat, kind) << 8));
}
// fp8 -> half is exact (every fp8 value is a half).
inline __half_raw __nv_cvt_fp8_to_halfraw(__nv_fp8_storage_t x, __nv_fp8_interpretation_t kind) {
    return __half_raw(__half((float)__emu::fp8::decode_as(x, kind)));
}
inline __half2_raw __nv_cvt_fp8x2_to_halfraw2(__nv_fp8x2_storage_t x, __nv_fp8_interpretation_t kind) {
    return __half2_raw{__nv_cvt_fp8_to_halfraw((__nv_fp8_storage_t)(x & 0xFF), kind).x,
                       __nv_cvt_fp8_to_halfraw((__nv_fp8_storage_t)(x >> 8), kind).x};
}

#define __EMU_FP8_TYPES(NAME, KIND)                                                                       \
    struct __attribute__((aligned(1))) __nv_fp8_##NAME {                                                 \
        __nv_fp8_storage_t __x;                                                                          \
        __nv_fp8_##NAME() = default;                                                                     \
        explicit __nv_fp8_##NAME(double f) : __x(__nv_cvt_double_to_fp8(f, __NV_SATFINITE, KIND)) {}    \
        explicit __nv_fp8_##NAME(float f) : __x(__nv_cvt_float_to_fp8(f, __NV_SATFINITE, KIND)) {}      \
        explicit __nv_fp8_##NAME(__half f) : __x(__nv_cvt_float_to_fp8(float(f), __NV_SATFINITE, KIND)) {} \
        explicit __nv_fp8_##NAME(__nv_bfloat16 f)                                                        \
            : __x(__nv_cvt_float_to_fp8(float(f), __NV_SATFINITE, KIND)) {}                              \
        explicit __nv_fp8_##NAME(int i) : __x(__nv_cvt_double_to_fp8((double)i, __NV_SATFINITE, KIND)) {} \
        explicit operator float() const { return (float)__emu::fp8::decode_as(__x, KIND); }               \
        explicit operator double() const { return __emu::fp8::decode_as(__x, KIND); }                     \
        explicit operator __half() const { return __half(__nv_cvt_fp8_to_halfraw(__x, KIND)); }        \
        explicit operator __nv_bfloat16() const { return __nv_bfloat16((float)__emu::fp8::decode_as(__x, KIND)); } \
        explicit operator bool() const { return (__x & 0x7F) != 0; }                                     \
    };                                                                                                   \
    struct __attribute__((aligned(2))) __nv_fp8x2_##NAME {                                               \
        __nv_fp8x2_storage_t __x;                                                                        \
        __nv_fp8x2_##NAME() = default;                                                                   \
        explicit __nv_fp8x2_##NAME(float2 f) : __x(__nv_cvt_float2_to_fp8x2(f, __NV_SATFINITE, KIND)) {} \
        explicit __nv_fp8x2_##NAME(double2 f) : __x(__nv_cvt_double2_to_fp8x2(f, __NV_SATFINITE, KIND)) {} \
        explicit __nv_fp8x2_##NAME(__half2 f)                                                            \
            : __x(__nv_cvt_float2_to_fp8x2(float2{float(f.x), float(f.y)}, __NV_SATFINITE, KIND)) {}     \
        explicit operator float2() const {                                                               \
            return float2{(float)__emu::fp8::decode_as(__x & 0xFF, KIND), (float)__emu::fp8::decode_as(__x >> 8, KIND)}; \
        }                                                                                                \
        explicit operator __half2() const { return __half2(__nv_cvt_fp8x2_to_halfraw2(__x, KIND)); }   \
    };                                                                                                   \
    struct __attribute__((aligned(4))) __nv_fp8x4_##NAME {                                               \
        __nv_fp8x4_storage_t __x;                                                                        \
        __nv_fp8x4_##NAME() = default;                                                                   \
        explicit __nv_fp8x4_##NAME(float4 f)                                                             \
            : __x(__nv_cvt_float2_to_fp8x2(float2{f.x, f.y}, __NV_SATFINITE, KIND) |                     \
                  ((__nv_fp8x4_storage_t)__nv_cvt_float2_to_fp8x2(float2{f.z, f.w}, __NV_SATFINITE, KIND) << 16)) {} \
        explicit operator float4() const {                                                               \
            return float4{(float)__emu::fp8::decode_as(__x & 0xFF, KIND), (float)__emu::fp8::decode_as((__x >> 8) & 0xFF, KIND), \
                          (float)__emu::fp8::decode_as((__x >> 16) & 0xFF, KIND), (float)__emu::fp8::decode_as(__x >> 24, KIND)}; \
        }                                                                                                \
    };
__EMU_FP8_TYPES(e4m3, __NV_E4M3)
__EMU_FP8_TYPES(e5m2, __NV_E5M2)
#undef __EMU_FP8_TYPES
