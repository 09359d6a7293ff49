"""``DistributedDataParallel``: every rank trains the same model on its own slice of the batch.

    import minilora.distributed as dist
    from minilora.nn.parallel import DistributedDataParallel as DDP
    dist.init_process_group("mpi")
    model = DDP(get_peft_model(base, config))   # rank 0's parameters and buffers are broadcast to all
    loss = model(ids, labels=labels).loss       # this rank's micro-batch
    loss.backward()                             # ... and here the gradients are averaged over ranks
    optimizer.step()                            # the same step on every rank

After ``backward()`` each trainable parameter's gradient is the *mean* over the ranks, which is the
gradient of the mean loss over the global batch when every rank's batch has the same size. Only
**trainable** parameters take part: a LoRA model's frozen base never crosses the network, which is
why LoRA's data parallelism is cheap (Llama-2-7B, q/v at r=8: 4.2M numbers a step against 6.7B).

Gradients travel in *buckets*: the gradients are copied into one flat array per bucket, and each
bucket is one all-reduce -- one message per step for a LoRA model instead of one per tensor, which
is what keeps the per-message latency from dominating. A bucket is reduced as soon as all of its
gradients are ready (each parameter's ``register_post_accumulate_grad_hook`` marks it), buckets in
order. The buckets are torch's reducer's: the first iteration has one bucket per dtype and device
(parameters in registration order; with ``find_unused_parameters=True`` they are cut by size, in
reverse); the next forward rebuilds them in the order the gradients became ready on the group's
first rank, each closed once it reaches ``bucket_cap_mb`` MB (torch's default 25), the first one at
1 MiB when ``bucket_cap_mb`` is left out. A communication hook (``register_comm_hook``) sees them.

Construction starts every rank from rank 0's module, as torch's: every parameter (frozen ones too) and,
unless ``broadcast_buffers=False``, every buffer. Buffers (a Llama's rotary table; running statistics
elsewhere) are broadcast from rank 0 again before a forward when ``broadcast_buffers=True`` (torch's
default; torch 2.13's ``forward_sync_buffers`` says it for the forward alone), but, as torch's, only when
the forward before was one whose gradients are reduced (grad mode on, outside ``no_sync``), or the first.
``process_group=new_group(ranks)`` runs all of this within those ranks (their first rank is the source of
the weights and buffers).

``with model.no_sync():`` turns the communication off, so the gradients of several micro-batches
add up locally; the first backward outside it averages the accumulated sum.

A trainable parameter the forward does not use gets no gradient, so its bucket would never be
reduced: the next forward raises, as torch's. ``find_unused_parameters=True`` walks the autograd
graph of each forward's outputs and marks the parameters it does not reach as ready (their slot in
the bucket is its gradient from before, zeros without one: torch's reducer copies a defined gradient in);
buckets are then reduced in order, so ranks that used different parameters
still call the same all-reduces in the same order. A parameter no rank used keeps its gradient
(None stays None); one that some rank used gets the mean, as in torch.
"""
import contextlib
import inspect
import sys
import warnings

import numpy as np

from .. import distributed as dist
from .. import futures
from ..tensor import Tensor, is_grad_enabled, no_grad
from .module import Module

__all__ = ["DistributedDataParallel", "DataParallel"]

DEFAULT_BUCKET_CAP_MB = 25  # torch's


class DataParallel(Module):
    """torch's ``nn.DataParallel`` in one process: torch splits each batch over its visible GPUs and calls a
    replica per GPU; minilora computes on one device, so the wrapped module is called with the whole
    batch (torch's own behaviour with no GPU or one). The wrapper is torch's: ``.module``, and a
    ``state_dict`` under ``module.``. For several processes, ``DistributedDataParallel``."""

    def __init__(self, module, device_ids=None, output_device=None, dim=0):
        super().__init__()
        self.module, self.dim = module, dim
        self.device_ids = [] if device_ids is None else list(device_ids)
        self.output_device = output_device if output_device is not None else (
            self.device_ids[0] if self.device_ids else None)

    def forward(self, *inputs, **kwargs):
        return self.module(*inputs, **kwargs)


class DistributedDataParallel(Module):
    """torch.nn.parallel.DistributedDataParallel's arguments; ``module`` is the model to wrap."""

    def __init__(self, module, device_ids=None, output_device=None, dim=0, broadcast_buffers=None, init_sync=True,
                 process_group=None, bucket_cap_mb=None, find_unused_parameters=False, check_reduction=False,
                 gradient_as_bucket_view=False, static_graph=False, delay_all_reduce_named_params=None,
                 param_to_hook_all_reduce=None, mixed_precision=None, device_mesh=None,
                 skip_all_reduce_unused_params=False, bucket_cap_mb_list=None, batched_grad_copy=False,
                 forward_sync_buffers=None):
        # check_reduction (deprecated in torch), gradient_as_bucket_view, static_graph and batched_grad_copy are
        # torch's memory and speed options: the gradients are the same without them, so they are accepted as is
        # (static_graph, as torch's, also rebuilds the buckets when find_unused_parameters=True).
        super().__init__()
        _refuse_unsupported(delay_all_reduce_named_params=delay_all_reduce_named_params,
                            param_to_hook_all_reduce=param_to_hook_all_reduce, mixed_precision=mixed_precision,
                            device_mesh=device_mesh, skip_all_reduce_unused_params=skip_all_reduce_unused_params,
                            bucket_cap_mb_list=bucket_cap_mb_list)
        if not dist.is_initialized():
            raise ValueError("DistributedDataParallel: Default process group has not been initialized, please "
                             "make sure to call init_process_group.")
        if process_group == dist.GroupMember.NON_GROUP_MEMBER:
            raise ValueError("DistributedDataParallel: this rank is not part of process_group (new_group left it "
                             "out): only the group's ranks wrap the model")
        if dim != 0:
            raise ValueError(f"DistributedDataParallel: batches are split along dim 0 only, got dim={dim}")
        self.module, self.find_unused_parameters = module, find_unused_parameters
        self.device_ids, self.output_device = device_ids, output_device
        self.broadcast_buffers, self.forward_sync_buffers, init_sync_buffers = _buffer_sync(broadcast_buffers,
                                                                                            forward_sync_buffers)
        self.process_group = process_group  # None: the default group
        self.gradient_as_bucket_view, self.static_graph = gradient_as_bucket_view, static_graph
        self.bucket_cap_mb = DEFAULT_BUCKET_CAP_MB if bucket_cap_mb is None else bucket_cap_mb
        named = [(name, p) for name, p in module.named_parameters() if p.requires_grad]
        if not named:
            raise RuntimeError("DistributedDataParallel is not needed when a module doesn't have any "
                               "parameter that requires a gradient.")
        cap = int(self.bucket_cap_mb * 2 ** 20)
        first = dist._DEFAULT_FIRST_BUCKET_BYTES if bucket_cap_mb is None else cap
        object.__setattr__(self, "_named", named)
        object.__setattr__(self, "_index_of", {id(p): i for i, (_, p) in enumerate(named)})
        object.__setattr__(self, "_bucket_limits", [first, cap] if first < cap else [cap])
        # torch's reducer: a first iteration's ready order is unknown, so one bucket (per dtype and device)
        # unless unused parameters are looked for; the buckets are rebuilt after it in the ready order.
        rebuilds = static_graph or not find_unused_parameters
        initial = _assign_buckets([p for _, p in named], [sys.maxsize] if rebuilds else self._bucket_limits)
        self._set_buckets(list(reversed(initial)))
        object.__setattr__(self, "_ready_order", [] if rebuilds else None)  # None: no rebuild (any more)
        object.__setattr__(self, "_torch_order", {})  # id(parameter) -> when torch's engine has its gradient
        object.__setattr__(self, "_comm_hook", None)
        object.__setattr__(self, "_pending_hooks", [])
        object.__setattr__(self, "_require_sync", True)
        # torch's require_forward_param_sync: buffers are synced before a forward only when the forward before it
        # was one whose gradients are reduced (grad mode on, outside no_sync), or at the first forward
        object.__setattr__(self, "_sync_next_forward", True)
        object.__setattr__(self, "_next_bucket", 0)  # buckets are reduced in order: the same calls on every rank
        object.__setattr__(self, "_source", dist.get_global_rank(dist.group.WORLD if process_group is None
                                                                 else process_group, 0))  # the group's rank 0
        if init_sync:
            self._sync_module_states(init_sync_buffers)
        object.__setattr__(self, "_handles", [p.register_post_accumulate_grad_hook(self._grad_ready)
                                              for _, p in named])

    def _set_buckets(self, assignment):
        """``assignment``: lists of indices into the trainable parameters, in reduction order."""
        buckets = [_Bucket([self._named[i] for i in indices]) for indices in assignment]
        object.__setattr__(self, "_buckets", buckets)
        object.__setattr__(self, "_bucket_of", {id(p): b for b in buckets for _, p in b.params})

    def _rebuild_buckets(self):
        """After the first synchronised backward, as torch's reducer: the buckets follow the order the
        gradients became ready on the group's first rank (broadcast, so every rank cuts the same)."""
        # minilora calls the post-accumulate hooks once the backward is done, in registration order; the
        # order torch's engine finishes the gradients in was read off the forward's graph (_torch_ready_order)
        last = len(self._torch_order)
        order = [sorted(self._ready_order, key=lambda i: self._torch_order.get(id(self._named[i][1]), last))]
        dist.broadcast_object_list(order, src=self._source, group=self.process_group)
        order = order[0]
        if sorted(order) != list(range(len(self._named))):  # some never got a gradient: keep the buckets
            self._ready_order.clear()
            return
        assignment = _assign_buckets([self._named[i][1] for i in order], self._bucket_limits, sort=False)
        self._set_buckets([[order[j] for j in indices] for indices in assignment])
        object.__setattr__(self, "_ready_order", None)

    @property
    def buckets(self):
        """The parameter names of each bucket, in the order they are reduced (a hook's ``bucket.index()``):
        torch's reducer's buckets, one for the first iteration, rebuilt at the forward after it."""
        return [[name for name, _ in bucket.params] for bucket in self._buckets]

    def register_comm_hook(self, state, hook):
        """torch's: ``hook(state, bucket)`` is called when a bucket's gradients are all ready, with a
        ``dist.GradBucket`` (its flat ``buffer()``, not divided by the world size) and returns a Future of
        the bucket's new flat gradients, which DDP copies into the parameters' ``.grad`` (cast to their
        dtype) once the backward's last bucket is in. Once only, as torch's."""
        _check_comm_hook(hook, self.process_group)
        if self._comm_hook is not None:
            raise RuntimeError("register_comm_hook or register_builtin_comm_hook can only be called once.")
        object.__setattr__(self, "_comm_hook", (hook, state))

    def _register_builtin_comm_hook(self, comm_hook_type):
        """torch's: one of its C++ hooks by name (``dist.BuiltinCommHookType``), on DDP's own process group;
        each computes as the Python hook of the same name. Once only, with ``register_comm_hook`` counted."""
        from ..distributed.algorithms.ddp_comm_hooks import default_hooks
        if not isinstance(comm_hook_type, dist.BuiltinCommHookType):
            raise TypeError(f"_register_builtin_comm_hook(): incompatible function arguments: comm_hook_type must "
                            f"be a dist.BuiltinCommHookType, got {type(comm_hook_type).__name__}")
        if self._comm_hook is not None:
            raise RuntimeError("register_comm_hook or register_builtin_comm_hook can only be called once.")
        hook = {dist.BuiltinCommHookType.ALLREDUCE: default_hooks.allreduce_hook,
                dist.BuiltinCommHookType.FP16_COMPRESS: default_hooks.fp16_compress_hook}[comm_hook_type]
        object.__setattr__(self, "_comm_hook", (hook, self.process_group))

    def forward(self, *args, **kwargs):
        unfinished = [b for b in self._buckets if b.ready]
        if unfinished:
            missing = [name for b in unfinished for name, p in b.params if p not in b.ready]
            raise RuntimeError(
                "DistributedDataParallel: Expected to have finished reduction in the prior iteration before "
                f"starting a new one: these trainable parameters got no gradient in the last backward: "
                f"{missing[:5]}{'...' if len(missing) > 5 else ''}. Freeze them, make the forward use them, or "
                "pass find_unused_parameters=True to DistributedDataParallel.")
        if self._ready_order and is_grad_enabled():
            self._rebuild_buckets()
        if self.forward_sync_buffers and self._sync_next_forward:  # buffers (running statistics) follow rank 0's
            with no_grad():
                for _, buffer in self.module.named_buffers():
                    dist.broadcast(buffer, src=self._source, group=self.process_group)
        output = self.module(*args, **kwargs)
        object.__setattr__(self, "_sync_next_forward", self._require_sync and is_grad_enabled())
        if self._ready_order is not None and self._require_sync and is_grad_enabled():
            object.__setattr__(self, "_torch_order", _torch_ready_order(output))
        if self.find_unused_parameters and self._require_sync and is_grad_enabled():
            self._mark_unused(_reachable_leaves(output))
        return output

    def _mark_unused(self, used):
        """The parameters the outputs' graph does not reach are ready now: their gradient is zeros
        in the bucket (a bucket of unused ones alone is reduced at once, in its turn)."""
        for bucket in self._buckets:
            bucket.unused = {p for _, p in bucket.params if id(p) not in used}
            bucket.ready |= bucket.unused
        self._reduce_ready_buckets()

    @contextlib.contextmanager
    def no_sync(self):
        """Inside, backward keeps the gradients on this rank (they accumulate); the first backward
        after it all-reduces the accumulated gradients."""
        before = self._require_sync
        object.__setattr__(self, "_require_sync", False)
        try:
            yield
        finally:
            object.__setattr__(self, "_require_sync", before)

    def _sync_module_states(self, buffers):
        """Every rank starts from rank 0's module, as torch's ``_sync_module_states``: every parameter, frozen
        ones included (the LoRA A matrices were drawn with each rank's own random state; a frozen layer made
        at random differs too), and, with ``buffers``, every buffer."""
        states = [p for _, p in self.module.named_parameters()]
        if buffers:
            states += [b for _, b in self.module.named_buffers()]
        with no_grad():
            for tensor in states:
                dist.broadcast(tensor, src=self._source, group=self.process_group)

    def _grad_ready(self, param):
        if not self._require_sync:
            return
        if self._ready_order is not None:  # the first synchronised backward: its order rebuilds the buckets
            self._ready_order.append(self._index_of[id(param)])
        self._bucket_of[id(param)].ready.add(param)
        self._reduce_ready_buckets()

    def _reduce_ready_buckets(self):
        """Reduce the buckets whose gradients are all ready, in bucket order (a ready bucket waits
        for the ones before it)."""
        while self._next_bucket < len(self._buckets):
            bucket = self._buckets[self._next_bucket]
            if len(bucket.ready) < len(bucket.params):
                return
            self._reduce(bucket)
            object.__setattr__(self, "_next_bucket", self._next_bucket + 1)
        object.__setattr__(self, "_next_bucket", 0)  # every bucket done: the next backward starts over
        self._finish_hooks()

    def _reduce(self, bucket):
        """One all-reduce for the whole bucket: each gradient becomes the mean over the ranks."""
        params = [p for _, p in bucket.params]
        if self._comm_hook is not None:
            return self._run_comm_hook(bucket, params)
        if self.find_unused_parameters:  # on every rank, even one that used them all: the same calls
            return self._reduce_with_unused(bucket, params)
        flat = self._prescaled(bucket.flatten([p.grad._array for p in params]))
        dist.all_reduce(flat, group=self.process_group)
        bucket.unflatten(flat, [p.grad for p in params])
        bucket.ready.clear()

    def _prescaled(self, flat):
        """``flat`` times 1/world size, before the sum, as torch's reducer copies a gradient into its bucket
        (``mul_out(bucket_view, grad, 1. / div_factor)``: the factor in the gradients' dtype's op math, so
        with 3 ranks each gradient is rounded by 0.33333334f first; summing then dividing rounds otherwise)."""
        with no_grad():
            return flat.mul_(1.0 / dist.get_world_size(self.process_group))

    def _run_comm_hook(self, bucket, params):
        """Hand the hook the bucket's undivided gradients (zeros for a locally unused parameter); its
        Future is waited for when the last bucket has been handed over, as torch's finalize_backward."""
        xp = params[0].device.xp
        unused = bucket.unused if self.find_unused_parameters else set()
        flat = bucket.flatten([_bucket_gradient(p, xp) for p in params])
        used = [True] * len(params)
        if self.find_unused_parameters:
            used = self._used_anywhere(params, unused)
        index = self._buckets.index(bucket)
        grad_bucket = dist.GradBucket(index, flat, params, index == len(self._buckets) - 1)
        hook, state = self._comm_hook
        self._pending_hooks.append((grad_bucket, params, used, hook(state, grad_bucket)))
        bucket.ready.clear()
        bucket.unused = set()

    def _finish_hooks(self):
        pending, self._pending_hooks[:] = list(self._pending_hooks), []
        for grad_bucket, params, used, future in pending:
            _write_hook_result(grad_bucket, params, used, future)

    def _used_anywhere(self, params, unused):
        """Which parameters some rank used (a MAX all-reduce of this rank's flags)."""
        xp = params[0].device.xp
        flags = Tensor._make(xp.asarray([float(p not in unused) for p in params]), params[0].device, False, None)
        dist.all_reduce(flags, op=dist.ReduceOp.MAX, group=self.process_group)
        return [bool(flag) for flag in flags.tolist()]

    def _reduce_with_unused(self, bucket, params):
        """Unused parameters add zeros; a second, tiny all-reduce tells which ones some rank used:
        those get the mean, the others keep their gradient (torch's "globally unused")."""
        xp = params[0].device.xp
        flat = bucket.flatten([_bucket_gradient(p, xp) for p in params])
        used = Tensor._make(xp.asarray([float(p not in bucket.unused) for p in params]), params[0].device, False, None)
        dist.all_reduce(self._prescaled(flat), group=self.process_group)
        dist.all_reduce(used, op=dist.ReduceOp.MAX, group=self.process_group)
        offset = 0
        for p, used_somewhere in zip(params, used.tolist()):
            n = p._array.size
            if used_somewhere:
                if p.grad is None:
                    p.grad = Tensor._make(xp.zeros_like(p._array), p.device, False, None)
                p.grad._array[...] = flat._array[offset:offset + n].reshape(p._array.shape)
                p.grad._bump_version()
            offset += n
        bucket.ready.clear()
        bucket.unused = set()


def _bucket_gradient(param, xp):
    """What a parameter puts in its bucket: its gradient, or zeros without one. A parameter this rank did not
    use in the forward keeps the gradient it has (one accumulated before), and torch's reducer copies that in
    as it is: only an undefined gradient counts as zeros."""
    return xp.zeros_like(param._array) if param.grad is None else param.grad._array


def _buffer_sync(broadcast_buffers, forward_sync_buffers):
    """(broadcast_buffers, whether buffers are synced before a forward, whether at construction): torch 2.13's
    rules. ``forward_sync_buffers`` (new) decides the forward and leaves the construction's sync on; the
    deprecated ``broadcast_buffers`` decides both, with torch's FutureWarning when given."""
    if broadcast_buffers is not None:
        if forward_sync_buffers is not None:
            warnings.warn("Both `broadcast_buffers` and `forward_sync_buffers` were specified. `broadcast_buffers` "
                          "is deprecated and its value is ignored when `forward_sync_buffers` is provided.",
                          FutureWarning, stacklevel=3)
        else:
            warnings.warn("`broadcast_buffers` is deprecated. Use `forward_sync_buffers` instead. IMPORTANT: unlike "
                          "`broadcast_buffers=False`, `forward_sync_buffers=False` still syncs buffers at init. If "
                          "you rely on buffers NOT being synced at init (e.g. rank-local buffers), keep using "
                          "`broadcast_buffers=False` until `init_sync_buffers` is available.", FutureWarning,
                          stacklevel=3)
    if forward_sync_buffers is not None:
        return bool(forward_sync_buffers), bool(forward_sync_buffers), True
    sync = True if broadcast_buffers is None else bool(broadcast_buffers)
    return sync, sync, sync


def _refuse_unsupported(**options):
    """torch 2.13's DDP options that change what is computed, which minilora's DDP does not implement: refused
    by name rather than ignored (the defaults pass)."""
    for name, value in options.items():
        if value not in (None, False):
            raise NotImplementedError(f"DistributedDataParallel: {name}={value!r} is not supported by minilora's "
                                      "DistributedDataParallel")


class _Bucket:
    """Parameters of one device and dtype whose gradients travel as one flat array."""

    def __init__(self, params):
        self.params, self.ready, self.unused = params, set(), set()

    def flatten(self, arrays):
        xp = self.params[0][1].device.xp
        flat = xp.concatenate([a.reshape(-1) for a in arrays])
        return Tensor._make(flat, self.params[0][1].device, False, None)

    @staticmethod
    def unflatten(flat, tensors):
        """Write the pieces of ``flat`` back into ``tensors`` in place (their version goes up)."""
        offset = 0
        for t in tensors:
            n = t._array.size
            t._array[...] = flat._array[offset:offset + n].reshape(t._array.shape)
            t._bump_version()
            offset += n


def _reachable_leaves(output):
    """The ids of the leaf tensors the autograd graph of ``output`` (tensors, possibly inside lists,
    tuples, dicts or a model-output object) reaches: the parameters this forward used."""
    return _walk_graph(output)[0]


def _torch_ready_order(output):
    """``{id(leaf): rank}``: the order torch's engine has the leaves' gradients in a backward from
    ``output``. Its engine runs the nodes latest made first (minilora's too: ``ctx.seq``) and a leaf's
    gradient is accumulated as soon as the last node that uses it has run; inside one minilora node
    the leaves come in the order of torch's own nodes for that call (``torch_graph``: Linear's bias at
    addmm, then its weight at ``weight.t()``'s node; PEFT's lora_B before lora_A)."""
    _, nodes = _walk_graph(output)
    position, step = {}, 0
    for node in sorted(nodes, key=lambda ctx: ctx.seq, reverse=True):
        for leaf in _leaves_in_torch_order(node):
            position.pop(id(leaf), None)  # a later user: the gradient is complete only then
            position[id(leaf)] = step
            step += 1
    return {key: rank for rank, key in enumerate(sorted(position, key=position.get))}


def _leaves_in_torch_order(node):
    graph = getattr(node, "torch_graph", None)
    if graph is None:
        return [x for x, parent in zip(node.inputs, node.parents)
                if parent is None and isinstance(x, Tensor) and x.requires_grad]
    runs = []  # the leaves each of torch's nodes for this call takes, in the order the nodes were made

    def visit(children):
        leaves = []
        for child in children:
            if isinstance(child, tuple) and child and isinstance(child[0], str):
                visit(child[1:])  # a node torch makes before this one (weight.t() before addmm)
            elif isinstance(child, Tensor) and child._ctx is None and child.requires_grad:
                leaves.append(child)
        runs.append(leaves)
    visit(graph)
    return [leaf for leaves in reversed(runs) for leaf in leaves]


def _walk_graph(output):
    """The ids of the leaves the graph of ``output`` reaches, and its nodes."""
    leaves, seen, nodes, visited = set(), set(), [], []
    pending = [output]
    while pending:  # the tensors inside the output structure
        item = pending.pop()
        if isinstance(item, Tensor):
            if item._ctx is not None:
                nodes.append(item._ctx)
            elif item.requires_grad:
                leaves.add(id(item))
        elif isinstance(item, (list, tuple)):
            pending.extend(item)
        elif isinstance(item, dict):
            pending.extend(item.values())
        elif hasattr(item, "__dict__") and not isinstance(item, type):
            pending.extend(vars(item).values())
    while nodes:  # the graph behind them
        node = nodes.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        visited.append(node)
        for x, parent in zip(node.inputs, node.parents):
            if parent is not None:
                nodes.append(parent)
            elif isinstance(x, Tensor) and x.requires_grad:
                leaves.add(id(x))
    return leaves, visited


def _check_comm_hook(hook, process_group):
    """torch's checks, in its words: a callable whose ``bucket`` and return annotations, when given, are
    ``dist.GradBucket`` and ``futures.Future[Tensor]``; the bfloat16 hooks only where NCCL runs."""
    if not callable(hook):
        raise TypeError("Communication hook must be callable.")
    sig = inspect.signature(hook)
    if "bucket" not in sig.parameters:  # torch looks the parameter up by this name (a KeyError there)
        raise KeyError("bucket: a communication hook's second parameter must be named 'bucket', "
                       "as torch's signature check reads it (hook(state, bucket))")
    annotation = sig.parameters["bucket"].annotation
    if annotation is not inspect.Parameter.empty and annotation != dist.GradBucket:
        raise ValueError("Communication hook: bucket annotation should be dist.GradBucket.")
    if sig.return_annotation is not inspect.Signature.empty and \
            sig.return_annotation != futures.Future[Tensor]:
        raise ValueError("Communication hook: return annotation should be torch.futures.Future[torch.Tensor].")
    if hook.__name__ in ("bf16_compress_hook", "bf16_compress_wrapper_hook") and \
            dist.get_backend(process_group) != "nccl":
        raise TypeError("BF16 all reduce communication hook required CUDA 11+ and NCCL 2.10+ or XPU and XCCL")


def _write_hook_result(grad_bucket, params, used, future):
    """The Future's flat tensor, cast to each gradient's dtype, into the gradients of the parameters
    some rank used."""
    result = future.wait()
    if not isinstance(result, Tensor):
        raise RuntimeError(f"DistributedDataParallel: a communication hook's Future must hold one Tensor (the "
                           f"bucket's new flat gradients), got {type(result).__name__}")
    if result.numel() != grad_bucket.buffer().numel():
        raise RuntimeError(f"DistributedDataParallel: the communication hook returned {result.numel()} numbers "
                           f"for bucket {grad_bucket.index()} of {grad_bucket.buffer().numel()}")
    flat, offset = result._array.reshape(-1), 0
    for p, used_somewhere in zip(params, used):
        n = p._array.size
        if used_somewhere:
            if p.grad is None:
                p.grad = Tensor._make(p.device.xp.zeros_like(p._array), p.device, False, None)
            p.grad._array[...] = flat[offset:offset + n].reshape(p._array.shape).astype(p.grad._array.dtype)
            p.grad._bump_version()
        offset += n


def _assign_buckets(params, limits, sort=True):
    """torch's ``compute_bucket_assignment_by_size``: walk ``params`` in order, one open bucket per
    (device, dtype), closed once its bytes reach the current limit (the next limit then applies to that
    kind, the last one for good). Lists of indices into ``params``; ``sort``: by their first index, as
    torch orders an assignment made from registration order (a rebuilt one keeps the ready order)."""
    closed, open_buckets, limit_at = [], {}, {}
    for index, p in enumerate(params):
        kind = (str(p.device), np.dtype(p.dtype))
        indices, size = open_buckets.get(kind, ([], 0))
        indices.append(index)
        size += p._array.size * np.dtype(p.dtype).itemsize
        at = limit_at.setdefault(kind, 0)
        if size >= limits[at]:
            closed.append(indices)
            open_buckets.pop(kind, None)
            limit_at[kind] = min(at + 1, len(limits) - 1)
        else:
            open_buckets[kind] = (indices, size)
    # the open ones follow, in the order torch's std::unordered_map of kinds iterates: the kind met last
    # first (libstdc++ puts a key landing in an empty hash bucket at the front of its list)
    first_met = list(limit_at)
    closed.extend(open_buckets[kind][0] for kind in reversed(first_met) if kind in open_buckets)
    return sorted(closed, key=min) if sort else closed

