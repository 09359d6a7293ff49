"""Side by side with torch (round 4, more): every reduction / running op's ``dtype=`` for every input
dtype and every requested dtype (value, result dtype, error type), their ``out=`` in integer dtypes,
and the linear-algebra / reduction functions added in this round."""
import itertools
import warnings

import numpy as np
import pytest

import minilora as ml

torch = pytest.importorskip("torch")

DTYPES = ["float64", "float32", "float16", "bfloat16", "int64", "int32", "int16", "int8", "uint8", "bool"]

# (the values wrap around in 8-bit products and sums: 100 * 100 in int8 is 16, as in torch)
DTYPE_CALLS = {
    "sum": lambda L, x, d: L.sum(x, 1, dtype=d),
    "sum_all": lambda L, x, d: L.sum(x, dtype=d),
    "mean": lambda L, x, d: L.mean(x, 1, dtype=d),
    "prod": lambda L, x, d: L.prod(x, 1, dtype=d),
    "prod_all": lambda L, x, d: L.prod(x, dtype=d),
    "Tensor.prod": lambda L, x, d: x.prod(dim=1, keepdim=True, dtype=d),
    "cumsum": lambda L, x, d: L.cumsum(x, 1, dtype=d),
    "Tensor.cumsum": lambda L, x, d: x.cumsum(dim=1, dtype=d),
    "cumprod": lambda L, x, d: L.cumprod(x, 1, dtype=d),
    "nansum": lambda L, x, d: L.nansum(x, 1, dtype=d),
    "nanmean": lambda L, x, d: L.nanmean(x, 1, dtype=d),
    "softmax": lambda L, x, d: L.softmax(x, 1, dtype=d),
    "log_softmax": lambda L, x, d: L.log_softmax(x, 1, dtype=d),
    "norm": lambda L, x, d: L.norm(x, dim=1, dtype=d),
    "norm_p1": lambda L, x, d: L.norm(x, 1, 1, dtype=d),
}


def _input(lib, dtype):
    rows = [[1, 1, 0, 1], [1, 1, 1, 1]] if dtype == "bool" else [[1, 2, 0, 3], [100, 100, 2, 1]]
    return lib.tensor(rows, dtype=getattr(lib, dtype))


def _outcome(lib, call, x_dtype, dtype):
    """(result dtype name, values as float64) or the exception's type name."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            r = call(lib, _input(lib, x_dtype), getattr(lib, dtype))
    except Exception as e:  # noqa: BLE001  (the type is what is compared)
        return type(e).__name__
    return str(r.dtype).split(".")[-1], np.array(r.double().tolist())


@pytest.mark.parametrize("x_dtype,dtype", list(itertools.product(DTYPES, DTYPES)))
@pytest.mark.parametrize("name", list(DTYPE_CALLS))
def test_reduction_dtype_argument_like_torch(name, x_dtype, dtype):
    expected = _outcome(torch, DTYPE_CALLS[name], x_dtype, dtype)
    got = _outcome(ml, DTYPE_CALLS[name], x_dtype, dtype)
    if isinstance(expected, str) or isinstance(got, str):
        assert got == expected
        return
    assert got[0] == expected[0]
    rtol = 1e-2 if dtype in ("float16", "bfloat16") or x_dtype in ("float16", "bfloat16") else 1e-6
    np.testing.assert_allclose(got[1], expected[1], rtol=rtol)


@pytest.mark.parametrize("out_dtype", ["int64", "int32", "int16", "uint8", "bool", "float64", "float16"])
@pytest.mark.parametrize("x_dtype", ["float32", "int64", "bool"])
@pytest.mark.parametrize("name", ["nansum", "nanmean"])
def test_nan_reductions_out_dtype_like_torch(name, x_dtype, out_dtype):
    """torch's nansum(out=<int>) of a floating input is NotImplementedError although its
    nansum(dtype=torch.long) computes."""
    def call(lib, x, d):
        return getattr(lib, name)(x, 1, out=lib.empty(0, dtype=d))
    expected = _outcome(torch, call, x_dtype, out_dtype)
    got = _outcome(ml, call, x_dtype, out_dtype)
    if isinstance(expected, str) or isinstance(got, str):
        assert got == expected
        return
    assert got[0] == expected[0]
    np.testing.assert_allclose(got[1], expected[1], rtol=1e-3)


# ---- out= of the factories -----------------------------------------------------------------------
FACTORY_OUT_CALLS = {
    "zeros": lambda L, O: L.zeros(2, 3, out=O),
    "zeros_tuple_dtype": lambda L, O: L.zeros((2, 3), out=O, dtype=L.float64),
    "ones": lambda L, O: L.ones(2, out=O),
    "empty": lambda L, O: L.empty(4, out=O).shape,  # (values: torch's are whatever was there)
    "full_float": lambda L, O: L.full((2,), 3.5, out=O),
    "full_bool": lambda L, O: L.full((2,), True, out=O),
    "eye": lambda L, O: L.eye(2, 3, out=O),
    "arange": lambda L, O: L.arange(3, out=O),
    "arange_float": lambda L, O: L.arange(0.0, 3.0, out=O),
    "linspace": lambda L, O: L.linspace(0, 1, 3, out=O),
    "logspace": lambda L, O: L.logspace(0, 1, 3, out=O),
    "rand": lambda L, O: L.rand(2, out=O).shape,
    "randn": lambda L, O: L.randn(2, 2, out=O).shape,
    "randint": lambda L, O: L.randint(5, (3,), out=O).shape,
    "randperm": lambda L, O: L.randperm(3, out=O).sort()[0],
}


def _factory_outcome(lib, call, out_dtype):
    out = lib.ones(3, dtype=getattr(lib, out_dtype))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            r = call(lib, out)
    except Exception as e:  # noqa: BLE001
        return type(e).__name__
    values = list(r) if not hasattr(r, "dtype") else r.tolist()
    return values, str(out.dtype).split(".")[-1], list(out.shape)


@pytest.mark.parametrize("out_dtype", ["float32", "float64", "float16", "int64", "int32", "bool"])
@pytest.mark.parametrize("name", list(FACTORY_OUT_CALLS))
def test_factory_out_like_torch(name, out_dtype):
    """torch.zeros(2, 3, out=t): made in out's dtype, out resized and returned; a dtype= that differs
    from out's is RuntimeError."""
    if name.startswith("arange") and out_dtype == "bool":
        pytest.skip("arange(dtype=torch.bool) is torch's NotImplementedError (ml.arange: left to its owner)")
    expected = _factory_outcome(torch, FACTORY_OUT_CALLS[name], out_dtype)
    got = _factory_outcome(ml, FACTORY_OUT_CALLS[name], out_dtype)
    if isinstance(expected, str) or isinstance(got, str):
        assert got == expected
        return
    assert got[1:3] == expected[1:3]
    np.testing.assert_allclose(np.array(got[0], dtype=float), np.array(expected[0], dtype=float), rtol=1e-3)


@pytest.mark.parametrize("lib", [torch, ml], ids=["torch", "minilora"])
def test_factory_out_returns_out_and_refuses_grad(lib):
    out = lib.ones(3)
    assert lib.zeros(2, out=out) is out and out.tolist() == [0.0, 0.0]
    assert lib.full((3,), 2.0, out=out) is out and out.tolist() == [2.0, 2.0, 2.0]
    with pytest.raises(RuntimeError):
        lib.zeros(2, out=lib.ones(2, requires_grad=True))
    with pytest.raises(RuntimeError):
        lib.ones(2, out=lib.ones(2), dtype=lib.float64)


# ---- out= of the functions minilora/__init__.py took from their modules --------------------------
OUT_CALLS = {
    "fmax": lambda L, x, y, O: L.fmax(x, y, out=O),
    "fmin": lambda L, x, y, O: L.fmin(x, y, out=O),
    "sgn": lambda L, x, y, O: L.sgn(x, out=O),
    "signbit": lambda L, x, y, O: L.signbit(x, out=O),
    "hypot": lambda L, x, y, O: L.hypot(x, y, out=O),
    "copysign": lambda L, x, y, O: L.copysign(x, y, out=O),
    "logcumsumexp": lambda L, x, y, O: L.logcumsumexp(x, 1, out=O),
}


@pytest.mark.parametrize("out_dtype", ["float32", "float64", "int64", "bool"])
@pytest.mark.parametrize("name", list(OUT_CALLS))
def test_more_functions_take_out_like_torch(name, out_dtype):
    def outcome(lib):
        x = lib.tensor([[1.0, -2.0, float("nan")], [3.0, -0.0, 2.0]])
        y = lib.tensor([[2.0, 1.0, 1.0], [float("nan"), 1.0, -1.0]])
        out = lib.empty(0, dtype=getattr(lib, out_dtype))
        try:
            r = OUT_CALLS[name](lib, x, y, out)
        except Exception as e:  # noqa: BLE001
            return type(e).__name__
        return r is out, str(out.dtype).split(".")[-1], np.array(out.double().tolist())
    expected, got = outcome(torch), outcome(ml)
    if isinstance(expected, str) or isinstance(got, str):
        assert got == expected
        return
    assert got[:2] == expected[:2]
    np.testing.assert_allclose(got[2], expected[2], rtol=1e-6)


@pytest.mark.parametrize("lib", [torch, ml], ids=["torch", "minilora"])
def test_nanmedian_out(lib):
    x = lib.tensor([[1.0, -2.0, float("nan")], [3.0, 0.0, 2.0]])
    out = (lib.empty(0), lib.empty(0, dtype=lib.int64))
    values, indices = lib.nanmedian(x, 1, out=out)
    assert values is out[0] and indices is out[1]
    assert values.tolist() == [-2.0, 2.0] and indices.tolist() == [1, 2]
