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
and restored around the second; and it runs in the forward's autocast region (``minilora.autocast``).
The layer's trainable parameters are inputs of the checkpoint node, so a segment whose input needs
no gradient (embeddings frozen under LoRA) still trains its adapters: no
``enable_input_require_grads()`` is needed, unlike PyTorch's reentrant checkpoint.
"""
from functools import partial

from .. import amp
from ..random import get_rng_state, set_rng_state
from ..tensor import Function, Tensor, enable_grad, is_grad_enabled, no_grad
from .module import Module

__all__ = ["checkpoint"]


def checkpoint(function, *args, use_reentrant=None, context_fn=None, determinism_check="default",
               debug=False, early_stop=True, **kwargs):
    """``function(*args, **kwargs)`` -- a Tensor -- with its activations recomputed in backward
    instead of stored (``torch.utils.checkpoint.checkpoint``).

    ``function`` is a Module (its trainable parameters get their gradients) or a function of its
    tensor arguments only. Arguments that are not Tensors (arrays, None, numbers) are passed as they
    are. This is torch's non-reentrant checkpoint: ``use_reentrant=False`` (or None) is accepted;
    ``use_reentrant=True`` raises, since the reentrant variant's behaviour (no gradient for the
    parameters when no input requires one) is not reproduced. ``context_fn``, ``determinism_check``,
    ``debug`` and ``early_stop`` only accept their defaults.
    """
    if use_reentrant:
        raise NotImplementedError("checkpoint: use_reentrant=True is not supported by minilora; its "
                                  "checkpoint is torch's non-reentrant one: pass use_reentrant=False")
    if context_fn is not None or determinism_check != "default" or debug or not early_stop:
        raise NotImplementedError("checkpoint: context_fn, determinism_check, debug and early_stop "
                                  "only take their defaults in minilora")
    fn = partial(function, **kwargs) if kwargs else function
    inputs = list({id(a): a for a in args if isinstance(a, Tensor)}.values())  # each tensor once
    params = [p for p in function.parameters() if p.requires_grad] if isinstance(function, Module) else []
    if not is_grad_enabled() or not any(t.requires_grad for t in inputs + params):
        return fn(*args)  # nothing to differentiate: nothing to save either
    return _Recompute.apply(*inputs, *params, fn=fn, args=args, n_inputs=len(inputs), rng_state=get_rng_state(),
                            region=amp.region_now())


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
        now = get_rng_state()
        set_rng_state(ctx.rng_state)  # the same dropout masks as the first forward
        try:
            with enable_grad(), ctx.region:  # (in the forward's autocast region, as torch's checkpoint)
                out = ctx.segment(*[leaves.get(id(a), a) if isinstance(a, Tensor) else a for a in ctx.args])
            out.backward(grad)
            grads = [leaves[id(t)].grad for t in tensors] + [p.grad for p in params]
            grads = [None if g is None else g._array for g in grads]
        finally:
            set_rng_state(now)
            for p, g in zip(params, earlier):
                p.grad = g
        return tuple(grads)
