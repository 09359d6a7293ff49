"""``minilora demo`` -- LoRA from start to finish on the shipped base model, offline, in minutes.

What it shows, in order (everything is computed, nothing is canned):

1. the base model and a downstream task it cannot do yet (exact-match accuracy before);
2. ``get_peft_model`` and PEFT's trainable-parameter line;
3. the memory of one training step, measured, full fine-tuning next to LoRA (and LoRA with gradient
   checkpointing);
4. the LoRA fine-tune itself (``minilora.train.train``, with a progress bar);
5. accuracy after, and the base task (``facts``) with the adapter on, disabled and merged -- the base
   model is untouched, so "disabled" gives back exactly the old score;
6. merged == unmerged outputs; the adapter saved in PEFT's format (its size next to the full model's)
   and reloaded; a loss-curve PNG; generations before and after; a diagnosis of the run.

``minilora experiment ranks`` repeats the fine-tune for r in {1, 2, 4, 8, 16} and for full fine-tuning,
and tabulates what the LoRA paper claims: a tiny rank already does the job, with a fraction of the
trainable parameters and optimizer memory, and less forgetting of what the base model knew.
"""
import argparse
import os
import time

import numpy as np

__all__ = ["DEMO_DEFAULTS", "run_demo", "run_rank_experiment", "add_cli_arguments", "cli_main"]

# Tuned on the shipped base: the task is learned (about 97% exact match) while the held-out corpus loss
# barely moves; about 15 s of CPU time in all.
DEMO_DEFAULTS = dict(task="qa", steps=100, rank=8, lr=5e-4, batch_size=16, eval_n=60, seed=0)
FULL_FT_LR = 1e-4  # full fine-tuning moves every weight: it takes a smaller step than LoRA
CORPUS_DOCS = 60  # held-out base-corpus documents for the forgetting measure (a few seconds)
EXPERIMENT_RANKS = (1, 2, 4, 8, 16)
# As in the LoRA paper (section 4.1), alpha is one constant for every r, not tuned: the scale alpha / r
# then grows as r shrinks, which with Adam keeps the update's size about the same across ranks.
EXPERIMENT_ALPHA = 16


# ==================================================================================================
# Small helpers
# ==================================================================================================
def _say(text=""):
    print(text, flush=True)


def _section(number, title):
    _say(f"\n{'=' * 100}\n{number}. {title}\n{'=' * 100}")


def _load(base, device):
    """The base model: the shipped one (``base=None``) or a folder with config.json + model.safetensors."""
    from .models import LlamaForCausalLM, load_base
    return load_base(device=device) if base is None else LlamaForCausalLM.from_pretrained(base, device=device)


def _base_file(base):
    from .models import BASE_DIR
    return os.path.join(base or BASE_DIR, "model.safetensors")


class _DeviceUnavailable(RuntimeError):
    pass


def _check_device(name):
    """The device's name, or a clear error if it cannot run here (no GPU, no compiler for emu...)."""
    from .device import device
    try:
        return device(name).name
    except RuntimeError as exc:
        raise _DeviceUnavailable(f"{exc} (use --device cpu)") from None


def _logits(model, ids):
    from .tensor import no_grad
    with no_grad():
        return model(ids).logits.numpy(force=True).astype(np.float64)


def _lora(model, rank, alpha=None):
    """LoRA on every Linear but the output head; ``lora_alpha`` 2r (scale 2) unless given."""
    from .lora import LoraConfig, get_peft_model
    config = LoraConfig(r=rank, lora_alpha=2 * rank if alpha is None else alpha, lora_dropout=0.0,
                        target_modules="all-linear", task_type="CAUSAL_LM")
    return get_peft_model(model, config)


def _trainable(model):
    return [p for p in model.parameters() if p.requires_grad]


def _write_json(obj, path):
    from .checkpoint import save_json
    save_json(obj, path)


def _score_row(label, task_result, facts_result, corpus):
    return (f"{label:<28}{100 * task_result.accuracy:>14.1f}%{100 * facts_result.accuracy:>15.1f}%"
            f"{corpus:>15.3f}")


# ==================================================================================================
# The demo
# ==================================================================================================
def run_demo(task=DEMO_DEFAULTS["task"], steps=DEMO_DEFAULTS["steps"], rank=DEMO_DEFAULTS["rank"],
             out="minilora-demo", device="cpu", lr=DEMO_DEFAULTS["lr"], batch_size=DEMO_DEFAULTS["batch_size"],
             eval_n=DEMO_DEFAULTS["eval_n"], seed=DEMO_DEFAULTS["seed"], base=None, progress=True,
             lora_alpha=None):
    """Run the demo (printing as it goes) and return its numbers; everything lands in ``out``:
    ``adapter/`` (PEFT format), ``loss.png``, ``metrics.jsonl``, ``checkpoint.npz`` (to resume) and
    ``summary.json``."""
    from . import data, memory
    from .lora import PeftModel
    from .lora.diagnostics import adapter_spectrum, diagnose_training
    from .optim import AdamW
    from .random import manual_seed
    from .tokenizer import ByteTokenizer
    from .train import PLOT_NAME, plot_losses, train

    started = time.perf_counter()
    device = _check_device(device)
    manual_seed(seed)
    tok, the_task = ByteTokenizer(), data.get_task(task)
    if not the_task.downstream:
        raise ValueError(f"task {task!r} is the base task; fine-tune on a downstream task: "
                         f"{[t for t, v in data.TASKS.items() if v.downstream]}")
    os.makedirs(out, exist_ok=True)
    summary = {"task": task, "steps": steps, "rank": rank, "lr": lr, "batch_size": batch_size,
               "eval_n": eval_n, "device": device}

    _section(1, f"The base model, and a task it has never seen: {task!r}")
    model = _load(base, device)
    c = model.config
    _say(f"base model: Llama, {c.num_hidden_layers} layers, hidden size {c.hidden_size}, "
         f"{model.num_parameters():,} parameters, byte-level vocabulary of {c.vocab_size}")
    _say(f"task {task!r}: {the_task.description}")
    before = data.evaluate(model, tok, task, eval_n)
    facts_before = data.evaluate(model, tok, "facts", eval_n)
    corpus_before = data.corpus_loss(model, tok, CORPUS_DOCS)
    _say(f"before fine-tuning: {before}")
    _say(f"base task:          {facts_before}  (what pretraining taught it)")
    _say(f"held-out corpus loss: {corpus_before:.3f}")

    lora_alpha = 2 * rank if lora_alpha is None else lora_alpha
    _section(2, f"get_peft_model: LoRA r={rank}, lora_alpha={lora_alpha:g}, on every Linear but the output head")
    peft = _lora(model, rank, lora_alpha)
    peft.print_trainable_parameters()
    trainable, total = peft.get_nb_trainable_parameters()
    summary.update(trainable_params=trainable, all_params=total)

    _section(3, "Memory of one training step, measured (AdamW, float32)")
    train_loader = data.task_loader(tok, task, "train", batch_size, seed)
    eval_loader = data.task_loader(tok, task, "eval", batch_size, seed, shuffle=False)
    batch = train_loader.batch(0)
    full_model = _load(base, device)
    full = memory.report(full_model, AdamW(full_model.parameters()), batch)
    lora = memory.report(peft, AdamW(_trainable(peft)), batch)
    peft.gradient_checkpointing_enable()  # the same step, each layer's activations recomputed in backward
    checkpointed = memory.report(peft, AdamW(_trainable(peft)), batch)
    peft.gradient_checkpointing_disable()
    del full_model
    _say(memory.comparison_table({"full fine-tuning": full, f"LoRA r={rank}": lora}))
    _say(f"\nLoRA trains {full.trainable_params / lora.trainable_params:.0f}x fewer numbers, so gradients and "
         f"AdamW state shrink by that much; the frozen weights and the activations stay.")
    if lora.activation_bytes > lora.frozen_weight_bytes:
        _say(f"Here the activations ({memory.format_bytes(lora.activation_bytes)} for {batch[0].size:,} tokens) "
             f"outweigh the weights ({memory.format_bytes(lora.frozen_weight_bytes)}): the model is tiny. For "
             "Llama-2-7B the weights are 27 GB and LoRA's saving is about 4x: `minilora memory`.")
    peaks = (lora.activations.peak_bytes, checkpointed.activations.peak_bytes)
    peak_text = (f", peak of the step {memory.format_bytes(peaks[0])} -> {memory.format_bytes(peaks[1])}"
                 if None not in peaks else "")  # (measured on NumPy arrays only)
    _say(f"Gradient checkpointing keeps only each layer's input and recomputes the rest in backward, one "
         f"layer at a time: kept for backward {memory.format_bytes(lora.activation_bytes)} -> "
         f"{memory.format_bytes(checkpointed.activation_bytes)}{peak_text}, for one more forward per layer "
         "(model.gradient_checkpointing_enable(), or `minilora train --gradient-checkpointing`).")
    summary["memory"] = {"full_fine_tuning": full.total_bytes, "lora": lora.total_bytes,
                         "lora_activations": lora.activation_bytes,
                         "lora_checkpointed_activations": checkpointed.activation_bytes,
                         "full_optimizer_state": full.optimizer_state_bytes,
                         "lora_optimizer_state": lora.optimizer_state_bytes}

    _section(4, f"LoRA fine-tuning: {steps} steps of {batch_size} examples, AdamW lr {lr:g}")
    result = train(peft, train_loader, eval_loader, steps=steps, batch_size=batch_size, lr=lr,
                   warmup_steps=max(1, steps // 10), eval_every=max(1, steps // 5), out_dir=out, seed=seed,
                   progress=progress, log_every=max(1, steps // 10), plot=False)
    plot = plot_losses(os.path.join(out, PLOT_NAME), result.losses, result.evals,
                       title=f"LoRA r={rank} on {task!r}: training loss")
    _say(f"trained in {result.train_seconds:.1f} s ({1e3 * result.seconds_per_step:.0f} ms/step); "
         f"loss {result.losses[0]:.3f} (step 1) -> {result.final_loss:.3f} (step {len(result.losses)})")
    summary.update(first_loss=result.losses[0], final_loss=result.final_loss,
                   seconds_per_step=result.seconds_per_step)

    _section(5, "Accuracy after: the task, and the base task with the adapter on, disabled and merged")
    def scores(model):
        return (data.evaluate(model, tok, task, eval_n), data.evaluate(model, tok, "facts", eval_n),
                data.corpus_loss(model, tok, CORPUS_DOCS))

    on = scores(peft)
    with peft.disable_adapter():
        off = scores(peft)
    probe = eval_loader.batch(0)[0]
    unmerged = _logits(peft, probe)
    peft.merge_adapter()
    merged_logits = _logits(peft, probe)
    merged = scores(peft)
    peft.unmerge_adapter()
    _say(f"{'':<28}{task + ' exact match':>15}{'facts (base)':>16}{'corpus loss':>15}")
    for label, (t, f, c) in (("base model, before", (before, facts_before, corpus_before)), ("LoRA adapter on", on),
                             ("adapter disabled", off), ("adapter merged into W0", merged)):
        _say(_score_row(label, t, f, c))
    same = (off[0].correct, off[1].correct, off[2]) == (before.correct, facts_before.correct, corpus_before)
    _say("\n'disabled' is the base model again, exactly: LoRA never changed W0. With the adapter on, the base "
         "task\nand the corpus loss show what the adapter changed (the lesson's 'forgetting is impossible' holds "
         "only\nwhile it is off)." if same else
         "\nWARNING: with the adapter disabled the scores differ from the base model's")
    after = on[0]
    summary.update(accuracy_before=before.accuracy, accuracy_after=after.accuracy,
                   accuracy_merged=merged[0].accuracy,
                   facts_before=facts_before.accuracy, facts_after=on[1].accuracy, facts_disabled=off[1].accuracy,
                   facts_merged=merged[1].accuracy, corpus_loss_before=corpus_before, corpus_loss_after=on[2],
                   corpus_loss_disabled=off[2], disabled_equals_base=same)

    _section(6, "Merged == unmerged, the adapter file, and reloading it")
    diff = float(np.abs(merged_logits - unmerged).max())
    scale = float(np.abs(unmerged).max())
    ok = diff <= 1e-4 * max(1.0, scale)
    _say(f"max |logits merged - logits unmerged| = {diff:.2e} (logits up to {scale:.1f}): "
         + ("equal up to float32 rounding" if ok else "MISMATCH"))
    adapter_dir = os.path.join(out, "adapter")
    peft.save_pretrained(adapter_dir, overwrite=True)
    adapter_bytes = os.path.getsize(os.path.join(adapter_dir, "adapter_model.safetensors"))
    full_bytes = os.path.getsize(_base_file(base))
    _say(f"saved {adapter_dir}/ (adapter_config.json + adapter_model.safetensors, PEFT's format)")
    _say(f"adapter: {memory.format_bytes(adapter_bytes)}   full model checkpoint: {memory.format_bytes(full_bytes)} "
         f"({full_bytes / adapter_bytes:.1f}x larger)")
    reloaded = PeftModel.from_pretrained(_load(base, device), adapter_dir)
    reload_diff = float(np.abs(_logits(reloaded, probe) - unmerged).max())
    _say(f"PeftModel.from_pretrained(base, {adapter_dir!r}): max logit difference {reload_diff:.1e}")
    summary.update(merge_max_abs_diff=diff, merged_equals_unmerged=ok, adapter_bytes=adapter_bytes,
                   full_checkpoint_bytes=full_bytes, reload_max_abs_diff=reload_diff)

    _section(7, "Generations before and after (greedy)")
    for (prompt, answer, old), (_, _, new) in zip(before.samples, after.samples):
        _say(f"{prompt!r}\n    expected {answer.strip()!r:<24} before {old.strip()!r:<24} after {new.strip()!r}")

    _section(8, "Diagnosis of the run and of the learned update")
    evals = [(e["step"], e["eval_loss"]) for e in result.evals if "eval_loss" in e]
    for finding in diagnose_training(result.losses, evals):
        _say(str(finding))
    spectra = adapter_spectrum(peft)
    mean_energy = float(np.mean([s.energy_rank for s in spectra]))
    mean_eff = float(np.mean([s.effective_rank for s in spectra]))
    _say(f"the {len(spectra)} learned updates s*B*A need on average {mean_energy:.1f} of their {rank} directions "
         f"for 90% of their energy (entropy effective rank {mean_eff:.1f})")
    summary.update(mean_energy_rank=mean_energy, mean_effective_rank=mean_eff,
                   findings=[f.kind for f in diagnose_training(result.losses, evals)])

    summary["seconds"] = time.perf_counter() - started
    _write_json(summary, os.path.join(out, "summary.json"))
    _say(f"\ndone in {summary['seconds']:.0f} s. In {out}/: adapter/, "
         f"{PLOT_NAME if plot else '(no plot: matplotlib missing)'}, metrics.jsonl, checkpoint.npz, summary.json")
    return summary


# ==================================================================================================
# The rank experiment
# ==================================================================================================
def _fine_tune(model, tok, task, steps, lr, batch_size, seed):
    from . import data
    from .train import train
    loader = data.task_loader(tok, task, "train", batch_size, seed)
    return train(model, loader, steps=steps, batch_size=batch_size, lr=lr, warmup_steps=max(1, steps // 10),
                 seed=seed, progress=False, plot=False)


def _experiment_row(label, model, tok, task, steps, lr, batch_size, eval_n, seed, facts_before, corpus_before):
    from . import data, memory
    from .optim import AdamW
    trainable = _trainable(model)
    optimizer_bytes = memory.report(model, AdamW(trainable)).optimizer_state_bytes
    result = _fine_tune(model, tok, task, steps, lr, batch_size, seed)
    accuracy = data.evaluate(model, tok, task, eval_n).accuracy
    facts = data.evaluate(model, tok, "facts", eval_n).accuracy
    corpus = data.corpus_loss(model, tok, CORPUS_DOCS)
    return {"method": label, "trainable_params": sum(p.numel() for p in trainable),
            "optimizer_bytes": optimizer_bytes, "accuracy": accuracy, "ms_per_step": 1e3 * result.seconds_per_step,
            "final_loss": result.final_loss, "facts_after": facts, "facts_drop": facts_before - facts,
            "corpus_loss_rise": corpus - corpus_before}


def _markdown(rows, task, steps, facts_before):
    from .memory import format_bytes
    lines = [f"| method | trainable params | AdamW state | {task} accuracy | ms / step | facts after "
             f"(before {100 * facts_before:.0f}%) | corpus loss rise |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['method']} | {r['trainable_params']:,} | {format_bytes(r['optimizer_bytes'])} | "
                     f"{100 * r['accuracy']:.1f}% | {r['ms_per_step']:.0f} | {100 * r['facts_after']:.1f}% | "
                     f"{r['corpus_loss_rise']:+.3f} |")
    return "\n".join(lines) + (f"\n\n{steps} steps each. Forgetting: the base task (facts) and the loss on held-out "
                               "pretraining text. Step times are wall clock, one run after the other.\n")


def _plot_experiment(rows, path, task):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    from .checkpoint import atomic_write
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    lora = [r for r in rows if r["method"] != "full"]
    full = [r for r in rows if r["method"] == "full"]
    left.plot([r["trainable_params"] for r in lora], [100 * r["accuracy"] for r in lora], "o-", label="LoRA")
    for r in lora:
        left.annotate(r["method"], (r["trainable_params"], 100 * r["accuracy"]), textcoords="offset points",
                      xytext=(4, -12))
    if full:
        left.plot([full[0]["trainable_params"]], [100 * full[0]["accuracy"]], "s", color="C3", label="full fine-tuning")
    left.set_xscale("log")
    left.set_xlabel("trainable parameters")
    left.set_ylabel(f"{task} exact match (%)")
    left.legend()
    right.bar([r["method"] for r in rows], [r["corpus_loss_rise"] for r in rows], color="C1")
    right.set_ylabel("rise of the held-out corpus loss")
    right.set_title("forgetting the pretraining data (lower is better)")
    fig.tight_layout()
    with atomic_write(path) as f:
        fig.savefig(f, format="png", dpi=100)
    plt.close(fig)
    return True


def run_rank_experiment(task=DEMO_DEFAULTS["task"], steps=DEMO_DEFAULTS["steps"], ranks=EXPERIMENT_RANKS,
                        full=True, out="minilora-experiment", device="cpu", lr=DEMO_DEFAULTS["lr"], full_lr=FULL_FT_LR,
                        batch_size=DEMO_DEFAULTS["batch_size"], eval_n=DEMO_DEFAULTS["eval_n"],
                        seed=DEMO_DEFAULTS["seed"], base=None):
    """Fine-tune the base model once per rank (LoRA on all Linears, lora_alpha = ``EXPERIMENT_ALPHA``
    for every r) and once fully; write
    ``ranks.md``, ``ranks.json`` and ``ranks.png`` to ``out`` and return the rows."""
    from . import data
    from .memory import format_bytes
    from .random import manual_seed
    from .tokenizer import ByteTokenizer
    device = _check_device(device)
    tok = ByteTokenizer()
    base_model = _load(base, device)
    facts_before = data.evaluate(base_model, tok, "facts", eval_n).accuracy
    corpus_before = data.corpus_loss(base_model, tok, CORPUS_DOCS)
    task_before = data.evaluate(base_model, tok, task, eval_n).accuracy
    _say(f"task {task!r}: base model {100 * task_before:.1f}% exact match; base task (facts) {100 * facts_before:.1f}%")
    runs = [(f"r={r}", r) for r in ranks] + ([("full", None)] if full else [])
    rows = []
    for label, rank in runs:
        manual_seed(seed)
        model = _load(base, device)
        model = _lora(model, rank, EXPERIMENT_ALPHA) if rank is not None else model
        start = time.perf_counter()
        rows.append(_experiment_row(label, model, tok, task, steps, full_lr if rank is None else lr, batch_size,
                                    eval_n, seed, facts_before, corpus_before))
        r = rows[-1]
        _say(f"{label:>6}: {r['trainable_params']:>9,} trainable, AdamW state {format_bytes(r['optimizer_bytes']):>9}, "
             f"accuracy {100 * r['accuracy']:5.1f}%, facts {100 * r['facts_after']:5.1f}%, "
             f"{r['ms_per_step']:.0f} ms/step ({time.perf_counter() - start:.0f} s)")
    os.makedirs(out, exist_ok=True)
    table = _markdown(rows, task, steps, facts_before)
    from .checkpoint import atomic_write
    with atomic_write(os.path.join(out, "ranks.md"), "w") as f:
        f.write(f"# LoRA rank experiment on {task!r}\n\n{table}")
    _write_json({"task": task, "steps": steps, "lr": lr, "full_lr": full_lr, "task_before": task_before,
                 "facts_before": facts_before, "rows": rows}, os.path.join(out, "ranks.json"))
    plotted = _plot_experiment(rows, os.path.join(out, "ranks.png"), task)
    _say("\n" + table)
    _say(_conclusions(rows))
    _say(f"wrote {out}/ranks.md, ranks.json" + (", ranks.png" if plotted else ""))
    return rows


def _conclusions(rows):
    """The paper's claims, checked against this run's numbers (whatever they turned out to be)."""
    lora = [r for r in rows if r["method"] != "full"]
    full = next((r for r in rows if r["method"] == "full"), None)
    if not lora:
        return ""

    def span(key, fmt):  # "LoRA <min> to <max>" over the ranks
        values = [r[key] for r in lora]
        return f"LoRA {fmt(min(values))} to {fmt(max(values))}"

    best = max(lora, key=lambda r: r["accuracy"])
    lines = [f"- smallest rank ({lora[0]['method']}) reaches {100 * lora[0]['accuracy']:.1f}% "
             f"vs the best rank ({best['method']}) {100 * best['accuracy']:.1f}%"]
    if full:
        more = full["trainable_params"] / best["trainable_params"]
        lines.append(f"- full fine-tuning: {100 * full['accuracy']:.1f}% with {full['trainable_params']:,} trainable "
                     f"parameters, {more:.0f}x more than {best['method']} (AdamW state as much larger)")
        lines.append(f"- forgetting, rise of the held-out corpus loss: full fine-tuning "
                     f"{full['corpus_loss_rise']:+.3f}, {span('corpus_loss_rise', '{:+.3f}'.format)}")
        lines.append(f"- forgetting, drop in base-task accuracy (points): full fine-tuning "
                     f"{100 * full['facts_drop']:+.1f}, {span('facts_drop', lambda v: f'{100 * v:+.1f}')}")
    return "\n".join(lines)


# ==================================================================================================
# The commands
# ==================================================================================================
def _rank_list(text):
    """``--ranks 1,2,4``: comma-separated ranks, each an integer >= 1."""
    from .cli import positive_int
    ranks = [positive_int(r.strip()) for r in text.split(",") if r.strip()]
    if not ranks:
        raise argparse.ArgumentTypeError(f"must be comma-separated ranks such as 1,2,4, got {text!r}")
    return ",".join(map(str, ranks))


def add_cli_arguments(parser, command_name):
    from .cli import non_negative_int, positive_float, positive_int
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    if command_name == "experiment":
        parser.description = (
            "Reproduce the LoRA paper's claims at small scale. `minilora experiment ranks` fine-tunes the\n"
            "base model with LoRA at r = 1, 2, 4, 8, 16 and with full fine-tuning, and tabulates accuracy,\n"
            "trainable parameters, optimizer memory, step time and forgetting (ranks.md/json/png).")
        parser.add_argument("experiment", choices=["ranks"], help="which experiment (ranks)")
        parser.add_argument("--ranks", default=",".join(map(str, EXPERIMENT_RANKS)), type=_rank_list,
                            help="comma-separated LoRA ranks (default: 1,2,4,8,16)")
        parser.add_argument("--no-full", action="store_true", help="skip the full fine-tuning run")
        parser.add_argument("--full-lr", type=positive_float, default=FULL_FT_LR,
                            help=f"learning rate of full fine-tuning (default: {FULL_FT_LR:g})")
        default_out = "minilora-experiment"
    else:
        parser.description = (
            "The main job: LoRA fine-tune minilora's pretrained base model on a task it cannot do, offline,\n"
            "in a few minutes on a laptop CPU. Shows accuracy before/after, PEFT's trainable-parameter line,\n"
            "the measured memory of full fine-tuning vs LoRA, the base task with the adapter disabled and\n"
            "merged, saves the adapter in PEFT's format and a loss curve, and prints generations.")
        parser.epilog = "example:  minilora demo --r 4 --steps 200 --out my-demo"
        parser.add_argument("--r", "--rank", dest="rank", type=positive_int, default=DEMO_DEFAULTS["rank"],
                            help="LoRA rank r, PEFT's name (--rank is the same; default: 8)")
        parser.add_argument("--lora-alpha", type=positive_float, default=None,
                            help="LoRA's alpha: the update is scaled by lora_alpha / r (default: 2 r)")
        default_out = "minilora-demo"
    from .data import TASKS
    tasks = "; ".join(f"{name}: {t.description}" for name, t in TASKS.items() if t.downstream)
    parser.add_argument("--task", default=DEMO_DEFAULTS["task"],
                        help=f"the downstream task to fine-tune on -- {tasks} (default: {DEMO_DEFAULTS['task']})")
    parser.add_argument("--steps", type=positive_int, default=DEMO_DEFAULTS["steps"],
                        help=f"optimizer steps (default: {DEMO_DEFAULTS['steps']})")
    parser.add_argument("--lr", type=positive_float, default=DEMO_DEFAULTS["lr"],
                        help=f"LoRA learning rate (default: {DEMO_DEFAULTS['lr']:g})")
    parser.add_argument("--batch-size", type=positive_int, default=DEMO_DEFAULTS["batch_size"],
                        help=f"examples per step (default: {DEMO_DEFAULTS['batch_size']})")
    parser.add_argument("--eval-n", type=positive_int, default=DEMO_DEFAULTS["eval_n"],
                        help=f"examples scored per evaluation (default: {DEMO_DEFAULTS['eval_n']})")
    parser.add_argument("--out", default=default_out, help=f"output folder (default: ./{default_out})")
    parser.add_argument("--device", default="cpu", choices=["cpu", "emu", "cuda"],
                        help="cpu (NumPy), emu (the CUDA kernels in the CPU emulator: slow) or cuda (default: cpu)")
    parser.add_argument("--model", default=None, metavar="DIR",
                        help="a base model folder instead of the shipped one (e.g. from python -m minilora.pretrain)")
    parser.add_argument("--base", default=None, metavar="DIR", help="deprecated: the same as --model")
    parser.add_argument("--seed", type=non_negative_int, default=DEMO_DEFAULTS["seed"], help="random seed (default: 0)")
    parser.add_argument("--no-progress", action="store_true", help="log lines instead of a progress bar")


def _model_folder(args):
    """The base model folder from --model, or from the deprecated --base (None: the shipped base).

    Every other command (train, generate, info, serve) names the model with --model; --base still
    works, with a warning, as in ``minilora serve``."""
    import sys

    from .cli import UsageError
    if args.base is None:
        return args.model
    print(f"minilora {args.command}: warning: --base is deprecated; use --model {args.base}", file=sys.stderr)
    if args.model is not None and args.model != args.base:
        raise UsageError(f"the model is named twice, differently: --model {args.model}, --base {args.base}")
    return args.base


def cli_main(args):
    from .cli import UsageError, output_folder
    from .data import TASKS
    if args.task not in TASKS or not TASKS[args.task].downstream:
        raise UsageError(f"unknown task {args.task!r}; choose one of {[n for n, t in TASKS.items() if t.downstream]}")
    if args.out:  # (the experiment writes its table after every run: a bad folder was found then)
        output_folder(args.out)
    model = _model_folder(args)
    try:
        if args.command == "experiment":
            ranks = [int(r) for r in args.ranks.split(",") if r.strip()]
            run_rank_experiment(args.task, args.steps, ranks, not args.no_full, args.out, args.device, args.lr,
                                args.full_lr, args.batch_size, args.eval_n, args.seed, model)
        else:
            run_demo(args.task, args.steps, args.rank, args.out, args.device, args.lr, args.batch_size,
                     args.eval_n, args.seed, model, progress=not args.no_progress, lora_alpha=args.lora_alpha)
    except (FileNotFoundError, _DeviceUnavailable) as exc:  # a missing base model, a device that cannot run
        raise UsageError(str(exc)) from None
    return 0
