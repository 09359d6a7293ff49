# %% [markdown]
# # 1. Autograd: a Tensor, a graph, and `backward()`
#
# Fine-tuning is gradient descent, and LoRA is a statement about *which* gradients we bother to
# compute. So the whole project starts with the machine that computes gradients. minilora's is
# written in NumPy, its core in one file (`minilora/tensor.py`), and this notebook takes it apart:
#
# 1. a `Tensor` and what it remembers (and its random numbers, which are torch's),
# 2. the graph that arithmetic builds behind your back,
# 3. `backward()`: the chain rule, applied node by node in reverse,
# 4. broadcasting, the one rule every elementwise backward shares,
# 5. checking a backward pass against finite differences, and catching a wrong one,
# 6. frozen weights: the gradient that is never computed, which is where LoRA saves its memory.
#
# **Read beside it:** `minilora/tensor.py` (the engine), `minilora/ops/elementwise.py`,
# `minilora/ops/matmul.py`, `minilora/ops/reduce.py` (one class per op), `minilora/testing.py`
# (`grad_check`). **Exercises 1.1-1.7** (`notebooks/EXERCISES.md`) are the backward passes you meet here:
# the first `backward()` needs 1.1, 1.2 and 1.4, the table of gradient checks also 1.3, 1.5-1.7, the
# frozen-weight profile 1.5.
#
# **In a student copy** (`minilora exercises build DIR`, solutions replaced by stubs) this notebook runs
# until the first cell that calls an exercise not yet solved -- this chapter's or an earlier one's --
# and stops there with `NotImplementedError: Exercise N.M: <what to do>`. Solve it, check it with
# `minilora exercises check --only N.M`, restart the kernel and run again.

# %%
import time

import matplotlib.pyplot as plt
import numpy as np

import minilora as ml
from minilora.tensor import Function
from minilora.testing import GradCheckError, grad_check

ml.manual_seed(0)
np.set_printoptions(precision=4, suppress=True)

# %% [markdown]
# ## A Tensor
#
# A `Tensor` is an array plus three things: where it lives (`device`), whether we want its gradient
# (`requires_grad`), and -- if an op produced it -- a link to that op (`grad_fn`). The array itself is
# a plain NumPy array (`np.asarray(x)` or `x.numpy()`; the engine keeps it in `x._array`); on the `cuda`
# device it would be a CuPy array instead. As in PyTorch, `x.data` is itself a Tensor.
#
# **Predict:** `ml.tensor` of Python floats, as `torch.tensor`: which dtype does `x` get, and is it a
# leaf of the graph?

# %%
x = ml.tensor([[1.0, -2.0, 3.0]], requires_grad=True)
w = ml.randn(4, 3, requires_grad=True)
print(x)
print("dtype:", x.dtype, "| shape:", x.shape, "| device:", x.device.name, "| leaf:", x.is_leaf)
print("the raw array:", type(x.numpy()).__name__, x.numpy())

# %% [markdown]
# ## Random numbers: torch's, for the same seed
#
# `ml.randn(4, 3)` drew `w` from minilora's global random generator, which `ml.manual_seed(0)` seeded
# in the first cell. That generator is torch's CPU generator rebuilt on NumPy (`minilora/random.py`):
# the same Mersenne Twister engine and the same sampling code, so a seeded script draws the same
# numbers in both libraries -- a weight initialisation, a dropout mask, a sampled token.
# (`fork_rng` below, as torch's, puts the generator back afterwards, so the cells after this one draw
# what they would have drawn without it.)
#
# **Predict:** after `ml.manual_seed(0)` and `torch.manual_seed(0)`, do `ml.randn(3)` and
# `torch.randn(3)` give the same three numbers -- exactly, only to rounding, or not at all?

# %%
import importlib.util

with ml.random.fork_rng():
    ml.manual_seed(0)
    ours = ml.randn(3)
print("minilora:", ours)
if importlib.util.find_spec("torch") is None:
    print("torch is not installed here, so there is nothing to compare with (pip install torch, rerun this cell)")
else:
    import torch
    with torch.random.fork_rng():
        torch.manual_seed(0)
        theirs = torch.randn(3)
    print("torch:   ", theirs)
    print("exactly equal:", np.array_equal(ours.numpy(), theirs.numpy()))
    assert np.array_equal(ours.numpy(), theirs.numpy())

# %% [markdown]
# ## The graph
#
# Every operation on tensors that need gradients records one node: the op that ran, its inputs, and
# whatever the op saved to compute its backward later. Nothing else is stored -- there is no global
# "tape". The output tensor points at its node (`grad_fn`), the node points at its inputs, and so the
# graph is simply the set of nodes reachable from the loss.
#
# **Predict:** which nodes does `walk(loss)` print, and which node appears twice?

# %%
h = x @ w.T          # [1, 4]
a = h.relu()
loss = (a * a).sum()

def walk(t, depth=0, seen=None):
    """Print the graph below ``t``: one line per node, inputs indented."""
    seen = set() if seen is None else seen
    if t._ctx is None:
        print("  " * depth + f"leaf {tuple(t.shape)}  requires_grad={t.requires_grad}")
        return
    if id(t) in seen:
        print("  " * depth + f"{t.grad_fn.fn.__name__:<8} -> {tuple(t.shape)}  (the same node as above)")
        return
    print("  " * depth + f"{t.grad_fn.fn.__name__:<8} -> {tuple(t.shape)}")
    seen.add(id(t))
    for inp in t.grad_fn.inputs:
        if isinstance(inp, ml.Tensor):
            walk(inp, depth + 1, seen)

walk(loss)

# %% [markdown]
# `a * a` uses `a` twice, so the graph is not a tree: `a`'s node appears under both inputs of `Mul`.
# This is why backward must *add* the gradients arriving from every use of a tensor.
#
# ## Backward: the chain rule in reverse order
#
# `loss.backward()` visits the nodes from the loss back to the leaves. Each op's `backward(ctx, g)`
# receives the gradient of the loss with respect to its output, `g`, and returns the gradient with
# respect to each input -- the vector-Jacobian product. The engine adds these into the inputs and
# moves on. Which order? Any order in which a node comes after every node that uses it. minilora
# numbers nodes as they are created; an op always runs after the ops that produced its inputs, so
# "newest first" is such an order (`_topological_order` in `tensor.py`).
#
# Here the gradients are easy to derive by hand: with `h = x W^T`, `a = relu(h)` and
# `loss = sum(a^2)`, we get `d loss / d h = 2 a * [h > 0]`, then `d loss / d x = (2 a * [h > 0]) W`
# and `d loss / d W = (2 a * [h > 0])^T x`.
#
# **Predict:** will `backward()`'s `x.grad` equal the hand-derived one exactly, or only to rounding?

# %%
loss.backward()
dh = 2 * a.numpy() * (h.numpy() > 0)
print("x.grad from backward():", x.grad)
print("x.grad by hand:        ", dh @ w.numpy())
same_x = np.array_equal(x.grad.numpy(), dh @ w.numpy())
same_w = np.array_equal(w.grad.numpy(), dh.T @ x.numpy())
print("bit for bit equal to the hand-derived products: x.grad", same_x, "| W.grad", same_w)
assert same_x and same_w

# %% [markdown]
# Exactly, bit for bit: `backward()` runs the very float32 products written above (`dh W` and
# `dh^T x`), in the same order, so there is nothing to round differently.
#
# Two details of the engine matter later:
#
# * After `backward()` the graph is freed: every node drops what it saved. Activations saved for
#   backward are the other big consumer of training memory (notebook 3 measures them), so they go as
#   soon as they are used.
# * Gradients of leaves *accumulate* in `.grad`. That is what makes gradient accumulation over
#   micro-batches work, and why an optimizer step is followed by `zero_grad()`.
#
# **Predict:** what happens when we call `loss.backward()` a second time?

# %%
try:
    loss.backward()
except RuntimeError as err:
    print("RuntimeError:", err)

# %% [markdown]
# An error that says what happened: the arrays the first `backward()` freed are gone, and keeping them
# must be asked for (`retain_graph=True`, as in torch).
#
# ## Broadcasting has a backward too
#
# `x + b` with `x` of shape `[batch, features]` and a bias `b` of shape `[features]` works because
# NumPy *broadcasts* `b` along the batch axis. The same bias value reaches every row, so its
# gradient is the sum over the rows. In general: sum the incoming gradient over every axis that was
# added in front, and over every axis where the input had size 1 -- `unbroadcast` in
# `ops/elementwise.py` (exercise 1.1). Every elementwise backward ends with it.
#
# **Predict:** for the input shape `(3, 1)`, what are the gradient's shape and first value?

# %%
from minilora.ops import unbroadcast

g = np.arange(12.0).reshape(2, 3, 2)    # the gradient of an output of shape [2, 3, 2]
for shape in [(2, 3, 2), (3, 2), (3, 1), (1,), ()]:
    print(f"input shape {str(shape):<10} -> gradient\n{unbroadcast(g, shape)}\n")

# %% [markdown]
# ## Writing an op, and checking it
#
# An op is a `Function` subclass with a `forward` and a `backward` on raw arrays. Here is softplus,
# `log(1 + e^x)`, whose derivative is the sigmoid. And here is the same op with a classic slip in
# its backward: the derivative of `log(1 + e^x)` written as `1 / (1 + e^x)` (the chain rule's inner
# factor `e^x` forgotten).
#
# How do we know a backward is right? Compare it with **central differences**: nudge each input
# element by `+-eps` and measure `(f(x + eps) - f(x - eps)) / 2 eps`. `minilora.testing.grad_check`
# does exactly this for every element of every input (after projecting the output onto a random
# direction, so any output shape works) and, on failure, names the element and both values.
#
# **Predict:** the buggy backward returns `sigmoid(-x)` instead of `sigmoid(x)`. Where are the two
# equal, and so where would a check at a single point miss the bug?

# %%
class Softplus(Function):
    @staticmethod
    def forward(ctx, x):
        ctx.x = x
        return np.logaddexp(0, x)          # log(1 + e^x) without overflow

    @staticmethod
    def backward(ctx, g):
        return g / (1 + np.exp(-ctx.x))    # sigmoid(x)


class BuggySoftplus(Softplus):
    @staticmethod
    def backward(ctx, g):
        return g / (1 + np.exp(ctx.x))     # forgot the inner derivative: this is sigmoid(-x)


def softplus(x):
    return Softplus.apply(x)


def buggy_softplus(x):
    return BuggySoftplus.apply(x)


z = ml.randn(3, 4, dtype=ml.float64, requires_grad=True)
print(f"softplus: worst error {grad_check(softplus, z):.1e}")
try:
    grad_check(buggy_softplus, z)
except GradCheckError as err:
    print(err)
at_zero = ml.zeros(1, dtype=ml.float64, requires_grad=True)     # sigmoid(0) = sigmoid(-0) = 1/2
print(f"checked at x = 0 alone, the buggy backward passes: worst error {grad_check(buggy_softplus, at_zero):.1e}")

# %% [markdown]
# minilora's ops are checked this way in the test suite (for example `tests/test_lora_op.py`,
# `tests/test_exercises_autograd.py`). A few of them, straight from the library:
#
# **Predict:** in float64, how far apart do you expect analytic and numeric gradients to be for a
# correct op -- about 1e-3, 1e-6 or 1e-10?

# %%
A = ml.randn(3, 5, dtype=ml.float64, requires_grad=True)
B = ml.randn(5, 2, dtype=ml.float64, requires_grad=True)
v = ml.randn(2, 5, dtype=ml.float64, requires_grad=True)
bias = ml.randn(2, dtype=ml.float64, requires_grad=True)
checks = {
    "matmul": (lambda a, b: a @ b, A, B),
    "mul with broadcasting": (lambda a, b: a * b[0], A, v),
    "div": (lambda a, b: a / (b * b + 1)[0], A, v),
    "softmax": (lambda a: a.softmax(-1), A),
    "log_softmax": (lambda a: a.log_softmax(-1), A),
    "linear (x W^T + b)": (lambda a, w, b: ml.ops.linear(a, w, b), A, v, bias),
}
for name, (fn, *inputs) in checks.items():
    print(f"{name:<24} worst |analytic - numeric| = {grad_check(fn, *inputs):.2e}")

# %% [markdown]
# ### Why float64, and why `eps = 1e-6`?
#
# A finite difference has two errors pulling in opposite directions. The *truncation* error of the
# central difference shrinks like `eps^2`; the *rounding* error -- two nearly equal numbers subtracted,
# then divided by `eps` -- grows like `machine epsilon / eps`. The best `eps` balances them. In float32
# (machine epsilon about 1e-7) a small `eps` such as 1e-6 leaves an error of about 1e-2, and even the
# best `eps` (a few 1e-3, usable only on gently curved functions) reaches only about 1e-6 on the
# function below: too coarse to tell a right gradient from a slightly wrong one. In float64 the error
# at `eps = 1e-6` is about 1e-10. That is why `grad_check` refuses float32 inputs. The cell below
# measures all three numbers.
#
# **Predict:** on a log-log plot of error against `eps`, what shape does each curve have, and at about
# which `eps` is float64's lowest point?

# %%
def fd_error(dtype, eps):
    x0 = dtype(0.7)
    f = lambda x: np.tanh(x) * x                       # noqa: E731
    exact = np.tanh(0.7) + 0.7 * (1 - np.tanh(0.7) ** 2)
    numeric = (f(x0 + dtype(eps)) - f(x0 - dtype(eps))) / (dtype(2) * dtype(eps))
    return abs(float(numeric) - exact) + 1e-17

eps = np.logspace(-12, -1, 60)
fig, ax = plt.subplots(figsize=(6, 3.5))
for dtype in (np.float32, np.float64):
    ax.loglog(eps, [fd_error(dtype, e) for e in eps], label=dtype.__name__)
ax.axvline(1e-6, color="grey", ls="--", lw=1)
ax.text(1.5e-6, 1e-7, "grad_check's eps", color="grey")
ax.set(xlabel="eps", ylabel="|central difference - exact|",
       title="finite-difference error of d/dx [x tanh x] at x = 0.7")
ax.legend()
plt.show()

err32 = [fd_error(np.float32, e) for e in eps]
err64 = [fd_error(np.float64, e) for e in eps]
at_1e6 = {d.__name__: fd_error(d, 1e-6) for d in (np.float32, np.float64)}
print(f"error at eps=1e-6: float32 {at_1e6['float32']:.1e}, float64 {at_1e6['float64']:.1e}; "
      f"float32's best: {min(err32):.1e} at eps={eps[int(np.argmin(err32))]:.0e}, "
      f"float64's best: {min(err64):.1e} at eps={eps[int(np.argmin(err64))]:.0e}")
assert 1e-3 < at_1e6["float32"] < 1e-1 and at_1e6["float64"] < 1e-9
assert 1e-7 < eps[int(np.argmin(err64))] < 1e-4   # float64's balance point: near 1e-6, grad_check's eps
assert 1e-7 < min(err32) < 1e-5 and 1e-3 < eps[int(np.argmin(err32))] < 1e-1
try:
    grad_check(softplus, ml.randn(3, dtype=ml.float32, requires_grad=True))
except TypeError as err:
    print("float32 refused:", str(err)[:80], "...")

# %% [markdown]
# ## Frozen weights: the gradient that is never computed
#
# A linear layer `y = x W^T` has two gradients to offer in backward: `dX = dY W` (needed to keep the
# chain rule going to earlier layers) and `dW = dY^T X` (needed only to *train* `W`). Each is a matrix
# product as expensive as the forward. When `W` does not require a gradient, the engine tells the op
# through `ctx.needs_input_grad`, and `Linear.backward` skips the `dW` product entirely (exercise 1.5).
#
# This is the first half of LoRA's saving: the pretrained weights `W0` are frozen, so their gradient
# products never run and their gradients and optimizer moments never exist. The profiler shows it.
#
# **Predict first.** With `W` frozen, what fraction of the backward FLOPs of this layer remain?

# %%
prediction = None   # a fraction between 0 and 1

# %%
X = ml.randn(512, 1024)
W = ml.randn(1024, 1024, requires_grad=True)

def step(weight_trainable):
    W.requires_grad = weight_trainable
    W.grad = None
    X.requires_grad = True           # the input's gradient is always needed (earlier layers)
    with ml.profile() as prof:
        ml.ops.linear(X, W).sum().backward()
    return prof

backward_flops = {}
for trainable in (True, False):
    prof = step(trainable)
    backward_flops[trainable] = prof.flops("Linear", "backward")
    print(f"W trainable={trainable!s:<5}: backward GFLOP = {backward_flops[trainable] / 1e9:.2f}, "
          f"W.grad is {'filled' if W.grad is not None else 'None'}")
print(f"frozen / trainable: {backward_flops[False] / backward_flops[True]:.2f}"
      + ("" if prediction is None else f" | you predicted {prediction}"))
assert backward_flops[False] * 2 == backward_flops[True]   # dX stays, dW is skipped

# %% [markdown]
# Half of the backward work disappears, and with it the gradient array. The second half of LoRA's
# saving -- adding a small trainable piece next to the frozen weight -- is notebook 4. Notebook 2 puts
# these ops together into a transformer first.
#
# ## Summary
#
# * A tensor made by an op points at a node that holds the op, its inputs and what it saved.
# * `backward()` runs each node's vector-Jacobian product, newest node first, adding gradients
#   where a tensor is used twice, and frees the graph as it goes.
# * Broadcast inputs get their gradients summed back to their shape (`unbroadcast`).
# * `grad_check` compares a backward with central differences in float64 and names the first wrong element.
# * A frozen weight costs no gradient product, no gradient and no optimizer state.
#
# ## Questions and small tasks
#
# 1. Write `Tanh` as a `Function` (its derivative is `1 - tanh^2`, which `forward` can save) and check
#    it with `grad_check`. Then break it on purpose and read the error.
# 2. `a * a` uses `a` twice. What would `x.grad` be if the engine *overwrote* gradients instead of
#    adding them? Compute it by hand, then compare with `backward()`.
# 3. In the frozen-weight experiment, also freeze `X` (`X.requires_grad = False`). How many backward
#    FLOPs are left, and why is that never the case for a layer inside a network being fine-tuned?
#
# ## What's next
#
# * Notebook 2 builds a Llama from these ops; notebook 4 adds LoRA's trainable piece next to the frozen weight.
# * The same ideas at scale: PyTorch's autograd (`torch.autograd.Function` has the same static `forward(ctx, ...)` /
#   `backward(ctx, grad)` pair, called through `.apply`, on Tensors where minilora's ops take arrays),
#   and micrograd / needle / minitorch for other from-scratch engines.
