"""Is minilora as quick as PyTorch eager on micrograd-sized tensors?  (round 12, the tiny-op path)

    python benchmarks/tiny_ops.py                      # every row, 1 thread (MINILORA_BENCH_THREADS)
    python benchmarks/tiny_ops.py --only chain mlp32 --repeats 21

Learners' first code moves a few floats: a scalar chain, a 2 -> 16 -> 16 -> 1 MLP on 32 points, exercises
on 3x4 tensors. There the per-op fixed cost (Python frames, dtype and broadcast checks, float32's exactness
machinery: torch-order sums, fused multiply-adds) is the whole time. Each row times ``LOOPS`` calls of one
small thing in both frameworks and prints the ratio minilora / torch:

    mul, add, tanh, sub    one elementwise op on 8 float32 (no autograd)
    sum, mean              a whole-tensor reduction of 8 float32; sum0: ``x.sum(0)`` of 32x16 (a bias gradient)
    chain                  ``(((y * w + w).tanh()) - 0.5).sum().backward()`` on 8 float32, w requiring grad
    mlp32, mlp64           one SGD step (zero_grad, forward, MSE, backward, step) of Linear(2, 16), Tanh,
                           Linear(16, 16), Tanh, Linear(16, 1) on 32 points, float32 / float64

How it is fair: as benchmarks/core_ops.py (its ``compare`` drives the runs): each framework in its own process,
the same thread count, runs interleaved with a pause, medians; the first run's results must agree.
"""
import argparse
import os
import sys

# One thread each unless told otherwise: tensors this small never reach a parallel loop (torch's grain is 32768
# elements), and an idle OpenMP team spinning beside a busy machine only adds noise.
os.environ.setdefault("MINILORA_BENCH_THREADS", "1")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import core_ops  # noqa: E402  (its worker processes, interleaving and report)

LOOPS = 1000  # calls a timed run (tens of milliseconds): a run's milliseconds are one call's microseconds
POINTS, HIDDEN = 32, 16


def _inputs(lib, n=8, seed=0):
    import numpy as np
    rng = np.random.default_rng(seed)
    return [lib.from_numpy(rng.standard_normal(n).astype(np.float32)) for _ in range(2)]


def _looped(fn):
    """run(): ``fn`` LOOPS times; returns the sum of the first result, to compare the frameworks (a training
    step's later losses drift apart in the last bits of BLAS's sums)."""
    def run():
        first = fn()
        for _ in range(LOOPS - 1):
            fn()
        return float(first.detach().sum())
    return run


def _elementwise(op):
    def setup(lib):
        a, b = _inputs(lib)
        return _looped(lambda: op(a, b))
    return setup


def _reduction(name, shape):
    def setup(lib):
        import numpy as np
        x = lib.from_numpy(np.random.default_rng(1).standard_normal(shape).astype(np.float32))
        reduce = {"sum": lambda: x.sum(), "mean": lambda: x.mean(), "sum0": lambda: x.sum(0)}[name]
        return _looped(reduce)
    return setup


def _chain(lib):
    w, y = _inputs(lib)
    w.requires_grad_(True)

    def step():
        loss = (((y * w + w).tanh()) - 0.5).sum()
        loss.backward()
        return loss.detach()
    return _looped(step)


def _mlp(dtype_name):
    def setup(lib):
        import numpy as np
        dtype = getattr(lib, dtype_name)
        rng = np.random.default_rng(2)
        x = lib.from_numpy(rng.standard_normal((POINTS, 2))).to(dtype)
        target = lib.from_numpy(rng.standard_normal((POINTS, 1))).to(dtype)
        lib.manual_seed(0)
        nn = lib.nn
        model = nn.Sequential(nn.Linear(2, HIDDEN), nn.Tanh(), nn.Linear(HIDDEN, HIDDEN), nn.Tanh(),
                              nn.Linear(HIDDEN, 1)).to(dtype)
        opt = lib.optim.SGD(model.parameters(), lr=0.05)

        def step():
            opt.zero_grad()
            loss = nn.functional.mse_loss(model(x), target)
            loss.backward()
            opt.step()
            return loss.detach()
        # (each run continues the training: both frameworks take the same steps, so their losses stay close)
        return _looped(step)
    return setup


ROWS = {"mul": _elementwise(lambda a, b: a * b), "add": _elementwise(lambda a, b: a + b),
        "tanh": _elementwise(lambda a, b: a.tanh()), "sub": _elementwise(lambda a, b: a - 0.5),
        "sum": _reduction("sum", 8), "mean": _reduction("mean", 8), "sum0": _reduction("sum0", (POINTS, HIDDEN)),
        "chain": _chain, "mlp32": _mlp("float32"), "mlp64": _mlp("float64")}


def _framework(name):
    def setup():
        if name == "torch":
            import torch
            torch.set_num_threads(core_ops.THREADS)
            return torch
        import minilora
        return minilora
    return setup


def _register():
    """Each row as a core_ops benchmark (also in the spawned workers, which import this module first)."""
    for row, setup in ROWS.items():
        for name in ("minilora", "torch"):
            core_ops.SETUPS[row, name] = (lambda setup=setup, name=name: setup(_framework(name)()))


_register()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=list(ROWS), help="run these rows")
    parser.add_argument("--repeats", type=int, default=9, help="timed runs of each (median taken)")
    args = parser.parse_args(argv)
    print(f"threads: {core_ops.THREADS}; {LOOPS} calls a run: a run's milliseconds are one call's microseconds")
    for row in args.only or ROWS:
        core_ops.compare(row, args.repeats)


if __name__ == "__main__":
    main()
