# %% [markdown]
# # 9. Data parallelism: why LoRA makes it cheap
#
# One process trains on one batch at a time. **Data parallelism** runs `p` copies of the same
# program (*ranks*): every rank holds the whole model, takes its own slice of each batch, computes
# its gradients, and then the ranks **all-reduce** the gradients -- every rank ends with the average --
# so all of them take the same optimizer step and stay identical.
#
# The price is the all-reduce: every step, every rank sends and receives about as many numbers as
# there are *trained* parameters. Full fine-tuning trains all of them; LoRA trains a fraction of a
# percent, and a frozen weight has no gradient to send. This notebook measures that, with two real
# processes started by an MPI launcher (`mpirun -n 2`), and proves that 2 ranks with batch `b` each
# train exactly the adapter that 1 process trains with batch `2b`.
#
# **Read beside it:** `minilora/distributed/__init__.py` (`init_process_group`, `all_reduce`, `comm_stats`),
# `minilora/nn/parallel.py` (`DistributedDataParallel`: broadcast at construction, gradients in
# buckets), `minilora/data.py` (`DataLoader(..., num_replicas, rank)`: each rank's slice),
# `minilora/train.py` (`train` with a DDP model), `tests/test_distributed.py`.
#
# The `mpirun` cells need `mpi4py` and an MPI launcher (`pip install 'minilora[distributed]'`); without
# them they print why they were skipped, and the rest of the notebook still runs.

# %%
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

import minilora as ml
from minilora import data, memory
from minilora import distributed as dist
from minilora.lora import LoraConfig, get_peft_model
from minilora.models import load_base
from minilora.tokenizer import ByteTokenizer
from minilora.train import train

tok = ByteTokenizer()
CONFIG = LoraConfig(r=8, lora_alpha=16, target_modules="all-linear")
ml.manual_seed(0)
model = get_peft_model(load_base(), CONFIG)
model.print_trainable_parameters()

# %% [markdown]
# ## What crosses the network, on paper
#
# `DistributedDataParallel` (torch's name, and minilora's) all-reduces the gradient of every
# parameter with `requires_grad`, and nothing else: the frozen base never moves. So the bytes per step
# are the trainable parameters times 4 (float32). For Llama-2-7B, with LoRA r = 8 on `q_proj` and
# `v_proj` (the LoRA paper's setting) against full fine-tuning, and the time that takes with a **ring
# all-reduce**, which sends `2 (p - 1) / p` times the buffer from every rank, on a 25 Gbit/s link
# (ordinary Ethernet between machines) and on a 400 Gbit/s one (InfiniBand). Next to it, the step's
# arithmetic on one GPU: about `6 x parameters x tokens` FLOPs for a full fine-tuning step (forward 2,
# backward 4; Kaplan et al. 2020, "Scaling Laws for Neural Language Models", section 2.1), here for
# 4,096 tokens at an H200's dense bfloat16 peak of 989 TFLOP/s.
#
# **Predict:** over 25 Gbit/s Ethernet, is full fine-tuning's all-reduce shorter or longer than the
# step's arithmetic? And LoRA's?

# %%
def ring_seconds(nbytes, ranks, gbit_per_s):
    """Time of one ring all-reduce of ``nbytes`` over ``ranks`` ranks, bandwidth-bound (latency ignored)."""
    return 2 * (ranks - 1) / ranks * nbytes / (gbit_per_s * 1e9 / 8)


full_7b = memory.estimate("llama-2-7b").trainable_params
lora_7b = memory.estimate("llama-2-7b", LoraConfig(r=8, target_modules=["q_proj", "v_proj"])).trainable_params
print(f"Llama-2-7B gradients per step: full {full_7b * 4 / 1e9:.1f} GB, LoRA q,v r=8 {lora_7b * 4 / 1e6:.1f} MB "
      f"({full_7b / lora_7b:,.0f}x less)")
links = (25, 400)
fig, ax = plt.subplots(figsize=(6.5, 3.2))
for i, (label, n) in enumerate((("full fine-tuning", full_7b), ("LoRA q,v r=8", lora_7b))):
    seconds = [ring_seconds(n * 4, 8, g) for g in links]
    print(f"{label:<17} 8 ranks: {seconds[0] * 1e3:10.1f} ms at 25 Gbit/s, {seconds[1] * 1e3:8.2f} ms at 400 Gbit/s")
    ax.bar(np.arange(len(links)) + 0.38 * i, seconds, width=0.38, label=label)
ax.set(xticks=np.arange(len(links)) + 0.19, xticklabels=[f"{g} Gbit/s" for g in links], yscale="log",
       ylabel="seconds per step", title="Llama-2-7B: one gradient all-reduce, 8 ranks (ring)")
ax.legend()
plt.show()
compute_s = 6 * full_7b * 4096 / 989e12
print(f"the arithmetic of a full step on 4,096 tokens, at peak: {compute_s * 1e3:.0f} ms")
assert ring_seconds(full_7b * 4, 8, 25) > 10 * compute_s and ring_seconds(lora_7b * 4, 8, 25) < 0.1 * compute_s
assert round(lora_7b * 4 / 1e6, 1) == 16.8 and round(full_7b / lora_7b, -2) == 1600

# %% [markdown]
# Full fine-tuning spends seconds per step just averaging gradients over Ethernet -- far longer than
# the step's arithmetic on a GPU -- which is why it needs InfiniBand-class links (and an all-reduce
# that overlaps the backward pass). LoRA's 16.8 MB take milliseconds even over Ethernet: data-parallel
# LoRA works on ordinary machines.
#
# ## Measured: two processes
#
# Now for real, on the shipped base model with the adapter above. The script below is what each
# rank runs. `init_process_group("mpi")` learns its rank and the world size from the launcher; the
# LoRA matrices are drawn from a *different* seed on each rank, and `DistributedDataParallel`
# broadcasts rank 0's at construction (without that the ranks would train different models).
# `train` is the same function as in notebook 6: given a DDP model it averages the gradients, and
# the loader gives each rank every second example of the global batch. After training, one more
# forward and backward counts the bytes of one gradient all-reduce with `comm_stats()` -- for the LoRA
# model and for the same base with every weight trainable (full fine-tuning).
#
# **Predict first.** Above: the LoRA model's trainable parameters, and all of them (base + LoRA). How
# many bytes does one rank put into the gradient all-reduce of one step, for LoRA and for full
# fine-tuning?

# %%
prediction = None   # (lora_bytes, full_bytes)

# %%
WORKER = r'''
import json, sys
import numpy as np
import minilora as ml
from minilora import data, distributed as dist
from minilora.lora import LoraConfig, get_peft_model
from minilora.models import load_base
from minilora.nn.parallel import DistributedDataParallel as DDP
from minilora.tokenizer import ByteTokenizer
from minilora.train import train

BATCH, STEPS, OUT = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]  # BATCH: per rank
dist.init_process_group("mpi", timeout=60)
rank, world = dist.get_rank(), dist.get_world_size()
tok = ByteTokenizer()

ml.manual_seed(rank)  # a different LoRA init on every rank: DDP must broadcast rank 0's
model = get_peft_model(load_base(), LoraConfig(r=8, lora_alpha=16, target_modules="all-linear"))
ddp = DDP(model)
every = data.task_loader(tok, "qa", "train", batch_size=BATCH, seed=0)
mine = data.DataLoader(every.items, BATCH, every.seed, every.pad_id, every.shuffle, num_replicas=world, rank=rank)
train(ddp, mine, steps=STEPS, lr=3e-3, warmup_steps=2, progress=False)
np.savez(f"{OUT}/rank{rank}.npz", **{n: p.numpy() for n, p in model.named_parameters() if p.requires_grad})

def gradient_bytes(wrapped):
    """Bytes this rank sends into the all-reduce of one backward pass."""
    ids, labels = mine.batch(STEPS)
    dist.reset_comm_stats()
    wrapped(ids, labels=labels).loss.backward()
    stats = dist.comm_stats()["all_reduce"]
    return {"calls": stats["calls"], "bytes": stats["bytes"]}

counts = {"lora": gradient_bytes(ddp), "full": gradient_bytes(DDP(load_base()))}
json.dump(counts, open(f"{OUT}/counts{rank}.json", "w"))
dist.destroy_process_group()
'''
Path("ddp_worker.py").write_text(WORKER)


def mpirun_command(n):
    """``mpirun -n N`` (with Open MPI's flags for 2 ranks on few cores, and for running as root), or a reason."""
    if not dist.is_mpi_available():
        return None, "mpi4py is not installed (pip install 'minilora[distributed]')"
    launcher = shutil.which("mpirun") or shutil.which("mpiexec")
    if launcher is None:
        return None, "no mpirun/mpiexec on PATH (pip install 'minilora[distributed]' brings Open MPI)"
    command = [launcher, "-n", str(n)]
    version = subprocess.run([launcher, "--version"], capture_output=True, text=True).stdout
    if "Open MPI" in version or "OpenRTE" in version:
        command += ["--oversubscribe"] + (["--allow-run-as-root"] if os.geteuid() == 0 else [])
    return command, None


BATCH, STEPS = 4, 6
MPIRUN, skip_reason = mpirun_command(2)
if MPIRUN is None:
    print(f"skipped: {skip_reason}")
else:
    os.makedirs("ddp", exist_ok=True)
    env = dict(os.environ, PYTHONPATH=str(Path(ml.__file__).resolve().parents[1]), MINILORA_NUM_THREADS="1")
    start = time.perf_counter()
    done = subprocess.run(MPIRUN + [sys.executable, "ddp_worker.py", str(BATCH), str(STEPS), "ddp"],
                          capture_output=True, text=True, env=env, timeout=90)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    print(f"2 ranks x batch {BATCH}, {STEPS} steps: {time.perf_counter() - start:.1f} s of wall-clock time (with "
          f"start-up; one minilora thread a rank)")
    counts = [json.loads(Path(f"ddp/counts{r}.json").read_text()) for r in range(2)]
    for rank, c in enumerate(counts):
        print(f"rank {rank}: LoRA {c['lora']['bytes']:>9,d} bytes in {c['lora']['calls']} message(s) | "
              f"full {c['full']['bytes']:>9,d} bytes in {c['full']['calls']} message(s)")

# %% [markdown]
# The numbers, against what the parameters predict:

# %%
trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
everything = sum(p.numel() for p in load_base().parameters())
print(f"expected: LoRA {trainable:,d} x 4 = {trainable * 4:,d} bytes, full {everything:,d} x 4 = {everything * 4:,d} bytes")
if MPIRUN is None:
    print(f"skipped: {skip_reason}")
else:
    lora_bytes, full_bytes = counts[0]["lora"]["bytes"], counts[0]["full"]["bytes"]
    assert lora_bytes == trainable * 4 and full_bytes == everything * 4
    print(f"measured: LoRA {lora_bytes:,d}, full {full_bytes:,d} -- {full_bytes / lora_bytes:.1f}x more for full"
          + (f"; you predicted {prediction}" if prediction is not None else ""))

# %% [markdown]
# Exactly the trainable parameters, in float32, and nothing of the frozen base. One message, not one
# per tensor: DDP flattens the gradients into *buckets* (up to 25 MiB each by default, torch's
# `bucket_cap_mb`; everything here fits in one) so that each all-reduce is large enough to use the link
# well. (The shipped model is tiny and LoRA here is on all seven projections at r = 8, so it saves only
# about 10x; for Llama-2-7B with q, v it is 1,600x, above. `train` also all-reduces a few float64
# numbers per step -- the token count of each micro-batch, then the loss, the token total and a stop
# flag: 32 bytes with one micro-batch; see `_token_weight` and `_agree` in `minilora/train.py`.)
#
# ## The equivalence: 2 ranks x batch b == 1 process x batch 2b
#
# Rank `r` of 2 takes positions `r, r + 2, r + 4, ...` of the same shuffled stream of examples, so the
# two ranks' batches of step `i` together are exactly batch `i` of size `2b` that one process sees.
# Each rank's loss is a mean over its own target tokens, and `train` weighs it by its share of the
# tokens, so the averaged gradient is the gradient of the whole batch's mean loss. Then AdamW takes
# the same step everywhere. So in exact arithmetic the adapter trained by two ranks is the one
# process's adapter. In float32?
#
# **Predict:** will rank 0 and rank 1 agree bit for bit? And rank 0 with the single process?

# %%
ml.manual_seed(0)  # rank 0's LoRA init, which DDP broadcast to rank 1
single = get_peft_model(load_base(), CONFIG)
start = time.perf_counter()
train(single, data.task_loader(tok, "qa", "train", batch_size=2 * BATCH, seed=0), steps=STEPS, lr=3e-3,
      warmup_steps=2, progress=False)
print(f"1 process x batch {2 * BATCH}, {STEPS} steps: {time.perf_counter() - start:.1f} s of wall-clock time; "
      f"both runs on {ml.parallel.machine_description()}")
reference = {n: p.numpy() for n, p in single.named_parameters() if p.requires_grad}
ml.manual_seed(0)
start_point = {n: p.numpy() for n, p in get_peft_model(load_base(), CONFIG).named_parameters() if p.requires_grad}
if MPIRUN is None:
    print(f"skipped: {skip_reason}")
else:
    ranks = [dict(np.load(f"ddp/rank{r}.npz")) for r in range(2)]
    identical = all(np.array_equal(ranks[0][n], ranks[1][n]) for n in reference)
    worst = max(float(np.abs(ranks[0][n] - reference[n]).max()) for n in reference)
    relative = max(float(np.linalg.norm(ranks[0][n] - reference[n]) / np.linalg.norm(reference[n] - start_point[n]))
                   for n in reference)
    print(f"rank 0 and rank 1 hold identical adapters: {identical}")
    print(f"max |2 ranks - 1 process| over {len(reference)} tensors: {worst:.1e}; "
          f"relative to what training changed (per tensor, norms): at most {relative:.1e}")
    assert identical and relative < 1e-3

# %% [markdown]
# The two ranks agree bit for bit (they applied the same averaged gradient to the same start), and
# they agree with one process to float32 rounding (its sums add the same numbers in another order) --
# amplified a little by AdamW: it divides each
# gradient by its running root-mean-square, so an entry whose gradient is nearly zero (the `A`
# matrices' in the first steps, while `B` is still almost 0) turns a rounding-level difference into a
# visible one. Relative to how far training moved each tensor, the two runs differ by at most the
# amount printed above: under a part in a thousand (the cell asserts it). (`tests/test_distributed.py`
# runs the same check in float64, where they agree to a relative 1e-10.)
# Data parallelism changes how fast a step is computed, not what is computed.
#
# On this machine two ranks are not faster: the model is tiny, start-up (Python, MPI, loading the
# model) dominates, and CI has two cores for everything. The speed-up appears when each rank has its
# own GPU and the step's arithmetic outweighs the all-reduce -- which, with LoRA, it does even on slow
# links. `benchmarks/distributed.py` measures the step times and projects them for Llama-2-7B.
#
# ## Summary
#
# * Data parallelism: each rank computes gradients on its slice of the batch; an all-reduce averages
#   them; every rank takes the same step.
# * The all-reduce carries the **trainable** parameters only: measured here, exactly `4 x` their count
#   in bytes, in one message (one bucket) here; the frozen base never moves. For Llama-2-7B that is 16.8 MB per step for
#   LoRA against 27 GB for full fine-tuning.
# * 2 ranks x batch `b` train the same adapter as 1 process x batch `2b`, to float32 rounding.
#
# ## Questions and small tasks
#
# 1. Change `CONFIG` in the worker to `target_modules=["q_proj", "v_proj"]`. Predict the LoRA bytes
#    before running.
# 2. With gradient accumulation (`train(..., grad_accum=2)`), how many gradient all-reduces happen per
#    optimizer step? Read `DistributedDataParallel.no_sync`.
# 3. QLoRA keeps the frozen base in 4 bits. Does that change the bytes of the all-reduce? Why not?
#
# ## What's next
#
# * `mpirun -n 2 minilora train --task qa --batch-size 8` trains with the same code from the command
#   line; rank 0 alone prints and writes the adapter (README).
# * On GPUs the same API runs on NCCL: `init_process_group(backend="nccl")`.
# * Sharding the frozen base itself (FSDP, ZeRO-3) is the next step when the base does not fit on one
#   device -- there the base's weights do cross the network, gathered for each layer's forward.
