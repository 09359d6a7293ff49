"""Benchmark: what data parallelism costs, LoRA against full fine-tuning.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/distributed.py
    python benchmarks/distributed.py --steps 12 --batch 8 --plot distributed.png

Measured here, on the shipped base model (``minilora.models.load_base``) with LoRA r=8 on every
linear layer and with full fine-tuning: the bytes each rank puts into all-reduce per optimizer step
(``minilora.distributed.comm_stats()`` around the steps: counted, not computed) and the step time
with 1 and with 2 processes (``mpirun -n 1|2``, the same global batch, split over the ranks).

Projected for Llama-2-7B (fp32 gradients) with the ring all-reduce cost model: each rank sends and
receives ``2 (p-1)/p * bytes`` over its link, so one all-reduce takes at least that divided by the
bandwidth, at 25 Gbit/s (ordinary Ethernet) and 400 Gbit/s (InfiniBand NDR) -- LoRA on q/v at r=8
against full fine-tuning. Latency and overlap with backward are left out: this is the bandwidth floor.

Needs mpi4py and mpirun (``pip install 'minilora[distributed]'``); matplotlib for ``--plot``.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import time

HERE = os.path.abspath(__file__)
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, ROOT)

LLAMA2_7B = dict(hidden=4096, intermediate=11008, layers=32, vocab=32000, total=6_738_415_616)
BANDWIDTHS_GBIT = (25, 400)


# --------------------------------------------------------------------------------------------------
# The worker: one rank under mpirun
# --------------------------------------------------------------------------------------------------
def worker(method, steps, batch, warmup):
    import numpy as np

    from minilora import distributed as dist
    from minilora import parallel
    from minilora.data import DataLoader, task_loader
    from minilora.models import load_base
    from minilora.nn.parallel import DistributedDataParallel
    from minilora.optim import AdamW
    from minilora.tokenizer import ByteTokenizer

    dist.init_process_group("mpi", timeout=600)
    rank, world = dist.get_rank(), dist.get_world_size()
    if "MINILORA_NUM_THREADS" not in os.environ:  # the cores are shared by the ranks
        parallel.set_num_threads(max(1, parallel.num_threads() // dist.local_world_size()))
    model = load_base()
    if method == "lora":
        from minilora.lora import LoraConfig, get_peft_model
        model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules="all-linear"))
    ddp = DistributedDataParallel(model)
    tokenizer = ByteTokenizer()
    whole = task_loader(tokenizer, "qa", "train", batch, seed=0)
    loader = DataLoader(whole.items, batch // world, 0, whole.pad_id, num_replicas=world, rank=rank)
    optimizer = AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    times = []
    for step in range(warmup + steps):
        if step == warmup:
            dist.barrier()
            dist.reset_comm_stats()
        start = time.perf_counter()
        ids, labels = loader.batch(step)
        ddp(ids, labels=labels).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        times.append(time.perf_counter() - start)
    stats = dist.comm_stats().get("all_reduce", {"calls": 0, "bytes": 0})
    slowest = np.array([max(times[warmup:])])
    if rank == 0:
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        total = sum(p.numel() for p in model.parameters())
        print(json.dumps({"method": method, "world": world, "trainable": trainable, "total": total,
                          "buckets": len(ddp.buckets), "bytes_per_step": stats["bytes"] / steps,
                          "messages_per_step": stats["calls"] / steps,
                          "ms_per_step": 1000 * float(np.median(times[warmup:])),
                          "slowest_ms": 1000 * float(slowest[0])}), flush=True)
    dist.destroy_process_group()


# --------------------------------------------------------------------------------------------------
# The driver
# --------------------------------------------------------------------------------------------------
def mpirun(world):
    launcher = shutil.which("mpirun") or shutil.which("mpiexec")
    if launcher is None:
        sys.exit("no mpirun/mpiexec: pip install 'minilora[distributed]'")
    version = subprocess.run([launcher, "--version"], capture_output=True, text=True).stdout
    command = [launcher, "-n", str(world)]
    if "Open MPI" in version:
        command += ["--oversubscribe"] + (["--allow-run-as-root"] if os.geteuid() == 0 else [])
    return command


def measure(method, world, args):
    command = mpirun(world) + [sys.executable, HERE, "--worker", method, "--steps", str(args.steps),
                               "--batch", str(args.batch), "--warmup", str(args.warmup)]
    done = subprocess.run(command, capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=ROOT))
    if done.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{done.stdout}\n{done.stderr}")
    return json.loads([line for line in done.stdout.splitlines() if line.startswith("{")][-1])


def llama2_7b_lora_qv(r=8):
    """Trainable numbers of LoRA on q_proj and v_proj (4096 -> 4096 each): A r x 4096, B 4096 x r."""
    return LLAMA2_7B["layers"] * 2 * (r * LLAMA2_7B["hidden"] + LLAMA2_7B["hidden"] * r)


def ring_seconds(nbytes, world, gbit):
    """The ring all-reduce's bandwidth floor: 2 (p-1)/p * bytes over a link of ``gbit`` Gbit/s."""
    return 2 * (world - 1) / world * nbytes / (gbit * 1e9 / 8)


def human(nbytes):
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if nbytes >= size:
            return f"{nbytes / size:.1f} {unit}"
    return f"{nbytes:.0f} B"


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=10, help="timed steps (after --warmup)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--batch", type=int, default=8, help="global batch, split over the processes")
    p.add_argument("--plot", default=None, metavar="PNG", help="write the projection as a bar chart")
    p.add_argument("--worker", choices=["lora", "full"], help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(args.worker, args.steps, args.batch, args.warmup)

    print(f"shipped base model, global batch {args.batch}, {args.steps} timed steps, {os.cpu_count()} cores\n")
    print("| method | processes | trainable | all-reduce bytes/step (measured) | messages/step | ms/step |")
    print("|---|---|---|---|---|---|")
    rows = {}
    for method in ("lora", "full"):
        for world in (1, 2):
            r = rows[method, world] = measure(method, world, args)
            print(f"| {method} | {world} | {r['trainable']:,} of {r['total']:,} | {r['bytes_per_step']:,.0f} "
                  f"| {r['messages_per_step']:.0f} | {r['ms_per_step']:.0f} |", flush=True)
    lora2, full2 = rows["lora", 2], rows["full", 2]
    print(f"\nmeasured: LoRA sends {full2['bytes_per_step'] / lora2['bytes_per_step']:.1f}x fewer bytes per step "
          f"than full fine-tuning (= the ratio of trainable parameters, "
          f"{full2['trainable'] / lora2['trainable']:.1f}x); the frozen base never crosses")

    lora_bytes, full_bytes = 4 * llama2_7b_lora_qv(), 4 * LLAMA2_7B["total"]
    print(f"\nLlama-2-7B, fp32 gradients: LoRA q/v r=8 = {llama2_7b_lora_qv():,} numbers ({human(lora_bytes)}), "
          f"full = {LLAMA2_7B['total']:,} ({human(full_bytes)})\n")
    print("| processes | link | LoRA q/v r=8: all-reduce per step | full fine-tuning: all-reduce per step |")
    print("|---|---|---|---|")
    projection = []
    for world in (2, 8, 64):
        for gbit in BANDWIDTHS_GBIT:
            lora_s, full_s = ring_seconds(lora_bytes, world, gbit), ring_seconds(full_bytes, world, gbit)
            projection.append((world, gbit, lora_s, full_s))
            print(f"| {world} | {gbit} Gbit/s | {1000 * lora_s:.2f} ms | {full_s:.2f} s |")
    if args.plot:
        plot(args.plot, projection)


def plot(path, projection):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    labels = [f"p={w}\n{g} Gbit/s" for w, g, _, _ in projection]
    x = range(len(projection))
    fig, ax = plt.subplots(figsize=(8, 3.5))
    ax.bar([i - 0.2 for i in x], [lo for _, _, lo, _ in projection], 0.4, label="LoRA q/v r=8")
    ax.bar([i + 0.2 for i in x], [full for _, _, _, full in projection], 0.4, label="full fine-tuning")
    ax.set_yscale("log")
    ax.set_xticks(list(x), labels)
    ax.set_ylabel("seconds per all-reduce (ring, floor)")
    ax.set_title("Llama-2-7B gradient all-reduce per step, fp32")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    print(f"\nplot: {path}")


if __name__ == "__main__":
    main()
