// mbarriers (sm_80 / sm_90 inline PTX: mbarrier.init, arrive, arrive.expect_tx, expect_tx, complete_tx, test_wait,
// try_wait, .parity, arrive_drop, inval, and cp.async.mbarrier.arrive) on minilora's CPU emulator.  Not a CUDA
// header: minilora/emulator_ptx.py translates those instructions into these calls.
//
// The barrier is the 8 bytes of shared memory the kernel gives it, as on a GPU, read and written atomically:
//     bits 0-19 arrivals still expected in the current phase, 20-39 the expected count (init's), 40 the phase's
//     parity, 41-61 the transaction count (bytes expected by expect_tx, less those complete_tx reported) + 2^20,
//     62-63 0b01 once initialised (fresh shared memory is 0xFF bytes: a barrier used before init is named).
// A phase completes when its arrivals and its transaction count both reach zero; the parity flips and the expected
// count is re-armed.  A wait that finds its phase incomplete gives the block's other threads a turn (the producer
// runs), so `LAB_WAIT: mbarrier.try_wait... @!p bra LAB_WAIT;` ends as on a GPU.  The arrival token is the phase's
// parity.  racecheck=True learns that what a thread wrote before its arrive happens before what a thread reads
// after its wait saw that phase complete.
#pragma once
#include "../cuda_emu.h"

namespace __emu {
namespace mbar {
constexpr uint64_t kCount = (1ull << 20) - 1, kTxBias = 1ull << 20, kReady = 1ull << 62, kMarker = 3ull << 62;
inline uint64_t pending(uint64_t s) { return s & kCount; }
inline uint64_t expected(uint64_t s) { return (s >> 20) & kCount; }
inline uint64_t parity(uint64_t s) { return (s >> 40) & 1; }
inline int64_t tx(uint64_t s) { return (int64_t)((s >> 41) & ((1ull << 21) - 1)) - (int64_t)kTxBias; }
inline uint64_t pack(uint64_t pend, uint64_t exp, uint64_t par, int64_t txc) {
    return kReady | pend | (exp << 20) | (par << 40) | ((uint64_t)(txc + (int64_t)kTxBias) << 41);
}
inline uint64_t load(uint64_t* bar, const char* file, int line) {
    const uint64_t s = __atomic_load_n(bar, __ATOMIC_SEQ_CST);
    if ((s & kMarker) != kReady)
        device_fault("an mbarrier used before mbarrier.init (or after mbarrier.inval): one thread initialises it, "
                     "then the block synchronises (__syncthreads() or fence.mbarrier_init) before using it", file, line);
    return s;
}
inline void init(uint64_t* bar, uint64_t count, const char* file, int line) {
    if (count < 1 || count > kCount)
        device_fault("mbarrier.init: the expected arrival count must be in 1 .. 2^20 - 1", file, line);
    __atomic_store_n(bar, pack(count, count, 0, 0), __ATOMIC_SEQ_CST);
}
inline void inval(uint64_t* bar) { __atomic_store_n(bar, 0ull, __ATOMIC_SEQ_CST); }
// Arrivals (`count`), a change of the expected count (arrive_drop: -count) and of the transaction count (`tx`, in
// bytes: + by expect_tx, - by complete_tx), applied together; returns the token (the phase's parity before).
inline uint64_t update(uint64_t* bar, uint64_t count, uint64_t drop, int64_t txd, const char* file, int line) {
    const uint64_t s = load(bar, file, line);
    uint64_t pend = pending(s), exp = expected(s), par = parity(s);
    int64_t txc = tx(s) + txd;
    if (count > pend)
        device_fault("mbarrier.arrive: more arrivals than the phase expects (the count given to mbarrier.init); the "
                     "PTX ISA leaves this undefined", file, line);
    if (txc <= -(int64_t)kTxBias || txc >= (int64_t)kTxBias)
        device_fault("mbarrier: the transaction count left the range +-(2^20 - 1)", file, line);
    pend -= count;
    exp -= drop;
    if (count || txd < 0) mbarrier_event(bar, 0);
    if (pend == 0 && txc == 0) {  // the phase completes
        mbarrier_event(bar, 1);
        par ^= 1;
        pend = exp;
    }
    __atomic_store_n(bar, pack(pend, exp, par, txc), __ATOMIC_SEQ_CST);
    return parity(s);
}
// test_wait / try_wait: has the phase of this parity completed?  (A phase's token is its parity.)  A thread that
// finds it has not lets the others run before it tries again.
inline bool wait(uint64_t* bar, uint64_t phase_parity, const char* file, int line) {
    if (parity(load(bar, file, line)) != (phase_parity & 1)) {
        mbarrier_event(bar, 2);
        return true;
    }
    spin_turn();
    return false;
}
}  // namespace mbar
}  // namespace __emu

namespace __emu {
namespace mbar {
// cp.async.bulk ... .mbarrier::complete_tx::bytes [dst], [src], size, [bar]: the copy, then complete_tx(size).
inline void bulk_copy(void* dst, const void* src, size_t bytes, uint64_t* bar, const char* file, int line) {
    if (bytes % 16 || (uintptr_t(dst) | uintptr_t(src)) % 16)
        device_fault("cp.async.bulk: the size and both addresses must be multiples of 16 bytes", file, line);
    // word by word in the kernel's own code, so that racecheck and initcheck see the writes (a memcpy they would not)
    for (size_t i = 0; i < bytes; i += 4) {
        uint32_t word;
        std::memcpy(&word, static_cast<const char*>(src) + i, 4);
        *reinterpret_cast<uint32_t*>(static_cast<char*>(dst) + i) = word;
        __asm__ volatile("" ::: "memory");  // (and no loop g++ would turn back into a memcpy)
    }
    update(bar, 0, 0, -(int64_t)bytes, file, line);
}
}  // namespace mbar
}  // namespace __emu
