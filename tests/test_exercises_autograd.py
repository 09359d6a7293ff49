"""Exercises 1.x (notebook 01_autograd): the backward passes of the core ops.

Each test is small and checks one exercise region against central differences in float64
(``grad_check``) or an independent reference. Run one exercise:  python -m pytest -m ex1_2 tests
"""
import numpy as np
import pytest

import minilora as ml
from minilora import ops
from minilora.testing import assert_close, grad_check


def _t(rng, *shape, requires_grad=True, low=None):
    """A float64 tensor of standard normal values (or uniform in [low, low + 1])."""
    data = rng.standard_normal(shape) if low is None else low + rng.random(shape)
    return ml.tensor(data, dtype=ml.float64, requires_grad=requires_grad)


def _unbroadcast_reference(grad, shape):
    """Sum ``grad`` into an array of ``shape`` by following where each element was broadcast to."""
    size = int(np.prod(shape))
    origin = np.broadcast_to(np.arange(size).reshape(shape), grad.shape)
    return np.bincount(origin.ravel(), weights=grad.ravel(), minlength=size).reshape(shape)


@pytest.mark.ex1_1
@pytest.mark.parametrize("grad_shape, shape", [((2, 3), (2, 3)), ((2, 3, 4), (3, 1)),
                                               ((2, 3, 4), (1, 1, 4)), ((5, 1, 3), (5, 1, 1)),
                                               ((2, 3), ())])
def test_unbroadcast(rng, grad_shape, shape):
    grad = rng.standard_normal(grad_shape)
    out = ops.unbroadcast(grad, shape)
    assert np.shape(out) == shape
    assert_close(out, _unbroadcast_reference(grad, shape), rtol=1e-12, atol=1e-12, name="unbroadcast")


@pytest.mark.ex1_1
def test_unbroadcast_through_add(rng):
    a, b = _t(rng, 2, 3, 4), _t(rng, 3, 1)
    grad_check(lambda a, b: a + b, a, b)


@pytest.mark.ex1_2
@pytest.mark.parametrize("shape_a, shape_b", [((2, 3), (2, 3)), ((2, 3), (3,)), ((4, 1), (1, 3))])
def test_mul_backward(rng, shape_a, shape_b):
    grad_check(lambda a, b: a * b, _t(rng, *shape_a), _t(rng, *shape_b))


@pytest.mark.ex1_2
def test_mul_backward_skips_frozen_input(rng):
    a, b = _t(rng, 2, 3), _t(rng, 3, requires_grad=False)
    (a * b).sum().backward()
    assert b.grad is None
    assert_close(a.grad, np.broadcast_to(b.numpy(), (2, 3)), name="a.grad")


@pytest.mark.ex1_3
@pytest.mark.parametrize("shape_a, shape_b", [((2, 3), (2, 3)), ((2, 3), (3,)), ((3,), (2, 1))])
def test_div_backward(rng, shape_a, shape_b):
    # b in [0.5, 1.5]: away from zero, where 1/b is smooth
    grad_check(lambda a, b: a / b, _t(rng, *shape_a), _t(rng, *shape_b, low=0.5))


@pytest.mark.ex1_4
@pytest.mark.parametrize("shape_a, shape_b", [((3, 4), (4, 2)), ((2, 3, 4), (4, 5)), ((2, 1, 3, 4), (3, 4, 2)),
                                              ((4,), (4, 3)), ((2, 3, 4), (4,))])
def test_matmul_backward(rng, shape_a, shape_b):
    grad_check(ops.matmul, _t(rng, *shape_a), _t(rng, *shape_b))


@pytest.mark.ex1_5
def test_linear_backward(rng):
    grad_check(ops.linear, _t(rng, 2, 3, 4), _t(rng, 5, 4), _t(rng, 5))


@pytest.mark.ex1_5
def test_linear_backward_frozen_weight(rng):
    """A frozen weight (LoRA's W0) gets no gradient; the input still does."""
    x, w = _t(rng, 3, 4), _t(rng, 5, 4, requires_grad=False)
    grad_check(ops.linear, x, w)
    assert w.grad is None


@pytest.mark.ex1_5
def test_linear_backward_rows_alone_is_the_whole_backward(rng):
    """The region's function on whole arrays, no threads: gx filled, (gw, gb) returned."""
    from minilora.ops.matmul import _linear_backward_rows
    g, x, w = rng.standard_normal((6, 3)), rng.standard_normal((6, 4)), rng.standard_normal((3, 4))
    gx = np.full((6, 4), np.nan)
    gw, gb = _linear_backward_rows(g, x, gx, w, True, True)
    assert_close(gx, g @ w, rtol=1e-13, atol=1e-13, name="gx")
    assert_close(gw, g.T @ x, rtol=1e-13, atol=1e-13, name="gw")
    assert_close(gb, g.sum(axis=0), rtol=1e-13, atol=1e-13, name="gb")
    assert _linear_backward_rows(g, None, None, w, False, False) == (None, None)
    gw, gb = _linear_backward_rows(g, x, None, w, False, True)  # x at hand, but the weight is frozen
    assert gw is None, "need_w is False (a frozen weight): return None for its gradient, skip the GEMM"
    assert_close(gb, g.sum(axis=0), rtol=1e-13, atol=1e-13, name="gb")


@pytest.mark.ex1_6
@pytest.mark.parametrize("axis", [-1, 0])
def test_softmax_backward(rng, axis):
    grad_check(lambda x: ops.softmax(x, axis=axis), _t(rng, 3, 4))


@pytest.mark.ex1_7
@pytest.mark.parametrize("axis", [-1, 0])
def test_log_softmax_backward(rng, axis):
    grad_check(lambda x: ops.log_softmax(x, axis=axis), _t(rng, 3, 4))
