"""A float32 input reduced into a wider out (round 32: silent differences of ~1e-7, left by the out= sweep).

- ``torch.logsumexp(x, dim, out=out)``: torch's kernel computes the shifted exponentials in the input's dtype and
  their sum, log and shift in the out's -- neither float32's answer widened (minilora's) nor float64's.
- ``torch.std(x, out=out)`` / ``var``: in the out's dtype, but where the result is one element, in the input's
  (ATen's CPU path for a whole tensor) and widened -- minilora cast the input in both cases."""
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


STD_CASES = [((5, 7), None), ((5, 7), 1), ((5, 7), (0, 1)), ((1, 7), 1), ((3, 1, 4), (0, 2)), ((100,), 0), ((), None)]


@pytest.mark.parametrize("shape,dim", STD_CASES)
@pytest.mark.parametrize("name", ["std", "var"])
def test_std_var_into_a_float64_out_are_torchs(shape, dim, name):
    a = (np.random.default_rng(len(shape)).standard_normal(shape) * 3 + 1).astype(np.float32)
    dims = () if dim is None else (dim,)
    theirs, ours = torch.empty(0, dtype=torch.float64), ml.empty(0, dtype=ml.float64)
    getattr(torch, name)(torch.tensor(a), *dims, out=theirs)
    getattr(ml, name)(ml.tensor(a), *dims, out=ours)
    np.testing.assert_array_equal(ours.numpy(), theirs.numpy())


def test_a_complex_logsumexp_into_a_real_out_is_refused_not_taken_from_its_real_parts():
    """(torch writes a number there that is neither the result's real part nor its modulus; the first version of
    the wider-out path cast the complex input to float32, dropping the imaginary parts, silently)"""
    z = ml.tensor((np.arange(6).reshape(2, 3) + 1j).astype(np.complex64))
    with pytest.raises(RuntimeError, match="ComplexFloat can't be cast to the desired output type Double"):
        ml.logsumexp(z, 1, out=ml.empty(0, dtype=ml.float64))
