// common.cuh -- the pieces every LoRA kernel shares.
//
//   * lora_keep():        the LoRA dropout mask, regenerated from (seed, element index) by a hash,
//                         bit for bit the same as minilora.ops.lora.lora_dropout_mask in NumPy;
//   * Operand:            a read-only view of a row-major matrix as a GEMM operand;
//   * load_tile():        copy one BK x BD tile of an operand into shared memory (zero outside the
//                         matrix, float4 loads when the memory allows them, dropout applied on the way);
//   * accumulate_tile():  the tiled GEMM main loop for one output tile, with register blocking
//                         (each thread owns TM x TN outputs).  It is v2's loop (written out plainly in
//                         lora_forward.cu and lora_backward.cu: one output per thread, scalar loads)
//                         grown up: v3 runs it with 8 x 8 register blocks and float4 loads, v4 pipelined,
//                         v5 with warp tiles.  Each kernel's configuration is a struct in lora_tiles.cuh.
//   * cp_async() & co.:   Ampere's asynchronous global -> shared copies (inline PTX; the emulator's
//                         stand-in is kernels/emu/include/minilora_async_copy.h), and the v7
//                         multi-stage pipeline built on them (accumulate_tile_async).
//
// Index conventions.  A GEMM computes C[d1, d2] = sum_k op1(d1, k) * op2(d2, k).  An Operand maps
// (d, k) -- d an output index, k the reduction index -- onto its storage:
//     KCONTIG = true :  element (d, k) is p[d * ld + k]   (k runs along a row: X, W0 in the forward)
//     KCONTIG = false:  element (d, k) is p[k * ld + d]   (d runs along a row: W0 in dX = dY W0)
// Shared-memory tiles are always stored k-major, S[k][d], so the inner loop of accumulate_tile reads
// TM consecutive floats of one row for the A side and TN for the B side.
//
// Only float32; offsets are 64-bit so matrices may exceed 2^31 elements.
#pragma once

#ifdef __CUDA_EMU__
#include <minilora_async_copy.h>  // the emulator's cp.async (see "asynchronous copies" below)
#endif

namespace minilora {

constexpr int SMEM_PAD = 4;  // extra floats per shared-memory row: fewer bank conflicts, rows stay 16-byte aligned

// ---- LoRA dropout ------------------------------------------------------------------------------
// keep(seed, i) for the flat index i = m*K + k of X [M, K]; all arithmetic is uint32 and wraps.
// threshold = uint32(min(p * 2^32, 2^32 - 1)); threshold 0 keeps every element (p = 0).
__device__ __forceinline__ bool lora_keep(unsigned seed, unsigned long long index, unsigned threshold) {
    unsigned h = ((unsigned)index * 0x9E3779B1u) ^ seed;
    h ^= h >> 16;
    h *= 0x85EBCA6Bu;
    h ^= h >> 13;
    h *= 0xC2B2AE35u;
    h ^= h >> 16;
    return h >= threshold;
}

// ---- operands ------------------------------------------------------------------------------------
struct Operand {
    const float* p;      // row-major storage
    int ld;              // elements per stored row
    int d_size;          // extent of the output index d (valid d: 0 <= d < d_size)
    float scale;         // every kept element is multiplied by this (1, s, or 1/(1-p) under dropout)
    unsigned seed;       // dropout on the flat storage offset: keep iff lora_keep(seed, offset, threshold)
    unsigned threshold;  // 0: no dropout
};

__device__ __forceinline__ Operand make_operand(const float* p, int ld, int d_size, float scale = 1.0f,
                                                unsigned seed = 0u, unsigned threshold = 0u) {
    Operand op;
    op.p = p;
    op.ld = ld;
    op.d_size = d_size;
    op.scale = scale;
    op.seed = seed;
    op.threshold = threshold;
    return op;
}

// The value a GEMM sees for the stored element at `offset`: dropout mask, then scale.
__device__ __forceinline__ float operand_value(const Operand& op, float v, unsigned long long offset) {
    if (op.threshold != 0u && !lora_keep(op.seed, offset, op.threshold)) return 0.0f;
    return v * op.scale;
}

// ---- tile loader ---------------------------------------------------------------------------------
// S[kk][dd] = op(d0 + dd, k0 + kk) for kk < BK, dd < BD; zero where d >= d_size or k >= k_end.
// All THREADS threads of the block cooperate; consecutive threads read consecutive addresses of
// the contiguous storage direction, so global loads coalesce.  With VEC, each thread moves 4 floats
// with one 16-byte load wherever the 4 are in bounds and 16-byte aligned (ld % 4 == 0 and an aligned
// base pointer; tile origins are multiples of 4), else it falls back to 4 guarded scalar loads --
// which is how ragged edges and odd leading dimensions stay correct.
//
// The load comes in two halves: fetch_tile reads this thread's share of the tile from global memory
// into registers (TileRegs), stash_tile writes those registers into shared memory.  load_tile does
// both at once; the pipelined main loop (v4) fetches the NEXT tile before multiplying the current one,
// so the slow global reads are in flight while the arithmetic runs.
template <int BK, int BD, bool VEC, int THREADS>
struct TileRegs {
    static constexpr int RUN = VEC ? 4 : 1;                              // floats per load
    static constexpr int SLOTS = BK * BD / RUN;                          // loads per tile
    static constexpr int PER_THREAD = (SLOTS + THREADS - 1) / THREADS;   // loads per thread
    float v[PER_THREAD][4];                                              // RUN of each 4 are used
};

// Where slot e of a tile sits: (dd, kk) of its first float.
template <int BK, int BD, bool KCONTIG, int RUN>
__device__ __forceinline__ void slot_position(int e, int& dd, int& kk) {
    constexpr int CONTIG = KCONTIG ? BK : BD;  // tile extent along the contiguous storage direction
    static_assert(CONTIG % RUN == 0, "vector loads need the contiguous tile side to be a multiple of 4");
    const int c = (e % (CONTIG / RUN)) * RUN;  // position along the contiguous direction
    const int o = e / (CONTIG / RUN);          // position along the other direction
    dd = KCONTIG ? o : c;
    kk = KCONTIG ? c : o;
}

template <int BK, int BD, bool KCONTIG, bool VEC, int THREADS>
__device__ __forceinline__ void fetch_tile(TileRegs<BK, BD, VEC, THREADS>& regs, const Operand& op, int d0, int k0,
                                           int k_end, int tid) {
    using Regs = TileRegs<BK, BD, VEC, THREADS>;
    constexpr int RUN = Regs::RUN;
    const bool aligned = VEC && (op.ld % 4 == 0) && ((reinterpret_cast<unsigned long long>(op.p) & 15ull) == 0);
#pragma unroll
    for (int s = 0; s < Regs::PER_THREAD; ++s) {
        const int e = tid + s * THREADS;
        if (Regs::SLOTS % THREADS != 0 && e >= Regs::SLOTS) break;
        int dd, kk;
        slot_position<BK, BD, KCONTIG, RUN>(e, dd, kk);
        const int d = d0 + dd, k = k0 + kk;
        const unsigned long long off = KCONTIG ? (unsigned long long)d * op.ld + k
                                               : (unsigned long long)k * op.ld + d;
        float* v = regs.v[s];
        const bool full = KCONTIG ? (d < op.d_size && k + RUN <= k_end) : (k < k_end && d + RUN <= op.d_size);
        if (VEC && full && aligned) {
            const float4 q = *reinterpret_cast<const float4*>(op.p + off);
            v[0] = q.x; v[1] = q.y; v[2] = q.z; v[3] = q.w;
        } else {
#pragma unroll
            for (int q = 0; q < RUN; ++q) {
                const bool in = KCONTIG ? (d < op.d_size && k + q < k_end) : (k < k_end && d + q < op.d_size);
                v[q] = in ? op.p[off + q] : 0.0f;
            }
        }
#pragma unroll
        for (int q = 0; q < RUN; ++q) {
            const bool in = KCONTIG ? (d < op.d_size && k + q < k_end) : (k < k_end && d + q < op.d_size);
            v[q] = in ? operand_value(op, v[q], off + q) : 0.0f;
        }
    }
}

template <int BK, int BD, int SW, bool KCONTIG, bool VEC, int THREADS>
__device__ __forceinline__ void stash_tile(float (*S)[SW], const TileRegs<BK, BD, VEC, THREADS>& regs, int tid) {
    using Regs = TileRegs<BK, BD, VEC, THREADS>;
#pragma unroll
    for (int s = 0; s < Regs::PER_THREAD; ++s) {
        const int e = tid + s * THREADS;
        if (Regs::SLOTS % THREADS != 0 && e >= Regs::SLOTS) break;
        int dd, kk;
        slot_position<BK, BD, KCONTIG, Regs::RUN>(e, dd, kk);
#pragma unroll
        for (int q = 0; q < Regs::RUN; ++q) {
            if (KCONTIG) S[kk + q][dd] = regs.v[s][q];
            else S[kk][dd + q] = regs.v[s][q];
        }
    }
}

template <int BK, int BD, int SW, bool KCONTIG, bool VEC, int THREADS>
__device__ __forceinline__ void load_tile(float (*S)[SW], const Operand& op, int d0, int k0, int k_end, int tid) {
    TileRegs<BK, BD, VEC, THREADS> regs;
    fetch_tile<BK, BD, KCONTIG, VEC, THREADS>(regs, op, d0, k0, k_end, tid);
    stash_tile<BK, BD, SW, KCONTIG, VEC, THREADS>(S, regs, tid);
}

// ---- asynchronous copies: cp.async (sm_80 and later) ----------------------------------------------
// cp.async copies global memory straight into shared memory without passing through registers, and
// the issuing thread does not wait for it: it commits the copies issued so far as a *group*
// (cp_async_commit) and later waits until at most N groups are still in flight (cp_async_wait<N>).
// A tile's loads can thus be issued several k-steps ahead (v7's multi-stage pipeline) at no register
// cost -- v4's register-staged prefetch holds a whole tile in registers instead.  On the emulator the
// same calls go to kernels/emu/include/minilora_async_copy.h, which performs a group's copies only when
// a wait covers it, so reading a stage too early shows up as wrong numbers in the tests.  (That header is
// included at the top of this file, outside namespace minilora.)

// The 32-bit shared-state-space address PTX's cp.async takes (a generic pointer converted).
__device__ __forceinline__ unsigned shared_address(const void* p) {
#if defined(__CUDA_EMU__)
    return 0u;  // not used on the emulator
#else
    unsigned a;
    asm("{ .reg .u64 t; cvta.to.shared.u64 t, %1; cvt.u32.u64 %0, t; }" : "=r"(a) : "l"(p));
    return a;
#endif
}

// dst[0 .. BYTES) (shared) <- the first src_bytes bytes at src (global), the rest zero-filled (cp.async's
// src-size operand: 0 turns the copy into a zero fill -- how the tile edges get their zeros).
// BYTES = 16 needs both addresses 16-byte aligned; it bypasses L1 (.cg), as streamed GEMM tiles should.
template <int BYTES>
__device__ __forceinline__ void cp_async(float* dst, const float* src, int src_bytes) {
    static_assert(BYTES == 4 || BYTES == 16, "cp.async copies 4, 8 or 16 bytes; minilora uses 4 and 16");
#if defined(__CUDA_EMU__)
    minilora_emu::async_copy(dst, src, BYTES, src_bytes);
#elif __CUDA_ARCH__ >= 800
    if (BYTES == 16)
        asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(shared_address(dst)), "l"(src),
                     "r"(src_bytes) : "memory");
    else
        asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(shared_address(dst)), "l"(src),
                     "r"(src_bytes) : "memory");
#else  // before Ampere there is no cp.async: an ordinary copy, complete at once
#pragma unroll
    for (int i = 0; i < BYTES / 4; ++i) dst[i] = 4 * i < src_bytes ? src[i] : 0.0f;
#endif
}

// Close the copies issued since the last commit into one group.
__device__ __forceinline__ void cp_async_commit() {
#if defined(__CUDA_EMU__)
    minilora_emu::async_commit();
#elif __CUDA_ARCH__ >= 800
    asm volatile("cp.async.commit_group;\n" ::: "memory");
#endif
}

// Wait until at most PENDING of this thread's committed groups are still in flight.  Only this thread's
// copies: a __syncthreads() after it makes every thread's copies visible to the block.
template <int PENDING>
__device__ __forceinline__ void cp_async_wait() {
#if defined(__CUDA_EMU__)
    minilora_emu::async_wait(PENDING);
#elif __CUDA_ARCH__ >= 800
    asm volatile("cp.async.wait_group %0;\n" ::"n"(PENDING) : "memory");
#endif
}

// load_tile's job -- S[kk][dd] = op(d0 + dd, k0 + kk), zero outside the matrix -- with cp.async.  The
// copy moves bytes unchanged, so the operand must need no scale and no dropout (the callers pass only
// plain X, W0 and dY).  A d-contiguous operand (W0 in dX = dY W0) lands in the k-major tile as it is
// stored: 16 bytes per copy where aligned and in bounds, else 4 zero-filling copies.  A k-contiguous
// one (X, W0 in the forward) is transposed on the way, one 4-byte copy per element; the slot order
// (slot_position) keeps a warp's global reads in whole 32-byte sectors and its shared writes on 32
// different banks.
template <int BK, int BD, int SW, bool KCONTIG, int THREADS>
__device__ __forceinline__ void load_tile_async(float (*S)[SW], const Operand& op, int d0, int k0, int k_end,
                                                int tid) {
    constexpr int RUN = KCONTIG ? 1 : 4;
    constexpr int SLOTS = BK * BD / RUN, PER_THREAD = (SLOTS + THREADS - 1) / THREADS;
    const bool aligned = (op.ld % 4 == 0) && ((reinterpret_cast<unsigned long long>(op.p) & 15ull) == 0);
#pragma unroll
    for (int s = 0; s < PER_THREAD; ++s) {
        const int e = tid + s * THREADS;
        if (SLOTS % THREADS != 0 && e >= SLOTS) break;
        int dd, kk;
        slot_position<BK, BD, KCONTIG, RUN>(e, dd, kk);
        const int d = d0 + dd, k = k0 + kk;
        const float* src = op.p + (KCONTIG ? (unsigned long long)d * op.ld + k : (unsigned long long)k * op.ld + d);
        if (KCONTIG) {
            const bool in = d < op.d_size && k < k_end;
            cp_async<4>(&S[kk][dd], in ? src : op.p, in ? 4 : 0);
        } else if (aligned && k < k_end && d + 4 <= op.d_size) {
            cp_async<16>(&S[kk][dd], src, 16);
        } else {
#pragma unroll
            for (int q = 0; q < 4; ++q) {
                const bool in = k < k_end && d + q < op.d_size;
                cp_async<4>(&S[kk][dd + q], in ? src + q : op.p, in ? 4 : 0);
            }
        }
    }
}

// ---- register blocking ---------------------------------------------------------------------------
// acc[i][j] += a[i] * b[j]: TM + TN values loaded, TM * TN multiply-adds -- the reason for register tiles.
template <int TM, int TN>
__device__ __forceinline__ void outer_product_add(float (&acc)[TM][TN], const float (&a)[TM], const float (&b)[TN]) {
#pragma unroll
    for (int i = 0; i < TM; ++i)
#pragma unroll
        for (int j = 0; j < TN; ++j) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
}

// ---- which outputs a thread owns -----------------------------------------------------------------
// Thread tid owns TM x TN outputs of the BM x BN block tile: rows row(0..TM-1), columns col(0..TN-1),
// in groups of 4 consecutive rows (columns) placed ROW_GAP (COL_GAP) apart.
//   plain (v3, v4): the threads form a (BM/TM) x (BN/TN) grid; each owns one solid TM x TN block.
//   warp-tiled (v5): the 32 lanes of a warp form a 4 x 8 grid; each lane owns (TM/4) x (TN/4) blocks of
//       4 x 4, placed 16 rows and 32 columns apart, so a warp covers (4 TM) x (8 TN) outputs (32 x 64
//       for 8 x 8 per thread) and the warps tile the block.
// Why it matters: every k-step, each thread reads its TM values of the A tile and TN of the B tile from
// shared memory.  In the plain layout a warp is 2 x 16 threads, so it reads 16 different float4 of B
// spread over 512 bytes, 2 threads per bank group: 4 transactions per load.  Warp-tiled, a warp reads 4
// float4 of A (64 bytes) and 8 of B (128 bytes): one transaction each.  Shared-memory bandwidth, not
// arithmetic, is what limits a register-blocked fp32 GEMM.
template <int BM_, int BN_, int TM_, int TN_, bool WARP_TILED>
struct ThreadTile {
    static constexpr int BM = BM_, BN = BN_, TM = TM_, TN = TN_;
    static constexpr int THREADS = (BM / TM) * (BN / TN);
    static constexpr int ROW_GAP = WARP_TILED ? 16 : 4, COL_GAP = WARP_TILED ? 32 : 4;
    static constexpr int WARP_ROWS = 4 * TM, WARP_COLS = 8 * TN;  // the outputs of one warp (warp-tiled)
    static_assert(!WARP_TILED || (TM % 4 == 0 && TN % 4 == 0 && BM % WARP_ROWS == 0 && BN % WARP_COLS == 0),
                  "warp tiles need TM, TN multiples of 4 and a block tile made of whole warp tiles");
    int row0, col0;  // the first row and column this thread owns

    __device__ __forceinline__ explicit ThreadTile(int tid) {
        if (WARP_TILED) {
            constexpr int WARPS_ACROSS = WARP_TILED ? BN / WARP_COLS : 1;  // warp tiles side by side
            const int warp = tid / 32, lane = tid % 32;
            row0 = (warp / WARPS_ACROSS) * WARP_ROWS + (lane / 8) * 4;
            col0 = (warp % WARPS_ACROSS) * WARP_COLS + (lane % 8) * 4;
        } else {
            row0 = (tid / (BN / TN)) * TM;
            col0 = (tid % (BN / TN)) * TN;
        }
    }
    __device__ __forceinline__ int row(int i) const { return row0 + (i / 4) * ROW_GAP + i % 4; }
    __device__ __forceinline__ int col(int j) const { return col0 + (j / 4) * COL_GAP + j % 4; }
};

// f[i] = row[first + (i / 4) * GAP + i % 4]: one 16-byte shared-memory load per group of 4.
template <int N, int GAP>
__device__ __forceinline__ void read_fragment(float (&f)[N], const float* row, int first) {
    if (N % 4 == 0) {
#pragma unroll
        for (int g = 0; g < N / 4; ++g) {
            const float4 q = *reinterpret_cast<const float4*>(row + first + g * GAP);
            f[4 * g] = q.x; f[4 * g + 1] = q.y; f[4 * g + 2] = q.z; f[4 * g + 3] = q.w;
        }
    } else {
#pragma unroll
        for (int i = 0; i < N; ++i) f[i] = row[first + (i / 4) * GAP + i % 4];
    }
}

// acc[i][j] += sum_kk As[kk][tile.row(i)] * Bs[kk][tile.col(j)], over the BK k-rows of two k-major tiles.
template <int BK, class Tile, int SWA, int SWB>
__device__ __forceinline__ void multiply_tiles(float (&acc)[Tile::TM][Tile::TN], const float (*As)[SWA],
                                               const float (*Bs)[SWB], const Tile& tile) {
#pragma unroll
    for (int kk = 0; kk < BK; ++kk) {
        float af[Tile::TM], bf[Tile::TN];
        read_fragment<Tile::TM, Tile::ROW_GAP>(af, As[kk], tile.row0);
        read_fragment<Tile::TN, Tile::COL_GAP>(bf, Bs[kk], tile.col0);
        outer_product_add(acc, af, bf);
    }
}

// ---- the cp.async pipeline (v7) -----------------------------------------------------------------
// acc += the tile's a b^T over [k_begin, k_end), as accumulate_tile, with STAGES >= 3 shared-memory
// buffers per operand and STAGES - 1 tiles in flight.  Every thread commits exactly one group per
// tile -- an empty one past the end -- so at step t "at most STAGES - 2 groups pending" means "the
// group of tile t has landed".  One __syncthreads per step does two jobs: every thread's copies of
// tile t are visible, and every thread has finished multiplying tile t - 1, whose buffer the copies
// issued next (tile t + STAGES - 1) overwrite.
template <class Tile, int BK, bool A_KCONTIG, bool B_KCONTIG, int STAGES>
__device__ __forceinline__ void accumulate_tile_async(float (&acc)[Tile::TM][Tile::TN],
                                                      float (*As)[BK][Tile::BM + SMEM_PAD],
                                                      float (*Bs)[BK][Tile::BN + SMEM_PAD], const Operand& a,
                                                      const Operand& b, int m0, int n0, int k_begin, int k_end) {
    constexpr int BM = Tile::BM, BN = Tile::BN, THREADS = Tile::THREADS;
    const int tid = threadIdx.x;
    const Tile tile(tid);
    const int steps = (k_end - k_begin + BK - 1) / BK;
    const auto issue = [&](int step) {  // start the copies of tile `step` into buffer step % STAGES
        if (step < steps) {
            const int k0 = k_begin + step * BK;
            load_tile_async<BK, BM, BM + SMEM_PAD, A_KCONTIG, THREADS>(As[step % STAGES], a, m0, k0, k_end, tid);
            load_tile_async<BK, BN, BN + SMEM_PAD, B_KCONTIG, THREADS>(Bs[step % STAGES], b, n0, k0, k_end, tid);
        }
        cp_async_commit();
    };
    for (int step = 0; step < STAGES - 1; ++step) issue(step);  // the prologue fills STAGES - 1 buffers
    for (int t = 0; t < steps; ++t) {
        cp_async_wait<STAGES - 2>();
        __syncthreads();
        issue(t + STAGES - 1);
        multiply_tiles<BK>(acc, As[t % STAGES], Bs[t % STAGES], tile);
    }
    cp_async_wait<0>();  // nothing may stay in flight: the caller reuses the buffers (and the block may end)
    __syncthreads();
}

// ---- v9: two GEMMs in one cp.async pipeline, unguarded full tiles, grouped block order ----------
// v7 runs the base GEMM through the pipeline and then the rank-r term through a separate loop with its own
// barriers and exposed load latency.  v9 treats  [X | sU] . [W0 | B]^T  as ONE reduction: the k-steps of
// the rank term are simply the last steps of the same pipeline (the backward's dX puts them first), so
// their tiles are in flight while the last base tiles are multiplied.  A Phase is one of the two GEMMs.
struct Phase {
    Operand a, b;   // plain operands (cp.async copies bytes: no dropout; a scale is applied below)
    int k_end;      // the reduction runs over [0, k_end)
    float a_scale;  // multiplies a's values as they leave shared memory (s for U in the forward; else 1)
};

__device__ __forceinline__ Phase make_phase(const Operand& a, const Operand& b, int k_end, float a_scale = 1.0f) {
    Phase ph;
    ph.a = a;
    ph.b = b;
    ph.k_end = k_end;
    ph.a_scale = a_scale;
    return ph;
}

// Whether a d-contiguous operand's tile rows may travel as 16-byte copies (a k-contiguous one moves 4 bytes
// per copy and needs nothing).
template <bool KCONTIG>
__device__ __forceinline__ bool copies_aligned(const Operand& op) {
    return KCONTIG || (op.ld % 4 == 0 && (reinterpret_cast<unsigned long long>(op.p) & 15ull) == 0);
}

// cp_async of a whole BYTES (no zero fill) to dst + offset floats, the destination's shared-state-space address
// given once (dst_shared): the copies of a full tile then differ only in an immediate offset.
template <int BYTES>
__device__ __forceinline__ void cp_async_full(float* dst, unsigned dst_shared, int offset, const float* src) {
#if defined(__CUDA_EMU__) || !(__CUDA_ARCH__ >= 800)
    cp_async<BYTES>(dst + offset, src, BYTES);
#else
    static_assert(BYTES == 4 || BYTES == 16, "minilora copies 4 or 16 bytes");
    if (BYTES == 16)
        asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(dst_shared + 4u * offset), "l"(src) : "memory");
    else
        asm volatile("cp.async.ca.shared.global [%0], [%1], 4;\n" ::"r"(dst_shared + 4u * offset), "l"(src) : "memory");
#endif
}

// load_tile_async for a tile known to lie wholly inside the matrix (d0 + BD <= d_size, k0 + BK <= k_end and,
// for a d-contiguous operand, 16-byte aligned rows): no bounds checks, no zero fill -- the copies of the
// steady-state loop.  Only edge blocks and the last, ragged k-step pay load_tile_async's guards.  A thread's
// copies sit STEP rows apart (slot_position with a whole number of thread rows per tile row), so one source
// pointer plus a stride and one shared address plus constant offsets name them all: a few integer
// instructions per copy instead of the index arithmetic of each slot.
template <int BK, int BD, int SW, bool KCONTIG, int THREADS>
__device__ __forceinline__ void load_full_tile_async(float (*S)[SW], const Operand& op, int d0, int k0, int tid) {
    constexpr int RUN = KCONTIG ? 1 : 4, ACROSS = (KCONTIG ? BK : BD) / RUN;  // threads along one stored row
    constexpr int SLOTS = BK * BD / RUN, PER_THREAD = SLOTS / THREADS, STEP = THREADS / ACROSS;
    static_assert(SLOTS % THREADS == 0 && THREADS % ACROSS == 0, "every thread copies whole rows' worth of slots");
    int dd, kk;
    slot_position<BK, BD, KCONTIG, RUN>(tid, dd, kk);  // slot s of this thread: STEP * s rows further
    const float* src = op.p + (KCONTIG ? (unsigned long long)(d0 + dd) * op.ld + (k0 + kk)
                                       : (unsigned long long)(k0 + kk) * op.ld + (d0 + dd));
    const unsigned long long stride = (unsigned long long)STEP * op.ld;
    float* dst = &S[kk][dd];
    const unsigned dst_shared = shared_address(dst);  // converted once per tile, not once per copy
#pragma unroll
    for (int s = 0; s < PER_THREAD; ++s)
        cp_async_full<KCONTIG ? 4 : 16>(dst, dst_shared, s * (KCONTIG ? STEP : STEP * SW), src + s * stride);
}

// multiply_tiles with the A fragment scaled on the way out of shared memory: (s u) * b, the same float
// products as scaling u while loading it (v3-v8's operand_value), so the results match bit for bit.
template <int BK, class Tile, int SWA, int SWB>
__device__ __forceinline__ void multiply_tiles_scaled(float (&acc)[Tile::TM][Tile::TN], const float (*As)[SWA],
                                                      const float (*Bs)[SWB], const Tile& tile, float a_scale) {
#pragma unroll
    for (int kk = 0; kk < BK; ++kk) {
        float af[Tile::TM], bf[Tile::TN];
        read_fragment<Tile::TM, Tile::ROW_GAP>(af, As[kk], tile.row0);
        read_fragment<Tile::TN, Tile::COL_GAP>(bf, Bs[kk], tile.col0);
#pragma unroll
        for (int i = 0; i < Tile::TM; ++i) af[i] *= a_scale;
        outer_product_add(acc, af, bf);
    }
}

// Which output tile this block computes, in grouped order: blocks are numbered row by row over the grid
// (gridDim.x tiles across N, gridDim.y down M) and handed out GROUP rows of tiles at a time, column by
// column within the group.  The blocks resident at once then cover about GROUP rows of A-tiles and
// (resident / GROUP) columns of B-tiles, instead of one or two rows and every column: fewer distinct
// bytes per wave, so more of them are L2 hits.  (The last group may have fewer than GROUP rows.)
template <int GROUP>
__device__ __forceinline__ void grouped_tile(int& tile_m, int& tile_n) {
    const int linear = blockIdx.y * gridDim.x + blockIdx.x;
    const int per_group = GROUP * gridDim.x;
    const int first_m = linear / per_group * GROUP;
    const int rows = min(GROUP, (int)gridDim.y - first_m);
    tile_m = first_m + linear % per_group % rows;
    tile_n = linear % per_group / rows;
}

// The dynamic shared memory of a v9 kernel: STAGES k-major tiles of each operand, As then Bs (as below).  The
// launcher (minilora.kernels) passes this many bytes; a launch with fewer traps instead of writing past them.
template <class Cfg>
__device__ __forceinline__ constexpr int phases_smem_bytes() {
    return Cfg::STAGES * Cfg::BK * (Cfg::BM + Cfg::BN + 2 * SMEM_PAD) * (int)sizeof(float);
}

// acc += phase 1's a b^T, then between(acc), then acc += phase 2's a b^T: both GEMMs' k-steps in ONE
// cp.async pipeline of STAGES buffers (accumulate_tile_async's scheme: one group committed per step, an
// empty one past the end, one barrier per step).  Both phases store their operands alike (A_KCONTIG,
// B_KCONTIG) and share the output extents (a.d_size, b.d_size).  A step whose tiles lie wholly inside the
// matrices -- interior block, whole k-step, 16-byte aligned rows where 16-byte copies are used -- takes
// load_full_tile_async; only the others pay load_tile_async's guards.
template <class Tile, int BK, int STAGES, bool A_KCONTIG, bool B_KCONTIG, class Between>
__device__ __forceinline__ void accumulate_phases_async(float (&acc)[Tile::TM][Tile::TN],
                                                        float (*As)[BK][Tile::BM + SMEM_PAD],
                                                        float (*Bs)[BK][Tile::BN + SMEM_PAD], const Phase& p1,
                                                        const Phase& p2, int m0, int n0, Between between) {
    constexpr int BM = Tile::BM, BN = Tile::BN, THREADS = Tile::THREADS;
    static_assert(STAGES >= 3, "cp.async pipeline: at least 3 buffers");
    const int tid = threadIdx.x;
    const Tile tile(tid);
    const bool interior = m0 + BM <= p1.a.d_size && n0 + BN <= p1.b.d_size;
    const bool full1 = interior && copies_aligned<A_KCONTIG>(p1.a) && copies_aligned<B_KCONTIG>(p1.b);
    const bool full2 = interior && copies_aligned<A_KCONTIG>(p2.a) && copies_aligned<B_KCONTIG>(p2.b);
    const int steps1 = (p1.k_end + BK - 1) / BK, steps = steps1 + (p2.k_end + BK - 1) / BK;
    const auto load = [&](const Phase& ph, bool full, int buf, int k0) {
        if (full && k0 + BK <= ph.k_end) {
            load_full_tile_async<BK, BM, BM + SMEM_PAD, A_KCONTIG, THREADS>(As[buf], ph.a, m0, k0, tid);
            load_full_tile_async<BK, BN, BN + SMEM_PAD, B_KCONTIG, THREADS>(Bs[buf], ph.b, n0, k0, tid);
        } else {
            load_tile_async<BK, BM, BM + SMEM_PAD, A_KCONTIG, THREADS>(As[buf], ph.a, m0, k0, ph.k_end, tid);
            load_tile_async<BK, BN, BN + SMEM_PAD, B_KCONTIG, THREADS>(Bs[buf], ph.b, n0, k0, ph.k_end, tid);
        }
    };
    const auto issue = [&](int step) {  // the copies of step `step` into buffer step % STAGES, then a commit
        if (step < steps1) load(p1, full1, step % STAGES, step * BK);
        else if (step < steps) load(p2, full2, step % STAGES, (step - steps1) * BK);
        cp_async_commit();
    };
    for (int step = 0; step < STAGES - 1; ++step) issue(step);  // the prologue fills STAGES - 1 buffers
    for (int t = 0; t < steps; ++t) {
        cp_async_wait<STAGES - 2>();  // step t's copies (this thread's) have landed ...
        __syncthreads();              // ... everyone's have, and everyone is done with step t - 1's buffer
        issue(t + STAGES - 1);
        if (t == steps1) between(acc);  // phase 1 complete in the accumulators
        const Phase& ph = t < steps1 ? p1 : p2;
        if (ph.a_scale == 1.0f) multiply_tiles<BK>(acc, As[t % STAGES], Bs[t % STAGES], tile);
        else multiply_tiles_scaled<BK>(acc, As[t % STAGES], Bs[t % STAGES], tile, ph.a_scale);
    }
    if (steps1 == steps) between(acc);  // no phase 2 at all
    cp_async_wait<0>();  // nothing may stay in flight when the block ends
}

// ---- the tiled GEMM main loop ------------------------------------------------------------------
// acc[i][j] += sum_{k_begin <= k < k_end} a(m0 + tile.row(i), k) * b(n0 + tile.col(j), k)
// for one BM x BN output tile (Tile = ThreadTile<BM, BN, TM, TN, ...>, its Tile::THREADS threads),
// walking k in steps of BK.  As and Bs hold STAGES shared-memory buffers per operand:
//
// STAGES = 1 (v3; v2's loop): load both tiles into shared memory, wait, multiply out of shared memory into
//     registers, wait again (so nobody overwrites a tile still being read).  While the tiles load,
//     the multiply units idle; while the block multiplies, memory idles.
// STAGES = 2 (v4, software pipelining): the tile for step k+1 is fetched into registers BEFORE the
//     block multiplies step k's tile, and written to the other buffer after.  The global reads are in
//     flight during the arithmetic, and one __syncthreads per step suffices: step k reads buffer b and
//     writes buffer b^1, which nobody reads until after that step's barrier.
// STAGES >= 3 (v7): cp.async, STAGES - 1 tiles in flight, no registers spent on staging
//     (accumulate_tile_async above).  Only for operands without scale or dropout.
template <class Tile, int BK, bool A_KCONTIG, bool B_KCONTIG, bool VEC, int STAGES>
__device__ __forceinline__ void accumulate_tile(float (&acc)[Tile::TM][Tile::TN], float (*As)[BK][Tile::BM + SMEM_PAD],
                                                float (*Bs)[BK][Tile::BN + SMEM_PAD], const Operand& a,
                                                const Operand& b, int m0, int n0, int k_begin, int k_end) {
    static_assert(STAGES >= 1, "at least one shared-memory buffer");
    constexpr int BM = Tile::BM, BN = Tile::BN, THREADS = Tile::THREADS;
    if (STAGES >= 3) {  // v7's cp.async pipeline (the clamp only keeps the 1- and 2-stage builds compiling)
        accumulate_tile_async<Tile, BK, A_KCONTIG, B_KCONTIG, (STAGES >= 3 ? STAGES : 3)>(acc, As, Bs, a, b, m0, n0,
                                                                                          k_begin, k_end);
        return;
    }
    const int tid = threadIdx.x;
    const Tile tile(tid);
    if (STAGES == 1) {
        for (int k0 = k_begin; k0 < k_end; k0 += BK) {
            load_tile<BK, BM, BM + SMEM_PAD, A_KCONTIG, VEC, THREADS>(As[0], a, m0, k0, k_end, tid);
            load_tile<BK, BN, BN + SMEM_PAD, B_KCONTIG, VEC, THREADS>(Bs[0], b, n0, k0, k_end, tid);
            __syncthreads();
            multiply_tiles<BK>(acc, As[0], Bs[0], tile);
            __syncthreads();
        }
        return;
    }
    if (k_begin >= k_end) return;  // the same for the whole block: nobody waits at a barrier alone
    TileRegs<BK, BM, VEC, THREADS> next_a;
    TileRegs<BK, BN, VEC, THREADS> next_b;
    fetch_tile<BK, BM, A_KCONTIG, VEC, THREADS>(next_a, a, m0, k_begin, k_end, tid);
    fetch_tile<BK, BN, B_KCONTIG, VEC, THREADS>(next_b, b, n0, k_begin, k_end, tid);
    stash_tile<BK, BM, BM + SMEM_PAD, A_KCONTIG, VEC, THREADS>(As[0], next_a, tid);
    stash_tile<BK, BN, BN + SMEM_PAD, B_KCONTIG, VEC, THREADS>(Bs[0], next_b, tid);
    __syncthreads();
    int buf = 0;
    for (int k0 = k_begin; k0 < k_end; k0 += BK) {
        const bool more = k0 + BK < k_end;
        if (more) {  // issue the next tile's global reads; they complete while we multiply
            fetch_tile<BK, BM, A_KCONTIG, VEC, THREADS>(next_a, a, m0, k0 + BK, k_end, tid);
            fetch_tile<BK, BN, B_KCONTIG, VEC, THREADS>(next_b, b, n0, k0 + BK, k_end, tid);
        }
        multiply_tiles<BK>(acc, As[buf], Bs[buf], tile);
        if (more) {
            stash_tile<BK, BM, BM + SMEM_PAD, A_KCONTIG, VEC, THREADS>(As[buf ^ 1], next_a, tid);
            stash_tile<BK, BN, BN + SMEM_PAD, B_KCONTIG, VEC, THREADS>(Bs[buf ^ 1], next_b, tid);
        }
        __syncthreads();
        buf ^= 1;
    }
}

template <int TM, int TN>
__device__ __forceinline__ void zero(float (&acc)[TM][TN]) {
#pragma unroll
    for (int i = 0; i < TM; ++i)
#pragma unroll
        for (int j = 0; j < TN; ++j) acc[i][j] = 0.0f;
}

// C[m, n] = acc (+ bias[n]) for this thread's TM x TN outputs of the tile at (m0, n0); ldc = row length.
// The bias is read once per column (TN loads, not TM x TN: the compiler cannot reuse a load across the
// stores to C, which might alias it).
template <class Tile>
__device__ __forceinline__ void store_tile(const float (&acc)[Tile::TM][Tile::TN], float* C, int ldc, int M, int N,
                                           int m0, int n0, const float* bias) {
    const Tile tile(threadIdx.x);
    float b[Tile::TN];
#pragma unroll
    for (int j = 0; j < Tile::TN; ++j) b[j] = bias && n0 + tile.col(j) < N ? bias[n0 + tile.col(j)] : 0.0f;
#pragma unroll
    for (int i = 0; i < Tile::TM; ++i) {
        const int m = m0 + tile.row(i);
        if (m >= M) continue;
#pragma unroll
        for (int j = 0; j < Tile::TN; ++j) {
            const int n = n0 + tile.col(j);
            if (n < N) C[(unsigned long long)m * ldc + n] = acc[i][j] + b[j];
        }
    }
}

// ---- tensor cores: bf16 mma.sync and ldmatrix (sm_80 and later) --------------------------------
// The warp-level primitives of a bf16 tensor-core GEMM.  bf16 values travel as bit patterns, two to a
// 32-bit register (the lower-indexed element in the low 16 bits), because that is how PTX sees them
// and NumPy has no bfloat16 (minilora stores bf16 arrays as uint16).  On sm_80+ each primitive is one
// PTX instruction; on the emulator -- and on older GPUs -- the same function is a warp collective
// written with __shfl_sync, so a learner can step through which lane holds what.
//
// Fragment layout of mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 (PTX ISA, "Matrix Fragments
// for mma.m16n8k16"), D[16x8] = A[16x16] B[16x8] + C[16x8].  For lane l: g = l / 4, t = l % 4.
//     A (4 registers, 2 bf16 each):  a[0] = A[g][2t, 2t+1]      a[1] = A[g+8][2t, 2t+1]
//                                    a[2] = A[g][2t+8, 2t+9]    a[3] = A[g+8][2t+8, 2t+9]
//     B (2 registers):               b[0] = B[2t, 2t+1][g]      b[1] = B[2t+8, 2t+9][g]
//     C, D (4 floats):               c[0], c[1] = C[g][2t, 2t+1]   c[2], c[3] = C[g+8][2t, 2t+1]
// So each lane holds 8 of A's 256 values, 4 of B's 128 and 4 of the 128 outputs.
//
// ldmatrix.sync.aligned.m8n8.x4.shared.b16 loads four 8 x 8 bf16 matrices from shared memory: lane
// 8j + r gives the address of row r of matrix j (16 contiguous bytes), and every lane l receives
// d[j] = matrix j's row l / 4, elements 2(l % 4) and 2(l % 4) + 1 -- exactly the A fragment above when
// matrices 0..3 are A's quadrants (rows 0-7 | 8-15) x (cols 0-7 | 8-15), in the order top-left,
// bottom-left, top-right, bottom-right; and the B fragment (x2) when B is stored n-major (B^T, [8][16]).

// Round a float to bf16 as cvt.rn does: to nearest, ties to even; NaN stays a (quiet) NaN.
__device__ __forceinline__ unsigned bf16_bits(float x) {
    const unsigned u = __float_as_uint(x);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (u >> 16) | 0x40u;  // NaN: keep the sign, set the quiet bit
    return (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
}

__device__ __forceinline__ float bf16_to_float(unsigned bits) {
    return __uint_as_float(bits << 16);
}

// Two floats rounded to bf16 and packed: lo in bits 0-15, hi in bits 16-31.
__device__ __forceinline__ unsigned pack_bf16x2(float lo, float hi) {
#if !defined(__CUDA_EMU__) && __CUDA_ARCH__ >= 800
    unsigned d;
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(d) : "f"(hi), "f"(lo));  // the first source goes high
    return d;
#else
    return bf16_bits(lo) | (bf16_bits(hi) << 16);
#endif
}

// d[0..3] = this lane's share of four 8 x 8 bf16 matrices; row_address: the row this lane points at.
__device__ __forceinline__ void ldmatrix_x4(unsigned (&d)[4], const void* row_address) {
#if !defined(__CUDA_EMU__) && __CUDA_ARCH__ >= 800
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(d[0]), "=r"(d[1]), "=r"(d[2]), "=r"(d[3]) : "r"(shared_address(row_address)));
#else
    const int lane = threadIdx.x % 32;
#pragma unroll
    for (int j = 0; j < 4; ++j) {  // matrix j: its row lane / 4 was given by lane 8j + lane / 4
        const unsigned long long address = __shfl_sync(
            0xffffffffu, reinterpret_cast<unsigned long long>(row_address), 8 * j + lane / 4);
        const unsigned short* row = reinterpret_cast<const unsigned short*>(address);
        d[j] = row[2 * (lane % 4)] | ((unsigned)row[2 * (lane % 4) + 1] << 16);
    }
#endif
}

// The same for two matrices (the B fragment): lanes 0-15 give the row addresses.
__device__ __forceinline__ void ldmatrix_x2(unsigned (&d)[2], const void* row_address) {
#if !defined(__CUDA_EMU__) && __CUDA_ARCH__ >= 800
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0, %1}, [%2];\n"
                 : "=r"(d[0]), "=r"(d[1]) : "r"(shared_address(row_address)));
#else
    const int lane = threadIdx.x % 32;
#pragma unroll
    for (int j = 0; j < 2; ++j) {
        const unsigned long long address = __shfl_sync(
            0xffffffffu, reinterpret_cast<unsigned long long>(row_address), 8 * j + lane / 4);
        const unsigned short* row = reinterpret_cast<const unsigned short*>(address);
        d[j] = row[2 * (lane % 4)] | ((unsigned)row[2 * (lane % 4) + 1] << 16);
    }
#endif
}

// d = A B + c for one 16 x 8 x 16 tile, every lane holding its fragments (layout above).  All 32 lanes
// of the warp must call it together.  bf16 x bf16 products are exact in fp32; the emulator adds them in
// k order in fp32 and then adds c -- the tensor core's own summation order and internal rounding are
// not specified by NVIDIA, so results may differ from a GPU's in the last bits (tests use bf16
// tolerances against an fp32 reference, never bit equality with the emulator).
__device__ __forceinline__ void mma_bf16_16x8x16(float (&d)[4], const unsigned (&a)[4], const unsigned (&b)[2],
                                                 const float (&c)[4]) {
#if !defined(__CUDA_EMU__) && __CUDA_ARCH__ >= 800
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
                 "{%8, %9}, {%10, %11, %12, %13};\n"
                 : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]),
                   "f"(c[0]), "f"(c[1]), "f"(c[2]), "f"(c[3]));
#else
    // Gather the whole tile into every lane: lane s holds A[s/4 (+8)][2(s%4) (+1) (+8)] and B[2(s%4)..][s/4].
    float A[16][16], B[16][8];
#pragma unroll 1
    for (int s = 0; s < 32; ++s) {
        const int g = s / 4, t = s % 4;
        unsigned reg[6];
#pragma unroll
        for (int i = 0; i < 4; ++i) reg[i] = __shfl_sync(0xffffffffu, a[i], s);
        reg[4] = __shfl_sync(0xffffffffu, b[0], s);
        reg[5] = __shfl_sync(0xffffffffu, b[1], s);
        for (int half = 0; half < 2; ++half) {  // the low and the high bf16 of each register
            const int col = 2 * t + half;
            A[g][col] = bf16_to_float((reg[0] >> (16 * half)) & 0xffffu);
            A[g + 8][col] = bf16_to_float((reg[1] >> (16 * half)) & 0xffffu);
            A[g][col + 8] = bf16_to_float((reg[2] >> (16 * half)) & 0xffffu);
            A[g + 8][col + 8] = bf16_to_float((reg[3] >> (16 * half)) & 0xffffu);
            B[col][g] = bf16_to_float((reg[4] >> (16 * half)) & 0xffffu);
            B[col + 8][g] = bf16_to_float((reg[5] >> (16 * half)) & 0xffffu);
        }
    }
    const int lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
    for (int i = 0; i < 4; ++i) {  // output i: row g (+8 for i >= 2), column 2t + i % 2
        const int row = g + 8 * (i / 2), col = 2 * t + i % 2;
        float sum = 0.0f;
        for (int k = 0; k < 16; ++k) sum = fmaf(A[row][k], B[k][col], sum);  // exact products, fp32 sums
        d[i] = sum + c[i];
    }
#endif
}


// ldmatrix's .trans form: each 8 x 8 matrix is delivered transposed -- lane l = 4g + t receives element
// (row 2t, column g) and (row 2t + 1, column g) of matrix j in d[j].  With a tile stored k-major (rows are
// the reduction index k, 8 consecutive n in a 16-byte row) that is exactly mma's B fragment,
// b[0] = B[2t, 2t+1][g]: the backward's W0 [N, K] is such a tile when N is the reduction (dX = dY W0), so
// it needs no transposing copy.  Lane 8j + r gives the address of row r of matrix j, as for ldmatrix_x4.
__device__ __forceinline__ void ldmatrix_x4_trans(unsigned (&d)[4], const void* row_address) {
#if !defined(__CUDA_EMU__) && __CUDA_ARCH__ >= 800
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(d[0]), "=r"(d[1]), "=r"(d[2]), "=r"(d[3]) : "r"(shared_address(row_address)));
#else
    const int lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
#pragma unroll
    for (int j = 0; j < 4; ++j) {  // rows 2t and 2t + 1 of matrix j were given by lanes 8j + 2t and 8j + 2t + 1
        const unsigned long long p = reinterpret_cast<unsigned long long>(row_address);
        const unsigned long long lo = __shfl_sync(0xffffffffu, p, 8 * j + 2 * t);
        const unsigned long long hi = __shfl_sync(0xffffffffu, p, 8 * j + 2 * t + 1);
        d[j] = reinterpret_cast<const unsigned short*>(lo)[g] |
               ((unsigned)reinterpret_cast<const unsigned short*>(hi)[g] << 16);
    }
#endif
}

// ---- the backward's pass over dY, for float32 and bf16 dY ---------------------------------------
// S[kk][dd] = float(p[(d0 + dd) * ld + k0 + kk]), zero where d >= d_size or k >= k_end: load_tile's job for
// a k-contiguous operand without scale or dropout, for float (load_tile itself, float4 where it can) and
// for bf16 bit patterns: two elements per 4-byte load where the row length, the base pointer and k0 allow
// (else one 2-byte load each), consecutive threads along k, so a warp reads 128 contiguous bytes.
template <int BK, int BD, int SW, bool VEC, int THREADS>
__device__ __forceinline__ void load_rows_kcontig(float (*S)[SW], const float* p, int ld, int d_size, int d0, int k0,
                                                  int k_end, int tid) {
    load_tile<BK, BD, SW, true, VEC, THREADS>(S, make_operand(p, ld, d_size), d0, k0, k_end, tid);
}
template <int BK, int BD, int SW, bool VEC, int THREADS>
__device__ __forceinline__ void load_rows_kcontig(float (*S)[SW], const unsigned short* p, int ld, int d_size, int d0,
                                                  int k0, int k_end, int tid) {
    static_assert(BK % 2 == 0, "bf16 elements travel in pairs along k");
    const bool pairs = ld % 2 == 0 && k0 % 2 == 0 && (reinterpret_cast<unsigned long long>(p) & 3ull) == 0;
    for (int e = tid; e < BK * BD / 2; e += THREADS) {
        const int kk = e % (BK / 2) * 2, dd = e / (BK / 2), d = d0 + dd, k = k0 + kk;
        float lo = 0.0f, hi = 0.0f;
        if (d < d_size) {
            const unsigned short* row = p + (unsigned long long)d * ld;
            if (pairs && k + 1 < k_end) {
                const unsigned both = *reinterpret_cast<const unsigned*>(row + k);
                lo = bf16_to_float(both & 0xffffu);
                hi = bf16_to_float(both >> 16);
            } else {
                if (k < k_end) lo = bf16_to_float(row[k]);
                if (k + 1 < k_end) hi = bf16_to_float(row[k + 1]);
            }
        }
        S[kk][dd] = lo;
        S[kk + 1][dd] = hi;
    }
}

// V = s dY B and dB's partial sums, reading dY once (lora_backward.cu's launch 1, and lora_bf16.cu's with
// dY in bf16; T is float or unsigned short).  Block (x, y, z) owns LoRA ranks [x*RC, x*RC + RC), rows
// [y*BM, y*BM + BM) of dY and its columns [z*n_slice, (z+1)*n_slice) (n_slice = N: one slice).  Thread
// (ty, tx) owns a TM x TN block of V and, for every BN-wide n-tile, a TB x TN block of that tile's dB rows.
// Writes V's sum over the block's columns to V_out[z] ([slices, M, r]; V itself for one slice) and dB's
// rows of its columns summed over its rows to dB_out[y] ([ceil(M/BM), N, r]).  Splitting N (v8) gives a
// GPU enough blocks at small r without more rows of dB partial sums: V's partials are only M x r each.
template <class Cfg, class T>
__device__ __forceinline__ void lora_bwd_dy_tiled(const T* dY, const float* B, const float* U, float* V_out,
                                                  float* dB_out, int write_db, int M, int N, int r, float s,
                                                  int n_slice) {
    constexpr int BM = Cfg::BM, BN = Cfg::BN, RC = Cfg::RC, TM = Cfg::TM, TN = Cfg::TN;
    constexpr bool VEC = Cfg::VEC;
    constexpr int TX = RC / TN, TY = BM / TM, THREADS = TX * TY, TB = BN / TY;
    static_assert(BN % TY == 0, "each thread row must own a whole number of dB rows per n-tile");
    static_assert(THREADS == 256, "the launch gives every tiled kernel THREADS = 256 threads (lora_tiles.cuh)");
    __shared__ __align__(16) float Ds[BN][BM + SMEM_PAD];  // Ds[n][m] = dY[m0 + m, n0 + n]
    __shared__ __align__(16) float Bs[BN][RC + SMEM_PAD];  // Bs[n][j] = B[n0 + n, j0 + j]
    __shared__ __align__(16) float Us[BM][RC + SMEM_PAD];  // Us[m][j] = U[m0 + m, j0 + j], loaded once
    const int tid = threadIdx.x, ty = tid / TX, tx = tid % TX;
    const int m0 = blockIdx.y * BM, j0 = blockIdx.x * RC;
    const int n_begin = blockIdx.z * n_slice, n_end = min(N, n_begin + n_slice);
    const Operand b = make_operand(B, r, r);  // (d = j, k = n): d-contiguous
    const Operand u = make_operand(U, r, r);  // (d = j, k = m): d-contiguous
    load_tile<BM, RC, RC + SMEM_PAD, false, VEC, THREADS>(Us, u, j0, m0, M, tid);
    float v[TM][TN];
    zero(v);
    for (int n0 = n_begin; n0 < n_end; n0 += BN) {
        load_rows_kcontig<BN, BM, BM + SMEM_PAD, VEC, THREADS>(Ds, dY, N, M, m0, n0, n_end, tid);
        load_tile<BN, RC, RC + SMEM_PAD, false, VEC, THREADS>(Bs, b, j0, n0, n_end, tid);
        __syncthreads();
        // V[m, j] += sum over this tile's n of dY[m, n] B[n, j]
        multiply_tiles<BN>(v, Ds, Bs, ThreadTile<BM, RC, TM, TN, false>(tid));
        // dB[n, j] partial = sum over this block's m of dY[m, n] U[m, j], for the tile's rows n
        if (write_db) {
            float db[TB][TN];
            zero(db);
#pragma unroll 4
            for (int mm = 0; mm < BM; ++mm) {
                float af[TB], bf[TN];
#pragma unroll
                for (int q = 0; q < TB; ++q) af[q] = Ds[ty * TB + q][mm];
#pragma unroll
                for (int j = 0; j < TN; ++j) bf[j] = Us[mm][tx * TN + j];
                outer_product_add(db, af, bf);
            }
#pragma unroll
            for (int q = 0; q < TB; ++q) {
                const int n = n0 + ty * TB + q;
#pragma unroll
                for (int j = 0; j < TN; ++j) {
                    const int jj = j0 + tx * TN + j;
                    if (n < n_end && jj < r) dB_out[((unsigned long long)blockIdx.y * N + n) * r + jj] = s * db[q][j];
                }
            }
        }
        __syncthreads();
    }
    float* V = V_out + (unsigned long long)blockIdx.z * M * r;
#pragma unroll
    for (int i = 0; i < TM; ++i) {
        const int m = m0 + ty * TM + i;
#pragma unroll
        for (int j = 0; j < TN; ++j) {
            const int jj = j0 + tx * TN + j;
            if (m < M && jj < r) V[(unsigned long long)m * r + jj] = s * v[i][j];
        }
    }
}

}  // namespace minilora
