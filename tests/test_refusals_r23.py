"""What torch's argument parser refuses, minilora refuses in torch's exception type and words: ``x.to('float64')``
(a device string to torch), ``x.type('float16')``, ``x.view('int32')``, ``set_default_dtype('float64')``, a dtype
that names none (``zeros(2, dtype=2)``), a call none of ``Tensor.to``'s signatures takes. torch 2.13 is the
oracle: each call runs under both libraries."""
import numpy as np
import pytest

import minilora

torch = pytest.importorskip("torch")


def _outcome(call, lib):
    try:
        result = call(lib)
    except Exception as error:  # noqa: BLE001  (the exception *is* the compared result)
        return type(error), str(error).splitlines()[0]
    return "ok", str(result.dtype).removeprefix("torch.")


def _same_refusal(call, whole_message=True):
    ours, theirs = _outcome(call, minilora), _outcome(call, torch)
    assert theirs[0] is not "ok", theirs  # noqa: F632  (the row must be one torch refuses)
    assert issubclass(ours[0], theirs[0]), (ours, theirs)
    if whole_message:
        assert ours[1] == theirs[1]
    else:  # torch's "invalid combination" lists every argument and overload: its opening words
        assert ours[1].startswith(theirs[1].split(" - got")[0]), (ours, theirs)


def _x(lib):
    return lib.ones(2, 4)


# torch's own words: "<fn>(): argument 'dtype' must be torch.dtype, not int", "Invalid device string", ...
DTYPE_ROWS = {
    "zeros int": lambda t: t.zeros(2, dtype=2),
    "tensor list": lambda t: t.tensor([1.0], dtype=[1]),
    "full_like float": lambda t: t.full_like(_x(t), 1, dtype=1.5),
    "softmax int": lambda t: _x(t).softmax(0, dtype=3),
    "cumsum list": lambda t: _x(t).cumsum(0, dtype=[]),
    "new_zeros int": lambda t: _x(t).new_zeros(2, dtype=2),
    "set_default_dtype str": lambda t: t.set_default_dtype("float64"),
    "set_default_dtype float": lambda t: t.set_default_dtype(float),
    "type str": lambda t: _x(t).type("float16"),
    "type float": lambda t: _x(t).type(float),
    "type numpy type": lambda t: _x(t).type(np.float64),
    "to str": lambda t: _x(t).to("float64"),
    "to str int8": lambda t: _x(t).to("int8"),
    "Module.to str": lambda t: t.nn.Linear(2, 2).to("float64"),
    "to device= str": lambda t: _x(t).to(device="float64"),
    "reshape str": lambda t: _x(t).reshape("float32"),
    "reshape numpy type": lambda t: _x(t).reshape(np.float32),
}

# torch's "<fn>() received an invalid combination of arguments - got (...)"
COMBINATION_ROWS = {
    "sum int": lambda t: _x(t).sum(dtype=2),
    "arange list": lambda t: t.arange(3, dtype=[1]),
    "randn int": lambda t: t.randn(2, dtype=2),
    "to (dtype, device)": lambda t: _x(t).to(t.float64, "cpu"),
    "to (device, str)": lambda t: _x(t).to("cpu", "float64"),
    "to copy='yes'": lambda t: _x(t).to(t.float64, False, "yes"),
    "to unknown keyword": lambda t: _x(t).to(t.float64, foo=True),
    "to list": lambda t: _x(t).to([1]),
    "view str": lambda t: _x(t).view("int32"),
    "view numpy type": lambda t: _x(t).view(np.int32),
}


@pytest.mark.parametrize("row", DTYPE_ROWS)
def test_dtype_refused_in_torch_words(row):
    try:
        _same_refusal(DTYPE_ROWS[row])
    finally:
        minilora.set_default_dtype(minilora.float32)


@pytest.mark.parametrize("row", COMBINATION_ROWS)
def test_dtype_refused_as_torch_invalid_combination(row):
    _same_refusal(COMBINATION_ROWS[row], whole_message=False)


# What torch takes stays taken, with torch's dtype: the Python types, dtype objects, to()'s signatures
ACCEPTED_ROWS = {
    "zeros float": lambda t: t.zeros(2, dtype=float),
    "zeros int": lambda t: t.zeros(2, dtype=int),
    "zeros bool": lambda t: t.zeros(2, dtype=bool),
    "zeros complex": lambda t: t.zeros(2, dtype=complex),
    "sum float": lambda t: _x(t).sum(dtype=float),
    "to float": lambda t: _x(t).to(float),
    "to other tensor": lambda t: _x(t).to(t.ones(1, dtype=t.float64)),
    "to (device, dtype)": lambda t: _x(t).to("cpu", t.float64),
    "to (dtype, non_blocking, copy)": lambda t: _x(t).to(t.float64, False, True),
    "to keywords": lambda t: _x(t).to(device="cpu", dtype=t.int32, copy=True),
    "to memory_format": lambda t: _x(t).to(memory_format=t.contiguous_format),
    "type name": lambda t: _x(t).type("torch.DoubleTensor"),
    "type class": lambda t: _x(t).type(t.DoubleTensor),
    "Module.to (device, dtype)": lambda t: t.nn.Linear(2, 2).to("cpu", t.float64).weight,
}


def test_what_torch_takes_is_taken_and_a_dtype_name_is_a_device():
    """The stricter parsing keeps every call torch takes, with torch's dtype (one test: the rows passed before)."""
    _same_refusal(lambda t: _x(t).to("float16"))
    for row, call in ACCEPTED_ROWS.items():
        assert _outcome(call, minilora) == _outcome(call, torch), row


def test_module_conversions_still_convert():
    """``Module.half()`` and integer sums call ``to(dtype=...)`` inside minilora: the stricter ``to`` keeps them,
    where ``Module.to('float16')`` is torch's device error."""
    _same_refusal(lambda t: t.nn.Linear(2, 2).to("float16"))
    assert minilora.nn.Linear(2, 2).half().weight.dtype == minilora.float16
    assert minilora.nn.Linear(2, 2).double().weight.dtype == minilora.float64
    assert minilora.tensor([True, False]).sum().dtype == minilora.int64
