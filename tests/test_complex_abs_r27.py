"""A complex tensor's magnitude and sign as torch computes them (round 27).

torch's CPU ``abs`` of a complex64 tensor is C's hypot of its parts; NumPy's complex abs is another formula, an
ulp off in ~13% of elements, and ``sgn`` (``z / |z|``, also abs's gradient) divided as complex numbers, an ulp off
in ~40%. Now: hypot, and each part over the magnitude, as torch. complex128's abs is MKL's in torch (not
hypot in ~0.05% of elements): checked within an ulp.
"""
import numpy as np
import pytest

import minilora

torch = pytest.importorskip("torch")


def _parts(dtype, n=20000, seed=0):
    rng = np.random.default_rng(seed)
    a, b = ((rng.standard_normal(n) * np.exp(rng.uniform(-30, 30, n))).astype(dtype) for _ in range(2))
    special = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1.0], dtype)
    x, y = np.meshgrid(special, special)
    return np.concatenate([x.ravel(), a]), np.concatenate([y.ravel(), b])


def _complex(lib, a, b, grad=False):
    z = lib.complex(lib.tensor(a) if lib is minilora else torch.from_numpy(a),
                    lib.tensor(b) if lib is minilora else torch.from_numpy(b))
    return z.requires_grad_() if grad else z


def _same(x, y):
    x, y = np.asarray(x), np.asarray(y)
    return np.array_equal(x, y, equal_nan=True)


def test_complex64_abs_sgn_and_gradient_are_torchs():
    a, b = _parts(np.float32)
    ours, theirs = _complex(minilora, a, b, grad=True), _complex(torch, a, b, grad=True)
    assert _same(ours.abs().detach().numpy(), theirs.abs().detach().numpy())
    assert _same(minilora.view_as_real(ours.sgn()).detach().numpy(), torch.view_as_real(theirs.sgn()).detach().numpy())
    keep = np.isfinite(a) & np.isfinite(b)
    ours, theirs = _complex(minilora, a[keep], b[keep], grad=True), _complex(torch, a[keep], b[keep], grad=True)
    ours.abs().sum().backward()
    theirs.abs().sum().backward()
    assert _same(minilora.view_as_real(ours.grad).numpy(), torch.view_as_real(theirs.grad).numpy())


@pytest.mark.parametrize("n", [5, 17, 100, 40001])
def test_sgn_in_the_loops_tail_and_of_strided_inputs(n):
    """torch's scalar lambda (the last elements, a strided input) multiplies by 1 / |z| where its vector code divides."""
    a, b = (part[-n:].copy() for part in _parts(np.float32, seed=n))
    ours, theirs = _complex(minilora, a, b), _complex(torch, a, b)
    for pick in (lambda z: z, lambda z: z[::2], lambda z: z[1::3]):
        assert _same(minilora.view_as_real(pick(ours).sgn()).numpy(), torch.view_as_real(pick(theirs).sgn()).numpy())


def test_complex128_abs_within_an_ulp_of_torchs():
    a, b = _parts(np.float64, seed=1)
    ours = _complex(minilora, a, b).abs().numpy()
    theirs = _complex(torch, a, b).abs().numpy()
    finite = np.isfinite(theirs)
    assert _same(ours[~finite], theirs[~finite])
    ulps = np.abs(ours[finite].view(np.int64) - theirs[finite].view(np.int64))
    assert ulps.max() <= 1 and np.mean(ulps != 0) < 0.002
