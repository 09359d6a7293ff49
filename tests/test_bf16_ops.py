"""bfloat16 and float16 in the elementwise, reduction, indexing and shape ops, side by side with torch
on the CPU (issue 16).

torch's CPU kernels compute an op on 16-bit floats in float32 and round the result once; reductions
accumulate in float32. A single NumPy ufunc on a bfloat16 (ml_dtypes) or float16 array does the same,
but an op built from several NumPy steps would round after each, a NumPy sum of bfloat16 accumulates in
bfloat16, and NumPy rounds a Python number to bfloat16 before ``x * 0.1`` where torch keeps it in
float32. Each case below is one call written as a torch user writes it, run in torch and in minilora on
the same 16-bit values, comparing

* the forward value and dtype: bit for bit by default (torch's kernel rounds once, and so does
  minilora); cases marked ``close`` say why they can differ in the last bit, and are compared with
  torch's tolerances for the dtype;
* the gradient of every input: its dtype (the input's, as torch's) and its values within torch's own
  16-bit tolerances (``torch.testing.assert_close``'s defaults) -- torch's backward formulas are
  chains of 16-bit ops, each rounding, where minilora computes a formula in float32 and rounds once.

The regression tests at the end pin the silent divergences NumPy alone would give.
"""
import math
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import minilora as ml  # noqa: E402
from test_torch_conformance import t  # noqa: E402

DTYPES = ["bfloat16", "float16"]
TOLERANCE = {"bfloat16": dict(rtol=1.6e-2, atol=1e-5), "float16": dict(rtol=1e-3, atol=1e-5),  # torch's
             "float32": dict(rtol=1.3e-6, atol=1e-5), "float64": dict(rtol=1e-7, atol=1e-7)}
# Gradients: torch's backward formulas are chains of 16-bit ops, rounding up to about four times where
# minilora rounds once. torch's bfloat16 default (1.6e-2) allows four bfloat16 steps; its float16 one
# (1e-3) only two float16 steps, so float16 gradients get four (4 * 2**-11).
GRAD_TOLERANCE = {"bfloat16": dict(rtol=1.6e-2, atol=1e-5), "float16": dict(rtol=2e-3, atol=1e-5)}


def values(dtype, *shape, low=None, high=None, seed=0):
    """Random float64 values that ``dtype`` holds exactly (normal, or uniform in [low, high))."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape) if low is None else rng.uniform(low, high, shape)
    return x.astype(ml.dtypes.to_dtype(dtype)).astype(np.float64)


def as_float64(x):
    """A torch or minilora tensor's values as a float64 array (bool/int tensors as they are)."""
    if isinstance(x, torch.Tensor):
        x = x.detach()
        return (x.double() if x.is_floating_point() else x).numpy()
    array = x.detach().numpy()
    return array.astype(np.float64) if ml.dtypes.is_floating(array.dtype) else array


def dtype_name(x):
    return str(x.dtype).removeprefix("torch.")


def compare(theirs, ours, exact, dtype, where):
    """Same dtype, shape and values: bit for bit (``exact``), else within torch's tolerances."""
    assert dtype_name(ours) == dtype_name(theirs), f"{where}: dtype {ours.dtype}, torch {theirs.dtype}"
    a, b = as_float64(theirs), as_float64(ours)
    assert b.shape == a.shape, f"{where}: shape {b.shape}, torch {a.shape}"
    if exact or a.dtype.kind != "f":
        np.testing.assert_array_equal(b, a, err_msg=where)
    else:
        np.testing.assert_allclose(b, a, err_msg=where, equal_nan=True, **TOLERANCE[dtype_name(theirs)])


def outputs(result):
    """The tensors an op returned (a tensor, or a tuple of them such as (values, indices))."""
    return list(result) if isinstance(result, tuple) else [result]


def run_case(fn, inputs, dtype, exact=True, grad=True, grad_rtol=1.0, grad_atol=1.0):
    """``fn(lib, *tensors)`` in torch and minilora on the same 16-bit ``inputs`` (float64 arrays, or
    ``(array, dtype)`` pairs for inputs of another dtype); forward compared as ``compare`` says, then
    one backward with the same random output gradient, each input's gradient compared (``grad_rtol``,
    ``grad_atol``: multiples of torch's tolerances, for cases whose reason is given where they are used)."""
    def make(lib, wants_grad):
        made = []
        for x in inputs:
            array, kind = x if isinstance(x, tuple) else (x, dtype)
            floating = kind in ("bfloat16", "float16", "float32", "float64")
            made.append(t(lib, array, grad=wants_grad and floating, dtype=kind))
        return made

    theirs_in, ours_in = make(torch, grad), make(ml, grad)
    theirs, ours = outputs(fn(torch, *theirs_in)), outputs(fn(ml, *ours_in))
    assert len(ours) == len(theirs)
    for i, (a, b) in enumerate(zip(theirs, ours)):
        compare(a, b, exact, dtype, f"output {i}")
    if not grad:
        return
    differentiable = [(a, b) for a, b in zip(theirs, ours) if a.requires_grad]
    assert [b.requires_grad for b in ours] == [a.requires_grad for a in theirs]
    if not differentiable:
        return
    seeds = [values(dtype, *a.shape, seed=1 + i) for i, (a, _) in enumerate(differentiable)]
    for seed, (a, b) in zip(seeds, differentiable):  # (several outputs: their gradients add up)
        a.backward(t(torch, seed, dtype=dtype_name(a)), retain_graph=True)
        b.backward(t(ml, seed, dtype=dtype_name(a)), retain_graph=True)
    tolerance = dict(GRAD_TOLERANCE[dtype])
    tolerance["rtol"] *= grad_rtol
    tolerance["atol"] *= grad_atol
    for i, (a, b) in enumerate(zip(theirs_in, ours_in)):
        if a.grad is None:
            assert b.grad is None, f"input {i}: torch has no gradient, minilora has one"
            continue
        assert b.grad is not None, f"input {i}: no gradient"
        assert dtype_name(b.grad) == dtype_name(a.grad), f"input {i}: grad dtype {b.grad.dtype}"
        np.testing.assert_allclose(as_float64(b.grad), as_float64(a.grad), equal_nan=True,
                                   err_msg=f"gradient of input {i}", **tolerance)


def X(dtype, *shape, **kw):
    """(4, 64) values by default: torch's kernels take their vectorized path, which rounds once, over
    whole vectors; a short tail can take a scalar path that rounds an intermediate (rsqrt does)."""
    return values(dtype, *(shape or (4, 64)), **kw)


# ---- elementwise: (name, fn(lib, x), how to make x, options) -------------------------------------------
def normal(d):
    return [X(d, seed=3) * 2]


def positive(d):
    return [X(d, low=0.1, high=4.0, seed=3)]


def unit(d):
    return [X(d, low=-0.9, high=0.9, seed=3)]


def pair(d):
    return [X(d, seed=3) * 2, X(d, seed=4)]


def positive_pair(d):
    return [X(d, low=0.1, high=3.0, seed=3), X(d, low=-2.0, high=2.0, seed=4)]


UNARY = [
    ("exp", lambda m, x: x.exp(), normal, {}),
    ("log", lambda m, x: m.log(x), positive, {}),
    ("sqrt", lambda m, x: x.sqrt(), positive, {}),
    ("rsqrt", lambda m, x: x.rsqrt(), positive, {}),
    ("abs", lambda m, x: x.abs(), normal, {}),
    ("neg", lambda m, x: -x, normal, {}),
    ("tanh", lambda m, x: x.tanh(), normal, {}),
    ("sigmoid", lambda m, x: m.sigmoid(x), normal, {}),
    ("relu", lambda m, x: m.relu(x), normal, {}),
    ("silu", lambda m, x: m.nn.functional.silu(x), normal, {}),
    # (gelu's float32 erf is fastmath's A&S 7.1.26, absolute error 1.5e-7: more than a 16-bit step where
    # gelu is tiny; NumPy's float32 tanh and torch's differ in the last float32 bit near -1)
    ("gelu", lambda m, x: m.nn.functional.gelu(x), normal, {"exact": False}),
    ("gelu tanh", lambda m, x: m.nn.functional.gelu(x, approximate="tanh"), normal, {"exact": False}),
    ("erf", lambda m, x: m.erf(x), normal, {"exact": False}),  # (float64 erf rounded twice: to float32, to 16 bits)
    ("sin", lambda m, x: x.sin(), normal, {}),
    ("cos", lambda m, x: m.cos(x), normal, {}),
    ("tan", lambda m, x: m.tan(x), unit, {}),
    ("asin", lambda m, x: m.asin(x), unit, {}),
    ("acos", lambda m, x: m.acos(x), unit, {}),
    ("atan", lambda m, x: m.atan(x), normal, {}),
    ("sinh", lambda m, x: m.sinh(x), normal, {}),
    ("cosh", lambda m, x: m.cosh(x), normal, {}),
    ("asinh", lambda m, x: m.asinh(x), normal, {}),
    ("acosh", lambda m, x: m.acosh(x + 1.5), positive, {}),
    ("atanh", lambda m, x: m.atanh(x), unit, {}),
    ("exp2", lambda m, x: m.exp2(x), normal, {}),
    ("log2", lambda m, x: m.log2(x), positive, {}),
    ("log10", lambda m, x: m.log10(x), positive, {}),
    ("log1p", lambda m, x: m.log1p(x), positive, {}),
    ("expm1", lambda m, x: m.expm1(x), normal, {}),
    ("softplus", lambda m, x: m.nn.functional.softplus(x), normal, {}),
    ("softplus beta threshold", lambda m, x: m.nn.functional.softplus(x, beta=2.0, threshold=3.0), normal, {}),
    ("leaky_relu", lambda m, x: m.nn.functional.leaky_relu(x, 0.1), normal, {}),
    ("elu", lambda m, x: m.nn.functional.elu(x), normal, {}),
    ("selu", lambda m, x: m.nn.functional.selu(x), normal, {}),
    ("celu", lambda m, x: m.nn.functional.celu(x, alpha=0.5), normal, {}),
    ("hardtanh", lambda m, x: m.nn.functional.hardtanh(x, -0.5, 0.5), normal, {}),
    ("hardswish", lambda m, x: m.nn.functional.hardswish(x * 2), normal, {}),
    ("hardsigmoid", lambda m, x: m.nn.functional.hardsigmoid(x * 2), normal, {}),
    ("logsigmoid", lambda m, x: m.nn.functional.logsigmoid(x), normal, {}),
    ("mish", lambda m, x: m.nn.functional.mish(x), normal, {}),
    # (torch's softsign is three autograd ops, x / (|x| + 1), each backward rounding to 16 bits; the
    # division's gradient for |x| + 1 then differs by several 16-bit steps from minilora's, rounded once)
    ("softsign", lambda m, x: m.nn.functional.softsign(x), normal, {"grad_rtol": 4}),
    ("square", lambda m, x: x.square(), normal, {}),
    ("reciprocal", lambda m, x: x.reciprocal(), positive, {}),
    ("sign", lambda m, x: x.sign(), normal, {}),
    ("floor", lambda m, x: (x * 3).floor(), normal, {}),
    ("ceil", lambda m, x: m.ceil(x * 3), normal, {}),
    ("trunc", lambda m, x: m.trunc(x * 3), normal, {}),
    ("round", lambda m, x: m.round(x * 3), normal, {}),
    ("round decimals", lambda m, x: m.round(x * 30, decimals=1), normal, {}),
    ("clamp numbers", lambda m, x: x.clamp(-0.5, 0.7), normal, {}),
    ("clamp min=", lambda m, x: m.clamp(x, min=0.25), normal, {}),
    ("clamp_max", lambda m, x: m.clamp_max(x, 0.3), normal, {}),
    ("nan_to_num", lambda m, x: m.nan_to_num(m.log(x - 1.0), nan=0.5, neginf=-2.0), positive, {}),
    ("x * 0.1", lambda m, x: x * 0.1, normal, {}),
    ("0.1 * x", lambda m, x: 0.1 * x, normal, {}),
    ("x * 3", lambda m, x: x * 3, normal, {}),
    ("x / 3", lambda m, x: x / 3, normal, {}),
    ("x / 0.7", lambda m, x: m.div(x, 0.7), normal, {}),
    ("0.3 / x", lambda m, x: 0.3 / x, positive, {}),
    ("x + 0.1", lambda m, x: x + 0.1, normal, {}),
    ("x - 0.3", lambda m, x: x - 0.3, normal, {}),
    ("2.5 - x", lambda m, x: 2.5 - x, normal, {}),
    ("x ** 2", lambda m, x: x ** 2, normal, {}),
    ("x ** 0.3", lambda m, x: x ** 0.3, positive, {}),
    ("x.pow(-1.5)", lambda m, x: x.pow(-1.5), positive, {}),
    ("2 ** x", lambda m, x: 2 ** x, normal, {}),
    ("0.7 ** x", lambda m, x: 0.7 ** x, normal, {}),
    ("x % 0.3", lambda m, x: x % 0.3, normal, {}),
    ("fmod", lambda m, x: m.fmod(x, 0.3), normal, {}),
    ("masked_fill", lambda m, x: x.masked_fill(x > 0.5, 0.1), normal, {}),
    ("where number", lambda m, x: m.where(x > 0, x, 0.1), normal, {}),
    ("clone", lambda m, x: x.clone(), normal, {}),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name, fn, make, options", UNARY, ids=[c[0] for c in UNARY])
def test_unary_ops_match_torch(name, fn, make, options, dtype):
    run_case(fn, make(dtype), dtype, **options)


BINARY = [
    ("add", lambda m, x, y: x + y, pair, {}),
    ("add alpha", lambda m, x, y: m.add(x, y, alpha=2), pair, {}),
    # a non-integer alpha: rounded to the 16-bit dtype, then x + alpha * y in float32 (rounded once).
    # (4, 64) elements: torch's vectorized loop covers them all (see X)
    ("add alpha=0.3", lambda m, x, y: m.add(x, y, alpha=0.3), pair, {}),
    ("add alpha=1/3 broadcast", lambda m, x, y: x.add(y[0], alpha=1 / 3), pair, {}),
    ("sub alpha=0.3", lambda m, x, y: m.sub(x, y, alpha=0.3), pair, {}),
    ("sub alpha=-2.7", lambda m, x, y: x.sub(y, alpha=-2.7), pair, {}),
    ("sub", lambda m, x, y: m.sub(x, y), pair, {}),
    ("mul", lambda m, x, y: x * y, pair, {}),
    ("div", lambda m, x, y: y / x, positive_pair, {}),
    # (floor/trunc division: step by step in 16 bits, or in float32 for a number; see
    # test_rounded_division_matches_torch for signs, ties, zeros and the special values)
    ("div floor", lambda m, x, y: m.div(x, y, rounding_mode="floor"), positive_pair, {}),
    ("div trunc", lambda m, x, y: m.div(x, y, rounding_mode="trunc"), positive_pair, {}),
    ("pow", lambda m, x, y: x ** y, positive_pair, {}),
    ("maximum", lambda m, x, y: m.maximum(x, y), pair, {}),
    ("minimum", lambda m, x, y: m.minimum(x, y), pair, {}),
    ("atan2", lambda m, x, y: m.atan2(x, y), pair, {}),
    # (torch's backward, g / (1 + exp(y - x)), is three 16-bit ops)
    ("logaddexp", lambda m, x, y: m.logaddexp(x, y), pair, {"grad_rtol": 2}),
    ("remainder", lambda m, x, y: m.remainder(y, x), positive_pair, {}),
    ("fmod", lambda m, x, y: m.fmod(y, x), positive_pair, {}),
    # (torch's xlogy rounds log(y) to 16 bits before the product -- and a number y to 16 bits first)
    ("xlogy", lambda m, x, y: m.xlogy(y, x), positive_pair, {}),
    ("xlogy number", lambda m, x, y: (m.xlogy(y, 2.3), m.xlogy(0.7, x)), positive_pair, {}),
    ("xlogy int", lambda m, x, y: x.xlogy(3), positive_pair, {}),
    ("xlogy zeros", lambda m, x, y: m.xlogy(y * (x > 1), x * (y > 0.5)), positive_pair, {}),
    ("lerp number", lambda m, x, y: m.lerp(x, y, 0.3), pair, {}),
    # (y's gradient sums the end's and the weight's, which nearly cancel; torch rounds each to 16 bits
    # and its weight gradient g * (end - start) rounds end - start first)
    ("lerp tensor", lambda m, x, y: m.lerp(x, y, (y * 0.5).sigmoid()), pair, {"grad_atol": 100}),
    ("where", lambda m, x, y: m.where(x > y, x, y), pair, {}),
    ("clamp tensors", lambda m, x, y: m.clamp(x, min=y - 0.5, max=y + 0.5), pair, {}),
    ("addcmul", lambda m, x, y: m.addcmul(x, y, y, value=0.5), pair, {}),
    ("addcdiv", lambda m, x, y: m.addcdiv(y, y, x, value=0.5), positive_pair, {}),
    ("broadcast add", lambda m, x, y: x + y[0], pair, {}),
    ("broadcast mul", lambda m, x, y: x * y[:, :1], pair, {}),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name, fn, make, options", BINARY, ids=[c[0] for c in BINARY])
def test_binary_ops_match_torch(name, fn, make, options, dtype):
    run_case(fn, make(dtype), dtype, **options)


# ---- reductions ------------------------------------------------------------------------------------------
def wide(d):
    return [X(d, 4, 300, seed=5) * 2]


def small(d):
    return [X(d, low=0.5, high=1.5, seed=6, *(3, 7))]


REDUCTIONS = [
    ("sum", lambda m, x: x.sum(), wide, {}),
    ("sum dim", lambda m, x: x.sum(1), wide, {}),
    ("sum dims keepdim", lambda m, x: m.sum(x, dim=(0, 1), keepdim=True), wide, {}),
    ("mean", lambda m, x: x.mean(), wide, {}),
    ("mean dim keepdim", lambda m, x: x.mean(-1, keepdim=True), wide, {}),
    ("prod", lambda m, x: x.prod(), small, {}),
    ("prod dim", lambda m, x: m.prod(x, 1), small, {}),
    ("var", lambda m, x: x.var(), wide, {}),
    ("var dim unbiased=False", lambda m, x: x.var(1, unbiased=False), wide, {}),
    ("std", lambda m, x: x.std(), wide, {}),
    ("std dim correction", lambda m, x: m.std(x, dim=1, correction=0, keepdim=True), wide, {}),
    # (the two gradients nearly cancel; torch's var backward rounds x - mean(x) to 16 bits first)
    ("var_mean", lambda m, x: m.var_mean(x, 1), wide, {"grad_atol": 10}),
    ("norm", lambda m, x: x.norm(), wide, {}),
    ("norm p=1", lambda m, x: x.norm(p=1, dim=1), wide, {}),
    ("norm p=3", lambda m, x: m.norm(x, 3, dim=1), wide, {}),
    ("norm p=inf", lambda m, x: x.norm(float("inf")), wide, {}),
    ("logsumexp", lambda m, x: x.logsumexp(1), wide, {}),
    ("softmax", lambda m, x: x.softmax(-1), wide, {}),
    ("log_softmax", lambda m, x: m.log_softmax(x, dim=0), wide, {}),
    ("cumsum", lambda m, x: x.cumsum(1), wide, {}),
    # (torch's cumprod backward is a chain of 16-bit ops: cumprod, cumsum, divisions; minilora's
    # formula runs in float32 and rounds once)
    ("cumprod", lambda m, x: m.cumprod(x, 1), small, {"grad_rtol": 10}),
    ("max", lambda m, x: x.max(), wide, {}),
    ("max dim", lambda m, x: x.max(1), wide, {}),
    ("amax", lambda m, x: m.amax(x, 0), wide, {}),
    ("min dim keepdim", lambda m, x: x.min(dim=0, keepdim=True), wide, {}),
    ("aminmax", lambda m, x: tuple(m.aminmax(x, dim=1)), wide, {}),
    ("argmax", lambda m, x: x.argmax(1), wide, {}),
    ("median", lambda m, x: x.median(), wide, {}),
    ("median dim", lambda m, x: x.median(1), wide, {}),
    ("kthvalue", lambda m, x: tuple(m.kthvalue(x, 3, 1)), wide, {}),
    ("sort", lambda m, x: tuple(x.sort(dim=1, descending=True, stable=True)), wide, {}),  # (16 bits: many ties)
    ("topk", lambda m, x: tuple(x.topk(3)), lambda d: [X(d, 3, 5, seed=12)], {}),  # (no ties in these)
    ("cummax", lambda m, x: tuple(m.cummax(x, 1)), wide, {}),
    ("all", lambda m, x: (x > -3).all(), wide, {}),
    ("count_nonzero", lambda m, x: m.count_nonzero(x.round(), dim=1), wide, {}),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name, fn, make, options", REDUCTIONS, ids=[c[0] for c in REDUCTIONS])
def test_reductions_match_torch(name, fn, make, options, dtype):
    run_case(fn, make(dtype), dtype, **options)


# ---- indexing and shape ----------------------------------------------------------------------------------
def long(array):
    return (np.asarray(array), "int64")


INDEX = np.array([[0, 2, 2, 1, 0], [1, 1, 0, 2, 2], [2, 0, 1, 1, 0]])
ROWS = np.array([0, 2, 2, 1, 0, 2])

INDEXING = [
    ("gather", lambda m, x, i: x.gather(0, i), lambda d: [X(d, 3, 5), long(INDEX)], {}),
    ("index_select", lambda m, x, i: x.index_select(0, i), lambda d: [X(d, 3, 5), long(ROWS)], {}),
    ("getitem repeats", lambda m, x, i: x[i], lambda d: [X(d, 3, 5), long(ROWS)], {}),
    ("index_add", lambda m, x, s, i: x.index_add(0, i, s, alpha=2),
     lambda d: [X(d, 3, 5), X(d, 6, 5, seed=8), long(ROWS)], {}),
    ("scatter_add", lambda m, x, s, i: x.scatter_add(0, i, s), lambda d: [X(d, 3, 5), X(d, 3, 5, seed=8), long(INDEX)], {}),
    ("scatter", lambda m, x, s, i: m.scatter(x, 1, i[:, :2], s), lambda d: [X(d, 3, 5), X(d, 3, 2, seed=8), long(INDEX)], {}),
    ("index_put accumulate", lambda m, x, s, i: m.index_put(x, (i,), s, accumulate=True),
     lambda d: [X(d, 3, 5), X(d, 6, 5, seed=8), long(ROWS)], {}),
    ("masked_select", lambda m, x: x.masked_select(x > 0), lambda d: [X(d, 3, 5)], {}),
    ("slice", lambda m, x: x[1:, ::2], lambda d: [X(d, 3, 5)], {}),
    ("repeat", lambda m, x: x.repeat(3, 2), lambda d: [X(d, 3, 5)], {}),
    ("expand", lambda m, x: x[:, :1].expand(3, 40), lambda d: [X(d, 3, 5)], {}),
    ("cat", lambda m, x, y: m.cat([x, y, x], 1), lambda d: [X(d, 3, 5), X(d, 3, 5, seed=9)], {}),
    ("stack", lambda m, x, y: m.stack([x, y], 0), lambda d: [X(d, 3, 5), X(d, 3, 5, seed=9)], {}),
    ("reshape transpose", lambda m, x: x.reshape(5, 3).t().flatten(), lambda d: [X(d, 3, 5)], {}),
    ("tril", lambda m, x: x.tril(1), lambda d: [X(d, 3, 5)], {}),
    ("flip roll", lambda m, x: x.flip(0).roll(2, 1), lambda d: [X(d, 3, 5)], {}),
    ("diagonal trace", lambda m, x: (x.diagonal(), x[:, :3].trace()), lambda d: [X(d, 3, 5)], {}),
    ("diff", lambda m, x: x.diff(dim=1), lambda d: [X(d, 3, 5)], {}),
    ("repeat_interleave", lambda m, x: x.repeat_interleave(2, dim=0), lambda d: [X(d, 3, 5)], {}),
    ("unique", lambda m, x: m.unique(x.round()), lambda d: [X(d, 3, 5) * 3], {"grad": False}),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name, fn, make, options", INDEXING, ids=[c[0] for c in INDEXING])
def test_indexing_and_shape_ops_match_torch(name, fn, make, options, dtype):
    run_case(fn, make(dtype), dtype, **options)


# ---- mixed dtypes: torch's promotion, comparisons --------------------------------------------------------
MIXED = [
    ("16-bit * int64", lambda m, x, i: x * i, lambda d: [X(d, 6), long([1, 2, 3, -4, 5, 600])]),
    ("int64 + 16-bit", lambda m, x, i: i + x, lambda d: [X(d, 6), long([1, 2, 3, -4, 5, 600])]),
    ("16-bit / int64", lambda m, x, i: x / i, lambda d: [X(d, 6), long([1, 2, 3, -4, 5, 7])]),
    ("16-bit + bool", lambda m, x, b: x + b, lambda d: [X(d, 6), (np.array([1, 0, 1, 1, 0, 0], bool), "bool")]),
    ("16-bit + float32 0-d", lambda m, x, s: x + s, lambda d: [X(d, 6), (np.array(0.1), "float32")]),
    # torch's CPU kernels take the 0-d tensor of x * s and x / s as a scalar held in float32 (as a Python
    # number); s * x, s / x and x + s round it to 16 bits first (1/3: the two differ in about 1 element of 5)
    ("16-bit * float64 0-d", lambda m, x, s: x * s, lambda d: [X(d, 64), (np.array(1 / 3), "float64")]),
    ("16-bit * float32 0-d", lambda m, x, s: x * s, lambda d: [X(d, 64), (np.array(1 / 3), "float32")]),
    ("16-bit / float32 0-d", lambda m, x, s: x / s, lambda d: [X(d, 64), (np.array(0.3), "float32")]),
    ("float32 0-d * 16-bit", lambda m, x, s: s * x, lambda d: [X(d, 64), (np.array(1 / 3), "float32")]),
    ("float64 0-d / 16-bit", lambda m, x, s: s / x, lambda d: [X(d, 64), (np.array(0.3), "float64")]),
    ("16-bit + float32", lambda m, x, y: x + y, lambda d: [X(d, 6), (X("float32", 6, seed=2), "float32")]),
    ("int64 * 2.5", lambda m, i: i * 2.5, lambda d: [long([1, 2, 3])]),
    ("comparisons", lambda m, x, y: (x > y, x == y, x <= 0.5, x != x.round()),
     lambda d: [X(d, 6), X(d, 6, seed=2)]),
    ("isnan isfinite", lambda m, x: (m.isnan(m.log(x)), m.isfinite(m.log(x)), m.isinf(m.log(x))),
     lambda d: [X(d, 6) * 0 + np.array([0, -1, 1, 2, 0.5, -0.5])]),
    ("where bool int", lambda m, x, i: m.where(x > 0, x, i), lambda d: [X(d, 6), long([1, 2, 3, -4, 5, 6])]),
    ("cat int", lambda m, x, i: m.cat([x, i]), lambda d: [X(d, 6), long([1, 2, 3])]),
    ("to float32 and back", lambda m, x: (x.float() * 1.1).to(x.dtype), lambda d: [X(d, 6)]),
    ("sum dtype=float32", lambda m, x: x.sum(dtype=m.float32), lambda d: [X(d, 300)]),
    ("softmax dtype=float32", lambda m, x: x.softmax(0, dtype=m.float32), lambda d: [X(d, 30)],
     {"exact": False}),  # (float32: NumPy's exp and sums differ from torch's in the last float32 bit)
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", MIXED, ids=[c[0] for c in MIXED])
def test_mixed_dtypes_promote_as_torch(case, dtype):
    name, fn, make, *options = case
    run_case(fn, make(dtype), dtype, **(options[0] if options else {}))


def test_16bit_with_other_16bit_is_float32():
    def fn(m, x, y):
        return x + y, x * y
    run_case(fn, [X("bfloat16", 6), (X("float16", 6, seed=2), "float16")], "bfloat16")


# ---- the silent divergences NumPy alone gives ------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
def test_sum_of_4096_ones_is_4096(dtype):
    x = ml.ones(4096, dtype=getattr(ml, dtype))
    assert x.sum().item() == 4096  # NumPy's bfloat16 sum stops at 256 (float16's at 2048)
    assert x.cumsum(0)[-1].item() == 4096
    assert x.mean().item() == 1
    assert ml.ones(64, 64, dtype=getattr(ml, dtype), requires_grad=True).expand(4, 64, 64).sum().dtype == ml.dtypes.to_dtype(dtype)
    w = ml.ones(1, dtype=getattr(ml, dtype), requires_grad=True)
    w.expand(4096).sum().backward()  # the broadcast gradient sums in float32 too (torch: 4096)
    assert w.grad.item() == 4096 and w.grad.dtype == ml.dtypes.to_dtype(dtype)


def test_float16_mean_and_sum_of_a_hundred_thousand_values():
    x = ml.full((100_000,), 0.1, dtype=ml.float16)
    theirs = torch.full((100_000,), 0.1, dtype=torch.float16)
    assert x.mean().item() == theirs.mean().item() == float(np.float16(0.1))
    assert x.sum().item() == theirs.sum().item()  # (in float32, then rounded: 10000 to 16 bits)
    big = ml.full((100_000,), 1000.0, dtype=ml.float16)  # a float32 sum of 1e8 overflows float16: inf,
    assert math.isinf(big.sum().item())  # as torch's; the mean stays finite, as torch's
    assert big.mean().item() == torch.full((100_000,), 1000.0, dtype=torch.float16).mean().item() == 1000


@pytest.mark.parametrize("dtype", DTYPES)
def test_python_number_is_held_in_float32(dtype):
    """``x * 0.1``: torch multiplies by 0.1f and rounds once; NumPy rounds 0.1 to 16 bits first, a
    different number in about one element of five."""
    x = X(dtype, 10_000)
    ours = (t(ml, x, dtype=dtype) * 0.1).numpy().astype(np.float64)
    numpy_alone = (x.astype(ml.dtypes.to_dtype(dtype)) * 0.1).astype(np.float64)
    theirs = as_float64(t(torch, x, dtype=dtype) * 0.1)
    np.testing.assert_array_equal(ours, theirs)
    assert (numpy_alone != theirs).mean() > 0.05  # (the test can fail: NumPy alone differs)


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_sigmoid_and_var_round_once(dtype):
    """Computed step by step in 16 bits, these differ from torch in a large share of the elements.
    Rounded once they agree, except where float32 sums taken in another order (NumPy's pairwise,
    torch's vectorized) or torch's vectorized exp straddle a 16-bit rounding boundary: a rare
    difference of a step or two (float16: of its subnormal spacing, 2**-24, below 6e-5)."""
    x = X(dtype, 64, 100) * 3
    step = 2.0 ** -(8 if dtype == "bfloat16" else 11)
    for fn in (lambda m, v: v.softmax(-1), lambda m, v: m.sigmoid(v), lambda m, v: v.var(1)):
        ours, theirs = as_float64(fn(ml, t(ml, x, dtype=dtype))), as_float64(fn(torch, t(torch, x, dtype=dtype)))
        differ = ours != theirs
        assert differ.mean() < 0.005
        np.testing.assert_allclose(ours, theirs, rtol=2 * step, atol=2.0 ** -24)
    stepwise = x.astype(ml.dtypes.to_dtype(dtype))  # the softmax NumPy alone computes
    stepwise = np.exp(stepwise - stepwise.max(-1, keepdims=True))
    stepwise = stepwise / stepwise.sum(-1, keepdims=True, dtype=stepwise.dtype)
    assert (stepwise.astype(np.float64) != as_float64(t(torch, x, dtype=dtype).softmax(-1))).mean() > 0.05


@pytest.mark.parametrize("dtype", DTYPES)
def test_index_add_accumulates_in_16_bits_and_scatter_add_in_float32(dtype):
    """torch's own CPU kernels differ here, and minilora follows each: index_add (and index_put with
    accumulate, and the backward of x[index]) add one 16-bit rounding at a time, so 4096 ones stop at
    256 in bfloat16; scatter_add (and gather's backward) sums in float32."""
    index = np.zeros(4096, np.int64)
    for lib in (torch, ml):
        ones, zero = lib.ones(4096, dtype=getattr(lib, dtype)), lib.zeros(1, dtype=getattr(lib, dtype))
        i = lib.tensor(index)
        stall = 256 if dtype == "bfloat16" else 2048
        assert zero.index_add(0, i, ones).item() == stall, lib.__name__
        assert lib.index_put(zero, (i,), ones, accumulate=True).item() == stall, lib.__name__
        assert zero.scatter_add(0, i, ones).item() == 4096, lib.__name__


ROUNDED_DIVISIONS = {
    "floor": lambda m, x, y: m.div(x, y, rounding_mode="floor"), "x // y": lambda m, x, y: x // y,
    "trunc": lambda m, x, y: m.div(x, y, rounding_mode="trunc"), "x // 0.3": lambda m, x, y: x // 0.3,
    "trunc -0.7": lambda m, x, y: x.div(-0.7, rounding_mode="trunc"), "x // 0": lambda m, x, y: x // 0,
    "x // 0-d": lambda m, x, y: m.floor_divide(x, y[3]), "7.5 // y": lambda m, x, y: m.floor_divide(7.5, y),
    "x % y": lambda m, x, y: x % y, "x % 0.3": lambda m, x, y: x % 0.3, "fmod 0-d": lambda m, x, y: m.fmod(x, y[5]),
}


@pytest.mark.parametrize("name", ROUNDED_DIVISIONS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_rounded_division_matches_torch(name, dtype):
    """torch's floor/trunc division of two 16-bit tensors rounds every step to 16 bits (trunc(a / b)
    with the quotient rounded first; floor by Python's algorithm, ``(a - fmod(a, b)) / b``), but by
    a number or a 0-d tensor computes in float32 with the number unrounded, rounded once: near a
    quotient in the hundreds (16-bit integers 2 apart there) each lands on its own side, in about 1
    element of 10 (of 2 for trunc). Bit for bit, the sign of zero included, on 20,000 values."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal(20000) * 300
    y = (rng.uniform(0.01, 3, 20000)) * rng.choice([-1, 1], 20000)
    x[:20], y[20:40], x[40:50], y[50:60], x[60:70] = 0, 0, np.inf, np.nan, -0.0
    fn = ROUNDED_DIVISIONS[name]
    theirs = fn(torch, t(torch, x, dtype=dtype), t(torch, y, dtype=dtype))
    ours = fn(ml, t(ml, x, dtype=dtype), t(ml, y, dtype=dtype))
    assert dtype_name(ours) == dtype_name(theirs)
    ours, theirs = as_float64(ours), as_float64(theirs)
    np.testing.assert_array_equal(ours, theirs)
    number = ~np.isnan(theirs)
    np.testing.assert_array_equal(np.signbit(ours[number]), np.signbit(theirs[number]))


@pytest.mark.parametrize("weights", ["bfloat16", "float16", "float32", "float64", "int32", None])
def test_bincount_sums_weights_as_torch(weights):
    """torch's CPU bincount: float32 weights summed one by one in float32 (a float32 result), any
    other weights -- bfloat16 and float16 too -- summed in float64 (a float64 result). Empty input:
    int64 zeros, weights or not."""
    rng = np.random.default_rng(5)
    index = rng.integers(0, 5, 5000)
    w = (rng.standard_normal(5000) * 10).astype(np.float32)
    for size, minlength in ((5000, 0), (5000, 9), (0, 3)):
        results = []
        for lib in (torch, ml):
            i = t(lib, index[:size], dtype="int64")
            weight = None if weights is None else t(lib, w[:size], dtype=weights)
            results.append(i.bincount(weight, minlength=minlength) if size else lib.bincount(i, weight, minlength))
        theirs, ours = results
        assert dtype_name(ours) == dtype_name(theirs), (size, minlength)
        np.testing.assert_array_equal(as_float64(ours), as_float64(theirs))


@pytest.mark.parametrize("op", ["mean", "var", "std", "norm", "softmax", "logsumexp", "lerp", "round",
                                "nan_to_num", "median"])
def test_bfloat16_is_a_floating_dtype_for_every_op(op):
    """NumPy files bfloat16 under kind 'V': each of these used to refuse it or skip its float path."""
    x = ml.tensor([[0.5, -1.25, 2.0]], dtype=ml.bfloat16, requires_grad=True)
    calls = {"mean": lambda: x.mean(), "var": lambda: x.var(), "std": lambda: x.std(),
             "norm": lambda: x.norm(), "softmax": lambda: x.softmax(-1), "logsumexp": lambda: x.logsumexp(1),
             "lerp": lambda: ml.lerp(x, x * 2, 0.5), "round": lambda: ml.round(x * 1.3, decimals=1),
             "nan_to_num": lambda: ml.nan_to_num(x / 0), "median": lambda: x.median(1).values}
    out = calls[op]()
    assert out.dtype == ml.bfloat16 and out.requires_grad


def test_float32_and_float64_paths_unchanged():
    """The 16-bit handling sits behind one dtype check: float32 and float64 results are NumPy's own."""
    x = values("float32", 50, seed=11)
    for dtype in ("float32", "float64"):
        a = t(ml, x, dtype=dtype)
        array = a.numpy()
        np.testing.assert_array_equal((a * 0.1).numpy(), array * 0.1)
        from minilora import float32_math  # (torch's kernels: float32's, and float64's SLEEF and C exp: round 27)
        expected = float32_math.sigmoid(array) if dtype == "float32" else 1 / (1 + float32_math.exp_of_negative64(array))
        np.testing.assert_array_equal(a.sigmoid().numpy(), expected)
        from minilora.float32_sums import cascade_sum  # (float32 sum: torch's order of additions)
        expected_sum = cascade_sum(array, (0,)) if dtype == "float32" else array.sum()
        np.testing.assert_array_equal(a.sum().numpy(), expected_sum)
        assert (a * 0.1).dtype == a.dtype and a.sum().dtype == a.dtype


@pytest.mark.parametrize("name, fn", [
    ("elu", lambda x: ml.nn.functional.elu(x, alpha=0.7)),
    ("selu", lambda x: ml.nn.functional.selu(x)),
    ("celu", lambda x: ml.nn.functional.celu(x, alpha=0.5)),
    ("mish", lambda x: ml.nn.functional.mish(x)),
    ("std", lambda x: x.std(1)),
    ("std correction=0 keepdim", lambda x: ml.std(x, dim=0, correction=0, keepdim=True)),
    ("prod", lambda x: x.prod(1)),
    ("addcmul", lambda x: ml.addcmul(x, x, x.exp(), value=0.5)),
])
def test_ops_rewritten_for_16_bits_pass_the_float64_gradient_check(name, fn):
    """The ops given their own forward/backward here, checked against central differences."""
    from minilora.testing import grad_check
    x = ml.tensor(values("float64", 3, 5, seed=13) + np.array([0, 0.5, -0.5, 1, -1]), requires_grad=True)
    grad_check(fn, x, name=name)


def _overflowing_ops(dtype):
    """Calls on 16-bit tensors where float16 (and some bfloat16) results overflow, divide by zero or
    are invalid: torch gives inf/nan silently; NumPy's ufuncs would warn on each."""
    big = ml.full((4, 3), 300.0, dtype=dtype, requires_grad=True)
    signed = ml.tensor([[0.0, -1.0, 2.0]], dtype=dtype)
    return {
        "x * 300.0": lambda: big * 300.0, "x * x * x": lambda: big * big * big, "x / 1e-3": lambda: big / 1e-3,
        "x + x": lambda: big * 300.0 + big * 300.0, "x ** 3": lambda: big ** 3, "exp": lambda: big.exp(),
        "1 / x": lambda: 1 / signed, "log": lambda: signed.log(), "sqrt": lambda: signed.sqrt(),
        "x // 0": lambda: big // signed.expand(4, 3), "fmod": lambda: ml.fmod(big, signed),
        "sum": lambda: (big * big).sum(), "matmul": lambda: big @ big.T, "norm": lambda: big.norm(),
        "sigmoid": lambda: (-big * big).sigmoid(), "layer_norm": lambda: ml.nn.functional.layer_norm(
            big * big * big, (3,)), "softmax": lambda: (big * big * big).softmax(-1),
        "backward": lambda: (big * big * big).sum().backward(),
        "backward of sqrt(0)": lambda: (big * 0).sqrt().sum().backward(),
    }


@pytest.mark.parametrize("dtype", DTYPES)
def test_16_bit_overflow_is_silent_as_in_torch(dtype):
    """``x * 300.0`` on float16 values of 300 is inf in torch, without a word; minilora's 16-bit ops
    (and their backward, and the blocks its threads compute) silence NumPy's RuntimeWarnings, so
    fp16 training does not print them at every overflow. The float32 paths are left as they were:
    the control below shows the test can fail."""
    threads = ml.parallel.num_threads()
    ml.set_num_threads(2)  # (the large layer_norm's rows split across threads: each needs the setting)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            for name, call in _overflowing_ops(ml.dtypes.to_dtype(dtype)).items():
                call()
            wide = ml.full((4096, 64), 6e4, dtype=getattr(ml, dtype))  # enough rows for parallel.rows to split
            ml.nn.functional.layer_norm(wide * wide, (64,))
        assert (ml.full((3,), 300.0, dtype=getattr(ml, dtype)) * 300.0).isinf().all() == (dtype == "float16")
        with pytest.warns(RuntimeWarning):  # the control: float32's 1 / 0 still warns, as before
            1 / ml.zeros(3)
    finally:
        ml.set_num_threads(threads)
