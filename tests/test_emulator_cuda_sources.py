"""CUDA written the way public samples write it runs unchanged on the emulator (issue 15).

The kernels in tests/emu_kernels/portability/ use what real sources use -- cooperative groups so far --
and are matched to NumPy; each file is also compiled by nvcc for sm_90 (skipped without nvcc) to
prove it is real CUDA and not a dialect of the emulator's own.
"""
from __future__ import annotations

import shutil
import subprocess
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest

from minilora import emulator as emu, kernels
from minilora.emulator import KernelFault, RawModule

PDIR = Path(__file__).parent / "emu_kernels" / "portability"
pytestmark = pytest.mark.skipif(not emu.is_available(), reason="the CUDA emulator needs g++")
rng = np.random.default_rng(15)


@lru_cache(maxsize=None)
def module(filename: str) -> RawModule:
    return RawModule(path=PDIR / filename)


def fn(filename: str, name: str):
    return module(filename).get_function(name)


# ------------------------------------------------------------------------------------------------
# Cooperative groups
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n, block", [(1, 32), (1000, 256), (4099, 96)])
def test_cg_block_sum_with_tiles_and_reduce(n, block):
    x = rng.standard_normal(n).astype(np.float32)
    blocks = -(-n // block)
    out = np.full(blocks, np.nan, np.float32)
    fn("cg_reduce.cu", "cg_block_sum")((blocks,), (block,), (x, out, np.int32(n)))
    padded = np.zeros(blocks * block, np.float64)
    padded[:n] = x
    np.testing.assert_allclose(out, padded.reshape(blocks, block).sum(1), rtol=1e-5, atol=1e-5)


def test_cg_tile_collectives():
    nt = 40  # five tiles of 8
    x = rng.integers(-50, 50, nt).astype(np.int32)
    outs = [np.full(nt, -7, np.int32) for _ in range(2)] + [np.zeros(nt, np.uint32)] + \
           [np.full(nt, -7, np.int32) for _ in range(4)]
    fn("cg_reduce.cu", "cg_tile_ops")((1,), (nt,), (x, *outs))
    maxs, mins, ballots, anys, alls, firsts, downs = outs
    tiles = x.reshape(-1, 8)
    np.testing.assert_array_equal(maxs, np.repeat(tiles.max(1), 8))
    np.testing.assert_array_equal(mins, np.repeat(tiles.min(1), 8))
    bits = ((tiles > 0) * (1 << np.arange(8))).sum(1)
    np.testing.assert_array_equal(ballots, np.repeat(bits, 8))
    np.testing.assert_array_equal(anys, np.repeat((tiles > 40).any(1), 8))
    np.testing.assert_array_equal(alls, np.repeat((tiles > -40).all(1), 8))
    np.testing.assert_array_equal(firsts, np.repeat(tiles[:, 0], 8))
    expect_down = np.concatenate([tiles[:, 1:], tiles[:, -1:]], axis=1).ravel()  # the last lane keeps its own
    np.testing.assert_array_equal(downs, expect_down)


@pytest.mark.parametrize("tile", [4, 16, 32])
def test_cg_runtime_sized_tile(tile):
    ranks, sizes = np.full(64, -1, np.int32), np.full(64, -1, np.int32)
    fn("cg_reduce.cu", "cg_runtime_tile")((1,), (64,), (ranks, sizes, np.int32(tile)))
    np.testing.assert_array_equal(ranks, np.arange(64) % tile)
    np.testing.assert_array_equal(sizes, tile)


def test_cg_runtime_tile_of_a_bad_size_is_refused():
    with pytest.raises(KernelFault, match="tile cut at run time must be a power of two in 1..32"):
        fn("cg_reduce.cu", "cg_runtime_tile")((1,), (64,), (np.zeros(64, np.int32), np.zeros(64, np.int32), np.int32(12)))


@pytest.mark.parametrize("n", [5, 100])
def test_cg_coalesced_threads_aggregated_append(n):
    x = rng.integers(0, 1000, n).astype(np.int32)
    out, count = np.full(n, -1, np.int32), np.zeros(1, np.int32)
    fn("cg_reduce.cu", "cg_aggregated_append")((2,), (64,), (x, np.int32(n), out, count))
    assert count[0] == n
    np.testing.assert_array_equal(np.sort(out), np.sort(x))


@pytest.mark.parametrize("n, blocks, block", [(100, 4, 32), (5000, 20, 256), (7, 3, 64)])
def test_cg_grid_sync_in_a_cooperative_launch(n, blocks, block):
    x = rng.standard_normal(n).astype(np.float32)
    partial, out = np.full(blocks, np.nan, np.float32), np.full(1, np.nan, np.float32)
    mod = RawModule(path=PDIR / "cg_reduce.cu", enable_cooperative_groups=True)
    mod.get_function("cg_grid_sum")((blocks,), (block,), (x, partial, out, np.int32(n)), check_races=True)
    np.testing.assert_allclose(out[0], x.astype(np.float64).sum(), rtol=1e-4, atol=1e-4)


def test_cg_grid_sync_needs_a_cooperative_launch():
    x = np.ones(100, np.float32)
    with pytest.raises(KernelFault, match=r"grid\.sync\(\) at cg_reduce\.cu:\d+ .* needs a cooperative launch.*"
                                          r"enable_cooperative_groups=True"):
        fn("cg_reduce.cu", "cg_grid_sum")((4,), (32,), (x, np.zeros(4, np.float32), np.zeros(1, np.float32), np.int32(100)))


def test_cooperative_launch_too_large_for_the_emulator_is_refused():
    mod = RawModule(path=PDIR / "cg_reduce.cu", enable_cooperative_groups=True)
    x = np.ones(10, np.float32)
    with pytest.raises(emu.EmulatorError, match="cooperative launch of 100 blocks x 256 threads"):
        mod.get_function("cg_grid_sum")((100,), (256,), (x, np.zeros(100, np.float32), np.zeros(1, np.float32),
                                                   np.int32(10)))


# ------------------------------------------------------------------------------------------------
# The same sources are valid CUDA
# ------------------------------------------------------------------------------------------------
@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not installed")
@pytest.mark.parametrize("source", sorted(p.name for p in PDIR.glob("*.cu")))
def test_portability_sources_compile_with_nvcc(source, tmp_path):
    res = subprocess.run(["nvcc", "-cubin", "-arch=sm_90", str(PDIR / source), "-o", str(tmp_path / "k.cubin")],
                         capture_output=True, text=True)
    assert res.returncode == 0, f"nvcc rejected {source}:\n{res.stderr}"


# ------------------------------------------------------------------------------------------------
# Small habits: qualifier after the type, __CUDA_ARCH__, None as a null pointer
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("with_bias", [False, True])
def test_extern_shared_with_qualifier_after_type_and_none_as_null_pointer(with_bias):
    n = 50
    x = rng.standard_normal(n).astype(np.float32)
    bias = rng.standard_normal(n).astype(np.float32) if with_bias else None
    y = np.full(n, np.nan, np.float32)
    fn("small_features.cu", "reverse_add")((1,), (64,), (x, bias, y, np.int32(n)), shared_mem=64 * 4)
    np.testing.assert_array_equal(y, x[::-1] + (bias if with_bias else 0))


def test_none_is_refused_for_a_scalar_parameter():
    with pytest.raises(TypeError, match="argument 3 .'n'. of kernel 'reverse_add' is int"):
        fn("small_features.cu", "reverse_add")((1,), (1,), (np.zeros(1, np.float32), None, np.zeros(1, np.float32), None))


@pytest.mark.parametrize("options, arch", [((), 900), (("-arch=sm_80",), 800), (("--gpu-architecture", "compute_75"), 750)])
def test_cuda_arch_is_defined_and_selectable(options, arch):
    out = np.zeros(1, np.int32)
    RawModule(path=PDIR / "small_features.cu", options=options).get_function("cuda_arch")((1,), (1,), (out,))
    assert out[0] == arch


# ------------------------------------------------------------------------------------------------
# Template kernels the CuPy way: name_expressions
# ------------------------------------------------------------------------------------------------
SGEMM_F32, SGEMM_F64 = "sgemm<float, 64, 64, 8, 4, 4>", "sgemm<double, 32, 32, 4, 2, 2>"


@lru_cache(maxsize=None)
def sgemm_module() -> RawModule:
    return RawModule(code=(PDIR / "sgemm_template.cu").read_text(), name_expressions=[SGEMM_F32, SGEMM_F64])


@pytest.mark.parametrize("expression, dtype, tile, threads", [(SGEMM_F32, np.float32, 64, 256),
                                                              (SGEMM_F64, np.float64, 32, 256)])
@pytest.mark.parametrize("M, N, K", [(1, 1, 1), (70, 45, 33), (128, 64, 17)])
def test_template_sgemm_through_name_expressions(expression, dtype, tile, threads, M, N, K):
    A, B = rng.standard_normal((M, K)).astype(dtype), rng.standard_normal((K, N)).astype(dtype)
    C = rng.standard_normal((M, N)).astype(dtype)
    want = 1.5 * (A.astype(np.float64) @ B) - 0.5 * C
    sgemm = sgemm_module().get_function(expression)
    sgemm((-(-N // tile), -(-M // tile)), (threads,), (np.int32(M), np.int32(N), np.int32(K), dtype(1.5), A, B,
                                                   dtype(-0.5), C))
    np.testing.assert_allclose(C, want, rtol=1e-4 if dtype == np.float32 else 1e-12, atol=1e-4)


def test_name_expression_lookup_ignores_spacing_and_checks_argument_types():
    mod = sgemm_module()
    k = mod.get_function("sgemm<float,64,64,8,4,4>")
    assert k.params[3].name == "alpha" and [p.name for p in k.params][-1] == "C"
    with pytest.raises(TypeError, match="argument 4 .'A'. of kernel 'sgemm<float, 64, 64, 8, 4, 4>' is const float"):
        k((1,), (256,), (np.int32(1), np.int32(1), np.int32(1), np.float32(1), np.zeros(1, np.float64),
                   np.zeros(1, np.float32), np.float32(0), np.zeros(1, np.float32)))
    with pytest.raises(AttributeError, match="name_expressions"):
        mod.get_function("sgemm<float, 32, 32, 8, 4, 4>")
    with pytest.raises(emu.CompileError, match="no template __global__ function 'gemm'"):
        RawModule(code=(PDIR / "sgemm_template.cu").read_text(), name_expressions=["gemm<float>"]).compile()


# ------------------------------------------------------------------------------------------------
# __shared__ declared in an included header
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("rows, cols, block", [(3, 1000, 256), (5, 33, 64)])
def test_shared_memory_declared_in_a_header(rows, cols, block):
    x = rng.standard_normal((rows, cols)).astype(np.float32)
    sums = np.full(rows, np.nan, np.float32)
    fn("header_shared.cu", "row_sums")((rows,), (block,), (x, sums, np.int32(cols)))
    np.testing.assert_allclose(sums, x.astype(np.float64).sum(1), rtol=1e-5, atol=1e-5)
    y = np.full_like(x, np.nan)
    fn("header_shared.cu", "center_rows")((rows,), (block,), (x, y, np.int32(cols)))
    np.testing.assert_allclose(y, x - x.mean(1, keepdims=True), rtol=1e-5, atol=1e-5)


def test_errors_in_a_header_name_the_header_line():
    header = (PDIR / "block_reduce.cuh").read_text().splitlines()
    line = next(i for i, ln in enumerate(header) if "LINE: header barrier" in ln) + 1
    with pytest.raises(emu.BarrierError, match=rf"block_reduce\.cuh:{line}"):
        fn("header_shared.cu", "divergent_in_header")((1,), (64,), (np.zeros(64, np.int32),))


def test_header_shared_works_from_code_with_an_include_path():
    code = (PDIR / "header_shared.cu").read_text()
    x = np.ones((2, 64), np.float32)
    sums = np.zeros(2, np.float32)
    RawModule(code=code, options=("-I", str(PDIR))).get_function("row_sums")((2,), (64,), (x, sums, np.int32(64)))
    np.testing.assert_array_equal(sums, 64)


# ------------------------------------------------------------------------------------------------
# half2 and bfloat162 arithmetic
# ------------------------------------------------------------------------------------------------
def to_bf16_bits(x32: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bits, round to nearest even (finite values)."""
    bits = x32.astype(np.float32).view(np.uint32).astype(np.uint64)
    return ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)


def bf16_to_f32(bits: np.ndarray) -> np.ndarray:
    return (bits.astype(np.uint32) << 16).view(np.float32)


@pytest.mark.parametrize("n2, grid, block", [(1, 1, 32), (1000, 3, 64)])
def test_half2_dot_product(n2, grid, block):
    a = (rng.standard_normal(2 * n2) * 0.5).astype(np.float16)
    b = (rng.standard_normal(2 * n2) * 0.5).astype(np.float16)
    out = np.zeros(1, np.float32)
    fn("half2_ops.cu", "half2_dot")((grid,), (block,), (a, b, out, np.int32(n2)))
    # Each thread's half2 accumulator, rounded to half after every fused multiply-add as on the GPU.
    want = 0.0
    for t in range(grid * block):
        acc = np.zeros(2, np.float16)
        for i in range(t, n2, grid * block):
            acc = (a[2 * i:2 * i + 2].astype(np.float64) * b[2 * i:2 * i + 2] + acc).astype(np.float16)
        want += float(np.float32(acc[0]) + np.float32(acc[1]))
    np.testing.assert_allclose(out[0], want, rtol=1e-5, atol=1e-5)


def test_half2_elementwise_operators_and_intrinsics_match_numpy_float16():
    n2 = 300
    a = rng.standard_normal(2 * n2).astype(np.float16)
    b = rng.standard_normal(2 * n2).astype(np.float16)
    c, swapped, lows = (np.full(2 * n2, np.nan, np.float16) for _ in range(3))
    sums = np.full(n2, np.nan, np.float32)
    fn("half2_ops.cu", "half2_elementwise")((-(-n2 // 64),), (64,), (a, b, c, swapped, lows, sums, np.int32(n2)))
    r = np.maximum(a * b + a, -np.abs(b)) - b  # float16 throughout: each step rounded, as __hmul2 etc.
    np.testing.assert_array_equal(c, r)
    np.testing.assert_array_equal(swapped, r.reshape(-1, 2)[:, ::-1].ravel())
    np.testing.assert_array_equal(lows.reshape(-1, 2), np.stack([a[0::2], b[1::2]], 1))
    np.testing.assert_array_equal(sums, r[0::2].astype(np.float32) + r[1::2].astype(np.float32))


def test_bfloat162_fma_and_conversion_round_to_nearest_even():
    n2 = 257
    a = to_bf16_bits(rng.standard_normal(2 * n2).astype(np.float32))
    b = to_bf16_bits(rng.standard_normal(2 * n2).astype(np.float32))
    c = np.zeros(2 * n2, np.uint16)
    as_float = np.full(2 * n2, np.nan, np.float32)
    fn("half2_ops.cu", "bf162_elementwise")((-(-n2 // 64),), (64,), (a, b, c, as_float, np.int32(n2)))
    fa, fb = bf16_to_f32(a).astype(np.float64), bf16_to_f32(b).astype(np.float64)
    fused = to_bf16_bits((fa * fb + fa).astype(np.float32))  # fmaf, then rounded to bfloat16
    want = to_bf16_bits(bf16_to_f32(fused) - bf16_to_f32(b))
    np.testing.assert_array_equal(c, want)
    np.testing.assert_array_equal(as_float, bf16_to_f32(want))


# ------------------------------------------------------------------------------------------------
# A shuffle that reads a lane outside its mask is an error, not the caller's own value
# ------------------------------------------------------------------------------------------------
def marker_line(filename: str, tag: str) -> int:
    lines = (PDIR / filename).read_text().splitlines()
    return next(i for i, ln in enumerate(lines) if f"// LINE: {tag}" in ln) + 1


def test_shuffle_from_a_lane_past_the_block_is_refused_and_the_padded_version_is_right():
    x = rng.standard_normal(32).astype(np.float32)
    out = np.full(1, np.nan, np.float32)
    line = marker_line("shuffle_mask.cu", "partial")
    with pytest.raises(KernelFault, match=rf"__shfl_down_sync at shuffle_mask\.cu:{line} in warp 0 of block \(0,0,0\) "
                                          r"of kernel 'warp_sum_partial': lane 8 reads lane 24, which does not exist"):
        fn("shuffle_mask.cu", "warp_sum_partial")((1,), (24,), (x, out))
    fn("shuffle_mask.cu", "warp_sum_padded")((1,), (32,), (x, out, np.int32(24)))
    np.testing.assert_allclose(out[0], x[:24].sum(), rtol=1e-5)


def test_shuffle_across_its_mask_is_refused_and_the_fixed_version_is_right():
    x = rng.standard_normal(32).astype(np.float32)
    out = np.full(1, np.nan, np.float32)
    line = marker_line("shuffle_mask.cu", "half")
    with pytest.raises(KernelFault, match=rf"__shfl_xor_sync at shuffle_mask\.cu:{line} .* lane 0 reads lane 16, which "
                                          r"is not in the mask \(mask 0x0000ffff\)"):
        fn("shuffle_mask.cu", "half_warp_sum_bad")((1,), (32,), (x, out))
    fn("shuffle_mask.cu", "half_warp_sum")((1,), (32,), (x, out))
    np.testing.assert_allclose(out[0], x[:16].sum(), rtol=1e-5)


def test_launch_bounds_are_enforced_at_launch():
    x = np.ones(300, np.float32)
    scale = fn("small_features.cu", "scale")
    scale((3,), (128,), (x, np.float32(2), np.int32(300)))
    np.testing.assert_array_equal(x, 2)
    with pytest.raises(ValueError, match=r"block \(256, 1, 1\) of kernel 'scale' has 256 threads, but the kernel is "
                                         r"declared __launch_bounds__\(128\)"):
        scale((2,), (256,), (x, np.float32(2), np.int32(300)))
    assert emu._int_expression("(16 * 16)") == 256 and emu._int_expression("BLOCK") is None


# ------------------------------------------------------------------------------------------------
# cuComplex.h with NumPy complex arrays
# ------------------------------------------------------------------------------------------------
def test_cucomplex_single_precision_matches_numpy():
    n = 333
    a = (rng.standard_normal(n) + 1j * rng.standard_normal(n)).astype(np.complex64)
    b = (rng.standard_normal(n) + 1j * rng.standard_normal(n)).astype(np.complex64)
    c, quotient = np.full(n, np.nan, np.complex64), np.full(n, np.nan, np.complex64)
    magnitude = np.full(n, np.nan, np.float32)
    fn("complex_mul.cu", "complex_ops")((-(-n // 128),), (128,), (a, b, c, magnitude, quotient, np.int32(n)))
    a64, b64 = a.astype(np.complex128), b.astype(np.complex128)
    np.testing.assert_allclose(c, a64 * b64 + np.conj(a64), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(magnitude, np.abs(a64), rtol=1e-6)
    np.testing.assert_allclose(quotient, a64 / b64, rtol=1e-5, atol=1e-6)


def test_cucomplex_double_scalar_argument_and_type_checks():
    n = 50
    x = rng.standard_normal(n) + 1j * rng.standard_normal(n)
    y = rng.standard_normal(n) + 1j * rng.standard_normal(n)
    want = (2 - 0.5j) * x + y
    axpy = fn("complex_mul.cu", "complex_axpy")
    axpy((1,), (64,), (2 - 0.5j, x, y, np.int32(n)))  # a Python complex for a cuDoubleComplex parameter
    np.testing.assert_allclose(y, want, rtol=1e-13)
    with pytest.raises(TypeError, match="is const double\\* but the array has dtype complex64"):
        axpy((1,), (64,), (1j, x.astype(np.complex64), y, np.int32(n)))
    with pytest.raises(TypeError, match="pass np.complex128"):
        axpy((1,), (64,), (np.complex64(1j), x, y, np.int32(n)))
    with pytest.raises(TypeError, match="is float\\* but the array has dtype complex64"):
        fn("small_features.cu", "scale")((1,), (1,), (np.zeros(2, np.complex64), np.float32(1), np.int32(1)))


# ------------------------------------------------------------------------------------------------
# __constant__ memory filled by the host through get_global
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("sanitize", [False, True])
def test_constant_filter_through_get_global(sanitize):
    mod = RawModule(path=PDIR / "constant_filter.cu", sanitize=sanitize)
    n = 100
    x = rng.standard_normal(n).astype(np.float32)
    y = np.full(n, np.nan, np.float32)
    taps = mod.get_global("taps")
    assert taps.dtype == np.float32 and taps.shape == (7,)
    mod.get_function("convolve")((1,), (128,), (x, y, np.int32(n)))
    assert np.isnan(y).all()  # never filled: NaN, not a silent convolution with zeros
    weights = rng.standard_normal(7).astype(np.float32)
    taps[:] = weights
    mod.get_function("convolve")((1,), (128,), (x, y, np.int32(n)))
    want = np.convolve(x.astype(np.float64), weights[::-1].astype(np.float64), mode="same")
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5)
    offsets = mod.get_global("offsets")
    np.testing.assert_array_equal(offsets, [0, 10, 20, 30])  # the compiled-in values
    v = np.zeros(8, np.int32)
    mod.get_function("add_offsets")((1,), (8,), (v,))
    np.testing.assert_array_equal(v, [0, 10, 20, 30] * 2)
    with pytest.raises(AttributeError, match=r"no __constant__ or __device__ variable 'tap' .*found: taps, offsets"):
        mod.get_global("tap")


def test_grid_sync_skipped_by_a_block_is_a_barrier_error():
    code = r'''
    #include <cooperative_groups.h>
    extern "C" __global__ void early_exit(int* out) {
        if (blockIdx.x == 1) return;  // BUG: this block never reaches grid.sync()
        cooperative_groups::this_grid().sync();
        out[blockIdx.x] = 1;
    }'''
    k = RawModule(code=code, enable_cooperative_groups=True).get_function("early_exit")
    with pytest.raises(emu.BarrierError, match=r"block \(1,0,0\) of kernel 'early_exit' exited without reaching the "
                                               r"grid\.sync\(\)"):
        k((3,), (32,), (np.zeros(3, np.int32),))
    fn("cg_reduce.cu", "cg_runtime_tile")((1,), (32,), (np.zeros(32, np.int32), np.zeros(32, np.int32), np.int32(8)))


# ------------------------------------------------------------------------------------------------
# racecheck: warp-synchronous code without __syncwarp, and missing block barriers
# ------------------------------------------------------------------------------------------------
KDIR = PDIR.parent


def test_volatile_last_warp_unroll_is_silently_wrong_without_racecheck_and_reported_with_it():
    n = 1000
    x = rng.standard_normal(n).astype(np.float32)
    out = np.full(4, np.nan, np.float32)
    bad = fn("warp_races.cu", "reduce_volatile_unroll")
    bad((4,), (256,), (x, out, np.int32(n)))
    # volatile loads and stores take turns across the warp's lanes (lockstep, as a GPU warp in converged code):
    # the legacy unroll sums as on a GPU -- and racecheck still reports it, since CUDA does not promise that.
    np.testing.assert_allclose(out.sum(), x.sum(), rtol=1e-4, atol=1e-4)
    line = marker_line("warp_races.cu", "unroll")
    with pytest.raises(emu.RaceError, match=rf"racecheck: write-after-read hazard on __shared__ 'sdata' \(byte 4\) in "
                                            rf"block \(\d,0,0\) of kernel 'reduce_volatile_unroll': thread \(0,0,0\) "
                                            rf"reads it at warp_races\.cu:{line + 4}, then thread \(1,0,0\) writes it at "
                                            rf"warp_races\.cu:{line - 1}"):
        bad((4,), (256,), (x, out, np.int32(n)), racecheck=True)
    fixed = fn("warp_races.cu", "reduce_syncwarp")
    fixed((4,), (256,), (x, out, np.int32(n)), racecheck=True)
    want = np.pad(x, (0, 24)).reshape(4, 256).astype(np.float64).sum(1)
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)


def test_lanes_passing_values_through_shared_memory_need_syncwarp():
    x = rng.standard_normal(32).astype(np.float32)
    y = np.full(32, np.nan, np.float32)
    write, read = marker_line("warp_races.cu", "rotate write"), marker_line("warp_races.cu", "rotate read")
    with pytest.raises(emu.RaceError, match=rf"hazard on __shared__ 'buf' .* thread \(0,0,0\) reads it at "
                                            rf"warp_races\.cu:{read}, then thread \(1,0,0\) writes it at "
                                            rf"warp_races\.cu:{write}"):
        fn("warp_races.cu", "rotate_lanes_bad")((1,), (32,), (x, y), racecheck=True)
    fn("warp_races.cu", "rotate_lanes")((1,), (32,), (x, y), racecheck=True)
    np.testing.assert_array_equal(y, np.roll(x, -1))


def test_a_warp_overwriting_a_slot_another_warp_still_reads_is_reported():
    x = rng.standard_normal(64).astype(np.float32)
    y = np.full(64, np.nan, np.float32)
    with pytest.raises(emu.RaceError, match=r"read-after-write hazard on __shared__ 'tile' .* thread \(31,0,0\) writes "
                                            r"it .* then thread \(32,0,0\) reads it"):
        fn("warp_races.cu", "mirror_double_bad")((1,), (64,), (x, y), racecheck=True)
    fn("warp_races.cu", "mirror_double")((1,), (64,), (x, y), racecheck=True)
    np.testing.assert_array_equal(y, 2 * x[::-1])


def test_racecheck_passes_the_teaching_kernels_and_catches_the_missing_matmul_barrier():
    M, N, K = 37, 45, 29
    A, B = rng.standard_normal((M, K)).astype(np.float32), rng.standard_normal((K, N)).astype(np.float32)
    C = np.full((M, N), np.nan, np.float32)
    RawModule(path=KDIR / "matmul_tiled.cu").get_function("matmul_tiled")(
        (3, 3), (16, 16), (A, B, C, np.int32(M), np.int32(N), np.int32(K)), racecheck=True)
    np.testing.assert_allclose(C, A.astype(np.float64) @ B, rtol=1e-4, atol=1e-4)
    x = rng.standard_normal(5000).astype(np.float32)
    sums = np.full(10, np.nan, np.float32)
    RawModule(path=KDIR / "reduce_shared.cu").get_function("reduce_sum")((10,), (256,), (x, sums, np.int32(5000)),
                                                                          racecheck=True)
    np.testing.assert_allclose(sums.sum(), x.astype(np.float64).sum(), rtol=1e-4, atol=1e-4)
    with pytest.raises(emu.RaceError, match=r"hazard on __shared__ '(As|Bs)' .* kernel 'matmul_missing_sync'"):
        RawModule(path=KDIR / "buggy.cu").get_function("matmul_missing_sync")(
            (3, 3), (16, 16), (A, B, C, np.int32(M), np.int32(N), np.int32(K)), racecheck=True)
    with pytest.raises(ValueError, match="racecheck=True cannot be combined"):
        fn("warp_races.cu", "rotate_lanes")((1,), (32,), (x[:32], C.ravel()[:32].copy()), racecheck=True, check_races=True)


def check_lora_kernels(version, rng):
    """LoRA forward and backward of kernel ``version`` on the emulator, on ragged shapes (not multiples
    of any tile) drawn from ``rng``, checked against NumPy; returns the input X [M, K]."""
    M, N, K, r = 37, 45, 29, 5
    X, W0 = rng.standard_normal((M, K)).astype(np.float32), rng.standard_normal((N, K)).astype(np.float32)
    A, B = rng.standard_normal((r, K)).astype(np.float32), rng.standard_normal((N, r)).astype(np.float32)
    Y, U = kernels.lora_forward(X, W0, A, B, 0.5, device="emu", version=version)
    np.testing.assert_allclose(Y, X @ W0.T + 0.5 * (X @ A.T) @ B.T, rtol=1e-4, atol=1e-4)
    dY = rng.standard_normal((M, N)).astype(np.float32)
    dX, dA, dB = kernels.lora_backward(dY, X, W0, A, B, U, 0.5, device="emu", version=version)
    np.testing.assert_allclose(dX, dY @ W0 + 0.5 * (dY @ B) @ A, rtol=1e-4, atol=1e-4)
    return X


@pytest.mark.parametrize("version", kernels.VERSIONS)
def test_every_project_kernel_passes_racecheck(version, racecheck_every_launch):
    """kernels/*.cu (LoRA forward/backward in every version, AdamW, BGMV) with every launch under racecheck."""
    launched = racecheck_every_launch
    X = check_lora_kernels(version, rng)
    (M, K), N = X.shape, 45  # the shapes check_lora_kernels drew
    if version == "v1":
        p = [rng.standard_normal(s).astype(np.float32) for s in [(7,), (3, 5)]]
        g = [rng.standard_normal(x.shape).astype(np.float32) for x in p]
        kernels.adamw_step(p, g, [np.zeros_like(x) for x in p], [np.zeros_like(x) for x in p], lr=1e-2, beta1=0.9,
                           beta2=0.99, eps=1e-6, weight_decay=0.1, step=1, device="emu")
        L, R = 2, 4
        Yb = np.zeros((M, N), np.float32)
        kernels.bgmv(Yb, X, rng.standard_normal((L, R, K)).astype(np.float32),
                     rng.standard_normal((L, N, R)).astype(np.float32), np.array([4, 2], np.int32),
                     np.array([1.0, 0.5], np.float32), (np.arange(M) % 3 - 1).astype(np.int32), device="emu")
    assert any(name.endswith(version) for name in launched), launched  # (a version reuses older rank-r kernels)


@pytest.mark.parametrize("n, block", [(100, 32), (1000, 128)])
def test_cg_memcpy_async_and_wait(n, block):
    x = rng.standard_normal(n).astype(np.float32)
    y = np.full(n, np.nan, np.float32)
    blocks = -(-n // block)
    fn("cg_reduce.cu", "cg_staged_reverse")((blocks,), (block,), (x, y, np.int32(n)), shared_mem=block * 4, racecheck=True)
    want = np.concatenate([x[b * block:(b + 1) * block][::-1] for b in range(blocks)])
    np.testing.assert_array_equal(y, want)


def test_lanes_passing_values_through_global_memory_need_syncwarp():
    scratch, y = np.zeros(32, np.float32), np.full(32, np.nan, np.float32)
    with pytest.raises(emu.RaceError, match=r"write-after-read hazard on argument 0 \('scratch'\) \(byte 4\) .* "
                                            r"thread \(0,0,0\) reads it .* thread \(1,0,0\) writes it"):
        fn("warp_races.cu", "rotate_through_global_bad")((1,), (32,), (scratch, y), racecheck=True)
    fn("warp_races.cu", "rotate_through_global")((1,), (32,), (scratch, y), racecheck=True)
    np.testing.assert_array_equal(y, np.roll(np.arange(32.0) ** 2, -1))
