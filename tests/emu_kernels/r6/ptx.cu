// Inline PTX as public CUDA code writes it (CUTLASS's and FasterTransformer's helpers, llm.c's packed bf16,
// the warp-aggregation idioms of NVIDIA's blog): special registers, read-only loads, 16-bit packing and
// conversion, bit tricks, a shuffle reduction and a predicate-guarded vote.  No #ifdef: the emulator runs
// them as written.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>

__device__ __forceinline__ unsigned lane_id() {
    unsigned r;
    asm volatile("mov.u32 %0, %%laneid;" : "=r"(r));
    return r;
}
__device__ __forceinline__ unsigned warp_id() {
    unsigned r;
    asm volatile("mov.u32 %0, %%warpid;" : "=r"(r));
    return r;
}
__device__ __forceinline__ unsigned sm_id() {
    unsigned r;
    asm volatile("mov.u32 %0, %%smid;" : "=r"(r));
    return r;
}
__device__ __forceinline__ unsigned lanemask_lt() {
    unsigned r;
    asm("mov.u32 %0, %%lanemask_lt;" : "=r"(r));
    return r;
}
__device__ __forceinline__ float4 ldg_nc_v4(const float4* ptr) {
    float4 v;
    asm volatile("ld.global.nc.v4.f32 {%0, %1, %2, %3}, [%4];"
                 : "=f"(v.x), "=f"(v.y), "=f"(v.z), "=f"(v.w)
                 : "l"(ptr));
    return v;
}
__device__ __forceinline__ int ldg_nc_s32(const int* ptr, int offset_bytes_4) {
    int v;
    asm volatile("ld.global.nc.L1::no_allocate.s32 %0, [%1+4];" : "=r"(v) : "l"(ptr + offset_bytes_4 - 1));
    return v;
}
__device__ __forceinline__ void st_global_v2(float* ptr, float a, float b) {
    asm volatile("st.global.v2.f32 [%0], {%1, %2};" :: "l"(ptr), "f"(a), "f"(b) : "memory");
}
// Two floats to a packed bf16 pair: `lo` in the low half (cvt puts its FIRST source in the upper half).
__device__ __forceinline__ uint32_t float2_to_bf16x2(float lo, float hi) {
    uint32_t r;
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
    return r;
}
__device__ __forceinline__ uint32_t float2_to_half2(float lo, float hi) {
    uint32_t r;
    asm("{ cvt.rn.f16x2.f32 %0, %2, %1; }\n" : "=r"(r) : "f"(lo), "f"(hi));
    return r;
}
__device__ __forceinline__ uint32_t pack_u16(uint16_t lo, uint16_t hi) {
    uint32_t r;
    asm("mov.b32 %0, {%1, %2};" : "=r"(r) : "h"(lo), "h"(hi));
    return r;
}
__device__ __forceinline__ void unpack_u16(uint32_t v, uint16_t& lo, uint16_t& hi) {
    asm("mov.b32 {%0, %1}, %2;" : "=h"(lo), "=h"(hi) : "r"(v));
}
// (a & b) ^ c in one instruction: the look-up table is (0xF0 & 0xCC) ^ 0xAA.
__device__ __forceinline__ uint32_t and_xor(uint32_t a, uint32_t b, uint32_t c) {
    uint32_t d;
    asm("lop3.b32 %0, %1, %2, %3, %4;" : "=r"(d) : "r"(a), "r"(b), "r"(c), "n"((0xF0 & 0xCC) ^ 0xAA));
    return d;
}
__device__ __forceinline__ uint32_t byte_swap(uint32_t x) {
    uint32_t d;
    asm("prmt.b32 %0, %1, 0, 0x0123;" : "=r"(d) : "r"(x));
    return d;
}
__device__ __forceinline__ uint32_t sign_bytes(uint32_t x) {  // each byte -> 0xFF if its top bit is set
    uint32_t d;
    asm("prmt.b32 %0, %1, %2, 0xBA98;" : "=r"(d) : "r"(x), "r"(0));
    return d;
}
__device__ __forceinline__ int bfe_s32(int x, unsigned pos, unsigned len) {
    int d;
    asm("bfe.s32 %0, %1, %2, %3;" : "=r"(d) : "r"(x), "r"(pos), "r"(len));
    return d;
}
__device__ __forceinline__ uint32_t rotl(uint32_t x, uint32_t n) {
    uint32_t d;
    asm("shf.l.wrap.b32 %0, %1, %1, %2;" : "=r"(d) : "r"(x), "r"(n));
    return d;
}
__device__ __forceinline__ float fma_rn(float a, float b, float c) {
    float d;
    asm("fma.rn.f32 %0, %1, %2, %3;" : "=f"(d) : "f"(a), "f"(b), "f"(c));
    return d;
}
__device__ __forceinline__ float warp_sum_ptx(float v) {
    // a butterfly reduction, one shfl.sync.bfly per step in a scoped block with a temporary register
    #pragma unroll
    for (int offset = 16; offset > 0; offset /= 2) {
        asm volatile("{\n\t.reg .f32 t;\n\t"
                     "shfl.sync.bfly.b32 t, %0, %1, 0x1f, 0xffffffff;\n\t"
                     "add.f32 %0, %0, t;\n\t}"
                     : "+f"(v) : "r"(offset));
    }
    return v;
}
__device__ __forceinline__ unsigned ballot_positive(float v) {
    unsigned r;
    asm volatile("{\n"
                 "  .reg .pred p;\n"
                 "  setp.gt.f32 p, %1, 0f00000000;\n"
                 "  vote.sync.ballot.b32 %0, p, 0xffffffff;\n"
                 "}\n" : "=r"(r) : "f"(v));
    return r;
}
__device__ __forceinline__ int clamp_to_byte(int v) {
    int r;
    asm("{\n .reg .pred lo, hi;\n setp.lt.s32 lo, %1, 0;\n setp.gt.s32 hi, %1, 255;\n mov.s32 %0, %1;\n"
        " @lo mov.s32 %0, 0;\n @hi mov.s32 %0, 255;\n}" : "=r"(r) : "r"(v));
    return r;
}
__device__ __forceinline__ void red_add(float* address, float v) {
    asm volatile("red.global.add.f32 [%0], %1;" :: "l"(address), "f"(v) : "memory");
}
__device__ __forceinline__ unsigned atom_inc(unsigned* address) {
    unsigned old;
    asm volatile("atom.global.add.u32 %0, [%1], 1;" : "=r"(old) : "l"(address) : "memory");
    return old;
}

// Who am I: lane, warp, a valid SM id, and the lanes below me.
extern "C" __global__ void ids(unsigned* lane, unsigned* warp, unsigned* sm, unsigned* below) {
    const int t = (threadIdx.y * blockDim.x) + threadIdx.x;
    lane[t] = lane_id();
    warp[t] = warp_id();
    sm[t] = sm_id();
    below[t] = lanemask_lt();
}

// float4 through the read-only path, reversed, stored as two float2 halves through st.global.v2.
extern "C" __global__ void copy_reversed(const float4* __restrict__ x, float* __restrict__ y, const int* idx, int* picked, int n4) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n4) return;
    const float4 v = ldg_nc_v4(x + i);
    st_global_v2(y + 4 * i, v.w, v.z);
    st_global_v2(y + 4 * i + 2, v.y, v.x);
    picked[i] = ldg_nc_s32(idx, i);
}

// llm.c-style packed 16-bit outputs: bf16x2 and half2 pairs, and the same bits taken apart again.
extern "C" __global__ void pack_pairs(const float2* x, uint32_t* bf, uint32_t* hf, uint16_t* lo, uint16_t* hi,
                                      uint32_t* repacked, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    bf[i] = float2_to_bf16x2(x[i].x, x[i].y);
    hf[i] = float2_to_half2(x[i].x, x[i].y);
    uint16_t l, h;
    unpack_u16(bf[i], l, h);
    lo[i] = l;
    hi[i] = h;
    repacked[i] = pack_u16(h, l);
}

// Bit tricks: lop3, prmt (byte swap and sign replication), bfe (signed), a funnel-shift rotation, fma.
extern "C" __global__ void bit_tricks(const uint32_t* a, const uint32_t* b, const uint32_t* c, uint32_t* out, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    out[6 * i + 0] = and_xor(a[i], b[i], c[i]);
    out[6 * i + 1] = byte_swap(a[i]);
    out[6 * i + 2] = sign_bytes(b[i]);
    out[6 * i + 3] = (uint32_t)bfe_s32((int)a[i], c[i] % 24, 8);
    out[6 * i + 4] = rotl(b[i], c[i]);
    out[6 * i + 5] = (uint32_t)clamp_to_byte((int)(a[i] % 600) - 200);
}

// Warp sums through shfl.sync, ballots through a predicate, atomics through red/atom, fma through PTX.
extern "C" __global__ void warp_ptx(const float* x, float* sums, unsigned* ballots, float* total, unsigned* ticket,
                                    float* fmas) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    const float s = warp_sum_ptx(x[i]);
    const unsigned b = ballot_positive(x[i]);
    if (lane_id() == 0) {
        sums[i / 32] = s;
        ballots[i / 32] = b;
    }
    red_add(total, x[i]);
    atom_inc(ticket);
    fmas[i] = fma_rn(x[i], 3.0f, 1.0f);
}

// Arithmetic as PTX defines it where C++ differs: wrap-around of signed mad/add, saturation, mul.hi and
// mul.wide, float compares that are false with a NaN (setp.ne) or true (setp.neu), a predicate combined
// with .and, cvt's round-to-nearest-even and clamping float -> int conversions, packed f16x2 fma and max.
extern "C" __global__ void ptx_arith(const int* a, const int* b, const float* x, const float* y, int* iout,
                                     float* fout, unsigned* hout, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    int mad, sat, hi, lo, rni, rzi;
    unsigned flags;
    asm("mad.lo.s32 %0, %1, %2, %3;" : "=r"(mad) : "r"(a[i]), "r"(b[i]), "r"(a[i]));
    asm("add.sat.s32 %0, %1, %2;" : "=r"(sat) : "r"(a[i]), "r"(b[i]));
    asm("mul.hi.s32 %0, %1, %2;" : "=r"(hi) : "r"(a[i]), "r"(b[i]));
    asm("{ .reg .b64 w; mul.wide.s32 w, %2, %3; mov.b64 {%0, %1}, w; }" : "=r"(lo), "=r"(hi) : "r"(a[i]), "r"(b[i]));
    asm("cvt.rni.s32.f32 %0, %1;" : "=r"(rni) : "f"(x[i]));
    asm("cvt.rzi.s32.f32 %0, %1;" : "=r"(rzi) : "f"(x[i] * 1e9f));
    asm("{\n .reg .pred ne, neu, both;\n .reg .u32 r;\n"
        " setp.ne.f32 ne, %1, %2;\n setp.neu.f32 neu, %1, %2;\n setp.lt.and.f32 both, %1, %2, ne;\n"
        " selp.u32 r, 1, 0, ne;\n mov.u32 %0, r;\n selp.u32 r, 2, 0, neu;\n add.u32 %0, %0, r;\n"
        " selp.u32 r, 4, 0, both;\n add.u32 %0, %0, r;\n}" : "=r"(flags) : "f"(x[i]), "f"(y[i]));
    float fsat;
    asm("add.sat.f32 %0, %1, %2;" : "=f"(fsat) : "f"(x[i]), "f"(y[i]));
    const __half2 hx = __floats2half2_rn(x[i], y[i]), hy = __floats2half2_rn(y[i], 0.5f);
    unsigned hfma, hmax;
    asm("fma.rn.f16x2 %0, %1, %2, %3;" : "=r"(hfma) : "r"(*(const unsigned*)&hx), "r"(*(const unsigned*)&hy),
        "r"(*(const unsigned*)&hx));
    asm("max.f16x2 %0, %1, %2;" : "=r"(hmax) : "r"(*(const unsigned*)&hx), "r"(*(const unsigned*)&hy));
    iout[6 * i + 0] = mad;
    iout[6 * i + 1] = sat;
    iout[6 * i + 2] = hi;
    iout[6 * i + 3] = lo;
    iout[6 * i + 4] = rni;
    iout[6 * i + 5] = rzi;
    fout[2 * i] = fsat;
    fout[2 * i + 1] = (float)flags;
    hout[2 * i] = hfma;
    hout[2 * i + 1] = hmax;
}

// Ordered loads and stores (ld.acquire / st.release / ld.volatile), a basic-asm barrier, a compiler barrier,
// and launch attributes that only constrain scheduling (__cluster_dims__, __maxnreg__).
extern "C" __global__ void __cluster_dims__(2, 1, 1) __maxnreg__(64) ordered_exchange(const unsigned* x, unsigned* slots,
                                                                                    float* f, unsigned* out) {
    __shared__ unsigned stage[256];
    const unsigned t = threadIdx.x, i = blockIdx.x * blockDim.x + t;
    asm volatile("st.release.gpu.global.u32 [%0], %1;" :: "l"(slots + i), "r"(x[i] * 3u) : "memory");
    stage[t] = x[i];
    asm volatile("bar.sync 0;");
    unsigned mine, neighbour;
    asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(mine) : "l"(slots + i) : "memory");
    asm volatile("" ::: "memory");
    neighbour = stage[(t + 1) % blockDim.x];
    float v;
    asm volatile("ld.volatile.global.f32 %0, [%1];" : "=f"(v) : "l"(f + i));
    out[i] = mine + neighbour + (unsigned)v;
}

// Address conversion to the global window, a prefetch, and int8 dot products through dp4a (signed and mixed).
extern "C" __global__ void int8_dots(const int* a, const int* b, int* out, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    const int* pa;
    asm("cvta.to.global.u64 %0, %1;" : "=l"(pa) : "l"(a + i));
    asm volatile("prefetch.global.L2 [%0];" :: "l"(b + i));
    int ss, us;
    asm("dp4a.s32.s32 %0, %1, %2, %3;" : "=r"(ss) : "r"(*pa), "r"(b[i]), "r"(i));
    asm("dp4a.u32.s32 %0, %1, %2, %3;" : "=r"(us) : "r"(*pa), "r"(b[i]), "r"(0));
    out[2 * i] = ss;
    out[2 * i + 1] = us;
}

// Symbolic operand names (%[name]), as some libraries write their asm.
extern "C" __global__ void named_operands(const int* a, const int* b, int* out) {
    const int i = threadIdx.x;
    int d;
    asm("mad.lo.s32 %[d], %[x], %[y], %[x];" : [d] "=r"(d) : [x] "r"(a[i]), [y] "r"(b[i]));
    out[i] = d;
}

// cvt's directed rounding modes when a double (or a big int) narrows to float.
extern "C" __global__ void cvt_directed(const double* x, const int* big, float* out, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float rn, rz, rm, rp, iz;
    asm("cvt.rn.f32.f64 %0, %1;" : "=f"(rn) : "d"(x[i]));
    asm("cvt.rz.f32.f64 %0, %1;" : "=f"(rz) : "d"(x[i]));
    asm("cvt.rm.f32.f64 %0, %1;" : "=f"(rm) : "d"(x[i]));
    asm("cvt.rp.f32.f64 %0, %1;" : "=f"(rp) : "d"(x[i]));
    asm("cvt.rz.f32.s32 %0, %1;" : "=f"(iz) : "r"(big[i]));
    out[5 * i] = rn; out[5 * i + 1] = rz; out[5 * i + 2] = rm; out[5 * i + 3] = rp; out[5 * i + 4] = iz;
}
