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
# **Exercises 6.1-6.3** (the AdamW update, gradient clipping, the cosine schedule).

# %%
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

# %% [markdown]
# ## The data
#
# An example is a prompt and an answer. For training, both are put in one sequence,
# `[bos] prompt answer [eos]`, and the *labels* are the same ids except `-100` on the prompt: the loss
# is computed only where the model must produce the answer (and the end-of-sequence token, so it
# learns to stop). `-100` is PyTorch's `ignore_index`.

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
# It knows the facts -- in the corpus's own phrasing (`facts`: "The capital of X is" -> " Y."). Asked in
# the Q/A format, it does not answer; it continues the text as corpus prose.

# %%
base = load_base()
before = {"qa": data.evaluate(base, tok, qa, n=60), "facts": data.evaluate(base, tok, facts, n=60),
          "corpus loss": data.corpus_loss(base, tok, n_documents=50)}
print(before["facts"])
print(before["qa"])
for prompt, target, output in before["qa"].samples[:3]:
    print(f"  {prompt!r} -> {output!r}   (expected {target!r})")

# %% [markdown]
# ## LoRA fine-tuning
#
# LoRA on every linear layer of the transformer (`"all-linear"`: the attention and MLP projections,
# never the output head), rank 8, `lora_alpha = 16` (scale 2). `minilora.train.train` runs AdamW over
# the parameters that require gradients -- after `get_peft_model`, only the adapters -- with gradient
# clipping, a warmup and a cosine decay of the learning rate, and evaluates the loss on held-out
# examples as it goes.

# %%
lora_model = get_peft_model(load_base(), LoraConfig(r=8, lora_alpha=16, target_modules="all-linear",
                                                    task_type="CAUSAL_LM"))
lora_model.print_trainable_parameters()

train_loader = data.task_loader(tok, qa, "train", batch_size=BATCH, seed=0)
eval_loader = data.task_loader(tok, qa, "eval", batch_size=BATCH, shuffle=False)
lora_run = train(lora_model, train_loader, eval_loader, steps=STEPS, lr=3e-3, warmup_steps=6,
                 weight_decay=0.0, eval_every=10, progress=False)
print(f"final train loss {lora_run.final_loss:.4f} after {STEPS} steps, "
      f"{lora_run.seconds_per_step:.2f} s per step")

# %% [markdown]
# The loss falls by two orders of magnitude in a few dozen steps, and the evaluation loss -- on
# questions about people and countries the adapter never saw -- falls with it. The learning rate
# rises linearly for the warmup steps and then follows half a cosine down to zero (exercise 6.3).

# %%
def eval_points(run):
    return [(e["step"], e["eval_loss"]) for e in run.evals if "eval_loss" in e]

fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
axes[0].semilogy(range(1, STEPS + 1), lora_run.losses, label="train loss")
axes[0].semilogy(*zip(*eval_points(lora_run)), "o-", label="eval loss (unseen entities)")
axes[0].set(xlabel="step", ylabel="loss", title="LoRA r=8 on qa")
axes[0].legend()
axes[1].plot(range(1, STEPS + 1), lora_run.lrs)
axes[1].set(xlabel="step", ylabel="learning rate", title="warmup, then cosine decay")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## After: the task, and what the model knew
#
# Exact match of greedy generations on the evaluation questions, the base task `facts`, and the loss on
# held-out corpus text. A rise of the last two after fine-tuning is *forgetting*.

# %%
def scores(model):
    return {"qa": data.evaluate(model, tok, qa, n=60), "facts": data.evaluate(model, tok, facts, n=60),
            "corpus loss": data.corpus_loss(model, tok, n_documents=50)}

after_lora = scores(lora_model)
print(after_lora["qa"])
for prompt, target, output in after_lora["qa"].samples[:4]:
    print(f"  {prompt!r} -> {output!r}   (expected {target!r})")

# %% [markdown]
# Because `W0` was never touched, the base model is still inside: with the adapter disabled, the
# scores are exactly the ones from before.

# %%
with lora_model.disable_adapter():
    disabled = scores(lora_model)
print("adapter disabled == base model:",
      all(float(disabled[k]) == float(before[k]) for k in before))

# %% [markdown]
# ## Against full fine-tuning
#
# The same data, steps and schedule, every weight trained. Full fine-tuning moves all 837,120 numbers
# with a smaller learning rate (1e-3; LoRA's update starts at zero and takes a larger one).

# %%
full_model = load_base()
full_run = train(full_model, train_loader, eval_loader, steps=STEPS, lr=1e-3, warmup_steps=6,
                 weight_decay=0.0, eval_every=10, progress=False)
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

# %% [markdown]
# How to read this table:
#
# * **Trainable state.** LoRA trains a tenth of the numbers here, and at 7B scale a few thousandth
#   (notebook 3). Gradients and the two AdamW moments exist only for those.
# * **The task.** Both learn the format. The evaluation questions are about entities never seen in
#   fine-tuning, so this measures whether the new format reaches the old knowledge -- a rank-8 change
#   of the weights is enough for that. In the loss curves above, full fine-tuning drives the *training*
#   loss lower, but its evaluation loss stops higher: with every weight free, it can fit the training
#   questions more specifically than a low-rank update can.
# * **Forgetting.** Both change what the model does on its old distribution: the corpus loss rises and
#   the `facts` score drops for both. A low-rank update is not automatically a gentle one (Biderman et
#   al., 2024, "LoRA Learns Less and Forgets Less", find that it usually forgets somewhat less, as the
#   `facts` score does here). What LoRA does guarantee is that the base weights are untouched:
#   disabling the adapter gives the base model back exactly.
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
# * Disabling the adapter gives back the base model exactly; full fine-tuning has no such switch.
