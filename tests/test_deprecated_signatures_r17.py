"""torch's deprecated call signatures (tools/autograd/deprecated.yaml), as old tutorials and optimizers write them:
``p.data.add_(-lr, p.grad)``, ``exp_avg_sq.addcmul_(1 - beta2, grad, grad)``, ``torch.addmm(beta, M, alpha, m1, m2)``.
torch 2.13 still accepts them (functions, methods, in-place methods, positional or keyword) with a UserWarning given
once per process (each time after ``torch.set_warn_always(True)``); minilora raised TypeError."""
import warnings

import numpy as np
import pytest

import minilora as ml

torch = pytest.importorskip("torch")

_RNG = np.random.default_rng(0)
_ARRAYS = {"x": (2, 3), "y": (2, 3), "M": (2, 2), "a": (2, 3), "b": (3, 2), "B": (4, 2, 3), "C": (4, 3, 2),
           "M3": (4, 2, 2), "v": (2,), "vm": (3,)}
_ARRAYS = {name: _RNG.standard_normal(shape).astype(np.float32) for name, shape in _ARRAYS.items()}


def _namespace(L):
    names = {name: L.tensor(array) for name, array in _ARRAYS.items()}
    names["xl"] = L.tensor([[1, -2, 3], [4, 5, -6]])
    names["yl"] = L.tensor([[7, 8, -9], [1, 2, 3]])
    return dict(names, torch=L)


@pytest.fixture
def warn_always():
    """Both libraries warn at each deprecated call (by default each warns once per process)."""
    torch.set_warn_always(True)
    ml.set_warn_always(True)
    yield
    torch.set_warn_always(False)
    ml.set_warn_always(False)


def _run(L, call):
    names = _namespace(L)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = eval(call, names)
        except Exception as error:  # (the outcome compared: torch's type and message)
            result = error
    messages = [(w.category, str(w.message).split(" (Triggered internally")[0]) for w in caught]
    return result, messages, names


_SAME_AS_SELF = "x M M3 v a".split()
# each call in torch's deprecated order, positionally and with keywords (and a 0-d tensor as the number)
CALLS = [
    "x.add(2, y)", "x.add(2, 1)", "x.sub(2, 1)", "x.add(2, other=y)", "x.sub(-0.5, y)", "x.add_(-0.1, y)",
    "x.sub_(3, other=y)", "torch.add(x, 2, y)", "torch.sub(x, 0.25, y)", "torch.add(x, 2, other=y)",
    "torch.add(input=x, alpha=2, other=y, out=torch.empty(2, 3))", "torch.sub(x, 2, y, out=torch.empty(1))",
    "x.add(torch.tensor(3.0), y)", "xl.add(1, 2.5)", "xl.add(2, yl)", "xl.sub(1, 2.5)", "xl.add(2.5, 1)",
    "xl.add(2.0, yl)", "x.add(True, y)",
    "x.addcmul(0.5, y, a)", "x.addcmul_(1 - 0.999, y, y)", "torch.addcmul(x, 2, y, a)",
    "torch.addcmul(x, 2, tensor1=y, tensor2=a)", "x.addcmul(2, tensor1=y, tensor2=a)",
    "x.addcdiv(-0.01, y, a)", "x.addcdiv_(-0.01, y, a)", "torch.addcdiv(x, value=3, tensor1=y, tensor2=a)",
    "torch.addcdiv(x, 3, y, a, out=torch.empty(2, 3))",
    "torch.addmm(0.5, M, 3, a, b)", "torch.addmm(0.5, M, a, b)", "torch.addmm(0.5, M, 3, mat1=a, mat2=b)",
    "torch.addmm(beta=0.5, input=M, alpha=3, mat1=a, mat2=b)", "torch.addmm(0.5, M, 3, a, b, out=torch.empty(2, 2))",
    "M.addmm(0.5, 3, a, b)", "M.addmm(0.5, a, b)", "M.addmm_(0.5, 3, a, b)", "M.addmm_(0.5, mat1=a, mat2=b)",
    "torch.addbmm(2, M, 0.5, B, C)", "torch.addbmm(2, M, B, C)", "M.addbmm(2, 0.5, B, C)", "M.addbmm_(2, B, C)",
    "torch.baddbmm(2, M3, 0.5, B, C)", "torch.baddbmm(2, M3, B, C)", "M3.baddbmm(2, 0.5, batch1=B, batch2=C)",
    "M3.baddbmm_(2, B, C)",
    "torch.addmv(2, v, 0.5, a, vm)", "torch.addmv(2, v, a, vm)", "v.addmv(2, 0.5, a, vm)", "v.addmv_(2, a, vm)",
    "torch.addmv_(2, v, 0.5, a, vm)", "torch.addmv_(2, v, a, vec=vm)",
    "torch.addr(2, a, 0.5, v, vm)", "torch.addr(2, a, v, vm)", "a.addr(2, 0.5, v, vm)", "a.addr_(2, vec1=v, vec2=vm)",
]


@pytest.mark.parametrize("call", CALLS)
def test_deprecated_signature_as_torch(call, warn_always):
    expected, expected_warnings, torch_names = _run(torch, call)
    result, result_warnings, names = _run(ml, call)
    assert result_warnings == expected_warnings
    if isinstance(expected, Exception):
        assert type(result) is type(expected) and str(result) == str(expected)
        return
    assert not isinstance(result, Exception), result
    assert np.dtype(result.dtype).name == str(expected.dtype).replace("torch.", "")
    assert tuple(result.shape) == tuple(expected.shape)
    np.testing.assert_allclose(result.numpy(), expected.numpy(), rtol=1e-6, atol=1e-6)
    receiver = "v" if call.startswith("torch.addmv_") else call.split(".")[0]
    if call.split("(")[0].endswith("_"):  # in place: self is written and returned
        assert result is names[receiver]


def test_current_signatures_give_no_warning(warn_always):
    for call in ("x.add(y, alpha=2)", "x.add(alpha=2, other=y)", "x.addcmul(y, a, value=0.5)",
                 "torch.addmm(M, a, b, beta=0.5, alpha=3)", "torch.add(2, 3)"):
        expected, expected_warnings, _ = _run(torch, call)
        result, result_warnings, _ = _run(ml, call)
        assert result_warnings == expected_warnings == []
        np.testing.assert_allclose(np.asarray(result.numpy()), expected.numpy(), rtol=1e-6)


def test_set_warn_always_as_torch():
    assert ml.is_warn_always_enabled() is torch.is_warn_always_enabled() is False
    for L in (torch, ml):
        with pytest.raises(RuntimeError, match="^setWarnOnlyOnce expects a bool, but got int$"):
            L.set_warn_always(1)


def test_warned_once_per_process(monkeypatch):
    from minilora.ops import deprecated_signatures
    monkeypatch.setattr(deprecated_signatures, "_warned", False)
    x = ml.ones(2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        x.add(2, x)
        x.sub_(2, x)
        ml.addmm(2, ml.ones(2, 2), ml.ones(2, 2), ml.ones(2, 2))
    assert [str(w.message).splitlines()[0] for w in caught] == ["This overload of add is deprecated:"]


# calls that fit neither torch's signatures nor its deprecated ones: torch's TypeError, word for word (python_arg_parser:
# one signature the argument count fits gives its first problem, else ATen's format_invalid_args lists them all)
REFUSED = [
    "x.add(y, 2)", "x.sub(y, 2)", "x.add(2, y, alpha=3)", "x.add_(2, y, alpha=3)", "x.add(2, y, 3)", "x.add(2, 3, 4)",
    "torch.add(x, 2, y, alpha=3)", "x.addcmul(y, y, 2)", "x.addcmul(2, 3, y)", "x.addcdiv(2, 3, 4, 5)", "x.addcmul(x)",
    "torch.addmm(2, M, a, b, alpha=3)", "M.addmm(2, a, b, beta=3)", "M.addmm(2, 3, a, b, out=M)", "M.addmm(a)",
    "torch.addmm(x, x)", "torch.addmm(x, x, x, x, x, x)", "torch.addr(a, a, a, a, a)", "torch.addmv_(M, a, a, a, a)",
    "x.add('2', y)", "torch.add(x, other='a')", "x.add(other=x, beta=2)", "torch.add(x, x, x, x)", "x.add(x, other=x)",
    "torch.addmm(beta=2, input=M, mat1=a)", "torch.addmm(M, beta=2, alpha=3)",
]


@pytest.mark.parametrize("call", REFUSED)
def test_neither_signature_is_refused_in_torchs_words(call, warn_always):
    expected, _, _ = _run(torch, call)
    result, result_warnings, _ = _run(ml, call)
    assert isinstance(expected, TypeError) and result_warnings == []
    assert type(result) is TypeError and str(result) == str(expected)
