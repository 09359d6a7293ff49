"""Calls torch's argument parser refuses, refused here in its words (round 32).

- ``torch.sort(x, 0, stable=True)``: sort and argsort take ``stable`` only in an overload whose ``dim`` and
  ``descending`` are keywords too; minilora sorted (the same values, in code that then fails under torch).
- ``x.matmul(3)``, ``x @ 3``, ``x.matmul(array)``: an AttributeError or a dtype error instead of torch's TypeError.
- "takes from 3 to 2 positional arguments": torch's fewest counts the required keywords too.
Each form is run in torch 2.13 and in minilora, as a user writes it."""
import numpy as np
import pytest

import minilora as ml

torch = pytest.importorskip("torch")

REFUSED = [
    "T.sort(x, 0, stable=True)", "T.sort(x, -1, True, stable=False)", "x.sort(0, stable=True)",
    "x.sort(0, descending=True, stable=True)", "T.argsort(x, 0, stable=True)", "T.argsort(x, 0, True, True)",
    "T.argsort(x, 0, descending=True, stable=True)", "x.argsort(0, True, True)", "x.argsort(0, stable=True)",
    "T.div(x, x, x, rounding_mode='floor')",
    "x.matmul(3)", "x.matmul(2.5)", "x.matmul([1.0, 2.0, 3.0])", "x.matmul(np.ones(3, np.float32))",
    "x.matmul(None)", "T.matmul(x, 3)", "x @ 3", "3 @ x", "x @ [1.0, 2.0, 3.0]", "x @ None",
]
TAKEN = [
    "T.sort(x, stable=True)", "T.sort(x, dim=0, stable=True)", "T.sort(x, stable=True, dim=0, descending=True)",
    "T.sort(x, 0, True)", "x.sort(stable=True, dim=0)", "T.argsort(x, 0, True)", "T.argsort(x, stable=True, dim=0)",
    "x.argsort(dim=0, descending=True, stable=False)", "x.matmul(v)", "x.matmul(other=v)", "x @ v",
    "T.matmul(input=x, other=v)",
]


def _run(form, library):
    x = library.tensor([[3.0, 1.0, 2.0], [1.0, 1.0, 0.0]])
    v = library.tensor([1.0, 2.0, 3.0])
    try:
        return "value", eval(form, {"T": library, "x": x, "v": v, "np": np})
    except Exception as error:  # noqa: BLE001  (the refusal is what is compared)
        return type(error).__name__, str(error)


@pytest.mark.parametrize("form", REFUSED)
def test_refused_as_torch_refuses_it(form):
    assert _run(form, ml) == _run(form, torch)


def _as_lists(value):
    return [_as_lists(v) for v in value] if isinstance(value, tuple) else value.tolist()


@pytest.mark.parametrize("form", TAKEN)
def test_taken_as_torch_takes_it(form):
    ours, theirs = _run(form, ml), _run(form, torch)
    assert ours[0] == theirs[0] == "value", (ours, theirs)
    assert _as_lists(ours[1]) == _as_lists(theirs[1])
