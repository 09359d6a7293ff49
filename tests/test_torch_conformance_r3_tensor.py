"""The tensor layer side by side with torch (round 3): calls a tutorial writes, run with ``lib = torch``
and ``lib = minilora``; values, dtypes, shapes and exception types must agree.

Covered here: ``asarray`` (aliasing rules of torch.asarray), NumPy's floating-point warnings (torch
prints none for log(0), 0/0 or exp overflow), and the silent divergences found by writing tutorial code
(promotion, integer powers, reductions of empty tensors, shape ops, matmul-family spellings).
"""
import warnings

import numpy as np
import pytest

import background_runs

torch = pytest.importorskip("torch")

import minilora as ml  # noqa: E402


def _values(t):
    """(dtype name, shape, values) of a torch or minilora tensor: what must agree."""
    if isinstance(t, torch.Tensor):
        return str(t.dtype).replace("torch.", ""), tuple(t.shape), t.detach().numpy(force=True).tolist()
    return str(t.dtype), tuple(t.shape), np.asarray(t._array).tolist()


REFUSED = object()  # what torch_result gives when torch raised


def torch_result(snippet, refusals=Exception):
    """``snippet(torch)``; REFUSED where torch raises one of ``refusals``, once minilora is seen
    raising the same exception type."""
    try:
        return snippet(torch)
    except refusals as exc:  # torch refuses: minilora must refuse with the same exception type
        with pytest.raises(type(exc)):
            snippet(ml)
        return REFUSED


def _same(snippet):
    """Run ``snippet(lib)`` with torch and minilora: equal tensors, or the same exception type."""
    expected = torch_result(snippet)
    if expected is REFUSED:
        return
    got = snippet(ml)
    if isinstance(expected, tuple):
        assert len(got) == len(expected)
        for g, e in zip(got, expected):
            assert _values(g) == _values(e)
    elif isinstance(expected, torch.Tensor):
        assert _values(got) == _values(expected)
    else:
        assert got == expected and type(got) is type(expected)


# ---- asarray ---------------------------------------------------------------------------------
def test_asarray_returns_the_same_tensor_when_nothing_changes():
    t = ml.ones(2)
    assert ml.asarray(t) is t
    assert ml.asarray(t, dtype=ml.float32) is t
    assert ml.asarray(t, copy=False) is t
    assert ml.asarray(t, device="cpu", copy=None) is t


def test_asarray_copy_true_copies_and_detaches():
    leaf = ml.ones(2, requires_grad=True)
    out = ml.asarray(leaf, copy=True)
    assert out is not leaf and not out.requires_grad
    out[0] = 5.0
    assert leaf.tolist() == [1.0, 1.0]
    attached = ml.asarray(leaf, copy=True, requires_grad=True)
    assert attached.requires_grad and not attached.is_leaf  # torch: CloneBackward


def test_asarray_dtype_change_copies_and_copy_false_refuses():
    t = ml.ones(2)
    out = ml.asarray(t, dtype=ml.float64)
    assert out.dtype == ml.float64 and out is not t
    with pytest.raises(ValueError, match="alias"):
        ml.asarray(t, dtype=ml.float64, copy=False)
    with pytest.raises(ValueError, match="alias"):
        torch.asarray(torch.ones(2), dtype=torch.float64, copy=False)


def test_asarray_shares_numpy_memory_when_it_can():
    n = np.ones(3, dtype=np.float32)
    shared = ml.asarray(n)
    shared[0] = 5.0
    assert n[0] == 5.0
    copied = ml.asarray(n, dtype=ml.float64)
    copied[1] = 7.0
    assert n[1] == 1.0 and copied.dtype == ml.float64
    own = ml.asarray(n, copy=True)
    own[2] = 9.0
    assert n[2] == 1.0
    with pytest.raises(ValueError, match="alias"):
        ml.asarray(n, dtype=ml.float64, copy=False)


@pytest.mark.parametrize("make", [
    lambda lib: lib.asarray([1, 2]),
    lambda lib: lib.asarray([1.0, 2]),
    lambda lib: lib.asarray(3.5),
    lambda lib: lib.asarray(True),
    lambda lib: lib.asarray(np.float64(2.0)),
    lambda lib: lib.asarray(np.array([1, 2], dtype=np.int32)),
    lambda lib: lib.asarray(np.arange(3.0)),
    lambda lib: lib.asarray([1, 2], dtype=lib.float16),
    lambda lib: lib.asarray(np.arange(3.0), dtype=lib.float32),
    lambda lib: lib.asarray([1, 2], copy=False),
    lambda lib: lib.asarray([1, 2], requires_grad=True),
    lambda lib: lib.asarray([1.0, 2.0], requires_grad=True).requires_grad,
], ids=range(12))
def test_asarray_dtypes_and_refusals_as_torch(make):
    _same(make)


def test_asarray_requires_grad_on_an_alias_as_torch():
    plain = ml.ones(2)
    out = ml.asarray(plain, requires_grad=True)
    assert out is plain and plain.requires_grad and out.is_leaf  # torch: the same tensor, flag set
    computed = ml.ones(2, requires_grad=True) * 2
    detached = ml.asarray(computed, requires_grad=False)
    assert detached is not computed and not detached.requires_grad and computed.requires_grad


# ---- NumPy's floating-point warnings ------------------------------------------------------------
# minilora's filter is installed when it is imported; pytest restores the warning filters it found
# around conftest imports and every test, so the check runs in a fresh interpreter, as a script would.
_WARNINGS_SCRIPT = """
import warnings, numpy as np, minilora as ml
for dtype in (ml.float32, ml.float64):
    x = ml.tensor([0.0, 1.0, -1.0], dtype=dtype, requires_grad=True)
    y = x.log() + x / 0 + (x * 1000).exp() + x.sqrt() + x.rsqrt() + x.reciprocal()
    y.sum().backward()
    ml.tensor([0.0], dtype=dtype).log().exp()
print("user code:", flush=True)
np.log(np.zeros(1))  # the user's own NumPy still warns
"""


def test_no_numpy_warnings_where_torch_is_silent():
    import sys
    run = background_runs.run_process([sys.executable, "-c", _WARNINGS_SCRIPT], timeout=60)
    assert run.returncode == 0, run.stderr
    assert "RuntimeWarning" not in run.stderr.split("<string>")[0]  # nothing before the user's line
    assert "divide by zero encountered in log" in run.stderr  # np.log(0) in user code
    assert run.stderr.count("RuntimeWarning") == 1


# ---- host copies on cuda -----------------------------------------------------------------------
def _numpy_as_torch(self):
    """torch's ``Tensor.numpy(force=True)``: a cuda tensor is refused (minilora's copies to the host still)."""
    if self.device.type == "cuda":
        raise TypeError("can't convert cuda:0 device type tensor to numpy. Use Tensor.cpu() to copy "
                        "the tensor to host memory first.")
    return self._array


def test_tensor_layer_copies_to_the_host_explicitly_on_cuda(monkeypatch):
    """repr, tolist, unique, bincount, repeat_interleave, searchsorted and multinomial work on a cuda
    tensor without ``.numpy(force=True)`` (which torch refuses there): each asks for a host copy itself."""
    import fake_cupy
    fake_cupy.install(monkeypatch)
    monkeypatch.setattr(ml.Tensor, "numpy", _numpy_as_torch)
    ints = ml.tensor([2, 0, 2, 1], device="cuda")
    floats = ml.tensor([0.5, 1.5, 2.5], device="cuda", requires_grad=True)
    assert "device='cuda" in repr(floats)
    assert floats.tolist() == [0.5, 1.5, 2.5]
    assert ml.unique(ints).tolist() == [0, 1, 2]
    assert ml.bincount(ints, weights=ml.ones(4, device="cuda")).tolist() == [1.0, 1.0, 2.0]
    assert ml.repeat_interleave(ints, ml.tensor([1, 0, 2, 1], device="cuda")).tolist() == [2, 2, 2, 1]
    assert ml.searchsorted(floats.detach(), ml.tensor([1.0], device="cuda")).tolist() == [1]
    assert ml.multinomial(ml.tensor([0.0, 1.0], device="cuda"), 1).tolist() == [1]


# ---- arithmetic: integer powers, bool subtraction, alpha ---------------------------------------------
def _i(lib, *values, dtype=None):
    return lib.tensor(list(values), dtype=None if dtype is None else getattr(lib, dtype))


ARITHMETIC = {
    "int_pow_negative_number": lambda lib: _i(lib, 2, 3) ** -1,
    "int_pow_negative_number_fn": lambda lib: lib.pow(_i(lib, 2, 3), -2),
    "int_pow_negative_number_method": lambda lib: _i(lib, 2, 3).pow(exponent=-2),
    "int_pow_negative_tensor": lambda lib: _i(lib, 0, 1, -1, 2, -2, 3) ** _i(lib, -1, -1, -1, -1, -2, 2),
    "int32_pow_negative_tensor": lambda lib: lib.pow(_i(lib, 1, -1, 2, dtype="int32"), _i(lib, -3, -3, -1, dtype="int32")),
    "number_pow_negative_int_tensor": lambda lib: 2 ** _i(lib, -1, 2),
    "int_pow_negative_0d_tensor": lambda lib: _i(lib, 2, 1) ** lib.tensor(-1),
    "int_pow_negative_float": lambda lib: _i(lib, 2, 4) ** -1.0,
    "uint8_pow": lambda lib: _i(lib, 2, 3, dtype="uint8") ** _i(lib, 2, 2, dtype="uint8"),
    "bool_sub_bool": lambda lib: _i(lib, True, False) - _i(lib, True, True),
    "bool_sub_bool_fn_alpha": lambda lib: lib.sub(_i(lib, True), _i(lib, True), alpha=2),
    "float_sub_bool": lambda lib: _i(lib, 1.0) - _i(lib, True),
    "int_sub_bool": lambda lib: lib.sub(_i(lib, 1), _i(lib, True)),
    "bool_sub_number": lambda lib: _i(lib, True) - 1,
    "number_sub_bool": lambda lib: 1 - _i(lib, True),
    "bool_sub_float_number": lambda lib: _i(lib, True).sub(1.5),
    "neg_bool": lambda lib: -_i(lib, True, False),
    "neg_bool_method": lambda lib: lib.tensor(True).neg(),
    "bool_add_bool": lambda lib: _i(lib, True, False) + _i(lib, True, True),
    "int_add_float_alpha": lambda lib: _i(lib, -3, 1).add(_i(lib, 1, 1), alpha=2.5),
    "int_sub_float_alpha": lambda lib: lib.sub(_i(lib, 1), _i(lib, 1), alpha=1.0),
    "int_add_number_float_alpha": lambda lib: _i(lib, 1).add(1, alpha=0.5),
    "float_add_bool_alpha": lambda lib: _i(lib, 1.0).add(_i(lib, 1.0), alpha=True),
    "int_add_int_alpha": lambda lib: lib.add(_i(lib, 1, 2), _i(lib, 3, 4), alpha=3),
    "float_add_int_alpha": lambda lib: _i(lib, 1.5).add(_i(lib, 1), alpha=2),
}


@pytest.mark.parametrize("name", ARITHMETIC)
def test_arithmetic_as_torch(name):
    _same(ARITHMETIC[name])


# ---- conditions and masks must be bool -----------------------------------------------------------------
MASKS = {
    "where_long_condition": lambda lib: lib.where(_i(lib, 1, 0), 2.0, 3.0),
    "where_float_condition": lambda lib: lib.where(_i(lib, 1.0, 0.0), _i(lib, 1, 2), 0),
    "where_method_long_condition": lambda lib: _i(lib, 1, 2).where(_i(lib, 1, 0), 0),
    "where_bool": lambda lib: lib.where(_i(lib, True, False), _i(lib, 1, 2), 0.5),
    "where_bool_keywords": lambda lib: lib.where(condition=_i(lib, True, False), input=_i(lib, 1, 2), other=0),
    "masked_fill_long_mask": lambda lib: _i(lib, 1, 2).masked_fill(_i(lib, 1, 0), -1),
    "masked_fill_uint8_mask": lambda lib: _i(lib, 1, 2).masked_fill(_i(lib, 1, 0, dtype="uint8"), -1),
    "masked_fill_bool": lambda lib: _i(lib, 1, 2).masked_fill(mask=_i(lib, True, False), value=0.5),
    "masked_fill_1d_value": lambda lib: _i(lib, 1.0, 2.0).masked_fill(_i(lib, True, False), _i(lib, 1.5)),
    "masked_fill_0d_value": lambda lib: _i(lib, 1.0, 2.0).masked_fill(_i(lib, True, False), lib.tensor(-1.0)),
}


@pytest.mark.parametrize("name", MASKS)
def test_conditions_and_masks_as_torch(name):
    _same(MASKS[name])


def test_masked_fill_inplace_refuses_a_long_mask_as_torch():
    for lib in (torch, ml):
        with pytest.raises(RuntimeError, match="boolean"):
            lib.zeros(2).masked_fill_(lib.tensor([1, 0]), 1.0)


# ---- shapes: expand, cat/stack, empty reductions, Python scalars -------------------------------------------
SHAPES = {
    "expand_keep": lambda lib: lib.arange(3).reshape(3, 1).expand(-1, 4),
    "expand_new_leading": lambda lib: lib.arange(3).reshape(3, 1).expand(2, -1, 4),
    "expand_leading_minus_one": lambda lib: lib.arange(3).reshape(3, 1).expand(-1, -1, 4),
    "expand_tuple_leading_minus_one": lambda lib: lib.arange(3).expand((-1, 3)),
    "expand_minus_two": lambda lib: lib.arange(3).reshape(3, 1).expand(3, -2),
    "expand_fewer_sizes": lambda lib: lib.arange(3).reshape(3, 1).expand(4),
    "cat_legacy_empty_first": lambda lib: lib.cat([lib.zeros(0), lib.ones(2, 3)]),
    "cat_legacy_empty_last_dim1": lambda lib: lib.cat([lib.ones(2, 3), lib.zeros(0)], dim=1),
    "cat_legacy_empty_promotes": lambda lib: lib.cat((lib.tensor([], dtype=lib.float64), lib.ones(2, 2, dtype=lib.int64))),
    "cat_only_empties": lambda lib: lib.cat([lib.zeros(0), lib.zeros(0)]),
    "cat_empty_list": lambda lib: lib.cat([]),
    "cat_mismatch": lambda lib: lib.cat([lib.zeros(2, 3), lib.zeros(2, 4)]),
    "cat_mixed_dtypes": lambda lib: lib.cat([lib.tensor([1, 2], dtype=lib.int32), lib.tensor([3.5])]),
    "stack_unequal": lambda lib: lib.stack([lib.tensor([1, 2]), lib.tensor([1, 2, 3])]),
    "stack_empty_list": lambda lib: lib.stack([]),
    "stack_promotes": lambda lib: lib.stack([lib.tensor([1, 2]), lib.tensor([1.5, 2.5])], dim=-1),
    "max_dim_of_empty_rows": lambda lib: lib.zeros(0, 3).max(1),
    "min_dim_of_empty_rows": lambda lib: lib.zeros(0, 3).min(dim=1, keepdim=True),
    "max_over_empty_dim": lambda lib: lib.zeros(0, 3).max(0),
    "argmax_dim_of_empty_rows": lambda lib: lib.zeros(0, 3).argmax(1),
    "argmax_over_empty_dim": lambda lib: lib.zeros(0, 3).argmax(dim=0),
    "amax_of_empty_rows": lambda lib: lib.zeros(0, 3).amax(1),
    "amax_over_empty_dim": lambda lib: lib.zeros(2, 0).amax(1),
    "amin_over_empty_dims": lambda lib: lib.zeros(0, 3).amin((0, 1)),
    "max_of_empty": lambda lib: lib.zeros(0).max(),
    "sum_of_empty": lambda lib: lib.zeros(0, 3).sum(0),
    "int_of_two": lambda lib: int(lib.tensor([1, 2])),
    "float_of_empty": lambda lib: float(lib.zeros(0)),
    "item_of_two": lambda lib: lib.tensor([1, 2]).item(),
    "int_of_one": lambda lib: int(lib.tensor([[-2.7]])),
    "outer_promotes": lambda lib: lib.outer(lib.tensor([1, 2]), lib.tensor([1.5, 2.0])),
    "outer_method_keyword": lambda lib: lib.tensor([1.0, 2.0]).outer(vec2=lib.tensor([3.0])),
    "dot_mixed_refused": lambda lib: lib.dot(lib.tensor([1, 2]), lib.tensor([1.0, 2.0])),
}


@pytest.mark.parametrize("name", SHAPES)
def test_shapes_as_torch(name):
    _same(SHAPES[name])


def test_outer_of_mixed_dtypes_has_gradients_as_torch():
    for lib in (torch, ml):
        a = lib.tensor([1.0, 2.0], dtype=lib.float64, requires_grad=True)
        b = lib.tensor([3.0, 4.0, 5.0], requires_grad=True)
        lib.outer(a, b).sum().backward()
        if lib is torch:
            expected = a.grad.numpy(force=True), b.grad.numpy(force=True), b.grad.dtype
        else:
            np.testing.assert_array_equal(a.grad.numpy(force=True), expected[0])
            np.testing.assert_array_equal(b.grad.numpy(force=True), expected[1])
            assert str(b.grad.dtype) == "float32"


def test_cat_skips_legacy_empty_tensors_in_backward():
    x = ml.ones(2, 3, requires_grad=True)
    ml.cat([ml.zeros(0), x, ml.zeros(0)]).sum().backward()
    assert x.grad.tolist() == [[1.0] * 3] * 2


# ---- indexing: integers are applied before index arrays, as torch -------------------------------------
X3 = np.arange(24.0).reshape(2, 3, 4)
INDEXING = {
    "int_slice_list": lambda x: x[0, :, [1, 2]],
    "int_slice_tensor": lambda x: x[1, :, x.new_tensor([3, 0]).long()],
    "list_slice_int": lambda x: x[[1, 0], :, 2],
    "0d_tensor_slice_list": lambda x: x[x.new_tensor(1).long(), :, [0, 2]],
    "int_ellipsis_list": lambda x: x[0, ..., [1, 3]],
    "int_none_slice_list": lambda x: x[1, None, :, [0, 1]],
    "adjacent_int_list": lambda x: x[:, 0, [1, 2]],
    "int_slice_bool_mask": lambda x: x[0, :, x.new_tensor([1, 0, 1, 0]).bool()],
    "list_slice_list": lambda x: x[[0, 1], :, [1, 2]],
    "int_list_int": lambda x: x[1, [0, 2], 3],
}


@pytest.mark.parametrize("name", INDEXING)
def test_mixed_integer_and_array_indices_as_torch(name):
    results = []
    for lib in (torch, ml):
        x = lib.tensor(X3, requires_grad=True)
        out = INDEXING[name](x)
        (out * lib.arange(out.numel(), dtype=lib.float64).reshape(out.shape)).sum().backward()
        results.append((_values(out), x.grad.tolist()))
    assert results[1] == results[0]


@pytest.mark.parametrize("name", ["int_slice_list", "int_slice_bool_mask", "list_slice_int"])
def test_setitem_with_mixed_indices_as_torch(name):
    written = []
    for lib in (torch, ml):
        x = lib.tensor(X3)
        shape = tuple(INDEXING[name](x).shape)
        values = lib.arange(int(np.prod(shape)), dtype=lib.float64).reshape(shape) + 100
        target = {"int_slice_list": (0, slice(None), [1, 2]),
                  "int_slice_bool_mask": (0, slice(None), lib.tensor([True, False, True, False])),
                  "list_slice_int": ([1, 0], slice(None), 2)}[name]
        x[target] = values
        leaf = lib.tensor(X3, requires_grad=True)
        y = leaf * 1
        y[target] = values
        written.append((x.tolist(), y.tolist()))
    assert written[1] == written[0]


def test_setitem_shape_mismatch_is_a_runtime_error_as_torch():
    for lib in (torch, ml):
        with pytest.raises(RuntimeError):
            lib.zeros(2, 3)[...] = lib.ones(3, 3)
        with pytest.raises(RuntimeError):
            lib.zeros(2, 3)[0] = lib.ones(2)


# ---- clamp / lerp / comparisons with tensors of other dtypes ---------------------------------------------
BOUNDS = {
    "clamp_float_by_long_0d": lambda lib: lib.tensor([3.0, 1.0]).clamp(min=lib.tensor(2)),
    "clamp_half_by_double_0d": lambda lib: lib.tensor([3.0, 1.0], dtype=lib.float16).clamp(min=lib.tensor(2.5, dtype=lib.float64)),
    "clamp_int32_by_long_0d": lambda lib: lib.tensor([3, 1], dtype=lib.int32).clamp(max=lib.tensor(2)),
    "clamp_float_by_long_1d": lambda lib: lib.clamp(lib.tensor([3.0, 1.0]), lib.tensor([2, 2]), None),
    "clamp_long_by_double_1d": lambda lib: lib.tensor([3, 1]).clamp(min=lib.tensor([2.5, 0.5], dtype=lib.float64)),
    "clamp_both_tensors": lambda lib: lib.clamp(lib.tensor([1.0, 5.0, 3.0]), min=lib.tensor([2.0]), max=lib.tensor(4, dtype=lib.int32)),
    "clamp_min_above_max": lambda lib: lib.tensor([1.0, 5.0, 3.0]).clamp(lib.tensor([4.0]), lib.tensor([2.0])),
    "clip_number_bounds": lambda lib: lib.clip(lib.tensor([1, 5, 3]), 1.5, 3.5),
    "lerp_double_0d_weight": lambda lib: lib.lerp(lib.tensor([1.0, 2.0]), lib.tensor([3.0, 4.0]), lib.tensor(0.5, dtype=lib.float64)),
    "lerp_double_1d_weight": lambda lib: lib.lerp(lib.tensor([1.0, 2.0]), lib.tensor([3.0, 4.0]), lib.tensor([0.5, 0.5], dtype=lib.float64)),
    "lerp_double_0d_end": lambda lib: lib.lerp(lib.tensor([1.0, 2.0]), lib.tensor(3.0, dtype=lib.float64), 0.5),
    "eq_none": lambda lib: lib.tensor([1.0, 2.0]) == None,  # noqa: E711
    "ne_none": lambda lib: lib.tensor([1.0, 2.0]) != None,  # noqa: E711
    "eq_string": lambda lib: lib.tensor([1.0, 2.0]) == "a",
    "lt_none": lambda lib: lib.tensor([1.0, 2.0]) < None,
}


@pytest.mark.parametrize("name", BOUNDS)
def test_bounds_and_comparisons_as_torch(name):
    _same(BOUNDS[name])


def test_clamp_by_tensor_bounds_of_another_dtype_has_gradients():
    x = ml.tensor([3.0, 1.0, 2.0], requires_grad=True)
    low = ml.tensor(2.5, dtype=ml.float64, requires_grad=True)
    out = x.clamp(min=low)
    assert out.dtype == ml.float32
    out.sum().backward()
    assert x.grad.tolist() == [1.0, 0.0, 0.0] and low.grad.tolist() == 2.0 and low.grad.dtype == ml.float64


# ---- methods a tutorial reaches for that were missing ---------------------------------------------------
MISSING = {
    "mode_default_dim": lambda lib: tuple(lib.tensor([3.0, 1.0, 3.0, 1.0]).mode()),
    "mode_dim_ties": lambda lib: tuple(lib.tensor([[2, 2, 5, 5, 5, 1], [7, 1, 7, 1, 0, 0]]).mode(1)),
    "mode_keepdim_keywords": lambda lib: tuple(lib.mode(lib.tensor([[2, 2, 5], [7, 1, 7]]), dim=0, keepdim=True)),
    "mode_0d": lambda lib: tuple(lib.tensor(3.0).mode()),
    "mode_empty_dim": lambda lib: lib.zeros(0).mode(),
    "mode_fields": lambda lib: lib.tensor([4.0, 4.0, 2.0]).mode(0).indices,
    "H": lambda lib: lib.arange(6).reshape(2, 3).H,
    "mH": lambda lib: lib.arange(24).reshape(2, 3, 4).mH,
    "mT_1d": lambda lib: lib.arange(3).mT,
    "byte": lambda lib: lib.tensor([1.7, 200.0]).byte(),
    "char": lambda lib: lib.tensor([1, -2]).char(),
    "short": lambda lib: lib.tensor([1.5, -2.5]).short(),
    "swapdims": lambda lib: lib.zeros(2, 3).swapdims(0, 1),
    "moveaxis": lambda lib: lib.moveaxis(lib.zeros(2, 3, 4), 0, -1),
    "moveaxis_method": lambda lib: lib.zeros(2, 3, 4).moveaxis((0, 1), (2, 0)),
    "concat": lambda lib: lib.concat([lib.zeros(2), lib.ones(1)]),
    "concatenate_axis": lambda lib: lib.concatenate([lib.zeros(2, 1), lib.ones(2, 1)], axis=1),
    "nelement": lambda lib: lib.zeros(2, 3).nelement(),
    "ndimension": lambda lib: lib.zeros(2, 3).ndimension(),
    "is_signed": lambda lib: [lib.zeros(1, dtype=lib.uint8).is_signed(), lib.zeros(1).is_signed()],
    "mv": lambda lib: lib.mv(lib.ones(2, 3), lib.arange(3.0)),
    "mv_method": lambda lib: lib.ones(2, 3).mv(vec=lib.arange(3.0)),
    "mv_shapes": lambda lib: lib.mv(lib.ones(2, 3), lib.ones(2)),
    "einsum_sublists": lambda lib: lib.einsum(lib.ones(2, 3), [0, 1], lib.arange(6.0).reshape(3, 2), [1, 2], [0, 2]),
    "einsum_sublists_implicit": lambda lib: lib.einsum(lib.arange(3.0), [0], lib.arange(3.0), [0]),
}


@pytest.mark.parametrize("name", MISSING)
def test_missing_methods_as_torch(name):
    _same(MISSING[name])


INPLACE_UNARY = ["exp_", "log_", "sqrt_", "rsqrt_", "abs_", "relu_", "sigmoid_", "tanh_", "floor_", "ceil_",
                 "round_", "trunc_", "sin_", "cos_", "reciprocal_", "square_", "neg_", "sign_", "log1p_",
                 "expm1_"]


@pytest.mark.parametrize("name", INPLACE_UNARY)
def test_inplace_unary_methods_as_torch(name):
    for lib in (torch, ml):
        x = lib.tensor([0.25, 1.5, 2.0], dtype=lib.float64)
        out = getattr(x, name)()
        assert out is x
        if lib is torch:
            expected = x.tolist()
        else:
            np.testing.assert_allclose(x.tolist(), expected, rtol=1e-12)


def test_inplace_unary_methods_in_the_graph_as_torch():
    grads = []
    for lib in (torch, ml):
        leaf = lib.tensor([0.25, 1.5, 2.0], dtype=lib.float64, requires_grad=True)
        y = leaf * 2
        y.sin_().mul_(3).clamp_min_(0.5)
        y.sum().backward()
        grads.append(leaf.grad.tolist())
        with pytest.raises(RuntimeError, match="leaf"):
            leaf.exp_()
    np.testing.assert_allclose(grads[1], grads[0], rtol=1e-12)


BOOL_ARITHMETIC = {
    "bool_floordiv_bool": lambda lib: _i(lib, True, False) // _i(lib, True, True),
    "bool_floordiv_number": lambda lib: _i(lib, True, False) // True,
    "bool_rem_bool": lambda lib: lib.remainder(_i(lib, True, False), lib.tensor(True)),
    "bool_fmod_number": lambda lib: lib.fmod(_i(lib, True, False), True),
    "bool_pow_bool": lambda lib: _i(lib, True, False) ** _i(lib, True, True),
    "bool_pow_true": lambda lib: _i(lib, True, False) ** True,
    "bool_pow_false": lambda lib: lib.pow(_i(lib, True, False), False),
    "bool_pow_int": lambda lib: _i(lib, True, False) ** 2,
    "half_floordiv_true": lambda lib: lib.tensor([1.5, -2.5], dtype=lib.float16) // True,
    "half_trunc_div_true": lambda lib: lib.tensor([1.5, -2.5], dtype=lib.float16).div(True, rounding_mode="trunc"),
}


@pytest.mark.parametrize("name", BOOL_ARITHMETIC)
def test_bool_arithmetic_as_torch(name):
    _same(BOOL_ARITHMETIC[name])


FACTORIES = {
    "tensor_of_str": lambda lib: lib.tensor("abc"),
    "tensor_of_none": lambda lib: lib.tensor(None),
    "tensor_of_nones": lambda lib: lib.tensor([None, 1]),
    "tensor_of_str_array": lambda lib: lib.tensor(np.array(["a"])),
    "tensor_of_object_array": lambda lib: lib.tensor(np.array([{}], dtype=object)),
    "as_tensor_of_str": lambda lib: lib.as_tensor(["a", "b"]),
    "arange_backwards": lambda lib: lib.arange(4, 1),
    "arange_backwards_float": lambda lib: lib.arange(0.0, 1.0, -0.25),
    "arange_down": lambda lib: lib.arange(4, 1, -1),
    "arange_empty": lambda lib: lib.arange(2, 2),
    "arange_end_keyword": lambda lib: lib.arange(end=4),
    "arange_all_keywords": lambda lib: lib.arange(start=1, end=7, step=2),
}


@pytest.mark.parametrize("name", FACTORIES)
def test_factories_as_torch(name):
    _same(FACTORIES[name])


def test_unique_counts_each_nan_apart_as_torch():
    data = [[2.0, float("nan"), 1.0], [float("nan"), 2.0, 2.0]]
    for name in ("values", "inverse", "counts"):
        expected, got = (lib.tensor(data).unique(return_inverse=True, return_counts=True) for lib in (torch, ml))
        index = ("values", "inverse", "counts").index(name)
        np.testing.assert_array_equal(got[index].numpy(force=True), expected[index].numpy(force=True))


@pytest.mark.parametrize("call", ["all()", "any(1)", "all(dim=0, keepdim=True)"])
@pytest.mark.parametrize("dtype", ["uint8", "int64", "float32", "bool"])
def test_all_any_dtypes_as_torch(call, dtype):
    _same(lambda lib: eval(f"lib.tensor([[1, 0], [2, 3]], dtype=lib.{dtype}).{call}"))


COMPARE_WITH_NUMBERS = {
    "long_eq_float_past_float32": lambda lib: lib.tensor([16777217]) == 16777216.0,
    "long_gt_half": lambda lib: lib.tensor([16777217, 3]) > 16777216.5,
    "long_lt_float": lambda lib: lib.tensor([3, 2], dtype=lib.int32) < 2.5,
    "bool_eq_float": lambda lib: lib.tensor([True, False]) == 1.0,
    "double_eq_float": lambda lib: lib.tensor([0.1], dtype=lib.float64) == 0.1,
    "long_ge_float_method": lambda lib: lib.tensor([16777217]).ge(16777216.5),
    "long_eq_int": lambda lib: lib.tensor([16777217]) == 16777216,
}


@pytest.mark.parametrize("name", COMPARE_WITH_NUMBERS)
def test_comparisons_with_python_floats_as_torch(name):
    _same(COMPARE_WITH_NUMBERS[name])


def test_size_numpy_force_and_is_floating_point_as_torch():
    assert ml.Size([2, 3]).numel() == torch.Size([2, 3]).numel() == 6
    assert ml.zeros(ml.Size([2, 3])).shape == (2, 3) and ml.arange(3).expand(ml.Size([2, 3])).shape == (2, 3)
    assert ml.is_floating_point(ml.zeros(1)) and not ml.is_floating_point(ml.zeros(1, dtype=ml.int64))
    assert ml.zeros(2, requires_grad=True).numpy(force=True).tolist() == [0.0, 0.0]


# ---- gradients at the edges (0 ** 0, atan2 at the origin, the mean of nothing) ------------------------------
EDGE_GRADIENTS = {
    "pow_tensor_exponent": lambda lib, x, e: x ** e,
    "pow_zero_number": lambda lib, x, e: x ** 0.0,
    "pow_zero_int": lambda lib, x, e: lib.pow(x, 0),
    "pow_negative_number": lambda lib, x, e: x ** -1.0,
    "pow_half": lambda lib, x, e: x ** 0.5,
    "number_pow_tensor": lambda lib, x, e: 2.0 ** e,
    "zero_pow_tensor": lambda lib, x, e: 0.0 ** e,
    "self_pow_self": lambda lib, x, e: x ** x,
    "atan2": lambda lib, x, e: lib.atan2(x, e),
    "atan2_self": lambda lib, x, e: x.atan2(x),
}


@pytest.mark.parametrize("name", EDGE_GRADIENTS)
def test_gradients_at_the_edges_as_torch(name):
    grads = []
    for lib in (torch, ml):
        x = lib.tensor([0.0, 2.0, 0.0, -1.0, 0.0], dtype=lib.float64, requires_grad=True)
        e = lib.tensor([0.0, 0.0, 2.0, 0.5, -1.0], dtype=lib.float64, requires_grad=True)
        EDGE_GRADIENTS[name](lib, x, e).sum().backward()
        grads.append([[np.nan] * 5 if t.grad is None else t.grad.tolist() for t in (x, e)])
    np.testing.assert_allclose(np.array(grads[1]), np.array(grads[0]), rtol=1e-15)  # (x ** 0.5: 1 ulp)


def test_mean_of_nothing_has_an_empty_gradient_as_torch():
    x = ml.zeros(0, 3, requires_grad=True)
    x.mean().backward()
    assert x.grad.shape == (0, 3)
    y = ml.zeros(0, 3, requires_grad=True)
    y.mean(0).sum().backward()
    assert y.grad.shape == (0, 3)


@pytest.mark.parametrize("values", [[1.0, float("inf")], [float("-inf"), float("-inf")], [float("-inf"), 0.5],
                                    [float("inf"), float("-inf")], [1.0, 2.0]])
def test_logsumexp_with_infinities_as_torch(values):
    results = []
    for lib in (torch, ml):
        x = lib.tensor([values, [0.0, 1.0]], dtype=lib.float64, requires_grad=True)
        out = x.logsumexp(dim=1)
        out.sum().backward()
        results.append((out.tolist(), x.grad.tolist()))
    np.testing.assert_allclose(np.array(results[1][0]), np.array(results[0][0]), rtol=1e-15)
    np.testing.assert_allclose(np.array(results[1][1]), np.array(results[0][1]), rtol=1e-15)


# ---- Tensor.register_hook ---------------------------------------------------------------------------------
def _hooked_run(lib, remove_first=False):
    seen = []
    leaf = lib.tensor([1.0, 2.0], dtype=lib.float64, requires_grad=True)
    middle = leaf * 3
    h1 = middle.register_hook(lambda g: seen.append(("middle", g.tolist())) or g * 10)
    h2 = leaf.register_hook(lambda g: seen.append(("leaf", g.tolist())))
    h3 = leaf.register_hook(lambda g: g + 1)
    if remove_first:
        h1.remove()
    (middle * middle).sum().backward(retain_graph=True)
    first = leaf.grad.tolist()
    h3.remove()
    (middle + middle).sum().backward()
    return seen, first, leaf.grad.tolist(), h2


@pytest.mark.parametrize("remove_first", [False, True])
def test_register_hook_as_torch(remove_first):
    ours, theirs = _hooked_run(ml, remove_first), _hooked_run(torch, remove_first)
    assert ours[:3] == theirs[:3]


def test_register_hook_refuses_what_torch_refuses():
    for lib in (torch, ml):
        with pytest.raises(RuntimeError):
            lib.ones(2).register_hook(lambda g: g)


@pytest.mark.parametrize("data", [2**63, [2**64], [[2**63]], -2**63 - 1], ids=repr)
def test_tensor_of_ints_beyond_int64_refused_as_torch(data):
    # NumPy would silently make these uint64 or objects; torch refuses: no integer dtype holds them
    for lib in (torch, ml):
        with pytest.raises(ValueError, match="Overflow when unpacking long long"):
            lib.tensor(data)


def test_tensor_of_int64_extremes_still_int64():
    assert ml.tensor([2**63 - 1, -2**63]).tolist() == torch.tensor([2**63 - 1, -2**63]).tolist()
    assert ml.tensor([2**63 - 1]).dtype == ml.int64


@pytest.mark.parametrize("size", [2, 2.0], ids=repr)
def test_full_needs_a_size_sequence_as_torch(size):
    # full(2, 7) would silently give [7, 7]; torch's full takes no bare number (unlike ones/zeros)
    for lib in (torch, ml):
        with pytest.raises(TypeError, match="argument 'size' .* must be tuple of ints"):
            lib.full(size, 7)
    assert ml.full(size=[2], fill_value=7).tolist() == torch.full(size=[2], fill_value=7).tolist()


@pytest.mark.parametrize("call", [lambda L: L.atan2(L.ones(2), 1.0), lambda L: L.atan2(1.0, L.ones(2)),
                                  lambda L: L.ones(2).atan2(1), lambda L: L.atan2(input=L.ones(2), other=2)])
def test_atan2_refuses_a_python_number_as_torch(call):
    # the number was silently broadcast; torch's atan2 takes Tensors only
    for lib in (torch, ml):
        with pytest.raises(TypeError, match="must be Tensor, not"):
            call(lib)
