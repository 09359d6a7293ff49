"""Round 26: SLEEF's ldexp2kf clip, written so that no vector lane underflows.

float32_kernels.c's ``scale_by_pow2`` (x 2^k, k clipped to [-150, 150]) was written as nested ternaries; GCC turned
each case into its own constant products, computed in every AVX-512 lane, and x 2^-75 2^-75 underflowed in every
vector: a microcode assist per vector. ``ml_exp`` of 704K floats took 2.3 ms instead of ~0.3 (every exp-based
kernel: exp, sigmoid, silu, SwiGLU, cross-entropy's softmax), a LoRA step's SwiGLU forward 1.65 ms a call. The clip
is now a max then a min, the same values. These tests pin the values at the clip's edges and the cost."""
import time

import numpy as np
import pytest

from minilora import float32_math

pytestmark = pytest.mark.skipif(float32_math._native_library() is None, reason="no C compiler: the NumPy port runs")


def _edges():
    """Every float32 from -105 to -102 and from 87 to 101 (q = round(x / ln 2) crosses -150 and 127..150 there),
    every 7th float between, and the specials."""
    lo, hi = np.float32(-105).view(np.uint32), np.float32(-102).view(np.uint32)
    below = np.arange(hi, lo + 1, dtype=np.uint32).view(np.float32)  # (negative floats: bits grow away from 0)
    above = np.arange(np.float32(87).view(np.uint32), np.float32(101).view(np.uint32), dtype=np.uint32).view(np.float32)
    between = np.arange(np.float32(0.5).view(np.uint32), np.float32(87).view(np.uint32), 7, dtype=np.uint32)
    between = between.view(np.float32)
    specials = np.array([np.nan, -np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-45, -1e-45, 3.4e38, -3.4e38], np.float32)
    return np.concatenate([below, above, between, -between, specials])


@pytest.mark.parametrize("name", ["exp", "sigmoid", "expm1"])
def test_exp_kernels_at_the_clip_edges_are_the_ports_bits(name):
    x = _edges()
    with np.errstate(all="ignore"):
        compiled = float32_math.vectorized(name, x) if name != "sigmoid" else float32_math.sigmoid(x)
        with float32_math.numpy_port():
            port = float32_math.vectorized(name, x) if name != "sigmoid" else float32_math.sigmoid(x)
    differ = compiled.view(np.uint32) != port.view(np.uint32)
    assert not differ.any(), f"{differ.sum()} differ, e.g. at x = {x[differ][:5]}"


def test_compiled_exp_costs_about_numpys():
    """CPU time of this thread (not wall time: another process's load does not count), the best of 7: ml_exp took
    ~7x NumPy's exp with the assists, ~1.3x without (2 vCPUs of an Intel Xeon, AVX-512)."""
    library = float32_math._native_library()
    x = np.random.default_rng(0).uniform(-3, 3, 65536).astype(np.float32)
    out = np.empty_like(x)

    def cost(fn):
        best = float("inf")
        for _ in range(7):
            start = time.thread_time()
            for _ in range(20):
                fn()
            best = min(best, time.thread_time() - start)
        return best
    compiled = cost(lambda: library.ml_exp(x.ctypes.data, out.ctypes.data, x.size))
    numpy = cost(lambda: np.exp(x, out=out))
    assert compiled < 3.5 * numpy, f"ml_exp {compiled * 1e3:.2f} ms, NumPy's exp {numpy * 1e3:.2f} ms"
