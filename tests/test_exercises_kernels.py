"""Exercise 5.1 (05_cuda_kernels): the naive fused LoRA forward kernel, on the emulator (and a GPU).

The AdamW kernel (exercise 5.2) is tested beside the NumPy AdamW in test_exercises_optim.py.
Run one exercise:  python -m pytest -m ex5_1 tests
"""
import numpy as np
import pytest

from minilora import kernels
from minilora.testing import assert_close


@pytest.mark.ex5_1
@pytest.mark.parametrize("with_bias", [True, False])
def test_lora_forward_v1(rng, kernel_device, with_bias):
    M, N, K, r, s = 17, 5, 7, 3, 0.75  # ragged: more than one 16-row block, not multiples of anything
    X, W0, A, B = (rng.standard_normal(shape).astype(np.float32) for shape in ((M, K), (N, K), (r, K), (N, r)))
    bias = rng.standard_normal(N).astype(np.float32) if with_bias else None
    xp = kernel_device.xp
    with kernels.checking():  # outputs start as NaN: an element the kernel forgets to write shows
        Y, U = kernels.lora_forward(*(xp.asarray(a) for a in (X, W0, A, B)), s,
                                    bias=None if bias is None else xp.asarray(bias),
                                    device=kernel_device, version="v1")
    X64, W64, A64, B64 = (a.astype(np.float64) for a in (X, W0, A, B))
    expected = X64 @ W64.T + s * (X64 @ A64.T) @ B64.T + (0.0 if bias is None else bias)
    Y = Y if isinstance(Y, np.ndarray) else Y.get()
    assert_close(Y, expected, rtol=1e-5, atol=1e-5, name="Y")
