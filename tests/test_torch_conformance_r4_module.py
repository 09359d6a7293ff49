"""Three tutorial scripts, ported line by line, run side by side with torch (h67).

1. PyTorch's "Learn the Basics" quickstart (an MLP classifier, on synthetic data instead of
   FashionMNIST): a ``Dataset`` subclass, ``DataLoader(batch_size, shuffle, drop_last)``, ``train()`` /
   ``eval()``, ``loss.item()``, ``no_grad()``, the accuracy sum, saving and loading the state_dict.
2. A nanoGPT / makemore-style character LM: ``manual_seed``, ``randint`` batches, ``cross_entropy`` on
   ``view(-1, C)``, AdamW, ``multinomial`` sampling, ``cat`` in a loop.
3. The ``nn.Module`` API tour: buffers, traversal, ``apply``, state_dict keys, ``load_state_dict``'s
   result, forward and *backward* hooks with their return-value rules, casts, modes, containers, reprs.

Each snippet is written once, the way a torch user writes it, and run with ``lib = torch`` and with
``lib = minilora``; weights are copied from torch where values are compared. Random streams differ
(minilora draws NumPy's), so random draws are compared by dtype, shape, range and distribution only.
"""
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import minilora as ml  # noqa: E402
from test_torch_conformance import check, expect_error, run_both  # noqa: E402


def f64(lib, array, grad=False):
    return lib.tensor(np.asarray(array, dtype=np.float64), requires_grad=grad)


def rounded(x):
    """A tensor (or None, or a tuple of them) as nested lists rounded to 9 places, for hook logs."""
    if x is None:
        return None
    if isinstance(x, tuple):
        return tuple(rounded(v) for v in x)
    return np.round(x.detach().numpy().astype(np.float64), 9).tolist()


# ---- 3. backward hooks ------------------------------------------------------------------------------
class _TwoOutputs:
    """A module with a tensor input, a number input and two outputs (one of them a plain sum)."""

    @staticmethod
    def make(lib):
        class TwoOutputs(lib.nn.Module):
            def __init__(self):
                super().__init__()
                self.lin = lib.nn.Linear(3, 2, dtype=lib.float64)
                with lib.no_grad():
                    self.lin.weight.copy_(f64(lib, np.arange(6.0).reshape(2, 3) / 10))
                    self.lin.bias.zero_()

            def forward(self, x, scale):
                return self.lin(x) * scale, (x * 2).sum()
        return TwoOutputs()


def test_full_backward_hook_sees_grads_and_may_replace_grad_input():
    def snippet(lib):
        m, log = _TwoOutputs.make(lib), []

        def pre(module, grad_output):
            log.append(("pre", rounded(grad_output)))

        def full(module, grad_input, grad_output):
            log.append(("full", rounded(grad_input), rounded(grad_output)))
            return (grad_input[0] * 10, None)  # one entry per positional input (3.0 gets None)
        m.register_full_backward_pre_hook(pre)
        handle = m.register_full_backward_hook(full)
        x = f64(lib, [[1.0, 2.0, 3.0]], grad=True)
        out, total = m(x, 3.0)
        (out.sum() + total).backward()
        return [log, x.grad, m.lin.weight.grad, type(handle).__name__]
    check(snippet)


def test_backward_pre_hook_replaces_grad_output_and_handles_remove():
    def snippet(lib):
        m, log = _TwoOutputs.make(lib), []
        m.register_full_backward_pre_hook(lambda module, go: (go[0] * 0 + 1, None))
        gone = m.register_full_backward_hook(lambda module, gi, go: log.append("removed hook ran"))
        gone.remove()
        x = f64(lib, [[1.0, 2.0, 3.0]], grad=True)
        out, _ = m(x, 1.0)
        (out * 5).sum().backward()
        return [x.grad, m.lin.weight.grad, log]
    check(snippet)


def test_full_backward_hook_when_no_input_requires_grad_fires_at_the_outputs():
    def snippet(lib):
        m, log = _TwoOutputs.make(lib), []
        m.register_full_backward_hook(lambda module, gi, go: log.append((rounded(gi), rounded(go))))
        out, _ = m(f64(lib, [[1.0, 2.0, 3.0]]), 2.0)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            out.sum().backward()
        return [log, [w.category.__name__ for w in caught]]
    check(snippet)


def test_full_backward_hooks_in_a_sequential_run_outputs_first_with_shapes():
    def snippet(lib):
        lib.manual_seed(0)
        seq = lib.nn.Sequential(lib.nn.Linear(3, 3), lib.nn.Tanh(), lib.nn.Linear(3, 1))
        log = []
        for i, child in enumerate(seq):
            child.register_full_backward_hook(
                lambda module, gi, go, i=i: log.append((i, [None if g is None else tuple(g.shape) for g in gi],
                                                        [tuple(g.shape) for g in go])))
        x = lib.ones(4, 3, requires_grad=True)
        seq(x).sum().backward()
        emb = lib.nn.Embedding(5, 2)  # an integer input: its grad_input is None
        emb.register_full_backward_hook(lambda module, gi, go: log.append(("emb", gi, tuple(go[0].shape))))
        emb(lib.tensor([1, 2])).sum().backward()
        return log
    check(snippet)


def test_backward_hook_wrong_length_and_no_grad():
    def wrong_length(lib):
        layer = lib.nn.Linear(3, 2)
        layer.register_full_backward_hook(lambda module, gi, go: (gi[0], gi[0]))
        layer(lib.ones(1, 3, requires_grad=True)).sum().backward()
    expect_error(wrong_length)

    def wrong_pre_length(lib):
        layer = lib.nn.Linear(3, 2)
        layer.register_full_backward_pre_hook(lambda module, go: (go[0], go[0]))
        layer(lib.ones(1, 3, requires_grad=True)).sum().backward()
    expect_error(wrong_pre_length)

    def under_no_grad(lib):
        log = []
        layer = lib.nn.Linear(3, 2)
        layer.register_full_backward_hook(lambda *args: log.append("ran"))
        with lib.no_grad():
            y = layer(lib.ones(1, 3, requires_grad=True))
        return [y.requires_grad, log]
    check(under_no_grad)


def test_forward_hooks_still_see_the_args_and_backward_hooks_keep_values():
    """A forward hook and a backward hook on one module: the forward hook's replacement output is the
    one whose gradient the backward hooks see, and the module's numbers do not change."""
    def snippet(lib):
        m, log = _TwoOutputs.make(lib), []
        m.register_forward_hook(lambda module, args, out: (out[0] * 2, out[1]))
        m.register_full_backward_pre_hook(lambda module, go: log.append(rounded(go)))
        x = f64(lib, [[1.0, -2.0, 0.5]], grad=True)
        out, total = m(x, 1.5)
        (out ** 2).sum().backward()
        return [out, total, x.grad, log]
    check(snippet)
