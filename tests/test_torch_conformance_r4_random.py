"""torch's random sampling family side by side with torch 2.13 (CPU): normal, bernoulli, poisson,
randint_like, histc, multinomial's edge cases, the Tensor.*_ random fills.

The tests here compare what must agree beyond the numbers -- shapes, dtypes, requires_grad, gradients
(zero through a draw), errors (type and message), and the distribution (mean and variance within 5
standard errors on 20000 draws). The numbers themselves are torch's for the same seed:
tests/test_random_r7.py compares them value for value."""
import math
import warnings

import numpy as np
import pytest

import minilora as ml

torch = pytest.importorskip("torch")

N = 20000
FLOATS = ["float16", "bfloat16", "float32", "float64"]


def _outcome(lib, fn):
    """``("ok", dtype name, shape, requires_grad)`` or ``(exception type name, message head)``."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = fn(lib)
    except Exception as e:  # noqa: BLE001 -- the exception type is what is compared
        return type(e).__name__, str(e).split("  (Could")[0][:36]
    return "ok", str(out.dtype).replace("torch.", ""), tuple(out.shape), out.requires_grad


CALLS = {
    "normal_tt": lambda t: t.normal(t.zeros(3), t.ones(3)),
    "normal_tt_kw": lambda t: t.normal(mean=t.zeros(2, 3), std=t.ones(3)),
    "normal_t_default_std": lambda t: t.normal(t.zeros(2, 3)),
    "normal_ft": lambda t: t.normal(2.0, t.ones(3, dtype=t.float64)),
    "normal_tf": lambda t: t.normal(t.zeros(3, dtype=t.float16), 2.0),
    "normal_tt_dtype_of_mean": lambda t: t.normal(t.zeros(3, dtype=t.float64), t.ones(3, dtype=t.float16)),
    "normal_size": lambda t: t.normal(0.0, 1.0, (2, 3)),
    "normal_size_kw": lambda t: t.normal(0, 1, size=(2, 3), dtype=t.float64),
    "normal_size_requires_grad": lambda t: t.normal(0.0, 1.0, (3,), requires_grad=True),
    "normal_mean_requires_grad": lambda t: t.normal(t.zeros(3, requires_grad=True), 1.0),
    "normal_std_requires_grad": lambda t: t.normal(t.zeros(3), t.ones(3, requires_grad=True)),
    "normal_negative_std_tensor": lambda t: t.normal(t.zeros(3), -t.ones(3)),
    "normal_negative_std": lambda t: t.normal(t.zeros(3), -1.0),
    "normal_negative_std_size": lambda t: t.normal(0.0, -1.0, (3,)),
    "normal_no_size": lambda t: t.normal(0.0, 1.0),
    "normal_int_size": lambda t: t.normal(0, 1, 5),
    "normal_int_size_kw": lambda t: t.normal(0, 1, size=5),
    "normal_list_size": lambda t: t.normal(0, 1, [2, 3]),
    "normal_tensors_and_size": lambda t: t.normal(t.zeros(3), t.ones(3), size=(3,)),
    "normal_0d_tensor_and_size": lambda t: t.normal(t.tensor(0.0), 1.0, (2,)),
    "normal_0d_tensors": lambda t: t.normal(t.zeros(()), t.ones(())),
    "normal_bad_broadcast": lambda t: t.normal(t.zeros(2, 3), t.ones(4)),
    "normal_long": lambda t: t.normal(t.zeros(3, dtype=t.long), 1.0),
    "normal_size_long": lambda t: t.normal(0.0, 1.0, (3,), dtype=t.long),
    "bernoulli": lambda t: t.bernoulli(t.full((3,), 0.5)),
    "bernoulli_p_kw": lambda t: t.bernoulli(t.ones(3, dtype=t.long), p=0.5),
    "bernoulli_p_pos": lambda t: t.bernoulli(t.ones(2, 3), 0.5),
    "bernoulli_fp16": lambda t: t.bernoulli(t.full((3,), 0.5, dtype=t.float16)),
    "bernoulli_requires_grad": lambda t: t.bernoulli(t.full((3,), 0.5, requires_grad=True)),
    "bernoulli_above_one": lambda t: t.bernoulli(t.full((3,), 1.5)),
    "bernoulli_nan": lambda t: t.bernoulli(t.full((3,), float("nan"))),
    "bernoulli_long": lambda t: t.bernoulli(t.ones(3, dtype=t.long)),
    "bernoulli_method": lambda t: t.full((2, 2), 0.3).bernoulli(),
    "poisson": lambda t: t.poisson(t.full((2, 3), 2.0)),
    "poisson_bf16": lambda t: t.poisson(t.full((3,), 2.0, dtype=t.bfloat16)),
    "poisson_requires_grad": lambda t: t.poisson(t.full((3,), 2.0, requires_grad=True)),
    "poisson_negative": lambda t: t.poisson(t.full((3,), -2.0)),
    "poisson_nan": lambda t: t.poisson(t.full((3,), float("nan"))),
    "poisson_long": lambda t: t.poisson(t.ones(3, dtype=t.long)),
    "randint_like_high": lambda t: t.randint_like(t.zeros(2, 3), 5),
    "randint_like_low_high": lambda t: t.randint_like(t.zeros(3, dtype=t.int32), 2, 5),
    "randint_like_kw": lambda t: t.randint_like(t.zeros(3), low=2, high=5),
    "randint_like_high_kw": lambda t: t.randint_like(t.zeros(3), high=5),
    "randint_like_dtype": lambda t: t.randint_like(t.zeros(3), 5, dtype=t.long),
    "randint_like_requires_grad": lambda t: t.randint_like(t.zeros(3), 5, requires_grad=True),
    "randint_like_uint8_range": lambda t: t.randint_like(t.zeros(3, dtype=t.uint8), 300),
    "randint_like_empty_range": lambda t: t.randint_like(t.zeros(3), 5, 5),
    "multinomial_long": lambda t: t.multinomial(t.tensor([1, 1, 0]), 1),
    "multinomial_zero_samples": lambda t: t.multinomial(t.tensor([1.0, 1.0]), 0),
    "multinomial_too_many": lambda t: t.multinomial(t.tensor([0.0, 1.0, 0.0]), 4),
    "multinomial_all_zero": lambda t: t.multinomial(t.tensor([0.0, 0.0]), 1, True),
    "multinomial_negative": lambda t: t.multinomial(t.tensor([0.0, -1.0, 1.0]), 1),
    "multinomial_inf": lambda t: t.multinomial(t.tensor([0.0, float("inf"), 1.0]), 1),
    "multinomial_nan": lambda t: t.multinomial(t.tensor([0.0, float("nan"), 1.0]), 1),
    "multinomial_no_rows": lambda t: t.multinomial(t.zeros(0, 3), 2),
    "multinomial_no_categories": lambda t: t.multinomial(t.ones(2, 0), 1, True),
    "multinomial_nan_and_too_many": lambda t: t.multinomial(t.tensor([float("nan"), 1.0]), 3),
    "multinomial_a_zero_row": lambda t: t.multinomial(t.tensor([[0.0, 0.0], [1.0, 1.0]]), 1),
    "multinomial_3d": lambda t: t.multinomial(t.ones(2, 2, 2), 1),
    "multinomial_fp16": lambda t: t.multinomial(t.tensor([1.0, 1.0, 0.0], dtype=t.float16), 2),
    "histc_long": lambda t: t.histc(t.tensor([1, 2, 1]), 4),
    "histc_zero_bins": lambda t: t.histc(t.tensor([1.0, 2.0]), 0),
    "histc_reversed": lambda t: t.histc(t.tensor([1.0, 2.0]), 4, 3, 0),
    "histc_nan_range": lambda t: t.histc(t.tensor([1.0, float("nan")]), 4),
    "histc_inf_range": lambda t: t.histc(t.tensor([1.0, float("inf")]), 4),
    "histc_requires_grad": lambda t: t.histc(t.tensor([1.0, 2.0], requires_grad=True), 4),
    "histc_float_bins": lambda t: t.histc(t.tensor([1.0, 2.0]), 3.5),
    "histc_tensor_min": lambda t: t.histc(t.tensor([1.0, 2.0]), 3, t.tensor(0.0), 3),
    "multinomial_float_samples": lambda t: t.multinomial(t.ones(3), 2.0),
    "multinomial_bool_samples": lambda t: t.multinomial(t.ones(3), True),
    "poisson_past_int64": lambda t: t.poisson(t.full((3,), 1e20)),
    "rand_like_generator": lambda t: t.rand_like(t.zeros(3), generator=t.Generator()),
    "randn_like_generator": lambda t: t.randn_like(t.zeros(3, dtype=t.float64), generator=t.Generator()),
    "randperm_negative": lambda t: t.randperm(-1),
    "randperm_uint8_overflow": lambda t: t.randperm(257, dtype=t.uint8),
    "randperm_uint8_fits": lambda t: t.randperm(256, dtype=t.uint8),
    "randperm_float16_overflow": lambda t: t.randperm(2050, dtype=t.float16),
    "randperm_bool": lambda t: t.randperm(2, dtype=t.bool),
    "bernoulli_p_tensor_above_one": lambda t: t.zeros(3).bernoulli_(t.full((3,), 1.5)),
    "bernoulli_p_tensor_long": lambda t: t.zeros(3).bernoulli_(t.ones(3, dtype=t.long)),
    "bernoulli_p_tensor_float64": lambda t: t.zeros(3, dtype=t.long).bernoulli_(t.full((3,), 0.5, dtype=t.float64)),
    "random_float_args": lambda t: t.zeros(3).random_(2.5, 7.9),
    "random_past_int64": lambda t: t.zeros(3, dtype=t.int64).random_(0, 2 ** 63),
    "uniform_tensor_args": lambda t: t.zeros(3).uniform_(t.tensor(1.0), 2.0),
    "normal_tensor_args": lambda t: t.zeros(3).normal_(t.tensor(1.0), t.tensor(2.0)),
    "exponential_tensor_arg": lambda t: t.zeros(3).exponential_(t.tensor(-2.0)),
    "init_uniform_generator": lambda t: t.nn.init.uniform_(t.zeros(3), generator=t.Generator()),
    "init_normal_generator": lambda t: t.nn.init.normal_(t.zeros(3), 0.0, 1.0, t.Generator()),
}


@pytest.mark.parametrize("name", sorted(CALLS))
def test_outcome_as_torch(name):
    """Same dtype, shape and requires_grad, or the same exception type and message."""
    assert _outcome(ml, CALLS[name]) == _outcome(torch, CALLS[name])


FILLS = {
    "normal_": [(), (1.0, 0.0), (0.0, -1.0)],
    "uniform_": [(), (2.0, 5.0), (1, 1), (2.0, 1.0)],
    "exponential_": [(), (2.0,), (0.0,), (-1.0,)],
    "cauchy_": [(), (1.0, 2.0), (1.0, 0.0)],
    "log_normal_": [(), (0.0, 0.5), (0.0, 0.0)],
    "geometric_": [(0.5,), (0.0,), (1.0,), (1.5,)],
    "bernoulli_": [(), (0.3,), (1.5,)],
    "random_": [(), (5,), (2, 5), (5, 2), (-5,), (300,)],
}
FILL_DTYPES = FLOATS + ["int64", "int32", "uint8", "bool"]


@pytest.mark.parametrize("dtype", FILL_DTYPES)
@pytest.mark.parametrize("method,args", [(m, a) for m, cases in FILLS.items() for a in cases])
def test_fill_outcome_as_torch(method, args, dtype):
    def call(t):
        x = t.zeros(3, dtype=getattr(t, dtype))
        assert getattr(x, method)(*args) is x  # in place: the tensor itself comes back
        return x
    assert _outcome(ml, call) == _outcome(torch, call)


@pytest.mark.parametrize("method", ["normal_", "exponential_", "bernoulli_", "random_"])
def test_fill_autograd_as_torch(method):
    """A leaf that requires grad refuses; a non-leaf keeps its node, the gradient through it is zero."""
    for lib in (ml, torch):
        with pytest.raises(RuntimeError, match="leaf Variable"):
            getattr(lib.zeros(3, requires_grad=True), method)()
        x = lib.ones(3, requires_grad=True)
        y = getattr(x * 2, method)()
        assert y.requires_grad
        (y * 3).sum().backward()
        np.testing.assert_array_equal(x.grad.numpy(), np.zeros(3))


@pytest.mark.parametrize("name,make", [
    ("normal_mean", lambda t, x: t.normal(x, 1.0)),
    ("normal_std", lambda t, x: t.normal(0.0, x + 1)),
    ("normal_both", lambda t, x: t.normal(x, x + 1)),
    ("bernoulli", lambda t, x: t.bernoulli(x * 0.5)),
    ("poisson", lambda t, x: t.poisson(x)),
])
def test_no_gradient_through_a_draw(name, make):
    for lib in (ml, torch):
        x = lib.full((3,), 0.5, requires_grad=True)
        make(lib, x).sum().backward()
        np.testing.assert_array_equal(x.grad.numpy(), np.zeros(3))
        with lib.no_grad():
            assert not make(lib, x).requires_grad


def test_bernoulli_with_p_has_no_derivative_as_torch():
    """torch records bernoulli(x, p) in x's graph, but its backward raises."""
    for lib in (ml, torch):
        out = lib.bernoulli(lib.full((3,), 0.5, requires_grad=True), 0.5)
        assert out.requires_grad
        with pytest.raises(RuntimeError, match="derivative for aten::bernoulli is not implemented"):
            out.sum().backward()


def _check_moments(values, mean, var):
    """Sample mean and variance within 5 standard errors (the variance's from the 4th moment)."""
    values = np.asarray(values, dtype=np.float64).ravel()
    n = values.size
    assert abs(values.mean() - mean) < 5 * math.sqrt(var / n) + 1e-12
    fourth = np.mean((values - mean) ** 4)
    assert abs(values.var() - var) < 5 * math.sqrt(max(fourth - var ** 2, 1e-12) / n) + 1e-3 * var


def _values(t):
    return t.float().numpy() if str(t.dtype).endswith("bfloat16") else t.numpy()


@pytest.mark.parametrize("dtype", FLOATS)
def test_distributions(dtype):
    d = getattr(ml, dtype)
    wide = 0.02 if dtype in ("float16", "bfloat16") else 0  # (16-bit rounding adds variance)
    _check_moments(_values(ml.normal(ml.full((N,), 2.0, dtype=d), 3.0)), 2.0, 9.0 * (1 + wide))
    _check_moments(_values(ml.normal(ml.full((N,), 2.0, dtype=d), ml.full((N,), 0.5, dtype=d))), 2.0, 0.25 * (1 + wide))
    _check_moments(_values(ml.normal(-1.0, 2.0, (N,), dtype=d)), -1.0, 4.0 * (1 + wide))
    _check_moments(_values(ml.bernoulli(ml.full((N,), 0.3, dtype=d))), 0.3, 0.21)
    _check_moments(_values(ml.bernoulli(ml.zeros(N, dtype=d), 0.7)), 0.7, 0.21)
    _check_moments(_values(ml.poisson(ml.full((N,), 4.0, dtype=d))), 4.0, 4.0)
    _check_moments(_values(ml.zeros(N, dtype=d).normal_(1.0, 2.0)), 1.0, 4.0 * (1 + wide))
    _check_moments(_values(ml.zeros(N, dtype=d).uniform_(2.0, 5.0)), 3.5, 0.75 * (1 + wide))
    _check_moments(_values(ml.zeros(N, dtype=d).exponential_(2.0)), 0.5, 0.25 * (1 + wide))
    _check_moments(_values(ml.zeros(N, dtype=d).geometric_(0.25)), 4.0, 12.0)
    _check_moments(_values(ml.zeros(N, dtype=d).bernoulli_(0.2)), 0.2, 0.16)
    _check_moments(_values(ml.zeros(N, dtype=d).random_(2, 10)), 5.5, (8 ** 2 - 1) / 12)
    _check_moments(_values(ml.randint_like(ml.zeros(N, dtype=d), 10)), 4.5, (10 ** 2 - 1) / 12)
    logs = np.log(_values(ml.zeros(N, dtype=d).log_normal_(0.5, 0.4)).astype(np.float64))
    _check_moments(logs, 0.5, 0.16)
    cauchy = _values(ml.zeros(N, dtype=d).cauchy_(1.0, 2.0)).astype(np.float64)
    assert abs(np.median(cauchy) - 1.0) < 0.1 and abs(np.mean(np.abs(cauchy - 1) < 2) - 0.5) < 0.02


@pytest.mark.parametrize("dtype", ["int64", "int32", "int8", "uint8", "bool", "float16", "bfloat16", "float32"])
def test_random_default_range_as_torch(dtype):
    """random_() draws [0, 2**mantissa digits] in a float dtype, [0, max] in an integer one."""
    mine = _values(ml.zeros(N, dtype=getattr(ml, dtype)).random_()).astype(np.float64)
    top = {"int64": 2 ** 63 - 1, "int32": 2 ** 31 - 1, "int8": 127, "uint8": 255, "bool": 1,
           "float16": 2 ** 11, "bfloat16": 2 ** 8, "float32": 2 ** 24}[dtype]
    theirs = torch.zeros(N, dtype=getattr(torch, dtype)).random_().double().numpy()
    for values in (mine, theirs):
        assert values.min() >= 0 and values.max() <= top and values.max() > top * 0.9
        assert np.all(values == np.round(values))


def test_random_warns_beyond_float_precision_as_torch():
    for lib in (ml, torch):
        with pytest.warns(UserWarning, match=r"out of bounds \[-\(2\^11\), 2\^11\]"):
            lib.zeros(3, dtype=lib.float16).random_(3000)


@pytest.mark.parametrize("draw", [
    lambda g: ml.normal(ml.zeros(5), 1.0, generator=g), lambda g: ml.normal(0.0, 1.0, (5,), generator=g),
    lambda g: ml.bernoulli(ml.full((5,), 0.5), generator=g), lambda g: ml.poisson(ml.full((5,), 3.0), g),
    lambda g: ml.randint_like(ml.zeros(5), 100, generator=g), lambda g: ml.zeros(5).exponential_(generator=g),
    lambda g: ml.zeros(5).normal_(generator=g), lambda g: ml.zeros(5).uniform_(generator=g),
    lambda g: ml.zeros(5).random_(generator=g), lambda g: ml.zeros(5).cauchy_(generator=g),
    lambda g: ml.zeros(5).geometric_(0.3, generator=g), lambda g: ml.zeros(5).log_normal_(generator=g),
    lambda g: ml.zeros(5).bernoulli_(0.5, generator=g),
    lambda g: ml.multinomial(ml.ones(50), 20, generator=g),
    lambda g: ml.rand_like(ml.zeros(5), generator=g), lambda g: ml.randn_like(ml.zeros(5), generator=g),
    lambda g: ml.nn.init.normal_(ml.zeros(5), generator=g), lambda g: ml.nn.init.uniform_(ml.zeros(5), generator=g),
])
def test_generator_makes_draws_reproducible(draw):
    first = draw(ml.Generator().manual_seed(7)).numpy()
    ml.manual_seed(1)  # the global generator plays no part
    again = draw(ml.Generator().manual_seed(7)).numpy()
    other = draw(ml.Generator().manual_seed(8)).numpy()
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)


def test_manual_seed_makes_global_draws_reproducible():
    draws = []
    for _ in range(2):
        ml.manual_seed(3)
        draws.append(np.concatenate([ml.normal(ml.zeros(4), 1.0).numpy(), ml.poisson(ml.ones(4)).numpy(),
                                     ml.zeros(4).exponential_().numpy()]))
    np.testing.assert_array_equal(*draws)


# ---- multinomial without replacement past the nonzero categories -----------------------------------
@pytest.mark.parametrize("weights,n", [([0.0, 1.0, 0.0], 2), ([0.0, 1.0, 0.0], 3), ([0.0, 1.0, 0.0, 0.0, 1.0, 0.0], 5),
                                       ([[0.0, 1.0, 0.0], [1.0, 1.0, 0.0]], 3), ([1e-30, 1.0, 0.0, 1.0], 4)])
def test_multinomial_takes_zero_weight_categories_last_as_torch(weights, n):
    """torch draws the nonzero-weight categories first, then zero-weight ones (minilora in index
    order; torch in its top-k's tie order), each category at most once."""
    for lib in (ml, torch):
        rows = np.atleast_2d(lib.multinomial(lib.tensor(weights), n).numpy())
        for row, w in zip(rows, np.atleast_2d(weights)):
            nonzero = np.count_nonzero(w)
            assert len(set(row)) == n
            assert set(row[:nonzero]) == set(np.flatnonzero(w))
            assert np.all(np.asarray(w)[row[nonzero:]] == 0)


def test_multinomial_without_replacement_frequencies():
    """The first draw follows the weights."""
    w = np.array([1.0, 2.0, 0.0, 5.0])
    firsts = np.array([ml.multinomial(ml.tensor(w), 2)[0].item() for _ in range(4000)])
    _check_moments(firsts == 3, 5 / 8, 5 / 8 * 3 / 8)


# ---- histc ------------------------------------------------------------------------------------------
HISTC = [
    ([1.0, 2.0, 1.0], (4, 0, 3)), ([1.0, 2.0, 1.0], ()), ([1.0, 1.0, 1.0], (4,)), ([1.0, 2.0, 5.0, -1.0], (3, 0, 3)),
    ([0.0, 1.0, 2.0, 3.0], (3, 0, 3)), ([1.0, 2.0, 1.0], (4, 1, 1)), ([], (4,)), ([1.0, float("nan"), 1.0], (4, 0, 3)),
    ([[1.0, 2.0], [3.0, 3.0]], (3,)), ([0.1, 0.2, 0.3, 0.7, 0.9, 1.0], (10, 0, 1)), ([-3.5, 0.25, 7.1], (7, -4, 8)),
    ([0.0, 700.0, 1000.0, 2000.0], (100,)),  # (16-bit: (x - left) * bins overflows to inf: bin 0)
]


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("data,args", HISTC)
def test_histc_as_torch(data, args, dtype):
    mine = ml.histc(ml.tensor(data, dtype=getattr(ml, dtype)), *args)
    theirs = torch.histc(torch.tensor(data, dtype=getattr(torch, dtype)), *args)
    assert str(mine.dtype).replace("torch.", "") == str(theirs.dtype).replace("torch.", "")
    np.testing.assert_array_equal(_values(mine), _values(theirs))


@pytest.mark.parametrize("dtype", FLOATS)
def test_histc_random_data_and_keywords_as_torch(dtype):
    data = np.random.default_rng(0).normal(size=2000) * 3
    mine = ml.tensor(data, dtype=getattr(ml, dtype)).histc(bins=37, min=-5, max=4)
    theirs = torch.tensor(data, dtype=getattr(torch, dtype)).histc(bins=37, min=-5, max=4)
    np.testing.assert_array_equal(_values(mine), _values(theirs))
    np.testing.assert_array_equal(_values(ml.histc(ml.tensor(data, dtype=getattr(ml, dtype)), 23)),
                                  _values(torch.histc(torch.tensor(data, dtype=getattr(torch, dtype)), 23)))


# ---- nn.utils.rnn ------------------------------------------------------------------------------------
def _sequences(lib, dtype, trailing):
    rng = np.random.default_rng(5)
    return [lib.tensor(rng.normal(size=(n,) + trailing) * 3, dtype=getattr(lib, dtype)) for n in (3, 1, 4, 0)]


@pytest.mark.parametrize("dtype", FLOATS + ["int64"])
@pytest.mark.parametrize("trailing", [(), (2,), (2, 3)])
@pytest.mark.parametrize("keywords", [{}, {"batch_first": True}, {"padding_value": -1.5},
                                      {"padding_side": "left"}, {"batch_first": True, "padding_side": "left",
                                                                 "padding_value": 2.5}])
def test_pad_sequence_as_torch(dtype, trailing, keywords):
    mine = ml.nn.utils.rnn.pad_sequence(_sequences(ml, dtype, trailing), **keywords)
    theirs = torch.nn.utils.rnn.pad_sequence(_sequences(torch, dtype, trailing), **keywords)
    assert str(mine.dtype).replace("torch.", "") == str(theirs.dtype).replace("torch.", "")
    np.testing.assert_array_equal(_values(mine), _values(theirs))


def test_pad_sequence_positional_mixed_dtypes_and_gradient_as_torch():
    grads = []
    for lib in (ml, torch):
        x = lib.tensor([1.0, 2.0], requires_grad=True, dtype=lib.float64)
        out = lib.nn.utils.rnn.pad_sequence((lib.tensor([5, 6, 7]), x, lib.ones(1)), True, 9.0, "left")
        assert str(out.dtype).endswith("int64")  # (the first sequence's dtype)
        x2 = lib.tensor([1.0, 2.0], requires_grad=True)
        out = lib.nn.utils.rnn.pad_sequence([x2, lib.ones(3)])
        (out * lib.arange(6.0).reshape(3, 2)).sum().backward()
        grads.append(x2.grad.numpy())
    np.testing.assert_array_equal(*grads)


@pytest.mark.parametrize("call", [
    lambda t: t.nn.utils.rnn.pad_sequence([]),
    lambda t: t.nn.utils.rnn.pad_sequence([t.ones(2)], padding_side="middle"),
    lambda t: t.nn.utils.rnn.pad_sequence(5),
])
def test_pad_sequence_errors_as_torch(call):
    errors = []
    for lib in (ml, torch):
        with pytest.raises(Exception) as info:
            call(lib)
        errors.append((type(info.value), str(info.value)[:40]))
    assert errors[0] == errors[1]


@pytest.mark.parametrize("batch_first", [False, True])
def test_unpad_sequence_as_torch(batch_first):
    results = []
    for lib in (ml, torch):
        seqs = _sequences(lib, "float32", (2,))
        padded = lib.nn.utils.rnn.pad_sequence(seqs, batch_first=batch_first)
        out = lib.nn.utils.rnn.unpad_sequence(padded, lib.tensor([3, 1, 4, 0]), batch_first=batch_first)
        results.append(([s.numpy() for s in out], tuple(padded.shape)))  # (torch transposes padded in place)
    for a, b in zip(results[0][0], results[1][0]):
        np.testing.assert_array_equal(a, b)
    assert results[0][1] == results[1][1]
