"""Round 12: the CUDA kernels people copy, on the emulator as their authors wrote them, against NumPy.

tests/emu_kernels/r12/sgemm_attention.cu: siboehm's SGEMM series (naive, coalesced, shared-memory blocking, 1-D
and 2-D blocktiling, float4 loads with a transposed As, warptiling, double buffering), a minimal FlashAttention
forward and llm.c's layernorm, causal softmax, GELU, residual, cross-entropy and AdamW kernels (cooperative
groups' reduce, __ldcs/__stcs, alignas(16) Packed128, __restrict__, __launch_bounds__).
tests/emu_kernels/r12/classics.cu: Mark Harris's reductions 1-7 (volatile warp unroll, so the file builds in the
emulator's lockstep variant), GPU Gems' Blelloch scan, the padded-tile transpose, a privatized histogram, a radix
sort split with __ballot_sync/__popc, a __shfl_xor_sync softmax, a half2 batched GEMV, a warp bitonic top-k.
All ran unedited and computed the right numbers; what the emulator got wrong (each test failed before):
* grid.sync() after some threads returned (a bounds check at the top of a cooperative kernel) stopped with a
  BarrierError: it is cooperative_groups' sync_grids, a block barrier (the non-exited threads, since Volta) and
  thread (0,0,0) arriving for its block, so it runs as on a GPU; a block whose thread (0,0,0) returned, or that
  exited whole, is still an error (the GPU's other blocks wait forever).
* A read into the mapped bytes around a fenced argument array -- before its start (x[-1]), or the < 16 bytes after
  an odd-sized one (an x128/float4 load past its end) -- was unnoticed: they are marked in a shadow that every
  load checks (inline in the memcheck build, opt-in since round 13: this file runs under it), a KernelFault naming
  the line, the argument and the distance; a write
  before an array's start is found after the launch (those bytes hold a pattern now, as the slack did).
The other tests pass on the tree before too: those kernels needed no fix.
Cold cache (the runtimes, the precompiled headers and both files, one compile each): 30 s here (2 shared cores);
warm: 1.3-2 s.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest

from minilora import emulator as emu
from minilora.emulator import BarrierError, KernelFault, RawModule

R12 = Path(__file__).parent / "emu_kernels" / "r12"
# memcheck: every load checked against the arguments' fences (a read next to an array is named; round 13)
pytestmark = [pytest.mark.skipif(not emu.is_available(), reason="the CUDA emulator needs g++"),
              pytest.mark.usefixtures("memcheck_every_launch")]
SGEMM = ("sgemm_global_mem_coalesce<32>", "sgemm_shared_mem_block<32>", "sgemm1DBlocktiling<64, 64, 8, 8>",
         "sgemm2DBlocktiling<64, 64, 8, 8, 8>", "sgemmVectorize<128, 128, 8, 8, 8>",
         "sgemmWarptiling<64, 128, 16, 32, 64, 2, 4, 4, 128>", "sgemmDoubleBuffering<64, 64, 16, 4, 4>")
# C++ linkage (no extern "C"), as their authors declare them: CuPy finds them through name_expressions too
PLAIN = ("sgemm_naive", "flash_attn_forward", "layernorm_forward_kernel3", "softmax_forward_kernel5",
         "gelu_forward_kernel2", "residual_forward_kernel", "crossentropy_forward_kernel1",
         "crossentropy_softmax_backward_kernel1", "adamw_kernel2", "shift_by_one_wrong_edge")
i32, f32 = np.int32, np.float32


SGEMM_MODULE = dict(path=R12 / "sgemm_attention.cu", name_expressions=[*SGEMM, *PLAIN])


@lru_cache(maxsize=None)
def sgemm_module() -> RawModule:
    return RawModule(**SGEMM_MODULE).compile()


def fn(name: str):
    return sgemm_module().get_function(name)


def randn(*shape, dtype=np.float32, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


def check_sgemm(name, M, N, K, grid, block, alpha=1.5, beta=-0.5):
    A, B, C = randn(M, K), randn(K, N, seed=1), randn(M, N, seed=2)
    expected = alpha * (A.astype(np.float64) @ B) + beta * C.astype(np.float64)
    fn(name)(grid, block, (i32(M), i32(N), i32(K), f32(alpha), A, B, f32(beta), C))
    # float32 dot products of K <= 72 terms of size ~1: within 1e-5 relative of the float64 product
    np.testing.assert_allclose(C, expected, rtol=1e-5, atol=1e-4 * np.sqrt(K), err_msg=name)


def test_sgemm_naive_and_coalesced_on_ragged_sizes():
    M, N, K = 45, 70, 37
    check_sgemm("sgemm_naive", M, N, K, (cdiv(M, 32), cdiv(N, 32)), (32, 32))
    check_sgemm("sgemm_global_mem_coalesce<32>", M, N, K, (cdiv(M, 32), cdiv(N, 32)), (32 * 32,))


def test_sgemm_shared_memory_and_blocktiling():
    check_sgemm("sgemm_shared_mem_block<32>", 64, 96, 64, (2, 3), (32 * 32,))
    check_sgemm("sgemm1DBlocktiling<64, 64, 8, 8>", 128, 192, 40, (3, 2), (64 * 64 // 8,))
    check_sgemm("sgemm2DBlocktiling<64, 64, 8, 8, 8>", 128, 64, 72, (1, 2), (64,))


def test_sgemm_vectorized_warptiled_and_double_buffered():
    check_sgemm("sgemmVectorize<128, 128, 8, 8, 8>", 128, 256, 24, (2, 1), (256,))
    check_sgemm("sgemmWarptiling<64, 128, 16, 32, 64, 2, 4, 4, 128>", 128, 128, 48, (1, 2), (128,))
    check_sgemm("sgemmDoubleBuffering<64, 64, 16, 4, 4>", 64, 128, 80, (2, 1), (256,))


def attention(q, k, v, scale):
    s = np.einsum("bhqd,bhkd->bhqk", q.astype(np.float64), k) * scale
    p = np.exp(s - s.max(-1, keepdims=True))
    return np.einsum("bhqk,bhkd->bhqd", p / p.sum(-1, keepdims=True), v), s.max(-1), np.exp(
        s - s.max(-1, keepdims=True)).sum(-1)


def test_flash_attention_forward_with_a_ragged_last_tile():
    B, nh, N, d, Bc, Br = 2, 3, 45, 16, 16, 16
    q, k, v = randn(B, nh, N, d), randn(B, nh, N, d, seed=1), randn(B, nh, N, d, seed=2)
    o, l, m = np.zeros_like(q), np.zeros((B, nh, N), f32), np.zeros((B, nh, N), f32)
    scale = 1 / np.sqrt(d)
    shared = (3 * Bc * d + Bc * Br) * 4
    fn("flash_attn_forward")((B, nh), (Br,), (q, k, v, i32(N), i32(d), i32(cdiv(N, Bc)), i32(cdiv(N, Br)), i32(Bc),
                                              i32(Br), f32(scale), l, m, o), shared_mem=shared)
    expected, row_max, _ = attention(q, k, v, scale)
    np.testing.assert_allclose(o, expected, rtol=1e-5, atol=2e-6)
    np.testing.assert_allclose(m, row_max, rtol=1e-6, atol=1e-6)  # the running max ends at the row's max
    assert (l >= 1).all()


def test_llmc_layernorm_with_cooperative_groups_reduce():
    N, C = 37, 200
    x, w, b = randn(N, C) * 2 + 0.5, randn(C, seed=1), randn(C, seed=2)
    out, mean, rstd = np.zeros((N, C), f32), np.zeros(N, f32), np.zeros(N, f32)
    fn("layernorm_forward_kernel3")((cdiv(N * 32, 256),), (256,), (out, mean, rstd, x, w, b, i32(N), i32(C)))
    v = x.astype(np.float64)
    mu, var = v.mean(1), v.var(1)
    np.testing.assert_allclose(mean, mu, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(rstd, 1 / np.sqrt(var + 1e-5), rtol=1e-5)
    np.testing.assert_allclose(out, (v - mu[:, None]) / np.sqrt(var[:, None] + 1e-5) * w + b, rtol=1e-4, atol=1e-5)


def test_llmc_causal_softmax_gelu_and_residual():
    N, T = 3, 52  # T a multiple of 4, as the kernel asserts
    x, out = randn(N, T, T) * 3, np.zeros((N, T, T), f32)
    inv_temperature = 0.125
    fn("softmax_forward_kernel5")((cdiv(N * T * 32, 128),), (128,), (out, f32(inv_temperature), x, i32(N), i32(T)))
    s = x.astype(np.float64) * inv_temperature
    s[:, np.triu(np.ones((T, T), bool), 1)] = -np.inf
    p = np.exp(s - s.max(-1, keepdims=True))
    np.testing.assert_allclose(out, p / p.sum(-1, keepdims=True), rtol=1e-5, atol=1e-8)
    n = 4 * 777
    x, y = randn(n), np.full(n, np.nan, f32)
    fn("gelu_forward_kernel2")((cdiv(n // 4, 128),), (128,), (y, x, i32(n)))
    v = x.astype(np.float64)
    np.testing.assert_allclose(y, 0.5 * v * (1 + np.tanh(np.sqrt(2 / np.pi) * (v + 0.044715 * v ** 3))),
                               rtol=1e-5, atol=1e-6)
    a, b, out = randn(n), randn(n, seed=1), np.zeros(n, f32)
    fn("residual_forward_kernel")((cdiv(n // 4, 512),), (512,), (out, a, b, i32(n)))
    np.testing.assert_array_equal(out, a + b)


def test_llmc_crossentropy_forward_backward_and_adamw():
    B, T, V = 2, 5, 67
    logits = randn(B, T, V)
    e = np.exp(logits - logits.max(-1, keepdims=True))
    probs = (e / e.sum(-1, keepdims=True)).astype(f32)
    targets = np.random.default_rng(3).integers(0, V, (B, T)).astype(np.int32)
    losses = np.zeros((B, T), f32)
    fn("crossentropy_forward_kernel1")((1,), (32,), (losses, probs, targets, i32(B), i32(T), i32(V)))
    picked = np.take_along_axis(probs, targets[..., None], -1)[..., 0]
    np.testing.assert_array_equal(losses, (-np.log(picked.astype(np.float64))).astype(f32))  # logf rounds once
    dlosses, dlogits = np.full((B, T), 1 / (B * T), f32), np.zeros((B, T, V), f32)
    fn("crossentropy_softmax_backward_kernel1")((cdiv(B * T * V, 128),), (128,),
                                                (dlogits, dlosses, probs, targets, i32(B), i32(T), i32(V)))
    onehot = np.eye(V)[targets]
    np.testing.assert_allclose(dlogits, (probs - onehot) / (B * T), rtol=1e-6, atol=1e-9)
    n = 1000
    p, g = randn(n), randn(n, seed=1) * 0.1
    m, v = randn(n, seed=2) * 0.01, np.abs(randn(n, seed=3)) * 1e-3
    P, G, Mo, Vo = p.copy(), g.copy(), m.copy(), v.copy()
    lr, b1, b2, eps, wd, t = 1e-3, 0.9, 0.999, 1e-8, 0.01, 3
    fn("adamw_kernel2")((cdiv(n, 256),), (256,), (p, g, m, v, np.int64(n), f32(lr), f32(b1), f32(b2),
                                                  f32(1 - b1 ** t), f32(1 - b2 ** t), f32(eps), f32(wd)))

    def fmaf(a, b, c):  # a float32 product is exact in float64; the sum rounds twice (a tie in ~2^-29)
        return (np.float64(a) * b + c).astype(f32)

    def lerp(start, end, weight):
        return fmaf(weight, end, fmaf(-weight, start, start))

    Mo, Vo = lerp(G, Mo, f32(b1)), lerp(G * G, Vo, f32(b2))
    np.testing.assert_array_equal(m, Mo)
    np.testing.assert_array_equal(v, Vo)
    m_hat, v_hat = Mo / f32(1 - b1 ** t), Vo / f32(1 - b2 ** t)
    np.testing.assert_array_equal(p, P - f32(lr) * (m_hat / (np.sqrt(v_hat) + f32(eps)) + f32(wd) * P))


CLASSIC_TEMPLATES = ("reduce5<128>", "reduce5<64>", "reduce6<128, false>", "reduce6<256, true>")


CLASSICS = dict(path=R12 / "classics.cu", name_expressions=list(CLASSIC_TEMPLATES))
# built on the session's helper core meanwhile (tests/background_runs.py), as memcheck_every_launch has it
EMULATOR_BUILDS = [(SGEMM_MODULE, {"MINILORA_EMU_MEMCHECK": "1"}), (CLASSICS, {"MINILORA_EMU_MEMCHECK": "1"})]


@lru_cache(maxsize=None)
def classics(cooperative: bool = False) -> RawModule:
    # one compile: a cooperative RawModule of the same source and options shares the built module
    return RawModule(**CLASSICS, enable_cooperative_groups=cooperative).compile()


def classic(name: str, cooperative: bool = False):
    return classics(cooperative).get_function(name)


@pytest.mark.parametrize("n", [1000, 4096])
def test_harris_reductions_one_to_seven(n):
    x = randn(n)
    total = x.astype(np.float64).sum()
    for name, block, per_block in (("reduce0", 128, 128), ("reduce1", 128, 128), ("reduce2", 256, 256),
                                   ("reduce3", 128, 256), ("reduce4", 128, 256), ("reduce5<128>", 128, 256),
                                   ("reduce5<64>", 64, 128)):
        grid = cdiv(n, per_block)
        partial = np.full(grid, np.nan, f32)
        classic(name)((grid,), (block,), (x, partial, np.uint32(n)), shared_mem=block * 4)
        expected = np.pad(x, (0, grid * per_block - n)).astype(np.float64).reshape(grid, per_block).sum(1)
        np.testing.assert_allclose(partial, expected, rtol=1e-5, atol=1e-4, err_msg=name)
    name, block = ("reduce6<256, true>", 256) if n & (n - 1) == 0 else ("reduce6<128, false>", 128)
    partial = np.full(3, np.nan, f32)  # 3 blocks: a grid-stride loop over the rest
    classic(name)((3,), (block,), (x, partial, np.uint32(n)), shared_mem=block * 4)
    np.testing.assert_allclose(partial.astype(np.float64).sum(), total, rtol=1e-5, atol=1e-4)


def test_blelloch_scan_of_a_ragged_large_array():
    n, block = 1000, 128  # 256 elements per block, 4 blocks, the last one short
    x = np.random.default_rng(4).integers(-8, 9, n).astype(f32)  # small integers: every sum exact
    out, sums = np.full(n, np.nan, f32), np.zeros(4, f32)
    padded = 2 * block + (2 * block >> 5)  # CONFLICT_FREE_OFFSET's padding
    classic("prescan")((4,), (block,), (out, x, sums, i32(n)), shared_mem=padded * 4)
    scanned_sums, dummy = np.full(4, np.nan, f32), np.zeros(1, f32)
    classic("prescan")((1,), (2,), (scanned_sums, sums, dummy, i32(4)), shared_mem=4 * 4)
    classic("add_block_sums")((4,), (block,), (out, scanned_sums, i32(n)))
    np.testing.assert_array_equal(out, np.concatenate([[0], np.cumsum(x)[:-1]]))
    assert dummy[0] == x.sum()


def test_padded_tile_transpose_and_privatized_histogram():
    h, w = 70, 45
    a, t = randn(h, w), np.zeros((w, h), f32)
    classic("transposeNoBankConflicts")((cdiv(w, 32), cdiv(h, 32)), (32, 8), (t, a, i32(w), i32(h)))
    np.testing.assert_array_equal(t, a.T)
    data = np.random.default_rng(5).integers(0, 256, 10007).astype(np.uint8)
    histo = np.zeros(256, np.uint32)
    classic("histo_privatized")((5,), (192,), (data, np.int64(data.size), histo))
    np.testing.assert_array_equal(histo, np.bincount(data, minlength=256))


def test_radix_sort_by_ballot_and_popc():
    n = 777
    keys = np.random.default_rng(6).integers(0, 1 << 12, n).astype(np.uint32)
    a, b = keys.copy(), np.zeros(n, np.uint32)
    for bit in range(12):
        classic("radix_split")((1,), (1024,), (a, b, i32(n), i32(bit)))
        a, b = b, a
    np.testing.assert_array_equal(a, np.sort(keys))


def test_butterfly_softmax_half2_gemv_and_warp_bitonic_topk():
    x, y = randn(13, 75) * 4, np.full((13, 75), np.nan, f32)
    classic("softmax_warp_rows")((cdiv(13, 4),), (128,), (x, y, i32(13), i32(75)))
    e = np.exp(x.astype(np.float64) - x.max(1, keepdims=True))
    np.testing.assert_allclose(y, e / e.sum(1, keepdims=True), rtol=1e-5, atol=1e-8)
    batch, rows, cols = 3, 21, 94
    A, v = randn(batch, rows, cols).astype(np.float16), randn(batch, cols, seed=1).astype(np.float16)
    out = np.zeros((batch, rows), np.float16)
    classic("batched_gemv_half2")((cdiv(rows, 4), batch), (32, 4), (A, v, out, i32(rows), i32(cols)))
    products = (A.astype(np.float64) * v[:, None, :]).astype(np.float16)  # __hmul2 rounds each to half
    expected = products.astype(np.float64).sum(-1)
    # the float32 sum's order differs from NumPy's: one half ulp of the result at most
    np.testing.assert_allclose(out.astype(np.float64), expected, rtol=2 ** -10, atol=2 ** -14)
    rows, cols, k = 5, 150, 10
    x = randn(rows, cols, seed=2)
    values, indices = np.zeros((rows, k), f32), np.zeros((rows, k), np.int32)
    classic("topk_warp_bitonic")((2,), (96,), (x, values, indices, i32(rows), i32(cols), i32(k)))
    order = np.argsort(-x, axis=1, kind="stable")[:, :k]
    np.testing.assert_array_equal(indices, order)
    np.testing.assert_array_equal(values, np.take_along_axis(x, order, 1))


def test_grid_sync_after_threads_returned_early():
    n = 300  # 2 blocks of 256: block 1 has 44 threads in range, the rest returned before grid.sync()
    x, partial, total = randn(n), np.zeros(2, f32), np.zeros(1, f32)
    classic("grid_sum_early_return", cooperative=True)((2,), (256,), (x, partial, total, i32(n)))
    np.testing.assert_allclose(partial, [x[:256].astype(np.float64).sum(), x[256:].astype(np.float64).sum()],
                               rtol=1e-5, atol=1e-5)
    assert total[0] == partial[0] + partial[1]
    # a block all of whose threads returned never arrives, and neither does one whose thread (0,0,0) returned
    # (cooperative_groups' grid barrier counts blocks, each arriving through that thread): on a GPU the other
    # blocks wait forever
    with pytest.raises(BarrierError, match=r"block \(1,0,0\) .* exited without reaching the grid.sync\(\)"):
        classic("grid_sum_early_return", cooperative=True)((2,), (256,), (x, partial, total, i32(256)))
    lines = (R12 / "classics.cu").read_text().splitlines()
    line = lines.index("    if (blockIdx.x == gridDim.x - 1 && threadIdx.x == 0) return;") + 2
    with pytest.raises(BarrierError, match=rf"31 threads of block \(2,0,0\) .* wait at grid.sync\(\) at "
                                           rf"classics.cu:{line}, but its thread \(0,0,0\) has exited"):
        classic("grid_sync_without_thread0", cooperative=True)((3,), (32,), (np.zeros(1, np.int32),))


def source_line(name: str, text: str) -> int:
    return (R12 / name).read_text().splitlines().index(text) + 1


def test_reads_next_to_an_array_inside_its_fence_are_named_faults():
    # llm.c's x128 load past the end of an array whose size is not a multiple of 4 floats: the 8 bytes after it lie
    # in its copy's slack (the copy starts 16-byte aligned), mapped, and were read unnoticed (the memcheck build,
    # this file's: its loads check the fences' shadow inline)
    x, y = randn(4 * 777 + 2), np.zeros(4 * 777 + 4, f32)
    line = source_line("sgemm_attention.cu",
                       "    return Packed128<ElementType>{__ldcs(reinterpret_cast<const int4*>(address))};")
    with pytest.raises(KernelFault, match=rf"thread \(9,0,0\) of block \(6,0,0\) .*sgemm_attention.cu:{line}: "
                                          rf"invalid memory access: a \d+-byte read at .*out of bounds: 0 bytes past "
                                          rf"the end of argument 1 \('inp'\), an allocation of 12440 bytes"):
        fn("gelu_forward_kernel2")((7,), (128,), (y, x, i32(x.size)))
    # x[-1]: the bytes before an array's start, up to the guard page, are mapped too; a write there (stores are not
    # checked inline) is found in their pattern after the launch
    x, y = randn(64), np.zeros(64, f32)
    line = source_line("sgemm_attention.cu", "        else y[i] = x[i - 1];           // x[-1] for i = 0")
    with pytest.raises(KernelFault, match=rf"thread \(0,0,0\) .*sgemm_attention.cu:{line}: invalid memory access: a "
                                          rf"4-byte read at .*out of bounds: 4 bytes before the start of argument 1 "
                                          rf"\('x'\), an allocation of 256 bytes"):
        fn("shift_by_one_wrong_edge")((1,), (64,), (y, x, i32(64), i32(0)))
    with pytest.raises(KernelFault, match=r"out-of-bounds write before the start of argument 0 \('y'\): 4 of the "
                                          r"3840 bytes before its allocation \(256 bytes\) were written"):
        fn("shift_by_one_wrong_edge")((1,), (64,), (y, x, i32(64), i32(1)))
    np.testing.assert_array_equal(y[:63], x[1:])  # the writes in bounds landed, as on a GPU
    # the same in the lockstep build (its thread-sanitizer hooks check the shadow): a float4 copy without a tail
    x, y = randn(30), np.zeros(32, f32)
    line = source_line("classics.cu", "    if (i < n) reinterpret_cast<float4 *>(y)[i / 4] = "
                                      "reinterpret_cast<const float4 *>(x)[i / 4];")
    with pytest.raises(KernelFault, match=rf"thread \(7,0,0\) of block \(0,0,0\) .*classics.cu:{line}: invalid "
                                          rf"memory access: a 16-byte read at .*out of bounds: 0 bytes past the "
                                          rf"end of argument 0 \('x'\), an allocation of 120 bytes"):
        classic("copy_float4_no_tail")((1,), (32,), (x, y, i32(30)))
    x, y = randn(64), np.zeros(64, f32)
    line = source_line("classics.cu", "    if (i < n - 1) y[i] = (x[i - 1] + x[i] + x[i + 1]) / 3.0f;")
    with pytest.raises(KernelFault, match=rf"thread \(0,0,0\) of block \(0,0,0\) .*classics.cu:{line}: invalid "
                                          rf"memory access: a 4-byte read at .*out of bounds: 4 bytes before the start "
                                          rf"of argument 0 \('x'\), an allocation of 256 bytes"):
        classic("stencil3_missing_left_edge")((1,), (64,), (x, y, i32(64)))
    y = np.zeros(64, f32)
    classic("stencil3_missing_left_edge")((1,), (64,), (x[1:], y, i32(63)))  # a view: its base array is fenced
    np.testing.assert_allclose(y[:62], (x[:-2] + x[1:-1] + x[2:]) / 3, rtol=1e-6)
    # and the shadow is clear again after a launch: the same arrays, read in bounds
    x, y = randn(4 * 777 + 4), np.full(4 * 777 + 4, np.nan, f32)
    fn("gelu_forward_kernel2")((7,), (128,), (y, x, i32(x.size)))
    assert np.isfinite(y).all()
