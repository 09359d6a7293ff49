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


# ---- inner, vdot, dist, tensordot, kron, true_divide ---------------------------------------------
_R = np.random.default_rng(0)
A3, B3 = _R.standard_normal((2, 3, 4)), _R.standard_normal((4, 3, 2))
V, W = _R.standard_normal(4), _R.standard_normal(4)
M, N = _R.standard_normal((2, 3)), _R.standard_normal((3, 2))
PRODUCT_CALLS = {
    "inner": lambda L, t: L.inner(t(A3), t(V)),
    "inner_nd": lambda L, t: L.inner(t(A3), t(A3)),
    "inner_0d": lambda L, t: L.inner(t(V), t(np.array(2.0))),
    "Tensor.inner": lambda L, t: t(A3).inner(t(B3.transpose(2, 1, 0))),
    "inner_mismatch": lambda L, t: L.inner(t(M), t(V)),
    "vdot": lambda L, t: L.vdot(t(V), t(W)),
    "Tensor.vdot": lambda L, t: t(V).vdot(t(W)),
    "vdot_2d": lambda L, t: L.vdot(t(M), t(V)),
    "dist": lambda L, t: L.dist(t(A3), t(V)),
    "dist_p1": lambda L, t: L.dist(t(A3), t(V), 1),
    "dist_inf": lambda L, t: t(A3).dist(t(V), p=float("inf")),
    "dist_p0": lambda L, t: L.dist(t(A3), t(V), 0),
    "dist_p3": lambda L, t: L.dist(t(M), t(N.T), p=3),
    "tensordot_int": lambda L, t: L.tensordot(t(M), t(N), dims=1),
    "tensordot_0": lambda L, t: L.tensordot(t(M), t(N), 0),
    "tensordot_lists": lambda L, t: L.tensordot(t(A3), t(B3), dims=([1, 2], [1, 0])),
    "tensordot_negative": lambda L, t: L.tensordot(t(A3), t(B3), ([-1], [0])),
    "tensordot_mismatch": lambda L, t: L.tensordot(t(A3), t(B3), 2),
    "kron": lambda L, t: L.kron(t(M), t(N)),
    "kron_ranks": lambda L, t: L.kron(t(A3), t(M)),
    "Tensor.kron": lambda L, t: t(V).kron(t(M)),
    "true_divide": lambda L, t: L.true_divide(t(M), t(N.T)),
    "true_divide_int": lambda L, t: L.true_divide(L.tensor([3, 4]), 2),
    "searchsorted_input_kw": lambda L, t: L.searchsorted(t(np.array([1.0, 3, 5])),
                                                         input=t(np.array([2.0, 5]))),
}


@pytest.mark.parametrize("name", list(PRODUCT_CALLS))
def test_products_like_torch(name):
    def outcome(lib):
        try:
            r = PRODUCT_CALLS[name](lib, lambda a: lib.tensor(a, dtype=lib.float64))
        except Exception as e:  # noqa: BLE001
            return type(e).__name__
        return list(r.shape), str(r.dtype).split(".")[-1], np.array(r.tolist())
    expected, got = outcome(torch), outcome(ml)
    if isinstance(expected, str) or isinstance(got, str):
        assert got == expected
        return
    assert got[:2] == expected[:2]
    np.testing.assert_allclose(got[2], expected[2], rtol=1e-12, atol=1e-12)


GRAD_CALLS = {
    "inner": (lambda a, b: ml.inner(a, b), (A3, V)),
    "vdot": (lambda a, b: ml.vdot(a, b), (V, W)),
    "dist": (lambda a, b: ml.dist(a, b), (A3, V)),
    "dist_p3": (lambda a, b: ml.dist(a, b, 3), (M, N.T)),
    "tensordot": (lambda a, b: ml.tensordot(a, b, dims=([1, 2], [1, 0])), (A3, B3)),
    "kron": (lambda a, b: ml.kron(a, b), (A3, M)),
    "true_divide": (lambda a, b: ml.true_divide(a, b), (M, N.T + 3)),
}


@pytest.mark.parametrize("name", list(GRAD_CALLS))
def test_product_gradients(name):
    fn, arrays = GRAD_CALLS[name]
    inputs = [ml.tensor(a, dtype=ml.float64, requires_grad=True) for a in arrays]
    ml.testing.grad_check(fn, *inputs)
    inputs = [ml.tensor(a, dtype=ml.float64, requires_grad=True) for a in arrays]  # (fresh .grad)
    expected = [torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in arrays]
    getattr(torch, name.split("_p")[0])(*expected, *([3] if name == "dist_p3" else []),
                                         **({"dims": ([1, 2], [1, 0])} if name == "tensordot" else {})
                                         ).sum().backward()
    fn(*inputs).sum().backward()
    for got, want in zip(inputs, expected):
        np.testing.assert_allclose(np.array(got.grad.tolist()), want.grad.numpy(), rtol=1e-10, atol=1e-12)


# ---- in-place forms ------------------------------------------------------------------------------
INPLACE_CALLS = {
    "cumsum_int32": lambda L: L.tensor([[1, 2, 3], [4, 5, 6]], dtype=L.int32).cumsum_(1),
    "cumsum_float": lambda L: L.tensor([[1.0, 2, 3], [4, 5, 6]]).cumsum_(dim=0),
    "cumprod": lambda L: L.tensor([[1.0, 2], [3, 4]]).cumprod_(0),
    "cumprod_int8": lambda L: L.tensor([100, 100], dtype=L.int8).cumprod_(0),
    "addmm_": lambda L: L.ones(2, 2).addmm_(L.ones(2, 3), L.ones(3, 2), beta=2, alpha=0.5),
    "divide_": lambda L: L.tensor([3.0, 4]).divide_(2),
    "divide_floor": lambda L: L.tensor([3.0, -4]).divide_(2, rounding_mode="floor"),
    "true_divide_": lambda L: L.tensor([3.0, 4]).true_divide_(L.tensor([2.0, 8])),
    "true_divide_int": lambda L: L.tensor([3, 4]).true_divide_(2),
    "nan_to_num_": lambda L: L.tensor([1.0, float("nan"), float("inf"), -float("inf")]).nan_to_num_(),
    "nan_to_num_args": lambda L: L.tensor([float("nan"), float("inf"), -float("inf")]).nan_to_num_(
        nan=1.0, posinf=2.0, neginf=-3.0),
    "clamp_min_": lambda L: L.tensor([1.0, -2, 3]).clamp_min_(0),
    "clamp_max_": lambda L: L.tensor([1.0, -2, 3]).clamp_max_(0.5),
}


def _result_or_error(call, lib):
    """What ``call(lib)`` gives: its result's dtype name and values, or the type of the error it raised."""
    try:
        r = call(lib)
    except Exception as e:  # noqa: BLE001  (the error's type is what is compared)
        return type(e).__name__
    return str(r.dtype).split(".")[-1], r.tolist()


@pytest.mark.parametrize("name", list(INPLACE_CALLS))
def test_inplace_forms_like_torch(name):
    assert _result_or_error(INPLACE_CALLS[name], ml) == _result_or_error(INPLACE_CALLS[name], torch)


@pytest.mark.parametrize("lib", [torch, ml], ids=["torch", "minilora"])
def test_inplace_cumsum_gradient(lib):
    x = lib.tensor([[1.0, 2, 3], [4, 5, 6]], dtype=lib.float64, requires_grad=True)
    y = x * 1
    assert y.cumsum_(1) is y
    (y * lib.tensor([1.0, 2, 3], dtype=lib.float64)).sum().backward()
    assert x.grad.tolist() == [[6.0, 5.0, 3.0], [6.0, 5.0, 3.0]]


# ---- quantile / nanquantile ----------------------------------------------------------------------
_Q = _R.standard_normal((3, 5, 4))
_QN = _Q.copy()
_QN[0, 1, 2] = np.nan
_QN[1, :, 0] = np.nan  # (a whole row of NaN along dim 1)
_Q_VALUES = {"0.3": 0.3, "0.5": 0.5, "1": 1.0, "0": 0, "vector": [0.1, 0.5, 0.75, 0.125], "0-d": 0.25}


def _q_of(lib, key):
    q = _Q_VALUES[key]
    return lib.tensor(q, dtype=lib.float64) if key in ("vector", "0-d") else q


@pytest.mark.parametrize("interpolation", ["linear", "lower", "higher", "midpoint", "nearest"])
@pytest.mark.parametrize("dim,keepdim", [(None, False), (None, True), (0, False), (1, True), (-1, False)])
@pytest.mark.parametrize("q", list(_Q_VALUES))
@pytest.mark.parametrize("with_nan", [False, True], ids=["finite", "nan"])
@pytest.mark.parametrize("name", ["quantile", "nanquantile"])
def test_quantile_like_torch(name, with_nan, q, dim, keepdim, interpolation):
    def outcome(lib):
        x = lib.tensor(_QN if with_nan else _Q, dtype=lib.float64)
        r = getattr(lib, name)(x, _q_of(lib, q), dim=dim, keepdim=keepdim, interpolation=interpolation)
        return list(r.shape), np.array(r.tolist())
    expected, got = outcome(torch), outcome(ml)
    assert got[0] == expected[0]
    # (1 ulp: torch's vectorised lerp uses a fused multiply-add, see the report on ml.lerp)
    np.testing.assert_allclose(got[1], expected[1], rtol=1e-15, atol=1e-15, equal_nan=True)


QUANTILE_ERRORS = {
    "int input": lambda L: L.quantile(L.tensor([1, 2, 3]), 0.5),
    "float16 input": lambda L: L.quantile(L.tensor([1.0, 2.0], dtype=L.float16), 0.5),
    "q above 1": lambda L: L.quantile(L.tensor([1.0, 2.0]), 1.5),
    "q below 0": lambda L: L.nanquantile(L.tensor([1.0, 2.0]), L.tensor([-0.1, 0.5])),
    "q of another dtype": lambda L: L.quantile(L.tensor([1.0, 2.0]), L.tensor([0.5], dtype=L.float64)),
    "q 2-d": lambda L: L.quantile(L.tensor([1.0, 2.0]), L.tensor([[0.5]])),
    "unknown interpolation": lambda L: L.quantile(L.tensor([1.0, 2.0]), 0.5, interpolation="cubic"),
    "empty": lambda L: L.quantile(L.tensor([]), 0.5),
    "empty row": lambda L: L.quantile(L.empty(2, 0), 0.5, dim=1),
    "0-d": lambda L: L.quantile(L.tensor(3.0), 0.5, dim=0, keepdim=True),
    "0-d, q vector": lambda L: L.quantile(L.tensor(3.0), L.tensor([0.5, 0.2]), keepdim=True),
    "out=": lambda L: L.quantile(L.tensor([[1.0, 5.0, 2.0]]), 0.5, 1, out=L.empty(0)),
    "float32 method": lambda L: L.tensor([[1.0, 5.0, 2.0]]).quantile(0.5, dim=1, keepdim=True),
    "nanquantile method": lambda L: L.tensor([[1.0, float("nan"), 2.0]]).nanquantile(0.5, 1),
}


@pytest.mark.parametrize("name", list(QUANTILE_ERRORS))
def test_quantile_arguments_like_torch(name):
    assert _result_or_error(QUANTILE_ERRORS[name], ml) == _result_or_error(QUANTILE_ERRORS[name], torch)


@pytest.mark.parametrize("interpolation", ["linear", "lower", "higher", "midpoint", "nearest"])
@pytest.mark.parametrize("name", ["quantile", "nanquantile"])
def test_quantile_gradient(name, interpolation):
    x = ml.tensor(_Q, dtype=ml.float64, requires_grad=True)
    q = ml.tensor([0.1, 0.5, 0.8], dtype=ml.float64)
    ml.testing.grad_check(lambda t: getattr(ml, name)(t, q, dim=1, interpolation=interpolation), x)
    x = ml.tensor(_QN, dtype=ml.float64, requires_grad=True)
    tx = torch.tensor(_QN, dtype=torch.float64, requires_grad=True)
    getattr(ml, name)(x, q, dim=1, interpolation=interpolation).nansum().backward()
    getattr(torch, name)(tx, torch.tensor([0.1, 0.5, 0.8], dtype=torch.float64), dim=1,
                         interpolation=interpolation).nansum().backward()
    np.testing.assert_allclose(np.array(x.grad.tolist()), tx.grad.numpy(), rtol=1e-12, equal_nan=True)


@pytest.mark.parametrize("q", [0.3, 0.7, 0.123])
@pytest.mark.parametrize("name", ["quantile", "nanquantile"])
def test_quantile_float32_ranks_rounded_as_torch(name, q):
    """torch computes q * (n - 1) and the weights in float32 for a float32 input (float64 ranks were
    off by several ulps); what is left is the 1-ulp fused multiply-add of torch's lerp."""
    x = np.random.default_rng(2).standard_normal((50, 37)).astype(np.float32)
    x[3, 4] = np.nan
    expected = getattr(torch, name)(torch.tensor(x), q, dim=1).numpy()
    got = np.array(getattr(ml, name)(ml.tensor(x), q, dim=1).tolist(), dtype=np.float32)
    finite = ~np.isnan(expected)
    assert (np.isnan(got) == ~finite).all()
    np.testing.assert_array_max_ulp(got[finite], expected[finite], maxulp=1)


RANDOM_OUT_CALLS = {
    "bernoulli": lambda L, O: L.bernoulli(L.full((2, 3), 0.5), out=O),
    "multinomial": lambda L, O: L.multinomial(L.ones(2, 3), 2, out=O),
    "normal_numbers": lambda L, O: L.normal(0.0, 1.0, (2,), out=O),
    "normal_tensor": lambda L, O: L.normal(L.zeros(2, 3), 1.0, out=O),  # (an empty out: refused)
    "normal_tensor_sized": lambda L, O: L.normal(L.zeros(2, 3), 1.0, out=O),
}


@pytest.mark.parametrize("out_dtype", ["float32", "float64", "int64", "int32", "bool"])
@pytest.mark.parametrize("name", list(RANDOM_OUT_CALLS))
def test_random_out_like_torch(name, out_dtype):
    """bernoulli/multinomial/normal(out=): out's dtype and shape as torch (values: minilora's stream)."""
    def outcome(lib):
        out = lib.empty((2, 3) if name.endswith("sized") else (0,), dtype=getattr(lib, out_dtype))
        try:
            r = RANDOM_OUT_CALLS[name](lib, out)
        except Exception as e:  # noqa: BLE001
            return type(e).__name__
        return r is out, str(out.dtype).split(".")[-1], list(out.shape)
    assert outcome(ml) == outcome(torch)


# ---- arange with an integer dtype and real-number bounds -------------------------------------------
# torch counts the range from the float64 bounds and steps from start and step cut to integers (int64
# cuts all three first): arange(0, 2.5, 0.5, dtype=int32) is five zeros, with int64 an error.  minilora
# gave [0, 0, 1, 1, 2], silently.

ARANGE_BOUNDS = [(0, 2.5, 0.5), (0.5, 5, 1.5), (-2.5, 3, 1.7), (1.9, 10, 2.9), (0, 1, 0.25), (-3.7, 2, 1),
                 (0, 5.5, 1), (250, 300.5, 10.2), (0, 5, 0), (3, 1, 1), (0.5, -1, 1), (-0.5, 3, 1),
                 (5, 0.5, -1.5), (0, -2.5, -0.5), (250, 300, 10), (5,), (10, 0, -3), (2**53, 2**53 + 5)]


@pytest.mark.parametrize("bounds", ARANGE_BOUNDS, ids=str)
@pytest.mark.parametrize("dtype", ["int8", "uint8", "int16", "int32", "int64", "bool", "float32", "float64",
                                   "bfloat16"])
def test_arange_bounds_and_dtypes_as_torch(bounds, dtype):
    def call(lib):
        return lib.arange(*bounds, dtype=getattr(lib, dtype))
    assert _result_or_error(call, ml) == _result_or_error(call, torch)
