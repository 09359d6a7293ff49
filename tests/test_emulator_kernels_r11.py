"""Round 11 of CUDA written by others on the emulator (tests/emu_kernels/r11/tutorials.cu: 25 kernels the way CUDA
samples, NVIDIA's blog posts and tutorials write them, one compile), checked against NumPy.

What they needed (each failed before):
* CUB's BlockScan over several items per thread with the block's total (``ExclusiveSum(items, items, total)``).
* libcu++'s ``<cuda/std/span>`` (C++17: libcu++ has it there too) and ``<cuda/std/chrono>``.
* ``__isConstant`` (a table of the file's ``__constant__`` variables) and ``__isGridConstant`` (a
  ``__grid_constant__`` parameter becomes a reference to the launch's one copy of the argument).
* ``__CUDACC__``, ``__CUDACC_VER_MAJOR__`` and ``CUDART_VERSION``, as nvcc and NVRTC define them (CUDA 12.6): a
  source guarded by ``#if !defined(__CUDACC__)`` / ``#error`` compiles.
* PTX ``exit;``: the thread ends, and barriers stop waiting for it; an ``asm`` as the body of an ``if`` with an
  ``else`` (its translation was a block followed by the asm's ``;``, which ended the if).
* An early ``return`` before ``__syncthreads()``: since Volta a barrier waits for the block's non-exited threads
  only (CUDA Programming Guide, compute capability 7.x: "will not succeed until reached by all non-exited threads
  in the block"; PTX ISA ``exit``: a barrier held up only by exiting threads is released).  Threads waiting at
  different barriers stay a BarrierError.
* Fences: an argument array now ends as near its guard page as 16-byte alignment allows, so a read a few elements
  past its end is a KernelFault naming it (it read the padding unnoticed); a table of pointers
  (``float* const*``) into other argument arrays is rewritten to their fenced copies, so a write through it past
  an array's end is named too (it overwrote the host's heap).
Cold cache (the runtime, the precompiled header and tutorials.cu, one compile): 17-25 s here (2 shared cores);
warm: 1.5-2.7 s.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest

from minilora import emulator as emu
from minilora.emulator import BarrierError, KernelFault, RawModule

R11 = Path(__file__).parent / "emu_kernels" / "r11"
# memcheck: every load checked against the arguments' fences (a read next to an array is named; round 13)
pytestmark = [pytest.mark.skipif(not emu.is_available(), reason="the CUDA emulator needs g++"),
              pytest.mark.usefixtures("memcheck_every_launch")]
TEMPLATES = ("cub_sum<128>", "reduce_samples<float>", "reduce_samples<double>", "apply_to<Relu, __nv_bfloat16>",
             "apply_to<Relu, double>")
i32, f32 = np.int32, np.float32


TUTORIALS = dict(path=R11 / "tutorials.cu", name_expressions=list(TEMPLATES))
# built on the session's helper core meanwhile (tests/background_runs.py), as memcheck_every_launch has it
EMULATOR_BUILDS = [(TUTORIALS, {"MINILORA_EMU_MEMCHECK": "1"})]


@lru_cache(maxsize=None)
def module() -> RawModule:
    return RawModule(**TUTORIALS).compile()


def fn(name: str):
    return module().get_function(name)


def randn(*shape, dtype=np.float32, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def line_of(text: str) -> int:
    return next(n for n, line in enumerate((R11 / "tutorials.cu").read_text().splitlines(), 1) if text in line)


def test_cub_block_reduce_scan_and_warp_reduce():
    x, out = randn(1000), np.zeros(1, f32)
    fn("cub_sum<128>")((3,), (128,), (x, out, i32(1000)))
    np.testing.assert_allclose(out[0], x.astype(np.float64).sum(), rtol=1e-5, atol=1e-4)
    n = 250
    a = np.random.default_rng(1).integers(-50, 50, n).astype(np.int32)
    scanned = np.zeros(n + 1, np.int32)
    fn("cub_exclusive_scan")((1,), (64,), (a, scanned, i32(n)))
    np.testing.assert_array_equal(scanned[:n], np.concatenate([[0], np.cumsum(a)[:-1]]))
    assert scanned[n] == a.sum()  # the block's total, CUB's block_aggregate
    v = np.random.default_rng(2).integers(-1000, 1000, 256).astype(np.int32)
    maxes = np.zeros(8, np.int32)
    fn("cub_warp_max")((2,), (128,), (v, maxes))
    np.testing.assert_array_equal(maxes, v.reshape(8, 32).max(1))


def test_cooperative_groups_tiles_and_masked_shuffles():
    n = 200
    x, tiles = randn(n), np.zeros(16, f32)
    fn("cg_tile_sums")((2,), (128,), (x, tiles, i32(n)))
    padded = np.zeros(256, np.float64)
    padded[:n] = x
    np.testing.assert_allclose(tiles[:13], padded.reshape(16, 16).sum(1)[:13], rtol=1e-5, atol=1e-5)
    sums = np.full(7, np.nan, f32)
    fn("masked_warp_sum")((2,), (128,), (x, sums, i32(n)))
    np.testing.assert_allclose(sums, [x[k * 32:(k + 1) * 32].astype(np.float64).sum() for k in range(7)],
                               rtol=1e-5, atol=1e-5)


def test_atomics_on_float_double_half_bfloat16_and_a_float_max():
    x = (np.arange(64) % 8 - 3).astype(f32)  # small integers: every partial sum is exact in bfloat16 (and half)
    fsum, dsum, fmax = np.zeros(1, f32), np.zeros(1, np.float64), np.full(1, -np.inf, f32)
    hsum, h2sum, bsum = np.zeros(1, np.float16), np.zeros(2, np.float16), np.zeros(1, np.uint16)
    fn("atomics_mix")((2,), (32,), (x, i32(64), fsum, dsum, hsum, h2sum, bsum, fmax))
    total = x.astype(np.float64).sum()
    assert fsum[0] == dsum[0] == hsum[0] == total and list(h2sum) == [total, -total]
    assert (bsum.astype(np.uint32) << 16).view(f32)[0] == total
    assert fmax[0] == x.max()
    fmax[0] = -np.inf  # all negative: the unsigned-int half of the trick
    fn("atomics_mix")((2,), (32,), (-x - 10, i32(64), fsum, dsum, hsum, h2sum, bsum, fmax))
    assert fmax[0] == (-x - 10).max()


def test_dynamic_shared_memory_of_several_types_and_the_samples_shared_memory_helper():
    x, keys, out = randn(100), np.random.default_rng(3).integers(-1, 2, 100).astype(np.int32), np.zeros(1, f32)
    block = 101  # more threads than elements
    fn("carve_dynamic_shared")((1,), (block,), (x, keys, out, i32(100)), shared_mem=8 + block * 8)
    np.testing.assert_allclose(out[0], x.astype(np.float64)[keys > 0].sum(), rtol=1e-6)
    for dtype, name in ((np.float32, "reduce_samples<float>"), (np.float64, "reduce_samples<double>")):
        data = randn(1000, dtype=dtype)
        partial = np.zeros(4, dtype)
        fn(name)((4,), (128,), (data, partial, np.uint32(1000)), shared_mem=128 * data.itemsize)
        np.testing.assert_allclose(partial.sum(), data.astype(np.float64).sum(), rtol=1e-5, atol=1e-4)


def test_constant_memory_grid_stride_loops_and_launch_bounds():
    coeffs = module().get_global("c_coeffs")
    coeffs[:] = [0.5, -1.0, 0.25, 2.0, 0, 0, 0, 0]
    module().get_global("c_degree")[:] = 3
    x, y = randn(3000), np.zeros(3000, f32)
    fn("horner")((4,), (128,), (x, y, i32(3000)))
    np.testing.assert_allclose(y, np.polyval([2.0, 0.25, -1.0, 0.5], x.astype(np.float64)), rtol=1e-5, atol=1e-5)
    y, x = randn(5000, seed=1), randn(5000, seed=2)
    expected = f32(1.5) * x + y
    fn("saxpy")((3,), (256,), (i32(5000), f32(1.5), x, y))
    np.testing.assert_array_equal(y, expected)
    with pytest.raises(ValueError, match=r"__launch_bounds__\(256\)"):
        fn("saxpy")((1,), (512,), (i32(5000), f32(1.5), x, y))


def test_vector_types_float4_with_a_tail_and_int2():
    x, y = randn(103), np.zeros(103, f32)
    fn("scale_float4")((1,), (32,), (x, y, f32(-2.0), i32(103)))
    np.testing.assert_array_equal(y, f32(-2.0) * x)
    pairs, out = np.arange(40, dtype=np.int32).reshape(20, 2), np.zeros((20, 2), np.int32)
    fn("swap_int2")((1,), (32,), (pairs, out, i32(20)))
    np.testing.assert_array_equal(out, np.stack([pairs[:, 1], pairs.sum(1)], 1))


def test_printf_and_assert(capsys):
    fn("hello")((2,), (32,), (i32(10),))
    assert capsys.readouterr().out.splitlines() == [
        "Hello from block 0, thread 0: 10 0.00", "Hello from block 0, thread 1: 11 0.50",
        "Hello from block 1, thread 0: 10 0.00", "Hello from block 1, thread 1: 11 0.50"]
    x, y = np.abs(randn(50)), np.zeros(50, f32)
    fn("checked_sqrt")((1,), (64,), (x, y, i32(50)))
    np.testing.assert_array_equal(y, np.sqrt(x))
    x[7] = -1
    with pytest.raises(KernelFault, match=rf"assert.*x\[i\] >= 0.0f.*tutorials.cu:{line_of('assert(x[i]')}"):
        fn("checked_sqrt")((1,), (64,), (x, y, i32(50)))


def test_fast_math_intrinsics_within_their_documented_error():
    x = np.linspace(-4, 4, 101).astype(f32)
    out = np.zeros((101, 6), f32)
    fn("fast_math")((1,), (128,), (x, out, i32(101)))
    v = x.astype(np.float64)
    expected = np.stack([np.exp(v), v / (1 + v * v), 1 / np.sqrt(1 + v * v), np.clip(v, 0, 1), np.log(1 + v * v),
                         np.sin(v) * np.cos(v)], 1)
    # CUDA's programming guide bounds: __expf 2 + 1.16|x| ulp, __fdividef 2 ulp, rsqrtf 2 ulp, __logf 2^-21.41
    # absolute on [0.5, 2] (else 3 ulp), __sinf/__cosf 2^-21.41 absolute on [-pi, pi]: all within 2e-6 relative or
    # 5e-6 absolute here, and __saturatef is exact.
    np.testing.assert_allclose(out, expected, rtol=2e-6, atol=5e-6)
    assert (out[:, 3] == np.clip(x, 0, 1)).all()


def test_half_and_bfloat16_conversions_round_to_nearest_even():
    x = np.concatenate([randn(60) * 100, [65504, 65520, 1e-8, -0.0, np.inf, np.nan]]).astype(f32)
    with np.errstate(over="ignore"):  # 65520 rounds to half's infinity, as __float2half_rn gives
        as_half = x.astype(np.float16)
    n = x.size
    h, b, back = np.zeros(n, np.float16), np.zeros(n, np.uint16), np.zeros((n, 2), f32)
    fn("convert_16bit")((1,), (128,), (x, h, b, back, i32(n)))
    np.testing.assert_array_equal(h, as_half)
    bits = x.view(np.uint32).astype(np.uint64)
    rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)  # round to nearest even
    rounded[np.isnan(x)] = b[np.isnan(x)] | 0x40  # any quiet NaN
    np.testing.assert_array_equal(b, rounded)
    np.testing.assert_array_equal(back[:, 0], h.astype(f32))
    np.testing.assert_array_equal(back[:, 1].view(np.uint32), b.astype(np.uint32) << 16)


def test_softmax_welford_layernorm_and_sgemv():
    x, y = randn(5, 300), np.zeros((5, 300), f32)
    fn("softmax_rows")((5,), (128,), (x, y, i32(300)))
    e = np.exp(x.astype(np.float64) - x.max(1, keepdims=True))
    np.testing.assert_allclose(y, e / e.sum(1, keepdims=True), rtol=1e-5, atol=1e-7)
    gamma, beta, z = randn(300, seed=1), randn(300, seed=2), np.zeros((5, 300), f32)
    fn("layernorm_welford")((5,), (128,), (x * 3 + 1, gamma, beta, z, i32(300), f32(1e-5)))
    v = x.astype(np.float64) * 3 + 1
    normed = (v - v.mean(1, keepdims=True)) / np.sqrt(v.var(1, keepdims=True) + 1e-5)
    np.testing.assert_allclose(z, normed * gamma + beta, rtol=1e-4, atol=1e-5)
    A, v, y = randn(37, 70), randn(70, seed=1), np.full(37, np.nan, f32)
    fn("sgemv_warp_per_row")((5,), (256,), (A, v, y, i32(37), i32(70)))
    np.testing.assert_allclose(y, A.astype(np.float64) @ v, rtol=1e-5, atol=1e-5)


def test_is_constant_and_is_grid_constant():
    module().get_global("c_table")[:] = [1, 2, 3, 4]
    g, kinds, out = np.zeros(2, f32), np.full(7, 7, np.uint32), np.zeros(1, f32)
    params = np.array([0.5, 0, 0, 2.0], f32)
    fn("address_kinds")((2,), (32,), (params.tobytes(), g, kinds, out, i32(10)))
    # constant, global, grid constant, global, shared; a plain parameter and a local; the grid constant nothing else
    np.testing.assert_array_equal(kinds, [1, 0, 1, 1, 0, 0, 0])
    assert out[0] == 0.5 + 2.0 + 4 + 10
    coefficients = np.zeros(32, f32)  # sizeof: 128 bytes, aligned to 64 in the launch's argument slots
    coefficients[:20] = np.arange(20)
    out, flags = np.zeros(32, f32), np.zeros(32, np.uint32)
    fn("aligned_grid_constant")((1,), (32,), (i32(3), coefficients.tobytes(), out, flags))
    np.testing.assert_array_equal(out, 3 * coefficients[np.arange(32) % 20])
    assert (flags == 3).all()


def test_ptx_exit_and_an_early_return_before_a_barrier():
    x, y = randn(40), np.zeros(40, f32)
    fn("ptx_exit_tail")((3,), (32,), (x, y, i32(40)), workers=1)  # block 1 half exits, block 2 all: fresh fibers
    np.testing.assert_array_equal(y, x + f32(1) + f32(1))
    fn("ptx_exit_tail")((1,), (32,), (x[:32], y[:32], i32(32)))  # the next launch's fibers are fresh
    np.testing.assert_array_equal(y[:32], x[:32] + f32(1) + f32(1))
    for n in (300, 256, 1):
        x, out = randn(n), np.full(2, np.nan, f32)
        fn("tail_block_sum")((2,), (256,), (x, out, i32(n)))
        sums = [x[:256].astype(np.float64).sum(), x[256:].astype(np.float64).sum()]
        np.testing.assert_allclose(out[:-(-n // 256)], sums[:-(-n // 256)], rtol=1e-5, atol=1e-5)
    # threads that have not exited still must meet at one barrier
    odd, even = line_of("if (threadIdx.x % 2) __syncthreads();"), line_of("else __syncthreads();")
    message = (rf"threads wait at different barriers: 16 threads .* at tutorials.cu:{odd}, 15 threads .* at "
               rf"tutorials.cu:{even} \(1 thread has exited, e.g. thread \(0,0,0\)\)")
    with pytest.raises(BarrierError, match=message):
        fn("split_barriers")((1,), (32,), (np.zeros(32, f32),))


def test_cuda_std_span_and_chrono():
    x, sums, nanos = randn(4, 9), np.zeros(4, f32), np.zeros(2, np.int64)
    fn("span_rows")((4,), (32,), (x, sums, i32(9), nanos))
    np.testing.assert_allclose(sums, x.astype(np.float64).sum(1), rtol=1e-6)
    assert list(nanos) == [3_005_000, 2_000_000]


def test_warp_primitives_half2_and_templated_functors():
    keys = np.random.default_rng(5).integers(0, 4, 32).astype(np.int32)
    out = np.zeros(96, np.uint32)
    fn("warp_primitives")((1,), (32,), (keys, out))
    np.testing.assert_array_equal(out[:32], [(keys == k).sum() for k in keys])
    assert (out[32:64] == keys.sum()).all()
    assert (out[64:96:2] == 0x55555555).all()  # the even lanes, in the branch together
    x, y, o = randn(64).astype(np.float16), randn(64, seed=1).astype(np.float16), np.zeros(64, np.float16)
    fn("half2_axpby")((1,), (32,), (x, y, o, f32(0.5), f32(2), i32(32)))
    # __hmul2 rounds to half, then __hfma2 adds with one rounding: computed in float64 and rounded twice here
    hy = (np.float64(2) * y.astype(np.float64)).astype(np.float16).astype(np.float64)
    np.testing.assert_array_equal(o, (0.5 * x.astype(np.float64) + hy).astype(np.float16))
    v, out_b, out_d = randn(50), np.zeros(50, np.uint16), np.zeros(50, np.float64)
    fn("apply_to<Relu, __nv_bfloat16>")((1,), (64,), (v, out_b, i32(50), bytes(1)))
    fn("apply_to<Relu, double>")((1,), (64,), (v, out_d, i32(50), bytes(1)))  # Relu{}: one byte
    np.testing.assert_array_equal(out_d, np.maximum(v, 0))
    np.testing.assert_allclose((out_b.astype(np.uint32) << 16).view(f32), np.maximum(v, 0), rtol=2 ** -8)


def test_a_read_one_element_past_an_array_is_a_named_fault():
    for n in (64, 100, 7):  # 256, 400, 28 bytes: the copy ends on the guard page, or 4 bytes before it
        x, d = randn(n), np.zeros(n, f32)
        # n = 7: within the last 16 bytes, the copy's slack, which the loads check in the fences' shadow (round 12)
        message = (rf"tutorials.cu:{line_of('d[i] = x[i + 1]')}: .*out of bounds: 0 bytes past the end of "
                   rf"argument 0 \('x'\), an allocation of {4 * n}")
        with pytest.raises(KernelFault, match=message):
            fn("forward_difference")((1,), (128,), (x, d, i32(n)))
        fn("forward_difference")((1,), (128,), (x, d, i32(n - 1)))
        np.testing.assert_array_equal(d[:n - 1], np.diff(x))


def test_writes_through_a_pointer_table_are_fenced():
    tensors = [randn(n, seed=n) for n in (40, 64, 3)]
    expected = [f32(3) * t for t in tensors]
    fn("scale_tensor_list")((3,), (32,), (tensors, np.array([40, 64, 3], np.int32), i32(3), f32(3)))
    for t, e in zip(tensors, expected):
        np.testing.assert_array_equal(t, e)
    # addresses in a uint64 table, the arrays passed beside it (kernels/adamw.cu's way): the table follows the
    # fenced copies, so writing one element past the 64-float array is named
    a, b = randn(64), randn(64, seed=1)
    table, sizes = np.array([a.ctypes.data, b.ctypes.data], np.uint64), np.array([63, 64], np.int64)
    before = table.copy()
    with pytest.raises(KernelFault, match=r"out of bounds: 0 bytes past the end of argument 2 \('first'\)"):
        fn("scale_by_address")((1,), (32,), (table, sizes, b, i32(2), f32(2)))
    np.testing.assert_array_equal(table, before)  # the addresses the kernel saw were the copies', for the launch
    # a list of arrays for a float* const* parameter: each array is fenced and named
    short = randn(12)
    with pytest.raises(KernelFault, match=r"0 bytes past the end of array 1 of the table argument 0 \('tensors'\)"):
        fn("scale_tensor_list")((2,), (32,), ([randn(8), short], np.array([8, 13], np.int32), i32(2), f32(3)))
