// cuda_emu.h -- lets unmodified CUDA C kernels compile as ordinary C++17 for the CPU.
//
// minilora's emulator (minilora/emulator.py) force-includes this header (g++ -include) in front of
// a kernel file.  It supplies everything nvcc normally provides implicitly:
//
//   * the CUDA keywords (__global__, __device__, __forceinline__, __launch_bounds__, ...), which on
//     the CPU are just ordinary (inline) functions;
//   * the built-in variables threadIdx, blockIdx, blockDim, gridDim, warpSize.  threadIdx and
//     blockIdx are read from the top of the running fiber's own stack (see FiberTop below);
//   * __syncthreads(), the warp collectives (__shfl_*_sync, __ballot_sync, ...) and atomics.  The
//     collectives are implemented by the runtime (runtime.cpp): every CUDA thread is a *fiber* (a
//     user-level thread with its own stack), and a barrier simply parks the fiber until every other
//     thread of its block (or warp) has arrived;
//   * vector types (float2, float4, int4, ... with CUDA's alignment), __half and __nv_bfloat16 with
//     round-to-nearest-even conversions, CUDA's math intrinsics, and a device printf.
//
// __shared__ declarations are NOT handled here: emulator.py rewrites each one into a call to
// __emu_shared_var<T, ID>(), which hands every block its own freshly allocated and NaN-poisoned copy.
// Doing it in Python keeps this header simple and lets AddressSanitizer see each shared array as an
// exact-size heap block.
#pragma once
#ifndef MINILORA_CUDA_EMU_H
#define MINILORA_CUDA_EMU_H

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <cmath>
#include <math.h>
#include <cfloat>
#include <climits>
#include <type_traits>
#include <utility>

#define __CUDA_EMU__ 1

// ---------------------------------------------------------------------------------------------
// Keywords.  A CUDA thread is a plain C++ call of the kernel function on the CPU.
// ---------------------------------------------------------------------------------------------
#ifndef __EMU_FIND_KERNELS  // emulator.py preprocesses a source once with __global__ kept, to find its kernels
#define __global__
#endif
#define __device__
#define __host__
#ifndef __EMU_FIND_KERNELS  // kept there too: emulator.py lists the __constant__ variables for get_global
#define __constant__
#endif
#define __managed__
#define __forceinline__ inline __attribute__((always_inline))
// __noinline__ as a macro clashes with newer glibc/libstdc++ headers, which spell their own attribute
// __attribute__((__noinline__)): a standard header included AFTER this file fails to compile with a
// recent g++ (13+). runtime.cpp therefore includes its system headers first; the kernels here include
// no standard header. (nvcc avoids this by handling __noinline__ in its front end, which g++ cannot.)
#define __noinline__ __attribute__((noinline))
#ifndef __EMU_FIND_KERNELS  // kept there too: emulator.py reads the limit and checks it at launch
#define __launch_bounds__(...)
#endif
#define __align__(n) __attribute__((aligned(n)))
#define __grid_constant__
// __restrict__ is already a g++ keyword.

// ---------------------------------------------------------------------------------------------
// Vector types with CUDA's sizes and alignments (float4 and int4 are 16-byte aligned, float3 is
// not), so reinterpret_cast<float4*> tricks and struct layouts match the GPU.
// ---------------------------------------------------------------------------------------------
#define __EMU_VEC(T, N)                                                                                  \
    struct __attribute__((aligned(2 * sizeof(T)))) N##2 { T x, y; };                                    \
    struct N##3 { T x, y, z; };                                                                          \
    struct __attribute__((aligned(4 * sizeof(T) > 16 ? 16 : 4 * sizeof(T)))) N##4 { T x, y, z, w; };    \
    inline N##2 make_##N##2(T x, T y) { return N##2{x, y}; }                                             \
    inline N##3 make_##N##3(T x, T y, T z) { return N##3{x, y, z}; }                                     \
    inline N##4 make_##N##4(T x, T y, T z, T w) { return N##4{x, y, z, w}; }
__EMU_VEC(signed char, char)
__EMU_VEC(unsigned char, uchar)
__EMU_VEC(short, short)
__EMU_VEC(unsigned short, ushort)
__EMU_VEC(int, int)
__EMU_VEC(unsigned int, uint)
__EMU_VEC(long long, longlong)
__EMU_VEC(unsigned long long, ulonglong)
__EMU_VEC(float, float)
__EMU_VEC(double, double)
#undef __EMU_VEC

// ---------------------------------------------------------------------------------------------
// dim3 and the built-in index variables (uint3 comes from the vector types above).
// ---------------------------------------------------------------------------------------------
struct dim3 {
    unsigned int x, y, z;
    constexpr dim3(unsigned int x_ = 1, unsigned int y_ = 1, unsigned int z_ = 1) : x(x_), y(y_), z(z_) {}
    constexpr dim3(uint3 v) : x(v.x), y(v.y), z(v.z) {}
    constexpr operator uint3() const { return uint3{x, y, z}; }
};

// Where a CUDA thread finds its threadIdx and blockIdx: on its own stack.  Every fiber's stack lies in
// a slot of the runtime's stack pool whose size is 2^stack_slot_shift bytes and whose start is a
// multiple of that size, and a FiberTop record sits near the top of the slot.  So code running on a
// fiber finds its record from the stack pointer alone -- whichever OS thread (worker) runs its block,
// with no global to rewrite at every switch and no thread-local lookup (the Linux kernel once found
// its `current` task the same way).  The record (and the stack below it) sits a cache line and a page
// lower in each successive slot: at the same offset in slots a power of two apart, the hot top bytes
// of 256 stacks would all compete for a few sets of the L1 cache and of the TLB.
namespace __emu {
struct FiberTop {
    uint3 thread_idx;
    uint3 block_idx;
    void* fiber;   // the runtime's record of this thread
    void* worker;  // and of the OS thread running its block (both read together: no chain of loads)
};
constexpr uintptr_t kStaggerLines = 64, kStaggerPages = 16;  // distinct offsets of the record
extern unsigned stack_slot_shift __attribute__((visibility("hidden")));  // set by the runtime per launch
inline FiberTop* fiber_top_of(uintptr_t sp) {
    const uintptr_t slot = sp >> stack_slot_shift;  // the slot's number in the address space
    const uintptr_t top = (slot + 1) << stack_slot_shift;
    return reinterpret_cast<FiberTop*>(top - 64 * (slot % kStaggerLines) - 4096 * (slot % kStaggerPages)) - 1;
}
// `const`: within a function the record never moves, so the compiler looks it up once per kernel call
// and keeps it across barriers (noinline, or it would see the global read and look again each time).
__attribute__((const, noinline)) inline FiberTop* fiber_top() {
    uintptr_t sp;
#if defined(__x86_64__)
    __asm__("movq %%rsp, %0" : "=r"(sp));  // not volatile: within one function the slot never changes
#elif defined(__aarch64__)
    __asm__("mov %0, sp" : "=r"(sp));
#else
    sp = reinterpret_cast<uintptr_t>(__builtin_frame_address(0));
#endif
    return fiber_top_of(sp);
}
}  // namespace __emu
extern dim3 __emu_block_dim;
extern dim3 __emu_grid_dim;

// Read-only views, so `threadIdx.x = 3;` fails to compile exactly as under nvcc.
#define threadIdx (static_cast<const uint3&>(__emu::fiber_top()->thread_idx))
#define blockIdx (static_cast<const uint3&>(__emu::fiber_top()->block_idx))
#define blockDim (static_cast<const dim3&>(__emu_block_dim))
#define gridDim (static_cast<const dim3&>(__emu_grid_dim))
static constexpr int warpSize = 32;

// ---------------------------------------------------------------------------------------------
// Runtime entry points (runtime.cpp).  The macros record __FILE__/__LINE__ so that a divergent
// barrier can be reported with the source lines involved.
// ---------------------------------------------------------------------------------------------
namespace __emu {
enum BarrierKind { BAR_PLAIN = 0, BAR_COUNT = 1, BAR_AND = 2, BAR_OR = 3 };
// W_COALESCE: cooperative_groups::coalesced_threads(), the lanes of a warp that reach the same call together.
enum WarpOp { W_SYNC = 0, W_SHFL_IDX, W_SHFL_UP, W_SHFL_DOWN, W_SHFL_XOR, W_BALLOT, W_ANY, W_ALL, W_COALESCE };

int syncthreads(int kind, int pred, const char* file, int line);
unsigned long long warp_op(int op, const char* file, int line, unsigned mask, unsigned long long value,
                           int arg, int width);
unsigned activemask();
void* shared_get(int* slot, size_t size, size_t align, const char* name, const char* file, int line);
void* dynamic_shared();
void grid_sync(const char* file, int line);  // cooperative_groups::grid_group::sync()
[[noreturn]] void assert_fail(const char* expr, const char* file, int line);
int device_printf(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
long long clock_ticks();

// Shuffles move any value of up to 8 bytes (int, float, double, __half, ...) bit for bit.
template <class T>
inline T shfl(int op, const char* file, int line, unsigned mask, T v, int arg, int width = 32) {
    static_assert(sizeof(T) <= 8 && std::is_trivially_copyable<T>::value,
                  "__shfl_*_sync moves values of at most 8 bytes");
    unsigned long long bits = 0;
    std::memcpy(&bits, &v, sizeof(T));
    bits = warp_op(op, file, line, mask, bits, arg, width);
    T r;
    std::memcpy(&r, &bits, sizeof(T));
    return r;
}
}  // namespace __emu

#define __syncthreads() ((void)__emu::syncthreads(__emu::BAR_PLAIN, 0, __FILE__, __LINE__))
#define __syncthreads_count(p) __emu::syncthreads(__emu::BAR_COUNT, (p) ? 1 : 0, __FILE__, __LINE__)
#define __syncthreads_and(p) __emu::syncthreads(__emu::BAR_AND, (p) ? 1 : 0, __FILE__, __LINE__)
#define __syncthreads_or(p) __emu::syncthreads(__emu::BAR_OR, (p) ? 1 : 0, __FILE__, __LINE__)
// __syncwarp() and __syncwarp(mask): a small call-site object takes the optional mask.
namespace __emu {
struct SyncwarpAt {
    const char* file;
    int line;
    void operator()(unsigned mask = 0xffffffffu) const { warp_op(W_SYNC, file, line, mask, 0, 0, 32); }
};
}  // namespace __emu
#define __syncwarp(...) (__emu::SyncwarpAt{__FILE__, __LINE__}(__VA_ARGS__))
#define __shfl_sync(m, v, ...) __emu::shfl(__emu::W_SHFL_IDX, __FILE__, __LINE__, m, v, __VA_ARGS__)
#define __shfl_up_sync(m, v, ...) __emu::shfl(__emu::W_SHFL_UP, __FILE__, __LINE__, m, v, __VA_ARGS__)
#define __shfl_down_sync(m, v, ...) __emu::shfl(__emu::W_SHFL_DOWN, __FILE__, __LINE__, m, v, __VA_ARGS__)
#define __shfl_xor_sync(m, v, ...) __emu::shfl(__emu::W_SHFL_XOR, __FILE__, __LINE__, m, v, __VA_ARGS__)
#define __ballot_sync(m, p) \
    ((unsigned)__emu::warp_op(__emu::W_BALLOT, __FILE__, __LINE__, m, (p) ? 1 : 0, 0, 32))
#define __any_sync(m, p) ((int)__emu::warp_op(__emu::W_ANY, __FILE__, __LINE__, m, (p) ? 1 : 0, 0, 32))
#define __all_sync(m, p) ((int)__emu::warp_op(__emu::W_ALL, __FILE__, __LINE__, m, (p) ? 1 : 0, 0, 32))
#define __activemask() (__emu::activemask())

// Real fences: the threads of one block run one at a time, but blocks run on several OS threads.
inline void __threadfence() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
inline void __threadfence_block() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
inline void __nanosleep(unsigned) {}
// __trap() ends the launch with a KernelFault naming the line (on a GPU: an unspecified launch failure).
namespace __emu { [[noreturn]] void trap(const char* file, int line); }
#define __trap() (__emu::trap(__FILE__, __LINE__))
#define __brkpt() (__emu::trap(__FILE__, __LINE__))
inline long long clock64() { return __emu::clock_ticks(); }

// Device printf: collected by the runtime and printed by Python after the launch, like CUDA does
// at synchronisation (and so that it shows up in notebooks and under pytest's capture).
#define printf(...) __emu::device_printf(__VA_ARGS__)

// Shared-memory hooks used by the code emulator.py generates for __shared__ declarations.
template <class T, int ID>
inline T& __emu_shared_var(const char* name, const char* file, int line) {
    static int slot = -1;  // index of this declaration in the runtime's table, set on first use
    return *static_cast<T*>(__emu::shared_get(&slot, sizeof(T), alignof(T), name, file, line));
}
#define __emu_dynamic_shared() (__emu::dynamic_shared())

// ---------------------------------------------------------------------------------------------
// Atomics.  Real atomics (GCC builtins): blocks run on several OS threads at once (runtime.cpp).
// ---------------------------------------------------------------------------------------------
#define __EMU_ATOMIC_INT(T)                                                                              \
    inline T atomicAdd(T* a, T v) { return __atomic_fetch_add(a, v, __ATOMIC_RELAXED); }                 \
    inline T atomicSub(T* a, T v) { return __atomic_fetch_sub(a, v, __ATOMIC_RELAXED); }                 \
    inline T atomicExch(T* a, T v) { return __atomic_exchange_n(a, v, __ATOMIC_RELAXED); }               \
    inline T atomicAnd(T* a, T v) { return __atomic_fetch_and(a, v, __ATOMIC_RELAXED); }                 \
    inline T atomicOr(T* a, T v) { return __atomic_fetch_or(a, v, __ATOMIC_RELAXED); }                   \
    inline T atomicXor(T* a, T v) { return __atomic_fetch_xor(a, v, __ATOMIC_RELAXED); }                 \
    inline T atomicCAS(T* a, T cmp, T v) {                                                               \
        __atomic_compare_exchange_n(a, &cmp, v, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED);              \
        return cmp; /* on failure cmp holds the old value; on success it already equals it */           \
    }                                                                                                    \
    inline T atomicMax(T* a, T v) {                                                                      \
        T old = __atomic_load_n(a, __ATOMIC_RELAXED);                                                    \
        while (old < v && !__atomic_compare_exchange_n(a, &old, v, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {} \
        return old;                                                                                      \
    }                                                                                                    \
    inline T atomicMin(T* a, T v) {                                                                      \
        T old = __atomic_load_n(a, __ATOMIC_RELAXED);                                                    \
        while (old > v && !__atomic_compare_exchange_n(a, &old, v, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {} \
        return old;                                                                                      \
    }
__EMU_ATOMIC_INT(int)
__EMU_ATOMIC_INT(unsigned int)
__EMU_ATOMIC_INT(unsigned long long)
__EMU_ATOMIC_INT(long long)
#undef __EMU_ATOMIC_INT

// Floating-point atomics are a compare-and-swap loop on the bit pattern, as on older GPUs.
template <class F, class U>
inline F __emu_atomic_float_update(F* a, F v, int op) {
    U* p = reinterpret_cast<U*>(a);
    U old_bits = __atomic_load_n(p, __ATOMIC_RELAXED);
    for (;;) {
        F old_val, new_val;
        std::memcpy(&old_val, &old_bits, sizeof(F));
        if (op == 0) new_val = old_val + v;
        else if (op == 1) new_val = (old_val >= v || std::isnan(v)) ? old_val : v;  // max
        else if (op == 2) new_val = (old_val <= v || std::isnan(v)) ? old_val : v;  // min
        else new_val = v;                                                          // exchange
        U new_bits;
        std::memcpy(&new_bits, &new_val, sizeof(F));
        if (__atomic_compare_exchange_n(p, &old_bits, new_bits, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED))
            return old_val;
    }
}
inline float atomicAdd(float* a, float v) { return __emu_atomic_float_update<float, uint32_t>(a, v, 0); }
inline double atomicAdd(double* a, double v) { return __emu_atomic_float_update<double, uint64_t>(a, v, 0); }
inline float atomicMax(float* a, float v) { return __emu_atomic_float_update<float, uint32_t>(a, v, 1); }
inline float atomicMin(float* a, float v) { return __emu_atomic_float_update<float, uint32_t>(a, v, 2); }
inline float atomicExch(float* a, float v) { return __emu_atomic_float_update<float, uint32_t>(a, v, 3); }
inline unsigned int atomicInc(unsigned int* a, unsigned int limit) {
    unsigned int old = __atomic_load_n(a, __ATOMIC_RELAXED);
    while (!__atomic_compare_exchange_n(a, &old, old >= limit ? 0u : old + 1u, true, __ATOMIC_RELAXED,
                                        __ATOMIC_RELAXED)) {}
    return old;
}
inline unsigned int atomicDec(unsigned int* a, unsigned int limit) {
    unsigned int old = __atomic_load_n(a, __ATOMIC_RELAXED);
    while (!__atomic_compare_exchange_n(a, &old, (old == 0u || old > limit) ? limit : old - 1u, true,
                                        __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {}
    return old;
}
#define atomicAdd_block atomicAdd
#define atomicAdd_system atomicAdd

// ---------------------------------------------------------------------------------------------
// Math: CUDA's fast intrinsics are the ordinary functions here; results agree with the GPU to a
// few ulp (the GPU's __expf etc. are less accurate than these, not more).
// ---------------------------------------------------------------------------------------------
template <class A, class B>
inline typename std::common_type<A, B>::type min(A a, B b) { return b < a ? b : a; }
template <class A, class B>
inline typename std::common_type<A, B>::type max(A a, B b) { return a < b ? b : a; }
inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
inline double rsqrt(double x) { return 1.0 / sqrt(x); }
inline float rcbrtf(float x) { return 1.0f / cbrtf(x); }
inline float __expf(float x) { return expf(x); }
inline float __exp10f(float x) { return powf(10.0f, x); }
inline float __logf(float x) { return logf(x); }
inline float __log2f(float x) { return log2f(x); }
inline float __log10f(float x) { return log10f(x); }
inline float __sinf(float x) { return sinf(x); }
inline float __cosf(float x) { return cosf(x); }
inline float __tanf(float x) { return tanf(x); }
inline void __sincosf(float x, float* s, float* c) { *s = sinf(x); *c = cosf(x); }
inline float __powf(float x, float y) { return powf(x, y); }
inline float __fdividef(float a, float b) { return a / b; }
inline float fdividef(float a, float b) { return a / b; }
inline float __frcp_rn(float x) { return 1.0f / x; }
inline float __fsqrt_rn(float x) { return sqrtf(x); }
inline float __frsqrt_rn(float x) { return 1.0f / sqrtf(x); }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __fmaf_rn(float a, float b, float c) { return fmaf(a, b, c); }
inline double __fma_rn(double a, double b, double c) { return fma(a, b, c); }
inline float __saturatef(float x) { return x != x ? 0.0f : (x < 0.0f ? 0.0f : (x > 1.0f ? 1.0f : x)); }
inline int __float2int_rn(float x) { return (int)nearbyintf(x); }
inline int __float2int_rz(float x) { return (int)x; }
inline int __float2int_rd(float x) { return (int)floorf(x); }
inline int __float2int_ru(float x) { return (int)ceilf(x); }
inline unsigned __float2uint_rn(float x) { return (unsigned)nearbyintf(x); }
inline float __int2float_rn(int x) { return (float)x; }
inline float __uint2float_rn(unsigned x) { return (float)x; }
inline float __double2float_rn(double x) { return (float)x; }
inline int __float_as_int(float x) { int i; std::memcpy(&i, &x, 4); return i; }
inline unsigned __float_as_uint(float x) { unsigned i; std::memcpy(&i, &x, 4); return i; }
inline float __int_as_float(int i) { float x; std::memcpy(&x, &i, 4); return x; }
inline float __uint_as_float(unsigned i) { float x; std::memcpy(&x, &i, 4); return x; }
inline long long __double_as_longlong(double x) { long long i; std::memcpy(&i, &x, 8); return i; }
inline double __longlong_as_double(long long i) { double x; std::memcpy(&x, &i, 8); return x; }
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz((unsigned)x); }
inline int __clzll(long long x) { return x == 0 ? 64 : __builtin_clzll((unsigned long long)x); }
inline int __ffs(int x) { return __builtin_ffs(x); }
inline int __ffsll(long long x) { return __builtin_ffsll(x); }
inline unsigned __brev(unsigned x) {
    x = ((x >> 1) & 0x55555555u) | ((x & 0x55555555u) << 1);
    x = ((x >> 2) & 0x33333333u) | ((x & 0x33333333u) << 2);
    x = ((x >> 4) & 0x0F0F0F0Fu) | ((x & 0x0F0F0F0Fu) << 4);
    return __builtin_bswap32(x);
}
inline int __mul24(int a, int b) { return a * b; }
inline unsigned __umul24(unsigned a, unsigned b) { return a * b; }
inline int __mulhi(int a, int b) { return (int)(((long long)a * b) >> 32); }
inline unsigned __umulhi(unsigned a, unsigned b) { return (unsigned)(((unsigned long long)a * b) >> 32); }
template <class T>
inline T __ldg(const T* p) { return *p; }
template <class T>
inline T __ldcs(const T* p) { return *p; }
template <class T>
inline void __stcs(T* p, T v) { *p = v; }

// ---------------------------------------------------------------------------------------------
// __half and __nv_bfloat16: 16-bit storage, arithmetic in float, conversions rounded to nearest
// even exactly as the GPU's cvt.rn instructions (and numpy's astype(np.float16)) do.
// ---------------------------------------------------------------------------------------------
namespace __emu {
inline uint16_t float_to_half_bits(float f) {
    uint32_t x;
    std::memcpy(&x, &f, 4);
    const uint32_t sign = (x >> 16) & 0x8000u;
    const uint32_t ax = x & 0x7fffffffu;
    if (ax > 0x7f800000u) return 0x7fffu;             // NaN (CUDA's canonical half NaN)
    if (ax >= 0x477ff000u) return sign | 0x7c00u;     // >= 65520 rounds to infinity
    if (ax >= 0x38800000u) {                          // normal half: >= 2^-14
        uint32_t h = ((ax >> 23) - 112u) << 10 | ((ax >> 13) & 0x3ffu);
        const uint32_t rem = ax & 0x1fffu;            // the 13 mantissa bits dropped
        if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) ++h;  // carry may bump the exponent: fine
        return (uint16_t)(sign | h);
    }
    if (ax <= 0x33000000u) return (uint16_t)sign;     // <= 2^-25 (half of the smallest subnormal): 0
    // Subnormal half: count in units of 2^-24.
    const uint32_t mant = (ax & 0x7fffffu) | 0x800000u;
    const uint32_t shift = 126u - (ax >> 23);         // 14..24
    uint32_t h = mant >> shift;
    const uint32_t rem = mant & ((1u << shift) - 1u), halfway = 1u << (shift - 1u);
    if (rem > halfway || (rem == halfway && (h & 1u))) ++h;
    return (uint16_t)(sign | h);
}
inline float half_bits_to_float(uint16_t h) {
    const uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    const uint32_t exp = (h >> 10) & 0x1fu, mant = h & 0x3ffu;
    uint32_t x;
    if (exp == 0x1fu) x = sign | 0x7f800000u | (mant << 13);           // inf / NaN
    else if (exp != 0) x = sign | ((exp + 112u) << 23) | (mant << 13);  // normal
    else if (mant == 0) x = sign;                                        // zero
    else {                                                               // subnormal: exact in float
        float f = (float)mant * 5.9604644775390625e-08f;                 // mant * 2^-24
        std::memcpy(&x, &f, 4);
        x |= sign;
    }
    float f;
    std::memcpy(&f, &x, 4);
    return f;
}
inline uint16_t float_to_bf16_bits(float f) {
    uint32_t x;
    std::memcpy(&x, &f, 4);
    if ((x & 0x7fffffffu) > 0x7f800000u) return 0x7fffu;  // NaN
    x += 0x7fffu + ((x >> 16) & 1u);                      // round to nearest, ties to even
    return (uint16_t)(x >> 16);
}
inline float bf16_bits_to_float(uint16_t b) {
    uint32_t x = (uint32_t)b << 16;
    float f;
    std::memcpy(&f, &x, 4);
    return f;
}
}  // namespace __emu

#define __EMU_HALF_TYPE(H, TO_BITS, FROM_BITS)                                                          \
    struct __attribute__((aligned(2))) H {                                                              \
        unsigned short __x;                                                                             \
        H() = default; /* trivial, so __shared__ H buf[32] is plain storage */                         \
        H(float f) : __x(TO_BITS(f)) {}                                                                 \
        H(double f) : __x(TO_BITS((float)f)) {}                                                         \
        H(int i) : __x(TO_BITS((float)i)) {}                                                            \
        operator float() const { return FROM_BITS(__x); }                                               \
        H& operator+=(H o) { return *this = H(float(*this) + float(o)); }                               \
        H& operator-=(H o) { return *this = H(float(*this) - float(o)); }                               \
        H& operator*=(H o) { return *this = H(float(*this) * float(o)); }                               \
        H& operator/=(H o) { return *this = H(float(*this) / float(o)); }                               \
    };                                                                                                  \
    inline H operator+(H a, H b) { return H(float(a) + float(b)); }                                    \
    inline H operator-(H a, H b) { return H(float(a) - float(b)); }                                    \
    inline H operator*(H a, H b) { return H(float(a) * float(b)); }                                    \
    inline H operator/(H a, H b) { return H(float(a) / float(b)); }                                    \
    inline H operator-(H a) { H r; r.__x = a.__x ^ 0x8000u; return r; }                                \
    inline bool operator==(H a, H b) { return float(a) == float(b); }                                  \
    inline bool operator!=(H a, H b) { return float(a) != float(b); }                                  \
    inline bool operator<(H a, H b) { return float(a) < float(b); }                                    \
    inline bool operator>(H a, H b) { return float(a) > float(b); }                                    \
    inline bool operator<=(H a, H b) { return float(a) <= float(b); }                                  \
    inline bool operator>=(H a, H b) { return float(a) >= float(b); }                                  \
    inline H __hadd(H a, H b) { return a + b; }                                                         \
    inline H __hsub(H a, H b) { return a - b; }                                                         \
    inline H __hmul(H a, H b) { return a * b; }                                                         \
    inline H __hdiv(H a, H b) { return a / b; }                                                         \
    inline H __hneg(H a) { return -a; }                                                                 \
    inline H __habs(H a) { H r; r.__x = a.__x & 0x7fffu; return r; }                                   \
    inline H __hfma(H a, H b, H c) { return H(fmaf(float(a), float(b), float(c))); }                    \
    inline H __hmax(H a, H b) { return H(fmaxf(float(a), float(b))); }                                 \
    inline H __hmin(H a, H b) { return H(fminf(float(a), float(b))); }                                 \
    inline bool __heq(H a, H b) { return a == b; }                                                      \
    inline bool __hne(H a, H b) { return a != b; }                                                      \
    inline bool __hlt(H a, H b) { return a < b; }                                                       \
    inline bool __hle(H a, H b) { return a <= b; }                                                      \
    inline bool __hgt(H a, H b) { return a > b; }                                                       \
    inline bool __hge(H a, H b) { return a >= b; }                                                      \
    inline bool __hisnan(H a) { return float(a) != float(a); }                                          \
    inline H hexp(H a) { return H(expf(float(a))); }                                                    \
    inline H hlog(H a) { return H(logf(float(a))); }                                                    \
    inline H hsqrt(H a) { return H(sqrtf(float(a))); }                                                  \
    inline H hrsqrt(H a) { return H(1.0f / sqrtf(float(a))); }                                          \
    inline H htanh(H a) { return H(tanhf(float(a))); }

__EMU_HALF_TYPE(__half, __emu::float_to_half_bits, __emu::half_bits_to_float)
__EMU_HALF_TYPE(__nv_bfloat16, __emu::float_to_bf16_bits, __emu::bf16_bits_to_float)
#undef __EMU_HALF_TYPE
typedef __half half;
typedef __nv_bfloat16 nv_bfloat16;

// __half2 and __nv_bfloat162: two 16-bit values moved and computed together.  Each lane's arithmetic is
// the scalar type's (computed in float, rounded to nearest even), which is what the GPU's paired
// instructions give.  The same names are overloaded for both types, as in cuda_fp16.h / cuda_bf16.h.
#define __EMU_HALF2_TYPE(H2, H)                                                                         \
    struct __attribute__((aligned(4))) H2 {                                                             \
        H x, y;                                                                                         \
        H2() = default; /* trivial, so it can live in __shared__ arrays */                              \
        H2(H a, H b) : x(a), y(b) {}                                                                    \
        H2& operator+=(H2 o) { x += o.x; y += o.y; return *this; }                                      \
        H2& operator-=(H2 o) { x -= o.x; y -= o.y; return *this; }                                      \
        H2& operator*=(H2 o) { x *= o.x; y *= o.y; return *this; }                                      \
        H2& operator/=(H2 o) { x /= o.x; y /= o.y; return *this; }                                      \
    };                                                                                                  \
    inline H2 operator+(H2 a, H2 b) { return H2(a.x + b.x, a.y + b.y); }                                \
    inline H2 operator-(H2 a, H2 b) { return H2(a.x - b.x, a.y - b.y); }                                \
    inline H2 operator*(H2 a, H2 b) { return H2(a.x * b.x, a.y * b.y); }                                \
    inline H2 operator/(H2 a, H2 b) { return H2(a.x / b.x, a.y / b.y); }                                \
    inline H2 operator-(H2 a) { return H2(-a.x, -a.y); }                                                \
    inline bool operator==(H2 a, H2 b) { return a.x == b.x && a.y == b.y; }                             \
    inline bool operator!=(H2 a, H2 b) { return !(a == b); }                                            \
    inline H2 __hadd2(H2 a, H2 b) { return a + b; }                                                     \
    inline H2 __hsub2(H2 a, H2 b) { return a - b; }                                                     \
    inline H2 __hmul2(H2 a, H2 b) { return a * b; }                                                     \
    inline H2 __h2div(H2 a, H2 b) { return a / b; }                                                     \
    inline H2 __hneg2(H2 a) { return -a; }                                                              \
    inline H2 __habs2(H2 a) { return H2(__habs(a.x), __habs(a.y)); }                                    \
    inline H2 __hfma2(H2 a, H2 b, H2 c) { return H2(__hfma(a.x, b.x, c.x), __hfma(a.y, b.y, c.y)); }    \
    inline H2 __hmax2(H2 a, H2 b) { return H2(__hmax(a.x, b.x), __hmax(a.y, b.y)); }                    \
    inline H2 __hmin2(H2 a, H2 b) { return H2(__hmin(a.x, b.x), __hmin(a.y, b.y)); }                    \
    inline H2 __hadd2_sat(H2 a, H2 b) {                                                                 \
        return H2(H(__saturatef(float(a.x + b.x))), H(__saturatef(float(a.y + b.y))));                  \
    }                                                                                                   \
    inline H2 __hmul2_sat(H2 a, H2 b) {                                                                 \
        return H2(H(__saturatef(float(a.x * b.x))), H(__saturatef(float(a.y * b.y))));                  \
    }                                                                                                   \
    inline H2 __hfma2_sat(H2 a, H2 b, H2 c) {                                                           \
        const H2 r = __hfma2(a, b, c);                                                                  \
        return H2(H(__saturatef(float(r.x))), H(__saturatef(float(r.y))));                              \
    }                                                                                                   \
    inline bool __hbeq2(H2 a, H2 b) { return a.x == b.x && a.y == b.y; }                                \
    inline H2 __heq2(H2 a, H2 b) { return H2(H(a.x == b.x ? 1.0f : 0.0f), H(a.y == b.y ? 1.0f : 0.0f)); } \
    inline H2 __hlt2(H2 a, H2 b) { return H2(H(a.x < b.x ? 1.0f : 0.0f), H(a.y < b.y ? 1.0f : 0.0f)); }   \
    inline H2 __hgt2(H2 a, H2 b) { return H2(H(a.x > b.x ? 1.0f : 0.0f), H(a.y > b.y ? 1.0f : 0.0f)); }   \
    inline H2 __lowhigh2highlow(H2 a) { return H2(a.y, a.x); }                                          \
    inline float __low2float(H2 a) { return float(a.x); }                                               \
    inline float __high2float(H2 a) { return float(a.y); }                                              \
    inline H2 h2exp(H2 a) { return H2(hexp(a.x), hexp(a.y)); }                                          \
    inline H2 h2log(H2 a) { return H2(hlog(a.x), hlog(a.y)); }                                          \
    inline H2 h2sqrt(H2 a) { return H2(hsqrt(a.x), hsqrt(a.y)); }                                       \
    inline H2 h2rsqrt(H2 a) { return H2(hrsqrt(a.x), hrsqrt(a.y)); }
__EMU_HALF2_TYPE(__half2, __half)
__EMU_HALF2_TYPE(__nv_bfloat162, __nv_bfloat16)
#undef __EMU_HALF2_TYPE
typedef __half2 half2;
typedef __nv_bfloat162 nv_bfloat162;

inline __half __float2half(float f) { return __half(f); }
inline __half __float2half_rn(float f) { return __half(f); }
inline float __half2float(__half h) { return float(h); }
inline __half __int2half_rn(int i) { return __half((float)i); }
inline int __half2int_rn(__half h) { return (int)nearbyintf(float(h)); }
inline unsigned short __half_as_ushort(__half h) { return h.__x; }
inline __half __ushort_as_half(unsigned short u) { __half h; h.__x = u; return h; }
inline short __half_as_short(__half h) { return (short)h.__x; }
inline __half __short_as_half(short s) { __half h; h.__x = (unsigned short)s; return h; }
inline __half2 make_half2(__half a, __half b) { return __half2(a, b); }
inline __half2 __floats2half2_rn(float a, float b) { return __half2(__half(a), __half(b)); }
inline __half2 __float2half2_rn(float a) { return __half2(__half(a), __half(a)); }
inline __half2 __float22half2_rn(float2 v) { return __half2(__half(v.x), __half(v.y)); }
inline float2 __half22float2(__half2 h) { return float2{float(h.x), float(h.y)}; }
inline __half __low2half(__half2 h) { return h.x; }
inline __half __high2half(__half2 h) { return h.y; }
inline __half2 __low2half2(__half2 h) { return __half2(h.x, h.x); }
inline __half2 __high2half2(__half2 h) { return __half2(h.y, h.y); }
inline __half2 __halves2half2(__half a, __half b) { return __half2(a, b); }
inline __half2 __half2half2(__half a) { return __half2(a, a); }
inline __half2 __lows2half2(__half2 a, __half2 b) { return __half2(a.x, b.x); }
inline __half2 __highs2half2(__half2 a, __half2 b) { return __half2(a.y, b.y); }

inline __nv_bfloat16 __float2bfloat16(float f) { return __nv_bfloat16(f); }
inline __nv_bfloat16 __float2bfloat16_rn(float f) { return __nv_bfloat16(f); }
inline float __bfloat162float(__nv_bfloat16 b) { return float(b); }
inline unsigned short __bfloat16_as_ushort(__nv_bfloat16 b) { return b.__x; }
inline __nv_bfloat16 __ushort_as_bfloat16(unsigned short u) { __nv_bfloat16 b; b.__x = u; return b; }
inline __nv_bfloat162 __floats2bfloat162_rn(float a, float b) { return __nv_bfloat162(__nv_bfloat16(a), __nv_bfloat16(b)); }
inline __nv_bfloat162 __float22bfloat162_rn(float2 v) { return __nv_bfloat162(__nv_bfloat16(v.x), __nv_bfloat16(v.y)); }
inline float2 __bfloat1622float2(__nv_bfloat162 b) { return float2{float(b.x), float(b.y)}; }
inline __nv_bfloat162 make_bfloat162(__nv_bfloat16 a, __nv_bfloat16 b) { return __nv_bfloat162(a, b); }
inline __nv_bfloat16 __low2bfloat16(__nv_bfloat162 b) { return b.x; }
inline __nv_bfloat16 __high2bfloat16(__nv_bfloat162 b) { return b.y; }
inline __nv_bfloat162 __low2bfloat162(__nv_bfloat162 b) { return __nv_bfloat162(b.x, b.x); }
inline __nv_bfloat162 __high2bfloat162(__nv_bfloat162 b) { return __nv_bfloat162(b.y, b.y); }
inline __nv_bfloat162 __halves2bfloat162(__nv_bfloat16 a, __nv_bfloat16 b) { return __nv_bfloat162(a, b); }
inline __nv_bfloat162 __bfloat162bfloat162(__nv_bfloat16 a) { return __nv_bfloat162(a, a); }
inline __nv_bfloat162 __lows2bfloat162(__nv_bfloat162 a, __nv_bfloat162 b) { return __nv_bfloat162(a.x, b.x); }
inline __nv_bfloat162 __highs2bfloat162(__nv_bfloat162 a, __nv_bfloat162 b) { return __nv_bfloat162(a.y, b.y); }
inline __nv_bfloat162 __float2bfloat162_rn(float a) { return __nv_bfloat162(__nv_bfloat16(a), __nv_bfloat16(a)); }

// ---------------------------------------------------------------------------------------------
// Launch glue used by the generated wrapper: CUDA passes kernel arguments as an array of pointers
// to each argument value (void** args), and so do we.  The kernel's parameter types come from the
// compiler here, so Python can check every argument against the real signature.
// ---------------------------------------------------------------------------------------------
namespace __emu {
enum TypeCode {
    T_END = 0, T_OTHER, T_VOID, T_BOOL, T_I8, T_U8, T_I16, T_U16, T_I32, T_U32, T_I64, T_U64,
    T_F32, T_F64, T_F16, T_BF16, T_PTR
};
struct ParamType { int code, size, elem_code, elem_size, elem_const, elem_lanes; };  // lanes: 2 for float2*
struct KernelInfo {
    const char* name;
    void (*trampoline)(void** args);
    const ParamType* params;  // terminated by a T_END entry
};
// A __constant__ variable, so that the host can fill it (RawModule.get_global).
struct ConstantInfo {
    const char* name;
    void* address;
    size_t size;
    ParamType element;  // of one element of the (possibly multi-dimensional) array
};

template <class T> struct scalar_code {
    static constexpr int value =
        std::is_same<T, bool>::value ? T_BOOL
        : std::is_floating_point<T>::value ? (sizeof(T) == 4 ? T_F32 : sizeof(T) == 8 ? T_F64 : T_OTHER)
        : std::is_integral<T>::value
            ? (sizeof(T) == 1 ? (std::is_signed<T>::value ? T_I8 : T_U8)
               : sizeof(T) == 2 ? (std::is_signed<T>::value ? T_I16 : T_U16)
               : sizeof(T) == 4 ? (std::is_signed<T>::value ? T_I32 : T_U32)
               : (std::is_signed<T>::value ? T_I64 : T_U64))
        : std::is_enum<T>::value ? T_I32
        : T_OTHER;
};
template <> struct scalar_code<__half> { static constexpr int value = T_F16; };
template <> struct scalar_code<__nv_bfloat16> { static constexpr int value = T_BF16; };
template <> struct scalar_code<void> { static constexpr int value = T_VOID; };
// What a pointer points to, seen as an array element: a float4* is an array of floats to numpy.
template <class E> struct elem_of { using type = E; static constexpr int lanes = 1; };
#define __EMU_ELEM(N, T)                                                                                \
    template <> struct elem_of<N##2> { using type = T; static constexpr int lanes = 2; };               \
    template <> struct elem_of<N##3> { using type = T; static constexpr int lanes = 3; };               \
    template <> struct elem_of<N##4> { using type = T; static constexpr int lanes = 4; };
__EMU_ELEM(char, signed char) __EMU_ELEM(uchar, unsigned char) __EMU_ELEM(short, short)
__EMU_ELEM(ushort, unsigned short) __EMU_ELEM(int, int) __EMU_ELEM(uint, unsigned int)
__EMU_ELEM(longlong, long long) __EMU_ELEM(ulonglong, unsigned long long) __EMU_ELEM(float, float)
__EMU_ELEM(double, double)
#undef __EMU_ELEM
template <> struct elem_of<__half2> { using type = __half; static constexpr int lanes = 2; };
template <> struct elem_of<__nv_bfloat162> { using type = __nv_bfloat16; static constexpr int lanes = 2; };

template <class E>
constexpr int size_or_zero() {
    if constexpr (std::is_void<E>::value) return 0;
    else return (int)sizeof(E);
}
template <class P>
constexpr ParamType describe() {
    using T = typename std::remove_cv<typename std::remove_reference<P>::type>::type;
    if constexpr (std::is_pointer<T>::value) {
        using E0 = typename std::remove_cv<typename std::remove_pointer<T>::type>::type;
        using E = typename elem_of<E0>::type;
        return ParamType{T_PTR, (int)sizeof(T), scalar_code<E>::value, size_or_zero<E>(),
                         std::is_const<typename std::remove_pointer<T>::type>::value ? 1 : 0, elem_of<E0>::lanes};
    } else {
        // A vector struct passed by value (float2, double2 = cuDoubleComplex) says what its lanes are.
        using E = typename elem_of<T>::type;
        constexpr int lanes = elem_of<T>::lanes;
        return ParamType{scalar_code<T>::value, (int)sizeof(T), lanes > 1 ? scalar_code<E>::value : 0,
                         lanes > 1 ? size_or_zero<E>() : 0, 0, lanes > 1 ? lanes : 0};
    }
}
template <class... P>
struct signature { static constexpr ParamType params[] = {describe<P>()..., ParamType{T_END, 0, 0, 0, 0, 0}}; };

template <class... P, size_t... I>
inline void call_with(void (*k)(P...), void** a, std::index_sequence<I...>) {
    k(*static_cast<typename std::remove_cv<typename std::remove_reference<P>::type>::type*>(a[I])...);
}
template <class... P>
constexpr const ParamType* params_of(void (*)(P...)) { return signature<P...>::params; }
template <class... P>
constexpr size_t arity(void (*)(P...)) { return sizeof...(P); }
// One trampoline per kernel: unpacks CUDA-style void** arguments and calls the kernel.
template <auto K>
void trampoline(void** a) { call_with(K, a, std::make_index_sequence<arity(K)>{}); }
}  // namespace __emu

#endif  // MINILORA_CUDA_EMU_H
