"""Round 6 of CUDA written by others on the emulator (tests/emu_kernels/r6/*.cu), each kernel in the style of
a popular source and run with no edits, against a float64 (or exact integer) NumPy reference on ragged shapes:
cooperative groups (static and dynamic tiles, cg::reduce with cg::plus / cg::greater and a custom operator,
labeled and binary partitions, invoke_one, match_any, grid.sync in a cooperative launch), warp intrinsics with
partial masks and widths, inline PTX idioms (special registers, ld.global.nc, cvt.rn.bf16x2.f32, mov.b32
packing, lop3, prmt, ...: translated, the rest refused naming the instruction), templates with non-type
parameters, __half2 / __nv_bfloat162 math and 16-bit atomics, Mark Harris's reductions, a flash-attention
forward, an llm.c layernorm backward; then the round-5 left-alones (a kernel named printf, __shared__ arrays of
a class with a constructor) and host code refused by name.
"""
from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest

from minilora import emulator as emu
from minilora.emulator import CompileError, RawKernel, RawModule

R6 = Path(__file__).parent / "emu_kernels" / "r6"
pytestmark = pytest.mark.skipif(not emu.is_available(), reason="the CUDA emulator needs g++")
rng = np.random.default_rng(66)


@lru_cache(maxsize=None)
def module(name: str, name_expressions: tuple = (), cooperative: bool = False) -> RawModule:
    return RawModule(path=R6 / name, name_expressions=list(name_expressions),
                     enable_cooperative_groups=cooperative).compile()


def kernel(file: str, name: str, **kwargs) -> RawKernel:
    return module(file, **kwargs).get_function(name)


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


# ------------------------------------------------------------------------------------------------
# Cooperative groups
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n, block", [(1000, 128), (77, 64), (2048, 256)])
def test_static_and_dynamic_tiles_reduce_with_plus_and_greater(n, block):
    x = rng.standard_normal(n).astype(np.float32)
    blocks = cdiv(n, block)
    sums = np.zeros(blocks * block // 16, np.float32)
    maxs = np.zeros_like(sums)
    pos = np.zeros(blocks * block // 8, np.int32)
    kernel("groups.cu", "tile_stats")((blocks,), (block,), (x, sums, maxs, pos, np.int32(n)))
    padded = np.zeros(blocks * block, np.float64)
    padded[:n] = x
    np.testing.assert_allclose(sums, padded.reshape(-1, 16).sum(1), rtol=1e-5, atol=1e-5)
    masked = np.full(blocks * block, -np.inf)
    masked[:n] = x
    np.testing.assert_array_equal(maxs, masked.reshape(-1, 16).max(1).astype(np.float32))
    np.testing.assert_array_equal(pos, (padded > 0).reshape(-1, 8).sum(1))


@pytest.mark.parametrize("n", [1000, 31])
def test_labeled_partition_aggregates_atomics_per_key(n):
    keys = rng.integers(-3, 6, n).astype(np.int32)  # negative keys take no part (a divergent branch)
    bins = np.zeros(6, np.uint32)
    kernel("groups.cu", "aggregated_histogram")((cdiv(n, 128),), (128,), (keys, np.int32(n), bins))
    np.testing.assert_array_equal(bins, np.bincount(keys[keys >= 0], minlength=6))


def test_binary_partition_with_invoke_one_and_reduce_over_the_group():
    n = 300
    x = rng.integers(0, 1000, n).astype(np.int32)
    counts, odd_sum = np.zeros(2, np.int32), np.zeros(1, np.int32)
    kernel("groups.cu", "parity_counts")((cdiv(n, 64),), (64,), (x, np.int32(n), counts, odd_sum))
    padded = cdiv(n, 64) * 64 - n  # threads past the end hold 0: even
    np.testing.assert_array_equal(counts, [(x % 2 == 0).sum() + padded, (x % 2 == 1).sum()])
    assert odd_sum[0] == x[x % 2 == 1].sum()


def test_tile_match_any_gives_each_lanes_peers():
    keys = rng.integers(0, 5, 96).astype(np.int32)
    peers, leader = np.zeros(96, np.int32), np.zeros(96, np.int32)
    kernel("groups.cu", "warp_dedupe")((1,), (96,), (keys, peers, leader))
    for w in range(3):
        k = keys[32 * w:32 * w + 32]
        np.testing.assert_array_equal(peers[32 * w:32 * w + 32], [(k == v).sum() for v in k])
        np.testing.assert_array_equal(leader[32 * w:32 * w + 32], [np.argmax(k == v) for v in k])


@pytest.mark.parametrize("rows, cols", [(13, 100), (4, 31)])
def test_online_softmax_merged_by_cg_reduce_with_a_struct_operator(rows, cols):
    x = (rng.standard_normal((rows, cols)) * 4).astype(np.float32)
    out = np.zeros_like(x)
    kernel("groups.cu", "softmax_rows_cg")((cdiv(rows, 4),), (128,), (x, out, np.int32(rows), np.int32(cols)))
    e = np.exp(x.astype(np.float64) - x.max(1, keepdims=True))
    np.testing.assert_allclose(out, e / e.sum(1, keepdims=True), rtol=2e-5, atol=1e-7)


def test_shuffles_in_segments_of_8_and_16_lanes():
    x = rng.integers(-50, 50, 64).astype(np.int32)
    down8, xor16, scan8 = (np.zeros(64, np.int32) for _ in range(3))
    kernel("groups.cu", "segment_shuffles")((1,), (64,), (x, down8, xor16, scan8))
    seg8 = x.reshape(-1, 8)
    # shfl_down in a segment of 8: lane j adds lanes j+d while they stay in the segment (its own value past it)
    expect = []
    for seg in seg8:
        s = seg.copy()
        for d in (4, 2, 1):
            s = s + np.array([s[j + d] if j + d < 8 else s[j] for j in range(8)])
        expect.append(s)
    np.testing.assert_array_equal(down8, np.concatenate(expect))
    np.testing.assert_array_equal(xor16, np.repeat(x.reshape(-1, 16).sum(1), 16))
    np.testing.assert_array_equal(scan8, np.cumsum(seg8, axis=1).ravel())


def test_reduce_sync_activemask_and_syncwarp_on_a_divergent_branch():
    x = rng.integers(0, 1000, 32).astype(np.uint32)
    sums, mins, masks, swapped = (np.zeros(32, np.uint32) for _ in range(4))
    maxs = np.zeros(32, np.int32)
    kernel("groups.cu", "branch_reductions")((1,), (32,), (x, sums, mins, maxs, masks, swapped))
    odd = (x & 1).astype(bool)
    odd_mask = int(sum(1 << i for i in range(32) if odd[i]))
    np.testing.assert_array_equal(sums, np.where(odd, x[odd].sum(), 0))
    np.testing.assert_array_equal(mins, np.where(odd, x[odd].min(), 0))
    np.testing.assert_array_equal(maxs, np.where(odd, (-x[odd].astype(np.int64)).max(), 0))
    np.testing.assert_array_equal(masks, np.where(odd, odd_mask, ~odd_mask & 0xFFFFFFFF))
    np.testing.assert_array_equal(swapped, np.where(odd, x[np.flatnonzero(odd)[-1]], 0))


def test_match_any_and_match_all_sync():
    keys = rng.integers(0, 4, 32).astype(np.int32)
    keys[16:] = 6 + (np.arange(16) % 2)  # the upper half matches all once the low bit is dropped
    any_, all_ = np.zeros(32, np.uint32), np.zeros(32, np.uint32)
    pred = np.zeros(32, np.int32)
    kernel("groups.cu", "match_keys")((1,), (32,), (keys, any_, all_, pred))
    np.testing.assert_array_equal(any_, [sum(1 << j for j in range(32) if keys[j] == k) for k in keys])
    low_all = len(set(keys[:16] & ~1)) == 1
    np.testing.assert_array_equal(pred, [int(low_all)] * 16 + [1] * 16)
    np.testing.assert_array_equal(all_, [0xFFFF if low_all else 0] * 16 + [0xFFFF0000] * 16)


def test_grid_sync_in_a_cooperative_launch():
    n = 5000
    x = rng.random(n).astype(np.float32)
    partial = np.zeros(8, np.float32)
    y = x.copy()
    kernel("groups.cu", "grid_normalize", cooperative=True)((8,), (128,), (y, partial, np.int32(n)))
    np.testing.assert_allclose(y, x / x.astype(np.float64).sum(), rtol=1e-5)


# ------------------------------------------------------------------------------------------------
# Inline PTX: the idioms are translated, and run as written
# ------------------------------------------------------------------------------------------------
def test_ptx_special_registers():
    lane, warp, sm, below = (np.zeros(3 * 64, np.uint32) for _ in range(4))
    kernel("ptx.cu", "ids")((1,), (48, 4), (lane, warp, sm, below))
    t = np.arange(192)
    np.testing.assert_array_equal(lane, t % 32)
    np.testing.assert_array_equal(warp, t // 32)
    assert (sm == sm[0]).all()  # one block runs on one SM
    np.testing.assert_array_equal(below, (1 << (t % 32)) - 1)


@pytest.mark.parametrize("n4", [100, 7])
def test_ptx_read_only_vector_loads_and_vector_stores(n4):
    x = rng.standard_normal((n4, 4)).astype(np.float32)
    y = np.zeros(4 * n4, np.float32)
    idx = rng.integers(0, 1 << 30, n4).astype(np.int32)
    picked = np.zeros(n4, np.int32)
    kernel("ptx.cu", "copy_reversed")((cdiv(n4, 32),), (32,), (x, y, idx, picked, np.int32(n4)))
    np.testing.assert_array_equal(y, x[:, ::-1].ravel())
    np.testing.assert_array_equal(picked, idx)


def test_ptx_bf16x2_and_half2_packing():
    ml_dtypes = pytest.importorskip("ml_dtypes")
    n = 333
    x = (rng.standard_normal((n, 2)) * np.exp2(rng.integers(-20, 20, (n, 2)))).astype(np.float32)
    bf, hf, repacked = (np.zeros(n, np.uint32) for _ in range(3))
    lo, hi = np.zeros(n, np.uint16), np.zeros(n, np.uint16)
    kernel("ptx.cu", "pack_pairs")((cdiv(n, 64),), (64,), (x, bf, hf, lo, hi, repacked, np.int32(n)))
    bits_bf = x.astype(ml_dtypes.bfloat16).view(np.uint16).astype(np.uint32)
    with np.errstate(over="ignore"):
        bits_h = x.astype(np.float16).view(np.uint16).astype(np.uint32)
    np.testing.assert_array_equal(bf, bits_bf[:, 0] | bits_bf[:, 1] << 16)
    np.testing.assert_array_equal(hf, bits_h[:, 0] | bits_h[:, 1] << 16)
    np.testing.assert_array_equal(lo, bits_bf[:, 0])
    np.testing.assert_array_equal(hi, bits_bf[:, 1])
    np.testing.assert_array_equal(repacked, bits_bf[:, 1] | bits_bf[:, 0] << 16)


def test_ptx_lop3_prmt_bfe_shf_and_predicated_moves():
    n = 500
    a, b, c = (rng.integers(0, 1 << 32, n, dtype=np.uint64).astype(np.uint32) for _ in range(3))
    out = np.zeros((n, 6), np.uint32)
    kernel("ptx.cu", "bit_tricks")((cdiv(n, 128),), (128,), (a, b, c, out, np.int32(n)))
    np.testing.assert_array_equal(out[:, 0], (a & b) ^ c)
    np.testing.assert_array_equal(out[:, 1], a.byteswap())
    sign = np.zeros(n, np.uint32)
    for k in range(4):
        sign |= np.where((b >> (8 * k + 7)) & 1, np.uint32(0xFF) << np.uint32(8 * k), 0).astype(np.uint32)
    np.testing.assert_array_equal(out[:, 2], sign)
    pos = (c % 24).astype(np.uint32)
    np.testing.assert_array_equal(out[:, 3], ((a >> pos) & 0xFF).astype(np.uint8).view(np.int8).astype(np.int32).view(np.uint32))
    r = (c % 32).astype(np.uint64)
    b64 = b.astype(np.uint64)
    np.testing.assert_array_equal(out[:, 4], (((b64 << r) | (b64 >> ((32 - r) % 32) * (r > 0))) & 0xFFFFFFFF).astype(np.uint32))
    np.testing.assert_array_equal(out[:, 5], np.clip((a % 600).astype(np.int64) - 200, 0, 255))


def test_ptx_shuffle_vote_atomics_and_fma():
    x = rng.standard_normal(128).astype(np.float32)
    sums, total, fmas = np.zeros(4, np.float32), np.zeros(1, np.float32), np.zeros(128, np.float32)
    ballots, ticket = np.zeros(4, np.uint32), np.zeros(1, np.uint32)
    kernel("ptx.cu", "warp_ptx")((2,), (64,), (x, sums, ballots, total, ticket, fmas))
    np.testing.assert_allclose(sums, x.astype(np.float64).reshape(4, 32).sum(1), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(ballots, [sum(1 << j for j in range(32) if w[j] > 0) for w in x.reshape(4, 32)])
    np.testing.assert_allclose(total, x.astype(np.float64).sum(), rtol=1e-4, atol=1e-4)
    assert ticket[0] == 128
    np.testing.assert_array_equal(fmas, (x.astype(np.float64) * 3 + 1).astype(np.float32))


@pytest.mark.parametrize("asm, match", [
    # (mma.sync runs since round 9, test_emulator_tensorcore_r9.py; Volta's m8n8k4 f16 quad-pair shape does not)
    ('asm volatile("mma.sync.aligned.m8n8k4.row.col.f32.f16.f16.f32 {%0,%1,%2,%3,%4,%5,%6,%7}, {%8,%9}, {%10,%11}, '
     '{%0,%1,%2,%3,%4,%5,%6,%7};" : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), '
     '"+f"(d[6]), "+f"(d[7]) : "r"(a[0]), "r"(a[1]), "r"(a[0]), "r"(a[1]));',
     r"'mma\.sync\.aligned\.m8n8k4\.row\.col\.f32\.f16\.f16\.f32': shape m8n8k4 with \.f16/\.f16 inputs"),
    # (cp.async into shared memory and ld.shared run since round 8: tests/test_emulator_r8.py, 1-D bulk copies
    # since round 9; TMA's tensor copies do not)
    ('asm volatile("cp.async.bulk.tensor.1d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%2}], [%3];" '
     ':: "r"(a[0]), "l"(d), "r"(a[1]), "r"(a[2]));', r"'cp\.async\.bulk\.tensor\.1d\.shared::cluster\.global\.mbarrier::"
     r"complete_tx::bytes' is not modelled"),
    ('asm volatile("ld.local.f32 %0, [%1];" : "=f"(d[0]) : "r"(a[0]));', r"'ld\.local\.f32': ld from \.local"),
    ('asm volatile("mov.u32 %0, %%nctaid.w;" : "=r"(a[0]));', r"special register %nctaid\.w is not modelled"),
    ('asm volatile("prmt.b32.f4e %0, %0, %0, %0;" : "+r"(a[0]));', r"prmt's f4e mode is not modelled"),
])
def test_untranslatable_ptx_is_refused_naming_the_instruction_and_line(asm, match):
    src = f'extern "C" __global__ void k(float* d, unsigned* a) {{\n    {asm}\n}}'
    with pytest.raises(CompileError, match=r"k\.cu:2: .*" + match):
        RawModule(code=src).get_function("k")


def test_ptx_refusals_apply_only_to_code_the_preprocessor_keeps():
    src = '''extern "C" __global__ void k(unsigned* out) {
    #ifdef __CUDA_EMU__
        out[threadIdx.x] = 7;
    #else
        asm volatile("wgmma.fence.sync.aligned;");
    #endif
    }'''
    out = np.zeros(32, np.uint32)
    RawModule(code=src).get_function("k")((1,), (32,), (out,))
    assert (out == 7).all()


# ------------------------------------------------------------------------------------------------
# Templates, constexpr, __constant__ and static __device__ globals
# ------------------------------------------------------------------------------------------------
SUMS = ("weighted_sum<128, 4, float>", "weighted_sum<64, 2, __half>", "weighted_sum<256, 1, double>")
TRANSPOSES = ("transpose_tiled<32, 8>", "transpose_tiled<16, 16, 0>")
TEMPLATES = SUMS + TRANSPOSES  # one build for all


@pytest.mark.parametrize("expression, dtype, block, items, n", [
    (SUMS[0], np.float32, 128, 4, 5000), (SUMS[1], np.float16, 64, 2, 999), (SUMS[2], np.float64, 256, 1, 3)])
def test_template_kernels_with_traits_constants_and_a_static_device_ticket(expression, dtype, block, items, n):
    mod = module("templates.cu", TEMPLATES)
    weights = rng.random(8).astype(np.float32)
    mod.get_global("c_weights")[:] = weights
    x = rng.standard_normal(n).astype(dtype)
    acc = np.float64 if dtype == np.float64 else np.float32
    blocks = cdiv(n, block * items)
    partial, out = np.zeros(blocks, acc), np.zeros(1, acc)
    k = mod.get_function(expression)
    for _ in range(2):  # the ticket wraps around, so a second launch finishes as the first
        out[0] = 0
        k((blocks,), (block,), (x, partial, out, np.int32(n)))
        expect = (x.astype(np.float64) * weights[np.arange(n) % 8]).sum()
        np.testing.assert_allclose(out[0], expect, rtol=1e-5, atol=1e-4)
    assert mod.get_global("g_blocks_done")[0] == 0


def test_launch_bounds_of_a_template_parameter_are_checked_per_instance():
    k = module("templates.cu", TEMPLATES).get_function(SUMS[1])  # __launch_bounds__(BLOCK) with BLOCK = 64
    x = np.zeros(8, np.float16)
    with pytest.raises(ValueError, match=r"has 128 threads, but the kernel is declared __launch_bounds__\(64\)"):
        k((1,), (128,), (x, np.zeros(1, np.float32), np.zeros(1, np.float32), np.int32(8)))


@pytest.mark.parametrize("expression, tile, rows_per", [(TRANSPOSES[0], 32, 8), (TRANSPOSES[1], 16, 16)])
@pytest.mark.parametrize("rows, cols", [(70, 45), (32, 32)])
def test_template_transpose_with_default_and_explicit_padding(expression, tile, rows_per, rows, cols):
    x = rng.standard_normal((rows, cols)).astype(np.float32)
    y = np.zeros((cols, rows), np.float32)
    module("templates.cu", TEMPLATES).get_function(expression)(
        (cdiv(cols, tile), cdiv(rows, tile)), (tile, rows_per), (y, x, np.int32(rows), np.int32(cols)), check_races=True)
    np.testing.assert_array_equal(y, x.T)


# ------------------------------------------------------------------------------------------------
# __half2 / __nv_bfloat162 arithmetic, comparisons and atomics
# ------------------------------------------------------------------------------------------------
def bf16(x):
    return np.asarray(x, np.float32).astype(pytest.importorskip("ml_dtypes").bfloat16)


def test_half2_fma_gelu_and_conversions():
    n2 = 301
    x, w, b = (rng.standard_normal((n2, 2)).astype(np.float16) for _ in range(3))
    y, wide = np.zeros((n2, 2), np.float16), np.zeros((n2, 2), np.float32)
    kernel("half_math.cu", "half2_bias_gelu")((cdiv(n2, 64),), (64,), (x, w, b, y, wide, np.int32(n2)))
    v = (x.astype(np.float64) * w + b).astype(np.float16)  # __hfma2 rounds once (the product is exact in float64)
    np.testing.assert_array_equal(wide, v.astype(np.float32))
    f = v.astype(np.float64)
    gelu = 0.5 * f * (1 + np.tanh(0.7978845608 * (f + 0.044715 * f ** 3)))
    np.testing.assert_allclose(y.astype(np.float64), gelu, rtol=1e-3, atol=1e-3)


def test_bfloat162_arithmetic_rounds_each_lane_once():
    n2 = 257
    a = bf16(rng.standard_normal((n2, 2)))
    b = bf16(rng.standard_normal((n2, 2)) + 3)
    outs = [np.zeros((n2, 2), a.dtype) for _ in range(5)]
    lows = np.zeros(n2, np.float32)
    kernel("half_math.cu", "bf162_ops")((cdiv(n2, 128),), (128,), (a, b, *outs, lows, np.int32(n2)))
    fa, fb = a.astype(np.float64), b.astype(np.float64)
    for got, want in zip(outs, [fa + fb, fa * fb, fa * fb + 1, fa / fb, np.maximum(fa, -fb)]):
        np.testing.assert_array_equal(got.astype(np.float64), bf16(want.astype(np.float32)).astype(np.float64))
    np.testing.assert_array_equal(lows, (fa[:, 0] + fb[:, 0]).astype(np.float32))


def test_half_comparisons_ordered_and_unordered_as_cuda():
    nan = np.nan
    pairs = [((1, 2), (1, 3)), ((nan, 1), (1, 1)), ((2, 2), (2, 2)), ((nan, nan), (nan, 5)), ((4, 1), (3, 0))]
    a = np.array([p[0] for p in pairs], np.float16)
    b = np.array([p[1] for p in pairs], np.float16)
    n2 = len(pairs)
    flags, lanes = np.zeros((n2, 6), np.int32), np.zeros((n2, 2, 2), np.float16)
    kernel("half_math.cu", "half_compare")((1,), (32,), (a, b, flags, lanes, np.int32(n2)))
    with np.errstate(invalid="ignore"):
        ne, neu = (a < b) | (a > b), ~(a == b)
        lt_u, ge_u, eq_u = ~(a >= b), ~(a < b), ~((a < b) | (a > b))
    np.testing.assert_array_equal(flags[:, 0], ne[:, 0])
    np.testing.assert_array_equal(flags[:, 1], neu[:, 0])
    np.testing.assert_array_equal(flags[:, 2], lt_u[:, 0] + 2 * ge_u[:, 0] + 4 * eq_u[:, 0])
    np.testing.assert_array_equal(flags[:, 3], (a == b).all(1))
    np.testing.assert_array_equal(flags[:, 4], neu.all(1))  # CUDA's half2 != is __hbneu2, not !(a == b)
    np.testing.assert_array_equal(flags[:, 5], ne.all(1) + 2 * neu.all(1))
    np.testing.assert_array_equal(lanes[:, 0], ne.astype(np.float16))
    np.testing.assert_array_equal(lanes[:, 1], neu.astype(np.float16))


def test_atomic_add_on_half2_bfloat162_and_double():
    n, slots = 2000, 5
    slot = rng.integers(0, slots, n).astype(np.int32)
    hv = (rng.integers(-8, 8, (n, 2)) / 4).astype(np.float16)  # quarters: every partial sum is exact in 16 bits
    bv = bf16(rng.integers(-3, 4, (n, 2)))  # small integers: exact in bfloat16's 8 bits while |sum| < 256
    dv = rng.standard_normal(n)
    hsum, bsum, dsum = np.zeros((slots, 2), np.float16), np.zeros((slots, 2), bv.dtype), np.zeros(slots)
    kernel("half_math.cu", "pair_atomics")((cdiv(n, 256),), (256,), (slot, hv, bv, dv, hsum, bsum, dsum, np.int32(n)))
    for s in range(slots):
        np.testing.assert_array_equal(hsum[s], hv[slot == s].astype(np.float64).sum(0))
        np.testing.assert_array_equal(bsum[s].astype(np.float64), bv[slot == s].astype(np.float64).sum(0))
        np.testing.assert_allclose(dsum[s], dv[slot == s].sum(), rtol=1e-12)


# ------------------------------------------------------------------------------------------------
# Classics: Harris's reductions, flash-attention-minimal, llm.c's layernorm backward
# ------------------------------------------------------------------------------------------------
REDUCE5 = ("reduce5<256>", "reduce5<64>")


@pytest.mark.parametrize("name, block, per_thread", [("reduce0", 128, 1), ("reduce1", 256, 1), ("reduce3", 128, 2)])
@pytest.mark.parametrize("n", [10000, 129])
def test_harris_reductions(name, block, per_thread, n):
    x = rng.integers(-1000, 1000, n).astype(np.int32)
    blocks = cdiv(n, block * per_thread)
    out = np.zeros(blocks, np.int32)
    kernel("classics.cu", name, name_expressions=REDUCE5)((blocks,), (block,), (x, out, np.uint32(n)), shared_mem=4 * block)
    assert out.sum() == x.sum()
    np.testing.assert_array_equal(out, np.add.reduceat(x, np.arange(0, n, block * per_thread)))


@pytest.mark.parametrize("expression, block", [(REDUCE5[0], 256), (REDUCE5[1], 64)])
def test_harris_reduce_with_template_block_size_and_unrolled_volatile_warp(expression, block):
    n = 70000
    x = rng.integers(-1000, 1000, n).astype(np.int32)
    out = np.zeros(16, np.int32)
    kernel("classics.cu", expression, name_expressions=REDUCE5)((16,), (block,), (x, out, np.uint32(n)), shared_mem=4 * block)
    assert out.sum() == x.sum()


def attention_reference(q, k, v, scale):
    s = np.einsum("bhnd,bhmd->bhnm", q.astype(np.float64), k.astype(np.float64)) * scale
    p = np.exp(s - s.max(-1, keepdims=True))
    return np.einsum("bhnm,bhmd->bhnd", p / p.sum(-1, keepdims=True), v.astype(np.float64))


@pytest.mark.parametrize("B, nh, N, d, tile", [(2, 3, 40, 16, 16), (1, 2, 64, 32, 32)])
def test_flash_attention_minimal_forward(B, nh, N, d, tile):
    q, k, v = (rng.standard_normal((B, nh, N, d)).astype(np.float32) for _ in range(3))
    tc = cdiv(N, tile)  # the last tile of rows is ragged: the kernel masks rows and keys past N
    o = np.zeros((B, nh, N, d), np.float32)
    l = np.zeros((B, nh, N), np.float32)
    m = np.full((B, nh, N), -np.inf, np.float32)
    scale = np.float32(1 / np.sqrt(d))
    smem = (3 * tile * d + tile * tile) * 4
    kernel("classics.cu", "forward_kernel", name_expressions=REDUCE5)(
        (B, nh), (tile,), (q, k, v, np.int32(N), np.int32(d), np.int32(tc), np.int32(tc), np.int32(tile), np.int32(tile),
                        scale, l, m, o), shared_mem=smem, check_races=True)
    np.testing.assert_allclose(o, attention_reference(q, k, v, 1 / np.sqrt(d)), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("B, T, C", [(2, 5, 100), (1, 9, 32)])
def test_llm_c_layernorm_backward(B, T, C):
    inp = rng.standard_normal((B, T, C)).astype(np.float32)
    weight, dout = rng.standard_normal(C).astype(np.float32), rng.standard_normal((B, T, C)).astype(np.float32)
    x = inp.astype(np.float64)
    mean = x.mean(-1)
    rstd = 1 / np.sqrt(x.var(-1) + 1e-5)
    dinp, dweight, dbias = np.zeros_like(inp), np.zeros(C, np.float32), np.zeros(C, np.float32)
    block = 128
    kernel("classics.cu", "layernorm_backward_kernel2", name_expressions=REDUCE5)(
        (cdiv(B * T, block // 32),), (block,), (dinp, dweight, dbias, dout, inp, weight, mean.astype(np.float32),
                                          rstd.astype(np.float32), np.int32(B), np.int32(T), np.int32(C)),
        shared_mem=2 * C * 4)
    norm = (x - mean[..., None]) * rstd[..., None]
    dnorm = weight * dout.astype(np.float64)
    expect = (dnorm - dnorm.mean(-1, keepdims=True) - norm * (dnorm * norm).mean(-1, keepdims=True)) * rstd[..., None]
    np.testing.assert_allclose(dinp, expect, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(dbias, dout.astype(np.float64).sum((0, 1)), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(dweight, (norm * dout).sum((0, 1)), rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------------------------------------
# Round 5's left-alones, and host code refused by name
# ------------------------------------------------------------------------------------------------
def test_a_kernel_named_printf_builds_and_device_printf_still_prints(capfd):
    src = '''#include <cstdio>
    extern "C" __global__ void printf(int* out) { out[threadIdx.x] = threadIdx.x; }
    extern "C" __global__ void say(int v) { if (threadIdx.x == 0) printf("value %d\\n", v); }'''
    mod = RawModule(code=src)
    out = np.zeros(32, np.int32)
    mod.get_function("printf")((1,), (32,), (out,))
    np.testing.assert_array_equal(out, np.arange(32))
    mod.get_function("say")((1,), (32,), (np.int32(42),))
    assert "value 42" in capfd.readouterr().out


SHARED_CLASS = 'extern "C" __global__ void k(float* out) {{\n    __shared__ P s[32];\n' \
               '    s[threadIdx.x].x = threadIdx.x;\n    __syncthreads();\n    out[threadIdx.x] = s[31 - threadIdx.x].x;\n}}'


@pytest.mark.parametrize("definition, reason", [
    ("struct P { float x; __device__ P() { x = 1; } };", "has a default constructor whose body is not empty"),
    ("struct P { float x; __device__ P() : x(1) {} };", "has a default constructor with a member initializer list"),
    ("struct P { float x = 0; };", "gives a member a default value"),
    ("class P { public: float x{1}; };", "gives a member a default value"),
    ("struct P { float x; __device__ virtual float get() const { return x; } };", "has virtual functions"),
    ("struct P { float x; __device__ ~P() { x = 0; } };", "has a destructor whose body is not empty"),
])
def test_shared_arrays_of_a_class_cuda_cannot_construct_are_refused_as_nvcc_does(definition, reason):
    with pytest.raises(CompileError, match=r"line 3: __shared__ variable 's' has class type 'P' \(line 1\), which "
                                           + reason + r".*initialization is not supported for __shared__ variables"):
        RawModule(code=definition + "\n" + SHARED_CLASS.format()).compile()


EMPTY_CONSTRUCTORS = r'''
struct A { float x; __device__ A() {} __device__ A(float v) : x(v) {} };  // the empty one is what runs
struct B { float x; B() = default; __device__ ~B() {} };
struct C { static constexpr int N = 4; enum { M = 2 }; float x; __device__ int f() const { int a = N; return a; } };
template <class P>
__device__ void reverse(float* out) {
    __shared__ P s[32];
    s[threadIdx.x].x = threadIdx.x;
    __syncthreads();
    out[threadIdx.x] = s[31 - threadIdx.x].x;
}
struct D { float x; __device__ D() { x = 1; } };  // refused as an array, fine behind a pointer
extern "C" __global__ void k(float* a, float* b, float* c) {
    __shared__ D* none;
    if (threadIdx.x == 0) none = nullptr;
    __syncthreads();
    reverse<A>(a); reverse<B>(b); reverse<C>(none ? nullptr : c);
}
'''


def test_shared_arrays_of_a_class_with_an_empty_constructor_run():
    outs = [np.zeros(32, np.float32) for _ in range(3)]
    RawModule(code=EMPTY_CONSTRUCTORS).get_function("k")((1,), (32,), tuple(outs))
    for out in outs:
        np.testing.assert_array_equal(out, np.arange(32)[::-1])


@pytest.mark.parametrize("src, match", [
    ('template <int B, typename T> __global__ void k(T* x) { x[threadIdx.x] = B; }\nvoid launch(float* x) {\n'
     '    if (x) {\n        k<128, float><<<1, 128>>>(x);\n    }\n}',
     r":4: a kernel launch <<<\.\.\.>>> in the host function 'launch'.*name_expressions=\['k<128, float>'\]"),
    ('extern "C" __global__ void k(float* x) { x[threadIdx.x] = 1; }\nint main() { k<<<1, 32>>>(0); return 0; }',
     r"k\.cu:2: a kernel launch <<<\.\.\.>>> in the host function 'main'.*get_function\('k'\)"),
    ('extern "C" __global__ void child(float* x) { x[0] = 1; }\nextern "C" __global__ void k(float* x) {\n'
     '    auto go = [&]() { child<<<1, 1>>>(x); };\n    go();\n}',
     r"child\.cu:3: a kernel launch <<<\.\.\.>>> inside device code \(CUDA dynamic parallelism\)"),
    ('extern "C" __global__ void k(float* x) {}\nvoid go(float* x) { void* a[] = {&x};\n'
     '    cudaLaunchCooperativeKernel((void*)k, 1, 1, a); }',
     r"k\.cu:3: cudaLaunchCooperativeKernel\(\) is the CUDA runtime's host API.*enable_cooperative_groups=True"),
    ('extern "C" __global__ void k(float* x) {}\nvoid sync() { cudaStreamSynchronize(0); }',
     r"k\.cu:2: cudaStreamSynchronize\(\) is the CUDA runtime's host API"),
    ('template <int B> __global__ void k(float* x) { x[threadIdx.x] = B; }',
     r"only template __global__ functions \(k\).*name_expressions=\['k<\.\.\.>'\]"),
])
def test_host_code_and_template_only_sources_are_refused_by_name(src, match):
    with pytest.raises(CompileError, match=match):
        RawModule(code=src, name_expressions=["k<128, float>"] if "launch" in src else None).compile()


def test_fake_cupy_elementwise_and_reduction_kernels_run_in_the_emulator(monkeypatch):
    fake_cupy = pytest.importorskip("fake_cupy")
    cp = fake_cupy.install(monkeypatch)
    squared_diff = cp.ElementwiseKernel("T x, T y", "T z", "z = (x - y) * (x - y)", "squared_diff")
    hx, hy = rng.standard_normal((3, 4)).astype(np.float32), rng.standard_normal(4).astype(np.float32)
    x, y = cp.asarray(hx), cp.asarray(hy)
    z = squared_diff(x, y)  # y broadcasts along the rows, as in CuPy's user guide
    assert isinstance(z, cp.ndarray) and z.dtype == np.float32 and z.shape == (3, 4)
    np.testing.assert_array_equal(cp.asnumpy(z), (hx - hy) ** 2)
    out = cp.empty((3, 4), dtype=cp.float32)
    assert squared_diff(x, y, out) is out  # a given output comes back as the same device array
    np.testing.assert_array_equal(out.get(), (hx - hy) ** 2)
    with pytest.raises(TypeError, match="Unsupported type"):
        squared_diff(x, hy)  # a NumPy array in a device kernel, as CuPy refuses it
    l2norm = cp.ReductionKernel("T x", "T y", "x * x", "a + b", "y = sqrt(a)", "0", "l2norm")
    norms = l2norm(x, axis=1)
    assert isinstance(norms, cp.ndarray) and norms.shape == (3,)
    np.testing.assert_allclose(norms.get(), np.sqrt((hx.astype(np.float64) ** 2).sum(1)), rtol=1e-6)
    with pytest.raises(fake_cupy.FakeCupyLimit):
        cp.RawModule(code="")  # raw kernels still need device pointers


def test_ptx_arithmetic_wraps_saturates_and_compares_as_ptx_defines():
    n = 400
    a = rng.integers(-2**31, 2**31, n, dtype=np.int64).astype(np.int32)
    b = rng.integers(-2**31, 2**31, n, dtype=np.int64).astype(np.int32)
    x = (rng.standard_normal(n) * 4).astype(np.float32)
    y = (rng.standard_normal(n) * 4).astype(np.float32)
    x[:8] = [0.5, 1.5, 2.5, -2.5, np.nan, 3.0, 1e30, -1e30]
    y[:8] = [0.5, np.nan, 2.5, 1.0, 1.0, 3.0, 0.0, 0.0]
    iout, fout, hout = np.zeros((n, 6), np.int32), np.zeros((n, 2), np.float32), np.zeros((n, 2), np.uint32)
    kernel("ptx.cu", "ptx_arith")((cdiv(n, 128),), (128,), (a, b, x, y, iout, fout, hout, np.int32(n)))
    a64, b64 = a.astype(np.int64), b.astype(np.int64)
    wrap = lambda v: ((v + 2**31) % 2**32 - 2**31).astype(np.int32)  # noqa: E731
    np.testing.assert_array_equal(iout[:, 0], wrap(a64 * b64 + a64))
    np.testing.assert_array_equal(iout[:, 1], np.clip(a64 + b64, -2**31, 2**31 - 1))
    np.testing.assert_array_equal(iout[:, 2], (a64 * b64) >> 32)  # mul.wide's high word = mul.hi
    np.testing.assert_array_equal(iout[:, 3], wrap(a64 * b64))
    with np.errstate(invalid="ignore", over="ignore"):
        np.testing.assert_array_equal(iout[:, 4], np.where(np.isnan(x), 0, np.clip(np.rint(x.astype(np.float64)),
                                                                                    -2**31, 2**31 - 1)))
        big = x.astype(np.float32) * np.float32(1e9)
        np.testing.assert_array_equal(iout[:, 5], np.where(np.isnan(big), 0, np.clip(np.trunc(big.astype(np.float64)),
                                                                                     -2**31, 2**31 - 1)))
        ne = (x < y) | (x > y)
        flags = ne * 1 + (x != y) * 2 + ((x < y) & ne) * 4
        np.testing.assert_array_equal(fout[:, 1], flags)
        np.testing.assert_array_equal(fout[:, 0], np.where(np.isnan(x + y), 0, np.clip(x + y, 0, 1)))
    with np.errstate(invalid="ignore", over="ignore"):
        hx = np.stack([x, y], 1).astype(np.float16)
        hy = np.stack([y, np.full(n, 0.5, np.float32)], 1).astype(np.float16)
        fma = (hx.astype(np.float64) * hy + hx).astype(np.float16)  # the exact product and sum, rounded once
        mx = np.fmax(hx, hy)
    canonical = lambda h: np.where(np.isnan(h), np.uint16(0x7FFF), h.view(np.uint16))  # noqa: E731  (a GPU's NaN)
    np.testing.assert_array_equal(hout[:, 0], canonical(fma).view(np.uint32).ravel())
    np.testing.assert_array_equal(hout[:, 1], canonical(mx).view(np.uint32).ravel())


# ------------------------------------------------------------------------------------------------
# Math API extras and grid-level cooperative-groups queries
# ------------------------------------------------------------------------------------------------
def test_special_functions_and_norms_of_the_math_api():
    special = pytest.importorskip("scipy.special")
    x = np.concatenate([rng.uniform(-30, 30, 60), [0.0, 1e-3, -1.5, 26.5, 99.0, 150.0, 1e6, -0.3]])
    n = len(x)
    out, outf = np.zeros((n, 8)), np.zeros((n, 2), np.float32)
    kernel("math_extras.cu", "special_functions")((cdiv(n, 32),), (32,), (x, out, outf, np.int32(n)))
    with np.errstate(over="ignore", divide="ignore"):
        expect = [special.i0(x), special.i1(x), special.erfcx(x), 1 / np.hypot(x, 3.0), np.full(n, np.sqrt(2) * 1e300),
                  1 / np.sqrt(x * x + 14), 1 / np.cbrt(x), np.ones(n)]
    for k, want in enumerate(expect):
        np.testing.assert_allclose(out[:, k], want, rtol=1e-13, err_msg=f"column {k}")
    xf = x.astype(np.float32).astype(np.float64)
    with np.errstate(over="ignore"):
        np.testing.assert_allclose(outf[:, 0], special.i0(xf).astype(np.float32), rtol=1e-6)
        np.testing.assert_allclose(outf[:, 1], special.erfcx(xf).astype(np.float32), rtol=1e-6)


def test_grid_group_block_queries_and_free_functions():
    out = np.zeros((6, 6), np.uint64)
    kernel("math_extras.cu", "grid_queries")((3, 2), (64,), (out,))
    ranks = np.arange(6)
    bx, by = ranks % 3, ranks // 3
    np.testing.assert_array_equal(out[:, 0], ranks)
    np.testing.assert_array_equal(out[:, 1], 6)
    np.testing.assert_array_equal(out[:, 2], 302)
    np.testing.assert_array_equal(out[:, 3], bx * 100 + by)
    np.testing.assert_array_equal(out[:, 4], ranks * 64)
    np.testing.assert_array_equal(out[:, 5], 64 + 384 * 1000)


def test_ptx_ordered_loads_and_stores_basic_barrier_and_scheduling_attributes():
    n = 256
    x = rng.integers(0, 1000, n).astype(np.uint32)
    f = rng.integers(0, 50, n).astype(np.float32)
    slots, out = np.zeros(n, np.uint32), np.zeros(n, np.uint32)
    kernel("ptx.cu", "ordered_exchange")((2,), (128,), (x, slots, f, out), check_races=True)
    neighbour = x.reshape(2, 128)[:, (np.arange(128) + 1) % 128].ravel()
    np.testing.assert_array_equal(slots, 3 * x)
    np.testing.assert_array_equal(out, 3 * x + neighbour + f.astype(np.uint32))


# (Named barriers, bar.sync / bar.arrive with a thread count, run since round 21: tests/test_emulator_others_r21.py.)
# Thread block clusters, refused by name here until round 32, run since: tests/test_emulator_clusters_r32.py.


@pytest.mark.parametrize("header, library", [("torch/types.h", "PyTorch's C++ extension API"), ("cutlass/cutlass.h", "CUTLASS"),
                                             ("cuda_fp4.h", "the FP4 types"), ("cute/tensor.hpp", "CuTe")])
def test_headers_of_libraries_the_emulator_lacks_are_named(header, library):
    with pytest.raises(CompileError, match=re.escape(header) + " belongs to " + re.escape(library)):
        RawModule(code=f'#include <{header}>\nextern "C" __global__ void k(float* d) {{}}').compile()


def test_coalesced_group_ballot_match_and_tiles_answer_in_ranks_as_cuda():
    keys = rng.integers(0, 3, 32).astype(np.int32)
    ballots, matches, tiles = (np.zeros(32, np.uint32) for _ in range(3))
    kernel("groups.cu", "coalesced_ranks")((1,), (32,), (keys, ballots, matches, tiles))
    odd = np.arange(1, 32, 2)  # rank r is lane 2r + 1
    ranks = np.arange(16)
    np.testing.assert_array_equal(ballots[odd], sum(1 << int(r) for r in ranks if r % 3 == 0))
    k = keys[odd]
    np.testing.assert_array_equal(matches[odd], [sum(1 << j for j in range(16) if k[j] == v) for v in k])
    expect = ranks % 4 + 10 * 4 + 100 * (ranks // 4) + 1000 * 4 + 10000 * k[ranks // 4 * 4]
    np.testing.assert_array_equal(tiles[odd], expect)
    assert not ballots[::2].any()


# ------------------------------------------------------------------------------------------------
# FP8 (cuda_fp8.h): E4M3 and E5M2, saturating and not, against ml_dtypes' float8 types
# ------------------------------------------------------------------------------------------------
def fp8_values(n):
    x = (rng.standard_normal(n) * np.exp2(rng.integers(-12, 12, n))).astype(np.float32)
    x[:12] = [0.0, -0.0, np.nan, np.inf, -np.inf, 448.0, 464.0, 470.0, 1e5, 61440.0, -7e4, 2.0 ** -10]
    return x


def test_fp8_quantize_in_both_saturation_modes_and_dequantize():
    ml_dtypes = pytest.importorskip("ml_dtypes")
    n = 700
    x = fp8_values(n)
    scale = np.float32(1.0)
    q4, q5, nosat4, nosat5 = (np.zeros(n, np.uint8) for _ in range(4))
    back4, back5 = np.zeros(n, np.float32), np.zeros(n, np.float32)
    half4 = np.zeros(n, np.float16)
    kernel("fp8.cu", "fp8_quantize")((cdiv(n, 128),), (128,), (x, scale, q4, q5, nosat4, nosat5, back4, back5, half4, np.int32(n)))
    e4, e5 = ml_dtypes.float8_e4m3fn, ml_dtypes.float8_e5m2
    with np.errstate(over="ignore", invalid="ignore"):
        # round to nearest even; without saturation E4M3 overflows to NaN and E5M2 to infinity
        nosat = {e4: x.astype(e4).view(np.uint8), e5: x.astype(e5).view(np.uint8)}
        sat = {e4: np.clip(x, -448, 448).astype(e4).view(np.uint8),  # (np.clip keeps NaN)
               e5: np.clip(x, -57344, 57344).astype(e5).view(np.uint8)}

    def check(got, want, fmt):  # a NaN is the GPU's canonical 0x7F (either sign) here, any NaN in ml_dtypes
        nan = np.isnan(want.view(fmt).astype(np.float32))
        np.testing.assert_array_equal(got[~nan], want[~nan])
        assert (got[nan] & 0x7F == 0x7F).all() and nan[2]
    check(nosat4, nosat[e4], e4)
    check(q4, sat[e4], e4)
    check(nosat5, nosat[e5], e5)
    check(q5, sat[e5], e5)
    np.testing.assert_array_equal(back4, q4.view(e4).astype(np.float32))
    np.testing.assert_array_equal(back5, q5.view(e5).astype(np.float32))
    np.testing.assert_array_equal(half4, q4.view(e4).astype(np.float16))


def test_fp8_pairs_and_quads_pack_the_first_value_low():
    ml_dtypes = pytest.importorskip("ml_dtypes")
    n4 = 50
    x = (rng.standard_normal((n4, 4)) * 10).astype(np.float32)
    quads, pairs, back = np.zeros((n4, 4), np.uint8), np.zeros((n4, 2), np.uint8), np.zeros((n4, 4), np.float32)
    kernel("fp8.cu", "fp8_pack")((cdiv(n4, 32),), (32,), (x, quads, pairs, back, np.int32(n4)))
    np.testing.assert_array_equal(quads, x.astype(ml_dtypes.float8_e4m3fn).view(np.uint8))
    np.testing.assert_array_equal(pairs, x[:, :2].astype(ml_dtypes.float8_e5m2).view(np.uint8))
    np.testing.assert_array_equal(back, x.astype(ml_dtypes.float8_e4m3fn).astype(np.float32))


def test_ptx_dp4a_signed_and_mixed_with_cvta_and_prefetch():
    n = 200
    a = rng.integers(-2**31, 2**31, n, dtype=np.int64).astype(np.int32)
    b = rng.integers(-2**31, 2**31, n, dtype=np.int64).astype(np.int32)
    out = np.zeros((n, 2), np.int32)
    kernel("ptx.cu", "int8_dots")((cdiv(n, 64),), (64,), (a, b, out, np.int32(n)))
    sa, sb, ua = a.view(np.int8).reshape(n, 4), b.view(np.int8).reshape(n, 4), a.view(np.uint8).reshape(n, 4)
    np.testing.assert_array_equal(out[:, 0], (sa.astype(np.int64) * sb).sum(1) + np.arange(n))
    np.testing.assert_array_equal(out[:, 1], (ua.astype(np.int64) * sb).sum(1))


def test_ptx_symbolic_operand_names():
    a, b = rng.integers(-1000, 1000, 32).astype(np.int32), rng.integers(-1000, 1000, 32).astype(np.int32)
    out = np.zeros(32, np.int32)
    kernel("ptx.cu", "named_operands")((1,), (32,), (a, b, out))
    np.testing.assert_array_equal(out, a * b + a)


def test_ptx_cvt_directed_rounding_when_narrowing():
    n = 300
    x = rng.standard_normal(n) * np.exp2(rng.integers(-60, 60, n))
    x[:4] = [1.0, -0.0, 1 + 2.0**-30, -(1 + 2.0**-30)]
    big = rng.integers(-2**31, 2**31, n, dtype=np.int64).astype(np.int32)
    out = np.zeros((n, 5), np.float32)
    kernel("ptx.cu", "cvt_directed")((cdiv(n, 128),), (128,), (x, big, out, np.int32(n)))
    rn, rz, rm, rp, iz = out.T.astype(np.float64)
    np.testing.assert_array_equal(out[:, 0], x.astype(np.float32))
    assert (rm <= x).all() and (x <= rp).all()
    exact = rm == rp
    assert (rm[exact] == x[exact]).all()
    np.testing.assert_array_equal(np.nextafter(out[~exact, 2], np.float32(np.inf)), out[~exact, 3])  # neighbours
    np.testing.assert_array_equal(rz, np.where(x > 0, rm, rp))
    b = big.astype(np.float64)
    step = np.spacing(np.abs(out[:, 4])).astype(np.float64)  # the float above |iz| overshoots |b|
    assert (np.abs(iz) <= np.abs(b)).all() and (np.abs(b) - np.abs(iz) < step).all()


def test_fp8_pairs_through_inline_ptx_cvt():
    ml_dtypes = pytest.importorskip("ml_dtypes")
    n = 300
    x = fp8_values(2 * n).reshape(n, 2)
    e4, e5, e4relu = (np.zeros((n, 2), np.uint8) for _ in range(3))
    halves = np.zeros((n, 2), np.float16)
    kernel("fp8.cu", "fp8_ptx")((cdiv(n, 64),), (64,), (x, e4.view(np.uint16), e5.view(np.uint16), e4relu.view(np.uint16),
                                                  halves.view(np.uint32), np.int32(n)))  # (byte / half pairs)
    with np.errstate(invalid="ignore"):
        want4 = np.clip(x, -448, 448).astype(ml_dtypes.float8_e4m3fn)
        want5 = np.clip(x, -57344, 57344).astype(ml_dtypes.float8_e5m2)
        relu = np.clip(np.where(x < 0, 0, x), 0, 448).astype(ml_dtypes.float8_e4m3fn)
    for got, want in ((e4, want4), (e5, want5), (e4relu, relu)):
        nan = np.isnan(want.astype(np.float32))
        np.testing.assert_array_equal(got[~nan], want.view(np.uint8)[~nan])
        assert (got[nan] & 0x7F == 0x7F).all()
    np.testing.assert_array_equal(halves, want4.astype(np.float16))
