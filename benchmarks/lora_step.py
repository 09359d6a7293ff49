"""Benchmark: one LoRA training step, minilora vs transformers + PEFT on torch CPU, and vs full fine-tuning.

One step = forward with labels (loss), backward, AdamW update of the trainable parameters, zero_grad.
LoRA: r=8, lora_alpha=16, on every Linear but the head ("all-linear"). Both models hold the same
weights (the base copied into transformers, minilora's A and B copied into PEFT's), float32, the same
batch and thread count, so the first-step losses agree. The model config, the batch and the timing
helpers are benchmarks/train_step.py's (imported, so both benchmarks measure the same thing).

Three steps are timed round-robin, the order rotating each round (a noisy machine slows all alike):
minilora LoRA, PEFT LoRA, and minilora full fine-tuning. Printed: the ratio of the fastest steps (the
least disturbed by other load) and the median of the per-round ratios
``minilora LoRA / PEFT LoRA`` (below 1.0: minilora is faster) and ``minilora LoRA / minilora full``
(below 1.0: LoRA's step is cheaper -- no gradient GEMM for the frozen W0, no AdamW over W0).

Each framework's turn in a round is ``--run`` steps back to back after an idle pause (train_step's
``--pause``, so the framework that ran before has let its threads sleep). The first step of a turn
is printed as "after idle", the others as "in a run": a training loop runs its steps back to back,
and the two differ. On a 2-vCPU KVM guest (AMD EPYC, halt polling off) minilora's first step after
0.25 s idle took ~15% longer than its next ones (its forward ~20 ms longer; not so on one thread),
PEFT's ~3%: minilora's helper thread sleeps between ops and its idle vCPU halts, where torch's
OpenMP workers spin between parallel regions.

    python benchmarks/lora_step.py                   # d=256, 4 layers, seq 128, batch 8, 2 threads
    python benchmarks/lora_step.py --threads 1 --repeats 15 --profile

All options of benchmarks/train_step.py (--hidden, --layers, --heads, --intermediate, --vocab, --seq,
--batch, --threads, --repeats, --attn, --profile) apply; --rank, --alpha and --dropout are this benchmark's own.
"""
import argparse
import sys


def parse_lora_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], epilog=__doc__.split("\n\n")[-1])
    p.add_argument("--rank", type=int, default=8, help="LoRA rank r (default 8)")
    p.add_argument("--alpha", type=float, default=16, help="lora_alpha (default 16)")
    p.add_argument("--run", type=int, default=3,
                   help="steps each framework runs back to back per round (default 3; the first follows an idle pause)")
    p.add_argument("--dropout", type=float, default=0.0,
                   help="lora_dropout (default 0; PEFT tutorials use 0.05-0.1: both sides draw a mask per layer)")
    return p.parse_known_args()[0]


LORA_ARGS = parse_lora_args()
# train_step reads the shared options and sets the BLAS thread count before NumPy is imported.
import train_step as base  # noqa: E402

import os  # noqa: E402
import statistics  # noqa: E402

import numpy as np  # noqa: E402

from minilora.lora import LoraConfig, get_peft_model  # noqa: E402
from minilora.models import LlamaConfig  # noqa: E402
from minilora.optim import AdamW  # noqa: E402

ARGS = base.ARGS


def lora_config():
    return dict(r=LORA_ARGS.rank, lora_alpha=LORA_ARGS.alpha, lora_dropout=LORA_ARGS.dropout,
                target_modules="all-linear")


def build_models(config):
    """minilora LoRA, PEFT LoRA (same weights) and minilora full fine-tuning, each with its AdamW."""
    import peft
    import torch
    ml_model, _ = base.build_minilora(config)
    hf_model, _ = base.build_transformers(config, ml_model)  # copies the base weights
    ml_lora = get_peft_model(ml_model, LoraConfig(**lora_config()))
    hf_lora = peft.get_peft_model(hf_model, peft.LoraConfig(**lora_config()))
    ours = dict(ml_lora.named_parameters())
    with torch.no_grad():  # the same A (and zero B) in both, so the steps compute the same numbers
        for name, p in hf_lora.named_parameters():
            if p.requires_grad:
                p.copy_(torch.from_numpy(ours[name].numpy(force=True)))
    ml_trainable = [p for p in ml_lora.parameters() if p.requires_grad]
    hf_trainable = [p for p in hf_lora.parameters() if p.requires_grad]
    full_model, full_opt = base.build_minilora(config)
    return {"minilora LoRA": (base.minilora_step, ml_lora, AdamW(ml_trainable, lr=1e-4, weight_decay=0.01)),
            "PEFT LoRA": (base.transformers_step, hf_lora, torch.optim.AdamW(hf_trainable, lr=1e-4, weight_decay=0.01)),
            "minilora full": (base.minilora_step, full_model, full_opt)}


def report(title, times):
    """Each framework's step times and the per-round ratios (wall and CPU) of the pairs compared."""
    median = statistics.median
    print(f"{title}:")
    for name, steps in times.items():
        wall = [w for w, _ in steps]
        print(f"  {name:<14} step: median {median(wall) * 1e3:7.1f} ms wall (min {min(wall) * 1e3:.1f}), "
              f"{median([c for _, c in steps]) * 1e3:7.1f} ms CPU")
    for a, b in (("minilora LoRA", "PEFT LoRA"), ("minilora LoRA", "minilora full")):
        wall = [x[0] / y[0] for x, y in zip(times[a], times[b])]
        cpu = median([x[1] / y[1] for x, y in zip(times[a], times[b])])
        fastest = min(w for w, _ in times[a]) / min(w for w, _ in times[b])
        print(f"  median ratio {a} / {b}: {median(wall):.3f} wall, {cpu:.3f} CPU time, {fastest:.3f} fastest "
              f"steps (per-round wall {', '.join(f'{r:.2f}' for r in wall)})")


def main():
    import torch
    torch.set_num_threads(ARGS.threads)
    config = LlamaConfig(vocab_size=ARGS.vocab, hidden_size=ARGS.hidden, intermediate_size=ARGS.intermediate,
                         num_hidden_layers=ARGS.layers, num_attention_heads=ARGS.heads,
                         max_position_embeddings=max(ARGS.seq, 2048))
    ids = np.random.default_rng(0).integers(0, ARGS.vocab, size=(ARGS.batch, ARGS.seq))
    inputs = {"minilora LoRA": ids, "PEFT LoRA": torch.from_numpy(ids), "minilora full": ids}
    runs = build_models(config)
    ml_lora = runs["minilora LoRA"][1]
    trainable, total = ml_lora.get_nb_trainable_parameters()
    print(f"config: d={ARGS.hidden}, layers={ARGS.layers}, heads={ARGS.heads}, intermediate={ARGS.intermediate}, "
          f"vocab={ARGS.vocab}, seq={ARGS.seq}, batch={ARGS.batch}, float32, {ARGS.threads} threads, "
          f"transformers attention={ARGS.attn}")
    print(f"LoRA r={LORA_ARGS.rank}, alpha={LORA_ARGS.alpha:g}, all-linear: trainable {trainable:,} of {total:,}")
    first = {name: step(model, opt, inputs[name]) for name, (step, model, opt) in runs.items()}
    print("first-step loss: " + ", ".join(f"{k} {v:.6f}" for k, v in first.items()))
    for name, (step, model, opt) in runs.items():  # second warm-up: optimizer state now allocated
        step(model, opt, inputs[name])

    names = list(runs)
    after_idle = {name: [] for name in names}  # per round: (wall, CPU) of the first step of the turn
    in_run = {name: [] for name in names}  # per round: the median (wall, CPU) of the turn's other steps
    for i in range(ARGS.repeats):
        for name in names[i % 3:] + names[:i % 3]:  # rotate who goes first
            step, model, opt = runs[name]
            after_idle[name].append(base.timed(step, model, opt, inputs[name]))
            if LORA_ARGS.run > 1:
                rest = [base.timed(step, model, opt, inputs[name], pause=0) for _ in range(LORA_ARGS.run - 1)]
                in_run[name].append(tuple(statistics.median(column) for column in zip(*rest)))
    report("after idle", after_idle)
    if LORA_ARGS.run > 1:
        report(f"in a run (steps 2-{LORA_ARGS.run} of each turn)", in_run)
    print(f"load average during the run: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs "
          "(the CPU-time ratio is less sensitive to other load)")
    if ARGS.profile:
        base.profile_minilora(ml_lora, runs["minilora LoRA"][2], ids)


if __name__ == "__main__":
    sys.exit(main())
