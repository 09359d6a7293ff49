"""Extreme values, third pass (round 29; tests/extremes_sweep.py found them): where torch's backward kernel has a
vectorized lambda and a scalar one that disagree at an edge, minilora gives each element the one torch runs there
(the scalar one on a row's tail, ``float32_math.scalar_positions``).
"""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
import minilora as ml  # noqa: E402
from minilora import float32_math  # noqa: E402

EDGES = np.array([np.nan, 0.3, -0.0, 1.0, np.inf, 0.0, -np.inf, 0.05, 0.99, -0.2, 0.1, 0.9])


def differing(ours, theirs):
    ours, theirs = np.asarray(ours), np.asarray(theirs)
    return int((((ours != theirs) & ~(np.isnan(ours) & np.isnan(theirs))) | (np.isnan(ours) != np.isnan(theirs))).sum())


@pytest.mark.skipif(float32_math.CPU_CAPABILITY == "default", reason="torch's default build: the scalar lambda only")
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("n,eps", [(7, None), (7, 0.0), (40, None), (40, 0.0), (40, 0.1), (1000, 0.0), (1000, 0.1)])
def test_logit_gradient_at_nan_and_negative_zero_is_torchs_lane_by_lane(n, eps, dtype):
    """logit_backward's vectorized lambda: 0 at a NaN when there is an eps (its range test is false), g / (x (1 - x))
    at -0 (-inf); its scalar lambda: NaN at a NaN, g * inf at -0 (+inf)."""
    rng = np.random.default_rng(n)
    x = rng.choice(EDGES, n).astype(dtype)
    x[:2] = np.nan, -0.0  # (in the vectorized body once n > 16; n = 7: all tail)
    g = rng.standard_normal(n).astype(dtype)
    theirs, ours = torch.tensor(x, requires_grad=True), ml.tensor(x, requires_grad=True)
    torch.logit(theirs, eps=eps).backward(torch.tensor(g))
    ml.logit(ours, eps=eps).backward(ml.tensor(g))
    assert differing(ours.grad.numpy(), theirs.grad.numpy()) == 0


def test_float64_pdist_overflows_and_underflows_as_torchs_kernel():
    """torch's float64 pdist (p = 2) is sqrt of the unscaled sum of squares: inf where it overflows, 0 where it
    underflows (minilora's norm scaled: 1.7e308 and 1e-200); the gradient follows the distances."""
    x = np.array([[1.7e308], [-1e308], [3.0], [0.5], [1e-200], [0.0]])  # (one column: minilora's norm was |x_i - x_j|)
    theirs, ours = torch.tensor(x, requires_grad=True), ml.tensor(x, requires_grad=True)
    expected, got = torch.nn.functional.pdist(theirs), ml.nn.functional.pdist(ours)
    expected.sum().backward()
    got.sum().backward()
    assert differing(got.detach().numpy(), expected.detach().numpy()) == 0
    assert differing(ours.grad.numpy(), theirs.grad.numpy()) == 0


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_zero_norm_distances_are_nan_where_a_difference_is(dtype):
    """cdist's and pdist's p = 0 kernel sums min(ceil(|d|), 1): a NaN difference (NaN in a row, inf - inf) makes the
    distance NaN, where vector_norm's count of nonzeros counted it as 1; the gradient stays zeros."""
    a = np.array([[np.nan, 1.0, np.inf], [0, 0, 0], [1, 2, 3]], dtype)
    b = np.array([[np.nan, 1.0, np.inf], [1, 0, -np.inf]], dtype)
    assert differing(ml.cdist(ml.tensor(a), ml.tensor(b), p=0).numpy(),
                     torch.cdist(torch.tensor(a), torch.tensor(b), p=0).numpy()) == 0
    theirs, ours = torch.tensor(a, requires_grad=True), ml.tensor(a, requires_grad=True)
    expected, got = torch.nn.functional.pdist(theirs, p=0), ml.nn.functional.pdist(ours, p=0)
    expected.sum().backward()
    got.sum().backward()
    assert differing(got.detach().numpy(), expected.detach().numpy()) == 0
    assert differing(ours.grad.numpy(), theirs.grad.numpy()) == 0
