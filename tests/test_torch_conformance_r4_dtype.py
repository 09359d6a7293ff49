"""Integer scalars and ``tensor()``'s dtype inference side by side with torch (round 4).

torch turns a Python number taking part in an op with a tensor into a 0-d tensor of the op's dtype
with C's wrap-around: ``uint8 tensor + 300`` adds 44, ``uint8 tensor < -1`` compares with 255. Where
torch *stores* a number (``fill_``, ``full``, ``masked_fill``, ``where``, ``clamp``, ``x[i] = v``) it
checks the value fits and raises RuntimeError. NumPy does neither (it raises OverflowError, or compares
the exact values): these tests sweep every integer dtype, every binary op and numbers at and past the
bounds, in both orders, and compare values, dtypes and exception types with torch.

``tensor(data)`` infers torch's dtype: NumPy scalars keep theirs inside a list (``[np.float64(1), 2]``
is float64), Python ints past int64 are an error.
"""
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import minilora as ml  # noqa: E402


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


def _same(snippet):
    """Run ``snippet(lib)`` with torch and minilora: equal tensors, or the same exception type."""
    try:
        expected = snippet(torch)
    except Exception as exc:  # torch refuses: minilora must refuse with the same exception type
        with pytest.raises(type(exc)):
            snippet(ml)
        return
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch warns about none of these: no NumPy warning either
        got = snippet(ml)
    if isinstance(expected, torch.Tensor):
        assert _values(got) == _values(expected)
    else:
        assert got == expected and type(got) is type(expected)


# ---- the sweep: integer and bool tensors with Python ints at and past their bounds --------------
_INT_DTYPES = ["uint8", "int8", "int16", "int32", "int64", "bool"]
_SCALARS = [-1, 0, 2, 127, 128, -128, -129, 255, 256, 300, -255, -256, 2**31, -2**31 - 1, 2**40,
            2**63 - 1, -2**63, 2**63, 2**64, True]


def _tensor(lib, dtype):
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
    }


_OPS = list(_BINARY) + list(_lib_ops(ml))


def _op(lib, name):
    return _BINARY[name] if name in _BINARY else _lib_ops(lib)[name]


@pytest.mark.parametrize("dtype", _INT_DTYPES)
@pytest.mark.parametrize("name", _OPS)
def test_integer_tensor_with_python_int_as_torch(name, dtype):
    for s in _SCALARS:
        try:
            _same(lambda lib: _op(lib, name)(_tensor(lib, dtype), s))
        except AssertionError as exc:
            raise AssertionError(f"{name} on {dtype} with {s!r}: {exc}") from None
