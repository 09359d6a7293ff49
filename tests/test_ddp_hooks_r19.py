"""DDP communication hooks on torch's buckets: ``mpirun -n 2`` runs this file's worker (``python
tests/test_ddp_hooks_r19.py worker OUT``) once; each rank saves what its hooks saw (``bucket.index()``,
``parameters()``, the undivided ``buffer()``) and the gradients DDP left. The tests compare them with
torch's buckets (``torch.distributed._compute_bucket_assignment_by_size`` on the order torch's engine
accumulates a plain torch model's gradients in) and with NumPy replaying torch's hooks step by step.
"""
import json
import os
import sys

import numpy as np
import pytest
import torch

import minilora as ml
from minilora import distributed as dist

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_distributed import MPIRUN, needs_mpi  # noqa: E402  (the launcher, or why not)

HERE = os.path.abspath(__file__)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(ml.__file__)))  # the minilora this test imported
CAP_MB = 0.0001  # 104 bytes: a few of the small model's tensors a bucket
STEPS = 3


def small_model(nn):
    """float32 Linear layers with biases (torch accumulates a bias before its weight) and a ReLU."""
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3), nn.Linear(3, 2))


# --------------------------------------------------------------------------------------------------
# The worker: runs in each rank under mpirun
# --------------------------------------------------------------------------------------------------
def _recording(hook, names, seen):
    """``hook`` with a record of each call: the bucket's index, is_last, parameter names and buffer."""
    def recording_hook(state, bucket):
        seen.append({"index": bucket.index(), "last": bucket.is_last(),
                     "names": [names[id(p)] for p in bucket.parameters()],
                     "shapes": [list(g.shape) for g in bucket.gradients()],
                     "buffer": bucket.buffer().numpy().astype(np.float64).tolist()})
        return hook(state, bucket)
    return recording_hook


def _run(hook_name, out, find_unused=False):
    from minilora.distributed.algorithms.ddp_comm_hooks import default_hooks
    from minilora.nn.parallel import DistributedDataParallel as DDP
    rank = dist.get_rank()
    ml.manual_seed(0)
    model = small_model(ml.nn)
    names = {id(p): n for n, p in model.named_parameters()}
    ddp = DDP(model, bucket_cap_mb=CAP_MB, find_unused_parameters=find_unused)
    hook = {"allreduce": default_hooks.allreduce_hook, "fp16": default_hooks.fp16_compress_hook,
            "fp16_wrapper": default_hooks.fp16_compress_wrapper(default_hooks.allreduce_hook)}[hook_name]
    steps = []
    seen = []
    ddp.register_comm_hook(None, _recording(hook, names, seen))
    ml.manual_seed(10 + rank)
    for _ in range(STEPS):
        seen.clear()
        for p in model.parameters():
            p.grad = None
        ddp(ml.randn(5, 4)).pow(2).sum().backward()
        steps.append({"calls": list(seen), "grads": {n: p.grad.numpy().astype(np.float64).tolist()
                                                     for n, p in model.named_parameters()}})
    return steps


def _errors():
    """register_comm_hook's refusals, in the order torch checks them."""
    from minilora.distributed.algorithms.ddp_comm_hooks import default_hooks
    from minilora.nn.parallel import DistributedDataParallel as DDP
    ddp = DDP(small_model(ml.nn))
    found = []

    def annotated_bucket(state, bucket: int):
        return None

    def annotated_return(state, bucket) -> int:
        return None

    for hook in (None, 5, annotated_bucket, annotated_return, default_hooks.bf16_compress_hook,
                 default_hooks.bf16_compress_wrapper(default_hooks.allreduce_hook), default_hooks.allreduce_hook,
                 default_hooks.allreduce_hook):
        try:
            ddp.register_comm_hook(None, hook)
            found.append(None)
        except Exception as error:  # noqa: BLE001 - the type and words are what is compared
            found.append([type(error).__name__, str(error)])
    return found


def _bf16_called_directly():
    """The bfloat16 hook and wrapper called as functions (register_comm_hook refuses them off NCCL, as torch)."""
    from minilora.distributed.algorithms.ddp_comm_hooks import default_hooks
    ml.manual_seed(20 + dist.get_rank())
    local = ml.randn(64)
    found = {"local": local.numpy().astype(np.float64).tolist()}
    for name, hook in (("hook", default_hooks.bf16_compress_hook),
                       ("wrapper", default_hooks.bf16_compress_wrapper(default_hooks.allreduce_hook))):
        result = hook(None, dist.GradBucket(0, local.clone(), [], True)).wait()
        found[name] = [str(result.dtype), result.float().numpy().astype(np.float64).tolist()]
    return found


def worker(out):
    dist.init_process_group("mpi", timeout=60)
    record = {hook: _run(hook, out) for hook in ("allreduce", "fp16", "fp16_wrapper")}
    record["bf16"] = _bf16_called_directly()
    record["unused"] = _run("allreduce", out, find_unused=True)
    record["errors"] = _errors()
    with open(os.path.join(out, f"rank{dist.get_rank()}.json"), "w") as f:
        json.dump(record, f)
    dist.destroy_process_group()


def worker_three(out):
    """Three ranks with the same batch: DDP's mean (no hook) of three equal gradients, and the local one."""
    from minilora.nn.parallel import DistributedDataParallel as DDP
    dist.init_process_group("mpi", timeout=60)
    ml.manual_seed(0)
    model = small_model(ml.nn)
    ml.manual_seed(1)
    x = ml.randn(5, 4)
    model(x).pow(2).sum().backward()
    local = {n: p.grad.numpy().copy() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    DDP(model)(x).pow(2).sum().backward()
    np.savez(os.path.join(out, f"three{dist.get_rank()}.npz"),
             **{f"local/{n}": g for n, g in local.items()}, **{f"ddp/{n}": p.grad.numpy() for n, p in
                                                                 model.named_parameters()})
    dist.destroy_process_group()


# --------------------------------------------------------------------------------------------------
# The tests
# --------------------------------------------------------------------------------------------------
RUN = "test_ddp_hooks_r19: mpirun -n 2, the hooks' records"
RUN_THREE = "test_ddp_hooks_r19: mpirun -n 3, gradients scaled by 1/3"
_ENV = {"MINILORA_NUM_THREADS": "1", "PYTHONPATH": ROOT}


def _submit(runs):
    """Queue both mpiruns (a no-op when queued already) as background runs (tests/background_runs.py), on the core
    CI's main process leaves idle, with the regular runs (this file comes early): their folders."""
    two = runs.submit_commands(RUN, lambda out: [(MPIRUN + [sys.executable, HERE, "worker", str(out)], _ENV)],
                               timeout=120)
    three = runs.submit_commands(RUN_THREE, lambda out: [
        ([MPIRUN[0], "-n", "3"] + MPIRUN[3:] + [sys.executable, HERE, "three", str(out)], _ENV)], timeout=120)
    return two, three


def start_background_runs(items, runs):
    if MPIRUN is not None and any(getattr(getattr(item, "module", None), "__name__", None) == __name__
                                  for item in items):
        _submit(runs)


@pytest.fixture(scope="module")
def ranks(background):
    out, _ = _submit(background)
    [(returncode, stdout, stderr)] = background.result(RUN)
    assert returncode == 0, stdout + stderr
    return [json.load(open(out / f"rank{r}.json")) for r in range(2)]


@needs_mpi
def test_without_a_hook_each_gradient_is_scaled_by_one_over_world_size_before_the_sum(background):
    """torch's reducer multiplies a gradient by 1/world size (0.33333334f for 3 ranks) as it copies it into
    the bucket and sums the products; with three equal gradients the sum's order does not matter."""
    _, out = _submit(background)
    [(returncode, stdout, stderr)] = background.result(RUN_THREE)
    assert returncode == 0, stdout + stderr
    differs = False
    for rank in range(3):
        saved = np.load(out / f"three{rank}.npz")
        for name in [k[len("local/"):] for k in saved.files if k.startswith("local/")]:
            g = saved[f"local/{name}"]
            third = g * np.float32(1 / 3)
            np.testing.assert_array_equal(saved[f"ddp/{name}"], (third + third) + third, err_msg=name)
            differs |= not np.array_equal((g + g + g) / np.float32(3), (third + third) + third)
    assert differs  # (summing, then dividing, gives other bits for some of them)


def torch_buckets():
    """torch's reducer's buckets for small_model at bucket_cap_mb=CAP_MB: iteration 1's one bucket (in
    registration order), then the rebuilt ones, from the order torch's engine accumulates the gradients."""
    model = small_model(torch.nn)
    names = {p: n for n, p in model.named_parameters()}
    params = list(model.parameters())
    order = []
    for p in params:
        p.register_post_accumulate_grad_hook(lambda p: order.append(p))
    model(torch.randn(5, 4)).pow(2).sum().backward()
    cap = int(CAP_MB * 2 ** 20)
    rebuilt, _ = torch.distributed._compute_bucket_assignment_by_size(
        order, [cap, cap], [], [next(i for i, q in enumerate(params) if q is p) for p in order])
    first = [[names[p] for p in params]]
    return first, [[names[params[i]] for i in bucket] for bucket in rebuilt]  # (indices into params)


def seen_buckets(step):
    return [call["names"] for call in sorted(step["calls"], key=lambda call: call["index"])]


@needs_mpi
def test_a_hook_sees_torchs_one_bucket_then_the_rebuilt_ones(ranks):
    first, rebuilt = torch_buckets()
    for rank in ranks:
        steps = rank["allreduce"]
        assert seen_buckets(steps[0]) == first
        assert seen_buckets(steps[1]) == seen_buckets(steps[2]) == rebuilt
        assert [call["index"] for call in steps[1]["calls"]] == list(range(len(rebuilt)))  # reduced in order
        assert [call["last"] for call in steps[1]["calls"]] == [False] * (len(rebuilt) - 1) + [True]


@needs_mpi
def test_gradients_are_the_views_of_the_buffer_in_its_order(ranks):
    model = small_model(torch.nn)
    shapes = {n: list(p.shape) for n, p in model.named_parameters()}
    for call in ranks[0]["allreduce"][1]["calls"]:
        assert call["shapes"] == [shapes[n] for n in call["names"]]
        assert len(call["buffer"]) == sum(int(np.prod(shapes[n])) for n in call["names"])


@needs_mpi
def test_find_unused_parameters_keeps_the_size_cut_reversed_buckets(ranks):
    """With find_unused_parameters=True torch cuts by size from the start (reversed) and never rebuilds."""
    model = small_model(torch.nn)
    names = [n for n, _ in model.named_parameters()]
    assignment, _ = torch.distributed._compute_bucket_assignment_by_size(list(model.parameters()),
                                                                       [int(CAP_MB * 2 ** 20)])
    expected = [[names[i] for i in bucket] for bucket in reversed(assignment)]
    for step in ranks[0]["unused"]:
        assert seen_buckets(step) == expected


def _pieces(ranks, hook, step):
    """Each rank's undivided local gradients, flat per bucket, and the names in each."""
    per_rank = [[np.array(c["buffer"], np.float32) for c in sorted(r[hook][step]["calls"], key=lambda c: c["index"])]
                for r in ranks]
    return per_rank, seen_buckets(ranks[0][hook][step])


def _check(ranks, hook, combine):
    for step in range(STEPS):
        buffers, buckets = _pieces(ranks, hook, step)
        for index, bucket_names in enumerate(buckets):
            expected, offset = combine(buffers[0][index], buffers[1][index]), 0
            for name in bucket_names:
                for rank in ranks:
                    got = np.array(rank[hook][step]["grads"][name], np.float32)
                    np.testing.assert_array_equal(got.reshape(-1), expected[offset:offset + got.size],
                                                  err_msg=f"{hook} step {step} {name}")
                offset += got.size


@needs_mpi
def test_allreduce_hook_divides_then_sums_in_float32(ranks):
    _check(ranks, "allreduce", lambda a, b: (a / np.float32(2)) + (b / np.float32(2)))


def _fp16_round_trip(a, b):
    """torch's fp16_compress_hook: cast to float16, divide there (in float32, rounded to float16), sum in
    float16, cast back."""
    halves = [(x.astype(np.float16).astype(np.float32) / np.float32(2)).astype(np.float16) for x in (a, b)]
    return (halves[0].astype(np.float64) + halves[1].astype(np.float64)).astype(np.float16).astype(np.float32)


@needs_mpi
def test_fp16_compress_hook_rounds_as_torchs(ranks):
    _check(ranks, "fp16", _fp16_round_trip)
    buffers, _ = _pieces(ranks, "fp16", 1)
    plain = (buffers[0][0] / 2 + buffers[1][0] / 2)
    assert not np.array_equal(_fp16_round_trip(buffers[0][0], buffers[1][0]), plain)  # it did round


@needs_mpi
def test_fp16_compress_wrapper_of_allreduce_is_fp16_compress_hook(ranks):
    _check(ranks, "fp16_wrapper", _fp16_round_trip)


@needs_mpi
def test_bf16_hook_and_wrapper_round_as_torchs(ranks):
    """torch's own ops replay the hook: cast, divide in bfloat16, sum two bfloat16s (one rounding)."""
    halves = [torch.tensor(rank["bf16"]["local"], dtype=torch.float32).to(torch.bfloat16).div_(2) for rank in ranks]
    total = halves[0] + halves[1]
    for rank in ranks:
        assert rank["bf16"]["hook"][0] == "float32"  # copied back into the float32 buffer
        assert rank["bf16"]["wrapper"][0] == "bfloat16"  # the wrapper hands DDP its bfloat16 buffer
        for _, values in (rank["bf16"]["hook"], rank["bf16"]["wrapper"]):
            np.testing.assert_array_equal(np.array(values, np.float32), total.float().numpy())


@needs_mpi
def test_register_comm_hook_refuses_in_torchs_words(ranks):
    callable_ = ["TypeError", "Communication hook must be callable."]
    bf16 = ["TypeError", "BF16 all reduce communication hook required CUDA 11+ and NCCL 2.10+ or XPU and XCCL"]
    assert ranks[0]["errors"] == [
        callable_, callable_,
        ["ValueError", "Communication hook: bucket annotation should be dist.GradBucket."],
        ["ValueError", "Communication hook: return annotation should be torch.futures.Future[torch.Tensor]."],
        bf16, bf16,  # torch's CPU build (gloo, MPI): NCCL only
        None,
        ["RuntimeError", "register_comm_hook or register_builtin_comm_hook can only be called once."]]


# ---- without a process group ---------------------------------------------------------------------
def test_the_ready_order_read_off_the_graph_is_torch_engines():
    from minilora.nn.parallel import _torch_ready_order
    ml.manual_seed(0)
    model = small_model(ml.nn)
    order = _torch_ready_order(model(ml.randn(5, 4)).pow(2).sum())
    names = {id(p): n for n, p in model.named_parameters()}
    mine = [names[key] for key in sorted(order, key=order.get)]
    reference = small_model(torch.nn)
    torch_names, theirs = {p: n for n, p in reference.named_parameters()}, []
    for p in reference.parameters():
        p.register_post_accumulate_grad_hook(lambda p: theirs.append(torch_names[p]))
    reference(torch.randn(5, 4)).pow(2).sum().backward()
    assert mine == theirs


def test_a_lora_layers_B_is_ready_before_its_A_as_peft():
    """PEFT's lora_B(lora_A(x)): torch finishes lora_B's gradient first (minilora's fused op tells it)."""
    from minilora.lora import LoraConfig, get_peft_model
    from minilora.nn.parallel import _torch_ready_order
    ml.manual_seed(0)
    model = get_peft_model(ml.nn.Sequential(ml.nn.Linear(4, 6), ml.nn.ReLU(), ml.nn.Linear(6, 2)),
                           LoraConfig(r=2, target_modules=["0", "2"]))
    order = _torch_ready_order(model(ml.randn(3, 4)).sum())
    names = {id(p): n for n, p in model.named_parameters()}
    mine = [names[key].replace("base_model.model.", "") for key in sorted(order, key=order.get)]
    assert mine == ["2.lora_B.default.weight", "2.lora_A.default.weight",
                    "0.lora_B.default.weight", "0.lora_A.default.weight"]


def test_grad_bucket_gradients_are_views_of_its_buffer():
    """torch's GradBucket.gradients(): the buffer's pieces, shaped as the parameters (a write shows in buffer())."""
    weight, bias = ml.zeros(2, 3, requires_grad=True), ml.zeros(2, requires_grad=True)
    bucket = dist.GradBucket(1, ml.arange(8.0), [bias, weight], False)
    pieces = bucket.gradients()
    assert [tuple(g.shape) for g in pieces] == [(2,), (2, 3)] and bucket.index() == 1 and not bucket.is_last()
    assert pieces[1].tolist() == [[2.0, 3.0, 4.0], [5.0, 6.0, 7.0]]
    pieces[1].mul_(10)
    assert bucket.buffer().tolist() == [0.0, 1.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0]
    assert [p is q for p, q in zip(bucket.parameters(), [bias, weight])] == [True, True]


def test_future_set_then_wait_value_as_torchs():
    from minilora.futures import Future
    for module, Fut, make in ((ml, Future, ml.tensor), (torch, torch.futures.Future, torch.tensor)):
        fut = Fut()
        assert not fut.done()
        chained = fut.then(lambda f: f.value() * 2)
        fut.set_result(make([1.0, 2.0]))
        assert fut.done() and fut.wait().tolist() == [1.0, 2.0]
        assert chained.wait().tolist() == [2.0, 4.0] and chained.value().tolist() == [2.0, 4.0]
        with pytest.raises(RuntimeError):
            fut.set_result(make([0.0]))
        failing = Fut()
        failing.set_exception(ValueError("no"))
        with pytest.raises(ValueError, match="no"):
            failing.wait()


def test_future_of_tensor_is_the_annotation_torchs_check_accepts():
    from minilora.futures import Future
    assert Future[ml.Tensor] == Future[ml.Tensor] and Future[ml.Tensor] != Future[int]
    assert dist.GradBucket is not None and dist._DEFAULT_FIRST_BUCKET_BYTES == torch.distributed._DEFAULT_FIRST_BUCKET_BYTES


if __name__ == "__main__":
    {"worker": worker, "three": worker_three}[sys.argv[1]](sys.argv[2])
