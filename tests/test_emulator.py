"""Tests of the CUDA emulator (minilora/emulator.py, kernels/emu/).

The teaching kernels in tests/emu_kernels/ are run on the CPU and matched to NumPy on ragged sizes;
the kernels in tests/emu_kernels/buggy.cu each carry one classic bug that one of the emulator's
checks must catch; and every .cu file is compiled by nvcc for sm_90 when nvcc is installed, to
prove the emulator runs real CUDA and not a dialect of its own.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from minilora import emulator as emu
from minilora.emulator import BarrierError, CompileError, KernelFault, RaceError, RawKernel, RawModule

KDIR = Path(__file__).parent / "emu_kernels"
pytestmark = pytest.mark.skipif(not emu.is_available(), reason="the CUDA emulator needs g++")
rng = np.random.default_rng(0)


@lru_cache(maxsize=None)
def module(filename: str, sanitize: bool = False) -> RawModule:
    return RawModule(path=KDIR / filename, sanitize=sanitize)


# module()'s builds, compiled on the session's helper core meanwhile (tests/background_runs.py)
EMULATOR_BUILDS = [(dict(path=KDIR / filename, sanitize=sanitize), {}) for filename, sanitize in (
    ("buggy.cu", False), ("buggy.cu", True), ("dynamic_smem.cu", False), ("half_convert.cu", False),
    ("histogram.cu", False), ("matmul_tiled.cu", False), ("matmul_tiled.cu", True), ("reduce_shared.cu", False),
    ("vector_add.cu", False), ("warp_reduce.cu", False))]


def kernel(filename: str, name: str, sanitize: bool = False) -> RawKernel:
    return module(filename, sanitize).get_function(name)


def line_of(filename: str, needle: str, after: str | None = None) -> int:
    """1-based line of the first `needle` in a kernel file (after the line containing `after`)."""
    lines = (KDIR / filename).read_text().splitlines()
    start = next(i for i, ln in enumerate(lines) if after in ln) if after else 0
    return next(i for i in range(start, len(lines)) if needle in lines[i]) + 1


def i32(x):
    return np.int32(x)


def cdiv(a, b):
    return (a + b - 1) // b


# ------------------------------------------------------------------------------------------------
# Teaching kernels, matched to NumPy on ragged sizes
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n", [1, 255, 1000, 4099])
def test_vector_add(n):
    a, b = rng.standard_normal(n, dtype=np.float32), rng.standard_normal(n, dtype=np.float32)
    c = np.full(n, np.nan, np.float32)  # poisoned, so unwritten elements show
    kernel("vector_add.cu", "vector_add")((cdiv(n, 256),), (256,), (a, b, c, i32(n)))
    np.testing.assert_array_equal(c, a + b)


@pytest.mark.parametrize("n", [3, 64, 1001])
def test_vector_add_float4(n):
    a, b = rng.standard_normal(n, dtype=np.float32), rng.standard_normal(n, dtype=np.float32)
    c = np.full(n, np.nan, np.float32)
    assert a.ctypes.data % 16 == 0 and c.ctypes.data % 16 == 0  # float4 loads need 16-byte alignment
    kernel("vector_add.cu", "vector_add_float4")((max(1, cdiv(n // 4, 64)),), (64,), (a, b, c, i32(n)))
    np.testing.assert_array_equal(c, a + b)


@pytest.mark.parametrize("n", [1, 511, 512, 5000])
def test_shared_memory_tree_reduction(n):
    x = rng.standard_normal(n).astype(np.float32)
    blocks = cdiv(n, 512)
    sums = np.full(blocks, np.nan, np.float32)
    kernel("reduce_shared.cu", "reduce_sum")((blocks,), (256,), (x, sums, i32(n)), check_races=True)
    np.testing.assert_allclose(sums.astype(np.float64).sum(), x.astype(np.float64).sum(), rtol=1e-5, atol=1e-4)
    ref = [x[i * 512:(i + 1) * 512].astype(np.float64).sum() for i in range(blocks)]
    np.testing.assert_allclose(sums, ref, rtol=1e-5, atol=1e-5)


@settings(max_examples=12, deadline=None)
@given(n=st.integers(1, 3000), block=st.sampled_from([32, 64, 96, 256]))
def test_syncthreads_count_property(n, block):
    x = rng.standard_normal(n).astype(np.float32)
    blocks = cdiv(n, block)
    counts = np.full(blocks, -1, np.int32)
    kernel("reduce_shared.cu", "count_positive")((blocks,), (block,), (x, counts, i32(n)))
    padded = np.concatenate([x, np.zeros(blocks * block - n, np.float32)]).reshape(blocks, block)
    np.testing.assert_array_equal(counts, (padded > 0).sum(axis=1))


@pytest.mark.parametrize("n", [1, 100, 257])
def test_warp_shuffle_reductions(n):
    x = rng.standard_normal(n).astype(np.float32)
    warps = cdiv(n, 32)
    padded = np.concatenate([x, np.zeros(warps * 32 - n, np.float32)]).reshape(warps, 32)
    blocks = cdiv(n, 128)
    sums = np.full(blocks * 4, np.nan, np.float32)
    kernel("warp_reduce.cu", "warp_sum_kernel")((blocks,), (128,), (x, sums, i32(n)))
    np.testing.assert_allclose(sums[:warps], padded.astype(np.float64).sum(axis=1), rtol=1e-5, atol=1e-5)

    maxes = np.full(blocks * 4, np.nan, np.float32)
    kernel("warp_reduce.cu", "warp_max_kernel")((blocks,), (128,), (x, maxes, i32(n)))
    ref = np.where(np.arange(warps * 32).reshape(warps, 32) < n, padded, -np.inf).max(axis=1)
    np.testing.assert_array_equal(maxes[:warps], ref)

    bits = np.zeros(blocks * 4, np.uint32)
    kernel("warp_reduce.cu", "warp_ballot_kernel")((blocks,), (128,), (x, bits, i32(n)))
    ref_bits = ((padded > 0) * (1 << np.arange(32, dtype=np.uint64))).sum(axis=1).astype(np.uint32)
    np.testing.assert_array_equal(bits[:warps], ref_bits)


@pytest.mark.parametrize("n", [5, 64, 200])
def test_warp_shuffle_up_scan(n):
    x = rng.integers(-50, 50, n).astype(np.int32)
    out = np.zeros(n, np.int32)
    kernel("warp_reduce.cu", "warp_scan_kernel")((cdiv(n, 64),), (64,), (x, out, i32(n)))
    ref = np.concatenate([np.cumsum(x[i:i + 32]) for i in range(0, n, 32)])
    np.testing.assert_array_equal(out, ref)


@pytest.mark.parametrize("src,width", [(0, 32), (5, 32), (3, 8), (33, 16)])
def test_warp_shuffle_broadcast_with_width(src, width):
    n = 70
    x = rng.standard_normal(n)  # doubles: shuffles move 8-byte values too
    y = np.full(n, np.nan)
    kernel("warp_reduce.cu", "warp_broadcast_kernel")((1,), (96,), (x, y, i32(src), i32(width), i32(n)))
    lane_src = (np.arange(n) // width) * width + src % width
    padded = np.concatenate([x, np.zeros(96 - n)])
    np.testing.assert_array_equal(y, padded[lane_src])


@pytest.mark.parametrize("M,N,K", [(37, 45, 29), (16, 16, 16), (1, 70, 3), (64, 17, 100)])
def test_tiled_matmul(M, N, K):
    A = rng.standard_normal((M, K)).astype(np.float32)
    B = rng.standard_normal((K, N)).astype(np.float32)
    ref = A.astype(np.float64) @ B.astype(np.float64)
    grid = (cdiv(N, 16), cdiv(M, 16))
    for name in ("matmul_naive", "matmul_tiled"):
        C = np.full((M, N), np.nan, np.float32)
        kernel("matmul_tiled.cu", name)(grid, (16, 16), (A, B, C, i32(M), i32(N), i32(K)),
                                        check_races=(name == "matmul_tiled"))
        np.testing.assert_allclose(C, ref, rtol=1e-4, atol=1e-4, err_msg=name)


@pytest.mark.parametrize("n", [1, 999, 10000])
def test_atomics_histogram(n):
    values = rng.integers(0, 64, n).astype(np.int32)
    counts = np.zeros(64, np.int32)
    kernel("histogram.cu", "histogram")((7,), (128,), (values, counts, i32(n)), check_races=True)
    np.testing.assert_array_equal(counts, np.bincount(values, minlength=64))


def test_atomics_max_and_cas():
    v = rng.integers(-1000, 1000, 777).astype(np.int32)
    result = np.array([np.iinfo(np.int32).min], np.int32)
    kernel("histogram.cu", "max_int")((cdiv(777, 128),), (128,), (v, result, i32(777)))
    assert result[0] == v.max()
    f = rng.standard_normal(777).astype(np.float32)
    fmax = np.array([-np.inf], np.float32)
    kernel("histogram.cu", "max_float")((cdiv(777, 128),), (128,), (f, fmax, i32(777)))
    assert fmax[0] == f.max()
    # Integer-valued floats add exactly in any order, so even the race check must agree.
    ints = rng.integers(-100, 100, 500).astype(np.float32)
    total = np.zeros(1, np.float32)
    kernel("histogram.cu", "add_float")((4,), (128,), (ints, total, i32(500)), check_races=True)
    assert total[0] == ints.sum()


@pytest.mark.parametrize("rows,cols,block", [(3, 100, 64), (5, 7, 32), (2, 1000, 128)])
def test_dynamic_shared_memory_softmax(rows, cols, block):
    x = rng.standard_normal((rows, cols)).astype(np.float32)
    y = np.full_like(x, np.nan)
    kernel("dynamic_smem.cu", "softmax_rows")((rows,), (block,), (x, y, i32(rows), i32(cols)), shared_mem=4 * block)
    e = np.exp(x.astype(np.float64) - x.max(axis=1, keepdims=True))
    np.testing.assert_allclose(y, e / e.sum(axis=1, keepdims=True), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("n,block", [(10, 32), (100, 32), (129, 64)])
def test_dynamic_shared_memory_file_scope(n, block):
    x = np.arange(n, dtype=np.int32)
    y = np.full(n, -7, np.int32)
    kernel("dynamic_smem.cu", "reverse_blocks")((cdiv(n, block),), (block,), (x, y, i32(n)), shared_mem=4 * block)
    ref = np.concatenate([x[i:i + block][::-1] for i in range(0, n, block)])
    np.testing.assert_array_equal(y, ref)


def _half_test_values() -> np.ndarray:
    h = np.arange(0, 0x7C00, dtype=np.uint16).view(np.float16).astype(np.float32)  # every finite half >= 0
    mids = (h[:-1].astype(np.float64) + h[1:]) / 2  # exact ties: round half to even
    specials = [0.0, -0.0, np.inf, -np.inf, np.nan, 65504.0, 65519.99, 65520.0, 1e9, 2.0**-24, 2.0**-25,
                2.0**-25 * 1.0001, 2.0**-26, 5.9e-8, 6.0e-8, 1e-45, -1e-45, 2.0**-14, 2.0**-14 * (1 - 2.0**-11)]
    noise = rng.standard_normal(3000) * 10.0 ** rng.integers(-9, 6, 3000)
    vals = np.concatenate([h, mids, np.nextafter(mids, 0), np.nextafter(mids, np.inf), specials, noise])
    vals = vals.astype(np.float32)
    return np.concatenate([vals, -vals])


def test_half_conversion_matches_numpy():
    x = _half_test_values()
    n = x.size
    h = np.zeros(n, np.float16)
    back = np.zeros(n, np.float32)
    kernel("half_convert.cu", "to_half")((cdiv(n, 256),), (256,), (x, h, back, i32(n)))
    with np.errstate(over="ignore"):
        ref = x.astype(np.float16)
    nan = np.isnan(ref)
    np.testing.assert_array_equal(np.isnan(h), nan)
    np.testing.assert_array_equal(h[~nan].view(np.uint16), ref[~nan].view(np.uint16))
    np.testing.assert_array_equal(back[~nan], ref[~nan].astype(np.float32))


def _bf16_reference(x: np.ndarray) -> np.ndarray:
    """Round float32 -> bfloat16 to nearest, ties to even, by comparing the two neighbours in float64.

    Past the largest finite bfloat16 the upper neighbour is infinity, which IEEE rounding treats as
    the value 2**128 (the next power of two) when measuring distances."""
    bits = x.view(np.uint32)
    lo = bits >> 16                                   # truncation toward zero
    hi = lo + 1

    def value(b):
        v = (b.astype(np.uint32) << 16).view(np.float32).astype(np.float64)
        return np.where(np.isinf(v), np.copysign(2.0**128, v), v)

    with np.errstate(invalid="ignore"):
        xd = x.astype(np.float64)
        d_lo, d_hi = np.abs(xd - value(lo)), np.abs(value(hi) - xd)
        pick_hi = (d_hi < d_lo) | ((d_hi == d_lo) & (lo % 2 == 1))
    out = np.where(pick_hi, hi, lo).astype(np.uint16)
    out[np.isinf(x)] = (bits[np.isinf(x)] >> 16).astype(np.uint16)
    return out


def test_bfloat16_conversion_round_to_nearest_even():
    x = _half_test_values()
    x = np.concatenate([x, np.array([3.4e38, -3.4e38, 1.0 + 2.0**-8, 1.0 + 3 * 2.0**-8, 1e-40], np.float32)])
    n = x.size
    bits = np.zeros(n, np.uint16)
    back = np.zeros(n, np.float32)
    kernel("half_convert.cu", "to_bf16")((cdiv(n, 256),), (256,), (x, bits, back, i32(n)))
    nan = np.isnan(x)
    ref = _bf16_reference(x)
    np.testing.assert_array_equal(bits[~nan], ref[~nan])
    assert np.isnan(back[nan]).all()
    np.testing.assert_array_equal(back[~nan], (ref[~nan].astype(np.uint32) << 16).view(np.float32))


def test_half_arithmetic_kernel():
    n = 333
    x = rng.standard_normal(n).astype(np.float16)
    y = rng.standard_normal(n).astype(np.float16)
    ref = (np.float32(1.5) * x.astype(np.float32) + y.astype(np.float32)).astype(np.float16)
    # np.float32 for `float a`: CuPy passes a Python float as a float64, whose low half a GPU would read (round 18)
    kernel("half_convert.cu", "half_axpy")((cdiv(n, 128),), (128,), (x, y, np.float32(1.5), i32(n)))
    np.testing.assert_array_equal(y.view(np.uint16), ref.view(np.uint16))


FEATURES = r"""
#include <cuda_runtime.h>
static_assert(alignof(float2) == 8 && alignof(int4) == 16 && sizeof(float3) == 12, "vector types");
__shared__ float file_scope[8];                       // file-scope static shared memory

template <typename T, int N>
__device__ __forceinline__ T sum_n(const T* v) {
    T s = T(0);
#pragma unroll
    for (int i = 0; i < N; ++i) s += v[i];
    return s;
}

extern "C" __global__ void __launch_bounds__(64, 2)
features(const float* __restrict__ x, float* __restrict__ out, int* ids) {
    __shared__ float a[4], b[4];                      // two declarators in one declaration
    static __shared__ int counter;                    // a shared scalar
    volatile __shared__ float v[64];
    const int t = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
    const int blk = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
    if (t == 0) counter = 0;
    if (t < 4) { a[t] = x[t]; b[t] = 2.0f * x[t]; }
    if (t < 8) file_scope[t] = (float)t;
    v[t] = 1.0f;
    __syncthreads();
    atomicAdd(&counter, 1);
    __syncthreads();
    ids[blk * 64 + t] = blk * 1000 + t;
    if (t == 0) {
        float r = sum_n<float, 4>(a) + sum_n<float, 4>(b) + sum_n<float, 8>(file_scope);
        r += rsqrtf(4.0f) + __expf(0.0f) + fmaxf(-1.0f, 2.0f) + __fdividef(1.0f, 4.0f) + fmaf(2.0f, 3.0f, 1.0f);
        r += (float)min(3, 4u) + max(2.5f, 1.0f) + (float)counter + v[63] + (float)__popc(0xF0u);
        out[blk] = r;
    }
}
"""


def test_language_features_and_indices():
    x = np.array([1, 2, 3, 4], np.float32)
    grid, block = (2, 3, 2), (4, 4, 4)
    out = np.zeros(12, np.float32)
    ids = np.zeros(12 * 64, np.int32)
    RawKernel(FEATURES, "features")(grid, block, (x, out, ids))
    np.testing.assert_array_equal(ids, (np.arange(12)[:, None] * 1000 + np.arange(64)).ravel())
    expected = 10 + 20 + 28 + 0.5 + 1 + 2 + 0.25 + 7 + 3 + 2.5 + 64 + 1 + 4
    np.testing.assert_allclose(out, expected, rtol=1e-6)


def test_printf_is_captured(capsys):
    k = RawKernel(r'''
    extern "C" __global__ void hello(int n) {
        if (threadIdx.x < 2) printf("block %d thread %d of %d\n", blockIdx.x, threadIdx.x, n);
    }''', "hello")
    k((2,), (32,), (np.int32(7),))
    out = capsys.readouterr().out.splitlines()
    assert sorted(out) == sorted(f"block {b} thread {t} of 7" for b in range(2) for t in range(2))


PER_BLOCK = r"""
extern "C" __global__ void per_block(const float* x, float* partial, int* ids, int n) {
    __shared__ float s[128];
    const int t = threadIdx.x + blockDim.x * threadIdx.y;
    const int blk = blockIdx.x + gridDim.x * blockIdx.y;
    const int i = blk * 128 + t;
    s[t] = i < n ? x[i] : 0.0f;
    __syncthreads();
    for (int stride = 64; stride > 0; stride >>= 1) {
        if (t < stride) s[t] += s[t + stride];
        __syncthreads();
    }
    ids[i] = blk * 1000 + t;
    if (t == 0) partial[blk] = s[0];
    if (t == 0 && blk % 50 == 7) printf("block %d sums to %.3f\n", blk, s[0]);
}
"""


@pytest.mark.parametrize("workers", [2, 3, 8])
def test_blocks_on_several_os_threads_give_one_threads_results(workers, capfd, monkeypatch):
    """Blocks run on several OS threads at once (each block's CUDA threads as fibers of one of them):
    the results are bit for bit those of one OS thread, threadIdx/blockIdx are right on every thread
    (also with a stack_size= that changes the stack layout), and printf comes out in block order."""
    monkeypatch.setattr(emu, "_START_WORKERS_AT_ONCE", True)  # (else a launch this short keeps to one)
    k = RawKernel(PER_BLOCK, "per_block")
    n = 400 * 128 - 37
    x = rng.standard_normal(n).astype(np.float32)
    outputs = []
    for w, stack in [(1, None), (workers, None), (workers, 1 << 20)]:
        partial, ids = np.full(400, np.nan, np.float32), np.full(400 * 128, -1, np.int32)
        k((20, 20), (32, 4), (x, partial, ids, i32(n)), workers=w, stack_size=stack)
        outputs.append((partial, ids, capfd.readouterr().out))
    for partial, ids, out in outputs:
        np.testing.assert_array_equal(partial, outputs[0][0])
        np.testing.assert_array_equal(ids, (np.arange(400)[:, None] * 1000 + np.arange(128)).ravel())
        assert out == outputs[0][2]
    np.testing.assert_allclose(outputs[0][0], np.r_[x, np.zeros(37, np.float32)].reshape(400, 128).sum(1),
                               rtol=1e-4, atol=1e-4)
    assert outputs[0][2].splitlines()[:2] == [f"block 7 sums to {outputs[0][0][7]:.3f}",
                                             f"block 57 sums to {outputs[0][0][57]:.3f}"]


def test_the_first_failing_block_is_reported_whatever_the_workers(monkeypatch):
    """Several blocks fail; with several OS threads the error is still that of the first failing block
    in block order -- the one a single thread reports -- and no later block is started after it."""
    monkeypatch.setattr(emu, "_START_WORKERS_AT_ONCE", True)
    k = RawKernel(r'''
    #include <assert.h>
    extern "C" __global__ void picky(int* seen) {
        assert(blockIdx.x % 10 != 3);
        seen[blockIdx.x] = 1;
    }''', "picky")
    for workers in (1, 4):
        seen = np.zeros(200, np.int32)
        with pytest.raises(KernelFault, match=r"assertion `blockIdx.x % 10 != 3` failed .* in block \(3,0,0\) "):
            k((200,), (64,), (seen,), workers=workers)
        assert seen[:3].all() and not seen[3] and seen.sum() < 200


def test_other_workers_start_only_for_a_launch_worth_it():
    """A short launch stays on the calling thread (starting threads would cost more than it saves);
    a long one spreads its blocks (seen through the OS thread id each block records)."""
    k = RawKernel(r'''
    #include <sys/syscall.h>
    #include <unistd.h>
    extern "C" __global__ void who(long* tid, int spin) {
        volatile float x = 0.0f;
        for (int i = 0; i < spin; ++i) x = x + 1.0f;
        __syncthreads();
        if (threadIdx.x == 0) tid[blockIdx.x] = syscall(SYS_gettid);
    }''', "who")
    tids = np.zeros(64, np.int64)
    # The launch's length is judged from its first blocks' time: on a busy machine one of those can
    # be preempted and look long, so the short launch has three tries to stay on one thread.
    for _ in range(3):
        k((64,), (32,), (tids, i32(0)), workers=2)
        if len(set(tids)) == 1:
            break
    assert len(set(tids)) == 1
    # About 64 x 32 x 20000 additions: tens of milliseconds. On a busy machine the second OS thread may
    # get no CPU before the caller has run every block, so a longer launch gets a second chance.
    for spin in (20000, 400000):
        k((64,), (32,), (tids, i32(spin)), workers=2)
        if len(set(tids)) == 2:
            break
    assert len(set(tids)) == 2


def test_workers_are_checked(monkeypatch):
    k = RawKernel(PER_BLOCK, "per_block")
    args = (np.zeros(128, np.float32), np.zeros(1, np.float32), np.zeros(128, np.int32), i32(128))
    for bad in (0, 65, 2.0, True):
        with pytest.raises(ValueError, match="workers must be an int number of OS threads in 1..64"):
            k((1,), (128,), args, workers=bad)
    monkeypatch.setenv("MINILORA_EMU_WORKERS", "many")
    with pytest.raises(ValueError, match="MINILORA_EMU_WORKERS must be an int .* got 'many'"):
        k((1,), (128,), args)
    monkeypatch.setenv("MINILORA_EMU_WORKERS", "3")
    assert emu.default_workers() == 3
    monkeypatch.delenv("MINILORA_EMU_WORKERS")
    assert 1 <= emu.default_workers() <= 64


def test_ucontext_fallback_gives_same_results():
    """The portable fiber switch (used off x86-64) runs the tiled matmul identically."""
    src = (KDIR / "matmul_tiled.cu").read_text()
    k = RawKernel(src, "matmul_tiled", _variant="ucontext")
    A = rng.standard_normal((20, 33)).astype(np.float32)
    B = rng.standard_normal((33, 18)).astype(np.float32)
    C = np.zeros((20, 18), np.float32)
    k((2, 2), (16, 16), (A, B, C, i32(20), i32(18), i32(33)))
    C2 = np.zeros_like(C)
    kernel("matmul_tiled.cu", "matmul_tiled")((2, 2), (16, 16), (A, B, C2, i32(20), i32(18), i32(33)))
    np.testing.assert_array_equal(C, C2)


SCHEDULE_LOG = r"""
extern "C" __global__ void schedule_log(int* counter, int* log, int* counts) {
    const int t = threadIdx.x, tag = blockIdx.x * 10000 + t * 10;
    log[atomicAdd(counter, 1)] = tag + 0;
    __syncthreads();
    int v = __shfl_down_sync(0xffffffffu, t, 1);          // the warp's last lane wakes the others
    log[atomicAdd(counter, 1)] = tag + 1;
    if (t % 2 == 0) v += __shfl_xor_sync(0x55555555u, t, 2);  // even lanes only
    log[atomicAdd(counter, 1)] = tag + 2;
    const int c = __syncthreads_count(t % 3 == 0);
    log[atomicAdd(counter, 1)] = tag + 3;
    if (t == 0) counts[blockIdx.x] = c;
    if (t < 40) return;                                     // some threads leave early
    log[atomicAdd(counter, 1)] = tag + 4 + 0 * v;          // (v only keeps the shuffles' results used)
}
"""


def test_fibers_passing_the_turn_run_in_the_schedulers_order():
    """Fibers hand the turn straight to the next runnable fiber of the scheduler's pass (one switch
    instead of two); the order threads run in must stay exactly that of the portable build, which
    always goes back to the scheduler -- across barriers, warp collectives that wake lanes earlier
    in the pass, partial masks, __syncthreads_count and early exits."""
    logs = []
    for variant in ("ucontext", "fast"):
        k = RawKernel(SCHEDULE_LOG, "schedule_log", _variant=variant)
        counter = np.zeros(1, np.int32)
        log = np.full(3 * 64 * 5, -1, np.int32)
        counts = np.zeros(3, np.int32)
        k((3,), (64,), (counter, log, counts), workers=1)  # one OS thread: the blocks' entries do not interleave
        assert counter[0] == 3 * (64 * 4 + 24)
        np.testing.assert_array_equal(counts, [22, 22, 22])
        logs.append(log)
    np.testing.assert_array_equal(logs[0], logs[1])
    # And it is the documented order: each phase in thread order within a block (forward order).
    first_block = logs[1][:64 * 4 + 24]
    np.testing.assert_array_equal(first_block[:64], np.arange(64) * 10)


# ------------------------------------------------------------------------------------------------
# Each check catching a real bug (tests/emu_kernels/buggy.cu)
# ------------------------------------------------------------------------------------------------
def test_barrier_at_different_sites_is_reported_with_lines():
    x = np.ones(32, np.float32)
    with pytest.raises(BarrierError) as e:
        kernel("buggy.cu", "sync_if_else")((1,), (32,), (x,))
    first = line_of("buggy.cu", "__syncthreads();", after="void sync_if_else")
    second = line_of("buggy.cu", "__syncthreads();", after="x[t] += 1.0f;")
    msg = str(e.value)
    assert f"16 threads (e.g. thread (0,0,0)) at buggy.cu:{first}" in msg
    assert f"16 threads (e.g. thread (16,0,0)) at buggy.cu:{second}" in msg


def test_barrier_inside_condition_is_reported():
    inner = line_of("buggy.cu", "__syncthreads();", after="if (t < stride)")
    outer = line_of("buggy.cu", "__syncthreads();", after="the threads that skipped")
    with pytest.raises(BarrierError, match=rf"different barriers: 32 threads .* at buggy.cu:{inner}, 32 threads .* "
                                           rf"at buggy.cu:{outer}"):
        kernel("buggy.cu", "reduce_divergent_sync")((1,), (64,), (np.ones(64, np.float32),))


def test_return_before_barrier_runs_as_since_volta():
    # the barrier waits for the threads that have not exited (CUDA Programming Guide, compute capability 7.x)
    x, out = np.ones(128, np.float32), np.zeros(1, np.float32)
    kernel("buggy.cu", "reduce_early_return")((1,), (128,), (x, out, i32(100)))
    assert out[0] == 100
    kernel("buggy.cu", "reduce_early_return")((1,), (128,), (x, out, i32(128)))
    assert out[0] == 128


def test_divergent_warp_shuffle_is_reported():
    line = line_of("buggy.cu", "__shfl_down_sync", after="void shfl_divergent")
    with pytest.raises(BarrierError, match=rf"warp collective at buggy.cu:{line}.*lanes 16-31 have exited"):
        kernel("buggy.cu", "shfl_divergent")((1,), (32,), (np.ones(32, np.float32),))


def test_race_check_catches_tiled_matmul_without_second_barrier():
    M, N, K = 37, 45, 29
    A = rng.standard_normal((M, K)).astype(np.float32)
    B = rng.standard_normal((K, N)).astype(np.float32)
    A0, B0 = A.copy(), B.copy()
    C = np.zeros((M, N), np.float32)
    args = (A, B, C, i32(M), i32(N), i32(K))
    with pytest.raises(RaceError, match=r"argument 2 \('C'\) differs between the forward and reverse"):
        kernel("buggy.cu", "matmul_missing_sync")((3, 3), (16, 16), args, check_races=True)
    np.testing.assert_array_equal(A, A0)  # inputs restored between the runs
    np.testing.assert_array_equal(B, B0)
    # Without the check the kernel silently computes a wrong product.
    kernel("buggy.cu", "matmul_missing_sync")((3, 3), (16, 16), args)
    assert not np.allclose(C, A @ B, rtol=1e-4, atol=1e-4)


def test_shared_memory_is_poisoned_with_nan():
    out = np.zeros(32, np.float32)
    kernel("buggy.cu", "read_before_write")((1,), (32,), (out,))
    assert np.isnan(out[0])  # thread 0 read s[31] before anyone wrote it
    with pytest.raises(RaceError, match="'out'"):  # and the result depends on the schedule
        kernel("buggy.cu", "read_before_write")((1,), (32,), (out,), check_races=True)


def test_shared_write_past_end_is_caught_without_sanitizer():
    """The array ends at a guard page: the stray write faults at once, naming thread, line and array."""
    x, y = np.ones(32, np.float32), np.zeros(32, np.float32)
    line = line_of("buggy.cu", "__shared__ float tile[32];")
    write = line_of("buggy.cu", "tile[t + 1] = x[t]")
    with pytest.raises(KernelFault, match=rf"thread \(31,0,0\) of block \(0,0,0\) of kernel 'oob_shared_write' crashed "
                                          rf"at buggy.cu:{write}: out-of-bounds __shared__ access: a write at byte 128 of "
                                          rf"__shared__ 'tile' \(128 bytes, declared at buggy.cu:{line}\), just past the end"):
        kernel("buggy.cu", "oob_shared_write")((1,), (32,), (x, y))


def test_device_assert_raises_kernel_fault():
    with pytest.raises(KernelFault, match=r"assertion `x\[i\] >= 0` failed at buggy.cu:\d+ .* thread \(2,0,0\)"):
        kernel("buggy.cu", "failing_assert")((1,), (4,), (np.array([1, 2, -3, 4], np.int32), i32(4)))


@pytest.mark.parametrize("name,needle,target", [
    ("oob_global_read", "y[i] = x[i + 1]", "argument 0 ('x'"),
    ("oob_global_write", "y[i] = 2.0f", "argument 1 ('y'"),
])
def test_sanitizer_catches_global_out_of_bounds(name, needle, target):
    line = line_of("buggy.cu", needle)
    x, y = np.ones(100, np.float32), np.zeros(100, np.float32)
    with pytest.raises(KernelFault) as e:
        kernel("buggy.cu", name, sanitize=True)((1,), (128,), (x, y, i32(100)))
    msg = str(e.value)
    assert f"buggy.cu:{line}" in msg and "heap-buffer-overflow" in msg and target in msg


def test_sanitizer_catches_shared_out_of_bounds():
    line = line_of("buggy.cu", "tile[t + 1] = x[t]")
    with pytest.raises(KernelFault, match=rf"index 32 out of bounds for type 'float \[32\]' at buggy.cu:{line}"):
        kernel("buggy.cu", "oob_shared_write", sanitize=True)((1,), (32,), (np.ones(32, np.float32), np.zeros(32, np.float32)))
    line = line_of("buggy.cu", "y[t] = buf[t + 1]")
    with pytest.raises(KernelFault, match=rf"buggy.cu:{line}.*past the end of this block's shared memory"):
        kernel("buggy.cu", "oob_dynamic_shared_read", sanitize=True)((1,), (32,), (np.zeros(32, np.float32),), shared_mem=128)


def test_sanitized_launch_of_a_correct_kernel_returns_results():
    M, N, K = 20, 19, 35
    A = rng.standard_normal((M, K)).astype(np.float32)
    B = rng.standard_normal((K, N)).astype(np.float32)
    C = np.full((M, N), np.nan, np.float32)
    kernel("matmul_tiled.cu", "matmul_tiled", sanitize=True)((2, 2), (16, 16), (A, B, C, i32(M), i32(N), i32(K)))
    np.testing.assert_allclose(C, A.astype(np.float64) @ B, rtol=1e-4, atol=1e-4)
    # The same array passed twice stays one buffer in the child process.
    S = rng.standard_normal((20, 20)).astype(np.float32)
    C = np.zeros((20, 20), np.float32)
    kernel("matmul_tiled.cu", "matmul_tiled", sanitize=True)((2, 2), (16, 16), (S, S, C, i32(20), i32(20), i32(20)))
    np.testing.assert_allclose(C, S.astype(np.float64) @ S, rtol=1e-4, atol=1e-4)
    # Errors found by the emulator itself come back from the child process too.
    with pytest.raises(BarrierError, match="different barriers"):
        kernel("buggy.cu", "sync_if_else", sanitize=True)((1,), (32,), (np.ones(32, np.float32),))


# ------------------------------------------------------------------------------------------------
# Clear Python errors for wrong launches
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def vadd():
    return kernel("vector_add.cu", "vector_add")


def _vec(n=8, dtype=np.float32):
    return np.zeros(n, dtype)


def _readonly(n=8):
    a = np.zeros(n, np.float32)
    a.flags.writeable = False
    return a


@pytest.mark.parametrize("args,error,pattern", [
    ((_vec(), _vec(), _vec()), TypeError, r"takes 4 arguments \(const float\* a, const float\* b, float\* c, int n\), got 3"),
    ((_vec(), 1.0, _vec(), np.int32(8)), TypeError, r"argument 1 \('b'\).*pointer.*pass a NumPy array"),
    ((_vec(), _vec(), _vec(), _vec(1, np.int32)), TypeError, r"argument 3 \('n'\).*got an array"),
    ((_vec(), _vec(dtype=np.float64), _vec(), np.int32(8)), TypeError, r"'b'.*const float\* but the array has dtype float64"),
    ((_vec(), _vec(), _vec(), np.int64(8)), TypeError, r"'n'.*int \(np.int32\) but got np.int64"),
    ((_vec(), _vec(), _vec(), 8.0), TypeError, r"'n'.*int but got float"),
    ((_vec(), _vec(), _vec(), 2**40), OverflowError, r"does not fit in int"),
    ((_vec(16)[::2], _vec(), _vec(), np.int32(8)), ValueError, r"'a'.*not C-contiguous"),
    ((_vec(), _vec(), _readonly(), np.int32(8)), ValueError, r"argument 2 \('c'\) of kernel 'vector_add' is a read-only array"),
])
def test_bad_arguments_raise_clear_errors(vadd, args, error, pattern):
    with pytest.raises(error, match=pattern):
        vadd((1,), (8,), args)


def test_python_int_scalar_and_read_only_const_input_are_accepted(vadd):
    a = np.arange(8, dtype=np.float32)
    a.flags.writeable = False  # fine: the parameter is const float*
    c = _vec()
    vadd((1,), (8,), (a, a, c, 8))
    np.testing.assert_array_equal(c, 2 * a)


@pytest.mark.parametrize("grid,block,shared,error,pattern", [
    ((1,), (1025,), 0, ValueError, "at most 1024 threads"),
    ((1,), (32, 32, 2), 0, ValueError, "at most 1024 threads"),
    ((1,), (1, 1, 65), 0, ValueError, "z <= 64"),
    # grid and block are tuples, as CuPy's Function.__call__(tuple grid, tuple block) takes them (a 4th entry is
    # dropped there: tests/test_emulator_r19.py)
    ((1.5,), (32,), 0, TypeError, "'float' object cannot be interpreted as an integer"),
    (1, (32,), 0, TypeError, r"Argument 'grid' has incorrect type \(expected tuple, got int\)"),
    ((1,), (32,), 300 * 1024, ValueError, "shared_mem"),
])
def test_bad_launch_shapes_raise(vadd, grid, block, shared, error, pattern):
    """(A dimension of 0 launches as 1, as CuPy's max(1, d): tests/test_emulator_faults_r18.py.)"""
    with pytest.raises(error, match=pattern):
        vadd(grid, block, (_vec(), _vec(), _vec(), np.int32(8)), shared_mem=shared)


def test_runtime_includes_system_headers_before_the_cuda_keywords():
    """cuda_emu.h makes CUDA keywords such as __noinline__ macros; newer glibc/libstdc++ headers write
    __attribute__((__noinline__)), which the macro breaks (seen with the GPU machine's g++). So the
    runtime includes every system header before cuda_emu.h."""
    text = (emu.EMU_DIR / "runtime.cpp").read_text()
    after_header = text[text.index('#include "cuda_emu.h"'):]
    assert re.findall(r"^\s*#\s*include\s*<", after_header, flags=re.M) == []


def test_unknown_kernel_and_compile_errors():
    with pytest.raises(AttributeError, match="no __global__ function 'nope'.*vector_add"):
        module("vector_add.cu").get_function("nope")
    bad = 'extern "C" __global__ void broken(float* x) {\n    x[0] = undefined_name;\n}\n'
    with pytest.raises(CompileError, match=r"broken.cu:2.*undefined_name"):
        RawKernel(bad, "broken")((1,), (1,), (_vec(),))
    with pytest.raises(ValueError, match="unsupported compile option"):
        RawKernel(bad, "broken", options=("--frobnicate",)).compile()


def test_options_define_macros():
    src = 'extern "C" __global__ void fill(float* x) { x[threadIdx.x] = VALUE; }'
    x = _vec(4)
    RawKernel(src, "fill", options=("-DVALUE=2.5f", "--use_fast_math", "-arch=sm_90"))((1,), (4,), (x,))
    np.testing.assert_array_equal(x, 2.5)


# ------------------------------------------------------------------------------------------------
# The compile cache
# ------------------------------------------------------------------------------------------------
CACHE_SRC = 'extern "C" __global__ void cached(int* x) { x[threadIdx.x] = threadIdx.x * CACHE_TAG; }'


def test_cache_compiles_once_and_tolerates_concurrent_builds(tmp_path, monkeypatch):
    runtime = emu._runtime_object("fast")  # reuse the runtime build: this test is about the kernel's
    shutil.copy(runtime, tmp_path / runtime.name)
    monkeypatch.setenv("MINILORA_CACHE_DIR", str(tmp_path))
    script = textwrap.dedent(f"""
        import numpy as np
        from minilora.emulator import RawKernel
        x = np.zeros(8, np.int32)
        RawKernel({CACHE_SRC!r}, "cached", options=("-DCACHE_TAG=3",))((1,), (8,), (x,))
        assert (x == 3 * np.arange(8)).all(), x
    """)
    env = dict(os.environ, PYTHONPATH=str(Path(emu.__file__).parent.parent))
    procs = [subprocess.Popen([sys.executable, "-c", script], env=env, stderr=subprocess.PIPE) for _ in range(2)]
    for p in procs:  # two processes build the same kernel into an empty cache at the same time
        assert p.wait(timeout=120) == 0, p.stderr.read().decode()
    built = list(tmp_path.glob("*/module.so"))
    assert len(built) == 1 and not list(tmp_path.rglob("*.tmp"))
    mtime = built[0].stat().st_mtime_ns
    emu._MODULES.clear()  # forget the in-process copy: the next build must come from disk
    x = np.zeros(8, np.int32)
    RawKernel(CACHE_SRC, "cached", options=("-DCACHE_TAG=3",))((1,), (8,), (x,))
    assert built[0].stat().st_mtime_ns == mtime
    np.testing.assert_array_equal(x, 3 * np.arange(8))


def test_local_includes_resolve_and_invalidate_the_cache(tmp_path):
    (tmp_path / "common.cuh").write_text("#pragma once\n#define SCALE 3\n")
    (tmp_path / "scaled.cu").write_text('#include "common.cuh"\n'
                                        'extern "C" __global__ void scaled(int* x) { x[threadIdx.x] = SCALE; }\n')
    x = np.zeros(4, np.int32)
    RawModule(path=tmp_path / "scaled.cu").get_function("scaled")((1,), (4,), (x,))
    assert (x == 3).all()
    (tmp_path / "common.cuh").write_text("#pragma once\n#define SCALE 5\n")  # edit the header only
    RawModule(path=tmp_path / "scaled.cu").get_function("scaled")((1,), (4,), (x,))
    assert (x == 5).all()


def test_kernels_dir_and_cache_dir(monkeypatch, tmp_path):
    assert (emu.KERNELS_DIR / "emu" / "cuda_emu.h").is_file()
    monkeypatch.delenv("MINILORA_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert emu.cache_dir() == tmp_path / "minilora" / "emu"
    monkeypatch.setenv("MINILORA_CACHE_DIR", str(tmp_path / "mine"))
    assert emu.cache_dir() == tmp_path / "mine"


# ------------------------------------------------------------------------------------------------
# The same sources are valid CUDA
# ------------------------------------------------------------------------------------------------
@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not installed")
def test_sources_compile_with_nvcc(tmp_path):
    sources = sorted(KDIR.glob("*.cu"))
    assert len(sources) >= 8

    def build(src):
        return src.name, subprocess.run(["nvcc", "-cubin", "-arch=sm_90", str(src), "-o", str(tmp_path / (src.stem + ".cubin"))],
                                        capture_output=True, text=True)

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        for name, res in pool.map(build, sources):
            assert res.returncode == 0, f"nvcc rejected {name}:\n{res.stderr}"
    names = {m.group(1) for src in sources for m in re.finditer(r"__global__ void (?:__launch_bounds__\([^)]*\)\s*)?(\w+)",
                                                                 src.read_text())}
    assert {"matmul_tiled", "reduce_sum", "warp_sum_kernel", "histogram", "softmax_rows", "to_half"} <= names
