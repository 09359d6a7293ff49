"""Gradient checkpointing: keep a block's inputs, not its activations, and recompute them in backward.

Backward needs the forward's intermediate arrays, so training normally keeps every one of them: for
a transformer, a dozen [batch, seq, hidden]-sized arrays per layer, for every layer at once -- at
long sequences far more memory than the weights. ``checkpoint(layer, x, ...)`` runs the layer
*without* recording a graph and keeps only its inputs. When backward reaches it, the layer runs
again, this time recording, and backward continues through that fresh graph. The cost is one extra
forward per layer (about a third more compute); the gain is that only one layer's activations exist
at a time.

    x = checkpoint(layer, x, cos, sin)    # torch.utils.checkpoint.checkpoint(layer, x, ...)
    model.gradient_checkpointing_enable()  # every decoder layer of a Llama, as in transformers

The recomputation replays the same dropout masks: the random state at the first forward is saved
and restored around the second (``preserve_rng_state=False``: it draws on from wherever the stream
is); and it runs in the forward's autocast region (``minilora.autocast``).

torch has two variants, and so does minilora. ``use_reentrant=False`` (what transformers passes):
the layer's trainable parameters are inputs of the checkpoint node, so a segment whose input needs no
gradient (embeddings frozen under LoRA) still trains its adapters. ``use_reentrant=True`` -- torch's
default when the argument is left out, with its warning -- keeps torch's well-known pitfall: when
no tensor argument requires a gradient, the output requires none either, and the parameters inside
get no gradient ("None of the inputs have requires_grad=True"); ``model.enable_input_require_grads()``
is the usual cure.
"""
import warnings
from functools import partial

from .. import amp
from ..random import get_rng_state, set_rng_state
from ..tensor import Function, Tensor, enable_grad, is_grad_enabled, no_grad
from .module import Module

__all__ = ["checkpoint", "checkpoint_sequential"]


def checkpoint(function, *args, use_reentrant=None, context_fn=None, determinism_check="default",
               debug=False, early_stop=True, **kwargs):
    """``function(*args, **kwargs)`` -- a Tensor -- with its activations recomputed in backward
    instead of stored (``torch.utils.checkpoint.checkpoint``; see the module docstring for the two
    variants and ``preserve_rng_state``).

    ``function`` is a Module (its trainable parameters get their gradients) or a function of its
    tensor arguments only. Arguments that are not Tensors (arrays, None, numbers) are passed as they
    are. ``context_fn``, ``determinism_check``, ``debug`` and ``early_stop`` only accept their defaults.
    """
    use_reentrant = _reentrant(use_reentrant, "torch.utils.checkpoint")
    preserve = kwargs.pop("preserve_rng_state", True)
    if use_reentrant and kwargs:  # (torch's reentrant checkpoint takes no keyword arguments for fn)
        raise ValueError("Unexpected keyword arguments: " + ",".join(kwargs))
    if context_fn is not None or determinism_check != "default" or debug or not early_stop:
        raise NotImplementedError("checkpoint: context_fn, determinism_check, debug and early_stop "
                                  "only take their defaults in minilora")
    fn = partial(function, **kwargs) if kwargs else function
    inputs = list({id(a): a for a in args if isinstance(a, Tensor)}.values())  # each tensor once
    if use_reentrant and not any(t.requires_grad for t in inputs):
        warnings.warn("None of the inputs have requires_grad=True. Gradients will be None", UserWarning,
                      stacklevel=2)
        with no_grad():  # (torch's reentrant node: no input needs a gradient, so neither does the output)
            return fn(*args)
    params = [p for p in function.parameters() if p.requires_grad] if isinstance(function, Module) else []
    if not is_grad_enabled() or not any(t.requires_grad for t in inputs + params):
        return fn(*args)  # nothing to differentiate: nothing to save either
    return _Recompute.apply(*inputs, *params, fn=fn, args=args, n_inputs=len(inputs),
                            rng_state=get_rng_state() if preserve else None, region=amp.region_now())


def _reentrant(use_reentrant, name):
    """torch 2.13's default: left out, the reentrant variant, with its warning."""
    if use_reentrant is None:
        warnings.warn(f"{name}: the use_reentrant parameter should be passed explicitly. Starting in PyTorch "
                      f"2.9, calling checkpoint without use_reentrant will raise an exception. use_reentrant=False "
                      f"is recommended, but if you need to preserve the current default behavior, you can pass "
                      f"use_reentrant=True. Refer to docs for more details on the differences between the two "
                      f"variants.", UserWarning, stacklevel=3)
        return True
    return use_reentrant


def checkpoint_sequential(functions, segments, input, use_reentrant=None, **kwargs):
    """``torch.utils.checkpoint.checkpoint_sequential``: ``functions`` (a Sequential or a list)
    split into ``segments`` runs of ``len // segments`` layers, each checkpointed but the last,
    which runs as usual (its activations are needed at once)."""
    use_reentrant = _reentrant(use_reentrant, "torch.utils.checkpoint.checkpoint_sequential")
    preserve = kwargs.pop("preserve_rng_state", True)
    if kwargs:
        raise ValueError("Unexpected keyword arguments: " + ",".join(kwargs))
    from .layers import Sequential
    if isinstance(functions, Sequential):
        functions = list(functions.children())

    def run(start, end):
        def forward(x):
            for j in range(start, end + 1):
                x = functions[j](x)
            return x
        return forward

    size, end = len(functions) // segments, -1
    for start in range(0, size * (segments - 1), size):
        end = start + size - 1
        input = checkpoint(run(start, end), input, use_reentrant=use_reentrant, preserve_rng_state=preserve)
    return run(end + 1, len(functions) - 1)(input)


class _Recompute(Function):
    """The checkpoint node. Its inputs are the segment's tensor arguments and trainable parameters."""

    @staticmethod
    def forward(ctx, *arrays, fn, args, n_inputs, rng_state, region):
        with no_grad():
            out = fn(*args)
        if not isinstance(out, Tensor):
            raise TypeError(f"checkpoint: {fn!r} must return one Tensor, got {type(out).__name__}")
        ctx.segment, ctx.args, ctx.n_inputs, ctx.rng_state, ctx.region = fn, args, n_inputs, rng_state, region
        return out._array

    @staticmethod
    def backward(ctx, grad):
        tensors, params = ctx.inputs[:ctx.n_inputs], ctx.inputs[ctx.n_inputs:]
        needs = ctx.needs_input_grad
        # The inputs again, as leaves of a new graph; the parameters' gradients so far set aside, so
        # that what the second backward leaves in .grad is this segment's share alone.
        leaves = {id(t): Tensor._make(t._array, t._device, needs[i], None) for i, t in enumerate(tensors)}
        earlier = [p.grad for p in params]
        for p in params:
            p.grad = None
        now = get_rng_state() if ctx.rng_state is not None else None
        if now is not None:
            set_rng_state(ctx.rng_state)  # the same dropout masks as the first forward
        try:
            with enable_grad(), ctx.region:  # (in the forward's autocast region, as torch's checkpoint)
                out = ctx.segment(*[leaves.get(id(a), a) if isinstance(a, Tensor) else a for a in ctx.args])
            out.backward(grad)
            grads = [leaves[id(t)].grad for t in tensors] + [p.grad for p in params]
            grads = [None if g is None else g._array for g in grads]
        finally:
            if now is not None:
                set_rng_state(now)
            for p, g in zip(params, earlier):
                p.grad = g
        return tuple(grads)
