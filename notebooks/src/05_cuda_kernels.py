# %% [markdown]
# # 5. CUDA kernels, run on your CPU
#
# On a GPU, LoRA's layer is not a few NumPy calls but a handful of CUDA kernels. minilora writes them
# by hand -- `kernels/lora_forward.cu`, `kernels/lora_backward.cu`, `kernels/adamw.cu` -- and runs the
# **same source** in two places: on an NVIDIA GPU through CuPy (`device="cuda"`), and on any machine
# with g++ through minilora's own CUDA emulator (`device="emu"`), where every CUDA thread is a fiber
# on the CPU, `__syncthreads()` is a real barrier, and shared memory is per block.
#
# The emulator is slow and says nothing about GPU speed. What it gives a learner is the ability to
# *run* and *break* a kernel: read the fused LoRA forward, check it against NumPy, and then watch the
# emulator catch the two classic CUDA bugs -- a race on shared memory and an out-of-bounds write --
# with an error that names the line.
#
# **Read beside it:** `kernels/lora_forward.cu` and `kernels/common.cuh` (the fused forward),
# `kernels/lora_backward.cu`, `kernels/README.md` (the versions, the numbers, how the emulator works),
# `minilora/kernels.py` (argument checks and launches), `minilora/emulator.py`. **Exercises 5.1, 5.2.**
#
# **In a student copy** (`minilora exercises build DIR`, solutions replaced by stubs) this notebook runs
# until the first cell that calls an exercise not yet solved -- this chapter's or an earlier one's --
# and stops there with `NotImplementedError: Exercise N.M: <what to do>`. Solve it, check it with
# `minilora exercises check --only N.M`, restart the kernel and run again.

# %%
import time

import matplotlib.pyplot as plt
import numpy as np

import minilora as ml
from minilora import kernels, ops
from minilora.emulator import BarrierError, KernelFault, RaceError, RawKernel

print("emu device enabled:", ml.device("emu").enabled())
rng = np.random.default_rng(0)

# %% [markdown]
# ## Reading the fused forward
#
# Every kernel file opens with the math it computes and the shapes, then (where there are several)
# its numbered versions. The LoRA forward is two launches: a thin one for `U = X A^T` (rank `r`,
# computed once), and one GEMM for `Y = X W0^T + s U B^T + bias` whose rank-`r` term is added to the
# same accumulators after the main loop -- so `B A` is never formed and `X A^T` is never recomputed.

# %%
source = (kernels.kernel_dir() / "lora_forward.cu").read_text()
print("\n".join(source.splitlines()[:24]))

# %% [markdown]
# Version 1 is the one to read first: one thread per output element. Its body is **exercise 5.1**, so
# here is everything up to it -- the signature, how a thread finds its element, and the task. Write the
# body in `kernels/lora_forward.cu` before reading further: the cells below that run the kernels need it.

# %%
start = source.index('extern "C" __global__ void __launch_bounds__(256)\nlora_fwd_y_v1')
task = source.index("EXERCISE 5.1", start)
print(source[start:source.index("\n", task)] + "\n    ...\n}")

# %% [markdown]
# Its first two statements are how every CUDA thread finds its work: the launch is a grid of blocks, each
# a 16 x 16 square of threads, and `(blockIdx, threadIdx)` name one output element `(m, n)`. Threads
# that land outside the matrix (the grid is rounded up to whole blocks) must do nothing: that is the
# `if (m >= M || n >= N) return;` guard. A small kernel of our own makes the mapping visible: each
# thread writes the number of its block into the element it owns.
#
# **Predict:** for a 37 x 45 output and 16 x 16 blocks, how many blocks and threads are launched?

# %%
who = RawKernel(r'''
extern "C" __global__ void which_block(int* owner, int M, int N) {
    const int n = blockIdx.x * blockDim.x + threadIdx.x;
    const int m = blockIdx.y * blockDim.y + threadIdx.y;
    if (m >= M || n >= N) return;                          // the guard: no thread outside the matrix
    owner[m * N + n] = blockIdx.y * gridDim.x + blockIdx.x;
}''', "which_block")
M, N = 37, 45
owner = np.full((M, N), -1, dtype=np.int32)
grid = ((N + 15) // 16, (M + 15) // 16)
who(grid, (16, 16), (owner, np.int32(M), np.int32(N)))
print(f"grid {grid} of 16x16 blocks = {grid[0] * grid[1] * 256} threads for {M * N} outputs")
plt.figure(figsize=(5, 4))
plt.imshow(owner, cmap="tab20")
plt.title(f"which block computes Y[m, n]  ({M} x {N}, one colour per block)")
plt.xlabel("n")
plt.ylabel("m")
plt.show()

# %% [markdown]
# ## Running the real kernels on the emulator
#
# `kernels.lora_forward` and `kernels.lora_backward` check every argument (shape, dtype float32,
# contiguity) and launch the kernels of one version: v1 (naive), v2 (16 x 16 tiles through shared
# memory), v3 (128 x 128 tiles, 8 x 8 outputs per thread in registers, float4 loads), v4 (v3 with the
# next tile's loads in flight during the multiply), v5 (v4 with warp tiles: conflict-free shared
# memory reads; the fastest of those timed on an H200, below) and v6-v9 (rank tiles sized to `r` and
# `cp.async` pipelines; newer, and not yet timed on a GPU: the header of `kernels/lora_forward.cu`
# describes each). All must agree with a float64 NumPy reference -- here on ragged shapes that are not
# multiples of any tile.
#
# **Predict:** how large a relative error do you expect from a correct float32 kernel?

# %%
M, N, K, r, s = 37, 45, 53, 4, 2.0
X = rng.standard_normal((M, K)).astype(np.float32)
W0 = rng.standard_normal((N, K)).astype(np.float32)
A = rng.standard_normal((r, K)).astype(np.float32)
B = rng.standard_normal((N, r)).astype(np.float32)
dY = rng.standard_normal((M, N)).astype(np.float32)
X64, W64, A64, B64, dY64 = (a.astype(np.float64) for a in (X, W0, A, B, dY))

reference = {"Y": X64 @ W64.T + s * (X64 @ A64.T) @ B64.T,
             "dX": dY64 @ W64 + s * (dY64 @ B64) @ A64,
             "dA": s * (dY64 @ B64).T @ X64,
             "dB": s * dY64.T @ (X64 @ A64.T)}

def rel_err(a, b):
    return np.abs(a - b).max() / np.abs(b).max()

for version in kernels.VERSIONS:
    Y, U = kernels.lora_forward(X, W0, A, B, s, device="emu", version=version)
    dX, dA, dB = kernels.lora_backward(dY, X, W0, A, B, U, s, device="emu", version=version)
    errors = ", ".join(f"{k} {rel_err(v, reference[k]):.1e}" for k, v in zip(("Y", "dX", "dA", "dB"), (Y, dX, dA, dB)))
    print(f"{version}: relative errors {errors}")
    assert max(rel_err(v, reference[k]) for k, v in zip(("Y", "dX", "dA", "dB"), (Y, dX, dA, dB))) < 1e-5

# %% [markdown]
# Relative errors around 1e-7 are float32 rounding: the kernels are right. (`tests/test_kernels.py`
# goes further: every version, with and without bias and dropout, outputs poisoned with NaN before
# the launch so that an element no thread wrote shows up, under the race check and the sanitizer.)
#
# The backward returns `dX`, `dA` and `dB` -- and no `dW0`. It is not skipped at run time: there is
# no kernel for it at all, because the LoRA op never needs it.
#
# ## The same kernels behind autograd
#
# On the `emu` device, `ops.lora_linear` -- the op every LoRA layer calls -- runs these kernels for its
# forward and backward. Against the NumPy path on `cpu`, gradients included:
#
# **Predict:** bit for bit the same as `cpu`, or only to float32 rounding?

# %%
results = {}
for dev in ("cpu", "emu"):
    x = ml.tensor(X, device=dev, requires_grad=True)
    a = ml.tensor(A, device=dev, requires_grad=True)
    b = ml.tensor(B, device=dev, requires_grad=True)
    out = ops.lora_linear(x, ml.tensor(W0, device=dev), a, b, s)
    out.backward(dY)
    results[dev] = (out.numpy(), np.asarray(x.grad), np.asarray(a.grad), np.asarray(b.grad))
for name, c, e in zip(("Y", "dX", "dA", "dB"), results["cpu"], results["emu"]):
    print(f"{name}: max |emu - cpu| / max |cpu| = {rel_err(e, c):.1e}")
    assert rel_err(e, c) < 1e-5
bitwise = [np.array_equal(e, c) for c, e in zip(results["cpu"], results["emu"])]
print("bit for bit equal (Y, dX, dA, dB):", bitwise)
assert not all(bitwise)

# %% [markdown]
# Only to rounding: the kernels add each output's `K` products in their own order (tile by tile,
# thread by thread), the CPU's BLAS (MKL or OpenBLAS) in another, and float32 addition depends on the order. The
# differences are a few float32 steps, far below anything training notices.
#
# ## Catching a race
#
# A tiled matrix product loads a tile of each operand into shared memory, waits for the whole block
# (`__syncthreads()`), multiplies, and -- before loading the *next* tile into the same shared arrays --
# waits again. Forget that second barrier and a fast thread overwrites the tile while slower threads
# of its block are still reading it. On a GPU the result then depends on timing: often wrong, sometimes
# right, differently on every run.
#
# After your prediction, a cell runs the kernel without its second barrier once, then with
# `check_races=True`, which runs the launch four times with threads and blocks in different orders and
# compares the outputs.
#
# **Predict first.** Run without its second barrier, will the kernel below give the right product on
# the emulator: always, never, or sometimes?

# %%
race_prediction = None   # "always", "never" or "sometimes"

# %%
TILED = r'''
#define TILE 16
extern "C" __global__ void matmul_tiled(const float* A, const float* B, float* C, int M, int N, int K) {
    __shared__ float As[TILE][TILE];
    __shared__ float Bs[TILE][TILE];
    const int tx = threadIdx.x, ty = threadIdx.y;
    const int row = blockIdx.y * TILE + ty, col = blockIdx.x * TILE + tx;
    float acc = 0.0f;
    for (int t = 0; t < K; t += TILE) {
        As[ty][tx] = (row < M && t + tx < K) ? A[row * K + t + tx] : 0.0f;
        Bs[ty][tx] = (t + ty < K && col < N) ? B[(t + ty) * N + col] : 0.0f;
        __syncthreads();                                   // the tile is loaded
        for (int k = 0; k < TILE; ++k) acc += As[ty][k] * Bs[k][tx];
        SECOND_BARRIER
    }
    if (row < M && col < N) C[row * N + col] = acc;
}'''
buggy = RawKernel(TILED.replace("SECOND_BARRIER", "// (missing: everyone is done with this tile)"), "matmul_tiled")
fixed = RawKernel(TILED.replace("SECOND_BARRIER", "__syncthreads();                   // everyone is done with this tile"), "matmul_tiled")

a = rng.standard_normal((40, 40)).astype(np.float32)
b = rng.standard_normal((40, 40)).astype(np.float32)
args = lambda c: (a, b, c, np.int32(40), np.int32(40), np.int32(40))  # noqa: E731
c = np.zeros((40, 40), np.float32)
buggy((3, 3), (16, 16), args(c))
print(f"buggy kernel: max error against a @ b = {np.abs(c - a @ b).max():.2f}"
      + (f" (you predicted: {race_prediction})" if race_prediction is not None else ""))
assert np.abs(c - a @ b).max() > 1           # wrong, every time
try:
    buggy((3, 3), (16, 16), args(c), check_races=True)
    raise AssertionError("the race was not caught")
except RaceError as err:
    print("RaceError:", err)

# %% [markdown]
# Never: the emulator runs a thread until it reaches a barrier, so the wrong order happens every time
# and the result is wrong on every run. `check_races=True` tells why, and names the argument that differs.
# The message says it all: the output depends on the schedule, and "reads memory that another thread
# writes without a `__syncthreads()` in between" points at the missing barrier. Now with it restored.
#
# **Predict:** with the barrier back, will all four schedules agree?

# %%
c = np.zeros((40, 40), np.float32)
fixed((3, 3), (16, 16), args(c), check_races=True)
print(f"fixed kernel: max error against a @ b = {np.abs(c - a @ b).max():.1e}, same result in every order")
assert np.abs(c - a @ b).max() < 1e-4

# %% [markdown]
# A barrier in the wrong place is caught too, without any option: here only the threads that take the
# `if` reach the first `__syncthreads()`, the others wait at the second one, and on a GPU the block
# would hang or misbehave. The emulator sees every thread of the block and reports where each one is.
# (A thread that has *returned* no longer counts: since Volta a barrier waits for the threads still
# running, so the common `if (i >= n) return;` before a `__syncthreads()` is fine, here as on a GPU.)
#
# **Predict:** which threads will the error say wait at which line?

# %%
divergent = RawKernel(r'''
extern "C" __global__ void halve_then_mirror(float* x) {
    if (threadIdx.x < 16) {
        x[threadIdx.x] *= 0.5f;
        __syncthreads();                  // BUG: threads 16..31 never get here...
    }
    __syncthreads();                      // ...they wait here instead
    x[threadIdx.x] += x[31 - threadIdx.x];
}''', "halve_then_mirror")
try:
    divergent((1,), (32,), (np.ones(32, np.float32),))
    raise AssertionError("the divergent barrier was not caught")
except BarrierError as err:
    print("BarrierError:", err)

# %% [markdown]
# ## Catching an out-of-bounds write
#
# The LoRA kernels' dropout never stores a mask: each kernel recomputes "keep element `i`?" from a hash
# of `(seed, i)` (`lora_keep` in `common.cuh`). (On `cpu` and `emu`, `ops.lora_linear` without a
# `seed=` draws torch's own `nn.Dropout` mask instead, as PEFT does, and keeps it for backward; with a
# `seed=`, and on `cuda`, it is this hash.) Suppose we *did* want the mask as an array, one thread per
# element, with a guard written `i <= n` instead of `i < n`. The thread with `i == n` writes one float
# past the end of the array. On a GPU that silently corrupts whatever lives next to it, if it does not
# crash; in the emulator's fast mode it corrupts the Python process's memory. So we run it only with
# `sanitize=True`: a build with AddressSanitizer, run in a child process, which reports the first
# stray byte with the file, the line and the argument's name. (It includes the real `common.cuh`,
# through the same `-I` option NVRTC takes.)
#
# **Predict:** which thread writes out of bounds, and how many bytes past the end?

# %%
MASK = r'''
#include "common.cuh"
extern "C" __global__ void dropout_mask(float* mask, unsigned seed, unsigned threshold, float keep_scale, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i GUARD n) mask[i] = minilora::lora_keep(seed, i, threshold) ? keep_scale : 0.0f;
}'''
include = ("-I" + str(kernels.kernel_dir()),)
p, seed, n = 0.25, 7, 1000
threshold = np.uint32(int(p * 2**32))
launch_args = lambda mask: (mask, np.uint32(seed), threshold, np.float32(1 / (1 - p)), np.int32(n))  # noqa: E731

start = time.perf_counter()
oob = RawKernel(MASK.replace("GUARD", "<="), "dropout_mask", options=include, sanitize=True)
try:
    oob(((n + 255) // 256,), (256,), launch_args(np.zeros(n, np.float32)))
    raise AssertionError("the out-of-bounds write was not caught")
except KernelFault as err:
    print("KernelFault:", str(err).split("; report:")[0])
print(f"(sanitized build and run: {time.perf_counter() - start:.1f} s of wall-clock time, on "
      f"{ml.parallel.machine_description()})")

# %% [markdown]
# Fixed, the kernel runs clean under the sanitizer, and its mask is bit for bit the one the NumPy path
# uses (`ops.lora_dropout_mask`): given a seed, the CPU, the emulator and a GPU drop exactly the same
# elements (`tests/test_kernels.py::test_dropout_mask_is_bit_identical_to_numpy` checks every kernel
# version on `emu`, and on `cuda` where a GPU is present: it passed on an H100).
#
# **Predict:** with `p = 0.25` and 1000 elements, will exactly 750 be kept?

# %%
good = RawKernel(MASK.replace("GUARD", "<"), "dropout_mask", options=include, sanitize=True)
mask = np.zeros(n, np.float32)
good(((n + 255) // 256,), (256,), launch_args(mask))
numpy_keep = ops.lora_dropout_mask(seed, 1, n, p)[0]
print("same mask as ops.lora_dropout_mask:", np.array_equal(mask > 0, numpy_keep),
      f"| kept {(mask > 0).mean():.1%} (expected {1 - p:.0%})")
assert np.array_equal(mask > 0, numpy_keep)

# %% [markdown]
# ## What the emulator cannot tell you
#
# Inside a block it runs threads one at a time and switches only at barriers (and, so that a thread
# spinning on another thread's flag can finish, at every 64th atomic and each `__nanosleep`), so it
# cannot show memory-ordering bugs that need true parallelism (a missing `atomicAdd` looks fine), and
# its timings say nothing about a GPU:
# coalescing, bank conflicts and occupancy do not exist on a CPU. `kernels/README.md` lists the limits
# and gives the roofline numbers for the LoRA kernels on an H200. Its job is correctness: the same
# `.cu` file is what CuPy compiles for the GPU.
#
# ## What the versions did on a real GPU
#
# The same files, timed on an NVIDIA H200 (`bash benchmarks/gpu_check.sh`, results in
# `benchmarks/RESULTS.md`): the LoRA forward for M = 8192 tokens, K = N = 4096 features, float32; the
# time at r = 16, the ratio at r = 8, 16 and 64. The floor is cuBLAS's `X W0^T` alone, 5.6 ms.
# (`tests/test_notebooks.py` checks this table against `benchmarks/RESULTS.md`, and
# `tests/test_docs_truth_r26.py` the numbers the next cell reads from it.)
#
# | version | what it adds | time | vs cuBLAS alone |
# |---|---|---|---|
# | v2 | 16 x 16 tiles in shared memory | 47.7 ms | 8.54-8.85x |
# | v3 | 128 x 128 tiles, 8 x 8 outputs per thread in registers, float4 loads | 9.4 ms | 1.67-1.72x |
# | v4 | + the next tile's loads in flight during the multiply (pipelining) | 9.2 ms | 1.64-1.69x |
# | v5 | + warp tiles: each warp's shared-memory reads in one transaction | 8.1 ms | 1.45-1.51x |
# | unfused | PEFT's path: cuBLAS `X W0^T`, then `X A^T`, `U B^T` and an add | 6.0 ms | 1.08-1.10x |

# %%
# The H200 table's times at r = 16 (benchmarks/RESULTS.md, the GPU run the table quotes; not measured here)
bandwidth, base_ms, unfused_ms = 4.8e12, 5.581, 6.029   # H200 peak; measured (benchmarks/RESULTS.md, r = 16)
v5_ms = 8.141                                            # fused v5, the same table
v2_ms, v3_ms, v4_ms = 47.656, 9.371, 9.162               # fused v2, v3, v4, the same table
fp32_peak = 67e12                                        # the H200's fp32 peak that RESULTS.md assumes
M_, K_, N_, r_ = 8192, 4096, 4096, 16
base_flops = 2 * M_ * K_ * N_
base_rate = base_flops / (base_ms / 1e3)
print(f"cuBLAS alone: {base_ms} ms = {base_rate / 1e12:.0f} TFLOP/s, {base_rate / fp32_peak:.0%} of the fp32 peak")
print(f"v2 -> v3 (register blocking): {v2_ms / v3_ms:.0f}x faster; v3 -> v4 (pipelining): {1 - v4_ms / v3_ms:.0%} "
      f"of the time saved; v4 -> v5 (warp tiles, no bank conflicts): {1 - v5_ms / v4_ms:.0%} saved")

# %% [markdown]
# Two lessons a CPU cannot teach. Register blocking is worth 5x: each value read from shared memory
# feeds 8 multiply-adds instead of 1. And the next bottleneck was not where one would guess: hiding
# memory latency (v4) saved 2% of the time, while removing shared-memory bank conflicts (v5) saved 11%.
# Even cuBLAS's floor (49 TFLOP/s) is 74% of the chip's fp32 peak, not all of it.
#
# The fused kernels add the LoRA term to the base GEMM's accumulators; PEFT's unfused path runs it as
# separate kernels. The cell after next counts what each path computes and moves, beside the measured
# times.
#
# **Predict first.** What does fusing the LoRA term into the main GEMM save: FLOPs, memory traffic,
# kernel launches? And at best, how much faster than the unfused path could a fused kernel be?

# %%
fusion_prediction = None   # e.g. "saves FLOPs, up to 1%" -- compare with the numbers below

# %%
lora_flops = 2 * M_ * K_ * r_ + 2 * M_ * r_ * N_
extra_bytes = 4 * (M_ * K_ + M_ * r_          # read X again, write U
                   + M_ * r_ + M_ * N_         # read U, write the partial U B^T
                   + 3 * M_ * N_)              # read Y and the partial, write Y
print(f"rank-r share of the FLOPs (fused or not): {lora_flops / base_flops:.1%}")
print(f"extra memory traffic of the unfused path: {extra_bytes / 1e9:.2f} GB = "
      f"{extra_bytes / bandwidth * 1e3:.2f} ms at {bandwidth / 1e12:.1f} TB/s ({extra_bytes / bandwidth * 1e3 / base_ms:.1%} of the base GEMM)")
print(f"measured unfused overhead: {unfused_ms - base_ms:.2f} ms = {unfused_ms / base_ms - 1:.1%}: the most a fused kernel can win")
if fusion_prediction is not None:
    print(f"you predicted: {fusion_prediction}")
print(f"our fused v5: {v5_ms / base_ms:.2f}x cuBLAS's time, {v5_ms / unfused_ms:.2f}x the unfused path's")
assert lora_flops / base_flops < 0.01 and extra_bytes / bandwidth * 1e3 < unfused_ms - base_ms
assert round(unfused_ms / base_ms - 1, 2) == 0.08 and round(v5_ms / base_ms, 2) == 1.46

# %% [markdown]
# Fusion saves **no** arithmetic: fused or not, the same products are computed. The rank-r work is a
# small share of the FLOPs either way. What the unfused path pays extra is memory passes and launches:
# it reads `X` a second time for `U = X A^T`, writes an `M x N` partial result `U B^T` and reads it back
# (with `Y`) to add it, and launches three more kernels. A fused kernel avoids those, so its ceiling
# is the unfused path's overhead over the base GEMM, not the rank-r share of the FLOPs.
#
# The extra passes alone, at full bandwidth, explain part of the measured 8%; the rest is that the
# thin rank-r products and the elementwise add run far below peak, and the launches between them. So
# a perfect fused kernel would be about 8% faster than PEFT's path -- and ours, whose main loop is
# still 1.46x cuBLAS's, is slower. Fusion pays only once the main loop is as good as cuBLAS's.
#
# ## Summary
#
# * The fused forward computes `U = X A^T` once, then one GEMM with `s U B^T` added in its epilogue; the
#   backward computes `dX`, `dA`, `dB` and has no `dW0` kernel at all.
# * Each thread finds its output from `blockIdx` and `threadIdx`; a guard keeps the rounded-up grid
#   inside the matrix.
# * `check_races=True` runs a launch in several thread orders and reports results that depend on the
#   order (a missing `__syncthreads()`); divergent barriers are reported on every launch.
# * `sanitize=True` catches out-of-bounds reads and writes, naming the line and the argument.
# * Fusing the LoRA term saves memory passes and launches, not FLOPs; its ceiling is the unfused
#   path's overhead (about 8% on an H200).
#
# ## Questions and small tasks
#
# 1. In `which_block`, swap the roles of `blockIdx.x` and `blockIdx.y`. What changes in the picture,
#    and which layout lets neighbouring threads read neighbouring addresses of `W0`?
# 2. Remove the guard `if (m >= M || n >= N) return;` from a copy of `which_block` and run it with
#    `sanitize=True`. What does the report say?
# 3. The backward's first step is `V = s dY B` (rank r). Count its FLOPs against those of `dX = dY W0`:
#    why does the backward kernel compute `V` and `dB` in one read of `dY`?
#
# ## What's next
#
# * Notebook 6 puts the pieces together and fine-tunes the base model.
# * Production kernels: Punica's BGMV/SGMV and S-LoRA's MBGMV/MBGMM (notebook 7) batch many adapters;
#   QLoRA's bitsandbytes does *not* fuse: its `MatMul4Bit` expands the whole 4-bit weight to 16 bits in a
#   kernel of its own, then calls an ordinary GEMM (only one-token inference reads the 4-bit codes
#   directly, in a GEMV kernel).
#   CUTLASS and Triton are where fused epilogues like ours are written today.
