"""Sweep (outside CI): minilora.distributed beside torch.distributed (gloo, CPU) as users call them.

    python -m tests.distributed_sweep            # prints "N of M forms differ" by class

ONE ``mpirun -n 2`` runs this file's worker: each rank joins minilora's MPI group and a torch gloo group
(a file rendezvous), runs every case of ``CASES`` with torch then with minilora on the same inputs
(float64 where numbers are compared), and saves both results. A case returns plain Python (tensors as
dtype, shape and values); where torch raises, minilora must raise the same exception type. Without a
launcher, in this process: the calls before ``init_process_group`` and DistributedSampler / DataLoader
index lists. Classes: collective, ddp, sampler, uninitialised.
"""
import collections
import os
import pickle
import sys
import tempfile
import time
import warnings

import numpy as np

HERE = os.path.abspath(__file__)
ROOT = os.path.dirname(os.path.dirname(HERE))
WORLD = 2
CASES = {}


def case(name):
    def register(fn):
        CASES[name] = fn
        return fn
    return register


def plain(value):
    """Tensors (inside lists, tuples, dicts) as ("tensor", dtype, shape, values)."""
    if hasattr(value, "dtype") and hasattr(value, "shape") and hasattr(value, "tolist"):
        dtype = str(value.dtype).replace("torch.", "")
        values = value.float().tolist() if dtype in ("bfloat16", "float16") else value.tolist()
        return ("tensor", dtype, tuple(value.shape), values)
    if isinstance(value, (list, tuple)):
        return type(value)(plain(v) for v in value)
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value


def data(L, rank, dtype="float64", shape=(2, 3)):
    values = np.arange(int(np.prod(shape))).reshape(shape) % 5 + 2 * rank - 1
    if dtype == "bool":
        values = values % 2 == 0
    elif dtype == "uint8":
        values = np.abs(values)
    return L.tensor(values.tolist(), dtype=getattr(L, dtype))


def inexact(L, rank, dtype="float64", n=6):
    return L.tensor([0.1 * (k + 1) + rank / 3 + 1e-9 * k * k for k in range(n)], dtype=getattr(L, dtype))


# --------------------------------------------------------------------------------------------------
# Collectives
# --------------------------------------------------------------------------------------------------
for _op in ("SUM", "PRODUCT", "MIN", "MAX", "AVG", "BAND", "BOR", "BXOR"):
    for _dtype in ("float32", "float64", "int64", "int32", "uint8", "bool"):
        def _run(L, D, rank, world, op=_op, dtype=_dtype):
            t = data(L, rank, dtype)
            D.all_reduce(t, op=getattr(D.ReduceOp, op))
            return t
        case(f"collective:all_reduce-{_op}-{_dtype}")(_run)


@case("collective:all_reduce-positional-op")
def _(L, D, rank, world):
    t = inexact(L, rank)
    D.all_reduce(t, D.ReduceOp.MAX)
    return t


@case("collective:all_reduce-keyword-tensor")
def _(L, D, rank, world):
    t = inexact(L, rank)
    D.all_reduce(tensor=t, op=D.ReduceOp.SUM, group=None, async_op=False)
    return t


@case("collective:all_reduce-float-sum-inexact")
def _(L, D, rank, world):
    t = inexact(L, rank, "float32")
    u = inexact(L, rank, "float64")
    D.all_reduce(t)
    D.all_reduce(u, op=D.ReduceOp.AVG)
    return [t, u]


@case("collective:all_reduce-complex")
def _(L, D, rank, world):
    t = L.tensor([1 + 2j, -0.5j], dtype=L.complex128) * (rank + 1)
    D.all_reduce(t)
    return [t.real, t.imag]


@case("collective:all_reduce-half")
def _(L, D, rank, world):
    t = inexact(L, rank, "float16")
    b = inexact(L, rank, "bfloat16")
    D.all_reduce(t)
    D.all_reduce(b, op=D.ReduceOp.MAX)
    return [t, b]


@case("collective:all_reduce-async")
def _(L, D, rank, world):
    t = inexact(L, rank)
    work = D.all_reduce(t, async_op=True)
    return [type(work).__name__ == "Work", work.wait(), work.is_completed(), t]


@case("collective:all_reduce-future-value")
def _(L, D, rank, world):
    t = inexact(L, rank)
    fut = D.all_reduce(t, async_op=True).get_future()
    return [fut.wait(), fut.value(), fut.done()]


@case("collective:all_reduce-returns")
def _(L, D, rank, world):
    return [D.all_reduce(inexact(L, rank)), D.broadcast(inexact(L, rank), 0), D.barrier()]


@case("collective:all_reduce-column-view")
def _(L, D, rank, world):
    base = data(L, rank, "float64", (3, 4))
    D.all_reduce(base[:, 1])
    return base


@case("collective:all_reduce-row-slice-view")
def _(L, D, rank, world):
    base = data(L, rank, "float64", (4, 2))
    D.all_reduce(base[1:3])
    return base


@case("collective:all_reduce-requires-grad-leaf")
def _(L, D, rank, world):
    t = inexact(L, rank).requires_grad_()
    D.all_reduce(t)
    return [t.detach(), t.requires_grad, t.grad_fn is None]


@case("collective:all_reduce-nonleaf")
def _(L, D, rank, world):
    w = inexact(L, rank).requires_grad_()
    t = w * 2
    D.all_reduce(t)
    return [t.detach(), t.requires_grad]


@case("collective:all_reduce-op-string")
def _(L, D, rank, world):
    D.all_reduce(inexact(L, rank), op="sum")


@case("collective:all_reduce-not-tensor")
def _(L, D, rank, world):
    D.all_reduce(np.ones(3))


@case("collective:all_reduce-scalar")
def _(L, D, rank, world):
    t = L.tensor(rank + 0.25, dtype=L.float64)
    D.all_reduce(t, op=D.ReduceOp.PRODUCT)
    return t


@case("collective:broadcast-keyword-forms")
def _(L, D, rank, world):
    a, b, c = inexact(L, rank), data(L, rank, "int64"), data(L, rank, "bool")
    D.broadcast(a, src=1)
    D.broadcast(tensor=b, src=0, async_op=True).wait()
    D.broadcast(c, 1, None, False)
    return [a, b, c]


@case("collective:broadcast-group_src")
def _(L, D, rank, world):
    a = inexact(L, rank)
    D.broadcast(a, group_src=1)
    return a


@case("collective:broadcast-no-src")
def _(L, D, rank, world):
    D.broadcast(inexact(L, rank))


@case("collective:broadcast-src-negative")
def _(L, D, rank, world):
    D.broadcast(inexact(L, rank), src=-1)


@case("collective:broadcast-non-contiguous")
def _(L, D, rank, world):
    base = data(L, rank, "float64", (3, 4))
    D.broadcast(base.t(), 1)
    return base


@case("collective:reduce-dst-forms")
def _(L, D, rank, world):
    a, b = inexact(L, rank), data(L, rank, "int64")
    D.reduce(a, dst=1)
    D.reduce(b, 0, D.ReduceOp.MAX)
    return [a if rank == 1 else None, b if rank == 0 else None]


@case("collective:reduce-no-dst")
def _(L, D, rank, world):
    D.reduce(inexact(L, rank))


@case("collective:reduce-dst-out-of-range")
def _(L, D, rank, world):
    D.reduce(inexact(L, rank), dst=world)


@case("collective:reduce-group_dst-async")
def _(L, D, rank, world):
    a = inexact(L, rank)
    D.reduce(a, group_dst=0, op=D.ReduceOp.PRODUCT, async_op=True).wait()
    return a if rank == 0 else None


for _dtype in ("float32", "float64", "int64", "bool"):
    def _run(L, D, rank, world, dtype=_dtype):
        out = [L.zeros(2, 3, dtype=getattr(L, dtype)) for _ in range(world)]
        D.all_gather(out, data(L, rank, dtype))
        return out
    case(f"collective:all_gather-{_dtype}")(_run)


@case("collective:all_gather-keywords-async")
def _(L, D, rank, world):
    out = [L.zeros(3, dtype=L.float64) for _ in range(world)]
    D.all_gather(tensor_list=out, tensor=inexact(L, rank, n=3), async_op=True).wait()
    return out


@case("collective:all_gather-chunk-views")
def _(L, D, rank, world):
    big = L.zeros(world * 2, dtype=L.float64)
    D.all_gather(list(big.chunk(world)), inexact(L, rank, n=2))
    return big


@case("collective:all_gather-column-views")
def _(L, D, rank, world):
    big = L.zeros(3, world, dtype=L.float64)
    D.all_gather(list(big.unbind(1)), inexact(L, rank, n=3))
    return big


@case("collective:all_gather-scalars")
def _(L, D, rank, world):
    out = [L.tensor(0.0, dtype=L.float64) for _ in range(world)]
    D.all_gather(out, L.tensor(rank + 0.5, dtype=L.float64))
    return out


@case("collective:all_gather-wrong-shape")
def _(L, D, rank, world):
    D.all_gather([L.zeros(3) for _ in range(world)], L.ones(2))


@case("collective:all_gather-wrong-count")
def _(L, D, rank, world):
    D.all_gather([L.zeros(2) for _ in range(world + 1)], L.ones(2))


@case("collective:all_gather_into_tensor-concat")
def _(L, D, rank, world):
    out = L.zeros(world * 2, 3, dtype=L.float64)
    D.all_gather_into_tensor(out, data(L, rank))
    return out


@case("collective:all_gather_into_tensor-keywords-async")
def _(L, D, rank, world):
    out = L.zeros(world * 3, dtype=L.int64)
    D.all_gather_into_tensor(output_tensor=out, input_tensor=data(L, rank, "int64", (3,)), async_op=True).wait()
    return out


@case("collective:all_gather_into_tensor-non-contiguous-input")
def _(L, D, rank, world):
    out = L.zeros(world * 3 * 2, dtype=L.float64)
    D.all_gather_into_tensor(out, data(L, rank, "float64", (2, 3)).t())
    return out


@case("collective:all_gather_into_tensor-wrong-size")
def _(L, D, rank, world):
    D.all_gather_into_tensor(L.zeros(world * 2 + 1, dtype=L.float64), inexact(L, rank, n=2))


@case("collective:all_gather_into_tensor-wrong-dtype")
def _(L, D, rank, world):
    D.all_gather_into_tensor(L.zeros(world * 2, dtype=L.float32), inexact(L, rank, n=2))


@case("collective:gather-forms")
def _(L, D, rank, world):
    out = [L.zeros(3, dtype=L.float64) for _ in range(world)] if rank == 1 else None
    D.gather(inexact(L, rank, n=3), out, 1)
    out2 = [L.zeros(3, dtype=L.float64) for _ in range(world)] if rank == 0 else None
    D.gather(tensor=inexact(L, rank, n=3), gather_list=out2, dst=0, async_op=True).wait()
    return [out, out2]


@case("collective:gather-wrong-shape")
def _(L, D, rank, world):
    out = [L.zeros(4, dtype=L.float64) for _ in range(world)]  # every rank its own dst: every rank refuses
    D.gather(inexact(L, rank, n=3), out, dst=rank)


@case("collective:scatter-forms")
def _(L, D, rank, world):
    a = L.zeros(3, dtype=L.float64)
    D.scatter(a, [inexact(L, i, n=3) for i in range(world)] if rank == 1 else None, 1)
    b = L.zeros(2, dtype=L.int64)
    D.scatter(tensor=b, scatter_list=[data(L, i, "int64", (2,)) for i in range(world)] if rank == 0 else None,
              src=0, async_op=True).wait()
    return [a, b]


@case("collective:scatter-wrong-shape")
def _(L, D, rank, world):
    D.scatter(L.zeros(3, dtype=L.float64), [L.zeros(4, dtype=L.float64)] * world, src=rank)


@case("collective:scatter-non-contiguous-output")
def _(L, D, rank, world):
    base = L.zeros(3, 2, dtype=L.float64)
    D.scatter(base[:, 0], [inexact(L, i, n=3) for i in range(world)] if rank == 0 else None, src=0)
    return base


@case("collective:reduce_scatter-list")
def _(L, D, rank, world):
    out = L.zeros(3, dtype=L.float64)
    D.reduce_scatter(out, [inexact(L, rank + 5 * i, n=3) for i in range(world)])
    out2 = L.zeros(2, dtype=L.int64)
    D.reduce_scatter(output=out2, input_list=[data(L, rank * i, "int64", (2,)) for i in range(world)],
                     op=D.ReduceOp.MAX, async_op=True).wait()
    return [out, out2]


@case("collective:reduce_scatter_tensor")
def _(L, D, rank, world):
    out = L.zeros(3, dtype=L.float64)
    D.reduce_scatter_tensor(out, inexact(L, rank, n=3 * world))
    out2 = L.zeros(2, dtype=L.int64)
    D.reduce_scatter_tensor(output=out2, input=data(L, rank, "int64", (2 * world,)), op=D.ReduceOp.MIN)
    return [out, out2]


@case("collective:reduce_scatter_tensor-avg")
def _(L, D, rank, world):
    out = L.zeros(3, dtype=L.float64)
    D.reduce_scatter_tensor(out, inexact(L, rank, n=3 * world), op=D.ReduceOp.AVG)
    return out


@case("collective:reduce_scatter_tensor-stacked")
def _(L, D, rank, world):
    out = L.zeros(3, dtype=L.float64)
    D.reduce_scatter_tensor(out, inexact(L, rank, n=3 * world).reshape(world, 3))
    return out


@case("collective:all_to_all_single-even")
def _(L, D, rank, world):
    out = L.zeros(world * 2, dtype=L.float64)
    D.all_to_all_single(out, inexact(L, rank, n=world * 2))
    return out


@case("collective:all_to_all_single-splits-keywords")
def _(L, D, rank, world):
    send = [1 + rank, 2 - rank]  # rank r sends send[j] rows to j
    recv = [1 + j if rank == 0 else 2 - j for j in range(world)]
    recv = [[1, 2][j] if rank == 0 else [2, 1][j] for j in range(world)]
    out = L.zeros(sum(recv), 2, dtype=L.float64)
    D.all_to_all_single(out, inexact(L, rank, n=2 * sum(send)).reshape(-1, 2), output_split_sizes=recv,
                        input_split_sizes=send)
    return out


@case("collective:all_to_all_single-wrong-splits")
def _(L, D, rank, world):
    D.all_to_all_single(L.zeros(4, dtype=L.float64), inexact(L, rank, n=4), [1, 1], [2, 2])


@case("collective:all_to_all-list")
def _(L, D, rank, world):
    ins = [inexact(L, rank, n=2) + 10 * j for j in range(world)]
    outs = [L.zeros(2, dtype=L.float64) for _ in range(world)]
    D.all_to_all(outs, ins)
    return outs


@case("collective:barrier-forms")
def _(L, D, rank, world):
    w = D.barrier(async_op=True)
    return [D.barrier(), w.wait(), D.is_initialized(), D.get_rank(), D.get_world_size()]


@case("collective:send-recv-keywords")
def _(L, D, rank, world):
    out = L.zeros(3, dtype=L.float64)
    if rank == 0:
        D.send(tensor=inexact(L, rank, n=3), dst=1, tag=3)
        sender = D.recv(tensor=out, src=1, tag=4)
    else:
        sender = D.recv(out, 0, tag=3)
        D.send(inexact(L, rank, n=3), 0, tag=4)
    return [sender, out]


@case("collective:recv-any-source")
def _(L, D, rank, world):
    out = L.zeros(2, dtype=L.int64)
    if rank == 1:
        D.send(L.tensor([5, 6]), 0)
        return None
    return [D.recv(out), out]


@case("collective:isend-irecv")
def _(L, D, rank, world):
    out = L.zeros(3, dtype=L.float64)
    s = D.isend(inexact(L, rank, n=3), dst=1 - rank)
    r = D.irecv(out, src=1 - rank)
    return [s.wait(), r.wait(), out, r.is_completed()]


@case("collective:recv-non-contiguous")
def _(L, D, rank, world):
    base = L.zeros(3, 2, dtype=L.float64)
    if rank == 0:
        D.send(data(L, 0, "float64", (2, 3)).t(), 1)
        return None
    D.recv(base.t(), 0)
    return base


@case("collective:send-non-contiguous")
def _(L, D, rank, world):
    D.send(data(L, rank, "float64", (2, 3)).t(), 1 - rank)


@case("collective:isend-non-contiguous")
def _(L, D, rank, world):
    D.isend(data(L, rank, "float64", (2, 3))[:, 1], dst=1 - rank)


@case("collective:reduce_scatter_tensor-wrong-dtype")
def _(L, D, rank, world):
    D.reduce_scatter_tensor(L.zeros(2, dtype=L.float32), inexact(L, rank, n=4))


@case("collective:send-to-self")
def _(L, D, rank, world):
    D.send(inexact(L, rank), rank)


@case("collective:objects")
def _(L, D, rank, world):
    objs = [rank, {"r": rank}, None] if rank == 0 else [None, None, None]
    D.broadcast_object_list(objs, src=0)
    objs2 = ["x", rank]
    D.broadcast_object_list(object_list=objs2, src=1, group=None, device=None)
    gathered = [None] * world
    D.all_gather_object(gathered, ("rank", rank))
    gathered2 = [None] * world
    D.all_gather_object(object_list=gathered2, obj=[rank] * rank)
    return [objs, objs2, gathered, gathered2]


@case("collective:objects-tensors")
def _(L, D, rank, world):
    gathered = [None] * world
    D.all_gather_object(gathered, inexact(L, rank, n=2))
    return gathered


@case("collective:new_group")
def _(L, D, rank, world):
    g = D.new_group([0, 1])
    g1 = D.new_group(ranks=[1])
    t = inexact(L, rank)
    D.all_reduce(t, group=g)
    member = g1 != D.GroupMember.NON_GROUP_MEMBER
    u = inexact(L, rank)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        D.all_reduce(u, group=g1)
        r1 = D.get_rank(g1)
    return [t, u, member, D.get_rank(g), D.get_world_size(g), r1, D.get_process_group_ranks(g)]


@case("collective:reduce-avg")
def _(L, D, rank, world):
    a = inexact(L, rank)
    D.reduce(a, dst=0, op=D.ReduceOp.AVG)
    return a if rank == 0 else None


@case("collective:gather_object-scatter_object_list")
def _(L, D, rank, world):
    got = [None] * world if rank == 1 else None
    D.gather_object({"r": rank, "t": (rank, "x")}, got, dst=1)
    out = [None]
    D.scatter_object_list(out, [f"to {i}" for i in range(world)] if rank == 0 else None, src=0)
    out2 = [None]
    D.scatter_object_list(scatter_object_output_list=out2, scatter_object_input_list=[[i] * 2 for i in range(world)],
                          src=1)
    return [got, out, out2]


@case("collective:batch_isend_irecv")
def _(L, D, rank, world):
    out = L.zeros(3, dtype=L.float64)
    ops = [D.P2POp(D.isend, inexact(L, rank, n=3), 1 - rank), D.P2POp(D.irecv, out, 1 - rank)]
    works = D.batch_isend_irecv(ops)
    for w in works:
        w.wait()
    return [len(works), out]


@case("collective:monitored_barrier")
def _(L, D, rank, world):
    return [D.monitored_barrier(), D.monitored_barrier(wait_all_ranks=True)]


@case("collective:group-ranks")
def _(L, D, rank, world):
    g = D.new_group()
    return [D.get_process_group_ranks(g), D.get_global_rank(g, 1), D.get_group_rank(g, 0), D.get_rank(group=g),
            D.get_world_size(group=g)]


@case("collective:all_to_all_single-output-splits-only")
def _(L, D, rank, world):
    out = L.zeros(4, dtype=L.float64)
    D.all_to_all_single(out, inexact(L, rank, n=4), output_split_sizes=[2, 2])
    return out


@case("collective:all_to_all_single-2d-splits")
def _(L, D, rank, world):
    send = [1, 2] if rank == 0 else [3, 1]
    recv = [1, 3] if rank == 0 else [2, 1]
    out = L.zeros(sum(recv), 2, dtype=L.int64)
    D.all_to_all_single(out, data(L, rank, "int64", (sum(send), 2)), recv, send)
    return out


@case("collective:broadcast-bool-scalar-and-empty")
def _(L, D, rank, world):
    a, b = L.tensor(rank == 1), L.zeros(0, 2, dtype=L.float64)
    D.broadcast(a, src=1)
    D.broadcast(b, src=0)
    return [a, b]


@case("collective:all_reduce-bfloat16-sum-inexact")
def _(L, D, rank, world):
    t = inexact(L, rank, "bfloat16", n=8) * 3.7
    D.all_reduce(t)
    return t


@case("collective:work-exception-result")
def _(L, D, rank, world):
    t = inexact(L, rank)
    w = D.all_reduce(t, async_op=True)
    w.wait()
    return [w.exception(), w.is_success(), w.result()]


@case("collective:new_group-bad-rank")
def _(L, D, rank, world):
    D.new_group([0, world + 1])


# --------------------------------------------------------------------------------------------------
# DistributedDataParallel (``L.ddp`` set by the worker: torch's DDP class or minilora's)
# --------------------------------------------------------------------------------------------------
def _linear(L, n_in, n_out, scale):
    layer = L.nn.Linear(n_in, n_out, dtype=L.float64)
    with L.no_grad():
        layer.weight.copy_(L.tensor(((np.arange(n_in * n_out).reshape(n_out, n_in) % 7 - 3) * 0.1 * scale).tolist(),
                                    dtype=L.float64))
        layer.bias.copy_(L.tensor((np.arange(n_out) * 0.05 * scale).tolist(), dtype=L.float64))
    return layer


def _model(L, rank, frozen=False, buffer=True):
    class Net(L.nn.Module):
        def __init__(self):
            super().__init__()
            self.a = _linear(L, 3, 4, rank + 1)
            self.b = _linear(L, 4, 2, 1 - 0.5 * rank)
            self.c = _linear(L, 2, 2, 1.0)
            if frozen:
                self.b.requires_grad_(False)
            if buffer:
                self.register_buffer("scale", L.tensor([1.0 + rank], dtype=L.float64))

        def forward(self, x, use_c=True):
            h = self.b(self.a(x).tanh())
            if buffer:
                h = h * self.scale
            return self.c(h) if use_c else h
    return Net()


def _x(L, rank, k=0):
    return L.tensor(((np.arange(15).reshape(5, 3) % 4 - 1.5) * (0.3 + rank + k)).tolist(), dtype=L.float64)


def _grads(model):
    return {n: (None if p.grad is None else p.grad.tolist()) for n, p in model.named_parameters()}


def _state(model):
    return {n: v.tolist() for n, v in model.state_dict().items()}


@case("ddp:init-broadcast-trainable")
def _(L, D, rank, world):
    model = _model(L, rank)
    L.ddp(model)
    return _state(model)


@case("ddp:init-broadcast-frozen")
def _(L, D, rank, world):
    model = _model(L, rank, frozen=True)
    L.ddp(model)
    return _state(model)


@case("ddp:init-buffers-broadcast_buffers-False")
def _(L, D, rank, world):
    model = _model(L, rank)
    L.ddp(model, broadcast_buffers=False)
    return _state(model)


@case("ddp:init_sync-False")
def _(L, D, rank, world):
    model = _model(L, rank)
    L.ddp(model, init_sync=False)
    return _state(model)


@case("ddp:grads-average")
def _(L, D, rank, world):
    model = _model(L, rank)
    ddp = L.ddp(model)
    out = []
    for k in range(2):
        ddp(_x(L, rank, k)).pow(2).sum().backward()
        out.append(_grads(model))
        model.zero_grad()
    return out


@case("ddp:grads-frozen-middle")
def _(L, D, rank, world):
    model = _model(L, rank, frozen=True)
    ddp = L.ddp(model)
    ddp(_x(L, rank)).pow(2).sum().backward()
    return _grads(model)


@case("ddp:find_unused_parameters")
def _(L, D, rank, world):
    model = _model(L, rank)
    ddp = L.ddp(model, find_unused_parameters=True)
    out = []
    for k in range(3):
        ddp(_x(L, rank, k), use_c=(k + rank) % 2 == 0).pow(2).sum().backward()
        out.append(_grads(model))
    return out


@case("ddp:find_unused-comm-hook")
def _(L, D, rank, world):
    from importlib import import_module
    hooks = import_module(f"{L.__name__}.distributed.algorithms.ddp_comm_hooks.default_hooks")
    model = _model(L, rank)
    ddp = L.ddp(model, find_unused_parameters=True)
    ddp.register_comm_hook(None, hooks.allreduce_hook)
    out = []
    for k in range(3):
        ddp(_x(L, rank, k), use_c=(k + rank) % 2 == 0).pow(2).sum().backward()
        out.append(_grads(model))
    return out


@case("ddp:find_unused-zero_grad")
def _(L, D, rank, world):
    model = _model(L, rank)
    ddp = L.ddp(model, find_unused_parameters=True)
    out = []
    for k in range(3):
        ddp(_x(L, rank, k), use_c=(k + rank) % 2 == 0).pow(2).sum().backward()
        out.append(_grads(model))
        model.zero_grad(set_to_none=k != 1)
    return out


@case("ddp:no_sync-accumulation")
def _(L, D, rank, world):
    model = _model(L, rank)
    ddp = L.ddp(model)
    with ddp.no_sync():
        ddp(_x(L, rank, 0)).sum().backward()
        inside = _grads(model)
    ddp(_x(L, rank, 1)).sum().backward()
    return [inside, _grads(model)]


@case("ddp:buffers-after-no_sync-forward")
def _(L, D, rank, world):
    model = _model(L, rank)
    ddp = L.ddp(model)
    with ddp.no_sync():
        ddp(_x(L, rank)).sum().backward()
    with L.no_grad():
        model.scale.fill_(5.0 + rank)  # a rank's own change: the forward after a no_sync one does not sync
    out = ddp(_x(L, rank))
    return [model.scale, out.detach()]


@case("ddp:buffers-after-no_grad-forward")
def _(L, D, rank, world):
    model = _model(L, rank)
    ddp = L.ddp(model)
    with L.no_grad():
        ddp(_x(L, rank))
        model.scale.fill_(5.0 + rank)
    ddp(_x(L, rank)).sum().backward()
    first = model.scale.tolist()
    with L.no_grad():
        model.scale.fill_(7.0 + rank)
    ddp(_x(L, rank)).sum().backward()
    return [first, model.scale, _grads(model)]


@case("ddp:buffers-every-forward")
def _(L, D, rank, world):
    model = _model(L, rank)
    ddp = L.ddp(model, broadcast_buffers=True)
    outs = []
    for k in range(2):
        with L.no_grad():
            model.scale.fill_(3.0 + rank + k)
        outs.append(ddp(_x(L, rank)).detach())
    return [model.scale, outs]


@case("ddp:forward_sync_buffers-False")
def _(L, D, rank, world):
    model = _model(L, rank)
    ddp = L.ddp(model, forward_sync_buffers=False)
    with L.no_grad():
        model.scale.fill_(3.0 + rank)
    ddp(_x(L, rank))
    return _state(model)


@case("ddp:module-and-state_dict")
def _(L, D, rank, world):
    model = _model(L, rank)
    ddp = L.ddp(model)
    return [ddp.module is model, list(ddp.state_dict().keys()), [n for n, _ in ddp.named_parameters()],
            [n for n, _ in ddp.named_buffers()], ddp.training]


@case("ddp:attribute-of-module")
def _(L, D, rank, world):
    ddp = L.ddp(_model(L, rank))
    return ddp.a


@case("ddp:load_state_dict-module-prefix")
def _(L, D, rank, world):
    model = _model(L, rank)
    ddp = L.ddp(model)
    state = {k: v * 0 + 1 for k, v in ddp.state_dict().items()}
    result = ddp.load_state_dict(state)
    return [list(result.missing_keys), list(result.unexpected_keys), _state(model)]


@case("ddp:eval-train")
def _(L, D, rank, world):
    model = _model(L, rank)
    ddp = L.ddp(model)
    ddp.eval()
    flags = [ddp.training, model.training, model.a.training]
    ddp.train()
    return flags + [ddp.training, model.training]


@case("ddp:no-trainable")
def _(L, D, rank, world):
    model = _model(L, rank)
    model.requires_grad_(False)
    L.ddp(model)


@case("ddp:lora")
def _(L, D, rank, world):
    if L.__name__ == "torch":
        from peft import LoraConfig, get_peft_model
    else:
        from minilora.lora import LoraConfig, get_peft_model
    L.manual_seed(rank)  # each rank draws its own A: DDP's start makes them rank 0's
    model = get_peft_model(_model(L, 0, buffer=False), LoraConfig(r=2, lora_alpha=4, target_modules=["a", "b"],
                                                                  init_lora_weights="gaussian"))
    with L.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.fill_(0.25 * (rank + 1))  # differs per rank too
    ddp = L.ddp(model)
    ddp(_x(L, rank)).pow(2).sum().backward()
    state = {n: np.round(np.array(v), 12).tolist() for n, v in _state(model).items() if "lora_A" not in n}
    lora_a = {n: p.tolist() for n, p in model.named_parameters() if "lora_A" in n}
    same_a = [lora_a == other for other in _gathered_object(D, lora_a, world)]
    return [sorted(ddp.state_dict().keys()), state, same_a,
            {n: (None if p.grad is None else np.round(np.array(p.grad.tolist()), 12).tolist())
             for n, p in model.named_parameters() if "lora_A" not in n}]


def _gathered_object(D, obj, world):
    out = [None] * world
    D.all_gather_object(out, obj)
    return out


@case("ddp:static_graph-and-bucket-view")
def _(L, D, rank, world):
    out = []
    for kwargs in (dict(static_graph=True), dict(gradient_as_bucket_view=True), dict(bucket_cap_mb=1e-5)):
        model = _model(L, rank)
        ddp = L.ddp(model, **kwargs)
        steps = []
        for k in range(3):
            ddp(_x(L, rank, k)).pow(2).sum().backward()
            steps.append(_grads(model))
            model.zero_grad(set_to_none=False)
        out.append(steps)
    return out


@case("ddp:positional-arguments")
def _(L, D, rank, world):
    model = _model(L, rank)
    ddp = L.ddp(model, None, None, 0, False, True, None, 25, True)
    ddp(_x(L, rank), use_c=rank == 0).sum().backward()
    return [_state(model), _grads(model)]


@case("ddp:shared-weight")
def _(L, D, rank, world):
    model = _model(L, rank, buffer=False)
    model.c.weight = model.c.weight  # (kept) and a layer used twice
    ddp = L.ddp(model)

    def twice(x):
        return model.c(model.c(model.b(model.a(x).tanh())))
    ddp.module.forward = twice
    ddp(_x(L, rank)).pow(2).sum().backward()
    return _grads(model)


@case("ddp:find_unused-dict-output")
def _(L, D, rank, world):
    model = _model(L, rank)

    class Wrap(L.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = model

        def forward(self, x):
            return {"out": self.inner(x, use_c=rank == 1), "aux": [x.sum()]}
    ddp = L.ddp(Wrap(), find_unused_parameters=True)
    for k in range(2):
        ddp(_x(L, rank, k))["out"].sum().backward()
    return _grads(model)


@case("ddp:eval-no_grad-then-train")
def _(L, D, rank, world):
    model = _model(L, rank)
    ddp = L.ddp(model)
    ddp.eval()
    with L.no_grad():
        first = ddp(_x(L, rank))
    ddp.train()
    ddp(_x(L, rank, 1)).sum().backward()
    return [first, _grads(model)]


@case("ddp:no_sync-twice-then-sync")
def _(L, D, rank, world):
    model = _model(L, rank)
    ddp = L.ddp(model, find_unused_parameters=True)
    with ddp.no_sync():
        for k in range(2):
            ddp(_x(L, rank, k), use_c=(k + rank) % 2 == 0).sum().backward()
    ddp(_x(L, rank, 2), use_c=rank == 0).sum().backward()
    return _grads(model)


@case("api:send_object_list-recv_object_list")
def _(L, D, rank, world):
    if rank == 0:
        D.send_object_list([{"a": 1}, "two", 3.0], dst=1)
        D.send_object_list(object_list=[None, [1, 2]], dst=1)
        return None
    out, out2 = [None, None, None], [None, None, None]
    sender = D.recv_object_list(out, src=0)
    out2 = [None, None]
    sender2 = D.recv_object_list(object_list=out2, src=0)
    return [out, sender, out2, sender2]


@case("api:names")
def _(L, D, rank, world):
    return [D.is_torchelastic_launched(), D.default_pg_timeout.total_seconds(), D.get_node_local_rank(7)]


# --------------------------------------------------------------------------------------------------
# DistributedSampler inside the launcher: num_replicas and rank from the group
# --------------------------------------------------------------------------------------------------
@case("sampler:from-group")
def _(L, D, rank, world):
    from importlib import import_module
    U = import_module(f"{L.__name__}.utils.data")
    s = U.DistributedSampler(list(range(11)))
    s.set_epoch(3)
    return [list(s), len(s), s.num_replicas, s.rank]


def run_case(fn, L, D, rank, world):
    try:
        return "ok", plain(fn(L, D, rank, world))
    except Exception as error:  # noqa: BLE001 -- the type is what is compared
        return "error", type(error).__name__, str(error)[:300]


# --------------------------------------------------------------------------------------------------
# The worker (under mpirun)
# --------------------------------------------------------------------------------------------------
def worker(out, names=None):
    import datetime

    import torch
    import torch.distributed as tdist
    from torch.nn.parallel import DistributedDataParallel as TorchDDP

    import minilora as ml
    from minilora import distributed as dist
    from minilora.nn.parallel import DistributedDataParallel
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    dist.init_process_group("mpi", timeout=60)
    rank, world = dist.get_rank(), dist.get_world_size()
    tdist.init_process_group("gloo", init_method="file://" + os.path.join(out, "gloo_rendezvous"), rank=rank,
                             world_size=world, timeout=datetime.timedelta(seconds=60))
    torch.ddp, ml.ddp = TorchDDP, DistributedDataParallel
    results = {}
    try:
        libraries = (("torch", torch, tdist), ("minilora", ml, dist))
        for library, L, D in [x for x in libraries if x[0] in os.environ.get("SWEEP_LIBRARIES", "torch,minilora")]:
            results[library] = {}
            for name in names or list(CASES):  # (names: in their order)
                fn = CASES[name]
                if any(part and part in name for part in os.environ.get("SWEEP_SKIP", "").split(",")):
                    continue  # SWEEP_SKIP: cases that end the whole job on an older minilora
                start = time.monotonic()
                if os.environ.get("SWEEP_TRACE"):
                    print(f"rank {rank}: {library} {name}", file=sys.stderr, flush=True)
                results[library][name] = run_case(fn, L, D, rank, world)
                if time.monotonic() - start > 5:
                    print(f"rank {rank}: {library} {name} took {time.monotonic() - start:.0f} s", file=sys.stderr)
                if D is dist:  # (gloo may report a refused op's error at its next wait: no barrier there, as r6)
                    D.barrier()
                if names:  # a case that ends the job (MPI_Abort) leaves the earlier ones' results
                    _save(out, rank, results)
    except BaseException:
        import traceback
        with open(os.path.join(out, f"rank{rank}.error"), "w") as f:
            f.write(traceback.format_exc())
        raise
    _save(out, rank, results)
    tdist.destroy_process_group()
    dist.destroy_process_group()


def _save(out, rank, results):
    path = os.path.join(out, f"rank{rank}.pkl")
    with open(path + ".part", "wb") as f:
        pickle.dump(results, f)
    os.replace(path + ".part", path)


def same(theirs, ours):
    if theirs[0] == "error":
        return ours[0] == "error" and ours[1] == theirs[1]
    return ours == theirs


# --------------------------------------------------------------------------------------------------
# Without a launcher: before init_process_group, and DistributedSampler / DataLoader
# --------------------------------------------------------------------------------------------------
def uninitialised_forms():
    import torch
    import torch.distributed as tdist

    import minilora as ml
    from minilora import distributed as dist
    forms = {
        "get_rank": lambda L, D: D.get_rank(),
        "get_world_size": lambda L, D: D.get_world_size(),
        "is_initialized": lambda L, D: D.is_initialized(),
        "all_reduce": lambda L, D: D.all_reduce(L.ones(2)),
        "broadcast": lambda L, D: D.broadcast(L.ones(2), src=0),
        "barrier": lambda L, D: D.barrier(),
        "new_group": lambda L, D: D.new_group([0]),
        "all_gather_object": lambda L, D: D.all_gather_object([None], 1),
        "destroy_process_group": lambda L, D: D.destroy_process_group(),
        "get_backend": lambda L, D: D.get_backend(),
        "send": lambda L, D: D.send(L.ones(2), 1),
    }
    found = {}
    for name, fn in forms.items():
        pair = []
        for L, D in ((torch, tdist), (ml, dist)):
            try:
                pair.append(("ok", plain(fn(L, D))))
            except Exception as error:  # noqa: BLE001
                pair.append(("error", type(error).__name__, str(error)[:200]))
        found[f"uninitialised:{name}"] = pair
    return found


def sampler_forms():
    import torch
    import torch.utils.data as TU

    from minilora.utils import data as MU
    found = {}
    for n in (0, 1, 7, 10, 13):
        for replicas in (2, 3, 5):
            for shuffle, seed, drop_last in ((True, 0, False), (False, 0, False), (True, 3, True), (False, 0, True)):
                for rank in range(replicas):
                    args = dict(num_replicas=replicas, rank=rank, shuffle=shuffle, seed=seed, drop_last=drop_last)
                    pair = []
                    for U in (TU, MU):
                        s = U.DistributedSampler(list(range(n)), **args)
                        lists = []
                        for epoch in (0, 2):
                            s.set_epoch(epoch)
                            lists.append((list(s), list(s), len(s), s.num_samples, s.total_size))
                        pair.append(("ok", lists))
                    found[f"sampler:n{n}-{args}"] = pair
    positional = []
    for U in (TU, MU):
        s = U.DistributedSampler(list(range(10)), 3, 1, False, 0, True)
        positional.append(("ok", [list(s), len(s)]))
    found["sampler:positional"] = positional
    for name, call in (("rank-too-big", lambda U: U.DistributedSampler(range(5), num_replicas=2, rank=2)),
                       ("rank-negative", lambda U: U.DistributedSampler(range(5), num_replicas=2, rank=-1)),
                       ("no-group", lambda U: U.DistributedSampler(range(5))),
                       ("num_replicas-only", lambda U: U.DistributedSampler(range(5), num_replicas=2))):
        pair = []
        for U in (TU, MU):
            try:
                s = call(U)
                pair.append(("ok", [list(s)]))
            except Exception as error:  # noqa: BLE001
                pair.append(("error", type(error).__name__, str(error)[:200]))
        found[f"sampler:{name}"] = pair
    for bs, dl in ((3, False), (4, True), (1, False)):
        pair = []
        for L, U in ((torch, TU), (__import__("minilora"), MU)):
            dataset = U.TensorDataset(L.arange(11, dtype=L.float64), L.arange(11) * 2)
            s = U.DistributedSampler(dataset, num_replicas=3, rank=2, seed=5)
            loader = U.DataLoader(dataset, batch_size=bs, sampler=s, drop_last=dl)
            epochs = []
            for epoch in range(2):
                s.set_epoch(epoch)
                epochs.append([plain(b) for b in loader])
            pair.append(("ok", [epochs, len(loader)]))
        found[f"sampler:dataloader-bs{bs}-drop{dl}"] = pair
    pair = []
    for L, U in ((torch, TU), (__import__("minilora"), MU)):
        try:
            U.DataLoader(list(range(5)), sampler=U.DistributedSampler(range(5), 2, 0), shuffle=True)
            pair.append(("ok", None))
        except Exception as error:  # noqa: BLE001
            pair.append(("error", type(error).__name__, str(error)[:200]))
    found["sampler:dataloader-shuffle-and-sampler"] = pair
    return found


def launch(names=None):
    sys.path.insert(0, os.path.dirname(HERE))
    import background_runs
    from test_distributed import MPIRUN
    out = tempfile.mkdtemp(prefix="distributed_sweep_")
    env = dict(os.environ, MINILORA_NUM_THREADS="1", OMP_NUM_THREADS="1", PYTHONPATH=ROOT)
    command = MPIRUN + [sys.executable, HERE, out] + list(names or [])
    done = background_runs.run_process(command, env=env, cwd=out, timeout=600)
    code, stdout, stderr = done.returncode, done.stdout, done.stderr
    if code != 0:
        errors = "".join(open(os.path.join(out, f)).read() for f in os.listdir(out) if f.endswith(".error"))
        raise RuntimeError(f"mpirun failed ({code}):\n{errors}\n{stdout[-3000:]}\n{stderr[-8000:]}")
    ranks = []
    for r in range(WORLD):
        with open(os.path.join(out, f"rank{r}.pkl"), "rb") as f:
            ranks.append(pickle.load(f))
    return ranks


def main():
    names = sys.argv[1:]
    counts, differ = collections.Counter(), collections.Counter()
    ranks = launch(names)
    for name in ranks[0]["torch"]:
        cls = name.split(":")[0]
        counts[cls] += 1
        bad = [r for r, results in enumerate(ranks) if not same(results["torch"][name], results["minilora"][name])]
        if bad:
            differ[cls] += 1
            r = bad[0]
            print(f"DIFFER {name} (rank {r}):\n  torch    {str(ranks[r]['torch'][name])[:600]}\n"
                  f"  minilora {str(ranks[r]['minilora'][name])[:600]}")
    if not names:
        for name, (theirs, ours) in {**uninitialised_forms(), **sampler_forms()}.items():
            cls = name.split(":")[0]
            counts[cls] += 1
            if not same(theirs, ours):
                differ[cls] += 1
                print(f"DIFFER {name}:\n  torch    {str(theirs)[:600]}\n  minilora {str(ours)[:600]}")
    for cls in sorted(counts):
        print(f"{cls}: {differ[cls]} of {counts[cls]} forms differ")
    print(f"total: {sum(differ.values())} of {sum(counts.values())} forms differ")


if __name__ == "__main__":
    if len(sys.argv) > 1 and os.path.isdir(sys.argv[1]):
        worker(sys.argv[1], sys.argv[2:])
    else:
        main()
