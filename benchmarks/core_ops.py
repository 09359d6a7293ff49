"""Is minilora's NumPy core as fast as PyTorch eager on this CPU?  (issue 2, item 9)

    python benchmarks/core_ops.py                      # both benchmarks, 2 threads
    python benchmarks/core_ops.py --only mlp --repeats 21

(a) ``overhead``: 10,000 small elementwise ops with autograd (forward, then one backward through all
    of them). The arrays have 16 elements, so this measures the per-op cost of the Python machinery
    (``Function.apply``, ``Tensor._make``, the backward engine) against PyTorch's C++ dispatcher.
(b) ``mlp``: one training step (zero_grad, forward, backward, AdamW step) of a 4-block pre-norm MLP,
    ``x + fc2(gelu(fc1(layer_norm(x))))`` with d=256, hidden 1024, batch*seq = 1024 rows, exact
    (erf) GELU, then a LayerNorm + Linear head and cross-entropy. Same float32 weights and data in
    both; the first step's losses must agree before anything is timed.

How it is fair:

* Each framework runs in its own process, as a user would run it. (In one process, Python's
  garbage collector would walk the ~150,000 objects that importing torch leaves behind every time
  minilora's graph -- Python objects, unlike torch's C++ graph -- triggers a full collection.)
* Same thread count: ``MINILORA_NUM_THREADS`` (minilora's threads; its BLAS runs single-threaded
  inside them, see minilora/parallel.py) and ``torch.set_num_threads``.
* Interleaved: minilora, torch, minilora, torch, ... one timed run at a time while the other process
  waits, so noise from other work on the machine hits both alike; a short pause before each run lets
  the waiting process's thread pools (OpenBLAS, OpenMP) go idle instead of spinning on the cores the
  running one needs. Medians, and their ratio minilora / torch (<= 1.0: minilora is no slower).
"""
import argparse
import gc
import math
import multiprocessing
import os
import statistics
import time

THREADS = int(os.environ.get("MINILORA_BENCH_THREADS", "2"))
os.environ["MINILORA_NUM_THREADS"] = str(THREADS)  # read when minilora is imported

N_OPS, OVERHEAD_SIZE = 10_000, 16
D, HIDDEN, ROWS, BLOCKS = 256, 1024, 1024, 4
LR, WEIGHT_DECAY = 1e-3, 0.01
PAUSE = 0.3  # seconds between timed runs (OpenBLAS workers spin ~0.1 s after a GEMM before sleeping)


# ---- (a) per-op overhead: each setup returns run(), which does the work once ---------------------
def overhead_inputs():
    import numpy as np
    return np.random.default_rng(0).standard_normal((2, OVERHEAD_SIZE)).astype(np.float32)


def chain_step(x, w):
    """run(): N_OPS elementwise ops, four at a time, then one backward through all of them (the same
    code drives both frameworks' tensors). Returns the forward value, to compare the two."""
    def run():
        y = x
        for _ in range(N_OPS // 4):
            y = ((y * w + w).tanh()) - 0.5
        out = y.sum()
        out.backward()
        return out.item()
    return run


def overhead_minilora():
    import minilora as ml
    ml.parallel.keep_freed_memory()  # as `minilora train` does (minilora/parallel.py)
    return chain_step(*(ml.tensor(a, requires_grad=True) for a in overhead_inputs()))


def overhead_torch():
    import torch
    torch.set_num_threads(THREADS)
    return chain_step(*(torch.tensor(a, requires_grad=True) for a in overhead_inputs()))


# ---- (b) MLP training step -----------------------------------------------------------------------
def mlp_weights():
    """Initial weights as NumPy float32 arrays under the (PyTorch) parameter names both models use;
    Linear layers get PyTorch's default init U(-1/sqrt(in), 1/sqrt(in))."""
    import numpy as np
    rng = np.random.default_rng(0)
    weights = {}

    def linear(name, fan_in, fan_out):
        bound = 1 / math.sqrt(fan_in)
        weights[f"{name}.weight"] = rng.uniform(-bound, bound, (fan_out, fan_in)).astype(np.float32)
        weights[f"{name}.bias"] = rng.uniform(-bound, bound, fan_out).astype(np.float32)

    def layer_norm(name):
        weights[f"{name}.weight"] = np.ones(D, np.float32)
        weights[f"{name}.bias"] = np.zeros(D, np.float32)

    for i in range(BLOCKS):
        layer_norm(f"blocks.{i}.norm")
        linear(f"blocks.{i}.fc1", D, HIDDEN)
        linear(f"blocks.{i}.fc2", HIDDEN, D)
    layer_norm("norm")
    linear("head", D, D)
    return weights


def mlp_data():
    import numpy as np
    rng = np.random.default_rng(1)
    return rng.standard_normal((ROWS, D)).astype(np.float32), rng.integers(0, D, ROWS)


def build_mlp(nn, gelu):
    """The network, written once for both: ``minilora.nn`` mirrors ``torch.nn``."""

    class Block(nn.Module):
        """Pre-norm residual MLP block: ``x + fc2(gelu(fc1(norm(x))))``."""

        def __init__(self):
            super().__init__()
            self.norm, self.fc1, self.fc2 = nn.LayerNorm(D), nn.Linear(D, HIDDEN), nn.Linear(HIDDEN, D)

        def forward(self, x):
            return x + self.fc2(gelu(self.fc1(self.norm(x))))

    class MLP(nn.Module):
        def __init__(self):
            super().__init__()
            self.blocks = nn.ModuleList([Block() for _ in range(BLOCKS)])
            self.norm, self.head = nn.LayerNorm(D), nn.Linear(D, D)

        def forward(self, x):
            for block in self.blocks:
                x = block(x)
            return self.head(self.norm(x))

    return MLP()


def training_step(model, opt, cross_entropy, x, targets):
    """run(): zero_grad, forward, loss, backward, optimizer step -- the same calls in both."""
    def run():
        opt.zero_grad()
        loss = cross_entropy(model(x), targets)
        loss.backward()
        opt.step()
        return loss.item()
    return run


def mlp_minilora():
    import minilora as ml
    from minilora import nn, ops
    from minilora.optim import AdamW
    ml.parallel.keep_freed_memory()  # as `minilora train` does (minilora/parallel.py)
    model = build_mlp(nn, ops.gelu)
    model.load_state_dict(mlp_weights())
    opt = AdamW(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    xs, ys = mlp_data()
    return training_step(model, opt, ops.cross_entropy, ml.tensor(xs), ml.tensor(ys))


def mlp_torch():
    import torch
    from torch import nn
    torch.set_num_threads(THREADS)
    model = build_mlp(nn, nn.functional.gelu)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in mlp_weights().items()})
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)  # its defaults
    xs, ys = mlp_data()
    return training_step(model, opt, nn.functional.cross_entropy, torch.from_numpy(xs),
                         torch.from_numpy(ys))


SETUPS = {("overhead", "minilora"): overhead_minilora, ("overhead", "torch"): overhead_torch,
          ("mlp", "minilora"): mlp_minilora, ("mlp", "torch"): mlp_torch}


# ---- timing: one worker process per framework, driven in turns -----------------------------------
def worker(conn, bench, framework):
    """Build one benchmark for one framework; send the first run's result, then time one run per
    request until told to stop."""
    run = SETUPS[bench, framework]()
    conn.send(run())
    while conn.recv():
        # Every timed run starts from the same garbage-collector state. Without this, Python's full
        # collection falls on every other run (the overhead chain makes ~10^5 objects a run), the times
        # alternate between two levels ~15% apart, and a median of 15 picks whichever level got 8 runs
        # -- decided by how many objects the imports made, not by the code being timed.
        gc.collect()
        start = time.perf_counter()
        run()
        conn.send(time.perf_counter() - start)


def compare(bench, repeats, warmup=2):
    """Time ``bench`` in both frameworks, interleaved; print medians and their ratio."""
    spawn = multiprocessing.get_context("spawn")  # fresh interpreters: minilora's never loads torch
    workers = {}
    for framework in ("minilora", "torch"):
        conn, child_conn = spawn.Pipe()
        proc = spawn.Process(target=worker, args=(child_conn, bench, framework), daemon=True)
        proc.start()
        child_conn.close()  # the child's end: if the child dies, recv() here raises EOFError
        workers[framework] = (proc, conn)
    try:
        first = {name: conn.recv() for name, (_, conn) in workers.items()}
        if not math.isclose(first["minilora"], first["torch"], rel_tol=1e-4):
            raise SystemExit(f"{bench}: the frameworks disagree before timing: {first}")
        times = {name: [] for name in workers}
        for i in range(warmup + repeats):
            for name, (_, conn) in workers.items():
                time.sleep(PAUSE)  # let the other framework's idle worker threads stop spinning
                conn.send(True)
                seconds = conn.recv()
                if i >= warmup:
                    times[name].append(seconds)
    finally:
        for proc, conn in workers.values():
            try:
                conn.send(False)
            except OSError:  # that worker is gone already (its traceback is on stderr)
                pass
            proc.join(timeout=10)
    ours, theirs = statistics.median(times["minilora"]), statistics.median(times["torch"])
    print(f"{bench:<9} minilora {ours * 1e3:8.2f} ms   torch {theirs * 1e3:8.2f} ms   "
          f"median ratio minilora/torch {ours / theirs:5.2f}   ({repeats} runs each)", flush=True)
    return ours / theirs


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["overhead", "mlp"], help="run one benchmark")
    parser.add_argument("--repeats", type=int, default=15, help="timed runs of each (median taken)")
    args = parser.parse_args(argv)
    print(f"threads: {THREADS} (MINILORA_NUM_THREADS={THREADS}, torch.set_num_threads({THREADS})); "
          f"float32")
    for bench in ("overhead", "mlp"):
        if args.only in (None, bench):
            compare(bench, args.repeats)


if __name__ == "__main__":
    main()
