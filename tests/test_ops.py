"""Every op in ``minilora.ops``: backward against central differences (float64), forward and backward
against PyTorch (float64) where torch has the op, and hypothesis tests for broadcasting and shape ops.

One table, ``CASES``, drives the tests (minitorch style). A case is (name, minilora function, torch
function or None, inputs): ``inputs(rng)`` draws random shapes and values and returns the arguments.
Float64 arrays become tensors that require grad; anything else (integer ids, boolean masks) becomes a
plain tensor. Both functions receive the arguments in that order.
"""
import re
from typing import Callable, NamedTuple, Optional

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import minilora as ml
from minilora import ops
from minilora.tensor import Function
from minilora.testing import GradCheckError, assert_close, grad_check


class _LazyTorch:
    """``T.nn.functional.gelu(x)`` calls torch's function, importing torch only then: the table
    below can name torch functions while this file loads, and its grad checks run, without torch."""

    def __init__(self, path=()):
        self._path = path

    def __getattr__(self, name):
        return _LazyTorch(self._path + (name,))

    def __call__(self, *args, **kwargs):
        import torch
        fn = torch
        for name in self._path:
            fn = getattr(fn, name)
        return fn(*args, **kwargs)


T = _LazyTorch()


class Const(NamedTuple):
    """An input that carries no gradient although it is float (an additive attention mask)."""
    array: np.ndarray


class Case(NamedTuple):
    name: str
    ours: Callable
    ref: Optional[Callable]  # the same computation in torch, or None where torch has no such op
    inputs: Callable  # rng -> tuple of arguments


# ---- random inputs -------------------------------------------------------------------------------
def rand_shape(rng, ndim=None, low=1, high=4):
    ndim = int(rng.integers(1, 4)) if ndim is None else ndim
    return tuple(int(n) for n in rng.integers(low, high + 1, ndim))


def broadcast_partner(rng, shape):
    """A shape that broadcasts against ``shape``: leading axes dropped, some axes set to 1."""
    kept = shape[int(rng.integers(0, len(shape) + 1)):]
    return tuple(1 if rng.random() < 0.4 else n for n in kept)


def normal(rng, shape):
    return rng.standard_normal(shape)


def positive(rng, shape):
    return rng.uniform(0.5, 2.0, shape)


def away_from_zero(rng, shape):
    """Values with |x| >= 0.2: where abs and relu are smooth enough for central differences."""
    return rng.choice([-1.0, 1.0], shape) * rng.uniform(0.2, 1.5, shape)


def broadcast_pair(values_a=normal, values_b=normal):
    """inputs() for a binary op: two broadcastable shapes, either side the smaller one."""
    def inputs(rng):
        big = rand_shape(rng)
        small = broadcast_partner(rng, big)
        a_shape, b_shape = (big, small) if rng.random() < 0.5 else (small, big)
        return values_a(rng, a_shape), values_b(rng, b_shape)
    return inputs


def one(values=normal, ndim=None):
    return lambda rng: (values(rng, rand_shape(rng, ndim)),)


def fixed(*shapes, values=normal):
    return lambda rng: tuple(values(rng, s) for s in shapes)


def attention_inputs(b, hq, hkv, tq, tk, d, mask=False, mask_batch=1):
    """q [b, hq, tq, d], k and v [b, hkv, tk, d], and optionally an additive mask [mask_batch, 1, tq, tk]."""
    def inputs(rng):
        q, k, v = (normal(rng, shape) for shape in [(b, hq, tq, d), (b, hkv, tk, d), (b, hkv, tk, d)])
        return (q, k, v, Const(normal(rng, (mask_batch, 1, tq, tk)))) if mask else (q, k, v)
    return inputs


# ---- torch references that need a few lines -------------------------------------------------------
TF = T.nn.functional


def torch_rotary(x, cos, sin):
    half = x.shape[-1] // 2
    return x * cos + T.cat((-x[..., half:], x[..., :half]), dim=-1) * sin


BOTTOM_RIGHT_2_5 = np.arange(5)[None, :] <= (5 - 2 + np.arange(2))[:, None]  # a KV cache's causal mask


def torch_attention(q, k, v, mask=None, causal=True):
    """Bottom-right causal alignment (query i sits at position tk - tq + i) and GQA, spelled out."""
    group = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
    scores = q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5
    if mask is not None:
        scores = scores + mask
    if causal:
        tq, tk = q.shape[2], k.shape[2]
        allowed = T.arange(tk)[None, :] <= (tk - tq + T.arange(tq))[:, None]
        scores = scores.masked_fill(~allowed, float("-inf"))
    return T.softmax(scores, dim=-1) @ v


def scaled_pieces(cat, pieces, dim):
    """Join split pieces back, each scaled differently (so a mixed-up piece shows in the gradient)."""
    return cat([p * (i + 1.0) for i, p in enumerate(pieces)], dim)


ANGLES = np.arange(5)[:, None] * np.array([1.0, 0.3, 1.0, 0.3])  # [T=5, D=4], HF's duplicated halves
ROPE_COS, ROPE_SIN = np.cos(ANGLES), np.sin(ANGLES)
# Per-sample positions (left padding shifts them): cos/sin of shape [B=3, 1, T=5, D=4].
ANGLES_3 = (np.arange(5) + np.array([0, 2, 1])[:, None])[:, None, :, None] * np.array([1.0, 0.3, 1.0, 0.3])
ROPE_COS_3, ROPE_SIN_3 = np.cos(ANGLES_3), np.sin(ANGLES_3)
CE_TARGETS = np.array([3, -100, 0, 6, 2, -100])  # two ignored rows (ignore_index=-100)
IDS = np.array([[1, 4, 1], [0, 4, 4]])  # repeated ids: their gradients must add up
COND = np.array([[1, 0, 1, 1], [0, 0, 1, 0], [1, 1, 0, 1]], dtype=bool)


# ---- the table -------------------------------------------------------------------------------------
CASES = [
    # arithmetic, with broadcasting either way
    Case("add", ops.add, lambda a, b: a + b, broadcast_pair()),
    Case("sub", ops.sub, lambda a, b: a - b, broadcast_pair()),
    Case("mul", ops.mul, lambda a, b: a * b, broadcast_pair()),
    Case("div", ops.div, lambda a, b: a / b, broadcast_pair(normal, away_from_zero)),
    Case("neg", ops.neg, lambda a: -a, one()),
    Case("pow/tensor**tensor", ops.pow, T.pow, broadcast_pair(positive, normal)),
    Case("pow/tensor**3", lambda a: a ** 3, lambda a: a ** 3, one()),
    Case("pow/tensor**-1.5", lambda a: a ** -1.5, lambda a: a ** -1.5, one(positive)),
    Case("pow/2**tensor", lambda a: 2.0 ** a, lambda a: 2.0 ** a, one()),
    # pointwise functions
    Case("exp", ops.exp, T.exp, one()),
    Case("log", ops.log, T.log, one(positive)),
    Case("sqrt", ops.sqrt, T.sqrt, one(positive)),
    Case("rsqrt", ops.rsqrt, T.rsqrt, one(positive)),
    Case("abs", ops.abs, T.abs, one(away_from_zero)),
    Case("tanh", ops.tanh, T.tanh, one()),
    Case("sigmoid", ops.sigmoid, T.sigmoid, one()),
    Case("relu", ops.relu, T.relu, one(away_from_zero)),
    Case("gelu/erf", ops.gelu, TF.gelu, one()),
    Case("gelu/tanh", lambda a: ops.gelu(a, approximate="tanh"),
         lambda a: TF.gelu(a, approximate="tanh"), one()),
    Case("silu", ops.silu, TF.silu, one()),
    Case("swiglu", ops.swiglu, lambda g, u: TF.silu(g) * u, fixed((3, 2, 5), (3, 2, 5))),
    # reductions
    Case("sum/all", ops.sum, T.sum, one()),
    Case("sum/axes(0,2)+keepdims", lambda a: ops.sum(a, axis=(0, 2), keepdims=True),
         lambda a: T.sum(a, dim=(0, 2), keepdim=True), one(ndim=3)),
    Case("mean/axis-1", lambda a: ops.mean(a, axis=-1), lambda a: T.mean(a, dim=-1), one(ndim=3)),
    Case("mean/all", ops.mean, T.mean, one()),
    Case("max/axis1", lambda a: ops.amax(a, axis=1), lambda a: T.amax(a, dim=1), one(ndim=3)),
    Case("max/all", ops.max, T.amax, one()),
    Case("var/axis-1", lambda a: ops.var(a, axis=-1), lambda a: T.var(a, dim=-1), fixed((3, 4))),
    Case("var/all,correction0", lambda a: ops.var(a, correction=0),
         lambda a: T.var(a, correction=0), fixed((2, 3, 2))),
    Case("softmax/axis-1", lambda a: ops.softmax(a, -1), lambda a: T.softmax(a, dim=-1), one(ndim=3)),
    Case("softmax/axis0", lambda a: ops.softmax(a, axis=0), lambda a: T.softmax(a, dim=0),
         one(ndim=2)),
    Case("log_softmax", lambda a: ops.log_softmax(a, -1), lambda a: T.log_softmax(a, dim=-1), one(ndim=3)),
    Case("logsumexp", lambda a: ops.logsumexp(a, -1), lambda a: T.logsumexp(a, dim=-1), one(ndim=3)),
    Case("logsumexp/axis0+keepdims", lambda a: ops.logsumexp(a, axis=0, keepdims=True),
         lambda a: T.logsumexp(a, dim=0, keepdim=True), one(ndim=2)),
    # matrix products
    Case("matmul/2d", ops.matmul, T.matmul, fixed((3, 4), (4, 2))),
    Case("matmul/batched+broadcast", ops.matmul, T.matmul, fixed((2, 1, 3, 4), (3, 4, 2))),
    Case("matmul/1d@2d", ops.matmul, T.matmul, fixed((4,), (4, 3))),
    Case("matmul/2d@1d", ops.matmul, T.matmul, fixed((3, 4), (4,))),
    Case("matmul/batched@1d", ops.matmul, T.matmul, fixed((2, 3, 4), (4,))),
    Case("matmul/1d@1d", ops.matmul, T.matmul, fixed((4,), (4,))),
    Case("linear", ops.linear, TF.linear, fixed((2, 3, 4), (5, 4), (5,))),
    Case("linear/no-bias", ops.linear, TF.linear, fixed((3, 4), (2, 4))),
    # shapes
    Case("reshape", lambda a: ops.reshape(a, (6, -1)), lambda a: a.reshape(6, -1), fixed((2, 3, 4))),
    Case("permute", lambda a: ops.permute(a, (2, 0, 1)), lambda a: a.permute(2, 0, 1),
         fixed((2, 3, 4))),
    Case("transpose", lambda a: ops.transpose(a, 0, 2), lambda a: a.transpose(0, 2),
         fixed((2, 3, 4))),
    Case("T", lambda a: a.T, lambda a: a.T, fixed((3, 4))),
    Case("getitem/basic", lambda a: a[1:, ::2, None, -1], lambda a: a[1:, ::2, None, -1],
         fixed((3, 4, 2))),
    Case("getitem/int-array(repeats)", lambda a: a[[0, 2, 0, 0]], lambda a: a[[0, 2, 0, 0]],
         fixed((3, 4))),
    Case("getitem/mixed", lambda a: a[:, [1, 1, 0]], lambda a: a[:, [1, 1, 0]], fixed((2, 3, 2))),
    Case("getitem/2-arrays", lambda a: a[[0, 1, 1], [2, 0, 2]], lambda a: a[[0, 1, 1], [2, 0, 2]],
         fixed((2, 3))),
    Case("cat", lambda a, b, c: ops.cat([a, b, c], axis=1), lambda a, b, c: T.cat([a, b, c], dim=1),
         fixed((2, 1, 3), (2, 3, 3), (2, 2, 3))),
    Case("stack", lambda a, b: ops.stack([a, b], axis=-1), lambda a, b: T.stack([a, b], dim=-1),
         fixed((2, 3), (2, 3))),
    Case("split/sizes", lambda a: scaled_pieces(ops.cat, ops.split(a, [1, 3], axis=1), 1),
         lambda a: scaled_pieces(T.cat, T.split(a, [1, 3], dim=1), 1), fixed((2, 4))),
    Case("split/int", lambda a: scaled_pieces(ops.cat, ops.split(a, 2), 0),
         lambda a: scaled_pieces(T.cat, T.split(a, 2), 0), fixed((5, 2))),
    Case("expand", lambda a: ops.expand(a, (2, 3, 4)), lambda a: a.expand(2, 3, 4), fixed((3, 1))),
    Case("unsqueeze+squeeze", lambda a: ops.squeeze(ops.unsqueeze(a, 1) * 2.0, 0),
         lambda a: (a.unsqueeze(1) * 2.0).squeeze(0), fixed((1, 3))),
    Case("flatten", lambda a: ops.flatten(a, 1), lambda a: a.flatten(1), fixed((2, 3, 2))),
    # selection
    Case("where", ops.where, T.where, lambda rng: (COND, normal(rng, (3, 4)), normal(rng, (4,)))),
    Case("masked_fill", lambda a, m: ops.masked_fill(a, m, -2.5), lambda a, m: a.masked_fill(m, -2.5),
         lambda rng: (normal(rng, (3, 4)), COND[:1])),
    # neural-network ops
    Case("embedding", lambda w, ids: ops.embedding(ids, w), lambda w, ids: TF.embedding(ids, w),
         lambda rng: (normal(rng, (5, 3)), IDS)),
    Case("cross_entropy/ignore_index", ops.cross_entropy, TF.cross_entropy,
         lambda rng: (normal(rng, (6, 7)), CE_TARGETS)),
    Case("cross_entropy/[N,C,d]", ops.cross_entropy, TF.cross_entropy,  # classes on axis 1, as torch
         lambda rng: (normal(rng, (2, 7, 3)), CE_TARGETS.reshape(2, 3))),
    Case("cross_entropy/sum", lambda x, t: ops.cross_entropy(x, t, reduction="sum"),
         lambda x, t: TF.cross_entropy(x, t, reduction="sum"),
         lambda rng: (normal(rng, (6, 7)), CE_TARGETS)),
    Case("cross_entropy/none", lambda x, t: ops.cross_entropy(x, t, reduction="none"),
         lambda x, t: TF.cross_entropy(x, t, reduction="none"),
         lambda rng: (normal(rng, (6, 7)), CE_TARGETS)),
    Case("dropout/seeded", lambda a: ops.dropout(a, p=0.4, seed=7), None, fixed((4, 5))),
    Case("rms_norm", lambda x, w: ops.rms_norm(x, (4,), w, eps=1e-6),
         lambda x, w: TF.rms_norm(x, (4,), w, eps=1e-6), fixed((2, 3, 4), (4,))),
    Case("rms_norm/no-weight", lambda x: ops.rms_norm(x, (5,)), lambda x: TF.rms_norm(x, (5,)),
         fixed((3, 5))),
    Case("rms_norm/2-dims", lambda x, w: ops.rms_norm(x, (3, 4), w), lambda x, w: TF.rms_norm(x, (3, 4), w),
         fixed((2, 3, 4), (3, 4))),
    Case("layer_norm", lambda x, w, b: ops.layer_norm(x, (4,), w, b),
         lambda x, w, b: TF.layer_norm(x, (4,), w, b), fixed((2, 3, 4), (4,), (4,))),
    # (a bare int 5 is torch's TypeError: tests/test_torch_conformance_r4_nn.py)
    Case("layer_norm/no-affine", lambda x: ops.layer_norm(x, (5,)), lambda x: TF.layer_norm(x, (5,)),
         fixed((3, 5))),
    Case("layer_norm/2-dims", lambda x, w, b: ops.layer_norm(x, [3, 4], w, b, 1e-3),
         lambda x, w, b: TF.layer_norm(x, [3, 4], w, b, 1e-3), fixed((2, 3, 4), (3, 4), (3, 4))),
    Case("rotary_embedding",
         lambda x: ops.rotary_embedding(x, ROPE_COS.astype(x.dtype), ROPE_SIN.astype(x.dtype)),
         lambda x: torch_rotary(x, T.tensor(ROPE_COS), T.tensor(ROPE_SIN)), fixed((1, 2, 5, 4))),
    Case("rotary_embedding/per-sample-positions",
         lambda x: ops.rotary_embedding(x, ROPE_COS_3.astype(x.dtype), ROPE_SIN_3.astype(x.dtype)),
         lambda x: torch_rotary(x, T.tensor(ROPE_COS_3), T.tensor(ROPE_SIN_3)), fixed((3, 2, 5, 4))),
    Case("attention/causal", lambda q, k, v: ops.scaled_dot_product_attention(q, k, v, is_causal=True),
         lambda q, k, v: TF.scaled_dot_product_attention(q, k, v, is_causal=True),
         attention_inputs(b=1, hq=2, hkv=2, tq=3, tk=3, d=4)),
    Case("attention/not-causal(default)", ops.scaled_dot_product_attention, TF.scaled_dot_product_attention,
         attention_inputs(b=2, hq=2, hkv=2, tq=3, tk=4, d=3)),
    Case("attention/GQA", lambda q, k, v: ops.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True),
         lambda q, k, v: TF.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True),
         attention_inputs(b=2, hq=4, hkv=2, tq=3, tk=3, d=2)),
    Case("attention/causal-top-left(Tq<Tk)",
         lambda q, k, v: ops.scaled_dot_product_attention(q, k, v, is_causal=True),
         lambda q, k, v: TF.scaled_dot_product_attention(q, k, v, is_causal=True),
         attention_inputs(b=1, hq=2, hkv=1, tq=2, tk=5, d=3)),
    Case("attention/kv-offset(Tq<Tk),bottom-right-mask",
         lambda q, k, v: ops.scaled_dot_product_attention(q, k, v, attn_mask=BOTTOM_RIGHT_2_5),
         torch_attention, attention_inputs(b=1, hq=2, hkv=1, tq=2, tk=5, d=3)),
    Case("attention/additive-mask",
         lambda q, k, v, m: ops.scaled_dot_product_attention(q, k, v, m),
         lambda q, k, v, m: TF.scaled_dot_product_attention(q, k, v, m),
         attention_inputs(b=1, hq=2, hkv=1, tq=3, tk=4, d=2, mask=True)),
    Case("attention/per-sample-mask,GQA",
         lambda q, k, v, m: ops.scaled_dot_product_attention(q, k, v, m, enable_gqa=True),
         lambda q, k, v, m: TF.scaled_dot_product_attention(q, k, v, m, enable_gqa=True),
         attention_inputs(b=3, hq=4, hkv=2, tq=3, tk=4, d=2, mask=True, mask_batch=3)),
    Case("attention/mask,not-causal", ops.scaled_dot_product_attention, TF.scaled_dot_product_attention,
         attention_inputs(b=1, hq=1, hkv=1, tq=3, tk=3, d=2, mask=True)),
]
CASE_IDS = [c.name for c in CASES]


def as_minilora(arg, device="cpu", dtype=None):
    """Float64 arrays require grad; ids, masks and ``Const`` inputs do not."""
    if isinstance(arg, Const):
        return ml.tensor(arg.array, device=device, dtype=dtype)
    wants_grad = arg.dtype == np.float64
    return ml.tensor(arg, device=device, dtype=dtype if wants_grad else None,
                     requires_grad=wants_grad)


def as_torch(arg):
    if isinstance(arg, Const):
        return T.tensor(arg.array)
    return T.tensor(arg, requires_grad=arg.dtype == np.float64)


def case_rng(case, seed):
    return np.random.default_rng([seed, sum(map(ord, case.name))])


# ---- the tests -------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_grad_check(case, seed, device):
    """Backward of every op matches central differences, on random shapes and values."""
    args = [as_minilora(a, device) for a in case.inputs(case_rng(case, seed))]
    grad_check(case.ours, *args, name=case.name)


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_grad_check_split_across_threads(case, split_into_blocks):
    """The same checks with the work of each op split across threads."""
    args = [as_minilora(a) for a in case.inputs(case_rng(case, 0))]
    grad_check(case.ours, *args, name=case.name)


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_ops_never_mutate_their_inputs(case):
    """Neither forward nor backward writes into an input or into the incoming gradient."""
    inputs = case.inputs(case_rng(case, 0))
    args = [as_minilora(a) for a in inputs]
    before = [a.numpy(force=True).copy() for a in args]
    out = case.ours(*args)
    seed = np.random.default_rng(3).standard_normal(out.shape)
    seed_before = seed.copy()
    out.backward(seed)
    for i, (a, b) in enumerate(zip(args, before)):
        np.testing.assert_array_equal(a.numpy(force=True), b, err_msg=f"{case.name} changed input {i}")
    np.testing.assert_array_equal(seed, seed_before, err_msg=f"{case.name} changed its out gradient")


REF_CASES = [c for c in CASES if c.ref is not None]


@pytest.mark.parametrize("case", REF_CASES, ids=[c.name for c in REF_CASES])
def test_matches_torch(case):
    """Forward and backward agree with PyTorch in float64 (same inputs, same output gradient)."""
    pytest.importorskip("torch")
    inputs = case.inputs(case_rng(case, 0))
    ours, theirs = [as_minilora(a) for a in inputs], [as_torch(a) for a in inputs]
    out, ref = case.ours(*ours), case.ref(*theirs)
    assert out.dtype == np.float64
    assert_close(out, ref.detach().numpy(force=True), rtol=1e-10, atol=1e-12, name=f"{case.name} forward")
    g = np.random.default_rng(5).standard_normal(out.shape)
    out.backward(g)
    ref.backward(T.tensor(g))
    for i, (a, b) in enumerate(zip(ours, theirs)):
        if a.requires_grad:
            assert_close(a.grad, b.grad.numpy(force=True), rtol=1e-9, atol=1e-12,
                         name=f"{case.name}: grad of input {i}")


@pytest.mark.parametrize("case", REF_CASES, ids=[c.name for c in REF_CASES])
def test_float32_forward_is_float32_and_close_to_float64(case):
    """float32 in, float32 out (no silent upcast), within float32 rounding of the float64 result."""
    inputs = case.inputs(case_rng(case, 0))
    out32 = case.ours(*[as_minilora(a, dtype=ml.float32) for a in inputs])
    out64 = case.ours(*[as_minilora(a) for a in inputs])
    assert out32.dtype == np.float32, f"{case.name}: float32 inputs gave {out32.dtype}"
    assert_close(out32, out64.numpy(force=True), rtol=1e-4, atol=1e-5, name=f"{case.name} float32")


def test_dropout_is_seeded_and_inverted(rng):
    x = ml.tensor(rng.standard_normal((50, 40)))
    a, b = ops.dropout(x, p=0.25, seed=3), ops.dropout(x, p=0.25, seed=3)
    np.testing.assert_array_equal(a.numpy(force=True), b.numpy(force=True))
    kept = a.numpy(force=True) != 0
    assert 0.65 < kept.mean() < 0.85  # about 1 - p kept
    np.testing.assert_allclose(a.numpy(force=True)[kept], x.numpy(force=True)[kept] / 0.75)
    assert not np.array_equal(ops.dropout(x, p=0.25, seed=4).numpy(force=True), a.numpy(force=True))
    assert ops.dropout(x, p=0.25, training=False) is x


def test_cross_entropy_all_ignored_is_nan_like_torch():
    logits = ml.tensor(np.zeros((2, 3)), requires_grad=True)
    with np.errstate(invalid="ignore"):  # 0 / 0
        loss = ops.cross_entropy(logits, np.array([-100, -100]))
    assert np.isnan(loss.item())


def test_gelu_float32_matches_torch_on_wide_range():
    """float32 GELU is torch's float32 GELU bit for bit, tails included: its oneDNN kernel's erf is a polynomial
    with an absolute error up to 9e-7 (16% of the result near x = -5: torch's numbers, so ours), and the gradient
    is within float32's reach of the exact one."""
    torch = pytest.importorskip("torch")
    x = np.linspace(-12, 12, 4001).astype(np.float32)
    xt = ml.tensor(x, requires_grad=True)
    y = ops.gelu(xt)
    y.backward(np.ones_like(x))
    tx = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    ty = torch.nn.functional.gelu(tx)
    ty.backward(torch.ones_like(tx))
    assert y.dtype == np.float32 and xt.grad.dtype == np.float32
    np.testing.assert_array_equal(y.numpy(), torch.nn.functional.gelu(torch.from_numpy(x)).numpy())
    assert_close(y, ty.detach().numpy(force=True), rtol=1e-6, atol=1e-6, name="gelu float32")
    assert_close(xt.grad, tx.grad.numpy(force=True), rtol=1e-6, atol=2e-6, name="gelu' float32")


# ---- grad_check itself ----------------------------------------------------------------------------
class _WrongSquare(Function):
    """x^2 with a backward that forgets the factor 2."""

    @staticmethod
    def forward(ctx, a):
        ctx.a = a
        return a * a

    @staticmethod
    def backward(ctx, g):
        return g * ctx.a


def test_grad_check_catches_a_wrong_backward_and_says_where(rng):
    x = ml.tensor(rng.standard_normal((2, 3)), requires_grad=True)
    with pytest.raises(GradCheckError) as info:
        grad_check(_WrongSquare.apply, x)
    message = str(info.value)
    assert "_WrongSquare" in message and "input 0" in message
    # The worst element: the error is |w * x| for the projection weights w grad_check uses (seed 0).
    w = np.random.default_rng(0).standard_normal((2, 3))
    worst = np.unravel_index(np.argmax(np.abs(w * x.numpy(force=True))), (2, 3))
    assert f"index {tuple(int(i) for i in worst)}" in message
    assert re.search(r"backward gave -?[\d.]+(e-?\d+)?, central differences give -?[\d.]+", message)


def test_grad_check_names_what_it_was_told(rng):
    x = ml.tensor(rng.standard_normal(3), requires_grad=True)
    with pytest.raises(GradCheckError, match=r"grad_check\(my op\): input 1"):
        y = ml.tensor(x.numpy(force=True).copy(), requires_grad=True)
        grad_check(lambda a, b: _WrongSquare.apply(b) + a, x, y, name="my op")


def test_grad_check_perturbs_a_non_contiguous_input(rng):
    """A transposed (or sliced) input has no flat view: grad_check must still perturb the input itself,
    so a right backward passes and a wrong one fails."""
    x = ml.tensor(rng.standard_normal((3, 4))).t().detach().requires_grad_()
    assert not x.is_contiguous()
    assert grad_check(lambda a: (a * a).sin(), x) < 1e-8
    with pytest.raises(GradCheckError):
        grad_check(_WrongSquare.apply, x)


def test_grad_check_needs_float64(rng):
    with pytest.raises(TypeError, match="float64"):
        grad_check(ops.exp, ml.tensor(rng.standard_normal(3).astype(np.float32), requires_grad=True))


# ---- hypothesis: broadcasting of binary ops, shape-op round trips ---------------------------------
BINARY = {"add": (ops.add, np.add), "sub": (ops.sub, np.subtract), "mul": (ops.mul, np.multiply),
          "div": (ops.div, np.divide), "pow": (ops.pow, np.power)}


@settings(max_examples=40, deadline=None)
@given(shapes=hnp.mutually_broadcastable_shapes(num_shapes=2, max_dims=3, max_side=3),
       op=st.sampled_from(sorted(BINARY)), seed=st.integers(0, 2**16))
def test_binary_ops_broadcast_like_numpy(shapes, op, seed):
    ours, reference = BINARY[op]
    rng = np.random.default_rng(seed)
    a_shape, b_shape = shapes.input_shapes
    a = positive(rng, a_shape) if op == "pow" else normal(rng, a_shape)
    b = away_from_zero(rng, b_shape)
    ta, tb = ml.tensor(a, requires_grad=True), ml.tensor(b, requires_grad=True)
    out = ours(ta, tb)
    assert out.shape == shapes.result_shape
    assert_close(out, reference(a, b), rtol=1e-12, atol=1e-12, name=op)
    grad_check(ours, ta, tb, name=op)  # each input's gradient is summed back to its own shape


@settings(max_examples=40, deadline=None)
@given(data=st.data(), shape=hnp.array_shapes(max_dims=4, max_side=4))
def test_reshape_and_permute_round_trip(data, shape):
    rng = np.random.default_rng(len(shape))
    x = ml.tensor(rng.standard_normal(shape), requires_grad=True)
    perm = tuple(data.draw(st.permutations(range(len(shape)))))
    new_shape = tuple(shape[i] for i in perm)  # same size, different factorisation
    y = ops.permute(ops.reshape(x, new_shape), perm)
    np.testing.assert_array_equal(y.numpy(force=True), np.transpose(x.numpy(force=True).reshape(new_shape), perm))
    back = ops.reshape(ops.permute(y, tuple(np.argsort(perm))), shape)
    np.testing.assert_array_equal(back.numpy(force=True), x.numpy(force=True))
    w = rng.standard_normal(y.shape)
    y.backward(w)  # the gradient goes back through both: the inverse permutation, then the shape
    np.testing.assert_array_equal(x.grad, np.transpose(w, np.argsort(perm)).reshape(shape))


@settings(max_examples=60, deadline=None)
@given(data=st.data(), shape=hnp.array_shapes(min_dims=1, max_dims=3, max_side=4))
def test_getitem_matches_numpy_and_scatters_back(data, shape):
    """Basic and integer-array indices (repeats included): the gradient adds up where elements repeat."""
    arrays_of_ints = hnp.integer_array_indices(shape, result_shape=hnp.array_shapes(max_dims=2, max_side=4))
    index = data.draw(st.one_of(hnp.basic_indices(shape, allow_newaxis=True), arrays_of_ints))
    parts = index if isinstance(index, tuple) else (index,)
    # NumPy's negative steps (x[::-1]) are refused, as torch refuses them: tested in test_torch_conformance*
    assume(all(p.step is None or p.step > 0 for p in parts if isinstance(p, slice)))
    rng = np.random.default_rng(7)
    x = ml.tensor(rng.standard_normal(shape), requires_grad=True)
    y = x[index]
    np.testing.assert_array_equal(y.numpy(force=True), x.numpy(force=True)[index])
    if y.numpy(force=True).size == 0:
        return
    w = rng.standard_normal(y.shape)
    y.backward(w)
    expected = np.zeros(shape)
    np.add.at(expected, index, w)
    np.testing.assert_allclose(x.grad, expected, rtol=1e-12, atol=0)


def test_every_listed_op_has_a_case():
    """The issue's op list, each covered by at least one row of the table."""
    wanted = ["add", "sub", "mul", "div", "neg", "pow", "exp", "log", "sqrt", "rsqrt", "abs", "tanh",
              "sigmoid", "relu", "gelu/erf", "gelu/tanh", "silu", "swiglu", "sum", "mean", "max", "var", "softmax",
              "log_softmax", "logsumexp", "matmul", "linear", "reshape", "transpose", "permute", "getitem",
              "cat", "stack", "split", "expand", "where", "masked_fill", "embedding", "cross_entropy",
              "dropout", "rms_norm", "layer_norm", "rotary_embedding", "attention"]
    names = {c.name for c in CASES}
    missing = [w for w in wanted if not any(n == w or n.startswith(w + "/") for n in names)]
    assert not missing, f"ops without a test case: {missing}"


def test_attention_gives_a_mask_that_wants_a_gradient_its_gradient(rng):
    """A learned bias (a float mask that requires grad) gets the scores' gradient, summed over the heads it was
    broadcast along, as torch's math kernel gives it (tests/test_opinfo_functional_r14.py compares with torch)."""
    q, k, v = (ml.tensor(rng.standard_normal((1, 2, 3, 4)), requires_grad=True) for _ in range(3))
    mask = ml.tensor(rng.standard_normal((1, 1, 3, 3)), requires_grad=True)
    ops.scaled_dot_product_attention(q, k, v, mask).sum().backward()
    by_hand = ml.tensor(mask.detach().numpy(), requires_grad=True)
    scores = q.detach() @ k.detach().transpose(-1, -2) / 2.0 + by_hand
    (scores.softmax(-1) @ v.detach()).sum().backward()
    np.testing.assert_allclose(mask.grad.numpy(), by_hand.grad.numpy(), rtol=1e-12, atol=1e-14)
