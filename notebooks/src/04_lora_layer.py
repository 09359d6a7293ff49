# %% [markdown]
# # 4. The LoRA layer
#
# Notebook 3 showed that the memory of fine-tuning lives in the gradients and optimizer state of the
# trained weights. LoRA's answer: do not train `W0` at all. Keep it frozen and learn the *change*
# `delta W` instead, restricted to a product of two thin matrices:
#
# ```
# h = W0 x + s * B A x          A: r x in,  B: out x r,  s = lora_alpha / r
# ```
#
# This notebook takes that formula apart: how the layer computes it without ever building `B A`, why
# `B` starts at zero, what the rank `r` can and cannot learn, what the scale `s` does (and why rsLoRA
# changes it), and how many parameters it all costs.
#
# **Read beside it:** `minilora/lora/layers.py` (`Linear`: the adapter dicts, `update_layer`,
# `forward`), `minilora/lora/config.py` (`LoraConfig`, `scaling`), `minilora/ops/lora.py` (the fused
# op and its backward), `minilora/lora/model.py` (`get_peft_model`). **Exercises 4.1-4.6**: the layer
# cells need 4.2 (forward) and 4.3 (backward), the `B = 0` cell 4.4, the rsLoRA cells 4.1; 4.5-4.6 are
# the capstone (end of the notebook).
#
# **In a student copy** (`minilora exercises build DIR`, solutions replaced by stubs) this notebook runs
# until the first cell that calls an exercise not yet solved -- this chapter's or an earlier one's --
# and stops there with `NotImplementedError: Exercise N.M: <what to do>`. Solve it, check it with
# `minilora exercises check --only N.M`, restart the kernel and run again.

# %%
import matplotlib.pyplot as plt
import numpy as np

import minilora as ml
from minilora import nn, ops
from minilora.lora import Linear as LoraLinear
from minilora.lora import LoraConfig, get_peft_model
from minilora.optim import AdamW
from minilora.testing import grad_check

ml.manual_seed(0)
rng = np.random.default_rng(0)
np.set_printoptions(precision=4, suppress=True)

# %% [markdown]
# ## The layer
#
# `lora.Linear` wraps an existing `nn.Linear` (kept as `base_layer`) and adds, per adapter name, an
# `A` and a `B` -- each itself a bias-free `Linear`, `in -> r` and `r -> out`. Names and shapes are
# PEFT's, so `lora_A.default.weight` here is `lora_A.default.weight` there.
#
# Built by hand like this (as with PEFT's `lora.Linear`), the new adapter is active and trainable at once,
# but nothing freezes `W0`: that is what `get_peft_model` does for a whole model (below). We do it here.
#
# **Predict:** which parameters does the layer list, with which shapes, and which are trainable?

# %%
base = nn.Linear(64, 48, bias=False)
config = LoraConfig(r=4, lora_alpha=8)
layer = LoraLinear(base, "default", config, r=4, lora_alpha=8)   # "default" is active and trainable
base.weight.requires_grad = False      # freeze W0

for name, p in layer.named_parameters():
    print(f"{name:<24} {str(tuple(p.shape)):<10} trainable={p.requires_grad}")
print("scale s = lora_alpha / r =", layer.scaling["default"])

# %% [markdown]
# ## The forward pass never builds `B A`
#
# `B A` is an `out x in` matrix -- as large as `W0`. Building it would cost `out x in x r` multiply-adds
# and a full-size temporary for every forward. Instead the layer computes `U = x A^T` first (`r`
# numbers per token), then `h = x W0^T + s U B^T`. The extra work per token is `r (in + out)`
# multiply-adds next to the `in x out` of the base product: about `2r / d` more for a square `d x d` layer.
# All of it runs as ONE differentiable op, `ops.lora_linear`, whose forward and backward are the
# CUDA kernels of notebook 5 on a GPU.
#
# To see the LoRA branch at work, give `B` random values first (at initialisation it is zero; next section).
#
# **Predict:** for a 4096 x 4096 layer at r = 8, how many percent more multiply-adds per token?

# %%
with ml.no_grad():
    layer.lora_B["default"].weight.copy_(ml.tensor(rng.standard_normal((48, 4)) * 0.1))
x = ml.randn(5, 64)
W0, A, B = base.weight.numpy(), layer.lora_A["default"].weight.numpy(), layer.lora_B["default"].weight.numpy()
s = layer.scaling["default"]

h = layer(x).numpy()
print("matches x W0^T + s (x A^T) B^T:", np.allclose(h, x.numpy() @ W0.T + s * (x.numpy() @ A.T) @ B.T, atol=1e-5))
print("matches x (W0 + s B A)^T:     ", np.allclose(h, x.numpy() @ (W0 + s * B @ A).T, atol=1e-5))
d = 4096
print(f"extra multiply-adds per token for a {d}x{d} layer at r=8: {8 * 2 * d:,d} vs {d * d:,d} (+{2 * 8 / d:.2%})")
assert np.allclose(h, x.numpy() @ (W0 + s * B @ A).T, atol=1e-5)

# %% [markdown]
# Its backward (exercise 4.3) follows the same split and never computes a gradient for `W0`:
# `V = s dY B` (rank `r`), then `dB = s dY^T U`, `dA = V^T x`, `dx = dY W0 + V A`. The gradient check
# covers `x`, `A` and `B` together, with `W0` frozen:
#
# **Predict:** how large is the worst error of a correct backward in float64?

# %%
x64 = ml.randn(3, 6, dtype=ml.float64, requires_grad=True)
W064 = ml.randn(5, 6, dtype=ml.float64)                         # frozen: no gradient asked for
A64 = ml.randn(2, 6, dtype=ml.float64, requires_grad=True)
B64 = ml.randn(5, 2, dtype=ml.float64, requires_grad=True)
def lora_op(x, A, B):
    return ops.lora_linear(x, W064, A, B, scale=2.0)
print(f"lora_linear backward, worst error: {grad_check(lora_op, x64, A64, B64):.1e}")

# %% [markdown]
# ## `B = 0`: training starts exactly at the base model
#
# A fresh adapter has `A` random (Kaiming-uniform, like any `Linear`) and `B` all zeros, so `B A = 0`
# and the wrapped model computes *exactly* what the base model computes -- not approximately, bit for bit.
# Fine-tuning starts from the pretrained function, not from a perturbed one (exercise 4.4).
#
# Why not both zero? Then `dA = V^T x` with `V = s dY B = 0`, and `dB = s dY^T (x A^T) = 0`: no
# gradient at all, forever.
#
# **Predict first.** After one backward pass through a fresh adapter, which of `|dA|` and `|dB|` is
# zero -- and is it *exactly* zero or just small?

# %%
prediction = None   # "dA", "dB", "both" or "neither"

# %%
fresh = LoraLinear(nn.Linear(64, 48, bias=False), "default", LoraConfig(r=4, lora_alpha=8), r=4, lora_alpha=8)
fresh.base_layer.weight.requires_grad = False
x = ml.randn(5, 64)
print("output == base output, bit for bit:", np.array_equal(fresh(x).numpy(), fresh.base_layer(x).numpy()))
fresh(x).sum().backward()
dA_max = float(np.abs(fresh.lora_A["default"].weight.grad).max())
dB_max = float(np.abs(fresh.lora_B["default"].weight.grad).max())
print("|dA| =", dA_max, "  |dB| =", round(dB_max, 3))
zero = {(True, True): "both", (True, False): "dA", (False, True): "dB", (False, False): "neither"}[(dA_max == 0, dB_max == 0)]
print(f"exactly zero: {zero}" + (f"; you predicted {prediction}" if prediction is not None else ""))
assert zero == "dA"

# %% [markdown]
# With `A` random and `B = 0`, the first step has `dB != 0` but `dA = 0` exactly (`V = s dY B` is zero);
# once that step has moved `B`, both move.
#
# ## What rank `r` can learn
#
# `B A` has rank at most `r`. If the change a task needs has a larger rank, the adapter learns its best
# rank-`r` approximation, and the Eckart-Young theorem says exactly how good that is: the part of the
# change's squared norm ("energy") outside its `r` largest singular values is what remains.
#
# A toy makes it concrete. A frozen random `W0` (64 x 64), and a target layer `W0 + delta` with a
# known `delta`; the adapter sees inputs `x` and targets `(W0 + delta) x` and minimises the squared
# error. The loss is normalised so that it starts at 1 and, once training converges, is close to the
# energy left out -- the dashed lines, computed from the SVD of `delta` alone.
#
# **Predict first.** The change has rank 4. Where will the loss of a rank-1 adapter stop: near 3/4,
# near 1/4, or somewhere you can only know from `delta`?

# %%
d_in = d_out = 64
X = rng.standard_normal((256, d_in)).astype(np.float32)

def make_delta(rank):
    """A random change of the given rank with ||delta||_F^2 = d_out (so the first loss is about 1)."""
    delta = rng.standard_normal((d_out, rank)) @ rng.standard_normal((rank, d_in))
    return delta / np.linalg.norm(delta) * np.sqrt(d_out)

def fit(delta, r, lora_alpha, use_rslora=False, steps=250, lr=1e-2, seed=0):
    """Train a fresh adapter of rank r to turn W0 into W0 + delta; return the loss per step."""
    ml.manual_seed(seed)
    layer = LoraLinear(nn.Linear(d_in, d_out, bias=False), "default",
                       LoraConfig(r=r, lora_alpha=lora_alpha, use_rslora=use_rslora), r, lora_alpha)
    layer.base_layer.weight.requires_grad = False
    target = ml.tensor(X @ (layer.base_layer.weight.numpy() + delta).T)
    optimizer = AdamW([p for p in layer.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
    losses = []
    for _ in range(steps):
        loss = ((layer(ml.tensor(X)) - target) ** 2).mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    return losses

def energy_left(delta, r):
    S = np.linalg.svd(delta, compute_uv=False)
    return (S[r:] ** 2).sum() / (S ** 2).sum()

delta4 = make_delta(4)
final = {}
fig, ax = plt.subplots(figsize=(6.5, 3.6))
for r, color in zip((1, 2, 4, 8), ("C0", "C1", "C2", "C3")):
    losses = fit(delta4, r, lora_alpha=2 * r)
    final[r] = losses[-1]
    ax.semilogy(losses, color=color, label=f"r = {r}")
    if energy_left(delta4, r) > 1e-6:
        ax.axhline(energy_left(delta4, r), color=color, ls="--", lw=1)
ax.set(xlabel="step", ylabel="loss (1 = nothing learned)", title="learning a rank-4 change", ylim=(1e-9, 2))
ax.legend()
plt.show()
for r in (1, 2):   # stops at the energy outside the top r singular values ...
    print(f"r = {r}: final loss {final[r]:.4f}, energy left out {energy_left(delta4, r):.4f}")
    assert abs(final[r] - energy_left(delta4, r)) < 0.08   # near (4-5 hundredths here), not on the line
print(f"r = 4: {final[4]:.0e}, r = 8: {final[8]:.0e}")
assert final[4] < 1e-4 and final[8] < 1e-4   # ... while ranks 4 and 8 learn the whole change

# %% [markdown]
# Ranks 1 and 2 stop near the energy their missing directions hold (it depends on `delta`'s singular
# values, not on `r / 4`; near, not exactly on the dashed line, because the loss is measured on 256
# sample inputs rather than on the matrix itself, and 250 steps are not quite convergence). Ranks 4
# and 8 can represent the change *exactly*: their dashed line is at zero, and both fall far below
# 1e-4 -- less than a ten-thousandth of the change's energy left.
#
# But the two curves do not end at the same level, and that is worth a look rather than a shrug.
# Below zero-error, how low a run goes is no longer a question of rank but of the optimiser: AdamW
# with a constant learning rate never settles -- it scales every step to about `lr` whatever the size
# of the gradient, so the weights keep jittering around the solution, and the loss floor they jitter at
# differs from run to run. The same fit from six random initialisations per rank.
#
# **Predict:** will rank 16 always end lower than rank 4?

# %%
seeds = range(6)
floors = {r: [fit(delta4, r, 2 * r, seed=seed)[-1] for seed in seeds] for r in (4, 8, 16)}
print(f"{'r':>4}  final loss after 250 steps, seeds 0-5")
for r, values in floors.items():
    print(f"{r:>4}  " + "  ".join(f"{v:.0e}" for v in values) + f"   (median {np.median(values):.0e})")
print(f"worst of all {3 * len(seeds)} runs: {max(max(v) for v in floors.values()):.0e} of the change's energy left")
assert max(max(v) for v in floors.values()) < 1e-4

# %% [markdown]
# The plot above was one of these draws. The floor moves by orders of magnitude with the seed (and
# again with the learning rate or the number of steps: try `lr=3e-3, steps=1000`), so below about 1e-5
# the optimiser decides, not the rank. Where does the leftover come from? Look at what a rank-16
# adapter learned, after `fit` -- the singular values of its update `s B A`.
#
# **Predict:** how many of its sixteen singular values will be large?

# %%
def fitted_layer(delta, r, seed=0, steps=250, lr=1e-2):
    """The same fit as `fit`, returning the trained layer."""
    ml.manual_seed(seed)
    layer = LoraLinear(nn.Linear(d_in, d_out, bias=False), "default", LoraConfig(r=r, lora_alpha=2 * r), r, 2 * r)
    layer.base_layer.weight.requires_grad = False
    target = ml.tensor(X @ (layer.base_layer.weight.numpy() + delta).T)
    optimizer = AdamW([p for p in layer.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
    for _ in range(steps):
        loss = ((layer(ml.tensor(X)) - target) ** 2).mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return layer, loss.item()

layer16, final16 = fitted_layer(delta4, 16)
learned = layer16.get_delta_weight("default").astype(np.float64)
S16 = np.linalg.svd(learned, compute_uv=False)
print("singular values of the learned update:", np.array2string(S16[:8], precision=4), "...")
print(f"energy in directions 5..16: {(S16[4:] ** 2).sum() / (np.linalg.svd(delta4, compute_uv=False) ** 2).sum():.1e}"
      f" of the change's energy; final loss {final16:.1e}")
assert S16[3] > 100 * S16[4]   # four large singular values, then small ones

# %% [markdown]
# Four large singular values -- the change -- and twelve small ones that should be exactly zero. The
# data say nothing about those twelve directions once the change is learned, and AdamW with a
# constant learning rate, which scales each step to about `lr` whatever the gradient, never quite
# drives them to zero. The loss that is left is of the order of their energy. So every run with
# `r >= 4` learns all but a sliver of the change, and the size of the sliver is a property of the
# optimisation (rate, schedule, steps), not of `r`. This is the whole bet of LoRA: the change
# fine-tuning needs is close to low-rank, so a small `r` captures most of it. Notebook 8 measures the
# ranks a real adapter actually uses.
#
# ## The scale: `lora_alpha / r`, and rsLoRA
#
# The branch is multiplied by `s`. With Adam, every trained number moves by about the learning rate per
# step whatever its gradient's size, so `s` acts like a learning-rate multiplier for the adapter.
# PEFT's default `s = lora_alpha / r` was chosen so that, at a fixed `lora_alpha`, changing `r` would
# not require retuning the learning rate (LoRA paper, section 4.1). rsLoRA (Kalajdzievski, 2023,
# "A Rank Stabilization Scaling Factor for Fine-Tuning with LoRA", section 3) shows this over-corrects: the
# update `B A x` sums `r` terms, which grows like `sqrt(r)`, not `r`, so at large ranks `alpha / r`
# shrinks the update too much and high ranks learn slowly. It uses `s = lora_alpha / sqrt(r)`
# (`LoraConfig(use_rslora=True)`, exercise 4.1).
#
# **Predict:** at r = 256 and `lora_alpha = 16`, what is each scale?

# %%
print(f"{'r':>4}{'alpha / r':>12}{'alpha / sqrt(r)':>18}   (lora_alpha = 16)")
for r in (4, 16, 64, 256):
    print(f"{r:>4}{LoraConfig(r=r, lora_alpha=16).scaling(r, 16):>12.3f}"
          f"{LoraConfig(r=r, lora_alpha=16, use_rslora=True).scaling(r, 16):>18.3f}")

# %% [markdown]
# Now a change that needs many directions (a full-rank `delta`), the same `lora_alpha = 16` and learning
# rate for every run, and three ranks, with each scaling rule.
#
# **Predict:** under `alpha / r`, will rank 64 learn faster or slower than rank 4 in the first steps?
# And under `alpha / sqrt(r)`?

# %%
delta_full = make_delta(64)
curves = {}
fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharey=True)
for ax, rs in zip(axes, (False, True)):
    for r, color in zip((4, 16, 64), ("C0", "C1", "C2")):
        curves[rs, r] = fit(delta_full, r, 16, use_rslora=rs, steps=200, lr=2e-3)
        ax.semilogy(curves[rs, r], color=color, label=f"r = {r}")
        if energy_left(delta_full, r) > 1e-6:
            ax.axhline(energy_left(delta_full, r), color=color, ls="--", lw=1)
    ax.set(title="rsLoRA: alpha / sqrt(r)" if rs else "LoRA: alpha / r", xlabel="step")
    ax.legend()
axes[0].set_ylabel("loss")
plt.tight_layout()
plt.show()
for rs in (False, True):
    print(("alpha / sqrt(r)" if rs else "alpha / r      ") + ": loss at step 10 / step 200: "
          + ", ".join(f"r={r} {curves[rs, r][9]:.3f} / {curves[rs, r][-1]:.4f}" for r in (4, 16, 64)))
for r in (4, 16):   # the energy they cannot represent, whatever the scale
    assert all(abs(curves[rs, r][-1] - energy_left(delta_full, r)) < 0.08 for rs in (False, True))
    assert abs(curves[False, r][-1] - curves[True, r][-1]) < 0.03
assert curves[False, 64][9] > min(curves[False, 4][9], curves[False, 16][9]) - 0.01   # alpha / r: r = 64 hardly ahead
assert curves[True, 64][9] < min(curves[True, 4][9], curves[True, 16][9])   # sqrt: fastest from the start
assert curves[True, 64][-1] < curves[False, 64][-1] / 3                    # ... and ends far lower

# %% [markdown]
# Ranks 4 and 16 stop near the energy they cannot represent (dashed), whatever the scale. Rank 64 can
# represent everything, and here the rule matters. With `alpha / r` (left) its scale is 16 times
# smaller than rank 4's, so it starts slowly: at step 10 it is hardly ahead of ranks 4 and 16 (by less
# than 0.01 of loss). With `alpha / sqrt(r)` (right) it learns fastest from the first step and ends
# far lower. (The lesson's advice -- keep
# `lora_alpha = r` or `2r` and tune only the learning rate -- is the `alpha / r` rule's consequence:
# `s` is then the constant 1 or 2 at every rank.)
#
# ## Rank against parameters, on a real model
#
# `get_peft_model` does for a whole model what we did by hand above: it finds every `Linear` whose
# name matches `target_modules`, wraps it, activates the adapter and freezes everything else. On the
# shipped base model, LoRA's parameter count is linear in `r` and in the number of targeted matrices.
#
# **Predict:** LoRA r = 8 on `q_proj` and `v_proj` of 4 layers of width 128: how many trainable parameters?

# %%
from minilora.models import load_base

model = get_peft_model(load_base(), LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"]))
model.print_trainable_parameters()
assert model.get_nb_trainable_parameters()[0] == 4 * 2 * 8 * (128 + 128)
print([n for n, p in model.named_parameters() if p.requires_grad][:2])
layer0 = model.base_model.model.model.layers[0].self_attn.q_proj
print(f"{type(layer0).__module__}.{type(layer0).__name__} around "
      f"{type(layer0.base_layer).__module__}.{type(layer0.base_layer).__name__} {tuple(layer0.base_layer.weight.shape)}")

# %% [markdown]
# The names carry PEFT's prefixes (`base_model.model.` in front of the original name, `.default` for
# the adapter), so an adapter file written from this model loads into PEFT (notebook 7).
#
# **Predict:** at r = 64, how does "all-linear" compare with the whole base model?

# %%
ranks = [1, 2, 4, 8, 16, 32, 64]
choices = {"q, v": ["q_proj", "v_proj"], "q, k, v, o": ["q_proj", "k_proj", "v_proj", "o_proj"],
           "all-linear": "all-linear"}
total = sum(p.numel() for p in load_base().parameters())
fig, ax = plt.subplots(figsize=(6.5, 3.6))
for label, targets in choices.items():
    counts = [get_peft_model(load_base(), LoraConfig(r=r, target_modules=targets)).get_nb_trainable_parameters()[0]
              for r in ranks]
    ax.plot(ranks, counts, "o-", label=label)
    if label == "all-linear":
        print(f"all-linear at r = 64: {counts[-1]:,d} trainable, {counts[-1] / total:.2f} of the base model")
        assert round(counts[-1] / total, 2) == 0.75
ax.axhline(total, color="grey", ls="--", label="the whole base model")
ax.set(xscale="log", yscale="log", xlabel="rank r", ylabel="trainable parameters",
       title=f"LoRA on the base model ({total:,d} parameters)")
ax.set_xticks(ranks, [str(r) for r in ranks])
ax.legend(fontsize=8)
plt.show()
print(f"r = 64 on a 128 x 128 matrix: {64 * 256:,d} = {128 * 128:,d}; "
      f"on 4096 x 4096: +{64 * 8192 / 4096 ** 2:.1%}")
assert 64 * 256 == 128 * 128 and round(64 * 8192 / 4096 ** 2, 2) == 0.03

# %% [markdown]
# The base model is only 128 wide, so `2r / d` is large: at r = 64 the LoRA pair of a 128 x 128
# matrix is exactly as big as the matrix, and "all-linear" trains three quarters as many numbers as the
# whole model has. At Llama-2-7B's width of 4096 the same r = 64 adds 3% per matrix. LoRA's economy is
# a property of *wide* layers.
#
# ## Which matrices, at an equal budget
#
# Parameters are one thing; what do they buy? The LoRA paper (Table 5) fixed a budget of trainable
# parameters on GPT-3 and compared spending it on one attention matrix at a high rank or on several at
# a low rank; adapting `W_q` and `W_v` together at r = 4 (or all four at r = 2) did as well as or better
# than any single matrix at r = 8 (section 7.1).
# The same question on the base model: `q, v` against all seven linear layers, with the rank of each
# chosen so that both train (almost) the same number of parameters, 30 steps on the `qa` task of
# notebook 6 -- each twice, from two seeds, since one run of a small model is an anecdote. At the rate
# used, 2e-3, both are still learning after 30 steps, so what is compared is how fast each learns. (At
# notebook 6's 3e-3 both get much further in 30 steps and the gap shrinks towards the size of the
# seed's effect: try it with a few seeds. Which of two close runs ends lower can also change with the
# machine, whose BLAS rounds float32 sums in its own order.)
#
# **Predict first.** Fewer matrices at a higher rank, or all of them at a low rank: which learns
# `qa` better at the same budget?

# %%
from minilora import data
from minilora.tokenizer import ByteTokenizer
from minilora.train import train

tok = ByteTokenizer()
per_rank = {label: get_peft_model(load_base(), LoraConfig(r=1, target_modules=t)).get_nb_trainable_parameters()[0]
            for label, t in (("q, v", ["q_proj", "v_proj"]), ("all-linear", "all-linear"))}
r_all = 5
r_qv = round(r_all * per_rank["all-linear"] / per_rank["q, v"])
qa_train = data.task_loader(tok, "qa", "train", batch_size=16, seed=0)
qa_eval = data.task_loader(tok, "qa", "eval", batch_size=16, shuffle=False)
seeds = (0, 1)
budget = {}
for label, targets, r in (("q, v", ["q_proj", "v_proj"], r_qv), ("all-linear", "all-linear", r_all)):
    losses = []
    for seed in seeds:
        ml.manual_seed(seed)
        peft = get_peft_model(load_base(), LoraConfig(r=r, lora_alpha=2 * r, target_modules=targets))
        run = train(peft, qa_train, qa_eval, steps=30, lr=2e-3, warmup_steps=6, eval_every=30, progress=False, plot=False)
        losses.append(run.evals[-1]["eval_loss"])
    # accuracy (greedy answers to 60 questions) of the last seed's run only: generating is the slow part
    budget[label] = (r, peft.get_nb_trainable_parameters()[0], losses, data.evaluate(peft, tok, "qa", n=60).accuracy)
print(f"{'targets':<12}{'r':>4}{'trainable':>11}{'eval loss, seeds 0 and 1':>26}{'qa accuracy, seed 1':>21}")
for label, (r, n, losses, acc) in budget.items():
    print(f"{label:<12}{r:>4}{n:>11,d}{'  '.join(f'{v:.3f}' for v in losses):>26}{acc:>21.0%}")
assert abs(budget["q, v"][1] / budget["all-linear"][1] - 1) < 0.01      # the same budget
assert all(a < q for a, q in zip(budget["all-linear"][2], budget["q, v"][2]))   # spreading: lower loss, each seed
assert abs(budget["all-linear"][3] - budget["q, v"][3]) <= 0.1          # accuracies close

# %% [markdown]
# At the same budget, spreading the rank over every linear layer reaches a lower evaluation loss
# from both seeds, in line with the paper's finding that adapting more matrix types beats a higher rank on
# fewer. On 60 questions the accuracies are close; and the answer is not universal -- try the
# `reverse` task of notebook 7, a new operation rather than a new format, with more steps.
#
# ## LoRA on embeddings
#
# `target_modules` may also name an `Embedding` (here `embed_tokens`). PEFT's `lora.Embedding` adds
# `lora_embedding_A` (`r x vocab`) and `lora_embedding_B` (`dim x r`): the update is a low-rank change
# of the lookup table, `delta E = s (B A)^T`, and one token's row of it is `s B A[:, token]`. One of the
# two starts at zero, so the model again starts exactly at the base. (The base model ties `embed_tokens`
# to the output head; PEFT warns that the adapter is not tied to the head too, and minilora warns with
# PEFT's words.)
#
# **Predict:** which of `lora_embedding_A` and `lora_embedding_B` is all zeros at the start?

# %%
import warnings

with warnings.catch_warnings(record=True) as caught:   # shown below by its message alone
    warnings.simplefilter("always")
    emb = get_peft_model(load_base(), LoraConfig(r=4, lora_alpha=8, target_modules=["embed_tokens"]))
for name, p in emb.named_parameters():
    if p.requires_grad:
        print(f"{name:<60} {tuple(p.shape)}")
ids = tok(["The capital of"])["input_ids"]
with ml.no_grad():
    same = np.array_equal(emb(ids).logits.numpy(), load_base()(ids).logits.numpy())
print("starts exactly at the base model:", same)
emb_A = emb.base_model.model.model.embed_tokens.lora_embedding_A["default"]
emb_B = emb.base_model.model.model.embed_tokens.lora_embedding_B["default"]
print("A all zeros:", not np.asarray(emb_A.detach()).any(), "| B all zeros:", not np.asarray(emb_B.detach()).any())
assert same and not np.asarray(emb_A.detach()).any() and np.asarray(emb_B.detach()).any()
print(f"{caught[0].category.__name__}: {caught[0].message}")

# %% [markdown]
# Here it is `A` that starts at zero, not `B` (PEFT's choice for embeddings: `B` is drawn from a normal
# distribution instead). With a byte vocabulary this table is tiny; in a 7B model with 32,000 tokens an embedding adapter is
# how one teaches new tokens' meaning without training the full table (PEFT can also save the whole
# table, `save_embedding_layers`, when new tokens were added).
#
# ## Summary
#
# * `h = W0 x + s B (A x)`: one fused op, rank-`r` intermediate, no `B A`, no `dW0`.
# * `B = 0` at the start: the model begins exactly at the base; the first step moves only `B`.
# * A rank-`r` adapter learns the best rank-`r` part of the needed change; what it cannot learn is the
#   energy outside the top `r` singular values.
# * `s = lora_alpha / r` makes large ranks learn slowly; rsLoRA's `lora_alpha / sqrt(r)` does not.
# * Parameters grow as `r x (in + out)` per adapted matrix.
# * At an equal budget, spreading rank over more matrices learned `qa` faster (a lower eval loss after
#   30 steps, from two seeds) than a higher rank on `q, v` (the LoRA paper's Table 5 favours spreading on GPT-3 too).
#
# ## Questions and small tasks
#
# 1. In the rank-4 experiment, train rank 8 with a learning rate that decays to zero (as `train` does)
#    instead of a constant one. What happens to the floor and to the twelve small singular values?
# 2. `B = 0` and `A` random is one way to start at the base. Would `A = 0` and `B` random also work?
#    Which gradient is zero at the first step then? (PEFT uses it for embeddings.)
# 3. Repeat the equal-budget comparison with `q, k, v, o` at a middle rank. Where does it land?
# 4. **Capstone (exercises 4.5, 4.6):** write `ScratchLoraLinear` in `minilora/lora/scratch.py`, a LoRA
#    layer in about 20 lines with plain tensor operations, and check it against the library's layer
#    with `python -m pytest -m "ex4_5 or ex4_6" tests`.
#
# ## What's next
#
# * Notebook 5 runs this layer's fused forward and backward as CUDA kernels, on the CPU.
# * In PEFT: `peft.LoraConfig` takes the same arguments (`r`, `lora_alpha`, `target_modules`,
#   `use_rslora`, `init_lora_weights`). Two of its inits start `A`, `B` from `W0` itself: PiSSA
#   (`init_lora_weights="pissa"`) from its SVD, so `s B A` is `W0`'s best rank-r part; OLoRA (`"olora"`)
#   from its QR decomposition, `B` the first r columns of `Q` and `A` the first r rows of `R`.
