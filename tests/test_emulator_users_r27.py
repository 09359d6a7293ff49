"""Round 27: round 26's leftovers (saturation's -0, atomicAdd on a float with subnormals, bf16 htanh under -ftz=true),
and a new batch of CUDA written as well-known public code writes it, run unedited through the emulator's CuPy API.
What failed at the round's start, fixed in the emulator (never the kernel):

* Wrong numbers, silently: a float or __half saturated to [0, 1] kept -0 -- ``__saturatef(-0.0f)``, ``__hadd_sat(-0,
  -0)``, ``__hmul_sat(-0.5, 0)`` and their half2 forms, and inline PTX's ``add / sub / mul / fma .sat.f32``, ``.sat
  .f16`` and ``cvt.sat.f32.f32``.  libdevice's __nv_saturatef clamps "to [+0.0, 1.0]"; the SASS .SAT modifier
  saturates "to (+0.0f,1.0f), with NaN converted to +0.0f"; round 26 made bf16's (a max.bf16 against +0) give +0
  already.  Under -ftz=true ``__saturatef`` of a negative subnormal gave -0 (DAZ read it as 0 and kept it) and of a
  positive one kept it, where the GPU's cvt.ftz.sat flushes both to +0.
* Wrong numbers, silently: atomicAdd on a float kept subnormals on global memory (and, under -ftz=true, flushed them
  on shared memory).  The PTX ISA (atom): "The atom.add.f32 operation without .noftz, flushes subnormal inputs and
  results to sign-preserving zero on global memory but supports subnormal inputs and results and doesn't flush them to
  zero on shared memory" -- whatever -ftz says; red.add.f32 the same; f64 is noftz by default.  So
  ``atomicAdd(&g, 1e-40f)`` leaves a global 0 at 0, a sum that falls below 2^-126 is +-0 there, and the same adds on
  shared memory keep every bit.  libcu++'s cuda::atomic_ref<float>::fetch_add / fetch_sub is the same instruction.

Checked, and now explicit: bf16 htanh under -ftz=true of a subnormal gives +-0.  CUDA documents htanh as rounded to
nearest (tanhf of the float, not tanh.approx), and that float code's first instruction flushes the input; the emulator
gave +-0 at the round's start only because glibc's tanhf did arithmetic on its tiny input under DAZ -- now the input is
flushed by integer code first (``__emu::flushed_under_ftz``).

Checked and found right on the round's start (not kept here: each test here fails there), in the emulator's CuPy API
against float64 NumPy: the CUDA samples' matrixMulCUDA<BLOCK_SIZE> (16 and 8, by name_expressions), transposeDiagonal
with the padded tile and diagonal block order (square and not), oddEvenMergeSortShared (both directions, key-value),
integrateBodies' n-body with float4 positions, rsqrtf and #pragma unroll 4 over a dynamic shared tile; a weighted
histogram in shared float atomics merged by global ones; a Jacobi 5-point stencil with a shared halo and a device
lambda; a 2-D convolution with a __constant__ 5x5 mask (get_global is CuPy's 1-D view: fill it with mask.ravel());
Caffe's im2col_gpu_kernel<float> with CUDA_KERNEL_LOOP (padding, stride, dilation); a CSR SpMV, one warp a row; the
Game of Life with wrap-around; an argmax by one 64-bit atomicMax of (order-preserving float bits, ~index); a Kahan sum
(its compensation survives the build: 1 + 2000 x 1e-8 per thread).  llm.c's layernorm_forward_kernel3 (cg::reduce over
a tiled_partition<32>, __ldcs / __stcs), the online softmax with cg::greater, gelu_forward through Packed128
(alignas(16), int4 __ldcs), encoder_forward, permute / unpermute, crossentropy_softmax_backward, adamw with lerp by
two fmas, matmul_backward_bias; flash-attention-minimal's forward (online softmax, l and m in global memory, __expf,
extern shared Qi/Kj/Vj/S).  nvcuda::wmma: bf16 m16n16k16 with a column-major B and float accumulate under an alpha /
beta epilogue (integer inputs: exact, so every rounding agrees), half m32n8k16 with a half accumulator, a ReLU on the
fragment and a column-major store, a 32x32 block tile of four warps from skewed shared arrays; a pointer 2 bytes off
alignment, an ldm that is no multiple of 16 bytes are refused by name (the emulator's mma sums exactly and rounds
once, its documented choice: a GPU's tensor-core adders may differ in the last bits, so only exact sums are compared
bit for bit).  CUB: BlockReduce<RAKING> with cub::Max and Sum over a partial block, BlockLoad<TRANSPOSE> with
BlockScan::ExclusiveSum compacting a block, a BlockRadixSort of float keys with int values descending (with -0 and
+0), WarpReduce<double> per warp with valid items.  Warps: __syncwarp(0x0000ffff) / (0xffff0000) in the two halves of
a branch (racecheck passes), half-warp shuffles with 16-lane masks and width 16, a segmented warp sum from
__ballot_sync heads and __clz, votes under __activemask() in a branch, the pre-Volta volatile unroll (lockstep, as a
converged warp; racecheck names it, round 3's test), __syncwarp with a mask missing the caller refused;
__syncthreads_count / _and / _or, %laneid and %lanemask_lt in inline PTX, __popcll / __brevll / __ffsll / __clzll /
__umulhi / __umul24 / __usad / __umul64hi, device memset / memcpy; a shift by 32, x / 0 and INT_MIN / -1 stop the
launch naming the construct; __fdividef gives 0 for a divisor above 2^126, as CUDA documents.  Texture objects are
refused by name (round 5's test).
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import pytest

from minilora import emulator as emu
from minilora.emulator import RawModule

pytestmark = pytest.mark.skipif(not emu.is_available(), reason="the CUDA emulator needs g++")
f16, f32, i32 = np.float16, np.float32, np.int32
BOTH_BUILDS = pytest.mark.parametrize("options", [(), ("-ftz=true",)], ids=["default", "ftz"])


@lru_cache(maxsize=None)
def module(source: str, options: tuple = ()) -> RawModule:
    return RawModule(code=source, options=options).compile()


def float_bits(x) -> np.ndarray:
    return np.asarray(x, f32).view(np.uint32)


# ------------------------------------------------- saturation to [+0, 1], htanh, and atomicAdd on a float
# (one module for the file: two builds, the default and -ftz=true)
KERNELS = r"""
#include <cuda_fp16.h>
#include <cuda_bf16.h>
#include <cuda/atomic>
// one row a pair (x, y): x + y, x - y, x * y and x * y + y saturated by the scalar ops, then by the half2 ops
extern "C" __global__ void half_saturation(const __half2* pairs, __half* out, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    const __half2 p = pairs[i], y = __half2half2(p.y);
    __half* row = out + 8 * i;
    row[0] = __hadd_sat(p.x, p.y), row[1] = __hsub_sat(p.x, p.y), row[2] = __hmul_sat(p.x, p.y);
    row[3] = __hfma_sat(p.x, p.y, p.y);
    row[4] = __hadd2_sat(p, y).x, row[5] = __hsub2_sat(p, y).x, row[6] = __hmul2_sat(p, y).x;
    row[7] = __hfma2_sat(p, y, y).x;
}
// __saturatef and inline PTX's .sat forms of a float, and bf16 htanh
extern "C" __global__ void float_saturation(const float* a, const float* b, float* out, const __nv_bfloat16* h,
                                            __nv_bfloat16* tanh_out, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float x = a[i], y = b[i], add, mul, fma, cvt;
    asm("add.sat.f32 %0, %1, %2;" : "=f"(add) : "f"(x), "f"(y));
    asm("mul.sat.f32 %0, %1, %2;" : "=f"(mul) : "f"(x), "f"(y));
    asm("fma.rn.sat.f32 %0, %1, %2, %3;" : "=f"(fma) : "f"(x), "f"(y), "f"(y));
    asm("cvt.sat.f32.f32 %0, %1;" : "=f"(cvt) : "f"(x));
    float row[] = {__saturatef(x), add, mul, fma, cvt};
    for (int k = 0; k < 5; ++k) out[5 * i + k] = row[k];
    tanh_out[i] = htanh(h[i]);
}
// slot i of `global` and of a shared copy start at start[i]; one thread adds v[i] to each: by atomicAdd (then
// atomicAdd_block and inline PTX's red.global.add.f32 for the last two global slots), or by libcu++'s atomic_ref
// fetch_add or fetch_sub of -v; one double likewise, once
__device__ void add(float* p, float v, int how, int slot, int n) {
    if (how == 1) cuda::atomic_ref<float, cuda::thread_scope_device>(*p).fetch_add(v);
    else if (how == 2) cuda::atomic_ref<float, cuda::thread_scope_block>(*p).fetch_sub(-v);
    else if (slot == n - 2) atomicAdd_block(p, v);
    else if (slot == n - 1 && !__isShared(p))
        asm volatile("red.global.add.f32 [%0], %1;" : : "l"(p), "f"(v) : "memory");
    else atomicAdd(p, v);
}
extern "C" __global__ void add_once(float* global, const float* start, const float* v, float* shared_after,
                                    double* global64, double v64, int n, int how) {
    __shared__ float s[16];
    int i = threadIdx.x;
    if (i < n) s[i] = start[i];
    __syncthreads();
    if (i < n) {
        add(&global[i], v[i], how, i, n);
        add(&s[i], v[i], how, i, n);
    }
    if (i == 0) atomicAdd(global64, v64);
    __syncthreads();
    if (i < n) shared_after[i] = s[i];
}
"""


@BOTH_BUILDS
def test_half_saturating_ops_clamp_minus_zero_to_plus_zero(options):
    x = np.array([-0.0, 0.0, -0.5, -(2.0**-24), 0.75, np.nan, -0.0, 2.0], f16)
    y = np.array([-0.0, -0.0, 0.0, 0.0, 0.5, 1.0, 0.25, -0.25], f16)
    out = np.full(8 * len(x), np.nan, f16)
    module(KERNELS, options).get_function("half_saturation")((1,), (32,), (np.stack([x, y], 1), out, i32(len(x))))
    a, b = x.astype(np.float64), y.astype(np.float64)
    clamp = lambda t: np.nan_to_num(np.clip(t.astype(f16).astype(np.float64), 0, 1), nan=0.0) + 0.0  # (-0 is +0)
    want = np.stack([clamp(c) for c in (a + b, a - b, a * b, a * b + b, a + b, a - b, a * b, a * b + b)], 1).ravel()
    np.testing.assert_array_equal(out.view(np.uint16), want.astype(f16).view(np.uint16))


@BOTH_BUILDS
def test_float_saturation_and_inline_ptx_sat_give_plus_zero_and_htanh_flushes_under_ftz(options):
    torch = pytest.importorskip("torch")
    x = np.array([-0.0, -1e-40, 1e-40, -0.0, 2.0, np.nan, -3.0, 0.5], f32)
    y = np.array([-0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.25], f32)
    h = torch.tensor([2.0**-130, -(2.0**-130), 0.5, -0.0, 2.0**-126, -3.0, 1e-3, -40.0], dtype=torch.bfloat16)
    h_bits = h.view(torch.int16).numpy().view(np.uint16).copy()
    out, tanh_bits = np.full(5 * len(x), np.nan, f32), np.zeros(len(x), np.uint16)
    module(KERNELS, options).get_function("float_saturation")(
        (1,), (32,), (x, y, out, h_bits, tanh_bits, i32(len(x))))
    ftz = bool(options)
    a, b = x.astype(np.float64), y.astype(np.float64)
    if ftz:  # (the .ftz forms: subnormal inputs are +-0; -ftz=true makes __saturatef cvt.ftz.sat)
        a = np.where(np.abs(a) < 2.0**-126, 0.0 * np.sign(a), a)
    clamp = lambda t: np.nan_to_num(np.clip(t.astype(f32), 0, 1), nan=0.0) + np.float32(0.0)
    saturatef = clamp(a)
    raw = x.astype(np.float64)  # inline PTX's .sat without .ftz keeps subnormals in every build
    want = np.stack([saturatef, clamp(raw + b), clamp(raw * b), clamp(raw * b + b), clamp(raw)], 1).ravel()
    np.testing.assert_array_equal(float_bits(out), float_bits(want))
    wide = h.double()
    if ftz:  # tanhf's float code flushes a bf16 subnormal input: tanh(+-0) = +-0
        wide = torch.where(wide.abs() < 2.0**-126, wide * 0.0, wide)
    want_tanh = wide.tanh().to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    np.testing.assert_array_equal(tanh_bits, want_tanh)


# ------------------------------------------------------------------------- atomicAdd on a float and subnormals


@BOTH_BUILDS
@pytest.mark.parametrize("how", [0, 1, 2], ids=["atomicAdd", "atomic_ref_fetch_add", "atomic_ref_fetch_sub"])
def test_atomic_add_on_a_float_flushes_subnormals_on_global_memory_and_keeps_them_on_shared(options, how):
    tiny = 2.0**-126
    start = np.array([0.0, 0.0, 3e-39, tiny, -tiny, 1.0, 1e-40, 0.0, -2e-40], f32)
    v = np.array([1e-40, -1e-40, tiny, -0.75 * tiny, 0.75 * tiny, 1e-40, 1e-40, 2e-40, 2e-40], f32)
    global_, shared_after, global64 = start.copy(), np.full_like(start, np.nan), np.zeros(1)
    module(KERNELS, options).get_function("add_once")(
        (1,), (32,), (global_, start, v, shared_after, global64, np.float64(1e-310), i32(len(start)), i32(how)))
    flushed = lambda t: np.where(np.abs(t) < tiny, np.copysign(0.0, t), t)
    want_global = flushed((flushed(start.astype(np.float64)) + flushed(v.astype(np.float64))).astype(f32))
    np.testing.assert_array_equal(float_bits(global_), float_bits(want_global))
    np.testing.assert_array_equal(float_bits(shared_after), float_bits((start.astype(np.float64) + v).astype(f32)))
    assert global64[0] == 1e-310  # (atom.add.f64 keeps subnormals: noftz by default)
