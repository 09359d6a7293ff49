# %% [markdown]
# # 2. The transformer LoRA adapts
#
# LoRA does not change *what* a transformer computes, only which numbers in it get trained. To know
# where the adapters go -- `q_proj`, `v_proj`, `gate_proj`, ... -- we need the model itself. minilora
# implements the Llama architecture with Hugging Face's module names, so a checkpoint saved by
# `transformers` loads here unchanged, and an adapter trained here names the same layers PEFT does.
#
# This notebook builds the pieces one at a time and checks each against a few lines of NumPy:
# attention (with the causal mask and grouped-query heads), RMSNorm, rotary position embeddings,
# one decoder layer, and finally the pretrained base model that ships with minilora.
#
# **Read beside it:** `minilora/ops/nn.py` (attention, RMSNorm, RoPE, cross-entropy, each with its
# backward), `minilora/nn/llama.py` (the model, top to bottom), `minilora/nn/layers.py`,
# `minilora/checkpoint.py` (safetensors). **Exercises 2.1-2.6**: the attention gradient check needs 2.4,
# the RMSNorm cell 2.1-2.2, every cell that runs a model 2.1 and 2.6; RoPE's backward (2.3) and the
# loss (2.5) are first needed for training, in notebook 3.
#
# **In a student copy** (`minilora exercises build DIR`, solutions replaced by stubs) this notebook runs
# until the first cell that calls an exercise not yet solved -- this chapter's or an earlier one's --
# and stops there with `NotImplementedError: Exercise N.M: <what to do>`. Solve it, check it with
# `minilora exercises check --only N.M`, restart the kernel and run again.

# %%
import os

import matplotlib.pyplot as plt
import numpy as np

import minilora as ml
from minilora import ops
from minilora.models import LlamaConfig, LlamaForCausalLM, load_base
from minilora.nn.llama import LlamaDecoderLayer, LlamaRotaryEmbedding
from minilora.testing import grad_check

ml.manual_seed(0)
rng = np.random.default_rng(0)
np.set_printoptions(precision=4, suppress=True)

# %% [markdown]
# ## Attention
#
# Each position asks a question (its *query* `q`), every position offers a *key* `k` and a *value*
# `v`. The answer for position `i` is an average of the values, weighted by how well `q_i` matches
# each key: `softmax(q k^T / sqrt(d))` row by row, then times `v`. In a language model position `i`
# may only look at positions `j <= i` (it must not read the token it is trying to predict), so the
# scores above the diagonal are set to `-inf` before the softmax: the *causal mask*.
#
# Shapes are `[batch, heads, positions, head_dim]`. Below: the same computation in five lines of NumPy,
# compared with `ops.scaled_dot_product_attention`.
#
# **Predict:** in the attention-weight picture, which cells will be exactly zero, and what does each
# row sum to?

# %%
B, H, T, D = 1, 2, 6, 8
q, k, v = (ml.tensor(rng.standard_normal((B, H, T, D)), dtype=ml.float64) for _ in range(3))

def attention_numpy(q, k, v):
    scores = q @ k.swapaxes(-1, -2) / np.sqrt(q.shape[-1])
    scores = np.where(np.tril(np.ones((T, T), dtype=bool)), scores, -np.inf)   # causal mask
    probs = np.exp(scores - scores.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    return probs @ v, probs

ours = ops.scaled_dot_product_attention(q, k, v, is_causal=True)   # torch's F.scaled_dot_product_attention
reference, probs = attention_numpy(q.numpy(), k.numpy(), v.numpy())
print("max |minilora - numpy| =", np.abs(ours.numpy() - reference).max())
assert np.abs(ours.numpy() - reference).max() < 1e-12
assert np.allclose(probs.sum(-1), 1) and not probs[..., np.triu_indices(T, 1)[0], np.triu_indices(T, 1)[1]].any()

fig, axes = plt.subplots(1, 2, figsize=(7, 3))
for h, ax in enumerate(axes):
    ax.imshow(probs[0, h], cmap="Blues", vmin=0, vmax=1)
    ax.set(title=f"head {h}: attention weights", xlabel="key position j", ylabel="query position i")
plt.tight_layout()
plt.show()

# %% [markdown]
# Each row sums to one, and everything above the diagonal is exactly zero: position 0 can only attend
# to itself.
#
# **Grouped-query attention (GQA).** Large Llamas keep fewer key/value heads than query heads: in
# Llama-2-70B, 64 query heads share 8 key/value heads (its `config.json`: `num_attention_heads=64`,
# `num_key_value_heads=8`; Llama 2 paper, Touvron et al. 2023, section 2.2), which shrinks the KV cache
# eightfold. minilora's attention takes `k` and `v` with fewer heads and lets each group of query heads
# read its shared head without copying it. The result must equal the naive version, which repeats each
# KV head for its group.
#
# **Predict:** equal exactly, or only to rounding?

# %%
q4 = ml.tensor(rng.standard_normal((1, 4, T, D)), dtype=ml.float64)
k2, v2 = (ml.tensor(rng.standard_normal((1, 2, T, D)), dtype=ml.float64) for _ in range(2))
gqa = ops.scaled_dot_product_attention(q4, k2, v2, is_causal=True, enable_gqa=True)
repeated, _ = attention_numpy(q4.numpy(), np.repeat(k2.numpy(), 2, axis=1), np.repeat(v2.numpy(), 2, axis=1))
copied = ops.scaled_dot_product_attention(q4, *(ml.tensor(np.repeat(t.numpy(), 2, axis=1)) for t in (k2, v2)),
                                          is_causal=True)
same = np.array_equal(gqa.numpy(), copied.numpy())
gqa_gap = np.abs(gqa.numpy() - repeated).max()
print(f"GQA == the same attention on repeated heads, bit for bit: {same}")
print(f"GQA against the NumPy version on repeated heads: max |difference| {gqa_gap:.1e}")
assert same and gqa_gap < 1e-12

# %% [markdown]
# Exactly: reading a shared head in place does the same arithmetic as reading a copy of it. Against the
# NumPy version the two agree only to rounding, as the first cell's did: NumPy's matrix products add
# in another order.
#
# Its backward (exercise 2.4) is checked like every op: against central differences, in float64.
#
# **Predict:** for a correct backward in float64, about how large is the worst error?

# %%
qs, ks, vs = (ml.tensor(rng.standard_normal((1, 4 if i == 0 else 2, 3, 4)), dtype=ml.float64, requires_grad=True)
              for i in range(3))
causal_gqa = lambda q, k, v: ops.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
print(f"attention backward, worst error: {grad_check(causal_gqa, qs, ks, vs):.1e}")

# %% [markdown]
# ## RMSNorm
#
# Llama normalises the hidden vector before each attention and each MLP block. RMSNorm divides by the
# root mean square of the vector (no mean subtracted, unlike LayerNorm) and multiplies by a learned
# gain per feature: `y = w * x / sqrt(mean(x^2) + eps)`. Two consequences are worth seeing: every
# row of the output has RMS 1 (before the gain), and scaling the input by a positive number changes
# almost nothing (only through the tiny `eps`) -- which keeps the residual stream's growing magnitude
# out of each block's input.
#
# **Predict:** three random rows scaled by 0.1, 1 and 30 go in. What RMS comes out of each?

# %%
x = ml.tensor(rng.standard_normal((3, 16)) * [[0.1], [1.0], [30.0]], dtype=ml.float64)
y = ops.rms_norm(x, (16,), eps=1e-6)   # torch's F.rms_norm(input, normalized_shape, weight, eps)
print("RMS of the input rows: ", np.sqrt((x.numpy() ** 2).mean(-1)))
print("RMS of the output rows:", np.sqrt((y.numpy() ** 2).mean(-1)))
scale_change = np.abs(ops.rms_norm(x * 5.0, (16,), eps=1e-6).numpy() - y.numpy()).max()
print(f"max |rms_norm(5 x) - rms_norm(x)| = {scale_change:.1e}")
assert np.allclose(np.sqrt((y.numpy() ** 2).mean(-1)), 1, atol=1e-3) and scale_change < 1e-3

xg = ml.tensor(rng.standard_normal((2, 5)), dtype=ml.float64, requires_grad=True)
wg = ml.tensor(rng.standard_normal(5), dtype=ml.float64, requires_grad=True)
print(f"rms_norm backward (x and w), worst error: {grad_check(lambda x, w: ops.rms_norm(x, (5,), w), xg, wg):.1e}")

# %% [markdown]
# ## Rotary position embeddings (RoPE)
#
# Attention by itself is blind to order: shuffle the keys and values together and the output does not
# change. Llama injects positions by *rotating* `q` and `k`: the features are paired up, and the pair
# `i` of a vector at position `m` is turned by the angle `m * theta_i`, with frequencies
# `theta_i = 10000^(-2i/d)` from fast to very slow. Rotating two vectors by the *same* angle leaves
# their dot product unchanged; rotating `q` by `m * theta_i` and `k` by `n * theta_i` is the same, for
# their dot product, as rotating `q` alone by `(m - n) * theta_i`. So the score of a query at position
# `m` against a key at position `n` depends only on the *offset* `m - n`. The plot below computes the
# full score matrix for one fixed pair of vectors placed at every position.
#
# **Predict:** along which lines of the score matrix will the score be constant?

# %%
config = LlamaConfig(hidden_size=64, num_attention_heads=1, num_hidden_layers=1, intermediate_size=128, vocab_size=16)
rope = LlamaRotaryEmbedding(config)
positions = np.arange(48)[None, :]
cos, sin = rope(positions, np.float64)                         # [1, 1, 48, 64]
qv, kv = rng.standard_normal(64), rng.standard_normal(64)
q_rot = ops.rotary_embedding(ml.tensor(np.tile(qv, (1, 1, 48, 1))), cos, sin).numpy()[0, 0]
k_rot = ops.rotary_embedding(ml.tensor(np.tile(kv, (1, 1, 48, 1))), cos, sin).numpy()[0, 0]
scores = q_rot @ k_rot.T                                       # scores[m, n]

offsets = [np.diagonal(scores, -d) for d in range(0, 40, 8)]
print("spread along each diagonal (max - min):", [f"{np.ptp(o):.1e}" for o in offsets])
assert max(np.ptp(o) for o in offsets) < 1e-9 * np.abs(scores).max()   # constant along every diagonal
fig, axes = plt.subplots(1, 2, figsize=(8, 3.2))
axes[0].imshow(scores, cmap="RdBu")
axes[0].set(title="q at m, k at n: score", xlabel="key position n", ylabel="query position m")
axes[1].plot(np.arange(48), scores[47, ::-1])
axes[1].set(title="score against offset m - n", xlabel="offset", ylabel="q . k after rotation")
plt.tight_layout()
plt.show()

# %% [markdown]
# minilora follows the Hugging Face convention (`rotate_half`: the first half of the features is
# paired with the second half) rather than interleaved pairs. Both are valid RoPE, but a checkpoint
# only works with the convention it was trained with -- one of the details that make "loads HF
# checkpoints unchanged" a claim worth testing (`tests/test_llama.py` compares logits with
# `transformers`).
#
# ## One decoder layer
#
# A Llama layer is two residual blocks, each behind its own RMSNorm:
#
# ```
# x = x + o_proj(attention(rope(q_proj(n)), rope(k_proj(n)), v_proj(n)))     n = input_layernorm(x)
# x = x + down_proj(silu(gate_proj(m)) * up_proj(m))                         m = post_attention_layernorm(x)
# ```
#
# Those seven `*_proj` layers are plain `Linear` layers -- exactly the modules LoRA's `target_modules`
# names. Let us build one layer at a small size and look at its parameters.
#
# **Predict:** with 4 query heads and 2 key/value heads, how does `k_proj`'s shape compare with `q_proj`'s?

# %%
small = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=88, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=2)
layer = LlamaDecoderLayer(small, layer_idx=0)
for name, p in layer.named_parameters():
    print(f"{name:<32} {str(tuple(p.shape)):<10} {p.numel():>6,d}")
assert layer.self_attn.k_proj.weight.numel() * 2 == layer.self_attn.q_proj.weight.numel()

# %% [markdown]
# With `num_key_value_heads=2` of 4 heads, `k_proj` and `v_proj` are half the size of `q_proj`.
#
# **Causality, end to end.** In a causal model, the output at position `i` depends on tokens `0..i`
# only.
#
# **Predict first.** Change the token at position 5 of a 10-token input. At which positions will the
# logits change?

# %%
prediction = None   # e.g. [5, 6, 7, 8, 9]

# %%
model = LlamaForCausalLM(small)
ids = rng.integers(0, 64, size=(1, 10))
changed = ids.copy()
changed[0, 5] = (ids[0, 5] + 1) % 64
with ml.no_grad():
    a, b = model(ids).logits.numpy(), model(changed).logits.numpy()
print("max change of the logits at each position:", np.abs(a - b).max(-1).round(4))
moved = [int(i) for i in np.nonzero(np.abs(a - b).max(-1)[0] > 0)[0]]
print("positions that changed:", moved, "" if prediction is None else f"| you predicted {prediction}")
assert moved == [5, 6, 7, 8, 9]

# %% [markdown]
# ## The pretrained base model
#
# minilora ships a small Llama pretrained from scratch on a generated corpus about an invented world
# (countries, capitals, people and their jobs; see `minilora/data.py` and
# `minilora/assets/base/README.md`). It is tiny -- four layers, hidden size 128 -- but it is a real
# pretrained language model, which is what fine-tuning needs: knowledge to keep, and a new task to learn.
# `load_base()` reads its `config.json` and `model.safetensors`.
#
# **Predict:** what share of its parameters sits in the attention and MLP matrices?

# %%
from minilora.memory import summarize_parameters
from minilora.tokenizer import ByteTokenizer

base = load_base()
tok = ByteTokenizer()
print(base.config)
print()
print(summarize_parameters([(n, p.shape) for n, p in base.named_parameters()], bytes_per_value=4))

# the claims of the next cell, computed: byte vocabulary, tied head, where the parameters are
c = base.config
assert (c.vocab_size, c.num_hidden_layers, c.hidden_size, c.tie_word_embeddings) == (259, 4, 128, True)
total = sum(p.numel() for p in base.parameters())
in_blocks = sum(p.numel() for n, p in base.named_parameters() if n.endswith("_proj.weight"))
print(f"attention + MLP matrices: {in_blocks / total:.0%} of {total:,d} parameters")
llama2_7b, embed_and_head = 6_738_415_616, 2 * 32_000 * 4_096     # Llama-2-7B's count, its untied head
print(f"Llama-2-7B: embedding + output head = {embed_and_head / llama2_7b:.1%} of its weights")
assert in_blocks / total > 0.9 and embed_and_head / llama2_7b < 0.04

# %% [markdown]
# The vocabulary is bytes (259 tokens: 256 byte values plus three special tokens), so the embedding is
# small and the attention and MLP matrices hold almost all the parameters -- the same balance as in a
# 7B model, whose 32,000-token embedding and output head together are under 4% of its weights (both
# computed above). The output head is tied to the embedding (`tie_word_embeddings=True`): one matrix
# used twice, counted once.
#
# What does it know? Let it complete a sentence in the corpus's style, and look at its next-token
# probabilities. After `"... is"` the next byte is a space with probability 1 -- that teaches nothing --
# so the prompt ends with the space, where the model has to choose the capital's first letter.
#
# **Predict first.** How sure will the model be of the first letter of the right capital: about
# uniform over letters, spread over several capitals, or nearly certain?

# %%
prediction = None   # your guess for P(first letter of the right capital), between 0 and 1

# %%
from minilora.data import make_world

world = make_world()                       # the invented world the corpus describes
country = world.countries[0]
prompt = f"The capital of {country} is "
answer = world.capitals[country]
print("the corpus says:", answer)
out = base.generate([tok.encode(prompt)], max_new_tokens=20)
print(repr(tok.decode(out.numpy()[0], skip_special_tokens=True)))

def next_token_probs(text):
    with ml.no_grad():
        logits = base([tok.encode(text)]).logits.numpy()[0, -1]
    p = np.exp(logits - logits.max())
    return p / p.sum()

assert next_token_probs(prompt[:-1])[tok.encode(" ", add_special_tokens=False)[0]] > 0.99   # after "is": a space
p = next_token_probs(prompt)
first = tok.encode(answer, add_special_tokens=False)[0]
print(f"P(first letter {answer[0]!r}) = {p[first]:.2f}" + ("" if prediction is None else f" | you predicted {prediction}"))

# the whole name, letter by letter: P(capital | prompt) = product of its letters' probabilities
def sequence_prob(text, continuation):
    ids = tok.encode(text + continuation)
    n = len(tok.encode(continuation, add_special_tokens=False))
    with ml.no_grad():
        logp = base([ids]).logits.log_softmax(-1).numpy()[0]
    return float(np.exp(sum(logp[len(ids) - n - 1 + i, ids[len(ids) - n + i]] for i in range(n))))

capitals = sorted(set(world.capitals.values()))
whole = {c: sequence_prob(prompt, c) for c in capitals}
top = np.argsort(p)[::-1][:8]
fig, axes = plt.subplots(1, 2, figsize=(10, 2.8))
axes[0].bar([repr(tok.decode([int(i)], skip_special_tokens=True)) for i in top], p[top])
axes[0].set(title=f"next byte after {prompt!r}", ylabel="probability")
best = sorted(whole, key=whole.get, reverse=True)[:6]
axes[1].bar(best, [whole[c] for c in best], color=["C2" if c == answer else "C0" for c in best])
axes[1].set(title="P(whole capital name | prompt)")
axes[1].tick_params(axis="x", labelsize=8)
plt.tight_layout()
plt.show()

# %% [markdown]
# ## Saving and loading a checkpoint
#
# A checkpoint is a folder of the three files `transformers`' `save_pretrained` writes for a Llama:
# `config.json` (the architecture), `generation_config.json` (generation defaults: here the special
# tokens' ids) and `model.safetensors` (the weights). A safetensors file is an 8-byte little-endian
# number `N`, then `N` bytes of JSON naming every tensor (`model.layers.0.self_attn.q_proj.weight`, ...)
# with its dtype, shape and byte range, then the raw bytes. Those are the names and the format
# `transformers` uses, so `LlamaForCausalLM.from_pretrained` in either library reads the other's
# folders. A round trip must give back the same numbers, bit for bit.
#
# **Predict:** how big is the `model.safetensors` file, from the parameter count above?

# %%
base.save_pretrained("saved-base")
for name in sorted(os.listdir("saved-base")):
    print(f"{name:<24} {os.path.getsize(os.path.join('saved-base', name)):>10,d} bytes")
assert sorted(os.listdir("saved-base")) == ["config.json", "generation_config.json", "model.safetensors"]
reloaded = LlamaForCausalLM.from_pretrained("saved-base")
with ml.no_grad():
    same = np.array_equal(base(ids).logits.numpy(), reloaded(ids).logits.numpy())
print("identical logits after save + load:", same)
assert same

import struct

from minilora.checkpoint import read_header
header, data_start = read_header("saved-base/model.safetensors")
with open("saved-base/model.safetensors", "rb") as f:
    (json_bytes,) = struct.unpack("<Q", f.read(8))          # the 8-byte little-endian length
print(f"8 bytes of length ({json_bytes:,d}), then {json_bytes:,d} bytes of JSON header: the tensors start "
      f"at byte {data_start:,d}. Its first entries:")
assert data_start == 8 + json_bytes and os.path.getsize("saved-base/model.safetensors") == data_start + 4 * total
for name in [n for n in header if n != "__metadata__"][:3]:
    print(f"  {name:<40} {header[name]}")

# %% [markdown]
# ## Summary
#
# * Attention is `softmax(q k^T / sqrt(d) + causal mask) v`; GQA shares key/value heads between
#   groups of query heads.
# * RMSNorm rescales each hidden vector to RMS 1 and then applies a learned gain.
# * RoPE rotates `q` and `k` by position, so attention scores depend on relative position.
# * A Llama layer is attention and a SwiGLU MLP, each in a pre-norm residual block; its seven
#   projections are the `Linear` layers LoRA will wrap (notebook 4).
# * Checkpoints are Hugging Face folders; the shipped base model knows the facts of its invented world.
#
# ## Questions and small tasks
#
# 1. Remove the causal mask from `attention_numpy` and rerun the causality check by hand: which
#    positions would now change, and why could such a model not be trained to predict the next token?
# 2. With GQA, `k_proj` and `v_proj` shrink. For Llama-2-70B (8 KV heads of 64), how many LoRA
#    parameters does r = 16 on `v_proj` add per layer, against `q_proj`?
# 3. Ask the base model `"The capital of X is "` for a *made-up* country X. What does the distribution
#    over capitals look like now?
#
# ## What's next
#
# * Notebook 3 counts the memory that training this model (and a 7B one) takes.
# * Real checkpoints: `LlamaForCausalLM.from_pretrained` reads a transformers Llama folder
#   (e.g. TinyLlama) unchanged; `tests/test_llama.py` compares logits with transformers.
