# %% [markdown]
# # 6. Fine-tuning the base model with LoRA
#
# Everything so far was parts. Now the whole: take the pretrained base model, wrap it with LoRA, train
# on a task it cannot do, and measure what changed -- on the task, and on what the model knew before.
# Then do the same with full fine-tuning and compare.
#
# The task, `qa`, asks questions about the invented world the base model read about during
# pretraining, in a format it has never seen:
#
# ```
# Q: Where does Ada Morn live?
# A: Mert
# ```
#
# The questions used for training are about one half of the world's people and countries; the
# evaluation asks about the *other* half. So a correct answer at evaluation cannot be memorised from
# the fine-tuning data: the model must connect the new format to knowledge it got in pretraining. That
# is the classic use of fine-tuning -- teach a format or a behaviour, keep the knowledge.
#
# **Read beside it:** `minilora/train.py` (the loop: micro-batches, clipping, AdamW, schedule,
# checkpoints), `minilora/data.py` (the world, the tasks, `encode_example`, `evaluate`),
# `minilora/optim/adam.py`, `minilora/optim/lr_scheduler.py`, `minilora/optim/clip_grad.py`.
# **Exercises 6.1-6.3** (the AdamW update, gradient clipping, the cosine schedule): the training cells
# below need all three.
#
# The centrepiece is **forgetting**: what fine-tuning does to what the model knew, how it depends on
# the number of steps, the learning rate and the rank, and one fix that works.
#
# **In a student copy** (`minilora exercises build DIR`, solutions replaced by stubs) this notebook runs
# until the first cell that calls an exercise not yet solved -- this chapter's or an earlier one's --
# and stops there with `NotImplementedError: Exercise N.M: <what to do>`. Solve it, check it with
# `minilora exercises check --only N.M`, restart the kernel and run again.

# %%
import json
import os
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

import minilora as ml
from minilora import data, memory
from minilora.lora import LoraConfig, get_peft_model
from minilora.models import load_base
from minilora.tokenizer import ByteTokenizer
from minilora.train import train

ml.manual_seed(0)
tok = ByteTokenizer()
qa, facts = data.get_task("qa"), data.get_task("facts")
STEPS, BATCH = 60, 16
CORPUS_DOCS, FACTS_N = 20, 30   # the forgetting measures watched during training (the before/after table uses 50, 60)


def asset_dir():
    """notebooks/assets/: next to this notebook, or in the repository of the installed minilora."""
    for root in (Path.cwd(), Path.cwd() / "notebooks", Path(ml.__file__).resolve().parents[1] / "notebooks"):
        if (root / "assets").is_dir():
            return root / "assets"
    raise FileNotFoundError("notebooks/assets not found: run this notebook from the repository")

# %% [markdown]
# ## The data
#
# An example is a prompt and an answer. For training, both are put in one sequence,
# `[bos] prompt answer [eos]`, and the *labels* are the same ids except `-100` on the prompt: the loss
# is computed only where the model must produce the answer (and the end-of-sequence token, so it
# learns to stop). `-100` is PyTorch's `ignore_index`.
#
# **Predict:** in the last twelve tokens of an example, which ones will carry a label?

# %%
print(f"{len(qa.train)} training examples, {len(qa.eval)} evaluation examples (about other entities)")
for ex in qa.train[:2] + qa.eval[:1]:
    print(repr(ex.prompt), "->", repr(ex.answer))

ids, labels = data.encode_example(tok, qa.train[0])
shown = [tok.decode([i], skip_special_tokens=False) for i in ids]
print("\ntoken:", " ".join(f"{t!r:>6}" for t in shown[-12:]))
print("label:", " ".join(f"{'-100' if l == -100 else repr(tok.decode([l], skip_special_tokens=False)):>6}" for l in labels[-12:]))

# %% [markdown]
# ## Before: what the base model does
#
# Two tasks: `facts` asks for a fact in the corpus's own phrasing ("The capital of X is" -> " Y."), `qa`
# in the new Q/A format.
#
# Two measures of what the model knew will be watched from here on: `facts` accuracy (60 fact
# sentences, exact match; 30 of them while training) and the **corpus loss**, the next-token loss on held-out text of the
# pretraining corpus. The first asks "does it still know the facts?", the second "is it still the
# same language model?". They need not agree.
#
# **Predict:** the base model's `qa` accuracy, and its `facts` accuracy?

# %%
base = load_base()
before = {"qa": data.evaluate(base, tok, qa, n=60), "facts": data.evaluate(base, tok, facts, n=60),
          "corpus loss": data.corpus_loss(base, tok, n_documents=50)}
# the same two measures on the smaller sets watched during training
base_corpus, base_facts = data.corpus_loss(base, tok, n_documents=CORPUS_DOCS), data.evaluate(base, tok, facts, n=FACTS_N).accuracy
print(before["facts"])
print(before["qa"])
for prompt, target, output in before["qa"].samples[:3]:
    print(f"  {prompt!r} -> {output!r}   (expected {target!r})")
assert before["qa"].accuracy == 0 and before["facts"].accuracy > 0.95   # knows the facts, not the format

# %% [markdown]
# It knows the facts, in the corpus's phrasing. Asked in the Q/A format, it does not answer; it
# continues the text as corpus prose.
#
# ## LoRA fine-tuning
#
# LoRA on every linear layer of the transformer (`"all-linear"`: the attention and MLP projections,
# never the output head), rank 8, `lora_alpha = 16` (scale 2). `minilora.train.train` runs AdamW over
# the parameters that require gradients -- after `get_peft_model`, only the adapters -- with gradient
# clipping, a warmup and a cosine decay of the learning rate, and evaluates as it goes: the loss on
# held-out questions, and (through `eval_fn`) both forgetting measures every 15 steps.
#
# The learning rate, 3e-3, is about ten times what LoRA guides recommend for 7B models (1e-4..5e-4).
# That is this model's size, not a mistake: with Adam every weight moves by about the learning rate
# per step, and an output sums as many of those moves as its layer is wide -- 128 here, 4096 in a 7B
# model -- so a narrow model tolerates larger steps and learns in fewer of them; the right rate shrinks
# as models grow. Below, 1e-3 and 1e-2 are tried too, and notebook 8 shows what far too large a rate does.
#
# **Predict:** how far will the training loss fall in 60 steps: by half, tenfold, a hundredfold?

# %%
def forgetting(model):
    """Both forgetting measures, for train()'s eval_fn."""
    return {"corpus_loss": data.corpus_loss(model, tok, n_documents=CORPUS_DOCS),
            "facts": data.evaluate(model, tok, facts, n=FACTS_N).accuracy}

lora_model = get_peft_model(load_base(), LoraConfig(r=8, lora_alpha=16, target_modules="all-linear",
                                                    task_type="CAUSAL_LM"))
lora_model.print_trainable_parameters()

train_loader = data.task_loader(tok, qa, "train", batch_size=BATCH, seed=0)
eval_loader = data.task_loader(tok, qa, "eval", batch_size=BATCH, shuffle=False)
lora_run = train(lora_model, train_loader, eval_loader, steps=STEPS, lr=3e-3, warmup_steps=6,
                 weight_decay=0.0, eval_every=15, eval_fn=forgetting, progress=False)
print(f"final train loss {lora_run.final_loss:.4f} after {STEPS} steps, "
      f"{lora_run.seconds_per_step:.2f} s per step on {ml.parallel.machine_description()}")
lora_evals = [e["eval_loss"] for e in lora_run.evals if "eval_loss" in e]
print(f"train loss {lora_run.losses[0]:.3f} -> {lora_run.final_loss:.4f} "
      f"({lora_run.losses[0] / lora_run.final_loss:.0f}x); eval loss {lora_evals[0]:.3f} -> {lora_evals[-1]:.4f}")
assert lora_run.losses[0] > 100 * lora_run.final_loss and lora_evals[-1] < lora_evals[0] / 2

# %% [markdown]
# The loss falls by more than two orders of magnitude in a few dozen steps (the factor is printed above), and the evaluation
# loss -- on questions about people and countries the adapter never saw -- falls with it. The learning rate
# follows `train`'s default schedule, `transformers`' cosine schedule with warmup (exercise 6.3), with
# `warmup_steps=6`.
#
# **Predict:** what shape will the learning-rate curve have over the 60 steps?

# %%
def eval_points(run, key="eval_loss"):
    return [(e["step"], e[key]) for e in run.evals if key in e]

fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
axes[0].semilogy(range(1, STEPS + 1), lora_run.losses, label="train loss")
axes[0].semilogy(*zip(*eval_points(lora_run)), "o-", label="eval loss (unseen entities)")
axes[0].set(xlabel="step", ylabel="loss", title="LoRA r=8 on qa")
axes[0].legend()
axes[1].plot(range(1, STEPS + 1), lora_run.lrs)
axes[1].set(xlabel="step", ylabel="learning rate", title="warmup, then cosine decay")
plt.tight_layout()
plt.show()
peak = int(np.argmax(lora_run.lrs))   # 0, lr/6, ..., lr at step 7, then down towards 0
assert peak == 6 and np.allclose(np.diff(lora_run.lrs[:peak + 1]), 3e-3 / 6) and lora_run.lrs[-1] < 0.01 * 3e-3

# %% [markdown]
# The rate rises linearly over the six warmup steps, then follows half a cosine down to zero.
#
# ## After: the task, and what the model knew
#
# Exact match of greedy generations on the evaluation questions, the base task `facts`, and the loss on
# held-out corpus text. A rise of the last one, or a drop of `facts`, after fine-tuning is *forgetting*.
#
# **Predict first.** The lesson this project follows says that with LoRA "catastrophic forgetting
# [is] essentially impossible", because the pretrained knowledge is in `W0`, which never changes. Do
# you expect the corpus loss to stay at the base model's value? Write your guess (a number; the base
# model's value is printed above) and run the next cell.

# %%
predicted_corpus_loss = None   # your guess for the corpus loss after LoRA fine-tuning, e.g. 0.25

# %%
def scores(model):
    return {"qa": data.evaluate(model, tok, qa, n=60), "facts": data.evaluate(model, tok, facts, n=60),
            "corpus loss": data.corpus_loss(model, tok, n_documents=50)}

after_lora = scores(lora_model)
print(after_lora["qa"])
for prompt, target, output in after_lora["qa"].samples[:4]:
    print(f"  {prompt!r} -> {output!r}   (expected {target!r})")
print(f"\ncorpus loss: base {before['corpus loss']:.3f} -> after LoRA {after_lora['corpus loss']:.3f} "
      f"({after_lora['corpus loss'] / before['corpus loss']:.1f}x)")
print(f"facts accuracy: base {before['facts'].accuracy:.0%} -> after LoRA {after_lora['facts'].accuracy:.0%}")
if predicted_corpus_loss is not None:
    print(f"you predicted {predicted_corpus_loss:.3f}")
assert after_lora["corpus loss"] > 2 * before["corpus loss"]   # "several times over", below

# %% [markdown]
# **The lesson's claim is wrong.** `W0` is indeed unchanged -- but the model is not `W0`, it is
# `W0 + s B A`, and that model is what answers. Its loss on the text it was pretrained on has gone up
# several times over after 60 steps on 120 questions: as a language model of its corpus it has
# forgotten a good part of what it knew. What LoRA guarantees is narrower and still valuable: the
# *old model is recoverable*: disable the adapter and score again.
#
# **Predict:** the same scores as the base model's before training -- exactly, or only close?

# %%
with lora_model.disable_adapter():
    disabled = scores(lora_model)
print("adapter disabled == base model:",
      all(float(disabled[k]) == float(before[k]) for k in before))
assert all(float(disabled[k]) == float(before[k]) for k in before)

# %% [markdown]
# Exactly: with the adapter disabled, the layers compute `W0 x` alone, and the scores are the ones from before.
#
# ## Against full fine-tuning
#
# The same data, steps and schedule, every weight trained. Full fine-tuning moves all 837,120 numbers
# with a smaller learning rate (1e-3; LoRA's update starts at zero and takes a larger one).
#
# **Predict:** which forgets more by `facts` accuracy, and which by corpus loss?

# %%
full_model = load_base()
full_run = train(full_model, train_loader, eval_loader, steps=STEPS, lr=1e-3, warmup_steps=6,
                 weight_decay=0.0, eval_every=15, eval_fn=forgetting, progress=False)
after_full = scores(full_model)

fig, ax = plt.subplots(figsize=(6.5, 3.5))
for run, label, color in ((lora_run, "LoRA r=8", "C0"), (full_run, "full fine-tuning", "C1")):
    ax.semilogy(range(1, STEPS + 1), run.losses, color=color, lw=1, label=f"{label}: train")
    ax.semilogy(*zip(*eval_points(run)), "o--", color=color, label=f"{label}: eval")
ax.set(xlabel="step", ylabel="loss", title="qa: LoRA against full fine-tuning")
ax.legend(fontsize=8)
plt.show()

# %%
def trainable(model):
    return sum(p.numel() for p in model.parameters() if p.requires_grad)

results = {"LoRA r=8": (lora_model, after_lora), "full": (full_model, after_full)}
rows = {
    "trainable parameters": lambda m, sc: f"{trainable(m):,d}",
    "gradients + AdamW moments": lambda m, sc: memory.format_bytes(3 * 4 * trainable(m)),
    "qa accuracy (unseen entities)": lambda m, sc: f"{sc['qa'].accuracy:.0%}",
    f"facts accuracy (base: {before['facts'].accuracy:.0%})": lambda m, sc: f"{sc['facts'].accuracy:.0%}",
    f"corpus loss (base: {before['corpus loss']:.3f})": lambda m, sc: f"{sc['corpus loss']:.3f}",
}
print(f"{'':<34}" + "".join(f"{name:>14}" for name in results))
for label, cell in rows.items():
    print(f"{label:<34}" + "".join(f"{cell(m, sc):>14}" for m, sc in results.values()))

def less(lora_value, full_value, higher_is_worse):
    if lora_value == full_value:
        return "the same as"
    return "less than" if (lora_value < full_value) == higher_is_worse else "more than"

print(f"\nby facts accuracy, LoRA forgot {less(after_lora['facts'].accuracy, after_full['facts'].accuracy, False)} "
      f"full fine-tuning; by corpus loss, LoRA forgot "
      f"{less(after_lora['corpus loss'], after_full['corpus loss'], True)} full fine-tuning")
assert round(trainable(lora_model) / trainable(full_model), 1) == 0.1     # "a tenth" (below)
assert min(after_lora["qa"].accuracy, after_full["qa"].accuracy) > 0.8    # both learn the format

# %% [markdown]
# How to read this table:
#
# * **Trainable state.** LoRA trains a tenth of the numbers here, and at 7B scale a few thousandths
#   (notebook 3). Gradients and the two AdamW moments exist only for those.
# * **The task.** Both learn the format. The evaluation questions are about entities never seen in
#   fine-tuning, so this measures whether the new format reaches the old knowledge -- a rank-8 change
#   of the weights is enough for that.
# * **Forgetting.** Both change what the model does on its old distribution, and the two measures
#   need not rank them the same way (the last line above says how they rank them in this run). A
#   low-rank update is not automatically a gentle one. Biderman et al. (2024, "LoRA Learns Less and
#   Forgets Less") find, on 7B models, that LoRA usually forgets less than full fine-tuning -- and
#   also learns less of the new domain. Here the two runs use different learning rates, and the next
#   section shows that the learning rate decides forgetting at least as much as the method does.
#
# ## Forgetting, step by step
#
# Both runs evaluated the two forgetting measures every 15 steps. When does the damage happen?
#
# **Predict:** what share of the rise in corpus loss happens in the first 15 of the 60 steps?

# %%
fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
for run, label, color in ((lora_run, "LoRA r=8, lr 3e-3", "C0"), (full_run, "full, lr 1e-3", "C1")):
    steps_, corpus_ = zip(*([(0, base_corpus)] + eval_points(run, "corpus_loss")))
    axes[0].plot(steps_, corpus_, "o-", color=color, label=label)
    steps_, facts_ = zip(*([(0, base_facts)] + eval_points(run, "facts")))
    axes[1].plot(steps_, facts_, "o-", color=color, label=label)
    print(f"{label:<18} corpus loss by step: " + ", ".join(f"{s}: {c:.3f}" for s, c in zip(steps_, corpus_))
          + f"  -> {(corpus_[1] - corpus_[0]) / (corpus_[-1] - corpus_[0]):.0%} of the rise by step {steps_[1]}")
    rise = corpus_[-1] - corpus_[0]
    assert corpus_[1] - corpus_[0] > rise / 2 and abs(corpus_[-1] - corpus_[-2]) < rise / 10   # early, not late
axes[0].set(xlabel="step", ylabel="corpus loss (held out)", title="forgetting: the language model")
axes[1].set(xlabel="step", ylabel="facts accuracy", title="forgetting: the facts", ylim=(0, 1.05))
axes[0].legend(fontsize=8)
plt.tight_layout()
plt.show()

# %% [markdown]
# More than half of the damage is done in the first quarter of the run, while the task loss is still
# falling fast and the learning rate is at its largest; the last quarter, at a small learning rate,
# adds little. Stopping early helps less than one might hope.
#
# ## What controls forgetting: learning rate, rank, and one fix
#
# Short LoRA runs on the same task, each changing one thing from the run above (r = 8, `lora_alpha = 2r`,
# lr 3e-3). Each is scored with the two measures watched during training (30 fact sentences, 20 corpus
# documents), so the first row -- the run above -- reads a little differently from the before/after
# table, which used 60 sentences and 50 documents. One applies `lora_dropout = 0.1` (dropout on the adapter's input only, in training; the
# usual regulariser of LoRA configs). The last one is a fix: **mix base-corpus text into the
# fine-tuning data** (a quarter of the examples are 48-token blocks of corpus documents -- not the
# held-out ones the corpus loss uses),
# so that every step also pays for drifting away from the old distribution. This is the "replay" idea
# used against forgetting since long before LoRA.
#
# Five more fine-tunes would make this notebook much slower, so four of them were run once and
# recorded in `notebooks/assets/forgetting_sweep.json` by this very cell (rerun it with the environment
# variable `MINILORA_FULL_SWEEP=1`, e.g. `MINILORA_FULL_SWEEP=1 python notebooks/src/06_finetune.py`
# from the repository). The fix is run live here, and must reproduce its recorded row.
#
# **Predict first.** Rank the five runs by corpus loss after training. Which knob matters most?

# %%
predicted_ranking = None   # e.g. ["lr 1e-3", "lora_dropout 0.1", "mix 25% corpus", "r=32", "lr 1e-2"], least forgetting first

# %%
qa_items = [data.encode_example(tok, ex) for ex in qa.train]
corpus_rows = data.pack(sum((data.encode_document(tok, doc) for doc in data.corpus_documents(100, 0)), []), 48)
mixed_items = qa_items + [(list(row), list(row)) for row in corpus_rows[:len(qa_items) // 3]]

def short_run(r=8, lr=3e-3, items=qa_items, lora_dropout=0.0):
    ml.manual_seed(0)
    model = get_peft_model(load_base(), LoraConfig(r=r, lora_alpha=2 * r, target_modules="all-linear",
                                                   lora_dropout=lora_dropout))
    train(model, data.DataLoader(items, BATCH, 0, tok.pad_token_id), steps=STEPS, lr=lr, warmup_steps=6,
          progress=False, plot=False)
    return {"qa": data.evaluate(model, tok, qa, n=60).accuracy, **forgetting(model)}

variants = {"lr 1e-3": dict(lr=1e-3), "lr 1e-2": dict(lr=1e-2), "r=32": dict(r=32),
            "lora_dropout 0.1": dict(lora_dropout=0.1), "mix 25% corpus": dict(items=mixed_items)}
sweep_file = asset_dir() / "forgetting_sweep.json"
if os.environ.get("MINILORA_FULL_SWEEP"):
    sweep_file.write_text(json.dumps({name: short_run(**kw) for name, kw in variants.items()}, indent=1) + "\n")
recorded = json.loads(sweep_file.read_text())
fix = short_run(**variants["mix 25% corpus"])                 # the fix, run now
was = recorded["mix 25% corpus"]
print(f"the fix run now: qa {fix['qa']:.0%}, facts {fix['facts']:.0%}, corpus loss {fix['corpus_loss']:.3f} "
      f"| recorded: {was['qa']:.0%}, {was['facts']:.0%}, {was['corpus_loss']:.3f}")
assert abs(fix["corpus_loss"] - was["corpus_loss"]) < 0.02 and abs(fix["qa"] - was["qa"]) <= 0.05, \
    "the recorded sweep does not match this code any more: rerun it with MINILORA_FULL_SWEEP=1"

last = {k: lora_run.evals[-1][k] for k in ("corpus_loss", "facts")}
sweep = {"r=8, lr 3e-3 (above)": {"qa": after_lora["qa"].accuracy, **last}, **recorded, "mix 25% corpus": fix}
print(f"{'run':<22}{'qa accuracy':>12}{'facts':>8}{'corpus loss':>13}   (base: facts {base_facts:.0%}, corpus loss {base_corpus:.3f})")
for name, row in sweep.items():
    print(f"{name:<22}{row['qa']:>12.0%}{row['facts']:>8.0%}{row['corpus_loss']:>13.3f}")
ranking = sorted((k for k in sweep if k != "r=8, lr 3e-3 (above)"), key=lambda k: sweep[k]["corpus_loss"])
print("\nleast forgetting first:", ranking)
if predicted_ranking is not None:
    print("you predicted:          ", predicted_ranking)
above = sweep["r=8, lr 3e-3 (above)"]
# the claims of the next cell: forgetting grows with the rate and the rank; too large a rate costs the
# task too; dropout changes little; replay keeps nearly the base corpus loss (closer than the gentler
# rate) and almost all the task accuracy, and about as many facts as the run without it
dropout = sweep["lora_dropout 0.1"]
assert sweep["lr 1e-3"]["corpus_loss"] < above["corpus_loss"] < sweep["lr 1e-2"]["corpus_loss"]
assert sweep["r=32"]["corpus_loss"] > above["corpus_loss"] and sweep["lr 1e-2"]["qa"] < above["qa"] - 0.1
assert abs(sweep["lr 1e-3"]["qa"] - above["qa"]) <= 0.05
assert abs(dropout["corpus_loss"] - above["corpus_loss"]) < 0.15 * above["corpus_loss"] and abs(dropout["qa"] - above["qa"]) <= 0.05
assert fix["corpus_loss"] < min(1.2 * base_corpus, sweep["lr 1e-3"]["corpus_loss"]) and fix["qa"] >= above["qa"] - 0.05
assert abs(fix["facts"] - above["facts"]) <= 0.1

fig, ax = plt.subplots(figsize=(7, 3.2))
ax.bar(list(sweep), [row["corpus_loss"] for row in sweep.values()], color="C3")
ax.axhline(base_corpus, color="k", ls="--", lw=1, label="base model")
ax.set(ylabel="corpus loss after 60 steps", title="forgetting, by what was changed")
ax.tick_params(axis="x", labelsize=8, rotation=15)
ax.legend()
plt.show()

# %% [markdown]
# Read the table for the trade: a run forgets less when it moves the weights less (a lower learning
# rate; a larger rank at the same scale moves them more) or when it is asked to keep the old
# distribution (replay). Here the gentler rate costs a few points of `qa` accuracy at most -- 60 steps
# at 3e-3 were simply more than `qa` needed -- while too large a rate (1e-2) costs both the task and the
# old knowledge.
# `lora_dropout` changes little in either direction at this scale (a difference of this size could be
# the seed). Mixing in corpus text brings the corpus loss almost back to the base model's -- closer
# than the gentler rate gets -- for a few points of `qa` at most; its price is a quarter of every batch
# spent on old text. It does less for the `facts` score: this run keeps about as many of the 30 fact
# sentences as the run without replay. The two measures of forgetting need not agree, and 30
# sentences are a small sample.
#
# With one small model, one seed and 60 steps these are anecdotes, not a benchmark: rerun with other
# seeds and step counts to see the spread. `minilora experiment ranks` repeats the fine-tune for several
# ranks and for full fine-tuning.
#
# ## Summary
#
# * Labels are `-100` on the prompt: the model is trained to produce the answer and stop.
# * `get_peft_model` + `train` fine-tunes only the adapters: AdamW, clipping, warmup and cosine decay.
# * The adapter learns a new format that generalises to entities it never saw in fine-tuning.
# * LoRA forgets: the corpus loss rises several-fold. Disabling the adapter gives back the base model
#   exactly; the *adapted* model has no such protection.
# * Forgetting grows with the learning rate and the rank and happens mostly early; replaying base data
#   keeps the corpus loss near the base model's for little task accuracy here.
#
# ## Questions and small tasks
#
# 1. Predict, then run `short_run(r=2)`: more or less forgetting than r = 8? Does it still learn `qa`?
# 2. Why can mixing in corpus text lower the corpus loss *below* what LoRA reached without it, even
#    though the adapter has the same number of parameters? What does it change in the gradient?
# 3. Full fine-tuning at lr 3e-3 (LoRA's rate): predict its corpus loss, then measure it.
#
# ## What's next
#
# * Notebook 7 serves several adapters on one base model; notebook 8 diagnoses runs that go wrong.
# * Larger models: QLoRA (Dettmers et al., 2023) fine-tunes a 4-bit base (notebook 3 sizes it);
#   Hugging Face `trl`'s `SFTTrainer` wraps this whole loop, with the same `LoraConfig`.
# * Multi-GPU training: minilora's `DistributedDataParallel` (`minilora/nn/parallel.py`); at scale,
#   FSDP or DeepSpeed ZeRO shard the frozen weights too.
