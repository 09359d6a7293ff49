# %% [markdown]
# # 3. The memory wall: where fine-tuning memory goes
#
# Before LoRA's math, its motivation: full fine-tuning of a large model does not fit on a GPU, and the
# reason is not the model itself but everything training keeps *next to* each weight. This notebook
# counts that memory exactly -- for one matrix, for GPT-3 and for Llama-2-7B -- with `minilora.memory`,
# which writes down a model's parameter list from its config without allocating anything. Then it
# measures the real thing on a small model: full fine-tuning against LoRA, weights against activations.
#
# The lesson this project follows gets several of these numbers wrong; each one is recomputed here and
# the correction is stated where it comes up.
#
# **Read beside it:** `minilora/memory.py` (`estimate`, `report`, `measure_activations`), and the
# command-line view `minilora memory --help`. **Exercise 3.1** (`matrix_lora_params`) for the one-matrix
# table; the measured training steps also need chapters 1-2, the LoRA layer (4.1-4.4) and AdamW (6.1).
#
# **In a student copy** (`minilora exercises build DIR`, solutions replaced by stubs) this notebook runs
# until the first cell that calls an exercise not yet solved -- this chapter's or an earlier one's --
# and stops there with `NotImplementedError: Exercise N.M: <what to do>`. Solve it, check it with
# `minilora exercises check --only N.M`, restart the kernel and run again.

# %%
import matplotlib.pyplot as plt
import numpy as np

import minilora as ml
from minilora import memory
from minilora.lora import LoraConfig
from minilora.memory import format_bytes

ml.manual_seed(0)
GB = 1e9

# %% [markdown]
# ## One matrix
#
# Training one weight with AdamW in float32 keeps four arrays of its size: the weight, its gradient,
# and Adam's two running averages (the first moment `m` and the second moment `v`). That is 16 bytes
# per trained number. A 4096 x 4096 projection -- the size of a Llama-2-7B attention matrix -- has
# 16,777,216 numbers:
#
# **Predict:** how many bytes does training this one matrix with AdamW in float32 take?

# %%
d = 4096
n = d * d
rows = [("weights (float32)", 4), ("gradient", 4), ("Adam first moment m", 4), ("Adam second moment v", 4)]
for name, b in rows:
    print(f"{name:<24}{b:>3} bytes x {n:,d} = {format_bytes(b * n):>9}")
print(f"{'total':<24}{16:>3} bytes x {n:,d} = {format_bytes(16 * n):>9}")

# %% [markdown]
# LoRA freezes that matrix (`W0`) and trains a pair `A` (`r x 4096`) and `B` (`4096 x r`) instead. The
# frozen matrix still has to be in memory -- the forward pass needs it -- but only at 4 bytes per
# number; the 16 bytes apply to `A` and `B` alone. `memory.matrix_lora_params` counts the pair.
#
# **Predict:** going from r = 4 to r = 64 multiplies the LoRA parameters by 16. What does it do to the
# training memory of this matrix?

# %%
print(f"{'r':>4}{'LoRA params':>14}{'fewer':>8}{'training memory':>18}  (W0 frozen + A, B trained)")
for r in (4, 8, 16, 32, 64):
    full, lora, ratio = memory.matrix_lora_params(d, d, r)
    print(f"{r:>4}{lora:>14,d}{ratio:>7.0f}x{format_bytes(4 * full + 16 * lora):>18}")
print(f"\nfull fine-tuning of the same matrix: {format_bytes(16 * n)}")
assert 16 * n / (4 * n + 16 * memory.matrix_lora_params(d, d, 4)[1]) < 4   # the frozen W0 is the floor

# %% [markdown]
# For one matrix the saving is at most 4x (268 MB -> 68 MB): the frozen weight itself becomes the
# floor. Shrinking *that* floor is what QLoRA does next (a 4-bit `W0`), but it is a different idea.
#
# The lesson scales the 268 MB per 4096 x 4096 matrix up to "approximately 268 GB per billion
# parameters", and says GPT-3 has "about 1,000 such matrices".
#
# **Predict:** at 16 bytes a parameter, how many GB per billion parameters? And how many 4096 x 4096
# matrices is one of GPT-3's attention projections (its model width is 12,288)?

# %%
print(f"16 bytes x 1e9 parameters = {format_bytes(16 * 1e9)} per billion parameters")
print(f"GPT-3's W_q: 12288 x 12288 = {12288 ** 2:,d} numbers = {12288 ** 2 / n:.1f} matrices of 4096 x 4096")
print(f"175e9 parameters = {175e9 / n:,.0f} matrices of 4096 x 4096")
assert 16 * 175e9 == 2.8e12 and round(12288 ** 2 / n) == 9

# %% [markdown]
# **Two corrections to the lesson's arithmetic.** 16 bytes per parameter is **16 GB per billion**,
# and 175 billion parameters at 16 GB per billion is exactly the 2.8 TB the lesson then quotes. And
# GPT-3 does not have "about 1,000 such matrices": one of its attention projections alone is
# 12,288^2 = 151 million numbers, nine times a 4096 x 4096 matrix.

# %% [markdown]
# ## GPT-3: the wall
#
# `memory.estimate` takes a model config (or a preset name) and an optional `LoraConfig`, lists
# every parameter the model would have, applies LoRA's `target_modules` rule to the names, and adds up
# counts and bytes. The GPT-3 preset follows the GPT-3 paper (96 layers, width 12,288).
#
# **Predict first.** Full fine-tuning of GPT-3 (175B parameters) in float32 with AdamW: how many
# 80 GB GPUs does the training state alone fill (no activations)?

# %%
prediction = None   # a number of 80 GB GPUs

# %%
gpt3_full = memory.estimate("gpt-3-175b")
print(f"GPT-3: {gpt3_full.total_params:,d} parameters")
print(f"full fine-tuning, float32 + AdamW: {format_bytes(gpt3_full.total_bytes)} "
      f"= {gpt3_full.total_bytes / (80 * GB):.0f} A100s of 80 GB, for the weights and optimizer alone")
if prediction is not None:
    print(f"you predicted {prediction}")

# %% [markdown]
# The LoRA paper adapted GPT-3's query and value projections, `W_q` and `W_v`, in all 96 layers. Each
# adds `r x (12288 + 12288)` parameters, so the count is `2 x 96 x 24,576 x r = 4,718,592 x r`:
#
# **Predict:** how many trainable parameters at r = 8, and what percentage of 175B?

# %%
per_rank = memory.lora_params_per_rank("gpt-3-175b", target_modules=["q_proj", "v_proj"])
print(f"trainable parameters per unit of rank: {per_rank:,d}")
assert per_rank == 2 * 96 * 24_576 == 4_718_592
print(f"{'r':>4}{'trainable':>14}{'of 175B':>10}{'memory (W0 frozen)':>21}")
for r in (1, 2, 4, 8, 16):
    e = memory.estimate("gpt-3-175b", LoraConfig(r=r, target_modules=["q_proj", "v_proj"]))
    print(f"{r:>4}{e.trainable_params:>14,d}{e.trainable_percent:>9.4f}%{format_bytes(e.total_bytes):>21}")
    if r == 8:   # the lesson's "about 526M" and "0.3%"
        assert e.trainable_params == 37_748_736 and round(e.trainable_percent, 2) == 0.02
        assert 690 * GB < e.total_bytes < 710 * GB and 8 < e.total_bytes / (80 * GB) <= 9   # nine GPUs
        r8_bytes = e.total_bytes
frozen_16bit = 2 * gpt3_full.total_params          # the same frozen weights at 2 bytes each
print(f"r = 8: {format_bytes(r8_bytes)} = {int(np.ceil(r8_bytes / (80 * GB)))} GPUs of 80 GB in float32; "
      f"a 16-bit W0 alone is {format_bytes(frozen_16bit)}")

# %% [markdown]
# **The lesson gets these wrong.** It says LoRA with r = 8 "reduces trainable parameters from 175B to
# about 526M" and "adds only 0.3%"; the exact count is **37,748,736 (0.02%)**. Its note says "r = 4 ...
# ~4.7M"; 4.7M is **r = 1** (r = 4 gives 18.9M). The LoRA paper's Table 4 lists exactly these two
# sizes, 4.7M and 37.7M.
#
# Memory goes from 2.8 TB to about 700 GB with any of these ranks: the frozen weights at 4 bytes each.
# In float32 that still needs nine GPUs; in 16-bit weights it is 349 GB (both printed above). The point is not that LoRA
# makes GPT-3 fit one GPU, but that the *training state* (gradients and optimizer moments) of 175
# billion numbers disappears.
#
# ## Llama-2-7B: exact counts, and PEFT's printout
#
# `estimate` produces the same line as PEFT's `print_trainable_parameters()`, so it can be checked
# against PEFT without downloading anything (`tests/test_memory.py` does).
#
# **Predict:** all seven modules at r = 16 against q, k, v, o at r = 16: how many times more parameters?

# %%
targets = {
    "q, v": ["q_proj", "v_proj"],
    "q, k, v, o": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "all seven": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
}
exact = {}
for (label, modules), r in zip(targets.items(), (8, 16, 16)):
    e = memory.estimate('llama-2-7b', LoraConfig(r=r, target_modules=modules))
    exact[label] = e.trainable_params
    print(f"{label:<11} r={r:<3} {e.peft_line()}")
assert exact == {"q, v": 4_194_304, "q, k, v, o": 16_777_216, "all seven": 39_976_960}

# %% [markdown]
# The lesson's rank table for "a 7B model" ("r = 4: ~8M, r = 8: ~16M, ..., r = 128: ~256M") assumes
# "about 2M" parameters per unit of rank, and its code example prints
# `trainable params: 33,554,432 || all params: 6,771,970,048` for r = 16 on all seven modules.
#
# **Predict:** how many parameters per unit of rank do q, k, v, o and all seven give? Which
# configuration does the lesson's printed line belong to?

# %%
qkvo_r32 = memory.estimate("llama-2-7b", LoraConfig(r=32, target_modules=targets["q, k, v, o"]))
print("q, k, v, o at r = 32:", qkvo_r32.peft_line())
assert (qkvo_r32.trainable_params, qkvo_r32.total_params) == (33_554_432, 6_771_970_048)
per_unit = {label: memory.lora_params_per_rank("llama-2-7b", target_modules=targets[label]) for label in targets}
print("per unit of rank: " + ", ".join(f"{label} {n / 1e6:.2f}M" for label, n in per_unit.items()))
assert per_unit["q, k, v, o"] == 1_048_576 and per_unit["all seven"] == 2_498_560

ranks = np.array([4, 8, 16, 32, 64, 128])
lesson = np.array([8, 16, 32, 64, 128, 256]) * 1e6
fig, ax = plt.subplots(figsize=(6.5, 3.8))
for label, modules in targets.items():
    per = memory.lora_params_per_rank("llama-2-7b", target_modules=modules)
    ax.plot(ranks, per * ranks, "o-", label=f"{label}: {per / 1e6:.2f}M per rank")
ax.plot(ranks, lesson, "k*", ms=10, label="the lesson's table")
ax.set(xscale="log", yscale="log", xlabel="rank r", ylabel="trainable parameters",
       title="Llama-2-7B: LoRA parameters by rank and target modules")
ax.set_xticks(ranks, [str(r) for r in ranks])
ax.legend(fontsize=8)
plt.show()

# %% [markdown]
# Neither matches "about 2M" a rank: q, k, v, o gives 1.05M per rank and all seven give 2.5M (both
# printed above). The lesson's printed line belongs to q, k, v, o at **r = 32**; the config in its
# code, all seven at r = 16, gives 39,976,960 (above).
#
# Where the memory goes, full fine-tuning against LoRA (r = 16, all seven modules), in float32 with
# AdamW and before activations.
#
# **Predict:** the lesson says LoRA saves "approximately 3-4x" for a typical model. Where in that range
# will Llama-2-7B land, and what is the floor?

# %%
llama_full = memory.estimate("llama-2-7b")
llama_lora = memory.estimate("llama-2-7b", LoraConfig(r=16, target_modules=targets["all seven"]))
print(memory.comparison_table({"full fine-tuning": llama_full, "LoRA r=16, all seven": llama_lora}))
print(f"\nsaving: {llama_full.total_bytes / llama_lora.total_bytes:.1f}x")
assert round(llama_full.total_bytes / llama_lora.total_bytes, 1) == 3.9
assert round(llama_lora.frozen_weight_bytes / GB) == 27

def stacked(ax, columns, title, unit=GB):
    parts = [("frozen weights", "frozen_weight_bytes", "#9e9e9e"), ("trainable weights", "trainable_weight_bytes", "#1f77b4"),
             ("gradients", "gradient_bytes", "#ff7f0e"), ("optimizer state", "optimizer_state_bytes", "#2ca02c"),
             ("activations", "activation_bytes", "#d62728")]
    bottom = np.zeros(len(columns))
    for label, attr, color in parts:
        values = np.array([getattr(c, attr, 0) for c in columns.values()]) / unit
        if values.any():
            ax.bar(list(columns), values, bottom=bottom, label=label, color=color)
            bottom += values
    ax.set(title=title, ylabel="GB" if unit == GB else "MB")

fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
stacked(axes[0], {"full": gpt3_full, "LoRA q,v r=8": memory.estimate("gpt-3-175b", LoraConfig(r=8, target_modules=["q_proj", "v_proj"]))}, "GPT-3 175B")
stacked(axes[1], {"full": llama_full, "LoRA all r=16": llama_lora}, "Llama-2-7B")
axes[1].legend(fontsize=8)
plt.tight_layout()
plt.show()

# %% [markdown]
# The lesson's "approximately 3-4x" saving for a typical model is right: 3.9x for Llama-2-7B. The
# remaining 27 GB are the frozen weights.
#
# ## The frozen weights' dtype: sizing a GPU
#
# Nothing forces the frozen `W0` to be float32: it is only read. Stored in bfloat16 it takes 2 bytes a
# number; **QLoRA** (Dettmers et al., 2023, section 3) stores it in 4 bits, as "NormalFloat4" (NF4): 16 levels
# placed at the quantiles of a normal distribution, one scale (absmax) per block of 64 weights, and
# those scales themselves quantised to 8 bits ("double quantisation", about 0.127 bits a weight instead
# of 0.5). Only the linear layers are quantised; embeddings, norms and the LoRA matrices stay in 16 or
# 32 bits. In the forward and backward each 4-bit block is expanded to bfloat16 just before its
# matrix product. The adapter (`A`, `B`), its gradients and Adam's moments are counted as before.
#
# **Predict:** which of 16, 24, 48 and 80 GB hold Llama-2-7B's LoRA training state with a float32, a
# bfloat16 and an NF4 base?

# %%
preset7b = memory.get_preset("llama-2-7b")
layout = memory.parameter_layout(preset7b)
linear = sum(int(np.prod(p.shape)) for p in layout if p.name.endswith("_proj.weight"))
other = sum(int(np.prod(p.shape)) for p in layout) - linear
nf4_bits = 4 + 8 / 64 + 32 / (64 * 256)            # the 4-bit code, 8-bit block scales, fp32 scales of scales
adapter = llama_lora.trainable_params
training_state = adapter * (4 + 4 + 8)              # fp32 adapter weights, gradients, Adam m and v
frozen = {"float32": 4 * (linear + other), "bfloat16": 2 * (linear + other),
          "NF4 (QLoRA)": linear * nf4_bits / 8 + 2 * other}
print(f"Llama-2-7B: {linear:,d} numbers in linear layers, {other:,d} elsewhere; NF4 costs {nf4_bits:.3f} bits a weight")
print(f"{'frozen W0 in':<14}{'W0':>10}{'+ LoRA r=16 state':>19}{'total':>10}   fits (before activations)")
for name, b in frozen.items():
    total = b + training_state
    fits = ", ".join(f"{gb} GB" for gb in (16, 24, 48, 80) if total < gb * GB) or "none of 16-80 GB"
    print(f"{name:<14}{format_bytes(b):>10}{format_bytes(training_state):>19}{format_bytes(total):>10}   {fits}")
assert round(8 / 64 + 32 / (64 * 256), 3) == 0.127 and frozen["NF4 (QLoRA)"] < 4 * GB   # QLoRA's numbers

# %% [markdown]
# The 4-bit base is what lets a 7B model -- and, in the QLoRA paper, a 65B model on one 48 GB GPU --
# be fine-tuned on a single card. The costs: the base the adapter trains against is a *rounded* copy
# of the real model (QLoRA's experiments found 4-bit NF4 with LoRA on every linear layer matched
# 16-bit LoRA on their benchmarks, but it is an approximation, and merging the adapter into the
# unquantised weights gives a model the adapter was never trained with); every matrix product first
# expands its weights, so a step is slower; and activations, which do not shrink at all, are now the
# larger part of the bill.
#
# ## What a bfloat16 number keeps
#
# bfloat16 is float32 with the last 16 bits cut off: the same 8-bit exponent (the same range, up to
# about 3.4e38), but 8 significant bits instead of 24 -- about 2-3 decimal digits. float16 spends its
# 16 bits differently: 11 significant bits but a 5-bit exponent, so nothing above 65,504. Mixed-precision
# training keeps the big, frozen things (W0, activations) in bfloat16 and the small, *changing* things
# (the adapter, its gradients, Adam's moments) in float32 (`ml.finfo` below shows both formats). Three
# questions show why.
#
# **Predict first.** (a) What is `1 + 1/256` stored in bfloat16? (b) Add 1.0 to a bfloat16 running
# total 4,096 times: what is the total? (c) A weight of 1.0 takes an AdamW step of size `lr = 1e-3`:
# what is the weight afterwards, in bfloat16?

# %%
prediction = None   # three numbers: (a), (b), (c)

# %%
bf16 = ml.bfloat16
print("(a) 1 + 1/256 in bfloat16:", ml.tensor(1 + 1 / 256, dtype=bf16).item(),
      "  1 + 1/128:", ml.tensor(1 + 1 / 128, dtype=bf16).item())
total = np.zeros((), dtype=bf16)
for _ in range(4096):               # a running total that is itself bfloat16, rounded after every addition
    total = (total + np.ones((), dtype=bf16)).astype(bf16)
print("(b) a bfloat16 running total of 4,096 ones:", float(total),
      "  ml.ones(4096, dtype=bf16).sum():", ml.ones(4096, dtype=bf16).sum().item())
weight = ml.tensor(1.0, dtype=bf16)
print("(c) 1.0 - 1e-3 in bfloat16:", (weight - 1e-3).item(), "  in float32:", (weight.float() - 1e-3).item())
print("range: 70,000 in float16:", ml.tensor(70000.0, dtype=ml.float16).item(),
      "  in bfloat16:", ml.tensor(70000.0, dtype=bf16).item())
if prediction is not None:
    print(f"you predicted {prediction}")
for name, t in (("bfloat16", bf16), ("float16", ml.float16)):
    print(f"{name}: largest {ml.finfo(t).max:.4g}, spacing at 1.0 {ml.finfo(t).eps}")
assert ml.tensor(1 + 1 / 256, dtype=bf16).item() == 1.0 and float(total) == 256.0
assert ml.ones(4096, dtype=bf16).sum().item() == 4096.0 and (weight - 1e-3).item() == 1.0
assert ml.finfo(ml.float16).max == 65504 and ml.finfo(bf16).max > 3.3e38

# %% [markdown]
# (a) Between 1 and 2 bfloat16 has 128 steps of 1/128, so `1 + 1/256` lies exactly halfway and rounds
# to the even neighbour, 1.0. (b) The running total stops at 256: from there a step of 1 is half of
# bfloat16's spacing (2) and every addition rounds back down. That is why `sum()` -- in torch and in
# minilora -- adds 16-bit numbers in a float32 accumulator and rounds once at the end (4096 above), and
# why matrix products on tensor cores accumulate in float32. (c) A step of 1e-3 on a weight of 1.0 is
# below half the spacing (1/256 just below 1.0): the update vanishes and the weight never trains. So the
# trained weights -- LoRA's `A` and `B` -- and Adam's moments stay float32 (PEFT's
# `autocast_adapter_dtype=True` upcasts the adapters of a bfloat16 model for exactly this reason), while
# the frozen `W0` loses nothing by being bfloat16: it was never going to change.
#
# ## Measured: a real training step on the base model
#
# Counting is one thing; `memory.report(model, optimizer, batch)` measures. It looks at the real
# parameters (frozen or trainable), the optimizer's state, and -- by running one forward and backward
# -- the activations: every array the autograd graph keeps alive for backward, each buffer counted
# once (`graph_bytes`), plus the peak of all NumPy allocations during the step (`tracemalloc`).
#
# The batch is 8 sequences of 128 tokens of the base model's own corpus.
#
# **Predict:** which rows of the table will LoRA shrink, and which will it leave as they are?

# %%
from minilora import data
from minilora.lora import get_peft_model
from minilora.models import load_base
from minilora.optim import AdamW
from minilora.tokenizer import ByteTokenizer

tok = ByteTokenizer()
batch = data.corpus_loader(tok, 40, block_size=128, batch_size=8, seed=0).batch(0)

def trained_report(model):
    """One real AdamW step (so the optimizer state exists), then a measured forward + backward."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = AdamW(params, lr=1e-3)
    model(batch[0], labels=batch[1]).loss.backward()
    optimizer.step()
    optimizer.zero_grad()
    return memory.report(model, optimizer, batch)

# (from_pretrained returns a model in eval mode, as transformers: training code calls .train() first)
full_model = load_base().train()
lora_model = get_peft_model(load_base().train(), LoraConfig(r=8, lora_alpha=16, target_modules="all-linear"))
measured = {"full fine-tuning": trained_report(full_model), "LoRA r=8, all-linear": trained_report(lora_model)}
print(memory.comparison_table(measured))

# %% [markdown]
# Two things stand out.
#
# * **Weights, gradients and optimizer state behave exactly as counted**: LoRA trains 78,848 numbers
#   instead of 837,120 and keeps gradients and moments only for those. `memory.estimate` counts from
#   the config alone, without building the model.
#
# **Predict:** will the count from the config alone equal the measured one?

# %%
predicted = memory.estimate(memory.get_preset("base"), LoraConfig(r=8, target_modules="all-linear"))
print("estimate:", predicted.peft_line())
print("measured trainable params:", f"{measured['LoRA r=8, all-linear'].trainable_params:,d}")
assert predicted.trainable_params == measured["LoRA r=8, all-linear"].trainable_params == 78_848
assert measured["full fine-tuning"].trainable_params == 837_120

# %% [markdown]
# * **Activations dominate this small model, and LoRA does not shrink them.** The backward pass still
#   needs every layer's inputs -- to pass gradients down through the frozen weights and to compute
#   `dA` and `dB`. Activation memory grows with tokens per batch, layers and width; the weights' share
#   grows with parameters. At 7B parameters and short sequences the weights win, which is LoRA's case;
#   for long sequences the tool is activation (gradient) checkpointing, not LoRA.
#
# Which ops hold the activations, and how they grow with the batch.
#
# **Predict:** from 1 to 8 sequences, do the activations grow linearly, or faster?

# %%
for name, stats in (("full", measured["full fine-tuning"].activations), ("LoRA", measured["LoRA r=8, all-linear"].activations)):
    top = ", ".join(f"{op} {format_bytes(b)}" for op, b in list(stats.by_op.items())[:5])
    print(f"{name:<5} {top}")

sizes = [1, 2, 4, 8]
acts = {}
for label, model in (("full", full_model), ("LoRA", lora_model)):
    acts[label] = [memory.measure_activations(model, batch[0][:b], trace_peak=False).graph_bytes for b in sizes]

fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
stacked(axes[0], measured, "one training step, measured", unit=1e6)
axes[0].legend(fontsize=8)
tokens = [128 * b for b in sizes]
for label, values in acts.items():
    axes[1].plot(tokens, np.array(values) / 1e6, "o-", label=f"activations, {label}")
axes[1].axhline(measured["full fine-tuning"].total_bytes / 1e6 - measured["full fine-tuning"].activation_bytes / 1e6,
                color="grey", ls="--", label="full: weights + grads + Adam")
axes[1].set(xlabel="tokens per batch", ylabel="MB", title="activations grow with the batch")
axes[1].legend(fontsize=8)
plt.tight_layout()
plt.show()
for label in acts:   # LoRA does not shrink activations, and they grow with the batch: linearly
    growth = np.array(acts[label]) / acts[label][0]
    print(f"{label:<5} activations for {sizes} sequences, relative to 1: {', '.join(f'{g:.2f}' for g in growth)}")
    assert acts["LoRA"][-1] > 0.95 * acts["full"][-1] and np.allclose(growth, sizes, rtol=0.02)
lora_row = measured["LoRA r=8, all-linear"]
assert lora_row.activation_bytes > 0.9 * lora_row.total_bytes   # activations dominate this small model

# %% [markdown]
# ## Gradient checkpointing: activations for compute
#
# `model.gradient_checkpointing_enable()` (as in transformers) keeps only each decoder layer's
# *input* during the forward. When backward reaches a layer, it runs that layer's forward again --
# recording this time -- and backpropagates through the fresh graph, so only one layer's activations
# exist at a time. The code is `minilora/nn/checkpointing.py`; the gradients come out bit for bit the
# same (dropout masks are replayed from the saved random state).
#
# **Predict:** how much less does checkpointing keep for backward, and how much lower is the peak?

# %%
import time

kept = {}
ckpt_model = get_peft_model(load_base().train(), LoraConfig(r=8, lora_alpha=16, target_modules="all-linear"))
ckpt_model.gradient_checkpointing_enable()  # (active in training mode only, as transformers': hence .train())

def step_seconds(model, repeats=3):
    """The least CPU time (``time.process_time``: this process only, so less disturbed by whatever else
    the machine runs than a wall-clock time) of ``repeats`` forward + backward passes on the batch."""
    times = []
    for _ in range(repeats):
        start = time.process_time()
        model(batch[0], labels=batch[1]).loss.backward()
        times.append(time.process_time() - start)
        model.zero_grad()
    return min(times)

step_time = {}
for label, model in (("LoRA", lora_model), ("LoRA + checkpointing", ckpt_model)):
    stats = memory.measure_activations(model, batch)
    step_time[label] = step_seconds(model)
    print(f"{label:<21} kept for backward {stats.graph_bytes / 1e6:5.1f} MB, peak {stats.peak_bytes / 1e6:5.1f} MB, "
          f"forward + backward {1000 * step_time[label]:4.0f} ms of CPU time")
    kept[label] = stats
print(f"(CPU times measured in this run, on {ml.parallel.machine_description()})")
plain, ckpt = kept["LoRA"], kept["LoRA + checkpointing"]
print(f"kept: {plain.graph_bytes / ckpt.graph_bytes:.1f}x less, peak: {plain.peak_bytes / ckpt.peak_bytes:.1f}x lower")
# the peak: 2.7x lower on 2 minilora threads in round 32 (61.1 / 23.1 MB; 2.5x in round 26, 3.0x before round 25)
assert plain.graph_bytes > 8 * ckpt.graph_bytes and plain.peak_bytes > 2.2 * ckpt.peak_bytes

ckpt_model.load_state_dict(lora_model.state_dict())   # the same adapter weights in both models
grads = {}
for label, model in (("LoRA", lora_model), ("LoRA + checkpointing", ckpt_model)):
    model(batch[0], labels=batch[1]).loss.backward()
    grads[label] = {name: p.grad.numpy().copy() for name, p in model.named_parameters() if p.requires_grad}
    model.zero_grad()
same = all(np.array_equal(g, grads["LoRA + checkpointing"][name]) for name, g in grads["LoRA"].items())
print(f"the {len(grads['LoRA'])} adapter gradients, with and without checkpointing, bit for bit equal: {same}")
assert same

# %% [markdown]
# What is left after the forward is the layers' inputs and the output head's work; the peak is now
# one layer's activations plus those: about 10x less kept, and a peak 2-3x lower (both printed above; the
# peak depends on how many threads hold a block's arrays at once). The price is one more
# forward per layer in backward. How much arithmetic is that?
#
# **Predict first.** For full fine-tuning, backward costs about twice the forward (one product for
# `dX`, one for `dW`), so recomputing the forward adds about a third to a step. LoRA's frozen `W0` skips
# the `dW` product. Is checkpointing then *cheaper* for LoRA, the same, or a *bigger* share?

# %%
prediction = None   # "cheaper", "same" or "bigger"

# %%
def step_flops(model):
    """FLOPs of one forward + backward on the batch, by direction (recomputed forwards count as forward)."""
    with ml.profile() as prof:
        model(batch[0], labels=batch[1]).loss.backward()
    model.zero_grad()
    return prof.flops(direction="forward"), prof.flops(direction="backward")

full_ckpt = load_base().train()
full_ckpt.gradient_checkpointing_enable()
flops = {"full": step_flops(full_model), "full + checkpointing": step_flops(full_ckpt),
         "LoRA": step_flops(lora_model), "LoRA + checkpointing": step_flops(ckpt_model)}
print(f"{'':<22}{'forward GFLOP':>14}{'backward GFLOP':>16}{'backward/forward':>18}{'extra':>8}")
for name, (fwd, bwd) in flops.items():
    plain = flops[name.split(" +")[0]]
    extra = (fwd + bwd) / sum(plain) - 1
    print(f"{name:<22}{fwd / 1e9:>14.2f}{bwd / 1e9:>16.2f}{bwd / fwd:>18.2f}{extra:>8.0%}")
if prediction is not None:
    print(f"you predicted: {prediction}")
extra = {name: (fwd + bwd) / sum(flops[name.split(" +")[0]]) - 1 for name, (fwd, bwd) in flops.items()}
assert abs(flops["full"][1] / flops["full"][0] - 2) < 0.05 and 0.28 < extra["full + checkpointing"] < 0.36
assert flops["LoRA"][1] / flops["LoRA"][0] < 1.25 and 0.4 < extra["LoRA + checkpointing"] < 0.5
print(f"LoRA + checkpointing: {extra['LoRA + checkpointing']:+.0%} FLOPs; the step's measured CPU time (above): "
      f"{step_time['LoRA + checkpointing'] / step_time['LoRA'] - 1:+.0%}")

# %% [markdown]
# For full fine-tuning backward is about twice the forward, so one recomputed forward adds about a
# third. For LoRA the backward is about *one* forward (`dX` only, plus the small rank-r products), so
# the same recomputation adds nearly half: the cheaper the backward, the larger the share of the
# recompute. (The profiler counts only what ops report; the output head and loss are not recomputed.)
# The measured time (the last line) is another matter: on a model this small it also holds every
# op's fixed Python cost, which the recomputed forward pays again, and it varies from run to run and
# from machine to machine; the FLOP counts do not. With long sequences checkpointing, not LoRA, is
# what makes training fit.
#
# ## Summary
#
# * Training a float32 weight with AdamW costs 16 bytes; a frozen one costs 4. LoRA moves almost every
#   weight from the first kind to the second, so the saving approaches 4x and the frozen weights are
#   the floor.
# * GPT-3 with LoRA on `W_q`, `W_v` trains 4,718,592 x r parameters: 4.7M at r = 1, 37.7M at r = 8
#   (not the lesson's "526M", and 0.02%, not "0.3%"). Full fine-tuning needs 2.8 TB, i.e. 16 GB per billion parameters.
# * Llama-2-7B: q, v at r = 8 trains 4,194,304; q, k, v, o at r = 16, 16,777,216; all seven at r = 16,
#   39,976,960 parameters -- PEFT's own numbers.
# * A frozen `W0` can be stored in bfloat16 or, as in QLoRA, in 4-bit NF4 (about 0.52 bytes a weight):
#   Llama-2-7B's base goes from 27 GB to under 4 GB. What is trained stays float32: bfloat16's 8
#   significant bits would round small updates away, and sums of 16-bit numbers accumulate in float32.
# * Activations are a separate budget that LoRA does not reduce; gradient checkpointing does, by
#   recomputing each layer's activations in backward -- a larger share of the arithmetic for LoRA,
#   whose backward is already cheap.
#
# ## Questions and small tasks
#
# 1. With `memory.estimate`, find the largest Llama-2 preset whose LoRA r = 16 training state plus an
#    NF4 base fits in 24 GB. What is left for activations?
# 2. `memory.measure_activations` for batch sizes 1..8 at 128 tokens grew linearly. Predict the
#    activations of 8 sequences of 512 tokens, then measure (attention's scores grow with the square).
# 3. Why does checkpointing save nothing if you checkpoint *every op* instead of every layer?
#
# ## What's next
#
# * Notebook 4 opens the LoRA layer itself.
# * Beyond one GPU: FSDP and DeepSpeed ZeRO shard weights, gradients and optimizer state across GPUs
#   (ZeRO-3 also the frozen weights); minilora's `DistributedDataParallel` replicates the model and
#   all-reduces only the adapters' gradients.
# * bitsandbytes implements NF4 and paged optimizers; PEFT's `prepare_model_for_kbit_training` sets up
#   QLoRA.
