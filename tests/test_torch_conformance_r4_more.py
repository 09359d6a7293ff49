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
