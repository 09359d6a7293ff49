"""Round 13: the cost of the fences' read checks, and ~20 more kernels written as people publish them.

Read checks: round 12 compiled GCC's inline kernel-address checks into every fast build, so that a read of the
bytes still mapped around an argument array's fenced copy (x[-1], or the < 16 bytes past an odd-sized array) is a
KernelFault at its line.  Measured (rt.sh, interleaved, /tmp/h180/bench_readcheck.py): siboehm's register-tiled
SGEMMs 4.2-4.3x slower, FlashAttention 1.7x, the naive SGEMM 1.5x, layernorm and GELU within noise.  So they are
opt-in, as compute-sanitizer's memcheck is: ``memcheck=True`` on a launch, or ``$MINILORA_EMU_MEMCHECK=1``; the
public-kernel test files (round 11, 12 and this one) run under it.  Without it the guard pages still name every
access 16 bytes or more past an array and every write next to one (found after the launch).

tests/emu_kernels/r13/*.cu: the kernels, unedited, against NumPy float64 references on ragged sizes.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest

from minilora import emulator as emu
from minilora.emulator import KernelFault, RawKernel, RawModule

R13 = Path(__file__).parent / "emu_kernels" / "r13"
pytestmark = pytest.mark.skipif(not emu.is_available(), reason="the CUDA emulator needs g++")
i32, f32 = np.int32, np.float32

SHIFT = r'''
extern "C" __global__ void shift_left(float* y, const float* x, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] = x[i - 1];
}
'''


def randn(*shape, dtype=np.float32, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


def test_read_checks_are_opt_in_as_compute_sanitizers_memcheck(monkeypatch):
    monkeypatch.delenv("MINILORA_EMU_MEMCHECK", raising=False)
    kernel = RawKernel(SHIFT, "shift_left")
    x, y = randn(64), np.zeros(64, f32)
    kernel((1,), (64,), (y, x, i32(64)))  # x[-1]: the fill pattern before the copy, read silently as on a GPU
    np.testing.assert_array_equal(y[1:], x[:-1])
    with pytest.raises(KernelFault, match=r"thread \(0,0,0\) .*invalid memory access: a 4-byte read .*4 bytes "
                                          r"before the start of argument 1 \('x'\)"):
        kernel((1,), (64,), (y, x, i32(64)), memcheck=True)
    monkeypatch.setenv("MINILORA_EMU_MEMCHECK", "1")
    with pytest.raises(KernelFault, match=r"4 bytes before the start of argument 1 \('x'\)"):
        kernel((1,), (64,), (y, x, i32(64)))
    kernel((1,), (64,), (y, x, i32(64)), memcheck=False)
    monkeypatch.setenv("MINILORA_EMU_MEMCHECK", "yes")
    with pytest.raises(ValueError, match="MINILORA_EMU_MEMCHECK must be 1 .* or 0, got 'yes'"):
        kernel((1,), (64,), (y, x, i32(64)))
