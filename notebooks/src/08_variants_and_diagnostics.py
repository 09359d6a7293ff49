# %% [markdown]
# # 8. Variants and diagnostics
#
# Two questions close the series.
#
# **Can the adapter be cheaper or better?** Two well-known variants, both in PEFT and in minilora:
# DoRA splits each weight row into a length and a direction and trains the length separately; VeRA
# shares one pair of *random, frozen* matrices across all layers and trains only two small vectors per
# layer.
#
# **What did the adapter learn, and did training go well?** The singular values of a learned update
# `s B A` say how many directions it really uses -- computed without ever building `B A`. Cutting the
# adapter down to the directions that hold most of that energy, and measuring the task again, says how
# much rank the task needed. And a loss history plus the adapter's weights tell a lot about a run
# that went wrong.
#
# **Read beside it:** `minilora/lora/layers.py` (`Linear._dora_forward`, `merge_math`, `VeraLinear`),
# `minilora/lora/config.py` (`VeraConfig`), `minilora/lora/diagnostics.py` (spectra, truncation,
# ablation, diagnosis). **Exercises 8.1-8.3**: the VeRA cells need 8.1, the spectra 8.2 and 8.3.
#
# **In a student copy** (`minilora exercises build DIR`, solutions replaced by stubs) this notebook runs
# until the first cell that calls an exercise not yet solved -- this chapter's or an earlier one's --
# and stops there with `NotImplementedError: Exercise N.M: <what to do>`. Solve it, check it with
# `minilora exercises check --only N.M`, restart the kernel and run again.

# %%
import matplotlib.pyplot as plt
import numpy as np

import minilora as ml
from minilora import data, memory
from minilora.lora import LoraConfig, VeraConfig, get_peft_model
from minilora.lora import diagnostics as diag
from minilora.models import load_base
from minilora.tokenizer import ByteTokenizer
from minilora.train import train

ml.manual_seed(0)
tok = ByteTokenizer()
qa = data.get_task("qa")
train_loader = data.task_loader(tok, qa, "train", batch_size=16, seed=0)
eval_loader = data.task_loader(tok, qa, "eval", batch_size=24, shuffle=False)
STEPS = 30  # short runs keep this notebook quick; notebook 6 trains longer


def finetune(config, lr, steps=STEPS):
    model = get_peft_model(load_base(), config)
    run = train(model, train_loader, eval_loader, steps=steps, lr=lr, warmup_steps=3, eval_every=10,
                progress=False)
    return model, run

# %% [markdown]
# ## DoRA: magnitude and direction
#
# Write each output row `i` of a weight as a length times a unit vector: `W[i] = m_i * V[i] / ||V[i]||`.
# DoRA (Liu et al., 2024) keeps the direction `V = W0 + s B A` low-rank-adapted, as in LoRA, and adds
# a trainable magnitude `m` (one number per row, initialised to the row norms of `W0`):
#
# ```
# W' = m * (W0 + s B A) / ||W0 + s B A||_row
# ```
#
# At initialisation `B = 0`, so `W' = m * W0 / ||W0|| = W0`: like LoRA, DoRA starts exactly at the
# base. In backward, the row norm is treated as a constant (the paper's section 4.3, and PEFT's code):
# gradients reach `m` directly and `A`, `B` through the direction, without differentiating the norm.
#
# The lesson this project follows sketches DoRA differently: it adds the LoRA branch's *output*
# `s x A^T B^T`, with its gradient detached, to the normalised `W0 / ||W0||_row`, normalises that sum
# and scales it by `m`. The cell below takes one adapted layer after a few training steps and checks
# its merged weight against the formula above, then asks both versions for the gradients of `m`, `A`
# and `B` -- the lesson's sketch run as written.
#
# **Predict:** which of `m`, `A`, `B` get a gradient in DoRA, and which in the lesson's sketch?

# %%
dora, dora_run = finetune(LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", use_dora=True), lr=3e-3)
layer = dora.base_model.model.model.layers[1].self_attn.v_proj
W0 = layer.base_layer.weight.numpy().astype(np.float64)
A, B = (layer.lora_A["default"].weight.numpy(), layer.lora_B["default"].weight.numpy())
m, s = layer.lora_magnitude_vector["default"].weight.numpy(), layer.scaling["default"]
V = W0 + s * B @ A
expected = m[:, None] * V / np.linalg.norm(V, axis=1, keepdims=True)
layer.merge()
merged_difference = np.abs(layer.base_layer.weight.numpy() - expected).max()
print(f"merged DoRA weight vs m * V / ||V||: max difference {merged_difference:.1e}")
assert merged_difference < 1e-5
layer.unmerge()

x = ml.randn(2, 5, 128)
layer(x).sum().backward()
for name, p in (("m", layer.lora_magnitude_vector["default"].weight), ("A", layer.lora_A["default"].weight),
                ("B", layer.lora_B["default"].weight)):
    print(f"DoRA: |grad {name}| = {np.abs(p.grad).max():.3g}")
    assert np.abs(p.grad).max() > 0
dora.zero_grad()

# the lesson's sketch, as written, on one input row (its update x A^T B^T is [rows, out]: few row counts fit)
m_col = ml.tensor(m[:, None], requires_grad=True)                      # its magnitude, [out, 1]
A_l, B_l = ml.tensor(A, requires_grad=True), ml.tensor(B, requires_grad=True)
W0_t = ml.tensor(W0.astype(np.float32))
x1 = ml.tensor(np.random.default_rng(1).standard_normal((1, 128)), dtype=ml.float32)   # (the global generator untouched)
lora_update = (x1 @ A_l.T @ B_l.T) * s                                 # an activation, not a weight
updated_weight = W0_t / W0_t.norm(p=2, dim=1, keepdim=True) + lora_update.T.detach()
direction = updated_weight / updated_weight.norm(p=2, dim=1, keepdim=True)
sketch_out = m_col * (x1 @ direction.T)
sketch_out.sum().backward()
got = {name: t.grad is not None for name, t in (("m", m_col), ("A", A_l), ("B", B_l))}
print(f"the lesson's sketch: a gradient for m {got['m']}, A {got['A']}, B {got['B']}; "
      f"its output for one input row has shape {tuple(sketch_out.shape)}")
assert got == {"m": True, "A": False, "B": False} and tuple(sketch_out.shape) == (128, 128)

# %% [markdown]
# **The lesson's DoRA sketch is not DoRA.** It adds its update to `W0 / ||W0||` instead of to `W0`, which
# weighs the update against `W0` wrongly by each row's norm of `W0`; it adds a *detached* update, so `A`
# and `B` receive no gradient at all and only `m` trains; and the update it adds is an activation
# `x A^T B^T` (shape batch x out) where a weight (out x in) belongs, so its shapes fit only one input
# row or as many rows as `W0` has columns -- and for one row its output is `out x out`, not `1 x out`.
# The direction to normalise is `W0 + s B A`, and what is detached is only its norm.
#
# ## VeRA: random frozen matrices, trained scales
#
# VeRA (Kopiczko et al., 2024) goes further: one pair of random matrices `A` (`r x in`) and `B`
# (`out x r`) is drawn once, frozen, and *shared by every adapted layer*; each layer trains only two
# vectors that scale it, `lambda_d` (length `r`) and `lambda_b` (length `out`):
#
# ```
# delta W = diag(lambda_b) B diag(lambda_d) A          (exercise 8.1)
# ```
#
# `lambda_b` starts at zero, so VeRA too starts at the base. Its rank can be large (here 64), since the
# matrices cost nothing to train.
#
# **Predict:** how many numbers does VeRA r = 64 train on this model, against LoRA r = 16?

# %%
vera, vera_run = finetune(VeraConfig(r=64, target_modules="all-linear"), lr=3e-2)
lora, lora_run = finetune(LoraConfig(r=16, lora_alpha=32, target_modules="all-linear"), lr=3e-3)
for name, model in (("LoRA r=16", lora), ("DoRA r=16", dora), ("VeRA r=64", vera)):
    print(f"{name:<10}", end=" ")
    model.print_trainable_parameters()

# %% [markdown]
# At Llama-2-7B's size, with exact counts from `memory.estimate` (the lesson's "0.01% for VeRA vs
# 0.1-0.5% for LoRA" is the right order of magnitude: checked below).
#
# **Predict:** what share of Llama-2-7B does VeRA r = 256 on all linear layers train?

# %%
for label, config in (("LoRA q,v r=8", LoraConfig(r=8, target_modules=["q_proj", "v_proj"])),
                      ("DoRA q,v r=8", LoraConfig(r=8, target_modules=["q_proj", "v_proj"], use_dora=True)),
                      ("LoRA all-linear r=16", LoraConfig(r=16, target_modules="all-linear")),
                      ("VeRA q,v r=256", VeraConfig(r=256, target_modules=["q_proj", "v_proj"])),
                      ("VeRA all-linear r=256", VeraConfig(r=256, target_modules="all-linear"))):
    e = memory.estimate('llama-2-7b', config)
    print(f"{label:<22} {e.peft_line()}")
    if label.startswith("VeRA"):
        assert 0.003 < e.trainable_percent < 0.03
    elif label.startswith("LoRA"):
        assert 0.05 < e.trainable_percent < 0.6

# %% [markdown]
# The three on the same task, the same steps and the same schedule (VeRA with a 10x larger learning
# rate: its scales start small, and its paper too trains it at rates about ten times LoRA's).
#
# **Predict:** which of the three ends with the lowest evaluation loss, and which the highest?

# %%
fig, ax = plt.subplots(figsize=(6.5, 3.6))
for name, run, color in (("LoRA r=16", lora_run, "C0"), ("DoRA r=16", dora_run, "C1"), ("VeRA r=64", vera_run, "C2")):
    ax.semilogy(range(1, STEPS + 1), run.losses, color=color, lw=1, alpha=0.6)
    ax.semilogy(*zip(*[(e["step"], e["eval_loss"]) for e in run.evals]), "o-", color=color, label=f"{name} (eval)")
ax.set(xlabel="step", ylabel="loss (lines: train)", title="qa: three adapters")
ax.legend()
plt.show()
final_eval = {name: run.evals[-1]["eval_loss"] for name, run in (("LoRA", lora_run), ("DoRA", dora_run), ("VeRA", vera_run))}
print("final eval loss:", ", ".join(f"{k} {v:.3f}" for k, v in final_eval.items()))
assert final_eval["VeRA"] > 3 * max(final_eval["LoRA"], final_eval["DoRA"])   # VeRA learns far more slowly
assert abs(final_eval["DoRA"] - final_eval["LoRA"]) < 0.5 * final_eval["LoRA"]   # DoRA follows LoRA

# %% [markdown]
# DoRA follows LoRA closely here -- its benefit, where there is one, is a few points of accuracy on
# harder tasks, not speed. VeRA, with a few thousand trained numbers, learns the task much more slowly:
# the price of fixing the directions at random.
#
# ## LoRA+: a larger learning rate for `B`
#
# LoRA+ (Hayou et al., 2024) argues that `A` and `B` should not share a learning rate: `B` starts at
# zero and, in wide layers, needs much larger steps than `A` for the update to grow efficiently. It
# trains `B` at `loraplus_lr_ratio` times the rate of `A` (16 in the paper's recommendation).
# `create_loraplus_optimizer` builds PEFT's parameter groups for any optimizer class. A plain loop
# over 20 steps, three ways:
#
# **Predict first.** At a base rate of 3e-4, ten times below this notebook's, will LoRA+ (ratio 16)
# end closer to plain LoRA at 3e-4 or at 3e-3?

# %%
from minilora.lora import create_loraplus_optimizer
from minilora.optim import AdamW

def plain_loop(lr, ratio=None, steps=20):
    ml.manual_seed(0)
    model = get_peft_model(load_base(), LoraConfig(r=16, lora_alpha=32, target_modules="all-linear"))
    if ratio is None:
        optimizer = AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
    else:
        optimizer = create_loraplus_optimizer(model, AdamW, lr=lr, loraplus_lr_ratio=ratio)
    losses = []
    for step in range(steps):
        ids, labels = train_loader.batch(step)
        loss = model(ids, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    return losses, data.mean_loss(model, eval_loader)

plus_runs = {"LoRA, lr 3e-4": plain_loop(3e-4), "LoRA+, lr 3e-4 (B: x16)": plain_loop(3e-4, ratio=16),
             "LoRA, lr 3e-3": plain_loop(3e-3)}
fig, ax = plt.subplots(figsize=(6.5, 3.2))
for name, (losses, eval_loss) in plus_runs.items():
    print(f"{name:<24} train loss after 20 steps {losses[-1]:.3f}, eval loss {eval_loss:.3f}")
    ax.semilogy(range(1, len(losses) + 1), losses, label=name)
ax.set(xlabel="step", ylabel="train loss", title="LoRA+ against plain LoRA (no warmup, no schedule)")
ax.legend(fontsize=8)
plt.show()
slow, plus, fast = (eval_loss for _, eval_loss in plus_runs.values())
assert plus < slow / 5 and plus < 2 * fast   # LoRA+ at 3e-4 lands near plain LoRA at 3e-3

# %% [markdown]
# A larger rate for `B` alone recovers what a ten times larger rate for everything gives here:
# at a cautious base rate, LoRA+ learns much faster. It does not replace tuning the rate -- a
# well-chosen plain rate is as good here (whether ratio 16 on top of 3e-3 still helps on this small
# model is worth a try) -- but it makes a too-small rate much less costly.
#
# ## What the adapter learned: singular values of `s B A`
#
# Each LoRA layer's update has rank at most `r` = 16. How many of those directions does it use? The
# singular values answer, and `diagnostics.delta_svd` computes them without building the `out x in`
# matrix: with QR factorisations `B = Qb Rb` and `A^T = Qa Ra`, `s B A = Qb (s Rb Ra^T) Qa^T`, so the
# singular values are those of the `r x r` core (exercise 8.2). Two summaries per layer: the *entropy
# effective rank* `exp(-sum p_i log p_i)` with `p_i = S_i / sum S` (exercise 8.3), and the number of
# directions holding 90% of the squared norm ("energy").
#
# **Predict:** of r = 16, how many directions will hold 90% of a layer's update energy?

# %%
spectra = diag.adapter_spectrum(lora, energy=0.9)
print(diag.spectrum_table(spectra[:7]))
print(f"\nall {len(spectra)} layers: mean effective rank {np.mean([sp.effective_rank for sp in spectra]):.1f}, "
      f"mean 90%-energy rank {np.mean([sp.energy_rank for sp in spectra]):.1f} (of r = 16)")

# %% [markdown]
# Is the update low-rank only because LoRA forced it to be? Compare with **full fine-tuning**: train
# every weight for the same steps and take the SVD of what changed, `W_after - W_before`, in the same
# layers. And, for scale, a random matrix of the same size -- which is what the lesson's "rank ablation
# study" uses as its stand-in for a fine-tuning update: `torch.randn(4096, 4096) * 0.01`. A random
# Gaussian matrix is the *opposite* of low-rank -- its energy is spread over all directions -- so that
# experiment cannot show what it sets out to show.
#
# **Predict first.** Full fine-tuning may use all 128 directions of a 128 x 128 matrix. How many will
# hold 90% of its update's energy: about 5, about 30, or about 100?

# %%
prediction = None   # your guess for q_proj, a number of directions out of 128

# %%
full = load_base()
before = {n: p.numpy().copy() for n, p in full.named_parameters()}
train(full, train_loader, steps=20, lr=1e-3, warmup_steps=3, progress=False)

def energy_curve(S):
    return np.cumsum(S ** 2) / np.sum(S ** 2)

fig, ax = plt.subplots(figsize=(6.5, 3.8))
print("directions holding 90% of the update's energy:")
for i, name in enumerate(("model.layers.1.self_attn.q_proj.weight", "model.layers.1.mlp.down_proj.weight")):
    S = np.linalg.svd(full.state_dict()[name].numpy() - before[name], compute_uv=False)
    ax.plot(np.arange(1, len(S) + 1), energy_curve(S), color=f"C{i}",
            label=f"full fine-tuning: {name.split('.')[-2]} (eff. rank {diag.effective_rank(S):.0f})")
    lora_S = next(sp for sp in spectra if sp.name == name.removesuffix(".weight")).singular_values
    ax.plot(np.arange(1, len(lora_S) + 1), energy_curve(lora_S), "--", color=f"C{i}",
            label=f"LoRA r=16: {name.split('.')[-2]} (eff. rank {diag.effective_rank(lora_S):.0f})")
    print(f"  {name.split('.')[-2]:<10} full fine-tuning {diag.energy_rank(S):>3} of {len(S)},"
          f" LoRA {diag.energy_rank(lora_S):>2} of 16")
    if i == 0 and prediction is not None:
        print(f"  (you predicted {prediction} for q_proj)")
    print(f"  {'':<10} its top direction holds {energy_curve(S)[0]:.0%} of the energy")
    assert energy_curve(S)[0] > 0.2 and diag.energy_rank(S) < 128 / 3 and diag.energy_rank(lora_S) < diag.energy_rank(S)
S_random = np.linalg.svd(np.random.default_rng(42).standard_normal((128, 128)) * 0.01, compute_uv=False)
print(f"  a random 128 x 128 matrix: {diag.energy_rank(S_random)} of 128")
assert diag.energy_rank(S_random) > 128 / 2
ax.plot(np.arange(1, 129), energy_curve(S_random), "k:", label="random 128 x 128 matrix")
ax.axhline(0.9, color="grey", lw=0.8)
ax.set(xscale="log", xlabel="number of directions k", ylabel="share of ||delta W||^2 in the top k",
       title="how many directions the update uses")
ax.legend(fontsize=7)
plt.show()

# %% [markdown]
# The full fine-tuning update, free to use all 128 directions, concentrates its energy: its top
# direction alone holds a fifth or more of it, and a small fraction of the directions hold 90%, where
# the random matrix needs more than half of them. It is not as low-rank as the LoRA update (which was limited to
# 16 directions and uses fewer), but it is far from random: the structure LoRA is built on.
#
# **What the papers showed, and what they did not.** The LoRA paper (Hu et al., 2021, section 7) never
# takes the SVD of a full fine-tuning update. It studies LoRA's own updates on GPT-3: the top
# directions learned at r = 8 and r = 64 (and with two seeds) overlap strongly while the rest look like
# noise, and `delta W` amplifies directions of `W` that `W` itself does not emphasise. The idea that
# fine-tuning has a low *intrinsic* dimension comes from earlier work that measured something else:
# Li et al. (2018, "Measuring the Intrinsic Dimension of Objective Landscapes") train networks inside
# a random low-dimensional subspace of their parameters and find how small the subspace can be while
# still reaching 90% of full performance; Aghajanyan et al. (2020, "Intrinsic Dimensionality Explains
# the Effectiveness of Language Model Fine-Tuning") do the same for fine-tuning pretrained language
# models and find that a few hundred to a few thousand parameters suffice (e.g. about 200 for RoBERTa
# on MRPC), falling as pre-training improves. The experiment above -- the spectrum of a real full
# fine-tuning update -- is ours, on one small model and 20 steps.
#
# The lesson's random-matrix simulation, at a size we can afford here, gives the following.
#
# **Predict:** what share of a random matrix's energy do its top 8 of 1024 directions hold?

# %%
S = np.linalg.svd(np.random.default_rng(42).standard_normal((1024, 1024)) * 0.01, compute_uv=False)
curve = energy_curve(S)
print("a random 1024 x 1024 matrix (the lesson uses 4096; the picture is the same):")
for r in (1, 8, 64, 128):
    print(f"  top {r:>3} directions hold {curve[r - 1]:.1%} of the energy")

# %% [markdown]
# ## Rank ablation by SVD energy
#
# If a layer's update keeps 90% of its energy in 5 directions, do we need the other 11? Replace each
# update by its best rank-`k` approximation -- `k` chosen per layer as the number of directions holding a
# given share of the energy -- and measure the task again. `diagnostics.rank_ablation` does that for a
# list of energy levels (or of fixed ranks) and restores the adapter afterwards; `truncate_adapter`
# does it for good. Rank 0 -- no adapter at all -- is the baseline.
#
# **Predict:** keeping only the single strongest direction of each update, what `qa` accuracy is left?

# %%
def accuracy(model):
    return data.evaluate(model, tok, qa, n=40).accuracy

rows = diag.rank_ablation(lora, accuracy, ranks=(0,)) + \
    diag.rank_ablation(lora, accuracy, energies=(0.3, 0.5, 0.8, 0.9, 1.0))
labels = ["rank 0"] + [f"{r['level']:.0%} energy" for r in rows[1:]]
print(f"{'kept':>12}{'mean rank':>11}{'LoRA params':>13}{'qa accuracy':>13}")
for label, row in zip(labels, rows):
    print(f"{label:>12}{row['mean_rank']:>11.1f}{row['lora_params']:>13,d}{row['metric']:>13.0%}")
assert rows[0]["metric"] == 0 and rows[1]["mean_rank"] == 1.0 and rows[1]["metric"] >= 0.8 * rows[-1]["metric"]

fig, ax = plt.subplots(figsize=(7, 3.2))
ax.bar([f"{label}\n(rank {r['mean_rank']:.1f})" for label, r in zip(labels, rows)], [r["metric"] for r in rows])
ax.set(ylabel="qa accuracy (40 questions)", title="truncating the trained r=16 adapter", ylim=(0, 1.05))
ax.tick_params(axis="x", labelsize=8)
plt.show()

# %% [markdown]
# Almost all of the accuracy survives with a handful of directions per layer -- here even the single
# strongest direction of each update does most of the job. This task, a new answer format over known
# facts, needs far fewer than 16. It is a cheap experiment to run after any fine-tune, and a good guide
# to choosing `r` for the next one. (With 40 questions, differences of a few points are noise.)
#
# ## Diagnosing a training run
#
# `diagnostics.diagnose_lora_training(model, train_losses, eval_losses)` is the lesson's
# `diagnose_lora_training`, working: the lesson's version uses `np` without importing it, reads
# `module.lora_A.weight`, which exists neither on its own LoRA layer (where `lora_A` is the tensor itself)
# nor on PEFT's (where `lora_A` is a dict of layers, one per adapter), and flags "spikes" with a
# mean + 3 std rule over the whole run, which a smooth but steeply falling curve trips on its own first
# steps (the cell below applies that rule to a clean exponential decay). minilora's checks each state their thresholds (see the docstring of `diagnose_training`). A healthy run says so.
#
# Its "not decreasing" advice quotes the usual LoRA learning rates, 1e-4..5e-4, while every notebook
# here trains at 3e-3. Both are right for their models: those rates are for 7B-scale models, whose
# wide layers sum many more terms per output, so each step moves the outputs more; this 128-wide
# model tolerates larger steps and learns in fewer of them (notebook 6 compares 1e-3, 3e-3 and 1e-2
# on it). A rate is tuned per model, never copied.
#
# **Predict:** what will the diagnosis of the healthy run above say?

# %%
evals = [(e["step"], e["eval_loss"]) for e in lora_run.evals]
for finding in diag.diagnose_lora_training(lora, lora_run.losses, evals):
    print(finding)
falling = 3.0 * 0.8 ** np.arange(60)   # a loss that only ever falls: 3.0, 2.4, 1.92, ...
flagged = np.flatnonzero(falling > falling.mean() + 3 * falling.std())
print(f"the lesson's spike rule (loss > mean + 3 std) on a smooth decay 3.0 * 0.8^step: 'spikes' at steps {flagged.tolist()}")
assert len(flagged) > 0

# %% [markdown]
# Now runs that went wrong. First a real classic: the adapter never changed, because the optimizer
# was given the wrong parameters (or a learning rate of 0, or the adapter was loaded for inference).
# Its `B` matrices are still exactly zero, which is impossible after any real update.
#
# **Predict:** which check fires?

# %%
untrained = get_peft_model(load_base(), LoraConfig(r=16, target_modules="all-linear"))
for finding in diag.diagnose_adapter(untrained):
    print(finding)

# %% [markdown]
# Then runs that really fail. A training step of this model is short (the healthy run's time per step
# is printed below), so each of these is run live: 16 steps of the same LoRA fine-tune, broken in one
# way each.
#
# * **lr 0.3** -- a hundred times the working rate;
# * **all labels -100** -- a data bug: every position masked, nothing to learn;
# * **lr 0** -- the optimizer runs and changes nothing.
#
# **Predict first.** For each, what will the loss curve look like, and which check should fire?

# %%
BROKEN_STEPS = 16

def broken_run(lr=3e-3, loader=train_loader):
    """A short run of LoRA r=16 on qa; returns (model, losses, error or None)."""
    ml.manual_seed(0)
    model = get_peft_model(load_base(), LoraConfig(r=16, lora_alpha=32, target_modules="all-linear"))
    try:
        run = train(model, loader, steps=BROKEN_STEPS, lr=lr, warmup_steps=3, progress=False, plot=False)
        return model, run.losses, None
    except FloatingPointError as err:        # train() stops on a NaN/inf loss, before saving anything
        return model, err.result.losses, err
    except ValueError as err:                # ... and refuses data with nothing to learn before step 1
        return model, [], err

masked_items = [(ids, [-100] * len(labels)) for ids, labels in
                (data.encode_example(tok, ex) for ex in qa.train)]
masked_loader = data.DataLoader(masked_items, 16, 0, tok.pad_token_id)
print(f"the healthy run above: {lora_run.seconds_per_step:.2f} s a step on {ml.parallel.machine_description()}")
failures = {"lr 0.3": broken_run(lr=0.3), "all labels -100": broken_run(loader=masked_loader),
            "lr 0": broken_run(lr=0.0)}
for name, (model, losses, error) in failures.items():
    shown = f"first {losses[0]:.2f}, highest {max(losses):.2f}, last {losses[-1]:.2f}" if losses else "none"
    print(f"\n== {name}: {len(losses)} losses recorded: {shown}")
    if error is not None:
        print(f"   train() raised {type(error).__name__}: {str(error).split('. ')[0]}")
        if isinstance(error, ValueError):
            print(f"   target tokens in the first batch: {int((masked_loader.batch(0)[1] != -100).sum())}")
        continue
    for finding in diag.diagnose_lora_training(model, losses):
        print("  ", finding)

# the claims of the next cell, checked
from minilora.train import BLOW_UP_FACTOR, BLOW_UP_NATS, TrainingDivergedError

_, big, big_error = failures["lr 0.3"]
assert isinstance(big_error, TrainingDivergedError) and big_error.step == len(big) + 1   # stopped, step named
assert max(big) > 2 * big[0] and (BLOW_UP_FACTOR, BLOW_UP_NATS) == (2.0, 5.0)           # climbing, not NaN
assert lora_run.losses[0] > 100 * lora_run.losses[-1]                   # the healthy run, for comparison
assert isinstance(failures["all labels -100"][2], ValueError) and not failures["all labels -100"][1]
assert {"not_decreasing", "adapter_not_trained"} <= {f.kind for f in diag.diagnose_lora_training(*failures["lr 0"][:2])}

fig, ax = plt.subplots(figsize=(6.5, 3.4))
ax.semilogy(range(1, STEPS + 1), lora_run.losses, "k", label="healthy (lr 3e-3)")
for name, (_, losses, error) in failures.items():
    if losses:
        ax.semilogy(range(1, len(losses) + 1), losses, label=name)
ax.set(xlabel="step", ylabel="train loss", title="three broken runs and a healthy one")
ax.legend(fontsize=8)
plt.show()

# %% [markdown]
# What each one teaches:
#
# * **lr 0.3**: the loss more than doubles within a few steps and keeps climbing: gradient clipping
#   (`clip_norm=1.0`) and warmup keep it finite, but they do not make the rate good. `train` watches for
#   that too: once a loss is more than twice the run's first one *and* more than 5 nats above it, it
#   stops with `TrainingDivergedError`, naming the step, before that step's update is applied or
#   anything saved (the error's `result.losses` keeps the curve so far, which is what the plot shows).
#   The healthy run, meanwhile, falls by two orders of magnitude. A run that spikes and comes back
#   down below that line is not stopped; then it is `diagnose_lora_training`'s spike check that fires
#   -- and read its "no problem found" line, if it appears, with care: it compares the first quarter of
#   the run (which the spikes inflated) with the last. A diagnosis is a summary; look at the curve too.
# * **all labels -100**: the loss would be `0 / 0` -- no target token in the batch -- so NaN at the
#   very first step. `train` counts target tokens per example before it starts and refuses, naming
#   the first example with none: no step is taken, no loss is recorded. Counting target tokens finds
#   the bug, and is cheap enough to do before every run.
# * **lr 0**: the loss wanders around its first value and every `B` is still exactly zero; both the
#   loss check and the adapter check fire, and the adapter check names the cause.
#
# ## Summary
#
# * DoRA: `W' = m (W0 + s B A) / ||W0 + s B A||_row`, norm constant in backward; the lesson's sketch
#   normalises the wrong thing and stops the gradient of `A` and `B`.
# * VeRA trains two vectors per layer around shared random frozen matrices: a few thousand numbers here,
#   0.004-0.02% of Llama-2-7B, and slower learning.
# * The singular values of `s B A` come from an `r x r` core; learned updates concentrate their energy in
#   a few directions -- and so do full fine-tuning updates, unlike the random matrix of the lesson.
#   The low-intrinsic-dimension idea is Li et al. (2018) and Aghajanyan et al. (2020); the LoRA paper
#   compared LoRA's own subspaces.
# * Truncating by energy and re-measuring shows how much rank a task needs.
# * `diagnose_lora_training` turns loss histories and adapter weights into findings with suggestions;
#   real failures (a huge learning rate, masked labels, lr 0) each leave a recognisable trace.
#
# ## Questions and small tasks
#
# 1. Rerun the lr 0.3 failure with `clip_norm=None` passed to `train`. What changes, and why does
#    clipping not make a bad learning rate good? Then try `broken_run(lr=0.1)`: is it stopped, and if
#    not, what does `diagnose_lora_training` say about its curve?
# 2. Mask all labels but one per example (keep the end-of-sequence token). Does the run learn anything
#    useful? What does `qa` accuracy say?
# 3. Truncate the r = 16 adapter to the 90%-energy rank with `diagnostics.truncate_adapter`, then train
#    a fresh adapter at that rank from scratch. Which is better, and why might they differ?
#
# ## What's next
#
# * Notebook 10: AdaLoRA (Zhang et al., 2023) allocates rank per layer during training from an SVD-like
#   parametrisation -- the automated version of the ablation above -- and trained adapters composed
#   into one with `add_weighted_adapter`.
# * LoRA+ (`minilora.lora.create_loraplus_optimizer`, as PEFT's) gives `B` a larger learning rate than
#   `A`; QLoRA trains against a 4-bit base (notebook 3 sizes it).
# * Back to notebook 1 with new eyes: every number in these notebooks came from one NumPy autograd
#   engine and a handful of ops.
