"""Round 13: the cost of the fences' read checks, and ~20 more kernels written as people publish them.

Read checks: round 12 compiled GCC's inline kernel-address checks into every fast build, so that a read of the
bytes still mapped around an argument array's fenced copy (x[-1], or the < 16 bytes past an odd-sized array) is a
KernelFault at its line.  Measured (rt.sh, interleaved, /tmp/h180/bench_readcheck.py): siboehm's register-tiled
SGEMMs 4.2-4.3x slower, FlashAttention 1.7x, the naive SGEMM 1.5x, layernorm and GELU within noise.  So they are
opt-in, as compute-sanitizer's memcheck is: ``memcheck=True`` on a launch, or ``$MINILORA_EMU_MEMCHECK=1``; the
public-kernel test files (round 11, 12 and this one) run under it.  Without it the guard pages still name every
access 16 bytes or more past an array and every write next to one (found after the launch).

tests/emu_kernels/r13/*.cu: ~40 kernels as CUB's examples, the CUDA samples, NVIDIA's blog posts and public repos
write them (CUB block/warp collectives, cooperative groups, warp primitives, half2/bfloat162, atomicCAS loops,
__ldg/__launch_bounds__/size_t grid-stride loops, constexpr templates, dynamic shared memory, printf, assert),
unedited, against NumPy float64 references on ragged sizes.  What needed the emulator fixed (each test failed before):
* sinpif/cospif/sincospif (and the double ones) of NaN stopped the kernel with a KernelFault inside cuda_emu.h (its
  quadrant reduction converted NaN to int); a GPU gives NaN.
* cub::BlockHistogram, BlockDiscontinuity, BlockAdjacentDifference, BlockShuffle, BlockMergeSort,
  BlockRunLengthDecode, WarpLoad, WarpStore, WarpExchange and WarpMergeSort were refused by name at build time:
  the stand-in has them now.
Pre-Volta warp-synchronous code (a last-warp unroll without __syncwarp) is reported by racecheck and check_races,
a full-mask shuffle after lanes left by a BarrierError.  Cold cache: ~17 s of CPU (5 builds); warm: 3.5 s.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest

from minilora import emulator as emu
from minilora.emulator import KernelFault, RawKernel, RawModule

R13 = Path(__file__).parent / "emu_kernels" / "r13"
# the public kernels run under memcheck: every load checked against the arguments' fences
pytestmark = [pytest.mark.skipif(not emu.is_available(), reason="the CUDA emulator needs g++"),
              pytest.mark.usefixtures("memcheck_every_launch")]
TEMPLATES = ("block_scan_kernel<128, 4>", "block_radix_sort_kernel<64, 4>", "templated_block_sum<float, 128, true>",
             "templated_block_sum<double, 256, false>", "block_histogram_kernel<64, 4, cub::BLOCK_HISTO_SORT>",
             "block_histogram_kernel<32, 8, cub::BLOCK_HISTO_ATOMIC>", "run_length_encode<64, 4>",
             "merge_sort_and_shuffle<32, 3>", "warp_sort_segments<16, 3, 4>", "warp_sort_segments<32, 2, 2>",
             "run_length_decode<32, 2, 3>")
i32, f32 = np.int32, np.float32

SHIFT = r'''
extern "C" __global__ void shift_left(float* y, const float* x, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] = x[i - 1];
}
'''


def randn(*shape, dtype=np.float32, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


def test_read_checks_are_opt_in_as_compute_sanitizers_memcheck(monkeypatch):
    monkeypatch.delenv("MINILORA_EMU_MEMCHECK", raising=False)
    kernel = RawKernel(SHIFT, "shift_left")
    x, y = randn(64), np.zeros(64, f32)
    kernel((1,), (64,), (y, x, i32(64)))  # x[-1]: the fill pattern before the copy, read silently as on a GPU
    np.testing.assert_array_equal(y[1:], x[:-1])
    with pytest.raises(KernelFault, match=r"thread \(0,0,0\) .*invalid memory access: a 4-byte read .*4 bytes "
                                          r"before the start of argument 1 \('x'\)"):
        kernel((1,), (64,), (y, x, i32(64)), memcheck=True)
    monkeypatch.setenv("MINILORA_EMU_MEMCHECK", "1")
    with pytest.raises(KernelFault, match=r"4 bytes before the start of argument 1 \('x'\)"):
        kernel((1,), (64,), (y, x, i32(64)))
    kernel((1,), (64,), (y, x, i32(64)), memcheck=False)
    monkeypatch.setenv("MINILORA_EMU_MEMCHECK", "yes")
    with pytest.raises(ValueError, match="MINILORA_EMU_MEMCHECK must be 1 .* or 0, got 'yes'"):
        kernel((1,), (64,), (y, x, i32(64)))


PUBLIC = dict(path=R13 / "public.cu", name_expressions=list(TEMPLATES))


@lru_cache(maxsize=None)
def public() -> RawModule:
    return RawModule(**PUBLIC).compile()


def fn(name: str):
    return public().get_function(name)


def test_cub_block_scan_and_block_radix_sort_on_a_ragged_tail():
    n = 1000  # two 512-item tiles, the second one ragged
    x = np.random.default_rng(0).integers(-50, 50, n).astype(np.int32)
    out, sums = np.full(n, -7, np.int32), np.zeros(2, np.int32)
    fn("block_scan_kernel<128, 4>")((2,), (128,), (x, out, sums, i32(n)))
    tiles = [x[:512], x[512:]]
    np.testing.assert_array_equal(out, np.concatenate([np.cumsum(t) - t for t in tiles]))
    np.testing.assert_array_equal(sums, [t.sum() for t in tiles])
    n = 700  # three 256-key blocks, the last one padded
    keys = np.random.default_rng(1).integers(0, 2**32, n, dtype=np.uint64).astype(np.uint32)
    keys[:40] = keys[40:80]  # duplicates
    out = np.zeros(n, np.uint32)
    fn("block_radix_sort_kernel<64, 4>")((3,), (64,), (keys, out, i32(n)))
    np.testing.assert_array_equal(out, np.concatenate([np.sort(keys[k:k + 256]) for k in range(0, n, 256)]))


def test_cub_block_histogram_discontinuity_adjacent_difference_merge_sort_and_shuffle():
    # were refused by name ('cub::BlockHistogram is not provided by minilora's CUDA emulator'): the stand-in has them
    data = np.random.default_rng(11).integers(0, 256, 1000).astype(np.uint8)
    for name in ("block_histogram_kernel<64, 4, cub::BLOCK_HISTO_SORT>",
                 "block_histogram_kernel<32, 8, cub::BLOCK_HISTO_ATOMIC>"):
        hist = np.zeros(256, np.uint32)
        fn(name)((4,), (256 // (4 if "64" in name else 8),), (data, hist, i32(data.size)))
        np.testing.assert_array_equal(hist, np.bincount(data, minlength=256), err_msg=name)
    n = 230  # a ragged tile of 256
    sorted_in = np.sort(np.random.default_rng(12).integers(-30, 30, n)).astype(np.int32)
    values, starts, ends = (np.full(n, -1, np.int32) for _ in range(3))
    runs, gaps = np.zeros(1, np.int32), np.zeros(n, np.int32)
    fn("run_length_encode<64, 4>")((1,), (64,), (sorted_in, values, starts, ends, runs, gaps, i32(n)))
    expected, first, counts = np.unique(sorted_in, return_index=True, return_counts=True)
    k = runs[0]
    assert k == expected.size
    np.testing.assert_array_equal(values[:k], expected)
    np.testing.assert_array_equal(starts[:k], first)
    np.testing.assert_array_equal(ends[:k] - starts[:k], counts)
    np.testing.assert_array_equal(gaps, np.diff(sorted_in, prepend=0))  # the first item is kept
    n = 80  # of a 96-item tile, padded with oob_default 0.0
    keys = randn(n)
    keys[10:14] = [1.5, -1.5, 1.5, -1.5]  # equal |key|: the stable sort keeps their order
    keys_out, left = np.zeros(96, f32), np.zeros(96, f32)
    index, rotated = np.zeros(96, np.int32), np.zeros(32, np.int32)
    fn("merge_sort_and_shuffle<32, 3>")((1,), (32,), (keys, keys_out, index, left, rotated, i32(n)))
    order = np.concatenate([np.argsort(-np.abs(keys), kind="stable"), np.arange(n, 96)])
    np.testing.assert_array_equal(index, order)
    np.testing.assert_array_equal(keys_out, np.concatenate([keys, np.zeros(16, f32)])[order])
    np.testing.assert_array_equal(left, np.concatenate([[-1], keys_out[:-1]]))
    np.testing.assert_array_equal(rotated, (np.arange(32) + 3) % 32 * 10)
    # the warp-level pipeline (WarpLoad, WarpMergeSort, WarpExchange, WarpStore), 16- and 32-lane logical warps
    keys = np.random.default_rng(14).integers(-1000, 1000, 500).astype(np.int32)
    for name, tile, per_block in (("warp_sort_segments<16, 3, 4>", 48, 4), ("warp_sort_segments<32, 2, 2>", 64, 2)):
        out = np.full(500, -1, np.int32)
        warps = cdiv(500, tile)
        fn(name)((cdiv(warps, per_block),), (per_block * tile // (3 if tile == 48 else 2),), (keys, out, i32(500)))
        expected = np.concatenate([np.sort(keys[k:k + tile]) for k in range(0, 500, tile)])
        np.testing.assert_array_equal(out, expected, err_msg=name)
    # BlockRunLengthDecode: 50 runs (some empty) of 64 slots, decoded in windows of 96 items
    rng = np.random.default_rng(16)
    values, lengths = randn(50), rng.integers(0, 9, 50).astype(np.int32)
    lengths[[3, 4, 49]] = 0
    total = int(lengths.sum())
    out, relative, got = np.full(total, np.nan, f32), np.zeros(total, np.uint32), np.zeros(1, np.uint32)
    fn("run_length_decode<32, 2, 3>")((1,), (32,), (values, lengths, i32(50), out, relative, got))
    assert got[0] == total
    np.testing.assert_array_equal(out, np.repeat(values, lengths))
    np.testing.assert_array_equal(relative, np.concatenate([np.arange(k) for k in lengths]))


def test_cooperative_groups_tile_shfl_down_and_reduce():
    x = randn(3001)
    total = np.zeros(1, f32)
    fn("cg_sum_shfl_down")((4,), (128,), (x, total, i32(x.size)))
    # 512 float32 partial sums of ~6 terms, a tree of 32, then 16 atomics: within 1e-5 of the float64 sum
    np.testing.assert_allclose(total[0], x.astype(np.float64).sum(), rtol=1e-5, atol=1e-4)
    rows, cols = 37, 50
    x = randn(rows, cols)
    row_max, row_sum = np.zeros(rows, f32), np.zeros(rows, f32)
    fn("cg_row_max_and_sum")((cdiv(rows, 8),), (128,), (x, row_max, row_sum, i32(rows), i32(cols)))
    np.testing.assert_array_equal(row_max, x.max(1))
    np.testing.assert_allclose(row_sum, x.astype(np.float64).sum(1), rtol=1e-5, atol=1e-5)


def test_match_any_reduce_add_shfl_up_segments_and_aggregated_atomics():
    n = 1000
    keys = np.random.default_rng(2).integers(0, 13, n).astype(np.int32)
    bins = np.zeros(13, np.uint32)
    fn("match_any_histogram")((cdiv(n, 96),), (96,), (keys, bins, i32(n)))
    np.testing.assert_array_equal(bins, np.bincount(keys, minlength=13))
    u = np.random.default_rng(3).integers(0, 2**24, n).astype(np.uint32)
    total = np.zeros(2, np.uint64)
    fn("reduce_add_sync_sum")((cdiv(n, 128),), (128,), (u, total, i32(n)))
    assert total[0] == u.astype(np.uint64).sum() and total[1] == u.max()
    x = randn(900)
    y = np.full(900, np.nan, f32)
    fn("warp_shfl_up_scan")((cdiv(900, 256),), (256,), (x, y, i32(900)))
    expected = np.concatenate([np.cumsum(x[k:k + 256].astype(np.float64)) for k in range(0, 900, 256)])
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-4)
    sums = np.full(900 // 8 + 1, np.nan, f32)
    fn("segmented_sum8")((cdiv(900, 64),), (64,), (x, sums, i32(900)))
    np.testing.assert_allclose(sums, np.add.reduceat(x.astype(np.float64), np.arange(0, 900, 8)), rtol=1e-5,
                               atol=1e-6)
    out, count = np.zeros(900, f32), np.zeros(1, np.int32)
    fn("filter_positive")((cdiv(900, 128),), (128,), (x, out, count, i32(900)))
    assert count[0] == (x > 0).sum()
    np.testing.assert_array_equal(np.sort(out[:count[0]]), np.sort(x[x > 0]))  # the order is the atomics'


def half_pairs(n2, seed, low=0.25, high=4.0):
    v = np.random.default_rng(seed).uniform(low, high, 2 * n2) * np.random.default_rng(seed + 9).choice([-1, 1],
                                                                                                         2 * n2)
    return v.astype(np.float16)


def test_half2_fma_and_division_bfloat162_and_half2_atomics():
    n2 = 301
    a, b, c, d = (half_pairs(n2, s) for s in range(4))
    out = np.zeros(2 * n2, np.float16)
    fn("half2_fma_div")((cdiv(n2, 64),), (64,), (a, b, c, d, out, i32(n2)))
    # __hfma2 rounds a*b+c once (exact in float64), __h2div rounds the quotient of those halves once
    fma = (a.astype(np.float64) * b + c).astype(np.float16)
    np.testing.assert_array_equal(out, (fma.astype(np.float64) / d).astype(np.float16))
    x, y = randn(2 * n2), randn(2 * n2, seed=1)
    xb, yb = (bf16_round(v) for v in (x, y))
    out, sums = np.zeros(2 * n2, np.uint16), np.full(n2, np.nan, f32)
    fn("bf162_scale_add")((cdiv(n2, 64),), (64,), (bf16_bits(xb), bf16_bits(yb), f32(0.3), out, sums, i32(n2)))
    alpha = bf16_round(np.float32(0.3))
    expected = bf16_round(bf16_round(alpha * xb.astype(np.float64)) + yb)  # __hmul2 and __hadd2 round each
    np.testing.assert_array_equal(out, bf16_bits(expected))
    np.testing.assert_array_equal(sums, expected[0::2] + expected[1::2])
    vals = np.random.default_rng(5).integers(-8, 9, 2 * n2).astype(np.float16)  # small integers: any order exact
    which = np.random.default_rng(6).integers(0, 5, n2).astype(np.int32)
    bins = np.zeros(10, np.float16)
    fn("half2_atomic_bins")((cdiv(n2, 128),), (128,), (vals, which, bins, i32(n2)))
    pairs = vals.reshape(n2, 2).astype(np.float64)
    expected = np.stack([pairs[which == k].sum(0) for k in range(5)]).reshape(-1)
    np.testing.assert_array_equal(bins, expected.astype(np.float16))


def bf16_round(v):
    """float32 -> bfloat16 (round to nearest even), returned as float32."""
    bits = np.asarray(v, np.float32).view(np.uint32).astype(np.uint64)
    bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
    return bits.astype(np.uint32).view(np.float32)


def bf16_bits(v):
    return (np.asarray(v, np.float32).view(np.uint32) >> 16).astype(np.uint16)


def test_atomic_cas_loops_ldg_saxpy_and_templated_sums():
    x, w = randn(777), randn(777, seed=1, dtype=np.float64)
    mx, total = np.full(1, -np.inf, f32), np.zeros(1, np.float64)
    fn("cas_max_and_sum")((3,), (64,), (x, w, mx, total, i32(777)))
    assert mx[0] == x.max()
    np.testing.assert_allclose(total[0], w.sum(), rtol=1e-13)
    n = 5000
    x, y = randn(n), randn(n, seed=1)
    expected = (np.float64(f32(1.5)) * x + y).astype(f32)  # a*x+y: GCC contracts nothing here (-ffp-contract=off)
    fn("saxpy_ldg_grid_stride")((7,), (256,), (np.uint64(n), f32(1.5), x, y))
    np.testing.assert_allclose(y, expected, rtol=1e-6, atol=1e-6)
    x = randn(1000)
    out = np.zeros(3, f32)
    fn("templated_block_sum<float, 128, true>")((3,), (128,), (x, out, i32(1000)))
    np.testing.assert_allclose(out.sum(), (x.astype(np.float64) ** 2).sum(), rtol=1e-5)
    xd, outd = randn(1000, dtype=np.float64), np.zeros(2, np.float64)
    fn("templated_block_sum<double, 256, false>")((2,), (256,), (xd, outd, i32(1000)))
    np.testing.assert_allclose(outd.sum(), xd.sum(), rtol=1e-13)


def test_dynamic_shared_memory_constant_stencil_and_uchar4_histogram():
    rows, cols = 19, 333
    x = np.round(randn(rows, cols) * 4) / 4  # ties, so the lowest index among equal maxima must win
    argmax = np.full(rows, -9, np.int32)
    fn("row_argmax_dynamic_smem")((rows,), (64,), (x, argmax, i32(rows), i32(cols)), shared_mem=64 * 8)
    np.testing.assert_array_equal(argmax, x.argmax(1))
    module = public()
    weights = np.array([0.05, 0.1, 0.2, 0.3, 0.2, 0.1, 0.05], f32)
    module.get_global("c_weights")[:] = weights
    n = 1000
    x, y = randn(n), np.full(n, np.nan, f32)
    module.get_function("conv1d_constant_halo")((cdiv(n, 128),), (128,), (x, y, i32(n)), shared_mem=(128 + 6) * 4)
    padded = np.concatenate([np.zeros(3), x.astype(np.float64), np.zeros(3)])
    np.testing.assert_allclose(y, np.convolve(padded, weights[::-1], "valid"), rtol=1e-5, atol=1e-6)
    data = np.random.default_rng(7).integers(0, 256, 4 * 999).astype(np.uint8)
    hist = np.zeros(256, np.uint32)
    fn("byte_histogram_uchar4")((5,), (128,), (data, hist, i32(999)))
    np.testing.assert_array_equal(hist, np.bincount(data, minlength=256))


def test_device_printf_and_a_failed_device_assert(capfd):
    x = np.arange(1, 101, dtype=np.int32)
    fn("print_block_sums")((4,), (32,), (x, i32(100)))
    lines = sorted(capfd.readouterr().out.splitlines())
    sums = [x[k:k + 32].sum() for k in range(0, 100, 32)]
    assert lines == sorted(f"block {b}: sum={s} mean={s / 32:.3f}" for b, s in enumerate(sums))
    v, norms = randn(50), np.abs(randn(50, seed=1)) + 0.5
    fn("normalize_checked")((1,), (64,), (v, norms, i32(50)))
    norms[17] = 0.0
    line = (R13 / "public.cu").read_text().splitlines().index("        assert(norms[i] > 0.0f);") + 1
    with pytest.raises(KernelFault, match=rf"assertion `norms\[i\] > 0.0f` failed at public.cu:{line} in block "
                                          rf"\(0,0,0\) of kernel 'normalize_checked', thread \(17,0,0\)"):
        fn("normalize_checked")((1,), (64,), (v, norms, i32(50)))


SAMPLES = ("reduce_samples<float, 128, false>", "reduce_samples<double, 256, true>", "reduce_samples<int, 64, false>")


CORNERS = dict(path=R13 / "corners.cu", name_expressions=list(SAMPLES))
# built on the session's helper core meanwhile (tests/background_runs.py), as memcheck_every_launch has it
EMULATOR_BUILDS = [(PUBLIC, {"MINILORA_EMU_MEMCHECK": "1"}), (CORNERS, {"MINILORA_EMU_MEMCHECK": "1"})]


@lru_cache(maxsize=None)
def corners() -> RawModule:
    return RawModule(**CORNERS).compile()


def corner(name: str):
    return corners().get_function(name)


def test_cooperative_groups_scans_votes_and_partitions():
    n = 100  # two 64-thread blocks, the second ragged (its inactive lanes hold 0)
    x = np.random.default_rng(8).integers(-20, 61, n).astype(np.int32)
    inc, exc, count = (np.full(n, -999, np.int32) for _ in range(3))
    ballots = np.zeros(3 * 4, np.int32)
    corner("cg_scans_and_partitions")((2,), (64,), (x, inc, exc, count, ballots, i32(n)))
    v = np.concatenate([x, np.zeros(128 - n, np.int32)]).reshape(4, 32)
    np.testing.assert_array_equal(inc, np.cumsum(v, 1).reshape(-1)[:n])
    exclusive = (np.cumsum(v, 1) - v).reshape(-1)[:n]
    lane = np.arange(n) % 32
    np.testing.assert_array_equal(exc[lane > 0], exclusive[lane > 0])  # lane 0's exclusive value is undefined
    same = (v[:, :, None] & 3) == (v[:, None, :] & 3)
    sign = (v[:, :, None] < 0) == (v[:, None, :] < 0)
    np.testing.assert_array_equal(count, (same.sum(2) * 100 + sign.sum(2)).reshape(-1)[:n])
    bits = (v > 0).astype(np.int64) << np.arange(32)
    expected = np.stack([bits.sum(1).astype(np.uint32).view(np.int32), (v > 40).any(1), (v < 60).all(1)], 1)
    np.testing.assert_array_equal(ballots, expected.reshape(-1))


def test_cub_warp_reduce_block_reduce_warp_scan_and_block_votes():
    n = 300  # three 128-thread blocks: the last one has 44 valid items, one full warp and a partial one
    x = randn(n)
    warp_sums, block_max, scans = np.full(12, np.nan, f32), np.full(3, np.nan, f32), np.full(n, np.nan, f32)
    corner("cub_warp_block_reduce")((3,), (128,), (x, warp_sums, block_max, scans, i32(n)))
    v = np.concatenate([x, np.zeros(384 - n, f32)]).astype(np.float64).reshape(12, 32)
    np.testing.assert_allclose(warp_sums[:10], v.sum(1)[:10], rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(block_max, [x[k:k + 128].max() for k in range(0, n, 128)])
    np.testing.assert_allclose(scans, (np.cumsum(v, 1) - v).reshape(-1)[:n], rtol=1e-5, atol=1e-5)
    out = np.full(9, -1, np.int32)
    corner("block_votes")((3,), (128,), (x, out, i32(n)))
    blocks = [x[k:k + 128] for k in range(0, n, 128)]
    np.testing.assert_array_equal(out.reshape(3, 3), [[(b > 0).sum(), (b > 0).any(), len(b) == 128] for b in blocks])


def test_integer_and_float_intrinsics():
    n = 70
    rng = np.random.default_rng(9)
    a, b = (rng.integers(0, 2**32, n, dtype=np.uint64).astype(np.uint32) for _ in range(2))
    a[:3] = [0, 1, 0x80000000]
    out = np.zeros(8 * n, np.uint32)
    corner("integer_intrinsics")((2,), (64,), (a, b, out, i32(n)))
    out = out.reshape(n, 8).astype(np.int64)
    sa, sb = a.view(np.int8).reshape(n, 4).astype(np.int64), b.view(np.int8).reshape(n, 4).astype(np.int64)
    ua, ub = a.view(np.uint8).reshape(n, 4).astype(np.int64), b.view(np.uint8).reshape(n, 4).astype(np.int64)
    A, B = a.astype(np.int64), b.astype(np.int64)
    mask = 2**32 - 1
    np.testing.assert_array_equal(out[:, 0], ((sa * sb).sum(1) + 7) & mask)
    np.testing.assert_array_equal(out[:, 1], ua[:, 0] | ub[:, 0] << 8 | ua[:, 1] << 16 | ub[:, 1] << 24)
    shift = np.arange(n) % 40 & 31
    np.testing.assert_array_equal(out[:, 2], [(((int(y) << 32 | int(x)) << int(s)) >> 32) & mask
                                              for x, y, s in zip(a, b, shift)])
    np.testing.assert_array_equal(out[:, 3], [(int(x) * int(y)) >> 32 for x, y in zip(a, b)])
    np.testing.assert_array_equal(out[:, 4], [int(f"{int(x):032b}"[::-1], 2) for x in a])
    np.testing.assert_array_equal(out[:, 5], [32 - int(x).bit_length() for x in a])
    np.testing.assert_array_equal(out[:, 6], (np.abs(A.astype(np.int32).astype(np.int64) -
                                                     B.astype(np.int32).astype(np.int64)) + 3) & mask)
    np.testing.assert_array_equal(out[:, 7], (np.abs(ua - ub) << np.array([0, 8, 16, 24])).sum(1))
    x, y = randn(n) * 2, randn(n, seed=1) * 2
    x[:4] = [np.nan, 1 + 2**-13, -0.0, 3.5]
    y[:4] = [1.0, -(1 - 2**-13), 2.0, -0.25]
    out = np.zeros(8 * n, f32)
    corner("float_intrinsics")((2,), (64,), (x, y, out, i32(n)))
    out = out.reshape(n, 8)
    xd, yd = x.astype(np.float64), y.astype(np.float64)
    np.testing.assert_array_equal(out[:, 0], np.nan_to_num(np.clip(x, 0, 1), nan=0.0))  # NaN saturates to 0
    np.testing.assert_array_equal(out[:, 1], f32(1) / y)
    np.testing.assert_array_equal(out[:, 2], (xd * yd + 1).astype(f32))  # fused: one rounding (2**-26 in row 1)
    assert out[1, 2] == 2.0**-26  # a*b = -(1 - 2**-26): unfused, -1 + 1 = 0
    np.testing.assert_array_equal(out[:, 3], np.sqrt(np.abs(y)))
    np.testing.assert_array_equal(out[:, 4], np.copysign(f32(2), x))
    np.testing.assert_allclose(out[1:, 5], np.sin(np.pi * xd[1:]), rtol=0, atol=3e-7)
    np.testing.assert_allclose(out[1:, 6], np.cos(np.pi * xd[1:]), rtol=0, atol=3e-7)
    np.testing.assert_array_equal(out[:, 7], x / y)


def test_half_math_bf16_atomics_and_atomic_ref():
    n = 200  # bfloat16 counts exactly to 256
    h = (randn(n) * 3).astype(np.float16)
    h[:3] = [np.nan, 0.0, -0.0]
    out, total = np.zeros(4 * n, np.float16), np.zeros(1, np.uint16)
    corner("half_math")((4,), (64,), (h, out, total, i32(n)))
    out = out.reshape(n, 4)
    hd = h.astype(np.float64)
    with np.errstate(all="ignore"):
        exp, rsqrt = np.exp(hd).astype(np.float16), (1 / np.sqrt(np.abs(hd))).astype(np.float16)
        ulp = np.spacing(np.abs(exp).astype(np.float16)).astype(np.float64)  # hexp/hrsqrt: within one half ulp
    assert (np.abs(out[3:, 0].astype(np.float64) - exp[3:]) <= ulp[3:]).all() and np.isnan(out[0, 0])
    ulp = np.spacing(rsqrt[3:]).astype(np.float64)
    assert (np.abs(out[3:, 1].astype(np.float64) - rsqrt[3:]) <= ulp).all() and np.isinf(out[1, 1])
    np.testing.assert_array_equal(out[:, 2], np.where(np.isnan(h), np.nan, np.maximum(h, np.float16(0.5))))
    np.testing.assert_array_equal(out[:, 3], np.where(np.isnan(h), np.float16(-1), -h))
    assert total[0] == bf16_bits(np.float32(n))
    x = np.random.default_rng(10).integers(-1000, 1000, n).astype(np.int32)
    stats = np.array([0, -5000], np.int32)
    corner("atomic_ref_stats")((4,), (64,), (x, stats, i32(n)))
    np.testing.assert_array_equal(stats, [x.sum(), x.max()])


def test_device_printf_formats(capfd):
    corner("printf_formats")((1,), (32,), (np.int64(-2**40), np.uint32(3000000000), f32(3.14159), 1.5e-7))
    assert capfd.readouterr().out == "big=-1099511627776 u=3000000000 hex=b2d05e00 e=1.500000e-07 g=3.14159 s=ok " \
                                     "c=Z f= 3.14\n"


def test_pre_volta_warp_synchronous_code_is_reported():
    kernel = RawModule(path=R13 / "volta_warp.cu").get_function("last_warp_unsynchronized")
    x, out = randn(512), np.zeros(4, f32)
    source = (R13 / "volta_warp.cu").read_text().splitlines()
    lines = [source.index(f"        sdata[tid] += sdata[tid + {k}];") + 1 for k in (32, 16, 8, 4, 2, 1)]
    at = "|".join(map(str, lines))
    with pytest.raises(emu.RaceError, match=rf"hazard on __shared__ 'sdata' .* at volta_warp.cu:({at}), then thread "
                                            rf"\(\d+,0,0\) writes it at volta_warp.cu:({at}), with no "
                                            r"__syncthreads\(\) \(or __syncwarp\(\) within a warp\)"):
        kernel((4,), (128,), (x, out, i32(512)), racecheck=True)
    with pytest.raises(emu.RaceError, match="different results under different thread schedules"):
        kernel((4,), (128,), (x, out, i32(512)), check_races=True)


def test_cuda_samples_shared_memory_template_reduce_and_threadfence_reduction():
    x = randn(1000)
    partial = np.zeros(8, f32)
    corner("reduce_samples<float, 128, false>")((8,), (128,), (x, partial, np.uint32(1000)), shared_mem=128 * 4)
    np.testing.assert_allclose(partial.sum(), x.astype(np.float64).sum(), rtol=1e-5, atol=1e-4)
    xd, partial = randn(1024, dtype=np.float64), np.zeros(2)
    corner("reduce_samples<double, 256, true>")((2,), (256,), (xd, partial, np.uint32(1024)), shared_mem=256 * 8)
    np.testing.assert_allclose(partial.sum(), xd.sum(), rtol=1e-13)
    xi, partial = np.random.default_rng(13).integers(-100, 100, 999).astype(np.int32), np.zeros(8, np.int32)
    corner("reduce_samples<int, 64, false>")((8,), (64,), (xi, partial, np.uint32(999)), shared_mem=64 * 4)
    assert partial.sum() == xi.sum()
    partials, total = np.zeros(4, f32), np.zeros(1, f32)
    for _ in range(2):  # the last block resets the __device__ ticket counter for the next launch
        total[0] = np.nan
        corner("threadfence_sum")((4,), (128,), (x, partials, total, i32(1000)))
        np.testing.assert_allclose(total[0], x.astype(np.float64).sum(), rtol=1e-5, atol=1e-4)


def test_half_and_bfloat16_operators_half2_shuffles_and_atomics_of_every_kind():
    n = 50
    h = (randn(n) * 3).astype(np.float16)
    b = randn(n, seed=1)
    out = np.zeros(4 * n, f32)
    corner("half_operators")((1,), (64,), (h, bf16_bits(bf16_round(b)), out, i32(n)))
    out = out.reshape(n, 4)
    hd = h.astype(np.float64)
    r = (np.float16(hd * 2) + h).astype(np.float16) + np.float16(1)  # each half operation rounds
    np.testing.assert_array_equal(out[:, 0], r.astype(f32) * f32(0.5))
    np.testing.assert_array_equal(out[:, 1], np.where(h > 0, 1, -1))
    bb = bf16_round(b)
    np.testing.assert_array_equal(out[:, 2], bf16_round(bf16_round(bb * bb) - f32(1)))
    np.testing.assert_array_equal(out[:, 3], (np.abs(h) * np.float16(-2)).astype(f32))
    h2 = randn(64, seed=2).astype(np.float16)
    out2 = np.zeros(128, np.float16)
    corner("half2_shuffle")((2,), (32,), (h2, out2, i32(32)))
    pairs = out2.reshape(32, 2, 2)
    np.testing.assert_array_equal(pairs[:, 1], h2.reshape(32, 2))  # swapped, then put back by halves
    butterfly = h2.reshape(32, 2).astype(np.float64)  # a 5-step xor butterfly: every lane ends with the warp's sum
    assert np.allclose(pairs[:, 0].astype(np.float64), butterfly.sum(0), rtol=5e-3, atol=2e-2)
    fx = np.zeros(1, f32)
    counters = np.array([0, 3, 0, 0], np.uint32)
    bits, low = np.array([0, 2**64 - 1], np.uint64), np.array([2**62], np.int64)
    short = np.zeros(1, np.uint16)
    corner("atomics_misc")((2,), (50,), (fx, counters, bits, low, short, i32(100)))
    assert fx[0] == 3.5 and short[0] == 100 and low[0] == 901 * 10**9
    # atomicInc(9) 100 times from 0 wraps every 10; atomicDec(5) from 3 cycles through 6 values
    np.testing.assert_array_equal(counters, [100 % 10, 5, 200, 300])
    np.testing.assert_array_equal(bits, [2**64 - 1, 0])


def test_a_full_mask_shuffle_after_lanes_left_is_reported():
    x, out = randn(64), np.zeros(2, f32)
    line = (R13 / "corners.cu").read_text().splitlines().index(
        "        for (int o = 16; o > 0; o /= 2) v += __shfl_down_sync(0xffffffff, v, o);") + 1
    with pytest.raises(emu.BarrierError, match=rf"warp collective at corners.cu:{line} .*mask 0xffffffff\) can "
                                               r"never complete: lanes 8-31 have exited"):
        corner("shfl_full_mask_in_branch")((1,), (64,), (x, out, i32(40)))


@pytest.mark.parametrize("workers", [1, 2])
def test_single_pass_scan_with_decoupled_look_back_across_blocks(workers):
    # each tile spins on its predecessors' published status: blocks run in ticket order, so the wait ends
    n = 5000
    x = np.random.default_rng(15).integers(0, 4, n).astype(f32)  # small integers: every sum exact in float32
    out, status, ticket = np.zeros(n, f32), np.zeros(cdiv(n, 256), np.uint64), np.zeros(1, np.uint32)
    corner("lookback_scan")((cdiv(n, 256),), (256,), (x, out, status, ticket, i32(n)), workers=workers, timeout=60)
    np.testing.assert_array_equal(out, np.cumsum(x))
    assert ticket[0] == cdiv(n, 256) and (status & 0xFFFFFFFF == 2).all()  # every tile published its prefix
