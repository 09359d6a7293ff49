"""Llama's MLP activation in torch's float32 bits: transformers' LlamaMLP computes
``down_proj(act_fn(gate_proj(x)) * up_proj(x))`` with ``act_fn = nn.SiLU`` (torch's silu kernel: SLEEF's exp in
the vectorized body, C's in the scalar tail), then mul; minilora fuses the two into ``ops.swiglu``. Its forward
took NumPy's exp (16-17% of the elements differed from torch's, and 14% / 31% of the gate / up gradients);
now silu is torch's kernel (compiled, or the NumPy port without a compiler: the same bits), rounded, times up,
and the backward rounds as torch's autograd of mul then silu. Also silu's backward with a broadcast incoming
gradient (``y.sum().backward()``) runs the compiled kernel. torch is the oracle, in this process: minilora
follows the same ATEN_CPU_CAPABILITY rule (float32_math.torch_cpu_capability) for its lanes and fused
multiply-adds. Under torch's "default" build silu itself is not reproduced (C's expf taken as correctly
rounded: ~0.03% of silu's elements differ), so the comparisons skip there.
"""
import contextlib

import numpy as np
import pytest

import minilora as ml
from minilora import float32_math, native

torch = pytest.importorskip("torch")
F = torch.nn.functional

pytestmark = pytest.mark.skipif(float32_math.CPU_CAPABILITY == "default",
                                reason="torch's default build: silu's C expf on every element, not reproduced")
needs_native = pytest.mark.skipif(not float32_math.native_available(),
                                  reason=f"no compiled kernels here: {native.why_unavailable}")
HARD = [np.inf, -np.inf, 0.0, -0.0, 1e-45, -1e-45, 88.72, -88.72, 100.0, -100.0, 104.0, -104.0, 3e38, -3e38]


def _gate_up_grad(shape, seed):
    rng = np.random.default_rng(seed)
    gate = (rng.standard_normal(shape) * 6).astype(np.float32)
    gate.reshape(-1)[:len(HARD)] = HARD[:gate.size]
    up, grad = (rng.standard_normal(shape).astype(np.float32) for _ in range(2))
    return gate, up, grad


def _minilora(gate, up, grad):
    g, u = ml.tensor(gate, requires_grad=True), ml.tensor(up, requires_grad=True)
    with np.errstate(all="ignore"):
        y = ml.ops.swiglu(g, u)
        y.backward(ml.tensor(grad))
    return y.detach().numpy(), g.grad.numpy(), u.grad.numpy()


def _torch(gate, up, grad):
    g, u = torch.tensor(gate, requires_grad=True), torch.tensor(up, requires_grad=True)
    y = F.silu(g) * u  # transformers' act_fn(gate_proj(x)) * up_proj(x)
    y.backward(torch.tensor(grad))
    return y.detach().numpy(), g.grad.numpy(), u.grad.numpy()


def _assert_same_bits(ours, torchs):
    for name, mine, theirs in zip(("silu(gate) * up", "d gate", "d up"), ours, torchs):
        same = (mine.view(np.uint32) == theirs.view(np.uint32)) | (np.isnan(mine) & np.isnan(theirs))
        assert same.all(), f"{name}: {(~same).sum()} of {same.size} differ from torch's"


@contextlib.contextmanager
def _threads(count):
    before = (ml.get_num_threads(), torch.get_num_threads())
    ml.set_num_threads(count)
    torch.set_num_threads(count)
    try:
        yield
    finally:
        ml.set_num_threads(before[0])
        torch.set_num_threads(before[1])


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "numpy port"])
def test_swiglu_forward_and_backward_are_torchs(compiled, threads):
    """Short rows (all scalar tail), a tail after the vectors, and 70001 elements: on 2 threads two chunks,
    each with its own scalar tail. The NumPy port (no compiler, MINILORA_NATIVE=0) gives the same bits."""
    if compiled and not float32_math.native_available():
        pytest.skip(f"no compiled kernels here: {native.why_unavailable}")
    with _threads(threads), (contextlib.nullcontext() if compiled else float32_math.numpy_port()):
        for shape in [(3, 11), (4097,), (70001,)]:
            arrays = _gate_up_grad(shape, seed=shape[0])
            _assert_same_bits(_minilora(*arrays), _torch(*arrays))


def test_transposed_gate_and_up():
    """silu runs over gate in its memory order (its scalar tail there): a transposed gate, up and gradient."""
    gate, up, grad = (a.T for a in _gate_up_grad((37, 45), seed=7))
    _assert_same_bits(_minilora(gate, up, grad), _torch(gate, up, grad))


@pytest.mark.parametrize("shape", [(), (0,), (2, 0, 3), (1,)])
def test_zero_d_and_empty(shape):
    """A 0-d gate keeps its shape through forward and backward (the kernel's flat copies are 1-d)."""
    arrays = _gate_up_grad(shape, seed=1)
    ours = _minilora(*arrays)
    assert [a.shape for a in ours] == [shape] * 3
    _assert_same_bits(ours, _torch(*arrays))


def test_llama_mlp_activation_is_transformers():
    """LlamaMLP's ``act_fn(gate_proj(x)) * up_proj(x)`` (down_proj's input), the projections exact in any
    summation order (weights and inputs on a coarse grid), against transformers' forward written in torch."""
    config = ml.models.LlamaConfig(hidden_size=64, intermediate_size=172, num_hidden_layers=1, num_attention_heads=4)
    mlp = ml.nn.llama.LlamaMLP(config, dtype=ml.float32)
    rng = np.random.default_rng(3)
    for linear in (mlp.gate_proj, mlp.up_proj):
        linear.weight.data = ml.tensor(rng.integers(-8, 9, (172, 64)).astype(np.float32) / 64)
    x = (rng.integers(-16, 17, (2, 9, 64)) / 8).astype(np.float32)
    seen = []
    mlp.down_proj.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach().numpy()))
    mlp(ml.tensor(x))
    gate_t = torch.from_numpy(x) @ torch.from_numpy(mlp.gate_proj.weight.numpy()).T
    up_t = torch.from_numpy(x) @ torch.from_numpy(mlp.up_proj.weight.numpy()).T
    expected = (torch.nn.SiLU()(gate_t) * up_t).numpy()
    np.testing.assert_array_equal(seen[0].view(np.uint32), expected.view(np.uint32))


@needs_native
def test_broadcast_gradient_runs_compiled(monkeypatch):
    """``y.sum().backward()`` hands silu's backward a broadcast of ones: it is copied dense and the compiled
    kernel runs (it ran the NumPy chain, float64 blocks for the fused multiply-add); torch's bits either way."""
    def no_numpy_chain(*args):
        raise AssertionError("the NumPy chain ran")
    monkeypatch.setattr(float32_math, "fused_multiply_add_block", no_numpy_chain)
    gate, up, _ = _gate_up_grad((64, 1000), seed=11)
    for ours, theirs in ((lambda g, u: ml.nn.functional.silu(g), lambda g, u: F.silu(g)),
                         (ml.ops.swiglu, lambda g, u: F.silu(g) * u)):
        gm, um = ml.tensor(gate, requires_grad=True), ml.tensor(up)
        gt, ut = torch.tensor(gate, requires_grad=True), torch.tensor(up)
        with np.errstate(all="ignore"):
            ours(gm, um).sum().backward()
        theirs(gt, ut).sum().backward()
        np.testing.assert_array_equal(gm.grad.numpy().view(np.uint32), gt.grad.numpy().view(np.uint32))


@pytest.mark.parametrize("up_kind", ["float64", "broadcast row", "python number"])
def test_mixed_operands_promote_and_broadcast_as_silu_times_up(up_kind):
    """ops.swiglu with an up of another dtype or shape is F.silu(gate) * up: the product promotes (float32 gate,
    float64 up -> float64) and broadcasts. The fused node refused other shapes and returned float32 silently."""
    from minilora.ops.nn import swiglu
    rng = np.random.default_rng(3)
    gate = rng.standard_normal((3, 5)).astype(np.float32)
    up = {"float64": rng.standard_normal((3, 5)), "broadcast row": rng.standard_normal(5).astype(np.float32),
          "python number": 1.5}[up_kind]
    ours = swiglu(ml.tensor(gate), ml.tensor(up) if isinstance(up, np.ndarray) else up)
    theirs = F.silu(torch.tensor(gate)) * (torch.tensor(up) if isinstance(up, np.ndarray) else up)
    assert str(ours.dtype).split(".")[-1] == str(theirs.dtype).split(".")[-1]
    np.testing.assert_array_equal(ours.numpy(), theirs.numpy())
