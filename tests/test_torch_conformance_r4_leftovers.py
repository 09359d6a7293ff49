"""Leftovers of the round-4 torch sweep, side by side with torch (values, dtypes, shapes, errors).

sign(NaN) is 0 in torch (NumPy's is NaN), and so are the gradients that use it (abs, the 1-, p- and
inf-norms at a NaN); ``tensor()`` of lists holding tensors; NumPy scalars torch cannot store; ``max(other=)``
and the other keyword spellings; cumulative and nan-ignoring reductions torch has (``logcumsumexp``,
``nanmedian``); ``addcmul`` rounded once in float32; and torch's exception types where they differ.
"""
import math
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import minilora as ml  # noqa: E402

NAN = float("nan")


def _values(t):
    """(dtype name, shape, values) of a torch or minilora tensor; NaN as a string, -0.0 kept apart."""
    if isinstance(t, torch.Tensor):
        dtype = str(t.dtype).replace("torch.", "")
        array = t.detach().float().numpy() if t.dtype == torch.bfloat16 else t.detach().numpy()
    else:
        dtype, array = str(t.dtype), np.asarray(t._array)
        array = array.astype(np.float32) if dtype == "bfloat16" else array
    values = [("nan" if v != v else (v, math.copysign(1, v)) if isinstance(v, float) else v)
              for v in np.ravel(array).tolist()]
    return dtype, tuple(t.shape), values


def _same(snippet):
    """``snippet(lib)`` with torch and minilora: equal tensors (tuples of them), or the same exception
    type. Returns the torch result (or exception) for further checks."""
    try:
        expected = snippet(torch)
    except Exception as exc:
        with pytest.raises(type(exc)):
            snippet(ml)
        return exc
    got = snippet(ml)
    if isinstance(expected, torch.Tensor):
        assert _values(got) == _values(expected)
    elif isinstance(expected, tuple):
        assert len(got) == len(expected)
        for g, e in zip(got, expected):
            assert _values(g) == _values(e)
    else:
        assert got == expected and type(got) is type(expected)
    return expected


_FLOATS = ["float16", "bfloat16", "float32", "float64"]


# ---- sign(NaN) is 0, and the gradients built on it ----------------------------------------------
@pytest.mark.parametrize("dtype", _FLOATS)
def test_sign_of_nan_is_zero(dtype):
    _same(lambda L: L.sign(L.tensor([1.0, NAN, -2.0, 0.0, -0.0], dtype=getattr(L, dtype))))
    _same(lambda L: L.tensor(NAN, dtype=getattr(L, dtype)).sign())


def _grad(L, op, values=(1.0, NAN, -2.0, 0.0)):
    x = L.tensor(list(values), requires_grad=True)
    op(x).backward()
    return x.grad


def test_zero_norm_counts_nans():  # (torch's gradient of the 0-norm is None, minilora's zeros: left)
    _same(lambda L: L.tensor([1.0, NAN, -2.0, 0.0]).norm(p=0))


@pytest.mark.parametrize("p", [1, 2, 3, 0.5, math.inf, -math.inf])
def test_norm_gradient_at_a_nan(p):
    _same(lambda L: _grad(L, lambda x: x.norm(p=p)))
    _same(lambda L: _grad(L, lambda x: x.norm(p=p), values=(1.0, NAN, -2.0, NAN)))


def test_abs_gradient_at_a_nan():
    _same(lambda L: _grad(L, lambda x: x.abs().sum()))


# ---- tensor(data): tensors in a list are numbers; NumPy scalars torch cannot store --------------
_TENSOR_LISTS = {
    "one-element tensor and a number": lambda L: [L.tensor([1.0]), 2],
    "0-d tensors": lambda L: [L.tensor(1.0), L.tensor(2.0)],
    "a tuple of one-element tensors": lambda L: (L.tensor([1.0]), L.tensor([2.0])),
    "a 1x1 tensor": lambda L: [L.tensor([[1.0]]), 2],
    "nested": lambda L: [[L.tensor([1.0]), 2], [3, 4]],
    "int32 tensor and an int": lambda L: [L.tensor([1], dtype=L.int32), 2],
    "int32 tensors": lambda L: [L.tensor(1, dtype=L.int32), L.tensor(2, dtype=L.int32)],
    "float64 tensor": lambda L: [L.tensor([1.0], dtype=L.float64), 2],
    "bfloat16 tensor": lambda L: [L.tensor([1.5], dtype=L.bfloat16), L.tensor(2.0, dtype=L.bfloat16)],
    "bool tensor and an int": lambda L: [L.tensor([True]), 2],
    "two-element tensors": lambda L: [L.tensor([1.0, 2.0]), L.tensor([3.0, 4.0])],
}


@pytest.mark.parametrize("dtype", [None, "int64", "float64", "bool"])
@pytest.mark.parametrize("case", sorted(_TENSOR_LISTS))
def test_tensor_of_a_list_of_tensors(case, dtype):
    _same(lambda L: L.tensor(_TENSOR_LISTS[case](L), dtype=dtype and getattr(L, dtype)))


def test_tensor_of_a_list_with_a_tensor_requiring_grad_warns_as_torch():
    # torch's warning is TORCH_WARN_ONCE: once per process, so after any earlier test's float(t) of such a
    # tensor torch is silent; its text is checked here, the warning itself only on minilora's side
    with pytest.warns(UserWarning, match="requires_grad=True to a scalar"):
        ml.tensor([ml.tensor(1.0, requires_grad=True), 2.0])
    assert "Converting a tensor with requires_grad=True to a scalar" in _torch_scalar_warning_text()


def _torch_scalar_warning_text():
    import subprocess
    import sys
    code = ("import warnings, torch\nwith warnings.catch_warnings(record=True) as w:\n"
            "    warnings.simplefilter('always')\n    torch.tensor([torch.tensor(1.0, requires_grad=True), 2.0])\n"
            "print([str(x.message) for x in w])")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout


_NUMPY_SCALARS = [np.bool_(True), np.int8(3), np.uint8(3), np.int64(3), np.float16(2.5), np.float32(2.5),
                  np.float64(2.5)]
_DTYPES = [None, "bool", "uint8", "int8", "int32", "int64", "float16", "float32", "float64"]


@pytest.mark.parametrize("dtype", _DTYPES)
@pytest.mark.parametrize("scalar", _NUMPY_SCALARS, ids=lambda s: type(s).__name__)
def test_tensor_of_a_numpy_scalar(scalar, dtype):  # torch: no bool into ints, no float32 into ints/bool
    _same(lambda L: L.tensor([[scalar], [scalar]], dtype=dtype and getattr(L, dtype)))
    _same(lambda L: L.tensor(scalar, dtype=dtype and getattr(L, dtype)))


@pytest.mark.parametrize("pair", [(np.int8(3), np.True_), (np.True_, np.int8(3)), (np.True_, 2),
                                  (np.float32(1), np.True_), (np.int8(3), True), (np.True_, np.False_)],
                         ids=str)
def test_tensor_of_mixed_numpy_scalars(pair):
    _same(lambda L: L.tensor(list(pair)))


# ---- addcmul in float32: one fused multiply-add, as torch's kernel -------------------------------
def _addcmul_random(L, dtype, value):
    rng = np.random.default_rng(0)
    scale = 1 if dtype in ("float16", "bfloat16") else 100
    arrays = [rng.standard_normal(2000).astype(np.float32) * s for s in (scale * scale, scale, scale)]
    return L.addcmul(*(L.tensor(a, dtype=getattr(L, dtype)) for a in arrays), value=value)


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("value", [1, 2.5, 0.1, -3])
def test_addcmul_rounds_once_as_torch(dtype, value):
    _same(lambda L: _addcmul_random(L, dtype, value))


@pytest.mark.parametrize("value", [1, 2.5, 0.1, -3])
def test_addcmul_float64_within_an_ulp(value):  # torch's float64 FMA is not emulated (no wider float)
    got, want = (_addcmul_random(L, "float64", value) for L in (ml, torch))
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=0, atol=1e-10)  # terms ~1e5: an ulp 1e-11


def test_addcmul_float32_fma_example_and_gradients():
    _same(lambda L: L.addcmul(*(L.tensor([-60000.0]) for _ in range(3)), value=2.5))

    def grads(L):
        t = [L.tensor(v, requires_grad=True) for v in ([[1.5, -2.0]], [[3.0], [0.25]], [2.0, 5.0])]
        (L.addcmul(*t, value=2.5) * L.tensor([[1.0, 2.0], [3.0, 4.0]])).sum().backward()
        return tuple(x.grad for x in t)
    _same(grads)
    _same(lambda L: L.addcmul(L.ones(2, 3), L.ones(4), L.ones(4)))  # cannot broadcast: RuntimeError
    _same(lambda L: L.addcmul(L.ones(3), L.ones(2, 1, dtype=L.int64), L.ones(3), value=2))


# ---- var_mean / std_mean: torch's one-pass mean of infinities --------------------------------------
INF = float("inf")


@pytest.mark.parametrize("values", [[-INF] * 3, [INF] * 3, [-INF, 1.0], [1.0, -INF], [INF, -INF], [1.0, NAN],
                                    [INF], [1.0, 2.0, INF, 3.0], [1.0, 2.0, 3.0, INF], [1e38] * 3],
                         ids=str)
@pytest.mark.parametrize("fn", ["var_mean", "std_mean"])
def test_var_mean_of_infinities(fn, values):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (one element: torch's and minilora's degrees-of-freedom warning)
        _same(lambda L: getattr(L, fn)(L.tensor(values)))
        _same(lambda L: getattr(L, fn)(L.tensor([values, values[::-1]]).T, dim=0))
        _same(lambda L: getattr(L, fn)(L.tensor([values, values[::-1]]), dim=1, keepdim=True))
        _same(lambda L: getattr(L, fn)(L.tensor([values, values[::-1]]).reshape(2, -1, 1), dim=(1, 2)))


# ---- keyword spellings: max(other=), min(other=), matmul(other=); matmul of 0-d tensors -----------
_A, _B = [1.0, 5.0, NAN], [3.0, 3.0, 1.0]
_KEYWORD_CALLS = {
    "x.max(other=y)": lambda L: L.tensor(_A).max(other=L.tensor(_B)),
    "x.min(other=y)": lambda L: L.tensor(_A).min(other=L.tensor(_B)),
    "max(x, other=y)": lambda L: L.max(L.tensor(_A), other=L.tensor(_B)),
    "min(input=x, other=y)": lambda L: L.min(input=L.tensor(_A), other=L.tensor(_B)),
    "max(x, 0, other=y)": lambda L: L.max(L.tensor(_A), 0, other=L.tensor(_B)),
    "max(x, other=y, keepdim=True)": lambda L: L.max(L.tensor(_A), other=L.tensor(_B), keepdim=True),
    "max(x, other=3)": lambda L: L.max(L.tensor(_A), other=3),
    "x.matmul(other=y)": lambda L: L.tensor(_B).matmul(other=L.tensor(_B)),
    "matmul(input=x, other=y)": lambda L: L.matmul(input=L.ones(2, 3), other=L.ones(3)),
    "0-d @ 1-d": lambda L: L.tensor(2.0) @ L.tensor([3.0]),
    "matmul(1-d, 0-d)": lambda L: L.matmul(L.tensor([2.0]), L.tensor(3.0)),
    "matmul(0-d, 0-d)": lambda L: L.matmul(L.tensor(2.0), L.tensor(3.0)),
}


@pytest.mark.parametrize("call", sorted(_KEYWORD_CALLS))
def test_keyword_spellings_and_errors(call):
    _same(_KEYWORD_CALLS[call])


def test_max_other_gradient():
    def grads(L):
        x, y = L.tensor([1.0, 5.0, 2.0], requires_grad=True), L.tensor([3.0, 3.0, 2.0], requires_grad=True)
        x.max(other=y).sum().backward()
        return x.grad, y.grad
    _same(grads)


# ---- in-place binary ops: the promoted dtype must fit self before the kernel runs ----------------
_INPLACE = ["__iand__", "__ior__", "__ixor__", "__ifloordiv__", "__imod__", "__ilshift__", "__irshift__",
            "bitwise_and_", "bitwise_or_", "remainder_", "floor_divide_", "__iadd__", "__imul__"]


@pytest.mark.parametrize("other", [2.5, True, 2, -1, "float32 tensor", "int64 tensor", "bool tensor"])
@pytest.mark.parametrize("dtype", ["int64", "uint8", "bool", "float32"])
@pytest.mark.parametrize("op", _INPLACE)
def test_in_place_result_type_check(op, dtype, other):
    def run(L):
        x = L.tensor([3, 4], dtype=getattr(L, dtype))
        y = L.tensor([1, 2], dtype=getattr(L, other.split()[0])) if isinstance(other, str) else other
        return getattr(x, op)(y)
    _same(run)


# ---- x[i] = value: torch takes a tensor or a number, never a list, tuple or ndarray ----------------
@pytest.mark.parametrize("value", [[300, 1], [3.0, 1.0], (3, 1), np.array([300, 1]), np.array(2.0), [[3, 1]],
                                   2, 2.5, np.int64(3), np.float32(2.5)],
                         ids=repr)
@pytest.mark.parametrize("dtype", ["int8", "float32"])
def test_setitem_value_kinds(dtype, value):
    def run(L):
        x = L.zeros(3, dtype=getattr(L, dtype))
        x[:2] = value
        return x
    _same(run)


@pytest.mark.parametrize("value", [np.True_, True, np.int8(3), np.float16(2.5), np.float64(2.5), np.uint8(3), 3, 2.5],
                         ids=repr)
def test_full_dtype_of_a_numpy_scalar(value):  # torch: a NumPy bool fills the default float dtype
    _same(lambda L: L.full((2,), value))
    _same(lambda L: L.full_like(L.zeros(2, dtype=L.int32), value))


# ---- softmax / log_softmax of integer tensors: refused, unless empty (torch's kernel never runs) ---
@pytest.mark.parametrize("shape", [(0, 3), (0,), (3, 0), (2, 3)])
@pytest.mark.parametrize("dtype", ["int64", "bool", "uint8"])
@pytest.mark.parametrize("fn", ["softmax", "log_softmax"])
def test_integer_softmax(fn, dtype, shape):
    _same(lambda L: getattr(L, fn)(L.zeros(shape, dtype=getattr(L, dtype)), dim=-1))
    _same(lambda L: getattr(L.nn.functional, fn)(L.zeros(shape, dtype=getattr(L, dtype)), dim=0))
    _same(lambda L: getattr(L.zeros(shape, dtype=getattr(L, dtype)), fn)(0, dtype=L.float64))


# ---- functions torch has: rsub, scalar_tensor, nanmedian, logcumsumexp -----------------------------
@pytest.mark.parametrize("call", [
    lambda L: L.rsub(L.tensor([1.0, 2.0]), L.tensor([5.0, 5.0]), alpha=2),
    lambda L: L.rsub(L.tensor([1, 2]), 2.5, alpha=2),
    lambda L: L.rsub(L.tensor([1, 2]), L.tensor([5])),
    lambda L: L.rsub(L.tensor([1.0]), 2, alpha=0.5),
    lambda L: L.rsub(L.tensor([True]), True),
    lambda L: L.scalar_tensor(3),
    lambda L: L.scalar_tensor(True),
    lambda L: L.scalar_tensor(2.5, dtype=L.float64),
    lambda L: L.scalar_tensor(3, dtype=L.int64),
])
def test_rsub_and_scalar_tensor(call):
    _same(call)


_NANS = [[NAN, NAN, NAN], [1.0, NAN, 2.0], [3.0, 1.0, 2.0], [2.0, 2.0, NAN]]


@pytest.mark.parametrize("call", [
    lambda L: L.nanmedian(L.tensor(_NANS), 1),
    lambda L: L.nanmedian(L.tensor(_NANS), dim=0, keepdim=True),
    lambda L: L.tensor(_NANS).nanmedian(-1),
    lambda L: L.tensor(_NANS).nanmedian(),
    lambda L: L.tensor([NAN, NAN]).nanmedian(),
    lambda L: L.tensor([3, 1, 2, 2]).nanmedian(),
    lambda L: L.nanmedian(L.tensor([[3, 1, 2, 2]]), 1),
    lambda L: L.nanmedian(L.tensor(2.0), 0),
    lambda L: L.nanmedian(L.zeros(0)),
    lambda L: L.nanmedian(L.zeros(0, 2), 0),
    lambda L: L.nanmedian(L.tensor(_NANS), None),
], ids=range(11))
def test_nanmedian(call):
    _same(call)


@pytest.mark.parametrize("values", [[1.0, NAN, 2.0, 2.0], [NAN, NAN], [4.0, NAN, 1.0, 3.0]], ids=str)
def test_nanmedian_gradients(values):
    def grads(L):
        x = L.tensor(values, requires_grad=True)
        x.nanmedian().backward()
        y = L.tensor([values, values[::-1]], requires_grad=True)
        y.nanmedian(1).values.sum().backward()
        return x.grad, y.grad
    _same(grads)


@pytest.mark.parametrize("dtype", ["float32", "float64", "float16", "bfloat16", "int64"])
@pytest.mark.parametrize("case", ["vector", "rows", "columns", "0-d", "infinities", "empty"])
def test_logcumsumexp(case, dtype):
    def run(L):
        x = {"vector": lambda: L.tensor([1.0, 2.0, 3.0]),
             "rows": lambda: L.tensor([[1.0, -3.0, 200.0], [1000.0, 2.0, 2.0]]),
             "columns": lambda: L.tensor([[1.0, -3.0, 200.0], [1000.0, 2.0, 2.0]]).T,
             "0-d": lambda: L.tensor(2.0),
             "infinities": lambda: L.tensor([-INF, 1.0, INF, 2.0]),
             "empty": lambda: L.zeros(0, 3)}[case]().to(getattr(L, dtype))
        return L.logcumsumexp(x, 0), x.logcumsumexp(dim=-1)
    _same(run) if dtype in ("int64", "float64") else _close(run)


def _close(snippet):
    """As ``_same``, within a few float32 units in the last place (NumPy's logaddexp is not torch's)."""
    got, want = snippet(ml), snippet(torch)
    for g, w in zip(got, want):
        assert (str(g.dtype), tuple(g.shape)) == (str(w.dtype).replace("torch.", ""), tuple(w.shape))
        np.testing.assert_allclose(g.float().numpy(), w.float().numpy(), rtol=4e-7, atol=0)


def test_logcumsumexp_gradient_matches_torch_and_gradchecks():
    def grads(L):
        x = L.tensor([[1.0, -3.0, 200.0], [1000.0, 2.0, 2.0]], dtype=L.float64, requires_grad=True)
        (L.logcumsumexp(x, 1) * L.tensor([[1.0, -2.0, 3.0], [0.5, 4.0, -1.0]], dtype=L.float64)).sum().backward()
        return x.grad
    np.testing.assert_allclose(grads(ml).numpy(), grads(torch).numpy(), rtol=1e-12, atol=1e-300)
    rng = np.random.default_rng(0)
    x = ml.tensor(rng.standard_normal((3, 4)), dtype=ml.float64, requires_grad=True)
    assert ml.autograd.gradcheck(lambda t: ml.logcumsumexp(t, 1), (x,))
    assert ml.autograd.gradcheck(lambda t: ml.logcumsumexp(t, 0), (x,))


# ---- neighbours: fmax / fmin (NaN-ignoring, other= too), sgn, signbit ------------------------------
_PAIRS = [([1, -2], [1, -2]), ([1, -2], [1.5, NAN]), ([1.5, NAN, NAN, 2.0], [1, -2, NAN, 2.0]),
          ([True, False], [True, True])]


@pytest.mark.parametrize("pair", _PAIRS, ids=str)
@pytest.mark.parametrize("name", ["fmax", "fmin"])
def test_fmax_fmin(name, pair):
    a, b = pair
    _same(lambda L: getattr(L, name)(L.tensor(a), L.tensor(b)))
    _same(lambda L: getattr(L.tensor(a), name)(other=L.tensor(b)))
    _same(lambda L: getattr(L, name)(L.tensor([1.0]), 2.0))  # a number: torch's TypeError

    def grads(L):
        x = L.tensor([1.0, NAN, 2.0, 3.0], requires_grad=True)
        y = L.tensor([NAN, 1.0, 2.0, 4.0], requires_grad=True)
        getattr(L, name)(x, y).sum().backward()
        return x.grad, y.grad
    _same(grads)


@pytest.mark.parametrize("dtype", ["float32", "float64", "float16", "int64", "bool"])
def test_sgn_and_signbit(dtype):  # (bfloat16 left out: torch's float32 NaN -> bfloat16 sets the sign bit)
    _same(lambda L: L.signbit(L.tensor([-0.0, 0.0, NAN, -NAN, -2.0, 3.0]).to(getattr(L, dtype))))
    _same(lambda L: L.tensor([-0.0, 0.0, NAN, -2.0, 3.0]).to(getattr(L, dtype)).sgn())


def test_where_method_other_keyword():  # torch's name is other (its docstring says y, which it refuses)
    _same(lambda L: L.tensor([1.0, -2.0]).where(L.tensor([True, False]), other=0.0))
    _same(lambda L: L.tensor([1.0, -2.0]).where(L.tensor([True, False]), L.tensor([5.0, 6.0])))


# ---- in-place forms torch has: x.fmod_(y), x.eq_(y), x.logical_and_(y), x.tril_(), x.acos_() ... --
_UNARY_INPLACE = "acos_ acosh_ asin_ asinh_ atan_ atanh_ cosh_ sinh_ tan_ erf_ exp2_ log10_ log2_ sgn_ " \
                 "negative_ bitwise_not_ logical_not_".split()
_BINARY_INPLACE = "fmod_ atan2_ arctan2_ xlogy_ logical_and_ logical_or_ logical_xor_ eq_ ne_ lt_ le_ gt_ " \
                  "ge_".split()


def _inplace_operand(L, dtype):
    return L.tensor([[0.5, -0.25, 2.0], [0.0, 1.0, 3.0]]).to(getattr(L, dtype))


def _close_or_same(snippet):
    """Equal dtype, shape and exception type; values within 2 float32 ulps (libm's last bit differs)."""
    try:
        want = snippet(torch)
    except Exception as exc:
        with pytest.raises(type(exc)):
            snippet(ml)
        return
    got = snippet(ml)
    assert _values(got)[:2] == _values(want)[:2]
    np.testing.assert_allclose(got.float().numpy(), want.float().numpy(), rtol=2.5e-7, atol=0)


@pytest.mark.parametrize("dtype", ["float32", "float64", "int64", "uint8", "bool", "float16"])
@pytest.mark.parametrize("name", _UNARY_INPLACE)
def test_unary_in_place_forms(name, dtype):
    def run(L):
        x = _inplace_operand(L, dtype)
        assert getattr(x, name)() is x
        return x
    _close_or_same(run)


@pytest.mark.parametrize("other", [2.5, "float", "int"])
@pytest.mark.parametrize("dtype", ["float32", "int64", "bool"])
@pytest.mark.parametrize("name", _BINARY_INPLACE)
def test_binary_in_place_forms(name, dtype, other):
    def run(L):
        x = _inplace_operand(L, dtype)
        y = {"float": L.tensor([1.0, 0.0, -2.0]), "int": L.tensor([1, 0, 2])}.get(other, other)
        assert getattr(x, name)(y) is x
        return x
    _close_or_same(run)


def test_tril_triu_in_place():
    _same(lambda L: _inplace_operand(L, "float32").tril_(1))
    _same(lambda L: _inplace_operand(L, "int64").triu_(diagonal=-1))


@pytest.mark.parametrize("dtype", ["float32", "float64", "bfloat16", "int64", "bool"])
def test_invert_and_bitwise_not_errors(dtype):  # ~x: TypeError; bitwise_not(x): NotImplementedError
    _same(lambda L: ~L.ones(2, dtype=getattr(L, dtype)))
    _same(lambda L: L.bitwise_not(L.ones(2, dtype=getattr(L, dtype))))
    _same(lambda L: L.ones(2, dtype=getattr(L, dtype)).bitwise_not_())


_SIGN_PAIRS = {"ints": (lambda L: L.tensor([1, -2]), lambda L: L.tensor([1, -2])),
               "int, float": (lambda L: L.tensor([1, -2]), lambda L: L.tensor([1.5, NAN])),
               "float, int": (lambda L: L.tensor([1.5, NAN]), lambda L: L.tensor([1, -2])),
               "bools": (lambda L: L.tensor([True, False]), lambda L: L.tensor([True, True])),
               "float16, float32": (lambda L: L.tensor([3.0, 4.0]).half(), lambda L: L.tensor([4.0, -3.0])),
               "signed zeros": (lambda L: L.tensor([0.0, -0.0, 3.0]), lambda L: L.tensor([-0.0, 0.0, -NAN])),
               "a number": (lambda L: L.tensor([1.5, NAN]), lambda L: -2.0),
               "minus zero": (lambda L: L.tensor([1.5, -2.0]), lambda L: -0.0)}


@pytest.mark.parametrize("case", sorted(_SIGN_PAIRS))
@pytest.mark.parametrize("name", ["hypot", "copysign"])
def test_hypot_copysign(name, case):
    a, b = _SIGN_PAIRS[case]
    _same(lambda L: getattr(L, name)(a(L), b(L)))
    _same(lambda L: getattr(a(L), name)(other=b(L)))

    def grads(L):
        x = L.tensor([[1.0, 0.5, -3.0]], requires_grad=True)
        y = L.tensor([[2.0], [-0.5]], requires_grad=True)
        getattr(L, name)(x, y).sum().backward()
        return x.grad.numpy(), (y.grad if y.grad is not None else L.zeros(2, 1)).numpy()
    for got, want in zip(grads(ml), grads(torch)):  # (copysign: torch's other.grad is zeros, ours None)
        np.testing.assert_allclose(got, want, rtol=1e-6)


# ---- var / std in float32: torch's CPU kernel accumulates in float64, rounds once -----------------
@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])  # (float64: last bits differ, left)
@pytest.mark.parametrize("dim", [1, 0, None, (0, 2)])
@pytest.mark.parametrize("fn", ["var", "std"])
def test_var_std_round_once(fn, dim, dtype):
    x = np.random.default_rng(1).standard_normal((20, 37, 3)).astype(np.float32) * 3 + 1
    _same(lambda L: getattr(L, fn)(L.tensor(x).to(getattr(L, dtype)), dim=dim))
    _same(lambda L: getattr(L, fn)(L.tensor([[2.0, 0.0, -1.0]]).to(getattr(L, dtype)), dim=1))

    def grads(L):
        t = L.tensor(x[:4, :5, 0], requires_grad=True)
        getattr(L, fn)(t, dim=1).sum().backward()
        return t.grad.numpy()
    np.testing.assert_allclose(grads(ml), grads(torch), rtol=2e-6)


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("dim", [1, 0, None])
@pytest.mark.parametrize("fn", ["var_mean", "std_mean"])
def test_var_mean_mean_rounds_once(fn, dim, dtype):  # (the mean accumulated in float64, as var)
    x = np.random.default_rng(0).standard_normal((200, 37)).astype(np.float32) * 3 + 1
    _same(lambda L: getattr(L, fn)(L.tensor(x).to(getattr(L, dtype)), dim=dim))
