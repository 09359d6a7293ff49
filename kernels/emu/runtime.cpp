// runtime.cpp -- the scheduler behind minilora's CUDA emulator.
//
// How a launch runs (read this first):
//
//   * Blocks run one after another, in an order chosen by the caller (forward, reverse, random):
//     CUDA promises nothing about block order, so a correct kernel must not care.
//   * Inside a block every CUDA thread is a *fiber*: a function call with its own small stack that
//     can be paused and resumed.  A scheduler loop makes passes over the block's fibers in a fixed
//     order; a fiber runs until it reaches a barrier (__syncthreads, a warp collective) or returns
//     from the kernel, and then switches straight to the next runnable fiber of the pass (the last
//     one of the pass switches back to the scheduler).  Switching is a hand-written x86-64 routine that saves
//     six registers and the stack pointer (ucontext elsewhere), so a switch costs nanoseconds.
//   * __syncthreads() is a real barrier: when no fiber can run any more, the scheduler checks that
//     every thread of the block waits at the *same* __syncthreads() and none has exited, then
//     releases them all (threads count themselves in as they arrive, so the common case needs no
//     scan of the block).  Anything else is reported as a BarrierError with the source lines.
//   * A warp is 32 consecutive linear thread ids.  A warp collective (__shfl_*_sync, __ballot_sync,
//     __syncwarp) parks each lane until every lane named in the mask has arrived; the last one to
//     arrive computes every lane's result and wakes the others.
//   * __shared__ memory is allocated per block (one heap block per declaration, exact size) and
//     filled with 0xFF bytes (NaN as float) so a read before any write shows up in the result.  A
//     few canary bytes after each allocation catch writes past the end even without ASan.
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

#include <csetjmp>
#include <cstdarg>
#include <cstdlib>
#include <string>
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

// The built-in variables the header's threadIdx/blockIdx/... macros read.
uint3 __emu_thread_idx;
uint3 __emu_block_idx;
dim3 __emu_block_dim;
dim3 __emu_grid_dim;

// Defined in the wrapper that emulator.py generates for each source file.
extern "C" const __emu::KernelInfo* emu_kernel_table(int* count);
extern "C" const __emu::ConstantInfo* emu_constant_table(int* count);

namespace {
using namespace __emu;

// E_INTERRUPTED and E_TIMEOUT: the launch was stopped by Ctrl-C / its timeout= (see "Escapes" below).
// emulator.py replaces this mark in a crash message by " at file.cu:LINE" (found with addr2line).
#define kLocationMark "\x01LOC\x01"
// E_RACE: racecheck found a hazard (the runtime built with -DEMU_RACECHECK, see "racecheck" below).
enum ErrorCode { E_OK = 0, E_BARRIER = 1, E_FAULT = 2, E_INTERNAL = 3, E_INTERRUPTED = 4, E_TIMEOUT = 5, E_RACE = 6 };
enum State { RUNNABLE, AT_BARRIER, AT_WARP, EXITED, AT_GRID };  // AT_GRID: in grid.sync() (cooperative launch)
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
size_t g_stack_size = 64 * 1024;           // of the current launch (a multiple of the page size)
constexpr size_t kCanary = 64;                 // bytes checked after each shared allocation
constexpr unsigned char kCanaryByte = 0xA5;
constexpr size_t kMaxStaticShared = 48 * 1024;     // CUDA's limit for static __shared__
constexpr size_t kMaxShared = 227 * 1024;          // sm_90's limit per block, static + dynamic

// What a barrier touches (sp, idx, state, in_runtime, file/line, pred) comes first and the struct is
// cache-line aligned, so passing the turn to a fiber reads one line of it, not two.
struct alignas(64) Fiber {
    void* sp = nullptr;  // saved stack pointer while switched out (x86-64 path)
    uint3 idx{0, 0, 0};
    int linear = 0;
    int state = RUNNABLE;
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
    char* stack = nullptr;
#ifdef EMU_ASAN
    void* fake_stack = nullptr;
#endif
#ifdef EMU_UCONTEXT
    ucontext_t uc;
#endif
};

// ---- global launch state (one launch at a time; emulator.py holds a lock) ----------------------
struct Launch {
    const KernelInfo* kernel = nullptr;
    void** args = nullptr;
    dim3 grid, block;
    size_t dyn_shared = 0;
    int thread_order = ORDER_FORWARD;
    bool cooperative = false;     // all blocks resident at once, so grid.sync() can work
    uint64_t rng = 1;
    int nthreads = 0;
    std::vector<Fiber> fibers;
    std::vector<int> order;       // the order the scheduler resumes fibers in
    int bar_result = 0;           // value returned by __syncthreads_count/and/or
    // The __syncthreads() interval of the current block, counted as threads arrive, so that a
    // complete barrier is released without scanning the fibers: how many wait, whether all at the
    // first one's site, and the sum of their predicates.
    int bar_waiting = 0, bar_pred = 0;
    bool bar_mixed = false;
    const char* bar_file = nullptr;
    int bar_line = 0;
    int error = E_OK;
    std::string message;
    // Shared memory of the current block.
    char* dyn = nullptr;
    std::vector<char*> slot_ptr;  // per declaration; nullptr until first touched in this block
    size_t static_bytes = 0;
};
Launch g;
Fiber* g_cur = nullptr;
void* g_sched_sp = nullptr;
#ifdef EMU_UCONTEXT
ucontext_t g_sched_uc;
#endif
#ifdef EMU_ASAN
const void* g_main_stack_bottom = nullptr;
size_t g_main_stack_size = 0;
void* g_sched_fake_stack = nullptr;
#endif

struct SlotInfo { size_t size, align; std::string name; const char* file; int line; };
std::vector<SlotInfo> g_slots;  // every __shared__ declaration seen so far in this module
std::string g_output;           // device printf output of the current launch
char* g_stack_pool = nullptr;   // mmap'd stacks, one per thread slot, reused across blocks
size_t g_stack_pool_count = 0;
long long g_clock = 0;

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
    return fmt("block (%u,%u,%u) of kernel '%s'", __emu_block_idx.x, __emu_block_idx.y,
               __emu_block_idx.z, g.kernel->name);
}
void set_error(int code, const std::string& msg) {
    if (g.error == E_OK) { g.error = code; g.message = msg; }
}
// racecheck's clocks (see "racecheck" below; empty unless built with -DEMU_RACECHECK).
void racecheck_block_barrier();
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
//   * SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT and SIGTRAP on the launching thread run on_fault() on
//     an alternate signal stack (the fiber's own stack may be what overflowed).  It notes the signal,
//     the address, the faulting instruction and the CUDA thread -- plain stores, since a signal
//     handler must not allocate -- and siglongjmps back into run_launch(), which frees the block's
//     shared memory and returns E_FAULT.  The next launch builds fresh fibers.
//   * SIGINT (only when Python asks: Python's own handler merely sets a flag, which a spinning kernel
//     never lets it read) and a POSIX timer's signal for timeout= run on_async().  Jumping out is
//     safe only while a fiber executes the kernel's own code: inside malloc or the runtime's string
//     work a jump would leave a lock held or a container half-updated.  Anywhere else the request
//     stays pending: the scheduler checks it after every fiber switch, and a 10 ms retry timer
//     re-delivers it to a fiber that spins inside libm.
// Signals that arrive on another thread go to whatever handler was there before (a Ctrl-C that the
// kernel picked another thread for is forwarded to the launching thread).
volatile sig_atomic_t g_in_fiber = 0;  // a fiber, not the scheduler, is running (both builds)

#ifndef EMU_ASAN
constexpr int kFaultSignals[] = {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT, SIGTRAP};
constexpr int kNumFaultSignals = sizeof kFaultSignals / sizeof kFaultSignals[0];
constexpr double kRetrySeconds = 0.01;

struct Escape {
    sigjmp_buf jump;
    volatile sig_atomic_t armed = 0;    // a launch is running and `jump` is valid
    volatile sig_atomic_t pending = 0;  // E_INTERRUPTED or E_TIMEOUT, waiting for a safe moment
    pid_t tid = 0;                      // the launching OS thread
    int timer_signal = 0;
    timer_t timer{};
    bool has_timer = false, catch_sigint = false;
    double timeout_s = 0;
    struct sigaction saved_fault[kNumFaultSignals], saved_int, saved_timer;
    sigset_t saved_mask;
    stack_t saved_altstack;
    // What the handler saw.
    int reason = 0, sig = 0, si_code = 0;
    uintptr_t addr = 0;
    bool fiber = false;
    uint3 thread{0, 0, 0};
};
Escape g_esc;
uintptr_t g_text_lo = 0, g_text_hi = 0;  // this library's machine code
alignas(64) char g_altstack[64 * 1024];
#endif
uintptr_t g_fault_pc = 0;  // the faulting instruction (or the call of exit/abort), for the source line

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

[[noreturn]] void escape(int reason) {
    g_esc.reason = reason;
    g_esc.fiber = g_in_fiber && g_cur;
    if (g_esc.fiber) g_esc.thread = g_cur->idx;
    g_esc.armed = 0;
    siglongjmp(g_esc.jump, 1);
}

void on_fault(int sig, siginfo_t* si, void* context) {
    int k = 0;
    while (kFaultSignals[k] != sig) ++k;
    if (!g_esc.armed || current_tid() != g_esc.tid) return chain(sig, si, context, g_esc.saved_fault[k]);
    g_esc.sig = sig;
    g_esc.si_code = si->si_code;
    g_esc.addr = uintptr_t(si->si_addr);
    g_fault_pc = pc_of(context);
    escape(E_FAULT);
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
    if (current_tid() != g_esc.tid) {  // Ctrl-C landed on another thread: the launching one must stop
        syscall(SYS_tgkill, getpid(), g_esc.tid, sig);
        return;
    }
    if (!g_esc.pending) g_esc.pending = from_timer ? E_TIMEOUT : E_INTERRUPTED;  // else a retry
    const uintptr_t pc = pc_of(context);
    if (g_in_fiber && g_cur && !g_cur->in_runtime && pc >= g_text_lo && pc < g_text_hi) {
        g_fault_pc = pc;
        escape(g_esc.pending);
    }
    if (g_esc.has_timer) arm_timer(kRetrySeconds);
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
    g_esc.tid = current_tid();
    g_esc.pending = 0;
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
    RuntimeSection() : f(g_cur), was(g_cur ? g_cur->in_runtime : 0) { if (f) f->in_runtime = 1; }
    ~RuntimeSection() { if (f) f->in_runtime = was; }
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
inline void resume(Fiber* f) {
    g_cur = f;
    __emu_thread_idx = f->idx;
#ifdef EMU_ASAN
    __sanitizer_start_switch_fiber(&g_sched_fake_stack, f->stack, g_stack_size);
#endif
    g_in_fiber = 1;
#ifdef EMU_UCONTEXT
    swapcontext(&g_sched_uc, &f->uc);
#else
    emu_switch(&g_sched_sp, f->sp);
#endif
    g_in_fiber = 0;
#ifdef EMU_ASAN
    __sanitizer_finish_switch_fiber(g_sched_fake_stack, nullptr, nullptr);
#endif
}

// The next runnable fiber of the scheduler's pass over g.order after position g_pos (which it then
// names), or nullptr at the end of the pass.
size_t g_pos = 0;
inline Fiber* next_in_pass() {
    const size_t n = g.order.size();
    for (size_t p = g_pos + 1; p < n; ++p) {
        Fiber* f = &g.fibers[size_t(g.order[p])];
        if (f->state == RUNNABLE) {
            g_pos = p;
            // Fetch what the switch after this one will touch -- the following fiber's saved
            // registers and its record -- while this one runs: 256 stacks do not fit in L1.
            if (p + 1 < n) {
                const Fiber* after = &g.fibers[size_t(g.order[p + 1])];
                __builtin_prefetch(after->sp);
                __builtin_prefetch(static_cast<char*>(after->sp) + 64);
                if (p + 2 < n) __builtin_prefetch(&g.fibers[size_t(g.order[p + 2])]);
            }
            return f;
        }
    }
    return nullptr;
}

// Fiber -> the next fiber of the pass, or the scheduler.  Returns when this fiber is resumed again.
// Passing the turn straight to the next runnable fiber (one switch) instead of through the
// scheduler (two switches) halves the cost of a barrier; the fibers still run in exactly the order
// the scheduler's pass would resume them (it continues after g_pos).  An error, a pending Ctrl-C or
// timeout, and the end of the pass go back to the scheduler.  (The ASan and ucontext builds always
// go through the scheduler: their switch bookkeeping assumes it.)
inline void yield_to_scheduler() {
    Fiber* f = g_cur;
#if !defined(EMU_ASAN) && !defined(EMU_UCONTEXT)
    if (!g.error && !g_esc.pending) {
        if (Fiber* next = next_in_pass()) {
            g_cur = next;
            __emu_thread_idx = next->idx;
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
    swapcontext(&f->uc, &g_sched_uc);
#else
    emu_switch(&f->sp, g_sched_sp);
#endif
#ifdef EMU_ASAN
    __sanitizer_finish_switch_fiber(f->fake_stack, &g_main_stack_bottom, &g_main_stack_size);
#endif
}

// A fiber's whole life: run the kernel, report that this thread has exited, and wait.  The next block
// of the launch resumes the same fiber (see reuse_block_fibers), which runs the kernel again as that
// block's thread with the same threadIdx: starting a CUDA thread then costs one ordinary switch, with
// no new stack frame to build and no mispredicted return into a fresh one.
void fiber_main() {
#ifdef EMU_ASAN
    __sanitizer_finish_switch_fiber(nullptr, &g_main_stack_bottom, &g_main_stack_size);
#endif
    for (;;) {
        g.kernel->trampoline(g.args);
        g_cur->state = EXITED;
        yield_to_scheduler();
    }
}

// Errors found inside a fiber (bad shuffle mask, assert, ...): record and never come back.
[[noreturn]] void fail_in_fiber(int code, const std::string& msg) {
    set_error(code, msg);
    g_cur->state = EXITED;
    yield_to_scheduler();
    __builtin_unreachable();
}

size_t g_stack_pool_stride = 0;  // stack size + guard of the pool as allocated

bool ensure_stacks(size_t n) {
    const size_t stride = g_stack_size + kGuard;
    if (n <= g_stack_pool_count && stride == g_stack_pool_stride) return true;
    if (g_stack_pool) munmap(g_stack_pool, g_stack_pool_count * g_stack_pool_stride);
    g_stack_pool_count = 0;
    g_stack_pool_stride = stride;
    size_t bytes = n * stride;
    void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) { g_stack_pool = nullptr; return false; }
    g_stack_pool = static_cast<char*>(p);
    for (size_t i = 0; i < n; ++i)  // guard page at the low end: a stack overflow faults at once
        mprotect(g_stack_pool + i * stride, kGuard, PROT_NONE);
    g_stack_pool_count = n;
    return true;
}

void init_fiber(Fiber& f, int i) {
    f.stack = g_stack_pool + i * g_stack_pool_stride + kGuard;
#ifdef EMU_ASAN
    // Frames of earlier fibers on this stack never returned; forget their redzones.
    ASAN_UNPOISON_MEMORY_REGION(f.stack, g_stack_size);
    f.fake_stack = nullptr;
#endif
#ifdef EMU_UCONTEXT
    getcontext(&f.uc);
    f.uc.uc_stack.ss_sp = f.stack;
    f.uc.uc_stack.ss_size = g_stack_size;
    f.uc.uc_link = nullptr;
    makecontext(&f.uc, fiber_main, 0);
#else
    // Build the frame emu_switch expects to pop: six zeroed registers, then the "return address"
    // fiber_main, then a fake return address for fiber_main itself (keeps the ABI's alignment).
    // Stagger the tops by a cache line per fiber: stacks exactly 68 KiB apart would all map their
    // hot top bytes to the same L1 cache set and evict each other on every switch.
    uintptr_t top = reinterpret_cast<uintptr_t>(f.stack + g_stack_size - 64 * (i % 64)) & ~uintptr_t(15);
    void** sp = reinterpret_cast<void**>(top);
    *--sp = nullptr;                                 // fiber_main's return address (never used)
    *--sp = reinterpret_cast<void*>(&fiber_main);    // where emu_switch's `ret` goes
    for (int r = 0; r < 6; ++r) *--sp = nullptr;     // rbp rbx r12 r13 r14 r15
    f.sp = sp;
#endif
}

// ---- ordering ------------------------------------------------------------------------------------
uint64_t next_random() {  // xorshift64*: small, seedable, good enough for shuffling
    g.rng ^= g.rng >> 12;
    g.rng ^= g.rng << 25;
    g.rng ^= g.rng >> 27;
    return g.rng * 2685821657736338717ull;
}
void make_order(std::vector<int>& v, size_t n, int order) {
    v.resize(n);
    for (size_t i = 0; i < n; ++i) v[i] = order == ORDER_REVERSE ? int(n - 1 - i) : int(i);
    if (order == ORDER_RANDOM)
        for (size_t i = n; i > 1; --i) std::swap(v[i - 1], v[next_random() % i]);
}

// ---- barriers ------------------------------------------------------------------------------------
// Called by the scheduler when no fiber can run.  Either releases a complete __syncthreads(),
// or explains why the block is stuck.  Returns false when the block cannot continue.
bool release_coalesced_groups();

// Every thread of the block waits at the same __syncthreads(): let them all pass.
void release_block_barrier() {
    g.bar_result = g.bar_pred;
    for (Fiber& f : g.fibers) f.state = RUNNABLE;
    g.bar_waiting = g.bar_pred = 0;
    g.bar_mixed = false;
    if (g.thread_order == ORDER_RANDOM) make_order(g.order, g.fibers.size(), ORDER_RANDOM);
    racecheck_block_barrier();
}

bool release_barrier_or_explain() {
    if (release_coalesced_groups()) return true;
    int waiting = 0, exited = 0, at_warp = 0;
    const Fiber* first_wait = nullptr;
    const Fiber* first_exit = nullptr;
    for (const Fiber& f : g.fibers) {
        if (f.state == AT_BARRIER) { ++waiting; if (!first_wait) first_wait = &f; }
        else if (f.state == EXITED) { ++exited; if (!first_exit) first_exit = &f; }
        else if (f.state == AT_WARP) ++at_warp;
    }
    if (at_warp == 0 && waiting > 0 && exited == 0) {
        // Everyone is at a barrier: the same one?
        bool same = true;
        for (const Fiber& f : g.fibers)
            if (f.line != first_wait->line || (f.file != first_wait->file && strcmp(f.file, first_wait->file) != 0)) {
                same = false;
                break;
            }
        if (same) {
            release_block_barrier();
            return true;
        }
        // Divergent barrier: list each __syncthreads() site with how many threads wait there.
        std::vector<std::pair<const Fiber*, int>> sites;
        for (const Fiber& f : g.fibers) {
            bool found = false;
            for (auto& s : sites)
                if (s.first->line == f.line && strcmp(s.first->file, f.file) == 0) { ++s.second; found = true; break; }
            if (!found) sites.push_back({&f, 1});
        }
        std::string msg = "divergent __syncthreads() in " + block_str() + ": threads wait at different barriers:";
        for (size_t i = 0; i < sites.size(); ++i)
            msg += fmt("%s %d threads (e.g. %s) at %s", i ? "," : "", sites[i].second,
                       tid_str(*sites[i].first).c_str(), where(sites[i].first->file, sites[i].first->line).c_str());
        msg += ". Every thread of a block must reach the same __syncthreads(); move it out of the "
               "condition.";
        set_error(E_BARRIER, msg);
        return false;
    }
    if (at_warp == 0 && waiting > 0) {
        set_error(E_BARRIER,
                  fmt("%d threads (e.g. %s) of %s wait at __syncthreads() at %s, but %d threads (e.g. %s) "
                      "have already exited the kernel without reaching it. A `return` or a condition "
                      "around a barrier skips it for some threads; let every thread reach every "
                      "__syncthreads() and guard only the memory accesses.",
                      waiting, tid_str(*first_wait).c_str(), block_str().c_str(),
                      where(first_wait->file, first_wait->line).c_str(), exited,
                      tid_str(*first_exit).c_str()));
        return false;
    }
    // Some lanes wait in a warp collective that can never complete: say which lanes are missing.
    for (const Fiber& f : g.fibers) {
        if (f.state != AT_WARP) continue;
        const int base = f.linear & ~31;
        std::string missing, prev_why;
        int run_start = -1;
        for (int l = 0; l <= 32; ++l) {  // group consecutive lanes that are missing for the same reason
            std::string why;
            const int t = base + l;
            if (l < 32 && (f.wmask >> l & 1u) && t < g.nthreads && g.fibers[t].state != AT_WARP) {
                const Fiber& o = g.fibers[t];
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
    const std::string who = in_thread ? fmt("thread (%u,%u,%u) of ", t.x, t.y, t.z) + block_str() : block_str();
    if (reason == E_INTERRUPTED) return "interrupted (Ctrl-C) while running " + who;
    return fmt("kernel '%s' did not finish within timeout=%g s; stopped in %s. An endless loop? (A loop that "
               "waits for another thread's write never ends here: threads run one at a time until a "
               "barrier.)", g.kernel->name, g_esc.timeout_s, who.c_str());
}

bool in_stack_guard(uintptr_t addr) {
    const uintptr_t pool = reinterpret_cast<uintptr_t>(g_stack_pool);
    if (!pool || addr < pool || addr >= pool + g_stack_pool_count * g_stack_pool_stride) return false;
    return (addr - pool) % g_stack_pool_stride < kGuard;
}

// The message for a crash caught by on_fault(); emulator.py puts the source line at kLocationMark.
std::string describe_fault() {
    std::string what;
    const int sig = g_esc.sig, code = g_esc.si_code;
    const uintptr_t addr = g_esc.addr;
    if ((sig == SIGSEGV || sig == SIGBUS) && in_stack_guard(addr)) {
        what = fmt("stack overflow: the thread needs more than its %zu-byte stack (large local arrays or deep "
                   "recursion); launch with a larger stack_size= (bytes per thread)", g_stack_size);
    } else if (sig == SIGSEGV || sig == SIGBUS) {
        what = fmt("%s: invalid memory access at address 0x%lx%s", sig == SIGSEGV ? "SIGSEGV" : "SIGBUS",
                   (unsigned long)addr, addr < 4096 ? " (a null pointer)" : " (a wild or freed pointer)");
    } else if (sig == SIGFPE) {
        what = code == FPE_INTDIV   ? "SIGFPE: integer division by zero"
               : code == FPE_INTOVF ? "SIGFPE: integer overflow (INT_MIN / -1)"
                                    : "SIGFPE: arithmetic exception";
    } else if (sig == SIGILL) {
        what = "SIGILL: illegal instruction (a trap the compiler put where the code has undefined "
               "behaviour, e.g. a division by a constant zero)";
    } else if (sig == SIGABRT) {
        what = "SIGABRT: the process was asked to abort (e.g. std::terminate)";
    } else {
        what = fmt("signal %d", sig);
    }
    const std::string who = g_esc.fiber ? fmt("thread (%u,%u,%u) of ", g_esc.thread.x, g_esc.thread.y,
                                              g_esc.thread.z) + block_str()
                                        : "the emulator's scheduler, running " + block_str() + ",";
    return who + " crashed" kLocationMark ": " + what;
}
#endif

// coalesced_threads(): a lane waits there until no lane of its block can run on; then the lanes of
// its warp waiting at the same call form the group (the others have exited or wait elsewhere, as
// lanes of another branch do on a GPU).  Each gets the group's lane mask.
bool release_coalesced_groups() {
    bool released = false;
    for (Fiber& f : g.fibers) {
        if (f.state != AT_WARP || f.wop != W_COALESCE) continue;
        const int base = f.linear & ~31;
        unsigned mask = 0;
        for (int l = 0; l < 32 && base + l < g.nthreads; ++l) {
            const Fiber& o = g.fibers[base + l];
            if (o.state == AT_WARP && o.wop == W_COALESCE && o.line == f.line && strcmp(o.file, f.file) == 0)
                mask |= 1u << l;
        }
        racecheck_warp_sync(base / 32);
        for (int l = 0; l < 32; ++l)
            if (mask >> l & 1u) {
                g.fibers[base + l].wresult = mask;
                g.fibers[base + l].state = RUNNABLE;
            }
        released = true;
    }
    return released;
}

// Run one block to completion.  Returns false on error.
enum BlockResult { BLOCK_ERROR = 0, BLOCK_DONE = 1, BLOCK_AT_GRID = 2 };

BlockResult run_block() {
    for (;;) {
        bool ran = false;
        for (g_pos = 0; g_pos < g.order.size(); ++g_pos) {
            Fiber* f = &g.fibers[size_t(g.order[g_pos])];
            if (f->state != RUNNABLE) continue;
            resume(f);  // the fibers pass the turn along the pass; g_pos is where the last one stood
            ran = true;
            if (g.error) return BLOCK_ERROR;
#ifndef EMU_ASAN
            if (g_esc.pending) {  // Ctrl-C or the timeout came while the runtime was busy: stop here
                set_error(g_esc.pending, describe_stop(g_esc.pending, true, g_cur->idx));
                return BLOCK_ERROR;
            }
#endif
        }
        if (g.bar_waiting == g.nthreads && !g.bar_mixed) {  // the common case, without a scan
            release_block_barrier();
            continue;
        }
        if (ran) continue;
        int exited = 0, at_grid = 0;
        for (const Fiber& f : g.fibers) {
            exited += f.state == EXITED;
            at_grid += f.state == AT_GRID;
        }
        if (exited == g.nthreads) return BLOCK_DONE;
        if (at_grid > 0 && at_grid + exited == g.nthreads) {
            if (exited == 0) return BLOCK_AT_GRID;  // parked until every block arrives
            const Fiber* waiting = nullptr;
            for (const Fiber& f : g.fibers) if (f.state == AT_GRID) { waiting = &f; break; }
            set_error(E_BARRIER, fmt("%d threads of %s wait at grid.sync() at %s, but %d have exited the kernel "
                                     "without reaching it: every thread of the grid must call grid.sync()",
                                     at_grid, block_str().c_str(), where(waiting->file, waiting->line).c_str(), exited));
            return BLOCK_ERROR;
        }
        if (!release_barrier_or_explain()) return BLOCK_ERROR;
    }
}

// ---- cooperative launches: every block resident at once --------------------------------------------
// Blocks still run one at a time, but a block that reaches grid.sync() is parked -- its fibers, stacks
// and shared memory kept -- and the next block runs; when every block waits at the grid barrier, all
// are released.  The state of the block being run is swapped into `g`, so the barrier, warp and
// shared-memory code above works on it unchanged.
constexpr size_t kMaxCooperativeThreads = 132 * 2048;  // an H200's resident threads: 132 SMs x 2048
// The emulator's own limit: every thread keeps a stack (and a guard region, one memory mapping each).
constexpr size_t kMaxEmulatedCooperativeThreads = 16384;

struct BlockState {
    uint3 idx{0, 0, 0};
    std::vector<Fiber> fibers;
    std::vector<char*> slot_ptr;
    char* dyn = nullptr;
    size_t static_bytes = 0;
    bool done = false;
};
std::vector<BlockState> g_blocks;
BlockState* g_loaded = nullptr;  // the block whose state is in `g` right now

void swap_block_state(BlockState& b) {  // the same call loads a block into `g` and stores it back
    g.fibers.swap(b.fibers);
    g.slot_ptr.swap(b.slot_ptr);
    std::swap(g.dyn, b.dyn);
    std::swap(g.static_bytes, b.static_bytes);
}
void load_block(BlockState& b) {
    swap_block_state(b);
    g_loaded = &b;
    __emu_block_idx = b.idx;
}
void store_block() {
    swap_block_state(*g_loaded);
    g_loaded = nullptr;
}
void end_block_shared();
void free_cooperative_blocks() {  // after the launch, or after an escape out of it
    if (g_loaded) store_block();
    for (BlockState& b : g_blocks) {
        load_block(b);
        end_block_shared();
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
    uint32_t barrier = 0, warp_sync = 0;
    uintptr_t pc = 0;
};
struct ShadowByte { Access write, read[2]; };
struct TrackedArray { uintptr_t lo, hi; std::string name; };
std::unordered_map<uintptr_t, ShadowByte> g_shadow;
std::vector<TrackedArray> g_tracked;         // this block's shared arrays
std::vector<TrackedArray> g_tracked_global;  // the launch's array arguments (emu_racecheck_track_global)
uint32_t g_barrier_count = 0;
std::vector<uint32_t> g_warp_syncs;   // per warp of the block

void track_shared(const char* p, size_t size, const std::string& name) {
    g_tracked.push_back(TrackedArray{uintptr_t(p), uintptr_t(p) + size, "__shared__ '" + name + "'"});
}
void racecheck_new_block() {
    g_shadow.clear();
    g_tracked.clear();
    g_barrier_count = 0;
    g_warp_syncs.assign(size_t(g.nthreads + 31) / 32, 0);
}
void racecheck_block_barrier() { ++g_barrier_count; }
void racecheck_warp_sync(int warp) { ++g_warp_syncs[size_t(warp)]; }

std::string pc_mark(uintptr_t pc) {  // emulator.py turns the mark into file:line (addr2line)
    Dl_info self{};
    if (!pc || !dladdr(reinterpret_cast<void*>(&racecheck_new_block), &self)) return "an unknown line";
    return fmt("\x01PC:%lx\x01", (unsigned long)(pc - uintptr_t(self.dli_fbase)));
}

[[noreturn]] void report_hazard(const char* kind, const Access& earlier, bool earlier_writes, bool now_writes,
                                uintptr_t pc, const TrackedArray& array, uintptr_t byte) {
    const Fiber& other = g.fibers[size_t(earlier.thread)];
    fail_in_fiber(E_RACE, fmt("racecheck: %s hazard on %s (byte %lu) in %s: %s %s it at %s, then %s %s "
                              "it at %s, with no __syncthreads() (or __syncwarp() within a warp) in between. On a GPU "
                              "the result depends on timing; here fibers run each thread alone up to its next "
                              "barrier, so the kernel silently computes something else. volatile does not order "
                              "accesses: add the barrier.",
                              kind, array.name.c_str(), (unsigned long)(byte - array.lo), block_str().c_str(),
                              tid_str(other).c_str(), earlier_writes ? "writes" : "reads", pc_mark(earlier.pc).c_str(),
                              tid_str(*g_cur).c_str(), now_writes ? "writes" : "reads", pc_mark(pc).c_str()));
}

void racecheck_access(const void* p, size_t n, bool write, uintptr_t pc) {
    if (!g_in_fiber || !g_cur || g_cur->in_runtime) return;
    const uintptr_t a = uintptr_t(p);
    const TrackedArray* array = nullptr;
    for (const TrackedArray& r : g_tracked)
        if (a >= r.lo && a < r.hi) { array = &r; break; }
    if (!array)  // global memory: hazards between threads of one block (blocks do not synchronise at all)
        for (const TrackedArray& r : g_tracked_global)
            if (a >= r.lo && a < r.hi) { array = &r; break; }
    if (!array) return;  // a local variable, or memory the kernel was not given
    const int t = g_cur->linear, warp = t / 32;
    const Access now{t, g_barrier_count, g_warp_syncs[size_t(warp)], pc};
    auto ordered = [&](const Access& e) {
        return e.thread < 0 || e.thread == t || e.barrier != now.barrier ||
               (e.thread / 32 == warp && e.warp_sync != now.warp_sync);
    };
    for (size_t i = 0; i < n && a + i < array->hi; ++i) {
        ShadowByte& b = g_shadow[a + i];
        if (!ordered(b.write)) report_hazard(write ? "write-after-write" : "read-after-write", b.write, true, write, pc, *array, a + i);
        if (write) {
            for (const Access& r : b.read)
                if (!ordered(r)) report_hazard("write-after-read", r, false, true, pc, *array, a + i);
            b.write = now;
            b.read[0] = b.read[1] = Access{};
        } else if (b.read[0].thread < 0 || b.read[0].thread == t || ordered(b.read[0])) {
            b.read[0] = now;  // the slot's reader is stale or this thread: take it over
        } else {
            b.read[1] = now;  // a second reader of the same interval: keep both
        }
    }
}
#else
inline void track_shared(const char*, size_t, const std::string&) {}
inline void racecheck_new_block() {}
void racecheck_block_barrier() {}
void racecheck_warp_sync(int) {}
#endif

// ---- shared memory -------------------------------------------------------------------------------
char* alloc_shared(size_t size, size_t align) {
    if (align < 16) align = 16;
#ifdef EMU_ASAN
    const size_t extra = 0;  // exact size: ASan itself reports the first byte past the end
#else
    const size_t extra = kCanary;
#endif
    void* p = nullptr;
    if (posix_memalign(&p, align, size + extra ? size + extra : 1) != 0) return nullptr;
    char* c = static_cast<char*>(p);
    memset(c, 0xFF, size);  // poison: NaN for floats, -1 for ints
    memset(c + size, kCanaryByte, extra);
    return c;
}
bool canary_intact(const char* p, size_t size) {
#ifdef EMU_ASAN
    (void)p; (void)size;
    return true;
#else
    for (size_t i = 0; i < kCanary; ++i)
        if ((unsigned char)p[size + i] != kCanaryByte) return false;
    return true;
#endif
}

// Frees the block's shared memory; reports a write past the end of any of it.
void end_block_shared() {
    for (size_t s = 0; s < g.slot_ptr.size(); ++s) {
        if (!g.slot_ptr[s]) continue;
        if (!canary_intact(g.slot_ptr[s], g_slots[s].size))
            set_error(E_FAULT, fmt("out-of-bounds write past the end of __shared__ '%s' (%zu bytes, declared at %s) in %s",
                                   g_slots[s].name.c_str(), g_slots[s].size,
                                   where(g_slots[s].file, g_slots[s].line).c_str(), block_str().c_str()));
        free(g.slot_ptr[s]);
        g.slot_ptr[s] = nullptr;
    }
    if (g.dyn) {
        if (!canary_intact(g.dyn, g.dyn_shared))
            set_error(E_FAULT, fmt("out-of-bounds write past the end of extern __shared__ memory (shared_mem=%zu "
                                   "bytes at launch) in %s",
                                   g.dyn_shared, block_str().c_str()));
        free(g.dyn);
        g.dyn = nullptr;
    }
    g.static_bytes = 0;
}

void init_block_fibers(std::vector<Fiber>& fibers, int first_stack) {
    g.bar_waiting = g.bar_pred = 0;
    g.bar_mixed = false;
    for (int i = 0; i < g.nthreads; ++i) {
        Fiber& f = fibers[i];
        f.linear = i;
        f.idx = uint3{unsigned(i % g.block.x), unsigned(i / g.block.x % g.block.y),
                      unsigned(i / (g.block.x * g.block.y))};
        f.state = RUNNABLE;
        f.line = 0;
        f.file = "";
        f.pred = 0;
        f.in_runtime = 0;
        init_fiber(f, first_stack + i);
    }
}

// The fibers of a block that finished normally all wait in fiber_main's loop: the next block reuses
// them as they are (same stacks, same threadIdx).  Only after a normal finish -- a fiber that stopped
// with an error is parked inside the runtime, so an error ends the launch and the next one builds
// fresh fibers.  ASan builds always build fresh ones (its fiber bookkeeping retires an exited fiber).
void reuse_block_fibers() {
    g.bar_waiting = g.bar_pred = 0;
    g.bar_mixed = false;
    for (Fiber& f : g.fibers) {
        f.state = RUNNABLE;
        f.line = 0;
        f.file = "";
    }
}

uint3 block_index(size_t b) {
    return uint3{unsigned(b % g.grid.x), unsigned(b / g.grid.x % g.grid.y), unsigned(b / (size_t(g.grid.x) * g.grid.y))};
}

// Releases a grid barrier once every block waits at it (at the same grid.sync()).
bool release_grid() {
    const Fiber* first = nullptr;
    for (BlockState& b : g_blocks)
        for (Fiber& f : b.fibers) {
            if (!first) first = &f;
            if (f.line != first->line || strcmp(f.file, first->file) != 0) {
                __emu_block_idx = b.idx;
                set_error(E_BARRIER, fmt("divergent grid.sync(): %s waits at %s, thread (%u,%u,%u) of %s at %s",
                                         tid_str(*first).c_str(), where(first->file, first->line).c_str(),
                                         f.idx.x, f.idx.y, f.idx.z, block_str().c_str(), where(f.file, f.line).c_str()));
                return false;
            }
        }
    for (BlockState& b : g_blocks)
        for (Fiber& f : b.fibers) f.state = RUNNABLE;
    return true;
}

int run_cooperative(const std::vector<size_t>& block_order) {
    const size_t nblocks = block_order.size();
    g_blocks.assign(nblocks, BlockState());
    for (size_t b = 0; b < nblocks; ++b) {
        g_blocks[b].idx = block_index(b);
        g_blocks[b].fibers.assign(g.nthreads, Fiber());
        init_block_fibers(g_blocks[b].fibers, int(b) * g.nthreads);
        g_blocks[b].dyn = alloc_shared(g.dyn_shared, 128);
    }
    g.fibers.clear();
    g.slot_ptr.clear();
    for (;;) {
        size_t done = 0;
        const BlockState* finished = nullptr;
        for (size_t b : block_order) {
            BlockState& blk = g_blocks[b];
            if (blk.done) { ++done; finished = &blk; continue; }
            load_block(blk);
            make_order(g.order, g.nthreads, g.thread_order);
            const BlockResult r = run_block();
            store_block();
            if (r == BLOCK_ERROR) return g.error;
            if (r == BLOCK_DONE) { blk.done = true; ++done; finished = &blk; }
        }
        if (done == nblocks) return g.error;
        if (done > 0) {
            __emu_block_idx = finished->idx;
            set_error(E_BARRIER, fmt("%s exited without reaching the grid.sync() that other blocks wait at: every "
                                     "thread of the grid must call grid.sync()", block_str().c_str()));
            return g.error;
        }
        if (!release_grid()) return g.error;
    }
}

int run_launch() {
    g.nthreads = int(g.block.x * g.block.y * g.block.z);
    const size_t nblocks = size_t(g.grid.x) * g.grid.y * g.grid.z;
    if (g.cooperative && nblocks * g.nthreads > kMaxCooperativeThreads) {
        set_error(E_INTERNAL, fmt("a cooperative launch of %zu blocks x %d threads does not fit on the GPU at once "
                                  "(at most %zu resident threads on an H200): CUDA refuses it "
                                  "(cudaErrorCooperativeLaunchTooLarge)", nblocks, g.nthreads, kMaxCooperativeThreads));
        return g.error;
    }
    if (g.cooperative && nblocks * g.nthreads > kMaxEmulatedCooperativeThreads) {
        set_error(E_INTERNAL, fmt("a cooperative launch of %zu blocks x %d threads is more than the CPU emulator runs "
                                  "(%zu threads at most: each keeps its own stack until grid.sync()); use a smaller "
                                  "grid with a grid-stride loop", nblocks, g.nthreads, kMaxEmulatedCooperativeThreads));
        return g.error;
    }
    if (!ensure_stacks(g.cooperative ? nblocks * g.nthreads : g.nthreads)) {
        set_error(E_INTERNAL, "could not allocate fiber stacks");
        return g.error;
    }
    __emu_block_dim = g.block;
    __emu_grid_dim = g.grid;
    std::vector<size_t> block_order;
    {
        std::vector<int> tmp;
        make_order(tmp, nblocks, g.thread_order);
        block_order.assign(tmp.begin(), tmp.end());
    }
    g.fibers.assign(g.nthreads, Fiber());
#ifndef EMU_ASAN
    if (sigsetjmp(g_esc.jump, 1)) {  // a crash, Ctrl-C or the timeout jumped out of the kernel
        g_in_fiber = 0;
        const int reason = g_esc.reason;
        set_error(reason, reason == E_FAULT ? describe_fault() : describe_stop(reason, g_esc.fiber, g_esc.thread));
        if (g.cooperative) free_cooperative_blocks();
        else end_block_shared();
        return g.error;
    }
    g_esc.armed = 1;
#endif
    if (g.cooperative) {
        run_cooperative(block_order);
        free_cooperative_blocks();
    } else {
        for (size_t b : block_order) {
            __emu_block_idx = block_index(b);
            g.dyn = alloc_shared(g.dyn_shared, 128);
            racecheck_new_block();
            track_shared(g.dyn, g.dyn_shared, "extern __shared__");
#ifdef EMU_ASAN
            const bool reuse = false;
#else
            const bool reuse = b != block_order.front();
#endif
            if (reuse) reuse_block_fibers();
            else init_block_fibers(g.fibers, 0);
            // The forward and reverse orders are the same for every block; a random one is drawn anew.
            if (!reuse || g.thread_order == ORDER_RANDOM) make_order(g.order, g.nthreads, g.thread_order);
            const BlockResult r = run_block();
            end_block_shared();
            if (r != BLOCK_DONE || g.error) break;
        }
    }
#ifndef EMU_ASAN
    g_esc.armed = 0;
#endif
    return g.error;
}
}  // namespace

// ---- the API the header's macros call --------------------------------------------------------------
namespace __emu {
int syncthreads(int kind, int pred, const char* file, int line) {
    RuntimeSection busy;
    Fiber* f = g_cur;
    f->state = AT_BARRIER;
    f->file = file;
    f->line = line;
    f->pred = pred;
    if (g.bar_waiting++ == 0) {
        g.bar_file = file;
        g.bar_line = line;
    } else if (line != g.bar_line || (file != g.bar_file && strcmp(file, g.bar_file) != 0)) {
        g.bar_mixed = true;  // a divergent barrier: release_barrier_or_explain() reports it
    }
    g.bar_pred += pred;
    yield_to_scheduler();
    // Released: every thread passed the same barrier, g.bar_result counts the true predicates.
    f->pred = 0;
    switch (kind) {
        case BAR_COUNT: return g.bar_result;
        case BAR_AND: return g.bar_result == g.nthreads;
        case BAR_OR: return g.bar_result > 0;
        default: return 0;
    }
}

// Computes lane `l`'s result once every lane in the mask has deposited its value.
// The lane a shuffle reads for lane `l`.  Past the end of its width-segment CUDA defines the result
// as the caller's own value, so that is `l` itself.
static int shuffle_source(const Fiber& me, int l) {
    const int width = me.wwidth, seg = l & ~(width - 1);
    int src = l;
    switch (me.wop) {
        case W_SHFL_IDX: src = seg + (me.warg & (width - 1)); break;
        case W_SHFL_UP: src = l - me.warg; if (src < seg) src = l; break;
        case W_SHFL_DOWN: src = l + me.warg; if (src >= seg + width) src = l; break;
        case W_SHFL_XOR: src = l ^ me.warg; if (src >= seg + width) src = l; break;
        default: break;
    }
    return src;
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
        default: return 0;  // __syncwarp
    }
    (void)mask;  // a source outside the mask was refused in warp_op before any result is computed
    return lanes[src].wval;
}

unsigned long long warp_op(int op, const char* file, int line, unsigned mask, unsigned long long value,
                           int arg, int width) {
    RuntimeSection busy;
    Fiber* f = g_cur;
    const int base = f->linear & ~31, lane = f->linear & 31;
    const int nlanes = g.nthreads - base < 32 ? g.nthreads - base : 32;
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
        yield_to_scheduler();
        return f->wresult;
    }
    Fiber* lanes = &g.fibers[base];
    for (int l = 0; l < nlanes; ++l)
        if ((mask >> l & 1u) && lanes[l].state != AT_WARP) {
            yield_to_scheduler();  // not everyone is here yet; the last lane to arrive wakes us
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
    if (op >= W_SHFL_IDX && op <= W_SHFL_XOR)  // reading a lane outside the mask is undefined in CUDA
        for (int l = 0; l < nlanes; ++l) {
            const int src = (mask >> l & 1u) ? shuffle_source(lanes[l], l) : l;
            if (src == l || (src < nlanes && (mask >> src & 1u))) continue;
            static const char* const names[] = {"", "__shfl_sync", "__shfl_up_sync", "__shfl_down_sync",
                                                "__shfl_xor_sync"};
            fail_in_fiber(E_FAULT, fmt("%s at %s in warp %d of %s: lane %d reads lane %d, which %s (mask 0x%08x). "
                                       "CUDA leaves that value undefined (it is not the lane's own value); "
                                       "shuffle only from lanes in the mask, e.g. guard the read with the lane "
                                       "index or use a narrower width", names[op], where(file, line).c_str(),
                                       f->linear / 32, block_str().c_str(), l, src,
                                       src < nlanes ? "is not in the mask" : "does not exist (past the block's "
                                                                             "last thread)", mask));
        }
    for (int l = 0; l < nlanes; ++l)
        if (mask >> l & 1u) lanes[l].wresult = warp_result(lanes, nlanes, l);
    for (int l = 0; l < nlanes; ++l)
        if (mask >> l & 1u) lanes[l].state = RUNNABLE;
    racecheck_warp_sync(f->linear / 32);
    f->state = RUNNABLE;
    return f->wresult;
}

unsigned activemask() {
    const int base = g_cur->linear & ~31;
    unsigned m = 0;
    for (int l = 0; l < 32 && base + l < g.nthreads; ++l)
        if (g.fibers[base + l].state != EXITED) m |= 1u << l;
    return m;
}

void* shared_get(int* slot, size_t size, size_t align, const char* name, const char* file, int line) {
    RuntimeSection busy;
    if (*slot < 0) {  // first use of this declaration in this module: give it a slot
        g_slots.push_back(SlotInfo{size, align, name, file, line});
        *slot = int(g_slots.size() - 1);
    }
    if (g.slot_ptr.size() <= size_t(*slot)) g.slot_ptr.resize(*slot + 1, nullptr);
    char*& p = g.slot_ptr[*slot];
    if (!p) {  // first thread of this block to reach the declaration allocates the block's copy
        g.static_bytes += size;
        if (g.static_bytes > kMaxStaticShared)
            fail_in_fiber(E_FAULT, fmt("static __shared__ memory of %s exceeds CUDA's 48 KiB limit (%zu bytes, "
                                       "at '%s' declared at %s); use extern __shared__ and shared_mem=",
                                       block_str().c_str(), g.static_bytes, name, where(file, line).c_str()));
        if (g.static_bytes + g.dyn_shared > kMaxShared)
            fail_in_fiber(E_FAULT, fmt("shared memory of %s exceeds 227 KiB (%zu static + %zu dynamic bytes)",
                                       block_str().c_str(), g.static_bytes, g.dyn_shared));
        p = alloc_shared(size, align);
        track_shared(p, size, name);
    }
    return p;
}

void* dynamic_shared() { return g.dyn; }

void grid_sync(const char* file, int line) {
    RuntimeSection busy;
    if (!g.cooperative)
        fail_in_fiber(E_FAULT, fmt("grid.sync() at %s in %s, %s needs a cooperative launch (all blocks resident at "
                                   "once): create the kernel with enable_cooperative_groups=True, as in CuPy",
                                   where(file, line).c_str(), block_str().c_str(), tid_str(*g_cur).c_str()));
    g_cur->state = AT_GRID;
    g_cur->file = file;
    g_cur->line = line;
    yield_to_scheduler();
}

void trap(const char* file, int line) {
    RuntimeSection busy;
    fail_in_fiber(E_FAULT, fmt("__trap() at %s in %s, %s", where(file, line).c_str(), block_str().c_str(),
                               tid_str(*g_cur).c_str()));
}

void assert_fail(const char* expr, const char* file, int line) {
    RuntimeSection busy;
    fail_in_fiber(E_FAULT, fmt("device-side assertion `%s` failed at %s in %s, %s", expr, where(file, line).c_str(),
                               block_str().c_str(), tid_str(*g_cur).c_str()));
}

int device_printf(const char* f, ...) {
    RuntimeSection busy;
    char buf[4096];
    va_list ap;
    va_start(ap, f);
    int n = vsnprintf(buf, sizeof buf, f, ap);
    va_end(ap);
    if (g_output.size() < (16u << 20)) g_output += buf;  // CUDA's printf buffer is finite too
    return n;
}

long long clock_ticks() { return ++g_clock; }
}  // namespace __emu

// ---- exit() and abort() in device code ------------------------------------------------------------
// The kernel is linked with -Wl,--wrap=exit (and _exit, _Exit, quick_exit, abort), so its calls land
// here: inside a launch they end the launch with a KernelFault that names the call's source line (from
// the return address) instead of ending Python.  Outside a launch they do what they always do.
namespace {
[[noreturn]] void refuse_exit(const char* call, uintptr_t return_address) {
    RuntimeSection busy;
    g_fault_pc = return_address - 1;  // inside the call instruction: addr2line names its line
    fail_in_fiber(E_FAULT, fmt("%s of %s called %s" kLocationMark ": device code cannot end the program (CUDA has "
                               "no exit(); return from the kernel, or use assert() to report a broken invariant)",
                               tid_str(*g_cur).c_str(), block_str().c_str(), call));
}
}  // namespace
extern "C" {
[[noreturn]] void __real_exit(int);
[[noreturn]] void __real__exit(int);
[[noreturn]] void __real__Exit(int);
[[noreturn]] void __real_quick_exit(int);
[[noreturn]] void __real_abort();
#define EMU_WRAP_EXIT(NAME, CALL)                                                                        \
    [[noreturn]] void __wrap_##NAME(int status) {                                                       \
        if (g_in_fiber) refuse_exit(fmt(CALL "(%d)", status).c_str(), uintptr_t(__builtin_return_address(0))); \
        __real_##NAME(status);                                                                           \
    }
EMU_WRAP_EXIT(exit, "exit")
EMU_WRAP_EXIT(_exit, "_exit")
EMU_WRAP_EXIT(_Exit, "_Exit")
EMU_WRAP_EXIT(quick_exit, "quick_exit")
#undef EMU_WRAP_EXIT
[[noreturn]] void __wrap_abort() {
    if (g_in_fiber) refuse_exit("abort()", uintptr_t(__builtin_return_address(0)));
    __real_abort();
}
}

#ifdef EMU_RACECHECK
// Called by emulator.py before a launch, once per array argument; forgotten when the launch ends.
EMU_EXPORT void emu_racecheck_track_global(const void* p, size_t n, const char* name) {
    g_tracked_global.push_back(TrackedArray{uintptr_t(p), uintptr_t(p) + n, name});
}

// ---- the hooks GCC's -fsanitize=thread instrumentation calls (we are their runtime) ---------------
// Loads and stores go to racecheck_access; the __tsan_atomic* functions must really perform the
// atomic operation (they replace the builtins in instrumented code); the rest have nothing to do.
extern "C" {
#define EMU_TSAN_ACCESS(N)                                                                               \
    void __tsan_read##N(void* p) { racecheck_access(p, N, false, uintptr_t(__builtin_return_address(0)) - 1); } \
    void __tsan_write##N(void* p) { racecheck_access(p, N, true, uintptr_t(__builtin_return_address(0)) - 1); } \
    void __tsan_unaligned_read##N(void* p) { racecheck_access(p, N, false, uintptr_t(__builtin_return_address(0)) - 1); } \
    void __tsan_unaligned_write##N(void* p) { racecheck_access(p, N, true, uintptr_t(__builtin_return_address(0)) - 1); } \
    void __tsan_volatile_read##N(void* p) { racecheck_access(p, N, false, uintptr_t(__builtin_return_address(0)) - 1); } \
    void __tsan_volatile_write##N(void* p) { racecheck_access(p, N, true, uintptr_t(__builtin_return_address(0)) - 1); }
EMU_TSAN_ACCESS(1)
EMU_TSAN_ACCESS(2)
EMU_TSAN_ACCESS(4)
EMU_TSAN_ACCESS(8)
EMU_TSAN_ACCESS(16)
#undef EMU_TSAN_ACCESS
void __tsan_read_range(void* p, unsigned long n) { racecheck_access(p, n, false, uintptr_t(__builtin_return_address(0)) - 1); }
void __tsan_write_range(void* p, unsigned long n) { racecheck_access(p, n, true, uintptr_t(__builtin_return_address(0)) - 1); }
void __tsan_init() {}
void __tsan_func_entry(void*) {}
void __tsan_func_exit() {}
void __tsan_vptr_update(void**, void*) {}
void __tsan_vptr_read(void**) {}
void __tsan_atomic_thread_fence(int) { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
void __tsan_atomic_signal_fence(int) {}
#define EMU_TSAN_ATOMIC(BITS, T)                                                                         \
    T __tsan_atomic##BITS##_load(const volatile T* a, int) { return __atomic_load_n(a, __ATOMIC_SEQ_CST); } \
    void __tsan_atomic##BITS##_store(volatile T* a, T v, int) { __atomic_store_n(a, v, __ATOMIC_SEQ_CST); } \
    T __tsan_atomic##BITS##_exchange(volatile T* a, T v, int) { return __atomic_exchange_n(a, v, __ATOMIC_SEQ_CST); } \
    T __tsan_atomic##BITS##_fetch_add(volatile T* a, T v, int) { return __atomic_fetch_add(a, v, __ATOMIC_SEQ_CST); } \
    T __tsan_atomic##BITS##_fetch_sub(volatile T* a, T v, int) { return __atomic_fetch_sub(a, v, __ATOMIC_SEQ_CST); } \
    T __tsan_atomic##BITS##_fetch_and(volatile T* a, T v, int) { return __atomic_fetch_and(a, v, __ATOMIC_SEQ_CST); } \
    T __tsan_atomic##BITS##_fetch_or(volatile T* a, T v, int) { return __atomic_fetch_or(a, v, __ATOMIC_SEQ_CST); } \
    T __tsan_atomic##BITS##_fetch_xor(volatile T* a, T v, int) { return __atomic_fetch_xor(a, v, __ATOMIC_SEQ_CST); } \
    T __tsan_atomic##BITS##_fetch_nand(volatile T* a, T v, int) { return __atomic_fetch_nand(a, v, __ATOMIC_SEQ_CST); } \
    int __tsan_atomic##BITS##_compare_exchange_strong(volatile T* a, T* c, T v, int, int) {             \
        return __atomic_compare_exchange_n(a, c, v, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);          \
    }                                                                                                    \
    int __tsan_atomic##BITS##_compare_exchange_weak(volatile T* a, T* c, T v, int, int) {               \
        return __atomic_compare_exchange_n(a, c, v, true, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);           \
    }                                                                                                    \
    T __tsan_atomic##BITS##_compare_exchange_val(volatile T* a, T c, T v, int, int) {                   \
        __atomic_compare_exchange_n(a, &c, v, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);                \
        return c;                                                                                        \
    }
EMU_TSAN_ATOMIC(8, unsigned char)
EMU_TSAN_ATOMIC(16, unsigned short)
EMU_TSAN_ATOMIC(32, unsigned int)
EMU_TSAN_ATOMIC(64, unsigned long long)
#undef EMU_TSAN_ATOMIC
}
#endif

// ---- the C API emulator.py calls -------------------------------------------------------------------
// cfg: grid.x, grid.y, grid.z, block.x, block.y, block.z, shared_mem, thread/block order, seed,
// stack bytes per thread, timeout in microseconds (0: none), flags (bit 0: Ctrl-C stops the launch,
// bit 1: a cooperative launch).
EMU_EXPORT int emu_launch(int kernel_index, void** args, const uint64_t* cfg, char* err, size_t errlen) {
    int count = 0;
    const KernelInfo* table = emu_kernel_table(&count);
    g.error = E_OK;
    g.message.clear();
    g_output.clear();
    if (kernel_index < 0 || kernel_index >= count) {
        snprintf(err, errlen, "no kernel with index %d", kernel_index);
        return E_INTERNAL;
    }
    g.kernel = &table[kernel_index];
    g.args = args;
    g.grid = dim3(unsigned(cfg[0]), unsigned(cfg[1]), unsigned(cfg[2]));
    g.block = dim3(unsigned(cfg[3]), unsigned(cfg[4]), unsigned(cfg[5]));
    g.dyn_shared = size_t(cfg[6]);
    g.thread_order = int(cfg[7]);
    g.cooperative = (cfg[11] & 2) != 0;
    g.rng = cfg[8] * 0x9E3779B97F4A7C15ull + 0x2545F4914F6CDD1Dull;
    if (g.rng == 0) g.rng = 1;
    const size_t page = size_t(sysconf(_SC_PAGESIZE));
    g_stack_size = (size_t(cfg[9]) < kMinStack ? kMinStack : size_t(cfg[9]) + page - 1) / page * page;
    g_fault_pc = 0;
#ifndef EMU_ASAN
    install_escapes(double(cfg[10]) * 1e-6, (cfg[11] & 1) != 0);
#endif
    const int rc = run_launch();
#ifndef EMU_ASAN
    remove_escapes();
#endif
#ifdef EMU_RACECHECK
    g_tracked_global.clear();
#endif
    if (err && errlen) snprintf(err, errlen, "%s", g.message.c_str());
    return rc;
}

// Where the last launch crashed, for the source line: the offset of the faulting instruction inside
// this library (what addr2line takes), or 0 when it was elsewhere -- then `where` names that place.
EMU_EXPORT uint64_t emu_fault_location(char* where_buf, size_t n) {
    if (n) where_buf[0] = 0;
    Dl_info self{}, at{};
    if (!g_fault_pc || !dladdr(reinterpret_cast<void*>(&emu_fault_location), &self)) return 0;
    if (dladdr(reinterpret_cast<void*>(g_fault_pc), &at) && at.dli_fbase == self.dli_fbase)
        return g_fault_pc - uintptr_t(self.dli_fbase);
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
        s += fmt("%s\t%llu %zu %d,%d,%d,%d,%d,%d\n", table[k].name, (unsigned long long)(uintptr_t)table[k].address,
                 table[k].size, e.code, e.size, e.elem_code, e.elem_size, e.elem_const, e.elem_lanes);
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
    uint64_t head[14];  // magic, kernel index, 12 config words
    if (!read_all(in, head, sizeof head) || head[0] != 0x31554D45u) { fprintf(stderr, "bad launch file\n"); return 65; }
    uint64_t nargs;
    read_all(in, &nargs, 8);
    std::vector<void*> values(nargs), argv_ptrs(nargs);
    std::vector<uint64_t> kinds(nargs), sizes(nargs);
    std::vector<unsigned char> scalars(nargs * 16);
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
        } else {  // scalar: up to 16 bytes, stored in place
            if (sizes[i] > 16 || !read_all(in, &scalars[i * 16], sizes[i])) return 65;
            argv_ptrs[i] = &scalars[i * 16];
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
        if (!read_all(in, constants[k].address, size)) return 65;
    }
    fclose(in);
    // Tell the parent where each buffer lives, so a sanitizer report can be mapped to an argument.
    for (uint64_t i = 0; i < nargs; ++i)
        if (kinds[i] == 1) fprintf(stderr, "EMU_ARG %llu %p %llu\n", (unsigned long long)i, values[i], (unsigned long long)sizes[i]);
    char err[8192] = "";
    const int rc = emu_launch(int(head[1]), argv_ptrs.data(), head + 2, err, sizeof err);
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
    fclose(o);
    return 0;
}
#endif
