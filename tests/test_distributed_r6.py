"""torch.distributed's collectives side by side with torch's own (backend "gloo" on CPU).

ONE ``mpirun -n 3`` runs this file's worker (the bottom half): each rank joins minilora's MPI
group *and* a torch gloo group (rendezvous in a file), runs every case of ``CASES`` with
``torch.distributed`` and then with ``minilora.distributed`` on the same inputs, and saves both
results; the tests compare them case by case and rank by rank (values, dtypes, shapes, the type
of the error when torch refuses). Cases whose check happens on one rank only (gather_list on a
non-destination rank, ...) are written so every rank refuses before communicating: an error on one
rank alone would leave gloo's other ranks waiting.

The same mpirun then runs what gloo cannot run side by side (NCCL's stacked all_gather_into_tensor,
a 2 MB isend/recv exchange, DDP with find_unused_parameters over ranks that use different layers,
and a monitored_barrier a rank misses, last). Without a launcher: DistributedSampler's indices
against torch's. Skipped, with the reason, without mpi4py/mpirun or torch.
"""
import os
import pickle
import sys
import time
import warnings

import numpy as np
import pytest

import minilora as ml
from minilora import distributed as dist

HERE = os.path.abspath(__file__)
ROOT = os.path.dirname(os.path.dirname(HERE))
WORLD = 3


# --------------------------------------------------------------------------------------------------
# The cases: ``case(L, D, rank, world)`` with L = torch or minilora, D = its distributed module
# --------------------------------------------------------------------------------------------------
def plain(value):
    """A tensor (or a structure of them) as comparable Python: ("tensor", dtype, shape, values)."""
    if hasattr(value, "dtype") and hasattr(value, "shape") and hasattr(value, "tolist"):
        dtype = str(value.dtype).replace("torch.", "")
        values = value.float().tolist() if dtype in ("bfloat16", "float16") else value.tolist()
        return ("tensor", dtype, tuple(value.shape), values)
    if isinstance(value, (list, tuple)):
        return type(value)(plain(v) for v in value)
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value


def data(L, rank, dtype, shape=(2, 3)):
    """Small integers that differ by rank (exact in every dtype, also after a sum or a product)."""
    values = np.arange(int(np.prod(shape))).reshape(shape) % 5 + 2 * rank - 1
    if dtype == "bool":
        values = values % 2 == 0
    elif dtype == "uint8":
        values = np.abs(values)
    return L.tensor(values.tolist(), dtype=getattr(L, dtype))


DTYPES = ["float32", "float64", "bfloat16", "float16", "int64", "int32", "uint8", "bool"]
OPS = ["SUM", "PRODUCT", "MIN", "MAX", "AVG", "BAND", "BOR", "BXOR"]
CASES = {}


def case(name):
    def register(fn):
        CASES[name] = fn
        return fn
    return register


def _all_reduce(op, dtype):
    def run(L, D, rank, world):
        t = data(L, rank, dtype)
        assert D.all_reduce(t, op=getattr(D.ReduceOp, op)) is None
        return t
    return run


for _op in OPS:
    for _dtype in DTYPES:
        case(f"all_reduce-{_op}-{_dtype}")(_all_reduce(_op, _dtype))


def _broadcast(dtype):
    def run(L, D, rank, world):
        t = data(L, rank, dtype, (3,))
        D.broadcast(t, src=1)
        return t
    return run


for _dtype in DTYPES:
    case(f"broadcast-{_dtype}")(_broadcast(_dtype))


def _inexact(op, dtype):
    """Values that round: three ranks' numbers are added in gloo's ring order, each step rounded to the
    dtype (16-bit floats too), so they are gloo's bits (minilora added in MPI's order, 16-bit floats in
    float32 rounded once, before round 20)."""
    def run(L, D, rank, world):
        t = L.tensor([1.1, 2.7, 100.3, 0.013, -7.77, 1000.1], dtype=getattr(L, dtype)) * (rank + 1.3)
        D.all_reduce(t, op=getattr(D.ReduceOp, op))
        return t
    return run


for _op in ("SUM", "AVG", "PRODUCT"):
    for _dtype in ("bfloat16", "float16", "float32"):
        case(f"all_reduce-{_op}-{_dtype}-inexact")(_inexact(_op, _dtype))


@case("broadcast-positional-src-and-scalar")
def _(L, D, rank, world):
    t = L.tensor(float(rank + 7), dtype=L.float64)
    D.broadcast(t, 2)
    return t


@case("broadcast-src-out-of-range")
def _(L, D, rank, world):
    D.broadcast(L.zeros(2), src=world + 5)


@case("all_reduce-async-work")
def _(L, D, rank, world):
    t = data(L, rank, "float64")
    work = D.all_reduce(t, async_op=True)
    return [work.wait(), work.is_completed(), work.is_success(), work.result(), t]


@case("all_reduce-async-future")
def _(L, D, rank, world):
    t = data(L, rank, "int64")
    future = D.all_reduce(t, async_op=True).get_future()
    doubled = future.then(lambda f: [x * 2 for x in f.value()])
    return [future.wait(), doubled.wait(), future.done(), t]


@case("all_reduce-non-contiguous")
def _(L, D, rank, world):
    t = data(L, rank, "float32", (3, 2)).t()
    D.all_reduce(t)
    return t


@case("broadcast-non-contiguous")
def _(L, D, rank, world):
    b = data(L, rank, "int64", (3, 2)).t()
    D.broadcast(b, src=2)
    return b


@case("all_gather-non-contiguous-input")
def _(L, D, rank, world):
    out = [L.zeros(2, 3) for _ in range(world)]
    D.all_gather(out, data(L, rank, "float32", (3, 2)).t())
    return out


@case("all_reduce-scalar-and-empty")
def _(L, D, rank, world):
    scalar, empty = L.tensor(rank + 0.5, dtype=L.float64), L.zeros(0, 3)
    D.all_reduce(scalar, op=D.ReduceOp.MAX)
    D.all_reduce(empty)
    return [scalar, empty]


@case("all_reduce-not-a-tensor")
def _(L, D, rank, world):
    D.all_reduce([1.0, 2.0])


def _reduce(op, dtype):
    def run(L, D, rank, world):
        t = data(L, rank, dtype)
        D.reduce(t, dst=2, op=getattr(D.ReduceOp, op))
        return t if rank == 2 else None  # torch leaves the others' tensors unspecified
    return run


for _op, _dtype in [("SUM", "float64"), ("MAX", "int64"), ("PRODUCT", "float32"), ("SUM", "bfloat16")]:
    case(f"reduce-{_op}-{_dtype}")(_reduce(_op, _dtype))


@case("reduce-dst-out-of-range")
def _(L, D, rank, world):
    D.reduce(L.ones(2), dst=world)


def _all_gather(dtype):
    def run(L, D, rank, world):
        t = data(L, rank, dtype)
        out = [L.zeros(2, 3, dtype=getattr(L, dtype)) for _ in range(world)]
        assert D.all_gather(out, t) is None
        return out
    return run


for _dtype in ["float32", "float64", "bfloat16", "int64", "bool"]:
    case(f"all_gather-{_dtype}")(_all_gather(_dtype))


@case("all_gather-async")
def _(L, D, rank, world):
    out = [L.zeros(2) for _ in range(world)]
    work = D.all_gather(out, L.ones(2) * rank, async_op=True)
    work.wait()
    return out


@case("all_gather-wrong-length")
def _(L, D, rank, world):
    D.all_gather([L.zeros(2)], L.ones(2))


@case("all_gather-wrong-shape")
def _(L, D, rank, world):
    D.all_gather([L.zeros(3) for _ in range(world)], L.ones(2))


@case("all_gather-wrong-dtype")
def _(L, D, rank, world):
    D.all_gather([L.zeros(2, dtype=L.float64) for _ in range(world)], L.ones(2))


@case("all_gather-not-a-list")
def _(L, D, rank, world):
    D.all_gather(tuple(L.zeros(2) for _ in range(world)), L.ones(2))


def _all_gather_into_tensor(dtype):
    def run(L, D, rank, world):
        out = L.zeros(world * 2, 3, dtype=getattr(L, dtype))
        D.all_gather_into_tensor(out, data(L, rank, dtype))
        return out
    return run


for _dtype in ["float32", "int64", "bfloat16"]:
    case(f"all_gather_into_tensor-{_dtype}")(_all_gather_into_tensor(_dtype))


@case("all_gather_into_tensor-wrong-size")
def _(L, D, rank, world):
    D.all_gather_into_tensor(L.zeros(world * 2 + 1), L.ones(2))


def _reduce_scatter_tensor(op, dtype):
    def run(L, D, rank, world):
        out = L.zeros(2, dtype=getattr(L, dtype))
        D.reduce_scatter_tensor(out, data(L, rank, dtype, (world * 2,)), op=getattr(D.ReduceOp, op))
        return out
    return run


for _op, _dtype in [("SUM", "float32"), ("MAX", "int64"), ("SUM", "float64"), ("MIN", "int32")]:
    case(f"reduce_scatter_tensor-{_op}-{_dtype}")(_reduce_scatter_tensor(_op, _dtype))


@case("reduce_scatter-list")
def _(L, D, rank, world):
    out = L.zeros(2, dtype=L.float64)
    D.reduce_scatter(out, [data(L, rank + i, "float64", (2,)) for i in range(world)])
    return out


@case("reduce_scatter-positional-op")
def _(L, D, rank, world):
    out = L.zeros(2, dtype=L.int64)
    D.reduce_scatter(out, [data(L, rank * i, "int64", (2,)) for i in range(world)], D.ReduceOp.MAX)
    return out


@case("gather-dst-1")
def _(L, D, rank, world):
    targets = [L.zeros(2, 2, dtype=L.float64) for _ in range(world)] if rank == 1 else None
    D.gather(data(L, rank, "float64", (2, 2)), targets, dst=1)
    return targets


@case("gather-default-dst")
def _(L, D, rank, world):
    targets = [L.zeros(3, dtype=L.int64) for _ in range(world)] if rank == 0 else None
    D.gather(data(L, rank, "int64", (3,)), gather_list=targets)
    return targets


@case("gather-list-on-a-non-destination-rank")
def _(L, D, rank, world):  # every rank names another one as dst: every rank refuses, none communicates
    D.gather(L.ones(2), [L.zeros(2) for _ in range(world)], dst=(rank + 1) % world)


@case("gather-no-list-on-the-destination-rank")
def _(L, D, rank, world):
    D.gather(L.ones(2), None, dst=rank)


@case("scatter-src-2")
def _(L, D, rank, world):
    t = L.zeros(2, dtype=L.int64)
    D.scatter(t, [data(L, i, "int64", (2,)) for i in range(world)] if rank == 2 else None, src=2)
    return t


@case("scatter-list-on-a-non-source-rank")
def _(L, D, rank, world):
    D.scatter(L.zeros(2), [L.ones(2) for _ in range(world)], src=(rank + 1) % world)


@case("all_to_all_single-even")
def _(L, D, rank, world):
    out = L.zeros(world * 2, 3, dtype=L.float64)
    D.all_to_all_single(out, data(L, rank, "float64", (world * 2, 3)))
    return out


@case("all_to_all_single-split-sizes")
def _(L, D, rank, world):
    send_rows = [(rank + j) % 3 + 1 for j in range(world)]  # rows rank -> j
    recv_rows = [(i + rank) % 3 + 1 for i in range(world)]  # rows i -> rank
    out = L.zeros(sum(recv_rows), 2, dtype=L.int64)
    D.all_to_all_single(out, data(L, rank, "int64", (sum(send_rows), 2)), recv_rows, send_rows)
    return out


@case("all_to_all_single-uneven-without-sizes")
def _(L, D, rank, world):
    D.all_to_all_single(L.zeros(world + 1), L.ones(world + 1))


@case("all_to_all-list")
def _(L, D, rank, world):
    inputs = [data(L, rank, "float32", (2,)) + 10 * j for j in range(world)]
    outputs = [L.zeros(2) for _ in range(world)]
    work = D.all_to_all(outputs, inputs, async_op=True)
    work.wait()
    return outputs


@case("send-recv-ring")
def _(L, D, rank, world):
    out = L.zeros(3, dtype=L.float64)
    if rank % 2 == 0:  # even ranks send first: a ring of blocking calls that cannot deadlock
        D.send(data(L, rank, "float64", (3,)), dst=(rank + 1) % world, tag=5)
        sender = D.recv(out, src=(rank - 1) % world, tag=5)
    else:
        sender = D.recv(out, (rank - 1) % world, tag=5)
        D.send(data(L, rank, "float64", (3,)), (rank + 1) % world, tag=5)
    return [sender, out]


@case("recv-from-any-source")
def _(L, D, rank, world):
    if rank == 0:
        out = [L.zeros(2, dtype=L.int64) for _ in range(world - 1)]
        senders = sorted(D.recv(t, tag=7) for t in out)  # a tag of its own: a later case's message
        return [senders, sorted(tuple(t.tolist()) for t in out)]  # from a fast rank cannot match
    D.send(L.tensor([rank, 10 * rank]), 0, tag=7)


@case("isend-irecv-work")
def _(L, D, rank, world):
    out = L.zeros(2, dtype=L.bfloat16)
    sending = D.isend(data(L, rank, "bfloat16", (2,)), (rank + 1) % world, tag=9)
    receiving = D.irecv(out, src=(rank - 1) % world, tag=9)
    return [receiving.wait(), sending.wait(), out]


@case("batch_isend_irecv")
def _(L, D, rank, world):
    out = L.zeros(2, dtype=L.int64)
    ops = [D.P2POp(D.isend, data(L, rank, "int64", (2,)), (rank + 1) % world, tag=11),
           D.P2POp(D.irecv, out, (rank - 1) % world, tag=11)]
    works = D.batch_isend_irecv(ops)
    for work in works:
        work.wait()
    return [len(works), out]


@case("send-to-self")
def _(L, D, rank, world):
    D.send(L.ones(2), dst=rank)


@case("all_gather_object")
def _(L, D, rank, world):
    out = [None] * world
    D.all_gather_object(out, {"rank": rank, "items": list(range(rank))})
    return out


@case("all_gather_object-short-list")
def _(L, D, rank, world):
    D.all_gather_object([None], rank)


@case("broadcast_object_list")
def _(L, D, rank, world):
    objects = [rank, ("from", rank), None if rank else "only rank 0 has this"]
    D.broadcast_object_list(objects, src=1)
    return objects


@case("gather_object")
def _(L, D, rank, world):
    out = [None] * world if rank == 2 else None
    D.gather_object({"r": rank}, out, dst=2)
    return out


@case("scatter_object_list")
def _(L, D, rank, world):
    out = [None]
    D.scatter_object_list(out, [f"to {i}" for i in range(world)] if rank == 0 else None, src=0)
    return out


@case("scatter_object_list-empty-output")
def _(L, D, rank, world):
    D.scatter_object_list([], [1] * world, src=0)


@case("default-group")
def _(L, D, rank, world):
    return [D.get_rank(), D.get_world_size(), D.get_process_group_ranks(D.group.WORLD),
            D.get_global_rank(D.group.WORLD, 2), D.get_group_rank(D.group.WORLD, 1), D.GroupMember.WORLD is not None]


@case("new_group-members-and-the-others")
def _(L, D, rank, world):
    g = D.new_group([2, 0])
    member = g != D.GroupMember.NON_GROUP_MEMBER
    answer = [member, D.get_rank(g), D.get_world_size(g)]
    if member:
        answer += [D.get_process_group_ranks(g), D.get_global_rank(g, 1), D.get_group_rank(g, 2)]
    t = data(L, rank, "float64", (2,))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        D.all_reduce(t, group=g)  # rank 1 is not in the group: torch warns and does nothing
    answer += [t, [("does not belong to the given group" in str(w.message)) for w in caught]]
    b = L.tensor([float(rank)] * 2)
    D.broadcast(b, src=2, group=g)
    c = L.tensor([float(rank)] * 2)
    D.broadcast(c, group=g, group_src=0)
    out = [L.zeros(2) for _ in range(2)]
    D.all_gather(out, L.ones(2) * rank, group=g)
    D.barrier(group=g)
    return answer + [b, c, out]


@case("new_group-errors")
def _(L, D, rank, world):
    errors = []
    for call in (lambda: D.new_group([0, 0]), lambda: D.new_group([0, world])):
        try:
            call()
        except Exception as error:
            errors.append(type(error).__name__)
    g = D.new_group([0, 1])
    if rank in (0, 1):
        for call in (lambda: D.get_group_rank(g, 2), lambda: D.get_global_rank(g, 2),
                     lambda: D.reduce(L.ones(2), dst=2, group=g), lambda: D.broadcast(L.ones(2), 0, g, group_src=0)):
            try:
                call()
            except Exception as error:
                errors.append(type(error).__name__)
    return errors


@case("barrier-and-monitored_barrier")
def _(L, D, rank, world):
    work = D.barrier(async_op=True)
    return [D.barrier(), work.wait(), D.monitored_barrier(), D.monitored_barrier(wait_all_ranks=True)]


def run_case(fn, L, D, rank, world):
    try:
        return "ok", plain(fn(L, D, rank, world))
    except Exception as error:  # noqa: BLE001 -- the type is what is compared
        return "error", type(error).__name__, str(error)[:300]


# --------------------------------------------------------------------------------------------------
# The worker: one mpirun, every case with both libraries
# --------------------------------------------------------------------------------------------------
def worker(out):
    import datetime
    import torch
    import torch.distributed as tdist
    warnings.simplefilter("ignore")
    dist.init_process_group("mpi", timeout=30)
    rank, world = dist.get_rank(), dist.get_world_size()
    tdist.init_process_group("gloo", init_method="file://" + os.path.join(out, "gloo_rendezvous"), rank=rank,
                             world_size=world, timeout=datetime.timedelta(seconds=30))
    results = {}
    try:
        for library, L, D in (("torch", torch, tdist), ("minilora", ml, dist)):
            results[library] = {}
            for name, fn in CASES.items():
                start = time.monotonic()
                results[library][name] = run_case(fn, L, D, rank, world)
                if time.monotonic() - start > 5:  # a case that waited for another rank: say which
                    print(f"rank {rank}: {library} {name} took {time.monotonic() - start:.0f} s", file=sys.stderr)
            D.barrier()
        results["ddp-torch"] = torch_ddp_unused_parameters(rank)
        from torch.nn.parallel import DistributedDataParallel as TorchDDP

        from minilora.nn.parallel import DistributedDataParallel
        results["ddp-accumulation"] = {"torch": ddp_accumulation(torch, TorchDDP, rank),
                                       "minilora": ddp_accumulation(ml, DistributedDataParallel, rank)}
        results["minilora-only"] = minilora_only(rank, world)
    except BaseException:  # an uncaught error aborts the job before stderr is forwarded: keep it in a file
        import traceback
        with open(os.path.join(out, f"rank{rank}.error"), "w") as f:
            f.write(traceback.format_exc())
        raise
    with open(os.path.join(out, f"rank{rank}.pkl"), "wb") as f:
        pickle.dump(results, f)
    tdist.destroy_process_group()
    dist.destroy_process_group()


class Branches(ml.nn.Module):
    """Three layers; ``b`` used only when ``use_b``, ``c`` never."""

    def __init__(self, use_b):
        super().__init__()
        ml.manual_seed(0)
        self.a, self.b, self.c = (ml.nn.Linear(2, 2, dtype=ml.float64) for _ in range(3))
        self.use_b = use_b

    def forward(self, x):
        hidden = self.a(x)
        return (self.b(hidden) if self.use_b else hidden).pow(2).sum()


def grads_of(model):
    return {n: None if p.grad is None else p.grad.tolist() for n, p in model.named_parameters()}


def torch_ddp_unused_parameters(rank):
    """torch's DDP with find_unused_parameters=True on the same three layers (weights copied from
    minilora's): the gradients minilora's DDP must give."""
    import torch
    from torch.nn.parallel import DistributedDataParallel as TorchDDP
    ours = Branches(use_b=rank == 0)
    layers = torch.nn.ModuleDict({k: torch.nn.Linear(2, 2, dtype=torch.float64) for k in "abc"})
    with torch.no_grad():
        for k in "abc":
            layers[k].weight.copy_(torch.tensor(getattr(ours, k).weight.tolist(), dtype=torch.float64))
            layers[k].bias.copy_(torch.tensor(getattr(ours, k).bias.tolist(), dtype=torch.float64))

    class TorchBranches(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.c = layers["a"], layers["b"], layers["c"]

        def forward(self, x):
            hidden = self.a(x)
            return (self.b(hidden) if rank == 0 else hidden).pow(2).sum()

    model = TorchBranches()
    ddp = TorchDDP(model, bucket_cap_mb=1e-6, find_unused_parameters=True)
    x = torch.tensor([[1.0, -2.0], [0.5, 3.0]], dtype=torch.float64) * (rank + 1)
    steps = []
    for _ in range(2):
        ddp(x).backward()
        steps.append(grads_of(model))
        model.zero_grad(set_to_none=False)  # torch's default set_to_none=True would make c's None anyway
    return steps


def ddp_accumulation(L, DDP, rank):
    """Either library's DDP: each rank starts from its own weights and buffer; two micro-batches,
    the first under no_sync(); with and without broadcast_buffers."""
    class Scaled(L.nn.Module):
        def __init__(self):
            super().__init__()
            self.a = L.nn.Linear(2, 2, dtype=L.float64)
            with L.no_grad():
                self.a.weight.copy_(L.tensor([[0.5, -1.0], [2.0, 0.25]], dtype=L.float64) * (rank + 1))
                self.a.bias.copy_(L.tensor([0.1, -0.2], dtype=L.float64))
            self.register_buffer("scale", L.tensor([rank + 1.0], dtype=L.float64))

        def forward(self, x):
            return (self.a(x) * self.scale).pow(2).sum()

    found = {}
    for broadcast_buffers in (True, False):
        model = Scaled()
        ddp = DDP(model, broadcast_buffers=broadcast_buffers)
        xs = [L.tensor([[1.0, -2.0], [0.5, 3.0]], dtype=L.float64) * (rank + k + 1) for k in range(2)]
        with ddp.no_sync():
            ddp(xs[0]).backward()
        inside = model.a.weight.grad.tolist()
        ddp(xs[1]).backward()
        found[broadcast_buffers] = [ddp.module is model, model.a.weight.tolist(), inside,
                                    model.a.weight.grad.tolist(), model.a.bias.grad.tolist(), model.scale.tolist()]
    return found


def ddp_unused_parameters(rank, world):
    """DDP over three layers: rank 0 uses a and b, the others a only, nobody c. With
    find_unused_parameters=True every step completes (one bucket per tensor, reduced in order);
    without it, the next forward names the parameters that got no gradient."""
    from minilora.nn.parallel import DistributedDataParallel as DDP
    x = ml.tensor([[1.0, -2.0], [0.5, 3.0]], dtype=ml.float64) * (rank + 1)
    plain_model = Branches(use_b=rank == 0)
    plain_model(x).backward()
    found = {"local": grads_of(plain_model), "ddp": []}
    model = Branches(use_b=rank == 0)
    ddp = DDP(model, bucket_cap_mb=1e-6, find_unused_parameters=True)
    for _ in range(2):
        ddp(x).backward()
        found["ddp"].append(grads_of(model))
        model.zero_grad(set_to_none=False)
    subgroup = dist.new_group([1, 2])
    seeded = Branches(use_b=True)
    with ml.no_grad():
        seeded.a.weight.add_(rank)  # each rank starts elsewhere: the group's first rank (1) wins
    if rank == 0:
        try:
            DDP(seeded, process_group=subgroup)
        except ValueError as error:
            found["subgroup"] = str(error)
    else:
        reference = Branches(use_b=True)
        with ml.no_grad():
            reference.a.weight.add_(1)  # rank 1's start
        reference(x).backward()
        found["subgroup-local"] = grads_of(reference)
        in_group = DDP(seeded, None, None, 0, True, True, subgroup, None, True)  # torch's positional order
        found["subgroup-start"] = seeded.a.weight.tolist()
        in_group(x).backward()
        found["subgroup"] = grads_of(seeded)
    strict = DDP(Branches(use_b=True))
    strict(x).backward()
    try:
        strict(x)
        found["strict"] = "no error"
    except RuntimeError as error:
        found["strict"] = str(error)
    return found


def minilora_only(rank, world):
    """What gloo cannot run side by side: the stacked all_gather_into_tensor (NCCL's form, gloo
    refuses it), a send/recv whose buffers would deadlock if blocking, DDP's unused parameters, and
    a monitored_barrier that a rank misses (it breaks a gloo group), last."""
    found = {}
    out = ml.zeros(world, 2, 3)
    dist.all_gather_into_tensor(out, data(ml, rank, "float32"))
    found["stacked"] = plain(out)
    inputs = [data(ml, rank, "float32", (j + 1,)) + 10 * j for j in range(world)]  # shapes differ: NCCL's
    outputs = [ml.zeros(rank + 1) for _ in range(world)]  # all_to_all takes them, gloo's does not
    dist.all_to_all(outputs, inputs)
    found["all_to_all-uneven"] = [t.tolist() for t in outputs]
    every_other_row = data(ml, rank, "float64", (4, 2))[::2]  # torch's gloo reduces the first 4 numbers of
    dist.reduce(every_other_row, dst=0)  # the storage here, rows 0 and 1: the view's second row stays
    found["reduce-non-contiguous"] = every_other_row.tolist()
    try:  # gloo fails this one with a fatal check (RuntimeError): not run side by side
        dist.reduce_scatter_tensor(ml.zeros(2), ml.ones(world * 2 + 2))
    except RuntimeError as error:
        found["reduce_scatter_tensor-wrong-size"] = str(error)
    big = ml.ones(1 << 18) * rank  # 2 MB: MPI cannot buffer it, so two blocking sends would wait on each other
    inbox = ml.zeros(1 << 18)
    work = dist.isend(big, (rank + 1) % world, tag=13)
    sender = dist.recv(inbox, tag=13)
    work.wait()
    found["big-exchange"] = (sender, float(inbox.sum()))
    found.update(ddp_unused_parameters(rank, world))
    dist.barrier()
    if rank == 1:
        time.sleep(1.5)  # misses rank 0's monitored_barrier
        found["monitored"] = "skipped"
        return found
    try:
        dist.monitored_barrier(timeout=0.5, wait_all_ranks=True)
        found["monitored"] = "passed"
    except Exception as error:  # noqa: BLE001
        found["monitored"] = (type(error).__name__, str(error))
    return found


# --------------------------------------------------------------------------------------------------
# The tests
# --------------------------------------------------------------------------------------------------
def _launcher():
    from test_distributed import MPIRUN, SKIP_REASON
    if MPIRUN is None:
        return None, SKIP_REASON
    try:
        import torch.distributed as tdist
    except ImportError:
        return None, "torch is not installed"
    if not tdist.is_available() or not tdist.is_gloo_available():
        return None, "torch has no gloo backend"
    return [part if part != "2" else str(WORLD) for part in MPIRUN], None


sys.path.insert(0, os.path.dirname(HERE))
import background_runs  # noqa: E402  (tests/, on the path just above)
MPIRUN3, SKIP = _launcher() if __name__ != "__main__" else (None, "")  # (the worker needs no launcher)
needs_mpi_and_torch = pytest.mark.skipif(MPIRUN3 is None, reason=SKIP or "")


RUN = "test_distributed_r6: mpirun -n 3, torch's collectives and minilora's"


def _submit(runs):
    """Queue the mpirun (a no-op when queued already) as a background run (tests/background_runs.py), on the core
    CI's main process leaves idle, with the regular runs (this file comes early): its folder."""
    def commands(out):
        return [(MPIRUN3 + [sys.executable, HERE, str(out)],
                 {"MINILORA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": ROOT})]
    return runs.submit_commands(RUN, commands, timeout=120)


def start_background_runs(items, runs):
    if MPIRUN3 is not None and background_runs.selected(items, __name__, "test_collective_matches_torch_gloo"):
        _submit(runs)


@pytest.fixture(scope="module")
def side_by_side(background):
    out = _submit(background)
    [(returncode, stdout, stderr)] = background.result(RUN)
    errors = "".join(path.read_text() for path in out.glob("rank*.error"))
    assert returncode == 0, errors + stdout[-3000:] + stderr[-3000:]
    ranks = []
    for r in range(WORLD):
        with open(out / f"rank{r}.pkl", "rb") as f:
            ranks.append(pickle.load(f))
    return ranks


@needs_mpi_and_torch
@pytest.mark.parametrize("name", list(CASES))
def test_collective_matches_torch_gloo(side_by_side, name):
    for rank, results in enumerate(side_by_side):
        theirs, ours = results["torch"][name], results["minilora"][name]
        if theirs[0] == "error":  # the same kind of refusal (the words are minilora's)
            assert ours[0] == "error" and ours[1] == theirs[1], f"rank {rank}: torch {theirs}, minilora {ours}"
        else:
            assert ours == theirs, f"rank {rank}"


@needs_mpi_and_torch
def test_ddp_no_sync_and_broadcast_buffers_match_torchs_ddp(side_by_side):
    """Weights from rank 0 at the start, the no_sync micro-batch's gradient local, the next one's
    averaged with it, the buffer rank 0's (or each rank's own without broadcast_buffers)."""
    for rank, results in enumerate(side_by_side):
        ours, theirs = results["ddp-accumulation"]["minilora"], results["ddp-accumulation"]["torch"]
        for broadcast_buffers in (True, False):
            assert ours[broadcast_buffers][0] is True and theirs[broadcast_buffers][0] is True  # ddp.module
            for mine, torchs in zip(ours[broadcast_buffers][1:], theirs[broadcast_buffers][1:]):
                np.testing.assert_allclose(mine, torchs, rtol=1e-12, err_msg=f"rank {rank}")
        assert ours[True][-1] == [1.0] and ours[False][-1] == [rank + 1.0]


@needs_mpi_and_torch
def test_what_gloo_cannot_run_side_by_side(side_by_side):
    first = np.arange(6).reshape(2, 3) % 5 - 1
    for rank, results in enumerate(side_by_side):
        found = results["minilora-only"]
        stacked = found["stacked"]
        assert stacked[:3] == ("tensor", "float32", (WORLD, 2, 3))
        assert stacked[3] == [(first + 2 * r).tolist() for r in range(WORLD)]
        assert "must be the same size as output size times world size" in found["reduce_scatter_tensor-wrong-size"]
        assert found["all_to_all-uneven"] == [(data(ml, i, "float32", (rank + 1,)) + 10 * rank).tolist()
                                              for i in range(WORLD)]
        if rank == 0:
            assert found["reduce-non-contiguous"] == sum(data(ml, r, "float64", (4, 2))[::2] for r in range(WORLD)).tolist()
        assert found["big-exchange"] == ((rank - 1) % WORLD, float(((rank - 1) % WORLD) * (1 << 18)))
    ranks = [results["minilora-only"] for results in side_by_side]
    for rank, found in enumerate(ranks):
        for step in found["ddp"]:
            for name in ("a.weight", "a.bias", "b.weight", "b.bias"):  # the mean of the ranks' own gradients
                mean = np.mean([np.array(r["local"][name]) if r["local"][name] is not None else
                                np.zeros_like(np.array(ranks[0]["local"][name])) for r in ranks], axis=0)
                np.testing.assert_allclose(step[name], mean, rtol=1e-12, err_msg=f"rank {rank} {name}")
            assert step["c.weight"] is None and step["c.bias"] is None  # no rank used c: no gradient, as torch
        assert "c.weight" in found["strict"] and "find_unused_parameters=True" in found["strict"]
        for ours, theirs in zip(found["ddp"], side_by_side[rank]["ddp-torch"]):  # torch's DDP, same layers
            assert ours.keys() == theirs.keys()
            for name in ours:
                if theirs[name] is None:
                    assert ours[name] is None, name
                else:
                    np.testing.assert_allclose(ours[name], theirs[name], rtol=1e-12, err_msg=name)
    assert "not part of process_group" in ranks[0]["subgroup"]
    start = (np.array(ranks[0]["local"]["a.weight"]) * 0 + np.array(Branches(use_b=True).a.weight.tolist()) + 1)
    for rank in (1, 2):  # rank 1's weights, then the mean of ranks 1 and 2 only
        np.testing.assert_array_equal(ranks[rank]["subgroup-start"], start)
        for name, value in ranks[rank]["subgroup"].items():
            if name.startswith("c."):
                assert value is None
                continue
            mean = (np.array(ranks[1]["subgroup-local"][name]) + np.array(ranks[2]["subgroup-local"][name])) / 2
            np.testing.assert_allclose(value, mean, rtol=1e-12, err_msg=f"rank {rank} {name}")
    assert side_by_side[0]["minilora-only"]["monitored"] == (
        "RuntimeError", "[Rank 0]: Ranks 1 failed to pass monitoredBarrier in 500 ms")
    assert side_by_side[2]["minilora-only"]["monitored"][0] == "DistBackendError"  # no word from rank 0


# --------------------------------------------------------------------------------------------------
# No launcher needed: DistributedSampler
# --------------------------------------------------------------------------------------------------
def test_distributed_sampler_indices_equal_torchs():
    """Every rank's indices, epoch after epoch, as torch's: shuffled or not, any seed (negative and
    beyond 32 bits too: torch's generator keeps the low 32 bits), padded (also past one repetition
    when the dataset is smaller than the ranks) or cut with drop_last."""
    torch = pytest.importorskip("torch")
    from torch.utils.data import DistributedSampler as TorchSampler

    from minilora.utils.data import DistributedSampler
    checked = 0
    for n in (0, 1, 2, 5, 10, 37, 1000):
        for replicas in (1, 3, 4, 8):
            for shuffle, seed, drop_last in ((False, 0, False), (False, 0, True), (True, 0, False), (True, 7, True),
                                             (True, 2 ** 40 + 3, False), (True, -5, False)):
                for rank in sorted({0, replicas - 1}):
                    args = dict(num_replicas=replicas, rank=rank, shuffle=shuffle, seed=seed, drop_last=drop_last)
                    theirs, ours = TorchSampler(range(n), **args), DistributedSampler(range(n), **args)
                    for epoch in (0, 1, 5):
                        theirs.set_epoch(epoch)
                        ours.set_epoch(epoch)
                        assert list(ours) == list(theirs), (n, args, epoch)
                        assert len(ours) == len(theirs) and ours.total_size == theirs.total_size
                        checked += 1
    assert checked > 500


def test_distributed_sampler_order_is_torchs_randperm():
    """The shuffle is torch.randperm with a generator seeded by seed + epoch (what torch's sampler
    calls), for lengths where a wrong draw or modulo would show."""
    torch = pytest.importorskip("torch")
    from minilora.utils.data import _torch_randperm
    for n, seed in ((2, 0), (3, 1), (100, 42), (4097, 123456789), (20000, 2 ** 32 + 9)):
        assert _torch_randperm(n, seed) == torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()


if __name__ == "__main__":
    worker(sys.argv[1])
