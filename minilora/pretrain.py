"""Pretrain the small base model that ships with minilora (``minilora/assets/base``).

    python -m minilora.pretrain                          # the shipped run (see assets/base/pretrain.json)
    python -m minilora.pretrain --steps 200 --out /tmp/base   # a quick, weaker one

A 4-layer Llama with a byte-level vocabulary learns the built-in base corpus (``minilora.data``:
facts about an invented world, short stories, sums) from scratch with minilora's own training loop.
The result knows the world's facts in the corpus's phrasings but has never seen the downstream
tasks' formats -- the starting point a LoRA fine-tune needs. Same seed and steps give the same
weights (on the same NumPy/BLAS build). ``--resume`` continues an interrupted run from its run folder.
"""
import argparse
import os
import sys
import time

import numpy as np

from . import data
from .checkpoint import atomic_folder, atomic_write, save_json
from .models import BASE_DIR, LlamaConfig, LlamaForCausalLM
from .random import manual_seed
from .tokenizer import ByteTokenizer
from .train import train

__all__ = ["BASE_CONFIG", "PRETRAIN_DEFAULTS", "base_config", "pretrain", "score", "main"]

# The architecture: ~0.84M parameters, 3.4 MB in float32. Small enough to train on two CPU cores in
# a coffee break, big enough to memorise the world's 200 facts and to write fluent corpus sentences.
BASE_CONFIG = dict(hidden_size=128, intermediate_size=352, num_hidden_layers=4, num_attention_heads=4,
                   num_key_value_heads=4, max_position_embeddings=256, rope_theta=10000.0,
                   tie_word_embeddings=True)
PRETRAIN_DEFAULTS = dict(steps=2000, batch_size=16, block_size=128, lr=3e-3, warmup_steps=100,
                         weight_decay=0.1, seed=0)


def base_config(tokenizer=None):
    tokenizer = tokenizer or ByteTokenizer()
    return LlamaConfig(vocab_size=tokenizer.vocab_size, bos_token_id=tokenizer.bos_token_id,
                       eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                       **BASE_CONFIG)


def score(model, tokenizer, n=None):
    """The numbers recorded with a base model: base-task scores and downstream scores before any
    fine-tuning (which should be about 0)."""
    out = {"corpus_loss": round(data.corpus_loss(model, tokenizer), 4)}
    for name, task in data.TASKS.items():
        out[f"{name}_accuracy"] = round(data.evaluate(model, tokenizer, task, n).accuracy, 4)
    return out


def pretrain(steps=PRETRAIN_DEFAULTS["steps"], out=BASE_DIR, run_dir="minilora-pretrain-run",
             seed=PRETRAIN_DEFAULTS["seed"], batch_size=PRETRAIN_DEFAULTS["batch_size"],
             block_size=PRETRAIN_DEFAULTS["block_size"], lr=PRETRAIN_DEFAULTS["lr"],
             warmup_steps=PRETRAIN_DEFAULTS["warmup_steps"],
             weight_decay=PRETRAIN_DEFAULTS["weight_decay"], resume=False, progress=True):
    """Train a base model from scratch and write it (config.json, model.safetensors, pretrain.json,
    README.md) to ``out``. Checkpoints, metrics and the loss curve go to ``run_dir``. Returns the
    metadata dict."""
    tokenizer = ByteTokenizer()
    manual_seed(seed)
    model = LlamaForCausalLM(base_config(tokenizer))
    # Enough documents that no block repeats (about 150 bytes per document).
    n_docs = steps * batch_size * block_size // 150 + 100
    loader = data.corpus_loader(tokenizer, n_docs, block_size, batch_size, seed)
    held_out = data.corpus_loader(tokenizer, 100, block_size, batch_size, seed=10_000)
    start = time.perf_counter()
    result = train(model, loader, held_out, steps=steps, lr=lr, warmup_steps=warmup_steps,
                   weight_decay=weight_decay, betas=(0.9, 0.95), clip_norm=1.0,
                   eval_every=max(1, steps // 5), save_every=100, out_dir=run_dir, seed=seed,
                   resume=resume, progress=progress)
    minutes = (time.perf_counter() - start) / 60
    meta = {"command": "python -m minilora.pretrain " + " ".join(sys.argv[1:]) if __name__ == "__main__"
            else f"minilora.pretrain.pretrain(steps={steps}, seed={seed})",
            "steps": steps, "seed": seed, "batch_size": batch_size, "block_size": block_size,
            "lr": lr, "warmup_steps": warmup_steps, "weight_decay": weight_decay,
            "tokens_seen": steps * batch_size * block_size,
            "parameters": model.num_parameters(),
            "minutes": round(minutes, 1), "final_train_loss": round(result.final_loss, 4),
            "world_seed": data.WORLD_SEED,
            # Float results can depend on the NumPy/BLAS build and its thread count.
            "environment": {"numpy": np.__version__,
                            "OPENBLAS_NUM_THREADS": os.environ.get("OPENBLAS_NUM_THREADS")},
            "scores_before_fine_tuning": score(model, tokenizer)}
    with atomic_folder(out) as staging:  # (one unit: a kill never leaves new weights beside the old scores)
        model.save_pretrained(staging)
        meta["file_bytes"] = os.path.getsize(os.path.join(staging, "model.safetensors"))
        save_json(meta, os.path.join(staging, "pretrain.json"))
        _write_readme(staging, meta)
        for name in os.listdir(staging):  # temp-file writes are private (0600); package data must be readable
            os.chmod(os.path.join(staging, name), 0o644)
    return meta


def _write_readme(out, meta):
    scores = meta["scores_before_fine_tuning"]
    downstream = ", ".join(f"`{name}`: {100 * scores[name + '_accuracy']:.0f}%"
                           for name, task in data.TASKS.items() if task.downstream)
    text = f"""# The minilora base model

A {BASE_CONFIG['num_hidden_layers']}-layer Llama (hidden size {BASE_CONFIG['hidden_size']}, \
{meta['parameters']:,} parameters, byte-level vocabulary of 259) pretrained from scratch by

    {meta['command']}

in {meta['minutes']} minutes on the CPU ({meta['steps']} steps, seed {meta['seed']}, \
{meta['tokens_seen']:,} tokens of the built-in corpus, see `minilora/data.py`). Final train loss \
{meta['final_train_loss']}, held-out corpus loss {scores['corpus_loss']}.

It knows the invented world's facts in the corpus's phrasing (`facts` task: \
{100 * scores['facts_accuracy']:.0f}% exact match) but not the downstream tasks ({downstream}) -- \
those are what `minilora demo` teaches it with LoRA. Load it with `minilora.models.load_base()`. \
All numbers: `pretrain.json`.
"""
    with atomic_write(os.path.join(out, "README.md"), "w") as f:
        f.write(text)


def _check_arguments(parser, args):
    """Refuse, before hours of work, a block the model's positions do not cover (its config.json would
    claim max_position_embeddings it was trained past) and an output path that is a file."""
    most = BASE_CONFIG["max_position_embeddings"]
    if args.block_size > most:
        parser.error(f"argument --block-size: must be at most the model's max_position_embeddings {most}, "
                     f"got {args.block_size}")
    for flag, path in (("--out", args.out), ("--run-dir", args.run_dir)):
        if os.path.exists(path) and not os.path.isdir(path):
            parser.error(f"argument {flag}: {path} is a file; it must be a folder (or a new name)")


def main(argv=None):
    from .cli import non_negative_int, positive_float, positive_int
    p = argparse.ArgumentParser(prog="python -m minilora.pretrain", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--steps", type=positive_int, default=PRETRAIN_DEFAULTS["steps"], help="optimizer steps")
    p.add_argument("--out", default=BASE_DIR, help="where to write the model")
    p.add_argument("--run-dir", default="minilora-pretrain-run",
                   help="checkpoints, metrics.jsonl and loss.png of the run")
    p.add_argument("--seed", type=non_negative_int, default=PRETRAIN_DEFAULTS["seed"])
    p.add_argument("--batch-size", type=positive_int, default=PRETRAIN_DEFAULTS["batch_size"])
    p.add_argument("--block-size", type=positive_int, default=PRETRAIN_DEFAULTS["block_size"],
                   help="tokens per training sequence")
    p.add_argument("--lr", type=positive_float, default=PRETRAIN_DEFAULTS["lr"], help="peak learning rate")
    p.add_argument("--resume", action="store_true", help="continue from the run folder's checkpoint")
    p.add_argument("--no-progress", action="store_true", help="plain log lines instead of a bar")
    args = p.parse_args(argv)
    _check_arguments(p, args)
    meta = pretrain(args.steps, args.out, args.run_dir, args.seed, args.batch_size, args.block_size,
                    args.lr, resume=args.resume, progress=not args.no_progress)
    print(f"wrote {args.out}: {meta['file_bytes'] / 1e6:.2f} MB, {meta['minutes']} min, "
          f"scores {meta['scores_before_fine_tuning']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
