"""Round 32: torch.func swept against torch 2.13 (tests/func_sweep.py, a tool run by hand: ops x transforms x dtypes,
and the refusals and module forms of torch's tutorials). What differed, and is fixed (the class):
* grad / jacrev of a function of several arguments kept no graph to the arguments it was not taken with respect to,
  so ``grad(lambda a, b: grad(f, argnums=0)(a, b).sum(), argnums=1)`` -- a mixed second derivative -- was zeros.
* A closed-over parameter that requires grad (``grad(lambda x: D(x).sum())(x)``, a gradient penalty) was cut
  off: the gradient required no grad, so training through it gave the model no gradient, silently. Now a
  transform keeps a result's graph where it reaches a tensor that requires grad other than its own leaves.
* The value and aux of grad / grad_and_value / vjp kept their graph to grad's fresh leaves (requires_grad True where
  torch's are unwrapped from grad's level); linearize's value dropped its graph to primals that require grad.
* vmap ran what torch refuses: ``.item()`` / ``float()`` / ``if`` on a batched tensor, an in-place op writing a
  batched tensor into an unbatched one. And an in-place change of an unbatched input by unbatched operands ran once
  per sample (torch's runs once for the batch): each sample saw the changes of the ones before, silently.
  func.py's _Batching follows which tensors are batched (tensor.py hands it each op while vmap runs).
* vmap's out_dims: None for an output (returned as is; torch's refusal of a batched one), a dict, a structure that
  does not fit (refused in torch's words, not zipped short); in_dims whose nested structure does not fit the inputs
  was zipped short too; chunk_size=0 ran.
* Words: TreeSpec structures as torch prints them, ``<lambda>`` for the function, argnums', functional_call's
  repeated keys.
"""
import numpy as np
import pytest

import minilora as ml

torch = pytest.importorskip("torch")


def _pair(shape, seed=0, dtype="float64"):
    values = np.random.default_rng(seed).standard_normal(shape)
    return (torch.from_numpy(values.copy()).to(getattr(torch, dtype)),
            ml.from_numpy(values.copy()).to(getattr(ml, dtype)))


def _same(theirs, ours):
    np.testing.assert_array_equal(ours.detach().numpy(), theirs.detach().numpy())


def _error(call):
    with pytest.raises(Exception) as info:
        call()
    return type(info.value), str(info.value)


def _same_error(torch_call, ml_call):
    theirs, ours = _error(torch_call), _error(ml_call)
    assert issubclass(ours[0], theirs[0]) and ours[1] == theirs[1], (theirs, ours)


def test_mixed_second_derivatives_follow_the_other_argument():
    (tx, mx), (tw, mw) = _pair((3, 4), 1), _pair((4,), 2)
    got = {torch: {}, ml: {}}
    for L, x, w in ((torch, tx, tw), (ml, mx, mw)):
        f = lambda a, b: ((a * b).tanh() ** 2).sum()  # noqa: E731
        got[L]["mixed"] = L.func.grad(lambda a, b: L.func.grad(f, argnums=0)(a, b).sum(), argnums=1)(x, w)
        got[L]["jac"] = L.func.jacrev(L.func.jacrev(lambda a, b: (a * b).sin(), argnums=0), argnums=1)(x, w)
    assert np.abs(got[ml]["mixed"].numpy()).max() > 0.1
    np.testing.assert_allclose(got[ml]["mixed"].numpy(), got[torch]["mixed"].numpy(), rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(got[ml]["jac"].numpy(), got[torch]["jac"].numpy(), rtol=1e-13, atol=1e-13)


def test_values_and_aux_leave_the_transform_as_torchs():
    (tx, mx) = _pair((3,), 3)
    got = {torch: {}, ml: {}}
    for L, x in ((torch, tx), (ml, mx)):
        f = lambda a: ((a ** 2).sum(), {"y": a * 2})  # noqa: E731
        grads, aux = L.func.grad(f, has_aux=True)(x)
        _, (value, aux2) = L.func.grad_and_value(f, has_aux=True)(x)
        _, _, vjp_aux = L.func.vjp(f, x, has_aux=True)
        got[L]["flags"] = [aux["y"].requires_grad, value.requires_grad, aux2["y"].requires_grad,
                           vjp_aux["y"].requires_grad]
        out, jvp_fn = L.func.linearize(lambda a: a.sin(), x.clone().requires_grad_())
        got[L]["flags"].append(out.requires_grad)
    assert got[ml]["flags"] == got[torch]["flags"] == [False, False, False, False, True]


def test_vmap_refuses_reading_a_batched_value():
    tx, mx = _pair((3, 4), 4)
    ty, my = _pair((4,), 5)
    for body in (lambda t: t * t.sum().item(), lambda t: t * float(t.sum()), lambda t: t if t.sum() > 0 else -t):
        _same_error(lambda: torch.func.vmap(body)(tx), lambda: ml.func.vmap(body)(mx))
    # an unbatched tensor's value may be read, as in torch
    body = lambda t, u: t * u.sum().item() if u.sum() > 0 else t  # noqa: E731
    _same(torch.func.vmap(body, in_dims=(0, None))(tx, ty), ml.func.vmap(body, in_dims=(0, None))(mx, my))


_REFUSED_WRITES = [
    lambda L, t, u: u.mul_(t), lambda L, t, u: u.copy_(t), lambda L, t, u: u.add_(t), lambda L, t, u: u.pow_(t),
    lambda L, t, u: L.zeros(1).add_(t), lambda L, t, u: u.fill_(t.sum()),
    lambda L, t, u: L.zeros(4).__setitem__(0, t[0])]
_BATCHED_WRITES = [  # (the tensors written are batched in torch: no refusal)
    lambda L, t, u: t.new_zeros(4).add_(t), lambda L, t, u: L.zeros_like(t).add_(t), lambda L, t, u: t.clone().add_(u),
    lambda L, t, u: t.detach().mul_(t), lambda L, t, u: (t * 1).__iadd__(u),
    lambda L, t, u: L.func.grad(lambda r: (r ** 2).sum())(t).add_(t)]


def test_vmap_refuses_writing_a_batched_tensor_into_an_unbatched_one():
    tx, mx = _pair((3, 4), 6)
    ty, my = _pair((4,), 7)

    def vmapped(L, body):
        return L.func.vmap(lambda t, u: body(L, t, u), in_dims=(0, None))
    for body in _REFUSED_WRITES:
        _same_error(lambda: vmapped(torch, body)(tx, ty.clone()), lambda: vmapped(ml, body)(mx, my.clone()))
    for body in _BATCHED_WRITES:
        _same(vmapped(torch, body)(tx, ty), vmapped(ml, body)(mx, my))


def test_vmap_changes_an_unbatched_input_once():
    tx, mx = _pair((3, 4), 10)
    ty, my = _pair((4,), 11)
    got = {torch: {}, ml: {}}
    for L, x, y in ((torch, tx, ty), (ml, mx, my)):
        got[L]["buffer"] = y.clone()
        changes = lambda t, u: (u.add_(1), u[0].mul_(2), u * t)[2]  # noqa: E731
        got[L]["out"] = L.func.vmap(changes, in_dims=(0, None))(x, got[L]["buffer"])
    _same(got[torch]["out"], got[ml]["out"])
    _same(got[torch]["buffer"], got[ml]["buffer"])


def test_vmap_out_dims_as_torchs():
    tx, mx = _pair((3, 4), 12)
    ty, my = _pair((4,), 13)
    got = {torch: {}, ml: {}}
    for L, x, y in ((torch, tx, ty), (ml, mx, my)):
        vmap = L.func.vmap
        got[L]["results"] = [vmap(lambda t: (t, 3), out_dims=(0, None))(x),
                             vmap(lambda t: (t * 2, y), out_dims=(0, None))(x),
                             vmap(lambda t: {"a": t, "b": t.sum()}, out_dims={"a": 1, "b": 0})(x),
                             vmap(lambda t: (t, t * 2), out_dims=(0, -1), chunk_size=2)(x)]
    for theirs, ours in zip(got[torch]["results"], got[ml]["results"]):
        assert type(theirs) is type(ours)
        for key in (theirs.keys() if isinstance(theirs, dict) else range(len(theirs))):
            if isinstance(theirs[key], torch.Tensor):
                _same(theirs[key], ours[key])
            else:
                assert theirs[key] == ours[key]
    assert got[ml]["results"][1][1] is my
    for out_dims, body in (((0, None), lambda t: (t, t)), ((0, 1, 0), lambda t: (t, t)), ([0, 1], lambda t: (t, t)),
                           ((0, 1), lambda t: t)):
        _same_error(lambda: torch.func.vmap(body, out_dims=out_dims)(tx),
                    lambda: ml.func.vmap(body, out_dims=out_dims)(mx))


def test_vmap_in_dims_structure_and_chunk_size_refused_in_torchs_words():
    tx, mx = _pair((3, 4), 14)
    cases = [(lambda t: t, (0, 0), lambda x: (x,)), (lambda p: p[0], ((0, (0, 0)),), lambda x: ((x, x),)),
             (lambda p: p[0], ([0, 0],), lambda x: ((x, x),)),
             (lambda d: d["a"], ({"a": 0, "c": 0},), lambda x: ({"a": x, "b": x},))]
    for body, in_dims, inputs in cases:
        _same_error(lambda: torch.func.vmap(body, in_dims=in_dims)(*inputs(tx)),
                    lambda: ml.func.vmap(body, in_dims=in_dims)(*inputs(mx)))
    _same_error(lambda: torch.func.vmap(lambda t: t, chunk_size=0)(tx),
                lambda: ml.func.vmap(lambda t: t, chunk_size=0)(mx))
    _same_error(lambda: torch.func.vmap(lambda t: None)(tx), lambda: ml.func.vmap(lambda t: None)(mx))


def _refused_calls(L, x):
    return [lambda: L.func.grad(lambda t: t.sum(), argnums=1)(x),
            lambda: L.func.grad(lambda t, u: (t * u).sum(), argnums=(0, 0))(x, x),
            lambda: L.func.grad(lambda t: t.sum(), argnums=0.0)(x),
            lambda: L.func.jvp(lambda t, u: t, (x, x), (x,)),
            lambda: L.func.functional_call(L.nn.Linear(3, 2), ({"weight": L.ones(2, 3), "bias": L.ones(2)},
                                                              {"weight": L.ones(2, 3), "bias": L.ones(2)}), x)]


def test_argnums_structure_and_functional_call_words():
    tx, mx = _pair((3,), 15)
    for theirs, ours in zip(_refused_calls(torch, tx), _refused_calls(ml, mx)):
        _same_error(theirs, ours)


def test_a_closed_over_parameter_keeps_the_graph():
    """A gradient penalty through torch.func.grad trains the model's weight (it was detached: no gradient)."""
    (tx, mx), (tw, mw) = _pair((3,), 16), _pair((3,), 17)
    got = {}
    for L, x, w in ((torch, tx, tw), (ml, mx, mw)):
        w = w.clone().requires_grad_()
        penalty = (L.func.grad(lambda a: (a * w).tanh().sum())(x).norm() - 1) ** 2
        independent = L.func.grad(lambda a: a.sin().sum() + w.sum())(x)
        value = L.func.grad_and_value(lambda a: (a.sin() * w).sum())(x)[1]
        jacobian = L.func.jacrev(lambda a: a.sin() * w)(x)
        penalty.backward()
        got[L] = (w.grad, [penalty.requires_grad, independent.requires_grad, value.requires_grad,
                           jacobian.requires_grad])
    np.testing.assert_allclose(got[ml][0].numpy(), got[torch][0].numpy(), rtol=1e-14)
    assert got[ml][1] == got[torch][1] == [True, False, True, True]
