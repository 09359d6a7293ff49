"""Sweep: Linear layers of the tutorials' shapes (MNIST, a small Llama, hidden 4096), forward and the three gradients
(input, weight, bias), float32 and float64, minilora against torch with both on 1 and on 2 threads. Prints how many
of the tensors differ in any bit. Run: ``PYTHONPATH=. python tests/mkl_threads_sweep.py`` (a few minutes on 2 cores).

Round 30 (2 vCPUs of an Intel Xeon, MKL 2024.2, torch 2.13): see minilora/blas.py's ``_mkl_library``."""
import sys

import numpy as np
import torch

import minilora as ml

# (rows, in_features, out_features)
MNIST = [(rows, i, o) for rows in (10, 16, 64, 128) for i, o in ((784, 256), (256, 10), (784, 128), (128, 10))]
LLAMA = [(rows, i, o) for rows in (16, 128, 512, 1024) for i, o in ((256, 256), (256, 688), (688, 256), (256, 64))]
WIDE = [(rows, i, o) for rows in (8, 16, 64) for i, o in ((4096, 4096), (4096, 1024), (1024, 4096))]


def tensors(module, x, w, b, g):
    """Linear's output and its gradients of input, weight and bias, as NumPy arrays."""
    tx, tw, tb = (module.tensor(a, requires_grad=True) for a in (x, w, b))
    y = module.nn.functional.linear(tx, tw, tb)
    y.backward(module.tensor(g))
    return [t.detach().numpy() if hasattr(t, "detach") else t.numpy() for t in (y, tx.grad, tw.grad, tb.grad)]


def sweep(threads, dtype, shapes):
    torch.set_num_threads(threads)
    ml.parallel.set_num_threads(threads)
    rng = np.random.default_rng(0)
    differing, where = 0, []
    for rows, fan_in, fan_out in shapes:
        x = rng.standard_normal((rows, fan_in)).astype(dtype)
        w, b = rng.standard_normal((fan_out, fan_in)).astype(dtype), rng.standard_normal(fan_out).astype(dtype)
        g = rng.standard_normal((rows, fan_out)).astype(dtype)
        pairs = zip(tensors(torch, x, w, b, g), tensors(ml, x, w, b, g))
        bad = [name for name, (t, m) in zip(("y", "dx", "dw", "db"), pairs) if not np.array_equal(t, m)]
        differing += len(bad)
        if bad:
            where.append(f"{rows}x{fan_in}->{fan_out}:{','.join(bad)}")
    return differing, where


if __name__ == "__main__":
    shapes = MNIST + LLAMA + WIDE
    for threads in (1, 2):
        for dtype in (np.float32, np.float64):
            differing, where = sweep(threads, dtype, shapes)
            print(f"{threads} thread(s) {np.dtype(dtype).name}: {differing} of {4 * len(shapes)} tensors differ"
                  + ("  " + " ".join(where) if "-v" in sys.argv else ""), flush=True)
