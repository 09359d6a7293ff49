"""Zero-size tensors everywhere, against torch (round 7).

Two parts. The SWEEP reuses the round-5/6 fuzzers' draws (test_fuzz_r6_api's signature families for
every torch-named function / method / F.* name, test_nn_fuzz_r5's layers and F.* families) and
empties each drawn case: one size found among its tensor inputs is made 0 in every input that has it
(so a batch, a feature width, a sequence, a channel count or a class count goes to 0 together in
the inputs that share it, and the call stays consistent), then it is compared with torch as those
fuzzers compare: values, dtypes, shapes, error types and the gradients of float64 inputs and
parameters. The EXPLICIT table names the cases the brief asks for one by one (normalisation with a
zero width, cross_entropy on (0, 0, 3), losses on an empty batch with each reduction, attention with
no keys / no head width, weights with a zero dimension, empty index tensors, Tensor reductions on
empty dims with and without dim= and keepdim=), each forward and backward; then LoRA / Llama /
generate. ``test_every_shared_name_meets_a_zero_size`` fails for a new F.* function or nn module
that neither part reaches (or SKIP names).
"""
import inspect

import numpy as np
import pytest

import minilora as ml
import test_fuzz_r5 as r5
import test_fuzz_r6_api as r6
import test_nn_fuzz_r5 as nn5
from test_fuzz_r5 import _thunk_outcome, difference

torch = pytest.importorskip("torch")

SEEDS = range(int(__import__("os").environ.get("MINILORA_ZERO_SEEDS", "6")))


# ----------------------------------------------------------------------------------------------------
# the sweep: the fuzzers' cases, emptied

def empty_one_size(inputs, rng):
    """Make one size found among ``inputs`` (In recipes) 0 wherever it occurs; None if none has a dim."""
    sizes = sorted({d for item in inputs for d in item.values.shape})
    if not sizes:
        return None
    size = sizes[int(rng.integers(len(sizes)))]
    for item in inputs:
        item.values = item.values[tuple(slice(0, 0) if d == size else slice(None) for d in item.values.shape)].copy()
    return size


def _emptied_api_call(name, seed):
    rng = r5._case_rng("zero." + name, seed)
    c = r6.FAMILIES[name](rng, name)
    return c if empty_one_size(c.inputs(), rng) is not None else None


def _emptied_nn_case(table, name, seed):
    rng = nn5._case_rng("zero." + name, seed)
    case = table[name](rng)
    values = list(case.args) + list(case.kwargs.values()) if case.functional else \
        list(case.inputs) + list(case.call_kwargs.values())
    return case if empty_one_size(nn5._tensors(values), rng) is not None else None


# Where torch refuses an empty input that minilora computes (or answers with memory it never wrote):
# LEFT_ALONE, each a torch kernel's own check or quirk, not a rule of the op
TORCH_QUIRKS = [
    "because the unspecified dimension size -1 can be any value",  # torch's own reshape(-1) inside MHA
    "Expected `attn_mask` shape to be", "expecting key weights shape",  # MHA's Python asserts (AssertionError)
    "setStorage: sizes",  # index_fill of an empty tensor at an index: torch's internal error (minilora: IndexError)
    "returned an invalid gradient at index 0",  # pixel_shuffle's backward of an empty batch
    "select(): index 0 out of range",  # conv_transpose with an empty kernel: torch's IndexError
    "size mismatch (got input: [",  # cross_entropy / nll_loss of an empty class dim: torch reshapes wrongly
    "a view of a leaf Variable that requires grad is being used in an in-place operation",  # instance_norm's
    # running stats (requiring grad) of an empty input: torch's own copy_ into them
    "can't be cast to the desired output type Bool",  # addmm / baddbmm of an empty bool product (r6's LEFT_ALONE)
]
# LEFT_ALONE here (test_fuzz_r5 / test_fuzz_r6_api list the same quirks for their own draws): an empty
# operand lets torch skip a check or a kernel minilora keeps -- addmv / addbmm of an empty product
# (torch's 0-d result, its int/bool cast error), clip_ / cumsum / cumprod(dtype=bool) / einsum of empty
# bools (torch's missing bool kernel is not reached), scatter_reduce with an empty index of another
# size; cholesky of an empty non-square batch (minilora.linalg refuses)
API_LEFT_ALONE = {"addmv", "addbmm", "cholesky", "clip", "cumsum", "cumprod", "scatter_reduce", "einsum"}
# Where torch's empty-input shortcut skips an argument check minilora makes first (an invalid dilation or
# output_padding, an empty kernel, an index into an empty dim), or minilora refuses on purpose (is_causal
# with a mask)
MINILORA_CHECKS_FIRST = ["dilation should be greater than zero", "output padding must be smaller",
                         "kernel size should be greater than zero",
                         "Explicit attn_mask should not be set when is_causal=True", "is out of bounds for dimension"]
# torch's sum / mean of margin losses over an empty batch reads memory it never wrote (6.9e-310...):
# their reduction='none' is compared in EXPLICIT; conv with no input channels: torch answers 0 output
# channels (minilora: the weight's out_channels of zeros plus the bias); GroupNorm with an empty
# spatial size: torch's parameter gradients are nan (its 1/0), minilora's zeros (nothing was normalised)
NN_LEFT_ALONE = {"MultiMarginLoss", "MultiLabelMarginLoss", "EmbeddingBag"}  # (EmbeddingBag: below)


def _nn_problem(case):
    if case.name.lower() in ("pixelunshuffle", "pixel_unshuffle"):  # torch returns an empty input as it is
        return None
    want = nn5.outcome(torch, case, grads=case.dtype == "float64")
    if "error" in want and any(q in want["message"] for q in TORCH_QUIRKS):
        return None
    got = nn5.outcome(ml, case, want.get("initial"), grads=case.dtype == "float64")
    if "error" in got and "result" in want and any(q in got["message"] for q in MINILORA_CHECKS_FIRST):
        return None
    if "error" not in want and "error" not in got and _torch_has_no_channels_out(case, want, got):
        return None
    problem = nn5.compare(got, want, case)
    if problem and "gradient of parameter weight" in problem and case.name == "GroupNorm":
        return None
    return problem


def _torch_has_no_channels_out(case, want, got):
    """A convolution of an input with no channels: torch's output has 0 channels, minilora's the
    weight's out_channels (the bias, or zeros): the shapes differ in that one dim only."""
    torch_shape, shape = want["result"][0][1], got["result"][0][1]
    differ = [t for t, m in zip(torch_shape, shape) if t != m]
    return case.name.lower().startswith("conv") and len(torch_shape) == len(shape) and differ == [0]


def test_the_sweep_empties_what_it_draws():
    """Every emptied case holds a tensor with a 0 in its shape, and the comparison sees the old bug:
    layer_norm of a zero width answered with NumPy's reshape ValueError where torch returns."""
    for name in ("sum", "matmul", "mm", "softmax"):
        calls = [c for c in (_emptied_api_call(name, seed) for seed in SEEDS) if c is not None]  # (0-d: None)
        assert calls and all(any(0 in i.values.shape for i in c.inputs()) for c in calls), name
    case = _emptied_nn_case(nn5.LAYERS, "LayerNorm", 0)
    assert any(0 in i.values.shape for i in nn5._tensors(case.inputs))
    want = _thunk_outcome(torch, EXPLICIT["F.layer_norm((2, 0), (0,))"])
    assert difference({"error": ValueError, "type": ValueError, "message": "ValueError: cannot reshape"}, want)


@pytest.mark.parametrize("name", sorted(set(r6.FAMILIES) - API_LEFT_ALONE))
def test_emptied_api_calls_against_torch(name):
    failures = []
    for seed in SEEDS:
        c = _emptied_api_call(name, seed)
        if c is None:
            continue
        problem = r5.check(c) if c.name not in r6.UNINITIALIZED else r6._check_uninitialized(c)
        if problem and not any(q in problem for q in TORCH_QUIRKS + MINILORA_CHECKS_FIRST):
            failures.append(f"seed {seed}: {c!r}\n    {problem}")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("table, name", [("LAYERS", n) for n in sorted(set(nn5.LAYERS) - NN_LEFT_ALONE)]
                         + [("FUNCTIONS", n) for n in sorted(nn5.FUNCTIONS)])
def test_emptied_layers_and_functions_against_torch(table, name):
    failures = []
    for seed in SEEDS:
        case = _emptied_nn_case(getattr(nn5, table), name, seed)
        if case is None:
            continue
        problem = _nn_problem(case)
        if problem:
            failures.append(f"seed {seed}: {case!r}\n    {problem}")
    assert not failures, "\n".join(failures)


# ----------------------------------------------------------------------------------------------------
# explicit cases: forward and backward

def grads(L, fn, *shapes, constant=()):
    """``fn(L, *leaves)`` on float64 leaves of ``shapes`` (1, 2, 3, ...); then backward of the outputs
    times fixed weights. The outputs and each leaf's gradient (``constant``: leaves without one)."""
    leaves = []
    for i, shape in enumerate(shapes):
        values = np.arange(1.0, 1 + int(np.prod(shape))).reshape(shape) / 4
        leaf = L.tensor(values.tolist(), dtype=L.float64).reshape(shape)
        leaves.append(leaf.requires_grad_(i not in constant))
    out = fn(L, *leaves)
    outs = list(out) if isinstance(out, (tuple, list)) else [out]
    total = None
    for o in outs:
        if isinstance(o, L.Tensor) and o.requires_grad:
            weight = (L.arange(o.numel(), dtype=L.float64) % 3 - 1).reshape(tuple(o.shape))
            total = (o * weight).sum() if total is None else total + (o * weight).sum()
    if total is not None:
        total.backward()
    return outs + [leaf.grad for leaf in leaves]


def _F(L):
    return L.nn.functional


def _long(L, *shape):
    return L.zeros(*shape, dtype=L.int64)


def _losses_on_an_empty_batch():
    """Every pointwise / pairwise loss on a (0, 3) batch, each reduction."""
    cases = {}
    two = ["l1_loss", "mse_loss", "smooth_l1_loss", "huber_loss", "soft_margin_loss", "binary_cross_entropy",
           "binary_cross_entropy_with_logits", "kl_div", "poisson_nll_loss", "hinge_embedding_loss",
           "multilabel_soft_margin_loss"]
    for reduction in ("none", "mean", "sum"):
        for name in two:
            cases[f"F.{name}((0, 3), reduction={reduction!r})"] = (
                lambda L, n=name, r=reduction: grads(L, lambda L, x, t: getattr(_F(L), n)(x, t, reduction=r),
                                                     (0, 3), (0, 3)))
        cases[f"F.kl_div(reduction='batchmean') of (0, 3), {reduction}"] = lambda L: grads(
            L, lambda L, x, t: _F(L).kl_div(x, t, reduction="batchmean"), (0, 3), (0, 3))
        for name in ("cross_entropy", "nll_loss") + (("multi_margin_loss",) if reduction == "none" else ()):
            cases[f"F.{name}((0, 3), <empty targets>, reduction={reduction!r})"] = (
                lambda L, n=name, r=reduction: grads(L, lambda L, x: getattr(_F(L), n)(x, _long(L, 0), reduction=r),
                                                     (0, 3)))
        cases[f"F.cross_entropy((0, 0, 3), <(0, 3) targets>, reduction={reduction!r})"] = (
            lambda L, r=reduction: grads(L, lambda L, x: _F(L).cross_entropy(x, _long(L, 0, 3), reduction=r),
                                         (0, 0, 3)))
        cases[f"F.cross_entropy((0, 3), <probabilities>, label_smoothing=0.1, reduction={reduction!r})"] = (
            lambda L, r=reduction: grads(L, lambda L, x, t: _F(L).cross_entropy(x, t, reduction=r, label_smoothing=0.1),
                                         (0, 3), (0, 3)))
        cases[f"F.cross_entropy((2, 0), <all ignored>, reduction={reduction!r})"] = (
            lambda L, r=reduction: grads(L, lambda L, x: _F(L).cross_entropy(x, L.tensor([-100, -100]), reduction=r),
                                         (2, 0)))
        cases[f"F.gaussian_nll_loss((0, 3)), {reduction}"] = lambda L, r=reduction: grads(
            L, lambda L, x, t, v: _F(L).gaussian_nll_loss(x, t, v, reduction=r), (0, 3), (0, 3), (0, 3))
        for name in ("margin_ranking_loss", "cosine_embedding_loss"):
            cases[f"F.{name} of an empty batch, {reduction}"] = (
                lambda L, n=name, r=reduction: grads(L, lambda L, a, b, t: getattr(_F(L), n)(a, b, t, reduction=r),
                                                     (0,) if n == "margin_ranking_loss" else (0, 3),
                                                     (0,) if n == "margin_ranking_loss" else (0, 3), (0,)))
        cases[f"F.triplet_margin_loss (0, 3), {reduction}"] = lambda L, r=reduction: grads(
            L, lambda L, a, p, n: _F(L).triplet_margin_loss(a, p, n, reduction=r), (0, 3), (0, 3), (0, 3))
        cases[f"F.triplet_margin_with_distance_loss (0, 3), {reduction}"] = lambda L, r=reduction: grads(
            L, lambda L, a, p, n: _F(L).triplet_margin_with_distance_loss(a, p, n, reduction=r), (0, 3), (0, 3), (0, 3))
    cases["F.multilabel_margin_loss((0, 3), reduction='none')"] = lambda L: grads(
        L, lambda L, x: _F(L).multilabel_margin_loss(x, _long(L, 0, 3), reduction="none"), (0, 3))
    cases["F.multilabel_margin_loss((0, 0)) (torch: no empty class dim)"] = lambda L: grads(
        L, lambda L, x: _F(L).multilabel_margin_loss(x, _long(L, 0, 0)), (0, 0))
    cases["F.multi_margin_loss((3, 0)) (torch: no empty class dim)"] = lambda L: grads(
        L, lambda L, x: _F(L).multi_margin_loss(x, _long(L, 3)), (3, 0))
    cases["nn.CrossEntropyLoss(label_smoothing=0.3) of (0, 0, 2), 'sum'"] = lambda L: grads(
        L, lambda L, x: L.nn.CrossEntropyLoss(reduction="sum", label_smoothing=0.3)(x, _long(L, 0, 2)), (0, 0, 2))
    cases["F.cross_entropy((3, 0), <(3, 0) probabilities>, label_smoothing=0.1, 'none')"] = lambda L: grads(
        L, lambda L, x, t: _F(L).cross_entropy(x, t, reduction="none", label_smoothing=0.1), (3, 0), (3, 0))
    for reduction in ("none", "mean", "sum"):
        cases[f"F.cross_entropy / nll_loss((2, 0), <ignored>, weight=<empty>, {reduction})"] = lambda L, r=reduction: [
            _F(L).cross_entropy(L.zeros(2, 0), L.tensor([0, 0]), L.zeros(0), ignore_index=0, reduction=r),
            _F(L).nll_loss(L.zeros(2, 0), L.tensor([0, 0]), L.zeros(0), ignore_index=0, reduction=r)]
    cases["F.cross_entropy((0,), <ignored 0-d target>, weight=<empty>, label_smoothing=0.3)"] = lambda L: [
        _F(L).cross_entropy(L.zeros(0), L.tensor(0), weight=L.zeros(0), ignore_index=0, label_smoothing=0.3,
                            reduction=r) for r in ("none", "mean", "sum")]
    cases["F.nll_loss((0, 3), weight=) (a constant weight)"] = lambda L: grads(
        L, lambda L, x, w: _F(L).nll_loss(x, _long(L, 0), w), (0, 3), (3,), constant=(1,))
    cases["nn.BCEWithLogitsLoss(pos_weight=) of (0, 3)"] = lambda L: grads(
        L, lambda L, x, t, p: L.nn.BCEWithLogitsLoss(pos_weight=p)(x, t), (0, 3), (0, 3), (3,), constant=(2,))
    cases["nn.TripletMarginWithDistanceLoss of (0, 3)"] = lambda L: grads(
        L, lambda L, a, p, n: L.nn.TripletMarginWithDistanceLoss()(a, p, n), (0, 3), (0, 3), (0, 3))
    return cases


EXPLICIT = {
    # normalisation with a zero width (the rows helper inferred -1 from a size of 0), or an empty batch
    "F.layer_norm((2, 0), (0,))": lambda L: grads(L, lambda L, x: _F(L).layer_norm(x, (0,)), (2, 0)),
    "F.layer_norm((2, 0), (0,), weight, bias)": lambda L: grads(
        L, lambda L, x, w, b: _F(L).layer_norm(x, (0,), w, b), (2, 0), (0,), (0,)),
    "F.layer_norm((3, 0, 2), (0, 2))": lambda L: grads(L, lambda L, x: _F(L).layer_norm(x, (0, 2)), (3, 0, 2)),
    "F.layer_norm((0, 3), (3,), weight, bias)": lambda L: grads(
        L, lambda L, x, w, b: _F(L).layer_norm(x, (3,), w, b), (0, 3), (3,), (3,)),
    "F.rms_norm((2, 0), (0,), weight)": lambda L: grads(L, lambda L, x, w: _F(L).rms_norm(x, (0,), w), (2, 0), (0,)),
    "F.rms_norm((0, 3), [3], weight, eps=1e-6)": lambda L: grads(
        L, lambda L, x, w: _F(L).rms_norm(x, [3], w, eps=1e-6), (0, 3), (3,)),
    "nn.LayerNorm(0)((2, 0))": lambda L: L.nn.LayerNorm(0)(L.zeros(2, 0)),
    "nn.RMSNorm(0)((2, 0))": lambda L: L.nn.RMSNorm(0)(L.zeros(2, 0)),
    "nn.LayerNorm(4, elementwise_affine=False)((0, 5, 4))": lambda L: L.nn.LayerNorm(4, elementwise_affine=False)(
        L.zeros(0, 5, 4)),
    "F.group_norm((0, 4, 3), 2)": lambda L: grads(L, lambda L, x: _F(L).group_norm(x, 2), (0, 4, 3)),
    "F.instance_norm((0, 4, 3))": lambda L: grads(L, lambda L, x: _F(L).instance_norm(x), (0, 4, 3)),
    "F.batch_norm((0, 3), training=True)": lambda L: grads(L, lambda L, x, w, b: _F(L).batch_norm(
        x, L.zeros(3, dtype=L.float64), L.ones(3, dtype=L.float64), w, b, training=True), (0, 3), (3,), (3,)),
    "F.batch_norm((0, 3)) in eval": lambda L: grads(L, lambda L, x: _F(L).batch_norm(
        x, L.zeros(3, dtype=L.float64), L.ones(3, dtype=L.float64)), (0, 3)),
    "nn.BatchNorm1d(3) on (0, 3): the running statistics stay, num_batches_tracked counts": lambda L: (
        lambda m: [m(L.zeros(0, 3)), m.running_mean, m.running_var, m.num_batches_tracked])(L.nn.BatchNorm1d(3)),
    "nn.InstanceNorm1d(3, track_running_stats=True) on (2, 3, 0) and (0, 3, 4)": lambda L: (
        lambda m: [m(L.zeros(2, 3, 0)), m.running_mean.clone(), m(L.zeros(0, 3, 4)), m.running_mean])(
        L.nn.InstanceNorm1d(3, track_running_stats=True)),
    "F.local_response_norm((0, 3, 4), 2)": lambda L: grads(L, lambda L, x: _F(L).local_response_norm(x, 2), (0, 3, 4)),
    "F.normalize((2, 0), dim=-1)": lambda L: grads(L, lambda L, x: _F(L).normalize(x, dim=-1), (2, 0)),
    # softmax family over an empty dim, or of an empty batch
    "F.softmax((2, 0), -1)": lambda L: grads(L, lambda L, x: _F(L).softmax(x, -1), (2, 0)),
    "F.log_softmax((0, 2), dim=0)": lambda L: grads(L, lambda L, x: _F(L).log_softmax(x, dim=0), (0, 2)),
    "F.softmin((0, 2), 1)": lambda L: grads(L, lambda L, x: _F(L).softmin(x, 1), (0, 2)),
    "F.glu((0, 4))": lambda L: grads(L, lambda L, x: _F(L).glu(x), (0, 4)),
    # linear / matmul with a zero dimension anywhere
    "F.linear((0, 3), (4, 3), (4,))": lambda L: grads(
        L, lambda L, x, w, b: _F(L).linear(x, w, b), (0, 3), (4, 3), (4,)),
    "F.linear((2, 0), (4, 0), (4,))": lambda L: grads(
        L, lambda L, x, w, b: _F(L).linear(x, w, b), (2, 0), (4, 0), (4,)),
    "F.linear((2, 3), (0, 3), (0,))": lambda L: grads(
        L, lambda L, x, w, b: _F(L).linear(x, w, b), (2, 3), (0, 3), (0,)),
    "nn.Linear(0, 3)((2, 0))": lambda L: L.nn.Linear(0, 3)(L.zeros(2, 0)).shape,
    "F.bilinear((0, 2), (0, 3), (4, 2, 3))": lambda L: grads(
        L, lambda L, a, b, w: _F(L).bilinear(a, b, w), (0, 2), (0, 3), (4, 2, 3)),
    "(2, 0) @ (0, 3)": lambda L: grads(L, lambda L, a, b: a @ b, (2, 0), (0, 3)),
    "torch.bmm((0, 2, 3), (0, 3, 4))": lambda L: grads(L, lambda L, a, b: L.bmm(a, b), (0, 2, 3), (0, 3, 4)),
    "F.prelu((0, 3), (3,))": lambda L: grads(L, lambda L, x, w: _F(L).prelu(x, w), (0, 3), (3,)),
    "F.prelu((2, 0, 4), <no slopes>) and nn.PReLU(0)": lambda L: grads(
        L, lambda L, x, w: [_F(L).prelu(x, w), L.nn.PReLU(0).double()(x)], (2, 0, 4), (0,)),
    # embeddings: empty index tensors, zero-width tables
    "F.embedding(<empty ids>, (5, 3))": lambda L: grads(L, lambda L, w: _F(L).embedding(_long(L, 0), w), (5, 3)),
    "F.embedding(<(2, 0) ids>, (5, 3))": lambda L: grads(L, lambda L, w: _F(L).embedding(_long(L, 2, 0), w), (5, 3)),
    "F.embedding([[1, 2]], (5, 0))": lambda L: grads(L, lambda L, w: _F(L).embedding(L.tensor([[1, 2]]), w), (5, 0)),
    "nn.Embedding(0, 3)(<(2, 0) ids>)": lambda L: L.nn.Embedding(0, 3)(_long(L, 2, 0)),
    "F.embedding([[1, 2]], (0, 3)) (torch: index_select's RuntimeError), and with max_norm (an IndexError)": lambda L: [
        _thunk_outcome(L, lambda L: _F(L).embedding(L.tensor([[1, 2]]), L.zeros(0, 3)))["error"],
        _thunk_outcome(L, lambda L: _F(L).embedding(L.tensor([[1, 2]]), L.zeros(0, 3), max_norm=1.0))["error"]],
    "F.embedding_bag(<empty ids>, (5, 3), <empty offsets>)": lambda L: grads(
        L, lambda L, w: _F(L).embedding_bag(_long(L, 0), w, _long(L, 0)), (5, 3)),
    "F.embedding_bag(<(0, 2) ids>, (5, 3), mode='max')": lambda L: grads(
        L, lambda L, w: _F(L).embedding_bag(_long(L, 0, 2), w, mode="max"), (5, 3)),
    "F.one_hot(<empty>, 3)": lambda L: _F(L).one_hot(_long(L, 0), 3),
    "F.one_hot(<empty>) (no classes to infer: torch's error)": lambda L: _F(L).one_hot(_long(L, 0)),
    # attention: no keys, no queries, no head width, no batch
    "F.scaled_dot_product_attention(E=0)": lambda L: grads(
        L, lambda L, q, k, v: _F(L).scaled_dot_product_attention(q, k, v), (1, 2, 3, 0), (1, 2, 4, 0), (1, 2, 4, 5)),
    "F.scaled_dot_product_attention(E=0, grouped heads, dropout_p=0.0)": lambda L: grads(
        L, lambda L, q, k, v: _F(L).scaled_dot_product_attention(q, k, v, enable_gqa=True),
        (1, 4, 3, 0), (1, 2, 4, 0), (1, 2, 4, 5)),
    "F.scaled_dot_product_attention(S=0)": lambda L: grads(
        L, lambda L, q, k, v: _F(L).scaled_dot_product_attention(q, k, v), (1, 2, 3, 4), (1, 2, 0, 4), (1, 2, 0, 5)),
    "F.scaled_dot_product_attention(L=0, is_causal=True)": lambda L: grads(
        L, lambda L, q, k, v: _F(L).scaled_dot_product_attention(q, k, v, is_causal=True),
        (1, 2, 0, 4), (1, 2, 3, 4), (1, 2, 3, 5)),
    "F.scaled_dot_product_attention(B=0) of 5-D inputs": lambda L: grads(
        L, lambda L, q, k, v: _F(L).scaled_dot_product_attention(q, k, v), (0, 2, 2, 3, 4), (0, 2, 2, 3, 4),
        (0, 2, 2, 3, 5)),
    "nn.MultiheadAttention(4, 2) on an empty batch": lambda L: (lambda m: m(*(L.zeros(3, 0, 4),) * 3))(
        L.nn.MultiheadAttention(4, 2)),
    # convolution, pooling, resampling of an empty batch
    "F.conv1d((0, 2, 5), (3, 2, 2))": lambda L: grads(L, lambda L, x, w: _F(L).conv1d(x, w), (0, 2, 5), (3, 2, 2)),
    "F.conv2d((0, 2, 5, 5), (4, 1, 2, 2), bias, padding=1, groups=2)": lambda L: grads(
        L, lambda L, x, w, b: _F(L).conv2d(x, w, b, padding=1, groups=2), (0, 2, 5, 5), (4, 1, 2, 2), (4,)),
    "F.conv_transpose1d((0, 2, 3), (2, 3, 2), stride=2)": lambda L: grads(
        L, lambda L, x, w: _F(L).conv_transpose1d(x, w, stride=2), (0, 2, 3), (2, 3, 2)),
    "F.conv_transpose2d((0, 2, 5, 5), (2, 3, 2, 2))": lambda L: grads(
        L, lambda L, x, w: _F(L).conv_transpose2d(x, w), (0, 2, 5, 5), (2, 3, 2, 2)),
    "F.conv_transpose2d((0, 4, 3, 3), (4, 1, 2, 2), groups=2)": lambda L: grads(
        L, lambda L, x, w: _F(L).conv_transpose2d(x, w, groups=2), (0, 4, 3, 3), (4, 1, 2, 2)),
    "F.max_pool2d((0, 2, 4, 4), 2)": lambda L: grads(L, lambda L, x: _F(L).max_pool2d(x, 2), (0, 2, 4, 4)),
    "F.max_pool1d((0, 2, 4), 2, return_indices=True)": lambda L: grads(
        L, lambda L, x: _F(L).max_pool1d(x, 2, return_indices=True), (0, 2, 4)),
    "F.avg_pool2d((0, 2, 4, 4), 2)": lambda L: grads(L, lambda L, x: _F(L).avg_pool2d(x, 2), (0, 2, 4, 4)),
    "F.lp_pool1d((0, 3, 4), 2, 2)": lambda L: grads(L, lambda L, x: _F(L).lp_pool1d(x, 2, 2), (0, 3, 4)),
    "F.adaptive_avg_pool2d((0, 2, 4, 4), 2)": lambda L: grads(
        L, lambda L, x: _F(L).adaptive_avg_pool2d(x, 2), (0, 2, 4, 4)),
    "F.adaptive_max_pool1d((0, 2, 4), 2)": lambda L: grads(L, lambda L, x: _F(L).adaptive_max_pool1d(x, 2), (0, 2, 4)),
    "F.adaptive_max_pool2d((0, 2, 4, 4), (2, 1), return_indices=True)": lambda L: grads(
        L, lambda L, x: _F(L).adaptive_max_pool2d(x, (2, 1), return_indices=True), (0, 2, 4, 4)),
    "F.adaptive_avg_pool2d((2, 3, 1, 0), 1) (torch's mean: nan)": lambda L: grads(
        L, lambda L, x: _F(L).adaptive_avg_pool2d(x, 1), (2, 3, 1, 0)),
    "F.adaptive_avg_pool2d((2, 0, 3, 3), 2) (no channels)": lambda L: _F(L).adaptive_avg_pool2d(L.zeros(2, 0, 3, 3), 2),
    "F.adaptive_max_pool1d((2, 0, 3), 2) (torch: no empty channels for the max)": lambda L: _F(L).adaptive_max_pool1d(
        L.zeros(2, 0, 3), 2),
    "F.lp_pool2d((0, 2, 4, 4), 2, 2)": lambda L: grads(L, lambda L, x: _F(L).lp_pool2d(x, 2, 2), (0, 2, 4, 4)),
    "F.conv1d((1, 1, 4), (1, 1, 0)) (torch: no empty kernel)": lambda L: _F(L).conv1d(
        L.zeros(1, 1, 4), L.zeros(1, 1, 0)),
    "F.conv2d((1, 2, 0, 3), (3, 2, 1, 1), padding=1) (torch: no empty image of a real batch)": lambda L: _F(L).conv2d(
        L.zeros(1, 2, 0, 3), L.zeros(3, 2, 1, 1), padding=1),
    "nn.ConvTranspose2d(2, 1, (4, 2), 2, 1, 1, dilation=2) of (0, 2, 0, 4)": lambda L: L.nn.ConvTranspose2d(
        2, 1, (4, 2), 2, 1, 1, dilation=2)(L.zeros(0, 2, 0, 4)).shape,
    "F.max_unpool1d((0, 2, 3), <indices>, 2)": lambda L: _F(L).max_unpool1d(L.zeros(0, 2, 3), _long(L, 0, 2, 3), 2),
    "F.max_unpool2d((0, 2, 1, 1), <indices>, 2)": lambda L: _F(L).max_unpool2d(
        L.zeros(0, 2, 1, 1), _long(L, 0, 2, 1, 1), 2),
    "F.max_unpool1d((2, 0, 3), <indices>, 2) (torch: no empty channels)": lambda L: _F(L).max_unpool1d(
        L.zeros(2, 0, 3), _long(L, 2, 0, 3), 2),
    "F.interpolate((2, 0, 3), scale_factor=2) / 'area' (torch: no empty channels but for 'area')": lambda L: [
        _F(L).interpolate(L.zeros(2, 0, 3), scale_factor=2, mode="area"),
        _F(L).interpolate(L.zeros(2, 0, 3), scale_factor=2)],
    "F.interpolate(mode='area') of an empty image to 1 (a nan mean) and to 0": lambda L: [
        grads(L, lambda L, x: _F(L).interpolate(x, size=1, mode="area"), (2, 2, 0)),
        _F(L).interpolate(L.zeros(1, 2, 3, 3), size=(0, 2), mode="area")],
    "F.interpolate(mode='area') of an empty image to 2 (torch's refusal)": lambda L: _F(L).interpolate(
        L.zeros(2, 2, 0), size=2, mode="area"),
    "F.pad((1, 0, 3), (1, 1), 'reflect') (torch: no empty channels)": lambda L: _F(L).pad(
        L.zeros(1, 0, 3), (1, 1), mode="reflect"),
    "F.pad((0, 1, 3, 3), (1, 1, 1, 1), 'replicate') and 'circular' of (2, 0, 3)": lambda L: [
        _F(L).pad(L.zeros(0, 1, 3, 3), (1, 1, 1, 1), mode="replicate"),
        _F(L).pad(L.zeros(2, 0, 3), (1, 1), mode="circular")],
    "F.pad((0,), (-1, 1)) (torch crops first: narrow's error)": lambda L: _F(L).pad(L.zeros(0), (-1, 1)),
    "F.interpolate((0, 2, 3), scale_factor=2)": lambda L: grads(
        L, lambda L, x: _F(L).interpolate(x, scale_factor=2), (0, 2, 3)),
    "F.interpolate((0, 2, 3, 3), scale_factor=2, mode='bilinear')": lambda L: grads(
        L, lambda L, x: _F(L).interpolate(x, scale_factor=2, mode="bilinear"), (0, 2, 3, 3)),
    "F.upsample / upsample_nearest / upsample_bilinear of (0, 2, 3, 3)": lambda L: grads(
        L, lambda L, x: [_F(L).upsample(x, scale_factor=2), _F(L).upsample_nearest(x, scale_factor=2),
                         _F(L).upsample_bilinear(x, scale_factor=2)], (0, 2, 3, 3)),
    "nn.UpsamplingNearest2d / UpsamplingBilinear2d(scale_factor=2) of (0, 1, 2, 2)": lambda L: [
        L.nn.UpsamplingNearest2d(scale_factor=2)(L.zeros(0, 1, 2, 2)),
        L.nn.UpsamplingBilinear2d(scale_factor=2)(L.zeros(0, 1, 2, 2))],
    "F.unfold((0, 2, 3, 3), 2)": lambda L: grads(L, lambda L, x: _F(L).unfold(x, 2), (0, 2, 3, 3)),
    "F.fold((0, 8, 4), (3, 3), 2)": lambda L: grads(L, lambda L, x: _F(L).fold(x, (3, 3), 2), (0, 8, 4)),
    "F.pixel_shuffle of an empty batch": lambda L: _F(L).pixel_shuffle(L.zeros(0, 4, 2, 2), 2),
    "F.pad((0, 3), (1, 1))": lambda L: grads(L, lambda L, x: _F(L).pad(x, (1, 1)), (0, 3)),
    "nn.*Pad1d / *Pad2d of an empty batch": lambda L: [
        L.nn.ConstantPad1d(1, 2.0)(L.zeros(0, 2, 3)), L.nn.ZeroPad1d(1)(L.zeros(0, 2, 3)),
        L.nn.ReflectionPad1d(1)(L.zeros(0, 2, 3)), L.nn.ReplicationPad1d(1)(L.zeros(0, 2, 3)),
        L.nn.CircularPad1d(1)(L.zeros(0, 2, 3)), L.nn.ConstantPad2d(1, 2.0)(L.zeros(0, 2, 3, 3)),
        L.nn.ZeroPad2d(1)(L.zeros(0, 2, 3, 3)), L.nn.ReflectionPad2d(1)(L.zeros(0, 2, 3, 3)),
        L.nn.ReplicationPad2d(1)(L.zeros(0, 2, 3, 3)), L.nn.CircularPad2d(1)(L.zeros(0, 2, 3, 3))],
    "F.cosine_similarity / pairwise_distance of empty batches and widths": lambda L: grads(
        L, lambda L, a, b, c, d: [_F(L).cosine_similarity(a, b), _F(L).pairwise_distance(c, d)],
        (0, 3), (0, 3), (2, 0), (2, 0)),
    # dropout and friends of an empty input: nothing random left
    "F.dropout family of an empty input": lambda L: [
        _F(L).dropout(L.zeros(0, 3)), _F(L).alpha_dropout(L.zeros(0, 3), training=True),
        _F(L).feature_alpha_dropout(L.zeros(0, 3, 2), training=True), _F(L).dropout1d(L.zeros(0, 3, 2)),
        _F(L).dropout2d(L.zeros(0, 3, 2, 2)), _F(L).dropout3d(L.zeros(0, 3, 2, 2, 2)),
        _F(L).rrelu(L.zeros(0, 3), training=True), _F(L).rrelu_(L.zeros(0, 3), training=True)],
    **_losses_on_an_empty_batch(),
}


def _reductions_on_empty_dims():
    """Tensor methods over an empty dim: without dim (the whole tensor), with dim=, keepdim=."""
    cases = {}
    x = lambda L: L.zeros(2, 0, dtype=L.float64).requires_grad_(True)  # noqa: E731
    for name in ("sum", "mean", "std", "var", "prod", "logsumexp", "norm", "nansum", "nanmean", "amax", "amin",
                 "max", "min", "argmax", "argmin", "median", "nanmedian", "mode", "count_nonzero", "all", "any"):
        cases[f"x.{name}() of (2, 0)"] = lambda L, n=name: getattr(x(L), n)() if n != "logsumexp" else \
            x(L).logsumexp((0, 1))
        for dim in (0, 1, -1):
            for keepdim in (False, True):
                cases[f"x.{name}({dim}, keepdim={keepdim}) of (2, 0)"] = (
                    lambda L, n=name, d=dim, k=keepdim: getattr(x(L), n)(d, keepdim=k)
                    if n != "count_nonzero" else x(L).count_nonzero(d))
    for name in ("cumsum", "cumprod", "logcumsumexp", "softmax", "log_softmax", "sort", "argsort", "cummax",
                 "cummin"):
        for dim in (0, 1):
            cases[f"x.{name}({dim}) of (2, 0)"] = lambda L, n=name, d=dim: grads(
                L, lambda L, t: getattr(t, n)(d), (2, 0))
    for k in (0, 1):
        cases[f"x.topk({k}, dim=1) of (2, 0)"] = lambda L, k=k: x(L).topk(k, dim=1)
        cases[f"x.topk({k}) of (0, 2)"] = lambda L, k=k: grads(L, lambda L, t: t.topk(k), (0, 2))
        cases[f"x.kthvalue({k + 1}, 0) of (0, 2)"] = lambda L, k=k: L.zeros(0, 2).kthvalue(k + 1, 0)
    cases["x.std(correction=0) and var_mean of (0,)"] = lambda L: [L.zeros(0).std(correction=0),
                                                                    *L.var_mean(L.zeros(0, 3), 0)]
    cases["torch.unique of (2, 0), sorted, return_inverse, return_counts"] = lambda L: L.unique(
        L.zeros(2, 0), return_inverse=True, return_counts=True)
    cases["torch.unique(dim=0) of (0, 3)"] = lambda L: L.unique(L.zeros(0, 3), dim=0)
    cases["x.sum/mean gradients of (2, 0) along dim 0, keepdim"] = lambda L: grads(
        L, lambda L, t: [t.sum(0, keepdim=True), t.mean(1), t.var(0), t.norm(dim=1)], (2, 0))
    cases["x.max(0) of (0, 2) (torch: no identity)"] = lambda L: L.zeros(0, 2).max(0)
    cases["x.max() / argmax() of (0,) (torch: no identity)"] = lambda L: [L.zeros(0).argmax()]
    return cases


EXPLICIT.update(_reductions_on_empty_dims())
EXPLICIT.update({  # round 8's names (their values: tests/test_nn_r8.py)
    "F.conv3d((0, 2, 3, 3, 3), (4, 1, 2, 2, 2), bias, padding=1, groups=2)": lambda L: grads(
        L, lambda L, x, w, b: _F(L).conv3d(x, w, b, padding=1, groups=2), (0, 2, 3, 3, 3), (4, 1, 2, 2, 2), (4,)),
    "F.conv_transpose3d((0, 2, 2, 2, 2), (2, 3, 2, 2, 2), stride=2)": lambda L: grads(
        L, lambda L, x, w: _F(L).conv_transpose3d(x, w, stride=2), (0, 2, 2, 2, 2), (2, 3, 2, 2, 2)),
    "nn.Conv3d(2, 3, 2) and nn.ConvTranspose3d(2, 3, 2) on an empty batch": lambda L: [
        L.nn.Conv3d(2, 3, 2)(L.zeros(0, 2, 3, 3, 3)), L.nn.ConvTranspose3d(2, 3, 2)(L.zeros(0, 2, 2, 2, 2))],
    "F.channel_shuffle, F.native_channel_shuffle, nn.ChannelShuffle(2) of an empty batch": lambda L: [
        _F(L).channel_shuffle(L.zeros(0, 4, 2), 2), _F(L).native_channel_shuffle(L.zeros(0, 4, 2), 2),
        L.nn.ChannelShuffle(2)(L.zeros(0, 4, 2))],
    "F.gumbel_softmax((0, 3))": lambda L: grads(L, lambda L, x: _F(L).gumbel_softmax(x, hard=True), (0, 3)),
    "nn.LazyLinear(3) and the lazy convolutions on an empty batch": lambda L: [
        L.nn.LazyLinear(3)(L.zeros(0, 4)), L.nn.LazyConv1d(3, 2)(L.zeros(0, 2, 4)),
        L.nn.LazyConv2d(3, 2)(L.zeros(0, 2, 4, 4)), L.nn.LazyConv3d(3, 2)(L.zeros(0, 2, 3, 3, 3)),
        L.nn.LazyConvTranspose1d(3, 2)(L.zeros(0, 2, 4)), L.nn.LazyConvTranspose2d(3, 2)(L.zeros(0, 2, 4, 4)),
        L.nn.LazyConvTranspose3d(3, 2)(L.zeros(0, 2, 3, 3, 3))],
    "F.grid_sample((0, 2, 3, 3), grid (0, 2, 2, 2)) and an empty grid": lambda L: [grads(
        L, lambda L, x, g: _F(L).grid_sample(x, g, align_corners=False), (0, 2, 3, 3), (0, 2, 2, 2)), grads(
        L, lambda L, x, g: _F(L).grid_sample(x, g, align_corners=True), (1, 2, 3, 3), (1, 0, 2, 2))],
    "F.affine_grid of no matrices, (0, 1, 2, 2)": lambda L: grads(
        L, lambda L, t: _F(L).affine_grid(t, (0, 1, 2, 2), align_corners=False), (0, 2, 3)),
    "F.ctc_loss and nn.CTCLoss() of an empty batch (mean: nan)": lambda L: [grads(
        L, lambda L, x: _F(L).ctc_loss(x, L.zeros(0, 2, dtype=L.int64), L.zeros(0, dtype=L.int64),
                                       L.zeros(0, dtype=L.int64), reduction=reduction), (4, 0, 3))
        for reduction in ("none", "sum")] + [L.nn.CTCLoss()(L.zeros(4, 0, 3), L.zeros(0, 2, dtype=L.int64),
                                                           L.zeros(0, dtype=L.int64), L.zeros(0, dtype=L.int64))],
    "F.max_pool3d / F.avg_pool3d / F.adaptive_avg_pool3d / F.adaptive_max_pool3d of (0, 2, 4, 4, 4)": lambda L: [
        grads(L, lambda L, x: _F(L).max_pool3d(x, 2, return_indices=True), (0, 2, 4, 4, 4)),
        grads(L, lambda L, x: _F(L).avg_pool3d(x, 2, padding=1), (0, 2, 4, 4, 4)),
        grads(L, lambda L, x: _F(L).adaptive_avg_pool3d(x, (2, 1, 3)), (0, 2, 4, 4, 4)),
        grads(L, lambda L, x: _F(L).adaptive_max_pool3d(x, 2, True), (0, 2, 4, 4, 4))],
    "F.max_pool3d of an empty depth (torch: refused)": lambda L: _F(L).max_pool3d(L.zeros(1, 2, 0, 4, 4), 2),
    "nn.MaxPool3d(2), nn.AvgPool3d(2), nn.AdaptiveAvgPool3d(1), nn.AdaptiveMaxPool3d(1) on an empty batch": lambda L: [
        m(L.zeros(0, 2, 4, 4, 4)) for m in (L.nn.MaxPool3d(2), L.nn.AvgPool3d(2), L.nn.AdaptiveAvgPool3d(1),
                                             L.nn.AdaptiveMaxPool3d(1))],
    "nn.ConstantPad3d, nn.ZeroPad3d, nn.ReflectionPad3d, nn.ReplicationPad3d, nn.CircularPad3d on an empty batch": (
        lambda L: [m(L.zeros(0, 2, 3, 3, 3)) for m in (
            L.nn.ConstantPad3d(1, 2.0), L.nn.ZeroPad3d(1), L.nn.ReflectionPad3d(1), L.nn.ReplicationPad3d(1),
            L.nn.CircularPad3d(1))]),
    # (torch's pdist backward of a (0, 3) input segfaults: that one forward only)
    "F.pdist of (0, 3), (1, 3) and (3, 0)": lambda L: [_F(L).pdist(L.zeros(0, 3)),
                                                       grads(L, lambda L, x: _F(L).pdist(x), (1, 3)),
                                                       grads(L, lambda L, x: _F(L).pdist(x, 1.5), (3, 0))],
    "F.lp_pool3d, nn.LPPool3d(2, 2) of (0, 2, 4, 4, 4)": lambda L: [
        grads(L, lambda L, x: _F(L).lp_pool3d(x, 2, 2), (0, 2, 4, 4, 4)), L.nn.LPPool3d(2, 2)(L.zeros(0, 2, 4, 4, 4))],
    "F.max_unpool3d, nn.MaxUnpool3d(2) of an empty batch": lambda L: [grads(
        L, lambda L, x: _F(L).max_unpool3d(x, L.zeros(0, 2, 2, 2, 2, dtype=L.int64), 2), (0, 2, 2, 2, 2)),
        L.nn.MaxUnpool3d(2)(L.zeros(0, 2, 2, 2, 2), L.zeros(0, 2, 2, 2, 2, dtype=L.int64))],
    "F.max_pool1d/2d/3d_with_indices, F.adaptive_max_pool1d/2d/3d_with_indices of an empty batch": lambda L: [
        _F(L).max_pool1d_with_indices(L.zeros(0, 2, 4), 2), _F(L).max_pool2d_with_indices(L.zeros(0, 2, 4, 4), 2),
        _F(L).max_pool3d_with_indices(L.zeros(0, 2, 4, 4, 4), 2),
        _F(L).adaptive_max_pool1d_with_indices(L.zeros(0, 2, 4), 2),
        _F(L).adaptive_max_pool2d_with_indices(L.zeros(0, 2, 4, 4), 2),
        _F(L).adaptive_max_pool3d_with_indices(L.zeros(0, 2, 4, 4, 4), 2)],
    "nn.LazyBatchNorm1d/2d/3d() and nn.LazyInstanceNorm1d/2d/3d() on an empty batch": lambda L: [
        L.nn.LazyBatchNorm1d()(L.zeros(0, 3)), L.nn.LazyBatchNorm2d().eval()(L.zeros(0, 3, 2, 2)),
        L.nn.LazyBatchNorm3d()(L.zeros(0, 3, 2, 2, 2)), L.nn.LazyInstanceNorm1d()(L.zeros(0, 3, 4)),
        L.nn.LazyInstanceNorm2d()(L.zeros(0, 3, 2, 2)), L.nn.LazyInstanceNorm3d()(L.zeros(0, 3, 2, 2, 2))],
    "nn.SyncBatchNorm(3) on an empty batch, training and eval (one process: BatchNorm's)": lambda L: [
        L.nn.SyncBatchNorm(3)(L.zeros(0, 3, 2)), L.nn.SyncBatchNorm(3).eval()(L.zeros(0, 3, 2, 2))],
    "F.conv_tbc of an empty batch": lambda L: grads(
        L, lambda L, x, w, b: _F(L).conv_tbc(x, w, b, 1), (4, 0, 3), (2, 3, 5), (5,)),
    "F.linear_cross_entropy, nn.LinearCrossEntropyLoss(4, 6) of an empty batch (mean: nan)": lambda L: [grads(
        L, lambda L, x, w: _F(L).linear_cross_entropy(x, w, L.zeros(0, dtype=L.int64), reduction=reduction),
        (0, 4), (6, 4)) for reduction in ("mean", "none")] + [
        L.nn.LinearCrossEntropyLoss(4, 6)(L.zeros(0, 4), L.zeros(0, dtype=L.int64))],
    "nn.DataParallel(nn.Linear(3, 2)) on an empty batch": lambda L: L.nn.DataParallel(L.nn.Linear(3, 2))(
        L.zeros(0, 3)),
    "F.fractional_max_pool2d/3d (+ _with_indices), nn.FractionalMaxPool2d/3d of an empty batch": lambda L: [
        grads(L, lambda L, x: _F(L).fractional_max_pool2d(x, 2, output_size=2), (0, 2, 5, 5)),
        grads(L, lambda L, x: _F(L).fractional_max_pool3d(x, 2, output_size=2), (0, 2, 5, 5, 5)),
        _F(L).fractional_max_pool2d_with_indices(L.zeros(0, 2, 5, 5), 2, output_size=2),
        _F(L).fractional_max_pool3d_with_indices(L.zeros(0, 2, 5, 5, 5), 2, output_size=2),
        L.nn.FractionalMaxPool2d(2, output_ratio=0.5)(L.zeros(0, 2, 6, 6)),
        L.nn.FractionalMaxPool3d(2, output_size=2)(L.zeros(0, 2, 5, 5, 5))],
    "nn.AdaptiveLogSoftmaxWithLoss(8, 10, [4]) on an empty batch": lambda L: list(
        L.nn.AdaptiveLogSoftmaxWithLoss(8, 10, [4])(L.zeros(0, 8), L.zeros(0, dtype=L.int64))),
    "nn.NLLLoss2d() of an empty batch of images (mean: nan)": lambda L: L.nn.NLLLoss2d()(
        L.zeros(0, 3, 2, 2), L.zeros(0, 2, 2, dtype=L.int64)),
    "F.multi_head_attention_forward on an empty batch": lambda L: grads(
        L, lambda L, x, w, b, wo: _F(L).multi_head_attention_forward(
            x, x, x, 4, 2, w, b, None, None, False, 0.0, wo, None), (3, 0, 4), (12, 4), (12,), (4, 4)),
})


@pytest.mark.parametrize("name", list(EXPLICIT))
def test_zero_size_case_against_torch(name):
    problem = difference(_thunk_outcome(ml, EXPLICIT[name]), _thunk_outcome(torch, EXPLICIT[name]))
    assert problem is None, f"{name}: {problem}"


def test_margin_losses_reduce_an_empty_batch_to_nan_or_zero():
    """torch's 'mean' / 'sum' of multi_margin_loss and multilabel_margin_loss over an empty batch is
    memory it never wrote (6.9e-310, LEFT_ALONE); minilora answers as every other loss: the mean of
    nothing is nan, the sum 0, and the gradient an empty one."""
    F = ml.nn.functional
    for loss, target in ((F.multi_margin_loss, ml.zeros(0, dtype=ml.int64)),
                         (F.multilabel_margin_loss, ml.zeros(0, 3, dtype=ml.int64))):
        x = ml.zeros(0, 3, requires_grad=True)
        assert loss(x, target).isnan().item() and loss(x, target, reduction="sum").item() == 0
        loss(x, target, reduction="sum").backward()
        assert tuple(x.grad.shape) == (0, 3)


# ----------------------------------------------------------------------------------------------------
# coverage: every F.* function and nn module minilora shares with torch meets a zero-size input

_CONTAINERS = "a container / base class, no computation of its own"
SKIP = {
    **{f"nn.{n}": _CONTAINERS for n in ("Module", "ModuleDict", "ModuleList", "Parameter", "ParameterDict",
                                         "ParameterList", "Sequential")},
    "nn.UninitializedParameter": "a lazy module's placeholder, no computation of its own",
    "nn.UninitializedBuffer": "a lazy module's placeholder, no computation of its own",
    "nn.Buffer": "a marker that registers a buffer, no computation of its own",
    "nn.RNNBase": "the base class of RNN/LSTM/GRU (torch's too), reached through them",
    "nn.RNNCellBase": "the base class of RNNCell/LSTMCell/GRUCell (torch's too), reached through them",
    "nn.PixelUnshuffle": "torch returns an empty input as it is (its shape not unshuffled): swept, not compared",
    "nn.EmbeddingBag": "torch segfaults on mode='max' with empty offsets: EXPLICIT's F.embedding_bag cases instead",
    "nn.MultiMarginLoss": "torch's 'mean' / 'sum' of an empty batch is uninitialised memory: EXPLICIT's 'none'",
    "nn.MultiLabelMarginLoss": "torch's 'mean' / 'sum' of an empty batch is uninitialised memory: EXPLICIT's 'none'",
}


def _reached_by_explicit():
    """The F.* / nn.* names an EXPLICIT case calls (read from the case names and lambdas' source)."""
    found = set()
    for name, thunk in EXPLICIT.items():
        text = name + inspect.getsource(thunk)
        found |= {f"F.{n}" for n in _shared_functions() if f"F.{n}(" in text or f"_F(L).{n}(" in text
                  or f'"{n}"' in text}
        found |= {f"nn.{n}" for n in _shared_modules() if f"nn.{n}(" in text or f"nn.{n} " in text}
    for name in _losses_on_an_empty_batch():
        found |= {f"F.{n}" for n in _shared_functions() if f"F.{n}(" in name or f"F.{n} " in name}
    return found


def _shared_functions():
    return r6.FUNCTIONAL


def _shared_modules():
    return {n for n in dir(ml.nn) if not n.startswith("_") and hasattr(torch.nn, n)
            and inspect.isclass(getattr(ml.nn, n))}


def _reached_by_sweep():
    found = {n for n in r6.names_fuzzed_here() if n.startswith("F.")}
    for name, draw in nn5.FUNCTIONS.items():
        for seed in SEEDS:
            found.add("F." + draw(nn5._case_rng("zero." + name, seed)).name)
    return found | {f"nn.{n}" for n in set(nn5.LAYERS) - NN_LEFT_ALONE}


def test_every_shared_name_meets_a_zero_size():
    shared = {f"F.{n}" for n in _shared_functions()} | {f"nn.{n}" for n in _shared_modules()}
    missing = shared - _reached_by_sweep() - _reached_by_explicit() - set(SKIP)
    assert not missing, f"no zero-size case reaches: {sorted(missing)}"


# ----------------------------------------------------------------------------------------------------
# LoRA / PEFT, Llama / transformers, generate

class _Net:
    """The same small network in both libraries: a Linear, an Embedding and a Conv2d to adapt."""

    @staticmethod
    def build(lib):
        class Net(lib.nn.Module):
            def __init__(self):
                super().__init__()
                self.proj, self.emb, self.conv = lib.nn.Linear(3, 4), lib.nn.Embedding(5, 3), lib.nn.Conv2d(2, 3, 2)

            def forward(self, x, ids, image):
                return self.proj(x), self.emb(ids), self.conv(image)
        return Net()


def _peft_outcome(lib, use_dora):
    """Outputs and gradients of a LoRA (or DoRA) model fed an empty batch, as PEFT's."""
    peft = pytest.importorskip("peft") if lib is torch else ml.lora
    lib.manual_seed(0)
    config = peft.LoraConfig(r=2, target_modules=["proj", "emb", "conv"], init_lora_weights=False,
                             use_dora=use_dora)
    model = peft.get_peft_model(_Net.build(lib), config)
    x = lib.zeros(0, 3, requires_grad=True)
    outs = model(x, lib.zeros(0, 2, dtype=lib.int64), lib.zeros(0, 2, 3, 3))
    sum(o.sum() for o in outs).backward()
    grads = {n: tuple(p.grad.shape) + (float(p.grad.abs().sum()),) for n, p in model.named_parameters()
             if p.requires_grad}
    return [tuple(o.shape) for o in outs], tuple(x.grad.shape), grads


@pytest.mark.parametrize("use_dora", [False, True])
def test_lora_layers_fed_an_empty_batch_as_peft(use_dora):
    """A LoRA (DoRA) Linear, Embedding and Conv2d fed a batch of 0: empty outputs of PEFT's shapes,
    an empty input gradient, and adapter gradients of their weights' shapes, all zeros (PEFT's)."""
    ours, theirs = _peft_outcome(ml, use_dora), _peft_outcome(torch, use_dora)
    assert ours[:2] == theirs[:2] == ([(0, 4), (0, 2, 3), (0, 3, 2, 2)], (0, 3))
    assert ours[2] == theirs[2] and all(g[-1] == 0 for g in ours[2].values())


def test_llama_refuses_an_empty_batch_or_sequence_and_generate_zero_new_tokens():
    """transformers' Llama fails on input_ids of shape (0, T) / (B, 0) in an internal reshape
    (RuntimeError: 'cannot reshape tensor of 0 elements ... ambiguous'); minilora refuses on purpose,
    before any work, naming the problem (ValueError, as tests/test_faults.py asks). generate with
    max_new_tokens=0 is a ValueError in both."""
    transformers = pytest.importorskip("transformers")
    from test_llama import hf_model
    from test_peft_conformance_r3 import TINY
    theirs, ours = hf_model(transformers, TINY, dtype="float32"), ml.models.LlamaForCausalLM(TINY)
    for shape in ((0, 5), (2, 0), (0, 0)):
        with pytest.raises(RuntimeError, match="cannot reshape tensor of 0 elements"):
            theirs(torch.zeros(shape, dtype=torch.int64))
        with pytest.raises(ValueError, match=r"empty batch or a zero-length sequence has nothing to compute"):
            ours(ml.zeros(shape, dtype=ml.int64))
    with pytest.raises(ValueError, match="max_new_tokens"):
        theirs.generate(torch.tensor([[1, 2, 3]]), max_new_tokens=0, do_sample=False)
    with pytest.raises(ValueError, match="max_new_tokens"):
        ours.generate(ml.tensor([[1, 2, 3]]), max_new_tokens=0, do_sample=False)
