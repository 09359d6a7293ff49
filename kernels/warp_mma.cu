// warp_mma.cu -- one bf16 tensor-core tile, D = A B + C, through common.cuh's warp primitives.
//
// The smallest program that uses ldmatrix and mma.sync (m16n8k16, bf16 inputs, fp32 accumulate): one
// warp loads A [16, 16] and B^T [8, 16] (bf16 bit patterns, uint16, row-major) into shared memory, takes
// its fragments with ldmatrix (x4 for A, x2 for B), multiplies with one mma, and writes D [16, 8] (fp32).
// It also writes every lane's fragment registers, so a test -- or a learner -- can see the layout
// documented in common.cuh lane by lane.  round_bf16 rounds floats to bf16 as the GPU's cvt.rn does.
// These are the building blocks of the bf16 LoRA kernel, kernels/lora_bf16.cu.
//
// ldmatrix_trans_tile shows ldmatrix's .trans form (the backward's W0 fragments) the same way.
//
// Versions: v1 only (a single tile; no tiling to improve).  Launch: mma_bf16_tile and ldmatrix_trans_tile
// grid 1, block 32; round_bf16 grid ceil(n / 256), block 256.  sm_80 or later on a GPU; any CPU under the emulator.
#include "common.cuh"

using namespace minilora;

extern "C" __global__ void __launch_bounds__(32)
mma_bf16_tile(const unsigned short* __restrict__ A, const unsigned short* __restrict__ Bt,
              const float* __restrict__ C, float* __restrict__ D, unsigned* __restrict__ fragments) {
    __shared__ __align__(16) unsigned short As[16][16];
    __shared__ __align__(16) unsigned short Bs[8][16];  // B^T: row n holds B[0..15][n]
    const int lane = threadIdx.x, g = lane / 4, t = lane % 4;
    for (int i = lane; i < 16 * 16; i += 32) As[i / 16][i % 16] = A[i];
    for (int i = lane; i < 8 * 16; i += 32) Bs[i / 16][i % 16] = Bt[i];
    __syncwarp();
    // A's quadrants in fragment order: top-left, bottom-left, top-right, bottom-right; lane 8j + r points
    // at row r of quadrant j.
    const int j = lane / 8, r = lane % 8;
    unsigned a[4], b[2];
    ldmatrix_x4(a, &As[r + 8 * (j % 2)][8 * (j / 2)]);
    // B^T's two 8 x 8 halves (k 0-7, k 8-15); lanes 16-31 pass addresses that x2 ignores.
    ldmatrix_x2(b, &Bs[r][8 * (j % 2)]);
    float c[4], d[4];
    for (int i = 0; i < 4; ++i) c[i] = C[(g + 8 * (i / 2)) * 8 + 2 * t + i % 2];
    mma_bf16_16x8x16(d, a, b, c);
    for (int i = 0; i < 4; ++i) D[(g + 8 * (i / 2)) * 8 + 2 * t + i % 2] = d[i];
    for (int i = 0; i < 4; ++i) fragments[lane * 6 + i] = a[i];
    for (int i = 0; i < 2; ++i) fragments[lane * 6 + 4 + i] = b[i];
}

// ldmatrix_x4_trans on a 16 x 16 bf16 matrix S: lane 8j + r points at row r + 8 (j % 2), column 8 (j / 2) --
// the four 8 x 8 quadrants in the order the backward's B fragments take them (k 0-7 | 8-15, then n 0-7 | 8-15)
// -- and writes its 4 registers to out[lane][0..3].
extern "C" __global__ void __launch_bounds__(32)
ldmatrix_trans_tile(const unsigned short* __restrict__ S, unsigned* __restrict__ out) {
    __shared__ __align__(16) unsigned short Ss[16][16];
    const int lane = threadIdx.x, j = lane / 8, r = lane % 8;
    for (int i = lane; i < 16 * 16; i += 32) Ss[i / 16][i % 16] = S[i];
    __syncwarp();
    unsigned d[4];
    ldmatrix_x4_trans(d, &Ss[r + 8 * (j % 2)][8 * (j / 2)]);
    for (int i = 0; i < 4; ++i) out[lane * 4 + i] = d[i];
}

extern "C" __global__ void __launch_bounds__(256)
round_bf16(const float* __restrict__ x, unsigned short* __restrict__ y, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (2 * i + 1 < n) {
        const unsigned both = pack_bf16x2(x[2 * i], x[2 * i + 1]);
        y[2 * i] = both & 0xffffu;
        y[2 * i + 1] = both >> 16;
    } else if (2 * i < n) {
        y[2 * i] = bf16_bits(x[2 * i]);
    }
}
