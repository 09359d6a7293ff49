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
    x = ml.tensor([[1.0, 2.0], [3.0, 5.0]], requires_grad=True)  # create_graph=True through an op without a
    with pytest.raises(NotImplementedError, match="create_graph=True: BFloat16Huber's backward is not "
                                                  "differentiable"):  # recorded backward (angle's, then logaddexp2's
        huber = ml.nn.functional.huber_loss(x.bfloat16(), (x * 2).bfloat16())  # until round 16)
        ml.autograd.grad(huber.float(), x, create_graph=True)


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


def make_functions(lib):
    class MyReLU(lib.autograd.Function):  # the tutorial's
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x.clamp(min=0)

        @staticmethod
        def backward(ctx, grad_output):
            x, = ctx.saved_tensors
            return grad_output * (x > 0)

    class SinCos(lib.autograd.Function):  # two outputs
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x.sin(), x.cos()

        @staticmethod
        def backward(ctx, gs, gc):
            x, = ctx.saved_tensors
            return gs * x.cos() - gc * x.sin()

    class Scale(lib.autograd.Function):  # a non-Tensor argument gets None
        @staticmethod
        def forward(ctx, x, factor):
            ctx.factor = factor
            return x * factor

        @staticmethod
        def backward(ctx, g):
            return g * ctx.factor, None

    class TooMany(lib.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x * 2

        @staticmethod
        def backward(ctx, g):
            return g * 2, g

    return MyReLU, SinCos, Scale, TooMany


def test_user_functions_match_torch():
    grads = []
    for lib, x in zip((ml, torch), pair()):
        relu, sincos, scale, _ = make_functions(lib)
        s, c = sincos.apply(x * 1.5)
        loss = (relu.apply(x - 0.5) ** 2).sum() + (s * c * 3).sum() + c.sum() + scale.apply(x, 2.5).sum()
        loss.backward()
        grads.append(x.grad)
    close(*grads)


def test_user_function_errors_as_torch():
    for lib in (ml, torch):
        relu, _, _, too_many = make_functions(lib)
        x = lib.tensor([1.0, -2.0], requires_grad=True)
        with pytest.raises(RuntimeError, match="returned an incorrect number of gradients"):
            too_many.apply(x).sum().backward()
        y = x * 1
        out = relu.apply(y)
        with lib.no_grad():
            y.add_(1)
        with pytest.raises(RuntimeError, match="modified by an inplace operation"):
            out.sum().backward()


def test_gradcheck_passes_a_right_function_and_catches_a_wrong_one():
    for lib in (ml, torch):
        relu, sincos, scale, _ = make_functions(lib)

        class Wrong(lib.autograd.Function):
            @staticmethod
            def forward(ctx, x):
                return x * x

            @staticmethod
            def backward(ctx, g):
                return g * 3

        x = lib.tensor([[0.3, -1.2, 2.0]], dtype=lib.float64, requires_grad=True)
        assert lib.autograd.gradcheck(relu.apply, (x,), eps=1e-6, atol=1e-4)
        assert lib.autograd.gradcheck(sincos.apply, (x,))
        assert lib.autograd.gradcheck(lambda t: scale.apply(t, 2.5), x)
        assert lib.autograd.gradcheck(Wrong.apply, (x,), raise_exception=False) is False
        with pytest.raises(RuntimeError, match="Jacobian mismatch"):
            lib.autograd.gradcheck(Wrong.apply, (x,))
        assert x.grad is None


def test_setup_context_form_needs_input_grad_and_grad_through_a_function():
    results = []
    for lib, x in zip((ml, torch), pair()):
        class Cube(lib.autograd.Function):
            @staticmethod
            def forward(x, w):
                return x ** 3 * w

            @staticmethod
            def setup_context(ctx, inputs, output):
                ctx.save_for_backward(*inputs)
                ctx.seen = ctx.needs_input_grad

            @staticmethod
            def backward(ctx, g):
                x, w = ctx.saved_tensors
                return g * 3 * x ** 2 * w, (g * x ** 3).sum() if ctx.needs_input_grad[1] else None

        w = lib.tensor(1.5, dtype=lib.float64)
        y = Cube.apply(x * 1, w)
        (gx,) = lib.autograd.grad(y.sum(), x)
        with lib.no_grad():
            assert not Cube.apply(x, w).requires_grad
        results.append(gx)
    close(*results)


def test_gradient_for_a_non_tensor_argument_is_refused_as_torch():
    for lib in (ml, torch):
        class F(lib.autograd.Function):
            @staticmethod
            def forward(ctx, x, k):
                return x * k

            @staticmethod
            def backward(ctx, g):
                return g * 2, g

        x = lib.tensor([1.0, 2.0], requires_grad=True)
        with pytest.raises(RuntimeError, match="different than None at position 2"):
            F.apply(x, 2.0).sum().backward()
