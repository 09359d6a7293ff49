// Tensor cores on minilora's CPU emulator: what <mma.h>'s wmma API and inline PTX's mma.sync, ldmatrix, stmatrix
// and movmatrix run on.  Not a CUDA header (included by mma.h and minilora_ptx.h).
//
// A tensor-core instruction is a warp collective: each lane holds a slice (a "fragment") of the warp's matrices.
// Here a lane shows the warp a pointer to its slice (__emu::warp_gather, a __syncwarp in the runtime's terms, so
// the barrier checks apply and racecheck counts it as a warp synchronisation), reads the slices it needs from the
// other lanes, and meets the warp once more before it returns (WarpView's destructor), so no lane changes its
// operands while another still reads them.  All 32 lanes must take part, as on a GPU.
//
// Arithmetic.  NVIDIA documents that the products of 16-bit (and tf32, fp8, int8) inputs are exact and that the
// order and internal precision of the accumulation are implementation-defined.  The emulator's choice is the one
// a test can state: each output is  c + sum_k a_k b_k  computed exactly (in double: products of 16-bit floats
// have at most 22 significant bits, so a 16- or 32-term sum stays exact unless its terms span ~30 binades) and
// rounded ONCE, to nearest even, to the accumulator's type.  So a float64 NumPy reference rounded to float32
// matches bit for bit; a GPU may differ from both in the last bits (its adders truncate).  tf32 operands are
// float32 bit patterns of which the tensor core reads the upper 19 bits: the lower 13 are ignored (truncated),
// as on the GPU; __float_to_tf32 / cvt.rna.tf32.f32 round to nearest, ties away from zero, as CUDA's do.
// Integer products (s8, u8) are summed exactly in int64 and wrap to int32 (or clamp with .satfinite).  f64 (DMMA)
// is a chain of fused multiply-adds in k order starting from c (IEEE, as NVIDIA documents for double).
#pragma once
#include "../cuda_emu.h"

namespace __emu {
namespace tc {

// Every lane's copy of a T, for one warp instruction: lanes[l] is lane l's (see the comment above).
template <class T>
struct WarpView {
    const T* lanes[32];
    const char* file;
    int line;
    WarpView(const T& mine, const char* what, const char* f, int l) : file(f), line(l) {
        warp_gather(&mine, reinterpret_cast<const void**>(lanes), what, f, l);
    }
    WarpView(const T&&, const char*, const char*, int) = delete;  // the others read it later: it must outlive the view
    WarpView(const WarpView&) = delete;
    const T& operator[](int lane) const { return *lanes[lane]; }
    ~WarpView() { warp_op(W_SYNC, file, line, 0xffffffffu, 0, 0, 32); }
};

inline unsigned lane_id() { return ((threadIdx.z * blockDim.y + threadIdx.y) * blockDim.x + threadIdx.x) % 32; }

// tf32: the upper 19 bits of a float32 (sign, 8 exponent bits, 10 mantissa bits).
inline float tf32_truncate(float x) {
    uint32_t b;
    std::memcpy(&b, &x, 4);
    if ((b & 0x7f800000u) != 0x7f800000u) b &= 0xffffe000u;  // inf and NaN keep their bits
    std::memcpy(&x, &b, 4);
    return x;
}
// cvt.rna.tf32.f32 / __float_to_tf32: to nearest, ties away from zero (add half an ulp of tf32, then truncate).
inline float tf32_round(float x) {
    uint32_t b;
    std::memcpy(&b, &x, 4);
    if ((b & 0x7f800000u) == 0x7f800000u) return x;
    b = (b + 0x1000u) & 0xffffe000u;  // a carry into the exponent rounds up to the next binade (or to inf)
    std::memcpy(&x, &b, 4);
    return x;
}

// The element types a tensor core multiplies, as PTX names them.
enum Elem { E_F16, E_BF16, E_TF32, E_F32, E_F64, E_S8, E_U8, E_S32, E_E4M3, E_E5M2 };
inline int elem_bits(Elem e) {
    switch (e) {
        case E_F16: case E_BF16: return 16;
        case E_S8: case E_U8: case E_E4M3: case E_E5M2: return 8;
        case E_F64: return 64;
        default: return 32;
    }
}
// Element i (of 32 / bits packed low to high) of a register, as an exact double.
inline double decode(uint64_t reg, Elem e, int i) {
    const int bits = elem_bits(e);
    const uint64_t v = bits == 64 ? reg : (reg >> (bits * i)) & ((1ull << bits) - 1);
    switch (e) {
        case E_F16: { __half h; std::memcpy(&h, &v, 2); return float(h); }
        case E_BF16: return bf16_bits_to_float((uint16_t)v);
        case E_TF32: { float f; uint32_t u = (uint32_t)v; std::memcpy(&f, &u, 4); return tf32_truncate(f); }
        case E_F32: { float f; uint32_t u = (uint32_t)v; std::memcpy(&f, &u, 4); return f; }
        case E_F64: { double d; std::memcpy(&d, &v, 8); return d; }
        case E_S8: return (int8_t)(uint8_t)v;
        case E_U8: return (uint8_t)v;
        case E_S32: return (int32_t)(uint32_t)v;
        case E_E4M3: return fp8::decode((unsigned char)v, true);
        default: return fp8::decode((unsigned char)v, false);
    }
}

// One output of a floating-point tensor-core product: c + sum a[k] b[k], exact then rounded once (see above).
template <class Out>
inline Out dot_round(const double* a, const double* b, int k, double c) {
    if constexpr (std::is_same<Out, double>::value) {
        for (int i = 0; i < k; ++i) c = std::fma(a[i], b[i], c);
        return c;
    } else if constexpr (std::is_integral<Out>::value) {
        int64_t sum = (int64_t)c;
        for (int i = 0; i < k; ++i) sum += (int64_t)a[i] * (int64_t)b[i];
        return (Out)(uint32_t)(uint64_t)sum;  // wraps around, as the s32 accumulator does
    } else {
        double sum = c;
        for (int i = 0; i < k; ++i) sum += a[i] * b[i];
        return Out(sum);  // float: rounded once; __half / __nv_bfloat16: rounded once (their double constructor)
    }
}
}  // namespace tc
}  // namespace __emu

// ---- inline PTX: mma.sync, ldmatrix, stmatrix, movmatrix (minilora/emulator_ptx.py emits these calls) ----------
namespace __emu {
namespace ptx {
// mma.sync.aligned.mMnNkK.row.col{.satfinite}.dtype.atype.btype.ctype d, a, b, c with the fragment layouts of the
// PTX ISA ("Matrix fragments for mma.m16n8k*", m8n8k16 and m8n8k4 .f64).  For lane l, g = l / 4, t = l % 4, and p
// elements packed per 32-bit register: A's element i is at row g + 8 ((i / p) % 2), column p t + i % p + (K / 2)
// (i / (2 p)); B's element i at row (k) p t + i % p + (K / 2) (i / p), column g; C's and D's element i at row
// g + 8 (i / 2), column 2 t + i % 2 (m8n8 shapes: A (g, p t + i), B (p t + i, g), C (g, 2 t + i)).
struct MmaShape { int m, n, k; tc::Elem d, a, b, c; bool satfinite; };
struct MmaLane { const uint64_t* a; const uint64_t* b; };

inline void mma_a_position(const MmaShape& s, int lane, int i, int& row, int& col) {
    const int g = lane / 4, t = lane % 4, p = 32 / tc::elem_bits(s.a) > 0 ? 32 / tc::elem_bits(s.a) : 1;
    if (s.m == 8) { row = g; col = p * t + i; return; }
    row = g + 8 * ((i / p) % 2);
    col = p * t + i % p + (s.k / 2) * (i / (2 * p));
}
inline void mma_b_position(const MmaShape& s, int lane, int i, int& row, int& col) {
    const int g = lane / 4, t = lane % 4, p = 32 / tc::elem_bits(s.b) > 0 ? 32 / tc::elem_bits(s.b) : 1;
    col = g;
    row = s.m == 8 ? p * t + i : p * t + i % p + (s.k / 2) * (i / p);
}
// Register r's elements of a fragment of `count` elements of type e (an f64 register holds one).
inline int per_register(tc::Elem e) { return tc::elem_bits(e) >= 32 ? 1 : 32 / tc::elem_bits(e); }

inline void mma(const MmaShape& s, uint64_t* d, const uint64_t* a, const uint64_t* b, const uint64_t* c,
                const char* file, int line) {
    const int na = s.m * s.k / 32, nb = s.k * s.n / 32, nd = s.m * s.n / 32;
    double A[16][32], B[32][8];
    {
        const MmaLane mine{a, b};  // (a named local: the other lanes read it until the view closes)
        tc::WarpView<MmaLane> warp(mine, "mma.sync", file, line);
        const int pa = per_register(s.a), pb = per_register(s.b);
        for (int l = 0; l < 32; ++l) {
            int row, col;
            for (int i = 0; i < na; ++i) {
                mma_a_position(s, l, i, row, col);
                A[row][col] = tc::decode(warp[l].a[i / pa], s.a, i % pa);
            }
            for (int i = 0; i < nb; ++i) {
                mma_b_position(s, l, i, row, col);
                B[row][col] = tc::decode(warp[l].b[i / pb], s.b, i % pb);
            }
        }
    }
    const int lane = (int)tc::lane_id(), g = lane / 4, t = lane % 4, pd = per_register(s.d), pc = per_register(s.c);
    for (int r = 0; r < (nd + pd - 1) / pd; ++r) d[r] = 0;
    for (int i = 0; i < nd; ++i) {
        const int row = s.m == 8 ? g : g + 8 * (i / 2), col = 2 * t + i % 2;
        double arow[32], bcol[32];
        for (int k = 0; k < s.k; ++k) arow[k] = A[row][k], bcol[k] = B[k][col];
        const double cin = tc::decode(c[i / pc], s.c, i % pc);
        uint64_t bits;
        switch (s.d) {
            case tc::E_F16: bits = in(tc::dot_round<__half>(arow, bcol, s.k, cin)); break;
            case tc::E_F64: bits = in(tc::dot_round<double>(arow, bcol, s.k, cin)); break;
            case tc::E_S32: {
                int64_t sum = (int64_t)cin;
                for (int k = 0; k < s.k; ++k) sum += (int64_t)arow[k] * (int64_t)bcol[k];
                if (s.satfinite) sum = sum > INT32_MAX ? INT32_MAX : sum < INT32_MIN ? INT32_MIN : sum;
                bits = (uint32_t)(uint64_t)sum;
                break;
            }
            default: bits = in(tc::dot_round<float>(arow, bcol, s.k, cin));
        }
        d[i / pd] |= bits << (tc::elem_bits(s.d) >= 32 ? 0 : tc::elem_bits(s.d) * (i % pd));
    }
}

// ldmatrix.sync.aligned.m8n8.xN{.trans}.shared.b16 d, [addr]: lane 8 j + r gives the (window) address of row r of
// matrix j (16 bytes); lane l = 4 g + t receives in d[j] the elements (g, 2t), (g, 2t + 1) of matrix j -- with
// .trans, elements (2t, g), (2t + 1, g).  Only the addresses of the lanes that give one are resolved.
inline void ldmatrix(uint64_t* d, int count, bool trans, uint64_t window, const char* file, int line) {
    tc::WarpView<uint64_t> warp(window, "ldmatrix", file, line);
    const int lane = (int)tc::lane_id(), g = lane / 4, t = lane % 4;
    for (int j = 0; j < count; ++j) {
        uint16_t lo, hi;
        if (!trans) {
            const char* row = (const char*)shared_window_ptr(warp[8 * j + g], 16, file, line);
            std::memcpy(&lo, row + 4 * t, 2);
            std::memcpy(&hi, row + 4 * t + 2, 2);
        } else {
            std::memcpy(&lo, (const char*)shared_window_ptr(warp[8 * j + 2 * t], 16, file, line) + 2 * g, 2);
            std::memcpy(&hi, (const char*)shared_window_ptr(warp[8 * j + 2 * t + 1], 16, file, line) + 2 * g, 2);
        }
        d[j] = lo | ((uint64_t)hi << 16);
    }
}
// stmatrix.sync.aligned.m8n8.xN{.trans}.shared.b16 [addr], r: ldmatrix backwards (sm_90).
inline void stmatrix(const uint64_t* r, int count, bool trans, uint64_t window, const char* file, int line) {
    tc::WarpView<uint64_t> warp(window, "stmatrix", file, line);
    const int lane = (int)tc::lane_id(), g = lane / 4, t = lane % 4;
    for (int j = 0; j < count; ++j) {
        const uint16_t lo = (uint16_t)r[j], hi = (uint16_t)(r[j] >> 16);
        if (!trans) {
            char* row = (char*)shared_window_ptr(warp[8 * j + g], 16, file, line);
            std::memcpy(row + 4 * t, &lo, 2);
            std::memcpy(row + 4 * t + 2, &hi, 2);
        } else {
            std::memcpy((char*)shared_window_ptr(warp[8 * j + 2 * t], 16, file, line) + 2 * g, &lo, 2);
            std::memcpy((char*)shared_window_ptr(warp[8 * j + 2 * t + 1], 16, file, line) + 2 * g, &hi, 2);
        }
    }
}
// movmatrix.sync.aligned.m8n8.trans.b16 d, a: the 8 x 8 matrix held as ldmatrix delivers it (lane 4 g + t: row g,
// columns 2t, 2t + 1), transposed.  Element (r, c) lies in lane 4 r + c / 2, half c % 2.
inline uint64_t movmatrix(uint64_t a, const char* file, int line) {
    tc::WarpView<uint64_t> warp(a, "movmatrix", file, line);
    const int lane = (int)tc::lane_id(), g = lane / 4, t = lane % 4;
    const uint64_t lo = (warp[4 * (2 * t) + g / 2] >> (16 * (g % 2))) & 0xffffu;
    const uint64_t hi = (warp[4 * (2 * t + 1) + g / 2] >> (16 * (g % 2))) & 0xffffu;
    return lo | (hi << 16);
}
// cvt.rna.tf32.f32
inline uint64_t tf32_bits(uint64_t f32) { return in(tc::tf32_round(val<float>(f32))); }
}  // namespace ptx
}  // namespace __emu
