"""bfloat16 tensors outside the op math, side by side with torch's bfloat16 (issue 16).

minilora's bfloat16 is ml_dtypes' (``ml.bfloat16 is np.dtype(ml_dtypes.bfloat16)``), which NumPy files
under kind 'V': every place that asked ``dtype.kind == "f"`` treated it as not-a-float. These cases
check the places a torch user meets first -- requires_grad, dtype conversions, printing, numbers out of
a tensor, tensors from data and from torch, factories, the default dtype, nn.init, Module casts and
state_dicts, the testing helpers -- each written as a torch user writes it and run with ``lib = torch``
and ``lib = minilora`` (``check`` from test_torch_conformance: values to 1e-12 after widening, so
bfloat16 values must match bit for bit; dtypes by name; shapes).

Where minilora knowingly differs (``.numpy()`` of a bfloat16 tensor: torch raises), the case says so.
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import minilora as ml  # noqa: E402
from minilora.testing import GradCheckError, assert_close, grad_check  # noqa: E402,F401
from test_torch_conformance import check, expect_error, run_without_ml_dtypes  # noqa: E402

# A float64 value just above the tie between two bfloat16 neighbours (1 and 1 + 2**-7): torch rounds
# it through float32 (c10's BFloat16 is built from a float), which drops the 2**-30 and leaves a tie
# that rounds to even (1.0); rounding directly, as ml_dtypes and NumPy do, gives 1.0078125.
TIE = 1 + 2 ** -8 + 2 ** -30
VALUES = [1.0, 2.5, -3.14159, TIE, 1e-3, 300.7, 0.0]


@pytest.fixture
def default_dtype_restored():
    yield
    torch.set_default_dtype(torch.float32)
    ml.set_default_dtype(ml.float32)


def bf16(lib, values=VALUES, grad=False):
    return lib.tensor(values, dtype=lib.bfloat16, requires_grad=grad)


# ---- a floating-point dtype: gradients, conversions ----------------------------------------------
def test_requires_grad_and_gradients_are_bfloat16():
    def snippet(lib):
        x = bf16(lib, [1.0, 2.5, -3.0], grad=True)
        y = lib.ones(3, dtype=lib.bfloat16).requires_grad_()
        (x * 3).sum().backward()
        (x * x).sum().backward()  # accumulates into x.grad, in bfloat16
        (y * 2).sum().backward()
        return [x.requires_grad, x.is_floating_point(), x.grad, x.grad.dtype, y.grad, x.is_leaf,
                (x * 2).requires_grad, (x > 1).requires_grad]
    check(snippet)


def test_float16_requires_grad_as_before():
    def snippet(lib):
        x = lib.tensor([1.0, 2.0], dtype=lib.float16, requires_grad=True)
        (x * x).sum().backward()
        return [x.grad, x.is_floating_point()]
    check(snippet)


def test_integers_still_cannot_require_grad():
    expect_error(lambda lib: lib.tensor([1, 2], requires_grad=True))
    expect_error(lambda lib: lib.ones(2, dtype=lib.int64).requires_grad_())


def test_conversions_to_and_from_bfloat16():
    def snippet(lib):
        x = lib.tensor(VALUES, dtype=lib.float64)
        b = x.to(lib.bfloat16)
        return [b, x.bfloat16(), x.to(dtype=lib.bfloat16), x.type(lib.bfloat16), x.type_as(b),
                b.float(), b.double(), b.half(), b.to(lib.int64), b.long(), b.bool(),
                lib.tensor([2 ** 24 + 2 ** 16 + 1], dtype=lib.int64).to(lib.bfloat16),  # int -> float -> bf16
                b.type(), b.element_size(), b.nbytes, b.itemsize, b.dtype, b.is_floating_point(),
                b.to(lib.bfloat16) is b]
    check(snippet)


def test_float16_conversions_round_through_float32_too():
    def snippet(lib):
        x = lib.tensor([1 + 2 ** -11 + 2 ** -40, 1 + 3 * 2 ** -11], dtype=lib.float64)
        return [x.half(), x.to(lib.float16), lib.tensor([1 + 2 ** -11 + 2 ** -40], dtype=lib.float16)]
    check(snippet)


def test_in_place_writes_into_bfloat16_round_as_torch():
    def snippet(lib):
        wide = lib.tensor([TIE, 0.1], dtype=lib.float64)
        x, y, z = (lib.zeros(2, dtype=lib.bfloat16) for _ in range(3))
        x.add_(wide)
        y.copy_(wide)
        z += wide
        w = lib.ones(2, dtype=lib.bfloat16, requires_grad=True)
        h = w * 1
        h.mul_(wide)  # in the graph
        h.sum().backward()
        return [x, y, z, h, w.grad]
    check(snippet)


def test_gradient_through_a_cast_comes_back_in_each_dtype():
    def snippet(lib):
        x = lib.tensor([0.1, 0.2, TIE], dtype=lib.float64, requires_grad=True)
        b = x.to(lib.bfloat16)
        (b * b).sum().backward()
        return [x.grad, b.dtype]
    check(snippet)


def test_new_and_like_factories_keep_bfloat16():
    def snippet(lib):
        x = bf16(lib)
        return [x.new_zeros(2, 3), x.new_ones((2,)), x.new_full((2,), TIE), x.new_empty(2).shape,
                x.new_tensor([TIE, 0.1]), lib.zeros_like(x), lib.ones_like(x), lib.full_like(x, TIE),
                lib.empty_like(x).dtype, lib.rand_like(x).dtype, lib.randn_like(x).dtype,
                lib.zeros_like(lib.ones(2), dtype=lib.bfloat16)]
    check(snippet)


def test_finfo_and_iinfo():
    def snippet(lib):
        out = []
        for name in ("bfloat16", "float16", "float32", "float64"):
            info = lib.finfo(getattr(lib, name))
            out += [info.bits, info.eps, info.max, info.min, info.tiny, info.smallest_normal,
                    info.resolution, info.dtype, repr(info)]
        for name in ("int8", "uint8", "int16", "int32", "int64"):
            info = lib.iinfo(getattr(lib, name))
            out += [info.bits, info.min, info.max, info.dtype, repr(info)]
        return out + [lib.finfo().eps]
    check(snippet)
    expect_error(lambda lib: lib.finfo(lib.int64))
    expect_error(lambda lib: lib.iinfo(lib.bfloat16))
    expect_error(lambda lib: lib.iinfo(lib.bool))


# ---- printing and numbers out of a tensor ---------------------------------------------------------
@pytest.mark.parametrize("make", [
    lambda lib: lib.tensor([1.0, 2.5], dtype=lib.bfloat16),
    lambda lib: lib.tensor(VALUES, dtype=lib.bfloat16),
    lambda lib: lib.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=lib.bfloat16, requires_grad=True),
    lambda lib: lib.tensor(3.14159, dtype=lib.bfloat16),
    lambda lib: lib.tensor([1e-5, 1000.0], dtype=lib.bfloat16),
    lambda lib: lib.tensor([1.0, float("inf"), float("nan")], dtype=lib.bfloat16),
    lambda lib: lib.tensor([], dtype=lib.bfloat16),
    lambda lib: lib.zeros(0, 2, dtype=lib.bfloat16),
    lambda lib: lib.arange(0, 2000, dtype=lib.bfloat16),
    lambda lib: lib.arange(24, dtype=lib.bfloat16).reshape(2, 3, 4) / 7,
    lambda lib: lib.tensor([0.1, 0.25], dtype=lib.float16),
    lambda lib: lib.tensor([1.0, 2.5]),
    lambda lib: lib.tensor([[1e-5, 1000.0]]),
    lambda lib: lib.tensor([1, 2, 300]),
    lambda lib: lib.tensor([True, False]),
    lambda lib: lib.tensor([1.5, 2.0], dtype=lib.float64),
    lambda lib: lib.arange(2000.0).reshape(40, 50),
    lambda lib: lib.tensor([1.0, 2.0], requires_grad=True) * 2,
], ids=["pair", "values", "matrix-grad", "0-d", "sci", "inf-nan", "empty", "empty-2d", "summarized",
        "3d", "float16", "float32", "float32-sci", "int64", "bool", "float64", "float32-summarized",
        "grad_fn"])
def test_repr_is_torchs(make):
    ours, theirs = repr(make(ml)), repr(make(torch))
    assert ours == theirs


def test_numbers_out_of_a_bfloat16_tensor_are_python_numbers():
    def snippet(lib):
        x = bf16(lib, [2.7, -1.5, TIE])
        items = [x[0].item(), float(x[0]), int(x[0]), int(x[1]), x.tolist(), x[2].item(), bool(x[0])]
        return items + [type(v).__name__ for v in (x[0].item(), x.tolist()[0], float(x[1]))]
    check(snippet)


def test_comparisons_in_torchs_promoted_dtype():
    """torch compares in the promoted dtype (dtypes.result_type): against a Python number or a 0-d
    tensor that is the tensor's, so 2.3 becomes bfloat16(2.3) == 2.296875 first; against a float64
    tensor with dimensions, float64."""
    def snippet(lib):
        x = bf16(lib, [2.3, 2.5, 257.0, -1.0])
        f32, f64 = lib.tensor(2.3), lib.tensor([2.3, 2.5, 257.0, -1.0], dtype=lib.float64)
        return [x == 2.3, x < 2.4, x >= 2.5, x != 257, x > -1, x <= 2.296875, x == 256,
                x == f32, x.eq(f32), lib.eq(x, f32), x < f32, f32 > x, x == f64, x.lt(f64),
                lib.tensor([0.1]) == lib.tensor(0.1, dtype=lib.float64),  # float32 vs a float64 0-d: float32
                lib.tensor([1, 2]) < lib.tensor(1.5, dtype=lib.float64)]
    check(snippet)


def test_numpy_of_bfloat16_gives_the_ml_dtypes_array():
    """Deliberate difference: torch's .numpy() raises ("Got unsupported ScalarType BFloat16"), since
    NumPy has no bfloat16 of its own; minilora's bfloat16 *is* ml_dtypes', so it hands that array over
    (shared, not copied, as .numpy() is for every dtype), and np.asarray does the same."""
    with pytest.raises(TypeError, match="BFloat16"):
        torch.ones(2, dtype=torch.bfloat16).numpy()
    x = ml.tensor([1.0, TIE], dtype=ml.bfloat16)
    array = x.numpy()
    assert array.dtype == ml.bfloat16 and array.dtype.name == "bfloat16"
    assert array.astype(np.float64).tolist() == [1.0, 1.0]
    array[0] = 4.0
    assert x[0].item() == 4.0 and np.asarray(x).dtype == ml.bfloat16


# ---- tensors from data ----------------------------------------------------------------------------
def test_tensor_from_python_numbers_rounds_as_torch():
    def snippet(lib):
        return [lib.tensor(VALUES, dtype=lib.bfloat16), lib.tensor(TIE, dtype=lib.bfloat16),
                lib.tensor([[TIE, 2], [3, 4]], dtype=lib.bfloat16), lib.tensor([2 ** 24 + 2 ** 16 + 1], dtype=lib.bfloat16),
                lib.tensor(np.array(VALUES), dtype=lib.bfloat16), lib.as_tensor(VALUES, dtype=lib.bfloat16),
                lib.as_tensor(np.array(VALUES), dtype=lib.bfloat16), lib.tensor([TIE], dtype=lib.float16),
                lib.Tensor([1.5, 2]).bfloat16()]
    check(snippet)


def test_tensor_from_a_torch_bfloat16_tensor_keeps_its_bits():
    source = torch.randn(64, dtype=torch.float64).to(torch.bfloat16)
    for x in (ml.tensor(source), ml.as_tensor(source), ml.tensor(source, dtype=ml.float32),
              ml.tensor(torch.nn.Parameter(source))):
        bits = x.to(ml.bfloat16).numpy().view(np.int16)
        assert np.array_equal(bits, source.view(torch.int16).numpy())
    assert ml.tensor(source).dtype == ml.bfloat16 and ml.tensor(source, dtype=ml.float32).dtype == ml.float32


def test_to_torch_and_back_keeps_the_bits():
    x = ml.tensor(VALUES, dtype=ml.bfloat16)
    t = ml.dtypes.to_torch(x.numpy())
    assert t.dtype == torch.bfloat16 and t.tolist() == x.tolist()
    assert torch.equal(t, torch.tensor(VALUES, dtype=torch.bfloat16))  # same rounding on both sides
    assert np.array_equal(ml.tensor(t).numpy().view(np.int16), x.numpy().view(np.int16))
    assert ml.dtypes.to_torch(np.arange(3.0)[::2]).tolist() == [0.0, 2.0]


def test_from_numpy_and_as_tensor_share_an_ml_dtypes_array():
    array = np.array([1.0, 2.0, 3.0], dtype=ml.bfloat16)
    shared, as_is = ml.from_numpy(array), ml.as_tensor(array)
    array[0] = 8
    assert shared.dtype == ml.bfloat16 and shared[0].item() == 8 and as_is[0].item() == 8
    copied = ml.tensor(array)
    array[1] = 9
    assert copied[1].item() == 2 and copied.dtype == ml.bfloat16


# ---- factories --------------------------------------------------------------------------------------
def test_factories_with_bfloat16():
    def snippet(lib):
        kw = {"dtype": lib.bfloat16}
        return [lib.zeros(2, 3, **kw), lib.ones((2,), **kw), lib.full((3,), TIE, **kw), lib.full((2,), 7, **kw),
                lib.empty(2, **kw).shape, lib.eye(3, **kw), lib.eye(2, 3, **kw), lib.arange(5, **kw),
                lib.arange(250, 262, **kw), lib.arange(0, 300, 1.0, **kw)[-12:], lib.arange(0.1, 5.3, 0.37, **kw),
                lib.linspace(0, 1000, 7, **kw), lib.linspace(-3.3, 7.1, 11, **kw),
                lib.linspace(0.1, 0.9, 1, **kw), lib.linspace(2, 3, 0, **kw), lib.linspace(-1.0, 517.3, 300, **kw),
                lib.randn(3, **kw).dtype, lib.rand(3, **kw).dtype, lib.randint(0, 10, (3,), **kw).dtype,
                lib.zeros(2, dtype=lib.bfloat16, requires_grad=True).requires_grad]
    check(snippet)


def test_long_bfloat16_arange_within_one_unit_of_torchs():
    """torch's scalar formula (start + i * step in float32, rounded once; what minilora computes) is
    what its CPU kernel gives for short ranges (exact above). For longer ones the kernel's vectorised
    path rounds each chunk's first value to bfloat16 and counts on from it -- chunks as wide as the
    CPU's vectors (AVX2, AVX-512), so the numbers depend on the machine -- and lands up to one unit in
    the last place away: of the value, or near zero of the chunk's first value (at most 1.6 from
    zero here: 2**-7). Within that unit here, not equal."""
    ours = ml.arange(-7.5, 40.0, 0.1, dtype=ml.bfloat16).float().numpy()
    theirs = torch.arange(-7.5, 40.0, 0.1, dtype=torch.bfloat16).float().numpy()
    assert ours.shape == theirs.shape
    np.testing.assert_allclose(ours, theirs, rtol=2 ** -7, atol=2 ** -7)


def test_float16_arange_and_linspace_as_torch():
    def snippet(lib):
        kw = {"dtype": lib.float16}
        return [lib.arange(0.1, 5.3, 0.37, **kw), lib.arange(2040.0, 2100.0, 1.5, **kw),
                lib.linspace(0, 1000, 7, **kw), lib.linspace(-3.3, 7.1, 101, **kw)]
    check(snippet)


def test_random_bfloat16_values_are_in_range_and_rounded():
    ml.manual_seed(0)
    u = ml.rand(10_000, dtype=ml.bfloat16)
    n = ml.randn(10_000, dtype=ml.bfloat16)
    assert u.dtype == n.dtype == ml.bfloat16
    assert 0 <= u.min().item() and u.max().item() <= 1  # (a value just under 1 may round to 1.0, as in torch)
    assert abs(float(n.float().mean())) < 0.05 and abs(float(n.float().std()) - 1) < 0.05
    r = ml.randint(-5, 5, (1000,), dtype=ml.bfloat16)
    assert set(r.tolist()) <= set(range(-5, 5))


def test_set_default_dtype_bfloat16(default_dtype_restored):
    def snippet(lib):
        lib.set_default_dtype(lib.bfloat16)
        try:
            return [lib.get_default_dtype(), lib.tensor([TIE, 0.1]), lib.ones(2), lib.zeros(1).dtype,
                    lib.arange(0.0, 1.0, 0.125), lib.full((2,), 0.1), lib.tensor([1, 2]).dtype,
                    lib.tensor([1.0]) * 2.5, lib.linspace(0, 1, 5), repr(lib.tensor([1.5, 2.0])),
                    lib.finfo().eps]
        finally:
            lib.set_default_dtype(lib.float32)
    check(snippet)
    expect_error(lambda lib: lib.set_default_dtype(lib.int64))


# ---- nn: init, Module casts, state_dicts ------------------------------------------------------------
def test_nn_init_keeps_bfloat16_parameters():
    def snippet(lib):
        w = lib.empty(16, 32, dtype=lib.bfloat16)
        for init in (lib.nn.init.kaiming_uniform_, lib.nn.init.xavier_normal_, lib.nn.init.normal_,
                     lib.nn.init.uniform_, lib.nn.init.trunc_normal_):
            init(w)
            assert w.dtype == lib.bfloat16
        lib.nn.init.constant_(w, TIE)
        v = lib.zeros(3, dtype=lib.bfloat16)
        v.fill_(TIE)
        s = lib.zeros(3, dtype=lib.bfloat16)
        s[1] = TIE
        s[2:] = TIE
        u = lib.zeros(3, dtype=lib.bfloat16).normal_()
        return [w[0, :3], lib.nn.init.ones_(lib.empty(2, dtype=lib.bfloat16)), v, s, u.dtype,
                lib.nn.init.zeros_(lib.empty(2, dtype=lib.bfloat16))]
    check(snippet)


class _WithIntBuffer:
    """A Linear with an int64 buffer (a step counter): casts must leave the buffer's dtype alone."""

    @staticmethod
    def build(lib):
        lib.manual_seed(0)
        model = lib.nn.Linear(3, 2)
        model.register_buffer("steps", lib.tensor([7]))
        with lib.no_grad():
            model.weight.copy_(lib.tensor(np.linspace(-1, 1, 6).reshape(2, 3) + 2 ** -30))
            model.bias.copy_(lib.tensor([TIE, 0.1]))
        return model


def test_module_bfloat16_casts_floats_only():
    def snippet(lib):
        model = _WithIntBuffer.build(lib)
        same = model.bfloat16()
        out = [same is model, model.weight.dtype, model.bias, model.steps.dtype, model.weight,
               [(k, v.dtype) for k, v in model.state_dict().items()], type(model.weight).__name__]
        model.to(dtype=lib.float32)
        out += [model.weight.dtype, model.steps.dtype]
        model.to(lib.bfloat16)
        out += [model.weight.dtype, model(lib.ones(1, 3, dtype=lib.bfloat16)).dtype]
        return out
    check(snippet)
    expect_error(lambda lib: _WithIntBuffer.build(lib).to(dtype=lib.int32))


def test_module_bfloat16_parameter_trains():
    def snippet(lib):
        model = _WithIntBuffer.build(lib).bfloat16()
        loss = (model(lib.ones(4, 3, dtype=lib.bfloat16)) ** 2).sum()
        loss.backward()
        return [model.weight.grad.dtype, model.bias.grad.dtype, model.weight.requires_grad]
    check(snippet)


def test_parameter_containers_print_bfloat16_as_torch():
    def snippet(lib):
        p = lib.nn.Parameter(lib.ones(2, dtype=lib.bfloat16))
        return [repr(lib.nn.ParameterDict({"a": p})), repr(lib.nn.ParameterList([p])), repr(p)]
    check(snippet)


@pytest.mark.parametrize("assign", [False, True])
def test_load_state_dict_from_torch_bfloat16_keeps_bfloat16(assign):
    torch_model = torch.nn.Linear(3, 2).to(torch.bfloat16)
    with torch.no_grad():
        torch_model.bias.copy_(torch.tensor([TIE, 0.1]))
    ours = ml.nn.Linear(3, 2).bfloat16()
    ours.load_state_dict(torch_model.state_dict(), assign=assign)
    for name, value in torch_model.state_dict().items():
        mine = ours.state_dict()[name]
        assert mine.dtype == ml.bfloat16
        assert np.array_equal(mine.numpy().view(np.int16), value.view(torch.int16).numpy())
    assert isinstance(ours.weight, ml.nn.Parameter) and ours.weight.requires_grad


def test_load_state_dict_casts_into_the_models_dtype():
    """A float32 model loading a bfloat16 checkpoint widens it exactly; a bfloat16 model loading a
    float64 one rounds as torch's copy_ does (through float32)."""
    def snippet(lib):
        wide = lib.nn.Linear(2, 2)
        narrow = lib.nn.Linear(2, 2).bfloat16()
        state = {"weight": lib.tensor([[TIE, 0.1], [0.2, -0.3]], dtype=lib.float64),
                 "bias": lib.tensor([TIE, 2.0], dtype=lib.float64)}
        narrow.load_state_dict(state)
        wide.load_state_dict(narrow.state_dict())
        return [narrow.weight, narrow.bias, wide.weight, wide.bias]
    check(snippet)


def test_state_dict_round_trip_keeps_bits(tmp_path):
    model = _WithIntBuffer.build(ml).bfloat16()
    copy = _WithIntBuffer.build(ml).bfloat16()
    with ml.no_grad():
        copy.weight.zero_()
    copy.load_state_dict(model.state_dict())
    for name, value in model.state_dict().items():
        assert copy.state_dict()[name].dtype == value.dtype
        assert np.array_equal(copy.state_dict()[name].numpy(), value.numpy())
    path = tmp_path / "model.pt"
    ml.save(model.state_dict(), path)
    loaded = ml.load(path)
    assert loaded["weight"].dtype == ml.bfloat16
    assert np.array_equal(loaded["weight"].numpy().view(np.int16), model.weight.numpy().view(np.int16))


# ---- testing helpers ---------------------------------------------------------------------------
def test_assert_close_defaults_follow_torch_testing_for_16_bit_floats():
    expected = np.array([1.0, 100.0], dtype=np.float32)
    near = ml.tensor([1.0078125, 101.0], dtype=ml.bfloat16)  # 0.8% and 1% off: inside rtol 1.6e-2
    assert_close(near, expected)
    torch.testing.assert_close(torch.tensor([1.0078125, 101.0], dtype=torch.bfloat16),
                               torch.tensor([1.0, 100.0], dtype=torch.bfloat16))
    with pytest.raises(AssertionError, match="rtol=0.016"):
        assert_close(ml.tensor([1.03], dtype=ml.bfloat16), np.array([1.0], np.float32))  # 3% off
    assert_close(ml.tensor([1.0005], dtype=ml.float16), np.array([1.0], np.float32))  # fp16: rtol 1e-3
    with pytest.raises(AssertionError):
        assert_close(ml.tensor([1.01], dtype=ml.float16), np.array([1.0], np.float32))
    with pytest.raises(AssertionError):  # float32 keeps its tight default
        assert_close(np.array([1.0001], np.float32), np.array([1.0], np.float32))
    with pytest.raises(AssertionError):  # explicit tolerances win
        assert_close(near, expected, rtol=1e-3, atol=1e-3)


def test_grad_check_refuses_16_bit_inputs_clearly():
    x = ml.tensor([1.0, 2.0], dtype=ml.bfloat16, requires_grad=True)
    with pytest.raises(TypeError, match="float64.*bfloat16.*x \\+ eps rounds back to x"):
        grad_check(lambda t: t * t, x)
    with pytest.raises(TypeError, match="float16"):
        grad_check(lambda t: t * t, ml.tensor([1.0], dtype=ml.float16, requires_grad=True))


def test_without_ml_dtypes_bfloat16_is_a_clear_error_everywhere():
    """test_torch_conformance covers the factories and casts; here loading a torch bfloat16 checkpoint:
    assign=False still widens into the model's dtype, assign=True says what to install."""
    run_without_ml_dtypes("""
import torch
import minilora as ml
model = ml.nn.Linear(2, 2)
state = torch.nn.Linear(2, 2).to(torch.bfloat16).state_dict()
model.load_state_dict(state)
assert model.weight.dtype == ml.float32
try:
    model.load_state_dict(state, assign=True)
except TypeError as exc:
    assert "ml_dtypes" in str(exc), exc
else:
    raise AssertionError("no error")
print("ok")
""")


def test_an_equal_copy_of_the_bfloat16_dtype_is_bfloat16():
    """``dtype.newbyteorder()`` makes a bfloat16 dtype equal to, but not, the registered one; a
    big-endian one holds swapped bytes. Both arrays become ordinary bfloat16 tensors (is-checks on the
    dtype inside the ops would otherwise treat them as not floating)."""
    values = np.array([1.5, -2.25, 3e5], np.float32).astype(ml.bfloat16)
    native = values.view(ml.bfloat16.newbyteorder("="))
    assert native.dtype is not ml.bfloat16
    shared = ml.from_numpy(native)
    assert shared.dtype is ml.bfloat16 and np.shares_memory(shared.numpy(), native)
    swapped = values.astype(ml.bfloat16.newbyteorder(">"))
    for t in (shared, ml.tensor(native), ml.tensor(swapped), ml.as_tensor(swapped)):
        assert t.dtype is ml.bfloat16 and t.is_floating_point()
        assert t.tolist() == [1.5, -2.25, values[2].item()]
    assert ml.dtypes.is_floating(swapped.dtype) and ml.dtypes.is_floating(native.dtype)


def test_too_large_for_the_dtype_is_inf_without_a_warning():
    """torch makes inf of a number beyond the dtype's range, silently; NumPy's cast warns."""
    torch = pytest.importorskip("torch")
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        made = [ml.tensor(7e4, dtype=ml.float16), ml.tensor([1e39], dtype=ml.bfloat16), ml.tensor(1e39),
                ml.tensor([7e4]).half(), ml.tensor([1e300], dtype=ml.float64).float()]
    expected = [torch.tensor(7e4, dtype=torch.float16), torch.tensor([1e39], dtype=torch.bfloat16),
                torch.tensor(1e39), torch.tensor([7e4]).half(), torch.tensor([1e300], dtype=torch.float64).float()]
    for got, want in zip(made, expected):
        assert got.tolist() == want.tolist() and str(got.dtype) == str(want.dtype).removeprefix("torch.")
