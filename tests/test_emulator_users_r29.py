"""Round 29: CUDA written as tutorials, PMPP, NVIDIA's samples and blog posts write it, run unedited through the
emulator's CuPy API against float64 NumPy.  What failed at the round's start, fixed in the emulator (never the kernel):

* Wrong numbers, silently: an index past a thread's local array (``float w[8]; for (k = 0; k <= 8; ++k) w[k] = ...``,
  or a read of ``best[4]`` of a ``float best[4]``) read or overwrote the thread's other variables in the fast builds;
  only ``sanitize=True`` named it.  Now every build compiles the kernel with GCC's ``-fsanitize=bounds`` and
  runtime.cpp's hook stops the launch at the line, naming the array's type and the index -- a ``__constant__`` or
  ``__device__`` array's too.  Two kinds of subscript pass (minilora/emulator_subscripts.py): an inner one
  (``tile[i][32]`` of a ``float tile[32][32]`` is ``tile[i + 1][0]`` on a GPU, where such kernels run), in a macro
  too, and a static ``__shared__`` array's (its guard pages name an access past it, with the variable and the
  byte).  ``-fpeel-loops`` keeps the register tiles of an SGEMM in registers: with a check in its body -O2 no longer
  unrolled ``for (i = 0; i < 4; ++i)``, and a register-tiled 256x256 SGEMM ran 4x slower (a standalone copy: 4.2-4.7
  ms without the checks, 18-21 ms with them, 4.1-6.1 ms with them and -fpeel-loops).  Through the emulator, best of
  15 launches on a loaded 2-core machine: that SGEMM 30-44 ms before, 7.7-7.9 ms now; a 16x16 shared-tile SGEMM
  263-272 ms before, 138-192 ms now (the peeled loops more than pay for the checks).

Checked and found right on the round's start (not kept here: each test here fails there), against float64 NumPy:
an early ``return`` before ``__syncthreads()`` in a partial last block; ``if (t < 128) __syncthreads();`` with the
other threads exiting (Volta's barrier waits for the non-exited threads, as the emulator does); a tile<8>'s
cg::reduce and shfl_xor max; a tile<16> of a 48-thread block (meta_group_size 3); coalesced_threads() in a branch
(thread_rank, size, shfl, cg::reduce); 16-lane masks for __shfl_down_sync with width 16, __ballot_sync,
__reduce_add_sync and __match_any_sync.  wmma: half m16n16k16 with a column-major B over K = 64 (accumulating
through mma_sync), bf16, tf32 m16n16k8 with __float_to_tf32 (round to nearest, ties away; unrounded inputs
truncated to 19 bits, as the tensor cores read them), double m8n8k4 loading C and storing column-major, int8 with
an int accumulator filled with 7, a half accumulator (the f32 one exact, the half one the exact sum rounded once).
Atomics: atomicAdd on float, double and __half2, an atomicCAS loop for a float min, an int histogram.  Three extern
__shared__ arrays of different types laid out by hand (double, float, int) over one dynamic allocation;
``__constant__`` coefficients filled through get_global (Horner); a uchar4 grayscale + clamped 3x3 blur; a template
saxpy with a device lambda and ``#pragma unroll`` by name_expressions; __launch_bounds__ with two and three
arguments (a launch past them CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES); streams, events and wait_event in order.
Math: __expf within CUDA's 2 + floor(|1.16 x|) ulp, __fdividef and rsqrtf within 2, __sinf / __cosf within
2^-21.41 on [-pi, pi], __logf within 3 ulp and __log2f within 2 outside [0.5, 2], exp2f, erfinvf, tanhf, sinpif,
expm1f; __frcp_rn, __fsqrt_rn, __frsqrt_rn correctly rounded; __fadd / __fsub / __fmul / __fdiv / __fmaf / __frcp
/ __fsqrt _rd / _ru / _rz against exact rationals.
"""
from __future__ import annotations

import re
from functools import lru_cache

import numpy as np
import pytest

from minilora import emulator as emu
from minilora.emulator import KernelFault, RawModule

pytestmark = pytest.mark.skipif(not emu.is_available(), reason="the CUDA emulator needs g++")
i32, f32 = np.int32, np.float32


@lru_cache(maxsize=None)
def module(source: str) -> RawModule:
    return RawModule(code=source).compile()


def past_the_array(source: str, kernel: str, code: str, index: int, array: str) -> str:
    """The fault's words for an index past `array` in the line of `source` that holds `code`."""
    line = source[:source.index(code)].count("\n") + 1
    file = re.search(r"__global__ void (\w+)", source).group(1)  # the file is named after the first kernel
    return (rf"kernel '{kernel}' indexes element {index} of an array of type '{re.escape(array)}' at "
            rf"{file}\.cu:{line}, outside its bounds")

# ------------------------------------------------------------------- local arrays, one element too far
WINDOW = r"""
#define K 8
// a moving sum through a per-thread window; `last` = K - 1 is right, K the classic `<=` off-by-one
extern "C" __global__ void window_sum(const float* x, float* out, int n, int last) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float w[K];
    for (int k = 0; k <= last; ++k) w[k] = x[(i + k) % n];
    float s = 0.f;
    for (int k = 0; k < K; ++k) s += w[k];
    out[i] = s;
}
__device__ float pick(const float (&best)[4], int k) {
    return best[k];
}
// the k-th of four values a thread keeps; k = 4 reads one past them (through an inlined __device__ helper)
extern "C" __global__ void kth(const float* x, float* out, int k) {
    float best[4];
    for (int j = 0; j < 4; ++j) best[j] = x[threadIdx.x * 4 + j];
    out[threadIdx.x] = pick(best, k);
}
"""


def test_a_write_one_past_a_local_array_stops_the_launch_at_its_line():
    kernel = module(WINDOW).get_function("window_sum")
    x, out = np.random.default_rng(0).random(64).astype(f32), np.zeros(64, f32)
    kernel((1,), (64,), (x, out, i32(64), i32(7)))
    np.testing.assert_allclose(out, sum(np.roll(x.astype(np.float64), -j) for j in range(8)), rtol=1e-6)
    with pytest.raises(KernelFault, match=past_the_array(WINDOW, "window_sum", "w[k] = x", 8, "float [8]")):
        kernel((1,), (64,), (x, out, i32(64), i32(8)))


def test_a_read_one_past_a_local_array_is_named_in_the_device_function():
    kernel = module(WINDOW).get_function("kth")
    x, out = np.arange(128, dtype=f32), np.zeros(32, f32)
    kernel((1,), (32,), (x, out, i32(3)))
    np.testing.assert_array_equal(out, x[3::4])
    with pytest.raises(KernelFault, match=past_the_array(WINDOW, "kth", "return best[k]", 4, "float [4]")):
        kernel((1,), (32,), (x, out, i32(4)))
    with pytest.raises(KernelFault, match=r"indexes element -1 of an array of type 'float \[4\]'"):
        kernel((1,), (32,), (x, out, i32(-1)))


# ------------------------------------------------------------------- what still runs: inner dimensions, __shared__
TILES = r"""
#define T 8
#define AT(a, i, j) a[i][j]
__constant__ float taps[4];
__device__ int hits[2];
// row t of an 8x8 tile, read at column `col` -- past the row when col >= 8, which a GPU reads from the next row;
// then a tap of `taps` and a count into `hits`
extern "C" __global__ void rows(const float* x, float* out, int col, int tap, int hit) {
    __shared__ float tile[T][T];
    int t = threadIdx.x;
    for (int q = 0; q < T; ++q) tile[t][q] = x[t * T + q];
    __syncthreads();
    float v = tile[t % 4][col] + AT(tile, t % 4, col) +	tile [t % 4]
        [col];
    out[t] = v + taps[tap];
    if (t == 0) hits[hit] += 1;
}
"""


def test_inner_dimensions_and_shared_tiles_run_while_a_constant_array_is_checked():
    m = module(TILES)
    m.get_global("taps")[...] = np.array([10, 20, 30, 40], f32)
    m.get_global("hits")[...] = 0
    kernel = m.get_function("rows")
    x, out = np.arange(64, dtype=f32), np.zeros(8, f32)
    kernel((1,), (8,), (x, out, i32(9), i32(3), i32(1)))  # tile[r][9] is tile[r + 1][1]
    np.testing.assert_array_equal(out, 3 * x[(np.arange(8) % 4 + 1) * 8 + 1] + 40)
    with pytest.raises(KernelFault, match=past_the_array(TILES, "rows", "taps[tap]", 4, "float [4]")):
        kernel((1,), (8,), (x, out, i32(1), i32(4), i32(0)))
    with pytest.raises(KernelFault, match=past_the_array(TILES, "rows", "hits[hit] +=", 2, "int [2]")):
        kernel((1,), (8,), (x, out, i32(1), i32(0), i32(2)))
