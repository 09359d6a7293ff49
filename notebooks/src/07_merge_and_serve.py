# %% [markdown]
# # 7. Merging, adapter files, and serving many adapters
#
# A trained adapter is two small matrices per layer. What can we do with them after training?
#
# * **Merge** them into the base weights, `W = W0 + s B A`: the model becomes a plain model again,
#   with no extra work per token -- and check that nothing changed.
# * **Save** them alone: a file a fraction of the model's size, in PEFT's format.
# * **Keep several** next to one base model and switch between them -- or, in a server, give every
#   request in a batch its own adapter.
#
# **Read beside it:** `minilora/lora/layers.py` (`get_delta_weight`, `merge_math`,
# `_mixed_batch_forward`), `minilora/lora/model.py` (`merge_adapter`, `merge_and_unload`,
# `add_adapter`, `set_adapter`, `disable_adapter`, `adapter_names=`), `minilora/lora/save.py` (the files).
# **Exercises 7.1, 7.2** (`get_delta_weight`, `merge`): every merge below needs them.
#
# **In a student copy** (`minilora exercises build DIR`, solutions replaced by stubs) this notebook runs
# until the first cell that calls an exercise not yet solved -- this chapter's or an earlier one's --
# and stops there with `NotImplementedError: Exercise N.M: <what to do>`. Solve it, check it with
# `minilora exercises check --only N.M`, restart the kernel and run again.

# %%
import json
import os
import shutil
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

import minilora as ml
from minilora import data, memory
from minilora.lora import LoraConfig, PeftModel, get_peft_model
from minilora.models import BASE_DIR, load_base
from minilora.tokenizer import ByteTokenizer
from minilora.train import train

ml.manual_seed(0)
tok = ByteTokenizer()
SECOND_TASK = "reverse"     # "Reverse: cup kite bread" -> "bread kite cup", a new operation


def find_asset(name):
    """A file shipped under notebooks/assets/: next to this notebook, or in the repository of the
    installed minilora (the notebook may run in a scratch folder)."""
    for root in (Path.cwd(), Path.cwd() / "notebooks", Path(ml.__file__).resolve().parents[1] / "notebooks"):
        if (root / "assets" / name).exists():
            return root / "assets" / name
    raise FileNotFoundError(f"notebooks/assets/{name} not found: run this notebook from the repository")


def finetune(task, steps=40):
    """A quick LoRA adapter (r=8 on every linear layer) for one of the built-in tasks."""
    model = get_peft_model(load_base(), LoraConfig(r=8, lora_alpha=16, target_modules="all-linear"))
    loader = data.task_loader(tok, data.get_task(task), "train", batch_size=16, seed=0)
    train(model, loader, steps=steps, lr=3e-3, warmup_steps=4, progress=False)
    return model.eval()


def logits(model, ids):
    with ml.no_grad():
        return model(ids).logits.numpy()


model = finetune("qa")
prompts = [ex.prompt for ex in data.get_task("qa").eval[:4]]
batch = tok(prompts, padding=True, return_tensors="np")["input_ids"]
print(batch.shape)

# %% [markdown]
# ## Merging: `W0 + s B A`, once
#
# With the adapter separate, every LoRA layer computes `x W0^T + s (x A^T) B^T`: a little more work per
# token, and a few more kernel launches. Merging adds the update to the weight once (exercise 7.1 builds
# `s B A`, exercise 7.2 adds it), after which the layer is an ordinary matrix product.
#
# **Predict first.** Mathematically `x (W0 + s B A)^T = x W0^T + s (x A^T) B^T`. In float32, how large
# will the largest difference between the two models' logits be: exactly 0, about 1e-6, or about 1e-2?

# %%
prediction = None   # "0", "1e-6" or "1e-2"

# %%
unmerged = logits(model, batch)
w0_before = {name: p.numpy().copy() for name, p in model.named_parameters() if "base_layer" in name}
model.merge_adapter()
merged = logits(model, batch)
difference = np.abs(merged - unmerged).max()
print(f"max |merged - unmerged| logits: {difference:.2e}  (values up to {np.abs(unmerged).max():.0f})")
closest = min(("0", 0.0), ("1e-6", 1e-6), ("1e-2", 1e-2), key=lambda o: abs(np.log10(o[1] + 1e-12) - np.log10(difference + 1e-12)))[0]
print(f"closest option: {closest}" + (f"; you predicted {prediction}" if prediction is not None else ""))
model.unmerge_adapter()
print(f"after unmerge: {np.abs(logits(model, batch) - unmerged).max():.2e}")
w0_after = {name: p.numpy() for name, p in model.named_parameters() if "base_layer" in name}
changed = sum(int((w0_after[name] != w).sum()) for name, w in w0_before.items())
total = sum(w.size for w in w0_before.values())
print(f"W0 after merge + unmerge: {changed:,d} of {total:,d} numbers not bit for bit the original")
assert 0 < changed < total
assert 0 < difference < 1e-3 and np.abs(logits(model, batch) - unmerged).max() < 1e-3   # rounding only

# %% [markdown]
# Unmerging subtracts the same `s B A` again. It gives back `W0` up to rounding (not bit for bit:
# `(W0 + D) - D` is not always exactly `W0` in floating point), which is why PEFT and minilora keep
# track of what is merged rather than recomputing it.
#
# The update that merging adds is a full `out x in` matrix, but of rank at most 8.
#
# **Predict:** its rank, and its size next to `W0`'s (a ratio of Frobenius norms)?

# %%
q_proj = model.base_model.model.model.layers[0].self_attn.q_proj
delta = q_proj.get_delta_weight("default")
print("delta W:", delta.shape, "rank", np.linalg.matrix_rank(delta),
      f"| ||delta W|| / ||W0|| = {np.linalg.norm(delta) / np.linalg.norm(q_proj.base_layer.weight.numpy()):.3f}")
assert delta.shape == (128, 128) and np.linalg.matrix_rank(delta) <= 8

# %% [markdown]
# ## Adapter files
#
# `save_pretrained` writes the three files PEFT's does: `adapter_config.json` (the `LoraConfig`, with
# PEFT's keys), `adapter_model.safetensors` (only the adapter's tensors) and a `README.md` model card (the
# metadata the Hugging Face Hub reads: base model, library). A key in the file is the parameter's
# name with the adapter name taken out (`...q_proj.lora_A.weight`, not `...lora_A.default.weight`): the
# name is chosen again when the file is loaded.
#
# **Predict:** how many tensors does the file hold (r = 8 on all seven projections of 4 layers), and
# what fraction of the base model's size is it?

# %%
model.save_pretrained("qa-adapter")
for name in sorted(os.listdir("qa-adapter")):
    print(f"{name:<28} {os.path.getsize(os.path.join('qa-adapter', name)):>9,d} bytes")
assert sorted(os.listdir("qa-adapter")) == ["README.md", "adapter_config.json", "adapter_model.safetensors"]
base_file = os.path.join(BASE_DIR, "model.safetensors")
print(f"{'the base model':<28} {os.path.getsize(base_file):>9,d} bytes")

with open("qa-adapter/adapter_config.json") as f:
    config = json.load(f)
print({k: config[k] for k in ("peft_type", "r", "lora_alpha", "lora_dropout", "inference_mode")})
print(f"target_modules: {len(config['target_modules'])} modules, e.g. {config['target_modules'][:2]}")

from minilora.checkpoint import read_header
header, _ = read_header("qa-adapter/adapter_model.safetensors")
print(f"{len(header) - 1} tensors, e.g.", [k for k in header if k != "__metadata__"][:2])
adapter_size = os.path.getsize("qa-adapter/adapter_model.safetensors")
print(f"the adapter file is {adapter_size / os.path.getsize(base_file):.1%} of the base model's")
assert len(header) - 1 == 4 * 7 * 2 and adapter_size < os.path.getsize(base_file) / 10

# %% [markdown]
# Loading is the reverse: a fresh base model, wrapped by `PeftModel.from_pretrained`, against the
# logits of the model that was saved. (Because the files and names are PEFT's, the
# same folder loads into `peft.PeftModel.from_pretrained` on top of the `transformers` model;
# `tests/test_lora_interop.py` checks that both directions give the same numbers.)
#
# **Predict:** the same logits exactly, or to rounding?

# %%
reloaded = PeftModel.from_pretrained(load_base(), "qa-adapter")
print(f"max |reloaded - saved| logits: {np.abs(logits(reloaded, batch) - unmerged).max():.1e}")
assert np.array_equal(logits(reloaded, batch), unmerged)

# %% [markdown]
# ## Merge and unload
#
# `merge_and_unload()` merges and then replaces every LoRA layer by its plain `Linear`: what comes back
# is the original `LlamaForCausalLM` class, which can be saved and served with no LoRA code at all.
# Here on a second copy, loaded from the adapter file:
#
# **Predict:** how many parameters will the unloaded model have, and is it faster than the model with the adapter?

# %%
plain = PeftModel.from_pretrained(load_base(), "qa-adapter").merge_and_unload()
print(type(plain).__name__, f"{sum(p.numel() for p in plain.parameters()):,d} parameters",
      "| LoRA modules left:", sum("lora" in n for n, _ in plain.named_parameters()))
print(f"max |merged model - adapter model| logits: {np.abs(logits(plain, batch) - unmerged).max():.2e}")
assert type(plain) is type(load_base()) and sum(p.numel() for p in plain.parameters()) == 837_120
assert np.abs(logits(plain, batch) - unmerged).max() < 1e-3

def forward_seconds(m, repeats=20):
    """The least CPU time of ``repeats`` forwards: ``time.process_time`` counts this process only, and the
    fastest run is the least disturbed by whatever else the machine is doing."""
    logits(m, batch)
    times = []
    for _ in range(repeats):
        start = time.process_time()
        logits(m, batch)
        times.append(time.process_time() - start)
    return min(times)

print(f"forward of 4 prompts (CPU time): with adapter {forward_seconds(model) * 1e3:.1f} ms, merged "
      f"{forward_seconds(plain) * 1e3:.1f} ms, both on {ml.parallel.machine_description()}")

def forward_cost(m):
    """(ops run, FLOPs) of one forward: unlike a time, the same on every machine."""
    with ml.profile() as prof:
        logits(m, batch)
    return sum(row.calls for (_, direction), row in prof.rows.items() if direction == "forward"), prof.flops()

(ops_adapter, flops_adapter), (ops_merged, flops_merged) = forward_cost(model), forward_cost(plain)
print(f"ops per forward: with adapter {ops_adapter}, merged {ops_merged}; "
      f"FLOPs: {flops_adapter / flops_merged - 1:+.0%} with the adapter (a 4096-wide layer at r = 8: {2 * 8 / 4096:+.1%})")
assert ops_adapter == ops_merged and 1.05 < flops_adapter / flops_merged < 1.15

# %% [markdown]
# The same number of ops runs either way -- each LoRA layer is one fused op -- but on this small model
# the adapter adds 9% to the FLOPs (`2r / d` is large at width 128), and inside each fused op a few
# more small NumPy calls, each with its fixed cost: the time with the adapter is usually the larger
# one, though single timings on a shared machine vary. On a 4096-wide layer at r = 8 the extra
# arithmetic is 0.4% (printed above; notebook 4), and the fused kernel (notebook 5) hides most of the rest.

# %% [markdown]
# ## Several adapters on one base model
#
# A second adapter, for a task of a different kind: `reverse` asks the model to say a list of words
# backwards. `qa` taught a new *format* for knowledge the model had; `reverse` is a new *operation*,
# and it takes far longer to learn: after 100 steps -- more than twice what teaches `qa` -- the adapter
# reverses almost no unseen list; reversing most of them takes hundreds of steps (the log below has the
# accuracy every 100 steps, and the cell checks these claims). That is longer than all the rest of this notebook, so the adapter was trained once by
# `notebooks/assets/train_reverse_adapter.py` (the same `get_peft_model` + `train` as here: r = 8,
# all-linear, lr 3e-3, 600 steps) and ships with the notebooks -- 320 kB, the point of adapter files.
# Its training log records its accuracy; we load it and check that claim ourselves before using it.
#
# **Predict:** what accuracy will the base model alone reach on `reverse`?

# %%
reverse_dir = find_asset("reverse-adapter")
shutil.copytree(reverse_dir, f"{SECOND_TASK}-adapter", dirs_exist_ok=True)
log = json.loads((reverse_dir / "train_log.json").read_text())
print(f"trained with: {log['command']}  ({log['steps']} steps, lr {log['lr']})")   # (its seconds: on a machine it does not name)
print("eval accuracy while training, by step:", log["eval_accuracy_by_step"])

reverse_model = PeftModel.from_pretrained(load_base(), f"{SECOND_TASK}-adapter")
measured = data.evaluate(reverse_model, tok, SECOND_TASK, n=log["eval_examples"])
print(f"\nrecorded accuracy {log['eval_accuracy_final']:.0%}; measured now on the same "
      f"{log['eval_examples']} unseen lists: {measured.accuracy:.0%}")
assert abs(measured.accuracy - log["eval_accuracy_final"]) <= 0.02, "the shipped adapter does not match its log"
print("the adapter's answers, e.g.:")
for prompt, target, output in measured.samples[:3]:
    print(f"  {prompt!r} -> {output!r}   (expected {target!r})")
base_alone = data.evaluate(load_base(), tok, SECOND_TASK, n=20).accuracy
print(f"base model alone: {base_alone:.0%} of 20")
by_step = {int(step): acc for step, acc in log["eval_accuracy_by_step"].items()}
assert by_step[100] < 0.1 and by_step[300] > 0.5 and base_alone == 0   # hundreds of steps, from nothing
shipped_bytes = os.path.getsize(reverse_dir / "adapter_model.safetensors")
print(f"the shipped adapter file: {shipped_bytes / 1e3:.0f} kB")
assert round(shipped_bytes / 1e3, -1) == 320

# %% [markdown]
# Now both adapters *next to* each other on one base model: one copy of the base weights, two small
# adapters, and `set_adapter` switches which one the layers use.
#
# **Predict:** what does the `qa` adapter answer to a `reverse` prompt, and the reverse adapter to a question?

# %%
server = PeftModel.from_pretrained(load_base(), "qa-adapter", adapter_name="qa")
server.load_adapter(f"{SECOND_TASK}-adapter", adapter_name=SECOND_TASK)
print(f"second task {SECOND_TASK!r}: {data.get_task(SECOND_TASK).description}")
print("adapters:", sorted(server.peft_config), "| active:", server.active_adapter)

qa_prompt = data.get_task("qa").eval[0].prompt
second_prompt = data.get_task(SECOND_TASK).eval[0].prompt

def complete(model, prompt, n=20, **kwargs):
    ids = tok.encode(prompt)
    return tok.decode(model.generate([ids], max_new_tokens=n, **kwargs).numpy()[0][len(ids):], skip_special_tokens=True)

for adapter in ("qa", SECOND_TASK):
    server.set_adapter(adapter)
    print(f"adapter {adapter!r:<8} {qa_prompt!r} -> {complete(server, qa_prompt)!r}")
    print(f"{'':<17}{second_prompt!r} -> {complete(server, second_prompt)!r}")
with server.disable_adapter():
    print(f"no adapter       {qa_prompt!r} -> {complete(server, qa_prompt)!r}")

# %% [markdown]
# Each adapter turns the same base model into a different specialist -- and each is useless at the
# other's task -- while disabling both gives the base model's own continuation.
#
# The memory argument of serving: one base model plus N adapters instead of N fine-tuned models. The
# lesson's numbers ("14 GB base, 50 MB per adapter, 10 adapters: 140 GB vs 14.5 GB, 9.7x") are right as
# arithmetic (computed below); here are exact adapter sizes for Llama-2-7B, from `memory.estimate`, with the adapters
# stored in 16 bits like the base. (PEFT's `get_peft_model` keeps a 16-bit model's adapters in float32
# while training -- `autocast_adapter_dtype=True`, minilora's default too -- so a checkpoint saved as it
# trained is twice these sizes; casting it to 16 bits for serving gives these.)
#
# **Predict:** ten all-seven r = 16 adapters on one bfloat16 base: how many GB, against ten full models?

# %%
targets = {"q, v r=8": (["q_proj", "v_proj"], 8),
           "q, k, v, o r=16": (["q_proj", "k_proj", "v_proj", "o_proj"], 16),
           "all seven r=16": ("all-linear", 16)}
lesson = {"base GB": 14, "adapter GB": 0.050, "adapters": 10}   # the lesson's numbers
separate, shared = lesson["adapters"] * lesson["base GB"], lesson["base GB"] + lesson["adapters"] * lesson["adapter GB"]
print(f"the lesson's arithmetic: {separate} GB vs {shared} GB, {separate / shared:.1f}x")
assert (separate, shared, round(separate / shared, 1)) == (140, 14.5, 9.7)
base_7b = memory.estimate("llama-2-7b", dtype="bfloat16")
print(f"Llama-2-7B in bfloat16: {memory.format_bytes(base_7b.weight_bytes)}")
n_tasks = np.arange(1, 101)
fig, ax = plt.subplots(figsize=(6.5, 3.6))
ax.plot(n_tasks, n_tasks * base_7b.weight_bytes / 1e9, "k--", label="one fine-tuned model per task")
for label, (modules, r) in targets.items():
    adapter_bytes = memory.estimate("llama-2-7b", LoraConfig(r=r, target_modules=modules)).trainable_params * 2
    print(f"{label:<16} adapter {memory.format_bytes(adapter_bytes):>9}; 10 adapters on one base: "
          f"{memory.format_bytes(base_7b.weight_bytes + 10 * adapter_bytes):>8} vs 10 models "
          f"{memory.format_bytes(10 * base_7b.weight_bytes)}")
    ax.plot(n_tasks, (base_7b.weight_bytes + n_tasks * adapter_bytes) / 1e9, label=f"one base + adapters ({label})")
ax.set(xscale="log", yscale="log", xlabel="number of tasks served", ylabel="weights in memory (GB)",
       title="Llama-2-7B (bfloat16): serving many fine-tunes")
ax.legend(fontsize=8)
plt.show()

# %% [markdown]
# ## A different adapter for every request in a batch
#
# `set_adapter` switches the whole model. A server with many users wants more: one batch, and each row
# of it with its own adapter (or none). `model(ids, adapter_names=[...])` is PEFT's API for this (the
# name `"__base__"` means "no adapter"), but not PEFT's computation:
#
# * PEFT's mixed-batch forward loops over the adapters present, selects each adapter's rows of the
#   batch, and runs that adapter's LoRA branch on its slice -- one small product per adapter.
# * minilora runs the base product once for the whole batch, gathers one `(A, B)` pair per row from a
#   stack of all adapters (padded to the largest rank, a zero pair for `"__base__"`), and adds every
#   row's LoRA term with one batched matrix product, with no loop over adapters. That is the idea of
#   **BGMV** (batched gather matrix-vector), one of the two kernels of **Punica** (Chen et al., 2023),
#   whose other kernel, **SGMV**, handles rows grouped into segments that share an adapter (prefill).
#   **S-LoRA** (Sheng et al., 2023) serves thousands of adapters with a unified paging of adapter
#   weights and KV cache, and its own kernels for adapters of different ranks, **MBGMV/MBGMM**.
#
# The check that matters: each row must get exactly what a model with only that adapter active computes.
#
# **Predict:** bit for bit, or only to rounding?

# %%
prompts = [qa_prompt, second_prompt, qa_prompt, second_prompt]
names = ["qa", SECOND_TASK, "__base__", "qa"]
enc = tok(prompts, padding=True, padding_side="left", return_tensors="np")
with ml.no_grad():
    mixed = server(enc["input_ids"], attention_mask=enc["attention_mask"], adapter_names=names).logits.numpy()

worst = 0.0
for row, name in enumerate(names):
    ids, mask = enc["input_ids"][row:row + 1], enc["attention_mask"][row:row + 1]
    if name == "__base__":
        with server.disable_adapter(), ml.no_grad():
            alone = server(ids, attention_mask=mask).logits.numpy()
    else:
        server.set_adapter(name)
        with ml.no_grad():
            alone = server(ids, attention_mask=mask).logits.numpy()
    keep = mask[0] == 1  # padded positions are not compared
    worst = max(worst, float(np.abs(mixed[row, keep] - alone[0, keep]).max()))
print(f"per-row adapters vs one adapter at a time: max difference {worst:.1e}")
assert worst == 0.0   # identical, as the summary says

# %% [markdown]
# And generation, one batch, four different "models".
#
# **Predict:** what does row 4 (`qa` asked to reverse a list) generate?

# %%
out = server.generate(enc["input_ids"], attention_mask=enc["attention_mask"], max_new_tokens=20,
                      adapter_names=names).numpy()
width = enc["input_ids"].shape[1]
for name, prompt, row in zip(names, prompts, out):
    print(f"{name:<9} {prompt!r:<46} -> {tok.decode(row[width:], skip_special_tokens=True)!r}")

# %% [markdown]
# ## A server's view: continuous batching
#
# A real server does not get its requests as one tidy batch: they arrive one by one, ask for
# different lengths, and finish at different times. `minilora/serve/engine.py`'s `Engine` (the loop
# behind `minilora serve`) keeps one running batch: between two decode steps, finished requests leave
# and waiting ones join (each prefilled alone first), up to `max_batch_size` rows; every step is one
# forward pass for all rows, each row with its own adapter (the `adapter_names=` path above). That is
# **continuous batching** (Orca, Yu et al., 2022; vLLM). `Engine.steps` records which adapter each row
# of every step used.
#
# Six requests for our two adapters and the base, greedy (`temperature=0`), different lengths,
# with room for three rows at a time. They are queued before the engine starts, so the run is the
# same every time.
#
# **Predict first.** Requests are admitted in order; the first three ask for 12, 4 and 8 tokens. At
# which decode step does the fourth request join the batch?

# %%
prediction = None   # a step number (the first decode step is step 0)

# %%
from minilora.serve import Engine, Request
from minilora.serve.engine import wait_until

jobs = [("qa", qa_prompt, 12), (SECOND_TASK, second_prompt, 4), (None, qa_prompt, 8),
        ("qa", data.get_task("qa").eval[1].prompt, 6), (SECOND_TASK, data.get_task(SECOND_TASK).eval[1].prompt, 10),
        (None, second_prompt, 3)]
engine = Engine(server, tok, max_batch_size=3, max_queue=8)
# ignore_eos=True (vLLM's option): every request runs to its max_tokens, so lengths (and the schedule) are fixed
requests = [engine.submit(Request(tok.encode(prompt), adapter, max_tokens=n, temperature=0, ignore_eos=True))
            for adapter, prompt, n in jobs]
engine.start()
try:
    assert wait_until(lambda: all(r.finished for r in requests), timeout=60), "the engine did not finish"
finally:
    engine.shutdown()

label = {"qa": "qa", SECOND_TASK: SECOND_TASK[:3], None: "base"}
for step, adapters in engine.steps:
    print(f"step {step:>2}: " + " ".join(f"{label[a]:<5}" for a in adapters))
joined = next(step for step, adapters in engine.steps if adapters != engine.steps[0][1])  # first change
print(f"\nthe batch first changes at step {joined}: the 4-token request left, the fourth (qa) joined"
      + (f"; you predicted {prediction}" if prediction is not None else ""))
assert joined == 3 and engine.steps[joined][1][-1] == "qa"
assert [len(adapters) for _, adapters in list(engine.steps)[:10]] == [3] * 10   # no empty row while requests wait

# %% [markdown]
# The request for 4 tokens finishes first; its slot goes at once to the next one in the queue, and
# the batch never runs with an empty row while requests wait. (The prefill samples a request's first
# token, so a request for `n` tokens decodes for `n - 1` steps.) The picture of the same schedule,
# one column per step, one colour per adapter (when a row leaves, the rows below it move up: the batch
# stays dense, and a newcomer takes the last row):

# %%
colours = {"qa": 1, SECOND_TASK: 2, None: 3}
grid = np.zeros((engine.max_batch_size, len(engine.steps)))
for step, adapters in engine.steps:
    for row, adapter in enumerate(adapters):
        grid[row, step] = colours[adapter]
fig, ax = plt.subplots(figsize=(6.5, 1.8))
cmap = plt.matplotlib.colors.ListedColormap(["white", "tab:blue", "tab:orange", "tab:gray"])
ax.imshow(grid, cmap=cmap, vmin=0, vmax=3, aspect="auto")
ax.set(xlabel="decode step", ylabel="batch row", yticks=range(engine.max_batch_size),
       title="batch composition: blue qa, orange reverse, grey base")
plt.show()

# %% [markdown]
# And the check that makes this a server rather than a demo: each request against the same request
# generated alone, with only its adapter (greedy decoding on both sides).
#
# **Predict:** will every request's tokens be exactly those it gets alone?

# %%
def generate_alone(request):
    """The same request, alone, greedy, never stopping early (eos_token_id=[]), as the engine ran it."""
    ids = [request.prompt_ids]
    out = server.generate(ids, max_new_tokens=request.max_tokens, eos_token_id=[])
    return out.numpy()[0][len(request.prompt_ids):].tolist()

for request in requests:
    if request.adapter is None:
        with server.disable_adapter():
            alone = generate_alone(request)
    else:
        server.set_adapter(request.adapter)
        alone = generate_alone(request)
    same = request.generated == alone
    print(f"{label[request.adapter]:<5} {request.max_tokens:>2} tokens  same as alone: {same}  "
          f"{tok.decode(request.generated, skip_special_tokens=True)!r}")
    assert same, "a batched request differs from the same request alone"

# %% [markdown]
# ## Summary
#
# * Merging adds `s B A` to `W0` once; outputs agree to float32 rounding, and `merge_and_unload()` returns
#   the plain model class.
# * An adapter file holds only `A` and `B` (PEFT's names and format), a small fraction of the model.
# * One base model can hold many adapters; `set_adapter` switches, `disable_adapter()` gives the base.
# * `adapter_names=[...]` gives every row of a batch its own adapter, with results identical to running
#   each adapter alone.
# * A continuous-batching engine lets requests join and leave the running batch between decode steps;
#   each request still gets, token for token, what it would get alone.
#
# ## Questions and small tasks
#
# 1. Merge the `qa` adapter, then call `set_adapter("reverse")` on a model that holds both. What must
#    happen to the merged weight first? Try it and read what minilora does.
# 2. The `reverse` adapter reaches its accuracy around step 400 and then plateaus. Look at the lists
#    it gets wrong (`measured.samples`, or `data.evaluate(..., samples=100)`): is there a pattern?
# 3. Per-row adapters pad every adapter to the largest rank. Estimate the wasted work when one
#    adapter has r = 64 and a hundred others r = 8. How does S-LoRA avoid it?
#
# ## What's next
#
# * Notebook 8: DoRA and VeRA, what a trained adapter's singular values say, and diagnosing bad runs.
# * minilora's own server: `minilora serve --adapter reverse=notebooks/assets/reverse-adapter` puts the
#   `Engine` above behind OpenAI-style HTTP routes (`minilora/serve/app.py`; the per-row kernel is
#   `kernels/bgmv.cu`; README, "Serve many adapters from one base").
# * Serving at scale: vLLM's multi-LoRA support (`enable_lora=True`, Punica-style kernels) and S-LoRA
#   batch thousands of adapters over one base model.
# * Merging several adapters into one model (task arithmetic, TIES) is PEFT's `add_weighted_adapter`.
