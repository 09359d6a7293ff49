// lora_tiles.cuh -- the tile shapes of the LoRA kernels, written down once.
//
// The kernels (lora_forward.cu, lora_backward.cu) take their shapes from here, and so does the
// Python that launches them: minilora/kernels.py reads this file to size its grids (grid = output
// size / tile size, rounded up).  Change a number here and both sides follow; they cannot disagree.
//
// v1 and v2 are plain CUDA with one constant each.  From v3 on, a kernel is one template of
// common.cuh's GEMM machinery, configured by a struct named after the kernel it configures:
//
//     BM x BN   the block's output tile              BK      the k-step: rows of each shared-memory tile
//     TM x TN   outputs per thread (register block)  VEC     float4 loads wherever they are aligned
//     STAGES    shared-memory buffers per operand: 1, 2 for the pipelined main loop, 3+ for cp.async
//     WARP_TILED  the warp-tiled thread layout (common.cuh, ThreadTile)
//     GROUP_M   v9: blocks take their tiles GROUP_M tile rows at a time (common.cuh, grouped_tile); such a
//               kernel runs one cp.async pipeline over both GEMMs in dynamic shared memory
//
// A later version derives from the one before and names only what it changes.  A version that
// changes nothing for a kernel is an alias (`using`): no second copy of that kernel is compiled, and
// minilora/kernels.py launches the earlier version's kernel for it.
//
// minilora/kernels.py reads three forms (keep to them): `constexpr int NAME = value;`,
// `struct NAME [: BASE] { static constexpr int|bool FIELD = value, ...; ... };` and `using NAME = OTHER;`.
#pragma once

namespace minilora {

constexpr int THREADS = 256;  // threads per block of every tiled kernel (and of lora_reduce_partials)
constexpr int V1_BLOCK = 16;  // v1: blocks of 16 x 16 threads, one thread per output element
constexpr int V2_TILE = 16;   // v2: 16 x 16 output tiles, k-step 16, one output per thread (256 threads)
constexpr int BF16_U_ROWS = 8;  // lora_bf16.cu's U kernel: rows of X per block, one per warp (256 threads)

namespace config {

// ---- forward ------------------------------------------------------------------------------------
// U = dropout(X) A^T: r is small, so a narrow 64 x 32 tile and 4 x 2 outputs per thread.
struct lora_fwd_u_v3 {
    static constexpr int BM = 64, BN = 32, BK = 16, TM = 4, TN = 2, STAGES = 1;
    static constexpr bool VEC = true, WARP_TILED = false;
};
struct lora_fwd_u_v4 : lora_fwd_u_v3 { static constexpr int STAGES = 2; };
using lora_fwd_u_v5 = lora_fwd_u_v4;  // warp tiles need 8 x 8 outputs per thread: U stays as in v4
// v6: the rank tile sized to r.  v4's 32-wide rank tile is half padding at r = 16, and its 64-row tiles
// give 128 blocks at M = 8192 -- fewer than an H200's 132 SMs, for a kernel that only streams X.
// 16 x 16 tiles, one output per thread, k-step 32: 512 blocks at M = 8192 (about 4 per SM), no padding
// at r = 16 (half at r = 8; r = 64 runs 4 rank tiles, 2048 blocks).
struct lora_fwd_u_v6 : lora_fwd_u_v4 { static constexpr int BM = 16, BN = 16, BK = 32, TM = 1, TN = 1; };
using lora_fwd_u_v7 = lora_fwd_u_v6;  // cp.async cannot apply dropout on the way: U stays as in v6
using lora_fwd_u_v8 = lora_fwd_u_v7;  // 512 blocks at M = 8192, all resident at once: see lora_forward.cu, v8
using lora_fwd_u_v9 = lora_fwd_u_v8;  // v9 changes only lora_fwd_y and lora_bwd_dx

// Y = X W0^T + s U B^T + bias: the big GEMM, 128 x 128 tiles, 8 x 8 outputs per thread.
struct lora_fwd_y_v3 {
    static constexpr int BM = 128, BN = 128, BK = 8, TM = 8, TN = 8, STAGES = 1;
    static constexpr bool VEC = true, WARP_TILED = false;
};
struct lora_fwd_y_v4 : lora_fwd_y_v3 { static constexpr int STAGES = 2; };
struct lora_fwd_y_v5 : lora_fwd_y_v4 { static constexpr bool WARP_TILED = true; };
using lora_fwd_y_v6 = lora_fwd_y_v5;  // v6 changes only the rank-sized side kernels
// v7: the cp.async main loop (common.cuh, accumulate_tile_async): 4 buffers, 3 tiles in flight.
struct lora_fwd_y_v7 : lora_fwd_y_v5 { static constexpr int STAGES = 4; };
using lora_fwd_y_v8 = lora_fwd_y_v7;  // v8 changes only lora_bwd_dy
// v9: 256 x 128 tiles, 8 x 16 outputs per thread (8 warps of 32 x 128; 1 block per SM), v7's k-step 8 and 4
// cp.async stages (49 KB: dynamic shared memory), the rank term as the pipeline's last k-steps, blocks in
// groups of GROUP_M tile rows (lora_forward.cu, v9).  k-step 16 would halve the barriers, but its 24
// copies per thread per step need more registers than the 255 left next to 128 accumulators (ptxas spills).
struct lora_fwd_y_v9 : lora_fwd_y_v7 { static constexpr int BM = 256, TN = 16, GROUP_M = 8; };

// ---- backward -----------------------------------------------------------------------------------
// V = s dY B and dB's partial sums in one pass over dY: BM rows of dY per block, BN-wide tiles of N,
// RC LoRA ranks per block, TM x TN of V per thread.
struct lora_bwd_dy_v3 {
    static constexpr int BM = 64, BN = 32, RC = 64, TM = 4, TN = 4;
    static constexpr bool VEC = true;
};
using lora_bwd_dy_v4 = lora_bwd_dy_v3;  // no k-loop of its own to pipeline
using lora_bwd_dy_v5 = lora_bwd_dy_v3;
// v6: a 16-wide rank chunk instead of 64 (75% padding at r = 16; r = 64 runs 4 chunks side by side),
// one rank per thread column (TN = 1), 4 rows of V per thread.  BM stays 64: more row blocks would mean
// more of dB's partial sums ([ceil(M/BM), N, r] floats, already a quarter of dY's bytes at r = 16).
struct lora_bwd_dy_v6 : lora_bwd_dy_v3 { static constexpr int RC = 16, TM = 4, TN = 1; };
using lora_bwd_dy_v7 = lora_bwd_dy_v6;
// v8: v6's tiles with N split over blocks (grid z, SPLIT_N): v6 launches ceil(M/64) blocks at r <= 16 -- 128
// at M = 8192, under one per SM of an H200 -- and more row blocks would grow dB's partial sums.  Splitting
// N instead costs partial sums of V, [slices, M, r] (M r floats each: 0.5 MB at M = 8192, r = 16), and the
// launcher picks enough slices for at least 4 blocks per SM (minilora.kernels, _MIN_BLOCKS).
struct lora_bwd_dy_v8 : lora_bwd_dy_v6 { static constexpr bool SPLIT_N = true; };
using lora_bwd_dy_v9 = lora_bwd_dy_v8;

// dX = dY W0 + mask * (V A): the forward's big GEMM shape.
struct lora_bwd_dx_v3 {
    static constexpr int BM = 128, BN = 128, BK = 8, TM = 8, TN = 8, STAGES = 1;
    static constexpr bool VEC = true, WARP_TILED = false;
};
struct lora_bwd_dx_v4 : lora_bwd_dx_v3 { static constexpr int STAGES = 2; };
struct lora_bwd_dx_v5 : lora_bwd_dx_v4 { static constexpr bool WARP_TILED = true; };
using lora_bwd_dx_v6 = lora_bwd_dx_v5;
struct lora_bwd_dx_v7 : lora_bwd_dx_v5 { static constexpr int STAGES = 4; };  // cp.async main loop
using lora_bwd_dx_v8 = lora_bwd_dx_v7;
// v9: the forward's v9 tiles for the same shape of GEMM, the rank term's k-steps first (lora_backward.cu, v9).
struct lora_bwd_dx_v9 : lora_bwd_dx_v7 { static constexpr int BM = 256, TN = 16, GROUP_M = 8; };

// dA = V^T dropout(X), split over M: 32 (ranks) x 64 (columns of K) tiles, k-step 16 rows of M.
struct lora_bwd_da_v3 {
    static constexpr int BM = 32, BN = 64, BK = 16, TM = 2, TN = 4, STAGES = 1;
    static constexpr bool VEC = true, WARP_TILED = false;
};
struct lora_bwd_da_v4 : lora_bwd_da_v3 { static constexpr int STAGES = 2; };
using lora_bwd_da_v5 = lora_bwd_da_v4;  // 2 x 4 per thread is no warp tile: dA stays as in v4
using lora_bwd_da_v6 = lora_bwd_da_v5;
using lora_bwd_da_v7 = lora_bwd_da_v6;  // X is loaded through dropout: no cp.async
using lora_bwd_da_v8 = lora_bwd_da_v7;
using lora_bwd_da_v9 = lora_bwd_da_v8;

// ---- bf16 tensor-core forward (lora_bf16.cu): 8 warps of 64 x 32 (4 x 4 mma tiles of 16 x 8), k-step 32
// (two mma k-steps), 2 cp.async stages (2 x 20 KB of static shared memory), rank term RC ranks at a time.
struct lora_bf16_y_v1 {
    static constexpr int BM = 128, BN = 128, BK = 32, WM = 64, WN = 32, STAGES = 2, RC = 16;
};
// The backward (lora_bf16.cu): dX = dY W0 + V A on the same tensor-core tiles (the reduction runs over N),
// V and dB by lora_bwd_dy_v8's split pass over dY (in bf16), dA = V^T X with RC ranks and one column of K
// per thread, BM rows of M per staged tile of V, split over M like the fp32 dA.
using lora_bf16_dx_v1 = lora_bf16_y_v1;
// v2: 4 cp.async stages, 3 k-steps in flight (80 KB for Y, 74 KB for dX: dynamic shared memory, opted in at
// launch; 1 block per SM either way, its 255 registers allow no second).
struct lora_bf16_y_v2 : lora_bf16_y_v1 { static constexpr int STAGES = 4; };
using lora_bf16_dx_v2 = lora_bf16_y_v2;
using lora_bf16_dy_v1 = lora_bwd_dy_v8;
struct lora_bf16_da_v1 {
    static constexpr int BM = 32, RC = 16;
};

}  // namespace config
}  // namespace minilora
