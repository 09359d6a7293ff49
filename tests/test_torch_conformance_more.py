"""More of torch's everyday API behaves as torch's (issue 12, "the rest of its class").

The Tensor methods and functions a tutorial reaches for (``unique``, ``bincount``,
``repeat_interleave``, ``roll``, ``median``, ``narrow``, ``diagonal``, ``index_add_``, ``lerp``,
``scatter``, ``cumprod`` ...), the functional ops and losses (``F.softplus``, ``F.leaky_relu``,
``F.normalize``, ``F.cosine_similarity``, ``F.smooth_l1_loss``, ``F.huber_loss``, ``F.kl_div``),
their ``nn`` modules, ``nn.MultiheadAttention`` and ``ReduceLROnPlateau``.

Each case is one snippet written as a torch user writes it (positional and keyword spellings), run
with ``lib = torch`` and ``lib = minilora`` on the same float64 inputs; values, dtypes, named-tuple
structure and the gradients of every input must agree (``assert_same_as_torch``, shared with
``test_torch_conformance_methods.py``). Where torch raises, minilora raises the same exception type.
The new ops are also gradient-checked against central differences, and their signatures compared
with torch's so that a future drift fails here.
"""
import inspect
import math
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import minilora as ml  # noqa: E402
from minilora.testing import grad_check  # noqa: E402
from test_torch_conformance_methods import (_compare, _ours, _parse, _torch_params,  # noqa: E402
                                            assert_same_as_torch)

RNG = np.random.default_rng(22)
X = RNG.standard_normal((3, 4))
Y = RNG.standard_normal((3, 4))
X3 = RNG.standard_normal((2, 3, 4))
V = RNG.standard_normal(4)
TIES = np.array([[1.0, 2.0, 2.0, 5.0], [3.0, 3.0, 3.0, 1.0], [0.5, -1.0, 4.0, 4.0]])
ZEROS = np.array([[2.0, 0.0, 3.0, 1.5], [0.0, 0.0, 1.0, -2.0], [1.0, -2.0, 0.5, 0.0]])
INTS = np.array([3, 1, 2, 3, 1, 0, 2, 2])
ROWS = np.array([[1, 2], [1, 2], [0, 5], [1, 2]])
SPREAD = np.array([[-3.0, -1.0, -0.2, 0.0], [0.3, 0.99, 1.0, 1.7], [2.5, -0.5, 25.0, -30.0]])
LOGP = np.log(np.array([[0.2, 0.3, 0.5, 0.0 + 1e-3], [0.25, 0.25, 0.25, 0.25], [0.7, 0.1, 0.1, 0.1]]))
P = np.array([[0.1, 0.6, 0.3, 0.0], [0.4, 0.2, 0.2, 0.2], [0.25, 0.25, 0.25, 0.25]])
ZERO_ROW = np.vstack([X[:2], np.zeros((1, 4))])
IMG = RNG.standard_normal((2, 4, 7, 6))  # [N, C, H, W]
KERNEL = RNG.standard_normal((6, 2, 3, 2))  # [O, C / groups (2), kh, kw]
SEQ = RNG.standard_normal((2, 4, 9))  # [N, C, L]
KINKS = np.array([-40.0, -4.0, -3.0, -1.0, -0.25, 0.0, 0.5, 1.0, 3.0, 6.0, 7.0, 30.0])  # every activation's corners


def _t(m, values):
    """``values`` as a tensor of library ``m`` (torch or minilora): index arguments, error cases."""
    return m.tensor(values)


def F(m):
    return m.nn.functional


# id, snippet(lib, *inputs), inputs
CASES = [
    # ---- unique (no derivative: checked without gradients below) / bincount / repeat_interleave
    ("unique(int)", lambda m, x: m.unique(x), [INTS]),
    ("unique(inverse, counts)", lambda m, x: x.unique(return_inverse=True, return_counts=True), [INTS]),
    ("unique(False, True)", lambda m, x: x.unique(False, True), [INTS]),
    ("unique(dim=0)", lambda m, x: m.unique(x, dim=0, return_inverse=True), [ROWS]),
    ("unique(sorted=True, return_counts)", lambda m, x: m.unique(x, sorted=True, return_counts=True), [INTS]),
    ("bincount", lambda m, x: m.bincount(x), [INTS]),
    ("bincount(minlength)", lambda m, x: x.bincount(minlength=7), [INTS]),
    ("bincount(int weights)", lambda m, x: x.bincount(x * 2, 5), [INTS]),
    ("repeat_interleave(2)", lambda m, x: x.repeat_interleave(2), [X]),
    ("repeat_interleave(2, dim=1)", lambda m, x: x.repeat_interleave(2, dim=1), [X]),
    ("repeat_interleave(tensor, 0)", lambda m, x: m.repeat_interleave(x, m.tensor([1, 0, 2]), 0), [X]),
    ("repeat_interleave(repeats=, output_size=)",
     lambda m, x: x.repeat_interleave(repeats=m.tensor([2]), dim=0, output_size=6), [X]),
    ("repeat_interleave(counts)", lambda m: m.repeat_interleave(m.tensor([2, 0, 3])), []),
    # ---- roll / narrow / diagonal / diag / movedim / swapaxes / tile
    ("roll(1)", lambda m, x: x.roll(1), [X]),
    ("roll(-1, 0)", lambda m, x: x.roll(-1, 0), [X]),
    ("roll((1, 2), (0, 1))", lambda m, x: x.roll((1, 2), (0, 1)), [X3]),
    ("roll(shifts=, dims=)", lambda m, x: m.roll(x, shifts=5, dims=-1), [X3]),
    ("narrow(1, 1, 2)", lambda m, x: x.narrow(1, 1, 2), [X]),
    ("narrow(-2 start)", lambda m, x: m.narrow(x, 0, -2, 2), [X]),
    ("narrow(tensor start)", lambda m, x: x.narrow(dim=1, start=m.tensor(1), length=3), [X]),
    ("narrow is a view", lambda m, x: _written_through(m, x, lambda v: v.narrow(1, 0, 2)), [X]),
    ("diagonal()", lambda m, x: x.diagonal(), [X]),
    ("diagonal(1)", lambda m, x: x.diagonal(1), [X]),
    ("diagonal(-2)", lambda m, x: x.diagonal(-2), [X]),
    ("diagonal(0, 1, 2)", lambda m, x: x.diagonal(0, 1, 2), [X3]),
    ("diagonal(offset=, dim1=, dim2=)", lambda m, x: m.diagonal(x, offset=-1, dim1=2, dim2=0), [X3]),
    ("diag(vector)", lambda m, v: m.diag(v), [V]),
    ("diag(vector, 1)", lambda m, v: v.diag(1), [V]),
    ("diag(matrix, -1)", lambda m, x: m.diag(x, diagonal=-1), [X]),
    ("movedim(0, -1)", lambda m, x: x.movedim(0, -1), [X3]),
    ("movedim((0, 1), (2, 0))", lambda m, x: m.movedim(x, (0, 1), (2, 0)), [X3]),
    ("swapaxes", lambda m, x: x.swapaxes(0, 2), [X3]),
    ("tile((2,))", lambda m, x: x.tile((2,)), [X]),
    ("tile(dims=(2, 1, 1))", lambda m, x: m.tile(x, dims=(2, 1, 1)), [X]),
    # ---- median
    ("median()", lambda m, x: x.median(), [X]),
    ("median() ties", lambda m, x: m.median(x), [TIES]),
    ("median(1) ties", lambda m, x: x.median(1), [TIES]),
    ("median(dim=0, keepdim=True)", lambda m, x: x.median(dim=0, keepdim=True), [X3]),
    ("lib.median(x, -1)", lambda m, x: m.median(x, -1), [X3]),
    ("median(int)", lambda m, x: x.median(), [INTS]),
    # ---- index_select / index_add / scatter / take_along_dim / masked_select / count_nonzero
    ("index_select(1, [2, 0, 2])", lambda m, x: x.index_select(1, _t(m, [2, 0, 2])), [X]),
    ("lib.index_select(dim=0)", lambda m, x: m.index_select(x, dim=0, index=_t(m, [1])), [X]),
    ("index_add(0)", lambda m, x, s: x.index_add(0, _t(m, [2, 0]), s[:2]), [X, Y]),
    ("index_add repeated, alpha", lambda m, x, s: x.index_add(1, _t(m, [1, 1, 3, 0]), s, alpha=2.5), [X, Y]),
    ("index_add_", lambda m, x, s: x.clone().index_add_(0, _t(m, [1, 1, 0]), s), [X, Y]),
    ("lib.index_add(source=)", lambda m, x, s: m.index_add(x, 0, _t(m, [2, 1, 0]), source=s), [X, Y]),
    # (src the shape of index: torch's backward fails for a larger src, minilora's does not)
    ("scatter(src)", lambda m, x, s: x.scatter(1, _t(m, [[0, 3], [2, 1], [1, 0]]), s[:, :2]), [X, Y]),
    ("scatter(value)", lambda m, x: x.scatter(0, _t(m, [[2, 0, 1, 1]]), 7.5), [X]),
    ("lib.scatter(value=)", lambda m, x: m.scatter(x, 0, _t(m, [[2, 0, 1, 1]]), value=-1.0), [X]),
    ("scatter_", lambda m, x, s: x.clone().scatter_(0, _t(m, [[2, 0, 1, 0]]), s[:1]), [X, Y]),
    ("scatter_add repeated", lambda m, x, s: x.scatter_add(1, _t(m, [[0, 0], [3, 3], [1, 2]]), s[:, 1:3]),
     [X, Y]),
    ("scatter_add_", lambda m, x, s: x.clone().scatter_add_(0, _t(m, [[1, 1, 1, 1]]), s[1:2]), [X, Y]),
    ("lib.scatter_add(src=)", lambda m, x, s: m.scatter_add(x, 1, _t(m, [[3], [0], [0]]), src=s[:, :1]),
     [X, Y]),
    ("take_along_dim(argsort)", lambda m, x: x.take_along_dim(x.argsort(1), 1), [X]),
    ("take_along_dim(broadcast)", lambda m, x: m.take_along_dim(x, _t(m, [[[0, 3]], [[2, 2]]]), dim=2), [X3]),
    ("take_along_dim(flat)", lambda m, x: m.take_along_dim(x, _t(m, [5, 0, 11])), [X]),
    ("masked_select", lambda m, x: x.masked_select(x > 0), [X]),
    ("masked_select(broadcast mask)", lambda m, x: m.masked_select(x, mask=m.tensor([True, False, False, True])), [X]),
    ("count_nonzero()", lambda m, x: x.count_nonzero(), [ZEROS]),
    ("count_nonzero(dim=0)", lambda m, x: m.count_nonzero(x, dim=0), [ZEROS]),
    ("count_nonzero((0, 1))", lambda m, x: x.count_nonzero((0, 1)), [ZEROS]),
    # ---- cumprod / lerp / xlogy / pointwise
    ("cumprod(1)", lambda m, x: x.cumprod(1), [X]),
    ("cumprod zeros", lambda m, x: m.cumprod(x, dim=1), [ZEROS]),
    ("cumprod(0) zeros", lambda m, x: x.cumprod(0), [ZEROS]),
    ("cumprod(int)", lambda m, x: x.cumprod(0), [INTS]),
    ("cumprod(dtype=)", lambda m, x: (x > 0).cumprod(1, dtype=m.float64), [X]),
    ("lerp(0.3)", lambda m, x, y: x.lerp(y, 0.3), [X, Y]),
    ("lerp(0.7)", lambda m, x, y: m.lerp(x, y, 0.7), [X, Y]),
    ("lerp(tensor weight)", lambda m, x, y, w: m.lerp(x, end=y, weight=w), [X, Y, RNG.uniform(-1, 2, 4)]),
    ("lerp_", lambda m, x, y: x.clone().lerp_(y, 0.25), [X, Y]),
    ("xlogy", lambda m, x, y: m.xlogy(x, y), [ZEROS.clip(0), np.abs(Y) + 0.1]),
    ("xlogy(number)", lambda m, x: x.xlogy(2.0), [ZEROS]),
    ("log1p", lambda m, x: x.log1p(), [np.abs(X)]),
    ("expm1", lambda m, x: m.expm1(x), [X]),
    ("square", lambda m, x: x.square(), [X]),
    ("square(int)", lambda m, x: m.square(x), [INTS]),
    ("reciprocal", lambda m, x: x.reciprocal(), [X]),
    ("reciprocal(int)", lambda m, x: (x + 1).reciprocal(), [INTS]),
    ("clamp_min", lambda m, x: x.clamp_min(0.1), [X]),
    ("clamp_max(max=)", lambda m, x: m.clamp_max(x, max=-0.2), [X]),
    ("clamp_min(tensor)", lambda m, x, y: x.clamp_min(y), [X, Y]),
    # ---- products
    ("addmm", lambda m, b, x, w: m.addmm(b, x, w), [V[:3], X, Y.T]),
    ("addmm(beta=, alpha=)", lambda m, b, x, w: b.addmm(x, w, beta=0.5, alpha=-2.0), [X[:, :3], X, Y.T]),
    ("addmm(beta=0) ignores nan", lambda m, x, w: m.addmm(m.full((3, 3), float("nan"), dtype=m.float64),
                                                         x, w, beta=0), [X, Y.T]),
    ("baddbmm", lambda m, b, x, y: m.baddbmm(b, x, y.transpose(1, 2), alpha=0.5), [X3[0, :, :3], X3, X3]),
    # ---- the sweep: methods a tutorial uses, already in minilora, checked once more
    ("flip", lambda m, x: x.flip(0, 2), [X3]),
    ("chunk", lambda m, x: x.chunk(3, dim=1), [X]),
    ("unbind", lambda m, x: m.unbind(x, 1), [X]),
    ("expand_as", lambda m, x, y: x[:1].expand_as(y), [X, Y]),
    ("nonzero", lambda m, x: (x > 0).nonzero(), [X]),
    ("sort(descending)", lambda m, x: x.sort(1, descending=True), [TIES]),
    ("argsort", lambda m, x: m.argsort(x, dim=0), [X]),
    ("amax/amin", lambda m, x: (x.amax(1), m.amin(x, dim=0, keepdim=True)), [TIES]),
    ("prod(1)", lambda m, x: x.prod(1), [ZEROS]),
    ("sign floor ceil round", lambda m, x: (x.sign(), x.floor(), m.ceil(x), x.round(decimals=1)), [X]),
    ("einsum", lambda m, x, y: m.einsum("ij,kj->ik", x, y), [X, Y]),
    ("einsum trace 'ii'", lambda m, x: m.einsum("ii", x[:, :3]), [X]),
    ("einsum diagonal 'bii->bi'", lambda m, x: m.einsum("bii->bi", x[:, :, :3]), [X3]),
    ("einsum 'iji,jk->k'", lambda m, x, y: m.einsum("iji,jk->k", x[:, :, :2], y), [X3, Y]),
    ("outer", lambda m, x, y: m.outer(x, y), [V, V[:3]]),
    ("eye", lambda m: (m.eye(3), m.eye(2, 4, dtype=m.float64)), []),
    ("log_softmax(dim)", lambda m, x: x.log_softmax(dim=1), [X]),
    ("F.gelu(approximate='tanh')", lambda m, x: F(m).gelu(x, approximate="tanh"), [X]),
    ("F.dropout(training=False)", lambda m, x: F(m).dropout(x, 0.5, training=False), [X]),
    ("F.embedding", lambda m, w: F(m).embedding(m.tensor([[0, 2], [2, 1]]), w), [X]),
    ("F.linear", lambda m, x, w, b: F(m).linear(x, w, b), [X, Y, Y[:, 0]]),
    ("flip(dims=)", lambda m, x: x.flip(dims=(0, -1)), [X3]),
    ("sign(bool)", lambda m, x: (x > 0).sign(), [X]),
    ("F.linear 1-D weight", lambda m, x, w: F(m).linear(x, w), [X, V]),
    ("F.linear 1-D input and weight", lambda m, x, w: F(m).linear(x, w), [V, V]),
    # ---- more of the sweep: cheap additions
    ("unflatten", lambda m, x: x.unflatten(1, (2, -1)), [X]),
    ("lib.unflatten(dim=-1)", lambda m, x: m.unflatten(x, -1, (2, 1, 2)), [X3]),
    ("select", lambda m, x: x.select(1, -1), [X3]),
    ("lib.select(dim=, index=)", lambda m, x: m.select(x, dim=0, index=2), [X]),
    ("broadcast_to", lambda m, x: x.broadcast_to((2, 3, 4)), [X]),
    ("hstack 2-D", lambda m, x, y: m.hstack([x, y]), [X, Y]),
    ("hstack 1-D", lambda m, v: m.hstack((v, v[:2])), [V]),
    ("vstack", lambda m, x, v: m.vstack([x, v]), [X, V]),
    ("meshgrid ij", lambda m, a, b: m.meshgrid(a, b, indexing="ij"), [V, V[:3]]),
    ("meshgrid xy", lambda m, a, b, c: m.meshgrid([a, b, c], indexing="xy"), [V, V[:3], V[:2]]),
    ("trace", lambda m, x: x.trace(), [X]),
    ("trace(int)", lambda m, x: m.trace(x.reshape(2, 4)), [INTS]),
    ("diff", lambda m, x: x.diff(), [X]),
    ("diff(n=2, dim=0, prepend, append)", lambda m, x, y: m.diff(x, n=2, dim=0, prepend=y[:1], append=y), [X, Y]),
    ("diff(bool)", lambda m, x: (x > 0).diff(dim=1), [X]),
    ("diff(int)", lambda m, x: x.diff(), [INTS]),
    ("log2 log10", lambda m, x: (x.log2(), m.log10(x)), [np.abs(X) + np.array([0.0, 1.0, 7.0, 1e3])]),
    ("log2(int)", lambda m, x: m.log2(x + 1), [INTS]),
    ("fmod", lambda m, x: x.fmod(0.7), [X * 3]),
    ("fmod(tensor)", lambda m, x, y: m.fmod(x, y), [X * 3, Y]),
    ("fmod(int)", lambda m, x: m.fmod(x - 2, 3), [INTS]),
    ("logical_xor", lambda m, x, y: (x > 0).logical_xor(y), [X, Y]),
    ("addcmul", lambda m, x, a, b: x.addcmul(a, b, value=0.5), [X, Y, V]),
    ("lib.addcmul", lambda m, x, a, b: m.addcmul(x, a, b), [X, Y, V]),
    ("addcdiv", lambda m, x, a, b: m.addcdiv(x, a, b, value=-0.1), [X, Y, np.abs(V) + 1]),
    ("addcmul_/addcdiv_", lambda m, x, a, b: x.clone().addcmul_(a, b, value=2).addcdiv_(a, b + 3), [X, Y, V]),
    ("var_mean", lambda m, x: m.var_mean(x, 1), [X]),
    ("std_mean(correction=0, keepdim)", lambda m, x: m.std_mean(x, dim=(0, 2), keepdim=True, correction=0), [X3]),
    ("var_mean(False)", lambda m, x: m.var_mean(x, False), [X]),
    ("tril_indices", lambda m: (m.tril_indices(3, 4), m.triu_indices(4, 3, 1), m.tril_indices(3, 3, -1)), []),
    # ---- functional activations, normalize, cosine similarity
    ("F.softplus", lambda m, x: F(m).softplus(x), [SPREAD]),
    ("F.softplus(2, 1)", lambda m, x: F(m).softplus(x, 2, 1), [SPREAD]),
    ("F.softplus(beta=0.5, threshold=5)", lambda m, x: F(m).softplus(x, beta=0.5, threshold=5.0), [SPREAD]),
    ("F.leaky_relu", lambda m, x: F(m).leaky_relu(x), [SPREAD]),
    ("F.leaky_relu(negative_slope=0.2)", lambda m, x: F(m).leaky_relu(x, negative_slope=0.2), [SPREAD]),
    ("F.normalize", lambda m, x: F(m).normalize(x), [X3]),
    ("F.normalize(p=1, dim=0)", lambda m, x: F(m).normalize(x, p=1, dim=0), [X]),
    ("F.normalize zero row", lambda m, x: F(m).normalize(x, 2.0, -1), [ZERO_ROW]),
    ("F.cosine_similarity", lambda m, x, y: F(m).cosine_similarity(x, y), [X, Y]),
    ("F.cosine_similarity(dim=0)", lambda m, x, y: F(m).cosine_similarity(x, y, dim=0), [X, Y]),
    ("F.cosine_similarity broadcast", lambda m, x, v: F(m).cosine_similarity(x, v, -1), [X, V]),
    ("F.cosine_similarity zero row", lambda m, x, y: F(m).cosine_similarity(x, y, 1, 1e-6), [ZERO_ROW, Y]),
    ("F.cosine_similarity tiny norm", lambda m, x, y: F(m).cosine_similarity(x * 1e-9, y, eps=1e-8), [X, Y]),
    # ---- trigonometric / hyperbolic, atan2, logaddexp, nan_to_num, kthvalue, cummax/cummin, cross
    ("tan asin acos atan", lambda m, x: (x.tan(), m.asin(x / 3), x.div(3).acos(), m.atan(x)), [X]),
    ("sinh cosh exp2", lambda m, x: (x.sinh(), m.cosh(x), x.exp2()), [X]),
    ("erf", lambda m, x: (m.erf(x), (x * 4).erf()), [X]),
    ("asinh acosh atanh", lambda m, x: (x.asinh(), m.acosh(x.abs() + 1.5), (x / 3).atanh()), [X]),
    ("asin out of domain", lambda m, x: m.asin(x * 3), [X]),
    ("exp2(int)", lambda m, x: m.exp2(x), [INTS]),  # float32, exact powers of two
    ("atan2", lambda m, y, x: m.atan2(y, x), [X, Y]),
    ("atan2 broadcast, arctan2", lambda m, y, x: (y.atan2(x), m.arctan2(x, y)), [X, V]),
    ("logaddexp", lambda m, a, b: m.logaddexp(a, b), [X * 30, Y]),
    ("logaddexp(number)", lambda m, a: a.logaddexp(m.tensor(0.5, dtype=m.float64)), [X]),
    ("nan_to_num", lambda m, x: x.nan_to_num(), [np.array([1.0, np.nan, np.inf, -np.inf, -2.0])]),
    ("nan_to_num(nan=, posinf=, neginf=)", lambda m, x: m.nan_to_num(x, nan=-1.0, posinf=9.0, neginf=-9.0),
     [np.array([1.0, np.nan, np.inf, -np.inf, -2.0])]),
    ("nan_to_num(int)", lambda m, x: x.nan_to_num(), [INTS]),
    ("kthvalue(2)", lambda m, x: x.kthvalue(2), [X]),
    ("kthvalue(1, 0, True)", lambda m, x: m.kthvalue(x, 1, 0, True), [X3]),
    ("kthvalue(k=, dim=, keepdim=)", lambda m, x: x.kthvalue(k=3, dim=1, keepdim=False), [X]),  # (no ties:
    # which of equal values torch's quickselect returns is unspecified)
    ("cummax(1)", lambda m, x: x.cummax(1), [TIES]),
    ("cummin(dim=0)", lambda m, x: m.cummin(x, dim=0), [X3]),
    ("cummax NaN", lambda m, x: x.cummax(0), [np.array([1.0, 3.0, 3.0, 2.0, np.nan, 5.0, np.nan])]),
    ("cummin(int)", lambda m, x: x.cummin(0), [INTS]),
    ("cross(dim=1)", lambda m, a, b: m.cross(a[:, :3], b[:, :3], dim=1), [X, Y]),
    ("cross(dim=-1) broadcast", lambda m, a, b: a.cross(b, dim=-1), [X3[:, :, :3], V[:3].reshape(1, 1, 3)]),
    ("searchsorted", lambda m, x: m.searchsorted(m.tensor([-1.0, 0.0, 0.5, 1.0], dtype=m.float64), x), [X]),
    ("searchsorted(right=True) ties", lambda m: m.searchsorted(m.tensor([1, 2, 2, 3]), m.tensor([2, 0, 5]),
                                                                right=True), []),
    ("searchsorted(side='right', out_int32)", lambda m: m.searchsorted(m.tensor([1, 2, 2, 3]), 2, side="right",
                                                                        out_int32=True), []),
    ("searchsorted N-D", lambda m, s, v: m.searchsorted(s.sort(-1).values, v), [X, Y[:, :2]]),
    ("searchsorted(sorter=)", lambda m, s, v: m.searchsorted(s, v, sorter=s.argsort()), [V, X]),
    ("bucketize", lambda m, x: m.bucketize(x, m.tensor([-1.0, 0.0, 1.0], dtype=m.float64)), [X]),
    ("bucketize(right=True) ties", lambda m: m.bucketize(m.tensor([[1, 2], [3, 4]]), m.tensor([2, 3]), right=True),
     []),
    # ---- the rest of the common activations, at their kinks (torch's one-sided gradients there)
    ("F.elu", lambda m, x: F(m).elu(x), [KINKS]),
    ("F.elu(alpha=0.5)", lambda m, x: F(m).elu(x, alpha=0.5), [KINKS]),
    ("F.selu", lambda m, x: F(m).selu(x), [KINKS]),
    ("F.celu(2.0)", lambda m, x: F(m).celu(x, 2.0), [KINKS]),
    ("F.relu6", lambda m, x: F(m).relu6(x), [KINKS]),
    ("F.hardtanh", lambda m, x: F(m).hardtanh(x), [KINKS]),
    ("F.hardtanh(min_val=-3, max_val=6)", lambda m, x: F(m).hardtanh(x, min_val=-3.0, max_val=6.0), [KINKS]),
    ("F.hardswish", lambda m, x: F(m).hardswish(x), [KINKS]),
    ("F.hardsigmoid", lambda m, x: F(m).hardsigmoid(x), [KINKS]),
    ("F.logsigmoid", lambda m, x: F(m).logsigmoid(x), [KINKS]),
    ("F.mish", lambda m, x: F(m).mish(x), [KINKS]),
    ("F.softsign", lambda m, x: F(m).softsign(x), [KINKS]),
    ("F.glu", lambda m, x: F(m).glu(x), [X]),
    ("F.glu(dim=0)", lambda m, x: F(m).glu(x, dim=0), [X3]),
    ("F.softmin", lambda m, x: F(m).softmin(x, dim=1), [X]),
    ("F.softmin(dtype)", lambda m, x: F(m).softmin(x.float(), -1, dtype=m.float64), [X]),
    ("nn.ELU/CELU/SELU", lambda m, x: (m.nn.ELU(0.3)(x), m.nn.CELU(alpha=0.5)(x), m.nn.SELU()(x)), [KINKS]),
    ("nn.Hardtanh/ReLU6", lambda m, x: (m.nn.Hardtanh(-2.0, 3.0)(x), m.nn.ReLU6()(x)), [KINKS]),
    ("nn.Hardswish/Hardsigmoid/Mish", lambda m, x: (m.nn.Hardswish()(x), m.nn.Hardsigmoid()(x), m.nn.Mish()(x)),
     [KINKS]),
    ("nn.LogSigmoid/Softsign", lambda m, x: (m.nn.LogSigmoid()(x), m.nn.Softsign()(x)), [KINKS]),
    ("nn.GLU/Softmin/LogSoftmax", lambda m, x: (m.nn.GLU(1)(x), m.nn.Softmin(dim=0)(x), m.nn.LogSoftmax(1)(x)), [X]),
    # ---- losses
    ("F.smooth_l1_loss", lambda m, x, y: F(m).smooth_l1_loss(x, y), [SPREAD, Y]),
    ("F.smooth_l1_loss(beta=0.5, sum)", lambda m, x, y: F(m).smooth_l1_loss(x, y, reduction="sum", beta=0.5),
     [SPREAD, Y]),
    ("F.smooth_l1_loss(beta=0)", lambda m, x, y: F(m).smooth_l1_loss(x, y, beta=0.0, reduction="none"),
     [SPREAD, Y]),
    ("F.smooth_l1_loss legacy", lambda m, x, y: F(m).smooth_l1_loss(x, y, None, False), [SPREAD, Y]),
    ("F.huber_loss", lambda m, x, y: F(m).huber_loss(x, y), [SPREAD, Y]),
    ("F.huber_loss(none, delta)", lambda m, x, y: F(m).huber_loss(x, y, "none", 0.5), [SPREAD, Y]),
    ("F.huber_loss(weight=)", lambda m, x, y, w: F(m).huber_loss(x, y, delta=2.0, weight=w), [SPREAD, Y, np.abs(X)]),
    ("F.kl_div(batchmean)", lambda m, x, t: F(m).kl_div(x, t, reduction="batchmean"), [LOGP, P]),
    ("F.kl_div(sum)", lambda m, x, t: F(m).kl_div(x, t, reduction="sum"), [LOGP, P + 0.1]),
    ("F.kl_div(none)", lambda m, x, t: F(m).kl_div(x, t, None, None, "none"), [LOGP, P + 0.05]),
    ("F.kl_div(log_target)", lambda m, x, t: F(m).kl_div(x, t, reduction="batchmean", log_target=True),
     [LOGP, np.log(P + 0.05)]),
    ("F.kl_div 0-d batchmean", lambda m, x, t: F(m).kl_div(x[0, 0], t[0, 0], reduction="batchmean"), [LOGP, P + 0.1]),
    ("F.pairwise_distance", lambda m, x, y: F(m).pairwise_distance(x, y), [X, Y]),
    ("F.pairwise_distance(p=1, keepdim)", lambda m, x, y: F(m).pairwise_distance(x, y, p=1.0, keepdim=True), [X, Y]),
    ("F.pairwise_distance equal rows, 1-D", lambda m, v: F(m).pairwise_distance(v, v, 3.0), [V]),
    ("F.margin_ranking_loss", lambda m, a, b: F(m).margin_ranking_loss(
        a, b, m.tensor([1.0, -1.0, 1.0, -1.0], dtype=m.float64)), [V, V[::-1].copy()]),
    ("F.margin_ranking_loss(margin, none)", lambda m, a, b: F(m).margin_ranking_loss(
        a, b, m.tensor([1.0, -1.0, 1.0, -1.0], dtype=m.float64), 0.5, reduction="none"), [V, V[::-1].copy()]),
    ("F.triplet_margin_loss", lambda m, a, p, n: F(m).triplet_margin_loss(a, p, n), [X, Y, X[::-1].copy()]),
    ("F.triplet_margin_loss(swap, p=1, sum)", lambda m, a, p, n: F(m).triplet_margin_loss(
        a, p, n, margin=2.0, p=1, swap=True, reduction="sum"), [X, Y, X[::-1].copy()]),
    ("F.cosine_embedding_loss", lambda m, a, b: F(m).cosine_embedding_loss(a, b, m.tensor([1, -1, -1])), [X, Y]),
    ("F.cosine_embedding_loss(margin, 1-D)", lambda m, a, b: F(m).cosine_embedding_loss(
        a, b, m.tensor(-1), margin=-0.5, reduction="sum"), [V, V[::-1].copy()]),
    ("nn.PairwiseDistance/MarginRanking/Triplet/CosineEmbedding", lambda m, a, b, c: (
        m.nn.PairwiseDistance(p=3.0)(a, b), m.nn.MarginRankingLoss(0.1)(a[:, 0], b[:, 0], m.tensor([1.0, -1, 1],
                                                                                               dtype=m.float64)),
        m.nn.TripletMarginLoss(swap=True)(a, b, c), m.nn.CosineEmbeddingLoss(0.2, reduction="none")(
            a, b, m.tensor([1, -1, 1]))), [X, Y, X[::-1].copy()]),
    ("nn.Unflatten", lambda m, x: m.nn.Unflatten(1, (2, 2))(x), [X]),
    # ---- F.pad's other modes (negative amounts crop first, as torch)
    ("F.pad reflect", lambda m, x: F(m).pad(x, (1, 2), mode="reflect"), [X]),
    ("F.pad reflect 2-D", lambda m, x: F(m).pad(x, (1, 1, 2, 0), "reflect"), [X3]),
    ("F.pad replicate", lambda m, x: F(m).pad(x, [1, 2, 0, 3], mode="replicate"), [X3]),
    ("F.pad circular 3-D", lambda m, x: F(m).pad(x[None], (1, 1, 1, 1, 1, 0), mode="circular"), [X3]),
    ("F.pad circular cropping", lambda m, x: F(m).pad(x, (2, -1, 1, 3), mode="circular"), [X3]),
    ("F.pad reflect cropping", lambda m, x: F(m).pad(x, (-1, 2), mode="reflect"), [X]),
    ("F.batch_norm(training=True)", lambda m, x, w, b: F(m).batch_norm(x, None, None, w, b, True), [X3, V[:3], V[1:]]),
    ("F.batch_norm running stats", lambda m, x: F(m).batch_norm(x, m.tensor(V[:3]), m.tensor(np.abs(V[1:])), eps=1e-3),
     [X3]),
    ("F.group_norm", lambda m, x, w, b: F(m).group_norm(x, 1, w, b), [X3, V[:3], V[1:]]),
    ("F.group_norm(num_groups=2)", lambda m, x: F(m).group_norm(x.reshape(1, 4, 6), num_groups=2, eps=0.1), [X3]),
    ("nn.GroupNorm", lambda m, x: m.nn.GroupNorm(3, 3, dtype=m.float64)(x), [X3]),
    # ---- convolution and pooling
    ("F.conv2d", lambda m, x, w, b: F(m).conv2d(x, w.repeat(1, 2, 1, 1), b), [IMG, KERNEL, V[:2].repeat(3)]),
    ("F.conv2d(stride, padding, dilation, groups)", lambda m, x, w: F(m).conv2d(x, w, None, (2, 1), (1, 2), (2, 1), 2),
     [IMG, KERNEL]),
    ("F.conv2d(padding='same', dilation=2)", lambda m, x, w: F(m).conv2d(x, w, padding="same", dilation=2, groups=2),
     [IMG, KERNEL]),
    ("F.conv2d unbatched, 'valid'", lambda m, x, w: F(m).conv2d(x[0], w, padding="valid", groups=2), [IMG, KERNEL]),
    ("F.conv1d", lambda m, x, w: F(m).conv1d(x, w, stride=2, padding=1, dilation=2, groups=2), [SEQ, KERNEL[:4, :, 0]]),
    ("F.conv1d(padding='same')", lambda m, x, w: F(m).conv1d(x, w.repeat(1, 2, 1), padding="same"), [SEQ, KERNEL[:3, :, 0]]),
    ("F.max_pool2d", lambda m, x: F(m).max_pool2d(x, 2), [IMG]),
    ("F.max_pool2d(3, 2, 1, 2, return_indices)", lambda m, x: F(m).max_pool2d(x, 3, 2, 1, 2, return_indices=True), [IMG]),
    ("F.max_pool2d ties", lambda m, x: F(m).max_pool2d(x.round(), 2, stride=1, return_indices=True), [IMG]),
    ("F.max_pool1d", lambda m, x: F(m).max_pool1d(x, 3, padding=1, return_indices=True), [SEQ]),
    ("F.avg_pool2d", lambda m, x: F(m).avg_pool2d(x, 2), [IMG]),
    ("F.avg_pool2d(count_include_pad=False)", lambda m, x: F(m).avg_pool2d(x, 3, 2, 1, count_include_pad=False), [IMG]),
    ("F.avg_pool2d((3, 2), padding, divisor_override)", lambda m, x: (F(m).avg_pool2d(x, (3, 2), 1, (1, 1)),
                                                               F(m).avg_pool2d(x, 2, divisor_override=3)), [IMG]),
    ("F.avg_pool1d", lambda m, x: F(m).avg_pool1d(x, 3, 2, 1), [SEQ]),
    ("ceil_mode max pools", lambda m, x: (F(m).max_pool2d(x, 2, ceil_mode=True, return_indices=True),
                                          F(m).max_pool2d(x, 3, 2, 1, 2, ceil_mode=True, return_indices=True),
                                          F(m).max_pool1d(x[:, :, 0], 4, 3, ceil_mode=True)), [IMG]),
    ("ceil_mode avg pools", lambda m, x: (F(m).avg_pool2d(x, 2, ceil_mode=True), F(m).avg_pool2d(x, 3, 2, 1, True),
                                          F(m).avg_pool2d(x, 3, 2, 1, True, False),
                                          F(m).avg_pool2d(x, (3, 4), (2, 3), (1, 2), True, divisor_override=5),
                                          F(m).avg_pool1d(x[:, :, 0], 4, 3, ceil_mode=True)), [IMG]),
    ("nn.MaxPool2d/AvgPool2d(ceil_mode=True)", lambda m, x: (m.nn.MaxPool2d(3, 2, ceil_mode=True)(x),
                                                            m.nn.AvgPool2d(3, 2, ceil_mode=True)(x)), [IMG]),
    ("F.adaptive_avg_pool2d", lambda m, x: (F(m).adaptive_avg_pool2d(x, (3, 4)), F(m).adaptive_avg_pool2d(x, 1),
                                            F(m).adaptive_avg_pool2d(x, (None, 2))), [IMG]),
    ("nn pooling modules", lambda m, x: (m.nn.MaxPool2d(2)(x), m.nn.MaxPool2d(3, 1, 1, return_indices=True)(x),
                                         m.nn.AvgPool2d(3, stride=1, padding=1)(x), m.nn.AdaptiveAvgPool2d((2, 2))(x),
                                         m.nn.MaxPool1d(2)(x[0]), m.nn.AvgPool1d(3, 2, 1)(x[0])), [IMG]),
    # ---- nn modules
    ("nn.Softplus", lambda m, x: m.nn.Softplus(beta=2.0, threshold=3.0)(x), [SPREAD]),
    ("nn.LeakyReLU", lambda m, x: m.nn.LeakyReLU(0.1)(x), [SPREAD]),
    ("nn.CosineSimilarity", lambda m, x, y: m.nn.CosineSimilarity(dim=0, eps=1e-6)(x, y), [X, Y]),
    ("nn.SmoothL1Loss", lambda m, x, y: m.nn.SmoothL1Loss(reduction="sum", beta=0.3)(x, y), [SPREAD, Y]),
    ("nn.HuberLoss", lambda m, x, y: m.nn.HuberLoss("none", 0.7)(x, y), [SPREAD, Y]),
    ("nn.KLDivLoss", lambda m, x, t: m.nn.KLDivLoss(reduction="batchmean", log_target=True)(x, t),
     [LOGP, np.log(P + 0.05)]),
]
# torch's unique/bincount results have a node whose backward is not implemented: no gradient check
NO_BACKWARD = {"unique(int)", "unique(inverse, counts)", "unique(False, True)", "unique(dim=0)",
               "unique(sorted=True, return_counts)"}


def _written_through(m, x, view_of):
    """A view's in-place change shows in its base, as in torch."""
    base = x.detach().clone()
    view_of(base).fill_(0.5)
    return base


@pytest.mark.parametrize("name,snippet,inputs", CASES, ids=[c[0] for c in CASES])
def test_same_as_torch(name, snippet, inputs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's own deprecation chatter; warnings are tested below
        assert_same_as_torch(snippet, inputs, grad=name not in NO_BACKWARD)


def test_unique_of_a_float_tensor_has_no_derivative_as_in_torch():
    """torch records unique(x) in the graph, but its backward raises: so does minilora's."""
    for lib in (torch, ml):
        x = (torch.tensor(X, requires_grad=True) if lib is torch
             else ml.tensor(X, dtype=ml.float64, requires_grad=True))
        values = lib.unique(x)
        assert values.requires_grad
        with pytest.raises(RuntimeError, match="derivative for .*unique"):
            values.sum().backward()
    weights = ml.tensor(X[0], dtype=ml.float64, requires_grad=True)
    counts = ml.bincount(ml.tensor([0, 2, 2, 1]), weights)
    assert counts.dtype == ml.float64 and counts.requires_grad
    with pytest.raises(RuntimeError, match="^derivative for aten::bincount is not implemented$"):  # (torch's words)
        counts.sum().backward()


def test_bincount_weight_dtypes_are_torchs():
    ids = [0, 2, 2]
    for w in ([1.0, 2.0, 3.0], [1, 2, 3]):
        for dtype in ((torch.float32, ml.float32), (torch.int64, ml.int64)) if isinstance(w[0], int) else \
                ((torch.float32, ml.float32), (torch.float64, ml.float64)):
            theirs = torch.bincount(torch.tensor(ids), torch.tensor(w, dtype=dtype[0]))
            ours = ml.bincount(ml.tensor(ids), ml.tensor(w, dtype=dtype[1]))
            assert str(ours.dtype) == str(theirs.dtype).replace("torch.", "")
            assert ours.tolist() == theirs.tolist()


def test_float32_erf_is_torchs_to_the_last_bit_or_one():
    x = np.linspace(-5, 5, 2001, dtype=np.float32)
    ours, theirs = ml.erf(ml.tensor(x)).numpy(force=True), torch.erf(torch.tensor(x)).numpy(force=True)
    assert ours.dtype == np.float32
    assert np.all(np.abs(ours - theirs) <= np.spacing(np.abs(theirs)))


def test_aminmax_is_a_named_tuple_min_max():
    for dim, keepdim in ((None, False), (1, True), (0, False)):
        theirs = torch.tensor(TIES, requires_grad=True)
        ours = ml.tensor(TIES, dtype=ml.float64, requires_grad=True)
        t, m = theirs.aminmax(dim=dim, keepdim=keepdim), ml.aminmax(ours, dim=dim, keepdim=keepdim)
        assert type(m).__name__ == "aminmax" and m.min is m[0] and m.max is m[1]
        for a, b in ((t.min, m.min), (t.max, m.max)):
            np.testing.assert_array_equal(b.detach().numpy(force=True), a.detach().numpy(force=True))
        (t.min * 2 + t.max).sum().backward()
        (m.min * 2 + m.max).sum().backward()
        np.testing.assert_allclose(ours.grad.numpy(force=True), theirs.grad.numpy(force=True), rtol=1e-15)  # ties share


def test_cross_without_dim_warns_and_takes_the_first_dimension_of_three():
    a, b = RNG.standard_normal((3, 3)), RNG.standard_normal((3, 3))
    with pytest.warns(UserWarning, match="dim"):
        ours = ml.cross(ml.tensor(a), ml.tensor(b))
    with warnings.catch_warnings():  # torch warns once per process (TORCH_WARN_ONCE): an earlier test's call
        warnings.simplefilter("ignore")  # (the op_db sweeps) may have taken it; its message is the one above
        theirs = torch.cross(torch.tensor(a), torch.tensor(b))
    np.testing.assert_allclose(ours.numpy(force=True), theirs.numpy(force=True), rtol=1e-15)


def test_median_with_nan_is_nan_at_the_first_nan():
    data = np.array([[1.0, np.nan, 2.0, np.nan], [3.0, 1.0, 2.0, 0.0]])
    theirs, ours = torch.tensor(data).median(1), ml.tensor(data, dtype=ml.float64).median(1)
    np.testing.assert_array_equal(ours.values.numpy(force=True), theirs.values.numpy(force=True))
    assert ours.indices.tolist() == theirs.indices.tolist()
    assert math.isnan(ml.tensor(data, dtype=ml.float64).median().item())
    assert math.isnan(ml.tensor([], dtype=ml.float32).median().item())  # torch: NaN, no error


def test_kl_div_mean_warns_as_torch():
    x, t = ml.tensor(LOGP, dtype=ml.float64), ml.tensor(P, dtype=ml.float64)
    with pytest.warns(UserWarning, match="batchmean"):
        ours = ml.nn.functional.kl_div(x, t)
    with pytest.warns(UserWarning, match="batchmean"):
        theirs = torch.nn.functional.kl_div(torch.tensor(LOGP), torch.tensor(P))
    assert abs(ours.item() - theirs.item()) < 1e-15
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ml.nn.functional.kl_div(x, t, reduction="batchmean")  # no warning


def test_loss_target_size_warning_as_torch():
    with pytest.warns(UserWarning, match="target size"):
        ml.nn.functional.smooth_l1_loss(ml.tensor(X), ml.tensor(V))
    with pytest.warns(UserWarning, match="target size"):
        ml.nn.functional.huber_loss(ml.tensor(X), ml.tensor(V))


def test_diagonal_is_a_writable_view_as_torch():
    """torch's diagonal is a writable view: writing it writes the base (minilora's refused writes
    until round 7)."""
    x = ml.tensor(X)
    d = x.diagonal()
    assert np.shares_memory(d._array, x._array)
    d.fill_(0)
    expected = torch.tensor(X)
    expected.diagonal().fill_(0)
    assert np.array_equal(x.numpy(force=True), expected.numpy())


# ---- errors: where torch raises, minilora raises the same type ------------------------------------------
ERRORS = [
    ("narrow start past end", lambda m: _t(m, X).narrow(1, 5, 0)),
    ("narrow too long", lambda m: _t(m, X).narrow(1, 2, 3)),
    ("narrow bad dim", lambda m: _t(m, X).narrow(2, 0, 1)),
    ("roll shifts/dims differ", lambda m: _t(m, X).roll((1, 2), 0)),
    ("diagonal same dims", lambda m: _t(m, X).diagonal(0, 1, 1)),
    ("diagonal of a vector", lambda m: _t(m, V).diagonal()),
    ("diag of 3-D", lambda m: _t(m, X3).diag()),
    ("index_select out of range", lambda m: _t(m, X).index_select(0, m.tensor([3]))),
    ("index_select 2-D index", lambda m: _t(m, X).index_select(0, m.tensor([[0]]))),
    ("index_select float index", lambda m: _t(m, X).index_select(0, m.tensor([0.0]))),
    ("index_add out of range", lambda m: _t(m, X).index_add(0, m.tensor([5]), _t(m, X[:1]))),
    ("index_add wrong source", lambda m: _t(m, X).index_add(0, m.tensor([1]), _t(m, X[:1, :2]))),
    ("index_add dtypes differ", lambda m: _t(m, X).index_add(0, m.tensor([1]), _t(m, X[:1]).float())),
    ("scatter_add of a number", lambda m: _t(m, X).scatter_add(0, m.tensor([[1]]), 5.0)),
    ("scatter dtypes differ", lambda m: _t(m, X).scatter(0, m.tensor([[1]]), _t(m, X).float())),
    ("scatter index out of range", lambda m: _t(m, X).scatter(0, m.tensor([[3]]), _t(m, X))),
    ("masked_select int mask", lambda m: _t(m, X).masked_select(m.tensor([1, 0, 1, 0]))),
    ("lerp of integers", lambda m: m.tensor([1, 2]).lerp(m.tensor([3, 4]), 0.5)),
    ("lerp dtypes differ", lambda m: _t(m, X).lerp(_t(m, X).float(), 0.5)),
    ("movedim counts differ", lambda m: _t(m, X).movedim((0, 1), (1,))),
    ("unique dim out of range", lambda m: m.unique(m.tensor([2, 1]), dim=5)),
    ("bincount negative", lambda m: m.tensor([-1, 2]).bincount()),
    ("bincount 2-D", lambda m: m.tensor([[1]]).bincount()),
    ("bincount float", lambda m: m.tensor([1.0]).bincount()),
    ("repeat_interleave count mismatch", lambda m: _t(m, X).repeat_interleave(m.tensor([1, 2]), dim=1)),
    ("repeat_interleave negative", lambda m: _t(m, X).repeat_interleave(-1)),
    ("median empty dim", lambda m: m.zeros(0, 2).median(0)),
    ("select out of range", lambda m: _t(m, X).select(1, 4)),
    ("trace of 3-D", lambda m: _t(m, X3).trace()),
    ("diff of 0-D", lambda m: m.tensor(1.0).diff()),
    ("isclose dtypes differ", lambda m: m.isclose(_t(m, X), _t(m, X).float())),
    ("addcdiv of integers", lambda m: m.addcdiv(_t(m, X), m.tensor([1]), m.tensor([2]))),
    ("meshgrid 2-D", lambda m: m.meshgrid(_t(m, X), _t(m, X), indexing="ij")),
    ("meshgrid bad indexing", lambda m: m.meshgrid(_t(m, V), _t(m, V), indexing="ji")),
    ("fmod integer by 0", lambda m: m.fmod(m.tensor([3]), 0)),
    ("kthvalue k too large", lambda m: _t(m, X).kthvalue(5)),
    ("searchsorted side and right disagree", lambda m: m.searchsorted(_t(m, V), _t(m, X), right=True, side="left")),
    ("searchsorted rows differ", lambda m: m.searchsorted(_t(m, X), _t(m, X3))),
    ("bucketize 2-D boundaries", lambda m: m.bucketize(_t(m, V), _t(m, X))),
    ("einsum repeated output label", lambda m: m.einsum("ij->ii", _t(m, X))),
    ("einsum diagonal of a non-square", lambda m: m.einsum("ii->i", _t(m, X))),
    ("cross without a dimension of 3", lambda m: m.cross(_t(m, X), _t(m, X), dim=1)),
    ("cross of different ranks", lambda m: m.cross(_t(m, X3[:, :, :3]), _t(m, V[:3]), dim=-1)),
    ("aminmax of nothing", lambda m: m.zeros(0).aminmax()),
    ("margin_ranking_loss ranks differ", lambda m: m.nn.functional.margin_ranking_loss(_t(m, X), _t(m, X), _t(m, V))),
    ("triplet ranks differ", lambda m: m.nn.functional.triplet_margin_loss(_t(m, X), _t(m, X), _t(m, V))),
    ("TripletMarginLoss margin 0", lambda m: m.nn.TripletMarginLoss(margin=0.0)),
    ("pad reflect too wide", lambda m: m.nn.functional.pad(_t(m, X), (4, 0), mode="reflect")),
    ("pad circular wraps twice", lambda m: m.nn.functional.pad(_t(m, X), (5, 0), mode="circular")),
    ("pad reflect of 1-D", lambda m: m.nn.functional.pad(_t(m, V), (1, 1), mode="reflect")),
    ("pad replicate 3 dims of 3-D", lambda m: m.nn.functional.pad(_t(m, X3), (1,) * 6, mode="replicate")),
    ("pad reflect with a value", lambda m: m.nn.functional.pad(_t(m, X), (1, 1), mode="reflect", value=2.0)),
    ("batch_norm stats that require grad", lambda m: m.nn.functional.batch_norm(
        _t(m, X3), m.zeros(3, requires_grad=True), m.ones(3))),
    ("conv2d channels do not match", lambda m: m.nn.functional.conv2d(_t(m, IMG), _t(m, KERNEL))),
    ("conv2d kernel larger than input", lambda m: m.nn.functional.conv2d(_t(m, IMG[:, :, :2]), _t(m, KERNEL), groups=2)),
    ("conv2d 'same' with stride", lambda m: m.nn.functional.conv2d(_t(m, IMG), _t(m, KERNEL), stride=2,
                                                                   padding="same", groups=2)),
    ("conv2d bad padding string", lambda m: m.nn.functional.conv2d(_t(m, IMG), _t(m, KERNEL), padding="full", groups=2)),
    ("max_pool2d pad above half the kernel", lambda m: m.nn.functional.max_pool2d(_t(m, IMG), 2, padding=2)),
    ("Conv2d in_channels not divisible by groups", lambda m: m.nn.Conv2d(3, 4, 3, groups=2)),
    ("Conv2d bad padding_mode", lambda m: m.nn.Conv2d(3, 4, 3, padding_mode="mirror")),
    ("pad unknown mode", lambda m: m.nn.functional.pad(_t(m, X), (1, 1), mode="mirror")),
    ("glu of an odd dimension", lambda m: m.nn.functional.glu(_t(m, X3), 1)),
    ("glu of a scalar", lambda m: m.nn.functional.glu(m.tensor(1.0))),
    ("Hardtanh min above max", lambda m: m.nn.Hardtanh(2.0, 1.0)),
    ("F.linear 1-D weight with bias", lambda m: m.nn.functional.linear(_t(m, X), _t(m, V), _t(m, V[:1]))),
    ("cumprod bad dim", lambda m: _t(m, X).cumprod(2)),
    ("addmm shapes", lambda m: _t(m, X).addmm(_t(m, X), _t(m, X))),
    ("addmm input too big", lambda m: m.zeros(3).addmm(_t(m, X)[:2, :3], _t(m, X)[:, :2])),
    ("smooth_l1_loss negative beta", lambda m: m.nn.functional.smooth_l1_loss(_t(m, X), _t(m, Y), beta=-1.0)),
    ("huber_loss weight shape", lambda m: m.nn.functional.huber_loss(_t(m, X), _t(m, Y), weight=_t(m, V))),
    ("kl_div bad reduction", lambda m: m.nn.functional.kl_div(_t(m, X), _t(m, Y), reduction="avg")),
]


@pytest.mark.parametrize("name,call", ERRORS, ids=[e[0] for e in ERRORS])
def test_same_error_as_torch(name, call):
    with pytest.raises(Exception) as theirs:
        call(torch)
    with pytest.raises(type(theirs.value)):
        call(ml)


def test_options_minilora_does_not_have_raise_clearly():
    """torch can; minilora says so, never ignores the option."""
    # (inplace=True is implemented now: tests/test_torch_conformance_r5_inplace.py)
    # (scatter(reduce="multiply") is implemented now: tests/test_torch_conformance_r4_shape.py)
    with pytest.raises(NotImplementedError, match="out"):
        ml.nn.functional.normalize(ml.tensor(X), out=ml.tensor(X))


# ---- gradient checks of the new ops (float64 central differences) ----------------------------------------
def _leaf(a):
    return ml.tensor(a, dtype=ml.float64, requires_grad=True)


GRAD_CHECKS = [
    ("roll", lambda x: x.roll((1, -2), (0, 2)), [X3]),
    ("roll flat", lambda x: x.roll(3), [X]),
    ("diagonal", lambda x: x.diagonal(1, 2, 0), [X3]),
    ("diag", lambda v: ml.diag(v, -2), [V]),
    ("index_select", lambda x: x.index_select(1, ml.tensor([3, 3, 0])), [X]),
    ("index_add", lambda x, s: x.index_add(0, ml.tensor([1, 1, 2]), s, alpha=-0.5), [X, Y]),
    ("scatter", lambda x, s: x.scatter(1, ml.tensor([[1, 3], [0, 2], [2, 1]]), s[:, :2]), [X, Y]),  # (a src larger
     # than the index: torch refuses its gradient)
    ("scatter_add", lambda x, s: x.scatter_add(0, ml.tensor([[2, 2, 0, 1]]), s[:1]), [X, Y]),
    ("cumprod", lambda x: x.cumprod(1), [ZEROS]),
    ("cumprod dim 0", lambda x: x.cumprod(0), [X3]),
    ("median()", lambda x: x.median(), [X]),
    ("median(dim)", lambda x: x.median(1).values, [X]),
    ("lerp", lambda x, y, w: x.lerp(y, w), [X, Y, RNG.uniform(-0.5, 1.5, (3, 4))]),
    ("xlogy", lambda x, y: ml.xlogy(x, y), [np.abs(X) + 0.1, np.abs(Y) + 0.1]),
    ("log1p", lambda x: x.log1p(), [np.abs(X)]),
    ("expm1", lambda x: x.expm1(), [X]),
    ("softplus", lambda x: ml.nn.functional.softplus(x, 2.0, 3.0), [SPREAD + 0.01]),
    ("leaky_relu", lambda x: ml.nn.functional.leaky_relu(x, 0.3), [SPREAD + 0.01]),
    ("cosine_similarity", lambda x, y: ml.nn.functional.cosine_similarity(x, y), [X, Y]),
    ("normalize", lambda x: ml.nn.functional.normalize(x, 3.0, 0), [X]),
    ("kl_div", lambda x, t: ml.nn.functional.kl_div(x, t, reduction="batchmean"), [LOGP, P + 0.1]),
    ("huber_loss", lambda x, y: ml.nn.functional.huber_loss(x, y, delta=0.5), [SPREAD, Y]),
    ("fmod", lambda x, y: ml.fmod(x, y), [X * 3, Y]),
    ("log2", lambda x: x.log2() + x.log10(), [np.abs(X) + 0.1]),
    ("addcdiv", lambda x, a, b: x.addcdiv(a, b, value=0.3), [X, Y, np.abs(X) + 1]),
    ("diff", lambda x, y: x.diff(2, 0, append=y), [X, Y]),
    ("hardswish", lambda x: ml.nn.functional.hardswish(x), [SPREAD * 3 + 0.01]),
    ("logsigmoid", lambda x: ml.nn.functional.logsigmoid(x), [SPREAD]),
    ("elu family", lambda x: ml.nn.functional.selu(x) + ml.nn.functional.celu(x, 0.7), [SPREAD + 0.01]),
    ("mish", lambda x: ml.nn.functional.mish(x), [SPREAD]),
    ("trig", lambda x: x.tan() + (x / 3).asin() + (x / 3).acos() + x.atan() + x.sinh() + x.cosh() + x.exp2(), [X]),
    ("inverse hyperbolic", lambda x: x.asinh() + (x.abs() + 1.5).acosh() + (x / 3).atanh(), [X]),
    ("atan2", lambda y, x: ml.atan2(y, x), [X, Y]),
    ("erf", lambda x: ml.erf(x), [X]),
    ("logaddexp", lambda a, b: ml.logaddexp(a, b), [X, Y]),
    ("kthvalue/cummax", lambda x: x.kthvalue(2, 0).values.sum() + x.cummax(1).values + x.cummin(0).values, [X]),
    ("cross", lambda a, b: ml.cross(a, b, dim=0), [X3[0, :, :], Y[:, :4]]),
    ("einsum diagonal", lambda x, y: ml.einsum("iji,jk->jk", x, y), [X3[:, :, :2], Y]),
    ("conv2d", lambda x, w: ml.nn.functional.conv2d(x, w, None, (2, 1), (1, 2), (2, 1), 2), [IMG[:1, :, :5, :5], KERNEL]),
    ("max_pool2d", lambda x: ml.nn.functional.max_pool2d(x, 3, 2, 1), [IMG[:1]]),
    ("avg_pool2d", lambda x: ml.nn.functional.avg_pool2d(x, 3, 2, 1, count_include_pad=False), [IMG[:1]]),
    ("baddbmm", lambda b, x, y: ml.baddbmm(b, x, y, beta=0.3, alpha=2.0),
     [X3[0, :, :3], X3, np.ascontiguousarray(X3.transpose(0, 2, 1))]),  # (grad_check perturbs contiguous arrays)
]


@pytest.mark.parametrize("name,fn,inputs", GRAD_CHECKS, ids=[g[0] for g in GRAD_CHECKS])
def test_gradients_match_central_differences(name, fn, inputs):
    grad_check(fn, *[_leaf(a) for a in inputs], name=name)


def test_new_ops_run_on_every_device(device):
    """The new ops compute on the device's arrays (NumPy on emu, CuPy on cuda): cpu's answer."""
    results = []
    for dev in ("cpu", device):
        x = ml.tensor(X, dtype=ml.float64, device=dev, requires_grad=True)
        idx = ml.tensor([[1, 3], [0, 0], [2, 1]], device=dev)
        parts = [x.roll(1, 1), x.diagonal(1), x.cumprod(1), x.median(1).values, x.lerp(x * 2, 0.3),
                 x.index_select(1, ml.tensor([2, 0], device=dev)), x.scatter_add(1, idx, x[:, :2]),
                 ml.nn.functional.softplus(x), ml.nn.functional.cosine_similarity(x, x.flip(0)),
                 ml.nn.functional.conv2d(x[None, None], x[None, None, :2, :2], padding=1),
                 ml.nn.functional.max_pool2d(x[None], 2, 1), ml.nn.functional.pad(x, (1, 2), mode="reflect")]
        loss = sum((p * p).sum() for p in parts)
        loss.backward()
        results.append((loss.item(), x.grad.cpu().numpy(force=True)))
    assert abs(results[0][0] - results[1][0]) < 1e-12 * abs(results[0][0])
    np.testing.assert_allclose(results[1][1], results[0][1], rtol=1e-12, atol=1e-12)


# ---- nn.MultiheadAttention ------------------------------------------------------------------------------
def _twin_attention(**options):
    """A torch MultiheadAttention in float64 and minilora's, loaded from torch's state_dict."""
    torch.manual_seed(0)
    theirs = torch.nn.MultiheadAttention(8, 2, dtype=torch.float64, **options)
    ours = ml.nn.MultiheadAttention(8, 2, dtype=ml.float64, **options)
    ours.load_state_dict({k: ml.tensor(v.detach().numpy(force=True), dtype=ml.float64)
                          for k, v in theirs.state_dict().items()})
    return theirs, ours


PAD = np.array([[False, False, True, False, True], [False, False, False, False, False]])
CAUSAL = np.triu(np.ones((4, 5), dtype=bool), 2)  # True: may NOT attend (torch's MHA convention)
ATTENTION_CASES = [
    ("self attention", {}, {}, "self"),
    ("cross attention batch_first", {"batch_first": True}, {}, "cross"),
    ("bool attn_mask", {}, {"attn_mask": CAUSAL}, "cross"),
    ("float attn_mask, per head", {"batch_first": True},
     {"attn_mask": RNG.standard_normal((4, 4, 5)), "average_attn_weights": False}, "cross"),
    ("key_padding_mask", {"batch_first": True}, {"key_padding_mask": PAD}, "cross"),
    ("both masks", {}, {"key_padding_mask": PAD, "attn_mask": CAUSAL}, "cross"),
    ("need_weights=False", {"bias": False}, {"need_weights": False}, "self"),
    ("is_causal hint", {}, {"attn_mask": np.triu(np.ones((4, 4), dtype=bool), 1), "is_causal": True}, "self"),
    ("unbatched", {}, {"key_padding_mask": PAD[0]}, "unbatched"),
    ("kdim/vdim: separate projections", {"kdim": 5, "vdim": 3, "batch_first": True},
     {"key_padding_mask": PAD}, "cross"),
]


def _attention_inputs(kind, batch_first, kdim=8, vdim=8):
    query = RNG.standard_normal((2, 4, 8))
    if kind == "self":
        key = value = query
    else:
        key, value = RNG.standard_normal((2, 5, kdim)), RNG.standard_normal((2, 5, vdim))
    if kind == "unbatched":
        return query[0], key[0], value[0]
    if not batch_first:
        query, key, value = (a.transpose(1, 0, 2) for a in (query, key, value))
    return query, key, value


@pytest.mark.parametrize("name,options,call,kind", ATTENTION_CASES, ids=[c[0] for c in ATTENTION_CASES])
def test_multihead_attention_matches_torch(name, options, call, kind):
    theirs, ours = _twin_attention(**options)
    arrays = _attention_inputs(kind, options.get("batch_first", False), options.get("kdim", 8),
                               options.get("vdim", 8))
    outputs, grads = [], []
    for lib, module in ((torch, theirs), (ml, ours)):
        inputs = [_to_lib(lib, a, grad=True) for a in arrays]
        if kind == "self":
            inputs = [inputs[0]] * 3
        kwargs = {k: _to_lib(lib, v) for k, v in call.items()}
        out, weights = module(*inputs, **kwargs)
        loss = (out * _to_lib(lib, np.cos(np.arange(out.numel())).reshape(tuple(out.shape)))).sum()
        if weights is not None:
            loss = loss + (weights * weights).sum()
        loss.backward()
        outputs.append([out, weights])
        grads.append([inputs[0].grad] + [p.grad for _, p in sorted(module.named_parameters())])
    for t, m in zip(*outputs):
        assert (t is None) == (m is None)
        if t is not None:
            assert tuple(m.shape) == tuple(t.shape)
            np.testing.assert_allclose(m.detach().numpy(force=True), t.detach().numpy(force=True), rtol=1e-10, atol=1e-12)
    for t, m in zip(*grads):
        np.testing.assert_allclose(m.numpy(force=True), t.numpy(force=True), rtol=1e-10, atol=1e-12)


def _to_lib(lib, value, grad=False):
    if not isinstance(value, np.ndarray):
        return value
    if lib is torch:
        return torch.tensor(value, requires_grad=grad)
    return ml.tensor(value, dtype=value.dtype, requires_grad=grad)


def test_multihead_attention_parameters_are_torchs():
    theirs, ours = _twin_attention()
    assert [(k, tuple(v.shape)) for k, v in ours.state_dict().items()] == \
        [(k, tuple(v.shape)) for k, v in theirs.state_dict().items()]
    assert ours.in_proj_bias.numpy(force=True).tolist() == [0.0] * 24 and ours.out_proj.bias.numpy(force=True).tolist() == [0.0] * 8
    fresh = ml.nn.MultiheadAttention(8, 2, bias=False)
    assert fresh.in_proj_bias is None and fresh.out_proj.bias is None
    assert sorted(dict(fresh.named_parameters())) == ["in_proj_weight", "out_proj.weight"]
    theirs, ours = _twin_attention(kdim=5, vdim=3)
    assert [(k, tuple(v.shape)) for k, v in ours.state_dict().items()] == \
        [(k, tuple(v.shape)) for k, v in theirs.state_dict().items()]
    assert ours.in_proj_weight is None and tuple(ours.k_proj_weight.shape) == (8, 5)


def test_multihead_attention_refuses_what_it_does_not_do():
    # (add_bias_kv / add_zero_attn are implemented: compared with torch in test_nn_fuzz_r5)
    with pytest.raises(AssertionError):
        ml.nn.MultiheadAttention(8, 3)
    x = ml.randn(4, 2, 8)
    with pytest.raises(RuntimeError, match="is_causal"):
        ml.nn.MultiheadAttention(8, 2)(x, x, x, is_causal=True)
    with pytest.raises(RuntimeError, match="attn_mask"):
        ml.nn.MultiheadAttention(8, 2)(x, x, x, attn_mask=ml.zeros(3, 3))


def test_multihead_attention_dropout_only_in_training():
    ours = ml.nn.MultiheadAttention(8, 2, dropout=0.5, batch_first=True)
    x = ml.randn(2, 4, 8)
    ours.eval()
    first, second = ours(x, x, x)[0], ours(x, x, x)[0]
    assert np.array_equal(first.numpy(force=True), second.numpy(force=True))
    ours.train()
    _, weights = ours(x, x, x, average_attn_weights=False)
    assert (weights.numpy(force=True) == 0).any()  # dropped weights are returned, as in torch


# ---- convolution modules ------------------------------------------------------------------------------
@pytest.mark.parametrize("cls,args,options", [
    ("Conv2d", (3, 4, 3), {}),
    ("Conv2d", (4, 6, (3, 2)), {"stride": 2, "padding": 1, "groups": 2, "bias": False}),
    ("Conv2d", (3, 4, 3), {"padding": "same", "padding_mode": "reflect"}),
    ("Conv2d", (3, 4, 3), {"padding": (1, 2), "padding_mode": "circular", "dilation": (2, 1)}),
    ("Conv1d", (3, 4, 3), {"padding": "same", "padding_mode": "replicate"}),
    ("Conv1d", (4, 2, 2), {"stride": 2, "groups": 2}),
], ids=["plain", "strided grouped", "same reflect", "circular dilated", "1-D same replicate", "1-D grouped"])
def test_conv_modules_load_torch_weights_and_match(cls, args, options):
    theirs = getattr(torch.nn, cls)(*args, dtype=torch.float64, **options)
    ours = getattr(ml.nn, cls)(*args, dtype=ml.float64, **options)
    assert repr(ours) == repr(theirs)
    assert [(k, tuple(v.shape)) for k, v in ours.state_dict().items()] == \
        [(k, tuple(v.shape)) for k, v in theirs.state_dict().items()]
    ours.load_state_dict({k: ml.tensor(v.detach().numpy(force=True)) for k, v in theirs.state_dict().items()})
    x = RNG.standard_normal((2, args[0], 7, 6) if cls == "Conv2d" else (2, args[0], 9))
    tx, mx = torch.tensor(x, requires_grad=True), ml.tensor(x, requires_grad=True)
    t_out, m_out = theirs(tx), ours(mx)
    t_out.pow(2).sum().backward()
    m_out.pow(2).sum().backward()
    np.testing.assert_allclose(m_out.numpy(force=True), t_out.detach().numpy(force=True), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(mx.grad.numpy(force=True), tx.grad.numpy(force=True), rtol=1e-12, atol=1e-12)
    for (name, p), (_, q) in zip(theirs.named_parameters(), ours.named_parameters()):
        np.testing.assert_allclose(q.grad.numpy(force=True), p.grad.numpy(force=True), rtol=1e-12, atol=1e-12, err_msg=name)


def test_conv_init_is_torchs_distribution():
    """Kaiming-uniform(a=sqrt(5)) weights and U(-1/sqrt(fan_in), 1/sqrt(fan_in)) biases."""
    conv = ml.nn.Conv2d(8, 16, 3, groups=2)
    bound = 1 / math.sqrt(4 * 9)
    assert np.abs(conv.weight.numpy(force=True)).max() <= bound and np.abs(conv.bias.numpy(force=True)).max() <= bound
    assert np.abs(conv.weight.numpy(force=True)).max() > 0.9 * bound


# ---- recurrent layers -----------------------------------------------------------------------------------
RNN_CASES = [
    ({}, (5, 2, 3), False),
    ({"num_layers": 2, "bidirectional": True, "batch_first": True}, (2, 5, 3), True),
    ({"bias": False}, (5, 3), True),  # unbatched, with an initial state
]


@pytest.mark.parametrize("cls", ["RNN", "GRU", "LSTM"])
@pytest.mark.parametrize("options,shape,with_state", RNN_CASES, ids=["plain", "2 layers bidirectional", "unbatched"])
def test_recurrent_layers_load_torch_weights_and_match(cls, options, shape, with_state):
    """Outputs, final states and the gradients of the input and of every weight, from torch's
    state_dict (same names, same order)."""
    rng = np.random.default_rng(3)
    theirs = getattr(torch.nn, cls)(3, 4, dtype=torch.float64, **options)
    ours = getattr(ml.nn, cls)(3, 4, dtype=ml.float64, **options)
    assert list(ours.state_dict()) == list(theirs.state_dict()) and repr(ours) == repr(theirs)
    ours.load_state_dict({k: ml.tensor(v.detach().numpy(force=True)) for k, v in theirs.state_dict().items()})
    x = rng.standard_normal(shape)
    t_args, m_args = [torch.tensor(x, requires_grad=True)], [ml.tensor(x, requires_grad=True)]
    if with_state:
        layers = (2 if options.get("bidirectional") else 1) * options.get("num_layers", 1)
        batch = () if len(shape) == 2 else (shape[0] if options.get("batch_first") else shape[1],)
        h, c = rng.standard_normal((layers,) + batch + (4,)), rng.standard_normal((layers,) + batch + (4,))
        t_args.append((torch.tensor(h), torch.tensor(c)) if cls == "LSTM" else torch.tensor(h))
        m_args.append((ml.tensor(h), ml.tensor(c)) if cls == "LSTM" else ml.tensor(h))
    results = []
    for module, args in ((theirs, t_args), (ours, m_args)):
        out, state = module(*args)
        states = state if isinstance(state, tuple) else (state,)
        (out.pow(2).sum() + sum((s * s).sum() for s in states)).backward()
        results.append([out.detach().numpy(force=True), *(s.detach().numpy(force=True) for s in states), args[0].grad.numpy(force=True)]
                       + [p.grad.numpy(force=True) for _, p in module.named_parameters()])
    for t, m in zip(*results):
        np.testing.assert_allclose(m, t, rtol=1e-12, atol=1e-12)


def test_recurrent_layers_refuse_and_check_as_torch():
    for lib in (torch, ml):  # (proj_size is implemented: compared with torch in test_nn_fuzz_r5)
        with pytest.raises(ValueError, match="proj_size"):
            lib.nn.LSTM(3, 4, proj_size=4)
        with pytest.raises(ValueError, match="nonlinearity"):
            lib.nn.RNN(3, 4, nonlinearity="sigmoid")
        with pytest.raises(RuntimeError, match="hidden size"):
            lib.nn.GRU(3, 4)(lib.zeros(5, 2, 3), lib.zeros(2, 2, 4))


def test_recurrent_dropout_between_layers_only_in_training():
    lstm = ml.nn.LSTM(3, 4, num_layers=2, dropout=0.5)
    x = ml.randn(5, 2, 3)
    lstm.eval()
    assert np.array_equal(lstm(x)[0].numpy(force=True), lstm(x)[0].numpy(force=True))
    lstm.train()
    ml.manual_seed(0)
    first = lstm(x)[0].numpy(force=True)
    ml.manual_seed(1)
    assert not np.array_equal(first, lstm(x)[0].numpy(force=True))


# ---- transformer encoder ------------------------------------------------------------------------------
def _twin_encoder(layer_options, encoder_options=None):
    """torch's encoder layer (or a 2-layer encoder with a final LayerNorm) and minilora's, loaded
    from torch's state_dict; dropout 0 so that training mode is deterministic."""
    torch.manual_seed(0)
    theirs = torch.nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, dtype=torch.float64, **layer_options)
    ours = ml.nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, dtype=ml.float64, **layer_options)
    if encoder_options is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's (and our) note that nested tensors are off
            theirs = torch.nn.TransformerEncoder(theirs, 2, torch.nn.LayerNorm(8, dtype=torch.float64),
                                                 **encoder_options)
            ours = ml.nn.TransformerEncoder(ours, 2, ml.nn.LayerNorm(8, dtype=ml.float64), **encoder_options)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    ours.load_state_dict({k: ml.tensor(v.detach().numpy(force=True)) for k, v in theirs.state_dict().items()})
    return theirs, ours


RIGHT_PADDED = np.array([[False] * 5, [False] * 3 + [True] * 2])
CAUSAL_FLOAT = np.triu(np.full((5, 5), -np.inf), 1)
ENCODER_CASES = [
    ("layer, post-LN", {}, None, {}, "train"),
    ("layer, gelu string, padding mask", {"batch_first": True, "activation": "gelu"}, None,
     {"src_key_padding_mask": RIGHT_PADDED}, "eval"),
    ("layer, pre-LN, causal mask", {"norm_first": True}, None, {"src_mask": CAUSAL_FLOAT}, "train"),
    ("encoder, causal mask", {"batch_first": True}, {}, {"mask": CAUSAL_FLOAT}, "train"),
    ("encoder, nested fast path (padding zeroed)", {"batch_first": True}, {}, {"src_key_padding_mask": RIGHT_PADDED},
     "inference"),
    ("encoder, eval with gradients (no fast path)", {"batch_first": True}, {}, {"src_key_padding_mask": RIGHT_PADDED},
     "eval"),
    ("encoder, nested tensors off", {}, {"enable_nested_tensor": False}, {"src_key_padding_mask": RIGHT_PADDED},
     "inference"),
    ("encoder, pre-LN (no fast path)", {"batch_first": True, "norm_first": True}, {},
     {"src_key_padding_mask": RIGHT_PADDED}, "inference"),
]


@pytest.mark.parametrize("name,layer_options,encoder_options,call,mode", ENCODER_CASES,
                         ids=[c[0] for c in ENCODER_CASES])
def test_transformer_encoder_matches_torch(name, layer_options, encoder_options, call, mode):
    theirs, ours = _twin_encoder(layer_options, encoder_options)
    if mode != "train":
        theirs.eval()
        ours.eval()
    x = RNG.standard_normal((2, 5, 8) if layer_options.get("batch_first") else (5, 2, 8))
    outputs, grads = [], []
    for lib, module in ((torch, theirs), (ml, ours)):
        kwargs = {k: lib.tensor(v) for k, v in call.items()}
        if mode == "inference":
            with lib.no_grad():
                outputs.append(module(lib.tensor(x), **kwargs).numpy(force=True))
            continue
        tx = lib.tensor(x, requires_grad=True)
        out = module(tx, **kwargs)
        out.pow(2).sum().backward()
        outputs.append(out.detach().numpy(force=True))
        grads.append([tx.grad.numpy(force=True)] + [p.grad.numpy(force=True) for _, p in module.named_parameters()])
    np.testing.assert_allclose(outputs[1], outputs[0], rtol=1e-12, atol=1e-12)
    for t, m in zip(*grads) if grads else ():
        np.testing.assert_allclose(m, t, rtol=1e-11, atol=1e-12)
    if "zeroed" in name:
        assert (outputs[1][1, 3:] == 0).all()  # torch's nested tensor gives exact zeros at the padding


def test_transformer_encoder_warns_when_nested_tensors_cannot_be_used():
    with pytest.warns(UserWarning, match="batch_first was not True"):
        ml.nn.TransformerEncoder(ml.nn.TransformerEncoderLayer(8, 2, 16), 2)
    with pytest.raises(RuntimeError, match="relu/gelu"):
        ml.nn.TransformerEncoderLayer(8, 2, activation="tanh")
    layer = ml.nn.TransformerEncoderLayer(8, 2, 16, activation=ml.nn.functional.silu, batch_first=True)
    assert layer.activation_relu_or_gelu == 0


# ---- batch and group normalisation ----------------------------------------------------------------------
@pytest.mark.parametrize("cls,shape", [("BatchNorm1d", (4, 3)), ("BatchNorm1d", (4, 3, 5)), ("BatchNorm2d", (2, 3, 4, 5))])
@pytest.mark.parametrize("options", [{}, {"momentum": None}, {"affine": False, "momentum": 0.3},
                                     {"track_running_stats": False}, {"bias": False}],
                         ids=["defaults", "momentum=None", "no affine", "no running stats", "bias=False"])
def test_batch_norm_module_matches_torch(cls, shape, options):
    """Three training steps (running statistics updated each time) and one in eval: outputs, input
    gradients, parameter gradients and every buffer as torch's; the state_dict keys are torch's."""
    rng = np.random.default_rng(7)
    theirs = getattr(torch.nn, cls)(3, dtype=torch.float64, **options)
    ours = getattr(ml.nn, cls)(3, dtype=ml.float64, **options)
    assert list(ours.state_dict()) == list(theirs.state_dict()) and repr(ours) == repr(theirs)
    for step in range(4):
        if step == 3:
            theirs.eval()
            ours.eval()
        x, g = rng.standard_normal(shape) * 2 + 1, rng.standard_normal(shape)
        tx, mx = torch.tensor(x, requires_grad=True), ml.tensor(x, requires_grad=True)
        t_out, m_out = theirs(tx), ours(mx)
        (t_out * torch.tensor(g)).sum().backward()
        (m_out * ml.tensor(g)).sum().backward()
        np.testing.assert_allclose(m_out.numpy(force=True), t_out.detach().numpy(force=True), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(mx.grad.numpy(force=True), tx.grad.numpy(force=True), rtol=1e-12, atol=1e-12)
    for name, value in theirs.state_dict().items():
        np.testing.assert_allclose(ours.state_dict()[name].numpy(force=True), value.numpy(force=True), rtol=1e-12, atol=1e-13,
                                   err_msg=name)
    for (name, p), (_, q) in zip(theirs.named_parameters(), ours.named_parameters()):
        np.testing.assert_allclose(q.grad.numpy(force=True), p.grad.numpy(force=True), rtol=1e-12, atol=1e-12, err_msg=name)


def test_batch_norm_errors_as_torch():
    for lib in (torch, ml):
        with pytest.raises(ValueError, match="more than 1 value per channel"):
            lib.nn.BatchNorm1d(3)(lib.zeros(1, 3))
        with pytest.raises(ValueError, match="expected 4D input"):
            lib.nn.BatchNorm2d(3)(lib.zeros(2, 3))
        with pytest.raises(ValueError, match="divisible by num_groups"):
            lib.nn.GroupNorm(2, 3)


# ---- ReduceLROnPlateau --------------------------------------------------------------------------------
PLATEAU_METRICS = [1.0, 0.9, 0.95, 0.9, 0.91, 0.92, 0.93, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 0.49995,
                   0.49, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6]


@pytest.mark.parametrize("options", [
    {},
    {"patience": 1},
    {"mode": "max", "factor": 0.5, "patience": 2, "threshold": 0.01},
    {"threshold_mode": "abs", "threshold": 0.05, "patience": 0, "cooldown": 2},
    {"patience": 0, "min_lr": [0.05, 0.001], "eps": 1e-3},
    {"patience": 1, "factor": 0.3, "min_lr": 0.02},
], ids=["defaults", "patience=1", "max", "abs+cooldown", "min_lr list+eps", "min_lr"])
def test_reduce_lr_on_plateau_matches_torch(options):
    lrs = []
    for lib in (torch, ml):
        p1, p2 = (lib.zeros(2, requires_grad=True) for _ in range(2))
        opt = lib.optim.SGD([{"params": [p1]}, {"params": [p2], "lr": 0.2}], lr=1.0)
        sched = lib.optim.lr_scheduler.ReduceLROnPlateau(opt, **options)
        history = [sched.get_last_lr()]
        for metric in PLATEAU_METRICS:
            sched.step(lib.tensor(metric) if metric == 0.6 else metric)  # a 0-d tensor works too
            history.append(sched.get_last_lr() + [sched.num_bad_epochs, sched.cooldown_counter, sched.best,
                                                  sched.last_epoch])
        lrs.append(history)
    assert lrs[1] == lrs[0]


@pytest.mark.parametrize("name,options,steps", [
    ("PolynomialLR", {"total_iters": 7, "power": 2.0}, [None] * 12),
    ("PolynomialLR", {}, [None] * 3 + [2, None, 9, None]),
    ("CosineAnnealingWarmRestarts", {"T_0": 3, "T_mult": 2, "eta_min": 0.01}, [None] * 15 + [2.5, 7, None, 30, None]),
    ("CosineAnnealingWarmRestarts", {"T_0": 4}, [None] * 10 + [0.5, 9.25, None]),
], ids=["polynomial", "polynomial closed form", "warm restarts T_mult=2", "warm restarts fractional epochs"])
def test_more_schedulers_match_torch_step_by_step(name, options, steps):
    """The lrs to the last bit: the same products in the same order as torch's."""
    history = []
    for lib in (torch, ml):
        p1, p2 = (lib.zeros(2, requires_grad=True) for _ in range(2))
        opt = lib.optim.SGD([{"params": [p1]}, {"params": [p2], "lr": 0.3}], lr=1.0)
        sched = getattr(lib.optim.lr_scheduler, name)(opt, **options)
        seen = [sched.get_last_lr()]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's deprecation of step(epoch)
            for epoch in steps:
                opt.step()
                sched.step() if epoch is None else sched.step(epoch)
                seen.append(sched.get_last_lr() + [sched.last_epoch])
        history.append(seen)
    assert history[1] == history[0]


def test_warm_restarts_refuses_what_torch_refuses():
    opt = ml.optim.SGD([ml.zeros(1, requires_grad=True)], lr=1.0)
    for bad in ({"T_0": 0}, {"T_0": 2.5}, {"T_0": 2, "T_mult": 0}, {"T_0": 2, "eta_min": "0"}):
        with pytest.raises(ValueError):
            ml.optim.lr_scheduler.CosineAnnealingWarmRestarts(opt, **bad)
    with pytest.raises(ValueError, match="non-negative"):
        ml.optim.lr_scheduler.CosineAnnealingWarmRestarts(opt, 2).step(-1)


def test_reduce_lr_on_plateau_state_and_errors():
    p = ml.zeros(2, requires_grad=True)
    opt = ml.optim.SGD([p], lr=1.0)
    sched = ml.optim.lr_scheduler.ReduceLROnPlateau(opt, patience=0)
    sched.step(1.0)
    sched.step(2.0)
    state = sched.state_dict()
    assert "optimizer" not in state and state["best"] == 1.0 and opt.param_groups[0]["lr"] == 0.1
    other = ml.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="max")
    other.load_state_dict(state)
    assert other.mode == "min" and other.best == 1.0
    assert isinstance(sched, ml.optim.lr_scheduler.LRScheduler)
    for bad, error in (({"factor": 1.0}, ValueError), ({"mode": "low"}, ValueError),
                       ({"threshold_mode": "x"}, ValueError), ({"min_lr": [0, 0]}, ValueError)):
        with pytest.raises(error):
            ml.optim.lr_scheduler.ReduceLROnPlateau(opt, **bad)
        with pytest.raises(error):
            torch.optim.lr_scheduler.ReduceLROnPlateau(
                torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0), **bad)
    with pytest.raises(TypeError):
        ml.optim.lr_scheduler.ReduceLROnPlateau(object())


# ---- signatures -------------------------------------------------------------------------------------------
# torch's signature where its docstring shows another overload or none (read from torch 2.13's behaviour):
TORCH_SIGNATURES = {
    "cumprod": "cumprod(dim, *, dtype=None)",  # the docstring shows dtype positional; torch refuses that
    "clamp_min": "clamp_min(min)", "clamp_max": "clamp_max(max)",  # no docstring
    "roll": "roll(shifts, dims=None)",  # x.roll(1) works: dims is optional
    "scatter": "scatter(dim, index, src=None, *, value=None, reduce=None)",  # three overloads in one
    "index_add_": "index_add_(dim, index, source, *, alpha=1)",
    "lerp_": "lerp_(end, weight)",
    "scatter_": "scatter_(dim, index, src=None, *, value=None, reduce=None)",
    "scatter_add_": "scatter_add_(dim, index, src)",
    "addcmul_": "addcmul_(tensor1, tensor2, *, value=1)",
    "addcdiv_": "addcdiv_(tensor1, tensor2, *, value=1)",
    "unflatten": "unflatten(dim, sizes)",
    # the docstrings say fmod(divisor) and broadcast_to(shape); torch 2.13 takes other= and size=
    "fmod": "fmod(other)", "broadcast_to": "broadcast_to(size)",
    "kthvalue": "kthvalue(k, dim=-1, keepdim=False)",  # the docstring says dim=None; torch's default is -1
    "flip": None,  # torch: flip(*dims) and flip(dims=...) in one; ours too (*dims, **by_name)
    "tile": "tile(*dims)",  # torch: x.tile(2, 1), x.tile((2, 1)) and x.tile(dims=...) in one; ours too
}
FUNCTION_SIGNATURES = {
    "unique": "unique(input, sorted=True, return_inverse=False, return_counts=False, dim=None)",
    "median": "median(input, dim=None, keepdim=False)",  # both overloads
    "repeat_interleave": "repeat_interleave(input, repeats=None, dim=None, *, output_size=None)",
    "cumprod": "cumprod(input, dim, *, dtype=None)",
    "clamp_min": "clamp_min(input, min)", "clamp_max": "clamp_max(input, max)",
    "scatter": "scatter(input, dim, index, src=None, *, value=None, reduce=None)",
    "square": "square(input)",
    "einsum": "einsum(equation, *operands)",  # torch's Python wrapper takes *args
    "meshgrid": "meshgrid(*tensors, indexing=None)",
    "var_mean": "var_mean(input, dim=None, unbiased=True, keepdim=False, *, correction=None)",
    "std_mean": "std_mean(input, dim=None, unbiased=True, keepdim=False, *, correction=None)",
    "unflatten": "unflatten(input, dim, sizes)",
    "fmod": "fmod(input, other)", "broadcast_to": "broadcast_to(input, size)",  # (docstrings: divisor, shape)
    "kthvalue": "kthvalue(input, k, dim=-1, keepdim=False)",
}
METHODS = ["unique", "bincount", "repeat_interleave", "roll", "median", "narrow", "diagonal", "diag",
           "index_add", "index_add_", "index_select", "scatter", "scatter_", "scatter_add", "scatter_add_",
           "take_along_dim", "masked_select", "count_nonzero", "cumprod", "lerp", "lerp_", "xlogy",
           "clamp_min", "clamp_max", "addmm", "baddbmm", "movedim", "swapaxes", "tile", "square",
           "reciprocal", "log1p", "expm1", "log2", "log10", "fmod", "logical_xor", "addcmul", "addcmul_",
           "addcdiv", "addcdiv_", "unflatten", "select", "broadcast_to", "trace", "diff", "tan", "asin",
           "acos", "atan", "sinh", "cosh", "asinh", "acosh", "atanh", "exp2", "atan2", "arctan2", "logaddexp",
           "nan_to_num", "aminmax", "kthvalue", "cummax", "cummin", "cross", "erf"]
FUNCTIONS = ["unique", "bincount", "repeat_interleave", "roll", "median", "narrow", "diagonal", "diag",
             "index_add", "index_select", "scatter", "scatter_add", "take_along_dim", "masked_select",
             "count_nonzero", "cumprod", "lerp", "xlogy", "clamp_min", "clamp_max", "addmm", "baddbmm",
             "movedim", "swapaxes", "tile", "square", "reciprocal", "log1p", "expm1", "einsum", "eye",
             "flip", "chunk", "unbind", "nonzero", "sort", "argsort", "amax", "amin", "prod", "sign",
             "floor", "ceil", "outer", "allclose", "isclose", "equal", "gather", "log2", "log10", "fmod",
             "logical_xor", "addcmul", "addcdiv", "unflatten", "select", "broadcast_to", "trace", "diff",
             "hstack", "vstack", "meshgrid", "var_mean", "std_mean", "tril_indices", "triu_indices", "tan",
             "asin", "acos", "atan", "sinh", "cosh", "asinh", "acosh", "atanh", "exp2", "atan2", "arctan2",
             "logaddexp", "nan_to_num", "aminmax", "kthvalue", "cummax", "cummin", "cross", "erf",
             "searchsorted", "bucketize"]
NOT_TORCH = {"narrow": {"dimension"}}  # torch's Tensor.narrow docstring says `dimension`; torch takes dim=


def _params_of(owner, name, is_method, table):
    if name in table:
        params = _parse(table[name])
        _, names = _torch_params(owner, name, is_method) if hasattr(owner, name) else (None, set())
        return params, names | {n for n, _ in params}
    return _torch_params(owner, name, is_method)


@pytest.mark.parametrize("name", METHODS)
def test_method_signatures_match_torch(name):
    theirs, names = _params_of(torch.Tensor, name, True, TORCH_SIGNATURES)
    assert theirs is not None, f"torch.Tensor.{name}: no signature found: add it to TORCH_SIGNATURES"
    if name in NOT_TORCH:
        theirs = [("dim", k) if n in NOT_TORCH[name] else (n, k) for n, k in theirs]
        names = (names - NOT_TORCH[name]) | {"dim"}
    _compare(_ours(getattr(ml.Tensor, name), is_method=True), theirs, f"Tensor.{name}", names)


@pytest.mark.parametrize("name", FUNCTIONS)
def test_function_signatures_match_torch(name):
    theirs, names = _params_of(torch, name, False, FUNCTION_SIGNATURES)
    assert theirs is not None, f"torch.{name}: no signature in its docstring"
    _compare(_ours(getattr(ml, name), is_method=False), theirs, f"minilora.{name}", names)


@pytest.mark.parametrize("name", ["MultiheadAttention.forward", "MultiheadAttention.__init__",
                                  "ReduceLROnPlateau.__init__", "ReduceLROnPlateau.step"])
def test_class_signatures_match_torch(name):
    cls_name, method = name.split(".")
    ours_cls = getattr(ml.nn, cls_name, None) or getattr(ml.optim.lr_scheduler, cls_name)
    theirs_cls = getattr(torch.nn, cls_name, None) or getattr(torch.optim.lr_scheduler, cls_name)

    def params(fn):
        return [(p.name, p.default, p.kind) for p in inspect.signature(fn).parameters.values()]
    assert params(getattr(ours_cls, method)) == params(getattr(theirs_cls, method))


def test_functional_and_modules_are_in_the_signature_checks():
    """The conformance_nn checks compare every name of F.__all__ and nn.__all__ with torch: the new
    ones must be listed there."""
    assert {"softplus", "leaky_relu", "normalize", "cosine_similarity", "smooth_l1_loss", "huber_loss",
            "kl_div"} <= set(ml.nn.functional.__all__)
    assert {"Softplus", "LeakyReLU", "SmoothL1Loss", "HuberLoss", "KLDivLoss", "CosineSimilarity",
            "MultiheadAttention", "ELU", "SELU", "CELU", "Hardtanh", "ReLU6", "Hardswish", "Hardsigmoid",
            "Mish", "LogSigmoid", "Softsign", "GLU", "Softmin", "LogSoftmax", "PairwiseDistance",
            "MarginRankingLoss", "TripletMarginLoss", "CosineEmbeddingLoss", "Unflatten", "BatchNorm1d",
            "BatchNorm2d", "GroupNorm", "Conv1d", "Conv2d", "MaxPool1d", "MaxPool2d", "AvgPool1d", "AvgPool2d",
            "AdaptiveAvgPool2d", "RNN", "LSTM", "GRU", "TransformerEncoderLayer", "TransformerEncoder"} <= \
        set(ml.nn.__all__)
    assert {"elu", "selu", "celu", "relu6", "hardtanh", "hardswish", "hardsigmoid", "logsigmoid", "mish",
            "softsign", "glu", "softmin"} <= set(ml.nn.functional.__all__)
    assert "ReduceLROnPlateau" in ml.optim.lr_scheduler.__all__
