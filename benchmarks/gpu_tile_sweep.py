"""Which ideas make the fused LoRA forward GEMM fast?  Times variants of ``lora_fwd_y`` side by side.

    python benchmarks/gpu_tile_sweep.py                 # on a GPU (CuPy): M = 8192, K = N = 4096, r = 16
    python benchmarks/gpu_tile_sweep.py --device emu    # on the CPU emulator, a small shape: checks only

Every variant is the same template from ``kernels/lora_forward.cu`` (``lora_fwd_y_tiled``) with another
configuration struct (as in ``kernels/lora_tiles.cuh``: tile shape, k-step BK, pipelining (STAGES),
warp-tiled thread layout) and blocks per SM in ``__launch_bounds__``, compiled here as an extra
``extern "C"`` kernel. v3, v4 and v5 are among them,
so each idea's effect is read off one table measured in one run (named baseline: cuBLAS's ``X W0^T``).
Each variant's output is checked against cuBLAS (CuPy) or NumPy first.
"""
import argparse
import sys

import numpy as np

from gpu_lora import time_ms  # the same timing as the main GPU benchmark

# (name, BM, BN, BK, TM, TN, STAGES, WARP_TILED, min blocks per SM); threads = BM BN / (TM TN).
VARIANTS = [
    ("v3: plain layout, 1 stage, BK 8", 128, 128, 8, 8, 8, 1, False, 2),
    ("v4: plain layout, 2 stages, BK 8", 128, 128, 8, 8, 8, 2, False, 2),
    ("warp tiles, 1 stage, BK 8", 128, 128, 8, 8, 8, 1, True, 2),
    ("v5: warp tiles, 2 stages, BK 8", 128, 128, 8, 8, 8, 2, True, 2),
    ("warp tiles, 2 stages, BK 16", 128, 128, 16, 8, 8, 2, True, 2),
    ("warp tiles, 2 stages, BK 8, 1 block/SM", 128, 128, 8, 8, 8, 2, True, 1),
    ("warp tiles 128x256, 2 stages, BK 8 (512 threads)", 128, 256, 8, 8, 8, 2, True, 1),
    ("warp tiles, 16 x 8 per thread, 256x128, 2 stages, BK 8", 256, 128, 8, 16, 8, 2, True, 1),
    ("warp tiles, 8 x 16 per thread, 128x256, 2 stages, BK 8", 128, 256, 8, 8, 16, 2, True, 1),
    ("warp tiles, 8 x 16 per thread, 128x256, 1 stage, BK 8", 128, 256, 8, 8, 16, 1, True, 1),
    ("warp tiles, 16 x 8 per thread, 256x128, 2 stages, BK 4", 256, 128, 4, 16, 8, 2, True, 1),
]


def threads_of(bm, bn, tm, tn):
    return bm * bn // (tm * tn)


def variant_source(index, bm, bn, bk, tm, tn, stages, warp_tiled, min_blocks):
    """One variant: a configuration struct (the form of kernels/lora_tiles.cuh) and a kernel using it."""
    flag = "true" if warp_tiled else "false"
    return (f"struct sweep_config_{index} {{\n"
            f"    static constexpr int BM = {bm}, BN = {bn}, BK = {bk}, TM = {tm}, TN = {tn}, STAGES = {stages};\n"
            f"    static constexpr bool VEC = true, WARP_TILED = {flag};\n}};\n"
            f'extern "C" __global__ void __launch_bounds__({threads_of(bm, bn, tm, tn)}, {min_blocks})\n'
            f"sweep_{index}(const float* __restrict__ X, const float* __restrict__ W0, const float* __restrict__ U,\n"
            f"        const float* __restrict__ B, const float* __restrict__ bias, int has_bias, float* __restrict__ Y,\n"
            f"        int M, int N, int K, int r, float s) {{\n"
            f"    lora_fwd_y_tiled<sweep_config_{index}>(X, W0, U, B, bias, has_bias, Y, M, N, K, r, s);\n}}\n")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", choices=("cuda", "emu"), default="cuda")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--rank", type=int, default=16)
    args = parser.parse_args(argv)
    from minilora import kernels
    if args.device == "cuda":
        import cupy as xp
        from cupy import RawModule
        M, N, K, repeats = 8192, 4096, 4096, args.repeats
    else:
        xp = np
        from minilora.emulator import RawModule
        M, N, K, repeats = 260, 264, 40, 1  # ragged against every tile: edges and all warps exercised
    r, s = args.rank, 2.0
    code = kernels.source("lora_forward.cu") + "\n" + "".join(
        variant_source(i, *v[1:]) for i, v in enumerate(VARIANTS))
    module = RawModule(code=code)

    rng = np.random.default_rng(0)
    X, W0, A, B = (xp.asarray((rng.standard_normal(shape) / np.sqrt(shape[1])).astype(np.float32))
                   for shape in ((M, K), (N, K), (r, K), (N, r)))
    U = xp.ascontiguousarray(X @ A.T)
    want = X @ W0.T + s * (U @ B.T)
    Y = xp.empty((M, N), dtype=np.float32)
    i32 = np.int32

    def run(index, bm, bn, tm, tn):
        module.get_function(f"sweep_{index}")(((N + bn - 1) // bn, (M + bm - 1) // bm), (threads_of(bm, bn, tm, tn),),
                                             (X, W0, U, B, Y, i32(0), Y, i32(M), i32(N), i32(K), i32(r),
                                              np.float32(s)))

    def median_ms(fn):  # CUDA events, as gpu_lora.py times everything
        return time_ms(xp, fn, 3, repeats) if args.device == "cuda" else float("nan")

    base = median_ms(lambda: X @ W0.T)
    flops = 2 * M * N * K + 2 * M * N * r
    print(f"lora_fwd_y variants, M={M} N={N} K={K} r={r}, float32; baseline cuBLAS X W0^T: {base:.3f} ms\n")
    print("| variant | ms | TFLOP/s | vs cuBLAS base GEMM | max rel. error |\n|---|---|---|---|---|")
    for i, (name, bm, bn, _bk, tm, tn, *_rest) in enumerate(VARIANTS):
        Y[...] = np.nan
        run(i, bm, bn, tm, tn)
        error = float(abs(Y - want).max() / abs(want).max())
        ms = median_ms(lambda: run(i, bm, bn, tm, tn))
        print(f"| {name} | {ms:.3f} | {flops / ms / 1e9:.1f} | {ms / base:.2f}x | {error:.1e} |", flush=True)
        if not error < 1e-4:
            sys.exit(f"{name}: wrong result (max relative error {error})")


if __name__ == "__main__":
    main()
