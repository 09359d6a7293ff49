"""Round 8: gradients that share an array, and the Tensor dunders torch has.

The engine hands a leaf its first gradient without a copy and adds later ones into ``.grad`` in
place. ``a + b``'s backward returns its incoming gradient itself, for both inputs: when that same
array was also on its way to another node, the in-place add changed it there -- ``(a + (a + b))``
gave ``b`` twice its gradient, ``(a - c) + (b - b)`` gave ``a`` zero -- silently. A fuzzer of small
graphs (adds, subs, views, concatenations, reductions, retain_grad) compares every gradient with
torch's; its cases are fixed seeds, so a failure names a reproducible program."""
import random

import numpy as np
import pytest

import minilora

torch = pytest.importorskip("torch")


def _lib(x):
    return torch if isinstance(x, torch.Tensor) else minilora


BINARY = [lambda x, y: x + y, lambda x, y: x - y, lambda x, y: y + x, lambda x, y: x * y,
          lambda x, y: _lib(x).cat([x, y], 0)[:2] + 0, lambda x, y: _lib(x).stack([x, y]).sum(0),
          lambda x, y: _lib(x).where(x > 0, x, y), lambda x, y: _lib(x).maximum(x, y),
          lambda x, y: x.add(y, alpha=2), lambda x, y: _lib(x).lerp(x, y, 0.5), lambda x, y: x.sub(y).neg()]
UNARY = [lambda x: x.chunk(2, 1)[0].repeat(1, 2)[:, :3], lambda x: x.unbind(0)[0].expand(2, 3),
         lambda x: x.masked_fill(x > 0.5, 0.0), lambda x: x.abs(), lambda x: x.clamp(-0.5, 0.5),
         lambda x: x.flip(0), lambda x: x.roll(1, 1), lambda x: x.sum(1, keepdim=True) * x,
         lambda x: x.mean() + x, lambda x: x.split([1, 2], 1)[1].sum(1, keepdim=True).expand(2, 3),
         lambda x: x * 1, lambda x: x + 0, lambda x: x.reshape(2, 3), lambda x: x[:], lambda x: x.clone(),
         lambda x: +x, lambda x: x.squeeze(), lambda x: x.t().t(), lambda x: x.contiguous(),
         lambda x: x.to(x.dtype), lambda x: x.detach() * 0 + x, lambda x: x.sum(0, keepdim=True).expand(2, 3)]


def _program(seed):
    rng = random.Random(seed)
    steps, nodes = [], 3
    for _ in range(rng.randint(2, 7)):
        if rng.random() < 0.5:
            steps.append((BINARY[rng.randrange(len(BINARY))], rng.randrange(nodes), rng.randrange(nodes)))
        else:
            steps.append((UNARY[rng.randrange(len(UNARY))], rng.randrange(nodes)))
        nodes += 1
    return steps, rng.random() < 0.3


def _gradients(lib, steps, retain):
    values = [lib.tensor(np.random.default_rng(i).standard_normal((2, 3)), requires_grad=i < 2) for i in range(3)]
    for fn, *args in steps:
        value = fn(*(values[i] for i in args))
        if retain and value.requires_grad:
            value.retain_grad()
        values.append(value)
    out = (values[-1] * lib.tensor(np.arange(6.0).reshape(2, 3))).sum()
    if not out.requires_grad:
        return None
    out.backward()
    watched = values[:2] + (values[3:] if retain else [])
    return [None if v.grad is None else v.grad.numpy().copy() for v in watched]


@pytest.mark.parametrize("block", range(8))
def test_small_graphs_give_torch_s_gradients(block):
    for seed in range(block * 60, (block + 1) * 60):
        steps, retain = _program(seed)
        try:
            theirs = _gradients(torch, steps, retain)
        except RuntimeError:  # (torch refuses this program: a view of an expanded tensor, say)
            continue
        ours = _gradients(minilora, steps, retain)
        if theirs is None:
            assert ours is None
            continue
        for i, (a, b) in enumerate(zip(ours, theirs)):
            assert (a is None) == (b is None), (seed, i)
            if b is not None:
                np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12, err_msg=f"program {seed}, tensor {i}")


@pytest.mark.parametrize("expression", ["a + (a + b)", "(a - c) + (b - b)", "(a + b) + (b + b)", "b + a + a"])
def test_a_gradient_passed_through_is_not_changed_on_its_way(expression):
    grads = []
    for lib in (torch, minilora):
        a, b = (lib.tensor([1.0, 2.0], requires_grad=True) for _ in range(2))
        c = lib.tensor([3.0, 4.0])
        (eval(expression) * lib.tensor([5.0, 6.0])).sum().backward()
        grads.append((a.grad.numpy(), b.grad.numpy()))
    for ours, theirs in zip(grads[1], grads[0]):
        np.testing.assert_array_equal(ours, theirs)


def test_the_first_gradient_is_the_leaf_s_own_array():
    """A gradient passed through to a leaf is copied once: changing ``.grad`` afterwards (an
    optimizer's in-place step on it, zero_()) cannot reach another leaf's gradient."""
    a, b = (minilora.tensor([1.0, 2.0], requires_grad=True) for _ in range(2))
    (a + b).sum().backward()
    a.grad.mul_(10)
    assert b.grad.tolist() == [1.0, 1.0]


# ---- the dunders torch's Tensor has -------------------------------------------------------------
def test_unary_plus_is_torch_positive():
    for lib in (torch, minilora):
        x = lib.tensor([1.0, -2.0], requires_grad=True)
        assert (+x) is x
        assert (+lib.tensor([1, 2])).tolist() == [1, 2]
        with pytest.raises(RuntimeError, match="bool tensor is not supported"):
            +lib.tensor([True])


def test_in_reversed_complex_and_del_as_torch():
    for lib in (torch, minilora):
        t = lib.tensor([[1.0, 2.0], [3.0, 4.0]])
        assert (2.0 in t, 5 in t, lib.tensor(3.0) in t, True in lib.tensor([1.0, 0.0])) == (True, False, True, True)
        assert lib.tensor([1.0, 5.0]) in t  # (broadcast: some element equal)
        with pytest.raises(RuntimeError, match="only supports Tensor or scalar"):
            [1, 2] in t
        assert [r.tolist() for r in reversed(t)] == [[3.0, 4.0], [1.0, 2.0]]
        assert reversed(lib.tensor(3.0)).tolist() == 3.0
        assert complex(lib.tensor(2.5)) == complex(lib.tensor([2.5])) == 2.5 + 0j
        with pytest.raises(ValueError, match="only one element tensors"):
            complex(t)
        with pytest.raises(TypeError, match="does not support deleting items"):
            del t[0]
