"""Round 13's torch conformance leftovers, each against torch itself: float64's fused multiply-adds (add's alpha,
addcmul, lerp, the optimizers' steps).

float64 comparisons are bit for bit: torch fuses where its build targets FMA (``ATEN_CPU_CAPABILITY`` avx2/avx512),
and minilora follows the same rule (``float32_math.FUSED_MULTIPLY_ADD``), so both sides read one environment.
"""
import numpy as np
import pytest

import minilora as ml
from minilora import float32_math

torch = pytest.importorskip("torch")


def _both(values):
    """The same float64 arrays as torch and minilora tensors."""
    return [torch.tensor(v) for v in values], [ml.tensor(v) for v in values]


def _differ(a, b):
    """How many elements of two results (torch's, minilora's) differ in any bit."""
    return int((np.asarray(a.detach().numpy()) != np.asarray(b.detach().numpy())).sum())


# ---- float64 fused multiply-adds -------------------------------------------------------------------------------
@pytest.mark.parametrize("op", ["add", "sub", "addcmul", "lerp_small", "lerp_large", "lerp_tensor"])
def test_float64_elementwise_fused_as_torch(op):
    rng = np.random.default_rng(1)
    (x, y, z), (X, Y, Z) = _both([rng.standard_normal(2000) for _ in range(3)])
    calls = {"add": lambda L, a, b, c: L.add(a, b, alpha=0.3), "sub": lambda L, a, b, c: L.sub(a, b, alpha=0.3),
             "addcmul": lambda L, a, b, c: L.addcmul(a, b, c, value=0.3),
             "lerp_small": lambda L, a, b, c: L.lerp(a, b, 0.3), "lerp_large": lambda L, a, b, c: L.lerp(a, b, 0.7),
             "lerp_tensor": lambda L, a, b, c: L.lerp(a, b, c)}
    assert _differ(calls[op](torch, x, y, z), calls[op](ml, X, Y, Z)) == 0


def test_float64_add_alpha_forward_and_backward():
    """add(alpha=) on float64 tensors that require grad: fused forward, and ``other``'s gradient ``g * alpha``
    with alpha a double, not rounded to float."""
    rng = np.random.default_rng(2)
    values, g = [rng.standard_normal(500) for _ in range(2)], rng.standard_normal(500)
    outs, grads = [], []
    for lib in (torch, ml):
        a, b = (lib.tensor(v, requires_grad=True) for v in values)
        out = lib.add(a, b, alpha=0.1)
        out.backward(lib.tensor(g))
        outs.append(out)
        grads.append(b.grad)
    assert _differ(*outs) == 0
    assert _differ(*grads) == 0


@pytest.mark.parametrize("numpy_port", [False, True], ids=["compiled", "numpy"])
def test_float64_fused_multiply_add_is_rounded_once(numpy_port):
    """C's fma(), or without a compiler the error-free emulation (Boldo & Melquiond's rounding to odd), on
    cancelling sums where two roundings are wrong most often; torch's addcmul is the reference."""
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal(20000), rng.standard_normal(20000)
    c = -a * b * (1 + 1e-14 * rng.standard_normal(20000))
    c[::2] = rng.standard_normal(10000)
    expected = torch.addcmul(torch.tensor(c), torch.tensor(a), torch.tensor(b)).numpy()
    if numpy_port:
        with float32_math.numpy_port():
            got = float32_math.fused_multiply_add64(a, b, c)
    else:
        got = float32_math.fused_multiply_add64(a, b, c)
    if float32_math.FUSED_MULTIPLY_ADD:  # (torch's "default" build rounds twice: its addcmul is no reference)
        assert int((got != expected).sum()) == 0
    # 0.1 * 3 - 0.3 is 2^-55 exactly once rounded, 2^-54 when the product is rounded first
    assert float32_math.fused_multiply_add64(np.float64(0.1), np.full(1, 3.0), -0.3)[0] == 2.0 ** -55


def _three_steps(lib, name, hyper, seed):
    """A float64 weight of 1000 elements after three steps of ``lib.optim.<name>`` on given gradients: the weight
    and the optimizer's state for it."""
    rng = np.random.default_rng(seed)
    start, grads = rng.standard_normal(1000), [rng.standard_normal(1000) for _ in range(3)]
    p = lib.tensor(start, requires_grad=True)
    optimizer = getattr(lib.optim, name)([p], **hyper)
    for g in grads:
        p.grad = lib.tensor(g)
        optimizer.step()
    return p, optimizer.state[p]


_OPTIMIZERS = [("SGD", dict(lr=0.1, momentum=0.9)),
               ("SGD", dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01)),
               ("SGD", dict(lr=0.1, momentum=0.9, dampening=0.1)), ("SGD", dict(lr=0.1, weight_decay=0.01)),
               ("Adamax", dict(lr=0.01)), ("ASGD", dict(lr=0.01))]


@pytest.mark.parametrize("name, hyper", _OPTIMIZERS, ids=[f"{n}-{'-'.join(h)}" for n, h in _OPTIMIZERS])
def test_float64_optimizer_steps_as_torch(name, hyper):
    """Three steps on float64 weights with given gradients: the same bits as torch (the steps' add(alpha=),
    lerp_ and addcmul_ are fused multiply-adds on torch's FMA builds)."""
    (p_torch, _), (p_ml, _) = (_three_steps(lib, name, hyper, seed=4) for lib in (torch, ml))
    assert _differ(p_torch, p_ml) == 0


@pytest.mark.parametrize("name, hyper", [("Adam", dict(lr=0.01)), ("AdamW", dict(lr=0.01, weight_decay=0.1)),
                                         ("RMSprop", dict(lr=0.01, momentum=0.9, centered=True)),
                                         ("Adagrad", dict(lr=0.1))])
def test_float64_optimizer_state_as_torch(name, hyper):
    """Optimizers that divide by a root: their state (m, v, the running sums: fused multiply-adds) is torch's bit
    for bit; the weights differ only where torch's float64 sqrt (MKL's vdSqrt, ~1% of roots 1 ulp off the
    correctly rounded one) does: a few elements of 1000, one ulp each."""
    results = []
    for lib in (torch, ml):
        p, state = _three_steps(lib, name, hyper, seed=5)
        results.append((p.detach().numpy().copy(), {k: np.array(v.numpy()) for k, v in state.items()}))
    (p_torch, s_torch), (p_ml, s_ml) = results
    for key in s_torch:  # (RMSprop's momentum buffer adds grad / root: the root's ulp shows there too)
        if key != "momentum_buffer":
            assert int((s_torch[key] != s_ml[key]).sum()) == 0, key
    assert int((p_torch != p_ml).sum()) <= 20
    np.testing.assert_allclose(p_ml, p_torch, rtol=0, atol=1e-15)


# ---- which index kthvalue, mode and nanmedian return among ties --------------------------------------------
@pytest.fixture(params=["compiled", "python"])
def std_algorithms(request, monkeypatch):
    """Each tie case runs with native/std_sort.cpp and with std_sort.py's port of the same steps."""
    from minilora import std_sort
    if request.param == "compiled" and std_sort._lib() is None:
        pytest.skip("no C++ compiler: std_sort.cpp is not built")
    if request.param == "python":
        monkeypatch.setattr(std_sort, "_library", False)


def _tied_rows(dtype, nan):
    """Rows of few distinct values (ties everywhere), some with NaNs, of lengths around the algorithms' cut-offs."""
    rng = np.random.default_rng(6)
    arrays = [rng.integers(0, 4, (5, n)).astype(dtype) for n in (2, 3, 7, 17, 40)]
    if nan:
        for a in arrays:
            a[rng.random(a.shape) < 0.25] = np.nan
        arrays.append(np.full((2, 9), np.nan, dtype))  # all NaN
    return arrays


@pytest.mark.parametrize("op, nan", [("kthvalue", False), ("kthvalue", True), ("mode", False), ("mode", True),
                                     ("nanmedian", True)])
@pytest.mark.parametrize("dim", [1, 0])
def test_tie_indices_as_torch(std_algorithms, op, nan, dim):
    """kthvalue: ATen's quickselect's pick; mode: the end of the run in std::sort's order (a NaN its own run);
    nanmedian of a row all NaN: std::nth_element's pick among elements none less than another."""
    calls = {"kthvalue": lambda L, x: L.kthvalue(x, 2, dim=dim), "mode": lambda L, x: L.mode(x, dim=dim),
             "nanmedian": lambda L, x: L.nanmedian(x, dim=dim)}
    for dtype in (np.float64, np.float32):
        for a in _tied_rows(dtype, nan):
            a = a if dim == 1 else np.ascontiguousarray(a.T)  # (the reduced dimension n long either way)
            expected, got = calls[op](torch, torch.tensor(a)), calls[op](ml, ml.tensor(a))
            np.testing.assert_array_equal(got.indices.numpy(), expected.indices.numpy(), err_msg=f"{op} of {a}")
            np.testing.assert_array_equal(got.values.numpy(), expected.values.numpy())


# ---- a number, list or array where a top-level function takes a Tensor -----------------------------------------
def _outcome(call):
    try:
        call()
    except Exception as error:  # (the exception's type and first line are what a user sees)
        return type(error).__name__, str(error).splitlines()[0]
    return "ok", ""


@pytest.mark.parametrize("source", [
    "L.exp(2.0)", "L.exp(2)", "L.sin([1.0, 2.0])", "L.exp(np.ones(3))", "L.maximum(x, 5)", "L.maximum(5, x)",
    "L.minimum(x, 5.0)", "L.isclose(x, 1.0)", "L.allclose(x, 1.0)", "L.logaddexp(x, 1.0)", "L.dist(x, 1.0)",
    "L.exp2(3)", "L.sum([1.0, 2.0])", "L.matmul(x, [1.0, 2.0, 3.0])", "L.dot(i, [1, 2, 3])", "L.round(2.5)",
    "L.maximum(x, other=2.0)", "L.exp(input=2.0)", "L.unique(2.0)", "L.equal(x, 1.0)", "L.t(2.0)",
    "L.addcmul(x, x, 2.0)",
    # a float where a size's int goes: torch's parser's three spellings
    "L.zeros(2.0)", "L.zeros((2.0, 3))", "L.ones(2, 3.0)", "L.zeros([2, 3.5])", "L.zeros(2.5, 3)", "L.randn(2.0)",
    "L.rand(2, 3, 4.5)", "L.zeros(2, None)", "L.full((2.0,), 1)", "L.full([2, 3.5], 1)", "x.new_zeros(2.0)"])
def test_tensor_arguments_refused_as_torch(source):
    """torch's parser refuses these (``exp(): argument 'input' (position 1) must be Tensor, not float``);
    minilora computed an answer or failed with an AttributeError."""
    outcomes = []
    for lib in (torch, ml):
        x, i = lib.tensor([[1.0, -2.0, 3.0], [0.5, 4.0, -1.0]]), lib.tensor([1, 2, 3])
        outcomes.append(_outcome(lambda: eval(source, {"L": lib, "x": x, "i": i, "np": np})))
    assert outcomes[1] == outcomes[0]


def test_every_top_level_tensor_parameter_as_torch():
    """Every name TENSOR_PARAMETERS lists is refused by torch with a float there, in the words minilora uses; what
    torch takes there (None for an optional Tensor, a number where another overload takes one) still runs."""
    from minilora._argument_types import TENSOR_PARAMETERS
    x, i = ml.tensor([[1.0, -2.0], [0.5, 4.0]]), ml.tensor([1, 2])
    for accepted in (lambda: ml.bincount(i, None, 0), lambda: ml.where(x > 0, x, 0.0), lambda: ml.add(x, 2),
                     lambda: ml.pow(x, 2), lambda: ml.normal(2.0, 1.0, (2,))):
        assert _outcome(accepted) == ("ok", "")
    for parameters, names in TENSOR_PARAMETERS.items():
        for name in names.split():
            if not hasattr(torch, name):  # (a Tensor method only, x.expand_as: tests/test_bad_inputs_r24.py)
                continue
            for lib in (torch, ml):  # the last parameter given a float, the ones before it tensors
                args = [lib.ones(2, 2)] * (len(parameters) - 1) + [2.0]
                outcome = _outcome(lambda: getattr(lib, name)(*args))
                if lib is torch:
                    expected = outcome
            assert outcome == expected, name


@pytest.mark.parametrize("name", ["eq", "ne", "lt", "le", "gt", "ge", "greater", "less", "greater_equal", "less_equal",
                                  "not_equal", "fmod", "copysign", "remainder", "pow", "float_power", "xlogy",
                                  "clamp", "clip", "clamp_min", "clamp_max", "bitwise_and", "bitwise_or",
                                  "bitwise_xor", "bitwise_left_shift", "bitwise_right_shift"])
def test_calls_no_overload_takes_are_refused_as_torch(name):
    """``torch.eq(2, x)``, ``torch.pow(2.0, 3.0)``, ``torch.clamp(2, min=0)``: torch's parser finds no overload
    ("received an invalid combination of arguments", its overloads listed); minilora computed an answer or failed
    with an AttributeError. What an overload takes (a number after the tensor; a number before it where torch has
    a Number ``self``) still gives torch's result."""
    def overloads_of(message):  # (torch adds "didn't match because ..." under some overloads)
        return [line for line in message.splitlines() if "didn't match" not in line]

    outcomes = []
    for lib in (torch, ml):
        x, i = lib.tensor([1.0, -2.0, 3.0]), lib.tensor([1, 6, 3])
        tensor = i if name.startswith("bitwise") else x
        calls = [lambda: getattr(lib, name)(2, tensor), lambda: getattr(lib, name)(2.0, 3.0),
                 lambda: getattr(lib, name)([1, 2], tensor), lambda: getattr(lib, name)(input=2, other=tensor)]
        if name.startswith("clamp") or name == "clip":
            calls.append(lambda: getattr(lib, name)(2, **{"max" if name == "clamp_max" else "min": 0}))
        else:
            calls.append(lambda: getattr(lib, name)(tensor, 2).tolist())
        results = []
        for number, call in enumerate(calls):
            try:
                result = call()
                results.append(("ok", result if isinstance(result, list) else "tensor"))
            except Exception as error:  # noqa: BLE001 -- the error is the outcome compared
                lines = overloads_of(str(error))  # (keywords: torch's list of them is in an order of its own)
                results.append((type(error).__name__, lines[1:] if number == 3 else lines))
        outcomes.append(results)
    assert outcomes[1] == outcomes[0]


# ---- Tensor.resize_, resize_as_, sum_to_size --------------------------------------------------------------------
@pytest.mark.parametrize("source", [
    "x.resize_(3, 2)", "x.resize_((6,))", "x.resize_(2, 2)", "x.resize_(0)", "x.resize_(L.Size([1, 6]))",
    "x.resize_as_(L.ones(3, 2))", "x.resize_as_(L.ones(1))", "x.t().resize_(6)", "x.resize_(2.0, 3)",
    "x.resize_([2.0])", "x.resize_('a')", "L.ones(2, requires_grad=True).resize_(1)",
    "x.sum_to_size(1, 3)", "x.sum_to_size((2, 1))", "x.sum_to_size(3)", "x.sum_to_size(1)", "x.sum_to_size(2, 3)",
    "x.sum_to_size([1, 3])", "x.sum_to_size(L.Size([1, 1]))", "x.sum_to_size(1, 1, 3)", "x.sum_to_size(4)",
    "x.sum_to_size(1.0, 3)", "x.sum_to_size((1.0, 3))"])
def test_resize_and_sum_to_size_as_torch(source):
    """Shapes and values (the elements kept in storage order by resize_), or torch's error."""
    results = []
    for lib in (torch, ml):
        x = lib.arange(6.0).reshape(2, 3)
        try:
            out = eval(source, {"L": lib, "x": x})
            results.append((tuple(out.shape), out.detach().numpy().tolist(), tuple(x.shape)))
        except Exception as error:
            results.append((type(error).__name__, str(error).splitlines()[0]))
    assert results[1] == results[0]


def test_resize_shrinks_in_the_same_memory_and_sum_to_size_differentiates():
    """A shrunk tensor still shares its storage with a view taken before (torch keeps the storage); sum_to_size's
    gradient is the expanded incoming one, as torch's."""
    for lib in (torch, ml):
        x = lib.arange(6.0)
        view = x[:4]
        x.resize_(2, 2)
        x.mul_(10)
        assert view.tolist() == [0.0, 10.0, 20.0, 30.0]
    grads = []
    for lib in (torch, ml):
        x = lib.arange(6.0).reshape(2, 3).requires_grad_()
        (x.sum_to_size(1, 3) * lib.tensor([[1.0, 2.0, 3.0]])).sum().backward()
        grads.append(x.grad.numpy().tolist())
    assert grads[1] == grads[0]


# ---- EmbeddingBag's weight gradient -----------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("mode, weighted", [("sum", False), ("mean", False), ("sum", True)])
def test_embedding_bag_weight_gradient_as_torch(dtype, mode, weighted):
    """torch adds each row's gradient in its sorted ids' order (ties as std::sort leaves them), one axpy (fused)
    per occurrence, scaled by the sample's weight or 1 / bag size: the same bits (were 4-182 elements off)."""
    rng = np.random.default_rng(7)
    table, ids = rng.standard_normal((30, 16)), rng.integers(0, 30, 60)
    offsets, g = np.array([0, 3, 10, 10, 25, 33, 51]), rng.standard_normal((7, 16))
    sample_weights = rng.standard_normal(60)
    grads = []
    for lib in (torch, ml):
        weight = lib.tensor(table, dtype=getattr(lib, dtype), requires_grad=True)
        per_sample = lib.tensor(sample_weights, dtype=getattr(lib, dtype)) if weighted else None
        out = lib.nn.functional.embedding_bag(lib.tensor(ids), weight, lib.tensor(offsets), mode=mode,
                                              per_sample_weights=per_sample)
        out.backward(lib.tensor(g, dtype=getattr(lib, dtype)))
        grads.append(weight.grad)
    assert _differ(*grads) == 0


@pytest.mark.parametrize("mode", ["sum", "mean"])
def test_embedding_bag_gradient_with_create_graph_refuses_only_its_second_derivative(mode):
    """torch takes grad(create_graph=True) through embedding_bag and refuses only a derivative of that gradient
    (derivatives.yaml: _embedding_bag_backward not_implemented); the torch-ordered backward refused the first call."""
    outcomes = []
    for lib in (torch, ml):
        weight = lib.tensor(np.arange(30.0).reshape(10, 3) / 7, dtype=lib.float64, requires_grad=True)
        out = lib.nn.functional.embedding_bag(lib.tensor([1, 2, 4, 5, 4, 3]), weight, lib.tensor([0, 4]), mode=mode)
        grad, = lib.autograd.grad((out ** 2).sum(), weight, create_graph=True)
        with pytest.raises(NotImplementedError) as refusal:
            grad.sum().backward()
        outcomes.append((grad.detach().numpy().tolist(), str(refusal.value)))
    assert outcomes[1] == outcomes[0]


@pytest.mark.parametrize("source", ["x.transpose(0.0, 1)", "x.flatten(0.0)", "x.unsqueeze(1.0)", "L.cat([x, x], 1.0)",
                                    "L.stack([x, x], 0.0)", "x.topk(2.0)"])
def test_float_dims_refused_in_torchs_words(source):
    """A float dim or k is torch's TypeError naming the argument (minilora's rule, dtypes.int_argument, leaves out
    the position, which torch counts differently for methods and functions); NumPy's "list indices must be
    integers" or "slice indices must be integers" leaked before."""
    import re
    outcomes = []
    for lib in (torch, ml):
        x = lib.arange(6.0).reshape(2, 3)
        kind, message = _outcome(lambda: eval(source, {"L": lib, "x": x}))
        outcomes.append((kind, re.sub(r" \(position \d\)", "", message)))
    assert outcomes[1] == outcomes[0]


@pytest.mark.parametrize("source", ["L.add(2, 3)", "L.add(2.5, 3)", "L.sub(2, 3, alpha=2)", "L.mul(True, False)",
                                    "L.div(2, 3)", "L.true_divide(2, 3)", "L.floor_divide(2, 3)", "L.multiply(2.0, 3)",
                                    "L.subtract(2, 3)"])
def test_arithmetic_of_two_numbers_as_torch(source):
    """torch's arithmetic takes two Python numbers (wrapped numbers: int64 for ints, the default float dtype with a
    float); minilora failed with an AttributeError."""
    results = []
    for lib in (torch, ml):
        out = eval(source, {"L": lib})
        results.append((repr(out), str(out.dtype).split(".")[-1], tuple(out.shape)))
    assert results[1] == results[0]
