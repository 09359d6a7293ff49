// What minilora/emulator_ptx.py translates inline PTX into: each asm statement becomes a C++ block over
// 64-bit "registers" holding an operand's bits, and these helpers read and write them as the instruction's
// type suffix says.  Included by cuda_emu.h; not a CUDA header.
#pragma once
#include "../cuda_emu.h"

// FP8 (E4M3: bias 7, no infinities, NaN S.1111.111, largest 448; E5M2: bias 15, IEEE-like, largest 57344),
// rounded to nearest even from the exact value; used by <cuda_fp8.h> and by inline PTX's cvt .e4m3x2/.e5m2x2.
namespace __emu {
namespace fp8 {
inline double decode(unsigned char code, bool e4m3) {
    const int mant_bits = e4m3 ? 3 : 2, bias = e4m3 ? 7 : 15;
    const int exp_mask = e4m3 ? 0xF : 0x1F;
    const bool negative = code & 0x80;
    const int e = (code >> mant_bits) & exp_mask, m = code & ((1 << mant_bits) - 1);
    double v;
    if (e4m3 && (code & 0x7F) == 0x7F) return std::nan("");
    if (!e4m3 && e == exp_mask) return m ? std::nan("") : (negative ? -INFINITY : INFINITY);
    if (e == 0) v = std::ldexp((double)m, 1 - bias - mant_bits);
    else v = std::ldexp((double)((1 << mant_bits) | m), e - bias - mant_bits);
    return negative ? -v : v;
}
inline unsigned char encode(double v, bool satfinite, bool e4m3) {
    if (v != v) return 0x7F;
    const unsigned char sign = std::signbit(v) ? 0x80 : 0;
    const double a = std::fabs(v);
    const unsigned char max_code = e4m3 ? 0x7E : 0x7B;  // 448, 57344
    const double max_value = decode(max_code, e4m3);
    if (a > max_value) {
        // beyond the largest finite value: RNE still rounds down to it when below the midpoint to the next step
        // (the tie itself goes to the even neighbour: 448's code is even, 57344's odd, so 464 -> 448, 61440 -> inf)
        const double step = e4m3 ? 32.0 : 8192.0, limit = max_value + step / 2;
        if (std::isfinite(a) && (a < limit || (a == limit && e4m3))) return sign | max_code;
        if (satfinite) return sign | max_code;
        return e4m3 ? (unsigned char)(sign | 0x7F) : (unsigned char)(sign | 0x7C);
    }
    // the two neighbours among the positive codes (monotonic in the code), ties to the even code
    unsigned char lo = 0, hi = max_code;
    while (hi - lo > 1) {
        const unsigned char mid = (unsigned char)((lo + hi) / 2);
        (decode(mid, e4m3) <= a ? lo : hi) = mid;
    }
    const double dl = a - decode(lo, e4m3), dh = decode(hi, e4m3) - a;
    const unsigned char pick = dl < dh ? lo : dh < dl ? hi : (lo % 2 == 0 ? lo : hi);
    return sign | (decode(hi, e4m3) <= a ? hi : pick);
}
}  // namespace fp8
}  // namespace __emu

namespace __emu {
namespace ptx {
// An asm operand's bits, whatever its C++ type (an int, a float, a pointer, a __half2).
template <class T>
inline uint64_t in(const T& v) {
    static_assert(sizeof(T) <= 8, "an inline PTX operand holds at most 8 bytes");
    uint64_t bits = 0;
    std::memcpy(&bits, &v, sizeof(T));
    return bits;
}
// An array operand decays to its address, as in C ("l"(smem_tile)).
template <class T, size_t N>
inline uint64_t in(const T (&array)[N]) {
    return in(static_cast<const T*>(array));
}
template <class T>
inline void out(T& dst, uint64_t bits) {
    static_assert(sizeof(T) <= 8, "an inline PTX operand holds at most 8 bytes");
    std::memcpy(&dst, &bits, sizeof(T));
}
template <class T>
inline T val(uint64_t bits) {
    T v;
    std::memcpy(&v, &bits, sizeof(T));
    return v;
}
template <class T>
inline uint64_t bits(const T& v) { return in(v); }
inline uint64_t fbits(double v) { return in(float(v)); }
inline float relu(float v) { return v < 0.0f ? 0.0f : v; }  // NaN stays NaN

inline unsigned linear_tid() { return (threadIdx.z * blockDim.y + threadIdx.y) * blockDim.x + threadIdx.x; }
inline uint64_t laneid() { return linear_tid() % 32; }
inline uint64_t warpid() { return linear_tid() / 32; }
inline uint64_t nwarpid() { return (blockDim.x * blockDim.y * blockDim.z + 31) / 32; }
inline uint64_t smid() { return 0; }   // every block on "SM 0": a valid answer, CUDA promises no more
inline uint64_t nsmid() { return 1; }
inline uint64_t lanemask(int kind) {  // eq, lt, le, gt, ge
    const unsigned lane = linear_tid() % 32, bit = 1u << lane;
    switch (kind) {
        case 0: return bit;
        case 1: return bit - 1;
        case 2: return (bit - 1) | bit;
        case 3: return ~((bit - 1) | bit) & 0xffffffffu;
        default: return ~(bit - 1) & 0xffffffffu;
    }
}

// `ordered`: ld/st .volatile, .relaxed, .acquire or .release -- an atomic access of the value's size.
template <class T>
inline T load(const char* addr, int i, bool ordered) {
    T v;
    const char* p = addr + i * sizeof(T);
    if (ordered && (sizeof(T) == 1 || sizeof(T) == 2 || sizeof(T) == 4 || sizeof(T) == 8)) {
        using U = std::conditional_t<sizeof(T) == 1, uint8_t, std::conditional_t<sizeof(T) == 2, uint16_t,
                  std::conditional_t<sizeof(T) == 4, uint32_t, uint64_t>>>;
        atomic_turn();  // ld.acquire in a loop: a spin on another thread's flag (cuda_emu.h)
        const U bits = __atomic_load_n(reinterpret_cast<const U*>(p), __ATOMIC_SEQ_CST);
        std::memcpy(&v, &bits, sizeof(T));
        return v;
    }
    std::memcpy(&v, p, sizeof(T));
    return v;
}
template <class T>
inline void store(char* addr, int i, T v, bool ordered) {
    char* p = addr + i * sizeof(T);
    if (ordered && (sizeof(T) == 1 || sizeof(T) == 2 || sizeof(T) == 4 || sizeof(T) == 8)) {
        using U = std::conditional_t<sizeof(T) == 1, uint8_t, std::conditional_t<sizeof(T) == 2, uint16_t,
                  std::conditional_t<sizeof(T) == 4, uint32_t, uint64_t>>>;
        U bits;
        std::memcpy(&bits, &v, sizeof(T));
        __atomic_store_n(reinterpret_cast<U*>(p), bits, __ATOMIC_SEQ_CST);
        return;
    }
    std::memcpy(p, &v, sizeof(T));
}

template <class H>
inline H round_to(float f, const char* mode) {
    int m = mode[1] == 'z' ? 0 : mode[1] == 'm' ? 1 : mode[1] == 'p' ? 2 : -1;
    return m < 0 ? H(f) : __emu::round_16bit<H>(f, m);
}
template <class T> struct is_16bit_float : std::false_type {};
template <> struct is_16bit_float<__half> : std::true_type {};
template <> struct is_16bit_float<__nv_bfloat16> : std::true_type {};

// A value rounded to D by the mode's direction (rz, rm, rp; rn and the rest: to nearest): the nearest D, then
// one step toward the exact value's side when that overshot.
template <class D, class S>
inline D directed(S v, const char* mode) {
    D x = D(v);
    if (!mode[0] || mode[2] == 'i' || x != x || (long double)x == (long double)v) return x;
    const char r = mode[1];
    const bool above = (long double)x > (long double)v;
    if ((r == 'z' && (v > 0 ? above : !above)) || (r == 'm' && above) || (r == 'p' && !above))
        x = std::nextafter(x, r == 'z' ? D(0) : r == 'm' ? -std::numeric_limits<D>::infinity()
                                                            : std::numeric_limits<D>::infinity());
    return x;
}
// cvt: float -> int rounds as the suffix says (rni, rzi, rmi, rpi) and clamps to the destination's range
// (NaN -> 0), as PTX does; float -> 16-bit float rounds with rn, rz, rm, rp.
template <class T>
inline T saturate(double x);  // (below)
template <class D, class S>
inline D convert(S v, const char* mode, bool sat) {
    if constexpr (is_16bit_float<S>::value) {
        return convert<D>(float(v), mode, sat);
    } else if constexpr (is_16bit_float<D>::value) {
        return round_to<D>(float(v), mode[0] ? mode : "rn");
    } else if constexpr (std::is_integral<D>::value && std::is_floating_point<S>::value) {
        double x = double(v);
        if (x != x) return D(0);
        const char r = mode[0] ? mode[1] : 'z';
        x = r == 'n' ? std::nearbyint(x) : r == 'm' ? std::floor(x) : r == 'p' ? std::ceil(x) : std::trunc(x);
        if (x <= double(std::numeric_limits<D>::min())) return std::numeric_limits<D>::min();
        if (x >= double(std::numeric_limits<D>::max())) return std::numeric_limits<D>::max();
        return D(x);
    } else if constexpr (std::is_floating_point<D>::value && std::is_floating_point<S>::value) {
        D x = directed<D>(v, mode);
        if (mode[0] && mode[2] == 'i') {  // cvt.rni.f32.f32: round to an integral value
            x = mode[1] == 'n' ? std::nearbyint(x) : mode[1] == 'm' ? std::floor(x) : mode[1] == 'p' ? std::ceil(x)
                                                                                                      : std::trunc(x);
        }
        if (sat) x = saturate<D>(x);
        return x;
    } else if constexpr (std::is_integral<D>::value && std::is_integral<S>::value) {
        if (sat) {
            if (std::is_signed<S>::value && v < 0 && !std::is_signed<D>::value) return D(0);
            if ((long double)v > (long double)std::numeric_limits<D>::max()) return std::numeric_limits<D>::max();
            if ((long double)v < (long double)std::numeric_limits<D>::min()) return std::numeric_limits<D>::min();
        }
        return D(v);
    } else if constexpr (std::is_floating_point<D>::value && std::is_integral<S>::value) {
        return directed<D>(v, mode);  // cvt.rz.f32.s32: a big int rounded toward zero
    } else {
        return D(v);
    }
}
// div (.rn, .full, integers) and rcp: the IEEE quotient, as a call (see emulator_ptx.py's div).
template <class T>
inline T quotient(T a, T b) { return a / b; }
// An f32 instruction without .ftz keeps subnormals, under -ftz=true too: the build of such a kernel runs this
// function between `ldmxcsr emu_csr_kept` and `ldmxcsr emu_csr_flushing` (emulator.py, _keep_double_subnormals,
// which finds it by its name: hence noinline), and whatever it calls with it.
#ifdef __EMU_FTZ
template <class Instruction>
__attribute__((noinline)) void keep_subnormals(Instruction&& instruction) { instruction(); }
#else
template <class Instruction>
inline void keep_subnormals(Instruction&& instruction) { instruction(); }
#endif
// .ftz (PTX ISA: "subnormal inputs and results are flushed to sign-preserving zero"), on an operand's bits:
// a .f32 value whose exponent field is 0 keeps only its sign; .f16 / .f16x2 the same in each 16-bit half.
inline uint64_t flush_f32(uint64_t bits) { return (bits & 0x7f800000u) ? bits : bits & 0x80000000u; }
inline uint64_t flush_f16(uint64_t bits) { return (bits & 0x7c00u) ? bits : bits & 0x8000u; }
inline uint64_t flush_f16x2(uint64_t bits) { return flush_f16(bits & 0xffffu) | flush_f16(bits >> 16) << 16; }
// .sat: an integer result clamps to its type's range; a float one to [0, 1] (NaN -> 0).
template <class T>
inline T saturate(double x) {
    if constexpr (std::is_integral<T>::value) {
        if (x > double(std::numeric_limits<T>::max())) return std::numeric_limits<T>::max();
        if (x < double(std::numeric_limits<T>::min())) return std::numeric_limits<T>::min();
        return T(x);
    } else {
        // rounded to T first, then clamped to [+0.0, 1.0] ("to (+0.0f,1.0f), with NaN converted to +0.0f", as the
        // SASS .SAT modifier says): -0 gives +0, as NaN does (r < 0 kept -0)
        const T r = T(x);
        return r > T(0) ? (r > T(1) ? T(1) : r) : T(0);
    }
}
template <class T>
inline auto mul_hi(T a, T b) -> T {
    if constexpr (sizeof(T) == 4) return T((std::is_signed<T>::value ? int64_t(a) * int64_t(b)
                                                                     : int64_t(uint64_t(a) * uint64_t(b))) >> 32);
    else if constexpr (std::is_signed<T>::value) return T(((__int128)a * (__int128)b) >> 64);
    else return T(((unsigned __int128)a * (unsigned __int128)b) >> 64);
}
template <class T>
inline uint64_t mul_wide(T a, T b) {
    if constexpr (std::is_signed<T>::value) return uint64_t(int64_t(a) * int64_t(b));
    else return uint64_t(a) * uint64_t(b);
}
// PTX shifts clamp the amount: shl/shr by the width or more gives 0 (or the sign, for a signed shr).
template <class T>
inline T shift(T a, uint32_t n, bool left) {
    constexpr uint32_t bits = sizeof(T) * 8;
    if (left) return n >= bits ? T(0) : T(a << n);
    if (n >= bits) return std::is_signed<T>::value && a < 0 ? T(-1) : T(0);
    return T(a >> n);
}
template <class T> inline uint32_t popc(T a) { return __builtin_popcountll((unsigned long long)(std::make_unsigned_t<T>)a); }
template <class T> inline uint32_t clz(T a) {
    const auto u = (std::make_unsigned_t<T>)a;
    return u == 0 ? sizeof(T) * 8 : __builtin_clzll((unsigned long long)u) - (64 - sizeof(T) * 8);
}
template <class T> inline T brev(T a) {
    auto u = (std::make_unsigned_t<T>)a, r = decltype(u)(0);
    for (unsigned k = 0; k < sizeof(T) * 8; ++k) r = decltype(u)(r | (((u >> k) & 1u) << (sizeof(T) * 8 - 1 - k)));
    return T(r);
}
// bfe: `len` bits from `pos` (both clamped to 0..255), sign-extended for signed types, as PTX specifies.
template <class T>
inline T bfe(T a, unsigned pos, unsigned len) {
    constexpr unsigned bits = sizeof(T) * 8;
    pos &= 0xff;
    len &= 0xff;
    using U = std::make_unsigned_t<T>;
    const U u = U(a);
    bool sign = false;
    if (std::is_signed<T>::value) sign = len == 0 ? false : ((u >> (pos + len - 1 < bits - 1 ? pos + len - 1 : bits - 1)) & 1u);
    U r = 0;
    for (unsigned k = 0; k < bits; ++k) {
        const bool bit = k < len && pos + k < bits ? ((u >> (pos + k)) & 1u) : sign;
        r = U(r | (U(bit) << k));
    }
    return T(r);
}
template <class T>
inline T bfi(T a, T b, unsigned pos, unsigned len) {  // insert a's low len bits into b at pos
    constexpr unsigned bits = sizeof(T) * 8;
    pos &= 0xff;
    len &= 0xff;
    using U = std::make_unsigned_t<T>;
    U r = U(b);
    for (unsigned k = 0; k < len && pos + k < bits; ++k) {
        const U bit = U((U(a) >> k) & 1u);
        r = U((r & ~(U(1) << (pos + k))) | (bit << (pos + k)));
    }
    return T(r);
}
// lop3.b32: bit i of the look-up table is the result for a = bit 2 of i, b = bit 1, c = bit 0
// (the table for a & b | c is (0xF0 & 0xCC) | 0xAA).
inline uint32_t lop3(uint32_t a, uint32_t b, uint32_t c, unsigned lut) {
    uint32_t r = 0;
    for (unsigned i = 0; i < 8; ++i)
        if ((lut >> i) & 1u) r |= ((i & 4) ? a : ~a) & ((i & 2) ? b : ~b) & ((i & 1) ? c : ~c);
    return r;
}
// prmt.b32 (default mode): each selector nibble picks one of the 8 bytes of {b, a} (a is bytes 0-3); its
// bit 3 replicates that byte's sign bit instead.
inline uint32_t prmt(uint32_t a, uint32_t b, uint32_t c) {
    const uint64_t bytes = (uint64_t(b) << 32) | a;
    uint32_t r = 0;
    for (unsigned k = 0; k < 4; ++k) {
        const unsigned sel = (c >> (4 * k)) & 0xf;
        uint32_t byte = uint32_t(bytes >> (8 * (sel & 7))) & 0xff;
        if (sel & 8) byte = (byte & 0x80) ? 0xff : 0;
        r |= byte << (8 * k);
    }
    return r;
}
// shfl.sync d, a, b, c, mask: c packs the segment ((32 - width) << 8) and the clamp lane.
inline uint64_t shfl(int op, const char* file, int line, unsigned mask, uint32_t a, unsigned b, unsigned c) {
    const int width = 32 - int((c >> 8) & 0x1f);
    return __emu::shfl(op, file, line, mask, a, int(b), width);
}
}  // namespace ptx
}  // namespace __emu
#include "minilora_tensor_core.h"  // mma.sync, ldmatrix, stmatrix, movmatrix (and <mma.h>) run on it
#include "minilora_mbarrier.h"  // mbarrier.* and cp.async.mbarrier.arrive
