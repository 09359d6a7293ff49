"""minilora.autograd side by side with torch.autograd: grad() and backward()."""
import numpy as np
import pytest
import torch

import minilora as ml

X = [[0.5, -1.0, 2.0], [1.5, 0.25, -0.75]]


def pair():
    return (ml.tensor(X, dtype=ml.float64, requires_grad=True),
            torch.tensor(X, dtype=torch.float64, requires_grad=True))


def close(a, b):
    assert a is not None and b is not None
    np.testing.assert_allclose(a.numpy(), b.detach().numpy(), rtol=1e-12, atol=1e-12)


def test_grad_of_leaf_and_non_leaf_leaves_dot_grad_alone():
    results = []
    for lib, x in zip((ml, torch), pair()):
        y = x.tanh()
        z = (y * y * x).sum()
        results.append((lib.autograd.grad(z, [x, y]), x.grad))
    (gm, grad_m), (gt, grad_t) = results
    assert isinstance(gm, tuple) and len(gm) == 2
    close(gm[0], gt[0]), close(gm[1], gt[1])
    assert grad_m is None and grad_t is None


def test_grad_outputs_keyword_and_positional():
    g = [[1.0, 2.0, 3.0], [-1.0, 0.5, 4.0]]
    xm, xt = pair()
    (am,) = ml.autograd.grad(xm.exp() * xm, xm, ml.tensor(g, dtype=ml.float64))
    (at,) = torch.autograd.grad(xt.exp() * xt, xt, torch.tensor(g, dtype=torch.float64))
    close(am, at)
    (bm,) = ml.autograd.grad([xm.sin()], [xm], grad_outputs=[ml.tensor(g, dtype=ml.float64)])
    (bt,) = torch.autograd.grad([xt.sin()], [xt], grad_outputs=[torch.tensor(g, dtype=torch.float64)])
    close(bm, bt)


def test_several_outputs_sum_their_gradients():
    xm, xt = pair()
    (am,) = ml.autograd.grad([(xm * xm).sum(), xm.sum() * 3], xm)
    (at,) = torch.autograd.grad([(xt * xt).sum(), xt.sum() * 3], xt)
    close(am, at)


def test_unused_input_error_and_allow_unused():
    for lib in (ml, torch):
        x = lib.tensor([1.0, 2.0], requires_grad=True)
        w = lib.tensor([3.0], requires_grad=True)
        with pytest.raises(RuntimeError, match="appears to not have been used in the graph"):
            lib.autograd.grad((x * 2).sum(), [x, w])
        gx, gw = lib.autograd.grad((x * 2).sum(), [x, w], allow_unused=True)
        assert gw is None and gx.tolist() == [2.0, 2.0]
        _, gw = lib.autograd.grad((x * 2).sum(), [x, w], materialize_grads=True)
        assert gw.tolist() == [0.0]


def test_errors_as_torch():
    for lib in (ml, torch):
        x = lib.tensor([1.0, 2.0], requires_grad=True)
        with pytest.raises(RuntimeError, match="grad can be implicitly created only for scalar outputs"):
            lib.autograd.grad(x * 2, x)
        with pytest.raises(RuntimeError, match="does not require grad"):
            lib.autograd.grad((x * 2).sum(), lib.tensor([1.0]))
        y = (x * x).sum()
        lib.autograd.grad(y, x)
        with pytest.raises(RuntimeError, match="backward through the graph a second time"):
            lib.autograd.grad(y, x)
    x = ml.tensor([1.0, 2.0], requires_grad=True)
    with pytest.raises(NotImplementedError, match="create_graph"):
        ml.autograd.grad((x * x).sum(), x, create_graph=True)


def test_retain_graph_allows_a_second_call():
    xm, xt = pair()
    ym, yt = (xm ** 3).sum(), (xt ** 3).sum()
    first = ml.autograd.grad(ym, xm, retain_graph=True)[0]
    close(ml.autograd.grad(ym, xm)[0], torch.autograd.grad(yt, xt)[0])
    close(first, xt.detach() ** 2 * 3)


def test_backward_function_accumulates_into_grad():
    xm, xt = pair()
    ml.autograd.backward([(xm * xm).sum(), xm.sum()])
    torch.autograd.backward([(xt * xt).sum(), xt.sum()])
    close(xm.grad, xt.grad)
