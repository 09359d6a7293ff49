"""Broadcast gradients are summed as torch sums them: bit for bit in float32, float64 and 16 bits.

torch's autograd reduces the gradient of an input that was broadcast in forward with ``at::sum_to``, i.e. its
ordinary CPU sum kernel; NumPy's pairwise sum adds in another order and differed in the last bit of most float32
elements. minilora's ``unbroadcast`` (exercise 1.1) sums through ``float32_sums.sum_like_torch``, as does repeat's
backward. The oracle is torch itself, on the same inputs. (RMSNorm's and LayerNorm's weight gradients:
tests/test_grad_bits_r19.py.)
"""
import numpy as np
import pytest
import torch

import minilora as ml

# both libraries on 2 threads: a sum of 32768+ elements is split between them as torch's at::parallel_for splits it
pytestmark = pytest.mark.usefixtures("two_threads")

TORCH_DTYPES = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16,
                "float16": torch.float16}

# (input shapes): leading dims broadcast, size-1 dims in the middle, 0-d, a long 1-D sum, empty
SHAPES = [
    [(3, 7, 50, 40), (7, 1, 40), (50, 1)],
    [(37, 300), (300,), ()],
    [(2000,), (1,), ()],
    [(5, 7, 129), (7, 1), (1, 129)],
    [(0, 5), (5,), (1,)],
]
# 16-bit: whole-tensor sums too (two threads' partial sums each rounded to 16 bits, as torch's slots)
WHOLE_SUMS = [[(100000,), ()], [(40000,), (1,)], [(300, 200), (1, 1)], [(60000,), ()], [(80000,), (1,)]]
SIXTEEN_BIT_SHAPES = [SHAPES[1][:2], SHAPES[3][:2]] + WHOLE_SUMS
F64_SHAPES = [[(64, 4096), (64, 1)], [(4096, 64), (64,)], [(16, 512, 8), (1, 512, 1)]]  # (long enough sums)


def _pair(rng, shape, dtype):
    """The same values as a torch and a minilora leaf of ``dtype`` that require grad."""
    values = rng.standard_normal(shape).astype(np.float64 if dtype == "float64" else np.float32)
    return (torch.tensor(values).to(TORCH_DTYPES[dtype]).requires_grad_(),
            ml.tensor(values).to(getattr(ml, dtype)).requires_grad_())


def _weights(rng, shape, dtype, transposed):
    """The output's weighting in the loss, for each library; ``transposed``: the output is read through a
    reversed permute, so its gradient is a non-contiguous view."""
    values = rng.standard_normal(shape[::-1] if transposed else shape).astype(np.float64 if dtype == "float64"
                                                                               else np.float32)
    return torch.tensor(values).to(TORCH_DTYPES[dtype]), ml.tensor(values).to(getattr(ml, dtype))


def _backward(lib, op, inputs, weight, transposed):
    out = op(lib, *inputs)
    if transposed:
        out = out.permute(*reversed(range(out.ndim)))
    (out * weight).sum().backward()


def assert_grads_are_torchs(op, shapes, dtype, rng, transposed=False, checked=None):
    """``checked``: the inputs whose gradients are compared (default: all)."""
    pairs = [_pair(rng, shape, dtype) for shape in shapes]
    out_shape = tuple(op(torch, *(t for t, _ in pairs)).shape)
    t_weight, m_weight = _weights(rng, out_shape, dtype, transposed)
    _backward(torch, op, [t for t, _ in pairs], t_weight, transposed)
    _backward(ml, op, [m for _, m in pairs], m_weight, transposed)
    for i, (t, m) in enumerate(pairs):
        if checked is not None and i not in checked:
            continue
        expected = t.grad.double().numpy()  # (exact for every dtype here)
        got = m.grad.double().numpy()
        assert got.shape == expected.shape, (i, shapes)
        differ = int((got.view(np.int64) != expected.view(np.int64)).sum())  # (bits: -0 and 0 differ)
        assert differ == 0, f"input {i} of {shapes}: {differ} of {got.size} elements are not torch's bits"


# Each op's gradients are reduced by at::sum_to in torch (the op's own formula, then the engine's sum).
BINARY = {
    "add": lambda lib, a, b: a + b,
    "sub": lambda lib, a, b: a - b,
    "mul": lambda lib, a, b: a * b,
    "div": lambda lib, a, b: a / (b.abs() + 1),
    "add_alpha": lambda lib, a, b: a.add(b, alpha=0.3),
    "maximum": lambda lib, a, b: a.maximum(b),
    "minimum": lambda lib, a, b: lib.minimum(a, b),
    "where": lambda lib, a, b: lib.where(a > 0, a, b),
    "atan2": lambda lib, a, b: a.atan2(b),
    "squared_difference": lambda lib, a, b: (a - b) ** 2,
    "fmax": lambda lib, a, b: a.fmax(b),
}
TERNARY = {
    "lerp": lambda lib, a, b, c: a.lerp(b, c),
    "addcmul": lambda lib, a, b, c: a.addcmul(b, c, value=0.5),
}


@pytest.mark.parametrize("name", sorted(BINARY))
@pytest.mark.parametrize("dtype", ["float32"])
def test_binary_ops_broadcast_gradients_are_torchs_bits(name, dtype, rng):
    for shapes in SHAPES:
        assert_grads_are_torchs(BINARY[name], shapes[:2], dtype, rng)


@pytest.mark.parametrize("name", sorted(TERNARY))
def test_ternary_ops_broadcast_gradients_are_torchs_bits_in_float32(name, rng):
    for shapes in SHAPES[:4]:
        assert_grads_are_torchs(TERNARY[name], shapes, "float32", rng)


@pytest.mark.parametrize("name", ["add", "sub", "where", "maximum"])
def test_a_non_contiguous_gradient_is_summed_in_torchs_order(name, rng):
    for shapes in SHAPES[:4]:
        assert_grads_are_torchs(BINARY[name], shapes[:2], "float32", rng, transposed=True)


@pytest.mark.parametrize("name", ["add", "mul", "div", "atan2"])
def test_float64_broadcast_gradients_are_torchs_bits(name, rng):
    for shapes in F64_SHAPES:
        assert_grads_are_torchs(BINARY[name], shapes, "float64", rng)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
@pytest.mark.parametrize("name", ["add", "mul", "div", "atan2", "where"])
def test_16bit_broadcast_gradients_are_summed_as_torchs_16bit_tensor(name, dtype, rng):
    """add/mul hand a 16-bit gradient to the sum; div/atan2 compute in float32 (``backward_in_float32``), where
    torch's formula gives a 16-bit tensor first: rounded to 16 bits, then torch's 16-bit sum."""
    for shapes in SIXTEEN_BIT_SHAPES:
        assert_grads_are_torchs(BINARY[name], shapes, dtype, rng)


def test_a_0d_tensor_times_a_tensor_gets_torchs_sum(rng):
    assert_grads_are_torchs(lambda lib, x, s: x * s + s, [(4097,), ()], "float32", rng)
    assert_grads_are_torchs(lambda lib, x, s: s * x, [(300, 33), ()], "float32", rng)


VIEWS = {  # (each op broadcast to ``size``)
    "expand": lambda lib, a, size: a.expand(*size),
    "expand_as": lambda lib, a, size: a.expand_as(lib.zeros(size)),
    "broadcast_to": lambda lib, a, size: a.broadcast_to(size),
    "broadcast_tensors": lambda lib, a, size: lib.broadcast_tensors(a, lib.zeros(size))[0],
}


@pytest.mark.parametrize("name", sorted(VIEWS))
def test_expand_backward_is_torchs_sum_in_float32(name, rng):
    def expanded(size):
        return lambda lib, a: VIEWS[name](lib, a, size)

    assert_grads_are_torchs(expanded((3, 7, 50, 40)), [(7, 1, 40)], "float32", rng)
    assert_grads_are_torchs(expanded((3, 7, 50, 40)), [(40,)], "float32", rng, transposed=True)
    assert_grads_are_torchs(expanded((100000,)), [(1,)], "float32", rng)
    assert_grads_are_torchs(expanded((0, 5)), [(5,)], "float32", rng)


@pytest.mark.parametrize("dtype", ["float32", "float64", "bfloat16"])
def test_repeat_backward_sums_as_torchs_repeat_backward(dtype, rng):
    """torch sums the added leading dims one by one, then the copies of each repeated dim in one sum."""
    cases = [((3, 50, 7), (2, 1, 40, 3)), ((50, 7), (64, 2)), ((), (300, 2)), ((7,), (3, 200, 2)),
             ((0, 3), (2, 2)), ((4, 5), (0, 1))]
    for shape, reps in cases:
        for transposed in (False, True):
            assert_grads_are_torchs(lambda lib, x: x.repeat(*reps), [shape], dtype, rng, transposed)
    assert_grads_are_torchs(lambda lib, x: x.tile((40, 3)), [(50, 7)], dtype, rng)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_lora_linear_bias_grad_is_addmms_sum(dtype, rng):
    """PEFT's base layer is F.linear: its bias gradient is addmm's sum_to of the [rows, out] gradient. (Only the
    bias: the products' gradients are GEMMs, whose float32 order is the BLAS's.)"""
    def lora(lib, x, bias, weight, a, b):
        if lib is ml:
            return ml.ops.lora_linear(x, weight, a, b, 2.0, bias)
        linear = torch.nn.functional.linear
        return linear(x, weight, bias) + 2.0 * linear(linear(x, a), b)

    assert_grads_are_torchs(lora, [(3, 77, 64), (48,), (48, 64), (8, 64), (48, 8)], dtype, rng, checked=(1,))


@pytest.mark.xfail(strict=True, reason="layout: torch's grad * other follows a non-contiguous gradient's strides "
                   "(its TensorIterator asks the first operand), NumPy lays the product out C-contiguous when its "
                   "operands disagree, so the broadcast operand's sum adds in another order")
def test_mul_under_a_transposed_gradient_sums_in_torchs_layout(rng):
    assert_grads_are_torchs(BINARY["mul"], [(37, 300), (300,)], "float32", rng, transposed=True)


FILLS = {  # a 0-d value tensor filled into many places: torch sums only the filled elements of the gradient
    "masked_fill": lambda lib, x, v: x.masked_fill(x > 0.3, v),
    "masked_fill_broadcast_mask": lambda lib, x, v: x.masked_fill(x[0] > 0, v),
    "index_fill": lambda lib, x, v: x.index_fill(1, lib.tensor([60, 3, 5, 3, 9, 0, 13, 50, 7]), v),
}


# (index_fill's and masked_fill's bfloat16 cases are left out: a float32 sum rounded to 16 bits hid the order there)
FILL_CASES = [(name, "float32") for name in sorted(FILLS)] + [("masked_fill_broadcast_mask", "bfloat16")]


@pytest.mark.parametrize("name, dtype", FILL_CASES)
def test_a_filled_value_gets_torchs_sum_of_the_selected_gradient(name, dtype, rng):
    """masked_fill: ``grad.masked_select(mask).sum()``; index_fill: ``grad.index_select(dim, unique(index)).sum()``
    (minilora summed the whole gradient with the others zeroed, or NumPy's strided selection)."""
    for shape in [(300, 97), (64, 1000), (2000, 97)]:
        assert_grads_are_torchs(FILLS[name], [shape, ()], dtype, rng, checked=(1,))


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_16bit_lerp_rounds_one_minus_weight_and_end_minus_start_as_torchs_ops(dtype, rng):
    """torch's lerp backward: grad * (1 - weight), grad * weight, grad * (end - self), each parenthesis a 16-bit
    tensor op of its own (rounded), before the product and its sum_to."""
    for shapes in SHAPES[:4]:
        assert_grads_are_torchs(TERNARY["lerp"], shapes, dtype, rng)
    assert_grads_are_torchs(lambda lib, a, b: a.lerp(b, 0.3), SHAPES[1][:2], dtype, rng)
