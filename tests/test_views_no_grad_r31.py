"""Views made under no_grad, inference_mode, split/chunk/unbind and inside a custom autograd.Function, as torch's
autograd keeps them (round 31): every differentiable view carries how it was made (torch's CreationMeta), and that
decides what it may do later.

``with no_grad(): wt = w.t()`` of a weight that requires grad gives a view that requires grad through its base, is a
leaf with no grad_fn, and passes no gradient anywhere: backward through it runs and leaves ``w.grad`` None (minilora
raised). Changing it in place in grad mode -- or using it after it or its base changed in place, an optimizer's step
included -- is torch's "A view was created in no_grad mode ..." error, whose words users search. Each case is run
through both libraries; tests/views_no_grad_sweep.py runs the whole class (35 view ops x 5 modes x 3 bases x 12
probes), and a slice of it runs here.
"""
import pytest

import minilora
import views_no_grad_sweep  # (tests/ is on the path: rootdir conftest)

torch = pytest.importorskip("torch")


def _error(call):
    with pytest.raises(RuntimeError) as caught:
        call()
    return str(caught.value)


def _both(lib_case):
    """``lib_case(lib)`` for torch and minilora: each answer, or its RuntimeError's message."""
    answers = []
    for lib in (torch, minilora):
        try:
            answers.append(lib_case(lib))
        except RuntimeError as exc:
            answers.append(f"RuntimeError: {exc}")
    return answers


def _no_grad_slice(lib):
    """A leaf that requires grad, and a slice of it made under no_grad."""
    w = lib.ones(3, requires_grad=True)
    with lib.no_grad():
        v = w[:2]
    return w, v


VIEW_OPS = {
    "slice": lambda x: x[:2],
    "t": lambda x: x.t(),
    "view": lambda x: x.view(12),
    "expand": lambda x: x.expand(2, 3, 4),
    "diagonal": lambda x: x.diagonal(),
    "unfold": lambda x: x.unfold(1, 2, 2),
    "select": lambda x: x.select(0, 1),
    "unbind": lambda x: x.unbind(0)[0],
    "split": lambda x: x.split(2)[1],
    "mT": lambda x: x.mT,
}


@pytest.mark.parametrize("name", list(VIEW_OPS))
def test_a_no_grad_view_requires_grad_through_its_base(name):
    def case(lib):
        w = lib.ones(3, 4, requires_grad=True)
        with lib.no_grad():
            v = VIEW_OPS[name](w)
        return v.requires_grad, v.is_leaf, v.grad_fn, v._is_view(), v._base is w
    theirs, ours = _both(case)
    assert ours == theirs == (True, True, None, True, True)


def test_backward_through_a_no_grad_view_runs_and_the_gradient_goes_nowhere():
    def case(lib):
        w, v = _no_grad_slice(lib)
        y = v * 2
        y.sum().backward()
        return y.requires_grad, type(y.grad_fn).__name__, w.grad, v.grad
    theirs, ours = _both(case)
    assert ours == theirs == (True, "MulBackward0", None, None)


def test_a_custom_function_sees_the_no_grad_view_as_needing_its_gradient():
    def case(lib):
        seen = []

        class Double(lib.autograd.Function):
            @staticmethod
            def forward(ctx, a):
                return a * 2

            @staticmethod
            def backward(ctx, g):
                seen.append(ctx.needs_input_grad)
                return g * 2
        w, v = _no_grad_slice(lib)
        Double.apply(v).sum().backward()
        return seen, w.grad
    theirs, ours = _both(case)
    assert ours == theirs == ([(True,)], None)


NO_GRAD_INPLACE = ("A view was created in no_grad mode and is being modified inplace with grad mode enabled. Given "
                   "that this use case is ambiguous and error-prone, it is forbidden. You can clarify your code by "
                   "moving both the view and the inplace either both inside the no_grad block (if you don't want the "
                   "inplace to be tracked) or both outside (if you want the inplace to be tracked).")
REBASED = NO_GRAD_INPLACE.replace("is being modified", "its base or another view of its base has been modified")

REFUSALS = {
    "no_grad view of a leaf": "w = lib.ones(3, 4, requires_grad=True)\nwith lib.no_grad(): v = w[:2]\nv.mul_(2)",
    "no_grad view of a non-leaf": "w = lib.ones(3, 4, requires_grad=True) * 1\nwith lib.no_grad(): v = w.t()\n"
                                  "v.add_(1)",
    "view of a no_grad view, made in grad mode": "w = lib.ones(3, 4, requires_grad=True)\n"
                                                 "with lib.no_grad(): v = w[:2]\nv.t().mul_(2)",
    "no_grad view of a plain tensor, a source that requires grad": "b = lib.ones(3, 4)\nwith lib.no_grad(): v = b[0]\n"
                                                                   "v.copy_(lib.ones(4, requires_grad=True))",
    "no_grad view, its base made to require grad after": "b = lib.ones(3, 4)\nwith lib.no_grad(): v = b[0]\n"
                                                         "b.requires_grad_()\nv.mul_(2)",
    "inference_mode view": "w = lib.ones(3, 4, requires_grad=True)\nwith lib.inference_mode(): v = w[1]\nv.mul_(2)",
    "unbind under no_grad": "w = lib.ones(3, 4, requires_grad=True)\nwith lib.no_grad(): v = w.unbind(0)[1]\n"
                            "v.mul_(2)",
    "split of a plain tensor, a source that requires grad": "b = lib.ones(3, 4)\nv = b.split(2)[0]\n"
                                                            "v.copy_(lib.ones(2, 4, requires_grad=True))",
    "a custom Function's view": "class View(lib.autograd.Function):\n"
                                "    @staticmethod\n    def forward(ctx, a): return a[:2]\n"
                                "    @staticmethod\n    def backward(ctx, g): return g.new_zeros(3, 4)\n"
                                "w = lib.ones(3, 4, requires_grad=True)\nView.apply(w).mul_(2)",
    "expand under no_grad": "b = lib.ones(3, 4)\nwith lib.no_grad(): b[0].expand(2, 4).mul_(2)",
    "view[0] = 5 names the view of the view": "w = lib.ones(3, 4, requires_grad=True)\n"
                                              "with lib.no_grad(): v = w[:2]\nv[0] = 5",
    "detach_() of a plain tensor's view": "lib.ones(3)[:2].detach_()",
    "autograd.grad names the output first": "lib.autograd.grad(lib.ones(3).sum(), lib.ones(3))",
}


@pytest.mark.parametrize("name", list(REFUSALS))
def test_refused_in_torchs_words(name):
    """In-place changes of tagged views, and the smaller forms around them (view[0] = 5, detach_(), autograd.grad)."""
    def case(lib):
        exec(REFUSALS[name], {"lib": lib})
    theirs, ours = _both(case)
    assert theirs.startswith("RuntimeError")
    assert ours == theirs


def test_the_no_grad_message_in_full():
    _, v = _no_grad_slice(minilora)
    assert _error(lambda: v.mul_(2)) == NO_GRAD_INPLACE


@pytest.mark.parametrize("change", ["the view", "its base", "an optimizer step"])
def test_changed_in_place_under_no_grad_then_used_in_grad_mode(change):
    """Allowed under no_grad; using the view afterwards in grad mode is torch's error (so is grad_fn and is_leaf),
    and its repr says grad_fn=<Invalid> instead of raising."""
    def case(lib):
        w, v = _no_grad_slice(lib)
        if change == "an optimizer step":
            opt = lib.optim.SGD([w], lr=0.1)
            (w * 2).sum().backward()
            opt.step()
        else:
            with lib.no_grad():
                (v if change == "the view" else w).add_(1)
        answers = []
        for use in (lambda: v * 2, lambda: v.grad_fn, lambda: v.is_leaf):
            try:
                use()
                answers.append("ran")
            except RuntimeError as exc:
                answers.append(str(exc))
        return answers, repr(v).split("], ")[-1]
    theirs, ours = _both(case)
    assert ours == theirs
    assert ours[0] == [REBASED] * 3 and ours[1] == "grad_fn=<Invalid>)"


def test_a_no_grad_view_of_a_tensor_that_needs_no_grad_may_change_in_place():
    def case(lib):
        b = lib.ones(3)
        with lib.no_grad():
            v = b[:2]
        v.mul_(2)
        with lib.no_grad():
            b.add_(1)
        return (v * 2).requires_grad, b.tolist(), v._version, b._version, v._is_view()
    theirs, ours = _both(case)
    assert ours == theirs == (False, [3.0, 3.0, 2.0], 2, 2, True)


def test_requires_grad_on_a_no_grad_view_gives_it_its_own_grad():
    def case(lib):
        w, v = _no_grad_slice(lib)
        v.requires_grad_()
        (v * 2).sum().backward()
        v.retain_grad()
        return v.grad.tolist(), w.grad, v.is_leaf, _error(lambda: v.mul_(2))
    theirs, ours = _both(case)
    assert ours == theirs == ([2.0, 2.0], None, True, NO_GRAD_INPLACE)  # (its tag stays: still refused)


def test_retain_grad_on_a_no_grad_view_is_a_leaf_s_no_op():
    def case(lib):
        w, v = _no_grad_slice(lib)
        v.retain_grad()
        (v * 2).sum().backward()
        return v.retains_grad, v.grad
    theirs, ours = _both(case)
    assert ours == theirs == (False, None)


def test_a_view_of_a_no_grad_view_made_in_grad_mode_has_a_node_to_nowhere():
    def case(lib):
        w = lib.ones(3, 4, requires_grad=True)
        with lib.no_grad():
            v = w[:2]
        u = v.t()
        u.sum().backward()
        return u.requires_grad, u.is_leaf, type(u.grad_fn).__name__, u._base is w, w.grad
    theirs, ours = _both(case)
    assert ours == theirs == (True, False, "TBackward0", True, None)


def test_a_view_requires_grad_once_its_base_does():
    def case(lib):
        b = lib.ones(3)
        with lib.no_grad():
            v = b[:2]
        before = v.requires_grad
        b.requires_grad_()
        (v * 2).sum().backward()
        return before, v.requires_grad, v.is_leaf, b.grad
    theirs, ours = _both(case)
    assert ours == theirs == (False, True, True, None)


def test_detach_and_data_inside_inference_mode_of_a_normal_tensor_are_normal():
    def case(lib):
        w = lib.ones(3, requires_grad=True)
        with lib.inference_mode():
            d, e, v = w.detach(), w.data, w[:2]
        d.mul_(2)
        e.requires_grad_()
        return d.is_inference(), e.is_inference(), v.is_inference(), v.requires_grad
    theirs, ours = _both(case)
    assert ours == theirs == (False, False, False, True)


def test_a_regenerated_view_as_real_keeps_its_node():
    def case(lib):
        z = lib.ones(3, dtype=lib.complex64, requires_grad=True) * 1
        r = lib.view_as_real(z)
        z.mul_(2)
        return type(r.grad_fn).__name__
    theirs, ours = _both(case)
    assert ours == theirs == "ViewAsRealBackward0"


def test_frozen_weight_transposed_under_no_grad_trains_as_torch():
    """The case that F.linear mirrored alone (round 30): ``w.t()`` under no_grad requires grad, so matmul folds the
    batch into one mm as torch's does, and training through it moves nothing."""
    def case(lib):
        gen = torch.Generator().manual_seed(0)
        w0 = torch.randn(5, 4, generator=gen)
        x0 = torch.randn(2, 3, 4, generator=gen).transpose(0, 1)
        w = lib.tensor(w0.numpy(), requires_grad=True)
        x = lib.tensor(x0.contiguous().numpy()).transpose(0, 1).contiguous().transpose(0, 1)
        with lib.no_grad():
            wt = w.t()
        y = lib.matmul(x, wt)
        y.sum().backward()
        return y.requires_grad, y.is_leaf, w.grad
    theirs, ours = _both(case)
    assert ours == theirs == (True, False, None)


@pytest.mark.filterwarnings("ignore:Using backward\\(\\) with create_graph=True")  # (both libraries warn)
def test_create_graph_and_a_hook_on_a_no_grad_view():
    """backward(create_graph=True) gives it no .grad either; a hook on it is taken, and never runs."""
    def case(lib):
        w, v = _no_grad_slice(lib)
        seen = []
        v.register_hook(seen.append)
        (v * v).sum().backward(create_graph=True)
        return v.grad, w.grad, seen
    theirs, ours = _both(case)
    assert ours == theirs == (None, None, [])


@pytest.mark.parametrize("part", ["unbind", "diagonal", "view_as_real", "columns"])
def test_the_sweep_finds_no_difference(part, capsys):
    assert views_no_grad_sweep.main([part]) == 0, capsys.readouterr().out
