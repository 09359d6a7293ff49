"""Round 9 of CUDA written by others on the emulator: tensor cores and mbarriers (tests/emu_kernels/r9/*.cu), each
kernel as its public model writes it, unedited, run through the RawModule API against a float64 NumPy reference.

- wmma (<mma.h>): the "Programming Tensor Cores in CUDA 9" blog's column-major GEMM with its alpha/beta epilogue over
  `num_elements`, a cudaTensorCoreGemm-style shared-memory GEMM on ragged shapes (half -> float, half -> half,
  bf16 -> float), tf32 (m16n16k8 with __float_to_tf32) and int8 (signed char, int accumulators);
- inline PTX: a "fast matmul" GEMM on ldmatrix.x4 / .x4.trans / .x2.trans and mma.sync.m16n8k16 (f16 and bf16),
  and one tile per shape written from the PTX ISA's fragment tables (tf32 m16n8k8 with cvt.rna.tf32.f32, f16
  accumulators, s8 m16n8k32 .satfinite, f64 m8n8k4), movmatrix and stmatrix;
- an mbarrier producer/consumer ring (init, arrive, arrive.expect_tx, try_wait.parity in a PTX label loop,
  cp.async.bulk with complete_tx, cp.async with cp.async.mbarrier.arrive.noinc), also under racecheck=True and initcheck=True, and racecheck naming a consumer
  that reads a stage without waiting for it.

The arithmetic the emulator chose (minilora_tensor_core.h): each output of a tensor-core product is c + sum of the
exact products, rounded once to the accumulator's type; so the reference is float64 sums over each instruction's
k-slice, rounded to float32 (or float16) after each one, and the comparison is bit for bit.  A GPU's adders
truncate and may differ from both in the last bits; NVIDIA documents only that the products are exact.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest

from minilora import emulator as emu
from minilora.emulator import BarrierError, CompileError, KernelFault, RaceError, RawModule

ml_dtypes = pytest.importorskip("ml_dtypes")
bf16 = ml_dtypes.bfloat16
R9 = Path(__file__).parent / "emu_kernels" / "r9"
pytestmark = pytest.mark.skipif(not emu.is_available(), reason="the CUDA emulator needs g++")
rng = np.random.default_rng(99)

WMMA = ("wmma_smem_gemm<half, float>", "wmma_smem_gemm<half, half>", "wmma_smem_gemm<__nv_bfloat16, float>",
        "wmma_tile<32, 8, 16, half, float>", "wmma_tile<8, 32, 16, __nv_bfloat16, float>",
        "wmma_tile<8, 8, 4, double, double>")
MMA = ("mma_gemm<half>", "mma_gemm<__nv_bfloat16>")
PIPE = ("pipeline<64, 2, PLAIN>", "pipeline<64, 3, BULK>", "pipeline<64, 2, CP_ASYNC>", "pipeline_missing_full_wait<64, 2>")


@lru_cache(maxsize=None)
def module(name: str, name_expressions: tuple = ()) -> RawModule:
    return RawModule(path=R9 / name, name_expressions=list(name_expressions)).compile()


def sliced_product(A, B, k_step: int, out=np.float32, C=None) -> np.ndarray:
    """A @ B as tensor cores compute it here: float64 sums over each k-slice of k_step, added to the accumulator
    and rounded to `out` after each slice."""
    acc = np.zeros((A.shape[0], B.shape[1]), out) if C is None else C.astype(out)
    for k0 in range(0, A.shape[1], k_step):
        acc = (acc.astype(np.float64) + A[:, k0:k0 + k_step].astype(np.float64) @
               B[k0:k0 + k_step].astype(np.float64)).astype(out)
    return acc


def padded(x, rows: int, cols: int):
    out = np.zeros((rows, cols), x.dtype)
    out[:x.shape[0], :x.shape[1]] = x
    return out


def bits(x):
    """What a kernel parameter of __nv_bfloat16* takes: the bf16 array's bit patterns."""
    return x.view(np.uint16) if x.dtype == bf16 else x


def tf32(x):
    """float32 -> tf32 as cvt.rna does: to nearest, ties away from zero, the low 13 bits cleared."""
    b = (x.view(np.uint32).astype(np.uint64) + 0x1000) & 0xFFFFE000
    return b.astype(np.uint32).view(np.float32)


def test_wmma_blog_gemm_column_major_with_alpha_beta_epilogue():
    M, N, K = 48, 32, 64  # the post's rule: multiples of 16; 4 x 2 warps per block leave some warps idle
    a, b = (rng.standard_normal(s).astype(np.float16) for s in ((K, M), (N, K)))  # column-major A [M, K], B [K, N]
    c = rng.standard_normal((N, M)).astype(np.float32)
    out = c.copy()
    module("wmma_gemm.cu", WMMA).get_function("wmma_example")(
        (1, 1), (128, 4), (a, b, out, np.int32(M), np.int32(N), np.int32(K), np.float32(2.0), np.float32(0.5)))
    ref = np.float32(2.0) * sliced_product(a.T, b.T, 16) + np.float32(0.5) * c.T
    np.testing.assert_array_equal(out.T, ref)


@pytest.mark.parametrize("name", WMMA[:3])
def test_wmma_shared_memory_gemm_on_ragged_shapes(name):
    M, N, K = 37, 45, 40
    dtype = bf16 if "bfloat16" in name else np.float16
    out_dtype = np.float16 if name.endswith("half>") else np.float32
    A, B = rng.standard_normal((M, K)).astype(dtype), rng.standard_normal((K, N)).astype(dtype)
    C = np.full((M, N), np.nan, out_dtype)
    module("wmma_gemm.cu", WMMA).get_function(name)((2, 2), (128,), (bits(A), bits(B), C, np.int32(M), np.int32(N),
                                                                  np.int32(K)))
    np.testing.assert_array_equal(C, sliced_product(padded(A, M, 48), padded(B, 48, N), 16, out_dtype))


@pytest.mark.parametrize("name", WMMA[3:])
def test_wmma_m32n8k16_m8n32k16_and_double_m8n8k4_tiles(name):
    M, N, K = (int(v) for v in name[name.index("<") + 1:].split(",")[:3])
    dtype = {"half": np.float16, "__nv_bfloat16": bf16, "double": np.float64}[name.split(", ")[3]]
    A, Bt = rng.standard_normal((M, K)).astype(dtype), rng.standard_normal((N, K)).astype(dtype)
    C = rng.standard_normal((M, N)).astype(np.float64 if dtype == np.float64 else np.float32)
    out = C.copy()
    module("wmma_gemm.cu", WMMA).get_function(name)((1,), (32,), (bits(A), bits(Bt), out))
    if dtype == np.float64:  # DMMA: an fma chain in k order, within a few ulps of the float64 product
        np.testing.assert_allclose(out, A @ Bt.T + C, rtol=0, atol=4e-15)
    else:
        np.testing.assert_array_equal(out, sliced_product(A, Bt.T, K, C=C))


def test_wmma_tf32_rounds_inputs_and_int8_accumulates_exactly():
    mod = module("wmma_gemm.cu", WMMA)
    M, N, K = 32, 48, 24
    A, Bt = rng.standard_normal((M, K)).astype(np.float32), rng.standard_normal((N, K)).astype(np.float32)
    C = np.full((M, N), np.nan, np.float32)
    mod.get_function("wmma_tf32")((N // 16, M // 16), (32,), (A, Bt, C, np.int32(M), np.int32(N), np.int32(K)))
    np.testing.assert_array_equal(C, sliced_product(tf32(A), tf32(Bt).T, 8))
    A8, B8 = rng.integers(-128, 128, (M, 32)).astype(np.int8), rng.integers(-128, 128, (N, 32)).astype(np.int8)
    bias, C8 = rng.integers(-1000, 1000, (M, N)).astype(np.int32), np.zeros((M, N), np.int32)
    mod.get_function("wmma_int8")((N // 16, M // 16), (32,), (A8, B8, bias, C8, np.int32(M), np.int32(N), np.int32(32)))
    np.testing.assert_array_equal(C8, A8.astype(np.int64) @ B8.T.astype(np.int64) + bias)


@pytest.mark.parametrize("name", MMA)
def test_ldmatrix_and_mma_sync_gemm_on_ragged_shapes(name):
    M, N, K = 37, 45, 40
    dtype = bf16 if "bfloat16" in name else np.float16
    A, B = rng.standard_normal((M, K)).astype(dtype), rng.standard_normal((K, N)).astype(dtype)
    C = np.full((M, N), np.nan, np.float32)
    module("mma_ptx.cu", MMA).get_function(name)((2, 2), (128,), (bits(A), bits(B), C, np.int32(M), np.int32(N),
                                                              np.int32(K)))
    np.testing.assert_array_equal(C, sliced_product(padded(A, M, 48), padded(B, 48, N), 16))


def test_mma_shapes_follow_the_ptx_isa_fragment_tables():
    mod = module("mma_ptx.cu", MMA)
    A, Bt, C = (rng.standard_normal(s).astype(np.float32) for s in ((16, 8), (8, 8), (16, 8)))
    D = np.full((16, 8), np.nan, np.float32)
    mod.get_function("mma_tf32_m16n8k8")((1,), (32,), (A, Bt, C, D))
    np.testing.assert_array_equal(D, sliced_product(tf32(A), tf32(Bt).T, 8, C=C))
    A, Bt, C = (rng.standard_normal(s).astype(np.float16) for s in ((16, 16), (8, 16), (16, 8)))
    D = np.full((16, 8), np.nan, np.float16)
    mod.get_function("mma_f16acc_m16n8k16")((1,), (32,), (A, Bt, C, D))  # one rounding to half: no float32 in between
    np.testing.assert_array_equal(D, (A.astype(np.float64) @ Bt.T.astype(np.float64) + C).astype(np.float16))
    A8, Bt8 = rng.integers(-128, 128, (16, 32)).astype(np.int8), rng.integers(-128, 128, (8, 32)).astype(np.int8)
    near_limits = np.where(rng.random((16, 8)) < 0.5, 2**31 - 20_000, -2**31 + 20_000)  # .satfinite clamps some
    C32 = (near_limits + rng.integers(-10_000, 10_000, (16, 8))).astype(np.int32)
    D32 = np.zeros((16, 8), np.int32)
    mod.get_function("mma_s8_m16n8k32")((1,), (32,), (A8, Bt8, C32, D32))
    exact = A8.astype(np.int64) @ Bt8.T.astype(np.int64) + C32
    assert ((exact > 2**31 - 1) | (exact < -2**31)).any()
    np.testing.assert_array_equal(D32, np.clip(exact, -2**31, 2**31 - 1))
    A64, Bt64, C64 = rng.standard_normal((8, 4)), rng.standard_normal((8, 4)), rng.standard_normal((8, 8))
    D64 = np.full((8, 8), np.nan)
    mod.get_function("mma_f64_m8n8k4")((1,), (32,), (A64, Bt64, C64, D64))
    np.testing.assert_allclose(D64, A64 @ Bt64.T + C64, rtol=0, atol=4e-15)
    x = rng.standard_normal((8, 8)).astype(np.float16)
    moved, stored = np.zeros_like(x), np.zeros_like(x)
    mod.get_function("movmatrix_transpose")((1,), (32,), (x, moved, stored))
    np.testing.assert_array_equal(moved, x.T)
    np.testing.assert_array_equal(stored, x.T)


@pytest.mark.parametrize("check", [{}, {"racecheck": True}, {"initcheck": True}])
@pytest.mark.parametrize("name", PIPE[:3])
def test_mbarrier_producer_consumer_ring(name, check):
    n_tiles = 7  # over 2 blocks: 4 and 3 tiles through a ring of 2 (or 3) stages, so each wraps
    x = rng.standard_normal(n_tiles * 64).astype(np.float32)
    y, total = np.full_like(x, np.nan), np.zeros(1, np.float32)
    module("mbarrier_pipeline.cu", PIPE).get_function(name)((2,), (96,), (x, y, total, np.int32(n_tiles)), timeout=20,
                                                            **check)
    np.testing.assert_array_equal(y, 2 * x + 1)
    np.testing.assert_allclose(total, x.astype(np.float64).sum(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("check", [{}, {"racecheck": True}])
def test_mbarrier_arrive_token_and_test_wait_split_barrier(check):
    x, out = rng.standard_normal(2 * 128).astype(np.float32), np.full(2 * 128, np.nan, np.float32)
    module("mbarrier_pipeline.cu", PIPE).get_function("split_arrive_wait")((2,), (128,), (x, out), timeout=20, **check)
    blocks = x.reshape(2, 128)
    np.testing.assert_array_equal(out, (3 * blocks + np.roll(blocks, -1, axis=1)).ravel())


def test_racecheck_names_a_consumer_that_reads_a_stage_without_waiting_on_its_mbarrier():
    x, y = rng.standard_normal(4 * 64).astype(np.float32), np.zeros(4 * 64, np.float32)
    with pytest.raises(RaceError, match=r"hazard on __shared__ 'buf' .* mbarrier_pipeline\.cu:\d+, then thread "
                                        r"\(32,0,0\) reads it at mbarrier_pipeline\.cu:\d+"):
        module("mbarrier_pipeline.cu", PIPE).get_function(PIPE[3])((1,), (64,), (x, y, np.int32(4)), racecheck=True,
                                                                   timeout=20)


MISUSE = r'''#include <mma.h>
using namespace nvcuda;
// the tile is filled and loaded with no __syncthreads() in between
extern "C" __global__ void fill_then_load_unsynchronised(const half* a, float* c) {
    __shared__ __align__(32) half tile[16 * 16];
    for (int e = threadIdx.x; e < 256; e += blockDim.x) tile[e] = a[e];
    wmma::fragment<wmma::matrix_a, 16, 16, 16, half, wmma::row_major> fa;
    wmma::fragment<wmma::matrix_b, 16, 16, 16, half, wmma::col_major> fb;
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
    wmma::fill_fragment(acc, 0.0f);
    wmma::load_matrix_sync(fa, tile, 16);
    wmma::load_matrix_sync(fb, tile, 16);
    wmma::mma_sync(acc, fa, fb, acc);
    wmma::store_matrix_sync(c, acc, 16, wmma::mem_row_major);
}
extern "C" __global__ void load(const half* a, int ldm, int lanes) {
    wmma::fragment<wmma::matrix_a, 16, 16, 16, half, wmma::row_major> fa;
    if (threadIdx.x < lanes) wmma::load_matrix_sync(fa, a, ldm);
}'''


def test_wmma_misuse_is_named():
    mod = RawModule(code=MISUSE).compile()
    a, c = rng.standard_normal(512).astype(np.float16), np.zeros(256, np.float32)
    with pytest.raises(RaceError, match=r"(read-after-write|write-after-read) hazard on __shared__ 'tile'"):
        mod.get_function("fill_then_load_unsynchronised")((1,), (64,), (a, c), racecheck=True)
    with pytest.raises(BarrierError, match=r"lanes 0-15|exited|returned|different"):
        mod.get_function("load")((1,), (32,), (a, np.int32(16), np.int32(16)))  # half the warp
    with pytest.raises(KernelFault, match=r"ldm must be a multiple of 16 bytes"):
        mod.get_function("load")((1,), (32,), (a, np.int32(12), np.int32(32)))
    with pytest.raises(KernelFault, match=r"256-bit aligned"):
        mod.get_function("load")((1,), (32,), (a[1:], np.int32(16), np.int32(32)))
    with pytest.raises(KernelFault, match=r"needs a full warp of 32 threads, and warp 1 of this block has 16"):
        mod.get_function("load")((1,), (48,), (a, np.int32(16), np.int32(48)))


@pytest.mark.parametrize("code, match", [
    ('asm volatile("wgmma.fence.sync.aligned;");', r"'wgmma\.fence\.sync\.aligned' is not modelled .*mma\.sync \(f16"),
    ('asm volatile("mma.sp.sync.aligned.m16n8k32.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9,%10,%11},'
     ' {%0,%1,%2,%3}, %12, 0x0;" : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]) : "r"(a[0]), "r"(a[1]), "r"(a[2]),'
     ' "r"(a[3]), "r"(a[4]), "r"(a[5]), "r"(a[6]), "r"(a[7]), "r"(a[8]));', r"sparse mma\.sp"),
    ('asm volatile("cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3}], '
     '[%4];" :: "r"(a[0]), "l"(d), "r"(a[1]), "r"(a[2]), "r"(a[3]));', r"cp\.async\.bulk\.tensor.*TMA tensor copies"),
    ('asm volatile("ldmatrix.sync.aligned.m16n16.x1.trans.shared.b8 {%0, %1}, [%2];" : "=r"(a[0]), "=r"(a[1]) : '
     '"r"(a[2]));', r"the m16n16 / \.b8 forms of sm_100 are not"),
    ('nvcuda::wmma::fragment<nvcuda::wmma::matrix_a, 8, 8, 32, nvcuda::wmma::experimental::precision::s4, '
     'nvcuda::wmma::row_major> f;', r"s4 / u4 / b1 \(sub-byte"),
])
def test_what_is_not_modelled_is_refused_by_name(code, match):
    src = f'#include <mma.h>\nextern "C" __global__ void k(float* d, unsigned* a) {{\n    {code}\n}}'
    with pytest.raises(CompileError, match=match):
        RawModule(code=src).compile()
