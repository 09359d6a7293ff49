"""float64 elementwise kernels as torch computes them (round 27): SLEEF's double functions in the vectorized loop,
C's in the scalar lambda (the loop's tail, strided inputs).

tests/float64_bits_sweep.py swept every float64 unary/binary op and activation against torch; these are the ones
made equal: torch.log1p and torch.expm1 (SLEEF's log1pd8, expm1d8 on every element: ported, float32_math's
sleef_log1p64, sleef_expm1_64), log10's gradient (derivatives.yaml's ln 10), torch.exp2 (sleef_exp2_64, C's exp2
in the tail), asinh/acosh (C's on every element), sinh/cosh (sleef_hyperbolic64), mish and gelu's tanh form
(SLEEF's double tanh), atanh's and gelu's scalar lambda (C's), logsigmoid, softplus and logaddexp (SLEEF's double
exp and log1p), atan2, hypot and pow (sleef_atan2_64, sleef_hypot64, sleef_pow64; C's in the tail), ELU's values
and gradients (the loop's expm1 and exp).
"""
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
sys.path.insert(0, __file__.rsplit("/", 1)[0])
from float64_bits_sweep import BINARY, LAYOUTS, UNARY, draw, evaluate  # noqa: E402

import minilora  # noqa: E402

N = 4005  # (not a multiple of 16: every row has a scalar tail)


def _assert_same_bits(name, scales, layouts, check_value=True):
    fn = (UNARY.get(name) or BINARY[name])[0]
    g = np.random.default_rng(1).standard_normal(N)
    for layout in layouts:
        arrays = [draw(N, s, seed=7 + k) for k, s in enumerate(scales)]
        ours, theirs = evaluate(minilora, fn, arrays, layout, g), evaluate(torch, fn, arrays, layout, g)
        for k, (o, t) in enumerate(zip(ours, theirs)):
            if k or check_value:
                np.testing.assert_array_equal(o, t, err_msg=f"{name} {layout} {'value' if k == 0 else 'gradient'}")


@pytest.mark.parametrize("name", ["log1p", "expm1", "log10", "exp2", "asinh", "acosh", "sinh", "cosh", "logsigmoid",
                                  "softplus", "softplus_beta", "mish", "gelu_tanh", "pow_number"])
def test_values_and_gradients_are_torchs_in_every_layout(name):
    _assert_same_bits(name, [UNARY[name][1]], LAYOUTS)


@pytest.mark.parametrize("name", ["atanh", "gelu"])
def test_the_scalar_lambda_is_c_function(name):  # (a strided input: every element C's; the contiguous vectors,
    _assert_same_bits(name, [UNARY[name][1]], ["strided"])  # SLEEF's atanh and erf: test_float64_sleef_r28)


@pytest.mark.parametrize("name", ["elu", "selu", "celu"])
def test_elu_values_and_gradients_take_the_loops_expm1_and_exp(name):
    _assert_same_bits(name, [UNARY[name][1]], ["contiguous"])


@pytest.mark.parametrize("name", ["logaddexp", "atan2", "hypot", "pow"])
def test_binary_vectors_are_sleef(name):
    _assert_same_bits(name, BINARY[name][1:], LAYOUTS)


def test_sleef_log1p64_special_values_and_extremes():
    x = np.array([0.0, -0.0, -1.0, -1.5, np.inf, -np.inf, np.nan, 5e-324, 1e-300, 1e306, 1e308, -0.9999999999])
    ours = minilora.log1p(minilora.tensor(x)).numpy()
    np.testing.assert_array_equal(ours, torch.log1p(torch.from_numpy(x)).numpy())
    assert np.signbit(ours[1])
