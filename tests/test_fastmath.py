"""minilora.fastmath computes the formulas the ops state: checked here against the plain formulas."""
import math

import numpy as np
import pytest

from minilora import fastmath, parallel


def _exact_erf(x):
    return np.vectorize(math.erf)(x.astype(np.float64))


def test_erf_is_exact_in_float64_and_within_a_and_s_error_in_float32(rng):
    x = np.concatenate([rng.standard_normal(10_000) * 3, [0.0, -0.0, 1e-30, 7.0, -7.0, np.inf, -np.inf]])
    np.testing.assert_array_equal(fastmath.erf(x), _exact_erf(x))
    y32 = fastmath.erf(x.astype(np.float32))
    assert y32.dtype == np.float32
    assert np.max(np.abs(y32 - _exact_erf(x.astype(np.float32)))) < 1e-6  # A&S: 1.5e-7, plus rounding of float32 steps


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gelu_and_derivative_fill_x_phi_and_its_derivative(rng, dtype, monkeypatch):
    import sys
    monkeypatch.setattr(sys.modules["minilora.device"], "CHUNK", 1000)  # several cache slices, the last one ragged
    x = (rng.standard_normal(4321) * 4).astype(dtype)
    out, deriv = np.empty_like(x), np.empty_like(x)
    fastmath.gelu_and_derivative(x, out, deriv)
    x64 = x.astype(np.float64)
    cdf = 0.5 * (1 + _exact_erf(x64 / math.sqrt(2)))
    pdf = np.exp(-0.5 * x64 * x64) / math.sqrt(2 * math.pi)
    tol = 1e-14 if dtype == np.float64 else 2e-6
    np.testing.assert_allclose(out, x64 * cdf, rtol=tol, atol=tol)
    np.testing.assert_allclose(deriv, cdf + x64 * pdf, rtol=tol, atol=tol)
    out_alone = np.empty_like(x)
    fastmath.gelu_and_derivative(x, out_alone)  # no derivative asked: the same output
    np.testing.assert_array_equal(out_alone, out)


def test_silu_and_swiglu_chains_equal_their_formulas(rng):
    a, up, g = (rng.standard_normal(1000) * 5 for _ in range(3))
    s, out = np.empty_like(a), np.empty_like(a)
    fastmath.sigmoid_and_silu(a, s, out)
    np.testing.assert_allclose(s, 1 / (1 + np.exp(-a)), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(out, a / (1 + np.exp(-a)), rtol=1e-12, atol=1e-15)
    gx = np.empty_like(a)
    fastmath.silu_backward(g, a, s, gx)
    np.testing.assert_allclose(gx, g * s * (1 + a * (1 - s)), rtol=1e-12, atol=1e-15)
    fastmath.swiglu(a, up, s, out)
    np.testing.assert_allclose(out, a * s * up, rtol=1e-12, atol=1e-15)
    dgate, dup = np.empty_like(a), np.empty_like(a)
    fastmath.swiglu_backward(g, a, up, s, dgate, dup)
    np.testing.assert_allclose(dup, g * a * s, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(dgate, g * up * s * (1 + a * (1 - s)), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("min_items", [1, 10**9])  # the einsum path and the small-array path
def test_row_mean_and_column_sum_equal_their_formulas(rng, monkeypatch, min_items):
    monkeypatch.setattr(parallel, "MIN_ITEMS", min_items)
    a, b = rng.standard_normal((13, 6)), rng.standard_normal((13, 6))
    np.testing.assert_allclose(fastmath.row_mean(a), a.mean(axis=1), rtol=1e-13)
    np.testing.assert_allclose(fastmath.row_mean(a, b), (a * b).mean(axis=1), rtol=1e-13)
    np.testing.assert_allclose(fastmath.column_sum(a), a.sum(axis=0), rtol=1e-13)
    np.testing.assert_allclose(fastmath.column_sum(a, b), (a * b).sum(axis=0), rtol=1e-13)
