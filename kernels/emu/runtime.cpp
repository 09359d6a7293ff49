// runtime.cpp -- the scheduler behind minilora's CUDA emulator.
//
// How a launch runs (read this first):
//
//   * Blocks are handed out in an order chosen by the caller (forward, reverse, random) to one or
//     more OS threads, the *workers* (see "running the blocks on several OS threads" below); each
//     runs the blocks it takes one after another.  CUDA promises nothing about block order or
//     concurrency, so a correct kernel must not care.
//   * Inside a block every CUDA thread is a *fiber*: a function call with its own small stack that
//     can be paused and resumed.  A scheduler loop makes passes over the block's fibers in a fixed
//     order; a fiber runs until it reaches a barrier (__syncthreads, a warp collective) or returns
//     from the kernel, and then switches straight to the next runnable fiber of the pass (the last
//     one of the pass switches back to the scheduler).  Switching is a hand-written x86-64 routine that saves
//     six registers and the stack pointer (ucontext elsewhere), so a switch costs nanoseconds.
//   * __syncthreads() is a real barrier: when no fiber can run any more, the scheduler checks that
//     every thread of the block that has not exited waits at the *same* __syncthreads() (since Volta
//     exited threads no longer count, see release_barrier_or_explain), then releases them all (threads count themselves in as they arrive, so the common case needs no
//     scan of the block).  Anything else is reported as a BarrierError with the source lines.
//   * A warp is 32 consecutive linear thread ids.  A warp collective (__shfl_*_sync, __ballot_sync,
//     __syncwarp) parks each lane until every lane named in the mask has arrived; the last one to
//     arrive computes every lane's result and wakes the others.
//   * __shared__ memory is per block (each declaration, and the dynamic shared memory, in its own
//     mapping that the worker reuses for its next blocks) and filled with 0xFF bytes (NaN as float)
//     so a read before any write shows up in the result.  Each array ends at an inaccessible guard,
//     so an index past its end faults at once and becomes a KernelFault naming the array; canary
//     bytes catch writes in the rest of its page (see "shared memory" below).
//
// Errors never abort the process: they are recorded as a code plus message and the launch returns.
//
// Built twice by emulator.py: plainly (linked into a shared library loaded with ctypes) and with
// -DEMU_RUNNER under AddressSanitizer (linked into a small executable run as a child process).
// The system headers come first: cuda_emu.h defines CUDA keywords such as __noinline__ as macros,
// and newer glibc/libstdc++ headers spell their own attributes __attribute__((__noinline__)), which
// the macro would break ("'noinline' was not declared in this scope", seen with the GPU machine's g++).
#include <dlfcn.h>
#include <link.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <time.h>
#include <ucontext.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <csetjmp>
#include <cstdarg>
#include <cstdlib>
#include <deque>
#include <map>
#include <mutex>
#include <new>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#if defined(__SANITIZE_ADDRESS__)
#define EMU_ASAN 1
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif
#if !defined(__x86_64__) || defined(EMU_FORCE_UCONTEXT)
#define EMU_UCONTEXT 1
#endif

#include "cuda_emu.h"

#define EMU_EXPORT extern "C" __attribute__((visibility("default")))

// The built-in variables the header's blockDim/gridDim macros read (the same for every block).
dim3 __emu_block_dim;
dim3 __emu_grid_dim;
dim3 __emu_cluster_dim{1, 1, 1};
unsigned __emu::stack_slot_shift = 20;

// Defined in the wrapper that emulator.py generates for each source file.
extern "C" const __emu::KernelInfo* emu_kernel_table(int* count);
extern "C" const __emu::ConstantInfo* emu_constant_table(int* count);

namespace {
using namespace __emu;

// E_INTERRUPTED and E_TIMEOUT: the launch was stopped by Ctrl-C / its timeout= (see "Escapes" below).
// emulator.py replaces this mark in a crash message by " at file.cu:LINE" (found with addr2line).
#define kLocationMark "\x01LOC\x01"
// E_RACE: racecheck found a hazard (the runtime built with -DEMU_RACECHECK, see "racecheck" below).
// E_COMPILE: what nvcc (ptxas) would have refused at compile time but only shows when the kernel runs here.
enum ErrorCode { E_OK = 0, E_BARRIER = 1, E_FAULT = 2, E_INTERNAL = 3, E_INTERRUPTED = 4, E_TIMEOUT = 5, E_RACE = 6,
                 E_COMPILE = 7 };
// AT_GRID: in grid.sync() (cooperative launch); AT_TILE: in the sync of a thread_block_tile of more than 32 threads
// AT_NAMED: in a named barrier (PTX bar.sync id, count for part of the block); AT_CLUSTER: in cluster.sync()'s
// wait (barrier.cluster.wait), until every non-exited thread of the cluster has arrived
enum State { RUNNABLE, AT_BARRIER, AT_WARP, EXITED, AT_GRID, AT_TILE, AT_NAMED, AT_CLUSTER };
constexpr uint64_t kNotArrived = UINT64_MAX;  // Fiber::cluster_arrived of a thread not between arrive and wait
enum Order { ORDER_FORWARD = 0, ORDER_REVERSE = 1, ORDER_RANDOM = 2 };

// Each fiber's stack is the size the launch asks for (emulator.py sizes it from the compiler's
// -fstack-usage report, or the user's stack_size=); below each one lies an inaccessible guard
// region, so an overflow faults at once (and becomes a KernelFault) instead of silently writing
// into the neighbouring thread's stack.  The kernels are built with -fstack-clash-protection, which
// touches every page of a big frame in order, so even a 1 MiB local array cannot jump the guard.
#ifdef EMU_ASAN
constexpr size_t kMinStack = 256 * 1024;  // ASan's redzones make frames bigger
#else
constexpr size_t kMinStack = 16 * 1024;
#endif
constexpr size_t kGuard = 64 * 1024;
// The shadow of the fences' mapped bytes (see "the fences' mapped bytes" below; null: none): a load or store's
// check reads g_fence_shadow[address >> 3].
const volatile signed char* g_fence_shadow = nullptr;
size_t g_stack_size = 64 * 1024;           // of the current launch (a multiple of the page size)
constexpr unsigned char kCanaryByte = 0xA5;  // fills the bytes around each shared array (see SharedRegion)
// Inaccessible bytes on each side of each shared array (address space only): an index far past either
// end -- 1 MiB, or a whole grid's worth of a global index used by mistake -- still faults.
constexpr size_t kSharedGuard = 64u << 20;
constexpr size_t kMaxStaticShared = 48 * 1024;     // CUDA's limit for static __shared__
constexpr size_t kMaxShared = 227 * 1024;          // sm_90's limit per block, static + dynamic
// The kernel's cudaFuncAttributeMaxDynamicSharedMemorySize when the program set it (CuPy's
// max_dynamic_shared_size_bytes), for the launch; 0 when it did not: static + dynamic must then fit 48 KiB.
size_t g_max_dynamic_attr = 0;

struct Worker;

// The home of one __shared__ array (or of the dynamic shared memory) while a block runs (see "shared
// memory" below): its own mapping, reused by every block a worker runs, laid out as
//     [ guard: PROT_NONE ][ canary | the array ][ guard: PROT_NONE ]
// with the array ending where the upper guard starts (less what its 16-byte alignment leaves, which
// holds canary bytes like the rest of the page before the array).
struct SharedRegion {
    char* map = nullptr;       // the whole mapping, guards included (for munmap)
    size_t map_bytes = 0;
    char* lo = nullptr;        // the accessible pages [lo, hi)
    char* hi = nullptr;
    char* data = nullptr;      // the array: [data, data + size)
    size_t size = 0;
    bool canary_set = false;   // [lo, data) and [data + size, hi) hold kCanaryByte
    const char* name = nullptr;  // for messages; nullptr: the dynamic shared memory
    const char* file = nullptr;
    int line = 0;
};

// What a barrier touches (sp, idx, state, in_runtime, file/line, pred) comes first and the struct is
// cache-line aligned, so passing the turn to a fiber reads one line of it, not two.
struct alignas(64) Fiber {
    void* sp = nullptr;  // saved stack pointer while switched out (x86-64 path)
    Fiber* next = nullptr;  // the fiber after this one in the scheduler's order (see link_order)
    int order_pos = 0;      // this fiber's position in that order
    int state = RUNNABLE;
    uint3 idx{0, 0, 0};
    int linear = 0;
    // Set while this fiber is inside the runtime (which may allocate): no asynchronous jump then.
    volatile sig_atomic_t in_runtime = 0;
    // Where the fiber waits (for error messages).
    const char* file = nullptr;
    int line = 0;
    // Barrier predicate (__syncthreads_count and friends).
    int pred = 0;
    // Warp collective in progress: what this lane deposited and what it gets back.
    int wop = 0, warg = 0, wwidth = 32;
    unsigned wmask = 0;
    unsigned long long wval = 0, wresult = 0;
    const void* exchange = nullptr;  // what this lane shows its warp in a warp_gather (tensor-core fragments)
    // Between a split barrier's arrive and its wait (cuda::barrier, cg's barrier_arrive): racecheck orders what this
    // thread accesses there neither before nor after the barrier's phase (see "racecheck").
    bool split_arrived = false;
    // The cluster barrier's phase this thread arrived at (barrier.cluster.arrive), until its wait passes.
    uint64_t cluster_arrived = kNotArrived;
    char* stack = nullptr;
    Worker* worker = nullptr;  // the OS thread running this fiber's block
#ifdef EMU_ASAN
    void* fake_stack = nullptr;
#endif
#ifdef EMU_UCONTEXT
    ucontext_t uc;
#endif
};

// One asynchronous global -> shared copy, recorded when issued and performed ("landed") when a wait covers it.
struct AsyncCopy {
    char* dst;
    const char* src;
    size_t bytes, src_bytes;  // bytes written to dst; the first src_bytes come from src, the rest are zeros
    const char* file;         // where it was issued (for racecheck's report)
    int line;
};
struct AsyncQueue {
    std::vector<AsyncCopy> open;                // issued since the last commit
    std::deque<std::vector<AsyncCopy>> groups;  // committed, oldest first
};

// ---- launch state ---------------------------------------------------------------------------------
// One launch at a time (emulator.py holds a lock), but its blocks may run on several OS threads at
// once: a Worker is one such thread with everything it needs to run a block -- a copy of the launch's
// configuration, the block's fibers and shared memory, its own scheduler context and fiber stacks,
// its own crash/timeout escape and its own error.  Blocks are independent in CUDA (only atomics, which
// are real here, connect them), so workers never touch each other's state; the few things they share
// are in `Shared` below.  Worker 0 is the thread that called emu_launch.
struct alignas(64) Worker {  // (aligned: no cache line holds two workers' state)
    const KernelInfo* kernel = nullptr;
    void** args = nullptr;
    dim3 grid, block;
    size_t dyn_shared = 0;
    int thread_order = ORDER_FORWARD;
    bool cooperative = false;     // all blocks resident at once, so grid.sync() can work
    dim3 cluster{1, 1, 1};        // the kernel's __cluster_dims__ (1x1x1: every block is a cluster of its own)
    uint64_t cluster_phase = 0;   // phases of the running cluster's barrier completed so far
    uint64_t rng = 1;
    int nthreads = 0;
    std::vector<Fiber> fibers;
    std::vector<int> order;       // the order the scheduler resumes fibers in
    int bar_result = 0;           // value returned by __syncthreads_count/and/or
    // The __syncthreads() interval of the current block, counted as threads arrive, so that a
    // complete barrier is released without scanning the fibers: how many wait, whether all at the
    // first one's site, and the sum of their predicates.
    int bar_waiting = 0, bar_pred = 0;
    // Block barriers released, and the release whose arrivals were last checked (barrier_arrivals_complete)
    unsigned long long bar_releases = 0, bar_releases_checked = 0;
    bool bar_mixed = false;
    int named_arrived[16] = {};   // PTX's barriers 1..15 (bar.sync id, count): threads arrived in this phase
    int named_count[16] = {};     // the thread count the phase's first arrival gave (0: none yet; -1: the block)
    bool rebuild_fibers = false;  // a thread left through thread_exit(): its fiber cannot be resumed
    unsigned spin_turns = 0;      // turns given up spinning (spin_turn) in the current block
    bool asked_for_help = false;  // in the current block (ask_for_help)
    timespec block_start{};
    const char* bar_file = nullptr;
    int bar_line = 0;
    int error = E_OK;
    std::string message;
    size_t error_at = 0;          // position in the block order of the block that failed
    uint3 block_idx{0, 0, 0};     // of the block being run
    size_t block_pos = 0;         // its position in the block order
    // Shared memory of the current block.
    char* dyn = nullptr;          // nullptr until first touched in this block
    std::vector<char*> slot_ptr;  // per declaration; nullptr until first touched in this block
    SharedRegion dyn_region;      // where they live (kept for the next block and launch)
    std::vector<SharedRegion> slot_region;
    size_t static_bytes = 0;
    std::string output;           // device printf output of the current block
    // Asynchronous copies (cp.async, __pipeline_memcpy_async, cuda::memcpy_async, cg::memcpy_async) issued and
    // not yet landed, per CUDA thread (fibers keep their addresses for the whole launch; see "asynchronous copies").
    std::unordered_map<const Fiber*, AsyncQueue> async;
    const AsyncCopy* landing = nullptr;  // the copy being performed (a crash in its memcpy names where it was issued)
    uintptr_t printing_from = 0;  // inside a device printf: its call in the kernel (a crash in libc's formatting names it)
    // The scheduler: the running fiber and where the scheduler's own context is saved.
    Fiber* cur = nullptr;
    void* sched_sp = nullptr;
#ifdef EMU_UCONTEXT
    ucontext_t sched_uc;
#endif
    volatile sig_atomic_t in_fiber = 0;  // a fiber, not the scheduler, is running
    // mmap'd stacks, one slot per thread, reused across blocks and launches (see ensure_stacks).
    char* stack_pool = nullptr;   // the first slot
    size_t stack_pool_count = 0, stack_slot_size = 0;
    char* pool_map = nullptr;     // the mapping, for munmap
    size_t pool_map_bytes = 0;
    // Escapes (see below): this thread's jump back into its scheduler and what the handler saw.
    pid_t tid = 0;
    volatile sig_atomic_t running = 0;  // inside run_worker: may receive a forwarded stop request
    sigjmp_buf jump;
    volatile sig_atomic_t armed = 0;    // `jump` is valid
    int reason = 0, sig = 0, si_code = 0;
    uintptr_t addr = 0;
    int fault_write = -1;  // the faulting access wrote (1), read (0), or unknown (-1)
    bool crashed_in_fiber = false;
    uint3 crashed_thread{0, 0, 0};
    uintptr_t fault_pc = 0;  // the faulting instruction (or the call of exit/abort), for the source line
    char* altstack = nullptr;  // the signal stack of a worker thread (worker 0 uses g_altstack)
};
constexpr int kMaxWorkers = 64;
Worker g_workers[kMaxWorkers];
int g_nworkers = 1;                      // workers the current launch may use
bool g_one_worker = true;                // no other worker has been started (yet) in this launch
thread_local Worker* t_worker = nullptr;  // the worker this OS thread is (cold paths only: see fiber_of)

// What the workers of a launch share.
struct Shared {
    std::vector<size_t> block_order;        // the blocks, in the order they are handed out
    std::atomic<size_t> next{0};            // position in block_order of the next block to hand out
    std::atomic<size_t> stop_at{SIZE_MAX};  // position of the first failed block: no later one starts
    std::mutex lock;                        // guards the two below
    std::vector<std::pair<size_t, std::string>> output;  // printf text per block position
    std::atomic<size_t> output_bytes{0};
};
Shared g_shared;
std::string g_output;  // device printf output of the last launch, in block order
std::mutex g_slots_lock;

// The running fiber and its worker; valid only on a fiber's stack.  With several workers they come
// from the stack (see FiberTop in cuda_emu.h); with one, from worker 0's record, whose address is
// fixed: a barrier's switch then waits on one load fewer (the branch is always predicted).
struct Here {
    Fiber* fiber;
    Worker* worker;
};
inline Here here() {
    if (g_one_worker) {
        // (The empty asm keeps the compiler from reading worker 0's `cur` before the test: with
        // several workers that line is written at every switch of worker 0, and reading it from the
        // others would make it bounce between their caches.)
        __asm__ volatile("" ::: "memory");
        return Here{g_workers[0].cur, &g_workers[0]};
    }
    const __emu::FiberTop* top = __emu::fiber_top();
    return Here{static_cast<Fiber*>(top->fiber), static_cast<Worker*>(top->worker)};
}
inline Fiber* current_fiber() { return here().fiber; }
inline Worker& me() { return *t_worker; }

#ifdef EMU_ASAN
const void* g_main_stack_bottom = nullptr;
size_t g_main_stack_size = 0;
void* g_sched_fake_stack = nullptr;
#endif

struct SlotInfo { size_t size, align; std::string name; const char* file; int line; };
std::deque<SlotInfo> g_slots;  // every __shared__ declaration seen so far in this module (g_slots_lock)
std::atomic<long long> g_clock{0};

std::string fmt(const char* f, ...) __attribute__((format(printf, 1, 2)));
std::string fmt(const char* f, ...) {
    char buf[1024];
    va_list ap;
    va_start(ap, f);
    vsnprintf(buf, sizeof buf, f, ap);
    va_end(ap);
    return buf;
}
std::string where(const char* file, int line) {
    const char* base = file ? strrchr(file, '/') : nullptr;
    return fmt("%s:%d", base ? base + 1 : (file ? file : "?"), line);
}
std::string tid_str(const Fiber& f) { return fmt("thread (%u,%u,%u)", f.idx.x, f.idx.y, f.idx.z); }
std::string block_str() {
    const Worker& w = me();
    return fmt("block (%u,%u,%u) of kernel '%s'", w.block_idx.x, w.block_idx.y,
               w.block_idx.z, w.kernel->name);
}
void set_error(int code, const std::string& msg) {
    Worker& w = me();
    if (w.error == E_OK) { w.error = code; w.message = msg; w.error_at = w.block_pos; }
}
// racecheck's clocks (see "racecheck" below; empty unless built with -DEMU_RACECHECK).
void racecheck_block_barrier();
void racecheck_cluster_barrier();
void racecheck_mbarrier(const void* bar, int event);
void racecheck_warp_sync(int warp);

// ---- Escapes: crashes, Ctrl-C and timeouts become errors, not a dead Python -----------------------
//
// A kernel is arbitrary C++ running inside the Python process: a null-pointer write, an integer
// division by zero, a stack overflow or abort() would kill the interpreter (and a learner's notebook
// with it), and an endless loop could not even be interrupted.  Why signals + siglongjmp rather than
// a child process per launch: a child costs a fork and a copy of every argument each time (the
// sanitizer pays that; the fast path must stay fast), and a fault here is always ours to handle --
// it happens on a fiber whose whole launch is abandoned anyway, so nothing of it needs to survive.
// For the duration of a launch only (the previous handlers, Python's faulthandler included, and the
// thread's previous alternate stack are restored afterwards):
//   * SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT and SIGTRAP on a worker's thread run on_fault() on
//     an alternate signal stack (the fiber's own stack may be what overflowed).  It notes the signal,
//     the address, the faulting instruction and the CUDA thread -- plain stores, since a signal
//     handler must not allocate -- and siglongjmps back into the worker's run_worker(), which frees
//     the block's shared memory and records E_FAULT.  The next launch builds fresh fibers.
//   * SIGINT (only when Python asks: Python's own handler merely sets a flag, which a spinning kernel
//     never lets it read) and a POSIX timer's signal for timeout= run on_async().  Jumping out is
//     safe only while a fiber executes the kernel's own code: inside malloc or the runtime's string
//     work a jump would leave a lock held or a container half-updated.  Anywhere else the request
//     stays pending: the scheduler checks it after every fiber switch, and a 10 ms retry timer
//     re-delivers it to a fiber that spins inside libm.
// With several workers, each catches its own crashes (each has its own jump and signal stack).  A
// stop request (Ctrl-C, the timeout) reaches the launching thread, which passes it on to every other
// worker (and keeps retrying every 10 ms until the launch ends).  Fault signals on a thread that is no
// worker go to whatever handler was there before; a Ctrl-C that the kernel picked a non-worker thread
// for is forwarded to the launching thread.

#ifndef EMU_ASAN
constexpr int kFaultSignals[] = {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT, SIGTRAP};
constexpr int kNumFaultSignals = sizeof kFaultSignals / sizeof kFaultSignals[0];
constexpr double kRetrySeconds = 0.01;

struct Escape {
    volatile sig_atomic_t armed = 0;    // a launch is running with these handlers installed
    volatile sig_atomic_t pending = 0;  // E_INTERRUPTED or E_TIMEOUT, waiting for a safe moment
    pid_t tid = 0;                      // the launching OS thread
    int timer_signal = 0;
    timer_t timer{};
    bool has_timer = false, catch_sigint = false;
    double timeout_s = 0;
    struct sigaction saved_fault[kNumFaultSignals], saved_int, saved_timer;
    sigset_t saved_mask;
    stack_t saved_altstack;
};
Escape g_esc;
uintptr_t g_text_lo = 0, g_text_hi = 0;  // this library's machine code
alignas(64) char g_altstack[64 * 1024];
constexpr size_t kAltStack = sizeof g_altstack;
#endif

#ifndef EMU_ASAN
pid_t current_tid() { return pid_t(syscall(SYS_gettid)); }

uintptr_t pc_of(void* context) {
    const ucontext_t* uc = static_cast<const ucontext_t*>(context);
#if defined(__x86_64__)
    return uintptr_t(uc->uc_mcontext.gregs[REG_RIP]);
#elif defined(__aarch64__)
    return uintptr_t(uc->uc_mcontext.pc);
#else
    (void)uc;
    return 0;
#endif
}

// Whether a SIGSEGV's access was a write (1) or a read (0): the page fault's error code says so on
// x86-64; -1 where it is not known.
int fault_was_write(int sig, void* context) {
#if defined(__x86_64__)
    if (sig == SIGSEGV) return (static_cast<const ucontext_t*>(context)->uc_mcontext.gregs[REG_ERR] & 2) != 0;
#endif
    (void)sig;
    (void)context;
    return -1;
}

// Hands a signal that is not ours to the handler that was installed before the launch.
void chain(int sig, siginfo_t* si, void* context, const struct sigaction& old) {
    if (old.sa_flags & SA_SIGINFO) {
        if (old.sa_sigaction) old.sa_sigaction(sig, si, context);
    } else if (old.sa_handler == SIG_DFL) {
        sigaction(sig, &old, nullptr);  // a synchronous fault re-executes and now gets the default
        if (sig == SIGINT) raise(sig);
    } else if (old.sa_handler != SIG_IGN) {
        old.sa_handler(sig);
    }
}

// The worker this OS thread is, or nullptr (a handler must not touch thread-local storage: in a
// thread that never used it, the first access may call malloc).
Worker* worker_of_this_thread() {
    const pid_t tid = current_tid();
    for (int k = 0; k < g_nworkers; ++k)
        if (g_workers[k].tid == tid) return &g_workers[k];
    return nullptr;
}

[[noreturn]] void escape(Worker& w, int reason) {
    w.reason = reason;
    w.crashed_in_fiber = w.in_fiber && w.cur;
    if (w.crashed_in_fiber) w.crashed_thread = w.cur->idx;
    w.armed = 0;
    siglongjmp(w.jump, 1);
}

void on_fault(int sig, siginfo_t* si, void* context) {
    int k = 0;
    while (kFaultSignals[k] != sig) ++k;
    Worker* w = g_esc.armed ? worker_of_this_thread() : nullptr;
    if (!w || !w->armed) return chain(sig, si, context, g_esc.saved_fault[k]);
    w->sig = sig;
    w->si_code = si->si_code;
    w->addr = uintptr_t(si->si_addr);
    w->fault_pc = w->printing_from ? w->printing_from : pc_of(context);  // libc's vsnprintf: name the printf
    w->fault_write = fault_was_write(sig, context);
    escape(*w, E_FAULT);
}

void arm_timer(double seconds) {
    itimerspec when{};
    when.it_value.tv_sec = time_t(seconds);
    when.it_value.tv_nsec = long((seconds - double(time_t(seconds))) * 1e9);
    if (when.it_value.tv_sec == 0 && when.it_value.tv_nsec == 0) when.it_value.tv_nsec = 1;
    timer_settime(g_esc.timer, 0, &when, nullptr);
}

void on_async(int sig, siginfo_t* si, void* context) {
    const bool from_timer = sig == g_esc.timer_signal;
    if (!g_esc.armed) {
        if (!from_timer) chain(sig, si, context, g_esc.saved_int);
        return;
    }
    Worker* w = worker_of_this_thread();
    const bool launcher = w == &g_workers[0];
    if (!w || (!launcher && !from_timer)) {  // Ctrl-C landed on another thread: the launching one must stop
        syscall(SYS_tgkill, getpid(), g_esc.tid, sig);
        if (!w) return;
    }
    if (!g_esc.pending) g_esc.pending = from_timer ? E_TIMEOUT : E_INTERRUPTED;  // else a retry
    if (launcher) {  // pass the request on to the other workers, and retry until the launch ends
        for (int k = 1; k < g_nworkers; ++k)
            if (g_workers[k].running) syscall(SYS_tgkill, getpid(), g_workers[k].tid, g_esc.timer_signal);
        if (g_esc.has_timer) arm_timer(kRetrySeconds);
    }
    const uintptr_t pc = pc_of(context);
    if (w->armed && w->in_fiber && w->cur && !w->cur->in_runtime && pc >= g_text_lo && pc < g_text_hi) {
        w->fault_pc = pc;
        escape(*w, g_esc.pending);
    }
}

int find_text(dl_phdr_info* info, size_t, void* probe) {
    for (int i = 0; i < info->dlpi_phnum; ++i) {
        const ElfW(Phdr)& ph = info->dlpi_phdr[i];
        if (ph.p_type != PT_LOAD || !(ph.p_flags & PF_X)) continue;
        const uintptr_t lo = info->dlpi_addr + ph.p_vaddr, hi = lo + ph.p_memsz;
        if (uintptr_t(probe) >= lo && uintptr_t(probe) < hi) {
            g_text_lo = lo;
            g_text_hi = hi;
            return 1;
        }
    }
    return 0;
}

void install_escapes(double timeout_s, bool catch_sigint) {
    if (!g_text_hi) dl_iterate_phdr(find_text, reinterpret_cast<void*>(&pc_of));
    g_esc.tid = g_workers[0].tid = current_tid();
    g_esc.pending = 0;
    g_esc.armed = 1;  // the handlers below are ours until remove_escapes()
    g_esc.timeout_s = timeout_s;
    g_esc.catch_sigint = catch_sigint;
    stack_t alt{};
    alt.ss_sp = g_altstack;
    alt.ss_size = sizeof g_altstack;
    sigaltstack(&alt, &g_esc.saved_altstack);
    struct sigaction sa {};
    sigemptyset(&sa.sa_mask);
    sa.sa_sigaction = on_fault;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    for (int k = 0; k < kNumFaultSignals; ++k) sigaction(kFaultSignals[k], &sa, &g_esc.saved_fault[k]);
    g_esc.has_timer = timeout_s > 0 || catch_sigint;
    if (!g_esc.has_timer) return;
    g_esc.timer_signal = SIGRTMIN + 4;
    sa.sa_sigaction = on_async;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_RESTART;
    sigaddset(&sa.sa_mask, SIGINT);  // one asynchronous request at a time
    sigaddset(&sa.sa_mask, g_esc.timer_signal);
    sigaction(g_esc.timer_signal, &sa, &g_esc.saved_timer);
    if (catch_sigint) sigaction(SIGINT, &sa, &g_esc.saved_int);
    sigevent ev{};
    ev.sigev_notify = SIGEV_THREAD_ID;
    ev.sigev_signo = g_esc.timer_signal;
#ifndef sigev_notify_thread_id
#define sigev_notify_thread_id _sigev_un._tid
#endif
    ev.sigev_notify_thread_id = g_esc.tid;
    if (timer_create(CLOCK_MONOTONIC, &ev, &g_esc.timer) != 0) {
        g_esc.has_timer = false;
    } else if (timeout_s > 0) {
        arm_timer(timeout_s);
    }
    sigset_t unblock;
    sigemptyset(&unblock);
    sigaddset(&unblock, g_esc.timer_signal);
    if (catch_sigint) sigaddset(&unblock, SIGINT);
    pthread_sigmask(SIG_UNBLOCK, &unblock, &g_esc.saved_mask);
}

void remove_escapes() {
    g_esc.armed = 0;
    if (g_esc.timer_signal) {
        if (g_esc.has_timer) timer_delete(g_esc.timer);
        pthread_sigmask(SIG_SETMASK, &g_esc.saved_mask, nullptr);
        if (g_esc.catch_sigint) sigaction(SIGINT, &g_esc.saved_int, nullptr);
        // A timer signal already queued must not meet the default action (which ends the process).
        if (!(g_esc.saved_timer.sa_flags & SA_SIGINFO) && g_esc.saved_timer.sa_handler == SIG_DFL)
            g_esc.saved_timer.sa_handler = SIG_IGN;
        sigaction(g_esc.timer_signal, &g_esc.saved_timer, nullptr);
        g_esc.timer_signal = 0;
    }
    g_esc.has_timer = false;
    for (int k = 0; k < kNumFaultSignals; ++k) sigaction(kFaultSignals[k], &g_esc.saved_fault[k], nullptr);
    sigaltstack(&g_esc.saved_altstack, nullptr);
}
#endif  // !EMU_ASAN

// Marks a stretch of runtime code that an asynchronous jump must not cut short (see above).
struct RuntimeSection {
    Fiber* f;
    sig_atomic_t was;
    explicit RuntimeSection(Fiber* fiber) : f(fiber), was(fiber->in_runtime) { f->in_runtime = 1; }
    ~RuntimeSection() { f->in_runtime = was; }
};

// ---- context switching ---------------------------------------------------------------------------
#ifndef EMU_UCONTEXT
// void emu_switch(void** save_sp, void* next_sp): push the callee-saved registers, store the stack
// pointer, load the other fiber's stack pointer, pop its registers and return into it.
extern "C" void emu_switch(void** save_sp, void* next_sp);
asm(R"(
    .text
    .p2align 4
    .type emu_switch, @function
emu_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size emu_switch, .-emu_switch
)");
#endif

void fiber_main();

// Scheduler -> fiber.
inline void resume(Worker& w, Fiber* f) {
    w.cur = f;
#ifdef EMU_ASAN
    __sanitizer_start_switch_fiber(&g_sched_fake_stack, f->stack, g_stack_size);
#endif
    w.in_fiber = 1;
#ifdef EMU_UCONTEXT
    swapcontext(&w.sched_uc, &f->uc);
#else
    emu_switch(&w.sched_sp, f->sp);
#endif
    w.in_fiber = 0;
#ifdef EMU_ASAN
    __sanitizer_finish_switch_fiber(g_sched_fake_stack, nullptr, nullptr);
#endif
}

// The next runnable fiber of the scheduler's pass after fiber f, or nullptr at the end of the pass.
// It follows the fibers' own `next` links rather than an index into the worker's order: a barrier
// then waits on a short chain of loads (this fiber's record, the next one's, its stack), which is
// most of what a switch costs.
inline Fiber* next_in_pass(const Fiber* f) {
    for (Fiber* n = f->next; n; n = n->next) {
        if (n->state == RUNNABLE) {
            // Fetch what the coming switches will touch while n runs (256 stacks do not fit in L1):
            // the saved registers and FiberTop of the fiber after n, and the record and stack top of
            // the one after that (two steps ahead rather than one: the reduction benchmark
            // 32.5 -> 30.8 us per block).
            if (const Fiber* after = n->next) {
                for (int line = 0; line < 4; ++line) __builtin_prefetch(static_cast<char*>(after->sp) + 64 * line);
                __builtin_prefetch(__emu::fiber_top_of(uintptr_t(after->sp)));
                if (const Fiber* later = after->next) {
                    __builtin_prefetch(later);
                    __builtin_prefetch(later->sp);
                    if (later->next) __builtin_prefetch(later->next);
                }
            }
            return n;
        }
    }
    return nullptr;
}

// Fiber f -> the next fiber of the pass, or the scheduler.  Returns when f is resumed again.
// Passing the turn straight to the next runnable fiber (one switch) instead of through the
// scheduler (two switches) halves the cost of a barrier; the fibers still run in exactly the order
// the scheduler's pass would resume them (it continues after the last one that ran).  An error, a pending Ctrl-C or
// timeout, and the end of the pass go back to the scheduler.  (The ASan and ucontext builds always
// go through the scheduler: their switch bookkeeping assumes it.)
inline void yield_to_scheduler(Fiber* f, Worker& w) {
#if !defined(EMU_ASAN) && !defined(EMU_UCONTEXT)
    if (!w.error && !g_esc.pending) {
        if (Fiber* next = next_in_pass(f)) {
            w.cur = next;
            emu_switch(&f->sp, next->sp);
            return;
        }
    }
#endif
#ifdef EMU_ASAN
    __sanitizer_start_switch_fiber(f->state == EXITED ? nullptr : &f->fake_stack, g_main_stack_bottom,
                                   g_main_stack_size);
#endif
#ifdef EMU_UCONTEXT
    swapcontext(&f->uc, &w.sched_uc);
#else
    emu_switch(&f->sp, w.sched_sp);
#endif
#ifdef EMU_ASAN
    __sanitizer_finish_switch_fiber(f->fake_stack, &g_main_stack_bottom, &g_main_stack_size);
#endif
}

// A fiber's whole life: run the kernel, report that this thread has exited, and wait.  The next block
// of the launch resumes the same fiber (see reuse_block_fibers), which runs the kernel again as that
// block's thread with the same threadIdx: starting a CUDA thread then costs one ordinary switch, with
// no new stack frame to build and no mispredicted return into a fresh one.
void land_async_at_exit(Fiber* f);
void fiber_main() {
#ifdef EMU_ASAN
    __sanitizer_finish_switch_fiber(nullptr, &g_main_stack_bottom, &g_main_stack_size);
#endif
    Fiber* f = current_fiber();
    Worker& w = *f->worker;
    for (;;) {
        w.kernel->trampoline(w.args);
        if (!w.async.empty()) land_async_at_exit(f);
        f->state = EXITED;
        yield_to_scheduler(f, w);
    }
}

// PTX's `exit` in the middle of a kernel: the thread ends as if its kernel function had returned (its
// asynchronous copies land, barriers stop waiting for it).  Its fiber never comes back from here, so the
// worker builds fresh fibers for its next block rather than resuming this one.
[[noreturn]] void thread_exit() {
    Fiber* f = current_fiber();
    Worker& w = *f->worker;
    if (!w.async.empty()) land_async_at_exit(f);
    w.rebuild_fibers = true;
    f->state = EXITED;
    yield_to_scheduler(f, w);
    __builtin_unreachable();
}

// Errors found inside a fiber (bad shuffle mask, assert, ...): record and never come back.
[[noreturn]] void fail_in_fiber(int code, const std::string& msg) {
    set_error(code, msg);
    Fiber* f = current_fiber();
    f->state = EXITED;
    yield_to_scheduler(f, *f->worker);
    __builtin_unreachable();
}

// ---- fiber stacks ----------------------------------------------------------------------------------
// Each fiber's stack lies in a slot of 2^stack_slot_shift bytes, aligned to its size, so that code on
// the fiber finds its FiberTop from the stack pointer (cuda_emu.h).  From the top of a slot down: the
// FiberTop (in the top 64 KiB, a line and a page lower in each successive slot), the stack of the size the
// launch asks for (emulator.py sizes it from the compiler's -fstack-usage report, or the user's
// stack_size=), and below it, down to the slot's start, an inaccessible guard region of at least
// kGuard bytes, so an overflow faults at once (and becomes a KernelFault) instead of silently writing
// into the neighbouring thread's stack.
size_t g_slot_size = 0;  // of the current launch

// The top of a slot that holds the FiberTop wherever the stagger puts it (a whole number of pages).
size_t top_reserve() {
    const size_t page = size_t(sysconf(_SC_PAGESIZE));
    const size_t stagger = 64 * (__emu::kStaggerLines - 1) + 4096 * (__emu::kStaggerPages - 1);
    return (stagger + sizeof(__emu::FiberTop) + page - 1) / page * page;
}

size_t slot_size_for(size_t stack_size) {
    const size_t need = stack_size + top_reserve() + kGuard;
    unsigned shift = 12;
    while ((size_t(1) << shift) < need) ++shift;
    __emu::stack_slot_shift = shift;
    return size_t(1) << shift;
}
char* usable_stack(const char* slot) { return const_cast<char*>(slot) + g_slot_size - top_reserve() - g_stack_size; }

bool ensure_stacks(Worker& w, size_t n) {
    if (n <= w.stack_pool_count && w.stack_slot_size == g_slot_size) return true;
    if (w.pool_map) munmap(w.pool_map, w.pool_map_bytes);
    w.pool_map = nullptr;
    w.stack_pool = nullptr;
    w.stack_pool_count = 0;
    w.stack_slot_size = g_slot_size;
    w.pool_map_bytes = (n + 1) * g_slot_size;  // one slot more, to align the first to the slot size
    void* p = mmap(nullptr, w.pool_map_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) return false;
    w.pool_map = static_cast<char*>(p);
    w.stack_pool = reinterpret_cast<char*>((uintptr_t(p) + g_slot_size - 1) & ~uintptr_t(g_slot_size - 1));
    for (size_t i = 0; i < n; ++i) {  // the guard: everything of the slot below the stack
        char* slot = w.stack_pool + i * g_slot_size;
        mprotect(slot, size_t(usable_stack(slot) - slot), PROT_NONE);
    }
    w.stack_pool_count = n;
    return true;
}

// Makes fiber f (thread `linear` of its block) ready to start fiber_main on stack slot i of w's pool.
void init_fiber(Worker& w, Fiber& f, int i) {
    char* slot = w.stack_pool + size_t(i) * g_slot_size;
    f.stack = usable_stack(slot);
    f.worker = &w;
    __emu::FiberTop* top = __emu::fiber_top_of(uintptr_t(slot));
    top->thread_idx = f.idx;
    top->block_idx = w.block_idx;
    top->fiber = &f;
    top->worker = &w;
#ifdef EMU_ASAN
    // Frames of earlier fibers on this stack never returned; forget their redzones.
    ASAN_UNPOISON_MEMORY_REGION(f.stack, size_t(reinterpret_cast<char*>(top) - f.stack));
    f.fake_stack = nullptr;
#endif
#ifdef EMU_UCONTEXT
    getcontext(&f.uc);
    f.uc.uc_stack.ss_sp = f.stack;
    f.uc.uc_stack.ss_size = size_t(reinterpret_cast<char*>(top) - f.stack) & ~size_t(15);
    f.uc.uc_link = nullptr;
    makecontext(&f.uc, fiber_main, 0);
#else
    // Build the frame emu_switch expects to pop, just below the FiberTop: six zeroed registers, then
    // the "return address" fiber_main, then a fake return address for fiber_main itself (keeps the
    // ABI's alignment).  (The FiberTop's stagger staggers the hot top bytes of the stacks too.)
    void** sp = reinterpret_cast<void**>(reinterpret_cast<uintptr_t>(top) & ~uintptr_t(15));
    *--sp = nullptr;                                 // fiber_main's return address (never used)
    *--sp = reinterpret_cast<void*>(&fiber_main);    // where emu_switch's `ret` goes
    for (int r = 0; r < 6; ++r) *--sp = nullptr;     // rbp rbx r12 r13 r14 r15
    f.sp = sp;
#endif
}
// A new block for a fiber that keeps its stack: only blockIdx changes.
inline void set_block_of(Worker& w, const Fiber& f) {
    __emu::fiber_top_of(uintptr_t(f.stack))->block_idx = w.block_idx;
}

// ---- ordering ------------------------------------------------------------------------------------
uint64_t next_random() {  // xorshift64*: small, seedable, good enough for shuffling
    Worker& w = me();
    w.rng ^= w.rng >> 12;
    w.rng ^= w.rng << 25;
    w.rng ^= w.rng >> 27;
    return w.rng * 2685821657736338717ull;
}
void make_order(std::vector<int>& v, size_t n, int order) {
    v.resize(n);
    for (size_t i = 0; i < n; ++i) v[i] = order == ORDER_REVERSE ? int(n - 1 - i) : int(i);
    if (order == ORDER_RANDOM)
        for (size_t i = n; i > 1; --i) std::swap(v[i - 1], v[next_random() % i]);
}
// Chains the block's fibers in the scheduler's order (next_in_pass follows the chain).
void link_order(Worker& w) {
    const size_t n = w.order.size();
    for (size_t p = 0; p < n; ++p) {
        Fiber& f = w.fibers[size_t(w.order[p])];
        f.order_pos = int(p);
        f.next = p + 1 < n ? &w.fibers[size_t(w.order[p + 1])] : nullptr;
    }
}
// The thread order for a new block: built for the first one, drawn anew for each when it is random.
void order_threads(Worker& w, bool fresh) {
    if (!fresh && w.thread_order != ORDER_RANDOM) return;  // forward and reverse: the same every block
    make_order(w.order, size_t(w.nthreads), w.thread_order);
    link_order(w);
}

// ---- barriers ------------------------------------------------------------------------------------
// `bar.sync id` without a thread count: "all threads in the CTA participate" (PTX ISA), which since Volta means
// the block's threads that have not exited, as barrier 0 (__syncthreads()).
constexpr int kWholeBlock = -1;
static int live_threads(const Worker& w) {
    int n = 0;
    for (const Fiber& o : w.fibers) n += o.state != EXITED;
    return n;
}
// racecheck orders a named barrier's phases by this key, as an mbarrier's.
static const void* named_key(Worker& w, int id) { return &w.named_arrived[id]; }
static void release_named_barrier(Worker& w, int id) {
    w.named_arrived[id] = w.named_count[id] = 0;
    racecheck_mbarrier(named_key(w, id), 1);
    for (Fiber& o : w.fibers)
        if (o.state == AT_NAMED && o.warg == id) o.state = RUNNABLE;
}
// Called by the scheduler when no fiber can run.  Either releases a complete __syncthreads(),
// or explains why the block is stuck.  Returns false when the block cannot continue.
bool release_coalesced_groups();

// Every thread of the block waits at the same __syncthreads(): let them all pass.
void release_block_barrier(Worker& w) {
    ++w.bar_releases;
    w.bar_result = w.bar_pred;
    for (Fiber& f : w.fibers)
        if (f.state != EXITED) f.state = RUNNABLE;
    w.bar_waiting = w.bar_pred = 0;
    w.bar_mixed = false;
    if (w.thread_order == ORDER_RANDOM) {
        make_order(w.order, w.fibers.size(), ORDER_RANDOM);
        link_order(w);
    }
    racecheck_block_barrier();
}

// A thread_block_tile sync that can never complete: which of the tile's threads are missing, and why.
static bool explain_stuck_tile(const Worker& w, const Fiber& f) {
    int exited = 0, elsewhere = 0;
    const Fiber* other = nullptr;
    for (int t = f.warg; t < f.warg + f.wwidth; ++t) {
        const Fiber& o = w.fibers[size_t(t)];
        if (o.state == AT_TILE) continue;
        if (o.state == EXITED) ++exited; else ++elsewhere;
        if (!other) other = &o;
    }
    const std::string example = !other ? "" : other->state == EXITED ? " (e.g. " + tid_str(*other) + " has exited)"
                                             : " (e.g. " + tid_str(*other) + " at " + where(other->file, other->line) + ")";
    set_error(E_BARRIER, fmt("the sync of a thread_block_tile of %d threads at %s in %s (%s) can never complete: %d of "
                             "its threads have exited and %d wait elsewhere%s; on a GPU the tile waits forever. Every "
                             "thread of the tile must call the same collective.", f.wwidth,
                             where(f.file, f.line).c_str(), block_str().c_str(), tid_str(f).c_str(), exited, elsewhere,
                             example.c_str()));
    return false;
}

// A named barrier that can never complete: how many threads it waits for and how many came.
static bool explain_stuck_named_barrier(const Worker& w, const Fiber& f) {
    const std::string what = f.wwidth == kWholeBlock ? fmt("bar.sync %d", f.warg) : fmt("bar.sync %d, %d", f.warg, f.wwidth);
    const std::string of = f.wwidth == kWholeBlock ? fmt("the block's %d threads that have not exited", live_threads(w))
                                                   : fmt("its %d threads", f.wwidth);
    set_error(E_BARRIER, fmt("%s at %s in %s (%s) can never complete: %d of %s arrived and no other thread of the "
                             "block can run on; on a GPU the block waits forever", what.c_str(),
                             where(f.file, f.line).c_str(), block_str().c_str(), tid_str(f).c_str(),
                             w.named_arrived[f.warg], of.c_str()));
    return false;
}

// A whole-block named barrier (bar.sync id without a count) that the last exits completed: release it.
static bool release_whole_block_named_barriers(Worker& w) {
    for (int id = 1; id < 16; ++id)
        if (w.named_count[id] == kWholeBlock && w.named_arrived[id] >= live_threads(w)) {
            release_named_barrier(w, id);
            return true;
        }
    return false;
}

bool release_barrier_or_explain() {
    Worker& w = me();
    if (release_coalesced_groups()) return true;
    if (release_whole_block_named_barriers(w)) return true;
    int waiting = 0, exited = 0, at_warp = 0;
    const Fiber* first_wait = nullptr;
    const Fiber* first_exit = nullptr;
    for (const Fiber& f : w.fibers) {
        if (f.state == AT_BARRIER) { ++waiting; if (!first_wait) first_wait = &f; }
        else if (f.state == EXITED) { ++exited; if (!first_exit) first_exit = &f; }
        else if (f.state == AT_WARP || f.state == AT_TILE || f.state == AT_NAMED) ++at_warp;
    }
    if (at_warp == 0 && waiting > 0) {
        // Since Volta a barrier waits for the block's non-exited threads only: "__syncthreads() [is] enforced
        // per thread and thus will not succeed until reached by all non-exited threads in the block" (CUDA
        // Programming Guide, compute capability 7.x), and PTX's `exit` releases a barrier that only the exiting
        // threads held up.  So `if (i >= n) return;` before a __syncthreads() is defined: the rest pass it.
        // Everyone still running waits at a barrier: the same one?
        bool same = true;
        for (const Fiber& f : w.fibers)
            if (f.state != EXITED &&
                (f.line != first_wait->line || (f.file != first_wait->file && strcmp(f.file, first_wait->file) != 0))) {
                same = false;
                break;
            }
        if (same) {
            release_block_barrier(w);
            return true;
        }
        // Divergent barrier: list each __syncthreads() site with how many threads wait there.
        std::vector<std::pair<const Fiber*, int>> sites;
        for (const Fiber& f : w.fibers) {
            if (f.state == EXITED) continue;
            bool found = false;
            for (auto& s : sites)
                if (s.first->line == f.line && strcmp(s.first->file, f.file) == 0) { ++s.second; found = true; break; }
            if (!found) sites.push_back({&f, 1});
        }
        std::string msg = "divergent __syncthreads() in " + block_str() + ": threads wait at different barriers:";
        for (size_t i = 0; i < sites.size(); ++i)
            msg += fmt("%s %d threads (e.g. %s) at %s", i ? "," : "", sites[i].second,
                       tid_str(*sites[i].first).c_str(), where(sites[i].first->file, sites[i].first->line).c_str());
        if (exited)
            msg += fmt(" (%d %s exited, e.g. %s)", exited, exited == 1 ? "thread has" : "threads have",
                       tid_str(*first_exit).c_str());
        msg += ". Every thread of a block must reach the same __syncthreads(); move it out of the "
               "condition.";
        set_error(E_BARRIER, msg);
        return false;
    }
    for (const Fiber& f : w.fibers)
        if (f.state == AT_TILE) return explain_stuck_tile(w, f);
    for (const Fiber& f : w.fibers)
        if (f.state == AT_NAMED) return explain_stuck_named_barrier(w, f);
    // Some lanes wait in a warp collective that can never complete: say which lanes are missing.
    for (const Fiber& f : w.fibers) {
        if (f.state != AT_WARP) continue;
        const int base = f.linear & ~31;
        std::string missing, prev_why;
        int run_start = -1;
        for (int l = 0; l <= 32; ++l) {  // group consecutive lanes that are missing for the same reason
            std::string why;
            const int t = base + l;
            if (l < 32 && (f.wmask >> l & 1u) && t < w.nthreads && w.fibers[t].state != AT_WARP) {
                const Fiber& o = w.fibers[t];
                why = o.state == EXITED ? "have exited" : "wait at __syncthreads() at " + where(o.file, o.line);
            }
            if (why != prev_why) {
                if (!prev_why.empty())
                    missing += (run_start == l - 1 ? fmt(" lane %d ", run_start) : fmt(" lanes %d-%d ", run_start, l - 1)) +
                               prev_why + ";";
                run_start = l;
                prev_why = why;
            }
        }
        if (!missing.empty()) missing.pop_back();
        set_error(E_BARRIER,
                  fmt("warp collective at %s in %s (%s, warp %d, mask 0x%08x) can never complete:%s. "
                      "Every lane named in the mask must call the same warp function.",
                      where(f.file, f.line).c_str(), block_str().c_str(), tid_str(f).c_str(), f.linear / 32,
                      f.wmask, missing.c_str()));
        return false;
    }
    set_error(E_INTERNAL, "emulator deadlock with no waiting thread (bug in the emulator)");
    return false;
}

#ifndef EMU_ASAN
// The message for a launch stopped by Ctrl-C or its timeout.
std::string describe_stop(int reason, bool in_thread, uint3 t) {
    Worker& w = me();
    const std::string who = in_thread ? fmt("thread (%u,%u,%u) of ", t.x, t.y, t.z) + block_str() : block_str();
    if (reason == E_INTERRUPTED) return "interrupted (Ctrl-C) while running " + who;
    return fmt("kernel '%s' did not finish within timeout=%g s; stopped in %s. An endless loop? (A loop that "
               "waits for another thread's plain write never ends here: threads run one at a time until a "
               "barrier, and give the turn on volatile accesses, atomics, __nanosleep and mbarrier waits only; a block that "
               "waits for another block gets the blocks not started yet run beside it, up to 64, but not under racecheck "
               "or check_races' other block orders.)", w.kernel->name, g_esc.timeout_s, who.c_str());
}

// Where a fault address lies in the guard region below a fiber's stack: not there, in its upper half
// (the stack grew down into it: an overflow, whose -fstack-clash-protection probes land within a page
// of the stack), or in its lower half (reached from the slot below, by writing up past the top of that
// thread's stack: a local array indexed past its end).
enum StackGuardHit { NOT_IN_GUARD, GREW_INTO_GUARD, PAST_STACK_TOP };
StackGuardHit in_stack_guard(uintptr_t addr) {
    Worker& w = me();
    const uintptr_t pool = reinterpret_cast<uintptr_t>(w.stack_pool);
    if (!pool || addr < pool || addr >= pool + w.stack_pool_count * g_slot_size) return NOT_IN_GUARD;
    const char* slot = reinterpret_cast<const char*>(addr - (addr - pool) % g_slot_size);
    const uintptr_t guard_lo = uintptr_t(slot), guard_hi = uintptr_t(usable_stack(slot));
    if (addr >= guard_hi) return NOT_IN_GUARD;
    return addr >= guard_lo + (guard_hi - guard_lo) / 2 ? GREW_INTO_GUARD : PAST_STACK_TOP;
}

std::string shared_name(const SharedRegion& r, const Worker& w);
std::string exited_block_shared_hit(const Worker& w, uintptr_t addr);

// For a fault in the guard of one of the block's shared arrays: what the access did to which array.
std::string shared_guard_hit(const Worker& w, uintptr_t addr) {
    auto hit = [&](const SharedRegion& r) -> std::string {
        const uintptr_t map = uintptr_t(r.map), lo = uintptr_t(r.lo), hi = uintptr_t(r.hi);
        if (!r.map || addr < map || addr >= map + r.map_bytes || (addr >= lo && addr < hi)) return "";
        const intptr_t at = intptr_t(addr - uintptr_t(r.data));  // byte offset from the array's start
        const char* what = w.fault_write == 1 ? "a write" : w.fault_write == 0 ? "a read" : "an access";
        const std::string side = at < 0 ? "before its start"
                                 : size_t(at) == r.size ? "just past the end"
                                                        : fmt("%zu bytes past the end", size_t(at) - r.size);
        return fmt("out-of-bounds __shared__ access: %s at byte %td of %s, %s", what, at, shared_name(r, w).c_str(),
                   side.c_str()) +
               (r.name || at < 0 ? "" : "; launch with a larger shared_mem= if the kernel needs that much");
    };
    for (const SharedRegion& r : w.slot_region)
        if (std::string m = hit(r); !m.empty()) return m;
    return hit(w.dyn_region);
}

// Whether the page holding addr is mapped (a guard page is: PROT_NONE), for describe_fault.
bool page_mapped(uintptr_t addr) {
    unsigned char resident;
    return mincore(reinterpret_cast<void*>(addr & ~uintptr_t(4095)), 1, &resident) == 0;
}

// The message for a crash caught by on_fault(); emulator.py puts the source line at kLocationMark.
std::string describe_fault() {
    Worker& w = me();
    std::string what;
    bool wild = false;  // an invalid global address: what a GPU reports as CUDA_ERROR_ILLEGAL_ADDRESS
    const int sig = w.sig, code = w.si_code;
    const uintptr_t addr = w.addr;
    std::string shared = sig == SIGSEGV ? exited_block_shared_hit(w, addr) : "";
    if (shared.empty() && sig == SIGSEGV) shared = shared_guard_hit(w, addr);
    if (!shared.empty()) {
        what = shared;
    } else if ((sig == SIGSEGV || sig == SIGBUS) && in_stack_guard(addr) == PAST_STACK_TOP) {
        what = fmt("%s: an access above the top of the thread's stack, at address 0x%lx (a local array "
                   "indexed past its end?)", sig == SIGSEGV ? "SIGSEGV" : "SIGBUS", (unsigned long)addr);
    } else if ((sig == SIGSEGV || sig == SIGBUS) && in_stack_guard(addr) == GREW_INTO_GUARD && w.cur &&
               (addr - uintptr_t(w.stack_pool)) / g_slot_size !=
                   (uintptr_t(w.cur->stack) - uintptr_t(w.stack_pool)) / g_slot_size) {
        // the guard below another thread's stack, not this thread's own: an index, not the stack's growth
        what = fmt("%s: an access above the top of the thread's stack, at address 0x%lx, in another thread's stack "
                   "guard (a local array indexed far past its end?)", sig == SIGSEGV ? "SIGSEGV" : "SIGBUS",
                   (unsigned long)addr);
    } else if ((sig == SIGSEGV || sig == SIGBUS) && in_stack_guard(addr) == GREW_INTO_GUARD) {
        what = fmt("stack overflow: the thread needs more than its %zu-byte stack (large local arrays or deep "
                   "recursion); launch with a larger stack_size= (bytes per thread)", g_stack_size);
    } else if (sig == SIGSEGV && g_fence_shadow && addr >= uintptr_t(g_fence_shadow) + (uintptr_t(1) << 44) &&
               !page_mapped(addr)) {
        wild = true;
        // a kernel's inline fence check read the shadow (2^44 bytes, emulator_fence.py) of an address beyond the
        // 47-bit address space, which lands on no mapping (a guard page is one): name that address (to 8 bytes)
        what = fmt("SIGSEGV: invalid memory access near address 0x%lx (a wild pointer, outside the address space)",
                   (unsigned long)((addr - uintptr_t(g_fence_shadow)) << 3));
    } else if (sig == SIGSEGV && code == SI_KERNEL) {
        wild = true;
        // x86 raises a general-protection fault, which reports address 0, for an address outside the 47-bit
        // address space (a pointer offset by a huge index): not a null pointer
        what = "SIGSEGV: invalid memory access at an address outside the address space (a wild or freed pointer; "
               "the CPU does not report which address)";
    } else if (sig == SIGSEGV || sig == SIGBUS) {
        wild = true;
        what = fmt("%s: invalid memory access at address 0x%lx%s", sig == SIGSEGV ? "SIGSEGV" : "SIGBUS",
                   (unsigned long)addr, addr < 4096 ? " (a null pointer)" : " (a wild or freed pointer)");
    } else if (sig == SIGFPE) {
        // x86 raises the same #DE (si_code FPE_INTDIV) for a zero divisor and for INT_MIN / -1.  A GPU
        // raises nothing for either: the result is an unspecified value, so the bug would pass silently.
        what = code == FPE_INTDIV || code == FPE_INTOVF
                   ? "SIGFPE: integer division by zero (x / 0 or x % 0) or INT_MIN / -1 (on a GPU no error but an "
                     "unspecified value: the bug would pass silently there)"
                   : "SIGFPE: arithmetic exception";
    } else if (sig == SIGILL) {
        what = "SIGILL: illegal instruction (a trap the compiler put where the code has undefined "
               "behaviour, e.g. a division by a constant zero)";
    } else if (sig == SIGABRT) {
        what = "SIGABRT: the process was asked to abort (e.g. std::terminate)";
    } else {
        what = fmt("signal %d", sig);
    }
    const std::string who = w.crashed_in_fiber ? fmt("thread (%u,%u,%u) of ", w.crashed_thread.x, w.crashed_thread.y,
                                              w.crashed_thread.z) + block_str()
                                        : "the emulator's scheduler, running " + block_str() + ",";
    // What CuPy raises on a GPU for an invalid global address (past a shared array, a local one or the stack, a
    // GPU may read on silently or fail otherwise: no one error to name).
    const std::string on_gpu =
        wild ? " (on a GPU: CUDA_ERROR_ILLEGAL_ADDRESS: an illegal memory access was encountered)" : "";
    if (w.landing)  // the source (or destination) of an asynchronous copy was bad: name the copy, not libc's memcpy
        return who + fmt(" crashed landing the asynchronous copy issued at %s (%zu bytes from %p to %p)",
                         where(w.landing->file, w.landing->line).c_str(), w.landing->src_bytes,
                         static_cast<const void*>(w.landing->src), static_cast<void*>(w.landing->dst)) + ": " + what +
               on_gpu;
    if (w.printing_from)  // libc's formatting read a bad pointer: an argument of the wrong type for its conversion
        return who + " crashed in printf" kLocationMark ": " + what + " (an argument that does not match its "
               "conversion: a %s given something other than a string, or too few arguments?)" + on_gpu;
    return who + " crashed" kLocationMark ": " + what + on_gpu;
}
#endif

// coalesced_threads(): a lane waits there until no lane of its block can run on; then the lanes of
// its warp waiting at the same call form the group (the others have exited or wait elsewhere, as
// lanes of another branch do on a GPU).  Each gets the group's lane mask.
bool release_coalesced_groups() {
    Worker& w = me();
    bool released = false;
    for (Fiber& f : w.fibers) {
        if (f.state != AT_WARP || f.wop != W_COALESCE) continue;
        const int base = f.linear & ~31;
        unsigned mask = 0;
        for (int l = 0; l < 32 && base + l < w.nthreads; ++l) {
            const Fiber& o = w.fibers[base + l];
            if (o.state == AT_WARP && o.wop == W_COALESCE && o.line == f.line && strcmp(o.file, f.file) == 0)
                mask |= 1u << l;
        }
        // No racecheck_warp_sync here: on a GPU forming the group (or __activemask) orders no memory,
        // so a shared-memory exchange "synchronised" by it alone is still a race.
        for (int l = 0; l < 32; ++l)
            if (mask >> l & 1u) {
                w.fibers[base + l].wresult = mask;
                w.fibers[base + l].state = RUNNABLE;
            }
        released = true;
    }
    return released;
}

// Run one block to completion.  Returns false on error.
enum BlockResult { BLOCK_ERROR = 0, BLOCK_DONE = 1, BLOCK_AT_GRID = 2, BLOCK_AT_CLUSTER = 3 };

// -ftz=true (or --use_fast_math): a GPU flushes float subnormals to zero, read or made.  The FPU's control register
// does it for the OS thread running the block's fibers (SSE's MXCSR: FTZ bit 15, DAZ bit 6; ARM's FPCR: FZ, bit 24);
// set per block, restored after it, so the scheduler's own code and the caller's thread run as before.  Both flush
// double subnormals too, where a GPU's -ftz is for floats only: on x86-64 the build (emulator.py,
// _keep_double_subnormals) runs each of the kernel's double instructions and libm double calls between
// `ldmxcsr emu_csr_kept` (FTZ and DAZ clear) and `ldmxcsr emu_csr_flushing`, the two set by each launch and equal
// outside one (a static constructor of the kernel's runs before any launch, on Python's thread).
static bool g_flush_denormals = false;
extern "C" {
__attribute__((visibility("hidden"))) unsigned emu_csr_kept = 0x1F80, emu_csr_flushing = 0x1F80;
}
static void set_kept_and_flushing_csr(bool flushing) {
#if defined(__x86_64__) || defined(__i386__)
    unsigned csr = 0;
    __asm__ volatile("stmxcsr %0" : "=m"(csr));
    emu_csr_kept = csr & ~0x8040u;
    emu_csr_flushing = flushing ? emu_csr_kept | 0x8040u : emu_csr_kept;
#else
    (void)flushing;
#endif
}

struct FlushDenormals {
    unsigned long long saved = 0;
    bool on;
    explicit FlushDenormals(bool flush) : on(flush) {
        if (!on) return;
#if defined(__x86_64__) || defined(__i386__)
        unsigned csr = 0;
        __asm__ volatile("stmxcsr %0" : "=m"(csr));
        saved = csr;
        csr |= 0x8040u;
        __asm__ volatile("ldmxcsr %0" : : "m"(csr));
#elif defined(__aarch64__)
        __asm__ volatile("mrs %0, fpcr" : "=r"(saved));
        __asm__ volatile("msr fpcr, %0" : : "r"(saved | (1ull << 24)));
#endif
    }
    ~FlushDenormals() {
        if (!on) return;
#if defined(__x86_64__) || defined(__i386__)
        unsigned csr = unsigned(saved);
        __asm__ volatile("ldmxcsr %0" : : "m"(csr));
#elif defined(__aarch64__)
        __asm__ volatile("msr fpcr, %0" : : "r"(saved));
#endif
    }
};

static BlockResult run_block_fibers(Worker& w);
bool clustered(const Worker& w);
bool release_block_cluster(Worker& w);

BlockResult run_block(Worker& w) {
    FlushDenormals flushing(g_flush_denormals);
    return run_block_fibers(w);
}

static BlockResult run_block_fibers(Worker& w) {
    for (;;) {
        bool ran = false;
        for (size_t pos = 0; pos < w.order.size(); ++pos) {
            Fiber* f = &w.fibers[size_t(w.order[pos])];
            if (f->state != RUNNABLE) continue;
            resume(w, f);  // the fibers pass the turn along the pass:
            pos = size_t(w.cur->order_pos);  // continue after the last one that ran
            ran = true;
            if (w.error) return BLOCK_ERROR;
#ifndef EMU_ASAN
            if (g_esc.pending) {  // Ctrl-C or the timeout came while the runtime was busy: stop here
                set_error(g_esc.pending, describe_stop(g_esc.pending, true, w.cur->idx));
                return BLOCK_ERROR;
            }
#endif
        }
        if (w.bar_waiting == w.nthreads && !w.bar_mixed) {  // the common case, without a scan
            release_block_barrier(w);
            continue;
        }
        if (ran) continue;
        int exited = 0, at_grid = 0, at_cluster = 0;
        for (const Fiber& f : w.fibers) {
            exited += f.state == EXITED;
            at_grid += f.state == AT_GRID;
            at_cluster += f.state == AT_CLUSTER;
        }
        if (exited == w.nthreads) return BLOCK_DONE;
        if (at_cluster > 0) {  // no thread can run on before the cluster barrier's phase completes
            if (clustered(w)) return BLOCK_AT_CLUSTER;  // parked: the cluster's other blocks run (run_resident)
            if (release_block_cluster(w)) continue;     // a cluster of one block: this block is the whole of it
            return BLOCK_ERROR;
        }
        if (at_grid > 0 && at_grid + exited == w.nthreads) {
            // grid.sync() is a block barrier (which since Volta waits for the non-exited threads only), then
            // thread (0,0,0) arrives at the grid's counter for the block and spins, then a block barrier again
            // (cooperative_groups' sync_grids): threads that returned early are fine, as long as that one waits.
            const Fiber& master = w.fibers[0];
            if (master.state == AT_GRID) return BLOCK_AT_GRID;  // parked until every block arrives
            const Fiber* waiting = nullptr;
            for (const Fiber& f : w.fibers) if (f.state == AT_GRID) { waiting = &f; break; }
            set_error(E_BARRIER, fmt("%d threads of %s wait at grid.sync() at %s, but its thread (0,0,0) has exited "
                                     "the kernel: it is the thread that arrives at the grid barrier for its block (on "
                                     "a GPU the other blocks wait forever)", at_grid, block_str().c_str(),
                                     where(waiting->file, waiting->line).c_str()));
            return BLOCK_ERROR;
        }
        if (!release_barrier_or_explain()) return BLOCK_ERROR;
    }
}

// ---- cooperative launches: every block resident at once --------------------------------------------
// One worker runs them all, one block at a time, but a block that reaches grid.sync() is parked -- its fibers, stacks
// and shared memory kept -- and the next block runs; when every block waits at the grid barrier, all
// are released.  The state of the block being run is swapped into the worker, so the barrier, warp and
// shared-memory code above works on it unchanged.
constexpr size_t kMaxCooperativeThreads = 132 * 2048;  // an H200's resident threads: 132 SMs x 2048
// The emulator's own limit: every thread keeps a stack (and a guard region, one memory mapping each).
constexpr size_t kMaxEmulatedCooperativeThreads = 16384;

// racecheck's clocks of one block (see "racecheck"): the running block's are in racecheck's globals, a parked block's
// here (a block of a cluster keeps its own barrier count: blocks of a cluster pass __syncthreads() independently).
struct BlockClocks {
    uint32_t barriers = 0;
    std::vector<uint32_t> warp_syncs, released;
    std::vector<std::vector<uint32_t>> acquired;
};
struct BlockState {
    uint3 idx{0, 0, 0};
    std::vector<Fiber> fibers;
    std::vector<char*> slot_ptr;
    char* dyn = nullptr;
    std::vector<SharedRegion> slot_region;
    SharedRegion dyn_region;
    size_t static_bytes = 0;
    bool done = false;
    BlockClocks clocks;
    // The last access to this block's shared memory by another block of the cluster (map_shared_rank, mapa): its
    // cluster barrier phase and where it was; the block must not exit in that phase (see run_resident).
    uint64_t mapped_phase = kNotArrived;
    uint3 mapped_by{0, 0, 0};
    const char* mapped_file = nullptr;
    int mapped_line = 0;
};
void racecheck_swap_clocks(BlockClocks& clocks);
std::vector<BlockState> g_blocks;
BlockState* g_loaded = nullptr;  // the block whose state is in the worker right now

void swap_block_state(BlockState& b) {  // the same call loads a block into the worker and stores it back
    Worker& w = me();
    racecheck_swap_clocks(b.clocks);
    w.fibers.swap(b.fibers);
    w.slot_ptr.swap(b.slot_ptr);
    std::swap(w.dyn, b.dyn);
    w.slot_region.swap(b.slot_region);
    std::swap(w.dyn_region, b.dyn_region);
    std::swap(w.static_bytes, b.static_bytes);
}
void load_block(BlockState& b) {
    Worker& w = me();
    swap_block_state(b);
    g_loaded = &b;
    w.block_idx = b.idx;
}
void store_block() {
    swap_block_state(*g_loaded);
    g_loaded = nullptr;
}
void end_block_shared();
void unmap_region(SharedRegion& r);
// The shared arrays of the cluster's blocks that have exited, made inaccessible (see retire_cluster_block).
struct ExitedShared { uintptr_t lo, hi; uint3 block; unsigned rank; std::string name; };
std::vector<ExitedShared> g_exited_shared;
void free_cooperative_blocks() {  // after the launch, or after an escape out of it
    Worker& w = me();
    g_exited_shared.clear();
    if (g_loaded) store_block();
    for (BlockState& b : g_blocks) {
        load_block(b);
        end_block_shared();
        for (SharedRegion& r : w.slot_region) unmap_region(r);  // (the block's own, swapped in)
        unmap_region(w.dyn_region);
        store_block();
    }
    g_blocks.clear();
}

// ---- racecheck: shared-memory hazards (built with -DEMU_RACECHECK) ---------------------------------
// The kernel is compiled with GCC's -fsanitize=thread instrumentation but linked without its runtime:
// every load and store of the kernel calls __tsan_readN/__tsan_writeN, implemented below.  For each
// byte of the block's shared memory the shadow keeps the last writer and up to two readers of the
// current interval, with the point in time of each access: the block's barrier count and the
// warp's collective count.  Two accesses by different threads, at least one a write, are a hazard
// unless a __syncthreads() separates them, or both threads are lanes of one warp and a warp
// collective (__syncwarp, a shuffle, ...) separates them -- the rule of compute-sanitizer's racecheck.
// The array arguments (global memory) are checked the same way between threads of one block.
// Fibers run each lane alone up to its next barrier, so warp-synchronous code without __syncwarp
// silently computes something else here; with racecheck it is reported instead.  `volatile` orders
// nothing.  Atomics are not recorded (they do not race).
#ifdef EMU_RACECHECK
struct Access {
    int thread = -1;  // linear thread index in the block, -1: none
    unsigned rank = 0;  // the block's rank in its cluster (0 without clusters)
    uint32_t cluster_barrier = 0;  // cluster barriers released before the access (they order every block's threads)
    uint32_t barrier = 0, warp_sync = 0;
    uint32_t released = 0;  // the thread's mbarrier arrivals before this access (see "mbarriers" below)
    uintptr_t pc = 0;
    // Made between the thread's arrive and wait of a split barrier: the phase it arrived at does not order it
    // before other threads' accesses after their waits (on a GPU the wait only promises the arrivals' pasts), so
    // only the barrier after that one does.
    bool floating = false;
};
struct ShadowByte { Access write, read[2]; };
struct TrackedArray { uintptr_t lo, hi; std::string name; };
std::unordered_map<uintptr_t, ShadowByte> g_shadow;
std::vector<TrackedArray> g_tracked;         // this block's shared arrays
std::vector<TrackedArray> g_tracked_global;  // the launch's array arguments (emu_racecheck_track_global)
uint32_t g_barrier_count = 0;
uint32_t g_cluster_barrier_count = 0;  // of the running cluster
std::vector<uint32_t> g_warp_syncs;   // per warp of the block
// initcheck=True (the same build): instead of hazards, report a read of a __shared__ byte that no thread
// of the block has written yet.  Each block's shared memory starts out indeterminate on a GPU (here:
// 0xFF bytes, NaN as float), so such a read computes garbage that a one-block test may never notice.
// compute-sanitizer's initcheck covers only global memory; every array a launch gets here is initialized.
bool g_initcheck = false;

void track_shared(const char* p, size_t size, const std::string& name) {
    g_tracked.push_back(TrackedArray{uintptr_t(p), uintptr_t(p) + size, "__shared__ '" + name + "'"});
}
// Shared bytes an asynchronous copy will write when a wait lands it: any access before that is a hazard (on a
// GPU the copy lands at some moment before the wait, so the access sees the old bytes or the new, by timing).
struct PendingCopy { int thread; const char* file; int line; };
std::unordered_map<uintptr_t, PendingCopy> g_async_pending;

// mbarrier clocks (see "mbarriers" below)
std::vector<uint32_t> g_released;
std::vector<std::vector<uint32_t>> g_acquired;
struct MbarrierPhases { std::vector<uint32_t> open, done; };
std::unordered_map<uintptr_t, MbarrierPhases> g_mbarrier_phases;
void racecheck_new_block() {
    Worker& w = me();
    g_shadow.clear();
    g_async_pending.clear();
    g_tracked.clear();
    g_barrier_count = g_cluster_barrier_count = 0;
    g_warp_syncs.assign(size_t(w.nthreads + 31) / 32, 0);
    for (BlockState& b : g_blocks) b.clocks = BlockClocks{0, g_warp_syncs, {}, {}};  // a cluster's parked blocks
    g_released.clear();
    g_acquired.clear();
    g_mbarrier_phases.clear();
}
void racecheck_block_barrier() { ++g_barrier_count; }
void racecheck_cluster_barrier() { ++g_cluster_barrier_count; }
std::string pc_mark(uintptr_t pc);
unsigned cluster_rank_of(const Worker& w, uint3 b);
// A block of the cluster exits (loaded in the worker): an access by another block to its shared memory since the last
// cluster barrier is unordered with the exit -- undefined in CUDA, even where the emulator ran the access first.
void racecheck_block_exit(const std::vector<ExitedShared>& gone) {
    Worker& w = me();
    const unsigned rank = cluster_rank_of(w, w.block_idx);
    for (const auto& [byte, shadow] : g_shadow)
        for (const ExitedShared& e : gone) {
            if (byte < e.lo || byte >= e.hi) continue;
            for (const Access* a : {&shadow.write, &shadow.read[0], &shadow.read[1]})
                if (a->thread >= 0 && a->rank != rank && a->cluster_barrier == g_cluster_barrier_count) {
                    const BlockState& other = g_blocks[a->rank];
                    set_error(E_RACE, fmt("racecheck: %s (rank %u of the cluster) exits while block (%u,%u,%u) (rank %u) "
                                          "%s its %s at %s with no cluster barrier in between: a block's shared memory "
                                          "ends with it, so on a GPU that access may find it gone (CUDA leaves it "
                                          "undefined). End the kernel with cluster.sync()", block_str().c_str(), rank,
                                          other.idx.x, other.idx.y, other.idx.z, a->rank,
                                          a == &shadow.write ? "writes" : "reads", e.name.c_str(), pc_mark(a->pc).c_str()));
                    return;
                }
        }
}
void racecheck_swap_clocks(BlockClocks& c) {
    std::swap(g_barrier_count, c.barriers);
    g_warp_syncs.swap(c.warp_syncs);
    g_released.swap(c.released);
    g_acquired.swap(c.acquired);
}
void racecheck_warp_sync(int warp) { ++g_warp_syncs[size_t(warp)]; }

// mbarriers (inline PTX mbarrier.*, minilora_mbarrier.h) order memory between the threads that arrive on a phase
// and those that see it complete: a producer's writes before its arrive happen before a consumer's reads after
// its wait.  Vector clocks for that one relation: g_released[t] counts thread t's arrivals (an access keeps the
// count it saw), a phase collects its arrivals' counts, and a thread whose wait sees the phase complete takes
// them into g_acquired[t]: an earlier access by u is ordered before t's when t acquired a later arrival of u.
void mbarrier_clocks() {
    const size_t n = size_t(me().nthreads);
    if (g_released.size() != n) {
        g_released.assign(n, 0);
        g_acquired.assign(n, std::vector<uint32_t>(n, 0));
    }
}
void merge_clock(std::vector<uint32_t>& into, const std::vector<uint32_t>& from) {
    if (into.size() < from.size()) into.resize(from.size(), 0);
    for (size_t u = 0; u < from.size(); ++u) into[u] = std::max(into[u], from[u]);
}
void racecheck_mbarrier(const void* bar, int event) {  // 0: arrived (or completed tx), 1: phase completed, 2: acquired
    if (!t_worker || !me().cur) return;
    RuntimeSection busy(me().cur);  // (the clocks' allocations are the runtime's, not the kernel's device heap)
    mbarrier_clocks();
    MbarrierPhases& phases = g_mbarrier_phases[uintptr_t(bar)];
    const size_t t = size_t(me().cur->linear);
    if (event == 0) {
        const uint32_t released = ++g_released[t];
        if (phases.open.size() <= t) phases.open.resize(g_released.size(), 0);
        phases.open[t] = released;
    } else if (event == 1) {
        phases.done = phases.open;
        phases.open.clear();
    } else {
        merge_clock(g_acquired[t], phases.done);
    }
}

std::string pc_mark(uintptr_t pc) {  // emulator.py turns the mark into file:line (addr2line)
    Dl_info self{};
    if (!pc || !dladdr(reinterpret_cast<void*>(&racecheck_new_block), &self)) return "an unknown line";
    return fmt("\x01PC:%lx\x01", (unsigned long)(pc - uintptr_t(self.dli_fbase)));
}

[[noreturn]] void report_hazard(const char* kind, const Access& earlier, bool earlier_writes, bool now_writes,
                                uintptr_t pc, const TrackedArray& array, uintptr_t byte) {
    Worker& w = me();
    const Fiber& other = w.fibers[size_t(earlier.thread)];  // (same linear index, same threadIdx in any block)
    const bool across = earlier.rank != cluster_rank_of(w, w.block_idx);
    std::string earlier_who = tid_str(other);
    if (across)
        earlier_who += fmt(" of block (%u,%u,%u) (rank %u of the cluster)", g_blocks[earlier.rank].idx.x,
                           g_blocks[earlier.rank].idx.y, g_blocks[earlier.rank].idx.z, earlier.rank);
    fail_in_fiber(E_RACE, fmt("racecheck: %s hazard on %s (byte %lu) in %s: %s %s it at %s, then %s %s "
                              "it at %s, with no %s in between. On a GPU "
                              "the result depends on timing; here fibers run each thread alone up to its next "
                              "barrier, so the kernel silently computes something else. volatile does not order "
                              "accesses: add the barrier.",
                              kind, array.name.c_str(), (unsigned long)(byte - array.lo), block_str().c_str(),
                              earlier_who.c_str(), earlier_writes ? "writes" : "reads", pc_mark(earlier.pc).c_str(),
                              tid_str(*w.cur).c_str(), now_writes ? "writes" : "reads", pc_mark(pc).c_str(),
                              across ? "cluster.sync() (barrier.cluster.arrive + wait: threads of different blocks "
                                       "of a cluster are ordered by the cluster barrier only)"
                                     : "__syncthreads() (or __syncwarp() within a warp)"));
}

[[noreturn]] void report_uninitialized(const TrackedArray& array, uintptr_t byte, size_t n, uintptr_t pc) {
    Worker& w = me();
    fail_in_fiber(E_FAULT, fmt("initcheck: uninitialized __shared__ read: %s of %s reads byte %lu of %s (a %zu-byte access) at %s, "
                               "but no thread of the block has written it yet. Shared memory starts out "
                               "indeterminate on a GPU (here 0xFF bytes: NaN as a float, -1 as an int): write it "
                               "first, then __syncthreads() before other threads read it.",
                               tid_str(*w.cur).c_str(), block_str().c_str(),
                               (unsigned long)(byte - array.lo), array.name.c_str(), n, pc_mark(pc).c_str()));
}

// initcheck: a write marks its bytes, a read of an unmarked shared byte is reported.
void initcheck_access(const TrackedArray& array, uintptr_t a, size_t n, bool write, uintptr_t pc) {
    if (&array < g_tracked.data() || &array >= g_tracked.data() + g_tracked.size()) return;  // global memory
    for (size_t i = 0; i < n && a + i < array.hi; ++i) {
        ShadowByte& b = g_shadow[a + i];
        if (write) b.write.thread = me().cur->linear;
        else if (b.write.thread < 0) report_uninitialized(array, a + i, n, pc);
    }
}

// `at`: where the access is (an issue of another copy names its line; other accesses, their code address).
[[noreturn]] void report_async_hazard(const TrackedArray& array, uintptr_t byte, const PendingCopy& copy, bool write,
                                      const std::string& at) {
    Worker& w = me();
    fail_in_fiber(E_RACE, fmt("racecheck: %s of byte %lu of %s by %s of %s at %s, while an asynchronous copy into it is "
                              "in flight: %s issued it at %s (cp.async, __pipeline_memcpy_async, cuda::memcpy_async or "
                              "cooperative_groups::memcpy_async) and has not waited for it yet. On a GPU the copy lands "
                              "at some moment before its wait (cp.async.wait_group, __pipeline_wait_prior, "
                              "pipeline.consumer_wait(), cg::wait, the barrier's wait), so the %s sees old or new bytes "
                              "by timing: wait first (then __syncthreads() before other threads use the data).",
                              write ? "write" : "read", (unsigned long)(byte - array.lo), array.name.c_str(),
                              tid_str(*w.cur).c_str(), block_str().c_str(), at.c_str(), tid_str(w.fibers[size_t(copy.thread)]).c_str(),
                              where(copy.file, copy.line).c_str(), write ? "write" : "read"));
}
void check_async_pending(const TrackedArray& array, uintptr_t a, size_t n, bool write, uintptr_t pc,
                         const char* file = nullptr, int line = 0) {
    for (size_t i = 0; i < n && a + i < array.hi; ++i) {
        const auto it = g_async_pending.find(a + i);
        if (it != g_async_pending.end())
            report_async_hazard(array, a + i, it->second, write, file ? where(file, line) : pc_mark(pc));
    }
}
void racecheck_record(const void* p, size_t n, bool write, uintptr_t pc);
void racecheck_access(const void* p, size_t n, bool write, uintptr_t pc) {
    if (!t_worker) return;
    Worker& w = *t_worker;
    if (!w.in_fiber || !w.cur || w.cur->in_runtime) return;
    RuntimeSection busy(w.cur);  // the shadow's own allocations are the runtime's, not the kernel's device heap
    racecheck_record(p, n, write, pc);
}
// The access of the running CUDA thread (also the runtime's own on its behalf: an asynchronous copy's).
void racecheck_record(const void* p, size_t n, bool write, uintptr_t pc) {
    Worker& w = *t_worker;
    const uintptr_t a = uintptr_t(p);
    const TrackedArray* array = nullptr;
    for (const TrackedArray& r : g_tracked)
        if (a >= r.lo && a < r.hi) { array = &r; break; }
    if (!array)  // global memory: hazards between threads of one block (blocks do not synchronise at all)
        for (const TrackedArray& r : g_tracked_global)
            if (a >= r.lo && a < r.hi) { array = &r; break; }
    if (!array) return;  // a local variable, or memory the kernel was not given
    if (!g_async_pending.empty()) check_async_pending(*array, a, n, write, pc);
    if (g_initcheck) return initcheck_access(*array, a, n, write, pc);
    const int t = w.cur->linear, warp = t / 32;
    const Access now{t, cluster_rank_of(w, w.block_idx), g_cluster_barrier_count, g_barrier_count,
                     g_warp_syncs[size_t(warp)], g_released.empty() ? 0u : g_released[size_t(t)], pc,
                     w.cur->split_arrived};
    auto ordered = [&](const Access& e) {  // (an access made inside a split barrier: ordered by the barrier after)
        if (e.thread < 0 || now.cluster_barrier - e.cluster_barrier >= (e.floating ? 2u : 1u)) return true;
        if (e.rank != now.rank) return false;  // another block of the cluster: only the cluster barrier orders it
        return e.thread == t || now.barrier - e.barrier >= (e.floating ? 2u : 1u) ||
               (e.thread / 32 == warp && e.warp_sync != now.warp_sync) ||
               (!g_acquired.empty() && e.released < g_acquired[size_t(t)][size_t(e.thread)]);
    };
    for (size_t i = 0; i < n && a + i < array->hi; ++i) {
        ShadowByte& b = g_shadow[a + i];
        if (!ordered(b.write)) report_hazard(write ? "write-after-write" : "read-after-write", b.write, true, write, pc, *array, a + i);
        if (write) {
            for (const Access& r : b.read)
                if (!ordered(r)) report_hazard("write-after-read", r, false, true, pc, *array, a + i);
            b.write = now;
            b.read[0] = b.read[1] = Access{};
        } else if (b.read[0].thread < 0 || (b.read[0].thread == t && b.read[0].rank == now.rank) ||
                   ordered(b.read[0])) {
            b.read[0] = now;  // the slot's reader is stale or this thread: take it over
        } else {
            b.read[1] = now;  // a second reader of the same interval: keep both
        }
    }
}
// An asynchronous copy issued: its destination is off limits until the copy lands.  Two copies in flight into
// the same byte are a hazard too (which lands last is timing).
// The copy writes its bytes at some moment between issue and wait: against other threads' accesses it is a
// write at the issue too (a neighbour's earlier read with no barrier in between is a write-after-read hazard).
void racecheck_async_issue(const void* dst, size_t n, const char* file, int line, uintptr_t pc) {
    Worker& w = me();
    const uintptr_t a = uintptr_t(dst);
    for (const TrackedArray& r : g_tracked)
        if (a >= r.lo && a < r.hi) {
            check_async_pending(r, a, n, true, pc, file, line);
            racecheck_record(dst, n, true, pc);
            for (size_t i = 0; i < n && a + i < r.hi; ++i) g_async_pending[a + i] = PendingCopy{w.cur->linear, file, line};
            return;
        }
}
// ...and when it lands (at a wait of the thread that issued it), it is that thread's write at that moment.
void racecheck_async_land(const void* dst, size_t n, uintptr_t pc) {
    const uintptr_t a = uintptr_t(dst);
    for (size_t i = 0; i < n; ++i) g_async_pending.erase(a + i);
    racecheck_record(dst, n, true, pc);
}
// An atomic (not checked for races) reads and writes its bytes: initcheck wants them written first.
void racecheck_atomic(const volatile void* p, size_t n, bool reads, uintptr_t pc) {
    if (!g_initcheck) return;
    if (reads) racecheck_access(const_cast<const void*>(p), n, false, pc);
    racecheck_access(const_cast<const void*>(p), n, true, pc);
}
#else
constexpr bool g_initcheck = false;  // (initcheck runs in the racecheck build)
inline void track_shared(const char*, size_t, const std::string&) {}
inline void racecheck_async_issue(const void*, size_t, const char*, int, uintptr_t) {}
inline void racecheck_async_land(const void*, size_t, uintptr_t) {}
inline void racecheck_new_block() {}
void racecheck_swap_clocks(BlockClocks&) {}
void racecheck_block_exit(const std::vector<ExitedShared>&) {}
void racecheck_cluster_barrier() {}
void racecheck_mbarrier(const void*, int) {}
void racecheck_block_barrier() {}
void racecheck_warp_sync(int) {}
#endif

// An asynchronous copy lands (see "asynchronous copies" below): at a wait, or as its thread exits.
void land(const AsyncCopy& c, uintptr_t pc) {
    Worker& w = me();
    w.landing = &c;
    if (c.src_bytes) std::memcpy(c.dst, c.src, c.src_bytes);
    std::memset(c.dst + c.src_bytes, 0, c.bytes - c.src_bytes);
    w.landing = nullptr;
    racecheck_async_land(c.dst, c.bytes, pc);  // memcpy is not instrumented
}
// A thread that ends with copies in flight: they land (a GPU completes them too), committed or not.
void land_async_at_exit(Fiber* f) {
    Worker& w = *f->worker;
    const auto it = w.async.find(f);
    if (it == w.async.end()) return;
    RuntimeSection busy(f);
    AsyncQueue& q = it->second;
    q.groups.push_back(std::move(q.open));
    for (const auto& group : q.groups)
        for (const AsyncCopy& c : group) land(c, 0);
    w.async.erase(it);
}


// ---- shared memory -------------------------------------------------------------------------------
// A block's __shared__ arrays, and its dynamic shared memory, are placed when a thread of the block
// first reaches them and filled with 0xFF bytes (NaN as float, -1 as int), so that a read before any
// write shows up in the result.
//
// Fast build: each lives in its own SharedRegion (see the struct), between two inaccessible guards,
// and ends where the upper guard starts.  So a thread that reads or writes past the end faults at
// once -- on its own OS thread, where on_fault() turns it into a KernelFault naming the array (see
// describe_fault) -- instead of corrupting the heap the Python interpreter lives on; so does an index
// before the start that leaves the page.  The few bytes the 16-byte alignment leaves after the array,
// and the rest of the page before it, hold canary bytes that end_block_shared() checks: a write there
// is reported too, when the block ends.  A worker maps each region once and reuses it for its next
// blocks and launches (a mapping per block would cost system calls per block).
// Sanitizer build: an exact-size heap block instead, so AddressSanitizer reports the first stray byte.
size_t page_size() {
    static const size_t page = size_t(sysconf(_SC_PAGESIZE));
    return page;
}
size_t round_up(size_t n, size_t to) { return (n + to - 1) / to * to; }

#ifdef EMU_ASAN
char* alloc_shared(size_t size, size_t align) {  // (the name is looked for in ASan's reports: emulator.py)
    void* p = nullptr;
    if (posix_memalign(&p, align < 16 ? 16 : align, size ? size : 1) != 0) return nullptr;
    memset(p, 0xFF, size);
    return static_cast<char*>(p);
}
char* place_shared(SharedRegion& r, size_t size, size_t align, bool) {
    r.data = alloc_shared(size, align);
    r.size = size;
    return r.data;
}
void retire_shared(SharedRegion& r) {
    free(r.data);
    r.data = nullptr;
}
std::string canary_damage(SharedRegion&, const std::string&) { return ""; }  // ASan reported any stray byte
void unmap_region(SharedRegion& r) { r.map = nullptr; }
#else
void unmap_region(SharedRegion& r) {
    if (r.map) munmap(r.map, r.map_bytes);
    r.map = r.lo = r.hi = r.data = nullptr;
    r.map_bytes = r.size = 0;
    r.canary_set = false;
}

// Maps r with room for `size` bytes between its guards (one-page guards where address space is short).
bool map_region(SharedRegion& r, size_t size) {
    const size_t bytes = round_up(size, page_size());
    for (size_t guard : {kSharedGuard, page_size()}) {
        const size_t total = bytes + 2 * guard;
        void* p = mmap(nullptr, total, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (p == MAP_FAILED) continue;
        char* c = static_cast<char*>(p);
        if (bytes && mprotect(c + guard, bytes, PROT_READ | PROT_WRITE) != 0) {
            munmap(p, total);
            continue;
        }
        r.map = c;
        r.map_bytes = total;
        r.lo = c + guard;
        r.hi = r.lo + bytes;
        r.canary_set = false;
        return true;
    }
    return false;
}

// The block's copy of an array of `size` bytes in region r, poisoned; nullptr if it cannot be mapped.
// It ends where the upper guard starts or, with `at_start` (every other block), starts where the lower
// guard ends: so a read just past the end faults in one block, and a read just before the start
// (s[tid - 1] from thread 0) in the next -- a read leaves no trace in a canary.
char* place_shared(SharedRegion& r, size_t size, size_t align, bool at_start) {
    align = std::min(std::max(align, size_t(16)), page_size());
    if (!r.map || size_t(r.hi - r.lo) != round_up(size, page_size())) {
        unmap_region(r);
        if (!map_region(r, size)) return nullptr;
    }
    char* data = at_start ? r.lo : reinterpret_cast<char*>((uintptr_t(r.hi) - size) & ~uintptr_t(align - 1));
    if (data != r.data || size != r.size || !r.canary_set) {  // (else the canary is still in place)
        memset(r.lo, kCanaryByte, size_t(data - r.lo));
        memset(data + size, kCanaryByte, size_t(r.hi - (data + size)));
        r.data = data;
        r.size = size;
        r.canary_set = true;
    }
    memset(data, 0xFF, size);
    return data;
}
void retire_shared(SharedRegion&) {}  // the region stays mapped for the next block

// Which bytes of the canary around r's array were overwritten, as offsets from the array's start
// ("past the end of X: its bytes 1024..1027 changed"), or "" if it is intact.
std::string canary_damage(SharedRegion& r, const std::string& name) {
    const char* end = r.data + r.size;
    const char* first = nullptr;
    const char* last = nullptr;
    // After the array (under 16 bytes, or the rest of the page for an array placed at its start), then
    // before it (the rest of the page, a multiple of 16 bytes).  Compared 8 bytes at a time without a
    // branch (the compiler vectorises it), searched byte by byte only when something differs.
    auto damaged = [](const char* from, const char* to) {
        const uint64_t pattern = 0x0101010101010101ull * kCanaryByte;
        uint64_t diff = 0;
        const char* p = from;
        for (; p + 8 <= to; p += 8) {
            uint64_t v;
            memcpy(&v, p, 8);
            diff |= v ^ pattern;
        }
        for (; p < to; ++p) diff |= (unsigned char)*p ^ kCanaryByte;
        return diff != 0;
    };
    auto find = [&](const char* from, const char* to) {
        for (const char* p = from; p < to; ++p)
            if ((unsigned char)*p != kCanaryByte) (first ? last : first) = p, last = p;
    };
    if (damaged(end, r.hi)) find(end, r.hi);
    else if (damaged(r.lo, r.data)) find(r.lo, r.data);
    else return "";
    r.canary_set = false;
    return fmt("%s %s: its bytes %td..%td changed", first >= end ? "past the end of" : "before the start of",
               name.c_str(), first - r.data, last - r.data);
}
#endif

// Odd blocks (by linear index, so the same for any number of workers) place their shared arrays at the
// start of their pages, even ones at the end (see place_shared).
bool block_places_at_start(const Worker& w, uint3 block) {
    const uint64_t linear = block.x + uint64_t(w.grid.x) * (block.y + uint64_t(w.grid.y) * block.z);
    return linear & 1u;
}
bool block_places_at_start(const Worker& w) { return block_places_at_start(w, w.block_idx); }

// "__shared__ 'tile' (128 bytes, declared at k.cu:7)" or "extern __shared__ memory (shared_mem=...)".
std::string shared_name(const SharedRegion& r, const Worker& w) {
    if (!r.name) return fmt("extern __shared__ memory (shared_mem=%zu bytes at launch)", w.dyn_shared);
    return fmt("__shared__ '%s' (%zu bytes, declared at %s)", r.name, r.size, where(r.file, r.line).c_str());
}

// The block is over: report a write into the canary around one of its arrays, and let the next block
// have the regions.
void end_shared_array(Worker& w, SharedRegion& r) {
    const std::string damage = canary_damage(r, shared_name(r, w));
    if (!damage.empty())
        set_error(E_FAULT, "out-of-bounds write " + damage + " (seen when " + block_str() + " ended)");
    retire_shared(r);
}
void end_block_shared() {
    Worker& w = me();
    for (size_t s = 0; s < w.slot_ptr.size(); ++s) {
        if (!w.slot_ptr[s]) continue;
        end_shared_array(w, w.slot_region[s]);
        w.slot_ptr[s] = nullptr;
    }
    if (w.dyn) {
        end_shared_array(w, w.dyn_region);
        w.dyn = nullptr;
    }
    w.static_bytes = 0;
}

void init_block_fibers(Worker& w, std::vector<Fiber>& fibers, int first_stack) {
    w.bar_waiting = w.bar_pred = 0;
    std::fill(std::begin(w.named_arrived), std::end(w.named_arrived), 0);
    std::fill(std::begin(w.named_count), std::end(w.named_count), 0);
    w.bar_mixed = false;
    for (int i = 0; i < w.nthreads; ++i) {
        Fiber& f = fibers[i];
        f.linear = i;
        f.idx = uint3{unsigned(i % w.block.x), unsigned(i / w.block.x % w.block.y),
                      unsigned(i / (w.block.x * w.block.y))};
        f.state = RUNNABLE;
        f.line = 0;
        f.file = "";
        f.pred = 0;
        f.in_runtime = 0;
        f.cluster_arrived = kNotArrived;
        init_fiber(w, f, first_stack + i);
    }
}

// The fibers of a block that finished normally all wait in fiber_main's loop: the next block reuses
// them as they are (same stacks, same threadIdx).  Only after a normal finish -- a fiber that stopped
// with an error is parked inside the runtime, so an error ends the launch and the next one builds
// fresh fibers.  ASan builds always build fresh ones (its fiber bookkeeping retires an exited fiber).
void reuse_block_fibers(Worker& w) {
    w.bar_waiting = w.bar_pred = 0;
    std::fill(std::begin(w.named_arrived), std::end(w.named_arrived), 0);
    std::fill(std::begin(w.named_count), std::end(w.named_count), 0);
    w.bar_mixed = false;
    for (Fiber& f : w.fibers) {
        f.state = RUNNABLE;
        f.split_arrived = false;
        f.cluster_arrived = kNotArrived;
        f.line = 0;
        f.file = "";
        set_block_of(w, f);
    }
}

uint3 block_index(size_t b) {
    Worker& w = me();
    return uint3{unsigned(b % w.grid.x), unsigned(b / w.grid.x % w.grid.y), unsigned(b / (size_t(w.grid.x) * w.grid.y))};
}

// Releases a grid barrier once every block waits at it (at the same grid.sync()).
bool release_grid() {
    Worker& w = me();
    const Fiber* first = nullptr;
    for (BlockState& b : g_blocks)
        for (Fiber& f : b.fibers) {
            if (f.state == EXITED) continue;  // returned before the grid barrier: not waiting at it
            if (!first) first = &f;
            if (f.line != first->line || strcmp(f.file, first->file) != 0) {
                w.block_idx = b.idx;
                set_error(E_BARRIER, fmt("divergent grid.sync(): %s waits at %s, thread (%u,%u,%u) of %s at %s",
                                         tid_str(*first).c_str(), where(first->file, first->line).c_str(),
                                         f.idx.x, f.idx.y, f.idx.z, block_str().c_str(), where(f.file, f.line).c_str()));
                return false;
            }
        }
    for (BlockState& b : g_blocks)
        for (Fiber& f : b.fibers)
            if (f.state == AT_GRID) f.state = RUNNABLE;
    return true;
}

// Makes the blocks `blocks` (linear block numbers) resident at once: g_blocks[i] is blocks[i], its fibers built.
void make_resident(const std::vector<size_t>& blocks) {
    Worker& w = me();
    g_blocks.assign(blocks.size(), BlockState());
    for (size_t b = 0; b < blocks.size(); ++b) {
        g_blocks[b].idx = block_index(blocks[b]);
        g_blocks[b].fibers.assign(w.nthreads, Fiber());
        w.block_idx = g_blocks[b].idx;
        init_block_fibers(w, g_blocks[b].fibers, int(b) * w.nthreads);
    }
    w.fibers.clear();
    w.slot_ptr.clear();
}

bool release_cluster();
void retire_cluster_block();
bool exit_is_ordered(const BlockState& b);

// Runs the resident blocks (g_blocks, taken in `order`) until all have finished: each runs until it finishes or
// parks at the grid barrier (a cooperative launch) or the cluster barrier (`cluster`); then the barrier releases.
// A block of a cluster may finish while the others still wait (the cluster barrier waits for non-exited threads
// only); at the grid barrier every block must arrive.
int run_resident(const std::vector<size_t>& order, bool cluster) {
    Worker& w = me();
    for (;;) {
        size_t done = 0;
        const BlockState* finished = nullptr;
        for (size_t b : order) {
            BlockState& blk = g_blocks[b];
            if (blk.done) { ++done; finished = &blk; continue; }
            load_block(blk);
            order_threads(w, true);
            const BlockResult r = run_block(w);
            if (r == BLOCK_DONE && cluster && !exit_is_ordered(blk)) {
                store_block();
                return w.error;
            }
            if (r == BLOCK_DONE && cluster) retire_cluster_block();
            store_block();
            if (r == BLOCK_ERROR || w.error) return w.error;
            if (r == BLOCK_DONE) { blk.done = true; ++done; finished = &blk; }
        }
        if (done == order.size()) return w.error;
        if (cluster) {
            if (!release_cluster()) return w.error;
            continue;
        }
        if (done > 0) {
            w.block_idx = finished->idx;
            set_error(E_BARRIER, fmt("%s exited without reaching the grid.sync() that other blocks wait at: every "
                                     "block must arrive (on a GPU the others wait forever)", block_str().c_str()));
            return w.error;
        }
        if (!release_grid()) return w.error;
    }
}

int run_cooperative(const std::vector<size_t>& block_order) {
    std::vector<size_t> all(block_order.size());
    for (size_t b = 0; b < all.size(); ++b) all[b] = b;
    make_resident(all);
    return run_resident(block_order, false);
}

// ---- thread block clusters (sm_90) ------------------------------------------------------------------
// A kernel declared __cluster_dims__(x, y, z) runs its grid as clusters of x*y*z blocks, resident together:
// cluster.sync() (barrier.cluster.arrive + wait) is a barrier for every non-exited thread of the cluster, and a
// block reads and writes the others' shared memory (distributed shared memory: map_shared_rank, mapa and
// ld/st.shared::cluster).  Here one worker runs the launch cluster after cluster, each as a cooperative launch
// runs its grid: the blocks resident (g_blocks[rank]), each run until it parks at the cluster barrier.
unsigned cluster_blocks(const Worker& w) { return w.cluster.x * w.cluster.y * w.cluster.z; }
bool clustered(const Worker& w) { return cluster_blocks(w) > 1; }
unsigned cluster_rank_of(const Worker& w, uint3 b) {
    return ((b.z % w.cluster.z) * w.cluster.y + b.y % w.cluster.y) * w.cluster.x + b.x % w.cluster.x;
}

// Where a live thread that has not arrived at the cluster barrier's phase is held up, for the deadlock message.
std::string held_up_at(const Fiber& f) {
    const std::string at = where(f.file, f.line);
    switch (f.state) {
        case AT_BARRIER: return "waits at __syncthreads() at " + at;
        case AT_CLUSTER: return "waits at the cluster barrier at " + at;
        case AT_WARP: return "waits in a warp collective at " + at;
        case AT_TILE: case AT_NAMED: return "waits at a barrier of part of its block at " + at;
        default: return "cannot run on";
    }
}

// Completes the cluster barrier's phase when every non-exited thread of the cluster's blocks (pairs of fibers and
// block index) has arrived, releasing the threads waiting in it; else reports the deadlock (a GPU hangs).
bool release_cluster_of(const std::vector<std::pair<std::vector<Fiber>*, uint3>>& blocks) {
    Worker& w = me();
    size_t live = 0, arrived = 0;
    const Fiber* missing = nullptr;
    const Fiber* waiting = nullptr;
    uint3 missing_block{}, waiting_block{};
    for (const auto& [fibers, idx] : blocks)
        for (const Fiber& f : *fibers) {
            if (f.state == EXITED) continue;
            ++live;
            if (f.cluster_arrived == w.cluster_phase) ++arrived;
            else if (!missing) missing = &f, missing_block = idx;
            if (f.state == AT_CLUSTER && !waiting) waiting = &f, waiting_block = idx;
        }
    if (arrived == live) {
        ++w.cluster_phase;
        for (const auto& [fibers, idx] : blocks)
            for (Fiber& f : *fibers)
                if (f.state == AT_CLUSTER) f.state = RUNNABLE;
        racecheck_cluster_barrier();  // orders every access of the cluster's threads (see racecheck)
        return true;
    }
    w.block_idx = missing_block;
    const std::string late = tid_str(*missing) + " of " + block_str();
    w.block_idx = waiting_block;
    set_error(E_BARRIER, fmt("deadlock at the cluster barrier: %s of %s waits at %s (cluster.sync(), or "
                             "barrier.cluster.wait) for every non-exited thread of the cluster's %u blocks to arrive, "
                             "but %s never arrives: it %s (on a GPU the cluster hangs). Every thread of every block of "
                             "the cluster must reach the same cluster.sync(), or exit.", tid_str(*waiting).c_str(),
                             block_str().c_str(), where(waiting->file, waiting->line).c_str(), cluster_blocks(w),
                             late.c_str(), held_up_at(*missing).c_str()));
    return false;
}
bool release_cluster() {
    std::vector<std::pair<std::vector<Fiber>*, uint3>> blocks;
    for (BlockState& b : g_blocks) blocks.emplace_back(&b.fibers, b.idx);
    return release_cluster_of(blocks);
}
// A launch without clusters: each block is a cluster of one (as on sm_90, where every launch has clusters).
bool release_block_cluster(Worker& w) { return release_cluster_of({{&w.fibers, w.block_idx}}); }

// The block just finished while others of its cluster run on: its shared memory ends with it, so any later access
// by another block (through a pointer from map_shared_rank) faults, and describe_fault names it.
void retire_cluster_block() {
    Worker& w = me();
    std::vector<ExitedShared> gone;
    auto note = [&](const SharedRegion& r, const char* data) {
        if (data) gone.push_back(ExitedShared{uintptr_t(r.lo), uintptr_t(r.hi), w.block_idx,
                                              cluster_rank_of(w, w.block_idx), shared_name(r, w)});
    };
    for (size_t s = 0; s < w.slot_ptr.size(); ++s) note(w.slot_region[s], w.slot_ptr[s]);
    note(w.dyn_region, w.dyn);
    racecheck_block_exit(gone);
    end_block_shared();  // (its canaries checked)
#ifndef EMU_ASAN  // (the sanitizer build freed them: ASan reports a use after free)
    for (const ExitedShared& e : gone)
        if (e.hi > e.lo) mprotect(reinterpret_cast<void*>(e.lo), e.hi - e.lo, PROT_NONE);
#endif
    g_exited_shared.insert(g_exited_shared.end(), gone.begin(), gone.end());
}

// A block of the cluster exits (loaded in the worker): no other block may have reached its shared memory since the last
// cluster barrier -- that access and this exit are unordered, which CUDA leaves undefined (on a GPU the reader may
// find the memory gone), whatever order the emulator happened to run them in.
bool exit_is_ordered(const BlockState& b) {
    Worker& w = me();
    if (b.mapped_phase != w.cluster_phase) return true;
    set_error(E_FAULT, fmt("%s (rank %u of the cluster) exits while block (%u,%u,%u) of its cluster may still access its "
                           "shared memory: that block reached it at %s (map_shared_rank, or mapa) with no cluster "
                           "barrier between that access and this exit. A block's shared memory ends with it, so CUDA "
                           "leaves the access undefined: end the kernel with cluster.sync() so that every block "
                           "outlives the others' accesses", block_str().c_str(), cluster_rank_of(w, b.idx),
                           b.mapped_by.x, b.mapped_by.y, b.mapped_by.z, where(b.mapped_file, b.mapped_line).c_str()));
    return false;
}

std::string exited_block_shared_hit(const Worker& w, uintptr_t addr) {
    for (const ExitedShared& e : g_exited_shared) {
        if (addr < e.lo || addr >= e.hi) continue;
        const char* what = w.fault_write == 1 ? "a write to" : w.fault_write == 0 ? "a read of" : "an access to";
        return fmt("distributed shared memory of an exited block: %s %s of block (%u,%u,%u) (rank %u of the "
                   "cluster), which has already exited -- its shared memory ended with it, and CUDA leaves such an "
                   "access undefined (on a GPU it reads garbage or faults). A block must not exit while others of its "
                   "cluster may still access its shared memory: end the kernel with cluster.sync()", what,
                   e.name.c_str(), e.block.x, e.block.y, e.block.z, e.rank);
    }
    return "";
}

// Runs the grid cluster after cluster (in the launch's block order: check_races' other orders reverse or shuffle the
// clusters and the blocks within each).
int run_clusters(const std::vector<size_t>&) {
    Worker& w = me();
    const dim3 c = w.cluster;
    const size_t n = cluster_blocks(w);
    const size_t across = w.grid.x / c.x, down = w.grid.y / c.y, deep = w.grid.z / c.z;
    std::vector<int> clusters, ranks;
    make_order(clusters, across * down * deep, w.thread_order);
    for (int k : clusters) {
        const size_t cx = size_t(k) % across, cy = size_t(k) / across % down, cz = size_t(k) / (across * down);
        std::vector<size_t> blocks(n);
        for (size_t r = 0; r < n; ++r) {
            const size_t x = cx * c.x + r % c.x, y = cy * c.y + r / c.x % c.y, z = cz * c.z + r / (size_t(c.x) * c.y);
            blocks[r] = (z * w.grid.y + y) * w.grid.x + x;
        }
        make_resident(blocks);
        racecheck_new_block();  // the cluster's blocks share one shadow: their accesses to each other's memory race
        make_order(ranks, n, w.thread_order);
        run_resident(std::vector<size_t>(ranks.begin(), ranks.end()), true);
        free_cooperative_blocks();
        if (w.error) return w.error;
    }
    return w.error;
}

// ---- running the blocks on several OS threads ------------------------------------------------------
// Flushes the printf text of the block just run, tagged with its place in the block order, so the
// launch's output comes out in that order whichever worker ran which block.
void keep_output(Worker& w) {
    if (w.output.empty()) return;
    std::lock_guard<std::mutex> hold(g_shared.lock);
    g_shared.output_bytes += w.output.size();
    g_shared.output.emplace_back(w.block_pos, std::move(w.output));
    w.output.clear();
}

// A block failed: no block after it in the block order starts any more.  Blocks before it still run
// (one of them may fail too), so the error reported is the first in block order -- the same one a
// single worker reports.
void stop_after(size_t pos) {
    size_t now = g_shared.stop_at.load();
    while (pos < now && !g_shared.stop_at.compare_exchange_weak(now, pos)) {}
}

// Starting the other workers costs a thread each and their caches start cold: tens to hundreds of
// microseconds.  So worker 0 starts alone, and starts the others only once the blocks left look
// like more than kStartOthersAfter seconds of its work (measured on the blocks it has run).
constexpr double kStartOthersAfter = 0.002;
std::vector<std::thread> g_threads;
timespec g_launch_start{};

double seconds_since(const timespec& t0) {
    timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return double(t.tv_sec - t0.tv_sec) + 1e-9 * double(t.tv_nsec - t0.tv_nsec);
}
void run_worker(Worker* wp);
// Worker k gets its own copy of the launch's configuration (from worker 0, or from a spinning one that asks).
Worker& configure_worker(int k, const Worker& w) {
    Worker& o = g_workers[k];
    o.kernel = w.kernel;
    o.args = w.args;
    o.grid = w.grid;
    o.block = w.block;
    o.dyn_shared = w.dyn_shared;
    o.thread_order = w.thread_order;
    o.cooperative = false;
    o.cluster = w.cluster;
    o.rng = g_workers[0].rng + uint64_t(k);
    o.nthreads = w.nthreads;
    o.error = E_OK;
    o.message.clear();
    o.output.clear();
    o.fault_pc = 0;
    o.tid = 0;
    return o;
}
std::mutex g_threads_lock;  // g_threads and g_nworkers, which a spinning worker may grow during the launch
void start_other_workers_locked() {
    g_one_worker = false;  // from now on fibers find themselves from their stacks (see here())
    for (int k = 1; k < g_nworkers; ++k) {
        try {
            g_threads.emplace_back(run_worker, &g_workers[k]);
        } catch (const std::system_error&) {  // no more threads: the ones running do all the blocks
            break;
        }
    }
}
void start_other_workers() {
    std::lock_guard<std::mutex> hold(g_threads_lock);
    if (g_one_worker) start_other_workers_locked();
}
// A block that spins (on an atomic, a volatile flag, __nanosleep) for a long time may wait for another block: a
// hand-written grid barrier, a flag the previous tile of a split-K or chained scan sets.  A GPU runs the grid's blocks
// side by side, so they meet; one worker running its blocks one after another would spin forever.  So such a worker
// gets helpers: one more OS thread for each block not started yet (the plain multi-worker launch, grown), up to
// kMaxWorkers in all.  A block that spins for a thread of its own is unaffected: helpers only run other blocks sooner.  Not in the builds
// and schedules that need one worker (racecheck, the sanitizer, check_races' other orders, a cooperative launch).
// Asked after 2^14 turns and 0.1 s in the block: a kernel that merely does many atomics in short blocks never asks.
constexpr unsigned kSpinTurnsBeforeHelp = 1u << 14;
constexpr double kSpinSecondsBeforeHelp = 0.1;
void ask_for_help(const Worker& w) {
#if defined(EMU_ASAN) || defined(EMU_RACECHECK)
    (void)w;
#else
    if (w.cooperative || clustered(w) || w.thread_order != ORDER_FORWARD) return;
    std::lock_guard<std::mutex> hold(g_threads_lock);
    if (g_shared.next.load() >= g_shared.block_order.size()) return;  // every block has started already
    if (g_one_worker && g_nworkers > 1) return start_other_workers_locked();  // the launch's own, not yet started
    // Every block not started yet gets a worker at once (up to kMaxWorkers), as a GPU holds them all resident.
    const size_t left = g_shared.block_order.size() - g_shared.next.load();
    const int target = int(std::min(size_t(kMaxWorkers), size_t(g_nworkers) + left));
    while (g_nworkers < target) {
        Worker& o = configure_worker(g_nworkers, w);
        g_one_worker = false;  // fibers find themselves from their stacks from now on (see here())
        try {
            g_threads.emplace_back(run_worker, &o);
        } catch (const std::system_error&) {  // no more threads: the spin goes on (the launch's timeout= ends it)
            return;
        }
        ++g_nworkers;
    }
#endif
}

void maybe_start_other_workers(size_t blocks_done) {
    if (!g_one_worker || g_nworkers == 1) return;
    const size_t left = g_shared.block_order.size() - std::min(g_shared.next.load(), g_shared.block_order.size());
    if (seconds_since(g_launch_start) / double(blocks_done) * double(left) >= kStartOthersAfter) start_other_workers();
}

// A worker's loop: take the next position of the block order and run that block to completion.
void run_blocks(Worker& w) {
    bool fresh = true;  // this worker's fibers are still to be built
    for (size_t done = 0;; ++done) {
        if (done > 0 && &w == &g_workers[0]) maybe_start_other_workers(done);
        const size_t pos = g_shared.next.fetch_add(1);
        if (pos >= g_shared.block_order.size() || pos > g_shared.stop_at.load()) return;
        w.block_pos = pos;
        w.block_idx = block_index(g_shared.block_order[pos]);
        racecheck_new_block();
#ifdef EMU_ASAN
        fresh = true;
        // Placed here, on the worker's own stack, rather than lazily on a fiber's: ASan can then
        // walk the allocation's stack, and emulator.py tells from it that a stray access hit shared memory.
        w.dyn = place_shared(w.dyn_region, w.dyn_shared, 16, false);
#endif
        if (fresh || w.rebuild_fibers) init_block_fibers(w, w.fibers, 0);
        else reuse_block_fibers(w);
        w.rebuild_fibers = false;
        w.spin_turns = 0;
        w.asked_for_help = false;
        clock_gettime(CLOCK_MONOTONIC, &w.block_start);
        order_threads(w, fresh);
        fresh = false;
        const BlockResult r = run_block(w);
        end_block_shared();
        keep_output(w);
        if (r != BLOCK_DONE || w.error) return stop_after(pos);
    }
}

// One worker, on its own OS thread or (worker 0) on the launching one.
void run_worker(Worker* wp) {
    Worker& w = *wp;
    t_worker = &w;
    w.fibers.assign(w.nthreads, Fiber());
    w.async.clear();  // copies a failed launch left in flight die with it (their fibers are gone)
    w.landing = nullptr;
    w.printing_from = 0;
    if (!ensure_stacks(w, w.nthreads)) {
        set_error(E_INTERNAL, "could not allocate fiber stacks");
        return stop_after(0);
    }
#ifdef EMU_ASAN
    run_blocks(w);
#else
    stack_t alt{}, saved{};
    const bool own_altstack = &w != &g_workers[0];  // worker 0's is set up by install_escapes
    if (own_altstack) {
        if (!w.altstack) w.altstack = static_cast<char*>(malloc(kAltStack));
        alt.ss_sp = w.altstack;
        alt.ss_size = kAltStack;
        sigaltstack(&alt, &saved);
    }
    w.tid = current_tid();
    w.running = 1;
    if (sigsetjmp(w.jump, 1)) {  // a crash, Ctrl-C or the timeout jumped out of the kernel
        w.in_fiber = 0;
        set_error(w.reason, w.reason == E_FAULT ? describe_fault()
                                                : describe_stop(w.reason, w.crashed_in_fiber, w.crashed_thread));
        end_block_shared();
        keep_output(w);
        stop_after(w.block_pos);
    } else {
        w.armed = 1;
        run_blocks(w);
    }
    w.armed = 0;
    w.running = 0;
    if (own_altstack) sigaltstack(&saved, nullptr);
#endif
}

// How many OS threads run this launch's blocks.  One where a single order matters: a cooperative
// launch (all blocks share one scheduler), the check_races schedules other than forward (their block
// order is the point), racecheck (one shadow memory) and the sanitizer (ASan's fiber bookkeeping).
int workers_for(int requested, size_t nblocks, const Worker& w) {
    int n = requested < 1 ? 1 : (requested > kMaxWorkers ? kMaxWorkers : requested);
    if (size_t(n) > nblocks) n = int(nblocks);
#if defined(EMU_ASAN) || defined(EMU_RACECHECK)
    n = 1;
#endif
    if (w.cooperative || w.thread_order != ORDER_FORWARD) n = 1;
    return n;
}

// A launch whose blocks are resident together: a cooperative one (all of them), or one of clusters (each cluster's).
int run_resident_launch(Worker& w, const std::vector<size_t>& block_order, size_t resident_blocks,
                        int (*run)(const std::vector<size_t>&)) {
    if (!ensure_stacks(w, resident_blocks * w.nthreads)) {
        set_error(E_INTERNAL, "could not allocate fiber stacks");
        return w.error;
    }
#ifndef EMU_ASAN
    w.running = 1;
    if (sigsetjmp(w.jump, 1)) {  // a crash, Ctrl-C or the timeout jumped out of the kernel
        w.in_fiber = 0;
        set_error(w.reason, w.reason == E_FAULT ? describe_fault()
                                                : describe_stop(w.reason, w.crashed_in_fiber, w.crashed_thread));
        free_cooperative_blocks();
        w.running = 0;
        return w.error;
    }
    w.armed = 1;
#endif
    run(block_order);
    free_cooperative_blocks();
#ifndef EMU_ASAN
    w.armed = 0;
    w.running = 0;
#endif
    return w.error;
}

// Waits for the other workers, including any that a spinning block started while we waited (ask_for_help).
void join_workers() {
    for (;;) {
        std::thread t;
        {
            std::lock_guard<std::mutex> hold(g_threads_lock);
            if (g_threads.empty()) return;
            t = std::move(g_threads.back());
            g_threads.pop_back();
        }
        t.join();
    }
}

int run_launch(int requested_workers, bool start_workers_at_once) {
    Worker& w = g_workers[0];
    w.nthreads = int(w.block.x * w.block.y * w.block.z);
    const size_t nblocks = size_t(w.grid.x) * w.grid.y * w.grid.z;
    if (w.cooperative && nblocks * w.nthreads > kMaxCooperativeThreads) {
        set_error(E_INTERNAL, fmt("a cooperative launch of %zu blocks x %d threads does not fit on the GPU at once "
                                  "(at most %zu resident threads on an H200): CUDA refuses it "
                                  "(cudaErrorCooperativeLaunchTooLarge)", nblocks, w.nthreads, kMaxCooperativeThreads));
        return w.error;
    }
    if (w.cooperative && nblocks * w.nthreads > kMaxEmulatedCooperativeThreads) {
        set_error(E_INTERNAL, fmt("a cooperative launch of %zu blocks x %d threads is more than the CPU emulator runs "
                                  "(%zu threads at most: each keeps its own stack until grid.sync()); use a smaller "
                                  "grid with a grid-stride loop", nblocks, w.nthreads, kMaxEmulatedCooperativeThreads));
        return w.error;
    }
    if (w.cooperative && clustered(w)) {
        set_error(E_INTERNAL, "a cooperative launch (enable_cooperative_groups=True) of a kernel with __cluster_dims__ "
                              "is not modelled by minilora's CUDA emulator: use cluster.sync() within clusters, or "
                              "grid.sync() without them");
        return w.error;
    }
    __emu_block_dim = w.block;
    __emu_grid_dim = w.grid;
    __emu_cluster_dim = w.cluster;
    g_slot_size = slot_size_for(g_stack_size);
    std::vector<size_t>& block_order = g_shared.block_order;
    {
        std::vector<int> tmp;
        make_order(tmp, nblocks, w.thread_order);
        block_order.assign(tmp.begin(), tmp.end());
    }
    g_shared.next = 0;
    g_shared.stop_at = SIZE_MAX;
    g_shared.output.clear();
    g_shared.output_bytes = 0;
    if (w.cooperative || clustered(w)) {
        g_nworkers = 1;
        g_one_worker = true;
        w.fibers.clear();
        w.block_pos = 0;
        if (w.cooperative) run_resident_launch(w, block_order, nblocks, run_cooperative);
        else run_resident_launch(w, block_order, cluster_blocks(w), run_clusters);
        keep_output(w);
    } else {
        g_nworkers = workers_for(requested_workers, nblocks, w);
        for (int k = 1; k < g_nworkers; ++k) configure_worker(k, w);
        g_one_worker = true;
        clock_gettime(CLOCK_MONOTONIC, &g_launch_start);
        if (start_workers_at_once && g_nworkers > 1) start_other_workers();
        run_worker(&w);  // which starts the others when the launch is worth it
        join_workers();
        g_one_worker = true;
        t_worker = &w;
        // The error of the first failed block in block order, as one worker would have reported it.
        const Worker* first = nullptr;
        for (int k = 0; k < g_nworkers; ++k)
            if (g_workers[k].error && (!first || g_workers[k].error_at < first->error_at)) first = &g_workers[k];
        if (first && first != &w) {
            w.error = first->error;
            w.message = first->message;
            w.fault_pc = first->fault_pc;
        }
    }
    // The device printf text, in block order (only of blocks up to a failed one, as one worker would run).
    std::stable_sort(g_shared.output.begin(), g_shared.output.end(),
                     [](const auto& a, const auto& b) { return a.first < b.first; });
    g_output.clear();
    for (const auto& chunk : g_shared.output)
        if (chunk.first <= g_shared.stop_at) g_output += chunk.second;
    g_shared.output.clear();
    return w.error;
}
}  // namespace

// ---- the API the header's macros call --------------------------------------------------------------
namespace __emu {
int syncthreads(int kind, int pred, const char* file, int line) {
    const Here at = here();
    Fiber* f = at.fiber;
    Worker& w = *at.worker;
    RuntimeSection busy(f);
    f->state = AT_BARRIER;
    f->file = file;
    f->line = line;
    f->pred = pred;
    if (w.bar_waiting++ == 0) {
        w.bar_file = file;
        w.bar_line = line;
    } else if (line != w.bar_line || (file != w.bar_file && strcmp(file, w.bar_file) != 0)) {
        w.bar_mixed = true;  // a divergent barrier: release_barrier_or_explain() reports it
    }
    w.bar_pred += pred;
    yield_to_scheduler(f, w);
    // Released: every thread passed the same barrier, w.bar_result counts the true predicates.
    f->pred = 0;
    switch (kind) {
        case BAR_COUNT: return w.bar_result;
        case BAR_AND: return w.bar_result == w.nthreads;
        case BAR_OR: return w.bar_result > 0;
        default: return 0;
    }
}

// A split barrier (cuda::barrier's arrive() / wait(token), cooperative groups' barrier_arrive / barrier_wait): the
// phase completes at the wait, as __syncthreads() (every thread reaches it on a GPU too, or has exited), and what a
// thread accesses between its arrive and its wait floats for racecheck: ordered by the next barrier only.
void split_barrier_arrive() { current_fiber()->split_arrived = true; }
void split_barrier_wait(const char* file, int line) {
    syncthreads(BAR_PLAIN, 0, file, line);
    current_fiber()->split_arrived = false;
}

// cuda::barrier (and a block-scoped cuda::pipeline, built on such barriers in libcu++) counts arrivals, up to the
// expected count its init() was given (the block's thread count): a thread that returned before arriving never
// arrives, so on a GPU the phase never completes and the block hangs.  The block barrier beneath it here waits for
// the non-exited threads only (as __syncthreads() does since Volta), so once it has released, the threads that
// exited without arriving are the ones a GPU would still wait for.  The first thread out of each release checks
// (the others have not run on yet: none has exited since).
void barrier_arrivals_complete(const char* what, const char* file, int line) {
    Worker& w = me();
    if (w.bar_releases_checked == w.bar_releases) return;
    w.bar_releases_checked = w.bar_releases;
    int missing = 0;
    const Fiber* example = nullptr;
    for (const Fiber& f : w.fibers)
        if (f.state == EXITED && !f.split_arrived) {
            ++missing;
            if (!example) example = &f;
        }
    if (!missing) return;
    Fiber* f = current_fiber();
    RuntimeSection busy(f);
    fail_in_fiber(E_BARRIER, fmt("deadlock: %s at %s in %s can never complete on a GPU: %d of the block's %d threads "
                                 "exited before arriving (e.g. %s), and its expected count is all %d, so the others "
                                 "wait forever. Keep every thread in the kernel until the barrier (guard the work "
                                 "with `if`, not an early `return`), or init the barrier with the number of threads "
                                 "that arrive", what, where(file, line).c_str(), block_str().c_str(), missing,
                                 w.nthreads, tid_str(*example).c_str(), w.nthreads));
}

// Computes lane `l`'s result once every lane in the mask has deposited its value.
// The lane a shuffle reads for lane `l`.  Past the end of its width-segment CUDA defines the result
// as the caller's own value, so that is `l` itself.  As shfl.sync, only the low 5 bits of the lane offset
// count: a delta of 33 is 1, and -1 (CUDA's delta is unsigned) is 31.
static int shuffle_source(const Fiber& me, int l) {
    const int width = me.wwidth, seg = l & ~(width - 1), offset = me.warg & 31;
    int src = l;
    switch (me.wop) {
        case W_SHFL_IDX: src = seg + (me.warg & (width - 1)); break;
        case W_SHFL_UP: src = l - offset; if (src < seg) src = l; break;
        case W_SHFL_DOWN: src = l + offset; if (src >= seg + width) src = l; break;
        case W_SHFL_XOR: src = l ^ offset; if (src >= seg + width) src = l; break;
        default: break;
    }
    return src;
}

// __reduce_*_sync (sm_80): one 32-bit value per lane of the mask, added with wraparound, or the min/max
// (signed or unsigned, as the overload the caller picked), or the bitwise and/or/xor.
static unsigned long long warp_reduce(const Fiber* lanes, int nlanes, unsigned mask, int op, bool is_signed) {
    uint32_t acc = 0;
    bool first = true;
    for (int k = 0; k < nlanes; ++k) {
        if (!(mask >> k & 1u)) continue;
        const uint32_t v = (uint32_t)lanes[k].wval;
        if (first) { acc = v; first = false; continue; }
        switch (op) {
            case W_REDUCE_ADD: acc += v; break;
            case W_REDUCE_AND: acc &= v; break;
            case W_REDUCE_OR: acc |= v; break;
            case W_REDUCE_XOR: acc ^= v; break;
            default: {
                const bool less = is_signed ? (int32_t)v < (int32_t)acc : v < acc;
                if (op == W_REDUCE_MIN ? less : (!less && v != acc)) acc = v;
            }
        }
    }
    return acc;
}

static unsigned long long warp_result(const Fiber* lanes, int nlanes, int l) {
    const Fiber& me = lanes[l];
    const unsigned mask = me.wmask;
    int src = l;
    switch (me.wop) {
        case W_SHFL_IDX: case W_SHFL_UP: case W_SHFL_DOWN: case W_SHFL_XOR: src = shuffle_source(me, l); break;
        case W_BALLOT: case W_ANY: case W_ALL: {
            unsigned ballot = 0;
            for (int k = 0; k < nlanes; ++k)
                if ((mask >> k & 1u) && lanes[k].wval) ballot |= 1u << k;
            const unsigned members = mask & (nlanes == 32 ? 0xffffffffu : ((1u << nlanes) - 1u));
            if (me.wop == W_BALLOT) return ballot;
            if (me.wop == W_ANY) return ballot != 0;
            return ballot == members;
        }
        case W_MATCH_ANY: case W_MATCH_ALL: {  // lanes of the mask holding the same bits as this one
            unsigned peers = 0;
            for (int k = 0; k < nlanes; ++k)
                if ((mask >> k & 1u) && lanes[k].wval == me.wval) peers |= 1u << k;
            if (me.wop == W_MATCH_ANY) return peers;
            return peers == mask ? mask : 0u;
        }
        case W_REDUCE_ADD: case W_REDUCE_MIN: case W_REDUCE_MAX: case W_REDUCE_AND: case W_REDUCE_OR:
        case W_REDUCE_XOR:
            return warp_reduce(lanes, nlanes, mask, me.wop, me.warg != 0);
        default: return 0;  // __syncwarp
    }
    (void)mask;  // a source outside the mask was refused in warp_op before any result is computed
    return lanes[src].wval;
}

// The first shuffle of the launch that read a lane outside its mask, described (several workers may meet one).
static std::mutex g_undefined_shuffle_lock;
static std::string g_undefined_shuffle;
static void note_undefined_shuffle(const std::string& what) {
    std::lock_guard<std::mutex> hold(g_undefined_shuffle_lock);
    if (g_undefined_shuffle.empty()) g_undefined_shuffle = what;
}
EMU_EXPORT size_t emu_undefined_shuffle(char* buf, size_t n) {
    std::lock_guard<std::mutex> hold(g_undefined_shuffle_lock);
    if (buf && n) snprintf(buf, n, "%s", g_undefined_shuffle.c_str());
    return g_undefined_shuffle.size();
}

unsigned long long warp_op(int op, const char* file, int line, unsigned mask, unsigned long long value,
                           int arg, int width) {
    Fiber* f = current_fiber();
    Worker& w = *f->worker;
    RuntimeSection busy(f);
    const int base = f->linear & ~31, lane = f->linear & 31;
    const int nlanes = w.nthreads - base < 32 ? w.nthreads - base : 32;
    // Lanes past the end of the block do not exist; a full mask in a partial warp names only the real ones.
    const unsigned exists = nlanes == 32 ? 0xffffffffu : ((1u << nlanes) - 1u);
    mask &= exists;
    if (!(mask >> lane & 1u))
        fail_in_fiber(E_BARRIER, fmt("warp collective at %s: %s (lane %d) calls it with mask 0x%08x that does not "
                                     "include its own lane", where(file, line).c_str(), tid_str(*f).c_str(), lane, mask));
    if (width < 1 || width > 32 || (width & (width - 1)))
        fail_in_fiber(E_FAULT, fmt("warp shuffle at %s: width %d is not a power of two in 1..32",
                                   where(file, line).c_str(), width));
    f->state = AT_WARP;
    f->file = file;
    f->line = line;
    f->wop = op;
    f->wmask = mask;
    f->wval = value;
    f->warg = arg;
    f->wwidth = width;
    if (op == W_COALESCE) {  // the scheduler forms the group once nothing else can run
        yield_to_scheduler(f, w);
        return f->wresult;
    }
    Fiber* lanes = &w.fibers[base];
    // A lane waiting in coalesced_threads() (or __activemask) has not arrived: it is still in its own branch,
    // where its group forms once nothing else can run, and it comes here after (the lanes of an `if` that form
    // a coalesced group meet the others again at a __syncwarp() after the branch, as on a GPU).
    for (int l = 0; l < nlanes; ++l)
        if ((mask >> l & 1u) && (lanes[l].state != AT_WARP || lanes[l].wop == W_COALESCE)) {
            yield_to_scheduler(f, w);  // not everyone is here yet; the last lane to arrive wakes us
            return f->wresult;
        }
    // This lane is the last to arrive: check that all agree on what they are doing, then finish.
    for (int l = 0; l < nlanes; ++l) {
        if (!(mask >> l & 1u)) continue;
        if (lanes[l].wmask != mask || lanes[l].wop != op)
            fail_in_fiber(E_BARRIER, fmt("warp %d of %s: lanes meet in different warp collectives (%s with mask 0x%08x "
                                         "vs %s with mask 0x%08x)", f->linear / 32, block_str().c_str(),
                                         where(file, line).c_str(), mask, where(lanes[l].file, lanes[l].line).c_str(),
                                         lanes[l].wmask));
    }
    unsigned undefined = 0;  // the lanes reading a lane outside the mask: CUDA leaves their value undefined
    if (op >= W_SHFL_IDX && op <= W_SHFL_XOR)
        for (int l = 0; l < nlanes; ++l) {
            const int src = (mask >> l & 1u) ? shuffle_source(lanes[l], l) : l;
            if (src == l || (src < nlanes && (mask >> src & 1u))) continue;
            static const char* const names[] = {"", "__shfl_sync", "__shfl_up_sync", "__shfl_down_sync",
                                                "__shfl_xor_sync"};
            const std::string what = fmt("%s at %s in warp %d of %s: lane %d reads lane %d, which %s (mask 0x%08x). "
                                         "CUDA leaves that value undefined (it is not the lane's own value); "
                                         "shuffle only from lanes in the mask, e.g. guard the read with the lane "
                                         "index or use a narrower width", names[op], where(file, line).c_str(),
                                         f->linear / 32, block_str().c_str(), l, src,
                                         src < nlanes ? "is not in the mask" : "does not exist (past the block's "
                                                                               "last thread)", mask);
            if (g_initcheck) fail_in_fiber(E_FAULT, what);  // initcheck=True: every read of an undefined value
            note_undefined_shuffle(what);
            undefined |= 1u << l;
        }
    // A correct kernel may read an undefined value it never uses (the CUDA samples' reduce6: lanes 2 and 3 of a
    // 4-lane ballot mask add lanes 4 and 5, and only lane 0's sum is kept), so it is no error by itself.  Those
    // lanes get all-ones bits instead: a NaN for a float, double or half, which arithmetic carries along, and
    // the launch is a KernelFault naming this shuffle if that NaN reaches a floating-point argument array
    // (emulator.py, _check_undefined_shuffles).
    for (int l = 0; l < nlanes; ++l)
        if (mask >> l & 1u) lanes[l].wresult = (undefined >> l & 1u) ? ~0ull : warp_result(lanes, nlanes, l);
    for (int l = 0; l < nlanes; ++l)
        if (mask >> l & 1u) lanes[l].state = RUNNABLE;
    racecheck_warp_sync(f->linear / 32);
    f->state = RUNNABLE;
    return f->wresult;
}

// The sync of a thread_block_tile of more than 32 threads (cooperative_groups' tiled_partition<64..1024>): a barrier
// for the `count` consecutive threads of the block from `first` (whole warps), which the rest of the block does not
// wait for.  Each thread shows `mine` (f->exchange) until the next sync of its tile, so the tile's shfl, any, all and
// cg::reduce read one another's values between two syncs (tile_peer).  racecheck orders the tile's accesses across
// it as an mbarrier phase whose arrivals are the tile's threads.
static const void* tile_key(Worker& w, int first) { return &w.fibers[size_t(first)]; }
void tile_sync(int first, int count, const void* mine, const char* file, int line) {
    Fiber* f = current_fiber();
    Worker& w = *f->worker;
    RuntimeSection busy(f);
    if (count > w.nthreads - first) count = w.nthreads - first;  // a tile cut short by the block's end
    f->state = AT_TILE;
    f->file = file;
    f->line = line;
    f->warg = first;
    f->wwidth = count;
    f->exchange = mine;
    racecheck_mbarrier(tile_key(w, first), 0);
    for (int t = first; t < first + count; ++t)
        if (w.fibers[size_t(t)].state != AT_TILE) {
            yield_to_scheduler(f, w);  // the last of the tile to arrive releases it
            racecheck_mbarrier(tile_key(w, first), 2);
            return;
        }
    for (int t = first; t < first + count; ++t) {
        const Fiber& o = w.fibers[size_t(t)];
        if (o.warg != first || o.wwidth != count)
            fail_in_fiber(E_BARRIER, fmt("thread_block_tile sync at %s in %s: %s waits for the %d threads from rank %d, "
                                         "%s for the %d from rank %d (at %s): threads of one tile cut in different sizes",
                                         where(file, line).c_str(), block_str().c_str(), tid_str(*f).c_str(), count,
                                         first, tid_str(o).c_str(), o.wwidth, o.warg, where(o.file, o.line).c_str()));
    }
    racecheck_mbarrier(tile_key(w, first), 1);
    for (int t = first; t < first + count; ++t) w.fibers[size_t(t)].state = RUNNABLE;
    racecheck_mbarrier(tile_key(w, first), 2);
}
// PTX's named barriers, bar.sync id, count / bar.arrive id, count (barrier.sync, barrier.arrive): barrier `id`
// (1..15; 0 is __syncthreads()') completes when `count` threads have arrived, those that sync waiting for it and
// those that only arrive (a producer warp) going on at once; it then starts over.  Without a count (bar.sync id,
// count == kWholeBlock) it waits for every thread of the block that has not exited.  Threads of one phase that
// name different counts are an error (compute-sanitizer's synccheck reports it; a GPU's behaviour is undefined).
// racecheck orders what the arrivals wrote before what the waiting threads read after, as an mbarrier phase.
static std::string named_barrier_str(bool wait, int id, int count) {
    return count == kWholeBlock ? fmt("bar.sync %d", id) : fmt("bar.%s %d, %d", wait ? "sync" : "arrive", id, count);
}
static int warps_of_block(const Worker& w) { return (w.nthreads + 31) & ~31; }
static void check_same_count(Worker& w, int id, int count, bool wait, const char* file, int line) {
    const int phase = w.named_count[id];
    // no count and the block's own size (in whole warps) name the same barrier: `bar.sync 1` meets `bar.arrive 1, 96`
    auto threads = [&](int c) { return c == kWholeBlock ? warps_of_block(w) : c; };
    if (phase == 0 || threads(phase) == threads(count)) return;
    fail_in_fiber(E_BARRIER, fmt("%s at %s in %s (%s): barrier %d's phase in progress was started by threads that "
                                 "gave %s, and %d of them have arrived; every thread of one phase of a named "
                                 "barrier must give the same thread count (none: the whole block)",
                                 named_barrier_str(wait, id, count).c_str(), where(file, line).c_str(),
                                 block_str().c_str(), tid_str(*current_fiber()).c_str(), id,
                                 phase == kWholeBlock ? "no count (the whole block)" : fmt("%d", phase).c_str(),
                                 w.named_arrived[id]));
}
static void arrive_at_named_barrier(int id, int count, bool wait, const char* file, int line) {
    Fiber* f = current_fiber();
    Worker& w = *f->worker;
    check_same_count(w, id, count, wait, file, line);
    if (w.named_count[id] == 0) w.named_count[id] = count;  // the phase's first arrival says how many complete it
    racecheck_mbarrier(named_key(w, id), 0);
    const int needed = w.named_count[id] == kWholeBlock ? live_threads(w) : w.named_count[id];
    if (++w.named_arrived[id] < needed) {
        if (!wait) return;
        f->state = AT_NAMED;
        f->file = file;
        f->line = line;
        f->warg = id;
        f->wwidth = count;
        yield_to_scheduler(f, w);  // the thread that completes the barrier (or the scheduler) releases us
        racecheck_mbarrier(named_key(w, id), 2);
        return;
    }
    release_named_barrier(w, id);
    if (wait) racecheck_mbarrier(named_key(w, id), 2);
}
void named_barrier(int id, int count, bool wait, const char* file, int line) {
    Fiber* f = current_fiber();
    Worker& w = *f->worker;
    RuntimeSection busy(f);
    if (id < 0 || id > 15 || count <= 0 || count % 32 || count > warps_of_block(w))
        fail_in_fiber(E_FAULT, fmt("bar.%s %d, %d at %s: the barrier must be 0..15 and the thread count a positive "
                                   "multiple of 32 no larger than the block (%d threads), as PTX requires",
                                   wait ? "sync" : "arrive", id, count, where(file, line).c_str(), w.nthreads));
    arrive_at_named_barrier(id, count, wait, file, line);
}
// bar.sync id / barrier.sync id without a count: barrier `id` for the whole block (barrier 0 is __syncthreads()).
void named_barrier_of_block(int id, const char* file, int line) {
    if (id == 0) {
        syncthreads(BAR_PLAIN, 0, file, line);
        return;
    }
    Fiber* f = current_fiber();
    RuntimeSection busy(f);
    if (id < 0 || id > 15)
        fail_in_fiber(E_FAULT, fmt("bar.sync %d at %s: the barrier must be 0..15, as PTX requires", id,
                                   where(file, line).c_str()));
    arrive_at_named_barrier(id, kWholeBlock, true, file, line);
}

// What thread `t` of the block showed at its tile's last sync.
const void* tile_peer(int t) { return current_fiber()->worker->fibers[size_t(t)].exchange; }

// An mbarrier event of the running thread, for racecheck's ordering (0: arrived, 1: phase completed, 2: acquired).
void mbarrier_event(const void* bar, int event) { racecheck_mbarrier(bar, event); }

// The warp's tensor-core instructions (wmma, mma.sync, ldmatrix, movmatrix) need every lane's operands: each
// lane shows a pointer to its own, the warp meets as at a __syncwarp(), and each lane gets all 32 pointers.  The
// pointed-to values must stay put until the warp has read them: the caller meets at a second __syncwarp()
// before it changes them or returns (a lane's next collective would otherwise run while others still read).
void warp_gather(const void* mine, const void** all, const char* what, const char* file, int line) {
    Fiber* f = current_fiber();
    f->exchange = mine;
    warp_op(W_SYNC, file, line, 0xffffffffu, 0, 0, 32);
    const Worker& w = *f->worker;
    const int base = f->linear & ~31;
    if (w.nthreads - base < 32)
        device_fault(fmt("%s needs a full warp of 32 threads, and warp %d of this block has %d (make the block's "
                         "thread count a multiple of 32)", what, f->linear / 32, w.nthreads - base).c_str(), file, line);
    for (int l = 0; l < 32; ++l) all[l] = w.fibers[base + l].exchange;
}

unsigned activemask() {
    const Fiber* f = current_fiber();
    const Worker& w = *f->worker;
    const int base = f->linear & ~31;
    unsigned m = 0;
    for (int l = 0; l < 32 && base + l < w.nthreads; ++l)
        if (w.fibers[base + l].state != EXITED) m |= 1u << l;
    return m;
}

// CUDA's limits on a block's shared memory, checked as each static array is first placed (the emulator
// learns a kernel's static size only by running it).  Static arrays alone over 48 KiB: ptxas refuses the
// kernel.  Static + dynamic over 48 KiB without the opt-in, or static + the opted-in dynamic size over
// 227 KiB: the launch (or the cudaFuncSetAttribute call) fails with CUDA_ERROR_INVALID_VALUE.
static void check_shared_limits(const Worker& w, const char* name, const char* file, int line) {
    const std::string at = fmt("'%s' declared at %s", name, where(file, line).c_str());
    if (w.static_bytes > kMaxStaticShared)
        fail_in_fiber(E_COMPILE, fmt("ptxas error   : Entry function '%s' uses too much shared data (0x%zx bytes, "
                                     "0xc000 max): its static __shared__ arrays exceed CUDA's 48 KiB limit (%zu "
                                     "bytes, reached at %s; nvcc refuses this at compile time, the emulator sees it "
                                     "at launch); use extern __shared__ and shared_mem=", w.kernel->name,
                                     w.static_bytes, w.static_bytes, at.c_str()));
    if (!g_max_dynamic_attr && w.static_bytes + w.dyn_shared > kMaxStaticShared)
        fail_in_fiber(E_INTERNAL, fmt("CUDA_ERROR_INVALID_VALUE: invalid argument (kernel '%s' has %zu bytes of "
                                      "static __shared__ memory (reached at %s) and asks shared_mem=%zu bytes: "
                                      "together above CUDA's 48 KB per block; over 48 KB a kernel opts in first, "
                                      "kernel.max_dynamic_shared_size_bytes = %zu)", w.kernel->name, w.static_bytes,
                                      at.c_str(), w.dyn_shared, w.dyn_shared));
    if (g_max_dynamic_attr && w.static_bytes + g_max_dynamic_attr > kMaxShared)
        fail_in_fiber(E_INTERNAL, fmt("CUDA_ERROR_INVALID_VALUE: invalid argument (kernel '%s': "
                                      "max_dynamic_shared_size_bytes %zu plus its %zu bytes of static __shared__ "
                                      "memory (reached at %s) exceed the GPU's %zu bytes per block)", w.kernel->name,
                                      g_max_dynamic_attr, w.static_bytes, at.c_str(), kMaxShared));
}

// The block's copy of a __shared__ declaration.  The first thread of a block to reach it allocates the
// copy; the first use in the module gives the declaration its slot number (under a lock: workers may
// get there at the same time).
static void* shared_first_touch(Fiber* f, int* slot, size_t size, size_t align, const char* name, const char* file,
                                int line) {
    Worker& w = *f->worker;
    RuntimeSection busy(f);
    int s = __atomic_load_n(slot, __ATOMIC_ACQUIRE);
    if (s < 0) {
        std::lock_guard<std::mutex> hold(g_slots_lock);
        s = *slot;
        if (s < 0) {  // first use of this declaration in this module: give it a slot
            g_slots.push_back(SlotInfo{size, align, name, file, line});
            s = int(g_slots.size() - 1);
            __atomic_store_n(slot, s, __ATOMIC_RELEASE);
        }
    }
    if (w.slot_ptr.size() <= size_t(s)) {
        w.slot_ptr.resize(size_t(s) + 1, nullptr);
        w.slot_region.resize(size_t(s) + 1);
    }
    char*& p = w.slot_ptr[size_t(s)];
    if (!p) {  // first thread of this block to reach the declaration allocates the block's copy
        w.static_bytes += size;
        check_shared_limits(w, name, file, line);
        SharedRegion& r = w.slot_region[size_t(s)];
        p = place_shared(r, size, align, block_places_at_start(w));
        if (!p) fail_in_fiber(E_INTERNAL, fmt("could not map %zu bytes for __shared__ '%s' of %s", size, name,
                                              block_str().c_str()));
        r.name = name;
        r.file = file;
        r.line = line;
        track_shared(p, size, name);
    }
    return p;
}

void* shared_get(int* slot, size_t size, size_t align, const char* name, const char* file, int line) {
    Fiber* f = current_fiber();
    const Worker& w = *f->worker;
    const int s = __atomic_load_n(slot, __ATOMIC_ACQUIRE);
    if (s >= 0 && size_t(s) < w.slot_ptr.size() && w.slot_ptr[size_t(s)]) return w.slot_ptr[size_t(s)];  // already here
    return shared_first_touch(f, slot, size, align, name, file, line);
}

// The block's dynamic shared memory, placed when a thread first asks (most kernels never do).
void* dynamic_shared() {
    Fiber* f = current_fiber();
    Worker& w = *f->worker;
    if (w.dyn) return w.dyn;
    RuntimeSection busy(f);
    w.dyn = place_shared(w.dyn_region, w.dyn_shared, 16, block_places_at_start(w));
    if (!w.dyn) fail_in_fiber(E_INTERNAL, fmt("could not map %zu bytes of dynamic shared memory for %s", w.dyn_shared,
                                              block_str().c_str()));
    w.dyn_region.name = nullptr;
    track_shared(w.dyn, w.dyn_shared, "extern __shared__");
    return w.dyn;
}

// ---- asynchronous copies ----------------------------------------------------------------------------
// cp.async and everything built on it (__pipeline_memcpy_async, cuda::memcpy_async with a pipeline or a
// barrier, cooperative_groups::memcpy_async) start a global -> shared copy that the thread does not wait for;
// a commit closes the copies issued since the last one into a group, and a wait lets at most N of the thread's
// newest groups stay in flight.  On a GPU a copy lands at some moment between its issue and its wait: a kernel
// that reads the destination early reads old bytes or new by timing.  Here a copy is only recorded when issued
// and lands (memcpy) when a wait covers it, so such a read always sees the old bytes, and racecheck reports it
// (racecheck_async_issue).  Each CUDA thread has its own queue; a thread that ends with copies in flight has them
// land as it exits (a GPU completes them too).
static AsyncQueue& async_queue(Fiber* f) { return f->worker->async[f]; }

// `align`: what both addresses must be a multiple of (cp.async's cp-size; 1 where the API asks nothing).
void async_copy(void* dst, const void* src, size_t bytes, size_t src_bytes, size_t align, const char* file, int line) {
    Fiber* f = current_fiber();
    RuntimeSection busy(f);
    if (align > 1 && ((uintptr_t(dst) | uintptr_t(src)) % align))
        fail_in_fiber(E_FAULT, fmt("%s of %s: misaligned address in the asynchronous copy at %s: a %zu-byte cp.async "
                                   "needs its shared (%p) and global (%p) addresses %zu-byte aligned (a GPU stops the "
                                   "kernel: misaligned address)", tid_str(*f).c_str(), block_str().c_str(),
                                   where(file, line).c_str(), bytes, dst, src, align));
    if (src_bytes > bytes)
        fail_in_fiber(E_FAULT, fmt("%s of %s: an asynchronous copy at %s reads %zu bytes into %zu (cp.async's "
                                   "src-size must not exceed its cp-size)", tid_str(*f).c_str(), block_str().c_str(),
                                   where(file, line).c_str(), src_bytes, bytes));
    racecheck_async_issue(dst, bytes, file, line, uintptr_t(__builtin_return_address(0)) - 1);
    if (f->worker->thread_order != ORDER_FORWARD) {
        // check_races' other schedules land each copy as it is issued (the earliest a GPU may), the forward one at
        // its wait (the latest): a kernel that reads a destination before its wait computes two different results.
        land(AsyncCopy{static_cast<char*>(dst), static_cast<const char*>(src), bytes, src_bytes, file, line}, 0);
        return;
    }
    async_queue(f).open.push_back(AsyncCopy{static_cast<char*>(dst), static_cast<const char*>(src), bytes, src_bytes,
                                            file, line});
}

void async_commit() {
    Fiber* f = current_fiber();
    RuntimeSection busy(f);
    AsyncQueue& q = async_queue(f);
    q.groups.push_back(std::move(q.open));
    q.open.clear();
}

// Land the thread's oldest groups until at most `pending` remain in flight (copies not yet committed are in no
// group and stay, as on a GPU).
void async_wait(int pending) {
    const uintptr_t pc = uintptr_t(__builtin_return_address(0)) - 1;
    Fiber* f = current_fiber();
    Worker& w = *f->worker;
    const auto it = w.async.find(f);
    if (it == w.async.end()) return;
    RuntimeSection busy(f);
    AsyncQueue& q = it->second;
    while ((int)q.groups.size() > (pending < 0 ? 0 : pending)) {
        for (const AsyncCopy& c : q.groups.front()) land(c, pc);
        q.groups.pop_front();
    }
    if (q.groups.empty() && q.open.empty()) w.async.erase(it);  // keep the table as small as the copies in flight
}

// How many committed groups of this thread are still in flight.
int async_pending() {
    Fiber* f = current_fiber();
    const auto it = f->worker->async.find(f);
    return it == f->worker->async.end() ? 0 : (int)it->second.groups.size();
}

// ---- shared-memory windows ------------------------------------------------------------------------------
// PTX addresses shared memory through a 32-bit window (__cvta_generic_to_shared, cp.async's [dst], ld.shared);
// here every shared array is its own allocation, so the window gives each its own 256 KiB range (more than a
// block may have): dynamic shared memory at 1 << 18, static declaration s at (s + 2) << 18.  Arithmetic within
// one array works as on a GPU; an address outside every array of the block is a fault, named.
constexpr int kWindowShift = 18;
constexpr int kClusterRankShift = 27;  // a .shared::cluster address: the block's rank + 1 from bit 27 (cuda_emu.h)

// The window of the running block's array that holds address a (1: the dynamic shared memory, s + 2: static
// declaration s; 0: none) and a's offset in it; `end_counts`: the address one past an array's end is in it too.
size_t window_of(const Worker& w, uintptr_t a, size_t& offset, bool end_counts) {
    const size_t past = end_counts ? 1 : 0;
    if (w.dyn && a >= uintptr_t(w.dyn) && a < uintptr_t(w.dyn) + w.dyn_shared + past) {
        offset = a - uintptr_t(w.dyn);
        return 1;
    }
    for (size_t s = 0; s < w.slot_ptr.size(); ++s) {
        const char* base = w.slot_ptr[s];
        if (base && a >= uintptr_t(base) && a < uintptr_t(base) + w.slot_region[s].size + past) {
            offset = a - uintptr_t(base);
            return s + 2;
        }
    }
    return 0;
}

unsigned long long shared_window_of(const void* p, const char* file, int line) {
    Fiber* f = current_fiber();
    const Worker& w = *f->worker;
    size_t offset = 0;
    if (const size_t k = window_of(w, uintptr_t(p), offset, true)) return (k << kWindowShift) + offset;
    fail_in_fiber(E_FAULT, fmt("%s of %s: __cvta_generic_to_shared (cvta.to.shared, or the shared destination of "
                               "__pipeline_memcpy_async) at %s got %p, which is not in the block's shared memory (only "
                               "a pointer into a __shared__ array has a shared-window address)", tid_str(*f).c_str(),
                               block_str().c_str(), where(file, line).c_str(), p));
}

bool is_shared_address(const void* p) {
    size_t offset = 0;
    return window_of(*current_fiber()->worker, uintptr_t(p), offset, false) != 0;
}

// A __grid_constant__ parameter is a reference to the launch's copy of its argument (emulator.py makes it
// one); every other parameter is the thread's own copy, on its stack.
bool is_grid_constant_address(const void* p) {
    const Worker& w = *current_fiber()->worker;
    const uintptr_t a = uintptr_t(p);
    int i = 0;
    for (const ParamType* t = w.kernel->params; t->code != T_END; ++t, ++i)
        if (a >= uintptr_t(w.args[i]) && a < uintptr_t(w.args[i]) + size_t(t->size)) return true;
    return false;
}

// A thread's local memory is its fiber's stack: a slot of the worker's stack pool.
bool is_local_address(const void* p) {
    const Worker& w = *current_fiber()->worker;
    const uintptr_t a = uintptr_t(p), pool = uintptr_t(w.stack_pool);
    return a >= pool && a < pool + w.stack_pool_count * g_slot_size;
}

void* shared_window_ptr(unsigned long long addr, size_t bytes, const char* file, int line) {
    Fiber* f = current_fiber();
    const Worker& w = *f->worker;
    const size_t k = size_t(addr >> kWindowShift), off = size_t(addr & ((1ull << kWindowShift) - 1));
    char* base = nullptr;
    size_t size = 0;
    if (k == 1 && w.dyn) base = w.dyn, size = w.dyn_shared;
    else if (k >= 2 && k - 2 < w.slot_ptr.size() && w.slot_ptr[k - 2]) base = w.slot_ptr[k - 2], size = w.slot_region[k - 2].size;
    if (!base || off + bytes > size)
        fail_in_fiber(E_FAULT, fmt("%s of %s: the shared-memory address 0x%llx used at %s (%zu bytes) is outside every "
                                   "__shared__ array of the block: out-of-bounds shared access (on a GPU: an illegal "
                                   "address, or another array's bytes)", tid_str(*f).c_str(), block_str().c_str(),
                                   addr, where(file, line).c_str(), bytes));
    return base + off;
}

void grid_sync(const char* file, int line) {
    Fiber* f = current_fiber();
    RuntimeSection busy(f);
    if (!f->worker->cooperative)
        fail_in_fiber(E_FAULT, fmt("grid.sync() at %s in %s, %s needs a cooperative launch (all blocks resident at "
                                   "once): create the kernel with enable_cooperative_groups=True, as in CuPy",
                                   where(file, line).c_str(), block_str().c_str(), tid_str(*f).c_str()));
    f->state = AT_GRID;
    f->file = file;
    f->line = line;
    yield_to_scheduler(f, *f->worker);
}

bool cooperative_launch() { return current_fiber()->worker->cooperative; }

// ---- clusters: the cluster barrier and distributed shared memory (see "thread block clusters") -------------
// barrier.cluster.arrive: this thread has arrived at the cluster barrier's current phase; its wait passes once every
// non-exited thread of the cluster has arrived.  `relaxed` (barrier.cluster.arrive.relaxed) orders no memory: racecheck
// treats what the thread accesses before it like the accesses between an arrive and a wait (see split_barrier).
void cluster_arrive(bool relaxed, const char* file, int line) {
    Fiber* f = current_fiber();
    Worker& w = *f->worker;
    RuntimeSection busy(f);
    if (f->cluster_arrived != kNotArrived)
        fail_in_fiber(E_BARRIER, fmt("%s of %s arrives at the cluster barrier at %s twice without waiting in between "
                                     "(barrier.cluster.arrive must be followed by barrier.cluster.wait before the "
                                     "thread arrives again, PTX ISA)", tid_str(*f).c_str(), block_str().c_str(),
                                     where(file, line).c_str()));
    (void)relaxed;  // (racecheck orders by the arrive in both forms: .relaxed only saves a GPU its fence)
    f->cluster_arrived = w.cluster_phase;
    f->split_arrived = true;  // what the thread accesses until its wait is ordered by the next barrier only
}
void cluster_wait(const char* file, int line) {
    Fiber* f = current_fiber();
    Worker& w = *f->worker;
    RuntimeSection busy(f);
    if (f->cluster_arrived == kNotArrived)
        fail_in_fiber(E_BARRIER, fmt("%s of %s waits at the cluster barrier at %s without having arrived "
                                     "(barrier.cluster.wait, or cluster.barrier_wait(), needs the thread's "
                                     "barrier.cluster.arrive / barrier_arrive() first)", tid_str(*f).c_str(),
                                     block_str().c_str(), where(file, line).c_str()));
    if (f->cluster_arrived == w.cluster_phase) {  // the phase is still open: wait until release_cluster_of
        f->state = AT_CLUSTER;
        f->file = file;
        f->line = line;
        yield_to_scheduler(f, w);
    }
    f->cluster_arrived = kNotArrived;
    f->split_arrived = false;
}
void cluster_sync(const char* file, int line) {
    cluster_arrive(false, file, line);
    cluster_wait(file, line);
}

// Block `rank` of the running cluster's copy of shared window k (see "shared-memory windows"): its base and size.
// A block that has not touched the array yet gets its copy now (on a GPU every array of a block exists from its
// start); one that has exited has none: CUDA leaves that access undefined, so it is a fault here, named.
static char* cluster_copy(Fiber* f, unsigned rank, size_t k, size_t& size, const char* what, const char* file,
                          int line) {
    Worker& w = *f->worker;
    if (rank >= cluster_blocks(w))
        fail_in_fiber(E_FAULT, fmt("%s at %s by %s of %s: rank %u is not a block of the cluster, which has %u blocks "
                                   "(ranks 0..%u; cluster.num_blocks())", what, where(file, line).c_str(),
                                   tid_str(*f).c_str(), block_str().c_str(), rank, cluster_blocks(w),
                                   cluster_blocks(w) - 1));
    if (rank == cluster_rank_of(w, w.block_idx)) {  // the block's own memory
        if (k == 1) return size = w.dyn_shared, w.dyn;
        const bool own = k >= 2 && k - 2 < w.slot_ptr.size();
        return size = own ? w.slot_region[k - 2].size : 0, own ? w.slot_ptr[k - 2] : nullptr;
    }
    BlockState& b = g_blocks[rank];
    b.mapped_phase = w.cluster_phase;
    b.mapped_by = w.block_idx;
    b.mapped_file = file;
    b.mapped_line = line;
    if (b.done)
        fail_in_fiber(E_FAULT, fmt("%s at %s by %s of %s: block (%u,%u,%u) (rank %u of the cluster) has already "
                                   "exited, and its shared memory with it: CUDA leaves an access to the distributed "
                                   "shared memory of an exited block undefined. Keep every block alive while others "
                                   "may use its shared memory: end the kernel with cluster.sync()", what,
                                   where(file, line).c_str(), tid_str(*f).c_str(), block_str().c_str(), b.idx.x,
                                   b.idx.y, b.idx.z, rank));
    if (k == 1) {
        if (!b.dyn) {
            b.dyn = place_shared(b.dyn_region, w.dyn_shared, 16, block_places_at_start(w, b.idx));
            b.dyn_region.name = nullptr;
            track_shared(b.dyn, w.dyn_shared, "extern __shared__");
        }
        return size = w.dyn_shared, b.dyn;
    }
    std::lock_guard<std::mutex> hold(g_slots_lock);
    if (k < 2 || k - 2 >= g_slots.size()) return size = 0, nullptr;
    const size_t s = k - 2;
    const SlotInfo& info = g_slots[s];
    if (b.slot_ptr.size() <= s) {
        b.slot_ptr.resize(s + 1, nullptr);
        b.slot_region.resize(s + 1);
    }
    if (!b.slot_ptr[s]) {
        SharedRegion& r = b.slot_region[s];
        b.slot_ptr[s] = place_shared(r, info.size, info.align, block_places_at_start(w, b.idx));
        b.static_bytes += info.size;
        r.name = info.name.c_str();
        r.file = info.file;
        r.line = info.line;
        track_shared(b.slot_ptr[s], info.size, info.name);
    }
    return size = info.size, b.slot_ptr[s];
}

// cluster.map_shared_rank(p, rank): the same place as p (in one of the block's shared arrays) in block `rank`'s copy.
void* map_shared_rank(const void* p, unsigned rank, const char* file, int line) {
    Fiber* f = current_fiber();
    RuntimeSection busy(f);
    size_t offset = 0, size = 0;
    const size_t k = window_of(*f->worker, uintptr_t(p), offset, true);
    if (!k)
        fail_in_fiber(E_FAULT, fmt("%s of %s: cluster.map_shared_rank(%p, %u) (or mapa) at %s: the address is not in "
                                   "the block's shared memory (it maps a pointer into one of the block's __shared__ "
                                   "arrays to the same place in another block of the cluster)", tid_str(*f).c_str(),
                                   block_str().c_str(), p, rank, where(file, line).c_str()));
    char* base = cluster_copy(f, rank, k, size, "cluster.map_shared_rank", file, line);
    if (!base) return nullptr;
    return base + offset;
}

// cluster.query_shared_rank(p): which block of the cluster owns the shared address p.
unsigned shared_rank_of(const void* p, const char* file, int line) {
    Fiber* f = current_fiber();
    Worker& w = *f->worker;
    const uintptr_t a = uintptr_t(p);
    size_t offset = 0;
    if (window_of(w, a, offset, true)) return cluster_rank_of(w, w.block_idx);
    if (clustered(w))
        for (size_t r = 0; r < g_blocks.size(); ++r) {
            const BlockState& b = g_blocks[r];
            if (b.dyn && a >= uintptr_t(b.dyn) && a <= uintptr_t(b.dyn) + w.dyn_shared) return unsigned(r);
            for (size_t s = 0; s < b.slot_ptr.size(); ++s)
                if (b.slot_ptr[s] && a >= uintptr_t(b.slot_ptr[s]) && a <= uintptr_t(b.slot_ptr[s]) + b.slot_region[s].size)
                    return unsigned(r);
        }
    RuntimeSection busy(f);
    fail_in_fiber(E_FAULT, fmt("%s of %s: cluster.query_shared_rank(%p) (or getctarank) at %s: the address is in no "
                               "block's shared memory", tid_str(*f).c_str(), block_str().c_str(), p,
                               where(file, line).c_str()));
}

// A .shared::cluster address (mapa's result): the block's rank + 1 above the window address (0: the block itself).
void* cluster_window_ptr(unsigned long long addr, size_t bytes, const char* file, int line) {
    Fiber* f = current_fiber();
    const Worker& w = *f->worker;
    const unsigned high = unsigned(addr >> kClusterRankShift);
    const unsigned rank = high ? high - 1 : cluster_rank_of(w, w.block_idx);
    const size_t k = size_t((addr >> kWindowShift) & ((1ull << (kClusterRankShift - kWindowShift)) - 1));
    const size_t off = size_t(addr & ((1ull << kWindowShift) - 1));
    RuntimeSection busy(f);
    size_t size = 0;
    char* base = cluster_copy(f, rank, k, size, "a .shared::cluster access", file, line);
    if (!base || off + bytes > size)
        fail_in_fiber(E_FAULT, fmt("%s of %s: the shared::cluster address 0x%llx used at %s (%zu bytes) is outside every "
                                   "__shared__ array of block rank %u: out-of-bounds distributed shared memory access",
                                   tid_str(*f).c_str(), block_str().c_str(), addr, where(file, line).c_str(), bytes,
                                   rank));
    return base + off;
}

void exit_thread() { thread_exit(); }

void trap(const char* file, int line) {
    Fiber* f = current_fiber();
    RuntimeSection busy(f);
    fail_in_fiber(E_FAULT, fmt("__trap() at %s in %s, %s (on a GPU: CUDA_ERROR_ILLEGAL_INSTRUCTION: an illegal "
                               "instruction was encountered)", where(file, line).c_str(), block_str().c_str(),
                               tid_str(*f).c_str()));
}

void assert_fail(const char* expr, const char* file, int line) {
    Fiber* f = current_fiber();
    RuntimeSection busy(f);
    fail_in_fiber(E_FAULT, fmt("device-side assertion `%s` failed at %s in %s, %s (on a GPU: CUDA_ERROR_ASSERT: "
                               "device-side assert triggered)", expr, where(file, line).c_str(), block_str().c_str(),
                               tid_str(*f).c_str()));
}

// A misuse the stand-in headers find (a cuda::barrier used before init, ...): the kernel stops, named.
void device_fault(const char* what, const char* file, int line) {
    Fiber* f = current_fiber();
    RuntimeSection busy(f);
    fail_in_fiber(E_FAULT, fmt("%s at %s in %s, %s", what, where(file, line).c_str(), block_str().c_str(),
                               tid_str(*f).c_str()));
}

// tiled_partition(group, n) of a size CUDA's cooperative_groups does not cut at run time: its header calls
// __trap(), so the launch fails as a trap does.
void bad_runtime_tile(unsigned n, const char* file, int line) {
    Fiber* f = current_fiber();
    RuntimeSection busy(f);
    fail_in_fiber(E_FAULT, fmt("cooperative_groups::tiled_partition(group, %u) at %s in %s, %s: a tile cut at run time "
                               "must be a power of two in 1..32 (CUDA: \"limited to native hardware sizes, "
                               "1/2/4/8/16/32\"; a tile of 64..1024 threads is tiled_partition<N>(block)), and CUDA's "
                               "header traps (on a GPU: CUDA_ERROR_ILLEGAL_INSTRUCTION: an illegal instruction was "
                               "encountered)", n, where(file, line).c_str(), block_str().c_str(), tid_str(*f).c_str()));
}

// CUDA's printf "can accept at most 32 arguments in addition to the format string. Additional arguments beyond
// this will be ignored, and the format specifier output as-is".
constexpr int kPrintfMaxArguments = 32;
// What CUDA's device printf returns: the number of arguments its format parsed (each conversion and each `*`
// width or precision), not C's count of characters; -1 for a null format.  `beyond`: where the conversion that
// would take the 33rd argument starts (null if none does).
static int printf_arguments(const char* f, const char** beyond) {
    int count = 0;
    *beyond = nullptr;
    for (const char* p = f; *p; ++p) {
        if (*p != '%') continue;
        if (p[1] == '%') { ++p; continue; }
        const char* start = p;
        int takes = 1;
        while (*++p && !std::strchr("diouxXeEfFgGaAcspn", *p))
            if (*p == '*') ++takes;
        if (count + takes > kPrintfMaxArguments) {
            *beyond = start;
            return count;
        }
        count += takes;
        if (!*p) break;
    }
    return count;
}

// Device code has no long double (emulator.py makes it double, as nvcc does), so a %Lf / %Lg / %Le conversion is
// handed a double: the L goes, or vsnprintf would read an 80-bit value that is not there.
static std::string without_long_double_modifier(const std::string& format) {
    std::string out;
    out.reserve(format.size());
    for (size_t i = 0; i < format.size(); ++i) {
        out += format[i];
        if (format[i] != '%') continue;
        if (i + 1 < format.size() && format[i + 1] == '%') { out += format[++i]; continue; }
        while (++i < format.size() && !std::strchr("diouxXeEfFgGaAcspn", format[i]))
            if (format[i] != 'L') out += format[i];
        if (i < format.size()) out += format[i];
    }
    return out;
}

int device_printf(const char* f, ...) {
    if (f == nullptr) return -1;
    Fiber* fiber = current_fiber();
    Worker& w = *fiber->worker;
    RuntimeSection busy(fiber);
    const char* beyond = nullptr;
    const int count = printf_arguments(f, &beyond);
    const std::string head = without_long_double_modifier(beyond ? std::string(f, beyond) : std::string(f));  // the first 32
    char buf[4096];
    va_list ap;
    va_start(ap, f);
    w.printing_from = uintptr_t(__builtin_return_address(0)) - 1;  // inside the call instruction: its line
    int n = vsnprintf(buf, sizeof buf, head.c_str(), ap);
    w.printing_from = 0;
    va_end(ap);
    if (w.output.size() + g_shared.output_bytes < (16u << 20)) {  // CUDA's printf buffer is finite too
        w.output += buf;
        if (beyond) w.output += beyond;  // the rest of the format, its conversions as written
    }
    return n < 0 ? -2 : count;
}

long long clock_ticks() { return ++g_clock; }  // (atomic: workers share it)
}  // namespace __emu

// ---- exit() and abort() in device code ------------------------------------------------------------
// The kernel is linked with -Wl,--wrap=exit (and _exit, _Exit, quick_exit, abort), so its calls land
// here: inside a launch they end the launch with a KernelFault that names the call's source line (from
// the return address) instead of ending Python.  Outside a launch they do what they always do.
namespace {
[[noreturn]] void refuse_exit(const char* call, uintptr_t return_address) {
    Fiber* f = current_fiber();
    RuntimeSection busy(f);
    f->worker->fault_pc = return_address - 1;  // inside the call instruction: addr2line names its line
    fail_in_fiber(E_FAULT, fmt("%s of %s called %s" kLocationMark ": device code cannot end the program (CUDA has "
                               "no exit(); return from the kernel, or use assert() to report a broken invariant)",
                               tid_str(*f).c_str(), block_str().c_str(), call));
}
// Whether this OS thread is running a fiber (host code may call exit() too, on any thread).
bool in_fiber() { return t_worker && t_worker->in_fiber; }
}  // namespace
extern "C" {
[[noreturn]] void __real_exit(int);
[[noreturn]] void __real__exit(int);
[[noreturn]] void __real__Exit(int);
[[noreturn]] void __real_quick_exit(int);
[[noreturn]] void __real_abort();
#define EMU_WRAP_EXIT(NAME, CALL)                                                                        \
    [[noreturn]] void __wrap_##NAME(int status) {                                                       \
        if (in_fiber()) refuse_exit(fmt(CALL "(%d)", status).c_str(), uintptr_t(__builtin_return_address(0))); \
        __real_##NAME(status);                                                                           \
    }
EMU_WRAP_EXIT(exit, "exit")
EMU_WRAP_EXIT(_exit, "_exit")
EMU_WRAP_EXIT(_Exit, "_Exit")
EMU_WRAP_EXIT(quick_exit, "quick_exit")
#undef EMU_WRAP_EXIT
[[noreturn]] void __wrap_abort() {
    if (in_fiber()) refuse_exit("abort()", uintptr_t(__builtin_return_address(0)));
    __real_abort();
}
}

// ---- the device heap: malloc/free and new/delete in device code -----------------------------------
// The kernel is linked with -Wl,--wrap=malloc, free and the plain operators new / delete (emulator.py's
// _HEAP_LINK_FLAGS).  What the kernel's own code allocates (a fiber outside the runtime) is remembered until it
// is freed, and what it freed until something reuses the address: freeing such a pointer again is a double
// free, a KernelFault at the kernel's line -- the error compute-sanitizer's memcheck reports, where glibc
// either aborted with "double free detected" (no line) or, once the block was handed out again, freed another
// allocation under its owner, silently.  The heap is the process's, so an address a launch left live is still
// live in the next, as on a GPU.  Everything else (the runtime's own allocations, host code) passes straight on.
// The sanitizer build keeps the same books over AddressSanitizer's allocator (the runner is handed the limit and the
// bytes the context holds, and reports what its launch left: see main below), so a double free is named the same
// way there and a malloc past the limit is NULL there too.
namespace {
// CUDA's device heap is finite: cudaLimitMallocHeapSize, 8 MiB unless the program sets it (emulator.cuda.runtime.
// deviceSetLimit, emu_set_heap_limit), and a malloc / new past it returns NULL on a GPU.  Here the same, counting
// the bytes asked for (a GPU's allocator adds its own overhead): a kernel that checks for NULL takes the GPU's
// branch, and one that allocates gigabytes no longer has the host's memory overcommitted until the OOM killer ends
// Python.  The heap is the context's, as CUDA's: every module loaded after the first keeps its books in the first
// one's (emu_share_heap, from emulator_runtime.py), so kernels of different modules share the limit, see each
// other's leaks, and may free what another module's kernel allocated.  (One launch runs at a time, and the books'
// lock is the shared one; their map's nodes come from whichever module's code inserts them, all on the C heap.)
// The fast builds' arena (see "the device heap's arena" below): where device code's allocations live.
struct ArenaBlock {
    char* start;   // the range taken from the arena: [start, end), the canary around [user, user + bytes)
    char* end;
    size_t bytes;  // as asked for
    uintptr_t allocated_at;  // the return address of the malloc / new call: its source line names the allocation
};
struct DeviceArena {
    std::vector<std::pair<char*, size_t>> chunks;  // mapped [base, base + size), each followed by a guard page
    std::map<char*, size_t> free_ranges;           // start -> length, coalesced
    std::multimap<size_t, char*> free_by_length;   // the same ranges by length: best fit in O(log n)
    std::map<char*, ArenaBlock> live;              // user address -> its block
    std::atomic<bool> mapped{false};               // any chunk yet (read without the lock: frees of glibc's memory)
};
struct DeviceHeap {
    std::mutex lock;
    std::unordered_map<void*, size_t> blocks;  // address -> bytes while allocated (0: freed by device code)
    size_t live = 0, limit = size_t(8) << 20;
    std::atomic<bool> used{false};              // no bookkeeping at all until device code first allocates
    DeviceArena arena;
};
DeviceHeap g_own_heap;
DeviceHeap* g_heap = &g_own_heap;
thread_local bool t_keeping_books = false;       // the map's own nodes come through operator new too: pass them
// Holds the heap's lock, marking this thread as in the books (their own allocations pass straight on).
struct HeapBooks {
    std::lock_guard<std::mutex> hold{g_heap->lock};
    HeapBooks() { t_keeping_books = true; }
    ~HeapBooks() { t_keeping_books = false; }
};
bool device_code_running() { return in_fiber() && me().cur && !me().cur->in_runtime; }
void note_allocation(void* p, size_t n) {
    if (!p || t_keeping_books) return;
    if (!device_code_running()) {
        if (!g_heap->used.load(std::memory_order_relaxed)) return;
        HeapBooks books;
        g_heap->blocks.erase(p);  // an address device code freed, now the runtime's or the host's
        return;
    }
    RuntimeSection busy(me().cur);  // a Ctrl-C or timeout must not jump out while the lock is held
    g_heap->used.store(true, std::memory_order_relaxed);
    HeapBooks books;
    g_heap->blocks[p] = n ? n : 1;
    g_heap->live += n;
}
// Whether device code may have `n` more bytes of the heap (always, for the runtime's and the host's allocations).
bool heap_has_room(size_t n) {
    if (t_keeping_books || !device_code_running()) return true;
    RuntimeSection busy(me().cur);
    HeapBooks books;
    return n <= g_heap->limit && g_heap->live <= g_heap->limit - n;
}
// A heap call of device code that the launch stops at, at the call's line: "<thread> of <block> called <call> at
// <line> on <what>".
[[noreturn]] void refuse_heap_call(const char* call, uintptr_t return_address, const std::string& what) {
    Fiber* f = current_fiber();
    RuntimeSection busy(f);
    f->worker->fault_pc = return_address - 1;  // inside the call instruction: addr2line names its line
    fail_in_fiber(E_FAULT, fmt("%s of %s called %s" kLocationMark " on ", tid_str(*f).c_str(), block_str().c_str(),
                               call) + what);
}
// A second free of what device code allocated.
[[noreturn]] void refuse_double_free(const char* call, void* p, uintptr_t return_address) {
    refuse_heap_call(call, return_address, fmt("%p, which device code had already freed: a double free of device-heap "
                                               "memory (compute-sanitizer's memcheck reports it; on a GPU the heap is "
                                               "corrupted)", p));
}
// A free of what device code never allocated (an argument array, a local or __shared__ address, a pointer into an
// allocation): glibc aborted with "free(): invalid pointer" and no line, or took the address into its free lists.
[[noreturn]] void refuse_foreign_free(const char* call, void* p, uintptr_t return_address) {
    refuse_heap_call(call, return_address,
                     fmt("%p, which the device heap never returned (an argument array, a local or __shared__ address, "
                         "or a pointer into an allocation: only what malloc() / new returned in device code may be "
                         "freed; compute-sanitizer's memcheck reports an invalid free, and on a GPU the heap is "
                         "corrupted)", p));
}
void note_free(const char* call, void* p, uintptr_t return_address) {
    if (!p || t_keeping_books || !device_code_running()) return;
    bool twice = false, foreign = false;
    {
        RuntimeSection busy(me().cur);
        HeapBooks books;
        auto it = g_heap->blocks.find(p);
        foreign = it == g_heap->blocks.end();  // every allocation device code made is in the books
        if (!foreign) {
            twice = it->second == 0;
            g_heap->live -= it->second;
            it->second = 0;
        }
    }
    if (foreign) refuse_foreign_free(call, p, return_address);
    if (twice) refuse_double_free(call, p, return_address);
}

// ---- the device heap's arena ----
// Fast builds: device code's malloc / new take their memory from the arena, mappings of their own (each chunk
// followed by an inaccessible guard page), not from glibc's heap -- which is the Python interpreter's.  A kernel
// that wrote past its allocation corrupted glibc's books there, and Python aborted later ("free(): invalid next
// size"), far from the kernel.  Now such a write lands in the arena: in the canary bytes around each block
// (checked when device code frees the block and when a launch ends: a KernelFault at the free's line, or naming
// the allocation's), in another device allocation (as on a GPU), or on a guard page (a KernelFault at once).
// The books (DeviceArena's maps) live on glibc's heap, out of the kernel's reach.  The sanitizer build keeps
// AddressSanitizer's allocator, which reports the stray byte itself.
constexpr size_t kArenaChunk = size_t(16) << 20;  // reserved (MAP_NORESERVE): pages cost memory once touched
constexpr size_t kHeapCanary = 16;                // bytes of canary at least before and after each block
char* align_up(char* p, size_t to) { return reinterpret_cast<char*>(round_up(uintptr_t(p), to)); }
bool arena_serves() {
#ifdef EMU_ASAN
    return false;
#else
    return !t_keeping_books && device_code_running();
#endif
}
void add_free_range(DeviceArena& a, char* start, size_t length) {
    a.free_ranges[start] = length;
    a.free_by_length.emplace(length, start);
}
// Takes the free range at `at` out of both maps; returns the next one by address.
std::map<char*, size_t>::iterator remove_free_range(DeviceArena& a, std::map<char*, size_t>::iterator at) {
    auto [first, last] = a.free_by_length.equal_range(at->second);
    for (auto it = first; it != last; ++it)
        if (it->second == at->first) {
            a.free_by_length.erase(it);
            break;
        }
    return a.free_ranges.erase(at);
}
bool add_arena_chunk(DeviceArena& a, size_t at_least) {
    const size_t size = round_up(std::max(kArenaChunk, at_least + 2 * kHeapCanary + 4096), page_size());
    void* m = mmap(nullptr, size + page_size(), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                   -1, 0);
    if (m == MAP_FAILED) return false;
    char* base = static_cast<char*>(m);
    mprotect(base + size, page_size(), PROT_NONE);
    a.chunks.emplace_back(base, size);
    add_free_range(a, base, size);
    a.mapped.store(true, std::memory_order_relaxed);
    return true;
}
// The smallest free range sure to hold `bytes` at `align` between canaries (best fit: a kernel that frees every other
// block of many leaves many small ranges, which a first-fit scan would walk at every allocation): [start, end) of
// the block, or null.
char* take_arena_range(DeviceArena& a, size_t bytes, size_t align, char** user, char** end) {
    const size_t worst = round_up(bytes, 16) + align + 2 * kHeapCanary;  // whatever the range's start
    auto fit = a.free_by_length.lower_bound(worst);
    if (fit == a.free_by_length.end()) return nullptr;
    char* start = fit->second;
    const size_t length = fit->first;
    *user = align_up(start + kHeapCanary, align);
    *end = align_up(*user + bytes + kHeapCanary, 16);
    remove_free_range(a, a.free_ranges.find(start));
    if (start + length > *end) add_free_range(a, *end, size_t(start + length - *end));
    return start;
}
void give_back_range(DeviceArena& a, char* start, char* end) {
    auto next = a.free_ranges.lower_bound(start);
    if (next != a.free_ranges.end() && next->first == end) {  // merge with the free range after
        end += next->second;
        next = remove_free_range(a, next);
    }
    if (next != a.free_ranges.begin()) {
        auto before = std::prev(next);
        if (before->first + before->second == start) {  // and with the one before (chunks never touch: a guard)
            start = before->first;
            remove_free_range(a, before);
        }
    }
    add_free_range(a, start, size_t(end - start));
}
void fill_canary(const ArenaBlock& b, char* user) {
    memset(b.start, kCanaryByte, size_t(user - b.start));
    memset(user + b.bytes, kCanaryByte, size_t(b.end - (user + b.bytes)));
}
// "bytes 16..19 past the end" of the block at `user`, or "" when its canary is whole.
std::string heap_canary_damage(const ArenaBlock& b, char* user) {
    char* first = nullptr;
    char* last = nullptr;
    for (char* p = b.start; p < b.end; ++p) {
        if (p == user) p += b.bytes;
        if (p < b.end && (unsigned char)*p != kCanaryByte) (first ? last : first) = p, last = p;
    }
    if (!first) return "";
    const bool after = first >= user + b.bytes;
    if (after)
        return fmt("bytes %td..%td past its end", first - user - (ptrdiff_t)b.bytes, last - user - (ptrdiff_t)b.bytes);
    return fmt("bytes %td..%td before its start", user - last, user - first);
}
void* arena_allocate(size_t bytes, size_t align, uintptr_t return_address) {
    RuntimeSection busy(me().cur);
    HeapBooks books;
    DeviceArena& a = g_heap->arena;
    align = std::max<size_t>(align, 16);
    char *user = nullptr, *end = nullptr;
    char* start = take_arena_range(a, bytes, align, &user, &end);
    if (!start && add_arena_chunk(a, bytes + align)) start = take_arena_range(a, bytes, align, &user, &end);
    if (!start) return nullptr;  // the host's memory is exhausted: a GPU's malloc answers NULL too
    const ArenaBlock b{start, end, bytes, return_address};
    fill_canary(b, user);
    a.live[user] = b;
    return user;
}
bool in_arena(const DeviceArena& a, const void* p) {
    for (const auto& c : a.chunks)
        if (p >= c.first && p < c.first + c.second) return true;
    return false;
}
// A free of an arena block (false for any other address: glibc's): its canary is checked, then its range reused.
bool arena_release(const char* call, void* p, uintptr_t return_address) {
    if (!p || t_keeping_books || !g_heap->arena.mapped.load(std::memory_order_relaxed)) return false;
    const bool device = device_code_running();
    std::string damage;
    size_t bytes = 0;
    {
        std::optional<RuntimeSection> busy;
        if (device) busy.emplace(me().cur);
        HeapBooks books;
        DeviceArena& a = g_heap->arena;
        if (!in_arena(a, p)) return false;
        auto it = a.live.find(static_cast<char*>(p));
        if (it == a.live.end()) return true;  // (note_free refused it already: not reached)
        damage = heap_canary_damage(it->second, it->first);
        bytes = it->second.bytes;
        give_back_range(a, it->second.start, it->second.end);
        a.live.erase(it);
    }
    if (damage.empty() || !device) return true;
    refuse_heap_call(call, return_address, fmt("a %zu-byte device-heap allocation whose %s were overwritten: an "
                                               "out-of-bounds write into device-heap memory (compute-sanitizer's "
                                               "memcheck names the write itself, launch with sanitize=True for its "
                                               "line; on a GPU it corrupts the heap)", bytes, damage.c_str()));
}
// After a launch: the live blocks' damaged canaries, the first named with the line that allocated it; each is
// restored, so that the next launch does not report them again.
std::string arena_damage_after_launch() {
    if (!g_heap->used.load(std::memory_order_relaxed)) return "";
    HeapBooks books;
    std::string first;
    size_t others = 0;
    for (auto& [user, b] : g_heap->arena.live) {
        const std::string damage = heap_canary_damage(b, user);
        if (damage.empty()) continue;
        fill_canary(b, user);
        if (!first.empty()) {
            ++others;
            continue;
        }
        me().fault_pc = b.allocated_at - 1;
        first = fmt("out-of-bounds write into device-heap memory during kernel '%s': the %zu-byte allocation made%s "
                    "(at %p) had its %s overwritten", me().kernel->name, b.bytes, kLocationMark, (void*)user,
                    damage.c_str());
    }
    if (first.empty()) return "";
    return first + (others ? fmt(", and %zu more allocation%s theirs", others, others > 1 ? "s" : "") : "") +
           " (seen when the launch ended; compute-sanitizer's memcheck names the write itself: launch with "
           "sanitize=True for its line; on a GPU it corrupts the heap)";
}
// cudaDeviceReset: the arena's blocks are forgotten, their ranges free again (the mappings stay: a stale pointer
// reads old bytes rather than crashing Python).
void reset_arena(DeviceArena& a) {
    a.live.clear();
    a.free_ranges.clear();
    a.free_by_length.clear();
    for (const auto& c : a.chunks) add_free_range(a, c.first, c.second);
}
}  // namespace
extern "C" {
void* __real_malloc(size_t);
void __real_free(void*);
// Device code's allocations come from the arena, everything else's from glibc (DEVICE_OR(real call)).
#define EMU_HEAP_CALLER uintptr_t(__builtin_return_address(0))
#define EMU_DEVICE_OR(ALIGN, REAL) (arena_serves() ? arena_allocate(n, ALIGN, EMU_HEAP_CALLER) : REAL)
void* __wrap_malloc(size_t n) {
    if (!heap_has_room(n)) return nullptr;
    void* p = EMU_DEVICE_OR(16, __real_malloc(n));
    note_allocation(p, n);
    return p;
}
void __wrap_free(void* p) {
    note_free("free()", p, EMU_HEAP_CALLER);
    if (!arena_release("free()", p, EMU_HEAP_CALLER)) __real_free(p);
}
// operator new(size_t), new[](size_t), delete(void*), delete[](void*) and the sized deletes, by their mangled names
void* __real__Znwm(size_t);
void* __real__Znam(size_t);
void __real__ZdlPv(void*);
void __real__ZdaPv(void*);
void __real__ZdlPvm(void*, size_t);
void __real__ZdaPvm(void*, size_t);
void* __wrap__Znwm(size_t n) {
    if (!heap_has_room(n)) return nullptr;  // a GPU's new answers NULL (device code has no exceptions)
    void* p = EMU_DEVICE_OR(16, __real__Znwm(n));
    note_allocation(p, n);
    return p;
}
void* __wrap__Znam(size_t n) {
    if (!heap_has_room(n)) return nullptr;  // a GPU's new answers NULL (device code has no exceptions)
    void* p = EMU_DEVICE_OR(16, __real__Znam(n));
    note_allocation(p, n);
    return p;
}
void __wrap__ZdlPv(void* p) {
    note_free("delete", p, EMU_HEAP_CALLER);
    if (!arena_release("delete", p, EMU_HEAP_CALLER)) __real__ZdlPv(p);
}
void __wrap__ZdaPv(void* p) {
    note_free("delete[]", p, EMU_HEAP_CALLER);
    if (!arena_release("delete[]", p, EMU_HEAP_CALLER)) __real__ZdaPv(p);
}
void __wrap__ZdlPvm(void* p, size_t n) {
    note_free("delete", p, EMU_HEAP_CALLER);
    if (!arena_release("delete", p, EMU_HEAP_CALLER)) __real__ZdlPvm(p, n);
}
void __wrap__ZdaPvm(void* p, size_t n) {
    note_free("delete[]", p, EMU_HEAP_CALLER);
    if (!arena_release("delete[]", p, EMU_HEAP_CALLER)) __real__ZdaPvm(p, n);
}
// The aligned (a type declared alignas(N) over 16: C++17's align_val_t) and nothrow forms, which device code reaches
// with `new T` of such a type and `new (std::nothrow) T`.
void* __real__ZnwmSt11align_val_t(size_t, std::align_val_t);
void* __real__ZnamSt11align_val_t(size_t, std::align_val_t);
void* __real__ZnwmRKSt9nothrow_t(size_t, const std::nothrow_t&) noexcept;
void* __real__ZnamRKSt9nothrow_t(size_t, const std::nothrow_t&) noexcept;
void* __real__ZnwmSt11align_val_tRKSt9nothrow_t(size_t, std::align_val_t, const std::nothrow_t&) noexcept;
void* __real__ZnamSt11align_val_tRKSt9nothrow_t(size_t, std::align_val_t, const std::nothrow_t&) noexcept;
void __real__ZdlPvSt11align_val_t(void*, std::align_val_t);
void __real__ZdaPvSt11align_val_t(void*, std::align_val_t);
void __real__ZdlPvmSt11align_val_t(void*, size_t, std::align_val_t);
void __real__ZdaPvmSt11align_val_t(void*, size_t, std::align_val_t);
#define EMU_WRAP_NEW(MANGLED, ALIGN, PARAMS, ARGS)               \
    void* __wrap_##MANGLED PARAMS {                              \
        if (!heap_has_room(n)) return nullptr;                   \
        void* p = EMU_DEVICE_OR(ALIGN, __real_##MANGLED ARGS);   \
        note_allocation(p, n);                                   \
        return p;                                                \
    }
EMU_WRAP_NEW(_ZnwmSt11align_val_t, size_t(a), (size_t n, std::align_val_t a), (n, a))
EMU_WRAP_NEW(_ZnamSt11align_val_t, size_t(a), (size_t n, std::align_val_t a), (n, a))
EMU_WRAP_NEW(_ZnwmRKSt9nothrow_t, 16, (size_t n, const std::nothrow_t& t) noexcept, (n, t))
EMU_WRAP_NEW(_ZnamRKSt9nothrow_t, 16, (size_t n, const std::nothrow_t& t) noexcept, (n, t))
EMU_WRAP_NEW(_ZnwmSt11align_val_tRKSt9nothrow_t, size_t(a), (size_t n, std::align_val_t a, const std::nothrow_t& t) noexcept, (n, a, t))
EMU_WRAP_NEW(_ZnamSt11align_val_tRKSt9nothrow_t, size_t(a), (size_t n, std::align_val_t a, const std::nothrow_t& t) noexcept, (n, a, t))
#undef EMU_WRAP_NEW
#define EMU_WRAP_DELETE(MANGLED, CALL, PARAMS, ARGS)                                   \
    void __wrap_##MANGLED PARAMS {                                                     \
        note_free(CALL, p, EMU_HEAP_CALLER);                                           \
        if (!arena_release(CALL, p, EMU_HEAP_CALLER)) __real_##MANGLED ARGS;           \
    }
EMU_WRAP_DELETE(_ZdlPvSt11align_val_t, "delete", (void* p, std::align_val_t a), (p, a))
EMU_WRAP_DELETE(_ZdaPvSt11align_val_t, "delete[]", (void* p, std::align_val_t a), (p, a))
EMU_WRAP_DELETE(_ZdlPvmSt11align_val_t, "delete", (void* p, size_t n, std::align_val_t a), (p, n, a))
EMU_WRAP_DELETE(_ZdaPvmSt11align_val_t, "delete[]", (void* p, size_t n, std::align_val_t a), (p, n, a))
#undef EMU_WRAP_DELETE
// CUDA's __nv_aligned_device_malloc(size, align): `align` a power of two (else NULL, as CUDA's), freed by free().
void* emu_aligned_device_malloc(size_t size, size_t align) {
    if (align == 0 || (align & (align - 1)) || !heap_has_room(size)) return nullptr;
    void* p = nullptr;
    if (arena_serves()) p = arena_allocate(size, align, EMU_HEAP_CALLER);
    else if (posix_memalign(&p, align < sizeof(void*) ? sizeof(void*) : align, size ? size : 1) != 0) return nullptr;
    note_allocation(p, size);
    return p;
}
#undef EMU_DEVICE_OR
#undef EMU_HEAP_CALLER
}
// cudaDeviceSetLimit(cudaLimitMallocHeapSize, bytes), as emulator.py passes it before each launch.
EMU_EXPORT void emu_set_heap_limit(size_t bytes) {
    std::lock_guard<std::mutex> hold{g_heap->lock};
    g_heap->limit = bytes;
}
// The bytes this module's device code holds (allocated, not freed, across launches), and whether it allocated at
// all: minilora/emulator_runtime.py adds the modules' up into the context's heap.
EMU_EXPORT size_t emu_heap_live() {
    std::lock_guard<std::mutex> hold{g_heap->lock};
    return g_heap->live;
}
EMU_EXPORT int emu_heap_used() { return g_heap->used.load() ? 1 : 0; }
// This module's own books, and (for a module loaded later) the context's to keep its books in instead.
EMU_EXPORT void* emu_heap_books() { return &g_own_heap; }
EMU_EXPORT void emu_share_heap(void* books) { g_heap = static_cast<DeviceHeap*>(books); }
// cudaDeviceReset: the context's heap is gone; what device code held is forgotten (a free of it is then an invalid
// free, as on a GPU), its memory left to the host.
EMU_EXPORT void emu_heap_reset() {
    std::lock_guard<std::mutex> hold{g_heap->lock};
    t_keeping_books = true;
    g_heap->blocks.clear();
    reset_arena(g_heap->arena);
    t_keeping_books = false;
    g_heap->live = 0;
    g_heap->used.store(false);
}

#ifndef EMU_ASAN
// ---- undefined behaviour the GPU and the CPU resolve differently ----------------------------------
// Kernels are compiled with -fsanitize=shift-exponent,float-cast-overflow,alignment,bounds (emulator.py's
// _UB_CHECKS) and these are the hooks the instrumentation calls (libubsan is not linked; the layouts are
// GCC's).  Each stops the launch with a KernelFault at the user's line: the emulator cannot give the GPU's
// answer (or, for a misaligned access, the GPU gives none: the x86 CPU would just load it).
// emulator_subscripts.py's table in the kernel's wrapper: the subscripts the bounds check lets pass
extern "C" __attribute__((weak)) const unsigned long long __emu_unchecked_subscripts[];
extern "C" __attribute__((weak)) const int __emu_unchecked_subscript_count;
namespace {
struct UbLocation { const char* file; uint32_t line, column; };
struct UbType { uint16_t kind, info; char name[1]; };  // kind 0: integer (info: log2 bits << 1 | signed), 1: float (info: bits)
struct UbShift { UbLocation loc; const UbType* lhs; const UbType* rhs; };
struct UbFloatCast { UbLocation loc; const UbType* from; const UbType* to; };

std::string ub_where(const UbLocation& l) {
    const char* base = strrchr(l.file, '/');
    return fmt("%s:%u", base ? base + 1 : l.file, l.line);
}
long long ub_integer(const UbType* t, uintptr_t v) {
    const unsigned bits = 1u << (t->info >> 1);
    if (bits >= 64) return (long long)v;
    const uint64_t m = (1ull << bits) - 1, x = v & m;
    return (t->info & 1) && (x >> (bits - 1)) ? (long long)(x | ~m) : (long long)x;
}
double ub_float(const UbType* t, uintptr_t v) {
    if (t->info == 32) { float f; const uint32_t b = uint32_t(v); memcpy(&f, &b, 4); return f; }
    if (t->info == 64) { double d; memcpy(&d, &v, 8); return d; }
    return NAN;
}
// Where a check fired: its own location, unless that lies in the emulator's headers (an __ldg, __stcs, ... inlined
// into the kernel: "cuda_emu.h:1161" would name the wrong place).  Then the handler's return address names it:
// emulator.py's addr2line walks the inlined calls out to the user's line (kLocationMark).
std::string ub_at(const UbLocation& l, uintptr_t return_address) {
    const bool in_emulator = strstr(l.file, "/emu/include/") || strstr(l.file, "cuda_emu.h");
    if (!in_emulator || !return_address) return " at " + ub_where(l);
    me().fault_pc = return_address - 1;  // inside the call of the handler: addr2line names its line
    return kLocationMark;
}
[[noreturn]] void ub_stop(const std::string& what) {
    Worker& w = me();
    fail_in_fiber(E_FAULT, tid_str(*w.cur) + " of " + block_str() + " " + what);
}
void ub_shift(const UbShift* d, uintptr_t rhs, uintptr_t return_address) {
    if (!in_fiber()) return;
    const long long count = ub_integer(d->rhs, rhs);
    const unsigned bits = 1u << (d->lhs->info >> 1);
    ub_stop(fmt("shifts a %u-bit %s by %lld%s: undefined in C++ (a count of the type's width or more, or "
                "negative). A GPU clamps the count (x << %u gives 0), the CPU masks it (x << %u gives x), so the "
                "emulator cannot give the GPU's result and stops: write the edge case out, e.g. "
                "n >= %u ? 0u : x << n", bits, d->lhs->name, count, ub_at(d->loc, return_address).c_str(), bits, bits,
                bits));
}
void ub_float_cast(const UbFloatCast* d, uintptr_t from, uintptr_t return_address) {
    if (!in_fiber()) return;
    ub_stop(fmt("converts the %s %g to %s%s, outside its range (or NaN): undefined in C++. A GPU saturates "
                "(NaN gives 0, too large the type's maximum), the CPU gives another value, so the emulator stops: "
                "clamp first, or use the intrinsic that saturates as the GPU does (__float2int_rz, "
                "__float2uint_rz, __float2ll_rz, ...)", d->from->name, ub_float(d->from, from), d->to->name,
                ub_at(d->loc, return_address).c_str()));
}
struct UbTypeMismatch { UbLocation loc; const UbType* type; unsigned char log_alignment, kind; };
void ub_misaligned(const UbTypeMismatch* d, uintptr_t address, uintptr_t return_address) {
    if (!in_fiber()) return;
    const unsigned align = 1u << d->log_alignment;
    const char* access = d->kind == 0 ? "loads" : d->kind == 1 ? "stores" : "accesses";
    ub_stop(fmt("%s a %s at address 0x%lx, which is not a multiple of its %u-byte alignment,%s: a GPU stops the "
                "kernel there (CUDA_ERROR_MISALIGNED_ADDRESS: misaligned address). A vector load such as "
                "reinterpret_cast<const float4*>(x + k) needs k a multiple of 4 (and the array itself aligned)",
                access, d->type->name, (unsigned long)address, align, ub_at(d->loc, return_address).c_str()));
}
struct UbOutOfBounds { UbLocation loc; const UbType* array; const UbType* index; };
// An index past an array of known size (-fsanitize=bounds): a thread's local array, a __constant__ or __device__
// array.  A GPU silently reads or overwrites the neighbouring bytes (another of the thread's variables, for a local
// array), so the emulator stops -- except for the inner subscript of tile[i][j], which stays inside the same array
// on a GPU too (tile[i][32] is tile[i + 1][0]), and a __shared__ array's, which its guard pages name better:
// emulator_subscripts.py lists where the source writes those, in the wrapper's table.
bool ub_unchecked_subscript(const UbLocation& l) {
    if (&__emu_unchecked_subscript_count == nullptr) return false;
    const unsigned long long site = (unsigned long long)l.line << 20 | l.column;
    const unsigned long long* end = __emu_unchecked_subscripts + __emu_unchecked_subscript_count;
    return std::binary_search(__emu_unchecked_subscripts, end, site);
}
void ub_out_of_bounds(const UbOutOfBounds* d, uintptr_t index, uintptr_t return_address) {
    if (!in_fiber() || ub_unchecked_subscript(d->loc)) return;
    ub_stop(fmt("indexes element %lld of an array of type %s%s, outside its bounds: undefined in C++. On a GPU the "
                "access silently reads or overwrites whatever lies next to the array (for a thread's local array, "
                "its other variables), so the emulator stops: check the loop's bound (< n, not <= n)",
                ub_integer(d->index, index), d->array->name, ub_at(d->loc, return_address).c_str()));
}
}  // namespace
extern "C" {
#define EMU_CALLER uintptr_t(__builtin_return_address(0))  // in the kernel: where the check fired
void __ubsan_handle_out_of_bounds(void* d, void* index) {
    ub_out_of_bounds((const UbOutOfBounds*)d, uintptr_t(index), EMU_CALLER);
}
void __ubsan_handle_out_of_bounds_abort(void* d, void* index) {
    ub_out_of_bounds((const UbOutOfBounds*)d, uintptr_t(index), EMU_CALLER);
}
void __ubsan_handle_type_mismatch_v1(void* d, void* p) {
    ub_misaligned((const UbTypeMismatch*)d, uintptr_t(p), EMU_CALLER);
}
void __ubsan_handle_type_mismatch_v1_abort(void* d, void* p) {
    ub_misaligned((const UbTypeMismatch*)d, uintptr_t(p), EMU_CALLER);
}
void __ubsan_handle_shift_out_of_bounds(void* d, void*, void* rhs) {
    ub_shift((const UbShift*)d, uintptr_t(rhs), EMU_CALLER);
}
void __ubsan_handle_shift_out_of_bounds_abort(void* d, void*, void* rhs) {
    ub_shift((const UbShift*)d, uintptr_t(rhs), EMU_CALLER);
}
void __ubsan_handle_float_cast_overflow(void* d, void* v) { ub_float_cast((const UbFloatCast*)d, uintptr_t(v), EMU_CALLER); }
void __ubsan_handle_float_cast_overflow_abort(void* d, void* v) {
    ub_float_cast((const UbFloatCast*)d, uintptr_t(v), EMU_CALLER);
}
#undef EMU_CALLER
}
#endif

#ifndef EMU_ASAN
// ---- the fences' mapped bytes: a read or write next to an argument array -----------------------------
// emulator_fence.py lays each argument array out between two inaccessible pages, but a page is coarse: the
// bytes between the first guard page and the array's start, and the < 16 bytes after an odd-sized array's end
// (its copy starts 16-byte aligned), are mapped.  It marks them in a shadow as AddressSanitizer's (one byte per
// 8: 0 all addressable, 1-7 the first k, negative none; reserved at a fixed address, emu_fence_shadow), and
// the kernel's accesses check their address there -- every load inline in the memcheck build (memcheck=True:
// GCC's kernel-address instrumentation, emulator.py's _fence_checks; its reports call __asan_report_* below),
// every load and store in the thread-sanitizer hooks of the racecheck and lockstep builds -- so such an access is
// a KernelFault at its line, as compute-sanitizer's memcheck reports it.  (GCC's outlined checks, a call per
// access, made kernels 6-8x slower; the inline ones 1.4-4x, hence opt-in.)
namespace {

// The first byte of [a, a + n) that the shadow marks, or 0.
uintptr_t fence_first_marked(uintptr_t a, size_t n) {
    for (uintptr_t b = a; b < a + n; ++b) {
        const signed char s = g_fence_shadow[b >> 3];
        if (s != 0 && (s < 0 || int(b & 7) >= s)) return b;
    }
    return 0;
}

[[noreturn]] [[gnu::noinline]] void fence_fault(uintptr_t address, size_t n, bool write, uintptr_t return_address) {
    Fiber* f = current_fiber();
    RuntimeSection busy(f);
    f->worker->fault_pc = return_address - 1;  // inside the access's check: addr2line names its line
    fail_in_fiber(E_FAULT, fmt("%s of %s crashed" kLocationMark ": invalid memory access: a %zu-byte %s at "
                               "address 0x%lx (next to an argument array, inside its fence)", tid_str(*f).c_str(),
                               block_str().c_str(), n, write ? "write" : "read", (unsigned long)address));
}

inline void fence_check(const volatile void* pointer, size_t n, bool write, uintptr_t return_address) {
    const uintptr_t a = uintptr_t(pointer);
    if (!g_fence_shadow || (a >> 47) != 0) return;  // outside the shadow: the access itself faults, at its line
    if (g_fence_shadow[a >> 3] == 0 && g_fence_shadow[(a + n - 1) >> 3] == 0) return;  // the common case
    if (const uintptr_t hit = fence_first_marked(a, n); hit && in_fiber()) fence_fault(hit, n, write, return_address);
}
}  // namespace

// Where emulator_fence.py reserved the shadow (0: none, nothing is checked).
EMU_EXPORT void emu_fence_shadow(uint64_t base) {
    g_fence_shadow = reinterpret_cast<const volatile signed char*>(base);
}

#if !defined(EMU_RACECHECK) && !defined(EMU_LOCKSTEP)
// GCC's inline kernel-address checks call these when the shadow marks an access's bytes.
#define EMU_CALLER uintptr_t(__builtin_return_address(0))
extern "C" {
#define EMU_ASAN_REPORT(N)                                                                                     \
    void __asan_report_load##N##_noabort(uintptr_t p) { fence_check((const void*)p, N, false, EMU_CALLER); }  \
    void __asan_report_store##N##_noabort(uintptr_t p) { fence_check((const void*)p, N, true, EMU_CALLER); }
EMU_ASAN_REPORT(1)
EMU_ASAN_REPORT(2)
EMU_ASAN_REPORT(4)
EMU_ASAN_REPORT(8)
EMU_ASAN_REPORT(16)
#undef EMU_ASAN_REPORT
void __asan_report_load_n_noabort(uintptr_t p, size_t n) { fence_check((const void*)p, n, false, EMU_CALLER); }
void __asan_report_store_n_noabort(uintptr_t p, size_t n) { fence_check((const void*)p, n, true, EMU_CALLER); }
void __asan_handle_no_return() {}
}
#undef EMU_CALLER
#endif
#endif

#ifdef EMU_RACECHECK
// Called by emulator.py before a launch, once per array argument; forgotten when the launch ends.
EMU_EXPORT void emu_racecheck_track_global(const void* p, size_t n, const char* name) {
    g_tracked_global.push_back(TrackedArray{uintptr_t(p), uintptr_t(p) + n, name});
}
#define EMU_PLAIN_ACCESS(p, n, write) \
    (fence_check(p, n, write, uintptr_t(__builtin_return_address(0))), \
     racecheck_access(p, n, write, uintptr_t(__builtin_return_address(0)) - 1))
#define EMU_VOLATILE_ACCESS(p, n, write) EMU_PLAIN_ACCESS(p, n, write)
#endif

// Gives the running thread's turn to the next thread of its block (cuda_emu.h's atomic_turn and __nanosleep: a
// thread spinning on an atomic flag lets the thread that will set it run).  Nothing outside a kernel's own code.
void __emu::spin_turn() {
    if (!t_worker) return;
    Worker& w = *t_worker;
    if (!w.in_fiber || !w.cur || w.cur->in_runtime || w.cur->state != RUNNABLE) return;
    if ((++w.spin_turns & (kSpinTurnsBeforeHelp - 1)) == 0 && !w.asked_for_help &&
        seconds_since(w.block_start) >= kSpinSecondsBeforeHelp) {  // waiting for another block? one more worker runs
        RuntimeSection busy(w.cur);
        w.asked_for_help = true;
        ask_for_help(w);
    }
    yield_to_scheduler(w.cur, w);
}

#ifdef EMU_LOCKSTEP
// ---- lockstep: warp-synchronous code that leans on volatile ---------------------------------------
// A source that uses volatile is built this way (emulator.py's "lockstep" variant): with GCC's
// thread-sanitizer instrumentation, volatile accesses told apart, and these hooks.  A plain load or
// store costs a call that does nothing; a volatile one passes the turn to the next thread, so the lanes
// of a warp take their volatile loads and stores in turns, as a GPU's warp does in converged code.  The
// legacy unrolled last warp of a reduction (v[t] += v[t + 16] through a volatile pointer, no __syncwarp)
// then sums as on a GPU, where fibers running each lane alone up to its next barrier read stale values.
// CUDA does not promise that lockstep since Volta: racecheck=True still reports the hazard.
void lockstep_turn() { __emu::spin_turn(); }
inline void racecheck_atomic(const volatile void*, size_t, bool, uintptr_t) {}
#define EMU_PLAIN_ACCESS(p, n, write) fence_check(p, n, write, uintptr_t(__builtin_return_address(0)))
#define EMU_VOLATILE_ACCESS(p, n, write) (EMU_PLAIN_ACCESS(p, n, write), lockstep_turn())
#endif

#if defined(EMU_RACECHECK) || defined(EMU_LOCKSTEP)
// ---- the hooks GCC's -fsanitize=thread instrumentation calls (we are their runtime) ---------------
// Loads and stores go to racecheck_access (or, in the lockstep build, volatile ones to lockstep_turn);
// the __tsan_atomic* functions must really perform the atomic operation (they replace the builtins in
// instrumented code); the rest have nothing to do.
extern "C" {
#define EMU_TSAN_ACCESS(N)                                                                               \
    void __tsan_read##N(void* p) { EMU_PLAIN_ACCESS(p, N, false); }                                      \
    void __tsan_write##N(void* p) { EMU_PLAIN_ACCESS(p, N, true); }                                      \
    void __tsan_unaligned_read##N(void* p) { EMU_PLAIN_ACCESS(p, N, false); }                            \
    void __tsan_unaligned_write##N(void* p) { EMU_PLAIN_ACCESS(p, N, true); }                            \
    void __tsan_volatile_read##N(void* p) { EMU_VOLATILE_ACCESS(p, N, false); }                          \
    void __tsan_volatile_write##N(void* p) { EMU_VOLATILE_ACCESS(p, N, true); }
EMU_TSAN_ACCESS(1)
EMU_TSAN_ACCESS(2)
EMU_TSAN_ACCESS(4)
EMU_TSAN_ACCESS(8)
EMU_TSAN_ACCESS(16)
#undef EMU_TSAN_ACCESS
void __tsan_read_range(void* p, unsigned long n) { EMU_PLAIN_ACCESS(p, n, false); }
void __tsan_write_range(void* p, unsigned long n) { EMU_PLAIN_ACCESS(p, n, true); }
void __tsan_init() {}
void __tsan_func_entry(void*) {}
void __tsan_func_exit() {}
void __tsan_vptr_update(void**, void*) {}
void __tsan_vptr_read(void**) {}
void __tsan_atomic_thread_fence(int) { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
void __tsan_atomic_signal_fence(int) {}
#define EMU_TSAN_PC (uintptr_t(__builtin_return_address(0)) - 1)
#define EMU_TSAN_ATOMIC(BITS, T)                                                                         \
    T __tsan_atomic##BITS##_load(const volatile T* a, int) {                                             \
        racecheck_atomic(a, sizeof(T), true, EMU_TSAN_PC);                                               \
        return __atomic_load_n(a, __ATOMIC_SEQ_CST);                                                     \
    }                                                                                                    \
    void __tsan_atomic##BITS##_store(volatile T* a, T v, int) {                                          \
        racecheck_atomic(a, sizeof(T), false, EMU_TSAN_PC);                                              \
        __atomic_store_n(a, v, __ATOMIC_SEQ_CST);                                                        \
    }                                                                                                    \
    T __tsan_atomic##BITS##_exchange(volatile T* a, T v, int) {                                          \
        racecheck_atomic(a, sizeof(T), false, EMU_TSAN_PC);                                              \
        return __atomic_exchange_n(a, v, __ATOMIC_SEQ_CST);                                              \
    }                                                                                                    \
    EMU_TSAN_RMW(BITS, T, fetch_add) EMU_TSAN_RMW(BITS, T, fetch_sub) EMU_TSAN_RMW(BITS, T, fetch_and)   \
    EMU_TSAN_RMW(BITS, T, fetch_or) EMU_TSAN_RMW(BITS, T, fetch_xor) EMU_TSAN_RMW(BITS, T, fetch_nand)   \
    int __tsan_atomic##BITS##_compare_exchange_strong(volatile T* a, T* c, T v, int, int) {             \
        racecheck_atomic(a, sizeof(T), true, EMU_TSAN_PC);                                               \
        return __atomic_compare_exchange_n(a, c, v, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);          \
    }                                                                                                    \
    int __tsan_atomic##BITS##_compare_exchange_weak(volatile T* a, T* c, T v, int, int) {               \
        racecheck_atomic(a, sizeof(T), true, EMU_TSAN_PC);                                               \
        return __atomic_compare_exchange_n(a, c, v, true, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);           \
    }                                                                                                    \
    T __tsan_atomic##BITS##_compare_exchange_val(volatile T* a, T c, T v, int, int) {                   \
        racecheck_atomic(a, sizeof(T), true, EMU_TSAN_PC);                                               \
        __atomic_compare_exchange_n(a, &c, v, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);                \
        return c;                                                                                        \
    }
// A read-modify-write atomic: its old value must have been written (initcheck).
#define EMU_TSAN_RMW(BITS, T, OP)                                                                        \
    T __tsan_atomic##BITS##_##OP(volatile T* a, T v, int) {                                              \
        racecheck_atomic(a, sizeof(T), true, EMU_TSAN_PC);                                               \
        return __atomic_##OP(a, v, __ATOMIC_SEQ_CST);                                                    \
    }
EMU_TSAN_ATOMIC(8, unsigned char)
EMU_TSAN_ATOMIC(16, unsigned short)
EMU_TSAN_ATOMIC(32, unsigned int)
EMU_TSAN_ATOMIC(64, unsigned long long)
#undef EMU_TSAN_ATOMIC
#undef EMU_TSAN_RMW
#undef EMU_TSAN_PC
#undef EMU_PLAIN_ACCESS
#undef EMU_VOLATILE_ACCESS
}
#endif

// ---- the C API emulator.py calls -------------------------------------------------------------------
// cfg: grid.x, grid.y, grid.z, block.x, block.y, block.z, shared_mem, thread/block order, seed,
// stack bytes per thread, timeout in microseconds (0: none), flags (bit 0: Ctrl-C stops the launch,
// bit 1: a cooperative launch, bit 2: start every worker at once (tests), bit 4: initcheck instead of
// racecheck (racecheck build only), bits 8-15: how many OS
// threads may run blocks, 0 meaning one, bits 16-47: the kernel's max_dynamic_shared_size_bytes when
// the program set it, else 0).
// Unmaps every worker's stack pool (between launches only: the Python side calls it under its launch
// lock). Each loaded module has its own runtime and pools, and a pool of n slots is 2n memory mappings
// (each slot's guard is its own mapping): kept by every module a test session loads, they reached the
// kernel's limit (vm.max_map_count, 65530) and a later launch could not map its shared memory.
EMU_EXPORT void emu_release_stacks() {
    for (Worker& w : g_workers) {
        if (w.pool_map) munmap(w.pool_map, w.pool_map_bytes);
        w.pool_map = w.stack_pool = nullptr;
        w.stack_pool_count = w.pool_map_bytes = 0;
    }
}

EMU_EXPORT int emu_launch(int kernel_index, void** args, const uint64_t* cfg, char* err, size_t errlen) {
    int count = 0;
    const KernelInfo* table = emu_kernel_table(&count);
    Worker& w = g_workers[0];
    t_worker = &w;
    w.error = E_OK;
    w.message.clear();
    w.output.clear();
    g_output.clear();
    {
        std::lock_guard<std::mutex> hold(g_undefined_shuffle_lock);
        g_undefined_shuffle.clear();
    }
    if (kernel_index < 0 || kernel_index >= count) {
        snprintf(err, errlen, "no kernel with index %d", kernel_index);
        return E_INTERNAL;
    }
    w.kernel = &table[kernel_index];
    w.args = args;
    w.grid = dim3(unsigned(cfg[0]), unsigned(cfg[1]), unsigned(cfg[2]));
    w.block = dim3(unsigned(cfg[3]), unsigned(cfg[4]), unsigned(cfg[5]));
    w.dyn_shared = size_t(cfg[6]);
    w.thread_order = int(cfg[7]);
    w.cooperative = (cfg[11] & 2) != 0;
    w.cluster = dim3(unsigned(cfg[12]), unsigned(cfg[13]), unsigned(cfg[14]));
    g_flush_denormals = (cfg[11] & 32) != 0;
    g_max_dynamic_attr = size_t(cfg[11] >> 16);
#ifdef EMU_RACECHECK
    g_initcheck = (cfg[11] & 16) != 0;
#endif
    w.rng = cfg[8] * 0x9E3779B97F4A7C15ull + 0x2545F4914F6CDD1Dull;
    if (w.rng == 0) w.rng = 1;
    const size_t page = size_t(sysconf(_SC_PAGESIZE));
    g_stack_size = (size_t(cfg[9]) < kMinStack ? kMinStack : size_t(cfg[9]) + page - 1) / page * page;
    w.fault_pc = 0;
#ifndef EMU_ASAN
    install_escapes(double(cfg[10]) * 1e-6, (cfg[11] & 1) != 0);
#endif
    set_kept_and_flushing_csr(g_flush_denormals);
    int rc = run_launch(int((cfg[11] >> 8) & 0xFF), (cfg[11] & 4) != 0);
    if (rc == E_OK) {  // a write past a device-heap block that no free() checked
        const std::string damage = arena_damage_after_launch();
        if (!damage.empty()) set_error(rc = E_FAULT, damage);
    }
    set_kept_and_flushing_csr(false);
#ifndef EMU_ASAN
    remove_escapes();
#endif
#ifdef EMU_RACECHECK
    g_tracked_global.clear();
#endif
    if (err && errlen) snprintf(err, errlen, "%s", w.message.c_str());
    return rc;
}

// Where the last launch crashed, for the source line: the offset of the faulting instruction inside
// this library (what addr2line takes), or 0 when it was elsewhere -- then `where` names that place.
EMU_EXPORT uint64_t emu_fault_location(char* where_buf, size_t n) {
    const Worker& w = g_workers[0];
    if (n) where_buf[0] = 0;
    Dl_info self{}, at{};
    if (!w.fault_pc || !dladdr(reinterpret_cast<void*>(&emu_fault_location), &self)) return 0;
    if (dladdr(reinterpret_cast<void*>(w.fault_pc), &at) && at.dli_fbase == self.dli_fbase)
        return w.fault_pc - uintptr_t(self.dli_fbase);
    if (at.dli_fname && n) {
        const char* base = strrchr(at.dli_fname, '/');
        snprintf(where_buf, n, "%s%s%s%s", base ? base + 1 : at.dli_fname, at.dli_sname ? " (" : "",
                 at.dli_sname ? at.dli_sname : "", at.dli_sname ? ")" : "");
    }
    return 0;
}

EMU_EXPORT size_t emu_output_size() { return g_output.size(); }
EMU_EXPORT void emu_output_take(char* buf, size_t n) {
    memcpy(buf, g_output.data(), n < g_output.size() ? n : g_output.size());
    g_output.clear();
}

// One line per __constant__ variable: "name<TAB>address size code,size,elem_code,elem_size,elem_const,elem_lanes".
EMU_EXPORT size_t emu_describe_constants(char* buf, size_t n) {
    std::string s;
    int count = 0;
    const ConstantInfo* table = emu_constant_table(&count);
    for (int k = 0; k < count; ++k) {
        const ParamType& e = table[k].element;
        s += fmt("%s\t%llu %zu %d,%d,%d,%d,%d,%d %d\n", table[k].name, (unsigned long long)(uintptr_t)table[k].address,
                 table[k].size, e.code, e.size, e.elem_code, e.elem_size, e.elem_const, e.elem_lanes,
                 int(table[k].read_only));
    }
    if (buf) snprintf(buf, n, "%s", s.c_str());
    return s.size() + 1;
}

// One line per kernel: "name<TAB>code,size,elem_code,elem_size,elem_const,elem_lanes ..." (emulator.py reads it;
// a tab, since a template kernel's name expression such as "k<float, 128>" has spaces).
EMU_EXPORT size_t emu_describe(char* buf, size_t n) {
    std::string s;
    int count = 0;
    const KernelInfo* table = emu_kernel_table(&count);
    for (int k = 0; k < count; ++k) {
        s += table[k].name;
        s += "\t";
        for (const ParamType* p = table[k].params; p->code != T_END; ++p)
            s += fmt(" %d,%d,%d,%d,%d,%d", p->code, p->size, p->elem_code, p->elem_size, p->elem_const, p->elem_lanes);
        s += "\n";
    }
    if (buf) snprintf(buf, n, "%s", s.c_str());
    return s.size() + 1;
}

#ifdef EMU_RUNNER
// ---- the sanitizer runner: `runner --describe` or `runner IN OUT` -----------------------------------
// IN holds the launch (see _write_launch_file in emulator.py): every buffer argument is copied into its
// own malloc of exactly its size, so AddressSanitizer reports the first byte read or written outside it.
static bool read_all(FILE* f, void* p, size_t n) { return n == 0 || fread(p, 1, n, f) == n; }

int main(int argc, char** argv) {
    if (argc == 2 && strcmp(argv[1], "--describe") == 0) {
        std::vector<char> buf(emu_describe(nullptr, 0));
        emu_describe(buf.data(), buf.size());
        fputs(buf.data(), stdout);
        std::vector<char> consts(emu_describe_constants(nullptr, 0));
        emu_describe_constants(consts.data(), consts.size());
        fputs("--constants--\n", stdout);
        fputs(consts.data(), stdout);
        fputs("--values--\n", stdout);  // their compiled-in contents, one hex line each
        int count = 0;
        const ConstantInfo* constants = emu_constant_table(&count);
        for (int k = 0; k < count; ++k) {
            for (size_t b = 0; b < constants[k].size; ++b)
                fprintf(stdout, "%02x", static_cast<const unsigned char*>(constants[k].address)[b]);  // (printf is the device one here)
            putchar('\n');
        }
        return 0;
    }
    if (argc != 3) { fprintf(stderr, "usage: %s IN OUT | --describe\n", argv[0]); return 64; }
    FILE* in = fopen(argv[1], "rb");
    if (!in) { perror(argv[1]); return 65; }
    // A sanitizer child must not outlive the Python that waits for it (e.g. a killed notebook).
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    const char* parent = getenv("MINILORA_EMU_PARENT");  // the parent died before prctl took effect?
    if (parent && getppid() != pid_t(atol(parent))) return 69;
    uint64_t head[17];  // magic, kernel index, 15 config words
    if (!read_all(in, head, sizeof head) || head[0] != 0x31554D45u) { fprintf(stderr, "bad launch file\n"); return 65; }
    uint64_t nargs;
    read_all(in, &nargs, 8);
    std::vector<void*> values(nargs), argv_ptrs(nargs);
    std::vector<uint64_t> kinds(nargs), sizes(nargs);
    std::vector<std::vector<long double>> scalars(nargs);  // 16-byte aligned, sized to a struct passed by value
    for (uint64_t i = 0; i < nargs; ++i) {
        read_all(in, &kinds[i], 8);
        read_all(in, &sizes[i], 8);
        if (kinds[i] == 1) {  // buffer: its own exact-size allocation
            values[i] = malloc(sizes[i] ? sizes[i] : 1);
            if (!read_all(in, values[i], sizes[i])) return 65;
            argv_ptrs[i] = &values[i];
        } else if (kinds[i] == 2) {  // the same array as argument sizes[i]: share its buffer
            if (sizes[i] >= i || kinds[sizes[i]] != 1) return 65;
            values[i] = values[sizes[i]];
            argv_ptrs[i] = &values[i];
        } else {  // scalar or struct: stored in place
            scalars[i].resize(sizes[i] / sizeof(long double) + 1);
            if (sizes[i] > (1u << 20) || !read_all(in, scalars[i].data(), sizes[i])) return 65;
            argv_ptrs[i] = scalars[i].data();
        }
    }
    // Then the __constant__ variables as the host filled them (get_global), in table order.
    uint64_t nconst = 0;
    int count = 0;
    const ConstantInfo* constants = emu_constant_table(&count);
    if (!read_all(in, &nconst, 8) || nconst != uint64_t(count)) return 65;
    for (int k = 0; k < count; ++k) {
        uint64_t size = 0;
        if (!read_all(in, &size, 8) || size != constants[k].size) return 65;
        std::vector<char> unchanged(constants[k].read_only ? size : 0);  // a const one keeps its compiled bytes
        if (!read_all(in, constants[k].read_only ? unchanged.data() : constants[k].address, size)) return 65;
    }
    // Then the device heap's limit and the bytes the context holds (its books are the parent's, launch to launch)
    uint64_t heap[2];
    if (!read_all(in, heap, sizeof heap)) return 65;
    g_heap->limit = size_t(heap[0]);
    g_heap->live = size_t(heap[1]);
    fclose(in);
    // Tell the parent where each buffer lives, so a sanitizer report can be mapped to an argument.
    for (uint64_t i = 0; i < nargs; ++i)
        if (kinds[i] == 1) fprintf(stderr, "EMU_ARG %llu %p %llu\n", (unsigned long long)i, values[i], (unsigned long long)sizes[i]);
    char err[8192] = "";
    const int rc = emu_launch(int(head[1]), argv_ptrs.data(), head + 2, err, sizeof err);
    fprintf(stderr, "EMU_HEAP %d %llu\n", emu_heap_used(), (unsigned long long)emu_heap_live());  // for the parent's books
    std::vector<char> shuffle(emu_undefined_shuffle(nullptr, 0) + 1);
    emu_undefined_shuffle(shuffle.data(), shuffle.size());
    if (shuffle.size() > 1) fprintf(stderr, "EMU_UNDEFINED_SHUFFLE %s\n", shuffle.data());
    std::vector<char> out(emu_output_size() + 1);
    emu_output_take(out.data(), out.size());
    fwrite(out.data(), 1, out.size() - 1, stdout);
    fflush(stdout);
    if (rc != 0) {
        char where_buf[256];  // where an exit()/abort() call was, for the parent's addr2line
        fprintf(stderr, "EMU_FAULT_PC %llx\n", (unsigned long long)emu_fault_location(where_buf, sizeof where_buf));
        fprintf(stderr, "EMU_ERROR %d\n%s\n", rc, err);
        return 70 + rc;
    }
    FILE* o = fopen(argv[2], "wb");
    if (!o) { perror(argv[2]); return 66; }
    for (uint64_t i = 0; i < nargs; ++i)
        if (kinds[i] == 1) fwrite(values[i], 1, sizes[i], o);
    for (int k = 0; k < count; ++k)  // and the globals, which a kernel may change (__device__ counters)
        fwrite(constants[k].address, 1, constants[k].size, o);
    fclose(o);
    return 0;
}
#endif
