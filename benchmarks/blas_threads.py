"""Benchmark: minilora's own split of the matrix products vs letting OpenBLAS thread them.

minilora runs BLAS single-threaded and splits each product into blocks of rows on its own helper
threads (minilora/parallel.py). The alternative is to hand the whole product to OpenBLAS with 2
threads. This times one full fine-tuning step of the benchmarks/train_step.py model both ways, in
ONE process, switching the way before each timed step (so the machine's noise hits both alike):

* ``split``: as minilora runs (products cut into blocks of rows, BLAS at 1 thread while minilora
  computes: ``parallel.computing``);
* ``openblas``: no product is split (``parallel.matmul`` / ``matmuls`` are plain ``a @ b``, and
  ``parallel.product_work`` counts a product as too small to split, which keeps the Linear and LoRA
  row-block functions whole) and OpenBLAS keeps its 2 threads (``parallel.computing`` is a no-op).

Every other op is the same in both. ``ratio`` = split / openblas: below 1.0, minilora's way is faster.
The difference is OpenBLAS's idle workers, which spin for ~0.1 s after each product and take the
cores from the threads running the elementwise ops between products -- and from any other process.
Run it on a quiet machine and on a busy one: on 2 vCPUs of a Zen 4 EPYC the ratio was 1.08-1.11 idle
(OpenBLAS's threads faster) and 0.59-1.13 from run to run with other processes on the cores
(minilora/parallel.py). With MKL as minilora's BLAS (``blas.library() == "mkl"``) ``split`` runs the layers'
products whole on MKL's threads instead; ``MINILORA_BLAS=openblas`` compares the two ways described here.

    python benchmarks/blas_threads.py
"""
import contextlib
import statistics
import sys
import time

import numpy as np

import minilora as ml
from minilora import blas, parallel
from minilora.models import LlamaConfig, LlamaForCausalLM
from minilora.optim import AdamW


def blas_thread_setter():
    if not blas.set_num_threads(1):
        raise SystemExit("no OpenBLAS found in this process: nothing to compare")
    return blas.set_num_threads


def main(repeats=12):
    set_blas_threads = blas_thread_setter()
    split = (parallel.matmul, parallel.matmuls, parallel.product_work, parallel.computing, 1)
    whole = (lambda a, b: a @ b,
             lambda *pairs: [None if pair is None else pair[0] @ pair[1] for pair in pairs],
             lambda macs: 1, contextlib.nullcontext, 2)
    ways = {"split": split, "openblas": whole}
    config = LlamaConfig(vocab_size=512, hidden_size=256, intermediate_size=688, num_hidden_layers=4,
                         num_attention_heads=4, max_position_embeddings=2048)
    ml.manual_seed(0)
    model = LlamaForCausalLM(config, dtype=ml.float32)
    opt = AdamW(model.parameters(), lr=1e-4, weight_decay=0.01)
    ids = np.random.default_rng(0).integers(0, 512, size=(8, 128))

    def step():
        model(ids, labels=ids).loss.backward()
        opt.step()
        opt.zero_grad()

    for _ in range(2):
        step()
    times = {name: [] for name in ways}
    try:
        for i in range(repeats):
            for name in (list(ways) if i % 2 else list(ways)[::-1]):
                parallel.matmul, parallel.matmuls, parallel.product_work, parallel.computing, blas_threads = ways[name]
                set_blas_threads(blas_threads)
                step()  # one untimed step in this way, so the threads settle
                start = time.perf_counter()
                step()
                times[name].append(time.perf_counter() - start)
    finally:
        parallel.matmul, parallel.matmuls, parallel.product_work, parallel.computing, _ = split
        set_blas_threads(1)
    for name, ts in times.items():
        print(f"{name:<9} step: median {statistics.median(ts) * 1e3:7.1f} ms")
    ratios = [s / o for s, o in zip(times["split"], times["openblas"])]
    print(f"median ratio split / openblas: {statistics.median(ratios):.3f} "
          f"(per-pair {', '.join(f'{r:.2f}' for r in ratios)})")


if __name__ == "__main__":
    sys.exit(main())
