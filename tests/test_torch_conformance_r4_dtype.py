"""Integer scalars and ``tensor()``'s dtype inference side by side with torch (round 4).

torch turns a Python number taking part in an op with a tensor into a 0-d tensor of the op's dtype
with C's wrap-around: ``uint8 tensor + 300`` adds 44, ``uint8 tensor < -1`` compares with 255. Where
torch *stores* a number (``fill_``, ``full``, ``masked_fill``, ``where``, ``clamp``, ``x[i] = v``) it
checks the value fits and raises RuntimeError. NumPy does neither (it raises OverflowError, or compares
the exact values): these tests sweep every integer dtype, every binary op and numbers at and past the
bounds, in both orders, and compare values, dtypes and exception types with torch.

The same sweep runs over float16/bfloat16/float32/float64 tensors with huge and odd Python numbers
(``float16 + 1e6`` is inf, ``fill_(1e6)`` raises, ``1.0 // 0.1`` is 9) and over NumPy scalars, which
torch takes as the Python numbers they hold (a NumPy bool as a float: torch's quirk, kept).

``tensor(data)`` infers torch's dtype: NumPy scalars keep theirs inside a list (``[np.float64(1), 2]``
is float64), Python ints past int64 are an error. Also here: which reductions take ``dim=None``, and
``backward(gradient)`` with a number (torch: TypeError).
"""
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import minilora as ml  # noqa: E402
from test_torch_conformance_r3_tensor import REFUSED, torch_result  # noqa: E402


def _values(t):
    """(dtype name, shape, values) of a torch or minilora tensor: what must agree (NaN as a string)."""
    if isinstance(t, torch.Tensor):
        dtype, array = str(t.dtype).replace("torch.", ""), t.detach().float().numpy() \
            if t.dtype == torch.bfloat16 else t.detach().numpy()
    else:
        dtype, array = str(t.dtype), np.asarray(t._array)
        array = array.astype(np.float32) if dtype == "bfloat16" else array
    values = [("nan" if v != v else v) for v in np.ravel(array).tolist()]
    return dtype, tuple(t.shape), values


def _same(snippet, ulps=0):
    """Run ``snippet(lib)`` with torch and minilora: equal tensors (values within ``ulps`` units in
    the last place, where asked), or the same exception type."""
    expected = torch_result(snippet)
    if expected is REFUSED:
        return
    with warnings.catch_warnings(record=True) as caught:  # (minilora's own filters stay in force)
        got = snippet(ml)
    assert not [str(w.message) for w in caught]  # torch warns about none of these: no NumPy warning either
    if isinstance(expected, torch.Tensor) and ulps:
        (dtype, shape, values), (want_dtype, want_shape, want) = _values(got), _values(expected)
        assert (dtype, shape) == (want_dtype, want_shape)
        got_values, want = (np.array([np.nan if v == "nan" else v for v in x]) for x in (values, want))
        eps = np.finfo(np.float32 if dtype == "float32" else np.float64).eps
        np.testing.assert_allclose(got_values, want, rtol=ulps * eps, atol=0)
    elif isinstance(expected, torch.Tensor):
        assert _values(got) == _values(expected)
    else:
        assert got == expected and type(got) is type(expected)


# ---- the sweep: integer and bool tensors with Python ints at and past their bounds --------------
_INT_DTYPES = ["uint8", "int8", "int16", "int32", "int64", "bool"]
_SCALARS = [-1, 0, 2, 127, 128, -128, -129, 255, 256, 300, -255, -256, 2**31, -2**31 - 1, 2**40,
            2**63 - 1, -2**63, 2**63, 2**64, True]
_FLOAT_DTYPES = ["float16", "bfloat16", "float32", "float64"]
_FLOAT_SCALARS = [1e6, -1e6, 70000, 65504, 65520.0, -65520.0, 1e39, -1e39, 2**63, 2**64, -2**63 - 1, 1e-8,
                  float("inf"), float("nan"), 0.1, 3, True]


def _tensor(lib, dtype):
    if dtype in _FLOAT_DTYPES:
        values = [1.0, -60000.0, 0.1, 100.0]
    else:
        values = [True, False, True, False] if dtype == "bool" else [1, 2, 7, 100]
    return lib.tensor(values, dtype=getattr(lib, dtype))


_MASK = [True, False, False, True]

_BINARY = {
    "add": lambda x, s: x + s, "radd": lambda x, s: s + x,
    "sub": lambda x, s: x - s, "rsub": lambda x, s: s - x,
    "mul": lambda x, s: x * s, "rmul": lambda x, s: s * x,
    "floordiv": lambda x, s: x // s, "rfloordiv": lambda x, s: s // x,
    "mod": lambda x, s: x % s, "rmod": lambda x, s: s % x,
    "pow": lambda x, s: x ** s, "rpow": lambda x, s: s ** x,
    "and": lambda x, s: x & s, "rand": lambda x, s: s & x,
    "or": lambda x, s: x | s, "ror": lambda x, s: s | x,
    "xor": lambda x, s: x ^ s, "rxor": lambda x, s: s ^ x,
    "lt": lambda x, s: x < s, "rlt": lambda x, s: s < x,
    "le": lambda x, s: x <= s, "rle": lambda x, s: s <= x,
    "gt": lambda x, s: x > s, "rgt": lambda x, s: s > x,
    "ge": lambda x, s: x >= s, "rge": lambda x, s: s >= x,
    "eq": lambda x, s: x == s, "req": lambda x, s: s == x,
    "ne": lambda x, s: x != s, "rne": lambda x, s: s != x,
    "lshift": lambda x, s: x << s, "rlshift": lambda x, s: s << x,
    "rshift": lambda x, s: x >> s, "rrshift": lambda x, s: s >> x,
}


def _lib_ops(lib):
    """Ops that need the library itself (functions, factories, in-place writes)."""
    def setitem(x, s):
        x[0] = s
        return x
    return {
        "add_alpha": lambda x, s: lib.add(x, s, alpha=2),
        "alpha_is_s": lambda x, s: lib.add(x, 1, alpha=s),
        "sub_alpha": lambda x, s: lib.sub(x, s, alpha=2),
        "where_other": lambda x, s: lib.where(lib.tensor(_MASK), x, s),
        "where_input": lambda x, s: lib.where(lib.tensor(_MASK), s, x),
        "clamp_min": lambda x, s: x.clamp(min=s),
        "clamp_max": lambda x, s: x.clamp(max=s),
        "clamp_positional": lambda x, s: lib.clamp(x, s),
        "maximum_0d": lambda x, s: lib.maximum(x, lib.tensor(s)),
        "minimum_0d": lambda x, s: lib.minimum(x, lib.tensor(s)),
        "add_0d": lambda x, s: x + lib.tensor(s),
        "lt_0d": lambda x, s: x < lib.tensor(s),
        "fill_": lambda x, s: x.fill_(s),
        "fill_0d": lambda x, s: x.fill_(lib.tensor(s)),  # a 0-d tensor is copied: it wraps around
        "masked_fill_0d": lambda x, s: x.masked_fill(lib.tensor(_MASK), lib.tensor(s)),
        "masked_fill": lambda x, s: x.masked_fill(lib.tensor(_MASK), s),
        "setitem": setitem,
        "full": lambda x, s: lib.full((2,), s, dtype=x.dtype),
        "tensor_dtype": lambda x, s: lib.tensor([s, 1], dtype=x.dtype),
        "full_like": lambda x, s: lib.full_like(x, s),
        "new_full": lambda x, s: x.new_full((2,), s),
        "truediv": lambda x, s: x / s, "rtruediv": lambda x, s: s / x,
        "div_floor": lambda x, s: lib.div(x, s, rounding_mode="floor"),
        "div_trunc": lambda x, s: lib.div(x, s, rounding_mode="trunc"),
        "rdiv_trunc": lambda x, s: lib.div(s, x, rounding_mode="trunc"),
        "fmod": lambda x, s: lib.fmod(x, s), "remainder_fn": lambda x, s: lib.remainder(s, x),
        "eq_fn": lambda x, s: lib.eq(x, s), "lt_fn": lambda x, s: lib.lt(x, s),
        "ge_method": lambda x, s: x.ge(s), "ne_method": lambda x, s: x.ne(s),
        "mul_fn": lambda x, s: lib.mul(x, s), "sub_fn": lambda x, s: lib.sub(x, s),
        "pow_fn": lambda x, s: lib.pow(s, x),
        "bitwise_and_fn": lambda x, s: lib.bitwise_and(x, s), "bitwise_xor_method": lambda x, s: x.bitwise_xor(s),
        "add_": lambda x, s: x.add_(s), "mul_": lambda x, s: x.mul_(s), "sub_": lambda x, s: x.sub_(s),
        "iadd": lambda x, s: x.__iadd__(s), "ifloordiv": lambda x, s: x.__ifloordiv__(s),
        "imod": lambda x, s: x.__imod__(s), "iand": lambda x, s: x.__iand__(s),
        "clamp_": lambda x, s: x.clamp_(min=s), "clamp_min_fn": lambda x, s: lib.clamp_min(x, s),
        "clamp_max_fn": lambda x, s: lib.clamp_max(x, s), "clip": lambda x, s: x.clip(max=s),
        "masked_fill_": lambda x, s: x.masked_fill_(lib.tensor(_MASK), s),
        "where_numbers": lambda x, s: lib.where(lib.tensor(_MASK), s, 2),
        "addcmul_value": lambda x, s: lib.addcmul(x, x, x, value=s),
        "logical_and": lambda x, s: lib.logical_and(x, s),
        "isclose": lambda x, s: lib.isclose(x, lib.full_like(x, 1), atol=s) if not isinstance(s, int)
        else lib.isclose(x, x),
        "lerp_weight": lambda x, s: lib.lerp(x, x, s),
        "xlogy": lambda x, s: lib.xlogy(x, s), "logaddexp_0d": lambda x, s: lib.logaddexp(x, lib.tensor(s)),
        "nan_to_num": lambda x, s: lib.nan_to_num(x, nan=s, posinf=s),
        "le_0d_int": lambda x, s: x <= lib.tensor(s, dtype=lib.int64) if isinstance(s, int) else x <= s,
        "left_shift_fn": lambda x, s: lib.bitwise_left_shift(x, s),
        "right_shift_": lambda x, s: x.bitwise_right_shift_(s), "ilshift": lambda x, s: x.__ilshift__(s),
        "lshift_tensor": lambda x, s: x << lib.tensor([1, 9, -1, 70]).to(x.dtype),
        "rshift_tensor": lambda x, s: x >> lib.tensor([1, 9, -1, 70]).to(x.dtype),
        "init_constant_": lambda x, s: lib.nn.init.constant_(x, s),
        "leaky_relu_slope": lambda x, s: lib.nn.functional.leaky_relu(x.float(), s),
        "elu_alpha": lambda x, s: lib.nn.functional.elu(x.to(lib.float16), s),
        "softplus_beta": lambda x, s: lib.nn.functional.softplus(x.to(lib.float64), s),
        "pad_value": lambda x, s: lib.nn.functional.pad(x, (1, 1), value=s),
        "scatter_value": lambda x, s: x.scatter(0, lib.tensor([0, 2]), s),
        "scatter_value_": lambda x, s: x.scatter_(0, lib.tensor([1]), s),
        "index_fill": lambda x, s: x.index_fill(0, lib.tensor([0, 2]), s),
        "index_fill_": lambda x, s: x.index_fill_(0, lib.tensor([1]), s),
    }


_OPS = list(_BINARY) + list(_lib_ops(ml))


def _op(lib, name):
    return _BINARY[name] if name in _BINARY else _lib_ops(lib)[name]


# where the last bit may differ from torch, for reasons outside this file: NumPy's float32/float64 pow
# and log (3 ** 0.5 and log(7) in float32), and torch's addcmul, which rounds value * t1 * t2 + input once (a fused multiply-add)
_LAST_BIT = {"pow", "rpow", "pow_fn", "addcmul_value", "xlogy", "softplus_beta"}


def _sweep(name, dtype, scalars, ulps=0):
    for s in scalars:
        try:
            _same(lambda lib: _op(lib, name)(_tensor(lib, dtype), s), ulps)
        except AssertionError as exc:
            raise AssertionError(f"{name} on {dtype} with {s!r}: {exc}") from None


@pytest.mark.parametrize("dtype", _INT_DTYPES)
@pytest.mark.parametrize("name", _OPS)
def test_integer_tensor_with_python_int_as_torch(name, dtype):
    _sweep(name, dtype, _SCALARS, ulps=4 if name in _LAST_BIT else 0)


@pytest.mark.parametrize("dtype", _FLOAT_DTYPES)
@pytest.mark.parametrize("name", _OPS)
def test_float_tensor_with_huge_or_odd_python_number_as_torch(name, dtype):
    """float16/bfloat16 overflow to inf where torch computes (x + 1e6), refuse where torch stores
    (fill_(1e6)); Python ints past int64 and uint64; floor division by 0.1 (Python's algorithm)."""
    _sweep(name, dtype, _FLOAT_SCALARS, ulps=4 if name in _LAST_BIT and dtype in ("float32", "float64") else 0)


_NP_OPERANDS = [np.int64(300), np.int64(-1), np.float64(2.5), np.float64(1e39), np.uint8(200), np.int8(-1),
                np.float32(2.5), np.bool_(True), np.float16(0.1), np.int32(7)]
# left out, with torch's reason: tensor([np.float32(2.5)], dtype=int) is a TypeError in torch (minilora
# stores 2); x &= np.float64(2.5) is a RuntimeError in torch (minilora: NotImplementedError)
_NP_LEFT_OUT = {"tensor_dtype", "iand"}


@pytest.mark.parametrize("dtype", _INT_DTYPES + _FLOAT_DTYPES)
@pytest.mark.parametrize("name", [n for n in _OPS if n not in _NP_LEFT_OUT])
def test_numpy_scalar_operand_as_torch(name, dtype):
    """torch takes a NumPy scalar as the Python number it holds (np.int64(300) wraps into uint8 like
    300) -- and a NumPy bool as a float (int tensor + np.True_ is float32)."""
    _sweep(name, dtype, _NP_OPERANDS, ulps=4 if name in _LAST_BIT else 0)


# ---- tensor(): torch's dtype inference through lists, and its checks on stored numbers ------------
_NP_SCALARS = [np.float64(1.5), np.float32(1.5), np.float16(1.5), np.int64(3), np.int32(3), np.int16(3),
               np.int8(3), np.uint8(3), np.bool_(True)]
_PY_NUMBERS = [2, 2.5, True]


def _tensor_data():
    """Data a tutorial hands to tensor(): NumPy scalars alone, with each other and with Python
    numbers, nested, 0-d arrays, arrays in lists, empty lists."""
    data = [[s] for s in _NP_SCALARS] + [s for s in _NP_SCALARS]
    data += [[s, p] for s in _NP_SCALARS for p in _PY_NUMBERS if not isinstance(s, np.bool_)]
    data += [[p, s] for s in _NP_SCALARS for p in _PY_NUMBERS if not isinstance(s, np.bool_)]
    # (left out: a NumPy bool among NumPy ints, which torch refuses with a TypeError; minilora takes 1/0)
    data += [[a, b] for a in _NP_SCALARS for b in _NP_SCALARS
             if not (a.dtype.kind in "iu" and b.dtype == bool or b.dtype.kind in "iu" and a.dtype == bool)]
    data += [[[np.float64(1)], [2.0]], [[1, 2], [np.int32(3), 4]], [np.array([1.0, 2.0]), [3, 4]],
             [np.array([1, 2], dtype=np.int32), [3, 4]], np.array(1.5), np.array(3, dtype=np.int16),
             [], [[], []], [1, 2.0], [True, 1], [True, 2.5], [np.int64(2**62), 1.0], [1.0, 2**63],
             [1, 2**63], [2**63], 2**63, [-2**63 - 1], [2**64], [1, -2**63], (np.float64(1), 2), range(3)]
    return data


@pytest.mark.parametrize("index", range(len(_tensor_data())))
def test_tensor_infers_the_dtype_torch_infers(index):
    data = _tensor_data()[index]
    _same(lambda lib: lib.tensor(data))


@pytest.mark.parametrize("dtype", ["uint8", "int8", "int32", "int64", "bool", "float16", "bfloat16", "float32"])
@pytest.mark.parametrize("data", [[2.7, -0.5], [-1.5], [300.5], [-1, 255], [-255], [-256], [2**31], [1e39],
                                  [70000], [70000.0], [float("nan")], [float("inf")], [2**63], [2**62, 2.5],
                                  [np.float64(1e300)], [np.int64(300)]])
def test_tensor_with_dtype_stores_as_torch(data, dtype):
    _same(lambda lib: lib.tensor(data, dtype=getattr(lib, dtype)))


def test_tensor_of_tensors_in_a_list_keeps_their_dtype():
    _same(lambda lib: lib.tensor([lib.tensor(1.0, dtype=lib.float64), 2]))
    _same(lambda lib: lib.tensor([lib.tensor(1, dtype=lib.int8), True]))
    _same(lambda lib: lib.tensor([np.float64(1), lib.tensor(2.0)]))


# ---- dim=None: torch's reductions split into those that take it (reduce all) and those that refuse --
@pytest.mark.parametrize("name", ["max", "min", "prod", "logsumexp", "median", "argmax", "argmin", "sum",
                                  "mean", "std", "var", "amax", "amin", "all", "any", "count_nonzero", "norm",
                                  "squeeze"])
@pytest.mark.parametrize("keepdim", [None, True, False])
def test_dim_none_as_torch(name, keepdim):
    options = {"dim": None} if keepdim is None else {"dim": None, "keepdim": keepdim}
    if name in ("count_nonzero", "squeeze") and keepdim is not None:
        return  # (no keepdim)
    _same(lambda lib: getattr(lib.tensor([[1.0, 5.0], [3.0, 2.0]]), name)(**options))


def test_max_and_min_without_dim_still_reduce_everything():
    for name in ("max", "min", "prod", "median", "squeeze"):
        _same(lambda lib: getattr(lib.tensor([[1.0, 5.0], [3.0, 2.0]]), name)())
        _same(lambda lib: getattr(lib, name)(lib.tensor([[1.0, 5.0], [3.0, 2.0]])))
    _same(lambda lib: lib.tensor([[1.0, 5.0], [3.0, 2.0]]).max(1).values)
    _same(lambda lib: lib.tensor([[1.0, 5.0], [3.0, 2.0]]).max(dim=0, keepdim=True).indices)


# ---- backward(gradient): torch takes a Tensor (or None), never a Python number ----------------------
@pytest.mark.parametrize("gradient", [2.0, 2, np.float32(2.0), [2.0]])
def test_backward_refuses_a_number_as_gradient(gradient):
    def snippet(lib):
        x = lib.tensor(2.0, requires_grad=True)
        (x * 3).backward(gradient)
        return x.grad
    _same(snippet)


def test_backward_takes_a_tensor_gradient():
    def snippet(lib):
        x = lib.tensor([2.0, 1.0], requires_grad=True)
        (x * 3).backward(lib.tensor([2.0, -1.0]))
        return x.grad
    _same(snippet)


# ---- in-place ops write any result their dtype's category can hold (torch.can_cast) ---------------
_ALL_DTYPES = _INT_DTYPES + _FLOAT_DTYPES


@pytest.mark.parametrize("source", _ALL_DTYPES)
@pytest.mark.parametrize("target", _ALL_DTYPES)
def test_in_place_add_casts_as_torch(target, source):
    """uint8.add_(int64 tensor) wraps, as torch (NumPy's "same_kind" rule refused it); int.add_(float
    tensor) and bool.add_(int tensor) raise RuntimeError, as torch."""
    def snippet(lib):
        x = lib.tensor([1, 0, 1], dtype=getattr(lib, target))
        return x.add_(lib.tensor([255, 1, 0], dtype=getattr(lib, source)) if source != "bool"
                      else lib.tensor([True, False, True]))
    _same(snippet)
    assert ml.can_cast(getattr(ml, source), getattr(ml, target)) == torch.can_cast(
        getattr(torch, source), getattr(torch, target))


@pytest.mark.parametrize("data", [[[1, 2], [3]], [[1], 2], [1, [2]], [1, "a"], ["a", 1], ["a", "b"], [None],
                                  [1, None], [np.array(1.5)], [np.array(1.5), 2], [[1, 2], [3, "a"]],
                                  [[np.array(1.0)]], [[1, 2], np.array([3, 4])], [[1, 2], (3, 4)], [[[]]],
                                  [np.array([1, 2]), np.array([3])], {1, 2}, "a"])
def test_tensor_refuses_what_torch_refuses(data):
    """A number where a list was, a list where a number was, a string among numbers, a 0-d NumPy
    array in a list: torch's TypeError (NumPy says ValueError, or takes them); ragged lists:
    ValueError, as torch."""
    _same(lambda lib: lib.tensor(data))


@pytest.mark.parametrize("dtype", _INT_DTYPES[:-1])
@pytest.mark.parametrize("bounds", [(250, 300, 10), (-2, 2), (120, 140, 7), (2**31 - 2, 2**31 + 2), (0, 5)])
def test_arange_wraps_into_an_integer_dtype_as_torch(bounds, dtype):
    _same(lambda lib: lib.arange(*bounds, dtype=getattr(lib, dtype)))


@pytest.mark.parametrize("dtype", _INT_DTYPES)
@pytest.mark.parametrize("bounds", [(0, 300), (-1, 5), (0, 256), (250, 256), (0, 2**31), (0, 2)])
def test_randint_refuses_a_range_the_dtype_cannot_hold(bounds, dtype):
    """torch raises where NumPy's draws would wrap around (randint(0, 300, dtype=uint8))."""
    _same(lambda lib: lib.randint(*bounds, (50,), dtype=getattr(lib, dtype)).shape == (50,)
          and lib.tensor(0))
