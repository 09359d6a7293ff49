"""PowerSGD and the other built-in DDP comm hooks against torch's own, run side by side.

One ``mpirun -n 3`` launch (``python tests/test_ddp_powersgd_r20.py worker OUT``): each rank trains the
same small model twice, minilora's DDP over MPI and torch's DDP over gloo (both in the same process,
the same weights and batches, the same hook), and saves both sets of gradients after every step: ranks
0 and 1 in a group of two, then all three (gloo's ring order of additions shows there).
"""
import json
import os
import pickle
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import minilora as ml  # noqa: E402
from minilora import distributed as dist  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_distributed import MPIRUN, needs_mpi  # noqa: E402  (the launcher, or why not)

HERE = os.path.abspath(__file__)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(ml.__file__)))  # the minilora this test imported
STEPS = 5
CAP_MB = 0.0001  # 104 bytes: a few tensors a bucket


def make_model(nn):
    """Two (6, 6) weights (batching by shape), biases (rank-1 factors of an n x 1 matrix), small products."""
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 6), nn.Linear(6, 6), nn.Linear(6, 6),
                         nn.Linear(6, 2))


# --------------------------------------------------------------------------------------------------
# The worker: one side of each comparison per framework, in every rank
# --------------------------------------------------------------------------------------------------
def _minilora_side():
    from minilora.distributed.algorithms.ddp_comm_hooks import (
        post_localSGD_hook as post, powerSGD_hook as psgd, quantization_hooks as quant)
    return dict(nn=ml.nn, dist=dist, psgd=psgd, post=post, quant=quant, DDP=ml.nn.parallel.DistributedDataParallel,
                tensor=ml.tensor, no_grad=ml.no_grad)


def _torch_side():
    import torch.distributed as tdist
    from torch.distributed.algorithms.ddp_comm_hooks import (
        post_localSGD_hook as post, powerSGD_hook as psgd, quantization_hooks as quant)
    return dict(nn=torch.nn, dist=tdist, psgd=psgd, post=post, quant=quant,
                DDP=torch.nn.parallel.DistributedDataParallel, tensor=torch.tensor, no_grad=torch.no_grad)


def _weights():
    """Halves of small integers: with small integer inputs every local gradient is exact, so minilora's and
    torch's (BLAS against MKL) are the same numbers and the hooks start from the same bits."""
    rng = np.random.default_rng(0)
    return {n: (rng.integers(-2, 3, tuple(p.shape)) / 2).astype(np.float32)
            for n, p in make_model(ml.nn).named_parameters()}


def _finished(hook_fn):
    """torch's PowerSGD callbacks all-reduce on gloo's threads, one per bucket, and several buckets can
    deadlock there; waiting in the hook runs the buckets one after another (minilora's order), same numbers."""
    def hook(state, bucket):
        future = hook_fn(state, bucket)
        future.wait()
        return future
    return hook


def _scenarios(side, group, local_group):
    """name -> (DDP keywords, a function registering the hook on the DDP model); ``group``: the ranks that
    train, ``local_group``: this rank alone (post-local SGD's subgroup)."""
    psgd, post, quant, builtin = side["psgd"], side["post"], side["quant"], side["dist"].BuiltinCommHookType

    def per_channel_of_16(state, bucket):  # (rows of 16 numbers: several a bucket, the last padded)
        return quant.quantization_perchannel_hook(state, bucket, bucket_size=16)

    def hook(hook_fn, state_fn):
        return lambda ddp: ddp.register_comm_hook(state_fn(), _finished(hook_fn))

    def checkpointed(ddp):  # the state is pickled and restored mid-run, as a resumed training does
        holder = [psgd.PowerSGDState(group, start_powerSGD_iter=2, min_compression_rate=0.5)]

        def resumed_hook(state, bucket):
            if bucket.index() == 0 and holder[0].iter == 3:
                holder[0] = pickle.loads(pickle.dumps(holder[0]))
                holder[0].process_group = group  # (restored onto the default group, as torch's note says)
            return psgd.powerSGD_hook(holder[0], bucket)
        ddp.register_comm_hook(None, _finished(resumed_hook))

    small = dict(bucket_cap_mb=CAP_MB, process_group=group)
    return {
        "rank1": (small, hook(psgd.powerSGD_hook, lambda: psgd.PowerSGDState(
            group, start_powerSGD_iter=2, min_compression_rate=0.5))),
        "rank2_by_shape": (dict(process_group=group), hook(psgd.powerSGD_hook, lambda: psgd.PowerSGDState(
            group, matrix_approximation_rank=2, start_powerSGD_iter=1, use_error_feedback=False, warm_start=False,
            batch_tensors_with_same_shape=True, random_seed=7, min_compression_rate=0.6))),
        "defaults": (small, hook(psgd.powerSGD_hook, lambda: psgd.PowerSGDState(group, start_powerSGD_iter=2))),
        "epsilon": (dict(process_group=group), hook(psgd.powerSGD_hook, lambda: psgd.PowerSGDState(
            group, start_powerSGD_iter=3, orthogonalization_epsilon=1e-8, min_compression_rate=0.5))),
        "checkpoint": (small, checkpointed),
        "batched": (small, hook(psgd.batched_powerSGD_hook, lambda: psgd.PowerSGDState(group, start_powerSGD_iter=2))),
        "no_hook": (small, lambda ddp: None),  # (each gradient times 1/world size, then summed)
        "builtin_allreduce": (small, lambda ddp: ddp._register_builtin_comm_hook(builtin.ALLREDUCE)),
        "builtin_fp16": (small, lambda ddp: ddp._register_builtin_comm_hook(builtin.FP16_COMPRESS)),
        "post_local": (small, hook(post.post_localSGD_hook, lambda: post.PostLocalSGDState(
            group, local_group, start_localSGD_iter=2))),
        "quantize_per_tensor": (small, hook(quant.quantization_pertensor_hook, lambda: group)),
        "quantize_per_channel": (dict(process_group=group), hook(per_channel_of_16, lambda: group)),
    }


def _train(side, name, rank, group, local_group=None):
    """STEPS backwards of the DDP model with ``name``'s hook; the gradients after each."""
    model = make_model(side["nn"])
    with side["no_grad"]():
        for n, p in model.named_parameters():
            p.copy_(side["tensor"](_weights()[n]))
    keywords, register = _scenarios(side, group, local_group)[name]
    ddp = side["DDP"](model, **keywords)
    register(ddp)
    steps = []
    for step in range(STEPS):
        x = np.random.default_rng(1000 * step + rank).integers(-2, 3, (5, 4)).astype(np.float32)
        for p in model.parameters():
            p.grad = None
        ddp(side["tensor"](x)).pow(2).sum().backward()
        steps.append({n: p.grad.numpy().astype(np.float64).tolist() for n, p in model.named_parameters()})
    return steps


def _torch_batched_as_documented():
    """torch 2.13's batched_powerSGD_hook hands its 2-D Q to the batched ``_orthogonalize`` and fails its
    assertion at the first compressed step; the hook as documented (and as minilora runs it) is a batch of one."""
    from torch.distributed.algorithms.ddp_comm_hooks import powerSGD_hook as psgd
    batched = psgd._orthogonalize
    psgd._orthogonalize = lambda m, epsilon=0: batched(m.unsqueeze(0) if m.dim() == 2 else m, epsilon)


def _torch_quantization_as_documented():
    """torch 2.13's quantization hooks read ``fut.wait()[0]`` of an all-gather as every rank's tensors stacked
    (``[rank, 0, :]``); gloo's Future holds them as a flat list, so the hooks fail (IndexError, TypeError) at
    their first bucket. Their all-gather here hands them the stack they expect (what minilora's compute with)."""
    import torch.distributed as tdist
    from torch.distributed.algorithms.ddp_comm_hooks import quantization_hooks

    class Gathered:
        def __init__(self, out):
            self.future = torch.futures.Future()
            self.future.set_result([torch.stack(out)])

        def get_future(self):
            return self.future

    class Distributed:
        def __getattr__(self, name):
            return getattr(tdist, name)

        def all_gather(self, out, tensor, group=None, async_op=False):
            tdist.all_gather(out, tensor, group=group)
            return Gathered(out)
    quantization_hooks.dist = Distributed()


class _TorchBucket:
    """What torch's hooks read of a GradBucket (torch's own cannot be built from Python)."""

    def __init__(self, buffer, shapes):
        self._buffer, self._shapes = buffer, shapes

    def buffer(self):
        return self._buffer

    def index(self):
        return 0

    def is_last(self):
        return True

    def gradients(self):
        pieces, at = [], 0
        for shape in self._shapes:
            n = int(np.prod(shape))
            pieces.append(self._buffer[at:at + n].view(shape))
            at += n
        return pieces


def _one_rank_group(mine_group, theirs_group):
    """A world of one rank (a group of rank 0 alone): both hooks called directly on one bucket, STEPS steps,
    rank 3 (QR: LAPACK's rounding) included."""
    from minilora.distributed.algorithms.ddp_comm_hooks import powerSGD_hook as mine
    from torch.distributed.algorithms.ddp_comm_hooks import powerSGD_hook as theirs
    shapes = [(8, 4), (8,), (3, 8), (3,), (8, 4), (2, 3, 2)]
    params = [ml.zeros(*shape, requires_grad=True) for shape in shapes]
    n, found = sum(int(np.prod(s)) for s in shapes), {}
    for rank in (1, 2, 3):
        options = dict(matrix_approximation_rank=rank, start_powerSGD_iter=2, min_compression_rate=0.5)
        states = mine.PowerSGDState(mine_group, **options), theirs.PowerSGDState(theirs_group, **options)
        rows = []
        for step in range(STEPS):
            g = np.random.default_rng(step).standard_normal(n).astype(np.float32)
            a = mine.powerSGD_hook(states[0], dist.GradBucket(0, ml.tensor(g), params, True)).wait()
            b = theirs.powerSGD_hook(states[1], _TorchBucket(torch.tensor(g), shapes)).wait()
            rows.append([a.numpy().astype(np.float64).tolist(), b.numpy().astype(np.float64).tolist()])
        found[rank] = rows
    return found


def _as_list(array):
    """JSON numbers: float64, a complex number as its two parts."""
    return (array.view(array.real.dtype) if array.dtype.kind == "c" else array).astype(np.float64).tolist()


def _sums(rank):
    """all_reduce (float32, float16, float64, a product), reduce, reduce_scatter_tensor and reduce_scatter:
    minilora's, gloo's, and the inputs."""
    import torch.distributed as tdist
    sums = {}
    for key, n, dtype, op in (("f32", 1001, "float32", "SUM"), ("f16", 500, "float16", "SUM"),
                              ("f64", 77, "float64", "SUM"), ("prod", 99, "float32", "PRODUCT"),
                              ("c64", 333, "complex64", "SUM"),
                              ("reduce", 1001, "float32", "SUM"), ("scatter_tensor", 1002, "float32", "SUM"),
                              ("scatter_list", 1002, "float32", "SUM")):
        rng = np.random.default_rng(10 * rank + n)
        x = rng.standard_normal(n) * np.exp(3 * rng.standard_normal(n))
        x = (x + 1j * x[::-1] if key == "c64" else x).astype(dtype)
        results = []
        for module, make in ((dist, ml.tensor), (tdist, torch.tensor)):
            t, reduce_op = make(x), getattr(module.ReduceOp, op)
            if key == "reduce":
                module.reduce(t, dst=1, op=reduce_op)
            elif key.startswith("scatter"):
                out = make(np.zeros(n // 3, dtype))
                if key == "scatter_tensor":
                    module.reduce_scatter_tensor(out, t, op=reduce_op)
                else:
                    module.reduce_scatter(out, list(t.chunk(3)), op=reduce_op)
                t = out
            else:
                module.all_reduce(t, op=reduce_op)
            results.append(_as_list(t.numpy()))
        sums[key] = results + [_as_list(x)]
    return sums


TWO_RANK_SCENARIOS = ["rank1", "rank2_by_shape", "defaults", "epsilon", "checkpoint", "batched", "builtin_allreduce",
                      "builtin_fp16", "post_local", "quantize_per_tensor", "quantize_per_channel"]
THREE_RANK_SCENARIOS = ["no_hook", "builtin_allreduce", "rank1"]


def worker(out):
    """Three ranks: ranks 0 and 1 train in a group of two (every scenario), then all three (a few), each with
    minilora over MPI and torch over gloo; rank 0 also calls the hooks in a group of its own."""
    import torch.distributed as tdist
    dist.init_process_group("mpi", timeout=300)
    rank = dist.get_rank()
    tdist.init_process_group("gloo", init_method=f"file://{out}/gloo_store", rank=rank, world_size=3)
    groups = [(make([0, 1]), make([0]), make([1])) for make in (dist.new_group, tdist.new_group)]
    record = {"two": {}, "three": {}}
    if rank < 2:
        for name in TWO_RANK_SCENARIOS:
            if name == "batched":
                _torch_batched_as_documented()
            if name.startswith("quantize"):
                _torch_quantization_as_documented()
            record["two"][name] = {side: _train(make(), name, rank, pair, alone[rank]) for side, make, (pair, *alone)
                                   in (("mine", _minilora_side, groups[0]), ("torch", _torch_side, groups[1]))}
    if rank == 0:
        record["one_rank"] = _one_rank_group(groups[0][1], groups[1][1])
    record["sums"] = _sums(rank)
    for name in THREE_RANK_SCENARIOS:
        record["three"][name] = {"mine": _train(_minilora_side(), name, rank, None),
                                 "torch": _train(_torch_side(), name, rank, None)}
    with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
        json.dump(record, f)
    tdist.destroy_process_group()
    dist.destroy_process_group()


# --------------------------------------------------------------------------------------------------
# The tests
# --------------------------------------------------------------------------------------------------
RUN = "test_ddp_powersgd_r20: mpirun -n 3, torch's DDP hooks and minilora's"


def _submit(runs):
    """Queue the mpirun (a no-op when queued already) as a background run (tests/background_runs.py), on the core
    CI's main process leaves idle, with the regular runs (this file comes early): its folder."""
    def commands(out):
        return [([MPIRUN[0], "-n", "3"] + MPIRUN[3:] + [sys.executable, HERE, "worker", str(out)],
                 {"MINILORA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": ROOT})]
    return runs.submit_commands(RUN, commands, timeout=300)


def start_background_runs(items, runs):
    if MPIRUN is not None and any(getattr(getattr(item, "module", None), "__name__", None) == __name__ and
                                  "ranks" in getattr(item, "fixturenames", ()) for item in items):
        _submit(runs)


@pytest.fixture(scope="module")
def ranks(background):
    out = _submit(background)
    [(returncode, stdout, stderr)] = background.result(RUN)
    assert returncode == 0, stdout[-3000:] + stderr[-3000:]
    return [json.load(open(out / f"rank{r}.json")) for r in range(3)]


def _same_gradients(records, name):
    for rank, record in enumerate(records):
        for step in range(STEPS):
            for param, theirs in record[name]["torch"][step].items():
                np.testing.assert_array_equal(np.array(record[name]["mine"][step][param], np.float32),
                                              np.array(theirs, np.float32),
                                              err_msg=f"{name}: rank {rank} step {step} {param}")


@needs_mpi
@pytest.mark.parametrize("name", ["rank1", "rank2_by_shape", "defaults", "epsilon", "checkpoint"])
def test_powerSGD_hook_gives_torchs_gradients_over_two_ranks(ranks, name):
    """Error feedback and warm start across steps, the rank-1 fallback of biases, batching by shape, and a
    state pickled and restored mid-run (its P, Q, errors and seed generator carry on)."""
    two = [r["two"] for r in ranks[:2]]
    _same_gradients(two, name)
    compressed = np.array(two[0][name]["mine"][STEPS - 1]["2.weight"])
    plain = np.array(two[0]["builtin_allreduce"]["mine"][STEPS - 1]["2.weight"])
    assert not np.array_equal(compressed, plain)  # (it did compress)


@needs_mpi
def test_a_restored_state_carries_on_as_if_never_saved(ranks):
    assert ranks[0]["two"]["checkpoint"]["mine"] == ranks[0]["two"]["rank1"]["mine"]


@needs_mpi
@pytest.mark.parametrize("name", ["builtin_allreduce", "builtin_fp16", "post_local", "quantize_per_tensor",
                                  "quantize_per_channel"])
def test_builtin_hooks_post_local_sgd_and_quantization_give_torchs_gradients(ranks, name):
    _same_gradients([r["two"] for r in ranks[:2]], name)
    if name.startswith("quantize"):  # (8-bit numbers crossed the network: not the plain mean)
        plain = ranks[0]["two"]["builtin_allreduce"]["mine"][STEPS - 1]["0.weight"]
        assert ranks[0]["two"][name]["mine"][STEPS - 1]["0.weight"] != plain


@needs_mpi
def test_post_local_sgd_stops_averaging_over_all_ranks_at_its_iteration(ranks):
    late = [np.array(r["two"]["post_local"]["mine"][STEPS - 1]["0.weight"]) for r in ranks[:2]]
    early = [np.array(r["two"]["post_local"]["mine"][0]["0.weight"]) for r in ranks[:2]]
    assert np.array_equal(early[0], early[1]) and not np.array_equal(late[0], late[1])


@needs_mpi
def test_batched_powerSGD_hook_as_torch_documents_it(ranks):
    """torch's matrix-vector products here are MKL's (minilora's OpenBLAS's): equal to rounding."""
    for record in ranks[:2]:
        for step in range(STEPS):
            for param, theirs in record["two"]["batched"]["torch"][step].items():
                scale = np.abs(theirs).max()  # (a rounding of the whole bucket's matrix: relative to its size)
                np.testing.assert_allclose(record["two"]["batched"]["mine"][step][param], theirs, atol=1e-5 * scale)


@needs_mpi
def test_a_world_of_one_rank_gets_torchs_bits(ranks):
    for rank, rows in ranks[0]["one_rank"].items():
        for step, (mine, theirs) in enumerate(rows):
            if rank == "3" and step >= 2:  # QR: LAPACK's (OpenBLAS against MKL) rounding
                np.testing.assert_allclose(mine, theirs, rtol=1e-4, atol=1e-5)
            else:
                assert mine == theirs, (rank, step)


@needs_mpi
def test_three_ranks_add_in_gloos_ring_order(ranks):
    """all_reduce of float32, float16 (each addition rounded to float16, as gloo), float64, complex64 (as its
    real view: gloo's chunks may cut a number in two) and a product;
    reduce, reduce_scatter_tensor (the whole input's order) and reduce_scatter (each piece's): gloo's bits."""
    for rank, record in enumerate(ranks):
        for key, (mine, theirs, _) in record["sums"].items():
            if key != "reduce" or rank == 1:  # (gloo leaves partial sums in the other ranks' tensors)
                assert mine == theirs, key
    x = [np.float32(record["sums"]["f32"][2]) for record in ranks]
    assert not np.array_equal((x[0] + x[1]) + x[2], np.float32(ranks[0]["sums"]["f32"][1]))  # (the order shows)


@needs_mpi
@pytest.mark.parametrize("name", THREE_RANK_SCENARIOS)
def test_three_ranks_ddp_and_powerSGD_give_torchs_gradients(ranks, name):
    _same_gradients([r["three"] for r in ranks], name)


# ---- without a process group ---------------------------------------------------------------------
def test_state_refuses_an_early_start_and_pickles_torchs_fields():
    from minilora.distributed.algorithms.ddp_comm_hooks import powerSGD_hook as mine
    from torch.distributed.algorithms.ddp_comm_hooks import powerSGD_hook as theirs
    for module in (mine, theirs):
        with pytest.raises(ValueError, match=r"Expect `start_powerSGD_iter` > 1 if `use_error_feedback` or "
                                             r"`warm_start` is enabled, because PowerSGD can only be applied"):
            module.PowerSGDState(None, start_powerSGD_iter=1)
    assert mine.PowerSGDState.__slots__ == theirs.PowerSGDState.__slots__
    state = mine.PowerSGDState(None, random_seed=3)
    assert sorted(state.__getstate__()) == sorted(theirs.PowerSGDState(None).__getstate__())
    assert state.rng.randint(1_000_000_000) == theirs.PowerSGDState(None, random_seed=3).rng.randint(1_000_000_000)


def test_hook_type_names_are_torchs():
    from minilora.distributed.algorithms import ddp_comm_hooks as mine
    from torch.distributed.algorithms import ddp_comm_hooks as theirs
    assert [t.name for t in mine.DDPCommHookType] == [t.name for t in theirs.DDPCommHookType]
    assert [(t.name, int(t)) for t in dist.BuiltinCommHookType] == \
        [(n, int(t)) for n, t in torch.distributed.BuiltinCommHookType.__members__.items()]


@pytest.mark.parametrize("shape", [(1, 8, 4, 1), (3, 16, 16, 1), (2, 9, 10, 2), (1, 21, 19, 1)])
def test_a_small_bmm_adds_its_products_in_order_as_torchs(shape):
    """torch's CPU bmm below 400 multiply-adds a matrix is ATen's loop (no BLAS): its bits, and its gradients'
    (torch's BmmBackward0: ``grad @ mat2^T`` and ``self^T @ grad``, bmm's too)."""
    b, n, m, r = shape
    rng = np.random.default_rng(0)
    a, q = rng.standard_normal((b, n, m)).astype(np.float32), rng.standard_normal((b, m, r)).astype(np.float32)
    g = rng.standard_normal((b, n, r)).astype(np.float32)
    x, y = ml.tensor(a, requires_grad=True), ml.tensor(q, requires_grad=True)
    ta, tq, tg = torch.tensor(a), torch.tensor(q), torch.tensor(g)
    out = ml.bmm(x, y)
    np.testing.assert_array_equal(out.numpy(), torch.bmm(ta, tq).numpy())
    np.testing.assert_array_equal((x @ y).numpy(), torch.matmul(ta, tq).numpy())
    out.backward(ml.tensor(g))
    np.testing.assert_array_equal(x.grad.numpy(), torch.bmm(tg, tq.transpose(1, 2)).numpy())
    np.testing.assert_array_equal(y.grad.numpy(), torch.bmm(ta.transpose(1, 2), tg).numpy())


def test_ring_chunks_follow_gloos_segments():
    from minilora.distributed._ring_order import chunk_bounds
    assert chunk_bounds(12, 4, 3) == [(0, 4), (4, 8), (8, 12)]
    assert chunk_bounds(5, 4, 3) == [(0, 2), (2, 4), (4, 5)]  # one element a segment, the last chunk short
    assert chunk_bounds(1, 4, 3) == [(0, 1), (1, 1), (1, 1)]
    # 8 MB of float32: nine 1 MiB-bounded segments, three a rank
    assert chunk_bounds(2_000_000, 4, 3) == [(0, 666_669), (666_669, 1_333_338), (1_333_338, 2_000_000)]
    # gloo's reduce sizes its segments first: 1 MiB each, nine of them
    assert chunk_bounds(2_000_000, 4, 3, reduce=True) == [(0, 786_432), (786_432, 1_572_864), (1_572_864, 2_000_000)]


if __name__ == "__main__":
    {"worker": worker}[sys.argv[1]](sys.argv[2])
