"""``x.shape``/``x.size()`` as torch.Size, and the ``out=`` keyword, side by side with torch (round 4).

Each snippet runs with ``lib = torch`` and ``lib = minilora``; results, types and exception types must
agree. Size prints ``minilora.Size([2, 3])`` where torch prints ``torch.Size([2, 3])`` (see
minilora/size.py for why).
"""
import copy
import warnings
import pickle

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import minilora as ml  # noqa: E402

LIBS = {"torch": torch, "minilora": ml}


def _both(snippet):
    """snippet(lib) for both libraries: (result or exception type) for each."""
    out = {}
    for name, lib in LIBS.items():
        try:
            out[name] = snippet(lib)
        except Exception as e:  # noqa: BLE001 -- the exception's type is what is compared
            out[name] = type(e)
    return out["torch"], out["minilora"]


def _plain(value):
    """A Size (either library's) as ('Size', tuple), so the two compare; other values as they are."""
    if type(value).__name__ == "Size":
        return ("Size", tuple(value))
    if isinstance(value, tuple):
        return tuple(_plain(v) for v in value)
    return value


# ---- Size -------------------------------------------------------------------------------------------
SIZE_SNIPPETS = {
    "shape.numel": lambda lib: lib.zeros(2, 3).shape.numel(),
    "size().numel": lambda lib: lib.zeros(2, 3).size().numel(),
    "0-d numel": lambda lib: lib.tensor(1.0).shape.numel(),
    "empty numel": lambda lib: lib.zeros(2, 0).size().numel(),
    "shape type": lambda lib: lib.zeros(2, 3).shape,
    "size() type": lambda lib: lib.zeros(2, 3).size(),
    "size(dim)": lambda lib: lib.zeros(2, 3).size(1),
    "size(-1) type": lambda lib: type(lib.zeros(2, 3).size(-1)),
    "item type": lambda lib: type(lib.zeros(2, 3).shape[0]),
    "slice": lambda lib: lib.zeros(2, 3, 4).shape[1:],
    "slice step": lambda lib: lib.zeros(2, 3, 4).shape[::2],
    "+ tuple": lambda lib: lib.zeros(2, 3).shape + (4,),
    "tuple +": lambda lib: (4,) + lib.zeros(2, 3).shape,
    "+ Size": lambda lib: lib.zeros(2).shape + lib.zeros(3).shape,
    "+ list": lambda lib: lib.zeros(2, 3).shape + [4],
    "* 2": lambda lib: lib.zeros(2, 3).shape * 2,
    "2 *": lambda lib: 2 * lib.zeros(2, 3).shape,
    "== tuple": lambda lib: lib.zeros(2, 3).shape == (2, 3),
    "== list": lambda lib: lib.zeros(2, 3).shape == [2, 3],
    "!= tuple": lambda lib: lib.zeros(2, 3).shape != (2, 3),
    "== Size": lambda lib: lib.zeros(2, 3).shape == lib.Size([2, 3]),
    "< tuple": lambda lib: lib.zeros(2, 3).shape < (2, 4),
    "hash": lambda lib: hash(lib.zeros(2, 3).shape) == hash((2, 3)),
    "dict key": lambda lib: {(2, 3): "yes"}[lib.zeros(2, 3).shape],
    "isinstance tuple": lambda lib: isinstance(lib.zeros(2, 3).shape, tuple),
    "len": lambda lib: len(lib.zeros(2, 3).shape),
    "unpack": lambda lib: tuple(lib.zeros(2, 3).shape),
    "count/index": lambda lib: (lib.Size([2, 3, 2]).count(2), lib.Size([2, 3, 2]).index(3)),
    "Size(list)": lambda lib: lib.Size([2, 3]),
    "Size(tuple)": lambda lib: lib.Size((2, 3)),
    "Size()": lambda lib: lib.Size(),
    "Size(bools)": lambda lib: lib.Size([True, 2]),
    "Size(np.int64)": lambda lib: tuple(int(s) for s in lib.Size([np.int64(2), 3])),
    "Size(0-d tensor)": lambda lib: lib.Size([lib.tensor(2), 3]),
    "Size(float)": lambda lib: lib.Size([2.0, 3]),
    "Size(int)": lambda lib: lib.Size(5),
    "Size(-1)": lambda lib: lib.Size([-1]),
    "Size numel": lambda lib: lib.Size([4, 5]).numel(),
    "pickle": lambda lib: pickle.loads(pickle.dumps(lib.Size([2, 3]))),
    "deepcopy": lambda lib: copy.deepcopy(lib.Size([2, 3])),
    "copy": lambda lib: copy.copy(lib.Size([2, 3])),
    "sum of shapes": lambda lib: sum([lib.Size([1]), lib.Size([2])], ()),
    "grad shape": lambda lib: lib.ones(2, requires_grad=True).sum().shape,
    "param shape": lambda lib: lib.nn.Linear(3, 2).weight.shape,
    "module output": lambda lib: lib.nn.Linear(3, 2)(lib.ones(4, 3)).size(),
}


@pytest.mark.parametrize("name", SIZE_SNIPPETS)
def test_size_like_torch(name):
    expected, got = _both(SIZE_SNIPPETS[name])
    assert _plain(got) == _plain(expected)


def test_size_repr_names_the_library():
    s = ml.zeros(2, 3).shape
    assert repr(s) == str(s) == "minilora.Size([2, 3])" == f"{s}"
    assert repr(ml.Size([])) == "minilora.Size([])"
    assert eval(repr(s), {"minilora": ml}) == s


# A Size wherever a shape is taken
SHAPE_TAKERS = {
    "zeros": lambda lib, s: lib.zeros(s),
    "ones": lambda lib, s: lib.ones(s),
    "empty": lambda lib, s: lib.empty(s).shape,
    "full": lambda lib, s: lib.full(s, 2.0),
    "randn shape": lambda lib, s: lib.randn(s).shape,
    "rand shape": lambda lib, s: lib.rand(s).shape,
    "view": lambda lib, s: lib.arange(6.0).view(s),
    "reshape": lambda lib, s: lib.arange(6.0).reshape(s),
    "view(*s)": lambda lib, s: lib.arange(6.0).view(*s),
    "expand": lambda lib, s: lib.ones(1, 3).expand(s),
    "expand(*s)": lambda lib, s: lib.ones(1, 3).expand(*s),
    "broadcast_to": lambda lib, s: lib.broadcast_to(lib.ones(3), s),
    "new_zeros": lambda lib, s: lib.ones(1).new_zeros(s),
    "new_full": lambda lib, s: lib.ones(1).new_full(s, 3.0),
    "repeat": lambda lib, s: lib.ones(1, 1).repeat(s),
    "zeros(x.shape)": lambda lib, s: lib.zeros(lib.ones(s).shape),
    "ones_like shape": lambda lib, s: lib.ones_like(lib.zeros(s)).shape,
    "np.zeros": lambda lib, s: np.zeros(s).shape,
}


@pytest.mark.parametrize("name", SHAPE_TAKERS)
def test_size_taken_as_a_shape(name):
    expected, got = _both(lambda lib: SHAPE_TAKERS[name](lib, lib.Size([2, 3])))
    if hasattr(expected, "numpy"):
        expected, got = expected.numpy(), got.numpy()
        assert expected.shape == got.shape and np.array_equal(expected, got)
    else:
        assert _plain(got) == _plain(expected)


# ---- out= ------------------------------------------------------------------------------------------
def _inputs(lib):
    """The same small inputs in either library (float32 values in (0.1, 0.9), an int and a bool
    tensor, indices)."""
    rng = np.random.default_rng(0)
    f = lambda *shape: lib.tensor(rng.uniform(0.1, 0.9, shape).astype(np.float32))  # noqa: E731
    return dict(x=f(3, 4), y=f(3, 4), z=f(3, 4), v=f(4), w=f(4), m3=f(4, 2), b3=f(2, 3, 4),
                c3=f(2, 4, 2), v3=f(3, 3), u3=f(3, 3), i=lib.tensor([[1, 2, 3, 4], [5, 6, 7, 8], [0, 3, 2, 1]]),
                j=lib.tensor([[2, 1, 3, 0], [7, 5, 6, 4], [1, 3, 2, 2]]),
                mask=lib.tensor([[True, False, True, False]] * 3), idx=lib.tensor([2, 0]),
                g=lib.tensor([[0, 1, 2, 0], [2, 2, 1, 0]]), bounds=lib.tensor([0.2, 0.5, 0.7]))


def _unary(name, **kw):
    return lambda lib, t, out: getattr(lib, name)(t["x"], out=out, **kw)


def _binary(name, a="x", b="y"):
    return lambda lib, t, out: getattr(lib, name)(t[a], t[b], out=out)


OUT_CALLS = {name: _unary(name) for name in (
    "abs acos asin asinh atan atanh ceil cos cosh erf exp exp2 expm1 floor log log10 log1p log2 "
    "logical_not nan_to_num neg reciprocal round rsqrt sigmoid sign sin sinh sqrt square tan tanh "
    "trunc tril triu diag diff nonzero").split()}
OUT_CALLS.update({name: _binary(name) for name in (
    "add sub mul div atan2 arctan2 maximum minimum logaddexp xlogy fmod remainder floor_divide "
    "logical_and logical_or logical_xor eq ne lt gt le ge").split()})
OUT_CALLS.update({name: _binary(name, "i", "j") for name in (
    "bitwise_and bitwise_or bitwise_xor bitwise_left_shift bitwise_right_shift").split()})
OUT_CALLS.update({
    "acosh": lambda lib, t, out: lib.acosh(t["x"] + 1, out=out),
    "argsort": lambda lib, t, out: lib.argsort(t["x"], stable=True, out=out),  # (torch: only stable=)
    "bitwise_not": lambda lib, t, out: lib.bitwise_not(t["i"], out=out),
    "add alpha": lambda lib, t, out: lib.add(t["x"], t["y"], alpha=2, out=out),
    "add scalar": lambda lib, t, out: lib.add(t["x"], 2, out=out),
    "mul int*float": lambda lib, t, out: lib.mul(t["i"], t["x"], out=out),
    "div floor": lambda lib, t, out: lib.div(t["x"], t["y"], rounding_mode="floor", out=out),
    "pow": lambda lib, t, out: lib.pow(t["x"], 2, out=out),
    "round decimals": lambda lib, t, out: lib.round(t["x"], decimals=1, out=out),
    "clamp": lambda lib, t, out: lib.clamp(t["x"], 0.3, 0.6, out=out),
    "clip": lambda lib, t, out: lib.clip(t["x"], min=0.3, out=out),
    "clamp_min": lambda lib, t, out: lib.clamp_min(t["x"], 0.3, out=out),
    "clamp_max": lambda lib, t, out: lib.clamp_max(t["x"], 0.3, out=out),
    "where": lambda lib, t, out: lib.where(t["mask"], t["x"], t["y"], out=out),
    "addcmul": lambda lib, t, out: lib.addcmul(t["x"], t["y"], t["z"], value=0.5, out=out),
    "addcdiv": lambda lib, t, out: lib.addcdiv(t["x"], t["y"], t["z"], out=out),
    "lerp": lambda lib, t, out: lib.lerp(t["x"], t["y"], 0.3, out=out),
    "matmul": lambda lib, t, out: lib.matmul(t["x"], t["m3"], out=out),
    "matmul batched": lambda lib, t, out: lib.matmul(t["b3"], t["m3"], out=out),
    "mm": lambda lib, t, out: lib.mm(t["x"], t["m3"], out=out),
    "bmm": lambda lib, t, out: lib.bmm(t["b3"], t["c3"], out=out),
    "dot": lambda lib, t, out: lib.dot(t["v"], t["w"], out=out),
    "mv": lambda lib, t, out: lib.mv(t["x"], t["v"], out=out),
    "outer": lambda lib, t, out: lib.outer(t["v"], t["w"], out=out),
    "addmm": lambda lib, t, out: lib.addmm(t["x"][:, :2], t["x"], t["m3"], out=out),
    "baddbmm": lambda lib, t, out: lib.baddbmm(t["c3"][:, :3], t["b3"], t["c3"], out=out),
    "cross": lambda lib, t, out: lib.cross(t["v3"], t["u3"], dim=1, out=out),
    "sum": lambda lib, t, out: lib.sum(t["x"], 0, out=out),
    "sum keepdim": lambda lib, t, out: lib.sum(t["x"], dim=1, keepdim=True, out=out),
    "mean": lambda lib, t, out: lib.mean(t["x"], 0, out=out),
    "prod": lambda lib, t, out: lib.prod(t["x"], 1, out=out),
    "nansum": lambda lib, t, out: lib.nansum(t["x"], 0, out=out),
    "nanmean": lambda lib, t, out: lib.nanmean(t["x"], 0, out=out),
    "amax": lambda lib, t, out: lib.amax(t["x"], 0, out=out),
    "amin": lambda lib, t, out: lib.amin(t["x"], 1, out=out),
    "all": lambda lib, t, out: lib.all(t["mask"], 1, out=out),
    "any": lambda lib, t, out: lib.any(t["mask"], 0, out=out),
    "argmax": lambda lib, t, out: lib.argmax(t["x"], 1, out=out),
    "argmin": lambda lib, t, out: lib.argmin(t["x"], 0, out=out),
    "logsumexp": lambda lib, t, out: lib.logsumexp(t["x"], 1, out=out),
    "std": lambda lib, t, out: lib.std(t["x"], 0, out=out),
    "var": lambda lib, t, out: lib.var(t["x"], 1, out=out),
    "norm": lambda lib, t, out: lib.norm(t["x"], dim=1, out=out),
    "softmax": lambda lib, t, out: lib.softmax(t["x"], 1, out=out),
    "log_softmax": lambda lib, t, out: lib.log_softmax(t["x"], 1, out=out),
    "cumsum": lambda lib, t, out: lib.cumsum(t["x"], 1, out=out),
    "cumprod": lambda lib, t, out: lib.cumprod(t["x"], 0, out=out),
    "gather": lambda lib, t, out: lib.gather(t["x"], 0, t["g"], out=out),
    "take_along_dim": lambda lib, t, out: lib.take_along_dim(t["x"], t["g"], 0, out=out),
    "index_select": lambda lib, t, out: lib.index_select(t["x"], 1, t["idx"], out=out),
    "index_add": lambda lib, t, out: lib.index_add(t["x"], 0, t["idx"], t["y"][:2], out=out),
    "index_copy": lambda lib, t, out: lib.index_copy(t["x"], 0, t["idx"], t["y"][:2], out=out),
    "scatter": lambda lib, t, out: lib.scatter(t["x"], 0, t["g"], t["y"], out=out),
    "scatter_add": lambda lib, t, out: lib.scatter_add(t["x"], 0, t["g"], t["y"], out=out),
    "scatter_reduce": lambda lib, t, out: lib.scatter_reduce(t["x"], 0, t["g"], t["y"], "amax", out=out),
    "masked_select": lambda lib, t, out: lib.masked_select(t["x"], t["mask"], out=out),
    "take": lambda lib, t, out: lib.take(t["x"], t["idx"], out=out),
    "bucketize": lambda lib, t, out: lib.bucketize(t["x"], t["bounds"], out=out),
    "searchsorted": lambda lib, t, out: lib.searchsorted(t["bounds"], t["x"], out=out),
    "cat": lambda lib, t, out: lib.cat([t["x"], t["y"]], out=out),
    "cat dim": lambda lib, t, out: lib.cat((t["x"], t["y"]), dim=1, out=out),
    "concat": lambda lib, t, out: lib.concat([t["x"], t["y"]], out=out),
    "concatenate": lambda lib, t, out: lib.concatenate([t["x"], t["y"]], out=out),
    "stack": lambda lib, t, out: lib.stack([t["x"], t["y"]], 1, out=out),
    "hstack": lambda lib, t, out: lib.hstack([t["x"], t["y"]], out=out),
    "vstack": lambda lib, t, out: lib.vstack([t["x"], t["y"]], out=out),
    "dstack": lambda lib, t, out: lib.dstack([t["x"], t["y"]], out=out),
    "column_stack": lambda lib, t, out: lib.column_stack([t["v"], t["w"]], out=out),
    "narrow_copy": lambda lib, t, out: lib.narrow_copy(t["x"], 1, 1, 2, out=out),
})
# ops returning (values, indices): out is a tuple of two tensors
OUT_PAIRS = {
    "max dim": lambda lib, t, out: lib.max(t["x"], 1, out=out),
    "min dim": lambda lib, t, out: lib.min(t["x"], 0, keepdim=True, out=out),
    "sort": lambda lib, t, out: lib.sort(t["x"], 1, out=out),
    "topk": lambda lib, t, out: lib.topk(t["x"], 2, out=out),
    "kthvalue": lambda lib, t, out: lib.kthvalue(t["x"], 2, out=out),
    "median dim": lambda lib, t, out: lib.median(t["x"], 1, out=out),
    "cummax": lambda lib, t, out: lib.cummax(t["x"], 1, out=out),
    "cummin": lambda lib, t, out: lib.cummin(t["x"], 0, out=out),
    "aminmax": lambda lib, t, out: lib.aminmax(t["x"], dim=0, out=out),
    "mode": lambda lib, t, out: lib.mode(lib.round(t["x"] * 4), 1, out=out),
}


def _summary(value):
    """What must agree: dtype name, shape and values of a tensor (or of each in a tuple), or an
    exception's type."""
    if isinstance(value, type):
        return value
    if isinstance(value, (tuple, list)):
        return tuple(_summary(v) for v in value)
    if isinstance(value, torch.Tensor):
        name, array = str(value.dtype).replace("torch.", ""), value.detach().double().numpy()
    else:
        name, array = str(value.dtype), np.asarray(value._array).astype(np.float64)
    return name, tuple(value.shape), array


def _assert_same(got, expected, rtol):
    got, expected = _summary(got), _summary(expected)
    if isinstance(expected, tuple) and expected and isinstance(expected[0], tuple):
        assert isinstance(got, tuple) and len(got) == len(expected), (got, expected)
        for g, e in zip(got, expected):
            _assert_same_one(g, e, rtol)
    else:
        _assert_same_one(got, expected, rtol)


def _assert_same_one(got, expected, rtol):
    if isinstance(expected, type) or isinstance(got, type):
        assert got == expected
        return
    assert got[:2] == expected[:2]
    np.testing.assert_allclose(got[2], expected[2], rtol=rtol, atol=rtol, equal_nan=True)


def _empty(lib, dtype_name, shape=(0,)):
    return lib.empty(shape, dtype=getattr(lib, dtype_name))


def _natural_dtypes(call):
    """The dtype name(s) torch's call gives without out=."""
    t = _inputs(torch)
    result = call(torch, t, None)
    results = result if isinstance(result, tuple) else (result,)
    return [str(r.dtype).replace("torch.", "") for r in results]


def _run_out(call, make_out, grad=False):
    """call(lib, inputs, out) for both libraries, out made by make_out(lib); (torch's, minilora's)
    results (or exception types), and whether each returned its out (the same object[s])."""
    def snippet(lib):
        t = _inputs(lib)
        if grad:
            t["x"].requires_grad_(True)
        out = make_out(lib)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = call(lib, t, out)
        same = result is out if not isinstance(out, tuple) else all(r is o for r, o in zip(result, out))
        return result, same, sorted({w.category.__name__ for w in caught})
    return _both(snippet)


@pytest.mark.parametrize("name", list(OUT_CALLS) + list(OUT_PAIRS))
def test_out_writes_and_returns_out(name):
    call = {**OUT_CALLS, **OUT_PAIRS}[name]
    dtypes_ = _natural_dtypes(call)
    make = (lambda lib: _empty(lib, dtypes_[0])) if len(dtypes_) == 1 else \
        (lambda lib: tuple(_empty(lib, d) for d in dtypes_))
    expected, got = _run_out(call, make)
    assert not isinstance(expected, type), expected
    assert not isinstance(got, type), f"minilora raised {got.__name__}"
    _assert_same(got[0], expected[0], 1e-6)
    assert got[1] and expected[1]  # the out tensor itself is returned
    assert got[2] == expected[2]  # (no warning for an empty out)


@pytest.mark.parametrize("out_dtype", ["float64", "float16", "bfloat16", "int64", "int32", "bool"])
@pytest.mark.parametrize("name", list(OUT_CALLS))
def test_out_dtype_like_torch(name, out_dtype):
    """Out in another dtype: torch casts the result into it where it can, or refuses (RuntimeError /
    TypeError); some ops (matmul, argmax ...) want exactly their own dtype."""
    expected, got = _run_out(OUT_CALLS[name], lambda lib: _empty(lib, out_dtype))
    if isinstance(expected, type) or isinstance(got, type):
        assert got == expected
        return
    rtol = 1e-2 if out_dtype in ("float16", "bfloat16") else 1e-6
    _assert_same(got[0], expected[0], rtol)


@pytest.mark.parametrize("name", ["add", "sum", "cat", "matmul", "exp", "eq", "argmax", "where"])
def test_out_of_another_shape_is_resized_with_torch_warning(name):
    call = OUT_CALLS[name]
    dtype = _natural_dtypes(call)[0]
    expected, got = _run_out(call, lambda lib: _empty(lib, dtype, (5,)))
    _assert_same(got[0], expected[0], 1e-6)
    assert got[1] and expected[1]
    assert got[2] == expected[2] == ["UserWarning"]


# torch writes these (their out= kernels are composites with no derivative) and gives out a grad_fn
# "NotImplemented" that fails only at backward; minilora refuses at the call, with torch's message.
_TORCH_DEFERS_THE_GRAD_ERROR = {"diag", "floor_divide", "softmax", "log_softmax"}


@pytest.mark.parametrize("name", [n for n in OUT_CALLS if n not in ("bitwise_not", "logical_not")]
                         + list(OUT_PAIRS))
def test_out_with_an_input_requiring_grad(name):
    """torch refuses out= where the op would record a gradient (RuntimeError), not where it would not
    (argmax, eq, ...)."""
    call = {**OUT_CALLS, **OUT_PAIRS}[name]
    dtypes_ = _natural_dtypes(call)
    make = (lambda lib: _empty(lib, dtypes_[0])) if len(dtypes_) == 1 else \
        (lambda lib: tuple(_empty(lib, d) for d in dtypes_))
    expected, got = _run_out(call, make, grad=True)
    if name in _TORCH_DEFERS_THE_GRAD_ERROR:
        assert not isinstance(expected, type) and expected[0].grad_fn.name().endswith("NotImplemented")
        assert got == RuntimeError
    elif isinstance(expected, type) or isinstance(got, type):
        assert got == expected
    else:
        _assert_same(got[0], expected[0], 1e-6)


def test_out_requiring_grad_and_no_grad():
    for lib in (torch, ml):
        with pytest.raises(RuntimeError, match="don't support automatic differentiation"):
            lib.add(lib.ones(2), lib.ones(2), out=lib.zeros(2, requires_grad=True))
        x = lib.ones(2, requires_grad=True)
        with lib.no_grad():
            y = lib.empty(0)
            assert lib.mul(x, 3, out=y) is y and y.tolist() == [3.0, 3.0] and not y.requires_grad


@pytest.mark.parametrize("name", ["sum", "mean", "prod", "cumsum", "cumprod", "nansum", "nanmean",
                                  "std", "var", "add", "mul", "cat", "amax", "softmax"])
def test_out_dtype_is_the_compute_dtype_where_torch_makes_it_so(name):
    """A float32 tensor summed into a float64 out accumulates in float64 in torch (out's dtype acts as
    sum's dtype=; std and var too), not a float32 sum widened; add/mul compute in float32 and widen:
    compared to 1e-13 on values where the two differ (or the same error)."""
    def call(lib):
        x = lib.tensor(np.random.default_rng(1).uniform(1, 2, (5, 200)).astype(np.float32))
        out = lib.empty(0, dtype=lib.float64)
        fn = getattr(lib, name)
        if name in ("add", "mul"):
            return fn(x, 0.1, out=out)
        return fn([x, x], out=out) if name == "cat" else fn(x, 1, out=out)
    expected, got = _both(call)
    _assert_same(got, expected, 1e-13)


def test_out_views_and_aliasing_like_torch():
    for lib in (torch, ml):
        base = lib.zeros(4, 3)
        lib.add(lib.ones(2, 3), 1, out=base[:2])  # written through the view into base
        assert base.tolist() == [[2.0] * 3] * 2 + [[0.0] * 3] * 2
        a = lib.ones(2, 3)
        assert lib.add(a, a, out=a) is a and a.tolist() == [[2.0] * 3] * 2  # out is an input


def test_out_wrong_type():
    expected, got = _both(lambda lib: lib.add(lib.ones(2), 1, out=[1.0, 2.0]))
    assert got == expected == TypeError
    expected, got = _both(lambda lib: lib.exp(lib.ones(2), out=3))
    assert got == expected == TypeError


def test_methods_and_operators_take_no_out():
    """torch's Tensor methods have no out= (x.add(y, out=z) is TypeError), and a + b is unchanged."""
    for lib in (torch, ml):
        with pytest.raises(TypeError):
            lib.ones(2).add(lib.ones(2), out=lib.empty(0))
    assert ml.Tensor.__add__ is not ml.add  # the operator stays one call
