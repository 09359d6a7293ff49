// Tensor cores through inline PTX, as "how to write a fast matmul" posts write them: ldmatrix into registers,
// mma.sync.aligned.m16n8k16, fragment layouts from the PTX ISA's tables.  Unedited for the emulator.
#include <cuda_fp16.h>
#include <cuda_bf16.h>
#include <stdint.h>
#include <type_traits>

#define LDMATRIX_X4(R0, R1, R2, R3, addr)                                                        \
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"           \
                 : "=r"(R0), "=r"(R1), "=r"(R2), "=r"(R3) : "r"(addr))
#define LDMATRIX_X4_T(R0, R1, R2, R3, addr)                                                      \
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"     \
                 : "=r"(R0), "=r"(R1), "=r"(R2), "=r"(R3) : "r"(addr))
#define LDMATRIX_X2_T(R0, R1, addr)                                                              \
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0, %1}, [%2];\n"             \
                 : "=r"(R0), "=r"(R1) : "r"(addr))
#define HMMA16816(RD0, RD1, RD2, RD3, RA0, RA1, RA2, RA3, RB0, RB1, RC0, RC1, RC2, RC3)                       \
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "       \
                 "{%8, %9}, {%10, %11, %12, %13};\n"                                                          \
                 : "=f"(RD0), "=f"(RD1), "=f"(RD2), "=f"(RD3)                                                 \
                 : "r"(RA0), "r"(RA1), "r"(RA2), "r"(RA3), "r"(RB0), "r"(RB1), "f"(RC0), "f"(RC1), "f"(RC2), \
                   "f"(RC3))

__device__ __forceinline__ void bf16_mma16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// C [M, N] (float) = A [M, K] B [K, N], 16-bit row-major inputs.  4 warps per block, a 32 x 32 block tile, each
// warp 16 x 16 (two m16n8 tiles); K in steps of 16, ragged edges zero-filled in shared memory.
template <typename T>
__global__ void mma_gemm(const T* A, const T* B, float* C, int M, int N, int K) {
    __shared__ __align__(16) T As[32][16 + 8];
    __shared__ __align__(16) T Bs[16][32 + 8];
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, wm = warp / 2, wn = warp % 2;
    const int m0 = blockIdx.y * 32, n0 = blockIdx.x * 32;
    float acc[2][4] = {};
    for (int k0 = 0; k0 < K; k0 += 16) {
        for (int e = threadIdx.x; e < 32 * 16; e += blockDim.x) {
            const int r = e / 16, c = e % 16;
            As[r][c] = (m0 + r < M && k0 + c < K) ? A[(size_t)(m0 + r) * K + k0 + c] : T(0.0f);
        }
        for (int e = threadIdx.x; e < 16 * 32; e += blockDim.x) {
            const int r = e / 32, c = e % 32;
            Bs[r][c] = (k0 + r < K && n0 + c < N) ? B[(size_t)(k0 + r) * N + n0 + c] : T(0.0f);
        }
        __syncthreads();
        uint32_t a[4], b[4];
        const uint32_t a_addr = __cvta_generic_to_shared(&As[wm * 16 + lane % 16][(lane / 16) * 8]);
        LDMATRIX_X4(a[0], a[1], a[2], a[3], a_addr);
        if constexpr (std::is_same<T, half>::value) {
            const uint32_t b_addr = __cvta_generic_to_shared(&Bs[lane % 16][wn * 16 + (lane / 16) * 8]);
            LDMATRIX_X4_T(b[0], b[1], b[2], b[3], b_addr);
            for (int j = 0; j < 2; ++j)
                HMMA16816(acc[j][0], acc[j][1], acc[j][2], acc[j][3], a[0], a[1], a[2], a[3], b[2 * j], b[2 * j + 1],
                          acc[j][0], acc[j][1], acc[j][2], acc[j][3]);
        } else {
            for (int j = 0; j < 2; ++j) {
                const uint32_t b_addr = __cvta_generic_to_shared(&Bs[lane % 16][wn * 16 + j * 8]);
                LDMATRIX_X2_T(b[0], b[1], b_addr);
                bf16_mma16816(acc[j], a, b[0], b[1]);
            }
        }
        __syncthreads();
    }
    const int g = lane / 4, t = lane % 4;
    for (int j = 0; j < 2; ++j)
        for (int i = 0; i < 4; ++i) {
            const int m = m0 + wm * 16 + g + 8 * (i / 2), n = n0 + wn * 16 + j * 8 + 2 * t + i % 2;
            if (m < M && n < N) C[(size_t)m * N + n] = acc[j][i];
        }
}
template __global__ void mma_gemm<half>(const half*, const half*, float*, int, int, int);
template __global__ void mma_gemm<__nv_bfloat16>(const __nv_bfloat16*, const __nv_bfloat16*, float*, int, int, int);

// ---- one warp, one tile per shape, fragments gathered from global memory by the PTX ISA's tables (g = lane / 4,
// t = lane % 4).  A is row-major [16][K], B is given as B^T [8][K], C / D row-major [16][8].

// m16n8k8 tf32 (A: a0 (g, t), a1 (g+8, t), a2 (g, t+4), a3 (g+8, t+4); B: b0 (t, g), b1 (t+4, g)), inputs
// rounded with cvt.rna.tf32.f32.
__device__ __forceinline__ uint32_t to_tf32(float x) {
    uint32_t r;
    asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(r) : "f"(x));
    return r;
}
extern "C" __global__ void mma_tf32_m16n8k8(const float* A, const float* Bt, const float* C, float* D) {
    const int lane = threadIdx.x, g = lane / 4, t = lane % 4;
    const uint32_t a0 = to_tf32(A[g * 8 + t]), a1 = to_tf32(A[(g + 8) * 8 + t]);
    const uint32_t a2 = to_tf32(A[g * 8 + t + 4]), a3 = to_tf32(A[(g + 8) * 8 + t + 4]);
    const uint32_t b0 = to_tf32(Bt[g * 8 + t]), b1 = to_tf32(Bt[g * 8 + t + 4]);
    float d[4], c[4] = {C[g * 8 + 2 * t], C[g * 8 + 2 * t + 1], C[(g + 8) * 8 + 2 * t], C[(g + 8) * 8 + 2 * t + 1]};
    asm volatile("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
                 "{%10, %11, %12, %13};"
                 : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
                 : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1), "f"(c[0]), "f"(c[1]), "f"(c[2]), "f"(c[3]));
    D[g * 8 + 2 * t] = d[0], D[g * 8 + 2 * t + 1] = d[1], D[(g + 8) * 8 + 2 * t] = d[2], D[(g + 8) * 8 + 2 * t + 1] = d[3];
}

// m16n8k16 with f16 accumulators: C and D are two .f16x2 registers (rows g and g + 8, columns 2t, 2t + 1).
extern "C" __global__ void mma_f16acc_m16n8k16(const half* A, const half* Bt, const half* C, half* D) {
    const int lane = threadIdx.x, g = lane / 4, t = lane % 4;
    const uint32_t* A32 = reinterpret_cast<const uint32_t*>(A);  // two halves per 32-bit word
    const uint32_t* B32 = reinterpret_cast<const uint32_t*>(Bt);
    const uint32_t* C32 = reinterpret_cast<const uint32_t*>(C);
    uint32_t a[4] = {A32[g * 8 + t], A32[(g + 8) * 8 + t], A32[g * 8 + t + 4], A32[(g + 8) * 8 + t + 4]};
    uint32_t b[2] = {B32[g * 8 + t], B32[g * 8 + t + 4]};
    uint32_t c[2] = {C32[g * 4 + t], C32[(g + 8) * 4 + t]}, d[2];
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f16.f16.f16.f16 {%0, %1}, {%2, %3, %4, %5}, {%6, %7}, {%8, %9};"
                 : "=r"(d[0]), "=r"(d[1])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "r"(c[0]), "r"(c[1]));
    uint32_t* D32 = reinterpret_cast<uint32_t*>(D);
    D32[g * 4 + t] = d[0];
    D32[(g + 8) * 4 + t] = d[1];
}

// m16n8k32 s8 with .satfinite: four int8 per register (A: rows g / g+8, columns 4t.. and 4t+16..).
extern "C" __global__ void mma_s8_m16n8k32(const int8_t* A, const int8_t* Bt, const int* C, int* D) {
    const int lane = threadIdx.x, g = lane / 4, t = lane % 4;
    const uint32_t* A32 = reinterpret_cast<const uint32_t*>(A);  // rows of 32 bytes: 8 words
    const uint32_t* B32 = reinterpret_cast<const uint32_t*>(Bt);
    uint32_t a[4] = {A32[g * 8 + t], A32[(g + 8) * 8 + t], A32[g * 8 + t + 4], A32[(g + 8) * 8 + t + 4]};
    uint32_t b[2] = {B32[g * 8 + t], B32[g * 8 + t + 4]};
    int c[4] = {C[g * 8 + 2 * t], C[g * 8 + 2 * t + 1], C[(g + 8) * 8 + 2 * t], C[(g + 8) * 8 + 2 * t + 1]}, d[4];
    asm volatile("mma.sync.aligned.m16n8k32.row.col.satfinite.s32.s8.s8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%10,%11,%12,%13};"
                 : "=r"(d[0]), "=r"(d[1]), "=r"(d[2]), "=r"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "r"(c[0]), "r"(c[1]), "r"(c[2]),
                   "r"(c[3]));
    D[g * 8 + 2 * t] = d[0], D[g * 8 + 2 * t + 1] = d[1], D[(g + 8) * 8 + 2 * t] = d[2], D[(g + 8) * 8 + 2 * t + 1] = d[3];
}

// m8n8k4 f64 (DMMA, sm_80): A (g, t), B (t, g), C / D (g, 2t), (g, 2t + 1).
extern "C" __global__ void mma_f64_m8n8k4(const double* A, const double* Bt, const double* C, double* D) {
    const int lane = threadIdx.x, g = lane / 4, t = lane % 4;
    double d0, d1;
    asm volatile("mma.sync.aligned.m8n8k4.row.col.f64.f64.f64.f64 {%0, %1}, {%2}, {%3}, {%4, %5};"
                 : "=d"(d0), "=d"(d1)
                 : "d"(A[g * 4 + t]), "d"(Bt[g * 4 + t]), "d"(C[g * 8 + 2 * t]), "d"(C[g * 8 + 2 * t + 1]));
    D[g * 8 + 2 * t] = d0;
    D[g * 8 + 2 * t + 1] = d1;
}

// An 8 x 8 half tile through ldmatrix.x1, transposed in registers with movmatrix, written back with stmatrix.x1
// (sm_90), and a second copy written by stmatrix.x1.trans of the original fragment: both give the transpose.
extern "C" __global__ void movmatrix_transpose(const half* in, half* out, half* out_trans) {
    __shared__ __align__(16) half tile[8][8];
    __shared__ __align__(16) half res[8][8];
    __shared__ __align__(16) half res_t[8][8];
    const int lane = threadIdx.x;
    if (lane < 16) reinterpret_cast<uint32_t*>(&tile[0][0])[lane * 2] = reinterpret_cast<const uint32_t*>(in)[lane * 2],
                   reinterpret_cast<uint32_t*>(&tile[0][0])[lane * 2 + 1] = reinterpret_cast<const uint32_t*>(in)[lane * 2 + 1];
    __syncwarp();
    uint32_t frag, moved;
    asm volatile("ldmatrix.sync.aligned.m8n8.x1.shared.b16 {%0}, [%1];" : "=r"(frag)
                 : "r"((uint32_t)__cvta_generic_to_shared(&tile[lane % 8][0])));
    asm volatile("movmatrix.sync.aligned.m8n8.trans.b16 %0, %1;" : "=r"(moved) : "r"(frag));
    asm volatile("stmatrix.sync.aligned.m8n8.x1.shared.b16 [%0], {%1};"
                 :: "r"((uint32_t)__cvta_generic_to_shared(&res[lane % 8][0])), "r"(moved) : "memory");
    asm volatile("stmatrix.sync.aligned.m8n8.x1.trans.shared.b16 [%0], {%1};"
                 :: "r"((uint32_t)__cvta_generic_to_shared(&res_t[lane % 8][0])), "r"(frag) : "memory");
    __syncwarp();
    for (int e = lane; e < 64; e += 32) out[e] = res[e / 8][e % 8], out_trans[e] = res_t[e / 8][e % 8];
}
