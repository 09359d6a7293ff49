"""Speed of the CUDA emulator (minilora/emulator.py).

    python benchmarks/emulator.py

prints
  * context switches per second: 1024 threads pass 200 __syncthreads() each; every barrier costs
    each thread two switches (into the scheduler and back);
  * the time of a 128x128x128 shared-memory tiled matmul (tests/emu_kernels/matmul_tiled.cu):
    64 blocks of 16x16 threads, 8 tiles, two barriers per tile.  The goal is under 0.15 s.
Timings are the best of several warm launches (the first call compiles, or loads from the cache).
"""
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from minilora.emulator import RawKernel, RawModule  # noqa: E402

BARRIERS = r"""
extern "C" __global__ void barriers(int* out, int rounds) {
    int acc = 0;
    for (int r = 0; r < rounds; ++r) {
        acc += threadIdx.x ^ r;
        __syncthreads();
    }
    out[threadIdx.x] = acc;
}
"""


def best_of(fn, repeats=5):
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main():
    threads, rounds = 1024, 200
    k = RawKernel(BARRIERS, "barriers")
    out = np.zeros(threads, np.int32)
    k(1, threads, (out, np.int32(rounds)))  # compile + warm up
    t = best_of(lambda: k(1, threads, (out, np.int32(rounds))))
    switches = 2 * threads * (rounds + 1)  # +1: starting and exiting each fiber
    print(f"context switches: {switches / t / 1e6:.1f} M/s ({switches} switches in {t * 1e3:.1f} ms, "
          f"{t / switches * 1e9:.1f} ns each including the scheduler)")

    kernels = Path(__file__).resolve().parent.parent / "tests" / "emu_kernels"
    mm = RawModule(path=kernels / "matmul_tiled.cu").get_function("matmul_tiled")
    n = 128
    rng = np.random.default_rng(0)
    A = rng.standard_normal((n, n)).astype(np.float32)
    B = rng.standard_normal((n, n)).astype(np.float32)
    C = np.zeros((n, n), np.float32)
    args = (A, B, C, np.int32(n), np.int32(n), np.int32(n))
    mm((8, 8), (16, 16), args)
    assert np.allclose(C, A @ B, rtol=1e-4, atol=1e-4)
    t = best_of(lambda: mm((8, 8), (16, 16), args))
    verdict = "ok" if t < 0.15 else "SLOWER THAN THE 0.15 s GOAL"
    print(f"tiled matmul 128x128x128 (64 blocks x 256 threads): {t * 1e3:.1f} ms  [{verdict}]")
    t = best_of(lambda: mm((8, 8), (16, 16), args, check_races=True), repeats=2)
    print(f"  the same with check_races=True (4 schedules): {t * 1e3:.1f} ms")


if __name__ == "__main__":
    main()
