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
#include <cfenv>
#include <climits>
#include <ctime>
#include <limits>
#include <type_traits>
#include <utility>

#define __CUDA_EMU__ 1
// What nvcc and NVRTC (CuPy's compiler) define for device code, so that `#ifdef __CUDACC__` / version checks in
// the source take their CUDA branch: the toolkit the emulator stands for is CUDA 12.6.  (__CUDACC_RTC__ is not
// defined: NVRTC-only branches declare the standard types themselves, which the host's headers already have.)
#define __CUDACC__ 1
#define __CUDACC_VER_MAJOR__ 12
#define __CUDACC_VER_MINOR__ 6
#define __CUDACC_VER_BUILD__ 0

// ---------------------------------------------------------------------------------------------
// Keywords.  A CUDA thread is a plain C++ call of the kernel function on the CPU.
// ---------------------------------------------------------------------------------------------
#ifndef __EMU_FIND_KERNELS  // emulator.py preprocesses a source once with __global__ kept, to find its kernels
#define __global__
#endif
#define __host__
#ifndef __EMU_FIND_KERNELS  // kept there too: emulator.py lists the __constant__ and __device__ variables
#define __constant__       // for get_global
#define __device__
#define __managed__        // (a __managed__ variable is a __device__ one that host code may also touch)
#endif
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
// __cluster_dims__(x, y, z): emulator.py reads the kernel's cluster shape and hands it to each launch, whose blocks
// then run cluster by cluster, resident together (runtime.cpp, "thread block clusters").
#ifndef __EMU_FIND_KERNELS
#define __cluster_dims__(...)
#endif
// A launch attribute that only constrains registers.
#define __maxnreg__(n)
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
    unsigned atomics;  // atomic operations this thread has done (see atomic_turn)
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
extern dim3 __emu_cluster_dim;  // the kernel's __cluster_dims__ (1x1x1 without: each block is a cluster of one)

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
enum WarpOp { W_SYNC = 0, W_SHFL_IDX, W_SHFL_UP, W_SHFL_DOWN, W_SHFL_XOR, W_BALLOT, W_ANY, W_ALL, W_COALESCE,
              W_MATCH_ANY, W_MATCH_ALL, W_REDUCE_ADD, W_REDUCE_MIN, W_REDUCE_MAX, W_REDUCE_AND, W_REDUCE_OR,
              W_REDUCE_XOR };

int syncthreads(int kind, int pred, const char* file, int line);
unsigned long long warp_op(int op, const char* file, int line, unsigned mask, unsigned long long value,
                           int arg, int width);
unsigned activemask();
// The 32 lanes' pointers shown by each lane of a full warp (a warp collective): the tensor-core instructions'
// operand exchange (runtime.cpp).
void warp_gather(const void* mine, const void** all, const char* what, const char* file, int line);
// racecheck's view of an mbarrier (minilora_mbarrier.h): 0 this thread arrived, 1 the phase completed, 2 this
// thread saw it complete.
void mbarrier_event(const void* bar, int event);
// A split barrier's arrive and wait (cuda::barrier, cooperative groups' barrier_arrive / barrier_wait): the phase
// completes at the wait; racecheck orders what the thread accesses in between by the next barrier only.
void split_barrier_arrive();
void split_barrier_wait(const char* file, int line);
// After a barrier that counts arrivals (cuda::barrier) has released: a BarrierError naming the deadlock a GPU would
// have if threads of the block exited before arriving.
void barrier_arrivals_complete(const char* what, const char* file, int line);
// The sync of a thread_block_tile of more than 32 threads: the `count` threads of the block from rank `first`; each
// shows `mine` to the others (tile_peer(rank)) until its next sync (runtime.cpp).
void tile_sync(int first, int count, const void* mine, const char* file, int line);
const void* tile_peer(int rank);
// PTX's named barrier `id` for `count` threads: bar.sync (wait) or bar.arrive (runtime.cpp).
void named_barrier(int id, int count, bool wait, const char* file, int line);
// bar.sync id without a thread count: barrier `id` for every thread of the block that has not exited.
void named_barrier_of_block(int id, const char* file, int line);
void* shared_get(int* slot, size_t size, size_t align, const char* name, const char* file, int line);
void* dynamic_shared();
void grid_sync(const char* file, int line);  // cooperative_groups::grid_group::sync()
bool cooperative_launch();  // whether this launch is cooperative (grid_group::is_valid())
// Thread block clusters (runtime.cpp): the cluster barrier (barrier.cluster.arrive/wait, cluster.sync()) and
// distributed shared memory (cluster.map_shared_rank, query_shared_rank, mapa + ld/st.shared::cluster).
void cluster_arrive(bool relaxed, const char* file, int line);
void cluster_wait(const char* file, int line);
void cluster_sync(const char* file, int line);
void* map_shared_rank(const void* p, unsigned rank, const char* file, int line);
unsigned shared_rank_of(const void* p, const char* file, int line);
void* cluster_window_ptr(unsigned long long addr, size_t bytes, const char* file, int line);
namespace cluster {  // the block's place in its cluster, from blockIdx and __cluster_dims__ (PTX's %cluster_* registers)
inline dim3 dims() { return __emu_cluster_dim; }
inline unsigned blocks() { return __emu_cluster_dim.x * __emu_cluster_dim.y * __emu_cluster_dim.z; }
inline dim3 block_index() {
    return dim3(blockIdx.x % __emu_cluster_dim.x, blockIdx.y % __emu_cluster_dim.y,
                blockIdx.z % __emu_cluster_dim.z);
}
inline unsigned block_rank() {
    const dim3 b = block_index();
    return (b.z * __emu_cluster_dim.y + b.y) * __emu_cluster_dim.x + b.x;
}
inline dim3 cluster_index() {  // %clusterid: which cluster of the grid
    return dim3(blockIdx.x / __emu_cluster_dim.x, blockIdx.y / __emu_cluster_dim.y,
                blockIdx.z / __emu_cluster_dim.z);
}
// A .shared::cluster address: the rank + 1 of the block above a .shared window address (runtime.cpp's windows).
constexpr int kRankShift = 27;
inline unsigned long long window_of_rank(unsigned long long window, unsigned rank) {
    return (window & ((1ull << kRankShift) - 1)) | ((rank + 1ull) << kRankShift);
}
inline unsigned rank_of_window(unsigned long long window) {
    const unsigned high = unsigned(window >> kRankShift);
    return high ? high - 1 : block_rank();
}
}  // namespace cluster
[[noreturn]] void assert_fail(const char* expr, const char* file, int line);
[[noreturn]] void device_fault(const char* what, const char* file, int line);  // a misuse, named
// cooperative_groups::tiled_partition(group, n) with n not a power of two in 1..32: CUDA's header traps.
[[noreturn]] void bad_runtime_tile(unsigned n, const char* file, int line);
int device_printf(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
long long clock_ticks();
// Asynchronous global -> shared copies (runtime.cpp, "asynchronous copies"): recorded when issued, landed by a wait.
void async_copy(void* dst, const void* src, size_t bytes, size_t src_bytes, size_t align, const char* file,
                int line);
void async_commit();
void async_wait(int pending);  // land the oldest committed groups until at most `pending` remain
int async_pending();           // committed groups still in flight
// Shared-memory window addresses (what PTX calls a .shared address; runtime.cpp, "shared-memory windows").
unsigned long long shared_window_of(const void* p, const char* file, int line);
void* shared_window_ptr(unsigned long long addr, size_t bytes, const char* file, int line);

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
// cooperative_groups' shuffles (tile.shfl, shfl_xor, ... and cg::reduce over them) take any trivially copyable
// value, as CUDA's, which splits a large one into words: here 8 bytes per warp shuffle, in order.
template <class T>
inline T shfl_any(int op, const char* file, int line, unsigned mask, T v, int arg, int width = 32) {
    static_assert(std::is_trivially_copyable<T>::value, "cooperative_groups shuffles move trivially copyable values");
    unsigned char bytes[sizeof(T)];
    std::memcpy(bytes, &v, sizeof(T));
    for (size_t at = 0; at < sizeof(T); at += 8) {
        const size_t n = sizeof(T) - at < 8 ? sizeof(T) - at : 8;
        unsigned long long chunk = 0;
        std::memcpy(&chunk, bytes + at, n);
        chunk = warp_op(op, file, line, mask, chunk, arg, width);
        std::memcpy(bytes + at, &chunk, n);
    }
    T r = v;
    std::memcpy(&r, bytes, sizeof(T));
    return r;
}
}  // namespace __emu
// CUDA's __nv_aligned_device_malloc(size, align): device-heap memory on a power-of-two boundary, freed by free();
// NULL for any other alignment, as CUDA's (runtime.cpp keeps it in the device heap's books).
extern "C" void* emu_aligned_device_malloc(size_t size, size_t align);
inline void* __nv_aligned_device_malloc(size_t size, size_t align) { return emu_aligned_device_malloc(size, align); }

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
// __activemask(): the lanes of the warp that reach this call together (those in another branch, or
// already exited, are not active here), formed as cooperative_groups::coalesced_threads() is.
#define __activemask() ((unsigned)__emu::warp_op(__emu::W_COALESCE, __FILE__, __LINE__, 0xffffffffu, 0, 0, 32))

// __match_any_sync / __match_all_sync (sm_70): lanes are compared by the bits of a 4- or 8-byte value.  A bool, char,
// short or unscoped enum is promoted (+v), as C++ picks CUDA's int overload for it -- and cooperative groups'
// match_any / labeled_partition, templates that pass the value on, take a bool predicate that way.
namespace __emu {
template <class T>
inline unsigned long long match_bits(T v) {
    if constexpr (std::is_enum<T>::value || (std::is_integral<T>::value && sizeof(T) < 4)) {
        return match_bits(+v);
    } else {
        static_assert((sizeof(T) == 4 || sizeof(T) == 8) && std::is_arithmetic<T>::value,
                      "__match_*_sync takes int, unsigned, long long, unsigned long long, float or double");
        unsigned long long bits = 0;
        std::memcpy(&bits, &v, sizeof(T));
        return bits;
    }
}
template <class T>
inline unsigned match_all(const char* file, int line, unsigned mask, T v, int* pred) {
    unsigned r = (unsigned)warp_op(W_MATCH_ALL, file, line, mask, match_bits(v), 0, 32);
    *pred = r != 0;
    return r;
}
// __reduce_*_sync (sm_80) overloads: unsigned and int, as CUDA declares them (min/max compare signed for int).
inline unsigned reduce_u(int op, const char* file, int line, unsigned mask, unsigned v) {
    return (unsigned)warp_op(op, file, line, mask, v, 0, 32);
}
inline int reduce_i(int op, const char* file, int line, unsigned mask, int v) {
    return (int)(unsigned)warp_op(op, file, line, mask, (unsigned)v, 1, 32);
}
struct ReduceAt {
    int op; const char* file; int line;
    unsigned operator()(unsigned mask, unsigned v) const { return reduce_u(op, file, line, mask, v); }
    int operator()(unsigned mask, int v) const { return reduce_i(op, file, line, mask, v); }
};
}  // namespace __emu
#define __match_any_sync(m, v) ((unsigned)__emu::warp_op(__emu::W_MATCH_ANY, __FILE__, __LINE__, m, \
                                                         __emu::match_bits(v), 0, 32))
#define __match_all_sync(m, v, pred) (__emu::match_all(__FILE__, __LINE__, m, v, pred))
#define __reduce_add_sync(m, v) (__emu::ReduceAt{__emu::W_REDUCE_ADD, __FILE__, __LINE__}(m, v))
#define __reduce_min_sync(m, v) (__emu::ReduceAt{__emu::W_REDUCE_MIN, __FILE__, __LINE__}(m, v))
#define __reduce_max_sync(m, v) (__emu::ReduceAt{__emu::W_REDUCE_MAX, __FILE__, __LINE__}(m, v))
#define __reduce_and_sync(m, v) (__emu::reduce_u(__emu::W_REDUCE_AND, __FILE__, __LINE__, m, v))
#define __reduce_or_sync(m, v) (__emu::reduce_u(__emu::W_REDUCE_OR, __FILE__, __LINE__, m, v))
#define __reduce_xor_sync(m, v) (__emu::reduce_u(__emu::W_REDUCE_XOR, __FILE__, __LINE__, m, v))

// A thread that keeps doing atomics may be spinning on a flag, a lock or a ticket that another thread of its block
// sets: on a GPU (Volta on) that thread runs meanwhile, here the spinner would keep the turn forever.  So every
// 64th atomic of a thread, and every __nanosleep (the usual back-off in such loops), gives the block's other
// threads a turn (spin_turn, runtime.cpp); a thread doing ordinary atomics loses nothing but the switch.
namespace __emu {
void spin_turn();
inline void atomic_turn() {
    if ((++fiber_top()->atomics & 63u) == 0) spin_turn();
}
// A GPU's atomic needs its word aligned to the word's size, or the kernel stops (CUDA_ERROR_MISALIGNED_ADDRESS);
// x86's locked instructions would do a misaligned one (a split lock) and the bug would pass unseen here.
[[noreturn]] inline void misaligned_atomic(const void* a, unsigned size, const char* what, const char* file,
                                           int line) {
    char why[256];
    snprintf(why, sizeof why, "%s on a %u-byte word at address %p, which is not a multiple of %u: a GPU stops the "
             "kernel there (CUDA_ERROR_MISALIGNED_ADDRESS: misaligned address)", what, size, a, size);
    device_fault(why, file, line);
}
inline void atomic_at(const void* a, unsigned size, const char* what, const char* file, int line) {
    if (reinterpret_cast<uintptr_t>(a) & (size - 1)) misaligned_atomic(a, size, what, file, line);
    atomic_turn();
}
}  // namespace __emu

// Real fences: the threads of one block run one at a time, but blocks run on several OS threads.
inline void __threadfence() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
inline void __threadfence_block() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
inline void __threadfence_system() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
inline void __nanosleep(unsigned) { __emu::spin_turn(); }
// __trap() ends the launch with a KernelFault naming the line (on a GPU: CUDA_ERROR_ILLEGAL_INSTRUCTION).
namespace __emu { [[noreturn]] void trap(const char* file, int line); }
#define __trap() (__emu::trap(__FILE__, __LINE__))
// PTX's `exit` (inline asm "exit;"): this thread ends here, as if its kernel had returned.
namespace __emu { [[noreturn]] void exit_thread(); }
// nvcc's optimization hints: the condition is not evaluated (nvcc does not run its side effects either).
#define __builtin_assume(...) ((void)sizeof(static_cast<bool>(__VA_ARGS__)))
#define __assume(...) ((void)sizeof(static_cast<bool>(__VA_ARGS__)))
#define __brkpt() (__emu::trap(__FILE__, __LINE__))
inline long long clock64() { return __emu::clock_ticks(); }
// __prof_trigger(counter): a profiler's hardware counter, which nothing reads here
inline void __prof_trigger(int) {}
// Address-space conversions: a shared pointer <-> its 32-bit window address (what cp.async and ld.shared take).
inline size_t __cvta_generic_to_shared(const void* p, const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
    return (size_t)__emu::shared_window_of(p, file, line);
}
inline void* __cvta_shared_to_generic(size_t a, const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
    return __emu::shared_window_ptr(a, 0, file, line);
}
inline size_t __cvta_generic_to_global(const void* p) { return (size_t)p; }
// Address-space predicates: shared is the block's __shared__ arrays and its dynamic shared memory, local a
// thread's stack, constant the file's __constant__ variables (a table the build writes, as they live in
// ordinary memory here: __isGlobal says 1 for them too), grid constant a __grid_constant__ parameter (the build
// makes it a reference to the launch's one copy of the argument, emulator.py _grid_constant_by_reference),
// global the rest.
namespace __emu {
bool is_shared_address(const void* p);
bool is_local_address(const void* p);
bool is_grid_constant_address(const void* p);
}  // namespace __emu
extern "C" unsigned int emu_in_constant_memory(const void* p);  // written into each build's wrapper
inline unsigned int __isConstant(const void* p) { return emu_in_constant_memory(p); }
inline unsigned int __isGridConstant(const void* p) { return __emu::is_grid_constant_address(p); }
inline unsigned int __isShared(const void* p) { return __emu::is_shared_address(p); }
inline unsigned int __isLocal(const void* p) { return __emu::is_local_address(p); }
inline unsigned int __isGlobal(const void* p) {
    return !__emu::is_shared_address(p) && !__emu::is_local_address(p) && !__emu::is_grid_constant_address(p);
}
inline void* __cvta_global_to_generic(size_t a) { return (void*)a; }
// clock() is the C library's (<ctime>, included above): CPU time, as meaningless for speed as clock64().

// Device printf: collected by the runtime and printed by Python after the launch, like CUDA does
// at synchronisation (and so that it shows up in notebooks and under pytest's capture).
#ifndef __EMU_FIND_KERNELS  // so that a kernel called printf is found under its name (and renamed, as abs or exp)
#define printf(...) __emu::device_printf(__VA_ARGS__)
#endif

// Shared-memory hooks used by the code emulator.py generates for __shared__ declarations.
// ALIGN: what the declaration's alignas / __align__ / aligned attribute asks (emulator.py writes it), where it
// exceeds the type's own, so the block's copy lies on that boundary as on a GPU.
namespace __emu {
template <size_t N> constexpr size_t align_arg() { return N; }                  // alignas(128)
template <class T> constexpr size_t align_arg() { return alignof(T); }         // alignas(float4)
constexpr size_t align_max(size_t a, size_t b) { return a < b ? b : a; }
}  // namespace __emu
// A file-scope __shared__ variable: one per module, numbered ID.
template <class T, int ID, size_t ALIGN = 0>
inline T& __emu_shared_var(const char* name, const char* file, int line) {
    static int slot = -1;  // index of this declaration in the runtime's table, set on first use
    return *static_cast<T*>(__emu::shared_get(&slot, sizeof(T), __emu::align_max(ALIGN, alignof(T)), name, file, line));
}
// A __shared__ declaration in a function: `site` is a lambda written at the declaration, whose type is unique to
// that spot in each instantiation of an enclosing template and in each expansion of a macro.  On a GPU each of
// those is a variable of its own (blockReduce<warpReduceMax> and blockReduce<warpReduceSum> do not share their
// array), so each gets its own slot here.
template <class T, size_t ALIGN, class Site>
inline T& __emu_shared_local(Site, const char* name, const char* file, int line) {
    static int slot = -1;  // index of this declaration in the runtime's table, set on first use
    return *static_cast<T*>(__emu::shared_get(&slot, sizeof(T), __emu::align_max(ALIGN, alignof(T)), name, file, line));
}
#define __emu_dynamic_shared() (__emu::dynamic_shared())

// ---------------------------------------------------------------------------------------------
// Atomics.  Real atomics (GCC builtins): blocks run on several OS threads at once (runtime.cpp).
// Exactly CUDA's overloads (programming guide, "Atomic Functions"; sm_XY_atomic_functions.h), each
// from the architecture that introduced it, so that a call nvcc rejects does not compile here either
// and a kernel may define what CUDA lacks (the classic atomicMax for float) without a clash:
//   atomicAdd            int, unsigned, unsigned long long, float; double (sm_60); __half (sm_70);
//                        __half2, __nv_bfloat16, __nv_bfloat162 (sm_80); float2, float4 (sm_90)
//   atomicSub            int, unsigned
//   atomicExch           int, unsigned, unsigned long long, float
//   atomicMin, atomicMax int, unsigned, unsigned long long, long long
//   atomicInc, atomicDec unsigned
//   atomicCAS            int, unsigned, unsigned long long; unsigned short (sm_70)
//   atomicAnd, Or, Xor   int, unsigned, unsigned long long
// ---------------------------------------------------------------------------------------------
// Each takes its caller's file and line (default arguments), so that an atomic on a misaligned word is named there.
#define __EMU_AT const char* __file = __builtin_FILE(), int __line = __builtin_LINE()
#define __EMU_ATOMIC_BITS(T)                                                                             \
    inline T atomicAdd(T* a, T v, __EMU_AT) { __emu::atomic_at(a, sizeof(T), "atomicAdd", __file, __line); return __atomic_fetch_add(a, v, __ATOMIC_RELAXED); } \
    inline T atomicExch(T* a, T v, __EMU_AT) { __emu::atomic_at(a, sizeof(T), "atomicExch", __file, __line); return __atomic_exchange_n(a, v, __ATOMIC_RELAXED); } \
    inline T atomicAnd(T* a, T v, __EMU_AT) { __emu::atomic_at(a, sizeof(T), "atomicAnd", __file, __line); return __atomic_fetch_and(a, v, __ATOMIC_RELAXED); } \
    inline T atomicOr(T* a, T v, __EMU_AT) { __emu::atomic_at(a, sizeof(T), "atomicOr", __file, __line); return __atomic_fetch_or(a, v, __ATOMIC_RELAXED); } \
    inline T atomicXor(T* a, T v, __EMU_AT) { __emu::atomic_at(a, sizeof(T), "atomicXor", __file, __line); return __atomic_fetch_xor(a, v, __ATOMIC_RELAXED); }
#define __EMU_ATOMIC_CAS(T)                                                                              \
    inline T atomicCAS(T* a, T cmp, T v, __EMU_AT) {                                                     \
        __emu::atomic_at(a, sizeof(T), "atomicCAS", __file, __line);                                                                               \
        __atomic_compare_exchange_n(a, &cmp, v, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED);              \
        return cmp; /* on failure cmp holds the old value; on success it already equals it */           \
    }
#define __EMU_ATOMIC_MIN_MAX(T)                                                                          \
    inline T atomicMax(T* a, T v, __EMU_AT) {                                                             \
        __emu::atomic_at(a, sizeof(T), "atomicMax", __file, __line);                                                                                        \
        T old = __atomic_load_n(a, __ATOMIC_RELAXED);                                                    \
        while (old < v && !__atomic_compare_exchange_n(a, &old, v, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {} \
        return old;                                                                                      \
    }                                                                                                    \
    inline T atomicMin(T* a, T v, __EMU_AT) {                                                             \
        __emu::atomic_at(a, sizeof(T), "atomicMin", __file, __line);                                                                                        \
        T old = __atomic_load_n(a, __ATOMIC_RELAXED);                                                    \
        while (old > v && !__atomic_compare_exchange_n(a, &old, v, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {} \
        return old;                                                                                      \
    }
__EMU_ATOMIC_BITS(int) __EMU_ATOMIC_CAS(int) __EMU_ATOMIC_MIN_MAX(int)
__EMU_ATOMIC_BITS(unsigned int) __EMU_ATOMIC_CAS(unsigned int) __EMU_ATOMIC_MIN_MAX(unsigned int)
__EMU_ATOMIC_BITS(unsigned long long) __EMU_ATOMIC_CAS(unsigned long long) __EMU_ATOMIC_MIN_MAX(unsigned long long)
__EMU_ATOMIC_MIN_MAX(long long)
#if __CUDA_ARCH__ >= 700
__EMU_ATOMIC_CAS(unsigned short)
#endif
inline int atomicSub(int* a, int v, __EMU_AT) { __emu::atomic_at(a, 4, "atomicSub", __file, __line); return __atomic_fetch_sub(a, v, __ATOMIC_RELAXED); }
inline unsigned int atomicSub(unsigned int* a, unsigned int v, __EMU_AT) {
    __emu::atomic_at(a, 4, "atomicSub", __file, __line);
    return __atomic_fetch_sub(a, v, __ATOMIC_RELAXED);
}
#undef __EMU_ATOMIC_BITS
#undef __EMU_ATOMIC_CAS
#undef __EMU_ATOMIC_MIN_MAX

// Floating-point atomics are a compare-and-swap loop on the bit pattern, as on older GPUs.
template <class F, class U>
inline F __emu_atomic_float_update(F* a, F v, bool add, const char* what, const char* __file, int __line) {
    __emu::atomic_at(a, sizeof(F), what, __file, __line);
    U* p = reinterpret_cast<U*>(a);
    U old_bits = __atomic_load_n(p, __ATOMIC_RELAXED);
    for (;;) {
        F old_val, new_val = add ? F(0) : v;
        std::memcpy(&old_val, &old_bits, sizeof(F));
        if (add) new_val = old_val + v;
        U new_bits;
        std::memcpy(&new_bits, &new_val, sizeof(F));
        if (__atomic_compare_exchange_n(p, &old_bits, new_bits, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED))
            return old_val;
    }
}
// atomicAdd on a float is PTX's atom.add.f32, which "flushes subnormal inputs and results to sign-preserving zero
// on global memory but supports subnormal inputs and results and doesn't flush them to zero on shared memory" (the
// PTX ISA, atom), whatever -ftz says: a sum in this build's float arithmetic kept them on global memory (and flushed
// them on shared memory under -ftz=true).  The sum itself is defined below, with the float fma that keeps subnormals.
namespace __emu {
inline float atomic_add_f32(float old, float v, bool on_shared_memory);
}
inline float atomicAdd(float* a, float v, __EMU_AT) {
    __emu::atomic_at(a, sizeof(float), "atomicAdd", __file, __line);
    const bool on_shared_memory = __emu::is_shared_address(a);
    uint32_t* p = reinterpret_cast<uint32_t*>(a);
    uint32_t old_bits = __atomic_load_n(p, __ATOMIC_RELAXED);
    for (;;) {
        float old_val, new_val;
        std::memcpy(&old_val, &old_bits, sizeof(float));
        new_val = __emu::atomic_add_f32(old_val, v, on_shared_memory);
        uint32_t new_bits;
        std::memcpy(&new_bits, &new_val, sizeof(float));
        if (__atomic_compare_exchange_n(p, &old_bits, new_bits, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED))
            return old_val;  // (the value as it was in memory, unflushed: atom returns it as read)
    }
}
inline float atomicExch(float* a, float v, __EMU_AT) {
    return __emu_atomic_float_update<float, uint32_t>(a, v, false, "atomicExch", __file, __line);
}
#if __CUDA_ARCH__ >= 600
inline double atomicAdd(double* a, double v, __EMU_AT) {
    return __emu_atomic_float_update<double, uint64_t>(a, v, true, "atomicAdd", __file, __line);
}
#endif
#if __CUDA_ARCH__ >= 900
// sm_90's vector atomicAdd: each lane is atomic on its own (not the vector as one access), as on the GPU; the
// vector's address must be aligned to its whole size, as a vector access's is.
inline float2 atomicAdd(float2* a, float2 v, __EMU_AT) {
    __emu::atomic_at(a, sizeof(float2), "atomicAdd", __file, __line);
    return float2{atomicAdd(&a->x, v.x, __file, __line), atomicAdd(&a->y, v.y, __file, __line)};
}
inline float4 atomicAdd(float4* a, float4 v, __EMU_AT) {
    __emu::atomic_at(a, sizeof(float4), "atomicAdd", __file, __line);
    return float4{atomicAdd(&a->x, v.x, __file, __line), atomicAdd(&a->y, v.y, __file, __line),
                  atomicAdd(&a->z, v.z, __file, __line), atomicAdd(&a->w, v.w, __file, __line)};
}
#endif
inline unsigned int atomicInc(unsigned int* a, unsigned int limit, __EMU_AT) {
    __emu::atomic_at(a, 4, "atomicInc", __file, __line);
    unsigned int old = __atomic_load_n(a, __ATOMIC_RELAXED);
    while (!__atomic_compare_exchange_n(a, &old, old >= limit ? 0u : old + 1u, true, __ATOMIC_RELAXED,
                                        __ATOMIC_RELAXED)) {}
    return old;
}
inline unsigned int atomicDec(unsigned int* a, unsigned int limit, __EMU_AT) {
    __emu::atomic_at(a, 4, "atomicDec", __file, __line);
    unsigned int old = __atomic_load_n(a, __ATOMIC_RELAXED);
    while (!__atomic_compare_exchange_n(a, &old, (old == 0u || old > limit) ? limit : old - 1u, true,
                                        __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {}
    return old;
}
// The _block and _system scopes (sm_60) order memory differently on a GPU; here every atomic is global.
#define atomicAdd_block atomicAdd
#define atomicAdd_system atomicAdd
#define atomicSub_block atomicSub
#define atomicSub_system atomicSub
#define atomicExch_block atomicExch
#define atomicExch_system atomicExch
#define atomicMin_block atomicMin
#define atomicMin_system atomicMin
#define atomicMax_block atomicMax
#define atomicMax_system atomicMax
#define atomicInc_block atomicInc
#define atomicInc_system atomicInc
#define atomicDec_block atomicDec
#define atomicDec_system atomicDec
#define atomicCAS_block atomicCAS
#define atomicCAS_system atomicCAS
#define atomicAnd_block atomicAnd
#define atomicAnd_system atomicAnd
#define atomicOr_block atomicOr
#define atomicOr_system atomicOr
#define atomicXor_block atomicXor
#define atomicXor_system atomicXor

// ---------------------------------------------------------------------------------------------
// Math: CUDA's fast intrinsics are their instruction sequences here, each approximate instruction (ex2.approx,
// lg2.approx, sin.approx, ...) the accurate function: results agree with the GPU's to a few ulp.
// ---------------------------------------------------------------------------------------------
// CUDA's min and max: on integers the smaller / larger in the arguments' common type (min(int, unsigned) compares
// unsigned), on floats fminf / fmaxf as CUDA's math_functions.hpp defines them (a NaN argument gives the other
// one: min(NaN, 1.0f) is 1, where (b < a ? b : a) would give NaN).  The non-template float and double overloads
// take what only converts to a float, such as max(__half, 0.0f) (no common type: nvcc picks max(float, float)).
template <class A, class B, class C = typename std::common_type<A, B>::type>
inline C min(A a, B b) {
    if constexpr (std::is_floating_point<C>::value) return std::fmin((C)a, (C)b);
    else return b < a ? b : a;
}
template <class A, class B, class C = typename std::common_type<A, B>::type>
inline C max(A a, B b) {
    if constexpr (std::is_floating_point<C>::value) return std::fmax((C)a, (C)b);
    else return a < b ? b : a;
}
inline float min(float a, float b) { return fminf(a, b); }
inline float max(float a, float b) { return fmaxf(a, b); }
inline double min(double a, double b) { return fmin(a, b); }
inline double max(double a, double b) { return fmax(a, b); }
inline double min(float a, double b) { return fmin((double)a, b); }
inline double max(float a, double b) { return fmax((double)a, b); }
inline double min(double a, float b) { return fmin(a, (double)b); }
inline double max(double a, float b) { return fmax(a, (double)b); }
inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
inline double rsqrt(double x) { return 1.0 / sqrt(x); }
inline float rcbrtf(float x) { return 1.0f / cbrtf(x); }
// The GPU's fast exponentials and logarithms are one approximate instruction (ex2.approx / lg2.approx) and a float
// multiply, as nvcc compiles them: __expf(x) is ex2.approx(x * 0f3FB8AA3B), the product rounded to float first --
// that rounding is most of __expf's documented 2 + 1.16|x| ulp, and it is reproduced here bit for bit; __logf(x) is
// lg2.approx(x) * ln 2, __powf(x, y) ex2.approx(y * lg2.approx(x)), so a negative base gives NaN there and here.
// The approximate instruction itself is the correctly rounded exp2f / log2f here: the GPU's ex2.approx is within
// 2 ulp of it, lg2.approx within 2^-22 absolute.
namespace __emu {
constexpr float FAST_LOG2_E = 0x1.715476p+0f, FAST_LN_2 = 0x1.62e430p-1f;     // 0f3FB8AA3B, 0f3F317218
constexpr float FAST_LOG2_10 = 0x1.a934f0p+1f, FAST_LOG10_2 = 0x1.344136p-2f;  // 0f40549A78, 0f3E9A209B
}  // namespace __emu
inline float __expf(float x) { return exp2f(x * __emu::FAST_LOG2_E); }
inline float __exp10f(float x) { return exp2f(x * __emu::FAST_LOG2_10); }
inline float __logf(float x) { return log2f(x) * __emu::FAST_LN_2; }
inline float __log2f(float x) { return log2f(x); }
inline float __log10f(float x) { return log2f(x) * __emu::FAST_LOG10_2; }
inline float __sinf(float x) { return sinf(x); }
inline float __cosf(float x) { return cosf(x); }
inline void __sincosf(float x, float* s, float* c) { *s = sinf(x); *c = cosf(x); }
inline float __powf(float x, float y) { return exp2f(y * log2f(x)); }
inline float __tanhf(float x) { return tanhf(x); }  // tanh.approx.f32: within its 2^-10.99 relative error
#ifdef __EMU_FAST_MATH
// --use_fast_math: nvcc compiles expf as __expf, and so on (std::exp and ::exp of a float too).  The link step
// redirects the kernel's calls of these C functions here (minilora/emulator.py's _FAST_MATH); the intrinsics call
// exp2f and log2f, which are not redirected.
extern "C" float __wrap_expf(float x) { return __expf(x); }
extern "C" float __wrap_exp10f(float x) { return __exp10f(x); }
extern "C" float __wrap_logf(float x) { return __logf(x); }
extern "C" float __wrap_log10f(float x) { return __log10f(x); }
extern "C" float __wrap_powf(float x, float y) { return __powf(x, y); }
#endif
// The GPU's fast division (div.approx.f32) is "computed as d = a * (1/b)" (PTX ISA): the reciprocal, then a rounded
// product -- two roundings, so a / b rounded once differs from it in the last bit for about a quarter of all pairs.
// The reciprocal is rcp.approx's, within an ulp of 1/b; here 1/b rounded, the emulator's rule for the approximate
// functions.  It flushes to 0 for 2^126 < |b| < 2^128: the quotient is then 0 (with the product's sign), and inf / b
// is inf * 0 = NaN.
// (constexpr: under --use_fast_math a float `/` is this, in constant expressions too -- see fast_div below.)
namespace __emu {
constexpr float fast_quotient(float a, float b) {
    const float mag = b < 0.0f ? -b : b;
    if (mag > 0x1p126f && mag < __builtin_inff()) return a * (b < 0.0f ? -0.0f : 0.0f);
    return a * (1.0f / b);  // each step rounded to float (SSE; GCC folds constants with the same rounding)
}
}  // namespace __emu
constexpr float __fdividef(float a, float b) { return __emu::fast_quotient(a, b); }
#ifdef __EMU_FAST_MATH
// --use_fast_math: "x/y" is "__fdividef(x,y)" (CUDA C++ Programming Guide, the functions -use_fast_math maps to
// their intrinsics), and so is fdividef, which CUDA documents as the fast divide under that flag.  The emulator's
// build rewrites each `/` of the source as `/ __emu::fast_div() /` (each `/=` as `/= __emu::fast_div() =`:
// minilora/emulator.py, _fast_division): the left operand is wrapped, and the division by the right one looks at
// the operands' types -- a float quotient (after C++'s usual conversions: float / int too) is __fdividef's, any
// other (ints, doubles, __half, a user's vector type) the plain `/` it was.  All constexpr, so `N / 2` still sizes
// an array.  (An integer bit-field divided by a float, `bits /= 2.0f`, does not bind to the reference: a build error.)
namespace __emu {
template <class A, class B>
constexpr bool float_quotient = std::is_arithmetic<A>::value && std::is_arithmetic<B>::value &&
                                std::is_same<decltype(A() / B()), float>::value;
template <class A> struct fast_div_left { A a; };
// (converts to its value: an integer left of `/=` -- a bit-field's too, which binds to no reference -- takes the
// built-in `/=` through it, the plain division it was)
template <class B> struct fast_div_right { B b; constexpr operator B() const { return b; } };
struct fast_div {
    template <class B> constexpr fast_div_right<B> operator=(B b) const { return {b}; }
};
template <class A> constexpr fast_div_left<A> operator/(A a, fast_div) { return {a}; }
template <class A, class B>
__attribute__((always_inline)) constexpr decltype(auto) operator/(fast_div_left<A> left, B b) {
    if constexpr (float_quotient<A, B>) return fast_quotient(float(left.a), float(b));
    else return left.a / b;  // (inlined: a fault here is named at the user's line)
}
template <class X, class B, class = std::enable_if_t<!std::is_integral<X>::value || float_quotient<X, B>>>
__attribute__((always_inline)) constexpr X& operator/=(X& x, fast_div_right<B> right) {
    if constexpr (float_quotient<std::remove_cv_t<X>, B>) x = fast_quotient(float(x), float(right.b));
    else x /= right.b;
    return x;
}
}  // namespace __emu
inline float fdividef(float a, float b) { return __fdividef(a, b); }
#else
inline float fdividef(float a, float b) { return a / b; }
#endif
// CUDA documents __tanf as the fast divide of __sinf() by __cosf(): three approximations, not tan rounded once.
inline float __tanf(float x) { return __fdividef(__sinf(x), __cosf(x)); }
#ifdef __EMU_FAST_MATH
extern "C" float __wrap_tanf(float x) { return __tanf(x); }  // --use_fast_math: tanf is __tanf
#endif
inline float __frcp_rn(float x) { return 1.0f / x; }
inline float __fsqrt_rn(float x) { return sqrtf(x); }
// 1/sqrt(x) rounded once, as CUDA's __frsqrt_rn (1.0f / sqrtf(x) rounds twice: another last bit for ~30% of x);
// in double, whose two roundings leave it within 2^-52 of the exact value, far inside the float's half ulp.
inline float __frsqrt_rn(float x) { return (float)(1.0 / std::sqrt((double)x)); }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __fmaf_rn(float a, float b, float c) { return fmaf(a, b, c); }
inline double __dadd_rn(double a, double b) { return a + b; }
inline double __dsub_rn(double a, double b) { return a - b; }
inline double __dmul_rn(double a, double b) { return a * b; }
inline double __ddiv_rn(double a, double b) { return a / b; }
inline double __drcp_rn(double x) { return 1.0 / x; }
inline double __dsqrt_rn(double x) { return sqrt(x); }

// Directed rounding (_rz toward zero, _rd down, _ru up): the nearest float r, moved one step when the
// exact result lies on the other side of it.  Which side comes from an exact error term (TwoSum for
// +, fma for * / and sqrt); the CPU's rounding mode is never touched.
namespace __emu {
enum Directed { RZ, RD, RU };
inline float directed(float r, double exact_minus_r, Directed mode) {
    if (r != r) return r;
    if (std::isinf(r)) {  // the exact result overflowed (operands are finite: checked by the callers)
        const bool toward_inf = mode == RU ? r > 0 : mode == RD ? r < 0 : false;
        return toward_inf ? r : std::copysign(FLT_MAX, r);
    }
    if (exact_minus_r == 0.0) return r;
    const bool below = exact_minus_r < 0.0;  // the exact result is below r
    const bool step_down = mode == RD ? below : mode == RU ? false : (below && r > 0.0f);
    const bool step_up = mode == RU ? !below : mode == RD ? false : (!below && r < 0.0f);
    if (step_down) return std::nextafterf(r, -INFINITY);
    if (step_up) return std::nextafterf(r, INFINITY);
    return r;
}
inline bool all_finite(float a, float b, float c = 0.0f) { return std::isfinite(a) && std::isfinite(b) && std::isfinite(c); }
// An exact zero sum x + y is -0 when rounding down unless both terms are +0 (IEEE 754: x - x is -0 in
// the round-down mode only; to nearest it is +0 unless both terms are -0).
inline float zero_sum(float r, bool both_plus_zero, Directed m) {
    return m == RD && !both_plus_zero ? -0.0f : r;
}
inline bool is_plus_zero(double x) { return x == 0.0 && !std::signbit(x); }
inline float add_dir(float a, float b, Directed m) {
    const float s = a + b;
    if (!all_finite(a, b) || std::isinf(s)) return std::isinf(s) && all_finite(a, b) ? directed(s, 0, m) : s;
    if (s == 0.0f) return zero_sum(s, is_plus_zero(a) && is_plus_zero(b), m);  // a sum that cancels is exact
    const float bb = s - a;
    return directed(s, (double)((a - (s - bb)) + (b - bb)), m);
}
inline float mul_dir(float a, float b, Directed m) {
    const float p = a * b;
    if (!all_finite(a, b)) return p;
    return directed(p, std::isinf(p) ? 0.0 : (double)a * b - p, m);  // a*b is exact in double
}
inline float div_dir(float a, float b, Directed m) {
    const float q = a / b;
    if (!all_finite(a, b) || b == 0.0f) return q;
    const double rem = (double)a - (double)q * b;  // exact: q*b fits a double and lies close to a
    return directed(q, std::isinf(q) ? 0.0 : (b > 0.0f ? rem : -rem), m);  // the sign of a/b - q
}
inline float sqrt_dir(float x, Directed m) {
    const float s = sqrtf(x);
    if (!(x > 0.0f) || std::isinf(x)) return s;
    return directed(s, (double)x - (double)s * s, m);  // s*s is exact in double: its sign is that of sqrt(x) - s
}
inline float fma_dir(float a, float b, float c, Directed m) {
    const float r = fmaf(a, b, c);
    if (!all_finite(a, b, c)) return r;
    const double p = (double)a * b, s = p + c, bb = s - p, err = (p - (s - bb)) + ((double)c - bb);
    if (std::isinf(r)) return directed(r, 0, m);
    if (s == 0.0 && err == 0.0) return zero_sum(r, is_plus_zero(p) && is_plus_zero(c), m);  // exactly zero
    const double left = s - (double)r;  // exact: r is s rounded
    return directed(r, left != 0.0 ? left : err, m);
}
}  // namespace __emu
#define __EMU_DIRECTED(SUFFIX, MODE)                                                                     \
    inline float __fadd_##SUFFIX(float a, float b) { return __emu::add_dir(a, b, __emu::MODE); }        \
    inline float __fsub_##SUFFIX(float a, float b) { return __emu::add_dir(a, -b, __emu::MODE); }       \
    inline float __fmul_##SUFFIX(float a, float b) { return __emu::mul_dir(a, b, __emu::MODE); }        \
    inline float __fdiv_##SUFFIX(float a, float b) { return __emu::div_dir(a, b, __emu::MODE); }        \
    inline float __frcp_##SUFFIX(float x) { return __emu::div_dir(1.0f, x, __emu::MODE); }              \
    inline float __fsqrt_##SUFFIX(float x) { return __emu::sqrt_dir(x, __emu::MODE); }                  \
    inline float __fmaf_##SUFFIX(float a, float b, float c) { return __emu::fma_dir(a, b, c, __emu::MODE); }
__EMU_DIRECTED(rz, RZ)
__EMU_DIRECTED(rd, RD)
__EMU_DIRECTED(ru, RU)
#undef __EMU_DIRECTED
inline double __fma_rn(double a, double b, double c) { return fma(a, b, c); }

// The double-precision directed roundings run their one operation in the host's matching rounding mode:
// SSE arithmetic, sqrt and glibc's fma round exactly in every mode, as the GPU's .rz/.rd/.ru modifiers.
// (The float ones above use error terms computed in double; a double has no wider type to hold them.)
// The empty asm statements pin the operands and the result inside the window where the mode is set (g++
// assumes round-to-nearest and would otherwise be free to move the arithmetic out of it); no fiber can
// switch in between, so no other CUDA thread ever runs in the directed mode.
// Under -ftz=true on x86-64 the window also clears FTZ and DAZ (doubles keep their subnormals there, as on a GPU),
// and the build leaves this function's instructions as they are (emulator.py, _keep_double_subnormals: its
// ldmxcsr of round-to-nearest would undo the mode); hence noinline, a function of its own in the assembly.
#if defined(__EMU_FTZ) && defined(__x86_64__)
#define __EMU_ROUNDED_AS_INLINE __attribute__((noinline))
#define __EMU_KEEP_DOUBLE_SUBNORMALS(saved_csr)                                                 \
    unsigned saved_csr, __emu_csr;                                                              \
    asm volatile("stmxcsr %0" : "=m"(saved_csr));                                               \
    asm volatile("stmxcsr %0" : "=m"(__emu_csr));                                               \
    __emu_csr &= ~0x8040u;                                                                      \
    asm volatile("ldmxcsr %0" : : "m"(__emu_csr))
#define __EMU_RESTORE_CSR(saved_csr) asm volatile("ldmxcsr %0" : : "m"(saved_csr))
#else
#define __EMU_ROUNDED_AS_INLINE inline
#define __EMU_KEEP_DOUBLE_SUBNORMALS(saved_csr)
#define __EMU_RESTORE_CSR(saved_csr)
#endif
namespace __emu {
template <class Op>
__EMU_ROUNDED_AS_INLINE double rounded_as(int mode, Op op, double a, double b = 0.0, double c = 0.0) {
    const int saved = std::fegetround();
    std::fesetround(mode);
    __EMU_KEEP_DOUBLE_SUBNORMALS(saved_csr);
    asm volatile("" : "+m"(a), "+m"(b), "+m"(c) : : "memory");
    double r = op(a, b, c);
    asm volatile("" : "+m"(r) : : "memory");
    __EMU_RESTORE_CSR(saved_csr);
    std::fesetround(saved);
    return r;
}
}  // namespace __emu
#define __EMU_DIRECTED_DOUBLE(SUFFIX, MODE)                                                              \
    inline double __dadd_##SUFFIX(double a, double b) {                                                 \
        return __emu::rounded_as(MODE, [](double x, double y, double) { return x + y; }, a, b);         \
    }                                                                                                   \
    inline double __dsub_##SUFFIX(double a, double b) {                                                 \
        return __emu::rounded_as(MODE, [](double x, double y, double) { return x - y; }, a, b);         \
    }                                                                                                   \
    inline double __dmul_##SUFFIX(double a, double b) {                                                 \
        return __emu::rounded_as(MODE, [](double x, double y, double) { return x * y; }, a, b);         \
    }                                                                                                   \
    inline double __ddiv_##SUFFIX(double a, double b) {                                                 \
        return __emu::rounded_as(MODE, [](double x, double y, double) { return x / y; }, a, b);         \
    }                                                                                                   \
    inline double __drcp_##SUFFIX(double a) {                                                           \
        return __emu::rounded_as(MODE, [](double x, double, double) { return 1.0 / x; }, a);            \
    }                                                                                                   \
    inline double __dsqrt_##SUFFIX(double a) {                                                          \
        return __emu::rounded_as(MODE, [](double x, double, double) { return std::sqrt(x); }, a);       \
    }                                                                                                   \
    inline double __fma_##SUFFIX(double a, double b, double c) {                                        \
        return __emu::rounded_as(MODE, [](double x, double y, double z) { return std::fma(x, y, z); }, a, b, c); \
    }
__EMU_DIRECTED_DOUBLE(rz, FE_TOWARDZERO)
__EMU_DIRECTED_DOUBLE(rd, FE_DOWNWARD)
__EMU_DIRECTED_DOUBLE(ru, FE_UPWARD)
#undef __EMU_DIRECTED_DOUBLE

// __fmaf_ieee_rn / _rz / _rd / _ru: the float fma that "ignores the -ftz=true compiler flag" (CUDA's Math API):
// subnormal operands and results are kept in every build.  Under -ftz=true its window clears FTZ and DAZ as
// rounded_as's does (and shares that name, so the build leaves its instructions as they are).
namespace __emu {
__EMU_ROUNDED_AS_INLINE float rounded_as_ieee_fmaf(float a, float b, float c, int mode) {
    __EMU_KEEP_DOUBLE_SUBNORMALS(saved_csr);
    asm volatile("" : "+m"(a), "+m"(b), "+m"(c) : : "memory");
    float r = mode < 0 ? fmaf(a, b, c) : fma_dir(a, b, c, (Directed)mode);
    asm volatile("" : "+m"(r) : : "memory");
    __EMU_RESTORE_CSR(saved_csr);
    return r;
}
}  // namespace __emu
inline float __fmaf_ieee_rn(float a, float b, float c) { return __emu::rounded_as_ieee_fmaf(a, b, c, -1); }
namespace __emu {
inline float flushed_to_signed_zero(float x) {  // by integer code: a float compare reads a subnormal as 0 under DAZ
    uint32_t bits;
    std::memcpy(&bits, &x, sizeof bits);
    if ((bits & 0x7f800000u) == 0) bits &= 0x80000000u;
    std::memcpy(&x, &bits, sizeof bits);
    return x;
}
// What the -ftz=true build's float instructions make of a value (flushed to +-0 if subnormal): as an explicit step
// where the emulator's own float code could keep it (a libm function may return a tiny input without arithmetic)
#ifdef __EMU_FTZ
inline float flushed_under_ftz(float x) { return flushed_to_signed_zero(x); }
#else
inline float flushed_under_ftz(float x) { return x; }
#endif
// atom.add.f32's sum (see atomicAdd): x * 1 + y, rounded once with subnormals kept, then flushed where it runs on
// global memory
inline float atomic_add_f32(float old, float v, bool on_shared_memory) {
    if (on_shared_memory) return rounded_as_ieee_fmaf(old, 1.0f, v, -1);
    return flushed_to_signed_zero(rounded_as_ieee_fmaf(flushed_to_signed_zero(old), 1.0f, flushed_to_signed_zero(v), -1));
}
}  // namespace __emu
inline float __fmaf_ieee_rz(float a, float b, float c) { return __emu::rounded_as_ieee_fmaf(a, b, c, __emu::RZ); }
inline float __fmaf_ieee_rd(float a, float b, float c) { return __emu::rounded_as_ieee_fmaf(a, b, c, __emu::RD); }
inline float __fmaf_ieee_ru(float a, float b, float c) { return __emu::rounded_as_ieee_fmaf(a, b, c, __emu::RU); }

// sin(pi x) and cos(pi x), exact at integers and half-integers as CUDA's: x is reduced exactly to
// x = n/2 + f with |f| <= 1/4, then sin/cos of pi*f in double pick the quadrant's value.
namespace __emu {
inline void sincospi(double x, double* s, double* c) {
    if (!std::isfinite(x)) { *s = *c = x - x; return; }  // NaN for +-inf and NaN (no quadrant: (int)NaN is UB)
    const double r = std::fmod(x, 2.0);      // exact
    const double n = std::nearbyint(2.0 * r);  // quadrant, -4..4
    const double f = r - 0.5 * n;              // exact, |f| <= 1/4
    const double sf = std::sin(M_PI * f), cf = std::cos(M_PI * f);
    switch (((int)n % 4 + 4) % 4) {
        case 0: *s = sf; *c = cf; break;
        case 1: *s = cf; *c = -sf; break;
        case 2: *s = -sf; *c = -cf; break;
        default: *s = -cf; *c = sf; break;
    }
    if (*s == 0.0) *s = std::copysign(0.0, x);  // sinpi(+-n) is +-0, as sin
    if (*c == 0.0) *c = 0.0;                     // cospi(n + 1/2) is +0
}
// erfinv and erfcinv by Newton's method in double, each where it converges fast: erf(x) = y for
// |y| <= 1/2 (from the slope at 0), and log erfc(x) = log t for t <= 1/2 (from sqrt(-log t)), so that
// erfcinv keeps its precision for t near 0; |y| > 1/2 is erfcinv(1 - |y|) (exact: Sterbenz).
inline double erfinv_small(double y) {
    double x = y * std::sqrt(M_PI) / 2.0;
    for (int k = 0; k < 8; ++k) {
        const double next = x - (std::erf(x) - y) / (2.0 / std::sqrt(M_PI) * std::exp(-x * x));
        if (next == x) break;
        x = next;
    }
    return x;
}
inline double erfcinv_small(double t) {
    double x = std::sqrt(-std::log(t));
    for (int k = 0; k < 8; ++k) {
        const double e = std::erfc(x);
        if (e == 0.0) break;
        const double next = x + (std::log(e) - std::log(t)) / (2.0 / std::sqrt(M_PI) * std::exp(-x * x) / e);
        if (next == x) break;
        x = next;
    }
    return x;
}
inline double erfinv(double y) {
    if (y != y || y < -1.0 || y > 1.0) return NAN;
    if (y == 1.0 || y == -1.0) return std::copysign(INFINITY, y);
    if (std::fabs(y) <= 0.5) return erfinv_small(y);
    return std::copysign(erfcinv_small(1.0 - std::fabs(y)), y);
}
inline double erfcinv(double t) {  // erfc(x) = t, t in [0, 2]
    if (t != t || t < 0.0 || t > 2.0) return NAN;
    if (t == 0.0) return INFINITY;
    if (t == 2.0) return -INFINITY;
    if (t <= 0.5) return erfcinv_small(t);
    if (t >= 1.5) return -erfcinv_small(2.0 - t);
    return erfinv_small(1.0 - t);
}
}  // namespace __emu
inline void sincospif(float x, float* s, float* c) {
    double sd, cd;
    __emu::sincospi(x, &sd, &cd);
    *s = (float)sd;
    *c = (float)cd;
}
inline void sincospi(double x, double* s, double* c) { __emu::sincospi(x, s, c); }
inline float sinpif(float x) { float s, c; sincospif(x, &s, &c); return s; }
inline float cospif(float x) { float s, c; sincospif(x, &s, &c); return c; }
inline double sinpi(double x) { double s, c; __emu::sincospi(x, &s, &c); return s; }
inline double cospi(double x) { double s, c; __emu::sincospi(x, &s, &c); return c; }
inline float normcdff(float x) { return (float)(0.5 * std::erfc(-(double)x / M_SQRT2)); }
inline double normcdf(double x) { return 0.5 * std::erfc(-x / M_SQRT2); }
inline float erfinvf(float y) { return (float)__emu::erfinv(y); }
inline double erfinv(double y) { return __emu::erfinv(y); }
inline float erfcinvf(float y) { return (float)__emu::erfcinv(y); }
inline double erfcinv(double y) { return __emu::erfcinv(y); }
inline float normcdfinvf(float p) { return (float)(-M_SQRT2 * __emu::erfcinv(2.0 * (double)p)); }
inline double normcdfinv(double p) { return -M_SQRT2 * __emu::erfcinv(2.0 * p); }
#ifdef __EMU_FAST_MATH
inline float exp10f(float x) { return __exp10f(x); }  // (inline, so not reached by the link step's redirection)
#else
inline float exp10f(float x) { return (float)std::pow(10.0, (double)x); }
#endif
// Clamped to [+0.0, 1.0] (libdevice's __nv_saturatef; the SASS .SAT modifier "to (+0.0f,1.0f), with NaN converted
// to +0.0f"): -0 gives +0, as NaN and every negative value do.  Written as x > 0 so that under -ftz=true a subnormal,
// which the GPU's cvt.ftz.sat flushes first, compares as 0 here (DAZ) and gives +0 too.
inline float __saturatef(float x) { return x > 0.0f ? (x > 1.0f ? 1.0f : x) : 0.0f; }
// Float -> integer conversions saturate as the GPU's cvt instructions do: NaN gives 0 and values out of
// range give the type's limit (a plain C++ cast of those is undefined, and x86 gives INT_MIN).
namespace __emu {
template <class I>
inline I saturate_to(double r) {  // r is already an integer value (rounded by the caller's mode)
    if (r != r) return 0;
    if (r <= (double)std::numeric_limits<I>::min()) return std::numeric_limits<I>::min();
    if (r >= (double)std::numeric_limits<I>::max()) return std::numeric_limits<I>::max();
    return (I)r;
}
}  // namespace __emu
inline int __float2int_rn(float x) { return __emu::saturate_to<int>(nearbyint((double)x)); }
inline int __float2int_rz(float x) { return __emu::saturate_to<int>(trunc((double)x)); }
inline int __float2int_rd(float x) { return __emu::saturate_to<int>(floor((double)x)); }
inline int __float2int_ru(float x) { return __emu::saturate_to<int>(ceil((double)x)); }
inline unsigned __float2uint_rn(float x) { return __emu::saturate_to<unsigned>(nearbyint((double)x)); }
inline unsigned __float2uint_rz(float x) { return __emu::saturate_to<unsigned>(trunc((double)x)); }
inline unsigned __float2uint_rd(float x) { return __emu::saturate_to<unsigned>(floor((double)x)); }
inline unsigned __float2uint_ru(float x) { return __emu::saturate_to<unsigned>(ceil((double)x)); }
inline long long __float2ll_rn(float x) { return __emu::saturate_to<long long>(nearbyint((double)x)); }
inline long long __float2ll_rz(float x) { return __emu::saturate_to<long long>(trunc((double)x)); }
inline long long __float2ll_rd(float x) { return __emu::saturate_to<long long>(floor((double)x)); }
inline long long __float2ll_ru(float x) { return __emu::saturate_to<long long>(ceil((double)x)); }
inline int __double2int_rn(double x) { return __emu::saturate_to<int>(nearbyint(x)); }
inline int __double2int_rz(double x) { return __emu::saturate_to<int>(trunc(x)); }
inline long long __double2ll_rn(double x) { return __emu::saturate_to<long long>(nearbyint(x)); }
inline long long __double2ll_rz(double x) { return __emu::saturate_to<long long>(trunc(x)); }
inline float __ll2float_rn(long long x) { return (float)x; }
inline double __int2double_rn(int x) { return (double)x; }
inline float __int2float_rn(int x) { return (float)x; }
inline float __uint2float_rn(unsigned x) { return (float)x; }
inline float __double2float_rn(double x) { return (float)x; }
inline long long __double2ll_rd(double x) { return __emu::saturate_to<long long>(floor(x)); }
inline long long __double2ll_ru(double x) { return __emu::saturate_to<long long>(ceil(x)); }
inline int __double2int_rd(double x) { return __emu::saturate_to<int>(floor(x)); }
inline int __double2int_ru(double x) { return __emu::saturate_to<int>(ceil(x)); }
inline unsigned __double2uint_rn(double x) { return __emu::saturate_to<unsigned>(nearbyint(x)); }
inline unsigned __double2uint_rz(double x) { return __emu::saturate_to<unsigned>(trunc(x)); }
inline unsigned long long __double2ull_rn(double x) { return __emu::saturate_to<unsigned long long>(nearbyint(x)); }
inline unsigned long long __double2ull_rz(double x) { return __emu::saturate_to<unsigned long long>(trunc(x)); }
inline unsigned long long __float2ull_rn(float x) { return __emu::saturate_to<unsigned long long>(nearbyint((double)x)); }
inline unsigned long long __float2ull_rz(float x) { return __emu::saturate_to<unsigned long long>(trunc((double)x)); }
inline double __uint2double_rn(unsigned x) { return (double)x; }
inline double __ll2double_rn(long long x) { return (double)x; }
inline double __ull2double_rn(unsigned long long x) { return (double)x; }
inline float __ull2float_rn(unsigned long long x) { return (float)x; }
// Integer -> float and double -> float with directed rounding: the nearest float, stepped when the exact
// value lies on the other side of it (the difference is exact in __int128 / by Sterbenz's lemma).
namespace __emu {
inline float int_to_float_dir(__int128 i, Directed m) { const float r = (float)i; return directed(r, (double)(i - (__int128)r), m); }
inline float double_to_float_dir(double x, Directed m) {
    const float r = (float)x;
    return std::isinf(x) || x != x ? r : directed(r, std::isinf(r) ? 0.0 : x - (double)r, m);
}
}  // namespace __emu
#define __EMU_TO_FLOAT_DIRECTED(SUFFIX, MODE)                                                            \
    inline float __int2float_##SUFFIX(int x) { return __emu::int_to_float_dir(x, __emu::MODE); }          \
    inline float __uint2float_##SUFFIX(unsigned x) { return __emu::int_to_float_dir(x, __emu::MODE); }    \
    inline float __ll2float_##SUFFIX(long long x) { return __emu::int_to_float_dir(x, __emu::MODE); }     \
    inline float __ull2float_##SUFFIX(unsigned long long x) { return __emu::int_to_float_dir(x, __emu::MODE); } \
    inline float __double2float_##SUFFIX(double x) { return __emu::double_to_float_dir(x, __emu::MODE); }
__EMU_TO_FLOAT_DIRECTED(rz, RZ)
__EMU_TO_FLOAT_DIRECTED(rd, RD)
__EMU_TO_FLOAT_DIRECTED(ru, RU)
#undef __EMU_TO_FLOAT_DIRECTED
// 64-bit integer -> double with directed rounding: the nearest double, stepped as above (the rest is exact in
// __int128); and the float/double -> unsigned conversions rounded down or up, saturating like the others.
namespace __emu {
inline double int_to_double_dir(__int128 i, Directed m) {
    const double r = (double)i;
    const __int128 rest = i - (__int128)r;
    if (rest == 0) return r;
    const bool below = rest < 0;  // the exact value lies below r
    const bool step = m == RD ? below : m == RU ? !below : (below ? r > 0 : r < 0);
    return step ? std::nextafter(r, below ? -INFINITY : INFINITY) : r;
}
}  // namespace __emu
#define __EMU_TO_DOUBLE_DIRECTED(SUFFIX, MODE)                                                           \
    inline double __ll2double_##SUFFIX(long long x) { return __emu::int_to_double_dir(x, __emu::MODE); }  \
    inline double __ull2double_##SUFFIX(unsigned long long x) { return __emu::int_to_double_dir(x, __emu::MODE); }
__EMU_TO_DOUBLE_DIRECTED(rz, RZ)
__EMU_TO_DOUBLE_DIRECTED(rd, RD)
__EMU_TO_DOUBLE_DIRECTED(ru, RU)
#undef __EMU_TO_DOUBLE_DIRECTED
inline unsigned __double2uint_rd(double x) { return __emu::saturate_to<unsigned>(floor(x)); }
inline unsigned __double2uint_ru(double x) { return __emu::saturate_to<unsigned>(ceil(x)); }
inline unsigned long long __double2ull_rd(double x) { return __emu::saturate_to<unsigned long long>(floor(x)); }
inline unsigned long long __double2ull_ru(double x) { return __emu::saturate_to<unsigned long long>(ceil(x)); }
inline unsigned long long __float2ull_rd(float x) { return __emu::saturate_to<unsigned long long>(floor((double)x)); }
inline unsigned long long __float2ull_ru(float x) { return __emu::saturate_to<unsigned long long>(ceil((double)x)); }
inline int __double2hiint(double x) { unsigned long long b; std::memcpy(&b, &x, 8); return (int)(unsigned)(b >> 32); }
inline int __double2loint(double x) { unsigned long long b; std::memcpy(&b, &x, 8); return (int)(unsigned)b; }
inline double __hiloint2double(int hi, int lo) {
    const unsigned long long b = ((unsigned long long)(unsigned)hi << 32) | (unsigned)lo;
    double x;
    std::memcpy(&x, &b, 8);
    return x;
}
// Integer min/max of CUDA's math API, and the vector norms (computed in double: within CUDA's few ulp).
inline unsigned umin(unsigned a, unsigned b) { return a < b ? a : b; }
inline unsigned umax(unsigned a, unsigned b) { return a < b ? b : a; }
inline long long llmin(long long a, long long b) { return a < b ? a : b; }
inline long long llmax(long long a, long long b) { return a < b ? b : a; }
inline unsigned long long ullmin(unsigned long long a, unsigned long long b) { return a < b ? a : b; }
inline unsigned long long ullmax(unsigned long long a, unsigned long long b) { return a < b ? b : a; }
inline float norm3df(float a, float b, float c) { return (float)std::sqrt((double)a * a + (double)b * b + (double)c * c); }
inline float rnorm3df(float a, float b, float c) { return (float)(1.0 / std::sqrt((double)a * a + (double)b * b + (double)c * c)); }
inline float norm4df(float a, float b, float c, float d) {
    return (float)std::sqrt((double)a * a + (double)b * b + (double)c * c + (double)d * d);
}
inline float rnorm4df(float a, float b, float c, float d) {
    return (float)(1.0 / std::sqrt((double)a * a + (double)b * b + (double)c * c + (double)d * d));
}
inline float rhypotf(float a, float b) { return (float)(1.0 / std::hypot((double)a, (double)b)); }
inline float normf(int n, const float* a) {
    double s = 0.0;
    for (int k = 0; k < n; ++k) s += (double)a[k] * a[k];
    return (float)std::sqrt(s);
}
inline float rnormf(int n, const float* a) { return 1.0f / normf(n, a); }
// The double forms of CUDA's norms, reciprocal roots and scaled functions (long double inside: one rounding).
inline double norm3d(double a, double b, double c) { return std::hypot(a, b, c); }
inline double rnorm3d(double a, double b, double c) { return (double)(1.0L / std::hypot((long double)a, (long double)b, (long double)c)); }
inline double norm4d(double a, double b, double c, double d) {
    return (double)std::sqrt((long double)a * a + (long double)b * b + (long double)c * c + (long double)d * d);
}
inline double rnorm4d(double a, double b, double c, double d) {
    return (double)(1.0L / std::sqrt((long double)a * a + (long double)b * b + (long double)c * c + (long double)d * d));
}
inline double rhypot(double a, double b) { return (double)(1.0L / std::hypot((long double)a, (long double)b)); }
inline double norm(int n, const double* a) {
    long double s = 0.0L;
    for (int k = 0; k < n; ++k) s += (long double)a[k] * a[k];
    return (double)std::sqrt(s);
}
inline double rnorm(int n, const double* a) {
    long double s = 0.0L;
    for (int k = 0; k < n; ++k) s += (long double)a[k] * a[k];
    return (double)(1.0L / std::sqrt(s));
}
inline double rcbrt(double x) { return (double)(1.0L / std::cbrt((long double)x)); }
// Modified Bessel functions of the first kind (I0 is even, I1 odd) and the scaled erfc, exp(x^2) erfc(x).
inline double cyl_bessel_i0(double x) { return std::cyl_bessel_i(0.0, std::fabs(x)); }
inline double cyl_bessel_i1(double x) { return x < 0 ? -std::cyl_bessel_i(1.0, -x) : std::cyl_bessel_i(1.0, x); }
inline float cyl_bessel_i0f(float x) { return (float)cyl_bessel_i0(x); }
inline float cyl_bessel_i1f(float x) { return (float)cyl_bessel_i1(x); }
inline double erfcx(double x) {
    if (x != x) return x;
    if (x < 100.0) return (double)(std::exp((long double)x * x) * std::erfc((long double)x));
    const long double r = 1.0L / ((long double)x * x);  // the asymptotic series, where erfc underflows
    return (double)((1.0L - r / 2 + 3 * r * r / 4 - 15 * r * r * r / 8 + 105 * r * r * r * r / 16) /
                    ((long double)x * 1.772453850905516027298167483341145182797549L));
}
inline float erfcxf(float x) { return (float)erfcx(x); }
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
inline unsigned long long __brevll(unsigned long long x) {
    return ((unsigned long long)__brev((unsigned)x) << 32) | __brev((unsigned)(x >> 32));
}
// The low 32 bits of the product of the low 24 bits of a and b (the top 8 bits are ignored: sign-extended
// from bit 23 for __mul24), as the GPU's mul24.lo.
inline int __mul24(int a, int b) {
    const long long x = (int)((unsigned)a << 8) >> 8, y = (int)((unsigned)b << 8) >> 8;
    return (int)(unsigned)(x * y);
}
inline unsigned __umul24(unsigned a, unsigned b) {
    return (unsigned)((unsigned long long)(a & 0xffffffu) * (b & 0xffffffu));
}
inline int __mulhi(int a, int b) { return (int)(((long long)a * b) >> 32); }
inline unsigned __umulhi(unsigned a, unsigned b) { return (unsigned)(((unsigned long long)a * b) >> 32); }
inline long long __mul64hi(long long a, long long b) { return (long long)(((__int128)a * b) >> 64); }
inline unsigned long long __umul64hi(unsigned long long a, unsigned long long b) {
    return (unsigned long long)(((unsigned __int128)a * b) >> 64);
}
// The bit position of the |offset|-th set bit of mask counted from bit base, upwards for offset > 0 and
// downwards for offset < 0 (offset 0: base itself, if set); 0xffffffff when there is none.  (PTX leaves a
// base over 31 undefined; here it finds nothing.)
inline unsigned __fns(unsigned mask, unsigned base, int offset) {
    if (base > 31u) return 0xffffffffu;
    if (offset == 0) return (mask >> base) & 1u ? base : 0xffffffffu;
    long long count = offset > 0 ? offset : -(long long)offset;
    for (int pos = (int)base; pos >= 0 && pos < 32; pos += offset > 0 ? 1 : -1)
        if ((mask >> pos) & 1u && --count == 0) return (unsigned)pos;
    return 0xffffffffu;
}
// Byte n of the result is byte (s >> 4n) & 7 of the eight bytes y:x (x holds bytes 0-3).
inline unsigned __byte_perm(unsigned x, unsigned y, unsigned s) {
    const unsigned long long bytes = ((unsigned long long)y << 32) | x;
    unsigned r = 0;
    for (int n = 0; n < 4; ++n) r |= (unsigned)((bytes >> (8 * ((s >> (4 * n)) & 7u))) & 0xffu) << (8 * n);
    return r;
}
// hi:lo shifted by (shift & 31); _lc/_rc clamp the shift to 32 instead.
inline unsigned __funnelshift_l(unsigned lo, unsigned hi, unsigned shift) {
    return (unsigned)(((((unsigned long long)hi << 32) | lo) << (shift & 31u)) >> 32);
}
inline unsigned __funnelshift_r(unsigned lo, unsigned hi, unsigned shift) {
    return (unsigned)((((unsigned long long)hi << 32) | lo) >> (shift & 31u));
}
inline unsigned __funnelshift_lc(unsigned lo, unsigned hi, unsigned shift) {
    return (unsigned)(((((unsigned long long)hi << 32) | lo) << (shift > 32u ? 32u : shift)) >> 32);
}
inline unsigned __funnelshift_rc(unsigned lo, unsigned hi, unsigned shift) {
    return (unsigned)((((unsigned long long)hi << 32) | lo) >> (shift > 32u ? 32u : shift));
}
inline unsigned __sad(int x, int y, unsigned z) { return (unsigned)(x > y ? (long long)x - y : (long long)y - x) + z; }
inline unsigned __usad(unsigned x, unsigned y, unsigned z) { return (x > y ? x - y : y - x) + z; }
inline int __hadd(int x, int y) { return (int)(((long long)x + y) >> 1); }
inline int __rhadd(int x, int y) { return (int)(((long long)x + y + 1) >> 1); }
inline unsigned __uhadd(unsigned x, unsigned y) { return (unsigned)(((unsigned long long)x + y) >> 1); }
inline unsigned __urhadd(unsigned x, unsigned y) { return (unsigned)(((unsigned long long)x + y + 1) >> 1); }
// Four-way byte dot product plus an accumulator (sm_61): signed bytes for int, unsigned for unsigned.
inline int __dp4a(int a, int b, int c) {
    int r = c;
    for (int n = 0; n < 4; ++n) r += (int)(signed char)(a >> (8 * n)) * (int)(signed char)(b >> (8 * n));
    return r;
}
inline unsigned __dp4a(unsigned a, unsigned b, unsigned c) {
    unsigned r = c;
    for (int n = 0; n < 4; ++n) r += ((a >> (8 * n)) & 0xffu) * ((b >> (8 * n)) & 0xffu);
    return r;
}
// SIMD video intrinsics: each 16-bit (the ...2 forms) or 8-bit (the ...4 forms) part of the operands is a
// lane, read as signed (s) or unsigned (u); a lane's result keeps its low bits (wrap-around) unless the name
// says it saturates (ss: to the signed range, us: to the unsigned range).  __vcmp* lanes are all ones when
// true, __vset* lanes are 1; __vsads/__vsadu return the sum over the lanes.
namespace __emu {
template <int LANES, bool SIGNED>
inline int simd_lane(unsigned x, int i) {
    constexpr int bits = 32 / LANES;
    const unsigned v = (x >> (bits * i)) & ((1u << bits) - 1u);
    return SIGNED ? (int)(v << (32 - bits)) >> (32 - bits) : (int)v;
}
template <int LANES, bool SIGNED, class F>
inline unsigned simd(unsigned a, unsigned b, F f) {
    constexpr int bits = 32 / LANES;
    unsigned r = 0;
    for (int i = 0; i < LANES; ++i)
        r |= ((unsigned)f(simd_lane<LANES, SIGNED>(a, i), simd_lane<LANES, SIGNED>(b, i)) & ((1u << bits) - 1u)) << (bits * i);
    return r;
}
template <int LANES, bool SIGNED>
inline int simd_saturate(int v) {
    constexpr int bits = 32 / LANES;
    const int lo = SIGNED ? -(1 << (bits - 1)) : 0, hi = SIGNED ? (1 << (bits - 1)) - 1 : (1 << bits) - 1;
    return v < lo ? lo : v > hi ? hi : v;
}
template <int LANES, bool SIGNED>
inline unsigned simd_sad(unsigned a, unsigned b) {
    unsigned sum = 0;
    for (int i = 0; i < LANES; ++i) {
        const int d = simd_lane<LANES, SIGNED>(a, i) - simd_lane<LANES, SIGNED>(b, i);
        sum += (unsigned)(d < 0 ? -d : d);
    }
    return sum;
}
}  // namespace __emu
#define __EMU_SIMD(NAME, LANES, SIGNED, EXPR)                                                           \
    inline unsigned NAME(unsigned a, unsigned b) {                                                      \
        return __emu::simd<LANES, SIGNED>(a, b, [](int x, int y) { (void)y; return EXPR; });            \
    }
#define __EMU_SIMD_UNARY(NAME, LANES, EXPR)                                                             \
    inline unsigned NAME(unsigned a) {                                                                  \
        return __emu::simd<LANES, true>(a, 0u, [](int x, int) { return EXPR; });                        \
    }
#define __EMU_SAT(LANES, SIGNED, V) __emu::simd_saturate<LANES, SIGNED>(V)
#define __EMU_SIMD_ALL(N, L)                                                                            \
    __EMU_SIMD(__vadd##N, L, false, x + y)                                                              \
    __EMU_SIMD(__vaddss##N, L, true, __EMU_SAT(L, true, x + y))                                         \
    __EMU_SIMD(__vaddus##N, L, false, __EMU_SAT(L, false, x + y))                                       \
    __EMU_SIMD(__vsub##N, L, false, x - y)                                                              \
    __EMU_SIMD(__vsubss##N, L, true, __EMU_SAT(L, true, x - y))                                         \
    __EMU_SIMD(__vsubus##N, L, false, __EMU_SAT(L, false, x - y))                                       \
    __EMU_SIMD(__vabsdiffs##N, L, true, x > y ? x - y : y - x)                                          \
    __EMU_SIMD(__vabsdiffu##N, L, false, x > y ? x - y : y - x)                                         \
    /* signed: rounded half away from zero, (a + b) >> 1 below zero and (a + b + 1) >> 1 from zero up */ \
    __EMU_SIMD(__vavgs##N, L, true, x + y < 0 ? (x + y) >> 1 : (x + y + 1) >> 1)                       \
    __EMU_SIMD(__vavgu##N, L, false, (x + y + 1) >> 1)                                                  \
    __EMU_SIMD(__vhaddu##N, L, false, (x + y) >> 1)                                                     \
    __EMU_SIMD(__vmaxs##N, L, true, x > y ? x : y)                                                      \
    __EMU_SIMD(__vmaxu##N, L, false, x > y ? x : y)                                                     \
    __EMU_SIMD(__vmins##N, L, true, x < y ? x : y)                                                      \
    __EMU_SIMD(__vminu##N, L, false, x < y ? x : y)                                                     \
    __EMU_SIMD(__vcmpeq##N, L, false, -(x == y))                                                        \
    __EMU_SIMD(__vcmpne##N, L, false, -(x != y))                                                        \
    __EMU_SIMD(__vcmpges##N, L, true, -(x >= y))                                                        \
    __EMU_SIMD(__vcmpgeu##N, L, false, -(x >= y))                                                       \
    __EMU_SIMD(__vcmpgts##N, L, true, -(x > y))                                                         \
    __EMU_SIMD(__vcmpgtu##N, L, false, -(x > y))                                                        \
    __EMU_SIMD(__vcmples##N, L, true, -(x <= y))                                                        \
    __EMU_SIMD(__vcmpleu##N, L, false, -(x <= y))                                                       \
    __EMU_SIMD(__vcmplts##N, L, true, -(x < y))                                                         \
    __EMU_SIMD(__vcmpltu##N, L, false, -(x < y))                                                        \
    __EMU_SIMD(__vseteq##N, L, false, x == y)                                                           \
    __EMU_SIMD(__vsetne##N, L, false, x != y)                                                           \
    __EMU_SIMD(__vsetges##N, L, true, x >= y)                                                           \
    __EMU_SIMD(__vsetgeu##N, L, false, x >= y)                                                          \
    __EMU_SIMD(__vsetgts##N, L, true, x > y)                                                            \
    __EMU_SIMD(__vsetgtu##N, L, false, x > y)                                                           \
    __EMU_SIMD(__vsetles##N, L, true, x <= y)                                                           \
    __EMU_SIMD(__vsetleu##N, L, false, x <= y)                                                          \
    __EMU_SIMD(__vsetlts##N, L, true, x < y)                                                            \
    __EMU_SIMD(__vsetltu##N, L, false, x < y)                                                           \
    __EMU_SIMD_UNARY(__vabs##N, L, x < 0 ? -x : x)                                                      \
    __EMU_SIMD_UNARY(__vabsss##N, L, __EMU_SAT(L, true, x < 0 ? -x : x))                                \
    __EMU_SIMD_UNARY(__vneg##N, L, -x)                                                                  \
    __EMU_SIMD_UNARY(__vnegss##N, L, __EMU_SAT(L, true, -x))                                            \
    inline unsigned __vsads##N(unsigned a, unsigned b) { return __emu::simd_sad<L, true>(a, b); }       \
    inline unsigned __vsadu##N(unsigned a, unsigned b) { return __emu::simd_sad<L, false>(a, b); }
__EMU_SIMD_ALL(2, 2)
__EMU_SIMD_ALL(4, 4)
#undef __EMU_SIMD_ALL
#undef __EMU_SAT
#undef __EMU_SIMD_UNARY
#undef __EMU_SIMD
// DPX (sm_90) min/max family: three-way min/max, add-then-min/max, min/max with ReLU (clamped at 0 from below),
// and __vibmax/__vibmin, which also report whether a won (a >= b for max, a <= b for min).  s32/u32 act on
// one 32-bit integer, s16x2/u16x2 on the two 16-bit halves (each with its own predicate: hi, lo); a + b wraps.
namespace __emu {
template <bool SIGNED, class F>
inline unsigned dpx16x2(unsigned a, unsigned b, unsigned c, F f) {
    unsigned r = 0;
    for (int i = 0; i < 2; ++i)
        r |= ((unsigned)f(simd_lane<2, SIGNED>(a, i), simd_lane<2, SIGNED>(b, i), simd_lane<2, SIGNED>(c, i)) & 0xffffu) << (16 * i);
    return r;
}
template <class T> inline T max3(T a, T b, T c) { return a > b ? (a > c ? a : c) : (b > c ? b : c); }
template <class T> inline T min3(T a, T b, T c) { return a < b ? (a < c ? a : c) : (b < c ? b : c); }
template <class T> inline T relu(T a) { return a > 0 ? a : 0; }
inline int wrap16(int v) { return (int)(short)(unsigned short)v; }  // a + b of two halves, wrapped to 16 bits
}  // namespace __emu
#define __EMU_DPX(OP, PICK)                                                                              \
    inline int __vi##OP##3_s32(int a, int b, int c) { return __emu::PICK##3(a, b, c); }                \
    inline unsigned __vi##OP##3_u32(unsigned a, unsigned b, unsigned c) { return __emu::PICK##3(a, b, c); } \
    inline int __vi##OP##3_s32_relu(int a, int b, int c) { return __emu::relu(__emu::PICK##3(a, b, c)); } \
    inline int __vi##OP##_s32_relu(int a, int b) { return __emu::relu(__emu::PICK##3(a, b, b)); }       \
    inline int __viadd##OP##_s32(int a, int b, int c) {                                                 \
        return __emu::PICK##3((int)((unsigned)a + (unsigned)b), c, c);                                   \
    }                                                                                                   \
    inline unsigned __viadd##OP##_u32(unsigned a, unsigned b, unsigned c) { return __emu::PICK##3(a + b, c, c); } \
    inline int __viadd##OP##_s32_relu(int a, int b, int c) { return __emu::relu(__viadd##OP##_s32(a, b, c)); } \
    inline unsigned __vi##OP##3_s16x2(unsigned a, unsigned b, unsigned c) {                             \
        return __emu::dpx16x2<true>(a, b, c, [](int x, int y, int z) { return __emu::PICK##3(x, y, z); }); \
    }                                                                                                   \
    inline unsigned __vi##OP##3_u16x2(unsigned a, unsigned b, unsigned c) {                             \
        return __emu::dpx16x2<false>(a, b, c, [](int x, int y, int z) { return __emu::PICK##3(x, y, z); }); \
    }                                                                                                   \
    inline unsigned __vi##OP##3_s16x2_relu(unsigned a, unsigned b, unsigned c) {                        \
        return __emu::dpx16x2<true>(a, b, c, [](int x, int y, int z) { return __emu::relu(__emu::PICK##3(x, y, z)); }); \
    }                                                                                                   \
    inline unsigned __vi##OP##_s16x2_relu(unsigned a, unsigned b) { return __vi##OP##3_s16x2_relu(a, b, b); } \
    inline unsigned __viadd##OP##_s16x2(unsigned a, unsigned b, unsigned c) {                           \
        return __emu::dpx16x2<true>(a, b, c, [](int x, int y, int z) { return __emu::PICK##3(__emu::wrap16(x + y), z, z); }); \
    }                                                                                                   \
    inline unsigned __viadd##OP##_u16x2(unsigned a, unsigned b, unsigned c) {                           \
        return __emu::dpx16x2<false>(a, b, c, [](int x, int y, int z) { return __emu::PICK##3((x + y) & 0xffff, z, z); }); \
    }                                                                                                   \
    inline unsigned __viadd##OP##_s16x2_relu(unsigned a, unsigned b, unsigned c) {                      \
        return __emu::dpx16x2<true>(a, b, c, [](int x, int y, int z) {                                  \
            return __emu::relu(__emu::PICK##3(__emu::wrap16(x + y), z, z)); });                          \
    }
__EMU_DPX(max, max)
__EMU_DPX(min, min)
#undef __EMU_DPX
inline int __vibmax_s32(int a, int b, bool* pred) { *pred = a >= b; return a >= b ? a : b; }
inline unsigned __vibmax_u32(unsigned a, unsigned b, bool* pred) { *pred = a >= b; return a >= b ? a : b; }
inline int __vibmin_s32(int a, int b, bool* pred) { *pred = a <= b; return a <= b ? a : b; }
inline unsigned __vibmin_u32(unsigned a, unsigned b, bool* pred) { *pred = a <= b; return a <= b ? a : b; }
#define __EMU_DPX_PRED16(NAME, SIGNED, CMP)                                                              \
    inline unsigned NAME(unsigned a, unsigned b, bool* pred_hi, bool* pred_lo) {                        \
        const int alo = __emu::simd_lane<2, SIGNED>(a, 0), blo = __emu::simd_lane<2, SIGNED>(b, 0);      \
        const int ahi = __emu::simd_lane<2, SIGNED>(a, 1), bhi = __emu::simd_lane<2, SIGNED>(b, 1);      \
        *pred_lo = alo CMP blo;                                                                         \
        *pred_hi = ahi CMP bhi;                                                                         \
        return ((unsigned)(*pred_hi ? ahi : bhi) & 0xffffu) << 16 | ((unsigned)(*pred_lo ? alo : blo) & 0xffffu); \
    }
__EMU_DPX_PRED16(__vibmax_s16x2, true, >=)
__EMU_DPX_PRED16(__vibmax_u16x2, false, >=)
__EMU_DPX_PRED16(__vibmin_s16x2, true, <=)
__EMU_DPX_PRED16(__vibmin_u16x2, false, <=)
#undef __EMU_DPX_PRED16
// Two-way dot product of a's two 16-bit halves with two bytes of b (the low two for _lo, the high two for _hi),
// plus an accumulator (sm_61): signed halves and bytes for int, unsigned for unsigned.
namespace __emu {
template <class I, int FIRST_BYTE>
inline I dp2a(I a, I b, I c) {
    constexpr bool is_signed = std::is_signed<I>::value;
    unsigned r = (unsigned)c;  // summed modulo 2^32, as the GPU's 32-bit accumulator (no signed overflow here)
    for (int n = 0; n < 2; ++n)
        r += (unsigned)(simd_lane<2, is_signed>((unsigned)a, n) * simd_lane<4, is_signed>((unsigned)b, FIRST_BYTE + n));
    return (I)r;
}
}  // namespace __emu
inline int __dp2a_lo(int a, int b, int c) { return __emu::dp2a<int, 0>(a, b, c); }
inline unsigned __dp2a_lo(unsigned a, unsigned b, unsigned c) { return __emu::dp2a<unsigned, 0>(a, b, c); }
inline int __dp2a_hi(int a, int b, int c) { return __emu::dp2a<int, 2>(a, b, c); }
inline unsigned __dp2a_hi(unsigned a, unsigned b, unsigned c) { return __emu::dp2a<unsigned, 2>(a, b, c); }
template <class T>
inline T __ldg(const T* p) { return *p; }
template <class T>
inline T __ldcs(const T* p) { return *p; }
template <class T>
inline void __stcs(T* p, T v) { *p = v; }
// The other cache hints: plain loads and stores here (no caches to steer), but for the two that read past the SM's
// L1 -- __ldcv ("fetch again") and __ldcg (cache in L2 only) -- which code polls a flag with, another thread or
// block setting it: those are real loads with a turn for the block's other threads (as an atomic's), or the loop
// spun forever here (a plain load is hoisted out of it, and the thread that sets the flag never ran).
namespace __emu {
template <class T>
inline T fetch_again(const T* p) {
    if constexpr (std::is_trivially_copyable<T>::value && (sizeof(T) == 1 || sizeof(T) == 2 || sizeof(T) == 4 ||
                                                           sizeof(T) == 8)) {
        using U = std::conditional_t<sizeof(T) == 1, uint8_t, std::conditional_t<sizeof(T) == 2, uint16_t,
                  std::conditional_t<sizeof(T) == 4, uint32_t, uint64_t>>>;
        atomic_turn();
        const U bits = __atomic_load_n(reinterpret_cast<const U*>(p), __ATOMIC_RELAXED);
        T v;
        std::memcpy(&v, &bits, sizeof(T));
        return v;
    } else {
        asm volatile("" ::: "memory");  // (read anew each time: the compiler may not keep an earlier copy)
        T v;
        std::memcpy(&v, p, sizeof(T));
        return v;
    }
}
}  // namespace __emu
template <class T> inline T __ldcg(const T* p) { return __emu::fetch_again(p); }
template <class T> inline T __ldca(const T* p) { return *p; }
template <class T> inline T __ldlu(const T* p) { return *p; }
template <class T> inline T __ldcv(const T* p) { return __emu::fetch_again(p); }
template <class T> inline void __stwb(T* p, T v) { *p = v; }
template <class T> inline void __stcg(T* p, T v) { *p = v; }
template <class T> inline void __stwt(T* p, T v) { *p = v; }

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
// bf16 arithmetic keeps subnormals under -ftz=true too, as sm_90's bf16 instructions (add/sub/mul/fma/min/max/setp
// .bf16 have no .ftz): a bf16 subnormal is a float subnormal, which the -ftz build's float arithmetic (SSE's FTZ and
// DAZ) flushes, but a normal double.  So bf16 computes in double, widened and rounded back by integer code alone
// (a float <-> double conversion would flush too); double's 53 bits round +, -, *, / once, as float's 24 did.
inline double bf16_bits_to_double(uint16_t b) {
    const uint64_t sign = (uint64_t)(b & 0x8000u) << 48;
    const uint64_t exp = (b >> 7) & 0xffu, mant = b & 0x7fu;
    uint64_t x;
    if (exp == 0xffu) {
        x = sign | 0x7ff0000000000000ull | mant << 45;          // inf / NaN
    } else if (exp != 0) {
        x = sign | (exp + 896u) << 52 | mant << 45;             // normal: rebias 127 -> 1023
    } else {
        const double d = (double)mant * 0x1p-133;               // subnormal (or zero): a normal double
        std::memcpy(&x, &d, 8);
        x |= sign;
    }
    double d;
    std::memcpy(&d, &x, 8);
    return d;
}
inline uint16_t double_to_bf16_bits(double d) {  // round to nearest even, subnormals kept
    uint64_t x;
    std::memcpy(&x, &d, 8);
    const uint16_t sign = (uint16_t)(x >> 48) & 0x8000u;
    const uint64_t ax = x & 0x7fffffffffffffffull;
    if (ax > 0x7ff0000000000000ull) return 0x7fffu;                         // NaN
    const int exp = (int)(ax >> 52);
    if (exp >= 1023 - 126) {                                                  // bf16's normal range, or beyond
        const uint64_t rounded = (ax + (1ull << 44) - 1u + ((ax >> 45) & 1u)) >> 45;
        const uint64_t bits = rounded - ((uint64_t)(1023 - 127) << 7);       // rebias 1023 -> 127
        return sign | (uint16_t)(bits >= 0x7f80u ? 0x7f80u : bits);           // past the largest: infinity
    }
    const int shift = 942 - exp;                                              // in units of 2^-133, bf16's least
    if (shift >= 54) return sign;                                             // below half of it: zero
    const uint64_t mant = (ax & 0xfffffffffffffull) | 1ull << 52;
    uint64_t q = mant >> shift;
    const uint64_t rem = mant & ((1ull << shift) - 1u), halfway = 1ull << (shift - 1);
    if (rem > halfway || (rem == halfway && (q & 1u))) ++q;                   // (128 carries into the normals)
    return sign | (uint16_t)q;
}
}  // namespace __emu

// Rounding to a 16-bit float through float32 rounds twice, which can land on a tie and break it the
// wrong way.  Rounding to float32 *to odd* first (an inexact result keeps an odd last bit) makes the
// second, round-to-nearest-even step exact: float32 has more than 16 + 2 bits.
namespace __emu {
inline float float_to_odd(double d) {
    float f = (float)d;
    if ((double)f != d && std::isfinite(f)) {
        uint32_t b;
        std::memcpy(&b, &f, 4);
        if (!(b & 1u)) f = std::nextafterf(f, d > (double)f ? INFINITY : -INFINITY);
    }
    return f;
}
// a*b + c exactly, rounded to odd in float32, for a single-rounding 16-bit fma: the product of two
// 16-bit floats is exact in double, and TwoSum gives the sum's exact error.
inline float fma_to_odd(float a, float b, float c) {
    const double p = (double)a * (double)b, s = p + (double)c;
    if (!std::isfinite(s)) return (float)s;
    const double bb = s - p, err = (p - (s - bb)) + ((double)c - bb);
    float f = (float)s;
    if (!std::isfinite(f)) return f;
    const double left = s - (double)f;  // what float32 dropped, plus TwoSum's error
    if ((left != 0.0 || err != 0.0)) {
        uint32_t bits;
        std::memcpy(&bits, &f, 4);
        const bool above = left != 0.0 ? left > 0.0 : err > 0.0;  // the exact value lies above f
        if (!(bits & 1u)) f = std::nextafterf(f, above ? INFINITY : -INFINITY);
    }
    return f;
}
// the same in double, for bf16 (whose a*b is exact in double too): a*b + c rounded to odd in double
inline double fma_to_odd(double a, double b, double c) {
    const double p = a * b, s = p + c;
    if (!std::isfinite(s)) return s;
    const double bb = s - p, err = (p - (s - bb)) + (c - bb);
    uint64_t bits;
    std::memcpy(&bits, &s, 8);
    if (err != 0.0 && !(bits & 1u)) return std::nextafter(s, err > 0.0 ? INFINITY : -INFINITY);
    return s;
}
// __half's arithmetic rounds a float result (exact widening: float_to_half_bits's inverse), a double one (an
// integer's, a double's conversion) through float rounded to odd
inline uint16_t narrow_half(float f) { return float_to_half_bits(f); }
inline uint16_t narrow_half(double d) { return float_to_half_bits(float_to_odd(d)); }
}  // namespace __emu

// A 16-bit float to an integer type (the conversion intrinsics below and the types' conversion operators): NaN
// gives 0, except that a 64-bit result gets 0x8000000000000000 (cuda_fp16.h documents both: they are the cvt
// instruction's), and values out of range saturate.
namespace __emu {
enum IntRound { I_RN, I_RZ, I_RD, I_RU };
template <class I, class H>
inline I from_16bit(H h, IntRound m) {
    const double f = h.__wide();  // (a bf16 subnormal widened by integer code: cvt.rpi.s32.bf16 has no .ftz)
    if (f != f) return sizeof(I) == 8 ? (I)(1ull << 63) : I(0);
    return saturate_to<I>(m == I_RN ? nearbyint(f) : m == I_RZ ? trunc(f) : m == I_RD ? floor(f) : ceil(f));
}
}  // namespace __emu

// CUDA's __half_raw / __nv_bfloat16_raw: the 16 bits with no arithmetic (what the fp8 conversions hand back).
namespace __emu { struct raw16 { unsigned short x; }; struct raw16x2 { unsigned short x, y; }; }
typedef __emu::raw16 __half_raw;
typedef __emu::raw16 __nv_bfloat16_raw;
typedef __emu::raw16x2 __half2_raw;
typedef __emu::raw16x2 __nv_bfloat162_raw;
#define __EMU_HALF_TYPE(H, TO_BITS, FROM_BITS, WIDEN, NARROW)                                           \
    struct __attribute__((aligned(2))) H {                                                              \
        unsigned short __x;                                                                             \
        H() = default; /* trivial, so __shared__ H buf[32] is plain storage */                          \
        H(float f) : __x(TO_BITS(f)) {}                                                                 \
        H(double f) : __x(NARROW(f)) {}                                                                 \
        /* from every integer type and back (toward zero, saturating), as cuda_fp16.hpp / cuda_bf16.hpp: */ \
        /* with only H(int) and operator float, `__half h = 3u` or `(int)h` of inf would not do what nvcc does */ \
        H(short i) : __x(TO_BITS((float)i)) {}                                                          \
        H(unsigned short i) : __x(TO_BITS((float)i)) {}                                                 \
        H(int i) : __x(TO_BITS(__emu::float_to_odd((double)i))) {}                                      \
        H(unsigned i) : __x(TO_BITS(__emu::float_to_odd((double)i))) {}                                 \
        H(long i) : __x(TO_BITS(__emu::float_to_odd((double)i))) {}                                     \
        H(unsigned long i) : __x(TO_BITS(__emu::float_to_odd((double)i))) {}                            \
        H(long long i) : __x(TO_BITS(__emu::float_to_odd((double)i))) {}                                \
        H(unsigned long long i) : __x(TO_BITS(__emu::float_to_odd((double)i))) {}                       \
        operator signed char() const { return __emu::from_16bit<signed char>(*this, __emu::I_RZ); }     \
        operator unsigned char() const { return __emu::from_16bit<unsigned char>(*this, __emu::I_RZ); } \
        operator char() const { return __emu::from_16bit<char>(*this, __emu::I_RZ); }                   \
        operator short() const { return __emu::from_16bit<short>(*this, __emu::I_RZ); }                 \
        operator unsigned short() const { return __emu::from_16bit<unsigned short>(*this, __emu::I_RZ); } \
        operator int() const { return __emu::from_16bit<int>(*this, __emu::I_RZ); }                     \
        operator unsigned() const { return __emu::from_16bit<unsigned>(*this, __emu::I_RZ); }           \
        operator long() const { return __emu::from_16bit<long>(*this, __emu::I_RZ); }                   \
        operator unsigned long() const { return __emu::from_16bit<unsigned long>(*this, __emu::I_RZ); } \
        operator long long() const { return __emu::from_16bit<long long>(*this, __emu::I_RZ); }         \
        operator unsigned long long() const { return __emu::from_16bit<unsigned long long>(*this, __emu::I_RZ); } \
        constexpr operator bool() const { return (__x & 0x7fffu) != 0; } /* NaN is true, +-0 false */   \
        H(__emu::raw16 r) : __x(r.x) {}                                                                 \
        operator __emu::raw16() const { return __emu::raw16{__x}; }                                     \
        operator float() const { return FROM_BITS(__x); }                                               \
        /* the value widened exactly for arithmetic, and a result rounded back once (see bf16_bits_to_double) */ \
        auto __wide() const { return WIDEN(__x); }                                                      \
        static H __narrowed(decltype(WIDEN(0)) w) { H r; r.__x = NARROW(w); return r; }                 \
        H& operator+=(H o) { return *this = __narrowed(__wide() + o.__wide()); }                        \
        H& operator-=(H o) { return *this = __narrowed(__wide() - o.__wide()); }                        \
        H& operator*=(H o) { return *this = __narrowed(__wide() * o.__wide()); }                        \
        H& operator/=(H o) { return *this = __narrowed(__wide() / o.__wide()); }                        \
    };                                                                                                  \
    inline H operator+(H a, H b) { return H::__narrowed(a.__wide() + b.__wide()); }                     \
    inline H operator-(H a, H b) { return H::__narrowed(a.__wide() - b.__wide()); }                     \
    inline H operator*(H a, H b) { return H::__narrowed(a.__wide() * b.__wide()); }                     \
    inline H operator/(H a, H b) { return H::__narrowed(a.__wide() / b.__wide()); }                     \
    inline H operator-(H a) { H r; r.__x = a.__x ^ 0x8000u; return r; }                                 \
    inline bool operator==(H a, H b) { return a.__wide() == b.__wide(); }                               \
    inline bool operator!=(H a, H b) { return a.__wide() != b.__wide(); }                               \
    inline bool operator<(H a, H b) { return a.__wide() < b.__wide(); }                                 \
    inline bool operator>(H a, H b) { return a.__wide() > b.__wide(); }                                 \
    inline bool operator<=(H a, H b) { return a.__wide() <= b.__wide(); }                               \
    inline bool operator>=(H a, H b) { return a.__wide() >= b.__wide(); }                               \
    inline H __hadd(H a, H b) { return a + b; }                                                         \
    inline H __hsub(H a, H b) { return a - b; }                                                         \
    inline H __hmul(H a, H b) { return a * b; }                                                         \
    inline H __hdiv(H a, H b) { return a / b; }                                                         \
    inline H __hneg(H a) { return -a; }                                                                 \
    inline H __habs(H a) { H r; r.__x = a.__x & 0x7fffu; return r; }                                    \
    inline H __hfma(H a, H b, H c) { return H::__narrowed(__emu::fma_to_odd(a.__wide(), b.__wide(), c.__wide())); } \
    inline bool __hisnan(H a) { return float(a) != float(a); }                                          \
    /* NaN gives the other input (two NaNs: the canonical NaN); of two zeros +0 is the larger, as CUDA  \
       documents (glibc's fmaxf answers by operand order: fmaxf(+0, -0) is -0 on x86) */                \
    inline H __hmax(H a, H b) {                                                                         \
        if (__hisnan(a) || __hisnan(b)) return __hisnan(a) && __hisnan(b) ? H(NAN) : __hisnan(a) ? b : a; \
        if (a.__wide() == b.__wide()) return (a.__x & 0x8000u) ? b : a;                                 \
        return a.__wide() > b.__wide() ? a : b;                                                         \
    }                                                                                                   \
    inline H __hmin(H a, H b) {                                                                         \
        if (__hisnan(a) || __hisnan(b)) return __hisnan(a) && __hisnan(b) ? H(NAN) : __hisnan(a) ? b : a; \
        if (a.__wide() == b.__wide()) return (a.__x & 0x8000u) ? a : b;                                 \
        return a.__wide() < b.__wide() ? a : b;                                                         \
    }                                                                                                   \
    inline bool __heq(H a, H b) { return a == b; }                                                      \
    /* __hne is an ordered compare (false with a NaN), as CUDA's; the ...u forms are unordered (true) */ \
    inline bool __hne(H a, H b) { return a.__wide() < b.__wide() || a.__wide() > b.__wide(); }          \
    inline bool __hequ(H a, H b) { return !__hne(a, b); }                                               \
    inline bool __hneu(H a, H b) { return a.__wide() != b.__wide(); }                                   \
    inline bool __hltu(H a, H b) { return !(a.__wide() >= b.__wide()); }                                \
    inline bool __hleu(H a, H b) { return !(a.__wide() > b.__wide()); }                                 \
    inline bool __hgtu(H a, H b) { return !(a.__wide() <= b.__wide()); }                                \
    inline bool __hgeu(H a, H b) { return !(a.__wide() < b.__wide()); }                                 \
    inline bool __hlt(H a, H b) { return a < b; }                                                       \
    inline bool __hle(H a, H b) { return a <= b; }                                                      \
    inline bool __hgt(H a, H b) { return a > b; }                                                       \
    inline bool __hge(H a, H b) { return a >= b; }                                                      \
    inline int __hisinf(H a) { return (a.__x & 0x7fffu) != (TO_BITS(INFINITY) & 0x7fffu) ? 0 : (a.__x >> 15 ? -1 : 1); } \
    /* the _nan forms return the canonical NaN (0x7fff) when either input is NaN, whatever its bits */  \
    inline H __hmax_nan(H a, H b) { return __hisnan(a) || __hisnan(b) ? H(NAN) : __hmax(a, b); }        \
    inline H __hmin_nan(H a, H b) { return __hisnan(a) || __hisnan(b) ? H(NAN) : __hmin(a, b); }        \
    /* The exponentials and logarithms round once, from double: CUDA's headers compute them with an approximate \
       instruction (ex2.approx / lg2.approx, whose exact bits PTX does not document) and a float step, then patch \
       by hand the inputs where that misses the correctly rounded result (cuda_fp16.hpp's __SPEC_CASE, bf16's \
       hexp10 at 0xBC95).  Rounding through float first (expf, then to half) was one ulp off on a few inputs, the \
       patched ones among them (hexp 0x1F79, 0x25CF; hlog10 0x338F, 0x33F8, 0x57E1, 0x719D): the emulator's \
       choice is the correctly rounded value, which CUDA's patches aim for.  hsin / hcos follow the types, below. */ \
    /* Each reads the value widened (__wide: a bf16 subnormal is a normal double there), not float(a): the \
       headers' bf16 functions are inline asm (sqrt / rsqrt / rcp / ex2 / lg2 .approx.f32, cvt.rpi / .rmi) \
       with no .ftz, which -ftz=true does not touch, while the -ftz build's float code here reads a bf16 \
       subnormal as 0 (DAZ): hsqrt gave 0, hlog -inf, hceil 0 where the GPU gives 2^-65, -90.1, 1. */    \
    inline H hexp(H a) { return H(std::exp((double)a.__wide())); }                                      \
    inline H hlog(H a) { return H(std::log((double)a.__wide())); }                                      \
    inline H hsqrt(H a) { return H(std::sqrt(a.__wide())); }                                            \
    /* rsqrt.approx.f32, then cvt.rn to 16 bits (cuda_fp16.hpp, cuda_bf16.hpp): rounded to float first, as each \
       approximate instruction here, so a float result on a 16-bit tie rounds as the GPU's does */      \
    inline H hrsqrt(H a) { return H((float)(1.0 / std::sqrt((double)a.__wide()))); }                    \
    /* htanh is documented as round-to-nearest-even (an accurate function, not tanh.approx): tanhf of the float. \
       Under -ftz=true that float code flushes a bf16 subnormal input to +-0 (tanh keeps it): flushed here by \
       integer code, not left to what libm's tanhf does with a subnormal under DAZ */                   \
    inline H htanh(H a) { return H(tanhf(__emu::flushed_under_ftz(float(a)))); }                        \
    inline H htanh_approx(H a) { return htanh(a); }  /* tanh.approx: within its error */                \
    inline H hexp2(H a) { return H(std::exp2((double)a.__wide())); }                                    \
    inline H hexp10(H a) { return H(std::pow(10.0, (double)a.__wide())); }                              \
    inline H hlog2(H a) { return H(std::log2((double)a.__wide())); }                                    \
    inline H hlog10(H a) { return H(std::log10((double)a.__wide())); }                                  \
    inline H hrcp(H a) { return H(1 / a.__wide()); }                                                    \
    inline H hceil(H a) { return H(std::ceil(a.__wide())); }                                            \
    inline H hfloor(H a) { return H(std::floor(a.__wide())); }                                          \
    inline H htrunc(H a) { return H(std::trunc(a.__wide())); }                                          \
    inline H hrint(H a) { return H(std::nearbyint(a.__wide())); }                                       \
    inline H __hadd_rn(H a, H b) { return a + b; }  /* _rn: never contracted into an fma */             \
    inline H __hsub_rn(H a, H b) { return a - b; }                                                      \
    inline H __hmul_rn(H a, H b) { return a * b; }                                                      \
    inline H __hadd_sat(H a, H b) { return __emu_clamp01(a + b); }                                      \
    inline H __hsub_sat(H a, H b) { return __emu_clamp01(a - b); }                                      \
    inline H __hmul_sat(H a, H b) { return __emu_clamp01(a * b); }                                      \
    inline H __hfma_sat(H a, H b, H c) { return __emu_clamp01(__hfma(a, b, c)); }                       \
    inline H __hfma_relu(H a, H b, H c) { H r = __hfma(a, b, c); return r.__wide() < 0 ? H(0.0f) : r; }

// The saturating ops clamp the rounded result to [+0, 1], NaN to +0 (defined below, once both types exist).
struct __half;
struct __nv_bfloat16;
inline __half __emu_clamp01(__half r);
inline __nv_bfloat16 __emu_clamp01(__nv_bfloat16 r);
__EMU_HALF_TYPE(__half, __emu::float_to_half_bits, __emu::half_bits_to_float, __emu::half_bits_to_float,
                __emu::narrow_half)
__EMU_HALF_TYPE(__nv_bfloat16, __emu::float_to_bf16_bits, __emu::bf16_bits_to_float, __emu::bf16_bits_to_double,
                __emu::double_to_bf16_bits)
#undef __EMU_HALF_TYPE
// __half's are the .sat of add / sub / mul / fma .f16 (a half is a normal float: no flush to mind), which gives +0 for
// -0 as __saturatef does (it kept -0: __hadd_sat(-0, -0), __hmul_sat(-0.5, 0) gave -0).  bf16 has no .sat
// in PTX: cuda_bf16.hpp rounds an fma.rn.bf16, then takes max.bf16 with +0 and min.bf16 with 1, none with .ftz -- so
// -0 and a negative subnormal give +0 in every build (a float clamp under -ftz=true read them as 0 and kept them).
inline __half __emu_clamp01(__half r) { return __half(__saturatef(float(r))); }
inline __nv_bfloat16 __emu_clamp01(__nv_bfloat16 r) {
    return __hmin(__hmax(r, __nv_bfloat16(0.0f)), __nv_bfloat16(1.0f));
}
// hsin / hcos of a __half are cuda_fp16.hpp's own float code -- no approximate instruction, so bit for bit: a
// two-step reduction by pi/2 (fmaf), a degree-8 polynomial (fmaf), rounded to half, then two inputs of hsin and
// one of hcos patched by an ulp (its __SPEC_CASE).  On every half input that is the correctly rounded value; sinf /
// cosf rounded to half (two roundings) missed it at the patched inputs (+-0x32B3, +-0x5CB0, hcos +-0x2B7C).  bf16's
// are sinf / cosf rounded (cuda_bf16.hpp), which --use_fast_math makes __sinf / __cosf, accurate here.
namespace __emu {
inline float fp16_simple_sin_cos(float a, bool cosine) {  // __float_simpl_sinf / __float_simpl_cosf
    const float shifted = fmaf(a, 0.636619772f, 12582912.0f);  // 1.5 * 2^23: the quadrant lands in the low bits
    unsigned quadrant;
    std::memcpy(&quadrant, &shifted, sizeof quadrant);
    const float j = shifted - 12582912.0f;
    float x = fmaf(j, -1.5707962512969971e+000f, a);
    x = fmaf(j, -7.5497894158615964e-008f, x);
    if (cosine) quadrant = (quadrant & 3u) + 1u;
    const float x2 = x * x;
    const bool odd = quadrant & 1u;  // the cosine's polynomial
    float z = fmaf(odd ? 2.44331571e-5f : -1.95152959e-4f, x2, odd ? -1.38873163e-3f : 8.33216087e-3f);
    z = fmaf(z, x2, odd ? 4.16666457e-2f : -1.66666546e-1f);
    z = fmaf(z, x2, odd ? -5.00000000e-1f : 0.0f);
    z = fmaf(z, odd ? x2 : x, odd ? 1.0f : x);
    return (quadrant & 2u) ? -z : z;
}
// __SPEC_CASE: where |input| has these bits, the rounded result moves by the half `ulp` (fma.rn.f16 r, 1, ulp, r)
inline __half fp16_patched(__half r, unsigned short magnitude, unsigned short special, unsigned short ulp_bits) {
    if (magnitude != special) return r;
    __half ulp;
    ulp.__x = ulp_bits;
    return r + ulp;
}
}  // namespace __emu
inline __half hsin(__half a) {
    __half r = __half(__emu::fp16_simple_sin_cos(float(a), false));
    const unsigned short sign = r.__x & 0x8000u, magnitude = a.__x & 0x7fffu;
    r.__x &= 0x7fffu;
    r = __emu::fp16_patched(__emu::fp16_patched(r, magnitude, 0x32B3u, 0x0800u), magnitude, 0x5CB0u, 0x9000u);
    r.__x |= sign;
    return r;
}
inline __half hcos(__half a) {
    return __emu::fp16_patched(__half(__emu::fp16_simple_sin_cos(float(a), true)), a.__x & 0x7fffu, 0x2B7Cu, 0x1000u);
}
inline __nv_bfloat16 hsin(__nv_bfloat16 a) { return __nv_bfloat16(sinf(float(a))); }
inline __nv_bfloat16 hcos(__nv_bfloat16 a) { return __nv_bfloat16(cosf(float(a))); }
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
        H2(__emu::raw16x2 r) : x(__emu::raw16{r.x}), y(__emu::raw16{r.y}) {}                           \
        operator __emu::raw16x2() const { return __emu::raw16x2{__emu::raw16(x).x, __emu::raw16(y).x}; } \
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
    /* as CUDA's: == is __hbeq2 (both lanes equal), != is __hbneu2 (both lanes unequal or NaN) */          \
    inline bool operator!=(H2 a, H2 b) { return __hneu(a.x, b.x) && __hneu(a.y, b.y); }                 \
    inline H2 __hadd2(H2 a, H2 b) { return a + b; }                                                     \
    inline H2 __hsub2(H2 a, H2 b) { return a - b; }                                                     \
    inline H2 __hmul2(H2 a, H2 b) { return a * b; }                                                     \
    inline H2 __h2div(H2 a, H2 b) { return a / b; }                                                     \
    inline H2 __hneg2(H2 a) { return -a; }                                                              \
    inline H2 __habs2(H2 a) { return H2(__habs(a.x), __habs(a.y)); }                                    \
    inline H2 __hfma2(H2 a, H2 b, H2 c) { return H2(__hfma(a.x, b.x, c.x), __hfma(a.y, b.y, c.y)); }    \
    inline H2 __hmax2(H2 a, H2 b) { return H2(__hmax(a.x, b.x), __hmax(a.y, b.y)); }                    \
    inline H2 __hmin2(H2 a, H2 b) { return H2(__hmin(a.x, b.x), __hmin(a.y, b.y)); }                    \
    inline H2 __hmax2_nan(H2 a, H2 b) { return H2(__hmax_nan(a.x, b.x), __hmax_nan(a.y, b.y)); }        \
    inline H2 __hmin2_nan(H2 a, H2 b) { return H2(__hmin_nan(a.x, b.x), __hmin_nan(a.y, b.y)); }        \
    inline H2 __hsub2_sat(H2 a, H2 b) { return H2(__hsub_sat(a.x, b.x), __hsub_sat(a.y, b.y)); }        \
    inline H2 __hadd2_sat(H2 a, H2 b) { return H2(__hadd_sat(a.x, b.x), __hadd_sat(a.y, b.y)); }        \
    inline H2 __hmul2_sat(H2 a, H2 b) { return H2(__hmul_sat(a.x, b.x), __hmul_sat(a.y, b.y)); }        \
    inline H2 __hfma2_sat(H2 a, H2 b, H2 c) { return H2(__hfma_sat(a.x, b.x, c.x), __hfma_sat(a.y, b.y, c.y)); } \
    inline H2 __hsub2_rn(H2 a, H2 b) { return a - b; }                                                  \
    /* the _mask compares (CUDA 12): 0xffff in each lane's half of the result where it holds */         \
    inline unsigned __heq2_mask(H2 a, H2 b) { return (a.x == b.x ? 0xffffu : 0u) | (a.y == b.y ? 0xffff0000u : 0u); } \
    inline unsigned __hne2_mask(H2 a, H2 b) { return (__hne(a.x, b.x) ? 0xffffu : 0u) | (__hne(a.y, b.y) ? 0xffff0000u : 0u); } \
    inline unsigned __hlt2_mask(H2 a, H2 b) { return (a.x < b.x ? 0xffffu : 0u) | (a.y < b.y ? 0xffff0000u : 0u); } \
    inline unsigned __hle2_mask(H2 a, H2 b) { return (a.x <= b.x ? 0xffffu : 0u) | (a.y <= b.y ? 0xffff0000u : 0u); } \
    inline unsigned __hgt2_mask(H2 a, H2 b) { return (a.x > b.x ? 0xffffu : 0u) | (a.y > b.y ? 0xffff0000u : 0u); } \
    inline unsigned __hge2_mask(H2 a, H2 b) { return (a.x >= b.x ? 0xffffu : 0u) | (a.y >= b.y ? 0xffff0000u : 0u); } \
    inline unsigned __hequ2_mask(H2 a, H2 b) { return (__hequ(a.x, b.x) ? 0xffffu : 0u) | (__hequ(a.y, b.y) ? 0xffff0000u : 0u); } \
    inline unsigned __hneu2_mask(H2 a, H2 b) { return (__hneu(a.x, b.x) ? 0xffffu : 0u) | (__hneu(a.y, b.y) ? 0xffff0000u : 0u); } \
    inline unsigned __hltu2_mask(H2 a, H2 b) { return (__hltu(a.x, b.x) ? 0xffffu : 0u) | (__hltu(a.y, b.y) ? 0xffff0000u : 0u); } \
    inline unsigned __hleu2_mask(H2 a, H2 b) { return (__hleu(a.x, b.x) ? 0xffffu : 0u) | (__hleu(a.y, b.y) ? 0xffff0000u : 0u); } \
    inline unsigned __hgtu2_mask(H2 a, H2 b) { return (__hgtu(a.x, b.x) ? 0xffffu : 0u) | (__hgtu(a.y, b.y) ? 0xffff0000u : 0u); } \
    inline unsigned __hgeu2_mask(H2 a, H2 b) { return (__hgeu(a.x, b.x) ? 0xffffu : 0u) | (__hgeu(a.y, b.y) ? 0xffff0000u : 0u); } \
    inline H2 h2tanh(H2 a) { return H2(htanh(a.x), htanh(a.y)); }                                       \
    inline H2 h2tanh_approx(H2 a) { return h2tanh(a); }                                                 \
    inline H2 h2exp10(H2 a) { return H2(hexp10(a.x), hexp10(a.y)); }                                    \
    inline H2 h2log10(H2 a) { return H2(hlog10(a.x), hlog10(a.y)); }                                    \
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
    inline H2 h2rsqrt(H2 a) { return H2(hrsqrt(a.x), hrsqrt(a.y)); }                                    \
    inline H2 h2sin(H2 a) { return H2(hsin(a.x), hsin(a.y)); }                                          \
    inline H2 h2cos(H2 a) { return H2(hcos(a.x), hcos(a.y)); }                                          \
    inline H2 h2exp2(H2 a) { return H2(hexp2(a.x), hexp2(a.y)); }                                       \
    inline H2 h2log2(H2 a) { return H2(hlog2(a.x), hlog2(a.y)); }                                       \
    inline H2 h2rcp(H2 a) { return H2(hrcp(a.x), hrcp(a.y)); }                                          \
    inline H2 h2floor(H2 a) { return H2(hfloor(a.x), hfloor(a.y)); }                                    \
    inline H2 h2ceil(H2 a) { return H2(hceil(a.x), hceil(a.y)); }                                       \
    inline H2 h2trunc(H2 a) { return H2(htrunc(a.x), htrunc(a.y)); }                                    \
    inline H2 h2rint(H2 a) { return H2(hrint(a.x), hrint(a.y)); }                                       \
    inline H2 __hadd2_rn(H2 a, H2 b) { return a + b; }                                                  \
    inline H2 __hmul2_rn(H2 a, H2 b) { return a * b; }                                                  \
    inline H2 __hfma2_relu(H2 a, H2 b, H2 c) { return H2(__hfma_relu(a.x, b.x, c.x), __hfma_relu(a.y, b.y, c.y)); } \
    /* a*b + c of complex numbers (x real, y imaginary), four roundings as cuda_fp16.hpp's: the real part     \
       (a.x*b.x + c.x) - a.y*b.y, the imaginary (a.x*b.y + c.y) + a.y*b.x, each step an fma */             \
    inline H2 __hcmadd(H2 a, H2 b, H2 c) {                                                              \
        return H2(__hfma(__hneg(a.y), b.y, __hfma(a.x, b.x, c.x)), __hfma(a.y, b.x, __hfma(a.x, b.y, c.y))); \
    }                                                                                                   \
    inline H2 __hne2(H2 a, H2 b) { return H2(H(__hne(a.x, b.x) ? 1.0f : 0.0f), H(__hne(a.y, b.y) ? 1.0f : 0.0f)); } \
    inline H2 __hequ2(H2 a, H2 b) { return H2(H(__hequ(a.x, b.x) ? 1.0f : 0.0f), H(__hequ(a.y, b.y) ? 1.0f : 0.0f)); } \
    inline H2 __hneu2(H2 a, H2 b) { return H2(H(__hneu(a.x, b.x) ? 1.0f : 0.0f), H(__hneu(a.y, b.y) ? 1.0f : 0.0f)); } \
    inline H2 __hltu2(H2 a, H2 b) { return H2(H(__hltu(a.x, b.x) ? 1.0f : 0.0f), H(__hltu(a.y, b.y) ? 1.0f : 0.0f)); } \
    inline H2 __hleu2(H2 a, H2 b) { return H2(H(__hleu(a.x, b.x) ? 1.0f : 0.0f), H(__hleu(a.y, b.y) ? 1.0f : 0.0f)); } \
    inline H2 __hgtu2(H2 a, H2 b) { return H2(H(__hgtu(a.x, b.x) ? 1.0f : 0.0f), H(__hgtu(a.y, b.y) ? 1.0f : 0.0f)); } \
    inline H2 __hgeu2(H2 a, H2 b) { return H2(H(__hgeu(a.x, b.x) ? 1.0f : 0.0f), H(__hgeu(a.y, b.y) ? 1.0f : 0.0f)); } \
    inline H2 __hisnan2(H2 a) { return H2(H(__hisnan(a.x) ? 1.0f : 0.0f), H(__hisnan(a.y) ? 1.0f : 0.0f)); } \
    inline bool __hbequ2(H2 a, H2 b) { return __hequ(a.x, b.x) && __hequ(a.y, b.y); }                \
    inline bool __hbneu2(H2 a, H2 b) { return __hneu(a.x, b.x) && __hneu(a.y, b.y); }                \
    inline bool __hbltu2(H2 a, H2 b) { return __hltu(a.x, b.x) && __hltu(a.y, b.y); }                \
    inline bool __hbleu2(H2 a, H2 b) { return __hleu(a.x, b.x) && __hleu(a.y, b.y); }                \
    inline bool __hbgtu2(H2 a, H2 b) { return __hgtu(a.x, b.x) && __hgtu(a.y, b.y); }                \
    inline bool __hbgeu2(H2 a, H2 b) { return __hgeu(a.x, b.x) && __hgeu(a.y, b.y); }                \
    inline H2 __hle2(H2 a, H2 b) { return H2(H(a.x <= b.x ? 1.0f : 0.0f), H(a.y <= b.y ? 1.0f : 0.0f)); } \
    inline H2 __hge2(H2 a, H2 b) { return H2(H(a.x >= b.x ? 1.0f : 0.0f), H(a.y >= b.y ? 1.0f : 0.0f)); } \
    inline bool __hbne2(H2 a, H2 b) { return __hne(a.x, b.x) && __hne(a.y, b.y); }                     \
    inline bool __hblt2(H2 a, H2 b) { return a.x < b.x && a.y < b.y; }                                 \
    inline bool __hble2(H2 a, H2 b) { return a.x <= b.x && a.y <= b.y; }                               \
    inline bool __hbgt2(H2 a, H2 b) { return a.x > b.x && a.y > b.y; }                                 \
    inline bool __hbge2(H2 a, H2 b) { return a.x >= b.x && a.y >= b.y; }
__EMU_HALF2_TYPE(__half2, __half)
__EMU_HALF2_TYPE(__nv_bfloat162, __nv_bfloat16)

// 16-bit float atomicAdd (__half2: sm_60, __half: sm_70, __nv_bfloat16 and __nv_bfloat162: sm_80): a compare-and-swap loop on
// the value's own 2 or 4 bytes; each element's sum is rounded once to 16 bits, as the GPU's red.add.
template <class V, class Bits>
inline V __emu_atomic_add_16bit(V* a, V v, const char* __file, int __line) {
    __emu::atomic_at(a, sizeof(V), "atomicAdd", __file, __line);
    static_assert(sizeof(V) == sizeof(Bits), "the atomic word is the value itself");
    Bits* p = reinterpret_cast<Bits*>(a);
    Bits old_bits = __atomic_load_n(p, __ATOMIC_RELAXED);
    for (;;) {
        V old_val, new_val;
        std::memcpy(&old_val, &old_bits, sizeof(V));
        new_val = old_val + v;
        Bits new_bits;
        std::memcpy(&new_bits, &new_val, sizeof(V));
        if (__atomic_compare_exchange_n(p, &old_bits, new_bits, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED))
            return old_val;
    }
}
#if __CUDA_ARCH__ >= 600
inline __half2 atomicAdd(__half2* a, __half2 v, __EMU_AT) { return __emu_atomic_add_16bit<__half2, uint32_t>(a, v, __file, __line); }
#endif
#if __CUDA_ARCH__ >= 700
inline __half atomicAdd(__half* a, __half v, __EMU_AT) { return __emu_atomic_add_16bit<__half, uint16_t>(a, v, __file, __line); }
#endif
#if __CUDA_ARCH__ >= 800
inline __nv_bfloat16 atomicAdd(__nv_bfloat16* a, __nv_bfloat16 v, __EMU_AT) {
    return __emu_atomic_add_16bit<__nv_bfloat16, uint16_t>(a, v, __file, __line);
}
inline __nv_bfloat162 atomicAdd(__nv_bfloat162* a, __nv_bfloat162 v, __EMU_AT) {
    return __emu_atomic_add_16bit<__nv_bfloat162, uint32_t>(a, v, __file, __line);
}
#endif
#undef __EMU_HALF2_TYPE
#undef __EMU_AT
typedef __half2 half2;
typedef __nv_bfloat162 nv_bfloat162;

inline __half __float2half(float f) { return __half(f); }
inline __half __float2half_rn(float f) { return __half(f); }
inline float __half2float(__half h) { return float(h); }
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

// Directed rounding to 16 bits: round to nearest, then step one unit toward the wanted side if the
// nearest value lies on the other side of x.
namespace __emu {
template <class H>
inline H step_16bit(H h, bool up) {
    const unsigned short sign = h.__x & 0x8000u, mag = h.__x & 0x7fffu;
    if (up) h.__x = sign ? (mag ? (unsigned short)(h.__x - 1) : (unsigned short)0x0001u) : (unsigned short)(h.__x + 1);
    else h.__x = sign ? (unsigned short)(h.__x + 1) : (mag ? (unsigned short)(h.__x - 1) : (unsigned short)0x8001u);
    return h;
}
// A float's place in the order of floats, read from its bits (-0 and +0 alike): under -ftz=true a float compare reads
// a subnormal as 0 (DAZ), where cvt.rz / .rm / .rp .f16 / .bf16 .f32, the headers' inline asm, keep it.
inline int32_t float_order(float f) {
    int32_t bits;
    std::memcpy(&bits, &f, 4);
    return bits < 0 ? -(bits & 0x7fffffff) : bits;
}
template <class H>
inline H round_16bit(float x, int mode) {  // mode: 0 toward zero, 1 down, 2 up
    H h(x);
    const float r = float(h);
    const int32_t nearest = float_order(r), exact = float_order(x);
    if (r != r || nearest == exact) return h;
    if (mode == 0 && std::abs(nearest) > std::abs(exact)) return step_16bit(h, nearest < 0);
    if (mode == 1 && nearest > exact) return step_16bit(h, false);
    if (mode == 2 && nearest < exact) return step_16bit(h, true);
    return h;
}
}  // namespace __emu
inline __half __float2half_rz(float f) { return __emu::round_16bit<__half>(f, 0); }
inline __half __float2half_rd(float f) { return __emu::round_16bit<__half>(f, 1); }
inline __half __float2half_ru(float f) { return __emu::round_16bit<__half>(f, 2); }
inline __nv_bfloat16 __float2bfloat16_rz(float f) { return __emu::round_16bit<__nv_bfloat16>(f, 0); }
inline __nv_bfloat16 __float2bfloat16_rd(float f) { return __emu::round_16bit<__nv_bfloat16>(f, 1); }
inline __nv_bfloat16 __float2bfloat16_ru(float f) { return __emu::round_16bit<__nv_bfloat16>(f, 2); }
inline __half __double2half(double d) { return __half(d); }
inline __nv_bfloat16 __double2bfloat16(double d) { return __nv_bfloat16(d); }
// 16-bit float <-> integer conversions in the four rounding modes, for __half and __nv_bfloat16 and every
// integer width CUDA names (__half2int_rn, __ull2bfloat16_rz, ...).  To an integer: NaN gives 0, except that a
// 64-bit result gets 0x8000000000000000 (cuda_fp16.h documents both: they are the cvt instruction's), and values
// out of range saturate.  From an integer: the exact value (long double holds every 64-bit integer) rounded once.
namespace __emu {
template <class H>
inline H to_16bit(long double x, IntRound m) {
    float f = (float)x;  // rounded to odd, so that rounding f to 16 bits rounds x only once
    if ((long double)f != x) {
        uint32_t b;
        std::memcpy(&b, &f, 4);
        if (!(b & 1u)) f = std::nextafterf(f, x > (long double)f ? INFINITY : -INFINITY);
    }
    const H h(f);
    const long double r = (long double)float(h);
    if (m == I_RN || r == x) return h;
    if (m == I_RZ) return std::fabs(r) > std::fabs(x) ? step_16bit(h, r < 0) : h;
    if (m == I_RD) return r > x ? step_16bit(h, false) : h;
    return r < x ? step_16bit(h, true) : h;
}
}  // namespace __emu
#define __EMU_16BIT_INT_MODE(HN, H, IN, I, MODE, SUFFIX)                                                 \
    inline I __##HN##2##IN##_##SUFFIX(H h) { return __emu::from_16bit<I>(h, __emu::MODE); }              \
    inline H __##IN##2##HN##_##SUFFIX(I i) { return __emu::to_16bit<H>((long double)i, __emu::MODE); }
#define __EMU_16BIT_INT(HN, H, IN, I)                                                                    \
    __EMU_16BIT_INT_MODE(HN, H, IN, I, I_RN, rn) __EMU_16BIT_INT_MODE(HN, H, IN, I, I_RZ, rz)            \
    __EMU_16BIT_INT_MODE(HN, H, IN, I, I_RD, rd) __EMU_16BIT_INT_MODE(HN, H, IN, I, I_RU, ru)
#define __EMU_16BIT_ALL_INTS(HN, H)                                                                      \
    __EMU_16BIT_INT(HN, H, int, int) __EMU_16BIT_INT(HN, H, uint, unsigned)                              \
    __EMU_16BIT_INT(HN, H, short, short) __EMU_16BIT_INT(HN, H, ushort, unsigned short)                  \
    __EMU_16BIT_INT(HN, H, ll, long long) __EMU_16BIT_INT(HN, H, ull, unsigned long long)                \
    inline signed char __##HN##2char_rz(H h) { return __emu::from_16bit<signed char>(h, __emu::I_RZ); }  \
    inline unsigned char __##HN##2uchar_rz(H h) { return __emu::from_16bit<unsigned char>(h, __emu::I_RZ); }
__EMU_16BIT_ALL_INTS(half, __half)
__EMU_16BIT_ALL_INTS(bfloat16, __nv_bfloat16)
#undef __EMU_16BIT_ALL_INTS
#undef __EMU_16BIT_INT
#undef __EMU_16BIT_INT_MODE
inline short __bfloat16_as_short(__nv_bfloat16 b) { return (short)b.__x; }
inline __nv_bfloat16 __short_as_bfloat16(short s) { __nv_bfloat16 b; b.__x = (unsigned short)s; return b; }
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
    bool read_only;     // const / constexpr: compiled into read-only pages, which no one may write
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
        // A pointer to pointers (float** or float* const*, a table of arrays) says so: T_PTR elements.
        return ParamType{T_PTR, (int)sizeof(T), std::is_pointer<E>::value ? T_PTR : scalar_code<E>::value, size_or_zero<E>(),
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

#include "include/minilora_ptx.h"  // what inline PTX is translated into

#endif  // MINILORA_CUDA_EMU_H
