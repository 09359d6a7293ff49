"""torch.utils.checkpoint as tutorials call it: ``from torch.utils.checkpoint import checkpoint``,
both variants (use_reentrant=True is torch 2.13's default when left out, with its warning),
preserve_rng_state, checkpoint_sequential; dropout inside the segment replays torch's masks."""
import importlib
import warnings

import numpy as np
import pytest

import minilora

torch = pytest.importorskip("torch")


def _blocks(lib):
    nn = lib.nn

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.l1, self.drop, self.l2 = nn.Linear(8, 16), nn.Dropout(0.3), nn.Linear(16, 8)

        def forward(self, x):
            return self.l2(self.drop(lib.relu(self.l1(x))))

    return nn.ModuleList([Block() for _ in range(3)])


def _run(lib, **options):
    checkpoint = importlib.import_module(lib.__name__ + ".utils.checkpoint").checkpoint
    lib.manual_seed(0)
    blocks = _blocks(lib)
    x = lib.randn(4, 8, requires_grad=True)
    h = x
    for block in blocks:
        h = checkpoint(block, h, **options) + h
    loss = (h ** 2).mean()
    loss.backward()
    return ([loss.item(), x.grad.numpy().copy()] + [p.grad.numpy().copy() for p in blocks.parameters()]
            + [lib.rand(2).tolist()])


@pytest.mark.parametrize("options", [dict(use_reentrant=True), dict(use_reentrant=False),
                                     dict(use_reentrant=True, preserve_rng_state=False),
                                     dict(use_reentrant=False, preserve_rng_state=False)], ids=str)
def test_checkpointed_dropout_blocks_match_torch(options):
    """Masks replayed (or, preserve_rng_state=False, drawn again from the stream) as torch's: the
    same loss, gradients and next random numbers."""
    theirs, ours = _run(torch, **options), _run(minilora, **options)
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_left_out_use_reentrant_warns_and_is_reentrant():
    checkpoint = minilora.utils.checkpoint.checkpoint
    layer = minilora.nn.Linear(3, 3)
    with pytest.warns(UserWarning, match="use_reentrant parameter should be passed explicitly"):
        out = checkpoint(layer, minilora.randn(2, 3, requires_grad=True))
    assert out.requires_grad


@pytest.mark.parametrize("lib", [torch, minilora], ids=["torch", "minilora"])
def test_reentrant_with_no_input_needing_grad_leaves_the_parameters_without_gradient(lib):
    """The pitfall torch users meet with frozen embeddings: the reentrant checkpoint's output needs no
    gradient when its inputs need none, so the layer inside trains nothing (hence
    enable_input_require_grads); the non-reentrant one trains it."""
    checkpoint = importlib.import_module(lib.__name__ + ".utils.checkpoint").checkpoint
    layer = lib.nn.Linear(3, 3)
    x = lib.randn(2, 3)
    with pytest.warns(UserWarning, match="None of the inputs have requires_grad=True"):
        out = checkpoint(layer, x, use_reentrant=True)
    assert not out.requires_grad and layer.weight.grad is None
    checkpoint(layer, x, use_reentrant=False).sum().backward()
    assert layer.weight.grad is not None


@pytest.mark.parametrize("lib", [torch, minilora], ids=["torch", "minilora"])
def test_reentrant_refuses_keyword_arguments(lib):
    checkpoint = importlib.import_module(lib.__name__ + ".utils.checkpoint").checkpoint
    with pytest.raises(ValueError, match="Unexpected keyword arguments: scale"):
        checkpoint(lambda t, scale=1: t * scale, lib.ones(2, requires_grad=True), use_reentrant=True, scale=2)


@pytest.mark.parametrize("segments", [1, 2, 3])
def test_checkpoint_sequential_matches_torch(segments):
    results = []
    for lib in (torch, minilora):
        sequential = importlib.import_module(lib.__name__ + ".utils.checkpoint").checkpoint_sequential
        lib.manual_seed(1)
        model = lib.nn.Sequential(lib.nn.Linear(4, 8), lib.nn.ReLU(), lib.nn.Dropout(0.2), lib.nn.Linear(8, 8),
                                  lib.nn.Tanh(), lib.nn.Linear(8, 2))
        x = lib.randn(5, 4, requires_grad=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = sequential(model, segments, x, use_reentrant=False)
        out.sum().backward()
        results.append([out.detach().numpy(), x.grad.numpy()] + [p.grad.numpy() for p in model.parameters()])
    for a, b in zip(results[1], results[0]):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
