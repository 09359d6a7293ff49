"""Round 8 of CUDA written by others on the emulator (tests/emu_kernels/r8/*.cu), each kernel run with no edits
against a float64 (or exact) NumPy reference on ragged shapes.

Asynchronous copies as modern kernels write them: NVIDIA's cuda-samples globalToShmemAsyncCopy matrix multiplies
(cuda::memcpy_async into a per-thread cuda::pipeline, into a cuda::barrier, and a block-scoped pipeline over
cuda::pipeline_shared_state), the <cuda_pipeline.h> primitives with zero fill, inline-PTX cp.async macros over
__cvta_generic_to_shared addresses, and cooperative_groups::memcpy_async + cg::wait.  A copy lands when a wait
covers it (on a GPU: at some moment before), so racecheck=True names a read before the wait, and a neighbour's
copy read without a barrier.  Then kernels in the style of public code: a flash-attention-minimal forward, a
siboehm warptiling SGEMM with float4 loads, llama.cpp's rms_norm / soft_max templates with warp reductions, CUB's
BlockLoad / BlockRadixSort / BlockStore / BlockExchange, __hfma2 and __nv_bfloat162 math, a shared-atomics
histogram, a padded-tile transpose and a grid-stride kernel around grid.sync().
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest

from minilora import emulator as emu
from minilora.emulator import KernelFault, RaceError, RawModule

ml_dtypes = pytest.importorskip("ml_dtypes")
bf16 = ml_dtypes.bfloat16
R8 = Path(__file__).parent / "emu_kernels" / "r8"
pytestmark = pytest.mark.skipif(not emu.is_available(), reason="the CUDA emulator needs g++")
rng = np.random.default_rng(88)

ASYNC = ("MatrixMulAsyncCopyMultiStageLargeChunk<16, 2>", "MatrixMulAsyncCopyLargeChunkAWBarrier<16>",
         "MatrixMulAsyncCopyBlockPipeline<16>", "gemv_cp_async<64, 128>", "row_scale_cg_memcpy<64>",
         "MatrixMulAsyncCopyMultiStageLargeChunk<16, 3>", "MatrixMulAsyncCopyMultiStageLargeChunk<16, 4>")
PUBLIC = ("sgemmWarptiling<64, 64, 8, 32, 32, 2, 4, 4, 128>", "rms_norm_f32<32>", "rms_norm_f32<1024>",
          "soft_max_f32<true, 0, 0>", "soft_max_f32<false, 0, 0>", "soft_max_f32<true, 64, 64>",
          "block_sort_pairs<64, 4>", "block_sort_desc_bits<64, 3>", "block_prefix_sum<96, 3>")


@lru_cache(maxsize=None)
def module(name: str, name_expressions: tuple = (), cooperative: bool = False) -> RawModule:
    return RawModule(path=R8 / name, name_expressions=list(name_expressions),
                     enable_cooperative_groups=cooperative).compile()


def async_kernel(name: str):
    return module("async_matmul.cu", ASYNC).get_function(name)


def public_kernel(name: str):
    return module("public_style.cu", PUBLIC).get_function(name)


def line_of(text: str, file: str = "async_matmul.cu", after: str = "") -> int:
    """The line of `file` holding `text` (the first one after the line holding `after`): the messages name it."""
    lines = (R8 / file).read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if after in line)
    return next(i for i, line in enumerate(lines) if i >= start and text in line) + 1


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


# ------------------------------------------------------------------------------------------------
# Asynchronous copies
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ASYNC[:3])
@pytest.mark.parametrize("check", [{}, {"racecheck": True}, {"check_races": True}])
def test_cuda_samples_async_copy_matrix_multiplies(name, check):
    hA, wA, wB = 32, 80, 48  # the samples' kernels take multiples of the tile
    A, B = rng.standard_normal((hA, wA)).astype(np.float32), rng.standard_normal((wA, wB)).astype(np.float32)
    C = np.full((hA, wB), np.nan, np.float32)
    async_kernel(name)((wB // 16, hA // 16), (16, 16), (C, A, B, np.int32(wA), np.int32(wB)), **check)
    np.testing.assert_allclose(C, A.astype(np.float64) @ B, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("M, N, K", [(37, 29, 45), (16, 16, 16)])
def test_pipeline_primitives_double_buffered_sgemm_with_zero_fill(M, N, K):
    A, B = rng.standard_normal((M, K)).astype(np.float32), rng.standard_normal((K, N)).astype(np.float32)
    C = np.zeros((M, N), np.float32)
    async_kernel("sgemm_pipeline_primitives")((cdiv(N, 16), cdiv(M, 16)), (16, 16),
                                              (A, B, C, np.int32(M), np.int32(N), np.int32(K)), racecheck=M == 37)
    np.testing.assert_allclose(C, A.astype(np.float64) @ B, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("cols", [300, 301])  # 16-byte cp.async when rows are aligned, else 4-byte ones
def test_inline_ptx_cp_async_macros_over_shared_window_addresses(cols):
    rows = 5
    X, w = rng.standard_normal((rows, cols)).astype(np.float32), rng.standard_normal(cols).astype(np.float32)
    y = np.zeros(rows, np.float32)
    async_kernel(ASYNC[3])((rows,), (64,), (X, w, y, np.int32(rows), np.int32(cols)), racecheck=cols == 301)
    np.testing.assert_allclose(y, X.astype(np.float64) @ w, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("racecheck", [False, True])
def test_cutlass_style_zfill_predicated_and_ignore_src_copies(racecheck):
    rows, cols = 10, 30  # rows of 32 floats, 30 valid: the last 4-float chunk is half zero-filled
    x = rng.standard_normal((rows, 32)).astype(np.float32)
    out = np.full((12, 32), np.nan, np.float32)  # whole tiles: rows 10 and 11 come from ignore-src copies
    async_kernel("cutlass_style_tile_copy")((cdiv(rows, 4),), (32,), (x, out, np.int32(rows), np.int32(cols)),
                                            racecheck=racecheck)
    np.testing.assert_array_equal(out[:rows], np.where(np.arange(32) < cols, 2 * x, 0))
    np.testing.assert_array_equal(out[rows:], 0)


def test_cooperative_groups_memcpy_async_then_wait():
    x, s = rng.standard_normal((3, 70)).astype(np.float32), rng.standard_normal(70).astype(np.float32)
    out = np.zeros_like(x)
    async_kernel(ASYNC[4])((3,), (64,), (x, s, out, np.int32(70)), shared_mem=2 * 70 * 4)
    np.testing.assert_array_equal(out, x * s + x[:, ::-1])
    async_kernel(ASYNC[4])((3,), (64,), (x, s, out, np.int32(70)), shared_mem=2 * 70 * 4, racecheck=True)


@pytest.mark.parametrize("name, issue, read", [
    ("reads_before_wait", "__pipeline_memcpy_async(&buf", "out[threadIdx.x] = buf[threadIdx.x];"),
    ("cg_reads_before_wait", "cg::memcpy_async(block, buf", "out[threadIdx.x] = buf[threadIdx.x];")])
def test_a_read_before_the_wait_sees_old_bytes_and_racecheck_names_it(name, issue, read):
    line, issued = line_of(read, after=f"void {name}("), line_of(issue, after=f"void {name}(")
    x, out = rng.standard_normal(64).astype(np.float32), np.zeros(64, np.float32)
    async_kernel(name)((1,), (64,), (x, out))
    assert np.isnan(out).all()  # the copy lands at the wait: the read got the poisoned fresh shared memory
    with pytest.raises(RaceError, match=r"differs between the forward and reverse orders.*an asynchronous copy's "
                                        r"destination before waiting for it"):
        async_kernel(name)((1,), (64,), (x, out), check_races=True)  # the other orders land copies as they are issued
    with pytest.raises(RaceError, match=rf"read of byte 0 of __shared__ 'buf' by thread \(0,0,0\) of block \(0,0,0\) "
                                        rf"of kernel '{name}' at async_matmul\.cu:{line}, while an "
                                        r"asynchronous copy into it is in flight: thread \(0,0,0\) issued it at "
                                        rf"async_matmul\.cu:{issued}"):
        async_kernel(name)((1,), (64,), (x, out), racecheck=True)


def test_prefetching_into_the_buffer_a_slower_thread_still_reads_is_named():
    A, B = rng.standard_normal((16, 96)).astype(np.float32), rng.standard_normal((96, 16)).astype(np.float32)
    C = np.zeros((16, 16), np.float32)
    racy = async_kernel(ASYNC[5])
    racy((1,), (16, 16), (C, A, B, np.int32(96), np.int32(16)))  # fibers run in turn: the numbers come out right
    np.testing.assert_allclose(C, A.astype(np.float64) @ B, rtol=1e-5, atol=1e-5)
    with pytest.raises(RaceError, match=rf"__shared__ 'As' by thread \(\d+,\d+,0\) .* at async_matmul\.cu:{line_of('Csub += As[j]')}, while an "
                                        r"asynchronous copy into it is in flight: thread \(0,0,0\) issued it at "
                                        rf"async_matmul\.cu:{line_of('cuda::memcpy_async(&As[j]')}"):
        racy((1,), (16, 16), (C, A, B, np.int32(96), np.int32(16)), racecheck=True)


def test_prefetching_as_many_stages_as_buffers_is_named():
    """cuda-samples' own loop bound (`aStage <= a + aStep * maxPipelineStages`) issues 5 stages into 4 buffers: the 5th
    copy targets the buffer of the 1st while that copy is still in flight (its square test matrices of constant
    values hide the result)."""
    A, B = rng.standard_normal((16, 96)).astype(np.float32), rng.standard_normal((96, 16)).astype(np.float32)
    C = np.zeros((16, 16), np.float32)
    sample = async_kernel(ASYNC[6])
    sample((1,), (16, 16), (C, A, B, np.int32(96), np.int32(16)))  # copies land at their waits: right numbers
    np.testing.assert_allclose(C, A.astype(np.float64) @ B, rtol=1e-5, atol=1e-5)
    with pytest.raises(RaceError, match=r"differs between the forward and reverse orders"):
        sample((1,), (16, 16), (C, A, B, np.int32(96), np.int32(16)), check_races=True)
    issue = line_of("cuda::memcpy_async(&As[j]")
    with pytest.raises(RaceError, match=rf"write of byte 0 of __shared__ 'As' by thread \(0,0,0\) .* at async_matmul\.cu:"
                                        rf"{issue}, while an asynchronous copy into it is in flight: thread \(0,0,0\) "
                                        rf"issued it at async_matmul\.cu:{issue}"):
        sample((1,), (16, 16), (C, A, B, np.int32(96), np.int32(16)), racecheck=True)


def test_a_neighbours_copy_read_without_a_barrier_is_a_hazard():
    x, out = rng.standard_normal(64).astype(np.float32), np.zeros(64, np.float32)
    read, issued = (line_of(text, after="void reads_neighbour_without_barrier(") for text in
                    ("out[threadIdx.x] = buf[(threadIdx.x + 1) % 64]", "__pipeline_memcpy_async(&buf"))
    with pytest.raises(RaceError, match=rf"write-after-read hazard on __shared__ 'buf' \(byte 4\).*thread \(0,0,0\) "
                                        rf"reads it at async_matmul\.cu:{read}, then thread \(1,0,0\) writes it at "
                                        rf"async_matmul\.cu:{issued}"):
        async_kernel("reads_neighbour_without_barrier")((1,), (64,), (x, out), racecheck=True)


def test_async_copy_misuse_is_a_named_fault():
    x, out = rng.standard_normal(256).astype(np.float32), np.zeros(64, np.float32)
    with pytest.raises(KernelFault, match=rf"misaligned address in the asynchronous copy at async_matmul\.cu:"
                                          rf"{line_of('&buf[threadIdx.x * 4 + 1]')}: a "
                                          r"16-byte cp\.async"):
        async_kernel("misaligned_cp_async")((1,), (16,), (x, out))
    at = line_of("bar.arrive_and_wait();", after="void barrier_without_init(")
    with pytest.raises(KernelFault, match=rf"cuda::barrier used before init\(&bar, count\).* at async_matmul\.cu:{at} "):
        async_kernel("barrier_without_init")((1,), (64,), (out,))
    # a thread may end with copies in flight: they land in its block's shared memory, not in a later launch's
    for _ in range(2):
        out[:] = 0
        async_kernel("exits_with_copies_in_flight")((2,), (32,), (x, out), racecheck=_ == 1)
        assert (out[:32] == 1).all()


def test_shared_window_addresses_outside_every_array_fault_by_name():
    src = '''#include <cuda_pipeline_primitives.h>
extern "C" __global__ void k(const float* x, float* out) {
    __shared__ __align__(16) float buf[8];
    unsigned a = (unsigned)__cvta_generic_to_shared(buf);
    asm volatile("cp.async.ca.shared.global [%0], [%1], 16;" :: "r"(a + 32), "l"(x));
    asm volatile("cp.async.wait_all;");
    out[0] = buf[0];
}
extern "C" __global__ void j(const float* x, float* out) {
    float local = 0;
    out[0] = (float)__cvta_generic_to_shared(&local);
}'''
    x, out = np.zeros(8, np.float32), np.zeros(1, np.float32)
    mod = RawModule(code=src)
    with pytest.raises(KernelFault, match=r"the shared-memory address 0x\w+ used at k\.cu:5 \(16 bytes\) is outside "
                                          r"every __shared__ array"):
        mod.get_function("k")((1,), (1,), (x, out))
    with pytest.raises(KernelFault, match=r"__cvta_generic_to_shared .* at k\.cu:11 got 0x\w+, which is not in the "
                                          r"block's shared memory"):
        mod.get_function("j")((1,), (1,), (x, out))


# ------------------------------------------------------------------------------------------------
# Kernels in the style of public code
# ------------------------------------------------------------------------------------------------
def attention(q, k, v, scale):
    s = np.einsum("bhnd,bhmd->bhnm", q.astype(np.float64), k.astype(np.float64)) * scale
    p = np.exp(s - s.max(-1, keepdims=True))
    return np.einsum("bhnm,bhmd->bhnd", p / p.sum(-1, keepdims=True), v.astype(np.float64))


@pytest.mark.parametrize("N", [37, 32])  # a short last tile, and none
def test_flash_attention_minimal_forward(N):
    B, nh, d, Bc = 2, 2, 16, 16
    q, k, v = (rng.standard_normal((B, nh, N, d)).astype(np.float32) for _ in range(3))
    Tc = Tr = cdiv(N, Bc)
    l, m = np.zeros((B, nh, N), np.float32), np.full((B, nh, N), -np.inf, np.float32)
    O = np.zeros_like(q)
    scale = 1 / np.sqrt(d)
    public = module("public_style.cu", PUBLIC)
    public.get_function("forward_kernel")((B, nh), (Bc,), (q, k, v, np.int32(N), np.int32(d), np.int32(Tc), np.int32(Tr),
                                                        np.int32(Bc), np.int32(Bc), np.float32(scale), l, m, O),
                                          shared_mem=(3 * Bc * d + Bc * Bc) * 4)
    np.testing.assert_allclose(O, attention(q, k, v, scale), rtol=1e-4, atol=1e-5)


def test_siboehm_warptiling_sgemm_with_float4_loads_on_ragged_m_and_n():
    M, N, K = 70, 100, 36  # float4 rows: N and K multiples of 4
    A, B = rng.standard_normal((M, K)).astype(np.float32), rng.standard_normal((K, N)).astype(np.float32)
    C0 = rng.standard_normal((M, N)).astype(np.float32)
    C = C0.copy()
    public_kernel(PUBLIC[0])((cdiv(N, 64), cdiv(M, 64)), (128,), (np.int32(M), np.int32(N), np.int32(K), np.float32(1.5),
                                                               A, B, np.float32(0.5), C))
    np.testing.assert_allclose(C, 1.5 * (A.astype(np.float64) @ B) + 0.5 * C0, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name, rows, cols, block", [(PUBLIC[1], 3, 300, 32), (PUBLIC[2], 2, 1500, 1024)])
def test_llama_cpp_rms_norm_with_warp_reductions(name, rows, cols, block):
    x = rng.standard_normal((rows, cols)).astype(np.float32)
    out = np.zeros_like(x)
    public_kernel(name)((rows,), (block, 1), (x, out, np.int32(cols), np.float32(1e-6)))
    xd = x.astype(np.float64)
    np.testing.assert_allclose(out, xd / np.sqrt((xd ** 2).mean(1, keepdims=True) + 1e-6), rtol=2e-5, atol=1e-6)


@pytest.mark.parametrize("name, cols, block, masked", [(PUBLIC[3], 150, 64, True), (PUBLIC[4], 45, 32, True),
                                                       (PUBLIC[5], 64, 64, False)])
def test_llama_cpp_soft_max_templates(name, cols, block, masked):
    rows, rows_y, scale = 4, 2, 0.7
    x = rng.standard_normal((rows, cols)).astype(np.float32)
    mask = np.where(rng.random((rows_y, cols)) < 0.2, -np.inf, rng.standard_normal((rows_y, cols))).astype(np.float32)
    out = np.zeros_like(x)
    public_kernel(name)((rows,), (block,), (x, mask if masked else None, out, np.int32(cols), np.int32(rows_y),
                                      np.float32(scale)), shared_mem=(32 + cols) * 4)
    logits = x.astype(np.float64) * scale + (mask[np.arange(rows) % rows_y] if masked else 0)
    e = np.exp(logits - logits.max(1, keepdims=True))
    np.testing.assert_allclose(out, e / e.sum(1, keepdims=True), rtol=1e-5, atol=1e-7)


def test_cub_block_load_radix_sort_store_pairs_in_tiles_with_a_partial_last_one():
    n = 600  # tiles of 256: the last holds 88
    keys = rng.standard_normal(n).astype(np.float32)
    keys[::7] = np.round(keys[::7])  # equal keys: the sort is stable
    keys[5], keys[9] = 0.0, -0.0     # -0.0 sorts as +0.0 (CUB's radix digits), so these keep their order
    keys_out, idx_out = np.zeros(n, np.float32), np.zeros(n, np.int32)
    public_kernel(PUBLIC[6])((cdiv(n, 256),), (64,), (keys, keys_out, idx_out, np.int32(n)))
    order = np.concatenate([lo + np.argsort(keys[lo:lo + 256], kind="stable") for lo in range(0, n, 256)])
    np.testing.assert_array_equal(idx_out, order)
    np.testing.assert_array_equal(keys_out.view(np.uint32), keys[order].view(np.uint32))


def test_cub_radix_sort_descending_on_a_bit_range_to_a_striped_arrangement():
    keys = rng.integers(-1000, 1000, 384).astype(np.int32)
    out = np.zeros_like(keys)
    public_kernel(PUBLIC[7])((2,), (64,), (keys, out, np.int32(8)))
    expect = np.concatenate([seg[np.argsort(255 - (seg & 255), kind="stable")] for seg in keys.reshape(2, 192)])
    np.testing.assert_array_equal(out, expect)


@pytest.mark.parametrize("n", [250, 288])
def test_cub_block_exchange_striped_to_blocked_then_block_scan(n):
    x = rng.integers(-50, 50, n).astype(np.int32)
    out = np.zeros(n, np.int32)
    public_kernel(PUBLIC[8])((1,), (96,), (x, out, np.int32(n)), racecheck=n == 250)
    np.testing.assert_array_equal(out, np.cumsum(x))


def test_half2_hfma2_axpy_with_an_odd_length():
    n = 257
    x, y = rng.standard_normal(n).astype(np.float16), rng.standard_normal(n).astype(np.float16)
    a = np.float16(0.75)
    got = y.copy()
    module("public_style.cu", PUBLIC).get_function("haxpy_half2")((2,), (64,), (np.int32(n), a, x, got))
    expect = (np.float64(a) * x.astype(np.float64) + y.astype(np.float64)).astype(np.float16)  # one rounding
    np.testing.assert_array_equal(got.view(np.uint16), expect.view(np.uint16))


def test_swiglu_in_nv_bfloat162_pairs():
    pairs = 77
    gate, up = (rng.standard_normal(2 * pairs).astype(np.float32).astype(bf16) for _ in range(2))
    out = np.zeros(2 * pairs, bf16)
    module("public_style.cu", PUBLIC).get_function("swiglu_bf16x2")((2,), (64,), (gate, up, out, np.int32(pairs)))
    g = gate.astype(np.float64)
    silu = (g / (1 + np.exp(-g))).astype(np.float32).astype(bf16)  # __float22bfloat162_rn
    expect = (silu.astype(np.float32) * up.astype(np.float32)).astype(bf16)  # __hmul2: one rounding of the product
    np.testing.assert_array_equal(out.view(np.uint16), expect.view(np.uint16))


def test_histogram_with_shared_memory_atomics():
    data = rng.integers(0, 256, 10007).astype(np.uint8)
    out = np.zeros(37, np.uint32)
    module("public_style.cu", PUBLIC).get_function("histogram_smem_atomics")(
        (8,), (128,), (data, np.int32(data.size), out, np.int32(37)), shared_mem=37 * 4)
    np.testing.assert_array_equal(out, np.bincount(data % 37, minlength=37))


def test_transpose_through_a_padded_tile_on_ragged_edges():
    width, height = 70, 45
    x = rng.standard_normal((height, width)).astype(np.float32)
    out = np.zeros((width, height), np.float32)
    module("public_style.cu", PUBLIC).get_function("transposeNoBankConflicts")(
        (cdiv(width, 32), cdiv(height, 32)), (32, 8), (out, x, np.int32(width), np.int32(height)), racecheck=True)
    np.testing.assert_array_equal(out, x.T)


def test_grid_stride_loops_around_a_grid_sync():
    n = 5000
    x = rng.standard_normal(n).astype(np.float32)
    y, partial = np.zeros_like(x), np.zeros(4, np.float32)
    module("public_style.cu", PUBLIC, cooperative=True).get_function("grid_rms_normalize")(
        (4,), (128,), (x, y, partial, np.int32(n)))
    xd = x.astype(np.float64)
    np.testing.assert_allclose(y, xd / np.sqrt((xd ** 2).mean() + 1e-6), rtol=1e-5)


def test_bad_async_copies_are_named_faults_not_crashes():
    src = '''#include <cuda_pipeline.h>
#include <cuda/pipeline>
#include <cooperative_groups.h>
extern "C" __global__ void wild(const float* x, float* out, long long off) {
    __shared__ __align__(16) float buf[64];
    __pipeline_memcpy_async(&buf[threadIdx.x * 4], x + off, 16);
    __pipeline_commit();
    __pipeline_wait_prior(0);
    out[threadIdx.x] = buf[threadIdx.x];
}
extern "C" __global__ void to_global(const float* x, float* out) {
    __pipeline_memcpy_async(out, x, 16);
}
extern "C" __global__ void roles(float* out) {
    __shared__ cuda::pipeline_shared_state<cuda::thread_scope_block, 2> state;
    auto pipe = cuda::make_pipeline(cooperative_groups::this_thread_block(), &state, cuda::pipeline_role::producer);
    out[0] = 1;
}'''
    mod = RawModule(code=src)
    x, out = np.zeros(64, np.float32), np.zeros(64, np.float32)
    for source, offset, what in ((x, 1 << 40, "a wild or freed pointer"), (None, 0, "a null pointer")):
        with pytest.raises(KernelFault, match=r"thread \(0,0,0\) of block \(0,0,0\) of kernel 'wild' crashed landing the "
                                              r"asynchronous copy issued at wild\.cu:6 \(16 bytes from .*SIGSEGV.*" + what):
            mod.get_function("wild")((1,), (16,), (source, out, np.int64(offset)))
    with pytest.raises(KernelFault, match=r"shared destination of __pipeline_memcpy_async\) at wild\.cu:12 got 0x\w+, which "
                                          r"is not in the block's shared memory"):
        mod.get_function("to_global")((1,), (1,), (x, out))
    # every thread a producer: libcu++ would init the consumers' barriers with a count of 0 (round 22 runs roles)
    with pytest.raises(KernelFault, match=r"cuda::make_pipeline with roles needs at least one producer and one "
                                          r"consumer at wild\.cu:16"):
        mod.get_function("roles")((1,), (32,), (out,))


def test_ld_st_shared_and_cvta_through_window_addresses():
    src = '''extern "C" __global__ void k(const float* x, float* out, unsigned wrap) {
    __shared__ float s[64];
    unsigned addr;
    asm("{ .reg .u64 u; cvta.to.shared.u64 u, %1; cvt.u32.u64 %0, u; }" : "=r"(addr) : "l"(s));
    asm volatile("st.shared.f32 [%0], %1;" :: "r"(addr + 4 * threadIdx.x), "f"(x[threadIdx.x] * 2.0f));
    __syncthreads();
    float v0, v1;
    asm volatile("ld.shared.v2.f32 {%0, %1}, [%2+8];" : "=f"(v0), "=f"(v1) : "r"(addr + 8 * (threadIdx.x / 2 % wrap)));
    out[threadIdx.x] = (threadIdx.x & 1) ? v1 : v0;
}'''
    x = rng.standard_normal(64).astype(np.float32)
    out = np.zeros(64, np.float32)
    t = np.arange(64)
    RawModule(code=src).get_function("k")((1,), (64,), (x, out, np.uint32(31)))
    np.testing.assert_array_equal(out, 2 * x[2 * (t // 2 % 31) + 2 + (t & 1)])
    with pytest.raises(KernelFault, match=r"the shared-memory address 0x\w+ used at k\.cu:8 \(8 bytes\) is outside every "
                                          r"__shared__ array"):
        RawModule(code=src).get_function("k")((1,), (64,), (x, out, np.uint32(32)))  # threads 62, 63 read s[64], s[65]


def test_asm_in_a_macro_is_translated_and_refused_only_where_it_is_used():
    src = '''#define LANE_ID(x) asm volatile("mov.u32 %0, %%laneid;" : "=r"(x))
#define FENCE_PROXY() asm volatile("fence.proxy.tensormap::generic.release.cta;" ::: "memory")
extern "C" __global__ void k(unsigned* out) {
    unsigned lane;
    LANE_ID(lane);
    out[threadIdx.x] = lane;
}
#ifdef USE_FENCE
extern "C" __global__ void j(unsigned* out) {
    FENCE_PROXY();
}
#endif'''
    out = np.zeros(64, np.uint32)
    RawModule(code=src).get_function("k")((1,), (64,), (out,))
    np.testing.assert_array_equal(out, np.arange(64) % 32)
    with pytest.raises(emu.CompileError, match=r"k\.cu:10: the inline PTX instruction 'fence\.proxy\.tensormap::generic\.release\.cta' "
                                               r"is not modelled"):
        RawModule(code=src, options=("-DUSE_FENCE",)).compile()


def test_tma_transaction_barriers_and_pipeline_arrive_on_are_refused_by_name():
    src = '''#include <cuda/barrier>
extern "C" __global__ void k(const float* x, float* out) {
    __shared__ float buf[32];
    __shared__ cuda::barrier<cuda::thread_scope_block> bar;
    auto token = cuda::device::barrier_arrive_tx(bar, 1, sizeof(buf));
    out[0] = buf[0];
}'''
    with pytest.raises(emu.CompileError, match=r"cuda::device::barrier_arrive_tx .* is not modelled by minilora's CUDA "
                                               r"emulator"):
        RawModule(code=src).compile()
    src = '#include <cuda_pipeline.h>\nextern "C" __global__ void k(float* out) { __pipeline_arrive_on(out); }'
    with pytest.raises(emu.CompileError, match=r"__pipeline_arrive_on \(pipeline copies completing an arrive-wait "
                                               r"barrier's phase\) is not modelled"):
        RawModule(code=src).compile()


def test_cub_collectives_constructed_without_temp_storage_use_their_own_shared_storage():
    src = '''#include <cub/cub.cuh>
extern "C" __global__ void k(const int* x, int* total, int* sorted, int* scanned) {
    int items[2] = {x[2 * threadIdx.x], x[2 * threadIdx.x + 1]};
    const int sum = cub::BlockReduce<int, 64>().Sum(items[0] + items[1]);
    if (threadIdx.x == 0) total[blockIdx.x] = sum;
    cub::BlockRadixSort<int, 64, 2>().Sort(items);
    sorted[2 * threadIdx.x] = items[0];
    sorted[2 * threadIdx.x + 1] = items[1];
    int prefix;
    cub::BlockScan<int, 64>().ExclusiveSum(items[0], prefix);
    cub::BlockExchange<int, 64, 2>().BlockedToStriped(items);
    scanned[threadIdx.x] = prefix + items[1];
}'''
    x = rng.integers(-100, 100, 128).astype(np.int32)
    total, sorted_, scanned = np.zeros(1, np.int32), np.zeros(128, np.int32), np.zeros(64, np.int32)
    RawModule(code=src).get_function("k")((1,), (64,), (x, total, sorted_, scanned), racecheck=True)
    s = np.sort(x)
    assert total[0] == x.sum()
    np.testing.assert_array_equal(sorted_, s)
    np.testing.assert_array_equal(scanned, np.concatenate([[0], np.cumsum(s[0::2])[:-1]]) + s[64:])


def test_warp_tiles_stage_their_own_chunks_with_cg_memcpy_async_and_wait_prior():
    src = '''#include <cooperative_groups.h>
#include <cooperative_groups/memcpy_async.h>
namespace cg = cooperative_groups;
extern "C" __global__ void k(const float* x, float* out, int n) {
    __shared__ float stage[2][4][32];
    auto block = cg::this_thread_block();
    auto warp = cg::tiled_partition<32>(block);
    const int w = block.thread_rank() / 32, chunks = n / 128;
    float acc = 0.f;
    cg::memcpy_async(warp, stage[0][w], x + w * 32, sizeof(float) * 32);
    for (int c = 0; c < chunks; ++c) {
        if (c + 1 < chunks) {
            cg::memcpy_async(warp, stage[(c + 1) & 1][w], x + (c + 1) * 128 + w * 32, sizeof(float) * 32);
            cg::wait_prior<1>(warp);
        } else {
            cg::wait(warp);
        }
        acc += stage[c & 1][w][(warp.thread_rank() + 1) % 32];  // a neighbour lane's element
        warp.sync();
    }
    out[block.thread_rank()] = acc;
}'''
    n = 128 * 5
    x = rng.standard_normal(n).astype(np.float32)
    out = np.zeros(128, np.float32)
    kern = RawModule(code=src).get_function("k")
    lanes = (np.arange(128) // 32) * 32 + (np.arange(128) + 1) % 32
    for check in ({}, {"racecheck": True}, {"check_races": True}):
        kern((1,), (128,), (x, out, np.int32(n)), **check)
        np.testing.assert_allclose(out, x.astype(np.float64).reshape(5, 128)[:, lanes].sum(0), rtol=1e-5, atol=1e-6)
