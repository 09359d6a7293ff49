"""torch's factory keywords ``layout=`` and ``pin_memory=``, ``torch.strided`` and ``x.layout``, and the words of
the negative-dimension error, against torch (a CPU build: no pinned memory allocator)."""
import copy
import pickle
import warnings

import numpy as np
import pytest

import minilora

torch = pytest.importorskip("torch")

# Each call as a tutorial writes it, ``{}`` where the keywords go; ``t`` is the library, ``x`` a 2 x 2 tensor.
FACTORIES = {
    "zeros": "t.zeros(2, 3, {})", "ones": "t.ones((2,), {})", "empty": "t.empty(size=(2,), {})",
    "full": "t.full((2,), 1.5, {})", "eye": "t.eye(2, 3, {})", "arange": "t.arange(0, 5, 2, {})",
    "linspace": "t.linspace(0, 1, 5, {})", "logspace": "t.logspace(0, 1, 3, 2.0, {})",
    "rand": "t.rand(2, {})", "randn": "t.randn(2, 2, {})", "randint": "t.randint(0, 5, (3,), {})",
    "randperm": "t.randperm(4, {})", "empty_strided": "t.empty_strided((2, 2), (1, 2), {})",
    "empty_permuted": "t.empty_permuted((2, 3), (1, 0), {})", "scalar_tensor": "t.scalar_tensor(3, {})",
    "zeros_like": "t.zeros_like(x, {})", "ones_like": "t.ones_like(x, {})", "empty_like": "t.empty_like(x, {})",
    "full_like": "t.full_like(x, 7, {})", "rand_like": "t.rand_like(x, {})", "randn_like": "t.randn_like(x, {})",
    "randint_like": "t.randint_like(x, 3, {})", "new_zeros": "x.new_zeros(2, {})", "new_ones": "x.new_ones((2,), {})",
    "new_empty": "x.new_empty(2, 2, {})", "new_full": "x.new_full((2,), 4.0, {})",
    "new_empty_strided": "x.new_empty_strided((2,), (1,), {})", "tril_indices": "t.tril_indices(3, 3, {})",
    "triu_indices": "t.triu_indices(3, 3, 1, {})", "hann_window": "t.hann_window(5, {})",
    "hamming_window": "t.hamming_window(5, False, {})", "bartlett_window": "t.bartlett_window(5, {})",
    "blackman_window": "t.blackman_window(5, {})", "kaiser_window": "t.kaiser_window(5, {})",
    "normal": "t.normal(0.0, 1.0, (3,), {})",
}
DETERMINISTIC = {"zeros", "ones", "full", "eye", "arange", "linspace", "logspace", "scalar_tensor", "zeros_like",
                 "ones_like", "full_like", "new_zeros", "new_ones", "new_full", "tril_indices", "triu_indices",
                 "hamming_window", "bartlett_window", "kaiser_window"}
ONE_ULP_APART = {"hann_window", "blackman_window"}  # (their middle value is 1 ulp from torch's on main too: not here)
NO_PINNED_MEMORY = "pin_memory=True requires a CUDA or other accelerator backend"


def _call(library, call, keywords):
    x = library.ones(2, 2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return eval(call.format(keywords), {"t": library, "x": x})


def _raised(library, call, keywords):
    try:
        _call(library, call, keywords)
    except Exception as error:  # noqa: BLE001  (the error itself is what is compared)
        return type(error), str(error)
    return None


def test_layouts_are_torchs():
    for name in ("strided", "sparse_coo", "sparse_csr", "sparse_csc", "sparse_bsr", "sparse_bsc", "_mkldnn", "jagged"):
        assert repr(getattr(minilora, name)) == repr(getattr(torch, name))
        assert isinstance(getattr(minilora, name), minilora.layout)
    assert minilora.empty(2).layout is minilora.strided
    assert str(minilora.randn(2, 3).t().layout) == str(torch.randn(2, 3).t().layout) == "torch.strided"


@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_strided_and_unpinned_are_accepted(name):
    call = FACTORIES[name]
    for keywords in ("layout=t.strided, pin_memory=False", "layout=None, pin_memory=None", "pin_memory=False"):
        ours, theirs = _call(minilora, call, keywords), _call(torch, call, keywords)
        assert ours.layout is minilora.strided
        assert tuple(ours.shape) == tuple(theirs.shape) and f"torch.{ours.dtype}" == str(theirs.dtype)
        if name in DETERMINISTIC:
            np.testing.assert_array_equal(ours.numpy(), theirs.numpy())
        elif name in ONE_ULP_APART:
            np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=3e-7)


@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_pin_memory_true_is_refused_as_torch_refuses_it(name):
    if minilora.cuda.is_available():
        pytest.skip("a GPU's pinned host memory exists: minilora accepts pin_memory=True")
    expected = _raised(torch, FACTORIES[name], "pin_memory=True")
    assert expected is not None and NO_PINNED_MEMORY in expected[1]
    assert _raised(minilora, FACTORIES[name], "pin_memory=True") == expected


@pytest.mark.parametrize("name", ["zeros", "full", "rand", "arange", "zeros_like", "new_ones", "eye", "hann_window"])
def test_wrong_argument_types_get_torchs_type_error(name):
    for keywords in ('layout="strided"', 'pin_memory="yes"'):
        expected, ours = _raised(torch, FACTORIES[name], keywords), _raised(minilora, FACTORIES[name], keywords)
        assert expected[0] is ours[0] is TypeError
        if "invalid combination" in expected[1]:  # (torch lists a function's overloads: minilora names the argument)
            assert keywords.split("=")[0] in ours[1] and "must be" in ours[1]
        else:
            assert ours == expected


@pytest.mark.parametrize("name", ["zeros", "ones", "randn", "linspace", "zeros_like", "new_full", "empty_strided",
                                  "normal", "kaiser_window"])
def test_a_sparse_layout_is_refused_by_name(name):
    for layout in ("sparse_coo", "sparse_csr", "jagged"):
        with pytest.raises(NotImplementedError, match=f"torch.{layout}.*dense"):
            _call(minilora, FACTORIES[name], f"layout=t.{layout}")


def test_tensor_takes_pin_memory_but_not_layout_range_the_reverse():
    assert _call(minilora, "t.tensor([1.5, 2.0], pin_memory=False)", "").tolist() == [1.5, 2.0]
    assert _raised(minilora, "t.tensor([1], pin_memory=True)", "") == _raised(torch, "t.tensor([1], pin_memory=True)",
                                                                               "")
    assert _raised(minilora, "t.tensor([1], layout=t.strided)", "")[0] is TypeError
    assert _call(minilora, "t.range(0, 2, layout=t.strided)", "").tolist() == [0.0, 1.0, 2.0]
    assert _raised(minilora, "t.range(0, 2, pin_memory=False)", "") == _raised(torch, "t.range(0, 2, pin_memory=False)",
                                                                                "")


@pytest.mark.parametrize("call", ["t.rand(-1)", "t.randn(2, -3)", "t.ones(2, -1)", "t.empty(-3)", "t.zeros(2, -1)",
                                  "t.zeros(-1)", "t.full((2, -1), 1.0)", "t.randint(3, (-1,))",
                                  "t.normal(0.0, 1.0, (2, -2))", "t.empty(-2, -1)", 't.zeros(2, -1, device="meta")'])
def test_negative_dimension_error_is_torchs(call):
    expected = _raised(torch, call, "")
    assert expected[0] is RuntimeError
    assert _raised(minilora, call, "") == expected


def test_pin_memory_true_on_meta_is_accepted_as_torch():
    ours = minilora.zeros(2, pin_memory=True, device="meta")
    theirs = torch.zeros(2, pin_memory=True, device="meta")
    assert ours.device.type == theirs.device.type == "meta" and tuple(ours.shape) == tuple(theirs.shape)


@pytest.mark.parametrize("name", ["strided", "sparse_coo", "_mkldnn", "channels_last", "contiguous_format",
                                  "preserve_format"])
def test_layouts_and_memory_formats_stay_themselves_when_copied(name):
    """A config deep-copied (or pickled) still holds torch.strided / torch.channels_last, as torch's does:
    minilora tells them apart by identity."""
    for library in (torch, minilora):
        value = getattr(library, name)
        assert copy.deepcopy(value) is value and pickle.loads(pickle.dumps(value)) is value
    assert minilora.empty(2, memory_format=copy.deepcopy(minilora.contiguous_format)).is_contiguous()
