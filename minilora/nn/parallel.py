"""``DistributedDataParallel``: every rank trains the same model on its own slice of the batch.

    import minilora.distributed as dist
    from minilora.nn.parallel import DistributedDataParallel as DDP
    dist.init_process_group("mpi")
    model = DDP(get_peft_model(base, config))   # rank 0's trainable weights are broadcast to all
    loss = model(ids, labels=labels).loss       # this rank's micro-batch
    loss.backward()                             # ... and here the gradients are averaged over ranks
    optimizer.step()                            # the same step on every rank

After ``backward()`` each trainable parameter's gradient is the *mean* over the ranks, which is the
gradient of the mean loss over the global batch when every rank's batch has the same size. Only
**trainable** parameters take part: a LoRA model's frozen base never crosses the network, which is
why LoRA's data parallelism is cheap (Llama-2-7B, q/v at r=8: 4.2M numbers a step against 6.7B).

Gradients travel in *buckets*: the gradients are copied into one flat array per bucket (up to
``bucket_cap_mb`` MB, torch's default 25), and each bucket is one all-reduce -- one message per
step for a LoRA model instead of one per tensor, which is what keeps the per-message latency from
dominating. A bucket is reduced as soon as all of its gradients are ready (each parameter's
``register_post_accumulate_grad_hook`` marks it). Parameters are bucketed in reverse order, as
torch does: backward produces the last layers' gradients first.

Buffers (none in a Llama; running statistics elsewhere) are broadcast from rank 0 at each forward
when ``broadcast_buffers=True``, torch's default. ``process_group=new_group(ranks)`` runs all of
this within those ranks (their first rank is the source of the weights and buffers).

``with model.no_sync():`` turns the communication off, so the gradients of several micro-batches
add up locally; the first backward outside it averages the accumulated sum.

A trainable parameter the forward does not use gets no gradient, so its bucket would never be
reduced: the next forward raises, as torch's. ``find_unused_parameters=True`` walks the autograd
graph of each forward's outputs and marks the parameters it does not reach as ready (their slot in
the bucket is zeros); buckets are then reduced in order, so ranks that used different parameters
still call the same all-reduces in the same order. A parameter no rank used keeps its gradient
(None stays None); one that some rank used gets the mean, as in torch.
"""
import contextlib

import numpy as np

from .. import distributed as dist
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
                 gradient_as_bucket_view=False, static_graph=False):
        # check_reduction (deprecated in torch), gradient_as_bucket_view and static_graph are torch's
        # memory and speed options: the gradients are the same without them, so they are accepted as is.
        super().__init__()
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
        self.broadcast_buffers = True if broadcast_buffers is None else broadcast_buffers
        self.process_group = process_group  # None: the default group
        self.gradient_as_bucket_view, self.static_graph = gradient_as_bucket_view, static_graph
        self.bucket_cap_mb = DEFAULT_BUCKET_CAP_MB if bucket_cap_mb is None else bucket_cap_mb
        named = [(name, p) for name, p in module.named_parameters() if p.requires_grad]
        if not named:
            raise RuntimeError("DistributedDataParallel is not needed when a module doesn't have any "
                               "parameter that requires a gradient.")
        object.__setattr__(self, "_buckets", _make_buckets(named, self.bucket_cap_mb * 2 ** 20))
        object.__setattr__(self, "_bucket_of", {id(p): b for b in self._buckets for _, p in b.params})
        object.__setattr__(self, "_require_sync", True)
        object.__setattr__(self, "_next_bucket", 0)  # buckets are reduced in order: the same calls on every rank
        object.__setattr__(self, "_source", dist.get_global_rank(dist.group.WORLD if process_group is None
                                                                 else process_group, 0))  # the group's rank 0
        if init_sync:
            self._broadcast_parameters()
        object.__setattr__(self, "_handles", [p.register_post_accumulate_grad_hook(self._grad_ready)
                                              for bucket in self._buckets for _, p in bucket.params])

    @property
    def buckets(self):
        """The parameter names of each bucket, in the order they are reduced (minilora's own view: torch's
        reducer puts every parameter in one bucket for the first iteration, then rebuilds them in the order
        the gradients came, the first capped at ``dist._DEFAULT_FIRST_BUCKET_BYTES``, 1 MiB, when
        ``bucket_cap_mb`` is left out; the averaged gradients are the same numbers whichever way they are cut)."""
        return [[name for name, _ in bucket.params] for bucket in self._buckets]

    def register_comm_hook(self, state, hook):
        """torch's communication hooks receive torch's buckets (``GradBucket.index()``, ``buffer()``,
        ``parameters()``); minilora's are cut otherwise (see ``buckets``), so a hook would see other buckets:
        refused by name rather than handed them."""
        raise NotImplementedError(
            "DistributedDataParallel.register_comm_hook: minilora's buckets are not torch's (25 MiB from the "
            "first iteration on, where torch's reducer starts with one bucket and rebuilds them after it, the "
            "first capped at 1 MiB), so a hook would see other GradBucket indices and buffers; compress or "
            "change gradients in a post-accumulate-grad hook or before optimizer.step() instead")

    def forward(self, *args, **kwargs):
        unfinished = [b for b in self._buckets if b.ready]
        if unfinished:
            missing = [name for b in unfinished for name, p in b.params if p not in b.ready]
            raise RuntimeError(
                "DistributedDataParallel: Expected to have finished reduction in the prior iteration before "
                f"starting a new one: these trainable parameters got no gradient in the last backward: "
                f"{missing[:5]}{'...' if len(missing) > 5 else ''}. Freeze them, make the forward use them, or "
                "pass find_unused_parameters=True to DistributedDataParallel.")
        if self.broadcast_buffers:  # torch's default: buffers (e.g. running statistics) follow rank 0's
            with no_grad():
                for _, buffer in self.module.named_buffers():
                    dist.broadcast(buffer, src=self._source, group=self.process_group)
        output = self.module(*args, **kwargs)
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

    def _broadcast_parameters(self):
        """Every rank starts from rank 0's trainable weights (e.g. the LoRA A matrices were drawn
        with each rank's own random state). Frozen weights are loaded from the same files and stay."""
        with no_grad():
            for bucket in self._buckets:
                flat = bucket.flatten([p._array for _, p in bucket.params])
                dist.broadcast(flat, src=self._source, group=self.process_group)
                bucket.unflatten(flat, [p for _, p in bucket.params])

    def _grad_ready(self, param):
        if not self._require_sync:
            return
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

    def _reduce(self, bucket):
        """One all-reduce for the whole bucket, then each gradient becomes the mean over the ranks."""
        params = [p for _, p in bucket.params]
        if self.find_unused_parameters:  # on every rank, even one that used them all: the same calls
            return self._reduce_with_unused(bucket, params)
        flat = bucket.flatten([p.grad._array for p in params])
        dist.all_reduce(flat, group=self.process_group)
        flat._array /= dist.get_world_size(self.process_group)
        bucket.unflatten(flat, [p.grad for p in params])
        bucket.ready.clear()

    def _reduce_with_unused(self, bucket, params):
        """Unused parameters add zeros; a second, tiny all-reduce tells which ones some rank used:
        those get the mean, the others keep their gradient (torch's "globally unused")."""
        xp = params[0].device.xp
        flat = bucket.flatten([xp.zeros_like(p._array) if p in bucket.unused else p.grad._array for p in params])
        used = Tensor._make(xp.asarray([float(p not in bucket.unused) for p in params]), params[0].device, False, None)
        dist.all_reduce(flat, group=self.process_group)
        dist.all_reduce(used, op=dist.ReduceOp.MAX, group=self.process_group)
        flat._array /= dist.get_world_size(self.process_group)
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
    leaves, seen, nodes = set(), set(), []
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
        for x, parent in zip(node.inputs, node.parents):
            if parent is not None:
                nodes.append(parent)
            elif isinstance(x, Tensor) and x.requires_grad:
                leaves.add(id(x))
    return leaves


def _make_buckets(named, cap_bytes):
    """Reverse registration order, cut when a bucket would pass ``cap_bytes`` or the device/dtype
    changes (a flat array has one of each)."""
    buckets, current, size = [], [], 0
    for name, p in reversed(named):
        nbytes = p._array.size * np.dtype(p.dtype).itemsize
        kind = (str(p.device), np.dtype(p.dtype))
        if current and (size + nbytes > cap_bytes or kind != current_kind):
            buckets.append(_Bucket(current))
            current, size = [], 0
        current.append((name, p))
        current_kind = kind
        size += nbytes
    buckets.append(_Bucket(current))
    return buckets
