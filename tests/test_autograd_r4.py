"""minilora.autograd side by side with torch.autograd, round 4: backward(inputs=...) and a user
Function with several outputs (its backward runs once, with every output's gradient)."""
import numpy as np
import pytest
import torch

import minilora as ml

A, B = [1.0, 2.0, -0.5], [3.0, -4.0, 0.25]


def leaves(lib):
    dtype = lib.float64
    return (lib.tensor(A, dtype=dtype, requires_grad=True),
            lib.tensor(B, dtype=dtype, requires_grad=True))


def same(m, t):
    """minilora's and torch's .grad (or gradient) agree, None included."""
    if t is None:
        assert m is None
        return
    assert m is not None
    np.testing.assert_allclose(m.numpy(), t.detach().numpy(), rtol=1e-12, atol=1e-12)


def both(fn):
    """fn(lib) run for minilora and torch; the pairs of results."""
    return list(zip(fn(ml), fn(torch)))


def check_both(fn):
    """fn(lib) run for minilora and torch: each pair of results agrees (``same``)."""
    for m, t in both(fn):
        same(m, t)


def test_backward_inputs_accumulates_only_into_the_inputs():
    def run(lib):
        a, b = leaves(lib)
        c = a * b
        c.retain_grad()  # on the path to a: torch fills it too
        (c * c).sum().backward(inputs=[a])
        return a.grad, b.grad, c.grad
    check_both(run)


@pytest.mark.parametrize("spelling", ["tensor", "list", "tuple", "positional"])
def test_backward_inputs_spellings(spelling):
    def run(lib):
        a, b = leaves(lib)
        loss = (a * b.exp()).sum()
        if spelling == "tensor":
            loss.backward(inputs=b)
        elif spelling == "list":
            loss.backward(inputs=[a, b])
        elif spelling == "tuple":
            loss.backward(inputs=(b,))
        else:
            loss.backward(None, None, False, [a])
        return a.grad, b.grad
    check_both(run)


def test_backward_inputs_accumulates_across_calls_and_with_autograd_backward():
    def run(lib):
        a, b = leaves(lib)
        (a * b).sum().backward(inputs=[a])
        (a * a * b).sum().backward(inputs=[a])
        lib.autograd.backward([(a * b).sum()], inputs=[b])
        return a.grad, b.grad
    check_both(run)


def test_backward_inputs_non_leaf_gets_its_grad():
    def run(lib):
        a, b = leaves(lib)
        c = a * b
        (c * c * 2).sum().backward(inputs=[c])
        return c.grad, a.grad, b.grad
    check_both(run)


def test_backward_inputs_unused_input_stays_none():
    def run(lib):
        a, b = leaves(lib)
        z = lib.ones(3, dtype=lib.float64, requires_grad=True)
        (a * b).sum().backward(inputs=[z])
        return z.grad, a.grad, b.grad
    check_both(run)


def test_backward_inputs_hook_of_a_leaf_left_out_does_not_run():
    calls = {ml: 0, torch: 0}

    def run(lib):
        a, b = leaves(lib)

        def hook(g):
            calls[lib] += 1
        b.register_hook(hook)
        (a * b).sum().backward(inputs=[a])
        return a.grad, b.grad
    check_both(run)
    assert calls[ml] == calls[torch] == 0


def test_backward_inputs_errors_as_torch():
    for lib in (ml, torch):
        a, b = leaves(lib)
        with pytest.raises(RuntimeError, match="`inputs` argument to `backward\\(\\)` cannot be empty"):
            (a * b).sum().backward(inputs=[])
        with pytest.raises(RuntimeError, match="can't retain_grad on Tensor that has requires_grad=False"):
            (a * b).sum().backward(inputs=[a.detach()])


def test_backward_inputs_frees_the_graph_as_torch():
    for lib in (ml, torch):
        a, b = leaves(lib)
        y = (a * b).sum()
        y.backward(inputs=[a])
        with pytest.raises(RuntimeError, match="backward through the graph a second time"):
            y.backward(inputs=[b])


def split_function(lib, calls, materialize=True):
    """Two outputs; its backward counts its calls and is not linear in the gradients, so calling it
    once per output (and summing) would give another number."""
    class Split(lib.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.set_materialize_grads(materialize)
            ctx.save_for_backward(x)
            return x * 2, x.exp()

        @staticmethod
        def backward(ctx, g1, g2):
            calls.append((g1 is None, g2 is None))
            x, = ctx.saved_tensors
            both_given = g1 is not None and g2 is not None
            g1 = 0 if g1 is None else g1
            g2 = 0 if g2 is None else g2
            return (g1 * 2 + g2 * x.exp()) * (1 + (g1 * g2 if both_given else 0))
    return Split


def split_backward_calls(results, materialize=True):
    """``p, q = Split.apply(x)`` (split_function) in minilora and torch, then ``results(lib, x, p, q)``,
    whose values must agree; the calls of Split's backward, the same in both, are returned."""
    calls = {}

    def run(lib):
        calls[lib] = []
        x = lib.tensor(A, dtype=lib.float64, requires_grad=True)
        p, q = split_function(lib, calls[lib], materialize).apply(x)
        return results(lib, x, p, q)
    check_both(run)
    assert calls[ml] == calls[torch]
    return calls[ml]


@pytest.mark.parametrize("materialize", [True, False])
@pytest.mark.parametrize("used", ["both", "first", "second"])
def test_function_with_several_outputs_runs_backward_once(materialize, used):
    def results(lib, x, p, q):
        loss = {"both": (p * q).sum() + p.sum(), "first": (p * p).sum(), "second": q.sum() * 3}[used]
        loss.backward()
        return (x.grad,)
    assert len(split_backward_calls(results, materialize)) == 1


def test_function_with_several_outputs_under_grad_and_retain_graph():
    def results(lib, x, p, q):
        loss = (p * q).sum()
        first = lib.autograd.grad(loss, x, retain_graph=True)[0]
        second = lib.autograd.grad(loss, [x, p])
        return first, second[0], second[1]
    assert len(split_backward_calls(results)) == 2


def test_materialized_zeros_are_zeros_not_x_times_zero():
    """An output that got no gradient is handed torch's zeros (x * 0 would be -0.0 or nan)."""
    seen = {}

    def run(lib):
        class Two(lib.autograd.Function):
            @staticmethod
            def forward(ctx, x):
                return x * 1, x * -1

            @staticmethod
            def backward(ctx, g1, g2):
                seen[lib] = g2
                return g1 + g2
        x = lib.tensor([float("inf"), -1.0, 2.0], dtype=lib.float64, requires_grad=True)
        first, _ = Two.apply(x)
        first.sum().backward()
        unused = lib.tensor([float("inf"), -1.0], dtype=lib.float64, requires_grad=True)
        y = lib.tensor([1.0, 2.0], dtype=lib.float64, requires_grad=True)
        return x.grad, lib.autograd.grad((y * 2).sum(), [unused, y], materialize_grads=True)[0]
    check_both(run)
    same(seen[ml], seen[torch])
    assert not np.signbit(seen[ml].numpy()).any()


def test_saved_output_changed_in_place_is_caught_as_torch():
    for lib in (ml, torch):
        class Exp(lib.autograd.Function):
            @staticmethod
            def forward(ctx, x):
                y = x.exp()
                ctx.save_for_backward(y)
                return y

            @staticmethod
            def backward(ctx, g):
                y, = ctx.saved_tensors
                return g * y
        x = lib.tensor(A, dtype=lib.float64, requires_grad=True)
        y = Exp.apply(x)
        y.add_(1)  # the saved output: its gradient would be wrong
        with pytest.raises(RuntimeError, match="modified by an inplace operation"):
            y.sum().backward()


def test_mark_dirty_returns_the_input_itself_as_torch():
    def run(lib):
        class AddInto(lib.autograd.Function):
            @staticmethod
            def forward(ctx, x, y):
                x.add_(y)
                ctx.mark_dirty(x)
                return x, y * 2

            @staticmethod
            def backward(ctx, g1, g2):
                return g1, g1 + 2 * g2
        a, y = leaves(lib)
        b = a * 1
        p, q = AddInto.apply(b, y)
        assert p is b and b.requires_grad and b.grad_fn is not None
        (p * q).sum().backward()
        with pytest.raises(RuntimeError, match="a leaf Variable that requires grad has been used in an in-place"):
            AddInto.apply(a, y)
        plain = lib.tensor(A, dtype=lib.float64)
        assert AddInto.apply(plain, lib.tensor(B, dtype=lib.float64))[0] is plain  # nothing to record
        return a.grad, y.grad, b.detach()
    check_both(run)


def test_torch_autograd_namespace_spellings():
    """torch.autograd.function.once_differentiable, FunctionCtx and torch.autograd's grad-mode names."""
    from minilora.autograd.function import FunctionCtx, once_differentiable  # noqa: F401 (the import works)

    def run(lib):
        class Triple(lib.autograd.Function):
            @staticmethod
            def forward(ctx, x):
                return x * 3

            @staticmethod
            @lib.autograd.function.once_differentiable
            def backward(ctx, g):
                return g * 3
        x = lib.tensor(A, dtype=lib.float64, requires_grad=True)
        with lib.autograd.set_grad_enabled(True), lib.autograd.enable_grad():
            Triple.apply(x).sum().backward()
        with lib.autograd.no_grad():
            assert not Triple.apply(x).requires_grad
        with lib.autograd.inference_mode():
            assert not Triple.apply(x).requires_grad
        return (x.grad,)
    check_both(run)


def test_backward_inputs_non_leaf_grad_is_after_its_hooks_and_retained_as_torch():
    """backward(inputs=[c]) turns c's retain_grad() on (torch's way): c.grad comes after c's hooks,
    and a later backward fills it too."""
    def run(lib):
        a, _ = leaves(lib)
        c = a * 3
        c.register_hook(lambda g: g * 10)
        (c * c).sum().backward(inputs=[c], retain_graph=True)
        first = c.grad.clone()
        assert c.retains_grad
        (c * c).sum().backward()
        return first, c.grad, a.grad
    check_both(run)


FUNCTIONAL_CASES = {
    "tensor to tensor": lambda F, lib, x, y: [F.jacobian(lambda a: a * a.sin(), x)],
    "tuple to tensor": lambda F, lib, x, y: list(F.jacobian(lambda a, b: a.sum() * b.exp(), (x, y))),
    "tuple to tuple": lambda F, lib, x, y: [t for row in F.jacobian(lambda a, b: (a * 2, (b * b).sum()), (x, y))
                                            for t in row],
    "tensor to scalar": lambda F, lib, x, y: [F.jacobian(lambda a: (a ** 3).sum(), x)],
    "independent input": lambda F, lib, x, y: list(F.jacobian(lambda a, b: a * 2, (x, y))),
    "vjp": lambda F, lib, x, y: list(F.vjp(lambda a: a * a.cos(), x, lib.ones(3, dtype=lib.float64))),
    "vjp scalar, tuple inputs": lambda F, lib, x, y: [F.vjp(lambda a, b: (a * b).sum(), (x, y))[0],
                                                      *F.vjp(lambda a, b: (a * b).sum(), (x, y))[1]],
    "jvp": lambda F, lib, x, y: list(F.jvp(lambda a: a.exp() * 2, x, y)),
    "jvp to scalar": lambda F, lib, x, y: list(F.jvp(lambda a: (a * a).sum(), x, y)),
}


@pytest.mark.parametrize("case", sorted(FUNCTIONAL_CASES))
def test_autograd_functional_as_torch(case):
    def run(lib):
        x = lib.tensor(A, dtype=lib.float64)
        y = lib.tensor(B, dtype=lib.float64)
        return FUNCTIONAL_CASES[case](lib.autograd.functional, lib, x, y)
    for m, t in both(run):
        assert tuple(m.shape) == tuple(t.shape)
        same(m, t)


def test_autograd_functional_errors_as_torch():
    for lib in (ml, torch):
        F = lib.autograd.functional
        with pytest.raises(RuntimeError, match="Output 0 of the user-provided function is independent of input 1"):
            F.jacobian(lambda a, b: a * 2, (lib.ones(2), lib.ones(3)), strict=True)
        with pytest.raises(RuntimeError, match="The vector v can only be None"):
            F.vjp(lambda a: a * a, lib.ones(2))
    with pytest.raises(NotImplementedError, match="BFloat16Huber's backward is not differentiable"):  # (angle's,
        ml.autograd.functional.hessian(lambda a: ml.nn.functional.huber_loss(a.bfloat16(), (a * 2).bfloat16()).float(),
                                       ml.ones(2, 2))  # then logaddexp2's until round 16)
    np.testing.assert_allclose(ml.autograd.functional.hessian(lambda a: a.prod(), ml.tensor([2.0, 3.0, 0.0])).numpy(),
                               torch.autograd.functional.hessian(lambda a: a.prod(), torch.tensor([2.0, 3.0, 0.0])))


def gradient_returning(lib, make_gradient):
    class Custom(lib.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x * 2

        @staticmethod
        def backward(ctx, g):
            return make_gradient(g)
    return Custom


def test_user_backward_gradient_checked_and_summed_as_torch():
    def run(lib):
        x = lib.tensor(A, dtype=lib.float64, requires_grad=True)
        gradient_returning(lib, lambda g: g.expand(4, 3) * 1.5).apply(x).sum().backward()  # summed to x's shape
        return (x.grad,)
    check_both(run)
    for lib in (ml, torch):
        x = lib.tensor(A, dtype=lib.float64, requires_grad=True)
        with pytest.raises(RuntimeError, match=r"Function CustomBackward returned an invalid gradient at index 0 - "
                                               r"got \[\] but expected shape compatible with \[3\]"):
            gradient_returning(lib, lambda g: g.sum()).apply(x).sum().backward()
        with pytest.raises(RuntimeError, match=r"expected Variable or None \(got float\)"):
            gradient_returning(lib, lambda g: 5.0).apply(x).sum().backward()

        class SavesANumber(lib.autograd.Function):
            @staticmethod
            def forward(ctx, x):
                ctx.save_for_backward(x, 3)
                return x * 2

            @staticmethod
            def backward(ctx, g):
                return g
        with pytest.raises(TypeError, match="save_for_backward can only save variables, but argument 1 is of type int"):
            SavesANumber.apply(x)
