"""Round 22's faster paths keep their bits: each new path against the reference it replaced (NumPy's port of
torch's kernel, or torch itself).

* A freed node's torch-shown graph (a LoRA Linear's, PEFT's nodes) keeps the nodes its tensors came from and makes
  the shown nodes when next_functions is asked, not at every backward.
* float32_kernels.c's pow, log, atanh and atan2 loops vectorize now (frexpf and fmodf as bit operations and
  selects; pow in three loops over a block): x ** 1.7 on 1M float32 ~34 -> ~4.3 ms on one core of a Zen 4.
  A number exponent has its own kernel, ``ml_pow_scalar`` (no array of copies of it).
* LoRA's dB, computed as (U^T dY)^T in round 22 (dY^T U since round 31: torch's orientation), handed on in C order.
"""
import importlib

import numpy as np
import pytest

import minilora as ml
from minilora import float32_math, native

SPECIAL = np.array([0, -0.0, 1, -1, 2, -2, 0.5, -0.5, 3, -3, np.inf, -np.inf, np.nan, 1e-45, -1e-45, 1e-38,
                    1.1754942e-38, 1.1754944e-38, 3.4028235e38, -3.4028235e38, 8388608, 8388609, 16777216, 16777215,
                    -16777215, 0.99999994, 1.0000001, 1.7, -1.7, 1e10, -1e10, 123.5, 2.5e-39], np.float32)


def _bit_patterns(n, seed):
    """n float32s drawn over all bit patterns (subnormals, NaNs and infinities included)."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 1 << 32, n, dtype=np.uint64).astype(np.uint32).view(np.float32)


def _compiled_and_port(fn, *args):
    if not float32_math.native_available():
        pytest.skip(f"no compiled kernels here: {native.why_unavailable}")
    with np.errstate(all="ignore"):
        compiled = fn(*args)
        with float32_math.numpy_port():
            return compiled, fn(*args)


def _same_bits(a, b):
    return a.shape == b.shape and np.array_equal(a.view(np.uint32), b.view(np.uint32))


@pytest.mark.parametrize("exponent", [1.7, -0.3, 3.0, 0.0, np.inf, np.nan, 16777215.0])
def test_pow_of_one_exponent_runs_its_own_kernel_with_the_ports_bits(exponent):
    """``sleef_pow(x, number)`` runs ml_pow_scalar (was ml_pow on an array of copies of the number): the port's bits
    over every kind of base, NaN's bits too."""
    x = np.concatenate([_bit_patterns(3000, 1), SPECIAL, np.random.default_rng(2).random(1000, np.float32) * 4 - 2])
    x = x.reshape(37, -1)  # (a 2-D base: the kernel maps it flat)
    compiled, port = _compiled_and_port(float32_math.sleef_pow, x, np.float32(exponent))
    assert _same_bits(compiled, port)
    out = np.empty_like(x)
    float32_math._native_library().ml_pow_scalar(native.address(x), native.address(out), x.size, float(exponent))
    assert _same_bits(out, port)


def test_atan2_of_a_huge_y_over_a_tiny_x_is_torchs():
    """SLEEF scales y and x by 2^24 when |x| < 2^-118 and tests the *scaled* y for infinity: a y past 2^104 over
    such an x is +-pi/2, as torch gives, not NaN (the C kernel and the port tested the unscaled y)."""
    torch = pytest.importorskip("torch")
    y = np.tile(np.array([-3.4028235e38, 3.4028235e38, 2.5e38, -1e32, 1e31, 5.0], np.float32), 8)
    x = np.repeat(np.array([1.4e-45, -1.4e-45, 2.5e-39, -1e-40, 0.0, 3.0, -3.0, 1e-39], np.float32), 6)
    theirs = torch.atan2(torch.from_numpy(y), torch.from_numpy(x)).numpy()
    assert _same_bits(ml.atan2(ml.tensor(y), ml.tensor(x)).numpy(), theirs)
    with float32_math.numpy_port():
        assert _same_bits(ml.atan2(ml.tensor(y), ml.tensor(x)).numpy(), theirs)


def _lora_linear():
    ml.manual_seed(0)
    model = ml.nn.Sequential(ml.nn.Linear(8, 6))
    config = ml.lora.LoraConfig(r=2, lora_alpha=4, target_modules=["0"], init_lora_weights=False)
    return ml.lora.get_peft_model(model, config).train()


def _names(node, depth):
    """A node's name and its next_functions' names (and whether each leaf's AccumulateGrad holds that leaf)."""
    if node is None or depth == 0:
        return None if node is None else node.name()
    leaf = getattr(node, "variable", None)
    return (node.name(), None if leaf is None else id(leaf), [_names(n, depth - 1) for n, _ in node.next_functions])


def test_backward_makes_torchs_shown_nodes_only_when_asked(monkeypatch):
    """A LoRA Linear's node is shown as PEFT's graph (AddBackward0 of the base's addmm and the branch's mul):
    backward no longer builds those shown nodes when it frees the node (~1-2 ms a Llama LoRA step); asked for
    afterwards, next_functions shows what it showed before backward, the same objects each time."""
    tensor_module = importlib.import_module("minilora.tensor")  # (minilora.tensor is also the function)
    model, x = _lora_linear(), ml.randn(3, 8, requires_grad=True)
    out = model(x)
    before = _names(out.grad_fn, 5)
    built = []
    shown_node = tensor_module._shown_node
    monkeypatch.setattr(tensor_module, "_shown_node", lambda *a: built.append(1) or shown_node(*a))
    out.sum().backward()
    assert built == []
    monkeypatch.setattr(tensor_module, "_shown_node", shown_node)
    assert _names(out.grad_fn, 5) == before
    first = out.grad_fn.next_functions
    assert all(a[0] is b[0] for a, b in zip(first, out.grad_fn.next_functions))


def test_adapter_gradients_are_in_c_order_whatever_layout_the_rows_give(monkeypatch):
    """dB was computed as (U^T dY)^T in round 22 (OpenBLAS: 10-20% faster than dY^T U, the same bits; since round 31
    dY^T U, as torch's: on MKL's 2 threads the transposed form splits its sum otherwise): LoraLinear.backward
    hands the engine C-ordered dA and dB whatever layout the rows' code (exercise 4.3: a learner's) gave them, so
    A.grad.stride() and B.grad.stride() answer torch's (they refused an F-ordered array)."""
    lora_ops = importlib.import_module("minilora.ops.lora")

    def gradients(rows_code):
        monkeypatch.setattr(lora_ops, "_lora_backward_rows", rows_code)
        model, x = _lora_linear(), ml.randn(4, 5, 8)
        model(x).square().sum().backward()
        layer = model.base_model.model[0]
        return layer.lora_A["default"].weight.grad, layer.lora_B["default"].weight.grad

    canonical = lora_ops._lora_backward_rows

    def fortran_ordered(*args):
        return tuple(None if g is None else np.asfortranarray(g) for g in canonical(*args))

    expected = gradients(canonical)
    for got, want in zip(gradients(fortran_ordered), expected):
        assert got.stride() == want.stride() == (want.shape[1], 1)
        assert _same_bits(got.numpy(), want.numpy())
    rng = np.random.default_rng(6)
    U, dY = rng.standard_normal((777, 8), np.float32), rng.standard_normal((777, 688), np.float32)
    assert _same_bits((U.T @ dY).T, dY.T @ U)  # (the identity round 22's exercise line relied on)
