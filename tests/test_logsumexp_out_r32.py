"""``torch.logsumexp(x, dim, out=out)`` into a wider out (a float32 input, a float64 out): torch's kernel computes
the shifted exponentials in the input's dtype and their sum, log and shift in the out's -- neither float32's answer
widened nor float64's. minilora wrote float32's answer widened: a silent difference of ~1e-7 (round 32)."""
import numpy as np
import pytest

import minilora as ml

torch = pytest.importorskip("torch")

CASES = [((7, 5), 1, False), ((3, 4, 6), 0, True), ((9,), 0, False), ((2, 1, 33), 2, False), ((4, 6), 0, True)]


def _inputs(shape, seed):
    a = (np.random.default_rng(seed).standard_normal(shape) * 8).astype(np.float32)
    a.reshape(-1)[0] = np.inf  # (an inf in a slice: torch shifts that slice by 0, in both steps)
    a.reshape(-1)[-1] = -np.inf
    return a


@pytest.mark.parametrize("shape,dim,keepdim", CASES)
@pytest.mark.parametrize("source,wider", [(np.float32, "float64"), (np.int32, "float64"), (np.float16, "float32")])
def test_logsumexp_into_a_wider_out_is_torchs(shape, dim, keepdim, source, wider):
    a = _inputs(shape, len(shape) * 10 + dim)
    a = np.nan_to_num(a, posinf=7, neginf=-7).astype(source) if np.dtype(source).kind == "i" else a.astype(source)
    theirs = torch.empty(0, dtype=getattr(torch, wider))
    torch.logsumexp(torch.tensor(a), dim, keepdim, out=theirs)
    ours = ml.empty(0, dtype=getattr(ml, wider))
    assert ml.logsumexp(ml.tensor(a), dim, keepdim, out=ours) is ours
    np.testing.assert_array_equal(ours.numpy(), theirs.numpy())


def test_logsumexp_into_an_out_of_its_own_dtype_is_unchanged():
    a = _inputs((6, 5), 3)
    theirs = torch.empty(0)
    torch.logsumexp(torch.tensor(a), 1, out=theirs)
    ours = ml.empty(0)
    ml.logsumexp(ml.tensor(a), 1, out=ours)
    np.testing.assert_array_equal(ours.numpy(), theirs.numpy())
