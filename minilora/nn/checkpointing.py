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

Second derivatives (``create_graph=True``) follow torch's variants too: the non-reentrant checkpoint runs the
segment again on its real inputs, recording, so gradient penalties and Hessian-vector products pass through
it; the reentrant one's inner backward records nothing (its gradients are constants), and it refuses to run
under ``autograd.grad`` or ``backward(inputs=...)`` at all, in torch's words.
"""
import warnings
from functools import partial

import numpy as np

from .. import amp
from ..random import get_rng_state, set_rng_state
from ..tensor import Function, Tensor, _mode, enable_grad, is_grad_enabled, no_grad
from .module import Module

__all__ = ["checkpoint", "checkpoint_sequential"]


def checkpoint(function, *args, use_reentrant=None, context_fn=None, determinism_check="default",
               debug=False, early_stop=True, **kwargs):
    """``function(*args, **kwargs)`` -- a Tensor, or a tuple holding them -- with its activations recomputed
    in backward instead of stored (``torch.utils.checkpoint.checkpoint``; see the module docstring for the two
    variants and ``preserve_rng_state``).

    ``function`` is a Module (its trainable parameters get their gradients) or any function: the tensors
    it closes over that require grad (a layer's weights in ``lambda h: layer(h, mask)``) are found in its
    first run, which records a graph that is dropped at once, and get their gradients too, from
    ``autograd.grad`` as from ``backward()``. Arguments that are not Tensors (arrays, None, numbers) are
    passed as they are. ``context_fn``, ``determinism_check``, ``debug`` and ``early_stop`` only accept
    their defaults.
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
    if not is_grad_enabled():
        return fn(*args)  # nothing to differentiate: nothing to save either
    rng_state, first = get_rng_state() if preserve else None, None
    if isinstance(function, Module):
        params = [p for p in function.parameters() if p.requires_grad]
    else:  # the leaves it closes over: from a recorded first run (its activations freed with its graph)
        first = fn(*args)
        params = _leaves_reached(_Outputs.tensors_in(first), inputs)
    if not any(t.requires_grad for t in inputs + params):
        return fn(*args) if first is None else first
    packing = []  # (_Recompute.forward leaves the _Outputs here: how to take its one array apart again)
    flat = _Recompute.apply(*inputs, *params, fn=fn, args=args, n_inputs=len(inputs), reentrant=use_reentrant,
                            rng_state=rng_state, region=amp.region_now(), packing=packing,
                            first=None if first is None else _Outputs.detached(first))
    return packing[0].unpack(flat)


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


class _Outputs:
    """A segment's outputs as the checkpoint node's one output array. One Tensor is that array; a tuple or list
    (a block that returns ``(hidden, attention)``, a tensor with a count or a name beside it, as torch's
    checkpoint takes; a list only without ``use_reentrant``, as torch) has its floating tensors packed end to end into one flat array, which ``unpack`` cuts
    back into views (the gradient reaches the node as one flat array, cut the same way by ``split``); the
    other items, and an output that is no Tensor at all, pass through as they are (no gradient, as in torch)."""

    def __init__(self, out, fn, reentrant):
        if isinstance(out, dict) and not reentrant:  # (torch's non-reentrant one differentiates through a dict)
            raise NotImplementedError(f"checkpoint: {fn!r} returns a dict; minilora's checkpoint differentiates "
                                      f"through a Tensor or a tuple or list of them (return a tuple)")
        # (torch's reentrant node is an autograd.Function: a tuple is its outputs, a list one opaque object)
        self.one = not (isinstance(out, tuple) or isinstance(out, list) and not reentrant)
        self.items = [out] if self.one else list(out)
        self.places = [i for i, item in enumerate(self.items) if isinstance(item, Tensor)
                       and (item.is_floating_point() or self.one)]
        kinds = {(self.items[i].dtype, self.items[i].device) for i in self.places}
        if len(kinds) > 1:
            raise NotImplementedError(f"checkpoint: {fn!r} returns floating tensors of several dtypes or devices "
                                      f"{sorted(map(str, kinds))}; minilora's checkpoint packs them into one array")
        self.shapes = [tuple(self.items[i].shape) for i in self.places]
        self.type = type(out)

    @staticmethod
    def tensors_in(out):
        return [t for t in (out if isinstance(out, (tuple, list)) else [out]) if isinstance(t, Tensor)]

    @staticmethod
    def detached(out):
        if isinstance(out, (tuple, list)):
            return type(out)(t.detach() if isinstance(t, Tensor) else t for t in out)
        return out.detach() if isinstance(out, Tensor) else out

    def flat(self):
        """The node's output array: the floating tensors' values end to end (none: an empty one)."""
        arrays = [self.items[i]._array for i in self.places]
        if self.one or not arrays:
            return arrays[0] if arrays else np.zeros(0, np.float32)
        return self.items[self.places[0]]._device.xp.concatenate([a.reshape(-1) for a in arrays])

    def split(self, flat):
        """``flat`` (an array or a Tensor: the node's output or its gradient) cut into one piece per tensor."""
        if self.one:
            return [flat] if self.places else []
        pieces, start = [], 0
        for shape in self.shapes:
            size = int(np.prod(shape, dtype=np.int64))
            pieces.append(flat[start:start + size].reshape(shape))
            start += size
        return pieces

    def unpack(self, flat):
        """What the caller gets: the items, the floating tensors now views of the node's output ``flat``."""
        items = list(self.items)
        if self.places:
            for place, piece in zip(self.places, self.split(flat)):
                items[place] = piece
        return items[0] if self.one else self.type(items)

    def rerun_tensors(self, out):
        """The floating tensors of a recomputed run, in packing order."""
        items = [out] if self.one else out
        return [items[i] for i in self.places]


class _Recompute(Function):
    """The checkpoint node. Its inputs are the segment's tensor arguments and trainable parameters (a
    Module's, or the leaves a function closes over)."""
    meta_gradients = False  # (on meta too, torch runs this backward: minilora/ops/meta.py)

    @staticmethod
    def forward(ctx, *arrays, fn, args, n_inputs, reentrant, rng_state, region, first, packing):
        if first is not None:  # (the function's recorded run already gave the output)
            out = first
        else:
            with no_grad():
                out = fn(*args)
        ctx.outputs = _Outputs(out, fn, reentrant)
        packing.append(ctx.outputs)
        ctx.segment, ctx.args, ctx.n_inputs, ctx.rng_state, ctx.region = fn, args, n_inputs, rng_state, region
        ctx.reentrant = reentrant
        return ctx.outputs.flat()

    @staticmethod
    def backward(ctx, grad):
        if ctx.reentrant and _mode.inputs_chosen:
            raise RuntimeError("When use_reentrant=True, torch.utils.checkpoint is incompatible with .grad() or "
                               "passing an `inputs` parameter to .backward(). To resolve this error, you can either "
                               "set use_reentrant=False, or call .backward() without passing the `inputs` argument.")
        tensors, params = ctx.inputs[:ctx.n_inputs], ctx.inputs[ctx.n_inputs:]
        needs = ctx.needs_input_grad
        # The inputs again, as leaves of a new graph; the parameters' gradients so far set aside, so
        # that what the second backward leaves in .grad is this segment's share alone.
        leaves = {id(t): Tensor._make(t._array, t._device, needs[i], None) for i, t in enumerate(tensors)}
        earlier = [p.grad for p in params]
        for p in params:
            p.grad = None
        try:
            out = _rerun(ctx, [leaves.get(id(a), a) if isinstance(a, Tensor) else a for a in ctx.args])
            outs, grads = _reached(ctx.outputs.rerun_tensors(out), ctx.outputs.split(grad))
            _autograd_backward(outs, [Tensor._make(g, t._device, False, None) for t, g in zip(outs, grads)])
            grads = [leaves[id(t)].grad for t in tensors] + [p.grad for p in params]
            grads = [None if g is None else g._array for g in grads]
        finally:
            for p, g in zip(params, earlier):
                p.grad = g
        return tuple(grads)

    @staticmethod
    def backward_graph(ctx, grad):
        """create_graph=True. Non-reentrant: the segment runs again on the inputs themselves (not detached
        copies), recording, and the recorded backward of that fresh graph from ``grad`` gives this node's
        gradients, in the graph: a second derivative goes through the segment's ops (torch's recomputed graph
        also hangs off the real inputs). Reentrant: torch's inner backward records nothing, so the gradients
        are the plain pass's, as constants."""
        if ctx.reentrant:
            return tuple(None if g is None else Tensor._make(g, grad._device, False, None)
                         for g in _Recompute.backward(ctx, grad._array))
        from ..autograd import grad as gradients_of
        outs, grads = _reached(ctx.outputs.rerun_tensors(_rerun(ctx, ctx.args)), ctx.outputs.split(grad))
        wanted = [t for t, need in zip(ctx.inputs, ctx.needs_input_grad) if need]
        found = iter(gradients_of(outs, wanted, grads, create_graph=True, allow_unused=True))
        return tuple(next(found) if need else None for need in ctx.needs_input_grad)


def _rerun(ctx, args):
    """The segment run again on ``args``, recording, with the first forward's random state (the same dropout
    masks) and in its autocast region, as torch's checkpoint; the random stream then goes on from where it was."""
    now = get_rng_state() if ctx.rng_state is not None else None
    if now is not None:
        set_rng_state(ctx.rng_state)
    try:
        with enable_grad(), ctx.region:
            return ctx.segment(*args)
    finally:
        if now is not None:
            set_rng_state(now)


def _autograd_backward(tensors, grad_tensors):
    from ..autograd import backward  # (autograd imports nn's neighbours: at call time)
    backward(tensors, grad_tensors)


def _reached(outs, grads):
    """The recomputed outputs that a gradient can flow through, with their gradients."""
    kept = [(t, g) for t, g in zip(outs, grads) if t.requires_grad]
    return [t for t, _ in kept], [g for _, g in kept]


def _leaves_reached(outs, inputs):
    """The leaves that require grad which the graphs of ``outs`` reach other than through ``inputs`` (what the
    segment's function closes over); the walk stops at the inputs, whose own graphs lie outside."""
    stop, seen, found = {id(t) for t in inputs}, set(), {}
    stack = [t._ctx for t in outs if t._ctx is not None and id(t) not in stop]  # (an input handed back: nothing inside)
    while stack:
        node = stack.pop()
        for x, parent in zip(node.inputs, node.parents):
            if not isinstance(x, Tensor) or id(x) in stop:
                continue
            if parent is None:
                if x.requires_grad:
                    found[id(x)] = x
            elif id(parent) not in seen:
                seen.add(id(parent))
                stack.append(parent)
    return list(found.values())
