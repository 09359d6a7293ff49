"""``dtype=`` as torch's argument parser reads it, everywhere a public function takes one: a torch.dtype (here
minilora's dtypes, NumPy dtype objects, or torch's own handed in), or Python's ``float``/``int``/``bool``/
``complex``. A dtype's name (``'float32'``) and a NumPy scalar type (``np.float32``, a ``type`` to the parser) are
torch's TypeError, in its words: each call below runs in torch too and the two refusals are compared."""
import warnings

import numpy as np
import pytest

import minilora as ml

torch = pytest.importorskip("torch")


def _x(lib):
    return lib.ones(2, 3)


# name -> (call(lib, dtype), a dtype name the call accepts). Each builds its inputs in the library it is given.
CALLS = {
    "zeros": (lambda L, d: L.zeros(2, dtype=d), "float64"),
    "ones": (lambda L, d: L.ones(2, dtype=d), "float64"),
    "empty": (lambda L, d: L.empty(2, dtype=d), "float64"),
    "full": (lambda L, d: L.full((2,), 1.0, dtype=d), "float64"),
    "arange": (lambda L, d: L.arange(3, dtype=d), "float64"),
    "range": (lambda L, d: L.range(0, 2, dtype=d), "float64"),
    "tensor": (lambda L, d: L.tensor([1.0], dtype=d), "float64"),
    "as_tensor": (lambda L, d: L.as_tensor([1.0], dtype=d), "float64"),
    "asarray": (lambda L, d: L.asarray([1.0], dtype=d), "float64"),
    "scalar_tensor": (lambda L, d: L.scalar_tensor(1, dtype=d), "float64"),
    "randn": (lambda L, d: L.randn(2, dtype=d), "float64"),
    "rand": (lambda L, d: L.rand(2, dtype=d), "float64"),
    "randint": (lambda L, d: L.randint(3, (2,), dtype=d), "int32"),
    "randperm": (lambda L, d: L.randperm(3, dtype=d), "int32"),
    "normal": (lambda L, d: L.normal(0.0, 1.0, (2,), dtype=d), "float64"),
    "eye": (lambda L, d: L.eye(2, dtype=d), "float64"),
    "linspace": (lambda L, d: L.linspace(0, 1, 3, dtype=d), "float64"),
    "logspace": (lambda L, d: L.logspace(0, 1, 3, dtype=d), "float64"),
    "empty_strided": (lambda L, d: L.empty_strided((2,), (1,), dtype=d), "float64"),
    "empty_permuted": (lambda L, d: L.empty_permuted((2, 3), (0, 1), dtype=d), "float64"),
    "tril_indices": (lambda L, d: L.tril_indices(3, 3, dtype=d), "int32"),
    "triu_indices": (lambda L, d: L.triu_indices(3, 3, dtype=d), "int32"),
    "zeros_like": (lambda L, d: L.zeros_like(_x(L), dtype=d), "float64"),
    "ones_like": (lambda L, d: L.ones_like(_x(L), dtype=d), "float64"),
    "empty_like": (lambda L, d: L.empty_like(_x(L), dtype=d), "float64"),
    "full_like": (lambda L, d: L.full_like(_x(L), 1, dtype=d), "float64"),
    "rand_like": (lambda L, d: L.rand_like(_x(L), dtype=d), "float64"),
    "randn_like": (lambda L, d: L.randn_like(_x(L), dtype=d), "float64"),
    "randint_like": (lambda L, d: L.randint_like(_x(L), 3, dtype=d), "int64"),
    "frombuffer": (lambda L, d: L.frombuffer(bytearray(8), dtype=d), "float64"),
    "hann_window": (lambda L, d: L.hann_window(4, dtype=d), "float64"),
    "hamming_window": (lambda L, d: L.hamming_window(4, dtype=d), "float64"),
    "bartlett_window": (lambda L, d: L.bartlett_window(4, dtype=d), "float64"),
    "blackman_window": (lambda L, d: L.blackman_window(4, dtype=d), "float64"),
    "kaiser_window": (lambda L, d: L.kaiser_window(4, dtype=d), "float64"),
    "fft.fftfreq": (lambda L, d: L.fft.fftfreq(4, dtype=d), "float64"),
    "fft.rfftfreq": (lambda L, d: L.fft.rfftfreq(4, dtype=d), "float64"),
    "signal.windows.hann": (lambda L, d: L.signal.windows.hann(4, dtype=d), "float64"),
    "signal.windows.gaussian": (lambda L, d: L.signal.windows.gaussian(4, dtype=d), "float64"),
    "signal.windows.kaiser": (lambda L, d: L.signal.windows.kaiser(4, dtype=d), "float64"),
    "x.to": (lambda L, d: _x(L).to(dtype=d), "float64"),
    "x.to(device, dtype=)": (lambda L, d: _x(L).to("cpu", dtype=d), "float64"),
    "x.sum()": (lambda L, d: _x(L).sum(dtype=d), "float64"),
    "x.sum(dim)": (lambda L, d: _x(L).sum(0, dtype=d), "float64"),
    "sum": (lambda L, d: L.sum(_x(L), dtype=d), "float64"),
    "x.mean()": (lambda L, d: _x(L).mean(dtype=d), "float64"),
    "x.mean(dim)": (lambda L, d: _x(L).mean(0, dtype=d), "float64"),
    "x.prod()": (lambda L, d: _x(L).prod(dtype=d), "float64"),
    "prod(dim)": (lambda L, d: L.prod(_x(L), 0, dtype=d), "float64"),
    "nansum": (lambda L, d: L.nansum(_x(L), dtype=d), "float64"),
    "x.nansum": (lambda L, d: _x(L).nansum(dtype=d), "float64"),
    "nanmean": (lambda L, d: L.nanmean(_x(L), dtype=d), "float64"),
    "cumsum": (lambda L, d: L.cumsum(_x(L), 0, dtype=d), "float64"),
    "x.cumprod": (lambda L, d: _x(L).cumprod(0, dtype=d), "float64"),
    "x.cumsum_": (lambda L, d: _x(L).cumsum_(0, dtype=d), "float32"),
    "x.cumprod_": (lambda L, d: _x(L).cumprod_(0, dtype=d), "float32"),
    "F.softmax": (lambda L, d: L.nn.functional.softmax(_x(L), 0, dtype=d), "float64"),
    "F.log_softmax": (lambda L, d: L.nn.functional.log_softmax(_x(L), 0, dtype=d), "float64"),
    "F.softmin": (lambda L, d: L.nn.functional.softmin(_x(L), 0, dtype=d), "float64"),
    "softmax": (lambda L, d: L.softmax(_x(L), 0, dtype=d), "float64"),
    "x.log_softmax": (lambda L, d: _x(L).log_softmax(0, dtype=d), "float64"),
    "special.softmax": (lambda L, d: L.special.softmax(_x(L), 0, dtype=d), "float64"),
    "special.log_softmax": (lambda L, d: L.special.log_softmax(_x(L), 0, dtype=d), "float64"),
    "x.new_zeros": (lambda L, d: _x(L).new_zeros(2, dtype=d), "float64"),
    "x.new_ones": (lambda L, d: _x(L).new_ones(2, dtype=d), "float64"),
    "x.new_empty": (lambda L, d: _x(L).new_empty(2, dtype=d), "float64"),
    "x.new_full": (lambda L, d: _x(L).new_full((2,), 1, dtype=d), "float64"),
    "x.new_tensor": (lambda L, d: _x(L).new_tensor([1], dtype=d), "float64"),
    "x.new_empty_strided": (lambda L, d: _x(L).new_empty_strided((2,), (1,), dtype=d), "float64"),
    "norm": (lambda L, d: L.norm(_x(L), dtype=d), "float64"),
    "x.norm": (lambda L, d: _x(L).norm(dtype=d), "float64"),
    "linalg.norm": (lambda L, d: L.linalg.norm(_x(L), dtype=d), "float64"),
    "linalg.vector_norm": (lambda L, d: L.linalg.vector_norm(_x(L), dtype=d), "float64"),
    "linalg.matrix_norm": (lambda L, d: L.linalg.matrix_norm(_x(L), dtype=d), "float64"),
    "x.to_dense": (lambda L, d: _x(L).to_dense(dtype=d), "float64"),
    "nn.Linear": (lambda L, d: L.nn.Linear(2, 3, dtype=d).weight, "float64"),
    "nn.LayerNorm": (lambda L, d: L.nn.LayerNorm(2, dtype=d).weight, "float64"),
    "nn.Embedding": (lambda L, d: L.nn.Embedding(4, 2, dtype=d).weight, "float64"),
    "nn.Conv2d": (lambda L, d: L.nn.Conv2d(1, 1, 1, dtype=d).weight, "float64"),
    "nn.LSTM": (lambda L, d: L.nn.LSTM(2, 2, dtype=d).weight_ih_l0, "float64"),
    "nn.MultiheadAttention": (lambda L, d: L.nn.MultiheadAttention(4, 2, dtype=d).in_proj_weight, "float64"),
    "nn.LazyLinear": (lambda L, d: L.nn.LazyLinear(2, dtype=d).weight, "float64"),
    "Module.to": (lambda L, d: L.nn.Linear(2, 3).to(dtype=d).weight, "float64"),
    "set_autocast_dtype": (lambda L, d: L.set_autocast_dtype("cpu", d), None),
    "TypedStorage": (lambda L, d: L.TypedStorage(2, dtype=d), "float64"),
    "finfo": (lambda L, d: L.finfo(d), "float64"),
    "iinfo": (lambda L, d: L.iinfo(d), "int32"),
    "promote_types(type1)": (lambda L, d: L.promote_types(d, L.int8), "float64"),
    "promote_types(type2)": (lambda L, d: L.promote_types(L.int8, d), "float64"),
    "can_cast(from_)": (lambda L, d: L.can_cast(d, L.float64), None),
    "can_cast(to)": (lambda L, d: L.can_cast(L.float64, d), None),
}


def _outcome(call, lib, dtype):
    """The refusal's (type, first line of its message), or the result's dtype name."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = call(lib, dtype)
    except Exception as error:  # noqa: BLE001  (any refusal is compared with torch's)
        return type(error), str(error).splitlines()[0]
    return str(getattr(result, "dtype", result)).removeprefix("torch.")  # (promote_types: a dtype itself)


def _refused_alike(call, spelling):
    ours, theirs = _outcome(call, ml, spelling), _outcome(call, torch, spelling)
    assert isinstance(theirs, tuple) and isinstance(ours, tuple), (ours, theirs)
    assert ours[0] is theirs[0], (ours, theirs)
    combination = "() received an invalid combination of arguments - got ("
    if combination in theirs[1]:  # (torch lists every signature; the first words and the dtype's type are compared)
        assert ours[1].split(" - got (")[0] == theirs[1].split(" - got (")[0]
        got = "dtype=str" if isinstance(spelling, str) else "dtype=type"
        assert got in ours[1] and got in theirs[1], (ours, theirs)
    else:
        assert ours[1] == theirs[1]


@pytest.mark.parametrize("spelling", ["float32", np.float64], ids=str)
@pytest.mark.parametrize("name", list(CALLS))
def test_a_dtype_name_or_numpy_type_is_refused_as_torch_refuses_it(name, spelling):
    _refused_alike(CALLS[name][0], spelling)


@pytest.mark.parametrize("spelling", ["torch.float64", "half", np.int64, np.bool_], ids=str)
@pytest.mark.parametrize("name", ["zeros", "tensor", "x.to", "x.sum()", "F.softmax", "nn.Linear"])
def test_other_names_and_numpy_types_too(name, spelling):
    _refused_alike(CALLS[name][0], spelling)


@pytest.mark.parametrize("name", [n for n, (_, accepted) in CALLS.items() if accepted])
def test_dtype_objects_are_taken_minilora_s_and_torch_s(name):
    call, accepted = CALLS[name]
    expected = _outcome(call, torch, getattr(torch, accepted))
    assert expected == accepted
    assert _outcome(call, ml, getattr(ml, accepted)) == expected
    assert _outcome(call, ml, getattr(torch, accepted)) == expected  # (torch's dtype handed in: interop)


@pytest.mark.parametrize("python_type", [float, int, bool])
@pytest.mark.parametrize("name", ["zeros", "tensor", "full", "x.to", "x.new_zeros", "empty_like", "x.sum()"])
def test_python_types_are_the_dtypes_torch_reads_them_as(name, python_type):
    call = CALLS[name][0]
    assert _outcome(call, ml, python_type) == _outcome(call, torch, python_type)
    assert _outcome(CALLS["nn.Linear"][0], ml, float) == "float64"


def test_a_tensor_type_name_is_what_x_type_takes():
    for lib in (ml, torch):
        x = lib.ones(2)
        assert str(x.type("torch.DoubleTensor").dtype).endswith("float64")
        assert str(x.type(lib.float16).dtype).endswith("float16")
        assert x.type() == "torch.FloatTensor"
        with pytest.raises(ValueError, match="invalid type: 'float32'"):
            x.type("float32")


def test_autocast_with_a_dtype_name_warns_and_refuses_on_entry_as_torch():
    """torch keeps the name: the region is disabled with its warning, and entering it sets that dtype, a
    TypeError. minilora ran the region in float16."""
    for lib in (ml, torch):
        with pytest.warns(UserWarning, match="the target dtype is not supported. Disabling autocast"):
            region = lib.autocast("cpu", dtype="float16")
        with pytest.raises(TypeError, match=r"set_autocast_dtype\(\): argument 'dtype' \(position 2\) must be "
                                            r"torch.dtype, not str"):
            with region:
                pass
        assert not lib.is_autocast_enabled("cpu")


def test_a_layer_names_torch_empty_as_torch_s_layers_do():
    """torch's layers make their parameters with torch.empty(..., dtype=dtype): its words name empty()."""
    with pytest.raises(TypeError, match=r"^empty\(\): argument 'dtype' must be torch.dtype, not str$"):
        ml.nn.RMSNorm(4, dtype="float32")
    with pytest.raises(TypeError, match=r"^empty\(\): argument 'dtype' must be torch.dtype, not type$"):
        ml.nn.BatchNorm1d(4, dtype=np.float32)
