"""Rows from tests/promotion_sweep.py's findings: dtype inference and refusals where minilora answered
with a different number (or accepted what torch refuses)."""
import pytest

import minilora as ml

torch = pytest.importorskip("torch")


def _outcome(module, fn):
    try:
        out = fn(module)
    except Exception as error:  # noqa: BLE001  (the refusal is what is compared)
        return type(error).__name__, str(error)
    return str(out.dtype).removeprefix("torch."), out.tolist()


@pytest.mark.parametrize("fn", [
    lambda m: m.tensor(1j, dtype=m.int8),
    lambda m: m.tensor([1, 2j], dtype=m.float32),
    lambda m: m.tensor([1.5, 2j], dtype=m.bfloat16),
    lambda m: m.tensor([1, 2j], dtype=m.bool),
    lambda m: m.tensor(1 + 0j, dtype=m.int64),
], ids=["int8 1j", "float32 list", "bfloat16 list", "bool takes it", "int64 1+0j"])
def test_tensor_of_python_complex_into_real_dtype_is_refused_as_torch(fn):
    assert _outcome(ml, fn) == _outcome(torch, fn)


@pytest.mark.parametrize("value", [1j, 1 + 0j, 2.5])
def test_scalar_tensor_of_complex_overflows_as_torch(value):
    fn = lambda m: m.scalar_tensor(value)  # noqa: E731
    assert _outcome(ml, fn) == _outcome(torch, fn)


@pytest.mark.parametrize("fill", [[1, 2], [[1], [2.5]], []])
def test_full_refuses_a_list_fill_value(fill):
    fn = lambda m: m.full((2,), fill)  # noqa: E731
    assert _outcome(ml, fn) == _outcome(torch, fn)


def _same_as_torch(fn, *torch_args):
    """fn(module, *args) in both libraries: the same dtype and values (NaN where torch has NaN), or the same
    refusal (type and message)."""
    from torch_db import to_minilora
    ours = to_minilora(torch_args)  # (before torch's call: an in-place op changes its arguments)
    expected = _outcome(torch, lambda m: fn(m, *torch_args))
    got = _outcome(ml, lambda m: fn(m, *ours))
    if expected[0] in ("bfloat16", "float16", "float32", "float64", "complex64", "complex128"):
        assert got[0] == expected[0]
        assert repr(got[1]) == repr(expected[1])  # (nan == nan by its repr)
    else:
        assert got == expected


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32", "float64"])
def test_ldexp_by_integer_exponent_scales_exactly_as_torch(dtype):
    # -0.0 * 2^200 was nan (the power overflowed to inf first); 2^-10 * 2^130 inf in float32
    x = torch.tensor([2.0 ** -10, -0.0, 3e-5, 0.5, 1.0], dtype=getattr(torch, dtype))
    for exponent_dtype in (torch.uint8, torch.int32, torch.int64):
        _same_as_torch(lambda m, a, e: m.ldexp(a, e), x, torch.tensor([20, 200, 17, 128, -140]).to(exponent_dtype))


def test_ldexp_of_an_integer_input_keeps_the_power_path():
    _same_as_torch(lambda m, a, e: m.ldexp(a, e), torch.tensor([True, False]), torch.tensor([3, 200], dtype=torch.uint8))


def test_ldexp_gradient_through_the_exact_path():
    a = torch.tensor([0.5, 3.0], dtype=torch.float64, requires_grad=True)
    ours = ml.tensor([0.5, 3.0], dtype=ml.float64, requires_grad=True)
    torch.ldexp(a, torch.tensor([3, -2])).sum().backward()
    ml.ldexp(ours, ml.tensor([3, -2])).sum().backward()
    assert ours.grad.tolist() == a.grad.tolist()


@pytest.mark.parametrize("exponent", [torch.tensor(2.0, dtype=torch.bfloat16), torch.tensor([2, 3]),
                                      torch.tensor([2.0, 1.0], dtype=torch.float16)], ids=["0-d bf16", "int", "f16"])
def test_ldexp_of_complex_keeps_the_imaginary_part(exponent):
    # a complex64 input with a 16-bit exponent was cast to the exponent's dtype: (1+1j) -> 4.0 float16
    fn = lambda m, a, e: m.ldexp(a, e)  # noqa: E731
    x = torch.tensor([1 + 1j, 3 - 2j])
    if exponent.dtype == torch.float16 and exponent.ndim:  # torch: "pow" not implemented for 'ComplexHalf'
        exponent = exponent.float()
    _same_as_torch(fn, x, exponent)


@pytest.mark.parametrize("dtype", ["uint8", "int8", "int16", "int32", "int64"])
def test_lcm_wraps_and_takes_the_sign_as_atens_int_arithmetic(dtype):
    a = torch.tensor([2 ** 31 - 1, 6, 0, -4, 12, -128, 31], dtype=torch.int64).to(getattr(torch, dtype))
    b = torch.tensor([100, -4, 0, 6, 0, 3, -4], dtype=torch.int64).to(getattr(torch, dtype))
    _same_as_torch(lambda m, x, y: m.lcm(x, y), a, b)


@pytest.mark.parametrize("call", [
    lambda m, x, c: x.clamp(min=c), lambda m, x, c: x.clamp(max=c), lambda m, x, c: m.clamp(x, c, c),
    lambda m, x, c: x.clamp(min=c[0]), lambda m, x, c: x.bool().clamp(min=c),
    lambda m, x, c: x.clamp(min=1 + 2j), lambda m, x, c: x.int().clamp(max=1 + 2j), lambda m, x, c: x.clamp(min=1 + 0j),
], ids=["min", "max", "both", "0-d", "bool", "scalar", "int scalar", "real complex"])
def test_clamp_with_complex_bounds_refuses_as_torch(call):
    # a complex tensor bound gave NumPy's lexicographic clamp, a complex result torch has no kernel for
    _same_as_torch(call, torch.tensor([1.0, -2.0, 5.0]), torch.tensor([1j, 2, 3]))


@pytest.mark.parametrize("name", ["logical_and", "logical_or", "logical_xor"])
def test_logical_ops_of_float16_and_a_complex_scalar_tensor_refuse_as_torch(name):
    # their common dtype is complex32, which torch's kernel refuses (minilora answered bools)
    _same_as_torch(lambda m, a, b: getattr(m, name)(a, b), torch.tensor([0.0, 1.5], dtype=torch.float16),
                   torch.tensor(1j))
    _same_as_torch(lambda m, a, b: getattr(m, name)(a, b), torch.tensor([0.0, 1.5], dtype=torch.bfloat16),
                   torch.tensor(1j))


def test_arange_without_bounds_is_refused():
    with pytest.raises(TypeError):
        torch.arange()
    with pytest.raises(TypeError, match="invalid combination"):
        ml.arange()  # (was an empty int64 tensor)
    assert ml.arange(end=3).tolist() == torch.arange(end=3).tolist()


def test_arange_past_the_addressable_size_is_refused():
    for end in (2 ** 63 - 1, 2 ** 62):
        with pytest.raises(RuntimeError):
            torch.arange(end)
        with pytest.raises(RuntimeError, match="overflowed"):
            ml.arange(end)  # (NumPy's arange of that count was empty: a tensor of no elements)


@pytest.mark.parametrize("call", [
    lambda m, a, b, r: a + b, lambda m, a, b, r: a - b, lambda m, a, b, r: a + b[0], lambda m, a, b, r: 1 - b,
    lambda m, a, b, r: r + b, lambda m, a, b, r: b - r, lambda m, a, b, r: a.add_(b), lambda m, a, b, r: m.sub(a, b),
], ids=["add", "sub", "0-d", "rsub number", "real + complex", "complex - real", "add_", "torch.sub"])
def test_complex_add_multiplies_the_other_operand_by_alpha_as_torch(call):
    # ATen adds a + alpha * b with a complex alpha: an infinite part of b makes a NaN (inf+nanj), NumPy's sum did not
    inf = float("inf")
    a = torch.tensor([1 + 1j, 2 - 0j, -0.0 + 0j, 0j])
    b = torch.tensor([inf + 100j, complex(-0.0, -3), complex(0.0, -0.0), complex(-0.0, 0.0)])
    _same_as_torch(call, a, b, torch.tensor([1.0, -0.0, 3.0, inf]))
