"""Round 33: out= where torch takes it and minilora refused it (histc, histogram, linalg.lstsq), the named tuple
torch returns for out= (``torch.return_types.max_out``), and out tensors that share memory with each other (torch
writes one result over the other without a word: refused here)."""
import pickle
import warnings

import numpy as np
import pytest
import torch

import minilora as ml

VALUES = np.array([0.3, -1.2, 0.8, 2.5, -0.4, 0.05, 1.7, -2.2, 0.9, 0.0])


def _both(values=VALUES):
    return torch.tensor(values), ml.tensor(values)


def _same(mine, theirs):
    assert mine.numpy().dtype == theirs.numpy().dtype
    np.testing.assert_array_equal(mine.numpy(), theirs.numpy())


@pytest.mark.parametrize("call", [
    lambda lib, x, out: lib.histc(x, 5, out=out),
    lambda lib, x, out: lib.histc(x, bins=4, min=-1, max=1, out=out),
    lambda lib, x, out: lib.histc(x, 6, -2.0, 2.0, out=out),
], ids=["bins", "keywords", "positional range"])
def test_histc_out_as_torch(call):
    t, m = _both()
    theirs, mine = torch.empty(0, dtype=torch.float64), ml.empty(0, dtype=ml.float64)
    assert call(ml, m, mine) is mine
    _same(mine, call(torch, t, theirs))


def test_histc_out_dtype_refused_in_torchs_words_and_takes_an_out_that_requires_grad():
    t, m = _both()
    for out_dtype in ("float32", "int64"):
        with pytest.raises(RuntimeError) as theirs:
            torch.histc(t, 5, out=torch.empty(5, dtype=getattr(torch, out_dtype)))
        with pytest.raises(RuntimeError) as mine:
            ml.histc(m, 5, out=ml.empty(5, dtype=getattr(ml, out_dtype)))
        assert str(mine.value) == str(theirs.value)
    # histc has no derivative: torch writes into an out that requires grad (and from an input that does)
    theirs = torch.histc(t.clone().requires_grad_(), 5, out=torch.empty(5, dtype=torch.float64, requires_grad=True))
    mine = ml.histc(m.clone().requires_grad_(), 5, out=ml.empty(5, dtype=ml.float64, requires_grad=True))
    _same(mine.detach(), theirs.detach())
    assert mine.requires_grad == theirs.requires_grad


@pytest.mark.parametrize("call", [
    lambda lib, x, out: lib.histogram(x, 4, out=out),
    lambda lib, x, out: lib.histogram(x, bins=3, range=(-1.0, 1.0), density=True, out=out),
    lambda lib, x, out: lib.histogram(x, lib.tensor([-2.0, 0.0, 0.5, 3.0], dtype=lib.float64),
                                      weight=x.abs(), out=list(out)),
], ids=["bins", "range density", "edges weight"])
def test_histogram_out_as_torch(call):
    t, m = _both()
    theirs = tuple(torch.empty(0, dtype=torch.float64) for _ in range(2))
    mine = tuple(ml.empty(0, dtype=ml.float64) for _ in range(2))
    result, expected = call(ml, m, mine), call(torch, t, theirs)
    assert type(result).__name__ == type(expected).__name__ == "histogram_out"
    assert result.hist is mine[0] and result.bin_edges is mine[1]
    _same(result.hist, expected.hist)
    _same(result.bin_edges, expected.bin_edges)


def test_histogram_out_refusals_as_torch():
    t, m = _both()
    cases = [  # (hist dtype, bin_edges dtype, hist requires grad)
        ("float32", "float64", False), ("float64", "float32", False), ("float64", "float64", True)]
    for hist_dtype, edges_dtype, grad in cases:
        outs = {lib: (lib.empty(4, dtype=getattr(lib, hist_dtype), requires_grad=grad),
                      lib.empty(5, dtype=getattr(lib, edges_dtype))) for lib in (torch, ml)}
        with pytest.raises(RuntimeError) as theirs:
            torch.histogram(t, 4, out=outs[torch])
        with pytest.raises(RuntimeError) as mine:
            ml.histogram(m, 4, out=outs[ml])
        assert str(mine.value) == str(theirs.value)
    # an input that requires grad is taken (histogram's derivative is torch's NotImplemented node)
    hist = ml.histogram(m.clone().requires_grad_(), 4, out=(ml.empty(0, dtype=ml.float64),
                                                            ml.empty(0, dtype=ml.float64))).hist
    _same(hist, torch.histogram(t, 4).hist)


@pytest.mark.parametrize("driver", [None, "gelsd"])
def test_lstsq_out_as_torch(driver):
    a = np.random.default_rng(0).standard_normal((5, 3))
    b = np.random.default_rng(1).standard_normal((5, 2))
    results = {}
    for lib in (torch, ml):
        outs = (lib.empty(0, dtype=lib.float64), lib.empty(0, dtype=lib.float64), lib.empty(0, dtype=lib.int64),
                lib.empty(0, dtype=lib.float64))
        result = lib.linalg.lstsq(lib.tensor(a), lib.tensor(b), driver=driver, out=outs)
        assert all(r is o for r, o in zip(result, outs))
        results[lib] = result
    assert type(results[ml]).__name__ == "linalg_lstsq_out"
    for mine, theirs in zip(results[ml], results[torch]):
        assert mine.shape == theirs.shape
        np.testing.assert_allclose(mine.numpy(), theirs.numpy(), rtol=1e-12, atol=1e-14)
    with pytest.raises(RuntimeError, match="functions with out=... arguments don't support automatic"):
        ml.linalg.lstsq(ml.tensor(a, requires_grad=True), ml.tensor(b), out=tuple(ml.empty(0) for _ in range(4)))


@pytest.mark.parametrize("call", [
    lambda lib, x, out: lib.max(x, 1, out=out),
    lambda lib, x, out: lib.sort(x, 0, out=out),
    lambda lib, x, out: lib.topk(x, 2, out=out),
], ids=["max", "sort", "topk"])
def test_an_out_call_returns_torchs_out_type(call):
    x = VALUES.reshape(2, 5)
    outs = {lib: (lib.empty(0, dtype=lib.float64), lib.empty(0, dtype=lib.int64)) for lib in (torch, ml)}
    mine, theirs = call(ml, ml.tensor(x), outs[ml]), call(torch, torch.tensor(x), outs[torch])
    assert type(mine).__name__ == type(theirs).__name__
    assert type(mine).__name__.endswith("_out") and tuple(mine._fields) == tuple(type(theirs).__match_args__)
    assert repr(mine).startswith(f"minilora.return_types.{type(theirs).__name__}(")
    assert type(pickle.loads(pickle.dumps(mine))) is type(mine)


@pytest.mark.parametrize("call", [
    lambda x, z: ml.aminmax(x, dim=1, out=(z, z)),
    lambda x, z: ml.histogram(x.reshape(-1), 4, out=(z, z)),
    lambda x, z: ml.linalg.qr(x, out=(z, z)),
    lambda x, z: ml.linalg.slogdet(x, out=(z, z)),
    lambda x, z: ml.aminmax(x, dim=1, out=(z[:4], z[2:6])),
], ids=["aminmax", "histogram", "qr", "slogdet", "aminmax overlapping"])
def test_out_tensors_sharing_memory_are_refused(call):
    """torch writes one result over the other (aminmax(x, out=(z, z)): both its max); a refusal beats that."""
    x = ml.tensor(np.random.default_rng(2).standard_normal((4, 4)))
    with pytest.raises(RuntimeError, match="two of the out tensors refer to a single memory location"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            call(x, ml.empty(8, dtype=ml.float64))
