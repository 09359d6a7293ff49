"""Round 24: RoPE's float32 backward in one compiled pass (float32_math.rotary_backward), as its forward (round 23).

The gradient must keep the bits of the NumPy passes it replaces (``g * cos + R^T (g * sin)``, a NaN's sign
included), which are torch's autograd's through transformers' ``q * cos + rotate_half(q) * sin``; a Llama's
gradient (a transposed [B, T, H, D] view, broadcast tables) must reach it. A LoRA step's [8, 4, 128, 64] ran
whole (handing half of it to a Python helper cost more than it saved); since round 26 it splits in gemm_pool's C
threads (a hand-over of microseconds), one call that cuts the batch itself, as the forward.
"""
import threading

import numpy as np
import pytest

import minilora as ml
from minilora import float32_math
from minilora.ops import nn

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.skipif(not float32_math.native_available(), reason="no compiled kernels here")

from test_threads_r23 import _bits, _llama_q, pool_blocks, threads_calling  # noqa: E402,F401  (a Llama's q layout
#                        with NaN, inf, -0; bit patterns; the C threads' blocks; the threads a kernel ran on)


@pytest.fixture
def backward_calls(monkeypatch):
    """The threads that ran ``float32_math.rotary_backward`` on blocks, one entry per call."""
    return threads_calling(monkeypatch, "rotary_backward")


def _numpy_passes(g, cos, sin):
    out = np.empty_like(g)
    nn._rotate_back_rows(g, np.broadcast_to(cos, g.shape), np.broadcast_to(sin, g.shape), out)
    return out


def _gradient(q, cos, sin, g):
    """x.grad of minilora's rotary_embedding given the output's gradient ``g``."""
    x = ml.tensor(np.ascontiguousarray(q), requires_grad=True)
    ml.ops.nn.rotary_embedding(x, cos, sin).backward(ml.tensor(g))
    return x.grad.numpy()


def test_llama_gradient_runs_compiled_with_the_numpy_passes_bits(backward_calls):
    g, cos, sin = _llama_q(2, 16, 4, 64, seed=4)  # the gradient in a Llama's layout, NaN, inf and -0 in it
    out = np.empty_like(g)
    assert float32_math.rotary_compiles(g, np.broadcast_to(cos, g.shape), np.broadcast_to(sin, g.shape), out)
    grad = _gradient(g, cos, sin, g)
    assert backward_calls  # the compiled pass ran
    assert np.array_equal(_bits(grad), _bits(_numpy_passes(np.ascontiguousarray(g), cos, sin)))


def test_gradient_is_torchs(backward_calls):
    q, cos, sin = _llama_q(2, 32, 4, 64, seed=5)
    q, g = (np.nan_to_num(a, nan=0.25, neginf=-3.0) for a in (q, _llama_q(2, 32, 4, 64, seed=6)[0]))
    grad = _gradient(q, cos, sin, np.ascontiguousarray(g))
    assert backward_calls
    tq = torch.from_numpy(np.ascontiguousarray(q)).requires_grad_()
    half = q.shape[-1] // 2
    rotated = torch.cat((-tq[..., half:], tq[..., :half]), dim=-1)
    (tq * torch.from_numpy(cos) + rotated * torch.from_numpy(sin)).backward(torch.from_numpy(np.ascontiguousarray(g)))
    assert np.array_equal(_bits(grad), _bits(tq.grad.numpy()))


def test_a_lora_steps_gradient_splits_in_the_c_threads(backward_calls, pool_blocks):
    before = ml.parallel.num_threads()
    ml.parallel.set_num_threads(2)
    try:
        g, cos, sin = _llama_q(8, 128, 4, 64, seed=7)  # benchmarks/lora_step.py's q: 262K elements
        grad = _gradient(g, cos, sin, g)
    finally:
        ml.parallel.set_num_threads(before)
    assert backward_calls == [threading.get_ident()] and pool_blocks == [2, 2]  # one call, cut in 2 in C (and the
    #                                                                            forward before it)
    assert np.array_equal(_bits(grad), _bits(_numpy_passes(np.ascontiguousarray(g), cos, sin)))


def test_uneven_blocks_side_by_side_keep_the_bits(split_into_blocks, backward_calls, pool_blocks):
    g, cos, sin = _llama_q(7, 32, 4, 64, seed=8)
    expected = _bits(_numpy_passes(np.ascontiguousarray(g), cos, sin))
    for _ in range(10):  # 3 uneven blocks on 3 threads each time: every block writes its own rows only
        assert np.array_equal(_bits(_gradient(g, cos, sin, g)), expected)
    assert len(backward_calls) == 10 and pool_blocks == [3] * 20  # (the forwards and the backwards)


def test_what_the_kernel_does_not_take_runs_numpys_passes(backward_calls):
    g, cos, sin = _llama_q(2, 16, 4, 64, seed=9)
    x = ml.tensor(np.ascontiguousarray(g), requires_grad=True)
    ml.ops.nn.rotary_embedding(x, cos, sin).sum().backward()  # a broadcast gradient (step 0): NumPy's passes
    assert not backward_calls
    assert np.array_equal(_bits(x.grad.numpy()), _bits(_numpy_passes(np.ones_like(g), cos, sin)))
