"""The fused LoRA op ``ops.lora_linear``: forward and backward against a float64 NumPy reference on
every device, central-difference gradient checks, the dropout hash of the kernel contract, and the
promise LoRA's memory savings rest on: no gradient GEMM for the frozen W0."""
import numpy as np
import pytest

import minilora as ml
from minilora import ops
from minilora.ops.lora import LoraLinear
from minilora.testing import assert_close, grad_check

M_SHAPE, K, N, R = (2, 3), 5, 4, 2  # ragged on purpose: nothing is a multiple of a tile


def make_inputs(device, dtype=ml.float32, seed=0, bias=True, W0_trainable=False):
    rng = np.random.default_rng(seed)
    x = ml.tensor(rng.standard_normal(M_SHAPE + (K,)), dtype=dtype, device=device, requires_grad=True)
    W0 = ml.tensor(rng.standard_normal((N, K)), dtype=dtype, device=device, requires_grad=W0_trainable)
    A = ml.tensor(rng.standard_normal((R, K)), dtype=dtype, device=device, requires_grad=True)
    B = ml.tensor(rng.standard_normal((N, R)), dtype=dtype, device=device, requires_grad=True)
    b = ml.tensor(rng.standard_normal(N), dtype=dtype, device=device, requires_grad=True) if bias else None
    return x, W0, A, B, b


def reference(x, W0, A, B, b, scale, p, seed, dY):
    """The op's math spelled out in float64 NumPy (building B A is fine here: it is the reference)."""
    X = x.numpy(force=True).astype(np.float64).reshape(-1, K)
    W0, A, B = (t.numpy(force=True).astype(np.float64) for t in (W0, A, B))
    keep = ops.lora_dropout_mask(seed, X.shape[0], K, p) / (1 - p)
    Y = X @ W0.T + scale * (X * keep) @ (B @ A).T + (b.numpy(force=True) if b is not None else 0)
    dY = dY.reshape(-1, N).astype(np.float64)
    grads = {"x": dY @ W0 + scale * (dY @ B @ A) * keep,
             "A": scale * B.T @ dY.T @ (X * keep),
             "B": scale * dY.T @ (X * keep) @ A.T,
             "bias": dY.sum(axis=0)}
    return Y.reshape(M_SHAPE + (N,)), grads


@pytest.mark.parametrize("p", [0.0, 0.4])
def test_forward_and_backward_match_reference(device, p):
    x, W0, A, B, b = make_inputs(device)
    out = ops.lora_linear(x, W0, A, B, 0.75, bias=b, dropout_p=p, seed=11)
    dY = np.random.default_rng(5).standard_normal(out.shape)
    out.backward(ml.tensor(dY, dtype=ml.float32, device=device))
    Y, grads = reference(x, W0, A, B, b, 0.75, p, 11, dY)
    assert_close(out, Y, rtol=1e-5, atol=1e-5, name="Y")
    for name, t in (("x", x), ("A", A), ("B", B), ("bias", b)):
        assert_close(t.grad._array.get() if device == "cuda" else t.grad, grads[name].reshape(t.shape),
                     rtol=1e-5, atol=1e-5, name=f"d{name}")
    assert W0.grad is None  # frozen: no gradient at all


@pytest.mark.parametrize("split", [False, True], ids=["serial", "split-across-threads"])
@pytest.mark.parametrize("p", [0.0, 0.3])
def test_grad_check_float64(p, split, request):
    """Central differences agree with backward for x, A, B and bias (dropout mask fixed by the seed),
    also with the op's products split into blocks of rows across threads."""
    if split:
        request.getfixturevalue("split_into_blocks")
    x, W0, A, B, b = make_inputs("cpu", dtype=ml.float64, seed=1, W0_trainable=split)
    grad_check(lambda x, W0, A, B, b: ops.lora_linear(x, W0, A, B, 1.3, bias=b, dropout_p=p, seed=7),
               x, W0, A, B, b)


def test_trainable_W0_gets_its_gradient():
    """If a caller does make W0 trainable (full fine-tuning) its gradient is right too."""
    x, W0, A, B, b = make_inputs("cpu", dtype=ml.float64, seed=2, W0_trainable=True)
    grad_check(lambda x, W0, A, B, b: ops.lora_linear(x, W0, A, B, 0.5, bias=b), x, W0, A, B, b)


def test_profiler_shows_no_dW0_gemm():
    """Backward runs exactly the GEMMs of dX, V, dA, dB: making W0 trainable adds one M*N*K GEMM."""
    M = int(np.prod(M_SHAPE))
    lora_gemms = 2 * M * N * R * 2 + 2 * M * R * K * 2 + 2 * M * N * K  # V, dB, dA, V A, dY W0

    def backward_flops(W0_trainable):
        x, W0, A, B, b = make_inputs("cpu", W0_trainable=W0_trainable)
        out = ops.lora_linear(x, W0, A, B, 2.0, bias=b)
        with ml.profile() as prof:
            out.sum().backward()
        assert prof.calls("LoraLinear", "backward") == 1
        return prof.flops("LoraLinear", "backward")

    assert backward_flops(False) == lora_gemms
    assert backward_flops(True) == lora_gemms + 2 * M * N * K  # the dW0 GEMM LoRA never pays


def test_only_rank_r_intermediates_are_saved():
    """The node keeps X, U [M, r] and the weights: no N x K product B A is ever built or saved."""
    x, W0, A, B, b = make_inputs("cpu")
    out = ops.lora_linear(x, W0, A, B, 1.0, bias=b)
    ctx = out.grad_fn
    assert ctx.U.shape == (int(np.prod(M_SHAPE)), R)
    arrays = [v for v in vars(ctx).values() if isinstance(v, np.ndarray)]
    assert [a for a in arrays if a.shape == (N, K)] == [ctx.W0]


def test_dropout_mask_follows_the_kernel_contract():
    """The hash, recomputed with Python integers mod 2^32, gives the same bits."""
    def keep(seed, i, p):
        h = ((i * 0x9E3779B1) & 0xFFFFFFFF) ^ (seed & 0xFFFFFFFF)
        h ^= h >> 16
        h = (h * 0x85EBCA6B) & 0xFFFFFFFF
        h ^= h >> 13
        h = (h * 0xC2B2AE35) & 0xFFFFFFFF
        h ^= h >> 16
        return h >= min(int(p * 2**32), 2**32 - 1)

    seed = 2**40 + 12345  # only the low 32 bits count
    mask = ops.lora_dropout_mask(seed, 7, 9, 0.3)
    assert mask.shape == (7, 9)
    assert [bool(v) for v in mask.reshape(-1)] == [keep(seed, i, 0.3) for i in range(63)]
    big = ops.lora_dropout_mask(3, 200, 300, 0.3)
    assert abs(big.mean() - 0.7) < 0.01
    assert ops.lora_dropout_mask(3, 4, 4, 0.0).all()


def test_dropout_draws_a_fresh_mask_per_call_unless_seeded():
    x, W0, A, B, _ = make_inputs("cpu")
    a = ops.lora_linear(x, W0, A, B, 1.0, dropout_p=0.5).numpy(force=True)
    b = ops.lora_linear(x, W0, A, B, 1.0, dropout_p=0.5).numpy(force=True)
    c = ops.lora_linear(x, W0, A, B, 1.0, dropout_p=0.5, seed=4).numpy(force=True)
    d = ops.lora_linear(x, W0, A, B, 1.0, dropout_p=0.5, seed=4).numpy(force=True)
    assert not np.allclose(a, b) and np.array_equal(c, d)


def test_clear_errors():
    x, W0, A, B, b = make_inputs("cpu")
    with pytest.raises(ValueError, match=r"lora_A.weight\) has shape \(2, 4\), expected \[r, 5\]"):
        ops.lora_linear(x, W0, A[:, :4], B, 1.0)
    with pytest.raises(ValueError, match=r"B \(lora_B.weight\) has shape \(3, 2\), expected \[N, r\] = \[4, 2\]"):
        ops.lora_linear(x, W0, A, B[:3], 1.0)
    with pytest.raises(RuntimeError, match=r"mat1 and mat2 shapes cannot be multiplied \(\d+x5 and 3x4\)"):
        ops.lora_linear(x, W0[:, :3], A, B, 1.0)  # (F.linear's words: PEFT runs the base layer first)
    with pytest.raises(TypeError, match="share one dtype"):
        ops.lora_linear(x, W0, A.double(), B, 1.0)
    with pytest.raises(ValueError, match=r"dropout_p must be in \[0, 1\]"):
        ops.lora_linear(x, W0, A, B, 1.0, dropout_p=1.5)


def test_is_one_graph_node():
    x, W0, A, B, b = make_inputs("cpu")
    assert ops.lora_linear(x, W0, A, B, 1.0, bias=b).grad_fn.fn is LoraLinear
