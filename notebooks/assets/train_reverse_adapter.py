"""Train the `reverse` adapter that notebook 7 serves next to `qa`, and save it in PEFT's format.

`reverse` ("Reverse: cup kite bread" -> "bread kite cup") is a new operation for the base model, not a
new format for old knowledge, and it needs far more steps than `qa`: after 40 steps the adapter only
says a list of words; it takes hundreds of steps to reverse most unseen lists (``train_log.json``
records the accuracy every 100 steps). That is longer than the rest of notebook 7 together, so the
adapter is trained here once and shipped, small, under ``notebooks/assets/reverse-adapter/``;
notebook 7 loads it, re-evaluates it, and checks that the accuracy recorded in ``train_log.json`` is
what the shipped weights give.

    python notebooks/assets/train_reverse_adapter.py             # under a minute on 2 idle cores

``train_log.json`` records how long the shipped run took (on a machine shared with other jobs).

Deterministic: the same seed, data order and schedule give the same adapter on the same machine
(BLAS rounding may differ in the last bits between machines).
"""
import json
import sys
import time
from pathlib import Path

import minilora as ml
from minilora import data
from minilora.lora import LoraConfig, get_peft_model
from minilora.models import load_base
from minilora.tokenizer import ByteTokenizer
from minilora.train import train

HERE = Path(__file__).resolve().parent
OUT = HERE / "reverse-adapter"
STEPS, BATCH, LR, WARMUP, EVAL_N = 600, 16, 3e-3, 30, 100
CONFIG = dict(r=8, lora_alpha=16, target_modules="all-linear", task_type="CAUSAL_LM")


def main(steps=STEPS):
    ml.manual_seed(0)
    tok = ByteTokenizer()
    task = data.get_task("reverse")
    model = get_peft_model(load_base(), LoraConfig(**CONFIG))
    loader = data.task_loader(tok, task, "train", batch_size=BATCH, seed=0)
    checkpoints = {}

    def accuracy(m):
        return {"accuracy": data.evaluate(m, tok, task, n=EVAL_N).accuracy}

    start = time.perf_counter()
    run = train(model, loader, steps=steps, lr=LR, warmup_steps=WARMUP, eval_every=100,
                eval_fn=accuracy, progress=False, plot=False)
    for record in run.evals:
        if "accuracy" in record:
            checkpoints[record["step"]] = record["accuracy"]
    model.eval()
    model.save_pretrained(str(OUT))
    log = {"command": "python notebooks/assets/train_reverse_adapter.py", "steps": steps, "batch_size": BATCH,
           "lr": LR, "warmup_steps": WARMUP, "lora_config": CONFIG, "seed": 0,
           "seconds": round(time.perf_counter() - start, 1),
           "final_train_loss": run.losses[-1], "train_loss_every_50": run.losses[49::50],
           "eval_accuracy_by_step": checkpoints, "eval_examples": EVAL_N,
           "eval_accuracy_final": data.evaluate(model, tok, task, n=EVAL_N).accuracy}
    (OUT / "train_log.json").write_text(json.dumps(log, indent=1) + "\n")
    print(json.dumps(log, indent=1))


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else STEPS)
