"""How long do torch's float64 SLEEF kernels take in minilora?  (round 28: compiled, where round 27 ported them to NumPy)

    python benchmarks/float64_kernels.py [names...]       # the compiled kernels (float32_kernels.c's ml_sleef64...)
    MINILORA_NATIVE=0 python benchmarks/float64_kernels.py  # the NumPy ports (the same bits)

Each row: the best of 7 calls of one float64 op on a million elements (inputs where the op is finite), milliseconds.
Round 28 on 2 busy cores (load ~9), before -> after: log1p 101 -> 9.5, expm1 179 -> 14, exp2 69 -> 8.7,
sinh 217 -> 17, atan2 148 -> 14, hypot 103 -> 11, pow 327 -> 36, mish 345 -> 40, gelu_tanh 239 -> 32,
softplus 117 -> 28, logaddexp 119 -> 36 (atanh 1.5 -> 18: NumPy's arctanh, 0.19% of elements off, became SLEEF's).
"""
import sys
import time

import numpy as np

import minilora as ml

F = ml.nn.functional


def cases():
    rng = np.random.default_rng(0)
    x = ml.tensor(rng.uniform(-3, 3, 1_000_000))
    unit = ml.tensor(rng.uniform(-0.99, 0.99, 1_000_000))
    positive = ml.tensor(rng.uniform(0.1, 3, 1_000_000))
    return {"log1p": lambda: ml.log1p(positive), "expm1": lambda: ml.expm1(x), "exp2": lambda: ml.exp2(x),
            "sinh": lambda: ml.sinh(x), "cosh": lambda: ml.cosh(x), "atanh": lambda: ml.atanh(unit),
            "atan2": lambda: ml.atan2(x, positive), "hypot": lambda: ml.hypot(x, positive),
            "pow": lambda: ml.pow(positive, x), "mish": lambda: F.mish(x), "gelu": lambda: F.gelu(x),
            "gelu_tanh": lambda: F.gelu(x, approximate="tanh"), "softplus": lambda: F.softplus(x),
            "logaddexp": lambda: ml.logaddexp(x, positive)}


def best_of(fn, runs=7):
    fn()  # (warm: the compiled library loaded, caches filled)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main(names):
    for name, fn in cases().items():
        if not names or name in names:
            print(f"{name:10s} {1000 * best_of(fn):8.1f} ms", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
