"""Round 26: CUDA as its users write it (a new batch of styles), run unedited through the emulator's CuPy API; and the
bf16 corners under -ftz=true.  What failed at the round's start, fixed in the emulator (never the kernel):

* Wrong numbers, silently, under -ftz=true: the bf16 math functions read a bf16 subnormal as 0 and flushed a
  subnormal result (hsqrt gave 0, hrsqrt inf, hlog / hlog2 -inf, hrcp(2^127) 0, hceil 0, hfloor -0).  cuda_bf16.hpp
  computes them in inline asm -- sqrt / rsqrt / rcp / ex2 / lg2 ``.approx.f32`` and, on sm_90, ``cvt.rpi / .rmi
  .bf16.bf16`` -- none with ``.ftz``, which -ftz=true does not add; the emulator now widens the bf16 bits to double
  by integer code before any float instruction sees them.  The same for a bf16 to an integer rounded up or down
  (``cvt.rpi / .rmi .s32.bf16``) and a float to bf16 or half rounded toward zero, down or up (``cvt.rz / .rm / .rp
  .bf16 / .f16 .f32``): a float subnormal compared as 0, so ``__float2bfloat16_rz(1e-39f)`` rounded up.
* Wrong numbers, silently: the bf16 saturating ops (``__hadd_sat / __hsub_sat / __hmul_sat / __hfma_sat`` and their
  bfloat162 forms) kept -0 and, under -ftz=true, negative subnormals.  PTX has no ``.sat`` for bf16: cuda_bf16.hpp
  rounds an ``fma.rn.bf16`` and clamps with ``max.bf16`` against +0 and ``min.bf16`` against 1 (its __hmax: "hmax(+0.0,
  -0.0) = +0.0"), so both give +0.
* Refused: nvcc's and NVRTC's options that change no value (``--extended-lambda`` and its ``-expt-`` alias,
  ``--expt-relaxed-constexpr``, ``-w``, ``--device-int128``, ``--dopt``, ``--diag-suppress``, ...) and NVRTC's long
  spellings ``--define-macro=``, ``--undefine-macro=``, ``--include-path=``, ``--pre-include=``.
* Did not build: ``__match_any_sync`` / ``__match_all_sync`` of a bool, char, short or enum value, and cooperative
  groups' ``match_any`` / ``labeled_partition`` of one (CUDA's overloads take them promoted to int).

Checked and found right on the round's start (not kept here: each test here fails there), in the emulator's CuPy API
against float64 NumPy: ``__hcmadd``'s order -- cuda_fp16.hpp and cuda_bf16.hpp both spell it real = fma(-a.y, b.y,
fma(a.x, b.x, c.x)), imaginary = fma(a.y, b.x, fma(a.x, b.y, c.y)), each an fma rounded once, which the emulator does
(round 25's test); bf16 hsin of a subnormal under -ftz=true (cuda_bf16.hpp returns it unchanged, as the emulator
does); thread_block_tile<16> with cg::reduce (plus, greater, less, a lambda) and meta_group_rank; tiled_partition(block,
8) at run time; coalesced_threads in a branch; __shfl_sync / _down / _xor with a width (float, double, half2, long
long); warp-aggregated atomics by __match_any_sync and __ffs; ballot compaction; atomics on double (shared, then
global), half, half2, bfloat16, bfloat162, unsigned long long (max, add, or), long long min, atomicAdd_block /
_system; atomicCAS loops (a double product, a float min, a 16-bit counter) and an atomicCAS / atomicExch spin lock;
extern __shared__ reused as float, int and double; templates with non-type parameters, constexpr recursion and if
constexpr under __launch_bounds__ (name_expressions, spaced as users write them); dynamic shared memory of a template
type sized at launch; device lambdas; grid-stride loops over size_t with grid_group; float4 / int2 / half2 / double2 /
uchar4 / short2 / int4 / ushort4 loads with __ldg and __restrict__; printf's %zu %hhd %a %+d %*d %.*f; a failed
assert as CUDA_ERROR_ASSERT; three kernels of one RawModule sharing a __device__ counter; __syncwarp with a ballot
mask; cg inclusive / exclusive scan, any / all / ballot; __reduce_*_sync; a shuffle transpose; device function
pointers, virtual functions and recursion; mixed-sign max / min; __builtin_assume / __assume; sincospif, normcdff,
rhypotf, norm3df, erfcinvf and company; a struct argument; cg::memcpy_async into dynamic shared memory.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import pytest

from minilora import emulator as emu
from minilora.emulator import RawModule

pytestmark = pytest.mark.skipif(not emu.is_available(), reason="the CUDA emulator needs g++")
f16, f32, f64, i32, u32 = np.float16, np.float32, np.float64, np.int32, np.uint32


def rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(2600 + seed)


@lru_cache(maxsize=None)
def module(source: str, options: tuple = (), name_expressions: tuple = ()) -> RawModule:
    return RawModule(code=source, options=options, name_expressions=name_expressions or None).compile()


def bf16_bits(t) -> np.ndarray:
    """A torch bfloat16 tensor's 16-bit patterns, as the kernels take and give them."""
    return t.view(__import__("torch").int16).numpy().view(np.uint16).copy()


# --------------------------------- bf16 math functions and saturation, directed roundings: one module, two kernels
SIXTEEN_BITS = r"""
#include <cuda_fp16.h>
#include <cuda_bf16.h>
// one row of results a value: the saturating ops of (x, y), then the math functions of x
extern "C" __global__ void bf16_functions(const __nv_bfloat16* a, const __nv_bfloat16* b, __nv_bfloat16* out, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    __nv_bfloat16 x = a[i], y = b[i];
    __nv_bfloat162 xy = __halves2bfloat162(x, y), yy = __bfloat162bfloat162(y);
    __nv_bfloat16 row[] = {__hadd_sat(x, y), __hsub_sat(x, y), __hmul_sat(x, y), __hfma_sat(x, y, y),
                           __hadd2_sat(xy, yy).x, __hmul2_sat(xy, yy).x, __hfma2_sat(xy, yy, yy).x,
                           hsqrt(x), hrsqrt(x), hrcp(x), hlog2(x), hlog(x), hexp2(x), hceil(x), hfloor(x)};
    for (int k = 0; k < 15; ++k) out[15 * i + k] = row[k];
}
// a float to bf16 and half in the three directed modes; a bf16 to int rounded up and down
extern "C" __global__ void directed(const float* x, unsigned short* to16, const __nv_bfloat16* b, int* to_int, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    const float f = x[i];
    unsigned short row[] = {__bfloat16_as_ushort(__float2bfloat16_rz(f)), __bfloat16_as_ushort(__float2bfloat16_rd(f)),
                            __bfloat16_as_ushort(__float2bfloat16_ru(f)), __half_as_ushort(__float2half_rz(f)),
                            __half_as_ushort(__float2half_rd(f)), __half_as_ushort(__float2half_ru(f))};
    for (int k = 0; k < 6; ++k) to16[6 * i + k] = row[k];
    to_int[2 * i] = __bfloat162int_ru(b[i]);
    to_int[2 * i + 1] = __bfloat162int_rd(b[i]);
}
"""


@pytest.mark.parametrize("options", [(), ("-ftz=true",)])
def test_bf16_saturation_and_math_functions_keep_subnormals_and_clamp_to_plus_zero(options):
    torch = pytest.importorskip("torch")
    x = torch.tensor([2.0**-130, -(2.0**-130), 2.0**127, 3 * 2.0**-128, -0.0, -(2.0**-129), 0.75, -130.0],
                     dtype=torch.bfloat16)
    y = torch.tensor([2.0**-131, 2.0**-131, 1.0, -(2.0**-133), -0.0, -(2.0**-130), 0.5, 0.25], dtype=torch.bfloat16)
    out = np.zeros(15 * len(x), np.uint16)
    module(SIXTEEN_BITS, options).get_function("bf16_functions")(
        (1,), (32,), (bf16_bits(x), bf16_bits(y), out, i32(len(x))))
    a, b = x.double(), y.double()
    bf = lambda t: t.to(torch.bfloat16)                                      # (rounded once, subnormals kept)
    clamp = lambda t: bf(t).double().nan_to_num(0.0).clamp(0, 1) + 0.0      # (+ 0.0: -0 is +0)
    columns = [clamp(a + b), clamp(a - b), clamp(a * b), clamp(a * b + b), clamp(a + b), clamp(a * b),
               clamp(a * b + b), a.sqrt(), a.rsqrt().float(), 1 / a, a.log2(), a.log(), a.exp2(), a.ceil(),
               a.floor()]
    want = np.stack([bf16_bits(bf(c)) for c in columns], axis=1).ravel()
    np.testing.assert_array_equal(canonical_nan(out), canonical_nan(want))


def canonical_nan(bits: np.ndarray) -> np.ndarray:
    """bf16 bit patterns with every NaN as CUDA's canonical 0x7fff (torch keeps a NaN's sign and payload)."""
    return np.where((bits & 0x7FFF) > 0x7F80, 0x7FFF, bits)




def bf16_directed(x: np.ndarray) -> np.ndarray:
    """bf16 bits of float32 x toward zero, down, up: the high 16 bits, one unit further from 0 where bits drop."""
    bits = x.view(u32)
    toward_zero, inexact, negative = bits >> 16, (bits & 0xFFFF) != 0, (bits >> 31) == 1
    return np.stack([toward_zero, toward_zero + (inexact & negative), toward_zero + (inexact & ~negative)], 1)


def test_directed_roundings_to_and_from_16_bits_read_float_subnormals_under_ftz_as_the_headers_cvt():
    torch = pytest.importorskip("torch")
    x = np.array([1e-39, -(2.0**-140), 2.0**-149, -1e-39, 3 * 2.0**-131, 1 / 3], f32)
    b = torch.tensor([2.0**-130, -(2.0**-130), 3 * 2.0**-128, -(2.0**-133), 1.5, -2.5], dtype=torch.bfloat16)
    to16, to_int = np.zeros(6 * len(x), np.uint16), np.zeros(2 * len(x), i32)
    module(SIXTEEN_BITS, ("-ftz=true",)).get_function("directed")(
        (1,), (32,), (x, to16, bf16_bits(b), to_int, i32(len(x))))
    got = to16.reshape(-1, 6)
    np.testing.assert_array_equal(got[:, :3], bf16_directed(x))
    tiny = np.abs(x) < 2.0**-25  # (below half of half's least subnormal: 0 or one unit of 2^-24, by the mode)
    sign = np.where(x < 0, 0x8000, 0)
    np.testing.assert_array_equal(got[tiny, 3:], np.stack([sign, sign | (x < 0), sign | (x > 0)], 1)[tiny])
    exact = b.double().numpy()
    np.testing.assert_array_equal(to_int.reshape(-1, 2), np.stack([np.ceil(exact), np.floor(exact)], 1))


# ------------------------------------------------------- nvcc's and NVRTC's options, as users pass them to CuPy
OPTIONS = r"""
template <typename F>
__device__ void for_each(float* y, int n, F f) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) y[i] = f(y[i], i);
}
// N_ITEMS and SHIFT come from --define-macro, __half from --pre-include=cuda_fp16.h
extern "C" __global__ void apply(float* y, float scale, int* info) {
    auto affine = [=] __device__ (float v, int i) { return scale * v + (float)(i % 3); };
    for_each(y, N_ITEMS, affine);
#ifdef DROPPED
    info[0] = -1;
#else
    info[0] = SHIFT;
#endif
    info[1] = (int)__hadd(__float2half(1.0f), __float2half(2.0f));
}
"""


# (every spelling in one build: -D's and -include's long forms, lambdas' and constexpr's switches, diagnostics)
OPTION_SPELLINGS = ("--extended-lambda", "-expt-extended-lambda", "--expt-relaxed-constexpr",
                    "--define-macro=N_ITEMS=300", "--define-macro", "SHIFT=7", "--define-macro=DROPPED",
                    "--undefine-macro=DROPPED", "--pre-include=cuda_fp16.h", "-w", "--disable-warnings",
                    "--device-int128", "--extra-device-vectorization", "--dopt=on", "--diag-suppress=177", "-err-no",
                    "--split-compile=0")


def test_nvcc_and_nvrtc_options_that_change_no_value_are_accepted():
    y, info = rng(1).standard_normal(300).astype(f32), np.zeros(2, i32)
    want = f32(1.5) * y + (np.arange(300) % 3).astype(f32)
    module(OPTIONS, OPTION_SPELLINGS).get_function("apply")((2,), (64,), (y, f32(1.5), info))
    np.testing.assert_array_equal(y, want)
    assert info.tolist() == [7, 3]


# ------------------------------------------------- warp matches and shuffles of bool, char, short and enum values
SMALL_TYPES = r"""
#include <cooperative_groups.h>
#include <cooperative_groups/reduce.h>
namespace cg = cooperative_groups;
enum Parity { EVEN, ODD };
// each row: what one warp-level call gives every lane, for values narrower than int (promoted to int, as in C++)
extern "C" __global__ void small_types(const int* x, int* out) {
    const int lane = threadIdx.x;
    const short s = (short)x[lane];
    const char c = (char)(x[lane] & 3);
    const bool positive = x[lane] > 0;
    const Parity parity = (Parity)(x[lane] & 1);
    auto warp = cg::tiled_partition<32>(cg::this_thread_block());
    int row[] = {__popc(__match_any_sync(0xffffffff, c)), __popc(__match_any_sync(0xffffffff, parity)),
                 __popc(__match_any_sync(0xffffffff, positive)), __popc(warp.match_any(positive)),
                 (int)cg::labeled_partition(warp, parity).size(), __shfl_xor_sync(0xffffffff, c, 1),
                 warp.shfl(s, 3), __reduce_add_sync(0xffffffff, s)};
    for (int k = 0; k < 8; ++k) out[32 * k + lane] = row[k];
}
"""


def test_warp_matches_take_bool_char_short_and_enum_values_promoted_to_int():
    x = rng(2).integers(-50, 50, 32).astype(i32)
    out = np.zeros(8 * 32, i32)
    module(SMALL_TYPES).get_function("small_types")((1,), (32,), (x, out))
    got, lanes = out.reshape(8, 32), np.arange(32)
    c, parity, positive = x & 3, x & 1, x > 0
    peers = lambda key: [(key == key[k]).sum() for k in range(32)]
    np.testing.assert_array_equal(got[:5], [peers(c), peers(parity), peers(positive), peers(positive), peers(parity)])
    np.testing.assert_array_equal(got[5], c[lanes ^ 1])
    np.testing.assert_array_equal(got[6], np.full(32, x[3]))
    np.testing.assert_array_equal(got[7], np.full(32, x.sum()))
