"""How much do the flash-attention kernels' vector loops save?  (round 30: ops/attention32.py, native/float32_kernels.c)

    python benchmarks/flash_loops.py                       # [8, 4, 128, 64] causal: lora_step.py's attention
    python benchmarks/flash_loops.py --shape 1 8 512 64 --no-causal --repeats 31

Forward and backward of ``attention32.flash_forward`` / ``flash_backward`` (float32, the Llama projections' layout)
with the vector loops and with ``attention32.scalar_loops()`` (round 29's loops: the same bits), alternated in one
process; the median CPU time of each (``time.process_time``: other load on the machine counts less than in wall
time), one minilora thread. Round 30 on 2 busy cores (load ~5), the default shape: forward 3.2 -> 1.9-2.0 ms
(ratio 0.59-0.63; torch's forward 1.6 ms there), backward 5.1-5.4 -> 5.1 ms (0.94-1.0: MKL's products are most of it).
"""
import argparse
import os
import statistics
import time

os.environ.setdefault("MINILORA_NUM_THREADS", "1")  # (read when minilora is imported)

import numpy as np  # noqa: E402

import minilora as ml  # noqa: E402
from minilora.ops import attention32  # noqa: E402


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--shape", type=int, nargs=4, default=[8, 4, 128, 64], metavar=("B", "H", "T", "D"))
    p.add_argument("--no-causal", dest="causal", action="store_false")
    p.add_argument("--repeats", type=int, default=15, help="alternated rounds (default 15)")
    return p.parse_args()


def attention_inputs(b, h, t, d):
    """q, k, v as a Llama's projections ([B, T, H, D] memory viewed as [B, H, T, D]) and a C-order dO."""
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal((b, t, h, d)).astype(np.float32).transpose(0, 2, 1, 3) for _ in range(3))
    return q, k, v, rng.standard_normal((b, h, t, d)).astype(np.float32)


def cpu_seconds(fn, calls):
    start = time.process_time()
    for _ in range(calls):
        fn()
    return (time.process_time() - start) / calls


def main():
    args = parse_args()
    ml.parallel.keep_freed_memory()  # (as the training benchmarks: no page faults on each output)
    q, k, v, g = attention_inputs(*args.shape)
    scale = np.float32(1 / np.sqrt(args.shape[-1]))
    out, lse = attention32.flash_forward(q, k, v, None, scale, args.causal)
    passes = {"forward": lambda: attention32.flash_forward(q, k, v, None, scale, args.causal),
              "backward": lambda: attention32.flash_backward(g, q, k, v, out, lse, None, scale, args.causal)}
    times = {(name, loops): [] for name in passes for loops in ("vector", "scalar")}
    for i in range(args.repeats):
        for loops in ("vector", "scalar") if i % 2 == 0 else ("scalar", "vector"):
            for name, fn in passes.items():
                if loops == "scalar":
                    with attention32.scalar_loops():
                        times[name, loops].append(cpu_seconds(fn, 10))
                else:
                    times[name, loops].append(cpu_seconds(fn, 10))
    print(f"flash attention {'x'.join(map(str, args.shape))}, causal={args.causal}, float32, "
          f"{ml.parallel.num_threads()} thread(s), median CPU time of {args.repeats} rounds:")
    for name in passes:
        vector, scalar = (statistics.median(times[name, loops]) for loops in ("vector", "scalar"))
        print(f"  {name:<9} scalar loops {scalar * 1e3:7.3f} ms   vector loops {vector * 1e3:7.3f} ms   "
              f"ratio {vector / scalar:.3f}")


if __name__ == "__main__":
    main()
