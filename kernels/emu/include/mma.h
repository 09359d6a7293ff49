// Stand-in for CUDA's <mma.h> (the nvcuda::wmma tensor-core API) under minilora's CPU emulator.
//
// fragment<matrix_a | matrix_b | accumulator, M, N, K, T, layout> with CUDA's shapes and types: __half and
// __nv_bfloat16 (m16n16k16, m32n8k16, m8n32k16; accumulators float, or __half for __half inputs), signed char
// and unsigned char (the same shapes, int accumulators), precision::tf32 (m16n16k8, stored as float) and double
// (m8n8k4).  load_matrix_sync, store_matrix_sync, fill_fragment and mma_sync are warp collectives (all 32 lanes,
// the same pointer, ldm and layout: checked), with the arithmetic of minilora_tensor_core.h.  The sub-byte types
// (experimental::precision::s4, u4, b1) and bmma_sync are refused by name when used.
//
// Which element of the matrix a lane's x[i] holds is unspecified in CUDA (code may only apply the same operation
// to every element, as the samples' alpha/beta epilogue does).  Here element i of lane l is element 32 i + l of
// the fragment's matrix (M x K for matrix_a, K x N for matrix_b, M x N for the accumulator) in row-major order,
// whatever the memory layout it was loaded from: the same for every fragment of one shape, so elementwise code
// between an accumulator and a fragment loaded from C works.  num_elements is rows * cols / 32 (a GPU may hold
// duplicates and report more: code that depends on the number is wrong there too).
#pragma once
#include "../cuda_emu.h"
#include "minilora_tensor_core.h"

namespace nvcuda {
namespace wmma {
struct row_major;
struct col_major;
struct matrix_a;
struct matrix_b;
struct accumulator;
enum layout_t { mem_row_major, mem_col_major };
namespace precision {
struct tf32;
}
namespace experimental {
namespace precision {
struct s4;
struct u4;
struct b1;
}  // namespace precision
enum bmmaBitOp { bmmaBitOpXOR = 1, bmmaBitOpAND = 2 };
enum bmmaAccumulateOp { bmmaAccumulateOpPOPC = 1 };
}  // namespace experimental

namespace __emu_detail {
template <class...> struct always_false { static constexpr bool value = false; };
template <class T> struct storage { using type = T; };
template <> struct storage<precision::tf32> { using type = float; };
template <class T> struct elem;
template <> struct elem<__half> { static constexpr ::__emu::tc::Elem value = ::__emu::tc::E_F16; };
template <> struct elem<__nv_bfloat16> { static constexpr ::__emu::tc::Elem value = ::__emu::tc::E_BF16; };
template <> struct elem<precision::tf32> { static constexpr ::__emu::tc::Elem value = ::__emu::tc::E_TF32; };
template <> struct elem<signed char> { static constexpr ::__emu::tc::Elem value = ::__emu::tc::E_S8; };
template <> struct elem<unsigned char> { static constexpr ::__emu::tc::Elem value = ::__emu::tc::E_U8; };
template <> struct elem<double> { static constexpr ::__emu::tc::Elem value = ::__emu::tc::E_F64; };
template <> struct elem<float> { static constexpr ::__emu::tc::Elem value = ::__emu::tc::E_F32; };
template <> struct elem<int> { static constexpr ::__emu::tc::Elem value = ::__emu::tc::E_S32; };

// The shapes and input types CUDA declares fragments for (sm_70 - sm_90).
template <int M, int N, int K, class T>
constexpr bool valid_shape() {
    if (std::is_same<T, __half>::value || std::is_same<T, __nv_bfloat16>::value || std::is_same<T, signed char>::value ||
        std::is_same<T, unsigned char>::value)
        return K == 16 && ((M == 16 && N == 16) || (M == 32 && N == 8) || (M == 8 && N == 32));
    if (std::is_same<T, precision::tf32>::value) return M == 16 && N == 16 && K == 8;
    if (std::is_same<T, double>::value) return M == 8 && N == 8 && K == 4;
    return false;
}
template <class T>
constexpr bool sub_byte() {
    return std::is_same<T, experimental::precision::s4>::value || std::is_same<T, experimental::precision::u4>::value ||
           std::is_same<T, experimental::precision::b1>::value;
}
template <class Use, int M, int N, int K> struct dims;
template <int M, int N, int K> struct dims<matrix_a, M, N, K> { static constexpr int rows = M, cols = K; };
template <int M, int N, int K> struct dims<matrix_b, M, N, K> { static constexpr int rows = K, cols = N; };
template <int M, int N, int K> struct dims<accumulator, M, N, K> { static constexpr int rows = M, cols = N; };
}  // namespace __emu_detail

template <class Use, int M, int N, int K, class T, class Layout = void>
class fragment {
    static_assert(!__emu_detail::sub_byte<T>(), "wmma fragments of experimental::precision::s4 / u4 / b1 (sub-byte "
                  "tensor-core types, bmma_sync) are not modelled by minilora's CUDA emulator");
    static_assert(std::is_same<Use, accumulator>::value || std::is_same<Layout, row_major>::value ||
                  std::is_same<Layout, col_major>::value,
                  "a wmma matrix_a / matrix_b fragment takes its layout (wmma::row_major or wmma::col_major) as its "
                  "last template argument");
    static_assert(!std::is_same<Use, accumulator>::value || std::is_same<Layout, void>::value,
                  "a wmma accumulator fragment has no layout template argument (store_matrix_sync takes one)");
    static_assert(std::is_same<Use, accumulator>::value
                      ? (std::is_same<T, float>::value || std::is_same<T, __half>::value || std::is_same<T, int>::value ||
                         std::is_same<T, double>::value)
                      : __emu_detail::valid_shape<M, N, K, T>(),
                  "this wmma fragment's shape and element type are not one CUDA declares (m16n16k16, m32n8k16, "
                  "m8n32k16 for __half, __nv_bfloat16, signed char, unsigned char; m16n16k8 for precision::tf32; "
                  "m8n8k4 for double)");

  public:
    using element_type = T;
    using storage_element_type = typename __emu_detail::storage<T>::type;
    static constexpr int rows = __emu_detail::dims<Use, M, N, K>::rows, cols = __emu_detail::dims<Use, M, N, K>::cols;
    enum { num_elements = rows * cols / 32, num_storage_elements = rows * cols / 32 };
    storage_element_type x[num_elements];
};

namespace __emu_detail {
// Checks every lane agrees on the call (the same pointer, ldm and layout) and that the pointer and the stride
// are aligned as CUDA requires; returns when the warp has met.
struct Call {
    const void* ptr;
    unsigned ldm;
    int layout;
};
inline void check_call(const Call& mine, size_t elem_bytes, const char* what, const char* file, int line) {
    ::__emu::tc::WarpView<Call> warp(mine, what, file, line);
    for (int l = 0; l < 32; ++l)
        if (warp[l].ptr != mine.ptr || warp[l].ldm != mine.ldm || warp[l].layout != mine.layout)
            ::__emu::device_fault("the lanes of a warp call a wmma load/store with different pointers, ldm or layouts "
                                  "(CUDA requires the same values in all 32 lanes)", file, line);
    // CUDA requires a 256-bit aligned pointer; minilora's arrays promise 16 bytes, so 16 is what is checked here.
    if (reinterpret_cast<uintptr_t>(mine.ptr) % 16)
        ::__emu::device_fault("a wmma load/store pointer must be 256-bit aligned (CUDA's requirement; the emulator "
                              "checks 16 bytes): this one is not", file, line);
    if ((mine.ldm * elem_bytes) % 16)
        ::__emu::device_fault("a wmma load/store's ldm must be a multiple of 16 bytes (8 __half, 4 float, 16 char, "
                              "2 double elements)", file, line);
}
template <class T>
inline double to_double(const T& v) {
    if constexpr (std::is_same<T, __half>::value || std::is_same<T, __nv_bfloat16>::value) return (double)float(v);
    else return (double)v;
}
template <class F>
struct Element {  // row and column of x[i] in lane `lane` (see the file's comment)
    int row, col;
    Element(int i, unsigned lane) : row((32 * i + (int)lane) / F::cols), col((32 * i + (int)lane) % F::cols) {}
};
template <class F, class P>
inline void load(F& f, const P* p, unsigned ldm, bool row_major_memory, const char* file, int line) {
    const unsigned lane = ::__emu::tc::lane_id();
    for (int i = 0; i < F::num_elements; ++i) {
        const Element<F> e(i, lane);
        f.x[i] = p[row_major_memory ? (size_t)e.row * ldm + e.col : (size_t)e.col * ldm + e.row];
    }
    check_call(Call{p, ldm, row_major_memory}, sizeof(P), "wmma::load_matrix_sync", file, line);
}
}  // namespace __emu_detail

// load_matrix_sync(a, p, ldm): a matrix_a / matrix_b fragment in its own layout.
template <class Use, int M, int N, int K, class T, class Layout>
inline void load_matrix_sync(fragment<Use, M, N, K, T, Layout>& a,
                             const typename fragment<Use, M, N, K, T, Layout>::storage_element_type* p, unsigned ldm,
                             const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
    static_assert(!std::is_same<Use, accumulator>::value,
                  "wmma::load_matrix_sync of an accumulator takes a layout: load_matrix_sync(c, p, ldm, mem_row_major)");
    __emu_detail::load(a, p, ldm, std::is_same<Layout, row_major>::value, file, line);
}
// load_matrix_sync(c, p, ldm, layout): an accumulator.
template <int M, int N, int K, class T>
inline void load_matrix_sync(fragment<accumulator, M, N, K, T>& c, const T* p, unsigned ldm, layout_t layout,
                             const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
    __emu_detail::load(c, p, ldm, layout == mem_row_major, file, line);
}

template <int M, int N, int K, class T>
inline void store_matrix_sync(T* p, const fragment<accumulator, M, N, K, T>& c, unsigned ldm, layout_t layout,
                              const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
    using F = fragment<accumulator, M, N, K, T>;
    const unsigned lane = ::__emu::tc::lane_id();
    for (int i = 0; i < F::num_elements; ++i) {
        const __emu_detail::Element<F> e(i, lane);
        p[layout == mem_row_major ? (size_t)e.row * ldm + e.col : (size_t)e.col * ldm + e.row] = c.x[i];
    }
    __emu_detail::check_call(__emu_detail::Call{p, ldm, layout == mem_row_major}, sizeof(T), "wmma::store_matrix_sync",
                             file, line);
}

template <class Use, int M, int N, int K, class T, class Layout>
inline void fill_fragment(fragment<Use, M, N, K, T, Layout>& a,
                          const typename fragment<Use, M, N, K, T, Layout>::storage_element_type& v) {
    for (int i = 0; i < fragment<Use, M, N, K, T, Layout>::num_elements; ++i) a.x[i] = v;
}

// d = a b + c for the warp's tiles (d and c may be the same fragment, of float or __half for __half inputs).
template <int M, int N, int K, class TA, class LA, class LB, class TD, class TC>
inline void mma_sync(fragment<accumulator, M, N, K, TD>& d, const fragment<matrix_a, M, N, K, TA, LA>& a,
                     const fragment<matrix_b, M, N, K, TA, LB>& b, const fragment<accumulator, M, N, K, TC>& c,
                     bool satf = false, const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
    using FA = fragment<matrix_a, M, N, K, TA, LA>;
    using FB = fragment<matrix_b, M, N, K, TA, LB>;
    using FD = fragment<accumulator, M, N, K, TD>;
    static_assert(std::is_same<TA, double>::value == std::is_same<TD, double>::value &&
                      std::is_integral<TA>::value == std::is_same<TD, int>::value &&
                      (std::is_same<TA, __half>::value || !std::is_same<TD, __half>::value) &&
                      (std::is_same<TD, TC>::value || std::is_same<TA, __half>::value),
                  "wmma::mma_sync: these accumulator types do not go with these inputs (float for __half, "
                  "__nv_bfloat16 and tf32, or __half for __half; int for signed / unsigned char; double for double)");
    struct Operands { const FA* a; const FB* b; };
    const Operands mine{&a, &b};
    double A[M][K], B[K][N];
    {
        ::__emu::tc::WarpView<Operands> warp(mine, "wmma::mma_sync", file, line);
        constexpr auto ea = __emu_detail::elem<TA>::value;
        for (int l = 0; l < 32; ++l)
            for (int i = 0; i < FA::num_elements; ++i) {
                const __emu_detail::Element<FA> e(i, l);
                A[e.row][e.col] = ::__emu::tc::decode(::__emu::ptx::in(warp[l].a->x[i]), ea, 0);
            }
        for (int l = 0; l < 32; ++l)
            for (int i = 0; i < FB::num_elements; ++i) {
                const __emu_detail::Element<FB> e(i, l);
                B[e.row][e.col] = ::__emu::tc::decode(::__emu::ptx::in(warp[l].b->x[i]), ea, 0);
            }
    }  // the warp has read every lane's a and b
    const unsigned lane = ::__emu::tc::lane_id();
    for (int i = 0; i < FD::num_elements; ++i) {
        const __emu_detail::Element<FD> e(i, lane);
        double row[K], col[K];
        for (int k = 0; k < K; ++k) row[k] = A[e.row][k], col[k] = B[k][e.col];
        TD v = ::__emu::tc::dot_round<TD>(row, col, K, __emu_detail::to_double(c.x[i]));
        if (satf && !std::is_integral<TD>::value) {  // the deprecated satf: NaN -> 0, +-inf -> the largest finite
            const double r = __emu_detail::to_double(v), big = std::is_same<TD, __half>::value ? 65504.0 : FLT_MAX;
            if (r != r) v = TD(0.0);
            else if (std::isinf(r)) v = TD(r > 0 ? big : -big);
        }
        d.x[i] = v;
    }
}

// Single-precision to tf32: to nearest, ties away from zero, in float32 storage (cvt.rna.tf32.f32).
inline float __float_to_tf32(float x) { return ::__emu::tc::tf32_round(x); }

template <class... Args>
inline void bmma_sync(Args&&...) {
    static_assert(__emu_detail::always_false<Args...>::value,
                  "wmma::bmma_sync (1-bit tensor-core products) is not modelled by minilora's CUDA emulator");
}
}  // namespace wmma
}  // namespace nvcuda
