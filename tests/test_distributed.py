"""Data parallelism under a real MPI launcher: ``mpirun -n 2`` runs this file's worker (the bottom
half, ``python tests/test_distributed.py SCENARIO OUT``) and the tests compare what the two ranks
wrote with a one-process run of the whole batch, in float64.

Skipped, with the reason, when mpi4py or an ``mpirun`` is not installed (``pip install
'minilora[distributed]'`` brings both).
"""
import os
import shutil
import subprocess
import sys
import time
import types

import numpy as np
import pytest

import background_runs
import minilora as ml
from minilora import distributed as dist
from minilora.data import DataLoader
from minilora.models import LlamaConfig, LlamaForCausalLM

HERE = os.path.abspath(__file__)
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.dirname(HERE))
import background_runs  # noqa: E402  (tests/, on the path just above)
B, STEPS, LENGTH = 3, 3, 10           # per-rank batch; the one-process reference uses 2 * B
BUCKET_CAP_MB = 600 / 2 ** 20         # buckets rebuilt after step 0 close at 600 bytes: 3 + 1 of the four
                                      # LoRA tensors (256 bytes each in float64), as torch's reducer cuts them


# --------------------------------------------------------------------------------------------------
# Shared by the worker and the tests
# --------------------------------------------------------------------------------------------------
def tiny_lora(seed):
    """A float64 tiny Llama (the same base on every rank) with LoRA on q/v whose A and B are drawn
    from ``seed``: ranks with different seeds start different, until DDP broadcasts rank 0's."""
    from minilora.lora import LoraConfig, get_peft_model
    ml.manual_seed(0)
    cfg = LlamaConfig(vocab_size=16, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                      num_attention_heads=2, max_position_embeddings=32, bos_token_id=0,
                      eos_token_id=1, pad_token_id=2)
    model = get_peft_model(LlamaForCausalLM(cfg).to(ml.float64),
                           LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"]))
    rng = np.random.default_rng(seed)
    with ml.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:  # B = 0 at init would give A no gradient: draw both
                p._array[...] = rng.normal(0, 0.3, p.shape)
    return model


def rows(n=40):
    """Rows of equal length, every token a target: each rank's mean loss weighs as much as the other's."""
    start = np.arange(n)[:, None]
    return ((start + np.arange(LENGTH)[None, :]) % 13 + 3).astype(np.int64)


def trainable(model):
    return {name: p.numpy(force=True).copy() for name, p in model.named_parameters() if p.requires_grad}


def grads(model):
    return {name: p.grad.numpy(force=True).copy() for name, p in model.named_parameters() if p.requires_grad}


# --------------------------------------------------------------------------------------------------
# The worker: runs in each rank under mpirun
# --------------------------------------------------------------------------------------------------
def worker_ddp(out):
    """STEPS AdamW steps of DDP, then two micro-batches with no_sync: every rank saves its
    gradients, parameters and the bytes it communicated."""
    from minilora.nn.parallel import DistributedDataParallel as DDP
    from minilora.optim import AdamW
    dist.init_process_group("mpi", timeout=60)
    rank, world = dist.get_rank(), dist.get_world_size()
    model = tiny_lora(seed=100 + rank)
    model.register_buffer("marker", ml.tensor([10.0 + rank], dtype=ml.float64))  # broadcast_buffers: rank 0's
    ddp = DDP(model, bucket_cap_mb=BUCKET_CAP_MB)
    record = {"buckets": np.array(len(ddp.buckets)),
              "broadcast_bytes": np.array(dist.comm_stats()["broadcast"]["bytes"])}
    for name, value in trainable(model).items():
        record[f"init/{name}"] = value
    loader = DataLoader(rows(), B, seed=3, num_replicas=world, rank=rank)
    optimizer = AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for step in range(STEPS):
        dist.reset_comm_stats()
        ids, labels = loader.batch(step)
        ddp(ids, labels=labels).loss.backward()
        stats = dist.comm_stats()["all_reduce"]
        record[f"step{step}/calls"], record[f"step{step}/bytes"] = np.array(stats["calls"]), np.array(stats["bytes"])
        record[f"step{step}/marker"] = model.marker.numpy(force=True).copy()
        for name, value in grads(model).items():
            record[f"step{step}/grad/{name}"] = value
        optimizer.step()
        optimizer.zero_grad()
        for name, value in trainable(model).items():
            record[f"step{step}/param/{name}"] = value
    # gradient accumulation: micro-batch STEPS without communication, STEPS + 1 with it
    dist.reset_comm_stats()
    with ddp.no_sync():
        ids, labels = loader.batch(STEPS)
        (ddp(ids, labels=labels).loss / 2).backward()
    record["nosync/calls_inside"] = np.array(dist.comm_stats().get("all_reduce", {"calls": 0})["calls"])
    ids, labels = loader.batch(STEPS + 1)
    (ddp(ids, labels=labels).loss / 2).backward()
    record["nosync/calls_after"] = np.array(dist.comm_stats()["all_reduce"]["calls"])
    for name, value in grads(model).items():
        record[f"nosync/grad/{name}"] = value
    np.savez(os.path.join(out, f"rank{rank}.npz"), **record)
    dist.destroy_process_group()


def worker_train(out):
    """``train()`` with a DDP model; each rank gets its own out_dir so rank 1's must stay empty."""
    from minilora.nn.parallel import DistributedDataParallel as DDP
    from minilora.train import train
    dist.init_process_group("mpi", timeout=60)
    rank, world = dist.get_rank(), dist.get_world_size()
    model = tiny_lora(seed=100 + rank)
    loader = DataLoader(rows(), B, seed=3, num_replicas=world, rank=rank)
    folder = os.path.join(out, f"run{rank}")
    result = train(DDP(model), loader, steps=STEPS, lr=1e-2, out_dir=folder, save_every=1, progress=False)
    np.savez(os.path.join(out, f"train{rank}.npz"), losses=np.array(result.losses), **trainable(model))


def worker_stuck(out):
    """Rank 1 never joins the all-reduce: rank 0 must give up after its timeout, and abort the job."""
    dist.init_process_group("mpi", timeout=3)
    if dist.get_rank() == 1:
        time.sleep(120)
    try:
        dist.all_reduce(ml.tensor([1.0]))
    except dist.DistBackendError as exc:
        print(f"rank 0: {exc}", file=sys.stderr, flush=True)
        dist.abort(3)


def worker_raises(out):
    """Rank 1's program ends with an exception: every rank must stop at once, not at the timeout."""
    dist.init_process_group("mpi", timeout=100)
    if dist.get_rank() == 1:
        raise RuntimeError("rank 1 broke")
    dist.all_reduce(ml.tensor([1.0]))


def worker_nccl(out):
    """One rank on the GPU through NCCL (no launcher: MPI starts as a singleton): the collectives,
    and DDP's gradients equal to a plain backward."""
    from minilora.nn.parallel import DistributedDataParallel as DDP
    dist.init_process_group("nccl", timeout=60)
    t = ml.tensor([1.0, 2.0, 4.0], device="cuda")
    dist.all_reduce(t)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    dist.broadcast(t, src=0)
    dist.barrier()
    assert t.numpy(force=True).tolist() == [1.0, 2.0, 4.0], t
    ids = rows()[:4]
    plain = tiny_lora(seed=1).to("cuda")
    plain(ids, labels=ids).loss.backward()
    wrapped = tiny_lora(seed=1).to("cuda")
    DDP(wrapped)(ids, labels=ids).loss.backward()
    for (name, a), b in zip(grads(plain).items(), grads(wrapped).values()):
        np.testing.assert_allclose(b, a, rtol=1e-12, err_msg=name)
    assert dist.comm_stats()["all_reduce"]["calls"] == 3  # two above, one bucket
    dist.destroy_process_group()
    print("nccl ok")


def worker_killed(out):
    """Rank 1 is killed (SIGKILL) before the all-reduce: the launcher must end rank 0 too."""
    import signal
    dist.init_process_group("mpi", timeout=100)
    if dist.get_rank() == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    dist.all_reduce(ml.tensor([1.0]))


# --------------------------------------------------------------------------------------------------
# The tests: start the workers with mpirun
# --------------------------------------------------------------------------------------------------
def _mpirun():
    """The launcher command, or a reason to skip."""
    if not dist.is_mpi_available():
        return None, "mpi4py is not installed (pip install 'minilora[distributed]')"
    launcher = shutil.which("mpirun") or shutil.which("mpiexec")
    if launcher is None:
        return None, "no mpirun/mpiexec on PATH (pip install 'minilora[distributed]' brings Open MPI)"
    version = subprocess.run([launcher, "--version"], capture_output=True, text=True).stdout
    command = [launcher, "-n", "2"]
    if "Open MPI" in version or "OpenRTE" in version:  # 2 ranks on however many cores; root in containers
        command += ["--oversubscribe"] + (["--allow-run-as-root"] if os.geteuid() == 0 else [])
    return command, None


MPIRUN, SKIP_REASON = _mpirun()
needs_mpi = pytest.mark.skipif(MPIRUN is None, reason=SKIP_REASON or "")


def launch(scenario, out, timeout=60, args=None):
    env = dict(os.environ, MINILORA_NUM_THREADS="1", PYTHONPATH=ROOT)
    command = MPIRUN + [sys.executable] + (args or [HERE, scenario, str(out)])
    start = time.monotonic()
    done = background_runs.run_process(command, env=env, cwd=str(out), timeout=timeout)  # (a limit a loaded CI
    # keeps, and no rank left running)
    return done, time.monotonic() - start


# The mpiruns whose time is not what their test checks run as background runs (tests/background_runs.py), on the
# core CI's main process leaves idle, with the regular runs (this file comes early): ~20 s of CI's main process
_ENV = {"MINILORA_NUM_THREADS": "1", "PYTHONPATH": ROOT}
DDP_RUN = "test_distributed: mpirun -n 2, DDP's steps"
TRAIN_RUNS = "test_distributed: minilora train, alone and under mpirun"
TRAIN = ["-m", "minilora", "train", "--batch-size", "4", "--eval-n", "2", "--eval-every", "0", "--no-progress"]


def _submit_ddp(runs):
    return runs.submit_commands(DDP_RUN, lambda out: [(MPIRUN + [sys.executable, HERE, "ddp", str(out)], _ENV)],
                                timeout=60)


def _submit_train(runs):
    """`minilora train` for 4 steps (one), the same under mpirun (two), 2 steps under mpirun then resumed by
    one process to 4 (resumed), one after the other in one folder."""
    return runs.submit_commands(TRAIN_RUNS, lambda out: [
        ([sys.executable] + TRAIN + ["--steps", "4", "--out", "one"], _ENV),
        (MPIRUN + [sys.executable] + TRAIN + ["--steps", "4", "--out", "two"], _ENV),
        (MPIRUN + [sys.executable] + TRAIN + ["--steps", "2", "--out", "resumed"], _ENV),
        ([sys.executable] + TRAIN + ["--steps", "4", "--out", "resumed", "--resume"], _ENV)], timeout=60)


def start_background_runs(items, runs):
    if MPIRUN is None:
        return
    if any("ddp_run" in getattr(item, "fixturenames", ()) and getattr(item, "module", None) is sys.modules[__name__]
           for item in items):
        _submit_ddp(runs)
    if background_runs.selected(
            items, __name__, "test_minilora_train_under_mpirun_matches_one_process_and_resumes_with_another_world_size"):
        _submit_train(runs)


@pytest.fixture(scope="module")
def ddp_run(background):
    out = _submit_ddp(background)
    [(returncode, stdout, stderr)] = background.result(DDP_RUN)
    assert returncode == 0, stdout + stderr
    return [dict(np.load(out / f"rank{r}.npz")) for r in range(2)]


def reference_steps():
    """One process, batch 2B: the gradients and parameters DDP must reproduce."""
    from minilora.optim import AdamW
    model = tiny_lora(seed=100)  # rank 0's init
    loader = DataLoader(rows(), 2 * B, seed=3)
    optimizer = AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    steps = []
    for step in range(STEPS):
        ids, labels = loader.batch(step)
        model(ids, labels=labels).loss.backward()
        g = grads(model)
        optimizer.step()
        optimizer.zero_grad()
        steps.append((g, trainable(model)))
    for step in (STEPS, STEPS + 1):  # the no_sync accumulation: two batches of 2B, each loss / 2
        ids, labels = loader.batch(step)
        (model(ids, labels=labels).loss / 2).backward()
    return steps, grads(model)


@needs_mpi
def test_two_ranks_give_the_one_process_gradients_and_identical_parameters(ddp_run):
    steps, _ = reference_steps()
    rank0, rank1 = ddp_run
    for name in steps[0][0]:
        np.testing.assert_array_equal(rank0[f"init/{name}"], rank1[f"init/{name}"])  # broadcast at construction
    for step, (ref_grads, ref_params) in enumerate(steps):
        for name in ref_grads:
            for rank in ddp_run:
                np.testing.assert_allclose(rank[f"step{step}/grad/{name}"], ref_grads[name], rtol=1e-12,
                                           atol=1e-14, err_msg=f"step {step} {name}")
            np.testing.assert_array_equal(rank0[f"step{step}/param/{name}"], rank1[f"step{step}/param/{name}"])
            np.testing.assert_allclose(rank0[f"step{step}/param/{name}"], ref_params[name], rtol=1e-10)
        for rank in ddp_run:
            assert rank[f"step{step}/marker"].tolist() == [10.0]  # rank 0's buffer, broadcast in forward


@needs_mpi
def test_only_trainable_gradients_cross_in_buckets(ddp_run):
    model = tiny_lora(seed=0)
    trainable_bytes = sum(p.numpy(force=True).nbytes for p in model.parameters() if p.requires_grad)
    frozen_bytes = sum(p.numpy(force=True).nbytes for p in model.parameters() if not p.requires_grad)
    assert frozen_bytes > 20 * trainable_bytes  # a LoRA model: so "only trainable" is a real difference
    for rank in ddp_run:
        assert int(rank["buckets"]) == 1  # torch's first iteration: one bucket, rebuilt after it
        # the start is rank 0's whole module, as torch's _sync_module_states: every parameter, frozen ones too
        # (round 33: only the trainable ones, a frozen layer made at random stayed each rank's), and the buffer
        buffer_bytes = sum(b.numpy(force=True).nbytes for b in model.buffers()) + 8  # (+ the worker's marker)
        assert int(rank["broadcast_bytes"]) == trainable_bytes + frozen_bytes + buffer_bytes
        for step in range(STEPS):  # one message per bucket, not one per tensor: 1 at step 0, then 2
            assert int(rank[f"step{step}/calls"]) == (1 if step == 0 else 2)
            assert int(rank[f"step{step}/bytes"]) == trainable_bytes


@needs_mpi
def test_no_sync_accumulates_locally_then_averages_the_sum(ddp_run):
    _, ref_grads = reference_steps()
    for rank in ddp_run:
        assert int(rank["nosync/calls_inside"]) == 0
        assert int(rank["nosync/calls_after"]) == 2
        for name, value in ref_grads.items():
            np.testing.assert_allclose(rank[f"nosync/grad/{name}"], value, rtol=1e-12, atol=1e-14)


@needs_mpi
def test_train_with_two_ranks_matches_one_process_and_only_rank0_writes(tmp_path):
    from minilora.train import train
    done, _ = launch("train", tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    model = tiny_lora(seed=100)
    single = train(model, DataLoader(rows(), 2 * B, seed=3), steps=STEPS, lr=1e-2, progress=False)
    for rank in range(2):
        saved = np.load(tmp_path / f"train{rank}.npz")
        np.testing.assert_allclose(saved["losses"], single.losses, rtol=1e-12)
        for name, value in trainable(model).items():
            np.testing.assert_allclose(saved[name], value, rtol=1e-10, atol=1e-12)
    assert sorted(os.listdir(tmp_path / "run0")) == ["checkpoint.npz", "loss.png", "metrics.jsonl"] or \
        sorted(os.listdir(tmp_path / "run0")) == ["checkpoint.npz", "metrics.jsonl"]  # no matplotlib: no png
    assert os.listdir(tmp_path / "run1") == []


@needs_mpi
def test_a_stuck_rank_makes_the_others_stop_after_the_timeout(tmp_path):
    done, seconds = launch("stuck", tmp_path)
    assert done.returncode != 0
    assert "all_reduce timed out after 3 s on rank 0 of 2" in done.stderr
    assert seconds < 30, "rank 0 waited for the stuck rank instead of giving up after its 3 s timeout"


@needs_mpi
def test_an_exception_in_one_rank_ends_every_rank_at_once(tmp_path):
    done, seconds = launch("raises", tmp_path)
    assert done.returncode != 0
    assert "RuntimeError: rank 1 broke" in done.stderr
    assert "rank 1 of 2 failed: stopping every rank (MPI_Abort)" in done.stderr
    assert seconds < 30, "rank 0 waited for its 100 s timeout"


@needs_mpi
def test_a_killed_rank_ends_the_job(tmp_path):
    done, seconds = launch("killed", tmp_path)
    assert done.returncode != 0
    assert seconds < 30


def _adapter(folder):
    from minilora.checkpoint import load_file
    return load_file(os.path.join(folder, "adapter", "adapter_model.safetensors"))


@needs_mpi
def test_minilora_train_under_mpirun_matches_one_process_and_resumes_with_another_world_size(background):
    """`mpirun -n 2 minilora train` = `minilora train` (same global --batch-size) to float32
    rounding; a 2-rank run resumed by 1 process ends where a straight 1-process run does; one rank
    prints and writes."""
    out = _submit_train(background)
    one, two, half, resumed = background.result(TRAIN_RUNS)  # each (exit code, stdout, stderr)
    assert one[0] == 0, one[2]
    assert two[0] == 0, two[1] + two[2]
    assert two[1].count("saved ") == 1 and two[1].count("before:") == 1  # rank 0 reports alone
    assert sorted(os.listdir(out / "two")) == sorted(os.listdir(out / "one"))
    assert half[0] == 0, half[1] + half[2]
    assert resumed[0] == 0, resumed[2]  # (warmup 20 steps: the lr of steps 1-4 ignores --steps)
    reference = _adapter(out / "one")
    for folder in ("two", "resumed"):
        adapter = _adapter(out / folder)
        for name, value in reference.items():
            np.testing.assert_allclose(adapter[name], value, rtol=0, atol=1e-6, err_msg=f"{folder}: {name}")


@needs_mpi
def test_minilora_train_refuses_a_batch_the_ranks_cannot_share(tmp_path):
    done, _ = launch(None, tmp_path, args=["-m", "minilora", "train", "--batch-size", "5", "--steps", "1"])
    assert done.returncode == 2
    assert "--batch-size 5 is the batch of a whole step, split over the 2 processes" in done.stderr


# --------------------------------------------------------------------------------------------------
# No launcher needed
# --------------------------------------------------------------------------------------------------
def test_nccl_unique_id_made_by_rank0_and_broadcast_over_mpi():
    """The NCCL rendezvous with fakes: only rank 0 asks NCCL for an id, every rank builds its
    communicator from rank 0's id, its own rank and the world size."""
    from minilora.distributed import _nccl_communicator
    sent = {}

    class FakeComm:
        def __init__(self, rank):
            self.rank = rank

        def Get_rank(self):
            return self.rank

        def Get_size(self):
            return 2

        def bcast(self, value, root):
            assert root == 0
            if self.rank == 0:
                sent["id"] = value
            return sent["id"]

    made = []
    fake_nccl = types.SimpleNamespace(
        get_unique_id=lambda: made.append("id") or (7, 1, 3),
        NcclCommunicator=lambda size, uid, rank: ("communicator", size, uid, rank))
    assert _nccl_communicator(FakeComm(0), fake_nccl) == ("communicator", 2, (7, 1, 3), 0)
    assert _nccl_communicator(FakeComm(1), fake_nccl) == ("communicator", 2, (7, 1, 3), 1)
    assert made == ["id"]


def _cuda_enabled():
    from minilora.device import all_devices
    return any(d.name == "cuda" and d.enabled() for d in all_devices())


@pytest.mark.skipif(not (_cuda_enabled() and dist.is_nccl_available() and dist.is_mpi_available()),
                    reason="needs a GPU, CuPy with NCCL, and mpi4py (for NCCL's rendezvous)")
def test_nccl_backend_on_cuda_with_one_rank(tmp_path):
    """benchmarks/gpu_check.sh runs this (its -k selects 'cuda'): NCCL's multi-rank logic is the
    MPI path's, tested above; here the NCCL calls themselves run."""
    env = dict(os.environ, PYTHONPATH=ROOT)
    done = background_runs.run_process([sys.executable, HERE, "nccl", str(tmp_path)], env=env, timeout=120)
    assert done.returncode == 0 and "nccl ok" in done.stdout, done.stdout + done.stderr


def test_post_accumulate_grad_hook_runs_once_per_backward_after_accumulation():
    """The hook DDP is built on (torch's Tensor.register_post_accumulate_grad_hook)."""
    w = ml.tensor([1.0, 2.0], requires_grad=True)
    seen = []
    handle = w.register_post_accumulate_grad_hook(lambda t: seen.append(t.grad.numpy(force=True).tolist()))
    (w * 3).sum().backward()
    (w * w + w).sum().backward()  # w used twice in one graph: still one call, with the whole sum
    assert seen == [[3.0, 3.0], [3.0 + 3.0, 3.0 + 5.0]]
    (ml.tensor([1.0], requires_grad=True) * 2).sum().backward()  # another leaf's backward: not w's hook
    assert len(seen) == 2
    handle.remove()
    (w * 3).sum().backward()
    assert len(seen) == 2
    with pytest.raises(RuntimeError, match="non-leaf"):
        (w * 2).register_post_accumulate_grad_hook(print)


def test_collectives_before_init_say_what_to_do():
    if dist.is_initialized():
        pytest.skip("a process group is already initialized in this process")
    with pytest.raises(ValueError, match="init_process_group"):
        dist.all_reduce(ml.tensor([1.0]))
    from minilora.nn.parallel import DistributedDataParallel
    with pytest.raises(ValueError, match="init_process_group"):
        DistributedDataParallel(tiny_lora(0))


def test_init_process_group_names_what_it_cannot_do():
    with pytest.raises(ValueError, match="backend must be 'mpi' or 'nccl'"):
        dist.init_process_group("gloo")
    with pytest.raises(ValueError, match="meet through the MPI launcher"):
        dist.init_process_group("mpi", init_method="tcp://10.0.0.1:23456")
    assert not dist.is_initialized()


def test_data_loader_shards_are_disjoint_and_make_the_one_process_batch():
    items = rows(23)
    whole = DataLoader(items, 6, seed=5)
    shards = [DataLoader(items, 2, seed=5, num_replicas=3, rank=r) for r in range(3)]
    for i in range(10):  # across several epochs (23 items: batches wrap)
        together = np.concatenate([s.batch(i)[0] for s in shards])
        assert sorted(map(tuple, together)) == sorted(map(tuple, whole.batch(i)[0]))
    epoch = [row for s in shards for ids, _ in s for row in map(tuple, ids)]
    assert sorted(epoch) == sorted(map(tuple, items))  # one epoch: each item once, on one rank
    with pytest.raises(ValueError, match="rank"):
        DataLoader(items, 2, num_replicas=2, rank=2)


if __name__ == "__main__":
    scenario, out_dir = sys.argv[1], sys.argv[2]
    {"ddp": worker_ddp, "train": worker_train, "stuck": worker_stuck, "killed": worker_killed,
     "raises": worker_raises, "nccl": worker_nccl}[scenario](out_dir)
