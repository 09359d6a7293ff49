"""Round 8 tutorials, run as their authors wrote them, under torch and minilora side by side: the same seed
must print the same numbers. Karpathy's makemore (bigram counts and sampling, "Building makemore" part 3's
BatchNorm by hand, part 5's WaveNet with its own Linear/BatchNorm1d/FlattenConsecutive classes and
torch.histogram of the activations), with small sizes and few steps."""
import math

import numpy as np
import pytest

import minilora

torch = pytest.importorskip("torch")


def _same(ours, theirs, rtol=0.0, atol=0.0):
    assert tuple(ours.shape) == tuple(theirs.shape)
    assert str(ours.dtype).replace("minilora.", "") == str(theirs.dtype).replace("torch.", "")
    np.testing.assert_allclose(ours.detach().numpy(), theirs.detach().numpy(), rtol=rtol, atol=atol)


# ---- torch.histogram (makemore part 3 plots the activations' histogram) ------------------------------
_DATA = np.array([0.1, 0.2, 0.30000001, 0.9999999, 1.0, 2.0, -0.5, np.nan, 0.7, 0.7], dtype=np.float32)


@pytest.mark.parametrize("args, kwargs", [
    ((10,), {"range": (0.0, 1.0)}),           # values on the edges: torch's guess corrected by its neighbours
    ((), {"bins": 3, "range": [0, 3]}),
    ((7,), {"range": (-1.0, 2.0), "density": True}),
    ((4,), {"range": (0.0, 1.0), "weight": "w"}),
    ((4,), {"range": (0.0, 1.0), "weight": "w", "density": True}),
    (("edges",), {}),                          # a tensor of edges: a binary search
    (("edges",), {"weight": "w", "density": True}),
])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_histogram_matches_torch(args, kwargs, dtype):
    def call(lib):
        data = lib.tensor(_DATA.astype(dtype))
        edges = lib.tensor(np.array([0.0, 0.2, 0.7, 1.0], dtype=dtype))
        weight = lib.tensor(np.linspace(0.5, 1.5, _DATA.size).astype(dtype))
        a = tuple(edges if v == "edges" else v for v in args)
        kw = {k: (weight if v == "w" else v) for k, v in kwargs.items()}
        return lib.histogram(data, *a, **kw), data.histogram(*a, **kw)
    (ours, ours_method), (theirs, _) = call(minilora), call(torch)
    for mine in (ours, ours_method):
        _same(mine.hist, theirs.hist, rtol=1e-6)
        _same(mine.bin_edges, theirs.bin_edges)
        _same(mine[0], theirs[0], rtol=1e-6)  # a tuple too


@pytest.mark.parametrize("values, bins", [
    ([2.0, 2.0, 2.0], 2),       # one value: widened by 0.5 each way (histc widens by 1)
    ([], 2),                    # no data: the range [0, 1]
    ([3.0, -1.0, 0.5], 5),      # the data's min..max
])
def test_histogram_default_range(values, bins):
    ours = minilora.histogram(minilora.tensor(values), bins, density=True)
    theirs = torch.histogram(torch.tensor(values), bins, density=True)
    _same(ours.bin_edges, theirs.bin_edges)
    _same(ours.hist, theirs.hist, rtol=1e-6)


def test_histogram_of_many_values_counts_as_torch():
    values = np.random.default_rng(0).standard_normal(5000).astype(np.float32)
    for bins in (1, 13, 100):
        ours = minilora.histogram(minilora.tensor(values), bins)
        theirs = torch.histogram(torch.tensor(values), bins)
        _same(ours.hist, theirs.hist)  # whole counts: exact
        _same(ours.bin_edges, theirs.bin_edges)


def test_histogram_of_a_tensor_requiring_grad():
    """Karpathy plots hy.detach(): the results require grad (torch's node raises in backward)."""
    for lib in (minilora, torch):
        hist, edges = lib.histogram(lib.tensor([0.1, 0.5, 0.9], requires_grad=True).tanh(), 4)
        assert hist.requires_grad and edges.requires_grad
        with pytest.raises(RuntimeError, match="derivative for aten::histogram is not implemented"):
            hist.sum().backward()
        with lib.no_grad():
            assert not lib.histogram(lib.tensor([0.1], requires_grad=True), 2).hist.requires_grad


@pytest.mark.parametrize("call, error", [
    (lambda lib: lib.histogram(lib.arange(3), 2), NotImplementedError),
    (lambda lib: lib.histogram(lib.ones(3, dtype=lib.float16), 2), NotImplementedError),
    (lambda lib: lib.histogram(lib.ones(3), 0), RuntimeError),
    (lambda lib: lib.histogram(lib.ones(3), lib.tensor([1.0])), RuntimeError),
    (lambda lib: lib.histogram(lib.ones(3), 2, range=(1.0, 0.0)), RuntimeError),
    (lambda lib: lib.histogram(lib.ones(3), 2, range=(0.0, math.inf)), RuntimeError),
    (lambda lib: lib.histogram(lib.tensor([1.0, math.nan]), 2), RuntimeError),
    (lambda lib: lib.histogram(lib.ones(3), lib.tensor([0.0, 1.0], dtype=lib.float64)), RuntimeError),
    (lambda lib: lib.histogram(lib.ones(3), 2, weight=lib.ones(2)), RuntimeError),
    (lambda lib: lib.histogram(lib.ones(3), 2, weight=lib.ones(3, dtype=lib.float64)), RuntimeError),
])
def test_histogram_refusals_as_torch(call, error):
    with pytest.raises(error) as theirs:
        call(torch)
    with pytest.raises(error) as ours:
        call(minilora)
    assert str(ours.value).split(":")[0] == str(theirs.value).split(":")[0]
    assert str(ours.value) == str(theirs.value)


# ---- '%.4f' % loss: torch's warning, once per process ------------------------------------------------
def test_float_of_a_tensor_requiring_grad_warns_once_as_torch(monkeypatch):
    """Raschka's and Karpathy's loops print ``'%.4f' % loss`` (float(loss)): torch warns, once."""
    import warnings
    import sys
    monkeypatch.setattr(sys.modules["minilora.tensor"], "_warned_scalar_of_grad_tensor", False)
    loss = (minilora.ones(3, requires_grad=True) * 2).sum()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert f"{loss:.1f}" == "6.0" and loss.item() == 6.0 and int(loss) == 6  # none of these warn
        assert not caught
        assert "%.2f" % loss == "6.00"
        assert len(caught) == 1 and caught[0].category is UserWarning
        assert str(caught[0].message).startswith(
            "Converting a tensor with requires_grad=True to a scalar may lead to unexpected behavior.\n"
            "Consider using tensor.detach() first.")
        assert caught[0].filename == __file__  # the user's line
        float(loss), float(loss.detach()), float(minilora.ones(()))
        assert len(caught) == 1  # once per process, as torch's TORCH_WARN_ONCE
