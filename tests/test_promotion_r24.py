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
