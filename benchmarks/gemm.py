"""Benchmark: the matrix products of a Llama training step, minilora's BLAS (as minilora runs it) vs torch's.

Most of a training step on the CPU is matrix products (GEMMs). This times the products of one step of
the benchmarks/train_step.py model (d=256, intermediate 688, vocab 512, 1024 rows), each as forward
``X W^T``, ``dX = dY W`` and ``dW = dY^T X``, over 16 different operand sets in turn so that they come
from memory as in a real step, not from a warm cache:

* ``minilora``: ``minilora.parallel.matmul``, the way minilora's ops run them -- with MKL installed
  (``blas.library() == "mkl"``) each product whole on MKL's threads, as torch's; else NumPy's OpenBLAS on
  blocks of rows, one per thread;
* ``torch``: ``torch.matmul`` with the same thread count (MKL in torch's x86 wheels).

Both are timed in one process, interleaved, after a pause that lets the other's threads go idle.
``ratio`` = minilora / torch: above 1.0, minilora's way is the slower. With ``--threads 1`` it compares
the two BLAS libraries' single-thread kernels alone.

A second table times the rank-r products a LoRA step adds to each layer (``--rank``, default 8):
``X A^T``, ``U B^T``, ``dY B``, ``V A``, ``V^T X``, ``dY^T U`` -- skinny products with one side r wide,
where BLAS libraries differ most.

    python benchmarks/gemm.py              # 2 threads
    python benchmarks/gemm.py --threads 1
"""
import argparse
import os
import statistics
import sys
import time

ARGS = argparse.ArgumentParser(description=__doc__.split("\n")[0])
ARGS.add_argument("--threads", type=int, default=2)
ARGS.add_argument("--repeats", type=int, default=15)
ARGS.add_argument("--rank", type=int, default=8, help="LoRA rank r of the skinny products (default 8)")
ARGS = ARGS.parse_args()
os.environ["MINILORA_NUM_THREADS"] = str(ARGS.threads)

import numpy as np  # noqa: E402

from minilora import parallel  # noqa: E402

ROWS = 1024
SHAPES = [(256, 256)] * 4 + [(256, 688)] * 2 + [(688, 256), (256, 512)]  # (in, out): q,k,v,o; gate,up; down; head


def operands(rng):
    """Two copies of each layer's (x, W, dY): 16 sets, cycled so each comes from memory."""
    sets = []
    for fan_in, fan_out in SHAPES * 2:
        x = rng.standard_normal((ROWS, fan_in), dtype=np.float32)
        w = rng.standard_normal((fan_out, fan_in), dtype=np.float32)
        dy = rng.standard_normal((ROWS, fan_out), dtype=np.float32)
        sets.append((x, w, dy))
    return sets


def minilora_step(sets):
    for x, w, dy in sets:
        parallel.matmul(x, w.T)
        parallel.matmuls((dy, w), (dy.T, x))  # backward: dX and dW side by side, as Linear does


def torch_step(sets):
    for x, w, dy in sets:
        x @ w.T
        dy @ w
        dy.T @ x


def lora_operands(sets, rng):
    """Per layer: x, dY and the LoRA pieces A [r, in], B [out, r], U = x A^T, V = dY B (r = --rank)."""
    r = ARGS.rank
    out = []
    for x, w, dy in sets:
        a = rng.standard_normal((r, x.shape[1]), dtype=np.float32)
        b = rng.standard_normal((w.shape[0], r), dtype=np.float32)
        out.append((x, dy, a, b, x @ a.T, dy @ b))
    return out


def lora_products(lora_sets):  # the same code for NumPy arrays and torch tensors
    for x, dy, a, b, u, v in lora_sets:
        x @ a.T, u @ b.T  # forward: U, and the rank-r term of Y
        dy @ b, v @ a  # backward: V, and the rank-r term of dX
        v.T @ x, dy.T @ u  # dA and dB


def main():
    import torch
    torch.set_num_threads(ARGS.threads)
    rng = np.random.default_rng(0)
    sets = operands(rng)
    torch_sets = [tuple(torch.from_numpy(a) for a in s) for s in sets]
    flops = sum(6 * x.shape[0] * x.shape[1] * w.shape[0] for x, w, _ in sets)
    compare("products of a full fine-tuning step", flops,
            {"minilora": (minilora_step, sets), "torch": (torch_step, torch_sets)})
    lora_sets = lora_operands(sets, rng)
    torch_lora = [tuple(torch.from_numpy(a) for a in s) for s in lora_sets]
    lora_flops = sum(2 * ARGS.rank * x.shape[0] * (2 * x.shape[1] + 2 * dy.shape[1]) + 2 * ARGS.rank * x.shape[0]
                     * (x.shape[1] + dy.shape[1]) for x, dy, *_ in lora_sets)
    compare(f"LoRA's rank-{ARGS.rank} products", lora_flops,
            {"minilora": (lora_products, lora_sets), "torch": (lora_products, torch_lora)})


def compare(title, flops, runs):
    """Time both runs interleaved and print their medians and the median ratio minilora / torch."""
    times = {name: [] for name in runs}
    for i in range(ARGS.repeats + 2):
        for name in (list(runs) if i % 2 else list(runs)[::-1]):
            step, data = runs[name]
            time.sleep(0.2)  # let the other library's idle threads stop spinning
            start = time.perf_counter()
            step(data)
            if i >= 2:
                times[name].append(time.perf_counter() - start)
    print(f"{title}, {ARGS.threads} thread(s), float32:")
    for name, ts in times.items():
        print(f"  {name:<9} {statistics.median(ts) * 1e3:7.2f} ms   {flops / statistics.median(ts) / 1e9:6.1f} GFLOP/s")
    ratios = [m / t for m, t in zip(times["minilora"], times["torch"])]
    print(f"  median ratio minilora / torch {statistics.median(ratios):.3f} "
          f"(per-pair {', '.join(f'{r:.2f}' for r in ratios)})")


if __name__ == "__main__":
    sys.exit(main())
