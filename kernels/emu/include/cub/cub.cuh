// Stand-in for CUB (<cub/cub.cuh>) under minilora's CPU emulator: the block- and warp-wide collectives kernels
// use most -- cub::BlockReduce, cub::BlockScan, cub::WarpReduce, cub::WarpScan, cub::BlockLoad / BlockStore /
// BlockExchange (and the LoadDirect* / StoreDirect* functions, CacheModifiedInputIterator), cub::BlockRadixSort,
// BlockMergeSort, BlockHistogram, BlockDiscontinuity, BlockAdjacentDifference, BlockShuffle, BlockRunLengthDecode,
// WarpLoad / WarpStore / WarpExchange, WarpMergeSort --
// with CUB's interfaces (a TempStorage in __shared__, results where CUB defines them: a reduction's in thread /
// lane 0) and its operators (cub::Sum, Max, Min, ArgMax, ArgMin, KeyValuePair).  They are written with the emulator's own
// shuffles and __syncthreads, so its barrier, shuffle and race checks apply as to the user's code.  Anything
// else of CUB (the Device* algorithms, ...) fails to compile with a message that names it.
#pragma once
#include "../../cuda_emu.h"
#include "../cuda/std/__emu_open.h"
#include <functional>
#include <type_traits>
#include "../cuda/std/__emu_close.h"

namespace cub {
// ---- operators ----------------------------------------------------------------------------------
struct Sum {
    template <class T> T operator()(const T& a, const T& b) const { return a + b; }
};
struct Max {  // CUB_MAX: (a < b) ? b : a
    template <class T> T operator()(const T& a, const T& b) const { return a < b ? b : a; }
};
struct Min {  // CUB_MIN: (b < a) ? b : a
    template <class T> T operator()(const T& a, const T& b) const { return b < a ? b : a; }
};
template <class K, class V>
struct KeyValuePair {
    typedef K Key;
    typedef V Value;
    K key;
    V value;
    KeyValuePair() = default;
    KeyValuePair(const K& k, const V& v) : key(k), value(v) {}
};
struct ArgMax {  // the larger value; on a tie, the smaller key (index)
    template <class K, class V>
    KeyValuePair<K, V> operator()(const KeyValuePair<K, V>& a, const KeyValuePair<K, V>& b) const {
        return ((b.value > a.value) || ((a.value == b.value) && (b.key < a.key))) ? b : a;
    }
};
struct ArgMin {
    template <class K, class V>
    KeyValuePair<K, V> operator()(const KeyValuePair<K, V>& a, const KeyValuePair<K, V>& b) const {
        return ((b.value < a.value) || ((a.value == b.value) && (b.key < a.key))) ? b : a;
    }
};

namespace __emu_detail {
// A value of any (trivially copyable) type through one of the emulator's 8-byte shuffles (`shuffle`, a word to
// a word), in pieces if larger.
template <class T, class Shuffle>
T shuffle_words(T v, Shuffle shuffle) {
    constexpr int words = (int)((sizeof(T) + 7) / 8);
    unsigned long long bits[words] = {};
    std::memcpy(bits, &v, sizeof(T));
    for (int k = 0; k < words; ++k) bits[k] = shuffle(bits[k]);
    T r;
    std::memcpy(&r, bits, sizeof(T));
    return r;
}
template <class T>
T shfl_down(T v, int offset, int width, unsigned mask = 0xffffffffu) {
    return shuffle_words(v, [&](unsigned long long w) { return __shfl_down_sync(mask, w, offset, width); });
}
template <class T>
T shfl_up(T v, int offset, int width, unsigned mask = 0xffffffffu) {
    return shuffle_words(v, [&](unsigned long long w) { return __shfl_up_sync(mask, w, offset, width); });
}
template <class T>
T shfl_idx(T v, int lane, int width, unsigned mask = 0xffffffffu) {
    return shuffle_words(v, [&](unsigned long long w) { return __shfl_sync(mask, w, lane, width); });
}
inline int linear_tid() {
    return (int)(threadIdx.x + threadIdx.y * blockDim.x + threadIdx.z * blockDim.x * blockDim.y);
}
// Reduction over a logical warp of `width` lanes by shfl_down, as CUB's: lane 0 ends with the total of the
// first `valid` lanes (the others with partial totals).
template <class T, class Op>
T warp_reduce(T v, Op op, int width, int valid, unsigned mask = 0xffffffffu) {
    const int lane = linear_tid() % width;
    for (int offset = 1; offset < width; offset *= 2) {
        const T other = shfl_down(v, offset, width, mask);
        if (lane + offset < valid) v = op(v, other);
    }
    return v;
}
// Inclusive scan over a logical warp by shfl_up (Kogge-Stone).
template <class T, class Op>
T warp_inclusive_scan(T v, Op op, int width, int lane, unsigned mask = 0xffffffffu) {
    for (int offset = 1; offset < width; offset *= 2) {
        const T other = shfl_up(v, offset, width, mask);
        if (lane >= offset) v = op(other, v);
    }
    return v;
}
template <class T> struct dependent_false : std::false_type {};
// What a collective constructed without a TempStorage uses (CUB: its own __shared__ "private" storage): one block-wide
// allocation per collective type, from the runtime as a __shared__ declaration's (so the race checks see it).
template <class Storage, class Owner>
Storage& private_storage(const char* name) {
    static int slot = -1;
    return *static_cast<Storage*>(__emu::shared_get(&slot, sizeof(Storage), alignof(Storage), name, __FILE__, __LINE__));
}
// The lanes of warp `warp` in a block of `threads` threads (the last warp may be partial).
constexpr unsigned warp_mask(int threads, int warp) {
    return threads - 32 * warp >= 32 ? 0xffffffffu : (1u << (threads - 32 * warp)) - 1u;
}
}  // namespace __emu_detail

enum BlockReduceAlgorithm { BLOCK_REDUCE_RAKING_COMMUTATIVE_ONLY, BLOCK_REDUCE_RAKING, BLOCK_REDUCE_WARP_REDUCTIONS };
enum BlockScanAlgorithm { BLOCK_SCAN_RAKING, BLOCK_SCAN_RAKING_MEMOIZE, BLOCK_SCAN_WARP_SCANS };

// ---- WarpReduce / WarpScan -----------------------------------------------------------------------
template <class T, int LOGICAL_WARP_THREADS = 32, int LEGACY_PTX_ARCH = 0>
class WarpReduce {
    static_assert(LOGICAL_WARP_THREADS >= 1 && LOGICAL_WARP_THREADS <= 32 &&
                  (LOGICAL_WARP_THREADS & (LOGICAL_WARP_THREADS - 1)) == 0,
                  "cub::WarpReduce on the emulator: LOGICAL_WARP_THREADS is a power of two up to 32");
  public:
    struct TempStorage { unsigned char unused; };
    explicit WarpReduce(TempStorage&) {}
    T Sum(T input) { return Reduce(input, cub::Sum()); }
    T Sum(T input, int valid_items) { return Reduce(input, cub::Sum(), valid_items); }
    template <class Op> T Reduce(T input, Op op) { return Reduce(input, op, LOGICAL_WARP_THREADS); }
    template <class Op> T Reduce(T input, Op op, int valid_items) {
        return __emu_detail::warp_reduce(input, op, LOGICAL_WARP_THREADS, valid_items);
    }
};

template <class T, int LOGICAL_WARP_THREADS = 32, int LEGACY_PTX_ARCH = 0>
class WarpScan {
    static_assert(LOGICAL_WARP_THREADS >= 1 && LOGICAL_WARP_THREADS <= 32 &&
                  (LOGICAL_WARP_THREADS & (LOGICAL_WARP_THREADS - 1)) == 0,
                  "cub::WarpScan on the emulator: LOGICAL_WARP_THREADS is a power of two up to 32");
    int lane() const { return __emu_detail::linear_tid() % LOGICAL_WARP_THREADS; }
  public:
    struct TempStorage { unsigned char unused; };
    explicit WarpScan(TempStorage&) {}
    void InclusiveSum(T input, T& output) { InclusiveScan(input, output, cub::Sum()); }
    void InclusiveSum(T input, T& output, T& warp_aggregate) { InclusiveScan(input, output, cub::Sum(), warp_aggregate); }
    void ExclusiveSum(T input, T& output) { ExclusiveScan(input, output, T(0), cub::Sum()); }
    void ExclusiveSum(T input, T& output, T& warp_aggregate) { ExclusiveScan(input, output, T(0), cub::Sum(), warp_aggregate); }
    template <class Op> void InclusiveScan(T input, T& output, Op op) {
        output = __emu_detail::warp_inclusive_scan(input, op, LOGICAL_WARP_THREADS, lane());
    }
    template <class Op> void InclusiveScan(T input, T& output, Op op, T& warp_aggregate) {
        InclusiveScan(input, output, op);
        warp_aggregate = __emu_detail::shfl_idx(output, LOGICAL_WARP_THREADS - 1, LOGICAL_WARP_THREADS);
    }
    template <class Op> void ExclusiveScan(T input, T& output, T initial_value, Op op) {
        T aggregate;
        ExclusiveScan(input, output, initial_value, op, aggregate);
    }
    template <class Op> void ExclusiveScan(T input, T& output, T initial_value, Op op, T& warp_aggregate) {
        T inclusive;
        InclusiveScan(input, inclusive, op, warp_aggregate);
        const T before = __emu_detail::shfl_up(inclusive, 1, LOGICAL_WARP_THREADS);
        output = lane() == 0 ? initial_value : op(initial_value, before);
    }
    T Broadcast(T input, unsigned src_lane) { return __emu_detail::shfl_idx(input, (int)src_lane, LOGICAL_WARP_THREADS); }
};

// ---- BlockReduce ---------------------------------------------------------------------------------
// Each warp reduces by shuffles, lane 0 of each writes its total to TempStorage, and thread 0 combines them
// in warp order: the total is thread 0's (CUB: "only valid in thread 0"); every thread calls it, since it
// holds a __syncthreads.
template <class T, int BLOCK_DIM_X, BlockReduceAlgorithm ALGORITHM = BLOCK_REDUCE_WARP_REDUCTIONS,
          int BLOCK_DIM_Y = 1, int BLOCK_DIM_Z = 1, int LEGACY_PTX_ARCH = 0>
class BlockReduce {
    static constexpr int THREADS = BLOCK_DIM_X * BLOCK_DIM_Y * BLOCK_DIM_Z;
    static constexpr int WARPS = (THREADS + 31) / 32;
  public:
    struct TempStorage { T warp_totals[WARPS]; };
  private:
    TempStorage& temp_;
    template <class Op> T reduce_valid(T input, Op op, int valid) {
        const int tid = __emu_detail::linear_tid(), warp = tid / 32, lane = tid % 32;
        const int warp_valid = valid - warp * 32 < 32 ? valid - warp * 32 : 32;
        T partial = __emu_detail::warp_reduce(input, op, 32, warp_valid, __emu_detail::warp_mask(THREADS, warp));
        if (lane == 0 && warp_valid > 0) temp_.warp_totals[warp] = partial;
        __syncthreads();
        if (tid == 0) {
            const int warps = (valid + 31) / 32;
            for (int w = 1; w < warps; ++w) partial = op(partial, temp_.warp_totals[w]);
        }
        return partial;
    }
  public:
    BlockReduce() : temp_(__emu_detail::private_storage<TempStorage, BlockReduce>("cub::BlockReduce's TempStorage")) {}
    explicit BlockReduce(TempStorage& temp_storage) : temp_(temp_storage) {}
    T Sum(T input) { return reduce_valid(input, cub::Sum(), THREADS); }
    T Sum(T input, int num_valid) { return reduce_valid(input, cub::Sum(), num_valid); }
    template <int ITEMS> T Sum(T (&inputs)[ITEMS]) { return Reduce(inputs, cub::Sum()); }
    template <class Op> T Reduce(T input, Op op) { return reduce_valid(input, op, THREADS); }
    template <class Op> T Reduce(T input, Op op, int num_valid) { return reduce_valid(input, op, num_valid); }
    template <int ITEMS, class Op> T Reduce(T (&inputs)[ITEMS], Op op) {
        T own = inputs[0];
        for (int k = 1; k < ITEMS; ++k) own = op(own, inputs[k]);
        return reduce_valid(own, op, THREADS);
    }
};

// ---- BlockScan -----------------------------------------------------------------------------------
// Warp scans by shuffles, warp totals through TempStorage, and each thread adds the totals of the warps
// before its own; every thread gets its result (and the block aggregate where asked), as in CUB.
template <class T, int BLOCK_DIM_X, BlockScanAlgorithm ALGORITHM = BLOCK_SCAN_RAKING, int BLOCK_DIM_Y = 1,
          int BLOCK_DIM_Z = 1, int LEGACY_PTX_ARCH = 0>
class BlockScan {
    static constexpr int THREADS = BLOCK_DIM_X * BLOCK_DIM_Y * BLOCK_DIM_Z;
    static constexpr int WARPS = (THREADS + 31) / 32;
  public:
    struct TempStorage { T warp_totals[WARPS]; };
  private:
    TempStorage& temp_;
    // The inclusive scan of the block, its exclusive counterpart (undefined in thread 0) and the aggregate.
    template <class Op> void scan(T input, Op op, T& inclusive, T& exclusive, bool& has_exclusive, T& aggregate) {
        const int tid = __emu_detail::linear_tid(), warp = tid / 32, lane = tid % 32;
        const unsigned mask = __emu_detail::warp_mask(THREADS, warp);
        const T in_warp = __emu_detail::warp_inclusive_scan(input, op, 32, lane, mask);
        if (lane == 31 || tid == THREADS - 1) temp_.warp_totals[warp] = in_warp;
        const T before_in_warp = __emu_detail::shfl_up(in_warp, 1, 32, mask);
        __syncthreads();
        T warps_before{};
        for (int w = 0; w < warp; ++w) warps_before = w == 0 ? temp_.warp_totals[0] : op(warps_before, temp_.warp_totals[w]);
        aggregate = temp_.warp_totals[0];
        for (int w = 1; w < WARPS; ++w) aggregate = op(aggregate, temp_.warp_totals[w]);
        inclusive = warp > 0 ? op(warps_before, in_warp) : in_warp;
        has_exclusive = tid > 0;
        exclusive = lane == 0 ? warps_before : (warp > 0 ? op(warps_before, before_in_warp) : before_in_warp);
    }
  public:
    BlockScan() : temp_(__emu_detail::private_storage<TempStorage, BlockScan>("cub::BlockScan's TempStorage")) {}
    explicit BlockScan(TempStorage& temp_storage) : temp_(temp_storage) {}
    template <class Op> void InclusiveScan(T input, T& output, Op op, T& block_aggregate) {
        T exclusive; bool has;
        scan(input, op, output, exclusive, has, block_aggregate);
    }
    template <class Op> void InclusiveScan(T input, T& output, Op op) { T agg; InclusiveScan(input, output, op, agg); }
    template <class Op> void ExclusiveScan(T input, T& output, T initial_value, Op op, T& block_aggregate) {
        T inclusive, exclusive; bool has;
        scan(input, op, inclusive, exclusive, has, block_aggregate);
        output = has ? op(initial_value, exclusive) : initial_value;
    }
    template <class Op> void ExclusiveScan(T input, T& output, T initial_value, Op op) {
        T agg; ExclusiveScan(input, output, initial_value, op, agg);
    }
    void InclusiveSum(T input, T& output) { InclusiveScan(input, output, cub::Sum()); }
    void InclusiveSum(T input, T& output, T& block_aggregate) { InclusiveScan(input, output, cub::Sum(), block_aggregate); }
    void ExclusiveSum(T input, T& output) { ExclusiveScan(input, output, T(0), cub::Sum()); }
    void ExclusiveSum(T input, T& output, T& block_aggregate) { ExclusiveScan(input, output, T(0), cub::Sum(), block_aggregate); }
    // Several items per thread: thread t's items follow thread t-1's (a "blocked arrangement").
    // Each form also comes with the block's total (block_aggregate), as CUB's.
    template <int ITEMS, class Op> void InclusiveScan(T (&input)[ITEMS], T (&output)[ITEMS], Op op, T& block_aggregate) {
        T own = input[0];
        for (int k = 1; k < ITEMS; ++k) own = op(own, input[k]);
        T inclusive, exclusive;
        bool has;
        scan(own, op, inclusive, exclusive, has, block_aggregate);
        for (int k = 0; k < ITEMS; ++k)
            output[k] = k > 0 ? op(output[k - 1], input[k]) : has ? op(exclusive, input[0]) : input[0];
    }
    template <int ITEMS, class Op> void InclusiveScan(T (&input)[ITEMS], T (&output)[ITEMS], Op op) {
        T agg; InclusiveScan(input, output, op, agg);
    }
    template <int ITEMS> void InclusiveSum(T (&input)[ITEMS], T (&output)[ITEMS]) { InclusiveScan(input, output, cub::Sum()); }
    template <int ITEMS> void InclusiveSum(T (&input)[ITEMS], T (&output)[ITEMS], T& block_aggregate) {
        InclusiveScan(input, output, cub::Sum(), block_aggregate);
    }
    template <int ITEMS, class Op>
    void ExclusiveScan(T (&input)[ITEMS], T (&output)[ITEMS], T initial_value, Op op, T& block_aggregate) {
        T own = input[0];
        for (int k = 1; k < ITEMS; ++k) own = op(own, input[k]);
        T inclusive, exclusive; bool has;
        scan(own, op, inclusive, exclusive, has, block_aggregate);
        T running = has ? op(initial_value, exclusive) : initial_value;
        for (int k = 0; k < ITEMS; ++k) {
            const T item = input[k];
            output[k] = running;
            running = op(running, item);
        }
    }
    template <int ITEMS, class Op> void ExclusiveScan(T (&input)[ITEMS], T (&output)[ITEMS], T initial_value, Op op) {
        T agg; ExclusiveScan(input, output, initial_value, op, agg);
    }
    template <int ITEMS> void ExclusiveSum(T (&input)[ITEMS], T (&output)[ITEMS], T& block_aggregate) {
        ExclusiveScan(input, output, T(0), cub::Sum(), block_aggregate);
    }
    template <int ITEMS> void ExclusiveSum(T (&input)[ITEMS], T (&output)[ITEMS]) { ExclusiveScan(input, output, T(0), cub::Sum()); }
};

// ---- data movement: BlockLoad, BlockStore, BlockExchange --------------------------------------------
// Arrangements (CUB's words): "blocked" -- thread t holds items t*ITEMS .. t*ITEMS+ITEMS-1; "striped" -- thread
// t holds items t, t+THREADS, ...; "warp-striped" -- within each warp's run of 32*ITEMS items, lane l holds
// l, l+32, ....  The loads and stores read and write global memory directly in the arrangement asked for (what
// every algorithm amounts to); BlockExchange goes through its TempStorage with a __syncthreads(), as CUB's.
struct NullType {};

// Cache modifiers only steer a GPU's caches: here every load and store is a plain one.
enum CacheLoadModifier { LOAD_DEFAULT, LOAD_CA, LOAD_CG, LOAD_CS, LOAD_CV, LOAD_LDG, LOAD_VOLATILE };
enum CacheStoreModifier { STORE_DEFAULT, STORE_WB, STORE_CG, STORE_CS, STORE_WT, STORE_VOLATILE };
template <CacheLoadModifier MODIFIER, class T> T ThreadLoad(const T* ptr) { return *ptr; }
template <CacheLoadModifier MODIFIER, class T> T ThreadLoad(T* ptr) { return *ptr; }
template <CacheStoreModifier MODIFIER, class T> void ThreadStore(T* ptr, T value) { *ptr = value; }

// A random-access iterator over `ValueType` loaded with a cache modifier (a plain pointer here).
template <CacheLoadModifier MODIFIER, class ValueType, class OffsetT = ptrdiff_t>
class CacheModifiedInputIterator {
    const ValueType* ptr_;
  public:
    typedef ValueType value_type;
    typedef OffsetT difference_type;
    explicit CacheModifiedInputIterator(const ValueType* ptr) : ptr_(ptr) {}
    ValueType operator*() const { return *ptr_; }
    template <class Distance> ValueType operator[](Distance n) const { return ptr_[n]; }
    template <class Distance> CacheModifiedInputIterator operator+(Distance n) const {
        return CacheModifiedInputIterator(ptr_ + n);
    }
    template <class Distance> CacheModifiedInputIterator operator-(Distance n) const {
        return CacheModifiedInputIterator(ptr_ - n);
    }
    template <class Distance> CacheModifiedInputIterator& operator+=(Distance n) { ptr_ += n; return *this; }
    CacheModifiedInputIterator& operator++() { ++ptr_; return *this; }
    CacheModifiedInputIterator operator++(int) { CacheModifiedInputIterator before = *this; ++ptr_; return before; }
    difference_type operator-(const CacheModifiedInputIterator& other) const { return ptr_ - other.ptr_; }
    bool operator==(const CacheModifiedInputIterator& other) const { return ptr_ == other.ptr_; }
    bool operator!=(const CacheModifiedInputIterator& other) const { return ptr_ != other.ptr_; }
};

template <class T, int ITEMS, class It>
void LoadDirectBlocked(int linear_tid, It block_itr, T (&items)[ITEMS]) {
    for (int i = 0; i < ITEMS; ++i) items[i] = block_itr[linear_tid * ITEMS + i];
}
template <class T, int ITEMS, class It>
void LoadDirectBlocked(int linear_tid, It block_itr, T (&items)[ITEMS], int valid_items) {
    for (int i = 0; i < ITEMS; ++i)
        if (linear_tid * ITEMS + i < valid_items) items[i] = block_itr[linear_tid * ITEMS + i];
}
template <class T, class Default, int ITEMS, class It>
void LoadDirectBlocked(int linear_tid, It block_itr, T (&items)[ITEMS], int valid_items, Default oob_default) {
    for (int i = 0; i < ITEMS; ++i) items[i] = (T)oob_default;
    LoadDirectBlocked(linear_tid, block_itr, items, valid_items);
}
template <int BLOCK_THREADS, class T, int ITEMS, class It>
void LoadDirectStriped(int linear_tid, It block_itr, T (&items)[ITEMS]) {
    for (int i = 0; i < ITEMS; ++i) items[i] = block_itr[linear_tid + i * BLOCK_THREADS];
}
template <int BLOCK_THREADS, class T, int ITEMS, class It>
void LoadDirectStriped(int linear_tid, It block_itr, T (&items)[ITEMS], int valid_items) {
    for (int i = 0; i < ITEMS; ++i)
        if (linear_tid + i * BLOCK_THREADS < valid_items) items[i] = block_itr[linear_tid + i * BLOCK_THREADS];
}
template <int BLOCK_THREADS, class T, class Default, int ITEMS, class It>
void LoadDirectStriped(int linear_tid, It block_itr, T (&items)[ITEMS], int valid_items, Default oob_default) {
    for (int i = 0; i < ITEMS; ++i) items[i] = (T)oob_default;
    LoadDirectStriped<BLOCK_THREADS>(linear_tid, block_itr, items, valid_items);
}
template <class T, int ITEMS, class It>
void StoreDirectBlocked(int linear_tid, It block_itr, T (&items)[ITEMS]) {
    for (int i = 0; i < ITEMS; ++i) block_itr[linear_tid * ITEMS + i] = items[i];
}
template <class T, int ITEMS, class It>
void StoreDirectBlocked(int linear_tid, It block_itr, T (&items)[ITEMS], int valid_items) {
    for (int i = 0; i < ITEMS; ++i)
        if (linear_tid * ITEMS + i < valid_items) block_itr[linear_tid * ITEMS + i] = items[i];
}
template <int BLOCK_THREADS, class T, int ITEMS, class It>
void StoreDirectStriped(int linear_tid, It block_itr, T (&items)[ITEMS]) {
    for (int i = 0; i < ITEMS; ++i) block_itr[linear_tid + i * BLOCK_THREADS] = items[i];
}
template <int BLOCK_THREADS, class T, int ITEMS, class It>
void StoreDirectStriped(int linear_tid, It block_itr, T (&items)[ITEMS], int valid_items) {
    for (int i = 0; i < ITEMS; ++i)
        if (linear_tid + i * BLOCK_THREADS < valid_items) block_itr[linear_tid + i * BLOCK_THREADS] = items[i];
}

enum BlockLoadAlgorithm { BLOCK_LOAD_DIRECT, BLOCK_LOAD_STRIPED, BLOCK_LOAD_VECTORIZE, BLOCK_LOAD_TRANSPOSE,
                          BLOCK_LOAD_WARP_TRANSPOSE, BLOCK_LOAD_WARP_TRANSPOSE_TIMESLICED };
enum BlockStoreAlgorithm { BLOCK_STORE_DIRECT, BLOCK_STORE_STRIPED, BLOCK_STORE_VECTORIZE, BLOCK_STORE_TRANSPOSE,
                           BLOCK_STORE_WARP_TRANSPOSE, BLOCK_STORE_WARP_TRANSPOSE_TIMESLICED };

// Every algorithm but *_STRIPED leaves (or takes) the items blocked; the striped ones, striped.
template <class T, int BLOCK_DIM_X, int ITEMS_PER_THREAD, BlockLoadAlgorithm ALGORITHM = BLOCK_LOAD_DIRECT,
          int BLOCK_DIM_Y = 1, int BLOCK_DIM_Z = 1, int LEGACY_PTX_ARCH = 0>
class BlockLoad {
    static constexpr int THREADS = BLOCK_DIM_X * BLOCK_DIM_Y * BLOCK_DIM_Z;
    static constexpr bool STRIPED = ALGORITHM == BLOCK_LOAD_STRIPED;
  public:
    struct TempStorage { unsigned char unused; };
    BlockLoad() {}
    explicit BlockLoad(TempStorage&) {}
    template <class It> void Load(It block_itr, T (&items)[ITEMS_PER_THREAD]) {
        if (STRIPED) LoadDirectStriped<THREADS>(__emu_detail::linear_tid(), block_itr, items);
        else LoadDirectBlocked(__emu_detail::linear_tid(), block_itr, items);
    }
    template <class It> void Load(It block_itr, T (&items)[ITEMS_PER_THREAD], int valid_items) {
        if (STRIPED) LoadDirectStriped<THREADS>(__emu_detail::linear_tid(), block_itr, items, valid_items);
        else LoadDirectBlocked(__emu_detail::linear_tid(), block_itr, items, valid_items);
    }
    template <class It, class Default>
    void Load(It block_itr, T (&items)[ITEMS_PER_THREAD], int valid_items, Default oob_default) {
        if (STRIPED) LoadDirectStriped<THREADS>(__emu_detail::linear_tid(), block_itr, items, valid_items, oob_default);
        else LoadDirectBlocked(__emu_detail::linear_tid(), block_itr, items, valid_items, oob_default);
    }
};

template <class T, int BLOCK_DIM_X, int ITEMS_PER_THREAD, BlockStoreAlgorithm ALGORITHM = BLOCK_STORE_DIRECT,
          int BLOCK_DIM_Y = 1, int BLOCK_DIM_Z = 1, int LEGACY_PTX_ARCH = 0>
class BlockStore {
    static constexpr int THREADS = BLOCK_DIM_X * BLOCK_DIM_Y * BLOCK_DIM_Z;
    static constexpr bool STRIPED = ALGORITHM == BLOCK_STORE_STRIPED;
  public:
    struct TempStorage { unsigned char unused; };
    BlockStore() {}
    explicit BlockStore(TempStorage&) {}
    template <class It> void Store(It block_itr, T (&items)[ITEMS_PER_THREAD]) {
        if (STRIPED) StoreDirectStriped<THREADS>(__emu_detail::linear_tid(), block_itr, items);
        else StoreDirectBlocked(__emu_detail::linear_tid(), block_itr, items);
    }
    template <class It> void Store(It block_itr, T (&items)[ITEMS_PER_THREAD], int valid_items) {
        if (STRIPED) StoreDirectStriped<THREADS>(__emu_detail::linear_tid(), block_itr, items, valid_items);
        else StoreDirectBlocked(__emu_detail::linear_tid(), block_itr, items, valid_items);
    }
};

template <class InputT, int BLOCK_DIM_X, int ITEMS_PER_THREAD, bool WARP_TIME_SLICING = false, int BLOCK_DIM_Y = 1,
          int BLOCK_DIM_Z = 1, int LEGACY_PTX_ARCH = 0>
class BlockExchange {
    static constexpr int THREADS = BLOCK_DIM_X * BLOCK_DIM_Y * BLOCK_DIM_Z, ITEMS = ITEMS_PER_THREAD;
  public:
    struct TempStorage { InputT buffer[THREADS * ITEMS_PER_THREAD]; };
  private:
    TempStorage* temp_;
    static int tid() { return __emu_detail::linear_tid(); }
    static int blocked(int t, int i) { return t * ITEMS + i; }
    static int striped(int t, int i) { return t + i * THREADS; }
    static int warp_striped(int t, int i) { return (t / 32) * 32 * ITEMS + i * 32 + t % 32; }
    // Each thread writes its items where `from` says, then reads where `to` says.
    template <class OutputT, class From, class To>
    void exchange(const InputT (&input)[ITEMS], OutputT (&output)[ITEMS], From from, To to) {
        InputT own[ITEMS];
        for (int i = 0; i < ITEMS; ++i) own[i] = input[i];  // (input and output may be the same array)
        for (int i = 0; i < ITEMS; ++i) temp_->buffer[from(tid(), i)] = own[i];
        __syncthreads();
        for (int i = 0; i < ITEMS; ++i) output[i] = temp_->buffer[to(tid(), i)];
    }
  public:
    BlockExchange()
        : temp_(&__emu_detail::private_storage<TempStorage, BlockExchange>("cub::BlockExchange's TempStorage")) {}
    explicit BlockExchange(TempStorage& temp_storage) : temp_(&temp_storage) {}
    template <class OutputT> void StripedToBlocked(const InputT (&in)[ITEMS], OutputT (&out)[ITEMS]) { exchange(in, out, striped, blocked); }
    template <class OutputT> void BlockedToStriped(const InputT (&in)[ITEMS], OutputT (&out)[ITEMS]) { exchange(in, out, blocked, striped); }
    template <class OutputT> void WarpStripedToBlocked(const InputT (&in)[ITEMS], OutputT (&out)[ITEMS]) { exchange(in, out, warp_striped, blocked); }
    template <class OutputT> void BlockedToWarpStriped(const InputT (&in)[ITEMS], OutputT (&out)[ITEMS]) { exchange(in, out, blocked, warp_striped); }
    void StripedToBlocked(InputT (&items)[ITEMS]) { StripedToBlocked(items, items); }
    void BlockedToStriped(InputT (&items)[ITEMS]) { BlockedToStriped(items, items); }
    void WarpStripedToBlocked(InputT (&items)[ITEMS]) { WarpStripedToBlocked(items, items); }
    void BlockedToWarpStriped(InputT (&items)[ITEMS]) { BlockedToWarpStriped(items, items); }
    // items[i] goes to block-wide position ranks[i]; each thread then reads its blocked (or striped) items.
    template <class OutputT, class OffsetT>
    void ScatterToBlocked(const InputT (&in)[ITEMS], OutputT (&out)[ITEMS], OffsetT (&ranks)[ITEMS]) {
        exchange(in, out, [&](int, int i) { return (int)ranks[i]; }, blocked);
    }
    template <class OutputT, class OffsetT>
    void ScatterToStriped(const InputT (&in)[ITEMS], OutputT (&out)[ITEMS], OffsetT (&ranks)[ITEMS]) {
        exchange(in, out, [&](int, int i) { return (int)ranks[i]; }, striped);
    }
    template <class OffsetT> void ScatterToBlocked(InputT (&items)[ITEMS], OffsetT (&ranks)[ITEMS]) { ScatterToBlocked(items, items, ranks); }
    template <class OffsetT> void ScatterToStriped(InputT (&items)[ITEMS], OffsetT (&ranks)[ITEMS]) { ScatterToStriped(items, items, ranks); }
};

// ---- BlockRadixSort ------------------------------------------------------------------------------
// CUB's result: a stable sort by the key bits [begin_bit, end_bit) of the "twiddled" key (floats: sign flipped,
// negatives complemented, -0.0 digit-equal to +0.0; signed integers: sign bit flipped; descending: complemented).
// The keys (and values) go to TempStorage, thread 0 sorts them there (a stable merge sort of indices), and each
// thread reads back its blocked (or striped) share; __syncthreads() on both sides, as CUB's passes have.
namespace __emu_detail {
template <class K> struct radix_key {
    static constexpr bool FLOAT = std::is_floating_point<K>::value || std::is_same<K, __half>::value ||
                                  std::is_same<K, __nv_bfloat16>::value;
    using Bits = typename std::conditional<sizeof(K) == 1, unsigned char, typename std::conditional<sizeof(K) == 2,
                 unsigned short, typename std::conditional<sizeof(K) == 4, unsigned, unsigned long long>::type>::type>::type;
    static constexpr Bits HIGH = Bits(Bits(1) << (8 * sizeof(K) - 1));
    static Bits twiddle(const K& key) {
        Bits b;
        std::memcpy(&b, &key, sizeof(K));
        if (FLOAT) {
            if (b == HIGH) b = 0;  // -0.0 sorts as +0.0
            return Bits(b ^ ((b & HIGH) ? Bits(~Bits(0)) : HIGH));
        }
        return std::is_signed<K>::value ? Bits(b ^ HIGH) : b;
    }
};
}  // namespace __emu_detail

namespace __emu_detail {
// order[0..n) = the stable sorted order of the indices 0..n-1 under less(i, j) (a bottom-up merge sort through
// scratch), for the block sorts' thread 0.
template <class Less>
void stable_order(int* order, int* scratch, int n, Less less) {
    int* a = order;
    int* b = scratch;
    for (int i = 0; i < n; ++i) a[i] = i;
    for (int width = 1; width < n; width *= 2) {
        for (int lo = 0; lo < n; lo += 2 * width) {
            const int mid = lo + width < n ? lo + width : n, hi = lo + 2 * width < n ? lo + 2 * width : n;
            int i = lo, j = mid, k = lo;
            while (i < mid && j < hi) b[k++] = less(a[j], a[i]) ? a[j++] : a[i++];
            while (i < mid) b[k++] = a[i++];
            while (j < hi) b[k++] = a[j++];
        }
        int* t = a; a = b; b = t;
    }
    if (a != order)
        for (int i = 0; i < n; ++i) order[i] = a[i];
}
}  // namespace __emu_detail

template <class KeyT, int BLOCK_DIM_X, int ITEMS_PER_THREAD, class ValueT = NullType, int RADIX_BITS = 4,
          bool MEMOIZE_OUTER_SCAN = true, BlockScanAlgorithm INNER_SCAN_ALGORITHM = BLOCK_SCAN_WARP_SCANS,
          int SMEM_CONFIG = 1, int BLOCK_DIM_Y = 1, int BLOCK_DIM_Z = 1, int LEGACY_PTX_ARCH = 0>
class BlockRadixSort {
    static constexpr int THREADS = BLOCK_DIM_X * BLOCK_DIM_Y * BLOCK_DIM_Z, ITEMS = ITEMS_PER_THREAD;
    static constexpr int N = THREADS * ITEMS;
    static constexpr bool KEYS_ONLY = std::is_same<ValueT, NullType>::value;
    using Traits = __emu_detail::radix_key<KeyT>;
    using Bits = typename Traits::Bits;
  public:
    struct TempStorage {
        KeyT keys[N];
        ValueT values[KEYS_ONLY ? 1 : N];
        Bits digits[N];
        int order[N], scratch[N];
    };
  private:
    TempStorage& temp_;
    void sort(KeyT (&keys)[ITEMS], ValueT* values, int begin_bit, int end_bit, bool descending, bool to_striped) {
        const int t = __emu_detail::linear_tid();
        const int width = end_bit - begin_bit;
        const Bits mask = width >= (int)(8 * sizeof(Bits)) ? Bits(~Bits(0)) : Bits((Bits(1) << width) - 1);
        for (int i = 0; i < ITEMS; ++i) {
            const Bits twiddled = Traits::twiddle(keys[i]);
            temp_.keys[t * ITEMS + i] = keys[i];
            temp_.digits[t * ITEMS + i] = Bits(Bits((descending ? Bits(~twiddled) : twiddled) >> begin_bit) & mask);
            if (values) temp_.values[t * ITEMS + i] = values[i];
        }
        __syncthreads();
        if (t == 0)
            __emu_detail::stable_order(temp_.order, temp_.scratch, N,
                                       [this](int a, int b) { return temp_.digits[a] < temp_.digits[b]; });
        __syncthreads();
        for (int i = 0; i < ITEMS; ++i) {
            const int src = temp_.order[to_striped ? t + i * THREADS : t * ITEMS + i];
            keys[i] = temp_.keys[src];
            if (values) values[i] = temp_.values[src];
        }
    }
    static constexpr int KEY_BITS = 8 * (int)sizeof(KeyT);
  public:
    BlockRadixSort()
        : temp_(__emu_detail::private_storage<TempStorage, BlockRadixSort>("cub::BlockRadixSort's TempStorage")) {}
    explicit BlockRadixSort(TempStorage& temp_storage) : temp_(temp_storage) {}
    void Sort(KeyT (&keys)[ITEMS], int begin_bit = 0, int end_bit = KEY_BITS) {
        sort(keys, nullptr, begin_bit, end_bit, false, false);
    }
    void SortDescending(KeyT (&keys)[ITEMS], int begin_bit = 0, int end_bit = KEY_BITS) {
        sort(keys, nullptr, begin_bit, end_bit, true, false);
    }
    void SortBlockedToStriped(KeyT (&keys)[ITEMS], int begin_bit = 0, int end_bit = KEY_BITS) {
        sort(keys, nullptr, begin_bit, end_bit, false, true);
    }
    void SortDescendingBlockedToStriped(KeyT (&keys)[ITEMS], int begin_bit = 0, int end_bit = KEY_BITS) {
        sort(keys, nullptr, begin_bit, end_bit, true, true);
    }
    template <class V = ValueT, class = typename std::enable_if<!std::is_same<V, NullType>::value>::type>
    void Sort(KeyT (&keys)[ITEMS], V (&values)[ITEMS], int begin_bit = 0, int end_bit = KEY_BITS) {
        sort(keys, values, begin_bit, end_bit, false, false);
    }
    template <class V = ValueT, class = typename std::enable_if<!std::is_same<V, NullType>::value>::type>
    void SortDescending(KeyT (&keys)[ITEMS], V (&values)[ITEMS], int begin_bit = 0, int end_bit = KEY_BITS) {
        sort(keys, values, begin_bit, end_bit, true, false);
    }
    template <class V = ValueT, class = typename std::enable_if<!std::is_same<V, NullType>::value>::type>
    void SortBlockedToStriped(KeyT (&keys)[ITEMS], V (&values)[ITEMS], int begin_bit = 0, int end_bit = KEY_BITS) {
        sort(keys, values, begin_bit, end_bit, false, true);
    }
    template <class V = ValueT, class = typename std::enable_if<!std::is_same<V, NullType>::value>::type>
    void SortDescendingBlockedToStriped(KeyT (&keys)[ITEMS], V (&values)[ITEMS], int begin_bit = 0,
                                        int end_bit = KEY_BITS) {
        sort(keys, values, begin_bit, end_bit, true, true);
    }
};

// ---- BlockHistogram, BlockDiscontinuity, BlockAdjacentDifference, BlockShuffle, BlockMergeSort -------------
// Each thread's items go through TempStorage in their blocked order (rank t * ITEMS + i) with one __syncthreads()
// between the writes and the reads, as CUB's have; as in CUB, reusing a TempStorage needs a __syncthreads() first.
enum BlockHistogramAlgorithm { BLOCK_HISTO_SORT, BLOCK_HISTO_ATOMIC };

// Counts of the items (bin numbers) in a histogram of BINS counters in shared memory; either algorithm adds with
// atomics here (the counts are the same).
template <class T, int BLOCK_DIM_X, int ITEMS_PER_THREAD, int BINS,
          BlockHistogramAlgorithm ALGORITHM = BLOCK_HISTO_SORT, int BLOCK_DIM_Y = 1, int BLOCK_DIM_Z = 1,
          int LEGACY_PTX_ARCH = 0>
class BlockHistogram {
    static constexpr int THREADS = BLOCK_DIM_X * BLOCK_DIM_Y * BLOCK_DIM_Z;
  public:
    struct TempStorage { unsigned char unused; };
    BlockHistogram() {}
    explicit BlockHistogram(TempStorage&) {}
    template <class CounterT> void InitHistogram(CounterT histogram[BINS]) {
        for (int b = __emu_detail::linear_tid(); b < BINS; b += THREADS) histogram[b] = 0;
    }
    template <class CounterT> void Composite(T (&items)[ITEMS_PER_THREAD], CounterT histogram[BINS]) {
        for (int i = 0; i < ITEMS_PER_THREAD; ++i) atomicAdd(&histogram[items[i]], CounterT(1));
    }
    template <class CounterT> void Histogram(T (&items)[ITEMS_PER_THREAD], CounterT histogram[BINS]) {
        InitHistogram(histogram);
        __syncthreads();
        Composite(items, histogram);
    }
};

namespace __emu_detail {
// CUB's flag and difference operators take (a, b) or (a, b, b's rank in the tile).
template <class Op, class T>
auto apply_op(Op& op, const T& a, const T& b, int b_index) {
    if constexpr (std::is_invocable<Op&, const T&, const T&, int>::value) return op(a, b, b_index);
    else return op(a, b);
}
}  // namespace __emu_detail

template <class T, int BLOCK_DIM_X, int BLOCK_DIM_Y = 1, int BLOCK_DIM_Z = 1, int LEGACY_PTX_ARCH = 0>
class BlockDiscontinuity {
    static constexpr int THREADS = BLOCK_DIM_X * BLOCK_DIM_Y * BLOCK_DIM_Z;
  public:
    struct TempStorage { T first[THREADS], last[THREADS]; };
  private:
    TempStorage& temp_;
    // head_flags[i] = op(predecessor, item) (true for the tile's first item without a tile predecessor);
    // tail_flags[i] = op(item, successor) (true for the tile's last item without a tile successor).
    template <int ITEMS, class FlagT, class Op>
    void flag(FlagT* heads, const T* predecessor, FlagT* tails, const T* successor, T (&input)[ITEMS], Op op) {
        const int t = __emu_detail::linear_tid();
        temp_.first[t] = input[0];
        temp_.last[t] = input[ITEMS - 1];
        __syncthreads();
        const T* before = t > 0 ? &temp_.last[t - 1] : predecessor;
        const T* after = t < THREADS - 1 ? &temp_.first[t + 1] : successor;
        for (int i = 0; i < ITEMS; ++i) {
            const int rank = t * ITEMS + i;
            if (heads) {
                const T* p = i > 0 ? &input[i - 1] : before;
                heads[i] = p ? FlagT(__emu_detail::apply_op(op, *p, input[i], rank)) : FlagT(1);
            }
            if (tails) {
                const T* q = i < ITEMS - 1 ? &input[i + 1] : after;
                tails[i] = q ? FlagT(__emu_detail::apply_op(op, input[i], *q, rank + 1)) : FlagT(1);
            }
        }
    }
  public:
    BlockDiscontinuity()
        : temp_(__emu_detail::private_storage<TempStorage, BlockDiscontinuity>(
              "cub::BlockDiscontinuity's TempStorage")) {}
    explicit BlockDiscontinuity(TempStorage& temp_storage) : temp_(temp_storage) {}
    template <int ITEMS, class FlagT, class Op>
    void FlagHeads(FlagT (&head_flags)[ITEMS], T (&input)[ITEMS], Op flag_op) {
        flag<ITEMS, FlagT>(head_flags, nullptr, nullptr, nullptr, input, flag_op);
    }
    template <int ITEMS, class FlagT, class Op>
    void FlagHeads(FlagT (&head_flags)[ITEMS], T (&input)[ITEMS], Op flag_op, T tile_predecessor_item) {
        flag<ITEMS, FlagT>(head_flags, &tile_predecessor_item, nullptr, nullptr, input, flag_op);
    }
    template <int ITEMS, class FlagT, class Op>
    void FlagTails(FlagT (&tail_flags)[ITEMS], T (&input)[ITEMS], Op flag_op) {
        flag<ITEMS, FlagT>(nullptr, nullptr, tail_flags, nullptr, input, flag_op);
    }
    template <int ITEMS, class FlagT, class Op>
    void FlagTails(FlagT (&tail_flags)[ITEMS], T (&input)[ITEMS], Op flag_op, T tile_successor_item) {
        flag<ITEMS, FlagT>(nullptr, nullptr, tail_flags, &tile_successor_item, input, flag_op);
    }
    template <int ITEMS, class FlagT, class Op>
    void FlagHeadsAndTails(FlagT (&head_flags)[ITEMS], FlagT (&tail_flags)[ITEMS], T (&input)[ITEMS], Op flag_op) {
        flag<ITEMS, FlagT>(head_flags, nullptr, tail_flags, nullptr, input, flag_op);
    }
    template <int ITEMS, class FlagT, class Op>
    void FlagHeadsAndTails(FlagT (&head_flags)[ITEMS], FlagT (&tail_flags)[ITEMS], T tile_successor_item,
                           T (&input)[ITEMS], Op flag_op) {
        flag<ITEMS, FlagT>(head_flags, nullptr, tail_flags, &tile_successor_item, input, flag_op);
    }
    template <int ITEMS, class FlagT, class Op>
    void FlagHeadsAndTails(FlagT (&head_flags)[ITEMS], T tile_predecessor_item, FlagT (&tail_flags)[ITEMS],
                           T (&input)[ITEMS], Op flag_op) {
        flag<ITEMS, FlagT>(head_flags, &tile_predecessor_item, tail_flags, nullptr, input, flag_op);
    }
    template <int ITEMS, class FlagT, class Op>
    void FlagHeadsAndTails(FlagT (&head_flags)[ITEMS], T tile_predecessor_item, FlagT (&tail_flags)[ITEMS],
                           T tile_successor_item, T (&input)[ITEMS], Op flag_op) {
        flag<ITEMS, FlagT>(head_flags, &tile_predecessor_item, tail_flags, &tile_successor_item, input, flag_op);
    }
};

template <class T, int BLOCK_DIM_X, int BLOCK_DIM_Y = 1, int BLOCK_DIM_Z = 1, int LEGACY_PTX_ARCH = 0>
class BlockAdjacentDifference {
    static constexpr int THREADS = BLOCK_DIM_X * BLOCK_DIM_Y * BLOCK_DIM_Z;
  public:
    struct TempStorage { T first[THREADS], last[THREADS]; };
  private:
    TempStorage& temp_;
    // output[i] = op(item, its left (or right) neighbour), the item itself where there is none or where the
    // neighbour (or, to the right, the item) lies at or past valid_items.
    template <int ITEMS, class OutputT, class Op>
    void subtract(T (&input)[ITEMS], OutputT (&output)[ITEMS], Op op, bool left, const T* edge, int valid) {
        const int t = __emu_detail::linear_tid();
        temp_.first[t] = input[0];
        temp_.last[t] = input[ITEMS - 1];
        __syncthreads();
        T own[ITEMS];
        for (int i = 0; i < ITEMS; ++i) own[i] = input[i];  // (input and output may be the same array)
        for (int i = 0; i < ITEMS; ++i) {
            const int rank = t * ITEMS + i;
            const T* other = left ? (i > 0 ? &own[i - 1] : t > 0 ? &temp_.last[t - 1] : edge)
                                  : (i < ITEMS - 1 ? &own[i + 1] : t < THREADS - 1 ? &temp_.first[t + 1] : edge);
            const bool in_tile = left ? rank < valid : rank + 1 < valid || (edge && rank + 1 == THREADS * ITEMS);
            output[i] = other && in_tile ? OutputT(op(own[i], *other)) : OutputT(own[i]);
        }
    }
  public:
    BlockAdjacentDifference()
        : temp_(__emu_detail::private_storage<TempStorage, BlockAdjacentDifference>(
              "cub::BlockAdjacentDifference's TempStorage")) {}
    explicit BlockAdjacentDifference(TempStorage& temp_storage) : temp_(temp_storage) {}
    template <int ITEMS, class OutputT, class Op>
    void SubtractLeft(T (&input)[ITEMS], OutputT (&output)[ITEMS], Op difference_op) {
        subtract(input, output, difference_op, true, nullptr, THREADS * ITEMS);
    }
    template <int ITEMS, class OutputT, class Op>
    void SubtractLeft(T (&input)[ITEMS], OutputT (&output)[ITEMS], Op difference_op, T tile_predecessor_item) {
        subtract(input, output, difference_op, true, &tile_predecessor_item, THREADS * ITEMS);
    }
    template <int ITEMS, class OutputT, class Op>
    void SubtractLeftPartialTile(T (&input)[ITEMS], OutputT (&output)[ITEMS], Op difference_op, int valid_items) {
        subtract(input, output, difference_op, true, nullptr, valid_items);
    }
    template <int ITEMS, class OutputT, class Op>
    void SubtractLeftPartialTile(T (&input)[ITEMS], OutputT (&output)[ITEMS], Op difference_op, int valid_items,
                                 T tile_predecessor_item) {
        subtract(input, output, difference_op, true, &tile_predecessor_item, valid_items);
    }
    template <int ITEMS, class OutputT, class Op>
    void SubtractRight(T (&input)[ITEMS], OutputT (&output)[ITEMS], Op difference_op) {
        subtract(input, output, difference_op, false, nullptr, THREADS * ITEMS);
    }
    template <int ITEMS, class OutputT, class Op>
    void SubtractRight(T (&input)[ITEMS], OutputT (&output)[ITEMS], Op difference_op, T tile_successor_item) {
        subtract(input, output, difference_op, false, &tile_successor_item, THREADS * ITEMS);
    }
    template <int ITEMS, class OutputT, class Op>
    void SubtractRightPartialTile(T (&input)[ITEMS], OutputT (&output)[ITEMS], Op difference_op, int valid_items) {
        subtract(input, output, difference_op, false, nullptr, valid_items);
    }
};

template <class T, int BLOCK_DIM_X, int BLOCK_DIM_Y = 1, int BLOCK_DIM_Z = 1, int LEGACY_PTX_ARCH = 0>
class BlockShuffle {
    static constexpr int THREADS = BLOCK_DIM_X * BLOCK_DIM_Y * BLOCK_DIM_Z;
  public:
    struct TempStorage { T prev[THREADS], next[THREADS]; };
  private:
    TempStorage& temp_;
  public:
    BlockShuffle()
        : temp_(__emu_detail::private_storage<TempStorage, BlockShuffle>("cub::BlockShuffle's TempStorage")) {}
    explicit BlockShuffle(TempStorage& temp_storage) : temp_(temp_storage) {}
    // output = the input of thread t + distance, where that thread exists (else output is left alone)
    void Offset(T input, T& output, int distance = 1) {
        const int t = __emu_detail::linear_tid();
        temp_.prev[t] = input;
        __syncthreads();
        if (t + distance >= 0 && t + distance < THREADS) output = temp_.prev[t + distance];
    }
    // output = the input of thread (t + distance) % THREADS
    void Rotate(T input, T& output, unsigned int distance = 1) {
        const int t = __emu_detail::linear_tid();
        temp_.prev[t] = input;
        __syncthreads();
        output = temp_.prev[(t + distance) % THREADS];
    }
    // prev[i] = the item one before in the blocked order (thread 0's first left alone)
    template <int ITEMS> void Up(T (&input)[ITEMS], T (&prev)[ITEMS]) {
        const int t = __emu_detail::linear_tid();
        temp_.prev[t] = input[ITEMS - 1];
        __syncthreads();
        for (int i = ITEMS - 1; i > 0; --i) prev[i] = input[i - 1];
        if (t > 0) prev[0] = temp_.prev[t - 1];
    }
    template <int ITEMS> void Up(T (&input)[ITEMS], T (&prev)[ITEMS], T& block_suffix) {
        Up(input, prev);
        block_suffix = temp_.prev[THREADS - 1];
    }
    // next[i] = the item one after in the blocked order (the last thread's last left alone)
    template <int ITEMS> void Down(T (&input)[ITEMS], T (&next)[ITEMS]) {
        const int t = __emu_detail::linear_tid();
        temp_.next[t] = input[0];
        __syncthreads();
        for (int i = 0; i < ITEMS - 1; ++i) next[i] = input[i + 1];
        if (t < THREADS - 1) next[ITEMS - 1] = temp_.next[t + 1];
    }
    template <int ITEMS> void Down(T (&input)[ITEMS], T (&next)[ITEMS], T& block_prefix) {
        Down(input, next);
        block_prefix = temp_.next[0];
    }
};

// A stable merge sort by compare_op (Sort may be unstable in CUB; stable is one of its answers); keys at or past
// valid_items become oob_default first.  The tile's first thread sorts its indices in TempStorage, as
// BlockRadixSort; a block syncs with __syncthreads(), a logical warp with __syncwarp(its lanes).
namespace __emu_detail {
template <class Derived, class KeyT, class ValueT, int THREADS, int ITEMS>
class MergeSortTile {
    static constexpr int N = THREADS * ITEMS;
    static constexpr bool KEYS_ONLY = std::is_same<ValueT, NullType>::value;
  public:
    struct TempStorage {
        KeyT keys[N];
        ValueT values[KEYS_ONLY ? 1 : N];
        int order[N], scratch[N];
    };
  protected:
    TempStorage& temp_;
    explicit MergeSortTile(TempStorage& temp_storage) : temp_(temp_storage) {}
  private:
    template <class Compare>
    void sort(KeyT (&keys)[ITEMS], ValueT* values, Compare less, int valid, const KeyT* oob_default) {
        const Derived& self = static_cast<const Derived&>(*this);
        const int t = self.rank();
        for (int i = 0; i < ITEMS; ++i) {
            temp_.keys[t * ITEMS + i] = t * ITEMS + i < valid ? keys[i] : *oob_default;
            if (values) temp_.values[t * ITEMS + i] = values[i];
        }
        self.sync();
        if (t == 0)
            stable_order(temp_.order, temp_.scratch, N,
                         [&](int a, int b) { return less(temp_.keys[a], temp_.keys[b]); });
        self.sync();
        for (int i = 0; i < ITEMS; ++i) {
            const int src = temp_.order[t * ITEMS + i];
            keys[i] = temp_.keys[src];
            if (values) values[i] = temp_.values[src];
        }
    }
  public:
    template <class Compare> void Sort(KeyT (&keys)[ITEMS], Compare compare_op) {
        sort(keys, nullptr, compare_op, N, nullptr);
    }
    template <class Compare> void Sort(KeyT (&keys)[ITEMS], Compare compare_op, int valid_items, KeyT oob_default) {
        sort(keys, nullptr, compare_op, valid_items, &oob_default);
    }
    template <class Compare, class V = ValueT, class = typename std::enable_if<!std::is_same<V, NullType>::value>::type>
    void Sort(KeyT (&keys)[ITEMS], V (&items)[ITEMS], Compare compare_op) {
        sort(keys, items, compare_op, N, nullptr);
    }
    template <class Compare, class V = ValueT, class = typename std::enable_if<!std::is_same<V, NullType>::value>::type>
    void Sort(KeyT (&keys)[ITEMS], V (&items)[ITEMS], Compare compare_op, int valid_items, KeyT oob_default) {
        sort(keys, items, compare_op, valid_items, &oob_default);
    }
    template <class... Args> void StableSort(Args&&... args) { Sort(static_cast<Args&&>(args)...); }
};

// A logical warp of L lanes: this thread's lane in it, and the mask of its lanes for __syncwarp.
template <int L>
struct LogicalWarp {
    static_assert(L >= 1 && L <= 32 && (L & (L - 1)) == 0, "cub's warp collectives on the emulator: "
                  "LOGICAL_WARP_THREADS is a power of two up to 32");
    static int lane() { return linear_tid() % L; }
    static unsigned mask() {
        return L == 32 ? 0xffffffffu : ((1u << L) - 1u) << (linear_tid() % 32 / L * L);
    }
};
}  // namespace __emu_detail

template <class KeyT, int BLOCK_DIM_X, int ITEMS_PER_THREAD, class ValueT = NullType, int BLOCK_DIM_Y = 1,
          int BLOCK_DIM_Z = 1>
class BlockMergeSort : public __emu_detail::MergeSortTile<BlockMergeSort<KeyT, BLOCK_DIM_X, ITEMS_PER_THREAD, ValueT,
                                                                         BLOCK_DIM_Y, BLOCK_DIM_Z>,
                                                          KeyT, ValueT, BLOCK_DIM_X * BLOCK_DIM_Y * BLOCK_DIM_Z,
                                                          ITEMS_PER_THREAD> {
    using Tile = typename BlockMergeSort::MergeSortTile;
  public:
    using TempStorage = typename Tile::TempStorage;
    BlockMergeSort()
        : Tile(__emu_detail::private_storage<TempStorage, BlockMergeSort>("cub::BlockMergeSort's TempStorage")) {}
    explicit BlockMergeSort(TempStorage& temp_storage) : Tile(temp_storage) {}
    int rank() const { return __emu_detail::linear_tid(); }
    void sync() const { __syncthreads(); }
};

template <class KeyT, int ITEMS_PER_THREAD, int LOGICAL_WARP_THREADS = 32, class ValueT = NullType,
          int LEGACY_PTX_ARCH = 0>
class WarpMergeSort : public __emu_detail::MergeSortTile<WarpMergeSort<KeyT, ITEMS_PER_THREAD, LOGICAL_WARP_THREADS,
                                                                       ValueT, LEGACY_PTX_ARCH>,
                                                         KeyT, ValueT, LOGICAL_WARP_THREADS, ITEMS_PER_THREAD> {
    using Tile = typename WarpMergeSort::MergeSortTile;
    using Warp = __emu_detail::LogicalWarp<LOGICAL_WARP_THREADS>;
  public:
    using TempStorage = typename Tile::TempStorage;  // one per logical warp, as CUB's
    explicit WarpMergeSort(TempStorage& temp_storage) : Tile(temp_storage) {}
    int rank() const { return Warp::lane(); }
    void sync() const { __syncwarp(Warp::mask()); }
    unsigned get_member_mask() const { return Warp::mask(); }
};

// ---- WarpLoad, WarpStore, WarpExchange: a logical warp's tile ----------------------------------------------
// *_STRIPED leaves (or takes) the items striped across the lanes; every other algorithm, blocked.
enum WarpLoadAlgorithm { WARP_LOAD_DIRECT, WARP_LOAD_STRIPED, WARP_LOAD_VECTORIZE, WARP_LOAD_TRANSPOSE };
enum WarpStoreAlgorithm { WARP_STORE_DIRECT, WARP_STORE_STRIPED, WARP_STORE_VECTORIZE, WARP_STORE_TRANSPOSE };

template <class T, int ITEMS_PER_THREAD, WarpLoadAlgorithm ALGORITHM = WARP_LOAD_DIRECT,
          int LOGICAL_WARP_THREADS = 32, int LEGACY_PTX_ARCH = 0>
class WarpLoad {
    static constexpr bool STRIPED = ALGORITHM == WARP_LOAD_STRIPED;
    static int lane() { return __emu_detail::LogicalWarp<LOGICAL_WARP_THREADS>::lane(); }
  public:
    struct TempStorage { unsigned char unused; };
    WarpLoad() {}
    explicit WarpLoad(TempStorage&) {}
    template <class It> void Load(It warp_itr, T (&items)[ITEMS_PER_THREAD]) {
        if (STRIPED) LoadDirectStriped<LOGICAL_WARP_THREADS>(lane(), warp_itr, items);
        else LoadDirectBlocked(lane(), warp_itr, items);
    }
    template <class It> void Load(It warp_itr, T (&items)[ITEMS_PER_THREAD], int valid_items) {
        if (STRIPED) LoadDirectStriped<LOGICAL_WARP_THREADS>(lane(), warp_itr, items, valid_items);
        else LoadDirectBlocked(lane(), warp_itr, items, valid_items);
    }
    template <class It, class Default>
    void Load(It warp_itr, T (&items)[ITEMS_PER_THREAD], int valid_items, Default oob_default) {
        if (STRIPED) LoadDirectStriped<LOGICAL_WARP_THREADS>(lane(), warp_itr, items, valid_items, oob_default);
        else LoadDirectBlocked(lane(), warp_itr, items, valid_items, oob_default);
    }
};

template <class T, int ITEMS_PER_THREAD, WarpStoreAlgorithm ALGORITHM = WARP_STORE_DIRECT,
          int LOGICAL_WARP_THREADS = 32, int LEGACY_PTX_ARCH = 0>
class WarpStore {
    static constexpr bool STRIPED = ALGORITHM == WARP_STORE_STRIPED;
    static int lane() { return __emu_detail::LogicalWarp<LOGICAL_WARP_THREADS>::lane(); }
  public:
    struct TempStorage { unsigned char unused; };
    WarpStore() {}
    explicit WarpStore(TempStorage&) {}
    template <class It> void Store(It warp_itr, T (&items)[ITEMS_PER_THREAD]) {
        if (STRIPED) StoreDirectStriped<LOGICAL_WARP_THREADS>(lane(), warp_itr, items);
        else StoreDirectBlocked(lane(), warp_itr, items);
    }
    template <class It> void Store(It warp_itr, T (&items)[ITEMS_PER_THREAD], int valid_items) {
        if (STRIPED) StoreDirectStriped<LOGICAL_WARP_THREADS>(lane(), warp_itr, items, valid_items);
        else StoreDirectBlocked(lane(), warp_itr, items, valid_items);
    }
};

template <class InputT, int ITEMS_PER_THREAD, int LOGICAL_WARP_THREADS = 32, int LEGACY_PTX_ARCH = 0>
class WarpExchange {
    static constexpr int L = LOGICAL_WARP_THREADS, ITEMS = ITEMS_PER_THREAD;
    using Warp = __emu_detail::LogicalWarp<L>;
  public:
    struct TempStorage { InputT buffer[L * ITEMS]; };  // one per logical warp, as CUB's
  private:
    TempStorage& temp_;
    static int blocked(int lane, int i) { return lane * ITEMS + i; }
    static int striped(int lane, int i) { return lane + i * L; }
    template <class OutputT, class From, class To>
    void exchange(const InputT (&input)[ITEMS], OutputT (&output)[ITEMS], From from, To to) {
        InputT own[ITEMS];
        for (int i = 0; i < ITEMS; ++i) own[i] = input[i];  // (input and output may be the same array)
        for (int i = 0; i < ITEMS; ++i) temp_.buffer[from(Warp::lane(), i)] = own[i];
        __syncwarp(Warp::mask());
        for (int i = 0; i < ITEMS; ++i) output[i] = temp_.buffer[to(Warp::lane(), i)];
    }
  public:
    explicit WarpExchange(TempStorage& temp_storage) : temp_(temp_storage) {}
    template <class OutputT> void StripedToBlocked(const InputT (&in)[ITEMS], OutputT (&out)[ITEMS]) {
        exchange(in, out, striped, blocked);
    }
    template <class OutputT> void BlockedToStriped(const InputT (&in)[ITEMS], OutputT (&out)[ITEMS]) {
        exchange(in, out, blocked, striped);
    }
    template <class OffsetT> void ScatterToStriped(InputT (&items)[ITEMS], OffsetT (&ranks)[ITEMS]) {
        exchange(items, items, [&](int, int i) { return (int)ranks[i]; }, striped);
    }
    template <class OutputT, class OffsetT>
    void ScatterToStriped(const InputT (&in)[ITEMS], OutputT (&out)[ITEMS], OffsetT (&ranks)[ITEMS]) {
        exchange(in, out, [&](int, int i) { return (int)ranks[i]; }, striped);
    }
};

// ---- BlockRunLengthDecode ----------------------------------------------------------------------------------
// The runs (a blocked arrangement of values and lengths, or of values and offsets) go to TempStorage with their
// offsets (thread 0 sums the lengths, exclusively); each decoded position then finds its run by binary search (the
// last run starting at or before it, so empty runs are skipped).  Positions past the total give the last run's value.
template <class ItemT, int BLOCK_DIM_X, int RUNS_PER_THREAD, int DECODED_ITEMS_PER_THREAD,
          class DecodedOffsetT = unsigned int, int BLOCK_DIM_Y = 1, int BLOCK_DIM_Z = 1>
class BlockRunLengthDecode {
    static constexpr int THREADS = BLOCK_DIM_X * BLOCK_DIM_Y * BLOCK_DIM_Z, RUNS = THREADS * RUNS_PER_THREAD;
    static constexpr int DECODED = DECODED_ITEMS_PER_THREAD;
  public:
    struct TempStorage {
        ItemT values[RUNS];
        DecodedOffsetT offsets[RUNS];
        DecodedOffsetT total;
    };
  private:
    TempStorage& temp_;
    template <class OffsetT>
    void keep(ItemT (&run_values)[RUNS_PER_THREAD], OffsetT (&run_numbers)[RUNS_PER_THREAD], bool lengths) {
        const int t = __emu_detail::linear_tid();
        for (int i = 0; i < RUNS_PER_THREAD; ++i) {
            temp_.values[t * RUNS_PER_THREAD + i] = run_values[i];
            temp_.offsets[t * RUNS_PER_THREAD + i] = (DecodedOffsetT)run_numbers[i];
        }
        __syncthreads();
        if (t == 0 && lengths) {
            DecodedOffsetT sum = 0;
            for (int r = 0; r < RUNS; ++r) {
                const DecodedOffsetT length = temp_.offsets[r];
                temp_.offsets[r] = sum;
                sum += length;
            }
            temp_.total = sum;
        }
        __syncthreads();
    }
    int run_of(DecodedOffsetT position) const {
        int lo = 0, hi = RUNS;  // the first run starting after position, less one
        while (lo < hi) {
            const int mid = (lo + hi) / 2;
            if (temp_.offsets[mid] <= position) lo = mid + 1;
            else hi = mid;
        }
        return lo > 0 ? lo - 1 : 0;
    }
  public:
    template <class RunLengthT, class TotalDecodedSizeT>
    BlockRunLengthDecode(TempStorage& temp_storage, ItemT (&run_values)[RUNS_PER_THREAD],
                         RunLengthT (&run_lengths)[RUNS_PER_THREAD], TotalDecodedSizeT& total_decoded_size)
        : temp_(temp_storage) {
        keep(run_values, run_lengths, true);
        total_decoded_size = (TotalDecodedSizeT)temp_.total;
    }
    template <class UserRunOffsetT>
    BlockRunLengthDecode(TempStorage& temp_storage, ItemT (&run_values)[RUNS_PER_THREAD],
                         UserRunOffsetT (&run_offsets)[RUNS_PER_THREAD])
        : temp_(temp_storage) {
        keep(run_values, run_offsets, false);
    }
    template <class RelativeOffsetT>
    void RunLengthDecode(ItemT (&decoded_items)[DECODED], RelativeOffsetT (&item_offsets)[DECODED],
                         DecodedOffsetT from_decoded_offset = 0) {
        const int t = __emu_detail::linear_tid();
        for (int i = 0; i < DECODED; ++i) {
            const DecodedOffsetT position = from_decoded_offset + DecodedOffsetT(t * DECODED + i);
            const int run = run_of(position);
            decoded_items[i] = temp_.values[run];
            item_offsets[i] = RelativeOffsetT(position - temp_.offsets[run]);
        }
    }
    void RunLengthDecode(ItemT (&decoded_items)[DECODED], DecodedOffsetT from_decoded_offset = 0) {
        DecodedOffsetT unused[DECODED];
        RunLengthDecode(decoded_items, unused, from_decoded_offset);
    }
};

// ---- the rest of CUB: named, not emulated ---------------------------------------------------------
// (the Device* algorithms are host code, whose headers the build names as missing)
#define __EMU_CUB_MISSING(NAME, WHY)                                                                     \
    template <class T, class... P> struct NAME {                                                         \
        static_assert(__emu_detail::dependent_false<T>::value, "cub::" #NAME " is not provided by minilora's " \
                      "CUDA emulator" WHY);                                                              \
    };
__EMU_CUB_MISSING(TexObjInputIterator, ": textures are not emulated; read the array through a plain pointer or "
                                       "cub::CacheModifiedInputIterator")
__EMU_CUB_MISSING(TexRefInputIterator, ": textures are not emulated; read the array through a plain pointer or "
                                       "cub::CacheModifiedInputIterator")
#undef __EMU_CUB_MISSING
}  // namespace cub
