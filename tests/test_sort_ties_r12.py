"""torch.sort(stable=False), argsort and topk leave equal elements in torch's CPU order (std_sort.py).

ATen sorts (value, index) pairs with libstdc++'s std::sort / partial_sort / nth_element: among ties (and NaNs)
the order is theirs, not the original one. NumPy's stable sort gave other indices for any row with ties past 16
elements (torch.sort(x).indices of 40 integers in 0..3: every seed differed), and topk(sorted=False) returned
sorted indices where torch returns nth_element's order. Each case runs with the compiled std_sort.cpp and with
the Python port (no C++ compiler)."""
import numpy as np
import pytest

import minilora as ml
from minilora import std_sort

torch = pytest.importorskip("torch")


@pytest.fixture(params=["compiled", "port"])
def backend(request, monkeypatch):
    if request.param == "compiled" and std_sort._lib() is None:
        pytest.skip("no C++ compiler")
    if request.param == "port":
        monkeypatch.setattr(std_sort, "_library", False)
    return request.param


def _tied(seed, shape, dtype, high=4, nans=0):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, high, shape).astype(dtype)
    if nans:
        x.reshape(-1)[rng.integers(0, x.size, nans)] = np.nan
    return x


@pytest.mark.parametrize("n", [16, 17, 40, 300])
@pytest.mark.parametrize("descending", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64, np.int32])
def test_sort_ties_as_torch(backend, n, descending, dtype):
    x = _tied(n, (3, n), dtype)
    want = torch.sort(torch.from_numpy(x), descending=descending)
    got = ml.sort(ml.tensor(x), descending=descending)
    np.testing.assert_array_equal(got.indices.numpy(), want.indices.numpy())
    np.testing.assert_array_equal(got.values.numpy(), want.values.numpy())
    np.testing.assert_array_equal(ml.argsort(ml.tensor(x), dim=1, descending=descending).numpy(),
                                  torch.argsort(torch.from_numpy(x), dim=1, descending=descending).numpy())


def test_sort_nans_other_dims_and_stable(backend):
    x = _tied(1, (50, 3, 2), np.float32, high=3, nans=20)
    for dim in (0, 1, -1):
        for descending in (False, True):
            want = torch.sort(torch.from_numpy(x), dim=dim, descending=descending).indices.numpy()
            got = ml.tensor(x).sort(dim=dim, descending=descending).indices.numpy()
            np.testing.assert_array_equal(got, want)
    x = _tied(2, (60,), np.float32)  # stable=True keeps the original order of ties, as torch
    np.testing.assert_array_equal(ml.sort(ml.tensor(x), stable=True).indices.numpy(),
                                  torch.sort(torch.from_numpy(x), stable=True).indices.numpy())


def test_sort_cases_torch_keeps_stable(backend):
    # fbgemm's radix sort (1-D integers, ascending, >= 32768 elements) is stable, and a broadcast axis is not sorted
    x = _tied(3, (32768,), np.int64)
    np.testing.assert_array_equal(ml.sort(ml.tensor(x)).indices.numpy(),
                                  torch.sort(torch.from_numpy(x)).indices.numpy())
    row = ml.tensor(np.float32(2.0)).expand(40)
    np.testing.assert_array_equal(ml.sort(row).indices.numpy(), np.arange(40))
    np.testing.assert_array_equal(ml.sort(ml.tensor(_tied(4, (40,), np.bool_, high=2))).indices.numpy(),
                                  torch.sort(torch.from_numpy(_tied(4, (40,), np.bool_, high=2))).indices.numpy())


@pytest.mark.parametrize("n,k", [(40, 1), (40, 7), (40, 40), (1000, 3), (1000, 200), (129, 2)])
@pytest.mark.parametrize("largest", [True, False])
@pytest.mark.parametrize("sorted_", [True, False])
def test_topk_as_torch(backend, n, k, largest, sorted_):
    x = _tied(n + k, (2, n), np.float32, high=6, nans=2)
    want = torch.topk(torch.from_numpy(x), k, largest=largest, sorted=sorted_)
    got = ml.topk(ml.tensor(x), k, largest=largest, sorted=sorted_)
    np.testing.assert_array_equal(got.indices.numpy(), want.indices.numpy())
    np.testing.assert_array_equal(got.values.numpy(), want.values.numpy())


def test_topk_distinct_unsorted_and_gradient(backend):
    # without ties too, sorted=False is nth_element's order, not sorted
    x = np.random.default_rng(5).permutation(50).astype(np.float64)
    want = torch.topk(torch.from_numpy(x), 10, sorted=False).indices.numpy()
    assert not (np.diff(x[want]) <= 0).all()  # (torch's order is really unsorted here)
    t = ml.tensor(x, requires_grad=True)
    values, indices = ml.topk(t, 10, sorted=False)
    np.testing.assert_array_equal(indices.numpy(), want)
    (values * ml.arange(10.0, dtype=ml.float64)).sum().backward()
    tt = torch.tensor(x, requires_grad=True)
    (torch.topk(tt, 10, sorted=False).values * torch.arange(10.0, dtype=torch.float64)).sum().backward()
    np.testing.assert_array_equal(t.grad.numpy(), tt.grad.numpy())


def test_port_matches_compiled_on_random_rows():
    if std_sort._lib() is None:
        pytest.skip("no C++ compiler")
    rng = np.random.default_rng(6)
    for trial in range(40):
        x = rng.integers(0, 1 + trial % 5, (2, int(rng.integers(1, 400)))).astype(np.float64)
        port = std_sort._StdAlgorithms(x[0].tolist(), trial % 2)
        port.sort(0, x.shape[1])
        np.testing.assert_array_equal(std_sort.sort_order(x, trial % 2)[0], port.a)
