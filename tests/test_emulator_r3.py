"""CUDA written the way tutorials, the CUDA samples and NVIDIA's blog posts write it, run through the
emulator as a CuPy user would (RawModule + get_function, NumPy arrays), each matched to a float64 NumPy
reference -- warp primitives, cooperative groups, atomics, block votes, math and bit intrinsics, half and
bfloat16 rounding, __device__ globals, structs by value.  The kernels are in tests/emu_kernels/r3/.
"""
from __future__ import annotations

import re
from fractions import Fraction
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest

from minilora import emulator as emu
from minilora.emulator import KernelFault, RawModule

ml_dtypes = pytest.importorskip("ml_dtypes")
special = pytest.importorskip("scipy.special")
R3 = Path(__file__).parent / "emu_kernels" / "r3"
pytestmark = pytest.mark.skipif(not emu.is_available(), reason="the CUDA emulator needs g++")
rng = np.random.default_rng(44)
bf16 = ml_dtypes.bfloat16
REDUCE6 = ["reduce6<256, false>", "reduce6<64, false>", "reduce6<64, true>"]


@lru_cache(maxsize=None)
def module(filename: str) -> RawModule:
    return RawModule(path=R3 / filename, name_expressions=REDUCE6 if filename == "misc.cu" else None)


def fn(filename: str, name: str):
    return module(filename).get_function(name)


def zeros(n, dtype=np.int32):
    return np.zeros(n, dtype)


# ------------------------------------------------------------------------------------------------
# Warp primitives
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("width", [4, 8, 16, 32])
def test_shuffles_with_a_width_below_32(width):
    x = rng.integers(-9, 9, 64).astype(np.int32)
    y = zeros(64)
    fn("warp.cu", "segment_scan")((1,), (64,), (x, y, np.int32(width)))
    np.testing.assert_array_equal(y, x.reshape(-1, width).cumsum(1).ravel())
    v = rng.standard_normal(64).astype(np.float32)
    by_index, by_xor, down = (zeros(64, np.float32) for _ in range(3))
    fn("warp.cu", "segment_rotate")((1,), (64,), (v, by_index, by_xor, down, np.int32(width)))
    seg, lane = v.reshape(-1, width), np.arange(width)
    np.testing.assert_array_equal(by_index, seg[:, (lane + 3) % width].ravel())  # the source lane wraps in its segment
    np.testing.assert_array_equal(by_xor, seg[:, lane ^ 1].ravel())
    np.testing.assert_array_equal(down, seg[:, np.where(lane + 2 < width, lane + 2, lane)].ravel())


def test_ballot_any_all_and_popc_per_warp():
    n = 100
    x = rng.standard_normal(n).astype(np.float32)
    ballots, anys, alls, counts = zeros(4, np.uint32), zeros(4), zeros(4), zeros(4)
    fn("warp.cu", "vote")((1,), (128,), (x, ballots, anys, alls, counts, np.int32(n)))
    warps = np.pad(x, (0, 28)).reshape(4, 32)
    bits = ((warps > 0) * (1 << np.arange(32, dtype=np.uint64))).sum(1)
    np.testing.assert_array_equal(ballots, bits.astype(np.uint32))
    np.testing.assert_array_equal(anys, (warps > 1).any(1))
    np.testing.assert_array_equal(alls, (warps > -2).all(1))
    np.testing.assert_array_equal(counts, (warps > 0).sum(1))


def test_activemask_is_the_lanes_of_the_same_branch():
    out = zeros(64, np.uint32)
    fn("warp.cu", "active_mask")((1,), (64,), (out,))
    lane = np.arange(64)
    in_branch = [sum(1 << (k % 32) for k in lane[w * 32:(w + 1) * 32] if (k % 3 == 0) == (t % 3 == 0))
                 for w in range(2) for t in lane[w * 32:(w + 1) * 32]]
    np.testing.assert_array_equal(out, in_branch)  # was "every lane not yet exited" (0xfffffffe for lane 1)


def test_match_any_groups_lanes_by_key_and_aggregates_per_group():
    keys = rng.integers(0, 4, 32).astype(np.int32)
    vals = rng.integers(0, 100, 32).astype(np.int32)
    masks, sums = zeros(32, np.uint32), zeros(4)
    fn("warp.cu", "match_any")((1,), (32,), (keys, masks, sums, vals))
    np.testing.assert_array_equal(masks, [sum(1 << j for j in range(32) if keys[j] == k) for k in keys])
    np.testing.assert_array_equal(sums, [vals[keys == k].sum() for k in range(4)])


@pytest.mark.parametrize("keys", [np.full(32, 7, np.int32), np.arange(32, dtype=np.int32)])
def test_match_all_sets_the_predicate(keys):
    out, pred = zeros(32, np.uint32), np.full(32, -1, np.int32)
    fn("warp.cu", "match_all")((1,), (32,), (keys, out, pred))
    same = bool((keys == keys[0]).all())
    np.testing.assert_array_equal(out, 0xFFFFFFFF if same else 0)
    np.testing.assert_array_equal(pred, int(same))


def test_reduce_sync_add_min_max_and_or():
    x = rng.integers(-1000, 1000, 64).astype(np.int32)
    x[5] = 2**31 - 1  # the sum wraps around, as on the GPU
    adds, mins, maxs, ands, ors = zeros(64), zeros(64), zeros(64), zeros(64, np.uint32), zeros(64, np.uint32)
    fn("warp.cu", "warp_reduce_ops")((1,), (64,), (x, adds, mins, maxs, ands, ors))
    w = x.reshape(2, 32)
    wrapped = (w.astype(np.int64).sum(1) + 2**31) % 2**32 - 2**31
    np.testing.assert_array_equal(adds, np.repeat(wrapped, 32))
    np.testing.assert_array_equal(mins, np.repeat(w.min(1), 32))  # signed: the int overload
    np.testing.assert_array_equal(maxs, np.repeat(w.max(1), 32))
    np.testing.assert_array_equal(ands, np.repeat(np.bitwise_and.reduce(w.view(np.uint32), 1), 32))
    np.testing.assert_array_equal(ors, np.repeat(np.bitwise_or.reduce(w.view(np.uint32), 1), 32))


def test_syncwarp_with_a_half_warp_mask():
    x = rng.standard_normal(32).astype(np.float32)
    y = zeros(32, np.float32)
    fn("warp.cu", "half_warp_exchange")((1,), (32,), (x, y), racecheck=True)
    np.testing.assert_array_equal(y, np.concatenate([x[:16][::-1], -x[16:]]))


@pytest.mark.parametrize("name, tile", [("cg_sum32", 32), ("cg_sum16", 16)])
@pytest.mark.parametrize("n, block", [(1000, 256), (3000, 1024), (50, 64)])
def test_cooperative_groups_tiled_partition_and_reduce(name, tile, n, block):
    x = rng.standard_normal(n).astype(np.float32)
    blocks = -(-n // block)
    out = np.full(blocks, np.nan, np.float32)
    fn("warp.cu", name)((blocks,), (block,), (x, out, np.int32(n)))
    want = np.pad(x, (0, blocks * block - n)).reshape(blocks, block).astype(np.float64).sum(1)
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)


def test_cooperative_groups_greater_less_and_meta_group():
    x = rng.integers(-99, 99, 64).astype(np.int32)
    mx, mn, meta = zeros(64), zeros(64), zeros(64)
    fn("warp.cu", "cg_minmax")((1,), (64,), (x, mx, mn, meta))
    t = x.reshape(4, 16)
    np.testing.assert_array_equal(mx, np.repeat(t.max(1), 16))
    np.testing.assert_array_equal(mn, np.repeat(t.min(1), 16))
    np.testing.assert_array_equal(meta, np.repeat(np.arange(4) * 100 + 4, 16))


def test_grid_group_without_a_cooperative_launch_is_refused():
    with pytest.raises(KernelFault, match=r"grid\.sync\(\) .* needs a cooperative launch .*enable_cooperative_groups"):
        fn("warp.cu", "grid_needs_coop")((2,), (32,), (zeros(64, np.float32),))


# ------------------------------------------------------------------------------------------------
# Atomics
# ------------------------------------------------------------------------------------------------
def test_atomic_add_float_double_int_and_unsigned_long_long():
    n = 5000
    x = rng.integers(-100, 100, n)  # integers: every order of float additions gives the same exact sum
    fs, ds, is_, us = zeros(1, np.float32), zeros(1, np.float64), zeros(1), zeros(1, np.uint64)
    fn("atomics.cu", "atomic_sums")((7,), (128,), (x.astype(np.float32), x.astype(np.float64), x.astype(np.int32),
                                              fs, ds, is_, us, np.int32(n)))
    assert fs[0] == ds[0] == is_[0] == x.sum() and us[0] == (x + 1000).sum()


def test_atomic_cas_loops_for_float_max_and_double_add_and_int_max_min():
    n = 3000
    x = rng.standard_normal(n).astype(np.float32)
    mx, total = np.full(1, -np.inf, np.float32), zeros(1, np.float64)
    imax, imin = np.full(1, -2**31, np.int32), np.full(1, 2**31 - 1, np.int32)
    fn("atomics.cu", "cas_loops")((-(-n // 256),), (256,), (x, mx, total, imax, imin, np.int32(n)))
    assert mx[0] == x.max()
    np.testing.assert_allclose(total[0], x.astype(np.float64).sum(), rtol=1e-12)
    scaled = np.trunc(x * np.float32(100))
    assert imax[0] == scaled.max() and imin[0] == scaled.min()


def test_atomic_inc_dec_wrap_and_exch():
    ring, down, slots, exch = zeros(1, np.uint32), zeros(1, np.uint32), zeros(10), np.array([-1, 0], np.int32)
    fn("atomics.cu", "counters")((1,), (95,), (ring, down, slots, exch))
    assert ring[0] == 95 % 10  # atomicInc(p, 9): 0..9, then 0
    np.testing.assert_array_equal(slots, [10] * 5 + [9] * 5)
    v = 0
    for _ in range(95):  # atomicDec(p, 4): ((v == 0) | (v > 4)) ? 4 : v - 1
        v = 4 if v == 0 or v > 4 else v - 1
    assert down[0] == v and exch[1] == 95 and 0 <= exch[0] < 95


def test_shared_memory_histogram():
    n = 100_000
    data = rng.integers(0, 256, n).astype(np.uint8)
    bins = zeros(256, np.uint32)
    fn("atomics.cu", "histo")((16,), (256,), (data, bins, np.int32(n)))
    np.testing.assert_array_equal(bins, np.bincount(data, minlength=256))


def test_atomic_add_on_half_bfloat16_and_their_pairs():
    h, h2, b, b2 = zeros(1, np.float16), zeros(2, np.float16), zeros(1, bf16), zeros(2, bf16)
    fn("atomics.cu", "atomic_16bit")((2,), (64,), (h, h2, b, b2))  # did not compile: no 16-bit atomicAdd
    assert h[0] == 128 and list(h2) == [128, 256] and float(b[0]) == 128 and [float(v) for v in b2] == [128, -128]


def test_atomic_or_xor_and_bitsets():
    n = 200
    idx = rng.choice(1024, n, replace=False).astype(np.int32)
    bits, x = zeros(32, np.uint32), np.array([0, 0xFFFFFFFF], np.uint32)
    fn("atomics.cu", "bitset")((1,), (256,), (idx, bits, x, np.int32(n)))
    want = np.zeros(32, np.uint64)
    np.bitwise_or.at(want, idx // 32, np.left_shift(np.uint64(1), (idx % 32).astype(np.uint64)))
    np.testing.assert_array_equal(bits, want.astype(np.uint32))
    flips = np.bincount(np.arange(n) % 32, minlength=32) % 2
    assert x[0] == int((flips * (1 << np.arange(32, dtype=np.uint64))).sum()) and x[1] == 0


# ------------------------------------------------------------------------------------------------
# Math functions, conversions and bit intrinsics
# ------------------------------------------------------------------------------------------------
def test_float_math_functions_match_float64():
    edges = [0, 0.5, 1, 1.5, 2, -1, -0.5, 2.5, 3.999, 1e-3]
    x = np.concatenate([rng.standard_normal(500) * 3, edges]).astype(np.float32)
    n = len(x)
    out = zeros((n, 16), np.float32)
    fn("math.cu", "float_math")((-(-n // 128),), (128,), (x, out.ravel(), np.int32(n)))  # sincospif etc. did not compile
    d = x.astype(np.float64)
    with np.errstate(divide="ignore"):
        cols = [special.erf(d), special.erfc(d), np.exp(d), np.exp(d), 1 / np.sqrt(np.abs(d)), d / 3,
                np.sin(np.pi * d), np.cos(np.pi * d), np.sin(np.pi * d), np.cos(np.pi * d), special.ndtr(d),
                special.erfinv(d / 4), np.clip(d, 0, 1), np.exp2(d), np.log1p(np.abs(d)), np.tanh(d)]
    for k, want in enumerate(cols):
        np.testing.assert_allclose(out[:, k], want, rtol=3e-6, atol=1e-7, err_msg=f"column {k}")
    integers, halves = np.isin(x, [0, 1, 2, -1]), np.isin(x, [0.5, 1.5, -0.5, 2.5])
    assert (out[integers, 6] == 0).all() and (out[halves, 7] == 0).all()  # sinpi/cospi exact zeros, as CUDA


def test_erfinv_erfcinv_normcdfinv_against_scipy():
    code = r'''
    extern "C" __global__ void inverses(const float* p, float* a, float* b, float* c, int n) {
        int i = blockIdx.x * blockDim.x + threadIdx.x;
        if (i < n) { a[i] = erfinvf(2.0f * p[i] - 1.0f); b[i] = erfcinvf(p[i]); c[i] = normcdfinvf(p[i]); }
    }'''
    p = np.concatenate([rng.uniform(0, 1, 400), [1e-30, 1e-10, 1e-5, 0.5, 1 - 1e-7, 0, 1]]).astype(np.float32)
    n = len(p)
    a, b, c = (zeros(n, np.float32) for _ in range(3))
    RawModule(code=code).get_function("inverses")((-(-n // 128),), (128,), (p, a, b, c, np.int32(n)))
    d = p.astype(np.float64)
    np.testing.assert_allclose(a, special.erfinv((2 * p - 1).astype(np.float32).astype(np.float64)), rtol=2e-6)
    np.testing.assert_allclose(b, special.erfcinv(d), rtol=2e-6)  # keeps its precision for p near 0
    np.testing.assert_allclose(c, special.ndtri(d), rtol=2e-6)


def test_fmaf_rounds_once():
    n = 2000
    a = (1 + rng.integers(1, 2**12, n) * 2.0**-12).astype(np.float32)
    b = (1 + rng.integers(1, 2**12, n) * 2.0**-12).astype(np.float32)
    c = -(a.astype(np.float64) * b).astype(np.float32)  # a*b + c is the product's rounding error
    fused, split = zeros(n, np.float32), zeros(n, np.float32)
    fn("math.cu", "fma_once")((-(-n // 256),), (256,), (a, b, c, fused, split, np.int32(n)))
    np.testing.assert_array_equal(fused, (a.astype(np.float64) * b + c).astype(np.float32))
    np.testing.assert_array_equal(split, a * b + c)
    assert (fused != split).sum() > n // 5


def test_fminf_fmaxf_ignore_a_single_nan():
    a = np.array([1, np.nan, np.nan, -0.0, 2], np.float32)
    b = np.array([np.nan, 3, np.nan, 0.0, -5], np.float32)
    mn, mx = zeros(5, np.float32), zeros(5, np.float32)
    fn("math.cu", "minmax_nan")((1,), (32,), (a, b, mn, mx, np.int32(5)))
    np.testing.assert_array_equal(mn, np.fmin(a, b))
    np.testing.assert_array_equal(mx, np.fmax(a, b))


def saturated(r: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """What the GPU's cvt gives: NaN -> 0, out of range -> the nearest limit."""
    return np.where(np.isnan(r), 0, np.clip(np.nan_to_num(r, posinf=hi, neginf=lo), lo, hi))


def test_float_to_int_conversions_round_and_saturate_as_the_gpu():
    x = np.array([0.5, 1.5, 2.5, -0.5, -1.5, -2.7, 2.7, 3e9, -3e9, np.nan, np.inf, -np.inf, 2147483520.0, 4e9,
                  5e9, 1e19, -1e19], np.float32)
    n = len(x)
    rn, rz, rd, ru, bits = zeros(n), zeros(n), zeros(n), zeros(n), zeros(n)
    urn, ll = zeros(n, np.uint32), zeros(n, np.int64)
    fn("math.cu", "to_int")((1,), (32,), (x, rn, rz, rd, ru, urn, bits, ll, np.int32(n)))
    d, i32 = x.astype(np.float64), (-2**31, 2**31 - 1)
    np.testing.assert_array_equal(rn, saturated(np.round(d), *i32))  # ties to even; NaN was INT_MIN (x86)
    np.testing.assert_array_equal(rz, saturated(np.trunc(d), *i32))
    np.testing.assert_array_equal(rd, saturated(np.floor(d), *i32))
    np.testing.assert_array_equal(ru, saturated(np.ceil(d), *i32))
    np.testing.assert_array_equal(urn, saturated(np.round(d), 0, 2**32 - 1))
    np.testing.assert_array_equal(bits, x.view(np.int32))
    assert ll[13] == 4_000_000_000 and ll[15] == 2**63 - 1 and ll[16] == -2**63 and ll[9] == 0


def _s32(v: int) -> int:
    v &= 0xFFFFFFFF
    return v - (1 << 32) if v >> 31 else v


def test_bit_intrinsics():
    n = 300
    x = rng.integers(0, 2**32, n, dtype=np.uint64).astype(np.uint32)
    y = rng.integers(0, 2**32, n, dtype=np.uint64).astype(np.uint32)
    x[:3] = [0, 1, 0x80000000]
    popc, clz, ffs, mulhi, dp4a = zeros(n), zeros(n), zeros(n), zeros(n), zeros(n)
    brev, umulhi, perm, funnel, sad = (zeros(n, np.uint32) for _ in range(5))
    fn("math.cu", "bit_ops")((-(-n // 128),), (128,), (x, y, popc, clz, ffs, brev, umulhi, mulhi, perm, funnel, sad, dp4a,
                                                  np.int32(n)))
    X, Y = [int(v) for v in x], [int(v) for v in y]
    np.testing.assert_array_equal(popc, [bin(v).count("1") for v in X])
    np.testing.assert_array_equal(clz, [32 - v.bit_length() for v in X])
    np.testing.assert_array_equal(ffs, [(v & -v).bit_length() for v in X])
    np.testing.assert_array_equal(brev, [int(f"{v:032b}"[::-1], 2) for v in X])
    np.testing.assert_array_equal(umulhi, [(a * b) >> 32 for a, b in zip(X, Y)])
    np.testing.assert_array_equal(mulhi, [_s32((_s32(a) * _s32(b)) >> 32) for a, b in zip(X, Y)])

    def byte_perm(a, b, s):
        both = (b << 32) | a
        return sum(((both >> (8 * ((s >> (4 * k)) & 7))) & 0xFF) << (8 * k) for k in range(4))

    def funnels(lo, hi, shift):
        both, shift = (hi << 32) | lo, shift & 31
        return (((both << shift) >> 32) & 0xFFFFFFFF) ^ ((both >> shift) & 0xFFFFFFFF)

    def c_rem(a, m):  # C's % truncates toward zero
        return abs(a) % m * (1 if a >= 0 else -1)

    def sbyte(v, k):
        b = (v >> (8 * k)) & 0xFF
        return b - 256 if b > 127 else b

    np.testing.assert_array_equal(perm, [byte_perm(a, b, 0x5140) for a, b in zip(X, Y)])
    np.testing.assert_array_equal(funnel, [funnels(a, b, i % 40) for i, (a, b) in enumerate(zip(X, Y))])
    np.testing.assert_array_equal(sad, [abs(c_rem(_s32(a), 1000) - c_rem(_s32(b), 1000)) + 7 for a, b in zip(X, Y)])
    np.testing.assert_array_equal(dp4a, [_s32(sum(sbyte(a, k) * sbyte(b, k) for k in range(4)) + 5)
                                         for a, b in zip(X, Y)])


def test_unsigned_hash_and_signed_overflow_wrap_around():
    n = 100
    seed = rng.integers(0, 2**32, n, dtype=np.uint64).astype(np.uint32)
    out, iout = zeros(n, np.uint32), zeros(n)
    fn("math.cu", "wraparound")((1,), (128,), (seed, out, iout, np.int32(n)))
    h, m32 = seed.astype(np.uint64), 0xFFFFFFFF
    h ^= h >> 16
    h = (h * 0x7FEB352D) & m32
    h ^= h >> 15
    h = (h * 0x846CA68B) & m32
    h ^= h >> 16
    np.testing.assert_array_equal(out, h)
    product = ((seed.astype(np.uint64) * 2654435761) & m32).astype(np.uint32).view(np.int32).astype(np.int64)
    np.testing.assert_array_equal(iout, (product + 2**31 - 1 + 2**31) % 2**32 - 2**31)


# ------------------------------------------------------------------------------------------------
# half and bfloat16: round to nearest even, one rounding per operation
# ------------------------------------------------------------------------------------------------
def exact_fma16(a, b, c, dtype):
    """a*b + c computed exactly (Fractions), rounded once to `dtype` (nearest, ties to even)."""
    if not (np.isfinite(a) and np.isfinite(b) and np.isfinite(c)):
        return dtype(float(a) * float(b) + float(c))
    e = Fraction(float(a)) * Fraction(float(b)) + Fraction(float(c))
    with np.errstate(over="ignore"):
        g = dtype(float(e))
        if not np.isfinite(g):
            return g
        near = [g, np.nextafter(g, dtype(np.inf)), np.nextafter(g, dtype(-np.inf))]
    near = [q for q in near if np.isfinite(q)]
    return min(near, key=lambda q: (abs(Fraction(float(q)) - e), int(np.array(q).view(np.uint16)) & 1))


def test_half_and_bfloat16_conversions_and_fma_round_once():
    # The last rows round differently if a*b+c goes through a float32 fmaf first (a tie, broken the
    # wrong way): half 3 * 683 + 2^-14 = 2049 + 2^-14 -> 2050; bfloat16 3 * 99 + 2^-20 = 297 + 2^-20 -> 298.
    edges_x = [65504, 65519.99, 65520, 1e6, -1e6, np.inf, -np.inf, np.nan, 2**-25, 2**-24, 3 * 2**-26, 1 + 2**-11,
               1 + 3 * 2**-11, 3, 3]
    edges_y = [1] * 13 + [683, 99]
    edges_z = [0] * 13 + [2**-14, 2**-20]
    x = np.concatenate([rng.standard_normal(300) * 100, rng.standard_normal(300) * 1e-6, edges_x]).astype(np.float32)
    y = np.concatenate([rng.standard_normal(600) * 30, edges_y]).astype(np.float32)
    z = np.concatenate([rng.standard_normal(600) * 1000, edges_z]).astype(np.float32)
    n = len(x)
    h, hfma, hadd = (zeros(n, np.float16) for _ in range(3))
    b, bfma = zeros(n, bf16), zeros(n, bf16)
    back, flags = zeros(n, np.float32), zeros(n)
    fn("math.cu", "half_ops")((-(-n // 256),), (256,), (x, y, z, h, hfma, hadd, b, bfma, back, flags, np.int32(n)))
    with np.errstate(over="ignore"):
        xh, yh, zh = x.astype(np.float16), y.astype(np.float16), z.astype(np.float16)
        xb, yb, zb = x.astype(bf16), y.astype(bf16), z.astype(bf16)
    np.testing.assert_array_equal(h.view(np.uint16)[~np.isnan(xh)], xh.view(np.uint16)[~np.isnan(xh)])
    np.testing.assert_array_equal(b.view(np.uint16)[~np.isnan(xb)], xb.view(np.uint16)[~np.isnan(xb)])
    assert np.isnan(h[np.isnan(x)]).all() and np.isnan(b[np.isnan(x)]).all()
    with np.errstate(over="ignore", invalid="ignore"):
        np.testing.assert_array_equal(hadd, xh + yh)
    want_h = np.array([exact_fma16(*v, np.float16) for v in zip(xh, yh, zh)], np.float16)
    want_b = np.array([exact_fma16(*v, bf16) for v in zip(xb, yb, zb)], bf16)
    np.testing.assert_array_equal(hfma, want_h)
    np.testing.assert_array_equal(bfma.view(np.uint16)[~np.isnan(want_b)], want_b.view(np.uint16)[~np.isnan(want_b)])
    assert hfma[-2] == 2050 and float(bfma[-1]) == 298
    np.testing.assert_array_equal(back, xh.astype(np.float32) + xb.astype(np.float32))
    sign_inf_h = np.where(np.isinf(xh), np.sign(xh), 0).astype(int)
    sign_inf_b = np.where(np.isinf(xb.astype(np.float32)), np.sign(x), 0).astype(int)
    np.testing.assert_array_equal(flags, np.isnan(xh) + 2 * sign_inf_h + 4 * sign_inf_b)  # __hisinf: -1, 0 or 1


def test_directed_rounding_to_half_and_bfloat16():
    x = np.concatenate([rng.standard_normal(3000) * 100,
                        [1e6, -1e6, 65519, -65519, 0, -0.0, 2**-30, -2**-30, np.inf]]).astype(np.float32)
    n = len(x)
    rz, rd, ru = (zeros(n, np.float16) for _ in range(3))
    brz, hi = zeros(n, bf16), zeros(n)
    fn("math.cu", "half_convert_modes")((-(-n // 256),), (256,), (x, rz, rd, ru, brz, hi, np.int32(n)))
    d = x.astype(np.float64)
    assert (rd.astype(np.float64) <= d).all() and (ru.astype(np.float64) >= d).all()
    assert (np.abs(rz.astype(np.float64)) <= np.abs(d)).all() and (np.abs(brz.astype(np.float64)) <= np.abs(d)).all()
    finite = np.isfinite(x) & (np.abs(x) < 65504)
    gap = ru.astype(np.float64)[finite] - rd.astype(np.float64)[finite]
    exact = x[finite].astype(np.float16).astype(np.float32) == x[finite]
    assert (gap[exact] == 0).all() and (gap[~exact] > 0).all()
    spacing = np.spacing(np.abs(rd[finite]).astype(np.float16)).astype(np.float64)
    assert (gap[~exact] <= 2 * spacing[~exact]).all()  # neighbours, not far apart
    assert rz[n - 9] == 65504 and ru[n - 9] == np.inf and rd[n - 8] == -np.inf and rz[n - 8] == -65504
    assert ru[n - 3] == 2**-24 and rd[n - 2] == -2**-24 and rd[n - 3] == 0 and ru[n - 2] == 0
    with np.errstate(over="ignore"):
        want_hi = saturated(np.trunc(x.astype(np.float16).astype(np.float64)), -2**31, 2**31 - 1)
    np.testing.assert_array_equal(hi, want_hi)


# ------------------------------------------------------------------------------------------------
# Block votes, the unrolled last warp, templates, shared-memory views, globals, structs, vectors
# ------------------------------------------------------------------------------------------------
def test_syncthreads_count_and_or():
    n = 1000
    x = rng.standard_normal(n).astype(np.float32)
    out = zeros(12)
    fn("misc.cu", "block_votes")((4,), (256,), (x, out, np.int32(n)))
    blocks = np.pad(x, (0, 24)).reshape(4, 256)
    np.testing.assert_array_equal(out.reshape(4, 3), np.stack([(blocks > 0).sum(1), (blocks > -3).all(1),
                                                               (blocks > 2).any(1)], 1))


@pytest.mark.parametrize("expression, block", [("reduce6<256, false>", 256), ("reduce6<64, false>", 64)])
def test_templated_reduction_with_the_last_warp_unrolled(expression, block):
    n, grid = 100_003, 37
    x = rng.standard_normal(n).astype(np.float32)
    out = np.full(grid, np.nan, np.float32)
    fn("misc.cu", expression)((grid,), (block,), (x, out, np.uint32(n)), shared_mem=block * 4, racecheck=True)
    np.testing.assert_allclose(out.astype(np.float64).sum(), x.astype(np.float64).sum(), rtol=1e-4, atol=1e-3)


def test_unrolled_last_warp_without_a_read_write_split_is_reported_by_racecheck():
    """`sdata[tid] += sdata[tid + 16]; __syncwarp();` still races: on a GPU it usually works by luck."""
    x = np.ones(128, np.float32)
    out = zeros(1, np.float32)
    with pytest.raises(emu.RaceError, match=r"read-after-write hazard on __shared__ .* kernel 'reduce6<64, true>'"):
        fn("misc.cu", "reduce6<64, true>")((1,), (64,), (x, out, np.uint32(128)), shared_mem=256, racecheck=True)


def test_extern_shared_with_two_typed_views():
    n = 300
    keys = rng.integers(-5, 5, n).astype(np.int32)
    vals = rng.standard_normal(n).astype(np.float32)
    out = zeros(n, np.float32)
    fn("misc.cu", "two_views")((1,), (128,), (keys, vals, out, np.int32(n)), shared_mem=8 * n)
    np.testing.assert_array_equal(out, vals[::-1] * keys.astype(np.float32))


@pytest.mark.parametrize("sanitize", [False, True])
def test_constant_and_device_globals_through_get_global(sanitize):
    mod = RawModule(path=R3 / "misc.cu", name_expressions=REDUCE6, sanitize=sanitize)  # its own globals
    n = 100
    x = rng.standard_normal(n).astype(np.float32)
    y = zeros(n, np.float32)
    mod.get_global("coeffs")[:] = [1, 2, 3, 4]
    table, counter = mod.get_global("table"), mod.get_global("counter")  # __device__: was "no __constant__"
    np.testing.assert_array_equal(table, np.arange(1, 9))  # the initializer
    assert counter.dtype == np.int32 and counter[0] == 0  # zero, as C++ and PTX start a __device__ variable
    mod.get_function("poly")((1,), (128,), (x, y, np.int32(n)))
    d = x.astype(np.float64)
    np.testing.assert_allclose(y, 1 + 2 * d + 3 * d**2 + 4 * d**3 + np.arange(n) % 8 + 1, rtol=1e-5, atol=1e-5)
    assert counter[0] == n  # the kernel's atomicAdd, seen by the host (also from the sanitizer's child process)
    counter[0] = 1000
    mod.get_function("poly")((1,), (128,), (x, y, np.int32(n)))
    assert counter[0] == 1000 + n


@pytest.mark.parametrize("sanitize", [False, True])
def test_struct_argument_by_value_from_a_structured_scalar(sanitize):
    mod = RawModule(path=R3 / "misc.cu", name_expressions=REDUCE6, sanitize=sanitize)
    n = 50
    x = rng.standard_normal(n).astype(np.float32)
    y = zeros(n, np.float32)
    params = np.dtype([("scale", np.float32), ("offset", np.int32), ("shift", np.float64), ("n", np.int32)], align=True)
    assert params.itemsize == 24  # larger than the 16 bytes an argument had: "could not broadcast"
    mod.get_function("with_struct")((1,), (64,), (np.array((2.0, 3, 0.5, n), dtype=params)[()], x, y))
    np.testing.assert_allclose(y, 2 * x.astype(np.float64) + 3.5, rtol=1e-6)
    with pytest.raises(TypeError, match="is a 24-byte struct"):
        mod.get_function("with_struct")((1,), (64,), (np.float32(2), x, y))


def test_vector_types_ldg_and_make_float4():
    n4 = 50
    x = rng.standard_normal(4 * n4).astype(np.float32)
    y = zeros(4 * n4, np.float32)
    pairs = rng.integers(-100, 100, (n4, 2)).astype(np.int32)
    pixels = rng.integers(0, 256, (n4, 4)).astype(np.uint8)
    sums, gray = zeros(n4), zeros(n4, np.float32)
    fn("misc.cu", "vectors")((1,), (64,), (x, y, pairs, sums, pixels, gray, np.int32(n4)))
    q = x.reshape(-1, 4)
    np.testing.assert_array_equal(y.reshape(-1, 4), np.stack([q[:, 3], q[:, 2], q[:, 1], 2 * q[:, 0]], 1))
    np.testing.assert_array_equal(sums, pairs.sum(1))
    np.testing.assert_allclose(gray, pixels[:, :3] @ [0.299, 0.587, 0.114], rtol=1e-5)


def test_device_assert_names_the_thread_and_printf_formats(capfd):
    x = np.ones(100, np.float32)
    fn("misc.cu", "check_positive")((1,), (128,), (x, np.int32(100)))
    x[57] = -1
    with pytest.raises(KernelFault, match=r"assertion `x\[i\] > 0\.0f` failed at misc\.cu:\d+ .* thread \(57,0,0\)"):
        fn("misc.cu", "check_positive")((1,), (128,), (x, np.int32(100)))
    fn("misc.cu", "say")((2,), (32,), (np.array([0, 1.5], np.float32), None))
    assert "block 1: x=1.500000 int=42 hex=ff str=hi ptr_is_set=1 e=1.235e+04" in capfd.readouterr().out


def test_three_dimensional_grid_and_block():
    nx, ny, nz = 37, 19, 11
    out = np.full(nx * ny * nz, -1, np.int32)
    fn("misc.cu", "index3d")((5, 3, 4), (8, 8, 4), (out, np.int32(nx), np.int32(ny), np.int32(nz)))
    z, y, x = np.meshgrid(np.arange(nz), np.arange(ny), np.arange(nx), indexing="ij")
    np.testing.assert_array_equal(out, (x + 1000 * y + 1000000 * z).ravel())


@pytest.mark.parametrize("grid, block", [(2048, 1024), (3, 32)])
def test_grid_stride_loop_with_large_and_small_grids(grid, block):
    n = 1 << 18
    x = rng.standard_normal(n).astype(np.float32)
    y = np.ones(n, np.float32)
    fn("misc.cu", "saxpy")((grid,), (block,), (np.int32(n), np.float32(2), x, y))
    np.testing.assert_allclose(y, 2 * x.astype(np.float64) + 1, rtol=1e-6)


@pytest.mark.parametrize("grid, block, match", [
    ((1, 65536), (32,), r"grid \(1, 65536, 1\) of kernel 'saxpy' exceeds CUDA's limits"),
    ((1,), (1025,), r"block \(1025, 1, 1\) .* at most 1024 threads per block"),
    ((1,), (32, 1, 65), r"z <= 64"),
])
def test_launch_limits_are_errors(grid, block, match):
    with pytest.raises(ValueError, match=match):
        fn("misc.cu", "saxpy")(grid, block, (np.int32(1), np.float32(1), zeros(1, np.float32), zeros(1, np.float32)))


def test_static_shared_memory_over_48_kib_is_refused():
    with pytest.raises(emu.CompileError, match=r"uses too much shared data .*48 KiB limit \(52000 bytes, reached at 'big'"):
        fn("misc.cu", "too_much_static")((1,), (256,), (zeros(1024, np.float32),))


# ------------------------------------------------------------------------------------------------
# A read just before a shared array
# ------------------------------------------------------------------------------------------------
NEIGHBOUR = r'''
extern "C" __global__ void left_difference(const float* x, float* y) {
    __shared__ float tile[128];
    extern __shared__ float dyn[];
    int t = threadIdx.x, i = blockIdx.x * blockDim.x + t;
    tile[t] = x[i];
    dyn[t] = x[i];
    __syncthreads();
    y[i] = tile[t] - tile[t - 1];  // BUG: thread 0 reads tile[-1]
}
extern "C" __global__ void left_difference_dyn(const float* x, float* y) {
    extern __shared__ float dyn[];
    int t = threadIdx.x, i = blockIdx.x * blockDim.x + t;
    dyn[t] = x[i];
    __syncthreads();
    y[i] = t > 0 ? dyn[t] - dyn[t - 1] : dyn[t];
    if (t == 0 && blockIdx.x == 1) y[i] = dyn[-1];  // BUG
}
'''


@pytest.mark.parametrize("workers", [1, 2])
def test_a_read_just_before_a_shared_array_faults(workers):
    """It read canary bytes (0xA5A5A5A5, -2.9e-16 as a float) without an error outside sanitize=True: odd
    blocks now place their arrays at the start of their pages, against the lower guard."""
    mod = RawModule(code=NEIGHBOUR)
    x, y = rng.standard_normal(256).astype(np.float32), zeros(256, np.float32)
    with pytest.raises(KernelFault, match=r"block \(1,0,0\) .*: out-of-bounds __shared__ access: a read at byte -4 of "
                                          r"__shared__ 'tile' \(512 bytes, declared at left_difference\.cu:3\), before its start"):
        mod.get_function("left_difference")((2,), (128,), (x, y), shared_mem=512, workers=workers)
    with pytest.raises(KernelFault, match=r"a read at byte -4 of extern __shared__ memory \(shared_mem=512 bytes"):
        mod.get_function("left_difference_dyn")((2,), (128,), (x, y), shared_mem=512, workers=workers)
    y[:] = 0
    mod.get_function("left_difference_dyn")((1,), (128,), (x[:128], y[:128]), shared_mem=512, workers=workers)
    np.testing.assert_array_equal(y[:128], np.concatenate([x[:1], np.diff(x[:128])]))  # the arrays still work


# ------------------------------------------------------------------------------------------------
# threadFenceReduction: __threadfence and a __device__ ticket counter; printf's %p and widths
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("workers", [1, 2])
def test_last_block_reduction_with_threadfence_and_a_device_counter(workers):
    n, grid = 200_000, 64
    x = rng.integers(-8, 8, n).astype(np.float32)  # integers: exact in any block order
    partial, out = zeros(grid, np.float32), zeros(1, np.float32)
    mod = module("fence.cu")
    for _ in range(2):  # the last block resets the counter, so the kernel can run again
        out[:] = np.nan
        mod.get_function("sum_last_block")((grid,), (256,), (x, partial, out, np.int32(n)), workers=workers)
        assert out[0] == x.sum()
    assert mod.get_global("retirement_count")[0] == 0


def test_printf_pointer_and_field_widths(capfd):
    x = np.array([3.14159], np.float32)
    fn("fence.cu", "print_pointer")((1,), (32,), (x,))
    out = capfd.readouterr().out
    # %p prints the device address (a fenced copy's, not the NumPy array's), 16-byte aligned: the copy ends within
    # 16 bytes of its guard page (round 11), so its alignment is the lowest set bit of its size rounded up to 16
    address = re.search(r"x at 0x([0-9a-f]+), ", out)
    assert address and int(address.group(1), 16) % 16 == 0 and " 3.14|7   |0000beef|z|-5|3" in out


def test_half_math_and_integer_conversions():
    x = np.concatenate([rng.standard_normal(200) * 3, [0.5, 1.5, 2.5, -2.5, 40000, -40000]]).astype(np.float16)
    n = len(x)
    out = np.full((n, 8), np.nan, np.float16)
    fn("extras.cu", "half_math")((-(-n // 64),), (64,), (x, out.ravel(), np.int32(n)))  # did not compile
    d = x.astype(np.float64)
    with np.errstate(over="ignore"):
        want = [np.sin(d), np.cos(d), np.exp2(d), np.floor(d), np.round(d), np.maximum(d * d - 1, 0), d * 3,
                np.clip(np.round(d), -32768, 32767).astype(np.float16).astype(np.float64) + 7000]
    for k, w in enumerate(want):  # each computed in float and rounded once to half
        with np.errstate(over="ignore"):
            w = w.astype(np.float32).astype(np.float16)
        np.testing.assert_array_equal(out[:, k], w, err_msg=f"column {k}")


def test_cache_hint_loads_brevll_and_clock():
    n = 40
    x = rng.standard_normal(n).astype(np.float32)
    y, rev, ticks = zeros(n, np.float32), zeros(n, np.uint64), zeros(n, np.int64)
    fn("extras.cu", "hints")((1,), (64,), (x, y, rev, ticks, np.int32(n)))
    np.testing.assert_array_equal(y, 4 * x)
    np.testing.assert_array_equal(rev, [int(f"{0x0123456789ABCDEF + i:064b}"[::-1], 2) for i in range(n)])
    assert (ticks == 1).all()


def round_directed(exact: Fraction, mode: str) -> np.float32:
    """The float32 toward zero / below / above an exact rational (past the largest float: inf or the largest)."""
    big = Fraction(float(np.finfo(np.float32).max))
    if abs(exact) > big:
        away = mode == ("ru" if exact > 0 else "rd")
        return np.float32(np.copysign(np.inf if away else float(big), float(exact)))
    r = np.float32(float(exact))
    while Fraction(float(r)) > exact and (mode == "rd" or (mode == "rz" and exact >= 0)):
        r = np.nextafter(r, np.float32(-np.inf))
    while Fraction(float(r)) < exact and (mode == "ru" or (mode == "rz" and exact < 0)):
        r = np.nextafter(r, np.float32(np.inf))
    return r


def test_directed_rounding_float_intrinsics():
    n = 60
    a = (rng.standard_normal(n) * 10).astype(np.float32)
    b = (rng.standard_normal(n) * 10).astype(np.float32)
    c = (rng.standard_normal(n) * 1e-3).astype(np.float32)
    a[:3], b[:3] = [1, 3e38, 2], [2**-30, 3e38, 4]  # tiny addend; overflow; exact results
    out = np.full((n, 21), np.nan, np.float32)
    fn("extras.cu", "directed")((1,), (64,), (a, b, c, out.ravel(), np.int32(n)))  # did not compile
    assert (out[:, 7:14] != out[:, 14:21]).sum() > 3 * n  # mostly inexact: down and up differ
    for i in range(n):
        x, y, z = (Fraction(float(v)) for v in (a[i], b[i], c[i]))
        exact = [x + y, x - y, x * y, x / y, None, 1 / y, x * y + z]
        for m, mode in enumerate(("rz", "rd", "ru")):
            for k, e in enumerate(exact):
                got = out[i, 7 * m + k]
                if e is None:  # sqrt: got^2 on the mode's side of |x|, its neighbour beyond it on the other
                    up = mode == "ru"
                    nxt = np.nextafter(got, np.float32(-np.inf if up else np.inf))
                    g2, n2 = Fraction(float(got)) ** 2, Fraction(float(nxt)) ** 2
                    assert g2 == abs(x) or (g2 > abs(x) > n2 if up else g2 < abs(x) < n2), (i, mode, got)
                    continue
                want = round_directed(e, mode)
                assert got == want, (i, mode, k, got, want)


# ------------------------------------------------------------------------------------------------
# cooperative_groups/scan.h; a kernel without extern "C"
# ------------------------------------------------------------------------------------------------
LINKAGE = r'''
#include <cooperative_groups.h>
#include <cooperative_groups/scan.h>
namespace cg = cooperative_groups;
extern "C" __global__ void tile_scan(const int* x, int* inclusive, int* exclusive) {
    auto tile = cg::tiled_partition<16>(cg::this_thread_block());
    inclusive[threadIdx.x] = cg::inclusive_scan(tile, x[threadIdx.x]);
    exclusive[threadIdx.x] = cg::exclusive_scan(tile, x[threadIdx.x], cg::plus<int>());
}
__global__ void fill_twos(float* y) { y[threadIdx.x] = 2.0f; }
extern "C" {
__global__ void fill_threes(float* y) { y[threadIdx.x] = 3.0f; }
}
'''


def test_cooperative_groups_inclusive_and_exclusive_scan():
    x = rng.integers(-9, 9, 64).astype(np.int32)
    inclusive, exclusive = zeros(64), zeros(64)
    RawModule(code=LINKAGE).get_function("tile_scan")((1,), (64,), (x, inclusive, exclusive))  # no scan.h before
    tiles = x.reshape(-1, 16)
    np.testing.assert_array_equal(inclusive, tiles.cumsum(1).ravel())
    np.testing.assert_array_equal(exclusive, (tiles.cumsum(1) - tiles).ravel())


def test_a_kernel_with_cpp_linkage_needs_extern_c_or_a_name_expression():
    """CuPy looks kernels up by symbol: a C++ kernel's is mangled, so get_function('fill_twos') fails there
    (CUDA_ERROR_NOT_FOUND). The emulator ran it."""
    y = zeros(4, np.float32)
    with pytest.raises(AttributeError, match=r"'fill_twos' has C\+\+ linkage .*extern \"C\".*name_expressions="):
        RawModule(code=LINKAGE).get_function("fill_twos")
    with pytest.raises(AttributeError, match="C\\+\\+ linkage"):
        emu.RawKernel(LINKAGE, "fill_twos")((1,), (4,), (y,))
    RawModule(code=LINKAGE, name_expressions=["fill_twos"]).get_function("fill_twos")((1,), (4,), (y,))
    np.testing.assert_array_equal(y, 2)
    RawModule(code=LINKAGE).get_function("fill_threes")((1,), (4,), (y,))  # inside an extern "C" { } block
    np.testing.assert_array_equal(y, 3)


COALESCED = r'''
#include <cooperative_groups.h>
#include <cooperative_groups/reduce.h>
#include <cooperative_groups/scan.h>
namespace cg = cooperative_groups;
// Stream compaction with the lanes that pass the filter: one atomicAdd per warp, places by exclusive scan.
extern "C" __global__ void compact(const int* x, int* out, int* count, int* sums, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n && x[i] > 0) {
        cg::coalesced_group active = cg::coalesced_threads();
        int base = 0;
        if (active.thread_rank() == 0) base = atomicAdd(count, (int)active.size());
        base = active.shfl(base, 0);
        out[base + cg::exclusive_scan(active, 1)] = x[i];
        sums[i] = cg::reduce(active, x[i], cg::plus<int>()) - cg::inclusive_scan(active, x[i]);
    }
}
'''


def test_coalesced_group_reduce_and_scans_for_stream_compaction():
    n = 300
    x = rng.integers(-5, 6, n).astype(np.int32)
    out, count, sums = np.full(n, -1, np.int32), zeros(1), np.full(n, -99, np.int32)
    RawModule(code=COALESCED).get_function("compact")((-(-n // 64),), (64,), (x, out, count, sums, np.int32(n)))
    kept = x[x > 0]
    assert count[0] == kept.size
    np.testing.assert_array_equal(np.sort(out[:kept.size]), np.sort(kept))  # did not compile: no reduce/scan
    for w in range(-(-n // 32)):  # per warp: the sum of the later passing lanes
        lanes = np.arange(w * 32, min(n, w * 32 + 32))
        vals = x[lanes][x[lanes] > 0]
        np.testing.assert_array_equal(sums[lanes][x[lanes] > 0], vals.sum() - vals.cumsum())



# ------------------------------------------------------------------------------------------------
# NVIDIA blog kernels: "An Efficient Matrix Transpose", "Faster Parallel Reductions on Kepler"
# ------------------------------------------------------------------------------------------------
BLOG = r'''
#include <cuda_fp16.h>
#define TILE_DIM 32
#define BLOCK_ROWS 8
extern "C" __global__ void transposeCoalesced(float* odata, const float* idata, int width, int height) {
    __shared__ float tile[TILE_DIM][TILE_DIM + 1];
    int x = blockIdx.x * TILE_DIM + threadIdx.x;
    int y = blockIdx.y * TILE_DIM + threadIdx.y;
    for (int j = 0; j < TILE_DIM; j += BLOCK_ROWS)
        if (x < width && y + j < height) tile[threadIdx.y + j][threadIdx.x] = idata[(y + j) * width + x];
    __syncthreads();
    x = blockIdx.y * TILE_DIM + threadIdx.x;
    y = blockIdx.x * TILE_DIM + threadIdx.y;
    for (int j = 0; j < TILE_DIM; j += BLOCK_ROWS)
        if (x < height && y + j < width) odata[(y + j) * height + x] = tile[threadIdx.x][threadIdx.y + j];
}
__inline__ __device__ int warpReduceSum(int val) {
    for (int offset = warpSize / 2; offset > 0; offset /= 2) val += __shfl_down_sync(0xffffffff, val, offset);
    return val;
}
__inline__ __device__ int blockReduceSum(int val) {
    static __shared__ int shared[32];
    int lane = threadIdx.x % warpSize;
    int wid = threadIdx.x / warpSize;
    val = warpReduceSum(val);
    if (lane == 0) shared[wid] = val;
    __syncthreads();
    val = (threadIdx.x < blockDim.x / warpSize) ? shared[lane] : 0;
    if (wid == 0) val = warpReduceSum(val);
    return val;
}
extern "C" __global__ void deviceReduceKernel(const int* in, int* out, int N) {
    int sum = 0;
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < N; i += blockDim.x * gridDim.x) sum += in[i];
    sum = blockReduceSum(sum);
    if (threadIdx.x == 0) out[blockIdx.x] = sum;
}
extern "C" __global__ void deviceReduceWarpAtomicKernel(const int* in, int* out, int N) {
    int sum = 0;
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < N; i += blockDim.x * gridDim.x) sum += in[i];
    sum = warpReduceSum(sum);
    if ((threadIdx.x & (warpSize - 1)) == 0) atomicAdd(out, sum);
}
'''


@pytest.mark.parametrize("width, height", [(64, 32), (100, 37), (1, 1)])
def test_blog_transpose_with_a_padded_tile(width, height):
    a = rng.standard_normal((height, width)).astype(np.float32)
    out = np.full((width, height), np.nan, np.float32)
    RawModule(code=BLOG).get_function("transposeCoalesced")((-(-width // 32), -(-height // 32)), (32, 8),
                                                            (out, a, np.int32(width), np.int32(height)), racecheck=True)
    np.testing.assert_array_equal(out, a.T)


def test_blog_shuffle_reductions_block_and_warp_atomic():
    n = 100_000
    x = rng.integers(-50, 50, n).astype(np.int32)
    mod = RawModule(code=BLOG)
    partial = zeros(64)
    mod.get_function("deviceReduceKernel")((64,), (512,), (x, partial, np.int32(n)))
    total = zeros(1)
    mod.get_function("deviceReduceKernel")((1,), (1024,), (partial, total, np.int32(64)))
    assert total[0] == x.sum()
    total[0] = 0
    mod.get_function("deviceReduceWarpAtomicKernel")((64,), (256,), (x, total, np.int32(n)))
    assert total[0] == x.sum()


# ------------------------------------------------------------------------------------------------
# Round 2: what nvcc refuses, and __fdividef's large-divisor behaviour.

def test_atomic_add_on_long_long_is_refused_as_nvcc_refuses_it():
    src = 'extern "C" __global__ void k(long long* p) { atomicAdd(p, 1LL); }'
    with pytest.raises(emu.CompileError, match="atomicAdd"):
        RawModule(code=src).get_function("k")


def test_fdividef_returns_zero_for_a_divisor_above_2_to_the_126():
    src = ('extern "C" __global__ void k(const float* a, const float* b, float* out) {'
           ' out[threadIdx.x] = __fdividef(a[threadIdx.x], b[threadIdx.x]); }')
    big = np.float32(2.0 ** 127)
    a = np.array([1.0, np.inf, 3.0, -5.0, 6.0], np.float32)
    b = np.array([big, big, 2.0, -big, 2.0 ** 126], np.float32)
    out = np.full(5, 7.0, np.float32)
    RawModule(code=src).get_function("k")((1,), (5,), (a, b, out))
    assert out[0] == 0.0 and np.isnan(out[1]) and out[2] == 1.5 and out[3] == 0.0
    assert out[4] == np.float32(6.0 / 2.0 ** 126)  # 2^126 itself is still divided normally


RACY_EXCHANGE = r'''
#include <cooperative_groups.h>
namespace cg = cooperative_groups;
extern "C" __global__ void by_activemask(int* out) {
    __shared__ int s[32];
    s[threadIdx.x] = threadIdx.x;
    unsigned lanes = __activemask();  // says which lanes are here; orders no memory
    out[threadIdx.x] = s[(threadIdx.x + 1) % 32] + int(lanes & 0u);
}
extern "C" __global__ void by_coalesced_threads(int* out) {
    __shared__ int s[32];
    s[threadIdx.x] = threadIdx.x;
    cg::coalesced_group g = cg::coalesced_threads();
    out[threadIdx.x] = s[(threadIdx.x + 1) % 32] + int(g.size() & 0u);
}
'''


@pytest.mark.parametrize("name", ["by_activemask", "by_coalesced_threads"])
def test_racecheck_sees_a_shared_exchange_not_ordered_by_activemask_or_coalesced_threads(name):
    with pytest.raises(emu.RaceError, match="racecheck"):
        RawModule(code=RACY_EXCHANGE).get_function(name)((1,), (32,), (zeros(32),), racecheck=True)


BIG_SHARED = r'''
extern "C" __global__ void fill(float* out) {
    extern __shared__ float tile[];
    tile[threadIdx.x] = float(threadIdx.x);
    __syncthreads();
    out[threadIdx.x] = tile[(threadIdx.x + 1) % blockDim.x];
}
'''


def test_dynamic_shared_memory_above_48kb_needs_the_opt_in_as_on_cuda():
    kernel = RawModule(code=BIG_SHARED).get_function("fill")
    out = np.zeros(64, np.float32)
    assert kernel.max_dynamic_shared_size_bytes == 48 * 1024
    kernel((1,), (64,), (out,), shared_mem=48 * 1024)  # up to 48 KB needs nothing
    with pytest.raises(emu.EmulatorError, match="CUDA_ERROR_INVALID_VALUE.*max_dynamic_shared_size_bytes"):
        kernel((1,), (64,), (out,), shared_mem=64 * 1024)
    with pytest.raises(emu.EmulatorError, match="CUDA_ERROR_INVALID_VALUE"):
        kernel((1,), (64,), (out,), shared_mem=64 * 1024, racecheck=True)
    kernel.max_dynamic_shared_size_bytes = 64 * 1024
    kernel((1,), (64,), (out,), shared_mem=64 * 1024, racecheck=True)
    np.testing.assert_array_equal(out, (np.arange(64) + 1) % 64)
